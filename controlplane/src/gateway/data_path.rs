//! The gateway's way to the data plane's logs: Produce and Fetch of whole record batches
//! over one IPC channel (`precursor_client::IpcSession`, the native frames of
//! docs/protocol.md in shared-memory rings, frames up to a quarter of `ipc.ring_bytes`).
//!
//! ```text
//!  connection tasks ──DataRequest──> std mpsc ──> precursor-kafka-io thread
//!        ^                                          | owns the IpcSession; resolves topic
//!        |                                          | names to partition handles (native
//!        |                                          | Metadata, cached); try_send, poll
//!        |                                          v
//!        |                               request ring ──> data plane lcore
//!        |                               response ring <──┘
//!        └──────── oneshot(reply) <── matched by request id
//! ```
//!
//! Requests leave in the order the connection tasks made them (a request for a topic
//! being resolved waits with the later ones of that topic), so the batches of one
//! connection reach a partition in the order the client sent them: idempotent producers
//! rely on it.
//!
//! The thread waits on its channel while nothing is in flight; while answers are due it
//! polls the response ring, spinning [`SPINS`] empty polls, then yielding, then sleeping
//! [`IDLE_SLEEP_US`] between polls. Fetches in flight are limited to
//! [`FETCH_FRAMES_IN_FLIGHT_MAX`] frames' worth of answer bytes, so the response ring
//! always has room for the small answers (a durable ack that finds the ring full would be
//! dropped by the data plane).
//!
//! When the data plane stops or restarts, every request in flight is answered
//! [`DataPathError::Unavailable`] (Kafka clients retry: idempotent producers without
//! duplicates) and the thread claims a channel of the new data plane.

use bytes::Bytes;
use precursor_client::{IpcConfig, IpcSession};
use precursor_config::Config;
use precursor_protocol::frame::{
    Acks, ErrorCode, FetchDataHeader, FetchRequest, FrameHeader, MetadataRequest, MetadataResponse,
    Opcode, PartitionHandle, ProduceAck,
};
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::mpsc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// A request of the data path that got no answer this long is answered Timeout, in ms.
pub const DATA_REQUEST_TIMEOUT_MS: u64 = 30_000;
/// While disconnected, connection attempts are this far apart, in milliseconds.
pub const RECONNECT_INTERVAL_MS: u64 = 200;
/// Frames' worth of fetch answers in flight at most (the ring holds four frames).
pub const FETCH_FRAMES_IN_FLIGHT_MAX: usize = 2;
/// Empty polls spent spinning before the thread yields.
const SPINS: u32 = 200;
/// Empty polls spent yielding before the thread sleeps between polls.
const YIELDS: u32 = 2_000;
/// Sleep between polls of a quiet ring while answers are due, in microseconds.
const IDLE_SLEEP_US: u64 = 50;
/// Requests taken from the channel per loop, at most (bounded loop).
const REQUESTS_PER_LOOP_MAX: usize = 1_024;
/// Topics whose handles are remembered, at most (the data plane holds 4096).
const TOPICS_CACHED_MAX: usize = 8_192;

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

type ProduceReply = oneshot::Sender<Result<Option<ProduceAck>, DataPathError>>;
type FetchReply = oneshot::Sender<Result<Fetched, DataPathError>>;

enum DataRequest {
    Produce {
        topic: String,
        partition: u32,
        acks: Acks,
        batch: Bytes,
        reply: ProduceReply,
    },
    Fetch {
        topic: String,
        partition: u32,
        offset: u64,
        max_bytes: u32,
        reply: FetchReply,
    },
}

impl DataRequest {
    fn topic(&self) -> &str {
        match self {
            DataRequest::Produce { topic, .. } | DataRequest::Fetch { topic, .. } => topic,
        }
    }

    fn partition(&self) -> u32 {
        match self {
            DataRequest::Produce { partition, .. } | DataRequest::Fetch { partition, .. } => {
                *partition
            }
        }
    }

    fn fail(self, error: DataPathError) {
        match self {
            DataRequest::Produce { reply, .. } => {
                let _ = reply.send(Err(error));
            }
            DataRequest::Fetch { reply, .. } => {
                let _ = reply.send(Err(error));
            }
        }
    }
}

/// The handle connection tasks use.
pub struct DataPath {
    requests: Option<mpsc::Sender<DataRequest>>,
    /// Why there is no data path thread (IPC disabled, thread not started).
    unavailable: String,
}

impl DataPath {
    /// Starts the `precursor-kafka-io` thread for the node in `config`.
    pub fn start(config: &Config) -> DataPath {
        if !config.ipc.enabled {
            return DataPath {
                requests: None,
                unavailable: "ipc.enabled = false: the Kafka gateway reaches the logs over IPC"
                    .into(),
            };
        }
        let (sender, receiver) = mpsc::channel();
        let ipc = IpcConfig::new(config.cnc_dir());
        let started = std::thread::Builder::new()
            .name("precursor-kafka-io".into())
            .spawn(move || IoThread::new(ipc, receiver).run());
        match started {
            Ok(_) => DataPath {
                requests: Some(sender),
                unavailable: String::new(),
            },
            Err(error) => DataPath {
                requests: None,
                unavailable: format!("cannot start the data path thread: {error}"),
            },
        }
    }

    fn send(&self, request: DataRequest) {
        let unavailable = || DataPathError::Unavailable(self.unavailable.clone());
        match &self.requests {
            Some(sender) => {
                if let Err(mpsc::SendError(request)) = sender.send(request) {
                    request.fail(DataPathError::Unavailable(
                        "the data path thread stopped".into(),
                    ));
                }
            }
            None => request.fail(unavailable()),
        }
    }

    /// Appends one batch to `topic`/`partition` with `acks`; `None` for acks=none. The
    /// request is queued now, in call order.
    pub fn produce(
        &self,
        topic: &str,
        partition: u32,
        acks: Acks,
        batch: Bytes,
    ) -> impl Future<Output = Result<Option<ProduceAck>, DataPathError>> + Send + 'static {
        let (reply, answer) = oneshot::channel();
        self.send(DataRequest::Produce {
            topic: topic.to_string(),
            partition,
            acks,
            batch,
            reply,
        });
        async move {
            answer.await.unwrap_or_else(|_| {
                Err(DataPathError::Unavailable(
                    "the data path thread stopped".into(),
                ))
            })
        }
    }

    /// Reads whole batches from the one holding `offset`, at most `max_bytes` of them
    /// (native Fetch: a first batch larger than that is refused MessageTooLarge).
    pub fn fetch(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
        max_bytes: u32,
    ) -> impl Future<Output = Result<Fetched, DataPathError>> + Send + 'static {
        let (reply, answer) = oneshot::channel();
        self.send(DataRequest::Fetch {
            topic: topic.to_string(),
            partition,
            offset,
            max_bytes,
            reply,
        });
        async move {
            answer.await.unwrap_or_else(|_| {
                Err(DataPathError::Unavailable(
                    "the data path thread stopped".into(),
                ))
            })
        }
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

/// What an answer in flight goes back to.
enum Waiting {
    Produce(ProduceReply),
    Fetch {
        reply: FetchReply,
        max_bytes: usize,
    },
    Metadata {
        topic: String,
    },
    /// acks=none: the data plane answers only errors, and nobody waits for them.
    Nothing,
}

struct InFlight {
    waiting: Waiting,
    topic: Option<String>,
    deadline: Instant,
}

/// A topic's handle, or the requests waiting for it.
enum TopicEntry {
    Known { topic_id: u16, partitions: u16 },
    Resolving(VecDeque<DataRequest>),
}

struct IoThread {
    config: IpcConfig,
    requests: mpsc::Receiver<DataRequest>,
    session: Option<IpcSession>,
    last_connect: Option<Instant>,
    problem: String,
    topics: HashMap<String, TopicEntry>,
    /// Encoded frames that found the request ring full, in order, with their waiting.
    backlog: VecDeque<(Vec<u8>, InFlight, u64)>,
    in_flight: HashMap<u64, InFlight>,
    fetch_bytes_in_flight: usize,
}

impl IoThread {
    fn new(config: IpcConfig, requests: mpsc::Receiver<DataRequest>) -> IoThread {
        IoThread {
            config,
            requests,
            session: None,
            last_connect: None,
            problem: "not connected yet".into(),
            topics: HashMap::new(),
            backlog: VecDeque::new(),
            in_flight: HashMap::new(),
            fetch_bytes_in_flight: 0,
        }
    }

    fn run(mut self) {
        let mut idle_polls = 0u32;
        loop {
            let busy = !self.in_flight.is_empty() || !self.backlog.is_empty();
            if !busy {
                // Nothing due: sleep on the channel.
                match self
                    .requests
                    .recv_timeout(Duration::from_millis(RECONNECT_INTERVAL_MS))
                {
                    Ok(request) => self.take(request),
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    Err(mpsc::RecvTimeoutError::Disconnected) => return,
                }
            }
            let mut work = 0usize;
            for _ in 0..REQUESTS_PER_LOOP_MAX {
                match self.requests.try_recv() {
                    Ok(request) => {
                        self.take(request);
                        work += 1;
                    }
                    Err(mpsc::TryRecvError::Empty) => break,
                    Err(mpsc::TryRecvError::Disconnected) => return,
                }
            }
            work += self.flush_backlog();
            work += self.poll();
            self.expire();
            if work > 0 {
                idle_polls = 0;
            } else if busy {
                idle_polls = idle_polls.saturating_add(1);
                if idle_polls <= SPINS {
                    std::hint::spin_loop();
                } else if idle_polls <= SPINS + YIELDS {
                    std::thread::yield_now();
                } else {
                    std::thread::sleep(Duration::from_micros(IDLE_SLEEP_US));
                }
            }
        }
    }

    /// Connects when there is no session (at most every RECONNECT_INTERVAL_MS).
    fn connected(&mut self) -> bool {
        if self.session.is_some() {
            return true;
        }
        let due = self
            .last_connect
            .is_none_or(|t| t.elapsed() >= Duration::from_millis(RECONNECT_INTERVAL_MS));
        if !due {
            return false;
        }
        self.last_connect = Some(Instant::now());
        match IpcSession::connect(&self.config) {
            Ok(session) => {
                self.session = Some(session);
                self.problem.clear();
                true
            }
            Err(error) => {
                self.problem = error.to_string();
                false
            }
        }
    }

    /// Drops the session: everything in flight or waiting is answered Unavailable.
    fn disconnect(&mut self, why: String) {
        self.session = None;
        self.problem = why.clone();
        let error = DataPathError::Unavailable(why);
        for (_, in_flight) in self.in_flight.drain() {
            answer_error(in_flight.waiting, error.clone());
        }
        for (_, in_flight, _) in self.backlog.drain(..) {
            answer_error(in_flight.waiting, error.clone());
        }
        for (_, entry) in self.topics.drain() {
            if let TopicEntry::Resolving(waiting) = entry {
                for request in waiting {
                    request.fail(error.clone());
                }
            }
        }
        self.fetch_bytes_in_flight = 0;
    }

    fn take(&mut self, request: DataRequest) {
        if !self.connected() {
            let why = format!("no IPC channel to the data plane: {}", self.problem);
            request.fail(DataPathError::Unavailable(why));
            return;
        }
        let topic = request.topic().to_string();
        match self.topics.get_mut(&topic) {
            Some(TopicEntry::Known {
                topic_id,
                partitions,
            }) if request.partition() < u32::from(*partitions) => {
                let (topic_id, partitions) = (*topic_id, *partitions);
                self.send_data(request, topic_id, partitions);
            }
            Some(TopicEntry::Resolving(waiting)) => waiting.push_back(request),
            known_or_none => {
                // Unknown, or a partition past the count learnt: the topic may have grown
                // (CreatePartitions) since, so it is resolved again; a partition still past
                // the new count is refused then (`send_data`), once.
                if known_or_none.is_none() && self.topics.len() >= TOPICS_CACHED_MAX {
                    self.topics
                        .retain(|_, e| matches!(e, TopicEntry::Resolving(_)));
                }
                self.topics.insert(
                    topic.clone(),
                    TopicEntry::Resolving(VecDeque::from([request])),
                );
                let length = MetadataRequest { topic: &topic }.encoded_len();
                let mut payload = vec![0u8; length];
                MetadataRequest { topic: &topic }.encode(&mut payload);
                self.queue(
                    Opcode::Metadata,
                    0,
                    0,
                    &payload,
                    Waiting::Metadata {
                        topic: topic.clone(),
                    },
                    None,
                );
            }
        }
    }

    fn send_data(&mut self, request: DataRequest, topic_id: u16, partitions: u16) {
        let partition = request.partition();
        if partition >= u32::from(partitions) {
            request.fail(DataPathError::Refused {
                code: ErrorCode::UnknownTopicOrPartition,
                reason: format!("partition {partition} of {partitions}"),
            });
            return;
        }
        let handle = PartitionHandle::new(topic_id, partition as u16).0;
        match request {
            DataRequest::Produce {
                topic,
                acks,
                batch,
                reply,
                ..
            } => {
                if acks == Acks::None {
                    // No answer comes for acks=none (errors only): done once queued.
                    let _ = reply.send(Ok(None));
                    self.queue(
                        Opcode::Produce,
                        acks.to_flags(),
                        handle,
                        &batch,
                        Waiting::Nothing,
                        None,
                    );
                    return;
                }
                self.queue(
                    Opcode::Produce,
                    acks.to_flags(),
                    handle,
                    &batch,
                    Waiting::Produce(reply),
                    Some(topic),
                );
            }
            DataRequest::Fetch {
                topic,
                offset,
                max_bytes,
                reply,
                ..
            } => {
                let mut payload = [0u8; FetchRequest::BYTES];
                FetchRequest { offset, max_bytes }.encode(&mut payload);
                let answer_bytes = (max_bytes as usize).min(self.frame_bytes_max());
                self.queue(
                    Opcode::Fetch,
                    0,
                    handle,
                    &payload,
                    Waiting::Fetch {
                        reply,
                        max_bytes: answer_bytes,
                    },
                    Some(topic),
                );
            }
        }
    }

    fn frame_bytes_max(&self) -> usize {
        self.session.as_ref().map_or(0, IpcSession::frame_bytes_max)
    }

    /// Encodes a frame and sends it, or puts it in the backlog (ring full, earlier frames
    /// waiting, or too many fetch bytes in flight).
    fn queue(
        &mut self,
        opcode: Opcode,
        flags: u16,
        partition: u32,
        payload: &[u8],
        waiting: Waiting,
        topic: Option<String>,
    ) {
        let Some(session) = self.session.as_mut() else {
            answer_error(waiting, DataPathError::Unavailable(self.problem.clone()));
            return;
        };
        let request_id = session.next_request_id();
        let mut header = FrameHeader::new(opcode, request_id, partition, payload.len());
        header.flags = flags;
        let mut frame = vec![0u8; precursor_protocol::frame::FRAME_HEADER_BYTES + payload.len()];
        header.encode(&mut frame);
        frame[precursor_protocol::frame::FRAME_HEADER_BYTES..].copy_from_slice(payload);
        let in_flight = InFlight {
            waiting,
            topic,
            deadline: Instant::now() + Duration::from_millis(DATA_REQUEST_TIMEOUT_MS),
        };
        self.backlog.push_back((frame, in_flight, request_id));
        self.flush_backlog();
    }

    /// Sends backlogged frames in order while the ring and the fetch budget allow.
    fn flush_backlog(&mut self) -> usize {
        let mut sent = 0;
        let fetch_budget = FETCH_FRAMES_IN_FLIGHT_MAX * self.frame_bytes_max();
        while let Some((frame, in_flight, _)) = self.backlog.front() {
            let fetch_bytes = match &in_flight.waiting {
                Waiting::Fetch { max_bytes, .. } => *max_bytes,
                _ => 0,
            };
            if fetch_bytes > 0
                && self.fetch_bytes_in_flight > 0
                && self.fetch_bytes_in_flight + fetch_bytes > fetch_budget
            {
                break;
            }
            let Some(session) = self.session.as_mut() else {
                break;
            };
            match session.try_send_frame(frame) {
                Ok(true) => {}
                Ok(false) => break,
                Err(error) if error.is_ipc_disconnect() => {
                    self.disconnect(error.to_string());
                    return sent;
                }
                Err(error) => {
                    let (_, in_flight, _) = self.backlog.pop_front().expect("front");
                    answer_error(
                        in_flight.waiting,
                        DataPathError::Refused {
                            code: ErrorCode::MessageTooLarge,
                            reason: error.to_string(),
                        },
                    );
                    continue;
                }
            }
            let (_, in_flight, request_id) = self.backlog.pop_front().expect("front");
            sent += 1;
            self.fetch_bytes_in_flight += fetch_bytes;
            if !matches!(in_flight.waiting, Waiting::Nothing) {
                self.in_flight.insert(request_id, in_flight);
            }
        }
        sent
    }

    /// Takes every answer that arrived.
    fn poll(&mut self) -> usize {
        let Some(session) = self.session.as_mut() else {
            return 0;
        };
        let mut answers: Vec<(FrameHeader, Bytes)> = Vec::new();
        let mut taken = 0;
        // One copy out of the ring; fetched batches are a slice of it.
        let polled = session.poll(|header, payload| {
            taken += 1;
            answers.push((*header, Bytes::copy_from_slice(payload)));
        });
        if let Err(error) = polled {
            if error.is_ipc_disconnect() {
                self.disconnect(error.to_string());
            } else {
                eprintln!("precursor-controlplane: kafka gateway: IPC: {error}");
                self.disconnect(error.to_string());
            }
            return taken;
        }
        for (header, payload) in answers {
            self.answer(header, payload);
        }
        taken
    }

    fn answer(&mut self, header: FrameHeader, payload: Bytes) {
        let Some(in_flight) = self.in_flight.remove(&header.request_id) else {
            return; // an acks=none error, or an answer after its timeout
        };
        let refused = match header.error_code() {
            Some(ErrorCode::None) => None,
            Some(ErrorCode::OffsetOutOfRange) if header.opcode == Opcode::FetchData => None,
            Some(code) => Some(code),
            None => Some(ErrorCode::InvalidFrame),
        };
        if let Waiting::Fetch { max_bytes, .. } = &in_flight.waiting {
            self.fetch_bytes_in_flight = self.fetch_bytes_in_flight.saturating_sub(*max_bytes);
        }
        if let Some(code) = refused {
            if code == ErrorCode::UnknownTopicOrPartition {
                // Deleted, or deleted and created again under a new id: resolve anew.
                if let Some(topic) = &in_flight.topic {
                    if matches!(self.topics.get(topic), Some(TopicEntry::Known { .. })) {
                        self.topics.remove(topic);
                    }
                }
            }
            let reason = if header.opcode == Opcode::Error {
                String::from_utf8_lossy(&payload).into_owned()
            } else {
                code.describe().to_string()
            };
            self.answer_refusal(in_flight.waiting, code, reason);
            return;
        }
        match in_flight.waiting {
            Waiting::Nothing => {}
            Waiting::Produce(reply) => {
                let ack = ProduceAck::decode(&payload).map_err(|e| DataPathError::Refused {
                    code: ErrorCode::InvalidFrame,
                    reason: e.to_string(),
                });
                let _ = reply.send(ack.map(Some));
            }
            Waiting::Fetch { reply, .. } => {
                let fetched = FetchDataHeader::decode(&payload)
                    .map(|(fetch_header, _)| Fetched {
                        header: fetch_header,
                        out_of_range: header.error_code() == Some(ErrorCode::OffsetOutOfRange),
                        batches: payload.slice(FetchDataHeader::BYTES..),
                    })
                    .map_err(|e| DataPathError::Refused {
                        code: ErrorCode::InvalidFrame,
                        reason: e.to_string(),
                    });
                let _ = reply.send(fetched);
            }
            Waiting::Metadata { topic } => match MetadataResponse::decode(&payload) {
                Ok(metadata) => {
                    let waiting = self.topics.insert(
                        topic,
                        TopicEntry::Known {
                            topic_id: metadata.topic_id,
                            partitions: metadata.partition_count,
                        },
                    );
                    if let Some(TopicEntry::Resolving(waiting)) = waiting {
                        for request in waiting {
                            self.send_data(request, metadata.topic_id, metadata.partition_count);
                        }
                    }
                }
                Err(error) => self.answer_refusal(
                    Waiting::Metadata { topic },
                    ErrorCode::InvalidFrame,
                    error.to_string(),
                ),
            },
        }
    }

    fn answer_refusal(&mut self, waiting: Waiting, code: ErrorCode, reason: String) {
        let error = DataPathError::Refused { code, reason };
        match waiting {
            Waiting::Metadata { topic } => {
                if let Some(TopicEntry::Resolving(waiting)) = self.topics.remove(&topic) {
                    for request in waiting {
                        request.fail(error.clone());
                    }
                }
            }
            other => answer_error(other, error),
        }
    }

    /// Answers Timeout to what waited longer than DATA_REQUEST_TIMEOUT_MS.
    fn expire(&mut self) {
        if self.in_flight.is_empty() {
            return;
        }
        let now = Instant::now();
        let expired: Vec<u64> = self
            .in_flight
            .iter()
            .filter(|(_, f)| f.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            if let Some(in_flight) = self.in_flight.remove(&id) {
                if let Waiting::Fetch { max_bytes, .. } = &in_flight.waiting {
                    self.fetch_bytes_in_flight =
                        self.fetch_bytes_in_flight.saturating_sub(*max_bytes);
                }
                let error = DataPathError::Timeout(DATA_REQUEST_TIMEOUT_MS);
                match in_flight.waiting {
                    Waiting::Metadata { topic } => {
                        if let Some(TopicEntry::Resolving(waiting)) = self.topics.remove(&topic) {
                            for request in waiting {
                                request.fail(error.clone());
                            }
                        }
                    }
                    other => answer_error(other, error),
                }
            }
        }
    }
}

fn answer_error(waiting: Waiting, error: DataPathError) {
    match waiting {
        Waiting::Produce(reply) => {
            let _ = reply.send(Err(error));
        }
        Waiting::Fetch { reply, .. } => {
            let _ = reply.send(Err(error));
        }
        Waiting::Metadata { .. } | Waiting::Nothing => {}
    }
}
