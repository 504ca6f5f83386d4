//! `raftvip run`: wires config, store, Raft, health, VIPs, supervisor and API together, and
//! owns the shutdown order.
//!
//! Start-up (`raftvip run` has already removed any VIP a previous run left behind, before
//! this): bind the listener (a taken port fails before anything else happens), open the
//! durable store, arm the panic hook, start Raft with elections off, initialise the static
//! membership (every node does; "already initialised" is fine), then start health, VIP
//! watchers, the supervisor, the API and the systemd notifier.
//!
//! Shutdown (SIGTERM/SIGINT): the supervisor releases the VIPs and, if leader, hands
//! leadership to a healthy peer while the API still answers its votes; then Raft stops, then
//! the API. Bounded so the whole stop takes under a second.
//!
//! Fatal stop: a part that ends while the node runs — Raft with a fatal error (a store write
//! failed: EIO, a read-only file system), the supervisor or API task, the health monitor —
//! leaves a process that holds nothing and serves nothing but would never exit, so systemd
//! would never restart it. Instead the node releases the VIPs at once (no handover: it cannot be trusted to
//! lead), logs why and returns an error, well within a second. A panic anywhere aborts the
//! process after releasing the VIPs ([`crate::release::release_on_panic`]).

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::{BasicNode, ServerState};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::api::{self, ApiState, StatusView};
use crate::auth::Authenticator;
use crate::config::{Config, Secret};
use crate::peer::{Contacts, LocalNode, Network, PeerClient, PeerRequests, PeerServer};
use crate::raft::typ::{Fatal, LogId, Raft};
use crate::raft::vote_gate::VoteGate;
use crate::raft::{store, ClusterState, NodeId};
use crate::status::{self, Counters, PeerStatus, RaftRole, Status};
use crate::supervisor::{HealthVerdict, Peers, Supervisor, SupervisorState};
use crate::vip::VipHolder;

/// How long a planned stop may spend handing over before it gives up and just releases.
const HANDOVER_DEADLINE: Duration = Duration::from_millis(600);
/// How long the exit waits for the VIP thread to remove the VIPs (a batch takes a few ms).
const VIP_RELEASE_DEADLINE: Duration = Duration::from_millis(200);
/// How long Raft and the API get to stop.
const STOP_DEADLINE: Duration = Duration::from_millis(250);
/// How often a running node checks that Raft has not stopped with a fatal error and that the
/// health monitor still reports: a fatal stop is noticed within this.
const LIVENESS_CHECK: Duration = Duration::from_millis(100);

#[derive(Debug, thiserror::Error)]
pub enum RunDaemonError {
    #[error("cannot listen on {address}: {source}")]
    Listen {
        address: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    OpenStore(#[from] store::OpenStoreError),
    #[error("invalid Raft timing: {0}")]
    RaftConfig(#[from] openraft::ConfigError),
    #[error("cannot start Raft: {0}")]
    StartRaft(#[from] Fatal),
    #[error("cannot initialise the cluster membership: {0}")]
    Initialize(String),
    #[error("the API server failed: {0}")]
    Serve(#[source] std::io::Error),
    #[error("stopped because {0}; the VIPs were released")]
    Fatal(String),
}

/// The health and VIP parts, built by the caller (real HAProxy / netlink in production).
pub struct Parts<Hl> {
    pub health: watch::Receiver<Hl>,
    pub vips: Arc<dyn VipHolder>,
}

/// Runs the node until `shutdown` completes, then stops in order.
pub async fn run<Hl: HealthVerdict>(
    config: Config,
    secret: Secret,
    parts: Parts<Hl>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RunDaemonError> {
    let config = Arc::new(config);
    // Requests signed before this are refused (see auth): peers' requests queued in the listen
    // backlog while the node starts up were signed after it.
    let started = std::time::SystemTime::now();
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| RunDaemonError::Listen {
            address: config.listen,
            source,
        })?;
    let status_listener = match config.status_listen {
        Some(address) => Some(
            tokio::net::TcpListener::bind(address)
                .await
                .map_err(|source| RunDaemonError::Listen { address, source })?,
        ),
        None => None,
    };
    let (log_store, state_machine) =
        store::open(&config.data_dir, &config.cluster, config.node_id)?;
    let cluster = state_machine.subscribe();
    // Armed only now: opening the store turns redb's panics on a damaged file into an error.
    if !config.is_witness() {
        crate::release::release_on_panic(config.vips.clone());
    }
    let vote_gate = VoteGate::new(
        state_machine.created_at_open(),
        Instant::now(),
        Duration::from_millis(config.timing.election_timeout_ms[1]),
    );

    let auth = Arc::new(
        Authenticator::new(secret, &config.cluster, config.node_id).accepting_since(started),
    );
    let contacts = Arc::new(Contacts::default());
    let peer_client = PeerClient::new(auth.clone());
    let raft_config = openraft::Config {
        cluster_name: config.cluster.clone(),
        heartbeat_interval: config.timing.heartbeat_ms,
        election_timeout_min: config.timing.election_timeout_ms[0],
        election_timeout_max: config.timing.election_timeout_ms[1],
        // Elections stay off until the supervisor has a healthy verdict.
        enable_elect: false,
        ..Default::default()
    }
    .validate()?;
    // Pre-votes read the end of the log; the clone shares the database with Raft's.
    let log = log_store.clone();
    let raft = Raft::new(
        config.node_id,
        Arc::new(raft_config),
        Network::new(peer_client.clone(), contacts.clone()),
        log_store,
        state_machine,
    )
    .await?;
    initialize_membership(&raft, &config).await?;

    let (state_tx, state_rx) = watch::channel(SupervisorState::default());
    let (supervisor_state, health_watch) = (state_rx.clone(), parts.health.clone());
    let rejected = Arc::new(AtomicU64::new(0));
    let view = Arc::new(LiveNode {
        log: log.clone(),
        config: config.clone(),
        raft: raft.clone(),
        health: parts.health.clone(),
        cluster: cluster.clone(),
        vips: parts.vips.clone(),
        supervisor: state_rx,
        contacts: contacts.clone(),
        rejected: rejected.clone(),
        vote_gate,
    });

    let supervisor_stop = CancellationToken::new();
    let supervisor = Supervisor::new(
        &config,
        raft.clone(),
        parts.health,
        cluster,
        parts.vips.clone(),
        Arc::new(PeerRequests::new(
            peer_client.clone(),
            config
                .peers
                .iter()
                .map(|p| (p.id, p.address.to_string()))
                .collect(),
            log,
        )),
        contacts.clone(),
        state_tx,
    );
    let mut supervisor_task = tokio::spawn(supervisor.run(supervisor_stop.clone()));

    let api_stop = CancellationToken::new();
    let peer_server = Arc::new(PeerServer::new(
        raft.clone(),
        auth,
        peer_client,
        view.clone(),
        contacts,
        rejected,
    ));
    let api_state = Arc::new(ApiState::new(
        view,
        peer_server,
        config.limits.max_connections,
    ));
    let mut api_task = tokio::spawn(api::serve(
        listener,
        status_listener,
        api_state,
        api_stop.clone(),
    ));

    tracing::info!(
        node_id = config.node_id,
        cluster = %config.cluster,
        listen = %config.listen,
        role = ?config.role,
        "raftvip running"
    );
    let notifier_stop = CancellationToken::new();
    let notifier_task = tokio::spawn(crate::systemd::run(
        raft.metrics(),
        supervisor_state,
        config.timing.reconcile(),
        notifier_stop.clone(),
    ));
    let fatal = tokio::select! {
        _ = shutdown => None,
        result = &mut api_task => Some(format!("the API server {}", ended(result))),
        result = &mut supervisor_task => Some(format!("the supervisor task {}", ended(result))),
        why = first_fatal(&raft, health_watch) => Some(why),
    };
    crate::systemd::stopping();
    notifier_stop.cancel();
    let _ = notifier_task.await;
    match &fatal {
        // Not to be trusted to lead: no handover, the VIPs go at once.
        Some(why) => {
            tracing::error!(why, "fatal: releasing the VIPs and exiting");
            supervisor_task.abort();
        }
        None => tracing::info!("stopping: releasing VIPs and handing over leadership if leader"),
    }
    supervisor_stop.cancel();
    if fatal.is_none()
        && tokio::time::timeout(HANDOVER_DEADLINE, &mut supervisor_task)
            .await
            .is_err()
    {
        tracing::warn!("handover did not finish in time; releasing VIPs anyway");
        supervisor_task.abort();
    }
    parts.vips.set_held(
        false,
        if fatal.is_some() {
            "fatal error"
        } else {
            "stopped"
        },
    );
    if !parts.vips.wait_applied(VIP_RELEASE_DEADLINE) {
        tracing::warn!("the VIP thread did not confirm the release in time");
    }
    if tokio::time::timeout(STOP_DEADLINE, raft.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("raft did not stop in time");
    }
    if let Some(why) = fatal {
        api_stop.cancel();
        api_task.abort();
        return Err(RunDaemonError::Fatal(why));
    }
    api_stop.cancel();
    let api_result = match tokio::time::timeout(STOP_DEADLINE, api_task).await {
        Ok(result) => result,
        Err(_) => Ok(Ok(())),
    };
    tracing::info!("stopped");
    match api_result {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(RunDaemonError::Serve(e)),
        Err(join) => Err(RunDaemonError::Serve(std::io::Error::other(join))),
    }
}

/// Every node initialises the same static membership; all but the first see "not allowed".
async fn initialize_membership(raft: &Raft, config: &Config) -> Result<(), RunDaemonError> {
    let members: BTreeMap<NodeId, BasicNode> = config
        .peers
        .iter()
        .map(|p| (p.id, BasicNode::new(p.address.to_string())))
        .collect();
    match raft.initialize(members).await {
        Ok(()) => Ok(()),
        Err(openraft::error::RaftError::APIError(
            openraft::error::InitializeError::NotAllowed(_),
        )) => Ok(()),
        Err(e) => Err(RunDaemonError::Initialize(e.to_string())),
    }
}

/// The supervisor's view of the peer requests.
impl Peers for PeerRequests {
    async fn hand_over(&self, me: NodeId) -> Option<NodeId> {
        PeerRequests::hand_over(self, me).await
    }
    async fn pre_vote(&self, me: NodeId) -> bool {
        PeerRequests::pre_vote(self, me).await
    }
}

/// The running node as the API and the peer handlers see it.
struct LiveNode<Hl> {
    config: Arc<Config>,
    raft: Raft,
    health: watch::Receiver<Hl>,
    cluster: watch::Receiver<ClusterState>,
    vips: Arc<dyn VipHolder>,
    supervisor: watch::Receiver<SupervisorState>,
    contacts: Arc<Contacts>,
    rejected: Arc<AtomicU64>,
    vote_gate: VoteGate,
    /// This node's log, which a pre-vote's candidate must not be behind.
    log: store::LogStore,
}

impl<Hl: HealthVerdict> StatusView for LiveNode<Hl> {
    fn status(&self) -> Status {
        let m = self.raft.metrics().borrow().clone();
        let sup = self.supervisor.borrow().clone();
        let cluster = self.cluster.borrow().clone();
        let health = self.health.borrow().status();
        let role = match m.state {
            ServerState::Leader => RaftRole::Leader,
            ServerState::Candidate => RaftRole::Candidate,
            ServerState::Learner => RaftRole::Learner,
            ServerState::Shutdown => RaftRole::Shutdown,
            ServerState::Follower if self.config.is_witness() => RaftRole::Witness,
            ServerState::Follower => RaftRole::Follower,
        };
        Status {
            cluster: self.config.cluster.clone(),
            node_id: self.config.node_id,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            role,
            leader_id: m.current_leader,
            term: m.current_term,
            millis_since_quorum_ack: m
                .millis_since_quorum_ack
                .filter(|_| role == RaftRole::Leader),
            holds_vips: sup.holds_vips,
            decision: sup.reason.to_string(),
            candidate_for_leader: sup.elect,
            healthy: self.health.borrow().is_healthy(),
            health,
            maintenance: cluster.in_maintenance(self.config.node_id),
            vips: self.vips.status(),
            peers: self
                .config
                .peers
                .iter()
                .map(|p| PeerStatus {
                    id: p.id,
                    address: p.address.to_string(),
                    last_contact_ms: self.contacts.age(p.id).map(|a| a.as_millis() as u64),
                    maintenance: cluster.in_maintenance(p.id),
                })
                .collect(),
            counters: Counters {
                leader_changes: sup.leader_changes,
                rejected_requests: self.rejected.load(Ordering::Relaxed),
                handovers: sup.handovers,
                fence_releases: sup.fence_releases,
            },
            voters_may_fail: self.config.tolerance().may_fail as u64,
            failover_duration: sup.failover_duration.clone(),
        }
    }
}

impl<Hl: HealthVerdict> LocalNode for LiveNode<Hl> {
    fn can_lead(&self) -> Result<(), String> {
        let sup = self.supervisor.borrow();
        if sup.elect {
            Ok(())
        } else {
            Err(sup.reason.to_string())
        }
    }

    fn grant_prevote(&self, candidate_last_log: Option<LogId>) -> Result<(), String> {
        let mine = self
            .log
            .last_log_id()
            .map_err(|e| format!("cannot read this node's log: {e}"))?;
        if candidate_last_log < mine {
            return Err(format!(
                "your log ends at {} and mine at {}: you cannot win an election",
                display_log_id(candidate_last_log),
                display_log_id(mine)
            ));
        }
        let m = self.raft.metrics().borrow().clone();
        let fence = self.config.timing.fence_ms();
        if m.state == ServerState::Leader && m.millis_since_quorum_ack.is_some_and(|ms| ms <= fence)
        {
            return Err("this node leads with a quorum".to_owned());
        }
        // The lease plus election_timeout_min (issue 8.6): a new leader cannot exist before
        // a voter of the old leader's last quorum agrees, so the old holder's fence
        // (< election_timeout_max) has at least election_timeout_min of margin.
        let [et_min, et_max] = self.config.timing.election_timeout_ms;
        let lease = Duration::from_millis(et_max + et_min);
        match self.contacts.last_leader_contact().map(|at| at.elapsed()) {
            Some(age) if age < lease => Err(format!(
                "heard from leader {} {} ms ago",
                m.current_leader
                    .map_or_else(|| "?".to_owned(), |id| id.to_string()),
                age.as_millis()
            )),
            _ => Ok(()),
        }
    }

    fn peer_address(&self, id: NodeId) -> Option<String> {
        self.config.peer(id).map(|p| p.address.to_string())
    }

    fn grant_vote(&self) -> Result<(), String> {
        let verdict = self
            .vote_gate
            .check(Instant::now(), self.contacts.last_leader_contact());
        if let Err(reason) = &verdict {
            tracing::info!(%reason, "vote request refused");
        }
        verdict
    }
}

/// Health when no `[haproxy]` is configured: always healthy (no gate).
#[derive(Debug, Clone, Copy)]
pub struct NoHealthGate;

impl HealthVerdict for NoHealthGate {
    fn is_healthy(&self) -> bool {
        true
    }
    fn status(&self) -> Option<status::HealthStatus> {
        None
    }
}

/// How a task that should have run until stopped ended, for the fatal-stop message.
fn ended<T: std::fmt::Debug>(result: Result<T, tokio::task::JoinError>) -> String {
    match result {
        Ok(value) => format!("ended unexpectedly ({value:?})"),
        Err(e) if e.is_panic() => "panicked".to_owned(),
        Err(e) => format!("was cancelled ({e})"),
    }
}

/// Completes with the reason when Raft has stopped with a fatal error (a store write failed)
/// or the health monitor stopped reporting. Polled every [`LIVENESS_CHECK`] rather than on
/// every metrics change: Raft's metrics change with every heartbeat.
async fn first_fatal<Hl: HealthVerdict>(raft: &Raft, health: watch::Receiver<Hl>) -> String {
    let mut tick = tokio::time::interval(LIVENESS_CHECK);
    loop {
        tick.tick().await;
        if let Err(fatal) = &raft.metrics().borrow().running_state {
            return format!("Raft stopped with a fatal error: {fatal}");
        }
        if health.has_changed().is_err() {
            return "the health monitor stopped reporting".to_owned();
        }
    }
}

/// "T3-N1-7" for a log id, "empty" for none.
fn display_log_id(id: Option<LogId>) -> String {
    id.map_or_else(|| "empty".to_owned(), |id| id.to_string())
}
