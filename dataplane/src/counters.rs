//! The lcore's counters: plain integers written only by their lcore.
//!
//! They move into the shared counters page (DESIGN.md §3) with the control plane; until then
//! the data plane prints them as one JSON object when it stops (`COUNTERS {...}` on stderr).

use crate::log::StorageFault;
use crate::net::DropReason;
use crate::replica::RefusalReason;
use precursor_protocol::frame::{ErrorCode, FrameError};

/// Number of [`ErrorCode`] values (codes index the array directly).
pub const ERROR_CODES: usize = 20;

#[derive(Clone, Debug, Default)]
pub struct LcoreCounters {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// Responses the TX queue did not take in time (freed, the client retransmits).
    pub tx_dropped: u64,
    /// Multi-segment mbufs: frames never span segments, so they are dropped.
    pub rx_multi_segment: u64,
    pub mbuf_alloc_failures: u64,
    pub arp_replies: u64,
    pub echo_replies: u64,
    pub dropped: [u64; DropReason::ALL.len()],
    /// Datagrams on our port that are not valid frames, by [`FrameError::reason`].
    pub bad_frames: [u64; FrameError::REASONS.len()],
    /// Responses sent with each error code (index = code).
    pub errors: [u64; ERROR_CODES],
    pub produce_requests: u64,
    pub produce_batches: u64,
    pub produce_records: u64,
    pub produce_bytes: u64,
    pub produce_duplicates: u64,
    pub fetch_requests: u64,
    pub fetch_bytes: u64,
    pub metadata_requests: u64,
    pub pings: u64,
    pub durable_acks: u64,
    pub topics_created: u64,
    /// Frames taken from IPC request rings.
    pub ipc_requests: u64,
    pub ipc_channels_opened: u64,
    /// IPC channels given back, by [`IpcClose`] reason.
    pub ipc_channels_closed: [u64; IpcClose::ALL.len()],
    pub ipc_channels_active: u64,
    /// IPC answers dropped: the client's response ring had no room (it retransmits).
    pub ipc_replies_dropped: u64,
    pub loop_iterations: u64,
    /// Loop iterations that did some work (`do_work` returned more than 0).
    pub busy_iterations: u64,
    /// Follower fetches taken as a leader.
    pub replica_fetches: u64,
    /// Batches appended as a follower, and their bytes.
    pub replica_batches: u64,
    pub replica_bytes: u64,
    /// Bytes of batches sent to followers.
    pub replica_bytes_sent: u64,
    /// Failed exchanges seen as a follower (refusals, lost fragments, segment not ready).
    pub replica_errors: u64,
    /// Replication traffic refused, by [`RefusalReason`].
    pub replication_refused: [u64; RefusalReason::ALL.len()],
    /// Truncations refused: they would have cut below the high watermark.
    pub replica_truncation_refused: u64,
    /// ISR changes seen on fetches (expansions) and on the drain timer (shrinks).
    pub isr_changes: u64,
    /// Quorum mode: produces and follower fetches refused because the leadership lease
    /// had expired.
    pub lease_refusals: u64,
    /// Segments whose memory went to small pages for lack of hugepages (the flusher's
    /// count, copied in when the data plane stops).
    pub segments_on_small_pages: u64,
    /// Storage fault episodes by [`StorageFault`] (the flusher's counts, copied in when
    /// the data plane stops).
    pub storage_faults: [u64; StorageFault::ALL.len()],
    /// Full-disk episodes that ended with writes resuming (the flusher's count, likewise).
    pub storage_full_recoveries: u64,
}

/// Why an IPC channel was given back.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum IpcClose {
    /// The client closed it.
    Closed = 0,
    /// The client's keepalive stopped moving: presumed dead.
    Timeout = 1,
    /// The client broke its request ring's layout.
    Corrupt = 2,
}

impl IpcClose {
    pub const ALL: [IpcClose; 3] = [IpcClose::Closed, IpcClose::Timeout, IpcClose::Corrupt];

    pub fn name(self) -> &'static str {
        match self {
            IpcClose::Closed => "closed",
            IpcClose::Timeout => "timeout",
            IpcClose::Corrupt => "corrupt",
        }
    }
}

impl LcoreCounters {
    pub fn count_drop(&mut self, reason: DropReason) {
        self.dropped[reason as usize] += 1;
    }

    pub fn count_bad_frame(&mut self, error: &FrameError) {
        let index = FrameError::REASONS
            .iter()
            .position(|r| *r == error.reason())
            .expect("every FrameError reason is listed");
        self.bad_frames[index] += 1;
    }

    pub fn count_error(&mut self, code: ErrorCode) {
        self.errors[code as usize] += 1;
    }

    /// One JSON object, keys sorted as written; no serde in the data plane's hot crate.
    pub fn to_json(&self) -> String {
        let mut out = String::from("{");
        let mut field = |name: &str, value: u64| {
            if out.len() > 1 {
                out.push(',');
            }
            out.push_str(&format!("\"{name}\":{value}"));
        };
        field("rx_packets", self.rx_packets);
        field("rx_bytes", self.rx_bytes);
        field("tx_packets", self.tx_packets);
        field("tx_bytes", self.tx_bytes);
        field("tx_dropped", self.tx_dropped);
        field("rx_multi_segment", self.rx_multi_segment);
        field("mbuf_alloc_failures", self.mbuf_alloc_failures);
        field("arp_replies", self.arp_replies);
        field("echo_replies", self.echo_replies);
        for reason in DropReason::ALL {
            field(
                &format!("dropped_{}", reason.name()),
                self.dropped[reason as usize],
            );
        }
        for (i, reason) in FrameError::REASONS.iter().enumerate() {
            field(&format!("bad_frame_{reason}"), self.bad_frames[i]);
        }
        field("bad_frames_total", self.bad_frames.iter().sum());
        for code in 1..ERROR_CODES as u16 {
            let name = format!("{:?}", ErrorCode::from_u16(code).expect("dense codes"));
            field(
                &format!("error_{}", snake(&name)),
                self.errors[code as usize],
            );
        }
        field("produce_requests", self.produce_requests);
        field("produce_batches", self.produce_batches);
        field("produce_records", self.produce_records);
        field("produce_bytes", self.produce_bytes);
        field("produce_duplicates", self.produce_duplicates);
        field("fetch_requests", self.fetch_requests);
        field("fetch_bytes", self.fetch_bytes);
        field("metadata_requests", self.metadata_requests);
        field("pings", self.pings);
        field("durable_acks", self.durable_acks);
        field("topics_created", self.topics_created);
        field("ipc_requests", self.ipc_requests);
        field("ipc_channels_opened", self.ipc_channels_opened);
        for reason in IpcClose::ALL {
            field(
                &format!("ipc_channels_closed_{}", reason.name()),
                self.ipc_channels_closed[reason as usize],
            );
        }
        field("ipc_replies_dropped", self.ipc_replies_dropped);
        field("loop_iterations", self.loop_iterations);
        field("busy_iterations", self.busy_iterations);
        field("replica_fetches", self.replica_fetches);
        field("replica_batches", self.replica_batches);
        field("replica_bytes", self.replica_bytes);
        field("replica_bytes_sent", self.replica_bytes_sent);
        field("replica_errors", self.replica_errors);
        for reason in RefusalReason::ALL {
            field(
                &format!("replication_refused_{}", reason.name()),
                self.replication_refused[reason.index()],
            );
        }
        field(
            "replica_truncations_refused",
            self.replica_truncation_refused,
        );
        field("isr_changes", self.isr_changes);
        field("lease_refusals", self.lease_refusals);
        field("segments_on_small_pages", self.segments_on_small_pages);
        for fault in StorageFault::ALL {
            field(
                &format!("storage_faults_{}", fault.name()),
                self.storage_faults[fault as usize - 1],
            );
        }
        field("storage_full_recoveries", self.storage_full_recoveries);
        out.push('}');
        out
    }
}

fn snake(camel: &str) -> String {
    let mut out = String::new();
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_code_and_frame_error_has_a_counter() {
        assert!(
            ErrorCode::from_u16(ERROR_CODES as u16).is_none(),
            "ERROR_CODES is stale"
        );
        let mut counters = LcoreCounters::default();
        counters.count_error(ErrorCode::CorruptMessage);
        counters.count_bad_frame(&FrameError::BadMagic { found: 1 });
        let json = counters.to_json();
        assert!(json.contains("\"error_corrupt_message\":1"), "{json}");
        assert!(json.contains("\"bad_frame_bad_magic\":1"), "{json}");
    }
}
