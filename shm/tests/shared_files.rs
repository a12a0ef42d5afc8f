//! The shared files across processes: the test binary spawns itself as a child (the "data
//! plane") with `CHILD_ROLE_ENV` set; the child runs only [`child_entry`].

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use precursor_ffi::alloc::allocations_on_this_thread;
use precursor_protocol::command::{self, Command as RingCommand, Event, COMMAND_PAYLOAD_BYTES_MAX};
use precursor_protocol::counter_kind as kind;
use precursor_protocol::frame::ErrorCode;
use precursor_shm::counters::{histogram_bucket, HISTOGRAM_COUNTERS};
use precursor_shm::{monotonic_ns, LEASE_EXPIRED_NS, LEASE_FOREVER_NS};
use precursor_shm::{
    AllocateError, CncError, ControlplaneCnc, CounterId, CountersReader, CountersWriter,
    DataplaneCnc, RingError, CNC_LAYOUT_VERSION, HISTOGRAM_BOUNDS_NS, HISTOGRAM_BUCKETS,
    RING_PAYLOAD_BYTES_MAX,
};

#[global_allocator]
static ALLOCATOR: precursor_ffi::alloc::CountingAllocator = precursor_ffi::alloc::CountingAllocator;

const CHILD_ROLE_ENV: &str = "PRECURSOR_SHM_TEST_CHILD_ROLE";
const CHILD_DIR_ENV: &str = "PRECURSOR_SHM_TEST_DIR";
/// Entries each way in the two-process stress test.
const STRESS_ENTRIES: u64 = 100_000;
/// Slots of each ring in the two-process stress test: small, so it wraps often and fills.
const STRESS_RING_SLOTS: u32 = 16;
/// How long a side waits for the other before the test fails (not a timing assertion: a
/// bound so a broken test ends instead of hanging).
const PEER_WAIT_MAX: Duration = Duration::from_secs(120);
const EVENT_KIND_STRESS: u32 = 0x7001;
const COMMAND_KIND_STRESS: u32 = 0x7002;

/// Runs the child's role when this binary was spawned as a child; a no-op otherwise.
#[test]
fn child_entry() {
    let Ok(role) = std::env::var(CHILD_ROLE_ENV) else {
        return;
    };
    let dir = PathBuf::from(std::env::var(CHILD_DIR_ENV).expect("child dir"));
    match role.as_str() {
        "stress" => child_stress(&dir),
        "start_and_exit" => {
            let cnc = DataplaneCnc::create(&dir, 4).unwrap();
            cnc.heartbeat(now_ms());
        }
        "start_and_die" => {
            // Killed, not stopped: no Drop runs, the heartbeat stays fresh for an hour.
            let cnc = DataplaneCnc::create(&dir, 4).unwrap();
            cnc.heartbeat(now_ms() + 3_600_000);
            std::process::abort();
        }
        "counters" => child_counters(&dir),
        other => panic!("unknown child role {other}"),
    }
}

fn spawn_child(role: &str, dir: &Path) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_entry", "--nocapture", "--test-threads=1"])
        .env(CHILD_ROLE_ENV, role)
        .env(CHILD_DIR_ENV, dir)
        .spawn()
        .unwrap()
}

fn wait_success(mut child: Child) {
    let status = child.wait().unwrap();
    assert!(status.success(), "child failed: {status}");
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Waits (bounded) until `ready` is true, yielding in between.
fn wait_for(what: &str, mut ready: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ready() {
        assert!(
            start.elapsed() < PEER_WAIT_MAX,
            "gave up waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Payload `index` of the stress test: an 8-byte crc-checked header then filler bytes.
fn stress_payload(index: u64, out: &mut [u8; RING_PAYLOAD_BYTES_MAX]) -> usize {
    let length = 12 + (index as usize * 13) % (RING_PAYLOAD_BYTES_MAX - 12 + 1);
    out[4..12].copy_from_slice(&index.to_le_bytes());
    for (i, byte) in out[12..length].iter_mut().enumerate() {
        *byte = (index as usize ^ i).wrapping_mul(17) as u8;
    }
    let crc = crc32c::crc32c(&out[4..length]);
    out[..4].copy_from_slice(&crc.to_le_bytes());
    length
}

fn check_stress_payload(index: u64, payload: &[u8]) {
    assert!(
        payload.len() >= 12,
        "entry {index}: {} bytes",
        payload.len()
    );
    let crc = u32::from_le_bytes(payload[..4].try_into().unwrap());
    assert_eq!(crc, crc32c::crc32c(&payload[4..]), "entry {index} checksum");
    assert_eq!(
        u64::from_le_bytes(payload[4..12].try_into().unwrap()),
        index
    );
    let mut expected = [0u8; RING_PAYLOAD_BYTES_MAX];
    let length = stress_payload(index, &mut expected);
    assert_eq!(payload, &expected[..length]);
}

/// The child: creates the cnc, pushes `STRESS_ENTRIES` events while consuming as many
/// commands, checking each.
fn child_stress(dir: &Path) {
    let mut cnc = DataplaneCnc::create(dir, STRESS_RING_SLOTS).unwrap();
    let mut out = [0u8; RING_PAYLOAD_BYTES_MAX];
    let mut input = [0u8; RING_PAYLOAD_BYTES_MAX];
    let (mut pushed, mut popped) = (0u64, 0u64);
    let start = Instant::now();
    while pushed < STRESS_ENTRIES || popped < STRESS_ENTRIES {
        assert!(
            start.elapsed() < PEER_WAIT_MAX,
            "child gave up at {pushed}/{popped}"
        );
        let mut progress = false;
        if pushed < STRESS_ENTRIES {
            let length = stress_payload(pushed, &mut out);
            match cnc
                .events()
                .try_push(EVENT_KIND_STRESS, pushed, &out[..length])
            {
                Ok(()) => {
                    pushed += 1;
                    progress = true;
                }
                Err(RingError::Full { capacity }) => assert_eq!(capacity, 16),
                Err(error) => panic!("{error}"),
            }
        }
        if let Some(entry) = cnc.commands().try_pop(&mut input) {
            assert_eq!(entry.kind, COMMAND_KIND_STRESS);
            assert_eq!(entry.correlation_id, popped);
            check_stress_payload(popped, &input[..entry.length]);
            popped += 1;
            progress = true;
        }
        cnc.heartbeat(now_ms());
        if !progress {
            std::thread::yield_now();
        }
    }
}

fn open_when_ready(dir: &Path) -> ControlplaneCnc {
    let mut cnc = None;
    wait_for("the child's cnc file", || {
        match ControlplaneCnc::open(dir) {
            Ok(opened) => {
                cnc = Some(opened);
                true
            }
            Err(CncError::Missing { .. }) => false,
            Err(error) => panic!("{error}"),
        }
    });
    cnc.unwrap()
}

#[test]
fn two_processes_exchange_checksummed_entries_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let child = spawn_child("stress", dir.path());
    let child_pid = child.id();
    let mut cnc = open_when_ready(dir.path());
    assert_eq!(cnc.writer_pid(), child_pid);
    assert_eq!(cnc.commands().capacity(), u64::from(STRESS_RING_SLOTS));
    let mut out = [0u8; RING_PAYLOAD_BYTES_MAX];
    let mut input = [0u8; RING_PAYLOAD_BYTES_MAX];
    let (mut pushed, mut popped) = (0u64, 0u64);
    let start = Instant::now();
    while pushed < STRESS_ENTRIES || popped < STRESS_ENTRIES {
        assert!(
            start.elapsed() < PEER_WAIT_MAX,
            "parent gave up at {pushed}/{popped}"
        );
        let mut progress = false;
        if pushed < STRESS_ENTRIES {
            let length = stress_payload(pushed, &mut out);
            if cnc
                .commands()
                .try_push(COMMAND_KIND_STRESS, pushed, &out[..length])
                .is_ok()
            {
                pushed += 1;
                progress = true;
            }
        }
        if let Some(entry) = cnc.events().try_pop(&mut input) {
            assert_eq!(entry.kind, EVENT_KIND_STRESS);
            assert_eq!(entry.correlation_id, popped);
            check_stress_payload(popped, &input[..entry.length]);
            popped += 1;
            progress = true;
        }
        if !progress {
            std::thread::yield_now();
        }
    }
    assert_eq!(cnc.events().depth(), 0);
    wait_success(child);
    // The child is gone; the file stays, with a dead writer.
    assert!(!cnc.writer_alive(u64::MAX));
    assert!(!cnc.is_replaced());
}

#[test]
fn dead_writer_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let child = spawn_child("start_and_exit", dir.path());
    let child_pid = child.id();
    wait_success(child);
    let cnc = ControlplaneCnc::open(dir.path()).unwrap();
    assert_eq!(cnc.writer_pid(), child_pid);
    // A data plane that stops clears its heartbeat on the way out.
    assert_eq!(cnc.heartbeat_ms(), 0);
    assert!(!cnc.writer_alive(u64::MAX), "pid {child_pid} exited");
}

#[test]
fn a_zombie_writer_with_a_fresh_heartbeat_is_not_alive() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = spawn_child("start_and_die", dir.path());
    let child_pid = child.id();
    // Not reaped yet: the child stays a zombie, /proc/<pid> still exists.
    wait_for("the child to become a zombie", || {
        let stat = std::fs::read_to_string(format!("/proc/{child_pid}/stat")).unwrap();
        stat.rsplit_once(')').unwrap().1.split_whitespace().next() == Some("Z")
    });
    let cnc = ControlplaneCnc::open(dir.path()).unwrap();
    assert_eq!(cnc.writer_pid(), child_pid);
    assert!(
        cnc.heartbeat_ms() > now_ms(),
        "the heartbeat was left fresh"
    );
    assert!(!cnc.writer_alive(u64::MAX), "pid {child_pid} is a zombie");
    let status = child.wait().unwrap();
    assert!(!status.success());
}

#[test]
fn live_writer_with_stale_heartbeat_is_not_alive() {
    let dir = tempfile::tempdir().unwrap();
    let dataplane = DataplaneCnc::create(dir.path(), 4).unwrap();
    let controlplane = ControlplaneCnc::open(dir.path()).unwrap();
    assert_eq!(controlplane.writer_pid(), std::process::id());
    dataplane.heartbeat(now_ms());
    assert!(controlplane.writer_alive(3_600_000));
    dataplane.heartbeat(1);
    assert_eq!(controlplane.heartbeat_ms(), 1);
    assert!(!controlplane.writer_alive(3_600_000));
    // A heartbeat from the future (clock stepped back) counts as recent.
    dataplane.heartbeat(now_ms() + 3_600_000);
    assert!(controlplane.writer_alive(0));
}

#[test]
fn the_lease_starts_as_the_mode_says_and_the_control_plane_moves_it() {
    let dir = tempfile::tempdir().unwrap();
    let dataplane = DataplaneCnc::create(dir.path(), 4).unwrap();
    let controlplane = ControlplaneCnc::open(dir.path()).unwrap();
    assert_eq!(dataplane.lease_until_ns(), LEASE_FOREVER_NS, "static mode");
    assert_eq!(controlplane.lease_until_ns(), LEASE_FOREVER_NS);
    drop((dataplane, controlplane));
    let dataplane = DataplaneCnc::create_with_lease(dir.path(), 4, LEASE_EXPIRED_NS).unwrap();
    let controlplane = ControlplaneCnc::open(dir.path()).unwrap();
    assert_eq!(dataplane.lease_until_ns(), 0, "quorum mode: expired");
    let now = monotonic_ns();
    assert!(now > 0 && monotonic_ns() >= now, "monotonic");
    controlplane.set_lease_until_ns(now + 1_000_000_000);
    assert_eq!(dataplane.lease_until_ns(), now + 1_000_000_000);
    controlplane.set_lease_until_ns(0);
    assert_eq!(dataplane.lease_until_ns(), 0, "fenced at once");
    // Its own cache line, after the heartbeat's: the rings start after it.
    assert_eq!(precursor_shm::cnc::CNC_HEADER_BYTES, 192);
}

#[test]
fn replaced_file_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let first = DataplaneCnc::create(dir.path(), 4).unwrap();
    let controlplane = ControlplaneCnc::open(dir.path()).unwrap();
    assert!(!controlplane.is_replaced());
    assert!(!dir.path().join("cnc.tmp").exists());
    let start_ns = controlplane.writer_start_ns();
    assert!(start_ns > 0);
    let second = DataplaneCnc::create(dir.path(), 8).unwrap();
    assert!(controlplane.is_replaced());
    let mut reopened = ControlplaneCnc::open(dir.path()).unwrap();
    assert!(!reopened.is_replaced());
    assert!(reopened.writer_start_ns() >= start_ns);
    assert_eq!(reopened.commands().capacity(), 8);
    drop((first, second));
    std::fs::remove_file(dir.path().join("cnc")).unwrap();
    assert!(reopened.is_replaced(), "a removed file counts as replaced");
}

#[test]
fn missing_file_says_no_data_plane() {
    let dir = tempfile::tempdir().unwrap();
    let error = ControlplaneCnc::open(dir.path()).unwrap_err();
    assert!(matches!(error, CncError::Missing { ref path } if path == &dir.path().join("cnc")));
    let message = error.to_string();
    assert!(
        message.contains("no data plane has started here"),
        "{message}"
    );
    assert!(message.contains("running"), "{message}");
    let error = CountersReader::open(dir.path()).unwrap_err();
    assert!(matches!(error, CncError::Missing { .. }), "{error}");
}

fn write_at(path: &Path, offset: u64, bytes: &[u8]) {
    let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    file.write_all_at(bytes, offset).unwrap();
}

#[test]
fn other_layout_version_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let _dataplane = DataplaneCnc::create(dir.path(), 4).unwrap();
    assert_eq!(CNC_LAYOUT_VERSION, 2, "the lease line (layout 2)");
    write_at(&dir.path().join("cnc"), 8, &1u32.to_le_bytes());
    let error = ControlplaneCnc::open(dir.path()).unwrap_err();
    assert!(
        matches!(
            error,
            CncError::VersionMismatch {
                found: 1,
                expected: CNC_LAYOUT_VERSION
            }
        ),
        "{error}"
    );
    let message = error.to_string();
    assert!(
        message.contains("version 1") && message.contains("expects 2"),
        "{message}"
    );
    assert!(
        message.contains("restart them with matching binaries"),
        "{message}"
    );

    let _writer = CountersWriter::create(dir.path(), 4).unwrap();
    write_at(&dir.path().join("counters"), 8, &7u32.to_le_bytes());
    let error = CountersReader::open(dir.path()).unwrap_err();
    assert!(
        matches!(
            error,
            CncError::VersionMismatch {
                found: 7,
                expected: 1
            }
        ),
        "{error}"
    );
}

#[test]
fn corrupt_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cnc_path = dir.path().join("cnc");
    // The file outlives its writer; the writer must not hold it mapped while the test
    // truncates it (a store into a truncated shared mapping is SIGBUS).
    drop(DataplaneCnc::create(dir.path(), 4).unwrap());
    // Ring slots that are not a power of two.
    write_at(&cnc_path, 32, &3u32.to_le_bytes());
    let error = ControlplaneCnc::open(dir.path()).unwrap_err();
    assert!(
        matches!(error, CncError::Corrupt { ref reason } if reason.contains("ring slots")),
        "{error}"
    );
    // Ring slots so large the rings pass the end of the file.
    write_at(&cnc_path, 32, &(1u32 << 16).to_le_bytes());
    assert!(matches!(
        ControlplaneCnc::open(dir.path()),
        Err(CncError::Corrupt { .. })
    ));
    // Another magic.
    write_at(&cnc_path, 0, b"NOTACNC!");
    let error = ControlplaneCnc::open(dir.path()).unwrap_err();
    assert!(
        matches!(error, CncError::Corrupt { ref reason } if reason.contains("magic")),
        "{error}"
    );
    assert!(error.to_string().contains("corrupt"), "{error}");
    // Too short, and empty.
    std::fs::write(&cnc_path, [0u8; 16]).unwrap();
    assert!(matches!(
        ControlplaneCnc::open(dir.path()),
        Err(CncError::Corrupt { .. })
    ));
    std::fs::write(&cnc_path, []).unwrap();
    assert!(matches!(
        ControlplaneCnc::open(dir.path()),
        Err(CncError::Corrupt { .. })
    ));
    // Counters with a bad magic.
    let _writer = CountersWriter::create(dir.path(), 4).unwrap();
    write_at(&dir.path().join("counters"), 0, &[0u8; 8]);
    assert!(matches!(
        CountersReader::open(dir.path()),
        Err(CncError::Corrupt { .. })
    ));
}

#[test]
fn bad_sizes_are_refused_at_creation() {
    let dir = tempfile::tempdir().unwrap();
    for slots in [0, 1, 3, 1000, 1 << 17] {
        assert!(DataplaneCnc::create(dir.path(), slots).is_err(), "{slots}");
    }
    assert!(!dir.path().join("cnc").exists());
    assert!(CountersWriter::create(dir.path(), 0).is_err());
    assert!(CountersWriter::create(dir.path(), (1 << 20) + 1).is_err());
}

#[test]
fn ring_payload_holds_any_command() {
    const { assert!(RING_PAYLOAD_BYTES_MAX >= COMMAND_PAYLOAD_BYTES_MAX) };
    assert_eq!(
        RING_PAYLOAD_BYTES_MAX, COMMAND_PAYLOAD_BYTES_MAX,
        "no slot bytes wasted"
    );
}

#[test]
fn command_and_its_one_event_cross_the_cnc() {
    let dir = tempfile::tempdir().unwrap();
    let mut dataplane = DataplaneCnc::create(dir.path(), 4).unwrap();
    let mut controlplane = ControlplaneCnc::open(dir.path()).unwrap();
    let mut buffer = [0u8; RING_PAYLOAD_BYTES_MAX];
    let create = RingCommand::CreateTopic {
        name: "orders",
        partitions: 3,
        retention_ms: 0,
        retention_bytes: 1 << 30,
        replication: precursor_protocol::command::TopicReplication::default(),
    };
    let length = create.encode(&mut buffer);
    controlplane
        .commands()
        .try_push(create.kind(), 41, &buffer[..length])
        .unwrap();
    let length = RingCommand::Ping.encode(&mut buffer);
    controlplane
        .commands()
        .try_push(command::KIND_PING, 42, &buffer[..length])
        .unwrap();
    assert_eq!(dataplane.commands().depth(), 2);

    let mut input = [0u8; RING_PAYLOAD_BYTES_MAX];
    let mut output = [0u8; RING_PAYLOAD_BYTES_MAX];
    while let Some(entry) = dataplane.commands().try_pop(&mut input) {
        let event = match RingCommand::decode(entry.kind, &input[..entry.length]).unwrap() {
            RingCommand::CreateTopic {
                name, partitions, ..
            } => {
                assert_eq!((name, partitions), ("orders", 3));
                Event::TopicCreated {
                    topic_id: 9,
                    partitions,
                }
            }
            RingCommand::Ping => Event::Done,
            other => panic!("{other:?}"),
        };
        let length = event.encode(&mut output);
        dataplane
            .events()
            .try_push(event.kind(), entry.correlation_id, &output[..length])
            .unwrap();
    }
    let failed = Event::Failed {
        code: ErrorCode::Busy,
        message: "later",
    };
    let length = failed.encode(&mut output);
    dataplane
        .events()
        .try_push(failed.kind(), 43, &output[..length])
        .unwrap();

    let mut answers = Vec::new();
    while let Some(entry) = controlplane.events().try_pop(&mut input) {
        let event = Event::decode(entry.kind, &input[..entry.length]).unwrap();
        answers.push(format!("{} {event:?}", entry.correlation_id));
    }
    assert_eq!(
        answers,
        [
            "41 TopicCreated { topic_id: 9, partitions: 3 }",
            "42 Done",
            "43 Failed { code: Busy, message: \"later\" }"
        ]
    );
}

#[test]
fn hot_paths_do_not_allocate() {
    let dir = tempfile::tempdir().unwrap();
    let mut dataplane = DataplaneCnc::create(dir.path(), 4).unwrap();
    let mut controlplane = ControlplaneCnc::open(dir.path()).unwrap();
    let mut writer = CountersWriter::create(dir.path(), 64).unwrap();
    let counter = writer.allocate(kind::PRODUCE_REQUESTS, "lcore=1").unwrap();
    let histogram = writer
        .allocate_histogram(kind::DURABLE_ACK_WAIT, "lcore=1")
        .unwrap();
    let mut buffer = [0u8; RING_PAYLOAD_BYTES_MAX];
    let before = allocations_on_this_thread();
    for round in 0..100u64 {
        controlplane
            .commands()
            .try_push(1, round, &buffer[..100])
            .unwrap();
        let entry = dataplane.commands().try_pop(&mut buffer).unwrap();
        dataplane
            .events()
            .try_push(2, entry.correlation_id, &buffer[..entry.length])
            .unwrap();
        controlplane.events().try_pop(&mut buffer).unwrap();
        dataplane.heartbeat(round);
        writer.add(counter, 1);
        writer.set(counter, round);
        histogram.record(&writer, round * 1000);
    }
    assert_eq!(allocations_on_this_thread(), before);
}

#[test]
fn counters_allocate_set_read_free_reuse() {
    let dir = tempfile::tempdir().unwrap();
    let mut writer = CountersWriter::create(dir.path(), 3).unwrap();
    let rx = writer.allocate(kind::PORT_RX_PACKETS, "port=0").unwrap();
    let messages = writer
        .allocate(kind::PARTITION_MESSAGES, "topic=orders,partition=3")
        .unwrap();
    let label_max = "l".repeat(120);
    let long = writer.allocate(kind::BAD_FRAMES, &label_max).unwrap();
    assert_eq!(
        (rx, messages, long),
        (CounterId(0), CounterId(1), CounterId(2))
    );
    assert_eq!(
        writer.allocate(kind::FETCH_BYTES, "x"),
        Err(AllocateError::Full {
            needed: 1,
            counters_max: 3
        })
    );
    writer.add(rx, 5);
    writer.add(rx, 7);
    writer.set(messages, 1000);
    writer.set(messages, 999);
    assert_eq!(writer.value(rx), 12);

    let reader = CountersReader::open(dir.path()).unwrap();
    assert_eq!(reader.counters_max(), 3);
    assert_eq!(reader.writer_pid(), std::process::id());
    assert!(reader.writer_exists());
    assert!(!reader.is_replaced());
    let mut seen = Vec::new();
    reader.for_each(|counter| {
        seen.push((
            counter.id,
            counter.kind,
            counter.label.to_string(),
            counter.value,
        ))
    });
    assert_eq!(
        seen,
        [
            (rx, kind::PORT_RX_PACKETS, "port=0".to_string(), 12),
            (
                messages,
                kind::PARTITION_MESSAGES,
                "topic=orders,partition=3".to_string(),
                999
            ),
            (long, kind::BAD_FRAMES, label_max.clone(), 0),
        ]
    );

    writer.free(messages);
    let mut labels = Vec::new();
    reader.for_each(|counter| labels.push(counter.label.to_string()));
    assert_eq!(labels, ["port=0", label_max.as_str()]);
    // The freed slot is reused, its value starting again at 0.
    let reused = writer.allocate(kind::FETCH_BYTES, "lcore=1").unwrap();
    assert_eq!(reused, messages);
    assert_eq!(reader.value(reused), 0);
    let mut seen = Vec::new();
    reader.for_each(|counter| seen.push((counter.kind, counter.label.to_string(), counter.value)));
    assert_eq!(seen[1], (kind::FETCH_BYTES, "lcore=1".to_string(), 0));
    assert_eq!(seen.len(), 3);
}

#[test]
fn long_labels_are_refused_not_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let mut writer = CountersWriter::create(dir.path(), 40).unwrap();
    let label = "t".repeat(121);
    assert_eq!(
        writer.allocate(kind::PARTITION_BYTES, &label),
        Err(AllocateError::LabelTooLong { label_bytes: 121 })
    );
    assert_eq!(
        writer.allocate_histogram(kind::DURABLE_ACK_WAIT, &label),
        Err(AllocateError::LabelTooLong { label_bytes: 121 })
    );
    let message = AllocateError::LabelTooLong { label_bytes: 121 }.to_string();
    assert!(
        message.contains("121") && message.contains("120"),
        "{message}"
    );
    // Multi-byte UTF-8 counts in bytes: 60 two-byte characters fit, 61 do not.
    assert!(writer
        .allocate(kind::PARTITION_BYTES, &"é".repeat(60))
        .is_ok());
    assert!(writer
        .allocate(kind::PARTITION_BYTES, &"é".repeat(61))
        .is_err());
    let reader = CountersReader::open(dir.path()).unwrap();
    let mut labels = Vec::new();
    reader.for_each(|counter| labels.push(counter.label.to_string()));
    assert_eq!(labels, ["é".repeat(60)]);
}

#[test]
fn histograms_bucket_edge_values_and_group_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut writer = CountersWriter::create(dir.path(), 2 * HISTOGRAM_COUNTERS as u32 + 1).unwrap();
    let plain = writer.allocate(kind::DURABLE_ACKS, "lcore=1").unwrap();
    let wait = writer
        .allocate_histogram(kind::DURABLE_ACK_WAIT, "lcore=1")
        .unwrap();
    let sync = writer
        .allocate_histogram(kind::FLUSHER_FDATASYNC, "flusher=0")
        .unwrap();
    assert_eq!(
        writer.allocate_histogram(kind::FLUSHER_FDATASYNC, "flusher=1"),
        Err(AllocateError::Full {
            needed: HISTOGRAM_COUNTERS as u32,
            counters_max: 61
        })
    );
    let values = [
        0,
        1,
        1024,
        1025,
        2048,
        1 << 20,
        1 << 36,
        (1 << 36) + 1,
        u64::MAX / 2,
    ];
    let mut expected = [0u64; HISTOGRAM_BUCKETS];
    let mut sum = 0u64;
    for nanos in values {
        wait.record(&writer, nanos);
        expected[histogram_bucket(nanos)] += 1;
        sum = sum.wrapping_add(nanos);
    }
    assert_eq!(&expected[..3], &[3, 2, 0]);
    assert_eq!(expected[HISTOGRAM_BUCKETS - 2], 1);
    assert_eq!(expected[HISTOGRAM_BUCKETS - 1], 2);
    sync.record(&writer, 5_000_000);

    let reader = CountersReader::open(dir.path()).unwrap();
    let mut seen = Vec::new();
    reader.histograms(|histogram| {
        assert_eq!(histogram.bounds_ns, &HISTOGRAM_BOUNDS_NS);
        seen.push((
            histogram.id,
            histogram.kind,
            histogram.label.to_string(),
            histogram.counts,
            histogram.sum_ns,
            histogram.count,
        ));
    });
    let mut sync_counts = [0u64; HISTOGRAM_BUCKETS];
    sync_counts[histogram_bucket(5_000_000)] = 1;
    assert_eq!(histogram_bucket(5_000_000), 13); // 2^22 < 5 ms <= 2^23
    assert_eq!(
        seen,
        [
            (
                wait,
                kind::DURABLE_ACK_WAIT,
                "lcore=1".to_string(),
                expected,
                sum,
                values.len() as u64
            ),
            (
                sync,
                kind::FLUSHER_FDATASYNC,
                "flusher=0".to_string(),
                sync_counts,
                5_000_000,
                1
            ),
        ]
    );
    // Histogram slots do not show as plain counters.
    let mut plain_seen = Vec::new();
    reader.for_each(|counter| plain_seen.push(counter.id));
    assert_eq!(plain_seen, [plain]);

    writer.free_histogram(wait);
    let mut kinds = Vec::new();
    reader.histograms(|histogram| kinds.push(histogram.kind));
    assert_eq!(kinds, [kind::FLUSHER_FDATASYNC]);
    let again = writer
        .allocate_histogram(kind::DURABLE_ACK_WAIT, "lcore=2")
        .unwrap();
    assert_eq!(again, wait);
    reader.histograms(|histogram| {
        if histogram.id == again {
            assert_eq!((histogram.count, histogram.sum_ns), (0, 0));
            assert_eq!(histogram.counts, [0; HISTOGRAM_BUCKETS]);
        }
    });
}

/// The child: allocates counters, writes them, then waits for the parent's `read` file.
fn child_counters(dir: &Path) {
    let mut writer = CountersWriter::create(dir, 64).unwrap();
    let rx = writer.allocate(kind::PORT_RX_PACKETS, "port=0").unwrap();
    let end = writer
        .allocate(kind::PARTITION_END_OFFSET, "topic=orders,partition=3")
        .unwrap();
    let wait = writer
        .allocate_histogram(kind::DURABLE_ACK_WAIT, "lcore=1")
        .unwrap();
    for _ in 0..1000 {
        writer.add(rx, 3);
    }
    writer.set(end, 123_456);
    wait.record(&writer, 3000);
    wait.record(&writer, 3000);
    std::fs::write(dir.join("written"), b"").unwrap();
    wait_for("the parent's read", || dir.join("read").exists());
}

#[test]
fn reader_sees_values_written_by_another_process() {
    let dir = tempfile::tempdir().unwrap();
    let child = spawn_child("counters", dir.path());
    wait_for("the child's counters", || {
        dir.path().join("written").exists()
    });
    let reader = CountersReader::open(dir.path()).unwrap();
    assert_eq!(reader.writer_pid(), child.id());
    assert!(reader.writer_exists());
    let mut seen = Vec::new();
    reader.for_each(|counter| seen.push((counter.kind, counter.label.to_string(), counter.value)));
    assert_eq!(
        seen,
        [
            (kind::PORT_RX_PACKETS, "port=0".to_string(), 3000),
            (
                kind::PARTITION_END_OFFSET,
                "topic=orders,partition=3".to_string(),
                123_456
            ),
        ]
    );
    let mut histograms = 0;
    reader.histograms(|histogram| {
        histograms += 1;
        assert_eq!(
            (histogram.kind, histogram.label),
            (kind::DURABLE_ACK_WAIT, "lcore=1")
        );
        assert_eq!((histogram.count, histogram.sum_ns), (2, 6000));
        assert_eq!(histogram.counts[histogram_bucket(3000)], 2);
        assert_eq!(histogram.counts.iter().sum::<u64>(), 2);
    });
    assert_eq!(histograms, 1);
    std::fs::write(dir.path().join("read"), b"").unwrap();
    wait_success(child);
    assert!(!reader.writer_exists());
    assert_eq!(
        reader.value(CounterId(0)),
        3000,
        "values outlive the writer"
    );
}

#[test]
fn value_if_reads_a_slot_only_while_it_holds_the_counter_looked_up() {
    let dir = tempfile::tempdir().unwrap();
    let mut writer = CountersWriter::create(dir.path(), 4).unwrap();
    let label = "topic=orders,partition=0";
    let high_watermark = writer
        .allocate(kind::PARTITION_HIGH_WATERMARK, label)
        .unwrap();
    writer.set(high_watermark, 42);
    let reader = CountersReader::open(dir.path()).unwrap();
    assert_eq!(
        reader.value_if(high_watermark, kind::PARTITION_HIGH_WATERMARK, label),
        Some(42)
    );
    assert_eq!(
        reader.value_if(high_watermark, kind::PARTITION_LEADER, label),
        None,
        "another kind"
    );
    assert_eq!(
        reader.value_if(
            high_watermark,
            kind::PARTITION_HIGH_WATERMARK,
            "topic=orders,partition=1"
        ),
        None,
        "another label"
    );
    assert_eq!(
        reader.value_if(CounterId(99), kind::PARTITION_HIGH_WATERMARK, label),
        None,
        "beyond the file"
    );
    // Freed, then given to another counter: no longer read as the old one.
    writer.free(high_watermark);
    assert_eq!(
        reader.value_if(high_watermark, kind::PARTITION_HIGH_WATERMARK, label),
        None
    );
    let bytes = writer.allocate(kind::PARTITION_BYTES, label).unwrap();
    assert_eq!(bytes, high_watermark, "the slot is reused");
    writer.set(bytes, 7);
    assert_eq!(
        reader.value_if(high_watermark, kind::PARTITION_HIGH_WATERMARK, label),
        None
    );
    assert_eq!(
        reader.value_if(bytes, kind::PARTITION_BYTES, label),
        Some(7)
    );
}

#[test]
fn counters_fill_in_order_reuse_freed_slots_and_readers_scan_only_what_is_used() {
    let dir = tempfile::tempdir().unwrap();
    const SLOTS: u32 = 1 << 18;
    let mut writer = CountersWriter::create(dir.path(), SLOTS).unwrap();
    let reader = CountersReader::open(dir.path()).unwrap();
    let mut seen = 0;
    reader.for_each(|_| seen += 1);
    assert_eq!(seen, 0, "a fresh file lists nothing");
    // Ten thousand partitions' worth, allocated one after another: in order, no gaps.
    // A histogram first (it publishes its first slot last), then plain counters.
    let first_histogram = writer.allocate_histogram(9, "h=0").unwrap();
    assert_eq!(first_histogram.0 .0, 0);
    let base = HISTOGRAM_COUNTERS as u32;
    let ids: Vec<CounterId> = (0..160_000)
        .map(|i| {
            writer
                .allocate(7, &format!("topic=t,partition={i}"))
                .unwrap()
        })
        .collect();
    assert!(ids
        .iter()
        .enumerate()
        .all(|(i, id)| id.0 == base + i as u32));
    writer.free(ids[17]);
    writer.free(ids[99_999]);
    assert_eq!(writer.allocate(8, "again=a").unwrap(), ids[17]);
    assert_eq!(writer.allocate(8, "again=b").unwrap(), ids[99_999]);
    assert_eq!(
        writer.allocate(8, "again=c").unwrap(),
        CounterId(base + 160_000)
    );
    // A histogram needs a run: it goes past the end of what is used.
    let histogram = writer.allocate_histogram(9, "h=1").unwrap();
    assert_eq!(histogram.0 .0, base + 160_001);
    let mut labels = 0;
    let mut highest = 0;
    reader.for_each(|counter| {
        labels += 1;
        highest = highest.max(counter.id.0);
    });
    assert_eq!(labels, 160_001, "every plain counter, once");
    assert_eq!(highest, base + 160_000);
    let mut histograms = 0;
    reader.histograms(|_| histograms += 1);
    assert_eq!(histograms, 2);
}
