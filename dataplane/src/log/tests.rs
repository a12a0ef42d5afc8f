//! Partition log tests on real files: the data directory in a tempdir, memory files on
//! hugetlbfs when mounted, else /dev/shm. No timing is asserted: waits are liveness bounds.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use precursor_protocol::compression::Compression;
use precursor_protocol::record_batch::{
    set_base_offset, RecordBatchBuilder, RecordBatchHeader, NO_PRODUCER_EPOCH, NO_PRODUCER_ID,
    NO_SEQUENCE,
};

use super::*;

// ---- a counting allocator: proves append and read allocate nothing ----

#[global_allocator]
static ALLOCATOR: precursor_ffi::alloc::CountingAllocator = precursor_ffi::alloc::CountingAllocator;

fn allocations() -> u64 {
    precursor_ffi::alloc::allocations_on_this_thread()
}

// ---- helpers ----

const WAIT_MAX: Duration = Duration::from_secs(60);

struct Fixture {
    _data: tempfile::TempDir,
    _memory: tempfile::TempDir,
    _small: tempfile::TempDir,
    cfg: LogConfig,
}

fn fixture() -> Fixture {
    let data = tempfile::tempdir().unwrap();
    fixture_in(data)
}

fn fixture_in(data: tempfile::TempDir) -> Fixture {
    let memory = tempfile::tempdir_in(precursor_shm::memory_dir_default())
        .or_else(|_| tempfile::tempdir_in("/dev/shm"))
        .unwrap();
    let mut cfg = LogConfig::new(data.path().to_path_buf());
    cfg.memory_dir = memory.path().to_path_buf();
    // Where segments go when the hugepages run out (a temporary directory, not the
    // default /dev/shm/<name>, so that nothing outlives the test).
    let small = tempfile::tempdir_in("/dev/shm").unwrap();
    cfg.small_page_dir = Some(small.path().to_path_buf());
    cfg.segment_bytes = 8192;
    cfg.index_interval_bytes = 512;
    cfg.flush_interval_ms = 2;
    cfg.flush_messages = 1000;
    cfg.batch_bytes_max = 4096;
    cfg.retention_ms = None;
    cfg.producers_per_partition_max = 16;
    Fixture {
        _data: data,
        _memory: memory,
        _small: small,
        cfg,
    }
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT_MAX;
    while !done() {
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// Batch number `i`: 1 + i % 3 records, values derived from `i`, timestamps `ts`.
fn batch(i: u64, ts: i64) -> Vec<u8> {
    producer_batch(i, ts, NO_PRODUCER_ID, NO_PRODUCER_EPOCH, NO_SEQUENCE)
}

fn producer_batch(i: u64, ts: i64, producer_id: i64, epoch: i16, sequence: i32) -> Vec<u8> {
    let mut builder = RecordBatchBuilder::new(Compression::None, producer_id, epoch, sequence, ts);
    for r in 0..(1 + i % 3) {
        let value = format!("batch {i} record {r} {}", "x".repeat((i % 50) as usize));
        builder.append(ts, Some(&i.to_be_bytes()), value.as_bytes(), &[]);
    }
    builder.finish()
}

fn stored(mut batch: Vec<u8>, base_offset: u64) -> Vec<u8> {
    set_base_offset(&mut batch, base_offset as i64);
    batch
}

/// Appends, riding out `SegmentNotReady` with `maintain` (as the lcore's drain timer).
fn append(log: &mut PartitionLog, batch: &[u8], now_ms: i64) -> Appended {
    let deadline = Instant::now() + WAIT_MAX;
    loop {
        match log.append(batch, now_ms) {
            Err(AppendError::SegmentNotReady) => {
                assert!(Instant::now() < deadline, "no spare segment");
                log.maintain(now_ms);
                std::thread::sleep(Duration::from_micros(100));
            }
            result => return result.unwrap(),
        }
    }
}

/// Reads the batch holding `offset` and returns its bytes.
fn read_batch(log: &PartitionLog, offset: u64) -> Vec<u8> {
    let mut out = vec![0u8; 8192];
    let n = log.read(offset, 1, false, &mut out).unwrap();
    assert!(n > 0, "nothing at offset {offset}");
    let header = RecordBatchHeader::parse(&out[..n]).unwrap();
    assert_eq!(
        header.total_bytes(),
        n,
        "max_bytes 1 still returns exactly one batch"
    );
    out.truncate(n);
    out
}

fn settle(log: &mut PartitionLog) {
    // Everything durable, every sealed segment read from its file.
    log.request_durable(log.log_end_offset().saturating_sub(1));
    wait_until("durable", || {
        log.maintain(0);
        log.durable_offset() == log.log_end_offset()
    });
}

fn log_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log") && !p.ends_with("spare.log"))
        .collect();
    files.sort();
    files
}

// ---- tests ----

#[test]
fn two_prepared_spares_take_two_rolls_without_the_flusher() {
    let f = fixture();
    let (flusher, thread) = Flusher::spawn(&f.cfg).unwrap();
    let mut log = PartitionLog::open(&f.cfg, "rolls", 0, &flusher).unwrap();
    // Spares are lazy: an idle partition has none (one segment of memory) ...
    std::thread::sleep(Duration::from_millis(20));
    log.maintain(0);
    assert_eq!(log.spares_ready(), 0, "an idle partition holds no spare");
    // ... and two from the moment its active segment is half full.
    let mut i = 0u64;
    while log.size_bytes() * 2 < f.cfg.segment_bytes {
        append(&mut log, &batch(i, 0), 0);
        i += 1;
    }
    wait_until("both spares", || {
        log.maintain(0);
        log.spares_ready() == flusher::SPARE_SEGMENTS
    });
    // Two segments' worth of appends and no `maintain`: neither roll waits for the flusher.
    while log.segment_count() <= flusher::SPARE_SEGMENTS {
        if let Err(error) = log.append(&batch(i, 0), 0) {
            panic!("append {i} (segment {}): {error}", log.segment_count());
        }
        i += 1;
    }
    assert_eq!(log.spares_ready(), 0);
    // The flusher replaces the last one at once (a roll took it), the second when the
    // new segment is half full.
    wait_until("a spare replaced", || {
        log.maintain(0);
        log.spares_ready() == 1
    });
    settle(&mut log);
    assert_eq!(log_files(log.dir()).len(), log.segment_count());
    drop(log);
    flusher.shutdown();
    thread.join().unwrap();
}

#[test]
fn a_full_segment_without_a_spare_asks_every_batch_to_retry() {
    let f = fixture();
    let (flusher, thread) = Flusher::spawn(&f.cfg).unwrap();
    let mut log = PartitionLog::open(&f.cfg, "nospare", 0, &flusher).unwrap();
    // No flusher: the spares it sent before it stopped are the last.
    flusher.shutdown();
    thread.join().unwrap();
    log.maintain(0);
    let producer_id = 7;
    let records = |i: u64| 1 + (i % 3) as i32;
    let (mut i, mut sequence) = (0u64, 0i32);
    let mut last_appended = None;
    loop {
        assert!(i < 100_000, "the segments never filled");
        let b = producer_batch(i, 0, producer_id, 0, sequence);
        match log.append(&b, 0) {
            Ok(appended) => assert!(!appended.duplicate),
            Err(AppendError::SegmentNotReady) => break,
            Err(error) => panic!("{error}"),
        }
        sequence += records(i);
        last_appended = Some(b);
        i += 1;
    }
    // The batch a producer pipelined behind the refused one (same size, next sequence) is
    // told to retry as well, not that it is out of order.
    let behind = producer_batch(i, 0, producer_id, 0, sequence + records(i));
    assert_eq!(log.append(&behind, 0), Err(AppendError::SegmentNotReady));
    // A retransmission of what was appended is still acknowledged as a duplicate.
    let last = last_appended.expect("some batches fit");
    assert!(log.append(&last, 0).unwrap().duplicate);
    drop(log);
}

#[test]
fn round_trip_across_rolls_and_index_at_every_offset() {
    let f = fixture();
    let (flusher, thread) = Flusher::spawn(&f.cfg).unwrap();
    let mut log = PartitionLog::open(&f.cfg, "orders", 3, &flusher).unwrap();
    let mut expected = Vec::new(); // (base, last, stored bytes)
    for i in 0..400u64 {
        let b = batch(i, 1000 + i as i64);
        let appended = append(&mut log, &b, 0);
        assert!(!appended.duplicate);
        assert_eq!(
            appended.base_offset,
            expected.last().map_or(0, |e: &(u64, u64, Vec<u8>)| e.1 + 1)
        );
        expected.push((
            appended.base_offset,
            appended.last_offset,
            stored(b, appended.base_offset),
        ));
        if i % 7 == 0 {
            log.maintain(0);
        }
    }
    let end = expected.last().unwrap().1 + 1;
    assert_eq!(log.log_end_offset(), end);
    assert!(log.segment_count() > 5, "{} segments", log.segment_count());
    let check = |log: &PartitionLog| {
        for (base, last, bytes) in &expected {
            for offset in *base..=*last {
                assert_eq!(&read_batch(log, offset), bytes, "offset {offset}");
            }
        }
        assert_eq!(log.read(end, 100, false, &mut [0; 100]), Ok(0));
        assert_eq!(
            log.read(end + 1, 100, false, &mut [0; 100]),
            Err(ReadError::OffsetOutOfRange {
                offset: end + 1,
                start: 0,
                end
            })
        );
        // Several batches per read, within one segment, within max_bytes.
        let mut out = vec![0u8; 8192];
        let n = log.read(0, 2000, false, &mut out).unwrap();
        assert!(n <= 2000 && n > expected[0].2.len());
    };
    check(&log); // from memory (some sealed segments may not be persisted yet)
    settle(&mut log);
    check(&log); // sealed segments from their files
    assert_eq!(log_files(log.dir()).len(), log.segment_count());
    // Sealed segments have Kafka index files.
    let first = log_files(log.dir())[0].clone();
    let index = std::fs::read(first.with_extension("index")).unwrap();
    assert_eq!(index.len() % 8, 0);
    assert!(!index.is_empty());
    assert_eq!(
        std::fs::read(first.with_extension("timeindex"))
            .unwrap()
            .len()
            % 12,
        0
    );
    let segments = log.segment_count();
    drop(log);
    let log = PartitionLog::open(&f.cfg, "orders", 3, &flusher).unwrap();
    assert_eq!(log.segment_count(), segments);
    assert_eq!(log.log_end_offset(), end);
    assert_eq!(log.durable_offset(), end);
    check(&log);
    drop(log);
    flusher.shutdown();
    thread.join().unwrap();
}

#[test]
fn append_and_read_allocate_nothing() {
    let f = fixture();
    let (flusher, thread) = Flusher::spawn(&f.cfg).unwrap();
    let mut log = PartitionLog::open(&f.cfg, "alloc", 0, &flusher).unwrap();
    let mut sequences = [0i32; 4];
    let batches: Vec<Vec<u8>> = (0..300u64)
        .map(|i| {
            let producer = (i % 4) as usize;
            let sequence = sequences[producer];
            sequences[producer] += 1 + (i % 3) as i32;
            producer_batch(i, 5, 1 + producer as i64, 0, sequence)
        })
        .collect();
    let mut out = vec![0u8; 8192];
    let before = allocations();
    drop(std::hint::black_box(vec![1u8; 10]));
    assert!(allocations() > before, "the counting allocator counts");
    let mut rolls = 0;
    for b in &batches {
        let result = loop {
            let before = allocations();
            let result = log.append(b, 0);
            let read = log.read(log.log_start_offset(), 4096, false, &mut out);
            assert_eq!(allocations(), before, "append or read allocated");
            read.unwrap();
            if result != Err(AppendError::SegmentNotReady) {
                break result;
            }
            // Spares are lazy: the flusher may not have made the first one yet.
            wait_until("spare", || {
                log.maintain(0);
                log.spares_ready() > 0
            });
        };
        match result {
            Ok(appended) => assert!(!appended.duplicate),
            Err(error) => panic!("{error}"),
        }
        if log.segment_count() > rolls + 1 {
            rolls = log.segment_count() - 1;
            // Give the flusher time to prepare the next spare, off the measured path.
            wait_until("spare", || {
                log.maintain(0);
                log.spares_ready() > 0
            });
        }
    }
    assert!(rolls >= 3, "{rolls} rolls");
    drop(log);
    flusher.shutdown();
    thread.join().unwrap();
}

/// Opens the log of `fixture`, appends `count` batches, makes them durable, closes it;
/// returns the stored bytes of each batch.
fn build_log(f: &Fixture, flusher: &FlusherHandle, topic: &str, count: u64) -> Vec<(u64, Vec<u8>)> {
    let mut log = PartitionLog::open(&f.cfg, topic, 0, flusher).unwrap();
    let mut out = Vec::new();
    for i in 0..count {
        let b = batch(i, i as i64);
        let appended = append(&mut log, &b, 0);
        out.push((appended.base_offset, stored(b, appended.base_offset)));
    }
    settle(&mut log);
    out
}

#[test]
fn recovery_truncates_torn_or_corrupt_tail() {
    let f = fixture();
    let (flusher, thread) = Flusher::spawn(&f.cfg).unwrap();
    let batches = build_log(&f, &flusher, "torn", 6); // fits one segment
    let dir = f.cfg.data_dir.join("torn-0");
    let tail = log_files(&dir).pop().unwrap();
    let full = std::fs::read(&tail).unwrap();
    let (last_base, last_bytes) = batches.last().unwrap().clone();
    let prefix = full.len() - last_bytes.len();
    assert_eq!(&full[prefix..], &last_bytes[..]);
    let check_prefix = |log: &PartitionLog| {
        for (base, bytes) in &batches[..batches.len() - 1] {
            assert_eq!(&read_batch(log, *base), bytes);
        }
    };
    // Torn at every byte of the last batch: it is gone whole, the rest intact.
    for cut in 0..last_bytes.len() {
        std::fs::write(&tail, &full[..prefix + cut]).unwrap();
        let log = PartitionLog::open(&f.cfg, "torn", 0, &flusher).unwrap();
        assert_eq!(log.log_end_offset(), last_base, "cut at {cut}");
        assert_eq!(std::fs::metadata(&tail).unwrap().len() as usize, prefix);
        check_prefix(&log);
    }
    // A flipped byte anywhere in the last batch: gone, unless the byte is in the one field
    // neither the CRC nor recovery checks (partition_leader_epoch, bytes 12..16).
    for position in 0..last_bytes.len() {
        let mut corrupt = full.clone();
        corrupt[prefix + position] ^= 0x40;
        std::fs::write(&tail, &corrupt).unwrap();
        let log = PartitionLog::open(&f.cfg, "torn", 0, &flusher).unwrap();
        if (12..16).contains(&position) {
            assert!(log.log_end_offset() > last_base, "flip at {position}");
        } else {
            assert_eq!(log.log_end_offset(), last_base, "flip at {position}");
        }
        check_prefix(&log);
    }
    // The intact file recovers whole.
    std::fs::write(&tail, &full).unwrap();
    let log = PartitionLog::open(&f.cfg, "torn", 0, &flusher).unwrap();
    assert_eq!(&read_batch(&log, last_base), &last_bytes);
    drop(log);
    flusher.shutdown();
    thread.join().unwrap();
}

#[test]
fn idempotent_producer_paths_and_recovered_state() {
    let f = fixture();
    let (flusher, thread) = Flusher::spawn(&f.cfg).unwrap();
    let mut log = PartitionLog::open(&f.cfg, "idem", 1, &flusher).unwrap();
    let b = |seq: i32, epoch: i16| producer_batch(seq as u64 * 3, 0, 77, epoch, seq);
    // Batch i has 1 + (3 seq) % 3 = 1 record: sequence numbers advance by one.
    let mut firsts = Vec::new();
    for seq in 0..8 {
        firsts.push(append(&mut log, &b(seq, 0), 0));
    }
    let dup = log.append(&b(6, 0), 0).unwrap();
    assert_eq!(
        dup,
        Appended {
            duplicate: true,
            ..firsts[6]
        }
    );
    assert_eq!(log.append(&b(1, 0), 0), Err(AppendError::DuplicateSequence));
    assert_eq!(
        log.append(&b(10, 0), 0),
        Err(AppendError::OutOfOrderSequence {
            expected: 8,
            found: 10
        })
    );
    let end = log.log_end_offset();
    settle(&mut log);
    drop(log);
    // After reopening, the retransmission is still recognised.
    let mut log = PartitionLog::open(&f.cfg, "idem", 1, &flusher).unwrap();
    assert_eq!(log.log_end_offset(), end);
    assert_eq!(
        log.append(&b(7, 0), 0).unwrap(),
        Appended {
            duplicate: true,
            ..firsts[7]
        }
    );
    assert!(!log.append(&b(8, 0), 0).unwrap().duplicate);
    // A new epoch fences the old one.
    assert!(!log.append(&b(0, 1), 0).unwrap().duplicate);
    assert_eq!(
        log.append(&b(9, 0), 0),
        Err(AppendError::InvalidProducerEpoch)
    );
    // Garbage and oversized batches.
    let mut bad = b(1, 1);
    let last = bad.len() - 1;
    bad[last] ^= 1;
    assert!(matches!(log.append(&bad, 0), Err(AppendError::Corrupt(_))));
    assert!(matches!(
        log.append(&vec![0u8; 5000], 0),
        Err(AppendError::TooLarge {
            bytes: 5000,
            max: 4096
        })
    ));
    drop(log);
    flusher.shutdown();
    thread.join().unwrap();
}

#[test]
fn retention_by_size_and_by_time() {
    let mut f = fixture();
    f.cfg.retention_bytes = Some(20_000);
    let (flusher, thread) = Flusher::spawn(&f.cfg).unwrap();
    let mut log = PartitionLog::open(&f.cfg, "retained", 0, &flusher).unwrap();
    for i in 0..300u64 {
        append(&mut log, &batch(i, 1_000 + i as i64), 0);
    }
    settle(&mut log);
    wait_until("retention by size", || {
        log.maintain(0);
        log.size_bytes() < 20_000 + 8192 && log_files(log.dir()).len() == log.segment_count()
    });
    assert!(log.size_bytes() >= 20_000);
    assert!(log.log_start_offset() > 0);
    let start = log.log_start_offset();
    assert!(matches!(
        log.read(start - 1, 100, false, &mut [0; 100]),
        Err(ReadError::OffsetOutOfRange { .. })
    ));
    read_batch(&log, start);
    drop(log);

    let mut cfg = f.cfg.clone();
    cfg.retention_bytes = None;
    cfg.retention_ms = Some(10_000);
    let mut log = PartitionLog::open(&cfg, "retained", 0, &flusher).unwrap();
    let segments = log.segment_count();
    assert!(segments > 1);
    // Newest timestamp of the sealed segments is <= 1_299: at now = 5_000 nothing expires.
    log.maintain(5_000);
    assert_eq!(log.segment_count(), segments);
    log.maintain(1_000_000);
    assert_eq!(
        log.segment_count(),
        1,
        "every sealed segment expired, never the active"
    );
    wait_until("files deleted", || log_files(log.dir()).len() == 1);
    drop(log);
    flusher.shutdown();
    thread.join().unwrap();
}

#[test]
fn durable_offset_advances_only_after_fdatasync() {
    let mut f = fixture();
    f.cfg.flush_interval_ms = 3_600_000;
    f.cfg.flush_messages = u64::MAX;
    let (flusher, thread) = Flusher::spawn(&f.cfg).unwrap();
    let mut log = PartitionLog::open(&f.cfg, "durable", 0, &flusher).unwrap();
    let b = batch(1, 0);
    append(&mut log, &b, 0);
    let file = log.dir().join("00000000000000000000.log");
    // The flusher writes the bytes at once but syncs only by policy or request.
    wait_until("pwrite", || {
        std::fs::metadata(&file).unwrap().len() == b.len() as u64
    });
    assert_eq!(flusher.syncs(), 0);
    assert_eq!(log.durable_offset(), 0);
    let mut out = vec![0u8; 8192];
    assert_eq!(log.read(0, 8192, true, &mut out), Ok(0));
    log.request_durable(0);
    wait_until("durable", || log.durable_offset() == log.log_end_offset());
    assert!(flusher.syncs() >= 1);
    assert_eq!(log.read(0, 8192, true, &mut out), Ok(b.len()));
    drop(log);
    flusher.shutdown();
    thread.join().unwrap();
}

fn run_as_root(args: &[&str]) -> bool {
    std::process::Command::new(args[0])
        .args(&args[1..])
        .status()
        .is_ok_and(|s| s.success())
}

/// Appends batches from `next` on, asking for durability, until the partition refuses
/// with a storage error; returns its reason. Each appended batch is kept (base offset,
/// stored bytes).
fn append_until_storage_error(
    log: &mut PartitionLog,
    next: &mut u64,
    appended: &mut Vec<(u64, Vec<u8>)>,
) -> &'static str {
    let deadline = Instant::now() + WAIT_MAX;
    loop {
        assert!(Instant::now() < deadline, "the disk never filled");
        log.maintain(0);
        let b = batch(*next, 0);
        match log.append(&b, 0) {
            Ok(a) => {
                appended.push((a.base_offset, stored(b, a.base_offset)));
                log.request_durable(a.last_offset);
                *next += 1;
            }
            Err(AppendError::SegmentNotReady) => std::thread::sleep(Duration::from_micros(100)),
            Err(AppendError::Storage { reason }) => return reason,
            Err(error) => panic!("{error}"),
        }
    }
}

#[test]
fn full_disk_refuses_writes_then_resumes_when_space_returns() {
    let data = tempfile::tempdir().unwrap();
    let mount_point = data.path().to_str().unwrap().to_string();
    if !run_as_root(&[
        "mount",
        "-t",
        "tmpfs",
        "-o",
        "size=256k",
        "tmpfs",
        &mount_point,
    ]) {
        eprintln!("skipped: cannot mount a tmpfs (not root?)");
        return;
    }
    let f = fixture_in(data);
    let result = std::panic::catch_unwind(|| {
        let (flusher, thread) = Flusher::spawn(&f.cfg).unwrap();
        let mut log = PartitionLog::open(&f.cfg, "full", 0, &flusher).unwrap();
        let mut appended = Vec::new();
        let mut next = 0u64;
        let reason = append_until_storage_error(&mut log, &mut next, &mut appended);
        assert!(reason.contains("ENOSPC"), "{reason}");
        assert_eq!(log.storage_fault(), Some(StorageFault::NoSpace));
        assert_eq!(flusher.storage_faults(), [1, 0, 0, 0]);
        let durable = log.durable_offset();
        assert!(durable > 0 && durable < log.log_end_offset());
        assert!(matches!(
            log.append(&batch(0, 0), 0),
            Err(AppendError::Storage { .. })
        ));
        // Reads of what is in the log keep working while the disk is full.
        for (base, bytes) in &appended {
            assert_eq!(&read_batch(&log, *base), bytes);
        }
        // More room, the same process: the flusher's retry finds it and writes resume.
        assert!(run_as_root(&[
            "mount",
            "-o",
            "remount,size=4m",
            &mount_point
        ]));
        wait_until("writes resume", || {
            log.maintain(0);
            log.storage_fault().is_none()
        });
        assert_eq!(flusher.storage_full_recoveries(), 1);
        for _ in 0..200 {
            let b = batch(next, 0);
            let a = append(&mut log, &b, 0);
            appended.push((a.base_offset, stored(b, a.base_offset)));
            log.request_durable(a.last_offset);
            next += 1;
        }
        let end = log.log_end_offset();
        wait_until("everything durable", || {
            log.maintain(0);
            log.durable_offset() == end
        });
        assert_eq!(flusher.storage_faults(), [1, 0, 0, 0], "one episode");
        drop(log);
        flusher.shutdown();
        thread.join().unwrap();
        // Every batch, those the full disk held up included, is on disk once, in order,
        // byte for byte; the sealed index files are what recovery rebuilds from the
        // segments (no entry added twice by a retried write).
        let index_files = || {
            let mut files: Vec<(PathBuf, Vec<u8>)> =
                std::fs::read_dir(f.cfg.data_dir.join("full-0"))
                    .unwrap()
                    .map(|e| e.unwrap().path())
                    .filter(|p| {
                        p.extension()
                            .is_some_and(|e| e == "index" || e == "timeindex")
                    })
                    .map(|p| (p.clone(), std::fs::read(&p).unwrap()))
                    .collect();
            files.sort();
            files
        };
        let sealed_index_files = index_files();
        assert!(!sealed_index_files.is_empty());
        let (flusher, thread) = Flusher::spawn(&f.cfg).unwrap();
        let log = PartitionLog::open(&f.cfg, "full", 0, &flusher).unwrap();
        assert_eq!(index_files(), sealed_index_files);
        assert_eq!(log.log_end_offset(), end);
        assert!(log.segment_count() > 2, "rolled across the full disk");
        for (base, bytes) in &appended {
            assert_eq!(&read_batch(&log, *base), bytes);
        }
        drop(log);
        flusher.shutdown();
        thread.join().unwrap();
    });
    assert!(run_as_root(&["umount", &mount_point]));
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

const CHILD_DIR_ENV: &str = "PRECURSOR_LOG_KILL_CHILD_DIR";
const CHILD_DURABLE_TARGET: u64 = 300;

/// In the child: append forever, printing each new durable offset. In the parent: run the
/// child, SIGKILL it mid-append, recover, and find every durable offset byte for byte.
#[test]
fn sigkill_mid_append_keeps_every_durable_offset() {
    if let Ok(dir) = std::env::var(CHILD_DIR_ENV) {
        return kill_child(Path::new(&dir));
    }
    let f = fixture();
    let exe = std::env::current_exe().unwrap();
    let mut child = std::process::Command::new(exe)
        .args([
            "log::tests::sigkill_mid_append_keeps_every_durable_offset",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DIR_ENV, f.cfg.data_dir.as_os_str())
        .env(
            "PRECURSOR_LOG_KILL_CHILD_MEMORY",
            f.cfg.memory_dir.as_os_str(),
        )
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut durable = 0;
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        if let Some(offset) = line.strip_prefix("durable ") {
            durable = offset.parse().unwrap();
            if durable >= CHILD_DURABLE_TARGET {
                break;
            }
        }
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(
        durable >= CHILD_DURABLE_TARGET,
        "child stopped at {durable}"
    );
    let (flusher, thread) = Flusher::spawn(&f.cfg).unwrap();
    let log = PartitionLog::open(&f.cfg, "killed", 0, &flusher).unwrap();
    assert!(log.log_end_offset() >= durable);
    let mut offset = 0;
    let mut i = 0;
    while offset < durable {
        let expected = stored(batch(i, i as i64), offset);
        assert_eq!(read_batch(&log, offset), expected, "offset {offset}");
        offset += 1 + i % 3;
        i += 1;
    }
    drop(log);
    flusher.shutdown();
    thread.join().unwrap();
}

fn kill_child(dir: &Path) {
    let mut cfg = fixture().cfg;
    cfg.data_dir = dir.to_path_buf();
    cfg.memory_dir = std::env::var("PRECURSOR_LOG_KILL_CHILD_MEMORY")
        .unwrap()
        .into();
    let (flusher, _thread) = Flusher::spawn(&cfg).unwrap();
    let mut log = PartitionLog::open(&cfg, "killed", 0, &flusher).unwrap();
    let mut reported = 0;
    // Bounded: the parent kills it long before.
    for i in 0..10_000_000u64 {
        let appended = append(&mut log, &batch(i, i as i64), 0);
        log.request_durable(appended.last_offset);
        log.maintain(0);
        let durable = log.durable_offset();
        if durable > reported {
            reported = durable;
            println!("durable {durable}");
        }
    }
}

#[test]
fn segment_span_names_each_segment_for_one_sided_readers() {
    let f = fixture();
    let (flusher, thread) = Flusher::spawn(&f.cfg).unwrap();
    let mut log = PartitionLog::open(&f.cfg, "spans", 0, &flusher).unwrap();
    let mut bases = Vec::new();
    for i in 0..200u64 {
        let appended = append(&mut log, &batch(i, 1000), 0);
        bases.push(appended.base_offset);
    }
    assert!(log.segment_count() > 3);
    let end = log.log_end_offset();
    let check = |log: &PartitionLog, persisted: bool| {
        let mut segments = std::collections::BTreeSet::new();
        for &offset in &bases {
            let span = log.segment_span(offset).unwrap();
            assert!(span.base_offset <= offset);
            assert!(
                span.position < span.published_bytes,
                "offset {offset}: {span:?}"
            );
            assert!(span.published_bytes <= span.mapped_bytes);
            assert_ne!(span.address, 0);
            // The batch at `position` holds `offset`, or precedes it in the segment.
            let mut out = vec![0u8; 8192];
            let n = log.read(offset, 1, false, &mut out).unwrap();
            assert!(n > 0);
            segments.insert((span.base_offset, span.active));
            if !span.active && persisted {
                let file = span.file.expect("a persisted segment names its file");
                assert_eq!(
                    std::fs::metadata(file).unwrap().len() as usize,
                    span.published_bytes
                );
            }
            if span.active {
                assert!(span.file.is_none(), "the active segment is memory");
                assert_eq!(span.mapped_bytes, f.cfg.segment_bytes as usize);
            }
        }
        assert_eq!(segments.len(), log.segment_count());
        assert_eq!(segments.iter().filter(|(_, active)| *active).count(), 1);
        // The log end names the active segment, at its published end.
        let at_end = log.segment_span(end).unwrap();
        assert!(at_end.active);
        assert_eq!(at_end.position, at_end.published_bytes);
        assert_eq!(
            log.segment_span(end + 1),
            Err(ReadError::OffsetOutOfRange {
                offset: end + 1,
                start: 0,
                end
            })
        );
    };
    check(&log, false);
    settle(&mut log);
    // Sealed segments move to their files once the flusher has sealed them.
    wait_until("every sealed segment read from its file", || {
        log.maintain(0);
        bases.iter().all(|&offset| {
            let span = log.segment_span(offset).unwrap();
            span.active || span.file.is_some()
        })
    });
    check(&log, true);
    drop(log);
    flusher.shutdown();
    thread.join().unwrap();
}

#[test]
fn replicas_store_the_leaders_bytes_and_keep_its_epochs_across_a_reopen() {
    let f = fixture();
    let (flusher, thread) = Flusher::spawn(&f.cfg).unwrap();
    let mut leader = PartitionLog::open(&f.cfg, "led", 0, &flusher).unwrap();
    let mut follower = PartitionLog::open(&f.cfg, "followed", 0, &flusher).unwrap();
    leader.assign_epoch(3);
    let mut offset = 0;
    for i in 0..40u64 {
        let epoch = if i < 20 { 3 } else { 4 };
        if i == 20 {
            leader.assign_epoch(4);
        }
        let appended = loop {
            match leader.append_as_leader(&batch(i, i as i64), 0, epoch) {
                Err(AppendError::SegmentNotReady) => leader.maintain(0),
                result => break result.unwrap(),
            }
        };
        assert_eq!(appended.base_offset, offset);
        let stored = read_batch(&leader, offset);
        let header = RecordBatchHeader::parse(&stored).unwrap();
        assert_eq!(header.partition_leader_epoch, epoch as i32, "stamped");
        // Byte for byte on the follower; a gap or a repeat is refused.
        assert!(matches!(
            follower.append_replica(&stored, 0),
            Err(AppendError::NotContiguous { .. }) | Ok(_)
        ));
        if follower.log_end_offset() == offset {
            loop {
                match follower.append_replica(&stored, 0) {
                    Err(AppendError::SegmentNotReady) => follower.maintain(0),
                    result => {
                        result.unwrap();
                        break;
                    }
                };
            }
        }
        assert_eq!(read_batch(&follower, offset), stored);
        assert!(matches!(
            follower.append_replica(&stored, 0),
            Err(AppendError::NotContiguous { expected, .. }) if expected == offset + 1 + i % 3
        ));
        offset += 1 + i % 3;
    }
    let expected_epochs = |log: &PartitionLog| {
        log.epochs()
            .entries()
            .iter()
            .map(|e| (e.epoch, e.start_offset))
            .collect::<Vec<_>>()
    };
    let twenty = (0..20u64).map(|i| 1 + i % 3).sum::<u64>();
    assert_eq!(expected_epochs(&leader), [(3, 0), (4, twenty)]);
    assert_eq!(expected_epochs(&follower), [(3, 0), (4, twenty)]);
    // Recovery rebuilds the history from the batches themselves.
    settle(&mut follower);
    drop(follower);
    let closed_wait = Instant::now() + WAIT_MAX;
    let mut follower = loop {
        match PartitionLog::open(&f.cfg, "followed", 0, &flusher) {
            Ok(log) => break log,
            Err(_) if Instant::now() < closed_wait => std::thread::sleep(Duration::from_millis(1)),
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(expected_epochs(&follower), [(3, 0), (4, twenty)]);
    let end = follower
        .epochs()
        .end_offset_for(3, follower.log_end_offset());
    assert_eq!(end.map(|e| e.start_offset), Some(twenty));
    // The divergent tail goes: cut at the start of epoch 4 (the follower closed first).
    settle(&mut follower);
    let closed = follower.close();
    assert!(closed.wait_released(WAIT_MAX));
    let removed = truncate_files(closed.dir(), twenty).unwrap();
    assert!(removed > 0);
    let follower = PartitionLog::open(&f.cfg, "followed", 0, &flusher).unwrap();
    assert_eq!(follower.log_end_offset(), twenty);
    assert_eq!(expected_epochs(&follower), [(3, 0)]);
    drop((leader, follower));
    flusher.shutdown();
    thread.join().unwrap();
}

#[test]
fn batches_larger_than_a_frame_arrive_in_fragments() {
    let f = fixture();
    let (flusher, thread) = Flusher::spawn(&f.cfg).unwrap();
    let mut follower = PartitionLog::open(&f.cfg, "fragments", 0, &flusher).unwrap();
    let whole = stored(batch(49, 7), 0);
    assert!(whole.len() > 100);
    let total = whole.len() as u32;
    let (a, b) = whole.split_at(60);
    assert_eq!(follower.append_replica_fragment(0, total, a, 0), Ok(None));
    assert_eq!(follower.fragment_received(), 60);
    assert_eq!(follower.log_end_offset(), 0, "nothing published yet");
    // A fragment that does not continue the batch held restarts it.
    assert!(matches!(
        follower.append_replica_fragment(10, total, b, 0),
        Err(AppendError::NotContiguous { .. })
    ));
    assert_eq!(follower.fragment_received(), 0);
    assert_eq!(follower.append_replica_fragment(0, total, a, 0), Ok(None));
    let appended = follower
        .append_replica_fragment(60, total, b, 0)
        .unwrap()
        .unwrap();
    assert_eq!(
        (appended.base_offset, appended.last_offset),
        (0, 1 + 49 % 3 - 1)
    );
    assert_eq!(read_batch(&follower, 0), whole);
    assert_eq!(follower.batch_at(0), Some(&whole[..]));
    // A corrupt assembly is refused whole and nothing is published.
    let mut corrupt = stored(batch(50, 7), follower.log_end_offset());
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0xff;
    let end = follower.log_end_offset();
    assert!(matches!(
        follower.append_replica_fragment(0, corrupt.len() as u32, &corrupt, 0),
        Err(AppendError::Corrupt(_))
    ));
    assert_eq!(follower.log_end_offset(), end);
    drop(follower);
    flusher.shutdown();
    thread.join().unwrap();
}

#[test]
fn a_crashed_data_planes_memory_segments_are_salvaged() {
    let f = fixture();
    // What a data plane killed before its flusher wrote anything leaves behind: an empty
    // partition directory and a memory segment holding three batches.
    std::fs::create_dir_all(f.cfg.data_dir.join("crashed-0")).unwrap();
    std::fs::create_dir_all(&f.cfg.memory_dir).unwrap();
    let memory = f.cfg.memory_dir.join("crashed-0+7.segment");
    let (mut writer, _reader) =
        precursor_shm::append_region(&memory, f.cfg.segment_bytes as usize).unwrap();
    let mut offset = 0;
    let mut expected = Vec::new();
    for i in 0..3u64 {
        let bytes = stored(batch(i, 1), offset);
        writer.append(&bytes).unwrap();
        expected.push((offset, bytes));
        offset += 1 + i % 3;
    }
    // A torn batch after them is not salvaged.
    writer.append(&stored(batch(3, 1), offset)[..20]).unwrap();
    drop(writer);
    let (flusher, thread) = Flusher::spawn(&f.cfg).unwrap();
    let log = PartitionLog::open(&f.cfg, "crashed", 0, &flusher).unwrap();
    assert_eq!(log.log_end_offset(), offset);
    assert_eq!(log.durable_offset(), offset, "salvaged bytes are synced");
    for (offset, bytes) in &expected {
        assert_eq!(&read_batch(&log, *offset), bytes);
    }
    assert!(!memory.exists(), "the old memory is gone once salvaged");
    drop(log);
    flusher.shutdown();
    thread.join().unwrap();
}

#[test]
fn a_failed_open_gives_the_partition_back_for_the_next_one() {
    let f = fixture();
    // The active segment's memory cannot be made: its path is taken by a directory.
    std::fs::create_dir_all(&f.cfg.memory_dir).unwrap();
    let blocker = f.cfg.memory_dir.join("orders-0+1.segment");
    std::fs::create_dir_all(blocker.join("in-the-way")).unwrap();
    let (flusher, thread) = Flusher::spawn(&f.cfg).unwrap();
    let error = PartitionLog::open(&f.cfg, "orders", 0, &flusher).unwrap_err();
    assert!(
        !matches!(error, LogError::AlreadyOpen { .. }),
        "the first open fails on its memory: {error}"
    );
    // Once the cause is gone the partition opens: the failed open holds no claim.
    std::fs::remove_dir_all(&blocker).unwrap();
    let mut log = PartitionLog::open(&f.cfg, "orders", 0, &flusher).unwrap();
    append(&mut log, &batch(0, 1), 1);
    assert_eq!(log.log_end_offset(), 1);
    drop(log);
    flusher.shutdown();
    thread.join().unwrap();
}

// ---- hugepages running out (real hugetlbfs) ----

/// A private hugetlbfs of `size` at a temporary mount point, unmounted on drop.
struct HugetlbfsMount {
    dir: tempfile::TempDir,
}

impl HugetlbfsMount {
    /// `None` (with the reason printed) when not root or no hugepages are free.
    fn new(size: &str) -> Option<HugetlbfsMount> {
        let root = std::fs::read_to_string("/proc/self/status")
            .unwrap_or_default()
            .lines()
            .any(|line| line.starts_with("Uid:") && line.split_whitespace().nth(1) == Some("0"));
        if !root {
            eprintln!("skipped: not root (mounting a hugetlbfs needs it)");
            return None;
        }
        let free = std::fs::read_to_string("/proc/meminfo")
            .unwrap_or_default()
            .lines()
            .find_map(|l| {
                l.strip_prefix("HugePages_Free:")?
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .unwrap_or(0);
        if free < 8 {
            eprintln!("skipped: {free} hugepages free (ci/setup.sh reserves them)");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "hugetlbfs", "-o", &format!("size={size}"), "none"])
            .arg(dir.path())
            .status()
            .unwrap();
        if !status.success() {
            eprintln!("skipped: mount -t hugetlbfs failed ({status})");
            return None;
        }
        Some(HugetlbfsMount { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for HugetlbfsMount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.dir.path())
            .status();
    }
}

/// A batch of one record of `value_bytes`, tagged `i`.
fn big_batch(i: u64, value_bytes: usize) -> Vec<u8> {
    let mut builder = RecordBatchBuilder::new(
        Compression::None,
        NO_PRODUCER_ID,
        NO_PRODUCER_EPOCH,
        NO_SEQUENCE,
        i as i64,
    );
    let mut value = vec![(i % 251) as u8; value_bytes];
    value[..8].copy_from_slice(&i.to_be_bytes());
    builder.append(i as i64, Some(&i.to_be_bytes()), &value, &[]);
    builder.finish()
}

fn read_one(log: &PartitionLog, offset: u64) -> Vec<u8> {
    let mut out = vec![0u8; 256 << 10];
    let n = log.read(offset, 1, false, &mut out).unwrap();
    assert!(n > 0, "nothing at offset {offset}");
    let header = RecordBatchHeader::parse(&out[..n]).unwrap();
    out.truncate(header.total_bytes());
    out
}

fn memory_files(dir: &Path) -> Vec<PathBuf> {
    match std::fs::read_dir(dir) {
        Ok(entries) => entries.map(|e| e.unwrap().path()).collect(),
        Err(_) => Vec::new(),
    }
}

/// More partitions than an 8 MiB hugetlbfs holds (4 huge pages, one per segment): every
/// partition still opens, rolls and keeps every record; the segments that found no huge
/// page went to the small-page directory (counted), and recovery finds them there too.
#[test]
fn partitions_beyond_the_hugepages_fall_back_to_small_pages() {
    let Some(mount) = HugetlbfsMount::new("8M") else {
        return;
    };
    let data = tempfile::tempdir().unwrap();
    let small = tempfile::tempdir_in("/dev/shm").unwrap();
    let mut cfg = LogConfig::new(data.path().to_path_buf());
    cfg.memory_dir = mount.path().to_path_buf();
    cfg.small_page_dir = Some(small.path().to_path_buf());
    // Header + segment in one 2 MiB page.
    cfg.segment_bytes = (2 << 20) - 4096;
    cfg.batch_bytes_max = 256 << 10;
    cfg.retention_ms = None;
    assert!(precursor_shm::page_bytes_for(mount.path()) > 4096);
    assert_eq!(precursor_shm::hugetlbfs_free_pages(mount.path()), Some(4));

    const PARTITIONS: u16 = 6;
    const BATCHES: u64 = 100; // of ~64 KiB: about 3 rolls per partition
    let (flusher, thread) = Flusher::spawn(&cfg).unwrap();
    let mut logs: Vec<PartitionLog> = (0..PARTITIONS)
        .map(|p| PartitionLog::open(&cfg, "full", p, &flusher).unwrap())
        .collect();
    // Six active segments, four huge pages: two partitions opened on small pages.
    assert!(flusher.segments_on_small_pages() >= 2);
    let mut stored_batches = vec![Vec::new(); PARTITIONS as usize];
    for i in 0..BATCHES {
        for (p, log) in logs.iter_mut().enumerate() {
            let b = big_batch(i * 100 + p as u64, 64 << 10);
            let appended = append(log, &b, 0);
            stored_batches[p].push((appended.base_offset, stored(b, appended.base_offset)));
        }
    }
    for (p, log) in logs.iter_mut().enumerate() {
        assert!(
            log.segment_count() >= 3,
            "partition {p}: {} segments",
            log.segment_count()
        );
        settle(log);
        for (offset, expected) in &stored_batches[p] {
            assert_eq!(
                &read_one(log, *offset),
                expected,
                "partition {p} offset {offset}"
            );
        }
    }
    let on_small = flusher.segments_on_small_pages();
    assert!(on_small > 2, "{on_small} segments on small pages");

    // A restart: everything comes back, and no memory file is left of the old instance.
    drop(logs);
    flusher.shutdown();
    thread.join().unwrap();
    assert_eq!(memory_files(mount.path()), Vec::<PathBuf>::new());
    assert_eq!(memory_files(small.path()), Vec::<PathBuf>::new());
    let (flusher, thread) = Flusher::spawn(&cfg).unwrap();
    let logs: Vec<PartitionLog> = (0..PARTITIONS)
        .map(|p| PartitionLog::open(&cfg, "full", p, &flusher).unwrap())
        .collect();
    for (p, log) in logs.iter().enumerate() {
        for (offset, expected) in &stored_batches[p] {
            assert_eq!(
                &read_one(log, *offset),
                expected,
                "partition {p} offset {offset}"
            );
        }
    }
    let ends: Vec<u64> = logs.iter().map(PartitionLog::log_end_offset).collect();
    drop(logs);
    flusher.shutdown();
    thread.join().unwrap();

    // What a killed data plane leaves in the small-page directory (a segment that fell
    // back) is salvaged at the next open, and the file removed; so is a stale file on
    // hugetlbfs.
    let extra = stored(big_batch(9999, 1000), ends[0]);
    let (mut writer, reader) = precursor_shm::append_region(
        &small.path().join("full-0+7.segment"),
        cfg.segment_bytes as usize,
    )
    .unwrap();
    writer.append(&extra).unwrap();
    drop((writer, reader));
    let (writer, reader) = precursor_shm::append_region(
        &mount.path().join("full-1+9.segment"),
        cfg.segment_bytes as usize,
    )
    .unwrap();
    drop((writer, reader));
    let (flusher, thread) = Flusher::spawn(&cfg).unwrap();
    let log0 = PartitionLog::open(&cfg, "full", 0, &flusher).unwrap();
    let log1 = PartitionLog::open(&cfg, "full", 1, &flusher).unwrap();
    assert_eq!(log0.log_end_offset(), ends[0] + 1);
    assert_eq!(read_one(&log0, ends[0]), extra);
    assert_eq!(log1.log_end_offset(), ends[1]);
    assert!(!small.path().join("full-0+7.segment").exists());
    assert!(!mount.path().join("full-1+9.segment").exists());
    drop((log0, log1));
    flusher.shutdown();
    thread.join().unwrap();
    assert_eq!(memory_files(mount.path()), Vec::<PathBuf>::new());
    assert_eq!(memory_files(small.path()), Vec::<PathBuf>::new());
}
