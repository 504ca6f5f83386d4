//! The asking side of raftvip's own peer calls: "take over now" (handover), "I hold the VIPs
//! now" (the end of a planned overlap) and pre-votes.
//!
//! The supervisor decides *when* to ask; this says *whom* and how to count the answers. It is
//! plain async methods over the signed client, so the supervisor's trait for it lives with the
//! supervisor and this module never needs to know it.

use std::time::Duration;

use super::client::{PeerCallError, PeerClient};
use super::wire::{
    ElectRequest, HandingOver, HeldRequest, PeerAnswer, PrevoteRequest, ELECT_PATH, HELD_PATH,
    PREVOTE_PATH,
};
use crate::log_limit::LogLimit;
use crate::raft::store::LogStore;
use crate::raft::NodeId;

/// Timeout of one "elect now" request during a handover: a LAN answers in about a millisecond.
const ELECT_REQUEST_TIMEOUT: Duration = Duration::from_millis(200);
/// Timeout of a pre-vote round. Short: a peer that cannot answer this fast does not count,
/// and the round is repeated after the next election timeout anyway.
const PREVOTE_TIMEOUT: Duration = Duration::from_millis(50);
/// Timeout of "I hold the VIPs now": the old holder answers once it has released, which its
/// overlap bound (200 ms) caps.
const HELD_TIMEOUT: Duration = Duration::from_millis(500);

/// Every voter, this node included: (id, `IP:PORT`), read at each request, so a membership
/// changed at run time (`crate::membership`) is asked from then on.
pub type Voters = Box<dyn Fn() -> Vec<(NodeId, String)> + Send + Sync>;

/// This node's requests to its peers.
pub struct PeerRequests {
    client: PeerClient,
    peers: Voters,
    /// This node's log, whose end each pre-vote names.
    log: LogStore,
    /// [`ELECT_REQUEST_TIMEOUT`], [`PREVOTE_TIMEOUT`] and [`HELD_TIMEOUT`]; fields so that tests on a loaded
    /// machine can wait longer without changing what they check.
    elect_timeout: Duration,
    prevote_timeout: Duration,
    held_timeout: Duration,
    /// Peers refusing this node's signature in a pre-vote, logged at most every
    /// [`REFUSED_LOG_EVERY`].
    refused_log: std::sync::Mutex<LogLimit>,
}

/// A peer refusing this node's signature is logged at most this often (it repeats at every
/// election attempt, several times a second).
const REFUSED_LOG_EVERY: Duration = Duration::from_secs(10);

impl PeerRequests {
    pub fn new(client: PeerClient, peers: Voters, log: LogStore) -> Self {
        Self {
            client,
            peers,
            log,
            elect_timeout: ELECT_REQUEST_TIMEOUT,
            prevote_timeout: PREVOTE_TIMEOUT,
            held_timeout: HELD_TIMEOUT,
            refused_log: std::sync::Mutex::new(LogLimit::new(REFUSED_LOG_EVERY)),
        }
    }

    /// Logs, at most every [`REFUSED_LOG_EVERY`], that `peer` refused this node's signature:
    /// a node with another secret or cluster name hears nothing and wins nothing, and
    /// without this only its peers' logs would say why.
    fn log_refused(&self, peer: NodeId, error: &PeerCallError) {
        let allowed = crate::sync::lock(&self.refused_log).allow(std::time::Instant::now());
        if let Some(not_logged) = allowed {
            tracing::warn!(
                peer,
                %error,
                refusals_not_logged = not_logged,
                "a peer refuses this node's requests as unauthenticated"
            );
        }
    }

    /// Asks `to`, or (None) the peers in id order starting after this node, to start an
    /// election now; returns the first that accepted. `keeping_vips`: see [`ElectRequest`].
    pub async fn hand_over(
        &self,
        me: NodeId,
        to: Option<NodeId>,
        keeping_vips: bool,
    ) -> Option<NodeId> {
        let leader_last_log_index = match self.log.last_log_id() {
            Ok(last) => last.map(|id| id.index),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the end of the log for a handover");
                None
            }
        };
        let handing_over = match self.log.vote() {
            Ok(vote) => vote
                .as_ref()
                .and_then(HandingOver::leader_of)
                .filter(|leader| leader.leader == me),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read this node's vote for a handover");
                None
            }
        };
        let request = ElectRequest {
            old_holder_keeps_vips: keeping_vips,
            leader_last_log_index,
            handing_over,
        };
        let peers = (self.peers)();
        let (before, after): (Vec<_>, Vec<_>) = peers
            .iter()
            .filter(|(id, _)| *id != me && to.is_none_or(|to| *id == to))
            .partition(|(id, _)| *id < me);
        for (id, address) in after.into_iter().chain(before) {
            let answer: Result<PeerAnswer, _> = self
                .client
                .call(*id, address, ELECT_PATH, &request, self.elect_timeout)
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

    /// Tells every other peer at once that this node holds the VIPs now; returns the first
    /// that answers it released them (the old holder of a planned overlap), without waiting
    /// for the rest.
    pub async fn tell_held(&self, me: NodeId) -> Option<NodeId> {
        let request = HeldRequest { node_id: me };
        let peers = (self.peers)();
        let mut asks = tokio::task::JoinSet::new();
        for (id, address) in peers.iter().filter(|(id, _)| *id != me) {
            let (client, address, id) = (self.client.clone(), address.clone(), *id);
            let (request, timeout) = (request.clone(), self.held_timeout);
            asks.spawn(async move {
                let answer: Result<PeerAnswer, _> = client
                    .call(id, &address, HELD_PATH, &request, timeout)
                    .await;
                (id, answer)
            });
        }
        while let Some(result) = asks.join_next().await {
            match result {
                Ok((id, Ok(PeerAnswer { accepted: true, .. }))) => return Some(id),
                Ok((id, Err(e))) => {
                    tracing::debug!(peer = id, error = %e, "\"I hold the VIPs\" unanswered")
                }
                _ => {}
            }
        }
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
        let peers = (self.peers)();
        let mut asks = tokio::task::JoinSet::new();
        for (id, address) in peers.iter().filter(|(id, _)| *id != me) {
            let (client, address, id) = (self.client.clone(), address.clone(), *id);
            let (request, timeout) = (request.clone(), self.prevote_timeout);
            asks.spawn(async move {
                let answer: Result<PeerAnswer, _> = client
                    .call(id, &address, PREVOTE_PATH, &request, timeout)
                    .await;
                (id, answer)
            });
        }
        let majority = peers.len() / 2 + 1;
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
                Ok((id, Err(e @ PeerCallError::Unauthorized { .. }))) => self.log_refused(id, &e),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peer::client::tests::{answer_once, node};

    const YES: &str = r#"{"accepted":true,"reason":null}"#;
    const NO: &str = r#"{"accepted":false,"reason":"HAProxy unhealthy"}"#;

    /// Node `me`'s requests to `peers`, each answering once as given (None: unreachable),
    /// and the directory of `me`'s store.
    async fn asking(
        me: NodeId,
        peers: &[(NodeId, Option<&'static str>)],
    ) -> (PeerRequests, tempfile::TempDir) {
        let mut addresses = Vec::new();
        for &(id, answer) in peers {
            let address = match answer {
                Some(body) => answer_once(Some(node(id)), body).await,
                None => closed_port().await,
            };
            addresses.push((id, address));
        }
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = crate::raft::store::open(dir.path(), "lb", me).unwrap();
        let requests = PeerRequests {
            // Generous: a one-shot server on a machine busy compiling may take a while.
            elect_timeout: Duration::from_secs(5),
            prevote_timeout: Duration::from_secs(5),
            held_timeout: Duration::from_secs(5),
            ..PeerRequests::new(
                PeerClient::new(node(me)),
                Box::new(move || addresses.clone()),
                log,
            )
        };
        (requests, dir)
    }

    async fn closed_port() -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap().to_string()
    }

    /// Node 2 asks 3, then 4, then 1: node 1 would accept, but 4 does first.
    #[tokio::test]
    async fn a_handover_asks_the_peers_after_this_node_first_and_stops_at_the_first_yes() {
        let (requests, _dir) = asking(2, &[(1, Some(YES)), (3, Some(NO)), (4, Some(YES))]).await;
        assert_eq!(requests.hand_over(2, None, true).await, Some(4));
    }

    #[tokio::test]
    async fn a_handover_without_a_willing_peer_names_none() {
        let (requests, _dir) = asking(1, &[(2, Some(NO)), (3, None)]).await;
        assert_eq!(requests.hand_over(1, None, true).await, None);
    }

    /// A transfer to node 3 asks node 3 only: node 2 would accept, but is not asked.
    #[tokio::test]
    async fn a_handover_to_a_named_peer_asks_only_that_peer() {
        let (requests, _dir) = asking(1, &[(2, Some(YES)), (3, Some(NO))]).await;
        assert_eq!(requests.hand_over(1, Some(3), true).await, None);
        let (requests, _dir) = asking(1, &[(2, Some(NO)), (3, Some(YES))]).await;
        assert_eq!(requests.hand_over(1, Some(3), true).await, Some(3));
    }

    /// The old holder (3) says it released; a follower (2) says it held nothing.
    #[tokio::test]
    async fn held_names_the_peer_that_released() {
        let (requests, _dir) = asking(1, &[(2, Some(NO)), (3, Some(YES))]).await;
        assert_eq!(requests.tell_held(1).await, Some(3));
        let (requests, _dir) = asking(1, &[(2, Some(NO)), (3, None)]).await;
        assert_eq!(requests.tell_held(1).await, None);
    }

    /// Five nodes: this one and two yeses make three, a majority, whatever 4 and 5 say.
    #[tokio::test]
    async fn a_pre_vote_counts_this_node_and_needs_a_majority() {
        let granted = [(2, Some(YES)), (3, Some(NO)), (4, Some(YES)), (5, None)];
        let (requests, _dir) = asking(1, &granted).await;
        assert!(requests.pre_vote(1).await);
        let refused = [(2, Some(YES)), (3, Some(NO)), (4, Some(NO)), (5, None)];
        let (requests, _dir) = asking(1, &refused).await;
        assert!(!requests.pre_vote(1).await);
    }
}
