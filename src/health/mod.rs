//! Is this box fit to hold the VIP? The answer comes from HAProxy's runtime API.
//!
//! A node stands for election only while its HAProxy is healthy, so this module decides what
//! "healthy" means and how fast the answer changes:
//!
//! - [`haproxy`] talks to the stats socket (native tokio, no `socat`), parses `show info` /
//!   `show stat` with pure functions and judges one snapshot into a [`Verdict`] without I/O.
//! - [`RiseFall`] (pure) turns the stream of verdicts into a debounced healthy/unhealthy state:
//!   `rise` good checks in a row to become healthy, `fall` bad ones to become unhealthy, except
//!   that a *hard* failure (the socket refuses or vanished, HAProxy is stopping), confirmed by a
//!   second immediate check, counts at once: a dead HAProxy must not hold the VIP for `fall`
//!   more polls. A check that fails for lack of a local resource (`EMFILE`, `ENFILE`, `ENOMEM`,
//!   `ENOBUFS`) says nothing about HAProxy: a healthy verdict is kept for up to
//!   [`LOCAL_ERROR_HOLD`], and the reason says so.
//! - [`monitor`] is the thin async driver: it polls over an interactive `prompt` session it
//!   keeps open, so that a check needs no new descriptor and HAProxy's death is seen within
//!   milliseconds (its socket closes), follows master-worker reloads, and publishes [`Health`]
//!   on a `watch` channel. The supervisor reads that channel through the [`HealthFeed`] trait
//!   ([`verdict`]), which a `watch` of [`Health`] implements, so the supervisor does not depend
//!   on how health is measured.

pub mod haproxy;
pub mod monitor;
pub mod verdict;

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::clock::now_unix_ms;

pub use haproxy::ParseError;
pub use monitor::{spawn_haproxy_monitor, spawn_reloadable_haproxy_monitor};
pub use verdict::{HealthFeed, HealthVerdict, NoHealthGate};

/// What the supervisor sees: the debounced verdict plus numbers for status and metrics.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Health {
    /// True only after `rise` good checks in a row; false while unknown (start-up).
    pub healthy: bool,
    /// Why the node is not healthy; while healthy, None — or why the healthy verdict is being
    /// kept without a successful check (see [`LOCAL_ERROR_HOLD`]).
    pub reason: Option<String>,
    /// Wall-clock time of the last finished check, ms since the Unix epoch (0 = none yet).
    pub last_check_unix_ms: u64,
    /// Wall time of the last check (connect, query, parse, judge), µs.
    pub check_latency_us: u64,
    /// How often `healthy` changed since start.
    pub transitions: u64,
    /// Checks run since start (polls, plus the immediate checks a closed session or a hard
    /// failure triggers).
    pub checks: u64,
}

impl Health {
    /// The state before the first check: unhealthy, because an unchecked HAProxy must not win
    /// an election.
    pub fn initial() -> Self {
        Self {
            healthy: false,
            reason: Some(RiseFall::NOT_CHECKED.to_owned()),
            last_check_unix_ms: 0,
            check_latency_us: 0,
            transitions: 0,
            checks: 0,
        }
    }
}

/// The supervisor reads [`Health`] straight from the monitor's `watch` channel.
impl HealthVerdict for Health {
    fn is_healthy(&self) -> bool {
        self.healthy
    }

    fn status(&self) -> Option<crate::status::HealthStatus> {
        let age = (self.last_check_unix_ms > 0)
            .then(|| now_unix_ms().saturating_sub(self.last_check_unix_ms));
        Some(crate::status::HealthStatus {
            healthy: self.healthy,
            reason: self.reason.clone(),
            last_check_age_ms: age,
            check_latency_us: self.check_latency_us,
            transitions: self.transitions,
            checks: self.checks,
        })
    }
}

/// Why one check found HAProxy unfit. `Display` is the operator-facing reason.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Unhealthy {
    #[error("stats socket {} does not exist (HAProxy not running, or no `stats socket` line in haproxy.cfg)", path.display())]
    SocketMissing { path: PathBuf },
    #[error("connection refused on {}: HAProxy is down", path.display())]
    Refused { path: PathBuf },
    #[error("permission denied on {}: give raftvip's user access to the stats socket (e.g. `mode 660 group raftvip`)", path.display())]
    PermissionDenied { path: PathBuf },
    #[error("no answer on {} within {after_ms} ms ({stage}): HAProxy is wedged or overloaded", path.display())]
    Timeout {
        path: PathBuf,
        stage: Stage,
        after_ms: u64,
    },
    #[error("HAProxy closed {} without answering", path.display())]
    Closed { path: PathBuf },
    #[error("talking to {} failed ({stage}): {source}", path.display())]
    Io {
        path: PathBuf,
        stage: Stage,
        #[source]
        source: Arc<std::io::Error>,
    },
    #[error("cannot check HAProxy on {} ({stage}): raftvip is out of {short_of}; HAProxy's state is unknown", path.display())]
    LocalResource {
        path: PathBuf,
        stage: Stage,
        short_of: &'static str,
        #[source]
        source: Arc<std::io::Error>,
    },
    #[error("HAProxy (pid {pid}) is stopping")]
    Stopping { pid: u32 },
    #[error("frontend {name} not OPEN ({status})")]
    FrontendNotOpen { name: String, status: String },
    #[error("frontend {name} not found")]
    FrontendNotFound { name: String },
    #[error("backend {name} DOWN (servers up {up} < {min})")]
    BackendDown { name: String, up: u32, min: u32 },
    #[error("backend {name} not UP ({status})")]
    BackendNotUp { name: String, status: String },
    #[error("backend {name} not found")]
    BackendNotFound { name: String },
    #[error("unparsable output from HAProxy: {0}")]
    Unparsable(#[from] ParseError),
    #[error("cannot read HAProxy's show stat row of watched proxy {proxy}: {problem}")]
    UnreadableRow { proxy: String, problem: ParseError },
}

impl Unhealthy {
    /// Hard failures mean "HAProxy is gone or going": they skip the `fall` debounce once a
    /// second, immediate check confirms them. Everything else (a DOWN backend, a timeout, odd
    /// output, a permission problem) is debounced by `fall`; a local resource error is not
    /// about HAProxy at all (see [`Unhealthy::is_local`]).
    pub fn is_hard(&self) -> bool {
        matches!(
            self,
            Self::SocketMissing { .. }
                | Self::Refused { .. }
                | Self::Closed { .. }
                | Self::Io { .. }
                | Self::Stopping { .. }
        )
    }

    /// This process could not check (out of descriptors, memory or buffers): HAProxy's state
    /// is unknown, not bad.
    pub fn is_local(&self) -> bool {
        matches!(self, Self::LocalResource { .. })
    }
}

/// How long a healthy verdict is kept while every check fails for lack of a local resource.
///
/// Such a shortage is usually someone else's doing — a flood of connections to the peer port
/// eats descriptors until the peer server's limits and accept back-off shed it — and taking
/// the VIP away for it would hand the attacker an outage: every box sees the same flood.
/// Routine checks do not need a new descriptor (they run over the open session), so a
/// shortage only bites when a session must be reopened, and HAProxy's death is usually still
/// seen (the session's close frees a descriptor for the confirming check). Ten seconds rides
/// out several rounds of a 1 s accept back-off; after that an HAProxy nobody could look at
/// for so long no longer counts as healthy, and the local error counts as an ordinary
/// failure (`fall` of them make the node unhealthy).
pub const LOCAL_ERROR_HOLD: Duration = Duration::from_secs(10);

/// The step of a socket exchange that failed, for the reason text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Connect,
    Write,
    Read,
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stage::Connect => "connecting",
            Stage::Write => "sending the command",
            Stage::Read => "reading the answer",
        })
    }
}

/// The judgement of one snapshot (or one failed attempt to get it).
#[derive(Debug, Clone)]
pub enum Verdict {
    Good,
    Bad(Unhealthy),
    /// HAProxy answered but a required backend's servers have not been checked since the
    /// worker started (just after start or a reload): their `UP` is HAProxy's optimistic
    /// initial state, not a measurement. Neither good nor bad: the previous state is kept.
    Unsettled(String),
}

/// Debounced health state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthState {
    /// No verdict yet (start-up); treated as unhealthy.
    Unknown,
    Healthy,
    Unhealthy,
}

impl fmt::Display for HealthState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HealthState::Unknown => "unknown",
            HealthState::Healthy => "healthy",
            HealthState::Unhealthy => "unhealthy",
        })
    }
}

/// A change of [`HealthState`], to be logged as `from -> to` with the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub from: HealthState,
    pub to: HealthState,
    /// The failure that caused it (None when becoming healthy).
    pub reason: Option<String>,
}

/// What one observation did to the state, for logging without flooding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    None,
    Transition(Transition),
    /// Still unhealthy, but for a different reason than last time.
    NewReason(String),
    /// Healthy, but the check could not run for a local reason (a new one): the verdict is
    /// kept for now (see [`LOCAL_ERROR_HOLD`]).
    Held(String),
}

/// Rise/fall debounce over verdicts; pure, so its sequences are unit-tested.
#[derive(Debug, Clone)]
pub struct RiseFall {
    rise: u32,
    fall: u32,
    state: HealthState,
    good_run: u32,
    bad_run: u32,
    last_failure: Option<String>,
    /// Why the state is still unknown (HAProxy not settled yet), for the reason text.
    waiting_for: Option<String>,
    /// Since when checks fail for a local reason while healthy, and the last such reason.
    held: Option<(Instant, String)>,
    transitions: u64,
}

impl RiseFall {
    const NOT_CHECKED: &'static str = "not checked yet";

    /// `rise` and `fall` below 1 are treated as 1 (config validation rejects them anyway).
    pub fn new(rise: u32, fall: u32) -> Self {
        Self {
            rise: rise.max(1),
            fall: fall.max(1),
            state: HealthState::Unknown,
            good_run: 0,
            bad_run: 0,
            last_failure: None,
            waiting_for: None,
            held: None,
            transitions: 0,
        }
    }

    /// New `rise` and `fall` (a reload); the current state and runs are kept, and the next
    /// observation is judged against the new counts.
    pub fn retune(&mut self, rise: u32, fall: u32) {
        self.rise = rise.max(1);
        self.fall = fall.max(1);
    }

    pub fn state(&self) -> HealthState {
        self.state
    }

    pub fn healthy(&self) -> bool {
        self.state == HealthState::Healthy
    }

    /// How often `healthy()` changed.
    pub fn transitions(&self) -> u64 {
        self.transitions
    }

    /// Feeds one debounced observation made at `now`. `confirmed_hard` says the failure is
    /// hard and was seen twice in a row (the caller re-checks at once), so it bypasses `fall`.
    ///
    /// A local resource error while healthy keeps the state for [`LOCAL_ERROR_HOLD`] after the
    /// first of an unbroken series (neither run counter moves); past that it counts as a
    /// failure like any other. While not healthy it is an ordinary failure: an unchecked
    /// HAProxy must not become healthy.
    pub fn observe(&mut self, verdict: &Verdict, confirmed_hard: bool, now: Instant) -> Change {
        match verdict {
            Verdict::Bad(why) if why.is_local() => {
                let reason = why.to_string();
                let since = self.held.as_ref().map_or(now, |(since, _)| *since);
                let new_reason = self.held.as_ref().map(|(_, r)| r) != Some(&reason);
                self.held = Some((since, reason.clone()));
                if self.state == HealthState::Healthy
                    && now.saturating_duration_since(since) < LOCAL_ERROR_HOLD
                {
                    return if new_reason {
                        Change::Held(reason)
                    } else {
                        Change::None
                    };
                }
            }
            _ => self.held = None,
        }
        match verdict {
            Verdict::Unsettled(why) => {
                self.waiting_for = Some(why.clone());
                Change::None
            }
            Verdict::Good => {
                self.bad_run = 0;
                self.good_run = self.good_run.saturating_add(1);
                if self.state != HealthState::Healthy && self.good_run >= self.rise {
                    self.last_failure = None;
                    self.set(HealthState::Healthy, None)
                } else {
                    Change::None
                }
            }
            Verdict::Bad(why) => {
                let reason = why.to_string();
                self.good_run = 0;
                self.bad_run = self.bad_run.saturating_add(1);
                let new_reason = self.last_failure.as_deref() != Some(reason.as_str());
                self.last_failure = Some(reason.clone());
                match self.state {
                    HealthState::Healthy if confirmed_hard || self.bad_run >= self.fall => {
                        self.set(HealthState::Unhealthy, Some(reason))
                    }
                    HealthState::Healthy => Change::None,
                    HealthState::Unknown => self.set(HealthState::Unhealthy, Some(reason)),
                    HealthState::Unhealthy if new_reason => Change::NewReason(reason),
                    HealthState::Unhealthy => Change::None,
                }
            }
        }
    }

    fn set(&mut self, to: HealthState, reason: Option<String>) -> Change {
        let from = self.state;
        if (from == HealthState::Healthy) != (to == HealthState::Healthy) {
            self.transitions += 1;
        }
        self.state = to;
        Change::Transition(Transition { from, to, reason })
    }

    /// The reason shown while not healthy: the last failure, and the recovery progress. While
    /// healthy, only while a local error holds the verdict.
    pub fn reason(&self) -> Option<String> {
        if self.healthy() {
            return (self.held.as_ref()).map(|(_, why)| {
                format!(
                    "{why}; keeping the last verdict (healthy) for up to {} s",
                    LOCAL_ERROR_HOLD.as_secs()
                )
            });
        }
        let base = (self.last_failure.as_deref())
            .or(self.waiting_for.as_deref())
            .unwrap_or(Self::NOT_CHECKED);
        Some(if self.good_run > 0 {
            format!(
                "{base} (recovering: {}/{} good checks)",
                self.good_run, self.rise
            )
        } else {
            base.to_owned()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bad() -> Verdict {
        Verdict::Bad(Unhealthy::BackendDown {
            name: "be".into(),
            up: 0,
            min: 1,
        })
    }

    fn hard() -> Verdict {
        Verdict::Bad(Unhealthy::Refused { path: "/s".into() })
    }

    fn local() -> Verdict {
        Verdict::Bad(Unhealthy::LocalResource {
            path: "/s".into(),
            stage: Stage::Connect,
            short_of: "file descriptors (EMFILE: its RLIMIT_NOFILE is reached)",
            source: Arc::new(std::io::Error::from_raw_os_error(libc::EMFILE)),
        })
    }

    /// Time between two steps of [`run`].
    const STEP: Duration = Duration::from_secs(1);

    /// Runs a sequence ('g' good, 'b' bad, 'h' confirmed hard, 'u' unsettled, 'l' local
    /// resource error), one step per [`STEP`], and returns the state after each step as 'H',
    /// 'U' (unhealthy) or '?' (unknown).
    fn run(rise: u32, fall: u32, seq: &str) -> String {
        let mut rf = RiseFall::new(rise, fall);
        let start = Instant::now();
        seq.chars()
            .zip(0u32..)
            .map(|(c, step)| {
                let now = start + STEP * step;
                match c {
                    'g' => rf.observe(&Verdict::Good, false, now),
                    'b' => rf.observe(&bad(), false, now),
                    'h' => rf.observe(&hard(), true, now),
                    'l' => rf.observe(&local(), false, now),
                    _ => rf.observe(&Verdict::Unsettled("young".into()), false, now),
                };
                match rf.state() {
                    HealthState::Unknown => '?',
                    HealthState::Healthy => 'H',
                    HealthState::Unhealthy => 'U',
                }
            })
            .collect()
    }

    #[test]
    fn rise_counts_from_start() {
        assert_eq!(run(2, 2, "gg"), "?H");
        assert_eq!(run(3, 2, "ggg"), "??H");
        assert_eq!(run(1, 1, "g"), "H");
    }

    #[test]
    fn bad_at_start_is_unhealthy_at_once() {
        assert_eq!(run(2, 2, "bgg"), "UUH");
    }

    #[test]
    fn fall_needs_consecutive_bad() {
        assert_eq!(run(2, 2, "ggbgbgbb"), "?HHHHHHU");
        assert_eq!(run(2, 3, "ggbbb"), "?HHHU");
    }

    #[test]
    fn rise_needs_consecutive_good() {
        assert_eq!(run(2, 1, "ggbgbgg"), "?HUUUUH");
    }

    #[test]
    fn confirmed_hard_failure_bypasses_fall() {
        assert_eq!(run(2, 5, "ggh"), "?HU");
        assert_eq!(run(2, 5, "gghgg"), "?HUUH");
    }

    #[test]
    fn unsettled_keeps_the_previous_state_either_way() {
        assert_eq!(run(2, 2, "gguuuu"), "?HHHHH");
        assert_eq!(run(2, 2, "buuu"), "UUUU");
        assert_eq!(run(2, 2, "uuu"), "???");
        // Neither breaks a run nor extends it.
        assert_eq!(run(2, 2, "gugbub"), "??HHHU");
    }

    #[test]
    fn local_errors_keep_a_healthy_verdict_for_a_bounded_time() {
        // Held for LOCAL_ERROR_HOLD (10 steps) from the first local error, then ordinary
        // failures: `fall` (2) of them make the node unhealthy.
        assert_eq!(LOCAL_ERROR_HOLD, STEP * 10);
        assert_eq!(
            run(2, 2, &format!("gg{}", "l".repeat(12))),
            format!("?H{}U", "H".repeat(11))
        );
        // A good check ends the series: the next one is held afresh.
        let nine = "l".repeat(9);
        assert_eq!(
            run(2, 2, &format!("gg{nine}g{nine}")),
            format!("?H{}", "H".repeat(19))
        );
        // A real failure during the hold still counts.
        assert_eq!(run(2, 2, "ggllblb"), "?HHHHHU");
        // Never healthy without a check: at start-up or while unhealthy it is a failure.
        assert_eq!(run(2, 2, "lll"), "UUU");
        assert_eq!(run(2, 2, "ggbblgg"), "?HHUUUH");
        assert_eq!(run(2, 2, "ggbbglgg"), "?HHUUUUH");
    }

    #[test]
    fn a_held_verdict_says_why() {
        let mut rf = RiseFall::new(1, 1);
        let t = Instant::now();
        rf.observe(&Verdict::Good, false, t);
        let held = "cannot check HAProxy on /s (connecting): raftvip is out of file descriptors \
                    (EMFILE: its RLIMIT_NOFILE is reached); HAProxy's state is unknown";
        assert_eq!(rf.observe(&local(), false, t), Change::Held(held.into()));
        assert_eq!(rf.observe(&local(), false, t + STEP), Change::None);
        assert!(rf.healthy());
        assert_eq!(
            rf.reason().as_deref(),
            Some(format!("{held}; keeping the last verdict (healthy) for up to 10 s").as_str())
        );
        let expired = rf.observe(&local(), false, t + LOCAL_ERROR_HOLD);
        assert_eq!(
            expired,
            Change::Transition(Transition {
                from: HealthState::Healthy,
                to: HealthState::Unhealthy,
                reason: Some(held.into())
            })
        );
        rf.observe(&Verdict::Good, false, t + LOCAL_ERROR_HOLD);
        assert_eq!(rf.reason(), None);
    }

    #[test]
    fn transitions_count_changes_of_healthy_only() {
        let mut rf = RiseFall::new(1, 1);
        rf.observe(&bad(), false, Instant::now()); // unknown -> unhealthy: still not healthy
        assert_eq!(rf.transitions(), 0);
        rf.observe(&Verdict::Good, false, Instant::now());
        rf.observe(&bad(), false, Instant::now());
        assert_eq!(rf.transitions(), 2);
    }

    #[test]
    fn identical_failures_are_reported_once() {
        let mut rf = RiseFall::new(1, 1);
        let first = rf.observe(&bad(), false, Instant::now());
        assert!(matches!(
            first,
            Change::Transition(Transition {
                from: HealthState::Unknown,
                to: HealthState::Unhealthy,
                ..
            })
        ));
        assert_eq!(rf.observe(&bad(), false, Instant::now()), Change::None);
        assert_eq!(
            rf.observe(&hard(), true, Instant::now()),
            Change::NewReason("connection refused on /s: HAProxy is down".into())
        );
        assert_eq!(rf.observe(&hard(), true, Instant::now()), Change::None);
    }

    #[test]
    fn reason_shows_recovery_progress() {
        let mut rf = RiseFall::new(3, 1);
        assert_eq!(rf.reason().as_deref(), Some("not checked yet"));
        rf.observe(&bad(), false, Instant::now());
        rf.observe(&Verdict::Good, false, Instant::now());
        assert_eq!(
            rf.reason().as_deref(),
            Some("backend be DOWN (servers up 0 < 1) (recovering: 1/3 good checks)")
        );
        rf.observe(&Verdict::Good, false, Instant::now());
        rf.observe(&Verdict::Good, false, Instant::now());
        assert_eq!(rf.reason(), None);
    }

    #[test]
    fn every_reason_reads_well() {
        let p = || PathBuf::from("/run/haproxy/admin.sock");
        let cases: Vec<(Unhealthy, &str)> = vec![
            (
                Unhealthy::SocketMissing { path: p() },
                "stats socket /run/haproxy/admin.sock does not exist (HAProxy not running, or no `stats socket` line in haproxy.cfg)",
            ),
            (
                Unhealthy::Refused { path: p() },
                "connection refused on /run/haproxy/admin.sock: HAProxy is down",
            ),
            (
                Unhealthy::PermissionDenied { path: p() },
                "permission denied on /run/haproxy/admin.sock: give raftvip's user access to the stats socket (e.g. `mode 660 group raftvip`)",
            ),
            (
                Unhealthy::Timeout { path: p(), stage: Stage::Read, after_ms: 250 },
                "no answer on /run/haproxy/admin.sock within 250 ms (reading the answer): HAProxy is wedged or overloaded",
            ),
            (
                Unhealthy::Closed { path: p() },
                "HAProxy closed /run/haproxy/admin.sock without answering",
            ),
            (
                Unhealthy::Io {
                    path: p(),
                    stage: Stage::Read,
                    source: Arc::new(std::io::Error::from(std::io::ErrorKind::ConnectionReset)),
                },
                "talking to /run/haproxy/admin.sock failed (reading the answer): connection reset",
            ),
            (
                Unhealthy::LocalResource {
                    path: p(),
                    stage: Stage::Connect,
                    short_of: "memory (ENOMEM)",
                    source: Arc::new(std::io::Error::from_raw_os_error(libc::ENOMEM)),
                },
                "cannot check HAProxy on /run/haproxy/admin.sock (connecting): raftvip is out of memory (ENOMEM); HAProxy's state is unknown",
            ),
            (Unhealthy::Stopping { pid: 42 }, "HAProxy (pid 42) is stopping"),
            (
                Unhealthy::FrontendNotOpen { name: "fe".into(), status: "PAUSED".into() },
                "frontend fe not OPEN (PAUSED)",
            ),
            (
                Unhealthy::FrontendNotFound { name: "fe".into() },
                "frontend fe not found",
            ),
            (
                Unhealthy::BackendDown { name: "be".into(), up: 1, min: 2 },
                "backend be DOWN (servers up 1 < 2)",
            ),
            (
                Unhealthy::BackendNotUp { name: "be".into(), status: "DOWN".into() },
                "backend be not UP (DOWN)",
            ),
            (
                Unhealthy::BackendNotFound { name: "be".into() },
                "backend be not found",
            ),
            (
                Unhealthy::Unparsable(ParseError::MissingInfoField("Pid")),
                "unparsable output from HAProxy: show info has no `Pid` field",
            ),
            (
                Unhealthy::UnreadableRow {
                    proxy: "be".into(),
                    problem: ParseError::FieldCount { line: 3, got: 130, want: 129 },
                },
                "cannot read HAProxy's show stat row of watched proxy be: show stat line 3 has 130 fields, the header has 129",
            ),
        ];
        for (reason, text) in cases {
            assert_eq!(reason.to_string(), text);
        }
    }
}
