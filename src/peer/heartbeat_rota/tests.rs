use std::collections::BTreeSet;

use openraft::{CommittedLeaderId, EntryPayload, Membership, StoredMembership};
use proptest::prelude::*;

use super::*;
use crate::raft::typ::Entry;

const TICK: Duration = Duration::from_millis(30);

fn log_id(index: u64) -> LogId {
    LogId::new(CommittedLeaderId::new(1, 1), index)
}

/// A heartbeat from leader 1 in `term`, matched up to `matched`, committed up to `committed`.
fn heartbeat(term: u64, matched: u64, committed: u64) -> AppendEntriesRequest {
    AppendEntriesRequest {
        vote: Vote::new_committed(term, 1),
        prev_log_id: Some(log_id(matched)),
        leader_commit: Some(log_id(committed)),
        entries: vec![],
    }
}

fn plan(followers: &[NodeId]) -> Plan {
    Plan {
        followers: followers.to_vec(),
        wanted: followers.len().div_ceil(2),
    }
}

/// One tick at `at`: every follower's request in turn, each answered when `answers(id)`.
/// Returns the followers the request went out to.
fn tick(
    rounds: &mut Rounds,
    at: Instant,
    request: &AppendEntriesRequest,
    plan: Option<&Plan>,
    followers: &[NodeId],
    answers: impl Fn(NodeId) -> bool,
) -> Vec<NodeId> {
    let mut sent = Vec::new();
    for &id in followers {
        if let Decision::Send(ticket) = rounds.decide(at, id, request, plan) {
            rounds.answered(id, ticket, answers(id));
            sent.push(id);
        }
    }
    sent
}

#[test]
fn three_boxes_first_tick_reaches_both_then_one_follower_per_tick_in_turn() {
    let (mut rounds, start, p) = (Rounds::new(TICK), Instant::now(), plan(&[2, 3]));
    let hb = heartbeat(1, 5, 5);
    let sent: Vec<Vec<NodeId>> = (0..5)
        .map(|k| {
            tick(
                &mut rounds,
                start + TICK * k,
                &hb,
                Some(&p),
                &[2, 3],
                |_| true,
            )
        })
        .collect();
    assert_eq!(sent, [vec![2, 3], vec![2], vec![3], vec![2], vec![3]]);
}

#[test]
fn five_boxes_two_followers_per_tick_each_every_other_tick() {
    let (mut rounds, start, p) = (Rounds::new(TICK), Instant::now(), plan(&[2, 3, 4, 5]));
    let hb = heartbeat(1, 5, 5);
    let sent: Vec<Vec<NodeId>> = (0..4)
        .map(|k| {
            tick(
                &mut rounds,
                start + TICK * k,
                &hb,
                Some(&p),
                &[2, 3, 4, 5],
                |_| true,
            )
        })
        .collect();
    assert_eq!(sent, [vec![2, 3, 4, 5], vec![2, 3], vec![4, 5], vec![2, 3]]);
}

#[test]
fn a_tick_short_of_a_quorum_of_answers_is_followed_by_one_to_everyone() {
    let (mut rounds, start, p) = (Rounds::new(TICK), Instant::now(), plan(&[2, 3]));
    let hb = heartbeat(1, 5, 5);
    tick(&mut rounds, start, &hb, Some(&p), &[2, 3], |_| true);
    // Follower 2's turn, and its answer is lost.
    let lost = tick(&mut rounds, start + TICK, &hb, Some(&p), &[2, 3], |_| false);
    assert_eq!(lost, [2]);
    let everyone = tick(
        &mut rounds,
        start + TICK * 2,
        &hb,
        Some(&p),
        &[2, 3],
        |_| true,
    );
    assert_eq!(everyone, [2, 3]);
}

#[test]
fn a_follower_whose_last_request_failed_hears_every_tick_until_it_answers() {
    let (mut rounds, start, p) = (Rounds::new(TICK), Instant::now(), plan(&[2, 3]));
    let hb = heartbeat(1, 5, 5);
    let mut answers_3 = false;
    for k in 0..4 {
        let sent = tick(
            &mut rounds,
            start + TICK * k,
            &hb,
            Some(&p),
            &[2, 3],
            |id| id == 2 || answers_3,
        );
        assert!(sent.contains(&3), "tick {k}: {sent:?}");
        assert!(
            sent.contains(&2),
            "tick {k}: the one answering follower: {sent:?}"
        );
    }
    answers_3 = true;
    tick(
        &mut rounds,
        start + TICK * 4,
        &hb,
        Some(&p),
        &[2, 3],
        |_| answers_3,
    );
    let sent = tick(
        &mut rounds,
        start + TICK * 5,
        &hb,
        Some(&p),
        &[2, 3],
        |_| true,
    );
    assert_eq!(sent.len(), 1, "both answer again: back in turn: {sent:?}");
}

#[test]
fn news_entries_and_a_new_term_are_never_held_back() {
    let (mut rounds, start, p) = (Rounds::new(TICK), Instant::now(), plan(&[2, 3]));
    tick(
        &mut rounds,
        start,
        &heartbeat(1, 5, 5),
        Some(&p),
        &[2, 3],
        |_| true,
    );
    let at = start + TICK;
    assert!(matches!(
        rounds.decide(at, 2, &heartbeat(1, 5, 5), Some(&p)),
        Decision::Send(_)
    ));
    // Follower 3's turn is not this tick; a new commit index is news to it all the same.
    assert_eq!(
        rounds.decide(at, 3, &heartbeat(1, 5, 5), Some(&p)),
        Decision::HoldBack
    );
    let mut committed = heartbeat(1, 5, 6);
    assert!(matches!(
        rounds.decide(at + TICK, 3, &committed, Some(&p)),
        Decision::Send(_)
    ));
    committed.entries.push(Entry {
        log_id: log_id(6),
        payload: EntryPayload::Blank,
    });
    for id in [2, 3] {
        assert!(matches!(
            rounds.decide(at + TICK, id, &committed, Some(&p)),
            Decision::Send(_)
        ));
    }
    let new_term = heartbeat(2, 5, 5);
    let sent = tick(
        &mut rounds,
        at + TICK * 2,
        &new_term,
        Some(&p),
        &[2, 3],
        |_| true,
    );
    assert_eq!(sent, [2, 3], "a new leadership starts with everyone");
}

#[test]
fn without_a_plan_or_for_a_learner_every_heartbeat_goes_out() {
    let (mut rounds, start, p) = (Rounds::new(TICK), Instant::now(), plan(&[2, 3]));
    let hb = heartbeat(1, 5, 5);
    for k in 0..3 {
        let sent = tick(&mut rounds, start + TICK * k, &hb, None, &[2, 3], |_| true);
        assert_eq!(sent, [2, 3]);
    }
    let mut rounds = Rounds::new(TICK);
    for k in 0..3 {
        let sent = tick(
            &mut rounds,
            start + TICK * k,
            &hb,
            Some(&p),
            &[2, 3, 4],
            |_| true,
        );
        assert!(sent.contains(&4), "learner 4, tick {k}: {sent:?}");
    }
}

#[test]
fn a_follower_is_held_back_at_most_once_per_tick() {
    let (mut rounds, start, p) = (Rounds::new(TICK), Instant::now(), plan(&[2, 3]));
    let hb = heartbeat(1, 5, 5);
    tick(&mut rounds, start, &hb, Some(&p), &[2, 3], |_| true);
    let at = start + TICK;
    assert!(matches!(
        rounds.decide(at, 2, &hb, Some(&p)),
        Decision::Send(_)
    ));
    assert_eq!(rounds.decide(at, 3, &hb, Some(&p)), Decision::HoldBack);
    assert!(matches!(
        rounds.decide(at, 3, &hb, Some(&p)),
        Decision::Send(_)
    ));
}

#[test]
fn an_answer_from_an_earlier_tick_does_not_count_for_this_one() {
    let (mut rounds, start, p) = (Rounds::new(TICK), Instant::now(), plan(&[2, 3]));
    let hb = heartbeat(1, 5, 5);
    tick(&mut rounds, start, &hb, Some(&p), &[2, 3], |_| true);
    let Decision::Send(late) = rounds.decide(start + TICK, 2, &hb, Some(&p)) else {
        panic!("follower 2's turn");
    };
    assert_eq!(
        rounds.decide(start + TICK, 3, &hb, Some(&p)),
        Decision::HoldBack
    );
    // The answer arrives after the next tick began: that tick fell short.
    let _ = rounds.decide(start + TICK * 2, 3, &hb, Some(&p));
    rounds.answered(2, late, true);
    let sent = tick(
        &mut rounds,
        start + TICK * 3,
        &hb,
        Some(&p),
        &[2, 3],
        |_| true,
    );
    assert_eq!(sent, [2, 3]);
}

fn membership_metrics(config: Vec<Vec<NodeId>>) -> RaftMetrics {
    let mut metrics = RaftMetrics::new_initial(1);
    let config = config
        .into_iter()
        .map(|voters| voters.into_iter().collect::<BTreeSet<_>>())
        .collect();
    metrics.membership_config = std::sync::Arc::new(StoredMembership::new(
        Some(log_id(1)),
        Membership::new(config, ()),
    ));
    metrics
}

#[test]
fn a_plan_wants_a_majority_less_the_leader_of_a_single_membership_it_votes_in() {
    let wanted =
        |voters: Vec<NodeId>| Plan::of(&membership_metrics(vec![voters]), 1).map(|p| p.wanted);
    assert_eq!(wanted(vec![1, 2]), Some(1));
    assert_eq!(wanted(vec![1, 2, 3]), Some(1));
    assert_eq!(wanted(vec![1, 2, 3, 4]), Some(2));
    assert_eq!(wanted(vec![1, 2, 3, 4, 5]), Some(2));
    assert_eq!(wanted(vec![2, 3, 4]), None, "the leader is leaving");
    let joint = membership_metrics(vec![vec![1, 2, 3], vec![1, 2, 3, 4, 5]]);
    assert_eq!(Plan::of(&joint, 1), None);
    let three = Plan::of(&membership_metrics(vec![vec![1, 2, 3]]), 1).unwrap();
    assert_eq!(three.followers, [2, 3]);
}

proptest! {
    /// With answers lost at random: every tick either reaches a quorum's worth of the
    /// followers that answered their last request, or follows a tick that got all the
    /// answers it wanted; and no follower that keeps answering waits more than two ticks.
    #[test]
    fn every_tick_reaches_a_quorum_and_no_answering_follower_waits_long(
        followers in 2usize..7,
        losses in proptest::collection::vec(proptest::collection::vec(any::<bool>(), 7), 1..40),
    ) {
        let ids: Vec<NodeId> = (2..2 + followers as NodeId).collect();
        let p = plan(&ids);
        let (mut rounds, start) = (Rounds::new(TICK), Instant::now());
        let hb = heartbeat(1, 5, 5);
        let mut answered_last: BTreeSet<NodeId> = BTreeSet::new();
        let mut waited: BTreeMap<NodeId, usize> = BTreeMap::new();
        for (k, lost) in losses.iter().enumerate() {
            let answers = |id: NodeId| !lost[(id - 2) as usize];
            let sent = tick(&mut rounds, start + TICK * k as u32, &hb, Some(&p), &ids, answers);
            let reached = sent.iter().filter(|id| answered_last.contains(id)).count();
            prop_assert!(
                reached >= p.wanted.min(answered_last.len()),
                "tick {k}: sent {sent:?}, {} answered last", answered_last.len()
            );
            for id in &ids {
                if !answered_last.contains(id) {
                    prop_assert!(sent.contains(id), "tick {k}: {id} failed last and was held back");
                }
                let w = waited.entry(*id).or_default();
                *w = if sent.contains(id) { 0 } else { *w + 1 };
                prop_assert!(*w <= 1, "tick {k}: {id} held back two ticks running");
            }
            answered_last.retain(|id| !sent.contains(id));
            answered_last.extend(sent.iter().copied().filter(|id| answers(*id)));
        }
    }
}
