//! One partition's log, owned by exactly one lcore.

use std::collections::VecDeque;
use std::fs::OpenOptions;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use precursor_protocol::record_batch::{
    set_base_offset, set_partition_leader_epoch, validate_batch, RecordBatchHeader,
};
use precursor_shm::{AppendWriter, ReadOnlyFileMap};

use super::config::validate_topic;
use super::epochs::EpochHistory;
use super::flusher::{
    FlushTarget, FlushedPartition, PartitionShared, Spare, StorageFault, ToFlusher, ToLcore,
    SPARE_SEGMENTS, TO_FLUSHER_CAPACITY,
};
use super::memory::{remove_memory_files, SegmentMemory};
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
    /// The topic's `max.message.bytes`: the largest batch a producer may append (at most
    /// `batch_bytes_max`). Replicated batches are held to `batch_bytes_max` alone: a
    /// leader may have taken a batch before the limit was lowered.
    message_bytes_max: u32,
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
    epochs: EpochHistory,
    /// A replicated batch arriving in fragments: (its total bytes, bytes received), held
    /// in the active segment's unpublished bytes until whole.
    fragment: Option<(u32, u32)>,
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
        let opened = Self::open_claimed(cfg, topic, partition, flusher, dir, name, &shared);
        if opened.is_err() {
            FlusherHandle::release_unregistered(&shared);
        }
        opened
    }

    /// [`PartitionLog::open`] once the flusher gave it `dir`: recovery, salvage, the
    /// active segment and its first spare, then registration with the flusher.
    fn open_claimed(
        cfg: &LogConfig,
        topic: &str,
        partition: u16,
        flusher: &FlusherHandle,
        dir: PathBuf,
        name: String,
        shared: &Arc<PartitionShared>,
    ) -> Result<PartitionLog, LogError> {
        let shared = Arc::clone(shared);
        let memory_prefix = memory_file_prefix(topic, partition);

        let mut producers = ProducerTable::new(cfg.producers_per_partition_max);
        let mut epochs = EpochHistory::default();
        let mut segments = recover(&dir, cfg, &mut producers, &mut epochs)?;
        // A data plane killed (-9, a crash) leaves its segments' memory behind: what it
        // appended but the flusher had not written yet is still there. Salvaged, a process
        // crash loses nothing appended (a machine crash still loses what was not synced).
        let tail_end = segments.last().map_or(0, |s| s.index.end_offset());
        if salvage_memory_segments(cfg, &dir, &memory_prefix, tail_end)? > 0 {
            producers = ProducerTable::new(cfg.producers_per_partition_max);
            epochs = EpochHistory::default();
            segments = recover(&dir, cfg, &mut producers, &mut epochs)?;
        }
        remove_stale_memory_files(cfg, &memory_prefix)?;
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

        let mut memory =
            SegmentMemory::new(cfg, &name, memory_prefix, flusher.small_page_counter());
        let (mut active, reader) = memory.create(false)?;
        let tail_map = ReadOnlyFileMap::open(&log_path, tail_bytes)?;
        active
            .append(tail_map.bytes())
            .expect("the tail fits its segment");
        drop(tail_map);
        let flushed = FlushedPartition::new(
            Arc::clone(&shared),
            cfg,
            dir.clone(),
            memory,
            FlushTarget::synced(reader, file, log_path, tail_bytes, index.clone()),
            flusher.storage_fault_counter(),
        );
        // No spare yet: the flusher makes them lazily (when this segment is half full, or
        // when a roll asks), so that an idle partition holds one segment of memory.
        let spares = VecDeque::with_capacity(SPARE_SEGMENTS);
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
            message_bytes_max: cfg.batch_bytes_max,
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
            epochs,
            fragment: None,
        })
    }

    /// Appends one record batch (Kafka v2, as produced): validates it, applies the
    /// idempotent producer checks, assigns offsets and copies it once into the active
    /// segment. No system call, lock or allocation.
    pub fn append(&mut self, batch: &[u8], now_ms: i64) -> Result<Appended, AppendError> {
        self.append_stamped(batch, now_ms, None)
    }

    /// As [`PartitionLog::append`], on the leader of a replicated partition: the stored
    /// batch's `partitionLeaderEpoch` is set to `leader_epoch` (outside the CRC, as Kafka
    /// does), so every replica knows which leader wrote it.
    pub fn append_as_leader(
        &mut self,
        batch: &[u8],
        now_ms: i64,
        leader_epoch: u32,
    ) -> Result<Appended, AppendError> {
        self.append_stamped(batch, now_ms, Some(leader_epoch))
    }

    fn append_stamped(
        &mut self,
        batch: &[u8],
        now_ms: i64,
        leader_epoch: Option<u32>,
    ) -> Result<Appended, AppendError> {
        if batch.len() > self.message_bytes_max as usize {
            return Err(AppendError::TooLarge {
                bytes: batch.len(),
                max: self.message_bytes_max,
            });
        }
        let header = self.admit(batch)?;
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
        let position = self.active.published();
        let stored = &mut self.active.unpublished_mut()[..batch.len()];
        stored.copy_from_slice(batch);
        set_base_offset(stored, base_offset as i64);
        if let Some(epoch) = leader_epoch {
            set_partition_leader_epoch(stored, epoch as i32);
        }
        Ok(self.publish(&header, position, batch.len(), base_offset, now_ms))
    }

    /// Appends a batch a follower fetched from its leader, byte for byte (its offsets and
    /// leader epoch as the leader stored them). It must start at this log's end. The
    /// producer state is updated as on the leader, so a follower that becomes leader
    /// keeps recognising retransmits. No system call, lock or allocation.
    pub fn append_replica(&mut self, batch: &[u8], now_ms: i64) -> Result<Appended, AppendError> {
        let header = self.admit(batch)?;
        // A whole batch replaces any fragment held (its bytes are overwritten).
        self.fragment = None;
        let expected = self.log_end_offset();
        if header.base_offset < 0 || header.base_offset as u64 != expected {
            return Err(AppendError::NotContiguous {
                expected,
                found: header.base_offset.max(0) as u64,
            });
        }
        if self.active.free_bytes() < batch.len() && !self.roll() {
            return Err(AppendError::SegmentNotReady);
        }
        let position = self.active.published();
        self.active.unpublished_mut()[..batch.len()].copy_from_slice(batch);
        Ok(self.publish(&header, position, batch.len(), expected, now_ms))
    }

    /// Takes bytes `at..at + bytes.len()` of a replicated batch of `total` bytes that is
    /// larger than a frame (the leader sends it in order, one fragment per fetch). The
    /// bytes go straight into the active segment's unpublished space; once the batch is
    /// whole it is checked (CRC, offsets) and published as [`PartitionLog::append_replica`]
    /// would. `Ok(None)` while incomplete. A fragment that does not continue the batch
    /// held restarts it or is refused (`NotContiguous`).
    pub fn append_replica_fragment(
        &mut self,
        at: u32,
        total: u32,
        bytes: &[u8],
        now_ms: i64,
    ) -> Result<Option<Appended>, AppendError> {
        if let Some(reason) = self.storage_error() {
            return Err(AppendError::Storage { reason });
        }
        if total > self.batch_bytes_max {
            return Err(AppendError::TooLarge {
                bytes: total as usize,
                max: self.batch_bytes_max,
            });
        }
        let expected_at = match self.fragment {
            Some((held_total, received)) if held_total == total => received,
            _ => 0,
        };
        if at != expected_at {
            self.fragment = None;
            return Err(AppendError::NotContiguous {
                expected: self.log_end_offset(),
                found: self.log_end_offset(),
            });
        }
        if at == 0 && self.active.free_bytes() < total as usize && !self.roll() {
            return Err(AppendError::SegmentNotReady);
        }
        let end = at as usize + bytes.len();
        assert!(
            end <= total as usize,
            "decode checked the fragment's bounds"
        );
        self.active.unpublished_mut()[at as usize..end].copy_from_slice(bytes);
        if end < total as usize {
            self.fragment = Some((total, end as u32));
            return Ok(None);
        }
        self.fragment = None;
        let whole = &self.active.unpublished_mut()[..total as usize];
        let header = validate_batch(whole)?;
        let expected = self.log_end_offset();
        if header.base_offset < 0 || header.base_offset as u64 != expected {
            return Err(AppendError::NotContiguous {
                expected,
                found: header.base_offset.max(0) as u64,
            });
        }
        let position = self.active.published();
        Ok(Some(self.publish(
            &header,
            position,
            total as usize,
            expected,
            now_ms,
        )))
    }

    /// Bytes of a fragmented batch held so far (0: none).
    pub fn fragment_received(&self) -> u32 {
        self.fragment.map_or(0, |(_, received)| received)
    }

    /// The whole stored batch whose base offset is `offset`, if there is one.
    pub fn batch_at(&self, offset: u64) -> Option<&[u8]> {
        if offset < self.log_start_offset() || offset >= self.log_end_offset() {
            return None;
        }
        let (bytes, index) = self.segment_of(offset);
        let mut position = index.lookup(offset) as usize;
        // Bounded: each step moves forward by a whole batch.
        while position < bytes.len() {
            let header = RecordBatchHeader::parse(&bytes[position..]).ok()?;
            let size = header.total_bytes();
            if header.base_offset as u64 == offset {
                return bytes.get(position..position + size);
            }
            if header.base_offset as u64 > offset {
                return None;
            }
            position += size;
        }
        None
    }

    /// The published bytes and index of the segment holding `offset` (within the log).
    fn segment_of(&self, offset: u64) -> (&[u8], &SparseIndex) {
        if offset >= self.active_index.base_offset() {
            (self.active.published_bytes(), &self.active_index)
        } else {
            let after = self.sealed.partition_point(|s| s.base_offset() <= offset);
            assert!(after > 0, "offset {offset} below the first segment");
            let segment = &self.sealed[after - 1];
            (segment.data.bytes(), &segment.index)
        }
    }

    /// The checks every append makes before touching the segment.
    fn admit(&self, batch: &[u8]) -> Result<RecordBatchHeader, AppendError> {
        if let Some(reason) = self.storage_error() {
            return Err(AppendError::Storage { reason });
        }
        if batch.len() > self.batch_bytes_max as usize {
            return Err(AppendError::TooLarge {
                bytes: batch.len(),
                max: self.batch_bytes_max,
            });
        }
        Ok(validate_batch(batch)?)
    }

    /// Publishes the batch just copied to `position` and records it everywhere.
    fn publish(
        &mut self,
        header: &RecordBatchHeader,
        position: usize,
        bytes: usize,
        base_offset: u64,
        now_ms: i64,
    ) -> Appended {
        let last_offset = base_offset + header.last_offset_delta as u64;
        self.active.publish(position + bytes);
        self.active_index.on_batch(
            position as u32,
            bytes as u32,
            base_offset,
            last_offset,
            header.max_timestamp,
        );
        self.producers.record(header, base_offset, last_offset);
        // The stored copy's epoch: the leader's stamp, or as the leader stored it.
        let stored = &self.active.published_bytes()[position..position + bytes];
        if let Ok(stored) = RecordBatchHeader::parse(stored) {
            self.epochs
                .on_batch(stored.partition_leader_epoch, base_offset);
        }
        self.active_first_append_ms.get_or_insert(now_ms);
        debug_assert_eq!(self.log_end_offset(), last_offset + 1);
        Appended {
            base_offset,
            last_offset,
            duplicate: false,
        }
    }

    /// The partition's leader-epoch history.
    pub fn epochs(&self) -> &EpochHistory {
        &self.epochs
    }

    /// Records that this broker leads from the log end at `epoch` (start-up, or a
    /// leadership change), before any batch of that epoch.
    pub fn assign_epoch(&mut self, epoch: u32) {
        let end = self.log_end_offset();
        self.epochs.assign(epoch, end);
    }

    /// Swaps in the oldest spare segment. False when none is ready (or queues are full).
    fn roll(&mut self) -> bool {
        if self.spares.is_empty() {
            self.poll_flusher();
        }
        if self.spares.is_empty() {
            // The flusher makes one at once (a segment rolled before it was half full).
            self.shared.spare_requested.store(true, Ordering::Release);
        }
        if self.spares.is_empty()
            || self.shared.to_flusher.len() + 1 >= TO_FLUSHER_CAPACITY
            || self.sealed.len() == self.sealed.capacity()
        {
            return false;
        }
        let Spare { writer, mut index } = self.spares.pop_front().expect("checked above");
        self.shared.spares_taken.fetch_add(1, Ordering::Release);
        // A fragment held in the old segment's unpublished bytes is gone: refetched whole.
        self.fragment = None;
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
        let end = self.log_end_offset();
        let limit = if durable_only {
            self.durable_offset().min(end)
        } else {
            end
        };
        self.read_below(offset, max_bytes, limit, out)
    }

    /// As [`PartitionLog::read`], serving only batches below `limit` (a high watermark).
    pub fn read_below(
        &self,
        offset: u64,
        max_bytes: usize,
        limit: u64,
        out: &mut [u8],
    ) -> Result<usize, ReadError> {
        let start = self.log_start_offset();
        let end = self.log_end_offset();
        if offset < start || offset > end {
            return Err(ReadError::OffsetOutOfRange { offset, start, end });
        }
        let limit = limit.min(end);
        if offset >= limit {
            return Ok(0);
        }
        let (bytes, index) = self.segment_of(offset);
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

    /// Why the partition refuses writes now: persisting failed (a full disk: until the
    /// flusher's retry succeeds; any other fault: until restarted).
    pub fn storage_error(&self) -> Option<&'static str> {
        self.storage_fault().map(StorageFault::reason)
    }

    /// The storage fault in force, if any (one atomic load).
    pub fn storage_fault(&self) -> Option<StorageFault> {
        StorageFault::from_u8(self.shared.storage_fault.load(Ordering::Acquire))
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

    /// The largest batch a producer may append (the topic's `max.message.bytes`).
    pub fn message_bytes_max(&self) -> u32 {
        self.message_bytes_max
    }

    /// Changes the largest batch a producer may append; `None`: `batch_bytes_max`, the
    /// most it may be. No syscall, no allocation.
    pub fn set_message_bytes_max(&mut self, bytes: Option<u32>) {
        self.message_bytes_max =
            bytes.map_or(self.batch_bytes_max, |b| b.min(self.batch_bytes_max));
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

/// Writes the batches a previous data plane's memory segments hold beyond `end` (the
/// recovered log's end) into the partition's segment files: checked batch by batch (CRC,
/// contiguous offsets), appended to the tail file when they continue its segment, or into
/// a new segment file when they start the next one. Returns the bytes written (then the
/// caller recovers again). Start-up only.
fn salvage_memory_segments(
    cfg: &LogConfig,
    dir: &std::path::Path,
    prefix: &str,
    mut end: u64,
) -> Result<u64, LogError> {
    use std::io::Write;
    let mut views = Vec::new();
    // Both directories: a segment that found no hugepages was made in the small-page one.
    let mut entries = Vec::new();
    for memory_dir in cfg.memory_dirs() {
        match std::fs::read_dir(&memory_dir) {
            Ok(listing) => entries.extend(listing.flatten()),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(io_error(&memory_dir)(error)),
        }
    }
    for entry in entries {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with(prefix) || !name.ends_with(".segment") {
            continue;
        }
        // Not an append region (a torn header): nothing to salvage from it.
        let Ok(view) = precursor_shm::AppendRegionView::open(&entry.path()) else {
            continue;
        };
        let first = precursor_protocol::record_batch::batches(view.bytes())
            .next()
            .and_then(Result::ok)
            .map(|(header, _)| header.base_offset);
        if let Some(first) = first.filter(|&b| b >= 0) {
            views.push((first as u64, view));
        }
    }
    views.sort_by_key(|(first, _)| *first);
    let mut written = 0u64;
    for (first, view) in &views {
        let mut batches = Vec::new();
        for item in precursor_protocol::record_batch::batches(view.bytes()) {
            let Ok((header, batch)) = item else { break };
            let base = header.base_offset as u64;
            if base < end {
                continue;
            }
            if base != end || validate_batch(batch).is_err() {
                break;
            }
            end = header.last_offset() as u64 + 1;
            batches.push(batch);
        }
        if batches.is_empty() {
            continue;
        }
        // The memory segment's own file: its base offset is its first batch's.
        let path = segment_path(dir, *first, "log");
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io_error(&path))?;
        for batch in &batches {
            file.write_all(batch).map_err(io_error(&path))?;
            written += batch.len() as u64;
        }
        file.sync_data().map_err(io_error(&path))?;
        log::warn!(
            "{}: salvaged {} batches ({} bytes) up to offset {end} from the memory of a data \
             plane that stopped before persisting them",
            dir.display(),
            batches.len(),
            batches.iter().map(|b| b.len()).sum::<usize>()
        );
    }
    if written > 0 {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_error(dir))?;
    }
    Ok(written)
}

/// Removes what partition `partition` of `topic` left behind without ever being committed
/// (a grow that failed, or crashed before the topic manifest recorded the new count): its
/// directory and its memory files. True when there was a directory. The partition must not
/// be open. Blocking: admin thread only.
pub fn remove_uncommitted_partition(
    cfg: &LogConfig,
    topic: &str,
    partition: u16,
) -> Result<bool, LogError> {
    validate_topic(topic)?;
    remove_stale_memory_files(cfg, &memory_file_prefix(topic, partition))?;
    let dir = cfg.data_dir.join(format!("{topic}-{partition}"));
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => {
            std::fs::File::open(&cfg.data_dir)
                .and_then(|d| d.sync_all())
                .map_err(io_error(&cfg.data_dir))?;
            Ok(true)
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(error) => Err(io_error(&dir)(error)),
    }
}

/// Removes the partition's memory files left by a previous instance (in every memory
/// directory: hugetlbfs and the small-page fallback).
fn remove_stale_memory_files(cfg: &LogConfig, prefix: &str) -> Result<(), LogError> {
    remove_memory_files(cfg, prefix)
}
