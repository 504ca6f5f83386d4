//! Membership at run time: a reload's `[[peer]]` list becomes the cluster's membership, through
//! Raft's joint consensus.
//!
//! The replicated membership (openraft's, in the Raft log) is the authority on who votes and
//! where each member listens; the file only proposes. Rules, so the two cannot flip-flop:
//!
//! - The membership changes only when a box's `[[peer]]` list changes on a reload
//!   ([`apply_file_peers`]). A restart, a leader change or a leader whose file is older never
//!   applies a file. A follower forwards its new list to the leader ([`MEMBERS_PATH`]), so the
//!   operator may reload the boxes in any order: the first changed file makes the change, the
//!   others find it made.
//! - The leader adds each new box as a learner, waits until it has caught up (bounded by
//!   [`CATCH_UP_BOUND`]), then changes the voter set (openraft: a joint config, then the new
//!   one). A box is never made a voter before it has the log, so a quorum never waits on it.
//! - A leader the list drops does not remove itself (openraft would step it down with nobody
//!   elected yet: a gap nobody serves). It first stands down ([`Standing::Leaving`]): its
//!   supervisor hands over as for maintenance, keeping the VIPs until its successor is elected
//!   (the planned handover); then it forwards the list to the new leader, which removes it.
//! - A removed box is told so ([`REMOVED_PATH`]); it never stands again, holds nothing, and
//!   its status says "removed from the cluster". Stop it and clear its `data_dir` before it
//!   joins any cluster again. (openraft stops replicating to a removed box at once, so without
//!   the notice it might never learn.) The removal is stored in its `data_dir`, so a restart
//!   does not make it a voter again: its own log may lack the entry that removed it.
//! - A fresh box (empty store) whose peers already replicate a membership without it does not
//!   bootstrap a cluster of its own: it waits to be added ([`should_bootstrap`]).
//! - A change left half-done (a joint config: the leader changed mid-change) is finished by
//!   the next leader towards the joint's new voter set: that is replicated intent, not a file.
//! - An address cannot change under an id (a stale address could reach another box and let
//!   two quorums form); replace the box instead: remove it, then add it (docs/operations.md).
//!
//! Witnesses vote like any member: a box's witness role stays in its file (`role`,
//! `[[peer]] role`), so adding or removing a witness is the same procedure.

use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::{BasicNode, ServerState};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::Peer;
use crate::peer::wire::{
    Addresses, MembersRequest, MembershipOutcome, MembershipView, RemovedNotice, MEMBERSHIP_PATH,
    MEMBERS_PATH, REMOVED_PATH,
};
use crate::peer::PeerClient;
use crate::raft::store::{DbError, LogStore};
use crate::raft::typ::{Raft, RaftMetrics};
use crate::raft::NodeId;
use crate::status::{MembershipStatus, Status};

/// How long the leader waits for a new box to catch up before it gives up making it a voter:
/// the log is tiny (operator flags and memberships), so a running box catches up in
/// milliseconds; one that has not after this is not running, or not with the new file.
pub const CATCH_UP_BOUND: Duration = Duration::from_secs(4);
/// How long a leaving leader waits for its successor to be elected (a planned handover takes
/// a few ms; the supervisor's stop bound is 600 ms).
const HANDOVER_BOUND: Duration = Duration::from_secs(2);
/// Timeout of a list forwarded to the leader: it may wait [`CATCH_UP_BOUND`] and a handover,
/// under the peer port's 10 s request limit.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(9);
/// How often a leaving leader asks its successor to remove it: leadership may move on once
/// more right after a handover (a busy box), rarely twice.
const LEAVE_ATTEMPTS: u32 = 3;
/// Pause between those attempts: about one election.
const RETRY_PAUSE: Duration = Duration::from_millis(200);
/// Timeout of the questions a fresh box asks at start and of a removal notice.
const ASK_TIMEOUT: Duration = Duration::from_millis(500);

/// Why a `[[peer]]` list was not made the membership.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MembershipError {
    #[error("the [[peer]] list is empty; list every member, this node included")]
    Empty,
    #[error("peer {id}: its address is {replicated} in the cluster but {file} in the file; an address cannot change under an id: remove node {id} (drop it from every file, reload), then add the box again (docs/operations.md, replace a box)")]
    AddressChanged {
        id: NodeId,
        replicated: String,
        file: String,
    },
    #[error(
        "peer {id}: address {address} belongs to member {owner}; give every box its own address"
    )]
    AddressTaken {
        id: NodeId,
        address: String,
        owner: NodeId,
    },
    #[error("no leader to make the change (is a quorum up?); reload again once `raftvip status` names a leader")]
    NoLeader,
    #[error("the leader refused or could not be reached: {0}")]
    Forward(String),
    #[error("node {id} at {address} has not caught up within {CATCH_UP_BOUND:?}: is it running with the new file? It stays a learner; reload again once it runs")]
    NotCaughtUp { id: NodeId, address: String },
    #[error("no peer took over within {HANDOVER_BOUND:?}, so this leader cannot leave yet (are the others healthy?); it stays a member")]
    NoSuccessor,
    #[error("raft refused the change: {0}")]
    Raft(String),
    #[error("this node was removed from the cluster; it changes nothing")]
    Removed,
}

/// What a leader must do to make the membership a file's list (see [`plan`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    /// Boxes to add as learners and wait for, before they become voters.
    pub learners: Addresses,
    /// The voter set to change to (None: it stays).
    pub voters: Option<BTreeSet<NodeId>>,
    /// The file drops this leader: it keeps its vote until its successor removes it.
    pub leave: bool,
}

/// The steps that turn the replicated membership `now` into `file`, as leader `me`. Pure.
pub fn plan(me: NodeId, now: &MembershipView, file: &Addresses) -> Result<Plan, MembershipError> {
    if file.is_empty() {
        return Err(MembershipError::Empty);
    }
    for (id, address) in file {
        match now.nodes.get(id) {
            Some(replicated) if replicated != address => {
                return Err(MembershipError::AddressChanged {
                    id: *id,
                    replicated: replicated.clone(),
                    file: address.clone(),
                })
            }
            _ => {}
        }
        if let Some((owner, _)) = now.nodes.iter().find(|(o, a)| *a == address && *o != id) {
            return Err(MembershipError::AddressTaken {
                id: *id,
                address: address.clone(),
                owner: *owner,
            });
        }
    }
    let current: BTreeSet<NodeId> = now.target().iter().copied().collect();
    let leave = !file.contains_key(&me);
    let mut voters: BTreeSet<NodeId> = file.keys().copied().collect();
    if leave {
        voters.insert(me);
    }
    Ok(Plan {
        learners: file
            .iter()
            .filter(|(id, _)| !current.contains(id))
            .map(|(id, address)| (*id, address.clone()))
            .collect(),
        voters: (voters != current || now.is_joint()).then_some(voters),
        leave,
    })
}

/// Where a file's list and the replicated membership differ, one line each, for status.
pub fn differences(file: &Addresses, now: &MembershipView) -> Vec<String> {
    let voters: BTreeSet<NodeId> = now.target().iter().copied().collect();
    let mut out = Vec::new();
    for (id, address) in file {
        match now.nodes.get(id) {
            None => out.push(format!(
                "node {id} ({address}) is in the file but not a member"
            )),
            Some(_) if !voters.contains(id) => out.push(format!(
                "node {id} is in the file but only a learner (catching up)"
            )),
            Some(replicated) if replicated != address => out.push(format!(
                "node {id}: the file says {address}, the cluster {replicated}"
            )),
            Some(_) => {}
        }
    }
    for id in &voters {
        if !file.contains_key(id) {
            out.push(format!("node {id} is a member but not in the file"));
        }
    }
    if now.is_joint() {
        out.push(format!(
            "a change is in progress: voters {:?} -> {:?}",
            now.configs[0],
            now.target()
        ));
    }
    out
}

/// Replaces the differences in `status` with those against `file` (the file on disk, read
/// by `raftvip status`): an edit not applied yet shows at once.
pub fn file_differences(status: &mut Status, file: &Addresses) {
    let nodes = status
        .peers
        .iter()
        .map(|p| (p.id, p.address.clone()))
        .collect();
    if let Some(m) = status.membership.as_mut() {
        let view = MembershipView {
            configs: m.voters.clone(),
            nodes,
        };
        m.differences = differences(file, &view);
        m.file = file.keys().copied().collect();
    }
}

/// This node's place in the membership.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Standing {
    /// A voter of the (target) membership: may lead.
    Voter,
    /// Added, catching up; a voter once the leader changes the voter set.
    Learner,
    /// A fresh box not yet added by the leader.
    Waiting,
    /// Dropped by a change in progress: stands down, hands over, waits to be removed.
    Leaving,
    /// Removed from the cluster: never stands again.
    Removed,
}

impl Standing {
    /// Where `me` stands in `view`; `leaving` and `removed` are what this node was told.
    pub fn of(me: NodeId, view: &MembershipView, leaving: bool, removed: bool) -> Self {
        let in_any = view.configs.iter().any(|c| c.contains(&me));
        if removed {
            Standing::Removed
        } else if view.is_empty() {
            Standing::Waiting
        } else if leaving || (in_any && !view.target().contains(&me)) {
            Standing::Leaving
        } else if in_any {
            Standing::Voter
        } else if view.nodes.contains_key(&me) {
            Standing::Learner
        } else {
            Standing::Removed
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Standing::Voter => "voter",
            Standing::Learner => "learner, catching up",
            Standing::Waiting => "waiting to be added (reload the [[peer]] lists)",
            Standing::Leaving => "leaving: hands over, then the leader removes it",
            Standing::Removed => "removed from the cluster: stop it and clear its data_dir",
        }
    }
}

/// The membership side of a running node: applies reloads, tells removed boxes, and
/// publishes where this node stands.
pub struct Members {
    me: NodeId,
    raft: Raft,
    client: PeerClient,
    /// This box's `[[peer]]` list, as last read from its file.
    file: Mutex<Addresses>,
    leaving: AtomicBool,
    removed: AtomicBool,
    /// Where a removal is recorded.
    store: LogStore,
    /// This leader is making a change now (so [`Members::run`] does not "finish" it).
    changing: AtomicBool,
    /// One change at a time: every box's reload may send the same list at once, and the
    /// second must find the change made, not race it.
    one_at_a_time: tokio::sync::Mutex<()>,
    standing: watch::Sender<Standing>,
    /// `standing == Voter`, for the supervisor (which knows nothing of membership).
    voter: watch::Sender<bool>,
}

/// Makes the membership the `[[peer]]` list of a reloaded file: the reload pipeline calls
/// this when the list changed. On a follower the list is forwarded to the leader. Answers the
/// membership after the change.
pub async fn apply_file_peers(
    members: &Members,
    peers: &[Peer],
) -> Result<MembershipView, MembershipError> {
    let request = MembersRequest {
        peers: addresses(peers),
        forwarded: false,
    };
    members.change(request).await
}

/// A reload's membership change under way: completes with its outcome.
pub type PendingChange = Pin<Box<dyn Future<Output = MembershipOutcome> + Send>>;

/// Called by a reload with its changed `[[peer]]` list.
pub type OnReload = Box<dyn Fn(&[Peer]) -> PendingChange + Send + Sync>;

/// How long `raftvip reload` waits for its membership change (a leader may wait
/// [`CATCH_UP_BOUND`] for a new box, or hand over first), under the peer port's request limit.
pub const RELOAD_WAIT: Duration = FORWARD_TIMEOUT;

/// What a reload calls with a changed `[[peer]]` list: applies it in the background (the
/// leader may wait for a new box to catch up, or hand over first), logs the outcome and hands
/// it to whoever waits (`raftvip reload`; SIGHUP does not wait).
pub fn on_reload(members: Arc<Members>) -> OnReload {
    Box::new(move |peers| {
        let (members, peers) = (members.clone(), peers.to_vec());
        let change = tokio::spawn(async move {
            match apply_file_peers(&members, &peers).await {
                Ok(view) => {
                    tracing::info!(
                        voters = ?view.configs,
                        "the reloaded [[peer]] list is the membership"
                    );
                    MembershipOutcome::Applied(view.configs)
                }
                Err(e) => {
                    tracing::error!(
                        error = %e,
                        "the reloaded [[peer]] list was not applied; raftvip status shows where the file and the cluster differ"
                    );
                    MembershipOutcome::Failed(e.to_string())
                }
            }
        });
        Box::pin(async move {
            change
                .await
                .unwrap_or_else(|e| MembershipOutcome::Failed(format!("the change stopped: {e}")))
        })
    })
}

/// A `[[peer]]` list by id.
pub fn addresses(peers: &[Peer]) -> Addresses {
    peers
        .iter()
        .map(|p| (p.id, p.address.to_string()))
        .collect()
}

impl Members {
    /// `file` is this box's `[[peer]]` list at start. Reads from `store` whether a leader
    /// removed this node in an earlier run; fails only if the store cannot be read.
    pub fn new(
        me: NodeId,
        raft: Raft,
        client: PeerClient,
        file: Addresses,
        store: LogStore,
    ) -> Result<Arc<Self>, DbError> {
        let removed_by = store.removed_by()?;
        if let Some(by) = removed_by {
            tracing::warn!(by, "this node was removed from the cluster before this start: it does not stand and holds nothing; stop it and clear its data_dir before it joins a cluster again");
        }
        let view = MembershipView::of(&raft.metrics().borrow());
        let standing = Standing::of(me, &view, false, removed_by.is_some());
        let (voter, _) = watch::channel(standing == Standing::Voter);
        let (standing, _) = watch::channel(standing);
        Ok(Arc::new(Self {
            me,
            raft,
            client,
            file: Mutex::new(file),
            leaving: AtomicBool::new(false),
            removed: AtomicBool::new(removed_by.is_some()),
            store,
            changing: AtomicBool::new(false),
            one_at_a_time: tokio::sync::Mutex::new(()),
            standing,
            voter,
        }))
    }

    /// Whether this node is a voter of the membership a change is heading to: only then may
    /// it lead.
    pub fn voter(&self) -> watch::Receiver<bool> {
        self.voter.subscribe()
    }

    /// The status document's section.
    pub fn status(&self) -> MembershipStatus {
        let view = MembershipView::of(&self.raft.metrics().borrow());
        let file = crate::sync::lock(&self.file).clone();
        let voters: BTreeSet<NodeId> = view.configs.iter().flatten().copied().collect();
        MembershipStatus {
            standing: self.standing.borrow().describe().to_owned(),
            learners: view
                .nodes
                .keys()
                .filter(|id| !voters.contains(id))
                .copied()
                .collect(),
            differences: differences(&file, &view),
            file: file.keys().copied().collect(),
            voters: view.configs,
        }
    }

    /// A `[[peer]]` list: this box's own (a reload, `raftvip members`: `forwarded` false),
    /// remembered for status, or one a follower forwarded to this leader.
    pub async fn change(&self, request: MembersRequest) -> Result<MembershipView, MembershipError> {
        if !request.forwarded {
            *crate::sync::lock(&self.file) = request.peers.clone();
        }
        self.apply(request.peers, request.forwarded).await
    }

    /// Applies `file` if this node leads, else forwards it to the leader (once).
    async fn apply(
        &self,
        file: Addresses,
        forwarded: bool,
    ) -> Result<MembershipView, MembershipError> {
        if self.removed.load(Ordering::Relaxed) {
            return Err(MembershipError::Removed);
        }
        let m = self.raft.metrics().borrow().clone();
        if m.state != ServerState::Leader {
            if forwarded {
                return Err(MembershipError::Forward(format!(
                    "node {} is not the leader",
                    self.me
                )));
            }
            return self.forward(&m, file).await;
        }
        // Only a leader waits here: a follower holding it while it forwards could deadlock
        // with a leaving leader forwarding to it.
        let _one = self.one_at_a_time.lock().await;
        let view = MembershipView::of(&self.raft.metrics().borrow());
        let plan = plan(self.me, &view, &file)?;
        self.changing.store(true, Ordering::Relaxed);
        let changed = self.change_voters(&view, &plan).await;
        self.changing.store(false, Ordering::Relaxed);
        changed?;
        if plan.leave {
            return self.leave(file).await;
        }
        Ok(MembershipView::of(&self.raft.metrics().borrow()))
    }

    /// Adds the plan's learners, then changes the voters.
    async fn change_voters(
        &self,
        view: &MembershipView,
        plan: &Plan,
    ) -> Result<(), MembershipError> {
        for (id, address) in &plan.learners {
            self.add_learner(*id, address).await?;
        }
        if let Some(voters) = &plan.voters {
            tracing::info!(from = ?view.configs, to = ?voters, "changing the voters");
            self.raft
                .change_membership(voters.clone(), false)
                .await
                .map_err(|e| MembershipError::Raft(e.to_string()))?;
            self.tell_removed(view);
        }
        Ok(())
    }

    /// Sends the list to the leader this node knows of.
    async fn forward(
        &self,
        m: &RaftMetrics,
        file: Addresses,
    ) -> Result<MembershipView, MembershipError> {
        let leader = m.current_leader.ok_or(MembershipError::NoLeader)?;
        let address = MembershipView::of(m)
            .nodes
            .get(&leader)
            .cloned()
            .ok_or(MembershipError::NoLeader)?;
        tracing::info!(leader, "forwarding the [[peer]] list to the leader");
        let request = MembersRequest {
            peers: file,
            forwarded: true,
        };
        self.client
            .call(leader, &address, MEMBERS_PATH, &request, FORWARD_TIMEOUT)
            .await
            .map_err(|e| MembershipError::Forward(e.to_string()))
    }

    /// Adds `id` as a learner and waits until it has the leader's log.
    async fn add_learner(&self, id: NodeId, address: &str) -> Result<(), MembershipError> {
        tracing::info!(node = id, address, "adding a learner");
        let added = self
            .raft
            .add_learner(id, BasicNode::new(address), false)
            .await
            .map_err(|e| MembershipError::Raft(e.to_string()))?;
        let at = added.log_id;
        let caught_up = self
            .raft
            .wait(Some(CATCH_UP_BOUND))
            .metrics(
                |m| {
                    m.replication
                        .as_ref()
                        .and_then(|r| r.get(&id))
                        .is_some_and(|matched| matched.as_ref() >= Some(&at))
                },
                "learner caught up",
            )
            .await;
        match caught_up {
            Ok(_) => {
                tracing::info!(node = id, "learner caught up");
                Ok(())
            }
            Err(_) => Err(MembershipError::NotCaughtUp {
                id,
                address: address.to_owned(),
            }),
        }
    }

    /// This leader is dropped by `file`: hand over, then have the successor remove it. The
    /// successor is asked again (up to [`LEAVE_ATTEMPTS`]) if leadership moved on meanwhile;
    /// if it never agrees, this node stays a member that does not stand, and `status` shows
    /// the difference until a member's reload completes the change.
    async fn leave(&self, file: Addresses) -> Result<MembershipView, MembershipError> {
        tracing::info!("this leader is not in the new [[peer]] list: handing over before the new leader removes it");
        self.leaving.store(true, Ordering::Relaxed);
        self.publish();
        let me = self.me;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let successor = self
                .raft
                .wait(Some(HANDOVER_BOUND))
                .metrics(
                    |m| m.current_leader.is_some_and(|l| l != me),
                    "successor elected",
                )
                .await;
            let Ok(m) = successor else {
                if self.raft.metrics().borrow().state == ServerState::Leader {
                    self.leaving.store(false, Ordering::Relaxed);
                    self.publish();
                }
                return Err(MembershipError::NoSuccessor);
            };
            match self.forward(&m, file.clone()).await {
                Ok(view) => {
                    self.mark_removed(m.current_leader.unwrap_or(me));
                    return Ok(view);
                }
                Err(e) if attempt < LEAVE_ATTEMPTS => {
                    tracing::info!(error = %e, attempt, "the new leader did not remove this node yet; asking again");
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Tells each box `before` had and the membership now lacks that it was removed.
    fn tell_removed(&self, before: &MembershipView) {
        let now = MembershipView::of(&self.raft.metrics().borrow());
        let notice = RemovedNotice {
            by: self.me,
            voters: now.target().to_vec(),
        };
        for (id, address) in &before.nodes {
            if now.nodes.contains_key(id) || *id == self.me {
                continue;
            }
            let (client, id, address, notice) =
                (self.client.clone(), *id, address.clone(), notice.clone());
            tokio::spawn(async move {
                let told: Result<(), _> = client
                    .call(id, &address, REMOVED_PATH, &notice, ASK_TIMEOUT)
                    .await;
                match told {
                    Ok(()) => tracing::info!(node = id, "told the node it was removed"),
                    Err(e) => {
                        tracing::warn!(node = id, error = %e, "cannot tell the node it was removed; stop it by hand")
                    }
                }
            });
        }
    }

    /// The leader says this node was removed.
    pub fn removed(&self, notice: &RemovedNotice) {
        if notice.voters.contains(&self.me) {
            tracing::warn!(
                by = notice.by,
                "ignored a removal notice that lists this node as a voter"
            );
            return;
        }
        self.mark_removed(notice.by);
    }

    fn mark_removed(&self, by: NodeId) {
        if !self.removed.swap(true, Ordering::Relaxed) {
            tracing::warn!(by, "removed from the cluster: this node no longer stands and holds nothing; stop it and clear its data_dir");
            let store = self.store.clone();
            tokio::spawn(async move {
                match store.mark_removed(by).await {
                    Ok(()) => tracing::info!(by, "recorded the removal in data_dir"),
                    Err(error) => {
                        tracing::error!(%error, "cannot record the removal in data_dir: a restart would make this node a voter again; stop it and clear its data_dir")
                    }
                }
            });
        }
        self.publish();
    }

    /// Recomputes where this node stands; logs a change.
    fn publish(&self) {
        let view = MembershipView::of(&self.raft.metrics().borrow());
        let now = Standing::of(
            self.me,
            &view,
            self.leaving.load(Ordering::Relaxed),
            self.removed.load(Ordering::Relaxed),
        );
        self.standing.send_if_modified(|s| {
            if *s == now {
                return false;
            }
            tracing::info!(
                from = s.describe(),
                to = now.describe(),
                "membership standing changed"
            );
            *s = now;
            true
        });
        self.voter.send_if_modified(|v| {
            let voter = now == Standing::Voter;
            std::mem::replace(v, voter) != voter
        });
    }

    /// Follows Raft: publishes where this node stands as the membership changes, and, on
    /// becoming leader, finishes a change a previous leader left in its joint phase.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let mut metrics = self.raft.server_metrics();
        let mut was_leader = false;
        loop {
            let (leader, view) = {
                let m = metrics.borrow_and_update();
                (
                    m.state == ServerState::Leader,
                    MembershipView::of_stored(&m.membership_config),
                )
            };
            self.publish();
            let changing = self.changing.load(Ordering::Relaxed);
            if leader && !was_leader && view.is_joint() && !changing {
                let (raft, target) = (self.raft.clone(), view.target().to_vec());
                tracing::info!(to = ?target, "finishing a membership change a previous leader began");
                tokio::spawn(async move {
                    let voters: BTreeSet<NodeId> = target.into_iter().collect();
                    if let Err(e) = raft.change_membership(voters, false).await {
                        tracing::warn!(error = %e, "cannot finish the membership change");
                    }
                });
            }
            was_leader = leader;
            tokio::select! {
                _ = stop.cancelled() => return,
                changed = metrics.changed() => if changed.is_err() { return },
            }
        }
    }
}

/// Whether a fresh box should bootstrap the cluster from its file: not if a peer already
/// replicates a membership without it (it was added to a running cluster and waits for the
/// leader). Peers that do not answer, or have no membership yet, are a cluster being founded.
pub async fn should_bootstrap(
    me: NodeId,
    raft: &Raft,
    client: &PeerClient,
    file: &Addresses,
) -> bool {
    if !MembershipView::of(&raft.metrics().borrow()).is_empty() {
        return true;
    }
    let mut asks = tokio::task::JoinSet::new();
    for (id, address) in file.iter().filter(|(id, _)| **id != me) {
        let (client, id, address) = (client.clone(), *id, address.clone());
        asks.spawn(async move {
            let view: Result<MembershipView, _> = client
                .call(id, &address, MEMBERSHIP_PATH, &(), ASK_TIMEOUT)
                .await;
            (id, view)
        });
    }
    while let Some(answer) = asks.join_next().await {
        if let Ok((id, Ok(view))) = answer {
            if !view.is_empty() && !view.nodes.contains_key(&me) {
                tracing::info!(peer = id, voters = ?view.target(), "a running cluster does not list this node yet: waiting for the leader to add it (reload the [[peer]] lists on the members)");
                return false;
            }
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn view(configs: &[&[NodeId]], learners: &[NodeId]) -> MembershipView {
        let mut nodes: BTreeMap<NodeId, String> = BTreeMap::new();
        for id in configs.iter().flat_map(|c| c.iter()).chain(learners) {
            nodes.insert(*id, address(*id));
        }
        MembershipView {
            configs: configs.iter().map(|c| c.to_vec()).collect(),
            nodes,
        }
    }

    fn address(id: NodeId) -> String {
        format!("192.0.2.1{id}:7480")
    }

    fn file(ids: &[NodeId]) -> Addresses {
        ids.iter().map(|id| (*id, address(*id))).collect()
    }

    fn set(ids: &[NodeId]) -> Option<BTreeSet<NodeId>> {
        Some(ids.iter().copied().collect())
    }

    #[test]
    fn the_same_list_changes_nothing() {
        let plan = plan(1, &view(&[&[1, 2, 3]], &[]), &file(&[1, 2, 3])).unwrap();
        assert_eq!(plan, Plan::default());
    }

    #[test]
    fn a_new_box_is_a_learner_first_then_a_voter() {
        let plan = plan(1, &view(&[&[1, 2, 3]], &[]), &file(&[1, 2, 3, 4])).unwrap();
        assert_eq!(plan.learners, file(&[4]));
        assert_eq!(plan.voters, set(&[1, 2, 3, 4]));
        assert!(!plan.leave);
    }

    /// A learner left by an earlier attempt that timed out is waited for again.
    #[test]
    fn a_learner_still_catching_up_is_waited_for_again() {
        let plan = plan(1, &view(&[&[1, 2, 3]], &[4]), &file(&[1, 2, 3, 4])).unwrap();
        assert_eq!(plan.learners, file(&[4]));
        assert_eq!(plan.voters, set(&[1, 2, 3, 4]));
    }

    #[test]
    fn removing_a_follower_needs_no_learner() {
        let plan = plan(1, &view(&[&[1, 2, 3, 4]], &[]), &file(&[1, 2, 4])).unwrap();
        assert_eq!(plan.learners, Addresses::new());
        assert_eq!(plan.voters, set(&[1, 2, 4]));
        assert!(!plan.leave);
    }

    /// The leader keeps its own vote and leaves; its successor removes it.
    #[test]
    fn a_leader_the_list_drops_keeps_its_vote_and_leaves() {
        let plan = plan(1, &view(&[&[1, 2, 3, 4]], &[]), &file(&[2, 3, 4])).unwrap();
        assert_eq!(plan.voters, None);
        assert!(plan.leave);
        // Replacing: the new box joins while the leader stays, until it hands over.
        let plan = plan_of(1, &[1, 2, 3], &[2, 3, 5]);
        assert_eq!(plan.learners, file(&[5]));
        assert_eq!(plan.voters, set(&[1, 2, 3, 5]));
        assert!(plan.leave);
    }

    fn plan_of(me: NodeId, now: &[NodeId], to: &[NodeId]) -> Plan {
        plan(me, &view(&[now], &[]), &file(to)).unwrap()
    }

    /// A joint config left by a previous leader is finished even towards the same set.
    #[test]
    fn a_change_in_its_joint_phase_is_finished() {
        let plan = plan(2, &view(&[&[1, 2, 3], &[2, 3]], &[]), &file(&[2, 3])).unwrap();
        assert_eq!(plan.voters, set(&[2, 3]));
    }

    #[test]
    fn an_address_cannot_change_under_an_id() {
        let mut moved = file(&[1, 2, 3]);
        moved.insert(3, "192.0.2.99:7480".to_owned());
        let error = plan(1, &view(&[&[1, 2, 3]], &[]), &moved).unwrap_err();
        assert_eq!(
            error,
            MembershipError::AddressChanged {
                id: 3,
                replicated: address(3),
                file: "192.0.2.99:7480".to_owned()
            }
        );
        assert!(error.to_string().contains("remove node 3"), "{error}");
        let mut taken = file(&[1, 2, 3]);
        taken.insert(4, address(3));
        let error = plan(1, &view(&[&[1, 2, 3]], &[]), &taken).unwrap_err();
        assert!(matches!(
            error,
            MembershipError::AddressTaken {
                id: 4,
                owner: 3,
                ..
            }
        ));
        assert_eq!(
            plan(1, &view(&[&[1]], &[]), &Addresses::new()),
            Err(MembershipError::Empty)
        );
    }

    #[test]
    fn differences_name_each_box_the_file_and_the_cluster_disagree_on() {
        assert!(differences(&file(&[1, 2, 3]), &view(&[&[1, 2, 3]], &[])).is_empty());
        let diff = differences(&file(&[1, 2, 3, 4, 5]), &view(&[&[1, 2, 3, 6]], &[4]));
        assert_eq!(
            diff,
            vec![
                "node 4 is in the file but only a learner (catching up)",
                "node 5 (192.0.2.15:7480) is in the file but not a member",
                "node 6 is a member but not in the file",
            ]
        );
        let joint = differences(&file(&[2, 3]), &view(&[&[1, 2, 3], &[2, 3]], &[]));
        assert_eq!(
            joint,
            vec!["a change is in progress: voters [1, 2, 3] -> [2, 3]"]
        );
    }

    #[test]
    fn standing_follows_the_membership_and_what_the_node_was_told() {
        let stable = view(&[&[1, 2, 3]], &[4]);
        assert_eq!(Standing::of(1, &stable, false, false), Standing::Voter);
        assert_eq!(Standing::of(4, &stable, false, false), Standing::Learner);
        assert_eq!(Standing::of(5, &stable, false, false), Standing::Removed);
        assert_eq!(Standing::of(1, &stable, true, false), Standing::Leaving);
        assert_eq!(Standing::of(1, &stable, false, true), Standing::Removed);
        let joint = view(&[&[1, 2, 3], &[2, 3]], &[]);
        assert_eq!(Standing::of(1, &joint, false, false), Standing::Leaving);
        assert_eq!(Standing::of(2, &joint, false, false), Standing::Voter);
        let fresh = MembershipView::default();
        assert_eq!(Standing::of(4, &fresh, false, false), Standing::Waiting);
    }
}
