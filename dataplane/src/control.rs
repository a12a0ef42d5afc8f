//! The data plane's end of the shared memory with the control plane (DESIGN.md §3):
//! the CnC file (command ring in, event ring out) and the counters page.
//!
//! The lcore polls at most [`COMMANDS_PER_ITERATION_MAX`] commands per loop iteration and
//! answers each with exactly one event carrying the command's correlation id — at once for
//! what it can decide itself, or when the admin thread reports back (create, delete,
//! alter). Counters are plain integers on the lcore, published to the page on the drain
//! timer: one writer per slot, no syscall, no allocation.

use crate::counters::{IpcClose, LcoreCounters, ERROR_CODES};
use crate::log::{FlusherHandle, StorageFault};
use crate::net::DropReason;
use crate::replica::RefusalReason;
use precursor_config::limits::PARTITIONS_PER_BROKER_MAX;
use precursor_ffi::dpdk::{LinkStatus, PortStats};
use precursor_protocol::command::{Event, COMMAND_PAYLOAD_BYTES_MAX};
use precursor_protocol::counter_kind as kind;
use precursor_protocol::frame::{ErrorCode, FrameError};
use precursor_shm::{
    CounterId, CountersWriter, DataplaneCnc, HistogramId, ShmError, HISTOGRAM_BUCKETS,
    RING_PAYLOAD_BYTES_MAX,
};
use std::path::Path;

/// Commands taken from the ring per lcore loop iteration.
pub const COMMANDS_PER_ITERATION_MAX: usize = 4;
/// Slots of each CnC ring.
pub const RING_SLOTS: u32 = 256;
/// Counters of the broker itself: ports, lcore, flusher, histograms (a few hundred used).
const BROKER_COUNTERS_MAX: u32 = 4096;
/// Counters per partition: offsets, bytes, segments, messages, and replication's gauges.
const PARTITION_COUNTERS: usize = 16;
/// Counters the page holds: the broker's, and every partition's up to
/// [`PARTITIONS_PER_BROKER_MAX`] (68 MiB of file, sparse: pages are touched as counters
/// are allocated, and readers scan only what was ever used).
pub const COUNTERS_MAX: u32 =
    BROKER_COUNTERS_MAX + PARTITIONS_PER_BROKER_MAX * PARTITION_COUNTERS as u32;
const _: () = assert!(COUNTERS_MAX <= precursor_shm::counters::COUNTERS_MAX_LIMIT);
/// Counters per port: packets and bytes each way, missed, errors each way, no-mbuf, link.
const PORT_COUNTERS: usize = 10;
/// Longest counter label, in bytes (the page's label field).
const LABEL_BYTES_MAX: usize = 120;

/// The counter ids of one partition.
#[derive(Copy, Clone, Debug)]
pub struct PartitionCounters {
    ids: [CounterId; PARTITION_COUNTERS],
}

/// The values published per partition, in the order of [`PartitionCounters`].
pub struct PartitionValues {
    pub start_offset: u64,
    pub end_offset: u64,
    pub durable_offset: u64,
    pub bytes: u64,
    pub segments: u64,
    pub high_watermark: u64,
    /// Leader broker id (0 outside a cluster), its epoch.
    pub leader: u64,
    pub leader_epoch: u64,
    /// Broker ids packed one byte each (`BrokerSet::packed`).
    pub replicas: u64,
    pub isr: u64,
    pub isr_shrinks: u64,
    pub isr_expands: u64,
    pub min_insync: u64,
    pub truncated_bytes: u64,
    /// Quorum mode: the ISR the leader proposes to the quorum (else the ISR).
    pub isr_proposed: u64,
}

/// One command taken from the ring, copied out of it.
pub struct ReceivedCommand {
    pub kind: u32,
    pub correlation_id: u64,
    pub length: usize,
    pub payload: [u8; RING_PAYLOAD_BYTES_MAX],
}

/// Reads one scalar of the lcore's counters.
type ReadCounter = fn(&LcoreCounters) -> u64;

/// The lcore's counters in the page, by what they count.
struct LcoreCounterIds {
    scalars: Vec<(CounterId, ReadCounter)>,
    dropped: [CounterId; DropReason::ALL.len()],
    bad_frames: [CounterId; FrameError::REASONS.len()],
    errors: [CounterId; ERROR_CODES],
    ipc_closed: [CounterId; IpcClose::ALL.len()],
    refused: [CounterId; RefusalReason::ALL.len()],
    pending_acks: CounterId,
    command_ring_depth: CounterId,
    commands: CounterId,
}

pub struct Control {
    cnc: DataplaneCnc,
    counters: CountersWriter,
    lcore: LcoreCounterIds,
    port: [CounterId; PORT_COUNTERS],
    durable_wait: HistogramId,
    fdatasync: HistogramId,
    /// Segments the flusher's partitions made on small pages (hugepages ran out).
    small_page_segments: CounterId,
    /// Storage fault episodes, by [`StorageFault`] in [`StorageFault::ALL`] order.
    storage_faults: [CounterId; StorageFault::ALL.len()],
    storage_full_recoveries: CounterId,
    /// The flusher's own fdatasync statistics, copied into `fdatasync` on the drain timer.
    flusher: FlusherHandle,
    commands_handled: u64,
    event: [u8; COMMAND_PAYLOAD_BYTES_MAX],
}

impl Control {
    /// Creates `<dir>/cnc` and `<dir>/counters` (replacing a previous data plane's) and
    /// registers the lcore's counters. Start-up only.
    /// `lease_until_ns` starts the leadership lease: `LEASE_FOREVER_NS` in static mode,
    /// `LEASE_EXPIRED_NS` in quorum mode (lead nothing until the control plane renews).
    pub fn create(
        dir: &Path,
        port_name: &str,
        flusher: FlusherHandle,
        lease_until_ns: u64,
    ) -> Result<Control, ShmError> {
        std::fs::create_dir_all(dir).map_err(|source| ShmError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let mut counters = CountersWriter::create(dir, COUNTERS_MAX)?;
        let lcore = register_lcore(&mut counters);
        let port_label = format!("port={port_name}");
        let port = [
            kind::PORT_RX_PACKETS,
            kind::PORT_TX_PACKETS,
            kind::PORT_RX_BYTES,
            kind::PORT_TX_BYTES,
            kind::PORT_RX_MISSED,
            kind::PORT_RX_ERRORS,
            kind::PORT_TX_ERRORS,
            kind::PORT_RX_NOMBUF,
            kind::PORT_LINK_UP,
            kind::PORT_LINK_SPEED_MBPS,
        ]
        .map(|counter_kind| {
            counters
                .allocate(counter_kind, &port_label)
                .expect("room for the port's counters at start-up")
        });
        let durable_wait = counters
            .allocate_histogram(kind::DURABLE_ACK_WAIT, "lcore=0")
            .expect("room for the lcore's histogram at start-up");
        let fdatasync = counters
            .allocate_histogram(kind::FLUSHER_FDATASYNC, "flusher=0")
            .expect("room for the flusher's histogram at start-up");
        let small_page_segments = counters
            .allocate(kind::SEGMENTS_ON_SMALL_PAGES, "flusher=0")
            .expect("room for the flusher's counter at start-up");
        let storage_faults = StorageFault::ALL.map(|fault| {
            counters
                .allocate(kind::STORAGE_FAULTS, &format!("kind={}", fault.name()))
                .expect("room for the flusher's counters at start-up")
        });
        let storage_full_recoveries = counters
            .allocate(kind::STORAGE_FULL_RECOVERIES, "flusher=0")
            .expect("room for the flusher's counter at start-up");
        // The CnC file is made last: a control plane that sees it finds counters ready.
        let cnc = DataplaneCnc::create_with_lease(dir, RING_SLOTS, lease_until_ns)?;
        Ok(Control {
            cnc,
            counters,
            lcore,
            port,
            durable_wait,
            small_page_segments,
            storage_faults,
            storage_full_recoveries,
            fdatasync,
            flusher,
            commands_handled: 0,
            event: [0; COMMAND_PAYLOAD_BYTES_MAX],
        })
    }

    /// The next command, if one is waiting.
    #[inline]
    pub fn poll_command(&mut self) -> Option<ReceivedCommand> {
        let mut payload = [0u8; RING_PAYLOAD_BYTES_MAX];
        let entry = self.cnc.commands().try_pop(&mut payload)?;
        self.commands_handled += 1;
        Some(ReceivedCommand {
            kind: entry.kind,
            correlation_id: entry.correlation_id,
            length: entry.length,
            payload,
        })
    }

    /// Sends the one event that answers `correlation_id`. False when the event ring is full
    /// (the control plane stopped reading; its request times out).
    pub fn reply(&mut self, correlation_id: u64, event: &Event) -> bool {
        let length = event.encode(&mut self.event);
        self.cnc
            .events()
            .try_push(event.kind(), correlation_id, &self.event[..length])
            .is_ok()
    }

    /// Proves to the control plane that the data plane is alive (drain timer).
    pub fn heartbeat(&self, now_ms: u64) {
        self.cnc.heartbeat(now_ms);
    }

    /// Until when this broker may lead (CLOCK_MONOTONIC ns): one Acquire load.
    #[inline]
    pub fn lease_until_ns(&self) -> u64 {
        self.cnc.lease_until_ns()
    }

    /// Records how long a durable ack waited for the flusher.
    pub fn record_durable_wait(&self, nanos: u64) {
        self.durable_wait.record(&self.counters, nanos);
    }

    /// Copies the flusher's fdatasync latencies into the page (drain timer): buckets, then
    /// the sum and the count, in the histogram's slot order.
    fn publish_fdatasync(&self) {
        self.counters.set(
            self.small_page_segments,
            self.flusher.segments_on_small_pages(),
        );
        for (id, value) in self
            .storage_faults
            .iter()
            .zip(self.flusher.storage_faults())
        {
            self.counters.set(*id, value);
        }
        self.counters.set(
            self.storage_full_recoveries,
            self.flusher.storage_full_recoveries(),
        );
        let (buckets, sum_ns, count) = self.flusher.sync_latency();
        let first = self.fdatasync.0 .0;
        for (i, value) in buckets.iter().enumerate() {
            self.counters.set(CounterId(first + i as u32), *value);
        }
        self.counters
            .set(CounterId(first + HISTOGRAM_BUCKETS as u32), sum_ns);
        self.counters
            .set(CounterId(first + HISTOGRAM_BUCKETS as u32 + 1), count);
    }

    /// Publishes the lcore's counters (drain timer).
    pub fn publish(&mut self, counters: &LcoreCounters, pending_acks: usize) {
        for (id, read) in &self.lcore.scalars {
            self.counters.set(*id, read(counters));
        }
        for (id, value) in self.lcore.dropped.iter().zip(counters.dropped) {
            self.counters.set(*id, value);
        }
        for (id, value) in self.lcore.bad_frames.iter().zip(counters.bad_frames) {
            self.counters.set(*id, value);
        }
        for (id, value) in self.lcore.errors.iter().zip(counters.errors) {
            self.counters.set(*id, value);
        }
        for (id, value) in self
            .lcore
            .ipc_closed
            .iter()
            .zip(counters.ipc_channels_closed)
        {
            self.counters.set(*id, value);
        }
        for (id, value) in self.lcore.refused.iter().zip(counters.replication_refused) {
            self.counters.set(*id, value);
        }
        self.counters
            .set(self.lcore.pending_acks, pending_acks as u64);
        let depth = self.cnc.commands().depth();
        self.counters.set(self.lcore.command_ring_depth, depth);
        self.counters
            .set(self.lcore.commands, self.commands_handled);
        self.publish_fdatasync();
    }

    /// Registers a partition's counters (topic installed). None when the page is full: the
    /// partition works, it is just not visible to the control plane.
    pub fn register_partition(&mut self, topic: &str, partition: u16) -> Option<PartitionCounters> {
        // The label is written on the stack: installing a topic allocates nothing here.
        let mut buffer = [0u8; LABEL_BYTES_MAX];
        let mut cursor = std::io::Cursor::new(&mut buffer[..]);
        use std::io::Write;
        if write!(cursor, "topic={topic},partition={partition}").is_err() {
            eprintln!("precursor-dataplane: warning: label of {topic}-{partition} too long, not published");
            return None;
        }
        let written = cursor.position() as usize;
        let label = std::str::from_utf8(&buffer[..written]).expect("formatted from str and u16");
        let mut ids = [CounterId(0); PARTITION_COUNTERS];
        let kinds = [
            kind::PARTITION_START_OFFSET,
            kind::PARTITION_END_OFFSET,
            kind::PARTITION_DURABLE_OFFSET,
            kind::PARTITION_BYTES,
            kind::PARTITION_SEGMENTS,
            kind::PARTITION_MESSAGES,
            kind::PARTITION_HIGH_WATERMARK,
            kind::PARTITION_LEADER,
            kind::PARTITION_LEADER_EPOCH,
            kind::PARTITION_REPLICAS,
            kind::PARTITION_ISR,
            kind::PARTITION_ISR_SHRINKS,
            kind::PARTITION_ISR_EXPANDS,
            kind::PARTITION_MIN_INSYNC,
            kind::PARTITION_TRUNCATED_BYTES,
            kind::PARTITION_ISR_PROPOSED,
        ];
        for (slot, counter_kind) in ids.iter_mut().zip(kinds) {
            match self.counters.allocate(counter_kind, label) {
                Ok(id) => *slot = id,
                Err(_) => {
                    eprintln!(
                        "precursor-dataplane: warning: counters page full, {label} not published"
                    );
                    return None;
                }
            }
        }
        Some(PartitionCounters { ids })
    }

    pub fn publish_partition(&self, ids: &PartitionCounters, values: &PartitionValues) {
        let [start, end, durable, bytes, segments, messages, rest @ ..] = ids.ids;
        self.counters.set(start, values.start_offset);
        self.counters.set(end, values.end_offset);
        self.counters.set(durable, values.durable_offset);
        self.counters.set(bytes, values.bytes);
        self.counters.set(segments, values.segments);
        self.counters
            .set(messages, values.end_offset - values.start_offset);
        let replication = [
            values.high_watermark,
            values.leader,
            values.leader_epoch,
            values.replicas,
            values.isr,
            values.isr_shrinks,
            values.isr_expands,
            values.min_insync,
            values.truncated_bytes,
            values.isr_proposed,
        ];
        for (id, value) in rest.into_iter().zip(replication) {
            self.counters.set(id, value);
        }
    }

    /// Frees a partition's counters (topic deleted).
    pub fn free_partition(&mut self, ids: PartitionCounters) {
        for id in ids.ids {
            self.counters.free(id);
        }
    }

    /// Publishes the port's statistics (drain timer, about once a second).
    pub fn publish_port(&self, stats: &PortStats, link: &LinkStatus) {
        let values = [
            stats.rx_packets,
            stats.tx_packets,
            stats.rx_bytes,
            stats.tx_bytes,
            stats.rx_missed,
            stats.rx_errors,
            stats.tx_errors,
            stats.rx_nombuf,
            link.up as u64,
            link.speed_mbps as u64,
        ];
        for (id, value) in self.port.iter().zip(values) {
            self.counters.set(*id, value);
        }
    }
}

fn register_lcore(counters: &mut CountersWriter) -> LcoreCounterIds {
    let mut allocate = |counter_kind: u32, label: &str| {
        counters
            .allocate(counter_kind, label)
            .expect("room for the lcore's counters at start-up")
    };
    let scalar_kinds: [(u32, ReadCounter); 22] = [
        (kind::LCORE_LOOP_ITERATIONS, |c| c.loop_iterations),
        (kind::LCORE_BUSY_ITERATIONS, |c| c.busy_iterations),
        (kind::PRODUCE_REQUESTS, |c| c.produce_requests),
        (kind::PRODUCE_BATCHES, |c| c.produce_batches),
        (kind::PRODUCE_RECORDS, |c| c.produce_records),
        (kind::PRODUCE_BYTES, |c| c.produce_bytes),
        (kind::PRODUCE_DUPLICATES, |c| c.produce_duplicates),
        (kind::FETCH_REQUESTS, |c| c.fetch_requests),
        (kind::FETCH_BYTES, |c| c.fetch_bytes),
        (kind::METADATA_REQUESTS, |c| c.metadata_requests),
        (kind::DURABLE_ACKS, |c| c.durable_acks),
        (kind::IPC_REQUESTS, |c| c.ipc_requests),
        (kind::IPC_CHANNELS_OPENED, |c| c.ipc_channels_opened),
        (kind::IPC_CHANNELS_ACTIVE, |c| c.ipc_channels_active),
        (kind::IPC_REPLIES_DROPPED, |c| c.ipc_replies_dropped),
        (kind::REPLICA_FETCHES, |c| c.replica_fetches),
        (kind::REPLICA_BATCHES, |c| c.replica_batches),
        (kind::REPLICA_BYTES_RECEIVED, |c| c.replica_bytes),
        (kind::REPLICA_BYTES_SENT, |c| c.replica_bytes_sent),
        (kind::REPLICA_ERRORS, |c| c.replica_errors),
        (kind::REPLICA_TRUNCATIONS_REFUSED, |c| {
            c.replica_truncation_refused
        }),
        (kind::LEASE_REFUSALS, |c| c.lease_refusals),
    ];
    let scalars = scalar_kinds
        .iter()
        .map(|(counter_kind, read)| (allocate(*counter_kind, "lcore=0"), *read))
        .collect();
    let dropped = DropReason::ALL.map(|reason| {
        allocate(
            kind::DROPPED_PACKETS,
            &format!("lcore=0,reason={}", reason.name()),
        )
    });
    let bad_frames = FrameError::REASONS
        .map(|reason| allocate(kind::BAD_FRAMES, &format!("lcore=0,reason={reason}")));
    let errors = std::array::from_fn(|code| {
        let name = ErrorCode::from_u16(code as u16).map_or("none", ErrorCode::describe);
        allocate(
            kind::ERROR_REPLIES,
            &format!(
                "lcore=0,code={code},error={}",
                name.replace(' ', "_").replace(',', "")
            ),
        )
    });
    let ipc_closed = IpcClose::ALL.map(|reason| {
        allocate(
            kind::IPC_CHANNELS_CLOSED,
            &format!("lcore=0,reason={}", reason.name()),
        )
    });
    let refused = RefusalReason::ALL.map(|reason| {
        allocate(
            kind::REPLICATION_REFUSED,
            &format!("lcore=0,reason={}", reason.name()),
        )
    });
    LcoreCounterIds {
        ipc_closed,
        refused,
        scalars,
        dropped,
        bad_frames,
        errors,
        pending_acks: allocate(kind::PENDING_DURABLE_ACKS, "lcore=0"),
        command_ring_depth: allocate(kind::COMMAND_RING_DEPTH, "lcore=0"),
        commands: allocate(kind::COMMANDS_HANDLED, "lcore=0"),
    }
}
