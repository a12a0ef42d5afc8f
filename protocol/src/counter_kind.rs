//! Kinds of the counters in the shared `counters` file (DESIGN.md §3): what each counter
//! measures, its Prometheus name and help, and whether it is a counter (only grows), a gauge
//! (set to a current value) or a histogram (latency buckets in nanoseconds, exported in
//! seconds). The label of a counter says which thing it measures:
//!
//! - port kinds (1..): `port=0`
//! - lcore kinds (100..): `lcore=1`, plus `,reason=...` for [`BAD_FRAMES`] and
//!   [`DROPPED_PACKETS`], `,code=...` for [`ERROR_REPLIES`]
//! - partition kinds (200..): `topic=orders,partition=3`
//! - histogram kinds (300..): `lcore=1` (durable-ack wait) or `flusher=0`

/// Whether a kind is a monotonic counter, a gauge or a histogram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricType {
    /// Only grows (until the data plane restarts); the Prometheus name ends in `_total`.
    Counter,
    /// A current value, set rather than added to.
    Gauge,
    /// Power-of-two latency buckets in nanoseconds, with a sum and a count.
    Histogram,
}

// Per port.
pub const PORT_RX_PACKETS: u32 = 1;
pub const PORT_TX_PACKETS: u32 = 2;
pub const PORT_RX_BYTES: u32 = 3;
pub const PORT_TX_BYTES: u32 = 4;
/// Packets the NIC dropped because the receive queue was full (DPDK `imissed`).
pub const PORT_RX_MISSED: u32 = 5;
pub const PORT_RX_ERRORS: u32 = 6;
pub const PORT_TX_ERRORS: u32 = 7;
/// Receive failures for want of an mbuf (DPDK `rx_nombuf`).
pub const PORT_RX_NOMBUF: u32 = 8;
pub const PORT_LINK_UP: u32 = 9;
pub const PORT_LINK_SPEED_MBPS: u32 = 10;

// Per lcore.
pub const LCORE_LOOP_ITERATIONS: u32 = 100;
/// Frames dropped as undecodable; label `reason=...`.
pub const BAD_FRAMES: u32 = 101;
/// Packets dropped before frame decoding; label `reason=...`.
pub const DROPPED_PACKETS: u32 = 102;
/// Error replies sent; label `code=...` (frame::ErrorCode name).
pub const ERROR_REPLIES: u32 = 103;
pub const PRODUCE_REQUESTS: u32 = 104;
pub const PRODUCE_BATCHES: u32 = 105;
pub const PRODUCE_RECORDS: u32 = 106;
pub const PRODUCE_BYTES: u32 = 107;
/// Produce batches recognised as duplicates (idempotent producer retries).
pub const PRODUCE_DUPLICATES: u32 = 108;
pub const FETCH_REQUESTS: u32 = 109;
pub const FETCH_BYTES: u32 = 110;
pub const METADATA_REQUESTS: u32 = 111;
pub const DURABLE_ACKS: u32 = 112;
pub const PENDING_DURABLE_ACKS: u32 = 113;
pub const COMMAND_RING_DEPTH: u32 = 114;
pub const COMMANDS_HANDLED: u32 = 115;
/// Frames taken from IPC request rings.
pub const IPC_REQUESTS: u32 = 116;
/// IPC channels accepted.
pub const IPC_CHANNELS_OPENED: u32 = 117;
/// IPC channels given back; label `reason=closed|timeout|corrupt`.
pub const IPC_CHANNELS_CLOSED: u32 = 118;
/// IPC channels open now.
pub const IPC_CHANNELS_ACTIVE: u32 = 119;
/// IPC answers dropped for want of room in the client's response ring (it retransmits).
pub const IPC_REPLIES_DROPPED: u32 = 120;
/// Follower fetches a leader took (ReplicaFetch frames).
pub const REPLICA_FETCHES: u32 = 121;
/// Batches a follower appended from its leader.
pub const REPLICA_BATCHES: u32 = 122;
/// Bytes of batches a follower received from its leader.
pub const REPLICA_BYTES_RECEIVED: u32 = 123;
/// Bytes of batches a leader sent to its followers.
pub const REPLICA_BYTES_SENT: u32 = 124;
/// Refusals, lost fragments and other failed replication exchanges seen by a follower.
pub const REPLICA_ERRORS: u32 = 125;
/// Replication traffic refused (unknown broker, stale epoch, forged offset, ...); label
/// `reason=...`.
pub const REPLICATION_REFUSED: u32 = 126;
/// Truncations refused because they would cut below the high watermark.
pub const REPLICA_TRUNCATIONS_REFUSED: u32 = 127;
/// Produces and follower fetches a leader refused (NotLeaderOrFollower) because its
/// leadership lease had expired (quorum mode: a fenced leader acknowledges nothing).
pub const LEASE_REFUSALS: u32 = 128;
/// Segments whose memory went to small pages (/dev/shm) because hugetlbfs had no pages
/// left for them (label `flusher=0`).
pub const SEGMENTS_ON_SMALL_PAGES: u32 = 129;
/// Iterations of the lcore's poll loop that did some work (received, sent, served,
/// drained anything); with [`LCORE_LOOP_ITERATIONS`], the lcore's busy fraction.
pub const LCORE_BUSY_ITERATIONS: u32 = 130;
/// Storage fault episodes of the flusher's partitions; label
/// `kind=no_space|quota|io|other`. A full disk (no_space, quota) is retried until space
/// returns and counts once per episode; io and other take the partition offline.
pub const STORAGE_FAULTS: u32 = 131;
/// Full-disk episodes that ended with the partition's writes resuming (label `flusher=0`).
pub const STORAGE_FULL_RECOVERIES: u32 = 132;

// Per partition.
/// Messages in the log: end offset - start offset.
pub const PARTITION_MESSAGES: u32 = 200;
pub const PARTITION_BYTES: u32 = 201;
pub const PARTITION_START_OFFSET: u32 = 202;
pub const PARTITION_END_OFFSET: u32 = 203;
pub const PARTITION_DURABLE_OFFSET: u32 = 204;
pub const PARTITION_SEGMENTS: u32 = 205;
/// Offsets below this are held by every in-sync replica: what consumers may read. The
/// log end offset on a partition of one replica.
pub const PARTITION_HIGH_WATERMARK: u32 = 206;
/// Broker id of the partition's leader as this broker knows it; 0 outside a cluster.
pub const PARTITION_LEADER: u32 = 207;
pub const PARTITION_LEADER_EPOCH: u32 = 208;
/// The replicas' broker ids, one byte each from the lowest byte, preferred leader first.
pub const PARTITION_REPLICAS: u32 = 209;
/// The in-sync replicas' broker ids, packed as [`PARTITION_REPLICAS`] (the leader's view;
/// a follower publishes the last set its leader told it, or its replicas).
pub const PARTITION_ISR: u32 = 210;
/// Times a follower left the ISR of a partition this broker leads.
pub const PARTITION_ISR_SHRINKS: u32 = 211;
/// Times a follower rejoined the ISR.
pub const PARTITION_ISR_EXPANDS: u32 = 212;
/// `min_insync_replicas` of the partition's topic.
pub const PARTITION_MIN_INSYNC: u32 = 213;
/// Bytes of divergent log this replica cut when it followed a new leader (KIP-101).
pub const PARTITION_TRUNCATED_BYTES: u32 = 214;
/// Quorum mode, on the leader: the ISR it proposes to the metadata quorum (the effective
/// ISR minus followers lagging past replica_lag_ms, plus followers that caught up),
/// packed as [`PARTITION_ISR`]. Equal to the ISR in static mode.
pub const PARTITION_ISR_PROPOSED: u32 = 215;

// Histograms.
/// From a produce request's append to its durable acknowledgement, in the data plane.
pub const DURABLE_ACK_WAIT: u32 = 300;
/// One fdatasync of the flusher.
pub const FLUSHER_FDATASYNC: u32 = 301;

/// Every kind, for exhaustive tests and for exporters that describe all metrics up front.
pub const ALL_KINDS: [u32; 61] = [
    PORT_RX_PACKETS,
    PORT_TX_PACKETS,
    PORT_RX_BYTES,
    PORT_TX_BYTES,
    PORT_RX_MISSED,
    PORT_RX_ERRORS,
    PORT_TX_ERRORS,
    PORT_RX_NOMBUF,
    PORT_LINK_UP,
    PORT_LINK_SPEED_MBPS,
    LCORE_LOOP_ITERATIONS,
    BAD_FRAMES,
    DROPPED_PACKETS,
    ERROR_REPLIES,
    PRODUCE_REQUESTS,
    PRODUCE_BATCHES,
    PRODUCE_RECORDS,
    PRODUCE_BYTES,
    PRODUCE_DUPLICATES,
    FETCH_REQUESTS,
    FETCH_BYTES,
    METADATA_REQUESTS,
    DURABLE_ACKS,
    PENDING_DURABLE_ACKS,
    COMMAND_RING_DEPTH,
    COMMANDS_HANDLED,
    IPC_REQUESTS,
    IPC_CHANNELS_OPENED,
    IPC_CHANNELS_CLOSED,
    IPC_CHANNELS_ACTIVE,
    IPC_REPLIES_DROPPED,
    REPLICA_FETCHES,
    REPLICA_BATCHES,
    REPLICA_BYTES_RECEIVED,
    REPLICA_BYTES_SENT,
    REPLICA_ERRORS,
    REPLICATION_REFUSED,
    REPLICA_TRUNCATIONS_REFUSED,
    LEASE_REFUSALS,
    SEGMENTS_ON_SMALL_PAGES,
    LCORE_BUSY_ITERATIONS,
    STORAGE_FAULTS,
    STORAGE_FULL_RECOVERIES,
    PARTITION_MESSAGES,
    PARTITION_BYTES,
    PARTITION_START_OFFSET,
    PARTITION_END_OFFSET,
    PARTITION_DURABLE_OFFSET,
    PARTITION_SEGMENTS,
    PARTITION_HIGH_WATERMARK,
    PARTITION_LEADER,
    PARTITION_LEADER_EPOCH,
    PARTITION_REPLICAS,
    PARTITION_ISR,
    PARTITION_ISR_SHRINKS,
    PARTITION_ISR_EXPANDS,
    PARTITION_MIN_INSYNC,
    PARTITION_TRUNCATED_BYTES,
    PARTITION_ISR_PROPOSED,
    DURABLE_ACK_WAIT,
    FLUSHER_FDATASYNC,
];

/// Stands for a kind this build does not know (a newer data plane's).
pub const UNKNOWN: u32 = u32::MAX;

/// (name, type, help) of a kind.
fn describe(kind: u32) -> (&'static str, MetricType, &'static str) {
    use MetricType::{Counter, Gauge, Histogram};
    match kind {
        PORT_RX_PACKETS => (
            "precursor_port_rx_packets_total",
            Counter,
            "Packets received by the port.",
        ),
        PORT_TX_PACKETS => (
            "precursor_port_tx_packets_total",
            Counter,
            "Packets sent by the port.",
        ),
        PORT_RX_BYTES => (
            "precursor_port_rx_bytes_total",
            Counter,
            "Bytes received by the port.",
        ),
        PORT_TX_BYTES => (
            "precursor_port_tx_bytes_total",
            Counter,
            "Bytes sent by the port.",
        ),
        PORT_RX_MISSED => (
            "precursor_port_rx_missed_total",
            Counter,
            "Packets the NIC dropped because its receive queue was full.",
        ),
        PORT_RX_ERRORS => (
            "precursor_port_rx_errors_total",
            Counter,
            "Erroneous packets received by the port.",
        ),
        PORT_TX_ERRORS => (
            "precursor_port_tx_errors_total",
            Counter,
            "Packets the port failed to send.",
        ),
        PORT_RX_NOMBUF => (
            "precursor_port_rx_nombuf_total",
            Counter,
            "Receive failures for want of a packet buffer.",
        ),
        PORT_LINK_UP => (
            "precursor_port_link_up",
            Gauge,
            "1 when the port's link is up, else 0.",
        ),
        PORT_LINK_SPEED_MBPS => (
            "precursor_port_link_speed_mbps",
            Gauge,
            "Link speed of the port in megabits per second.",
        ),
        LCORE_LOOP_ITERATIONS => (
            "precursor_lcore_loop_iterations_total",
            Counter,
            "Iterations of the lcore's poll loop.",
        ),
        BAD_FRAMES => (
            "precursor_bad_frames_total",
            Counter,
            "Frames dropped as undecodable, by reason.",
        ),
        DROPPED_PACKETS => (
            "precursor_dropped_packets_total",
            Counter,
            "Packets dropped before frame decoding, by reason.",
        ),
        ERROR_REPLIES => (
            "precursor_error_replies_total",
            Counter,
            "Error replies sent, by error code.",
        ),
        PRODUCE_REQUESTS => (
            "precursor_produce_requests_total",
            Counter,
            "Produce requests handled.",
        ),
        PRODUCE_BATCHES => (
            "precursor_produce_batches_total",
            Counter,
            "Record batches appended.",
        ),
        PRODUCE_RECORDS => (
            "precursor_produce_records_total",
            Counter,
            "Records appended.",
        ),
        PRODUCE_BYTES => (
            "precursor_produce_bytes_total",
            Counter,
            "Record batch bytes appended.",
        ),
        PRODUCE_DUPLICATES => (
            "precursor_produce_duplicates_total",
            Counter,
            "Produce batches recognised as duplicates of appended ones.",
        ),
        FETCH_REQUESTS => (
            "precursor_fetch_requests_total",
            Counter,
            "Fetch requests handled.",
        ),
        FETCH_BYTES => (
            "precursor_fetch_bytes_total",
            Counter,
            "Record batch bytes served to fetches.",
        ),
        METADATA_REQUESTS => (
            "precursor_metadata_requests_total",
            Counter,
            "Metadata requests handled.",
        ),
        DURABLE_ACKS => (
            "precursor_durable_acks_total",
            Counter,
            "Produce acknowledgements sent once the data was durable.",
        ),
        PENDING_DURABLE_ACKS => (
            "precursor_pending_durable_acks",
            Gauge,
            "Produce acknowledgements waiting for the flusher.",
        ),
        COMMAND_RING_DEPTH => (
            "precursor_command_ring_depth",
            Gauge,
            "Commands waiting in the command ring.",
        ),
        COMMANDS_HANDLED => (
            "precursor_commands_handled_total",
            Counter,
            "Control-plane commands handled.",
        ),
        IPC_REQUESTS => (
            "precursor_ipc_requests_total",
            Counter,
            "Frames taken from IPC request rings.",
        ),
        IPC_CHANNELS_OPENED => (
            "precursor_ipc_channels_opened_total",
            Counter,
            "IPC channels accepted.",
        ),
        IPC_CHANNELS_CLOSED => (
            "precursor_ipc_channels_closed_total",
            Counter,
            "IPC channels given back, by reason (closed by the client, client timed out, ring corrupt).",
        ),
        IPC_CHANNELS_ACTIVE => (
            "precursor_ipc_channels_active",
            Gauge,
            "IPC channels open now.",
        ),
        IPC_REPLIES_DROPPED => (
            "precursor_ipc_replies_dropped_total",
            Counter,
            "IPC answers dropped for want of room in the client's response ring.",
        ),
        REPLICA_FETCHES => (
            "precursor_replica_fetches_total",
            Counter,
            "Follower fetches this broker's lcore took as a leader.",
        ),
        REPLICA_BATCHES => (
            "precursor_replica_batches_total",
            Counter,
            "Batches appended as a follower.",
        ),
        REPLICA_BYTES_RECEIVED => (
            "precursor_replica_received_bytes_total",
            Counter,
            "Bytes of batches received from leaders.",
        ),
        REPLICA_BYTES_SENT => (
            "precursor_replica_sent_bytes_total",
            Counter,
            "Bytes of batches sent to followers.",
        ),
        REPLICA_ERRORS => (
            "precursor_replica_errors_total",
            Counter,
            "Failed replication exchanges seen by a follower (refusals, lost fragments).",
        ),
        REPLICATION_REFUSED => (
            "precursor_replication_refused_total",
            Counter,
            "Replication traffic refused, by reason.",
        ),
        REPLICA_TRUNCATIONS_REFUSED => (
            "precursor_replica_truncations_refused_total",
            Counter,
            "Truncations refused because they would cut below the high watermark.",
        ),
        LEASE_REFUSALS => (
            "precursor_lease_refusals_total",
            Counter,
            "Produces and follower fetches refused because the leadership lease had expired.",
        ),
        SEGMENTS_ON_SMALL_PAGES => (
            "precursor_segments_on_small_pages_total",
            Counter,
            "Segments whose memory went to small pages (/dev/shm) because hugetlbfs had no pages left.",
        ),
        LCORE_BUSY_ITERATIONS => (
            "precursor_lcore_busy_iterations_total",
            Counter,
            "Iterations of the lcore's poll loop that did work; divided by all iterations, the lcore's busy fraction.",
        ),
        STORAGE_FAULTS => (
            "precursor_storage_errors_total",
            Counter,
            "Storage fault episodes persisting partition logs, by kind (no_space and quota are retried until space returns; io and other take the partition offline).",
        ),
        STORAGE_FULL_RECOVERIES => (
            "precursor_storage_full_recoveries_total",
            Counter,
            "Full-disk episodes that ended with the partition's writes resuming.",
        ),
        PARTITION_MESSAGES => (
            "precursor_partition_messages",
            Gauge,
            "Messages in the partition's log (end offset - start offset).",
        ),
        PARTITION_BYTES => (
            "precursor_partition_bytes",
            Gauge,
            "Bytes in the partition's log.",
        ),
        PARTITION_START_OFFSET => (
            "precursor_partition_start_offset",
            Gauge,
            "Offset of the partition's first message.",
        ),
        PARTITION_END_OFFSET => (
            "precursor_partition_end_offset",
            Gauge,
            "Offset the partition's next message will get.",
        ),
        PARTITION_DURABLE_OFFSET => (
            "precursor_partition_durable_offset",
            Gauge,
            "Offset below which the partition's messages are on disk.",
        ),
        PARTITION_SEGMENTS => (
            "precursor_partition_segments",
            Gauge,
            "Segment files of the partition.",
        ),
        PARTITION_HIGH_WATERMARK => (
            "precursor_partition_high_watermark",
            Gauge,
            "Offset below which every in-sync replica holds the partition's messages.",
        ),
        PARTITION_LEADER => (
            "precursor_partition_leader",
            Gauge,
            "Broker id of the partition's leader (0: not a cluster).",
        ),
        PARTITION_LEADER_EPOCH => (
            "precursor_partition_leader_epoch",
            Gauge,
            "Leader epoch of the partition.",
        ),
        PARTITION_REPLICAS => (
            "precursor_partition_replicas_packed",
            Gauge,
            "Replica broker ids, one byte each from the lowest, preferred leader first.",
        ),
        PARTITION_ISR => (
            "precursor_partition_isr_packed",
            Gauge,
            "In-sync replica broker ids, one byte each from the lowest.",
        ),
        PARTITION_ISR_SHRINKS => (
            "precursor_partition_isr_shrinks_total",
            Counter,
            "Followers that left the in-sync replica set.",
        ),
        PARTITION_ISR_EXPANDS => (
            "precursor_partition_isr_expands_total",
            Counter,
            "Followers that rejoined the in-sync replica set.",
        ),
        PARTITION_MIN_INSYNC => (
            "precursor_partition_min_insync_replicas",
            Gauge,
            "min_insync_replicas of the partition's topic.",
        ),
        PARTITION_TRUNCATED_BYTES => (
            "precursor_partition_truncated_bytes_total",
            Counter,
            "Bytes of divergent log cut on following a new leader.",
        ),
        PARTITION_ISR_PROPOSED => (
            "precursor_partition_isr_proposed_packed",
            Gauge,
            "In-sync replica set the leader proposes to the metadata quorum, packed as the ISR.",
        ),
        DURABLE_ACK_WAIT => (
            "precursor_durable_ack_wait_seconds",
            Histogram,
            "Time from a produce's append to its durable acknowledgement.",
        ),
        FLUSHER_FDATASYNC => (
            "precursor_flusher_fdatasync_seconds",
            Histogram,
            "Duration of one fdatasync by the flusher.",
        ),
        _ => (
            "precursor_unknown",
            Gauge,
            "A counter of a kind this build does not know.",
        ),
    }
}

/// Prometheus metric name of `kind` (`_total` for counters, `_seconds` for histograms).
pub fn metric_name(kind: u32) -> &'static str {
    describe(kind).0
}

/// Whether `kind` is a counter, a gauge or a histogram.
pub fn metric_type(kind: u32) -> MetricType {
    describe(kind).1
}

/// Prometheus help text of `kind`.
pub fn help(kind: u32) -> &'static str {
    describe(kind).2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_prometheus_conventions() {
        for (index, &kind) in ALL_KINDS.iter().enumerate() {
            let name = metric_name(kind);
            assert!(name.starts_with("precursor_"), "{name}");
            assert!(
                name.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                "{name}"
            );
            assert!(help(kind).ends_with('.'), "{kind}");
            match metric_type(kind) {
                MetricType::Counter => assert!(name.ends_with("_total"), "{name}"),
                MetricType::Gauge => assert!(!name.ends_with("_total"), "{name}"),
                MetricType::Histogram => assert!(name.ends_with("_seconds"), "{name}"),
            }
            for &other in &ALL_KINDS[index + 1..] {
                assert_ne!(kind, other);
                assert_ne!(name, metric_name(other));
            }
        }
        assert_eq!(metric_name(12345), metric_name(UNKNOWN));
        assert_eq!(metric_type(PENDING_DURABLE_ACKS), MetricType::Gauge);
        assert_eq!(metric_type(COMMAND_RING_DEPTH), MetricType::Gauge);
        assert_eq!(metric_type(DURABLE_ACK_WAIT), MetricType::Histogram);
        assert_eq!(metric_type(PORT_RX_PACKETS), MetricType::Counter);
    }
}
