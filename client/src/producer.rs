//! The producer: batches per partition, one Produce frame per batch, retransmission until
//! acknowledged, idempotence by producer id and per-partition sequence numbers.
//!
//! Life of a message: `send()` appends it to its partition's open batch. A batch closes when
//! the next message would not fit (`batch_bytes_max`, capped by the broker's frame limit) or
//! when it has lingered `linger_us`; a closed batch is encoded once into a frame and sent as
//! soon as its partition has fewer than `in_flight_max` un-acknowledged batches (a full batch
//! facing a full window makes `send()` wait, receiving acks meanwhile). An un-acked batch is
//! retransmitted (same bytes, same request id) on the [`RetransmitSchedule`]; its messages
//! fail with an error once `delivery_timeout_ms` has passed since their `send()`.
//!
//! Refusals (go-back-N): the broker appends a partition's batches strictly in sequence
//! order, so when it refuses one with a retriable error (`Busy`: e.g. its next segment is
//! not ready; `OutOfOrderSequence`: an earlier batch is missing), every batch pipelined
//! behind it is refused too. The producer then resends, after a short wait that doubles
//! per consecutive refused round ([`RESEND_WAIT_US_FIRST`] .. [`RESEND_WAIT_US_MAX`]), every
//! in-flight batch from the first refused one (from the oldest, for out-of-order), in
//! sequence order, and sends nothing new for the partition before that round: a refused
//! round costs the in-flight window once, never a retransmit timeout. Only a refusal that
//! answers a batch's latest transmission counts; one answering an earlier transmission
//! (already superseded by a resend) is ignored.
//!
//! Leaders (see `leaders.rs`): a topic's first use asks the bootstrap broker's Metadata
//! and, from a broker of a cluster, each partition's leader's own; each partition's
//! batches go to its leader with that broker's handle. `NotLeaderOrFollower` (the
//! leadership moved, or a restarted leader is still deciding) holds the partition: nothing
//! is sent to it until a look-up of its leader (at once, then backing off
//! [`RetransmitSchedule::wait`]) finds a broker that says it leads it; then every in-flight
//! batch goes there in one in-order round, with the same producer id, epoch and sequences,
//! so the new leader recognises those it already holds (idempotence state is replicated
//! with the batches). A batch unanswered after [`SILENT_TRIES_BEFORE_LOOK_UP`]
//! transmissions makes its partition *silent*: until its broker answers again, the other
//! brokers are asked every [`SILENT_LOOK_UP_INTERVAL`] (not at the retransmit back-off)
//! whether it moved, and it moves as soon as one of them leads it; until then the batch
//! keeps going to the broker that led it. Messages of a
//! partition without a leader fail at their delivery timeout with `ClientError::NoLeader`.
//!
//! Progress happens inside `send()` when a batch closes, and in `poll()` / `flush()`: call
//! `poll()` when there is nothing to send, so acks are read and timers run.

use rustc_hash::FxHashMap;
use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use precursor_protocol::compression::Compression;
use precursor_protocol::frame::{
    self, batch_bytes_max, Acks, ErrorCode, FrameHeader, Opcode, PartitionHandle, ProduceAck,
    FRAME_HEADER_BYTES,
};
use precursor_protocol::record_batch::{
    record_encoded_bytes, RecordBatchBuilder, BATCH_HEADER_BYTES, NATIVE_PRODUCER_ID_MIN,
    NO_PRODUCER_EPOCH, NO_PRODUCER_ID, NO_SEQUENCE,
};

use crate::leaders::{
    learn_topic, look_up, per_broker_schedule, set_frame_partition, Leader, LeaderQuery,
    LeaderView, Route,
};
use crate::metadata::TopicMetadata;
use crate::partitioner::{partition_for_key, StickyPartition};
use crate::retransmit::RetransmitSchedule;
use crate::transport::{BrokerSlot, Transport};
use crate::{ClientConfig, ClientError};
use precursor_protocol::record_batch::increment_sequence;

/// At most this many datagrams are read per receive burst, so a flood of acks cannot starve
/// the timers.
const RECV_BURST_MAX: usize = 256;
/// Producer epoch of an idempotent producer (bumped never: a new id is drawn instead).
const PRODUCER_EPOCH: i16 = 0;
/// Wait before the first resend round after a refusal, in microseconds: the broker is
/// expected to take the batches again almost at once (a roll onto a prepared segment).
pub const RESEND_WAIT_US_FIRST: u64 = 50;
/// Longest wait between consecutive refused resend rounds, in microseconds.
pub const RESEND_WAIT_US_MAX: u64 = 5_000;
/// Doublings of the resend wait beyond which it is at its cap anyway (no shift overflow).
const RESEND_DOUBLINGS_MAX: u32 = 16;
/// A batch of a replicated topic unanswered after this many transmissions (one request
/// timeout, 20 ms at the defaults) makes its partition silent: the other brokers are asked
/// whether its leader moved, every [`SILENT_LOOK_UP_INTERVAL`] until its broker answers
/// (a leader that died is replaced only once the metadata quorum fenced it: the first
/// look-ups may come too early). A lost datagram costs a few Metadata requests, no more.
pub const SILENT_TRIES_BEFORE_LOOK_UP: u32 = 1;
/// While a partition of a replicated topic is silent, its leader is looked up this often:
/// a new leader is in place within tens of milliseconds of the quorum fencing the old one,
/// and the retransmit back-off (up to 500 ms by default) must not be what the producer
/// waits for. A look-up asks each other broker once, briefly (`per_broker_schedule`).
pub const SILENT_LOOK_UP_INTERVAL: Duration = Duration::from_millis(10);
/// Topics one producer sends to (its partition keys number them in 16 bits).
const TOPICS_MAX: usize = 1 << 16;

/// How to produce.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProducerConfig {
    pub client: ClientConfig,
    /// What the broker must have done before it acknowledges a batch.
    pub acks: Acks,
    /// How long an open batch waits for more messages before it is sent.
    pub linger_us: u64,
    /// Upper bound of one encoded batch; capped by `frame::batch_bytes_max` of the broker's
    /// `frame_bytes_max` (less the frame and FetchData headers, so every batch can be
    /// fetched back over the same port).
    pub batch_bytes_max: usize,
    /// Un-acknowledged batches per partition.
    pub in_flight_max: usize,
    pub compression: Compression,
    /// Producer id + sequence numbers, so retransmissions are never appended twice.
    /// Ignored (off) with `acks = none`: without acks a lost datagram would leave a
    /// sequence gap the broker refuses every later batch for.
    pub idempotent: bool,
    /// Ask the broker to create a topic it does not know.
    pub auto_create_topics: bool,
}

impl Default for ProducerConfig {
    fn default() -> ProducerConfig {
        ProducerConfig {
            client: ClientConfig::default(),
            acks: Acks::Leader,
            linger_us: 1_000,
            batch_bytes_max: 8_192,
            in_flight_max: 5,
            compression: Compression::None,
            idempotent: true,
            auto_create_topics: false,
        }
    }
}

/// A producer-wide message number, in `send()` order, starting at 0.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId(pub u64);

/// The outcome of one message.
#[derive(Clone, Debug)]
pub struct Delivery {
    pub id: MessageId,
    /// The topic's id at the broker the partition was sent to (ids are per broker).
    pub topic_id: u16,
    pub partition: u16,
    /// The offset the broker gave it; `None` with `acks = none`, on error, and when the
    /// broker reports a duplicate of a batch appended earlier (offsets no longer known).
    pub offset: Option<u64>,
    /// From the `send()` call to the receipt of the ack (to the send, with `acks = none`).
    pub latency_ns: u64,
    pub error: Option<ClientError>,
}

/// Counters of a producer.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct ProducerStats {
    /// Messages accepted by `send()`.
    pub messages_sent: u64,
    /// Messages delivered without error.
    pub messages_delivered: u64,
    /// Messages reported with an error.
    pub errors: u64,
    /// Batches sent the first time.
    pub batches_sent: u64,
    /// Batch transmissions after the first because no answer came in time (a lost
    /// datagram, a lost IPC channel).
    pub retransmits: u64,
    /// Batch transmissions after a refusal (busy, out of order): the in-order resends of
    /// the go-back-N rounds, each at most the in-flight window.
    pub resends: u64,
    /// Resend rounds (one per refused window, however many of its batches were refused).
    pub resend_rounds: u64,
    /// Answers that asked for a retry (out-of-order sequence, busy), stale ones included.
    pub retriable_errors: u64,
    /// Batches the broker reported as duplicates of earlier ones.
    pub duplicates: u64,
    /// Batches sent and not yet acknowledged or failed.
    pub in_flight_batches: u64,
    /// Messages accepted and not yet delivered or failed (open batches included).
    pub in_flight_messages: u64,
    /// Frames received that answered nothing in flight (late duplicates of acks).
    pub stale_answers: u64,
    /// Look-ups of a topic's leaders after its first Metadata (NotLeaderOrFollower, a
    /// silent broker, a leader still unknown).
    pub leader_look_ups: u64,
    /// Partitions moved to another broker (their in-flight batches resent there).
    pub leader_moves: u64,
}

/// A partition as this producer names it: its topic's index in the producer and the
/// partition. Brokers number topics themselves: their handles are routes ([`Route`]).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct PartitionKey {
    topic_index: u16,
    partition: u16,
}

#[derive(Copy, Clone, Debug)]
struct PendingMessage {
    id: u64,
    accepted_at: Instant,
}

/// The messages of a partition's open batch (their records are in the partition's builder).
struct OpenBatch {
    messages: Vec<PendingMessage>,
    opened_at: Instant,
}

struct InFlightBatch {
    request_id: u64,
    /// The whole frame (header + batch), encoded once, retransmitted as is.
    frame: Vec<u8>,
    messages: Vec<PendingMessage>,
    /// Transmissions on the retransmit schedule (the first, then one per timeout).
    attempts: u32,
    /// Transmissions whose answer has not arrived. A refusal acts only when it answers the
    /// latest one (this reaches 0); a timeout presumes the earlier answers lost (1).
    answers_awaited: u32,
    last_sent_at: Instant,
    next_due: Instant,
    give_up_at: Instant,
    /// The last retriable refusal (code and the broker's reason), reported if the batch
    /// is given up: "not enough replicas" says more than "no acknowledgement".
    last_refusal: Option<(u16, String)>,
}

/// A go-back-N round: at `due`, every in-flight batch whose request id is at least
/// `from_request_id` (request ids grow with sequence numbers) is sent again, in order.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
struct PendingResend {
    from_request_id: u64,
    due: Instant,
}

struct PartitionState {
    key: PartitionKey,
    /// Since when its leader is not known (NotLeaderOrFollower, or none yet): nothing is
    /// sent to it, batches wait in `in_flight` until a look-up finds the leader.
    awaiting_leader_since: Option<Instant>,
    producer_id: i64,
    next_sequence: i32,
    /// A batch failed for good: start a new producer id once nothing is in flight.
    needs_new_producer_id: bool,
    /// Holds the open batch's records; reused (cleared) from batch to batch.
    builder: RecordBatchBuilder,
    open: Option<OpenBatch>,
    /// Oldest first (ascending sequence).
    in_flight: VecDeque<InFlightBatch>,
    /// After a refusal: the round that resends the refused batches. While it is pending,
    /// new batches of the partition are queued in `in_flight` unsent (the round sends them).
    resend: Option<PendingResend>,
    /// Consecutive refused rounds (reset by an ack): sets the wait before the next.
    refused_rounds: u32,
    /// Since when its leader has not answered [`SILENT_TRIES_BEFORE_LOOK_UP`] transmissions
    /// of a batch (replicated topics only): its leader is looked up every
    /// [`SILENT_LOOK_UP_INTERVAL`] until the broker answers or the partition moves.
    silent_since: Option<Instant>,
}

struct TopicEntry {
    name: String,
    /// `topic_id` is the first broker's; the frame limit the smallest of its brokers'.
    meta: TopicMetadata,
    sticky: StickyPartition,
    /// One per partition: where its batches go.
    leaders: Vec<Leader>,
    /// Learned from a broker of a cluster: leaders can move.
    replicated: bool,
    /// A look-up of its leaders that is due.
    look_up: Option<LeaderLookUp>,
    /// Consecutive look-ups that left a wanted partition without a leader (the back-off).
    look_up_rounds: u32,
    /// When the latest look-up of its leaders ran: silent partitions ask again only
    /// [`SILENT_LOOK_UP_INTERVAL`] after it.
    looked_up_at: Option<Instant>,
    /// The brokers the latest look-up asked, for errors.
    asked: String,
}

/// A look-up of a topic's leaders waiting for its time.
#[derive(Clone, Debug, PartialEq, Eq)]
struct LeaderLookUp {
    due: Instant,
    /// The partitions it is for.
    wanted: Vec<u16>,
    /// Ask first: the broker that answered NotLeaderOrFollower knows who leads now.
    prefer: Option<BrokerSlot>,
    /// Do not ask: the broker that stopped answering (its batches keep retrying it).
    skip: Option<BrokerSlot>,
}

/// The part of a producer that handles answers: separate from the transport so a frame
/// borrowed from the transport's buffer can be handled in place.
struct ProducerState {
    config: ProducerConfig,
    schedule: RetransmitSchedule,
    idempotent: bool,
    topics: Vec<TopicEntry>,
    topic_index: HashMap<String, usize>,
    /// Looked up several times per message: a hash of the key, not SipHash.
    partitions: FxHashMap<PartitionKey, PartitionState>,
    /// Which partition an answer is about: the broker it came from and its handle.
    routes: FxHashMap<Route, PartitionKey>,
    /// The topic of the last `send`: most producers send to one topic at a time.
    last_topic: Option<usize>,
    deliveries: VecDeque<Delivery>,
    next_message_id: u64,
    stats: ProducerStats,
    frame_pool: Vec<Vec<u8>>,
    message_pool: Vec<Vec<PendingMessage>>,
    /// A finished batch before it is copied behind its frame header.
    batch_buf: Vec<u8>,
}

/// Produces messages to the leaders of its partitions (over UDP; over IPC and RDMA to the
/// data plane attached). Not thread-safe by design: one per thread.
pub struct Producer {
    transport: Transport,
    state: ProducerState,
}

/// A random positive 63-bit number (never 0), from the process's random hash keys, the
/// clock and the process id: no dependency on a random-number crate.
/// An idempotent producer id for this client: random in
/// `NATIVE_PRODUCER_ID_MIN..=i64::MAX` (the Kafka gateway's ids are all below it).
pub(crate) fn random_producer_id() -> i64 {
    let span = (i64::MAX - NATIVE_PRODUCER_ID_MIN) as u64 + 1;
    let id = NATIVE_PRODUCER_ID_MIN + (random_positive_i64() as u64 % span) as i64;
    debug_assert!(id >= NATIVE_PRODUCER_ID_MIN);
    id
}

pub(crate) fn random_positive_i64() -> i64 {
    let mut hasher = RandomState::new().build_hasher();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    hasher.write_u128(now);
    hasher.write_u32(std::process::id());
    let value = (hasher.finish() & i64::MAX as u64) as i64;
    value.max(1)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The largest batch allowed for a broker frame limit and the configured batch size.
pub(crate) fn batch_bytes_limit(batch_bytes_max: usize, frame_bytes_max: usize) -> usize {
    batch_bytes_max
        .min(frame::batch_bytes_max(frame_bytes_max))
        .max(BATCH_HEADER_BYTES + 1)
}

/// Whether a batch holding `current_bytes` (uncompressed, header included: an upper bound of
/// its encoded size, as the builder falls back to no compression when a codec does not
/// shrink the records) can take a record of `record_bytes` under `limit_bytes`.
pub(crate) fn batch_has_room(
    current_bytes: usize,
    record_bytes: usize,
    limit_bytes: usize,
) -> bool {
    current_bytes + record_bytes <= limit_bytes
}

impl Producer {
    pub fn new(config: ProducerConfig) -> Result<Producer, ClientError> {
        if config.in_flight_max == 0 {
            return Err(ClientError::Usage(
                "producer in_flight_max must be at least 1".to_string(),
            ));
        }
        let transport = Transport::open(&config.client)?;
        let schedule = RetransmitSchedule::from_config(&config.client);
        let idempotent = config.idempotent && config.acks != Acks::None;
        Ok(Producer {
            transport,
            state: ProducerState {
                schedule,
                idempotent,
                topics: Vec::new(),
                topic_index: HashMap::new(),
                partitions: FxHashMap::default(),
                routes: FxHashMap::default(),
                last_topic: None,
                deliveries: VecDeque::new(),
                next_message_id: 0,
                stats: ProducerStats::default(),
                frame_pool: Vec::new(),
                message_pool: Vec::new(),
                batch_buf: Vec::new(),
                config,
            },
        })
    }

    pub fn config(&self) -> &ProducerConfig {
        &self.state.config
    }

    /// Accepts one message for `topic`. Fetches the topic's metadata on its first use.
    /// Partition: `partition` if given, else Kafka's murmur2 of the key, else the topic's
    /// sticky partition (moves on each time its batch closes). Waits (receiving acks) only
    /// when the partition's batch is full and its in-flight window too.
    pub fn send(
        &mut self,
        topic: &str,
        partition: Option<u16>,
        key: Option<&[u8]>,
        value: &[u8],
    ) -> Result<MessageId, ClientError> {
        let accepted_at = Instant::now();
        let timestamp_ms = now_ms();
        let topic_index = self.ensure_topic(topic)?;
        if partition.is_some_and(|p| p >= self.state.topics[topic_index].meta.partition_count) {
            // Perhaps grown since it was learnt. A look-up that gets no answer leaves the
            // count known: the send is refused UnknownPartition with it below.
            let _ = self.refresh_metadata(topic);
        }
        let entry = &self.state.topics[topic_index];
        let meta = entry.meta;
        let partition = match (partition, key) {
            (Some(p), _) => p,
            (None, Some(key)) => partition_for_key(key, meta.partition_count),
            (None, None) => entry.sticky.current(),
        };
        if partition >= meta.partition_count {
            return Err(ClientError::UnknownPartition {
                topic: topic.to_string(),
                partition,
                partition_count: meta.partition_count,
            });
        }
        if let Some(error) = entry.leaders[partition as usize].elsewhere_error(topic, partition) {
            return Err(error);
        }
        let at = PartitionKey {
            topic_index: topic_index as u16,
            partition,
        };
        let limit_bytes =
            batch_bytes_limit(self.state.config.batch_bytes_max, meta.frame_bytes_max);
        let alone_bytes = BATCH_HEADER_BYTES + record_encoded_bytes(0, 0, key, Some(value), &[]);
        if alone_bytes > limit_bytes {
            return Err(ClientError::MessageTooLarge {
                bytes: alone_bytes,
                limit_bytes,
            });
        }
        if !self.state.partitions.contains_key(&at) {
            let p = self.state.new_partition(at, accepted_at, timestamp_ms);
            self.state.partitions.insert(at, p);
        }

        // The open batch is full for this record: it must go before the record can be added.
        let full = {
            let p = &self.state.partitions[&at];
            p.open.is_some()
                && !batch_has_room(
                    p.builder.uncompressed_bytes(),
                    p.builder
                        .next_record_bytes(timestamp_ms, key, Some(value), &[]),
                    limit_bytes,
                )
        };
        if full {
            self.wait_for_window(at)?;
            self.state
                .close_and_transmit(&mut self.transport, at, Instant::now())?;
        }

        let state = &mut self.state;
        let id = state.next_message_id;
        state.next_message_id += 1;
        if state.partitions[&at].open.is_none() {
            state.open_batch(at, accepted_at, timestamp_ms);
        }
        let p = state.partitions.get_mut(&at).expect("inserted above");
        p.builder.append(timestamp_ms, key, value, &[]);
        p.open
            .as_mut()
            .expect("opened above")
            .messages
            .push(PendingMessage { id, accepted_at });
        state.stats.messages_sent += 1;
        state.stats.in_flight_messages += 1;

        // Send at once when lingering is off or the batch is as full as it gets, if the
        // window allows; otherwise poll() or the next send() takes it.
        let smallest_record_bytes = record_encoded_bytes(0, 0, None, Some(&[]), &[]);
        let now_full = !batch_has_room(
            p.builder.uncompressed_bytes(),
            smallest_record_bytes,
            limit_bytes,
        );
        let linger_off = state.config.linger_us == 0;
        if (linger_off || now_full) && p.in_flight.len() < state.config.in_flight_max {
            state.close_and_transmit(&mut self.transport, at, Instant::now())?;
            self.receive_burst(None)?;
        }
        Ok(MessageId(id))
    }

    /// Non-blocking progress: reads acks, sends lingered batches, retransmits, fails expired
    /// batches. Returns how much it did (frames received + frames sent).
    pub fn poll(&mut self) -> Result<usize, ClientError> {
        let received = self.receive_burst(None)?;
        let sent = self.run_timers(Instant::now())?;
        Ok(received + sent)
    }

    /// Hands every finished message (delivered or failed) to `f`, oldest first.
    pub fn drain_deliveries(&mut self, mut f: impl FnMut(Delivery)) {
        while let Some(delivery) = self.state.deliveries.pop_front() {
            f(delivery);
        }
    }

    /// Sends every open batch and waits until every message is delivered or failed.
    /// `ClientError::Timeout` if that takes longer than `timeout`.
    pub fn flush(&mut self, timeout: Duration) -> Result<(), ClientError> {
        let started = Instant::now();
        let deadline = started + timeout;
        loop {
            let now = Instant::now();
            // Close every open batch whose window has room; the others wait for acks.
            let ready: Vec<PartitionKey> = self
                .state
                .partitions
                .values()
                .filter(|p| p.open.is_some() && p.in_flight.len() < self.state.config.in_flight_max)
                .map(|p| p.key)
                .collect();
            for key in ready {
                self.state
                    .close_and_transmit(&mut self.transport, key, now)?;
            }
            self.run_timers(now)?;
            if self.state.stats.in_flight_messages == 0 {
                return Ok(());
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(ClientError::Timeout {
                    what: format!(
                        "flush ({} messages in {} batches still unacknowledged)",
                        self.state.stats.in_flight_messages, self.state.stats.in_flight_batches
                    ),
                    broker: self.transport.broker(BrokerSlot(0)),
                    waited_ms: started.elapsed().as_millis() as u64,
                    tries: 0,
                });
            }
            let wake = self.state.next_timer(now).unwrap_or(deadline).min(deadline);
            self.receive_burst(Some(wake.saturating_duration_since(now)))?;
        }
    }

    pub fn stats(&self) -> ProducerStats {
        self.state.stats
    }

    /// Counters of the socket underneath.
    pub fn transport_stats(&self) -> crate::TransportStats {
        self.transport.stats
    }

    /// The topic's id and partition count (fetching metadata if not known yet).
    pub fn partition_count(&mut self, topic: &str) -> Result<u16, ClientError> {
        let index = self.ensure_topic(topic)?;
        Ok(self.state.topics[index].meta.partition_count)
    }

    /// Asks for the topic's metadata again. A topic grown since it was learnt
    /// (CreatePartitions) is used with its new count from then on: keys map over it, the
    /// sticky partition cycles over it, its new partitions take messages. Leaders of the
    /// partitions known already are left to the look-ups that errors start. A send to a
    /// partition past the known count refreshes by itself, once. Returns the count.
    pub fn refresh_metadata(&mut self, topic: &str) -> Result<u16, ClientError> {
        let index = self.ensure_topic(topic)?;
        let view = self.learn_topic(topic)?;
        self.state.grow_topic(index, view);
        Ok(self.state.topics[index].meta.partition_count)
    }

    fn ensure_topic(&mut self, topic: &str) -> Result<usize, ClientError> {
        if let Some(index) = self.state.last_topic {
            if self.state.topics[index].name == topic {
                return Ok(index);
            }
        }
        if let Some(&index) = self.state.topic_index.get(topic) {
            self.state.last_topic = Some(index);
            return Ok(index);
        }
        if self.state.topics.len() >= TOPICS_MAX {
            return Err(ClientError::Usage(format!(
                "a producer sends to at most {TOPICS_MAX} topics"
            )));
        }
        let view = self.learn_topic(topic)?;
        Ok(self.state.add_topic(topic, view))
    }

    /// A topic's first look-up (`leaders::learn_topic`); answers to in-flight batches
    /// that arrive meanwhile are handled.
    fn learn_topic(&mut self, topic: &str) -> Result<LeaderView, ClientError> {
        let state = &mut self.state;
        let schedule = state.schedule;
        let auto_create = state.config.auto_create_topics;
        let client = state.config.client.clone();
        learn_topic(
            &mut self.transport,
            &client,
            &schedule,
            topic,
            auto_create,
            &mut |slot, header, payload| state.on_frame(slot, header, payload, Instant::now()),
        )
    }

    /// Receives up to a burst of frames; the first receive waits up to `wait`.
    fn receive_burst(&mut self, wait: Option<Duration>) -> Result<usize, ClientError> {
        let mut received = 0;
        for i in 0..RECV_BURST_MAX {
            if !self.transport.recv(if i == 0 { wait } else { None })? {
                break;
            }
            if let Some((slot, header, payload)) = self.transport.frame() {
                self.state.on_frame(slot, &header, payload, Instant::now());
                received += 1;
            }
        }
        Ok(received)
    }

    /// Look-ups of leaders that are due, then the state's timers. Returns frames sent.
    fn run_timers(&mut self, now: Instant) -> Result<usize, ClientError> {
        self.look_up_due_leaders(now);
        self.state.run_timers(&mut self.transport, now)
    }

    /// Runs every leader look-up that is due (each bounded: brokers are asked once each,
    /// briefly) and moves the partitions whose leader it found.
    fn look_up_due_leaders(&mut self, now: Instant) {
        for topic_index in 0..self.state.topics.len() {
            let Some(due) = self.state.topics[topic_index].look_up.clone() else {
                continue;
            };
            if now < due.due {
                continue;
            }
            let state = &mut self.state;
            state.topics[topic_index].look_up = None;
            state.topics[topic_index].looked_up_at = Some(now);
            state.stats.leader_look_ups += 1;
            let topic = state.topics[topic_index].name.clone();
            let per_broker = per_broker_schedule(&state.schedule);
            let query = LeaderQuery {
                topic: &topic,
                auto_create: false,
                first: due.prefer.into_iter().collect(),
                skip: due.skip,
                wanted: Some(due.wanted.clone()),
                first_schedule: per_broker,
                per_broker,
            };
            let view = look_up(&mut self.transport, &query, &mut |slot, header, payload| {
                state.on_frame(slot, header, payload, Instant::now())
            });
            state.apply_look_up(topic_index, &due, view.ok(), Instant::now());
        }
    }

    /// Runs receive/timer rounds until `key` has room in its window. Bounded: every
    /// in-flight batch is acked or fails by its delivery timeout.
    fn wait_for_window(&mut self, key: PartitionKey) -> Result<(), ClientError> {
        loop {
            let now = Instant::now();
            self.run_timers(now)?;
            if self.state.partitions[&key].in_flight.len() < self.state.config.in_flight_max {
                return Ok(());
            }
            let wake = self
                .state
                .next_timer(now)
                .unwrap_or(now + self.state.schedule.wait(0));
            self.receive_burst(Some(wake.saturating_duration_since(now)))?;
        }
    }
}

impl PartitionState {
    /// Takes the batch at `position` out of flight (acked or failed). A pending resend
    /// round with nothing left to resend is dropped, so new batches go out at once.
    fn remove_in_flight(&mut self, position: usize) -> InFlightBatch {
        let batch = self
            .in_flight
            .remove(position)
            .expect("position is in range");
        if let Some(resend) = self.resend {
            if !self
                .in_flight
                .iter()
                .any(|b| b.request_id >= resend.from_request_id)
            {
                self.resend = None;
            }
        }
        batch
    }
}

/// The wait before resend round `round` (1 = the first after an ack), in microseconds.
pub(crate) fn resend_wait_us(round: u32) -> u64 {
    let doublings = round.saturating_sub(1).min(RESEND_DOUBLINGS_MAX);
    (RESEND_WAIT_US_FIRST << doublings).min(RESEND_WAIT_US_MAX)
}

/// Schedules (or widens) the go-back-N round of `p` to start at batch `from_request_id`,
/// `wait(round)` after `now` (round 1 = the first since an ack).
fn schedule_resend(
    p: &mut PartitionState,
    from_request_id: u64,
    now: Instant,
    wait: impl FnOnce(u32) -> Duration,
) {
    match &mut p.resend {
        // Same round: the later refusals of one window widen it, never delay it.
        Some(pending) => pending.from_request_id = pending.from_request_id.min(from_request_id),
        None => {
            p.refused_rounds = p.refused_rounds.saturating_add(1);
            p.resend = Some(PendingResend {
                from_request_id,
                due: now + wait(p.refused_rounds),
            });
        }
    }
}

impl ProducerState {
    /// Adds a topic from its first look-up; returns its index.
    fn add_topic(&mut self, topic: &str, view: LeaderView) -> usize {
        let seed = random_positive_i64() as u64;
        let index = self.topics.len();
        debug_assert!(index < TOPICS_MAX);
        let first_topic_id = view
            .leaders
            .iter()
            .find_map(|l| l.route())
            .map_or(0, |r| r.handle.topic_id());
        let meta = TopicMetadata {
            topic_id: first_topic_id,
            partition_count: view.partition_count,
            frame_bytes_max: view.frame_bytes_max,
        };
        for (partition, leader) in view.leaders.iter().enumerate() {
            if let Some(route) = leader.route() {
                let key = PartitionKey {
                    topic_index: index as u16,
                    partition: partition as u16,
                };
                self.routes.insert(route, key);
            }
        }
        self.topics.push(TopicEntry {
            name: topic.to_string(),
            meta,
            sticky: StickyPartition::new(seed, meta.partition_count),
            leaders: view.leaders,
            replicated: view.replicated,
            look_up: None,
            look_up_rounds: 0,
            looked_up_at: None,
            asked: view.asked,
        });
        self.topic_index.insert(topic.to_string(), index);
        index
    }

    fn new_partition(
        &mut self,
        key: PartitionKey,
        now: Instant,
        timestamp_ms: i64,
    ) -> PartitionState {
        let producer_id = if self.idempotent {
            random_producer_id()
        } else {
            NO_PRODUCER_ID
        };
        let leader_known = self.leader(key).route().is_some();
        if !leader_known {
            self.want_look_up(key, now, None, None);
        }
        PartitionState {
            key,
            awaiting_leader_since: (!leader_known).then_some(now),
            producer_id,
            next_sequence: 0,
            needs_new_producer_id: false,
            builder: self.new_builder(producer_id, timestamp_ms),
            open: None,
            in_flight: VecDeque::new(),
            resend: None,
            refused_rounds: 0,
            silent_since: None,
        }
    }

    fn leader(&self, key: PartitionKey) -> &Leader {
        &self.topics[key.topic_index as usize].leaders[key.partition as usize]
    }

    /// Asks for a look-up of `key`'s leader (merged into one already due for its topic):
    /// at once after a success, else after the back-off of the topic's failed rounds.
    fn want_look_up(
        &mut self,
        key: PartitionKey,
        now: Instant,
        prefer: Option<BrokerSlot>,
        skip: Option<BrokerSlot>,
    ) {
        let schedule = self.schedule;
        let topic = &mut self.topics[key.topic_index as usize];
        match &mut topic.look_up {
            Some(pending) => {
                if !pending.wanted.contains(&key.partition) {
                    pending.wanted.push(key.partition);
                }
                pending.prefer = pending.prefer.or(prefer);
                if pending.skip != skip {
                    pending.skip = None;
                }
            }
            None => {
                let wait = match topic.look_up_rounds {
                    0 => Duration::ZERO,
                    rounds => schedule.wait(rounds - 1),
                };
                let mut due = now + wait;
                if skip.is_some() {
                    // For a silent broker: polled, at most every SILENT_LOOK_UP_INTERVAL.
                    if let Some(last) = topic.looked_up_at {
                        due = due.max(last + SILENT_LOOK_UP_INTERVAL);
                    }
                }
                topic.look_up = Some(LeaderLookUp {
                    due,
                    wanted: vec![key.partition],
                    prefer,
                    skip,
                });
            }
        }
    }

    /// A fresh look-up of a topic: partitions past the count known so far are added with
    /// their leaders (the topic grew); a smaller count changes nothing (topics never shrink
    /// while they exist).
    fn grow_topic(&mut self, topic_index: usize, view: LeaderView) {
        let topic = &mut self.topics[topic_index];
        let known = topic.meta.partition_count;
        if view.partition_count <= known {
            return;
        }
        for (partition, leader) in view.leaders.into_iter().enumerate().skip(known as usize) {
            if let Some(route) = leader.route() {
                let key = PartitionKey {
                    topic_index: topic_index as u16,
                    partition: partition as u16,
                };
                self.routes.insert(route, key);
            }
            topic.leaders.push(leader);
        }
        topic.meta.partition_count = view.partition_count;
        topic.meta.frame_bytes_max = topic.meta.frame_bytes_max.min(view.frame_bytes_max);
        assert_eq!(topic.leaders.len(), usize::from(view.partition_count));
    }

    /// What a look-up of `topic_index`'s leaders found (`None`: no broker answered):
    /// partitions whose leader is now known there move (their in-flight batches resent
    /// there in order); those led where this client cannot send fail; those still without
    /// a leader wait for the next look-up, after a longer back-off.
    fn apply_look_up(
        &mut self,
        topic_index: usize,
        asked: &LeaderLookUp,
        view: Option<LeaderView>,
        now: Instant,
    ) {
        let mut failed: Vec<(PartitionKey, ClientError)> = Vec::new();
        if let Some(view) = view {
            let topic = &mut self.topics[topic_index];
            topic.asked = view.asked;
            topic.replicated |= view.replicated;
            topic.meta.frame_bytes_max = topic.meta.frame_bytes_max.min(view.frame_bytes_max);
            let count = topic.meta.partition_count.min(view.partition_count);
            for (partition, found) in view.leaders.into_iter().enumerate().take(count as usize) {
                let key = PartitionKey {
                    topic_index: topic_index as u16,
                    partition: partition as u16,
                };
                let topic = &mut self.topics[topic_index];
                let before = topic.leaders[partition].route();
                match found {
                    Leader::Known(route) => {
                        let moved = before != Some(route);
                        if moved {
                            if let Some(old) = before {
                                self.routes.remove(&old);
                            }
                            self.routes.insert(route, key);
                            topic.leaders[partition] = Leader::Known(route);
                        }
                        let Some(p) = self.partitions.get_mut(&key) else {
                            continue;
                        };
                        if !moved && p.awaiting_leader_since.is_none() {
                            continue;
                        }
                        if moved && before.is_some() {
                            self.stats.leader_moves += 1;
                        }
                        p.awaiting_leader_since = None;
                        if moved {
                            p.silent_since = None;
                        }
                        for batch in p.in_flight.iter_mut() {
                            set_frame_partition(&mut batch.frame, route.handle);
                            if moved {
                                // Answers to earlier transmissions cannot reach us now.
                                batch.answers_awaited = 0;
                            }
                        }
                        if !p.in_flight.is_empty() {
                            // Every batch in flight, oldest first, at once.
                            p.resend = Some(PendingResend {
                                from_request_id: 0,
                                due: now,
                            });
                        }
                    }
                    // Nobody else leads it: a partition waiting keeps waiting, one whose
                    // broker went silent keeps retrying that broker.
                    Leader::Unknown => {}
                    elsewhere @ Leader::Elsewhere { .. } => {
                        let error = elsewhere
                            .elsewhere_error(&topic.name, partition as u16)
                            .expect("led elsewhere");
                        if let Some(old) = before {
                            self.routes.remove(&old);
                        }
                        topic.leaders[partition] = elsewhere;
                        failed.push((key, error));
                    }
                }
            }
        }
        for (key, error) in failed {
            let Some(p) = self.partitions.get_mut(&key) else {
                continue;
            };
            p.awaiting_leader_since = None;
            p.resend = None;
            let batches: Vec<InFlightBatch> = p.in_flight.drain(..).collect();
            for batch in batches {
                self.fail_batch(key, batch, &error, now);
            }
        }
        // Settled: every partition it was for has a leader now (or cannot have one here).
        let settled = asked.wanted.iter().all(|&partition| {
            let key = PartitionKey {
                topic_index: topic_index as u16,
                partition,
            };
            !matches!(self.leader(key), Leader::Unknown)
                && self
                    .partitions
                    .get(&key)
                    .is_none_or(|p| p.awaiting_leader_since.is_none())
        });
        let topic = &mut self.topics[topic_index];
        topic.look_up_rounds = if settled {
            0
        } else {
            topic.look_up_rounds.saturating_add(1)
        };
        // Partitions still without a leader ask again (after the back-off).
        let waiting: Vec<PartitionKey> = self
            .partitions
            .values()
            .filter(|p| {
                p.key.topic_index as usize == topic_index && p.awaiting_leader_since.is_some()
            })
            .map(|p| p.key)
            .collect();
        for key in waiting {
            self.want_look_up(key, now, asked.prefer, None);
        }
    }

    fn new_builder(&self, producer_id: i64, timestamp_ms: i64) -> RecordBatchBuilder {
        let epoch = if self.idempotent {
            PRODUCER_EPOCH
        } else {
            NO_PRODUCER_EPOCH
        };
        RecordBatchBuilder::new(
            self.config.compression,
            producer_id,
            epoch,
            NO_SEQUENCE,
            timestamp_ms,
        )
    }

    /// Starts an empty batch for `key` (a new producer id first, if a failure asked for
    /// one and nothing of the old id is in flight any more).
    fn open_batch(&mut self, key: PartitionKey, now: Instant, timestamp_ms: i64) {
        let messages = self.message_pool.pop().unwrap_or_default();
        let p = &self.partitions[&key];
        debug_assert!(p.open.is_none());
        let fresh = (p.needs_new_producer_id && p.in_flight.is_empty())
            .then(random_producer_id)
            .map(|id| (id, self.new_builder(id, timestamp_ms)));
        let p = self.partitions.get_mut(&key).expect("known partition");
        if let Some((producer_id, builder)) = fresh {
            p.producer_id = producer_id;
            p.next_sequence = 0;
            p.needs_new_producer_id = false;
            p.builder = builder;
        } else {
            p.builder.clear(NO_SEQUENCE, timestamp_ms);
        }
        p.open = Some(OpenBatch {
            messages,
            opened_at: now,
        });
    }

    /// Closes the open batch of `key`, encodes its frame and sends it to the partition's
    /// leader (or holds it, while a resend round is pending or the leader is not known).
    fn close_and_transmit(
        &mut self,
        transport: &mut Transport,
        key: PartitionKey,
        now: Instant,
    ) -> Result<(), ClientError> {
        let Some(p) = self.partitions.get_mut(&key) else {
            return Ok(());
        };
        let Some(open) = p.open.take() else {
            return Ok(());
        };
        let topic = &mut self.topics[key.topic_index as usize];
        topic
            .sticky
            .on_batch_closed(key.partition, topic.meta.partition_count);
        let leader = &topic.leaders[key.partition as usize];
        if let Some(error) = leader.elsewhere_error(&topic.name, key.partition) {
            // The leader moved where this transport cannot follow.
            p.builder.clear(NO_SEQUENCE, 0);
            self.fail_messages(key, open.messages, &error, now);
            return Ok(());
        }
        let route = leader.route();
        let frame_bytes_max = topic.meta.frame_bytes_max;
        let record_count = p.builder.records_count();
        debug_assert_eq!(record_count, open.messages.len());
        if self.idempotent {
            let base = p.next_sequence;
            p.builder.set_base_sequence(base);
            p.next_sequence = increment_sequence(base, record_count as i32);
        }
        let mut batch = std::mem::take(&mut self.batch_buf);
        p.builder.finish_into(&mut batch);
        let messages = open.messages;
        let message_count = messages.len() as u64;
        if batch.len() > batch_bytes_max(frame_bytes_max) {
            // Cannot happen while batches are sized by their uncompressed upper bound.
            let error = ClientError::MessageTooLarge {
                bytes: batch.len(),
                limit_bytes: batch_bytes_max(frame_bytes_max),
            };
            if self.idempotent {
                p.needs_new_producer_id = true;
            }
            self.batch_buf = batch;
            self.fail_messages(key, messages, &error, now);
            return Ok(());
        }
        let request_id = transport.next_request_id();
        let handle = route.map_or(PartitionHandle(0), |r| r.handle);
        let mut header = FrameHeader::new(Opcode::Produce, request_id, handle.0, batch.len());
        header.flags = self.config.acks.to_flags();
        let mut frame = self.frame_pool.pop().unwrap_or_default();
        frame.clear();
        frame.resize(FRAME_HEADER_BYTES, 0);
        header.encode(&mut frame[..FRAME_HEADER_BYTES]);
        frame.extend_from_slice(&batch);
        self.batch_buf = batch;
        self.stats.batches_sent += 1;

        if self.config.acks == Acks::None {
            // Nothing will answer: delivered once sent.
            let sent = match route {
                Some(route) => transport.send_raw(route.slot, &frame),
                None => Err(self.no_leader_error(key, now, now)),
            };
            if let Err(error) = sent {
                self.fail_messages(key, messages, &error, now);
                self.recycle(frame, Vec::new());
                return match error {
                    ClientError::NoLeader { .. } => Ok(()),
                    error => Err(error),
                };
            }
            let topic_id = handle.topic_id();
            for m in &messages {
                self.deliveries.push_back(Delivery {
                    id: MessageId(m.id),
                    topic_id,
                    partition: key.partition,
                    offset: None,
                    latency_ns: now.saturating_duration_since(m.accepted_at).as_nanos() as u64,
                    error: None,
                });
            }
            self.stats.messages_delivered += message_count;
            self.stats.in_flight_messages -= message_count;
            self.recycle(frame, messages);
            return Ok(());
        }

        let oldest = messages.first().map(|m| m.accepted_at).unwrap_or(now);
        self.stats.in_flight_batches += 1;
        let p = self.partitions.get_mut(&key).expect("known partition");
        // Behind a pending resend round it would only be refused: the round sends it, in
        // order after the refused ones. Without a known leader it waits for one.
        let held = p.resend.is_some() || p.awaiting_leader_since.is_some() || route.is_none();
        p.in_flight.push_back(InFlightBatch {
            request_id,
            frame,
            messages,
            attempts: 1,
            answers_awaited: u32::from(!held),
            last_sent_at: now,
            next_due: self.schedule.next_due(now, 0),
            give_up_at: self.schedule.give_up_at(oldest),
            last_refusal: None,
        });
        let Some(route) = route.filter(|_| !held) else {
            return Ok(());
        };
        // On a socket error the batch stays in flight: retransmission tries again until the
        // delivery timeout, and the caller hears of the error now.
        let sent = p.in_flight.back().expect("pushed above");
        transport.send_raw(route.slot, &sent.frame)
    }

    /// Sends lingered batches, retransmits due ones, fails expired ones. Returns frames sent.
    fn run_timers(
        &mut self,
        transport: &mut Transport,
        now: Instant,
    ) -> Result<usize, ClientError> {
        let linger = Duration::from_micros(self.config.linger_us);
        let mut sent = 0;
        let mut lingered: Vec<PartitionKey> = Vec::new();
        let mut expired: Vec<(PartitionKey, u64)> = Vec::new();
        let mut silent: Vec<(PartitionKey, BrokerSlot)> = Vec::new();
        for p in self.partitions.values_mut() {
            if let Some(open) = &p.open {
                if now.saturating_duration_since(open.opened_at) >= linger
                    && p.in_flight.len() < self.config.in_flight_max
                {
                    lingered.push(p.key);
                }
            }
            let topic = &self.topics[p.key.topic_index as usize];
            let route = topic.leaders[p.key.partition as usize].route();
            let Some(route) = route.filter(|_| p.awaiting_leader_since.is_none()) else {
                // Waiting for a leader: nothing to send, only time to run out.
                for batch in &p.in_flight {
                    if now >= batch.give_up_at {
                        expired.push((p.key, batch.request_id));
                    }
                }
                continue;
            };
            let resend = p.resend;
            let resend_due = resend.filter(|r| now >= r.due);
            if resend_due.is_some() {
                p.resend = None;
                self.stats.resend_rounds += 1;
            }
            // In sequence order: what the broker appends next goes first.
            for batch in p.in_flight.iter_mut() {
                let in_round = |r: PendingResend| batch.request_id >= r.from_request_id;
                if now >= batch.give_up_at {
                    expired.push((p.key, batch.request_id));
                } else if resend_due.is_some_and(in_round) {
                    transport.send_raw(route.slot, &batch.frame)?;
                    // A resend is not a timeout: the retransmit back-off stays where it was.
                    batch.next_due = self
                        .schedule
                        .next_due(now, batch.attempts.saturating_sub(1));
                    batch.answers_awaited += 1;
                    batch.last_sent_at = now;
                    self.stats.resends += 1;
                    sent += 1;
                } else if resend.is_some_and(in_round) {
                    // Waits for its round: sent alone now it would be refused again.
                } else if now >= batch.next_due {
                    transport.send_raw(route.slot, &batch.frame)?;
                    batch.next_due = self.schedule.next_due(now, batch.attempts);
                    batch.attempts += 1;
                    // No answer in time: the earlier ones are presumed lost.
                    batch.answers_awaited = 1;
                    batch.last_sent_at = now;
                    self.stats.retransmits += 1;
                    sent += 1;
                    if topic.replicated && batch.attempts > SILENT_TRIES_BEFORE_LOOK_UP {
                        p.silent_since.get_or_insert(now);
                    }
                }
            }
            if p.silent_since.is_some() && !p.in_flight.is_empty() {
                silent.push((p.key, route.slot));
            }
        }
        for (key, slot) in silent {
            // Has the partition moved away from a broker that stopped answering?
            self.want_look_up(key, now, None, Some(slot));
        }
        for (key, request_id) in expired {
            let Some(batch) = self.take_in_flight(key, request_id) else {
                continue;
            };
            let first_sent_at = batch.messages.first().map(|m| m.accepted_at).unwrap_or(now);
            let p = &self.partitions[&key];
            let route = self.leader(key).route();
            let error = match route.filter(|_| p.awaiting_leader_since.is_none()) {
                Some(route) => {
                    let what = format!(
                        "produce to partition {} of topic {} ({} messages)",
                        key.partition,
                        self.topic_name(key),
                        batch.messages.len()
                    );
                    match &batch.last_refusal {
                        Some((code, reason)) => ClientError::from_broker(
                            format!("{what}, refused until the delivery timeout"),
                            *code,
                            reason.as_bytes(),
                        ),
                        None => {
                            transport.no_answer(route.slot, &what, batch.attempts, first_sent_at)
                        }
                    }
                }
                None => self.no_leader_error(key, first_sent_at, now),
            };
            self.fail_batch(key, batch, &error, now);
        }
        for key in lingered {
            self.close_and_transmit(transport, key, now)?;
            sent += 1;
        }
        Ok(sent)
    }

    /// `ClientError::NoLeader` for `key`, waited for since `since`.
    fn no_leader_error(&self, key: PartitionKey, since: Instant, now: Instant) -> ClientError {
        let topic = &self.topics[key.topic_index as usize];
        ClientError::NoLeader {
            topic: topic.name.clone(),
            partition: key.partition,
            waited_ms: now.saturating_duration_since(since).as_millis() as u64,
            brokers: topic.asked.clone(),
        }
    }

    /// The earliest moment a timer (linger, retransmit, give-up, leader look-up) needs
    /// attention.
    fn next_timer(&self, now: Instant) -> Option<Instant> {
        let linger = Duration::from_micros(self.config.linger_us);
        let mut earliest: Option<Instant> = None;
        let mut consider = |t: Instant| {
            earliest = Some(earliest.map_or(t, |e| e.min(t)));
        };
        for topic in &self.topics {
            if let Some(look_up) = &topic.look_up {
                consider(look_up.due);
            }
        }
        for p in self.partitions.values() {
            if let Some(open) = &p.open {
                if p.in_flight.len() < self.config.in_flight_max {
                    consider((open.opened_at + linger).max(now));
                }
            }
            let waiting = p.awaiting_leader_since.is_some() || self.leader(p.key).route().is_none();
            if waiting {
                // Nothing is sent until a look-up finds the leader: only the give-ups.
                for batch in &p.in_flight {
                    consider(batch.give_up_at);
                }
                continue;
            }
            if let Some(resend) = p.resend {
                consider(resend.due);
            }
            for batch in &p.in_flight {
                consider(batch.next_due.min(batch.give_up_at));
            }
        }
        earliest
    }

    /// Handles one frame from broker `slot`.
    fn on_frame(&mut self, slot: BrokerSlot, header: &FrameHeader, payload: &[u8], now: Instant) {
        if !matches!(header.opcode, Opcode::ProduceAck | Opcode::Error) {
            self.stats.stale_answers += 1;
            return;
        }
        let route = Route {
            slot,
            handle: PartitionHandle(header.partition),
        };
        let Some(&key) = self.routes.get(&route) else {
            // From a broker the partition has moved away from, or about no partition of ours.
            self.stats.stale_answers += 1;
            return;
        };
        let Some(p) = self.partitions.get_mut(&key) else {
            self.stats.stale_answers += 1;
            return;
        };
        // Its leader answers: no longer silent, whatever the answer says.
        p.silent_since = None;
        let Some(position) = p
            .in_flight
            .iter()
            .position(|b| b.request_id == header.request_id)
        else {
            // A late answer to a retransmitted batch that was already acknowledged.
            self.stats.stale_answers += 1;
            return;
        };
        let code = header.error;
        let batch = &mut p.in_flight[position];
        batch.answers_awaited = batch.answers_awaited.saturating_sub(1);
        if code == 0 && header.opcode == Opcode::ProduceAck {
            p.refused_rounds = 0;
            let batch = p.remove_in_flight(position);
            match ProduceAck::decode(payload) {
                Ok(ack) => self.deliver_batch(key, batch, Some(ack.base_offset), now),
                Err(e) => {
                    let error = ClientError::Protocol {
                        detail: format!("produce ack: {e}"),
                    };
                    self.fail_batch(key, batch, &error, now);
                }
            }
            return;
        }
        match ErrorCode::from_u16(code) {
            Some(ErrorCode::DuplicateSequence) => {
                p.refused_rounds = 0;
                let batch = p.remove_in_flight(position);
                self.stats.duplicates += 1;
                self.deliver_batch(key, batch, None, now);
            }
            Some(ErrorCode::NotLeaderOrFollower) => {
                self.stats.retriable_errors += 1;
                if p.in_flight[position].answers_awaited > 0 {
                    // Answers an older transmission: a later one is on its way.
                    return;
                }
                // The leadership moved (or a restarted leader is still deciding): hold the
                // partition and ask who leads it, this broker first (it knows best).
                if p.awaiting_leader_since.is_none() {
                    p.awaiting_leader_since = Some(now);
                }
                p.resend = None;
                self.want_look_up(key, now, Some(slot), None);
            }
            Some(c) if c.is_retriable() => {
                self.stats.retriable_errors += 1;
                if c != ErrorCode::OutOfOrderSequence {
                    let reason = String::from_utf8_lossy(payload).trim().to_string();
                    p.in_flight[position].last_refusal = Some((code, reason));
                }
                if p.in_flight[position].answers_awaited > 0 {
                    // Answers an older transmission: a resend of it is on its way.
                    return;
                }
                // Out of order: the broker misses an earlier batch, so resend from the
                // oldest. Otherwise this batch was not taken (those before it may be).
                let from = if c == ErrorCode::OutOfOrderSequence {
                    p.in_flight[0].request_id
                } else {
                    header.request_id
                };
                let schedule = self.schedule;
                schedule_resend(p, from, now, |round| match c {
                    // Gone in microseconds (a roll, a pipelined window): retry promptly.
                    ErrorCode::Busy | ErrorCode::OutOfOrderSequence => {
                        Duration::from_micros(resend_wait_us(round))
                    }
                    // Replicas, topic creation: the retransmit schedule's pace.
                    _ => schedule.wait(round.saturating_sub(1)),
                });
            }
            _ => {
                let batch = p.remove_in_flight(position);
                let what = format!(
                    "produce to partition {} of topic {}",
                    key.partition,
                    self.topic_name(key)
                );
                let error = ClientError::from_broker(what, code, payload);
                if matches!(
                    ErrorCode::from_u16(code),
                    Some(ErrorCode::UnknownTopicOrPartition)
                ) {
                    // The topic may have been deleted: ask for metadata again next time.
                    let name = self.topic_name(key);
                    self.topic_index.remove(&name);
                    if self.last_topic == Some(key.topic_index as usize) {
                        self.last_topic = None;
                    }
                }
                self.fail_batch(key, batch, &error, now);
            }
        }
    }

    #[cfg(test)]
    fn resend_pending(&self, key: PartitionKey) -> Option<u64> {
        self.partitions[&key].resend.map(|r| r.from_request_id)
    }

    fn take_in_flight(&mut self, key: PartitionKey, request_id: u64) -> Option<InFlightBatch> {
        let p = self.partitions.get_mut(&key)?;
        let position = p
            .in_flight
            .iter()
            .position(|b| b.request_id == request_id)?;
        Some(p.remove_in_flight(position))
    }

    fn topic_name(&self, key: PartitionKey) -> String {
        self.topics[key.topic_index as usize].name.clone()
    }

    /// The topic's id at the broker `key` is sent to (the first broker's while none).
    fn topic_id(&self, key: PartitionKey) -> u16 {
        self.leader(key).route().map_or_else(
            || self.topics[key.topic_index as usize].meta.topic_id,
            |r| r.handle.topic_id(),
        )
    }

    fn deliver_batch(
        &mut self,
        key: PartitionKey,
        batch: InFlightBatch,
        base_offset: Option<u64>,
        now: Instant,
    ) {
        let count = batch.messages.len() as u64;
        let topic_id = self.topic_id(key);
        for (i, m) in batch.messages.iter().enumerate() {
            self.deliveries.push_back(Delivery {
                id: MessageId(m.id),
                topic_id,
                partition: key.partition,
                offset: base_offset.map(|b| b + i as u64),
                latency_ns: now.saturating_duration_since(m.accepted_at).as_nanos() as u64,
                error: None,
            });
        }
        self.stats.messages_delivered += count;
        self.stats.in_flight_messages -= count;
        self.stats.in_flight_batches -= 1;
        self.recycle(batch.frame, batch.messages);
    }

    fn fail_batch(
        &mut self,
        key: PartitionKey,
        batch: InFlightBatch,
        error: &ClientError,
        now: Instant,
    ) {
        self.stats.in_flight_batches -= 1;
        if self.idempotent {
            if let Some(p) = self.partitions.get_mut(&key) {
                // The broker may or may not hold this batch: its sequence state is unknown.
                p.needs_new_producer_id = true;
            }
        }
        let InFlightBatch {
            frame, messages, ..
        } = batch;
        self.fail_messages(key, messages, error, now);
        self.frame_pool.push(frame);
    }

    fn fail_messages(
        &mut self,
        key: PartitionKey,
        messages: Vec<PendingMessage>,
        error: &ClientError,
        now: Instant,
    ) {
        let count = messages.len() as u64;
        let topic_id = self.topic_id(key);
        for m in &messages {
            self.deliveries.push_back(Delivery {
                id: MessageId(m.id),
                topic_id,
                partition: key.partition,
                offset: None,
                latency_ns: now.saturating_duration_since(m.accepted_at).as_nanos() as u64,
                error: Some(error.clone()),
            });
        }
        self.stats.errors += count;
        self.stats.in_flight_messages -= count;
        self.recycle(Vec::new(), messages);
    }

    fn recycle(&mut self, frame: Vec<u8>, mut messages: Vec<PendingMessage>) {
        /// Pools hold at most this many buffers; more are dropped.
        const POOL_BUFFERS_MAX: usize = 1024;
        if frame.capacity() > 0 && self.frame_pool.len() < POOL_BUFFERS_MAX {
            self.frame_pool.push(frame);
        }
        if messages.capacity() > 0 && self.message_pool.len() < POOL_BUFFERS_MAX {
            messages.clear();
            self.message_pool.push(messages);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::partitioner::partition_for_key;
    use crate::TransportKind;
    use precursor_protocol::frame::decode_frame;
    use precursor_protocol::record_batch::{records, RecordBatchHeader};
    use std::net::UdpSocket;

    const TOPIC_ID: u16 = 7;
    const FRAME_LIMIT: usize = 1472;

    /// A producer whose "broker" is a loopback socket that receives and never answers, with
    /// the topic's metadata given instead of fetched. Long timers: nothing lingers or is
    /// retransmitted unless a test asks for it.
    fn producer(tweak: impl FnOnce(&mut ProducerConfig)) -> (Producer, UdpSocket) {
        let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
        silent.set_nonblocking(true).unwrap();
        let mut config = ProducerConfig {
            client: ClientConfig {
                transport: TransportKind::Udp,
                broker: silent.local_addr().unwrap(),
                bootstrap_brokers: Vec::new(),
                bind: Some("127.0.0.1:0".parse().unwrap()),
                request_timeout_ms: 60_000,
                retransmit_backoff_max_ms: 60_000,
                delivery_timeout_ms: 600_000,
            },
            linger_us: 600_000_000,
            batch_bytes_max: 1 << 20,
            in_flight_max: 1_000,
            ..ProducerConfig::default()
        };
        tweak(&mut config);
        let mut producer = Producer::new(config).unwrap();
        producer
            .state
            .add_topic("t", single_broker_view(TOPIC_ID, 4));
        (producer, silent)
    }

    /// What Metadata from one broker outside a cluster says: it leads every partition.
    fn single_broker_view(topic_id: u16, partition_count: u16) -> LeaderView {
        LeaderView {
            partition_count,
            frame_bytes_max: FRAME_LIMIT,
            replicated: false,
            leaders: (0..partition_count)
                .map(|p| {
                    Leader::Known(Route {
                        slot: BrokerSlot(0),
                        handle: PartitionHandle::new(topic_id, p),
                    })
                })
                .collect(),
            asked: "127.0.0.1".to_string(),
        }
    }

    #[test]
    fn a_grown_topic_is_used_with_its_new_count_after_a_refresh() {
        let (mut producer, silent) = producer(|c| c.linger_us = 0);
        assert_eq!(producer.partition_count("t").unwrap(), 4);
        // A smaller or equal count changes nothing.
        producer
            .state
            .grow_topic(0, single_broker_view(TOPIC_ID, 2));
        assert_eq!(producer.state.topics[0].meta.partition_count, 4);
        producer
            .state
            .grow_topic(0, single_broker_view(TOPIC_ID, 6));
        assert_eq!(producer.partition_count("t").unwrap(), 6);
        assert_eq!(producer.state.topics[0].leaders.len(), 6);
        // The new partitions take messages, and their acks find them by route.
        producer.send("t", Some(5), None, b"new").unwrap();
        let sent = frames(&silent);
        let (header, _) = sent.last().expect("a produce to partition 5");
        assert_eq!(header.partition, PartitionHandle::new(TOPIC_ID, 5).0);
        let route = Route {
            slot: BrokerSlot(0),
            handle: PartitionHandle::new(TOPIC_ID, 5),
        };
        assert_eq!(producer.state.routes.get(&route), Some(&key(5)));
    }

    /// Partition `partition` of the first topic.
    fn key(partition: u16) -> PartitionKey {
        PartitionKey {
            topic_index: 0,
            partition,
        }
    }

    /// Every frame the silent socket has received so far.
    fn frames(silent: &UdpSocket) -> Vec<(FrameHeader, Vec<u8>)> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 65_536];
        // Loopback delivery is synchronous with send(): what was sent is there.
        while let Ok(n) = silent.recv(&mut buf) {
            let (header, payload) = decode_frame(&buf[..n]).unwrap();
            out.push((header, payload.to_vec()));
        }
        out
    }

    fn ack(request: &FrameHeader, base_offset: u64, count: u64) -> (FrameHeader, Vec<u8>) {
        let mut payload = vec![0u8; ProduceAck::BYTES];
        ProduceAck {
            base_offset,
            last_offset: base_offset + count - 1,
        }
        .encode(&mut payload);
        let header = FrameHeader::new(
            Opcode::ProduceAck,
            request.request_id,
            request.partition,
            payload.len(),
        );
        (header, payload)
    }

    fn refusal(request: &FrameHeader, code: ErrorCode) -> FrameHeader {
        let mut header =
            FrameHeader::new(Opcode::ProduceAck, request.request_id, request.partition, 0);
        header.error = code as u16;
        header
    }

    fn deliveries(producer: &mut Producer) -> Vec<Delivery> {
        let mut out = Vec::new();
        producer.drain_deliveries(|d| out.push(d));
        out
    }

    #[test]
    fn batch_limit_is_capped_by_the_frame() {
        assert_eq!(batch_bytes_limit(16_384, 1472), 1472 - 32 - 24);
        assert_eq!(batch_bytes_limit(1_000, 8972), 1_000);
        // Never below one batch header plus a byte, whatever the configuration says.
        assert_eq!(batch_bytes_limit(0, 8972), BATCH_HEADER_BYTES + 1);
    }

    #[test]
    fn room_check_counts_header_and_record() {
        assert!(batch_has_room(61, 100, 161));
        assert!(!batch_has_room(61, 101, 161));
    }

    #[test]
    fn random_producer_ids_differ_and_stay_clear_of_the_gateway_range() {
        let a = random_positive_i64();
        let b = random_positive_i64();
        assert!(a > 0 && b > 0);
        assert_ne!(a, b);
        for _ in 0..1_000 {
            assert!(random_producer_id() >= NATIVE_PRODUCER_ID_MIN);
        }
        assert_ne!(random_producer_id(), random_producer_id());
    }

    #[test]
    fn batches_fill_to_the_frame_limit_with_consecutive_sequences() {
        let (mut producer, silent) = producer(|_| {});
        let value = [0xabu8; 100];
        for _ in 0..100 {
            producer.send("t", Some(2), None, &value).unwrap();
        }
        let sent = frames(&silent);
        assert!(
            sent.len() >= 5,
            "100 x 100 bytes make several 1472-byte frames"
        );
        let mut next_sequence = 0;
        let mut producer_id = None;
        for (header, batch) in &sent {
            assert!(FRAME_HEADER_BYTES + batch.len() <= FRAME_LIMIT);
            assert_eq!(header.opcode, Opcode::Produce);
            assert_eq!(header.partition, PartitionHandle::new(TOPIC_ID, 2).0);
            assert_eq!(Acks::from_flags(header.flags), Some(Acks::Leader));
            let batch_header = RecordBatchHeader::parse(batch).unwrap();
            assert_eq!(batch_header.base_sequence, next_sequence);
            assert_eq!(batch_header.producer_epoch, 0);
            assert!(batch_header.producer_id > 0);
            assert_eq!(
                *producer_id.get_or_insert(batch_header.producer_id),
                batch_header.producer_id
            );
            let decoded = records(batch).unwrap();
            assert!(decoded
                .iter()
                .all(|r| r.value.as_deref() == Some(&value[..])));
            next_sequence += decoded.len() as i32;
            // The batch was closed because the next record would not fit.
            let record = record_encoded_bytes(0, decoded.len() as i32, None, Some(&value), &[]);
            assert!(batch.len() + record > batch_bytes_max(FRAME_LIMIT));
        }
        let stats = producer.stats();
        assert_eq!(stats.messages_sent, 100);
        assert_eq!(stats.in_flight_messages, 100);
        assert_eq!(stats.batches_sent, sent.len() as u64);
        assert_eq!(stats.in_flight_batches, sent.len() as u64);
    }

    #[test]
    fn a_message_larger_than_a_frame_is_refused_clearly() {
        let (mut producer, silent) = producer(|_| {});
        let limit = batch_bytes_max(FRAME_LIMIT);
        let fits = (1..limit)
            .rev()
            .find(|&n| {
                BATCH_HEADER_BYTES + record_encoded_bytes(0, 0, None, Some(&vec![0; n]), &[])
                    <= limit
            })
            .unwrap();
        producer.send("t", Some(0), None, &vec![1; fits]).unwrap();
        let error = producer
            .send("t", Some(0), None, &vec![1; fits + 1])
            .unwrap_err();
        assert!(
            matches!(error, ClientError::MessageTooLarge { limit_bytes, .. } if limit_bytes == limit)
        );
        assert!(error.to_string().contains("too large"), "{error}");
        // The one that fits filled its batch and went out at once.
        let sent = frames(&silent);
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].1.len(), batch_bytes_max(FRAME_LIMIT));
    }

    #[test]
    fn unknown_partition_is_an_error() {
        // The send looks the topic up again first (it may have grown): the silent broker
        // lets that time out soon, and the count known stands.
        let (mut producer, _silent) = producer(|c| {
            c.client.request_timeout_ms = 20;
            c.client.retransmit_backoff_max_ms = 20;
            c.client.delivery_timeout_ms = 100;
        });
        let error = producer.send("t", Some(4), None, b"x").unwrap_err();
        assert!(matches!(
            error,
            ClientError::UnknownPartition {
                partition: 4,
                partition_count: 4,
                ..
            }
        ));
    }

    #[test]
    fn keys_land_where_kafka_puts_them_and_unkeyed_messages_stick_per_batch() {
        let (mut producer, silent) = producer(|c| c.linger_us = 0);
        for key in [&b"21"[..], b"foobar", b"abc", b"kafka"] {
            producer.send("t", None, Some(key), b"v").unwrap();
            let sent = frames(&silent);
            assert_eq!(sent.len(), 1);
            let handle = PartitionHandle(sent[0].0.partition);
            assert_eq!(handle.partition(), partition_for_key(key, 4));
            assert_eq!(handle.topic_id(), TOPIC_ID);
        }
        // No key, no partition, linger 0: one batch per message, each on the next partition.
        let mut seen = Vec::new();
        for _ in 0..8 {
            producer.send("t", None, None, b"v").unwrap();
            let sent = frames(&silent);
            assert_eq!(sent.len(), 1);
            seen.push(PartitionHandle(sent[0].0.partition).partition());
        }
        for pair in seen.windows(2) {
            assert_eq!(pair[1], (pair[0] + 1) % 4, "{seen:?}");
        }
    }

    #[test]
    fn acks_deliver_offsets_and_errors_per_message() {
        let (mut producer, silent) = producer(|c| c.linger_us = 0);
        let ids: Vec<MessageId> = (0..4)
            .map(|i| producer.send("t", Some(1), None, &[i]).unwrap())
            .collect();
        let sent = frames(&silent);
        assert_eq!(sent.len(), 4);
        let now = Instant::now();

        let (header, payload) = ack(&sent[1].0, 10, 1);
        producer
            .state
            .on_frame(BrokerSlot(0), &header, &payload, now);
        // The same ack again (the broker answered a retransmission too): ignored.
        producer
            .state
            .on_frame(BrokerSlot(0), &header, &payload, now);
        producer.state.on_frame(
            BrokerSlot(0),
            &refusal(&sent[0].0, ErrorCode::DuplicateSequence),
            &[],
            now,
        );
        producer.state.on_frame(
            BrokerSlot(0),
            &refusal(&sent[2].0, ErrorCode::StorageError),
            b"disk full",
            now,
        );
        // Retriable: stays in flight.
        producer.state.on_frame(
            BrokerSlot(0),
            &refusal(&sent[3].0, ErrorCode::OutOfOrderSequence),
            &[],
            now,
        );

        let got = deliveries(&mut producer);
        assert_eq!(got.len(), 3);
        let by_id = |id: MessageId| got.iter().find(|d| d.id == id).unwrap();
        assert_eq!(by_id(ids[1]).offset, Some(10));
        assert!(by_id(ids[1]).error.is_none());
        assert_eq!(
            by_id(ids[0]).offset,
            None,
            "a duplicate is delivered, offset unknown"
        );
        assert!(by_id(ids[0]).error.is_none());
        let error = by_id(ids[2]).error.as_ref().unwrap();
        assert_eq!(error.error_code(), Some(ErrorCode::StorageError));
        assert!(error.to_string().contains("disk full"), "{error}");
        assert!(got
            .iter()
            .all(|d| d.partition == 1 && d.topic_id == TOPIC_ID));

        let stats = producer.stats();
        assert_eq!(stats.stale_answers, 1);
        assert_eq!(stats.duplicates, 1);
        assert_eq!(stats.retriable_errors, 1);
        assert_eq!(stats.errors, 1);
        assert_eq!(stats.messages_delivered, 2);
        assert_eq!(stats.in_flight_batches, 1);
        assert_eq!(stats.in_flight_messages, 1);

        // A failed batch leaves the broker's sequence state unknown: the partition's next
        // batch (once nothing is in flight) comes from a fresh producer id, sequence 0.
        let (header, payload) = ack(&sent[3].0, 11, 1);
        producer
            .state
            .on_frame(BrokerSlot(0), &header, &payload, now);
        producer.send("t", Some(1), None, b"after").unwrap();
        let next = frames(&silent);
        let old = RecordBatchHeader::parse(&sent[3].1).unwrap();
        let new = RecordBatchHeader::parse(&next[0].1).unwrap();
        assert_ne!(new.producer_id, old.producer_id);
        assert_eq!(new.base_sequence, 0);
    }

    /// Runs the producer's timers as if `micros` had passed (no sleeping in tests).
    fn run_timers_after(producer: &mut Producer, micros: u64) -> usize {
        let later = Instant::now() + Duration::from_micros(micros);
        producer
            .state
            .run_timers(&mut producer.transport, later)
            .unwrap()
    }

    #[test]
    fn a_busy_window_is_resent_once_in_order_from_the_refused_batch() {
        let (mut producer, silent) = producer(|c| {
            c.linger_us = 0;
            c.in_flight_max = 5;
        });
        let handle = key(0);
        for i in 0..5u8 {
            producer.send("t", Some(0), None, &[i]).unwrap();
        }
        let sent = frames(&silent);
        assert_eq!(sent.len(), 5);
        let now = Instant::now();
        // The broker's next segment is not ready: the first batch is refused Busy, the
        // four pipelined behind it out of order. One round, not five.
        producer.state.on_frame(
            BrokerSlot(0),
            &refusal(&sent[0].0, ErrorCode::Busy),
            &[],
            now,
        );
        for (header, _) in &sent[1..] {
            producer.state.on_frame(
                BrokerSlot(0),
                &refusal(header, ErrorCode::OutOfOrderSequence),
                &[],
                now,
            );
        }
        assert_eq!(
            producer.state.resend_pending(handle),
            Some(sent[0].0.request_id)
        );
        assert_eq!(producer.stats().retriable_errors, 5);
        // Nothing before the round's wait, then the whole window, in order, unchanged.
        assert_eq!(run_timers_after(&mut producer, 0), 0);
        assert_eq!(run_timers_after(&mut producer, RESEND_WAIT_US_MAX), 5);
        let resent = frames(&silent);
        assert_eq!(resent, sent, "the same frames, in sequence order");
        assert_eq!(producer.state.resend_pending(handle), None);
        let stats = producer.stats();
        assert_eq!(
            (stats.resends, stats.resend_rounds, stats.retransmits),
            (5, 1, 0)
        );
        for (i, (header, _)) in sent.iter().enumerate() {
            let (ack_header, payload) = ack(header, 100 + i as u64, 1);
            producer
                .state
                .on_frame(BrokerSlot(0), &ack_header, &payload, now);
        }
        let offsets: Vec<Option<u64>> =
            deliveries(&mut producer).iter().map(|d| d.offset).collect();
        assert_eq!(offsets, (100..105).map(Some).collect::<Vec<_>>());
        assert_eq!(producer.stats().errors, 0);
    }

    #[test]
    fn refusals_of_superseded_transmissions_start_no_round() {
        let (mut producer, silent) = producer(|c| {
            c.linger_us = 0;
            c.in_flight_max = 5;
        });
        let handle = key(0);
        for i in 0..4u8 {
            producer.send("t", Some(0), None, &[i]).unwrap();
        }
        let sent = frames(&silent);
        let now = Instant::now();
        // The lcore read the first two before the last two were written: their answers
        // come first, and the round starts before the others' refusals arrive.
        producer.state.on_frame(
            BrokerSlot(0),
            &refusal(&sent[0].0, ErrorCode::Busy),
            &[],
            now,
        );
        producer.state.on_frame(
            BrokerSlot(0),
            &refusal(&sent[1].0, ErrorCode::OutOfOrderSequence),
            &[],
            now,
        );
        assert_eq!(run_timers_after(&mut producer, RESEND_WAIT_US_MAX), 4);
        assert_eq!(frames(&silent).len(), 4);
        // The refusals of the first transmissions of 2 and 3: their resends are on the way.
        for (header, _) in &sent[2..] {
            producer.state.on_frame(
                BrokerSlot(0),
                &refusal(header, ErrorCode::OutOfOrderSequence),
                &[],
                now,
            );
        }
        assert_eq!(producer.state.resend_pending(handle), None);
        assert_eq!(run_timers_after(&mut producer, RESEND_WAIT_US_MAX), 0);
        assert!(frames(&silent).is_empty());
        assert_eq!(producer.stats().resend_rounds, 1);
        // A refusal of the resends (still busy) is a new round, after a longer wait. The
        // timers run at times relative to the refusal's, not the wall clock's (a loaded
        // machine may pass RESEND_WAIT_US_FIRST between two lines).
        let refused_at = Instant::now();
        producer.state.on_frame(
            BrokerSlot(0),
            &refusal(&sent[0].0, ErrorCode::Busy),
            &[],
            refused_at,
        );
        let at = |micros| refused_at + Duration::from_micros(micros);
        let transport = &mut producer.transport;
        let early = producer
            .state
            .run_timers(transport, at(RESEND_WAIT_US_FIRST));
        assert_eq!(early.unwrap(), 0);
        let due = producer.state.run_timers(transport, at(RESEND_WAIT_US_MAX));
        assert_eq!(due.unwrap(), 4);
        assert_eq!(producer.stats().resend_rounds, 2);
    }

    #[test]
    fn batches_closed_while_a_round_is_pending_go_out_behind_it() {
        let (mut producer, silent) = producer(|c| {
            c.linger_us = 0;
            c.in_flight_max = 10;
        });
        for i in 0..3u8 {
            producer.send("t", Some(0), None, &[i]).unwrap();
        }
        let sent = frames(&silent);
        producer.state.on_frame(
            BrokerSlot(0),
            &refusal(&sent[0].0, ErrorCode::Busy),
            &[],
            Instant::now(),
        );
        // Sent now they would only be refused: held for the round.
        producer.send("t", Some(0), None, b"held 1").unwrap();
        producer.send("t", Some(0), None, b"held 2").unwrap();
        assert!(frames(&silent).is_empty());
        assert_eq!(producer.stats().in_flight_batches, 5);
        assert_eq!(run_timers_after(&mut producer, RESEND_WAIT_US_MAX), 5);
        let round = frames(&silent);
        assert_eq!(&round[..3], &sent[..]);
        let sequences: Vec<i32> = round
            .iter()
            .map(|(_, batch)| RecordBatchHeader::parse(batch).unwrap().base_sequence)
            .collect();
        assert_eq!(sequences, vec![0, 1, 2, 3, 4], "in sequence order");
        assert!(round
            .windows(2)
            .all(|w| w[0].0.request_id < w[1].0.request_id));
    }

    #[test]
    fn resend_waits_double_from_the_first_to_the_cap() {
        assert_eq!(resend_wait_us(1), RESEND_WAIT_US_FIRST);
        assert_eq!(resend_wait_us(2), 2 * RESEND_WAIT_US_FIRST);
        assert_eq!(resend_wait_us(u32::MAX), RESEND_WAIT_US_MAX);
        assert!((1..64).all(|r| resend_wait_us(r) <= resend_wait_us(r + 1)));
    }

    #[test]
    fn a_batch_of_many_messages_gets_consecutive_offsets() {
        let (mut producer, silent) = producer(|_| {});
        for i in 0..5u8 {
            producer.send("t", Some(0), None, &[i]).unwrap();
        }
        // Nothing sent yet: the batch lingers. Closing it happens in flush; use the state.
        assert!(frames(&silent).is_empty());
        let handle = key(0);
        producer
            .state
            .close_and_transmit(&mut producer.transport, handle, Instant::now())
            .unwrap();
        let sent = frames(&silent);
        assert_eq!(sent.len(), 1);
        let (header, payload) = ack(&sent[0].0, 100, 5);
        producer
            .state
            .on_frame(BrokerSlot(0), &header, &payload, Instant::now());
        let offsets: Vec<Option<u64>> =
            deliveries(&mut producer).iter().map(|d| d.offset).collect();
        assert_eq!(
            offsets,
            vec![Some(100), Some(101), Some(102), Some(103), Some(104)]
        );
        producer.flush(Duration::from_secs(5)).unwrap();
    }

    #[test]
    fn the_window_holds_batches_back_until_acks_free_it() {
        let (mut producer, silent) = producer(|c| {
            c.linger_us = 0;
            c.in_flight_max = 1;
        });
        producer.send("t", Some(3), None, b"one").unwrap();
        producer.send("t", Some(3), None, b"two").unwrap();
        producer.send("t", Some(3), None, b"three").unwrap();
        let sent = frames(&silent);
        assert_eq!(
            sent.len(),
            1,
            "window of one: the rest waits in the open batch"
        );
        assert_eq!(producer.poll().unwrap(), 0);
        assert!(frames(&silent).is_empty());

        let (header, payload) = ack(&sent[0].0, 0, 1);
        producer
            .state
            .on_frame(BrokerSlot(0), &header, &payload, Instant::now());
        assert_eq!(producer.poll().unwrap(), 1);
        let next = frames(&silent);
        assert_eq!(next.len(), 1);
        let batch = RecordBatchHeader::parse(&next[0].1).unwrap();
        assert_eq!(batch.records_count, 2, "two and three went together");
        assert_eq!(batch.base_sequence, 1);
    }

    #[test]
    fn acks_none_delivers_on_send_without_idempotence() {
        let (mut producer, silent) = producer(|c| {
            c.acks = Acks::None;
            c.linger_us = 0;
        });
        let id = producer
            .send("t", Some(0), None, b"fire and forget")
            .unwrap();
        let got = deliveries(&mut producer);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].id, id);
        assert_eq!(got[0].offset, None);
        assert!(got[0].error.is_none());
        let sent = frames(&silent);
        assert_eq!(Acks::from_flags(sent[0].0.flags), Some(Acks::None));
        let batch = RecordBatchHeader::parse(&sent[0].1).unwrap();
        assert_eq!(batch.producer_id, NO_PRODUCER_ID);
        assert_eq!(batch.base_sequence, NO_SEQUENCE);
        assert_eq!(producer.stats().in_flight_messages, 0);
        producer.flush(Duration::from_secs(5)).unwrap();
    }

    #[test]
    fn unanswered_batches_are_retransmitted_identically_then_fail_with_no_answer() {
        let (mut producer, silent) = producer(|c| {
            c.linger_us = 0;
            c.client.request_timeout_ms = 2;
            c.client.retransmit_backoff_max_ms = 4;
            c.client.delivery_timeout_ms = 40;
        });
        let id = producer.send("t", Some(0), None, b"lost").unwrap();
        // flush returns once the batch has failed: nothing stays in flight.
        producer.flush(Duration::from_secs(30)).unwrap();
        let got = deliveries(&mut producer);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].id, id);
        let error = got[0].error.as_ref().unwrap();
        assert!(
            matches!(error, ClientError::NoAnswer { tries, .. } if *tries >= 2),
            "{error:?}"
        );
        let sent = frames(&silent);
        assert!(sent.len() >= 2);
        assert!(
            sent.iter().all(|f| f == &sent[0]),
            "retransmissions repeat the same frame"
        );
        assert_eq!(producer.stats().retransmits, sent.len() as u64 - 1);
        assert_eq!(producer.stats().errors, 1);
    }

    /// The topic ids broker B gives: another numbering than the bootstrap broker's.
    const OTHER_TOPIC_ID: u16 = 3;

    /// A producer whose bootstrap broker is `a` (slot 0) and which knows broker 2 at `b`,
    /// with topic `r` (index 1, replicated): partition 0 led by the bootstrap broker,
    /// partition 1 by broker B (its topic id 3), partition 2 by nobody yet.
    fn two_broker_producer(
        tweak: impl FnOnce(&mut ProducerConfig),
    ) -> (Producer, UdpSocket, UdpSocket, BrokerSlot) {
        let (mut producer, a) = producer(tweak);
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        b.set_nonblocking(true).unwrap();
        let slot_b = producer
            .transport
            .slot_for(2, b.local_addr().unwrap())
            .unwrap();
        assert_eq!(slot_b, BrokerSlot(1));
        let view = LeaderView {
            partition_count: 3,
            frame_bytes_max: FRAME_LIMIT,
            replicated: true,
            leaders: vec![
                Leader::Known(Route {
                    slot: BrokerSlot(0),
                    handle: PartitionHandle::new(TOPIC_ID, 0),
                }),
                Leader::Known(Route {
                    slot: slot_b,
                    handle: PartitionHandle::new(OTHER_TOPIC_ID, 1),
                }),
                Leader::Unknown,
            ],
            asked: "127.0.0.1:1 (broker 1), 127.0.0.1:2 (broker 2)".to_string(),
        };
        assert_eq!(producer.state.add_topic("r", view), 1);
        (producer, a, b, slot_b)
    }

    fn replicated(partition: u16) -> PartitionKey {
        PartitionKey {
            topic_index: 1,
            partition,
        }
    }

    #[test]
    fn each_partition_goes_to_its_leader_with_that_brokers_handle() {
        let (mut producer, a, b, slot_b) = two_broker_producer(|c| c.linger_us = 0);
        producer.send("r", Some(0), None, b"to a").unwrap();
        producer.send("r", Some(1), None, b"to b").unwrap();
        let at_a = frames(&a);
        let at_b = frames(&b);
        assert_eq!(at_a.len(), 1);
        assert_eq!(at_b.len(), 1);
        assert_eq!(at_a[0].0.partition, PartitionHandle::new(TOPIC_ID, 0).0);
        assert_eq!(
            at_b[0].0.partition,
            PartitionHandle::new(OTHER_TOPIC_ID, 1).0
        );
        let now = Instant::now();
        // B's ack, as if it came from A: not about any partition of ours there.
        let (header, payload) = ack(&at_b[0].0, 40, 1);
        producer
            .state
            .on_frame(BrokerSlot(0), &header, &payload, now);
        assert_eq!(producer.stats().stale_answers, 1);
        producer.state.on_frame(slot_b, &header, &payload, now);
        let got = deliveries(&mut producer);
        assert_eq!(got.len(), 1);
        assert_eq!((got[0].partition, got[0].offset), (1, Some(40)));
        assert_eq!(
            got[0].topic_id, OTHER_TOPIC_ID,
            "B's numbering of the topic"
        );
    }

    #[test]
    fn not_leader_holds_the_partition_until_a_look_up_moves_its_window_in_order() {
        let (mut producer, a, b, slot_b) = two_broker_producer(|c| {
            c.linger_us = 0;
            c.in_flight_max = 5;
        });
        for i in 0..3u8 {
            producer.send("r", Some(0), None, &[i]).unwrap();
        }
        let sent = frames(&a);
        assert_eq!(sent.len(), 3);
        let now = Instant::now();
        for (header, _) in &sent {
            producer.state.on_frame(
                BrokerSlot(0),
                &refusal(header, ErrorCode::NotLeaderOrFollower),
                &[],
                now,
            );
        }
        let key = replicated(0);
        assert!(producer.state.partitions[&key]
            .awaiting_leader_since
            .is_some());
        // Taken, as `look_up_due_leaders` does when it runs it.
        let wanted = producer.state.topics[1].look_up.take().unwrap();
        assert_eq!(wanted.wanted, vec![0]);
        assert_eq!(
            wanted.prefer,
            Some(BrokerSlot(0)),
            "the refusing broker first"
        );
        // Held: nothing is sent, not even what is new or what times out.
        producer.send("r", Some(0), None, b"held").unwrap();
        assert_eq!(run_timers_after(&mut producer, 120_000_000), 0);
        assert!(frames(&a).is_empty() && frames(&b).is_empty());

        // The look-up finds broker B leading partition 0 now (its handle, its topic id).
        let moved = LeaderView {
            partition_count: 3,
            frame_bytes_max: FRAME_LIMIT,
            replicated: true,
            leaders: vec![
                Leader::Known(Route {
                    slot: slot_b,
                    handle: PartitionHandle::new(OTHER_TOPIC_ID, 0),
                }),
                Leader::Unknown,
                Leader::Unknown,
            ],
            asked: String::new(),
        };
        producer
            .state
            .apply_look_up(1, &wanted, Some(moved), Instant::now());
        assert_eq!(producer.stats().leader_moves, 1);
        assert!(producer.state.topics[1].look_up.is_none(), "settled");
        assert_eq!(run_timers_after(&mut producer, 0), 4);
        let resent = frames(&b);
        assert!(frames(&a).is_empty());
        assert_eq!(resent.len(), 4, "the whole window, then the held batch");
        for (i, (header, batch)) in resent.iter().enumerate() {
            assert_eq!(header.partition, PartitionHandle::new(OTHER_TOPIC_ID, 0).0);
            let batch_header = RecordBatchHeader::parse(batch).unwrap();
            assert_eq!(batch_header.base_sequence, i as i32, "in sequence order");
            if i < 3 {
                assert_eq!(header.request_id, sent[i].0.request_id);
                assert_eq!(
                    batch, &sent[i].1,
                    "the same batch: same id, epoch, sequence"
                );
            }
        }
        // A late answer from A is about nothing of ours any more; B's acks deliver.
        let (header, payload) = ack(&sent[0].0, 7, 1);
        producer
            .state
            .on_frame(BrokerSlot(0), &header, &payload, now);
        assert!(deliveries(&mut producer).is_empty());
        for (i, (header, _)) in resent.iter().enumerate() {
            let (header, payload) = ack(header, 10 + i as u64, 1);
            producer.state.on_frame(slot_b, &header, &payload, now);
        }
        let offsets: Vec<Option<u64>> =
            deliveries(&mut producer).iter().map(|d| d.offset).collect();
        assert_eq!(offsets, (10..14).map(Some).collect::<Vec<_>>());
        assert_eq!(producer.stats().errors, 0);
    }

    #[test]
    fn a_partition_without_a_leader_fails_at_the_delivery_timeout_naming_the_brokers() {
        let (mut producer, a, b, _) = two_broker_producer(|c| c.linger_us = 0);
        producer.send("r", Some(2), None, b"nobody leads").unwrap();
        assert!(frames(&a).is_empty() && frames(&b).is_empty());
        assert!(
            producer.state.topics[1].look_up.is_some(),
            "a look-up wanted"
        );
        // Long after the delivery timeout (600 s here), still no leader.
        assert_eq!(run_timers_after(&mut producer, 601_000_000), 0);
        let got = deliveries(&mut producer);
        assert_eq!(got.len(), 1);
        let error = got[0].error.as_ref().unwrap();
        assert!(
            matches!(error, ClientError::NoLeader { partition: 2, .. }),
            "{error:?}"
        );
        let text = error.to_string();
        assert!(
            text.starts_with("partition 2 of topic 'r' has no leader after "),
            "{text}"
        );
        assert!(
            text.contains("(asked 127.0.0.1:1 (broker 1), 127.0.0.1:2 (broker 2))"),
            "{text}"
        );
    }

    #[test]
    fn a_partition_led_where_this_transport_cannot_reach_is_refused_at_send() {
        let (mut producer, a, _b, _) = two_broker_producer(|c| c.linger_us = 0);
        producer.state.topics[1].leaders[2] = Leader::Elsewhere {
            broker_id: 3,
            address: Some("10.0.0.3:9190".parse().unwrap()),
            reason: "IPC reaches only this host's data plane",
        };
        let error = producer.send("r", Some(2), None, b"x").unwrap_err();
        assert_eq!(
            error.to_string(),
            "partition 2 of r is led by broker 3 at 10.0.0.3:9190; \
             IPC reaches only this host's data plane"
        );
        assert!(frames(&a).is_empty());
        assert_eq!(producer.stats().messages_sent, 0);
    }

    #[test]
    fn a_broker_silent_past_its_request_timeout_has_the_others_asked() {
        let (mut producer, a, _b, _) = two_broker_producer(|c| c.linger_us = 0);
        producer.send("r", Some(0), None, b"unanswered").unwrap();
        assert_eq!(frames(&a).len(), 1);
        // Retransmissions (the backoff caps at 60 s here), then a look-up without A.
        for round in 1..=u64::from(SILENT_TRIES_BEFORE_LOOK_UP) {
            assert!(producer.state.topics[1].look_up.is_none(), "round {round}");
            assert_eq!(run_timers_after(&mut producer, round * 61_000_000), 1);
        }
        let wanted = producer.state.topics[1].look_up.clone().unwrap();
        assert_eq!((wanted.skip, wanted.wanted), (Some(BrokerSlot(0)), vec![0]));
        assert!(
            producer.state.partitions[&replicated(0)]
                .awaiting_leader_since
                .is_none(),
            "it keeps retrying A meanwhile"
        );
        // A topic of one broker never asks.
        producer.send("t", Some(0), None, b"single").unwrap();
        for round in 2..=7u64 {
            run_timers_after(&mut producer, round * 61_000_000);
        }
        assert!(producer.state.topics[0].look_up.is_none());
    }

    #[test]
    fn a_silent_partition_is_looked_up_on_a_fixed_interval_until_its_broker_answers() {
        let (mut producer, a, _b, _) = two_broker_producer(|c| c.linger_us = 0);
        producer.send("r", Some(0), None, b"unanswered").unwrap();
        for round in 1..=u64::from(SILENT_TRIES_BEFORE_LOOK_UP) {
            assert_eq!(run_timers_after(&mut producer, round * 61_000_000), 1);
        }
        let sent = frames(&a);
        assert_eq!(sent.len(), 1 + SILENT_TRIES_BEFORE_LOOK_UP as usize);
        let key = replicated(0);
        assert!(producer.state.partitions[&key].silent_since.is_some());
        // Two look-ups that find A still leading (the quorum has not fenced it yet): each
        // next one is due one interval after the last, not after the next retransmission
        // (60 s away here).
        // Just after the last retransmission (the next is 60 s after it).
        let base = Instant::now() + Duration::from_secs(62);
        let unchanged = |producer: &Producer| LeaderView {
            partition_count: 3,
            frame_bytes_max: FRAME_LIMIT,
            replicated: true,
            leaders: producer.state.topics[1].leaders.clone(),
            asked: String::new(),
        };
        for round in 0..2u32 {
            let ran_at = base + SILENT_LOOK_UP_INTERVAL * (round * 2);
            // As `look_up_due_leaders` runs it.
            let wanted = producer.state.topics[1]
                .look_up
                .take()
                .expect("a look-up due");
            assert!(wanted.due <= ran_at, "round {round}");
            producer.state.topics[1].looked_up_at = Some(ran_at);
            let view = unchanged(&producer);
            producer.state.apply_look_up(1, &wanted, Some(view), ran_at);
            assert!(producer.state.topics[1].look_up.is_none(), "settled");
            assert_eq!(
                producer
                    .state
                    .run_timers(&mut producer.transport, ran_at)
                    .unwrap(),
                0,
                "no retransmission is due"
            );
            let next = producer.state.topics[1].look_up.as_ref().expect("polled");
            assert_eq!(next.due, ran_at + SILENT_LOOK_UP_INTERVAL);
            assert_eq!(next.skip, Some(BrokerSlot(0)));
        }
        assert_eq!(
            producer.stats().retransmits,
            u64::from(SILENT_TRIES_BEFORE_LOOK_UP)
        );
        // A answers (here: busy): the partition is not silent any more, and once the
        // pending look-up has run no other is asked for.
        let (header, _) = sent.last().unwrap();
        producer.state.on_frame(
            BrokerSlot(0),
            &refusal(header, ErrorCode::Busy),
            b"busy",
            base,
        );
        assert!(producer.state.partitions[&key].silent_since.is_none());
        let wanted = producer.state.topics[1].look_up.take().unwrap();
        let view = unchanged(&producer);
        producer.state.apply_look_up(1, &wanted, Some(view), base);
        producer
            .state
            .run_timers(&mut producer.transport, base)
            .unwrap();
        assert!(producer.state.topics[1].look_up.is_none());
    }
}
