//! The replicated cluster metadata and its deterministic, total `apply`.
//!
//! Every voter applies the same commands in the same order and reaches the same state:
//! only ordered maps (`BTreeMap`), no clocks, no randomness, no hashing of addresses. A
//! command that breaks a rule is answered [`MetadataReply::Refused`] and changes nothing.

use crate::command::{MetadataCommand, MetadataReply, OffsetCommit, Refusal};
use precursor_config::{BROKERS_MAX, REPLICATION_FACTOR_MAX};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Topic and group names, at most, in bytes (Kafka's topic name limit).
pub const NAME_BYTES_MAX: usize = 249;
/// A broker's rack name, at most, in bytes.
pub const RACK_BYTES_MAX: usize = 255;
/// An offset commit's metadata string, at most, in bytes (Kafka's default
/// `offset.metadata.max.bytes`).
pub const OFFSET_METADATA_BYTES_MAX: usize = 4096;
/// Partitions of one topic, at most.
pub const PARTITIONS_MAX: usize = 4096;
/// Producer ids in one allocated block, at most.
pub const PRODUCER_IDS_PER_BLOCK_MAX: u32 = 1_000_000;
/// Offsets in one CommitOffsets, at most.
pub const OFFSETS_PER_COMMIT_MAX: usize = 10_000;
/// Keys of one topic's configuration, at most.
pub const TOPIC_CONFIGS_MAX: usize = 64;
/// A topic configuration key or value, at most, in bytes.
pub const TOPIC_CONFIG_BYTES_MAX: usize = 256;

/// A registered broker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerState {
    pub incarnation: u64,
    pub fenced: bool,
    pub rack: String,
    /// Serves Kafka clients: may coordinate consumer groups.
    #[serde(default = "serves_kafka_by_default")]
    pub kafka: bool,
}

fn serves_kafka_by_default() -> bool {
    true
}

/// One partition's replicas and who leads them at which epoch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionState {
    /// Preferred leader first.
    pub replicas: Vec<u32>,
    /// 0: no leader (offline).
    pub leader: u32,
    pub leader_epoch: u32,
    pub isr: Vec<u32>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicState {
    pub partitions: Vec<PartitionState>,
    pub min_insync: u8,
    pub unclean_leader_election: bool,
    pub retention_ms: u64,
    pub retention_bytes: u64,
    /// The topic's whole dynamic configuration as Kafka names it (`retention.ms` ->
    /// `"3600000"`), once one was committed (AlterTopicConfigs): each broker's member
    /// sets it on its data plane. `None` (and in snapshots written before it existed):
    /// as created. The proposer checks the values (precursor_protocol::topic_config);
    /// the state machine keeps them as text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub configs: Option<BTreeMap<String, String>>,
}

/// Where a committed offset belongs.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct OffsetKey {
    pub group: String,
    pub topic: String,
    pub partition: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommittedOffset {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
}

/// The whole replicated metadata: what every voter agrees on.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataState {
    pub brokers: BTreeMap<u32, BrokerState>,
    /// Each topic behind its own `Arc`, as each group's offsets: every apply publishes a
    /// copy of the state to the control plane, and a copy then shares every topic and
    /// group the command did not change (a change copies only its own, `Arc::make_mut`).
    pub topics: BTreeMap<String, Arc<TopicState>>,
    pub next_producer_id: u64,
    /// JSON maps need string keys: stored as a list of `(OffsetKey, CommittedOffset)`
    /// pairs, in key order.
    #[serde(with = "offsets_as_pairs")]
    pub offsets: BTreeMap<String, Arc<GroupOffsets>>,
}

/// One group's committed offsets, by (topic, partition).
pub type GroupOffsets = BTreeMap<(String, u32), CommittedOffset>;

mod offsets_as_pairs {
    use super::{CommittedOffset, GroupOffsets, OffsetKey};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::collections::BTreeMap;
    use std::sync::Arc;

    pub fn serialize<S: Serializer>(
        map: &BTreeMap<String, Arc<GroupOffsets>>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        let pairs: Vec<(OffsetKey, &CommittedOffset)> = map
            .iter()
            .flat_map(|(group, offsets)| {
                offsets.iter().map(move |((topic, partition), committed)| {
                    let key = OffsetKey {
                        group: group.clone(),
                        topic: topic.clone(),
                        partition: *partition,
                    };
                    (key, committed)
                })
            })
            .collect();
        pairs.serialize(serializer)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<BTreeMap<String, Arc<GroupOffsets>>, D::Error> {
        let pairs: Vec<(OffsetKey, CommittedOffset)> = Vec::deserialize(deserializer)?;
        let mut groups: BTreeMap<String, GroupOffsets> = BTreeMap::new();
        for (key, committed) in pairs {
            groups
                .entry(key.group)
                .or_default()
                .insert((key.topic, key.partition), committed);
        }
        Ok(groups
            .into_iter()
            .map(|(group, offsets)| (group, Arc::new(offsets)))
            .collect())
    }
}

impl MetadataState {
    /// Whether `id` is registered and not fenced.
    pub fn broker_live(&self, id: u32) -> bool {
        self.brokers.get(&id).is_some_and(|b| !b.fenced)
    }

    pub fn partition(&self, topic: &str, partition: u32) -> Option<&PartitionState> {
        self.topics.get(topic)?.partitions.get(partition as usize)
    }

    /// The broker that coordinates consumer group `group` at this point of the log: FNV-1a
    /// of the group id over the live brokers that serve Kafka, in id order (Kafka places a
    /// group on the leader of its `__consumer_offsets` partition). When a coordinator is
    /// fenced its groups spread over the others; when it comes back they return. None: no
    /// live broker serves Kafka.
    pub fn group_coordinator(&self, group: &str) -> Option<u32> {
        let mut live = self
            .brokers
            .iter()
            .filter(|(_, broker)| !broker.fenced && broker.kafka)
            .map(|(id, _)| *id);
        let count = live.clone().count() as u64;
        if count == 0 {
            return None;
        }
        let at = precursor_config::topic_placement_hash(group) % count;
        live.nth(at as usize)
    }

    /// The committed offsets of `group`: (topic, partition) -> offset, in that order.
    pub fn group_offsets(&self, group: &str) -> Option<&GroupOffsets> {
        self.offsets.get(group).map(|offsets| &**offsets)
    }

    /// One partition's committed offset of `group`.
    pub fn committed_offset(
        &self,
        group: &str,
        topic: &str,
        partition: u32,
    ) -> Option<&CommittedOffset> {
        self.group_offsets(group)?
            .get(&(topic.to_string(), partition))
    }

    /// Applies one command. Deterministic and total: the same state and command give the
    /// same result on every voter, and no input panics.
    pub fn apply(&mut self, command: &MetadataCommand) -> MetadataReply {
        let result = match command {
            MetadataCommand::RegisterBroker {
                id,
                incarnation,
                rack,
                kafka,
            } => self.register_broker(*id, *incarnation, rack, *kafka),
            MetadataCommand::FenceBroker { id, incarnation } => {
                self.fence_broker(*id, *incarnation)
            }
            MetadataCommand::CreateTopic {
                name,
                replicas,
                min_insync,
                unclean_leader_election,
                retention_ms,
                retention_bytes,
            } => self.create_topic(
                name,
                replicas,
                *min_insync,
                *unclean_leader_election,
                *retention_ms,
                *retention_bytes,
            ),
            MetadataCommand::DeleteTopic { name } => self.delete_topic(name),
            MetadataCommand::CreatePartitions {
                topic,
                partitions,
                replicas,
            } => self.create_partitions(topic, *partitions, replicas),
            MetadataCommand::AlterTopicConfigs { name, configs } => {
                self.alter_topic_configs(name, configs)
            }
            MetadataCommand::AlterIsr {
                topic,
                partition,
                leader,
                leader_epoch,
                isr,
            } => self.alter_isr(topic, *partition, *leader, *leader_epoch, isr),
            MetadataCommand::DrainBroker { id } => self.drain_broker(*id),
            MetadataCommand::ElectLeader {
                topic,
                partition,
                leader,
            } => self.elect_leader(topic, *partition, *leader),
            MetadataCommand::ReassignPartition {
                topic,
                partition,
                replicas,
            } => self.reassign_partition(topic, *partition, replicas),
            MetadataCommand::AllocateProducerIds { broker, count } => {
                self.allocate_producer_ids(*broker, *count)
            }
            MetadataCommand::CommitOffsets {
                group,
                coordinator,
                offsets,
            } => self.commit_offsets(group, *coordinator, offsets),
            MetadataCommand::DeleteOffsets {
                group,
                coordinator,
                partitions,
            } => self.delete_offsets(group, *coordinator, partitions.as_deref()),
        };
        let reply = result.unwrap_or_else(MetadataReply::Refused);
        debug_assert!(self.invariants_hold());
        reply
    }

    /// Every partition: a leader, if any, is a replica in the ISR; the ISR is a subset of
    /// the replicas without duplicates.
    pub fn invariants_hold(&self) -> bool {
        self.topics.values().all(|topic| {
            topic.partitions.iter().all(|p| {
                let isr_in_replicas = p.isr.iter().all(|b| p.replicas.contains(b));
                let leader_ok =
                    p.leader == 0 || (p.replicas.contains(&p.leader) && p.isr.contains(&p.leader));
                isr_in_replicas && leader_ok && !has_duplicates(&p.isr)
            })
        })
    }

    fn register_broker(
        &mut self,
        id: u32,
        incarnation: u64,
        rack: &str,
        kafka: bool,
    ) -> Result<MetadataReply, Refusal> {
        check_broker_id(id)?;
        if rack.len() > RACK_BYTES_MAX {
            return Err(Refusal::StringTooLong);
        }
        if let Some(recorded) = self.brokers.get(&id) {
            // A fenced incarnation must come back as a new one; a live one may repeat its
            // registration (a retried proposal).
            let stale = incarnation < recorded.incarnation
                || (recorded.fenced && incarnation == recorded.incarnation);
            if stale {
                return Err(Refusal::StaleIncarnation {
                    given: incarnation,
                    recorded: recorded.incarnation,
                });
            }
            // A new incarnation of a live broker: it restarted before its session ran out.
            // Its old incarnation is fenced first, so every leadership it held moves (or
            // comes back to it) at a new epoch: a restarted leader may have lost a tail
            // its followers hold, and only a new epoch lets them find and cut it.
            if !recorded.fenced && incarnation > recorded.incarnation {
                let old = recorded.incarnation;
                self.fence_broker(id, old)?;
            }
        }
        self.brokers.insert(
            id,
            BrokerState {
                incarnation,
                fenced: false,
                rack: rack.to_string(),
                kafka,
            },
        );
        let leaderless = |p: &PartitionState| p.leader == 0 && p.isr.contains(&id);
        for topic in self.topics.values_mut() {
            if !topic.partitions.iter().any(leaderless) {
                continue; // shared with the published copy: not copied
            }
            for partition in Arc::make_mut(topic).partitions.iter_mut() {
                if leaderless(partition) {
                    partition.leader = id;
                    partition.leader_epoch = partition.leader_epoch.wrapping_add(1);
                }
            }
        }
        Ok(MetadataReply::Done)
    }

    fn fence_broker(&mut self, id: u32, incarnation: u64) -> Result<MetadataReply, Refusal> {
        let Some(recorded) = self.brokers.get_mut(&id) else {
            return Err(Refusal::BrokerUnknown(id));
        };
        if incarnation < recorded.incarnation {
            return Err(Refusal::StaleIncarnation {
                given: incarnation,
                recorded: recorded.incarnation,
            });
        }
        recorded.fenced = true;
        let brokers = &self.brokers;
        let mut leaders_moved = 0u32;
        let touched =
            |p: &PartitionState| p.leader == id || (p.isr.len() > 1 && p.isr.contains(&id));
        for topic in self.topics.values_mut() {
            if !topic.partitions.iter().any(touched) {
                continue;
            }
            let topic = Arc::make_mut(topic);
            let unclean = topic.unclean_leader_election;
            for partition in topic.partitions.iter_mut() {
                if partition.leader == id {
                    elect_from_isr(partition, brokers, unclean);
                    leaders_moved += 1;
                }
                // Kafka keeps the last member so it can lead again once it is back.
                if partition.isr.len() > 1 {
                    partition.isr.retain(|b| *b != id);
                }
            }
        }
        Ok(MetadataReply::Fenced { leaders_moved })
    }

    fn create_topic(
        &mut self,
        name: &str,
        replicas: &[Vec<u32>],
        min_insync: u8,
        unclean_leader_election: bool,
        retention_ms: u64,
        retention_bytes: u64,
    ) -> Result<MetadataReply, Refusal> {
        check_name(name)?;
        if self.topics.contains_key(name) {
            return Err(Refusal::TopicExists);
        }
        if replicas.is_empty() || replicas.len() > PARTITIONS_MAX {
            return Err(Refusal::PartitionCountInvalid);
        }
        if min_insync == 0 || min_insync > REPLICATION_FACTOR_MAX {
            return Err(Refusal::MinInsyncInvalid);
        }
        for list in replicas {
            self.check_replicas(list)?;
        }
        let partitions = self.new_partitions(replicas);
        self.topics.insert(
            name.to_string(),
            Arc::new(TopicState {
                partitions: partitions.clone(),
                min_insync,
                unclean_leader_election,
                retention_ms,
                retention_bytes,
                configs: None,
            }),
        );
        Ok(MetadataReply::TopicCreated { partitions })
    }

    /// Partitions as a topic gets them at creation: the first live replica leads at epoch
    /// 1, the live replicas are the ISR.
    fn new_partitions(&self, replicas: &[Vec<u32>]) -> Vec<PartitionState> {
        replicas
            .iter()
            .map(|list| {
                let isr: Vec<u32> = list
                    .iter()
                    .copied()
                    .filter(|b| self.broker_live(*b))
                    .collect();
                PartitionState {
                    replicas: list.clone(),
                    leader: isr.first().copied().unwrap_or(0),
                    leader_epoch: 1,
                    isr,
                }
            })
            .collect()
    }

    fn create_partitions(
        &mut self,
        name: &str,
        partitions: u32,
        replicas: &[Vec<u32>],
    ) -> Result<MetadataReply, Refusal> {
        let existing = self
            .topics
            .get(name)
            .ok_or(Refusal::TopicUnknown)?
            .partitions
            .len();
        if replicas.is_empty() || existing + replicas.len() != partitions as usize {
            return Err(Refusal::PartitionsNotAppended {
                existing: existing as u32,
            });
        }
        if partitions as usize > PARTITIONS_MAX {
            return Err(Refusal::PartitionCountInvalid);
        }
        for list in replicas {
            self.check_replicas(list)?;
        }
        let added = self.new_partitions(replicas);
        let topic = Arc::make_mut(self.topics.get_mut(name).expect("looked up above"));
        topic.partitions.extend(added.iter().cloned());
        Ok(MetadataReply::PartitionsCreated { partitions: added })
    }

    fn alter_topic_configs(
        &mut self,
        name: &str,
        configs: &BTreeMap<String, String>,
    ) -> Result<MetadataReply, Refusal> {
        let too_long = configs.len() > TOPIC_CONFIGS_MAX
            || configs
                .iter()
                .any(|(k, v)| k.len() > TOPIC_CONFIG_BYTES_MAX || v.len() > TOPIC_CONFIG_BYTES_MAX);
        if too_long {
            return Err(Refusal::StringTooLong);
        }
        let topic = self.topics.get_mut(name).ok_or(Refusal::TopicUnknown)?;
        let topic = Arc::make_mut(topic);
        if let Some(n) = configs.get("min.insync.replicas") {
            let factor = topic.partitions.first().map_or(1, |p| p.replicas.len());
            match n.parse::<u8>() {
                Ok(n) if n >= 1 && usize::from(n) <= factor => topic.min_insync = n,
                _ => return Err(Refusal::MinInsyncInvalid),
            }
        }
        topic.configs = Some(configs.clone());
        Ok(MetadataReply::Done)
    }

    fn delete_topic(&mut self, name: &str) -> Result<MetadataReply, Refusal> {
        if self.topics.remove(name).is_none() {
            return Err(Refusal::TopicUnknown);
        }
        for offsets in self.offsets.values_mut() {
            if offsets.keys().any(|(topic, _)| topic == name) {
                Arc::make_mut(offsets).retain(|(topic, _), _| topic != name);
            }
        }
        self.offsets.retain(|_, offsets| !offsets.is_empty());
        Ok(MetadataReply::Done)
    }

    fn alter_isr(
        &mut self,
        topic: &str,
        partition: u32,
        leader: u32,
        leader_epoch: u32,
        isr: &[u32],
    ) -> Result<MetadataReply, Refusal> {
        let brokers = &self.brokers;
        let state = partition_mut(&mut self.topics, topic, partition)?;
        if leader == 0 || state.leader != leader || state.leader_epoch != leader_epoch {
            return Err(Refusal::FencedLeaderEpoch {
                leader: state.leader,
                leader_epoch: state.leader_epoch,
            });
        }
        if !isr.contains(&leader) {
            return Err(Refusal::IsrWithoutLeader);
        }
        if has_duplicates(isr) || !isr.iter().all(|b| state.replicas.contains(b)) {
            return Err(Refusal::IsrNotSubsetOfReplicas);
        }
        for b in isr {
            let fenced = brokers.get(b).is_none_or(|s| s.fenced);
            if !state.isr.contains(b) && fenced {
                return Err(Refusal::IsrAddsFencedBroker(*b));
            }
        }
        // In replica order, so every voter stores the same list whatever the order asked.
        state.isr = state
            .replicas
            .iter()
            .copied()
            .filter(|b| isr.contains(b))
            .collect();
        Ok(MetadataReply::Partition(state.clone()))
    }

    fn drain_broker(&mut self, id: u32) -> Result<MetadataReply, Refusal> {
        check_broker_id(id)?;
        if !self.brokers.contains_key(&id) {
            return Err(Refusal::BrokerUnknown(id));
        }
        let brokers = &self.brokers;
        let live = |b: &u32| brokers.get(b).is_some_and(|s| !s.fenced);
        let mut moved = 0u32;
        let mut stuck = Vec::new();
        for (name, topic) in self.topics.iter_mut() {
            if !topic.partitions.iter().any(|p| p.leader == id) {
                continue;
            }
            for (index, partition) in Arc::make_mut(topic).partitions.iter_mut().enumerate() {
                if partition.leader != id {
                    continue;
                }
                let next = partition
                    .replicas
                    .iter()
                    .copied()
                    .find(|b| *b != id && partition.isr.contains(b) && live(b));
                match next {
                    Some(next) => {
                        partition.leader = next;
                        partition.leader_epoch = partition.leader_epoch.wrapping_add(1);
                        moved += 1;
                    }
                    None => stuck.push(format!("{name}-{index}")),
                }
            }
        }
        Ok(MetadataReply::Drained { moved, stuck })
    }

    fn elect_leader(
        &mut self,
        topic: &str,
        partition: u32,
        leader: u32,
    ) -> Result<MetadataReply, Refusal> {
        let live = self.broker_live(leader);
        let state = partition_mut(&mut self.topics, topic, partition)?;
        if !state.isr.contains(&leader) {
            return Err(Refusal::TargetNotInIsr);
        }
        if !live {
            return Err(Refusal::TargetFenced);
        }
        if state.leader != leader {
            state.leader = leader;
            state.leader_epoch = state.leader_epoch.wrapping_add(1);
        }
        Ok(MetadataReply::Partition(state.clone()))
    }

    fn reassign_partition(
        &mut self,
        topic: &str,
        partition: u32,
        replicas: &[u32],
    ) -> Result<MetadataReply, Refusal> {
        self.check_replicas(replicas)?;
        let brokers = &self.brokers;
        let Some(topic_state) = self.topics.get_mut(topic).map(Arc::make_mut) else {
            return Err(Refusal::TopicUnknown);
        };
        let unclean = topic_state.unclean_leader_election;
        let Some(state) = topic_state.partitions.get_mut(partition as usize) else {
            return Err(Refusal::PartitionUnknown);
        };
        state.replicas = replicas.to_vec();
        state.isr = replicas
            .iter()
            .copied()
            .filter(|b| state.isr.contains(b))
            .collect();
        if state.leader == 0 || !state.isr.contains(&state.leader) {
            elect_from_isr(state, brokers, unclean);
        }
        Ok(MetadataReply::Partition(state.clone()))
    }

    fn allocate_producer_ids(&mut self, broker: u32, count: u32) -> Result<MetadataReply, Refusal> {
        if !self.brokers.contains_key(&broker) {
            return Err(Refusal::BrokerUnknown(broker));
        }
        if count == 0 || count > PRODUCER_IDS_PER_BLOCK_MAX {
            return Err(Refusal::CountInvalid);
        }
        let first = self.next_producer_id;
        // Producer ids are i64 on Kafka's wire: stay below i64::MAX.
        let next = first
            .checked_add(u64::from(count))
            .filter(|n| *n <= i64::MAX as u64)
            .ok_or(Refusal::ProducerIdsExhausted)?;
        self.next_producer_id = next;
        Ok(MetadataReply::ProducerIds { first, count })
    }

    /// Refused unless `coordinator` (0: unchecked) coordinates `group` at this point.
    fn check_coordinator(&self, group: &str, coordinator: u32) -> Result<(), Refusal> {
        if coordinator != 0 {
            let current = self.group_coordinator(group);
            if current != Some(coordinator) {
                return Err(Refusal::NotCoordinator {
                    coordinator: current,
                });
            }
        }
        Ok(())
    }

    fn commit_offsets(
        &mut self,
        group: &str,
        coordinator: u32,
        offsets: &[OffsetCommit],
    ) -> Result<MetadataReply, Refusal> {
        check_name(group)?;
        self.check_coordinator(group, coordinator)?;
        if offsets.len() > OFFSETS_PER_COMMIT_MAX {
            return Err(Refusal::TooManyOffsets);
        }
        // All checked before any is written: all or none.
        for commit in offsets {
            if commit.metadata.len() > OFFSET_METADATA_BYTES_MAX {
                return Err(Refusal::StringTooLong);
            }
            if self.partition(&commit.topic, commit.partition).is_none() {
                return Err(if self.topics.contains_key(&commit.topic) {
                    Refusal::PartitionUnknown
                } else {
                    Refusal::TopicUnknown
                });
            }
        }
        if offsets.is_empty() {
            return Ok(MetadataReply::Done);
        }
        let group_offsets = Arc::make_mut(self.offsets.entry(group.to_string()).or_default());
        for commit in offsets {
            group_offsets.insert(
                (commit.topic.clone(), commit.partition),
                CommittedOffset {
                    offset: commit.offset,
                    leader_epoch: commit.leader_epoch,
                    metadata: commit.metadata.clone(),
                },
            );
        }
        Ok(MetadataReply::Done)
    }

    fn delete_offsets(
        &mut self,
        group: &str,
        coordinator: u32,
        partitions: Option<&[(String, u32)]>,
    ) -> Result<MetadataReply, Refusal> {
        check_name(group)?;
        self.check_coordinator(group, coordinator)?;
        if partitions.is_some_and(|p| p.len() > OFFSETS_PER_COMMIT_MAX) {
            return Err(Refusal::TooManyOffsets);
        }
        match partitions {
            None => {
                self.offsets.remove(group);
            }
            Some(partitions) => {
                if let Some(offsets) = self.offsets.get_mut(group) {
                    let offsets = Arc::make_mut(offsets);
                    for key in partitions {
                        offsets.remove(key);
                    }
                    if offsets.is_empty() {
                        self.offsets.remove(group);
                    }
                }
            }
        }
        Ok(MetadataReply::Done)
    }

    fn check_replicas(&self, list: &[u32]) -> Result<(), Refusal> {
        if list.is_empty() || list.len() > REPLICATION_FACTOR_MAX as usize || has_duplicates(list) {
            return Err(Refusal::ReplicasInvalid);
        }
        match list.iter().find(|b| !self.brokers.contains_key(b)) {
            Some(unknown) => Err(Refusal::BrokerUnknown(*unknown)),
            None => Ok(()),
        }
    }
}

/// Elects a new leader for `partition` (the old one is gone or fenced): the first replica,
/// in replica order, that is in the ISR and live; else, if `unclean`, the first live replica
/// (which becomes the whole ISR); else 0, offline. The epoch moves whenever the leader does.
fn elect_from_isr(
    partition: &mut PartitionState,
    brokers: &BTreeMap<u32, BrokerState>,
    unclean: bool,
) {
    let live = |b: &u32| brokers.get(b).is_some_and(|s| !s.fenced);
    let clean = partition
        .replicas
        .iter()
        .copied()
        .find(|b| partition.isr.contains(b) && live(b));
    let leader = match clean {
        Some(leader) => leader,
        None if unclean => match partition.replicas.iter().copied().find(live) {
            Some(leader) => {
                partition.isr = vec![leader];
                leader
            }
            None => 0,
        },
        None => 0,
    };
    if leader != partition.leader {
        partition.leader = leader;
        partition.leader_epoch = partition.leader_epoch.wrapping_add(1);
    }
}

/// One partition to change: its topic is copied first if the published state shares it.
/// Check what can be checked before: a refused command copies nothing it need not.
fn partition_mut<'a>(
    topics: &'a mut BTreeMap<String, Arc<TopicState>>,
    topic: &str,
    partition: u32,
) -> Result<&'a mut PartitionState, Refusal> {
    let topic = topics.get_mut(topic).ok_or(Refusal::TopicUnknown)?;
    if partition as usize >= topic.partitions.len() {
        return Err(Refusal::PartitionUnknown);
    }
    Arc::make_mut(topic)
        .partitions
        .get_mut(partition as usize)
        .ok_or(Refusal::PartitionUnknown)
}

fn check_name(name: &str) -> Result<(), Refusal> {
    if name.is_empty() || name.len() > NAME_BYTES_MAX {
        return Err(Refusal::NameInvalid);
    }
    Ok(())
}

fn check_broker_id(id: u32) -> Result<(), Refusal> {
    if id == 0 || id as usize > BROKERS_MAX {
        return Err(Refusal::BrokerIdInvalid(id));
    }
    Ok(())
}

fn has_duplicates(list: &[u32]) -> bool {
    list.iter().enumerate().any(|(i, b)| list[..i].contains(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn register(state: &mut MetadataState, id: u32, incarnation: u64) -> MetadataReply {
        state.apply(&MetadataCommand::RegisterBroker {
            id,
            incarnation,
            rack: String::new(),
            kafka: true,
        })
    }

    /// Brokers 1..=3 live, topic "t" with partitions led by 1, 2, 3 (each over all three).
    fn three_brokers_one_topic(unclean: bool) -> MetadataState {
        let mut state = MetadataState::default();
        for id in 1..=3 {
            assert_eq!(register(&mut state, id, 10), MetadataReply::Done);
        }
        let reply = state.apply(&MetadataCommand::CreateTopic {
            name: "t".into(),
            replicas: vec![vec![1, 2, 3], vec![2, 3, 1], vec![3, 1, 2]],
            min_insync: 2,
            unclean_leader_election: unclean,
            retention_ms: 1000,
            retention_bytes: 1 << 20,
        });
        assert!(matches!(reply, MetadataReply::TopicCreated { .. }));
        state
    }

    fn fence(state: &mut MetadataState, id: u32, incarnation: u64) -> MetadataReply {
        state.apply(&MetadataCommand::FenceBroker { id, incarnation })
    }

    #[test]
    fn create_partitions_appends_partitions_placed_as_given() {
        let mut state = three_brokers_one_topic(false);
        let grow = |partitions, replicas: Vec<Vec<u32>>| MetadataCommand::CreatePartitions {
            topic: "t".into(),
            partitions,
            replicas,
        };
        // The count must follow the topic's: a stale proposer's grow is refused whole.
        for (partitions, replicas) in [(4, vec![vec![1, 2, 3], vec![2, 3, 1]]), (6, vec![vec![1]])]
        {
            assert_eq!(
                state.apply(&grow(partitions, replicas)),
                MetadataReply::Refused(Refusal::PartitionsNotAppended { existing: 3 })
            );
        }
        assert_eq!(
            state.apply(&grow(3, vec![])),
            MetadataReply::Refused(Refusal::PartitionsNotAppended { existing: 3 })
        );
        assert_eq!(
            state.apply(&grow(4, vec![vec![1, 1]])),
            MetadataReply::Refused(Refusal::ReplicasInvalid)
        );
        assert_eq!(
            state.apply(&grow(4, vec![vec![1, 9]])),
            MetadataReply::Refused(Refusal::BrokerUnknown(9))
        );
        assert_eq!(
            state.apply(&MetadataCommand::CreatePartitions {
                topic: "nope".into(),
                partitions: 1,
                replicas: vec![vec![1]],
            }),
            MetadataReply::Refused(Refusal::TopicUnknown)
        );
        assert_eq!(state.topics["t"].partitions.len(), 3);
        fence(&mut state, 2, 10);
        let MetadataReply::PartitionsCreated { partitions } =
            state.apply(&grow(5, vec![vec![2, 3, 1], vec![3, 1, 2]]))
        else {
            panic!("not grown");
        };
        // As at creation: the first live replica leads at epoch 1, the live ones are the ISR.
        assert_eq!(
            (
                partitions[0].leader,
                partitions[0].leader_epoch,
                partitions[0].isr.clone()
            ),
            (3, 1, vec![3, 1])
        );
        assert_eq!(state.topics["t"].partitions.len(), 5);
        assert_eq!(state.partition("t", 4).unwrap().replicas, vec![3, 1, 2]);
        assert_eq!(state.partition("t", 0).unwrap().replicas, vec![1, 2, 3]);
        // Serde: the command survives the log's encoding.
        let command = grow(6, vec![vec![1, 2, 3]]);
        let json = serde_json::to_string(&command).unwrap();
        assert_eq!(
            serde_json::from_str::<MetadataCommand>(&json).unwrap(),
            command
        );
    }

    #[test]
    fn topic_configs_are_committed_whole_and_old_states_load_without_them() {
        let mut state = three_brokers_one_topic(false);
        assert_eq!(state.topics["t"].configs, None);
        let configs: BTreeMap<String, String> = [
            ("max.message.bytes".to_string(), "2048".to_string()),
            ("min.insync.replicas".to_string(), "3".to_string()),
        ]
        .into();
        let alter =
            |name: &str, configs: &BTreeMap<String, String>| MetadataCommand::AlterTopicConfigs {
                name: name.into(),
                configs: configs.clone(),
            };
        assert_eq!(state.apply(&alter("t", &configs)), MetadataReply::Done);
        assert_eq!(state.topics["t"].configs.as_ref(), Some(&configs));
        assert_eq!(state.topics["t"].min_insync, 3);
        let before = state.clone();
        let over: BTreeMap<String, String> =
            [("min.insync.replicas".to_string(), "4".to_string())].into();
        assert_eq!(
            state.apply(&alter("t", &over)),
            MetadataReply::Refused(Refusal::MinInsyncInvalid)
        );
        assert_eq!(
            state.apply(&alter("nope", &configs)),
            MetadataReply::Refused(Refusal::TopicUnknown)
        );
        let long: BTreeMap<String, String> = [("k".repeat(300), "v".to_string())].into();
        assert_eq!(
            state.apply(&alter("t", &long)),
            MetadataReply::Refused(Refusal::StringTooLong)
        );
        assert_eq!(state, before, "refusals change nothing");
        // A topic state serialized before `configs` existed loads with none.
        let mut old = serde_json::to_value(&*state.topics["t"]).unwrap();
        old.as_object_mut().unwrap().remove("configs");
        let loaded: TopicState = serde_json::from_value(old).unwrap();
        assert_eq!(loaded.configs, None);
    }

    #[test]
    fn create_topic_leads_with_first_live_replica() {
        let mut state = three_brokers_one_topic(false);
        let p = state.partition("t", 1).unwrap();
        assert_eq!(
            (p.leader, p.leader_epoch, p.isr.clone()),
            (2, 1, vec![2, 3, 1])
        );
        fence(&mut state, 1, 10);
        let reply = state.apply(&MetadataCommand::CreateTopic {
            name: "u".into(),
            replicas: vec![vec![1, 2]],
            min_insync: 1,
            unclean_leader_election: false,
            retention_ms: 0,
            retention_bytes: 0,
        });
        let MetadataReply::TopicCreated { partitions } = reply else {
            panic!("{reply:?}")
        };
        assert_eq!(
            (partitions[0].leader, partitions[0].isr.clone()),
            (2, vec![2])
        );
    }

    #[test]
    fn create_topic_refusals() {
        let mut state = three_brokers_one_topic(false);
        let create =
            |name: &str, replicas: Vec<Vec<u32>>, min_insync: u8| MetadataCommand::CreateTopic {
                name: name.into(),
                replicas,
                min_insync,
                unclean_leader_election: false,
                retention_ms: 0,
                retention_bytes: 0,
            };
        let before = state.clone();
        let cases = [
            (create("t", vec![vec![1]], 1), Refusal::TopicExists),
            (create("", vec![vec![1]], 1), Refusal::NameInvalid),
            (
                create(&"x".repeat(250), vec![vec![1]], 1),
                Refusal::NameInvalid,
            ),
            (create("v", vec![], 1), Refusal::PartitionCountInvalid),
            (create("v", vec![vec![]], 1), Refusal::ReplicasInvalid),
            (create("v", vec![vec![1, 1]], 1), Refusal::ReplicasInvalid),
            (create("v", vec![vec![1, 9]], 1), Refusal::BrokerUnknown(9)),
            (create("v", vec![vec![1]], 0), Refusal::MinInsyncInvalid),
        ];
        for (command, refusal) in cases {
            assert_eq!(state.apply(&command), MetadataReply::Refused(refusal));
        }
        assert_eq!(state, before);
    }

    #[test]
    fn fence_moves_leaderships_to_isr_and_shrinks_isrs() {
        let mut state = three_brokers_one_topic(false);
        assert_eq!(
            fence(&mut state, 2, 10),
            MetadataReply::Fenced { leaders_moved: 1 }
        );
        assert!(state.brokers[&2].fenced);
        let p1 = state.partition("t", 1).unwrap();
        // Replicas [2, 3, 1]: the next in replica order in the ISR is 3.
        assert_eq!(
            (p1.leader, p1.leader_epoch, p1.isr.clone()),
            (3, 2, vec![3, 1])
        );
        let p0 = state.partition("t", 0).unwrap();
        assert_eq!(
            (p0.leader, p0.leader_epoch, p0.isr.clone()),
            (1, 1, vec![1, 3])
        );
        // A stale incarnation is ignored.
        let before = state.clone();
        assert_eq!(
            fence(&mut state, 3, 9),
            MetadataReply::Refused(Refusal::StaleIncarnation {
                given: 9,
                recorded: 10
            })
        );
        assert_eq!(state, before);
        assert_eq!(
            fence(&mut state, 7, 1),
            MetadataReply::Refused(Refusal::BrokerUnknown(7))
        );
    }

    #[test]
    fn fence_keeps_last_isr_member_and_goes_offline_then_register_returns_leadership() {
        let mut state = three_brokers_one_topic(false);
        fence(&mut state, 2, 10);
        fence(&mut state, 3, 10);
        let p1 = state.partition("t", 1).unwrap();
        assert_eq!((p1.leader, p1.isr.clone()), (1, vec![1]));
        fence(&mut state, 1, 10);
        let p1 = state.partition("t", 1).unwrap();
        assert_eq!(
            (p1.leader, p1.leader_epoch, p1.isr.clone()),
            (0, 4, vec![1])
        );
        // The same incarnation, fenced, may not come back; a new one may, and leads again.
        assert_eq!(
            register(&mut state, 1, 10),
            MetadataReply::Refused(Refusal::StaleIncarnation {
                given: 10,
                recorded: 10
            })
        );
        assert_eq!(register(&mut state, 1, 11), MetadataReply::Done);
        let p1 = state.partition("t", 1).unwrap();
        assert_eq!((p1.leader, p1.leader_epoch), (1, 5));
        assert!(!state.brokers[&1].fenced);
    }

    #[test]
    fn fence_unclean_elects_first_live_replica() {
        let mut state = three_brokers_one_topic(true);
        // Shrink partition 0's ISR to its leader alone, then fence that leader.
        let reply = state.apply(&MetadataCommand::AlterIsr {
            topic: "t".into(),
            partition: 0,
            leader: 1,
            leader_epoch: 1,
            isr: vec![1],
        });
        assert!(matches!(reply, MetadataReply::Partition(_)));
        fence(&mut state, 1, 10);
        let p0 = state.partition("t", 0).unwrap();
        assert_eq!(
            (p0.leader, p0.leader_epoch, p0.isr.clone()),
            (2, 2, vec![2])
        );
    }

    #[test]
    fn alter_isr_rules() {
        let mut state = three_brokers_one_topic(false);
        let alter = |leader, leader_epoch, isr: Vec<u32>| MetadataCommand::AlterIsr {
            topic: "t".into(),
            partition: 0,
            leader,
            leader_epoch,
            isr,
        };
        let stale = MetadataReply::Refused(Refusal::FencedLeaderEpoch {
            leader: 1,
            leader_epoch: 1,
        });
        assert_eq!(state.apply(&alter(1, 0, vec![1])), stale);
        assert_eq!(state.apply(&alter(2, 1, vec![2])), stale);
        assert_eq!(
            state.apply(&alter(1, 1, vec![2, 3])),
            MetadataReply::Refused(Refusal::IsrWithoutLeader)
        );
        assert_eq!(
            state.apply(&alter(1, 1, vec![1, 5])),
            MetadataReply::Refused(Refusal::IsrNotSubsetOfReplicas)
        );
        let MetadataReply::Partition(p) = state.apply(&alter(1, 1, vec![3, 1])) else {
            panic!()
        };
        assert_eq!(p.isr, vec![1, 3]);
        fence(&mut state, 2, 10);
        assert_eq!(
            state.apply(&alter(1, 1, vec![1, 2, 3])),
            MetadataReply::Refused(Refusal::IsrAddsFencedBroker(2))
        );
        assert_eq!(
            state.apply(&MetadataCommand::AlterIsr {
                topic: "t".into(),
                partition: 9,
                leader: 1,
                leader_epoch: 1,
                isr: vec![1]
            }),
            MetadataReply::Refused(Refusal::PartitionUnknown)
        );
    }

    #[test]
    fn elect_leader_rules() {
        let mut state = three_brokers_one_topic(false);
        let elect = |leader| MetadataCommand::ElectLeader {
            topic: "t".into(),
            partition: 0,
            leader,
        };
        let MetadataReply::Partition(p) = state.apply(&elect(3)) else {
            panic!()
        };
        assert_eq!((p.leader, p.leader_epoch), (3, 2));
        assert_eq!(
            state.apply(&elect(5)),
            MetadataReply::Refused(Refusal::TargetNotInIsr)
        );
        // Fenced while 3 leads partition 0: 1 leaves its ISR (not the last member).
        fence(&mut state, 1, 10);
        assert_eq!(
            state.apply(&elect(1)),
            MetadataReply::Refused(Refusal::TargetNotInIsr)
        );
    }

    #[test]
    fn drain_moves_every_leadership_to_a_live_in_sync_replica_at_a_new_epoch() {
        let mut state = three_brokers_one_topic(false);
        let led: Vec<(u32, u32)> = state.topics["t"]
            .partitions
            .iter()
            .map(|p| (p.leader, p.leader_epoch))
            .collect();
        let drained = led.iter().filter(|(leader, _)| *leader == 1).count() as u32;
        assert!(drained > 0, "broker 1 leads something: {led:?}");
        let MetadataReply::Drained { moved, stuck } =
            state.apply(&MetadataCommand::DrainBroker { id: 1 })
        else {
            panic!()
        };
        assert_eq!((moved, stuck.len()), (drained, 0));
        for (p, (before, epoch)) in state.topics["t"].partitions.iter().zip(&led) {
            assert_ne!(p.leader, 1);
            assert!(
                p.isr.contains(&p.leader) && p.isr.contains(&1),
                "1 stays in sync"
            );
            let expected_epoch = if *before == 1 { epoch + 1 } else { *epoch };
            assert_eq!(p.leader_epoch, expected_epoch);
        }
        // With the others fenced, what 2 leads cannot move: reported, left as it is.
        fence(&mut state, 1, 10);
        fence(&mut state, 3, 10);
        let MetadataReply::Drained { moved, stuck } =
            state.apply(&MetadataCommand::DrainBroker { id: 2 })
        else {
            panic!()
        };
        let still_led = state.topics["t"]
            .partitions
            .iter()
            .filter(|p| p.leader == 2)
            .count();
        assert_eq!((moved, stuck.len()), (0, still_led));
        assert_eq!(
            state.apply(&MetadataCommand::DrainBroker { id: 9 }),
            MetadataReply::Refused(Refusal::BrokerUnknown(9))
        );
    }

    #[test]
    fn elect_leader_refuses_fenced_last_isr_member() {
        let mut state = three_brokers_one_topic(false);
        fence(&mut state, 2, 10);
        fence(&mut state, 3, 10);
        fence(&mut state, 1, 10);
        assert_eq!(
            state.apply(&MetadataCommand::ElectLeader {
                topic: "t".into(),
                partition: 0,
                leader: 1
            }),
            MetadataReply::Refused(Refusal::TargetFenced)
        );
    }

    #[test]
    fn reassign_keeps_remaining_isr_and_elects_if_leader_leaves() {
        let mut state = three_brokers_one_topic(false);
        let reassign = |replicas: Vec<u32>| MetadataCommand::ReassignPartition {
            topic: "t".into(),
            partition: 0,
            replicas,
        };
        let MetadataReply::Partition(p) = state.apply(&reassign(vec![3, 2])) else {
            panic!()
        };
        assert_eq!(
            (p.leader, p.leader_epoch, p.isr.clone()),
            (3, 2, vec![3, 2])
        );
        let MetadataReply::Partition(p) = state.apply(&reassign(vec![1, 3])) else {
            panic!()
        };
        // 1 is not in the ISR (it left the replicas); the leader 3 remains.
        assert_eq!((p.leader, p.leader_epoch, p.isr.clone()), (3, 2, vec![3]));
        assert_eq!(
            state.apply(&reassign(vec![1, 8])),
            MetadataReply::Refused(Refusal::BrokerUnknown(8))
        );
    }

    #[test]
    fn producer_ids_in_blocks() {
        let mut state = three_brokers_one_topic(false);
        let allocate = |broker, count| MetadataCommand::AllocateProducerIds { broker, count };
        assert_eq!(
            state.apply(&allocate(1, 100)),
            MetadataReply::ProducerIds {
                first: 0,
                count: 100
            }
        );
        assert_eq!(
            state.apply(&allocate(2, 5)),
            MetadataReply::ProducerIds {
                first: 100,
                count: 5
            }
        );
        assert_eq!(
            state.apply(&allocate(2, 0)),
            MetadataReply::Refused(Refusal::CountInvalid)
        );
        assert_eq!(
            state.apply(&allocate(9, 1)),
            MetadataReply::Refused(Refusal::BrokerUnknown(9))
        );
        state.next_producer_id = i64::MAX as u64 - 1;
        assert_eq!(
            state.apply(&allocate(1, 5)),
            MetadataReply::Refused(Refusal::ProducerIdsExhausted)
        );
    }

    #[test]
    fn commit_offsets_all_or_none_and_delete_topic_drops_them() {
        let mut state = three_brokers_one_topic(false);
        let commit = |topic: &str, partition| OffsetCommit {
            topic: topic.into(),
            partition,
            offset: 42,
            leader_epoch: 1,
            metadata: "m".into(),
        };
        let reply = state.apply(&MetadataCommand::CommitOffsets {
            group: "g".into(),
            coordinator: 0,
            offsets: vec![commit("t", 0), commit("t", 7)],
        });
        assert_eq!(reply, MetadataReply::Refused(Refusal::PartitionUnknown));
        assert!(state.offsets.is_empty());
        let reply = state.apply(&MetadataCommand::CommitOffsets {
            group: "g".into(),
            coordinator: 0,
            offsets: vec![commit("t", 0), commit("t", 2)],
        });
        assert_eq!(reply, MetadataReply::Done);
        assert_eq!(state.group_offsets("g").unwrap().len(), 2);
        assert_eq!(state.committed_offset("g", "t", 2).unwrap().offset, 42);
        // Serde round trip keeps the pair-encoded map.
        let json = serde_json::to_string(&state).unwrap();
        let back: MetadataState = serde_json::from_str(&json).unwrap();
        assert_eq!(back, state);
        assert_eq!(
            state.apply(&MetadataCommand::DeleteTopic { name: "t".into() }),
            MetadataReply::Done
        );
        assert!(state.offsets.is_empty());
        assert_eq!(
            state.apply(&MetadataCommand::DeleteTopic { name: "t".into() }),
            MetadataReply::Refused(Refusal::TopicUnknown)
        );
    }

    #[test]
    fn delete_offsets_drops_named_partitions_or_the_whole_group_from_its_coordinator_only() {
        let mut state = three_brokers_one_topic(false);
        let commit = |partition| OffsetCommit {
            topic: "t".into(),
            partition,
            offset: 7,
            leader_epoch: 0,
            metadata: String::new(),
        };
        let coordinator = state.group_coordinator("g").unwrap();
        let other = (1..=3).find(|b| *b != coordinator).unwrap();
        let commits = vec![commit(0), commit(1), commit(2)];
        let reply = state.apply(&MetadataCommand::CommitOffsets {
            group: "g".into(),
            coordinator,
            offsets: commits,
        });
        assert_eq!(reply, MetadataReply::Done);
        let delete = |coordinator, partitions| MetadataCommand::DeleteOffsets {
            group: "g".into(),
            coordinator,
            partitions,
        };
        assert_eq!(
            state.apply(&delete(other, None)),
            MetadataReply::Refused(Refusal::NotCoordinator {
                coordinator: Some(coordinator)
            })
        );
        assert_eq!(state.group_offsets("g").unwrap().len(), 3);
        let some = Some(vec![("t".to_string(), 1), ("absent".to_string(), 9)]);
        assert_eq!(state.apply(&delete(coordinator, some)), MetadataReply::Done);
        assert_eq!(state.group_offsets("g").unwrap().len(), 2);
        assert!(state.committed_offset("g", "t", 1).is_none());
        assert_eq!(state.apply(&delete(coordinator, None)), MetadataReply::Done);
        assert!(state.offsets.is_empty());
        // Deleting a group with nothing committed is not an error.
        assert_eq!(state.apply(&delete(coordinator, None)), MetadataReply::Done);
    }

    #[test]
    fn a_group_moves_off_a_fenced_coordinator_whose_late_commits_are_refused() {
        let mut state = three_brokers_one_topic(false);
        let groups: Vec<String> = (0..64).map(|i| format!("group-{i}")).collect();
        let placed: Vec<u32> = groups
            .iter()
            .map(|g| state.group_coordinator(g).unwrap())
            .collect();
        for id in 1..=3 {
            assert!(placed.contains(&id), "groups spread over every broker");
        }
        let (group, owner) = groups
            .iter()
            .zip(&placed)
            .find(|(_, owner)| **owner == 1)
            .unwrap();
        let commit = |coordinator: u32| MetadataCommand::CommitOffsets {
            group: group.clone(),
            coordinator,
            offsets: vec![OffsetCommit {
                topic: "t".into(),
                partition: 0,
                offset: 10 + i64::from(coordinator),
                leader_epoch: 1,
                metadata: String::new(),
            }],
        };
        assert_eq!(state.apply(&commit(*owner)), MetadataReply::Done);
        assert_eq!(
            state.apply(&commit(2)),
            MetadataReply::Refused(Refusal::NotCoordinator {
                coordinator: Some(1)
            })
        );
        let incarnation = state.brokers[&1].incarnation;
        state.apply(&MetadataCommand::FenceBroker { id: 1, incarnation });
        let heir = state.group_coordinator(group).unwrap();
        assert_ne!(heir, 1);
        // Groups of live brokers stay where they were only if their hash still lands
        // there; every group of broker 1 moved to a live broker.
        for g in &groups {
            assert!(state.broker_live(state.group_coordinator(g).unwrap()));
        }
        // The fenced broker's late commit is refused; the heir's is taken.
        assert!(matches!(
            state.apply(&commit(1)),
            MetadataReply::Refused(Refusal::NotCoordinator { .. })
        ));
        assert_eq!(state.apply(&commit(heir)), MetadataReply::Done);
        let offsets: Vec<i64> = state
            .group_offsets(group)
            .unwrap()
            .values()
            .map(|c| c.offset)
            .collect();
        assert_eq!(offsets, vec![10 + i64::from(heir)]);
        // A broker without a Kafka listener coordinates nothing.
        let mut state = MetadataState::default();
        state.apply(&MetadataCommand::RegisterBroker {
            id: 4,
            incarnation: 1,
            rack: String::new(),
            kafka: false,
        });
        assert_eq!(state.group_coordinator("g"), None);
    }

    #[test]
    fn a_copy_of_the_state_shares_every_topic_and_group_a_command_did_not_change() {
        let mut state = three_brokers_one_topic(false);
        let replicas = vec![vec![1, 2, 3]];
        state.apply(&MetadataCommand::CreateTopic {
            name: "other".into(),
            replicas,
            min_insync: 1,
            unclean_leader_election: false,
            retention_ms: 0,
            retention_bytes: 0,
        });
        let commit = |group: &str| MetadataCommand::CommitOffsets {
            group: group.into(),
            coordinator: 0,
            offsets: vec![OffsetCommit {
                topic: "t".into(),
                partition: 0,
                offset: 1,
                leader_epoch: 1,
                metadata: String::new(),
            }],
        };
        state.apply(&commit("a"));
        state.apply(&commit("b"));
        // What the state machine publishes after each apply.
        let published = state.clone();
        let leader = state.partition("t", 0).unwrap().leader;
        let other = *state
            .partition("t", 0)
            .unwrap()
            .isr
            .iter()
            .find(|b| **b != leader)
            .unwrap();
        let reply = state.apply(&MetadataCommand::ElectLeader {
            topic: "t".into(),
            partition: 0,
            leader: other,
        });
        assert!(matches!(reply, MetadataReply::Partition(_)), "{reply}");
        assert!(!Arc::ptr_eq(&state.topics["t"], &published.topics["t"]));
        assert!(Arc::ptr_eq(
            &state.topics["other"],
            &published.topics["other"]
        ));
        assert_eq!(
            published.partition("t", 0).unwrap().leader,
            leader,
            "copy unchanged"
        );
        state.apply(&commit("a"));
        assert!(!Arc::ptr_eq(&state.offsets["a"], &published.offsets["a"]));
        assert!(Arc::ptr_eq(&state.offsets["b"], &published.offsets["b"]));
        // A refused command copies nothing.
        let before = state.clone();
        state.apply(&MetadataCommand::ElectLeader {
            topic: "t".into(),
            partition: 9,
            leader: other,
        });
        assert!(Arc::ptr_eq(&state.topics["t"], &before.topics["t"]));
    }

    #[test]
    fn register_refuses_bad_ids_and_stale_incarnations() {
        let mut state = MetadataState::default();
        assert_eq!(
            register(&mut state, 0, 1),
            MetadataReply::Refused(Refusal::BrokerIdInvalid(0))
        );
        assert_eq!(
            register(&mut state, 65, 1),
            MetadataReply::Refused(Refusal::BrokerIdInvalid(65))
        );
        assert_eq!(register(&mut state, 1, 5), MetadataReply::Done);
        assert_eq!(register(&mut state, 1, 5), MetadataReply::Done);
        assert_eq!(
            register(&mut state, 1, 4),
            MetadataReply::Refused(Refusal::StaleIncarnation {
                given: 4,
                recorded: 5
            })
        );
    }

    #[test]
    fn a_live_broker_registering_a_new_incarnation_gives_up_its_epochs() {
        let mut state = three_brokers_one_topic(false);
        let before = state.partition("t", 1).unwrap().clone();
        assert_eq!(before.leader, 2);
        let recorded = state.brokers[&2].incarnation;
        let reply = state.apply(&MetadataCommand::RegisterBroker {
            id: 2,
            incarnation: recorded + 1,
            rack: String::new(),
            kafka: true,
        });
        assert_eq!(reply, MetadataReply::Done);
        let after = state.partition("t", 1).unwrap();
        // Led by another in-sync replica at a newer epoch; broker 2 left the ISR.
        assert_ne!(after.leader, 2);
        assert!(after.leader_epoch > before.leader_epoch);
        assert!(!after.isr.contains(&2), "{after:?}");
        assert!(state.broker_live(2));
        // The same registration again (a retried proposal) changes nothing.
        let again = state.clone();
        state.apply(&MetadataCommand::RegisterBroker {
            id: 2,
            incarnation: recorded + 1,
            rack: String::new(),
            kafka: true,
        });
        assert_eq!(state, again);
    }
}
