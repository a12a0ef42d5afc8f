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
use crate::log::{AppendError, PartitionLog, ReadError};
use crate::net::Peer;
use crate::replica::{
    BrokerSet, ClusterView, FetchVerdict, ParkedFetch, ProbeOutcome, RefusalReason, Replica,
    SetIsrError,
};
use crate::topics::{AdminLink, AdminRequest, Origin, TopicName, TopicTable};
use precursor_protocol::command::TopicReplication;
use precursor_protocol::frame::{
    batch_bytes_max, decode_frame, Acks, ErrorCode, FetchDataHeader, FetchRequest, FrameError,
    FrameHeader, MetadataLeaders, MetadataRequest, MetadataResponse, Opcode, PartitionHandle,
    ProduceAck, FLAG_FETCH_DURABLE_ONLY, FLAG_METADATA_AUTO_CREATE, FRAME_HEADER_BYTES,
};
use precursor_protocol::record_batch::{batches, RecordBatchHeader};
use precursor_protocol::replication::{
    ReplicaDataHeader, ReplicaFetch, FLAG_REPLICA_MORE, FLAG_REPLICA_SYNC, NO_DIVERGENCE,
};
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
    /// A leader's answer to a follower's fetch: batches (or one batch's fragment) from
    /// `fetch.fetch_offset` of the leader's partition `handle`, read at render time.
    /// `diverging` is where the follower must cut first ([`NO_DIVERGENCE`]: nowhere).
    ReplicaData {
        handle: PartitionHandle,
        fetch: ReplicaFetch,
        diverging: u64,
    },
    /// A refused follower fetch: a ReplicaData frame with `code` and no batches, its
    /// header our view of the partition (`handle`, when we have it).
    ReplicaRefused {
        code: ErrorCode,
        handle: Option<PartitionHandle>,
        fetch: ReplicaFetch,
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
            // The cluster's leaders follow the fixed part (as many as fit).
            Reply::Metadata(_) => frame_bytes_max - FRAME_HEADER_BYTES,
            Reply::Pong { bytes } => *bytes,
            Reply::ReplicaData { .. } => frame_bytes_max - FRAME_HEADER_BYTES,
            Reply::ReplicaRefused { .. } => ReplicaDataHeader::BYTES,
        }
    }
}

/// What a parked answer waits for.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Wait {
    /// This broker's flusher (acks=durable).
    Durable,
    /// Every in-sync replica's memory: the high watermark (acks=all).
    HighWatermark,
    /// Every in-sync replica's disk (acks=all-durable, or all on a durable topic).
    DurableHighWatermark,
}

impl Wait {
    /// The offset below which every waiting answer of this kind is due.
    fn passed(self, log: &PartitionLog, replica: &Replica) -> u64 {
        match self {
            Wait::Durable => log.durable_offset(),
            Wait::HighWatermark => replica.high_watermark(log),
            Wait::DurableHighWatermark => replica.durable_high_watermark(log),
        }
    }
}

/// A produce whose answer waits: for the flusher (`acks=durable`) or the in-sync replicas
/// (`acks=all`).
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
    wait: Wait,
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

/// Partitions the lcore must look at after this iteration's requests: a fixed list that
/// says when it overflowed (then every partition is looked at).
pub struct DirtyPartitions {
    handles: [PartitionHandle; DIRTY_PARTITIONS_MAX],
    len: usize,
    pub overflowed: bool,
}

/// Partitions remembered per iteration before [`DirtyPartitions`] falls back to "all".
pub const DIRTY_PARTITIONS_MAX: usize = 128;

impl DirtyPartitions {
    fn new() -> DirtyPartitions {
        DirtyPartitions {
            handles: [PartitionHandle(0); DIRTY_PARTITIONS_MAX],
            len: 0,
            overflowed: false,
        }
    }
    pub fn push(&mut self, handle: PartitionHandle) {
        if self.handles[..self.len].contains(&handle) {
            return;
        }
        if self.len == DIRTY_PARTITIONS_MAX {
            self.overflowed = true;
            return;
        }
        self.handles[self.len] = handle;
        self.len += 1;
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0 && !self.overflowed
    }
    /// Takes the list out (the caller iterates it while the service is borrowed again).
    pub fn take(&mut self) -> ([PartitionHandle; DIRTY_PARTITIONS_MAX], usize, bool) {
        let taken = (self.handles, self.len, self.overflowed);
        self.len = 0;
        self.overflowed = false;
        taken
    }
}

pub struct Service {
    config: ServiceConfig,
    pub topics: TopicTable,
    pub admin: AdminLink,
    /// Topics asked of the admin thread and not installed yet.
    pub creating: Vec<TopicName>,
    /// Topics the admin thread is adding partitions to (CreatePartitions): not deleted,
    /// truncated or grown again meanwhile.
    pub growing: Vec<TopicName>,
    pending: VecDeque<PendingAck>,
    /// A ping's payload between `serve` and `render`.
    scratch: Vec<u8>,
    pub counters: LcoreCounters,
    /// The cluster, when this broker is one of several (replication).
    pub cluster: Option<ClusterView>,
    /// Leader partitions appended to (or whose HW moved): parked fetches may be due.
    pub appended: DirtyPartitions,
    /// Follower partitions whose next fetch should go out now.
    pub fetch_now: DirtyPartitions,
    /// Topics with a follower partition to cut (ids; sent to the admin thread).
    pub to_truncate: Vec<u16>,
    /// Frames a ReplicaData answer may still add to its train (set by the transport
    /// before it renders one), and where the next frame of the train starts.
    pub replica_train_left: u32,
    pub replica_continuation: Option<ReplicaFetch>,
    /// Quorum mode: the leadership lease has expired (set by the lcore once per
    /// iteration from the CnC's `lease_until_ns`): replicated partitions acknowledge
    /// nothing and serve no follower. Always false in static mode.
    pub lease_expired: bool,
}

impl Service {
    /// The quorum's committed ISR for a partition this broker leads at `epoch`: counted
    /// when it changes; a moved high watermark reaches parked fetches (waiting acks are
    /// checked every iteration).
    pub fn set_isr(
        &mut self,
        handle: PartitionHandle,
        epoch: u32,
        isr: BrokerSet,
    ) -> Result<(), SetIsrError> {
        let (log, replica) = self
            .topics
            .replicated_mut(handle)
            .ok_or(SetIsrError::NotLeader)?;
        let isr_before = replica.isr;
        let moved = replica.set_isr(epoch, isr, log)?;
        if replica.isr != isr_before {
            self.counters.isr_changes += 1;
        }
        if moved {
            self.appended.push(handle);
        }
        Ok(())
    }

    pub fn new(config: ServiceConfig, topics: TopicTable, admin: AdminLink) -> Service {
        assert!(config.pending_acks_max > 0);
        assert!(config.frame_bytes_max > FRAME_HEADER_BYTES + FetchDataHeader::BYTES);
        Service {
            pending: VecDeque::with_capacity(config.pending_acks_max),
            scratch: vec![0u8; config.frame_bytes_max],
            creating: Vec::with_capacity(CREATIONS_IN_FLIGHT_MAX),
            growing: Vec::with_capacity(CREATIONS_IN_FLIGHT_MAX),
            config,
            topics,
            admin,
            counters: LcoreCounters::default(),
            cluster: None,
            appended: DirtyPartitions::new(),
            fetch_now: DirtyPartitions::new(),
            to_truncate: Vec::with_capacity(CREATIONS_IN_FLIGHT_MAX),
            replica_train_left: 0,
            replica_continuation: None,
            lease_expired: false,
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
            Opcode::ReplicaFetch => match reply_to {
                ReplyTo::Udp(peer) => self.replica_fetch(peer, header, payload),
                _ => Reply::error(
                    ErrorCode::InvalidFrame,
                    "replication runs over the data plane's port only",
                ),
            },
            Opcode::ReplicaData => {
                if let ReplyTo::Udp(peer) = reply_to {
                    self.replica_data(peer, header, payload, now_ms);
                } else {
                    self.counters.replication_refused[RefusalReason::Unexpected.index()] += 1;
                }
                // An answer is never answered.
                Reply::Nothing
            }
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
        let Some((_, replica)) = self.topics.replicated(handle) else {
            return Reply::error(ErrorCode::UnknownTopicOrPartition, "no such partition");
        };
        if !replica.is_leader() {
            return Reply::error(
                ErrorCode::NotLeaderOrFollower,
                "this broker does not lead the partition",
            );
        }
        let replicated = replica.is_replicated();
        // Refused before the append: a fenced leader must not grow its log either.
        if replicated && self.lease_expired {
            self.counters.lease_refusals += 1;
            return Reply::error(
                ErrorCode::NotLeaderOrFollower,
                "this broker's leadership lease has expired",
            );
        }
        // What the answer waits for: on a partition of one replica, `all` is `leader`.
        let wait = match acks {
            Acks::None | Acks::Leader => None,
            Acks::Durable => Some(Wait::Durable),
            Acks::All | Acks::AllDurable if !replicated => {
                (acks == Acks::AllDurable).then_some(Wait::Durable)
            }
            Acks::All if !replica.acks_all_durable => Some(Wait::HighWatermark),
            Acks::All | Acks::AllDurable => Some(Wait::DurableHighWatermark),
        };
        if acks.waits_for_replicas() && !replica.enough_in_sync() {
            return Reply::error(
                ErrorCode::NotEnoughReplicas,
                "fewer in-sync replicas than min_insync_replicas: nothing appended",
            );
        }
        if wait.is_some() && self.pending.len() >= self.config.pending_acks_max {
            return Reply::error(ErrorCode::Busy, "acks queue full");
        }
        // A batch must fit a fetch on the transport it came by, or its consumers could
        // never read it there (other transports answer MessageTooLarge for it).
        if batch.len() > batch_bytes_max(frame_bytes_max) {
            return Reply::error(
                ErrorCode::MessageTooLarge,
                "batch larger than a fetch on this transport can serve",
            );
        }
        let (log, replica) = self.topics.replicated_mut(handle).expect("looked up above");
        let appended = if replicated {
            log.append_as_leader(batch, now_ms, replica.epoch)
        } else {
            log.append(batch, now_ms)
        };
        let appended = match appended {
            Ok(appended) => appended,
            Err(AppendError::DuplicateSequence) if wait.is_some() => {
                let Some(last_offset) = log.log_end_offset().checked_sub(1) else {
                    unreachable!("a duplicate implies an earlier append");
                };
                let everything = ProduceAck {
                    base_offset: last_offset,
                    last_offset,
                };
                return self.answer_when(
                    reply_to,
                    header,
                    everything,
                    DurableAnswer::DuplicateSequence,
                    wait.expect("checked"),
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
            if replicated {
                replica.on_leader_append(log);
                self.appended.push(handle);
            }
        }
        match (acks, wait) {
            (Acks::None, _) => Reply::Nothing,
            (_, None) => Reply::Ack(ack),
            (_, Some(wait)) => self.answer_when(reply_to, header, ack, DurableAnswer::Ack, wait),
        }
    }

    /// The answer now if `ack.last_offset` is already below what `wait` waits for; else
    /// asks the flusher (for the durable waits) and parks the answer. The caller checked
    /// there is room to park.
    fn answer_when(
        &mut self,
        reply_to: ReplyTo,
        header: &FrameHeader,
        ack: ProduceAck,
        answer: DurableAnswer,
        wait: Wait,
    ) -> Reply {
        let handle = PartitionHandle(header.partition);
        let (log, replica) = self
            .topics
            .replicated_mut(handle)
            .expect("the caller looked it up");
        if ack.last_offset < wait.passed(log, replica) {
            return durable_reply(ack, answer);
        }
        if wait != Wait::HighWatermark {
            log.request_durable(ack.last_offset);
        }
        if wait == Wait::DurableHighWatermark {
            replica.durable_waiters += 1;
        }
        assert!(self.pending.len() < self.config.pending_acks_max);
        self.pending.push_back(PendingAck {
            appended_at: Instant::now(),
            reply_to,
            session: header.session,
            request_id: header.request_id,
            handle,
            ack,
            answer,
            wait,
        });
        Reply::Nothing
    }

    /// A follower's fetch, on the leader: checked (who, which epoch, where), its progress
    /// recorded, then answered now, answered with the divergence to cut, or parked.
    fn replica_fetch(&mut self, peer: Peer, header: &FrameHeader, payload: &[u8]) -> Reply {
        self.counters.replica_fetches += 1;
        let fetch = match ReplicaFetch::decode(payload) {
            Ok(fetch) => fetch,
            Err(error) => {
                self.counters.count_bad_frame(&error);
                return Reply::error(ErrorCode::InvalidFrame, error.reason());
            }
        };
        let refuse = |counters: &mut LcoreCounters, code, reason: RefusalReason, handle| {
            counters.replication_refused[reason.index()] += 1;
            Reply::ReplicaRefused {
                code,
                handle,
                fetch,
            }
        };
        let Some(cluster) = self.cluster.as_mut() else {
            return refuse(
                &mut self.counters,
                ErrorCode::NotLeaderOrFollower,
                RefusalReason::NotLeader,
                None,
            );
        };
        let Some(handle) = self.topics.by_key(fetch.topic_key, fetch.partition) else {
            return refuse(
                &mut self.counters,
                ErrorCode::UnknownTopicOrPartition,
                RefusalReason::UnknownPartition,
                None,
            );
        };
        let from_broker = cluster.is_broker(fetch.follower_id, &peer);
        if from_broker {
            cluster.learn(peer.ip, peer.mac);
        }
        if self.lease_expired {
            // A fenced leader moves nobody's high watermark.
            self.counters.lease_refusals += 1;
            return refuse(
                &mut self.counters,
                ErrorCode::NotLeaderOrFollower,
                RefusalReason::NotLeader,
                Some(handle),
            );
        }
        let now = Instant::now();
        let (log, replica) = self.topics.replicated_mut(handle).expect("by_key found it");
        let hw_before = replica.high_watermark(log);
        let isr_before = replica.isr;
        let verdict = replica.on_fetch(&fetch, from_broker, log, now);
        if replica.high_watermark(log) > hw_before {
            // Waiting acks are checked every iteration; other parked fetches learn the HW.
            self.appended.push(handle);
        }
        if replica.isr != isr_before {
            self.counters.isr_changes += 1;
        }
        match verdict {
            FetchVerdict::Serve => {
                replica.answered(fetch.follower_id, log, now);
                Reply::ReplicaData {
                    handle,
                    fetch,
                    diverging: NO_DIVERGENCE,
                }
            }
            FetchVerdict::Diverging(end) => Reply::ReplicaData {
                handle,
                fetch,
                diverging: end,
            },
            FetchVerdict::Park => {
                replica.park(ParkedFetch {
                    peer,
                    request: *header,
                    fetch,
                    parked_at: now,
                });
                Reply::Nothing
            }
            FetchVerdict::Refuse(code, reason) => {
                refuse(&mut self.counters, code, reason, Some(handle))
            }
        }
    }

    /// A leader's answer, on the follower: matched to our outstanding fetch, then its
    /// batches (or fragment) appended byte for byte, the HW learned, the next fetch due.
    fn replica_data(&mut self, peer: Peer, header: &FrameHeader, payload: &[u8], now_ms: i64) {
        let unexpected = |counters: &mut LcoreCounters| {
            counters.replication_refused[RefusalReason::Unexpected.index()] += 1;
        };
        let Some(cluster) = self.cluster.as_mut() else {
            return unexpected(&mut self.counters);
        };
        let (data, rest) = match ReplicaDataHeader::decode(payload) {
            Ok(decoded) => decoded,
            Err(error) => return self.counters.count_bad_frame(&error),
        };
        let handle = PartitionHandle(header.partition);
        let Some((log, replica)) = self.topics.replicated_mut(handle) else {
            return unexpected(&mut self.counters);
        };
        if replica.is_probing() {
            let from = cluster.broker_of(&peer);
            let same = replica.topic_key == data.topic_key && replica.partition == data.partition;
            let outcome = match from {
                Some(from) if same => replica.on_probe_answer(
                    header.request_id,
                    from,
                    data.leader_id.min(255) as u8,
                    data.leader_epoch,
                    log,
                ),
                _ => ProbeOutcome::Ignored,
            };
            match outcome {
                ProbeOutcome::Ignored => unexpected(&mut self.counters),
                ProbeOutcome::Follows(leader, epoch) => {
                    eprintln!(
                        "precursor-dataplane: partition {handle:?}: broker {leader} leads at \
                         epoch {epoch} (set while this broker was away): following it"
                    );
                    self.fetch_now.push(handle);
                }
                ProbeOutcome::Leads(epoch) => {
                    eprintln!(
                        "precursor-dataplane: partition {handle:?}: leading at epoch {epoch} \
                         (log end {})",
                        log.log_end_offset()
                    );
                    self.appended.push(handle);
                }
            }
            return;
        }
        let ours = replica.topic_key == data.topic_key
            && replica.partition == data.partition
            && u16::from(replica.leader) == data.leader_id
            && cluster.is_broker(data.leader_id, &peer);
        let more = header.flags & FLAG_REPLICA_MORE != 0 && header.error == 0;
        if !ours || !replica.take_answer(header.request_id, more) {
            return unexpected(&mut self.counters);
        }
        cluster.learn(peer.ip, peer.mac);
        let now = Instant::now();
        let retry = cluster.timings.fetch_retry;
        let code = ErrorCode::from_u16(header.error).unwrap_or(ErrorCode::InvalidFrame);
        if code != ErrorCode::None {
            self.counters.replica_errors += 1;
            let epoch_news = matches!(
                code,
                ErrorCode::FencedLeaderEpoch | ErrorCode::UnknownLeaderEpoch
            );
            let view_leader = data.leader_id.min(255) as u8;
            let moved = code == ErrorCode::NotLeaderOrFollower
                && view_leader != 0
                && view_leader != replica.me
                && view_leader != replica.leader
                && replica.replicas.contains(view_leader)
                && data.leader_epoch > replica.epoch;
            if moved {
                // Our leader says another leads now, at a newer epoch: follow that one.
                replica.become_follower(view_leader, data.leader_epoch);
                self.fetch_now.push(handle);
            } else if epoch_news && replica.adopt_epoch(replica.leader, data.leader_epoch) {
                self.fetch_now.push(handle);
            } else {
                replica.back_off(now, retry);
            }
            return;
        }
        if data.leader_epoch != replica.epoch
            && !replica.adopt_epoch(replica.leader, data.leader_epoch)
        {
            // An older epoch than ours: a stale leader's answer.
            replica.back_off(now, retry);
            return unexpected(&mut self.counters);
        }
        if data.diverging_end_offset != NO_DIVERGENCE {
            match replica.truncation_point(data.diverging_end_offset, log) {
                Ok(Some(at)) => {
                    replica.truncating = true;
                    replica.cut_to = Some(at);
                    if !self.to_truncate.contains(&handle.topic_id())
                        && self.to_truncate.len() < self.to_truncate.capacity()
                    {
                        self.to_truncate.push(handle.topic_id());
                    }
                }
                Ok(None) => self.fetch_now.push(handle),
                Err(_) => {
                    // Cutting below the HW would lose what every ISR member held: refuse
                    // loudly and keep the log (an operator must look).
                    self.counters.replica_truncation_refused += 1;
                    replica.back_off(now, std::time::Duration::from_secs(1));
                }
            }
            return;
        }
        let appended = if data.fragment_of != 0 {
            log.append_replica_fragment(data.fragment_at, data.fragment_of, rest, now_ms)
                .map(|whole| u64::from(whole.is_some()))
        } else {
            let mut count = 0u64;
            let mut result = Ok(0);
            for item in batches(rest) {
                let batch = match item {
                    Ok((_, batch)) => batch,
                    Err(error) => {
                        result = Err(AppendError::Corrupt(error));
                        break;
                    }
                };
                match log.append_replica(batch, now_ms) {
                    Ok(_) => count += 1,
                    Err(error) => {
                        result = Err(error);
                        break;
                    }
                }
            }
            result.map(|_: u64| count)
        };
        match appended {
            Ok(batches) => {
                self.counters.replica_batches += batches;
                self.counters.replica_bytes += rest.len() as u64;
                if !more {
                    self.fetch_now.push(handle);
                }
            }
            Err(AppendError::SegmentNotReady) => {
                replica.back_off(now, std::time::Duration::from_micros(200))
            }
            Err(AppendError::NotContiguous { .. }) => {
                // A frame of the train was lost: the rest is dropped, ask again from here.
                self.counters.replica_errors += 1;
                replica.take_answer(header.request_id, false);
                self.fetch_now.push(handle);
            }
            Err(_) => {
                self.counters.replica_errors += 1;
                replica.back_off(now, retry);
            }
        }
        replica.follow_high_watermark(data.high_watermark, log);
        replica.learn_isr(crate::replica::BrokerSet::from_packed(data.isr_packed));
        let sync = header.flags & FLAG_REPLICA_SYNC != 0;
        replica.leader_wants_durable(sync);
        if sync {
            if let Some(last) = log.log_end_offset().checked_sub(1) {
                log.request_durable(last);
            }
        }
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
        let Some((_, replica)) = self.topics.replicated(PartitionHandle(header.partition)) else {
            return Reply::error(ErrorCode::UnknownTopicOrPartition, "no such partition");
        };
        let quorum = self.cluster.as_ref().is_some_and(|c| c.quorum);
        if quorum && replica.is_replicated() && replica.leader == 0 {
            return Reply::error(
                ErrorCode::NotLeaderOrFollower,
                "no leader of the partition is known here (the metadata quorum names it)",
            );
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
                        replication: TopicReplication::default(),
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
        let mut flags = 0;
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
                let mut bytes = MetadataResponse::BYTES;
                if let (Some(cluster), Some(topic)) =
                    (&self.cluster, self.topics.by_id(response.topic_id))
                {
                    bytes += MetadataLeaders::encode(
                        cluster.me,
                        topic.replicas.iter().map(|r| r.leader),
                        |id| cluster.address_of(id),
                        &mut out[MetadataResponse::BYTES..],
                    );
                }
                (Opcode::MetadataResponse, ErrorCode::None, bytes)
            }
            Reply::Pong { bytes } => {
                out[..bytes].copy_from_slice(&self.scratch[..bytes]);
                (Opcode::Pong, ErrorCode::None, bytes)
            }
            Reply::ReplicaData {
                handle,
                fetch,
                diverging,
            } => {
                let bytes = self.render_replica_data(handle, fetch, diverging, out);
                if self.replica_continuation.is_some() {
                    flags |= FLAG_REPLICA_MORE;
                }
                let durable_waiters = self
                    .topics
                    .replicated(handle)
                    .is_some_and(|(_, r)| r.durable_waiters > 0 || r.acks_all_durable);
                if durable_waiters {
                    flags |= FLAG_REPLICA_SYNC;
                }
                (Opcode::ReplicaData, ErrorCode::None, bytes)
            }
            Reply::ReplicaRefused {
                code,
                handle,
                fetch,
            } => {
                let view = handle.and_then(|h| self.topics.replicated(h));
                let header = match view {
                    Some((log, replica)) => replica_view(replica, log, fetch),
                    None => ReplicaDataHeader {
                        topic_key: fetch.topic_key,
                        partition: fetch.partition,
                        diverging_end_offset: NO_DIVERGENCE,
                        ..ReplicaDataHeader::default()
                    },
                };
                header.encode(out);
                (Opcode::ReplicaData, code, ReplicaDataHeader::BYTES)
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
            flags,
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
        let (log, replica) = (
            log,
            self.topics.replicated(PartitionHandle(request.partition)),
        )
            .1
            .expect("looked up above");
        // Consumers read below the high watermark (what every in-sync replica holds), and
        // with `durable_only` below what is on this broker's disk too.
        let high_watermark = replica.high_watermark(log);
        let limit = if durable_only {
            log.durable_offset().min(high_watermark)
        } else {
            high_watermark
        };
        // `max_bytes` is a soft limit (the first batch is served even when larger, as in
        // Kafka); the frame is the hard one.
        let read = log.read_below(
            fetch.offset,
            fetch.max_bytes as usize,
            limit,
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
            high_watermark,
            durable_offset: log.durable_offset(),
            log_start_offset: log.log_start_offset(),
        }
        .encode(out);
        self.counters.fetch_bytes += bytes as u64;
        Ok((FetchDataHeader::BYTES + bytes, code))
    }

    /// ReplicaData for a follower: our view of the partition, then whole batches from the
    /// fetch offset — or, when the batch there is larger than the frame, its next fragment.
    fn render_replica_data(
        &mut self,
        handle: PartitionHandle,
        fetch: ReplicaFetch,
        diverging: u64,
        out: &mut [u8],
    ) -> usize {
        let Some((log, replica)) = self.topics.replicated(handle) else {
            unreachable!("serve looked the partition up and nothing ran in between");
        };
        let mut header = replica_view(replica, log, fetch);
        header.diverging_end_offset = diverging;
        let room = out.len() - ReplicaDataHeader::BYTES;
        let body = &mut out[ReplicaDataHeader::BYTES..];
        let mut bytes = 0;
        // Where the next frame of a train would start.
        let mut next = None;
        if diverging == NO_DIVERGENCE {
            let whole = if fetch.fragment_bytes == 0 {
                log.read(fetch.fetch_offset, fetch.max_bytes as usize, false, body)
            } else {
                Err(ReadError::BatchTooLarge {
                    offset: fetch.fetch_offset,
                    bytes: 0,
                    room,
                })
            };
            bytes = match whole {
                Ok(bytes) => {
                    let end = batches(&body[..bytes])
                        .flatten()
                        .last()
                        .map(|(h, _)| h.last_offset() as u64 + 1);
                    next = end.map(|end| (end, 0));
                    bytes
                }
                Err(ReadError::BatchTooLarge { .. }) => match log.batch_at(fetch.fetch_offset) {
                    Some(batch) if (fetch.fragment_bytes as usize) < batch.len() => {
                        let at = fetch.fragment_bytes as usize;
                        let n = room.min(batch.len() - at);
                        body[..n].copy_from_slice(&batch[at..at + n]);
                        header.fragment_at = at as u32;
                        header.fragment_of = batch.len() as u32;
                        next = Some(if at + n < batch.len() {
                            (fetch.fetch_offset, (at + n) as u32)
                        } else {
                            let last = RecordBatchHeader::parse(batch)
                                .map_or(fetch.fetch_offset, |h| h.last_offset() as u64);
                            (last + 1, 0)
                        });
                        n
                    }
                    // The follower's fragment state is stale: it restarts the batch.
                    _ => 0,
                },
                Err(ReadError::OffsetOutOfRange { .. }) => 0,
            };
        }
        header.encode(out);
        self.counters.replica_bytes_sent += bytes as u64;
        let budget = fetch.max_bytes.saturating_sub(bytes as u32);
        self.replica_continuation = match next {
            Some((offset, fragment_bytes))
                if self.replica_train_left > 0
                    && budget > 0
                    && (offset < log.log_end_offset() || fragment_bytes > 0) =>
            {
                Some(ReplicaFetch {
                    fetch_offset: offset,
                    fragment_bytes,
                    max_bytes: budget,
                    ..fetch
                })
            }
            _ => None,
        };
        ReplicaDataHeader::BYTES + bytes
    }

    /// Moves the parked answers whose offsets are durable (or whose partition failed) into
    /// `due`; returns how many. At most [`DUE_ANSWERS_MAX`] per call.
    pub fn due_answers(&mut self, due: &mut [Option<DueAnswer>; DUE_ANSWERS_MAX]) -> usize {
        let Service {
            pending,
            topics,
            counters,
            lease_expired,
            ..
        } = self;
        let lease_expired = *lease_expired;
        let mut ready = 0usize;
        pending.retain(|waiting| {
            if ready == due.len() {
                return true;
            }
            let reply = match topics.replicated_mut(waiting.handle) {
                None => Reply::error(ErrorCode::UnknownTopicOrPartition, "partition deleted"),
                // What was durable before the fault is still acknowledged; nothing after it.
                Some((log, replica))
                    if log.storage_error().is_some()
                        && waiting.ack.last_offset >= waiting.wait.passed(log, replica) =>
                {
                    if waiting.wait == Wait::DurableHighWatermark {
                        replica.durable_waiters = replica.durable_waiters.saturating_sub(1);
                    }
                    Reply::error(
                        ErrorCode::StorageError,
                        log.storage_error().expect("checked by the guard"),
                    )
                }
                Some((_, replica)) if !replica.is_leader() => Reply::error(
                    ErrorCode::NotLeaderOrFollower,
                    "leadership moved before the in-sync replicas had the batch",
                ),
                Some((_, replica)) if lease_expired && replica.is_replicated() => {
                    // Retriable: the producer's resend is recognised by its sequence.
                    counters.lease_refusals += 1;
                    Reply::error(
                        ErrorCode::NotLeaderOrFollower,
                        "the leadership lease expired before the answer was due",
                    )
                }
                Some((log, replica))
                    if waiting.ack.last_offset < waiting.wait.passed(log, replica) =>
                {
                    if waiting.wait == Wait::DurableHighWatermark {
                        replica.durable_waiters = replica.durable_waiters.saturating_sub(1);
                    }
                    if waiting.wait != Wait::Durable && !replica.enough_in_sync() {
                        // Kafka's NOT_ENOUGH_REPLICAS_AFTER_APPEND: in the log, but the
                        // ISR shrank below the minimum on the way; a retry is a duplicate.
                        Reply::error(
                            ErrorCode::NotEnoughReplicas,
                            "appended, but the in-sync replicas fell below min_insync_replicas",
                        )
                    } else {
                        counters.durable_acks += 1;
                        durable_reply(waiting.ack, waiting.answer)
                    }
                }
                Some(_) => return true,
            };
            let waited_ns = match reply {
                Reply::Error { .. } => 0,
                _ => waiting.appended_at.elapsed().as_nanos() as u64,
            };
            let acks = match waiting.wait {
                Wait::Durable => Acks::Durable,
                Wait::HighWatermark => Acks::All,
                Wait::DurableHighWatermark => Acks::AllDurable,
            };
            due[ready] = Some(DueAnswer {
                reply_to: waiting.reply_to,
                request: FrameHeader {
                    opcode: Opcode::Produce,
                    flags: acks.to_flags(),
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

/// The leader's view of a partition, as every ReplicaData header carries it.
fn replica_view(replica: &Replica, log: &PartitionLog, fetch: ReplicaFetch) -> ReplicaDataHeader {
    ReplicaDataHeader {
        topic_key: fetch.topic_key,
        partition: fetch.partition,
        leader_id: u16::from(replica.leader),
        leader_epoch: replica.epoch,
        high_watermark: replica.high_watermark(log),
        log_start_offset: log.log_start_offset(),
        log_end_offset: log.log_end_offset(),
        diverging_end_offset: NO_DIVERGENCE,
        isr_packed: replica.isr.packed(),
        fragment_at: 0,
        fragment_of: 0,
    }
}

fn append_error_code(error: &AppendError) -> (ErrorCode, &'static str) {
    match error {
        AppendError::Corrupt(e) => (ErrorCode::CorruptMessage, e.reason()),
        AppendError::TooLarge { .. } => (
            ErrorCode::MessageTooLarge,
            "record batch larger than the topic's max.message.bytes",
        ),
        AppendError::OutOfOrderSequence { .. } => (ErrorCode::OutOfOrderSequence, "sequence gap"),
        AppendError::InvalidProducerEpoch => (
            ErrorCode::InvalidProducerEpoch,
            "producer epoch is older than one seen",
        ),
        AppendError::DuplicateSequence => (ErrorCode::DuplicateSequence, "batch appended before"),
        AppendError::SegmentNotReady => (ErrorCode::Busy, "next segment not prepared yet"),
        AppendError::Storage { reason } => (ErrorCode::StorageError, reason),
        AppendError::NotContiguous { .. } => (ErrorCode::InvalidFrame, "batch not contiguous"),
    }
}
