//! Kafka RecordBatch v2 (magic 2): the unit Precursor stores, replicates, fetches and serves
//! to Kafka clients, byte for byte as Kafka defines it (all integers big-endian).
//!
//! ```text
//!  offset  field                   type   covered by crc
//!   0      base_offset             i64    no   (the broker assigns it)
//!   8      batch_length            i32    no   (bytes after this field: total - 12)
//!  12      partition_leader_epoch  i32    no   (the broker assigns it)
//!  16      magic                   i8     no   (always 2)
//!  17      crc                     u32         CRC32C of bytes 21..end
//!  21      attributes              i16    yes  bits 0-2 codec, 3 log-append time,
//!                                              4 transactional, 5 control
//!  23      last_offset_delta       i32    yes
//!  27      base_timestamp          i64    yes
//!  35      max_timestamp           i64    yes
//!  43      producer_id             i64    yes
//!  51      producer_epoch          i16    yes
//!  53      base_sequence           i32    yes
//!  57      records_count           i32    yes
//!  61      records                 …      yes  compressed as a whole when a codec is set
//! ```
//!
//! Each record (varints are zig-zag, see [`crate::varint`]):
//!
//! ```text
//!  length varint | attributes i8 | timestamp_delta varlong | offset_delta varint |
//!  key_length varint | key | value_length varint | value |
//!  headers_count varint | (key_length varint | key utf-8 | value_length varint | value)*
//! ```
//!
//! A length of -1 stands for a null key or value. `length` counts the bytes after itself.
//!
//! The data plane only ever calls [`validate_batch`], [`RecordBatchHeader::parse`],
//! [`set_base_offset`] and [`set_partition_leader_epoch`]: none of them allocates.
//! [`records`] and [`RecordBatchBuilder`] allocate and belong to clients and tools.

use std::iter::FusedIterator;

use thiserror::Error;

use crate::compression::{self, Compression};
use crate::frame::ErrorCode;
use crate::varint;

/// Byte offset of `base_offset` (i64).
pub const BASE_OFFSET_OFFSET: usize = 0;
/// Byte offset of `batch_length` (i32).
pub const BATCH_LENGTH_OFFSET: usize = 8;
/// Byte offset of `partition_leader_epoch` (i32).
pub const PARTITION_LEADER_EPOCH_OFFSET: usize = 12;
/// Byte offset of `magic` (i8).
pub const MAGIC_OFFSET: usize = 16;
/// Byte offset of `crc` (u32).
pub const CRC_OFFSET: usize = 17;
/// Byte offset of `attributes` (i16), where the CRC's coverage starts.
pub const ATTRIBUTES_OFFSET: usize = 21;
/// Byte offset of `last_offset_delta` (i32).
pub const LAST_OFFSET_DELTA_OFFSET: usize = 23;
/// Byte offset of `base_timestamp` (i64).
pub const BASE_TIMESTAMP_OFFSET: usize = 27;
/// Byte offset of `max_timestamp` (i64).
pub const MAX_TIMESTAMP_OFFSET: usize = 35;
/// Byte offset of `producer_id` (i64).
pub const PRODUCER_ID_OFFSET: usize = 43;
/// Byte offset of `producer_epoch` (i16).
pub const PRODUCER_EPOCH_OFFSET: usize = 51;
/// Byte offset of `base_sequence` (i32).
pub const BASE_SEQUENCE_OFFSET: usize = 53;
/// Byte offset of `records_count` (i32).
pub const RECORDS_COUNT_OFFSET: usize = 57;
/// Byte offset of the first record (or of the compressed records).
pub const RECORDS_OFFSET: usize = 61;
/// The fixed header of a v2 batch.
pub const BATCH_HEADER_BYTES: usize = 61;
/// Bytes `batch_length` does not count: `base_offset` and `batch_length` themselves
/// (Kafka's `LOG_OVERHEAD`).
pub const LOG_OVERHEAD_BYTES: usize = 12;
/// The smallest `batch_length`: a header with no records.
pub const BATCH_LENGTH_MIN: i32 = (BATCH_HEADER_BYTES - LOG_OVERHEAD_BYTES) as i32;
/// The smallest encoded record: seven one-byte fields (length, attributes, timestamp delta,
/// offset delta, key length, value length, header count).
pub const RECORD_BYTES_MIN: usize = 7;

/// The only batch format this crate speaks.
pub const MAGIC_V2: i8 = 2;
/// `producer_id` of a batch from a non-idempotent producer.
pub const NO_PRODUCER_ID: i64 = -1;
/// Native clients draw their idempotent producer ids at random from
/// `NATIVE_PRODUCER_ID_MIN..=i64::MAX`; the Kafka gateway hands out ids below it
/// (InitProducerId), so an id of one can never be an id of the other.
pub const NATIVE_PRODUCER_ID_MIN: i64 = 1 << 40;
/// `producer_epoch` of a batch from a non-idempotent producer.
pub const NO_PRODUCER_EPOCH: i16 = -1;
/// `base_sequence` of a batch from a non-idempotent producer.
pub const NO_SEQUENCE: i32 = -1;
/// `partition_leader_epoch` a producer writes; the broker overwrites it.
pub const NO_PARTITION_LEADER_EPOCH: i32 = -1;

/// Attribute bit 3: timestamps are the broker's append time (`max_timestamp`), not the
/// producer's create time.
pub const ATTRIBUTE_LOG_APPEND_TIME: i16 = 1 << 3;
/// Attribute bit 4: the batch belongs to a transaction.
pub const ATTRIBUTE_TRANSACTIONAL: i16 = 1 << 4;
/// Attribute bit 5: the batch holds control records (transaction markers).
pub const ATTRIBUTE_CONTROL: i16 = 1 << 5;

/// Why bytes are not a valid record batch. Each variant is a counter in the data plane.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum BatchError {
    /// Fewer bytes than the header, or than the header's `batch_length`, asks for. At the
    /// end of a log this is a torn tail.
    #[error("record batch truncated: {available} bytes, {needed} needed")]
    Truncated { needed: usize, available: usize },
    /// More bytes were given than the batch's `batch_length` accounts for.
    #[error("record batch is {declared} bytes by its length field, {actual} bytes were given")]
    LengthMismatch { declared: usize, actual: usize },
    /// `batch_length` is smaller than a header with no records.
    #[error("record batch length field {batch_length} is below the minimum {BATCH_LENGTH_MIN}")]
    BadBatchLength { batch_length: i32 },
    /// Not a v2 batch.
    #[error("record batch magic {found}, only {MAGIC_V2} is supported")]
    BadMagic { found: i8 },
    /// The CRC32C in the header does not match the bytes it covers.
    #[error(
        "record batch CRC32C mismatch: header says {expected:#010x}, bytes give {computed:#010x}"
    )]
    CrcMismatch { expected: u32, computed: u32 },
    /// `records_count` is below one, or more than the batch's bytes could hold.
    #[error("record batch declares {records_count} records")]
    BadRecordCount { records_count: i32 },
    /// `last_offset_delta` is not `records_count - 1`, as Kafka requires of produced batches.
    #[error("last_offset_delta {last_offset_delta} disagrees with records_count {records_count}")]
    LastOffsetDeltaMismatch {
        last_offset_delta: i32,
        records_count: i32,
    },
    /// The attributes name a codec id Kafka does not define (5-7).
    #[error("unknown compression codec id {codec}")]
    UnknownCompression { codec: u8 },
    /// The records could not be decompressed with the batch's codec.
    #[error("records could not be decompressed: {0}")]
    Decompress(String),
    /// A record inside the batch does not decode.
    #[error("malformed record: {0}")]
    MalformedRecord(&'static str),
}

impl BatchError {
    /// A stable short name, used as the `reason` label of rejected-batch counters.
    pub fn reason(&self) -> &'static str {
        match self {
            BatchError::Truncated { .. } => "truncated",
            BatchError::LengthMismatch { .. } => "length_mismatch",
            BatchError::BadBatchLength { .. } => "bad_batch_length",
            BatchError::BadMagic { .. } => "bad_magic",
            BatchError::CrcMismatch { .. } => "crc_mismatch",
            BatchError::BadRecordCount { .. } => "bad_record_count",
            BatchError::LastOffsetDeltaMismatch { .. } => "last_offset_delta_mismatch",
            BatchError::UnknownCompression { .. } => "unknown_compression",
            BatchError::Decompress(_) => "decompress",
            BatchError::MalformedRecord(_) => "malformed_record",
        }
    }

    /// The code a ProduceAck carries for a batch refused for this reason.
    pub fn error_code(&self) -> ErrorCode {
        ErrorCode::CorruptMessage
    }
}

/// The 61-byte header of a v2 record batch, decoded.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct RecordBatchHeader {
    pub base_offset: i64,
    pub batch_length: i32,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub records_count: i32,
}

impl RecordBatchHeader {
    /// Decodes the header at the start of `bytes` (which may hold more than one batch).
    /// Checks only what the header's own meaning depends on: enough bytes for a header,
    /// magic 2 and a `batch_length` of at least [`BATCH_LENGTH_MIN`]. No CRC check, and the
    /// records need not be present: see [`validate_batch`].
    pub fn parse(bytes: &[u8]) -> Result<RecordBatchHeader, BatchError> {
        if bytes.len() < BATCH_HEADER_BYTES {
            return Err(BatchError::Truncated {
                needed: BATCH_HEADER_BYTES,
                available: bytes.len(),
            });
        }
        let magic = bytes[MAGIC_OFFSET] as i8;
        if magic != MAGIC_V2 {
            return Err(BatchError::BadMagic { found: magic });
        }
        let batch_length = i32_be(bytes, BATCH_LENGTH_OFFSET);
        if batch_length < BATCH_LENGTH_MIN {
            return Err(BatchError::BadBatchLength { batch_length });
        }
        Ok(RecordBatchHeader {
            base_offset: i64_be(bytes, BASE_OFFSET_OFFSET),
            batch_length,
            partition_leader_epoch: i32_be(bytes, PARTITION_LEADER_EPOCH_OFFSET),
            magic,
            crc: i32_be(bytes, CRC_OFFSET) as u32,
            attributes: i16_be(bytes, ATTRIBUTES_OFFSET),
            last_offset_delta: i32_be(bytes, LAST_OFFSET_DELTA_OFFSET),
            base_timestamp: i64_be(bytes, BASE_TIMESTAMP_OFFSET),
            max_timestamp: i64_be(bytes, MAX_TIMESTAMP_OFFSET),
            producer_id: i64_be(bytes, PRODUCER_ID_OFFSET),
            producer_epoch: i16_be(bytes, PRODUCER_EPOCH_OFFSET),
            base_sequence: i32_be(bytes, BASE_SEQUENCE_OFFSET),
            records_count: i32_be(bytes, RECORDS_COUNT_OFFSET),
        })
    }

    /// Writes every field, as it is (the CRC too, not recomputed), into
    /// `out[..BATCH_HEADER_BYTES]`. Panics if `out` is shorter.
    pub fn write(&self, out: &mut [u8]) {
        assert!(out.len() >= BATCH_HEADER_BYTES);
        put(out, BASE_OFFSET_OFFSET, &self.base_offset.to_be_bytes());
        put(out, BATCH_LENGTH_OFFSET, &self.batch_length.to_be_bytes());
        put(
            out,
            PARTITION_LEADER_EPOCH_OFFSET,
            &self.partition_leader_epoch.to_be_bytes(),
        );
        put(out, MAGIC_OFFSET, &self.magic.to_be_bytes());
        put(out, CRC_OFFSET, &self.crc.to_be_bytes());
        put(out, ATTRIBUTES_OFFSET, &self.attributes.to_be_bytes());
        put(
            out,
            LAST_OFFSET_DELTA_OFFSET,
            &self.last_offset_delta.to_be_bytes(),
        );
        put(
            out,
            BASE_TIMESTAMP_OFFSET,
            &self.base_timestamp.to_be_bytes(),
        );
        put(out, MAX_TIMESTAMP_OFFSET, &self.max_timestamp.to_be_bytes());
        put(out, PRODUCER_ID_OFFSET, &self.producer_id.to_be_bytes());
        put(
            out,
            PRODUCER_EPOCH_OFFSET,
            &self.producer_epoch.to_be_bytes(),
        );
        put(out, BASE_SEQUENCE_OFFSET, &self.base_sequence.to_be_bytes());
        put(out, RECORDS_COUNT_OFFSET, &self.records_count.to_be_bytes());
    }

    /// The whole batch's size in bytes: `batch_length` plus the 12 bytes it does not count.
    /// (Zero plus 12 for a negative `batch_length`, which [`parse`](Self::parse) refuses.)
    pub fn total_bytes(&self) -> usize {
        usize::try_from(self.batch_length).unwrap_or(0) + LOG_OVERHEAD_BYTES
    }

    /// The codec named by the attributes.
    pub fn compression(&self) -> Result<Compression, BatchError> {
        Compression::from_attributes(self.attributes).ok_or(BatchError::UnknownCompression {
            codec: (self.attributes & compression::ATTRIBUTES_COMPRESSION_MASK) as u8,
        })
    }

    /// Attribute bit 4: part of a transaction.
    pub fn is_transactional(&self) -> bool {
        self.attributes & ATTRIBUTE_TRANSACTIONAL != 0
    }

    /// Attribute bit 5: holds control records (commit / abort markers).
    pub fn is_control(&self) -> bool {
        self.attributes & ATTRIBUTE_CONTROL != 0
    }

    /// Attribute bit 3: every record's timestamp is `max_timestamp`, set by the broker.
    pub fn timestamp_type_log_append(&self) -> bool {
        self.attributes & ATTRIBUTE_LOG_APPEND_TIME != 0
    }

    /// The offset of the batch's last record.
    pub fn last_offset(&self) -> i64 {
        self.base_offset.wrapping_add(self.last_offset_delta as i64)
    }

    /// The sequence number of the batch's last record, wrapping past `i32::MAX` to 0 as
    /// Kafka does; [`NO_SEQUENCE`] when the batch has none.
    pub fn last_sequence(&self) -> i32 {
        if self.base_sequence == NO_SEQUENCE {
            return NO_SEQUENCE;
        }
        increment_sequence(self.base_sequence, self.last_offset_delta)
    }

    /// Whether an idempotent (or transactional) producer wrote the batch.
    pub fn has_producer_id(&self) -> bool {
        self.producer_id > NO_PRODUCER_ID
    }
}

/// `sequence + increment` in Kafka's producer sequence space: past `i32::MAX` it wraps to 0,
/// not to `i32::MIN` (Kafka's `DefaultRecordBatch.incrementSequence`). `increment` is
/// non-negative.
pub fn increment_sequence(sequence: i32, increment: i32) -> i32 {
    debug_assert!(increment >= 0);
    if sequence > i32::MAX - increment {
        increment - (i32::MAX - sequence) - 1
    } else {
        sequence + increment
    }
}

/// Checks that `bytes` is exactly one whole, intact v2 batch a producer may send: length
/// field matching `bytes.len()`, magic 2, CRC32C correct, at least one record,
/// `last_offset_delta == records_count - 1`, a known codec, and (uncompressed) no more
/// records than its bytes could hold. Does not decompress or decode the records (that is
/// [`records`]) and does not allocate: the data plane calls it per packet.
pub fn validate_batch(bytes: &[u8]) -> Result<RecordBatchHeader, BatchError> {
    let header = RecordBatchHeader::parse(bytes)?;
    let total_bytes = header.total_bytes();
    if bytes.len() < total_bytes {
        return Err(BatchError::Truncated {
            needed: total_bytes,
            available: bytes.len(),
        });
    }
    if bytes.len() > total_bytes {
        return Err(BatchError::LengthMismatch {
            declared: total_bytes,
            actual: bytes.len(),
        });
    }
    let computed = crc32c::crc32c(&bytes[ATTRIBUTES_OFFSET..]);
    if computed != header.crc {
        return Err(BatchError::CrcMismatch {
            expected: header.crc,
            computed,
        });
    }
    let codec = header.compression()?;
    if header.records_count < 1 {
        return Err(BatchError::BadRecordCount {
            records_count: header.records_count,
        });
    }
    if header.last_offset_delta != header.records_count - 1 {
        return Err(BatchError::LastOffsetDeltaMismatch {
            last_offset_delta: header.last_offset_delta,
            records_count: header.records_count,
        });
    }
    let records_bytes = total_bytes - BATCH_HEADER_BYTES;
    if codec == Compression::None
        && header.records_count as usize > records_bytes / RECORD_BYTES_MIN
    {
        return Err(BatchError::BadRecordCount {
            records_count: header.records_count,
        });
    }
    Ok(header)
}

/// Overwrites the batch's `base_offset`, as the broker does on append. The CRC does not
/// cover it. Panics if `batch` is shorter than the field.
pub fn set_base_offset(batch: &mut [u8], base_offset: i64) {
    put(batch, BASE_OFFSET_OFFSET, &base_offset.to_be_bytes());
}

/// Overwrites the batch's `partition_leader_epoch`, as the broker does on append. The CRC
/// does not cover it. Panics if `batch` is shorter than the field.
pub fn set_partition_leader_epoch(batch: &mut [u8], partition_leader_epoch: i32) {
    put(
        batch,
        PARTITION_LEADER_EPOCH_OFFSET,
        &partition_leader_epoch.to_be_bytes(),
    );
}

/// Why a batch could not be recompressed.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum RecompressError {
    #[error("{0}")]
    Batch(#[from] BatchError),
    #[error("{0}")]
    Codec(#[from] compression::CompressionError),
    #[error("recompressed batch of {bytes} bytes does not fit a batch length")]
    TooLarge { bytes: usize },
}

/// `batch` (one whole, valid v2 batch) with its records stored with `codec` instead:
/// decompressed (at most `decompressed_bytes_max` bytes), compressed again, the codec
/// bits of `attributes`, `batch_length` and the CRC32C rewritten. Everything else (base
/// offset, leader epoch, timestamps, producer id, epoch and sequence, the records'
/// offset and timestamp deltas) is kept as the producer sent it. Allocates: the Kafka
/// gateway calls it, never the data plane.
pub fn recompress_batch(
    batch: &[u8],
    codec: Compression,
    decompressed_bytes_max: usize,
) -> Result<Vec<u8>, RecompressError> {
    let mut header = validate_batch(batch)?;
    let from = header.compression()?;
    let records = &batch[BATCH_HEADER_BYTES..];
    let plain = compression::decompress_bounded(from, records, decompressed_bytes_max)?;
    let packed = compression::compress(codec, &plain)?;
    let total = BATCH_HEADER_BYTES + packed.len();
    let batch_length = i32::try_from(total - LOG_OVERHEAD_BYTES)
        .map_err(|_| RecompressError::TooLarge { bytes: total })?;
    header.attributes =
        (header.attributes & !compression::ATTRIBUTES_COMPRESSION_MASK) | codec.attribute_bits();
    header.batch_length = batch_length;
    let mut out = vec![0u8; total];
    header.write(&mut out);
    out[BATCH_HEADER_BYTES..].copy_from_slice(&packed);
    let crc = crc32c::crc32c(&out[ATTRIBUTES_OFFSET..]);
    put(&mut out, CRC_OFFSET, &crc.to_be_bytes());
    debug_assert!(validate_batch(&out).is_ok());
    Ok(out)
}

/// Iterates the batches of `bytes` (a log segment, a FetchData payload): see [`BatchIter`].
pub fn batches(bytes: &[u8]) -> BatchIter<'_> {
    BatchIter {
        bytes,
        position: 0,
        failed: false,
    }
}

/// The batches laid end to end in a byte slice, each yielded with its parsed header and its
/// exact bytes. Only the framing is checked (header, magic, length); call
/// [`validate_batch`] on a yielded slice to check its CRC.
///
/// The first error ends the iteration. A batch cut short at the end of the bytes is
/// [`BatchError::Truncated`]; [`position`](Self::position) then says where the whole
/// batches end, which is where a log's recovery truncates a torn tail.
#[derive(Clone, Debug)]
pub struct BatchIter<'a> {
    bytes: &'a [u8],
    position: usize,
    failed: bool,
}

impl<'a> BatchIter<'a> {
    /// Bytes taken by the whole batches yielded so far.
    pub fn position(&self) -> usize {
        self.position
    }

    /// The bytes not yet yielded.
    pub fn remaining(&self) -> &'a [u8] {
        &self.bytes[self.position..]
    }
}

impl<'a> Iterator for BatchIter<'a> {
    type Item = Result<(RecordBatchHeader, &'a [u8]), BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let rest = self.remaining();
        if rest.is_empty() {
            return None;
        }
        let header = match RecordBatchHeader::parse(rest) {
            Ok(header) => header,
            Err(error) => {
                self.failed = true;
                return Some(Err(error));
            }
        };
        let total_bytes = header.total_bytes();
        if rest.len() < total_bytes {
            self.failed = true;
            return Some(Err(BatchError::Truncated {
                needed: total_bytes,
                available: rest.len(),
            }));
        }
        self.position += total_bytes;
        Some(Ok((header, &rest[..total_bytes])))
    }
}

impl FusedIterator for BatchIter<'_> {}

/// One decoded record, with absolute offset and timestamp.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnedRecord {
    pub offset: i64,
    /// Milliseconds since the Unix epoch: the producer's create time, or the batch's
    /// `max_timestamp` when the batch uses log-append time.
    pub timestamp: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

/// Validates `batch` ([`validate_batch`]), decompresses its records with the batch's codec
/// and decodes every one of them. Every byte of the records must belong to a record.
pub fn records(batch: &[u8]) -> Result<Vec<OwnedRecord>, BatchError> {
    let header = validate_batch(batch)?;
    let codec = header.compression()?;
    let payload = &batch[RECORDS_OFFSET..];
    let decompressed;
    let data: &[u8] = if codec == Compression::None {
        payload
    } else {
        decompressed = compression::decompress(codec, payload)
            .map_err(|error| BatchError::Decompress(error.to_string()))?;
        &decompressed
    };
    let count = header.records_count as usize;
    // Capacity from what the bytes can hold, not from the (untrusted) count.
    let mut out = Vec::with_capacity(count.min(data.len() / RECORD_BYTES_MIN));
    let mut reader = Reader { bytes: data };
    for _ in 0..count {
        out.push(decode_record(&mut reader, &header)?);
    }
    if !reader.bytes.is_empty() {
        return Err(BatchError::MalformedRecord(
            "bytes left after the last record",
        ));
    }
    Ok(out)
}

fn decode_record(
    reader: &mut Reader<'_>,
    header: &RecordBatchHeader,
) -> Result<OwnedRecord, BatchError> {
    let length = reader.varint("record length is not a varint")?;
    let length = usize::try_from(length)
        .map_err(|_| BatchError::MalformedRecord("negative record length"))?;
    let body = reader.take(length, "record length runs past the records")?;
    let mut body = Reader { bytes: body };
    let _attributes = body.take(1, "record attributes missing")?;
    let timestamp_delta = body.varlong("record timestamp delta is not a varlong")?;
    let offset_delta = body.varint("record offset delta is not a varint")?;
    let key = body.nullable_bytes("record key")?;
    let value = body.nullable_bytes("record value")?;
    let headers_count = body.varint("record header count is not a varint")?;
    let headers_count = usize::try_from(headers_count)
        .map_err(|_| BatchError::MalformedRecord("negative record header count"))?;
    // A header takes at least two bytes.
    let mut headers = Vec::with_capacity(headers_count.min(body.bytes.len() / 2));
    for _ in 0..headers_count {
        let key_length = body.varint("header key length is not a varint")?;
        let key_length = usize::try_from(key_length)
            .map_err(|_| BatchError::MalformedRecord("negative header key length"))?;
        let key = body.take(key_length, "header key runs past the record")?;
        let key = std::str::from_utf8(key)
            .map_err(|_| BatchError::MalformedRecord("header key is not UTF-8"))?;
        let value = body.nullable_bytes("header value")?;
        headers.push((key.to_owned(), value.map(<[u8]>::to_vec)));
    }
    if !body.bytes.is_empty() {
        return Err(BatchError::MalformedRecord(
            "record length is longer than its fields",
        ));
    }
    let timestamp = if header.timestamp_type_log_append() {
        header.max_timestamp
    } else {
        header.base_timestamp.wrapping_add(timestamp_delta)
    };
    Ok(OwnedRecord {
        offset: header.base_offset.wrapping_add(offset_delta as i64),
        timestamp,
        key: key.map(<[u8]>::to_vec),
        value: value.map(<[u8]>::to_vec),
        headers,
    })
}

/// A cursor over record bytes; every failure is a [`BatchError::MalformedRecord`].
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, count: usize, what: &'static str) -> Result<&'a [u8], BatchError> {
        if count > self.bytes.len() {
            return Err(BatchError::MalformedRecord(what));
        }
        let (taken, rest) = self.bytes.split_at(count);
        self.bytes = rest;
        Ok(taken)
    }

    fn varint(&mut self, what: &'static str) -> Result<i32, BatchError> {
        let (value, used) =
            varint::read_varint(self.bytes).map_err(|_| BatchError::MalformedRecord(what))?;
        self.bytes = &self.bytes[used..];
        Ok(value)
    }

    fn varlong(&mut self, what: &'static str) -> Result<i64, BatchError> {
        let (value, used) =
            varint::read_varlong(self.bytes).map_err(|_| BatchError::MalformedRecord(what))?;
        self.bytes = &self.bytes[used..];
        Ok(value)
    }

    /// A varint length then that many bytes; length -1 is null.
    fn nullable_bytes(&mut self, what: &'static str) -> Result<Option<&'a [u8]>, BatchError> {
        let length = self.varint(what)?;
        match length {
            -1 => Ok(None),
            length if length < -1 => Err(BatchError::MalformedRecord(what)),
            length => Ok(Some(self.take(length as usize, what)?)),
        }
    }
}

/// Bytes one record takes in a batch's (uncompressed) records section, its length prefix
/// included. `value: None` is a tombstone.
pub fn record_encoded_bytes(
    timestamp_delta: i64,
    offset_delta: i32,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    headers: &[(&str, &[u8])],
) -> usize {
    let body = record_body_bytes(timestamp_delta, offset_delta, key, value, headers);
    varint::varint_len(body_length_field(body)) + body
}

fn record_body_bytes(
    timestamp_delta: i64,
    offset_delta: i32,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    headers: &[(&str, &[u8])],
) -> usize {
    let header_bytes: usize = headers
        .iter()
        .map(|(key, value)| {
            nullable_bytes_len(Some(key.as_bytes())) + nullable_bytes_len(Some(value))
        })
        .sum();
    1 // attributes
        + varint::varlong_len(timestamp_delta)
        + varint::varint_len(offset_delta)
        + nullable_bytes_len(key)
        + nullable_bytes_len(value)
        + varint::varint_len(length_field(headers.len()))
        + header_bytes
}

fn nullable_bytes_len(bytes: Option<&[u8]>) -> usize {
    match bytes {
        None => varint::varint_len(-1),
        Some(bytes) => varint::varint_len(length_field(bytes.len())) + bytes.len(),
    }
}

fn length_field(bytes: usize) -> i32 {
    i32::try_from(bytes).expect("a record field is smaller than 2 GiB")
}

fn body_length_field(bytes: usize) -> i32 {
    i32::try_from(bytes).expect("a record is smaller than 2 GiB")
}

fn put_nullable_bytes(bytes: Option<&[u8]>, out: &mut Vec<u8>) {
    match bytes {
        None => {
            varint::put_varint(-1, out);
        }
        Some(bytes) => {
            varint::put_varint(length_field(bytes.len()), out);
            out.extend_from_slice(bytes);
        }
    }
}

/// Builds one v2 record batch on the client side: records are encoded as they are
/// appended, and [`finish`](Self::finish) compresses them and writes the header and CRC.
///
/// The finished batch has `base_offset` 0 (the broker assigns offsets),
/// `partition_leader_epoch` -1, create-time timestamps, and `max_timestamp` the largest
/// appended timestamp. When the codec does not make the records smaller, the batch is sent
/// uncompressed (as librdkafka does), so [`uncompressed_bytes`](Self::uncompressed_bytes)
/// is a true upper bound of the finished size.
#[derive(Clone, Debug)]
pub struct RecordBatchBuilder {
    compression: Compression,
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
    base_timestamp_ms: i64,
    max_timestamp_ms: i64,
    records_count: i32,
    /// Encoded, uncompressed records.
    records: Vec<u8>,
}

impl RecordBatchBuilder {
    /// An empty batch. Record timestamps are stored as deltas from `base_timestamp_ms`;
    /// pass [`NO_PRODUCER_ID`], [`NO_PRODUCER_EPOCH`], [`NO_SEQUENCE`] for a producer that
    /// is not idempotent.
    pub fn new(
        compression: Compression,
        producer_id: i64,
        producer_epoch: i16,
        base_sequence: i32,
        base_timestamp_ms: i64,
    ) -> RecordBatchBuilder {
        RecordBatchBuilder {
            compression,
            producer_id,
            producer_epoch,
            base_sequence,
            base_timestamp_ms,
            max_timestamp_ms: base_timestamp_ms,
            records_count: 0,
            records: Vec::new(),
        }
    }

    /// Appends a record with a value.
    pub fn append(
        &mut self,
        timestamp_ms: i64,
        key: Option<&[u8]>,
        value: &[u8],
        headers: &[(&str, &[u8])],
    ) {
        self.append_record(timestamp_ms, key, Some(value), headers);
    }

    /// Appends a record with a null value: a deletion marker for compacted topics.
    pub fn append_tombstone(&mut self, timestamp_ms: i64, key: &[u8], headers: &[(&str, &[u8])]) {
        self.append_record(timestamp_ms, Some(key), None, headers);
    }

    fn append_record(
        &mut self,
        timestamp_ms: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[(&str, &[u8])],
    ) {
        assert!(
            self.records_count < i32::MAX,
            "a batch holds fewer than 2^31 records"
        );
        let timestamp_delta = timestamp_ms.wrapping_sub(self.base_timestamp_ms);
        let offset_delta = self.records_count;
        let body = record_body_bytes(timestamp_delta, offset_delta, key, value, headers);
        let start = self.records.len();
        self.records.reserve(varint::VARINT_BYTES_MAX + body);
        varint::put_varint(body_length_field(body), &mut self.records);
        self.records.push(0); // attributes: unused by v2
        varint::put_varlong(timestamp_delta, &mut self.records);
        varint::put_varint(offset_delta, &mut self.records);
        put_nullable_bytes(key, &mut self.records);
        put_nullable_bytes(value, &mut self.records);
        varint::put_varint(length_field(headers.len()), &mut self.records);
        for (header_key, header_value) in headers {
            put_nullable_bytes(Some(header_key.as_bytes()), &mut self.records);
            put_nullable_bytes(Some(header_value), &mut self.records);
        }
        debug_assert_eq!(
            self.records.len() - start,
            record_encoded_bytes(timestamp_delta, offset_delta, key, value, headers)
        );
        if self.records_count == 0 || timestamp_ms > self.max_timestamp_ms {
            self.max_timestamp_ms = timestamp_ms;
        }
        self.records_count += 1;
    }

    /// Bytes the next [`append`](Self::append) (value `Some`) or
    /// [`append_tombstone`](Self::append_tombstone) (value `None`) of these arguments would
    /// add to [`uncompressed_bytes`](Self::uncompressed_bytes).
    pub fn next_record_bytes(
        &self,
        timestamp_ms: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[(&str, &[u8])],
    ) -> usize {
        record_encoded_bytes(
            timestamp_ms.wrapping_sub(self.base_timestamp_ms),
            self.records_count,
            key,
            value,
            headers,
        )
    }

    /// Records appended so far.
    pub fn records_count(&self) -> usize {
        self.records_count as usize
    }

    /// Whether no record was appended.
    pub fn is_empty(&self) -> bool {
        self.records_count == 0
    }

    /// The finished batch's size if it is not compressed: an upper bound of what
    /// [`finish`](Self::finish) returns.
    pub fn uncompressed_bytes(&self) -> usize {
        BATCH_HEADER_BYTES + self.records.len()
    }

    /// The codec asked for.
    pub fn compression(&self) -> Compression {
        self.compression
    }

    /// Sets the sequence number of the first record (an idempotent producer learns it only
    /// when the batch is sent).
    pub fn set_base_sequence(&mut self, base_sequence: i32) {
        self.base_sequence = base_sequence;
    }

    /// Forgets the records, keeping the buffer's capacity, for a new batch starting at
    /// `base_timestamp_ms` with the same producer id and epoch.
    pub fn clear(&mut self, base_sequence: i32, base_timestamp_ms: i64) {
        self.records.clear();
        self.records_count = 0;
        self.base_sequence = base_sequence;
        self.base_timestamp_ms = base_timestamp_ms;
        self.max_timestamp_ms = base_timestamp_ms;
    }

    /// The finished batch. Panics if no record was appended: Kafka has no empty batches.
    pub fn finish(self) -> Vec<u8> {
        let mut out = Vec::new();
        self.finish_into(&mut out);
        out
    }

    /// Writes the finished batch into `out` (cleared first), so a caller can reuse both
    /// buffers with [`clear`](Self::clear). Panics if no record was appended.
    pub fn finish_into(&self, out: &mut Vec<u8>) {
        assert!(
            self.records_count > 0,
            "a record batch holds at least one record"
        );
        out.clear();
        out.reserve(self.uncompressed_bytes());
        out.resize(BATCH_HEADER_BYTES, 0);
        let mut codec = self.compression;
        match codec {
            Compression::None => out.extend_from_slice(&self.records),
            _ => match compression::compress(codec, &self.records) {
                Ok(compressed) if compressed.len() < self.records.len() => {
                    out.extend_from_slice(&compressed)
                }
                _ => {
                    codec = Compression::None;
                    out.extend_from_slice(&self.records);
                }
            },
        }
        let batch_length = i32::try_from(out.len() - LOG_OVERHEAD_BYTES)
            .expect("a record batch is smaller than 2 GiB");
        let header = RecordBatchHeader {
            base_offset: 0,
            batch_length,
            partition_leader_epoch: NO_PARTITION_LEADER_EPOCH,
            magic: MAGIC_V2,
            crc: 0,
            attributes: codec.attribute_bits(),
            last_offset_delta: self.records_count - 1,
            base_timestamp: self.base_timestamp_ms,
            max_timestamp: self.max_timestamp_ms,
            producer_id: self.producer_id,
            producer_epoch: self.producer_epoch,
            base_sequence: self.base_sequence,
            records_count: self.records_count,
        };
        header.write(out);
        let crc = crc32c::crc32c(&out[ATTRIBUTES_OFFSET..]);
        put(out, CRC_OFFSET, &crc.to_be_bytes());
    }
}

fn put(out: &mut [u8], at: usize, bytes: &[u8]) {
    out[at..at + bytes.len()].copy_from_slice(bytes);
}

fn i16_be(bytes: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([bytes[at], bytes[at + 1]])
}

fn i32_be(bytes: &[u8], at: usize) -> i32 {
    i32::from_be_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

fn i64_be(bytes: &[u8], at: usize) -> i64 {
    i64::from_be_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE_TIMESTAMP_MS: i64 = 1_700_000_000_000;

    /// One record, key "key", value "value", no producer id: laid out by hand from Kafka's
    /// documented format. The CRC32C was computed independently (a bitwise Castagnoli
    /// CRC over bytes 21..76, outside this crate).
    #[rustfmt::skip]
    const GOLDEN_ONE_RECORD: [u8; 76] = [
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // base_offset 0
        0x00, 0x00, 0x00, 0x40,                         // batch_length 64 = 76 - 12
        0xff, 0xff, 0xff, 0xff,                         // partition_leader_epoch -1
        0x02,                                           // magic 2
        0xdb, 0x5e, 0x9c, 0xdd,                         // crc32c
        0x00, 0x00,                                     // attributes: none, create time
        0x00, 0x00, 0x00, 0x00,                         // last_offset_delta 0
        0x00, 0x00, 0x01, 0x8b, 0xcf, 0xe5, 0x68, 0x00, // base_timestamp 1_700_000_000_000
        0x00, 0x00, 0x01, 0x8b, 0xcf, 0xe5, 0x68, 0x00, // max_timestamp
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // producer_id -1
        0xff, 0xff,                                     // producer_epoch -1
        0xff, 0xff, 0xff, 0xff,                         // base_sequence -1
        0x00, 0x00, 0x00, 0x01,                         // records_count 1
        // record
        0x1c,                                           // length 14 (zig-zag 28)
        0x00,                                           // attributes
        0x00,                                           // timestamp_delta 0
        0x00,                                           // offset_delta 0
        0x06, b'k', b'e', b'y',                         // key length 3, "key"
        0x0a, b'v', b'a', b'l', b'u', b'e',             // value length 5, "value"
        0x00,                                           // headers count 0
    ];

    /// Two records from an idempotent producer (id 1234, epoch 3, sequence 7); the second
    /// has a null key, a timestamp 5 ms later and one header. CRC computed independently.
    #[rustfmt::skip]
    const GOLDEN_TWO_RECORDS: [u8; 89] = [
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // base_offset 0
        0x00, 0x00, 0x00, 0x4d,                         // batch_length 77
        0xff, 0xff, 0xff, 0xff,                         // partition_leader_epoch -1
        0x02,                                           // magic 2
        0x59, 0xc3, 0x64, 0xff,                         // crc32c
        0x00, 0x00,                                     // attributes
        0x00, 0x00, 0x00, 0x01,                         // last_offset_delta 1
        0x00, 0x00, 0x01, 0x8b, 0xcf, 0xe5, 0x68, 0x00, // base_timestamp
        0x00, 0x00, 0x01, 0x8b, 0xcf, 0xe5, 0x68, 0x05, // max_timestamp = base + 5
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x04, 0xd2, // producer_id 1234
        0x00, 0x03,                                     // producer_epoch 3
        0x00, 0x00, 0x00, 0x07,                         // base_sequence 7
        0x00, 0x00, 0x00, 0x02,                         // records_count 2
        // record 0
        0x1c, 0x00, 0x00, 0x00,
        0x06, b'k', b'e', b'y',
        0x0a, b'v', b'a', b'l', b'u', b'e',
        0x00,
        // record 1
        0x18,                                           // length 12
        0x00,                                           // attributes
        0x0a,                                           // timestamp_delta 5
        0x02,                                           // offset_delta 1
        0x01,                                           // key length -1: null
        0x04, b'v', b'2',                               // value "v2"
        0x02,                                           // headers count 1
        0x02, b'h',                                     // header key "h"
        0x02, b'x',                                     // header value "x"
    ];

    fn golden_one_builder() -> RecordBatchBuilder {
        let mut builder = RecordBatchBuilder::new(
            Compression::None,
            NO_PRODUCER_ID,
            NO_PRODUCER_EPOCH,
            NO_SEQUENCE,
            BASE_TIMESTAMP_MS,
        );
        builder.append(BASE_TIMESTAMP_MS, Some(b"key"), b"value", &[]);
        builder
    }

    fn golden_two_builder() -> RecordBatchBuilder {
        let mut builder = RecordBatchBuilder::new(Compression::None, 1234, 3, 7, BASE_TIMESTAMP_MS);
        builder.append(BASE_TIMESTAMP_MS, Some(b"key"), b"value", &[]);
        builder.append(BASE_TIMESTAMP_MS + 5, None, b"v2", &[("h", b"x")]);
        builder
    }

    /// Recomputes the CRC after a test edits covered bytes on purpose.
    fn reseal(batch: &mut [u8]) {
        let crc = crc32c::crc32c(&batch[ATTRIBUTES_OFFSET..]);
        batch[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
    }

    /// A sealed batch around hand-made record bytes.
    fn raw_batch(records: &[u8], records_count: i32, attributes: i16) -> Vec<u8> {
        let mut batch = vec![0; BATCH_HEADER_BYTES];
        RecordBatchHeader {
            base_offset: 0,
            batch_length: (BATCH_HEADER_BYTES - LOG_OVERHEAD_BYTES + records.len()) as i32,
            partition_leader_epoch: NO_PARTITION_LEADER_EPOCH,
            magic: MAGIC_V2,
            crc: 0,
            attributes,
            last_offset_delta: records_count.wrapping_sub(1),
            base_timestamp: BASE_TIMESTAMP_MS,
            max_timestamp: BASE_TIMESTAMP_MS,
            producer_id: NO_PRODUCER_ID,
            producer_epoch: NO_PRODUCER_EPOCH,
            base_sequence: NO_SEQUENCE,
            records_count,
        }
        .write(&mut batch);
        batch.extend_from_slice(records);
        reseal(&mut batch);
        batch
    }

    /// A batch of `count` varied records; compressible.
    fn sample_builder(
        compression: Compression,
        count: usize,
    ) -> (RecordBatchBuilder, Vec<OwnedRecord>) {
        let mut builder = RecordBatchBuilder::new(compression, 42, 1, 100, BASE_TIMESTAMP_MS);
        let mut expected = Vec::new();
        for i in 0..count {
            let timestamp = BASE_TIMESTAMP_MS + (i as i64 % 7) * 3 - 4;
            let key = (i % 3 != 0).then(|| format!("key-{i}").into_bytes());
            let value =
                format!("value {i} of a sample batch, repeated text repeated text").into_bytes();
            let header_value = format!("{}", i * 11).into_bytes();
            let headers: Vec<(&str, &[u8])> = if i % 2 == 0 {
                vec![("trace", &header_value), ("empty", b"")]
            } else {
                vec![]
            };
            builder.append(timestamp, key.as_deref(), &value, &headers);
            expected.push(OwnedRecord {
                offset: i as i64,
                timestamp,
                key,
                value: Some(value),
                headers: headers
                    .iter()
                    .map(|(k, v)| (k.to_string(), Some(v.to_vec())))
                    .collect(),
            });
        }
        (builder, expected)
    }

    #[test]
    fn recompressed_batches_keep_every_record_and_the_producer_fields() {
        for from in Compression::ALL {
            let mut builder = RecordBatchBuilder::new(from, 77, 0, 5, 1_700_000_000_000);
            for i in 0..50u32 {
                let value = format!("value {i} {}", "x".repeat(i as usize));
                builder.append(
                    1_700_000_000_000 + i64::from(i),
                    Some(b"key"),
                    value.as_bytes(),
                    &[],
                );
            }
            let original = builder.finish();
            for to in Compression::ALL {
                let again = recompress_batch(&original, to, 1 << 20).unwrap();
                let header = validate_batch(&again).unwrap();
                let before = validate_batch(&original).unwrap();
                assert_eq!(header.compression().unwrap(), to);
                assert_eq!(header.producer_id, 77);
                assert_eq!(header.base_sequence, 5);
                assert_eq!(header.last_offset_delta, before.last_offset_delta);
                assert_eq!(header.max_timestamp, before.max_timestamp);
                assert_eq!(records(&again).unwrap(), records(&original).unwrap());
            }
        }
        let mut builder = RecordBatchBuilder::new(Compression::None, -1, -1, -1, 0);
        builder.append(0, None, b"v", &[]);
        let batch = builder.finish();
        assert!(matches!(
            recompress_batch(&batch[..batch.len() - 1], Compression::Zstd, 1 << 20),
            Err(RecompressError::Batch(_))
        ));
        assert!(matches!(
            recompress_batch(&batch, Compression::Zstd, 1),
            Err(RecompressError::Codec(_))
        ));
    }

    #[test]
    fn crc32c_is_castagnoli() {
        // The standard check value of CRC-32C.
        assert_eq!(crc32c::crc32c(b"123456789"), 0xe306_9283);
    }

    #[test]
    fn header_layout_constants() {
        assert_eq!(BATCH_HEADER_BYTES, 61);
        assert_eq!(RECORDS_OFFSET, BATCH_HEADER_BYTES);
        assert_eq!(BATCH_LENGTH_MIN, 49);
        assert_eq!(CRC_OFFSET + 4, ATTRIBUTES_OFFSET);
        assert_eq!(RECORDS_COUNT_OFFSET + 4, RECORDS_OFFSET);
        assert_eq!(
            varint::varint_len(-1),
            1,
            "a null key or value takes one byte"
        );
    }

    #[test]
    fn golden_one_record_builder_parse_and_decode() {
        assert_eq!(golden_one_builder().finish(), GOLDEN_ONE_RECORD);
        let header = validate_batch(&GOLDEN_ONE_RECORD).unwrap();
        assert_eq!(
            header,
            RecordBatchHeader {
                base_offset: 0,
                batch_length: 64,
                partition_leader_epoch: -1,
                magic: 2,
                crc: 0xdb5e_9cdd,
                attributes: 0,
                last_offset_delta: 0,
                base_timestamp: BASE_TIMESTAMP_MS,
                max_timestamp: BASE_TIMESTAMP_MS,
                producer_id: -1,
                producer_epoch: -1,
                base_sequence: -1,
                records_count: 1,
            }
        );
        assert_eq!(RecordBatchHeader::parse(&GOLDEN_ONE_RECORD), Ok(header));
        assert_eq!(header.total_bytes(), GOLDEN_ONE_RECORD.len());
        assert_eq!(header.compression(), Ok(Compression::None));
        assert!(!header.has_producer_id());
        assert_eq!(header.last_sequence(), NO_SEQUENCE);
        assert_eq!(
            records(&GOLDEN_ONE_RECORD).unwrap(),
            vec![OwnedRecord {
                offset: 0,
                timestamp: BASE_TIMESTAMP_MS,
                key: Some(b"key".to_vec()),
                value: Some(b"value".to_vec()),
                headers: vec![],
            }]
        );
        let mut written = [0u8; BATCH_HEADER_BYTES];
        header.write(&mut written);
        assert_eq!(written, GOLDEN_ONE_RECORD[..BATCH_HEADER_BYTES]);
    }

    #[test]
    fn golden_two_records_builder_parse_and_decode() {
        let builder = golden_two_builder();
        assert_eq!(builder.uncompressed_bytes(), GOLDEN_TWO_RECORDS.len());
        assert_eq!(builder.finish(), GOLDEN_TWO_RECORDS);
        let header = validate_batch(&GOLDEN_TWO_RECORDS).unwrap();
        assert_eq!(header.producer_id, 1234);
        assert_eq!(header.producer_epoch, 3);
        assert_eq!(header.base_sequence, 7);
        assert_eq!(header.last_sequence(), 8);
        assert_eq!(header.max_timestamp, BASE_TIMESTAMP_MS + 5);
        assert!(header.has_producer_id());
        assert_eq!(
            records(&GOLDEN_TWO_RECORDS).unwrap(),
            vec![
                OwnedRecord {
                    offset: 0,
                    timestamp: BASE_TIMESTAMP_MS,
                    key: Some(b"key".to_vec()),
                    value: Some(b"value".to_vec()),
                    headers: vec![],
                },
                OwnedRecord {
                    offset: 1,
                    timestamp: BASE_TIMESTAMP_MS + 5,
                    key: None,
                    value: Some(b"v2".to_vec()),
                    headers: vec![("h".to_string(), Some(b"x".to_vec()))],
                },
            ]
        );
    }

    #[test]
    fn every_codec_round_trips() {
        for codec in Compression::ALL {
            let (builder, expected) = sample_builder(codec, 200);
            let uncompressed_bytes = builder.uncompressed_bytes();
            let batch = builder.finish();
            let header = validate_batch(&batch).unwrap();
            assert_eq!(header.compression(), Ok(codec), "{codec} kept");
            assert_eq!(header.records_count, 200);
            assert_eq!(header.last_offset_delta, 199);
            assert_eq!(header.base_sequence, 100);
            assert_eq!(header.last_sequence(), 299);
            assert_eq!(header.producer_id, 42);
            assert_eq!(header.max_timestamp, BASE_TIMESTAMP_MS + 14);
            assert_eq!(header.total_bytes(), batch.len());
            assert!(batch.len() <= uncompressed_bytes);
            if codec != Compression::None {
                assert!(batch.len() < uncompressed_bytes / 2, "{codec} compresses");
            }
            assert_eq!(records(&batch).unwrap(), expected, "{codec}");
        }
    }

    #[test]
    fn broker_rewrites_keep_the_batch_valid_and_shift_offsets() {
        for codec in [Compression::None, Compression::Lz4] {
            let (builder, expected) = sample_builder(codec, 10);
            let mut batch = builder.finish();
            set_base_offset(&mut batch, 1_000_000);
            set_partition_leader_epoch(&mut batch, 17);
            let header = validate_batch(&batch).unwrap();
            assert_eq!(header.base_offset, 1_000_000);
            assert_eq!(header.partition_leader_epoch, 17);
            assert_eq!(header.last_offset(), 1_000_009);
            let decoded = records(&batch).unwrap();
            for (got, want) in decoded.iter().zip(&expected) {
                assert_eq!(got.offset, want.offset + 1_000_000);
                assert_eq!(got.value, want.value);
            }
        }
    }

    #[test]
    fn incompressible_records_are_sent_uncompressed() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let noise: Vec<u8> = (0..3000)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        for codec in Compression::ALL {
            let mut builder = RecordBatchBuilder::new(codec, -1, -1, -1, 0);
            builder.append(0, None, &noise, &[]);
            let bound = builder.uncompressed_bytes();
            let batch = builder.finish();
            assert_eq!(batch.len(), bound, "{codec}");
            let header = validate_batch(&batch).unwrap();
            assert_eq!(header.compression(), Ok(Compression::None), "{codec}");
            assert_eq!(
                records(&batch).unwrap()[0].value.as_deref(),
                Some(&noise[..])
            );
        }
    }

    #[test]
    fn size_estimates_are_exact_for_uncompressed_batches() {
        let mut builder = RecordBatchBuilder::new(Compression::None, -1, -1, -1, 1000);
        assert!(builder.is_empty());
        assert_eq!(builder.uncompressed_bytes(), BATCH_HEADER_BYTES);
        let big_value = vec![7u8; 300];
        type Case<'a> = (
            i64,
            Option<&'a [u8]>,
            Option<&'a [u8]>,
            &'a [(&'a str, &'a [u8])],
        );
        let cases: [Case; 5] = [
            (1000, None, Some(b""), &[]),
            (990, Some(b"k"), Some(b"v"), &[("a", b"b")]),
            (1_000_000, Some(&[1u8; 200]), Some(&big_value), &[]),
            (
                i64::MIN,
                Some(b"tomb"),
                None,
                &[("x", b""), ("y", &[9; 70])],
            ),
            (1000, None, Some(b"v"), &[]),
        ];
        for (timestamp, key, value, headers) in cases {
            let before = builder.uncompressed_bytes();
            let predicted = builder.next_record_bytes(timestamp, key, value, headers);
            assert_eq!(
                predicted,
                record_encoded_bytes(
                    timestamp.wrapping_sub(1000),
                    builder.records_count() as i32,
                    key,
                    value,
                    headers
                )
            );
            match value {
                Some(value) => builder.append(timestamp, key, value, headers),
                None => builder.append_tombstone(timestamp, key.unwrap(), headers),
            }
            assert_eq!(builder.uncompressed_bytes(), before + predicted);
        }
        assert_eq!(builder.records_count(), 5);
        let bound = builder.uncompressed_bytes();
        let batch = builder.finish();
        assert_eq!(batch.len(), bound);
        let decoded = records(&batch).unwrap();
        assert_eq!(decoded[3].timestamp, i64::MIN);
        assert_eq!(decoded[3].value, None);
        assert_eq!(decoded[3].key.as_deref(), Some(&b"tomb"[..]));
        assert_eq!(decoded[3].headers[0], ("x".to_string(), Some(vec![])));
        assert_eq!(decoded[0].value, Some(vec![]));
        assert_eq!(decoded[1].timestamp, 990);
        // max_timestamp is the largest, not the last.
        assert_eq!(validate_batch(&batch).unwrap().max_timestamp, 1_000_000);
    }

    #[test]
    fn record_encoded_bytes_known_values() {
        // The golden record: 1 length byte + 14 body bytes.
        assert_eq!(
            record_encoded_bytes(0, 0, Some(b"key"), Some(b"value"), &[]),
            15
        );
        // The golden second record.
        assert_eq!(
            record_encoded_bytes(5, 1, None, Some(b"v2"), &[("h", b"x")]),
            13
        );
        // A 64-byte body needs a two-byte length (zig-zag 128).
        let value = [0u8; 58];
        assert_eq!(record_encoded_bytes(0, 0, None, Some(&value), &[]), 2 + 64);
    }

    #[test]
    fn builder_is_reusable() {
        let mut builder = golden_two_builder();
        let mut out = vec![0xaa; 500];
        builder.finish_into(&mut out);
        assert_eq!(out, GOLDEN_TWO_RECORDS);
        builder.clear(NO_SEQUENCE, BASE_TIMESTAMP_MS);
        assert!(builder.is_empty());
        assert_eq!(builder.uncompressed_bytes(), BATCH_HEADER_BYTES);
        builder.append(BASE_TIMESTAMP_MS, Some(b"key"), b"value", &[]);
        let mut reused = golden_one_builder();
        reused.set_base_sequence(NO_SEQUENCE);
        // Same records, different producer id: only the producer fields and CRC differ.
        builder.finish_into(&mut out);
        let header = validate_batch(&out).unwrap();
        assert_eq!(header.producer_id, 1234);
        assert_eq!(header.base_sequence, NO_SEQUENCE);
        assert_eq!(out[RECORDS_OFFSET..], GOLDEN_ONE_RECORD[RECORDS_OFFSET..]);
        assert_eq!(reused.finish(), GOLDEN_ONE_RECORD);
    }

    #[test]
    fn set_base_sequence_is_written() {
        let mut builder = golden_two_builder();
        assert_eq!(builder.compression(), Compression::None);
        builder.set_base_sequence(i32::MAX);
        let header = validate_batch(&builder.finish()).unwrap();
        assert_eq!(header.base_sequence, i32::MAX);
        assert_eq!(header.last_sequence(), 0, "wraps to 0 like Kafka");
    }

    #[test]
    #[should_panic(expected = "at least one record")]
    fn finishing_an_empty_batch_panics() {
        RecordBatchBuilder::new(Compression::None, -1, -1, -1, 0).finish();
    }

    #[test]
    fn sequence_arithmetic_wraps_like_kafka() {
        assert_eq!(increment_sequence(0, 0), 0);
        assert_eq!(increment_sequence(5, 3), 8);
        assert_eq!(increment_sequence(i32::MAX, 0), i32::MAX);
        assert_eq!(increment_sequence(i32::MAX, 1), 0);
        assert_eq!(increment_sequence(i32::MAX - 1, 3), 1);
        assert_eq!(increment_sequence(i32::MAX - 10, i32::MAX), i32::MAX - 11);
        let mut header = RecordBatchHeader::parse(&GOLDEN_TWO_RECORDS).unwrap();
        header.base_sequence = NO_SEQUENCE;
        assert_eq!(header.last_sequence(), NO_SEQUENCE);
        header.base_sequence = i32::MAX;
        header.last_offset_delta = 1;
        assert_eq!(header.last_sequence(), 0);
    }

    #[test]
    fn attribute_flags() {
        let mut header = RecordBatchHeader::parse(&GOLDEN_ONE_RECORD).unwrap();
        assert!(!header.is_transactional());
        assert!(!header.is_control());
        assert!(!header.timestamp_type_log_append());
        header.attributes = ATTRIBUTE_TRANSACTIONAL | Compression::Zstd.attribute_bits();
        assert!(header.is_transactional() && !header.is_control());
        assert_eq!(header.compression(), Ok(Compression::Zstd));
        header.attributes = ATTRIBUTE_CONTROL;
        assert!(header.is_control() && !header.is_transactional());
        header.attributes = ATTRIBUTE_LOG_APPEND_TIME | 6;
        assert!(header.timestamp_type_log_append());
        assert_eq!(
            header.compression(),
            Err(BatchError::UnknownCompression { codec: 6 })
        );
        header.producer_id = 0;
        assert!(header.has_producer_id());
        header.producer_id = i64::MIN;
        assert!(!header.has_producer_id());
        header.batch_length = -5;
        assert_eq!(header.total_bytes(), LOG_OVERHEAD_BYTES);
    }

    #[test]
    fn log_append_time_gives_every_record_the_max_timestamp() {
        let mut batch = golden_two_builder().finish();
        let mut header = RecordBatchHeader::parse(&batch).unwrap();
        header.attributes |= ATTRIBUTE_LOG_APPEND_TIME;
        header.max_timestamp = 1_800_000_000_000;
        header.write(&mut batch);
        reseal(&mut batch);
        let decoded = records(&batch).unwrap();
        assert!(decoded.iter().all(|r| r.timestamp == 1_800_000_000_000));
    }

    #[test]
    fn truncation_at_every_length_is_refused() {
        for batch in [
            GOLDEN_ONE_RECORD.to_vec(),
            GOLDEN_TWO_RECORDS.to_vec(),
            sample_builder(Compression::Gzip, 20).0.finish(),
        ] {
            for cut in 0..batch.len() {
                let error = validate_batch(&batch[..cut]).unwrap_err();
                let needed = if cut < BATCH_HEADER_BYTES {
                    BATCH_HEADER_BYTES
                } else {
                    batch.len()
                };
                assert_eq!(
                    error,
                    BatchError::Truncated {
                        needed,
                        available: cut
                    }
                );
                assert_eq!(records(&batch[..cut]).unwrap_err(), error);
            }
        }
    }

    #[test]
    fn trailing_bytes_are_a_length_mismatch() {
        let mut batch = GOLDEN_ONE_RECORD.to_vec();
        batch.push(0);
        assert_eq!(
            validate_batch(&batch),
            Err(BatchError::LengthMismatch {
                declared: GOLDEN_ONE_RECORD.len(),
                actual: GOLDEN_ONE_RECORD.len() + 1
            })
        );
    }

    #[test]
    fn flipping_any_byte_is_caught_unless_the_crc_does_not_cover_it() {
        for batch in [
            GOLDEN_TWO_RECORDS.to_vec(),
            sample_builder(Compression::Snappy, 30).0.finish(),
        ] {
            for at in 0..batch.len() {
                for mask in [0x01u8, 0x80, 0xff] {
                    let mut flipped = batch.clone();
                    flipped[at] ^= mask;
                    let result = validate_batch(&flipped);
                    match at {
                        // base_offset and partition_leader_epoch: the broker's to rewrite.
                        BASE_OFFSET_OFFSET..BATCH_LENGTH_OFFSET
                        | PARTITION_LEADER_EPOCH_OFFSET..MAGIC_OFFSET => {
                            let header = result.unwrap();
                            assert_ne!(
                                (header.base_offset, header.partition_leader_epoch),
                                (0, NO_PARTITION_LEADER_EPOCH)
                            );
                        }
                        BATCH_LENGTH_OFFSET..PARTITION_LEADER_EPOCH_OFFSET => assert!(
                            matches!(
                                result,
                                Err(BatchError::Truncated { .. }
                                    | BatchError::LengthMismatch { .. }
                                    | BatchError::BadBatchLength { .. })
                            ),
                            "length byte {at}: {result:?}"
                        ),
                        MAGIC_OFFSET => assert!(
                            matches!(result, Err(BatchError::BadMagic { .. })),
                            "{result:?}"
                        ),
                        _ => assert!(
                            matches!(result, Err(BatchError::CrcMismatch { .. })),
                            "byte {at} mask {mask:#x}: {result:?}"
                        ),
                    }
                }
            }
        }
    }

    #[test]
    fn crc_mismatch_reports_both_values() {
        let mut batch = GOLDEN_ONE_RECORD.to_vec();
        let last = batch.len() - 1;
        batch[last] = 0x01;
        let computed = crc32c::crc32c(&batch[ATTRIBUTES_OFFSET..]);
        assert_eq!(
            validate_batch(&batch),
            Err(BatchError::CrcMismatch {
                expected: 0xdb5e_9cdd,
                computed
            })
        );
    }

    #[test]
    fn wrong_magic_is_refused() {
        for magic in [0i8, 1, 3, -1, i8::MAX] {
            let mut batch = GOLDEN_ONE_RECORD.to_vec();
            batch[MAGIC_OFFSET] = magic as u8;
            assert_eq!(
                validate_batch(&batch),
                Err(BatchError::BadMagic { found: magic })
            );
            assert_eq!(
                RecordBatchHeader::parse(&batch),
                Err(BatchError::BadMagic { found: magic })
            );
        }
    }

    #[test]
    fn bad_batch_length_is_refused() {
        for batch_length in [0, 48, -1, i32::MIN] {
            let mut batch = GOLDEN_ONE_RECORD.to_vec();
            batch[BATCH_LENGTH_OFFSET..BATCH_LENGTH_OFFSET + 4]
                .copy_from_slice(&batch_length.to_be_bytes());
            assert_eq!(
                validate_batch(&batch),
                Err(BatchError::BadBatchLength { batch_length })
            );
        }
    }

    #[test]
    fn bad_record_counts_are_refused() {
        let record = &GOLDEN_ONE_RECORD[RECORDS_OFFSET..];
        for records_count in [0, -1, i32::MIN] {
            let batch = raw_batch(record, records_count, 0);
            assert_eq!(
                validate_batch(&batch),
                Err(BatchError::BadRecordCount { records_count })
            );
        }
        // More records than 15 bytes can hold (two at most).
        let batch = raw_batch(record, 3, 0);
        assert_eq!(
            validate_batch(&batch),
            Err(BatchError::BadRecordCount { records_count: 3 })
        );
        let batch = raw_batch(record, i32::MAX, 0);
        assert_eq!(
            validate_batch(&batch),
            Err(BatchError::BadRecordCount {
                records_count: i32::MAX
            })
        );
        // Two declared, only one present: validation passes, decoding does not.
        let batch = raw_batch(record, 2, 0);
        assert!(validate_batch(&batch).is_ok());
        assert_eq!(
            records(&batch),
            Err(BatchError::MalformedRecord("record length is not a varint"))
        );
    }

    #[test]
    fn last_offset_delta_must_match_the_count() {
        let mut batch = GOLDEN_TWO_RECORDS.to_vec();
        batch[LAST_OFFSET_DELTA_OFFSET..LAST_OFFSET_DELTA_OFFSET + 4]
            .copy_from_slice(&0i32.to_be_bytes());
        reseal(&mut batch);
        assert_eq!(
            validate_batch(&batch),
            Err(BatchError::LastOffsetDeltaMismatch {
                last_offset_delta: 0,
                records_count: 2
            })
        );
    }

    #[test]
    fn unknown_codecs_are_refused() {
        for codec in 5..=7i16 {
            let batch = raw_batch(&GOLDEN_ONE_RECORD[RECORDS_OFFSET..], 1, codec);
            assert_eq!(
                validate_batch(&batch),
                Err(BatchError::UnknownCompression { codec: codec as u8 })
            );
        }
    }

    #[test]
    fn undecompressable_records_are_refused() {
        for codec in [
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            // Uncompressed record bytes labelled with a codec.
            let batch = raw_batch(
                &GOLDEN_ONE_RECORD[RECORDS_OFFSET..],
                1,
                codec.attribute_bits(),
            );
            assert!(
                validate_batch(&batch).is_ok(),
                "validation does not decompress"
            );
            match records(&batch) {
                Err(error @ BatchError::Decompress(_)) => assert_eq!(error.reason(), "decompress"),
                other => panic!("{codec}: {other:?}"),
            }
        }
    }

    #[test]
    fn malformed_records_are_refused() {
        let good: &[u8] = &GOLDEN_ONE_RECORD[RECORDS_OFFSET..];
        let cases: Vec<(Vec<u8>, &str)> = vec![
            ([good, &[0x00]].concat(), "bytes left after the last record"),
            (vec![0x01, 0, 0, 0, 0, 0, 0], "negative record length"),
            (
                vec![0x7e, 0, 0, 0, 0, 0, 0],
                "record length runs past the records",
            ),
            (
                vec![0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0],
                "record length is not a varint",
            ),
            (vec![0x00, 0, 0, 0, 0, 0, 0], "record attributes missing"),
            // Length 7 (zig-zag 14) for a 6-byte record and one byte more.
            (
                vec![0x0e, 0, 0, 0, 0x01, 0x01, 0x00, 0x00],
                "record length is longer than its fields",
            ),
            (
                vec![0x0c, 0, 0xff, 0xff, 0xff, 0xff, 0x7f],
                "record offset delta is not a varint",
            ),
            (
                vec![0x02, 0, 0, 0, 0, 0, 0],
                "record timestamp delta is not a varlong",
            ),
            (vec![0x0c, 0, 0, 0, 0x03, 0x01, 0x00], "record key"),
            (vec![0x0c, 0, 0, 0, 0x01, 0x03, 0x00], "record value"),
            (vec![0x0c, 0, 0, 0, 0x01, 0x7e, 0x00], "record value"),
            (
                vec![0x0c, 0, 0, 0, 0x01, 0x01, 0x01],
                "negative record header count",
            ),
            (
                vec![0x10, 0, 0, 0, 0x01, 0x01, 0x02, 0x01, 0x00],
                "negative header key length",
            ),
            (
                vec![0x0e, 0, 0, 0, 0x01, 0x01, 0x02, 0x04],
                "header key runs past the record",
            ),
            (
                vec![0x12, 0, 0, 0, 0x01, 0x01, 0x02, 0x02, 0xff, 0x01],
                "header key is not UTF-8",
            ),
            (
                vec![0x12, 0, 0, 0, 0x01, 0x01, 0x02, 0x02, b'h', 0x03],
                "header value",
            ),
            (
                vec![0x0a, 0, 0, 0, 0x01, 0x01, 0x00],
                "record header count is not a varint",
            ),
            (
                vec![0x0c, 0, 0, 0, 0x01, 0x01, 0x04, 0, 0],
                "header key length is not a varint",
            ),
        ];
        for (records_bytes, expected) in cases {
            let batch = raw_batch(&records_bytes, 1, 0);
            assert_eq!(
                records(&batch),
                Err(BatchError::MalformedRecord(expected)),
                "{records_bytes:02x?}"
            );
        }
    }

    #[test]
    fn a_null_header_value_decodes() {
        // Length 9: attributes, ts, offset, key null, value null, one header "h" = null.
        let batch = raw_batch(&[0x12, 0, 0, 0, 0x01, 0x01, 0x02, 0x02, b'h', 0x01], 1, 0);
        let decoded = records(&batch).unwrap();
        assert_eq!(decoded[0].headers, vec![("h".to_string(), None)]);
        assert_eq!(decoded[0].key, None);
        assert_eq!(decoded[0].value, None);
    }

    #[test]
    fn batches_iterates_concatenated_batches() {
        let first = GOLDEN_ONE_RECORD.to_vec();
        let second = sample_builder(Compression::Zstd, 5).0.finish();
        let third = GOLDEN_TWO_RECORDS.to_vec();
        let log = [&first[..], &second, &third].concat();
        let mut iter = batches(&log);
        let mut seen = Vec::new();
        for item in iter.by_ref() {
            let (header, bytes) = item.unwrap();
            assert_eq!(validate_batch(bytes), Ok(header));
            seen.push(bytes.to_vec());
        }
        assert_eq!(seen, vec![first, second, third]);
        assert_eq!(iter.position(), log.len());
        assert!(iter.remaining().is_empty());
        assert!(batches(&[]).next().is_none());
    }

    #[test]
    fn batches_reports_a_torn_tail_at_every_cut() {
        let whole = [&GOLDEN_ONE_RECORD[..], &GOLDEN_TWO_RECORDS[..]].concat();
        for cut in 1..GOLDEN_TWO_RECORDS.len() {
            let log = &whole[..GOLDEN_ONE_RECORD.len() + cut];
            let mut iter = batches(log);
            assert!(iter.next().unwrap().is_ok());
            assert_eq!(iter.position(), GOLDEN_ONE_RECORD.len());
            let needed = if cut < BATCH_HEADER_BYTES {
                BATCH_HEADER_BYTES
            } else {
                GOLDEN_TWO_RECORDS.len()
            };
            assert_eq!(
                iter.next(),
                Some(Err(BatchError::Truncated {
                    needed,
                    available: cut
                }))
            );
            assert_eq!(iter.position(), GOLDEN_ONE_RECORD.len(), "valid prefix");
            assert_eq!(iter.next(), None, "fused after an error");
        }
    }

    #[test]
    fn batches_stops_at_zeroed_or_garbage_space() {
        // A preallocated segment: whole batches then zeros.
        let mut log = GOLDEN_ONE_RECORD.to_vec();
        log.resize(GOLDEN_ONE_RECORD.len() + 200, 0);
        let mut iter = batches(&log);
        assert!(iter.next().unwrap().is_ok());
        assert_eq!(iter.next(), Some(Err(BatchError::BadMagic { found: 0 })));
        assert_eq!(iter.position(), GOLDEN_ONE_RECORD.len());
        assert_eq!(iter.next(), None);
        // A bad length field.
        let mut log = GOLDEN_ONE_RECORD.to_vec();
        log[BATCH_LENGTH_OFFSET..BATCH_LENGTH_OFFSET + 4].copy_from_slice(&3i32.to_be_bytes());
        assert_eq!(
            batches(&log).next(),
            Some(Err(BatchError::BadBatchLength { batch_length: 3 }))
        );
    }

    #[test]
    fn batches_does_not_check_crcs() {
        let mut log = GOLDEN_ONE_RECORD.to_vec();
        let last = log.len() - 1;
        log[last] ^= 0xff;
        let (_, bytes) = batches(&log).next().unwrap().unwrap();
        assert!(matches!(
            validate_batch(bytes),
            Err(BatchError::CrcMismatch { .. })
        ));
    }

    #[test]
    fn every_error_has_a_distinct_snake_case_reason() {
        let errors = [
            BatchError::Truncated {
                needed: 61,
                available: 3,
            },
            BatchError::LengthMismatch {
                declared: 1,
                actual: 2,
            },
            BatchError::BadBatchLength { batch_length: 3 },
            BatchError::BadMagic { found: 1 },
            BatchError::CrcMismatch {
                expected: 1,
                computed: 2,
            },
            BatchError::BadRecordCount { records_count: 0 },
            BatchError::LastOffsetDeltaMismatch {
                last_offset_delta: 0,
                records_count: 2,
            },
            BatchError::UnknownCompression { codec: 7 },
            BatchError::Decompress("x".into()),
            BatchError::MalformedRecord("y"),
        ];
        let mut reasons: Vec<&str> = errors.iter().map(BatchError::reason).collect();
        for (error, reason) in errors.iter().zip(&reasons) {
            assert!(reason.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'));
            assert!(!error.to_string().is_empty());
            assert_eq!(error.error_code(), ErrorCode::CorruptMessage);
        }
        reasons.sort();
        reasons.dedup();
        assert_eq!(reasons.len(), errors.len());
        assert!(errors[4].to_string().contains("0x00000001"));
    }

    #[test]
    #[should_panic]
    fn set_base_offset_on_a_short_slice_panics() {
        set_base_offset(&mut [0u8; 7], 1);
    }
}
