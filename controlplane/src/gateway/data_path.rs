//! The gateway's way to the data plane's logs: Produce and Fetch of whole record batches.
//!
//! ```text
//!  connection tasks ──DataRequest──> std mpsc ──> precursor-kafka-io thread
//!        ^                                          | owns the IPC session (request ring
//!        |                                          | + response ring shared with the
//!        |                                          | data plane), native frames of
//!        |                                          | docs/protocol.md
//!        └──────── oneshot(reply) <── matched by request id ─┘
//! ```
//!
//! Requests are queued in the order the connection tasks make them, so the batches of one
//! connection reach a partition in the order the client sent them (idempotent producers
//! rely on it). Native errors are mapped to Kafka codes by the callers (produce.rs,
//! fetch.rs).
//!
//! UDP frames cannot carry Kafka-sized batches (up to `storage.batch_bytes_max`, 1 MiB),
//! so this path is the IPC transport's shared-memory rings. Until that transport is part
//! of the build, every request is answered [`DataPathError::Unavailable`] and Produce and
//! Fetch answer a retriable error; everything else of the gateway works.

use bytes::Bytes;
use precursor_config::Config;
use precursor_protocol::frame::{Acks, ErrorCode, FetchDataHeader, ProduceAck};
use std::future::Future;

/// Why a data request got no answer from the data plane, or what the data plane refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DataPathError {
    #[error("the data path is not available: {0}")]
    Unavailable(String),
    #[error("the data plane refused: {code:?}: {reason}")]
    Refused { code: ErrorCode, reason: String },
    #[error("the data plane did not answer within {0} ms")]
    Timeout(u64),
}

/// A FetchData answer: the partition's bounds and the whole batches read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    pub header: FetchDataHeader,
    /// The offset was outside `[log_start_offset, high_watermark]`: no batches.
    pub out_of_range: bool,
    pub batches: Bytes,
}

/// The handle connection tasks use; cheap to share.
pub struct DataPath {
    /// Why there is no data path (until the IPC transport is built in).
    unavailable: String,
}

impl DataPath {
    /// Starts the data path thread for the node in `config`.
    pub fn start(_config: &Config) -> DataPath {
        DataPath {
            unavailable: "the IPC transport to the data plane is not part of this build".into(),
        }
    }

    /// Appends one batch to `topic`/`partition` with `acks`; `None` for acks=none.
    pub fn produce(
        &self,
        _topic: &str,
        _partition: u32,
        _acks: Acks,
        _batch: Bytes,
    ) -> impl Future<Output = Result<Option<ProduceAck>, DataPathError>> + Send + 'static {
        let error = DataPathError::Unavailable(self.unavailable.clone());
        async move { Err(error) }
    }

    /// Reads whole batches from the one holding `offset`, at most `max_bytes` of them (the
    /// first one even if larger, when `max_bytes` is 0: KIP-74).
    pub fn fetch(
        &self,
        _topic: &str,
        _partition: u32,
        _offset: u64,
        _max_bytes: u32,
    ) -> impl Future<Output = Result<Fetched, DataPathError>> + Send + 'static {
        let error = DataPathError::Unavailable(self.unavailable.clone());
        async move { Err(error) }
    }

    /// The partition's bounds (log start, high watermark, durable offset), exact at the
    /// time of the answer: a fetch past any possible end, answered OffsetOutOfRange with
    /// the bounds.
    pub fn bounds(
        &self,
        topic: &str,
        partition: u32,
    ) -> impl Future<Output = Result<FetchDataHeader, DataPathError>> + Send + 'static {
        let fetch = self.fetch(topic, partition, u64::MAX, 0);
        async move { fetch.await.map(|fetched| fetched.header) }
    }
}
