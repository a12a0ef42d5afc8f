//! A copy of the data plane's shared `counters` file, taken at once (one pass over the
//! records), and the views the admin API and `/metrics` build from it.
//!
//! The labels carry the structure: `port=0` (port kinds), `lcore=1[,reason=..|,code=..]`
//! (lcore kinds), `topic=orders,partition=3` (partition kinds). Topics exist for the control
//! plane exactly when the data plane publishes counters for their partitions.

use crate::admin::{unpack_broker_ids, LcoreStatus, NodeStatus, PartitionInfo, PortStatus};
use precursor_protocol::counter_kind::{self as kind, MetricType};
use precursor_shm::{CncError, CountersReader};
use std::collections::BTreeMap;
use std::path::Path;

/// One counter: its kind, its parsed labels, its value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sample {
    pub kind: u32,
    pub labels: Vec<(String, String)>,
    pub value: u64,
}

/// One histogram (see `precursor_shm::HistogramSnapshot`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistogramSample {
    pub kind: u32,
    pub labels: Vec<(String, String)>,
    pub bounds_ns: Vec<u64>,
    /// Per bucket, not cumulative.
    pub counts: Vec<u64>,
    pub sum_ns: u64,
    pub count: u64,
}

/// The samples of one counter kind, for one Prometheus family.
pub struct CounterFamily<'a> {
    /// The name without `_total` (the encoder adds it to counters).
    pub name: String,
    pub help: &'static str,
    pub gauge: bool,
    pub samples: Vec<&'a Sample>,
}

/// The histograms of one kind.
pub struct HistogramFamily<'a> {
    pub name: String,
    pub help: &'static str,
    pub histograms: Vec<&'a HistogramSample>,
}

/// Everything in the counters file at one moment.
#[derive(Clone, Debug, Default)]
pub struct CountersSnapshot {
    pub samples: Vec<Sample>,
    pub histograms: Vec<HistogramSample>,
    /// Topic name -> partitions in partition order.
    topics: BTreeMap<String, Vec<PartitionInfo>>,
}

/// Parses a counter label `k=v,k=v` (pieces without `=` are skipped).
pub fn parse_labels(label: &str) -> Vec<(String, String)> {
    label
        .split(',')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .filter(|(k, _)| !k.is_empty())
        .collect()
}

fn label<'a>(labels: &'a [(String, String)], key: &str) -> Option<&'a str> {
    labels
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

impl CountersSnapshot {
    /// Reads `<cnc_dir>/counters`.
    pub fn read(cnc_dir: &Path) -> Result<CountersSnapshot, CncError> {
        let reader = CountersReader::open(cnc_dir)?;
        let mut snapshot = CountersSnapshot::default();
        reader.for_each(|counter| {
            snapshot.samples.push(Sample {
                kind: counter.kind,
                labels: parse_labels(counter.label),
                value: counter.value,
            })
        });
        reader.histograms(|histogram| {
            snapshot.histograms.push(HistogramSample {
                kind: histogram.kind,
                labels: parse_labels(histogram.label),
                bounds_ns: histogram.bounds_ns.to_vec(),
                counts: histogram.counts.to_vec(),
                sum_ns: histogram.sum_ns,
                count: histogram.count,
            })
        });
        snapshot.index_topics();
        Ok(snapshot)
    }

    /// Builds a snapshot from samples (tests, and anything that already has them).
    pub fn from_samples(samples: Vec<Sample>, histograms: Vec<HistogramSample>) -> Self {
        let mut snapshot = CountersSnapshot {
            samples,
            histograms,
            topics: BTreeMap::new(),
        };
        snapshot.index_topics();
        snapshot
    }

    fn index_topics(&mut self) {
        let mut topics: BTreeMap<String, BTreeMap<u32, PartitionInfo>> = BTreeMap::new();
        for sample in &self.samples {
            if !(kind::PARTITION_MESSAGES..=kind::PARTITION_ISR_PROPOSED).contains(&sample.kind) {
                continue;
            }
            let (Some(topic), Some(partition)) = (
                label(&sample.labels, "topic"),
                label(&sample.labels, "partition").and_then(|p| p.parse::<u32>().ok()),
            ) else {
                continue;
            };
            let info = topics
                .entry(topic.to_string())
                .or_default()
                .entry(partition)
                .or_insert_with(|| PartitionInfo {
                    partition,
                    ..PartitionInfo::default()
                });
            match sample.kind {
                kind::PARTITION_BYTES => info.bytes = sample.value,
                kind::PARTITION_START_OFFSET => info.start_offset = sample.value,
                kind::PARTITION_END_OFFSET => info.end_offset = sample.value,
                kind::PARTITION_DURABLE_OFFSET => info.durable_offset = sample.value,
                kind::PARTITION_SEGMENTS => info.segments = sample.value,
                kind::PARTITION_HIGH_WATERMARK => info.high_watermark = sample.value,
                kind::PARTITION_LEADER => info.leader = broker_id(sample.value),
                kind::PARTITION_LEADER_EPOCH => info.leader_epoch = sample.value,
                kind::PARTITION_REPLICAS => info.replicas = unpack_broker_ids(sample.value),
                kind::PARTITION_ISR => info.isr = unpack_broker_ids(sample.value),
                kind::PARTITION_ISR_PROPOSED => info.isr_proposed = unpack_broker_ids(sample.value),
                kind::PARTITION_ISR_SHRINKS => info.isr_shrinks = sample.value,
                kind::PARTITION_ISR_EXPANDS => info.isr_expands = sample.value,
                kind::PARTITION_MIN_INSYNC => info.min_insync = broker_id(sample.value),
                kind::PARTITION_TRUNCATED_BYTES => info.truncated_bytes = sample.value,
                _ => {}
            }
        }
        self.topics = topics
            .into_iter()
            .map(|(name, partitions)| (name, partitions.into_values().collect()))
            .collect();
    }

    /// Every topic and its partitions, by name.
    pub fn topics(&self) -> &BTreeMap<String, Vec<PartitionInfo>> {
        &self.topics
    }

    pub fn topic(&self, name: &str) -> Option<&[PartitionInfo]> {
        self.topics.get(name).map(Vec::as_slice)
    }

    pub fn topic_names(&self) -> Vec<String> {
        self.topics.keys().cloned().collect()
    }

    /// Ports, lcores, partitions and disk use for `precursor status`.
    pub fn fill_status(&self, status: &mut NodeStatus) {
        let mut ports: BTreeMap<String, PortStatus> = BTreeMap::new();
        let mut lcores: BTreeMap<String, LcoreStatus> = BTreeMap::new();
        for sample in &self.samples {
            if let Some(port) = label(&sample.labels, "port") {
                let entry = ports.entry(port.to_string()).or_insert_with(|| PortStatus {
                    port: port.to_string(),
                    ..PortStatus::default()
                });
                if let Some(name) = label(&sample.labels, "name") {
                    entry.name = Some(name.to_string());
                }
                let value = sample.value;
                match sample.kind {
                    kind::PORT_RX_PACKETS => entry.rx_packets = value,
                    kind::PORT_TX_PACKETS => entry.tx_packets = value,
                    kind::PORT_RX_BYTES => entry.rx_bytes = value,
                    kind::PORT_TX_BYTES => entry.tx_bytes = value,
                    kind::PORT_RX_MISSED => entry.rx_missed = value,
                    kind::PORT_RX_ERRORS => entry.rx_errors = value,
                    kind::PORT_TX_ERRORS => entry.tx_errors = value,
                    kind::PORT_LINK_UP => entry.link_up = value != 0,
                    kind::PORT_LINK_SPEED_MBPS => entry.speed_mbps = value,
                    _ => {}
                }
            } else if let Some(lcore) = label(&sample.labels, "lcore") {
                let entry = lcores
                    .entry(lcore.to_string())
                    .or_insert_with(|| LcoreStatus {
                        lcore: lcore.to_string(),
                        ..LcoreStatus::default()
                    });
                // `precursor_bad_frames_total{reason="short"}` and the like.
                let extra: Vec<String> = sample
                    .labels
                    .iter()
                    .filter(|(k, _)| k != "lcore")
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                let mut name = kind::metric_name(sample.kind).to_string();
                if !extra.is_empty() {
                    name = format!("{name}{{{}}}", extra.join(","));
                }
                *entry.counters.entry(name).or_default() += sample.value;
            }
        }
        status.ports = ports.into_values().collect();
        status.lcores = lcores.into_values().collect();
        status.topics = self.topics.len() as u32;
        status.partitions = self.topics.values().map(|p| p.len() as u32).sum();
        status.disk_bytes = self.topics.values().flatten().map(|p| p.bytes).sum();
    }

    /// Counter and gauge samples grouped by kind, in kind order. Kinds this build does not
    /// know are left out (their names would collide).
    pub fn counter_families(&self) -> Vec<CounterFamily<'_>> {
        let mut by_kind: BTreeMap<u32, Vec<&Sample>> = BTreeMap::new();
        for sample in &self.samples {
            by_kind.entry(sample.kind).or_default().push(sample);
        }
        by_kind
            .into_iter()
            .filter(|(k, _)| known(*k))
            .filter_map(|(k, samples)| {
                let gauge = match kind::metric_type(k) {
                    MetricType::Counter => false,
                    MetricType::Gauge => true,
                    MetricType::Histogram => return None,
                };
                let name = kind::metric_name(k);
                Some(CounterFamily {
                    name: name.strip_suffix("_total").unwrap_or(name).to_string(),
                    help: kind::help(k),
                    gauge,
                    samples,
                })
            })
            .collect()
    }

    /// Histograms grouped by kind, in kind order.
    pub fn histogram_families(&self) -> Vec<HistogramFamily<'_>> {
        let mut by_kind: BTreeMap<u32, Vec<&HistogramSample>> = BTreeMap::new();
        for histogram in &self.histograms {
            by_kind.entry(histogram.kind).or_default().push(histogram);
        }
        by_kind
            .into_iter()
            .filter(|(k, _)| known(*k) && kind::metric_type(*k) == MetricType::Histogram)
            .map(|(k, histograms)| HistogramFamily {
                name: kind::metric_name(k).to_string(),
                help: kind::help(k),
                histograms,
            })
            .collect()
    }
}

/// A gauge holding a small number (a broker id, a count of replicas) as a u32.
fn broker_id(value: u64) -> u32 {
    u32::try_from(value).unwrap_or(u32::MAX)
}

fn known(k: u32) -> bool {
    kind::metric_name(k) != kind::metric_name(kind::UNKNOWN)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(kind: u32, label: &str, value: u64) -> Sample {
        Sample {
            kind,
            labels: parse_labels(label),
            value,
        }
    }

    #[test]
    fn replication_gauges_fill_the_partition() {
        let label = "topic=orders,partition=0";
        let snapshot = CountersSnapshot::from_samples(
            vec![
                sample(kind::PARTITION_END_OFFSET, label, 12),
                sample(kind::PARTITION_HIGH_WATERMARK, label, 10),
                sample(kind::PARTITION_LEADER, label, 2),
                sample(kind::PARTITION_LEADER_EPOCH, label, 3),
                sample(kind::PARTITION_REPLICAS, label, 0x01_03_02),
                sample(kind::PARTITION_ISR, label, 0x03_02),
                sample(kind::PARTITION_ISR_SHRINKS, label, 4),
                sample(kind::PARTITION_ISR_EXPANDS, label, 3),
                sample(kind::PARTITION_MIN_INSYNC, label, 2),
                sample(kind::PARTITION_TRUNCATED_BYTES, label, 77),
            ],
            vec![],
        );
        let p = &snapshot.topic("orders").unwrap()[0];
        assert!(p.replicated());
        assert_eq!((p.end_offset, p.high_watermark), (12, 10));
        assert_eq!((p.leader, p.leader_epoch, p.min_insync), (2, 3, 2));
        assert_eq!(
            (p.replicas.clone(), p.isr.clone()),
            (vec![2, 3, 1], vec![2, 3])
        );
        assert_eq!(
            (p.isr_shrinks, p.isr_expands, p.truncated_bytes),
            (4, 3, 77)
        );
    }

    #[test]
    fn labels_parse() {
        assert_eq!(
            parse_labels("topic=orders,partition=3"),
            vec![
                ("topic".to_string(), "orders".to_string()),
                ("partition".to_string(), "3".to_string())
            ]
        );
        assert_eq!(parse_labels(""), vec![]);
        assert_eq!(
            parse_labels("junk,port=0"),
            vec![("port".into(), "0".into())]
        );
    }

    #[test]
    fn topics_and_status_from_labels() {
        let snapshot = CountersSnapshot::from_samples(
            vec![
                sample(kind::PARTITION_END_OFFSET, "topic=orders,partition=1", 7),
                sample(kind::PARTITION_END_OFFSET, "topic=orders,partition=0", 5),
                sample(kind::PARTITION_BYTES, "topic=orders,partition=0", 100),
                sample(kind::PARTITION_BYTES, "topic=audit,partition=0", 30),
                sample(kind::PORT_RX_PACKETS, "port=0", 9),
                sample(kind::PORT_LINK_UP, "port=0", 1),
                sample(kind::BAD_FRAMES, "lcore=1,reason=short", 2),
                sample(kind::PRODUCE_REQUESTS, "lcore=1", 4),
            ],
            vec![],
        );
        assert_eq!(snapshot.topic_names(), vec!["audit", "orders"]);
        assert!(!snapshot.topic("audit").unwrap()[0].replicated());
        let orders = snapshot.topic("orders").unwrap();
        assert_eq!(orders.len(), 2);
        assert_eq!(
            (orders[0].partition, orders[0].end_offset, orders[0].bytes),
            (0, 5, 100)
        );
        assert_eq!((orders[1].partition, orders[1].end_offset), (1, 7));
        let mut status = NodeStatus::default();
        snapshot.fill_status(&mut status);
        assert_eq!(
            (status.topics, status.partitions, status.disk_bytes),
            (2, 3, 130)
        );
        assert_eq!(status.ports.len(), 1);
        assert!(status.ports[0].link_up);
        assert_eq!(status.ports[0].rx_packets, 9);
        assert_eq!(status.lcores[0].lcore, "1");
        assert_eq!(
            status.lcores[0].counters["precursor_bad_frames_total{reason=short}"],
            2
        );
    }
}
