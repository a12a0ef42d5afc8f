//! The one error type of the client library, written for the person at the terminal.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use precursor_protocol::frame::ErrorCode;
use thiserror::Error;

/// Everything that can go wrong between a client and a broker.
///
/// `Clone` so that one failed batch can report the same error on each of its messages.
#[derive(Clone, Debug, Error)]
pub enum ClientError {
    /// Not one datagram came back: the usual cause is that no data plane is running.
    #[error(
        "no answer from {broker} after {tries} tries: is the data plane running? \
         (ci/up.sh starts one)"
    )]
    NoAnswer { broker: BrokerAddress, tries: u32 },

    /// The broker answered before, but this request was not acknowledged in time.
    #[error("{what}: no acknowledgement from {broker} within {waited_ms} ms ({tries} tries)")]
    Timeout {
        what: String,
        broker: BrokerAddress,
        waited_ms: u64,
        tries: u32,
    },

    #[error(
        "topic '{topic}' does not exist on {broker} (list it under [[topics.create]] in the \
         broker's config, or produce to it once: producers create topics when the broker's \
         topics.auto_create is on)"
    )]
    UnknownTopic {
        topic: String,
        broker: BrokerAddress,
    },

    #[error(
        "topic '{topic}' has {partition_count} partitions: partition {partition} does not exist"
    )]
    UnknownPartition {
        topic: String,
        partition: u16,
        partition_count: u16,
    },

    /// No broker asked says it leads the partition (a leader being decided, or the broker
    /// that leads it down) for as long as the delivery timeout.
    #[error(
        "partition {partition} of topic '{topic}' has no leader after {waited_ms} ms \
         (asked {brokers}): its leader is being decided, or the broker leading it is down"
    )]
    NoLeader {
        topic: String,
        partition: u16,
        waited_ms: u64,
        /// The brokers asked, as `address (broker id)`, comma-separated.
        brokers: String,
    },

    /// The partition's leader is a broker this client cannot send to.
    #[error(
        "partition {partition} of {topic} is led by broker {broker_id} at {address}; {reason}"
    )]
    LedElsewhere {
        topic: String,
        partition: u16,
        broker_id: u8,
        /// Its data-plane address, as Metadata gave it ("an unknown address" if it did not).
        address: String,
        /// Why it cannot be reached, e.g. "IPC reaches only this host's data plane".
        reason: String,
    },

    #[error("'{topic}' is not a valid topic name (1..=249 bytes of [a-zA-Z0-9._-], not . or ..)")]
    InvalidTopic { topic: String },

    /// The broker refused a request with an error code.
    #[error("broker refused {what}: {} ({code:?}){}", code.describe(), detail_suffix(detail))]
    Broker {
        what: String,
        code: ErrorCode,
        detail: String,
    },

    /// The broker answered with an error code this build does not know.
    #[error(
        "broker refused {what} with unknown error code {raw}{}",
        detail_suffix(detail)
    )]
    UnknownErrorCode {
        what: String,
        raw: u16,
        detail: String,
    },

    /// One message does not fit in one frame, even alone in its batch.
    #[error(
        "message of {bytes} bytes (encoded) is too large: a batch may hold at most \
         {limit_bytes} bytes (the broker's frame_bytes_max less the frame and fetch headers)"
    )]
    MessageTooLarge { bytes: usize, limit_bytes: usize },

    /// The broker sent something this client cannot read.
    #[error("malformed answer from the broker: {detail}")]
    Protocol { detail: String },

    /// A fetched record batch failed to decode (CRC, lengths, codec).
    #[error("corrupt record batch in partition {partition} near offset {offset}: {detail}")]
    CorruptBatch {
        partition: u16,
        offset: u64,
        detail: String,
    },

    /// The fetch position is outside the partition's log and the reset policy says fail.
    #[error(
        "offset {offset} is out of range for partition {partition} \
         (log start {log_start_offset:?}, high watermark {high_watermark:?})"
    )]
    OffsetOutOfRange {
        partition: u16,
        offset: u64,
        log_start_offset: Option<u64>,
        high_watermark: Option<u64>,
    },

    /// A caller mistake that the library can name (for example a consumer with nothing assigned).
    #[error("{0}")]
    Usage(String),

    /// No IPC channel could be had: no data plane, all channels taken, not accepted.
    #[error("IPC to the data plane in {dir}: {reason}")]
    IpcUnavailable { dir: PathBuf, reason: String },

    /// The data plane took this client's IPC channel back (it presumed the client dead,
    /// or restarted): requests in flight on it are lost; claim a new channel.
    #[error("IPC channel {channel} in {dir} was taken back by the data plane (client silent too long, or the data plane restarted)")]
    IpcChannelLost { channel: u32, dir: PathBuf },

    /// The data plane behind an IPC channel stopped (no heartbeat) or was replaced.
    #[error("the data plane (pid {pid}) behind {dir}/ipc stopped: last heartbeat {heartbeat_age_ms} ms ago, or its file was replaced by a restart")]
    DataplaneStopped {
        pid: u32,
        heartbeat_age_ms: u64,
        dir: PathBuf,
    },

    /// No RDMA connection could be made: no RDMA device or route, nobody listening, or
    /// the data plane rejected it (the reason is its own).
    #[error("RDMA to the data plane at {broker}: {reason}")]
    RdmaUnavailable { broker: SocketAddr, reason: String },

    /// The RDMA connection broke (the data plane disconnected, a work request failed, the
    /// QP went to the error state): requests in flight on it are lost; connect anew.
    #[error("RDMA connection to {broker} lost: {reason}")]
    RdmaConnectionLost { broker: SocketAddr, reason: String },

    #[error("socket error: {0}")]
    Io(#[source] Arc<std::io::Error>),
}

/// Where a client talks to its data plane, for messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BrokerAddress {
    Udp(SocketAddr),
    /// The data plane's CnC directory.
    Ipc(PathBuf),
    /// The data plane's `[rdma]` address (rdma_cm).
    Rdma(SocketAddr),
}

impl std::fmt::Display for BrokerAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BrokerAddress::Udp(address) => write!(f, "{address}"),
            BrokerAddress::Ipc(dir) => write!(f, "IPC at {}", dir.display()),
            BrokerAddress::Rdma(address) => write!(f, "RDMA at {address}"),
        }
    }
}

impl ClientError {
    /// Whether the IPC channel is gone (taken back, or its data plane stopped): the
    /// transport claims a new one and in-flight requests are retransmitted.
    pub fn is_ipc_disconnect(&self) -> bool {
        matches!(
            self,
            ClientError::IpcChannelLost { .. } | ClientError::DataplaneStopped { .. }
        )
    }
}

impl From<std::io::Error> for ClientError {
    fn from(error: std::io::Error) -> ClientError {
        ClientError::Io(Arc::new(error))
    }
}

impl ClientError {
    /// A broker error from a raw header code and the frame's text payload (may be empty).
    pub(crate) fn from_broker(what: impl Into<String>, raw: u16, detail: &[u8]) -> ClientError {
        let detail = String::from_utf8_lossy(detail).trim().to_string();
        match ErrorCode::from_u16(raw) {
            Some(code) => ClientError::Broker {
                what: what.into(),
                code,
                detail,
            },
            None => ClientError::UnknownErrorCode {
                what: what.into(),
                raw,
                detail,
            },
        }
    }

    /// The broker's error code, when this error carries one.
    pub fn error_code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Broker { code, .. } => Some(*code),
            _ => None,
        }
    }
}

fn detail_suffix(detail: &str) -> String {
    if detail.is_empty() {
        String::new()
    } else {
        format!(": {detail}")
    }
}
