//! The lcore: one poll-mode agent that owns a port queue and its partitions' logs.
//!
//! Its `do_work` is DPDK's burst loop (l2fwd/l3fwd): receive a burst, handle each packet —
//! answering in the same mbuf where it can — buffer the replies, send them at the end of
//! the iteration; on the drain timer, send durable acks whose offsets the flusher has
//! passed, install topics the admin thread created, and let each log do its housekeeping.
//! It returns how much it did, and an [`Idle`] strategy decides what to do with nothing.
//!
//! Nothing on this path makes a system call, takes a lock or allocates: mbufs come from
//! the pool, logs and tables are sized at start-up, the pending-ack queue is bounded.

use crate::control::{Control, PartitionValues, COMMANDS_PER_ITERATION_MAX};
use crate::counters::LcoreCounters;
use crate::idle::Idle;
use crate::log::{AppendError, PartitionLog, ReadError};
use crate::net::{self, Endpoint, Inbound, Peer, UDP_HEADERS_BYTES};
use crate::topics::{AdminLink, AdminReply, AdminRequest, Origin, TopicName, TopicTable};
use precursor_ffi::dpdk::{Mbuf, MbufBurst, Mempool, Port};
use precursor_protocol::command::{Command, Event};
use precursor_protocol::frame::{
    batch_bytes_max, decode_frame, Acks, ErrorCode, FetchDataHeader, FetchRequest, FrameError,
    FrameHeader, MetadataRequest, MetadataResponse, Opcode, PartitionHandle, ProduceAck,
    FLAG_FETCH_DURABLE_ONLY, FLAG_METADATA_AUTO_CREATE, FRAME_HEADER_BYTES,
};
use precursor_protocol::record_batch::RecordBatchHeader;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Packets one `rx_burst` takes at most.
pub const RX_BURST_PACKETS_MAX: usize = 64;
/// Replies buffered before a `tx_burst`.
pub const TX_BURST_PACKETS_MAX: usize = 128;
/// Topic creations one lcore keeps outstanding.
const CREATIONS_IN_FLIGHT_MAX: usize = 16;

/// What the lcore needs to know about its port and policies.
#[derive(Clone, Debug)]
pub struct LcoreConfig {
    pub endpoint: Endpoint,
    pub queue: u16,
    /// Largest native frame on this port (MTU less IPv4 and UDP headers).
    pub frame_bytes_max: usize,
    pub drain_interval: Duration,
    pub pending_acks_max: usize,
    pub auto_create_topics: bool,
    pub default_partitions: u16,
}

/// A produce with `acks=durable` whose offsets the flusher has not passed yet.
#[derive(Copy, Clone, Debug)]
struct PendingAck {
    /// When the batch was appended: the wait for the flusher is a histogram.
    appended_at: Instant,
    peer: Peer,
    session: u32,
    request_id: u64,
    handle: PartitionHandle,
    /// Answered once every offset up to `ack.last_offset` is durable.
    ack: ProduceAck,
    answer: DurableAnswer,
}

/// What a produce with `acks=durable` is answered with once its offsets are durable.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum DurableAnswer {
    /// A ProduceAck with the batch's offsets.
    Ack,
    /// DuplicateSequence: a retransmit of a batch appended too long ago for its offsets to
    /// be remembered. It is somewhere below the log end, so the answer waits until the
    /// whole log up to there is durable: a client counts it as delivered.
    DuplicateSequence,
}

/// Everything about the request a reply needs once the request's bytes are overwritten.
#[derive(Copy, Clone)]
struct Request {
    peer: Peer,
    header: FrameHeader,
    /// Where the frame's payload sits in the request's mbuf data.
    payload_at: usize,
}

impl Request {
    fn new(peer: Peer, header: FrameHeader, mbuf_data: &[u8], frame: &[u8]) -> Request {
        let frame_at = frame.as_ptr() as usize - mbuf_data.as_ptr() as usize;
        debug_assert!(frame_at + frame.len() <= mbuf_data.len());
        Request {
            peer,
            header,
            payload_at: frame_at + FRAME_HEADER_BYTES,
        }
    }

    /// The payload in the request's mbuf (valid until the mbuf is reused for the reply).
    fn payload<'m>(&self, mbuf: &'m Mbuf) -> &'m [u8] {
        &mbuf.data()[self.payload_at..self.payload_at + self.header.length as usize]
    }
}

pub struct Lcore {
    config: LcoreConfig,
    port: Port,
    pool: Mempool,
    topics: TopicTable,
    admin: AdminLink,
    creating: Vec<TopicName>,
    pending: VecDeque<PendingAck>,
    rx: MbufBurst<RX_BURST_PACKETS_MAX>,
    tx: MbufBurst<TX_BURST_PACKETS_MAX>,
    /// Scratch for a ping's payload (the reply reuses the request's mbuf).
    scratch: Vec<u8>,
    counters: LcoreCounters,
    last_drain: Instant,
    /// The shared memory with the control plane; `None` when running without one (tests).
    control: Option<Control>,
    last_port_stats: Instant,
    last_counters: Instant,
}

/// How often the lcore's and partitions' counters are copied into the counters page.
const COUNTERS_INTERVAL: Duration = Duration::from_millis(10);
/// How often port statistics and link state are read for the counters page.
const PORT_STATS_INTERVAL: Duration = Duration::from_secs(1);
/// Partitions per topic an admin command may ask for (as the config's limit).
const PARTITIONS_PER_TOPIC_MAX: u16 = 1024;

impl Lcore {
    pub fn new(
        config: LcoreConfig,
        port: Port,
        pool: Mempool,
        topics: TopicTable,
        admin: AdminLink,
    ) -> Lcore {
        assert!(config.frame_bytes_max > FRAME_HEADER_BYTES + FetchDataHeader::BYTES);
        assert!(config.pending_acks_max > 0);
        Lcore {
            pending: VecDeque::with_capacity(config.pending_acks_max),
            scratch: vec![0u8; config.frame_bytes_max],
            creating: Vec::with_capacity(CREATIONS_IN_FLIGHT_MAX),
            config,
            port,
            pool,
            topics,
            admin,
            rx: MbufBurst::new(),
            tx: MbufBurst::new(),
            counters: LcoreCounters::default(),
            last_drain: Instant::now(),
            control: None,
            // Due at once: the control plane sees the port on the first drain.
            last_counters: Instant::now()
                .checked_sub(COUNTERS_INTERVAL)
                .unwrap_or_else(Instant::now),
            last_port_stats: Instant::now()
                .checked_sub(PORT_STATS_INTERVAL)
                .unwrap_or_else(Instant::now),
        }
    }

    /// Connects the lcore to the control plane's shared memory; registers the counters of
    /// the topics already installed.
    pub fn attach_control(&mut self, mut control: Control) {
        self.topics.for_each_mut(|topic| {
            for (partition, slot) in topic.counters.iter_mut().enumerate() {
                *slot = control.register_partition(&topic.name, partition as u16);
            }
        });
        self.control = Some(control);
    }

    pub fn counters(&self) -> &LcoreCounters {
        &self.counters
    }

    pub fn topics(&self) -> &TopicTable {
        &self.topics
    }

    /// Polls until `stop` is set, then sends what is buffered.
    pub fn run(&mut self, stop: &AtomicBool, idle: &mut Idle) {
        while !stop.load(Ordering::Relaxed) {
            let work = self.do_work();
            idle.idle(work);
        }
        self.drain(Instant::now());
        self.flush_tx();
    }

    /// One iteration: a receive burst, its replies, and the drain timer. Returns the work done.
    #[inline]
    pub fn do_work(&mut self) -> usize {
        self.counters.loop_iterations += 1;
        let received = self.port.rx_burst(self.config.queue, &mut self.rx);
        let mut work = received;
        if received > 0 {
            let now_ms = wall_clock_ms();
            // In arrival order: a client's requests on one queue are served in the order
            // sent. The burst is moved out (a 64-pointer array) so handlers can borrow self.
            let mut burst = std::mem::replace(&mut self.rx, MbufBurst::new());
            for mbuf in burst.drain() {
                self.handle_packet(mbuf, now_ms);
            }
            self.rx = burst;
        }
        if self.control.is_some() {
            work += self.poll_commands();
        }
        let now = Instant::now();
        if now.duration_since(self.last_drain) >= self.config.drain_interval {
            self.last_drain = now;
            work += self.drain(now);
        }
        // Durable acks are checked every iteration when any wait: one atomic load each.
        if !self.pending.is_empty() {
            work += self.send_durable_acks();
        }
        work + self.flush_tx()
    }

    fn handle_packet(&mut self, mut mbuf: Mbuf, now_ms: i64) {
        self.counters.rx_packets += 1;
        self.counters.rx_bytes += mbuf.len() as u64;
        if !mbuf.is_contiguous() {
            self.counters.rx_multi_segment += 1;
            return;
        }
        let endpoint = self.config.endpoint;
        match net::classify(mbuf.data(), &endpoint) {
            Inbound::Datagram { peer, payload } => match decode_frame(payload) {
                Ok((header, _)) => {
                    let request = Request::new(peer, header, mbuf.data(), payload);
                    if header.opcode.is_request() {
                        self.handle_request(mbuf, request, now_ms);
                    } else {
                        self.reply_error(
                            mbuf,
                            &request,
                            ErrorCode::InvalidFrame,
                            "not a request opcode",
                        );
                    }
                }
                Err(error) => {
                    self.counters.count_bad_frame(&error);
                    // A header we could read gets an answer; garbage is only counted.
                    let code = match error {
                        FrameError::UnsupportedVersion { .. } => ErrorCode::UnsupportedVersion,
                        _ => ErrorCode::InvalidFrame,
                    };
                    if let Some(mut header) = FrameHeader::decode_for_error_reply(payload) {
                        header.length = 0;
                        let request = Request::new(peer, header, mbuf.data(), payload);
                        self.reply_error(mbuf, &request, code, error.reason());
                    }
                }
            },
            Inbound::ArpRequest { peer_mac, peer_ip } => {
                mbuf.reset();
                let Some(out) = mbuf.append(net::ETHERNET_FRAME_BYTES_MIN) else {
                    return;
                };
                net::write_arp_reply(out, &endpoint, peer_mac, peer_ip);
                self.counters.arp_replies += 1;
                self.transmit(mbuf);
            }
            Inbound::EchoRequest => {
                net::echo_request_into_reply(mbuf.data_mut(), &endpoint);
                self.counters.echo_replies += 1;
                self.transmit(mbuf);
            }
            Inbound::Dropped(reason) => self.counters.count_drop(reason),
        }
    }

    /// The frame is valid as a header; `payload` is re-derived from the mbuf so the mbuf
    /// can be reused for the reply.
    fn handle_request(&mut self, mbuf: Mbuf, request: Request, now_ms: i64) {
        match request.header.opcode {
            Opcode::Produce => self.handle_produce(mbuf, request, now_ms),
            Opcode::Fetch => self.handle_fetch(mbuf, request),
            Opcode::Metadata => self.handle_metadata(mbuf, request),
            Opcode::Ping => self.handle_ping(mbuf, request),
            _ => unreachable!("is_request() admits only these"),
        }
    }

    fn handle_produce(&mut self, mbuf: Mbuf, request: Request, now_ms: i64) {
        self.counters.produce_requests += 1;
        let header = request.header;
        let Some(acks) = Acks::from_flags(header.flags) else {
            return self.reply_error(mbuf, &request, ErrorCode::InvalidFrame, "acks bits");
        };
        let handle = PartitionHandle(header.partition);
        if acks == Acks::Durable && self.pending.len() >= self.config.pending_acks_max {
            return self.reply_error(mbuf, &request, ErrorCode::Busy, "durable acks queue full");
        }
        if self.topics.partition(handle).is_none() {
            return self.reply_error(
                mbuf,
                &request,
                ErrorCode::UnknownTopicOrPartition,
                "no such partition",
            );
        }
        let batch = request.payload(&mbuf);
        if batch.len() > batch_bytes_max(self.config.frame_bytes_max) {
            return self.reply_error(
                mbuf,
                &request,
                ErrorCode::MessageTooLarge,
                "batch larger than a fetch on this port can serve",
            );
        }
        let log = self.topics.partition_mut(handle).expect("looked up above");
        let appended = log.append(batch, now_ms);
        let records = RecordBatchHeader::parse(batch).map_or(0, |h| h.records_count as u64);
        let batch_bytes = batch.len() as u64;
        let appended = match appended {
            Ok(appended) => appended,
            Err(AppendError::DuplicateSequence) if acks == Acks::Durable => {
                let log = self.topics.partition(handle).expect("looked up above");
                let Some(last_offset) = log.log_end_offset().checked_sub(1) else {
                    unreachable!("a duplicate implies an earlier append");
                };
                let everything = ProduceAck {
                    base_offset: last_offset,
                    last_offset,
                };
                return self.answer_when_durable(
                    mbuf,
                    &request,
                    everything,
                    DurableAnswer::DuplicateSequence,
                );
            }
            Err(error) => {
                let (code, reason) = append_error_code(&error);
                return self.reply_error(mbuf, &request, code, reason);
            }
        };
        let ack = ProduceAck {
            base_offset: appended.base_offset,
            last_offset: appended.last_offset,
        };
        if appended.duplicate {
            self.counters.produce_duplicates += 1;
        } else {
            self.counters.produce_batches += 1;
            self.counters.produce_records += records;
            self.counters.produce_bytes += batch_bytes;
        }
        match acks {
            Acks::None => drop(mbuf),
            Acks::Leader => self.reply_ack(mbuf, &request, ack),
            Acks::Durable => self.answer_when_durable(mbuf, &request, ack, DurableAnswer::Ack),
        }
    }

    /// Answers a durable produce now if `ack.last_offset` is already durable, else asks the
    /// flusher for it and parks the answer (the request's mbuf goes back to the pool now;
    /// the answer gets a fresh one). The caller checked there is room to park.
    fn answer_when_durable(
        &mut self,
        mbuf: Mbuf,
        request: &Request,
        ack: ProduceAck,
        answer: DurableAnswer,
    ) {
        let handle = PartitionHandle(request.header.partition);
        let log = self
            .topics
            .partition(handle)
            .expect("the caller looked it up");
        if ack.last_offset < log.durable_offset() {
            return self.send_durable_answer(mbuf, request, ack, answer);
        }
        log.request_durable(ack.last_offset);
        assert!(self.pending.len() < self.config.pending_acks_max);
        self.pending.push_back(PendingAck {
            appended_at: Instant::now(),
            peer: request.peer,
            session: request.header.session,
            request_id: request.header.request_id,
            handle,
            ack,
            answer,
        });
    }

    fn send_durable_answer(
        &mut self,
        mbuf: Mbuf,
        request: &Request,
        ack: ProduceAck,
        answer: DurableAnswer,
    ) {
        match answer {
            DurableAnswer::Ack => self.reply_ack(mbuf, request, ack),
            DurableAnswer::DuplicateSequence => self.reply_error(
                mbuf,
                request,
                ErrorCode::DuplicateSequence,
                "batch appended before (durable)",
            ),
        }
    }

    fn handle_fetch(&mut self, mut mbuf: Mbuf, request: Request) {
        self.counters.fetch_requests += 1;
        let fetch = match FetchRequest::decode(request.payload(&mbuf)) {
            Ok(fetch) => fetch,
            Err(error) => {
                self.counters.count_bad_frame(&error);
                return self.reply_error(mbuf, &request, ErrorCode::InvalidFrame, error.reason());
            }
        };
        let durable_only = request.header.flags & FLAG_FETCH_DURABLE_ONLY != 0;
        let handle = PartitionHandle(request.header.partition);
        let Some(log) = self.topics.partition(handle) else {
            return self.reply_error(
                mbuf,
                &request,
                ErrorCode::UnknownTopicOrPartition,
                "no such partition",
            );
        };
        let payload_bytes_max = self.config.frame_bytes_max - FRAME_HEADER_BYTES;
        let Some(payload) = begin_reply(&mut mbuf, payload_bytes_max) else {
            self.counters.mbuf_alloc_failures += 1;
            return;
        };
        // `max_bytes` is a soft limit (the first batch is served even when larger, as in
        // Kafka); the frame is the hard one.
        let read = log.read(
            fetch.offset,
            fetch.max_bytes as usize,
            durable_only,
            &mut payload[FetchDataHeader::BYTES..],
        );
        // Out of range is answered as FetchData with the error set and no batches, so the
        // client learns the log's bounds and can reset its position.
        let (bytes, code) = match read {
            Ok(bytes) => (bytes, ErrorCode::None),
            Err(ReadError::OffsetOutOfRange { .. }) => (0, ErrorCode::OffsetOutOfRange),
            Err(ReadError::BatchTooLarge { .. }) => {
                return self.reply_error(
                    mbuf,
                    &request,
                    ErrorCode::MessageTooLarge,
                    "the batch at this offset is larger than a frame of this port",
                );
            }
        };
        FetchDataHeader {
            high_watermark: log.log_end_offset(),
            durable_offset: log.durable_offset(),
            log_start_offset: log.log_start_offset(),
        }
        .encode(payload);
        self.counters.fetch_bytes += bytes as u64;
        if code != ErrorCode::None {
            self.counters.count_error(code);
        }
        let reply = header_for(&request, Opcode::FetchData, code);
        self.finish_reply(
            mbuf,
            &request,
            reply,
            FetchDataHeader::BYTES + bytes,
            payload_bytes_max,
        );
    }

    fn handle_metadata(&mut self, mut mbuf: Mbuf, request: Request) {
        self.counters.metadata_requests += 1;
        let name = match MetadataRequest::decode(request.payload(&mbuf)) {
            Ok(metadata) => TopicName::new(metadata.topic),
            Err(error) => {
                self.counters.count_bad_frame(&error);
                return self.reply_error(mbuf, &request, ErrorCode::InvalidFrame, error.reason());
            }
        };
        let Some(name) = name else {
            return self.reply_error(
                mbuf,
                &request,
                ErrorCode::InvalidTopic,
                "topic names are 1-249 of [a-zA-Z0-9._-]",
            );
        };
        if let Some(topic) = self.topics.by_name(name.as_str()) {
            let response = MetadataResponse {
                topic_id: topic.id,
                partition_count: topic.partitions.len() as u16,
                frame_bytes_max: self.config.frame_bytes_max as u32,
            };
            let Some(payload) = begin_reply(&mut mbuf, MetadataResponse::BYTES) else {
                return;
            };
            response.encode(payload);
            let reply = header_for(&request, Opcode::MetadataResponse, ErrorCode::None);
            return self.finish_reply(
                mbuf,
                &request,
                reply,
                MetadataResponse::BYTES,
                MetadataResponse::BYTES,
            );
        }
        let wants_creation = request.header.flags & FLAG_METADATA_AUTO_CREATE != 0;
        if !wants_creation || !self.config.auto_create_topics {
            return self.reply_error(
                mbuf,
                &request,
                ErrorCode::UnknownTopicOrPartition,
                "no such topic",
            );
        }
        if !self.creating.iter().any(|n| n.as_str() == name.as_str()) {
            let queued = self.creating.len() < CREATIONS_IN_FLIGHT_MAX
                && self
                    .admin
                    .request(AdminRequest::Create {
                        name,
                        partitions: self.config.default_partitions,
                        retention_ms: None,
                        retention_bytes: None,
                        origin: Origin::AutoCreate,
                    })
                    .is_ok();
            if !queued {
                return self.reply_error(
                    mbuf,
                    &request,
                    ErrorCode::Busy,
                    "too many topic creations at once",
                );
            }
            self.creating.push(name);
        }
        self.reply_error(
            mbuf,
            &request,
            ErrorCode::TopicNotReady,
            "creating the topic",
        )
    }

    fn handle_ping(&mut self, mut mbuf: Mbuf, request: Request) {
        self.counters.pings += 1;
        let echo = request.payload(&mbuf);
        let len = echo.len();
        self.scratch[..len].copy_from_slice(echo);
        let Some(payload) = begin_reply(&mut mbuf, len) else {
            return;
        };
        payload.copy_from_slice(&self.scratch[..len]);
        let reply = header_for(&request, Opcode::Pong, ErrorCode::None);
        self.finish_reply(mbuf, &request, reply, len, len);
    }

    fn reply_ack(&mut self, mut mbuf: Mbuf, request: &Request, ack: ProduceAck) {
        let Some(payload) = begin_reply(&mut mbuf, ProduceAck::BYTES) else {
            return;
        };
        ack.encode(payload);
        let reply = header_for(request, Opcode::ProduceAck, ErrorCode::None);
        self.finish_reply(mbuf, request, reply, ProduceAck::BYTES, ProduceAck::BYTES);
    }

    /// An Error frame: the code in the header, a short reason for people as the payload.
    fn reply_error(&mut self, mut mbuf: Mbuf, request: &Request, code: ErrorCode, reason: &str) {
        self.counters.count_error(code);
        let message = reason.as_bytes();
        let Some(payload) = begin_reply(&mut mbuf, message.len()) else {
            return;
        };
        payload.copy_from_slice(message);
        let reply = header_for(request, Opcode::Error, code);
        self.finish_reply(mbuf, request, reply, message.len(), message.len());
    }

    /// Writes the frame header and the UDP headers around a payload already in place, and
    /// trims the mbuf to the datagram's length.
    fn finish_reply(
        &mut self,
        mut mbuf: Mbuf,
        request: &Request,
        mut header: FrameHeader,
        payload_bytes: usize,
        reserved_bytes: usize,
    ) {
        assert!(payload_bytes <= reserved_bytes);
        header.length = payload_bytes as u32;
        let endpoint = self.config.endpoint;
        let data = mbuf.data_mut();
        header.encode(&mut data[UDP_HEADERS_BYTES..]);
        let total = net::write_udp_headers(
            data,
            &endpoint,
            &request.peer,
            FRAME_HEADER_BYTES + payload_bytes,
        );
        let reserved_total = UDP_HEADERS_BYTES + FRAME_HEADER_BYTES + reserved_bytes;
        let trimmed = mbuf.trim(reserved_total - total);
        assert!(trimmed);
        self.transmit(mbuf);
    }

    fn transmit(&mut self, mbuf: Mbuf) {
        self.counters.tx_bytes += mbuf.len() as u64;
        if let Err(mbuf) = self.tx.push(mbuf) {
            self.flush_tx();
            if let Err(mbuf) = self.tx.push(mbuf) {
                self.counters.tx_dropped += 1;
                drop(mbuf);
            }
        }
    }

    fn flush_tx(&mut self) -> usize {
        if self.tx.is_empty() {
            return 0;
        }
        let sent = self.port.tx_burst(self.config.queue, &mut self.tx);
        self.counters.tx_packets += sent as u64;
        sent
    }

    /// The drain timer: durable acks, the admin thread's answers, log housekeeping,
    /// counters for the control plane.
    fn drain(&mut self, now: Instant) -> usize {
        let mut work = self.send_durable_acks();
        while let Some(reply) = self.admin.poll() {
            work += 1;
            self.on_admin_reply(reply);
        }
        let now_ms = wall_clock_ms();
        // Counters are for people and scrapers: published at COUNTERS_INTERVAL, not on every
        // drain tick, so their cost does not grow with partitions on the lcore's clock.
        let publish =
            self.control.is_some() && now.duration_since(self.last_counters) >= COUNTERS_INTERVAL;
        if publish {
            self.last_counters = now;
        }
        let control = self.control.as_ref().filter(|_| publish);
        self.topics.for_each_mut(|topic| {
            for (log, ids) in topic.partitions.iter_mut().zip(&topic.counters) {
                log.maintain(now_ms);
                if let (Some(control), Some(ids)) = (control, ids) {
                    control.publish_partition(
                        ids,
                        &PartitionValues {
                            start_offset: log.log_start_offset(),
                            end_offset: log.log_end_offset(),
                            durable_offset: log.durable_offset(),
                            bytes: log.size_bytes(),
                            segments: log.segment_count() as u64,
                        },
                    );
                }
            }
        });
        if let Some(control) = &mut self.control {
            control.heartbeat(now_ms as u64);
            if publish {
                control.publish(&self.counters, self.pending.len());
            }
            if now.duration_since(self.last_port_stats) >= PORT_STATS_INTERVAL {
                self.last_port_stats = now;
                control.publish_port(&self.port.stats(), &self.port.link());
            }
        }
        work
    }

    /// Takes the control plane's commands (a bounded number per iteration).
    fn poll_commands(&mut self) -> usize {
        let mut handled = 0;
        while handled < COMMANDS_PER_ITERATION_MAX {
            let Some(command) = self.control.as_mut().and_then(Control::poll_command) else {
                break;
            };
            handled += 1;
            let payload = &command.payload[..command.length];
            let correlation = command.correlation_id;
            match Command::decode(command.kind, payload) {
                Ok(decoded) => self.on_command(correlation, decoded),
                Err(_) => self.answer(
                    correlation,
                    &Event::Failed {
                        code: ErrorCode::InvalidArgument,
                        message: "malformed command",
                    },
                ),
            }
        }
        handled
    }

    fn on_command(&mut self, correlation: u64, command: Command) {
        let failed = |code, message| Event::Failed { code, message };
        match command {
            Command::Ping => self.answer(correlation, &Event::Done),
            Command::CreateTopic {
                name,
                partitions,
                retention_ms,
                retention_bytes,
            } => {
                let Some(topic_name) = TopicName::new(name) else {
                    return self.answer(
                        correlation,
                        &failed(
                            ErrorCode::InvalidTopic,
                            "topic names are 1-249 of [a-zA-Z0-9._-]",
                        ),
                    );
                };
                if !(1..=PARTITIONS_PER_TOPIC_MAX).contains(&partitions) {
                    return self.answer(
                        correlation,
                        &failed(
                            ErrorCode::InvalidArgument,
                            "partitions must be between 1 and 1024",
                        ),
                    );
                }
                let creating = self.creating.iter().any(|n| n.as_str() == name);
                if creating || self.topics.by_name(name).is_some() {
                    return self.answer(
                        correlation,
                        &failed(ErrorCode::TopicExists, "topic already exists"),
                    );
                }
                if self.creating.len() >= CREATIONS_IN_FLIGHT_MAX {
                    return self.answer(
                        correlation,
                        &failed(ErrorCode::Busy, "too many topic creations at once"),
                    );
                }
                let request = AdminRequest::Create {
                    name: topic_name,
                    partitions,
                    retention_ms: (retention_ms > 0).then_some(retention_ms),
                    retention_bytes: (retention_bytes > 0).then_some(retention_bytes),
                    origin: Origin::Command(correlation),
                };
                match self.admin.request(request) {
                    Ok(()) => self.creating.push(topic_name),
                    Err(_) => {
                        self.answer(correlation, &failed(ErrorCode::Busy, "admin queue full"))
                    }
                }
            }
            Command::DeleteTopic { name } => {
                if self.creating.iter().any(|n| n.as_str() == name) {
                    return self.answer(
                        correlation,
                        &failed(ErrorCode::Busy, "topic is being created"),
                    );
                }
                let Some((mut topic, key)) = self.topics.remove(name) else {
                    return self.answer(
                        correlation,
                        &failed(ErrorCode::UnknownTopicOrPartition, "no such topic"),
                    );
                };
                if let Some(control) = &mut self.control {
                    for ids in topic.counters.iter_mut().filter_map(Option::take) {
                        control.free_partition(ids);
                    }
                }
                if let Err(AdminRequest::Delete { topic, key, .. }) =
                    self.admin.request(AdminRequest::Delete {
                        topic,
                        key,
                        correlation,
                    })
                {
                    // Put it back: nothing happened.
                    self.topics.install(topic, key);
                    self.answer(correlation, &failed(ErrorCode::Busy, "admin queue full"));
                }
            }
            Command::AlterTopic {
                name,
                retention_ms,
                retention_bytes,
            } => {
                let Some(topic_name) = TopicName::new(name) else {
                    return self.answer(
                        correlation,
                        &failed(ErrorCode::InvalidTopic, "invalid topic name"),
                    );
                };
                let Some(topic) = self.topics.by_name_mut(name) else {
                    return self.answer(
                        correlation,
                        &failed(ErrorCode::UnknownTopicOrPartition, "no such topic"),
                    );
                };
                // 0 means "no limit"; absent means "unchanged".
                for log in &mut topic.partitions {
                    let (ms, bytes) = log.retention();
                    log.set_retention(
                        retention_ms.map_or(ms, |v| (v > 0).then_some(v)),
                        retention_bytes.map_or(bytes, |v| (v > 0).then_some(v)),
                    );
                }
                let request = AdminRequest::Alter {
                    name: topic_name,
                    retention_ms,
                    retention_bytes,
                    correlation,
                };
                if self.admin.request(request).is_err() {
                    self.answer(correlation, &failed(ErrorCode::Busy, "admin queue full"));
                }
            }
        }
    }

    fn on_admin_reply(&mut self, reply: AdminReply) {
        match reply {
            AdminReply::Created {
                mut topic,
                key,
                origin,
            } => {
                self.creating.retain(|n| n.as_str() != topic.name);
                let (topic_id, partitions) = (topic.id, topic.partitions.len() as u16);
                if self.topics.by_name(&topic.name).is_none() {
                    if let Some(control) = &mut self.control {
                        for (partition, slot) in topic.counters.iter_mut().enumerate() {
                            *slot = control.register_partition(&topic.name, partition as u16);
                        }
                    }
                    self.counters.topics_created += 1;
                    self.topics.install(topic, key);
                }
                if let Origin::Command(correlation) = origin {
                    self.answer(
                        correlation,
                        &Event::TopicCreated {
                            topic_id,
                            partitions,
                        },
                    );
                }
            }
            AdminReply::CreateFailed {
                name,
                reason,
                origin,
            } => {
                self.creating.retain(|n| n.as_str() != name.as_str());
                if let Origin::Command(correlation) = origin {
                    let message = truncate_message(&reason);
                    self.answer(
                        correlation,
                        &Event::Failed {
                            code: ErrorCode::StorageError,
                            message,
                        },
                    );
                }
            }
            AdminReply::Deleted {
                correlation,
                result,
            }
            | AdminReply::Altered {
                correlation,
                result,
            } => match result {
                Ok(()) => self.answer(correlation, &Event::Done),
                Err(reason) => {
                    let message = truncate_message(&reason);
                    self.answer(
                        correlation,
                        &Event::Failed {
                            code: ErrorCode::StorageError,
                            message,
                        },
                    );
                }
            },
        }
    }

    /// The one event that answers a command.
    fn answer(&mut self, correlation: u64, event: &Event) {
        if let Some(control) = &mut self.control {
            if !control.reply(correlation, event) {
                eprintln!("precursor-dataplane: warning: event ring full, command {correlation} unanswered");
            }
        }
    }

    /// Sends every pending ack whose offsets are durable (or whose partition failed).
    fn send_durable_acks(&mut self) -> usize {
        let Lcore {
            pending, topics, ..
        } = self;
        let mut ready = 0usize;
        let mut replies: [Option<(PendingAck, ErrorCode)>; 32] = [None; 32];
        pending.retain(|waiting| {
            if ready == replies.len() {
                return true;
            }
            let Some(log) = topics.partition(waiting.handle) else {
                replies[ready] = Some((*waiting, ErrorCode::UnknownTopicOrPartition));
                ready += 1;
                return false;
            };
            if log.storage_error().is_some() {
                replies[ready] = Some((*waiting, ErrorCode::StorageError));
                ready += 1;
                return false;
            }
            if waiting.ack.last_offset < log.durable_offset() {
                replies[ready] = Some((*waiting, ErrorCode::None));
                ready += 1;
                return false;
            }
            true
        });
        for reply in replies.iter().take(ready).flatten() {
            let (waiting, code) = *reply;
            let Some(mbuf) = self.pool.alloc() else {
                // Unacked: the client retransmits and the duplicate is acked then.
                self.counters.mbuf_alloc_failures += 1;
                continue;
            };
            let request = Request {
                peer: waiting.peer,
                header: FrameHeader {
                    opcode: Opcode::Produce,
                    flags: Acks::Durable.to_flags(),
                    error: 0,
                    session: waiting.session,
                    request_id: waiting.request_id,
                    partition: waiting.handle.0,
                    length: 0,
                },
                payload_at: 0,
            };
            if code == ErrorCode::None {
                self.counters.durable_acks += 1;
                if let Some(control) = &self.control {
                    control.record_durable_wait(waiting.appended_at.elapsed().as_nanos() as u64);
                }
                self.send_durable_answer(mbuf, &request, waiting.ack, waiting.answer);
            } else {
                self.reply_error(
                    mbuf,
                    &request,
                    code,
                    "partition cannot persist: see the data plane's log",
                );
            }
        }
        ready
    }

    /// Total messages and bytes of each partition, for the exit report.
    pub fn partitions(&self) -> impl Iterator<Item = (&str, u16, &PartitionLog)> {
        self.topics.topics().flat_map(|t| {
            t.partitions
                .iter()
                .enumerate()
                .map(move |(i, log)| (t.name.as_str(), i as u16, log))
        })
    }
}

/// Resets `mbuf` and reserves room for headers and `payload_bytes_max` of payload; returns
/// the payload's bytes.
fn begin_reply(mbuf: &mut Mbuf, payload_bytes_max: usize) -> Option<&mut [u8]> {
    mbuf.reset();
    let room = mbuf.append(UDP_HEADERS_BYTES + FRAME_HEADER_BYTES + payload_bytes_max)?;
    Some(&mut room[UDP_HEADERS_BYTES + FRAME_HEADER_BYTES..])
}

fn header_for(request: &Request, opcode: Opcode, error: ErrorCode) -> FrameHeader {
    FrameHeader {
        opcode,
        flags: 0,
        error: error as u16,
        session: request.header.session,
        request_id: request.header.request_id,
        partition: request.header.partition,
        length: 0,
    }
}

fn append_error_code(error: &AppendError) -> (ErrorCode, &'static str) {
    match error {
        AppendError::Corrupt(e) => (ErrorCode::CorruptMessage, e.reason()),
        AppendError::TooLarge { .. } => (
            ErrorCode::MessageTooLarge,
            "batch larger than storage.batch_bytes_max",
        ),
        AppendError::OutOfOrderSequence { .. } => (ErrorCode::OutOfOrderSequence, "sequence gap"),
        AppendError::InvalidProducerEpoch => (
            ErrorCode::InvalidProducerEpoch,
            "producer epoch is older than one seen",
        ),
        AppendError::DuplicateSequence => (ErrorCode::DuplicateSequence, "batch appended before"),
        AppendError::SegmentNotReady => (ErrorCode::Busy, "next segment not prepared yet"),
        AppendError::Storage { reason } => (ErrorCode::StorageError, reason),
    }
}

/// Milliseconds since the epoch; `clock_gettime` through the vDSO, not a system call.
#[inline]
pub fn wall_clock_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// An event message fits its slot: at most 256 bytes, cut at a character boundary.
fn truncate_message(message: &str) -> &str {
    const MESSAGE_BYTES_MAX: usize = 256;
    if message.len() <= MESSAGE_BYTES_MAX {
        return message;
    }
    let mut end = MESSAGE_BYTES_MAX;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    &message[..end]
}
