//! The data plane's lcore on a real DPDK `net_ring` port, in process: a test client on the
//! other end of the ring pair crafts Ethernet/IPv4/UDP frames like a NIC would deliver them.
//! Real EAL, real mempools, real partition logs on disk with the flusher thread.

use precursor_config::Config;
use precursor_dataplane::control::Control;
use precursor_dataplane::idle::Idle;
use precursor_dataplane::ipc::IpcTransport;
use precursor_dataplane::lcore::{Lcore, LcoreConfig};
use precursor_dataplane::net::{self, Endpoint, Inbound, Peer, UDP_HEADERS_BYTES};
use precursor_dataplane::node::Storage;
use precursor_dataplane::replica::{ClusterView, ReplicationTimings};
use precursor_ffi::dpdk::{ring_port_pair, Eal, Mbuf, MbufBurst, Mempool, Port, PortConfig};
use precursor_protocol::command::{Command as RingCommand, Event};
use precursor_protocol::compression::Compression;
use precursor_protocol::frame::{
    decode_frame, Acks, ErrorCode, FetchDataHeader, FetchRequest, FrameHeader, MetadataRequest,
    MetadataResponse, Opcode, PartitionHandle, ProduceAck, FLAG_METADATA_AUTO_CREATE,
    FRAME_HEADER_BYTES,
};
use precursor_protocol::record_batch::{records, RecordBatchBuilder, RecordBatchHeader};
use precursor_protocol::replication::{
    topic_key, ReplicaDataHeader, ReplicaFetch, NO_DIVERGENCE, NO_EPOCH,
};

/// Bytes of a stored batch that are the producer's as sent (after base offset, length,
/// leader epoch, magic and CRC: the attributes on, which the CRC covers).
const RECORD_BATCH_CRC_COVERS_FROM: usize = 21;
use precursor_shm::ipc::{ClientChannel, IpcLayout, RECORD_KIND_FRAME};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Counts allocations per thread, so a test can prove the lcore's loop makes none.
#[global_allocator]
static ALLOCATOR: precursor_ffi::alloc::CountingAllocator = precursor_ffi::alloc::CountingAllocator;

const MTU_BYTES: u16 = 1500;
const FRAME_BYTES_MAX: usize = MTU_BYTES as usize - 28;
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

fn eal() -> &'static Eal {
    static PREFIX: OnceLock<String> = OnceLock::new();
    let prefix =
        PREFIX.get_or_init(|| format!("--file-prefix=precursor-dp-ring-{}", std::process::id()));
    Eal::shared_for_tests(&[
        "--no-pci",
        "--no-huge",
        "-m",
        "512",
        prefix,
        "--log-level=3",
        "--no-shconf",
        "--no-telemetry",
    ])
}

/// One test at a time owns the EAL's ports (ring pairs are named per test).
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// What the lcore thread reports about its own allocations while `measuring` is set.
#[derive(Default)]
struct AllocationProbe {
    measuring: AtomicBool,
    allocations: AtomicU64,
    busy_iterations: AtomicU64,
}

struct Broker {
    stop: Arc<AtomicBool>,
    probe: Arc<AllocationProbe>,
    thread: Option<std::thread::JoinHandle<String>>,
    mac: [u8; 6],
    /// Where the lcore's IPC channels are (`<dir>/ipc`).
    ipc_dir: std::path::PathBuf,
    /// Where its `cnc` and `counters` are, when started with a control plane's files.
    control_dir: std::path::PathBuf,
    _data: tempfile::TempDir,
}

impl Broker {
    fn stop(mut self) -> String {
        self.stop.store(true, Ordering::Release);
        self.thread.take().unwrap().join().unwrap()
    }
}

struct Client {
    port: Port,
    pool: Mempool,
    me: Endpoint,
    broker: Peer,
    rx: MbufBurst<32>,
    /// Received packets in arrival order.
    arrived: std::collections::VecDeque<Mbuf>,
    next_request: u64,
}

fn configure(port: &mut Port, pool: &Mempool) {
    let config = PortConfig {
        rx_queues: 1,
        tx_queues: 1,
        rx_descriptors: 1024,
        tx_descriptors: 1024,
        mtu_bytes: MTU_BYTES,
        promiscuous: false,
    };
    port.configure(&config, pool).unwrap();
    port.start().unwrap();
}

fn start(name: &str, config_text: &str) -> (Broker, Client) {
    start_in_mode(name, config_text, false)
}

/// [`start`]; with `quorum`, as `metadata = "quorum"` (set after parsing: a cluster of two
/// is no valid quorum to the config's checks, and none is needed here) with the CnC and
/// counters files of a control plane attached, its lease expired.
fn start_in_mode(name: &str, config_text: &str, quorum: bool) -> (Broker, Client) {
    let eal = eal();
    let (mut broker_port, mut client_port) = ring_port_pair(eal, name, 1024).unwrap();
    let broker_pool = Mempool::create(&format!("{name}-b"), 4095, 128, 2048 + 128, -1).unwrap();
    let client_pool = Mempool::create(&format!("{name}-c"), 4095, 128, 2048 + 128, -1).unwrap();
    configure(&mut broker_port, &broker_pool);
    configure(&mut client_port, &client_pool);

    let data = tempfile::tempdir().unwrap();
    let mut config = Config::parse(config_text).unwrap();
    if quorum {
        config.cluster.metadata = precursor_config::MetadataMode::Quorum;
    }
    config.node.data_dir = data.path().join("data");
    let control_dir = data.path().join("control");
    let memory_dir = data.path().join("memory");
    std::fs::create_dir_all(&memory_dir).unwrap();
    let ipc_dir = data.path().join("cnc");
    std::fs::create_dir_all(&ipc_dir).unwrap();
    let ipc = IpcTransport::create(
        &ipc_dir,
        IpcLayout {
            channels: 2,
            ring_capacity: 1 << 20,
        },
        Duration::from_secs(10),
    )
    .unwrap();
    let endpoint = Endpoint {
        mac: broker_port.mac_address(),
        ip: Ipv4Addr::new(10, 77, 0, 2),
        udp_port: 9190,
    };
    let lcore_config = LcoreConfig {
        endpoint,
        queue: 0,
        frame_bytes_max: FRAME_BYTES_MAX,
        drain_interval: Duration::from_micros(100),
        pending_acks_max: 1024,
        auto_create_topics: config.topics.auto_create,
        default_partitions: config.topics.default_partitions,
    };
    let stop = Arc::new(AtomicBool::new(false));
    let probe = Arc::new(AllocationProbe::default());
    let thread = {
        let stop = stop.clone();
        let probe = probe.clone();
        let control_dir = control_dir.clone();
        std::thread::spawn(move || {
            let (mut storage, topics, admin) = Storage::open(&config, &memory_dir).unwrap();
            let mut lcore = Lcore::new(lcore_config, broker_port, broker_pool, topics, admin);
            lcore.attach_ipc(ipc);
            if config.cluster.enabled() {
                let brokers: Vec<_> = config
                    .cluster
                    .brokers
                    .iter()
                    .map(|b| (b.id as u8, b.address, b.udp_port))
                    .collect();
                let timings = ReplicationTimings {
                    replica_lag: Duration::from_millis(config.cluster.replica_lag_ms),
                    fetch_wait: Duration::from_millis(config.cluster.replica_fetch_wait_ms),
                    fetch_retry: Duration::from_millis(config.cluster.replica_fetch_retry_ms),
                };
                let me = config.cluster.broker_id as u8;
                let mut view = ClusterView::new(me, &brokers, timings);
                view.quorum = config.cluster.quorum_enabled();
                lcore.attach_cluster(view);
            }
            if quorum {
                let control = Control::create(
                    &control_dir,
                    "ring",
                    storage.flusher.clone(),
                    precursor_shm::LEASE_EXPIRED_NS,
                )
                .unwrap();
                lcore.attach_control(control);
            }
            // Lcore::run's loop, with the allocation count taken around each iteration.
            let mut idle = Idle::new(precursor_config::IdleStrategy::Yield, 100);
            while !stop.load(Ordering::Acquire) {
                let before = precursor_ffi::alloc::allocations_on_this_thread();
                let work = lcore.do_work();
                if probe.measuring.load(Ordering::Acquire) {
                    let made = precursor_ffi::alloc::allocations_on_this_thread() - before;
                    probe.allocations.fetch_add(made, Ordering::Relaxed);
                    probe
                        .busy_iterations
                        .fetch_add((work > 0) as u64, Ordering::Relaxed);
                }
                idle.idle(work);
            }
            let counters = lcore.counters().to_json();
            drop(lcore);
            storage.close();
            counters
        })
    };
    let client = Client {
        me: Endpoint {
            mac: client_port.mac_address(),
            ip: Ipv4Addr::new(10, 77, 0, 1),
            udp_port: 40000,
        },
        broker: Peer {
            mac: endpoint.mac,
            ip: endpoint.ip,
            udp_port: endpoint.udp_port,
        },
        port: client_port,
        pool: client_pool,
        rx: MbufBurst::new(),
        arrived: std::collections::VecDeque::new(),
        next_request: 1,
    };
    let broker = Broker {
        stop,
        probe,
        thread: Some(thread),
        mac: endpoint.mac,
        ipc_dir,
        control_dir,
        _data: data,
    };
    (broker, client)
}

impl Client {
    /// Sends raw bytes as the UDP payload.
    fn send_raw(&mut self, udp_payload: &[u8]) {
        let mut mbuf = self.pool.alloc().expect("client mbuf");
        let room = mbuf
            .append(UDP_HEADERS_BYTES + udp_payload.len())
            .expect("room");
        room[UDP_HEADERS_BYTES..].copy_from_slice(udp_payload);
        net::write_udp_headers(room, &self.me, &self.broker, udp_payload.len());
        self.send_packet(mbuf);
    }

    fn send_packet(&mut self, mbuf: Mbuf) {
        let mut burst: MbufBurst<1> = MbufBurst::new();
        burst.push(mbuf).unwrap();
        while !burst.is_empty() {
            self.port.tx_burst(0, &mut burst);
        }
    }

    fn request(&mut self, opcode: Opcode, flags: u16, partition: u32, payload: &[u8]) -> u64 {
        let id = self.next_request;
        self.next_request += 1;
        let mut header = FrameHeader::new(opcode, id, partition, payload.len());
        header.flags = flags;
        header.session = 77;
        let mut frame = vec![0u8; FRAME_HEADER_BYTES + payload.len()];
        header.encode(&mut frame);
        frame[FRAME_HEADER_BYTES..].copy_from_slice(payload);
        self.send_raw(&frame);
        id
    }

    /// The next frame from the broker (skipping nothing: every answer is checked).
    fn answer(&mut self) -> (FrameHeader, Vec<u8>) {
        let deadline = Instant::now() + ANSWER_TIMEOUT;
        loop {
            if let Some(mbuf) = self.next_packet() {
                let me = self.me;
                match net::classify(mbuf.data(), &me) {
                    Inbound::Datagram { peer, payload } => {
                        assert_eq!(peer.ip, self.broker.ip);
                        let (header, body) = decode_frame(payload).expect("broker frames decode");
                        assert_eq!(header.session, 77, "session echoed");
                        return (header, body.to_vec());
                    }
                    other => panic!("unexpected packet from the broker: {other:?}"),
                }
            }
            assert!(Instant::now() < deadline, "no answer from the data plane");
            std::thread::yield_now();
        }
    }

    /// The next received packet, in arrival order, if any has arrived.
    fn next_packet(&mut self) -> Option<Mbuf> {
        if self.arrived.is_empty() && self.port.rx_burst(0, &mut self.rx) > 0 {
            self.arrived.extend(self.rx.drain());
        }
        self.arrived.pop_front()
    }

    fn call(
        &mut self,
        opcode: Opcode,
        flags: u16,
        partition: u32,
        payload: &[u8],
    ) -> (FrameHeader, Vec<u8>) {
        let id = self.request(opcode, flags, partition, payload);
        let (header, body) = self.answer();
        assert_eq!(header.request_id, id, "answers come in order on one ring");
        (header, body)
    }

    fn metadata(&mut self, topic: &str) -> MetadataResponse {
        let request = MetadataRequest { topic };
        let mut payload = vec![0u8; request.encoded_len()];
        request.encode(&mut payload);
        let deadline = Instant::now() + ANSWER_TIMEOUT;
        loop {
            let (header, body) =
                self.call(Opcode::Metadata, FLAG_METADATA_AUTO_CREATE, 0, &payload);
            match header.opcode {
                Opcode::MetadataResponse => return MetadataResponse::decode(&body).unwrap(),
                Opcode::Error => assert_eq!(header.error_code(), Some(ErrorCode::TopicNotReady)),
                other => panic!("metadata answered with {other:?}"),
            }
            assert!(Instant::now() < deadline, "topic never became ready");
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

/// One counter from the lcore's exit report.
fn counter(counters: &str, name: &str) -> u64 {
    let json: serde_json::Value = serde_json::from_str(counters).expect("counters are JSON");
    json[name]
        .as_u64()
        .unwrap_or_else(|| panic!("no counter {name} in {counters}"))
}

fn batch(producer_id: i64, base_sequence: i32, values: &[&[u8]]) -> Vec<u8> {
    let mut builder = RecordBatchBuilder::new(
        Compression::None,
        producer_id,
        0,
        base_sequence,
        1_700_000_000_000,
    );
    for (i, value) in values.iter().enumerate() {
        builder.append(1_700_000_000_000 + i as i64, Some(b"k"), value, &[]);
    }
    builder.finish()
}

fn produce(
    client: &mut Client,
    handle: PartitionHandle,
    acks: Acks,
    batch: &[u8],
) -> Result<ProduceAck, (ErrorCode, String)> {
    let (header, body) = client.call(Opcode::Produce, acks.to_flags(), handle.0, batch);
    match header.opcode {
        Opcode::ProduceAck => Ok(ProduceAck::decode(&body).unwrap()),
        Opcode::Error => Err((
            header.error_code().unwrap(),
            String::from_utf8_lossy(&body).into_owned(),
        )),
        other => panic!("produce answered with {other:?}"),
    }
}

fn fetch(
    client: &mut Client,
    handle: PartitionHandle,
    offset: u64,
) -> (FrameHeader, FetchDataHeader, Vec<u8>) {
    let mut payload = [0u8; FetchRequest::BYTES];
    FetchRequest {
        offset,
        max_bytes: 1 << 20,
    }
    .encode(&mut payload);
    let (header, body) = client.call(Opcode::Fetch, 0, handle.0, &payload);
    assert_eq!(
        header.opcode,
        Opcode::FetchData,
        "{:?}",
        String::from_utf8_lossy(&body)
    );
    let (data, batches) = FetchDataHeader::decode(&body).unwrap();
    (header, data, batches.to_vec())
}

#[test]
fn produce_and_fetch_through_a_ring_port_with_every_ack_level() {
    let _serial = serial();
    let (broker, mut client) = start("ring-acks", "[topics]\ndefault_partitions = 2\n");
    let meta = client.metadata("orders");
    assert_eq!(meta.partition_count, 2);
    assert_eq!(meta.frame_bytes_max as usize, FRAME_BYTES_MAX);
    let handle = PartitionHandle::new(meta.topic_id, 1);

    let ack = produce(
        &mut client,
        handle,
        Acks::Leader,
        &batch(1, 0, &[b"a", b"b", b"c"]),
    )
    .unwrap();
    assert_eq!((ack.base_offset, ack.last_offset), (0, 2));
    let ack = produce(&mut client, handle, Acks::Durable, &batch(1, 3, &[b"d"])).unwrap();
    assert_eq!((ack.base_offset, ack.last_offset), (3, 3));
    // acks=none gets no answer: the next request's answer is the next frame.
    client.request(
        Opcode::Produce,
        Acks::None.to_flags(),
        handle.0,
        &batch(1, 4, &[b"e"]),
    );

    let (_, data, batches) = fetch(&mut client, handle, 0);
    assert_eq!(data.high_watermark, 5);
    assert!(
        data.durable_offset >= 4,
        "the durable ack implies offset 3 is on disk"
    );
    let values: Vec<Vec<u8>> = precursor_protocol::record_batch::batches(&batches)
        .flat_map(|b| records(b.unwrap().1).unwrap())
        .map(|r| r.value.unwrap())
        .collect();
    assert_eq!(
        values,
        vec![
            b"a".to_vec(),
            b"b".to_vec(),
            b"c".to_vec(),
            b"d".to_vec(),
            b"e".to_vec()
        ]
    );

    // max_bytes is a soft limit: the first batch is served even when larger.
    let mut tiny = [0u8; FetchRequest::BYTES];
    FetchRequest {
        offset: 0,
        max_bytes: 1,
    }
    .encode(&mut tiny);
    let (header, body) = client.call(Opcode::Fetch, 0, handle.0, &tiny);
    let (_, first) = FetchDataHeader::decode(&body).unwrap();
    assert_eq!(header.error_code(), Some(ErrorCode::None));
    assert_eq!(precursor_protocol::record_batch::batches(first).count(), 1);

    // A fetch at the end is an empty FetchData; beyond it, the bounds come back.
    let (header, data, batches) = fetch(&mut client, handle, 5);
    assert_eq!(
        (header.error_code(), batches.len()),
        (Some(ErrorCode::None), 0)
    );
    assert_eq!(data.high_watermark, 5);
    let (header, data, _) = fetch(&mut client, handle, 99);
    assert_eq!(header.error_code(), Some(ErrorCode::OffsetOutOfRange));
    assert_eq!((data.log_start_offset, data.high_watermark), (0, 5));

    // Partition 0 is separate.
    let (_, data, _) = fetch(&mut client, PartitionHandle::new(meta.topic_id, 0), 0);
    assert_eq!(data.high_watermark, 0);

    let counters = broker.stop();
    assert_eq!(counter(&counters, "produce_batches"), 3);
    assert_eq!(counter(&counters, "durable_acks"), 1);
    assert_eq!(counter(&counters, "error_offset_out_of_range"), 1);
}

#[test]
fn retransmitted_batches_are_acked_once_with_their_first_offsets() {
    let _serial = serial();
    let (broker, mut client) = start("ring-idem", "");
    let meta = client.metadata("idem");
    let handle = PartitionHandle::new(meta.topic_id, 0);
    let first = batch(42, 0, &[b"x", b"y"]);
    let ack = produce(&mut client, handle, Acks::Leader, &first).unwrap();
    let again = produce(&mut client, handle, Acks::Durable, &first).unwrap();
    assert_eq!(
        ack, again,
        "a retransmit is acked with the original offsets"
    );
    let gap = produce(&mut client, handle, Acks::Leader, &batch(42, 5, &[b"z"]));
    assert_eq!(gap.unwrap_err().0, ErrorCode::OutOfOrderSequence);
    let next = produce(&mut client, handle, Acks::Leader, &batch(42, 2, &[b"z"])).unwrap();
    assert_eq!(next.base_offset, 2);
    let counters = broker.stop();
    assert!(counters.contains("\"produce_duplicates\":1"), "{counters}");
    assert!(
        counters.contains("\"error_out_of_order_sequence\":1"),
        "{counters}"
    );
}

#[test]
fn bad_input_is_counted_answered_and_never_stops_the_lcore() {
    let _serial = serial();
    let (broker, mut client) = start("ring-bad", "[topics]\nauto_create = true\n");
    let meta = client.metadata("bad");
    let handle = PartitionHandle::new(meta.topic_id, 0);
    let good = batch(-1, -1, &[b"ok"]);

    // Wrong CRC: one flipped byte in the records.
    let mut corrupt = good.clone();
    *corrupt.last_mut().unwrap() ^= 0x55;
    let (code, reason) = produce(&mut client, handle, Acks::Leader, &corrupt).unwrap_err();
    assert_eq!(code, ErrorCode::CorruptMessage, "{reason}");
    // A truncated batch (the frame's length agrees, the batch's does not).
    let (code, _) =
        produce(&mut client, handle, Acks::Leader, &good[..good.len() - 3]).unwrap_err();
    assert_eq!(code, ErrorCode::CorruptMessage);
    // A batch that fits a Produce frame but could never be served back in a FetchData.
    let too_large = batch(-1, -1, &[&[7u8; 1360]]);
    assert!(too_large.len() + FRAME_HEADER_BYTES <= FRAME_BYTES_MAX);
    assert!(too_large.len() > precursor_protocol::frame::batch_bytes_max(FRAME_BYTES_MAX));
    let (code, _) = produce(&mut client, handle, Acks::Leader, &too_large).unwrap_err();
    assert_eq!(code, ErrorCode::MessageTooLarge);
    // Unknown topic id and unknown partition.
    let (code, _) = produce(
        &mut client,
        PartitionHandle::new(999, 0),
        Acks::Leader,
        &good,
    )
    .unwrap_err();
    assert_eq!(code, ErrorCode::UnknownTopicOrPartition);
    let (code, _) = produce(
        &mut client,
        PartitionHandle::new(meta.topic_id, 7),
        Acks::Leader,
        &good,
    )
    .unwrap_err();
    assert_eq!(code, ErrorCode::UnknownTopicOrPartition);
    // All-durable beside acks bits other than `all` is not a level.
    let flags = precursor_protocol::frame::FLAG_PRODUCE_ALL_DURABLE | 1;
    let (header, _) = client.call(Opcode::Produce, flags, handle.0, &good);
    assert_eq!(header.error_code(), Some(ErrorCode::InvalidFrame));
    // A frame whose length field lies is answered (its header is readable).
    let mut frame = vec![0u8; FRAME_HEADER_BYTES + 4];
    let mut lying = FrameHeader::new(Opcode::Ping, 555, 0, 40);
    lying.session = 77;
    lying.encode(&mut frame);
    client.send_raw(&frame);
    let (header, _) = client.answer();
    assert_eq!(
        (header.request_id, header.error_code()),
        (555, Some(ErrorCode::InvalidFrame))
    );
    // A response opcode sent as a request.
    let (header, _) = client.call(Opcode::ProduceAck, 0, handle.0, &[0u8; 16]);
    assert_eq!(header.error_code(), Some(ErrorCode::InvalidFrame));
    // Invalid and unknown topic names.
    let bad_name = [3u8, 0, b'a', b'/', b'b'];
    let (header, _) = client.call(Opcode::Metadata, 0, 0, &bad_name);
    assert_eq!(header.error_code(), Some(ErrorCode::InvalidTopic));
    let unknown = [2u8, 0, b'n', b'o'];
    let (header, _) = client.call(Opcode::Metadata, 0, 0, &unknown);
    assert_eq!(
        header.error_code(),
        Some(ErrorCode::UnknownTopicOrPartition)
    );
    // Garbage: bad magic, wrong version, truncated headers, random bytes — counted, silent.
    let mut bad_magic = vec![0u8; FRAME_HEADER_BYTES];
    let mut ping = FrameHeader::new(Opcode::Ping, 1, 0, 0);
    ping.session = 77;
    ping.encode(&mut bad_magic);
    bad_magic[0] = b'X';
    client.send_raw(&bad_magic);
    // Another version of the protocol is told so (its request id is where ours is).
    let mut bad_version = bad_magic.clone();
    bad_version[0] = b'P';
    bad_version[2] = 9;
    client.send_raw(&bad_version);
    let (header, _) = client.answer();
    assert_eq!(
        (header.request_id, header.error_code()),
        (1, Some(ErrorCode::UnsupportedVersion))
    );
    client.send_raw(&[0x50, 0x52, 1]);
    let mut state = 0x1234_5678_u64;
    for _ in 0..1000 {
        let len = (state % 1400) as usize;
        let garbage: Vec<u8> = (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        client.send_raw(&garbage);
    }
    // A non-IP frame and an IPv4 packet to another port: dropped.
    let mut mbuf = client.pool.alloc().unwrap();
    mbuf.append(60).unwrap().fill(0xab);
    client.send_packet(mbuf);

    // After all that, valid clients are still served.
    let ack = produce(&mut client, handle, Acks::Durable, &good).unwrap();
    assert_eq!(ack.base_offset, 0, "nothing bad was appended");
    let (_, data, _) = fetch(&mut client, handle, 0);
    assert_eq!(data.high_watermark, 1);

    let counters = broker.stop();
    for (name, at_least) in [
        ("error_corrupt_message", 2),
        ("error_message_too_large", 1),
        ("error_unknown_topic_or_partition", 3),
        ("error_invalid_frame", 3),
        ("error_invalid_topic", 1),
        ("bad_frame_length_mismatch", 1),
        ("bad_frame_bad_magic", 1),
        ("error_unsupported_version", 1),
        ("bad_frame_unsupported_version", 1),
        ("bad_frame_truncated", 1),
        ("dropped_other_ethertype", 1),
    ] {
        assert!(
            counter(&counters, name) >= at_least,
            "{name} >= {at_least} in {counters}"
        );
    }
    // Every garbage datagram was counted as some bad frame: none was served.
    let bad = counter(&counters, "bad_frames_total");
    assert!(bad >= 1000, "{counters}");
    assert_eq!(
        counter(&counters, "produce_batches"),
        1,
        "only the good batch was appended"
    );
}

#[test]
fn arp_and_ping_are_answered_for_our_address_only() {
    let _serial = serial();
    let (broker, mut client) = start("ring-arp", "");
    use smoltcp::wire::{
        ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol,
        EthernetRepr,
    };
    let arp = |target: Ipv4Addr, client: &mut Client| {
        let mut mbuf = client.pool.alloc().unwrap();
        let out = mbuf.append(42).unwrap();
        EthernetRepr {
            src_addr: EthernetAddress(client.me.mac),
            dst_addr: EthernetAddress::BROADCAST,
            ethertype: EthernetProtocol::Arp,
        }
        .emit(&mut EthernetFrame::new_unchecked(&mut out[..]));
        ArpRepr::EthernetIpv4 {
            operation: ArpOperation::Request,
            source_hardware_addr: EthernetAddress(client.me.mac),
            source_protocol_addr: client.me.ip,
            target_hardware_addr: EthernetAddress([0; 6]),
            target_protocol_addr: target,
        }
        .emit(&mut ArpPacket::new_unchecked(&mut out[14..]));
        client.send_packet(mbuf);
    };
    arp(Ipv4Addr::new(10, 77, 0, 99), &mut client);
    arp(Ipv4Addr::new(10, 77, 0, 2), &mut client);
    let deadline = Instant::now() + ANSWER_TIMEOUT;
    let reply = loop {
        if let Some(mbuf) = client.next_packet() {
            break mbuf;
        }
        assert!(Instant::now() < deadline, "no ARP reply");
    };
    let frame = EthernetFrame::new_checked(reply.data()).unwrap();
    assert_eq!(frame.ethertype(), EthernetProtocol::Arp);
    match ArpRepr::parse(&ArpPacket::new_checked(frame.payload()).unwrap()).unwrap() {
        ArpRepr::EthernetIpv4 {
            operation,
            source_hardware_addr,
            ..
        } => {
            assert_eq!(operation, ArpOperation::Reply);
            assert_eq!(source_hardware_addr.0, broker.mac);
        }
        other => panic!("{other:?}"),
    }
    drop(reply);
    let (header, body) = client.call(Opcode::Ping, 0, 0, b"are you there");
    assert_eq!(
        (header.opcode, body.as_slice()),
        (Opcode::Pong, &b"are you there"[..])
    );
    let counters = broker.stop();
    assert!(
        counters.contains("\"arp_replies\":1"),
        "only the ARP for our address: {counters}"
    );
    assert!(counters.contains("\"dropped_not_for_us\":1"), "{counters}");
}

#[test]
fn the_lcore_serves_every_kind_of_request_without_allocating() {
    let _serial = serial();
    let (broker, mut client) = start("ring-alloc", "");
    let meta = client.metadata("quiet");
    let handle = PartitionHandle::new(meta.topic_id, 0);
    // Warm-up outside the measurement: the topic is installed, the first appends are done.
    produce(&mut client, handle, Acks::Durable, &batch(9, 0, &[b"warm"])).unwrap();
    fetch(&mut client, handle, 0);

    broker.probe.measuring.store(true, Ordering::Release);
    let mut corrupt = batch(-1, -1, &[b"bad"]);
    *corrupt.last_mut().unwrap() ^= 1;
    for i in 0..400u64 {
        let acks = if i % 10 == 0 {
            Acks::Durable
        } else {
            Acks::Leader
        };
        let ack = produce(
            &mut client,
            handle,
            acks,
            &batch(9, 1 + 2 * i as i32, &[b"v1", b"v2"]),
        )
        .unwrap();
        assert_eq!(ack.base_offset, 1 + 2 * i);
        fetch(&mut client, handle, i);
        if i % 50 == 0 {
            client.call(Opcode::Ping, 0, 0, b"ping");
            client.metadata("quiet");
            assert!(produce(&mut client, handle, Acks::Leader, &corrupt).is_err());
            assert!(produce(
                &mut client,
                PartitionHandle::new(meta.topic_id, 9),
                Acks::Leader,
                &corrupt
            )
            .is_err());
            let (header, _, _) = fetch(&mut client, handle, 1 << 40);
            assert_eq!(header.error_code(), Some(ErrorCode::OffsetOutOfRange));
        }
    }
    broker.probe.measuring.store(false, Ordering::Release);

    let busy = broker.probe.busy_iterations.load(Ordering::Relaxed);
    let allocations = broker.probe.allocations.load(Ordering::Relaxed);
    assert!(
        busy >= 800,
        "the measurement saw the requests being served ({busy} busy iterations)"
    );
    assert_eq!(
        allocations, 0,
        "the lcore allocated on its loop while serving"
    );
    broker.stop();
}

#[test]
fn a_durable_retransmit_of_a_forgotten_batch_is_answered_only_once_the_log_is_durable() {
    let _serial = serial();
    // Nothing is persisted unless a durable produce asks for it.
    let (broker, mut client) = start(
        "ring-dupdur",
        "[storage]\nflush_interval_ms = 3600000\nflush_messages = 100000000\n",
    );
    let meta = client.metadata("forgotten");
    let handle = PartitionHandle::new(meta.topic_id, 0);
    for sequence in 0..7 {
        produce(
            &mut client,
            handle,
            Acks::Leader,
            &batch(77, sequence, &[b"x"]),
        )
        .unwrap();
    }
    let (_, before, _) = fetch(&mut client, handle, 0);
    assert_eq!(
        (before.high_watermark, before.durable_offset),
        (7, 0),
        "appended, not yet durable"
    );

    // Batch 0 is older than the 5 batches remembered per producer: its offsets are unknown.
    // The client counts DuplicateSequence as delivered, so with acks=durable the answer
    // must wait until everything appended (where the original lies) is on disk.
    let (code, _) =
        produce(&mut client, handle, Acks::Durable, &batch(77, 0, &[b"x"])).unwrap_err();
    assert_eq!(code, ErrorCode::DuplicateSequence);
    let (_, after, _) = fetch(&mut client, handle, 0);
    assert_eq!(
        after.high_watermark, 7,
        "the retransmit was not appended again"
    );
    assert!(
        after.durable_offset >= 7,
        "answered before the original was durable: {after:?}"
    );
    broker.stop();
}

/// One request over an IPC channel and its answer (the next response: answers come in
/// order on one channel).
fn ipc_call(
    channel: &mut ClientChannel,
    request_id: u64,
    opcode: Opcode,
    flags: u16,
    partition: u32,
    payload: &[u8],
) -> (FrameHeader, Vec<u8>) {
    let mut header = FrameHeader::new(opcode, request_id, partition, payload.len());
    header.flags = flags;
    let mut frame = vec![0u8; FRAME_HEADER_BYTES + payload.len()];
    header.encode(&mut frame);
    frame[FRAME_HEADER_BYTES..].copy_from_slice(payload);
    assert!(channel.requests.try_write(RECORD_KIND_FRAME, &frame));
    let deadline = Instant::now() + ANSWER_TIMEOUT;
    let mut answer = None;
    while answer.is_none() {
        channel
            .responses
            .read(1, |kind, frame| {
                assert_eq!(kind, RECORD_KIND_FRAME);
                let (header, body) = decode_frame(frame).expect("broker frames decode");
                answer = Some((header, body.to_vec()));
                true
            })
            .unwrap();
        assert!(Instant::now() < deadline, "no answer on the IPC channel");
        std::hint::spin_loop();
    }
    let (header, body) = answer.unwrap();
    assert_eq!(header.request_id, request_id, "answers in order");
    (header, body)
}

#[test]
fn the_lcore_serves_an_ipc_channel_without_allocating_and_one_log_for_both_transports() {
    let _serial = serial();
    let (broker, mut client) = start("ring-ipc", "");
    let meta = client.metadata("shared");
    let handle = PartitionHandle::new(meta.topic_id, 0);
    let mut channel = ClientChannel::claim(&broker.ipc_dir, ANSWER_TIMEOUT).unwrap();
    let mut id = 0u64;
    let mut call = |channel: &mut ClientChannel, opcode, flags, payload: &[u8]| {
        id += 1;
        ipc_call(channel, id, opcode, flags, handle.0, payload)
    };
    // Warm-up outside the measurement.
    let (header, _) = call(
        &mut channel,
        Opcode::Produce,
        Acks::Durable.to_flags(),
        &batch(5, 0, &[b"warm"]),
    );
    assert_eq!(header.opcode, Opcode::ProduceAck);

    broker.probe.measuring.store(true, Ordering::Release);
    let mut fetch_request = [0u8; FetchRequest::BYTES];
    let mut corrupt = batch(-1, -1, &[b"bad"]);
    *corrupt.last_mut().unwrap() ^= 1;
    for i in 0..400u64 {
        let acks = if i % 10 == 0 {
            Acks::Durable
        } else {
            Acks::Leader
        };
        let (header, body) = call(
            &mut channel,
            Opcode::Produce,
            acks.to_flags(),
            &batch(5, 1 + 2 * i as i32, &[b"v1", b"v2"]),
        );
        assert_eq!(
            header.opcode,
            Opcode::ProduceAck,
            "{:?}",
            String::from_utf8_lossy(&body)
        );
        assert_eq!(ProduceAck::decode(&body).unwrap().base_offset, 1 + 2 * i);
        FetchRequest {
            offset: i,
            max_bytes: 1 << 20,
        }
        .encode(&mut fetch_request);
        let (header, body) = call(&mut channel, Opcode::Fetch, 0, &fetch_request);
        assert_eq!(header.opcode, Opcode::FetchData);
        let (data, batches) = FetchDataHeader::decode(&body).unwrap();
        assert_eq!(data.high_watermark, 3 + 2 * i);
        assert!(!batches.is_empty());
        if i % 50 == 0 {
            let (header, body) = call(&mut channel, Opcode::Ping, 0, b"ipc ping");
            assert_eq!(
                (header.opcode, body.as_slice()),
                (Opcode::Pong, &b"ipc ping"[..])
            );
            let (header, _) = call(
                &mut channel,
                Opcode::Produce,
                Acks::Leader.to_flags(),
                &corrupt,
            );
            assert_eq!(header.error_code(), Some(ErrorCode::CorruptMessage));
        }
    }
    broker.probe.measuring.store(false, Ordering::Release);
    let busy = broker.probe.busy_iterations.load(Ordering::Relaxed);
    let allocations = broker.probe.allocations.load(Ordering::Relaxed);
    assert!(
        busy >= 800,
        "the measurement saw the requests ({busy} busy iterations)"
    );
    assert_eq!(allocations, 0, "the lcore allocated while serving IPC");

    // A record that is not a frame is answered as UDP garbage would be: counted, and
    // answered only when a header is readable. The channel keeps working.
    assert!(channel
        .requests
        .try_write(RECORD_KIND_FRAME, b"not a frame at all"));
    let (header, _) = call(&mut channel, Opcode::Ping, 0, b"still here");
    assert_eq!(header.opcode, Opcode::Pong);

    // One log: what came by IPC is fetched over UDP.
    let (_, data, batches) = fetch(&mut client, handle, 0);
    assert_eq!(data.high_watermark, 801);
    // The first batch: its length is bytes 8..12 (big endian), after the 8-byte base offset.
    let first_len = 12 + u32::from_be_bytes(batches[8..12].try_into().unwrap()) as usize;
    let first = records(&batches[..first_len]).unwrap();
    assert_eq!(first[0].value.as_deref(), Some(&b"warm"[..]));

    drop(channel);
    std::thread::sleep(Duration::from_millis(20));
    let counters = broker.stop();
    assert_eq!(counter(&counters, "ipc_channels_opened"), 1);
    assert_eq!(counter(&counters, "ipc_channels_closed_closed"), 1);
    assert!(counter(&counters, "bad_frames_total") >= 1);
}

// ---- replication: the test client plays broker 2, a follower, on the wire ----

/// Broker 1 (the lcore, 10.77.0.2:9190) leads topic `r` with broker 2 (the test client,
/// 10.77.0.1:40000) as its follower.
const CLUSTER_OF_TWO: &str = r#"
[cluster]
broker_id = 1
replica_lag_ms = 200
replica_fetch_wait_ms = 60000
[[cluster.brokers]]
id = 1
address = "10.77.0.2"
[[cluster.brokers]]
id = 2
address = "10.77.0.1"
udp_port = 40000
[[topics.create]]
name = "r"
partitions = 1
replication_factor = 2
min_insync_replicas = 2
replicas = [[1, 2]]
"#;

impl Client {
    /// The next native frame from the broker, answering ARP requests for our address on
    /// the way (the leader asks for its follower's MAC).
    fn frame_skipping_arp(&mut self) -> (FrameHeader, Vec<u8>) {
        let deadline = Instant::now() + ANSWER_TIMEOUT;
        loop {
            if let Some(mut mbuf) = self.next_packet() {
                let me = self.me;
                match net::classify(mbuf.data(), &me) {
                    Inbound::Datagram { payload, .. } => {
                        let (header, body) = decode_frame(payload).expect("broker frames decode");
                        return (header, body.to_vec());
                    }
                    Inbound::ArpRequest { peer_mac, peer_ip } => {
                        mbuf.reset();
                        let out = mbuf.append(net::ETHERNET_FRAME_BYTES_MIN).unwrap();
                        net::write_arp_reply(out, &me, peer_mac, peer_ip);
                        self.send_packet(mbuf);
                    }
                    other => panic!("unexpected packet from the broker: {other:?}"),
                }
            }
            assert!(Instant::now() < deadline, "no frame from the data plane");
            std::thread::yield_now();
        }
    }

    /// Sends a ReplicaFetch as broker `follower` and returns its request id.
    fn replica_fetch(&mut self, fetch: &ReplicaFetch) -> u64 {
        let mut payload = [0u8; ReplicaFetch::BYTES];
        fetch.encode(&mut payload);
        self.request(Opcode::ReplicaFetch, 0, 0xabcd, &payload)
    }
}

fn follower_fetch(offset: u64, epoch: u32, last_epoch: u32) -> ReplicaFetch {
    ReplicaFetch {
        topic_key: topic_key("r"),
        partition: 0,
        follower_id: 2,
        leader_epoch: epoch,
        fetch_offset: offset,
        durable_offset: 0,
        last_fetched_epoch: last_epoch,
        max_bytes: 1 << 20,
        fragment_bytes: 0,
    }
}

#[test]
fn a_leader_replicates_to_its_follower_acks_all_after_it_and_refuses_forgeries() {
    let _serial = serial();
    let (broker, mut client) = start("repl", CLUSTER_OF_TWO);
    // Start-up: the designated leader asks its follower who leads.
    let (probe, body) = client.frame_skipping_arp();
    assert_eq!(probe.opcode, Opcode::ReplicaFetch);
    let asked = ReplicaFetch::decode(&body).unwrap();
    assert_eq!((asked.follower_id, asked.topic_key), (1, topic_key("r")));
    let mut view = [0u8; ReplicaDataHeader::BYTES];
    ReplicaDataHeader {
        topic_key: asked.topic_key,
        leader_id: 1,
        diverging_end_offset: NO_DIVERGENCE,
        ..ReplicaDataHeader::default()
    }
    .encode(&mut view);
    let mut answer = FrameHeader::new(
        Opcode::ReplicaData,
        probe.request_id,
        probe.partition,
        view.len(),
    );
    answer.error = ErrorCode::NotLeaderOrFollower as u16;
    let mut frame = vec![0u8; FRAME_HEADER_BYTES + view.len()];
    answer.encode(&mut frame);
    frame[FRAME_HEADER_BYTES..].copy_from_slice(&view);
    client.send_raw(&frame);

    let meta = client.metadata("r");
    let handle = PartitionHandle::new(meta.topic_id, 0);
    let first = batch(-1, -1, &[b"one", b"two"]);
    // Leading now (or about to): an ISR of one is below min_insync_replicas 2.
    let deadline = Instant::now() + ANSWER_TIMEOUT;
    loop {
        match produce(&mut client, handle, Acks::All, &first) {
            Err((ErrorCode::NotEnoughReplicas, _)) => break,
            Err((ErrorCode::NotLeaderOrFollower, _)) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5))
            }
            other => panic!("acks=all with an ISR of one: {other:?}"),
        }
    }
    assert_eq!(
        produce(&mut client, handle, Acks::Leader, &first)
            .unwrap()
            .base_offset,
        0
    );

    // The follower catches up: the batch arrives as stored, the leader's epoch stamped.
    client.replica_fetch(&follower_fetch(0, 1, NO_EPOCH));
    let (header, body) = client.frame_skipping_arp();
    assert_eq!(
        (header.opcode, header.error, header.partition),
        (Opcode::ReplicaData, 0, 0xabcd)
    );
    let (data, batches) = ReplicaDataHeader::decode(&body).unwrap();
    assert_eq!(
        (data.leader_id, data.leader_epoch, data.log_end_offset),
        (1, 1, 2)
    );
    let stored = RecordBatchHeader::parse(batches).unwrap();
    assert_eq!((stored.base_offset, stored.partition_leader_epoch), (0, 1));
    assert_eq!(
        &batches[RECORD_BATCH_CRC_COVERS_FROM..],
        &first[RECORD_BATCH_CRC_COVERS_FROM..]
    );

    // At the log end: parked, and the follower is in sync again.
    client.replica_fetch(&follower_fetch(2, 1, 1));
    std::thread::sleep(Duration::from_millis(20));
    let second = batch(-1, -1, &[b"three"]);
    let id = client.request(Opcode::Produce, Acks::All.to_flags(), handle.0, &second);
    // The parked fetch is answered with the new batch; the ack waits for the next fetch.
    let (header, body) = client.frame_skipping_arp();
    assert_eq!(
        header.opcode,
        Opcode::ReplicaData,
        "no ack before the follower has it"
    );
    let (data, batches) = ReplicaDataHeader::decode(&body).unwrap();
    assert_eq!((data.high_watermark, data.log_end_offset), (2, 3));
    assert_eq!(RecordBatchHeader::parse(batches).unwrap().base_offset, 2);
    client.replica_fetch(&follower_fetch(3, 1, 1));
    // The HW moving to 3 also wakes our parked fetch (it learns the HW): skip that.
    let next_frame = |client: &mut Client, opcode: Opcode| loop {
        let (header, body) = client.frame_skipping_arp();
        if header.opcode == opcode {
            return (header, body);
        }
        assert_eq!(
            header.opcode,
            Opcode::ReplicaData,
            "only HW news in between"
        );
        let (news, batches) = ReplicaDataHeader::decode(&body).unwrap();
        assert!(batches.is_empty() && news.high_watermark == 3, "{news:?}");
    };
    let (ack, body) = next_frame(&mut client, Opcode::ProduceAck);
    assert_eq!(ack.request_id, id);
    assert_eq!(ProduceAck::decode(&body).unwrap().base_offset, 2);
    // Consumers read below the high watermark, which is now 3.
    let mut request = [0u8; FetchRequest::BYTES];
    FetchRequest {
        offset: 0,
        max_bytes: 1 << 20,
    }
    .encode(&mut request);
    client.request(Opcode::Fetch, 0, handle.0, &request);
    let (_, body) = next_frame(&mut client, Opcode::FetchData);
    let (data, batches) = FetchDataHeader::decode(&body).unwrap();
    assert_eq!(data.high_watermark, 3);
    let served: i32 = precursor_protocol::record_batch::batches(batches)
        .map(|item| item.unwrap().0.records_count)
        .sum();
    assert_eq!(served, 3);

    // Forged, stale and broken replication traffic: refused, counted, never served.
    let refusals: [(ReplicaFetch, ErrorCode); 5] = [
        // Another broker's id (or no broker's) from our address: not that broker.
        (
            ReplicaFetch {
                follower_id: 3,
                ..follower_fetch(3, 1, 1)
            },
            ErrorCode::InvalidFrame,
        ),
        (
            ReplicaFetch {
                follower_id: 1,
                ..follower_fetch(3, 1, 1)
            },
            ErrorCode::InvalidFrame,
        ),
        (follower_fetch(3, 0, 1), ErrorCode::FencedLeaderEpoch),
        (follower_fetch(3, 9, 1), ErrorCode::UnknownLeaderEpoch),
        (follower_fetch(99, 1, NO_EPOCH), ErrorCode::OffsetOutOfRange),
    ];
    for (forged, code) in refusals {
        client.replica_fetch(&forged);
        // Our own parked fetch may be answered meanwhile (the HW moved): skip it.
        let (header, body) = loop {
            let (header, body) = client.frame_skipping_arp();
            if header.error != 0 {
                break (header, body);
            }
        };
        assert_eq!(header.error_code(), Some(code), "{forged:?}");
        let (view, batches) = ReplicaDataHeader::decode(&body).unwrap();
        assert!(batches.is_empty(), "a refusal carries no data");
        assert_eq!(
            (view.leader_id, view.leader_epoch),
            (1, 1),
            "our view, for the follower"
        );
    }
    let unknown = ReplicaFetch {
        topic_key: topic_key("nope"),
        ..follower_fetch(3, 1, 1)
    };
    client.replica_fetch(&unknown);
    let (header, _) = loop {
        let answer = client.frame_skipping_arp();
        if answer.0.error != 0 {
            break answer;
        }
    };
    assert_eq!(
        header.error_code(),
        Some(ErrorCode::UnknownTopicOrPartition)
    );
    // A truncated fetch is an invalid frame; unsolicited ReplicaData is dropped silently.
    client.request(Opcode::ReplicaFetch, 0, 0, &[0u8; 20]);
    let (header, _) = loop {
        let answer = client.frame_skipping_arp();
        if answer.0.opcode == Opcode::Error {
            break answer;
        }
    };
    assert_eq!(header.error_code(), Some(ErrorCode::InvalidFrame));
    client.request(Opcode::ReplicaData, 0, handle.0, &view);
    // The lcore keeps serving.
    let (pong, _) = loop {
        let id = client.request(Opcode::Ping, 0, 0, b"still here");
        let answer = client.frame_skipping_arp();
        if answer.0.opcode == Opcode::Pong && answer.0.request_id == id {
            break answer;
        }
    };
    assert_eq!(pong.opcode, Opcode::Pong);
    let counters = broker.stop();
    assert_eq!(
        counter(&counters, "replication_refused_unknown_broker"),
        2,
        "{counters}"
    );
    assert_eq!(counter(&counters, "replication_refused_stale_epoch"), 1);
    assert_eq!(counter(&counters, "replication_refused_future_epoch"), 1);
    assert_eq!(counter(&counters, "replication_refused_bad_offset"), 1);
    assert_eq!(
        counter(&counters, "replication_refused_unknown_partition"),
        1
    );
    assert!(counter(&counters, "replication_refused_unexpected") >= 1);
    assert!(counter(&counters, "replica_fetches") >= 10);
}

// ---- quorum mode: the lease and the quorum-controlled ISR ----

/// The test's control plane: the CnC's command ring, the counters page.
struct TestControlPlane {
    cnc: precursor_shm::ControlplaneCnc,
    counters: precursor_shm::CountersReader,
    next_correlation: u64,
}

impl TestControlPlane {
    fn attach(dir: &std::path::Path) -> TestControlPlane {
        let deadline = Instant::now() + ANSWER_TIMEOUT;
        loop {
            if let (Ok(cnc), Ok(counters)) = (
                precursor_shm::ControlplaneCnc::open(dir),
                precursor_shm::CountersReader::open(dir),
            ) {
                return TestControlPlane {
                    cnc,
                    counters,
                    next_correlation: 1,
                };
            }
            assert!(Instant::now() < deadline, "no CnC file from the data plane");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Sends `command` and waits for its one event: `Ok(())` for Done, else the failure.
    fn call(&mut self, command: RingCommand) -> Result<(), (ErrorCode, String)> {
        let mut payload = [0u8; precursor_shm::RING_PAYLOAD_BYTES_MAX];
        let length = command.encode(&mut payload);
        let correlation = self.next_correlation;
        self.next_correlation += 1;
        self.cnc
            .commands()
            .try_push(command.kind(), correlation, &payload[..length])
            .unwrap();
        let deadline = Instant::now() + ANSWER_TIMEOUT;
        let mut event = [0u8; precursor_shm::RING_PAYLOAD_BYTES_MAX];
        loop {
            if let Some(entry) = self.cnc.events().try_pop(&mut event) {
                assert_eq!(entry.correlation_id, correlation);
                return match Event::decode(entry.kind, &event[..entry.length]).unwrap() {
                    Event::Done => Ok(()),
                    Event::Failed { code, message } => Err((code, message.to_string())),
                    other => panic!("{other:?}"),
                };
            }
            assert!(Instant::now() < deadline, "no event for {command:?}");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// A gauge of partition `r`-0 (the lcore publishes every 10 ms).
    fn partition_gauge(&self, kind: u32) -> u64 {
        let mut found = None;
        self.counters.for_each(|c| {
            if c.kind == kind && c.label == "topic=r,partition=0" {
                found = Some(c.value);
            }
        });
        found.expect("the partition's gauge")
    }

    fn lease_for(&self, lease: Duration) {
        self.cnc
            .set_lease_until_ns(precursor_shm::monotonic_ns() + lease.as_nanos() as u64);
    }
}

/// Waits until `f` holds, at most ANSWER_TIMEOUT.
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + ANSWER_TIMEOUT;
    while !f() {
        assert!(Instant::now() < deadline, "never: {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

impl Client {
    /// The next frame that is not a ReplicaData without error (our parked fetch answered
    /// with HW news or batches meanwhile).
    fn frame_skipping_replica_data(&mut self) -> (FrameHeader, Vec<u8>) {
        loop {
            let (header, body) = self.frame_skipping_arp();
            if header.opcode != Opcode::ReplicaData || header.error != 0 {
                return (header, body);
            }
        }
    }

    fn produce_skipping(
        &mut self,
        handle: PartitionHandle,
        acks: Acks,
        batch: &[u8],
    ) -> Result<ProduceAck, ErrorCode> {
        let id = self.request(Opcode::Produce, acks.to_flags(), handle.0, batch);
        let (header, body) = self.frame_skipping_replica_data();
        assert_eq!(header.request_id, id);
        match header.opcode {
            Opcode::ProduceAck => Ok(ProduceAck::decode(&body).unwrap()),
            Opcode::Error => Err(header.error_code().unwrap()),
            other => panic!("produce answered with {other:?}"),
        }
    }
}

#[test]
fn in_quorum_mode_a_leader_acks_only_under_its_lease_and_shrinks_its_isr_only_when_told() {
    use precursor_protocol::counter_kind as kind;
    let _serial = serial();
    // min_insync 1: the acks=all produce that waits for the shrink is then acked (with 2
    // it would get NotEnoughReplicas after the append, Kafka's rule).
    let config = CLUSTER_OF_TWO.replace("min_insync_replicas = 2", "min_insync_replicas = 1");
    let (broker, mut client) = start_in_mode("quorum", &config, true);
    let mut control = TestControlPlane::attach(&broker.control_dir);
    let meta = client.metadata("r");
    let handle = PartitionHandle::new(meta.topic_id, 0);
    let first = batch(7, 0, &[b"one", b"two"]);
    // Start-up in quorum mode: no probe, no leader until the quorum names one.
    assert_eq!(
        client.produce_skipping(handle, Acks::Leader, &first),
        Err(ErrorCode::NotLeaderOrFollower)
    );
    assert_eq!(control.partition_gauge(kind::PARTITION_LEADER), 0);
    // SetLeader with the committed ISR {1, 2}.
    let isr_both = 0x02_01;
    control
        .call(RingCommand::SetLeader {
            name: "r",
            partition: 0,
            leader: 1,
            epoch: 3,
            isr: isr_both,
        })
        .unwrap();
    eventually("the ISR gauge shows {1, 2}", || {
        control.partition_gauge(kind::PARTITION_ISR) == isr_both
            && control.partition_gauge(kind::PARTITION_ISR_PROPOSED) == isr_both
            && control.partition_gauge(kind::PARTITION_LEADER_EPOCH) == 3
    });
    // Leader, but the lease is expired (0 at start-up): refused before the append.
    assert_eq!(
        client.produce_skipping(handle, Acks::Leader, &first),
        Err(ErrorCode::NotLeaderOrFollower)
    );
    client.replica_fetch(&follower_fetch(0, 3, NO_EPOCH));
    let (refused, _) = client.frame_skipping_arp();
    assert_eq!(
        refused.error_code(),
        Some(ErrorCode::NotLeaderOrFollower),
        "a fenced leader serves no follower"
    );
    assert_eq!(control.partition_gauge(kind::PARTITION_END_OFFSET), 0);

    // Lease renewed: acks.
    control.lease_for(Duration::from_secs(60));
    assert_eq!(
        client
            .produce_skipping(handle, Acks::Leader, &first)
            .unwrap()
            .base_offset,
        0
    );
    // The follower catches up and parks at the log end; acks=all goes through it.
    client.replica_fetch(&follower_fetch(0, 3, NO_EPOCH));
    let (header, _) = client.frame_skipping_arp();
    assert_eq!((header.opcode, header.error), (Opcode::ReplicaData, 0));
    client.replica_fetch(&follower_fetch(2, 3, 3));
    let second = batch(7, 2, &[b"three"]);
    let id = client.request(Opcode::Produce, Acks::All.to_flags(), handle.0, &second);
    let (header, _) = client.frame_skipping_arp();
    assert_eq!(
        header.opcode,
        Opcode::ReplicaData,
        "the batch, before the ack (error {})",
        header.error
    );
    client.replica_fetch(&follower_fetch(3, 3, 3));
    let (ack, body) = client.frame_skipping_replica_data();
    assert_eq!((ack.opcode, ack.request_id), (Opcode::ProduceAck, id));
    assert_eq!(ProduceAck::decode(&body).unwrap().base_offset, 2);

    // The lease left to expire: refused, counted; renewed: acks again.
    control.lease_for(Duration::from_millis(50));
    std::thread::sleep(Duration::from_millis(100));
    let third = batch(7, 3, &[b"four"]);
    assert_eq!(
        client.produce_skipping(handle, Acks::Leader, &third),
        Err(ErrorCode::NotLeaderOrFollower)
    );
    assert_eq!(control.partition_gauge(kind::PARTITION_END_OFFSET), 3);
    control.lease_for(Duration::from_secs(60));
    assert_eq!(
        client
            .produce_skipping(handle, Acks::Leader, &third)
            .unwrap()
            .base_offset,
        3,
        "the same sequence, resent: appended once"
    );

    // The follower stops fetching: it leaves the proposed ISR, not the effective one.
    eventually("the follower leaves the proposed ISR", || {
        control.partition_gauge(kind::PARTITION_ISR_PROPOSED) == 0x01
    });
    assert_eq!(control.partition_gauge(kind::PARTITION_ISR), isr_both);
    let fifth = batch(7, 4, &[b"five"]);
    let waiting = client.request(Opcode::Produce, Acks::All.to_flags(), handle.0, &fifth);
    std::thread::sleep(Duration::from_millis(300));
    // Nothing but replication traffic for us meanwhile: the ack waits.
    while let Some(mbuf) = client.next_packet() {
        if let Inbound::Datagram { payload, .. } = net::classify(mbuf.data(), &client.me) {
            let (header, _) = decode_frame(payload).unwrap();
            assert_eq!(header.opcode, Opcode::ReplicaData, "no ack before SetIsr");
        }
    }
    assert_eq!(control.partition_gauge(kind::PARTITION_ISR), isr_both);
    // SetIsr at another epoch: fenced.
    let (code, message) = control
        .call(RingCommand::SetIsr {
            name: "r",
            partition: 0,
            epoch: 2,
            isr: 0x01,
        })
        .unwrap_err();
    assert_eq!(code, ErrorCode::FencedLeaderEpoch, "{message}");
    assert!(message.contains("FencedLeaderEpoch"), "{message}");
    // The committed shrink: the waiting ack is released.
    control
        .call(RingCommand::SetIsr {
            name: "r",
            partition: 0,
            epoch: 3,
            isr: 0x01,
        })
        .unwrap();
    let (ack, body) = client.frame_skipping_replica_data();
    assert_eq!((ack.opcode, ack.request_id), (Opcode::ProduceAck, waiting));
    assert_eq!(ProduceAck::decode(&body).unwrap().base_offset, 4);
    eventually("the ISR gauge shows {1}", || {
        control.partition_gauge(kind::PARTITION_ISR) == 0x01
    });

    // SetLeader with leader 0: offline here.
    control
        .call(RingCommand::SetLeader {
            name: "r",
            partition: 0,
            leader: 0,
            epoch: 4,
            isr: 0,
        })
        .unwrap();
    let sixth = batch(7, 5, &[b"six"]);
    assert_eq!(
        client.produce_skipping(handle, Acks::Leader, &sixth),
        Err(ErrorCode::NotLeaderOrFollower)
    );
    let counters = broker.stop();
    assert!(counter(&counters, "lease_refusals") >= 3, "{counters}");
}
