//! Direct reads of a partition's log from the data plane's shared maps, on the same host:
//! the active segment and sealed segments still in memory (`<memory_dir>/<topic>-<p>+<n>.segment`,
//! read through their published length), and sealed segments on disk
//! (`<data_dir>/<topic>-<p>/<base>.log`, mapped read-only). No request, no copy, no lock:
//! the reader only loads the writer's published length, so it can never slow the data
//! plane down. Where the data plane keeps these is in `<cnc_dir>/paths`, written at start.
//!
//! Reads return whole record batches exactly as stored (Kafka RecordBatch v2), borrowed
//! from the map.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

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
    Memory(AppendRegionView),
    File(ReadOnlyFileMap),
}

impl SegmentMap {
    fn bytes(&self) -> &[u8] {
        match self {
            SegmentMap::Memory(view) => view.bytes(),
            SegmentMap::File(map) => map.bytes(),
        }
    }
}

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

/// Reads one partition of one topic directly from the shared maps.
pub struct PartitionMap {
    paths: LogPaths,
    topic: String,
    partition: u16,
    /// Mapped segments by base offset (memory ones win over files of the same base).
    segments: BTreeMap<u64, SegmentMap>,
    /// Memory files already mapped, by path (a spare has no base offset yet).
    seen_memory: Vec<PathBuf>,
    /// Where the last read ended: (base offset of its segment, next offset, byte position).
    cursor: Option<(u64, u64, usize)>,
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
            seen_memory: Vec::new(),
            cursor: None,
            last_scan: None,
        };
        map.scan()?;
        Ok(map)
    }

    /// Maps the segments not mapped yet (a syscall walk of two directories; done at open,
    /// and then only when a read finds nothing past what is mapped).
    fn scan(&mut self) -> Result<(), ClientError> {
        self.last_scan = Some(Instant::now());
        let prefix = format!("{}-{}+", self.topic, self.partition);
        for entry in std::fs::read_dir(&self.paths.memory_dir)?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.starts_with(&prefix) || !name.ends_with(".segment") {
                continue;
            }
            let path = entry.path();
            if self.seen_memory.contains(&path) {
                continue;
            }
            // Unlinked between listing and opening (sealed and released): its bytes are
            // in the .log file now.
            let Ok(view) = AppendRegionView::open(&path) else {
                continue;
            };
            let Some((base, _, _)) = batch_at(view.bytes(), 0) else {
                continue; // a spare, not written yet: seen again on the next scan
            };
            self.seen_memory.push(path);
            self.segments.insert(base, SegmentMap::Memory(view));
        }
        let dir = self
            .paths
            .data_dir
            .join(format!("{}-{}", self.topic, self.partition));
        let lowest_memory = self.segments.keys().next().copied().unwrap_or(u64::MAX);
        for entry in std::fs::read_dir(&dir)?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(base) = name
                .strip_suffix(".log")
                .and_then(|s| s.parse::<u64>().ok())
            else {
                continue;
            };
            // Files at or above the lowest memory segment may still be being written.
            if base >= lowest_memory || self.segments.contains_key(&base) {
                continue;
            }
            let bytes = entry.metadata()?.len() as usize;
            if let Ok(map) = ReadOnlyFileMap::open(&entry.path(), bytes) {
                self.segments.insert(base, SegmentMap::File(map));
            }
        }
        Ok(())
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
            let due = match self.last_scan {
                Some(at) => at.elapsed() >= RESCAN_INTERVAL,
                None => true,
            };
            if attempt == 0 && due {
                self.scan()?;
            }
        }
        Ok(DirectRead::CaughtUp)
    }

    /// The segment and byte range holding `offset`, walking batch headers from the last
    /// read's end when it can (sequential reads cost one header per batch).
    fn locate(&mut self, offset: u64, max_bytes: usize) -> Option<(u64, usize, usize)> {
        let (&base, segment) = self.segments.range(..=offset).next_back()?;
        let bytes = segment.bytes();
        let mut at = match self.cursor {
            Some((cursor_base, next, position)) if cursor_base == base && next <= offset => {
                position
            }
            _ => 0,
        };
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
        self.cursor = Some((base, next, end));
        Some((base, start, end))
    }

    /// The offset after the last record mapped now (the log end as this reader sees it).
    pub fn end_offset(&mut self) -> Result<u64, ClientError> {
        let mut next = self.log_start_offset().unwrap_or(0);
        while let DirectRead::Batches(bytes) = self.read(next, usize::MAX)? {
            let mut at = 0;
            while let Some((_, last, total)) = batch_at(bytes, at) {
                next = last + 1;
                at += total;
            }
        }
        Ok(next)
    }

    /// The first retained offset, as mapped.
    pub fn log_start_offset(&self) -> Option<u64> {
        self.segments.keys().next().copied()
    }
}
