//! The HTTP server every node runs on `listen`: peer RPC, admin calls, status and metrics.
//!
//! Routes that change anything (Raft RPCs, "elect now", maintenance) sit behind
//! [`authenticate`]: a request without a valid signature answers 401, is counted and logged
//! with its source address (at most once per source per [`REJECT_LOG_EVERY`], so a flood
//! cannot flood the journal). Status and metrics are read-only and unauthenticated, like
//! HAProxy's own stats page.

pub mod client;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use crate::auth::Authenticator;
use crate::raft::network::{PeerClient, APPEND_PATH, SNAPSHOT_PATH, VOTE_PATH};
use crate::raft::{
    AppendEntriesRequest, InstallSnapshotRequest, NodeId, Raft, Request as RaftRequest, VoteRequest,
};
use crate::status::Status;

pub const STATUS_PATH: &str = "/v1/status";
pub const METRICS_PATH: &str = "/metrics";
pub const ELECT_PATH: &str = "/v1/elect";
pub const PREVOTE_PATH: &str = "/v1/prevote";
pub const MAINTENANCE_PATH: &str = "/v1/maintenance";

/// Largest accepted request body. Raft messages here are tiny (the log holds operator flags);
/// 4 MiB leaves room for a snapshot chunk and bounds memory per request.
const MAX_BODY: usize = 4 << 20;

/// A rejected source is logged at most this often; the counter still counts every request.
pub const REJECT_LOG_EVERY: Duration = Duration::from_secs(10);

/// Timeout of a maintenance request forwarded to the leader.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(2);

/// What the API needs from the running node beyond Raft itself.
pub trait NodeView: Send + Sync + 'static {
    fn status(&self) -> Status;
    /// Ok if this node may lead now (healthy, not in maintenance, not a witness, not stopping).
    fn can_lead(&self) -> Result<(), String>;
    /// Ok if this node would vote for a new leader: it has no live leader (see `prevote`).
    fn grant_prevote(&self) -> Result<(), String>;
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
        self.peers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, Instant::now());
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
        *self.leader.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
    }
    /// When an append from a leader was last accepted (None: never since start).
    pub fn last_leader_contact(&self) -> Option<Instant> {
        *self.leader.lock().unwrap_or_else(|e| e.into_inner())
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
    reject_log: Mutex<HashMap<IpAddr, Instant>>,
}

impl<V> ApiState<V> {
    pub fn new(
        raft: Raft,
        auth: Arc<Authenticator>,
        peers: PeerClient,
        view: Arc<V>,
        contacts: Arc<Contacts>,
        rejected: Arc<AtomicU64>,
    ) -> Self {
        Self {
            raft,
            auth,
            peers,
            view,
            contacts,
            rejected,
            reject_log: Mutex::new(HashMap::new()),
        }
    }
}

/// The answer to "start an election now" and to a pre-vote.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PeerAnswer {
    pub accepted: bool,
    pub reason: Option<String>,
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

pub fn router<V: NodeView>(state: Arc<ApiState<V>>) -> Router {
    let signed = Router::new()
        .route(APPEND_PATH, post(append::<V>))
        .route(VOTE_PATH, post(vote::<V>))
        .route(SNAPSHOT_PATH, post(snapshot::<V>))
        .route(ELECT_PATH, post(elect::<V>))
        .route(PREVOTE_PATH, post(prevote::<V>))
        .route(MAINTENANCE_PATH, post(maintenance::<V>))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            authenticate::<V>,
        ));
    Router::new()
        .route(STATUS_PATH, get(status::<V>))
        .route(METRICS_PATH, get(metrics::<V>))
        .merge(signed)
        .with_state(state)
}

/// Serves until `shutdown` completes.
pub async fn serve<V: NodeView>(
    listener: tokio::net::TcpListener,
    state: Arc<ApiState<V>>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        router(state).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

async fn authenticate<V: NodeView>(
    State(state): State<Arc<ApiState<V>>>,
    ConnectInfo(source): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    let (parts, body) = request.into_parts();
    let bytes = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(bytes) => bytes,
        Err(_) => return (StatusCode::PAYLOAD_TOO_LARGE, "request body too large").into_response(),
    };
    let verdict = state.auth.verify(
        parts.method.as_str(),
        parts.uri.path(),
        |name| {
            parts
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        },
        &bytes,
        SystemTime::now(),
    );
    if let Err(error) = verdict {
        state.rejected.fetch_add(1, Ordering::Relaxed);
        let mut log = state.reject_log.lock().unwrap_or_else(|e| e.into_inner());
        let due = log
            .get(&source.ip())
            .is_none_or(|at| at.elapsed() >= REJECT_LOG_EVERY);
        if due {
            log.insert(source.ip(), Instant::now());
            tracing::warn!(
                %source,
                path = parts.uri.path(),
                %error,
                rejected_total = state.rejected.load(Ordering::Relaxed),
                "rejected unauthenticated peer request"
            );
        }
        return (StatusCode::UNAUTHORIZED, error.to_string()).into_response();
    }
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
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

/// Pre-vote (Raft thesis §9.6): "would you vote, i.e. have you lost your leader too?" A
/// candidate asks before it starts a real election, so a box that was cut off and comes back
/// cannot depose a healthy leader with the terms it burnt while alone.
async fn prevote<V: NodeView>(State(s): State<Arc<ApiState<V>>>) -> Json<PeerAnswer> {
    Json(match s.view.grant_prevote() {
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
            let address = leader.and_then(|id| s.view.peer_address(id));
            match address {
                Some(address) if !request.forwarded => {
                    let forwarded = MaintenanceRequest {
                        forwarded: true,
                        ..request
                    };
                    s.peers
                        .call::<_, ()>(&address, MAINTENANCE_PATH, &forwarded, FORWARD_TIMEOUT)
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
        crate::metrics::render(&s.view.status()),
    )
        .into_response()
}
