//! Shared-memory primitives of the data plane (DESIGN.md §3). With `ffi/`, this crate is
//! one of the two places `unsafe` may live; every block says why it is sound.
//!
//! - [`SharedMapping`]: a file-backed `MAP_SHARED` mapping in the node's memory directory
//!   (hugetlbfs when mounted, else `/dev/shm`), sized in whole pages of that filesystem.
//! - [`append_region`]: a single-writer append region over a [`SharedMapping`]: one
//!   [`AppendWriter`] writes past the published length and publishes with a Release store;
//!   any number of [`AppendReader`]s read below it after an Acquire load. No lock.
//! - [`ReadOnlyFileMap`]: a read-only map of an ordinary file (a sealed log segment).
//! - [`memory_dir_default`], [`page_bytes_for`]: where memory files go and their page size.
//! - [`ring`]: single-producer single-consumer rings of 512-byte slots across processes.
//! - [`cnc`]: the command-and-control file `<dir>/cnc` (header, command ring, event ring).
//! - [`frame_ring`]: single-producer single-consumer rings of variable-length records,
//!   written and read in place (the rings of an IPC channel).
//! - [`ipc`]: the IPC file `<dir>/ipc` (channels of a request and a response ring).
//! - [`counters`]: the counters file `<dir>/counters` (labelled u64 slots, histograms).

mod append;
pub mod cnc;
pub mod counters;
pub mod frame_ring;
pub mod ipc;
mod mapping;
pub mod ring;

pub use append::{
    append_region, AppendReader, AppendRegionView, AppendWriter, RegionFull, APPEND_HEADER_BYTES,
};
pub use cnc::{
    monotonic_ns, CncError, ControlplaneCnc, DataplaneCnc, CNC_FILE_NAME, CNC_LAYOUT_VERSION,
    LEASE_EXPIRED_NS, LEASE_FOREVER_NS,
};
pub use counters::{
    histogram_bucket, AllocateError, CounterId, CounterSnapshot, CountersFull, CountersReader,
    CountersWriter, HistogramId, HistogramSnapshot, COUNTERS_FILE_NAME, HISTOGRAM_BOUNDS_NS,
    HISTOGRAM_BUCKETS,
};
pub use mapping::{
    hugetlbfs_free_pages, hugetlbfs_mount, memory_dir_default, page_bytes_for, round_up_to_page,
    FileId, ReadOnlyFileMap, SharedMapping, PAGE_BYTES_DEFAULT,
};
pub use ring::{
    RingConsumer, RingEntry, RingError, RingProducer, RING_PAYLOAD_BYTES_MAX, RING_SLOT_BYTES,
};

use std::path::PathBuf;

/// Errors of the shared-memory primitives. Each names the file it concerns.
#[derive(Debug, thiserror::Error)]
pub enum ShmError {
    #[error("shared memory file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("shared memory file {path}: size {bytes} bytes is zero or too large")]
    Size { path: PathBuf, bytes: u64 },
    #[error("shared memory file {path}: {reason}")]
    Layout { path: PathBuf, reason: &'static str },
}
