//! The HTTP server every node runs on `listen`: the peer wire, status and metrics.
//!
//! The signed peer routes (Raft's RPCs, handover, pre-vote, maintenance) are
//! [`crate::peer`]'s; this module mounts them beside the read-only routes. Status and metrics
//! are unauthenticated, like HAProxy's own stats page, and rate-limited ([`ReadOnlyBudget`]):
//! anyone who reaches the port can ask, and answering runs on the thread that carries Raft.
//! With `status_listen` set they move to that address and the peer port serves peers only.
//! Connection limits and timeouts live in [`server`]; what the CLI uses to talk to a daemon
//! is [`client`].

pub mod client;
pub mod server;

use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::State;
use axum::http::{header, StatusCode};
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
    read_only: Mutex<ReadOnlyBudget>,
}

/// Status and metrics answers per second, beyond a burst of as many. Far above what a
/// Prometheus scrape, dashboards and the CLI ask; far below what starves the heartbeats
/// (a flood of ~7,700 `/metrics` a second kept the leader from its fence, its VIPs flapped).
const READ_ONLY_PER_SECOND: u32 = 200;

/// A token bucket for the read-only routes: [`READ_ONLY_PER_SECOND`] tokens a second, at most
/// that many saved up. A dozen lines, not worth a rate-limiting crate.
#[derive(Debug)]
pub struct ReadOnlyBudget {
    tokens: f64,
    at: Instant,
}

impl ReadOnlyBudget {
    pub fn new(now: Instant) -> Self {
        Self {
            tokens: f64::from(READ_ONLY_PER_SECOND),
            at: now,
        }
    }

    /// Takes a token if one is left at `now`.
    pub fn take(&mut self, now: Instant) -> bool {
        let rate = f64::from(READ_ONLY_PER_SECOND);
        let refill = now.saturating_duration_since(self.at).as_secs_f64() * rate;
        self.tokens = (self.tokens + refill).min(rate);
        self.at = self.at.max(now);
        let taken = self.tokens >= 1.0;
        if taken {
            self.tokens -= 1.0;
        }
        taken
    }
}

impl ApiState {
    pub fn new(view: Arc<dyn StatusView>, peer: Arc<PeerServer>, max_connections: usize) -> Self {
        Self {
            view,
            peer,
            connections: Arc::new(Connections::new(max_connections)),
            status_connections: Arc::new(Connections::new(max_connections)),
            read_only: Mutex::new(ReadOnlyBudget::new(Instant::now())),
        }
    }

    /// Whether a status or metrics request may be answered now.
    fn may_answer(&self) -> bool {
        crate::sync::lock(&self.read_only).take(Instant::now())
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

/// The answer to a read-only request over [`READ_ONLY_PER_SECOND`].
fn too_many() -> Response {
    (
        StatusCode::TOO_MANY_REQUESTS,
        [(header::RETRY_AFTER, "1")],
        "too many status and metrics requests\n",
    )
        .into_response()
}

async fn status(State(s): State<Arc<ApiState>>) -> Response {
    if !s.may_answer() {
        return too_many();
    }
    Json(s.view.status()).into_response()
}

async fn metrics(State(s): State<Arc<ApiState>>) -> Response {
    if !s.may_answer() {
        return too_many();
    }
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
    use std::time::Duration;

    #[test]
    fn the_read_only_budget_allows_a_burst_then_its_rate() {
        let t0 = Instant::now();
        let mut budget = ReadOnlyBudget::new(t0);
        let burst = (0..1000).filter(|_| budget.take(t0)).count();
        assert_eq!(burst, READ_ONLY_PER_SECOND as usize);
        assert!(!budget.take(t0));
        let later = t0 + Duration::from_millis(100);
        let refilled = (0..1000).filter(|_| budget.take(later)).count();
        assert_eq!(refilled, READ_ONLY_PER_SECOND as usize / 10);
        // Saved up for at most one second.
        let much_later = later + Duration::from_secs(60);
        let saved = (0..1000).filter(|_| budget.take(much_later)).count();
        assert_eq!(saved, READ_ONLY_PER_SECOND as usize);
    }
}
