//! Entries of the `cnc` rings (DESIGN.md §3): commands the control plane sends to the data
//! plane on the command ring and events the data plane answers with on the event ring.
//!
//! Every command gets exactly one event carrying the command's correlation id: [`Event::Done`]
//! or [`Event::TopicCreated`] on success, [`Event::Failed`] otherwise. The control plane
//! chooses correlation ids (unique among its outstanding commands); the data plane copies
//! them. Encoding and decoding are allocation free; all integers are little endian.
//!
//! ```text
//!  kind                      payload
//!  KIND_CREATE_TOPIC    1    retention_ms u64 | retention_bytes u64 | partitions u16 | name_len u16 | name
//!  KIND_DELETE_TOPIC    2    name_len u16 | name
//!  KIND_ALTER_TOPIC     3    flags u8 (bit 0: retention_ms set, bit 1: retention_bytes set)
//!                            | retention_ms u64 | retention_bytes u64 | name_len u16 | name
//!                            (an unset value is encoded as 0 and must be 0)
//!  KIND_CREATE_TOPIC    1    (then) replication factor u8 | min_insync u8 | acks_all u8
//!                            before name_len, see `TopicReplication`
//!  KIND_PING            4    (empty)
//!  KIND_SET_LEADER      5    partition u16 | leader u16 (broker id) | epoch u32 | isr u64 (packed)
//!                            | name_len u16 | name
//!  KIND_SET_ISR         6    partition u16 | epoch u32 | isr u64 (packed) | name_len u16 | name
//!  KIND_CREATE_PARTITIONS 7  partitions u16 (the new count) | name_len u16 | name
//!  KIND_SET_TOPIC_CONFIGS 8  configs (TopicConfigs::ENCODED_BYTES, see `topic_config`)
//!                            | name_len u16 | name
//!  KIND_DONE        0x101    (empty)
//!  KIND_TOPIC_CREATED 0x102  topic_id u16 | partitions u16
//!  KIND_FAILED      0x103    code u16 (frame::ErrorCode) | message_len u16 | message (UTF-8)
//! ```

use crate::frame::{ErrorCode, TOPIC_NAME_BYTES_MAX};
use crate::topic_config::TopicConfigs;

/// Largest payload of a ring entry, in bytes (the shm ring's slot payload is at least this).
pub const COMMAND_PAYLOAD_BYTES_MAX: usize = 488;
/// Longest message of [`Event::Failed`], in bytes of UTF-8.
pub const FAILED_MESSAGE_BYTES_MAX: usize = 256;

pub const KIND_CREATE_TOPIC: u32 = 1;
pub const KIND_DELETE_TOPIC: u32 = 2;
pub const KIND_ALTER_TOPIC: u32 = 3;
pub const KIND_PING: u32 = 4;
pub const KIND_SET_LEADER: u32 = 5;
pub const KIND_SET_ISR: u32 = 6;
pub const KIND_CREATE_PARTITIONS: u32 = 7;
pub const KIND_SET_TOPIC_CONFIGS: u32 = 8;
pub const KIND_DONE: u32 = 0x101;
pub const KIND_TOPIC_CREATED: u32 = 0x102;
pub const KIND_FAILED: u32 = 0x103;

const ALTER_RETENTION_MS: u8 = 1 << 0;
const ALTER_RETENTION_BYTES: u8 = 1 << 1;
const ALTER_FLAGS_KNOWN: u8 = ALTER_RETENTION_MS | ALTER_RETENTION_BYTES;

const CREATE_FIXED_BYTES: usize = 8 + 8 + 2 + 2;
const ALTER_FIXED_BYTES: usize = 1 + 8 + 8 + 2;
const _: () = assert!(CREATE_FIXED_BYTES + TOPIC_NAME_BYTES_MAX <= COMMAND_PAYLOAD_BYTES_MAX);
const _: () = assert!(ALTER_FIXED_BYTES + TOPIC_NAME_BYTES_MAX <= COMMAND_PAYLOAD_BYTES_MAX);
const _: () =
    assert!(TopicConfigs::ENCODED_BYTES + 2 + TOPIC_NAME_BYTES_MAX <= COMMAND_PAYLOAD_BYTES_MAX);
const _: () = assert!(4 + FAILED_MESSAGE_BYTES_MAX <= COMMAND_PAYLOAD_BYTES_MAX);

/// A command, control plane -> data plane. Borrows its strings from the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command<'a> {
    /// `retention_ms` / `retention_bytes` 0 mean the broker's default; so do the fields of
    /// `replication` that are 0.
    CreateTopic {
        name: &'a str,
        partitions: u16,
        retention_ms: u64,
        retention_bytes: u64,
        replication: TopicReplication,
    },
    DeleteTopic {
        name: &'a str,
    },
    /// `None` leaves a setting unchanged.
    AlterTopic {
        name: &'a str,
        retention_ms: Option<u64>,
        retention_bytes: Option<u64>,
    },
    /// Answered with [`Event::Done`]: proves the data plane polls its command ring.
    Ping,
    /// A replicated partition's leader from now on: this broker leads it at `epoch` when
    /// `leader` is its id, else follows `leader`. Epochs only grow (a lower or equal one
    /// is refused: FencedLeaderEpoch). Persisted before it is answered. `isr` (broker ids,
    /// one byte each from the lowest, as the ISR gauge): the ISR the metadata quorum
    /// committed, which a leader in `metadata = "quorum"` mode starts with; 0 = as in
    /// static mode (the leader alone, followers join as they catch up). In quorum mode
    /// `leader = 0` takes the partition offline on this broker. An equal epoch with
    /// another ISR is accepted and changes nothing but the ISR.
    SetLeader {
        name: &'a str,
        partition: u16,
        leader: u16,
        epoch: u32,
        isr: u64,
    },
    /// Quorum mode: the ISR the metadata quorum committed for a partition this broker
    /// leads at `epoch` (packed as in SetLeader) becomes its effective ISR (what the high
    /// watermark and acks=all use). Refused with FencedLeaderEpoch when `epoch` is not
    /// this leader's current one.
    SetIsr {
        name: &'a str,
        partition: u16,
        epoch: u32,
        isr: u64,
    },
    /// Grows topic `name` to `partitions` partitions (more than it has, at most
    /// `PARTITIONS_PER_TOPIC_MAX`); the partitions it has are untouched. The new ones are
    /// placed and replicated as at creation. Answered with [`Event::TopicCreated`] (the
    /// topic's id and its new count) once they take produce, or [`Event::Failed`] with the
    /// topic as it was.
    CreatePartitions {
        name: &'a str,
        partitions: u16,
    },
    /// The topic's whole dynamic configuration from now on (a key left out takes the
    /// broker's default again), persisted in the manifest before it is answered. Refused
    /// with InvalidArgument when `max.message.bytes` exceeds `storage.batch_bytes_max` or
    /// `min.insync.replicas` the topic's replication factor.
    SetTopicConfigs {
        name: &'a str,
        configs: TopicConfigs,
    },
}

/// How a topic is replicated, as a CreateTopic asks. 0 in a field: the broker's default
/// (`topics.default_replication_factor`, `topics.default_min_insync_replicas`,
/// `cluster.acks_all`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TopicReplication {
    /// Replicas of each partition, 1..=5.
    pub factor: u8,
    /// In-sync replicas an acks=all produce needs, 1..=factor.
    pub min_insync: u8,
    /// What acks=all waits for: [`ACKS_ALL_MEMORY`] or [`ACKS_ALL_DURABLE`].
    pub acks_all: u8,
}

/// [`TopicReplication::acks_all`]: in the memory of every in-sync replica.
pub const ACKS_ALL_MEMORY: u8 = 1;
/// [`TopicReplication::acks_all`]: fdatasync'd on every in-sync replica.
pub const ACKS_ALL_DURABLE: u8 = 2;

/// An event, data plane -> control plane: the one answer to a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event<'a> {
    Done,
    TopicCreated {
        topic_id: u16,
        partitions: u16,
    },
    /// `message` is at most [`FAILED_MESSAGE_BYTES_MAX`] bytes (encode truncates it).
    Failed {
        code: ErrorCode,
        message: &'a str,
    },
}

/// Why a payload is not a valid command or event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("unknown ring entry kind {kind:#x}")]
    UnknownKind { kind: u32 },
    #[error("ring entry of kind {kind:#x} truncated: {needed} bytes needed, {available} present")]
    Truncated {
        kind: u32,
        needed: usize,
        available: usize,
    },
    #[error("ring entry of kind {kind:#x} has {extra} bytes after its end")]
    TrailingBytes { kind: u32, extra: usize },
    #[error("ring entry payload of {payload_bytes} bytes exceeds {COMMAND_PAYLOAD_BYTES_MAX}")]
    PayloadTooLarge { payload_bytes: usize },
    #[error("topic name of {name_bytes} bytes is empty or exceeds {TOPIC_NAME_BYTES_MAX}")]
    NameLength { name_bytes: usize },
    #[error("failure message of {message_bytes} bytes exceeds {FAILED_MESSAGE_BYTES_MAX}")]
    MessageTooLong { message_bytes: usize },
    #[error("string in ring entry of kind {kind:#x} is not UTF-8")]
    NotUtf8 { kind: u32 },
    #[error("alter-topic flags {flags:#x} has unknown bits, or an unset value is not 0")]
    BadAlterFlags { flags: u8 },
    #[error("unknown error code {code}")]
    UnknownErrorCode { code: u16 },
    #[error("topic configs with unknown presence bits or out-of-range values")]
    BadTopicConfigs,
}

/// A cursor over a payload that reports truncation with the entry's kind.
struct Reader<'a> {
    kind: u32,
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn new(kind: u32, bytes: &'a [u8]) -> Result<Reader<'a>, CommandError> {
        if bytes.len() > COMMAND_PAYLOAD_BYTES_MAX {
            return Err(CommandError::PayloadTooLarge {
                payload_bytes: bytes.len(),
            });
        }
        Ok(Reader { kind, bytes, at: 0 })
    }

    fn take(&mut self, count: usize) -> Result<&'a [u8], CommandError> {
        let end = self.at + count;
        if end > self.bytes.len() {
            return Err(CommandError::Truncated {
                kind: self.kind,
                needed: end,
                available: self.bytes.len(),
            });
        }
        let taken = &self.bytes[self.at..end];
        self.at = end;
        Ok(taken)
    }

    fn u8(&mut self) -> Result<u8, CommandError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, CommandError> {
        Ok(u16::from_le_bytes(
            self.take(2)?.try_into().expect("2 bytes"),
        ))
    }

    fn u32(&mut self) -> Result<u32, CommandError> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }

    fn u64(&mut self) -> Result<u64, CommandError> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }

    fn str(&mut self, length: usize) -> Result<&'a str, CommandError> {
        let kind = self.kind;
        std::str::from_utf8(self.take(length)?).map_err(|_| CommandError::NotUtf8 { kind })
    }

    fn name(&mut self) -> Result<&'a str, CommandError> {
        let name_bytes = self.u16()? as usize;
        if name_bytes == 0 || name_bytes > TOPIC_NAME_BYTES_MAX {
            return Err(CommandError::NameLength { name_bytes });
        }
        self.str(name_bytes)
    }

    fn finish(self) -> Result<(), CommandError> {
        let extra = self.bytes.len() - self.at;
        if extra != 0 {
            return Err(CommandError::TrailingBytes {
                kind: self.kind,
                extra,
            });
        }
        Ok(())
    }
}

/// A cursor writing into an output buffer; panics when it is too small (a caller bug: the
/// buffer is a ring slot of [`COMMAND_PAYLOAD_BYTES_MAX`] bytes, enough for any entry).
struct Writer<'a> {
    out: &'a mut [u8],
    at: usize,
}

impl Writer<'_> {
    fn put(&mut self, bytes: &[u8]) {
        self.out[self.at..self.at + bytes.len()].copy_from_slice(bytes);
        self.at += bytes.len();
    }
}

fn check_name(name: &str) -> Result<(), CommandError> {
    if name.is_empty() || name.len() > TOPIC_NAME_BYTES_MAX {
        return Err(CommandError::NameLength {
            name_bytes: name.len(),
        });
    }
    Ok(())
}

/// The longest prefix of `message` of at most [`FAILED_MESSAGE_BYTES_MAX`] bytes that ends
/// on a character boundary.
fn truncated_message(message: &str) -> &str {
    let mut end = message.len().min(FAILED_MESSAGE_BYTES_MAX);
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    &message[..end]
}

impl<'a> Command<'a> {
    /// The ring entry kind.
    pub fn kind(&self) -> u32 {
        match self {
            Command::CreateTopic { .. } => KIND_CREATE_TOPIC,
            Command::DeleteTopic { .. } => KIND_DELETE_TOPIC,
            Command::AlterTopic { .. } => KIND_ALTER_TOPIC,
            Command::Ping => KIND_PING,
            Command::SetLeader { .. } => KIND_SET_LEADER,
            Command::SetIsr { .. } => KIND_SET_ISR,
            Command::CreatePartitions { .. } => KIND_CREATE_PARTITIONS,
            Command::SetTopicConfigs { .. } => KIND_SET_TOPIC_CONFIGS,
        }
    }

    /// Checks what [`Command::encode`] asserts: a topic name of 1..=249 bytes. The control
    /// plane calls it on operator input before encoding.
    pub fn check(&self) -> Result<(), CommandError> {
        match self {
            Command::CreateTopic { name, .. }
            | Command::DeleteTopic { name }
            | Command::AlterTopic { name, .. }
            | Command::SetLeader { name, .. }
            | Command::SetIsr { name, .. }
            | Command::CreatePartitions { name, .. }
            | Command::SetTopicConfigs { name, .. } => check_name(name),
            Command::Ping => Ok(()),
        }
    }

    /// Writes the payload into `out` and returns its length (at most
    /// [`COMMAND_PAYLOAD_BYTES_MAX`]). Panics when [`Command::check`] fails or `out` is
    /// too small.
    pub fn encode(&self, out: &mut [u8]) -> usize {
        self.check().expect("command checked before encoding");
        let mut writer = Writer { out, at: 0 };
        match *self {
            Command::CreateTopic {
                name,
                partitions,
                retention_ms,
                retention_bytes,
                replication,
            } => {
                writer.put(&retention_ms.to_le_bytes());
                writer.put(&retention_bytes.to_le_bytes());
                writer.put(&partitions.to_le_bytes());
                writer.put(&[
                    replication.factor,
                    replication.min_insync,
                    replication.acks_all,
                ]);
                writer.put(&(name.len() as u16).to_le_bytes());
                writer.put(name.as_bytes());
            }
            Command::DeleteTopic { name } => {
                writer.put(&(name.len() as u16).to_le_bytes());
                writer.put(name.as_bytes());
            }
            Command::AlterTopic {
                name,
                retention_ms,
                retention_bytes,
            } => {
                let flags = if retention_ms.is_some() {
                    ALTER_RETENTION_MS
                } else {
                    0
                } | if retention_bytes.is_some() {
                    ALTER_RETENTION_BYTES
                } else {
                    0
                };
                writer.put(&[flags]);
                writer.put(&retention_ms.unwrap_or(0).to_le_bytes());
                writer.put(&retention_bytes.unwrap_or(0).to_le_bytes());
                writer.put(&(name.len() as u16).to_le_bytes());
                writer.put(name.as_bytes());
            }
            Command::Ping => {}
            Command::SetLeader {
                name,
                partition,
                leader,
                epoch,
                isr,
            } => {
                writer.put(&partition.to_le_bytes());
                writer.put(&leader.to_le_bytes());
                writer.put(&epoch.to_le_bytes());
                writer.put(&isr.to_le_bytes());
                writer.put(&(name.len() as u16).to_le_bytes());
                writer.put(name.as_bytes());
            }
            Command::SetIsr {
                name,
                partition,
                epoch,
                isr,
            } => {
                writer.put(&partition.to_le_bytes());
                writer.put(&epoch.to_le_bytes());
                writer.put(&isr.to_le_bytes());
                writer.put(&(name.len() as u16).to_le_bytes());
                writer.put(name.as_bytes());
            }
            Command::CreatePartitions { name, partitions } => {
                writer.put(&partitions.to_le_bytes());
                writer.put(&(name.len() as u16).to_le_bytes());
                writer.put(name.as_bytes());
            }
            Command::SetTopicConfigs { name, configs } => {
                let mut encoded = [0u8; TopicConfigs::ENCODED_BYTES];
                configs.encode(&mut encoded);
                writer.put(&encoded);
                writer.put(&(name.len() as u16).to_le_bytes());
                writer.put(name.as_bytes());
            }
        }
        assert!(writer.at <= COMMAND_PAYLOAD_BYTES_MAX);
        writer.at
    }

    /// Decodes the payload of a ring entry of `kind`. Borrows strings from `payload`.
    pub fn decode(kind: u32, payload: &'a [u8]) -> Result<Command<'a>, CommandError> {
        let mut reader = Reader::new(kind, payload)?;
        let command = match kind {
            KIND_CREATE_TOPIC => {
                let retention_ms = reader.u64()?;
                let retention_bytes = reader.u64()?;
                let partitions = reader.u16()?;
                let replication = TopicReplication {
                    factor: reader.u8()?,
                    min_insync: reader.u8()?,
                    acks_all: reader.u8()?,
                };
                let name = reader.name()?;
                Command::CreateTopic {
                    name,
                    partitions,
                    retention_ms,
                    retention_bytes,
                    replication,
                }
            }
            KIND_DELETE_TOPIC => Command::DeleteTopic {
                name: reader.name()?,
            },
            KIND_ALTER_TOPIC => {
                let flags = reader.u8()?;
                let retention_ms = reader.u64()?;
                let retention_bytes = reader.u64()?;
                let unset_not_zero = (flags & ALTER_RETENTION_MS == 0 && retention_ms != 0)
                    || (flags & ALTER_RETENTION_BYTES == 0 && retention_bytes != 0);
                if flags & !ALTER_FLAGS_KNOWN != 0 || unset_not_zero {
                    return Err(CommandError::BadAlterFlags { flags });
                }
                let name = reader.name()?;
                Command::AlterTopic {
                    name,
                    retention_ms: (flags & ALTER_RETENTION_MS != 0).then_some(retention_ms),
                    retention_bytes: (flags & ALTER_RETENTION_BYTES != 0)
                        .then_some(retention_bytes),
                }
            }
            KIND_PING => Command::Ping,
            KIND_SET_LEADER => {
                let partition = reader.u16()?;
                let leader = reader.u16()?;
                let epoch = reader.u32()?;
                let isr = reader.u64()?;
                Command::SetLeader {
                    partition,
                    leader,
                    epoch,
                    isr,
                    name: reader.name()?,
                }
            }
            KIND_SET_ISR => {
                let partition = reader.u16()?;
                let epoch = reader.u32()?;
                let isr = reader.u64()?;
                Command::SetIsr {
                    partition,
                    epoch,
                    isr,
                    name: reader.name()?,
                }
            }
            KIND_CREATE_PARTITIONS => {
                let partitions = reader.u16()?;
                Command::CreatePartitions {
                    partitions,
                    name: reader.name()?,
                }
            }
            KIND_SET_TOPIC_CONFIGS => {
                let encoded = reader.take(TopicConfigs::ENCODED_BYTES)?;
                let configs = TopicConfigs::decode(encoded).ok_or(CommandError::BadTopicConfigs)?;
                Command::SetTopicConfigs {
                    configs,
                    name: reader.name()?,
                }
            }
            _ => return Err(CommandError::UnknownKind { kind }),
        };
        reader.finish()?;
        Ok(command)
    }
}

impl<'a> Event<'a> {
    /// The ring entry kind.
    pub fn kind(&self) -> u32 {
        match self {
            Event::Done => KIND_DONE,
            Event::TopicCreated { .. } => KIND_TOPIC_CREATED,
            Event::Failed { .. } => KIND_FAILED,
        }
    }

    /// Writes the payload into `out` and returns its length. A failure message longer than
    /// [`FAILED_MESSAGE_BYTES_MAX`] is cut at the last character boundary within it.
    /// Panics when `out` is too small.
    pub fn encode(&self, out: &mut [u8]) -> usize {
        let mut writer = Writer { out, at: 0 };
        match *self {
            Event::Done => {}
            Event::TopicCreated {
                topic_id,
                partitions,
            } => {
                writer.put(&topic_id.to_le_bytes());
                writer.put(&partitions.to_le_bytes());
            }
            Event::Failed { code, message } => {
                let message = truncated_message(message);
                writer.put(&(code as u16).to_le_bytes());
                writer.put(&(message.len() as u16).to_le_bytes());
                writer.put(message.as_bytes());
            }
        }
        assert!(writer.at <= COMMAND_PAYLOAD_BYTES_MAX);
        writer.at
    }

    /// Decodes the payload of a ring entry of `kind`. Borrows the message from `payload`.
    pub fn decode(kind: u32, payload: &'a [u8]) -> Result<Event<'a>, CommandError> {
        let mut reader = Reader::new(kind, payload)?;
        let event = match kind {
            KIND_DONE => Event::Done,
            KIND_TOPIC_CREATED => Event::TopicCreated {
                topic_id: reader.u16()?,
                partitions: reader.u16()?,
            },
            KIND_FAILED => {
                let code = reader.u16()?;
                let code =
                    ErrorCode::from_u16(code).ok_or(CommandError::UnknownErrorCode { code })?;
                let message_bytes = reader.u16()? as usize;
                if message_bytes > FAILED_MESSAGE_BYTES_MAX {
                    return Err(CommandError::MessageTooLong { message_bytes });
                }
                Event::Failed {
                    code,
                    message: reader.str(message_bytes)?,
                }
            }
            _ => return Err(CommandError::UnknownKind { kind }),
        };
        reader.finish()?;
        Ok(event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip_command(command: Command<'_>) {
        let mut out = [0u8; COMMAND_PAYLOAD_BYTES_MAX];
        let length = command.encode(&mut out);
        assert!(length <= COMMAND_PAYLOAD_BYTES_MAX);
        assert_eq!(Command::decode(command.kind(), &out[..length]), Ok(command));
        // Any shorter payload is truncated, any longer one has trailing bytes.
        for short in 0..length {
            assert!(
                matches!(
                    Command::decode(command.kind(), &out[..short]),
                    Err(CommandError::Truncated { .. } | CommandError::NameLength { .. })
                ),
                "{command:?} cut at {short}"
            );
        }
        assert_eq!(
            Command::decode(command.kind(), &out[..length + 1]),
            Err(CommandError::TrailingBytes {
                kind: command.kind(),
                extra: 1
            })
        );
    }

    fn round_trip_event(event: Event<'_>) {
        let mut out = [0u8; COMMAND_PAYLOAD_BYTES_MAX];
        let length = event.encode(&mut out);
        assert_eq!(Event::decode(event.kind(), &out[..length]), Ok(event));
        for short in 0..length {
            assert!(
                matches!(
                    Event::decode(event.kind(), &out[..short]),
                    Err(CommandError::Truncated { .. })
                ),
                "{event:?} cut at {short}"
            );
        }
        assert!(matches!(
            Event::decode(event.kind(), &out[..length + 1]),
            Err(CommandError::TrailingBytes { extra: 1, .. })
        ));
    }

    #[test]
    fn commands_round_trip() {
        let longest = "t".repeat(TOPIC_NAME_BYTES_MAX);
        for name in ["a", "orders", longest.as_str(), "ünïcode"] {
            round_trip_command(Command::CreateTopic {
                name,
                partitions: 12,
                retention_ms: 86_400_000,
                retention_bytes: 1 << 30,
                replication: TopicReplication {
                    factor: 3,
                    min_insync: 2,
                    acks_all: ACKS_ALL_DURABLE,
                },
            });
            round_trip_command(Command::CreateTopic {
                name,
                partitions: u16::MAX,
                retention_ms: 0,
                retention_bytes: 0,
                replication: TopicReplication::default(),
            });
            round_trip_command(Command::DeleteTopic { name });
            round_trip_command(Command::SetLeader {
                name,
                partition: 1023,
                leader: 3,
                epoch: u32::MAX,
                isr: 0x03_02_01,
            });
            round_trip_command(Command::SetIsr {
                name,
                partition: 7,
                epoch: 9,
                isr: 0x02_01,
            });
            round_trip_command(Command::CreatePartitions {
                name,
                partitions: 1024,
            });
            round_trip_command(Command::SetTopicConfigs {
                name,
                configs: crate::topic_config::TopicConfigs::default(),
            });
            round_trip_command(Command::SetTopicConfigs {
                name,
                configs: crate::topic_config::TopicConfigs {
                    retention_ms: Some(-1),
                    retention_bytes: Some(1 << 30),
                    max_message_bytes: Some(0),
                    compression_type: Some(crate::topic_config::CompressionType::Producer),
                    min_insync_replicas: Some(2),
                },
            });
            for (retention_ms, retention_bytes) in [
                (None, None),
                (Some(0), None),
                (None, Some(7)),
                (Some(u64::MAX), Some(1)),
            ] {
                round_trip_command(Command::AlterTopic {
                    name,
                    retention_ms,
                    retention_bytes,
                });
            }
        }
        round_trip_command(Command::Ping);
        assert_eq!(Command::Ping.encode(&mut []), 0);
    }

    #[test]
    fn events_round_trip() {
        round_trip_event(Event::Done);
        round_trip_event(Event::TopicCreated {
            topic_id: 3,
            partitions: 8,
        });
        round_trip_event(Event::Failed {
            code: ErrorCode::InvalidTopic,
            message: "topic name has a '/'",
        });
        round_trip_event(Event::Failed {
            code: ErrorCode::StorageError,
            message: "",
        });
        let longest = "m".repeat(FAILED_MESSAGE_BYTES_MAX);
        round_trip_event(Event::Failed {
            code: ErrorCode::Busy,
            message: &longest,
        });
    }

    #[test]
    fn long_failure_message_is_cut_on_a_char_boundary() {
        let message = format!("{}é and more", "x".repeat(FAILED_MESSAGE_BYTES_MAX - 1));
        let mut out = [0u8; COMMAND_PAYLOAD_BYTES_MAX];
        let length = Event::Failed {
            code: ErrorCode::StorageError,
            message: &message,
        }
        .encode(&mut out);
        let Ok(Event::Failed { code, message: cut }) = Event::decode(KIND_FAILED, &out[..length])
        else {
            panic!("not decoded");
        };
        assert_eq!(code, ErrorCode::StorageError);
        assert_eq!(cut.len(), FAILED_MESSAGE_BYTES_MAX - 1);
        assert!(message.starts_with(cut));
    }

    #[test]
    fn every_decode_error() {
        assert_eq!(
            Command::decode(99, &[]),
            Err(CommandError::UnknownKind { kind: 99 })
        );
        assert_eq!(
            Event::decode(KIND_PING, &[]),
            Err(CommandError::UnknownKind { kind: KIND_PING })
        );
        assert_eq!(
            Command::decode(KIND_DONE, &[]),
            Err(CommandError::UnknownKind { kind: KIND_DONE })
        );
        assert_eq!(
            Command::decode(KIND_DELETE_TOPIC, &[1]),
            Err(CommandError::Truncated {
                kind: KIND_DELETE_TOPIC,
                needed: 2,
                available: 1
            })
        );
        assert_eq!(
            Command::decode(KIND_PING, &[0]),
            Err(CommandError::TrailingBytes {
                kind: KIND_PING,
                extra: 1
            })
        );
        let big = [0u8; COMMAND_PAYLOAD_BYTES_MAX + 1];
        assert_eq!(
            Command::decode(KIND_PING, &big),
            Err(CommandError::PayloadTooLarge {
                payload_bytes: COMMAND_PAYLOAD_BYTES_MAX + 1
            })
        );
        assert_eq!(
            Event::decode(KIND_DONE, &big),
            Err(CommandError::PayloadTooLarge {
                payload_bytes: COMMAND_PAYLOAD_BYTES_MAX + 1
            })
        );
        assert_eq!(
            Command::decode(KIND_DELETE_TOPIC, &[0, 0]),
            Err(CommandError::NameLength { name_bytes: 0 })
        );
        let mut too_long = [b'a'; 2 + TOPIC_NAME_BYTES_MAX + 1];
        too_long[..2].copy_from_slice(&(TOPIC_NAME_BYTES_MAX as u16 + 1).to_le_bytes());
        assert_eq!(
            Command::decode(KIND_DELETE_TOPIC, &too_long),
            Err(CommandError::NameLength {
                name_bytes: TOPIC_NAME_BYTES_MAX + 1
            })
        );
        assert_eq!(
            Command::decode(KIND_DELETE_TOPIC, &[1, 0, 0xff]),
            Err(CommandError::NotUtf8 {
                kind: KIND_DELETE_TOPIC
            })
        );
        let mut alter = [0u8; ALTER_FIXED_BYTES + 1];
        alter[ALTER_FIXED_BYTES - 2] = 1;
        alter[ALTER_FIXED_BYTES] = b'x';
        assert!(Command::decode(KIND_ALTER_TOPIC, &alter).is_ok());
        alter[0] = 0x4;
        assert_eq!(
            Command::decode(KIND_ALTER_TOPIC, &alter),
            Err(CommandError::BadAlterFlags { flags: 0x4 })
        );
        alter[0] = 0;
        alter[1] = 5; // retention_ms not set yet not 0
        assert_eq!(
            Command::decode(KIND_ALTER_TOPIC, &alter),
            Err(CommandError::BadAlterFlags { flags: 0 })
        );
        assert_eq!(
            Event::decode(KIND_FAILED, &[200, 0, 0, 0]),
            Err(CommandError::UnknownErrorCode { code: 200 })
        );
        let mut failed = [0u8; 4 + FAILED_MESSAGE_BYTES_MAX + 1];
        failed[2..4].copy_from_slice(&(FAILED_MESSAGE_BYTES_MAX as u16 + 1).to_le_bytes());
        assert_eq!(
            Event::decode(KIND_FAILED, &failed),
            Err(CommandError::MessageTooLong {
                message_bytes: FAILED_MESSAGE_BYTES_MAX + 1
            })
        );
        assert_eq!(
            Event::decode(KIND_FAILED, &[6, 0, 1, 0, 0xc3]),
            Err(CommandError::NotUtf8 { kind: KIND_FAILED })
        );
        assert_eq!(
            Event::decode(KIND_TOPIC_CREATED, &[1, 0, 2]),
            Err(CommandError::Truncated {
                kind: KIND_TOPIC_CREATED,
                needed: 4,
                available: 3
            })
        );
        let message = CommandError::UnknownKind { kind: 0x99 }.to_string();
        assert!(message.contains("0x99"), "{message}");
    }

    #[test]
    fn check_refuses_bad_names() {
        assert_eq!(
            Command::DeleteTopic { name: "" }.check(),
            Err(CommandError::NameLength { name_bytes: 0 })
        );
        let long = "n".repeat(TOPIC_NAME_BYTES_MAX + 1);
        assert!(Command::CreateTopic {
            name: &long,
            partitions: 1,
            retention_ms: 0,
            retention_bytes: 0,
            replication: TopicReplication::default(),
        }
        .check()
        .is_err());
        assert_eq!(Command::Ping.check(), Ok(()));
    }

    #[test]
    #[should_panic(expected = "command checked before encoding")]
    fn encode_refuses_unchecked_command() {
        Command::DeleteTopic { name: "" }.encode(&mut [0u8; COMMAND_PAYLOAD_BYTES_MAX]);
    }

    #[test]
    fn kinds_are_distinct() {
        let kinds = [
            KIND_CREATE_TOPIC,
            KIND_DELETE_TOPIC,
            KIND_ALTER_TOPIC,
            KIND_PING,
            KIND_SET_LEADER,
            KIND_SET_ISR,
            KIND_CREATE_PARTITIONS,
            KIND_DONE,
            KIND_TOPIC_CREATED,
            KIND_FAILED,
        ];
        for (i, a) in kinds.iter().enumerate() {
            for b in &kinds[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }
}
