//! The RDMA transport (feature `rdma`): native frames as SEND/RECV on reliable-connected
//! queue pairs, and one-sided RDMA READs of log segments.
//!
//! ```text
//!   clients (rdma_cm connect, private data: RdmaHello)
//!      |                                    precursor-rdma-cm thread (may block, syscalls)
//!      |  CONNECT_REQUEST -----------------> reject (full / bad hello), or create the QP
//!      |                                     on the id (PD + the transport's two CQs)
//!      |                       ToLcore::Prepare{slot, generation, qp}
//!      |                                     v                               ^
//!      |                            lcore (no syscalls): post the            | ToCm::Prepared
//!      |                            slot's receive buffers -------------------+
//!      |  <------------ accept (RdmaHello) -- cm thread: rdma_accept
//!      |  ESTABLISHED
//!      |  SEND frame  ---> recv CQ --> lcore: Service::serve_frame --> reply rendered
//!      |  <-------------------------- into a send buffer, SEND (inline when small)
//!      |  DISCONNECTED --> cm thread: rdma_disconnect (QP -> error: every posted buffer
//!      |                   completes, flushed), ToLcore::Closed{slot, generation}
//!      |                   lcore: waits until every buffer of the slot is back (or
//!      |                   FLUSH_PATIENCE), then ToCm::Retire{qp} --> cm thread destroys
//!      |                   QP and id, ToLcore::Retired{DestroyedQp}: what the device never
//!      |                   flushed is reclaimed, the slot is free
//! ```
//!
//! The whole story, with the pitfalls measured on soft-RoCE: docs/rdma.md.
//!
//! Memory: one registered region (hugepages when the pool has room) cut into
//! `connections_max x (recv + send)` buffers of `buffer_bytes`; a connection slot owns its
//! `recv_buffers_per_connection` receive and as many send buffers. The receives are posted
//! before the accept, so a client may send as soon as it is connected; it keeps at most
//! that many requests in flight (the [`RdmaHello`] of the accept says how many). Each
//! request gets at most one answer, so a slot's send buffers suffice; when none is free
//! the answer is dropped and counted (the client's retransmission covers it).
//!
//! The lcore polls the two completion queues every iteration like a NIC queue: no
//! completion channel, no system call, no allocation (soft-RoCE's provider itself makes a
//! `write` per SEND to kick the kernel; a hardware NIC rings a doorbell instead).
//!
//! One-sided reads ([`Opcode::ReadGrant`]): a consumer asks for the segment holding an
//! offset; the lcore answers with the segment's address, length and rkey (registered
//! `REMOTE_READ` only, by the cm thread: registration pins memory and makes syscalls),
//! and the address of an 8-byte [`SegmentWatermark`] the lcore keeps current: the bytes of
//! whole batches committed in that segment. Readers READ the word, then batches below it,
//! never past it; a READ outside the registration fails on the NIC. When a segment's
//! memory goes away (persisted and swapped for its file map, or retention), its word is
//! marked revoked, and after [`REVOKE_GRACE`] the registration is dropped.

use std::collections::HashMap;
use std::net::{SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_queue::ArrayQueue;
use precursor_config::RdmaConfig;
use precursor_ffi::verbs::{
    Access, BufferOp, CmEvent, CmEventKind, CmId, Completed, CompletionQueue, ConnParams,
    DestroyedQp, EventChannel, MemoryRegion, MessageBuffers, ProtectionDomain, QpCaps, QueuePair,
    ReadableRegion, VerbsError, WorkCompletion,
};
use precursor_protocol::frame::{
    ErrorCode, FrameHeader, Opcode, PartitionHandle, ReadGrant, ReadGrantRequest, SegmentWatermark,
    FRAME_HEADER_BYTES,
};
use precursor_protocol::rdma::{encode_reject, RdmaHello, RDMA_REJECT_REASON_BYTES_MAX};

use crate::log::ReadError;
use crate::service::{Reply, ReplyTo, Service};
use crate::topics::TopicTable;

/// Receive completions taken per poll (the send queue is reaped first).
pub const RECV_COMPLETIONS_PER_POLL_MAX: usize = 32;
/// Send completions taken per reap.
const SEND_COMPLETIONS_PER_REAP_MAX: usize = 64;
/// Segments registered for one-sided readers at once (and watermark words).
pub const SEGMENT_REGISTRATIONS_MAX: usize = 256;
/// How long a revoked segment stays registered (readers see the revoked mark meanwhile).
pub const REVOKE_GRACE: Duration = Duration::from_secs(1);
/// A sealed segment's registration nobody asked a grant for in this long is revoked (it
/// pins memory: on kernels before 6.2 a copy of the file).
pub const IDLE_REVOKE: Duration = Duration::from_secs(30);
/// Replies at most this long go inline (copied into the work request: no DMA read before
/// the transmission).
const INLINE_BYTES_MAX: u32 = 256;
/// The receiver-not-ready timer the broker's QPs advertise: 0.01 ms (IB encoding).
pub const RNR_TIMER_CODE: u8 = 1;
/// How long a closed connection's posted buffers may take to come back flushed before its
/// QP is destroyed with them outstanding (and they are reclaimed): soft-RoCE on Linux 6.1
/// does not always flush every posted receive of a QP in the error state.
pub const FLUSH_PATIENCE: Duration = Duration::from_secs(2);
/// Pending connection requests the listener queues.
const LISTEN_BACKLOG: i32 = 64;
/// How long the cm thread waits for an event before looking at the lcore's messages.
const CM_POLL_INTERVAL: Duration = Duration::from_millis(1);
/// The listener's token (connection tokens are `generation << 32 | slot`).
const LISTENER_TOKEN: u64 = u64::MAX;

/// Why the transport could not start.
#[derive(Debug, thiserror::Error)]
pub enum RdmaError {
    #[error("RDMA transport on {address}: {what}: {source}")]
    Verbs {
        address: SocketAddr,
        what: &'static str,
        source: VerbsError,
    },
    #[error("cannot start the RDMA connection-manager thread: {0}")]
    Thread(std::io::Error),
}

/// Names one connection of the transport: its slot, and which use of the slot.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct ConnectionId {
    pub slot: u16,
    pub generation: u32,
}

impl ConnectionId {
    fn token(self) -> u64 {
        (u64::from(self.generation) << 32) | u64::from(self.slot)
    }

    fn from_token(token: u64) -> ConnectionId {
        ConnectionId {
            slot: token as u16,
            generation: (token >> 32) as u32,
        }
    }

    fn reply_to(self) -> ReplyTo {
        ReplyTo::Rdma {
            connection: self.slot,
            generation: self.generation,
        }
    }
}

/// The transport's own counters (printed as `RDMA {...}` when the data plane stops).
#[derive(Clone, Debug, Default)]
pub struct RdmaCounters {
    pub connections_opened: u64,
    pub connections_closed: u64,
    /// Connections closed because a work request failed (not flushed): a QP error.
    pub connection_errors: u64,
    pub frames_received: u64,
    pub frames_sent: u64,
    pub frame_bytes_received: u64,
    /// Answers with no free send buffer, or for a connection that is gone.
    pub replies_dropped: u64,
    pub read_grants: u64,
    /// ReadGrant answered Busy while the segment is being registered.
    pub read_grants_busy: u64,
    pub segment_registrations: u64,
    pub segment_revocations: u64,
    /// Completions that named no buffer of the transport (must stay 0).
    pub stray_completions: u64,
    /// Completions of buffers already reclaimed with their destroyed QP.
    pub stale_completions: u64,
    /// Buffers taken back with a QP destroyed before they were flushed.
    pub buffers_reclaimed: u64,
    /// Messages that did not fit the queues to the cm thread (must stay 0).
    pub queue_full: u64,
}

impl RdmaCounters {
    pub fn to_json(&self) -> String {
        format!(
            "{{\"connections_opened\":{},\"connections_closed\":{},\"connection_errors\":{},\
             \"frames_received\":{},\"frames_sent\":{},\"frame_bytes_received\":{},\
             \"replies_dropped\":{},\"read_grants\":{},\"read_grants_busy\":{},\
             \"segment_registrations\":{},\"segment_revocations\":{},\"stray_completions\":{},\
             \"stale_completions\":{},\"buffers_reclaimed\":{},\"queue_full\":{}}}",
            self.connections_opened,
            self.connections_closed,
            self.connection_errors,
            self.frames_received,
            self.frames_sent,
            self.frame_bytes_received,
            self.replies_dropped,
            self.read_grants,
            self.read_grants_busy,
            self.segment_registrations,
            self.segment_revocations,
            self.stray_completions,
            self.stale_completions,
            self.buffers_reclaimed,
            self.queue_full,
        )
    }
}

/// cm thread -> lcore.
enum ToLcore {
    /// A connect request's QP (in INIT): post the slot's receives, answer Prepared.
    Prepare {
        id: ConnectionId,
        qp: QueuePair,
        peer: Option<SocketAddr>,
    },
    Established(ConnectionId),
    /// The connection is down and its QP in the error state: reclaim, then Retire.
    Closed(ConnectionId),
    /// The QP is destroyed (with the proof, unless destroying failed): buffers still
    /// posted to it come back, the slot is free.
    Retired {
        id: ConnectionId,
        destroyed: Option<DestroyedQp>,
    },
    /// Registered: READs go to `remote_addr` (the segment's memory, or the cm thread's own
    /// map of its file) with `rkey`.
    Registered {
        slot: u32,
        rkey: u32,
        remote_addr: u64,
    },
    RegisterFailed {
        slot: u32,
    },
}

/// lcore -> cm thread.
enum ToCm {
    /// The receives are posted: accept.
    Prepared(ConnectionId),
    /// Posting failed: reject.
    PrepareFailed(ConnectionId),
    /// A work request failed: disconnect (the QP goes to the error state).
    Disconnect(ConnectionId),
    /// Every buffer of the slot is back (or [`FLUSH_PATIENCE`] passed with `unflushed`
    /// still out): destroy the QP and the id, answer Retired.
    Retire {
        id: ConnectionId,
        qp: QueuePair,
        unflushed: u32,
    },
    Register {
        slot: u32,
        source: SegmentSource,
    },
    Deregister {
        slot: u32,
    },
}

/// What to register for readers.
enum SegmentSource {
    /// The segment's memory, as mapped here (read-write shared: registrable as is).
    Memory { address: usize, bytes: usize },
    /// A persisted segment's file: the cm thread maps it itself (read-only shared maps
    /// of files cannot be registered on every kernel, see `ReadableRegion::register_file`).
    File {
        path: std::path::PathBuf,
        bytes: usize,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SlotState {
    Free,
    /// Serving (from Prepare on: frames may arrive before ESTABLISHED is seen here).
    Open,
    /// Going down; `cm_closed` once the cm thread said Closed (its QP is in error).
    Closing {
        cm_closed: bool,
    },
    /// QP handed back for destruction; free once the cm thread says Retired.
    Retiring,
}

struct Connection {
    state: SlotState,
    generation: u32,
    qp: Option<QueuePair>,
    /// Send buffers free, as indices into the transport's buffers.
    free_sends: Vec<u32>,
    posted_recvs: u32,
    sends_in_flight: u32,
    peer: Option<SocketAddr>,
    /// A message to the cm thread that did not fit its queue, sent again on maintain.
    retry: Option<ToCmRetry>,
    /// When the connection started closing.
    closing_since: Option<Instant>,
}

#[derive(Clone, Copy, Debug)]
enum ToCmRetry {
    Prepared,
    PrepareFailed,
    Disconnect,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RegistrationState {
    /// Asked of the cm thread.
    Registering,
    Ready {
        rkey: u32,
        remote_addr: u64,
    },
    /// The segment's memory went away: the word says revoked; dropped after the grace.
    Revoked {
        since: Instant,
    },
}

#[derive(Clone, Copy, Debug)]
struct Registration {
    handle: PartitionHandle,
    base_offset: u64,
    address: usize,
    bytes: usize,
    state: RegistrationState,
    /// The value last written into the watermark word.
    watermark: SegmentWatermark,
    /// When a grant last named it: sealed registrations idle for [`IDLE_REVOKE`] go.
    last_granted: Instant,
}

/// The lcore's side of the transport.
pub struct RdmaTransport {
    address: SocketAddr,
    frame_bytes_max: usize,
    recv_per_connection: usize,
    send_per_connection: usize,
    recv_cq: CompletionQueue,
    send_cq: CompletionQueue,
    buffers: MessageBuffers,
    connections: Vec<Connection>,
    /// Segment registrations by watermark slot.
    registrations: Vec<Option<Registration>>,
    /// `SEGMENT_REGISTRATIONS_MAX` watermark words, readable remotely.
    watermarks: MemoryRegion,
    to_lcore: Arc<ArrayQueue<ToLcore>>,
    to_cm: Arc<ArrayQueue<ToCm>>,
    recv_wcs: Vec<WorkCompletion>,
    send_wcs: Vec<WorkCompletion>,
    /// Registration slots whose segment still grows (their watermark is kept current).
    growing: Vec<u16>,
    /// Registrations in `registrations` (none: the drain timer skips them).
    registrations_in_use: usize,
    stop: Arc<AtomicBool>,
    cm_thread: Option<JoinHandle<()>>,
    pub counters: RdmaCounters,
}

impl RdmaTransport {
    /// Listens on `config.address:config.port`, allocates and registers the buffers,
    /// starts the cm thread. Start-up only: blocks, allocates, makes syscalls.
    pub fn start(config: &RdmaConfig) -> Result<RdmaTransport, RdmaError> {
        let address = SocketAddr::V4(SocketAddrV4::new(config.address, config.port));
        let verbs = |what: &'static str| {
            move |source| RdmaError::Verbs {
                address,
                what,
                source,
            }
        };
        let connections_max = config.connections_max as usize;
        let recv = config.recv_buffers_per_connection as usize;
        let send = recv;
        let buffer_bytes = config.buffer_bytes as usize;
        assert!(connections_max > 0 && connections_max <= usize::from(u16::MAX));
        assert!(recv > 0 && buffer_bytes >= FRAME_HEADER_BYTES + ReadGrant::BYTES);

        let channel = EventChannel::new().map_err(verbs("rdma_cm event channel"))?;
        let listener = channel
            .create_id(LISTENER_TOKEN)
            .map_err(verbs("rdma_cm id"))?;
        listener.set_reuse_addr().map_err(verbs("address reuse"))?;
        listener.bind(address).map_err(verbs(
            "bind (is this the address of an RDMA device's interface? rdma link show)",
        ))?;
        listener.listen(LISTEN_BACKLOG).map_err(verbs("listen"))?;
        let ctx = listener.context().map_err(verbs("the listener's device"))?;
        let pd = ProtectionDomain::new(&ctx).map_err(verbs("protection domain"))?;
        let recv_cq = CompletionQueue::new(&ctx, (connections_max * recv) as u32)
            .map_err(verbs("receive completion queue"))?;
        let send_cq = CompletionQueue::new(&ctx, (connections_max * send) as u32)
            .map_err(verbs("send completion queue"))?;
        let buffers = MessageBuffers::new(&pd, connections_max * (recv + send), buffer_bytes, true)
            .map_err(verbs("message buffers"))?;
        let watermarks =
            MemoryRegion::alloc(&pd, SEGMENT_REGISTRATIONS_MAX * 8, Access::REMOTE_READ)
                .map_err(verbs("watermark words"))?;
        eprintln!(
            "precursor-dataplane: RDMA listening on {address} ({}, {} connections x {} receives of {} bytes, buffers on {})",
            ctx.name(),
            connections_max,
            recv,
            buffer_bytes,
            if buffers.is_hugepages() { "hugepages" } else { "the heap" }
        );

        let to_lcore = Arc::new(ArrayQueue::new(
            3 * connections_max + SEGMENT_REGISTRATIONS_MAX + 16,
        ));
        let to_cm = Arc::new(ArrayQueue::new(
            3 * connections_max + 2 * SEGMENT_REGISTRATIONS_MAX + 16,
        ));
        let stop = Arc::new(AtomicBool::new(false));
        let cm = CmThread {
            channel,
            _listener: listener,
            pd,
            send_cq: send_cq.clone(),
            recv_cq: recv_cq.clone(),
            caps: QpCaps {
                max_send_wr: send as u32,
                max_recv_wr: recv as u32,
                max_send_sge: 1,
                max_recv_sge: 1,
                max_inline_data: INLINE_BYTES_MAX,
            },
            hello: RdmaHello {
                buffer_bytes: buffer_bytes as u32,
                recv_buffers: recv as u32,
            },
            slots: (0..connections_max).map(|_| CmSlot::Free).collect(),
            generations: vec![0; connections_max],
            peers: vec![None; connections_max],
            established: vec![false; connections_max],
            regions: HashMap::new(),
            to_lcore: Arc::clone(&to_lcore),
            to_cm: Arc::clone(&to_cm),
            stop: Arc::clone(&stop),
        };
        let cm_thread = std::thread::Builder::new()
            .name("precursor-rdma-cm".into())
            .spawn(move || cm.run())
            .map_err(RdmaError::Thread)?;
        let connections = (0..connections_max)
            .map(|_| Connection {
                state: SlotState::Free,
                generation: 0,
                qp: None,
                free_sends: Vec::with_capacity(send),
                posted_recvs: 0,
                sends_in_flight: 0,
                peer: None,
                retry: None,
                closing_since: None,
            })
            .collect();
        Ok(RdmaTransport {
            address,
            frame_bytes_max: buffer_bytes,
            recv_per_connection: recv,
            send_per_connection: send,
            recv_cq,
            send_cq,
            buffers,
            connections,
            registrations: vec![None; SEGMENT_REGISTRATIONS_MAX],
            watermarks,
            to_lcore,
            to_cm,
            recv_wcs: vec![WorkCompletion::default(); RECV_COMPLETIONS_PER_POLL_MAX],
            send_wcs: vec![WorkCompletion::default(); SEND_COMPLETIONS_PER_REAP_MAX],
            growing: Vec::with_capacity(SEGMENT_REGISTRATIONS_MAX),
            registrations_in_use: 0,
            stop,
            cm_thread: Some(cm_thread),
            counters: RdmaCounters::default(),
        })
    }

    /// The largest frame of this transport (its buffers).
    pub fn frame_bytes_max(&self) -> usize {
        self.frame_bytes_max
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    fn buffers_per_connection(&self) -> usize {
        self.recv_per_connection + self.send_per_connection
    }

    /// Serves what arrived on the connections: reaps send completions, then takes up to
    /// [`RECV_COMPLETIONS_PER_POLL_MAX`] received frames, answering each into a send
    /// buffer; publishes the watermarks of granted segments. `clock` (wall-clock ms) is
    /// read once, and only when a frame arrived: an idle poll reads no clock. Returns the
    /// work done.
    #[inline]
    pub fn poll(&mut self, service: &mut Service, clock: fn() -> i64) -> usize {
        let mut work = self.reap_sends(service);
        let received = match self.recv_cq.poll(&mut self.recv_wcs) {
            Ok(n) => n,
            Err(_) => {
                // The CQ overran or the device failed: every connection is suspect.
                self.counters.stray_completions += 1;
                0
            }
        };
        let now_ms = if received > 0 { clock() } else { 0 };
        for i in 0..received {
            // Copied out: answering may reap sends, which polls into the other array.
            let wc = self.recv_wcs[i];
            self.on_recv_completion(service, &wc, now_ms);
        }
        work += received;
        work + self.publish_watermarks(&service.topics)
    }

    /// Counts a completion that returned no buffer.
    fn unmatched(&mut self, wc: &WorkCompletion) {
        if self.buffers.index_of(wc.wr_id()).is_some() {
            self.counters.stale_completions += 1;
        } else {
            self.counters.stray_completions += 1;
        }
    }

    fn on_recv_completion(&mut self, service: &mut Service, wc: &WorkCompletion, now_ms: i64) {
        let Some(done) = self.buffers.complete(wc) else {
            return self.unmatched(wc);
        };
        let slot = done.index / self.buffers_per_connection();
        let connection = &mut self.connections[slot];
        debug_assert_eq!(done.op, BufferOp::Recv);
        connection.posted_recvs -= 1;
        let id = ConnectionId {
            slot: slot as u16,
            generation: connection.generation,
        };
        if !done.is_success() {
            if !done.is_flushed() {
                self.fail(service, id);
            }
            self.retire_if_idle(slot);
            return;
        }
        if connection.state != SlotState::Open {
            self.retire_if_idle(slot);
            return;
        }
        self.counters.frames_received += 1;
        self.counters.frame_bytes_received += done.len as u64;
        let frame = self
            .buffers
            .data(done.index)
            .expect("a completed buffer belongs to the CPU");
        if frame.len() >= FRAME_HEADER_BYTES && frame[3] == Opcode::ReadGrant as u8 {
            // One-sided reads are this transport's own business.
            let parsed = precursor_protocol::frame::decode_frame(frame)
                .map(|(header, payload)| (header, ReadGrantRequest::decode(payload)));
            match parsed {
                Ok((header, Ok(request))) => self.grant(service, id, &header, request),
                Ok((header, Err(error))) => {
                    service.counters.count_bad_frame(&error);
                    self.reply(
                        service,
                        id,
                        &header,
                        Reply::Error {
                            code: ErrorCode::InvalidFrame,
                            reason: error.reason(),
                        },
                    );
                }
                Err(_) => {
                    if let Some((header, reply)) =
                        service.serve_frame(id.reply_to(), frame, self.frame_bytes_max, now_ms)
                    {
                        self.reply(service, id, &header, reply);
                    }
                }
            }
        } else if let Some((header, reply)) =
            service.serve_frame(id.reply_to(), frame, self.frame_bytes_max, now_ms)
        {
            self.reply(service, id, &header, reply);
        }
        // The frame is consumed: the buffer goes back to the receive queue.
        let connection = &mut self.connections[slot];
        let reposted = match &connection.qp {
            Some(qp) if connection.state == SlotState::Open => {
                self.buffers.post_recv(qp, done.index).is_ok()
            }
            _ => false,
        };
        if reposted {
            self.connections[slot].posted_recvs += 1;
        } else if self.connections[slot].state == SlotState::Open {
            self.fail(service, id);
        }
        self.retire_if_idle(slot);
    }

    /// Takes send completions: the buffers go back to their connection's free list.
    fn reap_sends(&mut self, service: &mut Service) -> usize {
        let reaped = match self.send_cq.poll(&mut self.send_wcs) {
            Ok(n) => n,
            Err(_) => {
                self.counters.stray_completions += 1;
                return 0;
            }
        };
        for i in 0..reaped {
            let wc = self.send_wcs[i];
            let Some(done) = self.buffers.complete(&wc) else {
                self.unmatched(&wc);
                continue;
            };
            self.on_send_completion(service, done);
        }
        reaped
    }

    fn on_send_completion(&mut self, service: &mut Service, done: Completed) {
        let slot = done.index / self.buffers_per_connection();
        let connection = &mut self.connections[slot];
        connection.sends_in_flight -= 1;
        connection.free_sends.push(done.index as u32);
        if !done.is_success() && !done.is_flushed() {
            let id = ConnectionId {
                slot: slot as u16,
                generation: connection.generation,
            };
            self.fail(service, id);
        }
        self.retire_if_idle(slot);
    }

    /// Renders `reply` into a send buffer of `id` and sends it. Dropped (and counted) when
    /// the connection is gone or has no free send buffer even after reaping.
    fn reply(
        &mut self,
        service: &mut Service,
        id: ConnectionId,
        request: &FrameHeader,
        reply: Reply,
    ) {
        if reply == Reply::Nothing {
            return;
        }
        let frame_bytes_max = self.frame_bytes_max;
        let reserved = FRAME_HEADER_BYTES + reply.payload_bytes_max(frame_bytes_max);
        self.send_with(service, id, |service, buf| {
            let header = service
                .render(reply, request, &mut buf[FRAME_HEADER_BYTES..reserved])
                .expect("a reply other than Nothing renders a frame");
            header.encode(&mut buf[..FRAME_HEADER_BYTES]);
            FRAME_HEADER_BYTES + header.length as usize
        });
    }

    /// Sends what `write` puts into a free send buffer of `id` (it returns the length).
    fn send_with(
        &mut self,
        service: &mut Service,
        id: ConnectionId,
        write: impl FnOnce(&mut Service, &mut [u8]) -> usize,
    ) {
        let slot = usize::from(id.slot);
        let open = self
            .connections
            .get(slot)
            .is_some_and(|c| c.state == SlotState::Open && c.generation == id.generation);
        if !open {
            self.counters.replies_dropped += 1;
            return;
        }
        if self.connections[slot].free_sends.is_empty() {
            self.reap_sends(service);
        }
        let connection = &mut self.connections[slot];
        if connection.state != SlotState::Open {
            self.counters.replies_dropped += 1;
            return;
        }
        let Some(index) = connection.free_sends.pop() else {
            self.counters.replies_dropped += 1;
            return;
        };
        let index = index as usize;
        let filled = self.buffers.fill(index, |buf| write(service, buf));
        let connection = &mut self.connections[slot];
        let qp = connection
            .qp
            .as_ref()
            .expect("an open connection has its QP");
        let sent = filled.is_ok() && self.buffers.post_send(qp, index, true).is_ok();
        if sent {
            connection.sends_in_flight += 1;
            self.counters.frames_sent += 1;
        } else {
            connection.free_sends.push(index as u32);
            self.counters.replies_dropped += 1;
            self.fail(service, id);
        }
    }

    /// A parked answer (durable ack) for `connection`: sent if it is still the same one.
    pub fn deliver(
        &mut self,
        service: &mut Service,
        connection: u16,
        generation: u32,
        request: &FrameHeader,
        reply: Reply,
    ) {
        let id = ConnectionId {
            slot: connection,
            generation,
        };
        self.reply(service, id, request, reply);
    }

    /// A connection failed (a work request completed with an error, or posting failed):
    /// stop serving it and have the cm thread disconnect it.
    fn fail(&mut self, service: &mut Service, id: ConnectionId) {
        let connection = &mut self.connections[usize::from(id.slot)];
        if connection.generation != id.generation || connection.state != SlotState::Open {
            return;
        }
        connection.state = SlotState::Closing { cm_closed: false };
        connection.closing_since = Some(Instant::now());
        self.counters.connection_errors += 1;
        if self.to_cm.push(ToCm::Disconnect(id)).is_err() {
            self.counters.queue_full += 1;
            self.connections[usize::from(id.slot)].retry = Some(ToCmRetry::Disconnect);
        }
        forget_answers(service, id.slot);
    }

    /// Hands a closing slot's QP back once the cm thread closed it and every buffer came
    /// back (posted receives and sends complete, flushed, when the QP is in error), or
    /// [`FLUSH_PATIENCE`] after the close with some still out (then they come back with
    /// the QP's destruction).
    fn retire_if_idle(&mut self, slot: usize) {
        let connection = &mut self.connections[slot];
        if connection.state != (SlotState::Closing { cm_closed: true }) {
            return;
        }
        let unflushed = connection.posted_recvs + connection.sends_in_flight;
        let patience_out = connection
            .closing_since
            .is_some_and(|since| since.elapsed() >= FLUSH_PATIENCE);
        if unflushed > 0 && !patience_out {
            return;
        }
        let Some(qp) = connection.qp.take() else {
            return;
        };
        let id = ConnectionId {
            slot: slot as u16,
            generation: connection.generation,
        };
        match self.to_cm.push(ToCm::Retire { id, qp, unflushed }) {
            Ok(()) => connection.state = SlotState::Retiring,
            Err(ToCm::Retire { qp, .. }) => {
                // Tried again on the next maintain.
                connection.qp = Some(qp);
                self.counters.queue_full += 1;
            }
            Err(_) => unreachable!("the queue gives back what it refused"),
        }
    }

    /// The cm thread destroyed a retired slot's QP: what was still posted to it comes
    /// back, and the slot is free.
    fn on_retired(&mut self, id: ConnectionId, destroyed: Option<DestroyedQp>) {
        let slot = usize::from(id.slot);
        let per_connection = self.buffers_per_connection();
        let connection = &mut self.connections[slot];
        if connection.generation != id.generation || connection.state != SlotState::Retiring {
            return;
        }
        if let Some(destroyed) = destroyed {
            let first = slot * per_connection;
            let reclaimed = self
                .buffers
                .reclaim(&destroyed, first..first + per_connection);
            self.counters.buffers_reclaimed += reclaimed as u64;
            connection.posted_recvs = 0;
            connection.sends_in_flight = 0;
        }
        connection.state = SlotState::Free;
        connection.free_sends.clear();
        connection.peer = None;
        connection.closing_since = None;
        self.counters.connections_closed += 1;
    }

    /// The drain timer: connections prepared, established or closed by the cm thread,
    /// segment registrations, revocations. Returns the work done.
    pub fn maintain(&mut self, service: &mut Service, now: Instant) -> usize {
        let mut work = 0;
        while let Some(message) = self.to_lcore.pop() {
            work += 1;
            match message {
                ToLcore::Prepare { id, qp, peer } => self.prepare(id, qp, peer),
                ToLcore::Established(id) => {
                    if self.connections[usize::from(id.slot)].generation == id.generation {
                        self.counters.connections_opened += 1;
                    }
                }
                ToLcore::Closed(id) => {
                    let slot = usize::from(id.slot);
                    let connection = &mut self.connections[slot];
                    if connection.generation == id.generation {
                        if connection.state == SlotState::Open {
                            forget_answers(service, id.slot);
                        }
                        if matches!(
                            connection.state,
                            SlotState::Open | SlotState::Closing { .. }
                        ) {
                            connection.state = SlotState::Closing { cm_closed: true };
                            // The QP is in the error state from now on: flushes follow.
                            connection.closing_since = Some(now);
                        }
                        self.retire_if_idle(slot);
                    }
                }
                ToLcore::Retired { id, destroyed } => self.on_retired(id, destroyed),
                ToLcore::Registered {
                    slot,
                    rkey,
                    remote_addr,
                } => {
                    if let Some(registration) = &mut self.registrations[slot as usize] {
                        if registration.state == RegistrationState::Registering {
                            registration.state = RegistrationState::Ready { rkey, remote_addr };
                            self.counters.segment_registrations += 1;
                            if !registration.watermark.is_sealed()
                                && !self.growing.contains(&(slot as u16))
                            {
                                self.growing.push(slot as u16);
                            }
                        }
                    }
                }
                ToLcore::RegisterFailed { slot } => {
                    if self.registrations[slot as usize].take().is_some() {
                        self.registrations_in_use -= 1;
                    }
                }
            }
        }
        // Messages that did not fit the queue before, and retirements that did not.
        for slot in 0..self.connections.len() {
            if let Some(retry) = self.connections[slot].retry.take() {
                let id = ConnectionId {
                    slot: slot as u16,
                    generation: self.connections[slot].generation,
                };
                let message = match retry {
                    ToCmRetry::Prepared => ToCm::Prepared(id),
                    ToCmRetry::PrepareFailed => ToCm::PrepareFailed(id),
                    ToCmRetry::Disconnect => ToCm::Disconnect(id),
                };
                if self.to_cm.push(message).is_err() {
                    self.connections[slot].retry = Some(retry);
                }
            }
            self.retire_if_idle(slot);
        }
        work + self.maintain_registrations(&service.topics, now)
    }

    /// A connect request's QP: post the slot's receives, then let the cm thread accept.
    fn prepare(&mut self, id: ConnectionId, qp: QueuePair, peer: Option<SocketAddr>) {
        let slot = usize::from(id.slot);
        let per_connection = self.buffers_per_connection();
        let first = slot * per_connection;
        let connection = &mut self.connections[slot];
        assert_eq!(
            connection.state,
            SlotState::Free,
            "the cm thread hands out free slots only"
        );
        connection.generation = id.generation;
        connection.peer = peer;
        connection.free_sends.clear();
        connection
            .free_sends
            .extend((first + self.recv_per_connection..first + per_connection).map(|i| i as u32));
        connection.posted_recvs = 0;
        connection.sends_in_flight = 0;
        let mut posted = 0;
        for index in first..first + self.recv_per_connection {
            if self.buffers.post_recv(&qp, index).is_err() {
                break;
            }
            posted += 1;
        }
        let connection = &mut self.connections[slot];
        connection.posted_recvs = posted;
        connection.qp = Some(qp);
        let (message, retry) = if posted as usize == self.recv_per_connection {
            connection.state = SlotState::Open;
            (ToCm::Prepared(id), ToCmRetry::Prepared)
        } else {
            connection.state = SlotState::Closing { cm_closed: false };
            (ToCm::PrepareFailed(id), ToCmRetry::PrepareFailed)
        };
        if self.to_cm.push(message).is_err() {
            self.counters.queue_full += 1;
            self.connections[slot].retry = Some(retry);
        }
    }

    /// Answers a ReadGrant: the registered segment holding the offset, or Busy while it is
    /// being registered, or OffsetOutOfRange with the log's bounds.
    fn grant(
        &mut self,
        service: &mut Service,
        id: ConnectionId,
        request: &FrameHeader,
        grant_request: ReadGrantRequest,
    ) {
        self.counters.read_grants += 1;
        let handle = PartitionHandle(request.partition);
        let Some(log) = service.topics.partition(handle) else {
            let reply = Reply::Error {
                code: ErrorCode::UnknownTopicOrPartition,
                reason: "no such partition",
            };
            return self.reply(service, id, request, reply);
        };
        let span = match log.segment_span(grant_request.offset) {
            Ok(span) => span,
            Err(ReadError::OffsetOutOfRange { start, end, .. }) => {
                let bounds = ReadGrant {
                    high_watermark: end,
                    log_start_offset: start,
                    ..ReadGrant::default()
                };
                return self.send_grant(service, id, request, ErrorCode::OffsetOutOfRange, bounds);
            }
            Err(ReadError::BatchTooLarge { .. }) => unreachable!("segment_span reads no batch"),
        };
        let (high_watermark, log_start_offset) = (log.log_end_offset(), log.log_start_offset());
        let existing = self.registrations.iter().position(|r| {
            r.is_some_and(|r| {
                r.handle == handle && r.base_offset == span.base_offset && r.address == span.address
            })
        });
        let busy = |reason| Reply::Error {
            code: ErrorCode::Busy,
            reason,
        };
        let Some(slot) = existing else {
            // Register it (on the cm thread); the client asks again.
            let Some(free) = self.registrations.iter().position(Option::is_none) else {
                self.counters.read_grants_busy += 1;
                return self.reply(
                    service,
                    id,
                    request,
                    busy("too many segments registered for readers"),
                );
            };
            let registration = Registration {
                handle,
                base_offset: span.base_offset,
                address: span.address,
                bytes: span.mapped_bytes,
                state: RegistrationState::Registering,
                watermark: SegmentWatermark::new(span.published_bytes as u64, !span.active),
                last_granted: Instant::now(),
            };
            let source = match span.file {
                // Allocates a path: once per registration of a persisted segment.
                Some(path) => SegmentSource::File {
                    path: path.to_path_buf(),
                    bytes: span.mapped_bytes,
                },
                None => SegmentSource::Memory {
                    address: span.address,
                    bytes: span.mapped_bytes,
                },
            };
            let message = ToCm::Register {
                slot: free as u32,
                source,
            };
            if self.to_cm.push(message).is_ok() {
                self.write_watermark(free, registration.watermark);
                self.registrations[free] = Some(registration);
                self.registrations_in_use += 1;
            } else {
                self.counters.queue_full += 1;
            }
            self.counters.read_grants_busy += 1;
            return self.reply(
                service,
                id,
                request,
                busy("registering the segment for reads, ask again"),
            );
        };
        let registration = self.registrations[slot].expect("found above");
        let RegistrationState::Ready { rkey, remote_addr } = registration.state else {
            self.counters.read_grants_busy += 1;
            return self.reply(
                service,
                id,
                request,
                busy("registering the segment for reads, ask again"),
            );
        };
        let watermark = SegmentWatermark::new(span.published_bytes as u64, !span.active);
        if watermark != registration.watermark {
            self.write_watermark(slot, watermark);
        }
        if let Some(r) = &mut self.registrations[slot] {
            r.watermark = watermark;
            r.last_granted = Instant::now();
        }
        let grant = ReadGrant {
            segment_addr: remote_addr,
            segment_bytes: registration.bytes as u64,
            segment_base_offset: span.base_offset,
            position: span.position as u64,
            watermark_addr: self.watermarks.addr() + (slot * 8) as u64,
            segment_rkey: rkey,
            watermark_rkey: self.watermarks.rkey(),
            committed: watermark,
            high_watermark,
            log_start_offset,
        };
        self.send_grant(service, id, request, ErrorCode::None, grant);
    }

    fn send_grant(
        &mut self,
        service: &mut Service,
        id: ConnectionId,
        request: &FrameHeader,
        code: ErrorCode,
        grant: ReadGrant,
    ) {
        if code != ErrorCode::None {
            service.counters.count_error(code);
        }
        let request = *request;
        self.send_with(service, id, move |_, buf| {
            let header = FrameHeader {
                opcode: Opcode::ReadGrantResponse,
                flags: 0,
                error: code as u16,
                session: request.session,
                request_id: request.request_id,
                partition: request.partition,
                length: ReadGrant::BYTES as u32,
            };
            header.encode(&mut buf[..FRAME_HEADER_BYTES]);
            grant.encode(&mut buf[FRAME_HEADER_BYTES..FRAME_HEADER_BYTES + ReadGrant::BYTES]);
            FRAME_HEADER_BYTES + ReadGrant::BYTES
        });
    }

    fn write_watermark(&mut self, slot: usize, watermark: SegmentWatermark) {
        self.watermarks
            .write(slot * 8, &watermark.0.to_le_bytes())
            .expect("the slot is inside the watermark region");
    }

    /// Every iteration: the committed bytes of each granted segment that still grows.
    /// One lookup per such segment; nothing when no reader holds a grant.
    fn publish_watermarks(&mut self, topics: &TopicTable) -> usize {
        let mut changed = 0;
        let mut i = 0;
        while i < self.growing.len() {
            let slot = usize::from(self.growing[i]);
            let still_growing = self.registrations[slot].is_some_and(|r| {
                matches!(r.state, RegistrationState::Ready { .. }) && !r.watermark.is_sealed()
            });
            if !still_growing {
                self.growing.swap_remove(i);
                continue;
            }
            i += 1;
            let registration = self.registrations[slot].expect("checked above");
            let current = topics
                .partition(registration.handle)
                .and_then(|log| log.segment_span(registration.base_offset).ok())
                .filter(|span| {
                    span.address == registration.address
                        && span.base_offset == registration.base_offset
                });
            let Some(span) = current else {
                continue; // revoked on the drain timer
            };
            let watermark = SegmentWatermark::new(span.published_bytes as u64, !span.active);
            if watermark != registration.watermark {
                self.write_watermark(slot, watermark);
                if let Some(r) = &mut self.registrations[slot] {
                    r.watermark = watermark;
                }
                changed += 1;
            }
        }
        changed
    }

    /// The drain timer: revokes registrations whose segment memory went away, drops those
    /// revoked for longer than [`REVOKE_GRACE`].
    fn maintain_registrations(&mut self, topics: &TopicTable, now: Instant) -> usize {
        let mut work = 0;
        if self.registrations_in_use == 0 {
            return 0;
        }
        for slot in 0..self.registrations.len() {
            let Some(registration) = self.registrations[slot] else {
                continue;
            };
            match registration.state {
                RegistrationState::Registering => {}
                RegistrationState::Ready { .. } => {
                    let alive = topics
                        .partition(registration.handle)
                        .and_then(|log| log.segment_span(registration.base_offset).ok())
                        .is_some_and(|span| {
                            span.address == registration.address
                                && span.base_offset == registration.base_offset
                        });
                    let idle = registration.watermark.is_sealed()
                        && now.duration_since(registration.last_granted) >= IDLE_REVOKE;
                    if !alive || idle {
                        self.write_watermark(slot, SegmentWatermark::revoked());
                        if let Some(r) = &mut self.registrations[slot] {
                            r.state = RegistrationState::Revoked { since: now };
                            r.watermark = SegmentWatermark::revoked();
                        }
                        self.counters.segment_revocations += 1;
                        work += 1;
                    }
                }
                RegistrationState::Revoked { since } => {
                    if now.duration_since(since) >= REVOKE_GRACE
                        && self
                            .to_cm
                            .push(ToCm::Deregister { slot: slot as u32 })
                            .is_ok()
                    {
                        self.registrations[slot] = None;
                        self.registrations_in_use -= 1;
                        work += 1;
                    }
                }
            }
        }
        work
    }
}

impl Drop for RdmaTransport {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.cm_thread.take() {
            let _ = thread.join();
        }
        // The QPs (and through them their ids) go with the connections, then the buffers
        // and CQs they name: every device access to the buffers ends with the QPs.
    }
}

fn forget_answers(service: &mut Service, slot: u16) {
    service.forget_answers_to(
        |to| matches!(to, ReplyTo::Rdma { connection, .. } if *connection == slot),
    );
}

/// The cm thread's view of a slot.
enum CmSlot {
    Free,
    /// QP handed to the lcore, waiting for Prepared.
    Preparing(CmId),
    /// Accepted, waiting for ESTABLISHED.
    Accepted(CmId),
    Established(CmId),
    /// Closed sent to the lcore, waiting for its Retire.
    Closing(CmId),
}

impl CmSlot {
    fn id(&self) -> Option<&CmId> {
        match self {
            CmSlot::Free => None,
            CmSlot::Preparing(id)
            | CmSlot::Accepted(id)
            | CmSlot::Established(id)
            | CmSlot::Closing(id) => Some(id),
        }
    }
}

/// Everything that may block: connection management and memory registration.
struct CmThread {
    channel: EventChannel,
    /// Listening while it lives.
    _listener: CmId,
    pd: ProtectionDomain,
    send_cq: CompletionQueue,
    recv_cq: CompletionQueue,
    caps: QpCaps,
    hello: RdmaHello,
    slots: Vec<CmSlot>,
    generations: Vec<u32>,
    /// Peers of the slots' connections (for the log).
    peers: Vec<Option<SocketAddr>>,
    /// Whether the slot's connection got to ESTABLISHED (logged open, so logged closed).
    established: Vec<bool>,
    /// Segment registrations by watermark slot.
    regions: HashMap<u32, ReadableRegion>,
    to_lcore: Arc<ArrayQueue<ToLcore>>,
    to_cm: Arc<ArrayQueue<ToCm>>,
    stop: Arc<AtomicBool>,
}

impl CmThread {
    fn run(mut self) {
        // Spawned after rte_eal_init, this thread inherited the lcore's pinning.
        if let Err(error) = precursor_ffi::unpin_current_thread() {
            eprintln!("precursor-dataplane: RDMA cm thread stays pinned: {error}");
        }
        while !self.stop.load(Ordering::Acquire) {
            match self.channel.next_event(CM_POLL_INTERVAL) {
                Ok(Some(event)) => self.on_event(event),
                Ok(None) => {}
                Err(error) => {
                    eprintln!("precursor-dataplane: RDMA connection events: {error}");
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
            while let Some(message) = self.to_cm.pop() {
                self.on_message(message);
            }
        }
        // Shutting down: tell the peers (their QPs flush); ids go with the lcore's QPs.
        for slot in &self.slots {
            if let Some(id) = slot.id() {
                let _ = id.disconnect();
            }
        }
        while let Some(message) = self.to_cm.pop() {
            drop(message);
        }
    }

    fn push(&self, message: ToLcore) {
        if self.to_lcore.push(message).is_err() {
            // Sized for every slot's messages: cannot happen.
            eprintln!("precursor-dataplane: RDMA: lcore queue full, a connection message was lost");
        }
    }

    fn on_event(&mut self, event: CmEvent) {
        match event.kind {
            CmEventKind::ConnectRequest => self.on_connect_request(event),
            CmEventKind::Established => {
                let id = ConnectionId::from_token(event.token);
                if let Some(slot) = self.slot_of(id) {
                    let state = std::mem::replace(&mut self.slots[slot], CmSlot::Free);
                    self.slots[slot] = match state {
                        CmSlot::Accepted(cm_id) => {
                            // A SEND that finds no receive posted is retried in 10 us,
                            // not in the 655 ms the connection manager leaves.
                            if let Err(error) = cm_id.set_min_rnr_timer(RNR_TIMER_CODE) {
                                eprintln!("precursor-dataplane: RDMA: {error}");
                            }
                            self.push(ToLcore::Established(id));
                            self.established[slot] = true;
                            eprintln!(
                                "precursor-dataplane: RDMA: connection {}.{} from {} established",
                                id.slot,
                                id.generation,
                                self.peers[slot].map_or("?".to_string(), |p| p.to_string())
                            );
                            CmSlot::Established(cm_id)
                        }
                        other => other,
                    };
                }
            }
            CmEventKind::Disconnected
            | CmEventKind::ConnectError
            | CmEventKind::Unreachable
            | CmEventKind::Rejected => {
                let id = ConnectionId::from_token(event.token);
                if let Some(slot) = self.slot_of(id) {
                    self.close(slot, id);
                }
            }
            CmEventKind::DeviceRemoval => {
                eprintln!(
                    "precursor-dataplane: RDMA device removed: closing every connection; restart the data plane to listen again"
                );
                for slot in 0..self.slots.len() {
                    let id = ConnectionId {
                        slot: slot as u16,
                        generation: self.generations[slot],
                    };
                    self.close(slot, id);
                }
            }
            _ => {}
        }
    }

    fn slot_of(&self, id: ConnectionId) -> Option<usize> {
        let slot = usize::from(id.slot);
        (slot < self.slots.len() && self.generations[slot] == id.generation).then_some(slot)
    }

    fn reject(id: &CmId, peer: Option<SocketAddr>, reason: &str) {
        eprintln!(
            "precursor-dataplane: RDMA connection from {} rejected: {reason}",
            peer.map_or("?".to_string(), |p| p.to_string())
        );
        let mut data = [0u8; 4 + RDMA_REJECT_REASON_BYTES_MAX];
        let len = encode_reject(reason, &mut data);
        let _ = id.reject(&data[..len]);
    }

    fn on_connect_request(&mut self, event: CmEvent) {
        let Some(cm_id) = event.request else {
            return;
        };
        let hello = match RdmaHello::decode(event.private_data.as_bytes()) {
            Ok(hello) => hello,
            Err(error) => return Self::reject(&cm_id, event.peer, &error.to_string()),
        };
        if hello.buffer_bytes < self.hello.buffer_bytes {
            let reason = format!(
                "client buffers of {} bytes, frames are up to {}",
                hello.buffer_bytes, self.hello.buffer_bytes
            );
            return Self::reject(&cm_id, event.peer, &reason);
        }
        let Some(slot) = self.slots.iter().position(|s| matches!(s, CmSlot::Free)) else {
            let reason = format!("connections_max ({}) reached", self.slots.len());
            return Self::reject(&cm_id, event.peer, &reason);
        };
        self.generations[slot] = self.generations[slot].wrapping_add(1);
        let id = ConnectionId {
            slot: slot as u16,
            generation: self.generations[slot],
        };
        cm_id.set_token(id.token());
        let qp = match cm_id.create_qp(&self.pd, &self.send_cq, &self.recv_cq, self.caps) {
            Ok(qp) => qp,
            Err(error) => {
                return Self::reject(&cm_id, event.peer, &format!("cannot create a QP: {error}"))
            }
        };
        self.slots[slot] = CmSlot::Preparing(cm_id);
        self.peers[slot] = event.peer;
        self.push(ToLcore::Prepare {
            id,
            qp,
            peer: event.peer,
        });
    }

    /// Moves the slot's QP to the error state (flushing its work requests), and tells the
    /// lcore, which retires the QP once every buffer is back.
    fn close(&mut self, slot: usize, id: ConnectionId) {
        let state = std::mem::replace(&mut self.slots[slot], CmSlot::Free);
        self.slots[slot] = match state {
            CmSlot::Preparing(cm_id) | CmSlot::Accepted(cm_id) | CmSlot::Established(cm_id) => {
                // Fails harmlessly for a connection that was never up; the QP still goes
                // to the error state (librdmacm does that first).
                let _ = cm_id.disconnect();
                self.push(ToLcore::Closed(id));
                CmSlot::Closing(cm_id)
            }
            other => other,
        };
    }

    fn on_message(&mut self, message: ToCm) {
        match message {
            ToCm::Prepared(id) => {
                let Some(slot) = self.slot_of(id) else {
                    return;
                };
                let state = std::mem::replace(&mut self.slots[slot], CmSlot::Free);
                self.slots[slot] = match state {
                    CmSlot::Preparing(cm_id) => {
                        let hello = self.hello.encode();
                        let params = ConnParams {
                            private_data: &hello,
                            ..ConnParams::default()
                        };
                        match cm_id.accept(&params) {
                            Ok(()) => CmSlot::Accepted(cm_id),
                            Err(error) => {
                                eprintln!("precursor-dataplane: RDMA accept failed: {error}");
                                self.slots[slot] = CmSlot::Preparing(cm_id);
                                self.close(slot, id);
                                return;
                            }
                        }
                    }
                    other => other,
                };
            }
            ToCm::PrepareFailed(id) => {
                if let Some(slot) = self.slot_of(id) {
                    if let Some(cm_id) = self.slots[slot].id() {
                        Self::reject(cm_id, None, "cannot post receive buffers");
                    }
                    self.close(slot, id);
                }
            }
            ToCm::Disconnect(id) => {
                if let Some(slot) = self.slot_of(id) {
                    self.close(slot, id);
                }
            }
            ToCm::Retire { id, qp, unflushed } => {
                let Some(slot) = self.slot_of(id) else {
                    drop(qp);
                    return;
                };
                let was = std::mem::replace(&mut self.slots[slot], CmSlot::Free);
                let destroyed = match was {
                    CmSlot::Closing(cm_id) => match cm_id.destroy(qp) {
                        Ok(destroyed) => Some(destroyed),
                        Err((cm_id, qp)) => {
                            eprintln!("precursor-dataplane: RDMA: connection {}.{}: its QP is not its id's; destroyed without reclaiming", id.slot, id.generation);
                            drop(qp);
                            drop(cm_id);
                            None
                        }
                    },
                    other => {
                        drop(qp);
                        self.slots[slot] = other;
                        None
                    }
                };
                if unflushed > 0 {
                    eprintln!(
                        "precursor-dataplane: RDMA: connection {}.{}: {unflushed} work requests were not flushed {} s after the disconnect (a device that does not flush on error); taken back with the QP's destruction",
                        id.slot,
                        id.generation,
                        FLUSH_PATIENCE.as_secs()
                    );
                }
                if self.established[slot] {
                    eprintln!(
                        "precursor-dataplane: RDMA: connection {}.{} closed",
                        id.slot, id.generation
                    );
                }
                self.established[slot] = false;
                // Before any later Prepare of this slot (one queue, in order).
                self.push(ToLcore::Retired { id, destroyed });
            }
            ToCm::Register { slot, source } => {
                let registered = match &source {
                    SegmentSource::Memory { address, bytes } => {
                        ReadableRegion::register(&self.pd, *address, *bytes)
                    }
                    SegmentSource::File { path, bytes } => {
                        ReadableRegion::register_file(&self.pd, path, *bytes)
                    }
                };
                match registered {
                    Ok(region) => {
                        let (rkey, remote_addr) = (region.rkey(), region.addr());
                        self.regions.insert(slot, region);
                        self.push(ToLcore::Registered {
                            slot,
                            rkey,
                            remote_addr,
                        });
                    }
                    Err(error) => {
                        let what = match &source {
                            SegmentSource::Memory { address, bytes } => {
                                format!("{bytes} bytes of memory at {address:#x}")
                            }
                            SegmentSource::File { path, bytes } => {
                                format!("{bytes} bytes of {}", path.display())
                            }
                        };
                        eprintln!(
                            "precursor-dataplane: RDMA: cannot register a segment ({what}) for readers: {error}"
                        );
                        self.push(ToLcore::RegisterFailed { slot });
                    }
                }
            }
            ToCm::Deregister { slot } => {
                self.regions.remove(&slot);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_tokens_name_slot_and_generation() {
        let id = ConnectionId {
            slot: 1023,
            generation: u32::MAX - 1,
        };
        assert_eq!(ConnectionId::from_token(id.token()), id);
        assert_ne!(id.token(), LISTENER_TOKEN);
        assert_eq!(
            id.reply_to(),
            ReplyTo::Rdma {
                connection: 1023,
                generation: u32::MAX - 1
            }
        );
    }

    #[test]
    fn counters_are_one_json_object() {
        let counters = RdmaCounters {
            frames_received: 7,
            buffers_reclaimed: 3,
            ..RdmaCounters::default()
        };
        let json = counters.to_json();
        assert!(json.starts_with('{') && json.ends_with('}'), "{json}");
        assert!(json.contains("\"frames_received\":7"), "{json}");
        assert!(json.contains("\"buffers_reclaimed\":3"), "{json}");
        assert_eq!(json.matches(':').count(), 15, "every counter once: {json}");
    }

    /// On a host without RDMA (ours) the transport refuses to start with a reason that
    /// says where RDMA runs, before anything else is set up.
    #[test]
    fn start_without_rdma_says_why() {
        if std::path::Path::new("/sys/class/infiniband").exists() {
            eprintln!("skipped: this kernel has RDMA (the error path is for hosts without)");
            return;
        }
        let config = RdmaConfig {
            enabled: true,
            ..RdmaConfig::default()
        };
        let error = RdmaTransport::start(&config).err().expect("no RDMA here");
        let text = error.to_string();
        assert!(text.contains("10.0.0.1:9191"), "{text}");
        assert!(text.contains("no RDMA subsystem"), "{text}");
        assert!(text.contains("ci/rdma-guest.sh"), "{text}");
    }
}
