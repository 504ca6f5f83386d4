//! Removing this box's VIPs outside the supervisor: the first thing `raftvip run` does, the
//! last thing it does on every exit, the `raftvip release` command (systemd's
//! `ExecStopPost=`, operators), and the panic hook.
//!
//! Why outside the supervisor: a VIP must never outlive the process that owns it, and the
//! paths that leave one behind are exactly those where the supervisor is not running — a
//! start that fails before Raft is up (a corrupt store), a crash (the unit's `ExecStopPost=`
//! runs `raftvip release` after it), a panic. Releasing is always safe: it can never make a
//! second holder, only a (short) gap that the leader's reconcile or a new election closes.
//!
//! The removal itself is the VIP layer's [`AddressControl`] (netlink), synchronous and
//! idempotent, so it runs without a tokio runtime (the panic hook) and before anything else
//! is set up.

use std::fmt;

use crate::config::VipConfig;
use crate::vip::netlink::NetlinkControl;
use crate::vip::{AddressControl, Cause, Vip, VipError};

/// What happened to one configured VIP.
#[derive(Debug)]
pub enum Outcome {
    /// It was bound and is gone now.
    Removed,
    /// It was not bound (or its interface does not exist): nothing to do.
    NotBound,
    Failed(VipError),
}

/// One configured VIP and what releasing it did.
#[derive(Debug)]
pub struct Released {
    /// `ADDRESS/PREFIX on INTERFACE` (the config's text when it does not parse).
    pub vip: String,
    pub outcome: Outcome,
}

impl fmt::Display for Released {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.outcome {
            Outcome::Removed => write!(f, "removed {}", self.vip),
            Outcome::NotBound => write!(f, "{}: not bound", self.vip),
            Outcome::Failed(e) => write!(f, "{}: {e}", self.vip),
        }
    }
}

/// Removes every VIP in `vips` from this network namespace. Every VIP is tried even when
/// another fails; the netlink socket failing to open fails them all.
pub fn release(vips: &[VipConfig]) -> Vec<Released> {
    if vips.is_empty() {
        return Vec::new();
    }
    match NetlinkControl::connect() {
        Ok(control) => release_with(&control, vips),
        Err(e) => {
            let message = e.to_string();
            vips.iter()
                .map(|config| Released {
                    vip: format!("{} on {}", config.address, config.interface),
                    outcome: Outcome::Failed(VipError::Open {
                        cause: Cause::Netlink(message.clone()),
                    }),
                })
                .collect()
        }
    }
}

/// [`release`] through any [`AddressControl`] (a fake in tests).
pub fn release_with(control: &dyn AddressControl, vips: &[VipConfig]) -> Vec<Released> {
    vips.iter()
        .map(|config| {
            let vip = Vip::from_config(config);
            Released {
                vip: vip.to_string(),
                outcome: release_one(control, &vip),
            }
        })
        .collect()
}

fn release_one(control: &dyn AddressControl, vip: &Vip) -> Outcome {
    match control.is_bound(vip) {
        Ok(true) => match control.remove(vip) {
            Ok(()) => Outcome::Removed,
            Err(e) => Outcome::Failed(e),
        },
        Ok(false) => Outcome::NotBound,
        // No interface, no address on it.
        Err(e) if matches!(e.cause(), Cause::InterfaceMissing(_)) => Outcome::NotBound,
        Err(e) => Outcome::Failed(e),
    }
}

/// Releases `vips` and logs each VIP actually removed or not removable, with `why`.
/// Returns false if any removal failed.
pub fn release_and_log(vips: &[VipConfig], why: &str) -> bool {
    let mut ok = true;
    for released in release(vips) {
        match released.outcome {
            Outcome::Removed => tracing::warn!(vip = %released.vip, why, "removed a VIP"),
            Outcome::NotBound => {}
            Outcome::Failed(ref e) => {
                ok = false;
                tracing::error!(vip = %released.vip, why, error = %e, "cannot remove a VIP");
            }
        }
    }
    ok
}

/// From now on a panic anywhere — any thread, any task — logs, releases `vips` and aborts
/// the process. Without this, tokio catches a task's panic and the process lingers: it may
/// keep a VIP it no longer manages, and systemd never restarts it. Aborting (rather than
/// unwinding) also leaves a core dump and a signal-exit systemd counts as a failure.
///
/// Arm it only after the store has opened: opening it turns redb's panics on a damaged file
/// into a clean error with `catch_unwind`, which an aborting hook would pre-empt.
pub fn release_on_panic(vips: Vec<VipConfig>) {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        previous(info);
        tracing::error!(panic = %info, "raftvip panicked: releasing the VIPs and aborting");
        release_and_log(&vips, "panic");
        std::process::abort();
    }));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vip::fake::FakeFailure;
    use crate::vip::FakeAddressControl;

    fn vip(address: &str) -> VipConfig {
        VipConfig {
            address: address.parse().unwrap(),
            interface: "eth0".to_owned(),
            label: None,
        }
    }

    fn summary(released: &[Released]) -> Vec<String> {
        released.iter().map(|r| r.to_string()).collect()
    }

    #[test]
    fn removes_what_is_bound_and_reports_the_rest() {
        let control = FakeAddressControl::new();
        control.appear("192.0.2.100".parse().unwrap());
        let vips = [vip("192.0.2.100/32"), vip("2001:db8::100/128")];
        let released = release_with(&control, &vips);
        assert_eq!(
            summary(&released),
            [
                "removed 192.0.2.100/32 on eth0",
                "2001:db8::100/128 on eth0: not bound"
            ]
        );
        assert!(control.bound().is_empty());
        // Idempotent: a second run finds nothing.
        let again = release_with(&control, &vips);
        assert!(again.iter().all(|r| matches!(r.outcome, Outcome::NotBound)));
    }

    #[test]
    fn a_missing_interface_has_nothing_to_release_but_a_denied_removal_fails() {
        let control = FakeAddressControl::new();
        let (gone, denied) = ("192.0.2.100", "192.0.2.101");
        control.appear(denied.parse().unwrap());
        control.fail(gone.parse().unwrap(), FakeFailure::InterfaceMissing);
        control.fail(denied.parse().unwrap(), FakeFailure::PermissionDenied);
        let released = release_with(&control, &[vip("192.0.2.100/32"), vip("192.0.2.101/32")]);
        assert!(matches!(released[0].outcome, Outcome::NotBound));
        assert!(
            matches!(released[1].outcome, Outcome::Failed(_)),
            "{:?}",
            released[1]
        );
        assert!(released[1].to_string().contains("CAP_NET_ADMIN"));
    }
}
