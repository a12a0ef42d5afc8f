//! What a proposer asks the quorum to do (`MetadataCommand`), and what the applied state
//! machine answers (`MetadataReply`). Both travel on the wire and sit in the Raft log.

use crate::state::PartitionState;
use serde::{Deserialize, Serialize};

/// One replicated change to the cluster metadata. Applied in log order on every voter by
/// [`crate::state::MetadataState::apply`], which is deterministic and total.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetadataCommand {
    /// A broker's control plane came up (or came back with a new incarnation).
    RegisterBroker {
        id: u32,
        incarnation: u64,
        rack: String,
        /// The broker serves Kafka clients (a `kafka` listener in `[cluster]`): it can
        /// coordinate consumer groups. Absent in entries written before it existed: true.
        #[serde(default = "serves_kafka_by_default")]
        kafka: bool,
    },
    /// The controller saw no heartbeat of `id` at `incarnation` for a whole session.
    FenceBroker {
        id: u32,
        incarnation: u64,
    },
    /// A topic with its placement computed by the proposer: `replicas[p]` lists partition
    /// `p`'s replicas, preferred leader first.
    CreateTopic {
        name: String,
        replicas: Vec<Vec<u32>>,
        min_insync: u8,
        unclean_leader_election: bool,
        retention_ms: u64,
        retention_bytes: u64,
    },
    DeleteTopic {
        name: String,
    },
    /// Grows `topic` to `partitions` partitions: `replicas[i]` lists the replicas of the
    /// new partition `existing + i`, preferred leader first, placed by the proposer as it
    /// places a created topic's. Refused unless the topic has exactly
    /// `partitions - replicas.len()` partitions (another grow committed first).
    CreatePartitions {
        topic: String,
        partitions: u32,
        replicas: Vec<Vec<u32>>,
    },
    /// A topic's whole dynamic configuration from now on (Kafka's keys and values, as
    /// the proposer checked them): [`crate::state::TopicState::configs`].
    AlterTopicConfigs {
        name: String,
        configs: std::collections::BTreeMap<String, String>,
    },
    /// A partition's leader asks to change its in-sync replica set.
    AlterIsr {
        topic: String,
        partition: u32,
        leader: u32,
        leader_epoch: u32,
        isr: Vec<u32>,
    },
    /// Every partition `id` leads moves to another live member of its ISR (replica order),
    /// each at a new epoch, in one commit: a controlled shutdown or `broker drain`.
    /// Partitions with no such member stay where they are (reported as stuck).
    DrainBroker {
        id: u32,
    },
    /// Preferred-leader election, or moving one leader away.
    ElectLeader {
        topic: String,
        partition: u32,
        leader: u32,
    },
    /// A new replica list for one partition.
    ReassignPartition {
        topic: String,
        partition: u32,
        replicas: Vec<u32>,
    },
    /// A block of `count` producer ids for `broker`.
    AllocateProducerIds {
        broker: u32,
        count: u32,
    },
    /// A consumer group's committed offsets, all or none, from the broker that
    /// coordinates the group: refused when, at this point of the log, the group's
    /// coordinator ([`crate::MetadataState::group_coordinator`]) is another broker, so a
    /// coordinator that took a group over has applied every commit accepted before it.
    /// 0: not checked (entries written before the check existed).
    CommitOffsets {
        group: String,
        #[serde(default)]
        coordinator: u32,
        offsets: Vec<OffsetCommit>,
    },
    /// Deletes committed offsets of a group (Kafka's DeleteGroups and OffsetDelete), from
    /// the broker that coordinates it (checked as for [`MetadataCommand::CommitOffsets`]).
    /// `partitions` None: every offset of the group; else those (topic, partition) pairs.
    /// Deleting what is not there is not an error.
    DeleteOffsets {
        group: String,
        coordinator: u32,
        partitions: Option<Vec<(String, u32)>>,
    },
}

fn serves_kafka_by_default() -> bool {
    true
}

/// One partition's offset in a [`MetadataCommand::CommitOffsets`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffsetCommit {
    pub topic: String,
    pub partition: u32,
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
}

/// The state machine's answer to one command, as applied.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetadataReply {
    /// Applied; nothing more to say (RegisterBroker, DeleteTopic, CommitOffsets, and the
    /// entries openraft writes itself: blank and membership).
    Done,
    /// FenceBroker applied: how many partitions changed leader (some to 0, offline).
    Fenced { leaders_moved: u32 },
    /// DrainBroker applied: leaderships moved, and those that could not move
    /// (`topic-partition`: no other live in-sync replica).
    Drained { moved: u32, stuck: Vec<String> },
    /// CreateTopic applied: the partitions as created.
    TopicCreated { partitions: Vec<PartitionState> },
    /// CreatePartitions applied: the new partitions as created.
    PartitionsCreated { partitions: Vec<PartitionState> },
    /// AlterIsr, ElectLeader, ReassignPartition applied: the partition as committed.
    Partition(PartitionState),
    /// AllocateProducerIds applied: ids `first .. first + count` belong to the broker.
    ProducerIds { first: u64, count: u32 },
    /// Not applied: the state is unchanged.
    Refused(Refusal),
}

/// Why a command was not applied. Every refusal leaves the state unchanged.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Refusal {
    #[error("broker {0} is not registered")]
    BrokerUnknown(u32),
    #[error("broker id {0} is out of 1..=BROKERS_MAX")]
    BrokerIdInvalid(u32),
    #[error("incarnation {given} is older than (or fenced at) the recorded {recorded}")]
    StaleIncarnation { given: u64, recorded: u64 },
    #[error("topic exists")]
    TopicExists,
    #[error("topic unknown")]
    TopicUnknown,
    #[error("partition unknown")]
    PartitionUnknown,
    #[error("a name is empty or longer than NAME_BYTES_MAX")]
    NameInvalid,
    #[error("a string is longer than its limit")]
    StringTooLong,
    #[error("no partitions, or more than PARTITIONS_MAX")]
    PartitionCountInvalid,
    #[error("a replica list is empty, too long, or names a broker twice")]
    ReplicasInvalid,
    #[error("min_insync is 0 or more than REPLICATION_FACTOR_MAX")]
    MinInsyncInvalid,
    #[error("leader {leader} at epoch {leader_epoch} is not the current leader and epoch")]
    FencedLeaderEpoch { leader: u32, leader_epoch: u32 },
    #[error("the ISR does not contain the leader")]
    IsrWithoutLeader,
    #[error("the ISR names a broker that is not a replica, or one twice")]
    IsrNotSubsetOfReplicas,
    #[error("the ISR adds fenced broker {0}")]
    IsrAddsFencedBroker(u32),
    #[error("the target leader is not in the ISR")]
    TargetNotInIsr,
    #[error("the target leader is fenced")]
    TargetFenced,
    #[error("count is 0 or more than PRODUCER_IDS_PER_BLOCK_MAX")]
    CountInvalid,
    #[error("producer ids are exhausted")]
    ProducerIdsExhausted,
    #[error("more than OFFSETS_PER_COMMIT_MAX offsets")]
    TooManyOffsets,
    #[error("the group is coordinated by broker {coordinator:?}, not by the proposer")]
    NotCoordinator { coordinator: Option<u32> },
    #[error("the topic has {existing} partitions: the new ones do not follow them")]
    PartitionsNotAppended { existing: u32 },
}

impl std::fmt::Display for MetadataCommand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self:?}")
    }
}

impl std::fmt::Display for MetadataReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self:?}")
    }
}
