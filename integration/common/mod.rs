//! Shared helpers of the integration tests (each test binary takes them with `mod common;`,
//! the Cargo book's convention, rather than keeping a copy): free ports, an HTTP client, and
//! the multi-process tests' real `raftvip` processes on loopback.
//!
//! Every cluster lives in its own temporary directory with ports picked free by the kernel,
//! and every child is SIGKILLed and reaped when its [`Node`] (or the [`Cluster`]) is dropped,
//! so a failing assertion never leaves a daemon behind. Tests poll status documents against a
//! deadline instead of sleeping: the outcome is asserted, not the exact timing.

#![allow(dead_code)] // Not every test binary uses every helper.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use raftvip::auth::Authenticator;
use raftvip::config::Secret;
use raftvip::status::{RaftRole, Status};

/// Generous: an election takes ~0.2 s, but the test machine has two cores that parallel tests
/// (and other builds) share.
pub const DEADLINE: Duration = Duration::from_secs(5);
/// Between two polls of the status documents.
const POLL_EVERY: Duration = Duration::from_millis(20);
/// Timeout of one HTTP exchange with a node on loopback.
const HTTP_TIMEOUT: Duration = Duration::from_secs(1);

pub const BIN: &str = env!("CARGO_BIN_EXE_raftvip");

/// A running `raftvip run` child; killed and reaped on drop.
pub struct Node {
    pub id: u64,
    child: Child,
}

impl Node {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL and reap.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits for the exit; returns the status and how long it took.
    pub fn terminate(mut self, limit: Duration) -> (Option<ExitStatus>, Duration) {
        let start = Instant::now();
        signal(self.child.id(), Signal::SIGTERM);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return (Some(status), start.elapsed());
            }
            if start.elapsed() > limit {
                return (None, start.elapsed());
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Whether the process has exited (reaping it if so).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Signals a child of the test (not yet reaped, so the pid is still ours).
pub fn signal(pid: u32, sig: Signal) {
    let pid = Pid::from_raw(i32::try_from(pid).expect("a pid"));
    kill(pid, sig).unwrap_or_else(|e| panic!("kill -{sig} {pid}: {e}"));
}

/// One member's static description.
#[derive(Clone, Debug)]
pub struct Member {
    pub id: u64,
    pub address: SocketAddr,
    pub witness: bool,
}

/// A cluster's files and processes. Nodes are addressed by id (1-based).
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub name: String,
    pub members: Vec<Member>,
    pub nodes: Vec<Option<Node>>,
    /// Extra TOML appended to every node's config (e.g. a `[timing]` section).
    pub extra: String,
}

/// Ports the kernel reports free right now. Listeners are held until all are picked, so the
/// ports are distinct; another process could still take one before the node binds it, which
/// the node reports as a clear "cannot listen" error.
pub fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("local addr").port())
        .collect()
}

impl Cluster {
    /// `n` members; the ids in `witnesses` get `role = "witness"`. Nothing is started.
    pub fn new(n: usize, witnesses: &[u64]) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("raftvip-cluster-")
            .tempdir()
            .expect("tempdir");
        std::fs::write(
            dir.path().join("secret"),
            "integration-test-secret-0123456789abcdef\n",
        )
        .expect("write secret");
        // raftvip refuses a secret that group or others can read.
        std::fs::set_permissions(
            dir.path().join("secret"),
            <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o600),
        )
        .expect("chmod secret");
        let members = free_ports(n)
            .into_iter()
            .enumerate()
            .map(|(i, port)| Member {
                id: i as u64 + 1,
                address: SocketAddr::from(([127, 0, 0, 1], port)),
                witness: witnesses.contains(&(i as u64 + 1)),
            })
            .collect();
        let cluster = Self {
            dir,
            name: "it".to_owned(),
            members,
            nodes: (0..n).map(|_| None).collect(),
            extra: String::new(),
        };
        for id in cluster.ids() {
            cluster.write_config(id);
        }
        cluster
    }

    pub fn ids(&self) -> Vec<u64> {
        self.members.iter().map(|m| m.id).collect()
    }

    pub fn member(&self, id: u64) -> &Member {
        &self.members[id as usize - 1]
    }

    pub fn secret_path(&self) -> PathBuf {
        self.dir.path().join("secret")
    }

    /// Signs peer requests as node `from` of this cluster, with `secret` (a wrong one, to be
    /// refused) or, by default, the cluster's own.
    pub fn signer_with(&self, secret: &[u8], from: u64) -> Authenticator {
        Authenticator::new(Secret::new(secret.to_vec()), &self.name, from)
    }

    /// Signs peer requests as node `from`, with the secret the nodes read.
    pub fn signer(&self, from: u64) -> Authenticator {
        let secret = std::fs::read(self.secret_path()).expect("read the cluster secret");
        self.signer_with(secret.trim_ascii(), from)
    }

    pub fn data_dir(&self, id: u64) -> PathBuf {
        self.dir.path().join(format!("data{id}"))
    }

    pub fn config_path(&self, id: u64) -> PathBuf {
        self.dir.path().join(format!("node{id}.toml"))
    }

    pub fn log_path(&self, id: u64) -> PathBuf {
        self.dir.path().join(format!("node{id}.log"))
    }

    /// The config text of node `id`, with `cluster` and `data_dir` as given.
    pub fn config_text(&self, id: u64, cluster: &str, data_dir: &Path) -> String {
        let me = self.member(id);
        let mut text = format!(
            "cluster = \"{cluster}\"\nnode_id = {id}\nlisten = \"{}\"\ndata_dir = \"{}\"\nsecret_file = \"{}\"\n",
            me.address,
            data_dir.display(),
            self.secret_path().display()
        );
        if me.witness {
            text.push_str("role = \"witness\"\n");
        }
        if self.members.len() < 3 {
            // Small clusters here test Raft, not failover: acknowledge that they have none.
            text.push_str("accept_no_failover = true\n");
        }
        for m in &self.members {
            text.push_str(&format!(
                "[[peer]]\nid = {}\naddress = \"{}\"\n",
                m.id, m.address
            ));
            if m.witness {
                text.push_str("role = \"witness\"\n");
            }
        }
        text.push_str(&self.extra);
        text
    }

    pub fn write_config(&self, id: u64) {
        let text = self.config_text(id, &self.name, &self.data_dir(id));
        std::fs::write(self.config_path(id), text).expect("write config");
    }

    /// Starts `raftvip run` for node `id` (its stderr appends to node{id}.log).
    pub fn start(&mut self, id: u64) {
        assert!(
            self.nodes[id as usize - 1].is_none(),
            "node {id} already runs"
        );
        let child = spawn_run(&self.config_path(id), &self.log_path(id));
        self.nodes[id as usize - 1] = Some(Node { id, child });
    }

    pub fn start_all(&mut self) {
        for id in self.ids() {
            self.start(id);
        }
    }

    /// Takes node `id` out of the cluster's care (to kill or terminate it).
    pub fn take(&mut self, id: u64) -> Node {
        self.nodes[id as usize - 1]
            .take()
            .unwrap_or_else(|| panic!("node {id} is not running"))
    }

    pub fn kill(&mut self, id: u64) {
        self.take(id).kill();
    }

    pub fn running(&self) -> Vec<u64> {
        self.nodes.iter().flatten().map(|n| n.id).collect()
    }

    pub fn status(&self, id: u64) -> Option<Status> {
        fetch_status(self.member(id).address)
    }

    /// Polls until `check` accepts the status documents of `ids` (all must answer), or panics
    /// after `deadline` with the last documents and `what`.
    pub fn wait_for<T>(
        &self,
        ids: &[u64],
        deadline: Duration,
        what: &str,
        mut check: impl FnMut(&[Status]) -> Option<T>,
    ) -> T {
        let start = Instant::now();
        let mut last = Vec::new();
        loop {
            let statuses: Option<Vec<Status>> = ids.iter().map(|id| self.status(*id)).collect();
            if let Some(statuses) = statuses {
                if let Some(found) = check(&statuses) {
                    return found;
                }
                last = statuses;
            }
            if start.elapsed() > deadline {
                panic!(
                    "timed out after {deadline:?} waiting for {what}; last statuses:\n{}",
                    summary(&last)
                );
            }
            std::thread::sleep(POLL_EVERY);
        }
    }

    /// Waits until exactly one of `ids` is leader and all of `ids` agree on it and the term.
    /// Returns (leader, term).
    pub fn wait_for_leader(&self, ids: &[u64], deadline: Duration) -> (u64, u64) {
        self.wait_for(ids, deadline, "one agreed leader", agreed_leader)
    }

    fn dump_logs(&self) {
        for m in &self.members {
            if let Ok(log) = std::fs::read_to_string(self.log_path(m.id)) {
                eprintln!("----- node {} log -----\n{log}", m.id);
            }
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Kill first, then show the logs of a failed test.
        self.nodes.clear();
        if std::thread::panicking() {
            self.dump_logs();
        }
    }
}

/// Exactly one leader, and every status names it and the same term.
pub fn agreed_leader(statuses: &[Status]) -> Option<(u64, u64)> {
    let leaders: Vec<&Status> = statuses
        .iter()
        .filter(|s| s.role == RaftRole::Leader)
        .collect();
    let [leader] = leaders.as_slice() else {
        return None;
    };
    let agreed = statuses
        .iter()
        .all(|s| s.leader_id == Some(leader.node_id) && s.term == leader.term);
    agreed.then_some((leader.node_id, leader.term))
}

pub fn summary(statuses: &[Status]) -> String {
    statuses
        .iter()
        .map(|s| {
            format!(
                "  node {} role {} leader {:?} term {} rejected {} leader_changes {}\n",
                s.node_id,
                s.role.name(),
                s.leader_id,
                s.term,
                s.counters.rejected_requests,
                s.counters.leader_changes
            )
        })
        .collect()
}

/// Spawns `raftvip run --config CONFIG`, stderr appended to `log`.
pub fn spawn_run(config: &Path, log: &Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("open log");
    Command::new(BIN)
        .arg("run")
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn raftvip")
}

/// Runs a `raftvip` subcommand to completion; returns (exit status, stdout, stderr).
/// Runs the CLI as an operator whose shell sets a proxy nothing answers at: every command
/// must still reach the daemon directly.
pub fn run_cli(args: &[&str]) -> (ExitStatus, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .env("http_proxy", "http://127.0.0.1:9")
        .env("HTTP_PROXY", "http://127.0.0.1:9")
        .env("ALL_PROXY", "http://127.0.0.1:9")
        .stdin(Stdio::null())
        .output()
        .expect("run raftvip");
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `GET /v1/status`; None when the node does not answer (yet).
pub fn fetch_status(address: SocketAddr) -> Option<Status> {
    let (code, body) = http(address, "GET", "/v1/status", &[], b"").ok()?;
    if code != 200 {
        return None;
    }
    serde_json::from_slice(&body).ok()
}

/// One HTTP exchange on a fresh connection (no connection is kept between calls, so a
/// restarted node or a connection cap sees every request anew); returns (status code, body).
pub fn http(
    address: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> reqwest::Result<(u16, Vec<u8>)> {
    static CLIENT: OnceLock<reqwest::blocking::Client> = OnceLock::new();
    let client = CLIENT.get_or_init(|| {
        reqwest::blocking::Client::builder()
            .no_proxy() // the nodes are on loopback, whatever the environment's proxy
            .connect_timeout(HTTP_TIMEOUT)
            .timeout(HTTP_TIMEOUT)
            .pool_max_idle_per_host(0)
            .build()
            .expect("an HTTP client")
    });
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("an HTTP method");
    let mut request = client.request(method, format!("http://{address}{path}"));
    if !body.is_empty() {
        request = request.header("Content-Type", "application/json");
    }
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    let response = request.body(body.to_vec()).send()?;
    let code = response.status().as_u16();
    Ok((code, response.bytes()?.to_vec()))
}
