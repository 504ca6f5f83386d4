//! Raft RPCs over HTTP: one shared reqwest client, JSON bodies, every request signed.
//!
//! The server side lives in `api::peer`; both sides agree on the paths below. A peer that
//! cannot be connected to is reported to openraft as `Unreachable`, so openraft backs off
//! instead of hammering a dead box; any other failure is a `NetworkError` (retry at once).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{Backoff, RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::BasicNode;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    NodeId, TypeConfig, VoteRequest, VoteResponse,
};
use crate::api::Contacts;
use crate::auth::Authenticator;

pub const APPEND_PATH: &str = "/raft/append";
pub const VOTE_PATH: &str = "/raft/vote";
pub const SNAPSHOT_PATH: &str = "/raft/snapshot";

/// How long openraft waits before retrying an unreachable peer. Short, because a restarted
/// box should rejoin (and be able to take over) quickly; each retry is one cheap connect.
const UNREACHABLE_BACKOFF: Duration = Duration::from_millis(200);

/// Why a call to a peer failed.
#[derive(Debug, thiserror::Error)]
pub enum PeerCallError {
    #[error("cannot connect to {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("request to {url} failed: {source}")]
    Request {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{url} rejected the request as unauthenticated (is secret_file and cluster the same on both nodes, and are clocks in sync?)")]
    Unauthorized { url: String },
    #[error("{url} answered HTTP {status}: {body}")]
    Status {
        url: String,
        status: reqwest::StatusCode,
        body: String,
    },
}

/// Signs and sends requests to peers. Cheap to clone: the connection pool is shared.
#[derive(Clone)]
pub struct PeerClient {
    http: reqwest::Client,
    auth: Arc<Authenticator>,
}

impl PeerClient {
    pub fn new(auth: Arc<Authenticator>) -> Self {
        let http = reqwest::Client::builder()
            .tcp_nodelay(true)
            // Keep connections open between heartbeats: a new TCP handshake per heartbeat
            // would cost more CPU than the heartbeat itself.
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .expect("a reqwest client without TLS always builds");
        Self { http, auth }
    }

    /// POSTs `body` as JSON to `http://{address}{path}` and decodes the JSON answer.
    pub async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        address: &str,
        path: &str,
        body: &Req,
        timeout: Duration,
    ) -> Result<Resp, PeerCallError> {
        let url = format!("http://{address}{path}");
        let body = serde_json::to_vec(body).expect("RPC types always serialize");
        let signature = self.auth.sign("POST", path, &body, SystemTime::now());
        let mut request = self
            .http
            .post(&url)
            .timeout(timeout)
            .header(reqwest::header::CONTENT_TYPE, "application/json");
        for (name, value) in signature.headers() {
            request = request.header(name, value);
        }
        let response = request.body(body).send().await.map_err(|source| {
            if source.is_connect() {
                PeerCallError::Connect {
                    url: url.clone(),
                    source,
                }
            } else {
                PeerCallError::Request {
                    url: url.clone(),
                    source,
                }
            }
        })?;
        let status = response.status();
        if status == reqwest::StatusCode::UNAUTHORIZED {
            return Err(PeerCallError::Unauthorized { url });
        }
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            return Err(PeerCallError::Status { url, status, body });
        }
        response
            .json()
            .await
            .map_err(|source| PeerCallError::Request { url, source })
    }
}

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
        PeerConnection {
            target,
            address: node.addr.clone(),
            client: self.client.clone(),
            contacts: self.contacts.clone(),
        }
    }
}

/// openraft's view of one peer.
pub struct PeerConnection {
    target: NodeId,
    address: String,
    client: PeerClient,
    contacts: Arc<Contacts>,
}

impl PeerConnection {
    /// Sends one RPC; the server answers `Result<Resp, RaftError<E>>` so remote errors round-trip.
    async fn rpc<Req, Resp, E>(
        &self,
        path: &str,
        request: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let answer: Result<Resp, RaftError<NodeId, E>> = self
            .client
            .call(&self.address, path, request, option.hard_ttl())
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
    ) -> Result<AppendEntriesResponse, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.rpc(APPEND_PATH, &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.rpc(SNAPSHOT_PATH, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest,
        option: RPCOption,
    ) -> Result<VoteResponse, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.rpc(VOTE_PATH, &rpc, &option).await
    }

    fn backoff(&self) -> Backoff {
        Backoff::new(std::iter::repeat(UNREACHABLE_BACKOFF))
    }
}
