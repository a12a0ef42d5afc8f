//! The request service: what the lcore does with a native frame, whatever transport brought
//! it (a UDP datagram from a DPDK port, a record of an IPC ring, an RDMA SEND).
//!
//! A transport hands [`Service::serve`] a decoded header and the frame's payload, still in
//! the transport's own memory (mbuf, ring, registered buffer); the service appends, looks
//! up or parks, and returns a small [`Reply`] saying what to answer. The transport then
//! reserves room for the answer in its own memory (`Reply::payload_bytes_max`) and lets
//! [`Service::render`] write the payload there. Two steps, so that a UDP reply can reuse the
//! request's own mbuf: the request's bytes are no longer needed once `serve` returns.
//!
//! Produces with `acks=durable` are parked until the flusher passes their offsets; the
//! lcore collects the due answers with [`Service::due_answers`] and sends each through the
//! transport named by its [`ReplyTo`].
//!
//! Nothing here makes a system call, takes a lock or allocates after start-up.

use crate::counters::LcoreCounters;
use crate::log::{AppendError, ReadError};
use crate::net::Peer;
use crate::topics::{AdminLink, AdminRequest, Origin, TopicName, TopicTable};
use precursor_protocol::frame::{
    batch_bytes_max, decode_frame, Acks, ErrorCode, FetchDataHeader, FetchRequest, FrameError,
    FrameHeader, MetadataRequest, MetadataResponse, Opcode, PartitionHandle, ProduceAck,
    FLAG_FETCH_DURABLE_ONLY, FLAG_METADATA_AUTO_CREATE, FRAME_HEADER_BYTES,
};
use precursor_protocol::record_batch::RecordBatchHeader;
use std::collections::VecDeque;
use std::time::Instant;

/// Topic creations one lcore keeps outstanding.
pub const CREATIONS_IN_FLIGHT_MAX: usize = 16;
/// Durable answers one call of [`Service::due_answers`] hands out at most.
pub const DUE_ANSWERS_MAX: usize = 32;

/// Where an answer goes: the transport, and the peer on it.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ReplyTo {
    /// A UDP peer of the lcore's DPDK port.
    Udp(Peer),
    /// An IPC channel; `generation` tells a reclaimed and reused channel from the old one.
    Ipc { channel: u16, generation: u32 },
    /// An RDMA connection; `generation` as for IPC.
    Rdma { connection: u16, generation: u32 },
}

/// What a request is answered with. Small and `Copy`: the request's bytes may be gone.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// No answer now: `acks=none`, or parked until durable.
    Nothing,
    Ack(ProduceAck),
    /// An Error frame: the code in the header, a short reason for people as the payload.
    Error {
        code: ErrorCode,
        reason: &'static str,
    },
    /// FetchData read from the partition at render time.
    Fetch {
        fetch: FetchRequest,
        durable_only: bool,
    },
    Metadata(MetadataResponse),
    /// The ping's payload, kept in the service's scratch buffer.
    Pong {
        bytes: usize,
    },
}

impl Reply {
    fn error(code: ErrorCode, reason: &'static str) -> Reply {
        Reply::Error { code, reason }
    }

    /// Payload bytes the transport must reserve for this answer (a Fetch fills what it gets).
    pub fn payload_bytes_max(&self, frame_bytes_max: usize) -> usize {
        match self {
            Reply::Nothing => 0,
            Reply::Ack(_) => ProduceAck::BYTES,
            Reply::Error { reason, .. } => reason.len(),
            Reply::Fetch { .. } => frame_bytes_max - FRAME_HEADER_BYTES,
            Reply::Metadata(_) => MetadataResponse::BYTES,
            Reply::Pong { bytes } => *bytes,
        }
    }
}

/// A produce with `acks=durable` whose offsets the flusher has not passed yet.
#[derive(Copy, Clone, Debug)]
struct PendingAck {
    /// When the batch was appended: the wait for the flusher is a histogram.
    appended_at: Instant,
    reply_to: ReplyTo,
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

/// A durable answer that is due: where it goes, the request it answers, what it says.
#[derive(Copy, Clone, Debug)]
pub struct DueAnswer {
    pub reply_to: ReplyTo,
    pub request: FrameHeader,
    pub reply: Reply,
    /// How long the answer waited for the flusher, in nanoseconds (0 for failures).
    pub waited_ns: u64,
}

/// Policies the service needs.
#[derive(Copy, Clone, Debug)]
pub struct ServiceConfig {
    pub pending_acks_max: usize,
    pub auto_create_topics: bool,
    pub default_partitions: u16,
    /// The largest frame any transport of this lcore carries (sizes the ping scratch).
    pub frame_bytes_max: usize,
}

pub struct Service {
    config: ServiceConfig,
    pub topics: TopicTable,
    pub admin: AdminLink,
    /// Topics asked of the admin thread and not installed yet.
    pub creating: Vec<TopicName>,
    pending: VecDeque<PendingAck>,
    /// A ping's payload between `serve` and `render`.
    scratch: Vec<u8>,
    pub counters: LcoreCounters,
}

impl Service {
    pub fn new(config: ServiceConfig, topics: TopicTable, admin: AdminLink) -> Service {
        assert!(config.pending_acks_max > 0);
        assert!(config.frame_bytes_max > FRAME_HEADER_BYTES + FetchDataHeader::BYTES);
        Service {
            pending: VecDeque::with_capacity(config.pending_acks_max),
            scratch: vec![0u8; config.frame_bytes_max],
            creating: Vec::with_capacity(CREATIONS_IN_FLIGHT_MAX),
            config,
            topics,
            admin,
            counters: LcoreCounters::default(),
        }
    }

    /// Makes room for pings of a transport with frames of up to `frame_bytes_max` bytes
    /// (start-up, when a transport is attached).
    pub fn serve_frames_up_to(&mut self, frame_bytes_max: usize) {
        if self.scratch.len() < frame_bytes_max {
            self.scratch.resize(frame_bytes_max, 0);
        }
    }

    /// Durable answers still waiting for the flusher.
    pub fn pending_acks(&self) -> usize {
        self.pending.len()
    }

    /// Decodes and serves one whole frame (header and payload) from a transport whose
    /// frames are at most `frame_bytes_max` bytes. Returns the header to answer and the
    /// answer; `None` for bytes too broken to answer (only counted).
    pub fn serve_frame(
        &mut self,
        reply_to: ReplyTo,
        frame: &[u8],
        frame_bytes_max: usize,
        now_ms: i64,
    ) -> Option<(FrameHeader, Reply)> {
        match decode_frame(frame) {
            Ok((header, payload)) => {
                let reply = self.serve(reply_to, &header, payload, frame_bytes_max, now_ms);
                Some((header, reply))
            }
            Err(error) => {
                self.counters.count_bad_frame(&error);
                // A header we could read gets an answer; garbage is only counted.
                let header = FrameHeader::decode_for_error_reply(frame)?;
                let code = match error {
                    FrameError::UnsupportedVersion { .. } => ErrorCode::UnsupportedVersion,
                    _ => ErrorCode::InvalidFrame,
                };
                let reason = error.reason();
                Some((header, Reply::Error { code, reason }))
            }
        }
    }

    /// Serves one request frame that arrived on a transport whose frames are at most
    /// `frame_bytes_max` bytes. `payload` is the frame's payload (`header.length` bytes).
    pub fn serve(
        &mut self,
        reply_to: ReplyTo,
        header: &FrameHeader,
        payload: &[u8],
        frame_bytes_max: usize,
        now_ms: i64,
    ) -> Reply {
        debug_assert_eq!(payload.len(), header.length as usize);
        match header.opcode {
            Opcode::Produce => self.produce(reply_to, header, payload, frame_bytes_max, now_ms),
            Opcode::Fetch => self.fetch(header, payload),
            Opcode::Metadata => self.metadata(header, payload, frame_bytes_max),
            Opcode::Ping => {
                self.counters.pings += 1;
                // Longer than the scratch cannot be: the frame came through a transport
                // whose frames are at most `frame_bytes_max` <= the scratch's length.
                let bytes = payload.len().min(self.scratch.len());
                self.scratch[..bytes].copy_from_slice(&payload[..bytes]);
                Reply::Pong { bytes }
            }
            // The RDMA transport answers these itself (rdma.rs); other transports cannot.
            Opcode::ReadGrant => Reply::error(
                ErrorCode::InvalidFrame,
                "read grants are served over the RDMA transport only",
            ),
            _ => Reply::error(ErrorCode::InvalidFrame, "not a request opcode"),
        }
    }

    fn produce(
        &mut self,
        reply_to: ReplyTo,
        header: &FrameHeader,
        batch: &[u8],
        frame_bytes_max: usize,
        now_ms: i64,
    ) -> Reply {
        self.counters.produce_requests += 1;
        let Some(acks) = Acks::from_flags(header.flags) else {
            return Reply::error(ErrorCode::InvalidFrame, "acks bits");
        };
        let handle = PartitionHandle(header.partition);
        let parks = matches!(acks, Acks::Durable | Acks::AllDurable);
        if parks && self.pending.len() >= self.config.pending_acks_max {
            return Reply::error(ErrorCode::Busy, "durable acks queue full");
        }
        if self.topics.partition(handle).is_none() {
            return Reply::error(ErrorCode::UnknownTopicOrPartition, "no such partition");
        }
        // A batch must fit a fetch on the transport it came by, or its consumers could
        // never read it there (other transports answer MessageTooLarge for it).
        if batch.len() > batch_bytes_max(frame_bytes_max) {
            return Reply::error(
                ErrorCode::MessageTooLarge,
                "batch larger than a fetch on this transport can serve",
            );
        }
        let log = self.topics.partition_mut(handle).expect("looked up above");
        let appended = match log.append(batch, now_ms) {
            Ok(appended) => appended,
            Err(AppendError::DuplicateSequence) if parks => {
                let Some(last_offset) = log.log_end_offset().checked_sub(1) else {
                    unreachable!("a duplicate implies an earlier append");
                };
                let everything = ProduceAck {
                    base_offset: last_offset,
                    last_offset,
                };
                return self.answer_when_durable(
                    reply_to,
                    header,
                    everything,
                    DurableAnswer::DuplicateSequence,
                );
            }
            Err(error) => {
                let (code, reason) = append_error_code(&error);
                return Reply::error(code, reason);
            }
        };
        let ack = ProduceAck {
            base_offset: appended.base_offset,
            last_offset: appended.last_offset,
        };
        if appended.duplicate {
            self.counters.produce_duplicates += 1;
        } else {
            let records = RecordBatchHeader::parse(batch).map_or(0, |h| h.records_count as u64);
            self.counters.produce_batches += 1;
            self.counters.produce_records += records;
            self.counters.produce_bytes += batch.len() as u64;
        }
        // A partition of one replica: its ISR is this broker alone.
        match acks {
            Acks::None => Reply::Nothing,
            Acks::Leader | Acks::All => Reply::Ack(ack),
            Acks::Durable | Acks::AllDurable => {
                self.answer_when_durable(reply_to, header, ack, DurableAnswer::Ack)
            }
        }
    }

    /// The answer now if `ack.last_offset` is already durable; else asks the flusher for it
    /// and parks the answer. The caller checked there is room to park.
    fn answer_when_durable(
        &mut self,
        reply_to: ReplyTo,
        header: &FrameHeader,
        ack: ProduceAck,
        answer: DurableAnswer,
    ) -> Reply {
        let handle = PartitionHandle(header.partition);
        let log = self
            .topics
            .partition(handle)
            .expect("the caller looked it up");
        if ack.last_offset < log.durable_offset() {
            return durable_reply(ack, answer);
        }
        log.request_durable(ack.last_offset);
        assert!(self.pending.len() < self.config.pending_acks_max);
        self.pending.push_back(PendingAck {
            appended_at: Instant::now(),
            reply_to,
            session: header.session,
            request_id: header.request_id,
            handle,
            ack,
            answer,
        });
        Reply::Nothing
    }

    fn fetch(&mut self, header: &FrameHeader, payload: &[u8]) -> Reply {
        self.counters.fetch_requests += 1;
        let fetch = match FetchRequest::decode(payload) {
            Ok(fetch) => fetch,
            Err(error) => {
                self.counters.count_bad_frame(&error);
                return Reply::error(ErrorCode::InvalidFrame, error.reason());
            }
        };
        if self
            .topics
            .partition(PartitionHandle(header.partition))
            .is_none()
        {
            return Reply::error(ErrorCode::UnknownTopicOrPartition, "no such partition");
        }
        Reply::Fetch {
            fetch,
            durable_only: header.flags & FLAG_FETCH_DURABLE_ONLY != 0,
        }
    }

    fn metadata(&mut self, header: &FrameHeader, payload: &[u8], frame_bytes_max: usize) -> Reply {
        self.counters.metadata_requests += 1;
        let name = match MetadataRequest::decode(payload) {
            Ok(metadata) => TopicName::new(metadata.topic),
            Err(error) => {
                self.counters.count_bad_frame(&error);
                return Reply::error(ErrorCode::InvalidFrame, error.reason());
            }
        };
        let Some(name) = name else {
            return Reply::error(
                ErrorCode::InvalidTopic,
                "topic names are 1-249 of [a-zA-Z0-9._-]",
            );
        };
        if let Some(topic) = self.topics.by_name(name.as_str()) {
            return Reply::Metadata(MetadataResponse {
                topic_id: topic.id,
                partition_count: topic.partitions.len() as u16,
                frame_bytes_max: frame_bytes_max as u32,
            });
        }
        let wants_creation = header.flags & FLAG_METADATA_AUTO_CREATE != 0;
        if !wants_creation || !self.config.auto_create_topics {
            return Reply::error(ErrorCode::UnknownTopicOrPartition, "no such topic");
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
                return Reply::error(ErrorCode::Busy, "too many topic creations at once");
            }
            self.creating.push(name);
        }
        Reply::error(ErrorCode::TopicNotReady, "creating the topic")
    }

    /// Writes `reply`'s payload into `out` (the room the transport reserved after the frame
    /// header) and returns the frame header to send, its `length` set. `None` for
    /// [`Reply::Nothing`]. Errors are counted here, once per answer sent.
    pub fn render(
        &mut self,
        reply: Reply,
        request: &FrameHeader,
        out: &mut [u8],
    ) -> Option<FrameHeader> {
        let (opcode, code, bytes) = match reply {
            Reply::Nothing => return None,
            Reply::Ack(ack) => {
                ack.encode(&mut out[..ProduceAck::BYTES]);
                (Opcode::ProduceAck, ErrorCode::None, ProduceAck::BYTES)
            }
            Reply::Error { code, reason } => {
                let bytes = reason.len().min(out.len());
                out[..bytes].copy_from_slice(&reason.as_bytes()[..bytes]);
                (Opcode::Error, code, bytes)
            }
            Reply::Metadata(response) => {
                response.encode(&mut out[..MetadataResponse::BYTES]);
                (
                    Opcode::MetadataResponse,
                    ErrorCode::None,
                    MetadataResponse::BYTES,
                )
            }
            Reply::Pong { bytes } => {
                out[..bytes].copy_from_slice(&self.scratch[..bytes]);
                (Opcode::Pong, ErrorCode::None, bytes)
            }
            Reply::Fetch {
                fetch,
                durable_only,
            } => match self.render_fetch(request, fetch, durable_only, out) {
                Ok((bytes, code)) => (Opcode::FetchData, code, bytes),
                Err(reason) => {
                    let code = ErrorCode::MessageTooLarge;
                    let bytes = reason.len().min(out.len());
                    out[..bytes].copy_from_slice(&reason.as_bytes()[..bytes]);
                    (Opcode::Error, code, bytes)
                }
            },
        };
        if code != ErrorCode::None {
            self.counters.count_error(code);
        }
        Some(FrameHeader {
            opcode,
            flags: 0,
            error: code as u16,
            session: request.session,
            request_id: request.request_id,
            partition: request.partition,
            length: bytes as u32,
        })
    }

    /// FetchData: the log's bounds, then whole batches from `fetch.offset`. Out of range is
    /// answered as FetchData with the error set and no batches, so the client learns the
    /// log's bounds and can reset its position.
    fn render_fetch(
        &mut self,
        request: &FrameHeader,
        fetch: FetchRequest,
        durable_only: bool,
        out: &mut [u8],
    ) -> Result<(usize, ErrorCode), &'static str> {
        let Some(log) = self.topics.partition(PartitionHandle(request.partition)) else {
            unreachable!("serve looked the partition up and nothing ran in between");
        };
        // `max_bytes` is a soft limit (the first batch is served even when larger, as in
        // Kafka); the frame is the hard one.
        let read = log.read(
            fetch.offset,
            fetch.max_bytes as usize,
            durable_only,
            &mut out[FetchDataHeader::BYTES..],
        );
        let (bytes, code) = match read {
            Ok(bytes) => (bytes, ErrorCode::None),
            Err(ReadError::OffsetOutOfRange { .. }) => (0, ErrorCode::OffsetOutOfRange),
            Err(ReadError::BatchTooLarge { .. }) => {
                return Err("the batch at this offset is larger than a frame of this transport")
            }
        };
        FetchDataHeader {
            high_watermark: log.log_end_offset(),
            durable_offset: log.durable_offset(),
            log_start_offset: log.log_start_offset(),
        }
        .encode(out);
        self.counters.fetch_bytes += bytes as u64;
        Ok((FetchDataHeader::BYTES + bytes, code))
    }

    /// Moves the parked answers whose offsets are durable (or whose partition failed) into
    /// `due`; returns how many. At most [`DUE_ANSWERS_MAX`] per call.
    pub fn due_answers(&mut self, due: &mut [Option<DueAnswer>; DUE_ANSWERS_MAX]) -> usize {
        let Service {
            pending,
            topics,
            counters,
            ..
        } = self;
        let mut ready = 0usize;
        pending.retain(|waiting| {
            if ready == due.len() {
                return true;
            }
            let reply = match topics.partition(waiting.handle) {
                None => Reply::error(ErrorCode::UnknownTopicOrPartition, "partition deleted"),
                Some(log) if log.storage_error().is_some() => Reply::error(
                    ErrorCode::StorageError,
                    "partition cannot persist: see the data plane's log",
                ),
                Some(log) if waiting.ack.last_offset < log.durable_offset() => {
                    counters.durable_acks += 1;
                    durable_reply(waiting.ack, waiting.answer)
                }
                Some(_) => return true,
            };
            let waited_ns = match reply {
                Reply::Error { .. } => 0,
                _ => waiting.appended_at.elapsed().as_nanos() as u64,
            };
            due[ready] = Some(DueAnswer {
                reply_to: waiting.reply_to,
                request: FrameHeader {
                    opcode: Opcode::Produce,
                    flags: Acks::Durable.to_flags(),
                    error: 0,
                    session: waiting.session,
                    request_id: waiting.request_id,
                    partition: waiting.handle.0,
                    length: 0,
                },
                reply,
                waited_ns,
            });
            ready += 1;
            false
        });
        ready
    }

    /// Forgets the parked answers for a transport peer that is gone (a reclaimed IPC
    /// channel, a closed RDMA connection).
    pub fn forget_answers_to(&mut self, gone: impl Fn(&ReplyTo) -> bool) -> usize {
        let before = self.pending.len();
        self.pending.retain(|waiting| !gone(&waiting.reply_to));
        before - self.pending.len()
    }
}

fn durable_reply(ack: ProduceAck, answer: DurableAnswer) -> Reply {
    match answer {
        DurableAnswer::Ack => Reply::Ack(ack),
        DurableAnswer::DuplicateSequence => Reply::error(
            ErrorCode::DuplicateSequence,
            "batch appended before (durable)",
        ),
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
