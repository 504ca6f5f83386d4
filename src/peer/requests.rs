//! The asking side of raftvip's own peer calls: "take over now" (handover) and pre-votes.
//!
//! The supervisor decides *when* to ask; this says *whom* and how to count the answers. It is
//! plain async methods over the signed client, so the supervisor's trait for it lives with the
//! supervisor and this module never needs to know it.

use std::time::Duration;

use super::client::PeerClient;
use super::wire::{PeerAnswer, PrevoteRequest, ELECT_PATH, PREVOTE_PATH};
use crate::raft::store::LogStore;
use crate::raft::NodeId;

/// Timeout of one "elect now" request during a handover: a LAN answers in about a millisecond.
const ELECT_REQUEST_TIMEOUT: Duration = Duration::from_millis(200);
/// Timeout of a pre-vote round. Short: a peer that cannot answer this fast does not count,
/// and the round is repeated after the next election timeout anyway.
const PREVOTE_TIMEOUT: Duration = Duration::from_millis(50);

/// This node's requests to its peers.
pub struct PeerRequests {
    client: PeerClient,
    /// Every member, this node included: (id, `IP:PORT`).
    peers: Vec<(NodeId, String)>,
    /// This node's log, whose end each pre-vote names.
    log: LogStore,
}

impl PeerRequests {
    pub fn new(client: PeerClient, peers: Vec<(NodeId, String)>, log: LogStore) -> Self {
        Self { client, peers, log }
    }

    /// Asks peers, in id order starting after this node, to start an election now; returns
    /// the first that accepted.
    pub async fn hand_over(&self, me: NodeId) -> Option<NodeId> {
        let (before, after): (Vec<_>, Vec<_>) = self
            .peers
            .iter()
            .filter(|(id, _)| *id != me)
            .partition(|(id, _)| *id < me);
        for (id, address) in after.into_iter().chain(before) {
            let answer: Result<PeerAnswer, _> = self
                .client
                .call(*id, address, ELECT_PATH, &(), ELECT_REQUEST_TIMEOUT)
                .await;
            match answer {
                Ok(PeerAnswer { accepted: true, .. }) => {
                    tracing::info!(peer = id, "peer accepted to take over");
                    return Some(*id);
                }
                Ok(PeerAnswer { reason, .. }) => {
                    tracing::info!(
                        peer = id,
                        reason = reason.as_deref().unwrap_or("?"),
                        "peer cannot take over"
                    );
                }
                Err(e) => tracing::info!(peer = id, error = %e, "peer unreachable for handover"),
            }
        }
        tracing::warn!("no peer can take over: no node will hold the VIPs until one is healthy");
        None
    }

    /// Asks every other peer at once; true if they and this node make a majority.
    pub async fn pre_vote(&self, me: NodeId) -> bool {
        let request = match self.log.last_log_id() {
            Ok(last_log_id) => PrevoteRequest { last_log_id },
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the end of the log for a pre-vote");
                return false;
            }
        };
        let mut asks = tokio::task::JoinSet::new();
        for (id, address) in self.peers.iter().filter(|(id, _)| *id != me) {
            let (client, address, id) = (self.client.clone(), address.clone(), *id);
            let request = request.clone();
            asks.spawn(async move {
                let answer: Result<PeerAnswer, _> = client
                    .call(id, &address, PREVOTE_PATH, &request, PREVOTE_TIMEOUT)
                    .await;
                (id, answer)
            });
        }
        let majority = self.peers.len() / 2 + 1;
        let mut granted = 1;
        while let Some(result) = asks.join_next().await {
            match result {
                Ok((_, Ok(PeerAnswer { accepted: true, .. }))) => granted += 1,
                Ok((id, Ok(PeerAnswer { reason, .. }))) => {
                    tracing::debug!(
                        peer = id,
                        reason = reason.as_deref().unwrap_or("?"),
                        "pre-vote refused"
                    )
                }
                Ok((id, Err(e))) => tracing::debug!(peer = id, error = %e, "pre-vote unanswered"),
                Err(_) => {}
            }
            if granted >= majority {
                return true;
            }
        }
        false
    }
}
