//! Tests of the core: `decide` by tables, the state machine by scenarios and properties over
//! input sequences, all with injected time.

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
        transferring: false,
        overlap: false,
        vips_bindable: true,
        member: true,
        holding: true,
    }
}

#[test]
fn healthy_leader_with_fresh_quorum_holds() {
    let d = decide(&leader_healthy());
    assert_eq!(
        d,
        Decision {
            hold_vips: true,
            may_lead: true,
            heartbeat: true,
            hand_over: false,
            reason: Reason::LeaderWithQuorum
        }
    );
}

#[test]
fn transitions_table() {
    // (change to the healthy leader, hold, may_lead, heartbeat, hand_over, reason)
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
        ("stopping leader not holding yet takes nothing", |i| { i.stopping = true; i.holding = false }, false, false, false, true, Reason::Stopping),
        ("maintenance leader not holding yet takes nothing", |i| { i.maintenance = true; i.holding = false }, false, false, false, true, Reason::Maintenance),
        ("new leader with a quorum takes the VIPs", |i| i.holding = false, true, true, true, false, Reason::LeaderWithQuorum),
        ("stopping leader whose fence ran out", |i| { i.stopping = true; i.quorum_ack_age = Some(FENCE * 2) }, false, false, false, true, Reason::Stopping),
        ("stopping unhealthy leader releases at once", |i| { i.stopping = true; i.healthy = false }, false, false, false, true, Reason::Stopping),
        ("maintenance follower", |i| { i.maintenance = true; i.leader = false }, false, false, true, false, Reason::Maintenance),
        ("stopping follower", |i| { i.stopping = true; i.leader = false }, false, false, true, false, Reason::Stopping),
        ("witness never stands", |i| { i.witness = true; i.leader = false }, false, false, true, false, Reason::Witness),
        ("leader made a witness by a reload hands over, holding", |i| i.witness = true, true, false, false, true, Reason::HandingOver),
        ("leader whose VIP cannot be bound releases and hands over", |i| i.vips_bindable = false, false, false, false, true, Reason::VipUnbindable),
        ("follower whose VIP cannot be bound votes, does not stand", |i| { i.vips_bindable = false; i.leader = false; i.quorum_ack_age = None }, false, false, true, false, Reason::VipUnbindable),
        ("unhealthy and unbindable: health named first", |i| { i.vips_bindable = false; i.healthy = false }, false, false, false, true, Reason::Unhealthy),
        ("stopping leader that cannot bind releases at once", |i| { i.stopping = true; i.vips_bindable = false }, false, false, false, true, Reason::Stopping),
        ("maintenance follower that cannot bind", |i| { i.maintenance = true; i.vips_bindable = false; i.leader = false }, false, false, true, false, Reason::Maintenance),
        ("transferring leader holds while handing over", |i| i.transferring = true, true, false, false, true, Reason::HandingOver),
        ("stepped down for its successor: overlap", |i| { i.maintenance = true; i.leader = false; i.quorum_ack_age = None; i.overlap = true }, true, false, true, false, Reason::PlannedOverlap),
        ("overlap of a healthy node after a transfer", |i| { i.leader = false; i.quorum_ack_age = None; i.overlap = true }, true, true, true, false, Reason::PlannedOverlap),
        ("overlap ends when HAProxy fails", |i| { i.stopping = true; i.leader = false; i.overlap = true; i.healthy = false }, false, false, true, false, Reason::Stopping),
        ("overlap ends when a VIP cannot be bound", |i| { i.leader = false; i.overlap = true; i.vips_bindable = false }, false, false, true, false, Reason::VipUnbindable),
        ("leader the membership drops holds while handing over", |i| i.member = false, true, false, false, true, Reason::HandingOver),
        ("box not a voter never stands", |i| { i.member = false; i.leader = false }, false, false, true, false, Reason::NotMember),
    ];
    for (name, change, hold, may_lead, heartbeat, hand_over, reason) in cases {
        let mut inputs = leader_healthy();
        change(&mut inputs);
        let d = decide(&inputs);
        assert_eq!(
            (d.hold_vips, d.may_lead, d.heartbeat, d.hand_over, d.reason),
            (*hold, *may_lead, *heartbeat, *hand_over, *reason),
            "{name}"
        );
    }
}

#[test]
fn never_holds_without_leadership_quorum_and_health() {
    // Exhaustive over the boolean inputs: holding implies leader, fresh quorum, healthy and
    // bindable VIPs, or the overlap after a planned step-down; maintenance, stopping, a
    // transfer, becoming a witness and leaving the membership only ever mean "hand over",
    // keeping VIPs already held but never taking them.
    for bits in 0u32..2048 {
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
            transferring: b(7),
            overlap: b(8),
            member: !b(9),
            holding: b(10),
        };
        let d = decide(&inputs);
        // As leader, or in the overlap after a planned step-down: never unhealthy, never with
        // a VIP that cannot be bound.
        let serving = b(3) && b(6);
        let handing_over = b(0) || b(4) || b(5) || b(7) || b(9);
        let expected =
            serving && (b(1) && b(2) && (!handing_over || b(10)) || !b(1) && b(8) && b(10));
        assert_eq!(d.hold_vips, expected, "{inputs:?}");
        let ineligible = handing_over || !b(3) || !b(6);
        assert_eq!(d.hand_over, b(1) && ineligible, "{inputs:?}");
        assert!(!(d.may_lead && ineligible), "{inputs:?}");
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

// ---- The state machine, with injected time ----

const LEASE: Duration = Duration::from_millis(100);
const ET_MIN: Duration = Duration::from_millis(50);
const STAGGER: Duration = Duration::from_millis(10);

/// The address the old holder asks a successor from.
fn old_holder() -> std::net::IpAddr {
    "192.0.2.11".parse().unwrap()
}

fn asked_to_take_over() -> Input {
    Input::AskedToTakeOver {
        old_holder: old_holder(),
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn setup() -> Setup {
    Setup {
        witness: false,
        single_voter: false,
        timing: Timing {
            fence: FENCE,
            lease: LEASE,
            election_timeout_min: ET_MIN,
            stagger: STAGGER,
        },
    }
}

fn leader(term: u64, ack_ms: u64) -> Input {
    Input::Raft(RaftReport {
        state: ServerState::Leader,
        leader: Some(1),
        term,
        millis_since_quorum_ack: Some(ack_ms),
    })
}

fn follower(of: Option<NodeId>) -> Input {
    Input::Raft(RaftReport {
        state: ServerState::Follower,
        leader: of,
        term: 2,
        millis_since_quorum_ack: None,
    })
}

/// A running core at `t0`: healthy follower of node 2, start-up actions drained.
fn healthy_follower(t0: Instant) -> Core {
    let mut core = Core::new(setup(), t0, 7);
    core.step(t0, follower(Some(2)));
    core.step(t0, Input::Health { healthy: true });
    core
}

/// A healthy leader that holds the VIPs since `t0` (quorum acknowledged at `t0`).
fn holding_leader(t0: Instant) -> Core {
    let mut core = healthy_follower(t0);
    core.step(t0, leader(3, 0));
    assert!(core.state().holds_vips);
    core
}

fn held_action(hold: bool, reason: Reason) -> Action {
    Action::SetHeld { hold, reason }
}

fn hook(event: Event, leader_id: Option<NodeId>, term: u64, reason: Reason) -> Action {
    let reason = reason.to_string();
    Action::Notify(
        event,
        HookContext {
            leader_id,
            term,
            reason,
        },
    )
}

fn without_publish(actions: Vec<Action>) -> Vec<Action> {
    actions
        .into_iter()
        .filter(|a| !matches!(a, Action::Publish(_)))
        .collect()
}

/// The hook events, STOP standing for [`Action::Done`] (the daemon fires it).
fn events(actions: &[Action]) -> Vec<Event> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Notify(event, _) => Some(*event),
            Action::Done(_) => Some(Event::Stop),
            _ => None,
        })
        .collect()
}

fn is_done(actions: &[Action]) -> bool {
    matches!(actions.last(), Some(Action::Done(_)))
}

fn held(actions: &[Action]) -> Option<bool> {
    actions.iter().find_map(|a| match a {
        Action::SetHeld { hold, .. } => Some(*hold),
        _ => None,
    })
}

#[test]
fn start_reports_backup_once_and_switches_raft_once() {
    let t0 = Instant::now();
    let mut core = Core::new(setup(), t0, 1);
    let first = without_publish(core.step(t0, Input::Health { healthy: true }));
    assert_eq!(
        first,
        vec![
            Action::RaftElectionTimer(false),
            Action::Heartbeat(true),
            held_action(false, Reason::NotLeader),
            hook(Event::Backup, None, 0, Reason::NotLeader),
        ]
    );
    assert!(without_publish(core.step(t0 + ms(1), follower(Some(2)))).is_empty());
}

#[test]
fn an_unhealthy_start_is_backup_not_fault() {
    let t0 = Instant::now();
    let mut core = Core::new(setup(), t0, 1);
    let first = core.step(t0, Input::Tick);
    assert_eq!(events(&first), vec![Event::Backup]);
    assert_eq!(core.state().reason, Reason::Unhealthy);
}

#[test]
fn at_start_an_election_is_due_a_lease_plus_a_timeout_later() {
    let t0 = Instant::now();
    let core = healthy_follower(t0);
    let due = core
        .next_deadline()
        .expect("a standing follower has an election timer");
    assert!(
        due >= t0 + LEASE + ET_MIN && due < t0 + LEASE + LEASE,
        "{:?}",
        due - t0
    );
}

#[test]
fn no_leader_for_the_lease_plus_the_stagger_requests_one_prevote() {
    let t0 = Instant::now();
    let mut core = healthy_follower(t0);
    let heard = t0 + ms(500);
    core.step(heard, Input::LeaderContact(heard));
    let due = core.next_deadline().unwrap();
    assert_eq!(due, heard + LEASE + STAGGER);
    assert!(!core
        .step(due - ms(1), Input::Tick)
        .contains(&Action::RequestPreVote));
    assert_eq!(
        without_publish(core.step(due, Input::Tick)),
        vec![Action::RequestPreVote]
    );
    // One round at a time: no timer while it is out, however long it takes.
    assert_eq!(core.next_deadline(), None);
    assert!(without_publish(core.step(due + LEASE * 5, Input::Tick)).is_empty());
}

#[test]
fn leader_contact_pushes_the_election_back() {
    let t0 = Instant::now();
    let mut core = healthy_follower(t0);
    core.step(t0 + ms(500), Input::LeaderContact(t0 + ms(500)));
    let due = core.next_deadline().unwrap();
    core.step(t0 + ms(540), Input::LeaderContact(t0 + ms(540)));
    assert_eq!(core.next_deadline(), Some(due + ms(40)));
    assert!(!core
        .step(due, Input::Tick)
        .contains(&Action::RequestPreVote));
}

#[test]
fn prevote_answers_start_an_election_only_when_still_due() {
    // (what happens between request and answer, won, elect expected)
    type Case = (&'static str, fn(&mut Core, Instant), bool, bool);
    #[rustfmt::skip]
    let cases: &[Case] = &[
        ("majority agrees", |_, _| {}, true, true),
        ("majority refuses", |_, _| {}, false, false),
        ("a leader spoke since", |c, at| { c.step(at, Input::LeaderContact(at)); }, true, false),
        ("turned unhealthy", |c, at| { c.step(at, Input::Health { healthy: false }); }, true, false),
        ("went into maintenance", |c, at| { c.step(at, Input::Maintenance(true)); }, true, false),
    ];
    for (name, between, won, elect) in cases {
        let t0 = Instant::now();
        let mut core = healthy_follower(t0);
        let due = core.next_deadline().unwrap();
        assert!(
            core.step(due, Input::Tick)
                .contains(&Action::RequestPreVote),
            "{name}"
        );
        between(&mut core, due + ms(1));
        let answer = core.step(due + ms(2), Input::PreVoteAnswer { won: *won });
        assert_eq!(
            answer.contains(&Action::Elect { term: 2 }),
            *elect,
            "{name}: {answer:?}"
        );
    }
}

#[test]
fn the_next_attempt_is_timed_from_the_last() {
    let t0 = Instant::now();
    let mut core = healthy_follower(t0);
    let due = core.next_deadline().unwrap();
    core.step(due, Input::Tick);
    core.step(due + ms(5), Input::PreVoteAnswer { won: false });
    let next = core.next_deadline().unwrap();
    assert!(
        next >= due + LEASE + ET_MIN && next < due + LEASE + LEASE,
        "{:?}",
        next - due
    );
}

/// Issue 12's second pre-vote round: a survivor whose pre-vote was granted while its peer
/// was already a candidate elected in the term after the peer's and deposed it as it won.
#[test]
fn a_peer_election_during_a_prevote_leaves_it_the_term() {
    let t0 = Instant::now();
    let mut core = healthy_follower(t0);
    let due = core.next_deadline().unwrap();
    assert!(core
        .step(due, Input::Tick)
        .contains(&Action::RequestPreVote));
    // The peer's vote request moved this node to term 3 (no leader yet).
    let voted = due + ms(1);
    core.step(
        voted,
        Input::Raft(RaftReport {
            term: 3,
            leader: None,
            ..RaftReport::default()
        }),
    );
    let answer = core.step(due + ms(2), Input::PreVoteAnswer { won: true });
    assert!(
        !answer.iter().any(|a| matches!(a, Action::Elect { .. })),
        "{answer:?}"
    );
    // If that peer does not win, this node stands one timeout after the term moved.
    let next = core.next_deadline().unwrap();
    assert!(
        next >= voted + LEASE + ET_MIN && next < voted + LEASE + LEASE,
        "{:?}",
        next - voted
    );
    let asked = core.step(next, Input::Tick);
    assert!(asked.contains(&Action::RequestPreVote), "{asked:?}");
    let answer = core.step(next + ms(1), Input::PreVoteAnswer { won: true });
    assert!(answer.contains(&Action::Elect { term: 3 }), "{answer:?}");
    // Published, so that this node refuses a second candidate's pre-vote meanwhile.
    assert_eq!(core.state().elected_at, Some(next + ms(1)));
}

/// The example cluster (ids 1, 2, 3, heartbeat 20 ms): node 1 stands right after the lease,
/// node 2 half a heartbeat later, node 3 a whole heartbeat later.
#[test]
fn the_stagger_orders_the_members_by_id() {
    let example = include_str!("../../../docs/raftvip.example.toml");
    let staggers: Vec<_> = (1..=3)
        .map(|id| {
            let text = example.replacen("node_id = 1", &format!("node_id = {id}"), 1);
            Timing::from_config(&Config::parse(&text).unwrap()).stagger
        })
        .collect();
    assert_eq!(staggers, vec![ms(0), Duration::from_micros(12_500), ms(25)]);
}

#[test]
fn the_election_timer_counts_the_lease_from_the_last_contact_not_stacked() {
    let t0 = Instant::now();
    let mut core = healthy_follower(t0);
    let heard = t0 + ms(500);
    core.step(heard, Input::LeaderContact(heard));
    assert_eq!(core.next_deadline(), Some(heard + LEASE + STAGGER));
}

#[test]
fn a_leader_or_a_single_voter_runs_no_election_timer() {
    let t0 = Instant::now();
    let core = holding_leader(t0);
    assert_eq!(core.next_deadline(), Some(t0 + FENCE), "only the fence");

    let mut single = Core::new(
        Setup {
            single_voter: true,
            ..setup()
        },
        t0,
        1,
    );
    let first = single.step(t0, Input::Health { healthy: true });
    assert!(
        first.contains(&Action::RaftElectionTimer(true)),
        "{first:?}"
    );
    assert_eq!(single.next_deadline(), None);
    assert!(!single
        .step(t0 + LEASE * 10, Input::Tick)
        .contains(&Action::RequestPreVote));
}

#[test]
fn a_new_leader_sets_the_fence_before_it_holds() {
    let t0 = Instant::now();
    let mut core = healthy_follower(t0);
    let actions = without_publish(core.step(t0 + ms(10), leader(3, 4)));
    let ack = t0 + ms(6);
    assert_eq!(
        actions,
        vec![
            Action::HoldUntil(Some(ack + FENCE)),
            held_action(true, Reason::LeaderWithQuorum),
            hook(Event::Master, Some(1), 3, Reason::LeaderWithQuorum),
            Action::TellHeld,
        ]
    );
    assert_eq!(core.next_deadline(), Some(ack + FENCE));
}

#[test]
fn fence_expiry_releases_right_after_ack_plus_fence() {
    let t0 = Instant::now();
    let mut core = holding_leader(t0);
    // A wake-up that brings no report does not move the ack.
    assert_eq!(held(&core.step(t0 + FENCE, Input::Tick)), None);
    let actions = without_publish(core.step(t0 + FENCE + ms(1), Input::Tick));
    assert_eq!(
        actions[..2],
        [
            held_action(false, Reason::QuorumLost),
            Action::HoldUntil(None),
        ]
    );
    assert_eq!(events(&actions), vec![Event::Backup]);
    assert!(!core.state().holds_vips);
}

#[test]
fn a_fresh_ack_moves_the_fence_and_a_healed_partition_says_master_again() {
    let t0 = Instant::now();
    let mut core = holding_leader(t0);
    assert_eq!(
        without_publish(core.step(t0 + ms(30), leader(3, 0))),
        vec![Action::HoldUntil(Some(t0 + ms(30) + FENCE))]
    );
    // Cut off: released at the fence.
    core.step(t0 + ms(30) + FENCE + ms(1), Input::Tick);
    // Healed: the quorum answers again and this node holds again.
    let again = core.step(t0 + ms(200), leader(3, 1));
    assert_eq!(held(&again), Some(true));
    assert_eq!(events(&again), vec![Event::Master]);
    assert_eq!(
        core.state().failover_duration.count,
        0,
        "regaining its own lead is no failover"
    );
}

#[test]
fn reports_of_the_same_ack_leave_the_fence_where_it_is() {
    let t0 = Instant::now();
    let mut core = holding_leader(t0);
    // openraft's whole milliseconds: the same acknowledgement reported 0.6 ms later as 0 ms
    // old (0.6 ms later than it was), then 1.4 ms later as 1 ms old (0.4 ms).
    let us = Duration::from_micros;
    assert_eq!(without_publish(core.step(t0 + us(600), leader(3, 0))), []);
    assert_eq!(without_publish(core.step(t0 + us(1400), leader(3, 1))), []);
    assert_eq!(core.next_deadline(), Some(t0 + FENCE));
    // The next acknowledgement, a heartbeat later, moves it; so does a new term's first.
    assert_eq!(
        without_publish(core.step(t0 + ms(30), leader(3, 0))),
        [Action::HoldUntil(Some(t0 + ms(30) + FENCE))]
    );
    let new_term = without_publish(core.step(t0 + us(30_500), leader(4, 0)));
    assert!(
        new_term.contains(&Action::HoldUntil(Some(t0 + us(30_500) + FENCE))),
        "{new_term:?}"
    );
}

#[test]
fn an_unhealthy_leader_releases_hands_over_once_and_faults_once_per_episode() {
    let t0 = Instant::now();
    let mut core = holding_leader(t0);
    let sick = without_publish(core.step(t0 + ms(5), Input::Health { healthy: false }));
    assert_eq!(
        sick,
        vec![
            Action::RaftElectionTimer(false),
            Action::Heartbeat(false),
            held_action(false, Reason::Unhealthy),
            Action::HoldUntil(None),
            hook(Event::Fault, Some(1), 3, Reason::Unhealthy),
            Action::HandOver {
                episode: 1,
                to: None,
                keeping_vips: false,
            },
        ]
    );
    assert_eq!(core.state().handovers, 1);
    // Still sick, and now unbindable too: same episode, nothing new.
    assert!(without_publish(core.step(t0 + ms(6), Input::Health { healthy: false })).is_empty());
    assert!(
        without_publish(core.step(t0 + ms(7), Input::Unbindable(Some("eth1 down".into()))))
            .is_empty()
    );
    core.step(
        t0 + ms(8),
        Input::HandOverAnswer {
            episode: 1,
            to: None,
        },
    );
    assert!(
        without_publish(core.step(t0 + ms(9), Input::Tick)).is_empty(),
        "one attempt per episode"
    );
    // Recovers, then fails again: a new episode.
    core.step(t0 + ms(10), Input::Unbindable(None));
    let healthy = core.step(t0 + ms(11), Input::Health { healthy: true });
    assert_eq!(
        events(&healthy),
        vec![Event::Master],
        "still leader, acked: holds again"
    );
    let again = core.step(t0 + ms(12), Input::Health { healthy: false });
    assert_eq!(events(&again), vec![Event::Fault]);
    assert!(again.contains(&Action::HandOver {
        episode: 2,
        to: None,
        keeping_vips: false,
    }));
}

#[test]
fn an_unbindable_vip_is_a_fault_and_no_backup() {
    let t0 = Instant::now();
    let mut core = holding_leader(t0);
    let actions = core.step(t0 + ms(1), Input::Unbindable(Some("eth1 is down".into())));
    assert_eq!(held(&actions), Some(false));
    assert_eq!(events(&actions), vec![Event::Fault]);
    assert_eq!(core.state().reason, Reason::VipUnbindable);
}

#[test]
fn stop_on_a_leader_hands_over_holds_until_it_steps_down_then_says_stop() {
    let t0 = Instant::now();
    let mut core = holding_leader(t0);
    let stop = without_publish(core.step(t0 + ms(1), Input::Stop));
    assert_eq!(
        stop,
        vec![
            Action::RaftElectionTimer(false),
            Action::Heartbeat(false),
            Action::VipOverlap(VipOverlap::Yielding),
            Action::HandOver {
                episode: 1,
                to: None,
                keeping_vips: true,
            },
        ],
        "keeps the VIPs while handing over, no longer announcing them"
    );
    assert_eq!(core.state().reason, Reason::HandingOver);
    assert!(without_publish(core.step(
        t0 + ms(2),
        Input::HandOverAnswer {
            episode: 1,
            to: Some(2)
        }
    ))
    .is_empty());
    let stepped_down = without_publish(core.step(t0 + ms(3), follower(Some(2))));
    assert_eq!(
        stepped_down,
        vec![
            Action::Heartbeat(true),
            Action::HoldUntil(Some(t0 + ms(3) + OVERLAP_BOUND)),
        ],
        "keeps the VIPs, bounded, until the successor holds them"
    );
    assert!(core.state().planned_overlap);
    let word = without_publish(core.step(t0 + ms(9), Input::SuccessorHolds { from: 2 }));
    assert_eq!(
        word,
        vec![Action::HoldUntil(Some(t0 + ms(9) + OVERLAP_DRAIN))],
        "open requests get the drain to finish"
    );
    let released = without_publish(core.step(t0 + ms(9) + OVERLAP_DRAIN, Input::Tick));
    assert_eq!(held(&released), Some(false));
    assert_eq!(events(&released), vec![Event::Backup, Event::Stop]);
    assert!(released.contains(&Action::VipOverlap(VipOverlap::None)));
    assert!(is_done(&released));
    assert_eq!(core.state().planned_overlaps, 1);
    assert!((core.state().overlap_duration.sum_seconds - 0.056).abs() < 1e-9);
    assert!(
        core.step(t0 + ms(100), Input::Tick).is_empty(),
        "done is final"
    );
    assert_eq!(core.next_deadline(), None);
}

#[test]
fn stop_with_nobody_to_take_over_releases_at_once() {
    let t0 = Instant::now();
    let mut core = holding_leader(t0);
    core.step(t0 + ms(1), Input::Stop);
    let answer = core.step(
        t0 + ms(2),
        Input::HandOverAnswer {
            episode: 1,
            to: None,
        },
    );
    assert_eq!(held(&answer), Some(false));
    assert_eq!(events(&answer), vec![Event::Backup, Event::Stop]);
    assert!(is_done(&answer));
}

/// Every box stopped at once (chaos's `restart_all`): this node accepted the holder's handover
/// just before its own SIGTERM, won, and its first quorum acknowledgement came after the stop.
/// It must not bind the VIPs for the moment it takes to find nobody to hand them to: the old
/// holder still keeps them, and that moment was a two-holder episode.
#[test]
fn a_node_elected_as_it_stops_takes_no_vips() {
    let t0 = Instant::now();
    let mut core = healthy_follower(t0);
    core.step(t0 + ms(1), asked_to_take_over());
    let won = core.step(
        t0 + ms(2),
        Input::Raft(RaftReport {
            state: ServerState::Leader,
            leader: Some(1),
            term: 3,
            millis_since_quorum_ack: None,
        }),
    );
    assert_eq!(held(&won), None, "no quorum acknowledgement yet");
    let stop = core.step(t0 + ms(3), Input::Stop);
    assert!(
        stop.iter().any(|a| matches!(a, Action::HandOver { .. })),
        "{stop:?}"
    );
    let acked = core.step(t0 + ms(4), leader(3, 0));
    assert_eq!(held(&acked), None, "{acked:?}");
    assert!(!core.state().holds_vips);
    let nobody = core.step(
        t0 + ms(5),
        Input::HandOverAnswer {
            episode: 1,
            to: None,
        },
    );
    assert_eq!(held(&nobody), None, "held nothing, releases nothing");
    assert!(is_done(&nobody));
}

#[test]
fn stop_gives_up_handing_over_at_its_bound() {
    let t0 = Instant::now();
    let mut core = holding_leader(t0);
    core.step(t0, Input::Stop);
    // Keep the quorum fresh so only the stop's bound can end it.
    core.step(t0 + ms(550), leader(3, 0));
    assert_eq!(core.next_deadline(), Some(t0 + STOP_HANDOVER_BOUND));
    assert!(!is_done(
        &core.step(t0 + STOP_HANDOVER_BOUND - ms(1), Input::Tick)
    ));
    let done = core.step(t0 + STOP_HANDOVER_BOUND, Input::Tick);
    assert!(is_done(&done));
    assert_eq!(held(&done), Some(false));
}

#[test]
fn stop_on_a_follower_is_done_at_once_with_only_stop() {
    let t0 = Instant::now();
    let mut core = healthy_follower(t0);
    let done = without_publish(core.step(t0 + ms(1), Input::Stop));
    assert_eq!(events(&done), vec![Event::Stop]);
    assert_eq!(held(&done), None, "held nothing, releases nothing");
    assert!(is_done(&done));
}

#[test]
fn a_stale_handover_answer_is_ignored() {
    let t0 = Instant::now();
    let mut core = holding_leader(t0);
    core.step(t0 + ms(1), Input::Health { healthy: false });
    core.step(t0 + ms(2), Input::Health { healthy: true });
    let stop = core.step(t0 + ms(3), Input::Stop);
    assert!(
        stop.contains(&Action::HandOver {
            episode: 2,
            to: None,
            keeping_vips: true,
        }),
        "{stop:?}"
    );
    // The first episode's "nobody" must not end the second.
    let stale = core.step(
        t0 + ms(4),
        Input::HandOverAnswer {
            episode: 1,
            to: None,
        },
    );
    assert!(!is_done(&stale), "{stale:?}");
}

#[test]
fn leader_changes_are_counted_and_a_takeover_is_timed_from_the_last_contact() {
    let t0 = Instant::now();
    let mut core = healthy_follower(t0);
    assert_eq!(core.state().leader_changes, 1, "follower of node 2");
    core.step(t0 + ms(100), Input::LeaderContact(t0 + ms(100)));
    core.step(t0 + ms(400), follower(None));
    let took = core.step(t0 + ms(420), leader(3, 0));
    assert_eq!(held(&took), Some(true));
    assert_eq!(core.state().leader_changes, 2);
    assert_eq!(core.state().failover_duration.count, 1);
    assert!((core.state().failover_duration.sum_seconds - 0.32).abs() < 1e-9);
}

#[test]
fn maintenance_on_a_leader_hands_over_while_holding() {
    let t0 = Instant::now();
    let mut core = holding_leader(t0);
    let actions = core.step(t0 + ms(1), Input::Maintenance(true));
    assert_eq!(held(&actions), None, "keeps the VIPs until it steps down");
    assert!(actions.contains(&Action::HandOver {
        episode: 1,
        to: None,
        keeping_vips: true,
    }));
    assert_eq!(core.state().reason, Reason::HandingOver);
    let down = core.step(t0 + ms(2), follower(Some(2)));
    assert_eq!(
        held(&down),
        None,
        "overlap: the successor has not said it holds them"
    );
    assert_eq!(core.state().reason, Reason::PlannedOverlap);
    assert_eq!(core.next_deadline(), Some(t0 + ms(2) + OVERLAP_BOUND));
    // Its word never comes: released at the bound, on the VIP thread's deadline too.
    let early = core.step(t0 + ms(2) + OVERLAP_BOUND - ms(1), Input::Tick);
    assert_eq!(held(&early), None);
    let bound = core.step(t0 + ms(2) + OVERLAP_BOUND, Input::Tick);
    assert_eq!(held(&bound), Some(false));
    assert_eq!(events(&bound), vec![Event::Backup]);
    assert!(!core.state().planned_overlap);
    assert_eq!(core.state().reason, Reason::Maintenance);
}

/// A leader in maintenance that has asked node 2 and been accepted.
fn handing_over_to_2(t0: Instant) -> Core {
    let mut core = holding_leader(t0);
    core.step(t0 + ms(1), Input::Maintenance(true));
    core.step(
        t0 + ms(2),
        Input::HandOverAnswer {
            episode: 1,
            to: Some(2),
        },
    );
    core
}

#[test]
fn a_step_down_nobody_asked_for_releases_at_once() {
    let t0 = Instant::now();
    let mut core = holding_leader(t0);
    let down = core.step(t0 + ms(5), follower(Some(2)));
    assert_eq!(held(&down), Some(false));
    assert!(!core.state().planned_overlap);
    assert_eq!(core.state().planned_overlaps, 0);
}

#[test]
fn a_leader_other_than_the_successor_ends_the_overlap_at_once() {
    let t0 = Instant::now();
    let mut core = handing_over_to_2(t0);
    // Stepped down, leader not known yet: overlap.
    let down = core.step(t0 + ms(3), follower(None));
    assert_eq!(held(&down), None);
    let other = core.step(t0 + ms(4), follower(Some(3)));
    assert_eq!(held(&other), Some(false));
    assert_eq!(core.state().reason, Reason::Maintenance);
}

#[test]
fn a_step_down_before_the_answer_overlaps_until_the_answer_says_nobody() {
    let t0 = Instant::now();
    let mut core = holding_leader(t0);
    core.step(t0 + ms(1), Input::Stop);
    let down = core.step(t0 + ms(2), follower(None));
    assert_eq!(held(&down), None, "its successor may be on the way");
    let nobody = core.step(
        t0 + ms(3),
        Input::HandOverAnswer {
            episode: 1,
            to: None,
        },
    );
    assert_eq!(held(&nobody), Some(false));
    assert!(is_done(&nobody));
}

#[test]
fn a_step_down_before_the_answer_then_the_successor_holding_releases() {
    let t0 = Instant::now();
    let mut core = holding_leader(t0);
    core.step(t0 + ms(1), Input::Maintenance(true));
    core.step(t0 + ms(2), follower(None));
    let answer = core.step(
        t0 + ms(3),
        Input::HandOverAnswer {
            episode: 1,
            to: Some(2),
        },
    );
    assert_eq!(held(&answer), None);
    let leader_known = core.step(t0 + ms(4), follower(Some(2)));
    assert_eq!(
        held(&leader_known),
        None,
        "the successor leads: overlap goes on"
    );
    let holds = core.step(t0 + ms(6), Input::SuccessorHolds { from: 2 });
    assert_eq!(held(&holds), None, "drains first");
    let drained = core.step(t0 + ms(6) + OVERLAP_DRAIN, Input::Tick);
    assert_eq!(held(&drained), Some(false));
}

#[test]
fn the_successor_holding_before_this_node_steps_down_drains_from_the_step_down() {
    let t0 = Instant::now();
    let mut core = handing_over_to_2(t0);
    assert!(core
        .step(t0 + ms(3), Input::SuccessorHolds { from: 2 })
        .iter()
        .all(|a| !matches!(a, Action::SetHeld { .. })));
    let down = core.step(t0 + ms(4), follower(Some(2)));
    assert_eq!(held(&down), None);
    assert_eq!(core.next_deadline(), Some(t0 + ms(4) + OVERLAP_DRAIN));
    let drained = core.step(t0 + ms(4) + OVERLAP_DRAIN, Input::Tick);
    assert_eq!(held(&drained), Some(false));
    assert_eq!(core.state().planned_overlaps, 1);
}

#[test]
fn the_overlap_ends_at_once_when_haproxy_fails() {
    let t0 = Instant::now();
    let mut core = handing_over_to_2(t0);
    core.step(t0 + ms(3), follower(Some(2)));
    let sick = core.step(t0 + ms(4), Input::Health { healthy: false });
    assert_eq!(held(&sick), Some(false));
    assert!(sick.contains(&Action::HoldUntil(None)));
}

#[test]
fn a_successor_asked_to_take_over_expects_the_overlap_tells_its_peers_and_announces_again() {
    let t0 = Instant::now();
    let mut core = healthy_follower(t0);
    let asked = core.step(t0 + ms(1), asked_to_take_over());
    assert!(
        asked.contains(&Action::VipOverlap(VipOverlap::Taking {
            old_holder: old_holder()
        })),
        "expects the overlap before it binds: {asked:?}"
    );
    let took = without_publish(core.step(t0 + ms(5), leader(3, 0)));
    let position = |wanted: &Action| took.iter().position(|a| a == wanted);
    let hold = position(&held_action(true, Reason::LeaderWithQuorum)).expect("holds");
    let tell = position(&Action::TellHeld).expect("tells its peers");
    assert!(hold < tell, "{took:?}");
    let answer = without_publish(core.step(
        t0 + ms(8),
        Input::HeldAnswer {
            released_by: Some(2),
        },
    ));
    assert_eq!(
        answer,
        vec![Action::VipOverlap(VipOverlap::None), Action::Reannounce]
    );
}

#[test]
fn a_node_asked_to_take_over_that_never_does_stops_expecting_the_overlap() {
    let t0 = Instant::now();
    let mut core = healthy_follower(t0);
    core.step(t0, asked_to_take_over());
    assert!(core.next_deadline() <= Some(t0 + TAKEOVER_WINDOW));
    let expired = core.step(t0 + TAKEOVER_WINDOW, Input::Tick);
    assert!(expired.contains(&Action::VipOverlap(VipOverlap::None)));
}

#[test]
fn an_unplanned_takeover_tells_the_peers_but_expects_no_overlap() {
    let t0 = Instant::now();
    let mut core = healthy_follower(t0);
    let took = core.step(t0 + ms(5), leader(3, 0));
    assert!(took.contains(&Action::TellHeld));
    assert!(!took
        .iter()
        .any(|a| matches!(a, Action::VipOverlap(VipOverlap::Taking { .. }))));
    let answer = core.step(t0 + ms(8), Input::HeldAnswer { released_by: None });
    assert!(!answer.contains(&Action::Reannounce));
}

#[test]
fn a_transfer_hands_over_to_its_target_and_overlaps_like_any_planned_handover() {
    let t0 = Instant::now();
    let mut core = holding_leader(t0);
    let asked = without_publish(core.step(t0 + ms(1), Input::Transfer { to: Some(3) }));
    assert!(asked.contains(&Action::HandOver {
        episode: 1,
        to: Some(3),
        keeping_vips: true,
    }));
    assert_eq!(held(&asked), None, "keeps serving while it asks");
    assert_eq!(core.state().reason, Reason::HandingOver);
    core.step(
        t0 + ms(2),
        Input::HandOverAnswer {
            episode: 1,
            to: Some(3),
        },
    );
    let down = core.step(t0 + ms(3), follower(Some(3)));
    assert_eq!(held(&down), None);
    assert_eq!(core.state().reason, Reason::PlannedOverlap);
    core.step(t0 + ms(5), Input::SuccessorHolds { from: 3 });
    let drained = core.step(t0 + ms(5) + OVERLAP_DRAIN, Input::Tick);
    assert_eq!(held(&drained), Some(false));
    assert_eq!(core.state().reason, Reason::NotLeader);
    assert!(core.state().may_lead, "a transfer is no maintenance");
}

#[test]
fn a_refused_transfer_leads_on() {
    let t0 = Instant::now();
    let mut core = holding_leader(t0);
    core.step(t0 + ms(1), Input::Transfer { to: Some(3) });
    let refused = without_publish(core.step(
        t0 + ms(2),
        Input::HandOverAnswer {
            episode: 1,
            to: None,
        },
    ));
    assert!(refused.contains(&Action::Heartbeat(true)), "{refused:?}");
    assert!(
        refused.contains(&Action::VipOverlap(VipOverlap::None)),
        "announces again: {refused:?}"
    );
    assert_eq!(core.state().reason, Reason::LeaderWithQuorum);
    assert!(core.state().holds_vips);
}

#[test]
fn a_transfer_that_does_not_finish_ends_at_its_bound() {
    let t0 = Instant::now();
    let mut core = holding_leader(t0);
    core.step(t0, Input::Transfer { to: Some(3) });
    core.step(
        t0 + ms(1),
        Input::HandOverAnswer {
            episode: 1,
            to: Some(3),
        },
    );
    // The target never stands; the quorum stays fresh.
    core.step(t0 + TRANSFER_BOUND - ms(10), leader(3, 0));
    assert_eq!(core.next_deadline(), Some(t0 + TRANSFER_BOUND));
    core.step(t0 + TRANSFER_BOUND, Input::Tick);
    assert_eq!(core.state().reason, Reason::LeaderWithQuorum);
}

#[test]
fn a_transfer_is_ignored_unless_this_node_leads_and_holds() {
    let t0 = Instant::now();
    let mut core = healthy_follower(t0);
    let actions = core.step(t0 + ms(1), Input::Transfer { to: Some(3) });
    assert!(!actions.iter().any(|a| matches!(a, Action::HandOver { .. })));
    core.step(t0 + ms(2), leader(3, 0));
    assert_eq!(
        core.state().reason,
        Reason::LeaderWithQuorum,
        "no transfer pending"
    );
}

#[test]
fn can_lead_follows_the_published_decision() {
    let t0 = Instant::now();
    let mut core = healthy_follower(t0);
    assert_eq!(core.state().can_lead(), Ok(()));
    core.step(t0, Input::Maintenance(true));
    assert_eq!(core.state().can_lead(), Err("in maintenance".to_owned()));
}

fn log(term: u64, index: u64) -> Option<LogId> {
    Some(LogId::new(openraft::CommittedLeaderId::new(term, 1), index))
}

#[test]
fn grant_prevote_rules() {
    let timing = setup().timing;
    let open = PrevoteQuestion {
        candidate_last_log: log(2, 10),
        my_last_log: log(2, 10),
        leader: false,
        quorum_ack_age: None,
        current_leader: Some(1),
        leader_contact_age: None,
        candidate: false,
        may_lead: true,
        own_election_age: None,
        other_candidate: None,
    };
    // (change, granted, what the refusal says)
    type Case = (fn(&mut PrevoteQuestion), Result<(), &'static str>);
    #[rustfmt::skip]
    let cases: &[Case] = &[
        (|_| {}, Ok(())),
        (|q| q.candidate_last_log = log(2, 9), Err("you cannot win an election")),
        (|q| q.candidate_last_log = log(1, 50), Err("you cannot win an election")),
        (|q| q.candidate_last_log = None, Err("your log ends at empty")),
        (|q| q.candidate_last_log = log(3, 1), Ok(())),
        (|q| { q.leader = true; q.quorum_ack_age = Some(FENCE) }, Err("this node leads with a quorum")),
        (|q| { q.leader = true; q.quorum_ack_age = Some(FENCE + ms(1)) }, Ok(())),
        // The lease since the last leader contact: the window after which candidates stand.
        (|q| q.leader_contact_age = Some(LEASE - ms(1)), Err("heard from leader 1 99 ms ago (grants 100 ms after)")),
        (|q| q.leader_contact_age = Some(LEASE), Ok(())),
        // A candidate of its own election, under way, refuses a second one (issue 12's
        // two-term duel)...
        (|q| { q.candidate = true; q.own_election_age = Some(LEASE - ms(1)) }, Err("stands in an election itself")),
        // ...but not for longer than a lease, not if it may not lead (it will not try again),
        // not if its own log is behind (the asker can win where it cannot), and not as a
        // candidate openraft made without this node's pre-vote (at initialisation).
        (|q| { q.candidate = true; q.own_election_age = Some(LEASE) }, Ok(())),
        (|q| { q.candidate = true; q.own_election_age = Some(ms(1)); q.may_lead = false }, Ok(())),
        (|q| { q.candidate = true; q.own_election_age = Some(ms(1)); q.my_last_log = log(2, 9) }, Ok(())),
        (|q| q.candidate = true, Ok(())),
        // Another node asked for this node's vote: its election (a handover's) is under way
        // for a lease and a grace, unless the asker's log is ahead of that candidate's.
        (|q| q.other_candidate = Some((3, LEASE - ms(1), log(2, 10))), Err("node 3 asked for this node's vote 99 ms ago")),
        (|q| q.other_candidate = Some((3, ms(1), log(3, 1))), Err("its log is as recent as yours")),
        (|q| q.other_candidate = Some((3, LEASE + ms(19), log(2, 10))), Err("(grants 120 ms after)")),
        (|q| q.other_candidate = Some((3, LEASE + CANDIDATE_GRACE, log(2, 10))), Ok(())),
        (|q| q.other_candidate = Some((3, ms(1), log(2, 9))), Ok(())),
    ];
    for (change, expected) in cases {
        let mut q = open;
        change(&mut q);
        match (timing.grant_prevote(&q), expected) {
            (Ok(()), Ok(())) => {}
            (Err(why), Err(part)) => assert!(why.contains(part), "{q:?}: {why}"),
            (got, want) => panic!("{q:?}: got {got:?}, want {want:?}"),
        }
    }
}

#[test]
fn the_vote_gate_window_is_the_lease() {
    let t0 = Instant::now();
    let gate = setup().timing.vote_gate(true, t0);
    assert!(gate.check(t0 + LEASE - ms(1), None).is_err());
    assert_eq!(gate.check(t0 + LEASE, None), Ok(()));
}

// ---- Property: any sequence of inputs keeps the safety rules ----

mod sequences {
    use super::*;
    use proptest::prelude::*;

    fn input() -> impl Strategy<Value = Input> {
        prop_oneof![
            (0u64..120, any::<bool>()).prop_map(|(ack, lead)| if lead {
                leader(3, ack)
            } else {
                follower(Some(2))
            }),
            any::<bool>().prop_map(|healthy| Input::Health { healthy }),
            any::<bool>().prop_map(Input::Maintenance),
            any::<bool>().prop_map(|bad| Input::Unbindable(bad.then(|| "down".to_owned()))),
            any::<bool>().prop_map(|won| Input::PreVoteAnswer { won }),
            (0u64..4, any::<bool>()).prop_map(|(episode, some)| Input::HandOverAnswer {
                episode,
                to: some.then_some(2)
            }),
            Just(Input::Stop),
            Just(Input::Tick),
            Just(Input::Tick),
            Just(Input::SuccessorHolds { from: 2 }),
            Just(asked_to_take_over()),
            any::<bool>().prop_map(|some| Input::HeldAnswer {
                released_by: some.then_some(2)
            }),
            Just(Input::Transfer { to: Some(2) }),
            Just(Input::CandidateBehind),
        ]
    }

    proptest! {
        #[test]
        fn holds_only_when_safe_and_stops_once(
            steps in proptest::collection::vec((0u64..80, input()), 1..60)
        ) {
            let t0 = Instant::now();
            let mut core = Core::new(setup(), t0, 3);
            let mut now = t0;
            let (mut holding, mut done, mut stops) = (None, false, 0);
            let (mut healthy, mut bindable, mut leading) = (false, true, false);
            let mut ack: Option<Instant> = None;
            let mut last_episode = 0;
            // When this node stepped down in a planned handover (the only start of an overlap).
            let mut planned_step_down: Option<Instant> = None;
            for (advance, input) in steps {
                now += ms(advance);
                // Observe what the core is told.
                match &input {
                    Input::Raft(r) => {
                        let handing_over = core.state().reason == Reason::HandingOver;
                        if leading && r.state != ServerState::Leader && handing_over {
                            planned_step_down = Some(now);
                        }
                        leading = r.state == ServerState::Leader;
                        ack = r.millis_since_quorum_ack.filter(|_| leading).map(|ms_| now - ms(ms_));
                    }
                    Input::Health { healthy: h } => healthy = *h,
                    Input::Unbindable(why) => bindable = why.is_none(),
                    _ => {}
                }
                let won = input == Input::PreVoteAnswer { won: true };
                let actions = core.step(now, input);
                prop_assert!(!done || actions.is_empty(), "actions after done: {actions:?}");
                for a in &actions {
                    match a {
                        Action::SetHeld { hold, .. } => {
                            prop_assert_ne!(Some(*hold), holding, "SetHeld without a change");
                            holding = Some(*hold);
                        }
                        Action::Elect { .. } => prop_assert!(won, "elect without a won pre-vote"),
                        Action::HandOver { episode, .. } => {
                            prop_assert!(*episode > last_episode);
                            last_episode = *episode;
                        }
                        Action::Notify(Event::Stop, _) => prop_assert!(false, "STOP is the daemon's"),
                        Action::Done(_) => {
                            stops += 1;
                            done = true;
                        }
                        _ => {}
                    }
                }
                let holding = holding == Some(true);
                prop_assert_eq!(holding, core.state().holds_vips);
                if holding && leading {
                    let ack = ack.expect("holding without an ack");
                    prop_assert!(healthy && bindable);
                    prop_assert!(now <= ack + FENCE, "held past the fence");
                    prop_assert!(core.next_deadline().is_some_and(|d| d <= ack + FENCE), "no wake-up at the fence");
                } else if holding {
                    // Only the bounded overlap after a planned step-down.
                    let end = planned_step_down.expect("held after a step-down nobody planned") + OVERLAP_BOUND;
                    prop_assert!(healthy && bindable);
                    prop_assert!(now < end, "overlap past its bound");
                    prop_assert!(core.next_deadline().is_some_and(|d| d <= end), "no wake-up at the bound");
                }
            }
            prop_assert_eq!(stops, usize::from(done));
            // A stop always ends, at the latest at its bound.
            let mut end = core.step(now, Input::Stop);
            end.extend(core.step(now + STOP_HANDOVER_BOUND, Input::Tick));
            prop_assert!(done || is_done(&end), "{end:?}");
        }
    }
}

// ---- Property: the election timer's rules (issue 12), over any sequence of inputs ----

mod election_timing {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Event {
        Contact,
        Tick,
        Answer(bool),
        /// A peer's election: this node's term moves, no leader known yet.
        NewTerm,
    }

    fn event() -> impl Strategy<Value = Event> {
        prop_oneof![
            Just(Event::Contact),
            Just(Event::Tick),
            Just(Event::Tick),
            any::<bool>().prop_map(Event::Answer),
            Just(Event::NewTerm),
        ]
    }

    proptest! {
        /// Every pre-vote is asked once this node's own lease of its last leader (or of its
        /// start) has run out — the candidate's bound in the fencing argument — and a peer
        /// that heard the leader at the same instant grants it (the windows agree, so no
        /// round is lost to a refusal); attempts are at least `lease + election_timeout_min`
        /// apart (no pre-vote storm from a cut-off node); and the first attempt is not
        /// stacked: the timer is due no later than `lease + stagger` after the last contact
        /// or `lease + timeout` after the last election.
        #[test]
        fn prevotes_come_after_the_lease_agree_with_the_grant_rule_and_are_spaced(
            steps in proptest::collection::vec((0u64..70, event()), 1..80)
        ) {
            let t0 = Instant::now();
            let mut core = healthy_follower(t0);
            let timing = setup().timing;
            let (mut now, mut heard, mut election) = (t0, t0, t0);
            let (mut term, mut pending, mut last_ask): (u64, bool, Option<Instant>) = (2, false, None);
            for (advance, event) in steps {
                now += ms(advance);
                if !pending {
                    let due = core.next_deadline().expect("a standing follower has a timer");
                    prop_assert!(
                        due <= (heard + LEASE + STAGGER).max(election + LEASE + LEASE),
                        "due {:?} after the contact, {:?} after the last election",
                        due - heard, due.saturating_duration_since(election)
                    );
                }
                let input = match event {
                    Event::Contact => {
                        heard = now;
                        Input::LeaderContact(now)
                    }
                    Event::Tick => Input::Tick,
                    Event::Answer(won) => {
                        pending = false;
                        Input::PreVoteAnswer { won }
                    }
                    Event::NewTerm => {
                        term += 1;
                        election = now;
                        Input::Raft(RaftReport { term, leader: None, ..RaftReport::default() })
                    }
                };
                for action in core.step(now, input) {
                    match action {
                        Action::RequestPreVote => {
                            prop_assert!(now >= heard + LEASE, "asked {:?} after the contact", now - heard);
                            let peer = PrevoteQuestion {
                                candidate_last_log: log(2, 1),
                                my_last_log: log(2, 1),
                                leader: false,
                                quorum_ack_age: None,
                                current_leader: Some(1),
                                leader_contact_age: Some(now - heard),
                                candidate: false,
                                may_lead: true,
                                own_election_age: None,
                                other_candidate: None,
                            };
                            prop_assert_eq!(timing.grant_prevote(&peer), Ok(()));
                            if let Some(before) = last_ask {
                                prop_assert!(now >= before + LEASE + ET_MIN, "attempts {:?} apart", now - before);
                            }
                            last_ask = Some(now);
                            election = now;
                            pending = true;
                        }
                        Action::Elect { term: from } => {
                            prop_assert_eq!(from, term, "elects from a term other than the last reported");
                        }
                        _ => {}
                    }
                }
            }
        }
    }
}

#[test]
fn a_reload_that_makes_the_holder_a_witness_hands_over_while_holding() {
    let t0 = Instant::now();
    let mut core = holding_leader(t0);
    let witness = Setup {
        witness: true,
        ..setup()
    };
    let actions = core.step(t0 + ms(1), Input::Reload(witness));
    assert_eq!(held(&actions), None, "keeps the VIPs until it steps down");
    assert!(actions.contains(&Action::HandOver {
        episode: 1,
        to: None,
        keeping_vips: true,
    }));
    // Make-before-break, like any planned handover: it keeps them until its successor
    // holds them, then drains.
    let down = core.step(t0 + ms(2), follower(Some(2)));
    assert_eq!(held(&down), None);
    assert_eq!(core.state().reason, Reason::PlannedOverlap);
    core.step(t0 + ms(3), Input::SuccessorHolds { from: 2 });
    let released = core.step(t0 + ms(3) + OVERLAP_DRAIN, Input::Tick);
    assert_eq!(held(&released), Some(false));
    assert_eq!(
        core.state().can_lead(),
        Err("witness: votes, never leads".to_owned())
    );
}

#[test]
fn a_reloaded_fence_moves_the_hold_deadline_at_once() {
    let t0 = Instant::now();
    let mut core = holding_leader(t0);
    let shorter = FENCE - ms(20);
    let mut tighter = setup();
    tighter.timing.fence = shorter;
    let actions = core.step(t0 + ms(1), Input::Reload(tighter));
    assert!(
        actions.contains(&Action::HoldUntil(Some(t0 + shorter))),
        "{actions:?}"
    );
    assert_eq!(core.next_deadline(), Some(t0 + shorter));
    let released = core.step(t0 + shorter + ms(1), Input::Tick);
    assert_eq!(held(&released), Some(false));
}

#[test]
fn an_old_holder_does_not_stand_against_its_successor_during_the_overlap() {
    let t0 = Instant::now();
    let mut core = holding_leader(t0);
    core.step(t0 + ms(1), Input::Transfer { to: Some(3) });
    core.step(
        t0 + ms(2),
        Input::HandOverAnswer {
            episode: 1,
            to: Some(3),
        },
    );
    // Stepped down for node 3, whose election is not decided yet (no leader known).
    core.step(t0 + ms(3), follower(None));
    assert_eq!(core.state().reason, Reason::PlannedOverlap);
    assert!(core.state().may_lead, "a transfer is no maintenance");
    // Past its own lease, but the successor it asked is still being elected.
    let tick = core.step(t0 + ms(3) + OVERLAP_BOUND - ms(1), Input::Tick);
    assert!(!tick.contains(&Action::RequestPreVote), "{tick:?}");
    // Once the overlap is over (here: at its bound) it stands again.
    let after = core.step(t0 + ms(3) + OVERLAP_BOUND + LEASE, Input::Tick);
    assert!(after.contains(&Action::RequestPreVote), "{after:?}");
}

#[test]
fn a_node_that_may_not_lead_stands_only_as_a_last_resort_and_then_hands_over() {
    let t0 = Instant::now();
    let mut core = healthy_follower(t0);
    core.step(t0, Input::Maintenance(true));
    let heard = t0 + ms(500);
    core.step(heard, Input::LeaderContact(heard));
    assert_eq!(core.next_deadline(), None, "nothing says it must stand");
    core.step(heard + ms(300), Input::CandidateBehind);
    let due = core.next_deadline().expect("a last-resort election timer");
    assert_eq!(due, heard + LAST_RESORT_AFTER + STAGGER);
    assert!(!core
        .step(due - ms(1), Input::Tick)
        .contains(&Action::RequestPreVote));
    assert!(core
        .step(due, Input::Tick)
        .contains(&Action::RequestPreVote));
    let answer = core.step(due + ms(1), Input::PreVoteAnswer { won: true });
    assert!(answer.contains(&Action::Elect { term: 2 }), "{answer:?}");
    // Elected: it takes no VIPs and asks a peer that may lead to take over.
    let elected = core.step(due + ms(5), leader(3, 0));
    assert!(!core.state().holds_vips);
    assert!(
        elected.iter().any(|a| matches!(
            a,
            Action::HandOver {
                keeping_vips: false,
                ..
            }
        )),
        "{elected:?}"
    );
}

#[test]
fn a_stopping_node_or_one_outside_the_membership_never_stands() {
    let t0 = Instant::now();
    let mut outside = healthy_follower(t0);
    outside.step(t0, Input::Member(false));
    outside.step(t0, Input::CandidateBehind);
    let mut stopping = healthy_follower(t0);
    stopping.step(t0, Input::Stop);
    stopping.step(t0, Input::CandidateBehind);
    for core in [&mut outside, &mut stopping] {
        let later = t0 + LAST_RESORT_AFTER * 3;
        assert!(!core
            .step(later, Input::Tick)
            .contains(&Action::RequestPreVote));
    }
}
