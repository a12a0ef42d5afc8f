//! `[cluster]`: a broker among several, replicating partitions data plane to data plane.
//!
//! Static mode (this file): every broker's TOML names the same brokers and this broker's
//! id; each partition's replicas come from [`ClusterConfig::replicas_for`] (or a fixed
//! `replicas` list of its `[[topics.create]]`), the first replica leads at start-up. The
//! same function on every broker gives the same answer, so no broker has to ask another.
//!
//! ```toml
//! [cluster]
//! broker_id = 1
//! [[cluster.brokers]]
//! id = 1
//! address = "10.79.0.21"        # data plane (DPDK port) address
//! kafka = "10.79.0.11:9092"     # the Kafka listener clients are told about
//! admin = "10.79.0.11:9290"     # the control plane's cluster listener
//! [[cluster.brokers]]
//! id = 2
//! ...
//! ```

use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;

/// Brokers in one cluster, at most (ids are 1..=BROKERS_MAX; a set of them fits a u64).
pub const BROKERS_MAX: usize = 64;
/// Replicas of one partition, at most.
pub const REPLICATION_FACTOR_MAX: u8 = 5;

/// What a produce with `acks=all` waits for on every in-sync replica.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AcksAll {
    /// In the memory of every ISR member (Kafka's meaning of acks=all: the followers'
    /// page cache). A broker crash loses nothing while another ISR member lives.
    Memory,
    /// fdatasync'd on every ISR member (Redpanda's meaning). Survives every ISR member
    /// losing power at once; costs each member's fdatasync.
    Durable,
}

impl AcksAll {
    pub fn name(self) -> &'static str {
        match self {
            AcksAll::Memory => "memory",
            AcksAll::Durable => "durable",
        }
    }
    pub fn parse(name: &str) -> Option<AcksAll> {
        match name {
            "memory" => Some(AcksAll::Memory),
            "durable" => Some(AcksAll::Durable),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// This broker's id, one of `brokers`. 0: not a cluster (a single node, nothing
    /// replicated; `brokers` must be empty).
    pub broker_id: u32,
    /// Every broker of the cluster, this one included (the same list on every broker).
    pub brokers: Vec<BrokerSpec>,
    /// A follower that has not caught up with the leader's log end for this long leaves
    /// the in-sync replica set (Kafka's `replica.lag.time.max.ms`, 30 s there), in
    /// milliseconds. Default 2000: acks=all producers wait this long for a follower that
    /// died before they go on without it, well inside the native client's 10 s delivery
    /// timeout; an lcore that polls does not pause for seconds the way a JVM may.
    pub replica_lag_ms: u64,
    /// A follower's fetch that finds nothing new waits at the leader this long before it
    /// is answered empty (long polling: new data is sent the moment it is appended), in
    /// milliseconds.
    pub replica_fetch_wait_ms: u64,
    /// A follower re-sends a fetch that got no answer after this long (UDP loses
    /// datagrams), in milliseconds.
    pub replica_fetch_retry_ms: u64,
    /// What Kafka's `acks=-1` (and the native `acks=all` of a topic without its own
    /// setting) waits for on every ISR member: `memory` or `durable`.
    pub acks_all: AcksAll,
    /// Who decides leaders and in-sync replicas: `static` (the config file and `topic
    /// lead`; the leader's data plane shrinks its ISR alone) or `quorum` (the metadata
    /// quorum, openraft among the brokers' control planes, with leases and automatic
    /// failover: issue 12; every broker then needs `quorum`).
    pub metadata: MetadataMode,
    /// The metadata quorum's timers (`metadata = "quorum"`).
    pub quorum: QuorumTimings,
}

/// Who decides each partition's leader, epoch and ISR.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MetadataMode {
    #[default]
    Static,
    Quorum,
}

/// The metadata quorum's timers, each in milliseconds. Detection and election in tens of
/// milliseconds on a dedicated network; the cost is false suspicion when a loaded machine
/// stalls a control plane longer than `broker_session_ms` (docs/operations.md).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QuorumTimings {
    /// The Raft leader's heartbeat to the other voters.
    pub raft_heartbeat_ms: u64,
    /// A voter that hears no leader for a random time in [min, max] starts a (pre-)vote.
    pub raft_election_timeout_min_ms: u64,
    pub raft_election_timeout_max_ms: u64,
    /// Each broker's control plane renews its lease with the quorum leader this often.
    pub broker_heartbeat_ms: u64,
    /// A broker whose lease has not been renewed for this long is fenced: its leaderships
    /// move to in-sync replicas. Its own data plane stops acknowledging as a leader
    /// `broker_session_ms - lease_margin_ms` after the last renewal it saw, so it has
    /// stopped before anyone else leads.
    pub broker_session_ms: u64,
    /// How much earlier than the quorum the broker gives up its own lease (clock rate
    /// differences and scheduling delay between reading the clock and acting).
    pub lease_margin_ms: u64,
}

impl Default for QuorumTimings {
    fn default() -> QuorumTimings {
        QuorumTimings {
            raft_heartbeat_ms: 50,
            raft_election_timeout_min_ms: 300,
            raft_election_timeout_max_ms: 600,
            broker_heartbeat_ms: 25,
            broker_session_ms: 250,
            lease_margin_ms: 50,
        }
    }
}

/// One broker of the cluster.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerSpec {
    /// 1..=64, unique.
    pub id: u32,
    /// The data plane's IPv4 address (its DPDK port's `port.address`).
    pub address: Ipv4Addr,
    /// The data plane's UDP port. Default 9190.
    #[serde(default = "default_udp_port")]
    pub udp_port: u16,
    /// `host:port` of its Kafka listener, as clients are told in Metadata.
    #[serde(default)]
    pub kafka: String,
    /// `host:port` of its control plane's cluster listener (topic creation reaches every
    /// broker through it). Empty: that broker is configured by its own file only.
    #[serde(default)]
    pub admin: String,
    /// `host:port` of its metadata quorum listener (Raft among the control planes,
    /// `metadata = "quorum"`; every broker is a voter). Empty: static metadata only.
    #[serde(default)]
    pub quorum: String,
    /// Rack or zone, for placement and for clients' rack awareness. Empty: none.
    #[serde(default)]
    pub rack: String,
}

fn default_udp_port() -> u16 {
    9190
}

impl Default for ClusterConfig {
    fn default() -> ClusterConfig {
        ClusterConfig {
            broker_id: 0,
            brokers: Vec::new(),
            replica_lag_ms: 2_000,
            replica_fetch_wait_ms: 500,
            replica_fetch_retry_ms: 50,
            acks_all: AcksAll::Memory,
            metadata: MetadataMode::Static,
            quorum: QuorumTimings::default(),
        }
    }
}

impl ClusterConfig {
    /// Whether this broker is one of several.
    pub fn enabled(&self) -> bool {
        self.broker_id != 0
    }

    pub fn broker(&self, id: u32) -> Option<&BrokerSpec> {
        self.brokers.iter().find(|b| b.id == id)
    }

    /// Whether the metadata quorum decides leaders (else the config file does).
    pub fn quorum_enabled(&self) -> bool {
        self.enabled() && self.metadata == MetadataMode::Quorum
    }

    /// This broker's own entry (`None` outside a cluster).
    pub fn me(&self) -> Option<&BrokerSpec> {
        self.broker(self.broker_id)
    }

    /// The replicas of partition `partition` of topic `topic`, preferred leader first:
    /// `replication_factor` consecutive brokers (in id order) starting at a place that
    /// depends on the topic's name and the partition, so leaders spread over the brokers
    /// and every broker computes the same list. Outside a cluster: empty.
    pub fn replicas_for(&self, topic: &str, partition: u16, replication_factor: u8) -> Vec<u32> {
        let mut ids: Vec<u32> = self.brokers.iter().map(|b| b.id).collect();
        ids.sort_unstable();
        if ids.is_empty() {
            return Vec::new();
        }
        let count = (replication_factor as usize).clamp(1, ids.len());
        let start = (topic_placement_hash(topic) as usize + partition as usize) % ids.len();
        (0..count).map(|i| ids[(start + i) % ids.len()]).collect()
    }
}

/// FNV-1a 64 of a topic's name: the same on every broker and every build.
pub fn topic_placement_hash(name: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in name.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    fn three() -> ClusterConfig {
        ClusterConfig {
            broker_id: 2,
            brokers: (1..=3)
                .map(|id| BrokerSpec {
                    id,
                    address: Ipv4Addr::new(10, 79, 0, 20 + id as u8),
                    udp_port: 9190,
                    kafka: String::new(),
                    admin: String::new(),
                    quorum: String::new(),
                    rack: String::new(),
                })
                .collect(),
            ..ClusterConfig::default()
        }
    }

    #[test]
    fn replicas_are_distinct_consecutive_and_spread_leaders() {
        let cluster = three();
        let mut leaders = [0usize; 4];
        for partition in 0..30 {
            let replicas = cluster.replicas_for("orders", partition, 3);
            assert_eq!(replicas.len(), 3);
            let mut sorted = replicas.clone();
            sorted.sort_unstable();
            sorted.dedup();
            assert_eq!(sorted, vec![1, 2, 3]);
            leaders[replicas[0] as usize] += 1;
        }
        assert_eq!(leaders[1..], [10, 10, 10]);
        // Fewer replicas than brokers: the first of the full list.
        let two = cluster.replicas_for("orders", 7, 2);
        assert_eq!(two[..], cluster.replicas_for("orders", 7, 3)[..2]);
        // More than there are brokers: every broker once.
        assert_eq!(cluster.replicas_for("orders", 0, 5).len(), 3);
    }

    #[test]
    fn no_cluster_no_replicas() {
        assert!(ClusterConfig::default()
            .replicas_for("orders", 0, 3)
            .is_empty());
        assert!(!ClusterConfig::default().enabled());
        assert!(three().enabled());
        assert_eq!(three().me().map(|b| b.id), Some(2));
    }
}
