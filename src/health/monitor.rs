//! The async driver: polls HAProxy, watches the open session, debounces, publishes.
//!
//! Two triggers run a check: the poll interval, and the watch [`Session`] closing. HAProxy
//! closes that session the moment its worker dies, so a dead HAProxy is caught within a few
//! milliseconds, not at the next poll. A closed session is not by itself a failure: it also
//! closes when an old worker exits after a master-worker reload, or when an operator's
//! `stats timeout` ends it. The fresh check decides — a refusing or vanished socket is hard
//! and counts at once; an answering HAProxy means "reopen the session and carry on".
//!
//! Reloads: every check learns the answering worker's `Pid`. When it differs from the
//! session's, the session is dropped and reopened on the new worker at once — keeping it would
//! keep the old worker alive (HAProxy waits for its CLI sessions) and watch the wrong process.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use super::haproxy::{check, Probe, Session};
use super::{Change, Health, RiseFall, Verdict};
use crate::config::HaproxyConfig;

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
    let (tx, rx) = watch::channel(Health::initial());
    let monitor = Monitor {
        timeout: Duration::from_millis(config.timeout_ms),
        rise_fall: RiseFall::new(config.rise, config.fall),
        config,
        session: None,
        session_opened: Instant::now(),
        short_lived: false,
        tx,
        checks: 0,
    };
    tokio::spawn(monitor.run(cancel));
    rx
}

/// A watch session HAProxy closes sooner than this after it opened (say, an operator's tiny
/// `stats timeout` where `set timeout cli` is refused) is reopened at the next poll rather than
/// at once, so a session that never stays open cannot spin the monitor in a loop of checks.
/// One second is far above a healthy session's life of minutes to days, and far below any
/// `stats timeout` anyone sets on purpose.
const MIN_SESSION_LIFE: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cause {
    Poll,
    SessionClosed,
}

struct Monitor {
    config: HaproxyConfig,
    timeout: Duration,
    rise_fall: RiseFall,
    /// The open watch session, if HAProxy answered; None while it is down.
    session: Option<Session>,
    /// When the current (or last) session opened.
    session_opened: Instant,
    /// The last session closed before [`MIN_SESSION_LIFE`]: reopen only on a poll.
    short_lived: bool,
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
    async fn run(mut self, cancel: CancellationToken) {
        let period = Duration::from_millis(self.config.poll_interval_ms.max(1));
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let tx = self.tx.clone();
        loop {
            let cause = tokio::select! {
                biased;
                () = cancel.cancelled() => break,
                () = tx.closed() => break,
                () = session_closed(&mut self.session) => Cause::SessionClosed,
                _ = tick.tick() => Cause::Poll,
            };
            if cause == Cause::SessionClosed {
                debug!(
                    pid = self.session.as_ref().map(Session::pid),
                    "HAProxy closed the watch session; checking at once"
                );
                self.session = None;
                self.short_lived = self.session_opened.elapsed() < MIN_SESSION_LIFE;
            }
            tokio::select! {
                biased;
                () = cancel.cancelled() => break,
                () = self.check_and_publish(cause) => {}
            }
        }
        debug!("HAProxy health monitor stopped");
    }

    async fn probe(&mut self) -> Probe {
        self.checks += 1;
        check(&self.config).await
    }

    async fn check_and_publish(&mut self, cause: Cause) {
        let mut probe = self.probe().await;
        let mut confirmed_hard = false;
        if let Verdict::Bad(first) = &probe.verdict {
            if first.is_hard() {
                // Confirm before bypassing `fall`: a hard failure seen once could be a race
                // with a reload; seen twice in a row it is real. The re-check replaces the
                // first result either way.
                debug!(reason = %first, "hard failure; confirming with an immediate re-check");
                probe = self.probe().await;
                confirmed_hard = matches!(&probe.verdict, Verdict::Bad(w) if w.is_hard());
            }
        }

        match self.rise_fall.observe(&probe.verdict, confirmed_hard) {
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
        }
        if let Verdict::Unsettled(why) = &probe.verdict {
            debug!(%why, "HAProxy not settled yet; keeping the previous verdict");
        }

        // Publish first: opening a session may take up to the timeout.
        self.publish(&probe);
        if cause == Cause::Poll || !self.short_lived {
            self.follow_worker(&probe).await;
        }
    }

    /// Keeps the watch session on the worker that answers the socket now.
    async fn follow_worker(&mut self, probe: &Probe) {
        let Some(info) = probe.info.filter(|i| !i.stopping) else {
            if matches!(&probe.verdict, Verdict::Bad(w) if w.is_hard()) {
                self.session = None;
            }
            return;
        };
        let old = self.session.as_ref().map(Session::pid);
        if old == Some(info.pid) {
            return;
        }
        if let Some(old) = old {
            info!(
                old_pid = old,
                new_pid = info.pid,
                "HAProxy reloaded; watching the new worker"
            );
        }
        // Drop first: the old session holds the old worker alive.
        self.session = None;
        match Session::open(&self.config.stats_socket, self.timeout).await {
            Ok(session) => {
                debug!(pid = session.pid(), "watch session open");
                self.session = Some(session);
                self.session_opened = Instant::now();
                self.short_lived = false;
            }
            Err(why) => {
                debug!(reason = %why, "could not open the watch session; retrying at the next poll")
            }
        }
    }

    fn publish(&self, probe: &Probe) {
        let next = Health {
            healthy: self.rise_fall.healthy(),
            reason: self.rise_fall.reason(),
            last_check_unix_ms: unix_ms(),
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

/// Wall-clock now in ms since the Unix epoch (0 if the clock is before it).
pub(crate) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
