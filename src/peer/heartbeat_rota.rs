//! Heartbeats in turn: each tick a quorum's worth of followers hears from the leader, not
//! every follower.
//!
//! openraft 0.9 sends every follower a heartbeat each tick (1.5 × `heartbeat_ms`), and those
//! round trips are most of an idle box's CPU (issue 12). raftvip needs two things from them:
//! the fence's quorum acknowledgement (the leader holds the VIPs while a quorum acked within
//! `fence_ms`) and each follower's lease (it stands in no election while it heard from a
//! leader within `election_timeout_max`). Acknowledgements from a quorum each tick keep the
//! fence as fresh as all followers' do, and a follower that hears every other tick keeps its
//! lease (60 ms apart against 90 ms by default). So on a 3-box leader one follower per tick,
//! in turn, halves the round trips of every box (docs/timing.md, "Heartbeats in turn").
//!
//! A heartbeat held back is never an acknowledgement: the network answers openraft with an
//! error at once, which openraft drops for a heartbeat ("no update to inflight data"), so its
//! quorum clock, and with it the fence, counts only real round trips. Only a heartbeat without
//! news is held back: the same vote, log position and commit index as that follower's last
//! acknowledged request. Entries, a new commit index, a new term, a follower whose last
//! request went unanswered, a learner, a joint membership: all go out as before, and so does
//! every heartbeat of the tick after one that fell short of a quorum's acknowledgements, so a
//! lost or late answer is made up at the next tick.

use std::collections::BTreeMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::raft::typ::{AppendEntriesRequest, LogId, RaftMetrics, Vote};
use crate::raft::NodeId;

/// What a follower already knows after it acknowledged a request: the leader's vote, its log
/// up to `matched` and the commit index. A heartbeat saying no more is news to nobody.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Knowledge {
    vote: Vote,
    matched: Option<LogId>,
    committed: Option<LogId>,
}

impl Knowledge {
    /// What `request` tells its target (and what the target knows once it acknowledges it).
    pub fn of(request: &AppendEntriesRequest) -> Self {
        Self {
            vote: request.vote,
            matched: request
                .entries
                .last()
                .map(|entry| entry.log_id)
                .or(request.prev_log_id),
            committed: request.leader_commit,
        }
    }

    fn is_heartbeat(request: &AppendEntriesRequest) -> bool {
        request.entries.is_empty()
    }
}

/// The followers a tick's heartbeats are shared out among (a single, not joint, membership
/// that the leader is a voter of), and how many of them make a quorum with the leader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    followers: Vec<NodeId>,
    wanted: usize,
}

impl Plan {
    /// The plan for `leader` under `metrics`' membership; None (every heartbeat goes out)
    /// while the membership is joint or does not count the leader among its voters.
    pub fn of(metrics: &RaftMetrics, leader: NodeId) -> Option<Self> {
        let [voters] = metrics
            .membership_config
            .membership()
            .get_joint_config()
            .as_slice()
        else {
            return None;
        };
        voters.contains(&leader).then(|| Self {
            followers: voters.iter().copied().filter(|id| *id != leader).collect(),
            // A majority of the voters, the leader included.
            wanted: voters.len() / 2,
        })
    }
}

/// Whether a request goes out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Send it; report the outcome with [`HeartbeatRota::answered`].
    Send(Ticket),
    /// Hold it back: another follower hears this tick, this one heard lately and has no news.
    HoldBack,
}

/// A request that went out: its tick and what its target knows once it acknowledges it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticket {
    round: u64,
    knowledge: Knowledge,
}

/// One follower as the rota sees it.
#[derive(Debug, Default)]
struct Follower {
    /// Round of its last request that went out.
    sent_in: u64,
    /// What it knows, if it acknowledged its last request (None while one is out or after
    /// one failed: then nothing is held back from it).
    knows: Option<Knowledge>,
}

/// The rounds of one leadership: pure logic with injected time.
#[derive(Debug)]
pub struct Rounds {
    /// Calls closer together than this belong to one tick (half a tick).
    gap: Duration,
    vote: Option<Vote>,
    round: u64,
    started: Option<Instant>,
    /// Acknowledgements this round needs: a quorum's, less the leader.
    wanted: usize,
    acked: usize,
    /// This round sends every heartbeat: the last fell short of `wanted`.
    everyone: bool,
    chosen: Vec<NodeId>,
    held: Vec<NodeId>,
    followers: BTreeMap<NodeId, Follower>,
}

impl Rounds {
    /// Rounds for a leader whose openraft ticks `tick` apart.
    pub fn new(tick: Duration) -> Self {
        Self {
            gap: tick / 2,
            vote: None,
            round: 0,
            started: None,
            wanted: 0,
            acked: 0,
            everyone: false,
            chosen: Vec::new(),
            held: Vec::new(),
            followers: BTreeMap::new(),
        }
    }

    /// Whether `request` to `target` goes out at `now`.
    pub fn decide(
        &mut self,
        now: Instant,
        target: NodeId,
        request: &AppendEntriesRequest,
        plan: Option<&Plan>,
    ) -> Decision {
        let knowledge = Knowledge::of(request);
        if self.vote.as_ref() != Some(&knowledge.vote) {
            *self = Self::new(self.gap * 2);
            self.vote = Some(knowledge.vote);
        }
        if self
            .started
            .is_none_or(|at| now.duration_since(at) >= self.gap)
        {
            self.start_round(now, plan);
        }
        let follower = self.followers.entry(target).or_default();
        let hold = Knowledge::is_heartbeat(request)
            && !self.everyone
            && plan.is_some_and(|p| p.followers.contains(&target))
            && !self.chosen.contains(&target)
            && !self.held.contains(&target)
            && follower.knows.as_ref() == Some(&knowledge);
        if hold {
            self.held.push(target);
            return Decision::HoldBack;
        }
        follower.sent_in = self.round;
        follower.knows = None;
        Decision::Send(Ticket {
            round: self.round,
            knowledge,
        })
    }

    /// Records the outcome of a request that went out: `acknowledged` is a success answer.
    pub fn answered(&mut self, target: NodeId, ticket: Ticket, acknowledged: bool) {
        if self.vote.as_ref() != Some(&ticket.knowledge.vote) || !acknowledged {
            return;
        }
        if ticket.round == self.round {
            self.acked += 1;
        }
        let follower = self.followers.entry(target).or_default();
        if follower.sent_in == ticket.round {
            follower.knows = Some(ticket.knowledge);
        }
    }

    /// Opens the next tick's round: everyone hears if the last round fell short, else the
    /// `wanted` followers that answered their last request and heard longest ago.
    fn start_round(&mut self, now: Instant, plan: Option<&Plan>) {
        self.everyone = self.started.is_some() && self.acked < self.wanted;
        self.round += 1;
        self.started = Some(now);
        self.acked = 0;
        self.held.clear();
        self.chosen.clear();
        self.wanted = plan.map_or(0, |p| p.wanted);
        if let Some(plan) = plan {
            let mut answering: Vec<(u64, NodeId)> = plan
                .followers
                .iter()
                .filter_map(|id| {
                    let f = self.followers.get(id)?;
                    f.knows.is_some().then_some((f.sent_in, *id))
                })
                .collect();
            answering.sort_unstable();
            self.chosen
                .extend(answering.iter().take(plan.wanted).map(|(_, id)| *id));
        }
    }
}

/// The rota of this node's heartbeats, shared by its connections to every peer.
pub struct HeartbeatRota {
    rounds: Mutex<Rounds>,
    /// Raft's metrics, for the membership; until set every heartbeat goes out.
    metrics: OnceLock<watch::Receiver<RaftMetrics>>,
}

impl HeartbeatRota {
    /// A rota for openraft ticking every 1.5 × `heartbeat` (openraft 0.9's tick).
    pub fn new(heartbeat: Duration) -> Self {
        Self {
            rounds: Mutex::new(Rounds::new(heartbeat * 3 / 2)),
            metrics: OnceLock::new(),
        }
    }

    /// Reads the membership from Raft's metrics from now on.
    pub fn follow(&self, metrics: watch::Receiver<RaftMetrics>) {
        let _ = self.metrics.set(metrics);
    }

    /// Whether `request` to `target` goes out now.
    pub fn decide(&self, target: NodeId, request: &AppendEntriesRequest) -> Decision {
        let plan = match (self.metrics.get(), request.vote.leader_id().voted_for()) {
            (Some(metrics), Some(leader)) => Plan::of(&metrics.borrow(), leader),
            _ => None,
        };
        crate::sync::lock(&self.rounds).decide(Instant::now(), target, request, plan.as_ref())
    }

    /// Records the outcome of a request [`Self::decide`] let out.
    pub fn answered(&self, target: NodeId, ticket: Ticket, acknowledged: bool) {
        crate::sync::lock(&self.rounds).answered(target, ticket, acknowledged);
    }
}

#[cfg(test)]
mod tests;
