//! The standard Prometheus process metrics, read from `/proc/self`.
//!
//! `process_resident_memory_bytes`, `process_cpu_seconds_total`, `process_open_fds` and
//! `process_start_time_seconds` let an operator see growth (memory, descriptors) long before
//! it matters. prometheus-client, which renders our metrics, has no process collector; the
//! `prometheus` crate's one would pull in a second metrics stack and `procfs`, the crate it
//! uses, a large dependency for four numbers. Reading three small /proc files is a few lines,
//! costs microseconds per scrape, and keeps one metrics stack. Linux only, like raftvip.

use std::path::Path;

/// One reading of the process's resources; None where /proc could not be read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProcessSample {
    pub resident_memory_bytes: Option<u64>,
    pub cpu_seconds: Option<f64>,
    pub open_fds: Option<u64>,
    pub start_time_seconds: Option<f64>,
}

/// Reads the current process's sample from `/proc`.
pub fn sample() -> ProcessSample {
    // SAFETY: sysconf only reads a configuration value.
    let (ticks, page) = unsafe {
        (
            libc::sysconf(libc::_SC_CLK_TCK),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    let stat = std::fs::read_to_string("/proc/self/stat").ok();
    let boot = std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|text| boot_time(&text));
    let mut s = stat
        .as_deref()
        .map(|text| parse_stat(text, ticks as f64, page as u64, boot))
        .unwrap_or_default();
    s.open_fds = count_entries(Path::new("/proc/self/fd"));
    s
}

/// Fields of `/proc/self/stat` (see proc(5)): utime 14, stime 15, starttime 22, rss 24,
/// counted from 1, after the parenthesised command name, which may itself hold spaces.
fn parse_stat(
    text: &str,
    ticks_per_second: f64,
    page_size: u64,
    boot: Option<u64>,
) -> ProcessSample {
    let Some(after_name) = text.rfind(')').map(|i| &text[i + 1..]) else {
        return ProcessSample::default();
    };
    // after_name starts with field 3 (state).
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
    let valid_ticks = ticks_per_second > 0.0;
    ProcessSample {
        resident_memory_bytes: field(24).map(|pages| pages.saturating_mul(page_size)),
        cpu_seconds: match (field(14), field(15)) {
            (Some(user), Some(system)) if valid_ticks => {
                Some((user + system) as f64 / ticks_per_second)
            }
            _ => None,
        },
        open_fds: None,
        start_time_seconds: match (field(22), boot) {
            (Some(start), Some(boot)) if valid_ticks => {
                Some(boot as f64 + start as f64 / ticks_per_second)
            }
            _ => None,
        },
    }
}

/// `btime` of /proc/stat: boot time in seconds since the epoch.
fn boot_time(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

fn count_entries(dir: &Path) -> Option<u64> {
    Some(std::fs::read_dir(dir).ok()?.count() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_stat_line_whose_name_holds_spaces_and_parens() {
        // Captured from `cat /proc/self/stat`, name changed to "(raft vip) x)".
        let line = "4242 (raft vip) x) S 1 4242 4242 0 -1 4194560 1234 0 0 0 250 150 0 0 20 0 \
                    3 0 5000 123456789 3300 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 \
                    0 0 0 0 0";
        let s = parse_stat(line, 100.0, 4096, Some(1_700_000_000));
        assert_eq!(s.resident_memory_bytes, Some(3300 * 4096));
        assert_eq!(s.cpu_seconds, Some(4.0));
        assert_eq!(s.start_time_seconds, Some(1_700_000_050.0));
    }

    #[test]
    fn garbage_yields_nothing_and_never_panics() {
        assert_eq!(parse_stat("", 100.0, 4096, None), ProcessSample::default());
        assert_eq!(
            parse_stat("1 (x) S", 100.0, 4096, None),
            ProcessSample::default()
        );
        assert_eq!(boot_time("cpu 1 2 3\n"), None);
        assert_eq!(boot_time("btime 1700000000\n"), Some(1_700_000_000));
    }

    #[test]
    fn this_process_has_memory_descriptors_and_a_start() {
        let s = sample();
        assert!(s.resident_memory_bytes.unwrap() > 1 << 20);
        assert!(s.open_fds.unwrap() >= 3);
        assert!(s.cpu_seconds.unwrap() >= 0.0);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let start = s.start_time_seconds.unwrap();
        assert!(
            start <= now + 1.0 && start > now - 86_400.0,
            "{start} vs {now}"
        );
    }
}
