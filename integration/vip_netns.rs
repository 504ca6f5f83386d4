//! The VIP layer against a real kernel: two network namespaces joined by a veth pair.
//!
//! ```text
//!   netns rvv<pid><t>a                      netns rvv<pid><t>b
//!  +---------------------------+           +---------------------------+
//!  | raftvip VIP code (thread  |           | the "client" / the rival  |
//!  | in this netns via setns)  |           |                           |
//!  | rvv0 02:00:00:00:0a:01    |---veth----| rvv0 02:00:00:00:0b:01    |
//!  |   192.0.2.1/24            |           |   192.0.2.2/24            |
//!  |   2001:db8::1/64          |           |   2001:db8::2/64          |
//!  | VIPs 192.0.2.100/32,      |           | neighbour entries for the |
//!  |      2001:db8::100/128    |           | VIPs, first at a bogus MAC|
//!  +---------------------------+           +---------------------------+
//! ```
//!
//! Needs root (CAP_NET_ADMIN, CAP_NET_RAW, CAP_SYS_ADMIN for setns) and iproute2. Without
//! them the tests FAIL: a skipped privileged test proves nothing and hides a broken CI step.
//! Each test creates its own namespaces named after the pid and a per-test tag, and a Drop
//! guard deletes exactly those on every exit path. The root namespace is never touched.

use std::fs::File;
use std::future::Future;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::time::{Duration, Instant};

use raftvip::config::{Announce, VipConfig};
use raftvip::vip::announce::PacketAnnouncer;
use raftvip::vip::netlink::{AddressEvent, AddressWatcher, NetlinkControl};
use raftvip::vip::{AddressControl, Announcer, Cause, Vip, VipHolder, VipOverlap, VipWorker, Vips};
use tokio_util::sync::CancellationToken;

const MAC_A: &str = "02:00:00:00:0a:01";
const MAC_B: &str = "02:00:00:00:0b:01";
/// Where B's neighbour entries point before the takeover: the "old holder".
const BOGUS_MAC: &str = "02:00:00:00:0e:ee";
const VIP4: &str = "192.0.2.100";
const VIP6: &str = "2001:db8::100";
/// Generous bound for anything the kernel does "at once" (typically < 10 ms).
const PATIENCE: Duration = Duration::from_secs(3);
/// The VIP thread's own reconcile period here: far beyond PATIENCE, so a repair seen within
/// PATIENCE came from the address watcher.
const NO_TIMER: Duration = Duration::from_secs(3600);

/// Runs `ip ARGS`; panics with the command and its stderr if it fails.
fn ip(args: &[&str]) -> String {
    let out = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run `ip {}`: {e}", args.join(" ")));
    assert!(
        out.status.success(),
        "`ip {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn require_root_and_iproute2() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "vip_netns must run as root (network namespaces, CAP_NET_ADMIN, CAP_NET_RAW); it does not skip"
    );
    let version = Command::new("ip").arg("-V").output();
    assert!(
        version.as_ref().is_ok_and(|o| o.status.success()),
        "vip_netns needs iproute2's `ip` on PATH: {version:?}"
    );
}

/// Two namespaces joined by veth `rvv0`; deleted (exactly these) on drop.
struct Testbed {
    a: String,
    b: String,
}

impl Testbed {
    fn create(tag: &str) -> Testbed {
        require_root_and_iproute2();
        let pid = std::process::id();
        let bed = Testbed {
            a: format!("rvv{pid}{tag}a"),
            b: format!("rvv{pid}{tag}b"),
        };
        // Guard first, so a failure half-way still deletes what was created.
        ip(&["netns", "add", &bed.a]);
        ip(&["netns", "add", &bed.b]);
        let (a, b) = (bed.a.as_str(), bed.b.as_str());
        bed.veth("rvv0", MAC_A, MAC_B);
        for (ns, v4, v6) in [
            (a, "192.0.2.1/24", "2001:db8::1/64"),
            (b, "192.0.2.2/24", "2001:db8::2/64"),
        ] {
            ip(&["-n", ns, "link", "set", "lo", "up"]);
            ip(&["-n", ns, "addr", "add", v4, "dev", "rvv0"]);
            ip(&["-n", ns, "addr", "add", v6, "dev", "rvv0", "nodad"]);
        }
        bed
    }

    /// A veth pair named `name` on both sides, created inside the namespaces, both up.
    fn veth(&self, name: &str, mac_a: &str, mac_b: &str) {
        let (a, b) = (self.a.as_str(), self.b.as_str());
        ip(&[
            "-n", a, "link", "add", name, "type", "veth", "peer", "name", name, "netns", b,
        ]);
        ip(&["-n", a, "link", "set", name, "address", mac_a, "up"]);
        ip(&["-n", b, "link", "set", name, "address", mac_b, "up"]);
    }

    /// Runs `scenario` on a thread that has entered namespace A, with its own current-thread
    /// runtime, so every socket and interface lookup of the code under test happens in A.
    fn run_in_a<F, Fut>(&self, scenario: F)
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = ()>,
    {
        let path = format!("/run/netns/{}", self.a);
        let thread = std::thread::spawn(move || {
            enter_netns(&path);
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a tokio runtime");
            runtime.block_on(scenario());
        });
        if let Err(panic) = thread.join() {
            std::panic::resume_unwind(panic); // the Testbed still drops while unwinding
        }
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        for ns in [&self.a, &self.b] {
            let deleted = Command::new("ip").args(["netns", "del", ns]).status();
            if !deleted.as_ref().is_ok_and(|s| s.success()) {
                eprintln!("could not delete netns {ns}: {deleted:?}");
            }
        }
    }
}

fn enter_netns(path: &str) {
    let file = File::open(path).unwrap_or_else(|e| panic!("open {path}: {e}"));
    // SAFETY: setns on a valid namespace fd; affects only this thread.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
}

fn vip_config(address: &str, interface: &str, label: Option<&str>) -> VipConfig {
    VipConfig {
        address: address.parse().unwrap(),
        interface: interface.into(),
        label: label.map(str::to_owned),
    }
}

fn announce_config() -> Announce {
    Announce {
        burst_count: 3,
        burst_interval_ms: 20,
        refresh_s: 1,
    }
}

/// Polls `check` every 2 ms (yielding to the background tasks) until it holds; returns how
/// long that took, or panics with `what`.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while start.elapsed() < PATIENCE {
        if check() {
            return start.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    panic!("not within {PATIENCE:?}: {what}");
}

fn neigh_mac(ns: &str, address: &str) -> String {
    ip(&["-n", ns, "neigh", "show", address, "dev", "rvv0"])
}

#[test]
fn takeover_announce_watch_reconcile_release() {
    let bed = Testbed::create("t");
    let (a, b) = (bed.a.clone(), bed.b.clone());
    // The clients' view before the takeover: both VIPs at the old holder's MAC.
    for vip in [VIP4, VIP6] {
        ip(&[
            "-n", &b, "neigh", "replace", vip, "lladdr", BOGUS_MAC, "dev", "rvv0", "nud", "stale",
        ]);
        assert!(neigh_mac(&b, vip).contains(BOGUS_MAC));
    }

    bed.run_in_a(move || async move {
        let vips = Vips::linux(
            &[
                vip_config("192.0.2.100/32", "rvv0", Some("rvv0:vip")),
                vip_config("2001:db8::100/128", "rvv0", None),
            ],
            &announce_config(),
        )
        .expect("netlink socket in netns A");
        let cancel = CancellationToken::new();
        let worker = VipWorker::spawn(vips.clone(), NO_TIMER, cancel.clone()).expect("VIP thread");

        let started = Instant::now();
        worker.set_held(true, "test takeover");
        assert!(worker.wait_applied(PATIENCE));
        let takeover = started.elapsed();

        let addrs = ip(&["-n", &a, "addr", "show", "dev", "rvv0"]);
        assert!(addrs.contains("inet 192.0.2.100/32"), "{addrs}");
        assert!(addrs.contains("rvv0:vip"), "label: {addrs}");
        assert!(addrs.contains("inet6 2001:db8::100/128"), "{addrs}");
        let vip6_line = addrs.lines().find(|l| l.contains("2001:db8::100/128"));
        assert!(vip6_line.is_some_and(|l| !l.contains("tentative")), "NODAD: {addrs}");

        let garp = eventually("B's ARP entry for the VIP points at A", || {
            neigh_mac(&b, VIP4).contains(MAC_A)
        })
        .await;
        let na = eventually("B's ND entry for the VIP points at A", || {
            neigh_mac(&b, VIP6).contains(MAC_A)
        })
        .await;
        println!(
            "set_held(true) for 2 VIPs on the VIP thread (add + announce + probe): {takeover:?}; \
             B's neighbour entries updated within {garp:?} (ARP) / {na:?} (ND) of checking"
        );

        let status = worker.status();
        assert!(status.iter().all(|s| s.held && s.error.is_none()), "{status:?}");

        // Someone deletes the IPv4 VIP by hand: the watcher sees it and the VIP thread puts it
        // back by itself (its timer is an hour away).
        ip(&["-n", &a, "addr", "del", "192.0.2.100/32", "dev", "rvv0"]);
        let repaired = eventually("the VIP thread re-adds the deleted VIP", || {
            ip(&["-n", &a, "addr", "show", "dev", "rvv0"]).contains("inet 192.0.2.100/32")
        })
        .await;
        println!("a VIP deleted by hand was back within {repaired:?}");
        let status = worker.status();
        assert_eq!(status[0].re_adds, 1, "{status:?}");
        assert_eq!(status[1].re_adds, 0, "{status:?}");

        // The burst (3 rounds) and at least one 1 s refresh go out while held.
        eventually("burst plus one refresh", || worker.status()[1].announcements_sent >= 4).await;

        let started = Instant::now();
        worker.set_held(false, "test release");
        assert!(worker.wait_applied(PATIENCE));
        let release = started.elapsed();
        println!("set_held(false) for 2 VIPs on the VIP thread: {release:?}");
        let addrs = ip(&["-n", &a, "addr", "show", "dev", "rvv0"]);
        assert!(!addrs.contains("192.0.2.100"), "{addrs}");
        assert!(!addrs.contains("2001:db8::100"), "{addrs}");
        assert!(worker.status().iter().all(|s| !s.held));
        cancel.cancel();

        // Idempotent kernel operations: removing again and re-checking are fine.
        vips.reconcile();
        assert!(vips.status().iter().all(|s| s.error.is_none()));

        // Warm numbers: a few more takeover/release cycles.
        let mut takeovers = Vec::new();
        let mut releases = Vec::new();
        let mut reconciles = Vec::new();
        for _ in 0..5 {
            let t = Instant::now();
            vips.set_held(true, "test cycle");
            takeovers.push(t.elapsed());
            let t = Instant::now();
            vips.reconcile();
            reconciles.push(t.elapsed());
            let t = Instant::now();
            vips.set_held(false, "test cycle");
            releases.push(t.elapsed());
        }
        println!(
            "2 VIPs, warm: set_held(true) {takeovers:?}; reconcile {reconciles:?}; set_held(false) {releases:?}"
        );
    });
}

#[test]
fn a_second_holder_answers_the_probe_and_is_reported() {
    let bed = Testbed::create("d");
    let b = bed.b.clone();
    // B holds both VIPs already (a forgotten keepalived, say).
    ip(&["-n", &b, "addr", "add", "192.0.2.100/32", "dev", "rvv0"]);
    ip(&[
        "-n",
        &b,
        "addr",
        "add",
        "2001:db8::100/128",
        "dev",
        "rvv0",
        "nodad",
    ]);

    bed.run_in_a(move || async move {
        let vips = Vips::linux(
            &[
                vip_config("192.0.2.100/32", "rvv0", None),
                vip_config("2001:db8::100/128", "rvv0", None),
            ],
            &announce_config(),
        )
        .expect("netlink socket in netns A");
        let cancel = CancellationToken::new();
        let worker = VipWorker::spawn(vips, NO_TIMER, cancel.clone()).expect("VIP thread");
        worker.set_held(true, "test takeover");

        // Both seen, in whatever order the ARP reply and the NA arrive.
        eventually("a duplicate counted for both VIPs", || {
            worker.status().iter().all(|s| s.duplicates >= 1)
        })
        .await;

        worker.set_held(false, "test done");
        assert!(worker.wait_applied(PATIENCE));
        cancel.cancel();
    });
}

#[test]
fn failures_name_the_problem() {
    let bed = Testbed::create("e");
    bed.veth("rvv1", "02:00:00:00:0a:02", "02:00:00:00:0b:02");
    ip(&["-n", &bed.a, "link", "set", "rvv1", "down"]);

    bed.run_in_a(|| async {
        let control = NetlinkControl::connect().expect("netlink socket");
        let announcer = PacketAnnouncer::new();
        let vip = |address: &str, interface: &str| {
            Vip::from_config(&vip_config(address, interface, None))
        };

        // Interface missing: add, remove, check and announce all say so.
        let missing = vip("192.0.2.101/32", "rvvnope");
        for err in [
            control.add(&missing).unwrap_err(),
            control.remove(&missing).unwrap_err(),
            control.is_bound(&missing).unwrap_err(),
            announcer.announce(&missing).unwrap_err(),
        ] {
            assert!(
                matches!(err.cause(), Cause::InterfaceMissing(name) if name == "rvvnope"),
                "{err}"
            );
            assert!(
                err.to_string().ends_with("interface rvvnope missing"),
                "{err}"
            );
        }

        // Link down: the kernel accepts the address; the frames cannot go out.
        let down = vip("192.0.2.102/32", "rvv1");
        control
            .add(&down)
            .expect("an address on a down link is allowed");
        control.add(&down).expect("adding twice is idempotent");
        assert!(control.is_bound(&down).unwrap());
        let err = announcer.announce(&down).unwrap_err();
        assert!(matches!(err.cause(), Cause::LinkDown(_)), "{err}");
        assert_eq!(
            err.to_string(),
            "cannot announce 192.0.2.102/32 on rvv1: interface rvv1 is down"
        );
        // The link check (is this box able to hold its VIPs?) names the same causes, and
        // passes an interface that is up, however many VIPs are on it.
        let up = vip("192.0.2.103/32", "rvv0");
        let checked = control.usable_all(&[&missing, &down, &up, &up]);
        let cause = |n: usize| checked[n].as_ref().map_err(|e| e.cause());
        assert!(
            matches!(cause(0), Err(Cause::InterfaceMissing(name)) if name == "rvvnope"),
            "{:?}",
            checked[0]
        );
        assert!(
            matches!(cause(1), Err(Cause::LinkDown(name)) if name == "rvv1"),
            "{:?}",
            checked[1]
        );
        assert!(checked[2].is_ok() && checked[3].is_ok(), "{checked:?}");
        // Removal finds the address whatever its prefix length (one left behind as /24 by
        // an older config is removed by a /32 VIP); removing again is success too.
        control.remove(&down).unwrap();
        assert!(!control.is_bound(&down).unwrap());
        ip(&["addr", "add", "192.0.2.102/24", "dev", "rvv1"]);
        control.remove(&down).unwrap();
        assert!(
            !ip(&["-o", "addr", "show", "dev", "rvv1"]).contains("192.0.2.102"),
            "the /24 leftover survived"
        );
        control.remove(&down).unwrap();

        // The executor shows the same errors in its status, once per cause.
        let vips = Vips::linux(
            &[vip_config("192.0.2.101/32", "rvvnope", None)],
            &announce_config(),
        )
        .unwrap();
        vips.set_held(true, "test");
        vips.reconcile();
        assert_eq!(
            vips.status()[0].error.as_deref(),
            Some("cannot add 192.0.2.101/32 to rvvnope: interface rvvnope missing")
        );
        vips.set_held(false, "test");
    });

    // Without CAP_NET_ADMIN / CAP_NET_RAW (dropped for one thread only).
    bed.run_in_a(|| async {
        drop_net_capabilities();
        let vip = Vip::from_config(&vip_config("192.0.2.103/32", "rvv0", None));
        let err = NetlinkControl::connect().unwrap().add(&vip).unwrap_err();
        assert!(
            matches!(err.cause(), Cause::PermissionDenied("CAP_NET_ADMIN")),
            "{err}"
        );
        assert!(err.to_string().contains("needs CAP_NET_ADMIN"), "{err}");
        let err = PacketAnnouncer::new().announce(&vip).unwrap_err();
        assert!(
            matches!(err.cause(), Cause::PermissionDenied("CAP_NET_RAW")),
            "{err}"
        );
    });
}

/// Clears CAP_NET_ADMIN and CAP_NET_RAW from this thread's effective set (capabilities are
/// per thread at the syscall level).
fn drop_net_capabilities() {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    const CAP_NET_ADMIN: u32 = 12;
    const CAP_NET_RAW: u32 = 13;
    let mut header = Header {
        version: VERSION_3,
        pid: 0,
    };
    let mut data = [Data::default(); 2];
    // SAFETY: capget/capset with a v3 header and two data structs, as capget(2) specifies.
    unsafe {
        assert_eq!(
            libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()),
            0
        );
        data[0].effective &= !((1 << CAP_NET_ADMIN) | (1 << CAP_NET_RAW));
        assert_eq!(
            libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()),
            0
        );
    }
}

#[test]
fn a_leased_vip_is_removed_by_the_kernel_once_nobody_renews_it() {
    let bed = Testbed::create("l");
    bed.run_in_a(|| async {
        let control = NetlinkControl::connect()
            .expect("netlink socket")
            .with_lifetime(1);
        let vips: Vec<Vip> = ["192.0.2.110/32", "2001:db8::110/128"]
            .iter()
            .map(|a| Vip::from_config(&vip_config(a, "rvv0", None)))
            .collect();
        let refs: Vec<&Vip> = vips.iter().collect();
        for result in control.add_all(&refs) {
            result.expect("bind with a lifetime");
        }
        // Bound, then renewed (one batch of replacing adds) for 1.5 s: longer than the lifetime.
        let start = Instant::now();
        let mut last_renewal = start;
        while start.elapsed() < Duration::from_millis(1500) {
            for result in control.renew_all(&refs) {
                result.expect("renew");
            }
            last_renewal = Instant::now();
            for result in control.bound_all(&refs) {
                assert!(result.unwrap(), "a renewed VIP vanished");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        // No more renewals: the kernel removes both, about a lifetime after the last one.
        eventually("the kernel removes the unrenewed VIPs", || {
            control
                .bound_all(&refs)
                .into_iter()
                .all(|r| r.is_ok_and(|bound| !bound))
        })
        .await;
        let after_renewal = last_renewal.elapsed();
        println!("IPv4 + IPv6 VIPs gone {after_renewal:?} after the last renewal");
        assert!(
            after_renewal >= Duration::from_millis(900)
                && after_renewal <= Duration::from_millis(2100),
            "{after_renewal:?}"
        );
    });
}

#[test]
fn held_leased_vips_stay_bound_and_one_deleted_by_hand_comes_back() {
    let bed = Testbed::create("r");
    bed.run_in_a(|| async {
        let lease = raftvip::config::VipLease { lifetime_s: 1 };
        let vips = Vips::linux_leased(
            &[
                vip_config("192.0.2.111/32", "rvv0", None),
                vip_config("2001:db8::111/128", "rvv0", None),
            ],
            &announce_config(),
            &lease,
        )
        .expect("VIP control");
        let cancel = CancellationToken::new();
        let worker = VipWorker::spawn(vips, NO_TIMER, cancel.clone()).expect("VIP thread");
        worker.set_held(true, "test");
        assert!(worker.wait_applied(PATIENCE));
        // 2 s held: several lifetimes, so only renewals keep them.
        tokio::time::sleep(Duration::from_secs(2)).await;
        for status in worker.status() {
            assert!(status.held, "{status:?}");
            let left = status.lease_remaining_ms.expect("a lease");
            assert!(left <= 1000, "{status:?}");
            assert_eq!(
                (status.lease_expiries, status.re_adds),
                (0, 0),
                "{status:?}"
            );
        }
        assert!(ip(&["addr", "show", "dev", "rvv0"]).contains("192.0.2.111/32"));
        // Someone else deleting one: seen by the watcher, repaired by the VIP thread.
        ip(&["addr", "del", "192.0.2.111/32", "dev", "rvv0"]);
        eventually("the deleted VIP is re-added", || {
            worker.status()[0].re_adds == 1
        })
        .await;
        assert!(ip(&["addr", "show", "dev", "rvv0"]).contains("192.0.2.111/32"));
        worker.set_held(false, "test done");
        assert!(worker.wait_applied(PATIENCE));
        cancel.cancel();
    });
}

#[test]
fn a_renewal_batch_reports_the_vip_it_could_not_renew_and_renews_the_others() {
    let bed = Testbed::create("b");
    bed.veth("rvv1", "02:00:00:00:0a:02", "02:00:00:00:0b:02");
    bed.run_in_a(|| async {
        let control = NetlinkControl::connect()
            .expect("netlink socket")
            .with_lifetime(2);
        let vips: Vec<Vip> = [
            ("192.0.2.120/32", "rvv0"),
            ("192.0.2.121/32", "rvv1"),
            ("192.0.2.122/32", "rvv0"),
        ]
        .iter()
        .map(|(a, i)| Vip::from_config(&vip_config(a, i, None)))
        .collect();
        let refs: Vec<&Vip> = vips.iter().collect();
        for result in control.add_all(&refs) {
            result.expect("bind with a lifetime");
        }
        // The middle VIP's interface goes away: the kernel refuses its renewal (the index it
        // was bound on is gone) in the middle of the datagram.
        ip(&["link", "del", "rvv1"]);
        std::thread::sleep(Duration::from_millis(1100));
        let results = control.renew_all(&refs);
        assert!(results[0].is_ok() && results[2].is_ok(), "{results:?}");
        let err = results[1].as_ref().unwrap_err();
        assert!(
            matches!(err.cause(), Cause::InterfaceMissing(name) if name == "rvv1"),
            "{err}"
        );
        // Renewed: still there after the first lifetime ran out.
        std::thread::sleep(Duration::from_millis(1400));
        let bound = control.bound_all(&[refs[0], refs[2]]);
        assert!(bound.iter().all(|b| matches!(b, Ok(true))), "{bound:?}");
    });
}

#[test]
fn the_watcher_ignores_our_own_changes_and_sees_everyone_elses() {
    let bed = Testbed::create("w");
    bed.run_in_a(|| async {
        let control = NetlinkControl::connect()
            .expect("netlink socket")
            .with_lifetime(5);
        let mut watcher = AddressWatcher::subscribe(&control.ports()).expect("watcher");
        let ours = Vip::from_config(&vip_config("192.0.2.130/32", "rvv0", None));
        control.add(&ours).expect("add");
        for _ in 0..5 {
            control.renew_all(&[&ours]).pop().unwrap().expect("renew");
        }
        control.remove(&ours).expect("remove");
        // Our add, renewals and removal: dropped by the socket filter, not even a wake-up.
        let quiet = tokio::time::timeout(Duration::from_millis(300), watcher.next()).await;
        assert!(quiet.is_err(), "saw our own changes: {quiet:?}");
        // Someone else's change (an operator's `ip addr add`) does arrive.
        ip(&["addr", "add", "192.0.2.131/32", "dev", "rvv0"]);
        let events = tokio::time::timeout(PATIENCE, watcher.next())
            .await
            .expect("an event within PATIENCE")
            .expect("the watcher works");
        let theirs: std::net::IpAddr = "192.0.2.131".parse().unwrap();
        assert!(
            events.iter().any(|e| matches!(
                e,
                AddressEvent::Changed { ip, present: true, .. } if *ip == theirs
            )),
            "{events:?}"
        );
    });
}

/// Issue 12/13 scale: 200 VIPs (one already present, put there by hand) are bound, renewed,
/// found and removed in batches of several datagrams; also without a lifetime, where the
/// present one answers EEXIST in the middle of a datagram and still counts as bound.
#[test]
fn two_hundred_vips_bind_and_release_in_one_batch_each() {
    let bed = Testbed::create("m");
    let a = bed.a.clone();
    ip(&["-n", &a, "addr", "add", "198.51.100.100/32", "dev", "rvv0"]);
    bed.run_in_a(move || async move {
        let vips: Vec<Vip> = (1..=200)
            .map(|i| {
                let address = format!("198.51.100.{i}/32");
                Vip::from_config(&vip_config(&address, "rvv0", Some("rvv0:v")))
            })
            .collect();
        let refs: Vec<&Vip> = vips.iter().collect();
        for lifetime in [0, 5] {
            let control = NetlinkControl::connect()
                .expect("netlink socket")
                .with_lifetime(lifetime);
            let mut adds = Vec::new();
            let mut renews = Vec::new();
            let mut removes = Vec::new();
            for _ in 0..5 {
                let t = Instant::now();
                let added = control.add_all(&refs);
                adds.push(t.elapsed());
                for result in &added {
                    assert!(result.is_ok(), "lifetime {lifetime}: {result:?}");
                }
                let shown = ip(&["-n", &a, "-4", "-o", "addr", "show", "dev", "rvv0"]);
                assert_eq!(shown.matches(" 198.51.100.").count(), 200, "{shown}");
                let bound = control.bound_all(&refs);
                assert!(bound.iter().all(|b| matches!(b, Ok(true))), "{bound:?}");
                // All present: without a lifetime every add answers EEXIST (several datagrams'
                // worth of errors), with one every add replaces.
                let t = Instant::now();
                let renewed = control.renew_all(&refs);
                renews.push(t.elapsed());
                assert!(renewed.iter().all(Result::is_ok), "{renewed:?}");
                let t = Instant::now();
                let removed = control.remove_all(&refs);
                removes.push(t.elapsed());
                assert!(removed.iter().all(Result::is_ok), "{removed:?}");
                let shown = ip(&["-n", &a, "-4", "-o", "addr", "show", "dev", "rvv0"]);
                assert!(!shown.contains(" 198.51.100."), "{shown}");
                // Back to the start: the one added by hand is present again.
                ip(&["-n", &a, "addr", "add", "198.51.100.100/32", "dev", "rvv0"]);
            }
            println!(
                "200 VIPs, lifetime {lifetime}: add_all {adds:?}; renew_all {renews:?}; \
                 remove_all {removes:?}"
            );
        }
        // The executor: a takeover binds and announces all 200, a release removes all 200.
        let configs: Vec<VipConfig> = (1..=200)
            .map(|i| vip_config(&format!("198.51.100.{i}/32"), "rvv0", None))
            .collect();
        let executor = Vips::linux(&configs, &announce_config()).expect("netlink socket");
        let mut takeovers = Vec::new();
        let mut releases = Vec::new();
        for _ in 0..5 {
            let t = Instant::now();
            executor.set_held(true, "test takeover");
            takeovers.push(t.elapsed());
            let status = executor.status();
            assert!(
                status.iter().all(|s| s.held && s.error.is_none()),
                "{status:?}"
            );
            assert!(
                status.iter().all(|s| s.announcements_sent >= 1),
                "{status:?}"
            );
            let t = Instant::now();
            executor.set_held(false, "test release");
            releases.push(t.elapsed());
            let shown = ip(&["-n", &a, "-4", "-o", "addr", "show", "dev", "rvv0"]);
            assert!(!shown.contains(" 198.51.100."), "{shown}");
        }
        println!("200 VIPs: set_held(true) {takeovers:?}; set_held(false) {releases:?}");
    });
}

/// Three namespaces on one bridge (in a fourth): the successor A (the code under test), the
/// old holder B and a client C, each on `rvv0`; deleted (exactly these) on drop.
struct Segment {
    bridge: String,
    boxes: [String; 3],
}

const MAC_C: &str = "02:00:00:00:0c:01";

impl Segment {
    fn create(tag: &str) -> Segment {
        require_root_and_iproute2();
        let pid = std::process::id();
        // "s" keeps these apart from the two-namespace Testbeds of the same tag.
        let name = |part: &str| format!("rvv{pid}s{tag}{part}");
        let segment = Segment {
            bridge: name("br"),
            boxes: [name("a"), name("b"), name("c")],
        };
        ip(&["netns", "add", &segment.bridge]);
        let br = segment.bridge.as_str();
        ip(&["-n", br, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", br, "link", "set", "br0", "up"]);
        let addresses = [
            (MAC_A, "192.0.2.1/24"),
            (MAC_B, "192.0.2.2/24"),
            (MAC_C, "192.0.2.3/24"),
        ];
        for (i, (ns, (mac, address))) in segment.boxes.iter().zip(addresses).enumerate() {
            ip(&["netns", "add", ns]);
            let port = format!("p{i}");
            ip(&[
                "-n", ns, "link", "add", "rvv0", "address", mac, "type", "veth", "peer", "name",
                &port, "netns", br,
            ]);
            ip(&["-n", br, "link", "set", &port, "master", "br0", "up"]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
            ip(&["-n", ns, "link", "set", "rvv0", "up"]);
            ip(&["-n", ns, "addr", "add", address, "dev", "rvv0"]);
        }
        segment
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        for ns in self.boxes.iter().chain([&self.bridge]) {
            let deleted = Command::new("ip").args(["netns", "del", ns]).status();
            if !deleted.as_ref().is_ok_and(|s| s.success()) {
                eprintln!("could not delete netns {ns}: {deleted:?}");
            }
        }
    }
}

/// A process the test started, killed on drop: one left running would keep its deleted
/// namespace alive.
struct Background(std::process::Child);

impl Background {
    fn spawn(command: &mut Command) -> Background {
        Background(
            command
                .spawn()
                .unwrap_or_else(|e| panic!("{command:?}: {e}")),
        )
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The VIP layer for VIP4 on `rvv0`, in the calling thread's namespace.
fn vip4_on_rvv0() -> Vips {
    Vips::linux(
        &[vip_config("192.0.2.100/32", "rvv0", None)],
        &announce_config(),
    )
    .expect("an rtnetlink socket")
}

/// A server in `ns` may listen on the VIP before `ns` holds it, as HAProxy does with
/// ip_nonlocal_bind (else its bind races the VIP's).
fn allow_nonlocal_bind(ns: &str) {
    ip(&[
        "netns",
        "exec",
        ns,
        "sysctl",
        "-qw",
        "net.ipv4.ip_nonlocal_bind=1",
    ]);
}

/// A TCP server in namespace `ns` on VIP4:8080 that reads a line and answers `name`.
fn line_server(ns: &str, name: &str) -> Background {
    let program = "import socketserver, sys\n\
        class H(socketserver.StreamRequestHandler):\n\
        \x20   def handle(self):\n\
        \x20       self.rfile.readline()\n\
        \x20       self.wfile.write(sys.argv[1].encode() + b'\\n')\n\
        socketserver.ThreadingTCPServer.allow_reuse_address = True\n\
        socketserver.ThreadingTCPServer(('192.0.2.100', 8080), H).serve_forever()\n";
    Background::spawn(
        Command::new("ip").args(["netns", "exec", ns, "python3", "-c", program, name]),
    )
}

/// The client in namespace `ns`: opens a connection to VIP4:8080 while its neighbour entry
/// names `first_mac`, then points the entry at `then_mac` (the switch a successor's
/// announcement makes) and sends its request. Prints the answer, or what went wrong.
fn request_across_a_switch(ns: &str, first_mac: &str, then_mac: &str) -> String {
    let program = "import socket, subprocess, sys, time\n\
        def neigh(mac):\n\
        \x20   subprocess.run(['ip', 'neigh', 'replace', '192.0.2.100', 'lladdr', mac, 'dev', 'rvv0', 'nud', 'permanent'], check=True)\n\
        neigh(sys.argv[1])\n\
        deadline = time.monotonic() + 3\n\
        while True:\n\
        \x20   try:\n\
        \x20       s = socket.create_connection(('192.0.2.100', 8080), timeout=1)\n\
        \x20       break\n\
        \x20   except OSError:\n\
        \x20       if time.monotonic() > deadline: raise\n\
        \x20       time.sleep(0.05)\n\
        neigh(sys.argv[2])\n\
        s.sendall(b'hello\\n')\n\
        try:\n\
        \x20   print(s.recv(64).decode().strip() or 'closed')\n\
        except OSError as e:\n\
        \x20   print(type(e).__name__)\n";
    let out = Command::new("ip")
        .args([
            "netns", "exec", ns, "python3", "-c", program, first_mac, then_mac,
        ])
        .output()
        .expect("python3 for the test's client");
    assert!(
        out.status.success(),
        "client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn a_successor_passes_requests_of_the_old_holders_connections_on_to_it() {
    let segment = Segment::create("o");
    let [a, b, c] = segment.boxes.clone();
    ip(&["-n", &b, "addr", "add", "192.0.2.100/32", "dev", "rvv0"]);
    allow_nonlocal_bind(&a);
    let _servers = [line_server(&a, "a"), line_server(&b, "b")];
    let path = format!("/run/netns/{a}");
    let tables_in_a = move || {
        let out = Command::new("ip")
            .args(["netns", "exec", &a, "nft", "list", "tables"])
            .output()
            .expect("nft");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let thread = std::thread::spawn(move || {
        enter_netns(&path);
        let vips = vip4_on_rvv0();
        vips.set_held(true, "an unplanned takeover");
        // Without the overlap guard the successor resets the old holder's connection.
        let unguarded = request_across_a_switch(&c, MAC_B, MAC_A);
        assert_eq!(unguarded, "ConnectionResetError", "the test's control");
        vips.set_held(false, "the test's control is over");

        // The VIP thread from here on, as in the daemon. Asked to take over, then elected:
        // the VIP is bound only once the guard is up.
        let cancel = CancellationToken::new();
        let worker = VipWorker::spawn(vips, NO_TIMER, cancel.clone()).expect("VIP thread");
        let old_holder = VipOverlap::Taking {
            old_holder: "192.0.2.2".parse().unwrap(),
        };
        worker.set_overlap(old_holder);
        worker.set_held(true, "successor of a planned handover");
        assert!(worker.wait_applied(PATIENCE));
        assert!(
            tables_in_a().contains("raftvip_overlap_"),
            "bound before the guard was up: {}",
            tables_in_a()
        );
        // The request of a connection opened with the old holder is answered by it...
        assert_eq!(request_across_a_switch(&c, MAC_B, MAC_A), "b");
        // ...one opened with the successor stays with the successor.
        assert_eq!(request_across_a_switch(&c, MAC_A, MAC_A), "a");
        worker.set_held(false, "the old holder released");
        worker.set_overlap(VipOverlap::None);
        assert!(worker.wait_applied(PATIENCE));
        // The guard comes down on its own thread.
        let deadline = Instant::now() + PATIENCE;
        while tables_in_a().contains("raftvip_overlap_") {
            assert!(Instant::now() < deadline, "tables: {}", tables_in_a());
            std::thread::sleep(Duration::from_millis(5));
        }
        // After the overlap the old holder's connections are reset again.
        worker.set_held(true, "an unplanned takeover");
        assert!(worker.wait_applied(PATIENCE));
        assert_eq!(
            request_across_a_switch(&c, MAC_B, MAC_A),
            "ConnectionResetError"
        );
        worker.set_held(false, "the check is over");
        assert!(worker.wait_applied(PATIENCE));

        // A successor stopped while its guard comes up (`nft` takes 10-30 ms) never binds:
        // the old holder still holds, and a bind now would make two holders.
        let seen = tempfile::NamedTempFile::new().expect("a file for ip monitor");
        let monitor = Background::spawn(
            Command::new("ip")
                .args(["-o", "monitor", "address"])
                .stdout(seen.reopen().expect("ip monitor's output")),
        );
        std::thread::sleep(Duration::from_millis(50)); // the monitor listens
        worker.set_overlap(old_holder);
        worker.set_held(true, "successor of a planned handover");
        std::thread::sleep(Duration::from_millis(2)); // the VIP thread waits for the guard
        worker.set_held(false, "stopping");
        worker.set_overlap(VipOverlap::None);
        assert!(worker.wait_applied(PATIENCE));
        std::thread::sleep(Duration::from_millis(50)); // a bind would have been reported
        drop(monitor);
        let seen = std::fs::read_to_string(seen.path()).expect("ip monitor's output");
        assert!(
            !seen.contains(VIP4),
            "a successor stopped during its guard's start bound the VIP:\n{seen}"
        );
        cancel.cancel();
    });
    if let Err(panic) = thread.join() {
        std::panic::resume_unwind(panic); // the Segment still drops while unwinding
    }
}

/// The client in namespace `ns`: returns once it is about to connect to VIP4:8080 (3 s
/// timeout); then it sends a line, and [`TimedRequest::outcome`] is the answer (or the
/// error) and how long it took from the connect on.
struct TimedRequest {
    client: Background,
    output: std::io::BufReader<std::process::ChildStdout>,
}

impl TimedRequest {
    fn start(ns: &str) -> TimedRequest {
        use std::io::BufRead;
        let program = "import socket, time\n\
            print('connecting', flush=True)\n\
            t = time.monotonic()\n\
            try:\n\
            \x20   s = socket.create_connection(('192.0.2.100', 8080), timeout=3)\n\
            \x20   s.sendall(b'hello\\n')\n\
            \x20   answer = s.recv(64).decode().strip() or 'closed'\n\
            except OSError as e:\n\
            \x20   answer = type(e).__name__\n\
            print(answer, int((time.monotonic() - t) * 1000), flush=True)\n";
        let mut client = Background::spawn(
            Command::new("ip")
                .args(["netns", "exec", ns, "python3", "-c", program])
                .stdout(std::process::Stdio::piped()),
        );
        let stdout = client.0.stdout.take().expect("the client's stdout");
        let mut output = std::io::BufReader::new(stdout);
        let mut line = String::new();
        output.read_line(&mut line).expect("the client starts");
        assert_eq!(line.trim(), "connecting", "the test's client");
        TimedRequest { client, output }
    }

    fn outcome(mut self) -> (String, u64) {
        use std::io::BufRead;
        let mut line = String::new();
        self.output
            .read_line(&mut line)
            .expect("the client's answer");
        drop(self.client);
        let (answer, ms) = line.trim().rsplit_once(' ').unwrap_or(("", ""));
        let ms = ms
            .parse()
            .unwrap_or_else(|_| panic!("the client printed {line:?}"));
        (answer.to_owned(), ms)
    }
}

#[test]
fn a_released_holder_passes_a_syn_that_reached_it_on_to_the_successor() {
    let segment = Segment::create("r");
    let [a, b, c] = segment.boxes.clone();
    allow_nonlocal_bind(&b);
    let _server = line_server(&b, "b");
    // The client's SYN reaches the old holder A after A released, before B announced.
    let handover = move |a_vips: &dyn Fn(bool)| {
        a_vips(true);
        ip(&[
            "-n",
            &c,
            "neigh",
            "replace",
            VIP4,
            "lladdr",
            MAC_A,
            "dev",
            "rvv0",
            "nud",
            "reachable",
        ]);
        a_vips(false);
        let client = TimedRequest::start(&c);
        std::thread::sleep(Duration::from_millis(100)); // its SYN reached A

        let path = format!("/run/netns/{b}");
        std::thread::spawn(move || {
            enter_netns(&path);
            let successor = vip4_on_rvv0();
            successor.set_held(true, "elected");
            let answer = client.outcome();
            successor.set_held(false, "the handover is over");
            answer
        })
        .join()
        .expect("the successor's thread")
    };
    let path = format!("/run/netns/{a}");
    let thread = std::thread::spawn(move || {
        enter_netns(&path);
        let vips = vip4_on_rvv0();
        // The control: released without the VIP thread's runtime, A relays nothing, and the
        // SYN is lost until TCP retries it after a second.
        let (answer, ms) = handover(&|hold| vips.set_held(hold, "the control"));
        assert_eq!(answer, "b", "the control's client");
        assert!(
            ms >= 1000,
            "the control's SYN was not lost: answered in {ms} ms"
        );

        // The VIP thread, as in the daemon: the SYN waits at A for B's announcement.
        let cancel = CancellationToken::new();
        let worker = VipWorker::spawn(vips, NO_TIMER, cancel.clone()).expect("VIP thread");
        let (answer, ms) = handover(&|hold| {
            worker.set_held(hold, "HAProxy unhealthy");
            assert!(worker.wait_applied(PATIENCE));
        });
        assert_eq!(answer, "b");
        assert!(
            ms < 900,
            "the SYN was retried rather than relayed: answered in {ms} ms"
        );
        // Counted for the operator (status, metrics) once the relay is over.
        let deadline = Instant::now() + PATIENCE;
        while worker.status()[0].relayed_frames == 0 {
            assert!(
                Instant::now() < deadline,
                "not counted: {:?}",
                worker.status()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        cancel.cancel();
    });
    if let Err(panic) = thread.join() {
        std::panic::resume_unwind(panic); // the Segment still drops while unwinding
    }
}
