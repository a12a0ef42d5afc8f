//! The flusher: one thread (not an lcore) that persists every partition's active segment,
//! seals rolled segments, prepares spare segments and deletes retired ones. It talks to
//! the lcores only through atomics and bounded lock-free queues (see the diagram in
//! [`super`]); it may block (pwrite, fdatasync, rename), the lcores never do.

use precursor_shm::{histogram_bucket, HISTOGRAM_BUCKETS};
use std::collections::{HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
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
/// Wait between two attempts to persist a partition whose disk was full (ENOSPC, EDQUOT),
/// in milliseconds: writes resume at most this long after space returns.
pub const STORAGE_FULL_RETRY_MS: u64 = 100;

/// errno values the flusher tells apart.
const ENOSPC: i32 = 28;
const EDQUOT: i32 = 122;
const EIO: i32 = 5;

/// Why a partition cannot persist now: [`PartitionShared::storage_fault`] holds its value
/// (0: none). The permanent faults are larger than the retried ones, so a permanent fault
/// always replaces a retried one and nothing replaces a permanent one.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum StorageFault {
    /// ENOSPC writing the log: retried every [`STORAGE_FULL_RETRY_MS`]; writes resume by
    /// themselves when space returns.
    NoSpace = 1,
    /// EDQUOT writing the log: retried as [`StorageFault::NoSpace`].
    QuotaExceeded = 2,
    /// EIO, or any failed fdatasync: the partition is offline until restarted. A failed
    /// fdatasync is never retried: the kernel may have dropped the dirty pages and a
    /// second fdatasync would report success for data that is not on disk (fsyncgate).
    Io = 3,
    /// Any other error persisting the log: offline until restarted.
    Other = 4,
}

impl StorageFault {
    pub const ALL: [StorageFault; 4] = [
        StorageFault::NoSpace,
        StorageFault::QuotaExceeded,
        StorageFault::Io,
        StorageFault::Other,
    ];

    /// The counter label value (`kind=...`).
    pub fn name(self) -> &'static str {
        match self {
            StorageFault::NoSpace => "no_space",
            StorageFault::QuotaExceeded => "quota",
            StorageFault::Io => "io",
            StorageFault::Other => "other",
        }
    }

    /// What producers are told.
    pub fn reason(self) -> &'static str {
        match self {
            StorageFault::NoSpace => {
                "disk full (ENOSPC) persisting the log; retried until space returns"
            }
            StorageFault::QuotaExceeded => {
                "disk quota exceeded (EDQUOT) persisting the log; retried until space returns"
            }
            StorageFault::Io => {
                "I/O error (EIO) persisting the log; partition offline until restart"
            }
            StorageFault::Other => "persisting the log failed; partition offline until restart",
        }
    }

    /// Whether the flusher retries (the partition comes back by itself).
    pub fn is_retried(self) -> bool {
        matches!(self, StorageFault::NoSpace | StorageFault::QuotaExceeded)
    }

    fn index(self) -> usize {
        self as usize - 1
    }

    pub(crate) fn from_u8(value: u8) -> Option<StorageFault> {
        match value {
            0 => None,
            1 => Some(StorageFault::NoSpace),
            2 => Some(StorageFault::QuotaExceeded),
            3 => Some(StorageFault::Io),
            4 => Some(StorageFault::Other),
            _ => unreachable!("storage fault value {value}"),
        }
    }

    /// The fault an error of `operation` means. `rewritten_whole`: the operation rewrites
    /// everything it needs from memory when retried (pwrite of the segment's unwritten
    /// bytes, index files written to a temporary name, creating a file): only those are
    /// retried on a full disk. fdatasync and directory fsync never are.
    fn of(error: &std::io::Error, rewritten_whole: bool) -> StorageFault {
        match error.raw_os_error() {
            Some(ENOSPC) if rewritten_whole => StorageFault::NoSpace,
            Some(EDQUOT) if rewritten_whole => StorageFault::QuotaExceeded,
            Some(EIO) => StorageFault::Io,
            _ if !rewritten_whole => StorageFault::Io,
            _ => StorageFault::Other,
        }
    }
}

/// Storage fault episodes of all partitions, by [`StorageFault`]: an episode starts when a
/// partition's persistence first fails (a full disk retried a thousand times is one), and
/// the episodes of a full disk that ended with writes resuming.
#[derive(Default)]
pub(crate) struct StorageFaultCounts {
    episodes: [AtomicU64; StorageFault::ALL.len()],
    recovered: AtomicU64,
}

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
    /// The [`StorageFault`] in force (0: none; Release by the flusher). A retried fault
    /// goes back to 0 when persisting succeeds again; a permanent one never does.
    pub storage_fault: AtomicU8,
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
    /// Storage fault episodes (all partitions; each [`FlushedPartition`] adds to it).
    storage_faults: Arc<StorageFaultCounts>,
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
            storage_faults: Arc::new(StorageFaultCounts::default()),
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

    /// Storage fault episodes so far (all partitions), by [`StorageFault`] in
    /// [`StorageFault::ALL`] order.
    pub fn storage_faults(&self) -> [u64; StorageFault::ALL.len()] {
        let counts = &self.shared.storage_faults;
        std::array::from_fn(|i| counts.episodes[i].load(Ordering::Relaxed))
    }

    /// Full-disk episodes that ended with the partition's writes resuming, so far.
    pub fn storage_full_recoveries(&self) -> u64 {
        self.shared.storage_faults.recovered.load(Ordering::Relaxed)
    }

    /// The counts [`FlusherHandle::storage_faults`] reads, for a [`FlushedPartition`].
    pub(crate) fn storage_fault_counter(&self) -> Arc<StorageFaultCounts> {
        Arc::clone(&self.shared.storage_faults)
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
                        storage_fault: AtomicU8::new(0),
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
    /// Bytes replayed into `index` (>= `written`: a batch is indexed once, when first seen,
    /// however many times a full disk makes its pwrite fail).
    pub indexed: usize,
    /// The offset after the written bytes: what an fdatasync makes durable.
    pub written_end_offset: u64,
    /// Replayed over the indexed bytes: its end offset is the offset after them.
    pub index: SparseIndex,
}

impl FlushTarget {
    /// A segment file whose first `written` bytes (whole batches, replayed into `index`)
    /// are on disk and synced.
    pub(crate) fn synced(
        reader: AppendReader,
        file: File,
        log_path: PathBuf,
        written: usize,
        index: SparseIndex,
    ) -> FlushTarget {
        FlushTarget {
            reader,
            file,
            log_path,
            written,
            synced: written,
            indexed: written,
            written_end_offset: index.end_offset(),
            index,
        }
    }
}

/// A roll the flusher could not finish yet (the disk was full while sealing): the memory
/// the lcore rolled onto, and the `Rolled` command's values.
struct PendingRoll {
    memory: AppendReader,
    sealed_bytes: usize,
    new_base_offset: u64,
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
    /// Storage fault episodes of all partitions (the flusher's counts).
    faults: Arc<StorageFaultCounts>,
    /// While the disk is full: since when (the episode's start), and the next attempt.
    full_since: Option<Instant>,
    full_retry_at: Instant,
    /// Set by [`FlushedPartition::fail`]: the current attempt failed.
    attempt_failed: bool,
    /// A roll interrupted by a full disk, finished before any later command.
    pending_roll: Option<PendingRoll>,
}

impl FlushedPartition {
    pub(crate) fn new(
        shared: Arc<PartitionShared>,
        cfg: &LogConfig,
        dir: PathBuf,
        memory: SegmentMemory,
        active: FlushTarget,
        faults: Arc<StorageFaultCounts>,
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
            faults,
            full_since: None,
            full_retry_at: Instant::now(),
            attempt_failed: false,
            pending_roll: None,
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

    /// The fault in force, if any.
    fn fault(&self) -> Option<StorageFault> {
        StorageFault::from_u8(self.shared.storage_fault.load(Ordering::Acquire))
    }

    /// Any fault in force: nothing is persisted until it clears (a full disk) or ever
    /// again (a permanent fault).
    fn failed(&self) -> bool {
        self.fault().is_some()
    }

    /// A fault that is never retried is in force.
    fn offline(&self) -> bool {
        self.fault().is_some_and(|fault| !fault.is_retried())
    }

    /// Records that `operation` failed with `error`. `rewritten_whole`: see
    /// [`StorageFault::of`]. A full disk starts (or continues) a retried episode; anything
    /// else takes the partition offline. Logged and counted once per episode.
    fn fail(&mut self, operation: &'static str, error: &std::io::Error, rewritten_whole: bool) {
        self.attempt_failed = true;
        let fault = StorageFault::of(error, rewritten_whole);
        let durable = self.shared.durable_offset.load(Ordering::Relaxed);
        if fault.is_retried() {
            self.full_retry_at = Instant::now() + Duration::from_millis(STORAGE_FULL_RETRY_MS);
            if self.full_since.is_some() {
                return;
            }
            // Only from healthy: a permanent fault is never replaced by a retried one.
            if self
                .shared
                .storage_fault
                .compare_exchange(0, fault as u8, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
            {
                return;
            }
            self.full_since = Some(Instant::now());
            self.faults.episodes[fault.index()].fetch_add(1, Ordering::Relaxed);
            log::error!(
                "partition {}: {operation} failed: {error}. The partition refuses writes and \
                 retries every {STORAGE_FULL_RETRY_MS} ms until space returns; offsets below \
                 {durable} are durable.",
                self.shared.name,
            );
            return;
        }
        let previous = self
            .shared
            .storage_fault
            .fetch_max(fault as u8, Ordering::AcqRel);
        if StorageFault::from_u8(previous).is_some_and(|p| !p.is_retried()) {
            return;
        }
        self.full_since = None;
        self.faults.episodes[fault.index()].fetch_add(1, Ordering::Relaxed);
        log::error!(
            "partition {}: {operation} failed: {error}. The partition is OFFLINE: it refuses \
             writes until the data plane is restarted (a failed write or fdatasync is never \
             retried); offsets below {durable} are durable, nothing later was acknowledged.",
            self.shared.name,
        );
    }

    /// Another attempt at persisting a partition whose disk was full (due): the
    /// interrupted roll, then the unwritten bytes. When both succeed the fault clears and
    /// the lcore takes writes again. False while the disk is still full.
    fn retry_after_full(&mut self, syncs: &SyncStats) -> bool {
        let since = self.full_since.expect("a full disk is being retried");
        self.attempt_failed = false;
        self.finish_roll(syncs);
        if !self.attempt_failed {
            self.persist();
        }
        if self.attempt_failed {
            return false;
        }
        assert!(self.pending_roll.is_none());
        assert_eq!(self.active.written, self.active.indexed);
        let fault = self.fault().expect("the retried fault is in force");
        assert!(fault.is_retried());
        if self
            .shared
            .storage_fault
            .compare_exchange(fault as u8, 0, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return false;
        }
        self.full_since = None;
        self.faults.recovered.fetch_add(1, Ordering::Relaxed);
        log::warn!(
            "partition {}: persisting again after {} ms with the disk full ({}); writes \
             resume",
            self.shared.name,
            since.elapsed().as_millis(),
            fault.name(),
        );
        true
    }

    /// One pass: commands, persistence, sync policy, spare. Returns the work done.
    fn poll(&mut self, shutting_down: bool, syncs: &SyncStats) -> usize {
        let closed = self.shared.closed.load(Ordering::Acquire);
        let force = shutting_down || closed;
        let mut work = 0;
        if self.full_since.is_some() && !self.offline() {
            if Instant::now() < self.full_retry_at && !force {
                self.send_outbox();
                return 0;
            }
            work += 1;
            if !self.retry_after_full(syncs) {
                self.send_outbox();
                return work;
            }
        }
        // Bounded: the queue holds at most TO_FLUSHER_CAPACITY commands. A roll that a
        // full disk interrupted stops the loop: later commands wait behind it, in order.
        while self.pending_roll.is_none() || self.offline() {
            let Some(command) = self.shared.to_flusher.pop() else {
                break;
            };
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
            if due && self.active.synced < self.active.written && !self.failed() {
                self.sync(syncs);
                work += 1;
            }
        }
        self.send_outbox();
        work
    }

    /// Indexes the active segment's newly published batches (once each) and pwrites the
    /// bytes not written yet.
    fn persist(&mut self) -> usize {
        let target = &mut self.active;
        let bytes = target.reader.bytes();
        let published = bytes.len();
        if published == target.written {
            return 0;
        }
        let mut position = target.indexed;
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
        target.indexed = published;
        if let Err(error) = target
            .file
            .write_all_at(&bytes[target.written..published], target.written as u64)
        {
            // `written` stays: a retry pwrites every byte after it again.
            self.fail("writing the segment file", &error, true);
            return 1;
        }
        target.written = published;
        target.written_end_offset = target.index.end_offset();
        1
    }

    fn sync(&mut self, syncs: &SyncStats) {
        assert!(!self.offline(), "an offline partition is never synced");
        assert_eq!(self.active.written, self.active.indexed);
        let durable_after = self.active.written_end_offset;
        let started = Instant::now();
        if let Err(error) = self.active.file.sync_data() {
            // Never retried (fsyncgate): whatever the errno, the partition goes offline.
            self.fail("fdatasync of the segment file", &error, false);
            return;
        }
        syncs.record(started.elapsed().as_nanos() as u64);
        self.active.synced = self.active.written;
        self.unsynced_records = 0;
        self.last_sync = Instant::now();
        let durable_before = self
            .shared
            .durable_offset
            .fetch_max(durable_after, Ordering::AcqRel);
        assert!(
            durable_before <= durable_after,
            "durable offset moved back: {durable_before} -> {durable_after}"
        );
    }

    /// The lcore rolled: seals the active segment and makes the oldest spare the active
    /// one (now, or on a retry when the disk is full).
    fn roll(&mut self, sealed_bytes: usize, new_base_offset: u64, syncs: &SyncStats) {
        assert!(self.pending_roll.is_none() || self.offline());
        if self.offline() {
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
        self.pending_roll = Some(PendingRoll {
            memory,
            sealed_bytes,
            new_base_offset,
        });
        self.attempt_failed = false;
        self.finish_roll(syncs);
    }

    /// Finishes the pending roll, if any. On a failure the roll stays pending (retried
    /// after a full disk; its memory goes when an offline partition is released).
    fn finish_roll(&mut self, syncs: &SyncStats) {
        let Some(roll) = self.pending_roll.take() else {
            return;
        };
        if !self.seal_active(roll.sealed_bytes, roll.new_base_offset, syncs) {
            self.pending_roll = Some(roll);
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
                self.fail("creating the next segment file", &error, true);
                self.pending_roll = Some(roll);
                return;
            }
        };
        let log_path = segment_path(&self.dir, roll.new_base_offset, "log");
        if let Err(error) = std::fs::rename(self.dir.join(SPARE_LOG_NAME), &log_path) {
            self.fail("renaming the next segment file", &error, true);
            self.spare_file = Some(file);
            self.pending_roll = Some(roll);
            return;
        }
        if let Err(error) = File::open(&self.dir).and_then(|dir| dir.sync_all()) {
            self.fail("fsync of the partition directory", &error, false);
            self.pending_roll = Some(roll);
            return;
        }
        let next = FlushTarget::synced(
            roll.memory,
            file,
            log_path,
            0,
            SparseIndex::new(
                roll.new_base_offset,
                self.index_interval_bytes,
                self.segment_bytes,
            ),
        );
        let old = std::mem::replace(&mut self.active, next);
        self.sealed_memory.push(old.reader);
    }

    /// Persists and syncs the whole active segment, writes its index files and sends the
    /// lcore a read-only map of it. False when the partition failed (retried: the segment
    /// is written from where it stopped, its index files rewritten whole).
    fn seal_active(
        &mut self,
        sealed_bytes: usize,
        new_base_offset: u64,
        syncs: &SyncStats,
    ) -> bool {
        assert_eq!(self.active.reader.published(), sealed_bytes);
        self.attempt_failed = false;
        self.persist();
        if self.attempt_failed {
            return false;
        }
        if self.active.synced < self.active.written {
            self.sync(syncs);
        }
        if self.attempt_failed {
            return false;
        }
        assert_eq!(self.active.index.end_offset(), new_base_offset);
        assert_eq!(self.active.written_end_offset, new_base_offset);
        // Idempotent: a retried seal appends no second time entry.
        self.active.index.seal();
        if let Err(error) = self.active.index.write_files(&self.active.log_path) {
            self.fail("writing the segment index files", &error, true);
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
        if let Some(roll) = self.pending_roll.take() {
            remove_file_logged(roll.memory.path());
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
