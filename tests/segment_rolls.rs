//! Producers across many segment rolls (issue 18): a real data plane with the smallest
//! segments the configuration allows, an IPC producer and a UDP producer at once, under the
//! balanced and the maximum preset. Every message is acknowledged and stored exactly once
//! (`consume --verify`), and the counters show no retransmit storm and no out-of-order
//! loop: a roll is a swap onto a prepared segment, and a refused window costs one in-order
//! resend round. Counters are asserted, never time.

mod common;

use common::*;
use std::process::{Output, Stdio};

/// `storage.segment_bytes` at its smallest: a multiple of the 2 MiB huge page.
const SEGMENT_BYTES: u64 = 2 << 20;
/// Messages per producer: about 19,000 bench messages fill a 2 MiB segment, so each topic
/// rolls about ten times.
const MESSAGES: u64 = 200_000;
/// The bench producer's in-flight window (its default).
const IN_FLIGHT: u64 = 5;

fn counter(counters: &serde_json::Value, name: &str) -> u64 {
    counters[name]
        .as_u64()
        .unwrap_or_else(|| panic!("no counter {name} in {counters}"))
}

/// What `bench produce` said about its producer (its stderr line `producer: ...`).
#[derive(Debug)]
struct ProducerReport {
    batches: u64,
    retransmits: u64,
    duplicates: u64,
    refusals: u64,
    resends: u64,
    rounds: u64,
}

fn producer_report(out: &Output, what: &str) -> ProducerReport {
    assert_success(out, what);
    assert!(
        stdout(out).contains(&format!("{MESSAGES} messages")) && stdout(out).contains("0 errors"),
        "{what}: {}",
        stdout(out)
    );
    let err = stderr(out);
    let line = err
        .lines()
        .find_map(|l| l.strip_prefix("producer: "))
        .unwrap_or_else(|| panic!("{what}: no producer line in {err}"));
    // "B batches, R retransmits, D duplicates acknowledged, F refusals answered by S
    // resends in K rounds, L leader look-ups, M partitions moved": the numbers in that
    // order (the leader ones do not matter to one broker).
    let numbers: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter(|w| !w.is_empty())
        .map(|w| w.parse().unwrap())
        .collect();
    let [batches, retransmits, duplicates, refusals, resends, rounds, ..] = numbers[..] else {
        panic!("{what}: unexpected producer line {line:?}");
    };
    ProducerReport {
        batches,
        retransmits,
        duplicates,
        refusals,
        resends,
        rounds,
    }
}

/// A producer's own counters: no storm, no loop. Each bound is structural: a refused
/// round resends at most the window; a round follows a refusal; timeouts (a loaded machine
/// may stall a process past the first retransmit timeout now and then) stay a small
/// fraction of the batches.
fn assert_no_storm(report: &ProducerReport, what: &str) {
    assert!(report.batches > 0, "{what}: {report:?}");
    assert!(
        report.resends <= IN_FLIGHT * report.rounds,
        "{what}: a round resends at most the window: {report:?}"
    );
    assert!(
        report.rounds <= report.refusals,
        "{what}: every round answers a refusal: {report:?}"
    );
    assert!(
        report.retransmits <= (report.batches / 50).max(4 * IN_FLIGHT),
        "{what}: retransmit storm: {report:?}"
    );
    assert!(
        report.duplicates <= report.retransmits + report.resends,
        "{what}: {report:?}"
    );
}

fn rolls_lose_nothing_and_stall_nobody(tag: &str, subnet: u8, preset: &str) {
    let extra = format!("[storage]\nsegment_bytes = {SEGMENT_BYTES}\n");
    let node = AfPacketNode::new(tag, subnet, &extra);
    let _cnc = CncDirRemoved(node.ipc_dir());
    // The preset goes first: a top-level key before the tables.
    let config = std::fs::read_to_string(&node.config).unwrap();
    std::fs::write(&node.config, format!("preset = {preset:?}\n{config}")).unwrap();
    let dataplane = node.start();
    let messages = MESSAGES.to_string();
    let produce = |topic: &str| {
        vec![
            "bench".to_string(),
            "produce".into(),
            "--topic".into(),
            topic.into(),
            "-n".into(),
            messages.clone(),
        ]
    };
    // Both at once: two partitions rolling, the flusher serving both. Not `--quiet`:
    // its `producer:` line is the client's report.
    let ipc_args = produce("rolls-ipc");
    let ipc_args: Vec<&str> = ipc_args.iter().map(String::as_str).collect();
    let ipc_producer = node
        .ipc_command(&ipc_args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut udp_args = produce("rolls-udp");
    udp_args.extend(["--broker".into(), node.broker.clone()]);
    let udp_producer = node
        .netns
        .command(&precursor())
        .args(&udp_args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let ipc_out = ipc_producer.wait_with_output().unwrap();
    let udp_out = udp_producer.wait_with_output().unwrap();
    let ipc = producer_report(&ipc_out, "IPC producer");
    let udp = producer_report(&udp_out, "UDP producer");
    eprintln!("{preset}: IPC {ipc:?}, UDP {udp:?}");
    assert_no_storm(&ipc, "IPC producer");
    assert_no_storm(&udp, "UDP producer");

    // Every message once, in order, intact, across all the segments.
    for topic in ["rolls-ipc", "rolls-udp"] {
        let out = node
            .ipc_command(&["consume", topic, "--verify", "--to-end"])
            .output()
            .unwrap();
        assert_success(&out, &format!("verified read of {topic}"));
        assert!(
            stderr(&out).contains(&format!(
                "verified {MESSAGES} messages: {MESSAGES} in order, 0 gaps (0 missing), 0 duplicates, 0 corrupt"
            )),
            "{topic}: {}",
            stderr(&out)
        );
    }
    let counters = dataplane.stop();
    let data = node.config.parent().unwrap().join("data");
    for topic in ["rolls-ipc", "rolls-udp"] {
        let segments = std::fs::read_dir(data.join(format!("{topic}-0")))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".log"))
            })
            .count();
        assert!(
            segments >= 6,
            "{topic}: at least 5 rolls ({segments} segments)"
        );
    }
    // The broker's side: an out-of-order refusal only ever stands behind a refused (busy)
    // or a lost (retransmitted) batch, at most a window's worth each. Before issue 18 a
    // few busy answers at a roll turned into hundreds of these.
    let busy = counter(&counters, "error_busy");
    let out_of_order = counter(&counters, "error_out_of_order_sequence");
    let lost = ipc.retransmits + udp.retransmits;
    assert!(
        out_of_order <= (IN_FLIGHT - 1) * (busy + lost),
        "out-of-order loop: {out_of_order} out of order, {busy} busy, {lost} retransmits: {counters}"
    );
    assert_eq!(counter(&counters, "error_storage_error"), 0, "{counters}");
    assert_eq!(
        counter(&counters, "produce_records"),
        2 * MESSAGES,
        "each message appended once: {counters}"
    );
}

#[test]
fn producers_ride_segment_rolls_under_the_balanced_preset() {
    let _serial = serial();
    if !can_run("producers_ride_segment_rolls_under_the_balanced_preset") {
        return;
    }
    rolls_lose_nothing_and_stall_nobody("sb", 41, "balanced");
}

#[test]
fn producers_ride_segment_rolls_under_the_maximum_preset() {
    let _serial = serial();
    if !can_run("producers_ride_segment_rolls_under_the_maximum_preset") {
        return;
    }
    rolls_lose_nothing_and_stall_nobody("sm", 42, "maximum");
}
