//! HAProxy's stats socket: the client (a Unix socket on tokio's reactor), pure parsers for
//! `show info` and `show stat`, and the pure judgement of one snapshot.
//!
//! Why the stats socket: it is what HAProxy itself knows — whether it is up, whether it is
//! stopping, which frontends listen and which servers its own health checks see — and it
//! costs one local connection. One check is one command, `show info;show stat`: both answers
//! describe the same process, so `Pid` and `Uptime_sec` always belong to the states they are
//! judged with.
//!
//! # One connection, kept open: the [`Session`]
//!
//! Checks run over one interactive (`prompt`) connection that stays open between them, not
//! over a new connection each. Two reasons:
//!
//! - **Death is seen at once.** HAProxy closes the session the moment its worker dies; the
//!   monitor turns that into an immediate re-check, so death is seen in milliseconds instead
//!   of `fall` polls.
//! - **A check needs no free file descriptor.** Anyone who can reach the peer port can make
//!   this process hold connections, and at the `RLIMIT_NOFILE` soft limit (1,024 under
//!   systemd's default) every new socket fails with `EMFILE`. A check that opened a socket
//!   each time would then fail although HAProxy is fine — and it used to count as HAProxy's
//!   death, on every box at once. The open session already owns its descriptor. A new one is
//!   needed only when the session ends: a reload (the old worker reports `Stopping`), HAProxy's
//!   death, or an operator's `shutdown session`; the session's own descriptor is closed just
//!   before, so its slot is free again. If opening still fails for lack of a descriptor,
//!   buffer or memory, the reason says so ([`Unhealthy::LocalResource`]) and is never taken
//!   for HAProxy's death: see [`super::RiseFall`] for what the verdict does then. The
//!   alternative, a reserved descriptor closed just before each connect, would race with the
//!   peer server's accept loop for the freed slot, and would still cost a connect per check.
//!
//! The session's socket is registered with the runtime for read readiness only
//! ([`StatsStream`]). tokio's `UnixStream` also asks for write readiness, and a Unix stream
//! socket signals it each time the peer consumes what was written: HAProxy reading the 20-byte
//! command woke the runtime thread twice more per check, about twenty needless wake-ups a
//! second on every box at the default check interval. A command is a few dozen bytes written
//! once per answer, so it always fits the socket's buffer: it is written without waiting, and
//! a full buffer is an error that ends the session.
//!
//! Framing: in prompt mode HAProxy ends the output of each command with `\n> ` instead of
//! closing. A quoted `show stat` field could contain that text, so an answer is complete only
//! at the second prompt *and* when its `show stat` part holds an even number of `"` (HAProxy
//! doubles quotes inside quoted fields, so an odd count means a quoted field is still open).
//!
//! # Parsing
//!
//! `show stat` is real CSV: HAProxy quotes a field holding a comma, a quote, CR or LF and
//! doubles inner quotes, and `last_chk` / `last_agt` carry whatever text a backend or an agent
//! chose (`"Service Unavailable, retry later"`). It is read with `csv_core`, the `csv` crate's
//! own parser, from bytes: only the four fields the verdict needs must be UTF-8. The parser is
//! built once per thread ([`STAT_CSV`]) and reset for each answer, because building one (its
//! state machine) took more CPU than parsing a small answer with it: half of every check. A
//! row that cannot be understood (too few or too many fields, an unknown type) fails the check
//! only when it belongs to a proxy raftvip watches; any other is reported in
//! [`Probe::ignored`] for the monitor to log, and skipped. Parsing never panics: garbage,
//! truncation or an unexpected answer becomes a [`ParseError`] saying what was wrong, with a
//! short excerpt.
//!
//! Cost, measured against HAProxy 2.6 with a small config: see `integration/haproxy_health.rs`
//! (`a_check_costs_well_under_a_millisecond_of_cpu`).

use std::cell::RefCell;
use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::net::UnixStream;
use tokio::time::Instant;

use super::{Stage, Unhealthy, Verdict};
use crate::config::HaproxyConfig;

/// The one command of a check: both answers from one process.
pub const CHECK_COMMAND: &str = "show info;show stat\n";

/// Opens a session and runs its first check in one exchange: interactive mode, an idle
/// timeout longer than any quiet spell (HAProxy's `stats timeout` default of 10 s would
/// otherwise close it every 10 s; the value is one day, in seconds), then [`CHECK_COMMAND`].
const SESSION_OPEN_COMMAND: &str = "prompt\nset timeout cli 86400\nshow info;show stat\n";

/// Prompts that precede the check's answer when a session opens: one after `prompt`, one
/// after `set timeout cli`.
const SESSION_OPEN_PROMPTS: usize = 2;

/// The interactive prompt HAProxy prints after the output of each command (of a `;` chain
/// too) in `prompt` mode, where one-shot mode prints an empty line: `\n` ends the output's
/// last line either way.
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
    FieldCount { line: u64, got: usize, want: usize },
    #[error("show stat line {line} has an unknown type {value:?}")]
    RowType { line: u64, value: String },
    #[error("show stat line {line}: `{column}` is not UTF-8 text")]
    NotUtf8 { line: u64, column: &'static str },
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

/// One `show stat` row: the fields the verdict needs, unquoted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatRow {
    pub pxname: String,
    pub svname: String,
    pub kind: RowKind,
    /// `OPEN`, `UP`, `DOWN`, `UP 1/3`, `no check`, `MAINT`, ...
    pub status: String,
    /// `L7OK`, `L4CON`, `INI` (not checked yet), with a `* ` prefix while a check runs; empty
    /// when the server has no check or the column is absent.
    pub check_status: String,
}

/// A `show stat` row the parser could not understand, with what it could read of its owner
/// (`pxname` and `svname` come first in every row, before any free text, so they survive a
/// garbled row; non-UTF-8 bytes are replaced).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OddRow {
    pub pxname: String,
    pub svname: String,
    pub problem: ParseError,
}

/// One check's answer, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub info: Info,
    pub rows: Vec<StatRow>,
    /// Rows that could not be understood, in answer order.
    pub odd: Vec<OddRow>,
}

fn excerpt(text: &[u8]) -> String {
    String::from_utf8_lossy(text)
        .chars()
        .take(EXCERPT_CHARS)
        .collect()
}

fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|b| !b.is_ascii_whitespace());
    let end = bytes.iter().rposition(|b| !b.is_ascii_whitespace());
    match (start, end) {
        (Some(s), Some(e)) => &bytes[s..=e],
        _ => &[],
    }
}

/// Parses `show info` (`Name: value` lines, blank lines ignored). Only `Pid`, `Uptime_sec`
/// and `Stopping` are read; other values may hold any bytes.
pub fn parse_info(text: &[u8]) -> Result<Info, ParseError> {
    let start = text.iter().position(|b| *b != b'\n').unwrap_or(text.len());
    let body = &text[start..];
    if !body.starts_with(b"Name:") {
        return Err(ParseError::NotShowInfo(excerpt(body)));
    }
    let (mut pid, mut uptime, mut stopping) = (None, None, None);
    for (index, line) in body.split(|b| *b == b'\n').enumerate() {
        if line.is_empty() {
            continue;
        }
        let colon = line
            .iter()
            .position(|b| *b == b':')
            .ok_or_else(|| ParseError::InfoLine {
                line: index + 1,
                text: excerpt(line),
            })?;
        let value = trim(&line[colon + 1..]);
        match &line[..colon] {
            b"Pid" => pid = Some(number("Pid", value)?),
            b"Uptime_sec" => uptime = Some(number("Uptime_sec", value)?),
            b"Stopping" => stopping = Some(number::<u32>("Stopping", value)? != 0),
            _ => {}
        }
    }
    Ok(Info {
        pid: pid.ok_or(ParseError::MissingInfoField("Pid"))?,
        uptime_sec: uptime.ok_or(ParseError::MissingInfoField("Uptime_sec"))?,
        stopping: stopping.ok_or(ParseError::MissingInfoField("Stopping"))?,
    })
}

fn number<T: std::str::FromStr>(field: &'static str, value: &[u8]) -> Result<T, ParseError> {
    std::str::from_utf8(value)
        .ok()
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| ParseError::InfoNumber {
            field,
            value: excerpt(value),
        })
}

/// Column positions of the fields the verdict needs.
struct Columns {
    count: usize,
    pxname: usize,
    svname: usize,
    status: usize,
    kind: Option<usize>,
    check_status: Option<usize>,
}

impl Columns {
    fn of(header: &Record) -> Result<Self, ParseError> {
        let column = |name: &str| header.iter().position(|c| c == name.as_bytes());
        let required = |name| column(name).ok_or(ParseError::MissingColumn(name));
        Ok(Self {
            count: header.len(),
            pxname: required("pxname")?,
            svname: required("svname")?,
            status: required("status")?,
            kind: column("type"),
            check_status: column("check_status"),
        })
    }

    /// Reads one data row; `Err` is an [`OddRow`].
    fn row(&self, record: &Record, line: u64) -> Result<StatRow, OddRow> {
        let lossy = |at: usize| String::from_utf8_lossy(record.get(at).unwrap_or_default());
        let odd = |problem| OddRow {
            pxname: lossy(self.pxname).into_owned(),
            svname: lossy(self.svname).into_owned(),
            problem,
        };
        if record.len() != self.count {
            return Err(odd(ParseError::FieldCount {
                line,
                got: record.len(),
                want: self.count,
            }));
        }
        let text = |at: usize, column: &'static str| {
            std::str::from_utf8(record.get(at).unwrap_or_default())
                .map(str::to_owned)
                .map_err(|_| odd(ParseError::NotUtf8 { line, column }))
        };
        let svname = text(self.svname, "svname")?;
        let kind = match self.kind.map(|c| record.get(c).unwrap_or_default()) {
            Some(b"0") => RowKind::Frontend,
            Some(b"1") => RowKind::Backend,
            Some(b"2") => RowKind::Server,
            Some(b"3") => RowKind::Listener,
            Some(other) => {
                return Err(odd(ParseError::RowType {
                    line,
                    value: excerpt(other),
                }))
            }
            None => match svname.as_str() {
                "FRONTEND" => RowKind::Frontend,
                "BACKEND" => RowKind::Backend,
                _ => RowKind::Server,
            },
        };
        Ok(StatRow {
            pxname: text(self.pxname, "pxname")?,
            svname,
            kind,
            status: text(self.status, "status")?,
            check_status: match self.check_status {
                Some(c) => text(c, "check_status")?,
                None => String::new(),
            },
        })
    }
}

/// Parses `show stat` CSV into the rows it understood and those it did not. Columns are found
/// by header name, so a HAProxy that adds or moves columns still parses; `type` and
/// `check_status` are optional (the kind then comes from `svname`). Line numbers count from
/// the header (line 1); a quoted field may span lines, so they are where a row starts.
pub fn parse_stat(text: &[u8]) -> Result<(Vec<StatRow>, Vec<OddRow>), ParseError> {
    let start = text.iter().position(|b| *b != b'\n').unwrap_or(text.len());
    let body = text[start..]
        .strip_prefix(b"# ")
        .ok_or_else(|| ParseError::NoStatHeader(excerpt(&text[start..])))?;
    STAT_CSV.with_borrow_mut(|csv| {
        csv.reset();
        let mut reader = Records { csv, rest: body };
        let mut record = Record::default();
        if reader.next(&mut record).is_none() {
            return Err(ParseError::NoStatHeader(excerpt(&text[start..])));
        }
        let columns = Columns::of(&record)?;
        let (mut rows, mut odd) = (Vec::new(), Vec::new());
        while let Some(line) = reader.next(&mut record) {
            match columns.row(&record, line) {
                Ok(row) => rows.push(row),
                Err(row) => odd.push(row),
            }
        }
        Ok((rows, odd))
    })
}

thread_local! {
    /// This thread's `show stat` parser, built once and reset for each answer. Defaults as
    /// HAProxy writes: `,` between fields, `"` quotes doubled inside quoted fields, rows
    /// ended by `\n`. (Not one copy per answer: csv_core's `Clone` copies only part of the
    /// state machine.)
    static STAT_CSV: RefCell<csv_core::Reader> = RefCell::new(csv_core::Reader::new());
}

/// One CSV record: its fields' bytes, unquoted, one after the other, and where each ends.
#[derive(Debug, Default)]
struct Record {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl Record {
    fn len(&self) -> usize {
        self.ends.len()
    }

    fn get(&self, at: usize) -> Option<&[u8]> {
        let end = *self.ends.get(at)?;
        let start = at.checked_sub(1).map_or(0, |before| self.ends[before]);
        self.bytes.get(start..end)
    }

    fn iter(&self) -> impl Iterator<Item = &[u8]> {
        (0..self.len()).filter_map(|at| self.get(at))
    }
}

/// The records of a CSV text, read with a reset [`STAT_CSV`]. It never fails: csv_core
/// reads any bytes as *some* records (a row of the wrong shape is then found by its field
/// count).
struct Records<'a> {
    csv: &'a mut csv_core::Reader,
    rest: &'a [u8],
}

impl Records<'_> {
    /// Reads the next record into `record`; returns the line it starts on (the first line is
    /// 1), or None at the end of the text.
    fn next(&mut self, record: &mut Record) -> Option<u64> {
        use csv_core::ReadRecordResult as Read;
        let line = self.csv.line();
        let (mut written, mut ended) = (0, 0);
        loop {
            if written == record.bytes.len() {
                record.bytes.resize((2 * written).max(256), 0);
            }
            if ended == record.ends.len() {
                record.ends.resize((2 * ended).max(128), 0);
            }
            let (result, read, wrote, ends) = self.csv.read_record(
                self.rest,
                &mut record.bytes[written..],
                &mut record.ends[ended..],
            );
            self.rest = &self.rest[read..];
            written += wrote;
            ended += ends;
            match result {
                Read::InputEmpty | Read::OutputFull | Read::OutputEndsFull => {}
                Read::Record => {
                    record.bytes.truncate(written);
                    record.ends.truncate(ended);
                    return Some(line);
                }
                Read::End => return None,
            }
        }
    }
}

/// Parses the answer to [`CHECK_COMMAND`] in its one-shot form: `show info`, an empty line,
/// `show stat`, an empty line. A missing final empty line means the answer was cut short.
pub fn parse_answer(text: &[u8]) -> Result<Snapshot, ParseError> {
    if !text.ends_with(b"\n\n") {
        return Err(ParseError::Truncated);
    }
    let split = stat_start(text).ok_or_else(|| ParseError::NoStatHeader(excerpt(text)))?;
    let (info, stat) = text.split_at(split);
    let info = parse_info(info)?;
    let (rows, odd) = parse_stat(stat)?;
    Ok(Snapshot { info, rows, odd })
}

/// Where the `show stat` header starts: at the start, or after the first `\n# `. `show info`
/// lines are `Name: value` and never start with `# `.
fn stat_start(text: &[u8]) -> Option<usize> {
    if text.starts_with(b"# ") {
        return Some(0);
    }
    text.windows(3).position(|w| w == b"\n# ").map(|at| at + 1)
}

/// Where a complete prompt-mode answer to [`CHECK_COMMAND`] lies in `buf`, after `skip`
/// leading prompts: `(start, info_end)`, the start of the `show info` output and the end of
/// the prompt that follows it. In prompt mode HAProxy ends each command's output with
/// [`PROMPT`], an error included, so the answer is complete at the second prompt after `skip`
/// — unless that "prompt" is text inside a quoted `show stat` field, i.e. the `show stat`
/// part so far holds an odd number of quotes. Outside quotes, `\n> ` cannot be text: `show
/// info` values are single lines, and every `show stat` row starts with a proxy name, made of
/// letters, digits and `-_.:` only.
fn framed(buf: &[u8], skip: usize) -> Option<(usize, usize)> {
    if !buf.ends_with(PROMPT) {
        return None;
    }
    let mut prompt_ends = (buf.windows(PROMPT.len()).enumerate())
        .filter(|(_, w)| *w == PROMPT)
        .map(|(at, _)| at + PROMPT.len());
    let start = match skip {
        0 => 0,
        _ => prompt_ends.nth(skip - 1)?,
    };
    let info_end = prompt_ends.next()?;
    let last = buf.len() - PROMPT.len();
    let quotes = buf.get(info_end..last)?.iter().filter(|b| **b == b'"');
    (quotes.count() % 2 == 0).then_some((start, info_end))
}

/// The answer framed by [`framed`] in one-shot form: each command's output followed by an
/// empty line instead of the prompt.
fn one_shot(buf: &[u8], (start, info_end): (usize, usize)) -> Vec<u8> {
    let prompt_tail = PROMPT.len() - 1;
    let mut answer = buf[start..info_end - prompt_tail].to_vec();
    answer.extend_from_slice(&buf[info_end..buf.len() - prompt_tail]);
    answer
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

/// Whether the row of proxy `pxname` named `svname` is one raftvip watches: a frontend row
/// (`FRONTEND`) of a listed frontend, any other row of a listed backend; an empty list
/// watches all. Decided from the two fields every row starts with, so it also places a row
/// that could not be read otherwise.
pub fn watches(config: &HaproxyConfig, pxname: &str, svname: &str) -> bool {
    let list = if svname == "FRONTEND" {
        &config.frontends
    } else {
        &config.backends
    };
    list.is_empty() || list.iter().any(|name| name == pxname)
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

fn tally(rows: &[StatRow], young: bool) -> Vec<Tally<'_>> {
    let mut tallies: Vec<Tally<'_>> = Vec::new();
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
                    name: &row.pxname,
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
            t.status = Some(&row.status);
        } else {
            t.servers += 1;
            if young && never_checked(&row.check_status) {
                t.unsettled += 1;
            } else if server_up(&row.status) {
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
/// Order: `Stopping`, then rows that could not be read, then frontends, then backends; the
/// first failure is the reason. A row that could not be read fails the check only if it is
/// watched (see [`watches`]): a garbled row of a proxy raftvip ignores never takes the box
/// out. Frontends must be `OPEN`. Backends must be `UP` with at least `min_servers_up` servers
/// up. With an empty `backends` list every backend that has servers is judged (a serverless
/// one — a stats page, a redirect — cannot have servers up); a listed one is judged
/// regardless.
///
/// After a (re)start, servers HAProxy has not checked yet show its optimistic initial state
/// (`UP 1/3`, check `INI`). While `Uptime_sec` < [`SETTLE_SECS`], such servers count neither
/// as up nor as down: if the checked servers alone decide the backend, that decides it; if
/// only the unchecked ones could make up `min_servers_up`, the verdict is
/// [`Verdict::Unsettled`] and the rise/fall state keeps its previous value. A new `Pid` or a
/// small uptime therefore never flips the verdict by itself, while `Stopping`, a closed
/// frontend and a dead socket still count at once.
pub fn judge<'a>(snapshot: &'a Snapshot, config: &HaproxyConfig) -> Verdict {
    let info = snapshot.info;
    if info.stopping {
        return Verdict::Bad(Unhealthy::Stopping { pid: info.pid });
    }
    if let Some(odd) = (snapshot.odd.iter()).find(|r| watches(config, &r.pxname, &r.svname)) {
        return Verdict::Bad(Unhealthy::UnreadableRow {
            proxy: odd.pxname.clone(),
            problem: odd.problem.clone(),
        });
    }
    let rows = &snapshot.rows;

    let frontends = rows.iter().filter(|r| r.kind == RowKind::Frontend);
    if config.frontends.is_empty() {
        if let Some(r) = frontends.clone().find(|r| r.status != "OPEN") {
            return Verdict::Bad(Unhealthy::FrontendNotOpen {
                name: r.pxname.clone(),
                status: r.status.clone(),
            });
        }
    } else {
        for name in &config.frontends {
            match frontends.clone().find(|r| &r.pxname == name) {
                None => return Verdict::Bad(Unhealthy::FrontendNotFound { name: name.clone() }),
                Some(r) if r.status != "OPEN" => {
                    return Verdict::Bad(Unhealthy::FrontendNotOpen {
                        name: name.clone(),
                        status: r.status.clone(),
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

/// What a local resource error is short of, for the reason text: these errors say that this
/// process (or this host) is out of something, not that HAProxy is gone.
fn local_shortage(error: &std::io::Error) -> Option<&'static str> {
    match error.raw_os_error()? {
        libc::EMFILE => Some("file descriptors (EMFILE: its RLIMIT_NOFILE is reached)"),
        libc::ENFILE => Some("file descriptors (ENFILE: the system-wide limit is reached)"),
        libc::ENOMEM => Some("memory (ENOMEM)"),
        libc::ENOBUFS => Some("socket buffers (ENOBUFS)"),
        _ => None,
    }
}

/// Maps a connect error to its reason: each common cause has its own.
pub fn connect_error(path: &Path, error: std::io::Error) -> Unhealthy {
    if local_shortage(&error).is_some() {
        return io_error(path, Stage::Connect, error);
    }
    let path = path.to_path_buf();
    match error.kind() {
        std::io::ErrorKind::NotFound => Unhealthy::SocketMissing { path },
        std::io::ErrorKind::ConnectionRefused => Unhealthy::Refused { path },
        std::io::ErrorKind::PermissionDenied => Unhealthy::PermissionDenied { path },
        _ => io_error(&path, Stage::Connect, error),
    }
}

fn timed_out(path: &Path, stage: Stage, timeout: Duration) -> Unhealthy {
    Unhealthy::Timeout {
        path: path.to_path_buf(),
        stage,
        after_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
    }
}

/// An I/O error of one stage: a local shortage has its own reason, anything else is an I/O
/// failure talking to HAProxy.
fn io_error(path: &Path, stage: Stage, error: std::io::Error) -> Unhealthy {
    let path = path.to_path_buf();
    match local_shortage(&error) {
        Some(short_of) => Unhealthy::LocalResource {
            path,
            stage,
            short_of,
            source: Arc::new(error),
        },
        None => Unhealthy::Io {
            path,
            stage,
            source: Arc::new(error),
        },
    }
}

/// A connection to the stats socket that wakes the runtime only when there is something to
/// read (module docs: why not tokio's `UnixStream`).
#[derive(Debug)]
struct StatsStream(AsyncFd<std::os::unix::net::UnixStream>);

impl StatsStream {
    fn new(stream: UnixStream) -> std::io::Result<Self> {
        // `into_std` leaves the socket non-blocking.
        let stream = stream.into_std()?;
        // SAFETY: the std stream owns its descriptor until the AsyncFd drops it.
        let registered = unsafe { AsyncFd::register_with_interest(stream, Interest::READABLE) };
        Ok(Self(registered.map_err(|e| e.into_parts().1)?))
    }

    /// Writes all of `bytes` at once, or fails: never waits (module docs).
    fn send(&self, bytes: &[u8]) -> std::io::Result<()> {
        let mut stream = self.0.get_ref();
        match stream.write(bytes)? {
            n if n == bytes.len() => Ok(()),
            n => Err(std::io::Error::new(
                std::io::ErrorKind::WriteZero,
                format!("the socket took {n} of the command's {} bytes", bytes.len()),
            )),
        }
    }

    /// Reads what has arrived into `buf` once some has; Ok(0) at the end of the stream.
    async fn read(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0
            .async_io(Interest::READABLE, |mut stream| stream.read(buf))
            .await
    }
}

/// Sends `command` on `stream`, then reads until the answer is [`framed`] (after `skip`
/// prompts), all before `deadline`; returns the answer in one-shot form.
async fn exchange(
    stream: &StatsStream,
    command: &str,
    skip: usize,
    path: &Path,
    deadline: Instant,
    timeout: Duration,
) -> Result<Vec<u8>, Unhealthy> {
    stream
        .send(command.as_bytes())
        .map_err(|e| io_error(path, Stage::Write, e))?;
    let mut buf = Vec::with_capacity(READ_CHUNK);
    loop {
        if buf.len() > MAX_ANSWER_BYTES {
            return Err(ParseError::TooLarge.into());
        }
        let filled = buf.len();
        buf.resize(filled + READ_CHUNK, 0);
        let n = tokio::time::timeout_at(deadline, stream.read(&mut buf[filled..]))
            .await
            .map_err(|_| timed_out(path, Stage::Read, timeout))?
            .map_err(|e| io_error(path, Stage::Read, e))?;
        buf.truncate(filled + n);
        if n == 0 {
            return Err(Unhealthy::Closed {
                path: path.to_path_buf(),
            });
        }
        if let Some(frame) = framed(&buf, skip) {
            return Ok(one_shot(&buf, frame));
        }
    }
}

/// The outcome of one check.
#[derive(Debug, Clone)]
pub struct Probe {
    pub verdict: Verdict,
    /// The answering process's `show info`, when the answer parsed.
    pub info: Option<Info>,
    /// Wall time of the exchange, parse and judge.
    pub latency: Duration,
    /// Rows that could not be read and belong to proxies raftvip does not watch: skipped, to
    /// be logged (rate-limited) by the caller.
    pub ignored: Vec<OddRow>,
}

impl Probe {
    fn failed(why: Unhealthy, start: Instant) -> Self {
        Self {
            verdict: Verdict::Bad(why),
            info: None,
            latency: start.elapsed(),
            ignored: Vec::new(),
        }
    }

    fn of_answer(answer: &[u8], config: &HaproxyConfig, start: Instant) -> Self {
        match parse_answer(answer) {
            Err(e) => Self::failed(e.into(), start),
            Ok(snapshot) => {
                let verdict = judge(&snapshot, config);
                let ignored = (snapshot.odd.into_iter())
                    .filter(|r| !watches(config, &r.pxname, &r.svname))
                    .collect();
                Self {
                    verdict,
                    info: Some(snapshot.info),
                    latency: start.elapsed(),
                    ignored,
                }
            }
        }
    }
}

/// An interactive connection to one HAProxy worker that carries the checks and closes when
/// that worker dies or exits. Holding it open keeps a soft-stopping old worker alive, so the
/// owner drops it as soon as its worker reports `Stopping` (after a reload).
#[derive(Debug)]
pub struct Session {
    stream: StatsStream,
    pid: u32,
}

impl Session {
    /// Connects, enters `prompt` mode, lifts the idle timeout and runs the first check, all
    /// within the config's `timeout_ms`. The session is returned only when the answer names
    /// a worker that is not stopping: one that is must not be held.
    pub async fn open(config: &HaproxyConfig) -> (Probe, Option<Session>) {
        let start = Instant::now();
        let path = &config.stats_socket;
        let timeout = Duration::from_millis(config.timeout_ms);
        let deadline = start + timeout;
        let connected = tokio::time::timeout_at(deadline, UnixStream::connect(path))
            .await
            .map_err(|_| timed_out(path, Stage::Connect, timeout))
            .and_then(|r| r.map_err(|e| connect_error(path, e)))
            .and_then(|s| StatsStream::new(s).map_err(|e| io_error(path, Stage::Connect, e)));
        let stream = match connected {
            Ok(stream) => stream,
            Err(why) => return (Probe::failed(why, start), None),
        };
        let exchanged = exchange(
            &stream,
            SESSION_OPEN_COMMAND,
            SESSION_OPEN_PROMPTS,
            path,
            deadline,
            timeout,
        );
        let probe = match exchanged.await {
            Ok(answer) => Probe::of_answer(&answer, config, start),
            Err(why) => return (Probe::failed(why, start), None),
        };
        let session = (probe.info)
            .filter(|i| !i.stopping)
            .map(|i| Session { stream, pid: i.pid });
        (probe, session)
    }

    /// Runs one check on the open session, within the config's `timeout_ms`. `Err` means the
    /// session is unusable (closed, silent, or out of step) and must be dropped; the verdict
    /// then belongs to a check on a new session.
    pub async fn check(&mut self, config: &HaproxyConfig) -> Result<Probe, Unhealthy> {
        let start = Instant::now();
        let timeout = Duration::from_millis(config.timeout_ms);
        let path = &config.stats_socket;
        let exchanged = exchange(
            &self.stream,
            CHECK_COMMAND,
            0,
            path,
            start + timeout,
            timeout,
        );
        let answer = exchanged.await?;
        Ok(Probe::of_answer(&answer, config, start))
    }

    /// The worker this session talks to.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Resolves when HAProxy closes the session (EOF or error). Cancel-safe: it only reads
    /// and discards, and HAProxy sends nothing between answers.
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

#[cfg(test)]
mod proptests;
