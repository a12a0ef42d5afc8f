//! Direct reads of a partition's log from the data plane's shared maps, on the same host:
//! the active segment and sealed segments still in memory (`<memory_dir>/<topic>-<p>+<n>.segment`,
//! read through their published length), and sealed segments on disk
//! (`<data_dir>/<topic>-<p>/<base>.log`, mapped read-only). No request, no copy, no lock:
//! the reader only loads the writer's published length, so it can never slow the data
//! plane down. Where the data plane keeps these is in `<cnc_dir>/paths`, written at start.
//!
//! Reads return whole record batches exactly as stored (Kafka RecordBatch v2), borrowed
//! from the map.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::os::unix::fs::DirEntryExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use precursor_protocol::record_batch::PARTITION_LEADER_EPOCH_OFFSET;
use precursor_shm::{AppendRegionView, ReadOnlyFileMap};

use crate::ClientError;

/// Name of the file in the CnC directory that says where the logs are.
pub const PATHS_FILE_NAME: &str = "paths";
/// How often a reader that is caught up looks for a new segment.
pub const RESCAN_INTERVAL: Duration = Duration::from_millis(10);
/// Bytes of a batch header up to and including `last_offset_delta`.
const BATCH_PREFIX_BYTES: usize = 27;

/// Where a data plane keeps its logs, from `<cnc_dir>/paths`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogPaths {
    pub data_dir: PathBuf,
    pub memory_dir: PathBuf,
    /// Where segments that found no hugepages are (`small_memory_dir=`, when the data
    /// plane's memory directory is on hugetlbfs).
    pub small_memory_dir: Option<PathBuf>,
}

impl LogPaths {
    /// Reads `<cnc_dir>/paths` (`data_dir=...` and `memory_dir=...` lines).
    pub fn discover(cnc_dir: &Path) -> Result<LogPaths, ClientError> {
        let path = cnc_dir.join(PATHS_FILE_NAME);
        let text = std::fs::read_to_string(&path).map_err(|e| {
            ClientError::Usage(format!(
                "cannot read {}: {e} (is a data plane running with this cnc directory?)",
                path.display()
            ))
        })?;
        let field = |key: &str| {
            text.lines()
                .find_map(|line| line.strip_prefix(key)?.strip_prefix('='))
                .map(PathBuf::from)
                .ok_or_else(|| ClientError::Usage(format!("{}: no {key}= line", path.display())))
        };
        Ok(LogPaths {
            data_dir: field("data_dir")?,
            memory_dir: field("memory_dir")?,
            small_memory_dir: field("small_memory_dir").ok(),
        })
    }

    /// The partitions of `topic` that have a directory in the data dir.
    pub fn partitions(&self, topic: &str) -> Result<Vec<u16>, ClientError> {
        let prefix = format!("{topic}-");
        let mut partitions: Vec<u16> = std::fs::read_dir(&self.data_dir)?
            .filter_map(|entry| {
                let name = entry.ok()?.file_name().into_string().ok()?;
                name.strip_prefix(&prefix)?.parse().ok()
            })
            .collect();
        partitions.sort_unstable();
        if partitions.is_empty() {
            return Err(ClientError::Usage(format!(
                "topic '{topic}' has no partition directory in {}",
                self.data_dir.display()
            )));
        }
        Ok(partitions)
    }
}

/// One segment mapped for reading.
enum SegmentMap {
    /// A memory file of the data plane, with its identity (path and inode: names repeat
    /// after a data plane restart).
    Memory {
        view: AppendRegionView,
        file: MemoryFile,
    },
    File(ReadOnlyFileMap),
}

impl SegmentMap {
    fn bytes(&self) -> &[u8] {
        match self {
            SegmentMap::Memory { view, .. } => view.bytes(),
            SegmentMap::File(map) => map.bytes(),
        }
    }
}

/// A memory file's identity: its name and inode.
type MemoryFile = (PathBuf, u64);

/// A batch's base offset, its last offset and its bytes, from the header at `at`.
fn batch_at(bytes: &[u8], at: usize) -> Option<(u64, u64, usize)> {
    let header = bytes.get(at..at + BATCH_PREFIX_BYTES)?;
    let base = i64::from_be_bytes(header[0..8].try_into().ok()?);
    let length = i32::from_be_bytes(header[8..12].try_into().ok()?);
    let last_delta = i32::from_be_bytes(header[23..27].try_into().ok()?);
    if base < 0 || length < (BATCH_PREFIX_BYTES - 12) as i32 || last_delta < 0 {
        return None;
    }
    let total = 12 + length as usize;
    (at + total <= bytes.len()).then_some((base as u64, base as u64 + last_delta as u64, total))
}

/// The whole batches in `bytes`, in order (what [`PartitionMap::read`] returns).
pub fn batches(bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut at = 0;
    std::iter::from_fn(move || {
        let (_, _, total) = batch_at(bytes, at)?;
        let batch = &bytes[at..at + total];
        at += total;
        Some(batch)
    })
}

/// The offset after the last record of the whole batches in `bytes` (None: no batch).
pub fn next_offset_after(bytes: &[u8]) -> Option<u64> {
    let mut at = 0;
    let mut next = None;
    while let Some((_, last, total)) = batch_at(bytes, at) {
        next = Some(last + 1);
        at += total;
    }
    next
}

/// The `partition_leader_epoch` of the batch whose header starts at `at`.
fn epoch_at(bytes: &[u8], at: usize) -> Option<i32> {
    let field =
        bytes.get(at + PARTITION_LEADER_EPOCH_OFFSET..at + PARTITION_LEADER_EPOCH_OFFSET + 4)?;
    Some(i32::from_be_bytes(field.try_into().ok()?))
}

/// A leader epoch and the offset of the first batch written in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EpochStart {
    pub epoch: i32,
    pub start_offset: u64,
}

/// A partition's leader epochs as its batch headers record them (`partitionLeaderEpoch`):
/// each epoch higher than every one before it, with the offset of its first batch, which
/// is what Kafka's leader epoch cache holds (KIP-101). Batches with an epoch below one
/// seen before, and epochs below 0, are passed over, as Kafka's cache passes them over.
///
/// Built by [`PartitionMap::extend_epochs`], which goes on from where the last walk
/// stopped. A history is only as true as the log below [`EpochHistory::walked_to`]: its
/// keeper extends a kept history only below offsets no replica truncates any more (the
/// high watermark, DESIGN.md §10) and walks the rest on a copy.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EpochHistory {
    starts: Vec<EpochStart>,
    /// Where the walk stopped: a batch boundary.
    walked: Option<Cursor>,
}

impl EpochHistory {
    /// Increasing epochs at increasing offsets.
    pub fn starts(&self) -> &[EpochStart] {
        &self.starts
    }

    /// The offset below which every batch has been walked.
    pub fn walked_to(&self) -> u64 {
        self.walked.map_or(0, |cursor| cursor.next)
    }

    fn note(&mut self, epoch: i32, base_offset: u64) {
        let newer = self.starts.last().is_none_or(|last| epoch > last.epoch);
        if epoch >= 0 && newer {
            self.starts.push(EpochStart {
                epoch,
                start_offset: base_offset,
            });
        }
    }

    fn latest_epoch(&self) -> i32 {
        self.starts.last().map_or(-1, |start| start.epoch)
    }
}

/// What a direct read found.
#[derive(Debug, PartialEq, Eq)]
pub enum DirectRead<'a> {
    /// Whole batches, the first holding the offset asked for.
    Batches(&'a [u8]),
    /// Nothing at or after the offset yet: the offset is the log's end.
    CaughtUp,
    /// The offset is below the first retained one.
    OutOfRange { log_start_offset: u64 },
}

/// A position in the log: a segment's base offset, the next offset and the byte position
/// of the batch holding it (or of the end of the segment's whole batches).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Cursor {
    base: u64,
    next: u64,
    position: usize,
}

/// Read positions remembered per map: several readers of one partition (consumers of a
/// gateway) each resume where they stopped instead of walking their segment from its start.
pub const READ_CURSORS_MAX: usize = 8;

/// Reads one partition of one topic directly from the shared maps.
pub struct PartitionMap {
    paths: LogPaths,
    topic: String,
    partition: u16,
    /// Mapped segments by base offset (memory ones win over files of the same base).
    segments: BTreeMap<u64, SegmentMap>,
    /// Where recent reads ended, most recent last (at most [`READ_CURSORS_MAX`]).
    cursors: VecDeque<Cursor>,
    /// Where the last [`PartitionMap::end_offset`] walk ended, in the last segment.
    end: Option<Cursor>,
    last_scan: Option<Instant>,
}

impl PartitionMap {
    pub fn open(
        paths: &LogPaths,
        topic: &str,
        partition: u16,
    ) -> Result<PartitionMap, ClientError> {
        let mut map = PartitionMap {
            paths: paths.clone(),
            topic: topic.to_string(),
            partition,
            segments: BTreeMap::new(),
            cursors: VecDeque::with_capacity(READ_CURSORS_MAX + 1),
            end: None,
            last_scan: None,
        };
        map.scan()?;
        Ok(map)
    }

    /// The partition's directory in the data dir.
    pub fn dir(&self) -> PathBuf {
        self.paths
            .data_dir
            .join(format!("{}-{}", self.topic, self.partition))
    }

    /// Brings the mapped segments up to date with the two directories (a syscall walk;
    /// done at open, then only when a read or an end walk finds nothing new, at most
    /// every [`RESCAN_INTERVAL`]):
    /// - maps memory files not mapped yet (known by name and inode);
    /// - swaps a memory segment whose file was released (unlinked) for its `.log` file,
    ///   so the data plane's memory is freed rather than kept alive by this map;
    /// - maps sealed `.log` files below the lowest memory file (complete: released memory
    ///   segments were persisted first), including ones never seen in memory;
    /// - forgets segments below the oldest one still present (retention deleted them), so
    ///   [`PartitionMap::log_start_offset`] follows retention.
    fn scan(&mut self) -> Result<(), ClientError> {
        self.last_scan = Some(Instant::now());
        let prefix = format!("{}-{}+", self.topic, self.partition);
        let mut mapped_memory: BTreeMap<MemoryFile, u64> = self
            .segments
            .iter()
            .filter_map(|(&base, segment)| match segment {
                SegmentMap::Memory { file, .. } => Some((file.clone(), base)),
                SegmentMap::File(_) => None,
            })
            .collect();
        let mut oldest_present = u64::MAX;
        let mut lowest_memory = u64::MAX;
        let mut entries: Vec<std::fs::DirEntry> = std::fs::read_dir(&self.paths.memory_dir)?
            .flatten()
            .collect();
        if let Some(small) = &self.paths.small_memory_dir {
            // Absent until a segment fell back to small pages.
            if let Ok(listing) = std::fs::read_dir(small) {
                entries.extend(listing.flatten());
            }
        }
        for entry in entries {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.starts_with(&prefix) || !name.ends_with(".segment") {
                continue;
            }
            let file = (entry.path(), entry.ino());
            if let Some(base) = mapped_memory.remove(&file) {
                oldest_present = oldest_present.min(base);
                lowest_memory = lowest_memory.min(base);
                continue;
            }
            // Unlinked between listing and opening (sealed and released): its bytes are
            // in the .log file now.
            let Ok(view) = AppendRegionView::open(&file.0) else {
                continue;
            };
            let Some((base, _, _)) = batch_at(view.bytes(), 0) else {
                continue; // a spare, not written yet: seen again on the next scan
            };
            oldest_present = oldest_present.min(base);
            lowest_memory = lowest_memory.min(base);
            self.segments
                .insert(base, SegmentMap::Memory { view, file });
        }
        // What is left of `mapped_memory` was released: its bytes are in its .log file.
        let released: BTreeSet<u64> = mapped_memory.into_values().collect();
        for entry in std::fs::read_dir(self.dir())?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(base) = name
                .strip_suffix(".log")
                .and_then(|s| s.parse::<u64>().ok())
            else {
                continue;
            };
            oldest_present = oldest_present.min(base);
            // Files at or above the lowest memory segment may still be being written.
            if base >= lowest_memory {
                continue;
            }
            let mapped_bytes = match self.segments.get(&base) {
                Some(SegmentMap::File(_)) => continue,
                Some(memory) if released.contains(&base) => memory.bytes().len(),
                Some(_) => continue,
                None => 0,
            };
            let bytes = entry.metadata()?.len() as usize;
            if bytes < mapped_bytes {
                continue; // not the file the memory segment became: keep the memory view
            }
            if let Ok(map) = ReadOnlyFileMap::open(&entry.path(), bytes) {
                self.segments.insert(base, SegmentMap::File(map));
            }
        }
        if oldest_present != u64::MAX {
            // Retention deleted the segments below: forget them (their bytes stay readable
            // only as long as a map holds them; readers below are told OutOfRange).
            self.segments = self.segments.split_off(&oldest_present);
            self.cursors.retain(|c| c.base >= oldest_present);
        }
        Ok(())
    }

    fn rescan_due(&self) -> bool {
        self.last_scan
            .is_none_or(|at| at.elapsed() >= RESCAN_INTERVAL)
    }

    /// Whole batches from the one holding `offset`, about `max_bytes` (at least one batch).
    pub fn read(&mut self, offset: u64, max_bytes: usize) -> Result<DirectRead<'_>, ClientError> {
        for attempt in 0..2 {
            if let Some((base, start, end)) = self.locate(offset, max_bytes) {
                let bytes = self.segments[&base].bytes();
                return Ok(DirectRead::Batches(&bytes[start..end]));
            }
            let log_start = self.segments.keys().next().copied();
            if log_start.is_some_and(|start| offset < start) {
                return Ok(DirectRead::OutOfRange {
                    log_start_offset: log_start.unwrap_or(0),
                });
            }
            if attempt == 0 && self.rescan_due() {
                self.scan()?;
            }
        }
        Ok(DirectRead::CaughtUp)
    }

    /// The segment and byte range holding `offset`, walking batch headers from where a
    /// recent read (or the end walk) stopped when it can (sequential reads cost one header
    /// per batch).
    fn locate(&mut self, offset: u64, max_bytes: usize) -> Option<(u64, usize, usize)> {
        let (&base, segment) = self.segments.range(..=offset).next_back()?;
        let bytes = segment.bytes();
        let resumable = |c: &Cursor| c.base == base && c.next <= offset;
        let used = self
            .cursors
            .iter()
            .enumerate()
            .filter(|(_, c)| resumable(c))
            .max_by_key(|(_, c)| c.next)
            .map(|(index, c)| (index, *c));
        // The furthest known position at or before `offset` in this segment.
        let mut at = used
            .map(|(_, c)| c)
            .into_iter()
            .chain(self.end.filter(resumable))
            .max_by_key(|c| c.next)
            .map_or(0, |c| c.position);
        let start = loop {
            let (batch_base, last, total) = batch_at(bytes, at)?;
            if last >= offset {
                debug_assert!(batch_base <= offset || at == 0);
                break at;
            }
            at += total;
        };
        let mut end = start;
        let mut next = offset;
        while let Some((_, last, total)) = batch_at(bytes, end) {
            if end > start && end - start + total > max_bytes {
                break;
            }
            end += total;
            next = last + 1;
        }
        if let Some((index, _)) = used {
            self.cursors.remove(index);
        }
        self.cursors.push_back(Cursor {
            base,
            next,
            position: end,
        });
        if self.cursors.len() > READ_CURSORS_MAX {
            self.cursors.pop_front();
        }
        Some((base, start, end))
    }

    /// The offset after the last record mapped now (the log end as this reader sees it).
    ///
    /// Incremental: walks only the batches published since the last call, in the last
    /// segment (the log is contiguous, so the end is in the last one); a new segment is
    /// looked for (a rescan, at most every [`RESCAN_INTERVAL`]) only when the last one
    /// showed nothing new.
    pub fn end_offset(&mut self) -> Result<u64, ClientError> {
        let mut rescanned = false;
        loop {
            let Some((&base, segment)) = self.segments.iter().next_back() else {
                if !rescanned && self.rescan_due() {
                    self.scan()?;
                    rescanned = true;
                    continue;
                }
                return Ok(0);
            };
            let mut cursor = match self.end {
                Some(cursor) if cursor.base == base => cursor,
                _ => Cursor {
                    base,
                    next: base,
                    position: 0,
                },
            };
            let before = cursor.position;
            let bytes = segment.bytes();
            while let Some((batch_base, last, total)) = batch_at(bytes, cursor.position) {
                debug_assert!(batch_base >= cursor.next || cursor.position == 0);
                cursor.position += total;
                cursor.next = last + 1;
            }
            self.end = Some(cursor);
            let progressed = cursor.position > before;
            if progressed || rescanned || !self.rescan_due() {
                return Ok(cursor.next);
            }
            self.scan()?;
            rescanned = true;
        }
    }

    /// The first retained offset, as mapped.
    pub fn log_start_offset(&self) -> Option<u64> {
        self.segments.keys().next().copied()
    }

    /// Walks the batch headers from where `history` stopped up to `end` (the batches whose
    /// last offset is below it), noting each new leader epoch.
    ///
    /// Epochs never decrease along a leader's log, so a segment whose successor begins
    /// with the epoch last noted (or an older one) holds no new epoch: it is skipped
    /// without reading its headers. Only segments in which an epoch begins, and the last
    /// one, are walked batch by batch; the first walk of a long log costs one header read
    /// per segment. A segment deleted by retention meanwhile is no matter: what was noted
    /// stays true, and the walk goes on from the oldest segment left.
    pub fn extend_epochs(
        &mut self,
        history: &mut EpochHistory,
        end: u64,
    ) -> Result<(), ClientError> {
        // Maps the segments rolled, and forgets those deleted, since the last look.
        let mut rescanned = false;
        if self.rescan_due() {
            self.scan()?;
            rescanned = true;
        }
        let mut cursor = match history.walked {
            Some(cursor) if self.segments.contains_key(&cursor.base) => cursor,
            _ => match self.segments.keys().next() {
                Some(&base) => Cursor {
                    base,
                    next: base,
                    position: 0,
                },
                None => return Ok(()),
            },
        };
        // Bounded: each round finishes a segment, rescans once, or returns.
        for _ in 0..self.segments.len() + 2 {
            let next_base = self
                .segments
                .range(cursor.base + 1..)
                .next()
                .map(|(&base, _)| base);
            if let Some(next_base) = next_base {
                let next = self.segments[&next_base].bytes();
                let next_first_epoch = batch_at(next, 0).and_then(|_| epoch_at(next, 0));
                let nothing_new = next_first_epoch.is_some_and(|e| e <= history.latest_epoch());
                if next_base <= end && nothing_new {
                    cursor = Cursor {
                        base: next_base,
                        next: next_base,
                        position: 0,
                    };
                    history.walked = Some(cursor);
                    continue;
                }
            }
            let bytes = self.segments[&cursor.base].bytes();
            while let Some((base, last, total)) = batch_at(bytes, cursor.position) {
                if last >= end {
                    history.walked = Some(cursor);
                    return Ok(());
                }
                if let Some(epoch) = epoch_at(bytes, cursor.position) {
                    history.note(epoch, base);
                }
                cursor.position += total;
                cursor.next = last + 1;
            }
            history.walked = Some(cursor);
            // A segment with a successor is sealed: its batches are all walked.
            match next_base {
                Some(next_base) => {
                    cursor = Cursor {
                        base: next_base,
                        next: next_base,
                        position: 0,
                    }
                }
                // The last segment mapped, walked to its end: look once for a segment
                // rolled since, so that the walk ends where the log ends.
                None if !rescanned && self.rescan_due() => {
                    self.scan()?;
                    rescanned = true;
                }
                None => return Ok(()),
            }
        }
        history.walked = Some(cursor);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use precursor_shm::{append_region, AppendWriter};

    /// Room of a test memory segment, in bytes.
    const SEGMENT_BYTES: usize = 64 << 10;

    /// A batch as the reader sees it: base offset, length, last offset delta (the rest of
    /// the header and the records are filler the reader does not look at).
    fn batch(base: u64, records: u32, bytes: usize) -> Vec<u8> {
        assert!(bytes >= 61 && records >= 1);
        let mut out = vec![0u8; bytes];
        out[0..8].copy_from_slice(&(base as i64).to_be_bytes());
        out[8..12].copy_from_slice(&((bytes - 12) as i32).to_be_bytes());
        out[16] = 2; // magic
        out[23..27].copy_from_slice(&((records - 1) as i32).to_be_bytes());
        out
    }

    struct Logs {
        _dir: tempfile::TempDir,
        paths: LogPaths,
    }

    impl Logs {
        fn new() -> Logs {
            let dir = tempfile::tempdir().unwrap();
            let paths = LogPaths {
                data_dir: dir.path().join("data"),
                memory_dir: dir.path().join("memory"),
                small_memory_dir: None,
            };
            std::fs::create_dir_all(paths.data_dir.join("t-0")).unwrap();
            std::fs::create_dir_all(&paths.memory_dir).unwrap();
            Logs { _dir: dir, paths }
        }

        fn memory_path(&self, n: u32) -> PathBuf {
            self.paths.memory_dir.join(format!("t-0+{n}.segment"))
        }

        fn memory_segment(&self, n: u32) -> AppendWriter {
            append_region(&self.memory_path(n), SEGMENT_BYTES)
                .unwrap()
                .0
        }

        fn log_path(&self, base: u64) -> PathBuf {
            self.paths.data_dir.join(format!("t-0/{base:020}.log"))
        }

        /// The sealed file of a segment, as the data plane's flusher leaves it.
        fn log_file(&self, base: u64, bytes: &[u8]) {
            std::fs::write(self.log_path(base), bytes).unwrap();
        }
    }

    fn wait_for_rescan() {
        std::thread::sleep(RESCAN_INTERVAL + Duration::from_millis(1));
    }

    fn read_all(map: &mut PartitionMap, offset: u64) -> Vec<u8> {
        match map.read(offset, usize::MAX).unwrap() {
            DirectRead::Batches(bytes) => bytes.to_vec(),
            other => panic!("read at {offset}: {other:?}"),
        }
    }

    #[test]
    fn the_end_offset_follows_appends_and_rolls_walking_only_new_batches() {
        let logs = Logs::new();
        let mut first = logs.memory_segment(1);
        first.append(&batch(0, 10, 100)).unwrap();
        let mut map = PartitionMap::open(&logs.paths, "t", 0).unwrap();
        assert_eq!(map.end_offset().unwrap(), 10);
        assert_eq!(
            map.end,
            Some(Cursor {
                base: 0,
                next: 10,
                position: 100
            })
        );
        first.append(&batch(10, 5, 80)).unwrap();
        first.append(&batch(15, 1, 61)).unwrap();
        assert_eq!(map.end_offset().unwrap(), 16);
        assert_eq!(
            map.end.unwrap().position,
            241,
            "resumed where the last walk ended"
        );
        // A roll: the new segment is found by a rescan once the old one shows nothing new.
        let mut second = logs.memory_segment(2);
        second.append(&batch(16, 4, 70)).unwrap();
        wait_for_rescan();
        assert_eq!(map.end_offset().unwrap(), 20);
        assert_eq!(
            map.end,
            Some(Cursor {
                base: 16,
                next: 20,
                position: 70
            })
        );
        second.append(&batch(20, 2, 64)).unwrap();
        assert_eq!(map.end_offset().unwrap(), 22);
        assert_eq!(map.end_offset().unwrap(), 22, "idempotent");
        assert_eq!(map.log_start_offset(), Some(0));
        // A batch appended before its segment's first one was seen: still counted.
        assert_eq!(
            read_all(&mut map, 17),
            [batch(16, 4, 70), batch(20, 2, 64)].concat()
        );
    }

    #[test]
    fn an_empty_partition_ends_at_zero_and_sees_its_first_segment() {
        let logs = Logs::new();
        let mut spare = logs.memory_segment(1); // created, nothing written yet
        let mut map = PartitionMap::open(&logs.paths, "t", 0).unwrap();
        assert_eq!(map.end_offset().unwrap(), 0);
        assert_eq!(map.read(0, 1 << 20).unwrap(), DirectRead::CaughtUp);
        spare.append(&batch(0, 3, 90)).unwrap();
        wait_for_rescan();
        assert_eq!(map.end_offset().unwrap(), 3);
        assert_eq!(read_all(&mut map, 0), batch(0, 3, 90));
    }

    #[test]
    fn reads_keep_to_the_byte_budget_but_return_one_batch_at_least() {
        let logs = Logs::new();
        let mut segment = logs.memory_segment(1);
        for i in 0..10u64 {
            segment.append(&batch(i * 2, 2, 100)).unwrap();
        }
        let mut map = PartitionMap::open(&logs.paths, "t", 0).unwrap();
        match map.read(5, 0).unwrap() {
            DirectRead::Batches(bytes) => assert_eq!(bytes, batch(4, 2, 100)),
            other => panic!("{other:?}"),
        }
        match map.read(5, 250).unwrap() {
            DirectRead::Batches(bytes) => assert_eq!(bytes.len(), 200),
            other => panic!("{other:?}"),
        }
        // Several readers at different offsets: each gets its own batches.
        for (offset, first_base) in [(0, 0), (13, 12), (1, 0), (19, 18), (7, 6)] {
            match map.read(offset, 100).unwrap() {
                DirectRead::Batches(bytes) => assert_eq!(bytes, batch(first_base, 2, 100)),
                other => panic!("at {offset}: {other:?}"),
            }
        }
        assert!(map.cursors.len() <= READ_CURSORS_MAX);
        assert_eq!(map.read(20, 100).unwrap(), DirectRead::CaughtUp);
        assert_eq!(map.end_offset().unwrap(), 20);
    }

    #[test]
    fn released_segments_are_read_from_their_files_and_retention_moves_the_start() {
        let logs = Logs::new();
        let mut first = logs.memory_segment(1);
        first.append(&batch(0, 5, 100)).unwrap();
        let mut map = PartitionMap::open(&logs.paths, "t", 0).unwrap();
        assert_eq!(map.end_offset().unwrap(), 5);
        // Roll twice while the reader looks away: segment 5 lives and is released between
        // two scans, so the reader only ever sees its file.
        let mut second = logs.memory_segment(2);
        second.append(&batch(5, 5, 100)).unwrap();
        let mut third = logs.memory_segment(3);
        third.append(&batch(10, 5, 100)).unwrap();
        logs.log_file(0, first.published_bytes());
        logs.log_file(5, second.published_bytes());
        drop(first);
        drop(second);
        std::fs::remove_file(logs.memory_path(1)).unwrap();
        std::fs::remove_file(logs.memory_path(2)).unwrap();
        wait_for_rescan();
        assert_eq!(map.end_offset().unwrap(), 15);
        assert!(
            matches!(map.segments[&0], SegmentMap::File(_)),
            "the released memory segment is swapped for its file"
        );
        assert!(matches!(map.segments[&5], SegmentMap::File(_)));
        assert!(matches!(map.segments[&10], SegmentMap::Memory { .. }));
        assert_eq!(read_all(&mut map, 6), batch(5, 5, 100));
        assert_eq!(read_all(&mut map, 0), batch(0, 5, 100));
        // Retention deletes the oldest segment.
        std::fs::remove_file(logs.log_path(0)).unwrap();
        wait_for_rescan();
        third.append(&batch(15, 1, 61)).unwrap();
        assert_eq!(map.read(16, 100).unwrap(), DirectRead::CaughtUp); // rescans
        assert_eq!(map.log_start_offset(), Some(5));
        assert_eq!(
            map.read(3, 100).unwrap(),
            DirectRead::OutOfRange {
                log_start_offset: 5
            }
        );
        assert_eq!(map.end_offset().unwrap(), 16);
    }

    fn epoch_batch(base: u64, records: u32, epoch: i32) -> Vec<u8> {
        let mut out = batch(base, records, 61);
        out[PARTITION_LEADER_EPOCH_OFFSET..PARTITION_LEADER_EPOCH_OFFSET + 4]
            .copy_from_slice(&epoch.to_be_bytes());
        out
    }

    fn starts(history: &EpochHistory) -> Vec<(i32, u64)> {
        history
            .starts()
            .iter()
            .map(|s| (s.epoch, s.start_offset))
            .collect()
    }

    #[test]
    fn leader_epochs_are_read_from_batch_headers_incrementally_and_up_to_a_bound() {
        let logs = Logs::new();
        // Segment 0: producer-written epochs (-1) then epochs 0 and 1; segment 10: epoch 1
        // throughout but for a batch the walk must not see; segment 20: epochs 1, 3.
        let first: Vec<u8> = [
            epoch_batch(0, 2, -1),
            epoch_batch(2, 3, 0),
            epoch_batch(5, 5, 1),
        ]
        .concat();
        logs.log_file(0, &first);
        let second: Vec<u8> = [
            epoch_batch(10, 4, 1),
            // Not monotonic, which no leader writes: proves the segment is skipped.
            epoch_batch(14, 2, 2),
            epoch_batch(16, 4, 1),
        ]
        .concat();
        logs.log_file(10, &second);
        let mut active = logs.memory_segment(3);
        active.append(&epoch_batch(20, 5, 1)).unwrap();
        active.append(&epoch_batch(25, 5, 3)).unwrap();
        let mut map = PartitionMap::open(&logs.paths, "t", 0).unwrap();
        let mut history = EpochHistory::default();
        // Up to 25 (the batch at 25 ends at 29): epoch 3 not reached yet.
        map.extend_epochs(&mut history, 25).unwrap();
        assert_eq!(starts(&history), [(0, 2), (1, 5)]);
        assert_eq!(history.walked_to(), 25);
        // A copy walked to the end sees epoch 3; the kept history is unchanged.
        let mut to_end = history.clone();
        map.extend_epochs(&mut to_end, u64::MAX).unwrap();
        assert_eq!(starts(&to_end), [(0, 2), (1, 5), (3, 25)]);
        assert_eq!(to_end.walked_to(), 30);
        assert_eq!(history.walked_to(), 25);
        // Appends and a roll: the walk goes on from where it stopped.
        active.append(&epoch_batch(30, 2, 3)).unwrap();
        let mut next = logs.memory_segment(4);
        next.append(&epoch_batch(32, 1, 4)).unwrap();
        wait_for_rescan();
        map.extend_epochs(&mut to_end, u64::MAX).unwrap();
        assert_eq!(starts(&to_end), [(0, 2), (1, 5), (3, 25), (4, 32)]);
        assert_eq!(to_end.walked_to(), 33);
        // Retention deletes the first segment: the noted epochs stay, a fresh walk from
        // the oldest segment left starts at its first epoch (and reads that segment, with
        // nothing noted before it: the planted epoch shows).
        std::fs::remove_file(logs.log_path(0)).unwrap();
        wait_for_rescan();
        let mut fresh = EpochHistory::default();
        map.extend_epochs(&mut fresh, u64::MAX).unwrap();
        assert_eq!(starts(&fresh), [(1, 10), (2, 14), (3, 25), (4, 32)]);
        map.extend_epochs(&mut history, u64::MAX).unwrap();
        assert_eq!(starts(&history), [(0, 2), (1, 5), (3, 25), (4, 32)]);
    }

    #[test]
    fn a_memory_file_of_a_known_name_but_another_inode_is_mapped_again() {
        let logs = Logs::new();
        let mut first = logs.memory_segment(1);
        first.append(&batch(0, 5, 100)).unwrap();
        let mut map = PartitionMap::open(&logs.paths, "t", 0).unwrap();
        assert_eq!(map.end_offset().unwrap(), 5);
        // A data plane restart: the old file is removed, a new one gets the same name.
        logs.log_file(0, first.published_bytes());
        drop(first);
        std::fs::remove_file(logs.memory_path(1)).unwrap();
        let mut again = logs.memory_segment(1);
        again.append(&batch(5, 2, 80)).unwrap();
        wait_for_rescan();
        assert_eq!(map.end_offset().unwrap(), 7);
        assert_eq!(read_all(&mut map, 5), batch(5, 2, 80));
    }
}
