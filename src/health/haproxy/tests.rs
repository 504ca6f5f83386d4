//! Parser and judgement tests against real HAProxy 2.6 answers (captured from the Debian
//! package with `show info;show stat`, see `fixtures/`), and client tests against a fake
//! stats socket that misbehaves on purpose.
//!
//! `quoted_checks.txt` was captured from `haproxy/quoted-checks.cfg.in` with the backends of
//! `integration/netns/bedtool.py check-backend` (the specs are in
//! `integration/haproxy_health.rs`), ~6 s after start; that integration test checks that live
//! HAProxy still answers the same way.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
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
/// Check texts with commas and quotes: fe_web OPEN; be_web UP with s1 UP (agent text
/// `via agent : up (ready, "warm" and fine)`) and s2 DOWN (`Service Unavailable, retry later
/// comment: expects 200, "OK"`); be_other DOWN, its o1 DOWN (`Down "for maintenance", sorry
/// ...`).
const QUOTED: &str = include_str!("../fixtures/quoted_checks.txt");

pub(super) fn config(
    path: &Path,
    frontends: &[&str],
    backends: &[&str],
    min: u32,
) -> HaproxyConfig {
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
    let snapshot = parse_answer(text.as_bytes()).expect("fixture parses");
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

fn summary(rows: &[StatRow]) -> Vec<(&str, &str, RowKind, &str, &str)> {
    rows.iter()
        .map(|r| {
            let (px, sv) = (r.pxname.as_str(), r.svname.as_str());
            (px, sv, r.kind, r.status.as_str(), r.check_status.as_str())
        })
        .collect()
}

#[test]
fn parses_a_real_answer() {
    let s = parse_answer(SETTLED.as_bytes()).unwrap();
    assert_eq!(
        s.info,
        Info {
            pid: 11113,
            uptime_sec: 1,
            stopping: false
        }
    );
    assert!(s.odd.is_empty());
    assert_eq!(
        summary(&s.rows),
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
fn quoted_check_texts_parse_as_haproxy_wrote_them() {
    let s = parse_answer(QUOTED.as_bytes()).unwrap();
    assert!(s.odd.is_empty(), "{:?}", s.odd);
    assert_eq!(
        summary(&s.rows),
        vec![
            ("fe_web", "FRONTEND", RowKind::Frontend, "OPEN", ""),
            ("be_web", "s1", RowKind::Server, "UP", "L7OK"),
            ("be_web", "s2", RowKind::Server, "DOWN", "L7STS"),
            ("be_web", "BACKEND", RowKind::Backend, "UP", ""),
            ("be_other", "o1", RowKind::Server, "DOWN", "L7STS"),
            ("be_other", "BACKEND", RowKind::Backend, "DOWN", ""),
        ]
    );
    // The texts really are there, quoted the way HAProxy quotes: the fixture tests something.
    for quoted in [
        r#""via agent : up (ready, ""warm"" and fine)""#,
        r#""Service Unavailable, retry later comment: expects 200, ""OK""""#,
        r#""Down ""for maintenance"", sorry comment: expects 200, ""OK""""#,
    ] {
        assert!(QUOTED.contains(quoted), "{quoted} not in the fixture");
    }
}

#[test]
fn quoted_check_texts_never_decide_the_verdict() {
    // The watched frontend and backend are fine: commas and quotes in any server's texts,
    // UP or DOWN, and a DOWN backend nobody watches change nothing.
    assert!(matches!(
        verdict(QUOTED, &["fe_web"], &["be_web"], 1),
        Verdict::Good
    ));
    assert_eq!(
        reason(verdict(QUOTED, &["fe_web"], &["be_web"], 2)),
        "backend be_web DOWN (servers up 1 < 2)"
    );
    // Unhealthy only because of a watched backend that is DOWN.
    assert_eq!(
        reason(verdict(QUOTED, &[], &["be_other"], 1)),
        "backend be_other DOWN (servers up 0 < 1)"
    );
    assert_eq!(
        reason(verdict(QUOTED, &[], &[], 1)),
        "backend be_other DOWN (servers up 0 < 1)"
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

/// Replaces line `line` (1-based, of the whole answer) of `text`.
fn with_line(text: &str, line: usize, f: impl FnOnce(&str) -> String) -> String {
    let mut lines: Vec<String> = text.split('\n').map(str::to_owned).collect();
    lines[line - 1] = f(&lines[line - 1]);
    lines.join("\n")
}

/// Line (1-based, of the whole answer) that starts with `prefix`.
fn line_of(text: &str, prefix: &str) -> usize {
    1 + text
        .split('\n')
        .position(|l| l.starts_with(prefix))
        .expect("line in the fixture")
}

/// The `show stat` line number (header = 1) of a line of the whole answer.
fn stat_line(text: &str, answer_line: usize) -> u64 {
    u64::try_from(answer_line + 1 - line_of(text, "# pxname,")).unwrap()
}

#[test]
fn garbage_is_a_clear_error() {
    let cases: Vec<(Vec<u8>, ParseError)> = vec![
        (Vec::new(), ParseError::Truncated),
        (
            SETTLED.as_bytes()[..SETTLED.len() / 2].to_vec(),
            ParseError::Truncated,
        ),
        (
            b"Unknown command. Please enter one of the following commands only:\n\n".to_vec(),
            ParseError::NoStatHeader(
                "Unknown command. Please enter one of the following commands only:\n\n".into(),
            ),
        ),
        (
            b"Permission denied\n\n# pxname,svname,status\n\n".to_vec(),
            ParseError::NotShowInfo("Permission denied\n\n".into()),
        ),
        (
            b"Name: HAProxy\nPid 7\n\n# pxname,svname,status\n\n".to_vec(),
            ParseError::InfoLine {
                line: 2,
                text: "Pid 7".into(),
            },
        ),
        (
            b"Name: HAProxy\nUptime_sec: 1\nStopping: 0\n\n# pxname,svname,status\n\n".to_vec(),
            ParseError::MissingInfoField("Pid"),
        ),
        (
            b"Name: HAProxy\nPid: x\n\n# pxname,svname,status\n\n".to_vec(),
            ParseError::InfoNumber {
                field: "Pid",
                value: "x".into(),
            },
        ),
        (
            b"Name: HAProxy\nPid: \xff\n\n# pxname,svname,status\n\n".to_vec(),
            ParseError::InfoNumber {
                field: "Pid",
                value: "\u{fffd}".into(),
            },
        ),
        (
            SETTLED.replace(",status,", ",statut,").into_bytes(),
            ParseError::MissingColumn("status"),
        ),
        (
            vec![0xff, 0xfe, b'\n', b'\n'],
            ParseError::NoStatHeader("\u{fffd}\u{fffd}\n\n".into()),
        ),
    ];
    for (text, want) in cases {
        assert_eq!(parse_answer(&text).unwrap_err(), want);
    }
}

#[test]
fn an_odd_row_fails_the_check_only_when_it_is_watched() {
    // be_other's server row loses a field: reported with its proxy, and skipped.
    let o1 = line_of(QUOTED, "be_other,o1,");
    let text = with_line(QUOTED, o1, |l| l.replacen(",,", ",", 1));
    let s = parse_answer(text.as_bytes()).unwrap();
    let field_count = ParseError::FieldCount {
        line: stat_line(QUOTED, o1),
        got: 128,
        want: 129,
    };
    assert_eq!(
        s.odd,
        vec![OddRow {
            pxname: "be_other".into(),
            svname: "o1".into(),
            problem: field_count.clone(),
        }]
    );
    assert_eq!(s.rows.len(), 5);
    // Not watched: the verdict is what the readable rows say.
    assert!(matches!(
        verdict(&text, &["fe_web"], &["be_web"], 1),
        Verdict::Good
    ));
    // Watched, by name or because an empty list watches all: the check fails, saying why.
    let why =
        format!("cannot read HAProxy's show stat row of watched proxy be_other: {field_count}");
    assert_eq!(reason(verdict(&text, &[], &["be_other"], 1)), why);
    assert_eq!(reason(verdict(&text, &["fe_web"], &[], 1)), why);

    // A FRONTEND row belongs to the frontend list, any other row to the backend list.
    let fe = line_of(QUOTED, "fe_web,FRONTEND,");
    let text = with_line(QUOTED, fe, |l| format!("{l}extra,"));
    assert!(matches!(
        verdict(&text, &["fe_web"], &["be_web"], 1),
        Verdict::Bad(Unhealthy::UnreadableRow { .. })
    ));
    assert!(matches!(
        verdict(&text, &["fe_other"], &["be_web"], 1),
        Verdict::Bad(Unhealthy::FrontendNotFound { .. })
    ));
    let renamed = text.replace("\nfe_web,FRONTEND,", "\nfe_x,FRONTEND,");
    assert!(matches!(
        verdict(&renamed, &["fe_web"], &["be_web"], 1),
        Verdict::Bad(Unhealthy::FrontendNotFound { .. })
    ));

    // An unknown type: odd as well, placed by its svname.
    let s2 = line_of(QUOTED, "be_web,s2,");
    let text = with_line(QUOTED, s2, |l| {
        let mut fields: Vec<&str> = l.split(',').collect();
        assert_eq!(fields[32], "2", "type column of a server");
        fields[32] = "9";
        fields.join(",")
    });
    let s = parse_answer(text.as_bytes()).unwrap();
    assert_eq!(
        s.odd.iter().map(|r| &r.problem).collect::<Vec<_>>(),
        vec![&ParseError::RowType {
            line: stat_line(QUOTED, s2),
            value: "9".into()
        }]
    );
    assert!(matches!(
        verdict(&text, &["fe_web"], &["be_other"], 1),
        Verdict::Bad(Unhealthy::BackendDown { .. })
    ));
    assert!(matches!(
        verdict(&text, &["fe_web"], &["be_web"], 1),
        Verdict::Bad(Unhealthy::UnreadableRow { .. })
    ));
}

/// `text` with the first `from` (a UTF-8 character) replaced by the raw byte `to`.
fn with_byte(text: &str, from: char, to: u8) -> Vec<u8> {
    let at = text.find(from).expect("character in the text");
    let mut bytes = text.as_bytes().to_vec();
    bytes.splice(at..at + from.len_utf8(), [to]);
    bytes
}

#[test]
fn bytes_that_are_not_utf8_matter_only_where_they_are_read() {
    // An agent that answers in Latin-1: its text is in last_agt, which nothing reads.
    let bytes = with_byte(&QUOTED.replace("warm", "w\u{e4}rm"), '\u{e4}', 0xe4);
    assert!(std::str::from_utf8(&bytes).is_err());
    let s = parse_answer(&bytes).unwrap();
    assert!(s.odd.is_empty());
    assert_eq!(s.rows.len(), 6);

    // In a field the verdict reads, the row is odd (and named as well as it can be).
    let bytes = with_byte(
        &QUOTED.replacen("be_other,o1,", "be_other,o\u{e4},", 1),
        '\u{e4}',
        0xe4,
    );
    let s = parse_answer(&bytes).unwrap();
    assert_eq!(s.odd.len(), 1);
    assert_eq!(s.odd[0].pxname, "be_other");
    assert_eq!(s.odd[0].svname, "o\u{fffd}");
    assert!(matches!(
        s.odd[0].problem,
        ParseError::NotUtf8 {
            column: "svname",
            ..
        }
    ));
}

#[test]
fn a_quoted_field_may_span_lines() {
    let text = "Name: HAProxy\nPid: 1\nUptime_sec: 9\nStopping: 0\n\n\
                # pxname,svname,status,type,last_chk,\n\
                be,a,UP,2,\"first line,\nsecond \"\"line\"\"\n\n> third\",\n\
                be,BACKEND,UP,1,,\n\n";
    let s = parse_answer(text.as_bytes()).unwrap();
    assert!(s.odd.is_empty(), "{:?}", s.odd);
    assert_eq!(
        summary(&s.rows),
        vec![
            ("be", "a", RowKind::Server, "UP", ""),
            ("be", "BACKEND", RowKind::Backend, "UP", "")
        ]
    );
}

#[test]
fn a_row_cut_short_is_an_error_at_any_byte() {
    // Every truncation point of a real answer fails cleanly: no panic, no half snapshot.
    for answer in [SETTLED, QUOTED] {
        let full = parse_answer(answer.as_bytes()).unwrap();
        for cut in 0..answer.len() {
            let prefix = &answer.as_bytes()[..cut];
            assert!(parse_answer(prefix).is_err(), "cut at {cut} parsed");
            // Cut, then closed with the terminating empty line: a cut inside a row makes
            // that row odd (field count, or an open quote that swallows the rest); whatever
            // is read is a row of the full answer.
            let closed = [prefix, b"\n\n"].concat();
            if let Ok(s) = parse_answer(&closed) {
                assert!(s.rows.iter().all(|r| full.rows.contains(r)), "cut at {cut}");
            }
        }
    }
}

#[test]
fn without_type_column_the_kind_comes_from_svname() {
    let text = b"Name: HAProxy\nPid: 1\nUptime_sec: 9\nStopping: 0\n\n# pxname,svname,status\nfe,FRONTEND,OPEN\nbe,a,UP\nbe,BACKEND,UP\n\n";
    let s = parse_answer(text).unwrap();
    let kinds: Vec<_> = s.rows.iter().map(|r| r.kind).collect();
    assert_eq!(
        kinds,
        vec![RowKind::Frontend, RowKind::Server, RowKind::Backend]
    );
}

/// A one-shot answer to [`CHECK_COMMAND`] as HAProxy writes it in prompt mode: the output
/// of each of its two commands ends with the prompt instead of an empty line.
pub(super) fn prompt_form(answer: &[u8]) -> Vec<u8> {
    let split = stat_start(answer).unwrap_or(answer.len());
    let mut out = Vec::new();
    for part in [&answer[..split], &answer[split..]] {
        out.extend_from_slice(part.strip_suffix(b"\n").unwrap_or(part));
        out.extend_from_slice(PROMPT);
    }
    out
}

#[test]
fn prompt_mode_framing_waits_for_the_real_prompt() {
    // Two prompts (`prompt`, `set timeout cli`), then the two outputs, each with its prompt.
    let answer = QUOTED.as_bytes();
    let mut session = b"\n> \n> ".to_vec();
    session.extend_from_slice(&prompt_form(answer));
    let frame = framed(&session, SESSION_OPEN_PROMPTS).expect("complete");
    assert_eq!(one_shot(&session, frame), answer);
    for cut in 0..session.len() {
        assert!(
            framed(&session[..cut], SESSION_OPEN_PROMPTS).is_none(),
            "cut at {cut}"
        );
    }
    // A prompt inside a quoted field is text, not the end.
    let open_quote = b"Name: HAProxy\nPid: 1\n\n> # pxname,svname,status,last_chk\nbe,a,UP,\"x\n> ";
    assert_eq!(framed(open_quote, 0), None);
    // Errors end at their prompts like answers.
    assert_eq!(framed(b"Unknown command.\n> ", 0), None);
    assert!(framed(b"Unknown command.\n> \n> ", 0).is_some());
    assert_eq!(framed(b"\n> \n> ", SESSION_OPEN_PROMPTS), None);
    let denied = b"\n> \n> Permission denied.\n\n> Permission denied.\n\n> ";
    let frame = framed(denied, SESSION_OPEN_PROMPTS).expect("complete");
    assert_eq!(
        one_shot(denied, frame),
        b"Permission denied.\n\nPermission denied.\n\n"
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
    // Running out of something locally is its own reason: not hard, not HAProxy's doing.
    for errno in [libc::EMFILE, libc::ENFILE, libc::ENOMEM, libc::ENOBUFS] {
        let why = connect_error(p, std::io::Error::from_raw_os_error(errno));
        assert!(why.is_local() && !why.is_hard(), "{errno}: {why}");
    }
}

/// How the fake stats socket answers one command.
#[derive(Clone)]
enum Reply {
    /// This one-shot answer (ending with an empty line), sent as HAProxy sends it in the
    /// current mode (see [`prompt_form`]).
    Answer(Vec<u8>),
    /// Write these bytes as they are and close.
    Raw(Vec<u8>),
    /// Close without a word.
    Close,
    /// Say nothing and keep the connection open.
    Hang,
}

fn answer(text: &str) -> Reply {
    Reply::Answer(text.as_bytes().to_vec())
}

/// A fake stats socket in a tempdir that reads commands line by line like HAProxy's CLI:
/// `prompt` switches to prompt mode, `set timeout cli` is accepted, anything else is answered
/// by the test's function. `kill` closes every connection and the listener (the file stays,
/// as when HAProxy dies), so the next connect is refused.
struct Fake {
    _dir: tempfile::TempDir,
    path: PathBuf,
    stop: CancellationToken,
    /// Connections accepted so far.
    connections: Arc<AtomicUsize>,
}

type Answerer = dyn Fn(&str) -> Reply + Send + Sync;

impl Fake {
    async fn start(answer: impl Fn(&str) -> Reply + Send + Sync + 'static) -> Fake {
        Self::start_with(answer, true).await
    }

    /// `hold_sessions: false` closes each prompt-mode connection after its first answer.
    async fn start_with(
        answer: impl Fn(&str) -> Reply + Send + Sync + 'static,
        hold_sessions: bool,
    ) -> Fake {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let stop = CancellationToken::new();
        let answer: Arc<Answerer> = Arc::new(answer);
        let token = stop.clone();
        let connections = Arc::new(AtomicUsize::new(0));
        let counter = connections.clone();
        tokio::spawn(async move {
            loop {
                let (conn, _) = tokio::select! {
                    () = token.cancelled() => return,
                    accepted = listener.accept() => match accepted {
                        Ok(c) => c,
                        Err(_) => return,
                    },
                };
                counter.fetch_add(1, Ordering::Relaxed);
                let (answer, token) = (answer.clone(), token.clone());
                tokio::spawn(async move {
                    tokio::select! {
                        () = token.cancelled() => {}
                        () = serve(conn, &*answer, hold_sessions) => {}
                    }
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

/// One CLI connection of the fake; returns when the connection is to be closed.
async fn serve(conn: tokio::net::UnixStream, answer: &Answerer, hold: bool) {
    let (read, mut write) = conn.into_split();
    let mut lines = BufReader::new(read).lines();
    let mut prompt = false;
    while let Ok(Some(line)) = lines.next_line().await {
        let opening = line == "prompt" || line.starts_with("set timeout cli");
        prompt |= line == "prompt";
        let reply = if opening {
            Reply::Answer(Vec::new())
        } else {
            answer(&line)
        };
        match reply {
            Reply::Answer(bytes) => {
                let bytes = match (prompt, opening) {
                    (false, _) => bytes,
                    (true, true) => PROMPT.to_vec(),
                    (true, false) => prompt_form(&bytes),
                };
                if write.write_all(&bytes).await.is_err() {
                    return;
                }
            }
            Reply::Raw(bytes) => {
                let _ = write.write_all(&bytes).await;
                return;
            }
            Reply::Close => return,
            Reply::Hang => std::future::pending().await,
        }
        if !prompt || (!hold && !opening) {
            return;
        }
    }
}

async fn check_against(reply: Reply) -> Verdict {
    let fake = Fake::start(move |_| reply.clone()).await;
    Session::open(&config(&fake.path, &[], &[], 1))
        .await
        .0
        .verdict
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
        check_against(answer(SETTLED)).await,
        Verdict::Good
    ));
    assert!(matches!(
        check_against(answer(QUOTED)).await,
        Verdict::Bad(Unhealthy::BackendDown { .. })
    ));
    let garbage = bad(check_against(Reply::Answer(b"\x07\x00hello\n\n".to_vec())).await);
    assert_eq!(
        garbage.to_string(),
        "unparsable output from HAProxy: no `show stat` header (`# pxname,...`) in the answer, which starts with \"\\u{7}\\0hello\\n\\n\\n\""
    );
    assert!(matches!(
        bad(check_against(answer(&SETTLED[..SETTLED.len() - 100])).await),
        Unhealthy::Unparsable(ParseError::Truncated)
    ));
    let half = bad(check_against(Reply::Raw(SETTLED.as_bytes()[..1000].to_vec())).await);
    assert!(matches!(half, Unhealthy::Closed { .. }) && half.is_hard());
    let closed = bad(check_against(Reply::Close).await);
    assert!(matches!(closed, Unhealthy::Closed { .. }) && closed.is_hard());
}

#[tokio::test]
async fn an_endless_answer_is_cut_off() {
    let huge = vec![b'x'; MAX_ANSWER_BYTES + READ_CHUNK * 2];
    assert!(matches!(
        bad(check_against(Reply::Raw(huge)).await),
        Unhealthy::Unparsable(ParseError::TooLarge)
    ));
}

#[tokio::test]
async fn a_silent_haproxy_times_out() {
    let fake = Fake::start(|_| Reply::Hang).await;
    let started = std::time::Instant::now();
    let (probe, _) = Session::open(&config(&fake.path, &[], &[], 1)).await;
    let why = bad(probe.verdict);
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
    let why = bad(Session::open(&config(&missing, &[], &[], 1))
        .await
        .0
        .verdict);
    assert!(matches!(why, Unhealthy::SocketMissing { .. }) && why.is_hard());

    // A socket file nobody listens on: what a dead HAProxy leaves behind.
    let stale = dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    let why = bad(Session::open(&config(&stale, &[], &[], 1)).await.0.verdict);
    assert!(matches!(why, Unhealthy::Refused { .. }) && why.is_hard());
}

#[tokio::test]
async fn checks_run_over_one_session_that_sees_the_close() {
    let fake = Fake::start(|_| answer(SETTLED)).await;
    let cfg = config(&fake.path, &[], &[], 1);
    let (probe, session) = Session::open(&cfg).await;
    assert!(matches!(probe.verdict, Verdict::Good));
    let mut session = session.expect("a session on a worker that is not stopping");
    assert_eq!(session.pid(), 11113);
    for _ in 0..5 {
        let probe = session.check(&cfg).await.expect("the session answers");
        assert!(matches!(probe.verdict, Verdict::Good));
        assert_eq!(probe.info.map(|i| i.pid), Some(11113));
    }
    assert_eq!(
        fake.connections.load(Ordering::Relaxed),
        1,
        "one connection for six checks"
    );
    fake.kill();
    tokio::time::timeout(Duration::from_secs(2), session.closed())
        .await
        .expect("session sees the close");
    assert!(session.check(&cfg).await.is_err());
}

#[tokio::test]
async fn a_stopping_worker_is_not_held() {
    let stopping = SETTLED.replace("Stopping: 0", "Stopping: 1");
    let fake = Fake::start(move |_| answer(&stopping)).await;
    let (probe, session) = Session::open(&config(&fake.path, &[], &[], 1)).await;
    assert!(matches!(
        probe.verdict,
        Verdict::Bad(Unhealthy::Stopping { pid: 11113 })
    ));
    assert!(session.is_none());
}

#[tokio::test]
async fn monitor_rises_then_falls_at_once_when_the_socket_dies() {
    let fake = Fake::start(|_| answer(SETTLED)).await;
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
async fn the_monitor_checks_over_one_connection() {
    let fake = Fake::start(|_| answer(SETTLED)).await;
    let mut cfg = config(&fake.path, &[], &[], 1);
    cfg.poll_interval_ms = 10;
    let cancel = CancellationToken::new();
    let rx = spawn_haproxy_monitor(cfg, cancel.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;
    cancel.cancel();
    let checks = rx.borrow().checks;
    assert!(checks >= 10, "{checks} checks");
    assert_eq!(
        fake.connections.load(Ordering::Relaxed),
        1,
        "{checks} checks"
    );
    assert!(rx.borrow().healthy);
}

#[tokio::test]
async fn a_session_that_never_stays_open_does_not_spin_the_monitor() {
    let fake = Fake::start_with(|_| answer(SETTLED), false).await;
    let mut cfg = config(&fake.path, &[], &[], 1);
    cfg.poll_interval_ms = 100;
    let cancel = CancellationToken::new();
    let rx = spawn_haproxy_monitor(cfg, cancel.clone());
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    cancel.cancel();
    // Per poll: one session, closed by the fake, then one immediate check on a session that
    // is not kept. About 20 in a second; a spinning monitor would make thousands.
    let connections = fake.connections.load(Ordering::Relaxed);
    assert!(connections <= 40, "{connections} connections in 1 s");
    assert!(rx.borrow().healthy, "closed sessions are no failure");
}

#[tokio::test]
async fn a_reloaded_socket_path_is_checked_from_then_on_and_the_verdict_kept() {
    let (old, new) = (
        Fake::start(|_| answer(SETTLED)).await,
        Fake::start(|_| answer(SETTLED)).await,
    );
    let mut cfg = config(&old.path, &[], &[], 1);
    cfg.poll_interval_ms = 20;
    let (settings, receiver) = tokio::sync::watch::channel(cfg);
    let cancel = CancellationToken::new();
    let mut rx = crate::health::spawn_reloadable_haproxy_monitor(receiver, cancel.clone());
    tokio::time::timeout(Duration::from_secs(2), rx.wait_for(|h| h.healthy))
        .await
        .expect("healthy in time")
        .unwrap();
    settings.send_replace(config(&new.path, &[], &[], 1));
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The old HAProxy going away no longer matters: the monitor watches the new socket.
    old.kill();
    tokio::time::sleep(Duration::from_millis(300)).await;
    cancel.cancel();
    assert!(new.connections.load(Ordering::Relaxed) >= 1);
    let health = rx.borrow().clone();
    assert!(health.healthy, "{health:?}");
    assert_eq!(health.transitions, 1, "the reload kept the verdict");
}
