//! The RDMA transport's client end (feature `rdma`): one reliable-connected queue pair to
//! the data plane, set up with rdma_cm; native frames travel one per SEND, answers come
//! back as SENDs into pre-posted receive buffers; and [`RdmaReader`] reads a partition's
//! log with one-sided RDMA READs, the broker's CPU out of the path.
//!
//! - [`RdmaSession`]: the frame-level API (connect, send, poll, READ). The producer and
//!   the consumer use it through the crate's transport when `ClientConfig::transport` is
//!   [`TransportKind::Rdma`](crate::TransportKind).
//! - [`RdmaReader`]: asks once for a read grant of the segment holding its position
//!   ([`Opcode::ReadGrant`]), then READs the segment's committed-bytes word and the whole
//!   batches below it, never past it; CRCs are checked as for fetched batches; a sealed
//!   segment leads to the next grant.
//!
//! Flow control: the broker announces its receive buffers per connection in its accept;
//! this side keeps at most that many SENDs outstanding (its send buffers), and keeps its
//! own receives posted for the answers. Everything here may block (connect, waits) and
//! polls completion queues without a completion channel.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use precursor_ffi::verbs::{
    BufferOp, CmEvent, CmEventKind, CmId, CompletionQueue, ConnParams, EventChannel,
    MessageBuffers, ProtectionDomain, QpCaps, QueuePair, RemoteAddr, VerbsError, WorkCompletion,
};
use precursor_protocol::frame::{
    decode_frame, ErrorCode, FrameHeader, MetadataRequest, MetadataResponse, Opcode,
    PartitionHandle, ReadGrant, ReadGrantRequest, SegmentWatermark, FRAME_HEADER_BYTES,
};
use precursor_protocol::rdma::{decode_reject, RdmaHello};
use precursor_protocol::record_batch::{batches, records, BatchError};

use crate::consumer::position_after_batch;
use crate::{ClientError, ConsumedRecord};

/// The data plane's RDMA address in the soft-RoCE test guest (`[rdma]` defaults).
pub const DEFAULT_RDMA_BROKER: &str = "10.0.0.1:9191";

/// The receiver-not-ready timer this side's QP advertises: 0.01 ms (IB encoding).
const RNR_TIMER_CODE: u8 = 1;
/// Answers larger than this are not sent inline.
const INLINE_BYTES_MAX: u32 = 256;
/// How often an idle poll looks for a DISCONNECTED event (a syscall).
const EVENT_CHECK_INTERVAL: Duration = Duration::from_millis(20);

/// How to reach the data plane over RDMA.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RdmaConfig {
    /// The data plane's `[rdma]` address and port (rdma_cm).
    pub broker: SocketAddr,
    /// Receives kept posted for answers.
    pub recv_buffers: u32,
    /// Bytes of each buffer: at least the broker's `rdma.buffer_bytes` (it refuses smaller).
    pub buffer_bytes: u32,
    /// Address and route resolution, and the connection, each within this.
    pub connect_timeout_ms: u64,
    /// Bytes one RDMA READ of [`RdmaReader`] brings at most.
    pub read_bytes_max: u32,
}

impl RdmaConfig {
    pub fn new(broker: SocketAddr) -> RdmaConfig {
        RdmaConfig {
            broker,
            recv_buffers: 64,
            buffer_bytes: 9216,
            connect_timeout_ms: 2_000,
            read_bytes_max: 64 << 10,
        }
    }
}

fn unavailable(broker: SocketAddr, what: &str, error: impl std::fmt::Display) -> ClientError {
    ClientError::RdmaUnavailable {
        broker,
        reason: format!("{what}: {error}"),
    }
}

fn lost(broker: SocketAddr, reason: impl Into<String>) -> ClientError {
    ClientError::RdmaConnectionLost {
        broker,
        reason: reason.into(),
    }
}

/// Polls with spin, then yield, then short naps.
#[derive(Default)]
struct Idle {
    rounds: u32,
}

impl Idle {
    fn idle(&mut self) {
        self.rounds = self.rounds.saturating_add(1);
        if self.rounds <= 2_000 {
            std::hint::spin_loop();
        } else if self.rounds <= 2_200 {
            std::thread::yield_now();
        } else {
            std::thread::sleep(Duration::from_micros(50));
        }
    }
}

/// One connection to the data plane, at the level of native frames.
pub struct RdmaSession {
    config: RdmaConfig,
    server: RdmaHello,
    // Field order is drop order: the QP before the buffers its work requests name, the
    // id (kept alive by the QP) before the channel.
    qp: QueuePair,
    id: CmId,
    channel: EventChannel,
    recv_cq: CompletionQueue,
    send_cq: CompletionQueue,
    /// Receives at [0, recv), sends at [recv, recv + send).
    buffers: MessageBuffers,
    /// One READ bounce buffer and one 64-byte buffer for watermark words.
    reads: MessageBuffers,
    words: MessageBuffers,
    recv_count: usize,
    free_sends: Vec<usize>,
    /// Received buffers the caller has not taken yet, in arrival order.
    ready: VecDeque<usize>,
    wcs: Vec<WorkCompletion>,
    next_request_id: u64,
    /// Why the connection is unusable, once it is.
    failure: Option<String>,
    last_event_check: Instant,
}

impl std::fmt::Debug for RdmaSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RdmaSession")
            .field("broker", &self.config.broker)
            .field("qp_num", &self.qp.qp_num())
            .field("server", &self.server)
            .field("failure", &self.failure)
            .finish()
    }
}

fn wait_event(
    channel: &EventChannel,
    want: CmEventKind,
    deadline: Instant,
    broker: SocketAddr,
    what: &str,
) -> Result<CmEvent, ClientError> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(unavailable(broker, what, "timed out (is the data plane's [rdma] enabled, and this the address of its RDMA device?)"));
        }
        let event = channel
            .next_event(left.min(Duration::from_millis(100)))
            .map_err(|e| unavailable(broker, what, e))?;
        let Some(event) = event else {
            continue;
        };
        if event.kind == want {
            return Ok(event);
        }
        if event.kind == CmEventKind::Rejected {
            let reason = decode_reject(event.private_data.as_bytes())
                .map(str::to_string)
                .unwrap_or_else(|| {
                    format!(
                        "no reason given (status {}): nothing listens there?",
                        event.status
                    )
                });
            return Err(unavailable(broker, "rejected by the data plane", reason));
        }
        return Err(unavailable(
            broker,
            what,
            format!("{} (status {})", event.kind.name(), event.status),
        ));
    }
}

impl RdmaSession {
    /// Resolves the broker's address, creates the QP, posts the receives, connects, and
    /// waits for the accept (blocking; connection set-up only).
    pub fn connect(config: &RdmaConfig) -> Result<RdmaSession, ClientError> {
        let broker = config.broker;
        let verbs = |what: &'static str| move |e: VerbsError| unavailable(broker, what, e);
        let timeout = Duration::from_millis(config.connect_timeout_ms);
        let channel = EventChannel::new().map_err(verbs("rdma_cm"))?;
        let id = channel.create_id(1).map_err(verbs("rdma_cm id"))?;
        id.resolve_addr(broker, timeout)
            .map_err(verbs("resolving the address"))?;
        wait_event(
            &channel,
            CmEventKind::AddrResolved,
            Instant::now() + timeout,
            broker,
            "resolving the address",
        )?;
        id.resolve_route(timeout)
            .map_err(verbs("resolving the route"))?;
        wait_event(
            &channel,
            CmEventKind::RouteResolved,
            Instant::now() + timeout,
            broker,
            "resolving the route",
        )?;
        let ctx = id.context().map_err(verbs("the RDMA device"))?;
        let pd = ProtectionDomain::new(&ctx).map_err(verbs("protection domain"))?;
        let recv = config.recv_buffers.max(1) as usize;
        // As many sends as the broker may announce receives (the accept says how many it
        // has; at most that many are used).
        let send = recv;
        let recv_cq = CompletionQueue::new(&ctx, recv as u32).map_err(verbs("completion queue"))?;
        let send_cq =
            CompletionQueue::new(&ctx, (send + 2) as u32).map_err(verbs("completion queue"))?;
        let buffer_bytes = (config.buffer_bytes as usize).next_multiple_of(64);
        let buffers = MessageBuffers::new(&pd, recv + send, buffer_bytes, false)
            .map_err(verbs("message buffers"))?;
        let read_bytes = (config.read_bytes_max as usize).next_multiple_of(64);
        let reads = MessageBuffers::new(&pd, 1, read_bytes, false).map_err(verbs("read buffer"))?;
        let words = MessageBuffers::new(&pd, 1, 64, false).map_err(verbs("read buffer"))?;
        let caps = QpCaps {
            max_send_wr: (send + 2) as u32,
            max_recv_wr: recv as u32,
            max_send_sge: 1,
            max_recv_sge: 1,
            max_inline_data: INLINE_BYTES_MAX,
        };
        let qp = id
            .create_qp(&pd, &send_cq, &recv_cq, caps)
            .map_err(verbs("queue pair"))?;
        let mut session = RdmaSession {
            config: config.clone(),
            server: RdmaHello {
                buffer_bytes: 0,
                recv_buffers: 0,
            },
            qp,
            id,
            channel,
            recv_cq,
            send_cq,
            buffers,
            reads,
            words,
            recv_count: recv,
            free_sends: Vec::with_capacity(send),
            ready: VecDeque::with_capacity(recv),
            wcs: vec![WorkCompletion::default(); recv.max(send) + 2],
            next_request_id: 1,
            failure: None,
            last_event_check: Instant::now(),
        };
        for index in 0..recv {
            session
                .buffers
                .post_recv(&session.qp, index)
                .map_err(verbs("posting receives"))?;
        }
        let hello = RdmaHello {
            buffer_bytes: buffer_bytes as u32,
            recv_buffers: recv as u32,
        }
        .encode();
        session
            .id
            .connect(&ConnParams {
                private_data: &hello,
                ..ConnParams::default()
            })
            .map_err(verbs("connecting"))?;
        let established = wait_event(
            &session.channel,
            CmEventKind::Established,
            Instant::now() + timeout,
            broker,
            "connecting",
        )?;
        let server = RdmaHello::decode(established.private_data.as_bytes())
            .map_err(|e| unavailable(broker, "the data plane's accept", e))?;
        if server.buffer_bytes as usize > buffer_bytes {
            return Err(unavailable(
                broker,
                "the data plane's accept",
                format!(
                    "it sends frames of up to {} bytes, this client's buffers hold {buffer_bytes}",
                    server.buffer_bytes
                ),
            ));
        }
        session.server = server;
        let sends = (server.recv_buffers as usize).clamp(1, send);
        session.free_sends.extend((recv..recv + sends).rev());
        session
            .qp
            .set_min_rnr_timer(RNR_TIMER_CODE)
            .map_err(verbs("receiver-not-ready timer"))?;
        Ok(session)
    }

    pub fn config(&self) -> &RdmaConfig {
        &self.config
    }

    /// The largest frame (header included) either side sends: the broker's buffers.
    pub fn frame_bytes_max(&self) -> usize {
        self.server.buffer_bytes as usize
    }

    /// Requests this side may have in flight towards the broker (its receive buffers).
    pub fn sends_max(&self) -> usize {
        self.server.recv_buffers as usize
    }

    /// A fresh request id (never 0).
    pub fn next_request_id(&mut self) -> u64 {
        let id = self.next_request_id;
        self.next_request_id = self.next_request_id.wrapping_add(1).max(1);
        id
    }

    fn check(&self) -> Result<(), ClientError> {
        match &self.failure {
            Some(reason) => Err(lost(self.config.broker, reason.clone())),
            None => Ok(()),
        }
    }

    fn fail(&mut self, reason: String) -> ClientError {
        if self.failure.is_none() {
            self.failure = Some(reason);
        }
        lost(self.config.broker, self.failure.clone().expect("set above"))
    }

    /// Takes send-side completions (SENDs and READs): their buffers come back.
    fn reap_sends(&mut self) -> Result<(), ClientError> {
        let n = match self.send_cq.poll(&mut self.wcs) {
            Ok(n) => n,
            Err(e) => return Err(self.fail(format!("polling the send queue: {e}"))),
        };
        for i in 0..n {
            let wc = self.wcs[i];
            if let Some(done) = self.buffers.complete(&wc) {
                self.free_sends.push(done.index);
                if !done.is_success() {
                    return Err(self.fail(format!(
                        "a SEND failed: {} (the QP is in the error state)",
                        wc.status_text()
                    )));
                }
            } else if let Some(done) = self
                .reads
                .complete(&wc)
                .or_else(|| self.words.complete(&wc))
            {
                if !done.is_success() {
                    return Err(self.fail(format!(
                        "an RDMA READ failed: {} (outside the registration, or the grant was revoked; the QP is in the error state)",
                        wc.status_text()
                    )));
                }
            }
        }
        Ok(())
    }

    /// Queues one frame for the broker. `Ok(false)` when every send buffer is in flight
    /// (the broker has not taken them yet): poll, then retry.
    pub fn try_send_frame(&mut self, frame: &[u8]) -> Result<bool, ClientError> {
        if frame.len() > self.frame_bytes_max() {
            return Err(ClientError::Usage(format!(
                "frame of {} bytes: the data plane's RDMA buffers take {}",
                frame.len(),
                self.frame_bytes_max()
            )));
        }
        self.try_send_bytes(frame)
    }

    /// As [`RdmaSession::try_send_frame`] without the broker's frame limit (this side's
    /// buffer size still applies): bytes larger than the broker's receive buffers make its
    /// receive fail and its QP go to the error state. For tests of that path.
    pub fn try_send_bytes(&mut self, frame: &[u8]) -> Result<bool, ClientError> {
        self.check()?;
        if frame.len() > self.buffers.buffer_bytes() {
            return Err(ClientError::Usage(format!(
                "{} bytes: this session's buffers take {}",
                frame.len(),
                self.buffers.buffer_bytes()
            )));
        }
        if self.free_sends.is_empty() {
            self.reap_sends()?;
        }
        let Some(index) = self.free_sends.pop() else {
            return Ok(false);
        };
        let filled = self.buffers.fill(index, |buf| {
            buf[..frame.len()].copy_from_slice(frame);
            frame.len()
        });
        let posted = filled.and_then(|_| self.buffers.post_send(&self.qp, index, true));
        if let Err(e) = posted {
            self.free_sends.push(index);
            return Err(self.fail(format!("posting a SEND: {e}")));
        }
        Ok(true)
    }

    /// Sends one frame, waiting (up to `wait`) for a send buffer when all are in flight.
    pub fn send_frame(&mut self, frame: &[u8], wait: Duration) -> Result<bool, ClientError> {
        let started = Instant::now();
        let mut idle = Idle::default();
        loop {
            if self.try_send_frame(frame)? {
                return Ok(true);
            }
            if started.elapsed() >= wait {
                return Ok(false);
            }
            idle.idle();
        }
    }

    /// Hands up to `max` received frames to `f` (each valid during the call), reposting
    /// their buffers. Returns how many. Never blocks.
    pub fn poll_frames(
        &mut self,
        max: usize,
        mut f: impl FnMut(&[u8]),
    ) -> Result<usize, ClientError> {
        self.check()?;
        self.reap_sends()?;
        if self.ready.is_empty() {
            let limit = self.recv_count.min(self.wcs.len());
            let n = match self.recv_cq.poll(&mut self.wcs[..limit]) {
                Ok(n) => n,
                Err(e) => return Err(self.fail(format!("polling the receive queue: {e}"))),
            };
            for i in 0..n {
                let wc = self.wcs[i];
                let Some(done) = self.buffers.complete(&wc) else {
                    continue;
                };
                debug_assert_eq!(done.op, BufferOp::Recv);
                if !done.is_success() {
                    return Err(self.fail(format!(
                        "a receive failed: {} (the connection is down)",
                        wc.status_text()
                    )));
                }
                self.ready.push_back(done.index);
            }
            if n == 0 && self.last_event_check.elapsed() >= EVENT_CHECK_INTERVAL {
                self.last_event_check = Instant::now();
                self.check_events()?;
            }
        }
        let mut handed = 0;
        while handed < max {
            let Some(index) = self.ready.pop_front() else {
                break;
            };
            f(self
                .buffers
                .data(index)
                .expect("a completed receive belongs to the CPU"));
            handed += 1;
            if let Err(e) = self.buffers.post_recv(&self.qp, index) {
                return Err(self.fail(format!("reposting a receive: {e}")));
            }
        }
        Ok(handed)
    }

    /// A DISCONNECTED (or other) event: the broker closed the connection.
    fn check_events(&mut self) -> Result<(), ClientError> {
        match self.channel.next_event(Duration::ZERO) {
            Ok(Some(event)) if event.kind == CmEventKind::Disconnected => Err(self
                .fail("the data plane disconnected (it stopped, or refused what was sent)".into())),
            Ok(_) => Ok(()),
            Err(e) => Err(self.fail(format!("connection events: {e}"))),
        }
    }

    /// Waits up to `wait` for one frame and hands it to `f`; false when none came.
    pub fn recv_frame(
        &mut self,
        wait: Duration,
        f: impl FnOnce(&[u8]),
    ) -> Result<bool, ClientError> {
        let started = Instant::now();
        let mut idle = Idle::default();
        let mut f = Some(f);
        loop {
            let got = self.poll_frames(1, |frame| (f.take().expect("called once"))(frame))?;
            if got == 1 {
                return Ok(true);
            }
            if started.elapsed() >= wait {
                return Ok(false);
            }
            idle.idle();
        }
    }

    /// Sends a request and waits up to `wait` for the answer with its request id (frames
    /// answering other requests are dropped). For set-up requests (Metadata, ReadGrant).
    pub fn request(
        &mut self,
        mut header: FrameHeader,
        payload: &[u8],
        wait: Duration,
    ) -> Result<(FrameHeader, Vec<u8>), ClientError> {
        header.request_id = self.next_request_id();
        header.length = payload.len() as u32;
        let mut frame = vec![0u8; FRAME_HEADER_BYTES + payload.len()];
        header.encode(&mut frame);
        frame[FRAME_HEADER_BYTES..].copy_from_slice(payload);
        let started = Instant::now();
        if !self.send_frame(&frame, wait)? {
            return Err(lost(self.config.broker, "no send buffer came back in time"));
        }
        let mut answer = None;
        while answer.is_none() {
            let left = wait.saturating_sub(started.elapsed());
            if left.is_zero() {
                return Err(ClientError::Timeout {
                    what: format!("{:?} over RDMA", header.opcode),
                    broker: crate::BrokerAddress::Rdma(self.config.broker),
                    waited_ms: wait.as_millis() as u64,
                    tries: 1,
                });
            }
            self.recv_frame(left, |frame| {
                if let Ok((h, p)) = decode_frame(frame) {
                    if h.request_id == header.request_id {
                        answer = Some((h, p.to_vec()));
                    }
                }
            })?;
        }
        Ok(answer.expect("loop ends with an answer"))
    }

    /// RDMA READs `len` bytes at `remote` into the read buffer and hands them to `f`
    /// (blocking until the READ completes or `wait` passes).
    pub fn read<T>(
        &mut self,
        remote: RemoteAddr,
        len: usize,
        wait: Duration,
        f: impl FnOnce(&[u8]) -> T,
    ) -> Result<T, ClientError> {
        self.check()?;
        // Watermark words have their own small buffer, batches the large one.
        let use_words = len <= 64;
        let pool = if use_words {
            &mut self.words
        } else {
            &mut self.reads
        };
        if len == 0 || len > pool.buffer_bytes() {
            return Err(ClientError::Usage(format!(
                "an RDMA READ of {len} bytes (read_bytes_max is {})",
                self.config.read_bytes_max
            )));
        }
        if let Err(e) = pool.post_read(&self.qp, 0, len, remote) {
            return Err(self.fail(format!("posting an RDMA READ: {e}")));
        }
        let started = Instant::now();
        let mut idle = Idle::default();
        loop {
            self.reap_sends()?;
            let pool = if use_words { &self.words } else { &self.reads };
            if let Some(data) = pool.data(0) {
                if data.len() != len {
                    let brought = data.len();
                    return Err(self.fail(format!("a READ of {len} bytes brought {brought}")));
                }
                return Ok(f(data));
            }
            if started.elapsed() >= wait {
                // The buffer stays posted: the connection cannot be trusted any more.
                return Err(self.fail("an RDMA READ did not complete in time".into()));
            }
            idle.idle();
        }
    }

    /// Moves this side's QP to the error state (for tests of the broker's clean-up and
    /// of this side's error paths): every later call fails with `RdmaConnectionLost`.
    pub fn force_error(&mut self) -> Result<(), ClientError> {
        self.qp
            .set_error()
            .map_err(|e| unavailable(self.config.broker, "moving the QP to the error state", e))?;
        self.failure = Some("the QP was moved to the error state on request".into());
        Ok(())
    }

    /// Disconnects politely (the broker gets DISCONNECTED at once) and waits a little for
    /// the flushed buffers; dropping a session without this disconnects too.
    pub fn disconnect(mut self) {
        let _ = self.id.disconnect();
        let deadline = Instant::now() + Duration::from_millis(500);
        while (self.buffers.device_owned() > 0 || self.reads.device_owned() > 0)
            && Instant::now() < deadline
        {
            let _ = self.reap_sends();
            let n = self.recv_cq.poll(&mut self.wcs).unwrap_or(0);
            for i in 0..n {
                let wc = self.wcs[i];
                let _ = self.buffers.complete(&wc);
            }
        }
    }
}

/// Reads one partition's log with one-sided RDMA READs.
pub struct RdmaReader {
    session: RdmaSession,
    topic: String,
    handle: PartitionHandle,
    /// The next offset to hand out.
    position: u64,
    grant: Option<ReadGrant>,
    /// Byte position in the granted segment of the next batch to read.
    cursor: u64,
    /// Bytes one READ brings at most.
    read_bytes_max: usize,
    wait: Duration,
    /// Grants asked for (the first, after seals and revocations): for tests and stats.
    pub grants: u64,
    /// READs of batches made.
    pub reads: u64,
}

impl std::fmt::Debug for RdmaReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RdmaReader")
            .field("topic", &self.topic)
            .field("partition", &self.handle.partition())
            .field("position", &self.position)
            .field("grant", &self.grant)
            .finish()
    }
}

/// What [`RdmaReader::poll`] found.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct ReadProgress {
    /// Records handed out.
    pub records: usize,
    /// The log end offset the broker last told (grant time), for progress reports.
    pub high_watermark: u64,
}

impl RdmaReader {
    /// Connects, looks the topic up, and starts at `offset` of `partition`.
    pub fn open(
        config: &RdmaConfig,
        topic: &str,
        partition: u16,
        offset: u64,
    ) -> Result<RdmaReader, ClientError> {
        let session = RdmaSession::connect(config)?;
        RdmaReader::with_session(session, topic, partition, offset)
    }

    /// As [`RdmaReader::open`] over an existing session.
    pub fn with_session(
        mut session: RdmaSession,
        topic: &str,
        partition: u16,
        offset: u64,
    ) -> Result<RdmaReader, ClientError> {
        if !precursor_protocol::frame::is_valid_topic_name(topic) {
            return Err(ClientError::InvalidTopic {
                topic: topic.to_string(),
            });
        }
        let wait = Duration::from_millis(session.config.connect_timeout_ms.max(1_000));
        let request = MetadataRequest { topic };
        let mut payload = vec![0u8; request.encoded_len()];
        request.encode(&mut payload);
        let header = FrameHeader::new(Opcode::Metadata, 0, 0, payload.len());
        let (answer, body) = session.request(header, &payload, wait)?;
        if answer.error != 0 || answer.opcode != Opcode::MetadataResponse {
            if answer.error_code() == Some(ErrorCode::UnknownTopicOrPartition) {
                return Err(ClientError::UnknownTopic {
                    topic: topic.to_string(),
                    broker: crate::BrokerAddress::Rdma(session.config.broker),
                });
            }
            return Err(ClientError::from_broker("metadata", answer.error, &body));
        }
        let metadata = MetadataResponse::decode(&body).map_err(|e| ClientError::Protocol {
            detail: format!("metadata response: {e}"),
        })?;
        if partition >= metadata.partition_count {
            return Err(ClientError::UnknownPartition {
                topic: topic.to_string(),
                partition,
                partition_count: metadata.partition_count,
            });
        }
        let read_bytes_max = session.config.read_bytes_max as usize;
        Ok(RdmaReader {
            session,
            topic: topic.to_string(),
            handle: PartitionHandle::new(metadata.topic_id, partition),
            position: offset,
            grant: None,
            cursor: 0,
            read_bytes_max,
            wait,
            grants: 0,
            reads: 0,
        })
    }

    /// The next offset to hand out.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// Reads on from `offset` (the next poll asks for the grant of its segment).
    pub fn seek(&mut self, offset: u64) {
        self.position = offset;
        self.grant = None;
    }

    /// The partition's bounds now: (log start offset, log end offset), asked of the broker
    /// (a grant request beyond any log, answered with the bounds).
    pub fn bounds(&mut self) -> Result<(u64, u64), ClientError> {
        match self.request_grant(u64::MAX) {
            Err(ClientError::OffsetOutOfRange {
                log_start_offset: Some(start),
                high_watermark: Some(end),
                ..
            }) => Ok((start, end)),
            Err(other) => Err(other),
            Ok(_) => Err(ClientError::Protocol {
                detail: "the broker granted a read at offset 2^64-1".into(),
            }),
        }
    }

    pub fn session(&mut self) -> &mut RdmaSession {
        &mut self.session
    }

    /// Asks for a grant of the segment holding `offset` (raw: the answer as the broker
    /// gave it, errors included). Retriable answers (Busy while registering) are retried
    /// here until `wait`.
    pub fn request_grant(&mut self, offset: u64) -> Result<ReadGrant, ClientError> {
        let started = Instant::now();
        loop {
            let mut payload = [0u8; ReadGrantRequest::BYTES];
            ReadGrantRequest { offset }.encode(&mut payload);
            let header = FrameHeader::new(Opcode::ReadGrant, 0, self.handle.0, payload.len());
            let (answer, body) = self.session.request(header, &payload, self.wait)?;
            self.grants += 1;
            let code = answer.error_code();
            if answer.opcode == Opcode::ReadGrantResponse {
                let grant = ReadGrant::decode(&body).map_err(|e| ClientError::Protocol {
                    detail: format!("read grant: {e}"),
                })?;
                if code == Some(ErrorCode::OffsetOutOfRange) {
                    return Err(ClientError::OffsetOutOfRange {
                        partition: self.handle.partition(),
                        offset,
                        log_start_offset: Some(grant.log_start_offset),
                        high_watermark: Some(grant.high_watermark),
                    });
                }
                if answer.error == 0 {
                    return Ok(grant);
                }
            }
            match code {
                Some(c) if c.is_retriable() && started.elapsed() < self.wait => {
                    std::thread::sleep(Duration::from_millis(1));
                }
                _ => {
                    return Err(ClientError::from_broker(
                        format!(
                            "read grant for partition {} of {}",
                            self.handle.partition(),
                            self.topic
                        ),
                        answer.error,
                        &body,
                    ))
                }
            }
        }
    }

    /// READs the word that says how far the granted segment is committed.
    pub fn read_watermark(&mut self, grant: &ReadGrant) -> Result<SegmentWatermark, ClientError> {
        let remote = RemoteAddr {
            addr: grant.watermark_addr,
            rkey: grant.watermark_rkey,
        };
        self.session.read(remote, 8, self.wait, |bytes| {
            SegmentWatermark(u64::from_le_bytes(bytes.try_into().expect("8 bytes")))
        })
    }

    /// READs `len` bytes at `position` of the granted segment (no bounds check here: the
    /// registration is the check; for tests of it).
    pub fn read_segment(
        &mut self,
        grant: &ReadGrant,
        position: u64,
        len: usize,
    ) -> Result<Vec<u8>, ClientError> {
        let remote = RemoteAddr {
            addr: grant.segment_addr + position,
            rkey: grant.segment_rkey,
        };
        self.session.read(remote, len, self.wait, <[u8]>::to_vec)
    }

    /// Reads what is committed from the position on (at most one READ of whole batches):
    /// appends the records to `out`. `records: 0` when nothing new is committed.
    pub fn poll(&mut self, out: &mut Vec<ConsumedRecord>) -> Result<ReadProgress, ClientError> {
        let grant = match self.grant {
            Some(grant) => grant,
            None => {
                let grant = self.request_grant(self.position)?;
                self.cursor = grant.position;
                self.grant = Some(grant);
                grant
            }
        };
        let watermark = self.read_watermark(&grant)?;
        if watermark.is_revoked() {
            // The segment's memory went away (persisted, or retention): ask again.
            self.grant = None;
            return Ok(ReadProgress {
                records: 0,
                high_watermark: grant.high_watermark,
            });
        }
        let committed = watermark.committed().min(grant.segment_bytes);
        if self.cursor >= committed {
            if watermark.is_sealed() {
                // Read on in the next segment.
                self.grant = None;
            }
            return Ok(ReadProgress {
                records: 0,
                high_watermark: grant.high_watermark,
            });
        }
        let len = ((committed - self.cursor) as usize).min(self.read_bytes_max);
        let partition = self.handle.partition();
        let mut position = self.position;
        let mut consumed = 0u64;
        let mut handed = 0;
        let decoded: Result<(), ClientError> = {
            let remote = RemoteAddr {
                addr: grant.segment_addr + self.cursor,
                rkey: grant.segment_rkey,
            };
            let cursor = self.cursor;
            self.reads += 1;
            self.session.read(remote, len, self.wait, |bytes| {
                for item in batches(bytes) {
                    let (header, batch) = match item {
                        Ok(pair) => pair,
                        // The rest is in the next READ (or past the committed bytes).
                        Err(BatchError::Truncated { .. }) => break,
                        Err(e) => {
                            return Err(ClientError::CorruptBatch {
                                partition,
                                offset: position,
                                detail: format!("{e} (segment position {})", cursor + consumed),
                            })
                        }
                    };
                    let whole = batch.len() as u64;
                    let Some(after) = position_after_batch(position, header.last_offset()) else {
                        consumed += whole;
                        continue;
                    };
                    if !header.is_control() {
                        let decoded = records(batch).map_err(|e| ClientError::CorruptBatch {
                            partition,
                            offset: header.base_offset.max(0) as u64,
                            detail: e.to_string(),
                        })?;
                        for record in decoded {
                            let Ok(offset) = u64::try_from(record.offset) else {
                                continue;
                            };
                            if offset < position {
                                continue;
                            }
                            out.push(ConsumedRecord {
                                partition,
                                offset,
                                timestamp_ms: record.timestamp,
                                key: record.key,
                                value: record.value.unwrap_or_default(),
                            });
                            handed += 1;
                        }
                    }
                    position = after;
                    consumed += whole;
                }
                Ok(())
            })?
        };
        decoded?;
        if consumed == 0 && len == self.read_bytes_max {
            return Err(ClientError::CorruptBatch {
                partition,
                offset: self.position,
                detail: format!(
                    "a batch larger than read_bytes_max ({} bytes) at segment position {}",
                    self.read_bytes_max, self.cursor
                ),
            });
        }
        self.cursor += consumed;
        self.position = position;
        Ok(ReadProgress {
            records: handed,
            high_watermark: grant.high_watermark,
        })
    }
}

/// The crate transport's RDMA medium: a session, connected anew (on the next use after
/// [`RDMA_RECONNECT_INTERVAL`]) when it is lost. What was in flight on a lost session is
/// retransmitted by the producer and consumer on their schedules.
pub(crate) struct RdmaLink {
    config: RdmaConfig,
    session: Option<RdmaSession>,
    next_attempt_at: Instant,
}

/// Between two attempts to connect again.
pub const RDMA_RECONNECT_INTERVAL: Duration = Duration::from_millis(100);
/// How long a send waits for a send buffer before counting the frame as dropped.
const SEND_WAIT: Duration = Duration::from_millis(10);

impl RdmaLink {
    /// Connects (the first connection must succeed: its error is the caller's).
    pub(crate) fn connect(config: &RdmaConfig) -> Result<RdmaLink, ClientError> {
        let session = RdmaSession::connect(config)?;
        Ok(RdmaLink {
            config: config.clone(),
            session: Some(session),
            next_attempt_at: Instant::now(),
        })
    }

    pub(crate) fn frame_bytes_max(&self) -> usize {
        self.session.as_ref().map_or(
            self.config.buffer_bytes as usize,
            RdmaSession::frame_bytes_max,
        )
    }

    fn session(&mut self, stats: &mut crate::TransportStats) -> Option<&mut RdmaSession> {
        if self.session.is_none() && Instant::now() >= self.next_attempt_at {
            match RdmaSession::connect(&self.config) {
                Ok(session) => {
                    stats.reconnects += 1;
                    self.session = Some(session);
                }
                Err(_) => self.next_attempt_at = Instant::now() + RDMA_RECONNECT_INTERVAL,
            }
        }
        self.session.as_mut()
    }

    fn lost(&mut self) {
        self.session = None;
        self.next_attempt_at = Instant::now() + RDMA_RECONNECT_INTERVAL;
    }

    /// Sends one frame; a lost connection or no free send buffer counts as a dropped
    /// frame (retransmission covers it).
    pub(crate) fn send(
        &mut self,
        frame: &[u8],
        stats: &mut crate::TransportStats,
    ) -> Result<(), ClientError> {
        let Some(session) = self.session(stats) else {
            stats.send_drops += 1;
            return Ok(());
        };
        match session.send_frame(frame, SEND_WAIT) {
            Ok(true) => stats.frames_sent += 1,
            Ok(false) => stats.send_drops += 1,
            Err(ClientError::RdmaConnectionLost { .. }) => {
                stats.send_drops += 1;
                self.lost();
            }
            Err(error) => return Err(error),
        }
        Ok(())
    }

    /// Waits up to `wait` for one frame, copied into `buf`; its length, or `None`.
    pub(crate) fn recv(
        &mut self,
        wait: Duration,
        buf: &mut [u8],
        stats: &mut crate::TransportStats,
    ) -> Result<Option<usize>, ClientError> {
        let started = Instant::now();
        let mut idle = Idle::default();
        loop {
            if let Some(session) = self.session(stats) {
                let mut len = None;
                match session.poll_frames(1, |frame| {
                    let n = frame.len().min(buf.len());
                    buf[..n].copy_from_slice(&frame[..n]);
                    len = Some(n);
                }) {
                    Ok(_) => {
                        if len.is_some() {
                            stats.frames_received += 1;
                            return Ok(len);
                        }
                    }
                    Err(ClientError::RdmaConnectionLost { .. }) => self.lost(),
                    Err(error) => return Err(error),
                }
            }
            if started.elapsed() >= wait {
                return Ok(None);
            }
            idle.idle();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Without RDMA in the kernel (our hosts) connecting fails at once, saying so.
    #[test]
    fn connect_without_rdma_is_a_clear_error() {
        if std::path::Path::new("/sys/class/infiniband").exists() {
            eprintln!("skipped: this kernel has RDMA (the error path is for hosts without)");
            return;
        }
        let config = RdmaConfig::new(DEFAULT_RDMA_BROKER.parse().unwrap());
        let error = RdmaSession::connect(&config).unwrap_err();
        match &error {
            ClientError::RdmaUnavailable { broker, reason } => {
                assert_eq!(broker.to_string(), DEFAULT_RDMA_BROKER);
                assert!(reason.contains("no RDMA subsystem"), "{reason}");
            }
            other => panic!("expected RdmaUnavailable, got {other:?}"),
        }
        assert!(error
            .to_string()
            .starts_with("RDMA to the data plane at 10.0.0.1:9191"));
    }

    #[test]
    fn default_config_fits_the_brokers_defaults() {
        let config = RdmaConfig::new(DEFAULT_RDMA_BROKER.parse().unwrap());
        // The broker refuses clients whose buffers are smaller than its own (9216).
        assert!(config.buffer_bytes >= 9216);
        assert!(config.read_bytes_max as usize >= precursor_protocol::frame::FRAME_BYTES_MAX);
    }
}
