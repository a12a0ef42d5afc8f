//! The admin API's messages: one JSON object per line, each way.
//!
//! Requests and responses are externally tagged serde enums with snake_case names:
//!
//! ```text
//! -> {"create_topic":{"name":"orders","partitions":3,"retention_ms":null,"retention_bytes":null}}
//! <- {"topic_created":{"name":"orders","topic_id":7,"partitions":3}}
//! -> "list_topics"
//! <- {"topics":[{"name":"orders","partitions":3,"bytes":0,"segments":3,"messages":0}]}
//! -> {"describe_topic":{"name":"nope"}}
//! <- {"error":{"code":"unknown_topic","message":"no topic named \"nope\" (topics: orders)"}}
//! -> {"cluster_create_topic":{"name":"orders","partitions":3,"replication_factor":3}}
//! <- {"cluster_results":[{"broker_id":1,"admin":"","answer":{"topic_created":{...}}},
//!                        {"broker_id":2,"admin":"10.79.0.12:9290","answer":{"error":{...}}}]}
//! ```

use precursor_config::{AcksAll, SaslMechanism};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What the CLI asks of the control plane.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Create a topic with `partitions` partitions. Retention left out: the node's
    /// `[storage]` defaults.
    CreateTopic {
        name: String,
        partitions: u32,
        #[serde(default)]
        retention_ms: Option<u64>,
        #[serde(default)]
        retention_bytes: Option<u64>,
    },
    DeleteTopic {
        name: String,
    },
    /// `topic create`: a topic with its replication. In a cluster (`cluster.broker_id` set)
    /// the control plane creates it on its own data plane and forwards the request, marked
    /// `forwarded`, to every other broker's cluster listener (`cluster.brokers[].admin`);
    /// the answer is [`Response::ClusterResults`]. Outside a cluster, or when `forwarded`,
    /// it is this broker's alone and answered like [`Request::CreateTopic`]. A field left
    /// out takes the receiving broker's default (`topics.default_replication_factor`,
    /// `topics.default_min_insync_replicas`, `cluster.acks_all`); the broker that forwards
    /// fills every field in first, so all brokers create the same topic.
    ClusterCreateTopic {
        name: String,
        partitions: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retention_ms: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retention_bytes: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        replication_factor: Option<u8>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        min_insync_replicas: Option<u8>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        acks_all: Option<AcksAll>,
        /// Sent by another broker's control plane: carry it out here, forward it nowhere.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        forwarded: bool,
    },
    /// `topic delete`: as [`Request::ClusterCreateTopic`], on every broker of a cluster.
    ClusterDeleteTopic {
        name: String,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        forwarded: bool,
    },
    /// `topic lead`: broker `leader` leads partition `partition` of `name` from now on, at
    /// `epoch` — or, left out, at one past the highest epoch any reachable broker knows for
    /// it. Carried to every broker like [`Request::ClusterCreateTopic`] (the answer is
    /// [`Response::ClusterResults`]); each data plane leads or follows at that epoch and
    /// persists it. A broker that misses it learns the new leader when it comes back.
    ClusterSetLeader {
        name: String,
        partition: u32,
        leader: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        epoch: Option<u32>,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        forwarded: bool,
    },
    /// `broker drain`: every partition broker `broker` (left out: this one) leads moves
    /// to another in-sync replica, in one commit of the metadata quorum (quorum mode
    /// only). The broker keeps running and replicating; see [`Response::Drained`].
    DrainBroker {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        broker: Option<u32>,
    },
    /// `topic alter --partitions`: grows topic `name` to `partitions` partitions (more than
    /// it has, at most `PARTITIONS_PER_TOPIC_MAX`), placed and replicated as at creation;
    /// the partitions it has are untouched. Answered with [`Response::TopicCreated`] (the
    /// new count). In a cluster carried to every broker like
    /// [`Request::ClusterCreateTopic`] (answered with [`Response::ClusterResults`]); in
    /// `metadata = "quorum"` mode committed by the quorum first. A broker that holds
    /// `partitions` already answers a forwarded one as done (a retry).
    CreatePartitions {
        name: String,
        partitions: u32,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        forwarded: bool,
    },
    /// Change a topic's retention; a field left out keeps its value.
    AlterTopic {
        name: String,
        #[serde(default)]
        retention_ms: Option<u64>,
        #[serde(default)]
        retention_bytes: Option<u64>,
    },
    ListTopics,
    DescribeTopic {
        name: String,
    },
    /// `topic alter --config` / `--delete-config`, Kafka's AlterConfigs and
    /// IncrementalAlterConfigs: `set` and `delete` applied to the topic's dynamic
    /// configuration (to none at all with `replace`, as AlterConfigs does), checked as
    /// Kafka checks them (an error names the key: code `invalid_config`), then carried
    /// out everywhere: through the metadata quorum in `quorum` mode, else here and (unless
    /// `forwarded`) on every other broker, which get the whole resulting set. With
    /// `validate_only` nothing changes.
    AlterTopicConfigs {
        name: String,
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        set: BTreeMap<String, String>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        delete: Vec<String>,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        replace: bool,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        validate_only: bool,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        forwarded: bool,
    },
    Status,
    /// The effective configuration, as TOML.
    Config,
    /// Send `count` pings through the command ring, one after another, and report their
    /// round trips (cp -> dp -> cp) as measured in the link thread
    /// (1..=`link::PING_SERIES_COUNT_MAX`).
    PingDataplane {
        count: u32,
    },
    /// `group list`: the consumer groups this broker's gateway coordinates or holds
    /// committed offsets of.
    ListGroups,
    /// `group describe`: a group's state, members and lag per partition.
    DescribeGroup {
        name: String,
    },
    /// `user create`: sets a SASL user's password, salted, for each SCRAM mechanism in
    /// `mechanisms` (empty: SCRAM-SHA-256 and SCRAM-SHA-512; PLAIN logins use the
    /// SHA-512 credential, else the SHA-256 one). Replaces the credentials it names.
    CreateUser {
        name: String,
        password: String,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        mechanisms: Vec<SaslMechanism>,
        /// PBKDF2 iterations (4096..=16384); left out: 4096.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        iterations: Option<u32>,
    },
    /// `user delete`: every credential of a SASL user.
    DeleteUser {
        name: String,
    },
    /// `user list`: the SASL users and their mechanisms.
    ListUsers,
}

impl Request {
    /// A short name of the request's type, for metrics labels and logs.
    pub fn type_name(&self) -> &'static str {
        match self {
            Request::CreateTopic { .. } => "create_topic",
            Request::DeleteTopic { .. } => "delete_topic",
            Request::ClusterCreateTopic { .. } => "cluster_create_topic",
            Request::ClusterDeleteTopic { .. } => "cluster_delete_topic",
            Request::ClusterSetLeader { .. } => "cluster_set_leader",
            Request::DrainBroker { .. } => "drain_broker",
            Request::AlterTopic { .. } => "alter_topic",
            Request::CreatePartitions { .. } => "create_partitions",
            Request::ListTopics => "list_topics",
            Request::DescribeTopic { .. } => "describe_topic",
            Request::AlterTopicConfigs { .. } => "alter_topic_configs",
            Request::Status => "status",
            Request::Config => "config",
            Request::PingDataplane { .. } => "ping_dataplane",
            Request::ListGroups => "list_groups",
            Request::DescribeGroup { .. } => "describe_group",
            Request::CreateUser { .. } => "create_user",
            Request::DeleteUser { .. } => "delete_user",
            Request::ListUsers => "list_users",
        }
    }
}

/// The control plane's answer to one [`Request`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Response {
    /// Done (delete, alter).
    Ok,
    TopicCreated {
        name: String,
        topic_id: u32,
        partitions: u32,
    },
    Topics(Vec<TopicSummary>),
    Topic(TopicDescription),
    Status(NodeStatus),
    Config(String),
    /// Round trips of a `ping_dataplane` series, in nanoseconds; `count` pings measured.
    Latency {
        count: u32,
        p50_ns: u64,
        p90_ns: u64,
        p99_ns: u64,
        p999_ns: u64,
        max_ns: u64,
    },
    /// A drain committed: `moved` leaderships went to other in-sync replicas; `stuck`
    /// (`topic-partition`) had no other live in-sync replica and stay with `broker`.
    Drained {
        broker: u32,
        moved: u32,
        stuck: Vec<String>,
    },
    /// The request failed; `code` is one of [`codes`], `message` one line for people.
    Error {
        code: String,
        message: String,
    },
    /// A create or delete carried out on every broker of a cluster: each broker's own
    /// answer, this broker first, then the others in `cluster.brokers` order.
    ClusterResults(Vec<BrokerAnswer>),
    Groups(Vec<GroupSummary>),
    Group(Box<GroupDescription>),
    Users(Vec<UserSummary>),
}

/// One configuration key of a [`TopicDescription`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicConfigEntry {
    pub name: String,
    pub value: String,
    /// `dynamic` (the topic's own) or `default` (the broker's).
    pub source: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
}

/// One line of `user list`: a SASL user and its SCRAM credentials.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserSummary {
    pub name: String,
    pub credentials: Vec<UserCredentialInfo>,
}

/// A SCRAM credential of a user (never its keys).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserCredentialInfo {
    pub mechanism: SaslMechanism,
    pub iterations: u32,
}

/// One broker's answer to a request the cluster carried out.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerAnswer {
    pub broker_id: u32,
    /// The cluster listener the request was forwarded to; empty for the broker that
    /// answered the CLI (it carried the request out itself).
    pub admin: String,
    /// What that broker answered, or `unreachable` when it could not be asked.
    pub answer: Response,
}

/// How a cluster-wide create or delete went, from its [`BrokerAnswer`]s.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterVerdict {
    /// Brokers that carried the request out now.
    pub done: Vec<u32>,
    /// Brokers where it was done already: the topic existed (create) or did not (delete).
    pub already: Vec<u32>,
    /// Brokers that failed, with their message and code.
    pub failed: Vec<(u32, String, String)>,
}

impl ClusterVerdict {
    /// `already_code` is the error that means "nothing to do here": `topic_exists` for a
    /// create, `unknown_topic` for a delete.
    pub fn of(answers: &[BrokerAnswer], already_code: &str) -> ClusterVerdict {
        let mut verdict = ClusterVerdict::default();
        for answer in answers {
            match &answer.answer {
                Response::Error { code, .. } if code == already_code => {
                    verdict.already.push(answer.broker_id)
                }
                Response::Error { code, message } => {
                    verdict
                        .failed
                        .push((answer.broker_id, message.clone(), code.clone()))
                }
                _ => verdict.done.push(answer.broker_id),
            }
        }
        verdict
    }

    /// Every broker has the topic (create) or has it no more (delete), and at least one
    /// did it now.
    pub fn complete(&self) -> bool {
        self.failed.is_empty() && !self.done.is_empty()
    }
}

impl Response {
    pub fn error(code: &str, message: impl Into<String>) -> Response {
        Response::Error {
            code: code.to_string(),
            message: message.into(),
        }
    }

    /// A short name of the outcome, for metrics labels: `ok` or the error code.
    pub fn outcome(&self) -> &str {
        match self {
            Response::Error { code, .. } => code,
            Response::ClusterResults(answers)
                if answers
                    .iter()
                    .any(|a| matches!(a.answer, Response::Error { .. })) =>
            {
                codes::PARTIAL
            }
            _ => "ok",
        }
    }
}

/// The error codes of [`Response::Error`].
pub mod codes {
    /// `topic create` for a name that exists.
    pub const TOPIC_EXISTS: &str = "topic_exists";
    /// describe, delete or alter of a name that does not exist.
    pub const UNKNOWN_TOPIC: &str = "unknown_topic";
    /// A bad name, partition count or value; or a request line that is not valid JSON.
    pub const INVALID_ARGUMENT: &str = "invalid_argument";
    /// The data plane is not running, or its shared files cannot be read.
    pub const DATAPLANE_UNAVAILABLE: &str = "dataplane_unavailable";
    /// The data plane did not answer within `controlplane.command_timeout_ms`.
    pub const TIMEOUT: &str = "timeout";
    /// The command ring is full: the data plane is not keeping up. Retry later.
    pub const BUSY: &str = "busy";
    /// The data plane tried and failed (storage error, ...); the message says why.
    pub const DATAPLANE_ERROR: &str = "dataplane_error";
    /// Another broker of the cluster could not be asked (down, link cut, no `admin`
    /// address, or its answer did not come).
    pub const UNREACHABLE: &str = "unreachable";
    /// A cluster-wide request that some brokers carried out and others did not (metrics
    /// outcome only; the answer lists each broker's).
    pub const PARTIAL: &str = "partial";
    /// `group describe` of a group with neither members nor committed offsets here.
    pub const UNKNOWN_GROUP: &str = "unknown_group";
    /// A group command on a broker whose Kafka gateway is off (`gateway.enabled = false`).
    pub const GATEWAY_DISABLED: &str = "gateway_disabled";
    /// `user delete` of a user that has no credentials.
    pub const UNKNOWN_USER: &str = "unknown_user";
    /// The users file could not be written (the message says why).
    pub const STORAGE_ERROR: &str = "storage_error";
    /// `topic alter --partitions` with no more partitions than the topic has.
    pub const INVALID_PARTITIONS: &str = "invalid_partitions";
    /// A topic configuration key or value refused (the message names the key and what
    /// it takes).
    pub const INVALID_CONFIG: &str = "invalid_config";
}

/// One line of `group list`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupSummary {
    pub group: String,
    /// Kafka's state name (Empty, PreparingRebalance, CompletingRebalance, Stable); `Empty`
    /// for a group with committed offsets and no live members.
    pub state: String,
    /// `consumer` for Kafka consumers; empty when no member is live.
    pub protocol_type: String,
    pub members: u32,
    /// Partitions with a committed offset.
    pub partitions: u32,
    /// Sum of the lag over those partitions whose log end is known, in messages.
    pub lag: u64,
}

/// `group describe`, like `kafka-consumer-groups --describe --members --offsets`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupDescription {
    pub group: String,
    pub state: String,
    pub protocol_type: String,
    /// The assignor the members agreed on (range, roundrobin, ...); empty when none.
    pub protocol: String,
    pub generation: i32,
    /// Member id of the group's leader; empty when no member is live.
    pub leader: String,
    pub members: Vec<GroupMember>,
    /// Committed and assigned partitions, by topic and partition.
    pub partitions: Vec<GroupPartition>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupMember {
    pub member_id: String,
    #[serde(default)]
    pub instance_id: Option<String>,
    pub client_id: String,
    /// The address the member connected from, Kafka's way (`/127.0.0.1`).
    pub client_host: String,
    /// What the group's leader assigned it (decoded for `protocol_type = "consumer"`).
    pub assignment: Vec<AssignedTopic>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssignedTopic {
    pub topic: String,
    pub partitions: Vec<i32>,
}

/// One partition of a group: committed offset, log end, lag, and who has it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupPartition {
    pub topic: String,
    pub partition: i32,
    /// None: assigned, nothing committed yet.
    pub committed_offset: Option<i64>,
    /// What a consumer can read up to: the high watermark of a replicated partition, else
    /// the log end. None when this broker's data plane does not hold the partition.
    pub log_end_offset: Option<u64>,
    /// `log_end_offset - committed_offset` (0 when the commit is past the end); None when
    /// either is unknown.
    pub lag: Option<u64>,
    /// The member it is assigned to, when one is.
    #[serde(default)]
    pub member_id: Option<String>,
    #[serde(default)]
    pub client_id: Option<String>,
    #[serde(default)]
    pub client_host: Option<String>,
}

/// One line of `topic list`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicSummary {
    pub name: String,
    pub partitions: u32,
    /// Messages held: the sum over partitions of `end_offset - start_offset`.
    pub messages: u64,
    /// Bytes held by the topic's segments.
    pub bytes: u64,
    pub segments: u64,
    /// Replicas of each partition (of partition 0; 0 when the data plane publishes none,
    /// as one outside a cluster or before replication).
    #[serde(default)]
    pub replication_factor: u32,
    /// Partitions whose in-sync replicas are fewer than their replicas.
    #[serde(default)]
    pub under_replicated: u32,
    /// Partitions whose in-sync replicas are fewer than `min_insync_replicas`: they refuse
    /// acks=all produces.
    #[serde(default)]
    pub under_min_isr: u32,
    /// The leader of each partition, by partition (broker ids; 0: none known).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub leaders: Vec<u32>,
}

/// `topic describe`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicDescription {
    pub name: String,
    pub partitions: Vec<PartitionInfo>,
    /// Every supported configuration key: the topic's own value or the broker's (what
    /// Kafka's DescribeConfigs answers).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub configs: Vec<TopicConfigEntry>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionInfo {
    pub partition: u32,
    /// First offset still held (retention moves it).
    pub start_offset: u64,
    /// The offset the next message will get.
    pub end_offset: u64,
    /// Offsets below this are on disk (fdatasync'd).
    pub durable_offset: u64,
    pub bytes: u64,
    pub segments: u64,
    /// Offsets below this are held by every in-sync replica: what consumers may read.
    #[serde(default)]
    pub high_watermark: u64,
    /// The leader's broker id as this broker knows it; 0 outside a cluster.
    #[serde(default)]
    pub leader: u32,
    #[serde(default)]
    pub leader_epoch: u64,
    /// Broker ids of the replicas, preferred leader first (empty outside a cluster).
    #[serde(default)]
    pub replicas: Vec<u32>,
    /// Broker ids of the in-sync replicas (the leader's view; a follower shows the last
    /// set its leader told it).
    #[serde(default)]
    pub isr: Vec<u32>,
    /// `metadata = "quorum"`, on the leader: the ISR it asks the quorum for (a shrink
    /// takes effect only once committed); equals `isr` when nothing is pending.
    #[serde(default)]
    pub isr_proposed: Vec<u32>,
    /// `min_insync_replicas` of the topic.
    #[serde(default)]
    pub min_insync: u32,
    /// Times a follower left / rejoined the ISR of this partition (on its leader).
    #[serde(default)]
    pub isr_shrinks: u64,
    #[serde(default)]
    pub isr_expands: u64,
    /// Bytes of divergent log this replica cut when it followed a new leader.
    #[serde(default)]
    pub truncated_bytes: u64,
}

impl PartitionInfo {
    /// Whether the data plane publishes replication for this partition (a cluster's).
    pub fn replicated(&self) -> bool {
        self.leader != 0 || !self.replicas.is_empty()
    }
}

/// Broker ids packed one byte each from the lowest byte (the `PARTITION_REPLICAS` and
/// `PARTITION_ISR` gauges), in order, up to the first zero byte.
pub fn unpack_broker_ids(packed: u64) -> Vec<u32> {
    packed
        .to_le_bytes()
        .iter()
        .take_while(|&&id| id != 0)
        .map(|&id| u32::from(id))
        .collect()
}

/// `precursor status`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// The pid in the CnC header, when a CnC file is mapped.
    pub dataplane_pid: Option<u32>,
    /// A data plane is attached and its heartbeat is fresh.
    pub dataplane_alive: bool,
    /// Data plane restarts by `precursor up` since the control plane started.
    pub restarts: u64,
    /// Seconds since the control plane started.
    pub uptime_s: u64,
    /// Seconds since the control plane attached to the current data plane.
    pub dataplane_uptime_s: Option<u64>,
    pub ports: Vec<PortStatus>,
    pub lcores: Vec<LcoreStatus>,
    /// Partitions the data plane holds, over all topics.
    pub partitions: u32,
    pub topics: u32,
    /// Bytes of all partition logs.
    pub disk_bytes: u64,
    /// Commands waiting in the command ring (sent, not yet taken by the data plane).
    pub command_ring_depth: u32,
    /// `cluster.metadata = "quorum"`: the metadata quorum as this broker's voter sees it.
    #[serde(default)]
    pub quorum: Option<Box<QuorumView>>,
}

/// The metadata quorum in `precursor status` (`cluster.metadata = "quorum"`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuorumView {
    /// The voter that leads (the controller), when one is known.
    pub leader: Option<u32>,
    pub term: u64,
    /// Highest log index known committed, and applied here.
    pub committed: Option<u64>,
    pub applied: Option<u64>,
    /// Entries each voter is behind the leader's log (known on the leader only).
    pub voter_lag: std::collections::BTreeMap<u32, u64>,
    /// This broker's registered incarnation (0: not registered).
    pub incarnation: u64,
    pub registered: bool,
    /// Milliseconds of leadership lease left (0: this broker leads nothing now).
    pub lease_left_ms: u64,
    /// Brokers the committed metadata holds as fenced.
    pub fenced_brokers: Vec<u32>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortStatus {
    /// The port's number in the data plane (`port=` label).
    pub port: String,
    /// The port's name or interface, when the data plane publishes one (`name=` label).
    pub name: Option<String>,
    pub link_up: bool,
    /// Link speed in Mbit/s (0: unknown).
    pub speed_mbps: u64,
    pub rx_packets: u64,
    pub rx_bytes: u64,
    /// Packets the NIC dropped for lack of room in the RX queue.
    pub rx_missed: u64,
    pub rx_errors: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub tx_errors: u64,
}

/// One data-plane lcore and its counters, by metric name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LcoreStatus {
    pub lcore: String,
    pub counters: std::collections::BTreeMap<String, u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip<T: Serialize + for<'de> Deserialize<'de> + PartialEq + std::fmt::Debug>(
        value: T,
    ) -> String {
        let text = serde_json::to_string(&value).unwrap();
        assert!(!text.contains('\n'), "one line: {text}");
        assert_eq!(serde_json::from_str::<T>(&text).unwrap(), value);
        text
    }

    #[test]
    fn requests_round_trip() {
        let create = round_trip(Request::CreateTopic {
            name: "orders".into(),
            partitions: 3,
            retention_ms: Some(60_000),
            retention_bytes: None,
        });
        assert_eq!(
            create,
            r#"{"create_topic":{"name":"orders","partitions":3,"retention_ms":60000,"retention_bytes":null}}"#
        );
        assert_eq!(round_trip(Request::ListTopics), r#""list_topics""#);
        round_trip(Request::DeleteTopic { name: "a".into() });
        round_trip(Request::AlterTopic {
            name: "a".into(),
            retention_ms: None,
            retention_bytes: Some(1 << 30),
        });
        round_trip(Request::DescribeTopic { name: "a".into() });
        assert_eq!(
            round_trip(Request::CreatePartitions {
                name: "a".into(),
                partitions: 8,
                forwarded: false,
            }),
            r#"{"create_partitions":{"name":"a","partitions":8}}"#
        );
        round_trip(Request::CreatePartitions {
            name: "a".into(),
            partitions: 8,
            forwarded: true,
        });
        assert_eq!(
            round_trip(Request::ClusterCreateTopic {
                name: "orders".into(),
                partitions: 3,
                retention_ms: None,
                retention_bytes: None,
                replication_factor: Some(3),
                min_insync_replicas: Some(2),
                acks_all: Some(AcksAll::Durable),
                forwarded: true,
            }),
            r#"{"cluster_create_topic":{"name":"orders","partitions":3,"replication_factor":3,"min_insync_replicas":2,"acks_all":"durable","forwarded":true}}"#
        );
        assert_eq!(
            round_trip(Request::ClusterDeleteTopic {
                name: "orders".into(),
                forwarded: false,
            }),
            r#"{"cluster_delete_topic":{"name":"orders"}}"#
        );
        round_trip(Request::Status);
        round_trip(Request::Config);
        assert_eq!(
            round_trip(Request::PingDataplane { count: 3 }),
            r#"{"ping_dataplane":{"count":3}}"#
        );
        // Optional fields may be left out by hand-written clients.
        assert_eq!(
            serde_json::from_str::<Request>(r#"{"create_topic":{"name":"x","partitions":1}}"#)
                .unwrap(),
            Request::CreateTopic {
                name: "x".into(),
                partitions: 1,
                retention_ms: None,
                retention_bytes: None
            }
        );
        assert!(serde_json::from_str::<Request>(r#""drop_everything""#).is_err());
        assert!(
            serde_json::from_str::<Request>(r#"{"delete_topic":{"name":"x","force":true}}"#)
                .is_err()
        );
    }

    #[test]
    fn responses_round_trip() {
        assert_eq!(round_trip(Response::Ok), r#""ok""#);
        round_trip(Response::TopicCreated {
            name: "orders".into(),
            topic_id: 4,
            partitions: 3,
        });
        round_trip(Response::Topics(vec![TopicSummary {
            name: "orders".into(),
            partitions: 3,
            messages: 10,
            bytes: 4096,
            segments: 3,
            replication_factor: 3,
            under_replicated: 1,
            under_min_isr: 0,
            leaders: vec![1, 2, 3],
        }]));
        round_trip(Response::Topic(TopicDescription {
            name: "orders".into(),
            configs: Vec::new(),
            partitions: vec![PartitionInfo {
                isr_proposed: vec![2, 3],
                partition: 0,
                start_offset: 1,
                end_offset: 9,
                durable_offset: 8,
                bytes: 700,
                segments: 1,
                high_watermark: 9,
                leader: 2,
                leader_epoch: 4,
                replicas: vec![2, 3, 1],
                isr: vec![2, 3],
                min_insync: 2,
                isr_shrinks: 1,
                isr_expands: 0,
                truncated_bytes: 0,
            }],
        }));
        // An answer of an older control plane (no replication fields) still reads.
        let old: TopicSummary = serde_json::from_str(
            r#"{"name":"a","partitions":1,"messages":0,"bytes":0,"segments":1}"#,
        )
        .unwrap();
        assert_eq!((old.replication_factor, old.leaders.len()), (0, 0));
        let results = Response::ClusterResults(vec![
            BrokerAnswer {
                broker_id: 1,
                admin: String::new(),
                answer: Response::TopicCreated {
                    name: "orders".into(),
                    topic_id: 0,
                    partitions: 3,
                },
            },
            BrokerAnswer {
                broker_id: 2,
                admin: "10.79.0.12:9290".into(),
                answer: Response::error(codes::UNREACHABLE, "connection refused"),
            },
        ]);
        round_trip(results.clone());
        assert_eq!(results.outcome(), codes::PARTIAL);
        let mut status = NodeStatus {
            dataplane_pid: Some(42),
            dataplane_alive: true,
            ..NodeStatus::default()
        };
        status.ports.push(PortStatus {
            port: "0".into(),
            link_up: true,
            ..PortStatus::default()
        });
        status.lcores.push(LcoreStatus {
            lcore: "1".into(),
            counters: [("precursor_produce_requests_total".to_string(), 5)].into(),
        });
        round_trip(Response::Status(status));
        round_trip(Response::Config("preset = \"balanced\"\n".into()));
        round_trip(Response::Latency {
            count: 10,
            p50_ns: 900,
            p90_ns: 1_200,
            p99_ns: 3_000,
            p999_ns: 9_000,
            max_ns: 12_000,
        });
        let error = round_trip(Response::error(codes::TOPIC_EXISTS, "topic \"a\" exists"));
        assert_eq!(
            error,
            r#"{"error":{"code":"topic_exists","message":"topic \"a\" exists"}}"#
        );
        assert_eq!(Response::error(codes::TIMEOUT, "x").outcome(), "timeout");
        assert_eq!(Response::Ok.outcome(), "ok");
    }

    #[test]
    fn broker_ids_unpack_from_the_lowest_byte() {
        assert_eq!(unpack_broker_ids(0), Vec::<u32>::new());
        assert_eq!(unpack_broker_ids(0x01_03_02), vec![2, 3, 1]);
        assert_eq!(unpack_broker_ids(0x05), vec![5]);
    }

    #[test]
    fn a_verdict_sorts_brokers_by_what_they_answered() {
        let answer = |broker_id, answer| BrokerAnswer {
            broker_id,
            admin: String::new(),
            answer,
        };
        let answers = [
            answer(1, Response::Ok),
            answer(2, Response::error(codes::UNKNOWN_TOPIC, "gone")),
            answer(3, Response::error(codes::UNREACHABLE, "down")),
        ];
        let verdict = ClusterVerdict::of(&answers, codes::UNKNOWN_TOPIC);
        assert_eq!((verdict.done, verdict.already), (vec![1], vec![2]));
        assert_eq!(verdict.failed[0].0, 3);
        assert!(!ClusterVerdict::of(&answers[..2], codes::UNKNOWN_TOPIC)
            .failed
            .iter()
            .any(|f| f.0 == 2));
        assert!(ClusterVerdict::of(&answers[..2], codes::UNKNOWN_TOPIC).complete());
        assert!(!ClusterVerdict::of(&answers[1..2], codes::UNKNOWN_TOPIC).complete());
    }
}
