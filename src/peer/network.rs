//! openraft's network over the signed client: one [`PeerConnection`] per target, with its
//! three URLs parsed once and a connection of its own for appends and heartbeats
//! ([`PeerLink`]); votes and snapshots go through the shared pool.
//!
//! A remote Raft error travels back as the JSON `Result` the handler answered (see
//! [`super::handlers`]), so it round-trips as `RemoteError`. A peer that cannot be connected
//! to is reported to openraft as `Unreachable`, so openraft backs off instead of hammering a
//! dead box; any other failure is a `NetworkError` (retry at once).

use std::sync::Arc;
use std::time::Duration;

use openraft::error::{InstallSnapshotError, NetworkError, RemoteError, Unreachable};
use openraft::network::{Backoff, RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::BasicNode;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::client::{PeerCallError, PeerClient, PeerLink};
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

/// Creates one [`PeerConnection`] per target for openraft.
pub struct Network {
    client: PeerClient,
    contacts: Arc<Contacts>,
}

impl Network {
    pub fn new(client: PeerClient, contacts: Arc<Contacts>) -> Self {
        Self { client, contacts }
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
            })
        });
        PeerConnection {
            target,
            route,
            client: self.client.clone(),
            contacts: self.contacts.clone(),
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
}

struct Route {
    /// Append, vote and snapshot URLs, parsed once.
    urls: [hyper::Uri; 3],
    /// The connection the appends (heartbeats included) go on.
    link: PeerLink,
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
        self.contacts.touch(self.target);
        answer.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for PeerConnection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse, RPCError> {
        self.rpc(Rpc::Append, &rpc, &option).await
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
        let handover = self.contacts.handover_for(rpc.vote.leader_id().term);
        self.rpc(Rpc::Vote, &VoteMessage { rpc, handover }, &option)
            .await
    }

    fn backoff(&self) -> Backoff {
        Backoff::new(std::iter::repeat(UNREACHABLE_BACKOFF))
    }
}
