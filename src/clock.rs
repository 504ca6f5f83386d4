//! Wall-clock time as milliseconds since the Unix epoch: the one conversion every module that
//! shows or signs a time uses.
//!
//! Monotonic `Instant`s drive every timer; wall-clock milliseconds appear only where a time
//! leaves the process (request signatures checked by another box, `held_since_unix_ms` and
//! check ages in the status document), because an `Instant` means nothing elsewhere.
//!
//! Also the periodic timer every loop uses ([`every`]), so all of them treat a stall alike and
//! none costs more wake-ups than its ticks.

use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// `time` in ms since the Unix epoch: 0 for a clock set before 1970, `u64::MAX` past the
/// year 584 million (neither panics: a wrong clock must not stop a failover daemon).
pub fn unix_ms(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// [`unix_ms`] of now.
pub fn now_unix_ms() -> u64 {
    unix_ms(SystemTime::now())
}

/// A periodic timer whose first tick is at once and which, after a stall of a period or more,
/// waits a whole period again instead of firing the missed ticks in a burst (a tick taken
/// less than a period late keeps the schedule).
pub fn every(period: Duration) -> Every {
    let period = period.clamp(Duration::from_millis(1), LONGEST_PERIOD);
    let ticks = match kernel_timer(period) {
        Ok(timer) => Ticks::Kernel(timer),
        Err(e) => {
            tracing::warn!(
                error = %e,
                period_ms = period.as_millis() as u64,
                "no timerfd for a periodic timer: using tokio's, one more wake-up per period"
            );
            Ticks::Wheel(wheel_timer(period))
        }
    };
    Every {
        ticks,
        period,
        first: true,
    }
}

/// Longer periods are taken as this (a timerfd takes any, but one that never fires is what
/// such a caller means).
const LONGEST_PERIOD: Duration = Duration::from_secs(365 * 24 * 3600);

/// The timer of [`every`]. Each one runs on a timerfd of its own, so the kernel wakes the
/// thread exactly at each tick. tokio's timers cost a wake-up more at these periods: its
/// timer wheel also wakes the thread at the start of the 64 ms slot that holds a timer
/// further ahead than that, only to move the timer down a level, so a 100 ms health check
/// cost two wake-ups a check, and so did each of the VIP thread's checks. Where no
/// descriptor can be had (the process at its descriptor limit), it falls back to tokio's
/// interval and its extra wake-up.
pub struct Every {
    ticks: Ticks,
    period: Duration,
    /// The first tick is due at once.
    first: bool,
}

enum Ticks {
    Kernel(AlarmListener),
    Wheel(tokio::time::Interval),
}

/// A timerfd on the monotonic clock (`Instant`'s), as tokio's reactor takes it (nix's type has
/// no `AsRawFd`).
struct Timer(TimerFd);

impl Timer {
    fn new() -> std::io::Result<Self> {
        let flags = TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC;
        Ok(Self(TimerFd::new(ClockId::CLOCK_MONOTONIC, flags)?))
    }

    fn set(&self, expiration: Expiration) -> std::io::Result<()> {
        Ok(self.0.set(expiration, TimerSetTimeFlags::empty())?)
    }

    fn disarm(&self) -> std::io::Result<()> {
        Ok(self.0.unset()?)
    }
}

impl AsRawFd for Timer {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

impl Every {
    /// Completes at the next tick. Cancel-safe: a tick not taken stays due.
    pub async fn tick(&mut self) {
        if std::mem::take(&mut self.first) {
            return;
        }
        let timer = match &mut self.ticks {
            Ticks::Wheel(interval) => {
                interval.tick().await;
                return;
            }
            Ticks::Kernel(timer) => timer,
        };
        match timer.expirations().await {
            // Ticks were missed (a stall): the next one a whole period from now.
            Ok(missed) if missed > 1 => self.reset(),
            Ok(_) => {}
            Err(e) => self.fall_back(&e),
        }
    }

    /// The next tick a whole period from now.
    pub fn reset(&mut self) {
        self.first = false;
        match &mut self.ticks {
            Ticks::Wheel(interval) => interval.reset(),
            Ticks::Kernel(timer) => {
                if let Err(e) = arm(timer.timer(), self.period) {
                    self.fall_back(&e);
                }
            }
        }
    }

    /// Goes on with tokio's interval after the timerfd failed; its next tick a period away.
    fn fall_back(&mut self, e: &std::io::Error) {
        tracing::warn!(error = %e, "a periodic timer's timerfd failed: using tokio's");
        self.ticks = Ticks::Wheel(wheel_timer(self.period));
    }
}

/// A one-shot alarm that any thread may set and one task waits for, on a timerfd: setting it
/// (a system call) wakes no one, and it rings once, at the deadline last set. For a deadline
/// that one thread moves often and another must keep (the VIP thread's fence): the waiting
/// thread wakes only when the deadline is really reached, not at each deadline it knew of.
#[derive(Clone)]
pub struct Alarm(Arc<Timer>);

impl Alarm {
    pub fn new() -> std::io::Result<Self> {
        Ok(Self(Arc::new(Timer::new()?)))
    }

    /// Rings at `deadline` (at once if it has passed), or never (None), instead of at the
    /// deadline set before.
    pub fn set(&self, deadline: Option<std::time::Instant>) -> std::io::Result<()> {
        let Some(at) = deadline else {
            return self.0.disarm();
        };
        // A zero value disarms a timerfd: a deadline already passed rings after 1 ns.
        let wait = at
            .saturating_duration_since(std::time::Instant::now())
            .max(Duration::from_nanos(1));
        let wait = TimeSpec::from_duration(wait.min(LONGEST_PERIOD));
        self.0.set(Expiration::OneShot(wait))
    }

    /// The waiting side, on the current runtime's reactor.
    pub fn listen(&self) -> std::io::Result<AlarmListener> {
        AlarmListener::register(self.0.clone())
    }
}

/// A sleep to a deadline, on a timerfd of its own, for a thread that sleeps to one again and
/// again (a leader's heartbeat tick, reached each time; its fence, moved with each
/// acknowledgement): a move is one system call and wakes no one, and only the deadline set
/// last rings. tokio's wheel would also wake the thread at the start of the 64 ms slot such
/// a deadline lies in, when no other event comes first (see [`Every`]); a leader's tick and
/// fence did ~14 times a second. Falls back to tokio's sleep where no timerfd can be had.
pub struct DeadlineTimer {
    kernel: Option<(Alarm, AlarmListener)>,
    /// The deadline the alarm is set to; None once it rang (or never set).
    armed: Option<std::time::Instant>,
}

impl DeadlineTimer {
    /// On the current runtime's reactor.
    pub fn new() -> Self {
        let kernel = Alarm::new().and_then(|alarm| {
            let listener = alarm.listen()?;
            Ok((alarm, listener))
        });
        let kernel = match kernel {
            Ok(kernel) => Some(kernel),
            Err(e) => {
                tracing::warn!(error = %e, "no timerfd for a deadline: using tokio's timer, one more wake-up per 64 ms");
                None
            }
        };
        Self {
            kernel,
            armed: None,
        }
    }

    /// Completes at `deadline`, never for None. Cancel-safe: the next call with the same
    /// deadline waits for the same ring.
    pub async fn until(&mut self, deadline: Option<std::time::Instant>) {
        if let Err(e) = self.arm(deadline) {
            self.fall_back(&e);
        }
        let Some(at) = deadline else {
            return std::future::pending().await;
        };
        loop {
            let Some((_, listener)) = &self.kernel else {
                return tokio::time::sleep_until(at.into()).await;
            };
            let rung = listener.rung().await;
            // Rung early: at a deadline set before, or within the slack of this one.
            let early = rung.as_ref().is_ok_and(|()| std::time::Instant::now() < at);
            let rearmed = match rung {
                Ok(()) if early => self.set(Some(at)),
                Ok(()) => {
                    self.armed = None;
                    return;
                }
                Err(e) => Err(e),
            };
            if let Err(e) = rearmed {
                self.fall_back(&e);
                return tokio::time::sleep_until(at.into()).await;
            }
        }
    }

    /// Sets the alarm to `deadline` unless it is set at most [`DEADLINE_SLACK`] earlier:
    /// then it rings early, and [`Self::until`] sets it again. A leader's fence moves a few
    /// microseconds later with each follower's answer; this saves the system call for those.
    fn arm(&mut self, deadline: Option<std::time::Instant>) -> std::io::Result<()> {
        let slack = |armed: std::time::Instant, at: std::time::Instant| {
            armed <= at && at - armed <= DEADLINE_SLACK
        };
        match (self.armed, deadline) {
            (Some(armed), Some(at)) if slack(armed, at) => Ok(()),
            (armed, deadline) if armed == deadline => Ok(()),
            _ => self.set(deadline),
        }
    }

    fn set(&mut self, deadline: Option<std::time::Instant>) -> std::io::Result<()> {
        if let Some((alarm, _)) = &self.kernel {
            alarm.set(deadline)?;
            self.armed = deadline;
        }
        Ok(())
    }

    fn fall_back(&mut self, e: &std::io::Error) {
        tracing::warn!(error = %e, "a deadline's timerfd failed: using tokio's timer");
        self.kernel = None;
    }
}

/// How much later than the alarm a [`DeadlineTimer`]'s deadline may move without a new
/// setting.
const DEADLINE_SLACK: Duration = Duration::from_millis(1);

impl Default for DeadlineTimer {
    fn default() -> Self {
        Self::new()
    }
}

/// Where a timerfd is waited for (an [`Alarm`]'s, or an [`every`] timer's), on the reactor of
/// the runtime it was registered on.
pub struct AlarmListener(AsyncFd<Arc<Timer>>);

impl AlarmListener {
    fn register(timer: Arc<Timer>) -> std::io::Result<Self> {
        // SAFETY: the Timer owns its descriptor for as long as any Arc of it lives, this
        // one included.
        unsafe { AsyncFd::register_with_interest(timer, Interest::READABLE) }
            .map(Self)
            .map_err(|e| e.into_parts().1)
    }

    fn timer(&self) -> &Timer {
        self.0.get_ref()
    }

    /// Completes when the alarm rings: at its deadline, or later if the deadline was set
    /// again meanwhile. A ring may also be one whose deadline was moved after it rang, so
    /// the caller checks the deadline it keeps. Cancel-safe: a ring not taken stays due.
    pub async fn rung(&self) -> std::io::Result<()> {
        self.expirations().await.map(drop)
    }

    /// Waits until the timer has expired since the last read, and reads how many times.
    /// Cancel-safe: nothing is read before the wait ends.
    async fn expirations(&self) -> std::io::Result<u64> {
        loop {
            let mut ready = self.0.readable().await?;
            let read = read_expirations(self.timer());
            // Read or not, the timer is not readable again before its next expiry, which the
            // reactor sees as new readiness: no read that would only answer EAGAIN.
            ready.clear_ready();
            match read {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                read => return read,
            }
        }
    }
}

fn kernel_timer(period: Duration) -> std::io::Result<AlarmListener> {
    let timer = Arc::new(Timer::new()?);
    arm(&timer, period)?;
    AlarmListener::register(timer)
}

/// Ticks every `period` from now on (replacing any earlier schedule, ticks due included).
fn arm(timer: &Timer, period: Duration) -> std::io::Result<()> {
    timer.set(Expiration::Interval(TimeSpec::from_duration(period)))?;
    // Expirations of the schedule before are no ticks of this one: drop any not yet read.
    match read_expirations(timer) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(()),
        Err(e) => Err(e),
    }
}

/// Reads how many ticks passed since the last read (WouldBlock: none).
fn read_expirations(timer: &Timer) -> std::io::Result<u64> {
    let mut count = [0u8; 8];
    nix::unistd::read(&timer.0, &mut count)?;
    Ok(u64::from_ne_bytes(count))
}

fn wheel_timer(period: Duration) -> tokio::time::Interval {
    let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    interval
}

/// For tests that count what a timer costs in wake-ups.
#[cfg(test)]
pub(crate) mod test_support {
    /// Voluntary context switches of the calling thread so far: each is a sleep, so at idle
    /// each is a wake-up.
    pub fn sleeps_of_this_thread() -> u64 {
        let status = std::fs::read_to_string("/proc/thread-self/status").expect("status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
            .and_then(|v| v.trim().parse().ok())
            .expect("voluntary_ctxt_switches")
    }

    /// Runs `f` on a current-thread runtime of its own (as the daemon's), on this thread.
    pub fn on_a_runtime_of_its_own<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(f)
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::{on_a_runtime_of_its_own, sleeps_of_this_thread};
    use super::*;

    #[test]
    fn clocks_before_the_epoch_or_far_ahead_do_not_panic() {
        assert_eq!(unix_ms(UNIX_EPOCH + Duration::from_millis(1_234)), 1_234);
        assert_eq!(unix_ms(UNIX_EPOCH - Duration::from_secs(1)), 0);
        assert!(now_unix_ms() > 1_600_000_000_000, "after 2020");
    }

    #[test]
    fn ticks_at_once_then_every_period() {
        on_a_runtime_of_its_own(async {
            let start = tokio::time::Instant::now();
            let mut timer = every(Duration::from_millis(50));
            timer.tick().await;
            assert!(
                start.elapsed() < Duration::from_millis(40),
                "first tick at once"
            );
            for _ in 0..5 {
                timer.tick().await;
            }
            let took = start.elapsed();
            assert!(
                took >= Duration::from_millis(250),
                "5 periods of 50 ms in {took:?}"
            );
            assert!(
                took < Duration::from_secs(1),
                "5 periods of 50 ms in {took:?}"
            );
        });
    }

    #[test]
    fn after_a_stall_one_tick_then_a_whole_period() {
        on_a_runtime_of_its_own(async {
            let mut timer = every(Duration::from_millis(100));
            timer.tick().await;
            std::thread::sleep(Duration::from_millis(350));
            let late = tokio::time::Instant::now();
            timer.tick().await;
            assert!(
                late.elapsed() < Duration::from_millis(50),
                "the missed tick at once"
            );
            let next = tokio::time::Instant::now();
            timer.tick().await;
            let gap = next.elapsed();
            assert!(
                gap >= Duration::from_millis(95),
                "no burst: the next tick after {gap:?}"
            );
        });
    }

    #[test]
    fn reset_puts_the_next_tick_a_whole_period_away() {
        on_a_runtime_of_its_own(async {
            let mut timer = every(Duration::from_millis(100));
            timer.tick().await;
            tokio::time::sleep(Duration::from_millis(60)).await;
            let reset = tokio::time::Instant::now();
            timer.reset();
            timer.tick().await;
            let gap = reset.elapsed();
            assert!(
                gap >= Duration::from_millis(95),
                "next tick {gap:?} after the reset"
            );
        });
    }

    /// The reason for the timerfd: tokio's wheel wakes its thread twice per 100 ms tick (once
    /// at the start of the tick's 64 ms slot, once at the tick).
    #[test]
    fn a_tick_costs_one_wake_up() {
        on_a_runtime_of_its_own(async {
            let mut timer = every(Duration::from_millis(100));
            timer.tick().await;
            let before = sleeps_of_this_thread();
            for _ in 0..10 {
                timer.tick().await;
            }
            let sleeps = sleeps_of_this_thread() - before;
            assert!(sleeps <= 12, "10 ticks slept {sleeps} times");
        });
    }

    #[test]
    fn an_alarm_rings_once_at_the_deadline_set_last_by_any_thread() {
        on_a_runtime_of_its_own(async {
            let alarm = Alarm::new().expect("alarm");
            let listener = alarm.listen().expect("listener");
            let start = std::time::Instant::now();
            alarm.set(Some(start + Duration::from_millis(30))).unwrap();
            let mover = alarm.clone();
            // Another thread moves it later before it rings, and again.
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(10));
                mover.set(Some(start + Duration::from_millis(60))).unwrap();
                std::thread::sleep(Duration::from_millis(10));
                mover.set(Some(start + Duration::from_millis(90))).unwrap();
            })
            .join()
            .unwrap();
            listener.rung().await.unwrap();
            let rang = start.elapsed();
            assert!(rang >= Duration::from_millis(90), "rang after {rang:?}");
            assert!(rang < Duration::from_millis(200), "rang after {rang:?}");
            // Unset: no ring; a passed deadline: at once.
            alarm.set(None).unwrap();
            let quiet = tokio::time::timeout(Duration::from_millis(50), listener.rung()).await;
            assert!(quiet.is_err(), "an unset alarm rang");
            alarm.set(Some(std::time::Instant::now())).unwrap();
            tokio::time::timeout(Duration::from_millis(50), listener.rung())
                .await
                .expect("a passed deadline rings at once")
                .unwrap();
        });
    }

    /// Each deadline reached costs one wake-up, whatever 64 ms slots it spans; a deadline
    /// moved before it is reached rings at the new one only; none never rings.
    #[test]
    fn a_deadline_timer_rings_at_its_last_deadline_and_wakes_only_then() {
        on_a_runtime_of_its_own(async {
            let mut timer = DeadlineTimer::new();
            let start = std::time::Instant::now();
            let early = start + Duration::from_millis(40);
            let cut = tokio::time::timeout(Duration::from_millis(10), timer.until(Some(early)));
            assert!(cut.await.is_err(), "rang before its deadline");
            timer.until(Some(start + Duration::from_millis(120))).await;
            let rang = start.elapsed();
            assert!(rang >= Duration::from_millis(120), "rang after {rang:?}");
            assert!(rang < Duration::from_millis(300), "rang after {rang:?}");

            let never = tokio::time::timeout(Duration::from_millis(50), timer.until(None));
            assert!(never.await.is_err(), "no deadline rang");

            let before = sleeps_of_this_thread();
            for _ in 0..10 {
                let at = std::time::Instant::now() + Duration::from_millis(90);
                timer.until(Some(at)).await;
            }
            let sleeps = sleeps_of_this_thread() - before;
            assert!(sleeps <= 12, "10 deadlines slept {sleeps} times");
        });
    }
}
