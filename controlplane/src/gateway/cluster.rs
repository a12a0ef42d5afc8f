//! The gateway as one broker of a cluster (DESIGN.md §10): the brokers Metadata lists,
//! who leads each partition, and whether this broker may serve a request for it.
//!
//! A broker's gateway knows what its own data plane publishes, and nothing else: the
//! brokers of `[cluster]` (their `kafka` listeners) and, per partition, the replication
//! gauges in the counters file (label `topic=..,partition=..`, refreshed every 10 ms):
//!
//! ```text
//!  kind                      value                  meaning
//!  PARTITION_LEADER          2                      the leader's broker id as this broker knows it (0: none)
//!  PARTITION_LEADER_EPOCH    7
//!  PARTITION_REPLICAS        0x00_00_00_03_01_02     broker ids, one byte each from the lowest,
//!  PARTITION_ISR             0x00_00_00_00_01_02     preferred leader first; 0 ends the list
//!  PARTITION_HIGH_WATERMARK  1042                   every ISR member holds the offsets below
//! ```
//!
//! (`CountersSnapshot` unpacks them into `PartitionInfo`; the gateway reads the high
//! watermark gauge live as well, see [`HighWatermark`].)
//!
//! Outside a cluster (`cluster.broker_id = 0`), and for partitions without a leader gauge
//! (a data plane built before replication), this broker leads every partition and gives
//! out no leader epoch: the gateway behaves exactly as on a single node
//! ([`Leadership::Alone`]).

use super::topics::Partition;
use crate::admin::PartitionInfo;
use kafka_protocol::error::ResponseError;
use precursor_config::ClusterConfig;
use precursor_shm::{CounterId, CountersReader};
use std::sync::Arc;

/// Who serves a partition, as this broker knows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Leadership {
    /// Not a cluster, or no leader gauge: this broker serves the partition and gives out
    /// no leader epoch (-1), as a single node does.
    Alone,
    /// This broker leads the partition at `epoch`.
    Leader { epoch: i32 },
    /// Another broker leads it, or none is known (`leader` None: an election is under
    /// way); `epoch` is the latest this broker heard of.
    Elsewhere { leader: Option<u32>, epoch: i32 },
}

impl Leadership {
    /// `me` is `cluster.broker_id` (0: not a cluster).
    pub fn of(me: u32, partition: &PartitionInfo) -> Leadership {
        let epoch = i32::try_from(partition.leader_epoch).unwrap_or(i32::MAX);
        if me == 0 || !partition.replicated() {
            Leadership::Alone
        } else if partition.leader == me {
            Leadership::Leader { epoch }
        } else {
            Leadership::Elsewhere {
                leader: (partition.leader != 0).then_some(partition.leader),
                epoch,
            }
        }
    }

    /// The leader epoch clients are told (-1: none).
    pub fn epoch(self) -> i32 {
        match self {
            Leadership::Alone => -1,
            Leadership::Leader { epoch } | Leadership::Elsewhere { epoch, .. } => epoch,
        }
    }

    /// Whether a request for the partition naming `current_leader_epoch` (-1: none) may
    /// be served here, checked as Kafka checks it (KIP-320): the epoch first, then the
    /// leadership. An epoch older than the partition's is FENCED_LEADER_EPOCH (the client
    /// missed a leader change), a newer one UNKNOWN_LEADER_EPOCH (this broker has not
    /// heard of it yet); both make the client refresh its metadata and retry.
    pub fn check_serving(self, current_leader_epoch: i32) -> Result<(), ResponseError> {
        match self {
            Leadership::Alone => Ok(()),
            Leadership::Leader { epoch } => check_epoch(current_leader_epoch, epoch),
            Leadership::Elsewhere { epoch, .. } => {
                check_epoch(current_leader_epoch, epoch)?;
                Err(ResponseError::NotLeaderOrFollower)
            }
        }
    }
}

/// A request's `current_leader_epoch` against the partition's `epoch`.
pub fn check_epoch(current_leader_epoch: i32, epoch: i32) -> Result<(), ResponseError> {
    use std::cmp::Ordering::{Equal, Greater, Less};
    if current_leader_epoch < 0 {
        return Ok(()); // the client names none: no check
    }
    match current_leader_epoch.cmp(&epoch) {
        Less => Err(ResponseError::FencedLeaderEpoch),
        Greater => Err(ResponseError::UnknownLeaderEpoch),
        Equal => Ok(()),
    }
}

/// A broker as Metadata lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KafkaBroker {
    pub id: i32,
    pub host: String,
    pub port: i32,
    pub rack: Option<String>,
}

/// `host:port` split (the config checks the form).
fn host_port(listener: &str) -> Option<(String, i32)> {
    let (host, port) = listener.rsplit_once(':')?;
    Some((host.to_string(), i32::from(port.parse::<u16>().ok()?)))
}

/// Every broker of `[cluster]` a client can reach: those with a `kafka` listener, and
/// this one (`cluster.broker_id`) at `own` when its own `kafka` is empty. Brokers without
/// a listener are left out: a partition they lead is LEADER_NOT_AVAILABLE.
impl super::Gateway {
    /// The controller clients are told of (Metadata, DescribeCluster): the metadata
    /// quorum's leader with `cluster.metadata = "quorum"` (-1 while there is none), else
    /// this broker (there is no other controller).
    pub fn controller_id(&self) -> i32 {
        match self.node.member.get() {
            Some(member) => member
                .status()
                .quorum
                .leader
                .map_or(-1, |leader| leader as i32),
            None => self.broker_id(),
        }
    }

    /// The brokers clients are told of (Metadata, DescribeCluster): this gateway alone
    /// outside a cluster (at `own`, the address the client reached), every broker of
    /// `[cluster]` with a Kafka listener in one.
    pub fn kafka_brokers(&self, own: (String, i32)) -> Vec<KafkaBroker> {
        if self.cluster_broker_id() == 0 {
            return vec![KafkaBroker {
                id: self.broker_id(),
                host: own.0,
                port: own.1,
                rack: None,
            }];
        }
        kafka_brokers(&self.node.config.cluster, own)
    }
}

pub fn kafka_brokers(cluster: &ClusterConfig, own: (String, i32)) -> Vec<KafkaBroker> {
    let mut brokers: Vec<KafkaBroker> = cluster
        .brokers
        .iter()
        .filter_map(|spec| {
            let (host, port) = match host_port(&spec.kafka) {
                Some(address) => address,
                None if spec.id == cluster.broker_id => own.clone(),
                None => return None,
            };
            Some(KafkaBroker {
                id: spec.id as i32,
                host,
                port,
                rack: (!spec.rack.is_empty()).then(|| spec.rack.clone()),
            })
        })
        .collect();
    brokers.sort_by_key(|b| b.id);
    brokers
}

/// The broker that coordinates consumer group `group`, the same on every broker of the
/// cluster: FNV-1a of the group id over the ids of the brokers with a Kafka listener, as
/// Kafka places each group on one broker (the leader of its `__consumer_offsets`
/// partition). Group state and committed offsets live in the gateway that coordinates
/// the group; were every gateway to coordinate every group, the members of one group
/// that asked different brokers would form one group per broker, each consuming every
/// partition. None outside a cluster, or when no broker has a listener: this broker.
pub fn group_coordinator(cluster: &ClusterConfig, group: &str) -> Option<u32> {
    let mut ids: Vec<u32> = cluster
        .brokers
        .iter()
        .filter(|broker| !broker.kafka.is_empty())
        .map(|broker| broker.id)
        .collect();
    if !cluster.enabled() || ids.is_empty() {
        return None;
    }
    ids.sort_unstable();
    let at = precursor_config::topic_placement_hash(group) % ids.len() as u64;
    Some(ids[at as usize])
}

/// The Kafka cluster id of a cluster, the same on every broker: 22 characters of URL-safe
/// base64 (as Kafka's) of a 128-bit FNV-1a hash of the brokers (ids, data plane addresses
/// and ports). librdkafka warns at every Metadata answer whose cluster id differs from the
/// last one ("Broker ... reports different ClusterId"), so brokers of one cluster must
/// not each make up their own.
pub fn cluster_id(cluster: &ClusterConfig) -> String {
    let mut brokers: Vec<String> = cluster
        .brokers
        .iter()
        .map(|b| format!("{}@{}:{}", b.id, b.address, b.udp_port))
        .collect();
    brokers.sort();
    let canonical = brokers.join(",");
    let high = precursor_config::topic_placement_hash(&format!("precursor-cluster/{canonical}"));
    let low = precursor_config::topic_placement_hash(&canonical);
    let mut bits = (u128::from(high) << 64) | u128::from(low);
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut id = String::with_capacity(22);
    for _ in 0..22 {
        id.push(ALPHABET[(bits & 63) as usize] as char);
        bits >>= 6;
    }
    id
}

/// A live read of one gauge of the counters file: the slot found when the topic view was
/// read, checked to still hold that gauge at each load ([`CountersReader::value_if`]).
#[derive(Clone, Debug)]
pub struct LiveGauge {
    reader: Arc<CountersReader>,
    id: CounterId,
    kind: u32,
    label: String,
}

impl LiveGauge {
    pub fn new(reader: Arc<CountersReader>, id: CounterId, kind: u32, label: String) -> Self {
        LiveGauge {
            reader,
            id,
            kind,
            label,
        }
    }

    /// The value now (at most 10 ms old: the data plane's refresh), or None when the slot
    /// went to another counter (the topic was deleted).
    pub fn load(&self) -> Option<u64> {
        self.reader.value_if(self.id, self.kind, &self.label)
    }
}

/// Where reads of a partition stop: its high watermark, read live at each use.
#[derive(Clone, Debug)]
pub struct HighWatermark {
    gauge: Option<LiveGauge>,
    /// The value in the topic view (older, never higher than the live one).
    viewed: u64,
}

impl HighWatermark {
    /// The bound of a partition this broker serves, if it has one: only a partition this
    /// broker leads with other replicas has a high watermark below its log end.
    pub fn of(partition: &Partition, me: u32) -> Option<HighWatermark> {
        let info = &partition.info;
        let leads = matches!(Leadership::of(me, info), Leadership::Leader { .. });
        (leads && info.replicas.len() > 1).then(|| HighWatermark {
            gauge: partition.high_watermark_gauge.clone(),
            viewed: info.high_watermark,
        })
    }

    pub fn now(&self) -> u64 {
        self.gauge
            .as_ref()
            .and_then(LiveGauge::load)
            .unwrap_or(self.viewed)
    }

    #[cfg(test)]
    pub fn fixed(high_watermark: u64) -> HighWatermark {
        HighWatermark {
            gauge: None,
            viewed: high_watermark,
        }
    }
}

/// The whole batches of `batches` that end below `high_watermark` (a batch is served
/// whole or not at all; the leader's high watermark moves on batch boundaries, as the
/// followers fetch whole batches).
pub fn below_high_watermark(batches: &[u8], high_watermark: u64) -> usize {
    let mut end = 0;
    for batch in precursor_client::log_map::batches(batches) {
        let last = precursor_client::log_map::next_offset_after(batch).unwrap_or(u64::MAX);
        if last > high_watermark {
            break;
        }
        end += batch.len();
    }
    end
}

/// What OffsetForLeaderEpoch answers for `requested` on a partition whose current epoch is
/// `current`, whose epochs began at `starts` (increasing epochs at increasing offsets,
/// from the batch headers) and whose log ends at `log_end`: `(epoch, end_offset)`, the
/// end of the requested epoch and the largest epoch at or below it that the log knows
/// (KIP-101, as Kafka's leader epoch cache answers).
///
/// - `requested` < 0: `(-1, -1)`, Kafka's undefined answer.
/// - newer than `current`: UNKNOWN_LEADER_EPOCH (retriable: this broker has not heard
///   of it; Kafka answers `(-1, -1)` here, which librdkafka takes for a truncation and
///   resets the consumer to `auto.offset.reset`).
/// - `current`: `(current, log_end)`.
/// - older: the start of the first epoch after it; if none began in the log, the current
///   epoch has written nothing yet and starts at `log_end`.
pub fn epoch_end_offset(
    requested: i32,
    current: i32,
    starts: &[(i32, u64)],
    log_end: u64,
) -> Result<(i32, i64), ResponseError> {
    use std::cmp::Ordering::{Equal, Greater, Less};
    if requested < 0 {
        return Ok((-1, -1));
    }
    match requested.cmp(&current) {
        Greater => Err(ResponseError::UnknownLeaderEpoch),
        Equal => Ok((current, log_end as i64)),
        Less => {
            let floor = starts
                .iter()
                .rev()
                .find(|(epoch, _)| *epoch <= requested)
                .map_or(requested, |(epoch, _)| *epoch);
            let end = starts
                .iter()
                .find(|(epoch, _)| *epoch > requested)
                .map_or(log_end, |(_, start)| *start);
            Ok((floor, end as i64))
        }
    }
}

/// The leader epoch of the batch holding `offset`, from the epochs' starts (-1: none).
pub fn epoch_at(starts: &[(i32, u64)], offset: u64) -> i32 {
    starts
        .iter()
        .rev()
        .find(|(_, start)| *start <= offset)
        .map_or(-1, |(epoch, _)| *epoch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use precursor_config::BrokerSpec;
    use std::collections::BTreeMap;
    use std::net::Ipv4Addr;

    #[test]
    fn leadership_and_the_serving_checks() {
        let led_by = |leader| PartitionInfo {
            leader,
            leader_epoch: 5,
            replicas: vec![1, 2, 3],
            isr: vec![1, 2, 3],
            high_watermark: 10,
            ..PartitionInfo::default()
        };
        // Not a cluster, or no gauges: alone, no epoch, everything served.
        assert_eq!(Leadership::of(0, &led_by(2)), Leadership::Alone);
        assert_eq!(
            Leadership::of(1, &PartitionInfo::default()),
            Leadership::Alone
        );
        assert_eq!(Leadership::Alone.epoch(), -1);
        assert_eq!(Leadership::Alone.check_serving(9), Ok(()));
        // The leader checks the client's epoch.
        let leader = Leadership::of(1, &led_by(1));
        assert_eq!(leader, Leadership::Leader { epoch: 5 });
        assert_eq!(leader.check_serving(-1), Ok(()));
        assert_eq!(leader.check_serving(5), Ok(()));
        assert_eq!(
            leader.check_serving(4),
            Err(ResponseError::FencedLeaderEpoch)
        );
        assert_eq!(
            leader.check_serving(6),
            Err(ResponseError::UnknownLeaderEpoch)
        );
        // A follower, and a partition without a leader, serve nothing.
        let follower = Leadership::of(1, &led_by(2));
        assert_eq!(
            follower,
            Leadership::Elsewhere {
                leader: Some(2),
                epoch: 5
            }
        );
        assert_eq!(
            follower.check_serving(5),
            Err(ResponseError::NotLeaderOrFollower)
        );
        assert_eq!(
            follower.check_serving(-1),
            Err(ResponseError::NotLeaderOrFollower)
        );
        assert_eq!(
            follower.check_serving(3),
            Err(ResponseError::FencedLeaderEpoch),
            "the epoch is checked first, as Kafka does"
        );
        assert_eq!(
            Leadership::of(1, &led_by(0)),
            Leadership::Elsewhere {
                leader: None,
                epoch: 5
            }
        );
    }

    #[test]
    fn metadata_lists_the_brokers_clients_can_reach() {
        let spec = |id, kafka: &str, rack: &str| BrokerSpec {
            id,
            address: Ipv4Addr::new(10, 0, 0, id as u8),
            udp_port: 9190,
            kafka: kafka.into(),
            admin: String::new(),
            quorum: String::new(),
            rack: rack.into(),
        };
        let cluster = ClusterConfig {
            broker_id: 2,
            brokers: vec![
                spec(3, "b3.example:9092", "zone-c"),
                spec(1, "b1.example:19092", ""),
                spec(2, "", "zone-b"),
                spec(4, "", ""),
            ],
            ..ClusterConfig::default()
        };
        let brokers = kafka_brokers(&cluster, ("127.0.0.1".into(), 9092));
        assert_eq!(
            brokers,
            vec![
                KafkaBroker {
                    id: 1,
                    host: "b1.example".into(),
                    port: 19092,
                    rack: None
                },
                KafkaBroker {
                    id: 2,
                    host: "127.0.0.1".into(),
                    port: 9092,
                    rack: Some("zone-b".into())
                },
                KafkaBroker {
                    id: 3,
                    host: "b3.example".into(),
                    port: 9092,
                    rack: Some("zone-c".into())
                },
            ],
            "broker 4 has no Kafka listener"
        );
    }

    #[test]
    fn every_broker_places_a_group_on_the_same_coordinator_and_names_one_cluster() {
        let spec = |id, kafka: &str| BrokerSpec {
            id,
            address: Ipv4Addr::new(10, 0, 0, id as u8),
            udp_port: 9190,
            kafka: kafka.into(),
            admin: String::new(),
            quorum: String::new(),
            rack: String::new(),
        };
        let brokers = vec![spec(3, "b3:9092"), spec(1, "b1:9092"), spec(2, "b2:9092")];
        let seen_by = |me| ClusterConfig {
            broker_id: me,
            brokers: brokers.clone(),
            ..ClusterConfig::default()
        };
        let mut coordinators = BTreeMap::new();
        for group in (0..60).map(|i| format!("group-{i}")) {
            let answers: Vec<_> = (1..=3)
                .map(|me| group_coordinator(&seen_by(me), &group))
                .collect();
            assert!(
                answers.windows(2).all(|w| w[0] == w[1]),
                "{group}: {answers:?}"
            );
            *coordinators.entry(answers[0].unwrap()).or_insert(0) += 1;
        }
        assert_eq!(coordinators.len(), 3, "groups spread: {coordinators:?}");
        // Brokers without a listener coordinate nothing; outside a cluster: this broker.
        let mut partial = seen_by(1);
        partial.brokers[1].kafka.clear();
        partial.brokers[2].kafka.clear();
        assert_eq!(group_coordinator(&partial, "any"), Some(3));
        assert_eq!(group_coordinator(&ClusterConfig::default(), "any"), None);
        // One cluster id, whoever is asked, whatever the order of the list.
        let mut reordered = seen_by(2);
        reordered.brokers.reverse();
        assert_eq!(cluster_id(&seen_by(1)), cluster_id(&reordered));
        assert_eq!(cluster_id(&seen_by(1)).len(), 22);
        assert_ne!(
            cluster_id(&seen_by(1)),
            cluster_id(&partial_ids(&brokers[..2]))
        );
    }

    fn partial_ids(brokers: &[BrokerSpec]) -> ClusterConfig {
        ClusterConfig {
            broker_id: 1,
            brokers: brokers.to_vec(),
            ..ClusterConfig::default()
        }
    }

    #[test]
    fn reads_stop_at_the_high_watermark_on_batch_boundaries() {
        use precursor_protocol::compression::Compression;
        use precursor_protocol::record_batch::{set_base_offset, RecordBatchBuilder};
        let batch = |base: i64, records: usize| {
            let mut builder = RecordBatchBuilder::new(Compression::None, -1, -1, -1, 1);
            for _ in 0..records {
                builder.append(1, None, b"v", &[]);
            }
            let mut bytes = builder.finish();
            set_base_offset(&mut bytes, base);
            bytes
        };
        let (a, b, c) = (batch(0, 3), batch(3, 2), batch(5, 4));
        let all = [a.clone(), b.clone(), c.clone()].concat();
        assert_eq!(below_high_watermark(&all, 9), all.len());
        assert_eq!(below_high_watermark(&all, 5), a.len() + b.len());
        assert_eq!(
            below_high_watermark(&all, 6),
            a.len() + b.len(),
            "a batch the high watermark cuts is not served"
        );
        assert_eq!(below_high_watermark(&all, 0), 0);
        assert_eq!(HighWatermark::fixed(7).now(), 7);
    }

    #[test]
    fn epoch_end_offsets_as_kafka_answers_them() {
        // Epoch 0 from offset 0, epoch 2 from 40, epoch 5 (current) from 90; log end 120.
        let starts = [(0, 0), (2, 40), (5, 90)];
        let answer = |requested| epoch_end_offset(requested, 5, &starts, 120);
        assert_eq!(
            answer(5),
            Ok((5, 120)),
            "the current epoch ends at the log end"
        );
        assert_eq!(answer(2), Ok((2, 90)));
        assert_eq!(answer(0), Ok((0, 40)));
        assert_eq!(
            answer(1),
            Ok((0, 40)),
            "an epoch that wrote nothing: the largest one below it, up to the next start"
        );
        assert_eq!(answer(4), Ok((2, 90)));
        assert_eq!(answer(6), Err(ResponseError::UnknownLeaderEpoch));
        assert_eq!(answer(-1), Ok((-1, -1)));
        // The current epoch wrote nothing yet: an older epoch ends at the log end.
        assert_eq!(epoch_end_offset(2, 3, &starts[..2], 70), Ok((2, 70)));
        // An epoch older than every one in the log ends where the log's first begins.
        assert_eq!(epoch_end_offset(1, 5, &starts[1..], 120), Ok((1, 40)));
        assert_eq!(epoch_at(&starts, 39), 0);
        assert_eq!(epoch_at(&starts, 40), 2);
        assert_eq!(epoch_at(&starts, 1000), 5);
        assert_eq!(epoch_at(&starts[1..], 3), -1);
    }
}
