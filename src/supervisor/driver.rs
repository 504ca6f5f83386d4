//! The supervisor's driver: gathers inputs for the [`Core`] and carries out its actions.
//!
//! No rule lives here. Each turn of the loop waits for one thing — the stop token, a peer's
//! answer, a Raft metrics report, the core's next deadline, a health verdict, the replicated
//! maintenance flag, the membership standing, the VIPs' bindability — turns it into an [`Input`], steps the core and
//! executes the returned [`Action`]s: VIP hold and fence deadline, openraft's runtime switches,
//! requests to peers (spawned; their answers come back as inputs), notify hooks, and the
//! [`SupervisorState`] published for status and the API.
//!
//! Health is seen through [`HealthFeed`], the VIP layer through [`VipHolder`] (each beside its
//! implementations) and peers through [`Peers`] below, so the supervisor depends on none of
//! their implementations; the daemon provides the peers' adapter.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use openraft::ServerState;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::core::{Action, Core, Input, RaftReport, Reason, Setup, SupervisorState};
use crate::config::Config;
use crate::health::HealthFeed;
use crate::notify::{HookContext, Notifier};
use crate::raft::tick_gate::TickDemand;
use crate::raft::typ::{Raft, RaftMetrics};
use crate::raft::{ClusterState, NodeId};
use crate::vip::VipHolder;

/// How long a new holder waits for the VIP thread to bind and announce before it tells the
/// peers it holds the VIPs (one netlink batch and one frame batch: milliseconds).
const TELL_HELD_WAIT: std::time::Duration = std::time::Duration::from_millis(100);

/// What the supervisor asks its peers, and the one thing it learns from them.
pub trait Peers: Send + Sync + 'static {
    /// "Start an election now if you may lead": asks `to`, or (None) the peers (not `me`) one
    /// by one; returns the id of the first that accepted.
    fn hand_over(
        &self,
        me: NodeId,
        to: Option<NodeId>,
        keeping_vips: bool,
    ) -> impl Future<Output = Option<NodeId>> + Send;
    /// "I hold the VIPs now", to every peer; returns the one that released for it (the old
    /// holder of a planned overlap), if any.
    fn tell_held(&self, me: NodeId) -> impl Future<Output = Option<NodeId>> + Send;
    /// "Have you lost the leader too?": true if a majority, `me` included, says yes.
    fn pre_vote(&self, me: NodeId) -> impl Future<Output = bool> + Send;
    /// When this node last accepted an append from a leader (None: never since start).
    fn last_leader_contact(&self) -> Option<Instant>;
}

/// Runs the [`Core`] against the real world; `P` asks the peers.
pub struct Supervisor<P> {
    node_id: NodeId,
    core: Core,
    raft: Raft,
    health: Box<dyn HealthFeed>,
    cluster: watch::Receiver<ClusterState>,
    member: watch::Receiver<bool>,
    vips: Arc<dyn VipHolder>,
    peers: Arc<P>,
    state: watch::Sender<SupervisorState>,
    notifier: Arc<Notifier>,
    /// Peers' answers, sent by the tasks that asked.
    answers: mpsc::Receiver<Input>,
    answer_tx: mpsc::Sender<Input>,
    /// The leader contact last given to the core.
    leader_contact: Option<Instant>,
    reload: watch::Receiver<Setup>,
    /// openraft's tick is needed only while leading or running openraft's election timer
    /// (see `crate::raft::tick_gate`).
    ticks: TickDemand,
    leading: bool,
    election_timer: bool,
}

/// The parts a supervisor drives, built by the daemon.
pub struct Parts<P> {
    pub raft: Raft,
    pub health: Box<dyn HealthFeed>,
    pub cluster: watch::Receiver<ClusterState>,
    pub vips: Arc<dyn VipHolder>,
    pub peers: Arc<P>,
    pub state: watch::Sender<SupervisorState>,
    /// Shared with the daemon, which fires STOP and waits for the hooks at exit.
    pub notifier: Arc<Notifier>,
    /// This node's setup as a reload changes it (see [`crate::reload`]).
    pub reload: watch::Receiver<Setup>,
    /// Whether this node is a voter of the membership a change is heading to.
    pub member: watch::Receiver<bool>,
}

impl<P: Peers> Supervisor<P> {
    pub fn new(config: &Config, parts: Parts<P>) -> Self {
        let now = tokio::time::Instant::now().into_std();
        // Peers' answers (a few kinds, at most one of each in flight, plus stale ones) and
        // what the peer handlers and the API pass on (see `Supervisor::inputs`).
        let (answer_tx, answers) = mpsc::channel(16);
        Self {
            node_id: config.node_id,
            core: Core::new(Setup::from_config(config), now, rand::random()),
            raft: parts.raft,
            health: parts.health,
            cluster: parts.cluster,
            member: parts.member,
            vips: parts.vips,
            peers: parts.peers,
            state: parts.state,
            notifier: parts.notifier,
            answers,
            answer_tx,
            leader_contact: None,
            reload: parts.reload,
            ticks: TickDemand::new(),
            leading: false,
            election_timer: false,
        }
    }

    /// Where others feed this supervisor: a successor saying it holds the VIPs, a leader
    /// asking this node to take over, a transfer asked by the operator.
    pub fn inputs(&self) -> mpsc::Sender<Input> {
        self.answer_tx.clone()
    }

    /// Runs until `stop` is cancelled and the core says it is done: if leader, it hands over
    /// first, keeping the VIPs until it steps down (or its fence or the stop's bound runs
    /// out), then orders the release and returns the STOP hook's context for the daemon to
    /// fire once the release is confirmed. Also returns (None), releasing, if Raft or the
    /// replicated state goes away.
    pub async fn run(mut self, stop: CancellationToken) -> Option<HookContext> {
        let mut metrics = self.raft.metrics();
        let mut unbindable = self.vips.unbindable();
        let mut leader_deadlines = crate::clock::DeadlineTimer::new();
        // Health first: the core starts unhealthy, and the first decision should not log a
        // "may lead: no" that the next input takes back.
        let initial = [
            Input::Health {
                healthy: self.health.is_healthy(),
            },
            Input::Raft(report(&metrics.borrow_and_update())),
            self.maintenance(),
            Input::Member(*self.member.borrow_and_update()),
            Input::Unbindable(unbindable.borrow_and_update().clone()),
        ];
        for input in initial {
            if let Some(stopped) = self.feed(input).await {
                return Some(stopped);
            }
        }
        let (mut stop_sent, mut health_open, mut unbindable_open) = (false, true, true);
        let mut reload_open = true;
        let mut member_open = true;
        loop {
            let deadline = self.core.next_deadline();
            let leading = self.leading;
            // A leader's deadline (its fence, pushed later by each acknowledgement) sleeps on
            // a timerfd: on tokio's wheel it often woke the thread at a 64 ms slot's start
            // first. A follower's (its election, ~100 ms after the last heartbeat) is pushed
            // back by the next heartbeat before that slot starts, so the wheel costs it no
            // wake-up, and a timerfd would cost a system call per heartbeat (~2 % of an idle
            // follower's CPU). Leaving the lead may leave the alarm to ring once for nothing.
            let reached = async {
                if leading {
                    leader_deadlines.until(deadline).await;
                } else {
                    sleep_until(deadline).await;
                }
            };
            let input = tokio::select! {
                biased;
                _ = stop.cancelled(), if !stop_sent => { stop_sent = true; Input::Stop }
                Some(answer) = self.answers.recv() => answer,
                changed = metrics.changed() => match changed {
                    Ok(()) => Input::Raft(report(&metrics.borrow_and_update())),
                    Err(_) => break,
                },
                () = reached => Input::Tick,
                open = self.health.changed(), if health_open => {
                    health_open = open;
                    self.health_input(open)
                }
                changed = self.cluster.changed() => match changed {
                    Ok(()) => self.maintenance(),
                    Err(_) => break,
                },
                changed = self.member.changed(), if member_open => {
                    member_open = changed.is_ok();
                    Input::Member(*self.member.borrow_and_update())
                }
                changed = unbindable.changed(), if unbindable_open => {
                    unbindable_open = changed.is_ok();
                    Input::Unbindable(unbindable.borrow_and_update().clone())
                }
                changed = self.reload.changed(), if reload_open => {
                    reload_open = changed.is_ok();
                    Input::Reload(*self.reload.borrow_and_update())
                }
            };
            if let Some(stopped) = self.feed(input).await {
                return Some(stopped);
            }
        }
        self.vips.set_held(false, "stopping");
        None
    }

    fn maintenance(&mut self) -> Input {
        Input::Maintenance(
            self.cluster
                .borrow_and_update()
                .in_maintenance(self.node_id),
        )
    }

    /// A health source that stopped reporting is a bug; fail safe: unhealthy.
    fn health_input(&self, open: bool) -> Input {
        if !open {
            tracing::error!("health monitor stopped reporting: treating this node as unhealthy");
        }
        Input::Health {
            healthy: open && self.health.is_healthy(),
        }
    }

    /// Steps the core with `input` (after any newer leader contact) and executes the actions;
    /// the STOP hook's context once the core is done.
    async fn feed(&mut self, input: Input) -> Option<HookContext> {
        self.state.send_if_modified(|s| {
            s.iterations = s.iterations.wrapping_add(1);
            false
        });
        let now = tokio::time::Instant::now().into_std();
        let contact = self.peers.last_leader_contact();
        let mut done = None;
        if let Some(at) = contact.filter(|_| contact != self.leader_contact) {
            self.leader_contact = contact;
            let actions = self.core.step(now, Input::LeaderContact(at));
            done = self.execute(actions).await;
        }
        if let Input::Raft(report) = &input {
            self.leading = report.state == ServerState::Leader;
        }
        let actions = self.core.step(now, input);
        let done = self.execute(actions).await.or(done);
        self.ticks.set(self.leading || self.election_timer);
        done
    }

    async fn execute(&mut self, actions: Vec<Action>) -> Option<HookContext> {
        let mut done = None;
        for action in actions {
            match action {
                Action::HoldUntil(deadline) => self.vips.hold_until(deadline),
                // Drift after this (someone deleting the VIP) is repaired by the VIP layer.
                Action::SetHeld {
                    hold: false,
                    reason: reason @ Reason::QuorumLost,
                } => self.vips.release_at_fence(&reason.to_string()),
                Action::SetHeld { hold, reason } => self.vips.set_held(hold, &reason.to_string()),
                Action::RaftElectionTimer(on) => {
                    self.raft.runtime_config().elect(on);
                    self.election_timer = on;
                }
                Action::Heartbeat(on) => {
                    self.raft.runtime_config().heartbeat(on);
                }
                Action::RequestPreVote => self.ask(
                    Input::PreVoteAnswer { won: false },
                    |peers, me| async move {
                        Input::PreVoteAnswer {
                            won: peers.pre_vote(me).await,
                        }
                    },
                ),
                Action::HandOver {
                    episode,
                    to,
                    keeping_vips,
                } => self.ask(
                    Input::HandOverAnswer { episode, to: None },
                    move |peers, me| async move {
                        let to = peers.hand_over(me, to, keeping_vips).await;
                        Input::HandOverAnswer { episode, to }
                    },
                ),
                Action::VipOverlap(overlap) => self.vips.set_overlap(overlap),
                Action::TellHeld => {
                    let vips = self.vips.clone();
                    self.ask(
                        Input::HeldAnswer { released_by: None },
                        move |peers, me| async move {
                            // Told once the VIP thread has bound and announced them; not
                            // at all if it released them meanwhile (this node is stopping):
                            // the old holder holds on until its overlap's bound.
                            let held = tokio::task::spawn_blocking(move || {
                                vips.wait_applied(TELL_HELD_WAIT);
                                let status = vips.status();
                                status.is_empty() || status.iter().any(|vip| vip.held)
                            });
                            let released_by = match held.await {
                                Ok(true) => peers.tell_held(me).await,
                                _ => None,
                            };
                            Input::HeldAnswer { released_by }
                        },
                    )
                }
                Action::Reannounce => self.vips.reannounce(),
                Action::Elect { term } => {
                    let live = self.raft.metrics().borrow().current_term;
                    if live != term {
                        tracing::info!(
                            term = live,
                            "a peer's election began during this pre-vote: leaving it the term"
                        );
                    } else if let Err(e) = self.raft.trigger().elect().await {
                        tracing::warn!(error = %e, "cannot start an election");
                    }
                }
                Action::Notify(event, context) => self.notifier.fire(event, &context),
                Action::Publish(state) => self.state.send_modify(|s| {
                    *s = SupervisorState {
                        iterations: s.iterations,
                        ..state
                    }
                }),
                Action::Done(stop_hook) => done = Some(stop_hook),
            }
        }
        done
    }

    /// Runs a request to the peers in the background; its answer (or `failed`, should the
    /// request task die) comes back as an input.
    fn ask<F, Fut>(&self, failed: Input, request: F)
    where
        F: FnOnce(Arc<P>, NodeId) -> Fut,
        Fut: Future<Output = Input> + Send + 'static,
    {
        let answers = self.answer_tx.clone();
        let asking = tokio::spawn(request(self.peers.clone(), self.node_id));
        tokio::spawn(async move {
            let answer = asking.await.unwrap_or(failed);
            // Closed: the supervisor has returned and no longer cares.
            let _ = answers.send(answer).await;
        });
    }
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// The core's view of one metrics report.
fn report(m: &RaftMetrics) -> RaftReport {
    RaftReport {
        state: m.state,
        leader: m.current_leader,
        term: m.current_term,
        millis_since_quorum_ack: m.millis_since_quorum_ack,
    }
}
