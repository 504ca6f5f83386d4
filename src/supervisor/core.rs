//! The supervisor's core: every rule that decides what this node does, as a pure state machine.
//!
//! [`Core::step`] takes the time and one [`Input`] (a Raft report, a health verdict, a pre-vote
//! answer, a stop request, a timer that fired…) and returns the [`Action`]s to carry out, like
//! boringtun's `Tunn`: no I/O, no tokio, no clock of its own, and the only randomness (the
//! election timeout) comes from a seeded generator. The driver ([`super::driver`]) feeds it
//! and executes what it returns, and sleeps until [`Core::next_deadline`]. So the timers
//! (fence, election, stop), the episodes (pre-vote, handover, stop) and the notify events are
//! tested here with injected time, without a cluster.
//!
//! [`decide`] is the rule: from a snapshot of [`Inputs`] it says whether this node holds the
//! VIPs, whether it may lead (stand in elections), and whether it must hand leadership over.
//! Keeping it in one function is what makes "exactly one holder" reviewable:
//!
//! hold ⇔ leader ∧ quorum acknowledged within `fence` ∧ healthy ∧ VIPs bindable, and a
//! stopping node never stands; a witness, an unhealthy node or one in maintenance stands only
//! as a last resort ([`LAST_RESORT_AFTER`]), and elected so it holds nothing and hands over.
//!
//! Stopping, maintenance, a transfer or a reload that makes it a witness make a leader hand
//! over, make-before-break (issue 10):
//! it keeps the VIPs (still healthy) while it asks a peer to take over, and when it steps down
//! for the successor it asked it keeps them still — a deliberate, bounded overlap
//! ([`OVERLAP_BOUND`]) — until the successor says it holds them ([`Input::SuccessorHolds`]);
//! the successor announces again once the old holder has released ([`Action::Reannounce`]).
//! That overlap is the only time two nodes hold the VIPs, both healthy, both agreeing. A node
//! that loses leadership any other way (fence, a step-down it did not ask for, another leader
//! than the one it asked) releases at once, as before.
//!
//! The fence is a deadline, not a poll: quorum-ack instant + fence. openraft measures the ack
//! from the *send* time of the heartbeat a quorum answered, and no voter that answered it grants
//! a vote until `election_timeout_max` after receiving it, so dropping the VIPs at
//! `ack + fence` (< `election_timeout_max` − slack, enforced by check-config) means the old
//! holder is gone before a new leader can exist.
//!
//! The grant rules — may this node take over ([`SupervisorState::can_lead`]), would it grant
//! a pre-vote ([`Timing::grant_prevote`]), the vote gate's window ([`Timing::vote_gate`]) —
//! live here too, over the same [`Timing`], so the lease is derived from the config once.
//!
//! The handover is an explicit episode ([`Handover`]) and the overlap after it another
//! ([`Overlap`]), so "successor took over, release now or at a bound" is a state and an input,
//! not a flag in the driver.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use openraft::ServerState;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::config::Config;
use crate::notify::{Event, HookContext};
use crate::raft::typ::LogId;
use crate::raft::vote_gate::VoteGate;
use crate::raft::NodeId;
use crate::status::FailoverHistogram;
use crate::vip::VipOverlap;

/// How long a stop may spend handing over before it gives up and just releases: a LAN
/// handover takes a few ms, and the whole stop must stay under a second.
pub const STOP_HANDOVER_BOUND: Duration = Duration::from_millis(600);

/// How much longer than a lease a voter holds back its pre-vote for another node's election
/// (see [`Timing::grant_prevote`]). A handover's successor stands again 5 ms after the lease
/// that refused its first election (`peer::handlers`); the deference must outlast that and
/// its vote request's way here, or the next follower in the stagger, standing a few ms later,
/// wins instead (1 in 16 five-box transfers under CI's load, 2026-11-29).
pub const CANDIDATE_GRACE: Duration = Duration::from_millis(20);

/// How long a voter that may not lead (in maintenance, unhealthy, unable to bind its VIPs, a
/// witness) goes without hearing from a leader before it stands all the same — only after it
/// refused the pre-vote of a candidate whose log is behind its own. Raft elects only a node
/// whose log is as recent as a majority's; when every such node is one that may not lead (a
/// maintenance flag written just before its leader handed over to a follower that had not
/// received it yet), the nodes that may lead can never win, and nobody else would stand.
/// Elected this way, a node takes no VIPs and hands leadership over at once to a node that
/// may lead, whose log it brings up to date ([`decide`]: a leader that may not lead hands
/// over). Long against a failover (about ten leases), so it does not compete with a node that
/// may lead and can win; short against an outage.
pub const LAST_RESORT_AFTER: Duration = Duration::from_secs(1);

/// Longest planned overlap: after stepping down for the successor it asked, the old holder
/// keeps the VIPs at most this long waiting for "I hold them now". The successor binds a few
/// ms after its election; the bound only matters when its message is lost.
pub const OVERLAP_BOUND: Duration = Duration::from_millis(200);

/// How long a transfer (`raftvip transfer`) may take before this leader gives up and leads on:
/// the target's election and the overlap take well under this on a LAN.
pub const TRANSFER_BOUND: Duration = Duration::from_millis(1000);

/// How long the old holder keeps the VIPs after its successor said it holds them: clients
/// switch to the successor's MAC at its first announcement, and requests already open with
/// the old holder finish meanwhile (their answers leave from the VIP, which must still be
/// bound). Within [`OVERLAP_BOUND`].
pub const OVERLAP_DRAIN: Duration = Duration::from_millis(50);

/// A node asked to take over expects the overlap (see [`VipOverlap::Taking`]) this long at
/// most, should the takeover or the old holder's answer never come.
const TAKEOVER_WINDOW: Duration = Duration::from_millis(1000);

/// openraft reports the age of the quorum's last acknowledgement in whole milliseconds, so two
/// reports of the same acknowledgement place it up to this far apart (the fence stays put
/// within it: see [`Core::observe_raft`]).
const ACK_REPORT_RESOLUTION: Duration = Duration::from_millis(1);

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
    /// This leader was asked to transfer leadership (`raftvip transfer`).
    pub transferring: bool,
    /// This node stepped down for the successor it asked to take over and is within
    /// [`OVERLAP_BOUND`] of that, the successor not yet holding the VIPs.
    pub overlap: bool,
    /// Every VIP's interface could take it (present, up) and no add was refused (EPERM):
    /// only a box that can serve may lead.
    pub vips_bindable: bool,
    /// A voter of the membership a change is heading to (see `crate::membership`): a box
    /// waiting to be added, leaving or removed never leads.
    pub member: bool,
    /// This node holds the VIPs now (the decision applied last).
    pub holding: bool,
}

/// What this node should be doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub hold_vips: bool,
    /// May lead: stand in elections and accept a handover (a node always votes). Shown as
    /// `candidate_for_leader` in the status document.
    pub may_lead: bool,
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
    Transferring,
    PlannedOverlap,
    NotMember,
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
            Reason::Transferring => "transferring leadership on request",
            Reason::PlannedOverlap => {
                "planned handover: holding until the successor holds the VIPs (make-before-break)"
            }
            Reason::NotMember => {
                "not a voter of the membership (waiting to be added, leaving or removed)"
            }
        })
    }
}

/// The rule. Pure, total, and tested by the table below.
pub fn decide(i: &Inputs) -> Decision {
    let eligible_reason = if i.witness {
        Some(Reason::Witness)
    } else if i.stopping {
        Some(Reason::Stopping)
    } else if !i.member {
        Some(Reason::NotMember)
    } else if i.maintenance {
        Some(Reason::Maintenance)
    } else if i.transferring {
        Some(Reason::Transferring)
    } else if !i.healthy {
        Some(Reason::Unhealthy)
    } else if !i.vips_bindable {
        Some(Reason::VipUnbindable)
    } else {
        None
    };
    let eligible = eligible_reason.is_none();
    let acked = acked(i.quorum_ack_age, i.fence);
    // A planned handover (stop, maintenance, transfer, a reload that made this node a
    // witness, a membership change that drops it) with HAProxy still serving keeps the
    // VIPs while this leader asks its successor to take over. The fence still bounds it:
    // heartbeats are off meanwhile. It keeps them, never takes them: a node elected by a
    // handover it accepted just before its own stop (every box stopped at once) must not
    // bind the VIPs for the moment it takes to find nobody to hand them to, beside the old
    // holder still keeping them.
    let planned_handover = i.leader
        && i.holding
        && acked
        && i.healthy
        && i.vips_bindable
        && matches!(
            eligible_reason,
            Some(
                Reason::Stopping
                    | Reason::Maintenance
                    | Reason::Witness
                    | Reason::Transferring
                    | Reason::NotMember
            )
        );
    // Then, stepped down for that successor, it keeps them until the successor holds them
    // (make-before-break), still only while it could serve them.
    let planned_overlap = !i.leader && i.holding && i.overlap && i.healthy && i.vips_bindable;
    let reason = match (eligible_reason, i.leader, acked) {
        _ if planned_handover => Reason::HandingOver,
        _ if planned_overlap => Reason::PlannedOverlap,
        (Some(r), _, _) => r,
        (None, false, _) => Reason::NotLeader,
        (None, true, false) => Reason::QuorumLost,
        (None, true, true) => Reason::LeaderWithQuorum,
    };
    Decision {
        hold_vips: matches!(
            reason,
            Reason::LeaderWithQuorum | Reason::HandingOver | Reason::PlannedOverlap
        ),
        may_lead: eligible,
        heartbeat: eligible || !i.leader,
        hand_over: i.leader && !eligible,
        reason,
    }
}

/// Whether a quorum acknowledged this leader recently enough to act as leader: the fence
/// rule, shared by [`decide`] and [`Timing::grant_prevote`].
fn acked(quorum_ack_age: Option<Duration>, fence: Duration) -> bool {
    quorum_ack_age.is_some_and(|age| age <= fence)
}

/// The timing rules of `[timing]`, derived from the config once and shared by the state
/// machine and the grant rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// A leader drops the VIPs this long after its quorum's last acknowledgement.
    pub fence: Duration,
    /// openraft refuses votes for this long after a heartbeat (its leader lease:
    /// `election_timeout_max`). A follower stands, and grants pre-votes, once it has not
    /// heard from a leader for this long.
    pub lease: Duration,
    /// `election_timeout_min`: the low end of the random timeout that, after the lease,
    /// spaces one election from the next (the high end is the lease).
    pub election_timeout_min: Duration,
    /// How long after the lease this node stands: its rank among the members times half a
    /// heartbeat ([`stagger`]).
    pub stagger: Duration,
}

/// The wait after the lease before this node stands: `rank × heartbeat / 2`, where `rank`
/// counts the members with a lower node id (0, 12.5, 25… ms by default). The survivors of a
/// leader heard its last heartbeat within a millisecond of each other, so without a stagger
/// they stand together; two pre-votes granted at once make two candidates, and the later
/// one, having voted for the first, elects in the term after and deposes it as it wins — a
/// whole second election (issue 12's tail). Half a heartbeat is enough for the first
/// candidate's vote request to reach the next survivor before that one's pre-vote is
/// answered, so it sees the new term and leaves it alone. A deterministic order rather than
/// a random draw: a random one needs a wide window to keep two draws that far apart, and
/// every ms of it adds to every failover; this adds 0 ms when the lowest-ranked survivor
/// leads and `heartbeat / 2` when it is the one lost.
pub fn stagger(config: &Config) -> Duration {
    let rank = config
        .peers
        .iter()
        .filter(|p| p.id < config.node_id)
        .count();
    config.timing.heartbeat() / 2 * u32::try_from(rank).unwrap_or(u32::MAX)
}

impl Timing {
    pub fn from_config(config: &Config) -> Self {
        let [et_min, et_max] = config.timing.election_timeout_ms;
        Self {
            fence: config.timing.fence(),
            lease: Duration::from_millis(et_max),
            election_timeout_min: Duration::from_millis(et_min),
            stagger: stagger(config),
        }
    }

    /// A fresh store grants no vote for one lease (see [`crate::raft::vote_gate`]).
    pub fn vote_gate(&self, created_at_open: bool, started: Instant) -> VoteGate {
        VoteGate::new(created_at_open, started, self.lease)
    }

    /// Ok if this node would grant a pre-vote: its log is not ahead of the candidate's (it
    /// could not win), it does not lead with a quorum, and it has not heard from a leader for
    /// the lease — the window in which openraft would refuse the vote itself, and the one
    /// after which candidates stand, so a pre-vote is not refused only to be granted a few ms
    /// later (issue 12). The fence ends inside that window: see docs/timing.md. Err says why
    /// not.
    pub fn grant_prevote(&self, q: &PrevoteQuestion) -> Result<(), String> {
        if q.candidate_last_log < q.my_last_log {
            return Err(format!(
                "your log ends at {} and mine at {}: you cannot win an election",
                display_log_id(q.candidate_last_log),
                display_log_id(q.my_last_log)
            ));
        }
        if q.leader && acked(q.quorum_ack_age, self.fence) {
            return Err("this node leads with a quorum".to_owned());
        }
        // This node's own election, under way: a second candidate would elect in the term
        // after and depose it as it wins (issue 12's two-term duel). Only for a lease, only
        // if it may lead and its log is not behind the asker's, so that nobody is kept
        // waiting on a candidate that will not or cannot win.
        let electing =
            q.candidate && q.may_lead && q.own_election_age.is_some_and(|age| age < self.lease);
        if electing && q.my_last_log >= q.candidate_last_log {
            return Err(
                "this node stands in an election itself and its log is as recent as yours"
                    .to_owned(),
            );
        }
        // Another node's election, under way: a handover's successor stands at once, and
        // with more than three voters stands again right after the other voters' leases if
        // they refused its first election (voters that could not end their lease). A
        // pre-vote granted meanwhile makes a second candidate that wins in the term after,
        // and the VIPs go to a node nobody chose.
        // Only for a lease (and [`CANDIDATE_GRACE`]) after its vote request, and only if its
        // log is as recent as the asker's (else the asker may be the only one that can win).
        if let Some((id, age, log)) = q.other_candidate {
            let window = self.lease + CANDIDATE_GRACE;
            if age < window && log >= q.candidate_last_log {
                return Err(format!(
                    "node {id} asked for this node's vote {} ms ago and its log is as recent \
                     as yours (grants {} ms after)",
                    age.as_millis(),
                    window.as_millis()
                ));
            }
        }
        match q.leader_contact_age {
            Some(age) if age < self.lease => Err(format!(
                "heard from leader {} {} ms ago (grants {} ms after)",
                q.current_leader
                    .map_or_else(|| "?".to_owned(), |id| id.to_string()),
                age.as_millis(),
                self.lease.as_millis()
            )),
            _ => Ok(()),
        }
    }

    /// A random election timeout in `[election_timeout_min, lease)`.
    fn draw_timeout(&self, rng: &mut StdRng) -> Duration {
        let max = self
            .lease
            .max(self.election_timeout_min + Duration::from_millis(1));
        rng.random_range(self.election_timeout_min..max)
    }
}

/// What a pre-vote is decided on, read at the moment it is asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrevoteQuestion {
    /// Where the candidate's log ends.
    pub candidate_last_log: Option<LogId>,
    /// Where this node's log ends.
    pub my_last_log: Option<LogId>,
    /// This node is the Raft leader.
    pub leader: bool,
    pub quorum_ack_age: Option<Duration>,
    /// The leader this node knows of, for the refusal's text.
    pub current_leader: Option<NodeId>,
    /// Since this node last accepted an append from a leader (None: never since start).
    pub leader_contact_age: Option<Duration>,
    /// This node is a Raft candidate.
    pub candidate: bool,
    /// This node may lead ([`SupervisorState::may_lead`]).
    pub may_lead: bool,
    /// Since this node last started an election after a won pre-vote.
    pub own_election_age: Option<Duration>,
    /// The last node other than the asker that asked for this node's vote: its id, how long
    /// ago, and where its log ends.
    pub other_candidate: Option<(NodeId, Duration, Option<LogId>)>,
}

/// "T3-N1-7" for a log id, "empty" for none.
fn display_log_id(id: Option<LogId>) -> String {
    id.map_or_else(|| "empty".to_owned(), |id| id.to_string())
}

/// This node as the core sees it, fixed for the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setup {
    pub witness: bool,
    /// openraft's own election timer is used only by a single-voter cluster; otherwise the
    /// core runs elections itself, after a pre-vote.
    pub single_voter: bool,
    pub timing: Timing,
}

impl Setup {
    pub fn from_config(config: &Config) -> Self {
        Self {
            witness: config.is_witness(),
            single_voter: config.peers.len() == 1,
            timing: Timing::from_config(config),
        }
    }
}

/// One Raft metrics report, as far as the core cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RaftReport {
    pub state: ServerState,
    pub leader: Option<NodeId>,
    pub term: u64,
    /// As openraft reports it, relative to the moment of the report.
    pub millis_since_quorum_ack: Option<u64>,
}

impl Default for RaftReport {
    fn default() -> Self {
        Self {
            state: ServerState::Follower,
            leader: None,
            term: 0,
            millis_since_quorum_ack: None,
        }
    }
}

/// What happened; the driver feeds one at a time, with the time it happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// A fresh Raft metrics report. Only a fresh report moves the quorum-ack instant: the
    /// age in it is relative to when openraft made it.
    Raft(RaftReport),
    /// The health verdict (false also when the monitor stopped reporting: fail safe).
    Health { healthy: bool },
    /// This node's replicated maintenance flag.
    Maintenance(bool),
    /// Whether this node is a voter of the membership a change is heading to.
    Member(bool),
    /// Why the VIPs cannot be bound here now (None: they can).
    Unbindable(Option<String>),
    /// This node accepted an append from a leader at this instant.
    LeaderContact(Instant),
    /// The answer to [`Action::RequestPreVote`]: a majority, this node included, agrees that
    /// the leader is gone.
    PreVoteAnswer { won: bool },
    /// The answer to [`Action::HandOver`]: the peer that accepted to take over, if any.
    HandOverAnswer { episode: u64, to: Option<NodeId> },
    /// A peer says it holds the VIPs now (it took over): an old holder in a planned overlap
    /// releases.
    SuccessorHolds { from: NodeId },
    /// A leader handing over, from `old_holder` (the address it asked from), asked this node
    /// to take over (make-before-break expected).
    AskedToTakeOver { old_holder: IpAddr },
    /// The answer to [`Action::TellHeld`]: the peer that released for this node, if any.
    HeldAnswer { released_by: Option<NodeId> },
    /// The operator asks this leader to hand leadership to `to` (None: any healthy peer).
    Transfer { to: Option<NodeId> },
    /// Stop (SIGTERM): hand over if leader, then finish.
    Stop,
    /// This node refused a candidate's pre-vote because the candidate's log is behind its own
    /// (a reason to stand as a last resort: [`LAST_RESORT_AFTER`]).
    CandidateBehind,
    /// Nothing new; [`Core::next_deadline`] has passed.
    Tick,
    /// A reload changed this node's setup (its fence, or it became a witness).
    Reload(Setup),
}

/// What the driver must do, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// The VIP layer must not hold (nor renew, nor announce) past this instant (None: no
    /// bound, as nothing is held). Emitted before a hold, and after a release.
    HoldUntil(Option<Instant>),
    /// Bind and announce (true) or release every VIP; emitted only on change.
    SetHeld { hold: bool, reason: Reason },
    /// Switch openraft's own election timer (used by single-voter clusters only).
    RaftElectionTimer(bool),
    /// Switch this leader's heartbeats (off while handing over).
    Heartbeat(bool),
    /// Ask the peers whether they lost the leader too; answer with [`Input::PreVoteAnswer`].
    RequestPreVote,
    /// Start an election now, if Raft is still in `term`: a vote this node granted since
    /// the core's last report may have moved it to a peer's election, which an election in
    /// the term after would depose as it wins (issue 12's second-round tail).
    Elect { term: u64 },
    /// Ask a peer (`to`, or any willing one) to take over; answer with
    /// [`Input::HandOverAnswer`] and this episode. `keeping_vips`: this node keeps the VIPs
    /// until the successor holds them (a planned handover), so the successor guards the
    /// overlap; false when it released them already (unhealthy), with nothing to guard.
    HandOver {
        episode: u64,
        to: Option<NodeId>,
        keeping_vips: bool,
    },
    /// The VIP layer's part in a planned overlap.
    VipOverlap(VipOverlap),
    /// Once the VIPs are bound and announced, tell the peers "I hold the VIPs now"; answer
    /// with [`Input::HeldAnswer`].
    TellHeld,
    /// Announce every held VIP again (the old holder of a planned overlap has released).
    Reannounce,
    /// Run the notify hook.
    Notify(Event, HookContext),
    /// The live view changed; publish it for status, metrics and the API's grant rules.
    Publish(SupervisorState),
    /// Stopping is complete (the release ordered); the driver returns the STOP hook's
    /// context, which the daemon fires once the VIP thread has confirmed the release.
    Done(HookContext),
}

/// The old holder's side of make-before-break, from its step-down to its release.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Overlap {
    until: Instant,
    /// The successor that accepted (None: its answer is still to come, `asking` names the
    /// episode).
    to: Option<NodeId>,
    asking: Option<u64>,
    /// The successor said it holds the VIPs: `until` is the end of the drain.
    confirmed: bool,
}

/// A transfer in progress (`raftvip transfer`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Transfer {
    to: Option<NodeId>,
    until: Instant,
}

/// The episode of "a leader that must not lead": one request to a peer per episode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Handover {
    Idle,
    Asking { episode: u64 },
    Answered { to: Option<NodeId> },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stopping {
    No,
    /// Asked to stop; gives up handing over at this deadline.
    Until(Instant),
    Done,
}

/// Live view of the supervisor, for status, metrics and the grant rules.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SupervisorState {
    pub holds_vips: bool,
    /// See [`Decision::may_lead`].
    pub may_lead: bool,
    pub reason: Reason,
    pub handovers: u64,
    pub leader_changes: u64,
    /// A planned overlap is in progress: this node stepped down for its successor and holds
    /// the VIPs until the successor does.
    pub planned_overlap: bool,
    /// Planned overlaps this node went through as the old holder.
    pub planned_overlaps: u64,
    /// How long each planned overlap lasted, step-down to release.
    pub overlap_duration: FailoverHistogram,
    /// Turns of the supervisor's loop, for the systemd watchdog (a count that stops means a
    /// wedged supervisor). Bumped by the driver without waking watchers.
    #[serde(skip)]
    pub iterations: u64,
    /// Takeovers of the VIPs from another leader, timed by [`failover_duration`].
    pub failover_duration: FailoverHistogram,
    /// When this node last started an election after a won pre-vote (see
    /// [`Timing::grant_prevote`]).
    #[serde(skip)]
    pub elected_at: Option<Instant>,
}

impl Default for SupervisorState {
    fn default() -> Self {
        Self {
            holds_vips: false,
            may_lead: false,
            reason: Reason::NotLeader,
            handovers: 0,
            leader_changes: 0,
            planned_overlap: false,
            planned_overlaps: 0,
            overlap_duration: FailoverHistogram::default(),
            iterations: 0,
            failover_duration: FailoverHistogram::default(),
            elected_at: None,
        }
    }
}

impl SupervisorState {
    /// Ok if this node may take over now (the "elect now" of a handover): healthy, not in
    /// maintenance, not a witness, not stopping. Err names the reason.
    pub fn can_lead(&self) -> Result<(), String> {
        if self.may_lead {
            Ok(())
        } else {
            Err(self.reason.to_string())
        }
    }
}

/// The state machine. See the module docs.
#[derive(Debug)]
pub struct Core {
    setup: Setup,
    rng: StdRng,
    // What was observed.
    raft: RaftReport,
    /// The instant a quorum last acknowledged this leader (None: not leader, or never).
    ack: Option<Instant>,
    healthy: bool,
    maintenance: bool,
    member: bool,
    unbindable: Option<String>,
    leader_contact: Option<Instant>,
    // What was decided.
    applied: Option<Decision>,
    hold_until: Option<Instant>,
    /// The fault episode (unhealthy or unbindable) the FAULT event was sent for.
    in_fault: bool,
    // Election timer (multi-voter clusters): an election is due `lease + stagger` after the
    // last leader contact (or the start), and `lease + timeout` after the last election.
    started: Instant,
    /// When this node last refused a candidate whose log is behind its own.
    candidate_behind: Option<Instant>,
    /// The last election: this node's pre-vote, or a term change (a peer's election).
    last_attempt: Instant,
    /// The Raft term when this node's pending pre-vote was asked.
    attempt_term: u64,
    timeout: Duration,
    prevote_pending: bool,
    handover: Handover,
    episodes: u64,
    /// Make-before-break, the old holder's side.
    overlap: Option<Overlap>,
    /// The successor told us it holds the VIPs while we still lead (its news came before our
    /// step-down): release at the step-down instead of overlapping.
    successor_holds: bool,
    transfer: Option<Transfer>,
    /// Since when the applied decision is a planned overlap.
    overlapping_since: Option<Instant>,
    /// The VIP layer was told to yield (planned handover or overlap).
    yielding: bool,
    /// Asked to take over by a leader handing over: the VIP layer expects the overlap until
    /// then (or until the old holder's answer).
    taking_until: Option<Instant>,
    stopping: Stopping,
    /// When this node last stopped holding, so that regaining the VIPs without another
    /// leader in between is not timed as a failover.
    released_at: Option<Instant>,
    state: SupervisorState,
    published: Option<SupervisorState>,
}

impl Core {
    /// A core that has observed nothing yet (not leader, unhealthy, bindable); `now` starts
    /// the election timer, `seed` draws its timeouts.
    pub fn new(setup: Setup, now: Instant, seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let timeout = setup.timing.draw_timeout(&mut rng);
        Self {
            setup,
            rng,
            raft: RaftReport::default(),
            ack: None,
            healthy: false,
            maintenance: false,
            member: true,
            unbindable: None,
            leader_contact: None,
            applied: None,
            hold_until: None,
            in_fault: false,
            started: now,
            candidate_behind: None,
            last_attempt: now,
            attempt_term: 0,
            timeout,
            prevote_pending: false,
            handover: Handover::Idle,
            episodes: 0,
            overlap: None,
            successor_holds: false,
            transfer: None,
            overlapping_since: None,
            yielding: false,
            taking_until: None,
            stopping: Stopping::No,
            released_at: None,
            state: SupervisorState::default(),
            published: None,
        }
    }

    /// Takes in what happened at `now` and returns what to do. After [`Action::Done`] every
    /// step returns nothing.
    pub fn step(&mut self, now: Instant, input: Input) -> Vec<Action> {
        let mut out = Vec::new();
        if self.stopping == Stopping::Done {
            return out;
        }
        self.observe(now, input, &mut out);
        self.expire(now, &mut out);
        let decision = decide(&self.inputs(now));
        self.apply(now, decision, &mut out);
        self.hand_over(decision, &mut out);
        self.election_timer(now, &mut out);
        let done = self.finish_stop(now, &mut out);
        if self.published.as_ref() != Some(&self.state) {
            self.published = Some(self.state.clone());
            out.push(Action::Publish(self.state.clone()));
        }
        if done {
            out.push(Action::Done(self.hook_context(Reason::Stopping)));
        }
        out
    }

    /// When the driver must call [`Core::step`] with [`Input::Tick`] at the latest: the fence
    /// of a hold, the election timer, the stop's bound.
    pub fn next_deadline(&self) -> Option<Instant> {
        if self.stopping == Stopping::Done {
            return None;
        }
        let election = (self.standing() && !self.prevote_pending).then(|| self.election_due());
        let stop = match self.stopping {
            Stopping::Until(at) => Some(at),
            _ => None,
        };
        let overlap = self.overlap.map(|o| o.until);
        let transfer = self.transfer.map(|t| t.until);
        [
            self.hold_until,
            election,
            stop,
            overlap,
            transfer,
            self.taking_until,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Where the decision stands (for tests and logs).
    pub fn state(&self) -> &SupervisorState {
        &self.state
    }

    fn observe(&mut self, now: Instant, input: Input, out: &mut Vec<Action>) {
        match input {
            Input::Raft(report) => {
                let was_leader = self.raft.state == ServerState::Leader;
                self.observe_raft(now, report);
                self.overlap_on_raft(now, was_leader);
            }
            Input::Health { healthy } => self.healthy = healthy,
            Input::Maintenance(on) => self.maintenance = on,
            Input::Member(member) => self.member = member,
            Input::Unbindable(why) => self.observe_unbindable(why),
            Input::LeaderContact(at) => {
                self.leader_contact = Some(self.leader_contact.map_or(at, |seen| seen.max(at)));
            }
            Input::PreVoteAnswer { won } => self.prevote_answered(now, won, out),
            Input::HandOverAnswer { episode, to } => {
                if self.handover == (Handover::Asking { episode }) {
                    self.handover = Handover::Answered { to };
                }
                if to.is_none() && self.transfer.is_some() {
                    tracing::warn!("transfer failed: the target did not take over; leading on");
                    self.transfer = None;
                }
                self.overlap_answered(episode, to);
            }
            Input::SuccessorHolds { from } => self.successor_holds(now, from),
            Input::AskedToTakeOver { old_holder } => {
                if self.taking_until.replace(now + TAKEOVER_WINDOW).is_none() {
                    out.push(Action::VipOverlap(VipOverlap::Taking { old_holder }));
                }
            }
            Input::HeldAnswer { released_by } => {
                if self.taking_until.take().is_some() {
                    out.push(Action::VipOverlap(VipOverlap::None));
                }
                if let Some(peer) = released_by.filter(|_| self.state.holds_vips) {
                    tracing::info!(peer, "the old holder released: announcing again");
                    out.push(Action::Reannounce);
                }
            }
            Input::Transfer { to } => {
                let holding = self
                    .applied
                    .is_some_and(|d| d.reason == Reason::LeaderWithQuorum);
                if holding && self.transfer.is_none() {
                    tracing::info!(to = ?to, "transferring leadership on request");
                    self.transfer = Some(Transfer {
                        to,
                        until: now + TRANSFER_BOUND,
                    });
                }
            }
            Input::Stop => {
                if self.stopping == Stopping::No {
                    self.stopping = Stopping::Until(now + STOP_HANDOVER_BOUND);
                }
            }
            Input::CandidateBehind => self.candidate_behind = Some(now),
            Input::Tick => {}
            Input::Reload(setup) => self.setup = setup,
        }
    }

    /// Records whether this box could bind its VIPs, logging a change.
    fn observe_unbindable(&mut self, why: Option<String>) {
        if why != self.unbindable {
            match &why {
                Some(why) => {
                    tracing::warn!(%why, "this box cannot serve its VIPs: not eligible to lead")
                }
                None => tracing::info!("every VIP can be bound again: eligible to lead"),
            }
        }
        self.unbindable = why;
    }

    /// The pre-vote's outcome: elect only if still eligible, no leader spoke since the attempt
    /// began, and no peer's election began meanwhile (electing in the term after it would
    /// depose the peer as it wins, and cost the cluster another election).
    fn prevote_answered(&mut self, now: Instant, won: bool, out: &mut Vec<Action>) {
        self.prevote_pending = false;
        let leader_spoke = self.leader_contact.is_some_and(|at| at > self.last_attempt);
        let last_resort_due = now >= self.heard() + LAST_RESORT_AFTER;
        let may_lead = self.applied.is_some_and(|d| d.may_lead);
        if !won || !(may_lead || self.may_stand() && last_resort_due) || leader_spoke {
            return;
        }
        if self.raft.term != self.attempt_term {
            tracing::info!(
                term = self.raft.term,
                "a peer's election began during this pre-vote: leaving it the term"
            );
            return;
        }
        match self.applied.filter(|d| !d.may_lead) {
            None => tracing::info!("leader lost and a majority agrees: starting an election"),
            Some(d) => tracing::warn!(
                reason = %d.reason,
                "no leader for {} s: standing although this node may not lead, to hand leadership to one that may",
                LAST_RESORT_AFTER.as_secs()
            ),
        }
        out.push(Action::Elect {
            term: self.attempt_term,
        });
        self.state.elected_at = Some(now);
    }

    /// Logs role and leader transitions, counts leader changes and moves the ack instant.
    fn observe_raft(&mut self, now: Instant, r: RaftReport) {
        let before = self.raft;
        if before.state != r.state {
            tracing::info!(from = ?before.state, to = ?r.state, term = r.term, "raft role changed");
        }
        if before.leader != r.leader && r.leader.is_some() {
            self.state.leader_changes += 1;
            tracing::info!(from = ?before.leader, to = ?r.leader, term = r.term, "leader changed");
        }
        // A new term is an election under way (a peer's, or this node's own): the next one
        // is timed from it, so that a candidate this node voted for has time to win.
        if r.term > before.term {
            self.last_attempt = self.last_attempt.max(now);
        }
        let reported = (r.state == ServerState::Leader)
            .then_some(r.millis_since_quorum_ack)
            .flatten()
            .map(|ms| now.checked_sub(Duration::from_millis(ms)).unwrap_or(now));
        // A leader gets a report after each of its ticks and each answer, three or more per
        // acknowledgement, and the whole milliseconds make them jitter around it. One within
        // the resolution of the acknowledgement in force is that one again: the fence stays
        // where it is instead of moving back and forth, each move back waking the VIP thread
        // for nothing. Kept where it was, it is at most 1 ms late, well within
        // FENCE_SLACK_MS; a new acknowledgement comes a heartbeat later, well outside.
        let same_term_as_leader = before.state == ServerState::Leader
            && r.state == ServerState::Leader
            && before.term == r.term;
        self.ack = match (self.ack, reported) {
            (Some(known), Some(at))
                if same_term_as_leader && at.max(known) - at.min(known) < ACK_REPORT_RESOLUTION =>
            {
                Some(known)
            }
            _ => reported,
        };
        self.raft = r;
    }

    /// Starts the overlap when this leader steps down in a planned handover it started (its
    /// successor accepted, or has yet to answer), and ends it when the facts contradict it:
    /// it leads again, or a leader other than its successor leads.
    fn overlap_on_raft(&mut self, now: Instant, was_leader: bool) {
        let leader = self.raft.state == ServerState::Leader;
        if was_leader && !leader {
            let planned = self
                .applied
                .is_some_and(|d| d.reason == Reason::HandingOver);
            let successor = match self.handover {
                Handover::Asking { episode } => Some((None, Some(episode))),
                Handover::Answered { to: Some(to) } => Some((Some(to), None)),
                _ => None,
            };
            match successor {
                Some((to, asking)) if planned => {
                    let confirmed = self.successor_holds;
                    tracing::info!(
                        successor = ?to,
                        successor_holds = confirmed,
                        "stepped down for the successor: keeping the VIPs until it holds them (planned overlap)"
                    );
                    self.overlap = Some(Overlap {
                        until: now
                            + if confirmed {
                                OVERLAP_DRAIN
                            } else {
                                OVERLAP_BOUND
                            },
                        to,
                        asking,
                        confirmed,
                    });
                }
                _ => {}
            }
            self.successor_holds = false;
        }
        if let Some(o) = self.overlap {
            let other = matches!((o.to, self.raft.leader), (Some(to), Some(l)) if l != to);
            if leader || other {
                tracing::warn!(
                    leader = ?self.raft.leader,
                    successor = ?o.to,
                    "planned overlap ends: the successor is not the leader; releasing now"
                );
                self.overlap = None;
            }
        }
    }

    /// The successor's answer came after the step-down: nobody (release now) or its id.
    fn overlap_answered(&mut self, episode: u64, to: Option<NodeId>) {
        let Some(o) = self.overlap.as_mut().filter(|o| o.asking == Some(episode)) else {
            return;
        };
        let other = matches!((to, self.raft.leader), (Some(to), Some(l)) if l != to);
        if to.is_none() || other {
            tracing::warn!(successor = ?to, leader = ?self.raft.leader, "planned overlap ends: the successor is not the leader; releasing now");
            self.overlap = None;
        } else {
            o.to = to;
            o.asking = None;
        }
    }

    /// A peer says it holds the VIPs: an overlap ends after [`OVERLAP_DRAIN`] (whoever it
    /// is: holding on longer would only make two holders longer); a leader still handing
    /// over drains from its step-down.
    fn successor_holds(&mut self, now: Instant, from: NodeId) {
        if let Some(o) = self.overlap.as_mut().filter(|o| !o.confirmed) {
            let took = self
                .overlapping_since
                .map_or(Duration::ZERO, |at| now.saturating_duration_since(at));
            tracing::info!(
                peer = from,
                successor = ?o.to,
                overlap_ms = took.as_millis() as u64,
                drain_ms = OVERLAP_DRAIN.as_millis() as u64,
                "the successor holds the VIPs: releasing once open requests had time to finish"
            );
            o.confirmed = true;
            o.until = o.until.min(now + OVERLAP_DRAIN);
        } else if self
            .applied
            .is_some_and(|d| d.reason == Reason::HandingOver)
        {
            tracing::info!(
                peer = from,
                "the successor holds the VIPs before this node saw itself step down: releasing at the step-down"
            );
            self.successor_holds = true;
        } else {
            tracing::debug!(
                peer = from,
                "a peer holds the VIPs; no planned overlap here"
            );
        }
    }

    /// Ends the overlap (drained, or at its bound), the expectation of one and the transfer
    /// at their deadlines (and the transfer once this node no longer leads: it is done).
    fn expire(&mut self, now: Instant, out: &mut Vec<Action>) {
        if let Some(o) = self.overlap.filter(|o| now >= o.until) {
            if o.confirmed {
                tracing::info!("planned overlap drained: releasing");
            } else {
                tracing::warn!(
                    bound_ms = OVERLAP_BOUND.as_millis() as u64,
                    "the successor did not say it holds the VIPs in time: releasing anyway"
                );
            }
            self.overlap = None;
        }
        if self.taking_until.is_some_and(|at| now >= at) {
            self.taking_until = None;
            out.push(Action::VipOverlap(VipOverlap::None));
        }
        if let Some(t) = self.transfer {
            if self.raft.state != ServerState::Leader {
                self.transfer = None;
            } else if now >= t.until {
                tracing::warn!(to = ?t.to, "transfer did not finish in time: leading on");
                self.transfer = None;
            }
        }
    }

    fn inputs(&self, now: Instant) -> Inputs {
        Inputs {
            witness: self.setup.witness,
            leader: self.raft.state == ServerState::Leader,
            quorum_ack_age: self.ack.map(|at| now.saturating_duration_since(at)),
            fence: self.setup.timing.fence,
            healthy: self.healthy,
            maintenance: self.maintenance,
            stopping: self.stopping != Stopping::No,
            transferring: self.transfer.is_some(),
            overlap: self.overlap.is_some_and(|o| now < o.until),
            vips_bindable: self.unbindable.is_none(),
            member: self.member,
            holding: self.state.holds_vips,
        }
    }

    /// Carries out the difference between the applied decision and `d`.
    fn apply(&mut self, now: Instant, d: Decision, out: &mut Vec<Action>) {
        let before = self.applied.replace(d);
        if before.map(|b| b.may_lead) != Some(d.may_lead) {
            out.push(Action::RaftElectionTimer(
                d.may_lead && self.setup.single_voter,
            ));
            tracing::info!(may_lead = d.may_lead, reason = %d.reason, "may lead: {}", if d.may_lead { "yes" } else { "no" });
        }
        if before.map(|b| b.heartbeat) != Some(d.heartbeat) {
            out.push(Action::Heartbeat(d.heartbeat));
        }
        // The VIP thread never holds past the fence. Order matters, as it may act on any
        // intermediate state: a deadline before a hold, a release before clearing it.
        let deadline = match self.overlap {
            Some(o) if d.reason == Reason::PlannedOverlap => Some(o.until),
            _ => self
                .ack
                .filter(|_| d.hold_vips)
                .map(|at| at + self.setup.timing.fence),
        };
        if deadline.is_some() && deadline != self.hold_until {
            out.push(Action::HoldUntil(deadline));
        }
        let was_holding = before.is_some_and(|b| b.hold_vips);
        let takeover = d.hold_vips && !was_holding && self.raft.state == ServerState::Leader;
        if before.map(|b| b.hold_vips) != Some(d.hold_vips) {
            out.push(Action::SetHeld {
                hold: d.hold_vips,
                reason: d.reason,
            });
            self.account_hold_change(now, was_holding, d);
        }
        if deadline.is_none() && self.hold_until.is_some() {
            out.push(Action::HoldUntil(None));
        }
        self.hold_until = deadline;
        self.notify(before, d, out);
        self.account_overlap(now, d, out);
        if takeover {
            // Tell the peers, so an old holder in a planned overlap releases.
            out.push(Action::TellHeld);
        }
        if d.hand_over && !before.is_some_and(|b| b.hand_over) {
            tracing::info!(reason = %d.reason, "leader must not lead: handing over");
            self.state.handovers += 1;
        }
        self.state.holds_vips = d.hold_vips;
        self.state.may_lead = d.may_lead;
        self.state.reason = d.reason;
    }

    /// Logs a hold change and times a takeover.
    fn account_hold_change(&mut self, now: Instant, was_holding: bool, d: Decision) {
        if was_holding || d.hold_vips {
            tracing::info!(
                from = if was_holding { "holder" } else { "standby" },
                to = if d.hold_vips { "holder" } else { "standby" },
                reason = %d.reason,
                quorum_ack_ms = ?self.ack.map(|at| now.saturating_duration_since(at).as_millis()),
                "VIP ownership changed"
            );
        }
        if was_holding {
            self.released_at = Some(now);
        } else if let Some(took) =
            failover_duration(self.leader_contact, self.released_at, now).filter(|_| d.hold_vips)
        {
            tracing::info!(
                seconds = took.as_secs_f64(),
                "took the VIPs over from the previous leader"
            );
            self.state.failover_duration.observe(took);
        }
    }

    /// Tells the VIP layer to yield from the start of a planned handover to the end of its
    /// overlap (the successor's first frames may come before this node sees itself step
    /// down), and counts and times the overlap.
    fn account_overlap(&mut self, now: Instant, d: Decision, out: &mut Vec<Action>) {
        let yielding = matches!(d.reason, Reason::HandingOver | Reason::PlannedOverlap);
        if yielding != self.yielding {
            self.yielding = yielding;
            out.push(Action::VipOverlap(if yielding {
                VipOverlap::Yielding
            } else {
                VipOverlap::None
            }));
        }
        let overlapping = d.reason == Reason::PlannedOverlap;
        match self.overlapping_since {
            None if overlapping => {
                self.overlapping_since = Some(now);
                self.state.planned_overlaps += 1;
            }
            Some(since) if !overlapping => {
                self.overlapping_since = None;
                self.overlap = None;
                self.state
                    .overlap_duration
                    .observe(now.saturating_duration_since(since));
            }
            _ => {}
        }
        self.state.planned_overlap = overlapping;
    }

    /// BACKUP at start (unless holding), MASTER on every takeover, BACKUP on a release that is
    /// not a fault, FAULT once per episode of unhealthy or unbindable after the start.
    fn notify(&mut self, before: Option<Decision>, d: Decision, out: &mut Vec<Action>) {
        let was_holding = before.is_some_and(|b| b.hold_vips);
        let fault = matches!(d.reason, Reason::Unhealthy | Reason::VipUnbindable);
        let event = match before {
            None if !d.hold_vips => Some(Event::Backup),
            _ if d.hold_vips && !was_holding => Some(Event::Master),
            Some(_) if was_holding && !d.hold_vips && !fault => Some(Event::Backup),
            _ => None,
        };
        if let Some(event) = event {
            out.push(Action::Notify(event, self.hook_context(d.reason)));
        }
        if fault && !self.in_fault && before.is_some() {
            out.push(Action::Notify(Event::Fault, self.hook_context(d.reason)));
        }
        self.in_fault = fault;
    }

    fn hook_context(&self, reason: Reason) -> HookContext {
        HookContext {
            leader_id: self.raft.leader,
            term: self.raft.term,
            reason: reason.to_string(),
        }
    }

    /// One request to a peer per episode of "leader that must not lead".
    fn hand_over(&mut self, d: Decision, out: &mut Vec<Action>) {
        if !d.hand_over {
            self.handover = Handover::Idle;
            self.successor_holds = false;
        } else if self.handover == Handover::Idle {
            self.episodes += 1;
            self.handover = Handover::Asking {
                episode: self.episodes,
            };
            out.push(Action::HandOver {
                episode: self.episodes,
                to: self.transfer.and_then(|t| t.to),
                keeping_vips: d.hold_vips,
            });
        }
    }

    /// Stands in elections: may lead (or stand as a last resort), not leader, not a single
    /// voter (openraft's own timer runs those), and not in a planned overlap (the successor it
    /// asked is being elected: competing would move the VIPs to the wrong node, or back).
    fn standing(&self) -> bool {
        !self.setup.single_voter
            && self.may_stand()
            && self.raft.state != ServerState::Leader
            && self.overlap.is_none()
    }

    /// May lead, or may stand as a last resort ([`LAST_RESORT_AFTER`]): a voter that is only
    /// kept from leading by its own state, and that refused a candidate whose log is behind
    /// its own since it last heard from a leader. Never a stopping node, nor one outside the
    /// membership (it could not win).
    fn may_stand(&self) -> bool {
        let behind_since_leader = self.candidate_behind.is_some_and(|at| at >= self.heard());
        self.applied.is_some_and(|d| {
            d.may_lead
                || behind_since_leader
                    && matches!(
                        d.reason,
                        Reason::Maintenance
                            | Reason::Unhealthy
                            | Reason::VipUnbindable
                            | Reason::Witness
                    )
        })
    }

    /// `lease + stagger` after the last leader contact (or the start, which may follow a
    /// contact this node forgot; [`LAST_RESORT_AFTER`] instead of the lease for a node that
    /// may not lead), but no sooner than `lease + timeout` after the last
    /// election. Not stacked on the first attempt: a survivor stands as soon as the lease it
    /// and its peers hold for the lost leader runs out — no voter could grant a vote before,
    /// and the fence has released by then (docs/timing.md). The attempts after it are spaced
    /// a lease plus a random timeout apart, as every attempt was before issue 12: long enough
    /// for a peer's election to finish on a loaded box (with only the timeout, two survivors
    /// whose round trips took longer than it bumped the term in turn), and no pre-vote storm
    /// from a node that is merely cut off.
    fn election_due(&self) -> Instant {
        let heard = self.heard();
        let timing = self.setup.timing;
        let wait = if self.applied.is_some_and(|d| d.may_lead) {
            timing.lease
        } else {
            LAST_RESORT_AFTER
        };
        let lost = heard + wait + timing.stagger;
        lost.max(self.last_attempt + timing.lease + self.timeout)
    }

    /// The last leader contact, or the start.
    fn heard(&self) -> Instant {
        self.leader_contact.unwrap_or(self.started)
    }

    /// Pre-vote first, so a node that is merely cut off never burns a term.
    fn election_timer(&mut self, now: Instant, out: &mut Vec<Action>) {
        if self.standing() && !self.prevote_pending && now >= self.election_due() {
            self.last_attempt = now;
            self.attempt_term = self.raft.term;
            self.timeout = self.setup.timing.draw_timeout(&mut self.rng);
            self.prevote_pending = true;
            out.push(Action::RequestPreVote);
        }
    }

    /// A stopping node is done once it no longer leads, when nobody would take over, or at
    /// the stop's bound; then it releases (and the step ends with [`Action::Done`]).
    fn finish_stop(&mut self, now: Instant, out: &mut Vec<Action>) -> bool {
        let Stopping::Until(bound) = self.stopping else {
            return false;
        };
        let leader = self.raft.state == ServerState::Leader;
        let nobody = self.handover == (Handover::Answered { to: None });
        if (leader && !nobody || self.overlap.is_some()) && now < bound {
            return false;
        }
        if leader && !nobody {
            tracing::warn!("handover did not finish in time; releasing VIPs anyway");
        }
        let release = Decision {
            hold_vips: false,
            may_lead: false,
            heartbeat: self.applied.is_none_or(|b| b.heartbeat),
            hand_over: false,
            reason: Reason::Stopping,
        };
        self.apply(now, release, out);
        self.stopping = Stopping::Done;
        true
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

#[cfg(test)]
mod tests;
