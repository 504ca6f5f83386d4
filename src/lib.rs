//! raftvip keeps a virtual IP on exactly one healthy HAProxy box.
//!
//! Every box runs HAProxy and raftvip; the raftvip instances form a Raft cluster. The Raft
//! leader binds the VIPs — but only while its quorum acknowledged it recently (fencing by
//! lease) and its HAProxy is healthy. A node whose HAProxy is unhealthy does not stand in
//! elections, and an unhealthy leader releases the VIPs and hands leadership to a healthy peer.
//!
//! Layout:
//! - [`config`]: the TOML file, strict parsing, validation that names key, problem and fix.
//! - [`raft`]: openraft type declarations (`raft::typ`), the durable store (redb), the vote gate.
//! - [`auth`]: HMAC signatures on peer requests (no forgery, no replay).
//! - [`peer`]: both sides of the peer wire: paths, messages, the signed client, openraft's
//!   network, the handlers and the handover / pre-vote requests.
//! - [`api`]: the HTTP server (connection cap; mounts the peer routes), status, metrics and
//!   the CLI's client.
//! - [`health`]: HAProxy's runtime API: polling, instant death detection, verdicts.
//! - [`vip`]: netlink address binding, gratuitous ARP / unsolicited NA, duplicate probes.
//! - [`supervisor`]: the one place where Raft role, lease, health and maintenance meet:
//!   `core.rs` is a pure state machine (`step(now, input) -> actions`: `decide`, the fence,
//!   the election timer, pre-vote, handover, stop, notify events, grant rules); `driver.rs`
//!   only feeds it inputs and executes its actions.
//! - [`daemon`]: all wiring, the start-up and the whole shutdown order (the CLI only parses
//!   and calls it).
//! - [`metrics`]: Prometheus text rendered from the status document.
//! - [`notify`]: keepalived-compatible hook scripts (MASTER / BACKUP / FAULT / STOP), run in order.
//! - [`membership`]: a reload's `[[peer]]` list made the membership through Raft (learner,
//!   then voter; a leaving leader hands over first; removed boxes are told).
//! - [`status`]: the JSON status document shared by the API and the CLI.
//! - [`release`]: removing this box's VIPs outside the supervisor (start, exit, crash, panic).
//! - [`reload`]: SIGHUP and `raftvip reload`: re-read the file, reject restart-only changes,
//!   apply the rest live.
//! - [`systemd`]: sd_notify readiness, status, stopping and watchdog pings.
//! - [`keepalived`]: `import-keepalived`, keepalived.conf → raftvip.toml.
//! - [`process_metrics`]: memory, CPU, descriptors and start time from `/proc/self`.
//! - [`clock`]: wall-clock milliseconds, for times that leave the process.
//! - [`sync`]: the poison-tolerant mutex lock.
//! - [`log_limit`]: a message that repeats logged once per period, with the count held back.
//! - [`realtime`]: `[process]`: real-time scheduling and locked memory for the lease's threads.

pub mod api;
pub mod auth;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod health;
pub mod keepalived;
pub mod log_limit;
pub mod membership;
pub mod metrics;
pub mod notify;
pub mod peer;
pub mod process_metrics;
pub mod raft;
pub mod realtime;
pub mod release;
pub mod reload;
pub mod status;
pub mod supervisor;
pub mod sync;
pub mod systemd;
pub mod vip;
