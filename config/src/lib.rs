//! Precursor's configuration: one TOML file, every field documented and defaulted.
//!
//! Loading is three steps: take the preset the file names (`balanced` when it names none),
//! lay the file's tables over it, then check every value's range. Unknown keys are refused
//! with their path; out-of-range values with their path and the reason. The embedded
//! default ([`Config::default`]) needs no file at all: a single node with a DPDK TAP port
//! (`prc0`) that kernel-socket clients on the same host can reach.

use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use thiserror::Error;

mod cluster;
mod validate;

pub use cluster::{
    topic_placement_hash, AcksAll, BrokerSpec, ClusterConfig, MetadataMode, QuorumTimings,
    BROKERS_MAX, REPLICATION_FACTOR_MAX,
};

/// How the data plane's lcore behaves when a loop iteration found no work.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdleStrategy {
    /// Spin, then yield, then park for growing intervals up to `idle_park_us_max`:
    /// friendly to a laptop, costs wake-up latency after quiet periods.
    Backoff,
    /// `sched_yield` between empty iterations.
    Yield,
    /// Never leave the CPU: lowest latency, one core at 100 %.
    Spin,
}

/// The three presets of DESIGN.md §6.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Preset {
    Balanced,
    High,
    Maximum,
}

impl Preset {
    pub fn parse(name: &str) -> Option<Preset> {
        match name {
            "balanced" => Some(Preset::Balanced),
            "high" => Some(Preset::High),
            "maximum" => Some(Preset::Maximum),
            _ => None,
        }
    }
    pub const NAMES: [&'static str; 3] = ["balanced", "high", "maximum"];
}

/// Whether DPDK gets real hugepages.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Hugepages {
    /// Use them when reserved and mounted, else run with `--no-huge` and warn.
    Auto,
    /// Refuse to start without them.
    Required,
    /// Always `--no-huge` (about 4x slower mbuf handling, measured).
    Off,
}

/// The kind of DPDK port the data plane drives.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PortKind {
    /// `net_tap`: a kernel TAP interface named `iface`, so local sockets can reach us.
    Tap,
    /// `net_af_packet` bound to an existing kernel interface `iface` (e.g. a veth end).
    AfPacket,
    /// `net_memif` on the socket `memif_socket`, as `memif_role`.
    Memif,
    /// A PCI device or SR-IOV VF by its address `pci_address` (bound to vfio-pci).
    Pci,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Preset whose values fill every field the file leaves out.
    pub preset: Preset,
    pub node: NodeConfig,
    pub dataplane: DataplaneConfig,
    pub port: PortConfig,
    pub ipc: IpcConfig,
    pub storage: StorageConfig,
    pub topics: TopicsConfig,
    pub controlplane: ControlplaneConfig,
    pub gateway: GatewayConfig,
    pub rdma: RdmaConfig,
    pub cluster: ClusterConfig,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    /// Where partition logs live on disk. Default `./data`.
    pub data_dir: PathBuf,
    /// Where active segments live in memory. Empty: `/dev/hugepages/precursor` when a
    /// hugetlbfs is mounted there, else `/dev/shm/precursor`.
    pub memory_dir: PathBuf,
    /// Where the data plane puts the files it shares with the control plane (`cnc`:
    /// command and event rings; `counters`). Empty: `/dev/shm/precursor-<file_prefix>`.
    pub cnc_dir: PathBuf,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataplaneConfig {
    /// CPU core the polling lcore runs on. Default: the last core of the machine, leaving
    /// core 0 to the kernel, the flusher and clients.
    pub lcore: Option<u32>,
    /// Real hugepages for DPDK: `auto`, `required` or `off`.
    pub hugepages: Hugepages,
    /// DPDK memory in MiB when running without hugepages (`--no-huge -m`).
    pub no_huge_memory_mb: u32,
    /// DPDK `--file-prefix`: distinct per data plane on one host.
    pub file_prefix: String,
    /// Extra EAL arguments, appended verbatim.
    pub eal_args: Vec<String>,
    /// Mbufs in the packet pool.
    pub mbufs: u32,
    /// How often the lcore flushes buffered TX, sends durable acks and does housekeeping,
    /// in microseconds.
    pub drain_interval_us: u32,
    /// What the lcore does when an iteration found no work.
    pub idle: IdleStrategy,
    /// Longest park of the `backoff` idle strategy, in microseconds.
    pub idle_park_us_max: u32,
    /// Durable acks waiting for the flusher, per lcore. A produce beyond it is answered Busy.
    pub pending_acks_max: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PortConfig {
    pub kind: PortKind,
    /// Kernel interface: the TAP to create (`tap`) or the one to bind (`af_packet`).
    pub iface: String,
    /// The data plane's own IPv4 address on this port.
    pub address: Ipv4Addr,
    /// `tap` only: the address and prefix length given to the kernel side of the TAP, so
    /// that local clients can reach `address`. Empty: leave the interface alone.
    pub kernel_address: String,
    /// UDP port of the native protocol.
    pub udp_port: u16,
    /// Largest IP packet on the link, in bytes (1500, or up to 9000 for jumbo frames).
    pub mtu_bytes: u16,
    pub rx_descriptors: u16,
    pub tx_descriptors: u16,
    /// `pci` only: the device address, e.g. `0000:3b:02.1`.
    pub pci_address: String,
    /// `memif` only: the control socket path and role (`server` or `client`).
    pub memif_socket: PathBuf,
    pub memif_role: String,
}

/// Shared-memory channels for clients on the same host (`--transport ipc`): each a
/// request ring and a response ring in `<cnc_dir>/ipc`, polled by the lcore like a NIC queue.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IpcConfig {
    /// Serve IPC channels at all.
    pub enabled: bool,
    /// Channels (clients connected at once), 1..=256.
    pub channels: u32,
    /// Bytes of each ring (a power of two, 64 KiB..=256 MiB). The largest frame is a
    /// quarter of it, so the default 4 MiB carries Kafka's 1 MB batches.
    pub ring_bytes: u32,
    /// A client whose keepalive does not move for this long is presumed dead and its
    /// channel reclaimed, in milliseconds.
    pub client_timeout_ms: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// Size of one segment, in bytes; the active one is held in (huge page) memory.
    pub segment_bytes: u64,
    /// Roll the active segment after this many milliseconds even when not full.
    pub segment_ms: u64,
    /// One sparse index entry per this many bytes of log.
    pub index_interval_bytes: u32,
    /// Delete the oldest segments while a partition is larger than this. 0: no limit.
    pub retention_bytes: u64,
    /// Delete segments whose newest record is older than this. 0: no limit.
    pub retention_ms: u64,
    /// Persist appended data at least this often, in milliseconds, even without
    /// `acks=durable` producers.
    pub flush_interval_ms: u64,
    /// ... or once this many messages are waiting.
    pub flush_messages: u64,
    /// Largest record batch accepted, in bytes.
    pub batch_bytes_max: u32,
    /// Producer ids remembered per partition for idempotence.
    pub producers_per_partition_max: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TopicsConfig {
    /// Create a topic the first time a client asks for it.
    pub auto_create: bool,
    /// Partitions of an auto-created topic.
    pub default_partitions: u16,
    /// Replicas of each partition of a topic that names none (1..=5, at most the
    /// cluster's brokers). 1 outside a cluster.
    pub default_replication_factor: u8,
    /// A produce with `acks=all` is refused (NotEnoughReplicas) while fewer replicas than
    /// this are in sync, for topics that name none (Kafka's `min.insync.replicas`).
    pub default_min_insync_replicas: u8,
    /// Topics to create at start-up when absent.
    pub create: Vec<TopicSpec>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ControlplaneConfig {
    /// Unix socket of the admin API (the CLI's `topic`, `status` commands).
    pub admin_socket: PathBuf,
    /// HTTP listener for `/metrics` (Prometheus text format) and `/healthz`.
    pub metrics_listen: String,
    /// `precursor up`: wait this long before restarting a data plane that died, in
    /// milliseconds (doubling per consecutive death, up to `restart_backoff_ms_max`).
    pub restart_backoff_ms: u64,
    pub restart_backoff_ms_max: u64,
    /// How long an admin request waits for the data plane's reply, in milliseconds.
    pub command_timeout_ms: u64,
    /// TCP `address:port` of the cluster listener: the admin API (the same JSON lines as
    /// the Unix socket) for the other brokers' control planes, which forward topic
    /// creation and deletion through it. Give it this broker's `cluster.brokers[].admin`
    /// address. Empty: no listener. No authentication: bind it to a network only the
    /// cluster's brokers reach.
    pub cluster_listen: String,
}

/// The Kafka protocol gateway of the control plane (TCP): Kafka clients (librdkafka, kcat,
/// kafka-python, the Java client) produce, fetch and use consumer groups through it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewayConfig {
    /// Serve the Kafka protocol at all.
    pub enabled: bool,
    /// TCP address the gateway listens on.
    pub listen: String,
    /// `host:port` that Metadata and FindCoordinator tell clients to connect to. Empty:
    /// the address each client connected to (right on one host and behind a plain
    /// address; set it behind NAT, a proxy or a container port mapping).
    pub advertised_listener: String,
    /// The broker id clients see (this node is every partition's leader).
    pub broker_id: i32,
    /// Where the gateway keeps its own state (committed offsets, producer id blocks, the
    /// cluster id). Empty: `<node.data_dir>/kafka-gateway`.
    pub state_dir: PathBuf,
    /// Open client connections, at most; more are closed at once.
    pub connections_max: u32,
    /// Largest request accepted (the 4-byte size prefix), in bytes; a larger one closes
    /// the connection.
    pub request_bytes_max: u32,
    /// Requests of one connection read ahead while earlier ones are still being
    /// answered (answers always go back in order).
    pub connection_requests_in_flight_max: u32,
    /// A connection that sends nothing for this long is closed, in milliseconds.
    pub connection_idle_timeout_ms: u64,
    /// Upper bound on a Fetch's `max_wait_ms` (long polling), in milliseconds.
    pub fetch_wait_ms_max: u64,
    /// Upper bound on the bytes of one Fetch response, in bytes (a client's `max_bytes`
    /// is lowered to it).
    pub fetch_response_bytes_max: u32,
    /// How often a waiting Fetch looks for new data, in microseconds.
    pub fetch_poll_interval_us: u64,
    /// Consumer groups: the session timeouts a member may ask for, in milliseconds.
    pub group_session_timeout_ms_min: u64,
    pub group_session_timeout_ms_max: u64,
    /// How long the first rebalance of an empty group waits for more members to join,
    /// in milliseconds (Kafka's `group.initial.rebalance.delay.ms`).
    pub group_initial_rebalance_delay_ms: u64,
    /// Members of one group, at most.
    pub group_members_max: u32,
    /// Longest metadata string stored with a committed offset, in bytes.
    pub offset_metadata_bytes_max: u32,
    /// More Kafka listeners (`[[gateway.listeners]]`), each with its own security
    /// protocol, served beside `listen` (the default PLAINTEXT listener). docs/security.md.
    pub listeners: Vec<ListenerConfig>,
    /// SASL lockout: this many failed authentications of one user, or from one client
    /// address, within `sasl_failure_window_ms` lock that user / address out.
    pub sasl_failures_max: u32,
    /// SASL lockout: the window failures are counted in, in milliseconds.
    pub sasl_failure_window_ms: u64,
    /// SASL lockout: how long a lock lasts after the failure that set it, in milliseconds.
    pub sasl_lockout_ms: u64,
    /// SASL lockout: an attempt while locked out is answered (an error) after this
    /// delay, in milliseconds, so a password cannot be guessed at network speed.
    pub sasl_lockout_delay_ms: u64,
    /// Principals (`User:<name>`) that may describe and alter SCRAM credentials through
    /// the Kafka API (DescribeUserScramCredentials, AlterUserScramCredentials).
    /// `precursor user` on the admin socket needs none.
    pub super_users: Vec<String>,
}

/// A Kafka listener's security protocol (Kafka's `security.protocol` names).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SecurityProtocol {
    #[serde(rename = "PLAINTEXT")]
    Plaintext,
    /// TLS (rustls): `cert_file` and `key_file`, mTLS with `client_ca_file`.
    #[serde(rename = "SSL")]
    Ssl,
    #[serde(rename = "SASL_PLAINTEXT")]
    SaslPlaintext,
    #[serde(rename = "SASL_SSL")]
    SaslSsl,
}

impl SecurityProtocol {
    /// Whether the listener speaks TLS.
    pub fn tls(self) -> bool {
        matches!(self, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl)
    }

    /// Whether the listener wants SASL before any other request.
    pub fn sasl(self) -> bool {
        matches!(
            self,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        )
    }

    /// Kafka's name.
    pub fn name(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "PLAINTEXT",
            SecurityProtocol::Ssl => "SSL",
            SecurityProtocol::SaslPlaintext => "SASL_PLAINTEXT",
            SecurityProtocol::SaslSsl => "SASL_SSL",
        }
    }
}

/// Whether a TLS listener asks clients for a certificate (Kafka's `ssl.client.auth`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    /// No client certificate asked for.
    #[default]
    None,
    /// A certificate is asked for; one that is sent must chain to `client_ca_file`.
    Requested,
    /// A certificate chaining to `client_ca_file` is required (mTLS).
    Required,
}

/// The lowest TLS version a listener accepts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum TlsVersion {
    #[default]
    #[serde(rename = "1.3")]
    Tls13,
    #[serde(rename = "1.2")]
    Tls12,
}

/// One `[[gateway.listeners]]` entry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ListenerConfig {
    /// Name in logs (Kafka's listener name), unique.
    pub name: String,
    /// TCP address:port to listen on.
    pub address: String,
    pub protocol: SecurityProtocol,
    /// `host:port` Metadata tells clients that reached this listener. Empty: the address
    /// the client connected to.
    pub advertised: String,
    /// TLS: the server's certificate chain (PEM, leaf first).
    pub cert_file: PathBuf,
    /// TLS: the server's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// TLS: client certificates must chain to one of these CAs (PEM).
    pub client_ca_file: PathBuf,
    pub client_auth: ClientAuth,
    /// TLS: "1.3" (default) or "1.2" (1.2 and 1.3).
    pub tls_min_version: TlsVersion,
    /// SASL_PLAINTEXT / SASL_SSL: the mechanisms offered, in this order (at least one).
    pub sasl_mechanisms: Vec<SaslMechanism>,
    /// SASL: a session lasts this long, then the client must re-authenticate (KIP-368,
    /// Kafka's `connections.max.reauth.ms`); a request after it closes the connection.
    /// 0: sessions do not expire. In milliseconds.
    pub connections_max_reauth_ms: u64,
}

/// A SASL mechanism a listener can offer (Kafka's names).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SaslMechanism {
    /// RFC 4616: user and password in one message (use it over TLS only).
    #[serde(rename = "PLAIN")]
    Plain,
    /// RFC 5802 / RFC 7677 with SHA-256.
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    /// RFC 5802 with SHA-512.
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
}

impl SaslMechanism {
    pub const ALL: [SaslMechanism; 3] = [
        SaslMechanism::Plain,
        SaslMechanism::ScramSha256,
        SaslMechanism::ScramSha512,
    ];

    /// Kafka's name.
    pub fn name(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }

    /// The mechanism named `name` (exactly, as Kafka compares).
    pub fn parse(name: &str) -> Option<SaslMechanism> {
        SaslMechanism::ALL.into_iter().find(|m| m.name() == name)
    }
}

impl Default for ListenerConfig {
    fn default() -> ListenerConfig {
        ListenerConfig {
            name: String::new(),
            address: String::new(),
            protocol: SecurityProtocol::Plaintext,
            advertised: String::new(),
            cert_file: PathBuf::new(),
            key_file: PathBuf::new(),
            client_ca_file: PathBuf::new(),
            client_auth: ClientAuth::None,
            tls_min_version: TlsVersion::Tls13,
            sasl_mechanisms: Vec::new(),
            connections_max_reauth_ms: 0,
        }
    }
}

/// The RDMA transport (data plane built with the `rdma` feature): native frames as
/// SEND/RECV on RC queue pairs, one-sided READs of log segments.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RdmaConfig {
    /// Listen for RDMA connections (rdma_cm). Off by default.
    pub enabled: bool,
    /// Address of the RDMA device's network interface to listen on (a RoCE NIC's, or
    /// soft-RoCE's net device); it picks the device.
    pub address: Ipv4Addr,
    /// rdma_cm port (its own port space, not a UDP or TCP port).
    pub port: u16,
    /// Receive buffers pre-posted per connection: requests a client may have in flight.
    pub recv_buffers_per_connection: u32,
    /// Bytes of each receive and send buffer: the largest frame over RDMA. At least the
    /// port's frame size (`port.mtu_bytes - 28`), a multiple of 64.
    pub buffer_bytes: u32,
    /// Connections served at once; more are rejected.
    pub connections_max: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicSpec {
    pub name: String,
    pub partitions: u16,
    /// Replicas of each partition; absent: `topics.default_replication_factor`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication_factor: Option<u8>,
    /// Absent: `topics.default_min_insync_replicas`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_insync_replicas: Option<u8>,
    /// What `acks=all` waits for on this topic (`memory` or `durable`); absent:
    /// `cluster.acks_all`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acks_all: Option<AcksAll>,
    /// A fixed assignment: one list of broker ids per partition, preferred leader first.
    /// Absent: [`ClusterConfig::replicas_for`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replicas: Vec<Vec<u32>>,
}

/// Upper bounds on configuration values, named with their units.
pub mod limits {
    pub const PARTITIONS_PER_TOPIC_MAX: u16 = 1024;
    /// Partitions one broker holds, at most (every topic's, replicas included): sizes the
    /// data plane's counters file (16 gauges each, 4 KiB of file per partition, pages
    /// used only as partitions come) and is checked at every topic creation.
    pub const PARTITIONS_PER_BROKER_MAX: u32 = 16_384;
    pub const TOPICS_MAX: usize = 4096;
    pub const SEGMENT_BYTES_MIN: u64 = 1 << 20;
    /// Kafka's own segment limit (1 GiB), well inside the u32 positions of its index format.
    pub const SEGMENT_BYTES_MAX: u64 = 1 << 30;
    pub const MTU_BYTES_MIN: u16 = 576;
    pub const MTU_BYTES_MAX: u16 = 9000;
    pub const BATCH_BYTES_MAX: u32 = 64 << 20;
    pub const RDMA_CONNECTIONS_MAX: u32 = 1024;
    pub const RDMA_RECV_BUFFERS_PER_CONNECTION_MAX: u32 = 4096;
    pub const RDMA_BUFFER_BYTES_MAX: u32 = 1 << 20;
}

impl Default for Config {
    fn default() -> Config {
        Config::preset(Preset::Balanced)
    }
}

impl Default for NodeConfig {
    fn default() -> NodeConfig {
        NodeConfig {
            data_dir: PathBuf::from("./data"),
            memory_dir: PathBuf::new(),
            cnc_dir: PathBuf::new(),
        }
    }
}

impl Default for DataplaneConfig {
    fn default() -> DataplaneConfig {
        DataplaneConfig {
            lcore: None,
            hugepages: Hugepages::Auto,
            no_huge_memory_mb: 512,
            file_prefix: "precursor".into(),
            eal_args: Vec::new(),
            mbufs: 8191,
            drain_interval_us: 100,
            idle: IdleStrategy::Backoff,
            idle_park_us_max: 1000,
            pending_acks_max: 4096,
        }
    }
}

impl Default for IpcConfig {
    fn default() -> IpcConfig {
        IpcConfig {
            enabled: true,
            channels: 8,
            ring_bytes: 4 << 20,
            client_timeout_ms: 10_000,
        }
    }
}

impl Default for PortConfig {
    fn default() -> PortConfig {
        PortConfig {
            kind: PortKind::Tap,
            iface: "prc0".into(),
            address: Ipv4Addr::new(10, 77, 0, 2),
            kernel_address: "10.77.0.1/24".into(),
            udp_port: 9190,
            mtu_bytes: 1500,
            rx_descriptors: 1024,
            tx_descriptors: 1024,
            pci_address: String::new(),
            memif_socket: PathBuf::from("/run/precursor/memif.sock"),
            memif_role: "server".into(),
        }
    }
}

impl Default for StorageConfig {
    fn default() -> StorageConfig {
        StorageConfig {
            segment_bytes: 32 << 20,
            segment_ms: 7 * 24 * 3600 * 1000,
            index_interval_bytes: 4096,
            retention_bytes: 0,
            retention_ms: 7 * 24 * 3600 * 1000,
            flush_interval_ms: 1000,
            flush_messages: 100_000,
            // Kafka's message.max.bytes: 1 MiB of records and a batch's 12 bytes of log overhead.
            batch_bytes_max: (1 << 20) + 12,
            producers_per_partition_max: 1024,
        }
    }
}

impl Default for ControlplaneConfig {
    fn default() -> ControlplaneConfig {
        ControlplaneConfig {
            admin_socket: PathBuf::from("/run/precursor/precursor.sock"),
            metrics_listen: "127.0.0.1:9464".into(),
            restart_backoff_ms: 100,
            restart_backoff_ms_max: 10_000,
            command_timeout_ms: 10_000,
            cluster_listen: String::new(),
        }
    }
}

impl Default for GatewayConfig {
    fn default() -> GatewayConfig {
        GatewayConfig {
            enabled: true,
            listen: "0.0.0.0:9092".into(),
            advertised_listener: String::new(),
            broker_id: 0,
            state_dir: PathBuf::new(),
            connections_max: 1024,
            request_bytes_max: 16 << 20,
            connection_requests_in_flight_max: 64,
            connection_idle_timeout_ms: 600_000,
            fetch_wait_ms_max: 30_000,
            fetch_response_bytes_max: 50 << 20,
            fetch_poll_interval_us: 1_000,
            group_session_timeout_ms_min: 6_000,
            group_session_timeout_ms_max: 1_800_000,
            group_initial_rebalance_delay_ms: 3_000,
            group_members_max: 1_000,
            offset_metadata_bytes_max: 4_096,
            listeners: Vec::new(),
            sasl_failures_max: 5,
            sasl_failure_window_ms: 60_000,
            sasl_lockout_ms: 60_000,
            sasl_lockout_delay_ms: 1_000,
            super_users: Vec::new(),
        }
    }
}

impl Default for RdmaConfig {
    fn default() -> RdmaConfig {
        RdmaConfig {
            enabled: false,
            address: Ipv4Addr::new(10, 0, 0, 1),
            port: 9191,
            recv_buffers_per_connection: 32,
            buffer_bytes: 9216,
            connections_max: 64,
        }
    }
}

impl Default for TopicsConfig {
    fn default() -> TopicsConfig {
        TopicsConfig {
            auto_create: true,
            default_partitions: 1,
            default_replication_factor: 1,
            default_min_insync_replicas: 1,
            create: Vec::new(),
        }
    }
}

/// Why a configuration was refused. Every message names the key.
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config key `{key}` = {value}: {reason}")]
    OutOfRange {
        key: String,
        value: String,
        reason: String,
    },
}

impl Config {
    /// The full configuration of one preset, with no file.
    pub fn preset(preset: Preset) -> Config {
        let mut config = Config {
            preset,
            node: NodeConfig::default(),
            dataplane: DataplaneConfig::default(),
            port: PortConfig::default(),
            ipc: IpcConfig::default(),
            storage: StorageConfig::default(),
            topics: TopicsConfig::default(),
            controlplane: ControlplaneConfig::default(),
            gateway: GatewayConfig::default(),
            rdma: RdmaConfig::default(),
            cluster: ClusterConfig::default(),
        };
        match preset {
            Preset::Balanced => {}
            Preset::High => {
                config.dataplane.idle = IdleStrategy::Yield;
                config.dataplane.drain_interval_us = 50;
                config.storage.flush_interval_ms = 100;
            }
            Preset::Maximum => {
                config.dataplane.idle = IdleStrategy::Spin;
                config.dataplane.hugepages = Hugepages::Required;
                config.dataplane.drain_interval_us = 20;
                config.dataplane.mbufs = 32767;
                config.storage.flush_interval_ms = 10;
            }
        }
        config
    }

    /// Loads a file: its preset, then its tables over the preset, then range checks.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(&text).map_err(|error| match error {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.to_path_buf(),
                message,
            },
            other => other,
        })
    }

    /// Parses TOML text (see [`Config::load`]).
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let parse_error = |message: String| ConfigError::Parse {
            path: PathBuf::from("<text>"),
            message,
        };
        // Deserializing the file alone first gives errors with their line and key
        // (unknown keys, wrong types); the merged value below has no positions left.
        toml::from_str::<Config>(text).map_err(|e| parse_error(one_line(&e.to_string())))?;
        let table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| parse_error(one_line(&e.to_string())))?;
        let preset = match table.get("preset") {
            None => Preset::Balanced,
            Some(toml::Value::String(name)) => {
                Preset::parse(name).ok_or_else(|| ConfigError::OutOfRange {
                    key: "preset".into(),
                    value: format!("{name:?}"),
                    reason: format!("one of {}", Preset::NAMES.join(", ")),
                })?
            }
            Some(other) => {
                return Err(ConfigError::OutOfRange {
                    key: "preset".into(),
                    value: other.to_string(),
                    reason: "a string".into(),
                })
            }
        };
        let base = toml::Table::try_from(Config::preset(preset)).expect("presets serialize");
        let merged = merge(base, table);
        let config: Config = toml::Value::Table(merged)
            .try_into()
            .map_err(|e: toml::de::Error| parse_error(e.message().to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// The effective configuration as TOML, for `precursor config show`.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("config serializes")
    }

    /// The lcore the data plane polls on: configured, else the machine's last core.
    pub fn lcore(&self) -> u32 {
        self.dataplane.lcore.unwrap_or_else(|| {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            (cores - 1) as u32
        })
    }

    /// Where the control-and-command files live (see [`NodeConfig::cnc_dir`]).
    pub fn cnc_dir(&self) -> PathBuf {
        if self.node.cnc_dir.as_os_str().is_empty() {
            PathBuf::from(format!("/dev/shm/precursor-{}", self.dataplane.file_prefix))
        } else {
            self.node.cnc_dir.clone()
        }
    }

    /// Where the Kafka gateway keeps its state (see [`GatewayConfig::state_dir`]).
    pub fn gateway_state_dir(&self) -> PathBuf {
        if self.gateway.state_dir.as_os_str().is_empty() {
            self.node.data_dir.join("kafka-gateway")
        } else {
            self.gateway.state_dir.clone()
        }
    }

    /// Where active segments live in memory (see [`NodeConfig::memory_dir`]).
    pub fn memory_dir(&self) -> PathBuf {
        if !self.node.memory_dir.as_os_str().is_empty() {
            return self.node.memory_dir.clone();
        }
        if hugetlbfs_mounted(Path::new("/dev/hugepages")) {
            PathBuf::from("/dev/hugepages/precursor")
        } else {
            PathBuf::from("/dev/shm/precursor")
        }
    }
}

/// Whether `dir` is a mounted hugetlbfs (read from /proc/mounts).
pub fn hugetlbfs_mounted(dir: &Path) -> bool {
    let Ok(mounts) = std::fs::read_to_string("/proc/mounts") else {
        return false;
    };
    mounts.lines().any(|line| {
        let mut fields = line.split_whitespace();
        let (_, target, kind) = (fields.next(), fields.next(), fields.next());
        kind == Some("hugetlbfs") && target.map(Path::new) == Some(dir)
    })
}

fn one_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && *line != "|")
        .collect::<Vec<_>>()
        .join(" ")
}

/// Lays `over` on `base`, table by table; `over` wins for every other value.
fn merge(mut base: toml::Table, over: toml::Table) -> toml::Table {
    for (key, value) in over {
        match (base.remove(&key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => {
                base.insert(key, toml::Value::Table(merge(b, o)));
            }
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
    base
}
