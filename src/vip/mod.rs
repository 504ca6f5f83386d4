//! The VIP layer: makes the kernel and the segment agree with the supervisor's decision.
//!
//! The supervisor decides *whether* this node holds the VIPs; [`Vips`] carries it out. Holding
//! means: every VIP bound to its interface (netlink, [`netlink`]), the segment told at once
//! (gratuitous ARP / unsolicited NA, [`announce`]) with a short burst against a lost first
//! frame and a periodic refresh for switches with long ARP timeouts, and a probe for a
//! second holder. Releasing means removing every VIP at once — it is on the fencing path, so
//! it never waits behind a running burst (bursts sleep without holding any lock). What clients
//! still send here after a release waits for the successor's announcement and is passed on
//! to it ([`relay`]), so a SYN caught between the two boxes is delayed, not lost.
//!
//! The kernel side sits behind two small sync traits, [`AddressControl`] and [`Announcer`]
//! (a netlink request or an AF_PACKET send takes ~0.1 ms, so nothing here needs async), with
//! recording fakes (test builds only) so the executor is tested without root.
//! [`Vips::reconcile`] re-applies the desired state (re-adding a VIP someone deleted,
//! removing one we must not hold); the VIP thread ([`worker`]) calls it on its own timer and
//! whenever the address watcher sees one of our VIPs change. The supervisor only states its
//! wish through [`VipHolder`] and never hears of these repairs.
//!
//! Scale (issue 13): every operation works on all VIPs at once — one netlink batch for the
//! adds or removes (datagrams of many requests, see [`netlink`]), one address dump per
//! interface for a reconcile, one frame batch per announcement round with interfaces resolved
//! once — and logs one summary line per transition (per-VIP detail at debug). Refreshes of
//! VIPs taken over together are spread across the refresh period. A takeover binds and
//! announces in doubling steps (issue 12: the first VIP as fast as a lone one, the last of 50
//! within 10 ms of the first). In the daemon all of it
//! runs on its own thread ([`worker`]), never on the thread that carries Raft.
//!
//! Lease (issue 8): with [`Vips::linux_leased`] every VIP is bound with a kernel lifetime and
//! renewed while held and within the fence deadline ([`Vips::set_hold_until`]), so the kernel
//! removes the VIPs of a raftvip that died or froze; one that expires while we hold it is
//! re-added and counted.
//!
//! Everything runs in the network namespace of the thread that calls into it: interface
//! lookups and sockets are per-namespace.

pub mod announce;
pub mod duplicate;
#[cfg(test)]
pub(crate) mod fake;
mod holder;
pub mod netlink;
pub mod overlap_guard;
mod packet;
mod relay;
pub mod worker;

#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::{Announce, VipAddr, VipConfig, VipLease};
use crate::status::VipStatus;

#[cfg(test)]
pub(crate) use fake::{FakeAddressControl, FakeAnnouncer};
pub use holder::{NoVips, VipHolder, VipOverlap, VipSet};
pub use worker::VipWorker;

/// Least time between two re-announcement bursts provoked by duplicate claims. The other
/// holder may answer every frame we send; without a gap two boxes would trade bursts
/// back-to-back. One second still corrects a client's cache long before it times out.
const DUPLICATE_REBURST_GAP: Duration = Duration::from_secs(1);

/// The largest step of a takeover (see [`Vips::set_held`]): one netlink datagram's worth.
const TAKEOVER_STEP_MAX: usize = netlink::BATCH_MAX;
/// Longest a successor waits for its planned overlap's guard before binding anyway: well
/// inside the old holder's bound (200 ms after its step-down), which `nft` normally takes
/// 10–30 ms of.
const OVERLAP_GUARD_WAIT: Duration = Duration::from_millis(100);

/// An Ethernet MAC address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    pub const ZERO: Mac = Mac([0; 6]);
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl fmt::Debug for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for Mac {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// One VIP: address, interface and optional IPv4 label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vip {
    pub addr: VipAddr,
    pub interface: String,
    /// IPv4 only (`ip addr` shows it); the kernel has no labels for IPv6 addresses.
    pub label: Option<String>,
}

impl Vip {
    pub fn from_config(config: &VipConfig) -> Self {
        let addr = config.address;
        let label = match (&config.label, addr.ip) {
            (Some(label), IpAddr::V6(_)) => {
                tracing::warn!(vip = %addr, label = %label, "labels exist for IPv4 only; ignored");
                None
            }
            (label, _) => label.clone(),
        };
        Self {
            addr,
            interface: config.interface.clone(),
            label,
        }
    }
}

impl fmt::Display for Vip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} on {}", self.addr, self.interface)
    }
}

/// Why a VIP operation failed, in terms an operator can act on.
#[derive(Debug, thiserror::Error)]
pub enum Cause {
    #[error("interface {0} missing")]
    InterfaceMissing(String),
    #[error("interface {0} is down")]
    LinkDown(String),
    #[error("permission denied: raftvip needs {0}")]
    PermissionDenied(&'static str),
    #[error("interface {0} has no Ethernet MAC address")]
    NoMac(String),
    #[error("netlink: {0}")]
    Netlink(String),
    #[error(transparent)]
    Os(#[from] std::io::Error),
}

/// A failed VIP operation, named after the operation.
#[derive(Debug, thiserror::Error)]
pub enum VipError {
    #[error("cannot open a socket for VIP control (rtnetlink, link checks): {cause}")]
    Open {
        #[source]
        cause: Cause,
    },
    #[error("cannot add {vip} to {interface}: {cause}")]
    Add {
        vip: VipAddr,
        interface: String,
        #[source]
        cause: Cause,
    },
    #[error("cannot remove {vip} from {interface}: {cause}")]
    Remove {
        vip: VipAddr,
        interface: String,
        #[source]
        cause: Cause,
    },
    #[error("cannot check whether {vip} is on {interface}: {cause}")]
    Check {
        vip: VipAddr,
        interface: String,
        #[source]
        cause: Cause,
    },
    #[error("cannot announce {vip} on {interface}: {cause}")]
    Announce {
        vip: VipAddr,
        interface: String,
        #[source]
        cause: Cause,
    },
    #[error("cannot probe for another holder of {vip} on {interface}: {cause}")]
    Probe {
        vip: VipAddr,
        interface: String,
        #[source]
        cause: Cause,
    },
    #[error("cannot watch address changes: {cause}")]
    Watch {
        #[source]
        cause: Cause,
    },
    #[error("cannot listen for duplicate VIP claims: {cause}")]
    Listen {
        #[source]
        cause: Cause,
    },
    #[error("cannot relay frames for the released VIPs: {cause}")]
    Relay {
        #[source]
        cause: Cause,
    },
    #[error("{vip} could not be bound on {interface}: {cause}")]
    Unusable {
        vip: VipAddr,
        interface: String,
        #[source]
        cause: Cause,
    },
}

impl VipError {
    /// The underlying cause, for callers that react to a kind of failure.
    pub fn cause(&self) -> &Cause {
        match self {
            VipError::Open { cause }
            | VipError::Add { cause, .. }
            | VipError::Remove { cause, .. }
            | VipError::Check { cause, .. }
            | VipError::Announce { cause, .. }
            | VipError::Probe { cause, .. }
            | VipError::Watch { cause }
            | VipError::Listen { cause }
            | VipError::Relay { cause }
            | VipError::Unusable { cause, .. } => cause,
        }
    }
}

/// Binding VIPs in the kernel. Implementations are idempotent: adding a present VIP and
/// removing an absent one succeed.
pub trait AddressControl: Send + Sync + 'static {
    fn add(&self, vip: &Vip) -> Result<(), VipError>;
    fn remove(&self, vip: &Vip) -> Result<(), VipError>;
    fn is_bound(&self, vip: &Vip) -> Result<bool, VipError>;
    /// [`Self::add`] for many VIPs, one result per VIP in order. Implementations batch the
    /// requests (netlink: all sent before any answer is read), so holding hundreds of VIPs
    /// costs about one round trip, not one per VIP.
    fn add_all(&self, vips: &[&Vip]) -> Vec<Result<(), VipError>> {
        vips.iter().map(|vip| self.add(vip)).collect()
    }
    /// Renews the lifetime of VIPs bound with one: [`Self::add_all`] again (an add replaces),
    /// which implementations may batch harder, since renewals run several times a second.
    fn renew_all(&self, vips: &[&Vip]) -> Vec<Result<(), VipError>> {
        self.add_all(vips)
    }
    /// [`Self::remove`] for many VIPs, batched like [`Self::add_all`].
    fn remove_all(&self, vips: &[&Vip]) -> Vec<Result<(), VipError>> {
        vips.iter().map(|vip| self.remove(vip)).collect()
    }
    /// [`Self::is_bound`] for many VIPs (netlink: one dump per interface and family).
    fn bound_all(&self, vips: &[&Vip]) -> Vec<Result<bool, VipError>> {
        vips.iter().map(|vip| self.is_bound(vip)).collect()
    }
    /// Whether each VIP's interface could take it now (present, up, carrier), asked of
    /// holder and standby alike: a box that could not bind a VIP must not lead (issue 8).
    fn usable_all(&self, vips: &[&Vip]) -> Vec<Result<(), VipError>> {
        vips.iter().map(|_| Ok(())).collect()
    }
}

/// Telling the segment about VIPs.
pub trait Announcer: Send + Sync + 'static {
    /// One frame of each form (GARP request + reply, or unsolicited NA).
    fn announce(&self, vip: &Vip) -> Result<(), VipError>;
    /// Asks whether another box holds the VIP (ARP probe or DAD NS); answers arrive at the
    /// duplicate listener.
    fn probe(&self, vip: &Vip) -> Result<(), VipError>;
    /// [`Self::announce`] for many VIPs, one result per VIP in order (interfaces resolved
    /// once per call).
    fn announce_all(&self, vips: &[&Vip]) -> Vec<Result<(), VipError>> {
        vips.iter().map(|vip| self.announce(vip)).collect()
    }
    /// [`Self::probe`] for many VIPs, like [`Self::announce_all`].
    fn probe_all(&self, vips: &[&Vip]) -> Vec<Result<(), VipError>> {
        vips.iter().map(|vip| self.probe(vip)).collect()
    }
}

/// Executes "hold" / "release" for every configured VIP. Cheap to clone (shared state).
#[derive(Clone)]
pub struct Vips {
    inner: Arc<Inner>,
}

struct Inner {
    control: Arc<dyn AddressControl>,
    announcer: Arc<dyn Announcer>,
    /// The announce settings; a reload replaces them ([`Vips::set_vips`]).
    cadence: Mutex<Cadence>,
    /// Start the netlink watcher and the duplicate listener in `spawn_background` (None with
    /// fakes: there is no kernel to watch); the watcher ignores address events stamped with
    /// these netlink ports, our own.
    kernel_watch: Option<Vec<u32>>,
    /// Kernel-enforced lifetime of bound VIPs and how often it is renewed (None: permanent).
    lease: Option<(Duration, Duration)>,
    /// While taking over in a planned overlap: the old holder's open connections are passed
    /// on to it, not reset (kernel only).
    overlap_guard: Option<overlap_guard::OverlapGuard>,
    /// A std Mutex: held only for short, non-async work (a few netlink requests or frames).
    state: Mutex<State>,
    /// The fence deadline of the current hold (None: none given): past it nothing is bound,
    /// renewed or announced, whatever `held` says. Apart from `state`, whose lock is held
    /// across netlink requests, so that the supervisor's thread can move it at every quorum
    /// acknowledgement without waiting for this thread.
    hold_until: Mutex<Option<Instant>>,
    /// Wakes the announce loop when a schedule changed.
    wake: Notify,
    /// Wakes the lease renewals when the VIPs are held again ([`renew_loop`]).
    held_again: Notify,
    /// Set by the address watcher when one of our VIPs changed in the kernel (or events were
    /// lost): the VIP thread reconciles.
    kernel_changed: Notify,
    /// Set by the link watcher when a link changed (or, without one, at each poll): the VIP
    /// thread checks whether this box can still take its VIPs.
    links_changed: Notify,
    /// Ends the handover relay of the last release ([`relay`]; kernel only): holding again,
    /// or a newer release, stops it.
    relay: Mutex<Option<CancellationToken>>,
}

struct State {
    held: bool,
    /// This node's part in a planned overlap (make-before-break handover).
    overlap: VipOverlap,
    slots: Vec<Slot>,
}

struct Slot {
    vip: Vip,
    /// Last known: the VIP is in the kernel because we put it there (or found it there).
    bound: bool,
    /// It vanished while held and has not been put back yet.
    lost: bool,
    held_since: Option<u64>,
    /// Frames of the current burst still to send.
    burst_left: u32,
    next_announce: Option<Instant>,
    last_reburst: Option<Instant>,
    announcements_sent: u64,
    re_adds: u64,
    duplicates: u64,
    /// Frames for it that clients sent here after a release: passed on to the successor, or
    /// dropped ([`relay`]).
    relayed: relay::Tally,
    /// When the kernel drops it unless renewed (bound with a lifetime).
    lease_until: Option<Instant>,
    lease_expiries: u64,
    address_error: ErrorLog,
    announce_error: ErrorLog,
    /// Why the interface could not take this VIP at the last check (see [`Vips::unbindable`]).
    link_error: ErrorLog,
    /// The last add was refused for lack of privilege: kept until an add succeeds, since
    /// nothing but a restart with the capability brings it back.
    denied: Option<String>,
}

impl Slot {
    /// A VIP not bound, never announced.
    fn new(vip: Vip) -> Self {
        Self {
            vip,
            bound: false,
            lost: false,
            held_since: None,
            burst_left: 0,
            next_announce: None,
            last_reburst: None,
            announcements_sent: 0,
            re_adds: 0,
            duplicates: 0,
            relayed: relay::Tally::default(),
            lease_until: None,
            lease_expiries: 0,
            address_error: ErrorLog::default(),
            announce_error: ErrorLog::default(),
            link_error: ErrorLog::default(),
            denied: None,
        }
    }
}

/// `[announce]` as the announce loop uses it.
#[derive(Debug, Clone, Copy)]
struct Cadence {
    burst_count: u32,
    burst_interval: Duration,
    /// None: refresh turned off.
    refresh: Option<Duration>,
}

impl Cadence {
    fn of(announce: &Announce) -> Self {
        Self {
            burst_count: announce.burst_count.max(1),
            burst_interval: Duration::from_millis(announce.burst_interval_ms),
            refresh: (announce.refresh_s > 0).then(|| Duration::from_secs(announce.refresh_s)),
        }
    }
}

/// Remembers the failure currently repeating, so it is logged when it starts, changes and
/// clears — not on every retry. Failures are compared by their cause ("interface eth9
/// missing"), so the same problem seen by add and then by the presence check is one problem.
#[derive(Default)]
struct ErrorLog {
    /// (cause, full message) of the current failure.
    current: Option<(String, String)>,
}

impl ErrorLog {
    fn message(&self) -> Option<String> {
        self.current.as_ref().map(|(_, message)| message.clone())
    }

    fn set(&mut self, vip: &Vip, error: &VipError) {
        let message = error.to_string();
        let key = error.cause().to_string();
        // The same cause seen by another operation keeps the first, most telling message
        // ("cannot add", not the "cannot check" that follows it on every reconcile).
        if self.current.as_ref().is_some_and(|(k, _)| *k == key) {
            return;
        }
        let old = self.current.replace((key, message.clone()));
        {
            tracing::warn!(
                vip = %vip.addr,
                interface = %vip.interface,
                from = old.as_ref().map_or("ok", |(_, m)| m.as_str()),
                to = %message,
                "VIP error"
            );
        }
    }

    fn clear(&mut self, vip: &Vip) {
        if let Some((_, old)) = self.current.take() {
            tracing::info!(
                vip = %vip.addr,
                interface = %vip.interface,
                from = %old,
                to = "ok",
                "VIP error cleared"
            );
        }
    }
}

fn transition(vip: &Vip, from: &str, to: &str, reason: &str) {
    tracing::debug!(
        vip = %vip.addr,
        interface = %vip.interface,
        from,
        to,
        reason,
        "VIP state changed"
    );
}

impl Vips {
    /// VIPs executed by `control` and `announcer` (fakes in tests). No kernel watchers are
    /// started by [`Self::spawn_background`]; feed claims to [`Self::on_duplicate`].
    pub fn new(
        vips: &[VipConfig],
        announce: &Announce,
        control: Arc<dyn AddressControl>,
        announcer: Arc<dyn Announcer>,
    ) -> Self {
        Self::build(vips, announce, control, announcer, None, None)
    }

    /// [`Self::new`] with a lease: VIPs bound by `control` expire after `lifetime` unless
    /// renewed, and the VIP thread renews them every `renew_every` while held.
    pub fn leased(
        vips: &[VipConfig],
        announce: &Announce,
        control: Arc<dyn AddressControl>,
        announcer: Arc<dyn Announcer>,
        lifetime: Duration,
        renew_every: Duration,
    ) -> Self {
        let lease = Some((lifetime, renew_every));
        Self::build(vips, announce, control, announcer, None, lease)
    }

    /// The real thing: rtnetlink + AF_PACKET in the calling thread's network namespace,
    /// VIPs bound without a lifetime. Needs CAP_NET_ADMIN (addresses) and CAP_NET_RAW (frames).
    pub fn linux(vips: &[VipConfig], announce: &Announce) -> Result<Self, VipError> {
        Self::linux_leased(vips, announce, &VipLease { lifetime_s: 0 })
    }

    /// [`Self::linux`] with the kernel-enforced lease of `lease`: every VIP is bound with that
    /// lifetime and renewed while held, so the kernel drops the VIPs of a dead or frozen
    /// raftvip by itself.
    pub fn linux_leased(
        vips: &[VipConfig],
        announce: &Announce,
        lease: &VipLease,
    ) -> Result<Self, VipError> {
        let control = netlink::NetlinkControl::connect()?.with_lifetime(lease.lifetime_s);
        let ports = Some(control.ports());
        let announcer = Arc::new(announce::PacketAnnouncer::new());
        let lease = lease.lifetime().zip(lease.renew_every());
        Ok(Self::build(
            vips,
            announce,
            Arc::new(control),
            announcer,
            ports,
            lease,
        ))
    }

    /// `kernel_watch`: start the watchers (the kernel, not fakes), ignoring events stamped
    /// with these netlink ports. `lease`: (lifetime, renewal period).
    fn build(
        vips: &[VipConfig],
        announce: &Announce,
        control: Arc<dyn AddressControl>,
        announcer: Arc<dyn Announcer>,
        kernel_watch: Option<Vec<u32>>,
        lease: Option<(Duration, Duration)>,
    ) -> Self {
        let slots = vips
            .iter()
            .map(|config| Slot::new(Vip::from_config(config)))
            .collect();
        Self {
            inner: Arc::new(Inner {
                control,
                announcer,
                cadence: Mutex::new(Cadence::of(announce)),
                overlap_guard: kernel_watch.is_some().then(|| {
                    let ips: Vec<IpAddr> = vips.iter().map(|v| v.address.ip).collect();
                    overlap_guard::OverlapGuard::new(&ips)
                }),
                kernel_watch,
                lease,
                state: Mutex::new(State {
                    held: false,
                    overlap: VipOverlap::None,
                    slots,
                }),
                hold_until: Mutex::new(None),
                wake: Notify::new(),
                held_again: Notify::new(),
                kernel_changed: Notify::new(),
                links_changed: Notify::new(),
                relay: Mutex::new(None),
            }),
        }
    }

    /// A successor of a planned overlap binds once its guard is up (or has failed, or
    /// [`OVERLAP_GUARD_WAIT`] passed): a VIP bound before would reset the connections still
    /// open with the old holder. The guard is asked for when this node is asked to take over,
    /// so most of its start-up falls into the election. The caller binds with [`Vips::set_held`]
    /// after this returns, unless a newer wish (a release) came meanwhile.
    pub fn wait_for_overlap_guard(&self) {
        let inner = &self.inner;
        let taking = inner.lock().overlap.old_holder().is_some();
        let Some(guard) = inner.overlap_guard.as_ref().filter(|_| taking) else {
            return;
        };
        if !guard.wait_settled(OVERLAP_GUARD_WAIT) {
            tracing::warn!(
                waited_ms = OVERLAP_GUARD_WAIT.as_millis() as u64,
                "the planned overlap's guard is not up yet: binding anyway (connections open with the old holder may be reset)"
            );
        }
    }

    /// Hold or release every VIP. Idempotent and cheap when nothing changes (the supervisor
    /// re-asserts on every loop). Holding binds and announces the VIPs in doubling steps (one
    /// netlink batch and one frame batch each, the first step a single VIP), then probes for
    /// another holder and leaves the rest of the burst to the announce loop; releasing removes
    /// every VIP (one batch) before it logs anything. One summary line per transition, with
    /// the time to the first and the last VIP; the per-VIP detail is at debug.
    pub fn set_held(&self, hold: bool, reason: &str) {
        let inner = &self.inner;
        let mut state = inner.lock();
        if state.held == hold {
            return;
        }
        state.held = hold;
        if hold {
            inner.held_again.notify_one();
        }
        let now = Instant::now();
        let all: Vec<usize> = (0..state.slots.len()).collect();
        let mut guard_down = false;
        // Frames for the VIPs are ours again, or those of the successor of this release.
        if let Some(relay) = crate::sync::lock(&inner.relay).take() {
            relay.cancel();
        }
        if hold {
            // Bound and announced in steps of 1, 2, 4, ... VIPs (TAKEOVER_STEP_MAX at most):
            // the first VIP is on the segment as fast as a lone one would be, and 200 take 9
            // steps of one netlink datagram and one frame batch each.
            let mut bound = Vec::with_capacity(all.len());
            let mut first = None;
            let mut step = 1;
            let mut rest = all.as_slice();
            while !rest.is_empty() {
                let (these, later) = rest.split_at(step.min(rest.len()));
                let now_bound = inner.bind(&mut state.slots, these);
                inner.start_bursts(&mut state.slots, &now_bound, now, false);
                if !now_bound.is_empty() {
                    first.get_or_insert_with(|| now.elapsed());
                }
                bound.extend(now_bound);
                rest = later;
                step = (step * 2).min(TAKEOVER_STEP_MAX);
            }
            let last = now.elapsed();
            inner.probe_now(&mut state.slots, &bound);
            for (i, slot) in state.slots.iter().enumerate() {
                let to = if bound.contains(&i) {
                    "held"
                } else {
                    "held (not bound yet)"
                };
                transition(&slot.vip, "released", to, reason);
            }
            let took = (first.unwrap_or(last), last);
            summary("held", state.slots.len(), bound.len(), reason, took);
        } else {
            if std::mem::take(&mut state.overlap).old_holder().is_some() {
                guard_down = true;
            }
            for slot in &mut state.slots {
                slot.burst_left = 0;
                slot.next_announce = None;
            }
            let removed = inner.unbind(&mut state.slots, &all);
            for (i, slot) in state.slots.iter().enumerate() {
                let to = if removed.contains(&i) {
                    "released"
                } else {
                    "released (removal failed)"
                };
                transition(&slot.vip, "held", to, reason);
            }
            let took = now.elapsed();
            summary(
                "released",
                state.slots.len(),
                removed.len(),
                reason,
                (took, took),
            );
            self.start_relay(&state.slots);
        }
        drop(state);
        inner.wake.notify_one();
        if guard_down {
            inner.set_overlap_guard(None);
        }
    }

    /// This node's part in a planned overlap. Yielding (the old holder) stops every burst and
    /// refresh at once, so the successor's announcements are the last the segment hears;
    /// ending a yield while still holding (the successor never came) announces again.
    /// Either side takes the other's frames for what they are, not for a duplicate.
    pub fn set_overlap(&self, overlap: VipOverlap) {
        let inner = &self.inner;
        let mut state = inner.lock();
        let before = std::mem::replace(&mut state.overlap, overlap);
        if before == overlap {
            return;
        }
        tracing::debug!(?overlap, "planned overlap");
        let now = Instant::now();
        match overlap {
            VipOverlap::Yielding => {
                for slot in &mut state.slots {
                    slot.burst_left = 0;
                    slot.next_announce = None;
                }
            }
            VipOverlap::None if before == VipOverlap::Yielding && inner.holding(&state, now) => {
                let bound = bound_slots(&state.slots);
                inner.start_bursts(&mut state.slots, &bound, now, false);
            }
            _ => {}
        }
        drop(state);
        inner.wake.notify_one();
        if before.old_holder() != overlap.old_holder() {
            inner.set_overlap_guard(overlap.old_holder());
        }
    }

    /// A fresh burst (no probe) for every held VIP: the successor of a planned overlap does
    /// this once the old holder has released, so no neighbour keeps the old MAC from an
    /// answer the old holder gave during the overlap.
    pub fn reannounce(&self) {
        let inner = &self.inner;
        let mut state = inner.lock();
        let now = Instant::now();
        if !inner.holding(&state, now) {
            return;
        }
        let bound = bound_slots(&state.slots);
        inner.start_bursts(&mut state.slots, &bound, now, false);
        tracing::info!(vips = bound.len(), "VIPs announced again");
        drop(state);
        inner.wake.notify_one();
    }

    /// Replaces the VIP set and the announce settings (a reload). A VIP no longer listed is
    /// removed from the kernel if bound; a new one is bound and announced at once while
    /// held; the others keep their state and counters. Returns true when the set changed
    /// (the kernel watchers, which know the VIPs, must then be restarted).
    pub fn set_vips(&self, vips: &[VipConfig], announce: &Announce) -> bool {
        let inner = &self.inner;
        *crate::sync::lock(&inner.cadence) = Cadence::of(announce);
        let wanted: Vec<Vip> = vips.iter().map(Vip::from_config).collect();
        let mut state = inner.lock();
        let (mut kept, mut gone): (Vec<Slot>, Vec<Slot>) = std::mem::take(&mut state.slots)
            .into_iter()
            .partition(|slot| wanted.contains(&slot.vip));
        let bound: Vec<usize> = (0..gone.len()).filter(|&i| gone[i].bound).collect();
        let removed = inner.unbind(&mut gone, &bound);
        for slot in &gone {
            transition(&slot.vip, "configured", "removed", "reload");
        }
        if !gone.is_empty() {
            let names: Vec<String> = gone.iter().map(|s| s.vip.to_string()).collect();
            tracing::info!(
                count = gone.len(),
                released = removed.len(),
                vips = %abbreviate(&names),
                "VIPs removed from the config"
            );
        }
        let mut added = Vec::new();
        for (i, vip) in wanted.into_iter().enumerate() {
            let slot = match kept.iter().position(|s| s.vip == vip) {
                Some(at) => kept.swap_remove(at),
                None => {
                    added.push(i);
                    Slot::new(vip)
                }
            };
            state.slots.push(slot);
        }
        let now = Instant::now();
        if !added.is_empty() {
            let names: Vec<String> = added
                .iter()
                .map(|&i| state.slots[i].vip.to_string())
                .collect();
            let holding = inner.holding(&state, now);
            let bound = if holding {
                let bound = inner.bind(&mut state.slots, &added);
                inner.start_bursts(&mut state.slots, &bound, now, true);
                bound
            } else {
                Vec::new()
            };
            tracing::info!(
                count = added.len(),
                bound = bound.len(),
                held = holding,
                vips = %abbreviate(&names),
                "VIPs added to the config"
            );
        }
        drop(state);
        inner.wake.notify_one();
        !gone.is_empty() || !added.is_empty()
    }

    /// The fence deadline of the current hold (None: none known). Past it, renewals,
    /// announcements and re-adds stop at once, even before the release itself: a box that
    /// resumes from a freeze must not renew or announce a VIP its fence has already given up.
    pub fn set_hold_until(&self, deadline: Option<Instant>) {
        *crate::sync::lock(&self.inner.hold_until) = deadline;
    }

    /// Compares the kernel with the desired state and repairs it: a held VIP that vanished is
    /// re-added (counted, logged at warn once per disappearance) and announced again; a VIP
    /// present while not held is removed. One address dump per interface, one batch per
    /// repair.
    pub fn reconcile(&self) {
        let inner = &self.inner;
        let mut state = inner.lock();
        let now = Instant::now();
        let held = inner.holding(&state, now);
        let present = {
            let vips: Vec<&Vip> = state.slots.iter().map(|s| &s.vip).collect();
            inner.control.bound_all(&vips)
        };
        // Found bound by someone else (or a crashed predecessor) while held: ours now.
        let mut found = Vec::new();
        let mut to_add = Vec::new();
        let mut to_remove = Vec::new();
        let mut vanished = Vec::new();
        let mut expired = 0;
        for (i, (slot, present)) in state.slots.iter_mut().zip(present).enumerate() {
            let present = match present {
                Ok(present) => present,
                Err(e) => {
                    slot.address_error.set(&slot.vip, &e);
                    continue;
                }
            };
            match (held, present) {
                (true, true) => {
                    slot.address_error.clear(&slot.vip);
                    if !slot.bound {
                        slot.bound = true;
                        slot.held_since = Some(crate::clock::now_unix_ms());
                        found.push(i);
                    }
                }
                (true, false) => {
                    if slot.bound {
                        if slot.lease_until.is_some_and(|until| until <= now) {
                            // Not renewed in time while held: this thread was stalled.
                            slot.lease_expiries += 1;
                            expired += 1;
                        }
                        slot.lease_until = None;
                        slot.bound = false;
                        slot.lost = true;
                        slot.held_since = None;
                        slot.burst_left = 0;
                        slot.next_announce = None;
                        vanished.push(slot.vip.addr.to_string());
                    }
                    to_add.push(i);
                }
                (false, true) => to_remove.push(i),
                (false, false) => {
                    slot.bound = false;
                    slot.address_error.clear(&slot.vip);
                }
            }
        }
        if !vanished.is_empty() {
            tracing::warn!(
                count = vanished.len(),
                lease_expired = expired,
                vips = %abbreviate(&vanished),
                "held VIPs vanished from their interface; re-adding"
            );
        }
        let added = inner.bind(&mut state.slots, &to_add);
        let mut re_added = 0;
        for &i in &added {
            let slot = &mut state.slots[i];
            if slot.lost {
                slot.lost = false;
                slot.re_adds += 1;
                re_added += 1;
                transition(&slot.vip, "vanished", "held", "re-added");
            } else {
                transition(&slot.vip, "held (not bound yet)", "held", "bound");
            }
        }
        let mut announce = found;
        announce.extend_from_slice(&added);
        inner.start_bursts(&mut state.slots, &announce, now, true);
        let removed = inner.unbind(&mut state.slots, &to_remove);
        for &i in &removed {
            transition(
                &state.slots[i].vip,
                "present",
                "released",
                "not held by this node",
            );
        }
        if !added.is_empty() || !removed.is_empty() {
            tracing::info!(
                re_added,
                bound = added.len() - re_added,
                removed = removed.len(),
                "VIPs repaired"
            );
        }
        drop(state);
        inner.wake.notify_one();
    }

    /// Handles "`mac` claims `ip`". While we hold `ip` this is a duplicate: counted, logged,
    /// and answered with a fresh burst (at most one per [`DUPLICATE_REBURST_GAP`]) so clients
    /// come back to us. Returns false when we do not hold it (then the claimant is simply the
    /// rightful holder).
    pub fn on_duplicate(&self, ip: IpAddr, mac: Mac) -> bool {
        let inner = &self.inner;
        let mut state = inner.lock();
        let held = state.held;
        let Some(index) = state.slots.iter().position(|s| s.vip.addr.ip == ip) else {
            return false;
        };
        let overlap = state.overlap;
        let slot = &mut state.slots[index];
        if !(held && slot.bound) {
            tracing::debug!(vip = %ip, %mac, "VIP claimed by its holder");
            return false;
        }
        if overlap != VipOverlap::None {
            tracing::debug!(vip = %ip, %mac, ?overlap, "VIP claimed by the other side of a planned overlap");
            return true;
        }
        slot.duplicates += 1;
        let now = Instant::now();
        let reburst = slot
            .last_reburst
            .is_none_or(|at| now.duration_since(at) >= DUPLICATE_REBURST_GAP);
        if reburst {
            tracing::warn!(
                vip = %slot.vip.addr,
                interface = %slot.vip.interface,
                other_mac = %mac,
                duplicates = slot.duplicates,
                "another MAC claims a VIP this node holds; re-announcing"
            );
            slot.last_reburst = Some(now);
        } else {
            tracing::debug!(vip = %ip, %mac, "duplicate claim again");
        }
        if reburst {
            // No probe: the other box would answer it and provoke the next claim.
            inner.start_bursts(&mut state.slots, &[index], now, false);
        }
        drop(state);
        inner.wake.notify_one();
        true
    }

    pub fn status(&self) -> Vec<VipStatus> {
        let state = self.inner.lock();
        let now = Instant::now();
        state
            .slots
            .iter()
            .map(|slot| {
                let held = state.held && slot.bound;
                VipStatus {
                    address: slot.vip.addr.to_string(),
                    interface: slot.vip.interface.clone(),
                    held,
                    held_since_unix_ms: slot.held_since.filter(|_| held),
                    announcements_sent: slot.announcements_sent,
                    re_adds: slot.re_adds,
                    duplicates: slot.duplicates,
                    relayed_frames: slot.relayed.relayed,
                    relay_dropped_frames: slot.relayed.dropped,
                    error: slot
                        .address_error
                        .message()
                        .or_else(|| slot.link_error.message())
                        .or_else(|| slot.announce_error.message()),
                    lease_remaining_ms: slot.lease_until.filter(|_| held).map(|until| {
                        let left = until.saturating_duration_since(now);
                        u64::try_from(left.as_millis()).unwrap_or(u64::MAX)
                    }),
                    lease_expiries: slot.lease_expiries,
                }
            })
            .collect()
    }

    /// Why this box could not serve every VIP now (None: it could): an interface missing,
    /// down or without carrier, or an add refused for lack of privilege. Asked of holder and
    /// standby alike, on the VIP thread; the supervisor makes such a box ineligible to lead.
    pub fn unbindable(&self) -> Option<String> {
        let inner = &self.inner;
        let mut state = inner.lock();
        let usable = {
            let vips: Vec<&Vip> = state.slots.iter().map(|s| &s.vip).collect();
            inner.control.usable_all(&vips)
        };
        let mut why = None;
        for (slot, usable) in state.slots.iter_mut().zip(usable) {
            match usable {
                Ok(()) => slot.link_error.clear(&slot.vip),
                Err(e) => {
                    slot.link_error.set(&slot.vip, &e);
                    why.get_or_insert_with(|| e.to_string());
                }
            }
            if let Some(denied) = &slot.denied {
                why.get_or_insert_with(|| denied.clone());
            }
        }
        why
    }

    /// Starts, until `cancel`: the announce loop (burst frames after the first, periodic
    /// refresh), the lease renewals, and for [`Self::linux`] the netlink address watcher
    /// (which wakes [`Self::kernel_changed`]), the link watcher (which wakes
    /// [`Self::links_changed`]) and the duplicate listener. Their sockets are
    /// opened here, in the caller's network namespace. Must be called inside a tokio
    /// runtime; failures to start a watcher are logged and leave the periodic reconcile as
    /// the safety net.
    fn spawn_background(&self, cancel: CancellationToken) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::error!("VIP background tasks need a tokio runtime; none started");
            return;
        };
        let _entered = runtime.enter();
        runtime.spawn(announce_loop(self.inner.clone(), cancel.clone()));
        if let Some((_, every)) = self.inner.lease {
            runtime.spawn(renew_loop(self.inner.clone(), every, cancel.clone()));
        }
        let Some(own_ports) = &self.inner.kernel_watch else {
            return;
        };
        runtime.spawn(link_watch_loop(self.inner.clone(), cancel.clone()));

        let (ips, interfaces) = {
            let state = self.inner.lock();
            let ips: HashSet<IpAddr> = state.slots.iter().map(|s| s.vip.addr.ip).collect();
            let interfaces: HashMap<IpAddr, String> = state
                .slots
                .iter()
                .map(|s| (s.vip.addr.ip, s.vip.interface.clone()))
                .collect();
            (ips, interfaces)
        };

        match netlink::AddressWatcher::subscribe(own_ports) {
            Ok(watcher) => {
                runtime.spawn(watch_loop(watcher, ips, self.inner.clone(), cancel.clone()));
            }
            Err(e) => tracing::error!(
                error = %e,
                "VIP changes by others are seen only by the periodic reconcile"
            ),
        }

        match duplicate::Listener::open(interfaces) {
            Ok(listener) => {
                let vips = self.clone();
                runtime.spawn(async move {
                    let result = listener
                        .run(cancel, |ip, claim| {
                            vips.on_duplicate(ip, claim.mac);
                        })
                        .await;
                    if let Err(e) = result {
                        tracing::error!(error = %e, "duplicate VIP listener stopped");
                    }
                });
            }
            Err(e) => tracing::error!(error = %e, "duplicate VIPs will not be detected"),
        }
    }

    /// After a release: passes what clients still send here on to the successor ([`relay`]).
    /// Kernel only, and only on a runtime (the VIP thread's).
    fn start_relay(&self, slots: &[Slot]) {
        if self.inner.kernel_watch.is_none() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let _entered = runtime.enter();
        let vips = slots
            .iter()
            .map(|s| (s.vip.addr.ip, s.vip.interface.clone()))
            .collect();
        let cancel = CancellationToken::new();
        let counts = self.clone();
        match relay::spawn(&vips, cancel.clone(), move |tally| {
            counts.count_relayed(tally)
        }) {
            Ok(()) => *crate::sync::lock(&self.inner.relay) = Some(cancel),
            Err(e) => tracing::warn!(
                error = %e,
                "clients' frames that still reach this box are dropped until the successor's announcement reaches them"
            ),
        }
    }

    /// Adds a relay's tally to its VIPs' counters.
    fn count_relayed(&self, tally: &HashMap<IpAddr, relay::Tally>) {
        let mut state = self.inner.lock();
        for slot in &mut state.slots {
            if let Some(&t) = tally.get(&slot.vip.addr.ip) {
                slot.relayed += t;
            }
        }
    }

    /// Completes when the address watcher saw one of our VIPs change in the kernel (or lost
    /// events) since the last call: time to [`Self::reconcile`].
    async fn kernel_changed(&self) {
        self.inner.kernel_changed.notified().await;
    }

    /// Completes when a link changed since the last call: time to check [`Self::unbindable`].
    async fn links_changed(&self) {
        self.inner.links_changed.notified().await;
    }
}

impl Inner {
    /// Up, passing segments on to `old_holder`, or down (None); for the VIPs configured now
    /// (a reload may have changed them).
    fn set_overlap_guard(&self, old_holder: Option<IpAddr>) {
        let Some(guard) = &self.overlap_guard else {
            return;
        };
        match old_holder {
            Some(old_holder) => {
                let vips: Vec<Vip> = self.lock().slots.iter().map(|s| s.vip.clone()).collect();
                guard.up(vips, old_holder);
            }
            None => guard.down(),
        }
    }

    fn cadence(&self) -> Cadence {
        *crate::sync::lock(&self.cadence)
    }

    /// Held and not past the fence.
    fn holding(&self, state: &State, now: Instant) -> bool {
        state.held && crate::sync::lock(&self.hold_until).is_none_or(|until| now < until)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere must not stop releasing the VIPs: the state stays usable.
        crate::sync::lock(&self.state)
    }

    /// Adds the VIPs `which` (one batch); returns those bound now.
    fn bind(&self, slots: &mut [Slot], which: &[usize]) -> Vec<usize> {
        self.bind_with(slots, which, |vips| self.control.add_all(vips))
    }

    /// [`Self::bind`] with `add` doing the adds (a plain add, or a lease renewal).
    fn bind_with(
        &self,
        slots: &mut [Slot],
        which: &[usize],
        add: impl FnOnce(&[&Vip]) -> Vec<Result<(), VipError>>,
    ) -> Vec<usize> {
        if which.is_empty() {
            return Vec::new();
        }
        // The kernel counts the lifetime from its handling of the request: from before the
        // send is the safe side.
        let sent = Instant::now();
        let results = {
            let vips: Vec<&Vip> = which.iter().map(|&i| &slots[i].vip).collect();
            add(&vips)
        };
        let mut bound = Vec::with_capacity(which.len());
        for (&i, result) in which.iter().zip(results) {
            let slot = &mut slots[i];
            match result {
                Ok(()) => {
                    slot.address_error.clear(&slot.vip);
                    slot.denied = None;
                    if !slot.bound {
                        slot.bound = true;
                        slot.held_since = Some(crate::clock::now_unix_ms());
                    }
                    slot.lease_until = self.lease.map(|(lifetime, _)| sent + lifetime);
                    bound.push(i);
                }
                Err(e) => {
                    if matches!(e.cause(), Cause::PermissionDenied(_)) {
                        slot.denied = Some(e.to_string());
                    }
                    slot.address_error.set(&slot.vip, &e);
                }
            }
        }
        bound
    }

    /// Removes the VIPs `which` (one batch); returns those gone. A failed one counts as still
    /// bound, so the next reconcile tries again.
    fn unbind(&self, slots: &mut [Slot], which: &[usize]) -> Vec<usize> {
        if which.is_empty() {
            return Vec::new();
        }
        let results = {
            let vips: Vec<&Vip> = which.iter().map(|&i| &slots[i].vip).collect();
            self.control.remove_all(&vips)
        };
        let mut removed = Vec::with_capacity(which.len());
        for (&i, result) in which.iter().zip(results) {
            let slot = &mut slots[i];
            match result {
                Ok(()) => {
                    slot.bound = false;
                    slot.lost = false;
                    slot.held_since = None;
                    slot.lease_until = None;
                    slot.address_error.clear(&slot.vip);
                    removed.push(i);
                }
                Err(e) => slot.address_error.set(&slot.vip, &e),
            }
        }
        removed
    }

    /// First frame now for every VIP in `which` (one batch: the segment learns of all of them
    /// within a millisecond or two), the other `burst_count - 1` from the announce loop.
    fn start_bursts(&self, slots: &mut [Slot], which: &[usize], now: Instant, probe: bool) {
        if which.is_empty() {
            return;
        }
        self.announce_now(slots, which);
        let count = slots.len();
        for &i in which {
            let slot = &mut slots[i];
            slot.burst_left = self.cadence().burst_count.saturating_sub(1);
            self.schedule(slot, now, phase(self.cadence().refresh, i, count));
        }
        if probe {
            self.probe_now(slots, which);
        }
    }

    /// Asks the segment whether another box holds the VIPs `which` (one batch).
    fn probe_now(&self, slots: &mut [Slot], which: &[usize]) {
        if which.is_empty() {
            return;
        }
        let results = {
            let vips: Vec<&Vip> = which.iter().map(|&i| &slots[i].vip).collect();
            self.announcer.probe_all(&vips)
        };
        for (&i, result) in which.iter().zip(results) {
            let slot = &mut slots[i];
            match result {
                Ok(()) => slot.announce_error.clear(&slot.vip),
                Err(e) => slot.announce_error.set(&slot.vip, &e),
            }
        }
    }

    fn announce_now(&self, slots: &mut [Slot], which: &[usize]) {
        let results = {
            let vips: Vec<&Vip> = which.iter().map(|&i| &slots[i].vip).collect();
            self.announcer.announce_all(&vips)
        };
        for (&i, result) in which.iter().zip(results) {
            let slot = &mut slots[i];
            match result {
                Ok(()) => {
                    slot.announcements_sent += 1;
                    slot.announce_error.clear(&slot.vip);
                }
                Err(e) => slot.announce_error.set(&slot.vip, &e),
            }
        }
    }

    /// The next frame: the burst's next, else the refresh. `phase` delays the first refresh
    /// after a burst, so VIPs taken over together refresh spread across the period instead
    /// of all at once.
    fn schedule(&self, slot: &mut Slot, now: Instant, phase: Duration) {
        slot.next_announce = if slot.burst_left > 0 {
            Some(now + self.cadence().burst_interval)
        } else {
            self.cadence().refresh.map(|refresh| now + refresh + phase)
        };
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.lock()
            .slots
            .iter()
            .filter_map(|s| s.next_announce)
            .min()
    }

    /// True while `ip` is held and bound by us.
    fn holds_bound(&self, ip: IpAddr) -> bool {
        let state = self.lock();
        state.held && state.slots.iter().any(|s| s.vip.addr.ip == ip && s.bound)
    }

    /// Renews the lifetime of every bound VIP while held (one batch of replacing adds); false
    /// once the VIPs are released.
    fn renew_leases(&self) -> bool {
        let mut state = self.lock();
        if !self.holding(&state, Instant::now()) {
            return state.held;
        }
        let bound: Vec<usize> = (0..state.slots.len())
            .filter(|&i| state.slots[i].bound)
            .collect();
        self.bind_with(&mut state.slots, &bound, |vips| {
            self.control.renew_all(vips)
        });
        true
    }

    /// Sends the burst and refresh frames that are due (one batch).
    fn announce_due(&self, now: Instant) {
        let mut state = self.lock();
        let held = self.holding(&state, now) && state.overlap != VipOverlap::Yielding;
        let mut due = Vec::new();
        for (i, slot) in state.slots.iter_mut().enumerate() {
            if slot.next_announce.is_none_or(|at| at > now) {
                continue;
            }
            if held && slot.bound {
                due.push(i);
            } else {
                slot.next_announce = None;
                slot.burst_left = 0;
            }
        }
        if due.is_empty() {
            return;
        }
        self.announce_now(&mut state.slots, &due);
        let count = state.slots.len();
        for &i in &due {
            let slot = &mut state.slots[i];
            // The last burst frame hands over to the refresh at this VIP's phase; later
            // refreshes keep it.
            let phase = if slot.burst_left > 0 {
                phase(self.cadence().refresh, i, count)
            } else {
                Duration::ZERO
            };
            slot.burst_left = slot.burst_left.saturating_sub(1);
            self.schedule(slot, now, phase);
        }
        tracing::debug!(vips = due.len(), "announced");
    }
}

/// The indices of the VIPs bound now.
fn bound_slots(slots: &[Slot]) -> Vec<usize> {
    (0..slots.len()).filter(|&i| slots[i].bound).collect()
}

/// VIP `index` of `count` refreshes `index / count` of the way into the refresh period.
fn phase(refresh: Option<Duration>, index: usize, count: usize) -> Duration {
    match refresh {
        Some(refresh) if count > 1 => refresh.mul_f64(index as f64 / count as f64),
        _ => Duration::ZERO,
    }
}

/// The first few items and how many more, for one log line about many VIPs.
fn abbreviate(items: &[String]) -> String {
    const SHOWN: usize = 3;
    let mut text = items
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if items.len() > SHOWN {
        text.push_str(&format!(" and {} more", items.len() - SHOWN));
    }
    text
}

/// The one line a hold or release writes, however many VIPs there are. `took`: from the
/// start to the first and to the last VIP done (announced, or removed), in µs in the log:
/// how long the segment waited for the first, and the spread to the last (issue 12).
fn summary(to: &str, total: usize, done: usize, reason: &str, took: (Duration, Duration)) {
    let micros = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
    let (first_us, last_us) = (micros(took.0), micros(took.1));
    if done == total {
        tracing::info!(vips = total, reason, first_us, last_us, "VIPs {to}");
    } else {
        tracing::warn!(
            vips = total,
            ok = done,
            failed = total - done,
            reason,
            first_us,
            last_us,
            "VIPs {to}, some failed (see the VIP errors)"
        );
    }
}

/// Sleeps until the next due announcement, or until a schedule changes.
async fn announce_loop(inner: Arc<Inner>, cancel: CancellationToken) {
    loop {
        let deadline = inner.next_deadline();
        let due = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = inner.wake.notified() => {}
            _ = due => inner.announce_due(Instant::now()),
        }
    }
}

/// Renews the lease of every held VIP every `every`, until cancelled. Its timer runs only
/// while the VIPs are held: a follower's VIP thread is not woken for renewals it skips.
async fn renew_loop(inner: Arc<Inner>, every: Duration, cancel: CancellationToken) {
    loop {
        // A stored permit covers a hold between this check and the wait.
        while !inner.lock().held {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = inner.held_again.notified() => {}
            }
        }
        let mut tick = crate::clock::every(every);
        // The first tick is at once, and the hold has just bound the VIPs.
        tick.tick().await;
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick.tick() => {}
            }
            if !inner.renew_leases() {
                break;
            }
        }
    }
}

/// How often the links are checked when the kernel's link events cannot be had.
const LINK_POLL: Duration = Duration::from_millis(200);

/// Wakes [`Vips::links_changed`] at each link event of this network namespace; polls every
/// [`LINK_POLL`] instead if the link watcher cannot start or stops.
async fn link_watch_loop(inner: Arc<Inner>, cancel: CancellationToken) {
    match netlink::LinkWatcher::subscribe() {
        Ok(mut watcher) => loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                changed = watcher.changed() => match changed {
                    Ok(()) => inner.links_changed.notify_one(),
                    Err(e) => {
                        tracing::error!(error = %e, poll_ms = LINK_POLL.as_millis() as u64, "link watcher stopped: polling the VIPs' interfaces instead");
                        break;
                    }
                },
            }
        },
        Err(e) => tracing::error!(
            error = %e,
            poll_ms = LINK_POLL.as_millis() as u64,
            "no link watcher: polling the VIPs' interfaces instead"
        ),
    }
    let mut poll = crate::clock::every(LINK_POLL);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = poll.tick() => inner.links_changed.notify_one(),
        }
    }
}

/// Wakes [`Vips::kernel_changed`] for kernel address events that concern our VIPs, except a
/// VIP appearing that we hold and have bound: that is our own bind or lease renewal (several
/// a second), no news. (The IPv4 ones never arrive: the kernel stamps them with our port and
/// the watcher's socket filter drops them. IPv6 ones carry port 0 and are sorted out here.)
async fn watch_loop(
    mut watcher: netlink::AddressWatcher,
    ips: HashSet<IpAddr>,
    inner: Arc<Inner>,
    cancel: CancellationToken,
) {
    loop {
        let batch = tokio::select! {
            _ = cancel.cancelled() => return,
            batch = watcher.next() => batch,
        };
        let batch = match batch {
            Ok(batch) => batch,
            Err(e) => {
                tracing::error!(error = %e, "address watcher stopped; relying on periodic reconcile");
                return;
            }
        };
        for event in batch {
            match event {
                netlink::AddressEvent::Changed {
                    ip, present: true, ..
                } if inner.holds_bound(ip) => continue,
                netlink::AddressEvent::Changed { ip, .. } if !ips.contains(&ip) => continue,
                _ => {}
            }
            tracing::debug!(?event, "VIP address event");
            // One stored wake-up however many events: the reconcile re-reads the kernel.
            inner.kernel_changed.notify_one();
        }
    }
}
