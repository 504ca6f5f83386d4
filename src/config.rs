//! The configuration file: one TOML file, identical on every box except `node_id` (and `role`
//! on a witness).
//!
//! Parsing is strict (`deny_unknown_fields`) because a misspelt key in a failover daemon is a
//! silent outage waiting to happen. [`Config::load`] parses, then [`Config::validate`] collects
//! *every* problem at once, each naming the key, what is wrong and how to fix it, so
//! `raftvip check-config` can be run in a loop while editing.

use std::collections::HashSet;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::raft::NodeId;

/// Shortest accepted shared secret: 32 bytes is the HMAC-SHA256 block-size guidance for a
/// full-strength key (RFC 2104 §3 recommends at least the hash output length).
pub const MIN_SECRET_LEN: usize = 32;

/// Longest interface label the kernel stores (IFNAMSIZ − 1).
const MAX_LABEL_LEN: usize = 15;

/// How many heartbeats an election timeout must span at least: fewer and one delayed
/// heartbeat on a busy box starts a needless election.
pub const MIN_HEARTBEATS_PER_ELECTION_TIMEOUT: u64 = 3;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Cluster name; part of every request signature, so two clusters never talk.
    pub cluster: String,
    pub node_id: NodeId,
    /// Peer RPC and status API address of this node.
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub secret_file: PathBuf,
    #[serde(default)]
    pub role: Role,
    #[serde(rename = "peer", default)]
    pub peers: Vec<Peer>,
    #[serde(rename = "vip", default)]
    pub vips: Vec<VipConfig>,
    /// Required unless this node is a witness.
    pub haproxy: Option<HaproxyConfig>,
    #[serde(default)]
    pub timing: Timing,
    #[serde(default)]
    pub announce: Announce,
    #[serde(default)]
    pub notify: Notify,
    /// Optional separate address for /v1/status and /metrics (loopback or a management
    /// network); when set, the peer port (`listen`) serves peers only.
    #[serde(default)]
    pub status_listen: Option<SocketAddr>,
    #[serde(default)]
    pub limits: Limits,
}

/// Resource limits of the HTTP listeners.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Open connections per listener; beyond it a new one evicts the oldest unauthenticated.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: default_max_connections(),
        }
    }
}

fn default_max_connections() -> usize {
    crate::api::server::DEFAULT_MAX_CONNECTIONS
}

/// Bounds of `[limits] max_connections`: a cluster needs a handful of connections, and each
/// costs a descriptor, so beyond this the cap no longer protects the descriptor table.
pub const MAX_CONNECTIONS_RANGE: std::ops::RangeInclusive<usize> = 8..=16_384;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Stands in elections (while healthy) and holds the VIP when leader.
    #[default]
    Voter,
    /// Votes, never leads, needs neither HAProxy nor a VIP: the third vote of a 2-box site.
    Witness,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Peer {
    pub id: NodeId,
    pub address: SocketAddr,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VipConfig {
    /// `ADDRESS/PREFIX`, e.g. `192.0.2.100/32` or `2001:db8::100/128`.
    pub address: String,
    pub interface: String,
    /// Optional IPv4 address label such as `eth0:vip` (shown by `ip addr`).
    pub label: Option<String>,
}

/// A VIP after validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct VipAddr {
    pub ip: IpAddr,
    pub prefix_len: u8,
}

impl fmt::Display for VipAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.ip, self.prefix_len)
    }
}

impl VipAddr {
    /// Parses `ADDRESS/PREFIX`; the error says what is wrong in operator terms.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (ip, prefix) = text
            .split_once('/')
            .ok_or_else(|| format!("'{text}' has no prefix length"))?;
        let ip: IpAddr = ip
            .parse()
            .map_err(|_| format!("'{ip}' is not an IPv4 or IPv6 address"))?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let prefix_len: u8 =
            prefix.parse().ok().filter(|p| *p <= max).ok_or_else(|| {
                format!("prefix length '{prefix}' is not a number from 0 to {max}")
            })?;
        if ip.is_unspecified() || ip.is_loopback() || ip.is_multicast() {
            return Err(format!(
                "{ip} is an unspecified, loopback or multicast address"
            ));
        }
        if let IpAddr::V4(v4) = ip {
            if v4.is_broadcast() {
                return Err(format!("{ip} is the broadcast address"));
            }
        }
        Ok(Self { ip, prefix_len })
    }
}

impl VipConfig {
    /// The parsed address; only valid after [`Config::validate`] succeeded.
    pub fn addr(&self) -> VipAddr {
        VipAddr::parse(&self.address).expect("VIP addresses are checked by Config::validate")
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HaproxyConfig {
    /// HAProxy's runtime API socket (`stats socket` in haproxy.cfg).
    pub stats_socket: PathBuf,
    /// Frontends that must be OPEN; empty means every frontend.
    #[serde(default)]
    pub frontends: Vec<String>,
    /// Backends that must be UP; empty means every backend.
    #[serde(default)]
    pub backends: Vec<String>,
    /// Minimum servers UP in each required backend.
    #[serde(default = "default_min_servers_up")]
    pub min_servers_up: u32,
    /// How often the stats are polled.
    #[serde(default = "default_poll_interval_ms")]
    pub poll_interval_ms: u64,
    /// Connect + read timeout of one check.
    #[serde(default = "default_check_timeout_ms")]
    pub timeout_ms: u64,
    /// Consecutive healthy checks before an unhealthy node counts as healthy.
    #[serde(default = "default_rise")]
    pub rise: u32,
    /// Consecutive failed checks before a healthy node counts as unhealthy.
    #[serde(default = "default_fall")]
    pub fall: u32,
}

fn default_min_servers_up() -> u32 {
    1
}
/// 100 ms: ten times keepalived's floor of one check a second, at well under 1 ms CPU each.
fn default_poll_interval_ms() -> u64 {
    100
}
/// An answer takes ~1 ms; 250 ms only fires when HAProxy is wedged.
fn default_check_timeout_ms() -> u64 {
    250
}
/// Two good checks (200 ms) before standing again: one lucky answer is no recovery.
fn default_rise() -> u32 {
    2
}
/// Two bad polls before giving up the VIP; death is caught at once by the open session.
fn default_fall() -> u32 {
    2
}

/// Raft and fencing timing. Defaults come from measurement: see docs/timing.md.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Timing {
    #[serde(default = "default_heartbeat_ms")]
    pub heartbeat_ms: u64,
    /// `[min, max]`: each node picks its election timeout in this range.
    #[serde(default = "default_election_timeout_ms")]
    pub election_timeout_ms: [u64; 2],
    /// A leader whose quorum has not acknowledged it for this long drops the VIPs. Default:
    /// [`DEFAULT_FENCE_MARGIN_MS`] under the maximum election timeout.
    pub fence_ms: Option<u64>,
    /// Period of the safety-net re-check of the VIPs (netlink events catch changes at once;
    /// the fence is a precise deadline, not polled).
    #[serde(default = "default_reconcile_ms")]
    pub reconcile_ms: u64,
}

fn default_heartbeat_ms() -> u64 {
    20
}
fn default_election_timeout_ms() -> [u64; 2] {
    [60, 90]
}
fn default_reconcile_ms() -> u64 {
    1000
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            heartbeat_ms: default_heartbeat_ms(),
            election_timeout_ms: default_election_timeout_ms(),
            fence_ms: None,
            reconcile_ms: default_reconcile_ms(),
        }
    }
}

/// Time between a lost quorum ack reaching the fence and the VIP being gone: the metrics
/// delivery to the supervisor plus the netlink delete (≈ 0.1 ms measured; kept generous for a
/// loaded box). Part of the fencing inequality in docs/timing.md.
pub const FENCE_SLACK_MS: u64 = 5;

/// The default fence sits this far under `election_timeout_max`: twice [`FENCE_SLACK_MS`].
/// As late as is safe, because a healthy leader's ack age is up to one timer tick (1.5 ×
/// heartbeat) plus a round trip, and heartbeats stall for tens of ms on a saturated box: a
/// tight fence would drop the VIP of a leader nobody is replacing.
pub const DEFAULT_FENCE_MARGIN_MS: u64 = 2 * FENCE_SLACK_MS;

impl Timing {
    pub fn heartbeat(&self) -> Duration {
        Duration::from_millis(self.heartbeat_ms)
    }
    pub fn fence(&self) -> Duration {
        Duration::from_millis(self.fence_ms())
    }
    pub fn fence_ms(&self) -> u64 {
        self.fence_ms.unwrap_or_else(|| {
            self.election_timeout_ms[1]
                .saturating_sub(DEFAULT_FENCE_MARGIN_MS)
                .max(1)
        })
    }
    pub fn reconcile(&self) -> Duration {
        Duration::from_millis(self.reconcile_ms)
    }
}

/// Gratuitous ARP / unsolicited NA announcements of a new holder.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Announce {
    /// Frames (of each form) sent on takeover.
    #[serde(default = "default_burst_count")]
    pub burst_count: u32,
    #[serde(default = "default_burst_interval_ms")]
    pub burst_interval_ms: u64,
    /// Re-announce while holding, for switches with long ARP timeouts; 0 turns it off.
    #[serde(default = "default_refresh_s")]
    pub refresh_s: u64,
}

/// Three frames like most anchors; 3 × 20 ms leaves a lost first frame harmless.
fn default_burst_count() -> u32 {
    3
}
fn default_burst_interval_ms() -> u64 {
    20
}
/// kube-vip refreshes every 3 s; 10 s keeps switch tables fresh at a tenth of the noise.
fn default_refresh_s() -> u64 {
    10
}

impl Default for Announce {
    fn default() -> Self {
        Self {
            burst_count: default_burst_count(),
            burst_interval_ms: default_burst_interval_ms(),
            refresh_s: default_refresh_s(),
        }
    }
}

/// Hooks run on transitions (`NAME EVENT` as arguments, like keepalived's notify).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Notify {
    /// Run with `master`, `backup` or `fault` when the VIP is taken, released or health fails.
    pub script: Option<PathBuf>,
}

/// The shared secret; never printed.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl Secret {
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// One problem found in the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The key, as written in the file (`peer[2].address`).
    pub key: String,
    pub what: String,
    pub fix: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} (fix: {})", self.key, self.what, self.fix)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LoadConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path} is not valid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config file {path} has {} problem(s):\n{}", problems.len(), render(problems))]
    Invalid {
        path: PathBuf,
        problems: Vec<Problem>,
    },
}

fn render(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("  - {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}

impl Config {
    /// Reads, parses and validates `path`, and reads the secret it names.
    pub fn load(path: &Path) -> Result<(Config, Secret), LoadConfigError> {
        let config = Self::read(path)?;
        let (problems, secret) = config.validate();
        match secret {
            Some(secret) if problems.is_empty() => Ok((config, secret)),
            _ => Err(LoadConfigError::Invalid {
                path: path.to_owned(),
                problems,
            }),
        }
    }

    /// Reads and parses `path` without validating it or reading the secret (enough for the
    /// read-only `raftvip status`).
    pub fn read(path: &Path) -> Result<Config, LoadConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| LoadConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text).map_err(|message| LoadConfigError::Parse {
            path: path.to_owned(),
            message,
        })
    }

    /// Parses TOML text; unknown keys and wrong types are errors with a line and column.
    pub fn parse(text: &str) -> Result<Config, String> {
        toml::from_str(text).map_err(|e| e.to_string().trim_end().to_owned())
    }

    /// Every problem in the config, plus the secret when it could be read and is long enough.
    pub fn validate(&self) -> (Vec<Problem>, Option<Secret>) {
        let mut problems = Vec::new();
        let mut problem = |key: &str, what: String, fix: &str| {
            problems.push(Problem {
                key: key.to_owned(),
                what,
                fix: fix.to_owned(),
            })
        };

        if self.cluster.trim().is_empty() {
            problem(
                "cluster",
                "is empty".into(),
                "give the cluster a name, e.g. cluster = \"lb-prod\"",
            );
        }

        // Peers: unique ids and addresses, this node among them.
        if self.peers.is_empty() {
            problem(
                "peer",
                "no [[peer]] entries".into(),
                "list every member, this node included, as [[peer]] id = N, address = \"IP:PORT\"",
            );
        }
        let mut ids = HashSet::new();
        let mut addresses = HashSet::new();
        for (i, peer) in self.peers.iter().enumerate() {
            if !ids.insert(peer.id) {
                problem(
                    &format!("peer[{i}].id"),
                    format!("id {} is used by more than one peer", peer.id),
                    "give every peer its own id",
                );
            }
            if !addresses.insert(peer.address) {
                problem(
                    &format!("peer[{i}].address"),
                    format!("address {} is used by more than one peer", peer.address),
                    "give every peer its own IP:PORT",
                );
            }
            if peer.address.ip().is_unspecified() || peer.address.port() == 0 {
                problem(
                    &format!("peer[{i}].address"),
                    format!("{} is not an address other nodes can reach", peer.address),
                    "use the node's real IP and a fixed port, e.g. 192.0.2.11:7480",
                );
            }
        }
        match self.peers.iter().find(|p| p.id == self.node_id) {
            None if !self.peers.is_empty() => problem(
                "node_id",
                format!("node {} is not in the [[peer]] list", self.node_id),
                "add this node as a [[peer]] or correct node_id",
            ),
            Some(me) if me.address.port() != self.listen.port() => problem(
                "listen",
                format!(
                    "listens on port {} but [[peer]] id {} says port {}",
                    self.listen.port(),
                    me.id,
                    me.address.port()
                ),
                "make listen and this node's [[peer]] address use the same port",
            ),
            _ => {}
        }

        // VIPs.
        let mut vip_ips = HashSet::new();
        for (i, vip) in self.vips.iter().enumerate() {
            match VipAddr::parse(&vip.address) {
                Err(what) => problem(
                    &format!("vip[{i}].address"),
                    what,
                    "write ADDRESS/PREFIX, e.g. \"192.0.2.100/32\" or \"2001:db8::100/128\"",
                ),
                Ok(addr) => {
                    if !vip_ips.insert(addr.ip) {
                        problem(
                            &format!("vip[{i}].address"),
                            format!("{} is listed twice", addr.ip),
                            "list each VIP once",
                        );
                    }
                    if self.peers.iter().any(|p| p.address.ip() == addr.ip) {
                        problem(
                            &format!("vip[{i}].address"),
                            format!("{} is also a peer address", addr.ip),
                            "peers must talk over their own fixed addresses, never the VIP",
                        );
                    }
                }
            }
            if vip.interface.is_empty() || vip.interface.len() > MAX_LABEL_LEN {
                problem(
                    &format!("vip[{i}].interface"),
                    format!("'{}' is not a valid interface name", vip.interface),
                    "name the interface that faces the clients, e.g. \"eth0\"",
                );
            }
            if let Some(label) = &vip.label {
                if label.is_empty()
                    || label.len() > MAX_LABEL_LEN
                    || !label.starts_with(vip.interface.as_str())
                {
                    problem(
                        &format!("vip[{i}].label"),
                        format!(
                            "'{label}' must start with the interface name and be at most {MAX_LABEL_LEN} characters"
                        ),
                        "use INTERFACE:NAME, e.g. \"eth0:vip\"",
                    );
                }
            }
        }

        // HAProxy.
        if let Some(h) = &self.haproxy {
            if h.poll_interval_ms == 0 || h.timeout_ms == 0 {
                problem(
                    "haproxy.poll_interval_ms",
                    "poll_interval_ms and timeout_ms must be above 0".into(),
                    "use e.g. poll_interval_ms = 100, timeout_ms = 250",
                );
            }
            if h.rise == 0 || h.fall == 0 {
                problem(
                    "haproxy.rise",
                    "rise and fall must be at least 1".into(),
                    "use e.g. rise = 2, fall = 2",
                );
            }
        }

        // Timing: Raft's rules and the fencing inequality (docs/timing.md).
        let t = &self.timing;
        let [et_min, et_max] = t.election_timeout_ms;
        if t.heartbeat_ms == 0 {
            problem(
                "timing.heartbeat_ms",
                "is 0".into(),
                "use a heartbeat of 10 ms or more",
            );
        }
        if et_min >= et_max {
            problem(
                "timing.election_timeout_ms",
                format!("[{et_min}, {et_max}] is not a range: min must be below max"),
                "use e.g. [60, 90]",
            );
        }
        if et_min < MIN_HEARTBEATS_PER_ELECTION_TIMEOUT * t.heartbeat_ms {
            problem(
                "timing.election_timeout_ms",
                format!(
                    "minimum {et_min} ms is less than {MIN_HEARTBEATS_PER_ELECTION_TIMEOUT} heartbeats of {} ms",
                    t.heartbeat_ms
                ),
                "raise election_timeout_ms or lower heartbeat_ms",
            );
        }
        if t.reconcile_ms == 0 {
            problem(
                "timing.reconcile_ms",
                "is 0".into(),
                "use e.g. reconcile_ms = 1000",
            );
        }
        let fence = t.fence_ms();
        if fence < 2 * t.heartbeat_ms {
            problem(
                "timing.fence_ms",
                format!(
                    "{fence} ms is under two heartbeats: one late heartbeat would drop the VIP"
                ),
                "raise fence_ms (default: 10 ms under the maximum election timeout)",
            );
        }
        let worst_release = fence + FENCE_SLACK_MS;
        if worst_release >= et_max {
            problem(
                "timing.fence_ms",
                format!(
                    "a cut-off leader may hold the VIP until fence_ms + {FENCE_SLACK_MS} ms = {worst_release} ms, \
                     but a new leader can be elected {et_max} ms (election_timeout_ms max) after the last acknowledged heartbeat"
                ),
                "lower fence_ms, or raise the election timeout maximum",
            );
        }

        // Announcements.
        if self.announce.burst_count == 0 {
            problem(
                "announce.burst_count",
                "is 0: clients would keep sending to the old holder".into(),
                "use e.g. burst_count = 3",
            );
        }

        // Secret.
        let secret = match std::fs::read(&self.secret_file) {
            Err(e) => {
                problem(
                    "secret_file",
                    format!("cannot read {}: {e}", self.secret_file.display()),
                    "create it on every node with the same content, e.g. `head -c 48 /dev/urandom | base64 > FILE; chmod 600 FILE`",
                );
                None
            }
            Ok(bytes) => {
                let trimmed = bytes.trim_ascii().to_vec();
                if trimmed.len() < MIN_SECRET_LEN {
                    problem(
                        "secret_file",
                        format!(
                            "{} holds {} bytes; at least {MIN_SECRET_LEN} are needed",
                            self.secret_file.display(),
                            trimmed.len()
                        ),
                        "write a longer secret, e.g. `head -c 48 /dev/urandom | base64 > FILE`",
                    );
                    None
                } else {
                    Some(Secret::new(trimmed))
                }
            }
        };

        problems.extend(self.listener_problems());
        (problems, secret)
    }

    /// Legal but noteworthy choices, printed by `check-config`.
    pub fn notes(&self) -> Vec<String> {
        let mut notes = Vec::new();
        if self.is_witness() {
            if !self.vips.is_empty() || self.haproxy.is_some() {
                notes.push(
                    "this node is a witness: its [[vip]] and [haproxy] entries are ignored"
                        .to_owned(),
                );
            }
        } else {
            if self.haproxy.is_none() {
                notes.push("no [haproxy] section: health gating is off, this node always counts as healthy".to_owned());
            }
            if self.vips.is_empty() {
                notes.push(
                    "no [[vip]] entries: this node takes part in Raft but binds no address"
                        .to_owned(),
                );
            }
        }
        notes
    }

    /// This node's own peer entry.
    pub fn me(&self) -> &Peer {
        self.peers
            .iter()
            .find(|p| p.id == self.node_id)
            .expect("validated: node_id is among the peers")
    }

    pub fn peer(&self, id: NodeId) -> Option<&Peer> {
        self.peers.iter().find(|p| p.id == id)
    }

    pub fn is_witness(&self) -> bool {
        self.role == Role::Witness
    }
}

impl Config {
    /// Problems with `status_listen` and `[limits]`.
    fn listener_problems(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        if let Some(status) = self.status_listen {
            if status == self.listen
                || (status.port() == self.listen.port()
                    && (status.ip().is_unspecified() || self.listen.ip().is_unspecified()))
            {
                problems.push(Problem {
                    key: "status_listen".into(),
                    what: format!("{status} is the peer port ({})", self.listen),
                    fix: "use another port, e.g. status_listen = \"127.0.0.1:7481\", or remove the key to serve status on the peer port".into(),
                });
            }
            if status.port() == 0 {
                problems.push(Problem {
                    key: "status_listen".into(),
                    what: "port 0 is not an address the CLI can find".into(),
                    fix: "use a fixed port, e.g. status_listen = \"127.0.0.1:7481\"".into(),
                });
            }
        }
        if !MAX_CONNECTIONS_RANGE.contains(&self.limits.max_connections) {
            problems.push(Problem {
                key: "limits.max_connections".into(),
                what: format!(
                    "{} is outside {}..={}",
                    self.limits.max_connections,
                    MAX_CONNECTIONS_RANGE.start(),
                    MAX_CONNECTIONS_RANGE.end()
                ),
                fix: format!(
                    "use a value in range, or remove the key for the default of {}",
                    default_max_connections()
                ),
            });
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A valid config whose secret lives in `dir`; tests break one thing at a time.
    fn valid(dir: &Path) -> String {
        let secret = dir.join("secret");
        let mut f = std::fs::File::create(&secret).unwrap();
        writeln!(f, "{}", "s".repeat(40)).unwrap();
        format!(
            r#"
cluster = "lb-test"
node_id = 1
listen = "192.0.2.11:7480"
data_dir = "{dir}/data"
secret_file = "{secret}"

[[peer]]
id = 1
address = "192.0.2.11:7480"
[[peer]]
id = 2
address = "192.0.2.12:7480"
[[peer]]
id = 3
address = "192.0.2.13:7480"

[[vip]]
address = "192.0.2.100/32"
interface = "eth0"

[haproxy]
stats_socket = "/run/haproxy/admin.sock"
"#,
            dir = dir.display(),
            secret = secret.display()
        )
    }

    fn problems_of(text: &str) -> Vec<Problem> {
        Config::parse(text).expect("parses").validate().0
    }

    fn keys(text: &str) -> Vec<String> {
        problems_of(text).into_iter().map(|p| p.key).collect()
    }

    #[test]
    fn valid_config_has_no_problems_and_reads_the_secret() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::parse(&valid(dir.path())).unwrap();
        let (problems, secret) = config.validate();
        assert_eq!(problems, vec![]);
        assert_eq!(
            secret.unwrap().as_bytes().len(),
            40,
            "trailing newline trimmed"
        );
        assert_eq!(
            config.timing.fence_ms(),
            80,
            "10 ms under election_timeout_max"
        );
        assert_eq!(config.vips[0].addr().to_string(), "192.0.2.100/32");
    }

    #[test]
    fn shipped_example_config_is_valid_apart_from_its_secret() {
        let config = Config::parse(include_str!("../docs/raftvip.example.toml")).unwrap();
        let (problems, _) = config.validate();
        let keys: Vec<_> = problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            vec!["secret_file"],
            "only the absent /etc/raftvip/secret"
        );
    }

    #[test]
    fn unknown_key_is_a_parse_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let text = valid(dir.path()).replace("node_id = 1", "node_id = 1\nnode_idd = 2");
        let err = Config::parse(&text).unwrap_err();
        assert!(err.contains("node_idd"), "{err}");
    }

    #[test]
    fn unparsable_peer_address_is_a_parse_error() {
        let dir = tempfile::tempdir().unwrap();
        let text = valid(dir.path()).replace("192.0.2.12:7480", "192.0.2.12");
        let err = Config::parse(&text).unwrap_err();
        assert!(err.contains("address"), "{err}");
    }

    #[test]
    fn duplicate_peer_id_and_address() {
        let dir = tempfile::tempdir().unwrap();
        let text = valid(dir.path())
            .replace("id = 3", "id = 2")
            .replace("192.0.2.13:7480", "192.0.2.12:7480");
        assert_eq!(keys(&text), vec!["peer[2].id", "peer[2].address"]);
    }

    #[test]
    fn this_node_missing_from_peers() {
        let dir = tempfile::tempdir().unwrap();
        let text = valid(dir.path()).replace("node_id = 1", "node_id = 9");
        let problems = problems_of(&text);
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].key, "node_id");
        assert!(problems[0].what.contains("node 9"));
    }

    #[test]
    fn missing_short_and_unreadable_secret() {
        let dir = tempfile::tempdir().unwrap();
        let text = valid(dir.path());
        let missing = text.replace("/secret\"", "/nope\"");
        assert_eq!(keys(&missing), vec!["secret_file"]);
        std::fs::write(dir.path().join("secret"), "short\n").unwrap();
        let problems = problems_of(&text);
        assert_eq!(problems[0].key, "secret_file");
        assert!(problems[0].what.contains("5 bytes"), "{}", problems[0].what);
    }

    #[test]
    fn timing_that_breaks_raft_rules() {
        let dir = tempfile::tempdir().unwrap();
        let base = valid(dir.path());
        let few_heartbeats =
            format!("{base}\n[timing]\nheartbeat_ms = 50\nelection_timeout_ms = [100, 200]\n");
        assert_eq!(keys(&few_heartbeats), vec!["timing.election_timeout_ms"]);
        let inverted = format!("{base}\n[timing]\nelection_timeout_ms = [90, 60]\n");
        assert!(keys(&inverted).contains(&"timing.election_timeout_ms".to_owned()));
    }

    #[test]
    fn fence_must_end_before_a_new_leader_can_exist() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!("{}\n[timing]\nfence_ms = 86\n", valid(dir.path()));
        let problems = problems_of(&text);
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].key, "timing.fence_ms");
        assert!(problems[0].what.contains("= 91 ms"), "{}", problems[0].what);
    }

    #[test]
    fn vips_in_a_bad_form() {
        let dir = tempfile::tempdir().unwrap();
        let base = valid(dir.path());
        for bad in [
            "192.0.2.100",
            "192.0.2.100/33",
            "192.0.2.300/32",
            "224.0.0.1/32",
            "2001:db8::1/129",
        ] {
            let text = base.replace("192.0.2.100/32", bad);
            assert_eq!(keys(&text), vec!["vip[0].address"], "{bad}");
        }
        let v6 = base.replace("192.0.2.100/32", "2001:db8::100/128");
        assert_eq!(keys(&v6), Vec::<String>::new());
        let label = base.replace(
            "interface = \"eth0\"",
            "interface = \"eth0\"\nlabel = \"eth1:vip\"",
        );
        assert_eq!(keys(&label), vec!["vip[0].label"]);
    }

    #[test]
    fn haproxy_and_vips_are_optional_and_noted() {
        let dir = tempfile::tempdir().unwrap();
        let base = valid(dir.path());
        let (head, _) = base.split_once("[[vip]]").unwrap();
        let witness = head.replace("node_id = 1", "node_id = 1\nrole = \"witness\"");
        assert_eq!(keys(&witness), Vec::<String>::new());
        assert!(Config::parse(&witness).unwrap().notes().is_empty());
        let bare = Config::parse(head).unwrap();
        assert_eq!(keys(head), Vec::<String>::new());
        assert_eq!(bare.notes().len(), 2, "no health gate, no VIPs: both noted");
    }
}
