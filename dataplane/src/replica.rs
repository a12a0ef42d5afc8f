//! Partition replication on the lcore (DESIGN.md §10): followers pull from their leader,
//! data plane to data plane, over the same DPDK port clients use.
//!
//! ```text
//!  follower lcore                                   leader lcore
//!  --------------                                   ------------
//!  ReplicaFetch{offset = my log end,  ---UDP--->    check broker, epoch, divergence;
//!    durable, last epoch}                           follower's progress := offset;
//!                                                   HW := min(log end of the ISR);
//!                                                   offset < log end: ReplicaData now
//!                                                   offset = log end: park (long poll)
//!  append_replica each batch          <---UDP---    ReplicaData{HW, batches as stored}
//!  HW := min(leader HW, my log end)                 (a parked fetch is answered in the
//!  next ReplicaFetch at once                         iteration of the next append)
//! ```
//!
//! Why pull (Kafka's choice) rather than push: the follower's fetch offset is its
//! acknowledgement, loss of either datagram is repaired by the follower's retry (no
//! per-batch state at the leader), a slow follower throttles itself, and catch-up after a
//! restart or a cut link is the same code path as steady state. The long poll makes it
//! cost what push costs: one round trip between an append and the HW passing it.
//!
//! Everything here is fixed-size and allocation-free; the lcore calls it on the packet
//! path and on its drain timer.

use crate::log::PartitionLog;
use crate::net::Peer;
use precursor_protocol::frame::{ErrorCode, FrameHeader};
use precursor_protocol::replication::{ReplicaFetch, NO_DIVERGENCE, NO_EPOCH};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

/// Replicas of one partition, at most (config's REPLICATION_FACTOR_MAX).
pub const REPLICAS_MAX: usize = 5;
pub const FOLLOWERS_MAX: usize = REPLICAS_MAX - 1;
/// Broker ids are 1..=BROKER_ID_MAX.
pub const BROKER_ID_MAX: usize = 64;
/// Bytes of batches a follower asks for per fetch (the leader's train of frames stops
/// there): 1 MiB, Kafka's `replica.fetch.max.bytes`.
pub const REPLICA_FETCH_BYTES_DEFAULT: u32 = 1 << 20;
/// Frames one fetch is answered with at most (each carries at most a frame of batches).
pub const REPLICA_TRAIN_FRAMES_MAX: u32 = 32;

/// A small set of broker ids, in order (replicas: preferred leader first).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Default)]
pub struct BrokerSet {
    ids: [u8; REPLICAS_MAX],
    len: u8,
}

impl BrokerSet {
    pub fn from_ids(ids: &[u32]) -> BrokerSet {
        assert!(ids.len() <= REPLICAS_MAX, "at most {REPLICAS_MAX} replicas");
        let mut set = BrokerSet::default();
        for &id in ids {
            assert!((1..=BROKER_ID_MAX as u32).contains(&id), "broker id {id}");
            set.insert(id as u8);
        }
        set
    }
    pub fn ids(&self) -> &[u8] {
        &self.ids[..self.len as usize]
    }
    pub fn len(&self) -> usize {
        self.len as usize
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn contains(&self, id: u8) -> bool {
        self.ids().contains(&id)
    }
    /// Adds `id` at the end (no-op when present).
    pub fn insert(&mut self, id: u8) {
        if !self.contains(id) {
            assert!((self.len as usize) < REPLICAS_MAX);
            self.ids[self.len as usize] = id;
            self.len += 1;
        }
    }
    pub fn remove(&mut self, id: u8) {
        if let Some(at) = self.ids().iter().position(|&x| x == id) {
            self.ids.copy_within(at + 1..self.len as usize, at);
            self.len -= 1;
        }
    }
    /// Reads [`BrokerSet::packed`]; bytes that are no broker id (a forged or garbled
    /// value) end the set.
    pub fn from_packed(packed: u64) -> BrokerSet {
        let mut set = BrokerSet::default();
        for byte in packed.to_le_bytes().into_iter().take(REPLICAS_MAX) {
            if byte == 0 || byte as usize > BROKER_ID_MAX {
                break;
            }
            set.insert(byte);
        }
        set
    }

    /// The members of `self` that are also in `within`, in `self`'s order.
    pub fn restricted_to(&self, within: BrokerSet) -> BrokerSet {
        let mut set = BrokerSet::default();
        for &id in self.ids() {
            if within.contains(id) {
                set.insert(id);
            }
        }
        set
    }

    /// One byte per id from the lowest byte: the shared gauges' encoding.
    pub fn packed(&self) -> u64 {
        self.ids()
            .iter()
            .enumerate()
            .fold(0u64, |acc, (i, &id)| acc | (u64::from(id) << (8 * i)))
    }
}

/// How replication behaves (from `[cluster]`).
#[derive(Copy, Clone, Debug)]
pub struct ReplicationTimings {
    pub replica_lag: Duration,
    pub fetch_wait: Duration,
    pub fetch_retry: Duration,
}

/// The cluster as one lcore sees it: brokers' data-plane addresses and the MACs learned
/// for them (ARP), and who this broker is.
pub struct ClusterView {
    pub me: u8,
    pub timings: ReplicationTimings,
    /// `metadata = "quorum"`: leaders, epochs and ISR shrinks come from the metadata
    /// quorum (SetLeader, SetIsr), and leading needs a live lease.
    pub quorum: bool,
    brokers: [Option<BrokerAddress>; BROKER_ID_MAX + 1],
    next_request_id: u64,
}

#[derive(Copy, Clone, Debug)]
struct BrokerAddress {
    ip: Ipv4Addr,
    udp_port: u16,
    mac: Option<[u8; 6]>,
    arp_sent_at: Option<Instant>,
}

/// How often an unanswered ARP request for a broker is repeated.
const ARP_RETRY: Duration = Duration::from_millis(100);

impl ClusterView {
    pub fn new(me: u8, brokers: &[(u8, Ipv4Addr, u16)], timings: ReplicationTimings) -> Self {
        let mut table = [None; BROKER_ID_MAX + 1];
        for &(id, ip, udp_port) in brokers {
            assert!((1..=BROKER_ID_MAX).contains(&(id as usize)));
            table[id as usize] = Some(BrokerAddress {
                ip,
                udp_port,
                mac: None,
                arp_sent_at: None,
            });
        }
        assert!(table[me as usize].is_some(), "this broker is in the list");
        ClusterView {
            me,
            timings,
            quorum: false,
            brokers: table,
            // Distinct from a previous incarnation's ids (a stale answer is recognised).
            next_request_id: (std::process::id() as u64) << 40,
        }
    }

    /// Whether `peer` is broker `id`'s data plane (its configured address and port).
    pub fn is_broker(&self, id: u16, peer: &Peer) -> bool {
        match self.brokers.get(id as usize).copied().flatten() {
            Some(b) => id != 0 && b.ip == peer.ip && b.udp_port == peer.udp_port,
            None => false,
        }
    }

    /// Broker `id`'s data-plane address and UDP port.
    pub fn address_of(&self, id: u8) -> Option<(Ipv4Addr, u16)> {
        let broker = self.brokers.get(id as usize).copied().flatten()?;
        Some((broker.ip, broker.udp_port))
    }

    /// The broker whose data plane `peer` is.
    pub fn broker_of(&self, peer: &Peer) -> Option<u8> {
        (1..=BROKER_ID_MAX as u16)
            .find(|&id| self.is_broker(id, peer))
            .map(|id| id as u8)
    }

    /// Learns a MAC for an address (an ARP reply or request, or any datagram from it).
    pub fn learn(&mut self, ip: Ipv4Addr, mac: [u8; 6]) {
        for broker in self.brokers.iter_mut().flatten() {
            if broker.ip == ip {
                broker.mac = Some(mac);
            }
        }
    }

    /// Where to send to broker `id`: `Ok(peer)`, or `Err(Some(ip))` when its MAC is unknown
    /// and an ARP request is due now, `Err(None)` when one is already on its way.
    pub fn peer(&mut self, id: u8, now: Instant) -> Result<Peer, Option<Ipv4Addr>> {
        let Some(broker) = self.brokers[id as usize].as_mut() else {
            return Err(None);
        };
        if let Some(mac) = broker.mac {
            return Ok(Peer {
                mac,
                ip: broker.ip,
                udp_port: broker.udp_port,
            });
        }
        let due = broker
            .arp_sent_at
            .is_none_or(|at| now.duration_since(at) >= ARP_RETRY);
        if due {
            broker.arp_sent_at = Some(now);
            return Err(Some(broker.ip));
        }
        Err(None)
    }

    pub fn next_request_id(&mut self) -> u64 {
        self.next_request_id += 1;
        self.next_request_id
    }
}

/// What a leader decided about one follower's fetch.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum FetchVerdict {
    /// Answer with batches from the fetch offset now.
    Serve,
    /// Nothing new: keep the fetch until there is, or until `fetch_wait`.
    Park,
    /// The follower's log diverged from ours: it must cut at this offset first.
    Diverging(u64),
    /// Refused and counted; answered with this code (the header carries our view).
    Refuse(ErrorCode, RefusalReason),
}

/// Why replication traffic was refused: a counter each.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum RefusalReason {
    /// The sender is not a broker of the cluster (by id and address).
    UnknownBroker,
    /// A broker of the cluster that holds no replica of the partition.
    NotAReplica,
    /// This broker does not lead the partition.
    NotLeader,
    /// The fetch named an older leader epoch.
    StaleEpoch,
    /// The fetch named a newer leader epoch than ours.
    FutureEpoch,
    /// A fetch offset beyond our log end with no divergence to explain it, or below its
    /// start.
    BadOffset,
    /// No such topic key or partition here.
    UnknownPartition,
    /// ReplicaData that answers no fetch of ours (stale, duplicated, or forged).
    Unexpected,
}

impl RefusalReason {
    pub const ALL: [RefusalReason; 8] = [
        RefusalReason::UnknownBroker,
        RefusalReason::NotAReplica,
        RefusalReason::NotLeader,
        RefusalReason::StaleEpoch,
        RefusalReason::FutureEpoch,
        RefusalReason::BadOffset,
        RefusalReason::UnknownPartition,
        RefusalReason::Unexpected,
    ];
    pub fn name(self) -> &'static str {
        match self {
            RefusalReason::UnknownBroker => "unknown_broker",
            RefusalReason::NotAReplica => "not_a_replica",
            RefusalReason::NotLeader => "not_leader",
            RefusalReason::StaleEpoch => "stale_epoch",
            RefusalReason::FutureEpoch => "future_epoch",
            RefusalReason::BadOffset => "bad_offset",
            RefusalReason::UnknownPartition => "unknown_partition",
            RefusalReason::Unexpected => "unexpected",
        }
    }
    pub fn index(self) -> usize {
        self as usize
    }
}

/// Why a SetIsr was refused.
#[derive(Copy, Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SetIsrError {
    #[error("this broker does not lead the partition")]
    NotLeader,
    #[error("epoch {theirs} is not this leader's epoch {ours}")]
    FencedEpoch { ours: u32, theirs: u32 },
}

/// A follower's fetch held at the leader until there is something to send.
#[derive(Copy, Clone, Debug)]
pub struct ParkedFetch {
    pub peer: Peer,
    /// The follower's request header (request id, its own partition handle).
    pub request: FrameHeader,
    pub fetch: ReplicaFetch,
    pub parked_at: Instant,
}

/// What the leader knows of one follower.
#[derive(Copy, Clone, Debug)]
struct FollowerProgress {
    broker: u8,
    /// Its log end as its last fetch said (it holds every offset below).
    fetch_offset: u64,
    durable_offset: u64,
    /// The last time it held everything we had (Kafka's lastCaughtUpTimeMs).
    caught_up_at: Instant,
    /// When we last answered it, and our log end then.
    answered: Option<(Instant, u64)>,
    /// High watermark we last told it.
    hw_sent: u64,
    parked: Option<ParkedFetch>,
}

/// The follower's side: its one outstanding fetch.
#[derive(Copy, Clone, Debug, Default)]
struct FetchState {
    outstanding: Option<(u64, Instant)>,
    /// A train of frames answering the outstanding fetch is arriving.
    train: bool,
    /// Don't fetch before this (after a refusal, or a segment not ready).
    not_before: Option<Instant>,
    durable_reported: u64,
    /// The leader has acks=all-durable answers waiting: sync and report.
    leader_wants_durable: bool,
}

/// One partition's replication state, beside its [`PartitionLog`] on the lcore.
#[derive(Clone, Debug)]
pub struct Replica {
    pub topic_key: u64,
    pub partition: u16,
    /// Preferred leader first; empty outside a cluster.
    pub replicas: BrokerSet,
    /// The effective ISR: what the high watermark and acks=all use.
    pub isr: BrokerSet,
    /// Quorum mode, on the leader: the ISR it asks the metadata quorum for (the effective
    /// ISR minus followers lagging past replica_lag; growth is in both at once). Equal to
    /// `isr` in static mode.
    isr_proposed: BrokerSet,
    pub min_insync: u8,
    /// `acks=all` on this topic waits for fdatasync on every ISR member.
    pub acks_all_durable: bool,
    pub me: u8,
    /// The leader's broker id (0: none known).
    pub leader: u8,
    pub epoch: u32,
    high_watermark: u64,
    followers: [Option<FollowerProgress>; FOLLOWERS_MAX],
    fetch: FetchState,
    /// acks=all-durable answers waiting on this partition (followers are asked to sync).
    pub durable_waiters: u32,
    pub isr_shrinks: u64,
    pub isr_expands: u64,
    pub truncated_bytes: u64,
    /// The log is with the admin thread being cut (no fetching until it is back).
    pub truncating: bool,
    /// Where the admin thread is to cut this partition's log (set with `truncating`).
    pub cut_to: Option<u64>,
    /// A designated leader starting up asks the other replicas who leads before it does.
    probe: Option<Probe>,
}

/// The start-up question of a designated leader (static mode): "who leads, at which
/// epoch?", asked of each other replica in turn with a ReplicaFetch. A follower answers
/// NotLeaderOrFollower with its view; a newer leader is followed, otherwise this broker
/// leads at one past every epoch it has heard of. Nobody answering leaves the partition
/// leaderless (produces get NotLeaderOrFollower): a broker that was down never takes over
/// from a leader elected meanwhile just because it came back first.
#[derive(Copy, Clone, Debug)]
struct Probe {
    /// Index into `replicas` of the next replica to ask.
    next: usize,
    outstanding: Option<(u64, Instant)>,
    /// The highest epoch any answer named.
    highest_epoch: u32,
}

/// What a probe answer decided.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ProbeOutcome {
    /// Not an answer to our probe.
    Ignored,
    /// Another broker leads at a newer epoch: followed.
    Follows(u8, u32),
    /// Nobody newer: this broker leads at this epoch.
    Leads(u32),
}

/// How long a probe waits for an answer before the next replica is asked.
pub const PROBE_RETRY: Duration = Duration::from_millis(100);

impl Replica {
    /// A partition of one replica (or outside a cluster): its HW is its log end.
    pub fn single(topic_key: u64, partition: u16, me: u8) -> Replica {
        let mut replicas = BrokerSet::default();
        if me != 0 {
            replicas.insert(me);
        }
        Replica::new(topic_key, partition, replicas, 1, false, me, me, 0)
    }

    /// A replicated partition. The leader starts with an ISR of itself: followers join
    /// once they have caught up (so a restarted leader never waits for one that is gone).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        topic_key: u64,
        partition: u16,
        replicas: BrokerSet,
        min_insync: u8,
        acks_all_durable: bool,
        me: u8,
        leader: u8,
        epoch: u32,
    ) -> Replica {
        let now = Instant::now();
        let mut followers = [None; FOLLOWERS_MAX];
        if leader == me {
            for (slot, &id) in followers
                .iter_mut()
                .zip(replicas.ids().iter().filter(|&&id| id != me))
            {
                *slot = Some(FollowerProgress {
                    broker: id,
                    fetch_offset: 0,
                    durable_offset: 0,
                    caught_up_at: now,
                    answered: None,
                    hw_sent: 0,
                    parked: None,
                });
            }
        }
        let mut isr = BrokerSet::default();
        if me != 0 && leader != 0 {
            isr.insert(if leader == me { me } else { leader });
        }
        Replica {
            topic_key,
            partition,
            replicas,
            isr,
            isr_proposed: isr,
            min_insync,
            acks_all_durable,
            me,
            leader,
            epoch,
            high_watermark: 0,
            followers,
            fetch: FetchState::default(),
            durable_waiters: 0,
            isr_shrinks: 0,
            isr_expands: 0,
            truncated_bytes: 0,
            truncating: false,
            cut_to: None,
            probe: None,
        }
    }

    /// More than one replica: the data planes replicate it.
    pub fn is_replicated(&self) -> bool {
        self.replicas.len() > 1
    }

    pub fn is_leader(&self) -> bool {
        !self.is_replicated() || self.leader == self.me
    }

    /// Offsets below this are on every ISR member: what consumers may read.
    pub fn high_watermark(&self, log: &PartitionLog) -> u64 {
        if self.is_replicated() {
            self.high_watermark.min(log.log_end_offset())
        } else {
            log.log_end_offset()
        }
    }

    /// Offsets below this are fdatasync'd on every ISR member (acks=all-durable).
    pub fn durable_high_watermark(&self, log: &PartitionLog) -> u64 {
        let mine = log.durable_offset();
        if !self.is_replicated() || !self.is_leader() {
            return mine.min(self.high_watermark(log));
        }
        self.followers
            .iter()
            .flatten()
            .filter(|f| self.isr.contains(f.broker))
            .fold(mine.min(self.high_watermark(log)), |hw, f| {
                hw.min(f.durable_offset)
            })
    }

    /// Whether an acks=all produce may be appended now (enough replicas in sync).
    pub fn enough_in_sync(&self) -> bool {
        !self.is_replicated() || self.isr.len() >= self.min_insync as usize
    }

    /// The leader appended: with an ISR of itself alone the HW follows the log end.
    pub fn on_leader_append(&mut self, log: &PartitionLog) -> bool {
        self.advance_high_watermark(log)
    }

    /// HW := min(log end of every ISR member); never moves back. True when it moved.
    fn advance_high_watermark(&mut self, log: &PartitionLog) -> bool {
        let candidate = self
            .followers
            .iter()
            .flatten()
            .filter(|f| self.isr.contains(f.broker))
            .fold(log.log_end_offset(), |hw, f| hw.min(f.fetch_offset));
        if candidate > self.high_watermark {
            self.high_watermark = candidate;
            return true;
        }
        false
    }

    fn follower_mut(&mut self, broker: u16) -> Option<&mut FollowerProgress> {
        self.followers
            .iter_mut()
            .flatten()
            .find(|f| u16::from(f.broker) == broker)
    }

    /// The leader's checks of a follower's fetch, and the follower's progress recorded.
    /// `peer_is_broker` says whether the datagram came from that broker's address.
    pub fn on_fetch(
        &mut self,
        fetch: &ReplicaFetch,
        peer_is_broker: bool,
        log: &PartitionLog,
        now: Instant,
    ) -> FetchVerdict {
        use ErrorCode::*;
        use RefusalReason::*;
        if !peer_is_broker {
            return FetchVerdict::Refuse(InvalidFrame, UnknownBroker);
        }
        if fetch.follower_id == 0
            || fetch.follower_id > BROKER_ID_MAX as u16
            || !self.replicas.contains(fetch.follower_id as u8)
            || fetch.follower_id == u16::from(self.me)
        {
            return FetchVerdict::Refuse(NotLeaderOrFollower, NotAReplica);
        }
        if !self.is_replicated() || self.leader != self.me {
            return FetchVerdict::Refuse(NotLeaderOrFollower, NotLeader);
        }
        if fetch.leader_epoch < self.epoch {
            return FetchVerdict::Refuse(FencedLeaderEpoch, StaleEpoch);
        }
        if fetch.leader_epoch > self.epoch {
            return FetchVerdict::Refuse(UnknownLeaderEpoch, FutureEpoch);
        }
        let log_end = log.log_end_offset();
        // KIP-320: where does our log for the follower's last epoch end?
        if fetch.last_fetched_epoch != NO_EPOCH && fetch.fetch_offset > 0 {
            if fetch.last_fetched_epoch > self.epoch {
                return FetchVerdict::Refuse(UnknownLeaderEpoch, FutureEpoch);
            }
            let end = log
                .epochs()
                .end_offset_for(fetch.last_fetched_epoch, log_end)
                .map_or_else(
                    || log.epochs().first_start().unwrap_or(0),
                    |e| e.start_offset,
                );
            if end < fetch.fetch_offset {
                return FetchVerdict::Diverging(end);
            }
        }
        if fetch.fetch_offset > log_end || fetch.fetch_offset < log.log_start_offset() {
            return FetchVerdict::Refuse(OffsetOutOfRange, BadOffset);
        }
        let high_watermark = self.high_watermark;
        let isr_has = self.isr.contains(fetch.follower_id as u8);
        let Some(follower) = self.follower_mut(fetch.follower_id) else {
            unreachable!("every replica but this broker has a progress slot");
        };
        follower.fetch_offset = fetch.fetch_offset;
        follower.durable_offset = fetch.durable_offset;
        // Kafka's rule: caught up now when it holds our whole log; caught up as of our
        // last answer when it holds what we had then.
        if fetch.fetch_offset >= log_end {
            follower.caught_up_at = now;
        } else if let Some((at, end_then)) = follower.answered {
            if fetch.fetch_offset >= end_then && at > follower.caught_up_at {
                follower.caught_up_at = at;
            }
        }
        // Kafka's rule: back in sync once it holds everything every ISR member holds.
        let rejoins = !isr_has && fetch.fetch_offset >= high_watermark;
        if rejoins {
            self.isr.insert(fetch.follower_id as u8);
            self.isr_expands += 1;
        }
        // Growth is safe before the quorum knows: a caught-up follower is in both.
        if !self.isr_proposed.contains(fetch.follower_id as u8)
            && self.isr.contains(fetch.follower_id as u8)
        {
            self.isr_proposed.insert(fetch.follower_id as u8);
        }
        self.advance_high_watermark(log);
        if fetch.fetch_offset < log_end {
            FetchVerdict::Serve
        } else {
            FetchVerdict::Park
        }
    }

    /// Parks a fetch (replacing an older one of the same follower).
    pub fn park(&mut self, parked: ParkedFetch) {
        if let Some(follower) = self.follower_mut(parked.fetch.follower_id) {
            follower.parked = Some(parked);
        }
    }

    /// The parked fetches to answer now: new data, a higher HW than the follower knows,
    /// or waited `fetch_wait`. Each is taken out; at most FOLLOWERS_MAX.
    pub fn take_servable(
        &mut self,
        log: &PartitionLog,
        now: Instant,
        fetch_wait: Duration,
        out: &mut [Option<ParkedFetch>; FOLLOWERS_MAX],
    ) -> usize {
        let log_end = log.log_end_offset();
        let high_watermark = self.high_watermark;
        let mut taken = 0;
        for follower in self.followers.iter_mut().flatten() {
            let Some(parked) = follower.parked else {
                continue;
            };
            let due = log_end > parked.fetch.fetch_offset
                || high_watermark > follower.hw_sent
                || now.duration_since(parked.parked_at) >= fetch_wait;
            if due {
                follower.parked = None;
                out[taken] = Some(parked);
                taken += 1;
            }
        }
        taken
    }

    /// Records that we answered `follower` (for its catch-up time and the HW it knows).
    pub fn answered(&mut self, follower: u16, log: &PartitionLog, now: Instant) {
        let log_end = log.log_end_offset();
        let high_watermark = self.high_watermark;
        if let Some(progress) = self.follower_mut(follower) {
            progress.answered = Some((now, log_end));
            progress.hw_sent = high_watermark;
        }
    }

    /// The leader's drain-timer work: followers that lag more than `replica_lag` leave
    /// the ISR (the HW may then move). Returns the brokers that left.
    ///
    /// With `quorum` (metadata = "quorum") nobody leaves the effective ISR here: a new
    /// leader is picked from the quorum's committed ISR, so a shrink must be committed
    /// before it is acted on (Kafka's AlterPartition). The laggers leave the proposed ISR
    /// ([`Replica::isr_proposed`]) instead, and the effective one follows on
    /// [`Replica::set_isr`]. Returns nobody then.
    pub fn shrink_isr(
        &mut self,
        log: &PartitionLog,
        now: Instant,
        replica_lag: Duration,
        quorum: bool,
    ) -> BrokerSet {
        let mut left = BrokerSet::default();
        if !self.is_replicated() || self.leader != self.me {
            return left;
        }
        let log_end = log.log_end_offset();
        for follower in self.followers.iter_mut().flatten() {
            if !self.isr.contains(follower.broker) {
                continue;
            }
            // A follower waiting at our log end (its fetch parked here) is caught up; one
            // that stopped fetching is not, even on a partition nobody writes to (its
            // parked fetch expires after `fetch_wait` and it never asks again).
            let waiting_at_end = follower
                .parked
                .is_some_and(|p| p.fetch.fetch_offset >= log_end);
            if waiting_at_end {
                follower.caught_up_at = now;
                continue;
            }
            if now.duration_since(follower.caught_up_at) > replica_lag {
                left.insert(follower.broker);
            }
        }
        if quorum {
            let mut proposed = self.isr;
            for &id in left.ids() {
                proposed.remove(id);
            }
            self.isr_proposed = proposed;
            return BrokerSet::default();
        }
        for &id in left.ids() {
            self.isr_proposed.remove(id);
            self.isr.remove(id);
            self.isr_shrinks += 1;
        }
        if !left.is_empty() {
            self.advance_high_watermark(log);
        }
        left
    }

    /// Quorum mode, on the leader: the ISR to ask the metadata quorum for.
    pub fn isr_proposed(&self) -> BrokerSet {
        self.isr_proposed
    }

    /// Quorum mode: the ISR the metadata quorum committed for this leader at `epoch`
    /// becomes the effective ISR (ids that are no replica are dropped; the leader is
    /// always in it). True when the high watermark moved (a shrink past a lagger).
    pub fn set_isr(
        &mut self,
        epoch: u32,
        isr: BrokerSet,
        log: &PartitionLog,
    ) -> Result<bool, SetIsrError> {
        if !self.is_replicated() || self.leader != self.me {
            return Err(SetIsrError::NotLeader);
        }
        if epoch != self.epoch {
            return Err(SetIsrError::FencedEpoch {
                ours: self.epoch,
                theirs: epoch,
            });
        }
        let committed = self.committed_isr(isr);
        for &id in self.isr.ids() {
            if !committed.contains(id) {
                self.isr_shrinks += 1;
            }
        }
        for &id in committed.ids() {
            if !self.isr.contains(id) {
                self.isr_expands += 1;
            }
        }
        self.isr = committed;
        self.isr_proposed = committed;
        Ok(self.advance_high_watermark(log))
    }

    /// `isr` restricted to the replicas, this broker (the leader) first if missing.
    fn committed_isr(&self, isr: BrokerSet) -> BrokerSet {
        let mut committed = BrokerSet::default();
        committed.insert(self.me);
        for &id in isr.ids() {
            if self.replicas.contains(id) {
                committed.insert(id);
            }
        }
        committed
    }

    /// Quorum mode: this broker leads from now on at `epoch` with the ISR the quorum
    /// committed (empty: itself alone, as [`Replica::become_leader`]).
    pub fn become_leader_with_isr(&mut self, epoch: u32, isr: BrokerSet, log: &mut PartitionLog) {
        self.become_leader(epoch, log);
        if !isr.is_empty() {
            self.isr = self.committed_isr(isr);
            self.isr_proposed = self.isr;
        }
    }

    /// Quorum mode: nobody leads the partition as far as this broker knows (`leader = 0`
    /// from the quorum): Produce and Fetch are refused, a follower stops fetching.
    pub fn go_offline(&mut self, epoch: u32) {
        self.leader = 0;
        self.epoch = epoch;
        self.followers = [None; FOLLOWERS_MAX];
        self.fetch = FetchState::default();
        self.isr = BrokerSet::default();
        self.isr_proposed = BrokerSet::default();
        self.durable_waiters = 0;
        self.probe = None;
    }

    /// Starts as a designated leader that asks before it leads (see [`Probe`]).
    pub fn start_probing(&mut self) {
        assert!(self.is_replicated() && self.replicas.contains(self.me));
        self.leader = 0;
        self.probe = Some(Probe {
            next: 0,
            outstanding: None,
            highest_epoch: self.epoch,
        });
    }

    pub fn is_probing(&self) -> bool {
        self.probe.is_some()
    }

    /// The replica to ask now and the fetch to ask with, when a probe is due.
    pub fn next_probe(
        &mut self,
        log: &PartitionLog,
        request_id: u64,
        now: Instant,
    ) -> Option<(u8, ReplicaFetch)> {
        let probe = self.probe.as_mut()?;
        if probe
            .outstanding
            .is_some_and(|(_, at)| now.duration_since(at) < PROBE_RETRY)
        {
            return None;
        }
        let others: BrokerSet = {
            let mut others = BrokerSet::default();
            for &id in self.replicas.ids().iter().filter(|&&id| id != self.me) {
                others.insert(id);
            }
            others
        };
        let target = others.ids()[probe.next % others.len()];
        probe.next += 1;
        probe.outstanding = Some((request_id, now));
        let fetch = ReplicaFetch {
            topic_key: self.topic_key,
            partition: self.partition,
            follower_id: u16::from(self.me),
            leader_epoch: self.epoch,
            fetch_offset: log.log_end_offset(),
            durable_offset: log.durable_offset().min(log.log_end_offset()),
            last_fetched_epoch: log.epochs().last_epoch().unwrap_or(NO_EPOCH),
            max_bytes: 0,
            fragment_bytes: 0,
        };
        Some((target, fetch))
    }

    /// An answer to our probe from `from`: its view of the partition (leader, epoch).
    pub fn on_probe_answer(
        &mut self,
        request_id: u64,
        from: u8,
        view_leader: u8,
        view_epoch: u32,
        log: &mut PartitionLog,
    ) -> ProbeOutcome {
        let Some(probe) = self.probe.as_mut() else {
            return ProbeOutcome::Ignored;
        };
        if probe.outstanding.map(|(id, _)| id) != Some(request_id) || from == self.me {
            return ProbeOutcome::Ignored;
        }
        probe.highest_epoch = probe.highest_epoch.max(view_epoch);
        let highest = probe.highest_epoch;
        self.probe = None;
        let someone_else = view_leader != 0
            && view_leader != self.me
            && self.replicas.contains(view_leader)
            && view_epoch > self.epoch;
        if someone_else {
            self.become_follower(view_leader, view_epoch);
            ProbeOutcome::Follows(view_leader, view_epoch)
        } else {
            let epoch = highest.max(self.epoch) + 1;
            self.become_leader(epoch, log);
            ProbeOutcome::Leads(epoch)
        }
    }

    /// This broker leads from now on, at `epoch` (an operator's move, or failover): its log
    /// is the truth, its ISR itself until followers catch up.
    pub fn become_leader(&mut self, epoch: u32, log: &mut PartitionLog) {
        assert!(epoch > self.epoch || self.epoch == 0, "epochs only grow");
        let me = self.me;
        let leader = Replica::new(
            self.topic_key,
            self.partition,
            self.replicas,
            self.min_insync,
            self.acks_all_durable,
            me,
            me,
            epoch,
        );
        let kept = (self.high_watermark, self.isr_shrinks, self.isr_expands);
        let truncated = self.truncated_bytes;
        *self = leader;
        (self.high_watermark, self.isr_shrinks, self.isr_expands) = kept;
        self.truncated_bytes = truncated;
        log.assign_epoch(epoch);
        self.advance_high_watermark(log);
    }

    /// This broker follows `leader` from now on, at `epoch`. Answers parked for the old
    /// leadership go (acks waiting are answered NotLeaderOrFollower by the service).
    pub fn become_follower(&mut self, leader: u8, epoch: u32) {
        assert!(leader != self.me && self.replicas.contains(leader));
        self.leader = leader;
        self.epoch = epoch;
        self.followers = [None; FOLLOWERS_MAX];
        self.fetch = FetchState::default();
        self.isr = BrokerSet::default();
        self.isr.insert(leader);
        self.isr_proposed = self.isr;
        self.durable_waiters = 0;
    }

    // ----- follower side -----

    /// This broker follows the partition (a replica, not the leader, a leader known, its
    /// log not with the admin thread being cut).
    pub fn follows(&self) -> bool {
        self.is_replicated()
            && self.replicas.contains(self.me)
            && self.leader != self.me
            && self.leader != 0
            && !self.truncating
    }

    /// The follower's fetch to send now, if one is due: none outstanding (or it is older
    /// than `retry`), not backing off, not being truncated, and the follower's durable
    /// offset moved since it last said (so all-durable waiters learn of it).
    pub fn fetch_due(&self, log: &PartitionLog, now: Instant, retry: Duration) -> bool {
        if !self.follows() {
            return false;
        }
        if self.fetch.not_before.is_some_and(|t| now < t) {
            return false;
        }
        match self.fetch.outstanding {
            None => true,
            // Parked at the leader: a new fetch replaces it (our durable offset moved and
            // the leader waits for it). Never in the middle of a train.
            Some((_, sent)) => {
                now.duration_since(sent) >= retry
                    || (!self.fetch.train
                        && self.fetch.leader_wants_durable
                        && log.durable_offset() > self.fetch.durable_reported)
            }
        }
    }

    /// The fetch to send (the follower's position); records it as outstanding.
    pub fn next_fetch(
        &mut self,
        log: &PartitionLog,
        request_id: u64,
        now: Instant,
        max_bytes: u32,
    ) -> ReplicaFetch {
        let fetch_offset = log.log_end_offset();
        let durable_offset = log.durable_offset().min(fetch_offset);
        self.fetch.outstanding = Some((request_id, now));
        self.fetch.train = false;
        self.fetch.durable_reported = durable_offset;
        ReplicaFetch {
            topic_key: self.topic_key,
            partition: self.partition,
            follower_id: u16::from(self.me),
            leader_epoch: self.epoch,
            fetch_offset,
            durable_offset,
            last_fetched_epoch: log.epochs().last_epoch().unwrap_or(NO_EPOCH),
            max_bytes,
            fragment_bytes: log.fragment_received(),
        }
    }

    /// Whether a ReplicaData answers our outstanding fetch; clears the fetch unless `more`
    /// frames of its train follow.
    pub fn take_answer(&mut self, request_id: u64, more: bool) -> bool {
        match self.fetch.outstanding {
            Some((id, _)) if id == request_id => {
                self.fetch.train = more;
                if !more {
                    self.fetch.outstanding = None;
                }
                true
            }
            _ => false,
        }
    }

    /// What the leader's last answer said about all-durable waiters.
    pub fn leader_wants_durable(&mut self, wants: bool) {
        self.fetch.leader_wants_durable = wants;
    }

    /// Don't fetch again for `pause` (a refusal, a segment not ready).
    pub fn back_off(&mut self, now: Instant, pause: Duration) {
        self.fetch.not_before = Some(now + pause);
        self.fetch.outstanding = None;
    }

    /// The ISR the leader told this follower.
    pub fn learn_isr(&mut self, isr: BrokerSet) {
        self.isr = isr;
        self.isr_proposed = isr;
    }

    /// The follower learned the leader's HW (bounded by what it holds itself).
    pub fn follow_high_watermark(&mut self, leader_hw: u64, log: &PartitionLog) {
        let hw = leader_hw.min(log.log_end_offset());
        if hw > self.high_watermark {
            self.high_watermark = hw;
        }
    }

    /// The leader's view arrived with a newer epoch (static mode: the configured leader
    /// is authoritative about its epoch).
    pub fn adopt_epoch(&mut self, leader: u8, epoch: u32) -> bool {
        if leader == self.leader && epoch > self.epoch {
            self.epoch = epoch;
            return true;
        }
        false
    }

    /// Where a follower cuts its log for a divergence at `end`: never below its HW (that
    /// would lose what every ISR member held). `None` when nothing needs cutting.
    pub fn truncation_point(&self, end: u64, log: &PartitionLog) -> Result<Option<u64>, u64> {
        if end == NO_DIVERGENCE || end >= log.log_end_offset() {
            return Ok(None);
        }
        if end < self.high_watermark {
            return Err(self.high_watermark);
        }
        Ok(Some(end))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_broker_set_restricted_to_another_keeps_its_order() {
        let set = BrokerSet::from_ids(&[3, 1, 2]);
        assert_eq!(
            set.restricted_to(BrokerSet::from_ids(&[2, 3])).ids(),
            &[3, 2]
        );
        assert!(set.restricted_to(BrokerSet::default()).is_empty());
    }

    use super::*;
    use crate::log::{Flusher, LogConfig};
    use precursor_protocol::compression::Compression;
    use precursor_protocol::record_batch::RecordBatchBuilder;

    fn leader_log() -> (tempfile::TempDir, tempfile::TempDir, PartitionLog, Flusher2) {
        let data = tempfile::tempdir().unwrap();
        let memory = tempfile::tempdir_in(precursor_shm::memory_dir_default())
            .or_else(|_| tempfile::tempdir_in("/dev/shm"))
            .unwrap();
        let mut cfg = LogConfig::new(data.path().to_path_buf());
        cfg.memory_dir = memory.path().to_path_buf();
        cfg.segment_bytes = 1 << 20;
        let (flusher, thread) = Flusher::spawn(&cfg).unwrap();
        let log = PartitionLog::open(&cfg, "replicated", 0, &flusher).unwrap();
        (data, memory, log, Flusher2(flusher, Some(thread)))
    }

    struct Flusher2(
        crate::log::FlusherHandle,
        Option<std::thread::JoinHandle<()>>,
    );
    impl Drop for Flusher2 {
        fn drop(&mut self) {
            self.0.shutdown();
            if let Some(thread) = self.1.take() {
                thread.join().unwrap();
            }
        }
    }

    fn append_two(log: &mut PartitionLog, epoch: u32) {
        let mut builder = RecordBatchBuilder::new(Compression::None, -1, -1, -1, 1);
        builder.append(1, None, b"one", &[]);
        builder.append(1, None, b"two", &[]);
        log.append_as_leader(&builder.finish(), 1, epoch).unwrap();
    }

    fn fetch(follower: u16, offset: u64, epoch: u32, last_epoch: u32) -> ReplicaFetch {
        ReplicaFetch {
            topic_key: 7,
            partition: 0,
            follower_id: follower,
            leader_epoch: epoch,
            fetch_offset: offset,
            durable_offset: 0,
            last_fetched_epoch: last_epoch,
            max_bytes: 1 << 20,
            fragment_bytes: 0,
        }
    }

    #[test]
    fn the_leader_tracks_followers_moves_the_high_watermark_and_refuses_what_is_wrong() {
        let (_d, _m, mut log, _flusher) = leader_log();
        log.assign_epoch(1);
        for _ in 0..3 {
            append_two(&mut log, 1);
        }
        let replicas = BrokerSet::from_ids(&[1, 2, 3]);
        let mut replica = Replica::new(7, 0, replicas, 2, false, 1, 1, 1);
        assert!(replica.on_leader_append(&log));
        assert_eq!(
            replica.high_watermark(&log),
            6,
            "alone in the ISR: the log end"
        );
        assert!(!replica.enough_in_sync(), "min_insync 2, ISR of one");
        let now = Instant::now();
        // Catching up: served, not yet in sync.
        let verdict = replica.on_fetch(&fetch(2, 0, 1, NO_EPOCH), true, &log, now);
        assert_eq!(verdict, FetchVerdict::Serve);
        assert_eq!(replica.isr.ids(), &[1]);
        // Caught up: parked, back in the ISR.
        let verdict = replica.on_fetch(&fetch(2, 6, 1, 1), true, &log, now);
        assert_eq!(verdict, FetchVerdict::Park);
        assert_eq!(replica.isr.ids(), &[1, 2]);
        assert_eq!(replica.isr_expands, 1);
        assert!(replica.enough_in_sync());
        // A new batch: the HW waits for the follower's next fetch.
        append_two(&mut log, 1);
        assert!(!replica.on_leader_append(&log));
        assert_eq!(replica.high_watermark(&log), 6);
        replica.on_fetch(&fetch(2, 8, 1, 1), true, &log, now);
        assert_eq!(replica.high_watermark(&log), 8);
        // Refusals, each with its reason.
        let refused = |replica: &mut Replica, f: ReplicaFetch, from_broker| match replica.on_fetch(
            &f,
            from_broker,
            &log,
            now,
        ) {
            FetchVerdict::Refuse(_, reason) => reason,
            other => panic!("{other:?}"),
        };
        use RefusalReason::*;
        assert_eq!(
            refused(&mut replica, fetch(2, 8, 1, 1), false),
            UnknownBroker
        );
        assert_eq!(refused(&mut replica, fetch(9, 8, 1, 1), true), NotAReplica);
        assert_eq!(refused(&mut replica, fetch(1, 8, 1, 1), true), NotAReplica);
        assert_eq!(refused(&mut replica, fetch(2, 8, 0, 1), true), StaleEpoch);
        assert_eq!(refused(&mut replica, fetch(2, 8, 2, 1), true), FutureEpoch);
        assert_eq!(
            refused(&mut replica, fetch(2, 9, 1, NO_EPOCH), true),
            BadOffset
        );
        assert_eq!(
            replica.on_fetch(&fetch(2, 9, 1, 1), true, &log, now),
            FetchVerdict::Diverging(8),
            "more than we have in epoch 1: cut to where ours ends"
        );
        assert_eq!(refused(&mut replica, fetch(2, 8, 1, 5), true), FutureEpoch);
        // A follower whose last epoch ends earlier here than its log: it must cut.
        log.assign_epoch(2);
        replica.epoch = 2;
        append_two(&mut log, 2);
        assert_eq!(
            replica.on_fetch(&fetch(3, 9, 2, 1), true, &log, now),
            FetchVerdict::Diverging(8),
            "epoch 1 ends at 8 here"
        );
        // A follower that stops catching up leaves the ISR after replica_lag.
        let lag = Duration::from_millis(100);
        assert!(replica.shrink_isr(&log, now, lag, false).is_empty());
        let left = replica.shrink_isr(&log, now + lag * 2, lag, false);
        assert_eq!(left.ids(), &[2]);
        assert_eq!(replica.isr.ids(), &[1]);
        assert_eq!(replica.isr_shrinks, 1);
        assert_eq!(replica.high_watermark(&log), 10, "alone again: the log end");
        // On a partition nobody writes to, a follower that stops fetching leaves too: its
        // parked fetch expires unanswered and it never asks again.
        let mut idle = Replica::new(7, 0, replicas, 2, false, 1, 1, 2);
        idle.on_leader_append(&log);
        let end = log.log_end_offset();
        assert_eq!(
            idle.on_fetch(&fetch(2, end, 2, 2), true, &log, now),
            FetchVerdict::Park
        );
        idle.park(ParkedFetch {
            peer: Peer {
                mac: [2; 6],
                ip: Ipv4Addr::new(10, 0, 0, 2),
                udp_port: 9190,
            },
            request: FrameHeader::new(precursor_protocol::frame::Opcode::ReplicaFetch, 1, 0, 0),
            fetch: fetch(2, end, 2, 2),
            parked_at: now,
        });
        assert_eq!(idle.isr.ids(), &[1, 2]);
        let wait = Duration::from_millis(500);
        let mut due = [None; FOLLOWERS_MAX];
        assert!(
            idle.shrink_isr(&log, now + lag * 3, lag, false).is_empty(),
            "parked: caught up"
        );
        assert_eq!(
            idle.take_servable(&log, now + lag * 3 + wait, wait, &mut due),
            1
        );
        assert!(
            idle.shrink_isr(&log, now + lag * 4, lag, false).is_empty(),
            "just answered"
        );
        let left = idle.shrink_isr(&log, now + lag * 6, lag, false);
        assert_eq!(left.ids(), &[2], "silent since");

        // A follower never cuts below the high watermark.
        let mut follower = Replica::new(7, 0, replicas, 2, false, 2, 1, 2);
        follower.follow_high_watermark(6, &log);
        assert_eq!(follower.truncation_point(4, &log), Err(6));
        assert_eq!(follower.truncation_point(8, &log), Ok(Some(8)));
        assert_eq!(follower.truncation_point(NO_DIVERGENCE, &log), Ok(None));
    }

    #[test]
    fn in_quorum_mode_a_lagging_follower_leaves_only_the_proposed_isr_until_set_isr() {
        let (_d, _m, mut log, _flusher) = leader_log();
        let replicas = BrokerSet::from_ids(&[1, 2, 3]);
        let mut replica = Replica::new(7, 0, replicas, 2, false, 1, 0, 0);
        assert_eq!(replica.leader, 0, "quorum start-up: no leader until told");
        assert!(replica.isr.is_empty() && !replica.is_leader() && !replica.follows());
        // SetLeader with the committed ISR: exactly that ISR, effective at once.
        replica.become_leader_with_isr(4, BrokerSet::from_ids(&[1, 2, 3]), &mut log);
        assert_eq!(replica.isr.ids(), &[1, 2, 3]);
        assert_eq!(replica.isr_proposed().ids(), &[1, 2, 3]);
        append_two(&mut log, 4);
        assert!(!replica.on_leader_append(&log), "waits for 2 and 3");
        let now = Instant::now();
        assert_eq!(
            replica.on_fetch(&fetch(2, 2, 4, 4), true, &log, now),
            FetchVerdict::Park
        );
        assert_eq!(
            replica.high_watermark(&log),
            0,
            "3 is in the ISR and holds nothing"
        );
        // 3 lags past replica_lag: proposed without it, effective unchanged, HW held.
        let lag = Duration::from_millis(100);
        let later = now + lag * 2;
        replica.on_fetch(&fetch(2, 2, 4, 4), true, &log, later);
        assert!(replica.shrink_isr(&log, later, lag, true).is_empty());
        assert_eq!(
            replica.isr.ids(),
            &[1, 2, 3],
            "no self-shrink in quorum mode"
        );
        assert_eq!(replica.isr_proposed().ids(), &[1, 2]);
        assert_eq!(replica.isr_shrinks, 0);
        assert_eq!(replica.high_watermark(&log), 0);
        // SetIsr at another epoch: fenced, nothing changes.
        assert_eq!(
            replica.set_isr(3, BrokerSet::from_ids(&[1, 2]), &log),
            Err(SetIsrError::FencedEpoch { ours: 4, theirs: 3 })
        );
        assert_eq!(
            replica.set_isr(5, BrokerSet::from_ids(&[1, 2]), &log),
            Err(SetIsrError::FencedEpoch { ours: 4, theirs: 5 })
        );
        assert_eq!(replica.isr.ids(), &[1, 2, 3]);
        // The committed shrink: the HW moves past what 1 and 2 hold.
        assert_eq!(
            replica.set_isr(4, BrokerSet::from_ids(&[1, 2]), &log),
            Ok(true)
        );
        assert_eq!(replica.isr.ids(), &[1, 2]);
        assert_eq!(replica.high_watermark(&log), 2);
        assert_eq!(replica.isr_shrinks, 1);
        // 3 catches up: back in the effective ISR at once (growth is safe), and proposed.
        assert_eq!(
            replica.on_fetch(&fetch(3, 2, 4, 4), true, &log, later),
            FetchVerdict::Park
        );
        assert_eq!(replica.isr.ids(), &[1, 2, 3]);
        assert_eq!(replica.isr_proposed().ids(), &[1, 2, 3]);
        assert_eq!(replica.isr_expands, 1);
        // A committed ISR without the leader, or with strangers: the leader stays, the
        // strangers go.
        assert_eq!(
            replica.set_isr(4, BrokerSet::from_packed(0x09_02), &log),
            Ok(false)
        );
        assert_eq!(replica.isr.ids(), &[1, 2]);
        // Offline (leader 0): nothing led, nothing followed.
        replica.go_offline(5);
        assert_eq!((replica.leader, replica.epoch), (0, 5));
        assert!(!replica.is_leader() && !replica.follows() && replica.isr.is_empty());
        assert_eq!(
            replica.set_isr(5, BrokerSet::from_ids(&[1]), &log),
            Err(SetIsrError::NotLeader)
        );
        // Static mode is unchanged: the laggard leaves both ISRs by itself.
        let mut static_mode = Replica::new(7, 0, replicas, 2, false, 1, 1, 6);
        static_mode.on_leader_append(&log);
        static_mode.on_fetch(&fetch(2, 2, 6, 4), true, &log, now);
        assert_eq!(static_mode.isr.ids(), &[1, 2]);
        let left = static_mode.shrink_isr(&log, now + lag * 2, lag, false);
        assert_eq!(left.ids(), &[2]);
        assert_eq!(static_mode.isr.ids(), &[1]);
        assert_eq!(static_mode.isr_proposed().ids(), &[1]);
    }

    #[test]
    fn broker_sets_keep_order_and_pack() {
        let mut set = BrokerSet::from_ids(&[3, 1, 2]);
        assert_eq!(set.ids(), &[3, 1, 2]);
        assert_eq!(set.packed(), 0x02_01_03);
        set.remove(1);
        assert_eq!(set.ids(), &[3, 2]);
        set.insert(3);
        assert_eq!(set.len(), 2);
        set.insert(5);
        assert!(set.contains(5));
        assert_eq!(BrokerSet::default().packed(), 0);
    }

    #[test]
    fn arp_is_asked_once_per_interval_and_learned_from_any_packet() {
        let timings = ReplicationTimings {
            replica_lag: Duration::from_secs(1),
            fetch_wait: Duration::from_millis(500),
            fetch_retry: Duration::from_millis(50),
        };
        let ip = Ipv4Addr::new(10, 79, 0, 22);
        let mut view = ClusterView::new(
            1,
            &[(1, Ipv4Addr::new(10, 79, 0, 21), 9190), (2, ip, 9190)],
            timings,
        );
        let now = Instant::now();
        assert_eq!(view.peer(2, now), Err(Some(ip)));
        assert_eq!(view.peer(2, now), Err(None), "one request per interval");
        assert_eq!(view.peer(2, now + ARP_RETRY), Err(Some(ip)));
        assert_eq!(view.peer(9, now), Err(None), "not a broker");
        view.learn(ip, [2; 6]);
        let peer = view.peer(2, now).unwrap();
        assert_eq!((peer.mac, peer.ip, peer.udp_port), ([2; 6], ip, 9190));
        assert!(view.is_broker(2, &peer));
        assert!(!view.is_broker(1, &peer), "another broker's id");
        assert!(!view.is_broker(0, &peer));
        let forged = Peer {
            udp_port: 9191,
            ..peer
        };
        assert!(!view.is_broker(2, &forged), "right address, wrong port");
    }
}
