//! Real-time scheduling and locked memory for the threads that keep the lease (`[process]`).
//!
//! The fence only holds if the leader hears its quorum's acknowledgements in time and the
//! followers answer its heartbeats in time. With both cores saturated by other processes,
//! the normal scheduler made the daemon's threads wait their turn: acknowledgements arrived
//! 86–130 ms late against an 80 ms fence, so leaders released their VIPs and lost leadership
//! (issue 13), and box loss took a median 382 ms instead of ~200 (issue 12). keepalived keeps
//! its timing under the same load because its VRRP process runs in a real-time class
//! (`vrrp_rt_priority`) with its memory locked (`vrrp_no_swap`); this module does the same for
//! raftvip:
//!
//! - The two threads whose latency the lease depends on run `SCHED_RR` at a modest priority:
//!   the runtime thread (Raft, heartbeats sent and answered, the peer server and client, the
//!   supervisor and its fence) and the VIP thread (which releases the VIPs at the fence
//!   deadline by itself, and binds and announces them). They sleep almost all the time, so
//!   they cost other processes next to nothing.
//! - The blocking pool (redb: saving the vote, appending the log) runs one priority lower: an
//!   election and a new leader's first commit wait for it, and at the normal class it waited
//!   behind the busy processes; one step lower, it can never delay the threads above.
//! - `SCHED_RESET_ON_FORK`: every other thread or process they start begins in the normal
//!   class, the hook scripts above all.
//! - The kernel's real-time throttling (`kernel.sched_rt_runtime_us`, 95 % of each second by
//!   default) is the safety net against a real-time thread that spins: the rest of the box
//!   keeps at least 5 % of each core. The start-up log warns when it is switched off.
//! - `mlockall(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT)`: no page the daemon has touched is
//!   ever swapped out or dropped, so a heartbeat never waits for a disk read under memory
//!   pressure. `MCL_ONFAULT` locks pages as they are first touched rather than faulting in
//!   every mapping at once: the untouched parts of thread stacks, of the binary and of
//!   malloc's reservations stay out of memory (the resident size does not grow).
//!
//! Neither is essential to correctness, so a box that does not allow them (no `CAP_SYS_NICE`
//! or `LimitRTPRIO=`, no `CAP_IPC_LOCK` or `LimitMEMLOCK=infinity`, a container, a cgroup
//! without a real-time budget) runs on with a warning that says what is missing and how to
//! grant it; status and metrics show what is in effect. nix has no binding for
//! `SCHED_RESET_ON_FORK` or `MCL_ONFAULT`, so this calls libc directly.

use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use crate::config::Problem;

/// Default real-time priority: above the normal class (every priority is), below the kernel's
/// threaded interrupt handlers (50) and well below watchdogs and migration threads (99), so a
/// busy raftvip can never delay the packets it waits for.
pub const DEFAULT_REALTIME_PRIORITY: u32 = 10;

/// `SCHED_RR` priorities Linux accepts (0 here means "off").
pub const REALTIME_PRIORITY_RANGE: std::ops::RangeInclusive<u32> = 0..=99;

/// `CAP_IPC_LOCK`'s bit in `CapEff` (linux/capability.h).
const CAP_IPC_LOCK: u32 = 14;

/// `[process]`: how the daemon asks the kernel to treat it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessConfig {
    /// `SCHED_RR` priority of the runtime and VIP threads; 0 keeps the normal class.
    #[serde(default = "default_realtime_priority")]
    pub realtime_priority: u32,
    /// Lock the daemon's memory (`mlockall`), so it is never swapped out.
    #[serde(default = "default_lock_memory")]
    pub lock_memory: bool,
}

impl Default for ProcessConfig {
    fn default() -> Self {
        Self {
            realtime_priority: DEFAULT_REALTIME_PRIORITY,
            lock_memory: default_lock_memory(),
        }
    }
}

fn default_realtime_priority() -> u32 {
    DEFAULT_REALTIME_PRIORITY
}

fn default_lock_memory() -> bool {
    true
}

impl ProcessConfig {
    /// What check-config reports about `[process]`.
    pub fn problems(&self) -> Vec<Problem> {
        if REALTIME_PRIORITY_RANGE.contains(&self.realtime_priority) {
            return Vec::new();
        }
        vec![Problem::new(
            "process.realtime_priority",
            format!(
                "{} is outside the accepted range 0 (off) to 99",
                self.realtime_priority
            ),
            format!(
                "use a modest priority, e.g. realtime_priority = {DEFAULT_REALTIME_PRIORITY}, or 0 for the normal scheduler"
            ),
        )]
    }
}

/// What is in effect, for status and metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scheduling {
    /// `SCHED_RR` priority of the runtime and VIP threads; 0: the normal class.
    pub realtime_priority: u32,
    /// Whether the daemon's memory is locked.
    pub memory_locked: bool,
    /// What was configured but could not be applied, and how to allow it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
}

/// The priority the daemon's latency-critical threads take, once [`enter`] set it.
static PRIORITY: OnceLock<u32> = OnceLock::new();
/// What [`enter`] achieved.
static EFFECTIVE: OnceLock<Scheduling> = OnceLock::new();

/// Applies `config` to the process (memory) and the calling thread (the runtime thread), and
/// records the priority for [`raise_this_thread`]. Call once, on the runtime thread, before
/// starting the VIP thread. Logs what is in effect and why anything configured is not.
pub fn enter(config: &ProcessConfig) -> Scheduling {
    let mut effective = Scheduling::default();
    if config.lock_memory {
        match lock_memory() {
            Ok(()) => effective.memory_locked = true,
            Err(why) => effective.problems.push(why),
        }
    }
    if config.realtime_priority > 0 {
        match set_realtime(config.realtime_priority) {
            Ok(()) => {
                effective.realtime_priority = config.realtime_priority;
                let _ = PRIORITY.set(config.realtime_priority);
            }
            Err(why) => effective.problems.push(why),
        }
    }
    let throttle = rt_throttle();
    for why in &effective.problems {
        tracing::warn!("{why}; raftvip runs on, but may miss its timing on a saturated box");
    }
    if effective.realtime_priority > 0 && throttle.as_deref() == Some("off") {
        tracing::warn!(
            "real-time throttling is off (kernel.sched_rt_runtime_us = -1): a runaway raftvip \
             thread could starve the box; set it back to 950000"
        );
    }
    tracing::info!(
        realtime_priority = effective.realtime_priority,
        memory_locked = effective.memory_locked,
        rt_throttle = throttle.as_deref().unwrap_or("unknown"),
        "scheduling: {}",
        effective.describe()
    );
    let _ = EFFECTIVE.set(effective.clone());
    effective
}

/// Puts the calling thread in the real-time class [`enter`] chose (nothing if it chose none
/// or was not called): for the VIP thread, which must release the VIPs at the fence deadline.
pub fn raise_this_thread(name: &str) {
    if let Some(&priority) = PRIORITY.get() {
        if let Err(why) = set_realtime(priority) {
            tracing::warn!("the {name} thread stays in the normal class: {why}");
        }
    }
}

/// For the runtime's blocking pool (`on_thread_start`): its threads save the vote and append
/// the log (redb), which an election and a new leader's first commit wait for, so they take
/// the real-time class one step below the runtime thread, which they can never delay. Nothing
/// before [`enter`] (other commands, or real-time scheduling off or not allowed).
pub fn raise_blocking_thread() {
    if let Some(&priority) = PRIORITY.get() {
        if let Err(why) = set_realtime(priority.saturating_sub(1).max(1)) {
            tracing::debug!("a blocking-pool thread stays in the normal class: {why}");
        }
    }
}

/// What [`enter`] put in effect (the default before it ran: normal class, nothing locked).
pub fn effective() -> Scheduling {
    EFFECTIVE.get().cloned().unwrap_or_default()
}

impl Scheduling {
    /// One line for the log and `raftvip status`.
    pub fn describe(&self) -> String {
        let class = match self.realtime_priority {
            0 => "normal scheduling class".to_owned(),
            p => format!("real-time SCHED_RR priority {p} (runtime and VIP threads)"),
        };
        let memory = if self.memory_locked {
            "memory locked"
        } else {
            "memory not locked"
        };
        format!("{class}, {memory}")
    }
}

/// `SCHED_RR | SCHED_RESET_ON_FORK` at `priority` for the calling thread.
fn set_realtime(priority: u32) -> Result<(), String> {
    let error = match set_policy(libc::SCHED_RR | libc::SCHED_RESET_ON_FORK, priority) {
        Ok(()) => return Ok(()),
        Err(error) => error,
    };
    Err(format!(
        "cannot enter the real-time class (SCHED_RR priority {priority}): {error}; \
         grant CAP_SYS_NICE or LimitRTPRIO={priority} (systemd), give the cgroup a real-time \
         budget (cpu.rt_runtime_us), or set [process] realtime_priority = 0"
    ))
}

/// `sched_setscheduler(0, policy, priority)`: the calling thread.
fn set_policy(policy: libc::c_int, priority: u32) -> std::io::Result<()> {
    let param = libc::sched_param {
        sched_priority: priority as libc::c_int,
    };
    // SAFETY: sched_setscheduler reads `param`; pid 0 is the calling thread.
    match unsafe { libc::sched_setscheduler(0, policy, &param) } {
        0 => Ok(()),
        _ => Err(std::io::Error::last_os_error()),
    }
}

/// Locks the daemon's memory, if it may lock without a limit: under a finite
/// `RLIMIT_MEMLOCK` without `CAP_IPC_LOCK`, `MCL_FUTURE` would make the first mapping beyond
/// the limit (a thread stack, a malloc arena) fail, so then nothing is locked.
fn lock_memory() -> Result<(), String> {
    const FIX: &str = "grant CAP_IPC_LOCK or LimitMEMLOCK=infinity (systemd), or set \
                       [process] lock_memory = false";
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    if !has_capability(&status, CAP_IPC_LOCK) && !memlock_unlimited() {
        return Err(format!(
            "memory not locked: no CAP_IPC_LOCK and RLIMIT_MEMLOCK is limited; {FIX}"
        ));
    }
    // SAFETY: mlockall only changes how the kernel treats this process's pages.
    let rc = unsafe { libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE | libc::MCL_ONFAULT) };
    if rc == 0 {
        return Ok(());
    }
    let error = std::io::Error::last_os_error();
    Err(format!("cannot lock memory (mlockall): {error}; {FIX}"))
}

/// Whether `RLIMIT_MEMLOCK` is unlimited.
fn memlock_unlimited() -> bool {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into `limit`.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) };
    rc == 0 && limit.rlim_cur == libc::RLIM_INFINITY
}

/// Whether `/proc/self/status` text shows capability `bit` in the effective set.
fn has_capability(status: &str, bit: u32) -> bool {
    status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << bit) != 0)
}

/// The kernel's real-time throttling: "off", or the share of each period real-time threads
/// may use; None if unreadable.
fn rt_throttle() -> Option<String> {
    let read = |name| {
        std::fs::read_to_string(format!("/proc/sys/kernel/{name}"))
            .ok()
            .and_then(|t| t.trim().parse::<i64>().ok())
    };
    let runtime = read("sched_rt_runtime_us")?;
    if runtime < 0 {
        return Some("off".to_owned());
    }
    let period = read("sched_rt_period_us").filter(|p| *p > 0)?;
    Some(format!("{runtime}/{period} us"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn process(text: &str) -> Result<ProcessConfig, toml::de::Error> {
        #[derive(Deserialize)]
        struct File {
            process: ProcessConfig,
        }
        toml::from_str::<File>(text).map(|f| f.process)
    }

    #[test]
    fn defaults_ask_for_a_modest_realtime_priority_and_locked_memory() {
        let p = process("[process]").unwrap();
        assert_eq!(p.realtime_priority, DEFAULT_REALTIME_PRIORITY);
        assert!(p.lock_memory);
        assert!(p.problems().is_empty());
    }

    #[test]
    fn zero_turns_realtime_off_and_is_valid() {
        let p = process("[process]\nrealtime_priority = 0\nlock_memory = false").unwrap();
        assert_eq!(p.realtime_priority, 0);
        assert!(!p.lock_memory);
        assert!(p.problems().is_empty());
    }

    #[test]
    fn a_priority_above_99_is_a_problem_naming_key_and_fix() {
        let problems = process("[process]\nrealtime_priority = 100")
            .unwrap()
            .problems();
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].key, "process.realtime_priority");
        assert!(problems[0].what.contains("100"), "{}", problems[0].what);
        assert!(
            problems[0].fix.contains("realtime_priority = 10"),
            "{}",
            problems[0].fix
        );
    }

    #[test]
    fn unknown_keys_and_negative_priorities_are_refused() {
        assert!(process("[process]\nrt_priority = 5").is_err());
        assert!(process("[process]\nrealtime_priority = -1").is_err());
    }

    #[test]
    fn capability_bits_are_read_from_cap_eff() {
        let status = "CapInh:\t0000000000000000\nCapEff:\t0000000000004000\n";
        assert!(has_capability(status, CAP_IPC_LOCK));
        assert!(!has_capability(status, 12));
        assert!(!has_capability("CapEff:\tzz\n", CAP_IPC_LOCK));
        assert!(!has_capability("", CAP_IPC_LOCK));
    }

    #[test]
    fn describe_names_class_priority_and_memory() {
        let on = Scheduling {
            realtime_priority: 10,
            memory_locked: true,
            problems: Vec::new(),
        };
        assert_eq!(
            on.describe(),
            "real-time SCHED_RR priority 10 (runtime and VIP threads), memory locked"
        );
        assert_eq!(
            Scheduling::default().describe(),
            "normal scheduling class, memory not locked"
        );
    }
}
