//! Notify hooks that keepalived's notify scripts understand, run one at a time in event order.
//!
//! Operators moving from keepalived bring notify scripts; they must run unchanged. keepalived
//! runs the per-state `notify_master|backup|fault|stop` scripts with their own arguments only,
//! then the generic `notify` script with `INSTANCE <name> MASTER|BACKUP|FAULT|STOP <priority>`
//! appended to its own. raftvip does the same with `[notify] master|backup|fault|stop` and
//! `script`, the instance name being the cluster name. `RAFTVIP_*` environment variables add
//! what VRRP has no word for: above all the Raft term, with which a script refuses to act on a
//! stale event (examples/hooks/term-guard.sh).
//!
//! Hooks run one at a time, in the order of the events: keepalived gives that guarantee only
//! with its notify FIFO, and without it scripts of quick successive events race each other. A
//! single task consumes a bounded queue; [`Notifier::fire`] never blocks or delays the caller
//! (the supervisor), and when hooks fall behind the oldest waiting event is dropped with a
//! warning. The queue is tokio's broadcast channel with one receiver, because that is exactly
//! its overflow rule: a send never waits, and a full channel overwrites its oldest value. Each hook gets `[notify] timeout_ms`; then its whole process group is killed, so a
//! `sleep` it started dies with it, and the next hook runs. Its stdout and stderr go to the log,
//! truncated, so a noisy script cannot flood the journal.
//!
//! A reload replaces the hooks ([`Notifier::reload`]): each event carries the hooks that were
//! configured when it fired, so an event queued before the reload still runs the old ones.

use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, Command};
use tokio::sync::{broadcast, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::{hook_program_unusable, split_hook_command, Config};
use crate::raft::NodeId;

/// keepalived's 4th argument for a voter: keepalived's default priority. Under Raft every
/// healthy voter may lead, so all voters report the same value.
pub const VOTER_PRIORITY: u8 = 100;
/// keepalived's 4th argument for a witness: 0, below every priority that can win a VRRP
/// election (1–255), as a witness never holds the VIPs.
pub const WITNESS_PRIORITY: u8 = 0;

/// Events waiting for their hooks. A box produces a few events per failover; 64 covers a
/// flapping box for minutes while a hook hangs until its timeout. A power of two: the
/// broadcast channel rounds its capacity up to one.
const QUEUE_CAPACITY: usize = 64;

/// Bytes of a hook's stdout, and of its stderr, copied into the log; the rest is counted and
/// discarded (the pipe is still drained, so the hook never blocks writing).
const MAX_CAPTURED_BYTES: usize = 4096;

/// How long after a hook exits its output pipes are still read: a background process it
/// started may hold them open forever, and must not stall the next hook.
const OUTPUT_GRACE: Duration = Duration::from_millis(100);

/// A state keepalived reports, with the same name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// This node holds the VIPs (again: also after a partition heals or a restart).
    Master,
    /// This node is a healthy standby (at start, and after releasing the VIPs).
    Backup,
    /// This node's HAProxy is unhealthy: it may not hold the VIPs.
    Fault,
    /// raftvip is stopping.
    Stop,
}

impl Event {
    /// The state as keepalived spells it in the generic notify's 3rd argument.
    pub fn state(self) -> &'static str {
        match self {
            Event::Master => "MASTER",
            Event::Backup => "BACKUP",
            Event::Fault => "FAULT",
            Event::Stop => "STOP",
        }
    }
}

/// What the supervisor knows about the moment of an event; handed to hooks as `RAFTVIP_*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookContext {
    pub leader_id: Option<NodeId>,
    pub term: u64,
    pub reason: String,
}

/// One event waiting in the queue, numbered so [`Notifier::flush`] knows when it is done.
#[derive(Debug, Clone)]
struct Queued {
    seq: u64,
    event: Event,
    context: HookContext,
    hooks: Arc<Hooks>,
}

/// Queues events for the hook task; without any hook configured, firing does nothing.
#[derive(Debug)]
pub struct Notifier {
    /// The hooks configured now (None: none); replaced by a reload.
    hooks: Mutex<Option<Arc<Hooks>>>,
    queue: Queue,
}

#[derive(Debug)]
struct Queue {
    sender: broadcast::Sender<Queued>,
    /// Number of the last event queued; numbering and sending happen under this lock, so the
    /// queue order is the numbering order.
    last_fired: Mutex<u64>,
    /// Number of the last event whose hooks are done (events dropped on overflow count too).
    done: watch::Receiver<u64>,
}

impl Notifier {
    /// Starts the hook task (idle until an event with hooks comes). Call it inside a Tokio
    /// runtime; the task ends once the notifier is dropped and the queued hooks have run.
    pub fn new(config: &Config) -> Notifier {
        let (sender, receiver) = broadcast::channel(QUEUE_CAPACITY);
        let (done_sender, done) = watch::channel(0);
        tokio::spawn(consume(receiver, done_sender));
        let notifier = Notifier {
            hooks: Mutex::new(None),
            queue: Queue {
                sender,
                last_fired: Mutex::new(0),
                done,
            },
        };
        notifier.reload(config);
        notifier
    }

    /// Takes the hooks of `config` for every event fired from now on (a reload).
    pub fn reload(&self, config: &Config) {
        let hooks = Hooks::of(config).map(Arc::new);
        if hooks.is_some() {
            for warning in config.notify.warnings() {
                tracing::warn!("{warning}");
            }
        }
        *crate::sync::lock(&self.hooks) = hooks;
    }

    /// Queues the hooks of `event`; returns at once.
    pub fn fire(&self, event: Event, context: &HookContext) {
        let Some(hooks) = crate::sync::lock(&self.hooks).clone() else {
            return;
        };
        let queue = &self.queue;
        let mut last = queue
            .last_fired
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        *last += 1;
        let queued = Queued {
            seq: *last,
            event,
            context: context.clone(),
            hooks,
        };
        // Fails only once the hook task is gone, i.e. the runtime is shutting down.
        if queue.sender.send(queued).is_err() {
            tracing::warn!(
                event = event.state(),
                "notify hooks no longer run: event not reported"
            );
        }
    }

    /// Waits until the hooks of every event fired so far have run (each bounded by
    /// `[notify] timeout_ms`): at exit, so STOP's hooks are not killed with the runtime.
    pub async fn flush(&self) {
        let queue = &self.queue;
        let target = *queue
            .last_fired
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut done = queue.done.clone();
        // An error means the hook task is gone: nothing left to wait for.
        let _ = done.wait_for(|done| *done >= target).await;
    }
}

/// The single consumer: runs each event's hooks in turn, in queue order.
async fn consume(mut queue: broadcast::Receiver<Queued>, done: watch::Sender<u64>) {
    loop {
        match queue.recv().await {
            Ok(queued) => {
                queued.hooks.run_event(&queued).await;
                done.send_replace(queued.seq);
            }
            Err(broadcast::error::RecvError::Lagged(dropped)) => tracing::warn!(
                dropped,
                capacity = QUEUE_CAPACITY,
                "notify hooks fall behind the events: the oldest waiting events were dropped without running their hooks"
            ),
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// One configured hook: its key in the file, program and own arguments.
#[derive(Debug)]
struct Hook {
    key: &'static str,
    program: PathBuf,
    args: Vec<String>,
}

impl Hook {
    fn parse(key: &'static str, line: Option<&str>) -> Option<Hook> {
        let (program, args) = split_hook_command(line?)?;
        Some(Hook {
            key,
            program: program.into(),
            args: args.into_iter().map(str::to_owned).collect(),
        })
    }
}

/// Everything the hook task needs, fixed at start.
#[derive(Debug)]
struct Hooks {
    /// Indexed like [`Hooks::per_state_index`].
    per_state: [Option<Hook>; 4],
    generic: Option<Hook>,
    timeout: Duration,
    node_id: NodeId,
    cluster: String,
    priority: u8,
    /// The VIPs' addresses, space-separated, for `RAFTVIP_VIPS`.
    vips: String,
}

impl Hooks {
    /// None when no hook is configured.
    fn of(config: &Config) -> Option<Hooks> {
        let [master, backup, fault, stop, script] = config
            .notify
            .commands()
            .map(|(key, line)| Hook::parse(key, line));
        let hooks = Hooks {
            per_state: [master, backup, fault, stop],
            generic: script,
            timeout: config.notify.timeout(),
            node_id: config.node_id,
            cluster: config.cluster.clone(),
            priority: if config.is_witness() {
                WITNESS_PRIORITY
            } else {
                VOTER_PRIORITY
            },
            vips: config
                .vips
                .iter()
                .map(|v| v.address.to_string())
                .collect::<Vec<_>>()
                .join(" "),
        };
        (hooks.per_state.iter().any(Option::is_some) || hooks.generic.is_some()).then_some(hooks)
    }

    fn per_state_index(event: Event) -> usize {
        match event {
            Event::Master => 0,
            Event::Backup => 1,
            Event::Fault => 2,
            Event::Stop => 3,
        }
    }

    /// keepalived's order: the per-state hook with its own arguments, then the generic one
    /// with `INSTANCE <cluster> <STATE> <priority>` appended.
    async fn run_event(&self, queued: &Queued) {
        if let Some(hook) = &self.per_state[Self::per_state_index(queued.event)] {
            self.run(hook, &[], queued).await;
        }
        if let Some(hook) = &self.generic {
            let keepalived_args = [
                "INSTANCE".to_owned(),
                self.cluster.clone(),
                queued.event.state().to_owned(),
                self.priority.to_string(),
            ];
            self.run(hook, &keepalived_args, queued).await;
        }
    }

    fn env(&self, queued: &Queued) -> [(&'static str, String); 8] {
        let context = &queued.context;
        [
            ("RAFTVIP_STATE", queued.event.state().to_owned()),
            ("RAFTVIP_CLUSTER", self.cluster.clone()),
            ("RAFTVIP_NODE_ID", self.node_id.to_string()),
            (
                "RAFTVIP_LEADER_ID",
                context
                    .leader_id
                    .map(|id| id.to_string())
                    .unwrap_or_default(),
            ),
            ("RAFTVIP_TERM", context.term.to_string()),
            ("RAFTVIP_VIPS", self.vips.clone()),
            ("RAFTVIP_REASON", context.reason.clone()),
            ("RAFTVIP_PRIORITY", self.priority.to_string()),
        ]
    }

    /// Runs one hook to its end or its timeout and logs the outcome with its output.
    async fn run(&self, hook: &Hook, extra_args: &[String], queued: &Queued) {
        let (event, term) = (queued.event.state(), queued.context.term);
        // Checked at each run: the file may have been installed, fixed or broken since.
        if let Some((why, fix)) = hook_program_unusable(&hook.program) {
            tracing::warn!(hook = hook.key, event, term, %why, %fix, "notify hook not run");
            return;
        }
        let started = Instant::now();
        let mut command = Command::new(&hook.program);
        command
            .args(&hook.args)
            .args(extra_args)
            .envs(self.env(queued))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group, so a timeout kills what it started too.
            .process_group(0)
            .kill_on_drop(true);
        let ran = match spawn_unless_busy(&mut command).await {
            Err(e) => Err(format!("cannot start {}: {e}", hook.program.display())),
            Ok(child) => Ok(supervise(child, self.timeout).await),
        };
        let elapsed_ms = started.elapsed().as_millis();
        match ran {
            Err(why) => tracing::warn!(hook = hook.key, event, term, %why, "notify hook failed"),
            Ok(ran) => match ran.failure() {
                None => tracing::info!(
                    hook = hook.key,
                    event,
                    term,
                    elapsed_ms,
                    stdout = ran.stdout.logged(),
                    stderr = ran.stderr.logged(),
                    "notify hook ran"
                ),
                Some(why) => tracing::warn!(
                    hook = hook.key, event, term, elapsed_ms, %why,
                    stdout = ran.stdout.logged(), stderr = ran.stderr.logged(),
                    "notify hook failed"
                ),
            },
        }
    }
}

/// Starts the hook, retrying briefly while its file is open for writing somewhere (ETXTBSY):
/// a deployment tool replacing the script, or, in a threaded process, any fork that briefly
/// inherits a descriptor still open on a file just written. Both clear within milliseconds.
async fn spawn_unless_busy(command: &mut Command) -> std::io::Result<tokio::process::Child> {
    const ATTEMPTS: u32 = 10;
    let mut attempt = 1;
    loop {
        match command.spawn() {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && attempt < ATTEMPTS => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            spawned => return spawned,
        }
    }
}

/// How a started hook ended, and what it printed.
#[derive(Debug)]
struct Ran {
    /// None: killed at the timeout.
    status: Option<std::io::Result<ExitStatus>>,
    timeout: Duration,
    stdout: Captured,
    stderr: Captured,
}

impl Ran {
    fn failure(&self) -> Option<String> {
        match &self.status {
            None => Some(format!(
                "still running after {} ms: killed it and its process group",
                self.timeout.as_millis()
            )),
            Some(Err(e)) => Some(format!("cannot wait for it: {e}")),
            Some(Ok(status)) if !status.success() => Some(format!("it {status}")),
            Some(Ok(_)) => None,
        }
    }
}

/// Kills a hook's process group (its group id is its pid: `process_group(0)`) unless the hook
/// ended first: on the timeout, and when the daemon exits with the hook still running (the
/// runtime drops [`supervise`] then), so nothing it started outlives the daemon.
struct HookGroup(Option<nix::unistd::Pid>);

impl HookGroup {
    fn kill(&mut self) {
        if let Some(group) = self.0.take() {
            // ESRCH: all gone already.
            let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
        }
    }
}

impl Drop for HookGroup {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Waits for the hook (killing its process group at the timeout) while draining its output.
async fn supervise(mut child: Child, timeout: Duration) -> Ran {
    let mut group = HookGroup(
        child
            .id()
            .and_then(|pid| i32::try_from(pid).ok())
            .map(nix::unistd::Pid::from_raw),
    );
    let exited = CancellationToken::new();
    let stdout = capture(child.stdout.take(), exited.clone());
    let stderr = capture(child.stderr.take(), exited.clone());
    let wait = async {
        let status = match tokio::time::timeout(timeout, child.wait()).await {
            Ok(status) => {
                // It ended by itself: what it left running in the background is its business.
                group.0 = None;
                Some(status)
            }
            Err(_) => {
                group.kill();
                let _ = child.wait().await;
                None
            }
        };
        exited.cancel();
        status
    };
    let (status, stdout, stderr) = tokio::join!(wait, stdout, stderr);
    Ran {
        status,
        timeout,
        stdout,
        stderr,
    }
}

/// Reads a pipe until end of file, or until `OUTPUT_GRACE` after the hook exited.
async fn capture(pipe: Option<impl AsyncRead + Unpin>, exited: CancellationToken) -> Captured {
    let mut captured = Captured::default();
    let Some(mut pipe) = pipe else {
        return captured;
    };
    let stop = async {
        exited.cancelled().await;
        tokio::time::sleep(OUTPUT_GRACE).await;
    };
    tokio::pin!(stop);
    let mut chunk = [0u8; 1024];
    loop {
        tokio::select! {
            read = pipe.read(&mut chunk) => match read {
                Ok(0) | Err(_) => break,
                Ok(n) => captured.push(&chunk[..n]),
            },
            () = &mut stop => break,
        }
    }
    captured
}

/// The first `MAX_CAPTURED_BYTES` of a stream, and how many more there were.
#[derive(Debug, Default)]
struct Captured {
    kept: Vec<u8>,
    dropped: usize,
}

impl Captured {
    fn push(&mut self, bytes: &[u8]) {
        let room = MAX_CAPTURED_BYTES - self.kept.len();
        let keep = bytes.len().min(room);
        self.kept.extend_from_slice(&bytes[..keep]);
        self.dropped += bytes.len() - keep;
    }

    /// The log field: absent when the hook printed nothing (tracing skips a None field).
    fn logged(&self) -> Option<tracing::field::DisplayValue<&Self>> {
        let blank = self.kept.iter().all(u8::is_ascii_whitespace) && self.dropped == 0;
        (!blank).then(|| tracing::field::display(self))
    }
}

impl std::fmt::Display for Captured {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(String::from_utf8_lossy(&self.kept).trim_end())?;
        if self.dropped > 0 {
            write!(f, " [... {} more bytes not logged]", self.dropped)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;

    /// A config with the given `[notify]` lines, node 2 of cluster lb-test, two VIPs.
    fn config(notify: &str) -> Config {
        Config::parse(&format!(
            "cluster = \"lb-test\"\nnode_id = 2\nlisten = \"192.0.2.12:7480\"\n\
             data_dir = \"/nonexistent\"\nsecret_file = \"/nonexistent\"\n\
             [[vip]]\naddress = \"192.0.2.100/32\"\ninterface = \"eth0\"\n\
             [[vip]]\naddress = \"2001:db8::100/128\"\ninterface = \"eth0\"\n\
             [notify]\n{notify}\n"
        ))
        .unwrap()
    }

    /// Writes an executable shell script into `dir`.
    fn script(dir: &Path, name: &str, body: &str) -> String {
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path.display().to_string()
    }

    fn context(term: u64) -> HookContext {
        HookContext {
            leader_id: Some(2),
            term,
            reason: "leader with quorum".into(),
        }
    }

    fn lines(path: &Path) -> Vec<String> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// A hook still running when the daemon exits (its supervising task dropped with the
    /// runtime) is killed with everything it started, not left behind.
    #[tokio::test]
    async fn a_hook_dropped_at_exit_takes_its_process_group_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("pid");
        let hook = script(
            dir.path(),
            "hang",
            &format!("sleep 30 & echo $! > {}\nsleep 30", pid_file.display()),
        );
        let mut command = Command::new(hook);
        command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let child = spawn_unless_busy(&mut command).await.unwrap();
        let supervised = tokio::spawn(supervise(child, Duration::from_secs(60)));
        // Let it start supervising (in the daemon it does at once, in the same task).
        tokio::task::yield_now().await;
        let background = loop {
            match std::fs::read_to_string(&pid_file).map(|t| t.trim().parse::<i32>()) {
                Ok(Ok(pid)) => break nix::unistd::Pid::from_raw(pid),
                _ => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        };
        supervised.abort();
        let _ = supervised.await;
        for _ in 0..100 {
            // Gone, or a zombie waiting for its (test-process) parent: killed either way.
            let state = std::fs::read_to_string(format!("/proc/{background}/stat")).ok();
            if state.is_none_or(|s| s.split_whitespace().nth(2) == Some("Z")) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the hook's background process {background} outlived it");
    }

    #[tokio::test]
    async fn generic_script_gets_keepalived_arguments_after_the_per_state_one() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let log = format!("echo \"$0 $*\" >> {}", out.display());
        let generic = script(dir.path(), "notify.sh", &log);
        let master = script(dir.path(), "master.sh", &log);
        let stop = script(dir.path(), "stop.sh", &log);
        let notifier = Notifier::new(&config(&format!(
            "script = \"{generic} --from-raftvip\"\nmaster = \"{master}\"\nstop = \"{stop} now\""
        )));
        for event in [Event::Backup, Event::Master, Event::Fault, Event::Stop] {
            notifier.fire(event, &context(7));
        }
        notifier.flush().await;
        assert_eq!(
            lines(&out),
            [
                format!("{generic} --from-raftvip INSTANCE lb-test BACKUP 100"),
                format!("{master} "),
                format!("{generic} --from-raftvip INSTANCE lb-test MASTER 100"),
                format!("{generic} --from-raftvip INSTANCE lb-test FAULT 100"),
                format!("{stop} now"),
                format!("{generic} --from-raftvip INSTANCE lb-test STOP 100"),
            ]
        );
    }

    #[tokio::test]
    async fn hooks_get_node_leader_term_vips_and_reason_in_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let hook = script(
            dir.path(),
            "master.sh",
            &format!("env | grep ^RAFTVIP_ | sort > {}", out.display()),
        );
        let notifier = Notifier::new(&config(&format!("master = \"{hook}\"")));
        notifier.fire(Event::Master, &context(42));
        notifier.flush().await;
        assert_eq!(
            lines(&out),
            [
                "RAFTVIP_CLUSTER=lb-test",
                "RAFTVIP_LEADER_ID=2",
                "RAFTVIP_NODE_ID=2",
                "RAFTVIP_PRIORITY=100",
                "RAFTVIP_REASON=leader with quorum",
                "RAFTVIP_STATE=MASTER",
                "RAFTVIP_TERM=42",
                "RAFTVIP_VIPS=192.0.2.100/32 2001:db8::100/128",
            ]
        );

        let _ = std::fs::remove_file(&out);
        let no_leader = HookContext {
            leader_id: None,
            ..context(43)
        };
        notifier.fire(Event::Master, &no_leader);
        notifier.flush().await;
        assert!(lines(&out).contains(&"RAFTVIP_LEADER_ID=".to_owned()));
    }

    #[tokio::test]
    async fn a_burst_runs_one_hook_at_a_time_in_event_order() {
        let dir = tempfile::tempdir().unwrap();
        let (out, running) = (dir.path().join("out"), dir.path().join("running"));
        // Fails loudly if two runs overlap; the sleep widens the window for a race.
        let hook = script(
            dir.path(),
            "notify.sh",
            &format!(
                "mkdir {r} || echo OVERLAP >> {o}\necho \"$3 $RAFTVIP_TERM\" >> {o}\nsleep 0.01\nrmdir {r}",
                r = running.display(),
                o = out.display()
            ),
        );
        let notifier = Notifier::new(&config(&format!("script = \"{hook}\"")));
        let events = [Event::Master, Event::Backup, Event::Fault];
        let mut want = Vec::new();
        for term in 0..30 {
            let event = events[term as usize % 3];
            notifier.fire(event, &context(term));
            want.push(format!("{} {term}", event.state()));
        }
        notifier.flush().await;
        assert_eq!(lines(&out), want);
    }

    #[tokio::test]
    async fn a_hung_hook_is_killed_with_its_children_at_the_timeout_and_the_next_runs() {
        let dir = tempfile::tempdir().unwrap();
        let (out, child_pid) = (dir.path().join("out"), dir.path().join("child.pid"));
        let hung = script(
            dir.path(),
            "master.sh",
            &format!("sleep 60 &\necho $! > {}\nwait", child_pid.display()),
        );
        let next = script(
            dir.path(),
            "backup.sh",
            &format!("echo ran >> {}", out.display()),
        );
        let notifier = Notifier::new(&config(&format!(
            "master = \"{hung}\"\nbackup = \"{next}\"\ntimeout_ms = 300"
        )));
        let started = std::time::Instant::now();
        notifier.fire(Event::Master, &context(1));
        notifier.fire(Event::Backup, &context(1));
        notifier.flush().await;
        let took = started.elapsed();
        assert_eq!(lines(&out), ["ran"]);
        assert!(
            took >= Duration::from_millis(300) && took < Duration::from_secs(3),
            "{took:?}"
        );
        // The hook's own child died with it (same process group): gone or a zombie.
        let pid = std::fs::read_to_string(&child_pid).unwrap();
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid.trim()));
        assert!(
            stat.as_deref().map_or(true, |s| s.contains(") Z ")),
            "sleep {pid} survived: {stat:?}"
        );
    }

    #[tokio::test]
    async fn firing_never_blocks_and_overflow_drops_the_oldest_waiting_events() {
        let dir = tempfile::tempdir().unwrap();
        let (out, release) = (dir.path().join("out"), dir.path().join("release"));
        // The first event's hook blocks until the burst is queued.
        let hook = script(
            dir.path(),
            "notify.sh",
            &format!(
                "echo \"$RAFTVIP_TERM\" >> {o}\nwhile [ \"$RAFTVIP_TERM\" = 0 ] && [ ! -e {r} ]; do sleep 0.01; done",
                o = out.display(),
                r = release.display()
            ),
        );
        let notifier = Notifier::new(&config(&format!("script = \"{hook}\"")));
        notifier.fire(Event::Master, &context(0));
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while lines(&out).is_empty() && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let burst = 100;
        let started = std::time::Instant::now();
        for term in 1..=burst {
            notifier.fire(Event::Backup, &context(term));
        }
        assert!(started.elapsed() < Duration::from_millis(100));
        std::fs::write(&release, "").unwrap();
        notifier.flush().await;
        let kept = (burst - QUEUE_CAPACITY as u64 + 1)..=burst;
        let want: Vec<String> = std::iter::once(0)
            .chain(kept)
            .map(|t| t.to_string())
            .collect();
        assert_eq!(lines(&out), want);
    }

    /// The log lines written while `body` runs (single-threaded runtime: the hook task logs on
    /// this thread).
    async fn logged<F: std::future::Future<Output = ()>>(body: F) -> String {
        // One global subscriber that writes to the capture of the thread logging, if any: a
        // subscriber set per test raced with callsites other test threads registered at the
        // same moment, which then cached "nobody listens" (CI lost "notify hook ran" so).
        thread_local! {
            static CAPTURE: std::cell::RefCell<Option<Vec<u8>>> = const { std::cell::RefCell::new(None) };
        }
        struct ThreadCapture;
        impl std::io::Write for ThreadCapture {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                CAPTURE.with(|c| {
                    if let Some(buffer) = c.borrow_mut().as_mut() {
                        buffer.extend_from_slice(bytes);
                    }
                });
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        static GLOBAL: std::sync::Once = std::sync::Once::new();
        GLOBAL.call_once(|| {
            let subscriber = tracing_subscriber::fmt()
                .with_writer(|| ThreadCapture)
                .with_ansi(false)
                .finish();
            tracing::subscriber::set_global_default(subscriber)
                .expect("no other global subscriber in the unit tests");
        });
        tracing::callsite::rebuild_interest_cache();
        CAPTURE.with(|c| *c.borrow_mut() = Some(Vec::new()));
        body.await;
        let captured = CAPTURE.with(|c| c.borrow_mut().take()).unwrap_or_default();
        String::from_utf8_lossy(&captured).into_owned()
    }

    #[tokio::test]
    async fn output_goes_to_the_log_truncated() {
        let dir = tempfile::tempdir().unwrap();
        let hook = script(
            dir.path(),
            "fault.sh",
            "echo moved the cloud IP\necho 'no route' >&2\nhead -c 100000 /dev/zero | tr '\\0' x >&2\nexit 3",
        );
        let notifier = Notifier::new(&config(&format!("fault = \"{hook}\"")));
        let log = logged(async {
            notifier.fire(Event::Fault, &context(5));
            notifier.flush().await;
        })
        .await;
        assert!(log.contains("notify hook failed"), "{log}");
        assert!(log.contains("exit status: 3"), "{log}");
        assert!(log.contains("stdout=moved the cloud IP"), "{log}");
        assert!(log.contains("stderr=no route"), "{log}");
        let dropped = 100_000 + "no route\n".len() - MAX_CAPTURED_BYTES;
        assert!(
            log.contains(&format!("[... {dropped} more bytes not logged]")),
            "{log}"
        );
        assert!(log.len() < 3 * MAX_CAPTURED_BYTES, "{} bytes", log.len());
    }

    #[tokio::test]
    async fn a_missing_or_unsafe_program_is_not_run_and_the_next_hook_runs() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let hook = script(
            dir.path(),
            "notify.sh",
            &format!("echo \"$3\" >> {}", out.display()),
        );
        let notifier = Notifier::new(&config(&format!(
            "master = \"/nonexistent/master.sh\"\nscript = \"{hook}\""
        )));
        let log = logged(async {
            notifier.fire(Event::Master, &context(1));
            notifier.flush().await;
        })
        .await;
        assert!(log.contains("notify hook not run"), "{log}");
        assert!(log.contains("cannot use /nonexistent/master.sh"), "{log}");
        assert_eq!(lines(&out), ["MASTER"]);
        // A hook that printed nothing has no empty stdout / stderr fields in its log line.
        assert!(log.contains("notify hook ran"), "{log}");
        assert!(
            !log.contains("stdout=") && !log.contains("stderr="),
            "{log}"
        );
    }

    #[tokio::test]
    async fn without_hooks_firing_and_flushing_do_nothing() {
        let notifier = Notifier::new(&config(""));
        notifier.fire(Event::Master, &context(1));
        notifier.flush().await;
        assert!(crate::sync::lock(&notifier.hooks).is_none());
    }

    #[tokio::test]
    async fn a_program_others_can_change_is_not_run() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let hook = script(
            dir.path(),
            "master.sh",
            &format!("echo ran >> {}", out.display()),
        );
        std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o777)).unwrap();
        let notifier = Notifier::new(&config(&format!("master = \"{hook}\"")));
        let log = logged(async {
            notifier.fire(Event::Master, &context(1));
            notifier.flush().await;
        })
        .await;
        assert!(log.contains("can be changed by other users"), "{log}");
        assert!(log.contains(&format!("chmod go-w {hook}")), "{log}");
        assert!(!out.exists());
    }

    #[test]
    fn hook_keys_are_checked_naming_the_key_the_problem_and_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let good = script(dir.path(), "good.sh", "true");
        let not_executable = dir.path().join("plain.sh");
        std::fs::write(&not_executable, "true").unwrap();
        std::fs::set_permissions(&not_executable, std::fs::Permissions::from_mode(0o644)).unwrap();
        let writable = script(dir.path(), "writable.sh", "true");
        std::fs::set_permissions(&writable, std::fs::Permissions::from_mode(0o777)).unwrap();
        let notify = config(&format!(
            "script = \"{good} arg\"\nmaster = \"notify.sh\"\nbackup = \"{}\"\n\
             fault = \"{writable}\"\nstop = \" \"\ntimeout_ms = 50",
            not_executable.display()
        ))
        .notify;
        // Errors: the config is wrong wherever it runs.
        let problems = notify.problems();
        let found: Vec<(&str, &str)> = problems
            .iter()
            .map(|p| (p.key.as_str(), p.what.as_str()))
            .collect();
        assert_eq!(found.len(), 3, "{problems:?}");
        assert!(found[0].0 == "notify.master" && found[0].1.contains("not an absolute path"));
        assert!(found[1] == ("notify.stop", "is empty"));
        assert!(found[2].0 == "notify.timeout_ms" && found[2].1.contains("100 to 600000"));
        assert!(problems.iter().all(|p| !p.fix.is_empty()));
        // Warnings: the file as it is on this box now; the daemon starts anyway.
        let warnings = notify.warnings();
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(warnings[0].starts_with("notify.backup") && warnings[0].contains("(chmod +x "));
        assert!(warnings[1].starts_with("notify.fault") && warnings[1].contains("(chmod go-w "));

        let missing = config("script = \"/nonexistent/notify.sh\"").notify;
        assert!(missing.problems().is_empty());
        assert!(
            missing.warnings()[0].starts_with("notify.script: cannot use /nonexistent/notify.sh")
        );
        assert_eq!(config("").notify.timeout(), Duration::from_secs(10));
    }
}
