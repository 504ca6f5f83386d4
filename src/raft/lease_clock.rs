//! openraft's clock, which can skip the rest of a voter's leader lease when the leader itself
//! hands over.
//!
//! openraft 0.9.25 refuses every vote while the voter's lease on its leader runs
//! (`election_timeout_max` since it last heard from it, `Engine::handle_vote_req`). The lease
//! keeps a leader that is cut off safe: nobody is elected before its fence has released the
//! VIPs. But when the leader hands over of its own accord (its HAProxy died, it stops, an
//! operator moves the VIPs) it has stopped its heartbeats and asked one successor to stand,
//! and the lease only delays that successor. With three voters the old leader's vote and the
//! successor's own are a majority and the lease does not matter; with five the successor
//! needs a third vote, and every other voter refused it until its lease ran out: 60–90 ms
//! more per handover. openraft has no call that ends a lease, and makes no exception for a
//! handover; it reads time only through its runtime's `Instant`, which is this one.
//!
//! So this clock is tokio's plus a skip that only grows ([`skip`]). A voter that sees a vote
//! request carrying its own leader's handover (`crate::peer`) skips one lease ahead before
//! openraft reads it: to openraft the lease has run out, and the vote is granted by Raft's
//! other rules, unchanged. The skip is per process (openraft's clock has no `self`) and moves
//! every instant openraft takes from then on by the same amount, so the durations it measures
//! between two instants are unchanged except across the skip, where they grow: a follower's
//! lease ends (the point), a `Raft::wait` under way times out at its next check, and a
//! leader's last quorum acknowledgement would look older (its fence would release early).
//! raftvip skips only on a follower, and openraft's own election timer, which would fire
//! early too, runs only in a 1-node cluster, where no handover comes. Sleeps until a
//! deadline wait until tokio's instant under the skip at the time of the call.

use std::ops::{Add, AddAssign, Sub, SubAssign};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Nanoseconds skipped so far, by this process's Raft node(s).
static SKIPPED_NANOS: AtomicU64 = AtomicU64::new(0);

fn skipped() -> Duration {
    Duration::from_nanos(SKIPPED_NANOS.load(Ordering::SeqCst))
}

/// Moves openraft's clock `by` ahead, for good.
pub fn skip(by: Duration) {
    let nanos = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
    // fetch_update never fails with a closure that always answers Some.
    let _ = SKIPPED_NANOS.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |old| {
        Some(old.saturating_add(nanos))
    });
}

/// An instant of openraft's clock: tokio's instant plus the skip at the time it was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RaftInstant(tokio::time::Instant);

impl openraft::Instant for RaftInstant {
    fn now() -> Self {
        Self(tokio::time::Instant::now() + skipped())
    }
}

impl RaftInstant {
    /// The tokio instant at which this clock reads `self`, at the skip as it is now (one that a
    /// skip passed lies in the past: due at once).
    pub fn deadline(self) -> tokio::time::Instant {
        self.0
            .checked_sub(skipped())
            .unwrap_or_else(tokio::time::Instant::now)
    }
}

impl Add<Duration> for RaftInstant {
    type Output = Self;
    fn add(self, rhs: Duration) -> Self {
        Self(self.0 + rhs)
    }
}

impl AddAssign<Duration> for RaftInstant {
    fn add_assign(&mut self, rhs: Duration) {
        self.0 += rhs;
    }
}

impl Sub<Duration> for RaftInstant {
    type Output = Self;
    fn sub(self, rhs: Duration) -> Self {
        Self(self.0 - rhs)
    }
}

impl SubAssign<Duration> for RaftInstant {
    fn sub_assign(&mut self, rhs: Duration) {
        self.0 -= rhs;
    }
}

/// Zero if `rhs` is later, as tokio's and std's instants answer.
impl Sub<RaftInstant> for RaftInstant {
    type Output = Duration;
    fn sub(self, rhs: RaftInstant) -> Duration {
        self.0.saturating_duration_since(rhs.0)
    }
}

#[cfg(test)]
mod tests {
    use openraft::Instant as _;

    use super::*;

    // One test: the skip is process-wide. No other test skips today; should one run beside
    // this one, its skip can only move the clock further, so every check allows for more.
    #[tokio::test(start_paused = true)]
    async fn a_skip_moves_the_clock_ahead_and_deadlines_taken_before_it_come_sooner() {
        let before = RaftInstant::now();
        let deadline = before + Duration::from_millis(90);
        assert!(deadline.deadline() - tokio::time::Instant::now() <= Duration::from_millis(90));

        skip(Duration::from_millis(91));
        let after = RaftInstant::now();
        assert!(
            after - before >= Duration::from_millis(91),
            "a lease of 90 ms has run out"
        );
        assert!(after > deadline);
        assert!(
            deadline.deadline() < tokio::time::Instant::now(),
            "a deadline the skip passed is due at once"
        );
        let later = after + Duration::from_millis(30);
        tokio::time::sleep_until(later.deadline()).await;
        assert!(
            RaftInstant::now() >= later,
            "a deadline taken after the skip keeps its time"
        );
        assert_eq!(before - after, Duration::ZERO);
    }
}
