//! The server side of the peer wire: one short handler per signed route, behind
//! the guard (`super::guard::authenticate`).
//!
//! Raft's RPCs are handed to openraft and its `Result` is answered as JSON, so a remote Raft
//! error round-trips to the caller's [`super::network`]. raftvip's own calls ask the running
//! node through [`LocalNode`]: whether it may lead (handover), whether it would vote
//! (pre-vote, vote gate), who its peers are (maintenance forwarded to the leader), whether a
//! successor's "I hold the VIPs" made it release (planned overlap), a transfer
//! ([`super::transfer`]), and the membership changes of a reload (`crate::membership`).

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Extension, State};
use axum::http::StatusCode;
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use openraft::ServerState;

use super::client::PeerClient;
use super::guard::{authenticate, Signer, REJECT_LOG_EVERY};
use super::reject_log::RejectLog;
use super::wire::{
    ElectRequest, HandingOver, HeldRequest, MaintenanceRequest, MembersRequest, MembershipView,
    PeerAnswer, PrevoteRequest, RemovedNotice, TransferRequest, VoteMessage, APPEND_PATH,
    CAN_LEAD_PATH, ELECT_PATH, HELD_PATH, MAINTENANCE_PATH, MEMBERSHIP_PATH, MEMBERS_PATH,
    PREVOTE_PATH, REMOVED_PATH, SNAPSHOT_PATH, TRANSFER_PATH, VOTE_PATH,
};
use super::wire::{ReloadOutcome, ReloadRequest, RELOAD_PATH};
use super::Contacts;
use crate::auth::Authenticator;
use crate::raft::typ::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, LogId, Raft, RaftError,
    VoteRequest,
};
use crate::raft::{NodeId, Request as RaftRequest};

/// Timeout of a maintenance request forwarded to the leader.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(2);
/// A handover's second election waits this long past the voters' lease, so that it is over.
const LEASE_SLACK: Duration = Duration::from_millis(5);
/// Longest a handover's successor waits for its log to reach the leader's before it stands
/// (a LAN replicates an entry in about a millisecond; the leader waits 200 ms for the answer).
const HANDOVER_CATCH_UP: Duration = Duration::from_millis(50);

/// A future a [`LocalNode`] returns (the trait is used as `dyn`).
pub type NodeFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// What the peer handlers need from the running node beyond Raft itself.
pub trait LocalNode: Send + Sync + 'static {
    /// Ok if this node may lead now (healthy, not in maintenance, not a witness, not stopping).
    fn can_lead(&self) -> Result<(), String>;
    /// Ok if this node would vote for `candidate`, whose log ends at `candidate_last_log`: it
    /// has no live leader, no other election is under way, and its own log is not ahead (see
    /// `prevote`).
    fn grant_prevote(
        &self,
        candidate: NodeId,
        candidate_last_log: Option<LogId>,
    ) -> Result<(), String>;
    /// The address of a peer, for forwarding writes to the leader.
    fn peer_address(&self, id: NodeId) -> Option<String>;
    /// Ok if this node may grant a Raft vote now (see `raft::vote_gate`).
    fn grant_vote(&self) -> Result<(), String> {
        Ok(())
    }
    /// Makes the membership the `[[peer]]` list of a reload (see `crate::membership`); answers
    /// the membership after the change, or why it was refused.
    fn change_members(&self, request: MembersRequest)
        -> NodeFuture<Result<MembershipView, String>>;
    /// The leader removed this node from the cluster.
    fn removed(&self, notice: RemovedNotice);
    /// A leader handing over, from `old_holder`, asked this node to take over (and it may):
    /// the overlap with the old holder that follows is agreed.
    fn asked_to_take_over(&self, _old_holder: IpAddr) {}
    /// Peer `from` holds the VIPs now: if this node holds them in a planned handover, it
    /// releases; completes with true once released, false if it held nothing to release.
    fn successor_holds(&self, _from: NodeId) -> NodeFuture<bool> {
        Box::pin(std::future::ready(false))
    }
    /// This leader hands leadership to `to` (checked: it can lead); completes with the new
    /// leader once `to` leads (or, if `or_any`, any other node), or with why not.
    fn transfer(&self, to: NodeId, _or_any: bool) -> NodeFuture<Result<NodeId, String>> {
        Box::pin(std::future::ready(Err(format!(
            "this node cannot transfer leadership (to node {to})"
        ))))
    }
    /// Re-reads the config file `path` (which must be this node's own) and applies it;
    /// answers once a changed `[[peer]]` list is the membership (or why not), or after a bound.
    fn reload(&self, path: &str) -> NodeFuture<ReloadOutcome>;
}

/// Everything the signed routes share.
pub struct PeerServer {
    pub(super) raft: Raft,
    pub(super) auth: Arc<Authenticator>,
    pub(super) client: PeerClient,
    pub(super) node: Arc<dyn LocalNode>,
    contacts: Arc<Contacts>,
    /// Rejected requests, shared with the status document.
    pub(super) rejected: Arc<AtomicU64>,
    pub(super) reject_log: Mutex<RejectLog>,
    /// KiB of request bodies larger than a small request that are being read before their
    /// signature can be checked (see `guard`).
    pub(super) unverified_bodies: tokio::sync::Semaphore,
}

impl PeerServer {
    pub fn new(
        raft: Raft,
        auth: Arc<Authenticator>,
        client: PeerClient,
        node: Arc<dyn LocalNode>,
        contacts: Arc<Contacts>,
        rejected: Arc<AtomicU64>,
    ) -> Self {
        Self {
            raft,
            auth,
            client,
            node,
            contacts,
            rejected,
            reject_log: Mutex::new(RejectLog::new(REJECT_LOG_EVERY)),
            unverified_bodies: tokio::sync::Semaphore::new(super::guard::UNVERIFIED_BODY_KIB),
        }
    }

    /// Raft's answer to an append, by HTTP or by datagram ([`super::datagram`]).
    pub(super) async fn append_answer(
        &self,
        rpc: AppendEntriesRequest,
    ) -> Result<AppendEntriesResponse, RaftError> {
        if let Some(leader) = rpc.vote.leader_id().voted_for() {
            self.contacts.touch(leader);
        }
        let answer = self.raft.append_entries(rpc).await;
        // A stale leader (lower term) is answered HigherVote: that is no sign of a live leader.
        if matches!(&answer, Ok(r) if !matches!(r, AppendEntriesResponse::HigherVote(_))) {
            self.contacts.touch_leader();
        }
        answer
    }

    /// Entries in each table of per-request state the peer side keeps, for the metrics.
    pub fn table_sizes(&self) -> Vec<(&'static str, usize)> {
        vec![
            ("nonces", self.auth.remembered_nonces(SystemTime::now())),
            (
                "reject_log",
                crate::sync::lock(&self.reject_log).len_at(Instant::now()),
            ),
            ("contacts", self.contacts.len()),
        ]
    }
}

/// The signed routes: Raft's RPCs and raftvip's own peer calls.
pub fn router(state: Arc<PeerServer>) -> Router {
    Router::new()
        .route(APPEND_PATH, post(append))
        .route(VOTE_PATH, post(vote))
        .route(SNAPSHOT_PATH, post(snapshot))
        .route(ELECT_PATH, post(elect))
        .route(PREVOTE_PATH, post(prevote))
        .route(MAINTENANCE_PATH, post(maintenance))
        .route(MEMBERS_PATH, post(members))
        .route(MEMBERSHIP_PATH, post(membership))
        .route(REMOVED_PATH, post(removed))
        .route(HELD_PATH, post(held))
        .route(CAN_LEAD_PATH, post(can_lead))
        .route(TRANSFER_PATH, post(transfer))
        .route(RELOAD_PATH, post(reload))
        .route_layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .with_state(state)
}

async fn append(State(s): State<Arc<PeerServer>>, body: Bytes) -> Response {
    let rpc: AppendEntriesRequest = match serde_json::from_slice(&body) {
        Ok(rpc) => rpc,
        Err(e) => return bad_body(&e),
    };
    Json(s.append_answer(rpc).await).into_response()
}

async fn vote(State(s): State<Arc<PeerServer>>, body: Bytes) -> Response {
    let VoteMessage { rpc, handover } = match serde_json::from_slice(&body) {
        Ok(message) => message,
        Err(e) => return bad_body(&e),
    };
    if let Some(candidate) = rpc.vote.leader_id().voted_for() {
        s.contacts.touch(candidate);
        s.contacts.touch_candidate(candidate, rpc.last_log_id);
    }
    if let Err(reason) = s.node.grant_vote() {
        return (StatusCode::SERVICE_UNAVAILABLE, reason).into_response();
    }
    if let Some(handover) = handover {
        s.end_lease_for(handover, &rpc).await;
    }
    Json(s.raft.vote(rpc).await).into_response()
}

async fn snapshot(State(s): State<Arc<PeerServer>>, body: Bytes) -> Response {
    match serde_json::from_slice::<InstallSnapshotRequest>(&body) {
        Ok(rpc) => Json(s.raft.install_snapshot(rpc).await).into_response(),
        Err(e) => bad_body(&e),
    }
}

/// The answer to a Raft RPC whose body is not the request. The handlers read their body with
/// serde_json itself: axum's `Json` extractor tracks the path of every field for its error
/// messages, which cost about as much CPU as the rest of the extraction on every heartbeat;
/// the body comes from a peer whose signature was just checked, so a bad one is a bug, and
/// serde_json's message still says where it broke.
fn bad_body(e: &serde_json::Error) -> Response {
    let why = format!("not a valid Raft request: {e}");
    (StatusCode::UNPROCESSABLE_ENTITY, why).into_response()
}

/// A leader handing over asks: "start an election now, if you may lead".
async fn elect(
    State(s): State<Arc<PeerServer>>,
    ConnectInfo(leader): ConnectInfo<SocketAddr>,
    Json(request): Json<Option<ElectRequest>>,
) -> Json<PeerAnswer> {
    // An older peer sent no message: a planned handover, the only guarded kind then.
    let request = request.unwrap_or(ElectRequest {
        old_holder_keeps_vips: true,
        leader_last_log_index: None,
        handing_over: None,
    });
    let verdict = s.elect_now(leader.ip().to_canonical(), request).await;
    Json(PeerAnswer::from_verdict(verdict))
}

/// Pre-vote (Raft thesis §9.6): "would you vote, i.e. have you lost your leader too, and is
/// my log at least as up to date as yours?" A candidate asks before it starts a real election,
/// so a box that was cut off and comes back cannot depose a healthy leader with the terms it
/// burnt while alone, and a box whose log is behind does not start elections it cannot win
/// (two candidates bumping terms in turn can otherwise keep each other from winning).
async fn prevote(
    State(s): State<Arc<PeerServer>>,
    Extension(Signer(candidate)): Extension<Signer>,
    Json(request): Json<PrevoteRequest>,
) -> Json<PeerAnswer> {
    Json(PeerAnswer::from_verdict(
        s.node.grant_prevote(candidate, request.last_log_id),
    ))
}

/// A new holder says "I hold the VIPs now"; accepted means this node released for it.
async fn held(
    State(s): State<Arc<PeerServer>>,
    Json(request): Json<HeldRequest>,
) -> Json<PeerAnswer> {
    let released = s.node.successor_holds(request.node_id).await;
    Json(PeerAnswer::from_verdict(if released {
        Ok(())
    } else {
        Err("held nothing to release".to_owned())
    }))
}

/// A transfer's check: "could you lead now?", without starting anything.
async fn can_lead(State(s): State<Arc<PeerServer>>) -> Json<PeerAnswer> {
    Json(PeerAnswer::from_verdict(s.node.can_lead()))
}

/// Moves leadership (and the VIPs) to a node that can lead; answers the new leader's id.
async fn transfer(
    State(s): State<Arc<PeerServer>>,
    Json(request): Json<TransferRequest>,
) -> Result<Json<NodeId>, (StatusCode, String)> {
    s.transfer(request).await.map(Json)
}

/// Sets a node's maintenance flag through the Raft log, forwarding to the leader if needed.
async fn maintenance(
    State(s): State<Arc<PeerServer>>,
    Json(request): Json<MaintenanceRequest>,
) -> Result<Json<()>, (StatusCode, String)> {
    s.set_maintenance(request).await.map(Json)
}

/// Makes the membership a reload's `[[peer]]` list (the leader does; a follower forwards).
async fn members(
    State(s): State<Arc<PeerServer>>,
    Json(request): Json<MembersRequest>,
) -> Result<Json<MembershipView>, (StatusCode, String)> {
    s.node
        .change_members(request)
        .await
        .map(Json)
        .map_err(|e| (StatusCode::CONFLICT, e))
}

/// The membership this node replicates (empty on a fresh store).
async fn membership(State(s): State<Arc<PeerServer>>) -> Json<MembershipView> {
    Json(MembershipView::of(&s.raft.metrics().borrow()))
}

/// The leader says it removed this node.
async fn removed(State(s): State<Arc<PeerServer>>, Json(notice): Json<RemovedNotice>) -> Json<()> {
    s.node.removed(notice);
    Json(())
}

/// `raftvip reload`: re-reads the config file and answers what was applied or why not.
async fn reload(
    State(s): State<Arc<PeerServer>>,
    Json(request): Json<ReloadRequest>,
) -> Json<ReloadOutcome> {
    Json(s.node.reload(&request.path).await)
}

impl PeerServer {
    /// Starts an election if this node may lead, at the `request` of the leader at `leader`;
    /// an overlap with it follows if it keeps the VIPs meanwhile. The election's vote requests
    /// say which leader asked for it, if it is the one this node follows: that leader's
    /// other followers then end their lease on it and can vote at once.
    async fn elect_now(&self, leader: IpAddr, request: ElectRequest) -> Result<(), String> {
        self.node.can_lead()?;
        if request.old_holder_keeps_vips {
            self.node.asked_to_take_over(leader);
        }
        let own_leader = HandingOver::leader_of(&self.raft.metrics().borrow().vote);
        if let Some(asking) = request.handing_over.filter(|a| Some(*a) == own_leader) {
            self.contacts
                .asked_to_take_over_by(asking, 2 * self.lease());
        }
        if let Some(index) = request.leader_last_log_index {
            let caught_up = self
                .raft
                .wait(Some(HANDOVER_CATCH_UP))
                .log_index_at_least(Some(index), "handover catch-up")
                .await;
            if caught_up.is_err() {
                tracing::warn!(
                    leader_log = index,
                    "this node's log did not reach the leader's in time; standing anyway"
                );
            }
        }
        self.raft
            .trigger()
            .elect()
            .await
            .map_err(|e| format!("raft is stopping: {e}"))?;
        tracing::info!("starting an election at the leader's request (handover)");
        self.retry_after_the_lease();
        Ok(())
    }

    /// A voter's lease on its leader: openraft refuses votes for `election_timeout_max` after
    /// an append from it.
    fn lease(&self) -> Duration {
        Duration::from_millis(self.raft.config().election_timeout_max)
    }

    /// This voter's lease on `handover`'s leader ends now, before openraft reads `rpc`, if
    /// that leader is the one it follows (see [`HandingOver::ends_lease_of`]): openraft then
    /// grants or refuses the vote by Raft's other rules, without waiting out the lease. The
    /// lease stays ended for any candidate until that leader's next append renews it: the
    /// leader asked for this election, and holds its VIPs at most until a successor does.
    async fn end_lease_for(&self, handover: HandingOver, rpc: &VoteRequest) {
        let me = self.raft.metrics().borrow().id;
        // The vote as openraft holds it, not as its metrics last showed it: a vote for a
        // later leader still being written must keep that leader's lease.
        let Ok(vote) = self.raft.with_raft_state(|state| *state.vote_ref()).await else {
            return;
        };
        if handover.ends_lease_of(me, &vote, rpc.vote.leader_id().term) {
            // One millisecond past it: openraft still refuses at the lease's last instant.
            crate::raft::lease_clock::skip(self.lease() + Duration::from_millis(1));
            tracing::info!(
                leader = handover.leader,
                term = handover.term,
                candidate = ?rpc.vote.leader_id().voted_for(),
                "the leader handed over: this node's lease on it ends, for the candidate it asked to stand"
            );
        }
    }

    /// With more than three voters the old leader's vote and this node's are not a majority.
    /// The other voters end their lease on the old leader for this election
    /// ([`Self::end_lease_for`]), but one that cannot (an older raftvip, or one whose vote
    /// moved on meanwhile) refuses every vote until its lease (`election_timeout_max` after the
    /// old leader's last heartbeat, which it stopped sending when it handed over) has run
    /// out. If this election is still undecided then, stand once more: otherwise a
    /// later pre-vote of another node (the old leader's, for one) wins, and the handover picked
    /// the wrong successor. The other voters heard that heartbeat when this node did, so the
    /// first try is timed from this node's own last leader contact, before the next follower
    /// in the stagger stands; the second from now, should a voter have heard it later.
    fn retry_after_the_lease(&self) {
        let raft = self.raft.clone();
        let lease = self.lease() + LEASE_SLACK;
        let now = Instant::now();
        let heard = self.contacts.last_leader_contact().unwrap_or(now);
        let (first, second) = (heard + lease, now + lease);
        let tries = if first > now && first + LEASE_SLACK < second {
            vec![first, second]
        } else {
            vec![second]
        };
        tokio::spawn(async move {
            for at in tries {
                tokio::time::sleep_until(at.into()).await;
                let undecided = {
                    let m = raft.metrics();
                    let m = m.borrow();
                    m.state == ServerState::Candidate && m.current_leader.is_none()
                };
                if !undecided {
                    return;
                }
                tracing::info!(
                    "the handover's election is undecided after the voters' lease: standing again"
                );
                let _ = raft.trigger().elect().await;
            }
        });
    }

    /// Writes the flag if this node leads, else forwards the request to the leader once.
    async fn set_maintenance(
        &self,
        request: MaintenanceRequest,
    ) -> Result<(), (StatusCode, String)> {
        // The flag map is keyed by node id: only members get one, so it cannot grow unbounded.
        if self.node.peer_address(request.node_id).is_none() {
            return Err((
                StatusCode::BAD_REQUEST,
                format!("node {} is not a member of this cluster", request.node_id),
            ));
        }
        let m = self.raft.metrics().borrow().clone();
        if request.on && !request.force && m.state == ServerState::Leader && m.id == request.node_id
        {
            // The leader holds the VIPs: in maintenance it hands them over, to nobody if no
            // other node can lead (as `transfer` and drain.sh refuse to).
            let voters: Vec<NodeId> = m.membership_config.voter_ids().collect();
            if let Err((status, why)) = self.first_that_can_lead(m.id, voters).await {
                return Err((
                    status,
                    format!(
                        "{why}: node {} leads, and in maintenance no node would hold the VIPs \
                         (`raftvip maintenance on --force` does it anyway)",
                        m.id
                    ),
                ));
            }
        }
        let write = RaftRequest::SetMaintenance {
            node_id: request.node_id,
            on: request.on,
        };
        let Err(e) = self.raft.client_write(write).await else {
            return Ok(());
        };
        let leader = e
            .forward_to_leader::<openraft::BasicNode>()
            .and_then(|f| f.leader_id);
        let forwarded = MaintenanceRequest {
            forwarded: true,
            ..request
        };
        let answer = if request.forwarded {
            None
        } else {
            self.forward(leader, MAINTENANCE_PATH, &forwarded, FORWARD_TIMEOUT)
                .await
        };
        answer.unwrap_or_else(|| {
            Err((
                StatusCode::SERVICE_UNAVAILABLE,
                "no leader to write to: an election is under way, or no majority of the members is up".to_owned(),
            ))
        })
    }

    /// Sends `request` on `path` once to `leader`; None without a leader whose address this
    /// node knows. What a follower does with a request only the leader can carry out.
    pub(super) async fn forward<Req: serde::Serialize, Resp: serde::de::DeserializeOwned>(
        &self,
        leader: Option<NodeId>,
        path: &str,
        request: &Req,
        timeout: Duration,
    ) -> Option<Result<Resp, (StatusCode, String)>> {
        let (leader, address) = leader.and_then(|id| Some((id, self.node.peer_address(id)?)))?;
        let answer = self
            .client
            .call(leader, &address, path, request, timeout)
            .await;
        Some(answer.map_err(|e| (StatusCode::BAD_GATEWAY, format!("leader {leader}: {e}"))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_bad_raft_rpc_body_is_refused_saying_where() {
        let error =
            serde_json::from_slice::<VoteMessage>(br#"{"vote":{"leader_id":7}}"#).unwrap_err();
        let refused = bad_body(&error);
        assert_eq!(refused.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let text = axum::body::to_bytes(refused.into_body(), 1024)
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&text);
        assert!(
            text.starts_with("not a valid Raft request: invalid type: integer `7`"),
            "{text}"
        );
    }
}
