//! Authentication of peer requests and their answers: HMAC-SHA256 with the cluster's secret.
//!
//! Anyone on the segment can see and send traffic to the peer port. A forged vote or append
//! could elect a leader that should not exist, so every peer request carries a signature over
//! the cluster name, the sender's and the target's node ids, method, path, timestamp, a random
//! nonce and the body. Naming the target means a request captured on its way to node 2 is
//! worthless at node 3. The receiver rejects a bad signature, a timestamp more than
//! [`MAX_CLOCK_SKEW`] away from its own clock or from before this process started (its nonce
//! cache is new, so older requests could be replays), and any nonce it has already accepted
//! (a replay).
//!
//! Verification is split in two so the server can refuse most junk before it reads a body:
//! [`Authenticator::check_headers`] parses the headers, checks the clock and the nonce cache
//! (cheap, no hashing), and only then does [`Authenticator::check_body`] hash the body.
//!
//! Every answer to an accepted request is signed too, over the request's nonce, so an on-path
//! attacker cannot forge "vote granted" or "append ok": [`Authenticator::verify_response`].
//!
//! The nonce cache is per-request state, so it is pruned by age on every insert and gives its
//! memory back when it shrank (see [`NonceCache`]): its size follows request rate × window, not
//! the process's uptime.

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::clock::unix_ms;
use crate::config::Secret;
use crate::raft::NodeId;

type HmacSha256 = Hmac<Sha256>;

pub const FROM_HEADER: &str = "x-raftvip-from";
pub const TIMESTAMP_HEADER: &str = "x-raftvip-timestamp";
pub const NONCE_HEADER: &str = "x-raftvip-nonce";
pub const SIGNATURE_HEADER: &str = "x-raftvip-signature";

/// How far a request's timestamp may be from the receiver's clock. NTP keeps LAN boxes within
/// milliseconds; 5 s tolerates a box whose NTP just started, and bounds the replay window.
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(5);

/// Nonce length: 128 random bits never collide by chance.
const NONCE_LEN: usize = 16;

/// Bound on remembered nonces. Only requests with a valid signature are remembered, so only
/// peers can fill it, and entries leave after 2 × [`MAX_CLOCK_SKEW`]: a follower at
/// `heartbeat_ms = 5` from a leader of 4 peers remembers 4 × 200/s × 10 s = 8 000. The bound
/// leaves wide room and caps memory at a few MB even if a peer misbehaves.
pub const MAX_REMEMBERED_NONCES: usize = 100_000;

/// The nonce cache gives memory back once its capacity exceeds this many times its length.
const SHRINK_FACTOR: usize = 4;
/// ... but never bothers below this capacity (a few KB).
const SHRINK_MIN_CAPACITY: usize = 256;

/// Why a request was rejected. Every variant answers the same 401; the reason is only logged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyRequestError {
    #[error("header {0} is missing or not valid")]
    MissingHeader(&'static str),
    #[error("timestamp is {skew_ms} ms away from this node's clock (limit {} ms): clocks out of sync, or a replay", MAX_CLOCK_SKEW.as_millis())]
    ClockSkew { skew_ms: u128 },
    #[error("signed {early_ms} ms before this process started: a replay of a request to the previous run, or the sender's clock is behind")]
    SignedBeforeStart { early_ms: u64 },
    #[error("signature does not match: wrong secret, another cluster, another target node, or a tampered request")]
    BadSignature,
    #[error("nonce was already used: a replayed request")]
    ReplayedNonce,
    #[error("too many requests in the replay window to remember their nonces")]
    NonceCacheFull,
}

/// Why an answer from a peer was not trusted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyResponseError {
    #[error("the answer carries no signature")]
    Unsigned,
    #[error("the answer's signature does not match (not from the node we asked, or tampered on the way)")]
    BadSignature,
}

/// The headers a signed request carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    pub from: NodeId,
    pub timestamp_ms: u64,
    pub nonce: String,
    pub signature: String,
}

impl Signature {
    pub fn headers(&self) -> [(&'static str, String); 4] {
        [
            (FROM_HEADER, self.from.to_string()),
            (TIMESTAMP_HEADER, self.timestamp_ms.to_string()),
            (NONCE_HEADER, self.nonce.clone()),
            (SIGNATURE_HEADER, self.signature.clone()),
        ]
    }
}

/// A request whose headers passed the cheap checks; its body is not verified yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedHeaders {
    pub from: NodeId,
    timestamp_ms: u64,
    /// The nonce as sent (hex), needed to sign the answer.
    pub nonce: String,
    nonce_value: u128,
    signature: Vec<u8>,
}

/// Accepted nonces, remembered until a replay would fail the clock check anyway.
///
/// A time-ordered queue plus a set: pruning pops expired entries off the front on every
/// insert, so the size follows rate × window; a `HashSet` keeps its peak capacity, so both are
/// shrunk once they hold far less than they could.
#[derive(Default)]
pub struct NonceCache {
    order: VecDeque<(u64, u128)>,
    seen: HashSet<u128>,
}

impl NonceCache {
    /// Forgets the nonces whose forget-time (ms since the epoch) has passed.
    fn prune(&mut self, now_ms: u64) {
        while let Some(&(forget_at, nonce)) = self.order.front() {
            if forget_at > now_ms {
                break;
            }
            self.order.pop_front();
            self.seen.remove(&nonce);
        }
        if self.capacity() > SHRINK_MIN_CAPACITY && self.capacity() > SHRINK_FACTOR * self.len() {
            self.seen.shrink_to_fit();
            self.order.shrink_to_fit();
        }
    }

    fn contains(&self, nonce: u128) -> bool {
        self.seen.contains(&nonce)
    }

    /// Remembers `nonce` until `forget_at_ms`.
    fn insert(&mut self, nonce: u128, forget_at_ms: u64) -> Result<(), VerifyRequestError> {
        if self.seen.contains(&nonce) {
            return Err(VerifyRequestError::ReplayedNonce);
        }
        if self.seen.len() >= MAX_REMEMBERED_NONCES {
            return Err(VerifyRequestError::NonceCacheFull);
        }
        self.seen.insert(nonce);
        self.order.push_back((forget_at_ms, nonce));
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    /// Entries the cache has room for without growing: what it costs in memory.
    pub fn capacity(&self) -> usize {
        self.seen.capacity().max(self.order.capacity())
    }
}

/// Signs outgoing and verifies incoming requests (and answers) for one node of one cluster.
pub struct Authenticator {
    /// HMAC-SHA256 keyed with the cluster secret, cloned for every MAC: keying hashes the
    /// secret's padded blocks, which the clone does not repeat.
    keyed: HmacSha256,
    cluster: String,
    node_id: NodeId,
    /// Requests signed before this (ms since the epoch) are refused: the nonces of the
    /// previous run are gone, so they could be replays.
    started_ms: u64,
    nonces: Mutex<NonceCache>,
}

impl Authenticator {
    /// `node_id` is the id this process signs as and accepts requests for.
    pub fn new(secret: Secret, cluster: &str, node_id: NodeId) -> Self {
        Self {
            keyed: HmacSha256::new_from_slice(secret.as_bytes())
                .expect("HMAC takes any key length"),
            cluster: cluster.to_owned(),
            node_id,
            started_ms: unix_ms(SystemTime::now()),
            nonces: Mutex::new(NonceCache::default()),
        }
    }

    /// Accept requests signed from `started` on: the daemon passes the moment before it bound
    /// its listener, since peers' requests may wait in the listen backlog while it starts.
    pub fn accepting_since(mut self, started: SystemTime) -> Self {
        self.started_ms = unix_ms(started);
        self
    }

    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// Nonces remembered at `now` (expired ones are pruned first), for the metrics.
    pub fn remembered_nonces(&self, now: SystemTime) -> usize {
        let mut nonces = self.lock_nonces();
        nonces.prune(unix_ms(now));
        nonces.len()
    }

    fn lock_nonces(&self) -> std::sync::MutexGuard<'_, NonceCache> {
        crate::sync::lock(&self.nonces)
    }

    fn key(&self) -> HmacSha256 {
        self.keyed.clone()
    }

    #[allow(clippy::too_many_arguments)]
    fn request_mac(
        &self,
        from: NodeId,
        to: NodeId,
        method: &str,
        path: &str,
        timestamp_ms: u64,
        nonce: &str,
        body: &[u8],
    ) -> HmacSha256 {
        let mut mac = self.key();
        // Length-free fields are separated by '\n', which none of them can contain.
        mac.update(
            format!(
                "raftvip-v2\n{}\n{from}\n{to}\n{method}\n{path}\n{timestamp_ms}\n{nonce}\n",
                self.cluster
            )
            .as_bytes(),
        );
        mac.update(body);
        mac
    }

    fn response_mac(
        &self,
        from: NodeId,
        to: NodeId,
        nonce: &str,
        status: u16,
        body: &[u8],
    ) -> HmacSha256 {
        let mut mac = self.key();
        mac.update(
            format!(
                "raftvip-v2-answer\n{}\n{from}\n{to}\n{nonce}\n{status}\n",
                self.cluster
            )
            .as_bytes(),
        );
        mac.update(body);
        mac
    }

    /// Signs a request to node `to`, about to be sent at `now`.
    pub fn sign(
        &self,
        to: NodeId,
        method: &str,
        path: &str,
        body: &[u8],
        now: SystemTime,
    ) -> Signature {
        let timestamp_ms = unix_ms(now);
        let nonce = hex::encode(rand::random::<[u8; NONCE_LEN]>());
        let signature = hex::encode(
            self.request_mac(self.node_id, to, method, path, timestamp_ms, &nonce, body)
                .finalize()
                .into_bytes(),
        );
        Signature {
            from: self.node_id,
            timestamp_ms,
            nonce,
            signature,
        }
    }

    /// The cheap checks, before the body is read: headers present and well-formed, timestamp
    /// within the skew and not from before this process started, nonce not seen before.
    pub fn check_headers(
        &self,
        header: impl Fn(&'static str) -> Option<String>,
        now: SystemTime,
    ) -> Result<SignedHeaders, VerifyRequestError> {
        let from: NodeId = header(FROM_HEADER)
            .and_then(|t| t.parse().ok())
            .ok_or(VerifyRequestError::MissingHeader(FROM_HEADER))?;
        let timestamp_ms: u64 = header(TIMESTAMP_HEADER)
            .and_then(|t| t.parse().ok())
            .ok_or(VerifyRequestError::MissingHeader(TIMESTAMP_HEADER))?;
        let nonce = header(NONCE_HEADER)
            .filter(|n| n.len() == 2 * NONCE_LEN && is_lower_hex(n))
            .ok_or(VerifyRequestError::MissingHeader(NONCE_HEADER))?;
        let nonce_value = u128::from_str_radix(&nonce, 16)
            .map_err(|_| VerifyRequestError::MissingHeader(NONCE_HEADER))?;
        let signature = header(SIGNATURE_HEADER)
            .filter(|s| s.len() == 64 && is_lower_hex(s))
            .and_then(|s| hex::decode(s).ok())
            .ok_or(VerifyRequestError::MissingHeader(SIGNATURE_HEADER))?;

        let now_ms = unix_ms(now);
        let skew_ms = (i128::from(timestamp_ms) - i128::from(now_ms)).unsigned_abs();
        if skew_ms > MAX_CLOCK_SKEW.as_millis() {
            return Err(VerifyRequestError::ClockSkew { skew_ms });
        }
        if timestamp_ms < self.started_ms {
            return Err(VerifyRequestError::SignedBeforeStart {
                early_ms: self.started_ms - timestamp_ms,
            });
        }
        if self.lock_nonces().contains(nonce_value) {
            return Err(VerifyRequestError::ReplayedNonce);
        }
        Ok(SignedHeaders {
            from,
            timestamp_ms,
            nonce,
            nonce_value,
            signature,
        })
    }

    /// Hashes the body; on success the nonce is remembered so the request cannot be replayed.
    pub fn check_body(
        &self,
        signed: &SignedHeaders,
        method: &str,
        path: &str,
        body: &[u8],
        now: SystemTime,
    ) -> Result<(), VerifyRequestError> {
        self.request_mac(
            signed.from,
            self.node_id,
            method,
            path,
            signed.timestamp_ms,
            &signed.nonce,
            body,
        )
        .verify_slice(&signed.signature)
        .map_err(|_| VerifyRequestError::BadSignature)?;
        // A replay fails the clock check once now > timestamp + skew; the timestamp itself
        // was at most one skew ahead of now.
        let now_ms = unix_ms(now);
        let forget_at = now_ms.saturating_add(2 * MAX_CLOCK_SKEW.as_millis() as u64);
        let mut nonces = self.lock_nonces();
        nonces.prune(now_ms);
        nonces.insert(signed.nonce_value, forget_at)
    }

    /// Both checks at once, for a request whose body is already at hand.
    pub fn verify(
        &self,
        method: &str,
        path: &str,
        header: impl Fn(&'static str) -> Option<String>,
        body: &[u8],
        now: SystemTime,
    ) -> Result<SignedHeaders, VerifyRequestError> {
        let signed = self.check_headers(header, now)?;
        self.check_body(&signed, method, path, body, now)?;
        Ok(signed)
    }

    /// The signature header of this node's answer to an accepted request.
    pub fn sign_response(&self, request: &SignedHeaders, status: u16, body: &[u8]) -> String {
        hex::encode(
            self.response_mac(self.node_id, request.from, &request.nonce, status, body)
                .finalize()
                .into_bytes(),
        )
    }

    /// Checks that an answer came from node `from`, for our request with `nonce`.
    pub fn verify_response(
        &self,
        from: NodeId,
        nonce: &str,
        status: u16,
        signature: Option<&str>,
        body: &[u8],
    ) -> Result<(), VerifyResponseError> {
        let signature = signature
            .and_then(|s| hex::decode(s).ok())
            .ok_or(VerifyResponseError::Unsigned)?;
        self.response_mac(from, self.node_id, nonce, status, body)
            .verify_slice(&signature)
            .map_err(|_| VerifyResponseError::BadSignature)
    }
}

/// Hex as [`hex::encode`] writes it: one spelling per value, so no byte of a signed header
/// can change without changing what it means.
fn is_lower_hex(text: &str) -> bool {
    text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn auth(secret: &str, cluster: &str, id: NodeId) -> Authenticator {
        Authenticator::new(Secret::new(secret.as_bytes().to_vec()), cluster, id)
    }

    /// Node 1 and node 2 of cluster "lb".
    fn pair() -> (Authenticator, Authenticator) {
        (auth(SECRET, "lb", 1), auth(SECRET, "lb", 2))
    }

    fn lookup<'a>(
        headers: &'a [(&'static str, String)],
    ) -> impl Fn(&'static str) -> Option<String> + 'a {
        |name| {
            headers
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.clone())
        }
    }

    fn check(
        receiver: &Authenticator,
        sig: &Signature,
        path: &str,
        body: &[u8],
        now: SystemTime,
    ) -> Result<(), VerifyRequestError> {
        let headers = sig.headers();
        receiver
            .verify("POST", path, lookup(&headers), body, now)
            .map(|_| ())
    }

    #[test]
    fn valid_request_is_accepted_once() {
        let (a, b) = pair();
        let now = SystemTime::now();
        let sig = a.sign(2, "POST", "/raft/vote", b"{}", now);
        assert_eq!(check(&b, &sig, "/raft/vote", b"{}", now), Ok(()));
        assert_eq!(
            check(&b, &sig, "/raft/vote", b"{}", now),
            Err(VerifyRequestError::ReplayedNonce)
        );
    }

    #[test]
    fn wrong_secret_or_cluster_is_rejected() {
        // The receiver exists before the request is signed, as in a running cluster (a
        // request signed before the receiver started is refused for that reason instead).
        let receiver = auth(SECRET, "lb", 2);
        let now = SystemTime::now();
        let sig =
            auth("another-secret-of-32-bytes-length", "lb", 1).sign(2, "POST", "/p", b"x", now);
        assert_eq!(
            check(&receiver, &sig, "/p", b"x", now),
            Err(VerifyRequestError::BadSignature)
        );
        let sig = auth(SECRET, "other-cluster", 1).sign(2, "POST", "/p", b"x", now);
        assert_eq!(
            check(&receiver, &sig, "/p", b"x", now),
            Err(VerifyRequestError::BadSignature)
        );
    }

    #[test]
    fn a_request_for_one_node_is_refused_by_another() {
        let (a, _) = pair();
        let c = auth(SECRET, "lb", 3);
        let now = SystemTime::now();
        let sig = a.sign(2, "POST", "/raft/vote", b"{}", now);
        assert_eq!(
            check(&c, &sig, "/raft/vote", b"{}", now),
            Err(VerifyRequestError::BadSignature)
        );
    }

    #[test]
    fn a_request_claiming_another_sender_is_refused() {
        let (a, b) = pair();
        let now = SystemTime::now();
        let mut sig = a.sign(2, "POST", "/raft/vote", b"{}", now);
        sig.from = 3;
        assert_eq!(
            check(&b, &sig, "/raft/vote", b"{}", now),
            Err(VerifyRequestError::BadSignature)
        );
    }

    #[test]
    fn tampered_body_or_path_is_rejected() {
        let (a, b) = pair();
        let now = SystemTime::now();
        let sig = a.sign(2, "POST", "/raft/vote", b"{\"term\":3}", now);
        assert_eq!(
            check(&b, &sig, "/raft/vote", b"{\"term\":4}", now),
            Err(VerifyRequestError::BadSignature)
        );
        assert_eq!(
            check(&b, &sig, "/raft/append", b"{\"term\":3}", now),
            Err(VerifyRequestError::BadSignature)
        );
    }

    #[test]
    fn stale_or_future_timestamp_is_rejected() {
        let (a, mut b) = pair();
        let now = SystemTime::now();
        b.started_ms = 0;
        let old = a.sign(2, "POST", "/p", b"", now - Duration::from_secs(6));
        assert!(matches!(
            check(&b, &old, "/p", b"", now),
            Err(VerifyRequestError::ClockSkew { skew_ms }) if skew_ms >= 6000
        ));
        let future = a.sign(2, "POST", "/p", b"", now + Duration::from_secs(6));
        assert!(matches!(
            check(&b, &future, "/p", b"", now),
            Err(VerifyRequestError::ClockSkew { .. })
        ));
        let slightly_old = a.sign(2, "POST", "/p", b"", now - Duration::from_secs(2));
        assert_eq!(check(&b, &slightly_old, "/p", b"", now), Ok(()));
    }

    #[test]
    fn a_request_signed_before_the_receiver_started_is_refused() {
        let (a, _) = pair();
        let signed_at = SystemTime::now() - Duration::from_secs(1);
        let sig = a.sign(2, "POST", "/p", b"", signed_at);
        // The receiver (re)started after the request was signed: its nonce cache is empty.
        let restarted = auth(SECRET, "lb", 2);
        assert!(matches!(
            check(&restarted, &sig, "/p", b"", SystemTime::now()),
            Err(VerifyRequestError::SignedBeforeStart { early_ms }) if early_ms >= 1000
        ));
    }

    #[test]
    fn missing_or_malformed_headers_are_rejected() {
        let (a, b) = pair();
        let now = SystemTime::now();
        assert_eq!(
            b.verify("POST", "/p", |_| None, b"", now),
            Err(VerifyRequestError::MissingHeader(FROM_HEADER))
        );
        let mut sig = a.sign(2, "POST", "/p", b"", now);
        sig.nonce = "short".into();
        assert_eq!(
            check(&b, &sig, "/p", b"", now),
            Err(VerifyRequestError::MissingHeader(NONCE_HEADER))
        );
    }

    #[test]
    fn replays_are_refused_from_the_headers_alone() {
        let (a, b) = pair();
        let now = SystemTime::now();
        let sig = a.sign(2, "POST", "/p", b"body", now);
        assert_eq!(check(&b, &sig, "/p", b"body", now), Ok(()));
        let headers = sig.headers();
        assert_eq!(
            b.check_headers(lookup(&headers), now),
            Err(VerifyRequestError::ReplayedNonce)
        );
    }

    #[test]
    fn answers_are_bound_to_the_request_and_the_node_asked() {
        let (a, b) = pair();
        let now = SystemTime::now();
        let sig = a.sign(2, "POST", "/raft/vote", b"{}", now);
        let headers = sig.headers();
        let accepted = b
            .verify("POST", "/raft/vote", lookup(&headers), b"{}", now)
            .unwrap();
        let answer = br#"{"Ok":{"vote_granted":false}}"#;
        let signature = b.sign_response(&accepted, 200, answer);
        assert_eq!(
            a.verify_response(2, &sig.nonce, 200, Some(&signature), answer),
            Ok(())
        );
        let forged = br#"{"Ok":{"vote_granted":true}}"#;
        assert_eq!(
            a.verify_response(2, &sig.nonce, 200, Some(&signature), forged),
            Err(VerifyResponseError::BadSignature)
        );
        assert_eq!(
            a.verify_response(3, &sig.nonce, 200, Some(&signature), answer),
            Err(VerifyResponseError::BadSignature),
            "an answer from node 2 does not pass for node 3's"
        );
        let other = a.sign(2, "POST", "/raft/vote", b"{}", now);
        assert_eq!(
            a.verify_response(2, &other.nonce, 200, Some(&signature), answer),
            Err(VerifyResponseError::BadSignature),
            "an old answer does not pass for a new request's"
        );
        assert_eq!(
            a.verify_response(2, &sig.nonce, 500, Some(&signature), answer),
            Err(VerifyResponseError::BadSignature)
        );
        assert_eq!(
            a.verify_response(2, &sig.nonce, 200, None, answer),
            Err(VerifyResponseError::Unsigned)
        );
    }

    /// Issue 14: under a simulated clock, the cache holds at most rate × window entries and
    /// gives memory back when the rate drops, however long it runs.
    #[test]
    fn nonce_cache_size_follows_rate_times_window_not_uptime() {
        let mut cache = NonceCache::default();
        let window_ms = 2 * MAX_CLOCK_SKEW.as_millis() as u64;
        let mut nonce = 0u128;
        // An hour at 200 requests a second (heartbeat_ms = 5), one every 5 ms.
        let (start, step) = (1_000_000u64, 5u64);
        let mut now = start;
        while now < start + 3_600_000 {
            cache.prune(now);
            nonce += 1;
            cache.insert(nonce, now + window_ms).unwrap();
            assert!(
                cache.len() as u64 <= window_ms / step + 1,
                "{} at {now}",
                cache.len()
            );
            now += step;
        }
        let busy_capacity = cache.capacity();
        assert!(busy_capacity <= 8 * (window_ms / step) as usize);
        // The rate drops to one a second: the cache shrinks and gives its capacity back.
        for _ in 0..60 {
            now += 1000;
            cache.prune(now);
            nonce += 1;
            cache.insert(nonce, now + window_ms).unwrap();
        }
        assert!(cache.len() as u64 <= window_ms / 1000 + 1);
        assert!(
            cache.capacity() <= SHRINK_MIN_CAPACITY * 2,
            "capacity {} after shrinking from {busy_capacity}",
            cache.capacity()
        );
    }

    /// Issue 7: the cache stays bounded when fed 100,000 distinct nonces at once.
    #[test]
    fn nonce_cache_is_bounded_against_a_flood_of_distinct_nonces() {
        let mut cache = NonceCache::default();
        let mut refused = 0;
        for n in 0..(MAX_REMEMBERED_NONCES as u128 + 100_000) {
            cache.prune(1_000);
            if cache.insert(n, 20_000).is_err() {
                refused += 1;
            }
        }
        assert_eq!(cache.len(), MAX_REMEMBERED_NONCES);
        assert_eq!(refused, 100_000);
        cache.prune(20_000);
        assert!(cache.is_empty());
    }

    #[test]
    fn accepted_requests_are_forgotten_after_the_replay_window() {
        let (a, b) = pair();
        let start = SystemTime::now();
        for i in 0..100 {
            let at = start + Duration::from_millis(i * 10);
            assert_eq!(
                check(&b, &a.sign(2, "POST", "/p", b"", at), "/p", b"", at),
                Ok(())
            );
        }
        assert_eq!(b.remembered_nonces(start), 100);
        let later = start + 2 * MAX_CLOCK_SKEW + Duration::from_secs(1);
        assert_eq!(
            check(&b, &a.sign(2, "POST", "/p", b"", later), "/p", b"", later),
            Ok(())
        );
        assert_eq!(b.remembered_nonces(later), 1, "expired nonces pruned");
    }

    const HEADER_NAMES: [&str; 4] = [
        FROM_HEADER,
        TIMESTAMP_HEADER,
        NONCE_HEADER,
        SIGNATURE_HEADER,
    ];

    proptest! {
        /// Arbitrary header values and bodies never panic verification and never pass it.
        #[test]
        fn arbitrary_requests_never_panic_or_pass(
            values in proptest::collection::vec(proptest::option::of(".{0,80}"), 4),
            body in proptest::collection::vec(any::<u8>(), 0..256),
            path in "/[a-z/]{0,20}",
        ) {
            let (_, b) = pair();
            let header = |name: &'static str| {
                HEADER_NAMES.iter().position(|n| *n == name).and_then(|i| values[i].clone())
            };
            prop_assert!(b.verify("POST", &path, header, &body, SystemTime::now()).is_err());
        }

        /// A signed request verifies; any single-byte change to its headers or body does not.
        #[test]
        fn any_single_byte_change_is_refused(
            body in proptest::collection::vec(any::<u8>(), 1..256),
            which in 0usize..5,
            position in any::<prop::sample::Index>(),
            flip in 1u8..=255,
        ) {
            let (a, _) = pair();
            let now = SystemTime::now();
            let sig = a.sign(2, "POST", "/raft/append", &body, now);
            let mut headers: Vec<(&'static str, Vec<u8>)> = sig
                .headers()
                .iter()
                .map(|(n, v)| (*n, v.clone().into_bytes()))
                .collect();
            let mut body_changed = body.clone();
            let target = if which < 4 { &mut headers[which].1 } else { &mut body_changed };
            let i = position.index(target.len());
            target[i] ^= flip;
            let header = |name: &'static str| {
                headers
                    .iter()
                    .find(|(n, _)| *n == name)
                    .and_then(|(_, v)| String::from_utf8(v.clone()).ok())
            };
            let mut fresh = auth(SECRET, "lb", 2);
            fresh.started_ms = 0;
            prop_assert!(fresh
                .verify("POST", "/raft/append", header, &body_changed, now)
                .is_err());
            let untouched = sig.headers();
            prop_assert!(fresh
                .verify("POST", "/raft/append", lookup(&untouched), &body, now)
                .is_ok());
        }
    }
}
