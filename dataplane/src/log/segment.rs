//! Segment naming and the lcore's view of a sealed segment.

use std::path::{Path, PathBuf};

use precursor_protocol::record_batch::RecordBatchHeader;
use precursor_shm::{AppendReader, ReadOnlyFileMap};

use super::SparseIndex;

/// Digits of a segment file name (Kafka: 20, zero padded).
pub const SEGMENT_NAME_DIGITS: usize = 20;
/// Name of the prepared next segment's file until it becomes active.
pub const SPARE_LOG_NAME: &str = "spare.log";

/// `<dir>/<base offset, 20 digits>.<ext>`.
pub fn segment_path(dir: &Path, base_offset: u64, ext: &str) -> PathBuf {
    dir.join(format!(
        "{base_offset:0width$}.{ext}",
        width = SEGMENT_NAME_DIGITS
    ))
}

/// The base offset and extension of a segment file name, if it is one.
pub fn parse_segment_name(name: &str) -> Option<(u64, &str)> {
    let (stem, ext) = name.split_once('.')?;
    if stem.len() != SEGMENT_NAME_DIGITS || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((stem.parse().ok()?, ext))
}

/// Prefix of a partition's memory file names: `<topic>-<partition>+`.
pub fn memory_file_prefix(topic: &str, partition: u16) -> String {
    format!("{topic}-{partition}+")
}

/// Where the bytes of a sealed segment are read from.
pub enum SegmentData {
    /// Still the memory it was appended in (the flusher has not sealed it yet).
    Memory(AppendReader),
    /// The persisted `.log` file, mapped read-only.
    File(ReadOnlyFileMap),
}

impl SegmentData {
    pub fn bytes(&self) -> &[u8] {
        match self {
            SegmentData::Memory(reader) => reader.bytes(),
            SegmentData::File(map) => map.bytes(),
        }
    }
}

/// A segment that takes no more appends, as the lcore keeps it.
pub struct SealedSegment {
    pub index: SparseIndex,
    pub data: SegmentData,
}

impl SealedSegment {
    pub fn base_offset(&self) -> u64 {
        self.index.base_offset()
    }

    pub fn end_offset(&self) -> u64 {
        self.index.end_offset()
    }

    pub fn bytes(&self) -> u64 {
        u64::from(self.index.end_position())
    }
}

/// Header of the batch at `position` of a segment's bytes (batches written by the log
/// itself: framing only, no CRC check).
pub fn header_at(bytes: &[u8], position: usize) -> RecordBatchHeader {
    let header = RecordBatchHeader::parse(&bytes[position..]).expect("segment batch header");
    assert!(
        position + header.total_bytes() <= bytes.len(),
        "segment batch torn"
    );
    header
}

/// Copies whole batches of `bytes` (a segment's) into `out`, starting with the batch that
/// holds `offset` (found from `start_position`, an index lookup), stopping before a batch
/// at or past `limit_offset`, before overflowing `out`, and after `max_bytes` (the first
/// batch is copied even when larger than `max_bytes`). Returns the bytes copied, or the
/// size of the first batch when `out` cannot hold it.
pub fn copy_batches(
    bytes: &[u8],
    start_position: usize,
    offset: u64,
    limit_offset: u64,
    max_bytes: usize,
    out: &mut [u8],
) -> Result<usize, usize> {
    let mut position = start_position;
    // Bounded: each step moves forward by a whole batch within `bytes`.
    while position < bytes.len() {
        let header = header_at(bytes, position);
        if header.last_offset() as u64 >= offset {
            break;
        }
        position += header.total_bytes();
    }
    let mut copied = 0;
    while position < bytes.len() {
        let header = header_at(bytes, position);
        let size = header.total_bytes();
        if header.last_offset() as u64 >= limit_offset {
            break;
        }
        if copied + size > out.len() {
            if copied == 0 {
                return Err(size);
            }
            break;
        }
        if copied > 0 && copied + size > max_bytes {
            break;
        }
        out[copied..copied + size].copy_from_slice(&bytes[position..position + size]);
        copied += size;
        position += size;
    }
    Ok(copied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let path = segment_path(Path::new("/d"), 1234, "log");
        assert_eq!(path, Path::new("/d/00000000000000001234.log"));
        assert_eq!(
            parse_segment_name("00000000000000001234.timeindex"),
            Some((1234, "timeindex"))
        );
        assert_eq!(parse_segment_name("spare.log"), None);
        assert_eq!(parse_segment_name("0000000000000000123.log"), None);
    }
}
