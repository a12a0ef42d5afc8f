//! `/metrics` and `/healthz` over HTTP (`controlplane.metrics_listen`).
//!
//! `/metrics` is the Prometheus text format, built at scrape time by `prometheus-client`:
//! the data plane's shared counters and histograms (one family per counter kind, labels
//! parsed from the counter's `k=v,k=v` label, histogram buckets converted from ns to
//! seconds) and the control plane's own metrics (data plane restarts and up gauge,
//! command-ring depth, admin requests by type and outcome).
//!
//! HTTP stack: hyper 1 with hyper-util's tokio glue, HTTP/1.1 only. Two fixed paths need
//! no router, so axum would add tower and its layers for nothing; hyper is what axum
//! runs on anyway, maintained by the same people, and it keeps the dependency tree and
//! build time small on the 2-core machines this builds on.

use crate::counters::CountersSnapshot;
use crate::link::LinkState;
use crate::ControlplaneError;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// The body is what prometheus-client encodes: OpenMetrics text (`# EOF`, `_total` samples),
/// so it is served as such; Prometheus negotiates it.
pub const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// An HTTP connection that sends no complete request for this long is closed, in ms.
pub const HTTP_HEADER_TIMEOUT_MS: u64 = 10_000;

type AdminLabels = Vec<(&'static str, String)>;

/// The control plane's own metrics, plus the registry that also reads the shared counters.
pub struct ControlplaneMetrics {
    registry: Registry,
    /// The Kafka gateway's counters (`precursor_gateway_*`).
    pub gateway: Arc<crate::gateway::GatewayMetrics>,
    restarts: Counter,
    admin_requests: Family<AdminLabels, Counter>,
}

impl ControlplaneMetrics {
    pub fn new(
        link: Arc<LinkState>,
        cnc_dir: PathBuf,
        gateway_slot: crate::GatewaySlot,
        config: &precursor_config::Config,
    ) -> ControlplaneMetrics {
        let mut registry = Registry::default();
        let restarts = Counter::default();
        let admin_requests = Family::<AdminLabels, Counter>::default();
        // Registry::register ends each HELP with a period of its own.
        registry.register(
            "precursor_controlplane_dataplane_restarts",
            "Data plane restarts by the supervisor (precursor up) since the control plane started",
            restarts.clone(),
        );
        registry.register(
            "precursor_controlplane_admin_requests",
            "Admin socket requests, by type and outcome (ok or the error code)",
            admin_requests.clone(),
        );
        let gateway = Arc::new(crate::gateway::GatewayMetrics::register(&mut registry));
        registry.register_collector(Box::new(LinkCollector { link }));
        registry.register_collector(Box::new(SharedCounters {
            cnc_dir: cnc_dir.clone(),
        }));
        registry.register_collector(Box::new(HostCollector {
            config: config.clone(),
        }));
        registry.register_collector(Box::new(GroupLag {
            gateway: gateway_slot,
            cnc_dir,
        }));
        ControlplaneMetrics {
            registry,
            gateway,
            restarts,
            admin_requests,
        }
    }

    pub fn count_restart(&self) {
        self.restarts.inc();
    }

    pub fn restarts(&self) -> u64 {
        self.restarts.get()
    }

    pub fn admin_request(&self, kind: &str, outcome: &str) {
        self.admin_requests
            .get_or_create(&vec![
                ("type", kind.to_string()),
                ("outcome", outcome.to_string()),
            ])
            .inc();
    }

    /// The whole scrape, in the Prometheus text format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String does not fail");
        text
    }
}

/// Whether a data plane is attached and alive, and the command ring's depth.
#[derive(Debug)]
struct LinkCollector {
    link: Arc<LinkState>,
}

impl Collector for LinkCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let up = ConstGauge::new(i64::from(self.link.is_alive()));
        up.encode(encoder.encode_descriptor(
            "precursor_controlplane_dataplane_up",
            "1 when a data plane is attached and its heartbeat is fresh, else 0.",
            None,
            up.metric_type(),
        )?)?;
        let depth = ConstGauge::new(i64::from(
            self.link
                .command_ring_depth
                .load(std::sync::atomic::Ordering::Acquire),
        ));
        depth.encode(encoder.encode_descriptor(
            "precursor_controlplane_command_ring_depth",
            "Commands in the command ring not yet taken by the data plane, as the control plane sees it.",
            None,
            depth.metric_type(),
        )?)?;
        Ok(())
    }
}

/// The data plane's shared counters file, read at each scrape.
#[derive(Debug)]
struct SharedCounters {
    cnc_dir: PathBuf,
}

impl Collector for SharedCounters {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        // No data plane (yet): the scrape has the control plane's metrics only, and
        // precursor_controlplane_dataplane_up says why.
        let Ok(counters) = CountersSnapshot::read(&self.cnc_dir) else {
            return Ok(());
        };
        for family in counters.counter_families() {
            let metric_type = if family.gauge {
                MetricType::Gauge
            } else {
                MetricType::Counter
            };
            let mut metric =
                encoder.encode_descriptor(&family.name, family.help, None, metric_type)?;
            for sample in &family.samples {
                let labels = &sample.labels;
                let mut one = metric.encode_family(labels)?;
                if family.gauge {
                    // Offsets and byte counts fit i64 for any real log.
                    one.encode_gauge(&(sample.value.min(i64::MAX as u64) as i64))?;
                } else {
                    ConstCounter::new(sample.value).encode(one)?;
                }
            }
        }
        // Derived from the packed replica and ISR gauges, for alerts (PromQL cannot count
        // the bytes of a packed value).
        let replicated: Vec<(&String, &crate::admin::PartitionInfo)> = counters
            .topics()
            .iter()
            .flat_map(|(topic, partitions)| partitions.iter().map(move |p| (topic, p)))
            .filter(|(_, p)| p.replicated())
            .collect();
        for (name, help, value) in [
            (
                "precursor_partition_replication_factor",
                "Replicas of the partition (replicated partitions only).",
                (|p: &crate::admin::PartitionInfo| p.replicas.len() as i64)
                    as fn(&crate::admin::PartitionInfo) -> i64,
            ),
            (
                "precursor_partition_in_sync_replicas",
                "Replicas in the partition's ISR, as this broker knows it (replicated partitions only).",
                |p: &crate::admin::PartitionInfo| p.isr.len() as i64,
            ),
            (
                "precursor_partition_under_replicated",
                "1 when the partition's ISR is smaller than its replicas, else 0 (replicated partitions only).",
                |p: &crate::admin::PartitionInfo| i64::from(p.isr.len() < p.replicas.len()),
            ),
        ] {
            let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for (topic, partition) in &replicated {
                let labels = vec![
                    ("topic".to_string(), (*topic).clone()),
                    ("partition".to_string(), partition.partition.to_string()),
                ];
                metric.encode_family(&labels)?.encode_gauge(&value(partition))?;
            }
        }
        for family in counters.histogram_families() {
            let mut metric = encoder.encode_descriptor(
                &family.name,
                family.help,
                None,
                MetricType::Histogram,
            )?;
            for histogram in &family.histograms {
                let mut buckets = Vec::with_capacity(histogram.bounds_ns.len() + 1);
                let mut counted = 0u64;
                let mut has_infinity = false;
                for (bound_ns, count) in histogram.bounds_ns.iter().zip(&histogram.counts) {
                    // u64::MAX stands for +Inf; prometheus-client writes f64::MAX as +Inf.
                    let le = if *bound_ns == u64::MAX {
                        has_infinity = true;
                        f64::MAX
                    } else {
                        *bound_ns as f64 / 1e9
                    };
                    buckets.push((le, *count));
                    counted = counted.saturating_add(*count);
                }
                if !has_infinity {
                    // Everything above the last bound, so that +Inf equals the count.
                    buckets.push((f64::MAX, histogram.count.saturating_sub(counted)));
                }
                let one = metric.encode_family(&histogram.labels)?;
                let mut one = one;
                one.encode_histogram::<Vec<(String, String)>>(
                    histogram.sum_ns as f64 / 1e9,
                    histogram.count,
                    &buckets,
                    None,
                )?;
            }
        }
        Ok(())
    }
}

/// Consumer groups' committed offsets and lag (gateway/lag.rs), read at each scrape.
struct GroupLag {
    gateway: crate::GatewaySlot,
    cnc_dir: PathBuf,
}

impl std::fmt::Debug for GroupLag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupLag")
            .field("cnc_dir", &self.cnc_dir)
            .finish()
    }
}

impl Collector for GroupLag {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(gateway) = self.gateway.get().and_then(std::sync::Weak::upgrade) else {
            return Ok(());
        };
        let counters = CountersSnapshot::read(&self.cnc_dir).ok();
        let groups = crate::gateway::lag::describe_all(&gateway, counters.as_ref());
        let partition_labels = |group: &str, p: &crate::admin::GroupPartition| {
            vec![
                ("group".to_string(), group.to_string()),
                ("topic".to_string(), p.topic.clone()),
                ("partition".to_string(), p.partition.to_string()),
            ]
        };
        let mut metric = encoder.encode_descriptor(
            "precursor_group_lag",
            "Messages between a consumer group's committed offset and the partition's log end (high watermark when replicated).",
            None,
            MetricType::Gauge,
        )?;
        for group in &groups {
            for p in &group.partitions {
                if let Some(lag) = p.lag {
                    let labels = partition_labels(&group.group, p);
                    metric
                        .encode_family(&labels)?
                        .encode_gauge(&(lag.min(i64::MAX as u64) as i64))?;
                }
            }
        }
        let mut metric = encoder.encode_descriptor(
            "precursor_group_committed_offset",
            "The offset a consumer group committed for a partition (the next it will read).",
            None,
            MetricType::Gauge,
        )?;
        for group in &groups {
            for p in &group.partitions {
                if let Some(offset) = p.committed_offset {
                    let labels = partition_labels(&group.group, p);
                    metric.encode_family(&labels)?.encode_gauge(&offset)?;
                }
            }
        }
        let mut metric = encoder.encode_descriptor(
            "precursor_group_members",
            "Live members of a consumer group on this coordinator.",
            None,
            MetricType::Gauge,
        )?;
        for group in &groups {
            let labels = vec![("group".to_string(), group.group.clone())];
            metric
                .encode_family(&labels)?
                .encode_gauge(&(group.members.len() as i64))?;
        }
        Ok(())
    }
}

/// The host's room for the broker (host.rs): filesystems of the data and memory
/// directories, hugepages.
struct HostCollector {
    config: precursor_config::Config,
}

impl std::fmt::Debug for HostCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostCollector").finish()
    }
}

impl Collector for HostCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let filesystems = crate::host::filesystems(&self.config);
        for (name, help, value) in [
            (
                "precursor_filesystem_size_bytes",
                "Size of the filesystem holding a broker directory (dir: data = node.data_dir, memory = the active segments' directory).",
                (|fs: &crate::host::FilesystemUse| fs.size_bytes) as fn(&crate::host::FilesystemUse) -> u64,
            ),
            (
                "precursor_filesystem_free_bytes",
                "Bytes still free for the broker on the filesystem holding a broker directory.",
                |fs: &crate::host::FilesystemUse| fs.free_bytes,
            ),
        ] {
            let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for fs in &filesystems {
                let labels = vec![
                    ("dir".to_string(), fs.dir.to_string()),
                    ("path".to_string(), fs.path.clone()),
                ];
                metric
                    .encode_family(&labels)?
                    .encode_gauge(&(value(fs).min(i64::MAX as u64) as i64))?;
            }
        }
        let pages = crate::host::hugepages();
        for (name, help, value) in [
            (
                "precursor_hugepages_total",
                "Hugepages of the default size reserved on the host (HugePages_Total).",
                pages.total,
            ),
            (
                "precursor_hugepages_free",
                "Hugepages of the default size not in use (HugePages_Free).",
                pages.free,
            ),
        ] {
            let gauge = ConstGauge::new(value.min(i64::MAX as u64) as i64);
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        Ok(())
    }
}

/// Binds the metrics listener (`host:port`, e.g. `127.0.0.1:9464`).
pub async fn bind(address: &str) -> Result<TcpListener, ControlplaneError> {
    TcpListener::bind(address)
        .await
        .map_err(|source| ControlplaneError::Metrics {
            address: address.to_string(),
            source,
        })
}

/// Serves `/metrics` and `/healthz` until the task is dropped.
pub async fn serve(listener: TcpListener, node: Arc<crate::Node>) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                eprintln!("precursor-controlplane: metrics accept: {error}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let node = node.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let node = node.clone();
                async move { Ok::<_, std::convert::Infallible>(respond(node, request)) }
            });
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_millis(HTTP_HEADER_TIMEOUT_MS));
            let _ = http.serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

/// A response body: a whole text, or the dashboard's event stream.
type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, std::convert::Infallible>;

/// Event streams open now (at most `dashboard::DASHBOARD_EVENT_STREAMS_MAX`).
static EVENT_STREAMS_OPEN: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Counts an open event stream; the count goes down when the stream is dropped.
struct EventStreamSlot;

impl EventStreamSlot {
    fn take() -> Option<EventStreamSlot> {
        use std::sync::atomic::Ordering;
        let taken = EVENT_STREAMS_OPEN.fetch_add(1, Ordering::AcqRel);
        if taken >= crate::dashboard::DASHBOARD_EVENT_STREAMS_MAX {
            EVENT_STREAMS_OPEN.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(EventStreamSlot)
    }
}

impl Drop for EventStreamSlot {
    fn drop(&mut self) {
        EVENT_STREAMS_OPEN.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

fn respond(node: Arc<crate::Node>, request: Request<Incoming>) -> Response<Body> {
    let reply = |status: StatusCode, content_type: &str, body: String| {
        Response::builder()
            .status(status)
            .header(hyper::header::CONTENT_TYPE, content_type)
            .body(Full::new(Bytes::from(body)).boxed_unsync())
            .expect("static response parts are valid")
    };
    let page = |content_type: &str, body: &'static str| {
        Response::builder()
            .status(StatusCode::OK)
            .header(hyper::header::CONTENT_TYPE, content_type)
            .header(hyper::header::CACHE_CONTROL, "no-cache")
            .body(Full::new(Bytes::from_static(body.as_bytes())).boxed_unsync())
            .expect("static response parts are valid")
    };
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET only\n".into(),
        );
    }
    match request.uri().path() {
        "/" | "/index.html" => page("text/html; charset=utf-8", crate::dashboard::INDEX_HTML),
        "/dashboard.js" => page(
            "text/javascript; charset=utf-8",
            crate::dashboard::DASHBOARD_JS,
        ),
        "/dashboard.css" => page("text/css; charset=utf-8", crate::dashboard::DASHBOARD_CSS),
        "/events" => {
            let Some(slot) = EventStreamSlot::take() else {
                return reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    format!(
                        "{} dashboard event streams are open already\n",
                        crate::dashboard::DASHBOARD_EVENT_STREAMS_MAX
                    ),
                );
            };
            use futures_util::StreamExt;
            let events = crate::dashboard::event_stream(node).map(move |event| {
                let _open = &slot;
                event.map(hyper::body::Frame::data)
            });
            Response::builder()
                .status(StatusCode::OK)
                .header(hyper::header::CONTENT_TYPE, "text/event-stream")
                .header(hyper::header::CACHE_CONTROL, "no-cache")
                .body(BodyExt::boxed_unsync(StreamBody::new(events)))
                .expect("static response parts are valid")
        }
        "/metrics" => reply(StatusCode::OK, METRICS_CONTENT_TYPE, node.metrics.encode()),
        "/healthz" => {
            let state = node.link.state();
            if state.is_alive() {
                reply(StatusCode::OK, "text/plain", "ok\n".into())
            } else {
                reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    format!("data plane down: {}\n", state.problem()),
                )
            }
        }
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: try /, /events, /metrics or /healthz\n".into(),
        ),
    }
}
