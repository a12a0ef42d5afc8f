//! The sparse offset and time indexes of one segment, in Kafka's file formats.
//!
//! ```text
//!  <base>.index      entries of 8 bytes:  relative_offset u32 BE | position u32 BE
//!  <base>.timeindex  entries of 12 bytes: timestamp_ms i64 BE    | relative_offset u32 BE
//! ```
//!
//! As in Kafka's `LogSegment.append`: when more than `index_interval_bytes` of batches were
//! appended since the last entry, the batch being appended gets an offset entry (its last
//! offset, its position) and the time index gets (largest timestamp so far, its offset)
//! if that timestamp grew. Sealing adds a last time entry. One type serves every path: the
//! lcore's active segment (entries preallocated), the flusher (writes the files), recovery
//! (rebuilds by replaying the batches) — the same `on_batch` everywhere.

use std::io::Write;
use std::path::Path;

use precursor_protocol::record_batch::BATCH_HEADER_BYTES;

/// Bytes of one `.index` entry.
pub const OFFSET_ENTRY_BYTES: usize = 8;
/// Bytes of one `.timeindex` entry.
pub const TIME_ENTRY_BYTES: usize = 12;

/// One `.index` entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OffsetEntry {
    pub relative_offset: u32,
    pub position: u32,
}

/// One `.timeindex` entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeEntry {
    pub timestamp_ms: i64,
    pub relative_offset: u32,
}

/// Sparse index of one segment (see the module documentation).
#[derive(Clone, Debug)]
pub struct SparseIndex {
    base_offset: u64,
    index_interval_bytes: u32,
    entries_max: usize,
    offsets: Vec<OffsetEntry>,
    times: Vec<TimeEntry>,
    bytes_since_entry: u64,
    /// Largest batch max_timestamp so far, and the last offset of its batch (-1: none).
    max_timestamp_ms: i64,
    offset_of_max_timestamp: u64,
    end_position: u32,
    end_offset: u64,
}

impl SparseIndex {
    /// An empty index for a segment of at most `segment_bytes`, every entry preallocated:
    /// `on_batch` never allocates.
    pub fn new(base_offset: u64, index_interval_bytes: u32, segment_bytes: u64) -> SparseIndex {
        assert!(segment_bytes <= u64::from(u32::MAX));
        // An entry needs more than `index_interval_bytes` (and at least one batch header)
        // of batches before it; the first batch never gets one; sealing adds a time entry.
        let spacing_bytes = (u64::from(index_interval_bytes) + 1).max(BATCH_HEADER_BYTES as u64);
        let entries_max = (segment_bytes / spacing_bytes) as usize + 2;
        SparseIndex {
            base_offset,
            index_interval_bytes,
            entries_max,
            offsets: Vec::with_capacity(entries_max),
            times: Vec::with_capacity(entries_max),
            bytes_since_entry: 0,
            max_timestamp_ms: -1,
            offset_of_max_timestamp: base_offset,
            end_position: 0,
            end_offset: base_offset,
        }
    }

    /// Empties the index for a new segment at `base_offset` (no allocation).
    pub fn reset(&mut self, base_offset: u64) {
        self.base_offset = base_offset;
        self.offsets.clear();
        self.times.clear();
        self.bytes_since_entry = 0;
        self.max_timestamp_ms = -1;
        self.offset_of_max_timestamp = base_offset;
        self.end_position = 0;
        self.end_offset = base_offset;
    }

    /// Accounts for the batch of `batch_bytes` at `position` holding offsets
    /// `base_offset..=last_offset` (it must follow the previous batch exactly).
    pub fn on_batch(
        &mut self,
        position: u32,
        batch_bytes: u32,
        base_offset: u64,
        last_offset: u64,
        max_timestamp_ms: i64,
    ) {
        assert_eq!(
            position, self.end_position,
            "batch not at the segment's end"
        );
        assert_eq!(base_offset, self.end_offset, "batch offsets not contiguous");
        assert!(last_offset >= base_offset);
        assert!(last_offset - self.base_offset <= u64::from(u32::MAX));
        assert!(batch_bytes as usize >= BATCH_HEADER_BYTES);
        if max_timestamp_ms > self.max_timestamp_ms {
            self.max_timestamp_ms = max_timestamp_ms;
            self.offset_of_max_timestamp = last_offset;
        }
        if self.bytes_since_entry > u64::from(self.index_interval_bytes) {
            assert!(self.offsets.len() < self.entries_max, "offset index full");
            self.offsets.push(OffsetEntry {
                relative_offset: (last_offset - self.base_offset) as u32,
                position,
            });
            self.maybe_append_time();
            self.bytes_since_entry = 0;
        }
        self.bytes_since_entry += u64::from(batch_bytes);
        self.end_position = position
            .checked_add(batch_bytes)
            .expect("segment position overflows u32");
        self.end_offset = last_offset + 1;
    }

    fn maybe_append_time(&mut self) {
        if self.max_timestamp_ms < 0 {
            return;
        }
        let grew = self
            .times
            .last()
            .is_none_or(|last| self.max_timestamp_ms > last.timestamp_ms);
        if grew {
            assert!(self.times.len() < self.entries_max, "time index full");
            self.times.push(TimeEntry {
                timestamp_ms: self.max_timestamp_ms,
                relative_offset: (self.offset_of_max_timestamp - self.base_offset) as u32,
            });
        }
    }

    /// The segment takes no more batches: record its largest timestamp (Kafka does the
    /// same when a segment becomes inactive).
    pub fn seal(&mut self) {
        self.maybe_append_time();
    }

    /// Position to start scanning at for `offset`: the batch there holds `offset` or ends
    /// before it. 0 when no entry is at or below `offset`.
    pub fn lookup(&self, offset: u64) -> u32 {
        if offset < self.base_offset {
            return 0;
        }
        let relative = offset - self.base_offset;
        let after = self
            .offsets
            .partition_point(|entry| u64::from(entry.relative_offset) <= relative);
        if after == 0 {
            0
        } else {
            self.offsets[after - 1].position
        }
    }

    /// The first offset whose batch may hold a timestamp at or after `timestamp_ms`
    /// (Kafka's time index lookup); `None` when every timestamp is older.
    pub fn lookup_time(&self, timestamp_ms: i64) -> Option<u64> {
        if self.max_timestamp_ms < timestamp_ms {
            return None;
        }
        let before = self
            .times
            .partition_point(|entry| entry.timestamp_ms < timestamp_ms);
        Some(if before == 0 {
            self.base_offset
        } else {
            self.base_offset + u64::from(self.times[before - 1].relative_offset) + 1
        })
    }

    pub fn base_offset(&self) -> u64 {
        self.base_offset
    }

    /// The offset after the last batch accounted for.
    pub fn end_offset(&self) -> u64 {
        self.end_offset
    }

    /// Bytes of the batches accounted for.
    pub fn end_position(&self) -> u32 {
        self.end_position
    }

    /// Largest batch max_timestamp seen, -1 when none.
    pub fn max_timestamp_ms(&self) -> i64 {
        self.max_timestamp_ms
    }

    pub fn offset_entries(&self) -> &[OffsetEntry] {
        &self.offsets
    }

    pub fn time_entries(&self) -> &[TimeEntry] {
        &self.times
    }

    /// The `.index` file's bytes.
    pub fn offset_index_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.offsets.len() * OFFSET_ENTRY_BYTES);
        for entry in &self.offsets {
            out.extend_from_slice(&entry.relative_offset.to_be_bytes());
            out.extend_from_slice(&entry.position.to_be_bytes());
        }
        out
    }

    /// The `.timeindex` file's bytes.
    pub fn time_index_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.times.len() * TIME_ENTRY_BYTES);
        for entry in &self.times {
            out.extend_from_slice(&entry.timestamp_ms.to_be_bytes());
            out.extend_from_slice(&entry.relative_offset.to_be_bytes());
        }
        out
    }

    /// Decodes index files' bytes (for tools and checks); `None` when malformed.
    pub fn parse_files(
        offset_index: &[u8],
        time_index: &[u8],
    ) -> Option<(Vec<OffsetEntry>, Vec<TimeEntry>)> {
        if !offset_index.len().is_multiple_of(OFFSET_ENTRY_BYTES)
            || !time_index.len().is_multiple_of(TIME_ENTRY_BYTES)
        {
            return None;
        }
        let offsets = offset_index
            .chunks_exact(OFFSET_ENTRY_BYTES)
            .map(|e| OffsetEntry {
                relative_offset: u32::from_be_bytes(e[0..4].try_into().unwrap()),
                position: u32::from_be_bytes(e[4..8].try_into().unwrap()),
            })
            .collect();
        let times = time_index
            .chunks_exact(TIME_ENTRY_BYTES)
            .map(|e| TimeEntry {
                timestamp_ms: i64::from_be_bytes(e[0..8].try_into().unwrap()),
                relative_offset: u32::from_be_bytes(e[8..12].try_into().unwrap()),
            })
            .collect();
        Some((offsets, times))
    }

    /// Writes `.index` and `.timeindex` beside `log_path` durably: each to a `.tmp` file,
    /// fdatasync, rename. Off the lcore only (the flusher, recovery).
    pub fn write_files(&self, log_path: &Path) -> std::io::Result<()> {
        write_durably(
            &log_path.with_extension("index"),
            &self.offset_index_bytes(),
        )?;
        write_durably(
            &log_path.with_extension("timeindex"),
            &self.time_index_bytes(),
        )
    }

    /// True when the index files beside `log_path` hold exactly this index.
    pub fn files_match(&self, log_path: &Path) -> bool {
        let read = |ext| std::fs::read(log_path.with_extension(ext)).ok();
        read("index").as_deref() == Some(&self.offset_index_bytes()[..])
            && read("timeindex").as_deref() == Some(&self.time_index_bytes()[..])
    }
}

fn write_durably(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!(
        "{}.tmp",
        path.extension().and_then(|e| e.to_str()).unwrap_or("")
    ));
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_data()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_follow_kafka_rule_and_round_trip() {
        let mut index = SparseIndex::new(100, 150, 1 << 16);
        // Batches of 100 bytes, 2 offsets each, growing timestamps.
        for i in 0..10u64 {
            index.on_batch(
                (i * 100) as u32,
                100,
                100 + 2 * i,
                101 + 2 * i,
                1000 + i as i64,
            );
        }
        // bytes_since before each batch: 0,100,200>150 -> entry at batch 2, reset and
        // count it: 100,200 -> entry at batch 4, then at batches 6 and 8.
        let positions: Vec<u32> = index.offset_entries().iter().map(|e| e.position).collect();
        assert_eq!(positions, vec![200, 400, 600, 800]);
        assert_eq!(index.offset_entries()[0].relative_offset, 5);
        assert_eq!(index.lookup(99), 0);
        assert_eq!(index.lookup(104), 0);
        assert_eq!(index.lookup(105), 200);
        assert_eq!(index.lookup(119), 800);
        assert_eq!(index.lookup(114), 600);
        assert_eq!(index.lookup(112), 400);
        index.seal();
        assert_eq!(index.time_entries().last().unwrap().timestamp_ms, 1009);
        assert_eq!(index.end_offset(), 120);
        assert_eq!(index.end_position(), 1000);
        let (offsets, times) =
            SparseIndex::parse_files(&index.offset_index_bytes(), &index.time_index_bytes())
                .unwrap();
        assert_eq!(offsets, index.offset_entries());
        assert_eq!(times, index.time_entries());
        assert_eq!(index.lookup_time(0), Some(100));
        assert_eq!(index.lookup_time(2000), None);
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("00000000000000000100.log");
        assert!(!index.files_match(&log));
        index.write_files(&log).unwrap();
        assert!(index.files_match(&log));
        index.reset(500);
        assert!(index.offset_entries().is_empty());
        assert_eq!(index.end_offset(), 500);
    }

    #[test]
    fn preallocated_capacity_is_never_exceeded() {
        let segment_bytes = 1 << 16;
        let mut index = SparseIndex::new(0, 0, segment_bytes);
        let capacity = (index.offsets.capacity(), index.times.capacity());
        let batch = BATCH_HEADER_BYTES as u32;
        let mut offset = 0;
        while u64::from(index.end_position() + batch) <= segment_bytes {
            index.on_batch(index.end_position(), batch, offset, offset, offset as i64);
            offset += 1;
        }
        index.seal();
        assert_eq!(capacity, (index.offsets.capacity(), index.times.capacity()));
    }
}
