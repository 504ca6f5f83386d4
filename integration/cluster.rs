//! Multi-process cluster tests: real `raftvip run` processes on loopback, Raft only (no
//! `[haproxy]`, no `[[vip]]`, so the health gate is off and no address is bound).
//!
//! Each test builds its own [`Cluster`] in a temporary directory with free ports; every child
//! is killed when the test ends, however it ends. Assertions are about outcomes (one leader,
//! agreed term, rejected requests) with generous deadlines, never about tight timing — except
//! the SIGTERM stop, whose one-second bound is the daemon's contract.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use common::{agreed_leader, http, run_cli, summary, Cluster, DEADLINE};
use raftvip::auth::Authenticator;
use raftvip::raft::typ::{
    AppendEntriesRequest, AppendEntriesResponse, RaftError, Vote, VoteRequest, VoteResponse,
};
use raftvip::status::RaftRole;

/// How long "stays non-leader" is watched.
const QUIET_WATCH: Duration = Duration::from_secs(3);
/// The daemon's contract for a planned stop (measured ≈ 120 ms).
const SIGTERM_STOP_LIMIT: Duration = Duration::from_secs(1);

fn others(all: &[u64], not: u64) -> Vec<u64> {
    all.iter().copied().filter(|id| *id != not).collect()
}

#[test]
fn three_nodes_elect_exactly_one_leader_and_agree() {
    let mut c = Cluster::new(3, &[]);
    c.start_all();
    let (leader, term) = c.wait_for_leader(&c.ids(), DEADLINE);
    assert!((1..=3).contains(&leader));
    assert!(term >= 1);
    let statuses: Vec<_> = c.ids().iter().map(|id| c.status(*id).unwrap()).collect();
    let leaders = statuses
        .iter()
        .filter(|s| s.role == RaftRole::Leader)
        .count();
    assert_eq!(leaders, 1, "{}", summary(&statuses));
    for s in &statuses {
        assert_eq!(s.cluster, "it");
        assert_eq!(s.peers.len(), 3);
        if s.role == RaftRole::Leader {
            assert!(
                s.millis_since_quorum_ack.is_some(),
                "leader reports its quorum ack"
            );
        } else {
            assert_eq!(s.role, RaftRole::Follower);
        }
    }
}

#[test]
fn sigkill_of_the_leader_elects_a_survivor_with_the_same_membership() {
    let mut c = Cluster::new(3, &[]);
    c.start_all();
    let (old, old_term) = c.wait_for_leader(&c.ids(), DEADLINE);
    let peers_before: Vec<(u64, String)> = c
        .status(old)
        .unwrap()
        .peers
        .iter()
        .map(|p| (p.id, p.address.clone()))
        .collect();

    c.kill(old);
    let survivors = others(&c.ids(), old);
    let (new, new_term) = c.wait_for(&survivors, DEADLINE, "a new leader", |s| {
        agreed_leader(s).filter(|(leader, _)| *leader != old)
    });
    assert_ne!(new, old);
    assert!(new_term > old_term, "term {old_term} -> {new_term}");
    for id in survivors {
        let peers: Vec<(u64, String)> = c
            .status(id)
            .unwrap()
            .peers
            .iter()
            .map(|p| (p.id, p.address.clone()))
            .collect();
        assert_eq!(peers, peers_before, "node {id}: membership unchanged");
    }
}

/// A vote request with term 0 is refused by every node and changes nothing; the answer shows
/// the node's current (persisted) vote.
fn probe_vote(c: &Cluster, id: u64, auth: &Authenticator) -> Option<Vote> {
    let request = VoteRequest {
        vote: Vote::new(0, id % 3 + 1),
        last_log_id: None,
    };
    let body = serde_json::to_vec(&request).unwrap();
    let signature = auth.sign(id, "POST", "/raft/vote", &body, SystemTime::now());
    let (code, answer) = http(
        c.member(id).address,
        "POST",
        "/raft/vote",
        &signature.headers(),
        &body,
    )
    .ok()?;
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&answer));
    let answer: serde_json::Value = serde_json::from_slice(&answer).unwrap();
    let response: VoteResponse = serde_json::from_value(answer.get("Ok")?.clone()).unwrap();
    assert!(!response.vote_granted, "a term-0 vote is never granted");
    Some(response.vote)
}

#[test]
fn a_restarted_node_keeps_its_term_and_vote_and_rejoins() {
    let mut c = Cluster::new(3, &[]);
    c.start_all();
    let (leader, _) = c.wait_for_leader(&c.ids(), DEADLINE);
    let follower = others(&c.ids(), leader)[0];
    let auth = c.signer(leader);
    let before = probe_vote(&c, follower, &auth).expect("vote answer");
    let term_before = c.status(follower).unwrap().term;
    assert_eq!(before.leader_id().voted_for(), Some(leader));

    // Stop everybody so nobody can tell the follower the term again: what it reports after
    // the restart comes from its own disk.
    for id in c.ids() {
        c.kill(id);
    }
    c.start(follower);
    let after = c.wait_for(
        &[follower],
        DEADLINE,
        "the restarted node to answer",
        |_| probe_vote(&c, follower, &auth),
    );
    let term_after = after.leader_id().get_term();
    assert!(
        term_after >= term_before,
        "term forgotten: {term_before} before, {term_after} after the restart"
    );
    if term_after == before.leader_id().get_term() {
        assert_eq!(
            after.leader_id().voted_for(),
            before.leader_id().voted_for(),
            "vote of term {term_after} forgotten"
        );
    }
    assert!(c.status(follower).unwrap().term >= term_before);

    // The others come back and the cluster converges again, the restarted node included.
    for id in others(&c.ids(), follower) {
        c.start(id);
    }
    let (_, term) = c.wait_for_leader(&c.ids(), DEADLINE);
    assert!(term >= term_before);
}

#[test]
fn the_store_refuses_a_data_dir_of_another_node_or_cluster() {
    let mut c = Cluster::new(3, &[]);
    c.start_all();
    c.wait_for_leader(&c.ids(), DEADLINE);
    for id in c.ids() {
        c.kill(id);
    }

    // Node 1 pointed at node 2's data dir.
    let wrong_node = c.dir.path().join("wrong-node.toml");
    std::fs::write(&wrong_node, c.config_text(1, &c.name, &c.data_dir(2))).unwrap();
    // Node 1 of another cluster on node 1's data dir.
    let wrong_cluster = c.dir.path().join("wrong-cluster.toml");
    std::fs::write(&wrong_cluster, c.config_text(1, "other", &c.data_dir(1))).unwrap();

    for (config, expect) in [
        (&wrong_node, "node 2, but this node is configured as cluster \"it\" node 1"),
        (&wrong_cluster, "belongs to cluster \"it\" node 1, but this node is configured as cluster \"other\" node 1"),
    ] {
        let start = Instant::now();
        let (status, _, stderr) = run_cli(&["run", "--config", config.to_str().unwrap()]);
        assert!(!status.success(), "{}: started anyway", config.display());
        assert!(stderr.contains(expect), "{}: {stderr}", config.display());
        assert!(stderr.contains("data dir"), "says what to do: {stderr}");
        assert!(start.elapsed() < DEADLINE, "refused at once");
    }
    // The refusals left the data intact: the real nodes still start and elect.
    c.start_all();
    c.wait_for_leader(&c.ids(), DEADLINE);
}

/// Three started nodes, their leader and its term, and a follower to send requests to.
fn three_nodes_and_a_follower() -> (Cluster, u64, u64, u64) {
    let mut c = Cluster::new(3, &[]);
    c.start_all();
    let (leader, term) = c.wait_for_leader(&c.ids(), DEADLINE);
    let target = others(&c.ids(), leader)[0];
    (c, leader, term, target)
}

#[test]
fn unsigned_wrongly_signed_and_replayed_requests_are_rejected() {
    let (c, leader, term, target) = three_nodes_and_a_follower();
    let address = c.member(target).address;
    let rejected_before = c.status(target).unwrap().counters.rejected_requests;

    // A vote request that would depose the leader if it were accepted.
    let coup = serde_json::to_vec(&VoteRequest {
        vote: Vote::new(term + 100, target),
        last_log_id: None,
    })
    .unwrap();

    // 1. Unsigned.
    let (code, body) = http(address, "POST", "/raft/vote", &[], &coup).unwrap();
    assert_eq!(code, 401, "unsigned: {}", String::from_utf8_lossy(&body));
    // Unsigned "elect now" and maintenance too.
    let (code, _) = http(address, "POST", "/v1/elect", &[], b"").unwrap();
    assert_eq!(code, 401, "unsigned elect");

    // 2. Signed with the wrong secret.
    let impostor = c.signer_with(b"not-the-cluster-secret-but-32-bytes-long", leader);
    let sig = impostor.sign(target, "POST", "/raft/vote", &coup, SystemTime::now());
    let (code, _) = http(address, "POST", "/raft/vote", &sig.headers(), &coup).unwrap();
    assert_eq!(code, 401, "wrong secret");

    // 3. A valid, harmless request (term 0 vote) captured and sent again.
    let honest = c.signer(leader);
    let stale = serde_json::to_vec(&VoteRequest {
        vote: Vote::new(0, target),
        last_log_id: None,
    })
    .unwrap();
    let sig = honest.sign(target, "POST", "/raft/vote", &stale, SystemTime::now());
    let (code, _) = http(address, "POST", "/raft/vote", &sig.headers(), &stale).unwrap();
    assert_eq!(code, 200, "the original is accepted");
    let (code, body) = http(address, "POST", "/raft/vote", &sig.headers(), &stale).unwrap();
    assert_eq!(code, 401, "replay: {}", String::from_utf8_lossy(&body));
    assert_eq!(
        body, b"unauthenticated\n",
        "one uniform answer; the reason is logged"
    );

    let after = c.status(target).unwrap();
    assert_eq!(
        after.counters.rejected_requests,
        rejected_before + 4,
        "four rejections counted"
    );
    // Nothing changed: same leader, same term, for a while.
    let deadline = Instant::now() + Duration::from_millis(500);
    while Instant::now() < deadline {
        let (l, t) = c.wait_for_leader(&c.ids(), DEADLINE);
        assert_eq!((l, t), (leader, term), "leader/term changed");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A heartbeat datagram to node `to` as a leader sends one (docs/security.md): the signature
/// lines, then the body; and the nonce its answer must name.
fn heartbeat_frame(signer: &Authenticator, to: u64, body: &[u8]) -> (Vec<u8>, String) {
    let sig = signer.sign(to, "DATAGRAM", "/raft/append", body, SystemTime::now());
    let head = format!(
        "raftvip-heartbeat-v1\n{}\n{}\n{}\n{}\n",
        sig.from, sig.timestamp_ms, sig.nonce, sig.signature
    );
    ([head.as_bytes(), body].concat(), sig.nonce)
}

/// The datagram that comes back within 500 ms, if any.
fn datagram_answer(socket: &std::net::UdpSocket, frame: &[u8], to: SocketAddr) -> Option<Vec<u8>> {
    socket.send_to(frame, to).expect("send");
    let mut buf = [0; 2048];
    socket.recv(&mut buf).ok().map(|n| buf[..n].to_vec())
}

#[test]
fn a_heartbeat_datagram_is_answered_only_when_signed() {
    let (c, leader, term, target) = three_nodes_and_a_follower();
    let address = c.member(target).address;
    let rejected_before = c.status(target).unwrap().counters.rejected_requests;
    let fallbacks_before = c.status(leader).unwrap().counters.heartbeat_fallbacks;
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();

    // A stale leader's heartbeat (term 0): answered "there is a higher vote", signed.
    let stale = serde_json::to_vec(&AppendEntriesRequest {
        vote: Vote::new_committed(0, leader),
        prev_log_id: None,
        entries: vec![],
        leader_commit: None,
    })
    .unwrap();
    let honest = c.signer(leader);
    let (frame, nonce) = heartbeat_frame(&honest, target, &stale);
    let answer = datagram_answer(&socket, &frame, address).expect("an answer");
    let text = String::from_utf8_lossy(&answer).into_owned();
    let mut lines = text.splitn(4, '\n');
    assert_eq!(lines.next(), Some("raftvip-heartbeat-answer-v1"), "{text}");
    assert_eq!(lines.next(), Some(nonce.as_str()), "{text}");
    let signature = lines.next().expect("a signature line");
    let body = lines.next().expect("a body");
    honest
        .verify_response(target, &nonce, 200, Some(signature), body.as_bytes())
        .expect("signed by the node asked, over this request");
    let decoded: Result<AppendEntriesResponse, RaftError> = serde_json::from_str(body).unwrap();
    assert!(
        matches!(decoded, Ok(AppendEntriesResponse::HigherVote(_))),
        "{body}"
    );

    // The same datagram again (a replay), and one signed with another secret: no answer.
    assert_eq!(
        datagram_answer(&socket, &frame, address),
        None,
        "replay answered"
    );
    let impostor = c.signer_with(b"not-the-cluster-secret-but-32-bytes-long", leader);
    let (forged, _) = heartbeat_frame(&impostor, target, &stale);
    assert_eq!(
        datagram_answer(&socket, &forged, address),
        None,
        "forgery answered"
    );
    let status = c.status(target).unwrap();
    assert_eq!(status.counters.rejected_requests, rejected_before + 2);

    // Meanwhile none of the leader's own heartbeat datagrams went unanswered.
    let leader_status = c.status(leader).unwrap();
    assert_eq!(leader_status.term, term, "the leader was not disturbed");
    let fallbacks = leader_status.counters.heartbeat_fallbacks;
    assert_eq!(fallbacks, fallbacks_before, "heartbeats fell back to HTTP");
}

#[test]
fn a_single_node_cluster_elects_itself() {
    let mut c = Cluster::new(1, &[]);
    c.start_all();
    let (leader, term) = c.wait_for_leader(&[1], DEADLINE);
    assert_eq!(leader, 1);
    assert!(term >= 1);
}

#[test]
fn a_witness_never_leads_even_when_it_is_the_only_candidate_left() {
    // Voters 1 and 2, witness 3.
    let mut c = Cluster::new(3, &[3]);
    c.start_all();
    let (leader, _) = c.wait_for_leader(&c.ids(), DEADLINE);
    assert_ne!(leader, 3, "the witness led");
    assert_eq!(c.status(3).unwrap().role, RaftRole::Witness);
    let other_voter = if leader == 1 { 2 } else { 1 };

    // The other voter stops standing (maintenance) but still votes: after the leader dies, a
    // quorum (voter + witness) is alive and only the witness could stand.
    let config = c.config_path(other_voter);
    let (status, stdout, stderr) =
        run_cli(&["maintenance", "on", "--config", config.to_str().unwrap()]);
    assert!(status.success(), "maintenance on: {stdout}{stderr}");
    c.wait_for(&[other_voter], DEADLINE, "maintenance applied", |s| {
        (s[0].maintenance && !s[0].candidate_for_leader).then_some(())
    });

    c.kill(leader);
    let alive = [other_voter, 3];
    let start = Instant::now();
    while start.elapsed() < QUIET_WATCH {
        let statuses: Vec<_> = alive.iter().filter_map(|id| c.status(*id)).collect();
        for s in &statuses {
            assert_ne!(s.role, RaftRole::Leader, "{}", summary(&statuses));
        }
        if let Some(w) = statuses.iter().find(|s| s.node_id == 3) {
            assert_eq!(w.role, RaftRole::Witness, "{}", summary(&statuses));
            assert!(!w.candidate_for_leader);
        }
        std::thread::sleep(Duration::from_millis(20));
    }

    // Now kill the other voter too: the witness is alone, and still only a witness.
    c.kill(other_voter);
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(1) {
        let w = c.status(3).expect("witness answers");
        assert_eq!(w.role, RaftRole::Witness);
        std::thread::sleep(Duration::from_millis(20));
    }

    // A voter returns: it leads with the witness's vote.
    c.start(leader);
    let (new, _) = c.wait_for(&[leader, 3], DEADLINE, "the voter to lead", agreed_leader);
    assert_eq!(new, leader);
}

#[test]
fn nodes_started_in_any_order_converge_to_one_leader() {
    let mut c = Cluster::new(3, &[]);
    c.start(3);
    std::thread::sleep(Duration::from_secs(1));
    // Alone, node 3 cannot lead.
    let alone = c.status(3).expect("node 3 answers");
    assert_ne!(alone.role, RaftRole::Leader);
    c.start(1);
    std::thread::sleep(Duration::from_millis(300));
    c.start(2);
    let (_, _) = c.wait_for_leader(&c.ids(), DEADLINE);
    // And it stays one agreed leader.
    let leaders: BTreeSet<u64> = (0..10)
        .map(|_| {
            std::thread::sleep(Duration::from_millis(50));
            c.wait_for_leader(&c.ids(), DEADLINE).0
        })
        .collect();
    assert_eq!(leaders.len(), 1, "leadership flapped: {leaders:?}");
}

#[test]
fn sigterm_stops_within_a_second_and_the_leader_hands_over() {
    let mut c = Cluster::new(3, &[]);
    c.start_all();
    let (leader, term) = c.wait_for_leader(&c.ids(), DEADLINE);

    // A follower stops quickly and cleanly.
    let follower = others(&c.ids(), leader)[0];
    let (status, took) = c.take(follower).terminate(DEADLINE);
    let status = status.expect("follower exited");
    assert!(status.success(), "follower exit {status}");
    assert!(took < SIGTERM_STOP_LIMIT, "follower took {took:?}");
    c.start(follower);
    c.wait_for_leader(&c.ids(), DEADLINE);

    // The leader hands over before it stops.
    let (leader, term) = c.wait_for_leader(&c.ids(), DEADLINE).max((leader, term));
    let handed = Instant::now();
    let (status, took) = c.take(leader).terminate(DEADLINE);
    let status = status.expect("leader exited");
    assert!(status.success(), "leader exit {status}");
    assert!(took < SIGTERM_STOP_LIMIT, "leader took {took:?}");
    let survivors = others(&c.ids(), leader);
    let (new, new_term) = c.wait_for(&survivors, DEADLINE, "the handed-over leader", |s| {
        agreed_leader(s).filter(|(l, _)| *l != leader)
    });
    let elapsed = handed.elapsed();
    assert!(new_term > term);
    // A handover is an immediate election (ms); without one the survivors would wait for the
    // lease and their election timeout. Within the stop time plus slack is "quickly".
    assert!(
        elapsed < SIGTERM_STOP_LIMIT * 2,
        "new leader {new} after {elapsed:?}"
    );
    let handovers = c.status(new).unwrap();
    let log = std::fs::read_to_string(c.log_path(leader)).unwrap_or_default();
    assert!(
        log.contains("peer accepted to take over"),
        "the leader asked a peer to take over: {log}\n{}",
        summary(&[handovers])
    );
}

#[test]
fn check_config_names_the_broken_key_and_accepts_a_good_file() {
    let c = Cluster::new(3, &[]);
    let good = c.config_path(1);
    let (status, stdout, stderr) = run_cli(&["check-config", "--config", good.to_str().unwrap()]);
    assert!(status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("ok"), "{stdout}");

    let base = c.config_text(1, &c.name, &c.data_dir(1));
    let cases = [
        (
            format!("{base}[timing]\nfence_ms = 86\n"),
            "timing.fence_ms",
        ),
        (
            format!("{base}[timing]\nelection_timeout_ms = [90, 60]\n"),
            "timing.election_timeout_ms",
        ),
        (base.replace("node_id = 1", "node_id = 9"), "node_id"),
        (
            base.replace("node_id = 1", "node_id = 1\nnode_idd = 2"),
            "node_idd",
        ),
        (
            base.replace(
                &c.secret_path().display().to_string(),
                "/nonexistent/secret",
            ),
            "secret_file",
        ),
    ];
    for (i, (text, key)) in cases.iter().enumerate() {
        let path = c.dir.path().join(format!("bad{i}.toml"));
        std::fs::write(&path, text).unwrap();
        let (status, stdout, stderr) =
            run_cli(&["check-config", "--config", path.to_str().unwrap()]);
        assert!(!status.success(), "{key}: accepted\n{stdout}");
        assert!(stderr.contains(key), "{key} not named: {stderr}");
    }
}

#[test]
fn check_config_refuses_a_pair_without_witness_and_warns_about_even_counts() {
    let pair = Cluster::new(2, &[]);
    let acknowledged = pair.config_text(1, &pair.name, &pair.data_dir(1));
    let refused = acknowledged.replace("accept_no_failover = true\n", "");
    let check = |text: &str, name: &str| {
        let path = pair.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        run_cli(&["check-config", "--config", path.to_str().unwrap()])
    };
    let (status, stdout, stderr) = check(&refused, "pair.toml");
    assert!(
        !status.success(),
        "a pair without witness was accepted: {stdout}"
    );
    assert!(stderr.contains("no box holds the VIP"), "{stderr}");
    assert!(stderr.contains("witness on a third machine"), "{stderr}");
    // `run` loads the config the same way: the pair does not start either.
    let path = pair.dir.path().join("pair.toml");
    let (status, _, stderr) = run_cli(&["run", "--config", path.to_str().unwrap()]);
    assert!(!status.success(), "run started a pair without witness");
    assert!(stderr.contains("no box holds the VIP"), "{stderr}");

    let (status, stdout, stderr) = check(&acknowledged, "acknowledged.toml");
    assert!(status.success(), "{stdout}{stderr}");
    assert!(
        stdout.contains("warning: accept_no_failover = true"),
        "{stdout}"
    );

    let four = Cluster::new(4, &[4]);
    let (status, stdout, stderr) = run_cli(&[
        "check-config",
        "--config",
        four.config_path(1).to_str().unwrap(),
    ]);
    assert!(status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("warning: 4 voting members"), "{stdout}");

    // Numbers that overflowed before are named; a readable secret is refused with the fix.
    let base = four.config_text(1, &four.name, &four.data_dir(1));
    let huge = format!("{base}[timing]\nfence_ms = 18446744073709551615\n");
    let (status, _, stderr) = check(&huge, "huge.toml");
    assert!(!status.success());
    assert!(
        stderr.contains("timing.fence_ms: 18446744073709551615 is outside"),
        "{stderr}"
    );
    std::fs::set_permissions(
        four.secret_path(),
        <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o644),
    )
    .unwrap();
    let (status, _, stderr) = check(&base, "readable.toml");
    assert!(!status.success());
    assert!(stderr.contains("chmod 600"), "{stderr}");
}

#[test]
fn a_node_with_a_new_store_withholds_its_vote_for_one_election_cycle() {
    // A long election cycle (3 s) so the window is easy to tell apart; node 1 runs alone, so
    // no leader can end the window early.
    let mut c = Cluster::new(3, &[]);
    c.extra = "[timing]\nheartbeat_ms = 200\nelection_timeout_ms = [2000, 3000]\n".into();
    c.write_config(1);
    let auth = c.signer(2);
    let ask = |c: &Cluster| {
        let body = serde_json::to_vec(&VoteRequest {
            vote: Vote::new(0, 2),
            last_log_id: None,
        })
        .unwrap();
        let signature = auth.sign(1, "POST", "/raft/vote", &body, SystemTime::now());
        let (code, answer) = http(
            c.member(1).address,
            "POST",
            "/raft/vote",
            &signature.headers(),
            &body,
        )
        .expect("node 1 answers");
        (code, String::from_utf8_lossy(&answer).into_owned())
    };

    let started = Instant::now();
    c.start(1);
    let status = c.wait_for(&[1], DEADLINE, "node 1 answers", |s| Some(s[0].clone()));
    let (code, answer) = ask(&c);
    assert_eq!(status.voters_may_fail, 1, "three members survive one loss");
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "too slow to test the window"
    );
    assert_eq!(code, 503, "a new store voted at once: {answer}");
    assert!(answer.contains("may already have voted"), "{answer}");

    // The window opened before this first refusal, so it is over 3 s after it.
    std::thread::sleep(Duration::from_millis(3100));
    let (code, answer) = ask(&c);
    assert_eq!(
        code, 200,
        "still refused after one election cycle: {answer}"
    );

    // The store now exists: after a restart the node votes at once.
    c.kill(1);
    c.start(1);
    c.wait_for(&[1], DEADLINE, "node 1 answers again", |_| Some(()));
    let (code, answer) = ask(&c);
    assert_eq!(code, 200, "a kept store withheld its vote: {answer}");
}

/// Runs `raftvip reload` with node `id`'s config; panics with its output if it fails.
fn reload_cli(c: &Cluster, id: u64) -> String {
    let config = c.config_path(id);
    let (status, stdout, stderr) = run_cli(&["reload", "--config", config.to_str().unwrap()]);
    assert!(status.success(), "raftvip reload on node {id}: {stderr}");
    stdout
}

fn voters(s: &raftvip::status::Status) -> Vec<Vec<u64>> {
    s.membership
        .as_ref()
        .map_or(Vec::new(), |m| m.voters.clone())
}

fn standing(s: &raftvip::status::Status) -> String {
    s.membership
        .as_ref()
        .map_or(String::new(), |m| m.standing.clone())
}

/// Issue 10 item 4: a 4th node started with the new list waits instead of founding its own
/// cluster, joins through a reload of a member's list (learner, then voter), and a leader the
/// lists drop hands over, is removed by its successor and says so.
#[test]
fn a_node_joins_at_run_time_and_a_dropped_leader_is_removed() {
    let mut c = Cluster::new(4, &[]);
    let fourth = c.members.pop().expect("four members");
    for id in 1..=3 {
        c.write_config(id);
        c.start(id);
    }
    c.wait_for_leader(&[1, 2, 3], DEADLINE);
    c.members.push(fourth);
    c.write_config(4);
    c.start(4);
    c.wait_for(&[4], DEADLINE, "node 4 waiting to be added", |s| {
        standing(&s[0]).starts_with("waiting").then_some(())
    });
    for id in 1..=3 {
        c.write_config(id);
    }
    let (_, stdout, _) = run_cli(&["status", "--config", c.config_path(1).to_str().unwrap()]);
    assert!(
        stdout.contains("file differs: node 4")
            && stdout.contains("is in the file but not a member"),
        "{stdout}"
    );
    let reloaded = reload_cli(&c, 2);
    assert!(
        reloaded.contains("peer: [1, 2, 3] -> [1, 2, 3, 4]"),
        "{reloaded}"
    );
    let (leader, _) = c.wait_for(&c.ids(), DEADLINE, "4 voters and one leader", |s| {
        s.iter()
            .all(|s| voters(s) == [vec![1, 2, 3, 4]] && standing(s) == "voter")
            .then(|| agreed_leader(s))
            .flatten()
    });

    let rest = others(&c.ids(), leader);
    for &id in &rest {
        let text = c.config_text(id, &c.name, &c.data_dir(id));
        let dropped = format!(
            "[[peer]]\nid = {leader}\naddress = \"{}\"\n",
            c.member(leader).address
        );
        std::fs::write(c.config_path(id), text.replace(&dropped, "")).unwrap();
    }
    reload_cli(&c, rest[0]);
    let want = vec![rest.clone()];
    let (successor, _) = c.wait_for(&rest, DEADLINE, "the others without the old leader", |s| {
        s.iter()
            .all(|s| voters(s) == want)
            .then(|| agreed_leader(s))
            .flatten()
    });
    assert_ne!(successor, leader);
    let removed = c.status(leader).expect("the removed node still answers");
    assert!(
        standing(&removed).starts_with("removed from the cluster"),
        "{}",
        standing(&removed)
    );
    assert!(!removed.candidate_for_leader);
    assert_ne!(removed.role, RaftRole::Leader);
}
