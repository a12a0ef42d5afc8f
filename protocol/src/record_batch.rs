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
