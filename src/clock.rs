//! Wall-clock time as milliseconds since the Unix epoch: the one conversion every module that
//! shows or signs a time uses.
//!
//! Monotonic `Instant`s drive every timer; wall-clock milliseconds appear only where a time
//! leaves the process (request signatures checked by another box, `held_since_unix_ms` and
//! check ages in the status document), because an `Instant` means nothing elsewhere.
//!
//! Also the periodic timer every loop uses ([`every`]), so all of them treat a stall alike.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

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

/// A periodic timer whose first tick is at once and which, after a stall, waits a whole
/// period again instead of firing the missed ticks in a burst.
pub fn every(period: Duration) -> tokio::time::Interval {
    let mut interval = tokio::time::interval(period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    interval
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clocks_before_the_epoch_or_far_ahead_do_not_panic() {
        assert_eq!(unix_ms(UNIX_EPOCH + Duration::from_millis(1_234)), 1_234);
        assert_eq!(unix_ms(UNIX_EPOCH - Duration::from_secs(1)), 0);
        assert!(now_unix_ms() > 1_600_000_000_000, "after 2020");
    }
}
