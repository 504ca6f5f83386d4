//! Heartbeats as one signed UDP datagram each way; everything else stays on signed HTTP.
//!
//! Why: an idle cluster's CPU is its heartbeats, about 27 rounds a second at the default
//! timing, and an HTTP exchange over TCP costs both ends more than the Raft work it carries
//! (hyper's framing, axum's routing, TCP's acknowledgements and timers). One datagram each way
//! cut an idle leader's CPU by 7–16 % and a follower's by 15–21 % in side-by-side runs
//! (docs/design.md, "Why heartbeats go by datagram").
//!
//! What goes by datagram: an append without entries (a heartbeat) whose request fits in
//! [`MAX_DATAGRAM`]. Appends that carry entries, votes, snapshots and raftvip's own requests
//! stay on HTTP, where TCP retransmits and a body may be large.
//!
//! **Signed like an HTTP request** ([`crate::auth`]): the same HMAC over cluster, sender,
//! target, timestamp, nonce and body, the same clock window and the same nonce cache, with
//! [`METHOD`] in place of the HTTP method so neither can be replayed as the other. The answer
//! is signed over the request's nonce. A datagram that fails a check gets no answer (nothing
//! to learn, nothing to amplify); it is counted and logged with the HTTP rejections.
//!
//! **Falling back to HTTP:** UDP can be filtered where TCP is not (a firewall opened for the
//! TCP port only), and a raftvip from before this module does not listen for it. A heartbeat
//! datagram that is not answered within the heartbeat's timeout fails that heartbeat, and the
//! heartbeats to that peer go over HTTP for [`HTTP_AFTER_SILENCE`] before datagrams are tried
//! again. The timing tolerates one lost round of heartbeats (docs/timing.md), so such a peer
//! costs one heartbeat per [`HTTP_AFTER_SILENCE`]. When HTTP then reaches the peer, UDP is what
//! failed: that is counted and logged ([`HeartbeatLink::http_answered`]); a peer that is down
//! answers neither, and is left to Raft's own reports.
//!
//! **The frame** is text lines and then the JSON body, so a packet capture reads like the
//! HTTP request it replaces:
//!
//! ```text
//! request: raftvip-heartbeat-v1\n{from}\n{timestamp_ms}\n{nonce}\n{signature}\n{body}
//! answer:  raftvip-heartbeat-answer-v1\n{nonce}\n{signature}\n{body}
//! ```

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::net::UdpSocket;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::handlers::PeerServer;
use super::wire::APPEND_PATH;
use crate::auth::{
    Authenticator, SignedHeaders, VerifyRequestError, FROM_HEADER, NONCE_HEADER, SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
};
use crate::log_limit::LogLimit;
use crate::raft::typ::AppendEntriesRequest;
use crate::raft::NodeId;

const REQUEST_MAGIC: &[u8] = b"raftvip-heartbeat-v1";
const ANSWER_MAGIC: &[u8] = b"raftvip-heartbeat-answer-v1";

/// Most bytes a request frame adds to its body: the magic line, a 20-digit node id, a
/// 13-digit timestamp, the 32-digit nonce, the 64-digit signature and their line ends (134),
/// rounded up.
const REQUEST_HEAD_MAX: usize = 160;

/// Whether a heartbeat whose serialised body is `body_len` bytes fits in one datagram.
pub fn fits_a_datagram(body_len: usize) -> bool {
    REQUEST_MAGIC.len() + REQUEST_HEAD_MAX + body_len <= MAX_DATAGRAM
}

/// Signed in place of an HTTP method.
pub const METHOD: &str = "DATAGRAM";

/// Largest datagram sent or accepted: one Ethernet frame's payload, so never fragmented. A
/// heartbeat is a few hundred bytes; a larger append goes over HTTP.
pub const MAX_DATAGRAM: usize = 1400;

/// How long the heartbeats to a peer go over HTTP after a datagram to it went unanswered.
pub const HTTP_AFTER_SILENCE: Duration = Duration::from_secs(30);

/// How long the heartbeat server waits after its socket failed to receive, and how often it
/// logs such failures.
const RECEIVE_ERROR_PAUSE: Duration = Duration::from_millis(10);
const RECEIVE_ERROR_LOG_EVERY: Duration = Duration::from_secs(10);

/// Why a heartbeat datagram brought no trusted answer.
#[derive(Debug, thiserror::Error)]
pub enum DatagramError {
    #[error("cannot open a UDP socket to {peer}: {error}")]
    Socket {
        peer: SocketAddr,
        error: std::io::Error,
    },
    #[error("cannot send to UDP {peer}: {error}")]
    Send {
        peer: SocketAddr,
        error: std::io::Error,
    },
    #[error("cannot read the answer from UDP {peer}: {error}")]
    Receive {
        peer: SocketAddr,
        error: std::io::Error,
    },
    #[error("UDP {peer} did not answer within {after:?}")]
    TimedOut { peer: SocketAddr, after: Duration },
}

/// Why a received frame was not understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("{0} bytes, more than the {MAX_DATAGRAM} a heartbeat datagram may have")]
    TooLarge(usize),
    #[error("not a raftvip heartbeat frame")]
    NotAFrame,
    #[error("the {0} line is not text")]
    NotText(&'static str),
}

/// Why the heartbeat server refused a datagram.
#[derive(Debug, thiserror::Error)]
enum RefuseError {
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error(transparent)]
    Auth(#[from] VerifyRequestError),
}

/// A request frame's signature lines, and its body.
struct RequestFrame<'a> {
    from: &'a str,
    timestamp_ms: &'a str,
    nonce: &'a str,
    signature: &'a str,
    body: &'a [u8],
}

/// An answer frame's lines, and its body.
struct AnswerFrame<'a> {
    nonce: &'a str,
    signature: &'a str,
    body: &'a [u8],
}

fn request_frame(signature: &crate::auth::Signature, body: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(REQUEST_MAGIC.len() + 128 + body.len());
    frame.extend_from_slice(REQUEST_MAGIC);
    frame.extend_from_slice(
        format!(
            "\n{}\n{}\n{}\n{}\n",
            signature.from, signature.timestamp_ms, signature.nonce, signature.signature
        )
        .as_bytes(),
    );
    frame.extend_from_slice(body);
    frame
}

fn answer_frame(nonce: &str, signature: &str, body: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(ANSWER_MAGIC.len() + 100 + body.len());
    frame.extend_from_slice(ANSWER_MAGIC);
    frame.extend_from_slice(format!("\n{nonce}\n{signature}\n").as_bytes());
    frame.extend_from_slice(body);
    frame
}

/// Splits `frame` into `N` lines after `magic`, and the rest (the body).
fn lines<'a, const N: usize>(
    frame: &'a [u8],
    magic: &[u8],
    names: [&'static str; N],
) -> Result<([&'a str; N], &'a [u8]), FrameError> {
    if frame.len() > MAX_DATAGRAM {
        return Err(FrameError::TooLarge(frame.len()));
    }
    let mut rest = frame
        .strip_prefix(magic)
        .and_then(|r| r.strip_prefix(b"\n"))
        .ok_or(FrameError::NotAFrame)?;
    let mut found = [""; N];
    for (slot, name) in found.iter_mut().zip(names) {
        let end = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or(FrameError::NotAFrame)?;
        *slot = std::str::from_utf8(&rest[..end]).map_err(|_| FrameError::NotText(name))?;
        rest = &rest[end + 1..];
    }
    Ok((found, rest))
}

fn parse_request(frame: &[u8]) -> Result<RequestFrame<'_>, FrameError> {
    let names = ["from", "timestamp", "nonce", "signature"];
    let ([from, timestamp_ms, nonce, signature], body) = lines(frame, REQUEST_MAGIC, names)?;
    Ok(RequestFrame {
        from,
        timestamp_ms,
        nonce,
        signature,
        body,
    })
}

fn parse_answer(frame: &[u8]) -> Result<AnswerFrame<'_>, FrameError> {
    let ([nonce, signature], body) = lines(frame, ANSWER_MAGIC, ["nonce", "signature"])?;
    Ok(AnswerFrame {
        nonce,
        signature,
        body,
    })
}

/// Checks a request frame as the HTTP guard checks a request: signature, clock, nonce.
fn verify_request<'a>(
    auth: &Authenticator,
    frame: &'a [u8],
    now: SystemTime,
) -> Result<(SignedHeaders, &'a [u8]), RefuseError> {
    let request = parse_request(frame)?;
    let header = |name: &'static str| {
        match name {
            FROM_HEADER => Some(request.from),
            TIMESTAMP_HEADER => Some(request.timestamp_ms),
            NONCE_HEADER => Some(request.nonce),
            SIGNATURE_HEADER => Some(request.signature),
            _ => None,
        }
        .map(str::to_owned)
    };
    let signed = auth.verify(METHOD, APPEND_PATH, header, request.body, now)?;
    Ok((signed, request.body))
}

/// The leader's end: one UDP socket for a follower, opened at the first heartbeat.
pub struct HeartbeatLink {
    peer: SocketAddr,
    socket: Option<UdpSocket>,
    /// Heartbeats go over HTTP until then, after a datagram went unanswered.
    http_until: Option<Instant>,
    /// Why the last datagram went unanswered, until HTTP shows the peer is up (UDP failed)
    /// or the next datagram is tried.
    unanswered: Option<DatagramError>,
    answer: Box<[u8]>,
}

impl HeartbeatLink {
    /// A link to the peer listening at `address`, if it is `IP:PORT` (else HTTP only).
    pub fn new(address: &str) -> Option<Self> {
        Some(Self {
            peer: address.parse().ok()?,
            socket: None,
            http_until: None,
            unanswered: None,
            answer: vec![0; MAX_DATAGRAM + 1].into_boxed_slice(),
        })
    }

    /// Whether heartbeats go by datagram now, i.e. not within [`HTTP_AFTER_SILENCE`] of an
    /// unanswered one (checked before a heartbeat is serialised).
    pub fn datagrams_now(&mut self, now: Instant) -> bool {
        if self.http_until.is_some_and(|until| now < until) {
            return false;
        }
        if self.http_until.take().is_some() {
            self.unanswered = None;
        }
        true
    }

    /// After `error`: heartbeats to this peer go over HTTP for [`HTTP_AFTER_SILENCE`].
    pub fn fall_back(&mut self, to: NodeId, error: DatagramError, now: Instant) {
        tracing::debug!(peer = to, %error, "heartbeat datagram unanswered; next heartbeats by HTTP");
        self.http_until = Some(now + HTTP_AFTER_SILENCE);
        self.unanswered = Some(error);
    }

    /// An append went to this peer over HTTP and was answered. If a datagram had just gone
    /// unanswered, the peer is up and UDP is what failed: that datagram's error, once, to be
    /// counted and logged. (A peer that is down answers neither, and is not reported here.)
    pub fn http_answered(&mut self) -> Option<DatagramError> {
        self.unanswered.take()
    }

    /// Sends `body` (a serialised heartbeat) to node `to`, signed, and returns the body of its
    /// answer once one signed by `to` over this request arrives; other datagrams are ignored.
    pub async fn exchange(
        &mut self,
        auth: &Authenticator,
        to: NodeId,
        body: &[u8],
        timeout: Duration,
    ) -> Result<Vec<u8>, DatagramError> {
        let peer = self.peer;
        let socket = match &self.socket {
            Some(socket) => socket,
            None => self.socket.insert(
                open(peer)
                    .await
                    .map_err(|error| DatagramError::Socket { peer, error })?,
            ),
        };
        let signature = auth.sign(to, METHOD, APPEND_PATH, body, SystemTime::now());
        let frame = request_frame(&signature, body);
        let answer = &mut self.answer;
        let received = tokio::time::timeout(timeout, async {
            socket
                .send_to(&frame, peer)
                .await
                .map_err(|error| DatagramError::Send { peer, error })?;
            loop {
                let (length, _) = socket
                    .recv_from(answer)
                    .await
                    .map_err(|error| DatagramError::Receive { peer, error })?;
                if let Some(body) = trusted(auth, to, &signature.nonce, &answer[..length]) {
                    return Ok(body.to_vec());
                }
            }
        })
        .await;
        let outcome = received.unwrap_or(Err(DatagramError::TimedOut {
            peer,
            after: timeout,
        }));
        if outcome.is_err() {
            // Its late answers must not wait in the buffer for the next exchange to skip.
            self.socket = None;
        }
        outcome
    }
}

/// The body of `frame` if it is node `to`'s signed answer to the request with `nonce`.
fn trusted<'a>(auth: &Authenticator, to: NodeId, nonce: &str, frame: &'a [u8]) -> Option<&'a [u8]> {
    let answer = parse_answer(frame).ok()?;
    if answer.nonce != nonce {
        return None; // a late answer to an earlier heartbeat
    }
    auth.verify_response(to, nonce, 200, Some(answer.signature), answer.body)
        .ok()
        .map(|()| answer.body)
}

/// A UDP socket of the peer address's family. Not connected to the peer: a follower whose
/// `listen` is a wildcard answers from whichever address its routing picks, and the answer's
/// signature, not its source address, says who sent it.
async fn open(peer: SocketAddr) -> std::io::Result<UdpSocket> {
    let local: SocketAddr = match peer {
        SocketAddr::V4(_) => (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    UdpSocket::bind(local).await
}

/// The follower's end: answers heartbeat datagrams on `socket` (bound to the peer listen
/// address) until `stop`.
pub async fn serve(socket: UdpSocket, server: Arc<PeerServer>, stop: CancellationToken) {
    let mut buffer = vec![0; MAX_DATAGRAM + 1];
    let mut receive_errors = LogLimit::new(RECEIVE_ERROR_LOG_EVERY);
    loop {
        let (length, source) = tokio::select! {
            () = stop.cancelled() => return,
            received = socket.recv_from(&mut buffer) => match received {
                Ok(received) => received,
                Err(error) => {
                    // Not expected on a bound UDP socket; the pause keeps one that repeats
                    // from spinning this thread.
                    if let Some(held_back) = receive_errors.allow(std::time::Instant::now()) {
                        tracing::warn!(%error, held_back, "cannot receive heartbeat datagrams");
                    }
                    tokio::time::sleep(RECEIVE_ERROR_PAUSE).await;
                    continue;
                }
            },
        };
        let Some(answer) = answer(&server, &buffer[..length], source).await else {
            continue;
        };
        if let Err(error) = socket.send_to(&answer, source).await {
            tracing::debug!(%source, %error, "cannot answer a heartbeat datagram");
        }
    }
}

/// The signed answer frame to one received datagram, or `None` (refused or unreadable).
async fn answer(server: &PeerServer, frame: &[u8], source: SocketAddr) -> Option<Vec<u8>> {
    let (signed, body) = match verify_request(&server.auth, frame, SystemTime::now()) {
        Ok(verified) => verified,
        Err(error) => {
            server.refused(source, "heartbeat datagram", &error);
            return None;
        }
    };
    let rpc: AppendEntriesRequest = match serde_json::from_slice(body) {
        Ok(rpc) => rpc,
        Err(error) => {
            tracing::warn!(%source, peer = signed.from, %error, "signed heartbeat datagram is not an append; not answered");
            return None;
        }
    };
    let body = serde_json::to_vec(&server.append_answer(rpc).await)
        .expect("Raft answers always serialize");
    let signature = server.auth.sign_response(&signed, 200, &body);
    Some(answer_frame(&signed.nonce, &signature, &body))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::config::Secret;

    fn node(id: NodeId) -> Authenticator {
        let secret = Secret::new(b"0123456789abcdef0123456789abcdef".to_vec());
        Authenticator::new(secret, "lb", id)
    }

    fn signed_frame(from: &Authenticator, to: NodeId, method: &str, body: &[u8]) -> Vec<u8> {
        let signature = from.sign(to, method, APPEND_PATH, body, SystemTime::now());
        request_frame(&signature, body)
    }

    #[test]
    fn a_signed_heartbeat_is_accepted_once_by_the_node_it_was_signed_for() {
        let (leader, follower, other) = (node(1), node(2), node(3));
        let frame = signed_frame(&leader, 2, METHOD, b"{\"beat\":1}");
        let (signed, body) = verify_request(&follower, &frame, SystemTime::now()).expect("ok");
        assert_eq!((signed.from, body), (1, &b"{\"beat\":1}"[..]));

        let again = verify_request(&follower, &frame, SystemTime::now()).unwrap_err();
        assert!(
            matches!(again, RefuseError::Auth(VerifyRequestError::ReplayedNonce)),
            "{again}"
        );
        let elsewhere = verify_request(&other, &frame, SystemTime::now()).unwrap_err();
        assert!(matches!(
            elsewhere,
            RefuseError::Auth(VerifyRequestError::BadSignature)
        ));
    }

    #[test]
    fn a_tampered_heartbeat_or_an_http_request_sent_as_one_is_refused() {
        let (leader, follower) = (node(1), node(2));
        let mut frame = signed_frame(&leader, 2, METHOD, b"{\"commit\":1}");
        *frame.last_mut().unwrap() = b']';
        let tampered = verify_request(&follower, &frame, SystemTime::now()).unwrap_err();
        assert!(matches!(
            tampered,
            RefuseError::Auth(VerifyRequestError::BadSignature)
        ));

        let http = signed_frame(&leader, 2, "POST", b"{}");
        let replayed = verify_request(&follower, &http, SystemTime::now()).unwrap_err();
        assert!(matches!(
            replayed,
            RefuseError::Auth(VerifyRequestError::BadSignature)
        ));
    }

    #[test]
    fn frames_that_are_not_heartbeats_are_refused_before_any_hashing() {
        let follower = node(2);
        for (frame, want) in [
            (&b"GET / HTTP/1.1\r\n\r\n"[..], FrameError::NotAFrame),
            (&b"raftvip-heartbeat-v1\n1\n2\n"[..], FrameError::NotAFrame),
            (
                &b"raftvip-heartbeat-v1\n\xff\n1\nn\ns\n{}"[..],
                FrameError::NotText("from"),
            ),
            (
                &[b'x'; MAX_DATAGRAM + 1][..],
                FrameError::TooLarge(MAX_DATAGRAM + 1),
            ),
        ] {
            match verify_request(&follower, frame, SystemTime::now()) {
                Err(RefuseError::Frame(got)) => assert_eq!(got, want),
                other => panic!("{frame:?}: {other:?}"),
            }
        }
        let unsigned = b"raftvip-heartbeat-v1\n1\n2\n3\n4\n{}";
        let error = verify_request(&follower, unsigned, SystemTime::now()).unwrap_err();
        assert!(matches!(
            error,
            RefuseError::Auth(VerifyRequestError::MissingHeader(_))
        ));
    }

    #[test]
    fn only_the_answer_of_the_node_asked_to_this_request_is_trusted() {
        let (leader, follower) = (node(1), node(2));
        let frame = signed_frame(&leader, 2, METHOD, b"{}");
        let (signed, _) = verify_request(&follower, &frame, SystemTime::now()).unwrap();
        let body = b"{\"Ok\":\"Success\"}";
        let answer = answer_frame(
            &signed.nonce,
            &follower.sign_response(&signed, 200, body),
            body,
        );
        assert_eq!(trusted(&leader, 2, &signed.nonce, &answer), Some(&body[..]));
        assert_eq!(
            trusted(&leader, 3, &signed.nonce, &answer),
            None,
            "from node 3"
        );
        assert_eq!(
            trusted(&leader, 2, "another-nonce", &answer),
            None,
            "an older answer"
        );
        let forged = answer_frame(
            &signed.nonce,
            &node(3).sign_response(&signed, 200, body),
            body,
        );
        assert_eq!(
            trusted(&leader, 2, &signed.nonce, &forged),
            None,
            "signed by node 3"
        );
    }

    #[tokio::test]
    async fn an_unanswered_heartbeat_times_out_and_sends_the_next_ones_over_http() {
        let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let address = silent.local_addr().unwrap().to_string();
        let mut link = HeartbeatLink::new(&address).unwrap();
        let now = Instant::now();
        assert!(link.datagrams_now(now));
        assert!(fits_a_datagram(300));
        assert!(!fits_a_datagram(MAX_DATAGRAM), "too large for a datagram");

        let timeout = Duration::from_millis(30);
        let error = link
            .exchange(&node(1), 2, b"{}", timeout)
            .await
            .unwrap_err();
        assert!(matches!(error, DatagramError::TimedOut { .. }), "{error}");
        let mut sent = [0; MAX_DATAGRAM];
        let (length, _) = silent.recv_from(&mut sent).unwrap();
        assert!(
            parse_request(&sent[..length]).is_ok(),
            "a heartbeat frame was sent"
        );

        link.fall_back(2, error, now);
        assert!(!link.datagrams_now(now + HTTP_AFTER_SILENCE / 2));
        assert!(link.http_answered().is_some(), "HTTP answered: UDP failed");
        assert!(link.http_answered().is_none(), "reported once");
        assert!(link.datagrams_now(now + HTTP_AFTER_SILENCE));
    }

    #[test]
    fn a_peer_that_answers_neither_way_is_not_reported_once_datagrams_are_tried_again() {
        let mut link = HeartbeatLink::new("192.0.2.2:7480").unwrap();
        let now = Instant::now();
        let peer = "192.0.2.2:7480".parse().unwrap();
        let after = Duration::from_millis(25);
        link.fall_back(2, DatagramError::TimedOut { peer, after }, now);
        assert!(link.datagrams_now(now + HTTP_AFTER_SILENCE));
        assert!(link.http_answered().is_none());
    }

    #[test]
    fn an_address_that_is_not_ip_and_port_uses_http() {
        assert!(HeartbeatLink::new("lb2.example:7100").is_none());
    }

    proptest! {
        #[test]
        fn no_datagram_makes_the_parsers_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2000)) {
            let _ = verify_request(&node(2), &bytes, SystemTime::now());
            let _ = trusted(&node(1), 2, "n", &bytes);
        }

        #[test]
        fn any_signed_body_round_trips(body in proptest::collection::vec(any::<u8>(), 0..1000)) {
            let (leader, follower) = (node(1), node(2));
            let frame = signed_frame(&leader, 2, METHOD, &body);
            let (_, got) = verify_request(&follower, &frame, SystemTime::now()).unwrap();
            prop_assert_eq!(got, &body[..]);
        }
    }
}
