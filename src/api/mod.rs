//! The HTTP server every node runs on `listen`: the peer wire, status and metrics.
//!
//! The signed peer routes (Raft's RPCs, handover, pre-vote, maintenance) are
//! [`crate::peer`]'s; this module mounts them beside the read-only routes. Status and metrics
//! are unauthenticated, like HAProxy's own stats page. With `status_listen` set they move to
//! that address and the peer port serves peers only. Connection limits and timeouts live in
//! [`server`]; what the CLI uses to talk to a daemon is [`client`].

pub mod client;
pub mod server;

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use tokio_util::sync::CancellationToken;

use crate::peer::PeerServer;
use crate::status::Status;
use server::Connections;

pub const STATUS_PATH: &str = "/v1/status";
pub const METRICS_PATH: &str = "/metrics";

/// What the status routes need from the running node.
pub trait StatusView: Send + Sync + 'static {
    fn status(&self) -> Status;
}

pub struct ApiState {
    view: Arc<dyn StatusView>,
    peer: Arc<PeerServer>,
    /// Open connections of the peer listener and of the status listener (if separate).
    connections: Arc<Connections>,
    status_connections: Arc<Connections>,
}

impl ApiState {
    pub fn new(view: Arc<dyn StatusView>, peer: Arc<PeerServer>, max_connections: usize) -> Self {
        Self {
            view,
            peer,
            connections: Arc::new(Connections::new(max_connections)),
            status_connections: Arc::new(Connections::new(max_connections)),
        }
    }

    /// Entries in each table of per-request state, for the metrics.
    pub fn table_sizes(&self) -> Vec<(&'static str, usize)> {
        let mut sizes = self.peer.table_sizes();
        sizes.push(("connections", self.connections.len()));
        sizes.push(("status_connections", self.status_connections.len()));
        sizes
    }
}

/// The read-only routes: status and metrics.
fn status_router(state: Arc<ApiState>) -> Router {
    Router::new()
        .route(STATUS_PATH, get(status))
        .route(METRICS_PATH, get(metrics))
        .with_state(state)
}

/// Everything on one port (no `status_listen`).
pub fn router(state: Arc<ApiState>) -> Router {
    let peer = crate::peer::router(state.peer.clone());
    status_router(state).merge(peer)
}

/// Serves until `stop` is cancelled: everything on `listener`, or, with a separate
/// `status_listener`, peer routes on `listener` and status and metrics on the other.
pub async fn serve(
    listener: tokio::net::TcpListener,
    status_listener: Option<tokio::net::TcpListener>,
    state: Arc<ApiState>,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let Some(status_listener) = status_listener else {
        let connections = state.connections.clone();
        return server::serve(listener, router(state), connections, stop).await;
    };
    let peer = server::serve(
        listener,
        crate::peer::router(state.peer.clone()),
        state.connections.clone(),
        stop.clone(),
    );
    let status = server::serve(
        status_listener,
        status_router(state.clone()),
        state.status_connections.clone(),
        stop,
    );
    let (peer, status) = tokio::join!(peer, status);
    peer.and(status)
}

async fn status(State(s): State<Arc<ApiState>>) -> Json<Status> {
    Json(s.view.status())
}

async fn metrics(State(s): State<Arc<ApiState>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        crate::metrics::render_node(&s.view.status(), &s.table_sizes()),
    )
        .into_response()
}
