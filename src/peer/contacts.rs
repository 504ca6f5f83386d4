//! When this node last heard from each peer, from a leader and from a candidate, and which
//! leader last asked it to take over.
//!
//! Both sides of the wire feed it (a signed request from a peer, a signed answer to one of
//! ours), and four readers need it: the status document (each peer's last contact), the
//! pre-vote ("is a leader alive?", "is an election under way?"), the vote gate ("has a
//! leader restored my term?") and this node's vote requests (which handover they carry).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::wire::HandingOver;
use crate::raft::typ::LogId;
use crate::raft::NodeId;

/// Contacts remembered at most: node ids come from signed requests, so only peers choose
/// them, but a misconfigured peer must not grow the table either.
const MAX_CONTACTS: usize = 64;

/// When this node last heard from each peer (a request from it, or an answer to us), and
/// when it last accepted an append from a leader (the pre-vote's "is a leader alive?").
#[derive(Default)]
pub struct Contacts {
    peers: Mutex<HashMap<NodeId, Instant>>,
    leader: Mutex<Option<Instant>>,
    candidate: Mutex<Option<CandidateSeen>>,
    /// The leader that last asked this node to take over, until when its vote requests say so.
    asked_by: Mutex<Option<(HandingOver, Instant)>>,
}

/// The last vote request from a candidate: who, when, and where its log ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CandidateSeen {
    pub id: NodeId,
    pub at: Instant,
    pub last_log: Option<LogId>,
}

impl Contacts {
    pub fn touch(&self, id: NodeId) {
        let mut peers = crate::sync::lock(&self.peers);
        if peers.len() >= MAX_CONTACTS && !peers.contains_key(&id) {
            if let Some(oldest) = peers.iter().min_by_key(|(_, at)| **at).map(|(id, _)| *id) {
                peers.remove(&oldest);
            }
        }
        peers.insert(id, Instant::now());
    }
    /// Peers remembered (for the metrics).
    pub fn len(&self) -> usize {
        crate::sync::lock(&self.peers).len()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn age(&self, id: NodeId) -> Option<Duration> {
        crate::sync::lock(&self.peers)
            .get(&id)
            .map(Instant::elapsed)
    }
    /// A leader's append was accepted just now.
    pub fn touch_leader(&self) {
        *crate::sync::lock(&self.leader) = Some(Instant::now());
    }
    /// When an append from a leader was last accepted (None: never since start).
    pub fn last_leader_contact(&self) -> Option<Instant> {
        *crate::sync::lock(&self.leader)
    }
    /// Candidate `id`, whose log ends at `last_log`, asked for this node's vote just now.
    pub fn touch_candidate(&self, id: NodeId, last_log: Option<LogId>) {
        *crate::sync::lock(&self.candidate) = Some(CandidateSeen {
            id,
            at: Instant::now(),
            last_log,
        });
    }
    /// The last candidate that asked for this node's vote (None: none since start).
    pub fn last_candidate(&self) -> Option<CandidateSeen> {
        *crate::sync::lock(&self.candidate)
    }
    /// `leader` asked this node to take over just now: its vote requests of a later term say
    /// so `for_how_long`.
    pub fn asked_to_take_over_by(&self, leader: HandingOver, for_how_long: Duration) {
        *crate::sync::lock(&self.asked_by) = Some((leader, Instant::now() + for_how_long));
    }
    /// The handover a vote request of `term` from this node carries, if any.
    pub fn handover_for(&self, term: u64) -> Option<HandingOver> {
        crate::sync::lock(&self.asked_by)
            .filter(|(leader, until)| term > leader.term && Instant::now() < *until)
            .map(|(leader, _)| leader)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 7: contacts are keyed by node ids from signed requests; 100,000 distinct ids
    /// leave at most MAX_CONTACTS entries, the most recent ones.
    #[test]
    fn contacts_stay_bounded() {
        let contacts = Contacts::default();
        for id in 0..100_000 {
            contacts.touch(id);
        }
        assert_eq!(contacts.len(), MAX_CONTACTS);
        assert!(contacts.age(99_999).is_some());
    }

    #[test]
    fn a_handover_is_passed_on_by_elections_after_its_term_and_only_for_a_while() {
        let contacts = Contacts::default();
        assert_eq!(contacts.handover_for(4), None);
        let leader = HandingOver { leader: 1, term: 3 };
        contacts.asked_to_take_over_by(leader, Duration::from_secs(60));
        assert_eq!(contacts.handover_for(4), Some(leader));
        assert_eq!(
            contacts.handover_for(3),
            None,
            "not in the leader's own term"
        );
        contacts.asked_to_take_over_by(leader, Duration::ZERO);
        assert_eq!(contacts.handover_for(4), None, "no longer");
    }
}
