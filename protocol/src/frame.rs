//! The native frame: one per datagram (UDP), per SEND (RDMA) or per ring slot (IPC).
//!
//! ```text
//!  0      2   3   4       6       8              12                      20             24             28   32
//!  +------+---+---+-------+-------+--------------+-----------------------+--------------+--------------+
//!  |magic |ver|op | flags | error |   session    |      request_id       |  partition   |   length     |
//!  | u16  |u8 |u8 |  u16  |  u16  |     u32      |         u64           |     u32      |    u32       |
//!  +------+---+---+-------+-------+--------------+-----------------------+--------------+--------------+
//!  | payload: `length` bytes (a Kafka RecordBatch v2 for Produce; see each opcode below)             |
//!  +--------------------------------------------------------------------------------------------------+
//! ```
//!
//! All integers of the header and of the fixed payload parts are little-endian. The record
//! batches inside Produce and FetchData payloads keep Kafka's own (big-endian) layout, so the
//! bytes are stored and served with no conversion.
//!
//! `partition` is a [`PartitionHandle`]: topic id in the high 16 bits, partition index in
//! the low 16 bits. A client learns a topic's id from a Metadata request, so the data path
//! never parses topic names.

use thiserror::Error;

/// "PR" as the first two bytes on the wire.
pub const FRAME_MAGIC: u16 = u16::from_le_bytes(*b"PR");
pub const FRAME_VERSION: u8 = 1;
pub const FRAME_HEADER_BYTES: usize = 32;
/// The largest frame any transport carries: a jumbo Ethernet MTU less IPv4 and UDP headers.
pub const FRAME_BYTES_MAX: usize = 9000 - 20 - 8;
/// The largest frame on a standard 1500-byte MTU.
pub const FRAME_BYTES_MAX_MTU_1500: usize = 1500 - 20 - 8;
/// Topic names follow Kafka's limit.
pub const TOPIC_NAME_BYTES_MAX: usize = 249;

/// What a frame asks for or answers.
#[repr(u8)]
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Opcode {
    /// Payload: one Kafka RecordBatch v2. `flags` carries [`Acks`].
    Produce = 1,
    /// Payload: [`ProduceAck`]. `error` is set when the batch was refused.
    ProduceAck = 2,
    /// Payload: [`FetchRequest`].
    Fetch = 3,
    /// Payload: [`FetchDataHeader`] then whole record batches. With `error` set to
    /// `OffsetOutOfRange` it carries the header alone: the log's current bounds.
    FetchData = 4,
    /// Payload: [`MetadataRequest`]; `partition` is ignored.
    Metadata = 5,
    /// Payload: [`MetadataResponse`].
    MetadataResponse = 6,
    /// Payload: a UTF-8 message for people; `error` carries the code.
    Error = 7,
    /// Payload: echoed back unchanged in a Pong.
    Ping = 8,
    Pong = 9,
    /// Payload: [`ReadGrantRequest`]. RDMA transport only: asks for one-sided READ access
    /// to the log segment holding an offset.
    ReadGrant = 10,
    /// Payload: [`ReadGrant`]. With `error` set to `OffsetOutOfRange` only its log bounds
    /// are meaningful.
    ReadGrantResponse = 11,
    /// Payload: [`crate::replication::ReplicaFetch`]. Broker to broker: a follower asks
    /// its partition's leader for the batches from its log end on.
    ReplicaFetch = 12,
    /// Payload: [`crate::replication::ReplicaDataHeader`] then whole record batches, as
    /// the leader stored them. With `error` set, the header alone.
    ReplicaData = 13,
}

impl Opcode {
    pub fn from_u8(value: u8) -> Option<Opcode> {
        Some(match value {
            1 => Opcode::Produce,
            2 => Opcode::ProduceAck,
            3 => Opcode::Fetch,
            4 => Opcode::FetchData,
            5 => Opcode::Metadata,
            6 => Opcode::MetadataResponse,
            7 => Opcode::Error,
            8 => Opcode::Ping,
            9 => Opcode::Pong,
            10 => Opcode::ReadGrant,
            11 => Opcode::ReadGrantResponse,
            12 => Opcode::ReplicaFetch,
            13 => Opcode::ReplicaData,
            _ => return None,
        })
    }

    /// True for opcodes a client sends to the broker.
    pub fn is_request(self) -> bool {
        matches!(
            self,
            Opcode::Produce
                | Opcode::Fetch
                | Opcode::Metadata
                | Opcode::Ping
                | Opcode::ReadGrant
                | Opcode::ReplicaFetch
        )
    }
}

/// Acknowledgement level of a Produce: the low two bits of `flags`, and
/// [`FLAG_PRODUCE_ALL_DURABLE`] beside `all`.
#[repr(u8)]
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Acks {
    /// No ack is sent at all.
    None = 0,
    /// Acked once appended to the leader's in-memory active segment.
    Leader = 1,
    /// Acked once the leader's flusher has written and fdatasync'd the batch.
    Durable = 2,
    /// Acked once every in-sync replica holds the batch in memory (the high watermark has
    /// passed it) and the ISR has at least `min_insync_replicas` members: Kafka's acks=all.
    /// On a topic of one replica: as `Leader`.
    All = 3,
    /// Acked once every in-sync replica has fdatasync'd the batch: Redpanda's acks=all.
    /// On a topic of one replica: as `Durable`.
    AllDurable = 4,
}

/// Produce flag beside acks bits `3` (all): wait for fdatasync on every ISR member.
pub const FLAG_PRODUCE_ALL_DURABLE: u16 = 1 << 4;

impl Acks {
    pub const FLAGS_MASK: u16 = 0b11 | FLAG_PRODUCE_ALL_DURABLE;
    pub const ALL: [Acks; 5] = [
        Acks::None,
        Acks::Leader,
        Acks::Durable,
        Acks::All,
        Acks::AllDurable,
    ];

    pub fn from_flags(flags: u16) -> Option<Acks> {
        match (flags & 0b11, flags & FLAG_PRODUCE_ALL_DURABLE != 0) {
            (0, false) => Some(Acks::None),
            (1, false) => Some(Acks::Leader),
            (2, false) => Some(Acks::Durable),
            (3, false) => Some(Acks::All),
            (3, true) => Some(Acks::AllDurable),
            _ => None,
        }
    }

    pub fn to_flags(self) -> u16 {
        match self {
            Acks::AllDurable => 3 | FLAG_PRODUCE_ALL_DURABLE,
            other => other as u16,
        }
    }

    /// `all` is the in-sync replicas' memory (Kafka's meaning); `-1` is Kafka's spelling
    /// of it. A Kafka client's acks=-1 through the gateway takes the topic's `acks_all`.
    pub fn parse(name: &str) -> Option<Acks> {
        match name {
            "none" | "0" => Some(Acks::None),
            "leader" | "1" => Some(Acks::Leader),
            "durable" => Some(Acks::Durable),
            "all" | "-1" => Some(Acks::All),
            "all-durable" => Some(Acks::AllDurable),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Acks::None => "none",
            Acks::Leader => "leader",
            Acks::Durable => "durable",
            Acks::All => "all",
            Acks::AllDurable => "all-durable",
        }
    }

    /// Waits for the in-sync replicas (the high watermark), not only for this broker.
    pub fn waits_for_replicas(self) -> bool {
        matches!(self, Acks::All | Acks::AllDurable)
    }
}

/// Fetch flag: serve only what is durable (fdatasync'd), not everything appended.
pub const FLAG_FETCH_DURABLE_ONLY: u16 = 1 << 2;
/// Metadata flag: create the topic (broker defaults) if it does not exist.
pub const FLAG_METADATA_AUTO_CREATE: u16 = 1 << 3;

/// Error codes carried in the header's `error` field. Zero is success.
#[repr(u16)]
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    None = 0,
    /// The frame could not be decoded (truncated, bad length, unknown opcode for a request).
    InvalidFrame = 1,
    /// The partition handle or topic name names nothing the broker has.
    UnknownTopicOrPartition = 2,
    /// The record batch failed validation: bad CRC, bad magic, inconsistent lengths.
    CorruptMessage = 3,
    /// The batch exceeds the partition's or the port's limit.
    MessageTooLarge = 4,
    /// The producer's sequence skipped ahead: a preceding batch is missing. Retriable.
    OutOfOrderSequence = 5,
    /// The storage could not take the batch (disk full, I/O error). Not retriable until
    /// an operator acts; the message says why.
    StorageError = 6,
    /// A bounded queue is full (pending durable acks, segment not yet prepared). Retriable.
    Busy = 7,
    /// The fetch offset is below the log start or beyond the log end.
    OffsetOutOfRange = 8,
    /// The topic name is empty, too long or has characters Kafka does not allow.
    InvalidTopic = 9,
    /// The topic is being created; ask again shortly. Retriable.
    TopicNotReady = 10,
    /// The frame's version is not one this broker speaks.
    UnsupportedVersion = 11,
    /// The producer epoch is older than one already seen for that producer id.
    InvalidProducerEpoch = 12,
    /// The batch's sequence was appended before, too long ago for its offsets to be known.
    /// The data is in the log exactly once; a client treats this as delivered.
    DuplicateSequence = 13,
    /// An admin command asked to create a topic that exists.
    TopicExists = 14,
    /// An admin command's argument is out of range (partition count, retention).
    InvalidArgument = 15,
    /// This broker does not lead the partition (it follows, or holds no replica): ask
    /// Metadata again and go to the leader. Retriable.
    NotLeaderOrFollower = 16,
    /// acks=all while fewer than `min_insync_replicas` replicas are in sync: nothing was
    /// appended. Retriable.
    NotEnoughReplicas = 17,
    /// The request's leader epoch is older than the partition's: its sender missed a
    /// leader change. Retriable after fresh metadata.
    FencedLeaderEpoch = 18,
    /// The request's leader epoch is newer than the partition's here: this broker has not
    /// heard of that leader yet. Retriable.
    UnknownLeaderEpoch = 19,
}

impl ErrorCode {
    pub fn from_u16(value: u16) -> Option<ErrorCode> {
        Some(match value {
            0 => ErrorCode::None,
            1 => ErrorCode::InvalidFrame,
            2 => ErrorCode::UnknownTopicOrPartition,
            3 => ErrorCode::CorruptMessage,
            4 => ErrorCode::MessageTooLarge,
            5 => ErrorCode::OutOfOrderSequence,
            6 => ErrorCode::StorageError,
            7 => ErrorCode::Busy,
            8 => ErrorCode::OffsetOutOfRange,
            9 => ErrorCode::InvalidTopic,
            10 => ErrorCode::TopicNotReady,
            11 => ErrorCode::UnsupportedVersion,
            12 => ErrorCode::InvalidProducerEpoch,
            13 => ErrorCode::DuplicateSequence,
            14 => ErrorCode::TopicExists,
            15 => ErrorCode::InvalidArgument,
            16 => ErrorCode::NotLeaderOrFollower,
            17 => ErrorCode::NotEnoughReplicas,
            18 => ErrorCode::FencedLeaderEpoch,
            19 => ErrorCode::UnknownLeaderEpoch,
            _ => return None,
        })
    }

    /// Whether a client should retry the same request after a back-off.
    pub fn is_retriable(self) -> bool {
        matches!(
            self,
            ErrorCode::OutOfOrderSequence
                | ErrorCode::Busy
                | ErrorCode::TopicNotReady
                | ErrorCode::NotLeaderOrFollower
                | ErrorCode::NotEnoughReplicas
                | ErrorCode::FencedLeaderEpoch
                | ErrorCode::UnknownLeaderEpoch
        )
    }

    pub fn describe(self) -> &'static str {
        match self {
            ErrorCode::None => "success",
            ErrorCode::InvalidFrame => "invalid frame",
            ErrorCode::UnknownTopicOrPartition => "unknown topic or partition",
            ErrorCode::CorruptMessage => "corrupt record batch",
            ErrorCode::MessageTooLarge => "record batch too large",
            ErrorCode::OutOfOrderSequence => "producer sequence out of order",
            ErrorCode::StorageError => "storage error",
            ErrorCode::Busy => "broker busy, retry",
            ErrorCode::OffsetOutOfRange => "offset out of range",
            ErrorCode::InvalidTopic => "invalid topic name",
            ErrorCode::TopicNotReady => "topic is being created, retry",
            ErrorCode::UnsupportedVersion => "unsupported frame version",
            ErrorCode::InvalidProducerEpoch => "producer epoch fenced",
            ErrorCode::DuplicateSequence => "duplicate of an earlier batch (already in the log)",
            ErrorCode::TopicExists => "topic already exists",
            ErrorCode::InvalidArgument => "invalid argument",
            ErrorCode::NotLeaderOrFollower => "this broker does not lead the partition",
            ErrorCode::NotEnoughReplicas => "fewer in-sync replicas than min_insync_replicas",
            ErrorCode::FencedLeaderEpoch => "leader epoch is older than the partition's",
            ErrorCode::UnknownLeaderEpoch => "leader epoch is newer than the partition's",
        }
    }
}

/// Topic id (high 16 bits) and partition index (low 16 bits) in one `u32`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PartitionHandle(pub u32);

impl PartitionHandle {
    pub fn new(topic_id: u16, partition: u16) -> PartitionHandle {
        PartitionHandle(((topic_id as u32) << 16) | partition as u32)
    }
    pub fn topic_id(self) -> u16 {
        (self.0 >> 16) as u16
    }
    pub fn partition(self) -> u16 {
        self.0 as u16
    }
}

/// Why a datagram is not a frame. Each variant is a counter in the data plane.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Error)]
pub enum FrameError {
    #[error("frame truncated: {bytes} bytes, a header needs {FRAME_HEADER_BYTES}")]
    Truncated { bytes: usize },
    #[error("bad frame magic {found:#06x}")]
    BadMagic { found: u16 },
    #[error("unsupported frame version {found} (this build speaks {FRAME_VERSION})")]
    UnsupportedVersion { found: u8 },
    #[error("unknown opcode {found}")]
    UnknownOpcode { found: u8 },
    #[error("frame length field says {declared} payload bytes, datagram carries {actual}")]
    LengthMismatch { declared: u32, actual: usize },
    #[error("payload of {bytes} bytes is too short for opcode {opcode:?}")]
    PayloadTooShort { opcode: Opcode, bytes: usize },
    #[error("payload is malformed: {reason}")]
    Malformed { reason: &'static str },
}

impl FrameError {
    /// Every [`FrameError::reason`], in variant order: the labels of malformed-frame counters.
    pub const REASONS: [&'static str; 7] = [
        "truncated",
        "bad_magic",
        "unsupported_version",
        "unknown_opcode",
        "length_mismatch",
        "payload_too_short",
        "malformed",
    ];

    /// A stable short name, used as the `reason` label of malformed-frame counters.
    pub fn reason(&self) -> &'static str {
        match self {
            FrameError::Truncated { .. } => "truncated",
            FrameError::BadMagic { .. } => "bad_magic",
            FrameError::UnsupportedVersion { .. } => "unsupported_version",
            FrameError::UnknownOpcode { .. } => "unknown_opcode",
            FrameError::LengthMismatch { .. } => "length_mismatch",
            FrameError::PayloadTooShort { .. } => "payload_too_short",
            FrameError::Malformed { .. } => "malformed",
        }
    }
}

/// The fixed 32-byte header.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    pub opcode: Opcode,
    pub flags: u16,
    pub error: u16,
    pub session: u32,
    pub request_id: u64,
    pub partition: u32,
    pub length: u32,
}

impl FrameHeader {
    pub fn new(opcode: Opcode, request_id: u64, partition: u32, length: usize) -> FrameHeader {
        assert!(length <= u32::MAX as usize);
        FrameHeader {
            opcode,
            flags: 0,
            error: 0,
            session: 0,
            request_id,
            partition,
            length: length as u32,
        }
    }

    /// Writes the header into `out[..FRAME_HEADER_BYTES]`.
    pub fn encode(&self, out: &mut [u8]) {
        assert!(out.len() >= FRAME_HEADER_BYTES);
        out[0..2].copy_from_slice(&FRAME_MAGIC.to_le_bytes());
        out[2] = FRAME_VERSION;
        out[3] = self.opcode as u8;
        out[4..6].copy_from_slice(&self.flags.to_le_bytes());
        out[6..8].copy_from_slice(&self.error.to_le_bytes());
        out[8..12].copy_from_slice(&self.session.to_le_bytes());
        out[12..20].copy_from_slice(&self.request_id.to_le_bytes());
        out[20..24].copy_from_slice(&self.partition.to_le_bytes());
        out[24..28].copy_from_slice(&self.length.to_le_bytes());
        out[28..32].fill(0);
    }

    /// Decodes the header only; `bytes` may be longer than the header.
    pub fn decode(bytes: &[u8]) -> Result<FrameHeader, FrameError> {
        if bytes.len() < FRAME_HEADER_BYTES {
            return Err(FrameError::Truncated { bytes: bytes.len() });
        }
        let magic = u16::from_le_bytes([bytes[0], bytes[1]]);
        if magic != FRAME_MAGIC {
            return Err(FrameError::BadMagic { found: magic });
        }
        if bytes[2] != FRAME_VERSION {
            return Err(FrameError::UnsupportedVersion { found: bytes[2] });
        }
        let opcode =
            Opcode::from_u8(bytes[3]).ok_or(FrameError::UnknownOpcode { found: bytes[3] })?;
        Ok(FrameHeader {
            opcode,
            flags: u16_le(bytes, 4),
            error: u16_le(bytes, 6),
            session: u32_le(bytes, 8),
            request_id: u64_le(bytes, 12),
            partition: u32_le(bytes, 20),
            length: u32_le(bytes, 24),
        })
    }

    /// The header of a frame that failed [`decode_frame`], read well enough to address an
    /// Error reply: the magic must match and the opcode be known; a frame of another
    /// version is read with this version's layout (its request id and session sit at the
    /// same offsets in every version, so the sender can match the `UnsupportedVersion`).
    /// `None` for garbage, which is only counted.
    pub fn decode_for_error_reply(bytes: &[u8]) -> Option<FrameHeader> {
        if bytes.len() < FRAME_HEADER_BYTES {
            return None;
        }
        let mut current = [0u8; FRAME_HEADER_BYTES];
        current.copy_from_slice(&bytes[..FRAME_HEADER_BYTES]);
        current[2] = FRAME_VERSION;
        FrameHeader::decode(&current).ok()
    }

    pub fn error_code(&self) -> Option<ErrorCode> {
        ErrorCode::from_u16(self.error)
    }
}

/// Decodes one whole frame: the header, and a payload of exactly `length` bytes.
pub fn decode_frame(datagram: &[u8]) -> Result<(FrameHeader, &[u8]), FrameError> {
    let header = FrameHeader::decode(datagram)?;
    let payload = &datagram[FRAME_HEADER_BYTES..];
    if payload.len() != header.length as usize {
        return Err(FrameError::LengthMismatch {
            declared: header.length,
            actual: payload.len(),
        });
    }
    Ok((header, payload))
}

/// Writes header + payload into `out`; returns the frame's length in bytes.
pub fn encode_frame(header: &FrameHeader, payload: &[u8], out: &mut [u8]) -> usize {
    assert_eq!(header.length as usize, payload.len());
    let total = FRAME_HEADER_BYTES + payload.len();
    assert!(out.len() >= total);
    header.encode(out);
    out[FRAME_HEADER_BYTES..total].copy_from_slice(payload);
    total
}

/// ProduceAck payload: the offsets the batch was given.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Default)]
pub struct ProduceAck {
    pub base_offset: u64,
    pub last_offset: u64,
}

impl ProduceAck {
    pub const BYTES: usize = 16;
    pub fn encode(&self, out: &mut [u8]) {
        out[0..8].copy_from_slice(&self.base_offset.to_le_bytes());
        out[8..16].copy_from_slice(&self.last_offset.to_le_bytes());
    }
    pub fn decode(payload: &[u8]) -> Result<ProduceAck, FrameError> {
        check_len(Opcode::ProduceAck, payload, Self::BYTES)?;
        Ok(ProduceAck {
            base_offset: u64_le(payload, 0),
            last_offset: u64_le(payload, 8),
        })
    }
}

/// Fetch payload: serve whole batches from the batch holding `offset`, at most `max_bytes`
/// of them (at least one batch is always served when one exists, if it fits the frame).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Default)]
pub struct FetchRequest {
    pub offset: u64,
    pub max_bytes: u32,
}

impl FetchRequest {
    pub const BYTES: usize = 16;
    pub fn encode(&self, out: &mut [u8]) {
        out[0..8].copy_from_slice(&self.offset.to_le_bytes());
        out[8..12].copy_from_slice(&self.max_bytes.to_le_bytes());
        out[12..16].fill(0);
    }
    pub fn decode(payload: &[u8]) -> Result<FetchRequest, FrameError> {
        check_len(Opcode::Fetch, payload, Self::BYTES)?;
        Ok(FetchRequest {
            offset: u64_le(payload, 0),
            max_bytes: u32_le(payload, 8),
        })
    }
}

/// The fixed start of a FetchData payload; whole record batches follow it.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Default)]
pub struct FetchDataHeader {
    /// The offset the next appended record will get (Kafka's log end offset).
    pub high_watermark: u64,
    /// Every offset below this one is on disk.
    pub durable_offset: u64,
    /// The first offset still retained.
    pub log_start_offset: u64,
}

impl FetchDataHeader {
    pub const BYTES: usize = 24;
    pub fn encode(&self, out: &mut [u8]) {
        out[0..8].copy_from_slice(&self.high_watermark.to_le_bytes());
        out[8..16].copy_from_slice(&self.durable_offset.to_le_bytes());
        out[16..24].copy_from_slice(&self.log_start_offset.to_le_bytes());
    }
    pub fn decode(payload: &[u8]) -> Result<(FetchDataHeader, &[u8]), FrameError> {
        if payload.len() < Self::BYTES {
            return Err(FrameError::PayloadTooShort {
                opcode: Opcode::FetchData,
                bytes: payload.len(),
            });
        }
        let header = FetchDataHeader {
            high_watermark: u64_le(payload, 0),
            durable_offset: u64_le(payload, 8),
            log_start_offset: u64_le(payload, 16),
        };
        Ok((header, &payload[Self::BYTES..]))
    }
}

/// The largest record batch a port whose frames carry at most `frame_bytes_max` bytes can
/// both take (in a Produce) and serve back (in a FetchData, which adds its own header).
/// Producers size their batches to it; the broker refuses larger ones, so every stored
/// batch can be fetched over the port it came in on.
pub const fn batch_bytes_max(frame_bytes_max: usize) -> usize {
    frame_bytes_max.saturating_sub(FRAME_HEADER_BYTES + FetchDataHeader::BYTES)
}

/// Metadata payload: `name_len u16 | name bytes`. With [`FLAG_METADATA_AUTO_CREATE`] in the
/// header's flags the broker creates an unknown topic (answering `TopicNotReady` until it is).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct MetadataRequest<'a> {
    pub topic: &'a str,
}

impl<'a> MetadataRequest<'a> {
    pub fn encoded_len(&self) -> usize {
        2 + self.topic.len()
    }
    pub fn encode(&self, out: &mut [u8]) -> usize {
        let len = self.topic.len();
        assert!(len <= TOPIC_NAME_BYTES_MAX);
        out[0..2].copy_from_slice(&(len as u16).to_le_bytes());
        out[2..2 + len].copy_from_slice(self.topic.as_bytes());
        2 + len
    }
    pub fn decode(payload: &'a [u8]) -> Result<MetadataRequest<'a>, FrameError> {
        check_len(Opcode::Metadata, payload, 2)?;
        let len = u16_le(payload, 0) as usize;
        if payload.len() != 2 + len {
            return Err(FrameError::Malformed {
                reason: "metadata topic length disagrees with payload",
            });
        }
        let topic = std::str::from_utf8(&payload[2..]).map_err(|_| FrameError::Malformed {
            reason: "topic name is not UTF-8",
        })?;
        Ok(MetadataRequest { topic })
    }
}

/// MetadataResponse payload: the topic's id and partition count, and the largest frame the
/// broker's port accepts (so producers size their batches to it).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Default)]
pub struct MetadataResponse {
    pub topic_id: u16,
    pub partition_count: u16,
    pub frame_bytes_max: u32,
}

impl MetadataResponse {
    pub const BYTES: usize = 8;
    pub fn encode(&self, out: &mut [u8]) {
        out[0..2].copy_from_slice(&self.topic_id.to_le_bytes());
        out[2..4].copy_from_slice(&self.partition_count.to_le_bytes());
        out[4..8].copy_from_slice(&self.frame_bytes_max.to_le_bytes());
    }
    pub fn decode(payload: &[u8]) -> Result<MetadataResponse, FrameError> {
        check_len(Opcode::MetadataResponse, payload, Self::BYTES)?;
        Ok(MetadataResponse {
            topic_id: u16_le(payload, 0),
            partition_count: u16_le(payload, 2),
            frame_bytes_max: u32_le(payload, 4),
        })
    }
}

/// What follows a [`MetadataResponse`] from a broker of a cluster: who leads each
/// partition and where those brokers' data planes are (older clients read the first 8
/// bytes only).
///
/// ```text
///  me u8 | leaders_count u16 | leaders [u8; leaders_count] | brokers_count u8 |
///  brokers_count x (id u8 | udp_port u16 | ipv4 [u8; 4])
/// ```
/// `me` is the answering broker's id (0: not a cluster); a leader of 0 is unknown (being
/// decided). Partitions past `leaders_count` did not fit the frame: unknown too.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct MetadataLeaders {
    pub me: u8,
    pub leaders: Vec<u8>,
    pub brokers: Vec<(u8, std::net::Ipv4Addr, u16)>,
}

/// Bytes of one broker entry of [`MetadataLeaders`].
pub const METADATA_BROKER_BYTES: usize = 7;

impl MetadataLeaders {
    /// Writes the section into `out` from each partition's leader and a lookup of broker
    /// addresses; returns its length. Writes as many leaders as fit, then the brokers
    /// named that fit. Allocation free.
    pub fn encode(
        me: u8,
        leaders: impl ExactSizeIterator<Item = u8> + Clone,
        address_of: impl Fn(u8) -> Option<(std::net::Ipv4Addr, u16)>,
        out: &mut [u8],
    ) -> usize {
        if out.len() < 4 {
            return 0;
        }
        let room_for_leaders = out.len() - 4;
        let count = leaders.len().min(room_for_leaders).min(u16::MAX as usize);
        out[0] = me;
        out[1..3].copy_from_slice(&(count as u16).to_le_bytes());
        for (slot, leader) in out[3..3 + count].iter_mut().zip(leaders.clone()) {
            *slot = leader;
        }
        let brokers_at = 3 + count;
        let mut at = brokers_at + 1;
        let mut brokers = 0u8;
        // Each broker id once, in order of first appearance; bounded by 255 ids.
        for id in 1..=u8::MAX {
            if !leaders.clone().take(count).any(|l| l == id) {
                continue;
            }
            let Some((ip, port)) = address_of(id) else {
                continue;
            };
            if at + METADATA_BROKER_BYTES > out.len() {
                break;
            }
            out[at] = id;
            out[at + 1..at + 3].copy_from_slice(&port.to_le_bytes());
            out[at + 3..at + 7].copy_from_slice(&ip.octets());
            at += METADATA_BROKER_BYTES;
            brokers += 1;
        }
        out[brokers_at] = brokers;
        at
    }

    /// Reads the section after the 8 bytes of a [`MetadataResponse`]; an empty rest (a
    /// broker of an older version) is no section.
    pub fn decode(rest: &[u8]) -> Result<Option<MetadataLeaders>, FrameError> {
        if rest.is_empty() {
            return Ok(None);
        }
        let bad = FrameError::Malformed {
            reason: "metadata leaders section is truncated",
        };
        if rest.len() < 3 {
            return Err(bad);
        }
        let count = u16_le(rest, 1) as usize;
        let brokers_at = 3 + count;
        if rest.len() < brokers_at + 1 {
            return Err(bad);
        }
        let brokers_count = rest[brokers_at] as usize;
        let end = brokers_at + 1 + brokers_count * METADATA_BROKER_BYTES;
        if rest.len() < end {
            return Err(bad);
        }
        let brokers = rest[brokers_at + 1..end]
            .chunks_exact(METADATA_BROKER_BYTES)
            .map(|b| {
                let ip = std::net::Ipv4Addr::new(b[3], b[4], b[5], b[6]);
                (b[0], ip, u16::from_le_bytes([b[1], b[2]]))
            })
            .collect();
        Ok(Some(MetadataLeaders {
            me: rest[0],
            leaders: rest[3..brokers_at].to_vec(),
            brokers,
        }))
    }

    /// The leader of `partition` and its data-plane address, when known.
    pub fn leader_of(&self, partition: u16) -> Option<(u8, Option<(std::net::Ipv4Addr, u16)>)> {
        let id = *self.leaders.get(partition as usize)?;
        if id == 0 {
            return None;
        }
        let address = self.brokers.iter().find(|b| b.0 == id).map(|b| (b.1, b.2));
        Some((id, address))
    }
}

/// ReadGrant payload: the offset a one-sided reader wants to start at. The broker answers
/// with the segment holding it (the next one to be written when `offset` is the log end).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Default)]
pub struct ReadGrantRequest {
    pub offset: u64,
}

impl ReadGrantRequest {
    pub const BYTES: usize = 16;
    pub fn encode(&self, out: &mut [u8]) {
        out[0..8].copy_from_slice(&self.offset.to_le_bytes());
        out[8..16].fill(0);
    }
    pub fn decode(payload: &[u8]) -> Result<ReadGrantRequest, FrameError> {
        check_len(Opcode::ReadGrant, payload, Self::BYTES)?;
        Ok(ReadGrantRequest {
            offset: u64_le(payload, 0),
        })
    }
}

/// ReadGrantResponse payload: where a segment of the log is in the broker's memory, the
/// remote key that lets RDMA READs reach it, and the word that says how much of it is
/// committed. The registration covers `segment_addr .. segment_addr + segment_bytes` and
/// nothing else: a READ outside it fails on the NIC.
///
/// ```text
///  0            8            16           24           32           40       44       48
///  +------------+------------+------------+------------+------------+--------+--------+
///  |segment_addr|segment_    |segment_base|position    |watermark_  |segment_|water-  |
///  |            |bytes       |_offset     |            |addr        |rkey    |mark_   |
///  |            |            |            |            |            |        |rkey    |
///  +------------+------------+------------+------------+------------+--------+--------+
///  48           56           64           72     76     80
///  +------------+------------+------------+------+------+
///  |committed   |high_       |log_start_  |flags |zero  |
///  |            |watermark   |offset      |      |      |
///  +------------+------------+------------+------+------+
/// ```
#[derive(Copy, Clone, Debug, PartialEq, Eq, Default)]
pub struct ReadGrant {
    /// Remote address of the segment's first byte.
    pub segment_addr: u64,
    /// Bytes registered from `segment_addr` (the segment's capacity while it is active).
    pub segment_bytes: u64,
    /// Offset of the segment's first record.
    pub segment_base_offset: u64,
    /// Byte position in the segment of a batch at or before the requested offset (batches
    /// below the requested offset are skipped by the reader).
    pub position: u64,
    /// Remote address of the segment's [`SegmentWatermark`] word (8 bytes).
    pub watermark_addr: u64,
    pub segment_rkey: u32,
    pub watermark_rkey: u32,
    /// Committed bytes of the segment when the grant was made (as in the watermark word).
    pub committed: SegmentWatermark,
    /// The log end offset when the grant was made.
    pub high_watermark: u64,
    /// The first retained offset.
    pub log_start_offset: u64,
}

impl ReadGrant {
    pub const BYTES: usize = 80;
    pub fn encode(&self, out: &mut [u8]) {
        out[0..8].copy_from_slice(&self.segment_addr.to_le_bytes());
        out[8..16].copy_from_slice(&self.segment_bytes.to_le_bytes());
        out[16..24].copy_from_slice(&self.segment_base_offset.to_le_bytes());
        out[24..32].copy_from_slice(&self.position.to_le_bytes());
        out[32..40].copy_from_slice(&self.watermark_addr.to_le_bytes());
        out[40..44].copy_from_slice(&self.segment_rkey.to_le_bytes());
        out[44..48].copy_from_slice(&self.watermark_rkey.to_le_bytes());
        out[48..56].copy_from_slice(&self.committed.0.to_le_bytes());
        out[56..64].copy_from_slice(&self.high_watermark.to_le_bytes());
        out[64..72].copy_from_slice(&self.log_start_offset.to_le_bytes());
        out[72..80].fill(0);
    }
    pub fn decode(payload: &[u8]) -> Result<ReadGrant, FrameError> {
        check_len(Opcode::ReadGrantResponse, payload, Self::BYTES)?;
        Ok(ReadGrant {
            segment_addr: u64_le(payload, 0),
            segment_bytes: u64_le(payload, 8),
            segment_base_offset: u64_le(payload, 16),
            position: u64_le(payload, 24),
            watermark_addr: u64_le(payload, 32),
            segment_rkey: u32_le(payload, 40),
            watermark_rkey: u32_le(payload, 44),
            committed: SegmentWatermark(u64_le(payload, 48)),
            high_watermark: u64_le(payload, 56),
            log_start_offset: u64_le(payload, 64),
        })
    }
}

/// The 8-byte word (little-endian) a one-sided reader READs to learn how far a segment is
/// committed: the bytes of whole batches published in it (low 40 bits; segments are at
/// most 1 GiB), whether it is sealed (bit 63: it will not grow, read on in the next
/// segment), and whether its grant is revoked (bit 62: the memory is going away; ask for
/// a new grant). Readers never read past `committed()`; they still check each batch's
/// CRC, since a READ of a word the broker is rewriting may mix two values.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Default)]
pub struct SegmentWatermark(pub u64);

impl SegmentWatermark {
    pub const SEALED: u64 = 1 << 63;
    pub const REVOKED: u64 = 1 << 62;
    const COMMITTED_MASK: u64 = (1 << 40) - 1;

    pub fn new(committed_bytes: u64, sealed: bool) -> SegmentWatermark {
        assert!(committed_bytes <= Self::COMMITTED_MASK);
        SegmentWatermark(committed_bytes | if sealed { Self::SEALED } else { 0 })
    }

    pub fn revoked() -> SegmentWatermark {
        SegmentWatermark(Self::REVOKED)
    }

    pub fn committed(self) -> u64 {
        self.0 & Self::COMMITTED_MASK
    }

    pub fn is_sealed(self) -> bool {
        self.0 & Self::SEALED != 0
    }

    pub fn is_revoked(self) -> bool {
        self.0 & Self::REVOKED != 0
    }
}

/// Kafka's rule for topic names: 1..=249 bytes of `[a-zA-Z0-9._-]`, not "." or "..".
pub fn is_valid_topic_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= TOPIC_NAME_BYTES_MAX
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

fn check_len(opcode: Opcode, payload: &[u8], want: usize) -> Result<(), FrameError> {
    if payload.len() < want {
        return Err(FrameError::PayloadTooShort {
            opcode,
            bytes: payload.len(),
        });
    }
    Ok(())
}

pub(crate) fn u16_le(bytes: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([bytes[at], bytes[at + 1]])
}

pub(crate) fn u32_le(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

pub(crate) fn u64_le(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL_OPCODES: [Opcode; 13] = [
        Opcode::Produce,
        Opcode::ProduceAck,
        Opcode::Fetch,
        Opcode::FetchData,
        Opcode::Metadata,
        Opcode::MetadataResponse,
        Opcode::Error,
        Opcode::Ping,
        Opcode::Pong,
        Opcode::ReadGrant,
        Opcode::ReadGrantResponse,
        Opcode::ReplicaFetch,
        Opcode::ReplicaData,
    ];

    fn sample_header() -> FrameHeader {
        FrameHeader {
            opcode: Opcode::Produce,
            flags: Acks::Durable.to_flags() | FLAG_FETCH_DURABLE_ONLY,
            error: ErrorCode::Busy as u16,
            session: 0xdead_beef,
            request_id: 0x0102_0304_0506_0708,
            partition: PartitionHandle::new(7, 3).0,
            length: 5,
        }
    }

    fn encoded(header: &FrameHeader, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![0u8; FRAME_HEADER_BYTES + payload.len()];
        assert_eq!(encode_frame(header, payload, &mut out), out.len());
        out
    }

    #[test]
    fn constants() {
        assert_eq!(FRAME_MAGIC.to_le_bytes(), *b"PR");
        assert_eq!(FRAME_HEADER_BYTES, 32);
        assert_eq!(FRAME_BYTES_MAX, 8972);
        assert_eq!(FRAME_BYTES_MAX_MTU_1500, 1472);
    }

    #[test]
    fn header_layout_is_little_endian_at_documented_offsets() {
        let bytes = encoded(&sample_header(), b"hello");
        assert_eq!(&bytes[0..2], b"PR");
        assert_eq!(bytes[2], FRAME_VERSION);
        assert_eq!(bytes[3], Opcode::Produce as u8);
        assert_eq!(
            &bytes[4..6],
            &(2u16 | FLAG_FETCH_DURABLE_ONLY).to_le_bytes()
        );
        assert_eq!(&bytes[6..8], &7u16.to_le_bytes());
        assert_eq!(&bytes[8..12], &[0xef, 0xbe, 0xad, 0xde]);
        assert_eq!(&bytes[12..20], &[8, 7, 6, 5, 4, 3, 2, 1]);
        assert_eq!(&bytes[20..24], &[3, 0, 7, 0]);
        assert_eq!(&bytes[24..28], &5u32.to_le_bytes());
        assert_eq!(&bytes[28..32], &[0; 4], "reserved bytes are zero");
        assert_eq!(&bytes[32..], b"hello");
    }

    #[test]
    fn round_trips_every_opcode() {
        for opcode in ALL_OPCODES {
            for payload in [&b""[..], b"x", &[0xabu8; 1000]] {
                let mut header = FrameHeader::new(opcode, u64::MAX - 1, u32::MAX, payload.len());
                header.flags = u16::MAX;
                header.error = ErrorCode::DuplicateSequence as u16;
                header.session = 1;
                let bytes = encoded(&header, payload);
                let (decoded, decoded_payload) = decode_frame(&bytes).unwrap();
                assert_eq!(decoded, header);
                assert_eq!(decoded_payload, payload);
                assert_eq!(FrameHeader::decode(&bytes).unwrap(), header);
                assert_eq!(decoded.error_code(), Some(ErrorCode::DuplicateSequence));
            }
        }
    }

    #[test]
    fn header_decode_ignores_bytes_after_the_header() {
        let mut bytes = encoded(&sample_header(), b"hello");
        bytes.extend_from_slice(b"more");
        assert_eq!(FrameHeader::decode(&bytes), Ok(sample_header()));
    }

    #[test]
    fn opcodes_map_both_ways() {
        for opcode in ALL_OPCODES {
            assert_eq!(Opcode::from_u8(opcode as u8), Some(opcode));
        }
        for value in [0u8, 14, 100, 255] {
            assert_eq!(Opcode::from_u8(value), None);
        }
        let requests: Vec<Opcode> = ALL_OPCODES.into_iter().filter(|o| o.is_request()).collect();
        assert_eq!(
            requests,
            [
                Opcode::Produce,
                Opcode::Fetch,
                Opcode::Metadata,
                Opcode::Ping,
                Opcode::ReadGrant,
                Opcode::ReplicaFetch,
            ]
        );
    }

    #[test]
    fn metadata_leaders_round_trip_and_fit_what_room_there_is() {
        use std::net::Ipv4Addr;
        let address = |id: u8| (id <= 3).then(|| (Ipv4Addr::new(10, 0, 0, id), 9190));
        let leaders = [1u8, 2, 3, 1, 0];
        let mut out = [0u8; 64];
        let n = MetadataLeaders::encode(2, leaders.iter().copied(), address, &mut out);
        let decoded = MetadataLeaders::decode(&out[..n]).unwrap().unwrap();
        assert_eq!(decoded.me, 2);
        assert_eq!(decoded.leaders, leaders);
        assert_eq!(decoded.brokers.len(), 3);
        assert_eq!(
            decoded.leader_of(2),
            Some((3, Some((Ipv4Addr::new(10, 0, 0, 3), 9190))))
        );
        assert_eq!(decoded.leader_of(4), None, "0 is unknown");
        assert_eq!(decoded.leader_of(9), None, "past the list");
        // A short frame keeps what fits, and stays decodable.
        let mut short = [0u8; 9];
        let n = MetadataLeaders::encode(2, leaders.iter().copied(), address, &mut short);
        let decoded = MetadataLeaders::decode(&short[..n]).unwrap().unwrap();
        assert_eq!(decoded.leaders, leaders);
        assert!(decoded.brokers.is_empty());
        assert_eq!(MetadataLeaders::decode(&[]), Ok(None));
        assert!(MetadataLeaders::decode(&out[..4]).is_err());
    }

    #[test]
    fn read_grant_round_trips_and_refuses_short_payloads() {
        let request = ReadGrantRequest { offset: 1 << 40 };
        let mut bytes = [0xffu8; ReadGrantRequest::BYTES];
        request.encode(&mut bytes);
        assert_eq!(&bytes[8..], &[0; 8], "padding is zero");
        assert_eq!(ReadGrantRequest::decode(&bytes), Ok(request));
        assert_eq!(
            ReadGrantRequest::decode(&bytes[..15]),
            Err(FrameError::PayloadTooShort {
                opcode: Opcode::ReadGrant,
                bytes: 15
            })
        );
        let grant = ReadGrant {
            segment_addr: 0x7f00_0000_0000,
            segment_bytes: 32 << 20,
            segment_base_offset: 1000,
            position: 4096,
            watermark_addr: 0x7f11_0000_0040,
            segment_rkey: 0x1234,
            watermark_rkey: 0x5678,
            committed: SegmentWatermark::new(8192, true),
            high_watermark: 2000,
            log_start_offset: 0,
        };
        let mut bytes = [0xffu8; ReadGrant::BYTES];
        grant.encode(&mut bytes);
        assert_eq!(ReadGrant::decode(&bytes), Ok(grant));
        assert!(ReadGrant::decode(&bytes[..ReadGrant::BYTES - 1]).is_err());
        assert_eq!(&bytes[72..], &[0; 8]);
    }

    #[test]
    fn segment_watermark_flags_and_bytes() {
        let open = SegmentWatermark::new(12345, false);
        assert_eq!(open.committed(), 12345);
        assert!(!open.is_sealed() && !open.is_revoked());
        let sealed = SegmentWatermark::new(1 << 30, true);
        assert_eq!(sealed.committed(), 1 << 30);
        assert!(sealed.is_sealed() && !sealed.is_revoked());
        let revoked = SegmentWatermark::revoked();
        assert!(revoked.is_revoked());
        assert_eq!(revoked.committed(), 0);
    }

    #[test]
    fn acks_flags_and_names() {
        for acks in Acks::ALL {
            assert_eq!(Acks::from_flags(acks.to_flags()), Some(acks));
            // Other flag bits do not disturb the acks bits.
            assert_eq!(
                Acks::from_flags(acks.to_flags() | FLAG_FETCH_DURABLE_ONLY | 0xff00),
                Some(acks)
            );
            assert_eq!(Acks::parse(acks.name()), Some(acks));
        }
        assert_eq!(Acks::from_flags(3), Some(Acks::All));
        assert_eq!(Acks::parse("0"), Some(Acks::None));
        assert_eq!(Acks::parse("1"), Some(Acks::Leader));
        assert_eq!(Acks::parse("all"), Some(Acks::All));
        assert_eq!(Acks::parse("-1"), Some(Acks::All));
        assert_eq!(Acks::parse("all-durable"), Some(Acks::AllDurable));
        for acks in Acks::ALL {
            assert_eq!(Acks::from_flags(acks.to_flags()), Some(acks));
        }
        assert_eq!(Acks::from_flags(FLAG_PRODUCE_ALL_DURABLE | 1), None);
        assert_eq!(Acks::parse("ALL"), None);
        assert_eq!(Acks::parse(""), None);
        assert_eq!(FLAG_FETCH_DURABLE_ONLY & Acks::FLAGS_MASK, 0);
        assert_eq!(FLAG_METADATA_AUTO_CREATE & Acks::FLAGS_MASK, 0);
        assert_ne!(FLAG_FETCH_DURABLE_ONLY, FLAG_METADATA_AUTO_CREATE);
    }

    #[test]
    fn error_codes_map_both_ways() {
        let mut described = Vec::new();
        for value in 0..=19u16 {
            let code = ErrorCode::from_u16(value).unwrap();
            assert_eq!(code as u16, value);
            assert!(!code.describe().is_empty());
            described.push(code.describe());
        }
        described.sort();
        described.dedup();
        assert_eq!(described.len(), 20, "every description is distinct");
        assert_eq!(ErrorCode::from_u16(20), None);
        assert_eq!(ErrorCode::from_u16(u16::MAX), None);
        let retriable: Vec<u16> = (0..=19)
            .filter(|&v| ErrorCode::from_u16(v).unwrap().is_retriable())
            .collect();
        assert_eq!(
            retriable,
            [
                ErrorCode::OutOfOrderSequence as u16,
                ErrorCode::Busy as u16,
                ErrorCode::TopicNotReady as u16,
                ErrorCode::NotLeaderOrFollower as u16,
                ErrorCode::NotEnoughReplicas as u16,
                ErrorCode::FencedLeaderEpoch as u16,
                ErrorCode::UnknownLeaderEpoch as u16,
            ]
        );
        let mut header = sample_header();
        header.error = 999;
        assert_eq!(header.error_code(), None);
    }

    #[test]
    fn partition_handle_packs_topic_high_partition_low() {
        for (topic, partition) in [
            (0u16, 0u16),
            (1, 0),
            (0, 1),
            (7, 3),
            (u16::MAX, 0),
            (0, u16::MAX),
            (u16::MAX, u16::MAX),
        ] {
            let handle = PartitionHandle::new(topic, partition);
            assert_eq!(handle.topic_id(), topic);
            assert_eq!(handle.partition(), partition);
            assert_eq!(handle.0, (topic as u32) << 16 | partition as u32);
        }
        assert_eq!(PartitionHandle::new(0x1234, 0x5678).0, 0x1234_5678);
        // Ordered by topic first, then partition.
        assert!(PartitionHandle::new(1, 0) > PartitionHandle::new(0, u16::MAX));
        assert!(PartitionHandle::new(1, 2) < PartitionHandle::new(1, 3));
    }

    #[test]
    fn truncated_frames_are_refused_at_every_length() {
        let bytes = encoded(&sample_header(), b"hello");
        for cut in 0..FRAME_HEADER_BYTES {
            let error = FrameError::Truncated { bytes: cut };
            assert_eq!(FrameHeader::decode(&bytes[..cut]), Err(error));
            assert_eq!(decode_frame(&bytes[..cut]), Err(error));
        }
        for cut in FRAME_HEADER_BYTES..bytes.len() {
            assert_eq!(
                decode_frame(&bytes[..cut]),
                Err(FrameError::LengthMismatch {
                    declared: 5,
                    actual: cut - FRAME_HEADER_BYTES
                })
            );
        }
    }

    #[test]
    fn every_frame_error_variant() {
        let good = encoded(&sample_header(), b"hello");

        let mut bad_magic = good.clone();
        bad_magic[0] = b'X';
        assert_eq!(
            decode_frame(&bad_magic),
            Err(FrameError::BadMagic {
                found: u16::from_le_bytes([b'X', b'R'])
            })
        );

        let mut bad_version = good.clone();
        bad_version[2] = FRAME_VERSION + 1;
        assert_eq!(
            decode_frame(&bad_version),
            Err(FrameError::UnsupportedVersion {
                found: FRAME_VERSION + 1
            })
        );

        let mut bad_opcode = good.clone();
        bad_opcode[3] = 0;
        assert_eq!(
            decode_frame(&bad_opcode),
            Err(FrameError::UnknownOpcode { found: 0 })
        );

        let mut longer = good.clone();
        longer.push(0);
        assert_eq!(
            decode_frame(&longer),
            Err(FrameError::LengthMismatch {
                declared: 5,
                actual: 6
            })
        );

        assert_eq!(
            ProduceAck::decode(&[0; 15]),
            Err(FrameError::PayloadTooShort {
                opcode: Opcode::ProduceAck,
                bytes: 15
            })
        );
        assert_eq!(
            MetadataRequest::decode(&[3, 0, b'a']),
            Err(FrameError::Malformed {
                reason: "metadata topic length disagrees with payload"
            })
        );
    }

    #[test]
    fn frame_error_reasons_are_distinct_and_messages_say_something() {
        let errors = [
            FrameError::Truncated { bytes: 3 },
            FrameError::BadMagic { found: 0x1234 },
            FrameError::UnsupportedVersion { found: 9 },
            FrameError::UnknownOpcode { found: 200 },
            FrameError::LengthMismatch {
                declared: 1,
                actual: 2,
            },
            FrameError::PayloadTooShort {
                opcode: Opcode::Fetch,
                bytes: 1,
            },
            FrameError::Malformed { reason: "why" },
        ];
        let mut reasons: Vec<&str> = errors.iter().map(FrameError::reason).collect();
        assert_eq!(
            reasons,
            FrameError::REASONS,
            "REASONS lists every variant in order"
        );
        for reason in &reasons {
            assert!(reason.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'));
        }
        reasons.sort();
        reasons.dedup();
        assert_eq!(reasons.len(), errors.len());
        assert!(errors[0].to_string().contains("32"));
        assert!(errors[1].to_string().contains("0x1234"));
        assert!(errors[6].to_string().contains("why"));
    }

    #[test]
    fn produce_ack_round_trips() {
        let ack = ProduceAck {
            base_offset: 1,
            last_offset: u64::MAX,
        };
        let mut out = [0u8; ProduceAck::BYTES];
        ack.encode(&mut out);
        assert_eq!(&out[0..8], &1u64.to_le_bytes());
        assert_eq!(ProduceAck::decode(&out), Ok(ack));
    }

    #[test]
    fn fetch_request_round_trips_and_zeroes_padding() {
        let request = FetchRequest {
            offset: 42,
            max_bytes: 65536,
        };
        let mut out = [0xffu8; FetchRequest::BYTES];
        request.encode(&mut out);
        assert_eq!(&out[12..16], &[0; 4]);
        assert_eq!(FetchRequest::decode(&out), Ok(request));
        assert_eq!(
            FetchRequest::decode(&out[..15]),
            Err(FrameError::PayloadTooShort {
                opcode: Opcode::Fetch,
                bytes: 15
            })
        );
    }

    #[test]
    fn fetch_data_header_round_trips_and_returns_the_batches() {
        let header = FetchDataHeader {
            high_watermark: 100,
            durable_offset: 90,
            log_start_offset: 5,
        };
        let mut out = vec![0u8; FetchDataHeader::BYTES];
        header.encode(&mut out);
        out.extend_from_slice(b"batches");
        let (decoded, rest) = FetchDataHeader::decode(&out).unwrap();
        assert_eq!(decoded, header);
        assert_eq!(rest, b"batches");
        let (_, empty) = FetchDataHeader::decode(&out[..FetchDataHeader::BYTES]).unwrap();
        assert!(empty.is_empty());
        assert_eq!(
            FetchDataHeader::decode(&out[..23]),
            Err(FrameError::PayloadTooShort {
                opcode: Opcode::FetchData,
                bytes: 23
            })
        );
    }

    #[test]
    fn metadata_request_round_trips() {
        for topic in ["a", "orders.eu-west_1", &"t".repeat(TOPIC_NAME_BYTES_MAX)] {
            let request = MetadataRequest { topic };
            let mut out = vec![0u8; request.encoded_len()];
            assert_eq!(request.encode(&mut out), out.len());
            assert_eq!(MetadataRequest::decode(&out), Ok(request));
        }
        // An empty name is framed fine; validity is is_valid_topic_name's job.
        assert_eq!(
            MetadataRequest::decode(&[0, 0]),
            Ok(MetadataRequest { topic: "" })
        );
    }

    #[test]
    fn metadata_request_errors() {
        assert_eq!(
            MetadataRequest::decode(&[1]),
            Err(FrameError::PayloadTooShort {
                opcode: Opcode::Metadata,
                bytes: 1
            })
        );
        assert!(matches!(
            MetadataRequest::decode(&[1, 0, b'a', b'b']),
            Err(FrameError::Malformed { .. })
        ));
        assert_eq!(
            MetadataRequest::decode(&[2, 0, 0xc3, 0x28]),
            Err(FrameError::Malformed {
                reason: "topic name is not UTF-8"
            })
        );
    }

    #[test]
    #[should_panic]
    fn metadata_request_refuses_to_encode_an_overlong_topic() {
        let topic = "t".repeat(TOPIC_NAME_BYTES_MAX + 1);
        let request = MetadataRequest { topic: &topic };
        let mut out = vec![0u8; request.encoded_len()];
        request.encode(&mut out);
    }

    #[test]
    fn metadata_response_round_trips() {
        let response = MetadataResponse {
            topic_id: 9,
            partition_count: 64,
            frame_bytes_max: FRAME_BYTES_MAX as u32,
        };
        let mut out = [0u8; MetadataResponse::BYTES];
        response.encode(&mut out);
        assert_eq!(MetadataResponse::decode(&out), Ok(response));
        assert!(MetadataResponse::decode(&out[..7]).is_err());
    }

    #[test]
    #[should_panic]
    fn encode_frame_refuses_a_length_that_disagrees_with_the_payload() {
        let mut out = [0u8; 64];
        encode_frame(&sample_header(), b"four", &mut out);
    }

    #[test]
    #[should_panic]
    fn encode_frame_refuses_a_short_buffer() {
        let mut out = [0u8; 36];
        encode_frame(&sample_header(), b"hello", &mut out);
    }

    #[test]
    fn topic_names_follow_kafka() {
        for name in [
            "a",
            "A",
            "0",
            "orders",
            "orders.eu-west_1",
            "...",
            "._-",
            "-",
            &"x".repeat(TOPIC_NAME_BYTES_MAX),
        ] {
            assert!(is_valid_topic_name(name), "{name:?} is valid");
        }
        for name in [
            "",
            ".",
            "..",
            "with space",
            "slash/",
            "colon:",
            "tab\t",
            "é",
            "emoji🙂",
            "nul\0",
            &"x".repeat(TOPIC_NAME_BYTES_MAX + 1),
        ] {
            assert!(!is_valid_topic_name(name), "{name:?} is invalid");
        }
        // Every ASCII byte: exactly the documented set is allowed.
        for byte in 0u8..128 {
            let name = (byte as char).to_string();
            let allowed = byte.is_ascii_alphanumeric() || b"._-".contains(&byte);
            assert_eq!(
                is_valid_topic_name(&name),
                allowed && name != ".",
                "{byte:#x}"
            );
        }
    }
}
