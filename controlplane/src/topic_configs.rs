//! Topic configurations as this broker holds them: read from its data plane's
//! `topics.manifest` (the one place they are persisted on a node, whatever the cluster
//! mode), cached, and described with the broker's defaults filled in. Changes go through
//! the admin path ([`crate::admin::Request::AlterTopicConfigs`]), which invalidates the
//! cache: every change on this node passes through this process.

use precursor_client::log_map::LogPaths;
use precursor_config::Config;
use precursor_protocol::topic_config::{
    ConfigLimits, ManifestOption, TopicConfigs, TopicKey, DYNAMIC_TOPIC_KEYS, READ_ONLY_TOPIC_KEYS,
};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The manifest is read again at least this often, in milliseconds, even without a change
/// through this process (a data plane restarted on another manifest, say).
pub const TOPIC_CONFIGS_MAX_AGE_MS: u64 = 1000;
const MANIFEST_FILE: &str = "topics.manifest";

/// Topic name -> its dynamic configuration.
pub type TopicConfigMap = BTreeMap<String, TopicConfigs>;

/// Why the configurations could not be read.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TopicConfigsError {
    #[error("the data plane's paths: {0}")]
    Paths(String),
    #[error("{path}: {reason}")]
    Manifest { path: PathBuf, reason: String },
}

/// Parses the text of a `topics.manifest`: each topic's configuration options.
pub fn parse_manifest(path: &Path, text: &str) -> Result<TopicConfigMap, TopicConfigsError> {
    let mut topics = TopicConfigMap::new();
    for (i, line) in text.lines().enumerate() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields[..] {
            [] | ["next_id", _] => continue,
            [_id, name, _partitions, ref options @ ..] => {
                let configs =
                    ManifestOption::configs_of(options.iter().copied()).map_err(|reason| {
                        TopicConfigsError::Manifest {
                            path: path.to_path_buf(),
                            reason: format!("line {}: {reason}", i + 1),
                        }
                    })?;
                topics.insert(name.to_string(), configs);
            }
            _ => {
                return Err(TopicConfigsError::Manifest {
                    path: path.to_path_buf(),
                    reason: format!("line {}: expected `id name partitions ...`", i + 1),
                })
            }
        }
    }
    Ok(topics)
}

/// A cached read of the manifest's configurations.
pub struct TopicConfigCache {
    cnc_dir: PathBuf,
    cache: Mutex<Option<(Instant, Arc<TopicConfigMap>)>>,
}

impl TopicConfigCache {
    pub fn new(cnc_dir: PathBuf) -> TopicConfigCache {
        TopicConfigCache {
            cnc_dir,
            cache: Mutex::new(None),
        }
    }

    /// Every topic's configuration, read at most [`TOPIC_CONFIGS_MAX_AGE_MS`] ago (or
    /// since the last [`TopicConfigCache::invalidate`]).
    pub fn get(&self) -> Result<Arc<TopicConfigMap>, TopicConfigsError> {
        let mut cache = self.cache.lock().expect("topic configs lock");
        if let Some((read_at, map)) = cache.as_ref() {
            if read_at.elapsed() < Duration::from_millis(TOPIC_CONFIGS_MAX_AGE_MS) {
                return Ok(map.clone());
            }
        }
        let paths = LogPaths::discover(&self.cnc_dir)
            .map_err(|e| TopicConfigsError::Paths(e.to_string()))?;
        let path = paths.data_dir.join(MANIFEST_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => {
                return Err(TopicConfigsError::Manifest {
                    path,
                    reason: e.to_string(),
                })
            }
        };
        let map = Arc::new(parse_manifest(&path, &text)?);
        *cache = Some((Instant::now(), map.clone()));
        Ok(map)
    }

    /// One topic's configuration; `Ok(None)` when the manifest does not list it.
    pub fn topic(&self, name: &str) -> Result<Option<TopicConfigs>, TopicConfigsError> {
        Ok(self.get()?.get(name).copied())
    }

    /// Forgets the cached read (after a change).
    pub fn invalidate(&self) {
        *self.cache.lock().expect("topic configs lock") = None;
    }
}

/// What a topic's configuration is checked against on this broker.
pub fn limits(config: &Config) -> ConfigLimits {
    ConfigLimits {
        message_bytes_max: config.storage.batch_bytes_max,
    }
}

/// Where a described value comes from (Kafka's `ConfigSource`).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ConfigSource {
    /// The topic's own (DYNAMIC_TOPIC_CONFIG, 1).
    DynamicTopic,
    /// The broker's configuration file (STATIC_BROKER_CONFIG, 4).
    StaticBroker,
    /// The default of the setting (DEFAULT_CONFIG, 5).
    Default,
}

impl ConfigSource {
    pub fn kafka_id(self) -> i8 {
        match self {
            ConfigSource::DynamicTopic => 1,
            ConfigSource::StaticBroker => 4,
            ConfigSource::Default => 5,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ConfigSource::DynamicTopic => "dynamic",
            ConfigSource::StaticBroker => "broker",
            ConfigSource::Default => "default",
        }
    }
}

/// Kafka's `ConfigType` of a described value.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ConfigType {
    Boolean = 1,
    String = 2,
    Int = 3,
    Long = 5,
    List = 7,
}

/// One described configuration value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DescribedConfig {
    pub name: &'static str,
    pub value: String,
    pub source: ConfigSource,
    pub read_only: bool,
    pub config_type: ConfigType,
    pub documentation: &'static str,
    /// The broker setting a default comes from, and its value.
    pub synonym: Option<(&'static str, String)>,
}

fn retention(value: u64) -> String {
    if value == 0 {
        "-1".into()
    } else {
        value.to_string()
    }
}

fn type_of(name: &str) -> ConfigType {
    match name {
        "retention.ms"
        | "retention.bytes"
        | "segment.ms"
        | "flush.ms"
        | "flush.messages"
        | "log.retention.ms"
        | "log.retention.bytes"
        | "log.roll.ms" => ConfigType::Long,
        "compression.type" | "message.timestamp.type" | "log.message.timestamp.type" => {
            ConfigType::String
        }
        "cleanup.policy" | "log.cleanup.policy" => ConfigType::List,
        "unclean.leader.election.enable" | "auto.create.topics.enable" => ConfigType::Boolean,
        _ => ConfigType::Int,
    }
}

/// The broker's value of a topic key (what a topic without its own takes).
fn broker_value(config: &Config, key: &TopicKey) -> String {
    let st = &config.storage;
    match key.name {
        "retention.ms" => retention(st.retention_ms),
        "retention.bytes" => retention(st.retention_bytes),
        "max.message.bytes" => st.batch_bytes_max.to_string(),
        "compression.type" => "producer".into(),
        "min.insync.replicas" => config.topics.default_min_insync_replicas.to_string(),
        "cleanup.policy" => "delete".into(),
        "message.timestamp.type" => "CreateTime".into(),
        "segment.bytes" => st.segment_bytes.to_string(),
        "segment.ms" => st.segment_ms.to_string(),
        "index.interval.bytes" => st.index_interval_bytes.to_string(),
        "flush.ms" => st.flush_interval_ms.to_string(),
        "flush.messages" => st.flush_messages.to_string(),
        "unclean.leader.election.enable" => "false".into(),
        other => unreachable!("topic key {other} has a broker value"),
    }
}

/// A topic's every supported key: its own value where it has one, else the broker's.
/// `keys`: only these (unknown names are left out, as Kafka does).
pub fn describe_topic(
    config: &Config,
    configs: &TopicConfigs,
    keys: Option<&[&str]>,
) -> Vec<DescribedConfig> {
    DYNAMIC_TOPIC_KEYS
        .iter()
        .chain(READ_ONLY_TOPIC_KEYS.iter())
        .filter(|key| keys.is_none_or(|keys| keys.contains(&key.name)))
        .map(|key| {
            let broker = broker_value(config, key);
            let (value, source) = match configs.value(key.name) {
                Some(own) => (own, ConfigSource::DynamicTopic),
                None => (broker.clone(), ConfigSource::Default),
            };
            DescribedConfig {
                name: key.name,
                value,
                source,
                read_only: key.read_only,
                config_type: type_of(key.name),
                documentation: key.documentation,
                synonym: Some((key.broker_synonym, broker)),
            }
        })
        .collect()
}

/// The broker's own settings Kafka tools ask for, all read-only (they come from the
/// configuration file and change with a restart).
pub fn describe_broker(
    config: &Config,
    broker_id: i32,
    keys: Option<&[&str]>,
) -> Vec<DescribedConfig> {
    let st = &config.storage;
    let topics = &config.topics;
    let entries: [(&'static str, String, &'static str); 15] = [
        (
            "broker.id",
            broker_id.to_string(),
            "The id clients know this broker by.",
        ),
        (
            "num.partitions",
            topics.default_partitions.to_string(),
            "Partitions of an auto-created topic (topics.default_partitions).",
        ),
        (
            "default.replication.factor",
            topics.default_replication_factor.to_string(),
            "Replicas of a topic created without a factor (topics.default_replication_factor).",
        ),
        (
            "min.insync.replicas",
            topics.default_min_insync_replicas.to_string(),
            "In-sync replicas an acks=all produce needs (topics.default_min_insync_replicas).",
        ),
        (
            "auto.create.topics.enable",
            topics.auto_create.to_string(),
            "Metadata and produce create unknown topics (topics.auto_create).",
        ),
        (
            "log.retention.ms",
            retention(st.retention_ms),
            "How long a closed segment is kept (storage.retention_ms; -1 forever).",
        ),
        (
            "log.retention.bytes",
            retention(st.retention_bytes),
            "A partition's size limit (storage.retention_bytes; -1 none).",
        ),
        (
            "message.max.bytes",
            st.batch_bytes_max.to_string(),
            "The largest record batch accepted (storage.batch_bytes_max).",
        ),
        (
            "log.segment.bytes",
            st.segment_bytes.to_string(),
            "A segment rolls at this size (storage.segment_bytes).",
        ),
        (
            "log.roll.ms",
            st.segment_ms.to_string(),
            "A segment rolls this long after its first append (storage.segment_ms).",
        ),
        (
            "log.flush.interval.ms",
            st.flush_interval_ms.to_string(),
            "Unsynced appends are synced this often (storage.flush_interval_ms).",
        ),
        (
            "compression.type",
            "producer".into(),
            "Batches are stored as producers compressed them, unless a topic says otherwise.",
        ),
        (
            "log.cleanup.policy",
            "delete".into(),
            "Closed segments go by retention (compaction is not supported).",
        ),
        (
            "log.message.timestamp.type",
            "CreateTime".into(),
            "Records keep the producer's timestamps.",
        ),
        (
            "unclean.leader.election.enable",
            "false".into(),
            "Only in-sync replicas become leaders.",
        ),
    ];
    entries
        .into_iter()
        .filter(|(name, _, _)| keys.is_none_or(|keys| keys.contains(name)))
        .map(|(name, value, documentation)| DescribedConfig {
            name,
            value,
            source: ConfigSource::StaticBroker,
            read_only: true,
            config_type: type_of(name),
            documentation,
            synonym: None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifests_old_and_new_give_each_topic_its_configs() {
        let text = "next_id 3\n0 old 4\n1 kept 1 retention_ms=0 replication_factor=3 \
                    min_insync_replicas=2 acks_all=durable\n2 new 2 max_message_bytes=2048 \
                    compression_type=zstd\n";
        let map = parse_manifest(Path::new("m"), text).unwrap();
        assert_eq!(map["old"], TopicConfigs::default());
        assert_eq!(map["kept"].retention_ms, Some(-1));
        assert_eq!(map["kept"].min_insync_replicas, Some(2));
        assert_eq!(map["new"].max_message_bytes, Some(2048));
        assert!(parse_manifest(Path::new("m"), "0 x 1 max_message_bytes=abc").is_err());
    }

    #[test]
    fn described_topics_fill_in_the_broker_defaults() {
        let config = Config::default();
        let configs = TopicConfigs {
            compression_type: Some(precursor_protocol::topic_config::CompressionType::Producer),
            ..TopicConfigs::default()
        };
        let described = describe_topic(&config, &configs, None);
        let find = |name: &str| described.iter().find(|d| d.name == name).unwrap();
        assert_eq!(find("compression.type").source, ConfigSource::DynamicTopic);
        assert_eq!(find("max.message.bytes").value, "1048588");
        assert_eq!(find("max.message.bytes").source, ConfigSource::Default);
        assert!(find("segment.bytes").read_only);
        let only = describe_topic(&config, &configs, Some(&["retention.ms", "nope"]));
        assert_eq!(only.len(), 1);
        assert!(describe_broker(&config, 1, None)
            .iter()
            .all(|d| d.read_only));
    }
}
