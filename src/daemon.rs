//! `raftvip run`: wires config, store, Raft, health, VIPs, supervisor and API together, and
//! owns the whole start-up and shutdown order, written here in one place.
//!
//! Start-up: remove any VIP a previous run left behind (before anything else can fail), read
//! the config, bind the listeners (a taken port fails early), start the VIP thread and the
//! health monitor, open the durable store, arm the panic hook, start Raft with elections off,
//! initialise the static membership (every node does; "already initialised" is fine), then
//! start the supervisor, the API and the systemd notifier.
//!
//! Shutdown (SIGTERM/SIGINT): the supervisor, if leader, hands leadership to a healthy peer
//! while the API still answers its votes, and keeps the VIPs until it no longer leads (or
//! nobody can take over, or its bound ran out); only then does it release them. The daemon
//! waits for the VIP thread to confirm the release, fires the STOP hooks, stops Raft, then the
//! API, waits for the hooks, then the background tasks (VIP thread, health monitor) end; last,
//! any VIP still bound is removed. Bounded so the whole stop takes under a second, plus the
//! hooks' own timeouts when hooks are configured.
//!
//! Reload (SIGHUP, `raftvip reload`): [`crate::reload`] re-reads the file; the handles it
//! changes (VIP thread, health monitor settings, hooks, the supervisor's setup) are made here.
//! SIGHUP is handled from the start, so a reload sent while the node starts never kills it.
//!
//! Fatal stop: a part that ends while the node runs — Raft with a fatal error (a store write
//! failed: EIO, a read-only file system), the supervisor or API task, the health monitor —
//! leaves a process that holds nothing and serves nothing but would never exit, so systemd
//! would never restart it. Instead the node releases the VIPs at once (no handover: it cannot
//! be trusted to lead), logs why and returns an error, well within a second. A panic anywhere
//! aborts the process after releasing the VIPs ([`crate::release::release_on_panic`]).

use std::collections::BTreeMap;
use std::future::Future;
use std::net::IpAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::{BasicNode, ServerState};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::api::{self, ApiState, StatusView};
use crate::auth::Authenticator;
use crate::config::{Config, LoadConfigError, Secret};
use crate::health::{HealthFeed, NoHealthGate};
use crate::membership::{self, Members};
use crate::notify::{Event, HookContext, Notifier};
use crate::peer::wire::{
    MembersRequest, MembershipOutcome, MembershipView, ReloadOutcome, RemovedNotice,
};
use crate::peer::{
    datagram, Contacts, LocalNode, Network, NodeFuture, PeerClient, PeerRequests, PeerServer,
};
use crate::raft::typ::{Fatal, LogId, Raft};
use crate::raft::vote_gate::VoteGate;
use crate::raft::{store, ClusterState, NodeId};
use crate::reload::{Live, Reloader};
use crate::status::{Counters, PeerStatus, RaftRole, Status};
use crate::supervisor::{
    driver, Input, Peers, PrevoteQuestion, Reason, Setup, Supervisor, SupervisorState, Timing,
    OVERLAP_BOUND, STOP_HANDOVER_BOUND, TRANSFER_BOUND,
};
use crate::vip::{NoVips, VipHolder, VipWorker, Vips};

/// How long the exit waits for the supervisor beyond its own handover bound: it only wedges
/// if something is badly wrong, and then the VIPs are released without it.
const SUPERVISOR_STOP_SLACK: Duration = Duration::from_millis(100);
/// How long the exit waits for the VIP thread to remove the VIPs (a batch takes a few ms).
const VIP_RELEASE_DEADLINE: Duration = Duration::from_millis(200);
/// How long Raft and the API get to stop.
const STOP_DEADLINE: Duration = Duration::from_millis(250);
/// A node that has accepted no append for this long follows no leader, as its status says,
/// whatever its stored vote names: openraft reports the leader of the last vote it committed,
/// so a node cut off, or restarted with another secret, went on naming a leader it cannot hear.
/// A second is a few dozen heartbeats, so a late one or two never blank it.
const FOLLOWS_WITHIN: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum RunDaemonError {
    #[error(transparent)]
    LoadConfig(#[from] LoadConfigError),
    #[error("cannot listen on {address}: {source}")]
    Listen {
        address: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot listen for heartbeat datagrams on UDP {address}: {source}")]
    ListenDatagrams {
        address: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot set up VIP control (netlink and AF_PACKET sockets): {0}")]
    SetUpVips(#[source] crate::vip::VipError),
    #[error("cannot start the VIP thread: {0}")]
    StartVipThread(#[source] std::io::Error),
    #[error(transparent)]
    OpenStore(#[from] store::OpenStoreError),
    #[error("invalid Raft timing: {0}")]
    RaftConfig(#[source] Box<openraft::ConfigError>),
    #[error("cannot start Raft: {0}")]
    StartRaft(#[source] Box<Fatal>),
    #[error("cannot initialise the cluster membership: {0}")]
    Initialize(String),
    #[error("the API server failed: {0}")]
    Serve(#[source] std::io::Error),
    #[error("stopped because {0}; the VIPs were released")]
    Fatal(String),
}

/// `raftvip run`: clean start, clean exit. A VIP a previous run left behind is removed before
/// anything else (config, store, Raft, API) can fail, and whatever this run held is gone when
/// it returns. Runs until `shutdown` completes, then stops in order.
pub async fn run(path: &Path, shutdown: impl Future<Output = ()>) -> Result<(), RunDaemonError> {
    let hangup = hangup_signal();
    let vips = Config::read(path)
        .map(|c| c.own_vips().to_vec())
        .unwrap_or_default();
    crate::release::release_and_log(&vips, "left by a previous run; this node holds nothing yet");
    let result = match Config::load(path) {
        Ok((config, secret)) => run_node(path, config, secret, shutdown, hangup).await,
        Err(e) => Err(e.into()),
    };
    crate::release::release_and_log(&vips, "still bound at exit");
    result
}

/// Runs one node: starts every part, waits for `shutdown` or a fatal stop, stops in order;
/// reloads `path` on SIGHUP meanwhile.
async fn run_node(
    path: &Path,
    config: Config,
    secret: Secret,
    shutdown: impl Future<Output = ()>,
    mut hangup: Option<tokio::signal::unix::Signal>,
) -> Result<(), RunDaemonError> {
    // The VIP thread and the health monitor end with this token, after everything else.
    let background = CancellationToken::new();
    let _stop_background = background.clone().drop_guard();
    let mut node = start(path, Arc::new(config), secret, &background).await?;
    tracing::info!(
        node_id = node.config.node_id,
        cluster = %node.config.cluster,
        listen = %node.config.listen,
        role = node.config.own_role().name(),
        "raftvip running"
    );
    let mut shutdown = std::pin::pin!(shutdown);
    let fatal = loop {
        tokio::select! {
            _ = &mut shutdown => break None,
            result = &mut node.api => break Some(format!("the API server {}", ended(result))),
            result = &mut node.supervisor => {
                break Some(format!("the supervisor task {}", ended(result)))
            }
            why = first_fatal(&node.raft, node.health.boxed_clone()) => break Some(why),
            Some(()) = next_hangup(&mut hangup) => {
                crate::reload::log(&node.reloader.reload().outcome, "SIGHUP");
            }
        }
    };
    node.stop(fatal).await
}

/// The running node's parts, in the order they stop.
struct Node {
    config: Arc<Config>,
    systemd: JoinHandle<()>,
    systemd_stop: CancellationToken,
    supervisor: JoinHandle<Option<HookContext>>,
    supervisor_stop: CancellationToken,
    vips: Arc<dyn VipHolder>,
    raft: Raft,
    api: JoinHandle<std::io::Result<()>>,
    api_stop: CancellationToken,
    health: Box<dyn HealthFeed>,
    notifier: Arc<Notifier>,
    reloader: Arc<Reloader>,
}

/// Starts every part (see the module docs for the order).
async fn start(
    path: &Path,
    config: Arc<Config>,
    secret: Secret,
    background: &CancellationToken,
) -> Result<Node, RunDaemonError> {
    // Requests signed before this are refused (see auth): peers' requests queued in the listen
    // backlog while the node starts up were signed after it.
    let started = std::time::SystemTime::now();
    // This (the runtime) thread carries heartbeats and the fence: real-time class first, so
    // the VIP thread started next can take it too (crate::realtime).
    crate::realtime::enter(&config.process);
    let listeners = bind_listeners(&config).await?;
    let vips = start_vips(&config, background)?;
    let (health, haproxy_settings) = start_health(&config, background);
    let (log, state_machine) = store::open(&config.data_dir, &config.cluster, config.node_id)?;
    let reloadable_secret = secret.clone();
    let cluster = state_machine.subscribe();
    let timing = Timing::from_config(&config);
    let vote_gate = timing.vote_gate(state_machine.created_at_open(), Instant::now());
    // Armed only now: opening the store turns redb's panics on a damaged file into an error.
    if !config.is_witness() {
        crate::release::release_on_panic(config.own_vips().to_vec());
    }
    let auth = Arc::new(
        Authenticator::new(secret, &config.cluster, config.node_id).accepting_since(started),
    );
    let contacts = Arc::new(Contacts::default());
    let peer_client = PeerClient::new(auth.clone());
    let heartbeat_fallbacks = Arc::new(AtomicU64::new(0));
    let network = Network::new(
        peer_client.clone(),
        contacts.clone(),
        heartbeat_fallbacks.clone(),
    );
    let raft = start_raft(&config, network, &peer_client, log.clone(), state_machine).await?;
    let members = start_members(&config, &raft, &peer_client, log.clone(), background)?;

    let peers = SupervisorPeers::new(&raft, peer_client.clone(), log.clone(), contacts.clone());
    let notifier = Arc::new(Notifier::new(&config));
    let (state_tx, state_rx) = watch::channel(SupervisorState::default());
    let (setup_tx, setup_rx) = watch::channel(Setup::from_config(&config));
    let supervisor = Supervisor::new(
        &config,
        driver::Parts {
            raft: raft.clone(),
            health: health.boxed_clone(),
            cluster: cluster.clone(),
            vips: vips.clone(),
            peers: Arc::new(peers),
            state: state_tx,
            notifier: notifier.clone(),
            member: members.voter(),
            reload: setup_rx,
        },
    );
    let inputs = supervisor.inputs();
    let reloader = Arc::new(Reloader::new(
        path,
        config.clone(),
        reloadable_secret,
        Live {
            vips: vips.clone(),
            haproxy: haproxy_settings,
            notifier: notifier.clone(),
            supervisor: setup_tx,
            members: membership::on_reload(members.clone()),
        },
    ));
    let (supervisor, supervisor_stop) = spawn_stoppable(|stop| supervisor.run(stop));

    let view = LiveNode {
        config: config.clone(),
        raft: raft.clone(),
        health: health.boxed_clone(),
        cluster,
        vips: vips.clone(),
        supervisor: state_rx.clone(),
        contacts,
        rejected: Arc::new(AtomicU64::new(0)),
        heartbeat_fallbacks,
        timing,
        vote_gate,
        log,
        members,
        reloader: reloader.clone(),
        inputs,
    };
    let (api, api_stop) = start_api(listeners, view, auth, peer_client);
    let (metrics, every) = (raft.metrics(), config.timing.reconcile());
    let (systemd, systemd_stop) =
        spawn_stoppable(|stop| crate::systemd::run(metrics, state_rx, every, stop));
    Ok(Node {
        config,
        systemd,
        systemd_stop,
        supervisor,
        supervisor_stop,
        vips,
        raft,
        api,
        api_stop,
        health,
        notifier,
        reloader,
    })
}

impl Node {
    /// The whole shutdown order; `fatal` says why when the node cannot be trusted to lead.
    async fn stop(mut self, fatal: Option<String>) -> Result<(), RunDaemonError> {
        crate::systemd::stopping();
        self.systemd_stop.cancel();
        let _ = (&mut self.systemd).await;
        let stop_hook = self.stop_supervisor(fatal.as_deref()).await;
        let why = if fatal.is_some() {
            "fatal error"
        } else {
            "stopped"
        };
        self.vips.set_held(false, why);
        if !self.vips.wait_applied(VIP_RELEASE_DEADLINE) {
            tracing::warn!("the VIP thread did not confirm the release in time");
        }
        if let Some(context) = stop_hook {
            self.notifier.fire(Event::Stop, &context);
        }
        if tokio::time::timeout(STOP_DEADLINE, self.raft.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("raft did not stop in time");
        }
        self.api_stop.cancel();
        let api_result = match fatal {
            Some(_) => {
                self.api.abort();
                Ok(Ok(()))
            }
            None => tokio::time::timeout(STOP_DEADLINE, &mut self.api)
                .await
                .unwrap_or(Ok(Ok(()))),
        };
        // Last, with nothing left to hand over: the hooks of STOP run to the end before the
        // runtime ends; STOP may run two (its own and the generic script), each bounded.
        let hooks = self.reloader.config().notify.timeout() * 2;
        if tokio::time::timeout(hooks, self.notifier.flush())
            .await
            .is_err()
        {
            tracing::warn!("notify hooks still running at exit");
        }
        if let Some(why) = fatal {
            return Err(RunDaemonError::Fatal(why));
        }
        tracing::info!("stopped");
        match api_result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(RunDaemonError::Serve(e)),
            Err(join) => Err(RunDaemonError::Serve(std::io::Error::other(join))),
        }
    }

    /// Stops the supervisor: at once when `fatal` (no handover: not to be trusted to lead),
    /// else after it handed over. Returns the STOP hook's context when it finished.
    async fn stop_supervisor(&mut self, fatal: Option<&str>) -> Option<HookContext> {
        if let Some(why) = fatal {
            tracing::error!(why, "fatal: releasing the VIPs and exiting");
            self.supervisor.abort();
            return None;
        }
        tracing::info!("stopping: handing over leadership if leader, then releasing the VIPs");
        self.supervisor_stop.cancel();
        let bound = STOP_HANDOVER_BOUND + SUPERVISOR_STOP_SLACK;
        match tokio::time::timeout(bound, &mut self.supervisor).await {
            Ok(finished) => finished.ok().flatten(),
            Err(_) => {
                tracing::warn!(
                    "the supervisor did not stop in time; releasing the VIPs without it"
                );
                self.supervisor.abort();
                None
            }
        }
    }
}

/// Serves peers, status and metrics on the listeners, and heartbeat datagrams.
fn start_api(
    listeners: Listeners,
    view: LiveNode,
    auth: Arc<Authenticator>,
    peer_client: PeerClient,
) -> (JoinHandle<std::io::Result<()>>, CancellationToken) {
    let (raft, contacts, rejected) = (
        view.raft.clone(),
        view.contacts.clone(),
        view.rejected.clone(),
    );
    let max_connections = view.config.limits.max_connections;
    let view = Arc::new(view);
    let peer_server = Arc::new(PeerServer::new(
        raft,
        auth,
        peer_client,
        view.clone(),
        contacts,
        rejected,
    ));
    let state = Arc::new(ApiState::new(view, peer_server.clone(), max_connections));
    let (peer, status) = (listeners.peer, listeners.status);
    let (api, stop) = spawn_stoppable(|stop| api::serve(peer, status, state, stop));
    let heartbeats = listeners.heartbeats;
    tokio::spawn(datagram::serve(heartbeats, peer_server, stop.clone()));
    (api, stop)
}

/// Spawns a task that runs until its token is cancelled.
fn spawn_stoppable<F>(
    task: impl FnOnce(CancellationToken) -> F,
) -> (JoinHandle<F::Output>, CancellationToken)
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let stop = CancellationToken::new();
    (tokio::spawn(task(stop.clone())), stop)
}

/// What the node listens on.
struct Listeners {
    /// Peers' signed HTTP requests, status and metrics, on `listen`.
    peer: TcpListener,
    /// Heartbeat datagrams, on the same address and port as `peer` (UDP).
    heartbeats: UdpSocket,
    /// Status and metrics, if `status_listen` is set.
    status: Option<TcpListener>,
}

/// Binds the [`Listeners`]; a taken address or port fails the start.
async fn bind_listeners(config: &Config) -> Result<Listeners, RunDaemonError> {
    let bind = |address| async move {
        TcpListener::bind(address)
            .await
            .map_err(|source| RunDaemonError::Listen { address, source })
    };
    let peer = bind(config.listen).await?;
    // The port the TCP listener got, should `listen` leave the choice to the kernel (port 0).
    let address = peer.local_addr().unwrap_or(config.listen);
    let heartbeats = UdpSocket::bind(address)
        .await
        .map_err(|source| RunDaemonError::ListenDatagrams { address, source })?;
    let status = match config.status_listen {
        Some(address) => Some(bind(address).await?),
        None => None,
    };
    Ok(Listeners {
        peer,
        heartbeats,
        status,
    })
}

/// The VIP layer: on its own thread so it never delays heartbeats (issue 13); nothing on a
/// witness. A voter without VIPs runs the thread too, so a reload can add its first VIP.
fn start_vips(
    config: &Config,
    background: &CancellationToken,
) -> Result<Arc<dyn VipHolder>, RunDaemonError> {
    if config.is_witness() {
        return Ok(Arc::new(NoVips));
    }
    let own = config.own_vips();
    let vips = Vips::linux_leased(own, &config.announce, &config.vip_lease)
        .map_err(RunDaemonError::SetUpVips)?;
    let worker = VipWorker::spawn(vips, config.timing.reconcile(), background.clone())
        .map_err(RunDaemonError::StartVipThread)?;
    Ok(Arc::new(worker))
}

/// HAProxy's health monitor and the sender of its settings (for reloads), or no gate (a
/// witness, or no `[haproxy]`).
fn start_health(
    config: &Config,
    background: &CancellationToken,
) -> (
    Box<dyn HealthFeed>,
    Option<watch::Sender<crate::config::HaproxyConfig>>,
) {
    match config.own_haproxy() {
        Some(haproxy) => {
            let (settings, receiver) = watch::channel(haproxy.clone());
            let monitor =
                crate::health::spawn_reloadable_haproxy_monitor(receiver, background.clone());
            (Box::new(monitor), Some(settings))
        }
        None => (Box::new(NoHealthGate), None),
    }
}

/// Starts Raft with elections off (the supervisor switches them) and the static membership.
async fn start_raft(
    config: &Config,
    network: Network,
    peer_client: &PeerClient,
    log: store::LogStore,
    state_machine: store::StateMachine,
) -> Result<Raft, RunDaemonError> {
    let raft_config = openraft::Config {
        cluster_name: config.cluster.clone(),
        heartbeat_interval: config.timing.heartbeat_ms,
        election_timeout_min: config.timing.election_timeout_ms[0],
        election_timeout_max: config.timing.election_timeout_ms[1],
        // Elections stay off until the supervisor has a healthy verdict.
        enable_elect: false,
        ..Default::default()
    }
    .validate()
    .map_err(|e| RunDaemonError::RaftConfig(Box::new(e)))?;
    let raft = Raft::new(
        config.node_id,
        Arc::new(raft_config),
        network,
        log,
        state_machine,
    )
    .await
    .map_err(|e| RunDaemonError::StartRaft(Box::new(e)))?;
    initialize_membership(&raft, config, peer_client).await?;
    Ok(raft)
}

/// The membership side: follows Raft until the background token ends.
fn start_members(
    config: &Config,
    raft: &Raft,
    peer_client: &PeerClient,
    store: store::LogStore,
    background: &CancellationToken,
) -> Result<Arc<Members>, RunDaemonError> {
    let file = membership::addresses(&config.peers);
    let members = Members::new(
        config.node_id,
        raft.clone(),
        peer_client.clone(),
        file,
        store,
    )
    .map_err(|source| store::OpenStoreError::Read {
        path: config.data_dir.join(store::DB_FILE),
        what: "removal record",
        source,
    })?;
    tokio::spawn(members.clone().run(background.clone()));
    Ok(members)
}

/// Every founding node initialises the same membership; all but the first see "not allowed".
/// A fresh box added to a running cluster does not: it waits for the leader to add it.
async fn initialize_membership(
    raft: &Raft,
    config: &Config,
    peer_client: &PeerClient,
) -> Result<(), RunDaemonError> {
    let file = membership::addresses(&config.peers);
    if !membership::should_bootstrap(config.node_id, raft, peer_client, &file).await {
        return Ok(());
    }
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

/// The supervisor's view of the peers: the requests, and when a leader was last heard from.
/// Here, not in the supervisor or the peer module, so neither imports the other.
struct SupervisorPeers {
    requests: PeerRequests,
    contacts: Arc<Contacts>,
}

impl SupervisorPeers {
    fn new(raft: &Raft, client: PeerClient, log: store::LogStore, contacts: Arc<Contacts>) -> Self {
        let metrics = raft.metrics();
        let voters = Box::new(move || MembershipView::of(&metrics.borrow()).voters());
        Self {
            requests: PeerRequests::new(client, voters, log),
            contacts,
        }
    }
}

impl Peers for SupervisorPeers {
    async fn hand_over(
        &self,
        me: NodeId,
        to: Option<NodeId>,
        keeping_vips: bool,
    ) -> Option<NodeId> {
        self.requests.hand_over(me, to, keeping_vips).await
    }
    async fn tell_held(&self, me: NodeId) -> Option<NodeId> {
        self.requests.tell_held(me).await
    }
    async fn pre_vote(&self, me: NodeId) -> bool {
        self.requests.pre_vote(me).await
    }
    fn last_leader_contact(&self) -> Option<Instant> {
        self.contacts.last_leader_contact()
    }
}

/// The running node as the API sees it.
struct LiveNode {
    config: Arc<Config>,
    raft: Raft,
    health: Box<dyn HealthFeed>,
    cluster: watch::Receiver<ClusterState>,
    vips: Arc<dyn VipHolder>,
    supervisor: watch::Receiver<SupervisorState>,
    contacts: Arc<Contacts>,
    rejected: Arc<AtomicU64>,
    /// Times a peer answered HTTP but not its heartbeat datagram (see `peer::datagram`).
    heartbeat_fallbacks: Arc<AtomicU64>,
    /// The timing the grant rules apply (the supervisor's own).
    timing: Timing,
    vote_gate: VoteGate,
    /// This node's log, which a pre-vote's candidate must not be behind.
    log: store::LogStore,
    members: Arc<Members>,
    reloader: Arc<Reloader>,
    /// The supervisor's inputs, for what peers and the operator ask (handover, transfer).
    inputs: tokio::sync::mpsc::Sender<Input>,
}

impl StatusView for LiveNode {
    fn status(&self) -> Status {
        // The config in force: a reload may have made this node a witness.
        let config = self.reloader.config();
        let m = self.raft.metrics().borrow().clone();
        let sup = self.supervisor.borrow().clone();
        let cluster = self.cluster.borrow().clone();
        let health = self.health.status();
        let members = MembershipView::of(&m);
        let role = match m.state {
            ServerState::Leader => RaftRole::Leader,
            ServerState::Candidate => RaftRole::Candidate,
            ServerState::Learner => RaftRole::Learner,
            ServerState::Shutdown => RaftRole::Shutdown,
            ServerState::Follower if config.is_witness() => RaftRole::Witness,
            ServerState::Follower => RaftRole::Follower,
        };
        Status {
            cluster: config.cluster.clone(),
            node_id: config.node_id,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            role,
            leader_id: m.current_leader.filter(|&leader| {
                leader == config.node_id
                    || self
                        .contacts
                        .last_leader_contact()
                        .is_some_and(|at| at.elapsed() < FOLLOWS_WITHIN)
            }),
            term: m.current_term,
            millis_since_quorum_ack: m
                .millis_since_quorum_ack
                .filter(|_| role == RaftRole::Leader),
            holds_vips: sup.holds_vips,
            decision: sup.reason.to_string(),
            candidate_for_leader: sup.may_lead,
            healthy: self.health.is_healthy(),
            health,
            maintenance: cluster.in_maintenance(config.node_id),
            vips: self.vips.status(),
            peers: members
                .nodes
                .into_iter()
                .map(|(id, address)| PeerStatus {
                    id,
                    address,
                    last_contact_ms: self.contacts.age(id).map(|a| a.as_millis() as u64),
                    maintenance: cluster.in_maintenance(id),
                })
                .collect(),
            counters: Counters {
                leader_changes: sup.leader_changes,
                rejected_requests: self.rejected.load(Ordering::Relaxed),
                heartbeat_fallbacks: self.heartbeat_fallbacks.load(Ordering::Relaxed),
                handovers: sup.handovers,
                fence_releases: self.vips.fence_releases(),
                planned_overlaps: sup.planned_overlaps,
            },
            voters_may_fail: config.tolerance().may_fail as u64,
            failover_duration: sup.failover_duration.clone(),
            planned_overlap: sup.planned_overlap,
            overlap_duration: sup.overlap_duration.clone(),
            scheduling: crate::realtime::effective(),
            membership: Some(self.members.status()),
        }
    }
}

impl LocalNode for LiveNode {
    fn can_lead(&self) -> Result<(), String> {
        self.supervisor.borrow().can_lead()
    }

    fn grant_prevote(
        &self,
        candidate: NodeId,
        candidate_last_log: Option<LogId>,
    ) -> Result<(), String> {
        let my_last_log = self
            .log
            .last_log_id()
            .map_err(|e| format!("cannot read this node's log: {e}"))?;
        if candidate_last_log < my_last_log {
            // It cannot win: if nobody who may lead can, this node may have to stand.
            let _ = self.inputs.try_send(Input::CandidateBehind);
        }
        let m = self.raft.metrics().borrow().clone();
        let supervisor = self.supervisor.borrow().clone();
        self.timing.grant_prevote(&PrevoteQuestion {
            candidate_last_log,
            my_last_log,
            leader: m.state == ServerState::Leader,
            quorum_ack_age: m.millis_since_quorum_ack.map(Duration::from_millis),
            current_leader: m.current_leader,
            leader_contact_age: self.contacts.last_leader_contact().map(|at| at.elapsed()),
            candidate: m.state == ServerState::Candidate,
            may_lead: supervisor.may_lead,
            own_election_age: supervisor.elected_at.map(|at| at.elapsed()),
            other_candidate: self
                .contacts
                .last_candidate()
                .filter(|c| c.id != candidate)
                .map(|c| (c.id, c.at.elapsed(), c.last_log)),
        })
    }

    fn peer_address(&self, id: NodeId) -> Option<String> {
        MembershipView::of(&self.raft.metrics().borrow())
            .nodes
            .remove(&id)
    }

    fn change_members(
        &self,
        request: MembersRequest,
    ) -> NodeFuture<Result<MembershipView, String>> {
        let members = self.members.clone();
        Box::pin(async move { members.change(request).await.map_err(|e| e.to_string()) })
    }

    fn removed(&self, notice: RemovedNotice) {
        self.members.removed(&notice);
    }

    fn asked_to_take_over(&self, old_holder: IpAddr) {
        let _ = self.inputs.try_send(Input::AskedToTakeOver { old_holder });
    }

    fn successor_holds(&self, from: NodeId) -> NodeFuture<bool> {
        let handing_over = matches!(
            self.supervisor.borrow().reason,
            Reason::HandingOver | Reason::PlannedOverlap
        );
        if !handing_over
            || self
                .inputs
                .try_send(Input::SuccessorHolds { from })
                .is_err()
        {
            return Box::pin(std::future::ready(false));
        }
        let (mut supervisor, vips) = (self.supervisor.clone(), self.vips.clone());
        Box::pin(async move {
            let bound = OVERLAP_BOUND + SUPERVISOR_STOP_SLACK;
            let released = tokio::time::timeout(bound, supervisor.wait_for(|s| !s.holds_vips))
                .await
                .is_ok_and(|r| r.is_ok());
            if released {
                let _ =
                    tokio::task::spawn_blocking(move || vips.wait_applied(VIP_RELEASE_DEADLINE))
                        .await;
            }
            released
        })
    }

    fn transfer(&self, to: NodeId, or_any: bool) -> NodeFuture<Result<NodeId, String>> {
        let reason = self.supervisor.borrow().reason;
        if reason != Reason::LeaderWithQuorum {
            return Box::pin(std::future::ready(Err(format!(
                "this leader cannot hand over now: {reason}"
            ))));
        }
        if self
            .inputs
            .try_send(Input::Transfer { to: Some(to) })
            .is_err()
        {
            return Box::pin(std::future::ready(Err(
                "the supervisor is busy or stopping".to_owned(),
            )));
        }
        let (mut metrics, mut supervisor) = (self.raft.metrics(), self.supervisor.clone());
        let me = metrics.borrow().id;
        Box::pin(async move {
            // Done when another node leads and this node released (its successor holds the
            // VIPs). With five or more voters the others' leases refuse `to` until they run
            // out; should `to` still not win then, another follower may: fine for `any`,
            // reported for a named target.
            let done = async {
                let leader = metrics
                    .wait_for(|m| {
                        m.state != ServerState::Leader && m.current_leader.is_some_and(|l| l != me)
                    })
                    .await
                    .map(|m| m.current_leader)?;
                supervisor.wait_for(|s| !s.holds_vips).await.map(|_| leader)
            };
            match tokio::time::timeout(TRANSFER_BOUND, done).await {
                Ok(Ok(Some(leader))) if leader == to || or_any => Ok(leader),
                Ok(Ok(Some(leader))) => Err(format!(
                    "node {leader} won the election instead of node {to}, and the VIPs went \
                     with it (see both nodes' logs)"
                )),
                _ => Err(format!(
                    "node {to} did not take over within {} ms (see both nodes' logs)",
                    TRANSFER_BOUND.as_millis()
                )),
            }
        })
    }

    fn reload(&self, path: &str) -> NodeFuture<ReloadOutcome> {
        let reloaded = self.reloader.reload_file(path);
        crate::reload::log(&reloaded.outcome, "raftvip reload");
        let mut outcome = reloaded.outcome;
        Box::pin(async move {
            if let Some(change) = reloaded.membership {
                let waited = tokio::time::timeout(membership::RELOAD_WAIT, change).await;
                outcome.membership = Some(waited.unwrap_or(MembershipOutcome::Pending));
            }
            outcome
        })
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

/// How a task that should have run until stopped ended, for the fatal-stop message.
fn ended<T: std::fmt::Debug>(result: Result<T, tokio::task::JoinError>) -> String {
    match result {
        Ok(value) => format!("ended unexpectedly ({value:?})"),
        Err(e) if e.is_panic() => "panicked".to_owned(),
        Err(e) => format!("was cancelled ({e})"),
    }
}

/// Completes with the reason when Raft has stopped with a fatal error (a store write failed)
/// or the health monitor stopped reporting. Driven by events, not a timer: both channels close
/// when their task ends (openraft drops its metrics senders when its core returns, after it
/// published the error). It watches Raft's server metrics, which change with the role, vote,
/// leader and membership only, not the full metrics, which change with every heartbeat.
async fn first_fatal(raft: &Raft, mut health: Box<dyn HealthFeed>) -> String {
    let mut server = raft.server_metrics();
    tokio::select! {
        () = async { while server.changed().await.is_ok() {} } => {
            match &raft.metrics().borrow().running_state {
                Err(fatal) => format!("Raft stopped with a fatal error: {fatal}"),
                Ok(()) => "Raft stopped".to_owned(),
            }
        }
        () = async { while health.changed().await {} } => {
            "the health monitor stopped reporting".to_owned()
        }
    }
}

/// SIGHUP, or None when it cannot be handled (then a reload needs a restart; logged).
fn hangup_signal() -> Option<tokio::signal::unix::Signal> {
    use tokio::signal::unix::{signal, SignalKind};
    signal(SignalKind::hangup())
        .inspect_err(|e| tracing::error!(error = %e, "cannot handle SIGHUP: reload with a restart"))
        .ok()
}

/// The next SIGHUP; never without a handler.
async fn next_hangup(hangup: &mut Option<tokio::signal::unix::Signal>) -> Option<()> {
    match hangup {
        Some(signal) => signal.recv().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A one-node Raft on a fresh store in `dir`, with its network pointing nowhere.
    async fn lone_raft(dir: &Path) -> Raft {
        let config = Config::parse(&format!(
            "cluster = \"t\"\nnode_id = 1\nlisten = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n\
             secret_file = \"/nonexistent\"\naccept_no_failover = true\n\
             [[peer]]\nid = 1\naddress = \"127.0.0.1:9\"\n",
            dir.display()
        ))
        .unwrap();
        let (log, state_machine) = store::open(dir, "t", 1).unwrap();
        let auth = Arc::new(Authenticator::new(Secret::new(vec![7; 32]), "t", 1));
        let client = PeerClient::new(auth);
        let network = Network::new(client.clone(), Arc::default(), Arc::default());
        start_raft(&config, network, &client, log, state_machine)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn first_fatal_reports_raft_stopping_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let raft = lone_raft(dir.path()).await;
        let watcher = first_fatal(&raft, Box::new(NoHealthGate));
        tokio::pin!(watcher);
        // Nothing to report while Raft runs. 110 ms: just past where a 100 ms poll would
        // have looked, so polling could not pass the bound below.
        assert!(
            tokio::time::timeout(Duration::from_millis(110), &mut watcher)
                .await
                .is_err()
        );
        raft.shutdown().await.unwrap();
        let why = tokio::time::timeout(Duration::from_millis(50), watcher)
            .await
            .expect("reported within 50 ms of Raft's end");
        assert!(why.starts_with("Raft stopped"), "{why}");
    }

    #[tokio::test]
    async fn first_fatal_reports_a_health_monitor_that_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let raft = lone_raft(dir.path()).await;
        let (tx, rx) = watch::channel(crate::health::Health::initial());
        let watcher = first_fatal(&raft, Box::new(rx));
        tokio::pin!(watcher);
        tx.send_modify(|h| h.healthy = true);
        assert!(
            tokio::time::timeout(Duration::from_millis(110), &mut watcher)
                .await
                .is_err(),
            "a new verdict is not a stop"
        );
        drop(tx);
        let why = tokio::time::timeout(Duration::from_millis(50), watcher)
            .await
            .expect("reported within 50 ms of the monitor's end");
        assert_eq!(why, "the health monitor stopped reporting");
        raft.shutdown().await.unwrap();
    }
}
