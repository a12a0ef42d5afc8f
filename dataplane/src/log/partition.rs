//! One partition's log, owned by exactly one lcore.

use std::collections::VecDeque;
use std::fs::OpenOptions;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use precursor_protocol::record_batch::{set_base_offset, validate_batch};
use precursor_shm::{append_region, AppendWriter, ReadOnlyFileMap};

use super::config::validate_topic;
use super::flusher::{
    FlushTarget, FlushedPartition, PartitionShared, Spare, ToFlusher, ToLcore, SPARE_SEGMENTS,
    TO_FLUSHER_CAPACITY,
};
use super::producer::{ProducerTable, SequenceCheck};
use super::recovery::recover;
use super::segment::{copy_batches, memory_file_prefix, segment_path, SealedSegment, SegmentData};
use super::{io_error, AppendError, FlusherHandle, LogConfig, LogError, ReadError, SparseIndex};

/// Sealed segment slots kept free ahead of rolls (grown by `maintain`, never by `append`).
const SEALED_SEGMENTS_SLACK: usize = 64;

/// Where an appended batch went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Appended {
    pub base_offset: u64,
    pub last_offset: u64,
    /// The batch was a retransmission: these are the original's offsets, nothing appended.
    pub duplicate: bool,
}

/// Where one segment of a partition lives in this process's memory: what a one-sided
/// (RDMA READ) reader is granted. See [`PartitionLog::segment_span`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentSpan<'a> {
    /// Offset of the segment's first record.
    pub base_offset: u64,
    /// Start of the segment's mapping in this process.
    pub address: usize,
    /// Bytes mapped from `address`: the capacity of a memory segment, the length of a
    /// persisted one's file map.
    pub mapped_bytes: usize,
    /// Bytes of whole batches published (never written again).
    pub published_bytes: usize,
    /// Position of a batch at or before the offset asked for (the published end when the
    /// offset is the log end).
    pub position: usize,
    /// The active segment (it still grows).
    pub active: bool,
    /// The `.log` file the bytes are mapped from, once the segment is persisted (before:
    /// `None`, the bytes are the segment's memory).
    pub file: Option<&'a std::path::Path>,
}

/// The log of one partition. Owned by one lcore (`Send`, not shared): `append`, `read` and
/// `maintain` make no system call, take no lock and (`append`, `read`) allocate nothing.
pub struct PartitionLog {
    shared: Arc<PartitionShared>,
    dir: PathBuf,
    batch_bytes_max: u32,
    segment_ms: u64,
    retention_bytes: Option<u64>,
    retention_ms: Option<u64>,
    active: AppendWriter,
    active_index: SparseIndex,
    active_first_append_ms: Option<i64>,
    /// Segments the flusher prepared, rolled onto oldest first (at most `SPARE_SEGMENTS`).
    spares: VecDeque<Spare>,
    sealed: VecDeque<SealedSegment>,
    sealed_bytes: u64,
    producers: ProducerTable,
}

impl std::fmt::Debug for PartitionLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartitionLog")
            .field("name", &self.shared.name)
            .field("log_start_offset", &self.log_start_offset())
            .field("log_end_offset", &self.log_end_offset())
            .field("durable_offset", &self.durable_offset())
            .finish()
    }
}

impl PartitionLog {
    /// Creates or recovers `<data_dir>/<topic>-<partition>/` and registers it with the
    /// flusher. Blocking: call it off the lcore (start-up, admin thread).
    pub fn open(
        cfg: &LogConfig,
        topic: &str,
        partition: u16,
        flusher: &FlusherHandle,
    ) -> Result<PartitionLog, LogError> {
        cfg.validate()?;
        validate_topic(topic)?;
        let name = format!("{topic}-{partition}");
        let dir = cfg.data_dir.join(&name);
        std::fs::create_dir_all(&dir).map_err(io_error(&dir))?;
        std::fs::create_dir_all(&cfg.memory_dir).map_err(io_error(&cfg.memory_dir))?;
        let shared = flusher.claim(&dir, &name)?;
        let memory_prefix = memory_file_prefix(topic, partition);
        remove_stale_memory_files(cfg, &memory_prefix)?;

        let mut producers = ProducerTable::new(cfg.producers_per_partition_max);
        let mut segments = recover(&dir, cfg, &mut producers)?;
        // The tail becomes the active segment again, unless it is full.
        let tail = match segments.pop() {
            Some(tail) if u64::from(tail.index.end_position()) < cfg.segment_bytes => Some(tail),
            Some(mut full) => {
                full.index.seal();
                full.index
                    .write_files(&full.log_path)
                    .map_err(io_error(&full.log_path))?;
                segments.push(full);
                None
            }
            None => None,
        };
        let mut sealed = VecDeque::with_capacity(segments.len() + SEALED_SEGMENTS_SLACK);
        let mut sealed_bytes = 0;
        for segment in segments {
            let map =
                ReadOnlyFileMap::open(&segment.log_path, segment.index.end_position() as usize)?;
            sealed_bytes += u64::from(segment.index.end_position());
            sealed.push_back(SealedSegment {
                index: segment.index,
                data: SegmentData::File(map),
            });
        }
        let (log_path, index) = match tail {
            Some(tail) => (tail.log_path, tail.index),
            None => {
                let base = sealed.back().map_or(0, SealedSegment::end_offset);
                let log_path = segment_path(&dir, base, "log");
                std::fs::File::create(&log_path).map_err(io_error(&log_path))?;
                std::fs::File::open(&dir)
                    .and_then(|d| d.sync_all())
                    .map_err(io_error(&dir))?;
                (
                    log_path,
                    SparseIndex::new(base, cfg.index_interval_bytes, cfg.segment_bytes),
                )
            }
        };
        let tail_bytes = index.end_position() as usize;
        let file = OpenOptions::new()
            .write(true)
            .open(&log_path)
            .map_err(io_error(&log_path))?;
        // What a crash left in the page cache is made durable before it is acknowledged.
        file.sync_data().map_err(io_error(&log_path))?;
        let durable = index.end_offset();

        let memory_path = cfg.memory_dir.join(format!("{memory_prefix}1.segment"));
        let (mut active, reader) = append_region(&memory_path, cfg.segment_bytes as usize)?;
        let tail_map = ReadOnlyFileMap::open(&log_path, tail_bytes)?;
        active
            .append(tail_map.bytes())
            .expect("the tail fits its segment");
        drop(tail_map);
        let mut flushed = FlushedPartition::new(
            Arc::clone(&shared),
            cfg,
            dir.clone(),
            memory_prefix,
            FlushTarget {
                reader,
                file,
                log_path,
                written: tail_bytes,
                synced: tail_bytes,
                index: index.clone(),
            },
        );
        let mut spares = VecDeque::with_capacity(SPARE_SEGMENTS);
        spares.push_back(flushed.prepare_spare()?);
        shared.durable_offset.store(durable, Ordering::Release);
        flusher.register(Box::new(flushed))?;
        log::info!(
            "partition {name}: opened, offsets {}..{}, {} sealed segments",
            sealed
                .front()
                .map_or(index.base_offset(), SealedSegment::base_offset),
            index.end_offset(),
            sealed.len()
        );
        Ok(PartitionLog {
            shared,
            dir,
            batch_bytes_max: cfg.batch_bytes_max,
            segment_ms: cfg.segment_ms,
            retention_bytes: cfg.retention_bytes,
            retention_ms: cfg.retention_ms,
            active,
            active_index: index,
            active_first_append_ms: None,
            spares,
            sealed,
            sealed_bytes,
            producers,
        })
    }

    /// Appends one record batch (Kafka v2, as produced): validates it, applies the
    /// idempotent producer checks, assigns offsets and copies it once into the active
    /// segment. No system call, lock or allocation.
    pub fn append(&mut self, batch: &[u8], now_ms: i64) -> Result<Appended, AppendError> {
        if let Some(reason) = self.storage_error() {
            return Err(AppendError::Storage { reason });
        }
        if batch.len() > self.batch_bytes_max as usize {
            return Err(AppendError::TooLarge {
                bytes: batch.len(),
                max: self.batch_bytes_max,
            });
        }
        let header = validate_batch(batch)?;
        let sequence = self.producers.check(&header);
        if let Ok(SequenceCheck::Duplicate {
            base_offset,
            last_offset,
        }) = sequence
        {
            return Ok(Appended {
                base_offset,
                last_offset,
                duplicate: true,
            });
        }
        // A full segment without a spare says "retry" before any sequence error: the
        // batches a producer pipelined behind a refused one are refused the same way.
        if self.active.free_bytes() < batch.len() && !self.roll() {
            return Err(AppendError::SegmentNotReady);
        }
        sequence?;
        let base_offset = self.log_end_offset();
        let last_offset = base_offset + header.last_offset_delta as u64;
        let position = self.active.published();
        let stored = &mut self.active.unpublished_mut()[..batch.len()];
        stored.copy_from_slice(batch);
        set_base_offset(stored, base_offset as i64);
        self.active.publish(position + batch.len());
        self.active_index.on_batch(
            position as u32,
            batch.len() as u32,
            base_offset,
            last_offset,
            header.max_timestamp,
        );
        self.producers.record(&header, base_offset, last_offset);
        self.active_first_append_ms.get_or_insert(now_ms);
        debug_assert_eq!(self.log_end_offset(), last_offset + 1);
        Ok(Appended {
            base_offset,
            last_offset,
            duplicate: false,
        })
    }

    /// Swaps in the oldest spare segment. False when none is ready (or queues are full).
    fn roll(&mut self) -> bool {
        if self.spares.is_empty() {
            self.poll_flusher();
        }
        if self.spares.is_empty()
            || self.shared.to_flusher.len() + 1 >= TO_FLUSHER_CAPACITY
            || self.sealed.len() == self.sealed.capacity()
        {
            return false;
        }
        let Spare { writer, mut index } = self.spares.pop_front().expect("checked above");
        self.shared.spares_taken.fetch_add(1, Ordering::Release);
        let new_base_offset = self.log_end_offset();
        index.reset(new_base_offset);
        assert_eq!(writer.published(), 0);
        let old_writer = std::mem::replace(&mut self.active, writer);
        let mut old_index = std::mem::replace(&mut self.active_index, index);
        old_index.seal();
        let sealed_bytes = old_writer.published();
        assert_eq!(sealed_bytes, old_index.end_position() as usize);
        self.sealed_bytes += sealed_bytes as u64;
        self.sealed.push_back(SealedSegment {
            index: old_index,
            data: SegmentData::Memory(old_writer.into_reader()),
        });
        self.active_first_append_ms = None;
        let sent = self.shared.to_flusher.push(ToFlusher::Rolled {
            sealed_bytes,
            new_base_offset,
        });
        assert!(
            sent.is_ok(),
            "room was checked and the lcore is the only sender"
        );
        true
    }

    /// Takes what the flusher sent: a spare segment, maps of sealed segments.
    fn poll_flusher(&mut self) {
        // Bounded by the queue's capacity; stops while no Release could be sent back.
        while self.shared.to_flusher.len() + 1 < TO_FLUSHER_CAPACITY {
            let Some(message) = self.shared.to_lcore.pop() else {
                break;
            };
            match message {
                ToLcore::Spare(spare) => {
                    assert!(self.spares.len() < SPARE_SEGMENTS, "too many spares");
                    self.spares.push_back(spare);
                }
                ToLcore::Sealed { base_offset, map } => {
                    let slot = self
                        .sealed
                        .binary_search_by_key(&base_offset, SealedSegment::base_offset)
                        .expect("a sealed segment is retired only once persisted");
                    let segment = &mut self.sealed[slot];
                    assert_eq!(map.len() as u64, segment.bytes());
                    let memory = std::mem::replace(&mut segment.data, SegmentData::File(map));
                    if let SegmentData::Memory(reader) = memory {
                        let sent = self.shared.to_flusher.push(ToFlusher::Release(reader));
                        assert!(sent.is_ok(), "room was checked");
                    }
                }
            }
        }
    }

    /// Periodic work on the lcore's drain timer: take the flusher's messages, roll by time,
    /// apply retention. No blocking work (files are deleted by the flusher). May grow the
    /// sealed segment list (rarely) so that `append` never has to.
    pub fn maintain(&mut self, now_ms: i64) {
        self.poll_flusher();
        if self.sealed.capacity() - self.sealed.len() < 2 {
            self.sealed.reserve(SEALED_SEGMENTS_SLACK);
        }
        if let Some(first_ms) = self.active_first_append_ms {
            if now_ms.saturating_sub(first_ms) >= self.segment_ms as i64 {
                self.roll();
            }
        }
        self.apply_retention(now_ms);
    }

    fn apply_retention(&mut self, now_ms: i64) {
        // Bounded by the number of sealed segments; never touches the active segment.
        while let Some(oldest) = self.sealed.front() {
            if !matches!(oldest.data, SegmentData::File(_))
                || self.shared.to_flusher.len() + 1 >= TO_FLUSHER_CAPACITY
            {
                break;
            }
            let by_size = self
                .retention_bytes
                .is_some_and(|max| self.size_bytes() - oldest.bytes() >= max);
            let newest_ms = oldest.index.max_timestamp_ms();
            let by_time = self
                .retention_ms
                .is_some_and(|max| newest_ms >= 0 && now_ms.saturating_sub(newest_ms) > max as i64);
            if !by_size && !by_time {
                break;
            }
            let oldest = self.sealed.pop_front().expect("checked above");
            self.sealed_bytes -= oldest.bytes();
            let sent = self.shared.to_flusher.push(ToFlusher::Retire(oldest));
            assert!(sent.is_ok(), "room was checked");
        }
    }

    /// Copies whole batches, starting with the one holding `offset`, into `out`: at least
    /// one when it fits `out`, then more while within `max_bytes`. Reads one segment per
    /// call. With `durable_only`, only batches below `durable_offset()`. Returns 0 at the
    /// end of the log, and when the first batch is larger than `out` (`out` should hold
    /// `batch_bytes_max`).
    pub fn read(
        &self,
        offset: u64,
        max_bytes: usize,
        durable_only: bool,
        out: &mut [u8],
    ) -> Result<usize, ReadError> {
        let start = self.log_start_offset();
        let end = self.log_end_offset();
        if offset < start || offset > end {
            return Err(ReadError::OffsetOutOfRange { offset, start, end });
        }
        let limit = if durable_only {
            self.durable_offset().min(end)
        } else {
            end
        };
        if offset >= limit {
            return Ok(0);
        }
        let (bytes, index) = if offset >= self.active_index.base_offset() {
            (self.active.published_bytes(), &self.active_index)
        } else {
            let after = self.sealed.partition_point(|s| s.base_offset() <= offset);
            assert!(after > 0, "offset {offset} below the first segment");
            let segment = &self.sealed[after - 1];
            (segment.data.bytes(), &segment.index)
        };
        let position = index.lookup(offset) as usize;
        copy_batches(bytes, position, offset, limit, max_bytes, out).map_err(|bytes| {
            ReadError::BatchTooLarge {
                offset,
                bytes,
                room: out.len(),
            }
        })
    }

    /// The segment holding `offset` (the active one for the log end offset): its mapping
    /// and how much of it is published, for one-sided readers. No system call, lock or
    /// allocation.
    pub fn segment_span(&self, offset: u64) -> Result<SegmentSpan<'_>, ReadError> {
        let start = self.log_start_offset();
        let end = self.log_end_offset();
        if offset < start || offset > end {
            return Err(ReadError::OffsetOutOfRange { offset, start, end });
        }
        let (base_offset, bytes, mapped_bytes, index, active, file) =
            if offset >= self.active_index.base_offset() {
                let bytes = self.active.published_bytes();
                let capacity = self.active.capacity();
                let index = &self.active_index;
                (index.base_offset(), bytes, capacity, index, true, None)
            } else {
                let after = self.sealed.partition_point(|s| s.base_offset() <= offset);
                assert!(after > 0, "offset {offset} below the first segment");
                let segment = &self.sealed[after - 1];
                let (bytes, mapped, file) = match &segment.data {
                    SegmentData::Memory(reader) => (reader.bytes(), reader.capacity(), None),
                    SegmentData::File(map) => (map.bytes(), map.len(), Some(map.path())),
                };
                (
                    segment.base_offset(),
                    bytes,
                    mapped,
                    &segment.index,
                    false,
                    file,
                )
            };
        let position = if offset == end {
            bytes.len()
        } else {
            index.lookup(offset) as usize
        };
        Ok(SegmentSpan {
            base_offset,
            address: bytes.as_ptr() as usize,
            mapped_bytes,
            published_bytes: bytes.len(),
            position,
            active,
            file,
        })
    }

    /// Asks the flusher to make offsets up to `offset` durable now (an atomic store).
    pub fn request_durable(&self, offset: u64) {
        self.shared
            .durable_requested
            .fetch_max(offset + 1, Ordering::Release);
    }

    /// The first offset in the log.
    pub fn log_start_offset(&self) -> u64 {
        self.sealed
            .front()
            .map_or(self.active_index.base_offset(), SealedSegment::base_offset)
    }

    /// The offset the next appended record gets.
    pub fn log_end_offset(&self) -> u64 {
        self.active_index.end_offset()
    }

    /// Offsets below this are on disk (fdatasynced).
    pub fn durable_offset(&self) -> u64 {
        self.shared.durable_offset.load(Ordering::Acquire)
    }

    /// Bytes of all segments.
    pub fn size_bytes(&self) -> u64 {
        self.sealed_bytes + self.active.published() as u64
    }

    /// Segments, the active one included.
    pub fn segment_count(&self) -> usize {
        self.sealed.len() + 1
    }

    /// Why the partition refuses writes, once persisting failed.
    pub fn storage_error(&self) -> Option<&'static str> {
        self.shared.storage_error.get().copied()
    }

    /// Spare segments ready: the next that many rolls will not return `SegmentNotReady`.
    pub fn spares_ready(&self) -> usize {
        self.spares.len()
    }

    /// The partition's directory.
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// Retention in force: (by time in ms, by size in bytes); `None` keeps forever.
    pub fn retention(&self) -> (Option<u64>, Option<u64>) {
        (self.retention_ms, self.retention_bytes)
    }

    /// Changes retention (`None`: keep forever by that measure); applied on the next
    /// `maintain`. No syscall, no allocation.
    pub fn set_retention(&mut self, retention_ms: Option<u64>, retention_bytes: Option<u64>) {
        self.retention_ms = retention_ms;
        self.retention_bytes = retention_bytes;
    }

    /// Closes the log: the flusher persists what was published, then releases the files.
    /// The returned handle tells when that has happened (for deleting the directory).
    pub fn close(self) -> ClosedPartition {
        let closed = ClosedPartition {
            shared: Arc::clone(&self.shared),
            dir: self.dir.clone(),
        };
        drop(self);
        closed
    }
}

/// A partition log that was closed; its files belong to the flusher until released.
pub struct ClosedPartition {
    shared: Arc<PartitionShared>,
    dir: std::path::PathBuf,
}

impl ClosedPartition {
    /// The partition's directory.
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// Deletes the partition's directory and memory files. Call after [`wait_released`].
    ///
    /// [`wait_released`]: ClosedPartition::wait_released
    pub fn delete_files(&self, cfg: &LogConfig) -> Result<(), LogError> {
        assert!(
            self.shared.released.load(Ordering::Acquire),
            "files still in use"
        );
        let name = self
            .dir
            .file_name()
            .expect("a partition directory")
            .to_string_lossy();
        remove_stale_memory_files(cfg, &format!("{name}+"))?;
        std::fs::remove_dir_all(&self.dir).map_err(io_error(&self.dir))?;
        Ok(())
    }

    /// Waits until the flusher has persisted and released the partition; false on timeout.
    /// Blocking: admin thread only.
    pub fn wait_released(&self, timeout: std::time::Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        while !self.shared.released.load(Ordering::Acquire) {
            if std::time::Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        true
    }
}

impl Drop for PartitionLog {
    fn drop(&mut self) {
        // The flusher persists what is published, then releases the files.
        self.shared.closed.store(true, Ordering::Release);
    }
}

fn remove_stale_memory_files(cfg: &LogConfig, prefix: &str) -> Result<(), LogError> {
    let entries = std::fs::read_dir(&cfg.memory_dir).map_err(io_error(&cfg.memory_dir))?;
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with(prefix) {
            let path = entry.path();
            std::fs::remove_file(&path).map_err(io_error(&path))?;
        }
    }
    Ok(())
}
