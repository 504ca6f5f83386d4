//! Reload: SIGHUP and `raftvip reload` re-read the config file and apply what changed, live.
//!
//! A reload must never leave a node worse off than before it. So the new file goes through
//! everything `raftvip check-config` checks ([`Config::load`]: parse, every problem between
//! values, the secret); a file that fails is rejected with all its problems and the running
//! config stays in force. Then [`plan`] compares it with the running config key by key: a key
//! that only a restart can change (see [`RESTART_ONLY`] for each one's reason) rejects the
//! whole reload, naming every such key at once, and nothing is applied. Otherwise the
//! changes go to the parts that own them ([`Live`]):
//!
//! - the VIP set, the announce cadence and `timing.reconcile_ms` to the VIP thread, which
//!   removes a VIP no longer listed (if bound) and binds and announces a new one at once
//!   while it holds;
//! - `[haproxy]` settings to the health monitor;
//! - `[notify]` to the hook runner (events fired after the reload use the new hooks);
//! - `timing.fence_ms` and `role` to the supervisor's core, which re-decides at once: a
//!   holder that may no longer lead (it became a witness, or a new VIP cannot be bound
//!   here) hands over like in maintenance;
//! - a changed `[[peer]]` list to the membership ([`crate::membership`]), which the leader
//!   changes through Raft in the background: `raftvip reload` waits for the outcome (up to
//!   [`crate::membership::RELOAD_WAIT`]), SIGHUP leaves it to the log.
//!
//! A live fence change keeps the fencing inequality (docs/timing.md): the new file passed
//! check-config against the *running* `election_timeout_ms` (which cannot change live), so
//! `fence_ms + FENCE_SLACK_MS < election_timeout_max` holds for the new fence, and the core
//! recomputes the hold deadline of the current term from the last quorum ack with it.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use crate::config::{Config, HaproxyConfig, LoadConfigError, Secret};
use crate::membership::PendingChange;
use crate::notify::Notifier;
use crate::peer::wire::ReloadOutcome;
use crate::supervisor::Setup;
use crate::vip::{VipHolder, VipSet};

/// A key a reload cannot change: its name, whether it changed, and the reason given in the
/// rejection.
struct RestartOnly {
    key: &'static str,
    changed: fn(&Config, &Config) -> bool,
    why: &'static str,
}

/// Why openraft's timing keys need a restart.
const OPENRAFT_TIMING: &str = "openraft 0.9.25 fixes its heartbeat and election timing when Raft \
     starts (its runtime config only switches elections and heartbeats on and off), and the \
     fencing inequality ties them to every peer's lease: change them on every node and restart \
     them one by one";
/// Why the secret needs a restart.
const SIGNING: &str =
    "every request is signed with the secret read at start: change it on every node and restart them";

/// The keys a reload cannot change, in the order a rejection names them.
const RESTART_ONLY: &[RestartOnly] = &[
    RestartOnly {
        key: "cluster",
        changed: |a, b| a.cluster != b.cluster,
        why: "it is part of every request signature: change it on every node and restart them",
    },
    RestartOnly {
        key: "node_id",
        changed: |a, b| a.node_id != b.node_id,
        why: "it is this node's identity in the Raft log and the store",
    },
    RestartOnly {
        key: "listen",
        changed: |a, b| a.listen != b.listen,
        why: "the peer listener is bound at start",
    },
    RestartOnly {
        key: "status_listen",
        changed: |a, b| a.status_listen != b.status_listen,
        why: "the status listener is bound at start",
    },
    RestartOnly {
        key: "data_dir",
        changed: |a, b| a.data_dir != b.data_dir,
        why: "the Raft store is open",
    },
    RestartOnly {
        key: "secret_file",
        changed: |a, b| a.secret_file != b.secret_file,
        why: SIGNING,
    },
    RestartOnly {
        key: "limits.max_connections",
        changed: |a, b| a.limits.max_connections != b.limits.max_connections,
        why: "the connection tables are sized at start",
    },
    RestartOnly {
        key: "timing.heartbeat_ms",
        changed: |a, b| a.timing.heartbeat_ms != b.timing.heartbeat_ms,
        why: OPENRAFT_TIMING,
    },
    RestartOnly {
        key: "timing.election_timeout_ms",
        changed: |a, b| a.timing.election_timeout_ms != b.timing.election_timeout_ms,
        why: OPENRAFT_TIMING,
    },
    RestartOnly {
        key: "vip_lease.lifetime_s",
        changed: |a, b| a.vip_lease.lifetime_s != b.vip_lease.lifetime_s,
        why: "the netlink socket binds every VIP with the lifetime chosen at start",
    },
    RestartOnly {
        key: "haproxy",
        changed: |a, b| a.haproxy.is_some() != b.haproxy.is_some(),
        why: "the health gate (a HAProxy monitor, or none) is chosen at start; the settings \
              inside [haproxy] reload live",
    },
    RestartOnly {
        key: "role",
        changed: |a, b| a.is_witness() && !b.is_witness(),
        why: "a witness starts without a health monitor and a VIP thread",
    },
    RestartOnly {
        key: "process.realtime_priority",
        changed: |a, b| a.process.realtime_priority != b.process.realtime_priority,
        why: "the threads enter their scheduling class at start (crate::realtime)",
    },
    RestartOnly {
        key: "process.lock_memory",
        changed: |a, b| a.process.lock_memory != b.process.lock_memory,
        why: "mlockall applies to every mapping from start on",
    },
];

/// Logs what a reload did, saying what triggered it: each change at info, a rejection at
/// error with every problem.
pub fn log(outcome: &ReloadOutcome, trigger: &str) {
    let path = &outcome.path;
    if !outcome.accepted() {
        tracing::error!(
            path,
            trigger,
            problems = %outcome.problems.join("; "),
            "reload rejected: the running config is kept"
        );
    } else if outcome.applied.is_empty() {
        tracing::info!(path, trigger, "reload: nothing changed");
    } else {
        for change in &outcome.applied {
            tracing::info!(path, trigger, change = %change, "reload applied");
        }
    }
}

/// What [`plan`] found to apply.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Operator-facing lines, one per change.
    pub changes: Vec<String>,
    pub vips: bool,
    pub haproxy: bool,
    pub notify: bool,
    pub supervisor: bool,
    /// The `[[peer]]` list changed: it goes to the membership.
    pub members: bool,
}

/// Compares `new` with `running`: the live changes, or every restart-only change (named by
/// key, with why) as problems. `same_secret` says whether the secret read now equals the
/// running one.
pub fn plan(running: &Config, new: &Config, same_secret: bool) -> Result<Plan, Vec<String>> {
    let mut restart: Vec<String> = RESTART_ONLY
        .iter()
        .filter(|r| (r.changed)(running, new))
        .map(|r| format!("{}: needs a restart ({})", r.key, r.why))
        .collect();
    if !same_secret && running.secret_file == new.secret_file {
        restart.push(format!(
            "secret_file: its content changed, which needs a restart ({SIGNING})"
        ));
    }
    if !restart.is_empty() {
        return Err(restart);
    }

    let mut plan = Plan::default();
    vip_changes(running, new, &mut plan.changes);
    if running.announce != new.announce {
        let (old, now) = (&running.announce, &new.announce);
        let changed: Vec<String> = [
            (
                "burst_count",
                old.burst_count.to_string(),
                now.burst_count.to_string(),
            ),
            (
                "burst_interval_ms",
                old.burst_interval_ms.to_string(),
                now.burst_interval_ms.to_string(),
            ),
            (
                "refresh_s",
                old.refresh_s.to_string(),
                now.refresh_s.to_string(),
            ),
        ]
        .into_iter()
        .filter(|(_, a, b)| a != b)
        .map(|(name, a, b)| format!("{name} {a} -> {b}"))
        .collect();
        plan.changes
            .push(format!("announce: {}", changed.join(", ")));
    }
    if running.timing.reconcile_ms != new.timing.reconcile_ms {
        plan.changes.push(format!(
            "timing.reconcile_ms: {} -> {}",
            running.timing.reconcile_ms, new.timing.reconcile_ms
        ));
    }
    plan.vips = !plan.changes.is_empty();
    if let (Some(old), Some(now)) = (&running.haproxy, &new.haproxy) {
        if old != now {
            plan.haproxy = true;
            plan.changes
                .push(format!("haproxy: {}", haproxy_changes(old, now).join(", ")));
        }
    }
    if running.notify != new.notify {
        plan.notify = true;
        plan.changes
            .push("notify: hooks replaced (events from now on use them)".into());
    }
    if running.timing.fence_ms() != new.timing.fence_ms() {
        plan.supervisor = true;
        plan.changes.push(format!(
            "timing.fence_ms: {} -> {}",
            running.timing.fence_ms(),
            new.timing.fence_ms()
        ));
    }
    if running.is_witness() != new.is_witness() {
        plan.supervisor = true;
        plan.notify = true;
        plan.vips = true;
        plan.changes.push(
            "role: voter -> witness (this node no longer stands; if it holds the VIPs it hands them over)"
                .into(),
        );
    }
    if running.accept_no_failover != new.accept_no_failover {
        plan.changes.push(format!(
            "accept_no_failover: {} -> {}",
            running.accept_no_failover, new.accept_no_failover
        ));
    }
    if let Some(change) = peer_change(running, new) {
        // The supervisor's setup counts the voters (a single voter elects by itself).
        (plan.supervisor, plan.members) = (true, true);
        plan.changes.push(change);
    }
    // RAFTVIP_VIPS in the hooks' environment lists the VIPs.
    plan.notify |= running.vips != new.vips;
    Ok(plan)
}

/// The "peer: [1, 2, 3] -> [1, 2, 3, 4]" line when the `[[peer]]` list changed.
fn peer_change(running: &Config, new: &Config) -> Option<String> {
    let ids = |c: &Config| c.peers.iter().map(|p| p.id).collect::<Vec<_>>();
    (running.peers != new.peers).then(|| {
        format!(
            "peer: {:?} -> {:?} (the leader makes it the membership; raftvip status shows where the file and the cluster differ)",
            ids(running),
            ids(new)
        )
    })
}

/// "vip 192.0.2.50/32 on eth0: added" lines for this node's own VIPs (none for a node that
/// becomes a witness: it releases them by handing over, see [`Reloader::apply`]).
fn vip_changes(running: &Config, new: &Config, changes: &mut Vec<String>) {
    if new.is_witness() {
        return;
    }
    let (old, now) = (running.own_vips(), new.own_vips());
    for vip in old.iter().filter(|v| !now.contains(v)) {
        changes.push(format!(
            "vip {} on {}: removed (released if held)",
            vip.address, vip.interface
        ));
    }
    for vip in now.iter().filter(|v| !old.contains(v)) {
        changes.push(format!(
            "vip {} on {}: added (bound at once if held)",
            vip.address, vip.interface
        ));
    }
}

/// The `[haproxy]` keys that changed, as `key old -> new`.
fn haproxy_changes(old: &HaproxyConfig, new: &HaproxyConfig) -> Vec<String> {
    let mut changed = Vec::new();
    let mut key = |name: &str, a: String, b: String| {
        if a != b {
            changed.push(format!("{name} {a} -> {b}"));
        }
    };
    key(
        "stats_socket",
        old.stats_socket.display().to_string(),
        new.stats_socket.display().to_string(),
    );
    key(
        "frontends",
        format!("{:?}", old.frontends),
        format!("{:?}", new.frontends),
    );
    key(
        "backends",
        format!("{:?}", old.backends),
        format!("{:?}", new.backends),
    );
    key(
        "min_servers_up",
        old.min_servers_up.to_string(),
        new.min_servers_up.to_string(),
    );
    key(
        "poll_interval_ms",
        old.poll_interval_ms.to_string(),
        new.poll_interval_ms.to_string(),
    );
    key(
        "timeout_ms",
        old.timeout_ms.to_string(),
        new.timeout_ms.to_string(),
    );
    key("rise", old.rise.to_string(), new.rise.to_string());
    key("fall", old.fall.to_string(), new.fall.to_string());
    changed
}

/// The running parts a reload changes, handed over by the daemon.
pub struct Live {
    pub vips: Arc<dyn VipHolder>,
    /// The health monitor's settings (None: no monitor runs).
    pub haproxy: Option<watch::Sender<HaproxyConfig>>,
    pub notifier: Arc<Notifier>,
    pub supervisor: watch::Sender<Setup>,
    /// Takes a changed `[[peer]]` list to the membership (see
    /// [`crate::membership::on_reload`]).
    pub members: crate::membership::OnReload,
}

/// Reloads the file the daemon was started with.
pub struct Reloader {
    path: PathBuf,
    running: Mutex<(Arc<Config>, Secret)>,
    live: Live,
}

impl Reloader {
    pub fn new(path: &Path, running: Arc<Config>, secret: Secret, live: Live) -> Self {
        Self {
            path: path.to_owned(),
            running: Mutex::new((running, secret)),
            live,
        }
    }

    /// The config in force: the one started with, or the last reload applied.
    pub fn config(&self) -> Arc<Config> {
        crate::sync::lock(&self.running).0.clone()
    }

    /// The file this node was started with.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the file again and applies what changed (see the module docs). One reload at
    /// a time: a second waits for the first.
    pub fn reload(&self) -> Reloaded {
        let mut running = crate::sync::lock(&self.running);
        let (new, secret) = match Config::load(&self.path) {
            Ok(loaded) => loaded,
            Err(LoadConfigError::Invalid { problems, .. }) => {
                return self.rejected(problems.iter().map(ToString::to_string).collect());
            }
            Err(e) => return self.rejected(vec![e.to_string()]),
        };
        let same_secret = secret.as_bytes() == running.1.as_bytes();
        let plan = match plan(&running.0, &new, same_secret) {
            Ok(plan) => plan,
            Err(problems) => return self.rejected(problems),
        };
        let membership = self.apply(&plan, &running.0, &new);
        let mut applied = plan.changes;
        for warning in new.warnings() {
            applied.push(format!("warning: {warning}"));
        }
        *running = (Arc::new(new), secret);
        Reloaded {
            outcome: ReloadOutcome {
                path: self.path.display().to_string(),
                applied,
                ..ReloadOutcome::default()
            },
            membership,
        }
    }

    /// [`Self::reload`] asked for by `raftvip reload`, which names the file it means: it
    /// must be this node's own, since a later restart (and SIGHUP) reads that one.
    pub fn reload_file(&self, path: &str) -> Reloaded {
        let same = match (
            std::fs::canonicalize(path),
            std::fs::canonicalize(&self.path),
        ) {
            (Ok(asked), Ok(own)) => asked == own,
            _ => Path::new(path) == self.path,
        };
        if same {
            return self.reload();
        }
        self.rejected(vec![format!(
            "this daemon runs from {}, not {path}: edit that file and reload it (a restart reads it too)",
            self.path.display()
        )])
    }

    /// A reload that changed nothing, for `problems`.
    fn rejected(&self, problems: Vec<String>) -> Reloaded {
        Reloaded {
            outcome: ReloadOutcome {
                path: self.path.display().to_string(),
                problems,
                ..ReloadOutcome::default()
            },
            membership: None,
        }
    }

    /// Applies `plan`; the membership change it started, if any.
    fn apply(&self, plan: &Plan, running: &Config, new: &Config) -> Option<PendingChange> {
        let live = &self.live;
        if plan.vips {
            // A node that becomes a witness keeps its VIPs listed: the supervisor releases
            // them once it has handed over, instead of their vanishing before a successor
            // holds them.
            let vips = if new.is_witness() {
                running.own_vips()
            } else {
                new.own_vips()
            };
            live.vips.set_vips(VipSet {
                vips: vips.to_vec(),
                announce: new.announce.clone(),
                reconcile: Duration::from_millis(new.timing.reconcile_ms),
            });
        }
        if let (true, Some(haproxy), Some(settings)) =
            (plan.haproxy, new.own_haproxy(), &live.haproxy)
        {
            settings.send_replace(haproxy.clone());
        }
        if plan.notify {
            live.notifier.reload(new);
        }
        if plan.supervisor {
            live.supervisor.send_replace(Setup::from_config(new));
        }
        plan.members.then(|| (live.members)(&new.peers))
    }
}

/// What [`Reloader::reload`] did, with the membership change it started (when the
/// `[[peer]]` list changed) still running: `raftvip reload` waits for it, SIGHUP does not
/// (the change logs its own outcome).
pub struct Reloaded {
    pub outcome: ReloadOutcome,
    pub membership: Option<PendingChange>,
}

#[cfg(test)]
mod tests;
