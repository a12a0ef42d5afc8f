//! Start-up and shut-down of one data plane node: everything that may block happens here,
//! before the lcore starts polling or after it stops.
//!
//! Order: storage first (the flusher and admin threads are spawned before `rte_eal_init`,
//! so they do not inherit the lcore's CPU pinning), recovery of every partition, then the
//! EAL, the mempool and the port, then the lcore loop on the EAL's main thread.

use crate::control::Control;
use crate::idle::Idle;
use crate::ipc::IpcTransport;
use crate::lcore::{Lcore, LcoreConfig};
use crate::log::{Flusher, FlusherHandle, LogConfig};
use crate::net::Endpoint;
use crate::replica::{ClusterView, ReplicationTimings};
use crate::topics::{self, AdminLink, Manifest, ReplicationPolicy, Topic, TopicTable};
use precursor_config::{AcksAll, Config, Hugepages, PortKind};
use precursor_ffi::dpdk::{DpdkError, Eal, Mempool, Port, PortConfig};
use precursor_protocol::command::{TopicReplication, ACKS_ALL_DURABLE, ACKS_ALL_MEMORY};
use precursor_shm::ipc::IpcLayout;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// IPv4 (20) + UDP (8) bytes inside the MTU, before the native frame.
const IP_UDP_HEADERS_BYTES: usize = 28;
/// Ethernet header + VLAN tag + FCS allowance in an mbuf beyond the MTU.
const ETHERNET_OVERHEAD_BYTES: usize = 14 + 4 + 4;
/// DPDK's default mbuf headroom.
const MBUF_HEADROOM_BYTES: usize = 128;
const MBUF_DATA_BYTES_MIN: usize = 2048;
const MEMPOOL_CACHE_MBUFS: u32 = 256;
const HUGE_PAGE_BYTES: u64 = 2 << 20;
/// Hugepage memory DPDK itself needs beyond its mbufs (rings, tables), in bytes.
const DPDK_OVERHEAD_BYTES: u64 = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("data directory {path} is in use by another data plane (pid {holder}): one data plane per directory")]
    DataDirInUse { path: PathBuf, holder: String },
    #[error(transparent)]
    Topic(#[from] topics::TopicError),
    #[error("storage: {0}")]
    Log(#[from] crate::log::LogError),
    #[error(transparent)]
    Dpdk(#[from] DpdkError),
    #[error("shared memory with the control plane: {0}")]
    Shm(#[from] precursor_shm::ShmError),
    #[error(
        "hugepages are required by the configuration (dataplane.hugepages = \"required\") but {0}"
    )]
    HugepagesMissing(String),
    #[error("IPC channels: {0}")]
    Ipc(precursor_shm::ShmError),
    #[cfg(feature = "rdma")]
    #[error(transparent)]
    Rdma(#[from] crate::rdma::RdmaError),
    #[error(
        "rdma.enabled = true, but this precursor-dataplane was built without RDMA: \
         cargo build --release -p precursor-dataplane --features rdma"
    )]
    RdmaNotBuilt,
    #[error("cannot start a thread: {0}")]
    Thread(std::io::Error),
}

/// The storage side of a node: flusher and admin threads and the recovered topics.
pub struct Storage {
    /// Held while the node runs: one data plane per data directory.
    _lock: std::fs::File,
    pub log: LogConfig,
    pub flusher: FlusherHandle,
    flusher_thread: Option<JoinHandle<()>>,
    admin_thread: Option<JoinHandle<()>>,
    admin_stop: Arc<AtomicBool>,
}

impl Storage {
    /// Creates the data directory, spawns the flusher, recovers every topic of the manifest
    /// and creates the configured ones, then hands the manifest to the admin thread.
    /// The topics and the admin link go to the lcore.
    pub fn open(
        config: &Config,
        memory_dir: &Path,
    ) -> Result<(Storage, TopicTable, AdminLink), NodeError> {
        let data_dir = &config.node.data_dir;
        std::fs::create_dir_all(data_dir).map_err(|source| NodeError::DataDir {
            path: data_dir.clone(),
            source,
        })?;
        let lock = lock_data_dir(data_dir)?;
        let log = log_config(config, memory_dir);
        let (flusher, flusher_thread) = Flusher::spawn(&log)?;
        let mut manifest = Manifest::load(data_dir)?;
        for spec in &config.topics.create {
            if manifest.find(&spec.name).is_none() {
                let replication = TopicReplication {
                    factor: spec.replication_factor.unwrap_or(0),
                    min_insync: spec.min_insync_replicas.unwrap_or(0),
                    acks_all: match spec.acks_all {
                        None => 0,
                        Some(AcksAll::Memory) => ACKS_ALL_MEMORY,
                        Some(AcksAll::Durable) => ACKS_ALL_DURABLE,
                    },
                };
                manifest.add_with(&spec.name, spec.partitions, None, None, replication)?;
            }
        }
        topics::remove_uncommitted_partitions(&manifest, &log)?;
        let policy = ReplicationPolicy::from_config(config);
        let mut table = TopicTable::new();
        for entry in manifest.entries() {
            let topic = Topic::open(entry, &log, &flusher, &policy)?;
            eprintln!(
                "precursor-dataplane: topic {} ({} partitions) recovered: {} messages",
                topic.name,
                topic.partitions.len(),
                topic
                    .partitions
                    .iter()
                    .map(|p| p.log_end_offset() - p.log_start_offset())
                    .sum::<u64>()
            );
            let key = topic.name.clone();
            table.install(topic, key);
        }
        let admin_stop = Arc::new(AtomicBool::new(false));
        let (admin, admin_thread) = topics::spawn_admin(
            manifest,
            log.clone(),
            flusher.clone(),
            policy,
            admin_stop.clone(),
        )
        .map_err(NodeError::Thread)?;
        let storage = Storage {
            _lock: lock,
            log,
            flusher,
            flusher_thread: Some(flusher_thread),
            admin_thread: Some(admin_thread),
            admin_stop,
        };
        Ok((storage, table, admin))
    }

    /// Stops the admin thread, then lets the flusher persist everything and exit.
    pub fn close(&mut self) {
        self.admin_stop.store(true, Ordering::Release);
        if let Some(thread) = self.admin_thread.take() {
            let _ = thread.join();
        }
        self.flusher.shutdown();
        if let Some(thread) = self.flusher_thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Storage {
    fn drop(&mut self) {
        self.close();
    }
}

/// Takes `<data_dir>/.lock` (an advisory lock the kernel drops when the process dies, so a
/// `kill -9` leaves nothing to clean) and writes our pid into it. A second data plane on
/// the same directory would corrupt the logs and delete the first one's memory files.
fn lock_data_dir(data_dir: &Path) -> Result<std::fs::File, NodeError> {
    use std::io::{Read, Seek, Write};
    let path = data_dir.join(".lock");
    let io = |source| NodeError::DataDir {
        path: path.clone(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io)?;
    if file.try_lock().is_err() {
        let mut holder = String::new();
        let _ = file.read_to_string(&mut holder);
        return Err(NodeError::DataDirInUse {
            path: data_dir.to_path_buf(),
            holder: holder.trim().to_string(),
        });
    }
    file.set_len(0).map_err(io)?;
    file.rewind().map_err(io)?;
    writeln!(file, "{}", std::process::id()).map_err(io)?;
    Ok(file)
}

/// Maps the node's configuration onto the log's.
pub fn log_config(config: &Config, memory_dir: &Path) -> LogConfig {
    let st = &config.storage;
    LogConfig {
        data_dir: config.node.data_dir.clone(),
        memory_dir: memory_dir.to_path_buf(),
        small_page_dir: None,
        segment_bytes: st.segment_bytes,
        segment_ms: st.segment_ms,
        index_interval_bytes: st.index_interval_bytes,
        retention_bytes: (st.retention_bytes > 0).then_some(st.retention_bytes),
        retention_ms: (st.retention_ms > 0).then_some(st.retention_ms),
        flush_interval_ms: st.flush_interval_ms,
        flush_messages: st.flush_messages,
        batch_bytes_max: st.batch_bytes_max,
        producers_per_partition_max: st.producers_per_partition_max,
    }
}

/// Largest native frame a port with this MTU carries.
pub fn frame_bytes_max(mtu_bytes: u16) -> usize {
    mtu_bytes as usize - IP_UDP_HEADERS_BYTES
}

/// Free hugepage memory in bytes, from /proc/meminfo (2 MiB pages).
pub fn hugepages_free_bytes() -> u64 {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("HugePages_Free:"))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(0, |pages| pages * HUGE_PAGE_BYTES)
}

fn mbuf_data_room_bytes(mtu_bytes: u16) -> u16 {
    let data = (mtu_bytes as usize + ETHERNET_OVERHEAD_BYTES).max(MBUF_DATA_BYTES_MIN);
    (MBUF_HEADROOM_BYTES + data.next_multiple_of(1024)) as u16
}

/// Where the node's memory goes: DPDK's hugepages or not, and the active segments' directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemoryPlan {
    pub dpdk_hugepages: bool,
    /// What DPDK takes of the hugepages (packet pool and EAL), when `dpdk_hugepages`.
    pub dpdk_bytes: u64,
    pub memory_dir: PathBuf,
    pub warnings: Vec<String>,
}

/// Decides, from what is reserved now, whether DPDK and the segments get hugepages.
pub fn plan_memory(config: &Config, partitions: u64) -> Result<MemoryPlan, NodeError> {
    let mounted = precursor_config::hugetlbfs_mounted(Path::new("/dev/hugepages"));
    let free = hugepages_free_bytes();
    let dpdk_need = config.dataplane.mbufs as u64
        * mbuf_data_room_bytes(config.port.mtu_bytes) as u64
        + DPDK_OVERHEAD_BYTES;
    // The active segment per partition (spares are made lazily, for busy partitions: see
    // `log::flusher::SPARE_SEGMENTS`), and headroom for topics created later and spares.
    // Each memory file also holds a 64-byte header: one more (huge) page per segment. A
    // segment that finds no hugepages later goes to /dev/shm on its own (`log::memory`).
    let segment_memory_bytes = config.storage.segment_bytes + HUGE_PAGE_BYTES;
    let segments_per_partition = 1;
    let segments_need = (partitions.max(1) * segments_per_partition + 4) * segment_memory_bytes;
    let mut warnings = Vec::new();
    let dpdk_hugepages = match config.dataplane.hugepages {
        Hugepages::Off => false,
        Hugepages::Required if !mounted => {
            return Err(NodeError::HugepagesMissing(
                "no hugetlbfs is mounted at /dev/hugepages".into(),
            ));
        }
        Hugepages::Required if free < dpdk_need => {
            return Err(NodeError::HugepagesMissing(format!(
                "only {} MiB are free, {} MiB needed (echo N > /proc/sys/vm/nr_hugepages)",
                free >> 20,
                dpdk_need >> 20
            )));
        }
        Hugepages::Required => true,
        Hugepages::Auto if mounted && free >= dpdk_need => true,
        Hugepages::Auto => {
            warnings.push(format!(
                "no hugepages for DPDK ({} MiB free, {} MiB needed): running with --no-huge, mbuf handling is slower; ci/up.sh reserves them",
                free >> 20,
                dpdk_need >> 20
            ));
            false
        }
    };
    let configured = !config.node.memory_dir.as_os_str().is_empty();
    let mut memory_dir = config.memory_dir();
    if !configured && memory_dir.starts_with("/dev/hugepages") {
        let left = if dpdk_hugepages {
            free.saturating_sub(dpdk_need)
        } else {
            free
        };
        if left < segments_need {
            warnings.push(format!(
                "active segments in /dev/shm, not hugepages: {} MiB of hugepages left, {} MiB wanted",
                left >> 20,
                segments_need >> 20
            ));
            memory_dir = PathBuf::from("/dev/shm/precursor");
        }
    }
    Ok(MemoryPlan {
        dpdk_hugepages,
        dpdk_bytes: if dpdk_hugepages { dpdk_need } else { 0 },
        memory_dir,
        warnings,
    })
}

/// The EAL arguments for a configuration.
pub fn eal_args(config: &Config, plan: &MemoryPlan) -> Vec<String> {
    let dp = &config.dataplane;
    let port = &config.port;
    let mut args = vec![
        "-l".to_string(),
        config.lcore().to_string(),
        format!("--file-prefix={}", dp.file_prefix),
        "--log-level=5".into(),
        "--no-telemetry".into(),
    ];
    // No secondary DPDK process ever attaches (the control plane maps our files, not
    // DPDK's), so nothing is shared and no hugepage or config files are left behind by a
    // kill -9. (`--in-memory` is refused together with `--no-huge`.)
    if plan.dpdk_hugepages {
        args.push("--in-memory".into());
    } else {
        args.push("--no-huge".into());
        args.push("--no-shconf".into());
        args.push(format!("-m={}", dp.no_huge_memory_mb));
    }
    match port.kind {
        PortKind::Pci => args.push(format!("--allow={}", port.pci_address)),
        _ => args.push("--no-pci".into()),
    }
    match port.kind {
        PortKind::Tap => args.push(format!("--vdev=net_tap0,iface={}", port.iface)),
        PortKind::AfPacket => {
            let mut vdev = format!("--vdev=net_af_packet0,iface={},qpairs=1", port.iface);
            if port.mtu_bytes > 1500 {
                vdev.push_str(",blocksz=16384,framesz=16384,framecnt=512");
            }
            args.push(vdev);
        }
        PortKind::Memif => args.push(format!(
            "--vdev=net_memif0,role={},socket={}",
            port.memif_role,
            port.memif_socket.display()
        )),
        PortKind::Pci => {}
    }
    args.extend(dp.eal_args.iter().cloned());
    args
}

/// The DPDK device name of the configured port.
pub fn port_name(config: &Config) -> String {
    match config.port.kind {
        PortKind::Tap => "net_tap0".into(),
        PortKind::AfPacket => "net_af_packet0".into(),
        PortKind::Memif => "net_memif0".into(),
        PortKind::Pci => config.port.pci_address.clone(),
    }
}

/// The EAL, the packet pool and the started port of a configuration: the set-up shared by a
/// node and by echo mode (`crate::echo`). Drop the port and the pool before the EAL.
pub fn open_port(config: &Config, plan: &MemoryPlan) -> Result<(Eal, Mempool, Port), NodeError> {
    let args = eal_args(config, plan);
    let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();
    eprintln!("precursor-dataplane: EAL {}", args.join(" "));
    let eal = Eal::init(&arg_refs)?;
    let pool = Mempool::create(
        "precursor-rx",
        config.dataplane.mbufs,
        MEMPOOL_CACHE_MBUFS,
        mbuf_data_room_bytes(config.port.mtu_bytes),
        -1,
    )?;
    let mut port = Port::by_name(&eal, &port_name(config))?;
    port.configure(
        &PortConfig {
            rx_queues: 1,
            tx_queues: 1,
            rx_descriptors: config.port.rx_descriptors,
            tx_descriptors: config.port.tx_descriptors,
            mtu_bytes: config.port.mtu_bytes,
            promiscuous: true,
        },
        &pool,
    )?;
    port.start()?;
    if config.port.kind == PortKind::Tap {
        configure_tap_kernel_side(config);
    }
    Ok((eal, pool, port))
}

/// This node's MAC, address and UDP port on `port`.
pub fn endpoint(config: &Config, port: &Port) -> Endpoint {
    Endpoint {
        mac: port.mac_address(),
        ip: config.port.address,
        udp_port: config.port.udp_port,
    }
}

/// Runs a whole node in this process until `stop` is set. Returns the lcore's counters
/// as JSON for the exit report.
/// The lcore thread's timer slack: parks of the backoff idle strategy wake on time.
const IDLE_TIMER_SLACK_NS: u64 = 1_000;

pub fn run(config: &Config, stop: Arc<AtomicBool>) -> Result<String, NodeError> {
    // Partitions that will be open: those recovered from the manifest and those configured.
    let recovered = Manifest::load(&config.node.data_dir)?;
    let partitions: u64 = recovered
        .entries()
        .iter()
        .map(|t| t.partitions as u64)
        .chain(
            config
                .topics
                .create
                .iter()
                .filter(|t| recovered.find(&t.name).is_none())
                .map(|t| t.partitions as u64),
        )
        .sum();
    let plan = plan_memory(config, partitions)?;
    for warning in &plan.warnings {
        eprintln!("precursor-dataplane: warning: {warning}");
    }
    std::fs::create_dir_all(&plan.memory_dir).map_err(|source| NodeError::DataDir {
        path: plan.memory_dir.clone(),
        source,
    })?;
    // Recovery and the first segments must not take the hugepages DPDK was planned on:
    // they are kept free until the EAL and the pool have them (below).
    crate::log::keep_hugepages_free(plan.dpdk_bytes.div_ceil(HUGE_PAGE_BYTES));
    let (mut storage, topics, admin) = Storage::open(config, &plan.memory_dir)?;

    // Before rte_eal_init: its thread keeps the process's CPU set, and a wrong address
    // fails before DPDK starts.
    let rdma = start_rdma(config)?;
    // Read before rte_eal_init: afterwards this thread is pinned and sees one core.
    let polling_core = config.lcore();
    let (eal, pool, port) = open_port(config, &plan)?;
    crate::log::keep_hugepages_free(0);
    let endpoint = endpoint(config, &port);
    let lcore_config = LcoreConfig {
        endpoint,
        queue: 0,
        frame_bytes_max: frame_bytes_max(config.port.mtu_bytes),
        drain_interval: Duration::from_micros(config.dataplane.drain_interval_us as u64),
        pending_acks_max: config.dataplane.pending_acks_max as usize,
        auto_create_topics: config.topics.auto_create,
        default_partitions: config.topics.default_partitions,
    };
    let mut lcore = Lcore::new(lcore_config, port, pool, topics, admin);
    let cluster = &config.cluster;
    if cluster.enabled() {
        let brokers: Vec<_> = cluster
            .brokers
            .iter()
            .map(|b| (b.id as u8, b.address, b.udp_port))
            .collect();
        let timings = ReplicationTimings {
            replica_lag: Duration::from_millis(cluster.replica_lag_ms),
            fetch_wait: Duration::from_millis(cluster.replica_fetch_wait_ms),
            fetch_retry: Duration::from_millis(cluster.replica_fetch_retry_ms),
        };
        let mut view = ClusterView::new(cluster.broker_id as u8, &brokers, timings);
        view.quorum = cluster.quorum_enabled();
        lcore.attach_cluster(view);
        eprintln!(
            "precursor-dataplane: broker {} of a cluster of {} (replica lag {} ms)",
            cluster.broker_id,
            cluster.brokers.len(),
            cluster.replica_lag_ms
        );
    }
    let cnc_dir = config.cnc_dir();
    lcore.attach_control(Control::create(
        &cnc_dir,
        &port_name(config),
        storage.flusher.clone(),
        if cluster.quorum_enabled() {
            precursor_shm::LEASE_EXPIRED_NS
        } else {
            precursor_shm::LEASE_FOREVER_NS
        },
    )?);
    // Where the logs are, for clients that read them directly from the shared maps.
    let mut paths = format!(
        "data_dir={}\nmemory_dir={}\n",
        std::fs::canonicalize(&config.node.data_dir)
            .unwrap_or_else(|_| config.node.data_dir.clone())
            .display(),
        plan.memory_dir.display()
    );
    // Segments that found no hugepages are there (see `log::memory`).
    if let Some(small) = log_config(config, &plan.memory_dir).small_page_dir() {
        paths.push_str(&format!("small_memory_dir={}\n", small.display()));
    }
    if let Err(error) = std::fs::write(cnc_dir.join("paths"), paths) {
        eprintln!(
            "precursor-dataplane: warning: cannot write {}/paths: {error}",
            cnc_dir.display()
        );
    }
    let ipc = if config.ipc.enabled {
        let layout = IpcLayout {
            channels: config.ipc.channels,
            ring_capacity: config.ipc.ring_bytes as usize,
        };
        let timeout = Duration::from_millis(u64::from(config.ipc.client_timeout_ms));
        let ipc = IpcTransport::create(&cnc_dir, layout, timeout).map_err(NodeError::Ipc)?;
        let description = format!(
            "{} IPC channels in {} (frames up to {} bytes)",
            layout.channels,
            ipc.path().display(),
            ipc.frame_bytes_max()
        );
        lcore.attach_ipc(ipc);
        description
    } else {
        "IPC off".to_string()
    };
    let rdma = attach_rdma(rdma, &mut lcore);
    eprintln!(
        "precursor-dataplane: ready: {}:{} on {} (mac {}), lcore {}, {} hugepages, segments in {}, cnc in {}, {}, {}",
        endpoint.ip,
        endpoint.udp_port,
        port_name(config),
        mac_string(endpoint.mac),
        polling_core,
        if plan.dpdk_hugepages {
            "with"
        } else {
            "without"
        },
        plan.memory_dir.display(),
        cnc_dir.display(),
        ipc,
        rdma
    );
    let mut idle = Idle::new(config.dataplane.idle, config.dataplane.idle_park_us_max);
    // A park of a few microseconds must not become the kernel's default 50 µs of slack.
    if let Err(error) = precursor_ffi::thread::set_current_thread_timer_slack(IDLE_TIMER_SLACK_NS) {
        eprintln!("precursor-dataplane: warning: cannot lower the lcore's timer slack: {error}");
    }
    lcore.run(&stop, &mut idle);
    let mut counters = lcore.counters().clone();
    counters.segments_on_small_pages = storage.flusher.segments_on_small_pages();
    counters.storage_faults = storage.flusher.storage_faults();
    counters.storage_full_recoveries = storage.flusher.storage_full_recoveries();
    let counters = counters.to_json();
    #[cfg(feature = "rdma")]
    if let Some(rdma) = lcore.rdma_counters() {
        eprintln!("RDMA {}", rdma.to_json());
    }
    for (topic, partition, log) in lcore.partitions() {
        eprintln!(
            "precursor-dataplane: {topic}-{partition}: offsets {}..{}, durable {}",
            log.log_start_offset(),
            log.log_end_offset(),
            log.durable_offset()
        );
    }
    drop(lcore);
    storage.close();
    drop(eal);
    Ok(counters)
}

/// The RDMA transport when the configuration asks for it (listening, cm thread running).
#[cfg(feature = "rdma")]
fn start_rdma(config: &Config) -> Result<Option<crate::rdma::RdmaTransport>, NodeError> {
    if !config.rdma.enabled {
        return Ok(None);
    }
    Ok(Some(crate::rdma::RdmaTransport::start(&config.rdma)?))
}

#[cfg(not(feature = "rdma"))]
fn start_rdma(config: &Config) -> Result<Option<std::convert::Infallible>, NodeError> {
    if config.rdma.enabled {
        return Err(NodeError::RdmaNotBuilt);
    }
    Ok(None)
}

/// Hands the started RDMA transport to the lcore; a description for the `ready:` line.
#[cfg(feature = "rdma")]
fn attach_rdma(rdma: Option<crate::rdma::RdmaTransport>, lcore: &mut Lcore) -> String {
    let Some(rdma) = rdma else {
        return "RDMA off".to_string();
    };
    let description = format!(
        "RDMA on {} (frames up to {} bytes)",
        rdma.address(),
        rdma.frame_bytes_max()
    );
    lcore.attach_rdma(rdma);
    description
}

#[cfg(not(feature = "rdma"))]
fn attach_rdma(_rdma: Option<std::convert::Infallible>, _lcore: &mut Lcore) -> String {
    "RDMA off".to_string()
}

/// Gives the kernel side of the TAP its address, so local sockets reach the data plane.
/// Start-up only; a failure is a warning (an operator may configure it differently).
fn configure_tap_kernel_side(config: &Config) {
    let iface = &config.port.iface;
    let mtu = config.port.mtu_bytes.to_string();
    let mut commands: Vec<Vec<&str>> = vec![vec!["link", "set", "dev", iface, "mtu", &mtu, "up"]];
    if !config.port.kernel_address.is_empty() {
        commands.insert(
            0,
            vec!["addr", "replace", &config.port.kernel_address, "dev", iface],
        );
    }
    for command in commands {
        match std::process::Command::new("ip").args(&command).output() {
            Ok(out) if out.status.success() => {}
            Ok(out) => eprintln!(
                "precursor-dataplane: warning: `ip {}` failed: {}",
                command.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            Err(e) => eprintln!("precursor-dataplane: warning: cannot run `ip`: {e}"),
        }
    }
}

pub fn mac_string(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_data_plane_per_data_directory() {
        let dir = tempfile::tempdir().unwrap();
        let first = lock_data_dir(dir.path()).expect("first lock");
        let message = lock_data_dir(dir.path()).unwrap_err().to_string();
        assert!(
            message.contains("in use by another data plane"),
            "{message}"
        );
        assert!(
            message.contains(&std::process::id().to_string()),
            "names the holder: {message}"
        );
        drop(first);
        lock_data_dir(dir.path()).expect("free again once the holder is gone");
    }

    #[test]
    fn memory_plan_without_hugepages_falls_back_with_a_warning() {
        let mut config = Config::default();
        config.dataplane.hugepages = Hugepages::Off;
        let plan = plan_memory(&config, 1).unwrap();
        assert!(!plan.dpdk_hugepages);
        assert!(eal_args(&config, &plan).iter().any(|a| a == "--no-huge"));
        assert!(
            !eal_args(&config, &plan).iter().any(|a| a == "--in-memory"),
            "refused with --no-huge"
        );
    }
}
