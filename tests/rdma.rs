//! The RDMA transport end to end, on a real RDMA device: a real `precursor-dataplane`
//! (built with `--features rdma`) listening with rdma_cm, and clients of this crate's
//! library over RC queue pairs. Our hosts' kernels have no RDMA, so these run inside the
//! soft-RoCE QEMU guest: `ci/rdma-guest-tests.sh` (ci/test.sh
//! does it). Elsewhere each test says SKIPPED and passes.
//!
//! The guest gives `RXE_IP` (rxe0's address, 10.0.0.1) and a dummy interface for the data
//! plane's (unused) DPDK port, `PRECURSOR_RDMA_TEST_IFACE`. Tests run one at a time.

#![cfg(feature = "rdma")]

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use common::Dataplane;
use precursor_client::bench_payload;
use precursor_client::rdma::{RdmaConfig, RdmaReader, RdmaSession};
use precursor_client::{
    Acks, ClientConfig, ClientError, ConsumedRecord, Consumer, ConsumerConfig, Producer,
    ProducerConfig, StartOffset, TransportKind,
};
use precursor_protocol::frame::{ErrorCode, FrameHeader, Opcode, FRAME_HEADER_BYTES};

const TOPIC: &str = "rdma";
const PAYLOAD_BYTES: usize = 100;
/// Segments small enough that the bulk test rolls several (sealed segments, revocations).
const SEGMENT_BYTES: u64 = 4 << 20;
/// Every wait of these tests; TCG is slow, nothing here is a timing assertion.
const PATIENCE: Duration = Duration::from_secs(120);

/// The RDMA device's address, or `None` (and a loud SKIPPED) where there is none.
fn rdma_address(test: &str) -> Option<Ipv4Addr> {
    if !Path::new("/sys/class/infiniband").exists() {
        eprintln!(
            "SKIPPED {test}: this kernel has no RDMA subsystem; the RDMA tests run in the \
             soft-RoCE guest (ci/rdma-guest-tests.sh)"
        );
        return None;
    }
    match std::env::var("RXE_IP").ok().and_then(|ip| ip.parse().ok()) {
        Some(ip) => Some(ip),
        None => {
            eprintln!("SKIPPED {test}: RXE_IP (the RDMA device's IPv4 address) is not set");
            None
        }
    }
}

/// Where the EAL finds its plugins: the distribution's directory, or (in the guest, where
/// only what the test needs was copied) the two it needs, loaded by name.
fn eal_plugin_args() -> String {
    let dir = "/usr/lib/x86_64-linux-gnu/dpdk/pmds-23.0";
    if Path::new(dir).is_dir() {
        return "[]".to_string();
    }
    let dir = std::env::var("PRECURSOR_RDMA_TEST_PMDS").unwrap_or_else(|_| dir.to_string());
    format!(
        "[\"-d\", \"{dir}/librte_mempool_ring.so.23\", \"-d\", \"{dir}/librte_net_af_packet.so.23\"]"
    )
}

/// A data plane with the RDMA transport on: a temporary directory with its data, memory
/// and CnC directories and its config file.
struct RdmaNode {
    config: PathBuf,
    memory: PathBuf,
    rdma: SocketAddr,
    _dir: tempfile::TempDir,
}

impl RdmaNode {
    fn new(tag: &str, ip: Ipv4Addr, port: u16, extra: &str) -> RdmaNode {
        let dir = tempfile::tempdir().unwrap();
        let memory = common::memory_dir(&format!("rdma-{tag}"));
        let iface =
            std::env::var("PRECURSOR_RDMA_TEST_IFACE").unwrap_or_else(|_| "prcdp0".to_string());
        let config = dir.path().join("precursor.toml");
        let text = format!(
            r#"[node]
data_dir = {data:?}
memory_dir = {memory:?}
cnc_dir = {cnc:?}
[dataplane]
file_prefix = "rdma-{tag}"
mbufs = 1023
idle = "backoff"
eal_args = {eal}
[port]
kind = "af_packet"
iface = {iface:?}
address = "10.99.0.2"
[storage]
segment_bytes = {SEGMENT_BYTES}
[rdma]
enabled = true
address = "{ip}"
port = {port}
recv_buffers_per_connection = 16
buffer_bytes = 9216
connections_max = 24
[[topics.create]]
name = "{TOPIC}"
partitions = 4
{extra}
"#,
            data = dir.path().join("data").display().to_string(),
            memory = memory.display().to_string(),
            cnc = dir.path().join("cnc").display().to_string(),
            eal = eal_plugin_args(),
        );
        std::fs::write(&config, text).unwrap();
        RdmaNode {
            config,
            memory,
            rdma: SocketAddr::from((ip, port)),
            _dir: dir,
        }
    }

    fn start(&self) -> Dataplane {
        Dataplane::start(&self.config, None)
    }

    fn rdma_config(&self) -> RdmaConfig {
        RdmaConfig::new(self.rdma)
    }

    fn client(&self) -> ClientConfig {
        ClientConfig {
            transport: TransportKind::Rdma(self.rdma_config()),
            request_timeout_ms: 200,
            retransmit_backoff_max_ms: 1_000,
            delivery_timeout_ms: 60_000,
            ..ClientConfig::default()
        }
    }

    fn producer(&self, acks: Acks) -> Producer {
        Producer::new(ProducerConfig {
            client: self.client(),
            acks,
            ..ProducerConfig::default()
        })
        .expect("producer over RDMA")
    }
}

impl Drop for RdmaNode {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.memory);
    }
}

/// The `RDMA {...}` line the data plane printed when it stopped.
fn rdma_counters(stderr: &[String]) -> serde_json::Value {
    let line = stderr
        .iter()
        .find_map(|l| l.strip_prefix("RDMA "))
        .unwrap_or_else(|| panic!("no RDMA counters line: {stderr:?}"));
    serde_json::from_str(line).expect("RDMA counters are JSON")
}

/// Stops the data plane (SIGTERM); checks the transport's own invariants and returns its
/// counters.
fn stop(dataplane: Dataplane) -> serde_json::Value {
    let lines = dataplane.stderr_lines();
    dataplane.stop();
    // `stop` waited for the COUNTERS line, printed after the RDMA one.
    let rdma = rdma_counters(&lines.lock().unwrap());
    assert_eq!(rdma["stray_completions"], 0, "{rdma}");
    assert_eq!(rdma["queue_full"], 0, "{rdma}");
    rdma
}

/// Waits until the broker logged as many closed connections as established ones.
fn wait_all_closed(dataplane: &Dataplane) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let lines = dataplane.stderr();
        let count = |what: &str| {
            lines
                .iter()
                .filter(|l| l.contains("RDMA: connection") && l.contains(what))
                .count()
        };
        let (established, closed) = (count(" established"), count(" closed"));
        if established > 0 && established == closed {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{established} connections established, {closed} closed: {lines:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Produces `count` self-checking messages (sequence numbers `first..first+count`) to
/// `partition` and returns the offsets they were acknowledged at, in order.
fn produce(
    producer: &mut Producer,
    partition: u16,
    first: u64,
    count: u64,
) -> Result<Vec<u64>, ClientError> {
    let mut payload = Vec::with_capacity(PAYLOAD_BYTES);
    for seq in first..first + count {
        bench_payload::encode(seq, PAYLOAD_BYTES, &mut payload);
        producer.send(TOPIC, Some(partition), None, &payload)?;
    }
    producer.flush(PATIENCE)?;
    let mut offsets = Vec::with_capacity(count as usize);
    let mut failure = None;
    producer.drain_deliveries(|delivery| match (&delivery.error, delivery.offset) {
        (None, Some(offset)) => offsets.push(offset),
        (error, _) => failure = failure.take().or(error.clone()),
    });
    if let Some(error) = failure {
        return Err(error);
    }
    Ok(offsets)
}

/// Checks records are the messages `first..`, one per offset from `base_offset`, in order.
fn assert_sequence(records: &[ConsumedRecord], base_offset: u64, first: u64) {
    for (i, record) in records.iter().enumerate() {
        let seq = bench_payload::verify(&record.value)
            .unwrap_or_else(|e| panic!("record at offset {}: {e}", record.offset));
        assert_eq!(record.offset, base_offset + i as u64, "offsets are dense");
        assert_eq!(seq, first + i as u64, "message at offset {}", record.offset);
    }
}

/// Reads `count` records of `partition` from `offset` with one-sided READs.
fn read_all(
    node: &RdmaNode,
    partition: u16,
    offset: u64,
    count: usize,
) -> (Vec<ConsumedRecord>, RdmaReader) {
    let mut reader = RdmaReader::open(&node.rdma_config(), TOPIC, partition, offset)
        .expect("one-sided reader connects");
    let mut records = Vec::with_capacity(count);
    let deadline = Instant::now() + PATIENCE;
    while records.len() < count {
        assert!(
            Instant::now() < deadline,
            "READ {} of {count} records: {reader:?}",
            records.len()
        );
        let progress = reader.poll(&mut records).expect("READ poll");
        if progress.records == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    (records, reader)
}

/// Fetches `count` records of `partition` from `offset` over SEND/RECV.
fn fetch_all(node: &RdmaNode, partition: u16, offset: u64, count: usize) -> Vec<ConsumedRecord> {
    let mut consumer = Consumer::new(ConsumerConfig {
        client: node.client(),
        ..ConsumerConfig::default()
    })
    .expect("consumer over RDMA");
    consumer
        .assign(TOPIC, Some(&[partition]), StartOffset::Offset(offset))
        .expect("assign");
    let mut records = Vec::with_capacity(count);
    let deadline = Instant::now() + PATIENCE;
    while records.len() < count {
        assert!(
            Instant::now() < deadline,
            "fetched {} of {count}",
            records.len()
        );
        consumer
            .poll(Duration::from_millis(200), &mut records)
            .expect("fetch over RDMA");
    }
    records
}

#[test]
fn hundred_thousand_messages_over_send_recv_back_by_fetch_and_by_read() {
    let _serial = common::serial();
    let Some(ip) = rdma_address("hundred_thousand_messages") else {
        return;
    };
    let node = RdmaNode::new("bulk", ip, 9201, "");
    let dataplane = node.start();
    let count = 100_000u64;
    // A one-sided reader follows the producer from the start: it reads the active segment
    // as it grows (the watermark word), across seals, and across the swap of a persisted
    // segment's memory for its file (revocation, a new grant).
    let follower = {
        let config = node.rdma_config();
        std::thread::spawn(move || {
            let mut reader = RdmaReader::open(&config, TOPIC, 0, 0).expect("reader");
            let mut records = Vec::with_capacity(count as usize);
            let deadline = Instant::now() + PATIENCE;
            while (records.len() as u64) < count {
                assert!(
                    Instant::now() < deadline,
                    "followed {} of {count}",
                    records.len()
                );
                if reader.poll(&mut records).expect("READ poll").records == 0 {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            (records, reader.grants, reader.reads)
        })
    };
    let mut producer = node.producer(Acks::Leader);
    let offsets =
        produce(&mut producer, 0, 0, count).expect("100,000 messages acknowledged over RDMA");
    assert_eq!(offsets.len() as u64, count);
    assert_eq!(offsets[0], 0);
    assert!(
        offsets.windows(2).all(|w| w[1] == w[0] + 1),
        "dense, in order"
    );
    let sent = producer.transport_stats();
    assert!(sent.frames_sent > 0 && sent.frames_received > 0, "{sent:?}");
    drop(producer);

    // Back by SEND/RECV fetch...
    let fetched = fetch_all(&node, 0, 0, count as usize);
    assert_sequence(&fetched[..count as usize], 0, 0);

    // ...by the one-sided follower...
    let (followed, grants, reads) = follower.join().expect("follower");
    assert_sequence(&followed[..count as usize], 0, 0);
    eprintln!("the follower made {grants} grant requests and {reads} READs of batches");

    // ...and by a one-sided reader starting now, across sealed (persisted) segments.
    let (read, reader) = read_all(&node, 0, 0, count as usize);
    assert_sequence(&read[..count as usize], 0, 0);
    assert!(
        reader.grants >= 2,
        "{} MiB of log in {} MiB segments needs several grants: {reader:?}",
        (count as usize * PAYLOAD_BYTES) >> 20,
        SEGMENT_BYTES >> 20
    );
    drop(reader);

    wait_all_closed(&dataplane);
    let rdma = stop(dataplane);
    assert!(rdma["frames_received"].as_u64().unwrap() > 1_000, "{rdma}");
    assert!(
        rdma["segment_registrations"].as_u64().unwrap() >= 2,
        "{rdma}"
    );
    assert_eq!(
        rdma["connections_opened"], rdma["connections_closed"],
        "every connection cleaned up: {rdma}"
    );
}

#[test]
fn many_clients_at_once() {
    let _serial = common::serial();
    let Some(ip) = rdma_address("many_clients_at_once") else {
        return;
    };
    let node = RdmaNode::new("many", ip, 9202, "");
    let dataplane = node.start();
    let clients = 12u64;
    let per_client = 2_000u64;
    let start = Arc::new(Barrier::new(clients as usize));
    let threads: Vec<_> = (0..clients)
        .map(|client| {
            let config = node.client();
            let start = start.clone();
            std::thread::spawn(move || {
                let mut producer = Producer::new(ProducerConfig {
                    client: config,
                    acks: Acks::Leader,
                    ..ProducerConfig::default()
                })
                .expect("producer over RDMA");
                start.wait();
                // Client c's messages: sequence numbers c * 1,000,000 + i, to partition c % 4.
                produce(
                    &mut producer,
                    (client % 4) as u16,
                    client * 1_000_000,
                    per_client,
                )
            })
        })
        .collect();
    for (client, thread) in threads.into_iter().enumerate() {
        let offsets = thread
            .join()
            .expect("client thread")
            .unwrap_or_else(|e| panic!("client {client}: {e}"));
        assert_eq!(offsets.len() as u64, per_client, "client {client}");
    }
    // Every message is in its partition exactly once, each client's in its order.
    for partition in 0..4u16 {
        let expected = (clients / 4) * per_client;
        let records = fetch_all(&node, partition, 0, expected as usize);
        let mut next: std::collections::HashMap<u64, u64> = Default::default();
        for record in &records[..expected as usize] {
            let seq = bench_payload::verify(&record.value).expect("intact payload");
            let (client, i) = (seq / 1_000_000, seq % 1_000_000);
            assert_eq!(
                client % 4,
                u64::from(partition),
                "client {client} in partition {partition}"
            );
            let want = next.entry(client).or_insert(0);
            assert_eq!(i, *want, "client {client}'s messages in order, none twice");
            *want += 1;
        }
        assert!(next.values().all(|n| *n == per_client), "{next:?}");
    }
    wait_all_closed(&dataplane);
    let rdma = stop(dataplane);
    assert!(
        rdma["connections_opened"].as_u64().unwrap() >= clients,
        "{rdma}"
    );
    assert_eq!(
        rdma["connections_opened"], rdma["connections_closed"],
        "{rdma}"
    );
}

#[test]
fn a_client_that_disconnects_mid_stream() {
    let _serial = common::serial();
    let Some(ip) = rdma_address("a_client_that_disconnects_mid_stream") else {
        return;
    };
    let node = RdmaNode::new("vanish", ip, 9203, "");
    let dataplane = node.start();
    // Durable acks park on the broker: they are for a connection that will be gone.
    for round in 0..3 {
        let mut producer = node.producer(Acks::Durable);
        let mut payload = Vec::new();
        for seq in 0..500u64 {
            bench_payload::encode(seq, PAYLOAD_BYTES, &mut payload);
            producer.send(TOPIC, Some(2), None, &payload).expect("send");
        }
        producer.poll().expect("batches go out");
        // Gone without a goodbye, requests in flight: its QP and id are destroyed.
        drop(producer);
        eprintln!("round {round}: producer dropped mid-stream");
    }
    // The broker serves the next client as if nothing happened.
    let mut producer = node.producer(Acks::Leader);
    let offsets = produce(&mut producer, 3, 0, 1_000).expect("a fresh client is served");
    assert_eq!(offsets.len(), 1_000);
    drop(producer);
    let records = fetch_all(&node, 3, offsets[0], 1_000);
    assert_sequence(&records[..1_000], offsets[0], 0);
    // Connections close when the broker has seen DISCONNECTED and every buffer came back.
    wait_all_closed(&dataplane);
    let rdma = stop(dataplane);
    assert_eq!(
        rdma["connections_opened"], rdma["connections_closed"],
        "every vanished client cleaned up: {rdma}"
    );
    assert!(rdma["connections_opened"].as_u64().unwrap() >= 5, "{rdma}");
}

/// A frame of `bytes` bytes that is a Ping (the broker would echo it, if it could take it).
fn ping_frame(bytes: usize) -> Vec<u8> {
    let mut frame = vec![0u8; bytes];
    let header = FrameHeader::new(Opcode::Ping, 7, 0, bytes - FRAME_HEADER_BYTES);
    header.encode(&mut frame);
    frame
}

/// Waits until the session reports its connection lost; the error's text.
fn wait_lost(session: &mut RdmaSession) -> String {
    let deadline = Instant::now() + PATIENCE;
    loop {
        assert!(
            Instant::now() < deadline,
            "the connection never failed: {session:?}"
        );
        match session.poll_frames(16, |_| {}) {
            Err(ClientError::RdmaConnectionLost { reason, .. }) => return reason,
            Err(other) => panic!("unexpected error {other:?}"),
            Ok(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

#[test]
fn a_qp_forced_into_error() {
    let _serial = common::serial();
    let Some(ip) = rdma_address("a_qp_forced_into_error") else {
        return;
    };
    let node = RdmaNode::new("qperr", ip, 9204, "");
    let dataplane = node.start();

    // This side's QP in error: every call says the connection is lost, nothing hangs.
    let mut session = RdmaSession::connect(&node.rdma_config()).expect("connect");
    assert!(session
        .try_send_frame(&ping_frame(64))
        .expect("ping goes out"));
    assert!(
        session.recv_frame(PATIENCE, |_| {}).expect("pong"),
        "the broker answers first"
    );
    session.force_error().expect("QP to the error state");
    match session.try_send_frame(&ping_frame(64)) {
        Err(ClientError::RdmaConnectionLost { reason, .. }) => {
            assert!(reason.contains("error state"), "{reason}")
        }
        other => panic!("expected RdmaConnectionLost, got {other:?}"),
    }
    drop(session);

    // The broker's QP in error: a SEND larger than its receive buffers fails its receive
    // (local length error); it disconnects, and this side learns it.
    let mut config = node.rdma_config();
    config.buffer_bytes = 16_384;
    let mut session = RdmaSession::connect(&config).expect("connect with larger buffers");
    assert_eq!(session.frame_bytes_max(), 9216);
    assert!(matches!(
        session.try_send_frame(&ping_frame(12_000)),
        Err(ClientError::Usage(_))
    ));
    assert!(session
        .try_send_bytes(&ping_frame(12_000))
        .expect("the oversized SEND is posted"));
    let reason = wait_lost(&mut session);
    eprintln!("the broker dropped the connection: {reason}");
    drop(session);

    // Others are served all along.
    let mut producer = node.producer(Acks::Leader);
    let offsets = produce(&mut producer, 1, 0, 500).expect("served after both failures");
    assert_eq!(offsets.len(), 500);
    drop(producer);
    wait_all_closed(&dataplane);
    let rdma = stop(dataplane);
    assert!(
        rdma["connection_errors"].as_u64().unwrap() >= 1,
        "the broker saw its QP fail: {rdma}"
    );
    assert_eq!(
        rdma["connections_opened"], rdma["connections_closed"],
        "{rdma}"
    );
}

#[test]
fn read_grants_at_and_beyond_the_high_water_mark() {
    let _serial = common::serial();
    let Some(ip) = rdma_address("read_grants_at_and_beyond_the_high_water_mark") else {
        return;
    };
    let node = RdmaNode::new("grant", ip, 9205, "");
    let dataplane = node.start();
    let mut producer = node.producer(Acks::Leader);
    let offsets = produce(&mut producer, 1, 0, 100).expect("produce");
    let end = offsets[99] + 1;

    let mut reader = RdmaReader::open(&node.rdma_config(), TOPIC, 1, 0).expect("reader");
    // Beyond the end: refused by the broker, with the bounds.
    match reader.request_grant(end + 10) {
        Err(ClientError::OffsetOutOfRange {
            high_watermark,
            log_start_offset,
            ..
        }) => {
            assert_eq!(high_watermark, Some(end));
            assert_eq!(log_start_offset, Some(0));
        }
        other => panic!("expected OffsetOutOfRange, got {other:?}"),
    }
    // At the end: a grant whose committed bytes end exactly where the reader starts.
    let grant = reader
        .request_grant(end)
        .expect("grant at the high-water mark");
    assert_eq!(grant.high_watermark, end);
    assert_eq!(grant.position, grant.committed.committed(), "{grant:?}");
    assert!(!grant.committed.is_sealed());
    let word = reader
        .read_watermark(&grant)
        .expect("READ of the watermark word");
    assert_eq!(word.committed(), grant.position);
    // The log grows: the word follows, the reader reads on without asking again.
    let more = produce(&mut producer, 1, 100, 50).expect("produce more");
    assert_eq!(more[0], end);
    let deadline = Instant::now() + PATIENCE;
    while reader.read_watermark(&grant).expect("word").committed() == grant.position {
        assert!(Instant::now() < deadline, "the watermark word never moved");
        std::thread::sleep(Duration::from_millis(1));
    }
    let (records, _) = read_all(&node, 1, 0, 150);
    assert_sequence(&records[..150], 0, 0);

    // Not readable past the registration: the NIC refuses, this side's QP fails.
    let beyond = reader.read_segment(&grant, grant.segment_bytes - 8, 64);
    match beyond {
        Err(ClientError::RdmaConnectionLost { reason, .. }) => {
            assert!(reason.contains("RDMA READ failed"), "{reason}")
        }
        other => panic!("a READ past the registration must fail on the NIC, got {other:?}"),
    }
    drop(reader);

    // An unknown partition is an error, not a grant.
    let mut session = RdmaSession::connect(&node.rdma_config()).expect("connect");
    let mut payload = [0u8; 16];
    precursor_protocol::frame::ReadGrantRequest { offset: 0 }.encode(&mut payload);
    let header = FrameHeader::new(Opcode::ReadGrant, 0, 0x7fff_0000, payload.len());
    let (answer, _) = session.request(header, &payload, PATIENCE).expect("answer");
    assert_eq!(answer.opcode, Opcode::Error);
    assert_eq!(
        answer.error_code(),
        Some(ErrorCode::UnknownTopicOrPartition)
    );
    drop(session);
    drop(producer);
    let rdma = stop(dataplane);
    assert!(rdma["read_grants"].as_u64().unwrap() >= 3, "{rdma}");
}

#[test]
fn every_acknowledged_message_survives_a_restart() {
    let _serial = common::serial();
    let Some(ip) = rdma_address("every_acknowledged_message_survives_a_restart") else {
        return;
    };
    let node = RdmaNode::new("restart", ip, 9206, "");
    let dataplane = node.start();

    // Phase 1: durable acks for everything, then kill -9 (no flush, no goodbye).
    let mut producer = node.producer(Acks::Durable);
    let acked = produce(&mut producer, 0, 0, 10_000).expect("durable produce");
    drop(producer);
    dataplane.kill9();
    let dataplane = node.start();
    let records = fetch_all(&node, 0, acked[0], acked.len());
    assert_sequence(&records[..acked.len()], acked[0], 0);

    // Phase 2: kill -9 in the middle of a stream; whatever was acknowledged is there.
    let config = node.client();
    let delivered = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = delivered.clone();
    let stream = std::thread::spawn(move || {
        let mut producer = Producer::new(ProducerConfig {
            client: ClientConfig {
                delivery_timeout_ms: 15_000,
                ..config
            },
            acks: Acks::Durable,
            ..ProducerConfig::default()
        })
        .expect("producer");
        let mut acked: Vec<(u64, u64)> = Vec::new();
        let mut payload = Vec::new();
        let collect = |producer: &mut Producer, acked: &mut Vec<(u64, u64)>| {
            producer.drain_deliveries(|d| {
                if let (None, Some(offset)) = (&d.error, d.offset) {
                    acked.push((1_000_000 + d.id.0, offset));
                }
            });
            counter.store(acked.len() as u64, std::sync::atomic::Ordering::Relaxed);
        };
        for i in 0..20_000u64 {
            bench_payload::encode(1_000_000 + i, PAYLOAD_BYTES, &mut payload);
            if producer.send(TOPIC, Some(0), None, &payload).is_err() {
                break;
            }
            if i % 100 == 0 {
                let _ = producer.poll();
                collect(&mut producer, &mut acked);
            }
        }
        let _ = producer.flush(Duration::from_secs(30));
        collect(&mut producer, &mut acked);
        acked
    });
    let deadline = Instant::now() + PATIENCE;
    while delivered.load(std::sync::atomic::Ordering::Relaxed) < 1_000 {
        assert!(Instant::now() < deadline, "the stream never got going");
        std::thread::sleep(Duration::from_millis(5));
    }
    dataplane.kill9();
    let dataplane = node.start();
    let acked = stream.join().expect("stream thread");
    assert!(acked.len() >= 1_000, "{} acknowledged", acked.len());
    let last = acked.iter().map(|(_, offset)| *offset).max().unwrap();
    let records = fetch_all(&node, 0, 0, (last + 1) as usize);
    for (seq, offset) in &acked {
        let record = &records[*offset as usize];
        assert_eq!(record.offset, *offset);
        assert_eq!(
            bench_payload::verify(&record.value).expect("intact"),
            *seq,
            "acknowledged message at offset {offset}"
        );
    }
    eprintln!(
        "{} messages acknowledged before/after the kill -9 are all there",
        acked.len()
    );
    stop(dataplane);
}

/// Runs the `precursor` CLI (built with this test, so with RDMA) and checks it succeeded.
fn cli(args: &[&str]) -> String {
    let out = std::process::Command::new(common::precursor())
        .args(args)
        .output()
        .expect("precursor runs");
    common::assert_success(&out, &format!("precursor {}", args.join(" ")));
    format!("{}{}", common::stdout(&out), common::stderr(&out))
}

#[test]
fn the_cli_over_rdma() {
    let _serial = common::serial();
    let Some(ip) = rdma_address("the_cli_over_rdma") else {
        return;
    };
    let node = RdmaNode::new(
        "cli",
        ip,
        9207,
        "[[topics.create]]\nname = \"cli\"\npartitions = 1",
    );
    let dataplane = node.start();
    let broker = node.rdma.to_string();
    let over = ["--transport", "rdma", "--rdma-broker", &broker];
    let produced = cli(&[
        &[
            "bench", "produce", "--topic", "cli", "-n", "5000", "--json", "-q",
        ][..],
        &over,
    ]
    .concat());
    assert!(produced.contains("\"transport\":\"rdma\""), "{produced}");
    // SEND/RECV fetches, then one-sided READs, each checking every bench payload.
    let fetched = cli(&[
        &[
            "consume",
            "cli",
            "--verify",
            "-n",
            "5000",
            "--idle-timeout-ms",
            "60000",
        ][..],
        &over,
    ]
    .concat());
    assert!(fetched.contains("5000"), "{fetched}");
    let read = cli(&[
        &[
            "consume",
            "cli",
            "--rdma-read",
            "--verify",
            "-n",
            "5000",
            "--idle-timeout-ms",
            "60000",
        ][..],
        &over,
    ]
    .concat());
    assert!(read.contains("READs of batches"), "{read}");
    let ping = cli(&[&["bench", "ping", "-n", "200", "--json", "-q"][..], &over].concat());
    assert!(ping.contains("\"workload\":\"ping\""), "{ping}");
    stop(dataplane);
}
