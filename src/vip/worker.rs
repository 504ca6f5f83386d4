//! The VIP thread: all VIP work runs on its own OS thread and runtime, never on the one that
//! carries Raft.
//!
//! The daemon runs on a single-threaded runtime (cheapest at idle). Binding, announcing and
//! probing hundreds of VIPs there took long enough that the leader missed its own heartbeat
//! acknowledgements and fenced itself (issue 13: with 40+ VIPs a cluster never settled). So
//! the supervisor only *states* what it wants — `set_held` records the desired
//! state and returns at once — and this thread carries it out, together with the announce
//! loop, the address watcher and the duplicate listener. A newer wish replaces an older one
//! not yet started (hold → release → hold collapses to the last), and a release is never
//! queued behind announcements: the thread checks for it between batches.
//!
//! Repairs are this thread's own business too: it re-checks the kernel every `reconcile_ms`
//! and at once when the address watcher sees one of our VIPs appear or vanish. The
//! supervisor is not told: a repair restores what it asked for and changes none of its inputs.
//!
//! It also tells the supervisor whether this box could bind its VIPs at all
//! ([`Vips::unbindable`]): checked when the kernel reports a link change (an interface down,
//! without carrier, gone or back), after each hold, release and reconcile (an add refused
//! for lack of privilege), and never otherwise, so a box whose links stay as they are is not
//! woken to look at them. The check is one `SIOCGIFFLAGS` per interface.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{VipHolder, VipOverlap, VipSet, Vips};
use crate::clock::{Alarm, AlarmListener};
use crate::status::VipStatus;

/// What the supervisor last asked for; `generation` counts the hold/release requests.
#[derive(Debug, Clone, Default)]
struct Desired {
    hold: bool,
    reason: String,
    /// A release because the fence ran out ([`VipHolder::release_at_fence`]).
    fence: bool,
    generation: u64,
    /// The fence deadline of the hold: this thread releases at it by itself.
    until: Option<Instant>,
    overlap: VipOverlap,
    /// Counts the supervisor's re-announce requests.
    reannounce: u64,
}

/// The supervisor's handle on the VIP thread.
pub struct VipWorker {
    vips: Vips,
    desired: watch::Sender<Desired>,
    /// The last generation carried out, for [`VipWorker::wait_applied`].
    applied: Arc<(Mutex<u64>, Condvar)>,
    /// Why this box could not bind its VIPs (None: it could).
    unbindable: watch::Receiver<Option<String>>,
    /// A reload's new VIP set, for the thread to apply.
    reloaded: watch::Sender<Option<VipSet>>,
    /// See [`VipHolder::fence_releases`].
    fence_releases: Arc<AtomicU64>,
    /// Rings the thread at the fence deadline (see `hold_until`).
    fence: Alarm,
    /// The alarm failed (a system call that cannot fail with a valid descriptor, but if it
    /// did): the thread then sleeps until each deadline it knows, as a tokio timer, and is
    /// woken for an earlier one.
    alarm_failed: Arc<AtomicBool>,
}

impl VipWorker {
    /// Starts the thread `raftvip-vips` (in the caller's network namespace: a new thread
    /// inherits it) with the background tasks of `vips`, until `cancel`. It compares the
    /// kernel with the wish every `reconcile_every` and whenever the watcher sees a change.
    pub fn spawn(
        vips: Vips,
        reconcile_every: Duration,
        cancel: CancellationToken,
    ) -> std::io::Result<Self> {
        let (desired, desired_rx) = watch::channel(Desired::default());
        let applied = Arc::new((Mutex::new(0), Condvar::new()));
        let (unbindable_tx, unbindable) = watch::channel(vips.unbindable());
        let (reloaded, reloaded_rx) = watch::channel(None);
        let fence_releases = Arc::new(AtomicU64::new(0));
        let fence = Alarm::new()?;
        let alarm_failed = Arc::new(AtomicBool::new(false));
        let (started, start) = std::sync::mpsc::sync_channel(1);
        let thread = Thread {
            fence: fence.clone(),
            alarm_failed: alarm_failed.clone(),
            vips: vips.clone(),
            desired: desired_rx,
            reconcile_every,
            applied: applied.clone(),
            unbindable: unbindable_tx,
            reloaded: reloaded_rx,
            fence_releases: fence_releases.clone(),
        };
        std::thread::Builder::new()
            .name("raftvip-vips".to_owned())
            .spawn(move || {
                // It releases the VIPs at the fence deadline: as punctual as the runtime thread.
                crate::realtime::raise_this_thread("VIP");
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        let _ = started.send(Err(e));
                        return;
                    }
                };
                runtime.block_on(async move {
                    let fence = match thread.fence.listen() {
                        Ok(fence) => fence,
                        Err(e) => {
                            let _ = started.send(Err(e));
                            return;
                        }
                    };
                    let _ = started.send(Ok(()));
                    thread.serve(fence, cancel).await;
                });
            })?;
        start
            .recv()
            .map_err(|_| std::io::Error::other("the VIP thread stopped while starting"))??;
        Ok(Self {
            vips,
            desired,
            applied,
            unbindable,
            reloaded,
            fence_releases,
            fence,
            alarm_failed,
        })
    }

    /// Waits (at most `limit`) until the VIP thread has carried out the last
    /// `set_held`; false on timeout. For the exit path, which must not return
    /// before the VIPs are gone.
    pub fn wait_applied(&self, limit: Duration) -> bool {
        let wanted = self.desired.borrow().generation;
        let (lock, changed) = &*self.applied;
        let done = crate::sync::lock(lock);
        let (done, _) = changed
            .wait_timeout_while(done, limit, |done| *done < wanted)
            .unwrap_or_else(|p| p.into_inner());
        *done >= wanted
    }
}

impl VipHolder for VipWorker {
    fn set_held(&self, hold: bool, reason: &str) {
        self.desired.send_modify(|d| {
            d.hold = hold;
            d.reason = reason.to_owned();
            d.fence = false;
            d.generation += 1;
        });
    }
    fn release_at_fence(&self, reason: &str) {
        self.desired.send_modify(|d| {
            d.hold = false;
            d.reason = reason.to_owned();
            d.fence = true;
            d.generation += 1;
        });
    }
    fn fence_releases(&self) -> u64 {
        self.fence_releases.load(Ordering::Relaxed)
    }
    /// A new deadline for the same hold (each quorum acknowledgement moves it, about a
    /// hundred times a second on a leader) sets the thread's fence alarm and is recorded
    /// without waking the thread: the alarm rings the thread once, at the deadline set last,
    /// so at idle a leader's VIP thread does not wake for its fence at all. The thread is
    /// woken only when the known deadline has passed (it may have released at it and must
    /// hold again) or a deadline comes or goes.
    ///
    /// The VIP layer's own copy of a deadline (what renewals and announcements obey) is set
    /// here at once, before the hold it bounds is asked for. No deadline (after a release)
    /// leaves the last one in place: clearing it while the release is on its way would let a
    /// renewal slip past the fence, and every hold comes with a deadline of its own.
    fn hold_until(&self, deadline: Option<Instant>) {
        if deadline.is_some() {
            self.vips.set_hold_until(deadline);
        }
        self.desired.send_if_modified(|d| {
            // Set under the channel's lock, which the thread's fence check also takes: the
            // alarm always rings for the deadline recorded last, and had the thread found the
            // known deadline passed and released, it did so before `known`, so it is woken.
            let mut failed = self.alarm_failed.load(Ordering::SeqCst);
            if d.until != deadline && !failed {
                if let Err(e) = self.fence.set(deadline) {
                    tracing::error!(
                        error = %e,
                        "cannot set the fence alarm: the VIP thread sleeps to each deadline"
                    );
                    self.alarm_failed.store(true, Ordering::SeqCst);
                    failed = true;
                }
            }
            let wake = match (d.until, deadline) {
                (Some(known), Some(new)) => Instant::now() >= known || failed && new != known,
                (known, new) => known != new,
            };
            d.until = deadline;
            wake
        });
    }
    fn status(&self) -> Vec<VipStatus> {
        self.vips.status()
    }
    fn wait_applied(&self, limit: Duration) -> bool {
        VipWorker::wait_applied(self, limit)
    }
    fn unbindable(&self) -> watch::Receiver<Option<String>> {
        self.unbindable.clone()
    }
    fn set_overlap(&self, overlap: VipOverlap) {
        self.desired.send_if_modified(|d| {
            let changed = d.overlap != overlap;
            d.overlap = overlap;
            changed
        });
    }
    fn reannounce(&self) {
        self.desired.send_modify(|d| d.reannounce += 1);
    }
    fn set_vips(&self, set: VipSet) {
        self.reloaded.send_replace(Some(set));
    }
}

/// The thread's side.
struct Thread {
    vips: Vips,
    fence: Alarm,
    alarm_failed: Arc<AtomicBool>,
    desired: watch::Receiver<Desired>,
    reconcile_every: Duration,
    applied: Arc<(Mutex<u64>, Condvar)>,
    unbindable: watch::Sender<Option<String>>,
    reloaded: watch::Receiver<Option<VipSet>>,
    fence_releases: Arc<AtomicU64>,
}

/// Why the VIP thread lets go at the deadline it was given: the old holder of a planned
/// overlap holds until the overlap's end, every other holder until its fence.
fn deadline_reason(overlap: VipOverlap) -> &'static str {
    if overlap == VipOverlap::Yielding {
        "planned overlap ended (VIP thread)"
    } else {
        "fence deadline passed (VIP thread)"
    }
}

impl Thread {
    async fn serve(mut self, fence_alarm: AlarmListener, cancel: CancellationToken) {
        // The announce loop, the lease renewals and the kernel watchers, which know the VIP
        // set: restarted with a new token when a reload changes the set.
        let mut background = cancel.child_token();
        self.vips.spawn_background(background.clone());
        // The fence runs here too, on this thread's own clock: a busy Raft thread cannot
        // delay the release past the deadline the supervisor last gave.
        let mut fenced_at: Option<Instant> = None;
        let mut reannounced = 0;
        let mut reconcile = crate::clock::every(self.reconcile_every);
        loop {
            let (hold, until) = {
                let d = self.desired.borrow();
                (d.hold, d.until)
            };
            let by_alarm = !self.alarm_failed.load(Ordering::SeqCst);
            let fence = async {
                match until.filter(|_| hold && fenced_at != until) {
                    Some(_) if by_alarm => fence_alarm.rung().await,
                    Some(at) => {
                        tokio::time::sleep_until(at.into()).await;
                        Ok(())
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                // A change of hold first: a release must not wait behind a reconcile.
                biased;
                changed = self.desired.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let desired = self.desired.borrow_and_update().clone();
                    if !self.carry_out(&desired, &mut reannounced) {
                        continue;
                    }
                    fenced_at = None;
                    self.check_links();
                }
                rung = fence => {
                    if let Err(e) = rung {
                        tracing::error!(
                            error = %e,
                            "the fence alarm failed: the VIP thread sleeps to each deadline"
                        );
                        self.alarm_failed.store(true, Ordering::SeqCst);
                        continue;
                    }
                    // Moved later after the alarm rang (see `hold_until`): not reached yet.
                    let until = self.desired.borrow().until;
                    if until.is_some_and(|at| Instant::now() < at) {
                        continue;
                    }
                    fenced_at = until;
                    let overlap = self.desired.borrow().overlap;
                    self.count_fence_release(overlap);
                    self.vips.set_held(false, deadline_reason(overlap));
                }
                // Someone deleted or added one of our VIPs, or events were lost.
                _ = self.vips.kernel_changed() => self.reconcile(),
                _ = reconcile.tick() => self.reconcile(),
                _ = self.vips.links_changed() => self.check_links(),
                changed = self.reloaded.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let Some(set) = self.reloaded.borrow_and_update().clone() else {
                        continue;
                    };
                    if self.vips.set_vips(&set.vips, &set.announce) {
                        background.cancel();
                        background = cancel.child_token();
                        self.vips.spawn_background(background.clone());
                        self.vips.reconcile();
                    }
                    if set.reconcile != self.reconcile_every {
                        self.reconcile_every = set.reconcile;
                        reconcile = crate::clock::every(set.reconcile);
                    }
                    // A new VIP on a missing or down interface makes this box ineligible now,
                    // not at the next link check.
                    self.check_links();
                }
                _ = cancel.cancelled() => return,
            }
        }
    }

    /// Carries out the supervisor's wish `desired` and reports it applied; false when a newer
    /// wish came meanwhile (it is carried out next instead). A hold whose deadline has passed
    /// is a release.
    fn carry_out(&self, desired: &Desired, reannounced: &mut u64) -> bool {
        let past = desired.until.is_some_and(|at| Instant::now() >= at);
        let reason = if desired.hold && past {
            deadline_reason(desired.overlap)
        } else {
            desired.reason.as_str()
        };
        let hold = desired.hold && !past;
        if desired.hold && past || !desired.hold && desired.fence {
            self.count_fence_release(desired.overlap);
        }
        // The overlap is set before a hold (a successor's probe is answered at once) and
        // after a release (ending a yield while held announces).
        if hold {
            self.vips.set_overlap(desired.overlap);
            // A successor stopped while its guard came up must not bind after all: the
            // release that came meanwhile is the wish to carry out.
            self.vips.wait_for_overlap_guard();
            if self.desired.has_changed().unwrap_or(false) {
                return false;
            }
        }
        self.vips.set_held(hold, reason);
        if !hold {
            self.vips.set_overlap(desired.overlap);
        }
        if desired.reannounce != *reannounced {
            *reannounced = desired.reannounce;
            self.vips.reannounce();
        }
        let (lock, changed) = &*self.applied;
        *crate::sync::lock(lock) = desired.generation;
        changed.notify_all();
        true
    }

    /// Counts a release at the fence if a VIP is held now (the VIP thread at its deadline and
    /// the supervisor's "quorum lost" may both release the same hold) and it is not the end
    /// of a planned overlap, which is no fence.
    fn count_fence_release(&self, overlap: VipOverlap) {
        if overlap != VipOverlap::Yielding && self.vips.status().iter().any(|vip| vip.held) {
            self.fence_releases.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Repairs the kernel's VIPs, then checks the links: a re-add may have been refused.
    fn reconcile(&self) {
        self.vips.reconcile();
        self.check_links();
    }

    /// Publishes whether every VIP's interface could take it now.
    fn check_links(&self) {
        let why = self.vips.unbindable();
        self.unbindable.send_if_modified(|old| {
            let changed = *old != why;
            *old = why;
            changed
        });
    }
}
