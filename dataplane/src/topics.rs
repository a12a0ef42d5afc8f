//! Topics: the persisted manifest, the lcore's table, and the admin thread that creates
//! partitions off the lcore.
//!
//! A topic has a stable 16-bit id, persisted in `<data_dir>/topics.manifest` (one line per
//! topic: `id name partitions`), so that [`PartitionHandle`]s stay valid across restarts.
//! Creating a topic makes directories and files — system calls — so the lcore never does it:
//! it queues a [`CreateTopic`] for the admin thread, answers `TopicNotReady` meanwhile (as
//! Kafka answers LEADER_NOT_AVAILABLE while auto-creating), and installs the finished
//! [`Topic`] on its next drain. Both queues are bounded and lock-free.

use crate::log::{FlusherHandle, LogConfig, PartitionLog};
use crate::replica::{BrokerSet, Replica};
use crossbeam_queue::ArrayQueue;
use precursor_config::limits::PARTITIONS_PER_BROKER_MAX;
use precursor_protocol::command::{TopicReplication, ACKS_ALL_DURABLE, ACKS_ALL_MEMORY};
use precursor_protocol::frame::{is_valid_topic_name, PartitionHandle, TOPIC_NAME_BYTES_MAX};
use precursor_protocol::replication::topic_key;
use precursor_protocol::topic_config::{CompressionType, ManifestOption, TopicConfigs};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Topics one node holds at most (ids are 16 bits; the manifest stays small).
pub const TOPICS_MAX: usize = 4096;
/// Requests (create, delete, alter) queued between the lcore and the admin thread.
pub const ADMIN_QUEUE_DEPTH: usize = 64;
const MANIFEST_FILE: &str = "topics.manifest";
const ADMIN_IDLE_SLEEP: Duration = Duration::from_millis(1);

/// A topic name held inline, so a creation request crosses threads without allocating.
#[derive(Copy, Clone)]
pub struct TopicName {
    bytes: [u8; TOPIC_NAME_BYTES_MAX],
    len: u8,
}

impl TopicName {
    pub fn new(name: &str) -> Option<TopicName> {
        if !is_valid_topic_name(name) {
            return None;
        }
        let mut bytes = [0u8; TOPIC_NAME_BYTES_MAX];
        bytes[..name.len()].copy_from_slice(name.as_bytes());
        Some(TopicName {
            bytes,
            len: name.len() as u8,
        })
    }
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.bytes[..self.len as usize]).expect("validated ASCII")
    }
}

impl std::fmt::Debug for TopicName {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

/// One topic of the manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicEntry {
    pub id: u16,
    pub name: String,
    pub partitions: u16,
    /// Per-topic retention; `None` takes the broker's `[storage]` value, `Some(0)` keeps
    /// forever by that measure (as 0 does in `[storage]`).
    pub retention_ms: Option<u64>,
    pub retention_bytes: Option<u64>,
    /// As created; 0 fields take the broker's defaults at open.
    pub replication: TopicReplication,
    /// `max.message.bytes`: the largest batch a producer may append (`None`:
    /// `storage.batch_bytes_max`).
    pub max_message_bytes: Option<u32>,
    /// `compression.type`, which the Kafka gateway applies (`None`: producer).
    pub compression_type: Option<CompressionType>,
}

impl TopicEntry {
    /// The log configuration of this topic's partitions: the broker's, with this topic's
    /// retention where it has its own.
    pub fn log_config(&self, broker: &LogConfig) -> LogConfig {
        let mut log = broker.clone();
        // 0 is "no limit", never a limit of zero (which would delete every sealed segment).
        if let Some(ms) = self.retention_ms {
            log.retention_ms = (ms > 0).then_some(ms);
        }
        if let Some(bytes) = self.retention_bytes {
            log.retention_bytes = (bytes > 0).then_some(bytes);
        }
        log
    }

    /// The topic's dynamic configuration as Kafka names it.
    pub fn configs(&self) -> TopicConfigs {
        let kafka = |v: u64| if v == 0 { -1 } else { v as i64 };
        TopicConfigs {
            retention_ms: self.retention_ms.map(kafka),
            retention_bytes: self.retention_bytes.map(kafka),
            max_message_bytes: self.max_message_bytes,
            compression_type: self.compression_type,
            min_insync_replicas: (self.replication.min_insync != 0)
                .then_some(self.replication.min_insync),
        }
    }

    /// Replaces the topic's dynamic configuration.
    pub fn set_configs(&mut self, configs: &TopicConfigs) {
        use precursor_protocol::topic_config::retention_as_log;
        self.retention_ms = configs.retention_ms.map(retention_as_log);
        self.retention_bytes = configs.retention_bytes.map(retention_as_log);
        self.max_message_bytes = configs.max_message_bytes;
        self.compression_type = configs.compression_type;
        self.replication.min_insync = configs.min_insync_replicas.unwrap_or(0);
    }

    /// The options of the topic's manifest line after `id name partitions`.
    fn options(&self) -> Vec<String> {
        let r = self.replication;
        let mut options: Vec<String> = Vec::new();
        options.extend(
            self.retention_ms
                .map(|v| ManifestOption::RetentionMs(v).to_string()),
        );
        options.extend(
            self.retention_bytes
                .map(|v| ManifestOption::RetentionBytes(v).to_string()),
        );
        if r.factor != 0 {
            options.push(format!("replication_factor={}", r.factor));
        }
        if r.min_insync != 0 {
            options.push(ManifestOption::MinInsyncReplicas(r.min_insync).to_string());
        }
        match r.acks_all {
            ACKS_ALL_MEMORY => options.push("acks_all=memory".into()),
            ACKS_ALL_DURABLE => options.push("acks_all=durable".into()),
            _ => {}
        }
        options.extend(
            self.max_message_bytes
                .map(|v| ManifestOption::MaxMessageBytes(v).to_string()),
        );
        options.extend(
            self.compression_type
                .map(|v| ManifestOption::Compression(v).to_string()),
        );
        options
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TopicError {
    #[error("topic manifest {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("topic manifest {path} line {line}: {reason}")]
    Corrupt {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("topic {name:?}: {source}")]
    Log {
        name: String,
        source: crate::log::LogError,
    },
    #[error("no topic id left (ids are 16 bits and never reused)")]
    TooManyTopics,
    #[error(
        "{asked} more partition(s) would make {total} on this broker, more than it holds \
         (PARTITIONS_PER_BROKER_MAX = {max}); delete topics or spread them over more brokers"
    )]
    TooManyPartitions { asked: u32, total: u32, max: u32 },
    #[error("topic {0:?} is not a valid name")]
    InvalidName(String),
    #[error("topic {0:?} does not exist")]
    Unknown(String),
    #[error("{0}")]
    Replication(String),
}

/// The persisted list of topics: `<data_dir>/topics.manifest`, written whole (write, fsync,
/// rename, fsync the directory) on every change.
///
/// ```text
/// next_id 7
/// 0 orders 4
/// 3 quotes 1 retention_ms=3600000 retention_bytes=1073741824
/// ```
/// Ids grow and are never reused (a client holding a deleted topic's handle must not write
/// into a new topic), so `next_id` is persisted too.
pub struct Manifest {
    path: PathBuf,
    next_id: u32,
    entries: Vec<TopicEntry>,
}

impl Manifest {
    pub fn load(data_dir: &Path) -> Result<Manifest, TopicError> {
        let path = data_dir.join(MANIFEST_FILE);
        let io = |source| TopicError::Io {
            path: path.clone(),
            source,
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(io(e)),
        };
        let mut entries: Vec<TopicEntry> = Vec::new();
        let mut next_id = 0u32;
        for (i, line) in text.lines().enumerate() {
            let corrupt = |reason: &str| TopicError::Corrupt {
                path: path.clone(),
                line: i + 1,
                reason: reason.into(),
            };
            let fields: Vec<&str> = line.split_whitespace().collect();
            if let ["next_id", id] = fields[..] {
                next_id = id.parse().map_err(|_| corrupt("bad next_id"))?;
                continue;
            }
            let [id, name, partitions, ref options @ ..] = fields[..] else {
                return Err(corrupt("expected `id name partitions [key=value ...]`"));
            };
            let mut entry = TopicEntry {
                id: id.parse().map_err(|_| corrupt("bad id"))?,
                name: name.to_string(),
                partitions: partitions
                    .parse()
                    .map_err(|_| corrupt("bad partition count"))?,
                retention_ms: None,
                retention_bytes: None,
                replication: TopicReplication::default(),
                max_message_bytes: None,
                compression_type: None,
            };
            for option in options {
                let small = |v: &str| v.parse::<u8>().map_err(|_| corrupt("bad option value"));
                match ManifestOption::parse(option).map_err(corrupt)? {
                    Some(ManifestOption::RetentionMs(v)) => entry.retention_ms = Some(v),
                    Some(ManifestOption::RetentionBytes(v)) => entry.retention_bytes = Some(v),
                    Some(ManifestOption::MinInsyncReplicas(v)) => entry.replication.min_insync = v,
                    Some(ManifestOption::MaxMessageBytes(v)) => entry.max_message_bytes = Some(v),
                    Some(ManifestOption::Compression(v)) => entry.compression_type = Some(v),
                    None => match option.split_once('=') {
                        Some(("replication_factor", v)) => entry.replication.factor = small(v)?,
                        Some(("acks_all", "memory")) => {
                            entry.replication.acks_all = ACKS_ALL_MEMORY
                        }
                        Some(("acks_all", "durable")) => {
                            entry.replication.acks_all = ACKS_ALL_DURABLE
                        }
                        _ => return Err(corrupt("unknown topic option")),
                    },
                }
            }
            if !is_valid_topic_name(name) || entry.partitions == 0 {
                return Err(corrupt("bad topic name or partition count"));
            }
            if entries
                .iter()
                .any(|e| e.id == entry.id || e.name == entry.name)
            {
                return Err(corrupt("topic id or name listed twice"));
            }
            next_id = next_id.max(entry.id as u32 + 1);
            entries.push(entry);
        }
        Ok(Manifest {
            path,
            next_id,
            entries,
        })
    }

    pub fn entries(&self) -> &[TopicEntry] {
        &self.entries
    }

    pub fn find(&self, name: &str) -> Option<&TopicEntry> {
        self.entries.iter().find(|e| e.name == name)
    }

    /// Adds a topic with the next id and persists the manifest.
    pub fn add(&mut self, name: &str, partitions: u16) -> Result<TopicEntry, TopicError> {
        self.add_with(name, partitions, None, None, TopicReplication::default())
    }

    /// Adds a topic with its own retention and persists the manifest.
    pub fn add_with(
        &mut self,
        name: &str,
        partitions: u16,
        retention_ms: Option<u64>,
        retention_bytes: Option<u64>,
        replication: TopicReplication,
    ) -> Result<TopicEntry, TopicError> {
        if !is_valid_topic_name(name) {
            return Err(TopicError::InvalidName(name.into()));
        }
        assert!(
            self.find(name).is_none(),
            "caller checks for an existing topic"
        );
        assert!(partitions > 0);
        if self.entries.len() >= TOPICS_MAX || self.next_id > u16::MAX as u32 {
            return Err(TopicError::TooManyTopics);
        }
        self.check_partitions_room(u32::from(partitions))?;
        let entry = TopicEntry {
            id: self.next_id as u16,
            name: name.into(),
            partitions,
            retention_ms,
            retention_bytes,
            replication,
            max_message_bytes: None,
            compression_type: None,
        };
        self.entries.push(entry.clone());
        self.next_id += 1;
        if let Err(e) = self.persist() {
            self.entries.pop();
            self.next_id -= 1;
            return Err(e);
        }
        Ok(entry)
    }

    /// Refused when `more` partitions would take the broker past
    /// [`PARTITIONS_PER_BROKER_MAX`].
    pub fn check_partitions_room(&self, more: u32) -> Result<(), TopicError> {
        let held: u32 = self.entries.iter().map(|e| u32::from(e.partitions)).sum();
        let total = held + more;
        if total > PARTITIONS_PER_BROKER_MAX {
            return Err(TopicError::TooManyPartitions {
                asked: more,
                total,
                max: PARTITIONS_PER_BROKER_MAX,
            });
        }
        Ok(())
    }

    /// Removes a topic and persists the manifest (its id stays used).
    pub fn remove(&mut self, name: &str) -> Result<TopicEntry, TopicError> {
        let at = self
            .entries
            .iter()
            .position(|e| e.name == name)
            .ok_or_else(|| TopicError::Unknown(name.into()))?;
        let entry = self.entries.remove(at);
        if let Err(e) = self.persist() {
            self.entries.insert(at, entry);
            return Err(e);
        }
        Ok(entry)
    }

    /// Changes a topic's retention (`Some` values only) and persists the manifest.
    pub fn alter(
        &mut self,
        name: &str,
        retention_ms: Option<u64>,
        retention_bytes: Option<u64>,
    ) -> Result<TopicEntry, TopicError> {
        let at = self
            .entries
            .iter()
            .position(|e| e.name == name)
            .ok_or_else(|| TopicError::Unknown(name.into()))?;
        let before = self.entries[at].clone();
        let entry = &mut self.entries[at];
        if retention_ms.is_some() {
            entry.retention_ms = retention_ms;
        }
        if retention_bytes.is_some() {
            entry.retention_bytes = retention_bytes;
        }
        let after = entry.clone();
        if let Err(e) = self.persist() {
            self.entries[at] = before;
            return Err(e);
        }
        Ok(after)
    }

    /// Records that topic `name` has `partitions` partitions now (more than before) and
    /// persists the manifest. The commit point of a grow: the new partitions' logs are
    /// made before it, and exist for a restart only once it is written.
    pub fn grow(&mut self, name: &str, partitions: u16) -> Result<TopicEntry, TopicError> {
        let at = self
            .entries
            .iter()
            .position(|e| e.name == name)
            .ok_or_else(|| TopicError::Unknown(name.into()))?;
        let before = self.entries[at].partitions;
        assert!(partitions > before, "partitions only grow");
        self.entries[at].partitions = partitions;
        if let Err(e) = self.persist() {
            self.entries[at].partitions = before;
            return Err(e);
        }
        Ok(self.entries[at].clone())
    }

    /// Replaces a topic's dynamic configuration and persists the manifest.
    pub fn set_configs(
        &mut self,
        name: &str,
        configs: &TopicConfigs,
    ) -> Result<TopicEntry, TopicError> {
        let at = self
            .entries
            .iter()
            .position(|e| e.name == name)
            .ok_or_else(|| TopicError::Unknown(name.into()))?;
        let before = self.entries[at].clone();
        self.entries[at].set_configs(configs);
        let after = self.entries[at].clone();
        if let Err(e) = self.persist() {
            self.entries[at] = before;
            return Err(e);
        }
        Ok(after)
    }

    fn persist(&self) -> Result<(), TopicError> {
        let io = |source| TopicError::Io {
            path: self.path.clone(),
            source,
        };
        let tmp = self.path.with_extension("manifest.tmp");
        let mut file = std::fs::File::create(&tmp).map_err(io)?;
        writeln!(file, "next_id {}", self.next_id).map_err(io)?;
        for e in &self.entries {
            write!(file, "{} {} {}", e.id, e.name, e.partitions).map_err(io)?;
            for option in e.options() {
                write!(file, " {option}").map_err(io)?;
            }
            writeln!(file).map_err(io)?;
        }
        file.sync_all().map_err(io)?;
        std::fs::rename(&tmp, &self.path).map_err(io)?;
        let dir = self.path.parent().expect("manifest lives in a directory");
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io)?;
        Ok(())
    }
}

/// A topic with its open partition logs, owned by the lcore.
pub struct Topic {
    pub id: u16,
    pub name: String,
    /// How brokers name this topic to each other (replication).
    pub key: u64,
    pub partitions: Vec<PartitionLog>,
    /// Each partition's replication state (one replica outside a cluster).
    pub replicas: Vec<Replica>,
    /// Each partition's counters in the control plane's page (made on install).
    pub counters: Vec<Option<crate::control::PartitionCounters>>,
    /// What a configuration key left out of a [`TopicConfigs`] falls back to.
    pub defaults: BrokerDefaults,
}

/// The broker's values of the settings a topic may override.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct BrokerDefaults {
    pub retention_ms: Option<u64>,
    pub retention_bytes: Option<u64>,
    /// `storage.batch_bytes_max`: also the most `max.message.bytes` may be.
    pub batch_bytes_max: u32,
    /// `topics.default_min_insync_replicas`.
    pub min_insync: u8,
}

/// How this broker places and replicates partitions: `[cluster]` and the `[topics]`
/// defaults. Outside a cluster every partition has one replica.
#[derive(Clone, Debug, Default)]
pub struct ReplicationPolicy {
    pub cluster: precursor_config::ClusterConfig,
    pub default_replication_factor: u8,
    pub default_min_insync: u8,
    /// Fixed assignments of `[[topics.create]]` (`replicas`), by topic name.
    pub fixed: HashMap<String, Vec<Vec<u32>>>,
}

impl ReplicationPolicy {
    pub fn from_config(config: &precursor_config::Config) -> ReplicationPolicy {
        ReplicationPolicy {
            cluster: config.cluster.clone(),
            default_replication_factor: config.topics.default_replication_factor,
            default_min_insync: config.topics.default_min_insync_replicas,
            fixed: config
                .topics
                .create
                .iter()
                .filter(|spec| !spec.replicas.is_empty())
                .map(|spec| (spec.name.clone(), spec.replicas.clone()))
                .collect(),
        }
    }

    fn me(&self) -> u8 {
        self.cluster.broker_id as u8
    }

    /// Partition `partition`'s replication state as this broker starts it: replicas from
    /// the fixed assignment or [`precursor_config::ClusterConfig::replicas_for`], the
    /// preferred (first) replica leading — or the one the control plane set last
    /// (`<partition dir>/leader`).
    pub fn replica(
        &self,
        entry: &TopicEntry,
        partition: u16,
        log: &mut PartitionLog,
    ) -> Result<Replica, TopicError> {
        let key = topic_key(&entry.name);
        let r = entry.replication;
        let factor = if r.factor == 0 {
            self.default_replication_factor
        } else {
            r.factor
        };
        if !self.cluster.enabled() || factor <= 1 {
            return Ok(Replica::single(key, partition, self.me()));
        }
        // A partition added after creation (CreatePartitions) past the fixed assignment is
        // placed like any other.
        let ids = match self
            .fixed
            .get(&entry.name)
            .and_then(|fixed| fixed.get(partition as usize))
        {
            Some(fixed) => fixed.clone(),
            None => self.cluster.replicas_for(&entry.name, partition, factor),
        };
        if ids.len() < factor as usize {
            return Err(TopicError::Replication(format!(
                "topic {:?} asks for {factor} replicas, the cluster has {} brokers",
                entry.name,
                ids.len()
            )));
        }
        let min_insync = if r.min_insync == 0 {
            self.default_min_insync.min(factor)
        } else {
            r.min_insync
        };
        let acks_all_durable = match r.acks_all {
            ACKS_ALL_DURABLE => true,
            ACKS_ALL_MEMORY => false,
            _ => self.cluster.acks_all == precursor_config::AcksAll::Durable,
        };
        let replicas = BrokerSet::from_ids(&ids);
        let dir = log.dir().to_path_buf();
        let io = |source| TopicError::Io {
            path: dir.clone(),
            source,
        };
        // The leadership the control plane set last, else the preferred replica. In quorum
        // mode nobody: the metadata quorum names the leader (SetLeader), never the config
        // nor a file a fenced incarnation wrote.
        let quorum = self.cluster.quorum_enabled();
        let set = read_leader_file(&dir).map_err(io)?;
        let leader = match set {
            _ if quorum => 0,
            Some((leader, _)) if replicas.contains(leader as u8) => leader as u8,
            _ => replicas.ids()[0],
        };
        let checkpoint = crate::log::EpochHistory::read_checkpoint(&dir).map_err(io)?;
        let known = log
            .epochs()
            .last_epoch()
            .max(checkpoint.last_epoch())
            .max(set.map(|(_, epoch)| epoch))
            .unwrap_or(0);
        log.epochs().write_checkpoint(&dir).map_err(io)?;
        let mut replica = Replica::new(
            key,
            partition,
            replicas,
            min_insync,
            acks_all_durable,
            self.me(),
            leader,
            known,
        );
        // A designated leader asks the other replicas first (one may lead at a newer
        // epoch, set while this broker was down); then it leads at a new epoch, so a
        // follower holding a tail this leader lost finds the divergence and cuts it.
        if leader == self.me() && !quorum {
            replica.start_probing();
        }
        Ok(replica)
    }
}

impl Topic {
    /// Opens (recovering) or creates every partition log of `entry`.
    pub fn open(
        entry: &TopicEntry,
        log: &LogConfig,
        flusher: &FlusherHandle,
        policy: &ReplicationPolicy,
    ) -> Result<Topic, TopicError> {
        let broker = log;
        let log = entry.log_config(broker);
        let mut partitions = (0..entry.partitions)
            .map(|p| PartitionLog::open(&log, &entry.name, p, flusher))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|source| TopicError::Log {
                name: entry.name.clone(),
                source,
            })?;
        let replicas = partitions
            .iter_mut()
            .enumerate()
            .map(|(p, log)| policy.replica(entry, p as u16, log))
            .collect::<Result<Vec<_>, _>>()?;
        for partition in &mut partitions {
            partition.set_message_bytes_max(entry.max_message_bytes);
        }
        Ok(Topic {
            defaults: BrokerDefaults {
                retention_ms: broker.retention_ms,
                retention_bytes: broker.retention_bytes,
                batch_bytes_max: broker.batch_bytes_max,
                min_insync: policy.default_min_insync,
            },
            id: entry.id,
            name: entry.name.clone(),
            key: topic_key(&entry.name),
            counters: vec![None; partitions.len()],
            partitions,
            replicas,
        })
    }
}

/// The partitions a grow adds to a topic, opened by the admin thread, and room for the
/// whole topic, so that the lcore appends them without allocating.
pub struct GrownPartitions {
    /// The new partitions' logs and replication state, in partition order.
    pub logs: Vec<PartitionLog>,
    pub replicas: Vec<Replica>,
    /// Empty, with capacity for every partition of the grown topic.
    room_logs: Vec<PartitionLog>,
    room_replicas: Vec<Replica>,
    room_counters: Vec<Option<crate::control::PartitionCounters>>,
}

impl Topic {
    /// Appends the partitions of a grow (numbered from this topic's count on); the existing
    /// ones are moved, not touched. No allocation: the room was made by the admin thread.
    /// Returns the first new partition's number.
    pub fn grow(&mut self, grown: GrownPartitions) -> u16 {
        let GrownPartitions {
            mut logs,
            mut replicas,
            mut room_logs,
            mut room_replicas,
            mut room_counters,
        } = grown;
        let first = self.partitions.len();
        let total = first + logs.len();
        assert_eq!(logs.len(), replicas.len());
        assert!(room_logs.capacity() >= total && room_replicas.capacity() >= total);
        assert!(room_counters.capacity() >= total);
        room_logs.append(&mut self.partitions);
        room_logs.append(&mut logs);
        room_replicas.append(&mut self.replicas);
        room_replicas.append(&mut replicas);
        room_counters.append(&mut self.counters);
        room_counters.resize(total, None);
        self.partitions = room_logs;
        self.replicas = room_replicas;
        self.counters = room_counters;
        assert_eq!(self.partitions.len(), total);
        assert_eq!(self.replicas.len(), total);
        first as u16
    }
}

/// The lcore's view of every topic: by id for the data path, by name for Metadata.
/// Sized for every topic id and [`TOPICS_MAX`] names at start-up, so installing or
/// removing a topic never allocates.
pub struct TopicTable {
    by_id: Vec<Option<Topic>>,
    by_name: HashMap<String, u16>,
    /// Topic keys (replication's cross-broker names) to ids.
    by_key: HashMap<u64, u16>,
    /// Ids of installed topics, for iterating without scanning the whole id space.
    live: Vec<u16>,
}

/// Topic ids are 16 bits.
const TOPIC_IDS: usize = 1 << 16;

impl TopicTable {
    pub fn new() -> TopicTable {
        let mut by_id = Vec::with_capacity(TOPIC_IDS);
        by_id.resize_with(TOPIC_IDS, || None);
        TopicTable {
            by_id,
            by_name: HashMap::with_capacity(TOPICS_MAX),
            by_key: HashMap::with_capacity(TOPICS_MAX),
            live: Vec::with_capacity(TOPICS_MAX),
        }
    }

    /// Installs `topic` under `key` (its name, made by the caller so that installing on the
    /// lcore allocates nothing: the admin thread builds it).
    pub fn install(&mut self, topic: Topic, key: String) {
        let id = topic.id as usize;
        assert!(self.by_id[id].is_none(), "topic id {id} installed twice");
        assert_eq!(key, topic.name);
        let previous = self.by_name.insert(key, topic.id);
        assert!(previous.is_none(), "topic {:?} installed twice", topic.name);
        // Within the capacity reserved at start-up: no allocation on the lcore.
        self.by_key.insert(topic.key, topic.id);
        assert!(
            self.live.len() < TOPICS_MAX,
            "the manifest admits at most TOPICS_MAX topics"
        );
        self.live.push(topic.id);
        self.by_id[id] = Some(topic);
    }

    /// Takes a topic out with its key (both go to the admin thread, which frees them).
    pub fn remove(&mut self, name: &str) -> Option<(Topic, String)> {
        let (key, id) = self.by_name.remove_entry(name)?;
        let topic = self.by_id[id as usize]
            .take()
            .expect("by_name and by_id agree");
        self.by_key.remove(&topic.key);
        let at = self
            .live
            .iter()
            .position(|live| *live == id)
            .expect("installed");
        self.live.swap_remove(at);
        Some((topic, key))
    }

    pub fn by_name(&self, name: &str) -> Option<&Topic> {
        let id = *self.by_name.get(name)?;
        self.by_id[id as usize].as_ref()
    }

    pub fn by_id(&self, id: u16) -> Option<&Topic> {
        self.by_id[id as usize].as_ref()
    }

    pub fn by_name_mut(&mut self, name: &str) -> Option<&mut Topic> {
        let id = *self.by_name.get(name)?;
        self.by_id[id as usize].as_mut()
    }

    #[inline]
    pub fn partition_mut(&mut self, handle: PartitionHandle) -> Option<&mut PartitionLog> {
        self.by_id
            .get_mut(handle.topic_id() as usize)?
            .as_mut()?
            .partitions
            .get_mut(handle.partition() as usize)
    }

    #[inline]
    pub fn partition(&self, handle: PartitionHandle) -> Option<&PartitionLog> {
        self.by_id
            .get(handle.topic_id() as usize)?
            .as_ref()?
            .partitions
            .get(handle.partition() as usize)
    }

    /// Partition `partition` of the topic brokers call `key`.
    #[inline]
    pub fn by_key(&self, key: u64, partition: u16) -> Option<PartitionHandle> {
        let id = *self.by_key.get(&key)?;
        let topic = self.by_id[id as usize].as_ref()?;
        ((partition as usize) < topic.partitions.len()).then(|| PartitionHandle::new(id, partition))
    }

    /// A partition's log and replication state together.
    #[inline]
    /// The handle of partition `partition` of topic `name` (a command names topics by
    /// name; ids are per broker), or why there is none.
    pub fn handle_by_name(
        &self,
        name: &str,
        partition: u16,
    ) -> Result<PartitionHandle, &'static str> {
        let topic = self.by_name(name).ok_or("no such topic")?;
        let handle = PartitionHandle::new(topic.id, partition);
        self.replicated(handle).ok_or("no such partition")?;
        Ok(handle)
    }

    pub fn replicated_mut(
        &mut self,
        handle: PartitionHandle,
    ) -> Option<(&mut PartitionLog, &mut Replica)> {
        let topic = self.by_id.get_mut(handle.topic_id() as usize)?.as_mut()?;
        let p = handle.partition() as usize;
        Some((topic.partitions.get_mut(p)?, topic.replicas.get_mut(p)?))
    }

    #[inline]
    pub fn replicated(&self, handle: PartitionHandle) -> Option<(&PartitionLog, &Replica)> {
        let topic = self.by_id.get(handle.topic_id() as usize)?.as_ref()?;
        let p = handle.partition() as usize;
        Some((topic.partitions.get(p)?, topic.replicas.get(p)?))
    }

    pub fn topics(&self) -> impl Iterator<Item = &Topic> {
        self.live
            .iter()
            .filter_map(|id| self.by_id[*id as usize].as_ref())
    }

    pub fn for_each_mut(&mut self, mut f: impl FnMut(&mut Topic)) {
        for id in &self.live {
            f(self.by_id[*id as usize]
                .as_mut()
                .expect("live ids are installed"));
        }
    }

    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

impl Default for TopicTable {
    fn default() -> TopicTable {
        TopicTable::new()
    }
}

/// Who asked for a topic change, so the answer goes back to them.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// A client's Metadata request with auto-creation: nobody waits for a reply; the
    /// client asks again and finds the topic installed.
    AutoCreate,
    /// A control-plane command: its correlation id gets exactly one event.
    Command(u64),
}

/// Work the lcore hands to the admin thread (everything that touches files).
pub enum AdminRequest {
    Create {
        name: TopicName,
        partitions: u16,
        retention_ms: Option<u64>,
        retention_bytes: Option<u64>,
        replication: TopicReplication,
        origin: Origin,
    },
    /// Persist a partition's leader and epoch (`<partition dir>/leader`), so a restart
    /// keeps the leadership the control plane set (the lcore applied it already).
    PersistLeader {
        name: TopicName,
        partition: u16,
        leader: u16,
        epoch: u32,
        correlation: u64,
    },
    /// The topic, out of the lcore's table while followers' divergent tails are cut: every
    /// partition whose [`Replica::cut_to`] is set is closed, truncated there and reopened
    /// (recovery rebuilds its index, producer state and epochs from what remains).
    Truncate { topic: Topic, key: String },
    /// The topic, already out of the lcore's table: close its logs, delete its files.
    Delete {
        topic: Topic,
        key: String,
        correlation: u64,
    },
    /// Grow topic `name` from `existing` to `partitions` partitions: open the new logs,
    /// then record the count in the manifest (see [`create_partitions`]).
    CreatePartitions {
        name: TopicName,
        existing: u16,
        partitions: u16,
        correlation: u64,
    },
    /// Persist a topic's whole dynamic configuration (the lcore has applied it already).
    SetConfigs {
        name: TopicName,
        configs: TopicConfigs,
        correlation: u64,
    },
    /// Persist new retention (the lcore has already applied it to the open logs).
    Alter {
        name: TopicName,
        retention_ms: Option<u64>,
        retention_bytes: Option<u64>,
        correlation: u64,
    },
}

/// The admin thread's answers.
pub enum AdminReply {
    /// The topic and its name as the table's key (built off the lcore).
    Created {
        topic: Topic,
        key: String,
        origin: Origin,
    },
    CreateFailed {
        name: String,
        reason: String,
        origin: Origin,
    },
    /// The topic back from [`AdminRequest::Truncate`]; a partition that could not be cut
    /// or reopened is gone from the result (`failed` says why).
    Truncated {
        topic: Topic,
        key: String,
        failed: Option<String>,
    },
    Deleted {
        correlation: u64,
        result: Result<(), String>,
    },
    /// The grown topic's new partitions, committed to the manifest.
    PartitionsCreated {
        name: TopicName,
        grown: GrownPartitions,
        correlation: u64,
    },
    /// Nothing changed: no partition opened, no file left, the manifest as it was.
    CreatePartitionsFailed {
        name: TopicName,
        reason: String,
        correlation: u64,
    },
    Altered {
        correlation: u64,
        result: Result<(), String>,
    },
}

/// The lcore's end of the admin queues.
pub struct AdminLink {
    requests: Arc<ArrayQueue<AdminRequest>>,
    replies: Arc<ArrayQueue<AdminReply>>,
}

impl AdminLink {
    /// Queues work; gives it back whole when the queue is full (answer Busy), so a topic
    /// on its way to deletion can be put back.
    #[allow(clippy::result_large_err)] // returned by value on purpose: no allocation
    pub fn request(&self, request: AdminRequest) -> Result<(), AdminRequest> {
        self.requests.push(request)
    }
    pub fn poll(&self) -> Option<AdminReply> {
        self.replies.pop()
    }
}

/// How long deleting a topic waits for the flusher to release its partitions.
const DELETE_RELEASE_TIMEOUT: Duration = Duration::from_secs(30);

/// Starts the admin thread; it owns the manifest from now on.
pub fn spawn_admin(
    manifest: Manifest,
    log: LogConfig,
    flusher: FlusherHandle,
    policy: ReplicationPolicy,
    stop: Arc<AtomicBool>,
) -> std::io::Result<(AdminLink, std::thread::JoinHandle<()>)> {
    let requests = Arc::new(ArrayQueue::new(ADMIN_QUEUE_DEPTH));
    let replies = Arc::new(ArrayQueue::new(ADMIN_QUEUE_DEPTH));
    let link = AdminLink {
        requests: requests.clone(),
        replies: replies.clone(),
    };
    let handle = std::thread::Builder::new()
        .name("precursor-admin".into())
        .spawn(move || {
            let mut manifest = manifest;
            while !stop.load(Ordering::Acquire) {
                let Some(request) = requests.pop() else {
                    std::thread::sleep(ADMIN_IDLE_SLEEP);
                    continue;
                };
                let reply = match request {
                    AdminRequest::Create {
                        name,
                        partitions,
                        retention_ms,
                        retention_bytes,
                        replication,
                        origin,
                    } => create(
                        &mut manifest,
                        (&log, &flusher, &policy),
                        name,
                        partitions,
                        (retention_ms, retention_bytes, replication),
                        origin,
                    ),
                    AdminRequest::Truncate { topic, key } => {
                        truncate(&manifest, &log, &flusher, topic, key)
                    }
                    AdminRequest::PersistLeader {
                        name,
                        partition,
                        leader,
                        epoch,
                        correlation,
                    } => {
                        let dir = log.data_dir.join(format!("{}-{partition}", name.as_str()));
                        AdminReply::Altered {
                            correlation,
                            result: write_leader_file(&dir, leader, epoch)
                                .map_err(|e| format!("{}: {e}", dir.display())),
                        }
                    }
                    AdminRequest::Delete {
                        topic,
                        key,
                        correlation,
                    } => AdminReply::Deleted {
                        correlation,
                        result: delete(&mut manifest, &log, topic, key).map_err(|e| e.to_string()),
                    },
                    AdminRequest::CreatePartitions {
                        name,
                        existing,
                        partitions,
                        correlation,
                    } => create_partitions(
                        &mut manifest,
                        (&log, &flusher, &policy),
                        name,
                        (existing, partitions),
                        correlation,
                    ),
                    AdminRequest::SetConfigs {
                        name,
                        configs,
                        correlation,
                    } => AdminReply::Altered {
                        correlation,
                        result: manifest
                            .set_configs(name.as_str(), &configs)
                            .map(|_| ())
                            .map_err(|e| e.to_string()),
                    },
                    AdminRequest::Alter {
                        name,
                        retention_ms,
                        retention_bytes,
                        correlation,
                    } => AdminReply::Altered {
                        correlation,
                        result: manifest
                            .alter(name.as_str(), retention_ms, retention_bytes)
                            .map(|_| ())
                            .map_err(|e| e.to_string()),
                    },
                };
                match &reply {
                    AdminReply::CreateFailed { name, reason, .. } => {
                        eprintln!("precursor-dataplane: cannot create topic {name:?}: {reason}")
                    }
                    AdminReply::Truncated {
                        failed: Some(reason),
                        ..
                    } => eprintln!("precursor-dataplane: cannot truncate a partition: {reason}"),
                    AdminReply::CreatePartitionsFailed { name, reason, .. } => {
                        eprintln!(
                            "precursor-dataplane: cannot add partitions to topic {name:?}: \
                             {reason}"
                        )
                    }
                    AdminReply::PartitionsCreated { name, grown, .. } => eprintln!(
                        "precursor-dataplane: topic {name:?}: {} partitions added",
                        grown.logs.len()
                    ),
                    AdminReply::Deleted {
                        result: Err(reason),
                        ..
                    } => {
                        eprintln!("precursor-dataplane: cannot delete a topic: {reason}")
                    }
                    _ => {}
                }
                // The lcore keeps at most ADMIN_QUEUE_DEPTH requests outstanding.
                assert!(replies.push(reply).is_ok(), "admin reply queue overflow");
            }
        })?;
    Ok((link, handle))
}

fn create(
    manifest: &mut Manifest,
    (log, flusher, policy): (&LogConfig, &FlusherHandle, &ReplicationPolicy),
    name: TopicName,
    partitions: u16,
    (retention_ms, retention_bytes, replication): (Option<u64>, Option<u64>, TopicReplication),
    origin: Origin,
) -> AdminReply {
    let failed = |reason: String| AdminReply::CreateFailed {
        name: name.as_str().to_string(),
        reason,
        origin,
    };
    let entry = match manifest.find(name.as_str()) {
        // Asked twice (a retry raced the first creation): the lcore dedups on install.
        Some(entry) => entry.clone(),
        None => match manifest.add_with(
            name.as_str(),
            partitions,
            retention_ms,
            retention_bytes,
            replication,
        ) {
            Ok(entry) => entry,
            Err(e) => return failed(e.to_string()),
        },
    };
    match Topic::open(&entry, log, flusher, policy) {
        Ok(topic) => {
            let key = topic.name.clone();
            AdminReply::Created { topic, key, origin }
        }
        Err(e) => failed(e.to_string()),
    }
}

/// Grows topic `name` from `existing` to `partitions` partitions. The manifest records
/// the new count last, as the commit point: the new partitions' logs are made first
/// (leftovers of an earlier grow that never committed are removed before), so a crash
/// before the manifest is written leaves the topic with its `existing` partitions and, at
/// worst, directories past its count that held nothing acknowledged (nothing is installed
/// before the commit); [`remove_uncommitted_partitions`] removes them at the next start.
/// On failure every new partition is closed and its files deleted: the topic is as it was.
fn create_partitions(
    manifest: &mut Manifest,
    (log, flusher, policy): (&LogConfig, &FlusherHandle, &ReplicationPolicy),
    name: TopicName,
    (existing, partitions): (u16, u16),
    correlation: u64,
) -> AdminReply {
    let failed = |reason: String| AdminReply::CreatePartitionsFailed {
        name,
        reason,
        correlation,
    };
    let Some(entry) = manifest.find(name.as_str()) else {
        return failed(format!("topic {:?} is not in the manifest", name.as_str()));
    };
    if entry.partitions != existing || partitions <= existing {
        return failed(format!(
            "topic {:?} has {} partitions in the manifest, the lcore {existing}; asked for \
             {partitions}",
            name.as_str(),
            entry.partitions
        ));
    }
    if let Err(e) = manifest.check_partitions_room(u32::from(partitions - existing)) {
        return failed(e.to_string());
    }
    let mut grown_entry = entry.clone();
    grown_entry.partitions = partitions;
    let log_config = grown_entry.log_config(log);
    let added = usize::from(partitions - existing);
    let mut logs: Vec<PartitionLog> = Vec::with_capacity(added);
    let mut replicas: Vec<Replica> = Vec::with_capacity(added);
    let mut failure = None;
    for p in existing..partitions {
        let opened = crate::log::remove_uncommitted_partition(&log_config, name.as_str(), p)
            .and_then(|_| PartitionLog::open(&log_config, name.as_str(), p, flusher))
            .map_err(|source| TopicError::Log {
                name: name.as_str().to_string(),
                source,
            })
            .and_then(|mut partition_log| {
                match policy.replica(&grown_entry, p, &mut partition_log) {
                    Ok(replica) => Ok((partition_log, replica)),
                    Err(e) => {
                        logs.push(partition_log);
                        Err(e)
                    }
                }
            });
        match opened {
            Ok((partition_log, replica)) => {
                logs.push(partition_log);
                replicas.push(replica);
            }
            Err(e) => {
                failure = Some(format!("partition {p}: {e}"));
                break;
            }
        }
    }
    if failure.is_none() {
        if let Err(e) = manifest.grow(name.as_str(), partitions) {
            failure = Some(e.to_string());
        }
    }
    let Some(reason) = failure else {
        let total = usize::from(partitions);
        return AdminReply::PartitionsCreated {
            name,
            grown: GrownPartitions {
                logs,
                replicas,
                room_logs: Vec::with_capacity(total),
                room_replicas: Vec::with_capacity(total),
                room_counters: Vec::with_capacity(total),
            },
            correlation,
        };
    };
    // Undo: close what was opened, then delete every new partition's files.
    let closed: Vec<_> = logs.into_iter().map(PartitionLog::close).collect();
    let mut cleanup = String::new();
    for partition in &closed {
        if !partition.wait_released(DELETE_RELEASE_TIMEOUT) {
            cleanup = format!(
                "; {} not released by the flusher in time, left behind",
                partition.dir().display()
            );
        }
    }
    for p in existing..partitions {
        if let Err(e) = crate::log::remove_uncommitted_partition(&log_config, name.as_str(), p) {
            cleanup = format!("; cleaning up: {e}");
        }
    }
    failed(format!(
        "{reason}; the topic keeps its {existing} partitions{cleanup}"
    ))
}

/// Removes the directories of partitions past their topic's count in the manifest (what
/// a grow left when it crashed before its commit: they never held an acknowledged
/// message). Start-up only, before any topic opens. Returns how many were removed.
pub fn remove_uncommitted_partitions(
    manifest: &Manifest,
    log: &LogConfig,
) -> Result<usize, TopicError> {
    let io = |source| TopicError::Io {
        path: log.data_dir.clone(),
        source,
    };
    let mut removed = 0;
    for dir in std::fs::read_dir(&log.data_dir).map_err(io)? {
        let dir = dir.map_err(io)?;
        let file_name = dir.file_name();
        let Some((topic, partition)) = file_name
            .to_str()
            .and_then(|n| n.rsplit_once('-'))
            .and_then(|(t, p)| Some((t, p.parse::<u16>().ok()?)))
        else {
            continue;
        };
        let Some(entry) = manifest.find(topic) else {
            continue;
        };
        if partition < entry.partitions || !dir.path().is_dir() {
            continue;
        }
        crate::log::remove_uncommitted_partition(log, topic, partition).map_err(|source| {
            TopicError::Log {
                name: topic.to_string(),
                source,
            }
        })?;
        eprintln!(
            "precursor-dataplane: removed {}: partition {partition} of topic {topic:?} was \
             never committed (the topic has {} partitions; a grow did not finish)",
            dir.path().display(),
            entry.partitions
        );
        removed += 1;
    }
    Ok(removed)
}

/// `<partition dir>/leader`: the leadership the control plane last set.
const LEADER_FILE: &str = "leader";

fn write_leader_file(dir: &Path, leader: u16, epoch: u32) -> std::io::Result<()> {
    let path = dir.join(LEADER_FILE);
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::File::create(&tmp)?;
    writeln!(file, "leader {leader}\nepoch {epoch}")?;
    file.sync_data()?;
    std::fs::rename(&tmp, &path)?;
    std::fs::File::open(dir)?.sync_all()
}

/// The leadership last set for a partition, if any: (leader, epoch).
fn read_leader_file(dir: &Path) -> std::io::Result<Option<(u16, u32)>> {
    let text = match std::fs::read_to_string(dir.join(LEADER_FILE)) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let value = |key: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(key)?.trim().parse::<u64>().ok())
    };
    match (value("leader "), value("epoch ")) {
        (Some(leader), Some(epoch)) if leader <= u16::MAX as u64 && epoch <= u32::MAX as u64 => {
            Ok(Some((leader as u16, epoch as u32)))
        }
        _ => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "{}: expected `leader N` and `epoch E`",
                dir.join(LEADER_FILE).display()
            ),
        )),
    }
}

/// Cuts the partitions of `topic` whose replica asks for it, reopening each.
fn truncate(
    manifest: &Manifest,
    log: &LogConfig,
    flusher: &FlusherHandle,
    mut topic: Topic,
    key: String,
) -> AdminReply {
    let Some(entry) = manifest.find(&topic.name) else {
        let failed = Some(format!("topic {:?} is not in the manifest", topic.name));
        return AdminReply::Truncated { topic, key, failed };
    };
    let log_config = entry.log_config(log);
    let mut failed = None;
    let logs = std::mem::take(&mut topic.partitions);
    let mut reopened = Vec::with_capacity(logs.len());
    for (p, partition_log) in logs.into_iter().enumerate() {
        let replica = &mut topic.replicas[p];
        let Some(offset) = replica.cut_to.take() else {
            reopened.push(partition_log);
            continue;
        };
        let closed = partition_log.close();
        let result = if closed.wait_released(DELETE_RELEASE_TIMEOUT) {
            crate::log::truncate_files(closed.dir(), offset)
                .map_err(|e| e.to_string())
                .and_then(|removed| {
                    PartitionLog::open(&log_config, &topic.name, p as u16, flusher)
                        .map(|log| (removed, log))
                        .map_err(|e| e.to_string())
                })
        } else {
            Err("the flusher did not release the partition in time".into())
        };
        match result {
            Ok((removed, log)) => {
                eprintln!(
                    "precursor-dataplane: partition {}-{p}: cut {removed} bytes of divergent \
                     log at offset {offset} (following leader {} at epoch {}); log end now {}",
                    topic.name,
                    replica.leader,
                    replica.epoch,
                    log.log_end_offset()
                );
                replica.truncated_bytes += removed;
                replica.truncating = false;
                if let Err(e) = log.epochs().write_checkpoint(log.dir()) {
                    failed = Some(format!("{}-{p}: epoch checkpoint: {e}", topic.name));
                }
                reopened.push(log);
            }
            Err(reason) => {
                // Nothing sensible is left to serve: the partition stays closed (its
                // replica keeps `truncating`, so it is never fetched for) and says so.
                failed = Some(format!(
                    "{}-{p}: {reason}; the partition is offline until the broker restarts",
                    topic.name
                ));
                break;
            }
        }
    }
    if reopened.len() == topic.replicas.len() {
        topic.partitions = reopened;
        AdminReply::Truncated { topic, key, failed }
    } else {
        // A partition failed: the topic cannot be reinstalled with a hole in it. Close
        // what was reopened; a restart recovers it (the cut is redone from the leader).
        drop(reopened);
        let failed = failed.or(Some("truncation failed".into()));
        AdminReply::Truncated { topic, key, failed }
    }
}

/// Removes the topic from the manifest first (a crash half-way leaves orphaned files,
/// never a half-deleted topic that reopens), then closes and deletes every partition.
fn delete(
    manifest: &mut Manifest,
    log: &LogConfig,
    topic: Topic,
    key: String,
) -> Result<(), TopicError> {
    drop(key);
    manifest.remove(&topic.name)?;
    let name = topic.name;
    let closed: Vec<_> = topic
        .partitions
        .into_iter()
        .map(PartitionLog::close)
        .collect();
    for partition in &closed {
        if !partition.wait_released(DELETE_RELEASE_TIMEOUT) {
            return Err(TopicError::Io {
                path: partition.dir().to_path_buf(),
                source: std::io::Error::other("the flusher did not release the partition in time"),
            });
        }
        partition
            .delete_files(log)
            .map_err(|source| TopicError::Log {
                name: name.clone(),
                source,
            })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_configs_persist_and_an_old_manifest_loads_unchanged() {
        use precursor_protocol::compression::Compression;
        let dir = tempfile::tempdir().unwrap();
        let old = "next_id 2\n0 orders 4\n1 quotes 1 retention_ms=0 replication_factor=3 \
                   min_insync_replicas=2 acks_all=durable\n";
        std::fs::write(dir.path().join(MANIFEST_FILE), old).unwrap();
        let mut manifest = Manifest::load(dir.path()).unwrap();
        assert_eq!(
            manifest.find("orders").unwrap().configs(),
            TopicConfigs::default()
        );
        let quotes = manifest.find("quotes").unwrap().configs();
        assert_eq!(quotes.retention_ms, Some(-1));
        assert_eq!(quotes.min_insync_replicas, Some(2));
        let configs = TopicConfigs {
            retention_ms: Some(3_600_000),
            retention_bytes: Some(-1),
            max_message_bytes: Some(4096),
            compression_type: Some(CompressionType::Codec(Compression::Zstd)),
            min_insync_replicas: None,
        };
        manifest.set_configs("orders", &configs).unwrap();
        let reloaded = Manifest::load(dir.path()).unwrap();
        assert_eq!(reloaded.find("orders").unwrap().configs(), configs);
        assert_eq!(reloaded.find("quotes").unwrap().configs(), quotes);
        assert_eq!(
            reloaded.find("quotes").unwrap().replication.acks_all,
            ACKS_ALL_DURABLE
        );
        let text = std::fs::read_to_string(dir.path().join(MANIFEST_FILE)).unwrap();
        assert!(
            text.contains("max_message_bytes=4096 compression_type=zstd"),
            "{text}"
        );
        assert!(matches!(
            manifest.set_configs("nope", &configs),
            Err(TopicError::Unknown(_))
        ));
        std::fs::write(
            dir.path().join(MANIFEST_FILE),
            "0 x 1 compression_type=brotli\n",
        )
        .unwrap();
        assert!(matches!(
            Manifest::load(dir.path()),
            Err(TopicError::Corrupt { .. })
        ));
    }

    #[test]
    fn manifest_round_trips_and_assigns_the_lowest_free_id() {
        let dir = tempfile::tempdir().unwrap();
        let mut manifest = Manifest::load(dir.path()).unwrap();
        assert!(manifest.entries().is_empty());
        assert_eq!(manifest.add("orders", 4).unwrap().id, 0);
        assert_eq!(
            manifest
                .add_with(
                    "quotes",
                    1,
                    Some(60_000),
                    Some(1 << 30),
                    TopicReplication {
                        factor: 3,
                        min_insync: 2,
                        acks_all: ACKS_ALL_DURABLE,
                    }
                )
                .unwrap()
                .id,
            1
        );
        let reloaded = Manifest::load(dir.path()).unwrap();
        assert_eq!(reloaded.entries(), manifest.entries());
        assert_eq!(reloaded.find("orders").unwrap().partitions, 4);
        assert_eq!(reloaded.find("quotes").unwrap().retention_ms, Some(60_000));
        assert_eq!(reloaded.find("quotes").unwrap().replication.min_insync, 2);
        assert_eq!(
            reloaded.find("quotes").unwrap().replication.acks_all,
            ACKS_ALL_DURABLE
        );
        // Ids are never reused: a deleted topic's handle must not reach a new topic.
        manifest.remove("quotes").unwrap();
        assert_eq!(manifest.add("fresh", 1).unwrap().id, 2);
        let mut reloaded = Manifest::load(dir.path()).unwrap();
        assert!(reloaded.find("quotes").is_none());
        assert_eq!(
            reloaded.add("later", 1).unwrap().id,
            3,
            "next_id survives a reload"
        );
        let altered = reloaded.alter("orders", Some(5), None).unwrap();
        assert_eq!(
            (altered.retention_ms, altered.retention_bytes),
            (Some(5), None)
        );
        assert!(matches!(
            reloaded.remove("nope"),
            Err(TopicError::Unknown(_))
        ));
        // "No limit" survives a reload as no limit, never as a limit of zero.
        reloaded.alter("orders", Some(0), Some(0)).unwrap();
        let mut broker = LogConfig::new(dir.path().to_path_buf());
        broker.retention_ms = Some(1000);
        broker.retention_bytes = Some(1 << 30);
        let reloaded = Manifest::load(dir.path()).unwrap();
        let log = reloaded.find("orders").unwrap().log_config(&broker);
        assert_eq!((log.retention_ms, log.retention_bytes), (None, None));
        let defaulted = reloaded.find("later").unwrap().log_config(&broker);
        assert_eq!(
            defaulted.retention_ms,
            Some(1000),
            "no entry: the broker's value"
        );
    }

    #[test]
    fn a_corrupt_manifest_is_refused_with_its_line() {
        let dir = tempfile::tempdir().unwrap();
        for (text, reason) in [
            ("0 orders\n", "expected `id name partitions"),
            ("0 orders 1 colour=red\n", "unknown topic option"),
            ("next_id x\n", "bad next_id"),
            ("x orders 1\n", "bad id"),
            ("0 orders 1\n0 quotes 1\n", "listed twice"),
            ("0 bad/name 1\n", "bad topic name"),
            ("0 orders 0\n", "partition count"),
        ] {
            std::fs::write(dir.path().join(MANIFEST_FILE), text).unwrap();
            let message = Manifest::load(dir.path()).err().unwrap().to_string();
            assert!(
                message.contains(reason) && message.contains("line"),
                "{text:?}: {message}"
            );
        }
    }

    /// A log configuration in temporary directories (memory files in /dev/shm).
    fn log_config() -> (tempfile::TempDir, tempfile::TempDir, LogConfig) {
        let data = tempfile::tempdir().unwrap();
        let memory = tempfile::tempdir_in("/dev/shm").unwrap();
        let mut log = LogConfig::new(data.path().to_path_buf());
        log.memory_dir = memory.path().to_path_buf();
        log.segment_bytes = 64 << 10;
        log.batch_bytes_max = 16 << 10;
        log.small_page_dir = Some(memory.path().join("small"));
        (data, memory, log)
    }

    fn partition_dirs(log: &LogConfig, topic: &str) -> Vec<u16> {
        let mut dirs: Vec<u16> = std::fs::read_dir(&log.data_dir)
            .unwrap()
            .flatten()
            .filter(|e| e.path().is_dir())
            .filter_map(|e| {
                let name = e.file_name().into_string().unwrap();
                let (t, p) = name.rsplit_once('-')?;
                (t == topic).then(|| p.parse().ok())?
            })
            .collect();
        dirs.sort_unstable();
        dirs
    }

    fn grow(
        manifest: &mut Manifest,
        (log, flusher): (&LogConfig, &FlusherHandle),
        name: &str,
        (existing, partitions): (u16, u16),
    ) -> AdminReply {
        let policy = ReplicationPolicy::default();
        create_partitions(
            manifest,
            (log, flusher, &policy),
            TopicName::new(name).unwrap(),
            (existing, partitions),
            7,
        )
    }

    #[test]
    fn a_grow_commits_in_the_manifest_last_and_a_failed_one_leaves_nothing() {
        let (_data, _memory, log) = log_config();
        let (flusher, thread) = crate::log::Flusher::spawn(&log).unwrap();
        let mut manifest = Manifest::load(&log.data_dir).unwrap();
        let entry = manifest.add("orders", 2).unwrap();
        let policy = ReplicationPolicy::default();
        let mut topic = Topic::open(&entry, &log, &flusher, &policy).unwrap();
        topic.partitions[1].append(&batch(), 0).unwrap();

        // Debris of a grow that crashed before its commit: a partition directory past the
        // count, with a file in it. Start-up removes it; nothing else.
        let debris = log.data_dir.join("orders-2");
        std::fs::create_dir_all(&debris).unwrap();
        std::fs::write(debris.join("00000000000000000000.log"), b"junk").unwrap();
        // A topic whose name ends like a partition number is another topic.
        std::fs::create_dir_all(log.data_dir.join("orders-2-0")).unwrap();
        assert_eq!(remove_uncommitted_partitions(&manifest, &log).unwrap(), 1);
        assert!(!debris.exists());
        assert!(log.data_dir.join("orders-2-0").exists());

        // A grow whose commit fails (the manifest's temporary file cannot be made): every
        // new partition is closed and its files removed, the manifest keeps 2.
        let tmp = log.data_dir.join("topics.manifest.tmp");
        std::fs::create_dir_all(&tmp).unwrap();
        let AdminReply::CreatePartitionsFailed { reason, .. } =
            grow(&mut manifest, (&log, &flusher), "orders", (2, 5))
        else {
            panic!("the grow succeeded without its manifest");
        };
        assert!(reason.contains("keeps its 2 partitions"), "{reason}");
        assert_eq!(partition_dirs(&log, "orders"), vec![0, 1]);
        assert_eq!(
            Manifest::load(&log.data_dir)
                .unwrap()
                .find("orders")
                .unwrap()
                .partitions,
            2
        );
        std::fs::remove_dir(&tmp).unwrap();

        // A count the manifest does not hold is refused (the lcore's view raced).
        assert!(matches!(
            grow(&mut manifest, (&log, &flusher), "orders", (3, 5)),
            AdminReply::CreatePartitionsFailed { .. }
        ));
        assert!(matches!(
            grow(&mut manifest, (&log, &flusher), "nope", (1, 5)),
            AdminReply::CreatePartitionsFailed { .. }
        ));

        // The grow: new partitions open empty, the old ones keep their data.
        let AdminReply::PartitionsCreated { grown, .. } =
            grow(&mut manifest, (&log, &flusher), "orders", (2, 5))
        else {
            panic!("the grow failed");
        };
        assert_eq!(grown.logs.len(), 3);
        assert!(grown.logs.iter().all(|l| l.log_end_offset() == 0));
        assert_eq!(topic.grow(grown), 2);
        assert_eq!(topic.partitions.len(), 5);
        assert_eq!(topic.replicas.len(), 5);
        assert_eq!(topic.counters.len(), 5);
        assert_eq!(topic.partitions[1].log_end_offset(), 1);
        topic.partitions[4].append(&batch(), 0).unwrap();
        assert_eq!(
            Manifest::load(&log.data_dir)
                .unwrap()
                .find("orders")
                .unwrap()
                .partitions,
            5
        );
        assert_eq!(partition_dirs(&log, "orders"), vec![0, 1, 2, 3, 4]);
        // Nothing past the count now: start-up removes nothing.
        assert_eq!(remove_uncommitted_partitions(&manifest, &log).unwrap(), 0);
        drop(topic);
        flusher.shutdown();
        thread.join().unwrap();
    }

    /// One record batch of one record.
    fn batch() -> Vec<u8> {
        use precursor_protocol::record_batch as rb;
        let mut builder = rb::RecordBatchBuilder::new(
            precursor_protocol::compression::Compression::None,
            rb::NO_PRODUCER_ID,
            rb::NO_PRODUCER_EPOCH,
            rb::NO_SEQUENCE,
            0,
        );
        builder.append(0, None, b"value", &[]);
        builder.finish()
    }

    #[test]
    fn invalid_names_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut manifest = Manifest::load(dir.path()).unwrap();
        assert!(matches!(
            manifest.add("a b", 1),
            Err(TopicError::InvalidName(_))
        ));
        assert!(TopicName::new("..").is_none());
        assert!(TopicName::new(&"x".repeat(250)).is_none());
        assert_eq!(
            TopicName::new("ok.name_1-2").unwrap().as_str(),
            "ok.name_1-2"
        );
    }
}
