//! What the supervisor sees of the VIP layer: [`VipHolder`], a wish ("hold" or "release", and
//! until when) and a report (status, whether this box could bind its VIPs).
//!
//! The trait lives here, beside its implementations, so the dependency points one way:
//! supervisor → vip. Everything else — re-checking the kernel on a timer, reacting to an
//! address that vanished or to another MAC claiming a VIP — happens on the VIP thread
//! ([`super::VipWorker`]) without the supervisor being told: none of it changes what the
//! supervisor decides.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::config::{Announce, VipConfig};
use crate::status::VipStatus;

/// What the VIP layer is told about a planned overlap, so that it does not fight it: the
/// old holder stops announcing, and neither side counts the other's frames as a duplicate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VipOverlap {
    /// No overlap: another MAC claiming a held VIP is a duplicate.
    #[default]
    None,
    /// The old holder of a planned handover: keep the VIPs bound, announce nothing.
    Yielding,
    /// The successor of a planned handover: announce as usual, expect the old holder, and
    /// pass it the segments of connections still open with it (`old_holder`: the address it
    /// asked from).
    Taking { old_holder: IpAddr },
}

impl VipOverlap {
    /// The old holder, when this node is the successor.
    pub fn old_holder(self) -> Option<IpAddr> {
        match self {
            VipOverlap::Taking { old_holder } => Some(old_holder),
            _ => None,
        }
    }
}

/// What the supervisor needs from the VIP layer.
pub trait VipHolder: Send + Sync + 'static {
    /// Idempotent: bind + announce, or release, every VIP.
    fn set_held(&self, hold: bool, reason: &str);
    /// Releases every VIP because the fence ran out (the supervisor found its quorum lost):
    /// `set_held(false, reason)`, counted in [`VipHolder::fence_releases`] if any was held.
    fn release_at_fence(&self, reason: &str) {
        self.set_held(false, reason);
    }
    /// Times VIPs held were released because the fence ran out, counted where the release
    /// happens: on the VIP thread at its own deadline too, which the supervisor never sees
    /// when a late acknowledgement reaches it first (a leader starved of CPU: the VIPs flap
    /// while its decision stays "holder").
    fn fence_releases(&self) -> u64 {
        0
    }
    fn status(&self) -> Vec<VipStatus>;
    /// Waits (at most `limit`) until the last `set_held` has been carried out; false on
    /// timeout. Implementations that execute on another thread make `set_held` return at
    /// once (it is on the Raft thread); the exit path waits here so no VIP outlives it.
    fn wait_applied(&self, _limit: Duration) -> bool {
        true
    }
    /// The fence deadline of the current hold (None when not holding). An implementation on
    /// its own thread releases at it by itself, however busy the Raft thread is, and never
    /// renews or announces past it.
    fn hold_until(&self, _deadline: Option<Instant>) {}
    /// Why this box could not bind its VIPs now (interface missing or down, no privilege),
    /// None when it could. The default never changes: always bindable.
    fn unbindable(&self) -> watch::Receiver<Option<String>> {
        watch::channel(None).1
    }
    /// This node's part in a planned overlap (make-before-break handover).
    fn set_overlap(&self, _overlap: VipOverlap) {}
    /// Announce every held VIP again at once (a fresh burst, no probe).
    fn reannounce(&self) {}
    /// A reload's new VIP set and settings: a VIP no longer listed is released if bound, a
    /// new one bound and announced at once if held. The default has nothing to change.
    fn set_vips(&self, _set: VipSet) {}
}

/// What a reload hands the VIP layer.
#[derive(Debug, Clone, PartialEq)]
pub struct VipSet {
    pub vips: Vec<VipConfig>,
    pub announce: Announce,
    /// The period of the safety-net re-check (`timing.reconcile_ms`).
    pub reconcile: Duration,
}

/// VIPs when none are configured (a witness, or a Raft-only test cluster).
pub struct NoVips;

impl VipHolder for NoVips {
    fn set_held(&self, _hold: bool, _reason: &str) {}
    fn status(&self) -> Vec<VipStatus> {
        Vec::new()
    }
}
