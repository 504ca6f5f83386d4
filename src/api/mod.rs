//! The HTTP server every node runs on `listen`: peer RPC, admin calls, status and metrics.
//!
//! Routes that change anything (Raft RPCs, "elect now", maintenance) sit behind
//! [`authenticate`], which refuses cheaply what it can before reading a body: a missing or
//! too large Content-Length, malformed signature headers, a stale timestamp or a known nonce
//! all answer the same 401 without a byte of the body read or hashed. Only then is the body
//! read (bounded by the route's own limit, see [`body_limit`]) and its signature checked.
//! Rejections are counted and logged with their source address (at most once per source per
//! [`REJECT_LOG_EVERY`], see [`reject_log`]). Accepted requests get signed answers.
//!
//! Status and metrics are read-only and unauthenticated, like HAProxy's own stats page. With
//! `status_listen` set they move to that address and the peer port serves peers only.
//! Connection limits and timeouts live in [`server`].

pub mod client;
pub mod reject_log;
pub mod server;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::body::Body;
use axum::extract::{ConnectInfo, Extension, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use crate::auth::{Authenticator, SignedHeaders, VerifyRequestError, SIGNATURE_HEADER};
use crate::raft::network::{PeerClient, APPEND_PATH, SNAPSHOT_PATH, VOTE_PATH};
use crate::raft::{
    AppendEntriesRequest, InstallSnapshotRequest, LogId, NodeId, Raft, Request as RaftRequest,
    VoteRequest,
};
use crate::status::Status;
use reject_log::{LogVerdict, RejectLog};
use server::{Connection, Connections, REQUEST_TIMEOUT};
use tokio_util::sync::CancellationToken;

pub const STATUS_PATH: &str = "/v1/status";
pub const METRICS_PATH: &str = "/metrics";
pub const ELECT_PATH: &str = "/v1/elect";
pub const PREVOTE_PATH: &str = "/v1/prevote";
pub const MAINTENANCE_PATH: &str = "/v1/maintenance";

/// Largest snapshot request: the state machine holds operator flags and the membership, a
/// few KB; 4 MiB leaves room and bounds memory per request.
const MAX_SNAPSHOT_BODY: usize = 4 << 20;
/// Largest append: openraft sends at most 300 entries of a few hundred bytes each.
const MAX_APPEND_BODY: usize = 512 << 10;
/// Largest vote, pre-vote, elect or maintenance request (they are a few dozen bytes).
const MAX_SMALL_BODY: usize = 16 << 10;
/// Largest answer this node signs (its own answers are small; a bound keeps one bug from
/// buffering without limit).
const MAX_ANSWER: usize = 1 << 20;

/// Contacts remembered at most: node ids come from signed requests, so only peers choose
/// them, but a misconfigured peer must not grow the table either.
const MAX_CONTACTS: usize = 64;

/// A rejected source is logged at most this often; the counter still counts every request.
pub const REJECT_LOG_EVERY: Duration = Duration::from_secs(10);

/// Timeout of a maintenance request forwarded to the leader.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(2);

/// What the API needs from the running node beyond Raft itself.
pub trait NodeView: Send + Sync + 'static {
    fn status(&self) -> Status;
    /// Ok if this node may lead now (healthy, not in maintenance, not a witness, not stopping).
    fn can_lead(&self) -> Result<(), String>;
    /// Ok if this node would vote for a new leader whose log ends at `candidate_last_log`: it
    /// has no live leader and its own log is not ahead (see `prevote`).
    fn grant_prevote(&self, candidate_last_log: Option<LogId>) -> Result<(), String>;
    /// The address of a peer, for forwarding writes to the leader.
    fn peer_address(&self, id: NodeId) -> Option<String>;
    /// Ok if this node may grant a Raft vote now (see `raft::vote_gate`).
    fn grant_vote(&self) -> Result<(), String> {
        Ok(())
    }
}

/// When this node last heard from each peer (a request from it, or an answer to us), and
/// when it last accepted an append from a leader (the pre-vote's "is a leader alive?").
#[derive(Default)]
pub struct Contacts {
    peers: Mutex<HashMap<NodeId, Instant>>,
    leader: Mutex<Option<Instant>>,
}

impl Contacts {
    pub fn touch(&self, id: NodeId) {
        let mut peers = crate::sync::lock(&self.peers);
        if peers.len() >= MAX_CONTACTS && !peers.contains_key(&id) {
            if let Some(oldest) = peers.iter().min_by_key(|(_, at)| **at).map(|(id, _)| *id) {
                peers.remove(&oldest);
            }
        }
        peers.insert(id, Instant::now());
    }
    /// Peers remembered (for the metrics).
    pub fn len(&self) -> usize {
        crate::sync::lock(&self.peers).len()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn age(&self, id: NodeId) -> Option<Duration> {
        self.peers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .map(Instant::elapsed)
    }
    /// A leader's append was accepted just now.
    pub fn touch_leader(&self) {
        *crate::sync::lock(&self.leader) = Some(Instant::now());
    }
    /// When an append from a leader was last accepted (None: never since start).
    pub fn last_leader_contact(&self) -> Option<Instant> {
        *crate::sync::lock(&self.leader)
    }
}

pub struct ApiState<V> {
    pub raft: Raft,
    pub auth: Arc<Authenticator>,
    pub peers: PeerClient,
    pub view: Arc<V>,
    pub contacts: Arc<Contacts>,
    /// Rejected requests, shared with the status document.
    pub rejected: Arc<AtomicU64>,
    reject_log: Mutex<RejectLog>,
    /// Open connections of the peer listener and of the status listener (if separate).
    pub connections: Arc<Connections>,
    pub status_connections: Arc<Connections>,
}

impl<V> ApiState<V> {
    pub fn new(
        raft: Raft,
        auth: Arc<Authenticator>,
        peers: PeerClient,
        view: Arc<V>,
        contacts: Arc<Contacts>,
        rejected: Arc<AtomicU64>,
        max_connections: usize,
    ) -> Self {
        Self {
            raft,
            auth,
            peers,
            view,
            contacts,
            rejected,
            reject_log: Mutex::new(RejectLog::new(REJECT_LOG_EVERY)),
            connections: Arc::new(Connections::new(max_connections)),
            status_connections: Arc::new(Connections::new(max_connections)),
        }
    }

    /// Entries in each table of per-request state, for the metrics.
    pub fn table_sizes(&self) -> Vec<(&'static str, usize)> {
        vec![
            ("nonces", self.auth.remembered_nonces(SystemTime::now())),
            (
                "reject_log",
                self.reject_log
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .len_at(Instant::now()),
            ),
            ("contacts", self.contacts.len()),
            ("connections", self.connections.len()),
            ("status_connections", self.status_connections.len()),
        ]
    }
}

/// The answer to "start an election now" and to a pre-vote.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PeerAnswer {
    pub accepted: bool,
    pub reason: Option<String>,
}

/// A pre-vote: the end of the asking node's log, so a node whose log is behind is refused
/// here, before it starts an election it cannot win.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PrevoteRequest {
    pub last_log_id: Option<LogId>,
}

/// A maintenance change, as sent by `raftvip maintenance` or forwarded to the leader.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MaintenanceRequest {
    pub node_id: NodeId,
    pub on: bool,
    /// Set when a follower forwards to the leader, so a request never loops.
    #[serde(default)]
    pub forwarded: bool,
}

/// The signed routes: peer RPC and admin calls.
fn peer_router<V: NodeView>(state: Arc<ApiState<V>>) -> Router<Arc<ApiState<V>>> {
    Router::new()
        .route(APPEND_PATH, post(append::<V>))
        .route(VOTE_PATH, post(vote::<V>))
        .route(SNAPSHOT_PATH, post(snapshot::<V>))
        .route(ELECT_PATH, post(elect::<V>))
        .route(PREVOTE_PATH, post(prevote::<V>))
        .route(MAINTENANCE_PATH, post(maintenance::<V>))
        .route_layer(middleware::from_fn_with_state(state, authenticate::<V>))
}

/// The read-only routes: status and metrics.
fn status_router<V: NodeView>() -> Router<Arc<ApiState<V>>> {
    Router::new()
        .route(STATUS_PATH, get(status::<V>))
        .route(METRICS_PATH, get(metrics::<V>))
}

/// Everything on one port (no `status_listen`).
pub fn router<V: NodeView>(state: Arc<ApiState<V>>) -> Router {
    status_router::<V>()
        .merge(peer_router(state.clone()))
        .with_state(state)
}

/// Serves until `stop` is cancelled: everything on `listener`, or, with a separate
/// `status_listener`, peer routes on `listener` and status and metrics on the other.
pub async fn serve<V: NodeView>(
    listener: tokio::net::TcpListener,
    status_listener: Option<tokio::net::TcpListener>,
    state: Arc<ApiState<V>>,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let Some(status_listener) = status_listener else {
        let connections = state.connections.clone();
        return server::serve(listener, router(state), connections, stop).await;
    };
    let peer = server::serve(
        listener,
        peer_router(state.clone()).with_state(state.clone()),
        state.connections.clone(),
        stop.clone(),
    );
    let status = server::serve(
        status_listener,
        status_router::<V>().with_state(state.clone()),
        state.status_connections.clone(),
        stop,
    );
    let (peer, status) = tokio::join!(peer, status);
    peer.and(status)
}

/// Largest body accepted on `path`, checked against Content-Length before reading.
fn body_limit(path: &str) -> usize {
    match path {
        SNAPSHOT_PATH => MAX_SNAPSHOT_BODY,
        APPEND_PATH => MAX_APPEND_BODY,
        _ => MAX_SMALL_BODY,
    }
}

/// Why a signed route refused a request; all answer the same 401.
#[derive(Debug, thiserror::Error)]
enum RefuseError {
    #[error("no valid Content-Length header")]
    NoLength,
    #[error("Content-Length {length} exceeds this route's limit of {limit} bytes")]
    TooLarge { length: usize, limit: usize },
    #[error("the body did not arrive in time or was cut short")]
    BodyRead,
    #[error(transparent)]
    Auth(#[from] VerifyRequestError),
}

async fn authenticate<V: NodeView>(
    State(state): State<Arc<ApiState<V>>>,
    ConnectInfo(source): ConnectInfo<SocketAddr>,
    connection: Option<Extension<Arc<Connection>>>,
    request: Request,
    next: Next,
) -> Response {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path().to_owned();
    let checked = async {
        let length = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok())
            .ok_or(RefuseError::NoLength)?;
        let limit = body_limit(&path);
        if length > limit {
            return Err(RefuseError::TooLarge { length, limit });
        }
        let signed = state.auth.check_headers(
            |name| {
                parts
                    .headers
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            },
            SystemTime::now(),
        )?;
        let bytes = tokio::time::timeout(REQUEST_TIMEOUT, axum::body::to_bytes(body, length))
            .await
            .map_err(|_| RefuseError::BodyRead)?
            .map_err(|_| RefuseError::BodyRead)?;
        state.auth.check_body(
            &signed,
            parts.method.as_str(),
            &path,
            &bytes,
            SystemTime::now(),
        )?;
        Ok((signed, bytes))
    };
    let (signed, bytes) = match checked.await {
        Ok(accepted) => accepted,
        Err(error) => return refuse(&state, source, &path, &error),
    };
    if let Some(Extension(connection)) = connection {
        connection.mark_authenticated();
    }
    let answer = next.run(Request::from_parts(parts, Body::from(bytes)));
    match tokio::time::timeout(REQUEST_TIMEOUT, answer).await {
        Ok(answer) => sign_answer(&state.auth, &signed, answer).await,
        Err(_) => {
            tracing::warn!(%source, path, "peer request took longer than {REQUEST_TIMEOUT:?}; dropped");
            sign_answer(
                &state.auth,
                &signed,
                (StatusCode::SERVICE_UNAVAILABLE, "timed out").into_response(),
            )
            .await
        }
    }
}

/// Counts and (rate-limited) logs a refused request and answers the uniform 401; the
/// connection is closed after it, freeing its slot.
fn refuse<V>(state: &ApiState<V>, source: SocketAddr, path: &str, error: &RefuseError) -> Response {
    let rejected_total = state.rejected.fetch_add(1, Ordering::Relaxed) + 1;
    let verdict = state
        .reject_log
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .note(source.ip(), Instant::now());
    match verdict {
        LogVerdict::Log => tracing::warn!(
            %source,
            path,
            %error,
            rejected_total,
            "rejected unauthenticated peer request"
        ),
        LogVerdict::Summarise => tracing::warn!(
            rejected_total,
            sources = reject_log::MAX_SOURCES,
            "rejecting unauthenticated requests from more sources than are logged one by one"
        ),
        LogVerdict::Quiet => {}
    }
    (
        StatusCode::UNAUTHORIZED,
        [(header::CONNECTION, "close")],
        "unauthenticated\n",
    )
        .into_response()
}

/// Signs this node's answer over the request's nonce, so the caller can trust it.
async fn sign_answer(auth: &Authenticator, request: &SignedHeaders, answer: Response) -> Response {
    let (mut parts, body) = answer.into_parts();
    let bytes = match axum::body::to_bytes(body, MAX_ANSWER).await {
        Ok(bytes) => bytes,
        Err(e) => {
            tracing::error!(error = %e, "cannot buffer this node's own answer to sign it");
            parts.status = StatusCode::INTERNAL_SERVER_ERROR;
            axum::body::Bytes::new()
        }
    };
    let signature = auth.sign_response(request, parts.status.as_u16(), &bytes);
    if let Ok(value) = header::HeaderValue::from_str(&signature) {
        parts.headers.insert(SIGNATURE_HEADER, value);
    }
    Response::from_parts(parts, Body::from(bytes))
}

async fn append<V: NodeView>(
    State(s): State<Arc<ApiState<V>>>,
    Json(rpc): Json<AppendEntriesRequest>,
) -> Response {
    if let Some(leader) = rpc.vote.leader_id().voted_for() {
        s.contacts.touch(leader);
    }
    let answer = s.raft.append_entries(rpc).await;
    // A stale leader (lower term) is answered HigherVote: that is no sign of a live leader.
    if matches!(&answer, Ok(r) if !matches!(r, openraft::raft::AppendEntriesResponse::HigherVote(_)))
    {
        s.contacts.touch_leader();
    }
    Json(answer).into_response()
}

async fn vote<V: NodeView>(
    State(s): State<Arc<ApiState<V>>>,
    Json(rpc): Json<VoteRequest>,
) -> Response {
    if let Some(candidate) = rpc.vote.leader_id().voted_for() {
        s.contacts.touch(candidate);
    }
    if let Err(reason) = s.view.grant_vote() {
        return (StatusCode::SERVICE_UNAVAILABLE, reason).into_response();
    }
    Json(s.raft.vote(rpc).await).into_response()
}

async fn snapshot<V: NodeView>(
    State(s): State<Arc<ApiState<V>>>,
    Json(rpc): Json<InstallSnapshotRequest>,
) -> Response {
    Json(s.raft.install_snapshot(rpc).await).into_response()
}

/// A leader handing over asks: "start an election now, if you may lead".
async fn elect<V: NodeView>(State(s): State<Arc<ApiState<V>>>) -> Json<PeerAnswer> {
    if let Err(reason) = s.view.can_lead() {
        return Json(PeerAnswer {
            accepted: false,
            reason: Some(reason),
        });
    }
    match s.raft.trigger().elect().await {
        Ok(()) => {
            tracing::info!("starting an election at the leader's request (handover)");
            Json(PeerAnswer {
                accepted: true,
                reason: None,
            })
        }
        Err(e) => Json(PeerAnswer {
            accepted: false,
            reason: Some(format!("raft is stopping: {e}")),
        }),
    }
}

/// Pre-vote (Raft thesis §9.6): "would you vote, i.e. have you lost your leader too, and is
/// my log at least as up to date as yours?" A candidate asks before it starts a real election,
/// so a box that was cut off and comes back cannot depose a healthy leader with the terms it
/// burnt while alone, and a box whose log is behind does not start elections it cannot win
/// (two candidates bumping terms in turn can otherwise keep each other from winning).
async fn prevote<V: NodeView>(
    State(s): State<Arc<ApiState<V>>>,
    Json(request): Json<PrevoteRequest>,
) -> Json<PeerAnswer> {
    Json(match s.view.grant_prevote(request.last_log_id) {
        Ok(()) => PeerAnswer {
            accepted: true,
            reason: None,
        },
        Err(reason) => PeerAnswer {
            accepted: false,
            reason: Some(reason),
        },
    })
}

/// Sets a node's maintenance flag through the Raft log, forwarding to the leader if needed.
async fn maintenance<V: NodeView>(
    State(s): State<Arc<ApiState<V>>>,
    Json(request): Json<MaintenanceRequest>,
) -> Result<Json<()>, (StatusCode, String)> {
    // The flag map is keyed by node id: only members get one, so it cannot grow unbounded.
    if s.view.peer_address(request.node_id).is_none() {
        return Err((
            StatusCode::BAD_REQUEST,
            format!("node {} is not a member of this cluster", request.node_id),
        ));
    }
    let write = RaftRequest::SetMaintenance {
        node_id: request.node_id,
        on: request.on,
    };
    match s.raft.client_write(write).await {
        Ok(_) => Ok(Json(())),
        Err(e) => {
            let leader = e
                .forward_to_leader::<openraft::BasicNode>()
                .and_then(|f| f.leader_id);
            let leader = leader.and_then(|id| Some((id, s.view.peer_address(id)?)));
            match leader {
                Some((leader, address)) if !request.forwarded => {
                    let forwarded = MaintenanceRequest {
                        forwarded: true,
                        ..request
                    };
                    s.peers
                        .call::<_, ()>(
                            leader,
                            &address,
                            MAINTENANCE_PATH,
                            &forwarded,
                            FORWARD_TIMEOUT,
                        )
                        .await
                        .map(Json)
                        .map_err(|e| (StatusCode::BAD_GATEWAY, e.to_string()))
                }
                _ => Err((
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("no leader to write to (is a quorum up?): {e}"),
                )),
            }
        }
    }
}

async fn status<V: NodeView>(State(s): State<Arc<ApiState<V>>>) -> Json<Status> {
    Json(s.view.status())
}

async fn metrics<V: NodeView>(State(s): State<Arc<ApiState<V>>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        crate::metrics::render_node(&s.view.status(), &s.table_sizes()),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 7: contacts are keyed by node ids from signed requests; 100,000 distinct ids
    /// leave at most MAX_CONTACTS entries, the most recent ones.
    #[test]
    fn contacts_stay_bounded() {
        let contacts = Contacts::default();
        for id in 0..100_000 {
            contacts.touch(id);
        }
        assert_eq!(contacts.len(), MAX_CONTACTS);
        assert!(contacts.age(99_999).is_some());
    }
}
