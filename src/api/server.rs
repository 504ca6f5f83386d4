//! The HTTP server loop: a connection cap, eviction of idle strangers, timeouts.
//!
//! `axum::serve` accepts every connection and keeps it as long as the client likes, so a
//! client holding a few thousand idle connections used up the daemon's file descriptors
//! (issue 7). This loop (hyper's HTTP/1 connection driven by hand, as axum does inside) adds:
//!
//! - a cap of `max_connections` open connections per listener;
//! - when the cap is reached, a new connection evicts the oldest *unauthenticated* one (a
//!   connection becomes authenticated once a request on it passed the peer guard's signature
//!   check, which the guard reports through [`PeerConnectionMark`] on the request). We
//!   cannot tell a peer from a stranger before it sends a signed request, so strangers compete
//!   with each other only: a peer's new connection is the newest, is evicted last, and is
//!   authenticated by its first request a millisecond later. Once every slot holds an
//!   authenticated connection (only peers can do that) a new one is closed at once;
//! - an idle timeout that depends on what the connection proved: [`UNAUTHENTICATED_IDLE`]
//!   for strangers (covers a slow or absent request head too), [`AUTHENTICATED_IDLE`] for
//!   peers, longer than the client pool's own idle timeout so the client closes first and
//!   never sends a request into a connection the server is closing;
//! - a deadline for a request in flight ([`REQUEST_TIMEOUT`]), after which the connection is
//!   dropped;
//! - accept errors (EMFILE, ENFILE, ENOMEM) back off instead of spinning.
//!
//! Everything here is bounded by the cap: the table of open connections is the only state.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::peer::{PeerConnectionMark, REQUEST_TIMEOUT};

/// A connection that has not proved itself is closed after this long without a request.
/// A peer sends its first request within milliseconds of connecting.
pub const UNAUTHENTICATED_IDLE: Duration = Duration::from_secs(2);

/// An authenticated (peer) connection is kept this long without a request: longer than the
/// peer client's 30 s pool idle timeout, so the client always closes first.
pub const AUTHENTICATED_IDLE: Duration = Duration::from_secs(40);

/// Pause after a failed accept (EMFILE and friends) so a full descriptor table does not spin
/// the runtime; connections are still being closed meanwhile, freeing descriptors.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);

/// After being told to close, a connection gets this long to finish a request in flight.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// One open connection, shared between the loop and the requests on it (as an extension).
pub struct Connection {
    id: u64,
    accepted: Instant,
    authenticated: AtomicBool,
    in_flight: AtomicUsize,
    last_active: Mutex<Instant>,
    close: Notify,
}

impl PeerConnectionMark for Connection {
    /// A request on this connection passed the signature check: it is a peer's.
    fn mark_authenticated(&self) {
        self.authenticated.store(true, Ordering::Relaxed);
    }
}

impl Connection {
    fn touch(&self) {
        *crate::sync::lock(&self.last_active) = Instant::now();
    }

    /// When the connection should be dropped if nothing happens until then.
    fn deadline(&self) -> Instant {
        let last = *crate::sync::lock(&self.last_active);
        last + if self.in_flight.load(Ordering::Relaxed) > 0 {
            REQUEST_TIMEOUT + CLOSE_GRACE
        } else if self.authenticated.load(Ordering::Relaxed) {
            AUTHENTICATED_IDLE
        } else {
            UNAUTHENTICATED_IDLE
        }
    }
}

/// The open connections of one listener, at most `max` of them.
pub struct Connections {
    max: usize,
    next_id: AtomicU64,
    open: Mutex<HashMap<u64, Arc<Connection>>>,
}

impl Connections {
    pub fn new(max: usize) -> Self {
        Self {
            max: max.max(1),
            next_id: AtomicU64::new(0),
            open: Mutex::new(HashMap::new()),
        }
    }

    pub fn len(&self) -> usize {
        crate::sync::lock(&self.open).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Admits a new connection, evicting the oldest unauthenticated one (idle first) if the
    /// cap is reached; None if every slot holds an authenticated connection.
    fn admit(&self, now: Instant) -> Option<Arc<Connection>> {
        let mut open = crate::sync::lock(&self.open);
        if open.len() >= self.max {
            let victim = open
                .values()
                .filter(|c| !c.authenticated.load(Ordering::Relaxed))
                .min_by_key(|c| (c.in_flight.load(Ordering::Relaxed) > 0, c.accepted))
                .map(|c| c.id)?;
            if let Some(evicted) = open.remove(&victim) {
                evicted.close.notify_one();
            }
        }
        let connection = Arc::new(Connection {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            accepted: now,
            authenticated: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            last_active: Mutex::new(now),
            close: Notify::new(),
        });
        open.insert(connection.id, connection.clone());
        shrink(&mut open);
        Some(connection)
    }

    fn remove(&self, id: u64) {
        let mut open = crate::sync::lock(&self.open);
        open.remove(&id);
        shrink(&mut open);
    }

    fn close_all(&self) {
        for connection in crate::sync::lock(&self.open).values() {
            connection.close.notify_one();
        }
    }
}

/// Gives back the memory of a connection flood once it is over.
fn shrink(open: &mut HashMap<u64, Arc<Connection>>) {
    if open.capacity() > 64 && open.capacity() > 4 * open.len() {
        open.shrink_to_fit();
    }
}

/// Serves `router` on `listener` until `stop` is cancelled; then asks every connection to
/// close and waits (up to `CLOSE_GRACE`) for requests in flight.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    connections: Arc<Connections>,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let mut tasks = tokio::task::JoinSet::new();
    let mut last_error_log: Option<Instant> = None;
    loop {
        while tasks.try_join_next().is_some() {}
        let accepted = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, source)) => {
                let Some(connection) = connections.admit(Instant::now()) else {
                    // Every slot is a peer's: refuse (dropping closes the socket).
                    continue;
                };
                tasks.spawn(serve_connection(
                    stream,
                    source,
                    connection,
                    router.clone(),
                    connections.clone(),
                ));
            }
            Err(error) => {
                if last_error_log.is_none_or(|at| at.elapsed() >= Duration::from_secs(10)) {
                    last_error_log = Some(Instant::now());
                    tracing::warn!(
                        %error,
                        open = connections.len(),
                        "cannot accept a connection (descriptors or memory exhausted?); retrying"
                    );
                }
                tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
            }
        }
    }
    drop(listener);
    connections.close_all();
    let _ = tokio::time::timeout(CLOSE_GRACE * 2, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    Ok(())
}

async fn serve_connection(
    stream: tokio::net::TcpStream,
    source: SocketAddr,
    connection: Arc<Connection>,
    router: Router,
    connections: Arc<Connections>,
) {
    let _ = stream.set_nodelay(true);
    let conn = connection.clone();
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(source));
        request
            .extensions_mut()
            .insert(conn.clone() as Arc<dyn PeerConnectionMark>);
        conn.in_flight.fetch_add(1, Ordering::Relaxed);
        conn.touch();
        let (router, conn) = (router.clone(), conn.clone());
        async move {
            let response = router.oneshot(request).await;
            conn.touch();
            conn.in_flight.fetch_sub(1, Ordering::Relaxed);
            Ok::<_, Infallible>(response.unwrap_or_else(|never| match never {}))
        }
    });
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(AUTHENTICATED_IDLE);
    let served = http.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(served);
    loop {
        tokio::select! {
            _ = served.as_mut() => break,
            _ = connection.close.notified() => {
                served.as_mut().graceful_shutdown();
                let _ = tokio::time::timeout(CLOSE_GRACE, served.as_mut()).await;
                break;
            }
            _ = tokio::time::sleep_until(connection.deadline()) => {
                if Instant::now() >= connection.deadline() {
                    break;
                }
            }
        }
    }
    connections.remove(connection.id);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_table_evicts_the_oldest_unauthenticated_connection() {
        let table = Connections::new(3);
        let t0 = Instant::now();
        let peer = table.admit(t0).unwrap();
        peer.mark_authenticated();
        let stranger1 = table.admit(t0 + Duration::from_millis(1)).unwrap();
        let stranger2 = table.admit(t0 + Duration::from_millis(2)).unwrap();
        let newcomer = table.admit(t0 + Duration::from_millis(3)).unwrap();
        assert_eq!(table.len(), 3);
        let open: Vec<u64> = {
            let mut ids: Vec<u64> = table.open.lock().unwrap().keys().copied().collect();
            ids.sort();
            ids
        };
        assert_eq!(open, vec![peer.id, stranger2.id, newcomer.id]);
        assert_ne!(stranger1.id, newcomer.id);
    }

    #[test]
    fn a_table_full_of_peers_refuses_newcomers() {
        let table = Connections::new(2);
        let t0 = Instant::now();
        table.admit(t0).unwrap().mark_authenticated();
        table.admit(t0).unwrap().mark_authenticated();
        assert!(table.admit(t0).is_none());
        assert_eq!(table.len(), 2);
    }

    /// Issue 7: 100,000 connection attempts leave at most `max` entries.
    #[test]
    fn a_flood_of_connections_stays_bounded() {
        let table = Connections::new(crate::config::DEFAULT_MAX_CONNECTIONS);
        let t0 = Instant::now();
        for n in 0..100_000u64 {
            table.admit(t0 + Duration::from_micros(n)).unwrap();
        }
        assert_eq!(table.len(), crate::config::DEFAULT_MAX_CONNECTIONS);
    }
}
