//! HAProxy's stats socket: the client (tokio `UnixStream`), pure parsers for `show info` and
//! `show stat`, and the pure judgement of one snapshot.
//!
//! Why the stats socket: it is what HAProxy itself knows — whether it is up, whether it is
//! stopping, which frontends listen and which servers its own health checks see — and it
//! costs one local connection. One check is one connection carrying `show info;show stat`
//! (HAProxy answers both and closes). Measured against HAProxy 2.6 with a small config (release
//! build, `integration/haproxy_health.rs`): ~80 µs CPU and ~220 µs wall per check, of which
//! ~17 µs parse and judge; two separate connections cost ~120 µs CPU and ~435 µs wall before
//! any parsing. Chaining also means both answers describe the same process, so `Pid` and
//! `Uptime_sec` always belong to the states they are judged with.
//!
//! The [`Session`] is the other half: an interactive (`prompt`) connection that stays open and
//! idle. HAProxy closes it the moment its worker dies, which the monitor turns into an
//! immediate re-check — death is seen in milliseconds instead of `fall` polls.
//!
//! Parsing never panics: garbage, truncation or an unexpected answer becomes a [`ParseError`]
//! saying what was wrong, with a short excerpt.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::time::Instant;

use super::{Stage, Unhealthy, Verdict};
use crate::config::HaproxyConfig;

/// The one command of a check: both answers from one connection, hence from one process.
pub const CHECK_COMMAND: &str = "show info;show stat\n";

/// Opens the watch session: interactive mode, an idle timeout longer than any quiet spell
/// (HAProxy's `stats timeout` default of 10 s would otherwise close it every 10 s; the value
/// is one day, in seconds), and `show info` to learn which worker answers.
const SESSION_OPEN_COMMAND: &str = "prompt\nset timeout cli 86400\nshow info\n";

/// Prompts expected before the session is open: one per command of [`SESSION_OPEN_COMMAND`].
const SESSION_OPEN_PROMPTS: usize = 3;

/// The interactive prompt HAProxy prints after each answer in `prompt` mode.
const PROMPT: &[u8] = b"\n> ";

/// Largest answer accepted. A `show stat` row is ~700 bytes, so 8 MiB is over ten thousand
/// proxies and servers; anything larger is not HAProxy talking, and reading on would only
/// burn memory.
pub const MAX_ANSWER_BYTES: usize = 8 << 20;

/// Read buffer growth step: a typical check answer (4 KiB for a small config) fits in one read.
const READ_CHUNK: usize = 16 << 10;

/// How long after a (re)start HAProxy's server states may still be its optimistic initial
/// `UP` (check status `INI`) rather than a measurement. HAProxy spreads the first health checks
/// over one `inter` (default 2 s) and a server at its initial state goes DOWN on its first
/// failed check; `Uptime_sec` has one-second granularity: 2 s + 1 s + 2 s margin = 5 s. After
/// that, a server still at `INI` (a very long `inter`) is judged by what HAProxy reports rather
/// than holding an old verdict indefinitely.
pub const SETTLE_SECS: u64 = 5;

/// Length of the excerpt of unexpected output quoted in errors: enough to recognise
/// "Unknown command" or "Permission denied", short enough for one log line.
const EXCERPT_CHARS: usize = 80;

/// What went wrong understanding HAProxy's answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("answer is not UTF-8 text")]
    NotUtf8,
    #[error("answer is larger than {MAX_ANSWER_BYTES} bytes")]
    TooLarge,
    #[error("answer is truncated: it does not end with the empty line that ends every answer")]
    Truncated,
    #[error("expected `show info` output starting with `Name:`, got {0:?}")]
    NotShowInfo(String),
    #[error("show info line {line} is not `Name: value`: {text:?}")]
    InfoLine { line: usize, text: String },
    #[error("show info has no `{0}` field")]
    MissingInfoField(&'static str),
    #[error("show info field `{field}` is not a number: {value:?}")]
    InfoNumber { field: &'static str, value: String },
    #[error("no `show stat` header (`# pxname,...`) in the answer, which starts with {0:?}")]
    NoStatHeader(String),
    #[error("show stat header has no `{0}` column")]
    MissingColumn(&'static str),
    #[error("show stat line {line} has {got} fields, the header has {want}")]
    FieldCount {
        line: usize,
        got: usize,
        want: usize,
    },
    #[error("show stat line {line} has an unknown type {value:?}")]
    RowType { line: usize, value: String },
}

/// The `show info` fields the verdict needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Info {
    /// The worker's pid: changes on every reload.
    pub pid: u32,
    /// Seconds since this worker started (resets on reload).
    pub uptime_sec: u64,
    /// An old or soft-stopping process: it no longer serves new connections.
    pub stopping: bool,
}

/// Kind of a `show stat` row (its `type` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowKind {
    Frontend,
    Backend,
    Server,
    Listener,
}

/// One `show stat` row, borrowing from the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatRow<'a> {
    pub pxname: &'a str,
    pub svname: &'a str,
    pub kind: RowKind,
    /// `OPEN`, `UP`, `DOWN`, `UP 1/3`, `no check`, `MAINT`, ...
    pub status: &'a str,
    /// `L7OK`, `L4CON`, `INI` (not checked yet), with a `* ` prefix while a check runs; empty
    /// when the server has no check or the column is absent.
    pub check_status: &'a str,
}

/// One check's answer, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot<'a> {
    pub info: Info,
    pub rows: Vec<StatRow<'a>>,
}

fn excerpt(text: &str) -> String {
    text.chars().take(EXCERPT_CHARS).collect()
}

/// Parses `show info` (`Name: value` lines, blank lines ignored).
pub fn parse_info(text: &str) -> Result<Info, ParseError> {
    let body = text.trim_start_matches('\n');
    if !body.starts_with("Name:") {
        return Err(ParseError::NotShowInfo(excerpt(body)));
    }
    let (mut pid, mut uptime, mut stopping) = (None, None, None);
    for (index, line) in body.lines().enumerate() {
        if line.is_empty() {
            continue;
        }
        let (key, value) = line.split_once(':').ok_or_else(|| ParseError::InfoLine {
            line: index + 1,
            text: excerpt(line),
        })?;
        let value = value.trim();
        match key {
            "Pid" => pid = Some(number("Pid", value)?),
            "Uptime_sec" => uptime = Some(number("Uptime_sec", value)?),
            "Stopping" => stopping = Some(number::<u32>("Stopping", value)? != 0),
            _ => {}
        }
    }
    Ok(Info {
        pid: pid.ok_or(ParseError::MissingInfoField("Pid"))?,
        uptime_sec: uptime.ok_or(ParseError::MissingInfoField("Uptime_sec"))?,
        stopping: stopping.ok_or(ParseError::MissingInfoField("Stopping"))?,
    })
}

fn number<T: std::str::FromStr>(field: &'static str, value: &str) -> Result<T, ParseError> {
    value.parse().map_err(|_| ParseError::InfoNumber {
        field,
        value: excerpt(value),
    })
}

/// Parses `show stat` CSV. Columns are found by header name, so a HAProxy that adds or moves
/// columns still parses; `type` and `check_status` are optional (the kind then comes from
/// `svname`).
pub fn parse_stat(text: &str) -> Result<Vec<StatRow<'_>>, ParseError> {
    let mut lines = text.lines().enumerate();
    let header = lines
        .by_ref()
        .find(|(_, line)| !line.is_empty())
        .and_then(|(_, line)| line.strip_prefix("# "))
        .ok_or_else(|| ParseError::NoStatHeader(excerpt(text)))?;
    let columns: Vec<&str> = header.split(',').collect();
    let column = |name| columns.iter().position(|c| *c == name);
    let required = |name| column(name).ok_or(ParseError::MissingColumn(name));
    let (pxname, svname, status) = (
        required("pxname")?,
        required("svname")?,
        required("status")?,
    );
    let (kind_col, check_col) = (column("type"), column("check_status"));

    let mut rows = Vec::new();
    let mut fields: Vec<&str> = Vec::with_capacity(columns.len());
    for (index, line) in lines {
        if line.is_empty() {
            continue;
        }
        fields.clear();
        fields.extend(line.split(','));
        if fields.len() != columns.len() {
            return Err(ParseError::FieldCount {
                line: index + 1,
                got: fields.len(),
                want: columns.len(),
            });
        }
        let kind = match kind_col.map(|c| fields[c]) {
            Some("0") => RowKind::Frontend,
            Some("1") => RowKind::Backend,
            Some("2") => RowKind::Server,
            Some("3") => RowKind::Listener,
            Some(other) => {
                return Err(ParseError::RowType {
                    line: index + 1,
                    value: excerpt(other),
                })
            }
            None => match fields[svname] {
                "FRONTEND" => RowKind::Frontend,
                "BACKEND" => RowKind::Backend,
                _ => RowKind::Server,
            },
        };
        rows.push(StatRow {
            pxname: fields[pxname],
            svname: fields[svname],
            kind,
            status: fields[status],
            check_status: check_col.map_or("", |c| fields[c]),
        });
    }
    Ok(rows)
}

/// Parses the answer to [`CHECK_COMMAND`]: `show info`, an empty line, `show stat`, an empty
/// line. A missing final empty line means the answer was cut short.
pub fn parse_answer(text: &str) -> Result<Snapshot<'_>, ParseError> {
    if !text.ends_with("\n\n") {
        return Err(ParseError::Truncated);
    }
    let split = if text.starts_with("# ") {
        0
    } else {
        text.find("\n# ")
            .map(|at| at + 1)
            .ok_or_else(|| ParseError::NoStatHeader(excerpt(text)))?
    };
    let (info, stat) = text.split_at(split);
    Ok(Snapshot {
        info: parse_info(info)?,
        rows: parse_stat(stat)?,
    })
}

/// A server that takes traffic: `UP` including transitional `UP 1/3`, and `no check` (always
/// considered up by HAProxy). Not `DRAIN`, `NOLB` or `MAINT`: they take no new traffic.
fn server_up(status: &str) -> bool {
    status.starts_with("UP") || status == "no check"
}

/// A server whose state is still HAProxy's initial guess: never checked since start.
fn never_checked(check_status: &str) -> bool {
    check_status.trim_start_matches("* ") == "INI"
}

/// Server counts of one backend.
struct Tally<'a> {
    name: &'a str,
    /// The `BACKEND` row's status; None while only server rows were seen.
    status: Option<&'a str>,
    servers: u32,
    /// Servers up, by a measurement (or by any state once HAProxy is settled).
    up: u32,
    /// Servers at their initial, never-checked state while HAProxy is young.
    unsettled: u32,
}

fn tally<'a>(rows: &[StatRow<'a>], young: bool) -> Vec<Tally<'a>> {
    let mut tallies: Vec<Tally<'a>> = Vec::new();
    for row in rows {
        if !matches!(row.kind, RowKind::Backend | RowKind::Server) {
            continue;
        }
        // Rows of one proxy are contiguous in HAProxy's output, so this search is O(1) in
        // practice; it stays correct if they were not.
        let at = match tallies.iter().rposition(|t| t.name == row.pxname) {
            Some(at) => at,
            None => {
                tallies.push(Tally {
                    name: row.pxname,
                    status: None,
                    servers: 0,
                    up: 0,
                    unsettled: 0,
                });
                tallies.len() - 1
            }
        };
        let t = &mut tallies[at];
        if row.kind == RowKind::Backend {
            t.status = Some(row.status);
        } else {
            t.servers += 1;
            if young && never_checked(row.check_status) {
                t.unsettled += 1;
            } else if server_up(row.status) {
                t.up += 1;
            }
        }
    }
    tallies
}

enum BackendVerdict {
    Fine,
    Unsettled,
    Bad(Unhealthy),
}

fn judge_backend(t: &Tally<'_>, status: &str, min: u32) -> BackendVerdict {
    if t.up >= min {
        if status.starts_with("UP") {
            BackendVerdict::Fine
        } else {
            BackendVerdict::Bad(Unhealthy::BackendNotUp {
                name: t.name.to_owned(),
                status: status.to_owned(),
            })
        }
    } else if t.unsettled > 0 && t.up + t.unsettled >= min {
        BackendVerdict::Unsettled
    } else {
        BackendVerdict::Bad(Unhealthy::BackendDown {
            name: t.name.to_owned(),
            up: t.up,
            min,
        })
    }
}

/// Judges one snapshot against the config (no I/O).
///
/// Order: `Stopping`, then frontends, then backends; the first failure is the reason.
/// Frontends must be `OPEN`. Backends must be `UP` with at least `min_servers_up` servers up.
/// With an empty `backends` list every backend that has servers is judged (a serverless one —
/// a stats page, a redirect — cannot have servers up); a listed one is judged regardless.
///
/// After a (re)start, servers HAProxy has not checked yet show its optimistic initial state
/// (`UP 1/3`, check `INI`). While `Uptime_sec` < [`SETTLE_SECS`], such servers count neither
/// as up nor as down: if the checked servers alone decide the backend, that decides it; if
/// only the unchecked ones could make up `min_servers_up`, the verdict is
/// [`Verdict::Unsettled`] and the rise/fall state keeps its previous value. A new `Pid` or a
/// small uptime therefore never flips the verdict by itself, while `Stopping`, a closed
/// frontend and a dead socket still count at once.
pub fn judge<'a>(snapshot: &Snapshot<'a>, config: &HaproxyConfig) -> Verdict {
    let info = snapshot.info;
    if info.stopping {
        return Verdict::Bad(Unhealthy::Stopping { pid: info.pid });
    }
    let rows = &snapshot.rows;

    let frontends = rows.iter().filter(|r| r.kind == RowKind::Frontend);
    if config.frontends.is_empty() {
        if let Some(r) = frontends.clone().find(|r| r.status != "OPEN") {
            return Verdict::Bad(Unhealthy::FrontendNotOpen {
                name: r.pxname.to_owned(),
                status: r.status.to_owned(),
            });
        }
    } else {
        for name in &config.frontends {
            match frontends.clone().find(|r| r.pxname == name) {
                None => return Verdict::Bad(Unhealthy::FrontendNotFound { name: name.clone() }),
                Some(r) if r.status != "OPEN" => {
                    return Verdict::Bad(Unhealthy::FrontendNotOpen {
                        name: name.clone(),
                        status: r.status.to_owned(),
                    })
                }
                Some(_) => {}
            }
        }
    }

    let young = info.uptime_sec < SETTLE_SECS;
    let tallies = tally(rows, young);
    let min = config.min_servers_up;
    let mut unsettled: Vec<&'a str> = Vec::new();
    let mut verdict_of = |t: &Tally<'a>, status: &str| match judge_backend(t, status, min) {
        BackendVerdict::Fine => None,
        BackendVerdict::Unsettled => {
            unsettled.push(t.name);
            None
        }
        BackendVerdict::Bad(why) => Some(why),
    };
    if config.backends.is_empty() {
        for t in &tallies {
            if let (Some(status), true) = (t.status, t.servers > 0) {
                if let Some(why) = verdict_of(t, status) {
                    return Verdict::Bad(why);
                }
            }
        }
    } else {
        for name in &config.backends {
            let found = tallies
                .iter()
                .find(|t| t.name == name && t.status.is_some());
            let Some((t, Some(status))) = found.map(|t| (t, t.status)) else {
                return Verdict::Bad(Unhealthy::BackendNotFound { name: name.clone() });
            };
            if let Some(why) = verdict_of(t, status) {
                return Verdict::Bad(why);
            }
        }
    }
    if unsettled.is_empty() {
        Verdict::Good
    } else {
        Verdict::Unsettled(format!(
            "backend {} not settled: servers not checked yet by HAProxy pid {} (up {} s)",
            unsettled.join(", "),
            info.pid,
            info.uptime_sec
        ))
    }
}

/// Maps a connect error to its reason: each common cause has its own.
pub fn connect_error(path: &Path, error: std::io::Error) -> Unhealthy {
    let path = path.to_path_buf();
    match error.kind() {
        std::io::ErrorKind::NotFound => Unhealthy::SocketMissing { path },
        std::io::ErrorKind::ConnectionRefused => Unhealthy::Refused { path },
        std::io::ErrorKind::PermissionDenied => Unhealthy::PermissionDenied { path },
        _ => Unhealthy::Io {
            path,
            stage: Stage::Connect,
            source: Arc::new(error),
        },
    }
}

fn timed_out(path: &Path, stage: Stage, timeout: Duration) -> Unhealthy {
    Unhealthy::Timeout {
        path: path.to_path_buf(),
        stage,
        after_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
    }
}

fn io_error(path: &Path, stage: Stage, error: std::io::Error) -> Unhealthy {
    Unhealthy::Io {
        path: path.to_path_buf(),
        stage,
        source: Arc::new(error),
    }
}

/// Connects and sends `command`, all before `deadline`.
async fn connect_and_send(
    path: &Path,
    command: &str,
    deadline: Instant,
    timeout: Duration,
) -> Result<UnixStream, Unhealthy> {
    let mut stream = tokio::time::timeout_at(deadline, UnixStream::connect(path))
        .await
        .map_err(|_| timed_out(path, Stage::Connect, timeout))?
        .map_err(|e| connect_error(path, e))?;
    tokio::time::timeout_at(deadline, stream.write_all(command.as_bytes()))
        .await
        .map_err(|_| timed_out(path, Stage::Write, timeout))?
        .map_err(|e| io_error(path, Stage::Write, e))?;
    Ok(stream)
}

/// Reads into `buf` until `done(buf)`, EOF (returns true) or the deadline.
async fn read_until(
    stream: &mut UnixStream,
    buf: &mut Vec<u8>,
    path: &Path,
    deadline: Instant,
    timeout: Duration,
    done: impl Fn(&[u8]) -> bool,
) -> Result<bool, Unhealthy> {
    loop {
        if buf.len() > MAX_ANSWER_BYTES {
            return Err(ParseError::TooLarge.into());
        }
        buf.reserve(READ_CHUNK);
        let n = tokio::time::timeout_at(deadline, stream.read_buf(buf))
            .await
            .map_err(|_| timed_out(path, Stage::Read, timeout))?
            .map_err(|e| io_error(path, Stage::Read, e))?;
        if n == 0 {
            return Ok(true);
        }
        if done(buf) {
            return Ok(false);
        }
    }
}

/// Sends one command on a fresh connection and reads the answer until HAProxy closes it.
/// Connect, send and read together must finish within `timeout`.
pub async fn query(path: &Path, command: &str, timeout: Duration) -> Result<String, Unhealthy> {
    let deadline = Instant::now() + timeout;
    let mut stream = connect_and_send(path, command, deadline, timeout).await?;
    let mut buf = Vec::with_capacity(READ_CHUNK);
    read_until(&mut stream, &mut buf, path, deadline, timeout, |_| false).await?;
    if buf.is_empty() {
        return Err(Unhealthy::Closed {
            path: path.to_path_buf(),
        });
    }
    String::from_utf8(buf).map_err(|_| ParseError::NotUtf8.into())
}

/// The outcome of one check.
#[derive(Debug, Clone)]
pub struct Probe {
    pub verdict: Verdict,
    /// The answering process's `show info`, when the answer parsed.
    pub info: Option<Info>,
    /// Wall time of connect, query, parse and judge.
    pub latency: Duration,
}

/// One complete check: query [`CHECK_COMMAND`] on a fresh connection, parse, judge.
pub async fn check(config: &HaproxyConfig) -> Probe {
    let start = Instant::now();
    let timeout = Duration::from_millis(config.timeout_ms);
    let (verdict, info) = match query(&config.stats_socket, CHECK_COMMAND, timeout).await {
        Err(why) => (Verdict::Bad(why), None),
        Ok(text) => match parse_answer(&text) {
            Err(e) => (Verdict::Bad(e.into()), None),
            Ok(snapshot) => (judge(&snapshot, config), Some(snapshot.info)),
        },
    };
    Probe {
        verdict,
        info,
        latency: start.elapsed(),
    }
}

/// An idle interactive connection to one HAProxy worker; it closes when that worker dies or
/// exits. Holding it open keeps a soft-stopping old worker alive, so the owner must drop it as
/// soon as another `Pid` answers the socket (after a reload).
#[derive(Debug)]
pub struct Session {
    stream: UnixStream,
    pid: u32,
}

impl Session {
    /// Connects, enters `prompt` mode, lifts the idle timeout and learns the worker's pid.
    pub async fn open(path: &Path, timeout: Duration) -> Result<Self, Unhealthy> {
        let deadline = Instant::now() + timeout;
        let mut stream = connect_and_send(path, SESSION_OPEN_COMMAND, deadline, timeout).await?;
        let mut buf = Vec::with_capacity(READ_CHUNK);
        let complete = |b: &[u8]| {
            b.ends_with(PROMPT)
                && b.windows(PROMPT.len()).filter(|w| *w == PROMPT).count() >= SESSION_OPEN_PROMPTS
        };
        let eof = read_until(&mut stream, &mut buf, path, deadline, timeout, complete).await?;
        if eof {
            return Err(Unhealthy::Closed {
                path: path.to_path_buf(),
            });
        }
        let text = std::str::from_utf8(&buf).map_err(|_| ParseError::NotUtf8)?;
        let start = text
            .find("Name:")
            .ok_or_else(|| ParseError::NotShowInfo(excerpt(text)))?;
        let info = parse_info(text[start..].trim_end_matches("> "))?;
        Ok(Self {
            stream,
            pid: info.pid,
        })
    }

    /// The worker this session talks to.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Resolves when HAProxy closes the session (EOF or error). Cancel-safe: it only reads
    /// and discards.
    pub async fn closed(&mut self) {
        let mut sink = [0u8; 512];
        loop {
            match self.stream.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests;
