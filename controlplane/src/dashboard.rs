//! The web dashboard on the metrics listener: `/` (HTML), `/dashboard.js`,
//! `/dashboard.css` (embedded with `include_str!`, no build step) and `/events`, a
//! server-sent event stream of one [`Snapshot`] every [`DASHBOARD_UPDATE_INTERVAL_MS`].
//!
//! ```text
//!  browser                         control plane (metrics listener, hyper)
//!    GET /  ───────────────────>   index.html, dashboard.js, dashboard.css
//!    EventSource /events ──────>   per stream: a Sampler keeps the previous reading
//!       <── event: snapshot        every interval: counters file + gateway + groups
//!           data: {json}               -> rates (deltas / seconds), interval percentiles
//!                                      (bucket deltas of the data plane's histograms)
//!    the page keeps the last CHART_POINTS of each series and draws them as SVG
//! ```
//!
//! Read-only: no request changes anything. Rates and percentiles are computed here, over
//! the interval between two readings, so the page needs no Prometheus; the same numbers
//! are on /metrics as counters (the rates there are PromQL's `rate()`).

use crate::admin::{GroupDescription, PartitionInfo};
use crate::counters::{CountersSnapshot, HistogramSample, Sample};
use crate::host::{FilesystemUse, Hugepages};
use crate::Node;
use precursor_protocol::counter_kind as kind;
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// How often `/events` sends a snapshot, in milliseconds.
pub const DASHBOARD_UPDATE_INTERVAL_MS: u64 = 1_000;
/// Event streams open at once, at most; one more is answered 503.
pub const DASHBOARD_EVENT_STREAMS_MAX: usize = 32;

pub const INDEX_HTML: &str = include_str!("dashboard/index.html");
pub const DASHBOARD_JS: &str = include_str!("dashboard/dashboard.js");
pub const DASHBOARD_CSS: &str = include_str!("dashboard/dashboard.css");

/// One update of the page.
#[derive(Clone, Debug, Serialize)]
pub struct Snapshot {
    /// Wall clock, ms since the UNIX epoch.
    pub time_ms: u64,
    /// Seconds since the previous snapshot of this stream; None for the first (no rates).
    pub interval_s: Option<f64>,
    pub dataplane: DataplaneView,
    pub topics: Vec<TopicView>,
    pub partitions: Vec<PartitionView>,
    pub transports: Vec<TransportView>,
    /// Produce -> durable ack, over the interval.
    pub durable_ack_latency: Percentiles,
    /// One fdatasync of the flusher, over the interval.
    pub fdatasync_latency: Percentiles,
    pub health: HealthView,
    pub groups: Vec<GroupDescription>,
    pub cluster: ClusterView,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct DataplaneView {
    pub up: bool,
    pub pid: Option<u32>,
    /// Why it is not up ("" when it is).
    pub problem: String,
    pub restarts: u64,
    pub controlplane_uptime_s: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct TopicView {
    pub name: String,
    pub partitions: u32,
    /// Sum over partitions of end - start offset.
    pub messages: u64,
    /// Sum over partitions of the end offset (messages ever appended).
    pub end_offset_sum: u64,
    pub bytes: u64,
    pub messages_per_s: Option<f64>,
    pub bytes_per_s: Option<f64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct PartitionView {
    pub topic: String,
    #[serde(flatten)]
    pub info: PartitionInfo,
}

/// Traffic of one way in or out of the broker, as far as it is counted.
#[derive(Clone, Debug, Serialize)]
pub struct TransportView {
    pub name: String,
    /// What `requests_per_s` counts (packets, requests, records).
    pub unit: &'static str,
    pub requests_per_s: Option<f64>,
    pub in_bytes_per_s: Option<f64>,
    pub out_bytes_per_s: Option<f64>,
}

/// Latency percentiles in microseconds (None: nothing measured in the interval).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Percentiles {
    pub count: u64,
    pub p50_us: Option<f64>,
    pub p99_us: Option<f64>,
    pub p999_us: Option<f64>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct HealthView {
    pub loop_iterations_per_s: Option<f64>,
    /// Loop iterations that did work / all iterations, over the interval (0..=1).
    pub lcore_busy_fraction: Option<f64>,
    /// Dropped packets and bad frames by reason: total and per second.
    pub drops: Vec<DropView>,
    pub error_replies: u64,
    pub pending_durable_acks: u64,
    pub command_ring_depth: u64,
    pub log_bytes: u64,
    pub filesystems: Vec<FilesystemUse>,
    pub hugepages: Hugepages,
}

#[derive(Clone, Debug, Serialize)]
pub struct DropView {
    /// `dropped` (not for the native protocol) or `bad_frame`.
    pub kind: &'static str,
    pub reason: String,
    pub total: u64,
    pub per_s: Option<f64>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct ClusterView {
    /// 0 outside a cluster.
    pub broker_id: u32,
    pub brokers: Vec<BrokerView>,
    /// Partitions whose ISR is smaller than their replicas (this broker's view).
    pub under_replicated: u32,
}

#[derive(Clone, Debug, Serialize)]
pub struct BrokerView {
    pub id: u32,
    pub address: String,
    pub kafka: String,
    /// Partitions this broker's view names it leader of.
    pub leads: u32,
}

/// What a reading keeps for the next interval's deltas.
struct Reading {
    at: Instant,
    counters: CountersSnapshot,
    gateway_requests: BTreeMap<&'static str, u64>,
}

/// Makes the snapshots of one event stream (it keeps the previous reading).
#[derive(Default)]
pub struct Sampler {
    previous: Option<Reading>,
}

/// Kafka APIs whose request rate the transports table shows.
const GATEWAY_APIS: [&str; 2] = ["Produce", "Fetch"];

impl Sampler {
    pub fn snapshot(&mut self, node: &Node) -> Snapshot {
        let now = Instant::now();
        let state = node.link.state();
        let counters = if state.is_alive() {
            CountersSnapshot::read(&node.cnc_dir).unwrap_or_default()
        } else {
            CountersSnapshot::default()
        };
        let gateway_requests: BTreeMap<&'static str, u64> = GATEWAY_APIS
            .iter()
            .map(|api| (*api, node.metrics.gateway.requests_of(api)))
            .collect();
        let groups = node
            .gateway()
            .map(|g| crate::gateway::lag::describe_all(&g, Some(&counters)))
            .unwrap_or_default();
        let previous = self.previous.as_ref();
        let interval_s = previous
            .map(|p| now.duration_since(p.at).as_secs_f64())
            .filter(|s| *s > 0.0);
        let rate = |now_value: u64, before: Option<u64>| -> Option<f64> {
            Some(now_value.saturating_sub(before?) as f64 / interval_s?)
        };
        let before = |k: u32| previous.map(|p| sum_kind(&p.counters, k));
        let per_s = |k: u32| rate(sum_kind(&counters, k), before(k));

        let topics = counters
            .topics()
            .iter()
            .map(|(name, partitions)| {
                let (end, bytes) = topic_sums(partitions);
                let earlier = previous
                    .and_then(|p| p.counters.topic(name))
                    .map(topic_sums);
                TopicView {
                    name: name.clone(),
                    partitions: partitions.len() as u32,
                    messages: partitions
                        .iter()
                        .map(|p| p.end_offset.saturating_sub(p.start_offset))
                        .sum(),
                    end_offset_sum: end,
                    bytes,
                    messages_per_s: rate(end, earlier.map(|e| e.0)),
                    bytes_per_s: rate(bytes, earlier.map(|e| e.1)),
                }
            })
            .collect();
        let partitions = counters
            .topics()
            .iter()
            .flat_map(|(name, list)| {
                list.iter().map(move |info| PartitionView {
                    topic: name.clone(),
                    info: info.clone(),
                })
            })
            .collect::<Vec<_>>();

        let mut transports = Vec::new();
        let mut ports: BTreeMap<String, (u64, u64, u64)> = BTreeMap::new();
        let mut ports_before: BTreeMap<String, (u64, u64, u64)> = BTreeMap::new();
        for (snapshot, into) in [
            (Some(&counters), &mut ports),
            (previous.map(|p| &p.counters), &mut ports_before),
        ] {
            let Some(snapshot) = snapshot else { continue };
            for sample in &snapshot.samples {
                let Some(port) = label(sample, "port") else {
                    continue;
                };
                let name = label(sample, "name").unwrap_or(port).to_string();
                let entry = into.entry(name).or_default();
                match sample.kind {
                    kind::PORT_RX_PACKETS => entry.0 += sample.value,
                    kind::PORT_RX_BYTES => entry.1 += sample.value,
                    kind::PORT_TX_BYTES => entry.2 += sample.value,
                    _ => {}
                }
            }
        }
        for (name, (packets, rx, tx)) in &ports {
            let earlier = ports_before.get(name);
            transports.push(TransportView {
                name: format!("DPDK port {name}"),
                unit: "packets",
                requests_per_s: rate(*packets, earlier.map(|e| e.0)),
                in_bytes_per_s: rate(*rx, earlier.map(|e| e.1)),
                out_bytes_per_s: rate(*tx, earlier.map(|e| e.2)),
            });
        }
        transports.push(TransportView {
            name: "native produce (UDP, IPC, RDMA)".into(),
            unit: "records",
            requests_per_s: per_s(kind::PRODUCE_RECORDS),
            in_bytes_per_s: per_s(kind::PRODUCE_BYTES),
            out_bytes_per_s: None,
        });
        transports.push(TransportView {
            name: "native fetch".into(),
            unit: "requests",
            requests_per_s: per_s(kind::FETCH_REQUESTS),
            in_bytes_per_s: None,
            out_bytes_per_s: per_s(kind::FETCH_BYTES),
        });
        transports.push(TransportView {
            name: "IPC (shared memory)".into(),
            unit: "requests",
            requests_per_s: per_s(kind::IPC_REQUESTS),
            in_bytes_per_s: None,
            out_bytes_per_s: None,
        });
        for api in GATEWAY_APIS {
            transports.push(TransportView {
                name: format!("Kafka gateway {api}"),
                unit: "requests",
                requests_per_s: rate(
                    gateway_requests[api],
                    previous.map(|p| p.gateway_requests.get(api).copied().unwrap_or(0)),
                ),
                in_bytes_per_s: None,
                out_bytes_per_s: None,
            });
        }
        transports.push(TransportView {
            name: "replication".into(),
            unit: "batches",
            requests_per_s: per_s(kind::REPLICA_BATCHES),
            in_bytes_per_s: per_s(kind::REPLICA_BYTES_RECEIVED),
            out_bytes_per_s: per_s(kind::REPLICA_BYTES_SENT),
        });

        let loops = per_s(kind::LCORE_LOOP_ITERATIONS);
        let busy = per_s(kind::LCORE_BUSY_ITERATIONS);
        let mut drops = Vec::new();
        for (k, kind_name) in [
            (kind::DROPPED_PACKETS, "dropped"),
            (kind::BAD_FRAMES, "bad_frame"),
        ] {
            let mut by_reason: BTreeMap<String, (u64, Option<u64>)> = BTreeMap::new();
            for sample in counters.samples.iter().filter(|s| s.kind == k) {
                let reason = label(sample, "reason").unwrap_or("?").to_string();
                by_reason.entry(reason).or_default().0 += sample.value;
            }
            if let Some(p) = previous {
                for sample in p.counters.samples.iter().filter(|s| s.kind == k) {
                    let reason = label(sample, "reason").unwrap_or("?").to_string();
                    if let Some(entry) = by_reason.get_mut(&reason) {
                        *entry.1.get_or_insert(0) += sample.value;
                    }
                }
            }
            for (reason, (total, earlier)) in by_reason {
                drops.push(DropView {
                    kind: kind_name,
                    reason,
                    total,
                    per_s: rate(total, earlier),
                });
            }
        }
        let health = HealthView {
            loop_iterations_per_s: loops,
            lcore_busy_fraction: match (busy, loops) {
                (Some(busy), Some(loops)) if loops > 0.0 => Some((busy / loops).clamp(0.0, 1.0)),
                _ => None,
            },
            drops,
            error_replies: sum_kind(&counters, kind::ERROR_REPLIES),
            pending_durable_acks: sum_kind(&counters, kind::PENDING_DURABLE_ACKS),
            command_ring_depth: sum_kind(&counters, kind::COMMAND_RING_DEPTH),
            log_bytes: counters.topics().values().flatten().map(|p| p.bytes).sum(),
            filesystems: crate::host::filesystems(&node.config),
            hugepages: crate::host::hugepages(),
        };
        let histogram = |k: u32| {
            let now = merged_histogram(&counters, k);
            let before = previous.and_then(|p| merged_histogram(&p.counters, k));
            now.map(|h| interval_percentiles(&h, before.as_ref()))
                .unwrap_or_default()
        };
        let durable_ack_latency = histogram(kind::DURABLE_ACK_WAIT);
        let fdatasync_latency = histogram(kind::FLUSHER_FDATASYNC);

        let cluster_config = &node.config.cluster;
        let cluster = ClusterView {
            broker_id: cluster_config.broker_id,
            brokers: cluster_config
                .brokers
                .iter()
                .map(|b| BrokerView {
                    id: b.id,
                    address: format!("{}:{}", b.address, b.udp_port),
                    kafka: b.kafka.clone(),
                    leads: partitions.iter().filter(|p| p.info.leader == b.id).count() as u32,
                })
                .collect(),
            under_replicated: partitions
                .iter()
                .filter(|p| p.info.replicated() && p.info.isr.len() < p.info.replicas.len())
                .count() as u32,
        };
        let snapshot = Snapshot {
            time_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            interval_s,
            dataplane: DataplaneView {
                up: state.is_alive(),
                pid: state.writer_pid(),
                problem: if state.is_alive() {
                    String::new()
                } else {
                    state.problem()
                },
                restarts: node.metrics.restarts(),
                controlplane_uptime_s: node.started.elapsed().as_secs(),
            },
            topics,
            partitions,
            transports,
            durable_ack_latency,
            fdatasync_latency,
            health,
            groups,
            cluster,
        };
        self.previous = Some(Reading {
            at: now,
            counters,
            gateway_requests,
        });
        snapshot
    }
}

fn label<'a>(sample: &'a Sample, key: &str) -> Option<&'a str> {
    sample
        .labels
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

fn sum_kind(counters: &CountersSnapshot, k: u32) -> u64 {
    counters
        .samples
        .iter()
        .filter(|s| s.kind == k)
        .fold(0u64, |sum, s| sum.saturating_add(s.value))
}

/// (sum of end offsets, sum of bytes) of a topic's partitions.
fn topic_sums(partitions: &[PartitionInfo]) -> (u64, u64) {
    partitions.iter().fold((0, 0), |(end, bytes), p| {
        (end + p.end_offset, bytes + p.bytes)
    })
}

/// The histograms of one kind added up (every lcore's, or the flusher's), None if none.
fn merged_histogram(counters: &CountersSnapshot, k: u32) -> Option<HistogramSample> {
    let mut merged: Option<HistogramSample> = None;
    for histogram in counters.histograms.iter().filter(|h| h.kind == k) {
        match &mut merged {
            None => merged = Some(histogram.clone()),
            Some(sum) if sum.bounds_ns == histogram.bounds_ns => {
                for (total, count) in sum.counts.iter_mut().zip(&histogram.counts) {
                    *total = total.saturating_add(*count);
                }
                sum.count = sum.count.saturating_add(histogram.count);
                sum.sum_ns = sum.sum_ns.saturating_add(histogram.sum_ns);
            }
            Some(_) => {} // another layout: not comparable, left out
        }
    }
    merged
}

/// Percentiles of what `now` counted since `before` (all of it without `before`, or when
/// the counts went down: the data plane restarted), interpolated linearly inside a bucket
/// as Prometheus' `histogram_quantile` does.
pub fn interval_percentiles(
    now: &HistogramSample,
    before: Option<&HistogramSample>,
) -> Percentiles {
    let restarted = before.is_some_and(|b| {
        b.bounds_ns != now.bounds_ns || b.counts.iter().zip(&now.counts).any(|(b, n)| b > n)
    });
    let counts: Vec<u64> = match before {
        Some(b) if !restarted => now
            .counts
            .iter()
            .zip(&b.counts)
            .map(|(n, b)| n - b)
            .collect(),
        _ => now.counts.clone(),
    };
    let total: u64 = counts.iter().sum();
    let quantile = |q: f64| -> Option<f64> {
        if total == 0 {
            return None;
        }
        let rank = q * total as f64;
        let mut seen = 0u64;
        let mut lower_ns = 0u64;
        for (bound_ns, count) in now.bounds_ns.iter().zip(&counts) {
            let upper_ns = if *bound_ns == u64::MAX {
                lower_ns.saturating_mul(2).max(1)
            } else {
                *bound_ns
            };
            if *count > 0 && (seen + count) as f64 >= rank {
                let inside = (rank - seen as f64) / *count as f64;
                let ns = lower_ns as f64 + (upper_ns - lower_ns) as f64 * inside;
                return Some(ns / 1e3);
            }
            seen += count;
            lower_ns = upper_ns;
        }
        Some(lower_ns as f64 / 1e3)
    };
    Percentiles {
        count: total,
        p50_us: quantile(0.5),
        p99_us: quantile(0.99),
        p999_us: quantile(0.999),
    }
}

/// The `/events` body: an SSE `snapshot` event now and every interval, until the
/// client goes away (hyper then drops the stream).
pub fn event_stream(
    node: std::sync::Arc<Node>,
) -> impl futures_util::Stream<Item = Result<hyper::body::Bytes, std::convert::Infallible>> {
    let state = (node, Sampler::default(), true);
    futures_util::stream::unfold(state, |(node, mut sampler, first)| async move {
        if !first {
            tokio::time::sleep(Duration::from_millis(DASHBOARD_UPDATE_INTERVAL_MS)).await;
        }
        let snapshot = sampler.snapshot(&node);
        let json = serde_json::to_string(&snapshot).expect("snapshots serialize");
        let event = format!("event: snapshot\ndata: {json}\n\n");
        Some((Ok(hyper::body::Bytes::from(event)), (node, sampler, false)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn histogram(counts: &[u64]) -> HistogramSample {
        HistogramSample {
            kind: kind::DURABLE_ACK_WAIT,
            labels: vec![],
            bounds_ns: vec![1_000, 2_000, 4_000, 8_000, u64::MAX],
            counts: counts.to_vec(),
            sum_ns: 0,
            count: counts.iter().sum(),
        }
    }

    #[test]
    fn percentiles_cover_the_interval_only() {
        let before = histogram(&[100, 0, 0, 0, 0]);
        // 100 more in (2, 4] us, one in (4, 8] us during the interval.
        let now = histogram(&[100, 0, 100, 1, 0]);
        let p = interval_percentiles(&now, Some(&before));
        assert_eq!(p.count, 101);
        // Rank 50.5 of 101: halfway into the (2, 4] bucket.
        assert!((p.p50_us.unwrap() - 3.01).abs() < 0.01, "{p:?}");
        assert!(p.p99_us.unwrap() > 3.9 && p.p99_us.unwrap() <= 4.0, "{p:?}");
        assert!(
            p.p999_us.unwrap() > 4.0 && p.p999_us.unwrap() <= 8.0,
            "{p:?}"
        );
        // Nothing new: no percentiles. Counts that went down: a restart, all of it counts.
        assert_eq!(interval_percentiles(&now, Some(&now)).p50_us, None);
        let restarted = interval_percentiles(&before, Some(&now));
        assert_eq!(restarted.count, 100);
        assert!(restarted.p50_us.unwrap() <= 1.0);
    }

    #[test]
    fn the_open_bucket_is_read_as_twice_the_last_bound() {
        let p = interval_percentiles(&histogram(&[0, 0, 0, 0, 10]), None);
        assert!(
            p.p50_us.unwrap() > 8.0 && p.p50_us.unwrap() <= 16.0,
            "{p:?}"
        );
    }

    #[test]
    fn the_page_links_its_script_and_style() {
        assert!(INDEX_HTML.contains("dashboard.js") && INDEX_HTML.contains("dashboard.css"));
        assert!(DASHBOARD_JS.contains("EventSource(\"/events\")"));
    }
}
