//! The successor's side of a planned overlap: no TCP resets from its VIPs while it lasts.
//!
//! A client switches to the successor's MAC at its first announcement. Segments of
//! connections still open with the old holder (the request, the ACK of the answer) then reach
//! the successor, which knows no such connection and answers with a reset — failing a
//! request the old holder is about to answer (measured on the netns bed: about one planned
//! handover in ten lost a probe that way). While the guard is up those resets are dropped
//! instead: the client's stray ACKs are lost harmlessly, the old holder's answer still reaches
//! it directly, and the old holder keeps the VIPs for a short drain so that answer can leave.
//!
//! It is one nftables table (an output chain dropping RST segments whose source is a VIP),
//! added when this node is asked to take over and deleted when the overlap ends. Written as
//! an `nft -f -` script rather than through a netlink nftables crate: one table per planned
//! handover does not justify a dependency, and `nft` is on every box that runs a firewall.
//! Without `nft` the handover still works; only requests open at the switch may be reset
//! (logged once).

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::net::IpAddr;
use std::process::{Command, Stdio};
use std::sync::Mutex;

/// The guard of one set of VIPs, in the network namespace of the thread that uses it.
pub struct RstGuard {
    /// Named after the VIPs configured at start, so that two raftvip instances on one box do
    /// not share a table (a reload changes the rule, not the name).
    table: String,
    /// (up, the last failure was logged)
    state: Mutex<(bool, bool)>,
}

impl RstGuard {
    pub fn new(vips: &[IpAddr]) -> Self {
        let mut hasher = DefaultHasher::new();
        vips.hash(&mut hasher);
        Self {
            table: format!("raftvip_overlap_{:08x}", hasher.finish() as u32),
            state: Mutex::new((false, false)),
        }
    }

    /// Puts the guard up for `vips` or takes it down (idempotent).
    pub fn set(&self, up: bool, vips: &[IpAddr]) {
        let mut state = crate::sync::lock(&self.state);
        if state.0 == up {
            return;
        }
        let script = if up {
            self.up_script(vips)
        } else {
            self.down_script()
        };
        match nft(&script) {
            Ok(()) => {
                *state = (up, false);
                tracing::debug!(table = %self.table, up, "overlap reset guard");
            }
            Err(why) => {
                // State unchanged: a failed take-down is tried again next time.
                if !state.1 {
                    tracing::warn!(
                        table = %self.table,
                        %why,
                        "cannot change the overlap reset guard: requests open with the old holder at a planned handover may be reset (is nft installed?)"
                    );
                    state.1 = true;
                }
            }
        }
    }

    fn up_script(&self, vips: &[IpAddr]) -> String {
        let set = |v6: bool| {
            let ips: Vec<String> = vips
                .iter()
                .filter(|ip| ip.is_ipv6() == v6)
                .map(IpAddr::to_string)
                .collect();
            (!ips.is_empty()).then(|| ips.join(", "))
        };
        let mut rules = String::new();
        if let Some(v4) = set(false) {
            rules += &format!("    ip saddr {{ {v4} }} tcp flags & rst == rst drop\n");
        }
        if let Some(v6) = set(true) {
            rules += &format!("    ip6 saddr {{ {v6} }} tcp flags & rst == rst drop\n");
        }
        format!(
            "add table inet {t}\ndelete table inet {t}\ntable inet {t} {{\n  chain output {{\n    type filter hook output priority 0; policy accept;\n{rules}  }}\n}}\n",
            t = self.table
        )
    }

    fn down_script(&self) -> String {
        format!(
            "add table inet {t}\ndelete table inet {t}\n",
            t = self.table
        )
    }
}

/// Runs `nft -f -` with `script`; Err says why it failed.
fn nft(script: &str) -> Result<(), String> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run nft: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .map_err(|e| format!("cannot write to nft: {e}"))?;
    }
    let output = child
        .wait_with_output()
        .map_err(|e| format!("nft did not finish: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "nft {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_drops_resets_from_each_family_of_vips() {
        let vips: Vec<IpAddr> = ["192.0.2.100", "2001:db8::100", "192.0.2.101"]
            .iter()
            .map(|ip| ip.parse().unwrap())
            .collect();
        let guard = RstGuard::new(&vips);
        let script = guard.up_script(&vips);
        assert!(script.contains("ip6 saddr { 2001:db8::100 } tcp flags & rst == rst drop"));
        assert!(script.contains("type filter hook output priority 0; policy accept;"));
        assert!(guard.table.starts_with("raftvip_overlap_"));
        assert!(guard
            .down_script()
            .ends_with(&format!("delete table inet {}\n", guard.table)));
    }

    #[test]
    fn only_the_families_present_get_a_rule() {
        let vips: Vec<IpAddr> = vec!["192.0.2.100".parse().unwrap()];
        assert!(!RstGuard::new(&vips).up_script(&vips).contains("ip6"));
    }
}
