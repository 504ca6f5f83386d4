//! The peer port under abuse, with real `raftvip run` processes on loopback (issue 7): a
//! signature names its target and does not survive a restart, oversized bodies are refused
//! before they are read, idle connections cannot lock peers out or eat descriptors, and status
//! can move to its own listener.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant, SystemTime};

use common::{free_ports, http, run_cli, Cluster, DEADLINE};
use raftvip::auth::Authenticator;
use raftvip::raft::typ::{Vote, VoteRequest};

/// A harmless vote request (term 0: never granted) and its signed headers for node `to`.
fn harmless_vote(auth: &Authenticator, to: u64) -> (Vec<(&'static str, String)>, Vec<u8>) {
    let body = serde_json::to_vec(&VoteRequest {
        vote: Vote::new(0, auth.node_id()),
        last_log_id: None,
    })
    .unwrap();
    let headers = auth
        .sign(to, "POST", "/raft/vote", &body, SystemTime::now())
        .headers()
        .to_vec();
    (headers, body)
}

fn post_vote(c: &Cluster, id: u64, signed: &(Vec<(&'static str, String)>, Vec<u8>)) -> u16 {
    let headers: Vec<(&str, String)> = signed.0.iter().map(|(n, v)| (*n, v.clone())).collect();
    http(
        c.member(id).address,
        "POST",
        "/raft/vote",
        &headers,
        &signed.1,
    )
    .unwrap()
    .0
}

#[test]
fn a_request_for_one_node_is_refused_by_another() {
    let mut c = Cluster::new(3, &[]);
    c.start_all();
    c.wait_for_leader(&c.ids(), DEADLINE);
    let auth = c.signer(1);
    let for_node_2 = harmless_vote(&auth, 2);
    assert_eq!(post_vote(&c, 3, &for_node_2), 401, "replayed to node 3");
    assert_eq!(post_vote(&c, 2, &for_node_2), 200, "node 2 accepts its own");
}

#[test]
fn a_request_accepted_before_a_restart_is_refused_after_it() {
    let mut c = Cluster::new(3, &[]);
    c.start_all();
    c.wait_for_leader(&c.ids(), DEADLINE);
    let captured = harmless_vote(&c.signer(1), 2);
    assert_eq!(post_vote(&c, 2, &captured), 200);
    c.kill(2);
    c.start(2);
    c.wait_for(&[2], DEADLINE, "node 2 to answer again", |_| Some(()));
    assert_eq!(
        post_vote(&c, 2, &captured),
        401,
        "the restarted node forgot the nonce; the timestamp must refuse the replay"
    );
}

#[test]
fn an_oversized_body_is_refused_before_it_is_read() {
    let mut c = Cluster::new(1, &[]);
    c.start_all();
    c.wait_for_leader(&[1], DEADLINE);
    let (headers, _) = harmless_vote(&c.signer(1), 1);
    let mut stream = TcpStream::connect(c.member(1).address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    // 1 MiB announced for a vote (a few dozen bytes); the body never comes.
    let mut head = "POST /raft/vote HTTP/1.1\r\nHost: x\r\nContent-Length: 1048576\r\n".to_owned();
    for (name, value) in &headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    let start = Instant::now();
    let mut answer = [0u8; 64];
    let n = stream
        .read(&mut answer)
        .expect("an answer without the body");
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    assert!(start.elapsed() < Duration::from_secs(1), "answered at once");
}

/// The process id of node `id`, which must be running.
fn pid_of(c: &Cluster, id: u64) -> u32 {
    c.nodes[id as usize - 1].as_ref().expect("running").pid()
}

/// Resident memory of node `id`'s process, in KiB.
fn rss_kib(c: &Cluster, id: u64) -> u64 {
    let pid = pid_of(c, id);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// Headers that pass every check before the body (a stranger can make such: the signature is
/// well-formed but over another body), announcing a 4 MiB snapshot, and all but its last byte:
/// without a budget each such connection made the node buffer 4 MiB.
#[test]
fn a_flood_of_large_unverified_bodies_stays_within_the_budget() {
    const CONNECTIONS: usize = 40;
    const BODY: usize = 4 << 20;
    let mut c = Cluster::new(1, &[]);
    c.start_all();
    c.wait_for_leader(&[1], DEADLINE);
    let before = rss_kib(&c, 1);
    let auth = c.signer(1);
    let chunk = vec![b'x'; 64 << 10];
    let mut open = Vec::new();
    for _ in 0..CONNECTIONS {
        let headers = auth
            .sign(
                1,
                "POST",
                "/raft/snapshot",
                b"another body",
                SystemTime::now(),
            )
            .headers()
            .to_vec();
        let Ok(mut stream) = TcpStream::connect(c.member(1).address) else {
            continue;
        };
        stream
            .set_write_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut head =
            format!("POST /raft/snapshot HTTP/1.1\r\nHost: x\r\nContent-Length: {BODY}\r\n");
        for (name, value) in &headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        let _ = stream.write_all(head.as_bytes());
        let mut left = BODY - 1;
        while left > 0 {
            let n = left.min(chunk.len());
            if stream.write_all(&chunk[..n]).is_err() {
                break; // refused (budget used up) or the server stopped reading
            }
            left -= n;
        }
        open.push(stream);
    }
    std::thread::sleep(Duration::from_millis(300));
    let during = rss_kib(&c, 1);
    drop(open);
    assert!(
        during < before + 32 * 1024,
        "{CONNECTIONS} unverified 4 MiB bodies grew the node from {before} to {during} KiB"
    );
}

/// Open descriptors of node `id`'s process.
fn open_fds(c: &Cluster, id: u64) -> usize {
    let pid = pid_of(c, id);
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

#[test]
fn idle_connections_beyond_the_cap_neither_lock_peers_out_nor_eat_descriptors() {
    const CAP: usize = 16;
    let mut c = Cluster::new(3, &[]);
    c.extra = format!("[limits]\nmax_connections = {CAP}\n");
    for id in c.ids() {
        c.write_config(id);
    }
    c.start_all();
    let (leader, term) = c.wait_for_leader(&c.ids(), DEADLINE);
    let fds_before: Vec<usize> = c.ids().iter().map(|id| open_fds(&c, *id)).collect();

    // 150 idle connections to every node, held for longer than a stranger's idle timeout.
    let mut idle = Vec::new();
    for id in c.ids() {
        for _ in 0..150 {
            if let Ok(s) = TcpStream::connect(c.member(id).address) {
                idle.push(s);
            }
        }
    }
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        assert_eq!(
            c.wait_for_leader(&c.ids(), DEADLINE),
            (leader, term),
            "leader or term changed under idle connections"
        );
        for id in c.ids() {
            let fds = open_fds(&c, id);
            assert!(
                fds <= fds_before[id as usize - 1] + CAP + 4,
                "node {id}: {fds} descriptors open (before: {})",
                fds_before[id as usize - 1]
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let auth = c.signer(leader);
    for id in c.ids() {
        assert_eq!(
            post_vote(&c, id, &harmless_vote(&auth, id)),
            200,
            "node {id}"
        );
    }
    drop(idle);
}

#[test]
fn status_can_move_to_its_own_listener() {
    let mut c = Cluster::new(1, &[]);
    let port = free_ports(1)[0];
    // A top-level key: before the [[peer]] tables that `extra` would follow.
    let text = c.config_text(1, &c.name, &c.data_dir(1));
    std::fs::write(
        c.config_path(1),
        format!("status_listen = \"127.0.0.1:{port}\"\n{text}"),
    )
    .unwrap();
    c.start_all();
    let status_address = format!("127.0.0.1:{port}").parse().unwrap();
    let start = Instant::now();
    while common::fetch_status(status_address).is_none() {
        assert!(start.elapsed() < DEADLINE, "no status on {status_address}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let peer = c.member(1).address;
    assert_eq!(http(peer, "GET", "/v1/status", &[], b"").unwrap().0, 404);
    assert_eq!(http(peer, "GET", "/metrics", &[], b"").unwrap().0, 404);
    let (code, metrics) = http(status_address, "GET", "/metrics", &[], b"").unwrap();
    assert_eq!(code, 200);
    let metrics = String::from_utf8_lossy(&metrics);
    for name in [
        "process_resident_memory_bytes",
        "process_open_fds",
        "raftvip_table_entries{table=\"nonces\"}",
    ] {
        assert!(metrics.contains(name), "{name} missing:\n{metrics}");
    }
    let config = c.config_path(1);
    let (exit, stdout, stderr) = run_cli(&["status", "--config", config.to_str().unwrap()]);
    assert!(exit.success(), "raftvip status: {stderr}");
    assert!(stdout.contains("leader"), "{stdout}");
}

#[test]
fn a_silent_connection_is_closed_after_two_seconds() {
    let mut c = Cluster::new(1, &[]);
    c.start_all();
    c.wait_for_leader(&[1], DEADLINE);
    let mut stream = TcpStream::connect(c.member(1).address).unwrap();
    // Half a request head, then silence (slowloris).
    stream
        .write_all(b"POST /raft/vote HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let start = Instant::now();
    let mut buf = [0u8; 16];
    let closed =
        matches!(stream.read(&mut buf), Ok(0) | Err(_)) && start.elapsed() < Duration::from_secs(4);
    assert!(closed, "still open after {:?}", start.elapsed());
}

#[test]
fn check_config_names_bad_listener_limits() {
    let c = Cluster::new(1, &[]);
    let text = c.config_text(1, &c.name, &c.data_dir(1));
    let path = c.config_path(1);
    let listen = c.member(1).address;
    std::fs::write(
        &path,
        format!("status_listen = \"{listen}\"\n{text}[limits]\nmax_connections = 0\n"),
    )
    .unwrap();
    let (exit, stdout, stderr) = run_cli(&["check-config", "--config", path.to_str().unwrap()]);
    let out = format!("{stdout}{stderr}");
    assert!(!exit.success(), "{out}");
    assert!(
        out.contains("status_listen") && out.contains("is the peer port"),
        "{out}"
    );
    assert!(
        out.contains("limits.max_connections") && out.contains("outside 8..=16384"),
        "{out}"
    );
}
