//! openraft's network over the signed client: one [`PeerConnection`] per target, with its
//! three URLs parsed once, heartbeats by datagram ([`HeartbeatLink`]) and a connection of its
//! own for appends, and for heartbeats while datagrams go unanswered ([`PeerLink`]); votes and
//! snapshots go through the shared pool.
//!
//! A remote Raft error travels back as the JSON `Result` the handler answered (see
//! [`super::handlers`]), so it round-trips as `RemoteError`. A peer that cannot be connected
//! to is reported to openraft as `Unreachable`, so openraft backs off instead of hammering a
//! dead box; any other failure is a `NetworkError` (retry at once).
//!
//! The vote requests of openraft's `initialize` election are not sent ([`INITIALIZE_TERM`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{InstallSnapshotError, NetworkError, RemoteError, Unreachable};
use openraft::network::{Backoff, RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::BasicNode;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::client::{PeerCallError, PeerClient, PeerLink};
use super::datagram::{fits_a_datagram, HeartbeatLink, HTTP_AFTER_SILENCE};
use super::wire::{VoteMessage, APPEND_PATH, SNAPSHOT_PATH, VOTE_PATH};
use super::Contacts;
use crate::raft::typ::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    RPCError, RaftError, TypeConfig, VoteRequest, VoteResponse,
};
use crate::raft::NodeId;

/// How long openraft waits before retrying an unreachable peer. Short, because a restarted
/// box should rejoin (and be able to take over) quickly; each retry is one cheap connect.
const UNREACHABLE_BACKOFF: Duration = Duration::from_millis(200);

/// The term of the election openraft's `initialize` starts: a founding node stands in it at
/// once, without the pre-vote every other election here begins with and before its HAProxy
/// verdict counts. Its vote requests are not sent, so a cluster's first leader is elected by
/// the supervisors, in term 2 or later. Why: openraft (not built with `single-term-leader`)
/// orders the candidates of one term by node id. A founding node that started a few ms after
/// a peer had won term 1 outranked that leader; the leader's next append was answered with the
/// higher vote and it stepped down, yet that candidate could not win (the others held a lease
/// on the leader, whose log was longer). Nobody led, and nobody held the VIPs, until the next
/// election ~170 ms later (netns `start_all_at_once`). A cluster of one voter still wins this
/// election alone, asking nobody.
const INITIALIZE_TERM: u64 = 1;

/// Why a vote request of the [`INITIALIZE_TERM`] election was not sent.
#[derive(Debug, thiserror::Error)]
#[error("not sent: openraft's initialize election asks for no votes (the supervisor elects after a pre-vote)")]
struct InitializeElectionNotSent;

/// Creates one [`PeerConnection`] per target for openraft.
pub struct Network {
    client: PeerClient,
    contacts: Arc<Contacts>,
    heartbeat_fallbacks: Arc<AtomicU64>,
}

impl Network {
    /// `heartbeat_fallbacks` counts the times a peer answered HTTP but not its heartbeat
    /// datagram.
    pub fn new(
        client: PeerClient,
        contacts: Arc<Contacts>,
        heartbeat_fallbacks: Arc<AtomicU64>,
    ) -> Self {
        Self {
            client,
            contacts,
            heartbeat_fallbacks,
        }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerConnection;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> PeerConnection {
        let url = |path| PeerClient::url(&node.addr, path);
        let route = url(APPEND_PATH).and_then(|append| {
            Ok(Route {
                urls: [append, url(VOTE_PATH)?, url(SNAPSHOT_PATH)?],
                link: PeerLink::new(&node.addr)?,
                heartbeats: HeartbeatLink::new(&node.addr),
            })
        });
        PeerConnection {
            target,
            route,
            client: self.client.clone(),
            contacts: self.contacts.clone(),
            heartbeat_fallbacks: self.heartbeat_fallbacks.clone(),
        }
    }
}

/// The Raft RPCs, indexing [`Route::urls`].
#[derive(Clone, Copy)]
enum Rpc {
    Append = 0,
    Vote = 1,
    Snapshot = 2,
}

/// openraft's view of one peer.
pub struct PeerConnection {
    target: NodeId,
    /// Where its RPCs go (or why the address is unusable).
    route: Result<Route, PeerCallError>,
    client: PeerClient,
    contacts: Arc<Contacts>,
    heartbeat_fallbacks: Arc<AtomicU64>,
}

struct Route {
    /// Append, vote and snapshot URLs, parsed once.
    urls: [hyper::Uri; 3],
    /// The connection the appends go on, and heartbeats when not by datagram.
    link: PeerLink,
    /// `None` if the address is not `IP:PORT`: heartbeats then go over HTTP.
    heartbeats: Option<HeartbeatLink>,
}

impl PeerConnection {
    /// Sends one RPC; the server answers `Result<Resp, RaftError<E>>` so remote errors round-trip.
    async fn rpc<Req, Resp, E>(
        &mut self,
        rpc: Rpc,
        request: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<E>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let route = match &mut self.route {
            Ok(route) => route,
            Err(e) => return Err(RPCError::Unreachable(Unreachable::new(e))),
        };
        let (url, timeout) = (&route.urls[rpc as usize], option.hard_ttl());
        let link = match rpc {
            Rpc::Append => Some(&mut route.link),
            Rpc::Vote | Rpc::Snapshot => None,
        };
        let answer: Result<Resp, RaftError<E>> = self
            .client
            .call_url(link, self.target, url, request, timeout)
            .await
            .map_err(|e| match e {
                PeerCallError::Connect { .. } => RPCError::Unreachable(Unreachable::new(&e)),
                _ => RPCError::Network(NetworkError::new(&e)),
            })?;
        self.answered(answer)
    }

    /// The peer answered: it was heard from, and a Raft error it sent is a remote error.
    /// (`RPCError` is openraft's, the type `RaftNetwork` returns; it is not boxed here either.)
    #[allow(clippy::result_large_err)]
    fn answered<Resp, E>(&self, answer: Result<Resp, RaftError<E>>) -> Result<Resp, RPCError<E>>
    where
        E: std::error::Error,
    {
        self.contacts.touch(self.target);
        answer.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }

    /// A heartbeat by datagram, if it goes by datagram now (see [`super::datagram`]).
    async fn heartbeat(
        &mut self,
        rpc: &AppendEntriesRequest,
        option: &RPCOption,
    ) -> Option<Result<AppendEntriesResponse, RPCError>> {
        let Ok(Route {
            heartbeats: Some(link),
            ..
        }) = &mut self.route
        else {
            return None;
        };
        let now = tokio::time::Instant::now();
        if !rpc.entries.is_empty() || !link.datagrams_now(now) {
            return None;
        }
        let body = serde_json::to_vec(rpc).expect("RPC types always serialize");
        if !fits_a_datagram(body.len()) {
            return None;
        }
        let auth = self.client.auth();
        let exchanged = link
            .exchange(auth, self.target, &body, option.hard_ttl())
            .await;
        let answer = match exchanged {
            Ok(answer) => answer,
            Err(error) => {
                let failed = RPCError::Network(NetworkError::new(&error));
                link.fall_back(self.target, error, now);
                return Some(Err(failed));
            }
        };
        let decoded = serde_json::from_slice::<Result<AppendEntriesResponse, RaftError>>(&answer);
        Some(match decoded {
            Ok(answer) => self.answered(answer),
            Err(e) => Err(RPCError::Network(NetworkError::new(&e))),
        })
    }

    /// An append reached this peer over HTTP: if its heartbeat datagram had just gone
    /// unanswered, UDP is what failed, which is counted and logged.
    fn http_reached(&mut self) {
        let Ok(Route {
            heartbeats: Some(link),
            ..
        }) = &mut self.route
        else {
            return;
        };
        if let Some(error) = link.http_answered() {
            self.heartbeat_fallbacks.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                peer = self.target,
                %error,
                "heartbeats to this peer go over HTTP for {HTTP_AFTER_SILENCE:?}: it answers \
                 HTTP but not its heartbeat datagram (UDP to its port blocked, or a raftvip \
                 too old to listen for datagrams)"
            );
        }
    }
}

impl RaftNetwork<TypeConfig> for PeerConnection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse, RPCError> {
        if let Some(answered) = self.heartbeat(&rpc, &option).await {
            return answered;
        }
        let answered = self.rpc(Rpc::Append, &rpc, &option).await;
        if !matches!(
            answered,
            Err(RPCError::Unreachable(_) | RPCError::Network(_))
        ) {
            self.http_reached();
        }
        answered
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse, RPCError<InstallSnapshotError>> {
        self.rpc(Rpc::Snapshot, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest,
        option: RPCOption,
    ) -> Result<VoteResponse, RPCError> {
        if rpc.vote.leader_id().term == INITIALIZE_TERM {
            let not_sent = Unreachable::new(&InitializeElectionNotSent);
            return Err(RPCError::Unreachable(not_sent));
        }
        let handover = self.contacts.handover_for(rpc.vote.leader_id().term);
        self.rpc(Rpc::Vote, &VoteMessage { rpc, handover }, &option)
            .await
    }

    fn backoff(&self) -> Backoff {
        Backoff::new(std::iter::repeat(UNREACHABLE_BACKOFF))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use openraft::Vote;

    use super::*;
    use crate::peer::client::tests::node;

    /// A peer that accepts connections, counts them and never answers.
    async fn silent_peer(accepted: Arc<AtomicUsize>) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                accepted.fetch_add(1, Ordering::SeqCst);
                open.push(stream);
            }
        });
        address
    }

    async fn ask_vote(peer: &mut PeerConnection, term: u64) -> RPCError {
        let request = VoteRequest::new(Vote::new(term, 1), None);
        let option = RPCOption::new(Duration::from_millis(200));
        peer.vote(request, option).await.unwrap_err()
    }

    #[tokio::test]
    async fn the_initialize_election_asks_nobody_and_later_ones_do() {
        let accepted = Arc::new(AtomicUsize::new(0));
        let address = silent_peer(accepted.clone()).await;
        let mut network = Network::new(PeerClient::new(node(1)), Arc::default(), Arc::default());
        let mut peer = network.new_client(2, &BasicNode::new(address)).await;

        let error = ask_vote(&mut peer, INITIALIZE_TERM).await;
        assert!(matches!(error, RPCError::Unreachable(_)), "{error}");
        assert!(error.to_string().contains("not sent"), "{error}");
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(accepted.load(Ordering::SeqCst), 0, "term 1 was sent");

        // The peer never answers: the call times out, but it was sent.
        ask_vote(&mut peer, INITIALIZE_TERM + 1).await;
        assert_eq!(accepted.load(Ordering::SeqCst), 1, "term 2 was not sent");
    }
}
