//! Authentication of peer requests: HMAC-SHA256 with the cluster's shared secret.
//!
//! Anyone on the segment can see and send traffic to the peer port. A forged vote or append
//! could elect a leader that should not exist, so every peer request carries a signature over
//! the cluster name, method, path, timestamp, a random nonce and the body. The receiver rejects
//! a bad signature, a timestamp more than [`MAX_CLOCK_SKEW`] away from its own clock, and any
//! nonce it has already accepted within that window (a replay). Nonces only need to be
//! remembered for twice the skew window: older requests fail the timestamp check anyway.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::config::Secret;

type HmacSha256 = Hmac<Sha256>;

pub const TIMESTAMP_HEADER: &str = "x-raftvip-timestamp";
pub const NONCE_HEADER: &str = "x-raftvip-nonce";
pub const SIGNATURE_HEADER: &str = "x-raftvip-signature";

/// How far a request's timestamp may be from the receiver's clock. NTP keeps LAN boxes within
/// milliseconds; 5 s tolerates a box whose NTP just started, and bounds the replay window.
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(5);

/// Nonce length: 128 random bits never collide by chance.
const NONCE_LEN: usize = 16;

/// Bound on remembered nonces. Only requests with a valid signature are remembered, so only
/// peers can fill it: 3 nodes × 2 RPCs × 100/s × 10 s is 6 000; this leaves wide room.
const MAX_REMEMBERED_NONCES: usize = 200_000;

/// Why a request was rejected. Every variant answers 401.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyRequestError {
    #[error("header {0} is missing or not valid")]
    MissingHeader(&'static str),
    #[error("timestamp is {skew_ms} ms away from this node's clock (limit {} ms): clocks out of sync, or a replay", MAX_CLOCK_SKEW.as_millis())]
    ClockSkew { skew_ms: u128 },
    #[error("signature does not match: wrong secret, another cluster, or a tampered request")]
    BadSignature,
    #[error("nonce was already used: a replayed request")]
    ReplayedNonce,
    #[error("too many requests in the replay window to remember their nonces")]
    NonceCacheFull,
}

/// The three headers a signed request carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    pub timestamp_ms: u64,
    pub nonce: String,
    pub signature: String,
}

impl Signature {
    pub fn headers(&self) -> [(&'static str, String); 3] {
        [
            (TIMESTAMP_HEADER, self.timestamp_ms.to_string()),
            (NONCE_HEADER, self.nonce.clone()),
            (SIGNATURE_HEADER, self.signature.clone()),
        ]
    }
}

/// Signs outgoing and verifies incoming requests for one cluster.
pub struct Authenticator {
    secret: Secret,
    cluster: String,
    /// Accepted nonces and when they may be forgotten.
    seen: Mutex<HashMap<String, SystemTime>>,
}

impl Authenticator {
    pub fn new(secret: Secret, cluster: &str) -> Self {
        Self {
            secret,
            cluster: cluster.to_owned(),
            seen: Mutex::new(HashMap::new()),
        }
    }

    fn mac(
        &self,
        method: &str,
        path: &str,
        timestamp_ms: u64,
        nonce: &str,
        body: &[u8],
    ) -> HmacSha256 {
        let mut mac =
            HmacSha256::new_from_slice(self.secret.as_bytes()).expect("HMAC takes any key length");
        // Length-free fields are separated by '\n', which none of them can contain.
        mac.update(
            format!(
                "raftvip-v1\n{}\n{method}\n{path}\n{timestamp_ms}\n{nonce}\n",
                self.cluster
            )
            .as_bytes(),
        );
        mac.update(body);
        mac
    }

    /// Signs a request about to be sent at `now`.
    pub fn sign(&self, method: &str, path: &str, body: &[u8], now: SystemTime) -> Signature {
        let timestamp_ms = unix_ms(now);
        let nonce = hex::encode(rand::random::<[u8; NONCE_LEN]>());
        let signature = hex::encode(
            self.mac(method, path, timestamp_ms, &nonce, body)
                .finalize()
                .into_bytes(),
        );
        Signature {
            timestamp_ms,
            nonce,
            signature,
        }
    }

    /// Verifies a received request; on success its nonce is remembered so it cannot be replayed.
    pub fn verify(
        &self,
        method: &str,
        path: &str,
        header: impl Fn(&'static str) -> Option<String>,
        body: &[u8],
        now: SystemTime,
    ) -> Result<(), VerifyRequestError> {
        let timestamp_ms: u64 = header(TIMESTAMP_HEADER)
            .and_then(|t| t.parse().ok())
            .ok_or(VerifyRequestError::MissingHeader(TIMESTAMP_HEADER))?;
        let nonce = header(NONCE_HEADER)
            .filter(|n| n.len() == 2 * NONCE_LEN && n.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or(VerifyRequestError::MissingHeader(NONCE_HEADER))?;
        let signature = header(SIGNATURE_HEADER)
            .and_then(|s| hex::decode(s).ok())
            .ok_or(VerifyRequestError::MissingHeader(SIGNATURE_HEADER))?;

        // Check the signature before the clock, so an unauthenticated sender learns nothing.
        self.mac(method, path, timestamp_ms, &nonce, body)
            .verify_slice(&signature)
            .map_err(|_| VerifyRequestError::BadSignature)?;

        let skew_ms = (i128::from(timestamp_ms) - i128::from(unix_ms(now))).unsigned_abs();
        if skew_ms > MAX_CLOCK_SKEW.as_millis() {
            return Err(VerifyRequestError::ClockSkew { skew_ms });
        }

        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.len() >= MAX_REMEMBERED_NONCES / 2 {
            seen.retain(|_, forget_at| *forget_at > now);
        }
        if seen.contains_key(&nonce) {
            return Err(VerifyRequestError::ReplayedNonce);
        }
        if seen.len() >= MAX_REMEMBERED_NONCES {
            return Err(VerifyRequestError::NonceCacheFull);
        }
        seen.insert(nonce, now + 2 * MAX_CLOCK_SKEW);
        Ok(())
    }
}

fn unix_ms(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(secret: &str, cluster: &str) -> Authenticator {
        Authenticator::new(Secret::new(secret.as_bytes().to_vec()), cluster)
    }

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn check(
        receiver: &Authenticator,
        sig: &Signature,
        path: &str,
        body: &[u8],
        now: SystemTime,
    ) -> Result<(), VerifyRequestError> {
        let headers = sig.headers();
        receiver.verify(
            "POST",
            path,
            |name| {
                headers
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| v.clone())
            },
            body,
            now,
        )
    }

    #[test]
    fn valid_request_is_accepted_once() {
        let (a, b) = (auth(SECRET, "lb"), auth(SECRET, "lb"));
        let now = SystemTime::now();
        let sig = a.sign("POST", "/raft/vote", b"{}", now);
        assert_eq!(check(&b, &sig, "/raft/vote", b"{}", now), Ok(()));
        assert_eq!(
            check(&b, &sig, "/raft/vote", b"{}", now),
            Err(VerifyRequestError::ReplayedNonce)
        );
    }

    #[test]
    fn wrong_secret_or_cluster_is_rejected() {
        let now = SystemTime::now();
        let sig = auth("another-secret-of-32-bytes-length", "lb").sign("POST", "/p", b"x", now);
        assert_eq!(
            check(&auth(SECRET, "lb"), &sig, "/p", b"x", now),
            Err(VerifyRequestError::BadSignature)
        );
        let sig = auth(SECRET, "other-cluster").sign("POST", "/p", b"x", now);
        assert_eq!(
            check(&auth(SECRET, "lb"), &sig, "/p", b"x", now),
            Err(VerifyRequestError::BadSignature)
        );
    }

    #[test]
    fn tampered_body_or_path_is_rejected() {
        let (a, b) = (auth(SECRET, "lb"), auth(SECRET, "lb"));
        let now = SystemTime::now();
        let sig = a.sign("POST", "/raft/vote", b"{\"term\":3}", now);
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
        let (a, b) = (auth(SECRET, "lb"), auth(SECRET, "lb"));
        let now = SystemTime::now();
        let old = a.sign("POST", "/p", b"", now - Duration::from_secs(6));
        assert!(matches!(
            check(&b, &old, "/p", b"", now),
            Err(VerifyRequestError::ClockSkew { skew_ms }) if skew_ms >= 6000
        ));
        let future = a.sign("POST", "/p", b"", now + Duration::from_secs(6));
        assert!(matches!(
            check(&b, &future, "/p", b"", now),
            Err(VerifyRequestError::ClockSkew { .. })
        ));
        let slightly_old = a.sign("POST", "/p", b"", now - Duration::from_secs(2));
        assert_eq!(check(&b, &slightly_old, "/p", b"", now), Ok(()));
    }

    #[test]
    fn missing_or_malformed_headers_are_rejected() {
        let b = auth(SECRET, "lb");
        let now = SystemTime::now();
        assert_eq!(
            b.verify("POST", "/p", |_| None, b"", now),
            Err(VerifyRequestError::MissingHeader(TIMESTAMP_HEADER))
        );
        let mut sig = auth(SECRET, "lb").sign("POST", "/p", b"", now);
        sig.nonce = "short".into();
        assert_eq!(
            check(&b, &sig, "/p", b"", now),
            Err(VerifyRequestError::MissingHeader(NONCE_HEADER))
        );
    }

    #[test]
    fn nonces_are_forgotten_after_the_replay_window() {
        let (a, b) = (auth(SECRET, "lb"), auth(SECRET, "lb"));
        let start = SystemTime::now();
        for i in 0..(MAX_REMEMBERED_NONCES / 2) as u64 {
            b.seen
                .lock()
                .unwrap()
                .insert(format!("{i:032x}"), start + Duration::from_secs(1));
        }
        let later = start + Duration::from_secs(2);
        let sig = a.sign("POST", "/p", b"", later);
        assert_eq!(check(&b, &sig, "/p", b"", later), Ok(()));
        assert_eq!(b.seen.lock().unwrap().len(), 1, "expired nonces pruned");
    }
}
