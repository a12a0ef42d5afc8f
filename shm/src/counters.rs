//! The counters file `<dir>/counters` (DESIGN.md §3, Aeron's counters): labelled u64 slots
//! the data plane's lcores write and the control plane reads for `/metrics`, and
//! histograms made of consecutive slots.
//!
//! ```text
//!  offset            field
//!  0                 +----------------------------------------------------+
//!                    | magic u64 "PRECCTR\0" (LAST, Release)               |
//!  8                 | layout_version u32 | writer_pid u32                 |
//!  16                | writer_start_ns u64 (since UNIX epoch)              |
//!  24                | counters_max u32   | reserved u32                   |
//!  32                | metadata_offset u64                                 |
//!  40                | values_offset u64                                   |
//!  128               +----------------------------------------------------+ <- metadata_offset
//!                    | record 0 (192 bytes)                                |
//!                    |  0  state u32 (FREE 0 / ALLOCATED 1 / RECLAIMED 2)  |
//!                    |  4  kind u32 (precursor_protocol::counter_kind)     |
//!                    |  8  generation u64 (odd while the record is written)|
//!                    |  16 label_bytes u32 | 20 role u32 (plain / histogram first / part)
//!                    |  24 label: 120 bytes of UTF-8, e.g. `topic=orders,partition=3`
//!                    |  144 reserved                                       |
//!                    | record 1 ... record counters_max-1                  |
//!  values_offset     +----------------------------------------------------+
//!                    | value 0: u64, then padding to 64 bytes (own line)   |
//!                    | value 1 ... value counters_max-1                    |
//!                    +----------------------------------------------------+
//! ```
//!
//! A value is written by its owner only (one lcore) with Relaxed stores; readers load it
//! Relaxed. A record is written under its generation (a seqlock: odd while being written)
//! and then published by storing `state = ALLOCATED` with Release; a reader that sees the
//! generation change across its read skips the record until the next scrape.
//!
//! A histogram of kind K is [`HISTOGRAM_COUNTERS`] consecutive slots: one per bucket of
//! [`HISTOGRAM_BOUNDS_NS`] (counts per bucket, not cumulative), then the sum of recorded
//! nanoseconds, then the count. Bucket bounds are powers of two (as HdrHistogram's are).

use std::path::Path;
use std::sync::atomic::{fence, AtomicU64, Ordering};
use std::sync::Arc;

use crate::cnc::{create_atomically, file_replaced, now_ns, open_checked, pid_exists, CncError};
use crate::ring::CACHE_LINE_BYTES;
use crate::{SharedMapping, ShmError};

/// Layout version of the `counters` file.
pub const COUNTERS_LAYOUT_VERSION: u32 = 1;
/// Name of the file in the node's memory directory.
pub const COUNTERS_FILE_NAME: &str = "counters";
/// Name of the file being built before its rename over [`COUNTERS_FILE_NAME`].
pub const COUNTERS_TMP_FILE_NAME: &str = "counters.tmp";
/// `b"PRECCTR\0"` as a little-endian u64.
pub const COUNTERS_MAGIC: u64 = u64::from_le_bytes(*b"PRECCTR\0");
/// Longest label, in bytes of UTF-8.
pub const COUNTER_LABEL_BYTES_MAX: usize = 120;
/// Most counters a file may hold.
pub const COUNTERS_MAX_LIMIT: u32 = 1 << 20;
/// Bytes of the header.
pub const COUNTERS_HEADER_BYTES: usize = 2 * CACHE_LINE_BYTES;
/// Bytes of one metadata record.
pub const COUNTER_RECORD_BYTES: usize = 3 * CACHE_LINE_BYTES;
/// Bytes of one value slot: a cache line, so owners on different lcores never share one.
pub const COUNTER_VALUE_BYTES: usize = CACHE_LINE_BYTES;

/// Buckets of a histogram: upper bounds 2^10 ns (~1 µs) .. 2^36 ns (~68.7 s), then +Inf.
pub const HISTOGRAM_BUCKETS: usize = 28;
/// Smallest bucket bound is 2^this nanoseconds.
const HISTOGRAM_BOUND_SHIFT_MIN: u32 = 10;
/// Upper bound of each bucket in nanoseconds, inclusive (Prometheus `le`); the last is
/// `u64::MAX`, standing for +Inf.
pub const HISTOGRAM_BOUNDS_NS: [u64; HISTOGRAM_BUCKETS] = {
    let mut bounds = [u64::MAX; HISTOGRAM_BUCKETS];
    let mut bucket = 0;
    while bucket < HISTOGRAM_BUCKETS - 1 {
        bounds[bucket] = 1 << (HISTOGRAM_BOUND_SHIFT_MIN + bucket as u32);
        bucket += 1;
    }
    bounds
};
/// Slots of one histogram: its buckets, its sum and its count.
pub const HISTOGRAM_COUNTERS: usize = HISTOGRAM_BUCKETS + 2;

const _: () = assert!(HISTOGRAM_BOUNDS_NS[HISTOGRAM_BUCKETS - 2] == 1 << 36);
const _: () = assert!(COUNTER_RECORD_BYTES >= RECORD_LABEL_OFFSET + COUNTER_LABEL_BYTES_MAX);
const _: () = assert!(COUNTER_LABEL_BYTES_MAX & 7 == 0);

const VERSION_OFFSET: usize = 8;
const PID_OFFSET: usize = 12;
const START_NS_OFFSET: usize = 16;
const COUNTERS_MAX_OFFSET: usize = 24;
const METADATA_OFFSET_OFFSET: usize = 32;
const VALUES_OFFSET_OFFSET: usize = 40;
/// One past the highest slot ever allocated (u32; the writer stores it with Release after
/// publishing the record): readers scan no further, so a file sized for many partitions
/// costs a reader what is in use. 0 in files from before it existed: scan every slot.
const SLOTS_USED_OFFSET: usize = 48;

const RECORD_STATE_OFFSET: usize = 0;
const RECORD_KIND_OFFSET: usize = 4;
const RECORD_GENERATION_OFFSET: usize = 8;
const RECORD_LABEL_BYTES_OFFSET: usize = 16;
const RECORD_ROLE_OFFSET: usize = 20;
const RECORD_LABEL_OFFSET: usize = 24;

/// Record states.
pub const COUNTER_STATE_FREE: u32 = 0;
pub const COUNTER_STATE_ALLOCATED: u32 = 1;
pub const COUNTER_STATE_RECLAIMED: u32 = 2;

const ROLE_PLAIN: u32 = 0;
const ROLE_HISTOGRAM_FIRST: u32 = 1;
const ROLE_HISTOGRAM_PART: u32 = 2;

/// Index of a counter slot in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CounterId(pub u32);

/// First slot of a histogram's [`HISTOGRAM_COUNTERS`] consecutive slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HistogramId(pub CounterId);

/// Why a counter could not be allocated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AllocateError {
    #[error("counters file full: {needed} free consecutive slots needed of {counters_max}")]
    Full { needed: u32, counters_max: u32 },
    #[error("counter label of {label_bytes} bytes exceeds {COUNTER_LABEL_BYTES_MAX} bytes")]
    LabelTooLong { label_bytes: usize },
}

/// The error of [`CountersWriter::allocate`] (the file is full, or the label too long).
pub type CountersFull = AllocateError;

/// Bucket of `nanos`: the first whose bound is at least `nanos`.
#[inline]
pub fn histogram_bucket(nanos: u64) -> usize {
    if nanos <= 1 << HISTOGRAM_BOUND_SHIFT_MIN {
        return 0;
    }
    let bits = 64 - (nanos - 1).leading_zeros();
    ((bits - HISTOGRAM_BOUND_SHIFT_MIN) as usize).min(HISTOGRAM_BUCKETS - 1)
}

#[derive(Debug, Clone, Copy)]
struct CountersLayout {
    counters_max: u32,
    metadata_offset: usize,
    values_offset: usize,
    layout_bytes: usize,
}

impl CountersLayout {
    fn new(counters_max: u32) -> CountersLayout {
        let metadata_offset = COUNTERS_HEADER_BYTES;
        let values_offset = metadata_offset + counters_max as usize * COUNTER_RECORD_BYTES;
        CountersLayout {
            counters_max,
            metadata_offset,
            values_offset,
            layout_bytes: values_offset + counters_max as usize * COUNTER_VALUE_BYTES,
        }
    }

    fn record(&self, index: u32) -> usize {
        assert!(index < self.counters_max);
        self.metadata_offset + index as usize * COUNTER_RECORD_BYTES
    }

    #[inline]
    fn value(&self, id: CounterId) -> usize {
        assert!(id.0 < self.counters_max, "counter {} out of range", id.0);
        self.values_offset + id.0 as usize * COUNTER_VALUE_BYTES
    }
}

/// The data plane's side: allocates counters and writes their values.
///
/// `set` and `add` take `&self`: share the writer between lcores, but each counter must be
/// written by one thread only (its owner), since `add` is a load and a store.
#[derive(Debug)]
pub struct CountersWriter {
    mapping: Arc<SharedMapping>,
    layout: CountersLayout,
    /// Every slot below this is allocated: allocation scans from here, so allocating N
    /// counters one after another costs O(N), not O(N^2).
    first_maybe_free: u32,
    /// One past the highest slot ever allocated (published at [`SLOTS_USED_OFFSET`]).
    slots_used: u32,
}

impl CountersWriter {
    /// Creates a fresh `<dir>/counters` of `counters_max` slots (1..=[`COUNTERS_MAX_LIMIT`]),
    /// atomically replacing any previous file (built as `counters.tmp`, renamed).
    pub fn create(dir: &Path, counters_max: u32) -> Result<CountersWriter, ShmError> {
        if counters_max == 0 || counters_max > COUNTERS_MAX_LIMIT {
            return Err(ShmError::Layout {
                path: dir.join(COUNTERS_FILE_NAME),
                reason: "counters_max must be in 1..=COUNTERS_MAX_LIMIT",
            });
        }
        let layout = CountersLayout::new(counters_max);
        let mapping = create_atomically(
            dir,
            COUNTERS_TMP_FILE_NAME,
            COUNTERS_FILE_NAME,
            layout.layout_bytes,
            COUNTERS_MAGIC,
            |mapping| {
                let store_u32 =
                    |offset, value| mapping.atomic_u32(offset).store(value, Ordering::Relaxed);
                let store_u64 =
                    |offset, value| mapping.atomic_u64(offset).store(value, Ordering::Relaxed);
                store_u32(VERSION_OFFSET, COUNTERS_LAYOUT_VERSION);
                store_u32(PID_OFFSET, std::process::id());
                store_u64(START_NS_OFFSET, now_ns());
                store_u32(COUNTERS_MAX_OFFSET, counters_max);
                store_u64(METADATA_OFFSET_OFFSET, layout.metadata_offset as u64);
                store_u64(VALUES_OFFSET_OFFSET, layout.values_offset as u64);
            },
        )?;
        Ok(CountersWriter {
            mapping,
            layout,
            first_maybe_free: 0,
            slots_used: 0,
        })
    }

    /// Slots of the file.
    pub fn counters_max(&self) -> u32 {
        self.layout.counters_max
    }

    /// Allocates a counter of `kind` labelled `label` (at most [`COUNTER_LABEL_BYTES_MAX`]
    /// bytes; never truncated), value 0. Reuses freed slots.
    pub fn allocate(&mut self, kind: u32, label: &str) -> Result<CounterId, CountersFull> {
        let first = self.reserve(kind, label, 1)?;
        self.publish_record(first, kind, label, ROLE_PLAIN);
        Ok(CounterId(first))
    }

    /// Allocates a histogram of `kind` labelled `label`: [`HISTOGRAM_COUNTERS`] consecutive
    /// slots, all 0.
    pub fn allocate_histogram(
        &mut self,
        kind: u32,
        label: &str,
    ) -> Result<HistogramId, CountersFull> {
        let first = self.reserve(kind, label, HISTOGRAM_COUNTERS as u32)?;
        // Parts first, the first slot last: a reader that sees the first sees them all.
        for part in 1..HISTOGRAM_COUNTERS as u32 {
            self.publish_record(first + part, kind, "", ROLE_HISTOGRAM_PART);
        }
        self.publish_record(first, kind, label, ROLE_HISTOGRAM_FIRST);
        Ok(HistogramId(CounterId(first)))
    }

    /// Frees a counter: its record becomes RECLAIMED (readers stop showing it) and its slot
    /// may be allocated again.
    pub fn free(&mut self, id: CounterId) {
        assert_eq!(
            self.role(id.0),
            ROLE_PLAIN,
            "counter {} is part of a histogram",
            id.0
        );
        self.reclaim(id.0);
    }

    /// Frees all slots of a histogram.
    pub fn free_histogram(&mut self, id: HistogramId) {
        let first = id.0 .0;
        assert_eq!(
            self.role(first),
            ROLE_HISTOGRAM_FIRST,
            "{first} is no histogram"
        );
        self.reclaim(first);
        for part in 1..HISTOGRAM_COUNTERS as u32 {
            assert_eq!(self.role(first + part), ROLE_HISTOGRAM_PART);
            self.reclaim(first + part);
        }
    }

    /// Sets a counter's value (gauges). One Relaxed store.
    #[inline]
    pub fn set(&self, id: CounterId, value: u64) {
        self.cell(id).store(value, Ordering::Relaxed);
    }

    /// Adds `delta` to a counter (wrapping). A Relaxed load and store: only the counter's
    /// owner may call it.
    #[inline]
    pub fn add(&self, id: CounterId, delta: u64) {
        let cell = self.cell(id);
        cell.store(
            cell.load(Ordering::Relaxed).wrapping_add(delta),
            Ordering::Relaxed,
        );
    }

    /// A counter's current value.
    #[inline]
    pub fn value(&self, id: CounterId) -> u64 {
        self.cell(id).load(Ordering::Relaxed)
    }

    /// Path of the `counters` file.
    pub fn path(&self) -> &Path {
        self.mapping.path()
    }

    #[inline]
    fn cell(&self, id: CounterId) -> &AtomicU64 {
        self.mapping.atomic_u64(self.layout.value(id))
    }

    fn state(&self, index: u32) -> u32 {
        self.mapping
            .atomic_u32(self.layout.record(index) + RECORD_STATE_OFFSET)
            .load(Ordering::Acquire)
    }

    fn role(&self, index: u32) -> u32 {
        assert_eq!(
            self.state(index),
            COUNTER_STATE_ALLOCATED,
            "counter {index} not allocated"
        );
        self.mapping
            .atomic_u32(self.layout.record(index) + RECORD_ROLE_OFFSET)
            .load(Ordering::Relaxed)
    }

    fn reclaim(&mut self, index: u32) {
        self.first_maybe_free = self.first_maybe_free.min(index);
        self.mapping
            .atomic_u32(self.layout.record(index) + RECORD_STATE_OFFSET)
            .store(COUNTER_STATE_RECLAIMED, Ordering::Release);
    }

    /// First index of `slots` consecutive slots that are not allocated.
    fn reserve(&self, _kind: u32, label: &str, slots: u32) -> Result<u32, AllocateError> {
        if label.len() > COUNTER_LABEL_BYTES_MAX {
            return Err(AllocateError::LabelTooLong {
                label_bytes: label.len(),
            });
        }
        let mut run_start = self.first_maybe_free;
        let mut run = 0;
        for index in self.first_maybe_free..self.layout.counters_max {
            if self.state(index) == COUNTER_STATE_ALLOCATED {
                run = 0;
                run_start = index + 1;
                continue;
            }
            run += 1;
            if run == slots {
                return Ok(run_start);
            }
        }
        Err(AllocateError::Full {
            needed: slots,
            counters_max: self.layout.counters_max,
        })
    }

    fn publish_record(&mut self, index: u32, kind: u32, label: &str, role: u32) {
        assert!(label.len() <= COUNTER_LABEL_BYTES_MAX);
        assert_ne!(self.state(index), COUNTER_STATE_ALLOCATED);
        let record = self.layout.record(index);
        let mapping = &self.mapping;
        let generation = mapping.atomic_u64(record + RECORD_GENERATION_OFFSET);
        let before = generation.load(Ordering::Relaxed);
        assert!(before & 1 == 0, "record {index} generation {before} odd");
        generation.store(before + 1, Ordering::Relaxed);
        fence(Ordering::Release);
        mapping
            .atomic_u32(record + RECORD_KIND_OFFSET)
            .store(kind, Ordering::Relaxed);
        mapping
            .atomic_u32(record + RECORD_LABEL_BYTES_OFFSET)
            .store(label.len() as u32, Ordering::Relaxed);
        mapping
            .atomic_u32(record + RECORD_ROLE_OFFSET)
            .store(role, Ordering::Relaxed);
        let mut words = [0u8; COUNTER_LABEL_BYTES_MAX];
        words[..label.len()].copy_from_slice(label.as_bytes());
        for (word_index, word) in words.chunks_exact(8).enumerate() {
            mapping
                .atomic_u64(record + RECORD_LABEL_OFFSET + word_index * 8)
                .store(
                    u64::from_le_bytes(word.try_into().expect("8 bytes")),
                    Ordering::Relaxed,
                );
        }
        self.set(CounterId(index), 0);
        generation.store(before + 2, Ordering::Release);
        mapping
            .atomic_u32(record + RECORD_STATE_OFFSET)
            .store(COUNTER_STATE_ALLOCATED, Ordering::Release);
        // Past every allocated slot at the hint (amortized O(1): each slot is passed once
        // per allocation of it). A histogram publishes its first slot last, after the
        // parts the hint would otherwise stop behind.
        while self.first_maybe_free < self.layout.counters_max
            && self.state(self.first_maybe_free) == COUNTER_STATE_ALLOCATED
        {
            self.first_maybe_free += 1;
        }
        if index >= self.slots_used {
            self.slots_used = index + 1;
            mapping
                .atomic_u32(SLOTS_USED_OFFSET)
                .store(self.slots_used, Ordering::Release);
        }
        debug_assert!(self.first_maybe_free <= self.layout.counters_max);
    }
}

impl HistogramId {
    /// Records one observation of `nanos`: one add to its bucket, one to the sum, one to
    /// the count. Only the histogram's owner may call it.
    #[inline]
    pub fn record(&self, writer: &CountersWriter, nanos: u64) {
        let first = self.0 .0;
        writer.add(CounterId(first + histogram_bucket(nanos) as u32), 1);
        writer.add(CounterId(first + HISTOGRAM_BUCKETS as u32), nanos);
        writer.add(CounterId(first + HISTOGRAM_BUCKETS as u32 + 1), 1);
    }
}

/// One counter as a reader saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CounterSnapshot<'a> {
    pub id: CounterId,
    pub kind: u32,
    pub label: &'a str,
    pub value: u64,
}

/// One histogram as a reader saw it. `counts` are per bucket (not cumulative); the slots
/// are loaded one by one, so `count` may differ slightly from the sum of `counts` while
/// the owner records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistogramSnapshot<'a> {
    pub id: HistogramId,
    pub kind: u32,
    pub label: &'a str,
    pub bounds_ns: &'static [u64],
    pub counts: [u64; HISTOGRAM_BUCKETS],
    pub sum_ns: u64,
    pub count: u64,
}

/// The control plane's side: reads every allocated counter and histogram.
#[derive(Debug)]
pub struct CountersReader {
    mapping: Arc<SharedMapping>,
    layout: CountersLayout,
}

struct RecordView {
    generation: u64,
    kind: u32,
    role: u32,
    label_bytes: usize,
    label: [u8; COUNTER_LABEL_BYTES_MAX],
}

impl CountersReader {
    /// Maps `<dir>/counters` and checks its magic, version and layout.
    pub fn open(dir: &Path) -> Result<CountersReader, CncError> {
        let path = dir.join(COUNTERS_FILE_NAME);
        let mapping = open_checked(
            &path,
            COUNTERS_MAGIC,
            COUNTERS_LAYOUT_VERSION,
            COUNTERS_HEADER_BYTES,
        )?;
        let corrupt = |reason: String| CncError::Corrupt {
            reason: format!("{}: {reason}", path.display()),
        };
        let counters_max = mapping
            .atomic_u32(COUNTERS_MAX_OFFSET)
            .load(Ordering::Relaxed);
        if counters_max == 0 || counters_max > COUNTERS_MAX_LIMIT {
            return Err(corrupt(format!("counters_max {counters_max} out of range")));
        }
        let layout = CountersLayout::new(counters_max);
        let found = (
            mapping
                .atomic_u64(METADATA_OFFSET_OFFSET)
                .load(Ordering::Relaxed),
            mapping
                .atomic_u64(VALUES_OFFSET_OFFSET)
                .load(Ordering::Relaxed),
        );
        let expected = (layout.metadata_offset as u64, layout.values_offset as u64);
        if found != expected {
            return Err(corrupt(format!("offsets {found:?}, expected {expected:?}")));
        }
        if layout.layout_bytes > mapping.len() {
            return Err(corrupt(format!(
                "{} bytes, its layout needs {}",
                mapping.len(),
                layout.layout_bytes
            )));
        }
        Ok(CountersReader { mapping, layout })
    }

    /// Calls `f` with every allocated plain counter (histogram slots excluded: see
    /// [`CountersReader::histograms`]). Skips a record being rewritten at that moment.
    pub fn for_each(&self, mut f: impl FnMut(CounterSnapshot<'_>)) {
        for index in 0..self.scan_end() {
            let Some(view) = self.record(index) else {
                continue;
            };
            if view.role != ROLE_PLAIN {
                continue;
            }
            let Ok(label) = std::str::from_utf8(&view.label[..view.label_bytes]) else {
                continue;
            };
            f(CounterSnapshot {
                id: CounterId(index),
                kind: view.kind,
                label,
                value: self.value(CounterId(index)),
            });
        }
    }

    /// Calls `f` with every allocated histogram.
    pub fn histograms(&self, mut f: impl FnMut(HistogramSnapshot<'_>)) {
        let slots = HISTOGRAM_COUNTERS as u32;
        for index in 0..self.scan_end() {
            if index + slots > self.layout.counters_max {
                break;
            }
            let Some(view) = self.record(index) else {
                continue;
            };
            if view.role != ROLE_HISTOGRAM_FIRST {
                continue;
            }
            let Ok(label) = std::str::from_utf8(&view.label[..view.label_bytes]) else {
                continue;
            };
            let mut counts = [0u64; HISTOGRAM_BUCKETS];
            for (bucket, count) in counts.iter_mut().enumerate() {
                *count = self.value(CounterId(index + bucket as u32));
            }
            f(HistogramSnapshot {
                id: HistogramId(CounterId(index)),
                kind: view.kind,
                label,
                bounds_ns: &HISTOGRAM_BOUNDS_NS,
                counts,
                sum_ns: self.value(CounterId(index + HISTOGRAM_BUCKETS as u32)),
                count: self.value(CounterId(index + HISTOGRAM_BUCKETS as u32 + 1)),
            });
        }
    }

    /// A counter's value (Relaxed load).
    #[inline]
    pub fn value(&self, id: CounterId) -> u64 {
        self.mapping
            .atomic_u64(self.layout.value(id))
            .load(Ordering::Relaxed)
    }

    /// The value of plain counter `id` if its slot holds a counter of `kind` labelled
    /// `label` while the value is loaded: a slot found earlier (by [`CountersReader::for_each`])
    /// may have been freed since, and given to another counter. A few dozen loads.
    pub fn value_if(&self, id: CounterId, kind: u32, label: &str) -> Option<u64> {
        if id.0 >= self.layout.counters_max {
            return None;
        }
        let view = self.record(id.0)?;
        let same = view.kind == kind
            && view.role == ROLE_PLAIN
            && &view.label[..view.label_bytes] == label.as_bytes();
        if !same {
            return None;
        }
        let value = self.value(id);
        // Still that counter: not reclaimed, not published again (which moves the
        // generation) while the value was loaded.
        fence(Ordering::Acquire);
        let record = self.layout.record(id.0);
        let state = self
            .mapping
            .atomic_u32(record + RECORD_STATE_OFFSET)
            .load(Ordering::Relaxed);
        let generation = self
            .mapping
            .atomic_u64(record + RECORD_GENERATION_OFFSET)
            .load(Ordering::Relaxed);
        (state == COUNTER_STATE_ALLOCATED && generation == view.generation).then_some(value)
    }

    /// Slots of the file.
    pub fn counters_max(&self) -> u32 {
        self.layout.counters_max
    }

    /// One past the highest slot the writer ever allocated (every slot for a file that
    /// does not say).
    fn scan_end(&self) -> u32 {
        match self
            .mapping
            .atomic_u32(SLOTS_USED_OFFSET)
            .load(Ordering::Acquire)
        {
            0 => self.layout.counters_max,
            used => used.min(self.layout.counters_max),
        }
    }

    /// Process id of the writer.
    pub fn writer_pid(&self) -> u32 {
        self.mapping.atomic_u32(PID_OFFSET).load(Ordering::Relaxed)
    }

    /// Whether the writer's process exists (`/proc/<pid>`).
    pub fn writer_exists(&self) -> bool {
        pid_exists(self.writer_pid())
    }

    /// True when the file at the path is not the one mapped (the writer restarted).
    pub fn is_replaced(&self) -> bool {
        file_replaced(&self.mapping, START_NS_OFFSET)
    }

    /// The record of slot `index` when it is allocated and was read consistently.
    fn record(&self, index: u32) -> Option<RecordView> {
        let record = self.layout.record(index);
        let mapping = &self.mapping;
        let generation = mapping.atomic_u64(record + RECORD_GENERATION_OFFSET);
        let before = generation.load(Ordering::Acquire);
        let state = mapping
            .atomic_u32(record + RECORD_STATE_OFFSET)
            .load(Ordering::Acquire);
        if before & 1 == 1 || state != COUNTER_STATE_ALLOCATED {
            return None;
        }
        let load_u32 = |offset| mapping.atomic_u32(record + offset).load(Ordering::Relaxed);
        let mut view = RecordView {
            generation: before,
            kind: load_u32(RECORD_KIND_OFFSET),
            role: load_u32(RECORD_ROLE_OFFSET),
            label_bytes: (load_u32(RECORD_LABEL_BYTES_OFFSET) as usize)
                .min(COUNTER_LABEL_BYTES_MAX),
            label: [0u8; COUNTER_LABEL_BYTES_MAX],
        };
        for (word_index, word) in view.label.chunks_exact_mut(8).enumerate() {
            let value = mapping
                .atomic_u64(record + RECORD_LABEL_OFFSET + word_index * 8)
                .load(Ordering::Relaxed);
            word.copy_from_slice(&value.to_le_bytes());
        }
        fence(Ordering::Acquire);
        (generation.load(Ordering::Relaxed) == before).then_some(view)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_powers_of_two_up_to_68_seconds() {
        assert_eq!(HISTOGRAM_BOUNDS_NS[0], 1024);
        for pair in HISTOGRAM_BOUNDS_NS[..HISTOGRAM_BUCKETS - 1].windows(2) {
            assert!(pair[0].is_power_of_two());
            assert_eq!(pair[1], pair[0] * 2);
        }
        assert_eq!(HISTOGRAM_BOUNDS_NS[HISTOGRAM_BUCKETS - 2], 68_719_476_736);
        assert_eq!(HISTOGRAM_BOUNDS_NS[HISTOGRAM_BUCKETS - 1], u64::MAX);
    }

    #[test]
    fn bucket_edges() {
        assert_eq!(histogram_bucket(0), 0);
        assert_eq!(histogram_bucket(1), 0);
        assert_eq!(histogram_bucket(1024), 0);
        assert_eq!(histogram_bucket(1025), 1);
        assert_eq!(histogram_bucket(2048), 1);
        assert_eq!(histogram_bucket(2049), 2);
        assert_eq!(histogram_bucket(1 << 36), HISTOGRAM_BUCKETS - 2);
        assert_eq!(histogram_bucket((1 << 36) + 1), HISTOGRAM_BUCKETS - 1);
        assert_eq!(histogram_bucket(u64::MAX), HISTOGRAM_BUCKETS - 1);
        // Every value lands in the first bucket whose bound holds it.
        for shift in 0..64u32 {
            for nanos in [(1u64 << shift) - 1, 1 << shift, (1u64 << shift) + 1] {
                let bucket = histogram_bucket(nanos);
                assert!(nanos <= HISTOGRAM_BOUNDS_NS[bucket], "{nanos}");
                assert!(
                    bucket == 0 || nanos > HISTOGRAM_BOUNDS_NS[bucket - 1],
                    "{nanos}"
                );
            }
        }
    }
}
