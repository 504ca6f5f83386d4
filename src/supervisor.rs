//! The one place where Raft role, quorum lease, HAProxy health and operator intent meet.
//!
//! [`decide`] is pure: from a snapshot of [`Inputs`] it says whether this node holds the VIPs,
//! whether it may stand in elections, and whether it must hand leadership over. The
//! [`Supervisor`] driver gathers inputs (Raft metrics, health, replicated maintenance flags,
//! VIP events, the fence deadline), calls `decide` and executes the difference. Keeping the
//! rule in one function is what makes "exactly one holder" reviewable:
//!
//! hold ⇔ leader ∧ quorum acknowledged within `fence_ms` ∧ healthy ∧ VIPs bindable ∧ ¬witness.
//!
//! Stopping or maintenance make a leader hand over: it keeps the VIPs (still healthy) until it
//! votes for its successor and steps down, so a planned handover has no gap nobody serves.
//!
//! The fence is a deadline, not a poll: quorum-ack instant + fence. openraft measures the ack
//! from the *send* time of the heartbeat a quorum answered, and no voter that answered it grants
//! a vote until `election_timeout_max` after receiving it, so dropping the VIPs at
//! `ack + fence_ms` (< `election_timeout_max` − slack, enforced by check-config) means the
//! old holder is gone before a new leader can exist.

use std::sync::Arc;
use std::time::Duration;

use openraft::ServerState;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::notify::{Event, HookContext, Notifier};
use crate::peer::Contacts;
use crate::raft::typ::{Raft, RaftMetrics};
use crate::raft::{ClusterState, NodeId};
use crate::status::{FailoverHistogram, HealthStatus};
use crate::vip::VipHolder;

/// Everything the decision depends on, captured at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inputs {
    pub witness: bool,
    pub leader: bool,
    /// Time since a quorum last acknowledged this leader (None: never, or not leader).
    pub quorum_ack_age: Option<Duration>,
    pub fence: Duration,
    pub healthy: bool,
    pub maintenance: bool,
    pub stopping: bool,
    /// Every VIP's interface could take it (present, up) and no add was refused (EPERM):
    /// only a box that can serve may lead.
    pub vips_bindable: bool,
}

/// What this node should be doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub hold_vips: bool,
    /// Stand in elections (a node always votes).
    pub elect: bool,
    /// Keep sending heartbeats as leader: off while handing over, so followers stop
    /// refreshing a lease the leader no longer wants.
    pub heartbeat: bool,
    /// Leader that must not lead: ask a healthy peer to take over now.
    pub hand_over: bool,
    pub reason: Reason,
}

/// Why the decision is what it is; shown in status and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    Witness,
    Stopping,
    Maintenance,
    Unhealthy,
    VipUnbindable,
    NotLeader,
    QuorumLost,
    LeaderWithQuorum,
    HandingOver,
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Reason::Witness => "witness: votes, never leads",
            Reason::Stopping => "stopping",
            Reason::Maintenance => "in maintenance",
            Reason::Unhealthy => "HAProxy unhealthy",
            Reason::VipUnbindable => "a VIP cannot be bound here (see the VIP errors)",
            Reason::NotLeader => "not the Raft leader",
            Reason::QuorumLost => "no quorum acknowledgement within the fence",
            Reason::LeaderWithQuorum => "leader with quorum and healthy HAProxy",
            Reason::HandingOver => "planned handover: holding until the successor is elected",
        })
    }
}

/// The rule. Pure, total, and tested by the table below.
pub fn decide(i: &Inputs) -> Decision {
    let eligible_reason = if i.witness {
        Some(Reason::Witness)
    } else if i.stopping {
        Some(Reason::Stopping)
    } else if i.maintenance {
        Some(Reason::Maintenance)
    } else if !i.healthy {
        Some(Reason::Unhealthy)
    } else if !i.vips_bindable {
        Some(Reason::VipUnbindable)
    } else {
        None
    };
    let eligible = eligible_reason.is_none();
    let acked = i.quorum_ack_age.is_some_and(|age| age <= i.fence);
    // A planned handover (stop, maintenance) with HAProxy still serving keeps the VIPs until
    // this leader steps down, which it does when it votes for its successor — before the
    // successor can bind them. The fence still bounds it: heartbeats are off meanwhile.
    let planned_handover = i.leader
        && acked
        && i.healthy
        && i.vips_bindable
        && matches!(
            eligible_reason,
            Some(Reason::Stopping | Reason::Maintenance)
        );
    let reason = match (eligible_reason, i.leader, acked) {
        _ if planned_handover => Reason::HandingOver,
        (Some(r), _, _) => r,
        (None, false, _) => Reason::NotLeader,
        (None, true, false) => Reason::QuorumLost,
        (None, true, true) => Reason::LeaderWithQuorum,
    };
    Decision {
        hold_vips: matches!(reason, Reason::LeaderWithQuorum | Reason::HandingOver),
        elect: eligible,
        heartbeat: eligible || !i.leader,
        hand_over: i.leader && !eligible,
        reason,
    }
}

/// What the supervisor needs from a health verdict.
pub trait HealthVerdict: Send + Sync + 'static {
    fn is_healthy(&self) -> bool;
    /// The verdict as shown in status (None: no health gate configured).
    fn status(&self) -> Option<HealthStatus>;
}

/// What the supervisor asks its peers.
pub trait Peers: Send + Sync + 'static {
    /// "Start an election now if you may lead": asks peers (not `me`) one by one; returns the
    /// id of the first that accepted.
    fn hand_over(&self, me: NodeId) -> impl std::future::Future<Output = Option<NodeId>> + Send;
    /// "Have you lost the leader too?": true if a majority, `me` included, says yes.
    fn pre_vote(&self, me: NodeId) -> impl std::future::Future<Output = bool> + Send;
}

/// Live view of the supervisor, for status and metrics.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SupervisorState {
    pub holds_vips: bool,
    pub elect: bool,
    pub reason: Reason,
    pub handovers: u64,
    pub fence_releases: u64,
    pub leader_changes: u64,
    /// Turns of the supervisor's loop, for the systemd watchdog (a count that stops means a
    /// wedged supervisor). Bumped without waking watchers.
    #[serde(skip)]
    pub iterations: u64,
    /// Takeovers of the VIPs from another leader, timed by [`failover_duration`].
    pub failover_duration: FailoverHistogram,
}

impl Default for SupervisorState {
    fn default() -> Self {
        Self {
            holds_vips: false,
            elect: false,
            reason: Reason::NotLeader,
            handovers: 0,
            fence_releases: 0,
            leader_changes: 0,
            iterations: 0,
            failover_duration: FailoverHistogram::default(),
        }
    }
}

/// Executes [`decide`] against the real world.
pub struct Supervisor<V: ?Sized, H, Hl> {
    node_id: NodeId,
    witness: bool,
    fence: Duration,
    reconcile_every: Duration,
    raft: Raft,
    health: watch::Receiver<Hl>,
    cluster: watch::Receiver<ClusterState>,
    vips: Arc<V>,
    peers: Arc<H>,
    contacts: Arc<Contacts>,
    state: watch::Sender<SupervisorState>,
    /// openraft's own election timer is used only by a single-voter cluster; otherwise the
    /// supervisor runs elections itself, after a pre-vote.
    single_voter: bool,
    /// openraft refuses votes for this long after a heartbeat (its leader lease).
    lease: Duration,
    election_timeout: std::ops::Range<u64>,
    /// Last (role, leader) seen, for transition logs.
    last_seen: Option<(ServerState, Option<NodeId>)>,
    notifier: Notifier,
    raft_failed: bool,
    /// When this node last stopped holding the VIPs, so that regaining them without another
    /// leader in between is not timed as a failover.
    released_at: Option<std::time::Instant>,
}

impl<V: VipHolder + ?Sized, H: Peers, Hl: HealthVerdict> Supervisor<V, H, Hl> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        config: &Config,
        raft: Raft,
        health: watch::Receiver<Hl>,
        cluster: watch::Receiver<ClusterState>,
        vips: Arc<V>,
        peers: Arc<H>,
        contacts: Arc<Contacts>,
        state: watch::Sender<SupervisorState>,
    ) -> Self {
        let [et_min, et_max] = config.timing.election_timeout_ms;
        Self {
            node_id: config.node_id,
            witness: config.is_witness(),
            fence: config.timing.fence(),
            reconcile_every: config.timing.reconcile(),
            raft,
            health,
            cluster,
            vips,
            peers,
            contacts,
            state,
            single_voter: config.peers.len() == 1,
            lease: Duration::from_millis(et_max),
            election_timeout: et_min..et_max,
            last_seen: None,
            notifier: Notifier::new(config),
            raft_failed: false,
            released_at: None,
        }
    }

    /// Runs until `stop` is cancelled; then, if leader, hands over (keeping the VIPs until it
    /// steps down, or its fence runs out) before returning. The VIPs are released on return.
    pub async fn run(mut self, stop: CancellationToken) {
        let mut metrics = self.raft.metrics();
        let mut applied: Option<Decision> = None;
        let mut ack_instant: Option<Instant> = None;
        let mut reconcile = tokio::time::interval(self.reconcile_every);
        reconcile.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // One handover attempt per episode of "leader that must not lead".
        let mut hand_over: Option<tokio::task::JoinHandle<Option<NodeId>>> = None;
        let mut handed_over_to: Option<Option<NodeId>> = None;
        let mut stopping = false;
        // Set when this wake-up brought a new metrics report (changed() marks it seen).
        let mut fresh_metrics = false;
        // Election timer (multi-voter clusters): an election is due `lease + timeout` after
        // the later of the last accepted leader append and our last attempt.
        let mut last_attempt = Instant::now();
        let mut timeout = self.random_election_timeout();
        let mut pre_vote: Option<tokio::task::JoinHandle<bool>> = None;
        // A health source that stopped reporting is a bug; fail safe: count as unhealthy.
        let mut health_lost = false;
        // Whether the VIPs could be bound; a closed source keeps its last word.
        let mut unbindable = self.vips.unbindable();
        let mut unbindable_open = true;
        // Every node reports its state at start, as keepalived does: BACKUP until it holds.
        self.fire(Event::Backup, Reason::NotLeader);

        loop {
            let fence_deadline = ack_instant.map(|at| at + self.fence);
            let holding = applied.is_some_and(|d| d.hold_vips);
            let standing = !self.single_voter
                && applied.is_some_and(|d| d.elect)
                && self.raft.metrics().borrow().state != ServerState::Leader;
            let election_due = self.election_due(last_attempt, timeout);
            tokio::select! {
                biased;
                _ = stop.cancelled(), if !stopping => stopping = true,
                result = async { hand_over.as_mut().expect("guarded").await }, if hand_over.is_some() => {
                    hand_over = None;
                    handed_over_to = Some(result.ok().flatten());
                }
                changed = metrics.changed() => {
                    if changed.is_err() { break }
                    fresh_metrics = true;
                }
                // Wake exactly when the fence expires, so a cut-off leader lets go on time.
                _ = sleep_until_opt(fence_deadline), if holding => {},
                changed = self.health.changed(), if !health_lost => if changed.is_err() {
                    tracing::error!("health monitor stopped reporting: treating this node as unhealthy");
                    health_lost = true;
                },
                changed = self.cluster.changed() => if changed.is_err() { break },
                changed = unbindable.changed(), if unbindable_open => match changed {
                    Err(_) => unbindable_open = false,
                    Ok(()) => match unbindable.borrow().as_deref() {
                        Some(why) => tracing::warn!(%why, "this box cannot serve its VIPs: not eligible to lead"),
                        None => tracing::info!("every VIP can be bound again: eligible to lead"),
                    },
                },
                // Election timer: pre-vote first, so a node that is merely cut off never
                // burns a term.
                _ = tokio::time::sleep_until(election_due), if standing && pre_vote.is_none() => {
                    // The deadline may be stale (a leader spoke since): only act if still due.
                    if Instant::now() >= self.election_due(last_attempt, timeout) {
                        last_attempt = Instant::now();
                        timeout = self.random_election_timeout();
                        let (peers, me) = (self.peers.clone(), self.node_id);
                        pre_vote = Some(tokio::spawn(async move { peers.pre_vote(me).await }));
                    }
                }
                won = async { pre_vote.as_mut().expect("guarded").await }, if pre_vote.is_some() => {
                    pre_vote = None;
                    let leader_spoke_since = self
                        .contacts
                        .last_leader_contact()
                        .is_some_and(|at| Instant::from_std(at) > last_attempt);
                    if won.unwrap_or(false) && applied.is_some_and(|d| d.elect) && !leader_spoke_since {
                        tracing::info!("leader lost and a majority agrees: starting an election");
                        if let Err(e) = self.raft.trigger().elect().await {
                            tracing::warn!(error = %e, "cannot start an election");
                        }
                    }
                }
                // A periodic turn, which the systemd watchdog counts (the VIP thread does
                // its own reconcile).
                _ = reconcile.tick() => {}
            }
            self.state.send_if_modified(|s| {
                s.iterations = s.iterations.wrapping_add(1);
                false
            });

            let fresh =
                std::mem::take(&mut fresh_metrics) || metrics.has_changed().unwrap_or(false);
            let m = metrics.borrow_and_update().clone();
            self.observe_leadership(&m);
            let now = Instant::now();
            // `millis_since_quorum_ack` is relative to when openraft reported it: only a
            // fresh report may move the ack instant, or a wake-up for another reason would
            // push the fence deadline later than the truth.
            if fresh || applied.is_none() {
                ack_instant = leader_ack_instant(&m, now);
            }
            let inputs = Inputs {
                witness: self.witness,
                leader: m.state == ServerState::Leader,
                quorum_ack_age: ack_instant.map(|at| now.saturating_duration_since(at)),
                fence: self.fence,
                healthy: !health_lost && self.health.borrow().is_healthy(),
                maintenance: self.cluster.borrow().in_maintenance(self.node_id),
                stopping,
                vips_bindable: unbindable.borrow_and_update().is_none(),
            };
            let decision = decide(&inputs);
            // The VIP thread never holds past the fence. Order matters, as it may act on any
            // intermediate state: a deadline before a hold, a release before clearing it.
            let deadline = ack_instant
                .filter(|_| decision.hold_vips)
                .map(|at| (at + self.fence).into_std());
            if deadline.is_some() {
                self.vips.hold_until(deadline);
            }
            self.apply(applied, decision, &inputs);
            if deadline.is_none() {
                self.vips.hold_until(None);
            }
            applied = Some(decision);

            if !decision.hand_over {
                hand_over = None;
                handed_over_to = None;
            } else if hand_over.is_none() && handed_over_to.is_none() {
                let (peers, me) = (self.peers.clone(), self.node_id);
                hand_over = Some(tokio::spawn(async move { peers.hand_over(me).await }));
            }
            // A stopping node is done once it no longer leads, or when nobody would take over.
            if stopping && (!inputs.leader || handed_over_to == Some(None)) {
                break;
            }
        }
        self.vips.set_held(false, "stopping");
        self.fire(Event::Stop, Reason::Stopping);
        self.notifier.flush().await;
    }

    /// Queues the notify hooks of `event` with the Raft term and leader of this moment.
    fn fire(&self, event: Event, reason: Reason) {
        let (term, leader_id) = {
            let m = self.raft.metrics();
            let m = m.borrow();
            (m.current_term, m.current_leader)
        };
        let context = HookContext {
            leader_id,
            term,
            reason: reason.to_string(),
        };
        self.notifier.fire(event, &context);
    }

    /// When the next election is due: `lease + timeout` after the later of the last accepted
    /// leader append and the last attempt (or start).
    fn election_due(&self, last_attempt: Instant, timeout: Duration) -> Instant {
        let heard = self
            .contacts
            .last_leader_contact()
            .map(Instant::from_std)
            .map_or(last_attempt, |at| at.max(last_attempt));
        heard + self.lease + timeout
    }

    fn random_election_timeout(&self) -> Duration {
        Duration::from_millis(rand::random_range(self.election_timeout.clone()))
    }

    /// Logs role and leader transitions and counts leader changes.
    fn observe_leadership(&mut self, m: &RaftMetrics) {
        if let Err(fatal) = &m.running_state {
            if !self.raft_failed {
                tracing::error!(error = %fatal, "raft stopped with a fatal error: this node no longer takes part");
                self.raft_failed = true;
            }
        }
        let seen = (m.state, m.current_leader);
        if self.last_seen == Some(seen) {
            return;
        }
        if let Some((state, leader)) = self.last_seen {
            if state != m.state {
                tracing::info!(from = ?state, to = ?m.state, term = m.current_term, "raft role changed");
            }
            if leader != m.current_leader && m.current_leader.is_some() {
                self.state.send_modify(|s| s.leader_changes += 1);
                tracing::info!(from = ?leader, to = ?m.current_leader, term = m.current_term, "leader changed");
            }
        }
        self.last_seen = Some(seen);
    }

    fn apply(&mut self, before: Option<Decision>, d: Decision, inputs: &Inputs) {
        let raft_config = self.raft.runtime_config();
        if before.map(|b| b.elect) != Some(d.elect) {
            raft_config.elect(d.elect && self.single_voter);
            tracing::info!(
                elect = d.elect,
                reason = %d.reason,
                "election candidacy {}",
                if d.elect { "on" } else { "off" }
            );
        }
        if before.map(|b| b.heartbeat) != Some(d.heartbeat) {
            raft_config.heartbeat(d.heartbeat);
        }
        let was_holding = before.is_some_and(|b| b.hold_vips);
        if before.map(|b| b.hold_vips) != Some(d.hold_vips) {
            // Drift after this (someone deleting the VIP) is repaired by the VIP thread.
            self.vips.set_held(d.hold_vips, &d.reason.to_string());
            if was_holding || d.hold_vips {
                tracing::info!(
                    from = if was_holding { "holder" } else { "standby" },
                    to = if d.hold_vips { "holder" } else { "standby" },
                    reason = %d.reason,
                    quorum_ack_ms = ?inputs.quorum_ack_age.map(|a| a.as_millis()),
                    "VIP ownership changed"
                );
                // Losing health is reported as FAULT below, as keepalived does, not BACKUP.
                if d.hold_vips {
                    self.fire(Event::Master, d.reason);
                } else if d.reason != Reason::Unhealthy {
                    self.fire(Event::Backup, d.reason);
                }
            }
            let now = std::time::Instant::now();
            if was_holding {
                self.released_at = Some(now);
            } else if let Some(took) =
                failover_duration(self.contacts.last_leader_contact(), self.released_at, now)
                    .filter(|_| d.hold_vips)
            {
                tracing::info!(
                    seconds = took.as_secs_f64(),
                    "took the VIPs over from the previous leader"
                );
                self.state
                    .send_modify(|s| s.failover_duration.observe(took));
            }
            if was_holding && d.reason == Reason::QuorumLost {
                self.state.send_modify(|s| s.fence_releases += 1);
            }
        }
        let became_unhealthy = !inputs.witness
            && !inputs.healthy
            && before.is_some_and(|b| b.reason != Reason::Unhealthy)
            && d.reason == Reason::Unhealthy;
        if became_unhealthy {
            self.fire(Event::Fault, d.reason);
        }
        if d.hand_over && !before.is_some_and(|b| b.hand_over) {
            tracing::info!(reason = %d.reason, "leader must not lead: handing over");
            self.state.send_modify(|s| s.handovers += 1);
        }
        self.state.send_if_modified(|s| {
            let changed = s.holds_vips != d.hold_vips || s.elect != d.elect || s.reason != d.reason;
            s.holds_vips = d.hold_vips;
            s.elect = d.elect;
            s.reason = d.reason;
            changed
        });
    }
}

/// How long the VIPs went unserved as this node sees it when it takes them over at `now`: since
/// the last append it accepted from the previous leader. None when there was no other leader
/// since it last held them (first election of a fresh cluster, or regaining its own lead).
/// A planned handover is timed the same way; it is short, and the old holder served meanwhile.
pub fn failover_duration(
    last_leader_contact: Option<std::time::Instant>,
    released_at: Option<std::time::Instant>,
    now: std::time::Instant,
) -> Option<Duration> {
    let contact = last_leader_contact.filter(|at| released_at.is_none_or(|r| *at > r))?;
    Some(now.saturating_duration_since(contact))
}

/// The instant a quorum last acknowledged this leader, from a metrics snapshot read at `now`.
pub fn leader_ack_instant(m: &RaftMetrics, now: Instant) -> Option<Instant> {
    if m.state != ServerState::Leader {
        return None;
    }
    m.millis_since_quorum_ack
        .map(|ms| now.checked_sub(Duration::from_millis(ms)).unwrap_or(now))
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FENCE: Duration = Duration::from_millis(60);

    fn leader_healthy() -> Inputs {
        Inputs {
            witness: false,
            leader: true,
            quorum_ack_age: Some(Duration::from_millis(10)),
            fence: FENCE,
            healthy: true,
            maintenance: false,
            stopping: false,
            vips_bindable: true,
        }
    }

    #[test]
    fn healthy_leader_with_fresh_quorum_holds() {
        let d = decide(&leader_healthy());
        assert_eq!(
            d,
            Decision {
                hold_vips: true,
                elect: true,
                heartbeat: true,
                hand_over: false,
                reason: Reason::LeaderWithQuorum
            }
        );
    }

    #[test]
    fn transitions_table() {
        // (change to the healthy leader, hold, elect, heartbeat, hand_over, reason)
        type Case = (
            &'static str,
            fn(&mut Inputs),
            bool,
            bool,
            bool,
            bool,
            Reason,
        );
        #[rustfmt::skip]
        let cases: &[Case] = &[
            ("follower", |i| { i.leader = false; i.quorum_ack_age = None }, false, true, true, false, Reason::NotLeader),
            ("ack exactly at fence", |i| i.quorum_ack_age = Some(FENCE), true, true, true, false, Reason::LeaderWithQuorum),
            ("ack past fence", |i| i.quorum_ack_age = Some(FENCE + Duration::from_millis(1)), false, true, true, false, Reason::QuorumLost),
            ("new leader, no ack yet", |i| i.quorum_ack_age = None, false, true, true, false, Reason::QuorumLost),
            ("unhealthy leader", |i| i.healthy = false, false, false, false, true, Reason::Unhealthy),
            ("unhealthy follower still votes, does not stand", |i| { i.healthy = false; i.leader = false }, false, false, true, false, Reason::Unhealthy),
            ("maintenance leader holds while handing over", |i| i.maintenance = true, true, false, false, true, Reason::HandingOver),
            ("stopping leader holds while handing over", |i| i.stopping = true, true, false, false, true, Reason::HandingOver),
            ("stopping leader whose fence ran out", |i| { i.stopping = true; i.quorum_ack_age = Some(FENCE * 2) }, false, false, false, true, Reason::Stopping),
            ("stopping unhealthy leader releases at once", |i| { i.stopping = true; i.healthy = false }, false, false, false, true, Reason::Stopping),
            ("maintenance follower", |i| { i.maintenance = true; i.leader = false }, false, false, true, false, Reason::Maintenance),
            ("stopping follower", |i| { i.stopping = true; i.leader = false }, false, false, true, false, Reason::Stopping),
            ("witness never stands", |i| { i.witness = true; i.leader = false }, false, false, true, false, Reason::Witness),
            ("witness that somehow leads hands over", |i| i.witness = true, false, false, false, true, Reason::Witness),
            ("leader whose VIP cannot be bound releases and hands over", |i| i.vips_bindable = false, false, false, false, true, Reason::VipUnbindable),
            ("follower whose VIP cannot be bound votes, does not stand", |i| { i.vips_bindable = false; i.leader = false; i.quorum_ack_age = None }, false, false, true, false, Reason::VipUnbindable),
            ("unhealthy and unbindable: health named first", |i| { i.vips_bindable = false; i.healthy = false }, false, false, false, true, Reason::Unhealthy),
            ("stopping leader that cannot bind releases at once", |i| { i.stopping = true; i.vips_bindable = false }, false, false, false, true, Reason::Stopping),
            ("maintenance follower that cannot bind", |i| { i.maintenance = true; i.vips_bindable = false; i.leader = false }, false, false, true, false, Reason::Maintenance),
        ];
        for (name, change, hold, elect, heartbeat, hand_over, reason) in cases {
            let mut inputs = leader_healthy();
            change(&mut inputs);
            let d = decide(&inputs);
            assert_eq!(
                (d.hold_vips, d.elect, d.heartbeat, d.hand_over, d.reason),
                (*hold, *elect, *heartbeat, *hand_over, *reason),
                "{name}"
            );
        }
    }

    #[test]
    fn never_holds_without_leadership_quorum_and_health() {
        // Exhaustive over the boolean inputs: holding implies leader, fresh quorum, healthy,
        // bindable VIPs and not a witness; maintenance and stopping only ever mean "hand over".
        for bits in 0u32..128 {
            let b = |n: u32| bits & (1 << n) != 0;
            let inputs = Inputs {
                witness: b(0),
                leader: b(1),
                quorum_ack_age: b(2).then_some(Duration::from_millis(5)),
                fence: FENCE,
                healthy: b(3),
                maintenance: b(4),
                stopping: b(5),
                vips_bindable: b(6),
            };
            let d = decide(&inputs);
            let expected = !b(0) && b(1) && b(2) && b(3) && b(6);
            assert_eq!(d.hold_vips, expected, "{inputs:?}");
            let ineligible = b(0) || !b(3) || b(4) || b(5) || !b(6);
            assert_eq!(d.hand_over, b(1) && ineligible, "{inputs:?}");
            assert!(!(d.elect && ineligible), "{inputs:?}");
        }
    }

    #[test]
    fn failover_is_timed_from_the_last_contact_with_another_leader() {
        let t0 = std::time::Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        // Followed a leader, then took over 1.2 s after its last append.
        assert_eq!(
            failover_duration(Some(at(1000)), None, at(2200)),
            Some(Duration::from_millis(1200))
        );
        // Had held, another leader followed, then took over again.
        assert_eq!(
            failover_duration(Some(at(1000)), Some(at(500)), at(1300)),
            Some(Duration::from_millis(300))
        );
        // First leader of a fresh cluster: nobody to fail over from.
        assert_eq!(failover_duration(None, None, at(100)), None);
        // Regained its own lead (fence release, no other leader since): not a failover.
        assert_eq!(
            failover_duration(Some(at(1000)), Some(at(5000)), at(5400)),
            None
        );
    }
}
