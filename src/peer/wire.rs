//! What both ends of the peer wire agree on: the paths and the messages.
//!
//! The Raft RPCs carry openraft's own request and response types (JSON) on the three
//! `/raft/` paths; raftvip's own calls (handover, pre-vote, maintenance, membership) carry the small
//! messages below. Every path here is signed (see [`crate::auth`]); changing one breaks
//! mixed-version clusters, so they are written once, here, for the client and the server.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::raft::typ::{LogId, RaftMetrics, StoredMembership, Vote, VoteRequest};
use crate::raft::NodeId;

pub const APPEND_PATH: &str = "/raft/append";
pub const VOTE_PATH: &str = "/raft/vote";
pub const SNAPSHOT_PATH: &str = "/raft/snapshot";
/// "Start an election now, if you may lead": a leader handing over asks this.
pub const ELECT_PATH: &str = "/v1/elect";
pub const PREVOTE_PATH: &str = "/v1/prevote";
pub const MAINTENANCE_PATH: &str = "/v1/maintenance";
/// "Make the membership this `[[peer]]` list": a reload forwards its file's list to the leader.
pub const MEMBERS_PATH: &str = "/v1/members";
/// "What membership do you replicate?": a fresh box asks before it bootstraps a cluster.
pub const MEMBERSHIP_PATH: &str = "/v1/membership";
/// "You were removed from the cluster": the leader tells a box it removed.
pub const REMOVED_PATH: &str = "/v1/removed";
/// "I hold the VIPs now": a new holder tells its peers, so the old holder of a planned
/// overlap releases (answer accepted: it released).
pub const HELD_PATH: &str = "/v1/held";
/// "Could you lead now?" (healthy, not in maintenance, not a witness): a transfer's check.
pub const CAN_LEAD_PATH: &str = "/v1/can-lead";
/// `raftvip transfer`: sent to the local daemon, forwarded to the leader.
pub const TRANSFER_PATH: &str = "/v1/transfer";
/// "Re-read your config file": `raftvip reload` asks the daemon on its own box.
pub const RELOAD_PATH: &str = "/v1/reload";

/// The answer to "start an election now" and to a pre-vote.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PeerAnswer {
    pub accepted: bool,
    pub reason: Option<String>,
}

impl PeerAnswer {
    /// Accepted if `verdict` is Ok, else refused with its reason.
    pub fn from_verdict(verdict: Result<(), String>) -> Self {
        match verdict {
            Ok(()) => Self {
                accepted: true,
                reason: None,
            },
            Err(reason) => Self {
                accepted: false,
                reason: Some(reason),
            },
        }
    }
}

/// "Start an election now", from a leader handing over. An older peer sent no message
/// (`null`): it is read as a planned handover, which was the only guarded kind then.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ElectRequest {
    /// The asking leader keeps the VIPs until this node holds them (a planned handover): the
    /// successor guards the connections still open with it. False when it released them
    /// already (its HAProxy is unhealthy): there is no overlap to guard or wait for.
    pub old_holder_keeps_vips: bool,
    /// Where the asking leader's log ends. The successor waits (briefly) until its own log
    /// reaches it before it stands: a log one entry behind (the maintenance flag the leader
    /// just wrote, say) loses every vote, and once the leader has stepped down for the new
    /// term nobody would bring it up to date. Absent from older peers.
    #[serde(default)]
    pub leader_last_log_index: Option<u64>,
    /// The asking leader and its term, which the successor's vote requests pass on. Absent
    /// from older peers.
    #[serde(default)]
    pub handing_over: Option<HandingOver>,
}

/// A leader handing over, and its term: a successor's vote requests carry it, and a voter
/// that follows this leader in this term ends its lease on it when one arrives
/// ([`crate::raft::lease_clock`]): the leader asked for this election itself.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct HandingOver {
    pub leader: NodeId,
    pub term: u64,
}

impl HandingOver {
    /// The leader a node's own `vote` follows, if it is committed (a leader was elected).
    pub fn leader_of(vote: &Vote) -> Option<Self> {
        let leader = vote.leader_id();
        Some(Self {
            leader: leader.voted_for().filter(|_| vote.is_committed())?,
            term: leader.term,
        })
    }

    /// Whether voter `me`, whose own vote is `vote`, ends its lease for a candidate of
    /// `candidate_term` that passes this on: the leader handing over is the one it follows,
    /// in the same term (not a later leader's, not itself), and the candidate stands after it.
    pub fn ends_lease_of(&self, me: NodeId, vote: &Vote, candidate_term: u64) -> bool {
        Self::leader_of(vote) == Some(*self) && self.leader != me && candidate_term > self.term
    }
}

/// A Raft vote request as it travels: openraft's, and the handover that made the candidate
/// stand, if one did. An older peer reads the request and ignores the handover.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VoteMessage {
    #[serde(flatten)]
    pub rpc: VoteRequest,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handover: Option<HandingOver>,
}

/// A pre-vote: the end of the asking node's log, so a node whose log is behind is refused
/// here, before it starts an election it cannot win.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PrevoteRequest {
    pub last_log_id: Option<LogId>,
}

/// A maintenance change, as sent by `raftvip maintenance` or forwarded to the leader.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MaintenanceRequest {
    pub node_id: NodeId,
    pub on: bool,
    /// Turn it on even if this takes the VIPs from the leader with nobody to hand them to.
    #[serde(default)]
    pub force: bool,
    /// Set when a follower forwards to the leader, so a request never loops.
    #[serde(default)]
    pub forwarded: bool,
}

/// "I hold the VIPs now", from `node_id`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct HeldRequest {
    pub node_id: NodeId,
}

/// A transfer of leadership to `to` (None: any node that can lead), as sent by
/// `raftvip transfer` or forwarded to the leader. Answered with the id of the new leader.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TransferRequest {
    pub to: Option<NodeId>,
    /// Set when a follower forwards to the leader, so a request never loops.
    #[serde(default)]
    pub forwarded: bool,
}

/// Members by id, with their `IP:PORT`: a file's `[[peer]]` list or the replicated one.
pub type Addresses = BTreeMap<NodeId, String>;

/// A `[[peer]]` list for the leader to make the membership (see `crate::membership`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MembersRequest {
    pub peers: Addresses,
    /// Set when a follower forwards to the leader, so a request never loops.
    #[serde(default)]
    pub forwarded: bool,
}

/// The replicated membership as one node sees it: the answer to [`MEMBERSHIP_PATH`] and to a
/// [`MembersRequest`] (the membership after the change).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct MembershipView {
    /// The voter sets: one, or two while a change is in its joint phase (old, then new).
    pub configs: Vec<Vec<NodeId>>,
    /// Every voter and learner, with its address.
    pub nodes: Addresses,
}

impl MembershipView {
    pub fn of(m: &RaftMetrics) -> Self {
        Self::of_stored(&m.membership_config)
    }

    pub fn of_stored(stored: &StoredMembership) -> Self {
        let membership = stored.membership();
        Self {
            configs: membership
                .get_joint_config()
                .iter()
                .map(|c| c.iter().copied().collect())
                .collect(),
            nodes: membership
                .nodes()
                .map(|(id, node)| (*id, node.addr.clone()))
                .collect(),
        }
    }

    /// No membership yet: a fresh store that has not bootstrapped nor been added.
    pub fn is_empty(&self) -> bool {
        self.configs.iter().all(Vec::is_empty)
    }

    /// Voters of every config (both, while joint), with their addresses.
    pub fn voters(&self) -> Vec<(NodeId, String)> {
        self.nodes
            .iter()
            .filter(|(id, _)| self.configs.iter().any(|c| c.contains(id)))
            .map(|(id, address)| (*id, address.clone()))
            .collect()
    }

    /// The voter set a change is heading to (the only one when not joint).
    pub fn target(&self) -> &[NodeId] {
        self.configs.last().map_or(&[], Vec::as_slice)
    }

    pub fn is_joint(&self) -> bool {
        self.configs.len() > 1
    }
}

/// Sent by the leader to a box it removed from the membership.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RemovedNotice {
    /// The leader that removed it.
    pub by: NodeId,
    /// The voters after the change.
    pub voters: Vec<NodeId>,
}

/// A reload request: the config file the operator named, which must be the daemon's own.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReloadRequest {
    pub path: String,
}

/// What a reload did: the changes applied, or why nothing was.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadOutcome {
    /// The file that was read.
    pub path: String,
    /// One line per change applied (empty when rejected, or when nothing changed).
    pub applied: Vec<String>,
    /// Why the file was rejected; non-empty means nothing changed.
    pub problems: Vec<String>,
    /// What became of a changed `[[peer]]` list (None: it did not change, or an older daemon
    /// answered, which did not wait for the membership).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub membership: Option<MembershipOutcome>,
}

/// The membership change a reload's `[[peer]]` list asked for, as far as the reload waited.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MembershipOutcome {
    /// The membership is the list now: its voter sets.
    Applied(Vec<Vec<NodeId>>),
    /// The change was not made, and why.
    Failed(String),
    /// Still under way when the reload stopped waiting: the log and `status` tell the rest.
    Pending,
}

impl ReloadOutcome {
    pub fn accepted(&self) -> bool {
        self.problems.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::CommittedLeaderId;

    /// Boxes of different versions share a cluster during a rolling upgrade: the paths and the
    /// JSON of raftvip's own messages are part of the wire and must not drift.
    #[test]
    fn paths_and_messages_keep_their_wire_form() {
        assert_eq!(
            [
                APPEND_PATH,
                VOTE_PATH,
                SNAPSHOT_PATH,
                ELECT_PATH,
                PREVOTE_PATH,
                MAINTENANCE_PATH,
                HELD_PATH,
                CAN_LEAD_PATH,
                TRANSFER_PATH,
                MEMBERS_PATH,
                MEMBERSHIP_PATH,
                REMOVED_PATH
            ],
            [
                "/raft/append",
                "/raft/vote",
                "/raft/snapshot",
                "/v1/elect",
                "/v1/prevote",
                "/v1/maintenance",
                "/v1/held",
                "/v1/can-lead",
                "/v1/transfer",
                "/v1/members",
                "/v1/membership",
                "/v1/removed"
            ]
        );
        assert_eq!(
            json(&PeerAnswer::from_verdict(Ok(()))),
            r#"{"accepted":true,"reason":null}"#
        );
        assert_eq!(
            json(&PeerAnswer::from_verdict(Err("HAProxy unhealthy".into()))),
            r#"{"accepted":false,"reason":"HAProxy unhealthy"}"#
        );
        let last_log_id = Some(LogId::new(CommittedLeaderId::new(3, 1), 7));
        assert_eq!(
            json(&PrevoteRequest { last_log_id }),
            r#"{"last_log_id":{"leader_id":{"term":3,"node_id":1},"index":7}}"#
        );
        assert_eq!(
            json(&PrevoteRequest { last_log_id: None }),
            r#"{"last_log_id":null}"#
        );
        assert_eq!(json(&HeldRequest { node_id: 2 }), r#"{"node_id":2}"#);
        assert_eq!(
            json(&TransferRequest {
                to: Some(3),
                forwarded: false
            }),
            r#"{"to":3,"forwarded":false}"#
        );
    }

    /// A request from a raftvip that predates forwarding has no `forwarded` field.
    #[test]
    fn a_maintenance_request_without_forwarded_is_not_forwarded() {
        let request: MaintenanceRequest =
            serde_json::from_str(r#"{"node_id":2,"on":true}"#).unwrap();
        assert_eq!(
            (request.node_id, request.on, request.forwarded),
            (2, true, false)
        );
    }

    /// A vote request keeps openraft's form, with the handover beside its fields: an older
    /// peer reads it as openraft's request, and one without a handover is openraft's exactly.
    #[test]
    fn a_vote_message_is_openrafts_request_with_the_handover_beside_it() {
        let rpc = VoteRequest::new(
            Vote::new(4, 2),
            Some(LogId::new(CommittedLeaderId::new(3, 1), 7)),
        );
        let plain = json(&rpc);
        let message = VoteMessage {
            rpc: rpc.clone(),
            handover: None,
        };
        assert_eq!(json(&message), plain);
        let message = VoteMessage {
            handover: Some(HandingOver { leader: 1, term: 3 }),
            ..message
        };
        let sent = json(&message);
        assert_eq!(
            sent,
            format!(
                "{},\"handover\":{{\"leader\":1,\"term\":3}}}}",
                plain.strip_suffix('}').unwrap()
            )
        );
        assert_eq!(serde_json::from_str::<VoteRequest>(&sent).unwrap(), rpc);
        let read: VoteMessage = serde_json::from_str(&sent).unwrap();
        assert_eq!((read.rpc, read.handover), (rpc.clone(), message.handover));
        let read: VoteMessage = serde_json::from_str(&plain).unwrap();
        assert_eq!((read.rpc, read.handover), (rpc, None));
        // An elect request from a peer that predates the handover's leader.
        let older: ElectRequest =
            serde_json::from_str(r#"{"old_holder_keeps_vips":false,"leader_last_log_index":9}"#)
                .unwrap();
        assert_eq!(older.handing_over, None);
    }

    /// Only a voter that follows the leader handing over, in its term, ends its lease on it,
    /// and only for a candidate that stands after that term.
    #[test]
    fn a_handover_ends_the_lease_only_on_the_leaders_own_followers() {
        let committed = |term, leader| {
            let mut vote = Vote::new(term, leader);
            vote.commit();
            vote
        };
        let handover = HandingOver { leader: 1, term: 3 };
        assert_eq!(HandingOver::leader_of(&committed(3, 1)), Some(handover));
        assert_eq!(
            HandingOver::leader_of(&Vote::new(3, 1)),
            None,
            "no leader yet"
        );
        // (voter, its own vote, the candidate's term, ends its lease, why)
        #[rustfmt::skip]
        let cases = [
            (2, committed(3, 1), 4, true, "a follower of the leader, for a later candidate"),
            (1, committed(3, 1), 4, false, "the leader itself"),
            (2, committed(5, 4), 6, false, "a later leader's follower"),
            (2, committed(3, 4), 4, false, "another leader"),
            (2, committed(5, 1), 6, false, "the same leader, elected again later"),
            (2, Vote::new(4, 2), 4, false, "a voter that stands itself"),
            (2, committed(3, 1), 3, false, "a candidate of the leader's own term"),
        ];
        for (me, vote, candidate_term, ends, case) in cases {
            assert_eq!(
                handover.ends_lease_of(me, &vote, candidate_term),
                ends,
                "{case}"
            );
        }
    }

    fn json(value: &impl Serialize) -> String {
        serde_json::to_string(value).unwrap()
    }

    /// `raftvip reload` of one version asks a daemon of another during an upgrade.
    #[test]
    fn reload_messages_keep_their_wire_form() {
        assert_eq!(RELOAD_PATH, "/v1/reload");
        assert_eq!(
            json(&ReloadRequest {
                path: "/etc/raftvip/raftvip.toml".into()
            }),
            r#"{"path":"/etc/raftvip/raftvip.toml"}"#
        );
        let outcome = ReloadOutcome {
            path: "/etc/raftvip/raftvip.toml".into(),
            applied: vec![],
            problems: vec!["listen: needs a restart".into()],
            membership: None,
        };
        // Also what a daemon that did not wait for the membership answered.
        let older = r#"{"path":"/etc/raftvip/raftvip.toml","applied":[],"problems":["listen: needs a restart"]}"#;
        assert_eq!(json(&outcome), older);
        assert_eq!(
            serde_json::from_str::<ReloadOutcome>(older).unwrap(),
            outcome
        );
        assert!(!outcome.accepted());
        let applied = MembershipOutcome::Applied(vec![vec![1, 2, 3, 4]]);
        assert_eq!(json(&applied), r#"{"applied":[[1,2,3,4]]}"#);
        assert_eq!(
            json(&MembershipOutcome::Failed("no leader".into())),
            r#"{"failed":"no leader"}"#
        );
        assert_eq!(json(&MembershipOutcome::Pending), r#""pending""#);
    }
}
