//! Notify hooks: an operator script run on transitions, like keepalived's `notify`.
//!
//! The script gets `CLUSTER EVENT REASON` as arguments, EVENT being `master` (this node took
//! the VIPs), `backup` (it released them, or started), `fault` (its HAProxy turned unhealthy or
//! a VIP cannot be bound) or `stop` (the node stopped). It runs in
//! the background with a timeout: a slow or hanging script must never delay a failover.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use crate::config::Config;
use crate::raft::NodeId;

/// A hook gets this long before it is killed; long enough to page someone or reload a firewall.
const HOOK_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    Master,
    Backup,
    Fault,
    Stop,
}

/// What a hook is told besides the event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookContext {
    pub leader_id: Option<NodeId>,
    pub term: u64,
    pub reason: String,
}

impl Event {
    pub fn name(self) -> &'static str {
        match self {
            Event::Master => "master",
            Event::Backup => "backup",
            Event::Fault => "fault",
            Event::Stop => "stop",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Notifier {
    script: Option<PathBuf>,
    cluster: String,
}

impl Notifier {
    pub fn new(config: &Config) -> Self {
        Self {
            script: config.notify.script.clone(),
            cluster: config.cluster.clone(),
        }
    }

    /// Starts the hook for `event` in the background; a no-op without a script.
    pub fn fire(&self, event: Event, context: &HookContext) {
        let reason = context.reason.as_str();
        let Some(script) = self.script.clone() else {
            return;
        };
        let mut command = tokio::process::Command::new(&script);
        command
            .args([self.cluster.as_str(), event.name(), reason])
            .stdin(Stdio::null())
            .kill_on_drop(true);
        tokio::spawn(async move {
            let outcome = match command.spawn() {
                Err(e) => Err(format!("cannot start: {e}")),
                Ok(mut child) => match tokio::time::timeout(HOOK_TIMEOUT, child.wait()).await {
                    Ok(Ok(status)) if status.success() => Ok(()),
                    Ok(Ok(status)) => Err(format!("exited with {status}")),
                    Ok(Err(e)) => Err(format!("wait failed: {e}")),
                    Err(_) => Err(format!("killed after {} s", HOOK_TIMEOUT.as_secs())),
                },
            };
            match outcome {
                Ok(()) => {
                    tracing::info!(script = %script.display(), event = event.name(), "notify hook ran")
                }
                Err(why) => {
                    tracing::warn!(script = %script.display(), event = event.name(), %why, "notify hook failed")
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[tokio::test]
    async fn hook_gets_cluster_event_and_reason() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let script = dir.path().join("hook.sh");
        std::fs::write(
            &script,
            format!("#!/bin/sh\necho \"$1|$2|$3\" >> {}\n", out.display()),
        )
        .unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();

        let notifier = Notifier {
            script: Some(script),
            cluster: "lb-test".to_owned(),
        };
        let context = HookContext {
            leader_id: Some(1),
            term: 3,
            reason: "leader with quorum".to_owned(),
        };
        notifier.fire(Event::Master, &context);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !out.exists() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let text = std::fs::read_to_string(&out).unwrap();
        assert_eq!(text, "lb-test|master|leader with quorum\n");
    }
}
