//! The successor's side of a planned overlap: connections still open with the old holder
//! keep working while it lasts.
//!
//! A client switches to the successor's MAC at its first announcement. Segments of
//! connections still open with the old holder (the request, the ACK of the answer) then reach
//! the successor, which knows no such connection and answers with a reset — failing a
//! request the old holder is about to answer (measured on the netns bed: about one planned
//! handover in ten lost a probe that way; a request whose handshake the old holder answered
//! just before the switch lost its request segment and waited for a retransmission). While
//! the guard is up:
//! - segments to a VIP that open no connection (no SYN) and belong to none the successor
//!   knows (conntrack state new) are passed on to the old holder at its address on the VIP's
//!   segment (`dup to … device …`, then dropped here), so it answers them itself;
//! - the resets the successor would still send from its VIPs are dropped.
//!
//! The old holder keeps the VIPs for a short drain after the successor's word, so those
//! answers can leave. Forwarding needs the old holder's address (the one it asked from) to be
//! on-link on the VIP's interface here, and in the VIP's family; otherwise only the resets
//! are dropped. Conntrack runs in this network namespace only while the guard's tables exist
//! (the kernel registers its hooks for the rules that need it).
//!
//! It is one nftables table per address family, added when this node is asked to take over
//! and deleted when the overlap ends (and at start, in case a previous run died during one).
//! Written as an `nft -f -` script rather than through a netlink nftables crate: one table per
//! planned handover does not justify a dependency, and `nft` is on every box that runs a
//! firewall. Without `nft` the handover still works; only requests open at the switch may be
//! lost (logged once).

use std::collections::hash_map::DefaultHasher;
use std::fmt::Write as _;
use std::hash::{Hash, Hasher};
use std::io::{ErrorKind, Write};
use std::net::IpAddr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::time::Duration;

use super::Vip;

/// The guard of one set of VIPs, in the network namespace of the thread that creates it.
/// Its tables change on a thread of its own: `nft` is a process to start and wait for
/// (10–30 ms), and the VIP thread, which enforces the fence, waits for it only before a
/// successor binds, and only for a bounded time ([`OverlapGuard::wait_settled`]).
pub struct OverlapGuard {
    wishes: mpsc::Sender<(u64, Wish)>,
    /// Wishes sent so far.
    sent: AtomicU64,
    /// The last wish the guard's thread carried out or gave up on.
    settled: Arc<(Mutex<u64>, Condvar)>,
}

enum Wish {
    Up { vips: Vec<Vip>, old_holder: IpAddr },
    Down,
}

/// The guard thread's side: the tables and what it last did to them.
struct Tables {
    /// Named after the VIPs configured at start, so that two raftvip instances on one box do
    /// not share a table (a reload changes the rules, not the name).
    name: String,
    /// The up script in force (None: down): a new old holder or VIP set changes the rules.
    applied: Option<String>,
    failure_logged: bool,
}

/// One VIP as the guard's rules see it: its address and, when the old holder can be reached
/// on its segment, the interface to pass segments on through.
struct Guarded<'a> {
    ip: IpAddr,
    forward_through: Option<&'a str>,
}

impl OverlapGuard {
    /// A guard for `vips`; its thread first takes down the tables a previous run may have
    /// left.
    pub fn new(vips: &[IpAddr]) -> Self {
        let tables = Tables::named(vips);
        let (wishes, received) = mpsc::channel();
        let settled = Arc::new((Mutex::new(0), Condvar::new()));
        let reported = settled.clone();
        let started = std::thread::Builder::new()
            .name("raftvip-overlap".into())
            .spawn(move || tables.serve(&received, &reported));
        if let Err(e) = started {
            tracing::warn!(error = %e, "cannot start the planned overlap's guard thread: requests open with the old holder at a planned handover may be lost");
        }
        Self {
            wishes,
            sent: AtomicU64::new(0),
            settled,
        }
    }

    /// Puts the guard up for `vips`, passing segments on to `old_holder` (idempotent).
    pub fn up(&self, vips: Vec<Vip>, old_holder: IpAddr) {
        self.send(Wish::Up { vips, old_holder });
    }

    /// Takes the guard down (idempotent).
    pub fn down(&self) {
        self.send(Wish::Down);
    }

    fn send(&self, wish: Wish) {
        let number = self.sent.fetch_add(1, Ordering::SeqCst) + 1;
        let _ = self.wishes.send((number, wish));
    }

    /// Waits (at most `limit`) until every wish sent so far is carried out or given up on;
    /// false on timeout.
    pub fn wait_settled(&self, limit: Duration) -> bool {
        let sent = self.sent.load(Ordering::SeqCst);
        let (lock, changed) = &*self.settled;
        let settled = crate::sync::lock(lock);
        changed
            .wait_timeout_while(settled, limit, |settled| *settled < sent)
            .is_ok_and(|(_, timeout)| !timeout.timed_out())
    }
}

impl Tables {
    fn named(vips: &[IpAddr]) -> Self {
        let mut hasher = DefaultHasher::new();
        vips.hash(&mut hasher);
        Self {
            name: format!("raftvip_overlap_{:08x}", hasher.finish() as u32),
            applied: None,
            failure_logged: false,
        }
    }

    /// Applies the latest wish until the VIP layer is gone, then takes the tables down.
    fn serve(mut self, wishes: &mpsc::Receiver<(u64, Wish)>, settled: &(Mutex<u64>, Condvar)) {
        match nft(&self.down_script()) {
            Err(NftError::Missing(_)) | Ok(()) => {}
            Err(why) => {
                tracing::warn!(table = %self.name, %why, "cannot remove a planned overlap's table left by a previous run")
            }
        }
        while let Ok(mut wish) = wishes.recv() {
            while let Ok(later) = wishes.try_recv() {
                wish = later;
            }
            let (number, wish) = wish;
            match wish {
                Wish::Up { vips, old_holder } => self.up(&vips, old_holder),
                Wish::Down => self.apply(None, || {}),
            }
            let (lock, changed) = settled;
            *crate::sync::lock(lock) = number;
            changed.notify_all();
        }
        self.apply(None, || {});
    }

    fn up(&mut self, vips: &[Vip], old_holder: IpAddr) {
        let guarded: Vec<Guarded> = vips
            .iter()
            .map(|vip| Guarded {
                ip: vip.addr.ip,
                forward_through: (vip.addr.ip.is_ipv4() == old_holder.is_ipv4()
                    && on_link(&vip.interface, old_holder))
                .then_some(vip.interface.as_str()),
            })
            .collect();
        let forwarded = guarded
            .iter()
            .filter(|g| g.forward_through.is_some())
            .count();
        self.apply(Some(self.up_script(&guarded, old_holder)), || {
            tracing::info!(
                %old_holder,
                forwarded,
                of = guarded.len(),
                "planned overlap: segments of connections open with the old holder go to it; VIPs without its address on their segment only drop resets"
            );
        });
    }

    /// Puts the `up` script in force, or takes the tables down (None); nothing if in force.
    fn apply(&mut self, up: Option<String>, applied: impl FnOnce()) {
        if self.applied == up {
            return;
        }
        let script = up.clone().unwrap_or_else(|| self.down_script());
        match nft(&script) {
            Ok(()) => {
                tracing::debug!(table = %self.name, up = up.is_some(), "overlap guard");
                self.applied = up;
                self.failure_logged = false;
                applied();
            }
            // Unchanged: a failed take-down is tried again next time.
            Err(why) if !self.failure_logged => {
                tracing::warn!(
                    table = %self.name,
                    %why,
                    "cannot change the planned overlap's guard: requests open with the old holder at a planned handover may be lost (is nft installed?)"
                );
                self.failure_logged = true;
            }
            Err(_) => {}
        }
    }

    fn up_script(&self, vips: &[Guarded], old_holder: IpAddr) -> String {
        let mut script = self.down_script();
        for (family, v6) in [("ip", false), ("ip6", true)] {
            let these: Vec<&Guarded> = vips.iter().filter(|g| g.ip.is_ipv6() == v6).collect();
            if these.is_empty() {
                continue;
            }
            let ips: Vec<String> = these.iter().map(|g| g.ip.to_string()).collect();
            let mut forward = String::new();
            for g in these {
                if let Some(device) = g.forward_through {
                    let _ = writeln!(
                        forward,
                        "    {family} daddr {} tcp flags ! syn ct state new dup to {old_holder} device \"{device}\" drop",
                        g.ip
                    );
                }
            }
            let _ = write!(
                script,
                "table {family} {t} {{\n  chain output {{\n    type filter hook output priority 0; policy accept;\n    {family} saddr {{ {ips} }} tcp flags & rst == rst drop\n  }}\n",
                t = self.name,
                ips = ips.join(", "),
            );
            if !forward.is_empty() {
                let _ = write!(
                    script,
                    "  chain prerouting {{\n    type filter hook prerouting priority 0; policy accept;\n{forward}  }}\n"
                );
            }
            script += "}\n";
        }
        script
    }

    /// Deletes the table of each family, and the single `inet` table of earlier versions.
    fn down_script(&self) -> String {
        ["ip", "ip6", "inet"]
            .iter()
            .map(|family| {
                format!(
                    "add table {family} {t}\ndelete table {family} {t}\n",
                    t = self.name
                )
            })
            .collect()
    }
}

/// `ip` is in the subnet of an address of `interface` (so a frame for it goes straight to
/// it, not through a router, which would route the segment's VIP back to us).
fn on_link(interface: &str, ip: IpAddr) -> bool {
    let Ok(addresses) = nix::ifaddrs::getifaddrs() else {
        return false;
    };
    let bits = |ip: IpAddr| match ip {
        IpAddr::V4(ip) => (false, u128::from(ip.to_bits())),
        IpAddr::V6(ip) => (true, ip.to_bits()),
    };
    let (v6, ip) = bits(ip);
    addresses
        .filter(|a| a.interface_name == interface)
        .filter_map(|a| Some((socket_ip(a.address?)?, socket_ip(a.netmask?)?)))
        .any(|(address, mask)| {
            let ((address_v6, address), (_, mask)) = (bits(address), bits(mask));
            address_v6 == v6 && address & mask == ip & mask
        })
}

fn socket_ip(address: nix::sys::socket::SockaddrStorage) -> Option<IpAddr> {
    let v4 = address.as_sockaddr_in().map(|a| IpAddr::V4(a.ip()));
    v4.or_else(|| address.as_sockaddr_in6().map(|a| IpAddr::V6(a.ip())))
}

/// Why `nft` did not apply a script.
#[derive(Debug, thiserror::Error)]
enum NftError {
    #[error("cannot run nft: {0}")]
    Missing(std::io::Error),
    #[error("{0}")]
    Failed(String),
}

/// Runs `nft -f -` with `script`.
fn nft(script: &str) -> Result<(), NftError> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| match e.kind() {
            ErrorKind::NotFound => NftError::Missing(e),
            _ => NftError::Failed(format!("cannot run nft: {e}")),
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .map_err(|e| NftError::Failed(format!("cannot write to nft: {e}")))?;
    }
    let output = child
        .wait_with_output()
        .map_err(|e| NftError::Failed(format!("nft did not finish: {e}")))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(NftError::Failed(format!(
            "nft {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guarded(ip: &str, forward_through: Option<&'static str>) -> Guarded<'static> {
        Guarded {
            ip: ip.parse().unwrap(),
            forward_through,
        }
    }

    #[test]
    fn each_family_drops_resets_from_its_vips_and_forwards_where_the_old_holder_is_on_link() {
        let vips = [
            guarded("192.0.2.100", Some("eth0")),
            guarded("2001:db8::100", None),
            guarded("192.0.2.101", None),
        ];
        let tables = Tables::named(&[]);
        let script = tables.up_script(&vips, "192.0.2.11".parse().unwrap());
        assert!(
            script.contains("ip saddr { 192.0.2.100, 192.0.2.101 } tcp flags & rst == rst drop")
        );
        assert!(script.contains("ip6 saddr { 2001:db8::100 } tcp flags & rst == rst drop"));
        assert!(script.contains(
            "ip daddr 192.0.2.100 tcp flags ! syn ct state new dup to 192.0.2.11 device \"eth0\" drop"
        ));
        assert!(!script.contains("daddr 192.0.2.101"));
        assert_eq!(script.matches("hook prerouting").count(), 1, "{script}");
        assert!(script.starts_with(&tables.down_script()));
        assert!(tables.name.starts_with("raftvip_overlap_"));
    }

    #[test]
    fn only_the_families_present_get_a_table() {
        let tables = Tables::named(&[]);
        let script = tables.up_script(
            &[guarded("192.0.2.100", None)],
            "192.0.2.11".parse().unwrap(),
        );
        assert!(!script.contains("ip6 saddr"));
        assert!(!script.contains("prerouting"));
    }

    #[test]
    fn an_address_is_on_link_only_within_a_subnet_of_the_interface() {
        assert!(on_link("lo", "127.0.0.2".parse().unwrap()));
        assert!(!on_link("lo", "192.0.2.11".parse().unwrap()));
        assert!(!on_link("no-such-interface", "127.0.0.2".parse().unwrap()));
    }
}
