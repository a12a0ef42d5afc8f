//! Where a partition's segment memory comes from: hugetlbfs while it has pages, else the
//! small-page directory (`/dev/shm`), segment by segment.
//!
//! A memory file on hugetlbfs reserves its pages at `mmap` (ENOMEM/ENOSPC when the pool or
//! the mount's `size=` cannot give them), so a mapping that was made never SIGBUSes at first
//! touch; `MADV_POPULATE_WRITE` (the prefault of a spare) returns an error rather than
//! raising SIGBUS too. Before creating a file there the free pages are checked
//! ([`precursor_shm::hugetlbfs_free_pages`]); when they are too few, or `mmap`/prefault
//! fails for lack of pages anyway (another process took them meanwhile), that segment's
//! memory is made in the small-page directory instead. The partition logs one warning the
//! first time (not one per segment), and every such segment is counted
//! ([`FlusherHandle::segments_on_small_pages`](super::FlusherHandle::segments_on_small_pages)).
//! The next segment tries hugetlbfs again: pages freed by a deleted topic are used again.
//!
//! Recovery (salvage of a killed data plane's memory, removal of stale files) scans both
//! directories: see [`LogConfig::memory_dirs`].

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use precursor_shm::{
    append_region, hugetlbfs_free_pages, page_bytes_for, round_up_to_page, AppendReader,
    AppendWriter, ShmError, APPEND_HEADER_BYTES, PAGE_BYTES_DEFAULT,
};

use super::{io_error, LogConfig, LogError};

/// Hugepages (of the memory directory's size) that segments leave free for DPDK, which
/// takes its memory after the partitions are recovered: see [`keep_hugepages_free`].
static HUGEPAGES_KEPT_FREE: AtomicU64 = AtomicU64::new(0);

/// Makes segments leave `pages` hugepages free (0: none). The node keeps DPDK's need free
/// from recovery until `rte_eal_init` and the packet pool have taken it: a restart with
/// few hugepages otherwise gave them all to segments and the pool failed with ENOMEM.
pub fn keep_hugepages_free(pages: u64) {
    HUGEPAGES_KEPT_FREE.store(pages, Ordering::Relaxed);
}

const ENOMEM: i32 = 12;
const EFAULT: i32 = 14;
const ENOSPC: i32 = 28;

/// Makes the memory files of one partition's segments, `<prefix><n>.segment`, numbered from
/// 1 in creation order (in whichever directory each one lands).
pub(crate) struct SegmentMemory {
    partition: String,
    prefix: String,
    memory_dir: PathBuf,
    /// The small-page directory when `memory_dir` is on hugetlbfs.
    fallback_dir: Option<PathBuf>,
    /// Pages of `memory_dir` a segment's file takes (header page included).
    huge_pages_per_segment: u64,
    segment_bytes: usize,
    files_made: u64,
    /// The partition said it fell back to small pages (and has not got huge pages since).
    on_small_pages: bool,
    small_page_segments: Arc<AtomicU64>,
}

impl SegmentMemory {
    pub(crate) fn new(
        cfg: &LogConfig,
        partition: &str,
        prefix: String,
        small_page_segments: Arc<AtomicU64>,
    ) -> SegmentMemory {
        let page_bytes = page_bytes_for(&cfg.memory_dir);
        let huge = page_bytes > PAGE_BYTES_DEFAULT;
        let segment_bytes = cfg.segment_bytes as usize;
        SegmentMemory {
            partition: partition.to_string(),
            prefix,
            memory_dir: cfg.memory_dir.clone(),
            fallback_dir: if huge { cfg.small_page_dir() } else { None },
            huge_pages_per_segment: (round_up_to_page(
                APPEND_HEADER_BYTES + segment_bytes,
                page_bytes,
            ) / page_bytes) as u64,
            segment_bytes,
            files_made: 0,
            on_small_pages: false,
            small_page_segments,
        }
    }

    /// Whether the memory directory is on hugetlbfs (spares are prefaulted there).
    pub(crate) fn huge(&self) -> bool {
        page_bytes_for(&self.memory_dir) > PAGE_BYTES_DEFAULT
    }

    /// Creates the next segment's memory: on hugetlbfs when it has the pages (prefaulted
    /// when `prefault`), else in the small-page directory (faulted lazily).
    pub(crate) fn create(
        &mut self,
        prefault: bool,
    ) -> Result<(AppendWriter, AppendReader), LogError> {
        self.files_made += 1;
        let name = format!("{}{}.segment", self.prefix, self.files_made);
        let huge_path = self.memory_dir.join(&name);
        let Some(fallback_dir) = self.fallback_dir.clone() else {
            return Ok(self.create_in(&huge_path, prefault)?);
        };
        let kept = HUGEPAGES_KEPT_FREE.load(Ordering::Relaxed);
        let reason = match hugetlbfs_free_pages(&self.memory_dir) {
            Some(free) if free < self.huge_pages_per_segment + kept => format!(
                "{free} free hugepages in {}, a segment needs {}{}",
                self.memory_dir.display(),
                self.huge_pages_per_segment,
                if kept > 0 {
                    format!(" and {kept} are kept for DPDK until it has started")
                } else {
                    String::new()
                }
            ),
            _ => match self.create_in(&huge_path, prefault) {
                Ok(region) => {
                    if self.on_small_pages {
                        self.on_small_pages = false;
                        log::info!(
                            "partition {}: hugepages available again, new segments use them",
                            self.partition
                        );
                    }
                    return Ok(region);
                }
                Err(error) if out_of_huge_pages(&error) => error.to_string(),
                Err(error) => return Err(error.into()),
            },
        };
        std::fs::create_dir_all(&fallback_dir).map_err(io_error(&fallback_dir))?;
        let region = self.create_in(&fallback_dir.join(&name), false)?;
        self.small_page_segments.fetch_add(1, Ordering::Relaxed);
        if !self.on_small_pages {
            self.on_small_pages = true;
            log::warn!(
                "partition {}: hugepages ran out ({reason}); the partition now uses small \
                 pages in {} for its segments (slower appends: page faults, TLB misses). \
                 Reserve more hugepages (vm.nr_hugepages) or use fewer partitions",
                self.partition,
                fallback_dir.display()
            );
        }
        Ok(region)
    }

    /// One region at `path`, prefaulted when asked; nothing left behind on failure.
    fn create_in(
        &self,
        path: &Path,
        prefault: bool,
    ) -> Result<(AppendWriter, AppendReader), ShmError> {
        let (writer, reader) = append_region(path, self.segment_bytes)?;
        if prefault {
            if let Err(error) = writer.prefault() {
                drop((writer, reader));
                let _ = std::fs::remove_file(path);
                return Err(error);
            }
        }
        Ok((writer, reader))
    }
}

/// Errors that mean "hugetlbfs has no pages for this": ENOMEM and ENOSPC (`ftruncate`,
/// `mmap`'s reservation, a `size=` limit), EFAULT (a prefault that would have SIGBUSed).
fn out_of_huge_pages(error: &ShmError) -> bool {
    match error {
        ShmError::Io { source, .. } => {
            matches!(source.raw_os_error(), Some(ENOMEM | ENOSPC | EFAULT))
        }
        _ => false,
    }
}

/// Removes every memory file of `prefix` in every memory directory of `cfg` (a directory
/// that does not exist holds none).
pub(crate) fn remove_memory_files(cfg: &LogConfig, prefix: &str) -> Result<(), LogError> {
    for dir in cfg.memory_dirs() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
            Err(error) => return Err(io_error(&dir)(error)),
        };
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with(prefix) {
                let path = entry.path();
                match std::fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                    Err(error) => return Err(io_error(&path)(error)),
                }
            }
        }
    }
    Ok(())
}
