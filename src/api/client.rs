//! What the `raftvip` CLI uses to talk to the local daemon.
//!
//! Status is a plain GET. Changes (maintenance, transfer, reload) are signed like peer requests: the CLI reads
//! the same config and secret as the daemon, so being able to read the secret file is what
//! authorises an operator — no second credential to manage.

use std::time::Duration;

use http_body_util::Full;
use hyper::{Request, StatusCode, Uri};

use super::STATUS_PATH;
use crate::peer::client::{exchange, lan_client, with_causes, ExchangeError};
use crate::peer::wire::{MaintenanceRequest, TransferRequest, MAINTENANCE_PATH, TRANSFER_PATH};
use crate::peer::wire::{ReloadOutcome, ReloadRequest, RELOAD_PATH};
use crate::peer::{PeerCallError, PeerClient};
use crate::raft::NodeId;
use crate::status::Status;

/// Long enough for a busy box, short enough for an operator waiting at a prompt.
const CLI_TIMEOUT: Duration = Duration::from_secs(3);
/// A reload that changes the `[[peer]]` list waits for the membership change
/// ([`crate::membership::RELOAD_WAIT`]).
const RELOAD_TIMEOUT: Duration = crate::membership::RELOAD_WAIT.saturating_add(CLI_TIMEOUT);

/// Most of a status document `status` reads (one with hundreds of VIPs and peers is well
/// under a megabyte), so whatever answers on the address cannot make the CLI buffer more.
const MAX_STATUS: usize = 8 << 20;

#[derive(Debug, thiserror::Error)]
pub enum FetchStatusError {
    #[error("cannot reach raftvip at {url} (is it running?): {reason}")]
    Connect { url: String, reason: String },
    #[error("raftvip at {url} answered with something that is not a status document: {reason}")]
    Decode { url: String, reason: String },
}

/// Fetches the status document of the daemon listening on `address`.
pub async fn fetch_status(address: &str) -> Result<Status, FetchStatusError> {
    let url = format!("http://{address}{STATUS_PATH}");
    let unreachable = |reason: String| FetchStatusError::Connect {
        url: url.clone(),
        reason,
    };
    let not_status = |reason: String| FetchStatusError::Decode {
        url: url.clone(),
        reason,
    };
    let uri = Uri::try_from(url.as_str()).map_err(|e| unreachable(e.to_string()))?;
    let request = Request::get(uri)
        .body(Full::default())
        .map_err(|e| unreachable(e.to_string()))?;
    // Like the peer client, never through HTTP_PROXY: the daemon is on this box or its LAN,
    // and an operator's proxy settings must not decide whether `status` works.
    let (head, body) = exchange(&lan_client(), request, MAX_STATUS, CLI_TIMEOUT)
        .await
        .map_err(|e| match e {
            ExchangeError::Connect(e) | ExchangeError::Request(e) => {
                unreachable(with_causes(e.as_ref()))
            }
            ExchangeError::Body(e) => not_status(with_causes(e.as_ref())),
            ExchangeError::TimedOut => unreachable(format!("no answer within {CLI_TIMEOUT:?}")),
        })?;
    if !head.status.is_success() {
        return Err(not_status(format!(
            "HTTP {}: {}",
            head.status,
            String::from_utf8_lossy(&body)
        )));
    }
    serde_json::from_slice(&body).map_err(|e| not_status(e.to_string()))
}

/// Asks the daemon `daemon` on `address` to put `node_id` into (or out of) maintenance.
pub async fn set_maintenance(
    client: &PeerClient,
    daemon: NodeId,
    address: &str,
    node_id: NodeId,
    on: bool,
    force: bool,
) -> Result<(), PeerCallError> {
    let request = MaintenanceRequest {
        node_id,
        on,
        force,
        forwarded: false,
    };
    // Writing the flag needs a leader: during an election (the handover that the previous
    // command started, say) there is none for a moment, so try again until there is. The
    // write is idempotent, so a try whose answer was lost does no harm.
    let deadline = tokio::time::Instant::now() + NO_LEADER_WAIT;
    loop {
        let answer = client
            .call(daemon, address, MAINTENANCE_PATH, &request, CLI_TIMEOUT)
            .await;
        match answer {
            Err(PeerCallError::Status { status, .. })
                if matches!(
                    status,
                    StatusCode::SERVICE_UNAVAILABLE | StatusCode::BAD_GATEWAY
                ) && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(NO_LEADER_RETRY).await;
            }
            answer => return answer,
        }
    }
}

/// How long `raftvip maintenance` keeps trying while the cluster has no leader: an election
/// takes about a hundred ms, one that falls back on a last resort about a second.
const NO_LEADER_WAIT: Duration = Duration::from_secs(3);
/// The pause between those tries.
const NO_LEADER_RETRY: Duration = Duration::from_millis(100);

/// How long `raftvip transfer` waits: the leader checks the target (up to half a second when
/// it is unreachable), then waits up to a second for it to take over.
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(5);

/// Asks the daemon `daemon` on `address` to move leadership to `to` (None: any node that can
/// lead); the new leader's id.
pub async fn transfer(
    client: &PeerClient,
    daemon: NodeId,
    address: &str,
    to: Option<NodeId>,
) -> Result<NodeId, PeerCallError> {
    let request = TransferRequest {
        to,
        forwarded: false,
    };
    client
        .call(daemon, address, TRANSFER_PATH, &request, TRANSFER_TIMEOUT)
        .await
}

/// Asks the daemon `daemon` on `address` to reload its config file, which must be `path`;
/// returns what it applied or why it kept the running config.
pub async fn reload(
    client: &PeerClient,
    daemon: NodeId,
    address: &str,
    path: &str,
) -> Result<ReloadOutcome, PeerCallError> {
    let request = ReloadRequest {
        path: path.to_owned(),
    };
    client
        .call(daemon, address, RELOAD_PATH, &request, RELOAD_TIMEOUT)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peer::client::tests::answer_endlessly;

    /// Whatever answers on the daemon's address cannot make `raftvip status` buffer without
    /// bound: it says what it got instead.
    #[tokio::test]
    async fn an_endless_status_answer_is_refused() {
        let address = answer_endlessly(4 * MAX_STATUS).await;
        let error = fetch_status(&address).await.unwrap_err();
        assert!(
            matches!(&error, FetchStatusError::Decode { reason, .. } if reason == "length limit exceeded"),
            "{error}"
        );
    }
}
