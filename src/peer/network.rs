//! openraft's network over the signed client: one [`PeerConnection`] per target, with its
//! three URLs parsed once.
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

use super::client::{PeerCallError, PeerClient};
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
        PeerConnection {
            target,
            urls: url(APPEND_PATH)
                .and_then(|append| Ok([append, url(VOTE_PATH)?, url(SNAPSHOT_PATH)?])),
            client: self.client.clone(),
            contacts: self.contacts.clone(),
        }
    }
}

/// The Raft RPCs, indexing [`PeerConnection::urls`].
#[derive(Clone, Copy)]
enum Rpc {
    Append = 0,
    Vote = 1,
    Snapshot = 2,
}

/// openraft's view of one peer.
pub struct PeerConnection {
    target: NodeId,
    /// Append, vote and snapshot URLs, parsed once (or why the address is unusable).
    urls: Result<[hyper::Uri; 3], PeerCallError>,
    client: PeerClient,
    contacts: Arc<Contacts>,
}

impl PeerConnection {
    /// Sends one RPC; the server answers `Result<Resp, RaftError<E>>` so remote errors round-trip.
    async fn rpc<Req, Resp, E>(
        &self,
        rpc: Rpc,
        request: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<E>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let url = match &self.urls {
            Ok(urls) => &urls[rpc as usize],
            Err(e) => return Err(RPCError::Unreachable(Unreachable::new(e))),
        };
        let answer: Result<Resp, RaftError<E>> = self
            .client
            .call_url(self.target, url, request, option.hard_ttl())
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
