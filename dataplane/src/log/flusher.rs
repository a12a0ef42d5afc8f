//! The flusher: one thread (not an lcore) that persists every partition's active segment,
//! seals rolled segments, prepares spare segments and deletes retired ones. It talks to
//! the lcores only through atomics and bounded lock-free queues (see the diagram in
//! [`super`]); it may block (pwrite, fdatasync, rename), the lcores never do.

use precursor_shm::{histogram_bucket, HISTOGRAM_BUCKETS};
use std::collections::{HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_queue::ArrayQueue;
use precursor_shm::{AppendReader, AppendWriter, ReadOnlyFileMap};

use super::memory::SegmentMemory;
use super::segment::{header_at, segment_path, SealedSegment, SPARE_LOG_NAME};
use super::{io_error, LogConfig, LogError, SparseIndex};

/// Messages an lcore may have in flight to the flusher, per partition.
pub(crate) const TO_FLUSHER_CAPACITY: usize = 64;
/// Messages the flusher may have in flight to an lcore, per partition.
pub(crate) const TO_LCORE_CAPACITY: usize = 16;
/// Partitions being registered at once.
const REGISTRATIONS_MAX: usize = 1024;
/// Sleep of the flusher after a pass that found nothing to do.
const IDLE_SLEEP_US: u64 = 100;
/// Wait before retrying to prepare a spare segment that could not be created.
const SPARE_RETRY_MS: u64 = 1000;
/// Most spare segments kept prepared ahead of a partition's rolls. Spares are made lazily
/// (see [`FlushedPartition::spares_target`]): none for a partition whose active segment is
/// less than half full and that never rolled (an idle partition costs one segment of
/// memory), one once it has rolled (or asked for one), two from the moment its active
/// segment is half full. A fast producer thus finds two ready at a roll, as before: the
/// lcore rolls without waiting even when the flusher is held up (a slow fdatasync of
/// another segment) for the rest of the segment's fill time and the next one's. Each costs
/// `segment_bytes` of (huge page) memory.
pub(crate) const SPARE_SEGMENTS: usize = 2;
/// Rolled segments waiting to be sealed (in memory, not all on disk yet) beyond which no
/// spare is replaced, in bytes of segments: when the disk falls this far behind, the
/// lcore's rolls wait for it (the produce is answered Busy) instead of memory filling up
/// with unpersisted segments. Small segments may run further ahead (a pass of the flusher
/// blocked on other partitions' fdatasyncs can outlast several of them).
const UNSEALED_BYTES_MAX: u64 = 32 << 20;
/// ... but at least this many segments, and at most this many.
const UNSEALED_SEGMENTS_MIN: u64 = 2;
const UNSEALED_SEGMENTS_MAX: u64 = 16;
/// A partition's poll that took this long may have blocked (fdatasync, sealing): the other
/// partitions' lcores may have rolled meanwhile, so their spares are replaced before the
/// next partition's poll, in microseconds.
const BLOCKED_POLL_US: u64 = 200;
/// How long `open` waits for the flusher to release a closed instance of the partition.
const RELEASE_WAIT_MS: u64 = 30_000;

/// lcore -> flusher.
pub(crate) enum ToFlusher {
    /// The active segment is sealed at `sealed_bytes`; the spare became the active segment
    /// at `new_base_offset`.
    Rolled {
        sealed_bytes: usize,
        new_base_offset: u64,
    },
    /// The lcore no longer reads this sealed segment's memory: unmap and unlink it.
    Release(AppendReader),
    /// Retention removed this segment: unmap it and delete its files.
    Retire(SealedSegment),
}

/// A prepared next segment, as the lcore takes it.
pub(crate) struct Spare {
    pub writer: AppendWriter,
    pub index: SparseIndex,
}

/// flusher -> lcore.
pub(crate) enum ToLcore {
    Spare(Spare),
    /// The segment at `base_offset` is persisted: read it from this map from now on.
    Sealed {
        base_offset: u64,
        map: ReadOnlyFileMap,
    },
}

/// State one partition shares between its lcore and the flusher.
pub(crate) struct PartitionShared {
    pub name: String,
    /// Offsets below this are fdatasynced (Release by the flusher).
    pub durable_offset: AtomicU64,
    /// 1 + the highest offset the lcore wants durable now; 0: none.
    pub durable_requested: AtomicU64,
    pub storage_error: OnceLock<&'static str>,
    /// Spare segments the lcore has rolled onto (Release by the lcore): the flusher replaces
    /// them without waiting to see the `Rolled` commands behind other work.
    pub spares_taken: AtomicU64,
    /// The lcore wanted to roll and had no spare (a roll by time of a segment less than
    /// half full): the flusher makes one even though the active segment is not half full.
    pub spare_requested: AtomicBool,
    /// The PartitionLog was dropped: final flush, then release.
    pub closed: AtomicBool,
    /// The flusher is done with this partition (files may be reopened).
    pub released: AtomicBool,
    pub to_flusher: ArrayQueue<ToFlusher>,
    pub to_lcore: ArrayQueue<ToLcore>,
}

struct FlusherShared {
    registrations: ArrayQueue<Box<FlushedPartition>>,
    shutdown: AtomicBool,
    stopped: AtomicBool,
    syncs: SyncStats,
    /// Segments whose memory went to the small-page directory for lack of hugepages (all
    /// partitions; each partition's [`SegmentMemory`] adds to it).
    small_page_segments: Arc<AtomicU64>,
    /// Partition directory -> its current instance. Locked only by `open` (admin thread)
    /// and never by an lcore.
    live: Mutex<HashMap<PathBuf, Arc<PartitionShared>>>,
}

/// Count and latency of the flusher's fdatasyncs. The flusher is their only writer; the
/// lcore copies them into the counters page (whose slots have one writer each).
#[derive(Default)]
pub(crate) struct SyncStats {
    count: AtomicU64,
    sum_ns: AtomicU64,
    buckets: [AtomicU64; HISTOGRAM_BUCKETS],
}

impl SyncStats {
    fn record(&self, nanos: u64) {
        self.buckets[histogram_bucket(nanos)].fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(nanos, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }
}

/// The flusher thread.
pub struct Flusher;

impl Flusher {
    /// Starts the flusher thread. The configuration is read per partition at `open`.
    pub fn spawn(cfg: &LogConfig) -> Result<(FlusherHandle, JoinHandle<()>), LogError> {
        let _ = cfg;
        let shared = Arc::new(FlusherShared {
            registrations: ArrayQueue::new(REGISTRATIONS_MAX),
            shutdown: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
            syncs: SyncStats::default(),
            small_page_segments: Arc::new(AtomicU64::new(0)),
            live: Mutex::new(HashMap::new()),
        });
        let thread_shared = Arc::clone(&shared);
        let join = std::thread::Builder::new()
            .name("precursor-flusher".into())
            .spawn(move || run(&thread_shared))
            .map_err(LogError::FlusherThread)?;
        Ok((FlusherHandle { shared }, join))
    }
}

/// Handle on the flusher: cheap to clone, `Send`.
#[derive(Clone)]
pub struct FlusherHandle {
    shared: Arc<FlusherShared>,
}

impl std::fmt::Debug for FlusherHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlusherHandle")
            .field("syncs", &self.syncs())
            .finish()
    }
}

impl FlusherHandle {
    /// Asks the flusher to persist and sync every partition one last time and exit (join
    /// its thread to wait). Appends after this are never persisted.
    pub fn shutdown(&self) {
        self.shared.shutdown.store(true, Ordering::Release);
    }

    /// fdatasyncs of segment data done so far (all partitions).
    pub fn syncs(&self) -> u64 {
        self.shared.syncs.count.load(Ordering::Relaxed)
    }

    /// Segments created in the small-page directory because hugetlbfs had no pages left
    /// for them, so far (all partitions).
    pub fn segments_on_small_pages(&self) -> u64 {
        self.shared.small_page_segments.load(Ordering::Relaxed)
    }

    /// The counter [`FlusherHandle::segments_on_small_pages`] reads, for a partition's
    /// [`SegmentMemory`].
    pub(crate) fn small_page_counter(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.shared.small_page_segments)
    }

    /// fdatasync latencies so far: counts per power-of-two bucket (the counters page's
    /// histogram bounds), the sum in nanoseconds, and the count.
    pub fn sync_latency(&self) -> ([u64; HISTOGRAM_BUCKETS], u64, u64) {
        let stats = &self.shared.syncs;
        let buckets = std::array::from_fn(|i| stats.buckets[i].load(Ordering::Relaxed));
        (
            buckets,
            stats.sum_ns.load(Ordering::Relaxed),
            stats.count.load(Ordering::Relaxed),
        )
    }

    /// Gives back a claim whose open failed before [`FlusherHandle::register`] took the
    /// partition: nothing else holds it, so the next open of `dir` may claim it at once
    /// (else a failed open, e.g. no memory for a segment, would refuse every later one
    /// with AlreadyOpen).
    pub(crate) fn release_unregistered(shared: &PartitionShared) {
        shared.closed.store(true, Ordering::Release);
        shared.released.store(true, Ordering::Release);
    }

    /// Claims the partition directory `dir` for a new instance: waits until the flusher
    /// released a closed previous one; refuses while one is open.
    pub(crate) fn claim(&self, dir: &Path, name: &str) -> Result<Arc<PartitionShared>, LogError> {
        let deadline = Instant::now() + Duration::from_millis(RELEASE_WAIT_MS);
        loop {
            if self.shared.shutdown.load(Ordering::Acquire) {
                return Err(LogError::FlusherStopped);
            }
            let mut live = self.shared.live.lock().unwrap_or_else(|e| e.into_inner());
            let busy = live.get(dir).map(|previous| {
                (
                    previous.closed.load(Ordering::Acquire),
                    previous.released.load(Ordering::Acquire),
                )
            });
            match busy {
                Some((false, _)) => {
                    return Err(LogError::AlreadyOpen {
                        name: name.to_string(),
                    })
                }
                Some((true, false)) if Instant::now() < deadline => {}
                Some((true, false)) => {
                    return Err(LogError::AlreadyOpen {
                        name: name.to_string(),
                    })
                }
                Some((true, true)) | None => {
                    let shared = Arc::new(PartitionShared {
                        name: name.to_string(),
                        durable_offset: AtomicU64::new(0),
                        durable_requested: AtomicU64::new(0),
                        storage_error: OnceLock::new(),
                        spares_taken: AtomicU64::new(0),
                        spare_requested: AtomicBool::new(false),
                        closed: AtomicBool::new(false),
                        released: AtomicBool::new(false),
                        to_flusher: ArrayQueue::new(TO_FLUSHER_CAPACITY),
                        to_lcore: ArrayQueue::new(TO_LCORE_CAPACITY),
                    });
                    live.insert(dir.to_path_buf(), Arc::clone(&shared));
                    return Ok(shared);
                }
            }
            drop(live);
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    pub(crate) fn register(&self, partition: Box<FlushedPartition>) -> Result<(), LogError> {
        if self.shared.shutdown.load(Ordering::Acquire) {
            return Err(LogError::FlusherStopped);
        }
        self.shared
            .registrations
            .push(partition)
            .map_err(|_| LogError::Config {
                reason: format!("more than {REGISTRATIONS_MAX} partitions opened at once"),
            })
    }
}

fn run(shared: &FlusherShared) {
    let mut partitions: Vec<Box<FlushedPartition>> = Vec::new();
    loop {
        let shutting_down = shared.shutdown.load(Ordering::Acquire);
        while let Some(partition) = shared.registrations.pop() {
            partitions.push(partition);
        }
        let mut work = 0;
        // Bounded: partitions x (1 + partitions) polls and top-ups.
        for polled in 0..partitions.len() {
            let started = Instant::now();
            work += partitions[polled].poll(shutting_down, &shared.syncs);
            if started.elapsed() >= Duration::from_micros(BLOCKED_POLL_US) {
                for partition in partitions.iter_mut() {
                    work += partition.top_up_spares(None);
                }
            }
        }
        partitions.retain_mut(|partition| !partition.release_if_closed());
        if shutting_down {
            shared.stopped.store(true, Ordering::Release);
            log::info!(
                "flusher: final flush of {} partitions done",
                partitions.len()
            );
            return;
        }
        if work == 0 {
            std::thread::sleep(Duration::from_micros(IDLE_SLEEP_US));
        }
    }
}

/// The segment the flusher is persisting for a partition.
pub(crate) struct FlushTarget {
    pub reader: AppendReader,
    pub file: File,
    pub log_path: PathBuf,
    /// Bytes pwritten to the file.
    pub written: usize,
    /// Bytes fdatasynced.
    pub synced: usize,
    /// Replayed over the written bytes: its end offset is the offset after them.
    pub index: SparseIndex,
}

/// The flusher's state of one partition.
pub(crate) struct FlushedPartition {
    shared: Arc<PartitionShared>,
    dir: PathBuf,
    /// Makes the segments' memory files (hugetlbfs, else small pages).
    memory: SegmentMemory,
    segment_bytes: u64,
    index_interval_bytes: u32,
    flush_interval: Duration,
    flush_messages: u64,
    active: FlushTarget,
    /// Memory of the spares made whose `Rolled` is not handled yet, oldest first (the lcore
    /// rolls onto them in this order): those the lcore holds or is being sent (at most
    /// [`SPARE_SEGMENTS`]), after those it rolled onto already (at most
    /// `unsealed_segments_max`).
    spares: VecDeque<AppendReader>,
    /// `spare.log`: the file of the next segment, created ahead of the roll that needs it.
    spare_file: Option<File>,
    /// Spares are prefaulted when their memory is huge pages: a fault there zeroes 2 MiB
    /// on the lcore, and the pages are reserved at mmap anyway. Small pages fault lazily
    /// (a few µs per 4 KiB, and an idle partition's spares cost no memory).
    prefault_spares: bool,
    spare_retry_at: Instant,
    /// Spares made for this partition.
    spares_made: u64,
    /// Rolls the lcore may be ahead of the sealing before spares stop (see
    /// [`UNSEALED_BYTES_MAX`]).
    unsealed_segments_max: u64,
    /// `Rolled` commands handled (segments sealed, or given up on by a failed partition).
    rolls_handled: u64,
    /// Sealed segments' memory, until the lcore sends its reader back.
    sealed_memory: Vec<AppendReader>,
    outbox: VecDeque<ToLcore>,
    unsynced_records: u64,
    last_sync: Instant,
}

impl FlushedPartition {
    pub(crate) fn new(
        shared: Arc<PartitionShared>,
        cfg: &LogConfig,
        dir: PathBuf,
        memory: SegmentMemory,
        active: FlushTarget,
    ) -> FlushedPartition {
        FlushedPartition {
            shared,
            dir,
            prefault_spares: memory.huge(),
            memory,
            segment_bytes: cfg.segment_bytes,
            index_interval_bytes: cfg.index_interval_bytes,
            flush_interval: Duration::from_millis(cfg.flush_interval_ms),
            flush_messages: cfg.flush_messages,
            active,
            spares: VecDeque::with_capacity(SPARE_SEGMENTS),
            spare_file: None,
            spare_retry_at: Instant::now(),
            spares_made: 0,
            unsealed_segments_max: (UNSEALED_BYTES_MAX / cfg.segment_bytes.max(1))
                .clamp(UNSEALED_SEGMENTS_MIN, UNSEALED_SEGMENTS_MAX),
            rolls_handled: 0,
            sealed_memory: Vec::new(),
            outbox: VecDeque::new(),
            unsynced_records: 0,
            last_sync: Instant::now(),
        }
    }

    /// Creates a spare segment's memory (prefaulted on huge pages; in the small-page
    /// directory when hugetlbfs has no pages left) for the lcore to roll onto; the flusher
    /// keeps its reader, in roll order. Memory only: no disk operation, so a slow disk
    /// never delays a spare.
    pub(crate) fn prepare_spare(&mut self) -> Result<Spare, LogError> {
        let (writer, reader) = self.memory.create(self.prefault_spares)?;
        self.spares.push_back(reader);
        self.spares_made += 1;
        self.shared.spare_requested.store(false, Ordering::Release);
        Ok(Spare {
            writer,
            index: SparseIndex::new(0, self.index_interval_bytes, self.segment_bytes),
        })
    }

    /// Creates `spare.log`, the next segment's file under a temporary name.
    fn create_spare_file(&self) -> std::io::Result<File> {
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(self.dir.join(SPARE_LOG_NAME))
    }

    /// Spares made and not rolled onto yet: held by the lcore or on their way to it.
    fn spares_outstanding(&self) -> u64 {
        let taken = self.shared.spares_taken.load(Ordering::Acquire);
        debug_assert!(taken <= self.spares_made);
        self.spares_made - taken
    }

    /// Bytes published in the segment the lcore appends to now: the active one, or the
    /// latest spare it rolled onto (`rolled_onto` while [`FlushedPartition::roll`] holds
    /// it, taken out of `spares`).
    fn lcore_active_published(&self, rolled_onto: Option<&AppendReader>) -> usize {
        let taken = self.shared.spares_taken.load(Ordering::Acquire);
        match taken.saturating_sub(self.rolls_handled) as usize {
            0 => rolled_onto.unwrap_or(&self.active.reader).published(),
            ahead => self
                .spares
                .get(ahead - 1)
                .map_or(0, AppendReader::published),
        }
    }

    /// How many spares should be out (lazily, see [`SPARE_SEGMENTS`]): two once the
    /// lcore's segment is half full; one when a roll took the last spare or the lcore asked
    /// for one; else none (an idle partition holds its active segment only).
    fn spares_target(&self, rolled_onto: Option<&AppendReader>) -> u64 {
        if self.lcore_active_published(rolled_onto) as u64 * 2 >= self.segment_bytes {
            SPARE_SEGMENTS as u64
        } else if self.shared.spares_taken.load(Ordering::Acquire) > 0
            || self.shared.spare_requested.load(Ordering::Acquire)
        {
            1
        } else {
            0
        }
    }

    /// Whether a spare should be made now: fewer than [`FlushedPartition::spares_target`]
    /// are out, and fewer rolls than `unsealed_segments_max` wait to be sealed.
    fn spare_wanted(&self, rolled_onto: Option<&AppendReader>) -> bool {
        let taken = self.shared.spares_taken.load(Ordering::Acquire);
        self.spares_outstanding() < self.spares_target(rolled_onto)
            && taken.saturating_sub(self.rolls_handled) < self.unsealed_segments_max
    }

    /// Prepares spares until [`FlushedPartition::spares_target`] are out (and
    /// `spare.log`), and hands them to the lcore at once. Cheap when nothing is wanted (a
    /// few atomic loads). Bounded: at most `SPARE_SEGMENTS` + 1 creations. Returns the work
    /// done.
    fn top_up_spares(&mut self, rolled_onto: Option<&AppendReader>) -> usize {
        let file_wanted = self.spare_file.is_none();
        if !(self.spare_wanted(rolled_onto) || file_wanted)
            || self.shared.closed.load(Ordering::Acquire)
            || self.failed()
            || Instant::now() < self.spare_retry_at
        {
            return 0;
        }
        let mut work = 0;
        while self.spare_wanted(rolled_onto) {
            work += 1;
            match self.prepare_spare() {
                Ok(spare) => self.outbox.push_back(ToLcore::Spare(spare)),
                Err(error) => {
                    self.spare_failed(&error);
                    break;
                }
            }
        }
        if self.spare_file.is_none() && Instant::now() >= self.spare_retry_at {
            work += 1;
            match self.create_spare_file() {
                Ok(file) => self.spare_file = Some(file),
                Err(error) => self.spare_failed(&io_error(self.dir.join(SPARE_LOG_NAME))(error)),
            }
        }
        self.send_outbox();
        work
    }

    fn spare_failed(&mut self, error: &LogError) {
        log::warn!(
            "partition {}: cannot prepare the next segment: {error}",
            self.shared.name
        );
        self.spare_retry_at = Instant::now() + Duration::from_millis(SPARE_RETRY_MS);
    }

    /// Pushes queued messages to the lcore, as many as its queue takes.
    fn send_outbox(&mut self) {
        while let Some(message) = self.outbox.pop_front() {
            if let Err(message) = self.shared.to_lcore.push(message) {
                self.outbox.push_front(message);
                break;
            }
        }
    }

    fn failed(&self) -> bool {
        self.shared.storage_error.get().is_some()
    }

    fn fail(&mut self, operation: &'static str, error: &std::io::Error) {
        let reason = match error.raw_os_error() {
            Some(28) => "disk full (ENOSPC) persisting the log",
            Some(122) => "disk quota exceeded (EDQUOT) persisting the log",
            Some(5) => "I/O error (EIO) persisting the log",
            _ => operation,
        };
        if self.shared.storage_error.set(reason).is_ok() {
            log::error!(
                "partition {}: {operation} failed: {error}. The partition refuses writes \
                 until restarted; offsets below {} are durable.",
                self.shared.name,
                self.shared.durable_offset.load(Ordering::Relaxed),
            );
        }
    }

    /// One pass: commands, persistence, sync policy, spare. Returns the work done.
    fn poll(&mut self, shutting_down: bool, syncs: &SyncStats) -> usize {
        let closed = self.shared.closed.load(Ordering::Acquire);
        let force = shutting_down || closed;
        let mut work = 0;
        while let Some(command) = self.shared.to_flusher.pop() {
            work += 1;
            match command {
                ToFlusher::Rolled {
                    sealed_bytes,
                    new_base_offset,
                } => self.roll(sealed_bytes, new_base_offset, syncs),
                ToFlusher::Release(reader) => {
                    let path = reader.path().to_path_buf();
                    drop(reader);
                    self.sealed_memory.retain(|kept| kept.path() != path);
                    remove_file_logged(&path);
                }
                ToFlusher::Retire(segment) => {
                    let log_path = segment_path(&self.dir, segment.base_offset(), "log");
                    drop(segment);
                    for ext in ["log", "index", "timeindex"] {
                        remove_file_logged(&log_path.with_extension(ext));
                    }
                }
            }
        }
        if !self.failed() {
            // Spares first: a pass that must fdatasync below still hands them over first.
            work += self.top_up_spares(None);
            work += self.persist();
            let requested = self.shared.durable_requested.load(Ordering::Acquire);
            let durable = self.shared.durable_offset.load(Ordering::Relaxed);
            let due = force
                || requested > durable
                || self.unsynced_records >= self.flush_messages
                || self.last_sync.elapsed() >= self.flush_interval;
            if due && self.active.synced < self.active.written {
                self.sync(syncs);
                work += 1;
            }
        }
        self.send_outbox();
        work
    }

    /// pwrites the active segment's newly published bytes.
    fn persist(&mut self) -> usize {
        let target = &mut self.active;
        let bytes = target.reader.bytes();
        let published = bytes.len();
        if published == target.written {
            return 0;
        }
        let mut position = target.written;
        // Bounded: each step moves forward by one whole published batch.
        while position < published {
            let header = header_at(bytes, position);
            let size = header.total_bytes();
            target.index.on_batch(
                position as u32,
                size as u32,
                header.base_offset as u64,
                header.last_offset() as u64,
                header.max_timestamp,
            );
            self.unsynced_records += header.records_count as u64;
            position += size;
        }
        assert_eq!(
            position, published,
            "published length is not a batch boundary"
        );
        if let Err(error) = target
            .file
            .write_all_at(&bytes[target.written..published], target.written as u64)
        {
            self.fail("writing the segment file", &error);
            return 1;
        }
        target.written = published;
        1
    }

    fn sync(&mut self, syncs: &SyncStats) {
        let started = Instant::now();
        if let Err(error) = self.active.file.sync_data() {
            self.fail("fdatasync of the segment file", &error);
            return;
        }
        syncs.record(started.elapsed().as_nanos() as u64);
        self.active.synced = self.active.written;
        self.unsynced_records = 0;
        self.last_sync = Instant::now();
        self.shared
            .durable_offset
            .store(self.active.index.end_offset(), Ordering::Release);
    }

    /// Seals the active segment and makes the oldest spare the active one.
    fn roll(&mut self, sealed_bytes: usize, new_base_offset: u64, syncs: &SyncStats) {
        if self.failed() {
            return;
        }
        // The lcore appends into the oldest spare now. Replace it before the slow work of
        // sealing (fdatasync, index files, rename), so that the next roll finds one.
        let memory = self
            .spares
            .pop_front()
            .expect("the lcore rolled onto a spare");
        self.rolls_handled += 1;
        self.top_up_spares(Some(&memory));
        if !self.seal_active(sealed_bytes, new_base_offset, syncs) {
            // The partition failed: its memory files go when it is released.
            self.spares.push_front(memory);
            return;
        }
        // Made ahead by `top_up_spares`, unless that failed (then once more now).
        let file = match self
            .spare_file
            .take()
            .map_or_else(|| self.create_spare_file(), Ok)
        {
            Ok(file) => file,
            Err(error) => {
                self.fail("creating the next segment file", &error);
                self.spares.push_front(memory);
                return;
            }
        };
        let log_path = segment_path(&self.dir, new_base_offset, "log");
        let renamed = std::fs::rename(self.dir.join(SPARE_LOG_NAME), &log_path)
            .and_then(|()| File::open(&self.dir)?.sync_all());
        if let Err(error) = renamed {
            self.fail("renaming the next segment file", &error);
            self.spares.push_front(memory);
            return;
        }
        let old = std::mem::replace(
            &mut self.active,
            FlushTarget {
                reader: memory,
                file,
                log_path,
                written: 0,
                synced: 0,
                index: SparseIndex::new(
                    new_base_offset,
                    self.index_interval_bytes,
                    self.segment_bytes,
                ),
            },
        );
        self.sealed_memory.push(old.reader);
    }

    /// Persists and syncs the whole active segment, writes its index files and sends the
    /// lcore a read-only map of it. False when the partition failed.
    fn seal_active(
        &mut self,
        sealed_bytes: usize,
        new_base_offset: u64,
        syncs: &SyncStats,
    ) -> bool {
        assert_eq!(self.active.reader.published(), sealed_bytes);
        self.persist();
        if self.active.synced < self.active.written {
            self.sync(syncs);
        }
        if self.failed() {
            return false;
        }
        assert_eq!(self.active.index.end_offset(), new_base_offset);
        self.active.index.seal();
        if let Err(error) = self.active.index.write_files(&self.active.log_path) {
            self.fail("writing the segment index files", &error);
            return false;
        }
        match ReadOnlyFileMap::open(&self.active.log_path, self.active.written) {
            Ok(map) => self.outbox.push_back(ToLcore::Sealed {
                base_offset: self.active.index.base_offset(),
                map,
            }),
            Err(error) => {
                log::warn!(
                    "partition {}: cannot map sealed segment (reads stay in memory): {error}",
                    self.shared.name
                );
            }
        }
        true
    }

    /// After the final flush of a closed partition: drop its memory, mark it released.
    fn release_if_closed(&mut self) -> bool {
        if !self.shared.closed.load(Ordering::Acquire) {
            return false;
        }
        while let Some(message) = self.shared.to_lcore.pop() {
            drop(message);
        }
        self.outbox.clear();
        remove_file_logged(self.active.reader.path());
        for spare in self.spares.drain(..) {
            remove_file_logged(spare.path());
        }
        if self.spare_file.take().is_some() {
            remove_file_logged(&self.dir.join(SPARE_LOG_NAME));
        }
        for reader in self.sealed_memory.drain(..) {
            remove_file_logged(reader.path());
        }
        self.shared.released.store(true, Ordering::Release);
        true
    }
}

fn remove_file_logged(path: &Path) {
    if let Err(error) = std::fs::remove_file(path) {
        if error.kind() != std::io::ErrorKind::NotFound {
            log::warn!("cannot remove {}: {error}", path.display());
        }
    }
}
