//! This broker as a member of the metadata quorum (`cluster.metadata = "quorum"`, issue
//! 12, DESIGN.md §10): the control plane runs one voter of [`precursor_metadata::Quorum`]
//! and three tasks that join it to its own data plane.
//!
//! - **Lease** ([`lease_loop`]): registers the broker under an incarnation (a number that
//!   only grows: the wall clock in ns at registration), then heartbeats the quorum leader
//!   every `broker_heartbeat_ms`. The clock is read *before* a heartbeat is sent; once it
//!   is accepted the data plane may lead until `sent + broker_session_ms -
//!   lease_margin_ms` (CLOCK_MONOTONIC, written into the CnC), which ends before the
//!   controller can fence the broker. A refused heartbeat (fenced) registers a new
//!   incarnation; no answer lets the lease run out on its own.
//! - **Deaths** ([`death_loop`]): the supervisor reports every exit of the data plane at
//!   once; the lease is withdrawn and `FenceBroker` proposed without waiting for a session
//!   to pass, so the partitions it led move to another in-sync replica within one commit.
//!   The next data plane registers a new incarnation (its leaderships get new epochs).
//! - **Apply** ([`apply_loop`]): every committed change of the metadata reaches the data
//!   plane through the command ring: topics this broker holds a replica of are created
//!   there, and each partition's leader, epoch and ISR are sent as `SetLeader` until the
//!   data plane has taken them. On the leader, an ISR the data plane proposes (a follower
//!   fell behind or caught up: the `isr_proposed` gauge) is proposed as `AlterIsr`.
//!
//! - **Leaving** ([`leave`], a controlled shutdown: SIGTERM, `precursor down`, `cluster
//!   stop`): before the data plane stops, every leadership moves to another in-sync
//!   replica in one commit (`DrainBroker`), the data plane is seen to follow, the lease
//!   loop stops, the broker fences itself (out of every ISR, so acks=all waits for nobody
//!   who is going away), and a voter that leads the quorum hands that over too. A
//!   restart then costs producers a leader move, not a session timeout.
//!
//! Static placement is kept: the quorum's replica lists are the ones
//! `ClusterConfig::replicas_for` computes (or `[[topics.create]].replicas`), the same the
//! data planes compute, so a topic created on a data plane and in the quorum agree.

use crate::counters::CountersSnapshot;
use crate::link::Reply;
use crate::{ControlplaneError, Node};
use precursor_config::{ClusterConfig, Config, TopicSpec};
use precursor_metadata::{
    MetadataCommand, MetadataReply, MetadataState, Quorum, QuorumConfig, QuorumError, QuorumStatus,
    Refusal,
};
use precursor_protocol::command::{Command, TopicReplication};
use precursor_protocol::frame::ErrorCode;
use precursor_protocol::topic_config::TopicConfigs;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

const LOG: &str = "precursor-controlplane";

/// How often the apply loop looks again without a metadata change (a data plane that
/// came back, a refused command, an ISR the leader proposes), in milliseconds.
const APPLY_RETRY_MS: u64 = 10;
/// A proposal of this broker's waits this long for its commit, in milliseconds; then it is
/// given up (and retried when still needed).
const PROPOSAL_TIMEOUT_MS: u64 = 2_000;
/// The same failure is reported at most this often, in milliseconds.
const REPORT_INTERVAL_MS: u64 = 5_000;
/// A controlled shutdown waits this long in all for its leaderships to move and be
/// taken, for its fence and for the quorum's hand-over, in milliseconds; then the broker
/// stops anyway (what is left moves when its session runs out, as after a crash).
pub const LEAVE_TIMEOUT_MS: u64 = 5_000;
/// How long a voter that leads waits for another to take over, in milliseconds.
const HAND_OVER_WAIT_MS: u64 = 1_000;

/// This broker's membership: its voter and what it knows of its own registration.
pub struct Member {
    pub quorum: Quorum,
    broker_id: u32,
    /// The registered incarnation (0 before the first registration).
    incarnation: AtomicU64,
    /// Registered and not known to be fenced since.
    registered: AtomicBool,
    /// The lease last given to the data plane (CLOCK_MONOTONIC ns; 0: none).
    lease_until_ns: AtomicU64,
    /// A controlled shutdown has begun: no more heartbeats or registrations.
    leaving: AtomicBool,
}

/// What `precursor status` shows of the quorum on this broker.
pub struct MemberStatus {
    pub quorum: QuorumStatus,
    pub incarnation: u64,
    pub registered: bool,
    /// Milliseconds of lease left (0: none, this broker leads nothing).
    pub lease_left_ms: u64,
}

impl Member {
    pub fn status(&self) -> MemberStatus {
        let until = self.lease_until_ns.load(Ordering::Acquire);
        MemberStatus {
            quorum: self.quorum.status(),
            incarnation: self.incarnation.load(Ordering::Acquire),
            registered: self.registered.load(Ordering::Acquire),
            lease_left_ms: until.saturating_sub(precursor_shm::monotonic_ns()) / 1_000_000,
        }
    }

    /// Proposes `command`, waiting at most [`PROPOSAL_TIMEOUT_MS`].
    pub async fn propose(&self, command: MetadataCommand) -> Result<MetadataReply, QuorumError> {
        let limit = Duration::from_millis(PROPOSAL_TIMEOUT_MS);
        match tokio::time::timeout(limit, self.quorum.propose(command)).await {
            Ok(outcome) => outcome,
            Err(_) => Err(QuorumError::NoLeader),
        }
    }

    /// The committed metadata as this voter has applied it.
    pub fn state(&self) -> Arc<MetadataState> {
        self.quorum.state().borrow().clone()
    }
}

/// Whether this broker serves Kafka clients, and so may coordinate consumer groups: its
/// gateway is on and `[cluster]` names its `kafka` listener.
fn serves_kafka(config: &precursor_config::Config) -> bool {
    config.gateway.enabled && config.cluster.me().is_some_and(|me| !me.kafka.is_empty())
}

/// The voters of `cluster`: every broker, at its `quorum` address.
fn voters(cluster: &ClusterConfig) -> Result<BTreeMap<u32, SocketAddr>, ControlplaneError> {
    cluster
        .brokers
        .iter()
        .map(|broker| {
            broker
                .quorum
                .parse::<SocketAddr>()
                .map(|address| (broker.id, address))
                .map_err(|_| {
                    ControlplaneError::Quorum(QuorumError::Config(format!(
                        "cluster.brokers id {}: quorum {:?} is not an ip:port",
                        broker.id, broker.quorum
                    )))
                })
        })
        .collect()
}

/// Starts this broker's voter and its tasks (`cluster.quorum_enabled()`); the member is
/// put in `node.member`.
pub async fn start(node: &Arc<Node>) -> Result<Vec<JoinHandle<()>>, ControlplaneError> {
    let cluster = &node.config.cluster;
    assert!(cluster.quorum_enabled());
    let dir = node.config.node.data_dir.join("metadata");
    let quorum = Quorum::start(QuorumConfig {
        node_id: cluster.broker_id,
        voters: voters(cluster)?,
        dir: dir.clone(),
        timings: cluster.quorum.clone(),
    })
    .await
    .map_err(ControlplaneError::Quorum)?;
    eprintln!(
        "{LOG}: metadata quorum voter {} of {} on {}, state in {}",
        cluster.broker_id,
        cluster.brokers.len(),
        cluster
            .broker(cluster.broker_id)
            .map_or("?", |b| b.quorum.as_str()),
        dir.display()
    );
    let member = Member {
        quorum,
        broker_id: cluster.broker_id,
        incarnation: AtomicU64::new(0),
        registered: AtomicBool::new(false),
        lease_until_ns: AtomicU64::new(0),
        leaving: AtomicBool::new(false),
    };
    if node.member.set(member).is_err() {
        unreachable!("the member starts once");
    }
    Ok(vec![
        tokio::spawn(lease_loop(node.clone())),
        tokio::spawn(death_loop(node.clone())),
        tokio::spawn(apply_loop(node.clone())),
    ])
}

fn member(node: &Node) -> &Member {
    node.member.get().expect("started before its tasks")
}

/// A rate limit for one kind of report.
struct Reports {
    last: HashMap<String, Instant>,
}

impl Reports {
    fn new() -> Reports {
        Reports {
            last: HashMap::new(),
        }
    }

    fn say(&mut self, key: &str, line: impl FnOnce() -> String) {
        let now = Instant::now();
        let due = self
            .last
            .get(key)
            .is_none_or(|at| now.duration_since(*at) >= Duration::from_millis(REPORT_INTERVAL_MS));
        if due {
            self.last.insert(key.to_string(), now);
            eprintln!("{LOG}: {}", line());
        }
    }
}

/// Registers, then renews the lease every `broker_heartbeat_ms` while a data plane runs.
async fn lease_loop(node: Arc<Node>) {
    let me = member(&node);
    let timings = node.config.cluster.quorum.clone();
    let lease_ns = timings
        .broker_session_ms
        .saturating_sub(timings.lease_margin_ms)
        .saturating_mul(1_000_000);
    let session = Duration::from_millis(timings.broker_session_ms);
    let mut interval = tokio::time::interval(Duration::from_millis(timings.broker_heartbeat_ms));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut reports = Reports::new();
    loop {
        interval.tick().await;
        if me.leaving.load(Ordering::Acquire) {
            return; // the lease runs out; the broker has fenced itself
        }
        if !node.link.state().is_alive() {
            continue; // no data plane: nothing to lead, nothing to lease
        }
        if !me.registered.load(Ordering::Acquire) {
            // Strictly greater than any incarnation before, even if the clock stepped back.
            let incarnation = wall_clock_ns().max(me.incarnation.load(Ordering::Acquire) + 1);
            let command = MetadataCommand::RegisterBroker {
                id: me.broker_id,
                incarnation,
                rack: String::new(),
                kafka: serves_kafka(&node.config),
            };
            match me.propose(command).await {
                Ok(MetadataReply::Done) => {
                    me.incarnation.store(incarnation, Ordering::Release);
                    me.registered.store(true, Ordering::Release);
                    eprintln!(
                        "{LOG}: registered broker {} with the metadata quorum (incarnation {incarnation})",
                        me.broker_id
                    );
                }
                Ok(MetadataReply::Refused(Refusal::StaleIncarnation { recorded, .. })) => {
                    me.incarnation.store(recorded, Ordering::Release);
                }
                Ok(other) => reports.say("register", || format!("registration: {other}")),
                Err(error) => reports.say("register", || format!("registration: {error}")),
            }
            continue;
        }
        let incarnation = me.incarnation.load(Ordering::Acquire);
        let sent_ns = precursor_shm::monotonic_ns();
        let beat = me.quorum.broker_heartbeat(me.broker_id, incarnation);
        match tokio::time::timeout(session, beat).await {
            Ok(Ok(reply)) if reply.accepted => {
                // The data plane may have died and been reported meanwhile.
                if me.registered.load(Ordering::Acquire)
                    && me.incarnation.load(Ordering::Acquire) == incarnation
                {
                    let until = sent_ns + lease_ns;
                    me.lease_until_ns.store(until, Ordering::Release);
                    let _ = node.link.set_lease_until_ns(until);
                }
            }
            Ok(Ok(_)) => {
                eprintln!(
                    "{LOG}: the metadata quorum fenced broker {} (incarnation {incarnation}): \
                     registering again",
                    me.broker_id
                );
                me.registered.store(false, Ordering::Release);
            }
            Ok(Err(error)) => reports.say("heartbeat", || format!("heartbeat: {error}")),
            Err(_) => reports.say("heartbeat", || {
                format!(
                    "heartbeat: no answer within {} ms (the lease runs out)",
                    timings.broker_session_ms
                )
            }),
        }
    }
}

fn wall_clock_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos() as u64)
}

/// Proposes `FenceBroker` of this broker's current incarnation and logs the outcome
/// (`why` starts each line). Not committed: the controller fences it when the session
/// runs out.
async fn fence_self(me: &Member, why: &str) {
    let incarnation = me.incarnation.load(Ordering::Acquire);
    let fence = MetadataCommand::FenceBroker {
        id: me.broker_id,
        incarnation,
    };
    match me.propose(fence).await {
        Ok(MetadataReply::Fenced { leaders_moved }) => eprintln!(
            "{LOG}: {why}: broker {} fenced (incarnation {incarnation}), {leaders_moved} \
             leaderships moved",
            me.broker_id
        ),
        Ok(other) => eprintln!("{LOG}: {why}; fencing: {other}"),
        Err(error) => eprintln!("{LOG}: {why}; fencing: {error}"),
    }
}

/// A data plane that exited is reported at once: lease withdrawn, broker fenced.
async fn death_loop(node: Arc<Node>) {
    let me = member(&node);
    let mut deaths = node.dataplane_deaths.subscribe();
    while deaths.changed().await.is_ok() {
        me.lease_until_ns.store(0, Ordering::Release);
        let _ = node
            .link
            .set_lease_until_ns(precursor_shm::LEASE_EXPIRED_NS);
        if !me.registered.swap(false, Ordering::AcqRel) {
            continue;
        }
        fence_self(me, "the data plane died").await;
    }
}

/// Moves every leadership of `broker` to another in-sync replica (`DrainBroker`, one
/// commit). Returns (moved, stuck).
pub async fn drain(me: &Member, broker: u32) -> Result<(u32, Vec<String>), String> {
    match me
        .propose(MetadataCommand::DrainBroker { id: broker })
        .await
    {
        Ok(MetadataReply::Drained { moved, stuck }) => Ok((moved, stuck)),
        Ok(MetadataReply::Refused(refusal)) => {
            Err(format!("the metadata quorum refused the drain: {refusal}"))
        }
        Ok(other) => Err(format!("the metadata quorum answered {other}")),
        Err(error) => Err(format!(
            "the metadata quorum did not commit the drain: {error}"
        )),
    }
}

/// Partitions this broker's data plane still leads although the committed metadata
/// says another broker does (`None`: the counters cannot be read).
fn led_here_but_moved(node: &Node, me: &Member) -> Option<usize> {
    let counters = CountersSnapshot::read(&node.cnc_dir).ok()?;
    let state = me.state();
    let mut left = 0;
    for (name, topic) in &state.topics {
        let Some(local) = counters.topic(name) else {
            continue;
        };
        for (index, partition) in topic.partitions.iter().enumerate() {
            let here = local.get(index).is_some_and(|p| p.leader == me.broker_id);
            if here && partition.leader != me.broker_id {
                left += 1;
            }
        }
    }
    Some(left)
}

/// A controlled shutdown (see the module's description), bounded by
/// [`LEAVE_TIMEOUT_MS`]. Does nothing outside quorum mode.
pub async fn leave(node: &Node) {
    let Some(me) = node.member.get() else {
        return;
    };
    let limit = Duration::from_millis(LEAVE_TIMEOUT_MS);
    if tokio::time::timeout(limit, leave_within(node, me))
        .await
        .is_err()
    {
        eprintln!(
            "{LOG}: controlled shutdown: not done within {LEAVE_TIMEOUT_MS} ms; stopping anyway"
        );
    }
}

async fn leave_within(node: &Node, me: &Member) {
    let started = Instant::now();
    if me.registered.load(Ordering::Acquire) && node.link.state().is_alive() {
        match drain(me, me.broker_id).await {
            Ok((moved, stuck)) => {
                eprintln!(
                    "{LOG}: controlled shutdown: {moved} leaderships moved to other in-sync \
                     replicas{}",
                    if stuck.is_empty() {
                        String::new()
                    } else {
                        format!(
                            " ({} with no other in-sync replica stay: {stuck:?})",
                            stuck.len()
                        )
                    }
                );
                // The apply loop tells the data plane; wait until it follows.
                while led_here_but_moved(node, me).is_some_and(|left| left > 0) {
                    tokio::time::sleep(Duration::from_millis(APPLY_RETRY_MS)).await;
                }
            }
            Err(error) => eprintln!("{LOG}: controlled shutdown: {error}"),
        }
    }
    me.leaving.store(true, Ordering::Release);
    if me.registered.swap(false, Ordering::AcqRel) {
        fence_self(me, "controlled shutdown (leaving every ISR)").await;
    }
    let wait = Duration::from_millis(HAND_OVER_WAIT_MS);
    if me.quorum.status().leader == Some(me.broker_id) {
        let handed = me.quorum.hand_over(None, wait).await;
        eprintln!(
            "{LOG}: controlled shutdown: quorum leadership {}",
            if handed {
                format!(
                    "handed over to voter {}",
                    me.quorum.status().leader.unwrap_or(0)
                )
            } else {
                "not taken over in time (the others elect a leader)".to_string()
            }
        );
    }
    eprintln!(
        "{LOG}: controlled shutdown done in {} ms",
        started.elapsed().as_millis()
    );
}

/// Leadership of one partition as the quorum committed it: (leader, epoch, ISR sorted).
type Leadership = (u32, u32, Vec<u32>);

/// Packs broker ids one byte each from the lowest (as the ISR gauge and `SetLeader`).
fn pack_broker_ids(ids: &[u32]) -> u64 {
    assert!(ids.len() <= 8, "at most 8 broker ids pack into a u64");
    ids.iter().rev().fold(0u64, |packed, &id| {
        assert!((1..=255).contains(&id));
        (packed << 8) | u64::from(id)
    })
}

fn sorted(ids: &[u32]) -> Vec<u32> {
    let mut ids = ids.to_vec();
    ids.sort_unstable();
    ids
}

/// The replica lists of a topic as the data planes place it.
pub fn placement(
    cluster: &ClusterConfig,
    name: &str,
    partitions: u16,
    factor: u8,
) -> Vec<Vec<u32>> {
    placement_from(cluster, name, 0..partitions, factor)
}

/// The replica lists of partitions `range` of a topic as the data planes place them (a
/// grow's new partitions: the same rule as at creation).
pub fn placement_from(
    cluster: &ClusterConfig,
    name: &str,
    range: std::ops::Range<u16>,
    factor: u8,
) -> Vec<Vec<u32>> {
    range
        .map(|p| cluster.replicas_for(name, p, factor))
        .collect()
}

/// `[[topics.create]]` as a `CreateTopic` for the quorum.
fn configured_topic(config: &Config, spec: &TopicSpec) -> MetadataCommand {
    let factor = spec
        .replication_factor
        .unwrap_or(config.topics.default_replication_factor)
        .max(1);
    let replicas = if spec.replicas.is_empty() {
        placement(&config.cluster, &spec.name, spec.partitions, factor)
    } else {
        spec.replicas.clone()
    };
    let min_insync = spec
        .min_insync_replicas
        .unwrap_or(config.topics.default_min_insync_replicas)
        .clamp(1, factor);
    MetadataCommand::CreateTopic {
        name: spec.name.clone(),
        replicas,
        min_insync,
        unclean_leader_election: false,
        retention_ms: 0,
        retention_bytes: 0,
    }
}

/// Committed metadata -> this broker's data plane; the leader's proposed ISRs -> quorum.
async fn apply_loop(node: Arc<Node>) {
    let me = member(&node);
    let broker = me.broker_id;
    let mut state_changes = me.quorum.state();
    let mut applied: HashMap<(String, u32), Leadership> = HashMap::new();
    // Topic configurations the data plane has taken (as committed).
    let mut applied_configs: HashMap<String, BTreeMap<String, String>> = HashMap::new();
    let mut generation = u64::MAX;
    let mut configured_proposed = false;
    let mut reports = Reports::new();
    let mut interval = tokio::time::interval(Duration::from_millis(APPLY_RETRY_MS));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            changed = state_changes.changed() => if changed.is_err() { return },
            _ = interval.tick() => {}
        }
        let link = node.link.state();
        if !link.is_alive() || !me.registered.load(Ordering::Acquire) {
            continue;
        }
        if !configured_proposed {
            configured_proposed = propose_configured_topics(&node, me, &mut reports).await;
        }
        let now_generation = link.generation.load(Ordering::Acquire);
        if now_generation != generation {
            // A new data plane knows nothing we sent the last one.
            applied.clear();
            applied_configs.clear();
            generation = now_generation;
        }
        let state = state_changes.borrow_and_update().clone();
        // Only a state that holds our registration: a voter that restarted replays its log
        // and publishes older states on the way, whose leaderships are long gone.
        let incarnation = me.incarnation.load(Ordering::Acquire);
        let current = state
            .brokers
            .get(&broker)
            .is_some_and(|b| b.incarnation == incarnation && !b.fenced);
        if !current {
            continue;
        }
        let Ok(counters) = CountersSnapshot::read(&node.cnc_dir) else {
            continue;
        };
        for (name, topic) in &state.topics {
            let holds_replica = topic
                .partitions
                .iter()
                .any(|p| p.replicas.contains(&broker));
            if !holds_replica {
                continue;
            }
            let Some(local) = counters.topic(name) else {
                create_on_dataplane(&node, name, topic, &mut reports).await;
                continue;
            };
            if let Some(configs) = &topic.configs {
                if applied_configs.get(name) != Some(configs)
                    && set_configs(&node, name, configs, &mut reports).await
                {
                    applied_configs.insert(name.clone(), configs.clone());
                }
            }
            if local.len() < topic.partitions.len() {
                // Grown by the quorum (CreatePartitions): the new partitions here first,
                // their leaders on the next pass.
                grow_on_dataplane(&node, name, topic.partitions.len() as u16, &mut reports).await;
                continue;
            }
            for (index, partition) in topic.partitions.iter().enumerate() {
                if !partition.replicas.contains(&broker) {
                    continue;
                }
                let key = (name.clone(), index as u32);
                let want: Leadership = (
                    partition.leader,
                    partition.leader_epoch,
                    sorted(&partition.isr),
                );
                if applied.get(&key) != Some(&want) {
                    if set_leader(&node, name, index as u16, &want, &mut reports).await {
                        applied.insert(key, want);
                    }
                    continue;
                }
                // Taken: on the leader, an ISR change the data plane asks for.
                let Some(info) = local.get(index) else {
                    continue;
                };
                let proposed = sorted(&info.isr_proposed);
                if partition.leader == broker
                    && info.leader == broker
                    && info.leader_epoch == u64::from(partition.leader_epoch)
                    && !proposed.is_empty()
                    && proposed != want.2
                {
                    let alter = MetadataCommand::AlterIsr {
                        topic: name.clone(),
                        partition: index as u32,
                        leader: broker,
                        leader_epoch: partition.leader_epoch,
                        isr: proposed.clone(),
                    };
                    match me.propose(alter).await {
                        Ok(MetadataReply::Partition(_)) => eprintln!(
                            "{LOG}: {name}-{index}: ISR {:?} -> {proposed:?} committed",
                            want.2
                        ),
                        Ok(other) => reports.say(&format!("alter {name}-{index}"), || {
                            format!("{name}-{index}: AlterIsr {proposed:?}: {other}")
                        }),
                        Err(error) => reports.say(&format!("alter {name}-{index}"), || {
                            format!("{name}-{index}: AlterIsr {proposed:?}: {error}")
                        }),
                    }
                }
            }
        }
    }
}

/// Proposes the configured topics once (an existing one is fine); true when done.
async fn propose_configured_topics(node: &Node, me: &Member, reports: &mut Reports) -> bool {
    for spec in &node.config.topics.create {
        match me.propose(configured_topic(&node.config, spec)).await {
            Ok(MetadataReply::TopicCreated { .. })
            | Ok(MetadataReply::Refused(Refusal::TopicExists)) => {}
            Ok(other) => {
                reports.say("configured topics", || {
                    format!("[[topics.create]] {:?}: {other}", spec.name)
                });
                return false;
            }
            Err(error) => {
                reports.say("configured topics", || {
                    format!("[[topics.create]] {:?}: {error}", spec.name)
                });
                return false;
            }
        }
    }
    true
}

/// A committed topic this data plane does not hold yet: created there, leaderless (in
/// quorum mode a data plane leads only what `SetLeader` says).
async fn create_on_dataplane(
    node: &Node,
    name: &str,
    topic: &precursor_metadata::TopicState,
    reports: &mut Reports,
) {
    let factor = topic.partitions.first().map_or(1, |p| p.replicas.len()) as u8;
    let command = Command::CreateTopic {
        name,
        partitions: topic.partitions.len() as u16,
        retention_ms: topic.retention_ms,
        retention_bytes: topic.retention_bytes,
        replication: TopicReplication {
            factor,
            min_insync: topic.min_insync,
            acks_all: 0,
        },
    };
    match node.link.call(command).await {
        Ok(Reply::TopicCreated { .. }) => {}
        // Created meanwhile (auto-creation, or the counters were read just before).
        Ok(Reply::Failed {
            code: ErrorCode::TopicExists,
            ..
        }) => {}
        other => reports.say(&format!("create {name}"), || {
            format!("topic {name:?} of the metadata quorum: creating it here: {other:?}")
        }),
    }
}

/// A committed topic with more partitions than this data plane holds: grown there
/// (leaderless, as created ones are, until `SetLeader`).
async fn grow_on_dataplane(node: &Node, name: &str, partitions: u16, reports: &mut Reports) {
    match node
        .link
        .call(Command::CreatePartitions { name, partitions })
        .await
    {
        Ok(Reply::TopicCreated { .. }) => {}
        other => reports.say(&format!("grow {name}"), || {
            format!(
                "topic {name:?} of the metadata quorum: growing it here to {partitions} \
                 partitions: {other:?}"
            )
        }),
    }
}

/// A committed topic configuration to the data plane; true once it has taken it.
async fn set_configs(
    node: &Node,
    name: &str,
    committed: &BTreeMap<String, String>,
    reports: &mut Reports,
) -> bool {
    let limits = crate::topic_configs::limits(&node.config);
    let pairs = committed
        .iter()
        .map(|(k, v)| (k.as_str(), Some(v.as_str())));
    let configs = match TopicConfigs::from_pairs(pairs, &limits) {
        Ok(configs) => configs,
        Err(error) => {
            reports.say(&format!("configs {name}"), || {
                format!("topic {name:?}: the committed configuration is refused here: {error}")
            });
            return false;
        }
    };
    match crate::admin::set_configs_here(node, name, configs).await {
        crate::admin::Response::Ok => true,
        other => {
            reports.say(&format!("configs {name}"), || {
                format!("topic {name:?}: setting its committed configuration: {other:?}")
            });
            false
        }
    }
}

/// `SetLeader` of one partition; true once the data plane has taken it.
async fn set_leader(
    node: &Node,
    name: &str,
    partition: u16,
    (leader, epoch, isr): &Leadership,
    reports: &mut Reports,
) -> bool {
    let command = Command::SetLeader {
        name,
        partition,
        leader: *leader as u16,
        epoch: *epoch,
        isr: pack_broker_ids(isr),
    };
    match node.link.call(command).await {
        Ok(Reply::Done) => true,
        other => {
            reports.say(&format!("leader {name}-{partition}"), || {
                format!(
                    "{name}-{partition}: leader {leader} at epoch {epoch} (ISR {isr:?}): \
                     the data plane said {other:?}"
                )
            });
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_ids_pack_as_the_gauges_unpack() {
        for ids in [vec![], vec![1], vec![3, 1, 2], vec![1, 2, 3, 4, 5, 6, 7, 8]] {
            let packed = pack_broker_ids(&ids);
            assert_eq!(crate::admin::unpack_broker_ids(packed), ids);
        }
    }
}
