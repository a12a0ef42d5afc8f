//! Partition logs (DESIGN.md §5): Kafka's on-disk layout, an active segment in (huge page)
//! memory appended to by the owning lcore, and one flusher thread that persists it.
//!
//! ```text
//!  lcore (owns PartitionLog)                        flusher thread (all partitions)
//!  ------------------------                         -------------------------------
//!  append: validate, sequence check,                poll each partition:
//!    copy once into the active segment  --publish-->  pwrite published bytes to .log
//!    (AppendWriter, Release store)        length      fdatasync (group commit)
//!  request_durable(offset) --AtomicU64------------->  sync now when asked
//!  durable_offset() <-------AtomicU64 (Release)-----  after each fdatasync
//!  roll: take a spare   <--ArrayQueue ToLcore-------  prepare spare (memory + file)
//!        send Rolled    --ArrayQueue ToFlusher----->  seal: sync, .index/.timeindex,
//!  swap in the file map <--ToLcore::Sealed----------    read-only map of the .log
//!  send back the memory --ToFlusher::Release------->  unmap + unlink memory file
//!  retention: Retire    --ToFlusher::Retire-------->  unmap + unlink segment files
//!  storage_fault()      <--AtomicU8 (Release)-------  pwrite/fdatasync failed (a full
//!                                                    disk clears when a retry succeeds)
//! ```
//!
//! Files of a partition, under `<data_dir>/<topic>-<partition>/`:
//! `<base offset, 20 digits>.log` (record batches v2 back to back, base offsets assigned),
//! `.index` and `.timeindex` (see [`index`]) for sealed segments, `spare.log` (the next
//! segment's file, renamed when it becomes active). Memory files:
//! `<memory_dir>/<topic>-<partition>+<n>.segment` (`+` never appears in a topic name), or
//! the same name in the small-page directory for a segment that found no hugepages (see
//! [`memory`]).

pub mod config;
pub mod epochs;
pub mod flusher;
pub mod index;
mod memory;
pub use memory::keep_hugepages_free;
pub mod partition;
pub mod producer;
mod recovery;
mod segment;

#[cfg(test)]
mod tests;

use std::path::PathBuf;

pub use config::{validate_topic, LogConfig};
pub use epochs::{EpochEntry, EpochHistory};
pub use flusher::{Flusher, FlusherHandle, StorageFault, STORAGE_FULL_RETRY_MS};
pub use index::SparseIndex;
pub use partition::{
    remove_uncommitted_partition, Appended, ClosedPartition, PartitionLog, SegmentSpan,
};
pub use precursor_protocol::record_batch::BatchError;
pub use recovery::truncate_files;

/// Why `append` refused a batch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AppendError {
    #[error("corrupt record batch: {0}")]
    Corrupt(#[from] BatchError),
    #[error("record batch of {bytes} bytes exceeds the limit of {max} (max.message.bytes)")]
    TooLarge { bytes: usize, max: u32 },
    #[error("out of order sequence: expected {expected}, found {found}")]
    OutOfOrderSequence { expected: i32, found: i32 },
    #[error("producer epoch is older than the partition's (fenced producer)")]
    InvalidProducerEpoch,
    #[error("duplicate sequence older than the batches remembered for this producer")]
    DuplicateSequence,
    #[error("next segment not prepared yet, retry")]
    SegmentNotReady,
    #[error("partition storage failed, refusing writes until restart: {reason}")]
    Storage { reason: &'static str },
    /// A replicated batch that does not start at this log's end (a lost or reordered
    /// ReplicaData): refetch from the log end.
    #[error("replicated batch starts at offset {found}, the log ends at {expected}")]
    NotContiguous { expected: u64, found: u64 },
}

/// Why `read` returned no bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    #[error("offset {offset} out of range {start}..={end}")]
    OffsetOutOfRange { offset: u64, start: u64, end: u64 },
    /// The batch holding `offset` is larger than the caller's buffer: it can never be
    /// served into it (a consumer must not spin on an empty answer).
    #[error(
        "the batch holding offset {offset} is {bytes} bytes, larger than the {room}-byte buffer"
    )]
    BatchTooLarge {
        offset: u64,
        bytes: usize,
        room: usize,
    },
}

/// Errors opening (creating, recovering) a partition log.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("invalid log configuration: {reason}")]
    Config { reason: String },
    #[error("invalid topic name {topic:?}: 1..=249 of [a-zA-Z0-9._-]")]
    InvalidTopic { topic: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Shm(#[from] precursor_shm::ShmError),
    #[error("partition {name} is already open")]
    AlreadyOpen { name: String },
    #[error("the flusher has shut down")]
    FlusherStopped,
    #[error("cannot start the flusher thread: {0}")]
    FlusherThread(#[source] std::io::Error),
    #[error("{path}: segment file name is not a 20 digit offset")]
    SegmentName { path: PathBuf },
}

pub(crate) fn io_error(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> LogError {
    let path = path.into();
    move |source| LogError::Io { path, source }
}
