//! The configuration file: one TOML file, identical on every box except `node_id` (and `role`
//! on a witness).
//!
//! Parsing is strict (`deny_unknown_fields`) because a misspelt key in a failover daemon is a
//! silent outage waiting to happen, and it yields checked types (a VIP is a [`VipAddr`], a peer
//! a `SocketAddr`), so later code never re-parses. [`Config::load`] parses, then
//! [`Config::validate`] collects *every* problem between values at once, each naming the key,
//! what is wrong and how to fix it, so `raftvip check-config` can be run in a loop while editing.

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

/// Longest interface name or address label the kernel takes: IFNAMSIZ − 1 (a longer IFA_LABEL
/// is refused with EINVAL). check-config refuses longer ones, and vip/netlink.rs sends only
/// labels within it, so a config that passes never fails at bind time.
pub const MAX_LABEL_LEN: usize = 15;

/// How many heartbeats an election timeout must span at least: fewer and one delayed
/// heartbeat on a busy box starts a needless election.
pub const MIN_HEARTBEATS_PER_ELECTION_TIMEOUT: u64 = 3;

/// Largest node id: ids are exported as signed 64-bit gauges in `/metrics` (where 0 means "no
/// leader"), and no site numbers its boxes into the billions.
pub const MAX_NODE_ID: NodeId = u32::MAX as NodeId;

/// Upper bound of every millisecond timing key: ten minutes. A failover daemon that waits
/// longer is not failing over, and the bound keeps every derived deadline (`Instant +
/// Duration`, `fence_ms + FENCE_SLACK_MS`, `3 × heartbeat_ms`) far from overflow.
pub const MAX_TIMING_MS: u64 = 600_000;

/// Upper bound of `rise`, `fall` and `min_servers_up`: larger values only mean "never".
const MAX_COUNT: u64 = 10_000;

/// Most announcement frames per takeover: beyond a few dozen, a burst is a flood.
const MAX_BURST_COUNT: u64 = 100;

/// Longest re-announce period: a day (switch ARP tables age out in minutes to hours).
const MAX_REFRESH_S: u64 = 86_400;
/// An hour: a longer VIP lifetime no longer bounds how long a dead holder's address lingers.
const MAX_LEASE_S: u64 = 3_600;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Cluster name; part of every request signature, so two clusters never talk.
    pub cluster: String,
    pub node_id: NodeId,
    /// Peer RPC and status API address of this node.
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub secret_file: PathBuf,
    /// This node's own role; unset, its [[peer]] entry's (a voter if that says nothing).
    pub role: Option<MemberRole>,
    #[serde(rename = "peer", default)]
    pub peers: Vec<Peer>,
    #[serde(rename = "vip", default)]
    pub vips: Vec<VipConfig>,
    /// The health gate; without it the node always counts as healthy (check-config notes it).
    pub haproxy: Option<HaproxyConfig>,
    #[serde(default)]
    pub timing: Timing,
    #[serde(default)]
    pub announce: Announce,
    #[serde(default)]
    pub notify: Notify,
    /// Runs a cluster that survives no member loss (a pair without a witness) knowingly:
    /// without it check-config refuses such a cluster, see docs/two-box-sites.md.
    #[serde(default)]
    pub accept_no_failover: bool,
    #[serde(default)]
    pub vip_lease: VipLease,
    /// Optional separate address for /v1/status and /metrics (loopback or a management
    /// network); when set, the peer port (`listen`) serves peers only.
    #[serde(default)]
    pub status_listen: Option<SocketAddr>,
    #[serde(default)]
    pub limits: Limits,
    /// `[process]`: real-time scheduling and locked memory ([`crate::realtime`]).
    #[serde(default)]
    pub process: crate::realtime::ProcessConfig,
}

/// Resource limits of the HTTP listeners.
#[derive(Debug, Clone, PartialEq, Deserialize)]
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

/// Default cap on open connections per listener. A cluster needs a handful (one pooled
/// connection per peer and direction, the CLI, a scraper); 256 leaves room for bursts and
/// keeps the daemon far below the 1,024-descriptor default soft limit.
pub const DEFAULT_MAX_CONNECTIONS: usize = 256;

fn default_max_connections() -> usize {
    DEFAULT_MAX_CONNECTIONS
}

/// Bounds of `[limits] max_connections`: a cluster needs a handful of connections, and each
/// costs a descriptor, so beyond this the cap no longer protects the descriptor table.
pub const MAX_CONNECTIONS_RANGE: std::ops::RangeInclusive<usize> = 8..=16_384;

/// What a member is configured to be (`role`, `[[peer]] role`); its Raft state at run time is
/// [`crate::status::RaftRole`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberRole {
    /// Stands in elections (while healthy) and holds the VIP when leader.
    Voter,
    /// Votes, never leads, needs neither HAProxy nor a VIP: the third vote of a 2-box site.
    Witness,
}

impl MemberRole {
    /// The name the config file uses.
    pub fn name(self) -> &'static str {
        match self {
            MemberRole::Voter => "voter",
            MemberRole::Witness => "witness",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Peer {
    pub id: NodeId,
    pub address: SocketAddr,
    /// `"witness"` marks a member that votes but never leads, so every node can tell how many
    /// failures the cluster survives. Optional; must agree with that node's own `role`.
    pub role: Option<MemberRole>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VipConfig {
    /// `ADDRESS/PREFIX`, e.g. `192.0.2.100/32` or `2001:db8::100/128`; checked while parsing,
    /// so a loaded config holds only addresses a VIP can have.
    #[serde(deserialize_with = "vip_address")]
    pub address: VipAddr,
    pub interface: String,
    /// Optional IPv4 address label such as `eth0:vip` (shown by `ip addr`).
    pub label: Option<String>,
}

/// A VIP address: an IPv4 or IPv6 host address and prefix length, never unspecified,
/// loopback, multicast or broadcast (a [`VipConfig`] holds only such, checked while parsing).
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

impl std::str::FromStr for VipAddr {
    type Err = String;
    /// Parses `ADDRESS/PREFIX`; the error says what is wrong in operator terms.
    fn from_str(text: &str) -> Result<Self, String> {
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
        if prefix_len == 0 {
            return Err(
                "prefix length 0 would make every address on-link through the VIP's interface"
                    .to_owned(),
            );
        }
        if let Some(why) = not_a_host_address(ip, prefix_len) {
            return Err(why);
        }
        Ok(Self { ip, prefix_len })
    }
}

/// Why `ip` cannot be one host's address in `ip/prefix_len`: the network or broadcast address
/// of an IPv4 subnet that has those (/30 and wider), or an IPv4-mapped IPv6 address (the
/// kernel and the peers see it as the IPv4 address, which every check here would miss).
fn not_a_host_address(ip: IpAddr, prefix_len: u8) -> Option<String> {
    match ip {
        IpAddr::V4(v4) if prefix_len <= 30 => {
            let host_bits = u32::MAX >> prefix_len;
            match u32::from(v4) & host_bits {
                0 => Some(format!("{ip} is the network address of {ip}/{prefix_len}")),
                bits if bits == host_bits => Some(format!(
                    "{ip} is the broadcast address of {ip}/{prefix_len}"
                )),
                _ => None,
            }
        }
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(|v4| format!("{ip} is an IPv4-mapped address; write it as {v4}")),
        IpAddr::V4(_) => None,
    }
}

/// Deserialises `[[vip]] address`; a bad one fails the parse with the key, the problem and
/// the fix (the TOML error adds the line).
fn vip_address<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<VipAddr, D::Error> {
    let text = String::deserialize(deserializer)?;
    text.parse().map_err(|what| {
        serde::de::Error::custom(Problem {
            key: "vip.address".into(),
            what,
            fix: "write ADDRESS/PREFIX, e.g. \"192.0.2.100/32\" or \"2001:db8::100/128\"".into(),
        })
    })
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Timing {
    #[serde(default = "default_heartbeat_ms")]
    pub heartbeat_ms: u64,
    /// `[min, max]`: each node picks its election timeout in this range.
    #[serde(
        default = "default_election_timeout_ms",
        deserialize_with = "min_max_ms"
    )]
    pub election_timeout_ms: [u64; 2],
    /// A leader whose quorum has not acknowledged it for this long drops the VIPs. Default:
    /// [`DEFAULT_FENCE_MARGIN_MS`] under the maximum election timeout.
    pub fence_ms: Option<u64>,
    /// Period of the safety-net re-check of the VIPs (netlink events catch changes at once;
    /// the fence is a precise deadline, not polled).
    #[serde(default = "default_reconcile_ms")]
    pub reconcile_ms: u64,
}

/// Deserialises `[min, max]`: exactly two numbers (a fixed-size array would ignore a third).
fn min_max_ms<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<[u64; 2], D::Error> {
    let values = Vec::<u64>::deserialize(deserializer)?;
    <[u64; 2]>::try_from(values.as_slice()).map_err(|_| {
        serde::de::Error::custom(format!(
            "expected [min, max], two numbers of milliseconds, got {} number(s)",
            values.len()
        ))
    })
}

/// The leader heartbeats each 1.5 × `heartbeat_ms` (openraft's tick): 37 ms. The tick sets
/// the idle CPU, not the failover (the lease, `election_timeout_ms` max, sets that); at 37 ms
/// a round of heartbeats that no follower acknowledges still leaves the quorum ack younger
/// than the 80 ms fence (2 × 37 ms + a round trip). docs/timing.md, "Why 25 / [75, 90]".
fn default_heartbeat_ms() -> u64 {
    25
}
fn default_election_timeout_ms() -> [u64; 2] {
    [75, 90]
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
/// loaded box), and up to 1 ms by which the supervisor may place the ack late (openraft
/// reports its age in whole milliseconds). Part of the fencing inequality in docs/timing.md.
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
#[derive(Debug, Clone, PartialEq, Deserialize)]
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

/// The kernel-enforced lease on every bound VIP: the holder binds each VIP with this valid
/// and preferred lifetime and renews it several times per lifetime, so if raftvip dies or
/// freezes the kernel itself removes the address once the lifetime runs out.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VipLease {
    /// Seconds (the kernel's unit); 0 binds VIPs without a lifetime (the kernel keeps them
    /// until removed).
    #[serde(default = "default_lifetime_s")]
    pub lifetime_s: u32,
}

/// One second: a dead or frozen holder's addresses are gone ~1 s after its last renewal.
fn default_lifetime_s() -> u32 {
    1
}

impl Default for VipLease {
    fn default() -> Self {
        Self {
            lifetime_s: default_lifetime_s(),
        }
    }
}

impl VipLease {
    /// The lifetime, None when off.
    pub fn lifetime(&self) -> Option<Duration> {
        (self.lifetime_s > 0).then(|| Duration::from_secs(u64::from(self.lifetime_s)))
    }
    /// Renewals come four times per lifetime: three may be late or lost before the kernel
    /// drops a VIP we still hold.
    pub fn renew_every(&self) -> Option<Duration> {
        self.lifetime().map(|lifetime| lifetime / 4)
    }
}

/// Hooks run on state changes, as keepalived's notify scripts are (docs/operations.md): each
/// value is a command line, a program's absolute path then arguments separated by spaces (no
/// shell: no quoting, no variables).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Notify {
    /// keepalived's generic `notify`: run on every event with `INSTANCE <cluster>
    /// MASTER|BACKUP|FAULT|STOP <priority>` appended to its own arguments.
    pub script: Option<String>,
    /// keepalived's `notify_master`, `notify_backup`, `notify_fault`, `notify_stop`: run with
    /// their own arguments only, before `script`.
    pub master: Option<String>,
    pub backup: Option<String>,
    pub fault: Option<String>,
    pub stop: Option<String>,
    /// A hook still running after this long is killed (its whole process group) and the next
    /// one runs.
    #[serde(default = "default_hook_timeout_ms")]
    pub timeout_ms: u64,
}

/// Long enough to page someone, reload a firewall or call a cloud API; short enough that
/// the next event's hooks, queued behind a hung one, still run while they matter.
pub const DEFAULT_HOOK_TIMEOUT_MS: u64 = 10_000;

/// Bounds of `[notify] timeout_ms`: under 100 ms a loaded box may not even fork and exec a
/// shell script; over ten minutes every later event waits behind a hung hook that long.
pub const HOOK_TIMEOUT_MS_RANGE: std::ops::RangeInclusive<u64> = 100..=MAX_TIMING_MS;

fn default_hook_timeout_ms() -> u64 {
    DEFAULT_HOOK_TIMEOUT_MS
}

impl Default for Notify {
    fn default() -> Self {
        Self {
            script: None,
            master: None,
            backup: None,
            fault: None,
            stop: None,
            timeout_ms: DEFAULT_HOOK_TIMEOUT_MS,
        }
    }
}

impl Notify {
    /// Every hook key, as named in the file, with its command line when set.
    pub fn commands(&self) -> [(&'static str, Option<&str>); 5] {
        [
            ("notify.master", self.master.as_deref()),
            ("notify.backup", self.backup.as_deref()),
            ("notify.fault", self.fault.as_deref()),
            ("notify.stop", self.stop.as_deref()),
            ("notify.script", self.script.as_deref()),
        ]
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    /// Problems with the hook keys: each must name its program by absolute path (no shell,
    /// no PATH search runs it), and the timeout must be in range.
    pub fn problems(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        let mut problem = |key: &str, what: String, fix: String| {
            problems.push(Problem::new(key, what, fix));
        };
        for (key, line) in self.commands() {
            match line.map(split_hook_command) {
                None => {}
                Some(None) => problem(
                    key,
                    "is empty".into(),
                    "name a program, e.g. \"/etc/raftvip/notify.sh\", or remove the key".into(),
                ),
                Some(Some((program, _))) if !Path::new(program).is_absolute() => problem(
                    key,
                    format!("{program} is not an absolute path"),
                    "give the full path: hooks run without a shell and without a PATH search"
                        .into(),
                ),
                Some(Some(_)) => {}
            }
        }
        if !HOOK_TIMEOUT_MS_RANGE.contains(&self.timeout_ms) {
            problem(
                "notify.timeout_ms",
                format!(
                    "{} is outside the accepted range {} to {}",
                    self.timeout_ms,
                    HOOK_TIMEOUT_MS_RANGE.start(),
                    HOOK_TIMEOUT_MS_RANGE.end()
                ),
                format!("use a value in that range, or remove the key for the default of {DEFAULT_HOOK_TIMEOUT_MS}"),
            );
        }
        problems
    }

    /// Hook programs that would not run now. Warnings, not problems: a missing hook must not
    /// keep the daemon (and failover) from starting, and the file may be installed later.
    pub fn warnings(&self) -> Vec<String> {
        let unusable = self.commands().into_iter().filter_map(|(key, line)| {
            let (program, _) = split_hook_command(line?)?;
            // A relative path is a problem already.
            let program = Some(Path::new(program)).filter(|p| p.is_absolute())?;
            let (what, fix) = hook_program_unusable(program)?;
            Some(format!("{key}: {what}; it will not run ({fix})"))
        });
        let shell = self.commands().into_iter().filter_map(|(key, line)| {
            let line = line?;
            let found: String = SHELL_SYNTAX.chars().filter(|c| line.contains(*c)).collect();
            (!found.is_empty()).then(|| {
                format!(
                    "{key}: {line:?} contains shell syntax ({found}), but hooks run without a shell: \
                     the words are split at white space and passed as they are, quotes included; \
                     put the command line into a script and name that"
                )
            })
        });
        unusable.chain(shell).collect()
    }
}

/// Characters a shell would interpret in a hook's command line; raftvip passes them on.
const SHELL_SYNTAX: &str = "'\"\\`$|;&<>*?~(){}";

/// Splits a hook command line into its program and arguments; None when it is blank.
pub fn split_hook_command(line: &str) -> Option<(&str, Vec<&str>)> {
    let mut words = line.split_whitespace();
    Some((words.next()?, words.collect()))
}

/// Why a hook program cannot be run, or must not be (like keepalived's script security, a
/// file others can change is not run: raftvip's privileges would be theirs), with the fix.
pub fn hook_program_unusable(program: &Path) -> Option<(String, String)> {
    use std::os::unix::fs::PermissionsExt;
    let shown = program.display();
    let mode = match std::fs::metadata(program) {
        Err(e) => {
            return Some((
                format!("cannot use {shown}: {e}"),
                "create it or correct the path".into(),
            ))
        }
        Ok(meta) if !meta.is_file() => {
            return Some((
                format!("{shown} is not a file"),
                "name an executable file".into(),
            ))
        }
        Ok(meta) => meta.permissions().mode(),
    };
    if mode & 0o111 == 0 {
        return Some((
            format!("{shown} is not executable"),
            format!("chmod +x {shown}"),
        ));
    }
    if mode & 0o022 != 0 {
        return Some((
            format!(
                "{shown} can be changed by other users (mode {:o})",
                mode & 0o7777
            ),
            format!("chmod go-w {shown}"),
        ));
    }
    None
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

impl Problem {
    pub fn new(key: impl Into<String>, what: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            what: what.into(),
            fix: fix.into(),
        }
    }
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
        let mut problems = config.validate();
        let secret = config.read_secret().map_err(|p| problems.push(p)).ok();
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
        let read_error = |source| LoadConfigError::Read {
            path: path.to_owned(),
            source,
        };
        let text = read_config_text(path).map_err(read_error)?;
        Self::parse(&text).map_err(|message| LoadConfigError::Parse {
            path: path.to_owned(),
            message,
        })
    }

    /// Parses TOML text; unknown keys and wrong types are errors with a line and column.
    pub fn parse(text: &str) -> Result<Config, String> {
        toml::from_str(text).map_err(|e| e.to_string().trim_end().to_owned())
    }

    /// Every problem between the config's values (no file is read: the secret is checked by
    /// [`Config::read_secret`]).
    pub fn validate(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        if self.cluster.trim().is_empty() {
            problems.push(Problem::new(
                "cluster",
                "is empty",
                "give the cluster a name, e.g. cluster = \"lb-prod\"",
            ));
        }
        self.path_problems(&mut problems);
        self.peer_problems(&mut problems);
        self.vip_problems(&mut problems);
        self.haproxy_problems(&mut problems);
        self.timing_problems(&mut problems);
        // Numbers: every key has bounds, so no arithmetic on them can overflow.
        for k in self.numeric_keys() {
            if !k.range.contains(&k.value) {
                problems.push(Problem::new(
                    k.name,
                    format!(
                        "{} is outside the accepted range {} to {}",
                        k.value,
                        k.range.start(),
                        k.range.end()
                    ),
                    format!("use a value in that range, e.g. {}", k.example),
                ));
            }
        }
        self.role_problems(&mut problems);
        problems.extend(self.listener_problems());
        problems.extend(self.notify.problems());
        problems.extend(self.process.problems());
        problems
    }

    /// Peers: unique ids and addresses, this node among them.
    fn peer_problems(&self, problems: &mut Vec<Problem>) {
        if self.peers.is_empty() {
            problems.push(Problem::new(
                "peer",
                "no [[peer]] entries",
                "list every member, this node included, as [[peer]] id = N, address = \"IP:PORT\"",
            ));
        }
        let mut ids = HashSet::new();
        let mut addresses = HashSet::new();
        for (i, peer) in self.peers.iter().enumerate() {
            if !ids.insert(peer.id) {
                problems.push(Problem::new(
                    format!("peer[{i}].id"),
                    format!("id {} is used by more than one peer", peer.id),
                    "give every peer its own id",
                ));
            }
            if !addresses.insert(peer.address) {
                problems.push(Problem::new(
                    format!("peer[{i}].address"),
                    format!("address {} is used by more than one peer", peer.address),
                    "give every peer its own IP:PORT",
                ));
            }
            if !reachable_unicast(peer.address.ip()) || peer.address.port() == 0 {
                problems.push(Problem::new(
                    format!("peer[{i}].address"),
                    format!("{} is not an address other nodes can reach", peer.address),
                    "use the node's real IP and a fixed port, e.g. 192.0.2.11:7480",
                ));
            }
        }
        match self.peer(self.node_id) {
            None if !self.peers.is_empty() => problems.push(Problem::new(
                "node_id",
                format!("node {} is not in the [[peer]] list", self.node_id),
                "add this node as a [[peer]] or correct node_id",
            )),
            Some(me) if me.address.port() != self.listen.port() => problems.push(Problem::new(
                "listen",
                format!(
                    "listens on port {} but [[peer]] id {} says port {}",
                    self.listen.port(),
                    me.id,
                    me.address.port()
                ),
                "make listen and this node's [[peer]] address use the same port",
            )),
            _ => {}
        }
        let listen_ip = self.listen.ip();
        if let Some(other) = self.listen_elsewhere().and_then(|_| {
            self.peers
                .iter()
                .find(|p| p.id != self.node_id && p.address.ip() == listen_ip)
        }) {
            problems.push(Problem::new(
                "listen",
                format!(
                    "{listen_ip} is node {}'s address, not this node's (node {}): a file copied from another box?",
                    other.id, self.node_id
                ),
                "listen on this node's own [[peer]] address (or 0.0.0.0 / [::])",
            ));
        }
        if self.vips.iter().any(|v| v.address.ip == listen_ip) {
            problems.push(Problem::new(
                "listen",
                format!("{listen_ip} is a VIP: only one box holds it at a time"),
                "listen on this node's own [[peer]] address (or 0.0.0.0 / [::])",
            ));
        }
    }

    /// This node's [[peer]] address when `listen` names another specific IP.
    fn listen_elsewhere(&self) -> Option<SocketAddr> {
        let me = self.peer(self.node_id)?;
        let ip = self.listen.ip();
        (!ip.is_unspecified() && ip != me.address.ip()).then_some(me.address)
    }

    /// Paths the daemon resolves at start: absolute, so they do not depend on the directory
    /// it was started in.
    fn path_problems(&self, problems: &mut Vec<Problem>) {
        for (key, path, example) in [
            ("data_dir", &self.data_dir, "/var/lib/raftvip"),
            ("secret_file", &self.secret_file, "/etc/raftvip/secret"),
        ] {
            if !path.is_absolute() {
                problems.push(Problem::new(
                    key,
                    format!(
                        "'{}' is not an absolute path: it would depend on the directory raftvip starts in",
                        path.display()
                    ),
                    format!("use an absolute path, e.g. {example}"),
                ));
            }
        }
    }

    /// `[haproxy]`: an absolute socket path and proxy names each given once.
    fn haproxy_problems(&self, problems: &mut Vec<Problem>) {
        let Some(haproxy) = &self.haproxy else {
            return;
        };
        if !haproxy.stats_socket.is_absolute() {
            problems.push(Problem::new(
                "haproxy.stats_socket",
                format!(
                    "'{}' is not an absolute path",
                    haproxy.stats_socket.display()
                ),
                "use the path of haproxy.cfg's `stats socket`, e.g. /run/haproxy/admin.sock",
            ));
        }
        for (key, names) in [
            ("haproxy.backends", &haproxy.backends),
            ("haproxy.frontends", &haproxy.frontends),
        ] {
            let mut seen = HashSet::new();
            for name in names {
                if name.trim().is_empty() {
                    problems.push(Problem::new(
                        key,
                        "holds an empty name",
                        "list the proxy names as haproxy.cfg spells them",
                    ));
                } else if !seen.insert(name) {
                    problems.push(Problem::new(
                        key,
                        format!("lists '{name}' twice"),
                        "list each name once",
                    ));
                }
            }
        }
    }

    /// VIPs: each once, never a peer address; interface names and labels the kernel takes.
    fn vip_problems(&self, problems: &mut Vec<Problem>) {
        let mut vip_ips = HashSet::new();
        for (i, vip) in self.vips.iter().enumerate() {
            let ip = vip.address.ip;
            if !vip_ips.insert(ip) {
                problems.push(Problem::new(
                    format!("vip[{i}].address"),
                    format!("{ip} is listed twice"),
                    "list each VIP once",
                ));
            }
            if self.peers.iter().any(|p| p.address.ip() == ip) {
                problems.push(Problem::new(
                    format!("vip[{i}].address"),
                    format!("{ip} is also a peer address"),
                    "peers must talk over their own fixed addresses, never the VIP",
                ));
            }
            if !valid_interface_name(&vip.interface) {
                problems.push(Problem::new(
                    format!("vip[{i}].interface"),
                    format!(
                        "'{}' is not an interface name the kernel accepts (1 to {MAX_LABEL_LEN} characters, \
                         no '/', ':' or white space, not . or ..)",
                        vip.interface
                    ),
                    "name the interface that faces the clients, e.g. \"eth0\"",
                ));
            }
            if let Some(label) = &vip.label {
                if ip.is_ipv6() {
                    problems.push(Problem::new(
                        format!("vip[{i}].label"),
                        "labels exist only for IPv4 addresses",
                        "remove the label from this IPv6 VIP",
                    ));
                } else if label.is_empty()
                    || label.len() > MAX_LABEL_LEN
                    || !label.starts_with(vip.interface.as_str())
                {
                    problems.push(Problem::new(
                        format!("vip[{i}].label"),
                        format!(
                            "'{label}' must start with the interface name and be at most {MAX_LABEL_LEN} characters"
                        ),
                        "use INTERFACE:NAME, e.g. \"eth0:vip\"",
                    ));
                }
            }
        }
    }

    /// Timing: Raft's rules and the fencing inequality (docs/timing.md).
    fn timing_problems(&self, problems: &mut Vec<Problem>) {
        let t = &self.timing;
        let [et_min, et_max] = t.election_timeout_ms;
        if et_min >= et_max {
            problems.push(Problem::new(
                "timing.election_timeout_ms",
                format!("[{et_min}, {et_max}] is not a range: min must be below max"),
                "use e.g. [75, 90]",
            ));
        }
        if et_min < MIN_HEARTBEATS_PER_ELECTION_TIMEOUT.saturating_mul(t.heartbeat_ms) {
            problems.push(Problem::new(
                "timing.election_timeout_ms",
                format!(
                    "minimum {et_min} ms is less than {MIN_HEARTBEATS_PER_ELECTION_TIMEOUT} heartbeats of {} ms",
                    t.heartbeat_ms
                ),
                "raise election_timeout_ms or lower heartbeat_ms",
            ));
        }
        let fence = t.fence_ms();
        if fence < t.heartbeat_ms.saturating_mul(2) {
            problems.push(Problem::new(
                "timing.fence_ms",
                format!(
                    "{fence} ms is under two heartbeats: one late heartbeat would drop the VIP"
                ),
                "raise fence_ms (default: 10 ms under the maximum election timeout)",
            ));
        }
        let worst_release = fence.saturating_add(FENCE_SLACK_MS);
        if worst_release >= et_max {
            problems.push(Problem::new(
                "timing.fence_ms",
                format!(
                    "a cut-off leader may hold the VIP until fence_ms + {FENCE_SLACK_MS} ms = {worst_release} ms, \
                     but a new leader can be elected {et_max} ms (election_timeout_ms max) after the last acknowledged heartbeat"
                ),
                "lower fence_ms, or raise the election timeout maximum",
            ));
        }
    }

    /// Roles and fault tolerance (docs/two-box-sites.md).
    fn role_problems(&self, problems: &mut Vec<Problem>) {
        let entry = self.peer(self.node_id).and_then(|me| me.role);
        if let (Some(own), Some(entry)) = (self.role, entry) {
            if own != entry {
                problems.push(Problem::new(
                    "role",
                    format!(
                        "is \"{}\" but this node's [[peer]] entry says role = \"{}\"",
                        own.name(),
                        entry.name()
                    ),
                    "make role and this node's [[peer]] role agree, or drop one of them",
                ));
            }
        }
        let tolerance = self.tolerance();
        if !self.peers.is_empty() && tolerance.may_lead == 0 {
            problems.push(Problem::new(
                "peer",
                "every member is a witness: no node may lead, so no box ever holds the VIP",
                "make the HAProxy boxes voters (drop role = \"witness\" from their [[peer]] entries)",
            ));
        } else if !self.peers.is_empty() && tolerance.may_fail == 0 && !self.accept_no_failover {
            problems.push(Problem::new(
                "peer",
                tolerance.no_failover_consequence(),
                NO_FAILOVER_FIX,
            ));
        }
    }

    /// Reads `secret_file`: long enough, and neither readable nor replaceable by others.
    /// Apart from [`Config::validate`] because it reads a file, which `check-config` does but
    /// pure checks of the values need not.
    pub fn read_secret(&self) -> Result<Secret, Problem> {
        let bytes = read_regular_file(&self.secret_file, MAX_SECRET_BYTES).map_err(|e| {
            Problem::new(
                "secret_file",
                format!("cannot read {}: {e}", self.secret_file.display()),
                "create it on every node with the same content, e.g. `head -c 48 /dev/urandom | base64 > FILE; chmod 600 FILE`",
            )
        })?;
        let trimmed = bytes.trim_ascii().to_vec();
        if trimmed.len() < MIN_SECRET_LEN {
            return Err(Problem::new(
                "secret_file",
                format!(
                    "{} holds {} bytes; at least {MIN_SECRET_LEN} are needed",
                    self.secret_file.display(),
                    trimmed.len()
                ),
                "write a longer secret, e.g. `head -c 48 /dev/urandom | base64 > FILE`",
            ));
        }
        secret_file_exposure(&self.secret_file)
            .map_err(|(what, fix)| Problem::new("secret_file", what, fix))?;
        Ok(Secret::new(trimmed))
    }

    /// Every numeric key, named as in the file, with its accepted range and an example.
    fn numeric_keys(&self) -> Vec<NumericKey> {
        let mut keys = vec![NumericKey::new(
            "node_id",
            self.node_id,
            1..=MAX_NODE_ID,
            "node_id = 1",
        )];
        for (i, p) in self.peers.iter().enumerate() {
            keys.push(NumericKey::new(
                format!("peer[{i}].id"),
                p.id,
                1..=MAX_NODE_ID,
                "id = 1",
            ));
        }
        if let Some(h) = &self.haproxy {
            keys.extend(h.numeric_keys());
        }
        keys.extend(self.timing.numeric_keys());
        keys.extend([
            NumericKey::new(
                "announce.burst_count",
                self.announce.burst_count,
                1..=MAX_BURST_COUNT,
                "burst_count = 3",
            ),
            NumericKey::new(
                "announce.burst_interval_ms",
                self.announce.burst_interval_ms,
                0..=MAX_TIMING_MS,
                "burst_interval_ms = 20",
            ),
            NumericKey::new(
                "announce.refresh_s",
                self.announce.refresh_s,
                0..=MAX_REFRESH_S,
                "refresh_s = 10 (0 turns it off)",
            ),
            NumericKey::new(
                "vip_lease.lifetime_s",
                self.vip_lease.lifetime_s,
                0..=MAX_LEASE_S,
                "lifetime_s = 1 (0 binds VIPs without a lifetime)",
            ),
        ]);
        keys
    }

    /// How many members this cluster may lose and still elect a node that holds the VIP.
    pub fn tolerance(&self) -> Tolerance {
        let may_lead = self
            .peers
            .iter()
            .filter(|p| !self.peer_is_witness(p))
            .count();
        Tolerance::of(self.peers.len(), may_lead)
    }

    fn peer_is_witness(&self, peer: &Peer) -> bool {
        peer.role == Some(MemberRole::Witness)
            || (peer.id == self.node_id && self.role == Some(MemberRole::Witness))
    }

    /// What `check-config` finds wrong on this box rather than in the values: a `data_dir`
    /// that the user running it could not create or write. Not part of [`Config::validate`],
    /// which the other commands run too (an operator's `raftvip transfer` needs no data_dir).
    pub fn host_problems(&self) -> Vec<Problem> {
        let dir = &self.data_dir;
        if !dir.is_absolute() {
            return Vec::new(); // named by `validate`
        }
        // The directory, or the nearest ancestor the daemon would create it in.
        let existing = dir
            .ancestors()
            .find(|p| p.exists())
            .unwrap_or(Path::new("/"));
        let what = if !existing.is_dir() {
            Some(format!("{} is not a directory", existing.display()))
        } else {
            use nix::unistd::{access, AccessFlags};
            access(existing, AccessFlags::W_OK | AccessFlags::X_OK)
                .err()
                .map(|e| format!("{} is not writable by this user: {e}", existing.display()))
        };
        what.map(|what| {
            Problem::new(
                "data_dir",
                what,
                "use a directory the service user owns, e.g. /var/lib/raftvip, and run check-config as that user",
            )
        })
        .into_iter()
        .collect()
    }

    /// What may be wrong on this box or only where it runs: an interface of this box's VIPs
    /// that does not exist here (fine when checking the file on another machine).
    pub fn host_warnings(&self) -> Vec<String> {
        let interfaces = self
            .own_vips()
            .iter()
            .filter(|v| nix::net::if_::if_nametoindex(v.interface.as_str()).is_err())
            .map(|v| {
                format!(
                    "interface {} of VIP {} does not exist on this box: until it does, this node cannot hold the VIPs and does not stand",
                    v.interface, v.address
                )
            });
        // Absent is fine (HAProxy may not run yet); present and no socket is a wrong path.
        let socket = self.own_haproxy().and_then(|h| {
            use std::os::unix::fs::FileTypeExt;
            let kind = std::fs::metadata(&h.stats_socket).ok()?.file_type();
            (!kind.is_socket()).then(|| {
                format!(
                    "haproxy.stats_socket {} is not a socket: the path of haproxy.cfg's `stats socket`?",
                    h.stats_socket.display()
                )
            })
        });
        interfaces.chain(socket).collect()
    }

    /// Legal choices that weaken the cluster, printed by `check-config` as warnings (it still
    /// exits 0).
    pub fn warnings(&self) -> Vec<String> {
        let t = self.tolerance();
        let mut warnings = Vec::new();
        if t.members > 2 && t.members.is_multiple_of(2) {
            warnings.push(format!(
                "{} voting members (witnesses vote too) tolerate {} failure(s), no more than {} would: \
                 the extra member only makes every majority larger; add or remove a witness to make the count odd",
                t.members,
                t.may_fail,
                t.members - 1
            ));
        }
        warnings.extend(self.notify.warnings());
        if let Some(peer_address) = self.listen_elsewhere() {
            let listen = self.listen.ip();
            if !self.peers.iter().any(|p| p.address.ip() == listen) {
                warnings.push(format!(
                    "listen {listen} is not this node's [[peer]] address {}: right only if the peers reach it there through NAT",
                    peer_address.ip()
                ));
            }
        }
        if self.accept_no_failover {
            if t.may_fail == 0 {
                warnings.push(format!(
                    "accept_no_failover = true: {}",
                    t.no_failover_consequence()
                ));
            } else {
                warnings.push(format!(
                    "accept_no_failover = true has no effect: this cluster survives {} failure(s); remove the key",
                    t.may_fail
                ));
            }
        }
        warnings
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

    pub fn peer(&self, id: NodeId) -> Option<&Peer> {
        self.peers.iter().find(|p| p.id == id)
    }

    /// A witness by its own `role` or by its [[peer]] entry (so one file can serve every node).
    pub fn is_witness(&self) -> bool {
        self.peer(self.node_id)
            .is_some_and(|me| self.peer_is_witness(me))
            || self.role == Some(MemberRole::Witness)
    }

    /// This node's role as it runs: the one [`Config::is_witness`] decides.
    pub fn own_role(&self) -> MemberRole {
        if self.is_witness() {
            MemberRole::Witness
        } else {
            MemberRole::Voter
        }
    }

    /// The VIPs this box may hold: none on a witness, whose [[vip]] entries are ignored (one
    /// file can serve every node).
    pub fn own_vips(&self) -> &[VipConfig] {
        if self.is_witness() {
            &[]
        } else {
            &self.vips
        }
    }

    /// The HAProxy this box's health depends on: none on a witness, which serves no traffic.
    pub fn own_haproxy(&self) -> Option<&HaproxyConfig> {
        self.haproxy.as_ref().filter(|_| !self.is_witness())
    }
}

/// One numeric key and its accepted range.
struct NumericKey {
    name: String,
    value: u64,
    range: std::ops::RangeInclusive<u64>,
    example: &'static str,
}

impl NumericKey {
    fn new(
        name: impl Into<String>,
        value: impl Into<u64>,
        range: std::ops::RangeInclusive<u64>,
        example: &'static str,
    ) -> Self {
        Self {
            name: name.into(),
            value: value.into(),
            range,
            example,
        }
    }
}

impl HaproxyConfig {
    fn numeric_keys(&self) -> [NumericKey; 5] {
        [
            NumericKey::new(
                "haproxy.min_servers_up",
                self.min_servers_up,
                0..=MAX_COUNT,
                "min_servers_up = 1",
            ),
            NumericKey::new(
                "haproxy.poll_interval_ms",
                self.poll_interval_ms,
                1..=MAX_TIMING_MS,
                "poll_interval_ms = 100",
            ),
            NumericKey::new(
                "haproxy.timeout_ms",
                self.timeout_ms,
                1..=MAX_TIMING_MS,
                "timeout_ms = 250",
            ),
            NumericKey::new("haproxy.rise", self.rise, 1..=MAX_COUNT, "rise = 2"),
            NumericKey::new("haproxy.fall", self.fall, 1..=MAX_COUNT, "fall = 2"),
        ]
    }
}

impl Timing {
    fn numeric_keys(&self) -> Vec<NumericKey> {
        let [et_min, et_max] = self.election_timeout_ms;
        let et = |value| {
            NumericKey::new(
                "timing.election_timeout_ms",
                value,
                1..=MAX_TIMING_MS,
                "election_timeout_ms = [75, 90]",
            )
        };
        let mut keys = vec![
            NumericKey::new(
                "timing.heartbeat_ms",
                self.heartbeat_ms,
                1..=MAX_TIMING_MS,
                "heartbeat_ms = 25",
            ),
            et(et_min),
            et(et_max),
            NumericKey::new(
                "timing.reconcile_ms",
                self.reconcile_ms,
                1..=MAX_TIMING_MS,
                "reconcile_ms = 1000",
            ),
        ];
        if let Some(fence) = self.fence_ms {
            keys.push(NumericKey::new(
                "timing.fence_ms",
                fence,
                1..=MAX_TIMING_MS,
                "leave fence_ms out (default: 10 ms under the maximum election timeout)",
            ));
        }
        keys
    }
}

/// The fix named when a cluster survives no member loss.
const NO_FAILOVER_FIX: &str = "add a witness on a third machine: any small host that reaches the peers' listen addresses \
     (a VM, a backend or monitoring host, a container), listed as [[peer]] with role = \"witness\" and running \
     raftvip with role = \"witness\" (see docs/two-box-sites.md); or set accept_no_failover = true to run without failover knowingly";

/// How many members a cluster may lose and still elect a node that holds the VIP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tolerance {
    /// Every [[peer]]: witnesses vote too.
    pub members: usize,
    /// Members that may lead (not witnesses, as far as the config tells).
    pub may_lead: usize,
    /// Failures survived in the worst case: a majority of `members` must remain, and among
    /// them a member that may lead (the lost ones may be exactly the ones that could lead).
    pub may_fail: usize,
}

impl Tolerance {
    pub fn of(members: usize, may_lead: usize) -> Self {
        let by_majority = members.saturating_sub(1) / 2;
        Self {
            members,
            may_lead,
            may_fail: by_majority.min(may_lead.saturating_sub(1)),
        }
    }

    /// What an operator of a cluster that survives no failure must know.
    fn no_failover_consequence(&self) -> String {
        match self.members {
            1 => "a single member: when this box fails, nothing takes over (no failover)".to_owned(),
            2 => "2 voting members: a majority of 2 is 2, so when either box is lost the other cannot be \
                  elected and no box holds the VIP until it returns (no failover)"
                .to_owned(),
            n => format!(
                "{n} members but only {} may lead (the others are witnesses): when it is lost no box holds the VIP \
                 (no failover)",
                self.may_lead
            ),
        }
    }
}

/// Largest config file read: one with hundreds of VIPs is tens of KB.
const MAX_CONFIG_BYTES: u64 = 4 << 20;
/// Largest secret file read: a secret is tens of bytes.
const MAX_SECRET_BYTES: u64 = 64 << 10;

/// Reads a configuration file as text: a regular file of at most 4 MiB in UTF-8, as raftvip's
/// own config is read (keepalived.conf and its includes too, for `import-keepalived`).
pub fn read_config_text(path: &Path) -> std::io::Result<String> {
    String::from_utf8(read_regular_file(path, MAX_CONFIG_BYTES)?)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "it is not UTF-8 text"))
}

/// Reads `path` if it is a regular file of at most `limit` bytes. Checked before opening, so a
/// FIFO or a device (`/dev/zero`) is refused instead of blocking or filling memory.
fn read_regular_file(path: &Path, limit: u64) -> std::io::Result<Vec<u8>> {
    use std::io::{Error, ErrorKind, Read};
    if !std::fs::metadata(path)?.is_file() {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            "it is not a regular file",
        ));
    }
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(limit + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(Error::new(
            ErrorKind::InvalidData,
            format!("it is larger than {limit} bytes"),
        ));
    }
    Ok(bytes)
}

/// An address other nodes can send to: not unspecified, multicast, broadcast or IPv4-mapped.
fn reachable_unicast(ip: IpAddr) -> bool {
    let v4_broadcast = matches!(ip, IpAddr::V4(v4) if v4.is_broadcast());
    let v4_mapped = matches!(ip, IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some());
    !(ip.is_unspecified() || ip.is_multicast() || v4_broadcast || v4_mapped)
}

/// The kernel's rule for interface names (`dev_valid_name`).
fn valid_interface_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_LABEL_LEN
        && name != "."
        && name != ".."
        && !name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace())
}

/// Refuses a secret that others could read or replace: its mode grants nothing to group and
/// others, and its owner is root or the user running raftvip. Err: (what, fix).
fn secret_file_exposure(path: &Path) -> Result<(), (String, String)> {
    use std::os::unix::fs::MetadataExt;
    let shown = path.display();
    let meta = std::fs::metadata(path).map_err(|e| {
        (
            format!("cannot read the owner and mode of {shown}: {e}"),
            "make the file readable by the user running raftvip".to_owned(),
        )
    })?;
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err((
            format!(
                "{shown} has mode {mode:04o}: group or others can read or change the shared secret"
            ),
            format!("chmod 600 {shown}"),
        ));
    }
    let owner = meta.uid();
    let me = nix::unistd::geteuid();
    if owner != 0 && owner != me.as_raw() {
        let name = |uid: u32| {
            nix::unistd::User::from_uid(uid.into())
                .ok()
                .flatten()
                .map_or_else(|| format!("uid {uid}"), |u| u.name)
        };
        return Err((
            format!(
                "{shown} is owned by {}, neither root nor the user running raftvip ({}): its owner can change the secret",
                name(owner),
                name(me.as_raw())
            ),
            format!(
                "chown {} {shown} (or root), and run check-config as the service user, e.g. `sudo -u raftvip raftvip check-config`",
                name(me.as_raw())
            ),
        ));
    }
    Ok(())
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
            if self.vips.iter().any(|v| v.address.ip == status.ip()) {
                problems.push(Problem {
                    key: "status_listen".into(),
                    what: format!("{} is a VIP: only one box holds it at a time", status.ip()),
                    fix: "use a fixed address of this box, e.g. status_listen = \"127.0.0.1:7481\""
                        .into(),
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
        set_mode(&secret, 0o600);
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

    fn set_mode(path: &Path, mode: u32) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    /// What `load` reports: the values' problems, then the secret's.
    fn problems_of(text: &str) -> Vec<Problem> {
        let config = Config::parse(text).expect("parses");
        let mut problems = config.validate();
        problems.extend(config.read_secret().err());
        problems
    }

    fn keys(text: &str) -> Vec<String> {
        problems_of(text).into_iter().map(|p| p.key).collect()
    }

    #[test]
    fn valid_config_has_no_problems_and_reads_the_secret() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::parse(&valid(dir.path())).unwrap();
        assert_eq!(config.validate(), vec![]);
        assert_eq!(
            config.read_secret().unwrap().as_bytes().len(),
            40,
            "trailing newline trimmed"
        );
        assert_eq!(
            config.timing.fence_ms(),
            80,
            "10 ms under election_timeout_max"
        );
        assert_eq!(config.vips[0].address.to_string(), "192.0.2.100/32");
    }

    #[test]
    fn shipped_example_config_is_valid_apart_from_its_secret() {
        let config = Config::parse(include_str!("../docs/raftvip.example.toml")).unwrap();
        assert_eq!(config.validate(), vec![]);
        assert_eq!(
            config.read_secret().unwrap_err().key,
            "secret_file",
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
        for (bad, what) in [
            ("192.0.2.100", "has no prefix length"),
            ("192.0.2.100/33", "is not a number from 0 to 32"),
            ("192.0.2.300/32", "is not an IPv4 or IPv6 address"),
            ("224.0.0.1/32", "multicast"),
            ("2001:db8::1/129", "is not a number from 0 to 128"),
        ] {
            let text = base.replace("192.0.2.100/32", bad);
            // A parse error: the line, the key, what is wrong and the fix.
            let err = Config::parse(&text).unwrap_err();
            assert!(err.contains(&format!("address = \"{bad}\"")), "{err}");
            assert!(err.contains("vip.address: "), "{err}");
            assert!(err.contains(what), "{err}");
            assert!(err.contains("(fix: write ADDRESS/PREFIX"), "{err}");
        }
        let twice = format!("{base}[[vip]]\naddress = \"192.0.2.100/32\"\ninterface = \"eth1\"\n");
        assert_eq!(keys(&twice), vec!["vip[1].address"]);
        let v6 = base.replace("192.0.2.100/32", "2001:db8::100/128");
        assert_eq!(keys(&v6), Vec::<String>::new());
        let label = base.replace(
            "interface = \"eth0\"",
            "interface = \"eth0\"\nlabel = \"eth1:vip\"",
        );
        assert_eq!(keys(&label), vec!["vip[0].label"]);
    }

    #[test]
    fn vips_that_are_no_single_host_address_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let base = valid(dir.path());
        for (bad, what) in [
            ("192.0.2.100/0", "prefix length 0"),
            ("192.0.2.0/24", "network address"),
            ("192.0.2.255/24", "broadcast address of 192.0.2.255/24"),
            ("192.0.2.100/30", "network address"),
            ("::ffff:192.0.2.12/128", "write it as 192.0.2.12"),
        ] {
            let err = Config::parse(&base.replace("192.0.2.100/32", bad)).unwrap_err();
            assert!(err.contains(what), "{bad}: {err}");
        }
        for good in [
            "192.0.2.101/30",
            "192.0.2.100/31",
            "192.0.2.255/32",
            "2001:db8::/64",
        ] {
            let text = base.replace("192.0.2.100/32", good);
            assert_eq!(keys(&text), Vec::<String>::new(), "{good}");
        }
    }

    #[test]
    fn interface_names_and_labels_the_kernel_would_refuse() {
        let dir = tempfile::tempdir().unwrap();
        let base = valid(dir.path());
        for bad in [
            "",
            "eth 0",
            "eth0/x",
            "eth0:1",
            ".",
            "..",
            "a-name-over-15-chars",
        ] {
            let text = base.replace("interface = \"eth0\"", &format!("interface = \"{bad}\""));
            assert_eq!(keys(&text), vec!["vip[0].interface"], "{bad:?}");
        }
        let v6_label = base.replace("192.0.2.100/32", "2001:db8::100/128").replace(
            "interface = \"eth0\"",
            "interface = \"eth0\"\nlabel = \"eth0:vip\"",
        );
        assert_eq!(keys(&v6_label), vec!["vip[0].label"]);
    }

    #[test]
    fn addresses_that_belong_to_another_node_or_to_nobody() {
        let dir = tempfile::tempdir().unwrap();
        let base = valid(dir.path());
        // A file copied from box 1 to box 2 with only node_id changed.
        let copied = base.replace("node_id = 1", "node_id = 2");
        let problems = problems_of(&copied);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].key, "listen");
        assert!(
            problems[0].what.contains("node 1's address"),
            "{problems:?}"
        );
        assert_eq!(
            keys(&base.replace("listen = \"192.0.2.11:7480\"", "listen = \"0.0.0.0:7480\"")),
            Vec::<String>::new()
        );
        let elsewhere = base.replace(
            "listen = \"192.0.2.11:7480\"",
            "listen = \"203.0.113.11:7480\"",
        );
        assert_eq!(keys(&elsewhere), Vec::<String>::new());
        let warnings = Config::parse(&elsewhere).unwrap().warnings();
        assert!(
            warnings.iter().any(|w| w.contains("through NAT")),
            "{warnings:?}"
        );
        // Several nodes on one host: one IP, a port each.
        let one_host = base
            .replace("192.0.2.11:7480", "127.0.0.1:7481")
            .replace("192.0.2.12:7480", "127.0.0.1:7482")
            .replace("192.0.2.13:7480", "127.0.0.1:7483");
        assert_eq!(keys(&one_host), Vec::<String>::new());
        let on_vip = base.replace(
            "listen = \"192.0.2.11:7480\"",
            "listen = \"192.0.2.100:7480\"",
        );
        assert_eq!(keys(&on_vip), vec!["listen"]);
        let status_on_vip = base.replace(
            "node_id = 1",
            "node_id = 1\nstatus_listen = \"192.0.2.100:7481\"",
        );
        assert_eq!(keys(&status_on_vip), vec!["status_listen"]);
        for bad in [
            "224.0.0.1:7480",
            "255.255.255.255:7480",
            "[::ffff:192.0.2.13]:7480",
        ] {
            let text = base.replace("192.0.2.13:7480", bad);
            assert_eq!(keys(&text), vec!["peer[2].address"], "{bad}");
        }
    }

    #[test]
    fn paths_and_proxy_names_that_cannot_work() {
        let dir = tempfile::tempdir().unwrap();
        let base = valid(dir.path());
        let data = format!("data_dir = \"{}/data\"", dir.path().display());
        for (from, to, key) in [
            (data.as_str(), "data_dir = \"\"", "data_dir"),
            (data.as_str(), "data_dir = \"var/lib/raftvip\"", "data_dir"),
            (
                "stats_socket = \"/run/haproxy/admin.sock\"",
                "stats_socket = \"admin.sock\"",
                "haproxy.stats_socket",
            ),
            (
                "stats_socket = \"/run/haproxy/admin.sock\"",
                "stats_socket = \"/run/haproxy/admin.sock\"\nbackends = [\"app\", \"app\", \"\"]",
                "haproxy.backends",
            ),
        ] {
            let text = base.replace(from, to);
            assert!(
                keys(&text).iter().all(|k| k == key),
                "{to}: {:?}",
                keys(&text)
            );
            assert!(!keys(&text).is_empty(), "{to}");
        }
        let longer = base.replace(
            "[haproxy]",
            "[timing]\nelection_timeout_ms = [60, 90, 120]\n[haproxy]",
        );
        let err = Config::parse(&longer).unwrap_err();
        assert!(err.contains("got 3 number(s)"), "{err}");
    }

    #[test]
    fn a_data_dir_that_is_a_file_or_not_writable_is_a_host_problem() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::parse(&valid(dir.path())).unwrap();
        assert!(
            config.host_problems().is_empty(),
            "its parent exists and is writable"
        );
        std::fs::write(dir.path().join("data"), "x").unwrap();
        let problems = config.host_problems();
        assert_eq!(problems.len(), 1);
        assert!(
            problems[0].what.contains("is not a directory"),
            "{problems:?}"
        );
    }

    #[test]
    fn a_stats_socket_path_that_is_no_socket_is_warned_about() {
        let dir = tempfile::tempdir().unwrap();
        let text = valid(dir.path()).replace(
            "/run/haproxy/admin.sock",
            &dir.path().join("secret").display().to_string(),
        );
        let warnings = Config::parse(&text).unwrap().host_warnings();
        assert!(
            warnings.iter().any(|w| w.contains("is not a socket")),
            "{warnings:?}"
        );
    }

    #[test]
    fn special_and_oversized_files_are_refused_without_reading_them() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        for path in [fifo.as_path(), Path::new("/dev/zero"), dir.path()] {
            let err = Config::read(path).unwrap_err().to_string();
            assert!(err.contains("not a regular file"), "{err}");
        }
        let big = dir.path().join("big.toml");
        std::fs::write(&big, vec![b'#'; MAX_CONFIG_BYTES as usize + 1]).unwrap();
        let err = Config::read(&big).unwrap_err().to_string();
        assert!(err.contains("larger than"), "{err}");
    }

    #[test]
    fn shell_syntax_in_a_hook_is_warned_about() {
        let notify = Notify {
            master: Some("/bin/true --flag 'two words'".into()),
            backup: Some("/bin/true plain words".into()),
            ..Notify::default()
        };
        let warnings = notify.warnings();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].starts_with("notify.master:"), "{warnings:?}");
        assert!(warnings[0].contains("without a shell"), "{warnings:?}");
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

    /// The valid config cut down to the members given as (id, role) pairs.
    fn with_members(dir: &Path, members: &[(u64, &str)]) -> String {
        let base = valid(dir);
        let (head, rest) = base.split_once("[[peer]]").unwrap();
        let (_, tail) = rest.split_once("[[vip]]").unwrap();
        let mut text = head.to_owned();
        for (id, role) in members {
            text.push_str(&format!(
                "[[peer]]\nid = {id}\naddress = \"192.0.2.1{id}:7480\"\nrole = \"{role}\"\n"
            ));
        }
        text + "[[vip]]" + tail
    }

    #[test]
    fn a_pair_without_witness_is_refused_naming_the_consequence_and_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let pair = with_members(dir.path(), &[(1, "voter"), (2, "voter")]);
        let problems = problems_of(&pair);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].key, "peer");
        assert!(
            problems[0].what.contains("no box holds the VIP"),
            "{}",
            problems[0]
        );
        assert!(
            problems[0].fix.contains("witness on a third machine"),
            "{}",
            problems[0]
        );
        assert!(
            problems[0].fix.contains("accept_no_failover"),
            "{}",
            problems[0]
        );
        // The same without explicit roles: two members are two voters.
        let unmarked = pair.replace("role = \"voter\"\n", "");
        assert_eq!(keys(&unmarked), vec!["peer"]);
        let config = Config::parse(&pair).unwrap();
        assert_eq!(config.tolerance().may_fail, 0);
        assert!(config.warnings().is_empty());
    }

    #[test]
    fn one_voter_with_only_witnesses_is_refused_too() {
        let dir = tempfile::tempdir().unwrap();
        let text = with_members(dir.path(), &[(1, "voter"), (2, "witness"), (3, "witness")]);
        let problems = problems_of(&text);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].what.contains("only 1 may lead"),
            "{}",
            problems[0]
        );
        let all = with_members(
            dir.path(),
            &[(1, "witness"), (2, "witness"), (3, "witness")],
        );
        let problems = problems_of(&all);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].what.contains("every member is a witness"),
            "{}",
            problems[0]
        );
    }

    #[test]
    fn accepting_no_failover_passes_with_a_warning() {
        let dir = tempfile::tempdir().unwrap();
        let pair = with_members(dir.path(), &[(1, "voter"), (2, "voter")])
            .replace("node_id = 1", "node_id = 1\naccept_no_failover = true");
        assert_eq!(keys(&pair), Vec::<String>::new());
        let warnings = Config::parse(&pair).unwrap().warnings();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("no failover"), "{}", warnings[0]);
        let single = with_members(dir.path(), &[(1, "voter")]);
        assert_eq!(keys(&single), vec!["peer"]);
    }

    #[test]
    fn a_pair_with_a_witness_survives_one_failure_and_even_counts_are_warned() {
        let dir = tempfile::tempdir().unwrap();
        let trio = with_members(dir.path(), &[(1, "voter"), (2, "voter"), (3, "witness")]);
        assert_eq!(keys(&trio), Vec::<String>::new());
        let config = Config::parse(&trio).unwrap();
        assert_eq!(
            config.tolerance(),
            Tolerance {
                members: 3,
                may_lead: 2,
                may_fail: 1
            }
        );
        assert!(config.warnings().is_empty());
        let four = with_members(
            dir.path(),
            &[(1, "voter"), (2, "voter"), (3, "voter"), (4, "witness")],
        );
        assert_eq!(keys(&four), Vec::<String>::new());
        let warnings = Config::parse(&four).unwrap().warnings();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].starts_with("4 voting members"),
            "{}",
            warnings[0]
        );
        let five = with_members(
            dir.path(),
            &[
                (1, "voter"),
                (2, "voter"),
                (3, "voter"),
                (4, "voter"),
                (5, "witness"),
            ],
        );
        assert_eq!(Config::parse(&five).unwrap().tolerance().may_fail, 2);
    }

    #[test]
    fn a_witness_is_known_by_its_peer_entry_and_a_contradiction_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let trio = with_members(dir.path(), &[(1, "witness"), (2, "voter"), (3, "voter")]);
        let witness = Config::parse(&trio).unwrap();
        assert!(witness.is_witness());
        assert!(witness.own_vips().is_empty() && witness.own_haproxy().is_none());
        let voter = Config::parse(&trio.replace("node_id = 1", "node_id = 2")).unwrap();
        assert_eq!(voter.own_vips().len(), 1);
        assert!(voter.own_haproxy().is_some());
        let contradiction = with_members(dir.path(), &[(1, "voter"), (2, "voter"), (3, "voter")])
            .replace("node_id = 1", "node_id = 1\nrole = \"witness\"");
        assert_eq!(keys(&contradiction), vec!["role"]);
        let other_way = trio.replace("node_id = 1", "node_id = 1\nrole = \"voter\"");
        assert_eq!(keys(&other_way), vec!["role"]);
        assert_eq!(witness.own_role(), MemberRole::Witness);
        assert_eq!(voter.own_role(), MemberRole::Voter);
    }

    #[test]
    fn out_of_range_numbers_are_named_never_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let base = valid(dir.path());
        let max = u64::MAX;
        for (table, line, key) in [
            ("timing", format!("fence_ms = {max}"), "timing.fence_ms"),
            (
                "timing",
                format!("heartbeat_ms = {max}"),
                "timing.heartbeat_ms",
            ),
            (
                "timing",
                format!("election_timeout_ms = [{max}, {max}]"),
                "timing.election_timeout_ms",
            ),
            (
                "timing",
                "reconcile_ms = 0".to_owned(),
                "timing.reconcile_ms",
            ),
            (
                "announce",
                format!("refresh_s = {max}"),
                "announce.refresh_s",
            ),
            (
                "announce",
                format!("burst_interval_ms = {max}"),
                "announce.burst_interval_ms",
            ),
            (
                "announce",
                format!("burst_count = {}", u32::MAX),
                "announce.burst_count",
            ),
            (
                "haproxy",
                format!("poll_interval_ms = {max}"),
                "haproxy.poll_interval_ms",
            ),
            ("haproxy", format!("rise = {}", u32::MAX), "haproxy.rise"),
            ("haproxy", "fall = 0".to_owned(), "haproxy.fall"),
        ] {
            let text = if table == "haproxy" {
                format!("{base}{line}\n")
            } else {
                format!("{base}\n[{table}]\n{line}\n")
            };
            let problems = problems_of(&text);
            assert!(
                problems
                    .iter()
                    .any(|p| p.key == key && p.what.contains("outside the accepted range")),
                "{line}: {problems:?}"
            );
        }
        let huge_id = base.replace("node_id = 1", &format!("node_id = {max}"));
        assert!(keys(&huge_id).contains(&"node_id".to_owned()));
    }

    #[test]
    fn a_secret_others_can_read_or_own_is_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let text = valid(dir.path());
        let secret = dir.path().join("secret");
        set_mode(&secret, 0o640);
        let problems = problems_of(&text);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].what.contains("mode 0640"), "{}", problems[0]);
        assert_eq!(problems[0].fix, format!("chmod 600 {}", secret.display()));
        set_mode(&secret, 0o400);
        assert_eq!(keys(&text), Vec::<String>::new());
        // Another owner: only testable where we may chown (root, as in CI).
        if nix::unistd::geteuid().is_root() {
            std::os::unix::fs::chown(&secret, Some(54_321), None).unwrap();
            let problems = problems_of(&text);
            assert_eq!(problems.len(), 1, "{problems:?}");
            assert!(problems[0].what.contains("uid 54321"), "{}", problems[0]);
            assert!(problems[0].fix.starts_with("chown root"), "{}", problems[0]);
        }
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// A TOML value of any type, so keys meet strings, huge and negative numbers, arrays
        /// and tables where they expect something else.
        fn any_value() -> impl Strategy<Value = String> {
            prop_oneof![
                any::<u64>().prop_map(|n| n.to_string()),
                any::<i64>().prop_map(|n| n.to_string()),
                (0u64..200_000).prop_map(|n| n.to_string()),
                Just("0".to_owned()),
                any::<bool>().prop_map(|b| b.to_string()),
                "[ -~]{0,24}".prop_map(|s| format!("{s:?}")),
                Just("\"192.0.2.100/32\"".to_owned()),
                Just("\"192.0.2.14:7480\"".to_owned()),
                Just("\"witness\"".to_owned()),
                (any::<u64>(), any::<u64>()).prop_map(|(a, b)| format!("[{a}, {b}]")),
            ]
        }

        /// Where a value may land: every key the loader knows, in its table.
        const KEYS: &[(&str, &str)] = &[
            ("", "node_id"),
            ("", "role"),
            ("", "accept_no_failover"),
            ("", "listen"),
            ("", "cluster"),
            ("[[peer]]", "id"),
            ("[[peer]]", "address"),
            ("[[peer]]", "role"),
            ("[[vip]]", "address"),
            ("[[vip]]", "interface"),
            ("[[vip]]", "label"),
            ("[haproxy]", "stats_socket"),
            ("[haproxy]", "min_servers_up"),
            ("[haproxy]", "poll_interval_ms"),
            ("[haproxy]", "timeout_ms"),
            ("[haproxy]", "rise"),
            ("[haproxy]", "fall"),
            ("[timing]", "heartbeat_ms"),
            ("[timing]", "election_timeout_ms"),
            ("[timing]", "fence_ms"),
            ("[timing]", "reconcile_ms"),
            ("[announce]", "burst_count"),
            ("[announce]", "burst_interval_ms"),
            ("[announce]", "refresh_s"),
        ];

        /// Loads, validates and, if valid, uses the config the way `run` does.
        fn exercise(text: &str) {
            let Ok(config) = Config::parse(text) else {
                return;
            };
            let problems = config.validate();
            let _ = (config.notes(), config.warnings(), config.tolerance());
            if problems.is_empty() && config.read_secret().is_ok() {
                let now = std::time::Instant::now();
                let t = &config.timing;
                let _ = now + t.fence() + t.heartbeat() + t.reconcile();
                let _ = now + Duration::from_millis(t.election_timeout_ms[1]);
                let _ = now + Duration::from_secs(config.announce.refresh_s);
                let _ = (config.own_vips(), config.own_haproxy());
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            #[test]
            fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
                exercise(&String::from_utf8_lossy(&bytes));
            }

            #[test]
            fn arbitrary_values_in_a_valid_config_never_panic(
                edits in proptest::collection::vec((0..KEYS.len(), any_value()), 1..4)
            ) {
                let dir = tempfile::tempdir().unwrap();
                let mut text = valid(dir.path());
                for (key, value) in edits {
                    let (table, name) = KEYS[key];
                    // Top-level keys go first; table keys into a (possibly new) table at the end.
                    text = if table.is_empty() {
                        format!("{name} = {value}\n{text}")
                    } else {
                        format!("{text}\n{table}\n{name} = {value}\n")
                    };
                }
                exercise(&text);
            }
        }
    }

    #[test]
    fn hundreds_of_vips_and_a_vip_lease_are_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let mut text = valid(dir.path()) + "[vip_lease]\nlifetime_s = 2\n";
        for i in 0..300 {
            text.push_str(&format!(
                "[[vip]]\naddress = \"198.51.{}.{}/32\"\ninterface = \"eth0\"\n",
                100 + i / 250,
                1 + i % 250
            ));
        }
        let config = Config::parse(&text).unwrap();
        assert_eq!(config.validate(), vec![]);
        assert_eq!(config.vips.len(), 301);
        assert_eq!(config.vip_lease.lifetime(), Some(Duration::from_secs(2)));
        assert_eq!(
            config.vip_lease.renew_every(),
            Some(Duration::from_millis(500))
        );
    }
}
