//! No double vote after a wiped data_dir.
//!
//! Raft's safety rests on each node voting at most once per term, and the vote is durable
//! only in the store. A node whose store was just created (a new node, or one whose data_dir
//! was wiped or lost) may have voted in the current term before: granting a vote now could
//! give two candidates a majority in the same term. So such a node grants no vote until it has
//! heard from a leader (accepting its append restores the term and its vote) or one full
//! election cycle (`election_timeout_ms` max) has passed since it started; docs/design.md
//! ("Votes after a wiped data_dir") justifies the bound. Pure logic with injected time, so the
//! window is tested without a cluster.

use std::time::{Duration, Instant};

/// Whether this node may grant a vote now.
#[derive(Debug, Clone, Copy)]
pub struct VoteGate {
    /// End of the window in which a fresh store grants no vote (None: the store was not fresh).
    closed_until: Option<Instant>,
}

impl VoteGate {
    /// `created_at_open`: the store was created at this start; `cycle`: the maximum election
    /// timeout.
    pub fn new(created_at_open: bool, started: Instant, cycle: Duration) -> Self {
        Self {
            closed_until: created_at_open.then(|| started + cycle),
        }
    }

    /// Ok if a vote may be granted at `now`; `last_leader_contact` is when an append from a
    /// leader was last accepted since this start. Err says why not, for the candidate's log.
    pub fn check(&self, now: Instant, last_leader_contact: Option<Instant>) -> Result<(), String> {
        match self.closed_until {
            Some(until) if now < until && last_leader_contact.is_none() => Err(format!(
                "this node's Raft store was created at this start (new or wiped data_dir), so it may \
                 already have voted in this term: no vote until it hears from a leader or for another {} ms",
                (until - now).as_millis()
            )),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CYCLE: Duration = Duration::from_millis(90);

    #[test]
    fn a_fresh_store_refuses_votes_for_one_election_cycle_then_grants() {
        let start = Instant::now();
        let gate = VoteGate::new(true, start, CYCLE);
        let refused = gate.check(start, None).unwrap_err();
        assert!(refused.contains("may already have voted"), "{refused}");
        assert!(refused.contains("another 90 ms"), "{refused}");
        assert!(gate
            .check(start + CYCLE - Duration::from_millis(1), None)
            .is_err());
        assert_eq!(gate.check(start + CYCLE, None), Ok(()));
    }

    #[test]
    fn a_fresh_store_votes_once_it_has_heard_from_a_leader() {
        let start = Instant::now();
        let gate = VoteGate::new(true, start, CYCLE);
        let heard = start + Duration::from_millis(10);
        assert_eq!(gate.check(heard, Some(heard)), Ok(()));
    }

    #[test]
    fn a_store_that_existed_votes_at_once() {
        let start = Instant::now();
        assert_eq!(
            VoteGate::new(false, start, CYCLE).check(start, None),
            Ok(())
        );
    }
}
