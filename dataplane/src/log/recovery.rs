//! Start-up recovery of one partition directory (off the lcore).
//!
//! Every segment's batch headers are replayed (rebuilding its index with the same
//! [`SparseIndex::on_batch`] the lcore uses, and the producer state). Segments that were not
//! sealed cleanly — the tail, and any whose index files are missing or differ — are
//! checked batch by batch (framing, CRC32C, contiguous offsets); at the first bad or torn
//! batch the segment is truncated there and every later segment deleted. An acknowledged
//! durable batch was fdatasynced whole, so it is never cut; a batch written only in part
//! is removed whole.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};

use precursor_protocol::record_batch::{batches, validate_batch, BatchError};
use precursor_shm::ReadOnlyFileMap;

use super::epochs::EpochHistory;
use super::producer::ProducerTable;
use super::segment::{parse_segment_name, segment_path, SPARE_LOG_NAME};
use super::{io_error, LogConfig, LogError, SparseIndex};

/// One segment after recovery.
pub struct RecoveredSegment {
    pub log_path: PathBuf,
    pub index: SparseIndex,
}

/// Recovers `dir`: returns its segments in offset order (possibly none) and fills
/// `producers`.
pub fn recover(
    dir: &Path,
    cfg: &LogConfig,
    producers: &mut ProducerTable,
    epochs: &mut EpochHistory,
) -> Result<Vec<RecoveredSegment>, LogError> {
    let mut bases = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(io_error(dir))?;
    for entry in entries {
        let entry = entry.map_err(io_error(dir))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let path = entry.path();
        if name == SPARE_LOG_NAME || name.ends_with(".tmp") {
            std::fs::remove_file(&path).map_err(io_error(&path))?;
            continue;
        }
        match parse_segment_name(&name) {
            Some((base, "log")) => bases.push(base),
            Some((base, "index" | "timeindex")) if !segment_path(dir, base, "log").exists() => {
                std::fs::remove_file(&path).map_err(io_error(&path))?;
            }
            _ => {}
        }
    }
    bases.sort_unstable();

    let mut segments: Vec<RecoveredSegment> = Vec::with_capacity(bases.len());
    let mut cut = false;
    for (i, &base) in bases.iter().enumerate() {
        let log_path = segment_path(dir, base, "log");
        let expected_base = segments.last().map(|s| s.index.end_offset());
        if cut || expected_base.is_some_and(|expected| expected != base) {
            log::warn!(
                "{}: deleting segment {base}: it does not follow the recovered log (expected \
                 base {expected_base:?})",
                dir.display()
            );
            remove_segment(&log_path)?;
            cut = true;
            continue;
        }
        let is_tail = i + 1 == bases.len();
        let file_bytes = std::fs::metadata(&log_path)
            .map_err(io_error(&log_path))?
            .len();
        let map = ReadOnlyFileMap::open(&log_path, file_bytes as usize)?;
        let index_capacity_bytes = cfg.segment_bytes.max(file_bytes);
        let mut index = SparseIndex::new(base, cfg.index_interval_bytes, index_capacity_bytes);
        let (valid_bytes, problem) = replay(map.bytes(), &mut index, producers, epochs, false);
        if !is_tail {
            index.seal();
        }
        let clean = !is_tail && problem.is_none() && index.files_match(&log_path);
        let (valid_bytes, problem) = if clean {
            (valid_bytes, None)
        } else {
            // Check every batch, CRC included, rebuilding the index from scratch. The
            // producer table got every framed batch of the first pass; when batches are cut
            // below, it is rebuilt from what remains (`cut`).
            index.reset(base);
            let checked = replay(
                map.bytes(),
                &mut index,
                &mut ProducerTable::new(1),
                &mut EpochHistory::default(),
                true,
            );
            if !is_tail {
                index.seal();
            }
            checked
        };
        drop(map);
        if let Some(problem) = problem {
            let cut_bytes = file_bytes - valid_bytes as u64;
            log::warn!(
                "{}: truncating {cut_bytes} bytes of segment {base} at position {valid_bytes} \
                 (torn or corrupt tail: {problem})",
                dir.display()
            );
            let file = OpenOptions::new()
                .write(true)
                .open(&log_path)
                .map_err(io_error(&log_path))?;
            file.set_len(valid_bytes as u64)
                .map_err(io_error(&log_path))?;
            file.sync_all().map_err(io_error(&log_path))?;
            cut = true;
        }
        if !is_tail && !cut && !clean {
            index.write_files(&log_path).map_err(io_error(&log_path))?;
        }
        segments.push(RecoveredSegment { log_path, index });
    }
    // Replaying a cut log may have recorded producer batches past the cut: rebuild the
    // producer table from what remains (rare: only after a truncation).
    if cut {
        *producers = ProducerTable::new(cfg.producers_per_partition_max);
        *epochs = EpochHistory::default();
        for segment in &segments {
            let map =
                ReadOnlyFileMap::open(&segment.log_path, segment.index.end_position() as usize)?;
            let mut index = SparseIndex::new(
                segment.index.base_offset(),
                cfg.index_interval_bytes,
                u64::from(segment.index.end_position()).max(cfg.segment_bytes),
            );
            replay(map.bytes(), &mut index, producers, epochs, false);
        }
    }
    // The tail is the active segment again: its index lives in memory only.
    if let Some(tail) = segments.last_mut() {
        for ext in ["index", "timeindex"] {
            let path = tail.log_path.with_extension(ext);
            if path.exists() {
                std::fs::remove_file(&path).map_err(io_error(&path))?;
            }
        }
    }
    Ok(segments)
}

/// Replays the batches of `bytes` into `index` and `producers`; returns the bytes of whole
/// valid batches and, when they are not all of `bytes`, why.
fn replay(
    bytes: &[u8],
    index: &mut SparseIndex,
    producers: &mut ProducerTable,
    epochs: &mut EpochHistory,
    check_crc: bool,
) -> (usize, Option<BatchError>) {
    let mut iter = batches(bytes);
    let mut valid_bytes = 0;
    for item in iter.by_ref() {
        let (header, batch) = match item {
            Ok(found) => found,
            Err(error) => return (valid_bytes, Some(error)),
        };
        if check_crc {
            if let Err(error) = validate_batch(batch) {
                return (valid_bytes, Some(error));
            }
        }
        let base = header.base_offset;
        if base < 0 || base as u64 != index.end_offset() || header.last_offset_delta < 0 {
            return (
                valid_bytes,
                Some(BatchError::MalformedRecord("batch offsets not contiguous")),
            );
        }
        let last = header.last_offset() as u64;
        index.on_batch(
            valid_bytes as u32,
            header.total_bytes() as u32,
            base as u64,
            last,
            header.max_timestamp,
        );
        producers.record(&header, base as u64, last);
        epochs.on_batch(header.partition_leader_epoch, base as u64);
        valid_bytes += header.total_bytes();
    }
    assert_eq!(valid_bytes, iter.position());
    (valid_bytes, None)
}

/// Cuts a closed partition's files at `offset` (a follower's divergent tail, KIP-101):
/// segments starting at or after it are deleted, the one holding it is truncated at the
/// first batch that reaches `offset` and its index files removed (the next open rebuilds
/// them). Returns the bytes removed. Blocking: off the lcore, with the partition closed and
/// released by the flusher.
pub fn truncate_files(dir: &Path, offset: u64) -> Result<u64, LogError> {
    let mut bases = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_error(dir))? {
        let entry = entry.map_err(io_error(dir))?;
        if let Some((base, "log")) = parse_segment_name(&entry.file_name().to_string_lossy()) {
            bases.push(base);
        }
    }
    bases.sort_unstable();
    let mut removed = 0u64;
    for &base in bases.iter().rev() {
        let log_path = segment_path(dir, base, "log");
        let file_bytes = std::fs::metadata(&log_path)
            .map_err(io_error(&log_path))?
            .len();
        if base >= offset && base != bases[0] {
            removed += file_bytes;
            remove_segment(&log_path)?;
            continue;
        }
        let map = ReadOnlyFileMap::open(&log_path, file_bytes as usize)?;
        let mut keep = 0usize;
        for item in batches(map.bytes()) {
            let Ok((header, _)) = item else { break };
            if header.last_offset() as u64 >= offset {
                break;
            }
            keep += header.total_bytes();
        }
        drop(map);
        if keep as u64 == file_bytes {
            break;
        }
        let file = OpenOptions::new()
            .write(true)
            .open(&log_path)
            .map_err(io_error(&log_path))?;
        file.set_len(keep as u64).map_err(io_error(&log_path))?;
        file.sync_all().map_err(io_error(&log_path))?;
        removed += file_bytes - keep as u64;
        for ext in ["index", "timeindex"] {
            let path = log_path.with_extension(ext);
            if path.exists() {
                std::fs::remove_file(&path).map_err(io_error(&path))?;
            }
        }
        break;
    }
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error(dir))?;
    Ok(removed)
}

fn remove_segment(log_path: &Path) -> Result<(), LogError> {
    for ext in ["log", "index", "timeindex"] {
        let path = log_path.with_extension(ext);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(io_error(&path)(error)),
        }
    }
    Ok(())
}
