//! systemd as a safety net (`Type=notify`, `WatchdogSec=`): readiness, a one-line status,
//! "stopping", and watchdog pings that prove the supervisor's loop still turns.
//!
//! - `READY=1` once the node has *joined its cluster*, meaning: Raft runs with the cluster's
//!   membership applied (every founding node initialises the configured membership at start,
//!   so this holds right after start-up unless the store or Raft failed), or it waits to be
//!   added to a running cluster (`crate::membership`: the operator reloads the members' lists
//!   next, which may take longer than systemd's start timeout). Not "knows a leader": a node
//!   started alone, or in a cluster whose HAProxys are all down, has no leader, and a unit
//!   that never became ready would be killed and restarted in a loop for no benefit.
//! - `STATUS=` role, term, leader, and whether this node holds the VIPs (with the
//!   supervisor's reason), sent when it changes (`systemctl status raftvip` shows it).
//! - `STOPPING=1` when a stop begins (signal or fatal error).
//! - `WATCHDOG=1` every half `WATCHDOG_USEC`, but only if the supervisor's loop has run
//!   since the previous ping ([`SupervisorState::iterations`]). A supervisor wedged on a
//!   future that never completes, or a runtime blocked by a stuck call, stops the pings, and
//!   systemd kills the process (SIGABRT) — its `ExecStopPost=raftvip release` then removes
//!   the VIPs. The supervisor turns at least once per `reconcile_ms`, so the watchdog period
//!   must be longer than twice that (warned at start otherwise).
//!
//! Without `NOTIFY_SOCKET` (not under systemd) nothing here runs. Uses the sd-notify crate:
//! the protocol is one datagram on a unix socket, but the crate also handles abstract socket
//! names and `WATCHDOG_PID`.

use std::time::Duration;

use openraft::ServerState;
use sd_notify::NotifyState;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::raft::typ::RaftMetrics;
use crate::supervisor::SupervisorState;

/// How often the status line is rebuilt from Raft's metrics (which change with every
/// heartbeat, too often to follow one by one); supervisor changes are sent at once.
const STATUS_EVERY: Duration = Duration::from_millis(250);

/// Whether this process runs under a service manager that listens for notifications.
fn enabled() -> bool {
    std::env::var_os("NOTIFY_SOCKET").is_some()
}

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "cannot notify systemd (NOTIFY_SOCKET)");
    }
}

/// Tells systemd that the service is stopping (no-op outside systemd).
pub fn stopping() {
    if enabled() {
        send(&[NotifyState::Stopping]);
    }
}

/// The `STATUS=` line.
pub fn status_line(m: &RaftMetrics, s: &SupervisorState) -> String {
    let role = match m.state {
        ServerState::Leader => "leader",
        ServerState::Candidate => "candidate",
        ServerState::Follower => "follower",
        ServerState::Learner => "learner",
        ServerState::Shutdown => "shut down",
    };
    let leader = m
        .current_leader
        .map_or_else(|| "none".to_owned(), |id| format!("node {id}"));
    let vips = if s.holds_vips {
        "holds the VIPs"
    } else {
        "does not hold the VIPs"
    };
    format!(
        "{role}, term {}, leader {leader}; {vips} ({})",
        m.current_term, s.reason
    )
}

/// Pings only for a supervisor loop that has turned since the previous ping.
#[derive(Debug, Default)]
struct Heartbeat {
    last: Option<u64>,
}

impl Heartbeat {
    /// Whether to ping, given the supervisor's loop count now.
    fn alive(&mut self, iterations: u64) -> bool {
        let turned = self.last != Some(iterations);
        self.last = Some(iterations);
        turned
    }
}

/// Joined: Raft runs, with a membership applied or waiting to be added (see the module docs;
/// the store initialises the membership before this runs, unless the box waits to be added).
fn joined(m: &RaftMetrics) -> bool {
    m.running_state.is_ok()
}

/// Sends readiness, status and watchdog pings until `stop`. `reconcile` is the supervisor's
/// longest idle period (a warning if the watchdog is shorter than twice it).
pub async fn run(
    metrics: watch::Receiver<RaftMetrics>,
    mut supervisor: watch::Receiver<SupervisorState>,
    reconcile: Duration,
    stop: CancellationToken,
) {
    if !enabled() {
        return;
    }
    let watchdog = sd_notify::watchdog_enabled().map(|usec| usec / 2);
    if let Some(every) = watchdog {
        if every <= reconcile {
            tracing::warn!(
                watchdog_ms = every.as_millis() as u64 * 2,
                reconcile_ms = reconcile.as_millis() as u64,
                "WatchdogSec= is shorter than twice timing.reconcile_ms: an idle supervisor may miss a ping and be killed"
            );
        }
    }
    let mut ping = crate::clock::every(watchdog.unwrap_or(Duration::MAX / 4));
    let mut status_tick = tokio::time::interval(STATUS_EVERY);
    let mut ready = false;
    let mut last_status = String::new();
    let mut heartbeat = Heartbeat::default();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ping.tick(), if watchdog.is_some() && ready => {
                if heartbeat.alive(supervisor.borrow().iterations) {
                    send(&[NotifyState::Watchdog]);
                } else {
                    tracing::error!("the supervisor loop has not run since the last watchdog ping: withholding it (systemd kills a wedged raftvip)");
                }
            }
            _ = status_tick.tick() => {}
            changed = supervisor.changed() => if changed.is_err() { return },
        }
        let m = metrics.borrow().clone();
        let line = status_line(&m, &supervisor.borrow_and_update());
        if line == last_status && ready {
            continue;
        }
        if !ready && joined(&m) {
            ready = true;
            heartbeat.alive(supervisor.borrow().iterations);
            // The next ping a full period after this one (READY carries a ping).
            ping.reset();
            tracing::info!("joined the cluster: telling systemd the service is ready");
            send(&[
                NotifyState::Ready,
                NotifyState::Status(&line),
                NotifyState::Watchdog,
            ]);
        } else if ready {
            send(&[NotifyState::Status(&line)]);
        }
        last_status = line;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::supervisor::Reason;

    #[test]
    fn status_line_names_role_term_leader_and_whether_this_node_holds() {
        let mut m = RaftMetrics::new_initial(2);
        m.state = ServerState::Leader;
        m.current_term = 7;
        m.current_leader = Some(2);
        let mut s = SupervisorState {
            holds_vips: true,
            reason: Reason::LeaderWithQuorum,
            ..Default::default()
        };
        assert_eq!(
            status_line(&m, &s),
            "leader, term 7, leader node 2; holds the VIPs (leader with quorum and healthy HAProxy)"
        );
        m.state = ServerState::Follower;
        m.current_leader = None;
        s.holds_vips = false;
        s.reason = Reason::NotLeader;
        assert_eq!(
            status_line(&m, &s),
            "follower, term 7, leader none; does not hold the VIPs (not the Raft leader)"
        );
    }

    #[test]
    fn a_supervisor_loop_that_stopped_turning_gets_no_ping() {
        let mut heartbeat = Heartbeat::default();
        assert!(heartbeat.alive(3), "first look");
        assert!(heartbeat.alive(4));
        assert!(heartbeat.alive(90));
        assert!(!heartbeat.alive(90), "no turn since the last ping");
        assert!(!heartbeat.alive(90));
        assert!(heartbeat.alive(91), "turning again");
    }
}
