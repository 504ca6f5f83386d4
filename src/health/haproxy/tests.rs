//! Parser and judgement tests against real HAProxy 2.6 answers (captured from the Debian
//! package with `show info;show stat`, see `fixtures/`), and client tests against a fake
//! stats socket that misbehaves on purpose.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixListener;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::health::{spawn_haproxy_monitor, Unhealthy, Verdict};

/// fe_web OPEN; be_web: s1 UP (L7OK), s2 DOWN (L4CON), s3 `no check`; be_empty: no servers.
const SETTLED: &str = include_str!("../fixtures/settled.txt");
/// Captured ~10 ms after a reload: `Uptime_sec: 0`, s2 (dead) shows `UP 1/2` with check `INI`.
const RELOAD: &str = include_str!("../fixtures/reload_unsettled.txt");
/// After `disable frontend fe_web` and stopping s1's server: fe_web PAUSED, s1 and s2 DOWN.
const DOWN: &str = include_str!("../fixtures/frontend_stopped_backend_down.txt");

fn config(path: &Path, frontends: &[&str], backends: &[&str], min: u32) -> HaproxyConfig {
    HaproxyConfig {
        stats_socket: path.to_path_buf(),
        frontends: frontends.iter().map(|s| s.to_string()).collect(),
        backends: backends.iter().map(|s| s.to_string()).collect(),
        min_servers_up: min,
        poll_interval_ms: 100,
        timeout_ms: 200,
        rise: 2,
        fall: 2,
    }
}

fn verdict(text: &str, frontends: &[&str], backends: &[&str], min: u32) -> Verdict {
    let snapshot = parse_answer(text).expect("fixture parses");
    judge(
        &snapshot,
        &config(Path::new("/x"), frontends, backends, min),
    )
}

fn reason(v: Verdict) -> String {
    match v {
        Verdict::Bad(why) => why.to_string(),
        other => panic!("expected a failure, got {other:?}"),
    }
}

#[test]
fn parses_a_real_answer() {
    let s = parse_answer(SETTLED).unwrap();
    assert_eq!(
        s.info,
        Info {
            pid: 11113,
            uptime_sec: 1,
            stopping: false
        }
    );
    let rows: Vec<_> = s
        .rows
        .iter()
        .map(|r| (r.pxname, r.svname, r.kind, r.status, r.check_status))
        .collect();
    assert_eq!(
        rows,
        vec![
            ("fe_web", "FRONTEND", RowKind::Frontend, "OPEN", ""),
            ("be_web", "s1", RowKind::Server, "UP", "L7OK"),
            ("be_web", "s2", RowKind::Server, "DOWN", "L4CON"),
            ("be_web", "s3", RowKind::Server, "no check", ""),
            ("be_web", "BACKEND", RowKind::Backend, "UP", ""),
            ("be_empty", "BACKEND", RowKind::Backend, "UP", ""),
        ]
    );
}

#[test]
fn healthy_real_answer_is_good() {
    assert!(matches!(verdict(SETTLED, &[], &[], 1), Verdict::Good));
    assert!(matches!(
        verdict(SETTLED, &["fe_web"], &["be_web"], 2),
        Verdict::Good
    ));
}

#[test]
fn too_few_servers_is_backend_down() {
    assert_eq!(
        reason(verdict(SETTLED, &[], &[], 3)),
        "backend be_web DOWN (servers up 2 < 3)"
    );
    // A serverless backend is skipped when judging "all", but judged when named.
    assert_eq!(
        reason(verdict(SETTLED, &[], &["be_empty"], 1)),
        "backend be_empty DOWN (servers up 0 < 1)"
    );
    let down_status = SETTLED.replace("0,0,0,UP,2,2,0,", "0,0,0,DOWN,2,2,0,");
    assert_eq!(
        reason(verdict(&down_status, &[], &[], 1)),
        "backend be_web not UP (DOWN)"
    );
}

#[test]
fn unknown_names_are_not_found() {
    assert_eq!(
        reason(verdict(SETTLED, &["fe_nope"], &[], 1)),
        "frontend fe_nope not found"
    );
    assert_eq!(
        reason(verdict(SETTLED, &[], &["be_nope"], 1)),
        "backend be_nope not found"
    );
    // A backend is not a frontend and vice versa.
    assert_eq!(
        reason(verdict(SETTLED, &["be_web"], &[], 1)),
        "frontend be_web not found"
    );
    assert_eq!(
        reason(verdict(SETTLED, &[], &["fe_web"], 1)),
        "backend fe_web not found"
    );
}

#[test]
fn paused_frontend_and_dead_servers() {
    assert_eq!(
        reason(verdict(DOWN, &[], &[], 1)),
        "frontend fe_web not OPEN (PAUSED)"
    );
    let open = DOWN.replace(",PAUSED,", ",OPEN,");
    assert!(matches!(verdict(&open, &[], &[], 1), Verdict::Good));
    assert_eq!(
        reason(verdict(&open, &[], &["be_web"], 2)),
        "backend be_web DOWN (servers up 1 < 2)"
    );
}

#[test]
fn stopping_fails_first() {
    let stopping = SETTLED.replace("Stopping: 0", "Stopping: 1");
    assert_eq!(
        reason(verdict(&stopping, &[], &[], 1)),
        "HAProxy (pid 11113) is stopping"
    );
}

#[test]
fn unchecked_servers_after_a_reload_decide_nothing() {
    // s1 (checked) and s3 (no check) are up: enough for min 2 without the unchecked s2.
    assert!(matches!(verdict(RELOAD, &[], &[], 2), Verdict::Good));
    // Only the unchecked s2 could make up min 3: neither good nor bad.
    match verdict(RELOAD, &[], &[], 3) {
        Verdict::Unsettled(why) => assert!(why.contains("be_web"), "{why}"),
        other => panic!("expected unsettled, got {other:?}"),
    }
    // Even unchecked servers cannot reach 4 of 3.
    assert_eq!(
        reason(verdict(RELOAD, &[], &[], 4)),
        "backend be_web DOWN (servers up 2 < 4)"
    );
    // Once settled, HAProxy's word is taken: `UP 1/2` is up.
    let old = RELOAD.replace("Uptime_sec: 0", "Uptime_sec: 10");
    assert!(matches!(verdict(&old, &[], &[], 3), Verdict::Good));
    // Stopping still counts at once while unsettled.
    let stopping = RELOAD.replace("Stopping: 0", "Stopping: 1");
    assert!(matches!(
        verdict(&stopping, &[], &[], 3),
        Verdict::Bad(Unhealthy::Stopping { .. })
    ));
}

#[test]
fn garbage_is_a_clear_error() {
    let cases: Vec<(String, ParseError)> = vec![
        (String::new(), ParseError::Truncated),
        (
            SETTLED[..SETTLED.len() / 2].to_owned(),
            ParseError::Truncated,
        ),
        (
            "Unknown command. Please enter one of the following commands only:\n\n".into(),
            ParseError::NoStatHeader(
                "Unknown command. Please enter one of the following commands only:\n\n".into(),
            ),
        ),
        (
            "Permission denied\n\n# pxname,svname,status\n\n".into(),
            ParseError::NotShowInfo("Permission denied\n\n".into()),
        ),
        (
            "Name: HAProxy\nPid 7\n\n# pxname,svname,status\n\n".into(),
            ParseError::InfoLine {
                line: 2,
                text: "Pid 7".into(),
            },
        ),
        (
            "Name: HAProxy\nUptime_sec: 1\nStopping: 0\n\n# pxname,svname,status\n\n".into(),
            ParseError::MissingInfoField("Pid"),
        ),
        (
            "Name: HAProxy\nPid: x\n\n# pxname,svname,status\n\n".into(),
            ParseError::InfoNumber {
                field: "Pid",
                value: "x".into(),
            },
        ),
        (
            SETTLED.replace(",status,", ",statut,"),
            ParseError::MissingColumn("status"),
        ),
        (
            SETTLED.replace("be_empty,BACKEND,0,", "be_empty,BACKEND,"),
            ParseError::FieldCount {
                line: 7,
                got: 128,
                want: 129,
            },
        ),
    ];
    for (text, want) in cases {
        assert_eq!(parse_answer(&text).unwrap_err(), want);
    }
    let bad_type = "Name: HAProxy\nPid: 1\nUptime_sec: 1\nStopping: 0\n\n# pxname,svname,status,type,\nfe,FRONTEND,OPEN,9,\n\n";
    assert_eq!(
        parse_answer(bad_type).unwrap_err(),
        ParseError::RowType {
            line: 2,
            value: "9".into()
        }
    );
}

#[test]
fn a_row_cut_short_is_an_error_at_any_byte() {
    // Every truncation point of a real answer either parses to the same snapshot (only when
    // nothing but trailing newlines is missing) or fails cleanly: no panic, no half snapshot.
    let full = parse_answer(SETTLED).unwrap();
    for cut in 0..SETTLED.len() {
        let Some(prefix) = SETTLED.get(..cut) else {
            continue;
        };
        assert!(parse_answer(prefix).is_err(), "cut at {cut} parsed");
        // Cut, then closed with the terminating empty line: still never a panic, and a cut
        // inside a row is caught by the field count.
        let closed = format!("{prefix}\n\n");
        if let Ok(s) = parse_answer(&closed) {
            assert!(s.rows.len() <= full.rows.len());
            assert!(s.rows.iter().all(|r| full.rows.contains(r)), "cut at {cut}");
        }
    }
}

#[test]
fn without_type_column_the_kind_comes_from_svname() {
    let text = "Name: HAProxy\nPid: 1\nUptime_sec: 9\nStopping: 0\n\n# pxname,svname,status\nfe,FRONTEND,OPEN\nbe,a,UP\nbe,BACKEND,UP\n\n";
    let s = parse_answer(text).unwrap();
    let kinds: Vec<_> = s.rows.iter().map(|r| r.kind).collect();
    assert_eq!(
        kinds,
        vec![RowKind::Frontend, RowKind::Server, RowKind::Backend]
    );
}

#[test]
fn connect_errors_map_to_their_reasons() {
    let p = Path::new("/run/haproxy/admin.sock");
    let kind = |k| connect_error(p, std::io::Error::from(k));
    assert!(matches!(
        kind(std::io::ErrorKind::NotFound),
        Unhealthy::SocketMissing { .. }
    ));
    assert!(matches!(
        kind(std::io::ErrorKind::ConnectionRefused),
        Unhealthy::Refused { .. }
    ));
    assert!(matches!(
        kind(std::io::ErrorKind::PermissionDenied),
        Unhealthy::PermissionDenied { .. }
    ));
    assert!(matches!(
        kind(std::io::ErrorKind::Other),
        Unhealthy::Io {
            stage: crate::health::Stage::Connect,
            ..
        }
    ));
}

/// How the fake stats socket treats one connection.
#[derive(Clone)]
enum Reply {
    /// Write these bytes and close.
    Bytes(Vec<u8>),
    /// Close without a word.
    Close,
    /// Read the command, then say nothing and keep the connection open.
    Hang,
}

/// A fake stats socket in a tempdir. `kill` closes every connection and the listener (the
/// file stays, as when HAProxy dies), so the next connect is refused.
struct Fake {
    _dir: tempfile::TempDir,
    path: PathBuf,
    stop: CancellationToken,
    /// Connections accepted so far.
    connections: Arc<AtomicUsize>,
}

impl Fake {
    /// `answer` decides per request; requests starting with `prompt` get the session
    /// treatment (`prompt` mode answers, then the connection stays open).
    async fn start(answer: impl Fn(&str) -> Reply + Send + Sync + 'static) -> Fake {
        Self::start_with(answer, true).await
    }

    /// `hold_sessions: false` closes each watch session right after its opening answer.
    async fn start_with(
        answer: impl Fn(&str) -> Reply + Send + Sync + 'static,
        hold_sessions: bool,
    ) -> Fake {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let stop = CancellationToken::new();
        let answer = Arc::new(answer);
        let token = stop.clone();
        let connections = Arc::new(AtomicUsize::new(0));
        let counter = connections.clone();
        tokio::spawn(async move {
            loop {
                let (mut conn, _) = tokio::select! {
                    () = token.cancelled() => return,
                    accepted = listener.accept() => match accepted {
                        Ok(c) => c,
                        Err(_) => return,
                    },
                };
                counter.fetch_add(1, Ordering::Relaxed);
                let answer = answer.clone();
                let token = token.clone();
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !request.ends_with(b"\n") {
                        match conn.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buf[..n]),
                        }
                    }
                    let request = String::from_utf8_lossy(&request).into_owned();
                    let reply = if request.starts_with("prompt") {
                        Reply::Bytes(session_answer(SETTLED))
                    } else {
                        answer(&request)
                    };
                    match reply {
                        Reply::Close => return,
                        Reply::Bytes(b) => {
                            let _ = conn.write_all(&b).await;
                            if !request.starts_with("prompt") || !hold_sessions {
                                return;
                            }
                        }
                        Reply::Hang => {}
                    }
                    token.cancelled().await;
                });
            }
        });
        Fake {
            _dir: dir,
            path,
            stop,
            connections,
        }
    }

    fn kill(&self) {
        self.stop.cancel();
    }
}

/// What HAProxy sends for the session's opening commands: two prompts, then `show info`.
fn session_answer(answer: &str) -> Vec<u8> {
    let info = answer.split("\n# ").next().unwrap_or_default();
    format!("\n> \n> {info}\n> ").into_bytes()
}

async fn check_against(reply: Reply) -> Verdict {
    let fake = Fake::start(move |_| reply.clone()).await;
    check(&config(&fake.path, &[], &[], 1)).await.verdict
}

fn bad(v: Verdict) -> Unhealthy {
    match v {
        Verdict::Bad(why) => why,
        other => panic!("expected a failure, got {other:?}"),
    }
}

#[tokio::test]
async fn fake_socket_answers_are_judged() {
    assert!(matches!(
        check_against(Reply::Bytes(SETTLED.into())).await,
        Verdict::Good
    ));
    let garbage = bad(check_against(Reply::Bytes(b"\x07\x00hello\n\n".to_vec())).await);
    assert_eq!(
        garbage.to_string(),
        "unparsable output from HAProxy: no `show stat` header (`# pxname,...`) in the answer, which starts with \"\\u{7}\\0hello\\n\\n\""
    );
    let half = SETTLED.as_bytes()[..1000].to_vec();
    assert!(matches!(
        bad(check_against(Reply::Bytes(half)).await),
        Unhealthy::Unparsable(ParseError::Truncated)
    ));
    assert!(matches!(
        bad(check_against(Reply::Bytes(vec![0xff, 0xfe, b'\n', b'\n'])).await),
        Unhealthy::Unparsable(ParseError::NotUtf8)
    ));
    let closed = bad(check_against(Reply::Close).await);
    assert!(matches!(closed, Unhealthy::Closed { .. }) && closed.is_hard());
}

#[tokio::test]
async fn an_endless_answer_is_cut_off() {
    let huge = vec![b'x'; MAX_ANSWER_BYTES + READ_CHUNK * 2];
    assert!(matches!(
        bad(check_against(Reply::Bytes(huge)).await),
        Unhealthy::Unparsable(ParseError::TooLarge)
    ));
}

#[tokio::test]
async fn a_silent_haproxy_times_out() {
    let fake = Fake::start(|_| Reply::Hang).await;
    let started = std::time::Instant::now();
    let why = bad(check(&config(&fake.path, &[], &[], 1)).await.verdict);
    assert!(matches!(
        why,
        Unhealthy::Timeout {
            stage: crate::health::Stage::Read,
            after_ms: 200,
            ..
        }
    ));
    assert!(!why.is_hard());
    assert!(started.elapsed() >= Duration::from_millis(200));
}

#[tokio::test]
async fn missing_and_refusing_sockets() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.sock");
    let why = bad(check(&config(&missing, &[], &[], 1)).await.verdict);
    assert!(matches!(why, Unhealthy::SocketMissing { .. }) && why.is_hard());

    // A socket file nobody listens on: what a dead HAProxy leaves behind.
    let stale = dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    let why = bad(check(&config(&stale, &[], &[], 1)).await.verdict);
    assert!(matches!(why, Unhealthy::Refused { .. }) && why.is_hard());
}

#[tokio::test]
async fn session_learns_the_pid_and_sees_the_close() {
    let fake = Fake::start(|_| Reply::Hang).await;
    let mut session = Session::open(&fake.path, Duration::from_millis(500))
        .await
        .unwrap();
    assert_eq!(session.pid(), 11113);
    fake.kill();
    tokio::time::timeout(Duration::from_secs(2), session.closed())
        .await
        .expect("session sees the close");
}

#[tokio::test]
async fn monitor_rises_then_falls_at_once_when_the_socket_dies() {
    let fake = Fake::start(|_| Reply::Bytes(SETTLED.into())).await;
    let mut cfg = config(&fake.path, &[], &[], 1);
    // A poll far slower than the test: only the session can make it fast.
    cfg.poll_interval_ms = 10_000;
    cfg.rise = 1;
    cfg.fall = 5;
    let cancel = CancellationToken::new();
    let mut rx = spawn_haproxy_monitor(cfg, cancel.clone());
    tokio::time::timeout(Duration::from_secs(2), rx.wait_for(|h| h.healthy))
        .await
        .expect("healthy in time")
        .unwrap();
    // Let the monitor open its watch session before the kill.
    tokio::time::sleep(Duration::from_millis(50)).await;

    let killed = std::time::Instant::now();
    fake.kill();
    let health = tokio::time::timeout(Duration::from_secs(2), rx.wait_for(|h| !h.healthy))
        .await
        .expect("unhealthy long before the next poll")
        .unwrap()
        .clone();
    assert!(killed.elapsed() < Duration::from_millis(1_000));
    assert_eq!(
        health.reason.as_deref(),
        Some(
            format!(
                "connection refused on {}: HAProxy is down",
                fake.path.display()
            )
            .as_str()
        )
    );
    assert_eq!(health.transitions, 2);
    cancel.cancel();
}

#[tokio::test]
async fn a_session_that_never_stays_open_does_not_spin_the_monitor() {
    let fake = Fake::start_with(|_| Reply::Bytes(SETTLED.into()), false).await;
    let mut cfg = config(&fake.path, &[], &[], 1);
    cfg.poll_interval_ms = 100;
    let cancel = CancellationToken::new();
    let rx = spawn_haproxy_monitor(cfg, cancel.clone());
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    cancel.cancel();
    // Per poll: one check, one session; a closed session adds one immediate check. About 30
    // in a second; a spinning monitor would make thousands.
    let connections = fake.connections.load(Ordering::Relaxed);
    assert!(connections <= 40, "{connections} connections in 1 s");
    assert!(rx.borrow().healthy, "closed sessions are no failure");
}
