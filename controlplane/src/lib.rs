//! Precursor's control plane (DESIGN.md §1, §3): a tokio process that never links DPDK.
//! It talks to the data plane through the shared files in `Config::cnc_dir()` only:
//!
//! - [`admin`]: the admin API on a Unix socket (the CLI's `topic` and `status`).
//! - [`metrics`]: `/metrics` (Prometheus text, built at scrape time from the shared
//!   counters) and `/healthz` over HTTP.
//! - [`link`]: the one thread that owns the CnC file (command and event rings).
//! - [`supervisor`]: `precursor up` — runs `precursor-dataplane` as a child, restarts it
//!   with back-off when it dies, stops it cleanly on SIGINT/SIGTERM.
//! - [`gateway`]: the Kafka protocol gateway on TCP (`[gateway]`, docs/kafka.md).
//! - [`member`]: `cluster.metadata = "quorum"`: this broker's voter of the metadata
//!   quorum, its lease, and the committed leaderships sent to the data plane.
//!
//! [`run`] puts them together: `Mode::Attach` for `precursor controlplane` (a data plane
//! started elsewhere), `Mode::Supervise` for `precursor up`.

pub mod admin;
pub mod counters;
pub mod dashboard;
pub mod gateway;
pub mod host;
pub mod link;
pub mod member;
pub mod metrics;
pub mod supervisor;
pub mod topic_configs;

use precursor_config::Config;
use precursor_protocol::frame::ErrorCode;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

pub use supervisor::Mode;

/// The control plane decodes untrusted Kafka requests, whose array counts the
/// kafka-protocol crate turns into `Vec` capacities before reading any element: a lying
/// count must not abort the process on a failed allocation (see
/// `precursor_ffi::alloc::ReserveFreeLargeAllocations`). Declared here, in the library that owns
/// the control plane's process, so every binary that runs it (`precursor`) gets it.
#[global_allocator]
static ALLOCATOR: precursor_ffi::alloc::ReserveFreeLargeAllocations =
    precursor_ffi::alloc::ReserveFreeLargeAllocations;

/// Why the control plane could not start or stopped with a failure.
#[derive(Debug, thiserror::Error)]
pub enum ControlplaneError {
    #[error("admin socket {}: {what}: {source}", path.display())]
    AdminSocket {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "admin socket {}: another control plane answers there; stop it first",
        path.display()
    )]
    AdminSocketInUse { path: PathBuf },
    #[error("cluster listener {address} (controlplane.cluster_listen): {source}")]
    ClusterListener {
        address: String,
        #[source]
        source: std::io::Error,
    },
    #[error("metrics listener {address}: {source}")]
    Metrics {
        address: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the CnC link thread: {0}")]
    Link(#[source] std::io::Error),
    #[error("cannot start the tokio runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("cannot write the effective config to {}: {source}", path.display())]
    ConfigFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the data plane {}: {source}", binary.display())]
    Spawn {
        binary: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot install the signal handlers: {0}")]
    Signals(#[source] std::io::Error),
    #[error("the data plane refused its configuration ({status}): see its message above; not restarting")]
    DataplaneRefused { status: std::process::ExitStatus },
    #[error(transparent)]
    Gateway(#[from] gateway::GatewayError),
    #[error("metadata quorum: {0}")]
    Quorum(#[source] precursor_metadata::QuorumError),
}

/// What every task of the control plane shares.
pub struct Node {
    pub config: Config,
    pub cnc_dir: PathBuf,
    pub link: link::Link,
    pub metrics: metrics::ControlplaneMetrics,
    pub started: Instant,
    /// `cluster.metadata = "quorum"`: this broker's membership (set once at start).
    pub member: std::sync::OnceLock<member::Member>,
    /// Exits of the supervised data plane so far (the supervisor counts each at once).
    pub dataplane_deaths: tokio::sync::watch::Sender<u64>,
    /// The Kafka gateway once it is open (`gateway.enabled`): consumer groups and their
    /// lag for the admin API, /metrics and the dashboard.
    pub gateway: GatewaySlot,
    /// The topics' configurations as the data plane's manifest holds them.
    pub topic_configs: topic_configs::TopicConfigCache,
}

/// Where the gateway is found once open (it holds the node, so the node holds it weakly).
pub type GatewaySlot = Arc<std::sync::OnceLock<std::sync::Weak<gateway::Gateway>>>;

impl Node {
    /// Starts the link to the data plane's CnC in `config.cnc_dir()`.
    pub fn new(config: Config) -> Result<Arc<Node>, ControlplaneError> {
        let cnc_dir = config.cnc_dir();
        let link = link::Link::start(cnc_dir.clone(), config.controlplane.command_timeout_ms)
            .map_err(ControlplaneError::Link)?;
        let gateway = GatewaySlot::default();
        let metrics = metrics::ControlplaneMetrics::new(
            link.state().clone(),
            cnc_dir.clone(),
            gateway.clone(),
            &config,
        );
        Ok(Arc::new(Node {
            config,
            topic_configs: topic_configs::TopicConfigCache::new(cnc_dir.clone()),
            cnc_dir,
            link,
            metrics,
            started: Instant::now(),
            member: std::sync::OnceLock::new(),
            dataplane_deaths: tokio::sync::watch::Sender::new(0),
            gateway,
        }))
    }

    /// The Kafka gateway, when it is enabled and open.
    pub fn gateway(&self) -> Option<Arc<gateway::Gateway>> {
        self.gateway.get().and_then(std::sync::Weak::upgrade)
    }

    /// `precursor status`: the link's view plus the counters file, or the answer saying
    /// why there is none.
    pub fn status(&self) -> Result<admin::NodeStatus, admin::Response> {
        let state = self.link.state();
        let mut status = admin::NodeStatus {
            dataplane_pid: state.writer_pid(),
            dataplane_alive: state.is_alive(),
            restarts: self.metrics.restarts(),
            uptime_s: self.started.elapsed().as_secs(),
            dataplane_uptime_s: state.attached_for().map(|d| d.as_secs()),
            command_ring_depth: state
                .command_ring_depth
                .load(std::sync::atomic::Ordering::Acquire),
            quorum: self.member.get().map(|member| {
                let status = member.status();
                let state = member.state();
                Box::new(admin::QuorumView {
                    leader: status.quorum.leader,
                    term: status.quorum.term,
                    committed: status.quorum.committed,
                    applied: status.quorum.last_applied,
                    voter_lag: status
                        .quorum
                        .voters
                        .iter()
                        .filter_map(|v| v.lag.map(|lag| (v.id, lag)))
                        .collect(),
                    incarnation: status.incarnation,
                    registered: status.registered,
                    lease_left_ms: status.lease_left_ms,
                    fenced_brokers: state
                        .brokers
                        .iter()
                        .filter(|(_, b)| b.fenced)
                        .map(|(id, _)| *id)
                        .collect(),
                })
            }),
            ..admin::NodeStatus::default()
        };
        if status.dataplane_alive {
            match counters::CountersSnapshot::read(&self.cnc_dir) {
                Ok(counters) => counters.fill_status(&mut status),
                Err(error) => {
                    return Err(admin::Response::error(
                        admin::codes::DATAPLANE_UNAVAILABLE,
                        format!("cannot read the data plane's counters: {error}"),
                    ))
                }
            }
        }
        Ok(status)
    }
}

/// The admin error code for a data plane's `Failed` event.
pub fn dataplane_error_code(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::InvalidTopic | ErrorCode::InvalidArgument => admin::codes::INVALID_ARGUMENT,
        ErrorCode::TopicExists => admin::codes::TOPIC_EXISTS,
        ErrorCode::UnknownTopicOrPartition => admin::codes::UNKNOWN_TOPIC,
        ErrorCode::Busy | ErrorCode::TopicNotReady => admin::codes::BUSY,
        _ => admin::codes::DATAPLANE_ERROR,
    }
}

/// Runs the control plane until SIGINT or SIGTERM: admin socket, metrics listener, and in
/// `Mode::Supervise` the data plane as a child. Builds its own single-threaded tokio
/// runtime (the control plane's work is light; the data plane owns the fast cores).
pub fn run(
    config: Config,
    config_path: Option<PathBuf>,
    mode: Mode,
) -> Result<(), ControlplaneError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(ControlplaneError::Runtime)?;
    runtime.block_on(supervisor::serve(config, config_path, mode))
}
