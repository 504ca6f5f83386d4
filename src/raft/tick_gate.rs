//! openraft's runtime with its tick held back on nodes that have no use for it.
//!
//! openraft 0.9 wakes every node's core each `heartbeat_interval × 1.5` (37 ms by default) for a
//! tick, whether the node needs one or not. Only two kinds of node do: a leader (the tick sends
//! its heartbeats, and steps it down once a membership without it is applied) and a node that
//! runs openraft's own election timer (a single-voter cluster). A follower's elections are the
//! supervisor's, so on a follower each tick is a wake-up that does nothing: ~27 a second, a
//! quarter of an idle follower's wake-ups (issue 12's idle footprint).
//!
//! openraft has a switch for its tick, but its tick task still wakes every period to read it.
//! So this runtime is tokio's ([`TokioRuntime`]) for everything but its clock
//! ([`super::lease_clock`]) and `sleep_until`, which in openraft 0.9.25 only the tick task
//! calls: after its deadline, that sleep also waits until some Raft node of this process wants
//! ticks ([`TickDemand`]). When a node starts to lead, its supervisor says so and the held tick
//! fires at once; openraft's first heartbeat goes out with the new leader's first append
//! anyway, so nothing waits for it.
//!
//! The demand is per process, not per node (the runtime's functions have no `self`): with
//! several nodes in one process, as in tests, a follower ticks while another node leads,
//! which costs wake-ups but changes nothing.
//!
//! The tick sleeps on a timerfd ([`DeadlineTimer`]) that its task keeps from one tick to the
//! next, not on tokio's wheel: a 37 ms tick often lies beyond the end of the wheel's current
//! 64 ms slot, and the wheel then wakes the thread once more at the slot's start, only to move
//! the timer down a level. The runtime's functions have no `self`, so the timer lives in a
//! task-local slot that [`TickGatedRuntime::spawn`] gives each task openraft starts.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use openraft::{AsyncRuntime, OptionalSend, TokioRuntime};
use tokio::sync::Notify;

use super::lease_clock::RaftInstant;
use crate::clock::DeadlineTimer;

type Tokio = TokioRuntime;

tokio::task_local! {
    /// The tick's timer, kept by the task that ticks (empty in openraft's other tasks).
    static TICK_TIMER: RefCell<Option<DeadlineTimer>>;
}

/// How many nodes want ticks, and a wake-up for the ticks held back while none did.
#[derive(Debug)]
struct Gate {
    wanted: AtomicUsize,
    /// Woken whenever `wanted` rises.
    opened: Notify,
}

/// The gate of this process's Raft nodes.
static GATE: Gate = Gate::new();

impl Gate {
    const fn new() -> Self {
        Self {
            wanted: AtomicUsize::new(0),
            opened: Notify::const_new(),
        }
    }

    fn add(&self) {
        self.wanted.fetch_add(1, Ordering::SeqCst);
        self.opened.notify_waiters();
    }

    fn remove(&self) {
        self.wanted.fetch_sub(1, Ordering::SeqCst);
    }

    /// Returns at once if some node wants ticks, else once one does.
    async fn opened(&self) {
        loop {
            let opened = self.opened.notified();
            tokio::pin!(opened);
            // Registered before the check, so a rise between the check and the wait wakes it.
            opened.as_mut().enable();
            if self.wanted.load(Ordering::SeqCst) > 0 {
                return;
            }
            opened.await;
        }
    }
}

/// Sleeps until `deadline` on the calling task's tick timer (a new one outside a task of
/// [`TickGatedRuntime::spawn`]'s, or if the last sleep was cut short).
async fn tick_sleep(deadline: tokio::time::Instant) {
    let kept = TICK_TIMER.try_with(|slot| slot.borrow_mut().take());
    let mut timer = kept.ok().flatten().unwrap_or_default();
    timer.until(Some(deadline.into_std())).await;
    let _ = TICK_TIMER.try_with(|slot| *slot.borrow_mut() = Some(timer));
}

/// One Raft node's wish for ticks. It starts wanting them (a node that has not yet reported
/// its role keeps openraft's own behaviour) and stops wanting them when dropped.
#[derive(Debug)]
pub struct TickDemand {
    gate: &'static Gate,
    wants: bool,
}

impl TickDemand {
    pub fn new() -> Self {
        Self::on(&GATE)
    }

    fn on(gate: &'static Gate) -> Self {
        gate.add();
        Self { gate, wants: true }
    }

    /// Whether this node needs openraft's tick: it leads, or runs openraft's election timer.
    pub fn set(&mut self, wants: bool) {
        if wants == self.wants {
            return;
        }
        self.wants = wants;
        if wants {
            self.gate.add();
        } else {
            self.gate.remove();
        }
    }
}

impl Default for TickDemand {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TickDemand {
    fn drop(&mut self) {
        self.set(false);
    }
}

/// [`TokioRuntime`], with `sleep_until` (openraft's tick) held while no node wants ticks, on
/// the clock of [`super::lease_clock`].
#[derive(Debug, Default, PartialEq, Eq)]
pub struct TickGatedRuntime;

impl AsyncRuntime for TickGatedRuntime {
    type JoinError = <Tokio as AsyncRuntime>::JoinError;
    type JoinHandle<T: OptionalSend + 'static> = <Tokio as AsyncRuntime>::JoinHandle<T>;
    type Sleep = Pin<Box<dyn Future<Output = ()> + Send + Sync>>;
    type Instant = RaftInstant;
    type TimeoutError = <Tokio as AsyncRuntime>::TimeoutError;
    type Timeout<R, T: Future<Output = R> + OptionalSend> = <Tokio as AsyncRuntime>::Timeout<R, T>;
    type ThreadLocalRng = <Tokio as AsyncRuntime>::ThreadLocalRng;
    type OneshotSender<T: OptionalSend> = <Tokio as AsyncRuntime>::OneshotSender<T>;
    type OneshotReceiverError = <Tokio as AsyncRuntime>::OneshotReceiverError;
    type OneshotReceiver<T: OptionalSend> = <Tokio as AsyncRuntime>::OneshotReceiver<T>;

    fn spawn<T>(future: T) -> Self::JoinHandle<T::Output>
    where
        T: Future + OptionalSend + 'static,
        T::Output: OptionalSend + 'static,
    {
        Tokio::spawn(TICK_TIMER.scope(RefCell::new(None), future))
    }

    fn sleep(duration: Duration) -> Self::Sleep {
        Box::pin(tokio::time::sleep(duration))
    }

    fn sleep_until(deadline: Self::Instant) -> Self::Sleep {
        let deadline = deadline.deadline();
        Box::pin(async move {
            tick_sleep(deadline).await;
            GATE.opened().await;
        })
    }

    fn timeout<R, F: Future<Output = R> + OptionalSend>(
        duration: Duration,
        future: F,
    ) -> Self::Timeout<R, F> {
        Tokio::timeout(duration, future)
    }

    fn timeout_at<R, F: Future<Output = R> + OptionalSend>(
        deadline: Self::Instant,
        future: F,
    ) -> Self::Timeout<R, F> {
        Tokio::timeout_at(deadline.deadline(), future)
    }

    fn is_panic(join_error: &Self::JoinError) -> bool {
        Tokio::is_panic(join_error)
    }

    fn thread_rng() -> Self::ThreadLocalRng {
        Tokio::thread_rng()
    }

    fn oneshot<T>() -> (Self::OneshotSender<T>, Self::OneshotReceiver<T>)
    where
        T: OptionalSend,
    {
        Tokio::oneshot()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate() -> &'static Gate {
        Box::leak(Box::new(Gate::new()))
    }

    /// A tick of `gate` on tokio's (paused) clock: the gate's part of the runtime's sleep.
    async fn tick(gate: &Gate, deadline: tokio::time::Instant) {
        tokio::time::sleep_until(deadline).await;
        gate.opened().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_held_tick_fires_once_a_node_wants_ticks_and_not_before() {
        let gate = gate();
        let mut demand = TickDemand::on(gate);
        demand.set(false);
        let start = tokio::time::Instant::now();
        let tick = tokio::spawn(tick(gate, start + Duration::from_millis(30)));
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(!tick.is_finished(), "a tick nobody wants must wait");
        demand.set(true);
        tokio::time::timeout(Duration::from_millis(1), tick)
            .await
            .expect("the held tick fires at once when a node wants ticks")
            .unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_tick_fires_at_its_deadline_while_any_node_wants_ticks() {
        let gate = gate();
        let (mut leader, _follower) = (TickDemand::on(gate), TickDemand::on(gate));
        let start = tokio::time::Instant::now();
        tick(gate, start + Duration::from_millis(30)).await;
        assert_eq!(start.elapsed(), Duration::from_millis(30));
        leader.set(false);
        tick(gate, start + Duration::from_millis(60)).await;
        assert_eq!(start.elapsed(), Duration::from_millis(60));
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_demand_no_longer_counts() {
        let gate = gate();
        drop(TickDemand::on(gate));
        let tick = tokio::spawn(tick(gate, tokio::time::Instant::now()));
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!tick.is_finished());
    }

    /// openraft's tick, as its task runs it: one wake-up per tick, though a 37 ms tick often
    /// ends in the next 64 ms slot of tokio's wheel (which wakes at that slot's start too).
    #[test]
    fn a_tick_task_wakes_once_per_tick() {
        use crate::clock::test_support::{on_a_runtime_of_its_own, sleeps_of_this_thread};
        on_a_runtime_of_its_own(async {
            let _demand = TickDemand::new();
            let ticks = TickGatedRuntime::spawn(async {
                let before = sleeps_of_this_thread();
                for _ in 0..10 {
                    let at = <RaftInstant as openraft::Instant>::now() + Duration::from_millis(37);
                    TickGatedRuntime::sleep_until(at).await;
                }
                sleeps_of_this_thread() - before
            });
            let sleeps = ticks.await.unwrap();
            assert!(sleeps <= 12, "10 ticks slept {sleeps} times");
        });
    }
}
