//! `precursor cluster up|down|status|stop|start`: a local cluster of 1 to 5 brokers on
//! this machine, each a real `precursor up` in its own network namespace (needs root).
//!
//! ```text
//!  root namespace                                   namespace <name>-node<i>
//!  +--------------------------+                     +-------------------------------------+
//!  | bridge <name>br          |  <name><i>k == eth0 | eth0 10.79.0.1<i>  (kernel stack)    |
//!  |   10.79.0.1/24 (host)    |---------------------|   Kafka :9092, metrics :9464,       |
//!  |                          |                     |   cluster listener :9290            |
//!  |                          |  <name><i>d == dp0  | dp0  no kernel address, NOARP       |
//!  |                          |---------------------|   the data plane's af_packet port,  |
//!  +--------------------------+                     |   10.79.0.2<i>:9190 (ARP by DPDK)   |
//!                                                   +-------------------------------------+
//! ```
//!
//! Two veth pairs per broker: the kernel's (control plane) and the data plane's. A single
//! veth shared by both works for traffic from other hosts, but the broker's own kernel then
//! cannot reach its own data plane (its packets leave through the veth, the data plane's
//! answers leave the same way, never back in), and the data plane receives, and drops,
//! every packet of the kernel's TCP traffic. The data plane's veth is NOARP with IPv6 off:
//! otherwise the kernel answers ARP for its own address on it too (Linux answers for any
//! local address on any interface) and hosts send Kafka traffic to the data plane's MAC.
//!
//! State: `<dir>/cluster.json` (the layout, [`ClusterLayout`]), per broker `<dir>/node-<i>/`
//! with `precursor.toml`, `precursor.log`, `precursor.pid`, `precursor.sock`, `data/`.
//!
//! Here: the commands, the layout and each broker's configuration file; `network` makes and
//! removes the bridge, namespaces and veths; `brokers` starts, finds and stops the
//! processes; `memory` decides where each broker's memory comes from.

use super::dataplane_binary;
use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Subcommand};
use precursor_config::{AcksAll, Config, Preset, REPLICATION_FACTOR_MAX};
use precursor_controlplane::admin::{self, NodeStatus, Request, Response};
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

mod brokers;
mod memory;
mod network;

use brokers::*;
use memory::*;
use network::*;

/// Where the cluster lives when no `--dir` is given.
pub const DEFAULT_DIR: &str = "/tmp/precursor-cluster";
/// The prefix of the bridge, namespace and veth names when no `--name` is given.
pub const DEFAULT_NAME: &str = "prc";
/// The brokers' subnet when no `--subnet` is given: host .1, kernels .11.., data planes .21..
pub const DEFAULT_SUBNET: &str = "10.79.0.0/24";
/// Brokers of a local cluster, at most (the replication factor's limit).
pub const NODES_MAX: u32 = REPLICATION_FACTOR_MAX as u32;
/// Longest `--name`: it prefixes interface names of at most 15 bytes.
const NAME_BYTES_MAX: usize = 8;

/// Ports on each broker's kernel address, and the data plane's UDP port.
const KAFKA_PORT: u16 = 9092;
const METRICS_PORT: u16 = 9464;
const ADMIN_PORT: u16 = 9290;
const UDP_PORT: u16 = 9190;
/// The metadata quorum's listener (Raft among the control planes), `--metadata quorum`.
const QUORUM_PORT: u16 = 9390;
/// Interface names inside each broker's namespace.
const KERNEL_IFACE: &str = "eth0";
const DATAPLANE_IFACE: &str = "dp0";

/// How long `up` (and `start`) wait for every broker's data plane to be attached, in ms.
const READY_TIMEOUT_MS: u64 = 120_000;
/// How long a broker may take to stop after SIGTERM before SIGKILL, in milliseconds (its
/// data plane flushes everything first).
const STOP_TIMEOUT_MS: u64 = 30_000;
/// How often the waits look, in milliseconds.
const POLL_MS: u64 = 100;
/// A status request of the waits and of `cluster status` gives up after this, in ms.
const STATUS_TIMEOUT_MS: u64 = 2_000;
/// Log lines quoted when a broker fails to come up.
const LOG_TAIL_LINES: usize = 15;
/// Reads of a process's command line that may come back empty (mid-exec), and the pause
/// between them, in milliseconds.
const CMDLINE_READS_MAX: u32 = 20;
const CMDLINE_REREAD_MS: u64 = 5;
/// `ip netns del` fails with EBUSY while a process that entered it is still exiting; retry
/// this long, in milliseconds.
const NETNS_DELETE_PATIENCE_MS: u64 = 5_000;

/// Memory per broker, unless told otherwise: 8 MiB segments (an active one and a spare per
/// partition) and 4095 mbufs (the balanced preset's 8191 are twice what a local broker
/// needs).
const SEGMENT_BYTES_DEFAULT: u64 = 8 << 20;
const MBUFS_DEFAULT: u32 = 4095;
/// Partitions per broker the hugepage budget leaves room for, beyond start-up.
const PARTITIONS_BUDGETED: u64 = 8;
/// DPDK memory of a broker without hugepages (`--no-huge -m`), in MiB.
const NO_HUGE_MEMORY_MB: u32 = 256;
/// As `dataplane/src/node.rs` (`plan_memory`): DPDK's own needs beyond the mbufs, a huge
/// page, and an mbuf's room at MTU 1500 (128 + 2048 rounded to 1 KiB).
const DPDK_OVERHEAD_BYTES: u64 = 64 << 20;
const HUGE_PAGE_BYTES: u64 = 2 << 20;
const MBUF_ROOM_BYTES: u64 = 2176;

#[derive(Subcommand)]
pub enum ClusterCommand {
    /// Start a local cluster (root): a bridge, and per broker a network namespace with
    /// `precursor up` in it. Prints the brokers' addresses.
    Up(UpArgs),
    /// Stop every broker and remove the namespaces, veths and bridge (keeps --dir).
    Down {
        #[command(flatten)]
        dir: DirArg,
        /// Remove the cluster's directory too (logs, configs, data).
        #[arg(long)]
        purge: bool,
    },
    /// Each broker's state (exit status 1 unless every broker runs a live data plane).
    Status {
        #[command(flatten)]
        dir: DirArg,
        /// Print it as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Stop one broker (SIGTERM, SIGKILL after 30 s); its namespace and links stay.
    Stop {
        #[command(flatten)]
        dir: DirArg,
        /// The broker's id (1..=N).
        #[arg(long, value_name = "I")]
        node: u32,
    },
    /// Start one stopped broker again and wait until its data plane is attached.
    Start {
        #[command(flatten)]
        dir: DirArg,
        /// The broker's id (1..=N).
        #[arg(long, value_name = "I")]
        node: u32,
    },
}

#[derive(Args, Clone, Debug)]
pub struct DirArg {
    /// The cluster's directory: its layout (cluster.json) and one node-<i>/ per broker.
    #[arg(long, default_value = DEFAULT_DIR)]
    dir: PathBuf,
}

#[derive(Args, Clone, Debug)]
pub struct UpArgs {
    /// Brokers (1..=5).
    #[arg(long, short, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=NODES_MAX as i64))]
    nodes: u32,
    #[command(flatten)]
    dir: DirArg,
    /// Each broker's preset (balanced, high, maximum). high and maximum poll harder: more
    /// brokers than cores then compete for them.
    #[arg(long, default_value = "balanced")]
    preset: String,
    /// Default replication factor of new topics (topics.default_replication_factor)
    /// [default: the brokers, at most 3].
    #[arg(long, value_name = "R", value_parser = clap::value_parser!(u8).range(1..))]
    replication_factor: Option<u8>,
    /// Default minimum in-sync replicas (topics.default_min_insync_replicas)
    /// [default: 2, at most R].
    #[arg(long, value_name = "M", value_parser = clap::value_parser!(u8).range(1..))]
    min_insync_replicas: Option<u8>,
    /// What acks=all waits for on every in-sync replica (cluster.acks_all).
    #[arg(long, value_enum, default_value_t = super::admin::AcksAllArg::Memory)]
    acks_all: super::admin::AcksAllArg,
    /// Prefix of the bridge (<name>br), namespaces (<name>-node<i>) and veths: 1 to 8 of
    /// a-z 0-9, starting with a letter. Distinct per cluster on a host.
    #[arg(long, default_value = DEFAULT_NAME)]
    name: String,
    /// The brokers' /24: the host gets .1 on the bridge, broker i's kernel .(10+i), its
    /// data plane .(20+i).
    #[arg(long, default_value = DEFAULT_SUBNET)]
    subnet: String,
    /// Segment size of each broker (storage.segment_bytes, a multiple of 2 MiB) [default:
    /// 8 MiB].
    #[arg(long)]
    segment_bytes: Option<u64>,
    /// Mbufs of each broker's packet pool (dataplane.mbufs) [default: 4095].
    #[arg(long)]
    mbufs: Option<u32>,
    /// Who decides leaders (cluster.metadata): `static` (the config files; leaders move by
    /// `precursor cluster leader`) or `quorum` (the metadata quorum among the control
    /// planes: leases, fencing and automatic failover).
    #[arg(long, value_enum, default_value_t = MetadataArg::Static)]
    metadata: MetadataArg,
    /// Print the cluster as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum MetadataArg {
    Static,
    Quorum,
}

/// `<dir>/cluster.json`: everything `down`, `status`, `stop` and `start` need.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ClusterLayout {
    pub name: String,
    pub dir: PathBuf,
    /// `a.b.c.0/24`.
    pub subnet: String,
    pub bridge: String,
    /// The host's address on the bridge.
    pub host_address: Ipv4Addr,
    pub preset: String,
    /// How the brokers' memory was planned, for people.
    pub memory: String,
    pub brokers: Vec<BrokerLayout>,
}

/// One broker of a [`ClusterLayout`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BrokerLayout {
    pub id: u32,
    pub netns: String,
    /// The host-side ends (on the bridge) of the kernel's and the data plane's veths.
    pub kernel_veth: String,
    pub dataplane_veth: String,
    /// The kernel's address in the namespace: Kafka, metrics, cluster listener.
    pub kernel_address: Ipv4Addr,
    /// The data plane's `port.address`; `--broker` is `dataplane_address:udp_port`.
    pub dataplane_address: Ipv4Addr,
    pub udp_port: u16,
    /// `host:port` of the Kafka listener.
    pub kafka: String,
    /// `host:port` of the control plane's cluster listener.
    pub admin: String,
    pub metrics: String,
    /// `host:port` of its metadata quorum listener (empty: `--metadata static`).
    #[serde(default)]
    pub quorum: String,
    pub admin_socket: PathBuf,
    pub config: PathBuf,
    pub log: PathBuf,
    pub pid_file: PathBuf,
    pub data_dir: PathBuf,
    pub memory_dir: PathBuf,
    pub cnc_dir: PathBuf,
    pub lcore: u32,
}

impl BrokerLayout {
    /// `--broker` of the native client.
    pub fn broker(&self) -> String {
        format!("{}:{}", self.dataplane_address, self.udp_port)
    }
}

pub fn run(command: ClusterCommand) -> Result<ExitCode> {
    require_root()?;
    match command {
        ClusterCommand::Up(args) => up(&args),
        ClusterCommand::Down { dir, purge } => down(&dir.dir, purge),
        ClusterCommand::Status { dir, json } => status(&dir.dir, json),
        ClusterCommand::Stop { dir, node } => {
            let layout = load_layout(&dir.dir)?.ok_or_else(|| no_cluster(&dir.dir))?;
            let broker = layout.broker(node)?;
            if broker_pid(broker).is_none() {
                println!("broker {node} is not running");
                return Ok(ExitCode::SUCCESS);
            }
            check_no_foreign_processes(&layout)?;
            stop_brokers(&[broker]);
            println!("stopped broker {node}");
            Ok(ExitCode::SUCCESS)
        }
        ClusterCommand::Start { dir, node } => {
            let layout = load_layout(&dir.dir)?.ok_or_else(|| no_cluster(&dir.dir))?;
            let broker = layout.broker(node)?;
            if let Some(pid) = broker_pid(broker) {
                println!("broker {node} is running already (pid {pid})");
                return Ok(ExitCode::SUCCESS);
            }
            if !netns_exists(&broker.netns) {
                bail!(
                    "the cluster's network is gone (network namespace {} does not exist; \
                     `cluster down`?): start the cluster with `precursor cluster up --dir {}`",
                    broker.netns,
                    layout.dir.display()
                );
            }
            let child = spawn_broker(broker)?;
            wait_ready(&mut [(broker, child)])?;
            println!("started broker {node}");
            Ok(ExitCode::SUCCESS)
        }
    }
}

impl ClusterLayout {
    fn broker(&self, id: u32) -> Result<&BrokerLayout> {
        self.brokers.iter().find(|b| b.id == id).ok_or_else(|| {
            anyhow!(
                "no broker {id} in the cluster in {}: its brokers are 1..={}",
                self.dir.display(),
                self.brokers.len()
            )
        })
    }

    fn bootstrap_servers(&self) -> String {
        self.brokers
            .iter()
            .map(|b| b.kafka.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }
}

fn no_cluster(dir: &Path) -> anyhow::Error {
    anyhow!(
        "no cluster in {}: start one with `precursor cluster up --dir {}`",
        dir.display(),
        dir.display()
    )
}

fn require_root() -> Result<()> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let effective_uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .map(str::to_string);
    if effective_uid.as_deref() != Some("0") {
        bail!("precursor cluster needs root: it creates network namespaces, veths and a bridge (sudo precursor cluster ...)");
    }
    Ok(())
}

fn layout_path(dir: &Path) -> PathBuf {
    dir.join("cluster.json")
}

fn load_layout(dir: &Path) -> Result<Option<ClusterLayout>> {
    let path = layout_path(dir);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(error).with_context(|| format!("cannot read {}", path.display())),
    };
    let layout = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a cluster layout", path.display()))?;
    Ok(Some(layout))
}

// ---------------------------------------------------------------------------------------
// up

fn up(args: &UpArgs) -> Result<ExitCode> {
    let dir = absolute(&args.dir.dir)?;
    if let Some(layout) = load_layout(&dir)? {
        let running: Vec<u32> = layout
            .brokers
            .iter()
            .filter(|b| broker_pid(b).is_some())
            .map(|b| b.id)
            .collect();
        if running.len() == layout.brokers.len() {
            if args.nodes as usize != layout.brokers.len() {
                eprintln!(
                    "precursor: warning: --nodes {} ignored: the cluster has {} brokers \
                     (`precursor cluster down --dir {}` first to change it)",
                    args.nodes,
                    layout.brokers.len(),
                    dir.display()
                );
            }
            if args.json {
                println!("{}", serde_json::to_string(&layout)?);
            } else {
                println!("cluster {} in {} is up already", layout.name, dir.display());
                print!("{}", summary(&layout));
            }
            return Ok(ExitCode::SUCCESS);
        }
        if !running.is_empty() {
            let stopped: Vec<String> = layout
                .brokers
                .iter()
                .filter(|b| !running.contains(&b.id))
                .map(|b| b.id.to_string())
                .collect();
            bail!(
                "the cluster in {} is partly up (broker(s) {} stopped): start them with \
                 `precursor cluster start --node I --dir {}`, or stop it all with \
                 `precursor cluster down --dir {}`",
                dir.display(),
                stopped.join(", "),
                dir.display(),
                dir.display()
            );
        }
        // Nothing runs: whatever the last run left (namespaces, bridge, shared files) goes;
        // the data directories stay and the brokers recover from them.
        check_no_foreign_processes(&layout)?;
        teardown(&layout);
    }
    let preset = Preset::parse(&args.preset).ok_or_else(|| {
        anyhow!(
            "--preset {:?}: one of {}",
            args.preset,
            Preset::NAMES.join(", ")
        )
    })?;
    check_name(&args.name)?;
    let prefix = subnet_prefix(&args.subnet)?;
    let replication_factor = args.replication_factor.unwrap_or(args.nodes.min(3) as u8);
    if u32::from(replication_factor) > args.nodes {
        bail!(
            "--replication-factor {replication_factor}: at most {}, the brokers (--nodes)",
            args.nodes
        );
    }
    let min_insync = args
        .min_insync_replicas
        .unwrap_or(2.min(replication_factor));
    if min_insync > replication_factor {
        bail!("--min-insync-replicas {min_insync}: at most the replication factor {replication_factor}");
    }
    let segment_bytes = args.segment_bytes.unwrap_or(SEGMENT_BYTES_DEFAULT);
    let mbufs = args.mbufs.unwrap_or(MBUFS_DEFAULT);
    let binary = std::env::current_exe().context("cannot find the precursor binary")?;
    let dataplane = dataplane_binary();
    let on_path = std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(&dataplane).is_file()));
    if !dataplane.is_absolute() && !on_path {
        bail!(
            "precursor-dataplane is neither beside {} nor on PATH: build it (cargo build --release --workspace)",
            binary.display()
        );
    }
    let hugepages_free = hugepages_free_bytes();
    let memory = plan_memory(args.nodes, mbufs, segment_bytes, preset, hugepages_free)?;
    let layout = layout(args, &dir, &prefix, &memory)?;
    check_network_free(&layout)?;
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let acks_all = match args.acks_all {
        super::admin::AcksAllArg::Memory => AcksAll::Memory,
        super::admin::AcksAllArg::Durable => AcksAll::Durable,
    };
    let defaults = TopicDefaults {
        replication_factor,
        min_insync,
        acks_all,
    };
    for broker in &layout.brokers {
        let node_dir = broker.config.parent().expect("a config has a directory");
        std::fs::create_dir_all(node_dir)
            .with_context(|| format!("cannot create {}", node_dir.display()))?;
        let text = broker_config(
            &layout,
            broker,
            preset,
            &memory,
            segment_bytes,
            mbufs,
            &defaults,
        );
        Config::parse(&text)
            .with_context(|| format!("the generated configuration of broker {}", broker.id))?;
        std::fs::write(&broker.config, text)
            .with_context(|| format!("cannot write {}", broker.config.display()))?;
    }
    let text = serde_json::to_string_pretty(&layout)?;
    std::fs::write(layout_path(&dir), text + "\n")
        .with_context(|| format!("cannot write {}", layout_path(&dir).display()))?;
    if let Err(error) = create_network(&layout) {
        teardown(&layout);
        return Err(error.context("cannot create the cluster's network (removed what was made)"));
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if preset != Preset::Balanced && layout.brokers.len() > cores {
        eprintln!(
            "precursor: warning: {} data planes with preset {} on {cores} core(s): their \
             lcores poll without sleeping and compete for the cores",
            layout.brokers.len(),
            args.preset
        );
    }
    let mut started = Vec::new();
    for broker in &layout.brokers {
        match spawn_broker(broker) {
            Ok(child) => started.push((broker, child)),
            Err(error) => {
                teardown(&layout);
                return Err(error.context("stopped the cluster again"));
            }
        }
    }
    if let Err(error) = wait_ready(&mut started) {
        drop(started);
        teardown(&layout);
        return Err(error.context(format!(
            "stopped the cluster again (logs, configs and data stay in {})",
            dir.display()
        )));
    }
    if args.json {
        println!("{}", serde_json::to_string(&layout)?);
    } else {
        println!(
            "cluster {} up: {} broker(s) in {}, bridge {} ({}/24)",
            layout.name,
            layout.brokers.len(),
            dir.display(),
            layout.bridge,
            layout.host_address
        );
        println!("memory: {}", layout.memory);
        print!("{}", summary(&layout));
    }
    Ok(ExitCode::SUCCESS)
}

fn absolute(dir: &Path) -> Result<PathBuf> {
    if dir.is_absolute() {
        return Ok(dir.to_path_buf());
    }
    Ok(std::env::current_dir()
        .context("cannot read the current directory")?
        .join(dir))
}

fn check_name(name: &str) -> Result<()> {
    let valid = !name.is_empty()
        && name.len() <= NAME_BYTES_MAX
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if !valid {
        bail!("--name {name:?}: 1 to {NAME_BYTES_MAX} of a-z 0-9, starting with a letter (it prefixes interface names)");
    }
    Ok(())
}

/// `a.b.c.0/24` -> `[a, b, c]`.
fn subnet_prefix(subnet: &str) -> Result<[u8; 3]> {
    let refuse = || anyhow!("--subnet {subnet:?}: a /24 such as {DEFAULT_SUBNET}");
    let (address, length) = subnet.split_once('/').ok_or_else(refuse)?;
    let address: Ipv4Addr = address.parse().map_err(|_| refuse())?;
    let [a, b, c, d] = address.octets();
    if length != "24" || d != 0 || address.is_loopback() || address.is_multicast() || a == 0 {
        return Err(refuse());
    }
    Ok([a, b, c])
}

/// The names and addresses of every broker (nothing is created).
fn layout(
    args: &UpArgs,
    dir: &Path,
    prefix: &[u8; 3],
    memory: &MemoryPlan,
) -> Result<ClusterLayout> {
    let [a, b, c] = *prefix;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
    let name = &args.name;
    let brokers = (1..=args.nodes)
        .map(|id| {
            let node_dir = dir.join(format!("node-{id}"));
            let kernel_address = Ipv4Addr::new(a, b, c, 10 + id as u8);
            let admin_socket = node_dir.join("precursor.sock");
            if admin_socket.as_os_str().len() >= 108 {
                bail!(
                    "--dir {}: the admin socket path {} is too long for a Unix socket (108 bytes)",
                    dir.display(),
                    admin_socket.display()
                );
            }
            let segments = if memory.segments_in_hugepages {
                format!("/dev/hugepages/precursor-{name}-node{id}")
            } else {
                format!("/dev/shm/precursor-{name}-node{id}-segments")
            };
            Ok(BrokerLayout {
                id,
                netns: format!("{name}-node{id}"),
                kernel_veth: format!("{name}{id}k"),
                dataplane_veth: format!("{name}{id}d"),
                kernel_address,
                dataplane_address: Ipv4Addr::new(a, b, c, 20 + id as u8),
                udp_port: UDP_PORT,
                kafka: format!("{kernel_address}:{KAFKA_PORT}"),
                admin: format!("{kernel_address}:{ADMIN_PORT}"),
                metrics: format!("http://{kernel_address}:{METRICS_PORT}/metrics"),
                quorum: match args.metadata {
                    MetadataArg::Static => String::new(),
                    MetadataArg::Quorum => format!("{kernel_address}:{QUORUM_PORT}"),
                },
                admin_socket,
                config: node_dir.join("precursor.toml"),
                log: node_dir.join("precursor.log"),
                pid_file: node_dir.join("precursor.pid"),
                data_dir: node_dir.join("data"),
                memory_dir: PathBuf::from(segments),
                cnc_dir: PathBuf::from(format!("/dev/shm/precursor-{name}-node{id}")),
                // Spread over the cores, the last first (as a single node's default).
                lcore: (cores - 1) - (id - 1) % cores,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(ClusterLayout {
        name: name.clone(),
        dir: dir.to_path_buf(),
        subnet: format!("{a}.{b}.{c}.0/24"),
        bridge: format!("{name}br"),
        host_address: Ipv4Addr::new(a, b, c, 1),
        preset: args.preset.clone(),
        memory: memory.description.clone(),
        brokers,
    })
}

/// Topic defaults every broker gets.
struct TopicDefaults {
    replication_factor: u8,
    min_insync: u8,
    acks_all: AcksAll,
}

/// One broker's configuration file.
fn broker_config(
    layout: &ClusterLayout,
    broker: &BrokerLayout,
    preset: Preset,
    memory: &MemoryPlan,
    segment_bytes: u64,
    mbufs: u32,
    topics: &TopicDefaults,
) -> String {
    let quoted = |path: &Path| format!("{:?}", path.display().to_string());
    let preset_name = match preset {
        Preset::Balanced => "balanced",
        Preset::High => "high",
        Preset::Maximum => "maximum",
    };
    let mut text = String::new();
    let _ = writeln!(
        text,
        "# Broker {} of the local cluster {:?} (`precursor cluster up`, {}).\n\
         # Network namespace {}: {KERNEL_IFACE} {} is the kernel's (Kafka, metrics, cluster\n\
         # listener); {DATAPLANE_IFACE} is the data plane's af_packet port, {}.\n\
         # On real machines: one such file per broker, `precursor up --config F` on each.\n",
        broker.id,
        layout.name,
        layout.dir.display(),
        broker.netns,
        broker.kernel_address,
        broker.broker()
    );
    let _ = writeln!(text, "preset = {preset_name:?}\n");
    let _ = writeln!(
        text,
        "[node]\ndata_dir = {}\nmemory_dir = {}\ncnc_dir = {}\n",
        quoted(&broker.data_dir),
        quoted(&broker.memory_dir),
        quoted(&broker.cnc_dir)
    );
    let hugepages = if memory.dpdk_hugepages {
        match preset {
            Preset::Maximum => "required",
            _ => "auto",
        }
    } else {
        "off"
    };
    let _ = writeln!(
        text,
        "[dataplane]\nlcore = {}\nfile_prefix = {:?}\nhugepages = {hugepages:?}\n\
         no_huge_memory_mb = {NO_HUGE_MEMORY_MB}\nmbufs = {mbufs}\n",
        broker.lcore, broker.netns
    );
    let _ = writeln!(
        text,
        "[port]\nkind = \"af_packet\"\niface = {DATAPLANE_IFACE:?}\naddress = \"{}\"\nudp_port = {}\n",
        broker.dataplane_address, broker.udp_port
    );
    let _ = writeln!(text, "[storage]\nsegment_bytes = {segment_bytes}\n");
    let _ = writeln!(
        text,
        "[controlplane]\nadmin_socket = {}\nmetrics_listen = \"{}:{METRICS_PORT}\"\n\
         cluster_listen = {:?}\n",
        quoted(&broker.admin_socket),
        broker.kernel_address,
        broker.admin
    );
    let _ = writeln!(
        text,
        "[gateway]\nlisten = {:?}\nadvertised_listener = {:?}\nbroker_id = {}\n",
        broker.kafka, broker.kafka, broker.id
    );
    let _ = writeln!(
        text,
        "[topics]\ndefault_replication_factor = {}\ndefault_min_insync_replicas = {}\n",
        topics.replication_factor, topics.min_insync
    );
    let metadata = if broker.quorum.is_empty() {
        "static"
    } else {
        "quorum"
    };
    let _ = writeln!(
        text,
        "[cluster]\nbroker_id = {}\nacks_all = {:?}\nmetadata = {metadata:?}\n",
        broker.id,
        topics.acks_all.name()
    );
    for other in &layout.brokers {
        let _ = write!(
            text,
            "[[cluster.brokers]]\nid = {}\naddress = \"{}\"\nudp_port = {}\nkafka = {:?}\nadmin = {:?}\n",
            other.id, other.dataplane_address, other.udp_port, other.kafka, other.admin
        );
        if !other.quorum.is_empty() {
            let _ = writeln!(text, "quorum = {:?}", other.quorum);
        }
        text.push('\n');
    }
    text
}

fn down(dir: &Path, purge: bool) -> Result<ExitCode> {
    let dir = absolute(dir)?;
    let Some(layout) = load_layout(&dir)? else {
        println!("no cluster in {}: nothing to stop", dir.display());
        return Ok(ExitCode::SUCCESS);
    };
    check_no_foreign_processes(&layout)?;
    let was_up = interface_exists(&layout.bridge)
        || layout
            .brokers
            .iter()
            .any(|b| netns_exists(&b.netns) || broker_pid(b).is_some());
    teardown(&layout);
    if !was_up && !purge {
        println!(
            "cluster {} in {} is down already",
            layout.name,
            dir.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    if purge {
        // Only what `up` made: the node directories (of this run and of earlier runs with
        // more brokers) and the layout, then the directory if that left it empty.
        for id in 1..=NODES_MAX {
            let node_dir = dir.join(format!("node-{id}"));
            if node_dir.join("precursor.toml").exists() {
                std::fs::remove_dir_all(&node_dir)
                    .with_context(|| format!("cannot remove {}", node_dir.display()))?;
            }
        }
        std::fs::remove_file(layout_path(&dir))
            .with_context(|| format!("cannot remove {}", layout_path(&dir).display()))?;
        let _ = std::fs::remove_dir(&dir);
        println!(
            "cluster {} stopped; removed its network and {}",
            layout.name,
            dir.display()
        );
    } else {
        println!(
            "cluster {} stopped; removed its network (logs, configs and data stay in {})",
            layout.name,
            dir.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// One broker as `cluster status` sees it.
#[derive(Debug, Serialize)]
struct BrokerState<'a> {
    #[serde(flatten)]
    layout: &'a BrokerLayout,
    /// `precursor up`'s pid, when it runs.
    pid: Option<i32>,
    dataplane_alive: bool,
    dataplane_pid: Option<u32>,
    topics: Option<u32>,
    partitions: Option<u32>,
    /// Both of its veths' host ends are up (a cut link shows false; no network: absent).
    link_up: Option<bool>,
    /// Why the data plane's state is unknown, when it is.
    problem: Option<String>,
    /// `--metadata quorum`: the quorum as this broker's voter sees it.
    quorum: Option<Box<precursor_controlplane::admin::QuorumView>>,
}

fn status(dir: &Path, json: bool) -> Result<ExitCode> {
    let dir = absolute(dir)?;
    let layout = load_layout(&dir)?.ok_or_else(|| no_cluster(&dir))?;
    let states: Vec<BrokerState> = layout
        .brokers
        .iter()
        .map(|broker| {
            let pid = broker_pid(broker);
            let mut state = BrokerState {
                layout: broker,
                pid,
                dataplane_alive: false,
                dataplane_pid: None,
                topics: None,
                partitions: None,
                link_up: [&broker.kernel_veth, &broker.dataplane_veth]
                    .iter()
                    .map(|veth| link_is_up(veth))
                    .collect::<Option<Vec<bool>>>()
                    .map(|up| up.iter().all(|&u| u)),
                problem: None,
                quorum: None,
            };
            if pid.is_none() {
                state.problem = Some("stopped".into());
                return state;
            }
            match dataplane_status(broker) {
                Ok(status) => {
                    state.dataplane_alive = status.dataplane_alive;
                    state.dataplane_pid = status.dataplane_pid;
                    state.quorum = status.quorum;
                    if status.dataplane_alive {
                        state.topics = Some(status.topics);
                        state.partitions = Some(status.partitions);
                    } else {
                        state.problem = Some("the data plane is not attached".into());
                    }
                }
                Err(error) => state.problem = Some(format!("{error:#}")),
            }
            state
        })
        .collect();
    let healthy = states.iter().all(|s| s.dataplane_alive);
    if json {
        let value = serde_json::json!({
            "name": layout.name,
            "dir": layout.dir,
            "subnet": layout.subnet,
            "bridge": layout.bridge,
            "host_address": layout.host_address,
            "brokers": states,
        });
        println!("{value}");
    } else {
        println!(
            "cluster {} in {}: {} broker(s), bridge {} ({}/24)",
            layout.name,
            layout.dir.display(),
            layout.brokers.len(),
            layout.bridge,
            layout.host_address
        );
        let rows = states
            .iter()
            .map(|s| {
                let dataplane = match (s.dataplane_alive, s.dataplane_pid) {
                    (true, Some(pid)) => format!("attached (pid {pid})"),
                    _ => s.problem.clone().unwrap_or_else(|| "-".into()),
                };
                vec![
                    s.layout.id.to_string(),
                    s.pid
                        .map_or("stopped".into(), |pid| format!("running (pid {pid})")),
                    dataplane,
                    match s.link_up {
                        Some(true) => "up",
                        Some(false) => "DOWN",
                        None => "-",
                    }
                    .into(),
                    s.topics.map_or("-".into(), |t| t.to_string()),
                    s.partitions.map_or("-".into(), |p| p.to_string()),
                    s.quorum.as_deref().map_or("-".into(), describe_quorum),
                    s.layout.broker(),
                    s.layout.kafka.clone(),
                    s.layout.admin_socket.display().to_string(),
                ]
            })
            .collect();
        print!(
            "{}",
            super::admin::table(
                &[
                    "BROKER",
                    "PRECURSOR UP",
                    "DATA PLANE",
                    "LINK",
                    "TOPICS",
                    "PARTITIONS",
                    "QUORUM",
                    "--broker",
                    "KAFKA",
                    "ADMIN SOCKET",
                ],
                rows
            )
        );
    }
    Ok(if healthy {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// One broker's view of the metadata quorum, for the status table.
fn describe_quorum(quorum: &precursor_controlplane::admin::QuorumView) -> String {
    let leader = quorum
        .leader
        .map_or("no leader".to_string(), |l| format!("leader {l}"));
    let lag: Vec<String> = quorum
        .voter_lag
        .iter()
        .map(|(id, lag)| format!("{id}:{lag}"))
        .collect();
    let mut text = format!(
        "{leader}, term {}, commit {}",
        quorum.term,
        quorum.committed.map_or("-".into(), |c| c.to_string())
    );
    if !lag.is_empty() {
        text.push_str(&format!(", lag {}", lag.join(" ")));
    }
    if !quorum.registered {
        text.push_str(", NOT REGISTERED");
    } else if quorum.lease_left_ms == 0 {
        text.push_str(", no lease");
    }
    if !quorum.fenced_brokers.is_empty() {
        text.push_str(&format!(", fenced {:?}", quorum.fenced_brokers));
    }
    text
}

/// The table `up` prints, and the lines to copy.
fn summary(layout: &ClusterLayout) -> String {
    let rows = layout
        .brokers
        .iter()
        .map(|b| {
            vec![
                b.id.to_string(),
                b.broker(),
                b.kafka.clone(),
                b.metrics.clone(),
                b.admin_socket.display().to_string(),
                b.config.display().to_string(),
            ]
        })
        .collect();
    let mut text = String::from("\n");
    text.push_str(&super::admin::table(
        &[
            "BROKER",
            "DATA PLANE (--broker)",
            "KAFKA",
            "METRICS",
            "ADMIN SOCKET",
            "CONFIG",
        ],
        rows,
    ));
    let first = &layout.brokers[0];
    let dir = layout.dir.display();
    let _ = write!(
        text,
        "\nbootstrap.servers={}\n\
         --broker {}   (the native client, broker 1)\n\
         export PRECURSOR_BROKER={} PRECURSOR_ADMIN_SOCKET={}\n\
         precursor topic create orders --partitions 3 --replication-factor {}\n\
         precursor cluster status --dir {dir}; precursor cluster down --dir {dir}\n\
         logs: {dir}/node-<i>/precursor.log\n",
        layout.bootstrap_servers(),
        first.broker(),
        first.broker(),
        first.admin_socket.display(),
        layout.brokers.len().min(3),
    );
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(nodes: u32) -> UpArgs {
        UpArgs {
            nodes,
            dir: DirArg {
                dir: PathBuf::from(DEFAULT_DIR),
            },
            preset: "balanced".into(),
            replication_factor: None,
            min_insync_replicas: None,
            acks_all: super::super::admin::AcksAllArg::Memory,
            name: DEFAULT_NAME.into(),
            subnet: DEFAULT_SUBNET.into(),
            segment_bytes: None,
            mbufs: None,
            metadata: MetadataArg::Static,
            json: false,
        }
    }

    /// Each broker's generated configuration (3 replicas, min.insync 2), parsed.
    fn configs(layout: &ClusterLayout, memory: &MemoryPlan, acks_all: AcksAll) -> Vec<Config> {
        let defaults = TopicDefaults {
            replication_factor: 3,
            min_insync: 2,
            acks_all,
        };
        layout
            .brokers
            .iter()
            .map(|broker| {
                let text = broker_config(
                    layout,
                    broker,
                    Preset::Balanced,
                    memory,
                    SEGMENT_BYTES_DEFAULT,
                    MBUFS_DEFAULT,
                    &defaults,
                );
                Config::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
            })
            .collect()
    }

    #[test]
    fn quorum_metadata_gives_every_broker_a_voter_address() {
        let memory =
            plan_memory(3, MBUFS_DEFAULT, SEGMENT_BYTES_DEFAULT, Preset::Balanced, 0).unwrap();
        let mut quorum = args(3);
        quorum.metadata = MetadataArg::Quorum;
        let layout = layout(&quorum, Path::new(DEFAULT_DIR), &[10, 79, 0], &memory).unwrap();
        for config in configs(&layout, &memory, AcksAll::Memory) {
            assert!(config.cluster.quorum_enabled());
            let voters: Vec<&str> = config
                .cluster
                .brokers
                .iter()
                .map(|b| b.quorum.as_str())
                .collect();
            assert_eq!(
                voters,
                ["10.79.0.11:9390", "10.79.0.12:9390", "10.79.0.13:9390"]
            );
        }
    }

    #[test]
    fn every_generated_broker_config_is_valid_and_names_the_whole_cluster() {
        let memory =
            plan_memory(3, MBUFS_DEFAULT, SEGMENT_BYTES_DEFAULT, Preset::Balanced, 0).unwrap();
        let layout = layout(&args(3), Path::new(DEFAULT_DIR), &[10, 79, 0], &memory).unwrap();
        for (broker, config) in
            layout
                .brokers
                .iter()
                .zip(configs(&layout, &memory, AcksAll::Durable))
        {
            assert_eq!(config.cluster.broker_id, broker.id);
            assert_eq!(config.cluster.brokers.len(), 3);
            assert_eq!(config.cluster.acks_all, AcksAll::Durable);
            assert_eq!(config.port.address, broker.dataplane_address);
            assert_eq!(config.controlplane.cluster_listen, broker.admin);
            assert_eq!(config.gateway.advertised_listener, broker.kafka);
            assert_eq!(config.topics.default_replication_factor, 3);
            assert_eq!(config.dataplane.file_prefix, broker.netns);
            assert_eq!(config.storage.segment_bytes, SEGMENT_BYTES_DEFAULT);
        }
        let names: Vec<&str> = layout.brokers.iter().map(|b| b.kafka.as_str()).collect();
        assert_eq!(
            names,
            ["10.79.0.11:9092", "10.79.0.12:9092", "10.79.0.13:9092"]
        );
        assert_eq!(layout.brokers[2].broker(), "10.79.0.23:9190");
        assert!(layout.brokers.iter().all(|b| b.kernel_veth.len() <= 15));
    }

    #[test]
    fn names_and_subnets_are_checked() {
        assert!(check_name("prc").is_ok());
        assert!(check_name("t1234567").is_ok());
        for bad in ["", "9lives", "Upper", "with-dash", "toolongname"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        assert_eq!(subnet_prefix("10.79.0.0/24").unwrap(), [10, 79, 0]);
        for bad in [
            "10.79.0.0",
            "10.79.0.0/16",
            "10.79.0.5/24",
            "127.0.0.0/24",
            "x/24",
        ] {
            assert!(subnet_prefix(bad).is_err(), "{bad:?}");
        }
    }
}
