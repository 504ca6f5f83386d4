//! The executor's logic against the recording fakes: burst count, idempotence, fast release,
//! re-adds, duplicates, and errors logged once.

use std::io::Write;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::fake::{Call, FakeFailure};
use super::*;

const V4: &str = "192.0.2.100/32";
const V6: &str = "2001:db8::100/128";
/// The VIP thread's reconcile period in tests that do not test it.
const RECONCILE: Duration = Duration::from_secs(3600);

fn ip(text: &str) -> IpAddr {
    text.split('/').next().unwrap().parse().unwrap()
}

fn config(address: &str, interface: &str) -> VipConfig {
    VipConfig {
        address: address.parse().unwrap(),
        interface: interface.into(),
        label: None,
    }
}

fn announce(burst_count: u32, burst_interval_ms: u64, refresh_s: u64) -> Announce {
    Announce {
        burst_count,
        burst_interval_ms,
        refresh_s,
    }
}

struct Rig {
    vips: Vips,
    control: Arc<FakeAddressControl>,
    announcer: Arc<FakeAnnouncer>,
}

fn rig(configs: &[VipConfig], announce: Announce) -> Rig {
    let control = Arc::new(FakeAddressControl::new());
    let announcer = Arc::new(FakeAnnouncer::new());
    let vips = Vips::new(configs, &announce, control.clone(), announcer.clone());
    Rig {
        vips,
        control,
        announcer,
    }
}

/// Polls `done` every ms until it holds or `limit` passes.
async fn wait_for(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    done()
}

#[test]
fn hold_binds_announces_and_probes_at_once() {
    let r = rig(
        &[config(V4, "eth0"), config(V6, "eth0")],
        announce(3, 20, 0),
    );
    r.vips.set_held(true, "leader");
    for vip in [ip(V4), ip(V6)] {
        assert!(r.control.is_present(vip));
        assert_eq!(
            r.announcer.count(&Call::Announce(vip)),
            1,
            "first frame is synchronous"
        );
        assert_eq!(r.announcer.count(&Call::Probe(vip)), 1);
    }
    let status = r.vips.status();
    assert!(status
        .iter()
        .all(|s| s.held && s.held_since_unix_ms.is_some()));
    assert_eq!(status[0].address, V4);
    assert_eq!(status[0].announcements_sent, 1);
}

#[test]
fn set_held_is_idempotent() {
    let r = rig(&[config(V4, "eth0")], announce(3, 20, 0));
    r.vips.set_held(true, "leader");
    r.vips.set_held(true, "leader");
    r.vips.set_held(true, "leader");
    assert_eq!(r.control.count(&Call::Add(ip(V4))), 1);
    assert_eq!(r.announcer.count(&Call::Announce(ip(V4))), 1);
    r.vips.set_held(false, "follower");
    r.vips.set_held(false, "follower");
    assert_eq!(r.control.count(&Call::Remove(ip(V4))), 1);
    assert!(!r.control.is_present(ip(V4)));
}

#[tokio::test]
async fn takeover_sends_exactly_burst_count_frames() {
    let r = rig(&[config(V4, "eth0"), config(V6, "eth1")], announce(4, 5, 0));
    let cancel = CancellationToken::new();
    r.vips.spawn_background(cancel.clone());
    r.vips.set_held(true, "leader");
    let announcer = r.announcer.clone();
    let all_sent = wait_for(Duration::from_secs(2), || {
        announcer.count(&Call::Announce(ip(V4))) == 4
            && announcer.count(&Call::Announce(ip(V6))) == 4
    })
    .await;
    assert!(all_sent, "{:?}", r.announcer.calls());
    // No refresh configured: nothing more.
    tokio::time::sleep(Duration::from_millis(60)).await;
    assert_eq!(r.announcer.count(&Call::Announce(ip(V4))), 4);
    assert_eq!(
        r.announcer.count(&Call::Probe(ip(V4))),
        1,
        "one probe per takeover"
    );
    assert_eq!(r.vips.status()[1].announcements_sent, 4);
    cancel.cancel();
}

#[tokio::test]
async fn release_does_not_wait_for_a_running_burst_and_stops_it() {
    let r = rig(&[config(V4, "eth0")], announce(10, 200, 0));
    let cancel = CancellationToken::new();
    r.vips.spawn_background(cancel.clone());
    r.vips.set_held(true, "leader");
    tokio::time::sleep(Duration::from_millis(20)).await; // the burst is now sleeping
    let started = Instant::now();
    r.vips.set_held(false, "quorum lost");
    let took = started.elapsed();
    assert!(took < Duration::from_millis(20), "release took {took:?}");
    assert!(!r.control.is_present(ip(V4)));
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert_eq!(
        r.announcer.count(&Call::Announce(ip(V4))),
        1,
        "no burst frame after release"
    );
    cancel.cancel();
}

#[tokio::test]
async fn refresh_runs_while_held_and_stops_on_release() {
    let r = rig(&[config(V4, "eth0")], announce(1, 5, 1));
    let cancel = CancellationToken::new();
    r.vips.spawn_background(cancel.clone());
    r.vips.set_held(true, "leader");
    let announcer = r.announcer.clone();
    let refreshed = wait_for(Duration::from_millis(1600), || {
        announcer.count(&Call::Announce(ip(V4))) >= 2
    })
    .await;
    assert!(refreshed, "a refresh within ~1 s");
    r.vips.set_held(false, "follower");
    let after_release = r.announcer.count(&Call::Announce(ip(V4)));
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert_eq!(r.announcer.count(&Call::Announce(ip(V4))), after_release);
    cancel.cancel();
}

#[test]
fn reconcile_re_adds_a_vanished_vip_once_per_disappearance() {
    let r = rig(&[config(V4, "eth0")], announce(3, 20, 0));
    r.vips.set_held(true, "leader");
    r.vips.reconcile();
    assert_eq!(r.vips.status()[0].re_adds, 0, "nothing to repair");

    r.control.vanish(ip(V4));
    r.vips.reconcile();
    assert!(r.control.is_present(ip(V4)));
    assert_eq!(r.vips.status()[0].re_adds, 1);
    assert_eq!(
        r.announcer.count(&Call::Announce(ip(V4))),
        2,
        "announced again after the re-add"
    );
    r.vips.reconcile();
    assert_eq!(
        r.vips.status()[0].re_adds,
        1,
        "a present VIP is no new event"
    );

    r.control.vanish(ip(V4));
    r.vips.reconcile();
    assert_eq!(r.vips.status()[0].re_adds, 2);
}

#[test]
fn reconcile_removes_a_vip_this_node_does_not_hold() {
    let r = rig(&[config(V4, "eth0")], announce(3, 20, 0));
    r.control.appear(ip(V4)); // left over by a crashed predecessor
    r.vips.reconcile();
    assert!(!r.control.is_present(ip(V4)));
    assert_eq!(
        r.announcer.calls(),
        vec![],
        "a non-holder announces nothing"
    );
}

#[test]
fn a_vip_that_could_not_be_bound_is_bound_and_announced_by_a_later_reconcile() {
    let r = rig(&[config(V4, "eth9")], announce(3, 20, 0));
    r.control.fail(ip(V4), FakeFailure::InterfaceMissing);
    r.vips.set_held(true, "leader");
    let status = &r.vips.status()[0];
    assert!(!status.held);
    assert_eq!(
        status.error.as_deref(),
        Some("cannot add 192.0.2.100/32 to eth9: interface eth9 missing")
    );
    assert_eq!(r.announcer.calls(), vec![]);

    r.control.heal(ip(V4));
    r.vips.reconcile();
    let status = &r.vips.status()[0];
    assert!(status.held);
    assert_eq!(status.error, None);
    assert_eq!(status.re_adds, 0, "a late bind is no re-add");
    assert_eq!(r.announcer.count(&Call::Announce(ip(V4))), 1);
}

#[test]
fn a_duplicate_while_holding_is_counted_and_re_announced_at_most_once_a_second() {
    let r = rig(&[config(V4, "eth0")], announce(3, 20, 0));
    let theirs = Mac([2, 0, 0, 0, 0x0b, 1]);
    assert!(
        !r.vips.on_duplicate(ip(V4), theirs),
        "not held: rightful holder"
    );
    assert_eq!(r.vips.status()[0].duplicates, 0);

    r.vips.set_held(true, "leader");
    assert!(r.vips.on_duplicate(ip(V4), theirs));
    assert_eq!(
        r.announcer.count(&Call::Announce(ip(V4))),
        2,
        "a fresh burst began"
    );
    assert!(r.vips.on_duplicate(ip(V4), theirs));
    assert_eq!(r.vips.status()[0].duplicates, 2);
    assert_eq!(
        r.announcer.count(&Call::Announce(ip(V4))),
        2,
        "no second burst within 1 s"
    );
    assert_eq!(
        r.announcer.count(&Call::Probe(ip(V4))),
        1,
        "re-bursts do not probe"
    );
    assert!(!r.vips.on_duplicate(ip("192.0.2.7/32"), theirs));
}

#[test]
fn announce_failures_show_in_status_without_unbinding() {
    let r = rig(&[config(V4, "eth0")], announce(3, 20, 0));
    r.announcer.fail(Some(FakeFailure::LinkDown));
    r.vips.set_held(true, "leader");
    let status = &r.vips.status()[0];
    assert!(status.held);
    assert_eq!(status.announcements_sent, 0);
    assert_eq!(
        status.error.as_deref(),
        Some("cannot announce 192.0.2.100/32 on eth0: interface eth0 is down"),
        "the first failing operation of the episode"
    );
}

#[test]
fn ipv6_labels_are_dropped() {
    let mut c = config(V6, "eth0");
    c.label = Some("eth0:vip".into());
    assert_eq!(Vip::from_config(&c).label, None);
    let mut c = config(V4, "eth0");
    c.label = Some("eth0:vip".into());
    assert_eq!(Vip::from_config(&c).label.as_deref(), Some("eth0:vip"));
}

/// Collects formatted log lines for one test.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn lines(&self) -> Vec<String> {
        String::from_utf8_lossy(&self.0.lock().unwrap())
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

#[test]
fn a_repeating_error_is_logged_when_it_starts_and_when_it_clears() {
    let logs = Logs::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        // Tests on other threads may have cached "nobody listens" for these callsites before
        // this subscriber existed; recompute with it.
        tracing::callsite::rebuild_interest_cache();
        let r = rig(&[config(V4, "eth9")], announce(3, 20, 0));
        r.control.fail(ip(V4), FakeFailure::InterfaceMissing);
        r.vips.set_held(true, "leader");
        for _ in 0..20 {
            r.vips.reconcile();
        }
        r.control.heal(ip(V4));
        r.vips.reconcile();
        r.vips.reconcile();
    });
    let lines = logs.lines();
    let missing: Vec<_> = lines
        .iter()
        .filter(|l| l.contains("interface eth9 missing"))
        .collect();
    assert_eq!(
        missing.len(),
        2,
        "one start, one clear:\n{}",
        lines.join("\n")
    );
    assert!(
        missing[0].contains("WARN") && missing[0].contains("from=\"ok\" to=cannot add"),
        "{}",
        missing[0]
    );
    assert!(
        missing[1].contains("INFO") && missing[1].contains("missing to=\"ok\""),
        "{}",
        missing[1]
    );
    // One summary line per transition, not one per VIP; the repair says what it did.
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.contains("VIPs held, some failed") && l.contains("failed=1"))
            .count(),
        1,
        "{}",
        lines.join("\n")
    );
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.contains("VIPs repaired") && l.contains("bound=1"))
            .count(),
        1,
        "{}",
        lines.join("\n")
    );
}

fn many(count: u32) -> Vec<VipConfig> {
    (0..count)
        .map(|i| config(&format!("198.51.100.{}/32", i + 1), "eth0"))
        .collect()
}

#[test]
fn the_vip_thread_takes_the_work_off_the_caller() {
    let r = rig(&many(200), announce(3, 20, 10));
    // 200 × 1 ms: a takeover this slow would have starved Raft when it ran on its thread.
    r.control.slow(Duration::from_millis(1));
    let cancel = CancellationToken::new();
    let worker = VipWorker::spawn(r.vips.clone(), RECONCILE, cancel.clone()).unwrap();

    let asked = Instant::now();
    worker.set_held(true, "leader");
    let returned = asked.elapsed();
    assert!(
        returned < Duration::from_millis(20),
        "set_held blocked {returned:?}"
    );
    assert!(worker.wait_applied(Duration::from_secs(5)));
    assert_eq!(r.control.bound().len(), 200);
    assert!(asked.elapsed() >= Duration::from_millis(200));

    worker.set_held(false, "quorum lost");
    assert!(worker.wait_applied(Duration::from_secs(5)));
    assert!(r.control.bound().is_empty());
    assert!(worker.status().iter().all(|v| !v.held));
    cancel.cancel();
}

#[test]
fn the_vip_thread_repairs_a_vanished_vip_on_its_own_timer() {
    let r = rig(&many(2), announce(1, 20, 0));
    let cancel = CancellationToken::new();
    let worker = VipWorker::spawn(r.vips.clone(), Duration::from_millis(20), cancel.clone());
    let worker = worker.unwrap();
    worker.set_held(true, "leader");
    assert!(worker.wait_applied(Duration::from_secs(1)));
    let vip = ip("198.51.100.2/32");
    r.control.vanish(vip);
    let start = Instant::now();
    while !r.control.is_present(vip) && start.elapsed() < Duration::from_secs(1) {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(r.control.is_present(vip), "not re-added within 1 s");
    assert_eq!(worker.status()[1].re_adds, 1);
    worker.set_held(false, "follower");
    assert!(worker.wait_applied(Duration::from_secs(1)));
    // Released: the timer's reconciles must not bring anything back.
    std::thread::sleep(Duration::from_millis(60));
    assert!(r.control.bound().is_empty());
    cancel.cancel();
}

#[test]
fn a_newer_wish_replaces_one_not_yet_carried_out() {
    let r = rig(&many(50), announce(1, 20, 0));
    r.control.slow(Duration::from_millis(2));
    let cancel = CancellationToken::new();
    let worker = VipWorker::spawn(r.vips.clone(), RECONCILE, cancel.clone()).unwrap();
    worker.set_held(true, "leader");
    worker.set_held(false, "quorum lost");
    worker.set_held(true, "leader again");
    worker.set_held(false, "quorum lost again");
    assert!(worker.wait_applied(Duration::from_secs(5)));
    assert!(r.control.bound().is_empty());
    // At most the first hold ran before the wishes collapsed to the last one.
    assert!(r.control.count(&Call::Add(ip("198.51.100.1/32"))) <= 1);
    cancel.cancel();
}

#[test]
fn refreshes_of_vips_taken_over_together_are_spread_across_the_period() {
    let refresh = Some(Duration::from_secs(10));
    let phases: Vec<Duration> = (0..200).map(|i| phase(refresh, i, 200)).collect();
    assert_eq!(phases[0], Duration::ZERO);
    assert!(phases
        .windows(2)
        .all(|w| w[1] - w[0] == Duration::from_millis(50)));
    assert!(phases[199] < Duration::from_secs(10));
    assert_eq!(phase(refresh, 0, 1), Duration::ZERO);
    assert_eq!(phase(None, 5, 200), Duration::ZERO);
}

fn leased_rig(configs: &[VipConfig], lifetime: Duration, renew: Duration) -> Rig {
    let control = Arc::new(FakeAddressControl::new());
    let announcer = Arc::new(FakeAnnouncer::new());
    let vips = Vips::leased(
        configs,
        &announce(1, 20, 0),
        control.clone(),
        announcer.clone(),
        lifetime,
        renew,
    );
    Rig {
        vips,
        control,
        announcer,
    }
}

#[tokio::test]
async fn held_vips_renew_their_lease_and_status_shows_what_is_left_and_only_while_held() {
    let r = leased_rig(
        &[config(V4, "eth0")],
        Duration::from_millis(400),
        Duration::from_millis(50),
    );
    let cancel = CancellationToken::new();
    r.vips.spawn_background(cancel.clone());
    r.vips.set_held(true, "leader");
    let add = Call::Add(ip(V4));
    assert!(wait_for(Duration::from_secs(2), || r.control.count(&add) >= 4).await);
    let left = r.vips.status()[0].lease_remaining_ms.expect("a lease");
    assert!((250..=400).contains(&left), "{left} ms left");

    r.vips.set_held(false, "follower");
    let after_release = r.control.count(&add);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        r.control.count(&add),
        after_release,
        "renewed after release"
    );
    assert_eq!(r.vips.status()[0].lease_remaining_ms, None);

    // Held again: the renewals, idle while released, resume.
    r.vips.set_held(true, "leader again");
    let held_again = r.control.count(&add);
    assert!(
        wait_for(Duration::from_secs(2), || r.control.count(&add)
            >= held_again + 3)
        .await
    );
    cancel.cancel();
}

#[test]
fn a_lease_that_ran_out_while_held_is_re_added_and_counted() {
    // No renewal in time (a stalled VIP thread): the kernel drops the VIP at the lifetime.
    let r = leased_rig(
        &[config(V4, "eth0")],
        Duration::from_millis(10),
        Duration::from_secs(3600),
    );
    r.vips.set_held(true, "leader");
    std::thread::sleep(Duration::from_millis(20));
    r.control.vanish(ip(V4));
    r.vips.reconcile();
    let status = &r.vips.status()[0];
    assert!(r.control.is_present(ip(V4)));
    assert_eq!((status.lease_expiries, status.re_adds), (1, 1));

    // Deleted by someone else before the lease ran out: a re-add, not an expiry.
    let r = leased_rig(
        &[config(V4, "eth0")],
        Duration::from_secs(60),
        Duration::from_secs(3600),
    );
    r.vips.set_held(true, "leader");
    r.control.vanish(ip(V4));
    r.vips.reconcile();
    let status = &r.vips.status()[0];
    assert_eq!((status.lease_expiries, status.re_adds), (0, 1));
}

#[test]
fn the_vip_thread_releases_at_the_fence_deadline_by_itself() {
    let r = rig(&many(3), announce(3, 20, 0));
    let cancel = CancellationToken::new();
    let worker = VipWorker::spawn(r.vips.clone(), RECONCILE, cancel.clone()).unwrap();
    let deadline = Instant::now() + Duration::from_millis(100);
    worker.hold_until(Some(deadline));
    worker.set_held(true, "leader");
    assert!(worker.wait_applied(Duration::from_secs(1)));
    assert_eq!(r.control.bound().len(), 3);
    // Nobody extends the deadline (a stalled Raft thread): released at it, to the ms.
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    let start = Instant::now();
    while !r.control.bound().is_empty() && start.elapsed() < Duration::from_secs(1) {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(
        start.elapsed() < Duration::from_millis(20),
        "released {:?} after the deadline",
        start.elapsed()
    );
    let announced = r.announcer.count(&Call::Announce(ip("198.51.100.1/32")));
    assert_eq!(worker.fence_releases(), 1);
    // The supervisor finds its quorum lost too: the same release, counted once.
    worker.release_at_fence("no quorum");
    assert!(worker.wait_applied(Duration::from_secs(1)));
    assert_eq!(worker.fence_releases(), 1);
    // A fresh deadline (a quorum acknowledged again): held again.
    worker.hold_until(Some(Instant::now() + Duration::from_secs(10)));
    worker.set_held(true, "leader");
    let start = Instant::now();
    while r.control.bound().len() < 3 && start.elapsed() < Duration::from_secs(1) {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(r.control.bound().len(), 3);
    assert!(r.announcer.count(&Call::Announce(ip("198.51.100.1/32"))) > announced);
    // The supervisor's release at the fence, first this time: counted; any other release not.
    worker.release_at_fence("no quorum");
    assert!(worker.wait_applied(Duration::from_secs(1)));
    assert!(r.control.bound().is_empty());
    assert_eq!(worker.fence_releases(), 2);
    worker.set_held(true, "leader");
    assert!(worker.wait_applied(Duration::from_secs(1)));
    worker.set_held(false, "in maintenance");
    assert!(worker.wait_applied(Duration::from_secs(1)));
    assert_eq!(worker.fence_releases(), 2);
    cancel.cancel();
}

#[test]
fn nothing_is_renewed_announced_or_re_added_past_the_fence() {
    let r = leased_rig(&many(2), Duration::from_secs(1), Duration::from_secs(3600));
    r.vips.set_held(true, "leader");
    r.vips.set_hold_until(Some(Instant::now()));
    let adds = r.control.count(&Call::Add(ip("198.51.100.1/32")));
    r.vips.inner.renew_leases();
    r.vips
        .inner
        .announce_due(Instant::now() + Duration::from_secs(3600));
    assert_eq!(r.control.count(&Call::Add(ip("198.51.100.1/32"))), adds);
    // A frozen box resumes: its VIP expired meanwhile; reconcile must not put it back.
    r.control.vanish(ip("198.51.100.1/32"));
    r.vips.reconcile();
    assert!(!r.control.is_present(ip("198.51.100.1/32")));
    assert!(
        !r.control.is_present(ip("198.51.100.2/32")),
        "removed past the fence"
    );
}

#[test]
fn a_missing_or_down_interface_makes_the_box_unbindable_until_it_is_back() {
    let r = rig(
        &[config(V4, "eth0"), config(V6, "vip0")],
        announce(3, 20, 0),
    );
    assert_eq!(r.vips.unbindable(), None);
    r.control.fail(ip(V6), FakeFailure::LinkDown);
    assert_eq!(
        r.vips.unbindable().as_deref(),
        Some("2001:db8::100/128 could not be bound on vip0: interface vip0 is down")
    );
    assert_eq!(
        r.vips.status()[1].error.as_deref(),
        Some("2001:db8::100/128 could not be bound on vip0: interface vip0 is down"),
        "a standby shows why it may not lead"
    );
    r.control.heal(ip(V6));
    assert_eq!(r.vips.unbindable(), None);
    assert_eq!(r.vips.status()[1].error, None);
}

#[test]
fn a_refused_add_keeps_the_box_unbindable_until_an_add_succeeds() {
    let r = rig(&[config(V4, "eth0")], announce(1, 20, 0));
    r.control.fail(ip(V4), FakeFailure::PermissionDenied);
    r.vips.set_held(true, "leader");
    r.vips.set_held(false, "handing over");
    let why = r.vips.unbindable().expect("EPERM on add");
    assert!(why.contains("CAP_NET_ADMIN"), "{why}");
    r.control.heal(ip(V4));
    assert!(r.vips.unbindable().is_some(), "no add since: still refused");
    r.vips.set_held(true, "leader");
    assert_eq!(r.vips.unbindable(), None);
}

#[tokio::test]
async fn a_yielding_holder_keeps_its_vips_announces_nothing_and_does_not_fight_the_successor() {
    let r = rig(&[config(V4, "eth0")], announce(3, 5, 1));
    let cancel = CancellationToken::new();
    r.vips.spawn_background(cancel.clone());
    r.vips.set_held(true, "leader");
    r.vips.set_overlap(VipOverlap::Yielding);
    let announced = r.announcer.count(&Call::Announce(ip(V4)));
    let successor = Mac([2, 0, 0, 0, 0x0b, 2]);
    assert!(r.vips.on_duplicate(ip(V4), successor));
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(
        r.announcer.count(&Call::Announce(ip(V4))),
        announced,
        "no burst, no refresh, no answer to the successor's frames"
    );
    assert_eq!(r.vips.status()[0].duplicates, 0);
    assert!(
        r.vips.status()[0].held,
        "still bound: it serves until it releases"
    );
    // The successor never came: leading on, it announces again at once.
    r.vips.set_overlap(VipOverlap::None);
    assert_eq!(r.announcer.count(&Call::Announce(ip(V4))), announced + 1);
    cancel.cancel();
}

#[test]
fn a_successor_counts_no_duplicate_during_the_overlap_and_announces_again_on_request() {
    let r = rig(&[config(V4, "eth0")], announce(1, 5, 0));
    r.vips.set_overlap(VipOverlap::Taking {
        old_holder: "192.0.2.11".parse().unwrap(),
    });
    r.vips.set_held(true, "leader");
    let old_holder = Mac([2, 0, 0, 0, 0x0b, 1]);
    assert!(r.vips.on_duplicate(ip(V4), old_holder));
    assert_eq!(r.vips.status()[0].duplicates, 0);
    assert_eq!(r.announcer.count(&Call::Announce(ip(V4))), 1);
    r.vips.reannounce();
    assert_eq!(r.announcer.count(&Call::Announce(ip(V4))), 2);
    // After the overlap a claim is a duplicate again.
    r.vips.set_overlap(VipOverlap::None);
    assert!(r.vips.on_duplicate(ip(V4), old_holder));
    assert_eq!(r.vips.status()[0].duplicates, 1);
}

#[test]
fn a_deadline_moved_later_before_it_passes_keeps_the_vips_held_and_the_last_one_still_fences() {
    let r = rig(&many(2), announce(3, 20, 0));
    let cancel = CancellationToken::new();
    let worker = VipWorker::spawn(r.vips.clone(), RECONCILE, cancel.clone()).unwrap();
    let fence = Duration::from_millis(40);
    worker.hold_until(Some(Instant::now() + fence));
    worker.set_held(true, "leader");
    assert!(worker.wait_applied(Duration::from_secs(1)));
    // A leader's acknowledgements: each moves the deadline later, without waking the thread.
    let mut last = Instant::now();
    for _ in 0..30 {
        std::thread::sleep(Duration::from_millis(5));
        last = Instant::now() + fence;
        worker.hold_until(Some(last));
        assert_eq!(r.control.bound().len(), 2, "released although extended");
    }
    // They stop: released at the last deadline, not at an earlier one.
    while r.control.bound().len() == 2 && Instant::now() < last + Duration::from_secs(1) {
        std::thread::sleep(Duration::from_millis(1));
    }
    let now = Instant::now();
    assert!(now >= last, "released {:?} before the deadline", last - now);
    assert!(
        now < last + Duration::from_millis(20),
        "released {:?} after the deadline",
        now - last
    );
    cancel.cancel();
}

#[test]
fn a_reloaded_set_binds_new_vips_at_once_and_releases_removed_ones_while_held() {
    let (kept, gone, new) = ("198.51.100.1/32", "198.51.100.2/32", "198.51.100.3/32");
    let r = rig(
        &[config(kept, "eth0"), config(gone, "eth0")],
        announce(1, 20, 0),
    );
    r.vips.set_held(true, "leader");
    let changed = r.vips.set_vips(
        &[config(kept, "eth0"), config(new, "eth0")],
        &announce(1, 20, 0),
    );
    assert!(changed);
    assert_eq!(r.control.bound(), [ip(kept), ip(new)].into());
    assert_eq!(r.announcer.count(&Call::Announce(ip(new))), 1);
    assert_eq!(r.announcer.count(&Call::Probe(ip(new))), 1);
    // The kept VIP was neither re-added nor announced again.
    assert_eq!(r.control.count(&Call::Add(ip(kept))), 1);
    assert_eq!(r.announcer.count(&Call::Announce(ip(kept))), 1);
    let listed: Vec<String> = r.vips.status().iter().map(|v| v.address.clone()).collect();
    assert_eq!(listed, [kept, new]);
}

#[test]
fn a_reloaded_set_binds_nothing_while_released() {
    let r = rig(&[config(V4, "eth0")], announce(1, 20, 0));
    assert!(r.vips.set_vips(
        &[config(V4, "eth0"), config(V6, "eth0")],
        &announce(1, 20, 0)
    ));
    assert!(r.control.bound().is_empty());
    assert!(!r.vips.set_vips(
        &[config(V4, "eth0"), config(V6, "eth0")],
        &announce(2, 20, 0)
    ));
    r.vips.set_held(true, "leader");
    assert_eq!(r.control.bound(), [ip(V4), ip(V6)].into());
}

#[test]
fn the_vip_thread_applies_a_reloaded_set() {
    let r = rig(&many(1), announce(1, 20, 0));
    let cancel = CancellationToken::new();
    let worker = VipWorker::spawn(r.vips.clone(), RECONCILE, cancel.clone()).unwrap();
    worker.set_held(true, "leader");
    assert!(worker.wait_applied(Duration::from_secs(1)));
    worker.set_vips(VipSet {
        vips: many(2),
        announce: announce(1, 20, 0),
        reconcile: RECONCILE,
    });
    let start = Instant::now();
    while r.control.bound().len() < 2 && start.elapsed() < Duration::from_secs(1) {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(r.control.bound().len(), 2, "the new VIP is bound");
    cancel.cancel();
}

/// Records, for every announcement, how many VIPs the fake kernel had bound at that moment.
struct BoundAtAnnounce {
    control: Arc<FakeAddressControl>,
    seen: Mutex<Vec<usize>>,
}

impl Announcer for BoundAtAnnounce {
    fn announce(&self, _vip: &Vip) -> Result<(), VipError> {
        let bound = self.control.bound().len();
        crate::sync::lock(&self.seen).push(bound);
        Ok(())
    }
    fn probe(&self, _vip: &Vip) -> Result<(), VipError> {
        Ok(())
    }
}

#[test]
fn a_takeover_announces_the_first_vip_before_binding_the_rest() {
    let configs: Vec<VipConfig> = (1..=200)
        .map(|i| config(&format!("198.51.100.{i}/32"), "eth0"))
        .collect();
    let control = Arc::new(FakeAddressControl::new());
    let announcer = Arc::new(BoundAtAnnounce {
        control: control.clone(),
        seen: Mutex::new(Vec::new()),
    });
    let vips = Vips::new(
        &configs,
        &announce(3, 20, 0),
        control.clone(),
        announcer.clone(),
    );
    vips.set_held(true, "leader");
    let seen = crate::sync::lock(&announcer.seen).clone();
    assert_eq!(seen.len(), 200, "each VIP announced once at once");
    // The first VIP went out with only itself bound, the steps double up to one netlink
    // datagram's worth, and every VIP is announced only once it is bound.
    assert_eq!(seen[0], 1, "{seen:?}");
    assert_eq!(&seen[1..3], &[3, 3], "{seen:?}");
    assert!(seen.windows(2).all(|w| w[0] <= w[1]), "{seen:?}");
    assert!(seen.iter().enumerate().all(|(i, &b)| b > i), "{seen:?}");
    let steps = seen.iter().collect::<std::collections::HashSet<_>>().len();
    assert_eq!(steps, 9, "1 2 4 8 16 32 64 64 9: {seen:?}");
    assert_eq!(control.bound().len(), 200);
}
