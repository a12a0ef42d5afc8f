//! Precursor's metadata quorum (issue 12): openraft among the brokers' control planes.
//!
//! **What is replicated** ([`MetadataState`]): the registered brokers (incarnation, fenced,
//! rack), every topic's partitions (replicas, leader, leader epoch, ISR) and settings, the
//! next producer id, and the consumer groups' committed offsets. Every change is a
//! [`MetadataCommand`] in the Raft log, applied in log order by a deterministic, total
//! `apply` that answers a [`MetadataReply`] (a typed [`Refusal`] changes nothing). Raft is
//! not on the message path: the data planes replicate partitions lcore to lcore, the
//! quorum only says who leads at which epoch and who is in sync.
//!
//! **Raft**: openraft with pre-vote enabled (a voter cut off and healed does not raise the
//! term of a healthy leader), the log and vote on disk (fdatasync before an append is
//! reported flushed), snapshots on disk (tmp + fsync + rename) and the log purged after
//! them ([`store`]). TCP among the voters with length-prefixed frames ([`network`]). Every
//! configured voter starts with the same voter map; on a fresh directory the voter with
//! the lowest id initializes the group, the others wait for it; a restart never
//! initializes again.
//!
//! **The lease rule** ([`controller`]): the controller runs on the Raft leader. It records
//! each broker heartbeat's arrival, accepts it after confirming its leadership with a
//! quorum, and proposes `FenceBroker` for a broker not heard from for
//! `broker_session_ms` (a new leader first gives every broker a full session). The broker
//! reads its clock *before* sending a heartbeat and trusts its lease until
//! `send_time + broker_session_ms - lease_margin_ms`: its lease ends before anyone can
//! fence it, so an old leader never acknowledges after a new one leads.
//!
//! **Timers** ([`QuorumTimings`], defaults: Raft heartbeat 50 ms, election timeout
//! 300..600 ms, broker heartbeat 25 ms, session 250 ms, lease margin 50 ms). Shorter
//! timers detect a dead broker or voter sooner (failover in about a session plus one
//! commit) but suspect a live one falsely when a loaded machine — two cores shared by
//! brokers, builds and tests — stalls a control plane or its runtime for longer than the
//! session or the election timeout: a falsely fenced broker loses its leaderships and must
//! register again, a falsely suspected Raft leader costs an election. Longer timers trade
//! detection time for fewer false suspicions; pre-vote keeps a voter that falsely
//! suspects the leader from disrupting it.

#![forbid(unsafe_code)]

pub mod command;
pub mod controller;
pub mod network;
pub mod state;
pub mod store;

pub use command::{MetadataCommand, MetadataReply, OffsetCommit, Refusal};
pub use network::{NetworkFault, TransportError, FRAME_BYTES_MAX};
pub use precursor_config::QuorumTimings;
pub use state::{
    BrokerState, CommittedOffset, MetadataState, OffsetKey, PartitionState, TopicState,
};

use controller::LeaseTable;
use network::{
    read_frame, write_frame, PeerChannel, RaftPeers, Request, RequestFrame, Response, ResponseFrame,
};
use openraft::async_runtime::WatchReceiver;
use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, Raft, ReadPolicy, ServerState, SnapshotPolicy};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use store::{LogStore, StateMachineStore};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

openraft::declare_raft_types!(
    /// The quorum's openraft types: our commands and replies, u64 node ids (our broker
    /// ids), nodes known by their quorum address.
    pub TypeConfig:
        D = MetadataCommand,
        R = MetadataReply,
        NodeId = u64,
        Node = BasicNode,
);

/// A proposal (or heartbeat) waits this long for a leader, at most, in milliseconds;
/// then [`QuorumError::NoLeader`].
pub const PROPOSE_WAIT_MS: u64 = 5_000;
/// Pause between attempts to reach a leader, in milliseconds.
pub const LEADER_RETRY_MS: u64 = 20;
/// Voters in one quorum, at most.
pub const VOTERS_MAX: usize = 7;
/// Log entries since the last snapshot that trigger a new one (default tuning).
pub const SNAPSHOT_LOGS_SINCE_LAST: u64 = 1_000;
/// Log entries kept behind a snapshot for followers slightly behind (default tuning).
pub const SNAPSHOT_LOGS_KEPT: u64 = 100;

/// One voter's configuration.
#[derive(Clone, Debug)]
pub struct QuorumConfig {
    pub node_id: u32,
    /// Every voter, this one included, by broker id: the same map on every voter.
    pub voters: BTreeMap<u32, SocketAddr>,
    /// Where the log, vote and snapshots live (one directory per voter).
    pub dir: PathBuf,
    pub timings: QuorumTimings,
}

/// Knobs beside [`QuorumConfig`] (tests take snapshots early).
#[derive(Clone, Debug)]
pub struct QuorumTuning {
    pub snapshot_logs_since_last: u64,
    pub snapshot_logs_kept: u64,
}

impl Default for QuorumTuning {
    fn default() -> QuorumTuning {
        QuorumTuning {
            snapshot_logs_since_last: SNAPSHOT_LOGS_SINCE_LAST,
            snapshot_logs_kept: SNAPSHOT_LOGS_KEPT,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum QuorumError {
    #[error("quorum config: {0}")]
    Config(String),
    #[error("bind {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("metadata storage: {0}")]
    Storage(#[from] std::io::Error),
    #[error("raft: {0}")]
    Raft(String),
    #[error("no leader within PROPOSE_WAIT_MS")]
    NoLeader,
}

/// The answer to a broker's heartbeat.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatReply {
    /// false: that incarnation is fenced or unknown: register again (a new incarnation).
    pub accepted: bool,
    /// The voter that leads (and answered).
    pub leader_id: u32,
}

/// One voter as this voter sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VoterStatus {
    pub id: u32,
    pub address: SocketAddr,
    /// The last log index known replicated to it (on the leader only).
    pub matched: Option<u64>,
    /// Entries it is behind the leader's log (on the leader only).
    pub lag: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuorumStatus {
    pub node_id: u32,
    pub leader: Option<u32>,
    pub term: u64,
    pub committed: Option<u64>,
    pub last_applied: Option<u64>,
    pub voters: Vec<VoterStatus>,
}

struct QuorumNode {
    node_id: u32,
    voters: BTreeMap<u32, SocketAddr>,
    timings: QuorumTimings,
    raft: Raft<TypeConfig, StateMachineStore>,
    peers: BTreeMap<u32, Arc<PeerChannel>>,
    state: watch::Receiver<Arc<MetadataState>>,
    leases: LeaseTable,
    fault: NetworkFault,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

/// One voter of the metadata quorum. Cheap to clone (one shared node).
#[derive(Clone)]
pub struct Quorum {
    node: Arc<QuorumNode>,
}

fn check_config(config: &QuorumConfig) -> Result<(), QuorumError> {
    let t = &config.timings;
    let problem = if !config.voters.contains_key(&config.node_id) {
        Some("voters must contain node_id".to_string())
    } else if config.voters.len() > VOTERS_MAX {
        Some(format!("more than VOTERS_MAX ({VOTERS_MAX}) voters"))
    } else if config.voters.contains_key(&0) {
        Some("voter id 0 is not a broker id".to_string())
    } else if t.raft_heartbeat_ms == 0 || t.raft_heartbeat_ms >= t.raft_election_timeout_min_ms {
        Some("raft_heartbeat_ms must be in 1..raft_election_timeout_min_ms".to_string())
    } else if t.raft_election_timeout_min_ms >= t.raft_election_timeout_max_ms {
        Some("raft_election_timeout_min_ms must be below the max".to_string())
    } else if t.broker_heartbeat_ms == 0 || t.broker_session_ms <= t.broker_heartbeat_ms {
        Some("broker_session_ms must exceed broker_heartbeat_ms (> 0)".to_string())
    } else {
        None
    };
    match problem {
        Some(problem) => Err(QuorumError::Config(problem)),
        None => Ok(()),
    }
}

impl Quorum {
    /// Starts this voter: binds `voters[node_id]`, recovers from `dir`, joins the group
    /// (the lowest voter id initializes a fresh group).
    pub async fn start(config: QuorumConfig) -> Result<Quorum, QuorumError> {
        Quorum::start_tuned(config, QuorumTuning::default()).await
    }

    pub async fn start_tuned(
        config: QuorumConfig,
        tuning: QuorumTuning,
    ) -> Result<Quorum, QuorumError> {
        check_config(&config)?;
        let addr = config.voters[&config.node_id];
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| QuorumError::Bind { addr, source })?;
        let (published, state) = watch::channel(Arc::new(MetadataState::default()));
        let log = LogStore::open(&config.dir)?;
        let state_machine = StateMachineStore::open(&config.dir, published)?;
        let t = &config.timings;
        let raft_config = openraft::Config {
            cluster_name: "precursor-metadata".to_string(),
            heartbeat_interval: t.raft_heartbeat_ms,
            election_timeout_min: t.raft_election_timeout_min_ms,
            election_timeout_max: t.raft_election_timeout_max_ms,
            enable_pre_vote: Some(true),
            snapshot_policy: SnapshotPolicy::LogsSinceLast(tuning.snapshot_logs_since_last),
            max_in_snapshot_log_to_keep: tuning.snapshot_logs_kept,
            ..Default::default()
        }
        .validate()
        .map_err(|e| QuorumError::Config(e.to_string()))?;
        let fault = NetworkFault::default();
        let peers: BTreeMap<u32, Arc<PeerChannel>> = config
            .voters
            .iter()
            .filter(|(id, _)| **id != config.node_id)
            .map(|(id, addr)| (*id, Arc::new(PeerChannel::new(*addr, fault.clone()))))
            .collect();
        let raft = Raft::new(
            u64::from(config.node_id),
            Arc::new(raft_config),
            RaftPeers {
                channels: peers.clone(),
            },
            log,
            state_machine,
        )
        .await
        .map_err(|e| QuorumError::Raft(e.to_string()))?;
        let node = Arc::new(QuorumNode {
            node_id: config.node_id,
            voters: config.voters.clone(),
            timings: config.timings.clone(),
            raft,
            peers,
            state,
            leases: LeaseTable::default(),
            fault,
            tasks: Mutex::new(Vec::new()),
        });
        let server = tokio::spawn(serve(listener, node.clone()));
        let controller = tokio::spawn(run_controller(node.clone()));
        node.tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend([server, controller]);

        let initialized = node
            .raft
            .is_initialized()
            .await
            .map_err(|e| QuorumError::Raft(e.to_string()))?;
        let lowest = *config
            .voters
            .keys()
            .next()
            .expect("voters checked non-empty");
        if !initialized && config.node_id == lowest {
            let members: BTreeMap<u64, BasicNode> = config
                .voters
                .iter()
                .map(|(id, addr)| (u64::from(*id), BasicNode::new(addr.to_string())))
                .collect();
            if let Err(e) = node.raft.initialize(members).await {
                // Another path (a leader's entries) initialized it first: fine.
                tracing::warn!(error = %e, "metadata quorum: initialize");
            }
        }
        tracing::info!(node_id = config.node_id, %addr, initialized, "metadata quorum voter started");
        Ok(Quorum { node })
    }

    /// Proposes `command`, forwarded to the leader, and waits for its reply as applied.
    /// Waits up to [`PROPOSE_WAIT_MS`] for a leader. A proposal retried after a lost
    /// connection may be applied twice (every command is safe to repeat but
    /// AllocateProducerIds, which then wastes a block).
    pub async fn propose(&self, command: MetadataCommand) -> Result<MetadataReply, QuorumError> {
        let deadline = Instant::now() + Duration::from_millis(PROPOSE_WAIT_MS);
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(QuorumError::NoLeader);
            }
            match self.leader() {
                Some(leader) if leader == self.node.node_id => {
                    match self.node.propose_here(command.clone()).await {
                        Ok(Ok(reply)) => return Ok(reply),
                        Ok(Err(_not_leader)) => {}
                        Err(fatal) => return Err(fatal),
                    }
                }
                Some(leader) => {
                    let request = Request::Propose(command.clone());
                    if let Ok(Response::Propose(reply)) =
                        self.node.peers[&leader].call(request, remaining).await
                    {
                        return Ok(reply);
                    }
                }
                None => {}
            }
            tokio::time::sleep(Duration::from_millis(LEADER_RETRY_MS).min(remaining)).await;
        }
    }

    /// A broker's lease renewal, forwarded to the leader.
    pub async fn broker_heartbeat(
        &self,
        broker: u32,
        incarnation: u64,
    ) -> Result<HeartbeatReply, QuorumError> {
        let deadline = Instant::now() + Duration::from_millis(PROPOSE_WAIT_MS);
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(QuorumError::NoLeader);
            }
            match self.leader() {
                Some(leader) if leader == self.node.node_id => {
                    if let Some(reply) = self.node.heartbeat_here(broker, incarnation).await {
                        return Ok(reply);
                    }
                }
                Some(leader) => {
                    let request = Request::BrokerHeartbeat {
                        broker,
                        incarnation,
                    };
                    let timeout = remaining.min(Duration::from_millis(network::RPC_TIMEOUT_MS));
                    if let Ok(Response::BrokerHeartbeat(reply)) =
                        self.node.peers[&leader].call(request, timeout).await
                    {
                        return Ok(reply);
                    }
                }
                None => {}
            }
            tokio::time::sleep(Duration::from_millis(LEADER_RETRY_MS).min(remaining)).await;
        }
    }

    /// The applied state, updated after each apply.
    pub fn state(&self) -> watch::Receiver<Arc<MetadataState>> {
        self.node.state.clone()
    }

    pub fn status(&self) -> QuorumStatus {
        let metrics = self.node.raft.metrics().borrow_watched().clone();
        let last_log = metrics.last_log_index;
        let voters = self
            .node
            .voters
            .iter()
            .map(|(id, address)| {
                let matched = metrics
                    .replication
                    .as_ref()
                    .and_then(|r| r.get(&u64::from(*id)).cloned())
                    .map(|log_id| log_id.map_or(0, |l| l.index));
                let lag = matched.map(|m| last_log.unwrap_or(0).saturating_sub(m));
                VoterStatus {
                    id: *id,
                    address: *address,
                    matched,
                    lag,
                }
            })
            .collect();
        QuorumStatus {
            node_id: self.node.node_id,
            leader: metrics.current_leader.and_then(|l| u32::try_from(l).ok()),
            term: metrics.current_term,
            committed: metrics.cluster_committed.map(|l| l.index),
            last_applied: metrics.last_applied.map(|l| l.index),
            voters,
        }
    }

    /// A voter about to stop hands the leadership over, so the others need not wait an
    /// election timeout (and brokers' leases need not run out meanwhile): if this voter
    /// leads, it asks `to` (or the voter that has replicated the most) to take over, and
    /// waits up to `wait` for another leader. True when another voter leads (or already
    /// did); false when none took over in time (the others then elect one after their
    /// election timeout, as after a crash).
    pub async fn hand_over(&self, to: Option<u32>, wait: Duration) -> bool {
        let me = self.node.node_id;
        if self.leader() != Some(me) {
            return self.leader().is_some();
        }
        let status = self.status();
        let target = to.filter(|t| *t != me).or_else(|| {
            status
                .voters
                .iter()
                .filter(|v| v.id != me)
                .min_by_key(|v| v.lag.unwrap_or(u64::MAX))
                .map(|v| v.id)
        });
        let Some(target) = target else {
            return false;
        };
        if self
            .node
            .raft
            .trigger()
            .transfer_leader(u64::from(target))
            .await
            .is_err()
        {
            return false;
        }
        let mut metrics = self.node.raft.metrics();
        let moved = tokio::time::timeout(wait, async {
            loop {
                let leader = metrics.borrow_watched().current_leader;
                if leader.is_some_and(|l| l != u64::from(me)) {
                    return;
                }
                if metrics.changed().await.is_err() {
                    return;
                }
            }
        })
        .await;
        moved.is_ok() && self.leader().is_some_and(|l| l != me)
    }

    /// This voter's network fault switch (tests: cut it off, heal it).
    pub fn network_fault(&self) -> NetworkFault {
        self.node.fault.clone()
    }

    /// Builds a snapshot now (else one is built every `snapshot_logs_since_last` entries).
    pub async fn snapshot(&self) -> Result<(), QuorumError> {
        self.node
            .raft
            .trigger()
            .snapshot()
            .await
            .map_err(|e| QuorumError::Raft(e.to_string()))
    }

    /// Stops serving, stops Raft. The directory can be started again.
    pub async fn shutdown(self) {
        let tasks: Vec<JoinHandle<()>> =
            std::mem::take(&mut *self.node.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        for task in &tasks {
            task.abort();
        }
        for task in tasks {
            let _ = task.await;
        }
        if let Err(e) = self.node.raft.shutdown().await {
            tracing::warn!(error = %e, "metadata quorum: raft shutdown");
        }
        tracing::info!(node_id = self.node.node_id, "metadata quorum voter stopped");
    }

    fn leader(&self) -> Option<u32> {
        self.node.leader()
    }
}

impl QuorumNode {
    fn leader(&self) -> Option<u32> {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow_watched();
        metrics.current_leader.and_then(|l| u32::try_from(l).ok())
    }

    fn leading_term(&self) -> Option<u64> {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow_watched();
        let leading = metrics.state == ServerState::Leader
            && metrics.current_leader == Some(u64::from(self.node_id));
        leading.then_some(metrics.current_term)
    }

    /// Proposes on this voter. `Ok(Err(leader))`: this voter does not lead (or stopped
    /// leading); try `leader`.
    async fn propose_here(
        &self,
        command: MetadataCommand,
    ) -> Result<Result<MetadataReply, Option<u32>>, QuorumError> {
        match self.raft.client_write(command).await {
            Ok(response) => Ok(Ok(response.data)),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward))) => {
                Ok(Err(forward.leader_id.and_then(|l| u32::try_from(l).ok())))
            }
            Err(RaftError::APIError(other)) => {
                tracing::debug!(error = %other, "metadata proposal not committed, retrying");
                Ok(Err(None))
            }
            Err(RaftError::Fatal(fatal)) => Err(QuorumError::Raft(fatal.to_string())),
        }
    }

    /// A heartbeat on this voter: `None` if it does not lead (confirmed with a quorum).
    async fn heartbeat_here(&self, broker: u32, incarnation: u64) -> Option<HeartbeatReply> {
        let arrival = Instant::now();
        self.leading_term()?;
        let state = self.state.borrow().clone();
        let accepted = self.leases.heartbeat(&state, broker, incarnation, arrival);
        // Confirm the leadership after the arrival (see controller.rs, the lease rule).
        if self
            .raft
            .ensure_linearizable(ReadPolicy::ReadIndex)
            .await
            .is_err()
        {
            return None;
        }
        Some(HeartbeatReply {
            accepted,
            leader_id: self.node_id,
        })
    }

    async fn handle(&self, request: Request) -> Response {
        let failed = |e: &dyn std::fmt::Display| Response::Failed(e.to_string());
        match request {
            Request::AppendEntries(rpc) => match self.raft.append_entries(rpc).await {
                Ok(response) => Response::AppendEntries(response),
                Err(e) => failed(&e),
            },
            Request::Vote(rpc) => match self.raft.vote(rpc).await {
                Ok(response) => Response::Vote(response),
                Err(e) => failed(&e),
            },
            Request::PreVote(rpc) => match self.raft.pre_vote(rpc).await {
                Ok(response) => Response::Vote(response),
                Err(e) => failed(&e),
            },
            Request::TransferLeader(rpc) => match self.raft.handle_transfer_leader(rpc).await {
                Ok(response) => Response::TransferLeader(response),
                Err(e) => failed(&e),
            },
            Request::Snapshot { vote, meta, state } => {
                let snapshot = openraft::Snapshot {
                    meta,
                    snapshot: state,
                };
                match self.raft.install_full_snapshot(vote, snapshot).await {
                    Ok(response) => Response::Snapshot(response),
                    Err(e) => failed(&e),
                }
            }
            Request::Propose(command) => {
                if self.leading_term().is_none() {
                    return Response::NotLeader {
                        leader: self.leader(),
                    };
                }
                match self.propose_here(command).await {
                    Ok(Ok(reply)) => Response::Propose(reply),
                    Ok(Err(leader)) => Response::NotLeader { leader },
                    Err(e) => failed(&e),
                }
            }
            Request::BrokerHeartbeat {
                broker,
                incarnation,
            } => match self.heartbeat_here(broker, incarnation).await {
                Some(reply) => Response::BrokerHeartbeat(reply),
                None => Response::NotLeader {
                    leader: self.leader(),
                },
            },
        }
    }
}

/// Accepts voters' connections; each is served by its own task, all aborted with this one.
async fn serve(listener: TcpListener, node: Arc<QuorumNode>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    if node.fault.is_isolated() {
                        drop(stream);
                        continue;
                    }
                    let _ = stream.set_nodelay(true);
                    connections.spawn(serve_connection(stream, peer, node.clone()));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "metadata quorum: accept");
                    tokio::time::sleep(Duration::from_millis(LEADER_RETRY_MS)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn serve_connection(mut stream: TcpStream, peer: SocketAddr, node: Arc<QuorumNode>) {
    loop {
        let frame = match read_frame::<RequestFrame>(&mut stream).await {
            Ok(Some(frame)) => frame,
            Ok(None) => return,
            Err(e) => {
                tracing::error!(%peer, error = %e, "metadata quorum: bad frame, connection closed");
                return;
            }
        };
        if node.fault.is_isolated() {
            return;
        }
        let response = node.handle(frame.request).await;
        if node.fault.is_isolated() {
            return;
        }
        let reply = ResponseFrame {
            id: frame.id,
            response,
        };
        if let Err(e) = write_frame(&mut stream, &reply).await {
            tracing::warn!(%peer, error = %e, "metadata quorum: reply not sent, connection closed");
            return;
        }
    }
}

/// The lease controller: every `broker_heartbeat_ms / 2`, on the leader, fences the
/// brokers whose session ran out.
async fn run_controller(node: Arc<QuorumNode>) {
    let tick = Duration::from_millis((node.timings.broker_heartbeat_ms / 2).max(1));
    let session = Duration::from_millis(node.timings.broker_session_ms);
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let Some(term) = node.leading_term() else {
            node.leases.not_leading();
            continue;
        };
        let state = node.state.borrow().clone();
        for command in node.leases.expired(&state, term, Instant::now(), session) {
            let MetadataCommand::FenceBroker { id, incarnation } = command else {
                unreachable!("expired() proposes FenceBroker only");
            };
            let node = node.clone();
            tokio::spawn(async move {
                tracing::warn!(broker = id, incarnation, "broker session expired: fencing");
                match node.propose_here(command).await {
                    Ok(Ok(reply)) => tracing::info!(broker = id, ?reply, "broker fenced"),
                    Ok(Err(_)) => tracing::info!(broker = id, "fence not committed: not leading"),
                    Err(e) => tracing::error!(broker = id, error = %e, "fence failed"),
                }
                node.leases.fence_done(id, incarnation);
            });
        }
    }
}
