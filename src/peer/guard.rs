//! The gate in front of every signed route: authenticate the request, sign the answer.
//!
//! `authenticate` refuses cheaply what it can before reading a body: a missing or too large
//! Content-Length, malformed signature headers, a stale timestamp or a known nonce all answer
//! the same 401 without a byte of the body read or hashed. Only then is the body read (bounded
//! by the route's own limit, see `body_limit`) and its signature checked. Rejections are
//! counted and logged with their source address (at most once per source per
//! [`REJECT_LOG_EVERY`], see [`super::reject_log`]). Accepted requests get answers signed over
//! their nonce, so the caller can tell this node's answer from a forgery.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use axum::body::Body;
use axum::extract::{ConnectInfo, Extension, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::handlers::PeerServer;
use super::reject_log::{self, LogVerdict};
use super::wire::{APPEND_PATH, PREVOTE_PATH, SNAPSHOT_PATH};
use crate::auth::{Authenticator, SignedHeaders, VerifyRequestError, SIGNATURE_HEADER};
use crate::raft::NodeId;

/// Largest snapshot request: the state machine holds operator flags and the membership, a
/// few KB; 4 MiB leaves room and bounds memory per request.
const MAX_SNAPSHOT_BODY: usize = 4 << 20;
/// Largest append: openraft sends at most 300 entries of a few hundred bytes each.
const MAX_APPEND_BODY: usize = 512 << 10;
/// Largest vote, pre-vote, elect or maintenance request (they are a few dozen bytes).
const MAX_SMALL_BODY: usize = 16 << 10;
/// KiB of larger bodies (appends with entries, snapshots) read at once before their signature
/// is known: headers that merely look signed cost a stranger nothing, so without a bound
/// every connection could make this node buffer a 4 MiB snapshot (hundreds of MiB of locked
/// memory, a leader too busy to heartbeat). Two snapshots' worth; a heartbeat or a small
/// append (≤ `MAX_SMALL_BODY`) never waits for it, and a peer's larger request that finds it
/// used up is refused and sent again by openraft.
pub(super) const UNVERIFIED_BODY_KIB: usize = 2 * (MAX_SNAPSHOT_BODY >> 10);
/// Largest answer this node signs (its own answers are small; a bound keeps one bug from
/// buffering without limit), and so the most the peer client reads of one.
pub(super) const MAX_ANSWER: usize = 1 << 20;

/// A rejected source is logged at most this often; the counter still counts every request.
pub const REJECT_LOG_EVERY: Duration = Duration::from_secs(10);

/// Longest a request may take from its first byte to its answer (a 4 MiB snapshot on a LAN
/// takes milliseconds; Raft's own RPC timeouts are far shorter). The HTTP server drops a
/// connection whose request runs longer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// What the HTTP server hands each request about the connection it came on: a request that
/// passed the signature check proves the connection is a peer's, which the server then keeps
/// over strangers' (see `api::server`).
pub trait PeerConnectionMark: Send + Sync {
    fn mark_authenticated(&self);
}

/// Largest body accepted on `path`, checked against Content-Length before reading.
fn body_limit(path: &str) -> usize {
    match path {
        SNAPSHOT_PATH => MAX_SNAPSHOT_BODY,
        APPEND_PATH => MAX_APPEND_BODY,
        _ => MAX_SMALL_BODY,
    }
}

/// The node whose signature a pre-vote request carried (the handler needs to know who asks).
#[derive(Debug, Clone, Copy)]
pub(super) struct Signer(pub NodeId);

/// Why a signed route refused a request; all answer the same 401.
#[derive(Debug, thiserror::Error)]
enum RefuseError {
    #[error("no valid Content-Length header")]
    NoLength,
    #[error("Content-Length {length} exceeds this route's limit of {limit} bytes")]
    TooLarge { length: usize, limit: usize },
    #[error("the body did not arrive in time or was cut short")]
    BodyRead,
    #[error("{0} bytes of body, and other large unverified bodies are being read")]
    Busy(usize),
    #[error(transparent)]
    Auth(#[from] VerifyRequestError),
}

pub(super) async fn authenticate(
    State(state): State<Arc<PeerServer>>,
    ConnectInfo(source): ConnectInfo<SocketAddr>,
    connection: Option<Extension<Arc<dyn PeerConnectionMark>>>,
    request: Request,
    next: Next,
) -> Response {
    let (mut parts, body) = request.into_parts();
    let path = parts.uri.path().to_owned();
    let (signed, bytes) = match check(&state, &parts, body, &path).await {
        Ok(accepted) => accepted,
        Err(error) => return refuse(&state, source, &path, &error),
    };
    if let Some(Extension(connection)) = connection {
        connection.mark_authenticated();
    }
    // Only the pre-vote asks who signed; heartbeats skip the extension's allocation.
    if path == PREVOTE_PATH {
        parts.extensions.insert(Signer(signed.from));
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

/// Checks length and signature headers before reading the body, then the body's signature.
/// A body larger than a small request is read only within [`UNVERIFIED_BODY_KIB`].
async fn check(
    state: &PeerServer,
    parts: &axum::http::request::Parts,
    body: Body,
    path: &str,
) -> Result<(SignedHeaders, axum::body::Bytes), RefuseError> {
    let length = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        .ok_or(RefuseError::NoLength)?;
    let limit = body_limit(path);
    if length > limit {
        return Err(RefuseError::TooLarge { length, limit });
    }
    let auth = &state.auth;
    let signed = auth.check_headers(
        |name| {
            parts
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        },
        SystemTime::now(),
    )?;
    let _reading = if length > MAX_SMALL_BODY {
        let kib = u32::try_from(length.div_ceil(1 << 10)).map_err(|_| RefuseError::Busy(length))?;
        let permit = state.unverified_bodies.try_acquire_many(kib);
        Some(permit.map_err(|_| RefuseError::Busy(length))?)
    } else {
        None
    };
    let bytes = tokio::time::timeout(REQUEST_TIMEOUT, axum::body::to_bytes(body, length))
        .await
        .map_err(|_| RefuseError::BodyRead)?
        .map_err(|_| RefuseError::BodyRead)?;
    auth.check_body(
        &signed,
        parts.method.as_str(),
        path,
        &bytes,
        SystemTime::now(),
    )?;
    Ok((signed, bytes))
}

/// Counts and (rate-limited) logs a refused request and answers the uniform 401; the
/// connection is closed after it, freeing its slot.
fn refuse(state: &PeerServer, source: SocketAddr, path: &str, error: &RefuseError) -> Response {
    state.refused(source, path, error);
    (
        StatusCode::UNAUTHORIZED,
        [(header::CONNECTION, "close")],
        "unauthenticated\n",
    )
        .into_response()
}

impl PeerServer {
    /// Counts and (rate-limited) logs a refused request, by HTTP or by datagram.
    pub(super) fn refused(&self, source: SocketAddr, path: &str, error: &dyn std::fmt::Display) {
        let rejected_total = self.rejected.fetch_add(1, Ordering::Relaxed) + 1;
        let verdict = crate::sync::lock(&self.reject_log).note(source.ip(), Instant::now());
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
    }
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
