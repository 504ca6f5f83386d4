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

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{free_ports, signal};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use raftvip::config::HaproxyConfig;
use raftvip::health::haproxy::{judge, parse_answer, Session};
use raftvip::health::{spawn_haproxy_monitor, Health, Verdict};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

const TEMPLATE: &str = include_str!("../haproxy/testbed.cfg.in");
const QUOTED_TEMPLATE: &str = include_str!("../haproxy/quoted-checks.cfg.in");

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
    /// The in-process backend of `testbed.cfg.in`; None for other configs.
    backend: Option<Backend>,
    frontend: &'static str,
    watched: &'static str,
}

impl Bed {
    /// `haproxy/testbed.cfg.in` with a backend in this process.
    async fn start() -> Bed {
        let backend = Backend::start("127.0.0.1:0".parse().expect("addr")).await;
        let server = backend.addr.to_string();
        let mut bed = Bed::launch(TEMPLATE, &[("@SERVER@", server)], ("fe_test", "be_test"));
        bed.backend = Some(backend);
        bed.wait_answering().await;
        bed
    }

    /// `haproxy/quoted-checks.cfg.in` with its backends in a process of their own.
    async fn quoted(checks: &CheckBackends) -> Bed {
        let at = |name| format!("127.0.0.1:{}", checks.port(name));
        let values = [
            ("@OK@", at("ok")),
            ("@AGENT@", checks.port("agent").to_string()),
            ("@BUSY@", at("busy")),
            ("@QUOTED@", at("quoted")),
        ];
        let bed = Bed::launch(QUOTED_TEMPLATE, &values, ("fe_web", "be_web"));
        bed.wait_answering().await;
        bed
    }

    /// Starts HAProxy on `template` (its own placeholders plus `values`); `watched` is the
    /// frontend and backend [`Bed::config`] watches.
    fn launch(
        template: &str,
        values: &[(&str, String)],
        (frontend, watched): (&'static str, &'static str),
    ) -> Bed {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("admin.sock");
        let pidfile = dir.path().join("haproxy.pid");
        let mut cfg = template
            .replace("@STATS_SOCKET@", &socket.display().to_string())
            .replace("@PIDFILE@", &pidfile.display().to_string())
            .replace("@BIND@", &format!("127.0.0.1:{}", free_ports(1)[0]));
        for (placeholder, value) in values {
            cfg = cfg.replace(placeholder, value);
        }
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
        Bed {
            dir,
            socket,
            master,
            backend: None,
            frontend,
            watched,
        }
    }

    fn backend(&self) -> &Backend {
        self.backend
            .as_ref()
            .expect("a bed with an in-process backend")
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
            frontends: vec![self.frontend.into()],
            backends: vec![self.watched.into()],
            min_servers_up: 1,
            poll_interval_ms: 100,
            timeout_ms: 250,
            rise: 2,
            fall: 2,
        }
    }

    /// The pid of the worker answering the socket now, if any.
    async fn answering_pid(&self) -> Option<u32> {
        Session::open(&self.config()).await.0.info.map(|i| i.pid)
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

    /// Waits until the master catches SIGUSR2. HAProxy 2.6's master ignores it for a few
    /// milliseconds after its first worker already answers (measured: a reload signalled at
    /// once was lost 10 times in 10), so a reload signalled that early never happens.
    async fn wait_reloadable(&self) {
        let status = format!("/proc/{}/status", self.master.id());
        let usr2 = 1u64 << (Signal::SIGUSR2 as i32 - 1);
        let catches_usr2 = || {
            std::fs::read_to_string(&status)
                .ok()
                .and_then(|s| {
                    let mask = s.lines().find_map(|l| l.strip_prefix("SigCgt:"))?;
                    u64::from_str_radix(mask.trim(), 16).ok()
                })
                .is_some_and(|mask| mask & usr2 != 0)
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        while !catches_usr2() {
            assert!(
                Instant::now() < deadline,
                "HAProxy's master did not catch SIGUSR2 within 5 s; its log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// SIGUSR2 to the master once it catches it, then waits until a new worker answers.
    async fn reload(&self) -> u32 {
        let before = self.answering_pid().await;
        self.wait_reloadable().await;
        kill(self.master_pid(), Signal::SIGUSR2).expect("signal the master");
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(pid) = self.answering_pid().await.filter(|p| Some(*p) != before) {
                return pid;
            }
            assert!(
                Instant::now() < deadline,
                "no new worker within 5 s of a reload; HAProxy's log:\n{}",
                self.log()
            );
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
        if let Some(backend) = &self.backend {
            backend.stop();
        }
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

    let addr = bed.backend().addr;
    bed.backend().stop();
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
    bed.backend().stop();
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
        reason(Session::open(&cfg).await.0.verdict),
        "frontend fe_nope not found"
    );
    let mut cfg = bed.config();
    cfg.backends = vec!["be_nope".into()];
    assert_eq!(
        reason(Session::open(&cfg).await.0.verdict),
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
    let settled = |v: &Verdict| matches!(v, Verdict::Good | Verdict::Unsettled(_));

    let (_, session) = Session::open(&cfg).await;
    let session = tokio::sync::Mutex::new(session.expect("a session"));
    let (session_cpu, session_wall) = cost(rounds, || async {
        let probe = session.lock().await.check(&cfg).await.expect("check");
        assert!(settled(&probe.verdict));
    })
    .await;
    let (open_cpu, open_wall) = cost(rounds, || async {
        assert!(settled(&Session::open(&cfg).await.0.verdict));
    })
    .await;
    let answer = one_shot(&cfg.stats_socket, "show info;show stat");
    let (parse_cpu, _) = cost(rounds, || async {
        let snapshot = parse_answer(&answer).expect("parses");
        std::hint::black_box(judge(&snapshot, &cfg));
    })
    .await;
    eprintln!(
        "per check, client side: over the open session (`show info;show stat`, parse, judge): \
         {session_cpu:?} CPU, {session_wall:?} wall; on a new session (connect, prompt, check): \
         {open_cpu:?} CPU, {open_wall:?} wall; parse + judge alone of {} bytes: {parse_cpu:?} CPU",
        answer.len()
    );
    assert!(
        session_cpu < Duration::from_millis(1),
        "a check costs {session_cpu:?} CPU"
    );
}

/// One command on a connection of its own (HAProxy answers and closes), blocking.
fn one_shot(path: &Path, command: &str) -> Vec<u8> {
    use std::io::{Read, Write};
    let mut stream = std::os::unix::net::UnixStream::connect(path).expect("connect");
    stream
        .write_all(format!("{command}\n").as_bytes())
        .expect("send");
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).expect("read");
    answer
}

/// `bedtool.py check-backend`: HTTP check answers and an agent with odd texts, in a
/// process of its own (a test that starves this process of descriptors still has backends
/// that answer). Killed on drop.
struct CheckBackends {
    child: Child,
    ports: Vec<(String, u16)>,
}

/// The answers `haproxy/quoted-checks.cfg.in` expects (see there), as `check-backend`
/// specs. The fixture `src/health/fixtures/quoted_checks.txt` was captured with these.
const QUOTED_CHECKS: [&str; 4] = [
    "http:ok:200:OK, all good",
    "agent:agent:up #ready, \"warm\" and fine",
    "http:busy:503:Service Unavailable, retry later",
    "http:quoted:503:Down \"for maintenance\", sorry",
];

impl CheckBackends {
    fn start(specs: &[&str]) -> CheckBackends {
        use std::io::BufRead;
        let tool = Path::new(env!("CARGO_MANIFEST_DIR")).join("integration/netns/bedtool.py");
        let mut child = Command::new("python3")
            .arg(tool)
            .arg("check-backend")
            .args(specs)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start integration/netns/bedtool.py check-backend (needs python3)");
        let stdout = child.stdout.take().expect("piped stdout");
        let ports = std::io::BufReader::new(stdout)
            .lines()
            .take(specs.len())
            .map(|line| {
                let line = line.expect("read a port line");
                let (name, port) = line.split_once(' ').expect("`NAME PORT`");
                (name.to_owned(), port.parse().expect("a port"))
            })
            .collect::<Vec<_>>();
        assert_eq!(ports.len(), specs.len(), "check-backend did not start");
        CheckBackends { child, ports }
    }

    fn port(&self, name: &str) -> u16 {
        let found = self.ports.iter().find(|(n, _)| n == name);
        found
            .map(|(_, port)| *port)
            .expect("a listener of that name")
    }

    /// Stops (SIGSTOP) or resumes (SIGCONT) every listener: stopped, they accept connections
    /// (the kernel does) but never answer, so HAProxy's checks time out.
    fn pause(&self, paused: bool) {
        signal(
            self.child.id(),
            if paused {
                Signal::SIGSTOP
            } else {
                Signal::SIGCONT
            },
        );
    }
}

impl Drop for CheckBackends {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Until HAProxy has measured every server of `haproxy/quoted-checks.cfg.in` (s2 and o1
/// DOWN, s1 UP with its agent's text).
async fn wait_quoted_settled(bed: &Bed) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = one_shot(&bed.socket, "show stat");
        let text = String::from_utf8_lossy(&text);
        if text.contains("\"via agent : ")
            && text.contains(",\"Service Unavailable, retry later")
            && text.contains(",\"Down \"\"for maintenance\"\", sorry")
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "HAProxy did not settle within 10 s: {text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Pauses the check backends of `haproxy/quoted-checks.cfg.in` until the watched be_web is
/// DOWN — that, and nothing else, is the reason — then resumes them until healthy again.
async fn watched_backend_goes_down_and_back(
    checks: &CheckBackends,
    rx: &mut watch::Receiver<Health>,
) {
    checks.pause(true);
    let health = wait_for(rx, Duration::from_secs(10), "unhealthy", |h| !h.healthy).await;
    assert_eq!(
        health.reason.as_deref(),
        Some("backend be_web DOWN (servers up 0 < 1)")
    );
    checks.pause(false);
    wait_for(rx, Duration::from_secs(10), "healthy again", |h| h.healthy).await;
}

#[tokio::test]
async fn commas_and_quotes_in_check_texts_never_decide_the_verdict() {
    let checks = CheckBackends::start(&QUOTED_CHECKS);
    let bed = Bed::quoted(&checks).await;
    wait_quoted_settled(&bed).await;

    // Live HAProxy still writes what the fixture holds: same rows, same states (a check
    // under way when the stats were read has its status prefixed "* ", the last result kept).
    let fixture = include_bytes!("../src/health/fixtures/quoted_checks.txt");
    let live = one_shot(&bed.socket, "show info;show stat");
    let rows = |text: &[u8]| {
        let mut rows = parse_answer(text).expect("parses").rows;
        for row in &mut rows {
            if let Some(last) = row.check_status.strip_prefix("* ") {
                row.check_status = last.to_owned();
            }
        }
        rows
    };
    assert_eq!(rows(&live), rows(fixture));
    assert!(parse_answer(&live).expect("parses").odd.is_empty());

    // Watched: fe_web and be_web, which is UP (s1 UP, s2 DOWN): healthy, whatever the texts.
    let mut cfg = bed.config();
    let cancel = CancellationToken::new();
    let mut rx = spawn_haproxy_monitor(cfg.clone(), cancel.clone());
    wait_for(&mut rx, Duration::from_secs(5), "healthy", |h| h.healthy).await;
    let timeline = record(rx.clone());

    // be_other is DOWN: it fails the check only when watched, by name or by an empty list.
    cfg.backends = vec!["be_other".into()];
    let down = "backend be_other DOWN (servers up 0 < 1)";
    assert_eq!(reason(Session::open(&cfg).await.0.verdict), down);
    cfg.backends.clear();
    assert_eq!(reason(Session::open(&cfg).await.0.verdict), down);

    // The watched backend going DOWN is what makes the box unhealthy, and it recovers.
    watched_backend_goes_down_and_back(&checks, &mut rx).await;
    cancel.cancel();
    let reasons: Vec<_> = (timeline.lock().expect("timeline").iter())
        .filter_map(|(_, h)| h.reason.clone())
        .collect();
    assert!(
        reasons
            .iter()
            .all(|r| r.starts_with("backend be_web DOWN (servers up 0 < 1)")),
        "{reasons:?}"
    );
}

/// Set in the child process of [`fd_starvation_never_counts_as_haproxy_death`].
const FD_STARVED_CHILD: &str = "RAFTVIP_TEST_FD_STARVED_CHILD";

/// Lowers this process's soft RLIMIT_NOFILE so far that no new descriptor can be opened,
/// whatever is closed: a free slot below the limit cannot exist. Restores it on drop.
struct Starved {
    before: libc::rlimit,
}

impl Starved {
    fn now() -> Starved {
        // SAFETY: getrlimit/setrlimit only read and write the struct passed.
        let mut before: libc::rlimit = unsafe { std::mem::zeroed() };
        assert_eq!(
            unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut before) },
            0
        );
        // 0, 1 and 2 are open: the lowest descriptor any open() could return is 3.
        let starved = libc::rlimit {
            rlim_cur: 3,
            rlim_max: before.rlim_max,
        };
        // SAFETY: as above.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &starved) }, 0);
        let err = std::fs::File::open("/dev/null").expect_err("no descriptor left");
        assert_eq!(err.raw_os_error(), Some(libc::EMFILE), "{err}");
        Starved { before }
    }
}

impl Drop for Starved {
    fn drop(&mut self) {
        // SAFETY: as above.
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &self.before) };
    }
}

#[test]
fn fd_starvation_never_counts_as_haproxy_death() {
    // In a child process: it lowers its own RLIMIT_NOFILE, which would break any test
    // running beside it.
    let out = Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", "fd_starved_child", "--ignored", "--nocapture"])
        .args(["--test-threads", "1"])
        .env(FD_STARVED_CHILD, "1")
        .output()
        .expect("run the child");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    eprintln!("{stderr}");
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "the child failed: {}\n{stdout}",
        out.status
    );
}

#[tokio::test]
#[ignore = "run by fd_starvation_never_counts_as_haproxy_death, in a process of its own"]
async fn fd_starved_child() {
    if std::env::var_os(FD_STARVED_CHILD).is_none() {
        eprintln!(
            "fd_starved_child: nothing to do outside fd_starvation_never_counts_as_haproxy_death"
        );
        return;
    }
    let checks = CheckBackends::start(&QUOTED_CHECKS);
    let bed = Bed::quoted(&checks).await;
    wait_quoted_settled(&bed).await;
    let cfg = bed.config();
    let cancel = CancellationToken::new();
    let mut rx = spawn_haproxy_monitor(cfg.clone(), cancel.clone());
    wait_for(&mut rx, Duration::from_secs(5), "healthy", |h| h.healthy).await;
    let first_worker = bed.answering_pid().await.expect("a worker");
    let timeline = record(rx.clone());
    // Before the descriptors run out: it reads /proc.
    bed.wait_reloadable().await;

    let starved = Starved::now();
    // Checks go on over the open session: real verdicts, no descriptor needed.
    let checks_before = rx.borrow().checks;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let health = rx.borrow().clone();
    assert!(health.healthy && health.reason.is_none(), "{health:?}");
    assert!(
        health.checks >= checks_before + 5,
        "{} checks in 1 s while starved",
        health.checks - checks_before
    );
    watched_backend_goes_down_and_back(&checks, &mut rx).await;
    eprintln!(
        "starved: {} checks, verdicts followed HAProxy",
        rx.borrow().checks - checks_before
    );

    // A reload: the old worker reports Stopping, the session is dropped, and a new one cannot
    // be opened. That is not HAProxy's death: the healthy verdict is kept, saying why.
    let reloaded = Instant::now();
    kill(bed.master_pid(), Signal::SIGUSR2).expect("reload");
    let health = wait_for(&mut rx, Duration::from_secs(5), "held", |h| {
        h.reason.as_deref().is_some_and(|r| r.contains("EMFILE"))
    })
    .await;
    assert!(health.healthy, "{health:?}");
    let reason = health.reason.unwrap_or_default();
    assert!(
        reason.starts_with(&format!(
            "cannot check HAProxy on {} (connecting): raftvip is out of file descriptors",
            cfg.stats_socket.display()
        )) && reason.ends_with("keeping the last verdict (healthy) for up to 10 s"),
        "{reason}"
    );
    // Far longer than `fall` polls (200 ms): the first EMFILE, or many, flip nothing.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(rx.borrow().healthy, "{:?}", rx.borrow());

    // A monitor that starts starved has checked nothing: never healthy, and it says why.
    let second = CancellationToken::new();
    let mut fresh = spawn_haproxy_monitor(cfg.clone(), second.clone());
    let health = wait_for(&mut fresh, Duration::from_secs(2), "checked", |h| {
        h.checks > 0
    })
    .await;
    assert!(!health.healthy);
    assert!(
        health
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("EMFILE")),
        "{health:?}"
    );
    second.cancel();

    // Descriptors again: the next poll opens a session on the new worker.
    drop(starved);
    let health = wait_for(&mut rx, Duration::from_secs(5), "checked again", |h| {
        h.reason.is_none()
    })
    .await;
    assert!(health.healthy);
    eprintln!(
        "reload while starved: held for {:?}, never unhealthy",
        reloaded.elapsed()
    );
    let now_answering = bed.answering_pid().await.expect("a worker");
    assert_ne!(now_answering, first_worker, "a new worker after the reload");
    cancel.cancel();
    let events = timeline.lock().expect("timeline").clone();
    let unhealthy: Vec<_> = (events.iter())
        .filter(|(_, h)| !h.healthy)
        .map(|(_, h)| h.reason.clone())
        .collect();
    assert!(
        (unhealthy.iter().flatten())
            .all(|r| r.starts_with("backend be_web DOWN (servers up 0 < 1)")),
        "unhealthy for another reason: {unhealthy:?}"
    );
}
