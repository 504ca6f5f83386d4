//! Rate-limited logging: a message that can repeat many times a second (a refusal, an odd
//! row in every check) is logged once per period, with the count of those held back.

use std::time::Duration;

/// Lets one event through per period and counts the ones it holds back. Pure: the caller
/// passes the time.
#[derive(Debug)]
pub struct LogLimit {
    every: Duration,
    last: Option<std::time::Instant>,
    suppressed: u64,
}

impl LogLimit {
    pub fn new(every: Duration) -> Self {
        Self {
            every,
            last: None,
            suppressed: 0,
        }
    }

    /// `Some(events held back since the last one let through)` if this one may be logged.
    pub fn allow(&mut self, now: std::time::Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.saturating_duration_since(last) < self.every => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_limit_lets_one_through_per_period_and_counts_the_rest() {
        let mut limit = LogLimit::new(Duration::from_secs(60));
        let t = std::time::Instant::now();
        let s = Duration::from_secs;
        assert_eq!(limit.allow(t), Some(0));
        assert_eq!(limit.allow(t + s(1)), None);
        assert_eq!(limit.allow(t + s(59)), None);
        assert_eq!(limit.allow(t + s(60)), Some(2));
        assert_eq!(limit.allow(t + s(61)), None);
        assert_eq!(limit.allow(t + s(200)), Some(1));
    }
}
