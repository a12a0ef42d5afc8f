//! Kafka topic configurations: the typed set Precursor supports, parsed and validated in
//! one place (CreateTopics, AlterConfigs, IncrementalAlterConfigs, the admin socket, the
//! metadata quorum all go through [`TopicConfigs::set`]), and how the set is written in
//! a topic's line of the data plane's `topics.manifest` ([`ManifestOption`]).
//!
//! A key left out of a [`TopicConfigs`] takes the broker's default. The keys Kafka tools
//! expect that this broker does not let a topic change are described read-only
//! ([`READ_ONLY_TOPIC_KEYS`]): they carry the broker's storage settings.

use crate::compression::Compression;

/// Kafka's default `message.max.bytes`: 1 MiB of records plus the 12 bytes of log
/// overhead (offset and length) of the batch that carries them.
pub const KAFKA_MESSAGE_MAX_BYTES_DEFAULT: u32 = (1 << 20) + 12;
/// Largest `min.insync.replicas`: the most replicas a partition may have.
pub const MIN_INSYNC_REPLICAS_MAX: u8 = 5;

/// `compression.type` of a topic: how the broker stores what producers send.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Default)]
pub enum CompressionType {
    /// As the producer compressed it (Kafka's default).
    #[default]
    Producer,
    /// Recompressed with this codec (`uncompressed` is [`Compression::None`]).
    Codec(Compression),
}

impl CompressionType {
    /// Every value, as Kafka names them.
    pub const NAMES: &'static str = "producer, uncompressed, gzip, snappy, lz4, zstd";

    pub fn parse(value: &str) -> Option<CompressionType> {
        match value {
            "producer" => Some(CompressionType::Producer),
            "uncompressed" => Some(CompressionType::Codec(Compression::None)),
            "gzip" | "snappy" | "lz4" | "zstd" => Compression::parse(value).map(Self::Codec),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            CompressionType::Producer => "producer",
            CompressionType::Codec(Compression::None) => "uncompressed",
            CompressionType::Codec(codec) => codec.name(),
        }
    }

    /// The codec a batch compressed with `batch` is stored with: `None` when it is
    /// stored as it came.
    pub fn recompress_to(self, batch: Compression) -> Option<Compression> {
        match self {
            CompressionType::Producer => None,
            CompressionType::Codec(codec) if codec == batch => None,
            CompressionType::Codec(codec) => Some(codec),
        }
    }

    /// The ring's encoding: 0 producer, 1 + Kafka codec id.
    pub fn id(self) -> u8 {
        match self {
            CompressionType::Producer => 0,
            CompressionType::Codec(codec) => 1 + codec.id(),
        }
    }

    pub fn from_id(id: u8) -> Option<CompressionType> {
        match id {
            0 => Some(CompressionType::Producer),
            id => Compression::from_id(id - 1).map(CompressionType::Codec),
        }
    }
}

/// What a topic's configuration is checked against: this broker's limits.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct ConfigLimits {
    /// The largest batch the log stores (`storage.batch_bytes_max`): `max.message.bytes`
    /// may not exceed it.
    pub message_bytes_max: u32,
}

/// The dynamic configuration of one topic. `None`: the broker's default.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Default)]
pub struct TopicConfigs {
    /// `retention.ms`: -1 keeps forever, else at least 1.
    pub retention_ms: Option<i64>,
    /// `retention.bytes`: -1 keeps forever, else at least 1.
    pub retention_bytes: Option<i64>,
    /// `max.message.bytes`: the largest record batch a producer may append, 0..=limit.
    pub max_message_bytes: Option<u32>,
    /// `compression.type`.
    pub compression_type: Option<CompressionType>,
    /// `min.insync.replicas`: 1..=the topic's replication factor.
    pub min_insync_replicas: Option<u8>,
}

/// One supported topic key: its name, whether a topic may set it, and Kafka's words.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct TopicKey {
    pub name: &'static str,
    pub read_only: bool,
    pub documentation: &'static str,
    /// The broker setting whose value a topic without its own takes (Kafka's synonym).
    pub broker_synonym: &'static str,
}

/// The keys a topic may set.
pub const DYNAMIC_TOPIC_KEYS: [TopicKey; 7] = [
    TopicKey {
        name: "retention.ms",
        read_only: false,
        documentation: "How long a closed segment is kept, in milliseconds; -1: forever.",
        broker_synonym: "log.retention.ms",
    },
    TopicKey {
        name: "retention.bytes",
        read_only: false,
        documentation: "A partition's closed segments are deleted, oldest first, while \
                        the partition is larger than this; -1: no limit.",
        broker_synonym: "log.retention.bytes",
    },
    TopicKey {
        name: "max.message.bytes",
        read_only: false,
        documentation: "The largest record batch (after compression) a producer may \
                        append, in bytes; at most the broker's message.max.bytes.",
        broker_synonym: "message.max.bytes",
    },
    TopicKey {
        name: "compression.type",
        read_only: false,
        documentation: "How batches are stored: producer (as sent), uncompressed, gzip, \
                        snappy, lz4 or zstd (the broker recompresses what differs).",
        broker_synonym: "compression.type",
    },
    TopicKey {
        name: "min.insync.replicas",
        read_only: false,
        documentation: "In-sync replicas an acks=all produce needs, 1 to the replication \
                        factor.",
        broker_synonym: "min.insync.replicas",
    },
    TopicKey {
        name: "cleanup.policy",
        read_only: false,
        documentation: "delete: closed segments go by retention (compact is not \
                        supported yet).",
        broker_synonym: "log.cleanup.policy",
    },
    TopicKey {
        name: "message.timestamp.type",
        read_only: false,
        documentation: "CreateTime: records keep the producer's timestamps \
                        (LogAppendTime is not supported yet).",
        broker_synonym: "log.message.timestamp.type",
    },
];

/// Keys described for every topic that take the broker's settings and cannot be set.
pub const READ_ONLY_TOPIC_KEYS: [TopicKey; 6] = [
    TopicKey {
        name: "segment.bytes",
        read_only: true,
        documentation: "A segment rolls at this size (the broker's storage.segment_bytes).",
        broker_synonym: "log.segment.bytes",
    },
    TopicKey {
        name: "segment.ms",
        read_only: true,
        documentation: "A segment rolls this long after its first append \
                        (storage.segment_ms).",
        broker_synonym: "log.roll.ms",
    },
    TopicKey {
        name: "index.interval.bytes",
        read_only: true,
        documentation: "One offset index entry per this many bytes \
                        (storage.index_interval_bytes).",
        broker_synonym: "log.index.interval.bytes",
    },
    TopicKey {
        name: "flush.ms",
        read_only: true,
        documentation: "Unsynced appends are synced at least this often \
                        (storage.flush_interval_ms).",
        broker_synonym: "log.flush.interval.ms",
    },
    TopicKey {
        name: "flush.messages",
        read_only: true,
        documentation: "... or once this many are unsynced (storage.flush_messages).",
        broker_synonym: "log.flush.interval.messages",
    },
    TopicKey {
        name: "unclean.leader.election.enable",
        read_only: true,
        documentation: "Never: only in-sync replicas become leaders.",
        broker_synonym: "unclean.leader.election.enable",
    },
];

/// The key named `name`, dynamic or read-only.
pub fn topic_key(name: &str) -> Option<&'static TopicKey> {
    DYNAMIC_TOPIC_KEYS
        .iter()
        .chain(READ_ONLY_TOPIC_KEYS.iter())
        .find(|key| key.name == name)
}

/// Why a topic configuration was refused; the message names the key and what it takes.
/// The Kafka gateway answers INVALID_CONFIG for each.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("unknown topic config {key:?} (supported: {supported})")]
    UnknownKey { key: String, supported: String },
    #[error("{key}={value:?}: {allowed}")]
    InvalidValue {
        key: &'static str,
        value: String,
        allowed: String,
    },
    #[error("{key} is read-only here: {why}")]
    ReadOnly {
        key: &'static str,
        why: &'static str,
    },
    #[error("{key}: a value is required")]
    Missing { key: &'static str },
}

fn supported_keys() -> String {
    DYNAMIC_TOPIC_KEYS
        .iter()
        .map(|key| key.name)
        .collect::<Vec<_>>()
        .join(", ")
}

impl TopicConfigs {
    /// Sets `key` to `value` (Kafka's text), checked against Kafka's ranges and `limits`.
    /// `None` as the value (a null in the request) is refused: DELETE removes a key.
    pub fn set(
        &mut self,
        key: &str,
        value: Option<&str>,
        limits: &ConfigLimits,
    ) -> Result<(), ConfigError> {
        let Some(known) = topic_key(key) else {
            return Err(ConfigError::UnknownKey {
                key: key.to_string(),
                supported: supported_keys(),
            });
        };
        if known.read_only {
            return Err(ConfigError::ReadOnly {
                key: known.name,
                why: "it takes the broker's storage settings",
            });
        }
        let key = known.name;
        let value = value.ok_or(ConfigError::Missing { key })?;
        let invalid = |allowed: String| ConfigError::InvalidValue {
            key,
            value: value.to_string(),
            allowed,
        };
        let limit = |allowed: &str| {
            value
                .trim()
                .parse::<i64>()
                .ok()
                .filter(|v| *v == -1 || *v >= 1)
                .ok_or_else(|| invalid(allowed.to_string()))
        };
        match key {
            "retention.ms" => {
                self.retention_ms = Some(limit(
                    "a number of milliseconds from 1, or -1 to keep forever",
                )?)
            }
            "retention.bytes" => {
                self.retention_bytes = Some(limit("a number of bytes from 1, or -1 for no limit")?)
            }
            "max.message.bytes" => {
                let max = limits.message_bytes_max;
                let bytes = value
                    .trim()
                    .parse::<u32>()
                    .ok()
                    .filter(|v| *v <= max)
                    .ok_or_else(|| {
                        invalid(format!(
                            "a number of bytes from 0 to {max} (the broker's message.max.bytes)"
                        ))
                    })?;
                self.max_message_bytes = Some(bytes);
            }
            "compression.type" => {
                let parsed = CompressionType::parse(value.trim())
                    .ok_or_else(|| invalid(format!("one of {}", CompressionType::NAMES)))?;
                self.compression_type = Some(parsed);
            }
            "min.insync.replicas" => {
                let n = value
                    .trim()
                    .parse::<u8>()
                    .ok()
                    .filter(|v| (1..=MIN_INSYNC_REPLICAS_MAX).contains(v))
                    .ok_or_else(|| {
                        invalid(format!(
                            "1 to the topic's replication factor (at most \
                             {MIN_INSYNC_REPLICAS_MAX})"
                        ))
                    })?;
                self.min_insync_replicas = Some(n);
            }
            "cleanup.policy" => {
                // Kafka takes a list: delete, compact, or both.
                let policies: Vec<&str> = value.split(',').map(str::trim).collect();
                if policies.contains(&"compact") {
                    return Err(invalid(
                        "delete: log compaction is not supported yet".to_string(),
                    ));
                }
                if policies.iter().any(|p| *p != "delete") {
                    return Err(invalid(
                        "delete (or compact, which is not supported yet)".to_string(),
                    ));
                }
            }
            "message.timestamp.type" => match value.trim() {
                "CreateTime" => {}
                "LogAppendTime" => {
                    return Err(invalid(
                        "CreateTime: LogAppendTime is not supported yet".to_string(),
                    ))
                }
                _ => {
                    return Err(invalid(
                        "CreateTime (or LogAppendTime, which is not supported yet)".to_string(),
                    ))
                }
            },
            _ => unreachable!("every dynamic key is matched"),
        }
        Ok(())
    }

    /// Removes `key`: the topic takes the broker's default again.
    pub fn delete(&mut self, key: &str) -> Result<(), ConfigError> {
        let Some(known) = topic_key(key) else {
            return Err(ConfigError::UnknownKey {
                key: key.to_string(),
                supported: supported_keys(),
            });
        };
        if known.read_only {
            return Err(ConfigError::ReadOnly {
                key: known.name,
                why: "it takes the broker's storage settings",
            });
        }
        match known.name {
            "retention.ms" => self.retention_ms = None,
            "retention.bytes" => self.retention_bytes = None,
            "max.message.bytes" => self.max_message_bytes = None,
            "compression.type" => self.compression_type = None,
            "min.insync.replicas" => self.min_insync_replicas = None,
            // One value each, never stored: nothing to remove.
            "cleanup.policy" | "message.timestamp.type" => {}
            _ => unreachable!("every dynamic key is matched"),
        }
        Ok(())
    }

    /// The topic's own value of `key`, as Kafka writes it; `None`: the broker's default.
    pub fn value(&self, key: &str) -> Option<String> {
        match key {
            "retention.ms" => self.retention_ms.map(|v| v.to_string()),
            "retention.bytes" => self.retention_bytes.map(|v| v.to_string()),
            "max.message.bytes" => self.max_message_bytes.map(|v| v.to_string()),
            "compression.type" => self.compression_type.map(|v| v.name().to_string()),
            "min.insync.replicas" => self.min_insync_replicas.map(|v| v.to_string()),
            _ => None,
        }
    }

    /// Every key the topic sets, with its value, in [`DYNAMIC_TOPIC_KEYS`] order.
    pub fn entries(&self) -> Vec<(&'static str, String)> {
        DYNAMIC_TOPIC_KEYS
            .iter()
            .filter_map(|key| self.value(key.name).map(|value| (key.name, value)))
            .collect()
    }

    /// Parses a whole set of `key=value` pairs (CreateTopics, the admin socket).
    pub fn from_pairs<'a>(
        pairs: impl IntoIterator<Item = (&'a str, Option<&'a str>)>,
        limits: &ConfigLimits,
    ) -> Result<TopicConfigs, ConfigError> {
        let mut configs = TopicConfigs::default();
        for (key, value) in pairs {
            configs.set(key, value, limits)?;
        }
        Ok(configs)
    }

    /// The ring's encoding, [`TopicConfigs::ENCODED_BYTES`] bytes:
    /// `present u8 (bit per field) | retention_ms i64 | retention_bytes i64 |
    /// max_message_bytes u32 | compression u8 | min_insync u8`, little endian, an absent
    /// field written as 0.
    pub const ENCODED_BYTES: usize = 1 + 8 + 8 + 4 + 1 + 1;

    pub fn encode(&self, out: &mut [u8]) {
        assert!(out.len() >= Self::ENCODED_BYTES);
        let present = u8::from(self.retention_ms.is_some())
            | u8::from(self.retention_bytes.is_some()) << 1
            | u8::from(self.max_message_bytes.is_some()) << 2
            | u8::from(self.compression_type.is_some()) << 3
            | u8::from(self.min_insync_replicas.is_some()) << 4;
        out[0] = present;
        out[1..9].copy_from_slice(&self.retention_ms.unwrap_or(0).to_le_bytes());
        out[9..17].copy_from_slice(&self.retention_bytes.unwrap_or(0).to_le_bytes());
        out[17..21].copy_from_slice(&self.max_message_bytes.unwrap_or(0).to_le_bytes());
        out[21] = self.compression_type.map_or(0, CompressionType::id);
        out[22] = self.min_insync_replicas.unwrap_or(0);
    }

    /// Decodes [`TopicConfigs::encode`]'s bytes; `None` for unknown presence bits or
    /// values out of their ranges.
    pub fn decode(bytes: &[u8]) -> Option<TopicConfigs> {
        if bytes.len() < Self::ENCODED_BYTES || bytes[0] & !0x1f != 0 {
            return None;
        }
        let present = bytes[0];
        let has = |bit: u8| present & (1 << bit) != 0;
        let i64_at = |at: usize| i64::from_le_bytes(bytes[at..at + 8].try_into().expect("8"));
        let limit = |v: i64| (v == -1 || v >= 1).then_some(v);
        let configs = TopicConfigs {
            retention_ms: if has(0) {
                Some(limit(i64_at(1))?)
            } else {
                None
            },
            retention_bytes: if has(1) {
                Some(limit(i64_at(9))?)
            } else {
                None
            },
            max_message_bytes: has(2)
                .then(|| u32::from_le_bytes(bytes[17..21].try_into().expect("4"))),
            compression_type: if has(3) {
                Some(CompressionType::from_id(bytes[21])?)
            } else {
                None
            },
            min_insync_replicas: if has(4) {
                Some(bytes[22]).filter(|v| (1..=MIN_INSYNC_REPLICAS_MAX).contains(v))
            } else {
                None
            },
        };
        if has(4) && configs.min_insync_replicas.is_none() {
            return None;
        }
        Some(configs)
    }
}

/// One `key=value` option of a topic's line in `topics.manifest` that is one of its
/// configurations. The data plane writes and reads them; the control plane reads them
/// to describe a topic. Retention keeps the manifest's older encoding: 0 is "forever".
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ManifestOption {
    RetentionMs(u64),
    RetentionBytes(u64),
    MinInsyncReplicas(u8),
    MaxMessageBytes(u32),
    Compression(CompressionType),
}

impl ManifestOption {
    /// `Ok(None)`: a `key=value` of another kind (replication); `Err`: a config key
    /// with a bad value.
    pub fn parse(option: &str) -> Result<Option<ManifestOption>, &'static str> {
        let Some((key, value)) = option.split_once('=') else {
            return Ok(None);
        };
        let bad = "bad option value";
        Ok(Some(match key {
            "retention_ms" => ManifestOption::RetentionMs(value.parse().map_err(|_| bad)?),
            "retention_bytes" => ManifestOption::RetentionBytes(value.parse().map_err(|_| bad)?),
            "min_insync_replicas" => {
                ManifestOption::MinInsyncReplicas(value.parse().map_err(|_| bad)?)
            }
            "max_message_bytes" => ManifestOption::MaxMessageBytes(value.parse().map_err(|_| bad)?),
            "compression_type" => {
                ManifestOption::Compression(CompressionType::parse(value).ok_or(bad)?)
            }
            _ => return Ok(None),
        }))
    }

    /// The configurations a manifest line's options hold.
    pub fn configs_of<'a>(
        options: impl IntoIterator<Item = &'a str>,
    ) -> Result<TopicConfigs, &'static str> {
        let mut configs = TopicConfigs::default();
        for option in options {
            match ManifestOption::parse(option)? {
                Some(ManifestOption::RetentionMs(ms)) => {
                    configs.retention_ms = Some(if ms == 0 { -1 } else { ms as i64 })
                }
                Some(ManifestOption::RetentionBytes(bytes)) => {
                    configs.retention_bytes = Some(if bytes == 0 { -1 } else { bytes as i64 })
                }
                Some(ManifestOption::MinInsyncReplicas(n)) => {
                    configs.min_insync_replicas = (n != 0).then_some(n)
                }
                Some(ManifestOption::MaxMessageBytes(bytes)) => {
                    configs.max_message_bytes = Some(bytes)
                }
                Some(ManifestOption::Compression(c)) => configs.compression_type = Some(c),
                None => {}
            }
        }
        Ok(configs)
    }
}

impl std::fmt::Display for ManifestOption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ManifestOption::RetentionMs(v) => write!(f, "retention_ms={v}"),
            ManifestOption::RetentionBytes(v) => write!(f, "retention_bytes={v}"),
            ManifestOption::MinInsyncReplicas(v) => write!(f, "min_insync_replicas={v}"),
            ManifestOption::MaxMessageBytes(v) => write!(f, "max_message_bytes={v}"),
            ManifestOption::Compression(c) => write!(f, "compression_type={}", c.name()),
        }
    }
}

/// A Kafka retention value (-1 forever) as the log and the manifest hold it (0 forever).
pub fn retention_as_log(value: i64) -> u64 {
    assert!(value == -1 || value >= 1);
    if value == -1 {
        0
    } else {
        value as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: ConfigLimits = ConfigLimits {
        message_bytes_max: 1 << 20,
    };

    #[test]
    fn kafka_values_parse_and_print_back() {
        let configs = TopicConfigs::from_pairs(
            [
                ("retention.ms", Some("3600000")),
                ("retention.bytes", Some("-1")),
                ("max.message.bytes", Some("2048")),
                ("compression.type", Some("zstd")),
                ("min.insync.replicas", Some("2")),
                ("cleanup.policy", Some("delete")),
                ("message.timestamp.type", Some("CreateTime")),
            ],
            &LIMITS,
        )
        .unwrap();
        assert_eq!(
            configs.entries(),
            vec![
                ("retention.ms", "3600000".to_string()),
                ("retention.bytes", "-1".to_string()),
                ("max.message.bytes", "2048".to_string()),
                ("compression.type", "zstd".to_string()),
                ("min.insync.replicas", "2".to_string()),
            ]
        );
        let mut bytes = [0u8; TopicConfigs::ENCODED_BYTES];
        configs.encode(&mut bytes);
        assert_eq!(TopicConfigs::decode(&bytes), Some(configs));
        let mut empty = [0u8; TopicConfigs::ENCODED_BYTES];
        TopicConfigs::default().encode(&mut empty);
        assert_eq!(TopicConfigs::decode(&empty), Some(TopicConfigs::default()));
    }

    #[test]
    fn bad_values_name_the_key_and_what_it_takes() {
        let mut configs = TopicConfigs::default();
        let cases = [
            (
                "retention.ms",
                "abc",
                "retention.ms=\"abc\": a number of milliseconds",
            ),
            ("retention.ms", "0", "or -1 to keep forever"),
            (
                "compression.type",
                "brotli",
                "one of producer, uncompressed, gzip",
            ),
            ("max.message.bytes", "2000000", "from 0 to 1048576"),
            (
                "min.insync.replicas",
                "0",
                "1 to the topic's replication factor",
            ),
            (
                "cleanup.policy",
                "compact",
                "compaction is not supported yet",
            ),
            (
                "cleanup.policy",
                "compact,delete",
                "compaction is not supported yet",
            ),
            (
                "message.timestamp.type",
                "LogAppendTime",
                "LogAppendTime is not supported",
            ),
            ("segment.bytes", "1000", "segment.bytes is read-only here"),
            ("no.such.key", "1", "unknown topic config \"no.such.key\""),
        ];
        for (key, value, wanted) in cases {
            let error = configs.set(key, Some(value), &LIMITS).unwrap_err();
            assert!(
                error.to_string().contains(wanted),
                "{key}={value}: {error} lacks {wanted:?}"
            );
        }
        assert_eq!(
            configs,
            TopicConfigs::default(),
            "a refusal changes nothing"
        );
        assert_eq!(
            configs.set("retention.ms", None, &LIMITS),
            Err(ConfigError::Missing {
                key: "retention.ms"
            })
        );
    }

    #[test]
    fn delete_returns_a_key_to_the_default() {
        let mut configs = TopicConfigs::default();
        configs
            .set("compression.type", Some("lz4"), &LIMITS)
            .unwrap();
        configs.delete("compression.type").unwrap();
        assert_eq!(configs, TopicConfigs::default());
        assert!(configs.delete("segment.bytes").is_err());
        assert!(configs.delete("nope").is_err());
    }

    #[test]
    fn ring_decoding_refuses_what_set_refuses() {
        let mut bytes = [0u8; TopicConfigs::ENCODED_BYTES];
        bytes[0] = 1 << 5;
        assert_eq!(TopicConfigs::decode(&bytes), None, "unknown presence bit");
        bytes[0] = 1; // retention.ms 0
        assert_eq!(TopicConfigs::decode(&bytes), None);
        bytes[0] = 1 << 4; // min.insync 0
        assert_eq!(TopicConfigs::decode(&bytes), None);
        bytes[0] = 1 << 3;
        bytes[21] = 9;
        assert_eq!(TopicConfigs::decode(&bytes), None, "codec id out of range");
    }

    #[test]
    fn manifest_options_keep_the_old_retention_encoding() {
        let configs = ManifestOption::configs_of([
            "retention_ms=0",
            "retention_bytes=1024",
            "replication_factor=3",
            "min_insync_replicas=2",
            "max_message_bytes=4096",
            "compression_type=uncompressed",
        ])
        .unwrap();
        assert_eq!(configs.retention_ms, Some(-1));
        assert_eq!(configs.retention_bytes, Some(1024));
        assert_eq!(configs.min_insync_replicas, Some(2));
        assert_eq!(configs.max_message_bytes, Some(4096));
        assert_eq!(
            configs.compression_type,
            Some(CompressionType::Codec(Compression::None))
        );
        let option = ManifestOption::Compression(CompressionType::Codec(Compression::Zstd));
        assert_eq!(option.to_string(), "compression_type=zstd");
        assert!(ManifestOption::parse("compression_type=brotli").is_err());
    }

    #[test]
    fn recompression_only_where_codecs_differ() {
        let zstd = CompressionType::Codec(Compression::Zstd);
        assert_eq!(
            zstd.recompress_to(Compression::Lz4),
            Some(Compression::Zstd)
        );
        assert_eq!(zstd.recompress_to(Compression::Zstd), None);
        assert_eq!(
            CompressionType::Producer.recompress_to(Compression::Gzip),
            None
        );
        for id in 0..=5 {
            assert_eq!(CompressionType::from_id(id).unwrap().id(), id);
        }
    }
}
