//! Rate-limited logging of rejected requests, one line per source address per period.
//!
//! The source address is chosen by whoever sends the request, so the table of "when did we
//! last log this source" is bounded twice: entries older than the period are pruned as new
//! ones arrive (a quiet source costs nothing after one period, so the size follows the rate of
//! new sources × the period, not the uptime), and a hard cap turns a flood of fresh addresses
//! into one summary line per period instead of one entry each.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Sources remembered at most. A spoofed-address flood fills it within one period; after
/// that, rejected sources are summarised instead of logged one by one.
pub const MAX_SOURCES: usize = 1024;

/// What to do about one rejected request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogVerdict {
    /// First rejection from this source in the period: log it.
    Log,
    /// Too many sources this period: log one summary line for all of them.
    Summarise,
    /// Already logged recently.
    Quiet,
}

pub struct RejectLog {
    period: Duration,
    /// When each source was last logged, and the same in time order for pruning.
    last: HashMap<IpAddr, Instant>,
    order: VecDeque<(Instant, IpAddr)>,
    /// When the last summary line was written.
    last_summary: Option<Instant>,
}

impl RejectLog {
    pub fn new(period: Duration) -> Self {
        Self {
            period,
            last: HashMap::new(),
            order: VecDeque::new(),
            last_summary: None,
        }
    }

    /// Sources remembered at `now` (expired ones are pruned first).
    pub fn len_at(&mut self, now: Instant) -> usize {
        self.prune(now);
        self.last.len()
    }

    /// Records a rejection from `source` at `now` and says whether to log it.
    pub fn note(&mut self, source: IpAddr, now: Instant) -> LogVerdict {
        self.prune(now);
        if self.last.contains_key(&source) {
            return LogVerdict::Quiet;
        }
        if self.last.len() >= MAX_SOURCES {
            if self
                .last_summary
                .is_none_or(|at| now.saturating_duration_since(at) >= self.period)
            {
                self.last_summary = Some(now);
                return LogVerdict::Summarise;
            }
            return LogVerdict::Quiet;
        }
        self.last.insert(source, now);
        self.order.push_back((now, source));
        LogVerdict::Log
    }

    fn prune(&mut self, now: Instant) {
        while let Some(&(at, source)) = self.order.front() {
            if now.saturating_duration_since(at) < self.period {
                break;
            }
            self.order.pop_front();
            self.last.remove(&source);
        }
        if self.last.capacity() > 64 && self.last.capacity() > 4 * self.last.len() {
            self.last.shrink_to_fit();
            self.order.shrink_to_fit();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn ip(n: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(n))
    }

    #[test]
    fn logs_each_source_once_per_period() {
        let mut log = RejectLog::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(log.note(ip(1), t0), LogVerdict::Log);
        assert_eq!(
            log.note(ip(1), t0 + Duration::from_secs(5)),
            LogVerdict::Quiet
        );
        assert_eq!(
            log.note(ip(2), t0 + Duration::from_secs(5)),
            LogVerdict::Log
        );
        assert_eq!(
            log.note(ip(1), t0 + Duration::from_secs(10)),
            LogVerdict::Log
        );
    }

    /// Issue 7: 100,000 distinct sources leave at most MAX_SOURCES entries, and are summarised.
    #[test]
    fn a_flood_of_distinct_sources_stays_bounded() {
        let mut log = RejectLog::new(Duration::from_secs(10));
        let t0 = Instant::now();
        let mut summaries = 0;
        for n in 0..100_000 {
            if log.note(ip(n), t0 + Duration::from_micros(u64::from(n))) == LogVerdict::Summarise {
                summaries += 1;
            }
            assert!(log.last.len() <= MAX_SOURCES);
        }
        assert_eq!(log.last.len(), MAX_SOURCES);
        assert_eq!(summaries, 1, "one summary line per period");
    }

    /// Issue 14: at a steady rate of new sources the table holds rate × period entries, however
    /// long it runs, and shrinks back when the rate drops.
    #[test]
    fn size_follows_rate_times_period_not_uptime() {
        let period = Duration::from_secs(10);
        let mut log = RejectLog::new(period);
        let t0 = Instant::now();
        // Two new sources a second for a simulated day.
        for n in 0..(2 * 86_400) {
            let now = t0 + Duration::from_millis(500 * u64::from(n));
            log.note(ip(n), now);
            assert!(
                log.last.len() <= 20,
                "{} entries after {n} sources",
                log.last.len()
            );
        }
        let later = t0 + Duration::from_secs(86_400 + 60);
        assert_eq!(
            log.len_at(later),
            0,
            "a quiet log empties without new rejections"
        );
        log.note(ip(u32::MAX), later);
        assert_eq!(log.len_at(later), 1);
        assert!(log.last.capacity() <= 64);
    }
}
