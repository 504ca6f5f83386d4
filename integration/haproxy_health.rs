//! The health monitor against a real HAProxy (Debian's 2.6) in master-worker mode.
//!
//! Each test starts its own HAProxy from `haproxy/testbed.cfg.in`: loopback ports picked free,
//! the stats socket in a tempdir, and a tiny HTTP server in the test as the backend. The
//! [`Bed`] guard SIGKILLs every HAProxy process it started (master and all workers, by pid)
//! when dropped, so a failing test leaves nothing behind.
//!
//! HAProxy missing is a failure, not a skip: these tests are the proof that the health layer
//! works against the real thing.
//!
//! Run with `--nocapture` to see the measured numbers (death-detection latency, check cost).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use raftvip::config::HaproxyConfig;
use raftvip::health::haproxy::{check, judge, parse_answer, query, CHECK_COMMAND};
use raftvip::health::{spawn_haproxy_monitor, Health, Verdict};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

const TEMPLATE: &str = include_str!("../haproxy/testbed.cfg.in");

/// Generous bound for "at once": the design target is < 50 ms (measured a few ms); a loaded CI
/// box must not make the test flaky, while a poll-based detection (seconds here) still fails.
const FAST: Duration = Duration::from_millis(500);

fn haproxy_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("RAFTVIP_HAPROXY") {
        return bin.into();
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/sbin")])
        .map(|dir| dir.join("haproxy"))
        .find(|bin| bin.is_file())
        .unwrap_or_else(|| {
            panic!(
                "HAProxy is not installed (no `haproxy` in PATH, /usr/sbin or /usr/local/sbin; \
                 set RAFTVIP_HAPROXY to its path). These tests need it: apt-get install haproxy"
            )
        })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a loopback port")
        .port()
}

/// A minimal HTTP server answering 200 to everything, stoppable (then connects are refused).
struct Backend {
    addr: SocketAddr,
    stop: CancellationToken,
}

impl Backend {
    async fn start(addr: SocketAddr) -> Backend {
        let listener = TcpListener::bind(addr).await.expect("bind the backend");
        let addr = listener.local_addr().expect("backend address");
        let stop = CancellationToken::new();
        let token = stop.clone();
        tokio::spawn(async move {
            loop {
                let (mut conn, _) = tokio::select! {
                    () = token.cancelled() => return,
                    accepted = listener.accept() => match accepted {
                        Ok(c) => c,
                        Err(_) => return,
                    },
                };
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    let _ = conn.read(&mut buf).await;
                    let _ = conn
                        .write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n")
                        .await;
                });
            }
        });
        Backend { addr, stop }
    }

    fn stop(&self) {
        self.stop.cancel();
    }
}

/// One HAProxy master-worker instance; killed with all its workers on drop.
struct Bed {
    dir: tempfile::TempDir,
    socket: PathBuf,
    master: Child,
    backend: Backend,
}

impl Bed {
    async fn start() -> Bed {
        let backend = Backend::start("127.0.0.1:0".parse().expect("addr")).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("admin.sock");
        let pidfile = dir.path().join("haproxy.pid");
        let cfg = TEMPLATE
            .replace("@STATS_SOCKET@", &socket.display().to_string())
            .replace("@PIDFILE@", &pidfile.display().to_string())
            .replace("@BIND@", &format!("127.0.0.1:{}", free_port()))
            .replace("@SERVER@", &backend.addr.to_string());
        let cfg_path = dir.path().join("haproxy.cfg");
        std::fs::write(&cfg_path, cfg).expect("write haproxy.cfg");
        let log = std::fs::File::create(dir.path().join("haproxy.log")).expect("log file");
        let master = Command::new(haproxy_bin())
            .arg("-W")
            .arg("-f")
            .arg(&cfg_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("start haproxy");
        let bed = Bed {
            dir,
            socket,
            master,
            backend,
        };
        bed.wait_answering().await;
        bed
    }

    fn master_pid(&self) -> Pid {
        Pid::from_raw(i32::try_from(self.master.id()).expect("pid fits"))
    }

    /// All live children of the master (current and old workers).
    fn workers(&self) -> Vec<Pid> {
        children(self.master.id())
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("haproxy.log")).unwrap_or_default()
    }

    fn config(&self) -> HaproxyConfig {
        HaproxyConfig {
            stats_socket: self.socket.clone(),
            frontends: vec!["fe_test".into()],
            backends: vec!["be_test".into()],
            min_servers_up: 1,
            poll_interval_ms: 100,
            timeout_ms: 250,
            rise: 2,
            fall: 2,
        }
    }

    /// The pid of the worker answering the socket now, if any.
    async fn answering_pid(&self) -> Option<u32> {
        check(&self.config()).await.info.map(|i| i.pid)
    }

    async fn wait_answering(&self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.answering_pid().await.is_none() {
            assert!(
                Instant::now() < deadline,
                "HAProxy did not answer on its stats socket within 5 s; its log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGUSR2 to the master, then waits until a new worker answers.
    async fn reload(&self) -> u32 {
        let before = self.answering_pid().await;
        kill(self.master_pid(), Signal::SIGUSR2).expect("signal the master");
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(pid) = self.answering_pid().await.filter(|p| Some(*p) != before) {
                return pid;
            }
            assert!(Instant::now() < deadline, "no new worker after a reload");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

fn children(pid: u32) -> Vec<Pid> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|list| {
            list.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .map(Pid::from_raw)
                .collect::<Vec<_>>()
        })
        .collect()
}

impl Drop for Bed {
    fn drop(&mut self) {
        self.backend.stop();
        for worker in self.workers() {
            let _ = kill(worker, Signal::SIGKILL);
        }
        let _ = self.master.kill();
        let _ = self.master.wait();
    }
}

/// Records every published change with its time, for order-of-events assertions.
type Timeline = Arc<Mutex<Vec<(Instant, Health)>>>;

fn record(mut rx: watch::Receiver<Health>) -> Timeline {
    let timeline: Timeline = Arc::new(Mutex::new(vec![(Instant::now(), rx.borrow().clone())]));
    let sink = timeline.clone();
    tokio::spawn(async move {
        while rx.changed().await.is_ok() {
            let health = rx.borrow_and_update().clone();
            sink.lock()
                .expect("timeline")
                .push((Instant::now(), health));
        }
    });
    timeline
}

async fn wait_for(
    rx: &mut watch::Receiver<Health>,
    within: Duration,
    what: &str,
    f: impl FnMut(&Health) -> bool,
) -> Health {
    let found = match tokio::time::timeout(within, rx.wait_for(f)).await {
        Ok(Ok(h)) => Some(h.clone()),
        _ => None,
    };
    found.unwrap_or_else(|| panic!("not {what} within {within:?}; last: {:?}", rx.borrow()))
}

const HARD_REASONS: [&str; 4] = ["connection refused", "does not exist", "closed", "failed ("];

/// Kills `victim` and returns how long the monitor took to say unhealthy, and why.
async fn death_detected(bed: &Bed, victim: Pid) -> (Duration, String) {
    let mut cfg = bed.config();
    // Polling is far too slow to explain a fast verdict: only the watch session can.
    cfg.poll_interval_ms = 3_000;
    cfg.rise = 1;
    cfg.fall = 3;
    let cancel = CancellationToken::new();
    let mut rx = spawn_haproxy_monitor(cfg, cancel.clone());
    let timeline = record(rx.clone());
    // First check may find the server unchecked (HAProxy just started): the next poll settles.
    wait_for(&mut rx, Duration::from_secs(8), "healthy", |h| h.healthy).await;
    tokio::time::sleep(Duration::from_millis(100)).await; // the session opens after the check

    let killed = Instant::now();
    kill(victim, Signal::SIGKILL).expect("kill");
    let health = wait_for(&mut rx, Duration::from_secs(10), "unhealthy", |h| {
        !h.healthy
    })
    .await;
    let latency = killed.elapsed();
    cancel.cancel();

    let events = timeline.lock().expect("timeline").clone();
    let states: Vec<bool> = events.iter().map(|(_, h)| h.healthy).collect();
    let first_healthy = states.iter().position(|h| *h).expect("was healthy");
    assert!(
        states[first_healthy..].contains(&false),
        "order: unknown -> healthy -> unhealthy, got {states:?}"
    );
    let reason = health.reason.unwrap_or_default();
    assert!(
        HARD_REASONS.iter().any(|r| reason.contains(r)),
        "reason {reason:?}"
    );
    (latency, reason)
}

#[tokio::test]
async fn worker_sigkill_is_seen_at_once() {
    let bed = Bed::start().await;
    let worker =
        Pid::from_raw(i32::try_from(bed.answering_pid().await.expect("worker")).expect("pid"));
    let (latency, reason) = death_detected(&bed, worker).await;
    eprintln!("worker SIGKILL -> unhealthy in {latency:?} ({reason})");
    assert!(latency < FAST, "took {latency:?}: {reason}");
}

#[tokio::test]
async fn master_sigkill_is_seen_at_once() {
    let bed = Bed::start().await;
    let (latency, reason) = death_detected(&bed, bed.master_pid()).await;
    eprintln!("master SIGKILL -> unhealthy in {latency:?} ({reason})");
    assert!(latency < FAST, "took {latency:?}: {reason}");
}

#[tokio::test]
async fn dead_backend_server_is_backend_down_and_recovers() {
    let bed = Bed::start().await;
    let cancel = CancellationToken::new();
    let mut rx = spawn_haproxy_monitor(bed.config(), cancel.clone());
    wait_for(&mut rx, Duration::from_secs(5), "healthy", |h| h.healthy).await;

    let addr = bed.backend.addr;
    bed.backend.stop();
    let health = wait_for(&mut rx, Duration::from_secs(5), "unhealthy", |h| !h.healthy).await;
    assert_eq!(
        health.reason.as_deref(),
        Some("backend be_test DOWN (servers up 0 < 1)")
    );

    let _again = Backend::start(addr).await;
    let health = wait_for(&mut rx, Duration::from_secs(5), "healthy", |h| h.healthy).await;
    assert_eq!(health.transitions, 3, "healthy -> unhealthy -> healthy");
    cancel.cancel();
}

#[tokio::test]
async fn ten_reloads_are_never_a_failure_and_the_session_follows() {
    let bed = Bed::start().await;
    let cancel = CancellationToken::new();
    let mut rx = spawn_haproxy_monitor(bed.config(), cancel.clone());
    wait_for(&mut rx, Duration::from_secs(5), "healthy", |h| h.healthy).await;
    let timeline = record(rx.clone());

    let mut pids = vec![bed.answering_pid().await.expect("worker")];
    for _ in 0..10 {
        pids.push(bed.reload().await);
        // Spaced by a few polls, so the monitor sees every new worker in its young phase.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    pids.dedup();
    assert_eq!(pids.len(), 11, "each reload brought a new worker: {pids:?}");

    // The monitor let go of each old worker, so they all exit: only the newest is left.
    let deadline = Instant::now() + Duration::from_secs(5);
    while bed.workers().len() > 1 {
        assert!(
            Instant::now() < deadline,
            "old workers still alive: {:?} (a watch session may keep one alive)",
            bed.workers()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let events = timeline.lock().expect("timeline").clone();
    assert!(
        events.iter().all(|(_, h)| h.healthy),
        "a reload made the node unhealthy: {events:?}"
    );
    assert_eq!(rx.borrow().transitions, 1, "only unknown -> healthy");

    // And the session now watches the newest worker: its death is still seen at once.
    let newest = Pid::from_raw(i32::try_from(*pids.last().expect("pid")).expect("pid"));
    let killed = Instant::now();
    kill(newest, Signal::SIGKILL).expect("kill");
    wait_for(&mut rx, Duration::from_secs(10), "unhealthy", |h| {
        !h.healthy
    })
    .await;
    let latency = killed.elapsed();
    eprintln!("after 10 reloads: worker SIGKILL -> unhealthy in {latency:?}");
    assert!(latency < FAST, "took {latency:?}");
    cancel.cancel();
}

#[tokio::test]
async fn reload_with_a_dead_server_does_not_look_healthy() {
    let bed = Bed::start().await;
    bed.backend.stop();
    let mut cfg = bed.config();
    // Eager settings: one good check would be enough to turn healthy, so HAProxy's optimistic
    // `UP 1/2` (never checked) after a reload must not count as good.
    cfg.poll_interval_ms = 20;
    cfg.rise = 1;
    let cancel = CancellationToken::new();
    let mut rx = spawn_haproxy_monitor(cfg, cancel.clone());
    // HAProxy measured the server UP before it stopped: wait until it has seen it DOWN.
    let health = wait_for(&mut rx, Duration::from_secs(5), "unhealthy", |h| {
        h.reason.as_deref() == Some("backend be_test DOWN (servers up 0 < 1)")
    })
    .await;
    assert!(!health.healthy);
    let timeline = record(rx.clone());
    for _ in 0..3 {
        bed.reload().await;
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    let events = timeline.lock().expect("timeline").clone();
    assert!(
        events.iter().all(|(_, h)| !h.healthy),
        "an unsettled worker made a dead backend look healthy: {events:?}"
    );
    cancel.cancel();
}

#[tokio::test]
async fn missing_socket_has_its_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("admin.sock");
    let cfg = HaproxyConfig {
        stats_socket: path.clone(),
        frontends: vec![],
        backends: vec![],
        min_servers_up: 1,
        poll_interval_ms: 50,
        timeout_ms: 250,
        rise: 2,
        fall: 2,
    };
    let cancel = CancellationToken::new();
    let mut rx = spawn_haproxy_monitor(cfg, cancel.clone());
    let health = wait_for(&mut rx, Duration::from_secs(2), "checked", |h| h.checks > 0).await;
    assert!(!health.healthy);
    assert_eq!(
        health.reason,
        Some(format!(
            "stats socket {} does not exist (HAProxy not running, or no `stats socket` line in haproxy.cfg)",
            path.display()
        ))
    );
    cancel.cancel();
}

#[tokio::test]
async fn named_frontend_or_backend_that_haproxy_lacks_is_not_found() {
    let bed = Bed::start().await;
    let mut cfg = bed.config();
    cfg.frontends = vec!["fe_nope".into()];
    assert_eq!(
        reason(check(&cfg).await.verdict),
        "frontend fe_nope not found"
    );
    let mut cfg = bed.config();
    cfg.backends = vec!["be_nope".into()];
    assert_eq!(
        reason(check(&cfg).await.verdict),
        "backend be_nope not found"
    );
}

fn reason(v: Verdict) -> String {
    match v {
        Verdict::Bad(why) => why.to_string(),
        other => panic!("expected a failure, got {other:?}"),
    }
}

fn thread_cpu() -> Duration {
    // SAFETY: getrusage only writes the struct we pass.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer to a rusage struct.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) };
    assert_eq!(rc, 0, "getrusage");
    let tv = |t: libc::timeval| {
        Duration::from_secs(u64::try_from(t.tv_sec).unwrap_or(0))
            + Duration::from_micros(u64::try_from(t.tv_usec).unwrap_or(0))
    };
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// CPU per check on the calling thread (the test runtime is single-threaded, so all of the
/// client's work is counted) and wall time per check.
async fn cost<F, Fut>(rounds: u32, mut one: F) -> (Duration, Duration)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let (cpu, wall) = (thread_cpu(), Instant::now());
    for _ in 0..rounds {
        one().await;
    }
    ((thread_cpu() - cpu) / rounds, wall.elapsed() / rounds)
}

#[tokio::test]
async fn a_check_costs_well_under_a_millisecond_of_cpu() {
    let bed = Bed::start().await;
    let cfg = bed.config();
    let rounds = 2_000;
    let timeout = Duration::from_millis(250);
    let path: &Path = &cfg.stats_socket;

    let (chained_cpu, chained_wall) = cost(rounds, || async {
        assert!(matches!(
            check(&cfg).await.verdict,
            Verdict::Good | Verdict::Unsettled(_)
        ));
    })
    .await;
    let (query_cpu, query_wall) = cost(rounds, || async {
        query(path, CHECK_COMMAND, timeout).await.expect("query");
    })
    .await;
    let answer = query(path, CHECK_COMMAND, timeout).await.expect("query");
    let (parse_cpu, _) = cost(rounds, || async {
        let snapshot = parse_answer(&answer).expect("parses");
        std::hint::black_box(judge(&snapshot, &cfg));
    })
    .await;
    let (info_cpu, info_wall) = cost(rounds, || async {
        query(path, "show info\n", timeout)
            .await
            .expect("show info");
    })
    .await;
    let (two_cpu, two_wall) = cost(rounds, || async {
        query(path, "show info\n", timeout)
            .await
            .expect("show info");
        query(path, "show stat\n", timeout)
            .await
            .expect("show stat");
    })
    .await;
    eprintln!(
        "per check, client side: chained `show info;show stat` + parse + judge: {chained_cpu:?} CPU, \
         {chained_wall:?} wall (query only: {query_cpu:?} CPU, {query_wall:?} wall; parse + judge \
         of {} bytes: {parse_cpu:?} CPU); `show info` alone: {info_cpu:?} CPU, {info_wall:?} wall; \
         two connections (info, stat), no parsing: {two_cpu:?} CPU, {two_wall:?} wall",
        answer.len()
    );
    assert!(
        chained_cpu < Duration::from_millis(1),
        "a check costs {chained_cpu:?} CPU"
    );
}
