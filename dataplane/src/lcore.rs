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
use crate::ipc::IpcTransport;
use crate::log::PartitionLog;
use crate::net::{self, Endpoint, Inbound, Peer, UDP_HEADERS_BYTES};
use crate::replica::{
    BrokerSet, ClusterView, ParkedFetch, Replica, SetIsrError, FOLLOWERS_MAX,
    REPLICA_FETCH_BYTES_DEFAULT, REPLICA_TRAIN_FRAMES_MAX,
};
use crate::service::{
    DueAnswer, Reply, ReplyTo, Service, ServiceConfig, CREATIONS_IN_FLIGHT_MAX,
    DIRTY_PARTITIONS_MAX, DUE_ANSWERS_MAX,
};
use crate::topics::{AdminLink, AdminReply, AdminRequest, Origin, Topic, TopicName, TopicTable};
use precursor_ffi::dpdk::{Mbuf, MbufBurst, Mempool, Port};
use precursor_protocol::command::{Command, Event};
use precursor_protocol::frame::{
    ErrorCode, FetchDataHeader, FrameHeader, Opcode, PartitionHandle, FRAME_HEADER_BYTES,
};
use precursor_protocol::replication::ReplicaFetch;
use precursor_shm::monotonic_ns;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Packets one `rx_burst` takes at most.
pub const RX_BURST_PACKETS_MAX: usize = 64;
/// Replies buffered before a `tx_burst`.
pub const TX_BURST_PACKETS_MAX: usize = 128;

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

pub struct Lcore {
    config: LcoreConfig,
    port: Port,
    pool: Mempool,
    /// What every transport's requests are served by.
    service: Service,
    /// Shared-memory channels of co-located clients, when enabled.
    ipc: Option<IpcTransport>,
    /// RDMA queue pairs, when enabled.
    #[cfg(feature = "rdma")]
    rdma: Option<crate::rdma::RdmaTransport>,
    rx: MbufBurst<RX_BURST_PACKETS_MAX>,
    tx: MbufBurst<TX_BURST_PACKETS_MAX>,
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
        let service = Service::new(
            ServiceConfig {
                pending_acks_max: config.pending_acks_max,
                auto_create_topics: config.auto_create_topics,
                default_partitions: config.default_partitions,
                frame_bytes_max: config.frame_bytes_max,
            },
            topics,
            admin,
        );
        Lcore {
            config,
            port,
            pool,
            service,
            ipc: None,
            #[cfg(feature = "rdma")]
            rdma: None,
            rx: MbufBurst::new(),
            tx: MbufBurst::new(),
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
        self.service
            .topics
            .for_each_mut(|topic| register_partitions(&mut control, topic, 0));
        self.control = Some(control);
    }

    /// Makes this lcore a broker of a cluster: it replicates the partitions whose replicas
    /// name other brokers (start-up).
    pub fn attach_cluster(&mut self, cluster: ClusterView) {
        self.service.cluster = Some(cluster);
    }

    /// Serves the IPC channels of `ipc` too, from the next iteration on.
    pub fn attach_ipc(&mut self, ipc: IpcTransport) {
        self.service.serve_frames_up_to(ipc.frame_bytes_max());
        self.ipc = Some(ipc);
    }

    /// Serves the RDMA connections of `rdma` too, from the next iteration on.
    #[cfg(feature = "rdma")]
    pub fn attach_rdma(&mut self, rdma: crate::rdma::RdmaTransport) {
        self.service.serve_frames_up_to(rdma.frame_bytes_max());
        self.rdma = Some(rdma);
    }

    /// The RDMA transport's counters, when it runs.
    #[cfg(feature = "rdma")]
    pub fn rdma_counters(&self) -> Option<&crate::rdma::RdmaCounters> {
        self.rdma.as_ref().map(|rdma| &rdma.counters)
    }

    pub fn counters(&self) -> &LcoreCounters {
        &self.service.counters
    }

    pub fn topics(&self) -> &TopicTable {
        &self.service.topics
    }

    /// Polls until `stop` is set, then sends what is buffered.
    pub fn run(&mut self, stop: &AtomicBool, idle: &mut Idle) {
        while !stop.load(Ordering::Relaxed) {
            let work = self.do_work();
            self.service.counters.busy_iterations += u64::from(work > 0);
            idle.idle(work);
        }
        self.drain(Instant::now());
        self.flush_tx();
    }

    /// One iteration: a receive burst, its replies, and the drain timer. Returns the work done.
    #[inline]
    pub fn do_work(&mut self) -> usize {
        self.service.counters.loop_iterations += 1;
        // Quorum mode: the clock once per iteration (vDSO) against the lease (one load).
        if self.service.cluster.as_ref().is_some_and(|c| c.quorum) {
            let lease_until_ns = self.control.as_ref().map_or(0, Control::lease_until_ns);
            self.service.lease_expired = monotonic_ns() >= lease_until_ns;
        }
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
        if let Some(ipc) = &mut self.ipc {
            work += ipc.poll(&mut self.service, wall_clock_ms);
        }
        #[cfg(feature = "rdma")]
        if let Some(rdma) = &mut self.rdma {
            work += rdma.poll(&mut self.service, wall_clock_ms);
        }
        if self.control.is_some() {
            work += self.poll_commands();
        }
        if self.service.cluster.is_some() {
            work += self.replicate();
        }
        let now = Instant::now();
        if now.duration_since(self.last_drain) >= self.config.drain_interval {
            self.last_drain = now;
            work += self.drain(now);
        }
        // Durable acks are checked every iteration when any wait: one atomic load each.
        if self.service.pending_acks() > 0 {
            work += self.send_due_answers();
        }
        work + self.flush_tx()
    }

    fn handle_packet(&mut self, mut mbuf: Mbuf, now_ms: i64) {
        let counters = &mut self.service.counters;
        counters.rx_packets += 1;
        counters.rx_bytes += mbuf.len() as u64;
        if !mbuf.is_contiguous() {
            counters.rx_multi_segment += 1;
            return;
        }
        let endpoint = self.config.endpoint;
        match net::classify(mbuf.data(), &endpoint) {
            Inbound::Datagram { peer, payload } => {
                let served = self.service.serve_frame(
                    ReplyTo::Udp(peer),
                    payload,
                    self.config.frame_bytes_max,
                    now_ms,
                );
                if let Some((header, reply)) = served {
                    self.reply_udp(mbuf, peer, &header, reply);
                }
            }
            Inbound::ArpReply { peer_mac, peer_ip } => {
                if let Some(cluster) = &mut self.service.cluster {
                    cluster.learn(peer_ip, peer_mac);
                }
            }
            Inbound::ArpRequest { peer_mac, peer_ip } => {
                if let Some(cluster) = &mut self.service.cluster {
                    cluster.learn(peer_ip, peer_mac);
                }
                let counters = &mut self.service.counters;
                mbuf.reset();
                let Some(out) = mbuf.append(net::ETHERNET_FRAME_BYTES_MIN) else {
                    return;
                };
                net::write_arp_reply(out, &endpoint, peer_mac, peer_ip);
                counters.arp_replies += 1;
                self.transmit(mbuf);
            }
            Inbound::EchoRequest => {
                net::echo_request_into_reply(mbuf.data_mut(), &endpoint);
                counters.echo_replies += 1;
                self.transmit(mbuf);
            }
            Inbound::Dropped(reason) => counters.count_drop(reason),
        }
    }

    /// Answers a UDP request in `mbuf` (the request's own, or a fresh one for a parked
    /// answer): the service renders the payload in place, then the frame header and the
    /// UDP headers go around it.
    fn reply_udp(&mut self, mbuf: Mbuf, peer: Peer, request: &FrameHeader, reply: Reply) {
        let Reply::ReplicaData { handle, .. } = reply else {
            return self.reply_udp_frame(mbuf, peer, request, reply);
        };
        // A follower's fetch is answered with a train of frames while there is more.
        self.service.replica_train_left = REPLICA_TRAIN_FRAMES_MAX - 1;
        self.reply_udp_frame(mbuf, peer, request, reply);
        while let Some(fetch) = self.service.replica_continuation.take() {
            self.service.replica_train_left -= 1;
            let Some(mbuf) = self.pool.alloc() else {
                self.service.counters.mbuf_alloc_failures += 1;
                break;
            };
            let next = Reply::ReplicaData {
                handle,
                fetch,
                diverging: precursor_protocol::replication::NO_DIVERGENCE,
            };
            self.reply_udp_frame(mbuf, peer, request, next);
        }
        self.service.replica_train_left = 0;
        self.service.replica_continuation = None;
    }

    /// One frame of [`Lcore::reply_udp`].
    fn reply_udp_frame(&mut self, mut mbuf: Mbuf, peer: Peer, request: &FrameHeader, reply: Reply) {
        if reply == Reply::Nothing {
            return;
        }
        let reserved = reply.payload_bytes_max(self.config.frame_bytes_max);
        let Some(out) = begin_reply(&mut mbuf, reserved) else {
            self.service.counters.mbuf_alloc_failures += 1;
            return;
        };
        let header = self
            .service
            .render(reply, request, out)
            .expect("a reply other than Nothing renders a frame");
        let payload_bytes = header.length as usize;
        assert!(payload_bytes <= reserved);
        let endpoint = self.config.endpoint;
        let data = mbuf.data_mut();
        header.encode(&mut data[UDP_HEADERS_BYTES..]);
        let total =
            net::write_udp_headers(data, &endpoint, &peer, FRAME_HEADER_BYTES + payload_bytes);
        let reserved_total = UDP_HEADERS_BYTES + FRAME_HEADER_BYTES + reserved;
        let trimmed = mbuf.trim(reserved_total - total);
        assert!(trimmed);
        self.transmit(mbuf);
    }

    /// Sends an answer that was not given in its request's iteration (a durable ack)
    /// through the transport it is for.
    fn deliver(&mut self, reply_to: ReplyTo, request: &FrameHeader, reply: Reply) {
        match reply_to {
            ReplyTo::Udp(peer) => {
                let Some(mbuf) = self.pool.alloc() else {
                    // Unacked: the client retransmits and the duplicate is acked then.
                    self.service.counters.mbuf_alloc_failures += 1;
                    return;
                };
                self.reply_udp(mbuf, peer, request, reply);
            }
            ReplyTo::Ipc {
                channel,
                generation,
            } => {
                let ipc = self
                    .ipc
                    .as_mut()
                    .expect("IPC answers come from IPC requests");
                ipc.deliver(&mut self.service, channel, generation, request, reply);
            }
            #[cfg(feature = "rdma")]
            ReplyTo::Rdma {
                connection,
                generation,
            } => {
                let rdma = self
                    .rdma
                    .as_mut()
                    .expect("RDMA answers come from RDMA requests");
                rdma.deliver(&mut self.service, connection, generation, request, reply);
            }
            // No such transport in this build: nothing can have been parked for it.
            #[cfg(not(feature = "rdma"))]
            ReplyTo::Rdma { .. } => {
                unreachable!("answer for a transport this lcore does not run")
            }
        }
    }

    fn transmit(&mut self, mbuf: Mbuf) {
        self.service.counters.tx_bytes += mbuf.len() as u64;
        if let Err(mbuf) = self.tx.push(mbuf) {
            self.flush_tx();
            if let Err(mbuf) = self.tx.push(mbuf) {
                self.service.counters.tx_dropped += 1;
                drop(mbuf);
            }
        }
    }

    fn flush_tx(&mut self) -> usize {
        if self.tx.is_empty() {
            return 0;
        }
        let sent = self.port.tx_burst(self.config.queue, &mut self.tx);
        self.service.counters.tx_packets += sent as u64;
        sent
    }

    /// The drain timer: durable acks, the admin thread's answers, log housekeeping,
    /// counters for the control plane.
    fn drain(&mut self, now: Instant) -> usize {
        let mut work = self.send_due_answers();
        while let Some(reply) = self.service.admin.poll() {
            work += 1;
            self.on_admin_reply(reply);
        }
        let now_ms = wall_clock_ms();
        if let Some(ipc) = &mut self.ipc {
            work += ipc.maintain(&mut self.service, now, now_ms as u64);
        }
        #[cfg(feature = "rdma")]
        if let Some(rdma) = &mut self.rdma {
            work += rdma.maintain(&mut self.service, now);
        }
        // Counters are for people and scrapers: published at COUNTERS_INTERVAL, not on every
        // drain tick, so their cost does not grow with partitions on the lcore's clock.
        let publish =
            self.control.is_some() && now.duration_since(self.last_counters) >= COUNTERS_INTERVAL;
        if publish {
            self.last_counters = now;
        }
        if self.service.cluster.is_some() {
            work += self.replication_tick(now);
        }
        let control = self.control.as_ref().filter(|_| publish);
        self.service.topics.for_each_mut(|topic| {
            let partitions = topic.partitions.iter_mut().zip(&topic.replicas);
            for ((log, replica), ids) in partitions.zip(&topic.counters) {
                log.maintain(now_ms);
                if let (Some(control), Some(ids)) = (control, ids) {
                    control.publish_partition(ids, &partition_values(log, replica));
                }
            }
        });
        if let Some(control) = &mut self.control {
            control.heartbeat(now_ms as u64);
            if publish {
                control.publish(&self.service.counters, self.service.pending_acks());
            }
            if now.duration_since(self.last_port_stats) >= PORT_STATS_INTERVAL {
                self.last_port_stats = now;
                control.publish_port(&self.port.stats(), &self.port.link());
            }
        }
        work
    }

    /// After each iteration's requests: answers the followers' parked fetches of the
    /// partitions appended to, sends the follower fetches that are due now, hands the
    /// topics with a divergent tail to cut to the admin thread.
    fn replicate(&mut self) -> usize {
        let mut work = 0;
        let now = Instant::now();
        if !self.service.appended.is_empty() {
            let (handles, len, overflowed) = self.service.appended.take();
            if overflowed {
                work += self.serve_parked_fetches_everywhere(now);
            } else {
                for handle in &handles[..len] {
                    work += self.serve_parked_fetches(*handle, now);
                }
            }
        }
        if !self.service.fetch_now.is_empty() {
            let (handles, len, overflowed) = self.service.fetch_now.take();
            if overflowed {
                // Rare: the drain tick's sweep sends every due fetch.
                self.last_drain = now
                    .checked_sub(self.config.drain_interval)
                    .unwrap_or(self.last_drain);
            }
            for handle in &handles[..len] {
                work += self.send_replica_fetch(*handle, now, true);
            }
        }
        while let Some(topic_id) = self.service.to_truncate.pop() {
            work += 1;
            let Some(name) = self
                .service
                .topics
                .topics()
                .find(|t| t.id == topic_id)
                .map(|t| TopicName::new(&t.name).expect("installed topics have valid names"))
            else {
                continue;
            };
            if self
                .service
                .growing
                .iter()
                .any(|g| g.as_str() == name.as_str())
            {
                // Its grow's reply needs it in the table: cut once that is in.
                self.service.to_truncate.push(topic_id);
                break;
            }
            let Some((topic, key)) = self.service.topics.remove(name.as_str()) else {
                continue;
            };
            if let Err(request) = self
                .service
                .admin
                .request(AdminRequest::Truncate { topic, key })
            {
                // The admin queue is full: put it back and try on the next iteration.
                let AdminRequest::Truncate { topic, key } = request else {
                    unreachable!("the request given back is the one sent");
                };
                self.service.topics.install(topic, key);
                self.service.to_truncate.push(topic_id);
                break;
            }
        }
        work
    }

    /// Answers the parked fetches of one partition that are due (new data or HW).
    fn serve_parked_fetches(&mut self, handle: PartitionHandle, now: Instant) -> usize {
        let fetch_wait = match &self.service.cluster {
            Some(cluster) => cluster.timings.fetch_wait,
            None => return 0,
        };
        let mut due: [Option<ParkedFetch>; FOLLOWERS_MAX] = [None; FOLLOWERS_MAX];
        let taken = match self.service.topics.replicated_mut(handle) {
            Some((log, replica)) => replica.take_servable(log, now, fetch_wait, &mut due),
            None => 0,
        };
        for parked in due.iter().take(taken).flatten() {
            self.answer_follower(handle, parked, now);
        }
        taken
    }

    fn serve_parked_fetches_everywhere(&mut self, now: Instant) -> usize {
        let mut handles = [PartitionHandle(0); DIRTY_PARTITIONS_MAX];
        let mut work = 0;
        // Bounded passes over the table, DIRTY_PARTITIONS_MAX handles at a time.
        let mut skip = 0usize;
        loop {
            let mut found = 0;
            let mut seen = 0usize;
            for topic in self.service.topics.topics() {
                for (p, replica) in topic.replicas.iter().enumerate() {
                    if !replica.is_replicated() || replica.leader != replica.me {
                        continue;
                    }
                    seen += 1;
                    if seen <= skip || found == handles.len() {
                        continue;
                    }
                    handles[found] = PartitionHandle::new(topic.id, p as u16);
                    found += 1;
                }
            }
            for handle in &handles[..found] {
                work += self.serve_parked_fetches(*handle, now);
            }
            skip += found;
            if found < handles.len() {
                return work;
            }
        }
    }

    /// Sends ReplicaData for a parked (or immediate) follower fetch.
    fn answer_follower(&mut self, handle: PartitionHandle, parked: &ParkedFetch, now: Instant) {
        let Some(mbuf) = self.pool.alloc() else {
            // The follower's retry asks again.
            self.service.counters.mbuf_alloc_failures += 1;
            return;
        };
        let reply = Reply::ReplicaData {
            handle,
            fetch: parked.fetch,
            diverging: precursor_protocol::replication::NO_DIVERGENCE,
        };
        self.reply_udp(mbuf, parked.peer, &parked.request, reply);
        if let Some((log, replica)) = self.service.topics.replicated_mut(handle) {
            replica.answered(parked.fetch.follower_id, log, now);
        }
    }

    /// A follower partition's next fetch to its leader, if one is due (`now_due`: its
    /// leader just answered, so it goes at once). An unknown leader MAC sends ARP first.
    fn send_replica_fetch(
        &mut self,
        handle: PartitionHandle,
        now: Instant,
        now_due: bool,
    ) -> usize {
        let Some(cluster) = self.service.cluster.as_mut() else {
            return 0;
        };
        let retry = cluster.timings.fetch_retry;
        let Some((log, replica)) = self.service.topics.replicated_mut(handle) else {
            return 0;
        };
        let send = if now_due {
            replica.follows()
        } else {
            replica.fetch_due(log, now, retry)
        };
        if !send {
            return 0;
        }
        let peer = match cluster.peer(replica.leader, now) {
            Ok(peer) => peer,
            Err(Some(ip)) => {
                self.send_arp_request(ip);
                return 1;
            }
            Err(None) => return 0,
        };
        let request_id = cluster.next_request_id();
        let max_bytes = REPLICA_FETCH_BYTES_DEFAULT;
        let fetch: ReplicaFetch = replica.next_fetch(log, request_id, now, max_bytes);
        self.transmit_replica_fetch(peer, handle, request_id, &fetch)
    }

    /// A designated leader's start-up question to the next replica (see `Probe`).
    fn send_probe(&mut self, handle: PartitionHandle, now: Instant) -> usize {
        let Some(cluster) = self.service.cluster.as_mut() else {
            return 0;
        };
        let Some((log, replica)) = self.service.topics.replicated_mut(handle) else {
            return 0;
        };
        let request_id = cluster.next_request_id();
        let Some((target, fetch)) = replica.next_probe(log, request_id, now) else {
            return 0;
        };
        match cluster.peer(target, now) {
            Ok(peer) => self.transmit_replica_fetch(peer, handle, request_id, &fetch),
            Err(Some(ip)) => {
                self.send_arp_request(ip);
                1
            }
            Err(None) => 0,
        }
    }

    fn send_arp_request(&mut self, ip: std::net::Ipv4Addr) {
        let endpoint = self.config.endpoint;
        if let Some(mut mbuf) = self.pool.alloc() {
            if let Some(out) = mbuf.append(net::ETHERNET_FRAME_BYTES_MIN) {
                net::write_arp_request(out, &endpoint, ip);
                self.transmit(mbuf);
            }
        }
    }

    /// A ReplicaFetch frame to `peer`; the answer comes back to partition `handle`.
    fn transmit_replica_fetch(
        &mut self,
        peer: Peer,
        handle: PartitionHandle,
        request_id: u64,
        fetch: &ReplicaFetch,
    ) -> usize {
        let Some(mut mbuf) = self.pool.alloc() else {
            self.service.counters.mbuf_alloc_failures += 1;
            return 0;
        };
        let Some(out) = begin_reply(&mut mbuf, ReplicaFetch::BYTES) else {
            self.service.counters.mbuf_alloc_failures += 1;
            return 0;
        };
        fetch.encode(out);
        let header = FrameHeader::new(
            Opcode::ReplicaFetch,
            request_id,
            handle.0,
            ReplicaFetch::BYTES,
        );
        let endpoint = self.config.endpoint;
        let data = mbuf.data_mut();
        header.encode(&mut data[UDP_HEADERS_BYTES..]);
        net::write_udp_headers(
            data,
            &endpoint,
            &peer,
            FRAME_HEADER_BYTES + ReplicaFetch::BYTES,
        );
        self.transmit(mbuf);
        1
    }

    /// The drain timer's replication work: leaders shrink their ISRs and answer parked
    /// fetches that waited long enough; followers send fetches that are due.
    fn replication_tick(&mut self, now: Instant) -> usize {
        let mut work = 0;
        // Every replicated partition each tick, DIRTY_PARTITIONS_MAX of each kind at a time
        // (fixed arrays: the sends below need the lcore, the walk borrows the table).
        let mut skip = 0usize;
        loop {
            let (batch, seen) = self.replication_tick_batch(now, skip);
            work += batch;
            if seen == 0 {
                return work;
            }
            skip += seen;
        }
    }

    /// One slice of [`Lcore::replication_tick`]: the replicated partitions after the first
    /// `skip`, until one kind's array is full. Returns (work, partitions taken).
    fn replication_tick_batch(&mut self, now: Instant, skip: usize) -> (usize, usize) {
        let Some(cluster) = &self.service.cluster else {
            return (0, 0);
        };
        let timings = cluster.timings;
        let quorum = cluster.quorum;
        let mut work = 0;
        let mut leaders = [PartitionHandle(0); DIRTY_PARTITIONS_MAX];
        let mut followers = [PartitionHandle(0); DIRTY_PARTITIONS_MAX];
        let mut probing = [PartitionHandle(0); DIRTY_PARTITIONS_MAX];
        let (mut led, mut followed, mut probed) = (0, 0, 0);
        let (mut seen, mut taken) = (0usize, 0usize);
        let counters = &mut self.service.counters;
        self.service.topics.for_each_mut(|topic| {
            for (p, (log, replica)) in topic
                .partitions
                .iter()
                .zip(topic.replicas.iter_mut())
                .enumerate()
            {
                if !replica.is_replicated() {
                    continue;
                }
                seen += 1;
                let full =
                    led == leaders.len() || followed == followers.len() || probed == probing.len();
                if seen <= skip || full {
                    continue;
                }
                taken += 1;
                let handle = PartitionHandle::new(topic.id, p as u16);
                if replica.is_probing() {
                    probing[probed] = handle;
                    probed += 1;
                } else if replica.leader == replica.me {
                    let proposed_before = replica.isr_proposed();
                    let left = replica.shrink_isr(log, now, timings.replica_lag, quorum);
                    if quorum && replica.isr_proposed() != proposed_before {
                        // Rare: worth a line. The quorum decides (SetIsr).
                        eprintln!(
                            "precursor-dataplane: {}-{p}: ISR {:?}, proposing {:?} (no \
                             catch-up for {} ms)",
                            topic.name,
                            replica.isr.ids(),
                            replica.isr_proposed().ids(),
                            timings.replica_lag.as_millis(),
                        );
                    }
                    for id in left.ids() {
                        counters.isr_changes += 1;
                        // Rare (a follower lost for replica_lag_ms): worth a line.
                        eprintln!(
                            "precursor-dataplane: {}-{p}: broker {id} left the ISR (no catch-up \
                             for {} ms); ISR now {:?}",
                            topic.name,
                            timings.replica_lag.as_millis(),
                            replica.isr.ids()
                        );
                    }
                    leaders[led] = handle;
                    led += 1;
                } else if replica.fetch_due(log, now, timings.fetch_retry) {
                    followers[followed] = handle;
                    followed += 1;
                }
            }
        });
        for handle in &leaders[..led] {
            work += self.serve_parked_fetches(*handle, now);
        }
        for handle in &followers[..followed] {
            work += self.send_replica_fetch(*handle, now, false);
        }
        for handle in &probing[..probed] {
            work += self.send_probe(*handle, now);
        }
        (work, taken)
    }

    /// Sends every parked answer that is due (offsets durable, or the partition failed).
    fn send_due_answers(&mut self) -> usize {
        let mut due: [Option<DueAnswer>; DUE_ANSWERS_MAX] = [None; DUE_ANSWERS_MAX];
        let ready = self.service.due_answers(&mut due);
        for answer in due.iter().take(ready).flatten() {
            if answer.waited_ns > 0 {
                if let Some(control) = &self.control {
                    control.record_durable_wait(answer.waited_ns);
                }
            }
            self.deliver(answer.reply_to, &answer.request, answer.reply);
        }
        ready
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
                replication,
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
                let creating = self.service.creating.iter().any(|n| n.as_str() == name);
                if creating || self.service.topics.by_name(name).is_some() {
                    return self.answer(
                        correlation,
                        &failed(ErrorCode::TopicExists, "topic already exists"),
                    );
                }
                if self.service.creating.len() >= CREATIONS_IN_FLIGHT_MAX {
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
                    replication,
                    origin: Origin::Command(correlation),
                };
                match self.service.admin.request(request) {
                    Ok(()) => self.service.creating.push(topic_name),
                    Err(_) => {
                        self.answer(correlation, &failed(ErrorCode::Busy, "admin queue full"))
                    }
                }
            }
            Command::DeleteTopic { name } => {
                if self.service.creating.iter().any(|n| n.as_str() == name) {
                    return self.answer(
                        correlation,
                        &failed(ErrorCode::Busy, "topic is being created"),
                    );
                }
                if self.service.growing.iter().any(|n| n.as_str() == name) {
                    return self.answer(
                        correlation,
                        &failed(ErrorCode::Busy, "partitions are being added to the topic"),
                    );
                }
                let Some((mut topic, key)) = self.service.topics.remove(name) else {
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
                    self.service.admin.request(AdminRequest::Delete {
                        topic,
                        key,
                        correlation,
                    })
                {
                    // Put it back: nothing happened.
                    self.service.topics.install(topic, key);
                    self.answer(correlation, &failed(ErrorCode::Busy, "admin queue full"));
                }
            }
            Command::CreatePartitions { name, partitions } => {
                self.on_create_partitions(correlation, name, partitions)
            }
            Command::SetIsr {
                name,
                partition,
                epoch,
                isr,
            } => {
                let handle = match self.service.topics.handle_by_name(name, partition) {
                    Ok(handle) => handle,
                    Err(reason) => {
                        return self.answer(
                            correlation,
                            &failed(ErrorCode::UnknownTopicOrPartition, reason),
                        )
                    }
                };
                match self
                    .service
                    .set_isr(handle, epoch, BrokerSet::from_packed(isr))
                {
                    Ok(()) => self.answer(correlation, &Event::Done),
                    Err(SetIsrError::NotLeader) => self.answer(
                        correlation,
                        &failed(
                            ErrorCode::NotLeaderOrFollower,
                            "this broker does not lead the partition",
                        ),
                    ),
                    Err(SetIsrError::FencedEpoch { .. }) => self.answer(
                        correlation,
                        &failed(
                            ErrorCode::FencedLeaderEpoch,
                            "FencedLeaderEpoch: the epoch is not this leader's current one",
                        ),
                    ),
                }
            }
            Command::SetLeader {
                name,
                partition,
                leader,
                epoch,
                isr,
            } => {
                let quorum = self.service.cluster.as_ref().is_some_and(|c| c.quorum);
                let Some(topic_name) = TopicName::new(name) else {
                    return self.answer(
                        correlation,
                        &failed(ErrorCode::InvalidTopic, "invalid topic name"),
                    );
                };
                let handle = match self.service.topics.handle_by_name(name, partition) {
                    Ok(handle) => handle,
                    Err(reason) => {
                        return self.answer(
                            correlation,
                            &failed(ErrorCode::UnknownTopicOrPartition, reason),
                        )
                    }
                };
                let (log, replica) = self
                    .service
                    .topics
                    .replicated_mut(handle)
                    .expect("handle_by_name found the partition");
                // Quorum mode: the same epoch again with another ISR changes only the ISR.
                let same_leadership = quorum
                    && epoch == replica.epoch
                    && epoch != 0
                    && leader == u16::from(replica.leader);
                if same_leadership && replica.is_replicated() {
                    let isr = BrokerSet::from_packed(isr);
                    if replica.leader == replica.me && !isr.is_empty() {
                        // Checked above: this leader, this epoch.
                        let _ = self.service.set_isr(handle, epoch, isr);
                    } else if !isr.is_empty() {
                        // A follower keeps the committed ISR to show (gauges, Metadata
                        // from this broker); it decides nothing with it.
                        replica.learn_isr(isr.restricted_to(replica.replicas));
                    }
                    return self.answer(correlation, &Event::Done);
                }
                let offline = quorum && leader == 0;
                // Quorum mode, after this data plane restarted (it starts offline at the
                // epoch its log knows): following the leader of that same epoch is safe
                // (the follower's fetch finds any divergence by epoch); leading at it is
                // not, and the quorum never asks: a new incarnation's leaderships move to
                // a new epoch.
                let rejoin = quorum
                    && replica.leader == 0
                    && epoch == replica.epoch
                    && leader != 0
                    && leader as u8 != replica.me;
                let refusal = if !replica.is_replicated() {
                    Some((ErrorCode::InvalidArgument, "the partition has one replica"))
                } else if offline {
                    (epoch < replica.epoch).then_some((
                        ErrorCode::FencedLeaderEpoch,
                        "the epoch must not be lower than the partition's",
                    ))
                } else if leader == 0 || leader > 64 || !replica.replicas.contains(leader as u8) {
                    Some((
                        ErrorCode::InvalidArgument,
                        "the leader must be one of the replicas",
                    ))
                } else if epoch <= replica.epoch && !rejoin {
                    Some((
                        ErrorCode::FencedLeaderEpoch,
                        "the epoch must be greater than the partition's",
                    ))
                } else if replica.truncating {
                    Some((ErrorCode::Busy, "the partition is being truncated"))
                } else {
                    None
                };
                if let Some((code, message)) = refusal {
                    return self.answer(correlation, &failed(code, message));
                }
                if offline {
                    replica.go_offline(epoch);
                } else if leader as u8 == replica.me && quorum {
                    replica.become_leader_with_isr(epoch, BrokerSet::from_packed(isr), log);
                } else if leader as u8 == replica.me {
                    replica.become_leader(epoch, log);
                } else {
                    replica.become_follower(leader as u8, epoch);
                    let isr = BrokerSet::from_packed(isr).restricted_to(replica.replicas);
                    if quorum && isr.contains(leader as u8) {
                        replica.learn_isr(isr);
                    }
                    self.service.fetch_now.push(handle);
                }
                let request = AdminRequest::PersistLeader {
                    name: topic_name,
                    partition,
                    leader,
                    epoch,
                    correlation,
                };
                if self.service.admin.request(request).is_err() {
                    self.answer(correlation, &failed(ErrorCode::Busy, "admin queue full"));
                }
            }
            Command::SetTopicConfigs { name, configs } => {
                let (topic_name, topic) = match named_topic(&mut self.service.topics, name) {
                    Ok(found) => found,
                    Err(refusal) => return self.answer(correlation, &refusal),
                };
                let defaults = topic.defaults;
                if configs
                    .max_message_bytes
                    .is_some_and(|bytes| bytes > defaults.batch_bytes_max)
                {
                    return self.answer(
                        correlation,
                        &failed(
                            ErrorCode::InvalidArgument,
                            "max.message.bytes exceeds storage.batch_bytes_max",
                        ),
                    );
                }
                let factor = topic
                    .replicas
                    .iter()
                    .map(|r| r.replicas.len().max(1))
                    .min()
                    .unwrap_or(1);
                if configs
                    .min_insync_replicas
                    .is_some_and(|n| usize::from(n) > factor)
                {
                    return self.answer(
                        correlation,
                        &failed(
                            ErrorCode::InvalidArgument,
                            "min.insync.replicas exceeds the topic's replication factor",
                        ),
                    );
                }
                use precursor_protocol::topic_config::retention_as_log;
                let limit = |v: i64| Some(retention_as_log(v)).filter(|v| *v > 0);
                for log in &mut topic.partitions {
                    log.set_retention(
                        configs.retention_ms.map_or(defaults.retention_ms, limit),
                        configs
                            .retention_bytes
                            .map_or(defaults.retention_bytes, limit),
                    );
                    log.set_message_bytes_max(configs.max_message_bytes);
                }
                for replica in topic.replicas.iter_mut().filter(|r| r.is_replicated()) {
                    let factor = replica.replicas.len() as u8;
                    replica.min_insync = configs
                        .min_insync_replicas
                        .unwrap_or(defaults.min_insync.min(factor))
                        .clamp(1, factor);
                }
                let request = AdminRequest::SetConfigs {
                    name: topic_name,
                    configs,
                    correlation,
                };
                if self.service.admin.request(request).is_err() {
                    self.answer(correlation, &failed(ErrorCode::Busy, "admin queue full"));
                }
            }
            Command::AlterTopic {
                name,
                retention_ms,
                retention_bytes,
            } => {
                let (topic_name, topic) = match named_topic(&mut self.service.topics, name) {
                    Ok(found) => found,
                    Err(refusal) => return self.answer(correlation, &refusal),
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
                if self.service.admin.request(request).is_err() {
                    self.answer(correlation, &failed(ErrorCode::Busy, "admin queue full"));
                }
            }
        }
    }

    /// CreatePartitions: checked here, carried out by the admin thread (files), installed
    /// when it answers ([`AdminReply::PartitionsCreated`]).
    fn on_create_partitions(&mut self, correlation: u64, name: &str, partitions: u16) {
        let failed = |code, message| Event::Failed { code, message };
        let Some(topic_name) = TopicName::new(name) else {
            return self.answer(
                correlation,
                &failed(ErrorCode::InvalidTopic, "invalid topic name"),
            );
        };
        let busy = self.service.creating.iter().any(|n| n.as_str() == name)
            || self.service.growing.iter().any(|n| n.as_str() == name);
        if busy {
            return self.answer(
                correlation,
                &failed(
                    ErrorCode::Busy,
                    "the topic is being created or grown: ask again when that is done",
                ),
            );
        }
        let Some(topic) = self.service.topics.by_name(name) else {
            return self.answer(
                correlation,
                &failed(ErrorCode::UnknownTopicOrPartition, "no such topic"),
            );
        };
        let existing = topic.partitions.len() as u16;
        if partitions <= existing {
            // The message names the count: the control plane checked it before asking, so
            // this is a race with another grow (or a retry of one that went through).
            let mut message = [0u8; 96];
            let mut cursor = std::io::Cursor::new(&mut message[..]);
            use std::io::Write;
            let _ = write!(
                cursor,
                "the topic has {existing} partitions; partitions can only grow"
            );
            let written = cursor.position() as usize;
            let text =
                std::str::from_utf8(&message[..written]).unwrap_or("partitions can only grow");
            return self.answer(correlation, &failed(ErrorCode::InvalidArgument, text));
        }
        if partitions > PARTITIONS_PER_TOPIC_MAX {
            return self.answer(
                correlation,
                &failed(
                    ErrorCode::InvalidArgument,
                    "partitions must be between 1 and 1024",
                ),
            );
        }
        if self.service.growing.len() >= CREATIONS_IN_FLIGHT_MAX {
            return self.answer(
                correlation,
                &failed(ErrorCode::Busy, "too many topic changes at once"),
            );
        }
        let request = AdminRequest::CreatePartitions {
            name: topic_name,
            existing,
            partitions,
            correlation,
        };
        match self.service.admin.request(request) {
            Ok(()) => self.service.growing.push(topic_name),
            Err(_) => self.answer(correlation, &failed(ErrorCode::Busy, "admin queue full")),
        }
    }

    fn on_admin_reply(&mut self, reply: AdminReply) {
        match reply {
            AdminReply::PartitionsCreated {
                name,
                grown,
                correlation,
            } => {
                self.service.growing.retain(|n| n.as_str() != name.as_str());
                let topic = self
                    .service
                    .topics
                    .by_name_mut(name.as_str())
                    .expect("a growing topic is neither deleted nor taken out");
                let first = topic.grow(grown);
                if let Some(control) = &mut self.control {
                    register_partitions(control, topic, first);
                }
                let (topic_id, partitions) = (topic.id, topic.partitions.len() as u16);
                // Followers of the new partitions fetch on the next tick; a designated
                // leader probes first, as at creation.
                self.answer(
                    correlation,
                    &Event::TopicCreated {
                        topic_id,
                        partitions,
                    },
                );
            }
            AdminReply::CreatePartitionsFailed {
                name,
                reason,
                correlation,
            } => {
                self.service.growing.retain(|n| n.as_str() != name.as_str());
                let message = truncate_message(&reason);
                self.answer(
                    correlation,
                    &Event::Failed {
                        code: ErrorCode::StorageError,
                        message,
                    },
                );
            }
            AdminReply::Created {
                mut topic,
                key,
                origin,
            } => {
                self.service.creating.retain(|n| n.as_str() != topic.name);
                let (topic_id, partitions) = (topic.id, topic.partitions.len() as u16);
                if self.service.topics.by_name(&topic.name).is_none() {
                    if let Some(control) = &mut self.control {
                        register_partitions(control, &mut topic, 0);
                    }
                    self.service.counters.topics_created += 1;
                    self.service.topics.install(topic, key);
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
            AdminReply::Truncated { topic, key, failed } => {
                if failed.is_none() || topic.partitions.len() == topic.replicas.len() {
                    // Back on the data path; its followers fetch again on the next tick.
                    self.service.topics.install(topic, key);
                } else {
                    // The topic stays offline here (logged by the admin thread); a restart
                    // reopens it and redoes the cut from the leader.
                    drop((topic, key));
                }
            }
            AdminReply::CreateFailed {
                name,
                reason,
                origin,
            } => {
                self.service
                    .creating
                    .retain(|n| n.as_str() != name.as_str());
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

    /// Total messages and bytes of each partition, for the exit report.
    pub fn partitions(&self) -> impl Iterator<Item = (&str, u16, &PartitionLog)> {
        self.service.topics.topics().flat_map(|t| {
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

/// The topic a command names, for changing it: refused InvalidTopic for a name no topic
/// can have, UnknownTopicOrPartition for one this lcore does not hold.
fn named_topic<'t>(
    topics: &'t mut TopicTable,
    name: &str,
) -> Result<(TopicName, &'t mut Topic), Event<'static>> {
    let failed = |code, message| Event::Failed { code, message };
    let Some(topic_name) = TopicName::new(name) else {
        return Err(failed(ErrorCode::InvalidTopic, "invalid topic name"));
    };
    match topics.by_name_mut(name) {
        Some(topic) => Ok((topic_name, topic)),
        None => Err(failed(ErrorCode::UnknownTopicOrPartition, "no such topic")),
    }
}

/// Registers the counters of a topic's partitions from `first` on and publishes their
/// values at once: a reader never sees a partition that exists with zero offsets until the
/// next publish tick.
fn register_partitions(control: &mut Control, topic: &mut Topic, first: u16) {
    let partitions = topic.partitions.iter().zip(&topic.replicas);
    let slots = topic.counters.iter_mut().zip(partitions).enumerate();
    for (partition, (slot, (log, replica))) in slots.skip(usize::from(first)) {
        *slot = control.register_partition(&topic.name, partition as u16);
        if let Some(ids) = slot {
            control.publish_partition(ids, &partition_values(log, replica));
        }
    }
}

/// What the control plane reads of one partition.
fn partition_values(log: &PartitionLog, replica: &Replica) -> PartitionValues {
    PartitionValues {
        start_offset: log.log_start_offset(),
        end_offset: log.log_end_offset(),
        durable_offset: log.durable_offset(),
        bytes: log.size_bytes(),
        segments: log.segment_count() as u64,
        high_watermark: replica.high_watermark(log),
        leader: u64::from(replica.leader),
        leader_epoch: u64::from(replica.epoch),
        replicas: replica.replicas.packed(),
        isr: replica.isr.packed(),
        isr_proposed: replica.isr_proposed().packed(),
        isr_shrinks: replica.isr_shrinks,
        isr_expands: replica.isr_expands,
        min_insync: u64::from(replica.min_insync),
        truncated_bytes: replica.truncated_bytes,
    }
}
