//! The Kafka protocol gateway (DESIGN.md §1): Kafka clients (librdkafka and kcat,
//! kafka-python, the Java client, ...) speak TCP to the control plane, unchanged.
//!
//! ```text
//!  Kafka client ──TCP──> connection task (one per client, tokio)
//!                          | size-prefixed frames (tokio-util codec, <= request_bytes_max)
//!                          | header + body decoded with kafka-protocol (Kafka's JSON specs)
//!                          v
//!                        dispatch: the synchronous part of every request runs in arrival
//!                          order; what must wait (data plane, fsync, a rebalance) is a
//!                          future; answers leave in request order (FuturesOrdered)
//!        ┌───────────────┬──────────────┬──────────────────┬─────────────────────┐
//!        v               v              v                  v                     v
//!   topics.rs        produce/fetch   groups.rs          offsets.rs          producer_ids.rs
//!   Metadata,        ListOffsets     JoinGroup, Sync-   OffsetCommit/Fetch: InitProducerId:
//!   Create/Delete-   (data_path.rs:  Group, Heartbeat,  a CRC'd log file,   id blocks from a
//!   Topics: the      one thread owns Leave, Describe,   fdatasync'd before  file, fsync'd
//!   admin path and   the IPC session List: the classic  the answer (one     before use
//!   counters file    to the data     protocol, timers   writer thread,
//!                    plane)          on a 100 ms tick   group commit)
//! ```
//!
//! Every failure is a Kafka error code in the response. A request that cannot be read
//! (wrong length, unknown API key, a version not advertised, a body that does not decode)
//! closes that connection only and is counted in
//! `precursor_gateway_malformed_requests_total{reason}`. The compatibility page is
//! docs/kafka.md.

mod cluster;
mod cluster_admin;
mod committed;
mod configs;
mod connection;
mod create_partitions;
mod data_path;
mod fetch;
mod group_admin;
mod groups;
pub mod lag;
mod list_offsets;
mod log_dirs;
mod log_reader;
mod metrics;
mod offset_for_leader_epoch;
mod offsets;
mod produce;
mod producer_ids;
mod requests;
pub mod sasl;
mod time_index;
mod tls;
mod topics;
mod versions;

pub use data_path::{DataPath, DataPathError};
pub use groups::Coordinator;
pub use metrics::GatewayMetrics;
pub use offsets::{OffsetKey, OffsetStore, OffsetStoreError};
pub use producer_ids::{ProducerIdBlocks, GATEWAY_PRODUCER_ID_END};
pub use requests::{decode_request, DecodedRequest, Malformed, RequestBody, RequestMeta};
pub use tls::TlsError;
pub use versions::{supported_versions, CLUSTER_APIS, SUPPORTED_APIS};

use crate::Node;
use precursor_config::GatewayConfig;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU32;
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;

/// How often the group coordinator looks at its deadlines (sessions, rebalances), in ms.
pub const GROUP_TICK_INTERVAL_MS: u64 = 100;

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("kafka gateway listener {address}: {source}")]
    Listen {
        address: String,
        #[source]
        source: std::io::Error,
    },
    #[error("kafka gateway state directory {}: {source}", path.display())]
    StateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("kafka gateway: {0}")]
    Offsets(#[from] OffsetStoreError),
    #[error("kafka gateway producer ids: {0}")]
    ProducerIds(#[source] std::io::Error),
    #[error("kafka gateway TLS: {0}")]
    Tls(#[from] TlsError),
    #[error("kafka gateway SASL users: {0}")]
    Users(#[from] sasl::users::UserStoreError),
}

/// "Not requested" for the authorized-operations fields (Kafka's INT32_MIN).
const AUTHORIZED_OPERATIONS_OMITTED: i32 = i32::MIN;

fn str_bytes(text: &str) -> kafka_protocol::protocol::StrBytes {
    kafka_protocol::protocol::StrBytes::from_string(text.to_string())
}

/// Everything the connections of the gateway share.
pub struct Gateway {
    pub node: Arc<Node>,
    pub config: GatewayConfig,
    /// Kafka's cluster id: made at the first start and kept in the state directory; in a
    /// cluster, derived from `[cluster]` (the same on every broker).
    pub cluster_id: String,
    pub topics: topics::TopicView,
    pub groups: Mutex<Coordinator>,
    pub offsets: OffsetStore,
    pub producer_ids: Mutex<ProducerIdBlocks>,
    pub data: DataPath,
    /// Fetch's direct reads of the shared log maps.
    pub logs: log_reader::LogReader,
    pub metrics: Arc<GatewayMetrics>,
    /// Connections open now.
    pub connections: AtomicU32,
    /// The SASL users (SCRAM credentials) of this broker.
    pub users: sasl::users::UserStore,
    /// Failed SASL authentications and the locks they set.
    pub sasl_lockout: sasl::lockout::Lockout,
}

impl Gateway {
    /// Opens the state directory (offsets, producer ids, cluster id) and starts the data
    /// path thread.
    pub fn open(node: Arc<Node>) -> Result<Arc<Gateway>, GatewayError> {
        let config = node.config.gateway.clone();
        let state_dir = node.config.gateway_state_dir();
        std::fs::create_dir_all(&state_dir).map_err(|source| GatewayError::StateDir {
            path: state_dir.clone(),
            source,
        })?;
        let cluster_id = if node.config.cluster.enabled() {
            cluster::cluster_id(&node.config.cluster)
        } else {
            cluster_id(&state_dir).map_err(|source| GatewayError::StateDir {
                path: state_dir.clone(),
                source,
            })?
        };
        let offsets = OffsetStore::open(&state_dir)?;
        let id_space = producer_ids::IdSpace::of_broker(node.config.cluster.broker_id);
        let producer_ids =
            ProducerIdBlocks::open(&state_dir, id_space).map_err(GatewayError::ProducerIds)?;
        let groups = Coordinator::new(groups::GroupLimits::from_config(&config));
        let users = sasl::users::UserStore::open(&state_dir)?;
        let sasl_lockout =
            sasl::lockout::Lockout::new(sasl::lockout::LockoutPolicy::from_config(&config));
        let data = DataPath::start(&node.config);
        let metrics = node.metrics.gateway.clone();
        for broker in &node.config.cluster.brokers {
            if broker.kafka.is_empty() && broker.id != node.config.cluster.broker_id {
                eprintln!(
                    "precursor-controlplane: kafka gateway: broker {} has no Kafka listener \
                     (cluster.brokers kafka): Metadata leaves it out, and the partitions it \
                     leads are LEADER_NOT_AVAILABLE to Kafka clients",
                    broker.id
                );
            }
        }
        Ok(Arc::new(Gateway {
            topics: topics::TopicView::new(node.cnc_dir.clone()),
            logs: log_reader::LogReader::new(node.cnc_dir.clone()),
            node,
            config,
            cluster_id,
            groups: Mutex::new(groups),
            offsets,
            producer_ids: Mutex::new(producer_ids),
            data,
            metrics,
            connections: AtomicU32::new(0),
            users,
            sasl_lockout,
        }))
    }

    /// The broker id clients know this gateway by: `cluster.broker_id` in a cluster,
    /// else `gateway.broker_id`.
    pub fn broker_id(&self) -> i32 {
        match self.cluster_broker_id() {
            0 => self.config.broker_id,
            id => id as i32,
        }
    }

    /// The leader epochs of a partition's log (epoch, first offset), read from its batch
    /// headers in the shared log maps (see [`log_reader::LogReader::leader_epochs`]), and
    /// the offset the walk reached (the log end as mapped); None when the maps cannot be
    /// read.
    pub(crate) fn leader_epochs(
        &self,
        topic: &str,
        partition: i32,
        stable_below: Option<u64>,
    ) -> Option<(Vec<(i32, u64)>, u64)> {
        let generation = self
            .node
            .link
            .state()
            .generation
            .load(std::sync::atomic::Ordering::Acquire);
        let view = self.topics.get(self).ok()?;
        let paths = self.logs.prepare(generation, &view).ok()?;
        let history = self
            .logs
            .leader_epochs(&paths, topic, partition, stable_below)
            .ok()?;
        let starts = history
            .starts()
            .iter()
            .map(|start| (start.epoch, start.start_offset))
            .collect();
        Some((starts, history.walked_to()))
    }

    /// `(host, port)` of broker `id`'s Kafka listener in `[cluster]`.
    pub fn kafka_listener_of(&self, id: u32) -> Option<(String, i32)> {
        let spec = self.node.config.cluster.broker(id)?;
        let (host, port) = spec.kafka.rsplit_once(':')?;
        Some((host.to_string(), i32::from(port.parse::<u16>().ok()?)))
    }

    /// `cluster.broker_id`: 0 when this broker is not one of a cluster.
    pub fn cluster_broker_id(&self) -> u32 {
        self.node.config.cluster.broker_id
    }

    /// The `(host, port)` clients are told to connect to: this broker's `kafka` listener
    /// in `[cluster]`, else the configured advertised listener (the config allows no
    /// other when both are set), else the address this client reached us at.
    pub fn advertised(&self, local: SocketAddr) -> (String, i32) {
        let cluster = &self.node.config.cluster;
        let own_kafka = cluster.me().map_or("", |me| me.kafka.as_str());
        let listener = if own_kafka.is_empty() {
            self.config.advertised_listener.as_str()
        } else {
            own_kafka
        };
        if let Some((host, port)) = listener.rsplit_once(':') {
            if let Ok(port) = port.parse::<u16>() {
                return (host.to_string(), i32::from(port));
            }
        }
        (local.ip().to_string(), i32::from(local.port()))
    }
}

/// A bound Kafka listener: the socket and what it speaks.
pub struct Listener {
    pub socket: TcpListener,
    kind: connection::ListenerKind,
}

impl Listener {
    /// `name protocol address` for the log.
    pub fn describe(&self) -> String {
        let address = self
            .socket
            .local_addr()
            .map_or_else(|_| "?".to_string(), |a| a.to_string());
        match &self.kind.config {
            None => format!("default PLAINTEXT {address}"),
            Some(c) => format!("{} {} {address}", c.name, c.protocol.name()),
        }
    }
}

async fn bind_address(address: &str) -> Result<TcpListener, GatewayError> {
    TcpListener::bind(address)
        .await
        .map_err(|source| GatewayError::Listen {
            address: address.to_string(),
            source,
        })
}

/// Binds the gateway's TCP listeners: `gateway.listen` (PLAINTEXT) and every
/// `[[gateway.listeners]]` entry, their TLS files read now (a bad file stops the start).
pub async fn bind(config: &GatewayConfig) -> Result<Vec<Listener>, GatewayError> {
    let mut listeners = vec![Listener {
        socket: bind_address(&config.listen).await?,
        kind: connection::ListenerKind {
            config: None,
            tls: None,
        },
    }];
    for entry in &config.listeners {
        let tls = if entry.protocol.tls() {
            Some(tokio_rustls::TlsAcceptor::from(tls::server_config(entry)?))
        } else {
            None
        };
        listeners.push(Listener {
            socket: bind_address(&entry.address).await?,
            kind: connection::ListenerKind {
                config: Some(Arc::new(entry.clone())),
                tls,
            },
        });
    }
    Ok(listeners)
}

/// Serves Kafka clients on `listeners` and runs the group coordinator's timers, until the
/// task is dropped.
pub async fn serve(listeners: Vec<Listener>, gateway: Arc<Gateway>) {
    let ticker = tokio::spawn(groups::tick_forever(gateway.clone()));
    let accepting: Vec<_> = listeners
        .into_iter()
        .map(|l| {
            tokio::spawn(connection::accept_forever(
                l.socket,
                gateway.clone(),
                l.kind,
            ))
        })
        .collect();
    // Dropping this future (the supervisor aborts the task) aborts the accept loops.
    struct AbortOnDrop(Vec<tokio::task::JoinHandle<()>>);
    impl Drop for AbortOnDrop {
        fn drop(&mut self) {
            for task in &self.0 {
                task.abort();
            }
        }
    }
    let mut guard = AbortOnDrop(accepting);
    for task in &mut guard.0 {
        let _ = task.await;
    }
    ticker.abort();
}

/// Reads the cluster id from `<state_dir>/cluster_id`, or makes one (22 characters of
/// URL-safe base64 of 16 random bytes, like Kafka's) and writes it durably.
fn cluster_id(state_dir: &Path) -> std::io::Result<String> {
    let path = state_dir.join("cluster_id");
    match std::fs::read_to_string(&path) {
        Ok(text) if !text.trim().is_empty() => return Ok(text.trim().to_string()),
        Ok(_) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(error),
    }
    let bytes = random_bytes_16();
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut bits = u128::from_be_bytes(bytes);
    let mut id = String::with_capacity(22);
    for _ in 0..22 {
        id.push(ALPHABET[(bits & 63) as usize] as char);
        bits >>= 6;
    }
    write_durably(&path, id.as_bytes())?;
    Ok(id)
}

/// 16 bytes that differ between calls and processes (std's randomly keyed hasher over the
/// clock, the pid and a counter): ids, not secrets.
pub(crate) fn random_bytes_16() -> [u8; 16] {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut out = [0u8; 16];
    for half in out.chunks_mut(8) {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        hasher.write_u128(now);
        hasher.write_u32(std::process::id());
        hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
        half.copy_from_slice(&hasher.finish().to_le_bytes());
    }
    out
}

/// Writes `bytes` to `path` so that a crash leaves the old file or the new one: a
/// temporary file, fsync, rename over `path`, fsync of the directory.
pub(crate) fn write_durably(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Milliseconds since the UNIX epoch.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
