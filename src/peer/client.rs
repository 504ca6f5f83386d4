//! The signed client: one shared reqwest client, JSON bodies, every request signed for the
//! node it is sent to, and every answer checked to be signed by that node over the request's
//! nonce (an unsigned or mismatched answer is an error, never a vote or an ack).
//!
//! Everything this node sends to a peer goes through it: Raft's RPCs ([`super::network`]),
//! handover and pre-vote ([`super::requests`]), a maintenance change forwarded to the leader,
//! and the CLI's `raftvip maintenance`. One client means one connection pool, kept warm
//! between heartbeats.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::auth::{Authenticator, SIGNATURE_HEADER};
use crate::raft::NodeId;

/// Why a call to a peer failed.
#[derive(Debug, thiserror::Error)]
pub enum PeerCallError {
    #[error("{url} is not a valid peer URL: {reason}")]
    BadAddress { url: String, reason: String },
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
    #[error("{url} answered something that is not the expected JSON: {reason}")]
    Decode { url: String, reason: String },
    #[error("{url} rejected the request as unauthenticated (is secret_file and cluster the same on both nodes, and are clocks in sync?)")]
    Unauthorized { url: String },
    #[error("{url} answered HTTP {status} that is not signed by node {node}: {reason} (a forged answer, or the node runs an older raftvip)")]
    UntrustedAnswer {
        url: String,
        node: NodeId,
        status: reqwest::StatusCode,
        reason: crate::auth::VerifyResponseError,
    },
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
            // Peers are on the LAN: an HTTP_PROXY in the environment must never carry votes
            // (and looking proxies up costs CPU on every heartbeat).
            .no_proxy()
            // Keep connections open between heartbeats: a new TCP handshake per heartbeat
            // would cost more CPU than the heartbeat itself.
            .pool_idle_timeout(Duration::from_secs(30))
            // A peer never redirects (a redirect would be a forgery taking a signed request
            // elsewhere), and a Raft RPC is never retried: openraft sends the next one. Without
            // a retry policy reqwest also does not copy each request's body to replay it.
            .redirect(reqwest::redirect::Policy::none())
            .retry(reqwest::retry::never().max_retries_per_request(0))
            .build()
            .expect("a reqwest client without TLS always builds");
        Self { http, auth }
    }

    /// The URL of `path` on the peer at `address` (`IP:PORT`).
    pub fn url(address: &str, path: &str) -> Result<reqwest::Url, PeerCallError> {
        let text = format!("http://{address}{path}");
        reqwest::Url::parse(&text).map_err(|e| PeerCallError::BadAddress {
            url: text,
            reason: e.to_string(),
        })
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
        self.call_url(to, &Self::url(address, path)?, body, timeout)
            .await
    }

    /// POSTs `body` as JSON to a prepared URL (parsing a URL per heartbeat costs more CPU
    /// than signing it) and decodes the JSON answer.
    pub async fn call_url<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        to: NodeId,
        url: &reqwest::Url,
        body: &Req,
        timeout: Duration,
    ) -> Result<Resp, PeerCallError> {
        let body = serde_json::to_vec(body).expect("RPC types always serialize");
        let signature = self
            .auth
            .sign(to, "POST", url.path(), &body, SystemTime::now());
        let mut request = self
            .http
            .post(url.clone())
            .timeout(timeout)
            .header(reqwest::header::CONTENT_TYPE, "application/json");
        for (name, value) in signature.headers() {
            request = request.header(name, value);
        }
        let url = url.as_str();
        let response = request.body(body).send().await.map_err(|source| {
            if source.is_connect() {
                PeerCallError::Connect {
                    url: url.to_owned(),
                    source,
                }
            } else {
                PeerCallError::Request {
                    url: url.to_owned(),
                    source,
                }
            }
        })?;
        self.trusted_answer(to, &signature.nonce, url, response)
            .await
    }

    /// Decodes a successful answer that node `to` signed over the request's `nonce`; an
    /// unsigned, forged or unsuccessful answer is an error.
    async fn trusted_answer<Resp: DeserializeOwned>(
        &self,
        to: NodeId,
        nonce: &str,
        url: &str,
        response: reqwest::Response,
    ) -> Result<Resp, PeerCallError> {
        let status = response.status();
        if status == reqwest::StatusCode::UNAUTHORIZED {
            return Err(PeerCallError::Unauthorized {
                url: url.to_owned(),
            });
        }
        let answer_signature = response
            .headers()
            .get(SIGNATURE_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let answer = response
            .bytes()
            .await
            .map_err(|source| PeerCallError::Request {
                url: url.to_owned(),
                source,
            })?;
        self.auth
            .verify_response(
                to,
                nonce,
                status.as_u16(),
                answer_signature.as_deref(),
                &answer,
            )
            .map_err(|reason| PeerCallError::UntrustedAnswer {
                url: url.to_owned(),
                node: to,
                status,
                reason,
            })?;
        if !status.is_success() {
            return Err(PeerCallError::Status {
                url: url.to_owned(),
                status,
                body: String::from_utf8_lossy(&answer).into_owned(),
            });
        }
        serde_json::from_slice(&answer).map_err(|e| PeerCallError::Decode {
            url: url.to_owned(),
            reason: e.to_string(),
        })
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::auth::{FROM_HEADER, NONCE_HEADER};
    use crate::config::Secret;
    use crate::peer::wire::VOTE_PATH;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    pub(in crate::peer) fn node(id: NodeId) -> Arc<Authenticator> {
        Arc::new(Authenticator::new(Secret::new(SECRET.to_vec()), "lb", id))
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
            let header = |name: &'static str| {
                head.lines()
                    .find_map(|l| l.strip_prefix(&format!("{name}: ")))
                    .map(|v| v.trim().to_owned())
            };
            let mut extra = String::new();
            if let Some(signer) = signer {
                // Verify as the signer would, to get the request's nonce and sender.
                let signed = signer
                    .check_headers(header, SystemTime::now())
                    .unwrap_or_else(|e| panic!("{e}: {head}"));
                assert!(header(NONCE_HEADER).is_some() && header(FROM_HEADER).is_some());
                let signature = signer.sign_response(&signed, 200, body.as_bytes());
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
