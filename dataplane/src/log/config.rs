//! Configuration of the partition logs, with its limits.

use std::path::PathBuf;

use precursor_protocol::record_batch::BATCH_HEADER_BYTES;

use super::LogError;

/// Smallest segment: small segments only make sense in tests.
pub const SEGMENT_BYTES_MIN: u64 = 4096;
/// Largest segment: index positions are u32, and Kafka caps segments at 1 GiB.
pub const SEGMENT_BYTES_MAX: u64 = 1 << 30;
/// Most producers remembered per partition (each costs ~200 bytes, preallocated).
pub const PRODUCERS_PER_PARTITION_LIMIT: u32 = 1 << 20;
/// Longest topic name Kafka accepts (249), so directory names stay within NAME_MAX.
pub const TOPIC_NAME_BYTES_MAX: usize = 249;

/// Where and how partition logs are stored and flushed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogConfig {
    /// Partitions live under `<data_dir>/<topic>-<partition>/`.
    pub data_dir: PathBuf,
    /// Memory files of active (and spare) segments: hugetlbfs when mounted, else /dev/shm.
    pub memory_dir: PathBuf,
    /// Where a segment's memory goes when `memory_dir` is on hugetlbfs and has no pages
    /// left for it (small pages). `None`: `/dev/shm/<last component of memory_dir>`.
    pub small_page_dir: Option<PathBuf>,
    /// A segment rolls when the next batch would make it larger than this.
    pub segment_bytes: u64,
    /// A non-empty active segment rolls this long after its first append.
    pub segment_ms: u64,
    /// One offset index entry per this many bytes of batches (Kafka's index.interval.bytes).
    pub index_interval_bytes: u32,
    /// Oldest sealed segments are deleted while the log stays at least this large.
    pub retention_bytes: Option<u64>,
    /// Sealed segments whose newest timestamp is older than this are deleted.
    pub retention_ms: Option<u64>,
    /// The flusher syncs a partition with unsynced bytes at least this often.
    pub flush_interval_ms: u64,
    /// ... or as soon as this many records are unsynced.
    pub flush_messages: u64,
    /// Largest batch accepted by `append` (at most `segment_bytes`).
    pub batch_bytes_max: u32,
    /// Idempotent producers remembered per partition; the least recently used is evicted.
    pub producers_per_partition_max: u32,
}

impl LogConfig {
    /// Kafka-like defaults under `data_dir`, memory files in the default memory directory.
    pub fn new(data_dir: PathBuf) -> LogConfig {
        LogConfig {
            data_dir,
            memory_dir: precursor_shm::memory_dir_default(),
            small_page_dir: None,
            segment_bytes: 64 << 20,
            segment_ms: 7 * 24 * 3600 * 1000,
            index_interval_bytes: 4096,
            retention_bytes: None,
            retention_ms: Some(7 * 24 * 3600 * 1000),
            flush_interval_ms: 10,
            flush_messages: 10_000,
            batch_bytes_max: 1 << 20,
            producers_per_partition_max: 1024,
        }
    }

    /// The small-page directory segments fall back to when `memory_dir` is on hugetlbfs
    /// (see [`LogConfig::small_page_dir`](LogConfig#structfield.small_page_dir)); `None`
    /// when `memory_dir` has small pages already.
    pub fn small_page_dir(&self) -> Option<PathBuf> {
        if precursor_shm::page_bytes_for(&self.memory_dir) <= precursor_shm::PAGE_BYTES_DEFAULT {
            return None;
        }
        Some(self.small_page_dir.clone().unwrap_or_else(|| {
            let name = self
                .memory_dir
                .file_name()
                .map_or_else(|| "precursor".into(), |name| name.to_os_string());
            PathBuf::from("/dev/shm").join(name)
        }))
    }

    /// Every directory a segment's memory file may be in: `memory_dir`, then the
    /// small-page directory (recovery and clean-up look in both).
    pub fn memory_dirs(&self) -> Vec<PathBuf> {
        let mut dirs = vec![self.memory_dir.clone()];
        dirs.extend(self.small_page_dir().filter(|dir| *dir != self.memory_dir));
        dirs
    }

    /// Checks every limit; the error names the key and the allowed range.
    pub fn validate(&self) -> Result<(), LogError> {
        let invalid = |reason: String| Err(LogError::Config { reason });
        if !(SEGMENT_BYTES_MIN..=SEGMENT_BYTES_MAX).contains(&self.segment_bytes) {
            return invalid(format!(
                "segment_bytes {} not in {SEGMENT_BYTES_MIN}..={SEGMENT_BYTES_MAX}",
                self.segment_bytes
            ));
        }
        if self.segment_ms == 0 {
            return invalid("segment_ms must be at least 1".into());
        }
        if (self.batch_bytes_max as usize) < BATCH_HEADER_BYTES
            || u64::from(self.batch_bytes_max) > self.segment_bytes
        {
            return invalid(format!(
                "batch_bytes_max {} not in {BATCH_HEADER_BYTES}..=segment_bytes ({})",
                self.batch_bytes_max, self.segment_bytes
            ));
        }
        if u64::from(self.index_interval_bytes) > self.segment_bytes {
            return invalid(format!(
                "index_interval_bytes {} exceeds segment_bytes {}",
                self.index_interval_bytes, self.segment_bytes
            ));
        }
        if self.flush_interval_ms == 0 || self.flush_messages == 0 {
            return invalid("flush_interval_ms and flush_messages must be at least 1".into());
        }
        if self.producers_per_partition_max == 0
            || self.producers_per_partition_max > PRODUCERS_PER_PARTITION_LIMIT
        {
            return invalid(format!(
                "producers_per_partition_max {} not in 1..={PRODUCERS_PER_PARTITION_LIMIT}",
                self.producers_per_partition_max
            ));
        }
        if self.data_dir.as_os_str().is_empty() || self.memory_dir.as_os_str().is_empty() {
            return invalid("data_dir and memory_dir must be set".into());
        }
        Ok(())
    }
}

/// Checks a topic name as Kafka does: 1..=249 of `[a-zA-Z0-9._-]`, not `.` or `..`.
pub fn validate_topic(topic: &str) -> Result<(), LogError> {
    let legal = !topic.is_empty()
        && topic.len() <= TOPIC_NAME_BYTES_MAX
        && topic != "."
        && topic != ".."
        && topic
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-');
    if legal {
        Ok(())
    } else {
        Err(LogError::InvalidTopic {
            topic: topic.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_limits_are_checked() {
        let cfg = LogConfig::new("/tmp/x".into());
        cfg.validate().unwrap();
        let mut bad = cfg.clone();
        bad.segment_bytes = 100;
        assert!(bad.validate().is_err());
        let mut bad = cfg.clone();
        bad.batch_bytes_max = (cfg.segment_bytes + 1) as u32;
        assert!(bad.validate().is_err());
        let mut bad = cfg;
        bad.producers_per_partition_max = 0;
        assert!(bad.validate().is_err());
        assert!(validate_topic("orders.v1_x-2").is_ok());
        for topic in ["", ".", "..", "a/b", "a+b", &"x".repeat(250)] {
            assert!(validate_topic(topic).is_err(), "{topic}");
        }
    }
}
