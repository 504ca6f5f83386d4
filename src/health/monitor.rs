//! The async driver: checks HAProxy, watches the open session, debounces, publishes.
//!
//! Checks run over the open [`Session`] (no new descriptor per check, see [`super::haproxy`]).
//! Two triggers run one: the poll interval, and the session closing. HAProxy closes the
//! session the moment its worker dies, so a dead HAProxy is caught within a few milliseconds,
//! not at the next poll. A closed session is not by itself a failure: it also closes when an
//! operator's `stats timeout` or `shutdown session` ends it. The check on a new session
//! decides — a refusing or vanished socket is hard and counts at once; an answering HAProxy
//! means "carry on with the new session".
//!
//! Reloads: the session talks to one worker. When that worker reports `Stopping` (the master
//! told it to leave after a reload), the session is dropped at once — keeping it would keep
//! the old worker alive (HAProxy waits for its CLI sessions) and watch the wrong process — and
//! the check is repeated on a new session, which the new worker answers.

use std::time::Duration;

use tokio::time::Instant;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::haproxy::{OddRow, Probe, Session};
use super::{Change, Health, RiseFall, Verdict};
use crate::clock::now_unix_ms;
use crate::config::HaproxyConfig;
use crate::log_limit::LogLimit;

/// Starts the HAProxy health monitor on the current Tokio runtime (it must be called from
/// within one) and returns its verdicts.
///
/// The channel notifies receivers only when `healthy` or `reason` changes; the counters
/// (`checks`, `last_check_unix_ms`, `check_latency_us`) are updated in place on every check
/// and visible through `borrow()`. The task ends when `cancel` fires or every receiver is
/// dropped.
pub fn spawn_haproxy_monitor(
    config: HaproxyConfig,
    cancel: CancellationToken,
) -> watch::Receiver<Health> {
    spawn_reloadable_haproxy_monitor(watch::channel(config).1, cancel)
}

/// [`spawn_haproxy_monitor`] whose settings follow `settings` (a reload): a new socket path is
/// used from the next check on, a new poll interval from the next tick, new `rise` / `fall`
/// from the next verdict; the verdict itself is kept.
pub fn spawn_reloadable_haproxy_monitor(
    mut settings: watch::Receiver<HaproxyConfig>,
    cancel: CancellationToken,
) -> watch::Receiver<Health> {
    let config = settings.borrow_and_update().clone();
    let (tx, rx) = watch::channel(Health::initial());
    let monitor = Monitor {
        rise_fall: RiseFall::new(config.rise, config.fall),
        config,
        session: None,
        session_opened: Instant::now(),
        worker: None,
        ignored_log: LogLimit::new(IGNORED_ROWS_LOG_EVERY),
        tx,
        checks: 0,
    };
    tokio::spawn(monitor.run(settings, cancel));
    rx
}

/// The poll timer of `config`; a late tick is delayed, not bunched.
fn poll_timer(config: &HaproxyConfig) -> crate::clock::Every {
    crate::clock::every(Duration::from_millis(config.poll_interval_ms.max(1)))
}

/// A session HAProxy closes sooner than this after it opened (say, an operator's tiny
/// `stats timeout` where `set timeout cli` is refused) is still followed by an immediate
/// check, but the session that check opens is not kept: the next poll opens the next one, so
/// a session that never stays open cannot spin the monitor in a loop of checks. One second is
/// far above a healthy session's life of minutes to days, and far below any `stats timeout`
/// anyone sets on purpose.
const MIN_SESSION_LIFE: Duration = Duration::from_secs(1);

/// At most one log line this often about `show stat` rows that could not be read and are
/// ignored (they belong to proxies raftvip does not watch): such a row comes back on every
/// poll, ten times a second by default, and one line a minute says all there is to say.
const IGNORED_ROWS_LOG_EVERY: Duration = Duration::from_secs(60);

/// What woke the monitor: its poll timer, or the open session closing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wakeup {
    Poll,
    SessionClosed,
}

struct Monitor {
    config: HaproxyConfig,
    rise_fall: RiseFall,
    /// The open session, if HAProxy answered; None while it is down.
    session: Option<Session>,
    /// When the current (or last) session opened.
    session_opened: Instant,
    /// The last worker a session talked to, to log reloads.
    worker: Option<u32>,
    ignored_log: LogLimit,
    tx: watch::Sender<Health>,
    checks: u64,
}

/// Resolves when the session closes; never while there is none.
async fn session_closed(session: &mut Option<Session>) {
    match session {
        Some(s) => s.closed().await,
        None => std::future::pending().await,
    }
}

impl Monitor {
    async fn run(
        mut self,
        mut settings: watch::Receiver<HaproxyConfig>,
        cancel: CancellationToken,
    ) {
        let mut tick = poll_timer(&self.config);
        let tx = self.tx.clone();
        let mut settings_open = true;
        loop {
            let wakeup = tokio::select! {
                biased;
                () = cancel.cancelled() => break,
                () = tx.closed() => break,
                changed = settings.changed(), if settings_open => {
                    settings_open = changed.is_ok();
                    if settings_open {
                        let new = settings.borrow_and_update().clone();
                        if new.poll_interval_ms != self.config.poll_interval_ms {
                            tick = poll_timer(&new);
                        }
                        self.reconfigure(new);
                    }
                    continue;
                }
                () = session_closed(&mut self.session) => Wakeup::SessionClosed,
                _ = tick.tick() => Wakeup::Poll,
            };
            let keep = match wakeup {
                Wakeup::Poll => true,
                Wakeup::SessionClosed => {
                    self.session = None;
                    let keep = self.session_opened.elapsed() >= MIN_SESSION_LIFE;
                    debug!(
                        pid = self.worker,
                        reopen = keep,
                        "HAProxy closed the session; checking at once"
                    );
                    keep
                }
            };
            tokio::select! {
                biased;
                () = cancel.cancelled() => break,
                () = self.check_and_publish(keep) => {}
            }
        }
        debug!("HAProxy health monitor stopped");
    }

    /// Takes reloaded settings: a session on another socket is dropped, so the next check
    /// opens one on the new path.
    fn reconfigure(&mut self, new: HaproxyConfig) {
        if new.stats_socket != self.config.stats_socket {
            self.session = None;
        }
        self.rise_fall.retune(new.rise, new.fall);
        info!(socket = %new.stats_socket.display(), "HAProxy health settings reloaded");
        self.config = new;
    }

    /// One check: on the open session if there is one and its worker is not stopping, else
    /// on a new session, kept if `keep` and its worker is not stopping.
    async fn probe(&mut self, keep: bool) -> Probe {
        self.checks += 1;
        if let Some(session) = self.session.as_mut() {
            match session.check(&self.config).await {
                Ok(probe) if probe.info.is_some_and(|i| !i.stopping) => return probe,
                Ok(probe) => debug!(
                    pid = session.pid(),
                    verdict = ?probe.verdict,
                    "the session's worker is stopping or unreadable; checking on a new session"
                ),
                Err(why) => debug!(
                    pid = session.pid(),
                    reason = %why,
                    "the session failed; checking on a new session"
                ),
            }
            // Dropped before the new one opens: this frees its descriptor for the new one and
            // lets an old worker exit.
            self.session = None;
        }
        let (probe, session) = Session::open(&self.config).await;
        if let Some(session) = session.filter(|_| keep) {
            if let Some(old) = self.worker.filter(|old| *old != session.pid()) {
                info!(
                    old_pid = old,
                    new_pid = session.pid(),
                    "HAProxy reloaded; watching the new worker"
                );
            }
            debug!(pid = session.pid(), "session open");
            self.worker = Some(session.pid());
            self.session = Some(session);
            self.session_opened = Instant::now();
        }
        probe
    }

    async fn check_and_publish(&mut self, keep: bool) {
        let mut probe = self.probe(keep).await;
        let mut confirmed_hard = false;
        if let Verdict::Bad(first) = &probe.verdict {
            if first.is_hard() {
                // Confirm before bypassing `fall`: a hard failure seen once could be a race
                // with a reload; seen twice in a row it is real. The re-check replaces the
                // first result either way.
                debug!(reason = %first, "hard failure; confirming with an immediate re-check");
                probe = self.probe(keep).await;
                confirmed_hard = matches!(&probe.verdict, Verdict::Bad(w) if w.is_hard());
            }
        }

        let now = std::time::Instant::now();
        match self.rise_fall.observe(&probe.verdict, confirmed_hard, now) {
            Change::None => {}
            Change::Transition(t) => info!(
                from = %t.from,
                to = %t.to,
                reason = t.reason.as_deref().unwrap_or("all checks pass"),
                "HAProxy health {} -> {}",
                t.from,
                t.to
            ),
            Change::NewReason(reason) => {
                info!(%reason, "HAProxy still unhealthy, for a new reason")
            }
            Change::Held(reason) => warn!(
                %reason,
                hold_s = super::LOCAL_ERROR_HOLD.as_secs(),
                "cannot check HAProxy for a local reason; keeping the healthy verdict for now"
            ),
        }
        if let Verdict::Unsettled(why) = &probe.verdict {
            debug!(%why, "HAProxy not settled yet; keeping the previous verdict");
        }
        if let Some(first) = probe.ignored.first() {
            if let Some(suppressed) = self.ignored_log.allow(now) {
                log_ignored(first, probe.ignored.len(), suppressed);
            }
        }
        self.publish(&probe);
    }

    fn publish(&self, probe: &Probe) {
        let next = Health {
            healthy: self.rise_fall.healthy(),
            reason: self.rise_fall.reason(),
            last_check_unix_ms: now_unix_ms(),
            check_latency_us: u64::try_from(probe.latency.as_micros()).unwrap_or(u64::MAX),
            transitions: self.rise_fall.transitions(),
            checks: self.checks,
        };
        self.tx.send_if_modified(|current| {
            let notify = current.healthy != next.healthy || current.reason != next.reason;
            *current = next;
            notify
        });
    }
}

fn log_ignored(first: &OddRow, rows: usize, suppressed: u64) {
    warn!(
        proxy = %first.pxname,
        svname = %first.svname,
        problem = %first.problem,
        rows,
        checks_not_logged = suppressed,
        "ignoring show stat rows raftvip cannot read: they belong to proxies it does not watch \
         (logged at most once a minute)"
    );
}
