//! systemd's notify protocol against the real binary: the test binds the unix datagram socket
//! systemd would (`NOTIFY_SOCKET`), asks for a watchdog (`WATCHDOG_USEC`), and checks what
//! a one-node cluster sends: READY=1 with a STATUS= line once it has joined, WATCHDOG=1 at
//! half the watchdog period, STOPPING=1 on SIGTERM. No root needed (loopback only).

mod common;

use std::os::unix::net::UnixDatagram;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{signal, Cluster, BIN, DEADLINE};
use nix::sys::signal::Signal;

/// The watchdog the test asks for; raftvip pings every half of it.
const WATCHDOG: Duration = Duration::from_millis(400);
/// How long the pings are watched.
const WATCH_FOR: Duration = Duration::from_secs(3);

/// Kills and reaps the child on drop, so a failed assertion leaves no daemon behind.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Every datagram received until `until` says to stop, with its arrival time.
fn receive(
    socket: &UnixDatagram,
    mut until: impl FnMut(&[(Instant, String)]) -> bool,
) -> Vec<(Instant, String)> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !until(&got) {
        if let Ok(n) = socket.recv(&mut buf) {
            got.push((
                Instant::now(),
                String::from_utf8_lossy(&buf[..n]).into_owned(),
            ));
        }
    }
    got
}

/// A bound notify socket in the cluster's directory, as systemd would provide.
fn notify_socket(cluster: &Cluster) -> (UnixDatagram, std::path::PathBuf) {
    let path = cluster.dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).expect("bind the notify socket");
    socket
        .set_read_timeout(Some(Duration::from_millis(50)))
        .expect("read timeout");
    (socket, path)
}

/// `raftvip run` for node `id` under a systemd-like notify socket and watchdog.
fn start_notified(cluster: &Cluster, id: u64, socket_path: &std::path::Path) -> Daemon {
    let log = std::fs::File::create(cluster.log_path(id)).expect("log file");
    Daemon(
        Command::new(BIN)
            .arg("run")
            .arg("--config")
            .arg(cluster.config_path(id))
            .env("NOTIFY_SOCKET", socket_path)
            .env("WATCHDOG_USEC", WATCHDOG.as_micros().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn raftvip"),
    )
}

/// The first datagram the daemon sends (within [`DEADLINE`] of now), with its arrival time.
fn first_message(socket: &UnixDatagram, log_text: &dyn Fn() -> String) -> (Instant, String) {
    let started = Instant::now();
    let first = receive(socket, |got| {
        !got.is_empty() || started.elapsed() > DEADLINE
    });
    first
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no notification within {DEADLINE:?}; log:\n{}", log_text()))
}

/// Pings every half watchdog from `ready_at` on: never a gap the watchdog would punish,
/// never a flood, and the supervisor never reported wedged.
fn assert_pings_keep_time(ready_at: Instant, watched: &[(Instant, String)], log: &str) {
    let mut pings: Vec<Instant> = vec![ready_at];
    pings.extend(
        watched
            .iter()
            .filter(|(_, m)| m.contains("WATCHDOG=1"))
            .map(|(t, _)| *t),
    );
    let gaps: Vec<u128> = pings
        .windows(2)
        .map(|w| (w[1] - w[0]).as_millis())
        .collect();
    let expected = WATCH_FOR.as_millis() / (WATCHDOG / 2).as_millis();
    assert!(
        (expected as usize - 2..=expected as usize + 2).contains(&gaps.len()),
        "{} pings in {WATCH_FOR:?}, expected about {expected}: gaps {gaps:?} ms",
        gaps.len()
    );
    assert!(
        gaps.iter().all(|&g| g < WATCHDOG.as_millis()),
        "a gap between pings reached the watchdog period: {gaps:?} ms"
    );

    assert!(
        !log.contains("withholding"),
        "a turning supervisor was reported wedged:\n{}",
        log
    );
}

#[test]
fn ready_status_watchdog_pings_and_stopping_reach_the_notify_socket() {
    let mut cluster = Cluster::new(1, &[]);
    // The supervisor turns at least this often, well inside half the watchdog.
    cluster.extra = "[timing]\nreconcile_ms = 100\n".to_owned();
    cluster.write_config(1);
    let (socket, socket_path) = notify_socket(&cluster);
    let mut daemon = start_notified(&cluster, 1, &socket_path);
    let log_text = || std::fs::read_to_string(cluster.log_path(1)).unwrap_or_default();

    // READY=1 comes with the status line, once, and before any other message.
    let (ready_at, ready) = first_message(&socket, &log_text);
    assert!(ready.contains("READY=1\n"), "first message: {ready:?}");
    assert!(ready.contains("STATUS="), "READY without STATUS: {ready:?}");

    // The single node elects itself: the status line follows the role change.
    let watched = receive(&socket, |_| ready_at.elapsed() > WATCH_FOR);
    let statuses: Vec<&str> = watched
        .iter()
        .flat_map(|(_, m)| m.lines())
        .filter_map(|l| l.strip_prefix("STATUS="))
        .chain(ready.lines().filter_map(|l| l.strip_prefix("STATUS=")))
        .collect();
    assert!(
        statuses
            .iter()
            .any(|s| s.starts_with("leader, term ") && s.contains("holds the VIPs")),
        "no leader status line among {statuses:?}"
    );
    assert!(
        !watched.iter().any(|(_, m)| m.contains("READY=1")),
        "READY=1 sent twice"
    );

    assert_pings_keep_time(ready_at, &watched, &log_text());

    // SIGTERM: STOPPING=1, then a clean exit.
    signal(daemon.0.id(), Signal::SIGTERM);
    let stop_at = Instant::now();
    let stopping = receive(&socket, |got| {
        got.iter().any(|(_, m)| m.contains("STOPPING=1")) || stop_at.elapsed() > DEADLINE
    });
    assert!(
        stopping.iter().any(|(_, m)| m.contains("STOPPING=1")),
        "no STOPPING=1 after SIGTERM: {stopping:?}"
    );
    let status = daemon.0.wait().expect("wait");
    assert!(status.success(), "exit {status:?}; log:\n{}", log_text());
}

/// A witness follower has nothing to decide for long stretches (it never stands, no health
/// gate, no VIPs): its supervisor must still turn, or systemd would kill an idle witness.
#[test]
fn an_idle_witness_keeps_the_watchdog_fed() {
    let mut cluster = Cluster::new(3, &[3]);
    cluster.extra = "[timing]\nreconcile_ms = 100\n".to_owned();
    for id in cluster.ids() {
        cluster.write_config(id);
    }
    let (socket, socket_path) = notify_socket(&cluster);
    cluster.start(1);
    cluster.start(2);
    let _witness = start_notified(&cluster, 3, &socket_path);
    let log_text = || std::fs::read_to_string(cluster.log_path(3)).unwrap_or_default();
    let (ready_at, ready) = first_message(&socket, &log_text);
    assert!(ready.contains("READY=1\n"), "first message: {ready:?}");
    let watched = receive(&socket, |_| ready_at.elapsed() > WATCH_FOR);
    assert_pings_keep_time(ready_at, &watched, &log_text());
}
