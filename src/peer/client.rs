//! The signed client: one shared HTTP/1 client, JSON bodies, every request signed for the
//! node it is sent to, and every answer checked to be signed by that node over the request's
//! nonce (an unsigned or mismatched answer is an error, never a vote or an ack).
//!
//! Everything this node sends to a peer goes through it: Raft's RPCs ([`super::network`]),
//! handover and pre-vote ([`super::requests`]), a maintenance change forwarded to the leader,
//! and the CLI's `raftvip maintenance`. One client means one connection pool, kept warm
//! between calls; the leader's appends to each follower, and its heartbeats while they cannot
//! go by datagram ([`super::datagram`]), go on a connection of their own instead
//! ([`PeerLink`]), which skips the pool's bookkeeping on every request.
//!
//! Why hyper's own client and not reqwest (docs/design.md, "Why hyper's client and not
//! reqwest"): a heartbeat is a few hundred bytes between two boxes that never redirect, proxy
//! or compress, yet reqwest 0.13's layers for those ran on every one (its redirect layer alone
//! parses every request's URL again, with IDNA, even with redirects off); without them an idle
//! leader uses a tenth less CPU. hyper-util's pooled client is the layer reqwest itself sends
//! through.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderValue, CONTENT_TYPE, HOST};
use hyper::{Method, Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::guard::MAX_ANSWER;
use crate::auth::{Authenticator, SIGNATURE_HEADER};
use crate::raft::NodeId;

/// Why a call to a peer failed.
#[derive(Debug, thiserror::Error)]
pub enum PeerCallError {
    #[error("{url} is not a valid peer URL: {reason}")]
    BadAddress { url: String, reason: String },
    /// (The causes are in the message, so `error` is not a `source` as well.)
    #[error("cannot connect to {url}: {}", with_causes(.error.as_ref()))]
    Connect { url: String, error: BoxError },
    #[error("request to {url} failed: {}", with_causes(.error.as_ref()))]
    Request {
        url: String,
        error: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("{url} did not answer within {after:?}")]
    TimedOut { url: String, after: Duration },
    #[error("{url} answered something that is not the expected JSON: {reason}")]
    Decode { url: String, reason: String },
    #[error("{url} rejected the request as unauthenticated (is secret_file and cluster the same on both nodes, and are clocks in sync?)")]
    Unauthorized { url: String },
    #[error("{url} answered HTTP {status} that is not signed by node {node}: {reason} (a forged answer, or the node runs an older raftvip)")]
    UntrustedAnswer {
        url: String,
        node: NodeId,
        status: StatusCode,
        reason: crate::auth::VerifyResponseError,
    },
    #[error("{url} answered HTTP {status}: {body}")]
    Status {
        url: String,
        status: StatusCode,
        body: String,
    },
}

/// `error` and its causes: hyper's client errors say only "client error (Connect)" and keep
/// the reason ("Connection refused") in their source.
pub fn with_causes(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        text.push_str(": ");
        text.push_str(&e.to_string());
        cause = e.source();
    }
    text
}

/// The HTTP/1 client of every call to a raftvip (peers and the CLI's status): keep-alive, and
/// nothing a LAN peer never needs — no proxy, no redirect (a redirect would be a forgery taking
/// a signed request elsewhere), no retry of a request the peer may have seen (openraft sends
/// the next RPC itself). hyper does resend a request it never wrote because the pooled
/// connection had closed meanwhile (a restarted peer), as reqwest did.
pub fn lan_client() -> Client<HttpConnector, Full<Bytes>> {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        // Keep connections open between heartbeats: a new TCP handshake per heartbeat
        // would cost more CPU than the heartbeat itself.
        .pool_idle_timeout(Duration::from_secs(30))
        .pool_timer(TokioTimer::new())
        .build(connector)
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why [`exchange`] got no complete answer.
#[derive(Debug)]
pub enum ExchangeError {
    /// No connection: refused, unreachable.
    Connect(BoxError),
    /// The request failed on its connection.
    Request(BoxError),
    /// The answer's body broke off, or ran past the limit.
    Body(BoxError),
    TimedOut,
}

/// Sends `request` and reads the whole answer, at most `limit` bytes of body, all within
/// `timeout`: whatever answers cannot make the caller wait or buffer more.
pub async fn exchange(
    client: &Client<HttpConnector, Full<Bytes>>,
    request: Request<Full<Bytes>>,
    limit: usize,
    timeout: Duration,
) -> Result<(hyper::http::response::Parts, Bytes), ExchangeError> {
    let sent = async {
        client.request(request).await.map_err(|error| {
            if error.is_connect() {
                ExchangeError::Connect(error.into())
            } else {
                ExchangeError::Request(error.into())
            }
        })
    };
    answer_within(timeout, limit, sent).await
}

/// The answer's head and its whole body (at most `limit` bytes of it) once `sent` has sent
/// the request, all within `timeout`.
async fn answer_within(
    timeout: Duration,
    limit: usize,
    sent: impl Future<Output = Result<Response<Incoming>, ExchangeError>>,
) -> Result<(hyper::http::response::Parts, Bytes), ExchangeError> {
    let answer = async {
        let (head, body) = sent.await?.into_parts();
        let body = Limited::new(body, limit)
            .collect()
            .await
            .map_err(ExchangeError::Body)?;
        Ok((head, body.to_bytes()))
    };
    tokio::time::timeout(timeout, answer)
        .await
        .map_err(|_| ExchangeError::TimedOut)?
}

/// One HTTP/1 connection to one peer, kept open for the appends the leader sends it, and the
/// heartbeats that do not go by datagram (openraft keeps one [`super::network::PeerConnection`] per follower for as long
/// as it leads). The pooled client ([`lan_client`]) costs a heartbeat more than its round
/// trip needs: a pool checkout and check-in under a lock, the Host header and the
/// origin-form URI built anew, and a task spawned per request to hand the connection back
/// to the pool once the answer's body is read. Here the Host header and the path are the
/// link's, and the connection is simply used again. Like the pooled client, a request that
/// was never written because the connection had closed meanwhile (a restarted peer) is sent
/// once more on a new connection; anything else fails the call, and openraft sends the next
/// one.
pub struct PeerLink {
    address: String,
    host: HeaderValue,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl PeerLink {
    /// A link to the peer at `address` (`IP:PORT`); it connects on first use.
    pub fn new(address: &str) -> Result<Self, PeerCallError> {
        let host = HeaderValue::from_str(address).map_err(|e| PeerCallError::BadAddress {
            url: address.to_owned(),
            reason: e.to_string(),
        })?;
        Ok(Self {
            address: address.to_owned(),
            host,
            sender: None,
        })
    }

    /// As [`exchange`], on this link's connection. A call cut short (a timeout) drops its
    /// answer, and hyper then closes the connection, so the next call connects anew.
    async fn exchange(
        &mut self,
        request: Request<Full<Bytes>>,
        limit: usize,
        timeout: Duration,
    ) -> Result<(hyper::http::response::Parts, Bytes), ExchangeError> {
        answer_within(timeout, limit, self.send(request)).await
    }

    async fn send(
        &mut self,
        mut request: Request<Full<Bytes>>,
    ) -> Result<Response<Incoming>, ExchangeError> {
        *request.uri_mut() = request
            .uri()
            .path_and_query()
            .cloned()
            .map_or_else(|| Uri::from_static("/"), Uri::from);
        request.headers_mut().insert(HOST, self.host.clone());
        if let Some(sender) = self.sender.as_mut() {
            if sender.ready().await.is_ok() {
                match sender.try_send_request(request).await {
                    Ok(response) => return Ok(response),
                    Err(mut error) => match error.take_message() {
                        Some(unsent) => request = unsent,
                        None => return Err(ExchangeError::Request(error.into_error().into())),
                    },
                }
            }
        }
        let sender = self.connect().await?;
        sender
            .send_request(request)
            .await
            .map_err(|e| ExchangeError::Request(e.into()))
    }

    /// A new connection in place of the old one, with its driving task (which ends when the
    /// sender is dropped or the peer closes).
    async fn connect(&mut self) -> Result<&mut SendRequest<Full<Bytes>>, ExchangeError> {
        self.sender = None;
        let connect = |e: std::io::Error| ExchangeError::Connect(e.into());
        let stream = tokio::net::TcpStream::connect(self.address.as_str())
            .await
            .map_err(connect)?;
        stream.set_nodelay(true).map_err(connect)?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| ExchangeError::Connect(e.into()))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "peer link closed");
            }
        });
        Ok(self.sender.insert(sender))
    }
}

/// Signs and sends requests to peers. Cheap to clone: the connection pool is shared.
#[derive(Clone)]
pub struct PeerClient {
    http: Client<HttpConnector, Full<Bytes>>,
    auth: Arc<Authenticator>,
}

impl PeerClient {
    pub fn new(auth: Arc<Authenticator>) -> Self {
        Self {
            http: lan_client(),
            auth,
        }
    }

    /// The key requests are signed and answers checked with.
    pub fn auth(&self) -> &Authenticator {
        &self.auth
    }

    /// The URL of `path` on the peer at `address` (`IP:PORT`).
    pub fn url(address: &str, path: &str) -> Result<Uri, PeerCallError> {
        let text = format!("http://{address}{path}");
        let uri = Uri::try_from(text.as_str()).map_err(|e| PeerCallError::BadAddress {
            url: text.clone(),
            reason: e.to_string(),
        })?;
        if uri.port_u16().is_none() {
            return Err(PeerCallError::BadAddress {
                url: text,
                reason: "no port".to_owned(),
            });
        }
        Ok(uri)
    }

    /// POSTs `body` as JSON to node `to` at `http://{address}{path}` and decodes its answer.
    pub async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        to: NodeId,
        address: &str,
        path: &str,
        body: &Req,
        timeout: Duration,
    ) -> Result<Resp, PeerCallError> {
        self.call_url(None, to, &Self::url(address, path)?, body, timeout)
            .await
    }

    /// POSTs `body` as JSON to a prepared URL (parsed once per peer, not per heartbeat) and
    /// decodes the JSON answer; all within `timeout`. On `link`, the connection kept to that
    /// peer, if given; else through the pool.
    pub async fn call_url<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        link: Option<&mut PeerLink>,
        to: NodeId,
        url: &Uri,
        body: &Req,
        timeout: Duration,
    ) -> Result<Resp, PeerCallError> {
        let (request, nonce) = self.signed_request(to, url, body)?;
        // As much as a raftvip answers at most: whoever listens at a peer's address cannot
        // make this node buffer more before the answer's signature is checked.
        let answer = match link {
            Some(link) => link.exchange(request, MAX_ANSWER, timeout).await,
            None => exchange(&self.http, request, MAX_ANSWER, timeout).await,
        };
        self.answer(to, &nonce, url, timeout, answer)
    }

    /// `body` as a JSON POST to `url`, signed for node `to`, and the nonce its answer must be
    /// signed over.
    fn signed_request<Req: Serialize>(
        &self,
        to: NodeId,
        url: &Uri,
        body: &Req,
    ) -> Result<(Request<Full<Bytes>>, String), PeerCallError> {
        let body = serde_json::to_vec(body).expect("RPC types always serialize");
        let signature = self
            .auth
            .sign(to, "POST", url.path(), &body, SystemTime::now());
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(url.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        for (name, value) in signature.headers() {
            request = request.header(name, value);
        }
        let request =
            request
                .body(Full::new(Bytes::from(body)))
                .map_err(|e| PeerCallError::Request {
                    url: url.to_string(),
                    error: e.into(),
                })?;
        Ok((request, signature.nonce))
    }

    /// The decoded answer of an exchange with node `to`, or why there is none.
    fn answer<Resp: DeserializeOwned>(
        &self,
        to: NodeId,
        nonce: &str,
        url: &Uri,
        timeout: Duration,
        exchanged: Result<(hyper::http::response::Parts, Bytes), ExchangeError>,
    ) -> Result<Resp, PeerCallError> {
        let (head, answer) = exchanged.map_err(|e| {
            let url = url.to_string();
            match e {
                ExchangeError::Connect(error) => PeerCallError::Connect { url, error },
                ExchangeError::Request(error) | ExchangeError::Body(error) => {
                    PeerCallError::Request { url, error }
                }
                ExchangeError::TimedOut => PeerCallError::TimedOut {
                    url,
                    after: timeout,
                },
            }
        })?;
        self.trusted_answer(to, nonce, url, &head, &answer)
    }

    /// Decodes a successful answer that node `to` signed over the request's `nonce`; an
    /// unsigned, forged or unsuccessful answer is an error.
    fn trusted_answer<Resp: DeserializeOwned>(
        &self,
        to: NodeId,
        nonce: &str,
        url: &Uri,
        head: &hyper::http::response::Parts,
        answer: &[u8],
    ) -> Result<Resp, PeerCallError> {
        let status = head.status;
        if status == StatusCode::UNAUTHORIZED {
            return Err(PeerCallError::Unauthorized {
                url: url.to_string(),
            });
        }
        let answer_signature = head
            .headers
            .get(SIGNATURE_HEADER)
            .and_then(|v| v.to_str().ok());
        self.auth
            .verify_response(to, nonce, status.as_u16(), answer_signature, answer)
            .map_err(|reason| PeerCallError::UntrustedAnswer {
                url: url.to_string(),
                node: to,
                status,
                reason,
            })?;
        if !status.is_success() {
            return Err(PeerCallError::Status {
                url: url.to_string(),
                status,
                body: String::from_utf8_lossy(answer).into_owned(),
            });
        }
        serde_json::from_slice(answer).map_err(|e| PeerCallError::Decode {
            url: url.to_string(),
            reason: e.to_string(),
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::auth::{FROM_HEADER, NONCE_HEADER};
    use crate::config::Secret;
    use crate::peer::wire::VOTE_PATH;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    pub(in crate::peer) fn node(id: NodeId) -> Arc<Authenticator> {
        Arc::new(Authenticator::new(Secret::new(SECRET.to_vec()), "lb", id))
    }

    /// The value of header `name` in a request's lower-cased `head`.
    fn header_in(head: &str, name: &str) -> Option<String> {
        head.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .map(|v| v.trim().to_owned())
    }

    /// `signer`'s signature of a 200 answer `body` to the request with lower-cased `head`,
    /// verified first as the signer would, to get the request's nonce and sender.
    fn answer_signature(signer: &Authenticator, head: &str, body: &str) -> String {
        let signed = signer
            .check_headers(|name| header_in(head, name), SystemTime::now())
            .unwrap_or_else(|e| panic!("{e}: {head}"));
        signer.sign_response(&signed, 200, body.as_bytes())
    }

    /// A one-shot HTTP server that answers `body` signed by `signer` (None: unsigned), over
    /// the nonce of the request it received.
    pub(in crate::peer) async fn answer_once(
        signer: Option<Arc<Authenticator>>,
        body: &'static str,
    ) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = stream.read(&mut buf).await.unwrap();
                request.extend_from_slice(&buf[..n]);
            }
            let head = String::from_utf8_lossy(&request).to_ascii_lowercase();
            let mut extra = String::new();
            if let Some(signer) = signer {
                let header = |name| header_in(&head, name);
                assert!(header(NONCE_HEADER).is_some() && header(FROM_HEADER).is_some());
                let signature = answer_signature(&signer, &head, body);
                extra = format!("{SIGNATURE_HEADER}: {signature}\r\n");
            }
            let answer = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{extra}connection: close\r\n\r\n{body}",
                body.len()
            );
            stream.write_all(answer.as_bytes()).await.unwrap();
        });
        address
    }

    async fn ask(address: &str) -> Result<serde_json::Value, PeerCallError> {
        PeerClient::new(node(1))
            .call(2, address, VOTE_PATH, &(), Duration::from_secs(2))
            .await
    }

    /// A server signing as node 2 that answers `{"Ok":true}` on kept-alive connections and
    /// hangs up each one after `per_connection` answers; counts the connections it accepted.
    async fn answer_kept_alive(per_connection: usize, accepted: Arc<AtomicUsize>) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let signer = node(2);
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                accepted.fetch_add(1, Ordering::SeqCst);
                let signer = signer.clone();
                tokio::spawn(async move {
                    let mut stream = tokio::io::BufReader::new(stream);
                    for _ in 0..per_connection {
                        let mut head = Vec::new();
                        while !head.ends_with(b"\r\n\r\n") {
                            let mut line = Vec::new();
                            if stream.read_until(b'\n', &mut line).await.unwrap() == 0 {
                                return;
                            }
                            head.extend_from_slice(&line);
                        }
                        let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
                        let length = header_in(&head, "content-length").unwrap();
                        let mut body = vec![0; length.parse().unwrap()];
                        stream.read_exact(&mut body).await.unwrap();
                        let answer = r#"{"Ok":true}"#;
                        let signature = answer_signature(&signer, &head, answer);
                        let reply = format!(
                            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n{SIGNATURE_HEADER}: {signature}\r\n\r\n{answer}",
                            answer.len()
                        );
                        stream.write_all(reply.as_bytes()).await.unwrap();
                    }
                });
            }
        });
        address
    }

    /// The heartbeats' link sends one request after another on one connection, and takes a
    /// new one when the peer has closed it (a restarted peer), without failing a call.
    #[tokio::test]
    async fn a_link_keeps_its_connection_and_replaces_a_closed_one() {
        let accepted = Arc::new(AtomicUsize::new(0));
        let address = answer_kept_alive(3, accepted.clone()).await;
        let client = PeerClient::new(node(1));
        let url = PeerClient::url(&address, VOTE_PATH).unwrap();
        let mut link = PeerLink::new(&address).unwrap();
        for call in 1..=3 {
            let answer: serde_json::Value = client
                .call_url(Some(&mut link), 2, &url, &call, Duration::from_secs(2))
                .await
                .unwrap();
            assert_eq!(answer, serde_json::json!({"Ok": true}));
        }
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            1,
            "three calls, one connection"
        );
        // The server hung up after its third answer.
        tokio::time::sleep(Duration::from_millis(50)).await;
        for call in 4..=5 {
            let answer: Result<serde_json::Value, _> = client
                .call_url(Some(&mut link), 2, &url, &call, Duration::from_secs(2))
                .await;
            assert!(answer.is_ok(), "call {call}: {answer:?}");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    /// A peer that sends an answer's head and then stalls: the call times out, and the next
    /// one goes on a new connection instead of waiting behind the stalled one.
    #[tokio::test]
    async fn a_link_whose_answer_stalled_connects_anew() {
        let accepted = Arc::new(AtomicUsize::new(0));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let stalled = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf).await;
            // A head that promises a body that never comes; the connection stays open.
            let head = "HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n";
            stream.write_all(head.as_bytes()).await.unwrap();
            tokio::time::sleep(Duration::from_secs(30)).await;
        });
        let client = PeerClient::new(node(1));
        let url = PeerClient::url(&address, VOTE_PATH).unwrap();
        let mut link = PeerLink::new(&address).unwrap();
        let error = client
            .call_url::<_, serde_json::Value>(
                Some(&mut link),
                2,
                &url,
                &(),
                Duration::from_millis(200),
            )
            .await
            .unwrap_err();
        assert!(matches!(error, PeerCallError::TimedOut { .. }), "{error}");
        // The peer now answers properly, on new connections only.
        link.address = answer_kept_alive(3, accepted.clone()).await;
        let answer: serde_json::Value = client
            .call_url(Some(&mut link), 2, &url, &(), Duration::from_secs(2))
            .await
            .unwrap();
        assert_eq!(answer, serde_json::json!({"Ok": true}));
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        stalled.abort();
    }

    /// Nobody listening: a connect error, which openraft treats as an unreachable peer.
    #[tokio::test]
    async fn a_link_to_nobody_is_a_connect_error() {
        // Bound but not listening, for the whole test: the kernel refuses connections to it,
        // and no other test's listener can take the port (one did, 1 CI run in ~30, when the
        // port was bound and let go).
        let nobody = tokio::net::TcpSocket::new_v4().unwrap();
        nobody.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let address = nobody.local_addr().unwrap().to_string();
        let url = PeerClient::url(&address, VOTE_PATH).unwrap();
        let mut link = PeerLink::new(&address).unwrap();
        let error = PeerClient::new(node(1))
            .call_url::<_, serde_json::Value>(Some(&mut link), 2, &url, &(), Duration::from_secs(2))
            .await
            .unwrap_err();
        assert!(matches!(error, PeerCallError::Connect { .. }), "{error}");
    }

    #[tokio::test]
    async fn an_answer_signed_by_the_node_asked_is_accepted() {
        let address = answer_once(Some(node(2)), r#"{"Ok":true}"#).await;
        assert_eq!(
            ask(&address).await.unwrap(),
            serde_json::json!({"Ok": true})
        );
    }

    #[tokio::test]
    async fn an_unsigned_answer_is_refused() {
        let address = answer_once(None, r#"{"Ok":true}"#).await;
        let error = ask(&address).await.unwrap_err();
        assert!(
            matches!(
                error,
                PeerCallError::UntrustedAnswer {
                    reason: crate::auth::VerifyResponseError::Unsigned,
                    ..
                }
            ),
            "{error}"
        );
    }

    /// A one-shot HTTP server that answers 200 with a body of `length` bytes, sent until the
    /// client hangs up.
    pub(crate) async fn answer_endlessly(length: usize) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf).await;
            let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {length}\r\n\r\n");
            stream.write_all(head.as_bytes()).await.unwrap();
            let chunk = vec![b' '; 64 << 10];
            for _ in 0..length / chunk.len() {
                if stream.write_all(&chunk).await.is_err() {
                    return; // the client hung up, as it should
                }
            }
        });
        address
    }

    /// Whoever listens at a peer's address cannot make this node buffer an endless answer.
    #[tokio::test]
    async fn an_answer_larger_than_any_raftvip_sends_is_refused_unread() {
        let address = answer_endlessly(64 * MAX_ANSWER).await;
        let error = ask(&address).await.unwrap_err();
        assert!(
            error.to_string().contains("length limit exceeded"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn an_answer_signed_by_another_node_is_refused() {
        let address = answer_once(Some(node(3)), r#"{"Ok":true}"#).await;
        let error = ask(&address).await.unwrap_err();
        assert!(
            matches!(
                error,
                PeerCallError::UntrustedAnswer {
                    reason: crate::auth::VerifyResponseError::BadSignature,
                    ..
                }
            ),
            "{error}"
        );
    }
}
