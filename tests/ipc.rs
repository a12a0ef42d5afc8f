//! The IPC transport end to end: a real data plane (af_packet port on a veth, which IPC
//! clients do not use) and real `precursor` client processes on shared-memory channels.
//! Ordering and no loss with many clients at once, a client killed mid-stream (its channel
//! is taken back), and the data plane killed and restarted under connected clients.

mod common;

use common::*;
use std::io::Write;
use std::process::Stdio;
use std::time::{Duration, Instant};

fn counter(counters: &serde_json::Value, name: &str) -> u64 {
    counters[name]
        .as_u64()
        .unwrap_or_else(|| panic!("no counter {name} in {counters}"))
}

#[test]
fn many_ipc_clients_at_once_lose_nothing_and_keep_order() {
    let _serial = serial();
    if !can_run("many_ipc_clients_at_once") {
        return;
    }
    let node = AfPacketNode::new("i", 21, "[ipc]\nchannels = 8\n");
    let dataplane = node.start();
    let messages = 200_000u64;
    let clients: Vec<_> = (0..4)
        .map(|i| {
            let topic = format!("ipc-{i}");
            let acks = if i == 0 { "durable" } else { "leader" };
            node.ipc_command(&[
                "bench",
                "produce",
                "--topic",
                &topic,
                "-n",
                &messages.to_string(),
                "--acks",
                acks,
                "--quiet",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
        })
        .collect();
    for (i, client) in clients.into_iter().enumerate() {
        let out = client.wait_with_output().unwrap();
        assert_success(&out, &format!("IPC producer {i}"));
        assert!(stdout(&out).contains("0 errors"), "{}", stdout(&out));
    }
    // Every message of every producer, in order, each once: the consumers verify payloads.
    for i in 0..4 {
        let topic = format!("ipc-{i}");
        let out = node
            .ipc_command(&[
                "bench",
                "consume",
                "--topic",
                &topic,
                "-n",
                &messages.to_string(),
            ])
            .output()
            .unwrap();
        assert_success(&out, &format!("IPC consumer {i}"));
        let report = stderr(&out);
        assert!(
            report.contains(&format!(
                "verified: {messages} in order, 0 gaps (0 missing), 0 duplicates, 0 corrupt"
            )),
            "{report}"
        );
    }
    // One log behind both transports: what an IPC client appends in batches that fit a
    // UDP frame, a UDP consumer reads...
    let mut producer = node
        .ipc_command(&["produce", "shared"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    producer
        .stdin
        .take()
        .unwrap()
        .write_all(b"over\nipc\n")
        .unwrap();
    assert_success(&producer.wait_with_output().unwrap(), "IPC produce");
    let out = node.precursor(&["consume", "shared", "--from-beginning", "--count", "2"]);
    assert_success(&out, "UDP consumer of an IPC-produced topic");
    assert_eq!(stdout(&out), "over\nipc\n");
    // ...and a batch larger than a UDP frame is refused with a clear error, not skipped.
    let out = node.precursor(&["bench", "consume", "--topic", "ipc-1", "-n", "1000"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("larger than a frame of this transport"),
        "{}",
        stderr(&out)
    );
    let counters = dataplane.stop();
    let opened = counter(&counters, "ipc_channels_opened");
    assert!(opened >= 8, "4 producers and 4 consumers: {counters}");
    assert_eq!(
        counter(&counters, "ipc_channels_closed_closed"),
        opened,
        "every client gave its channel back: {counters}"
    );
    assert_eq!(counter(&counters, "ipc_channels_closed_timeout"), 0);
    assert!(counter(&counters, "ipc_requests") > 0);
}

#[test]
fn a_killed_ipc_client_loses_its_channel_and_the_log_stays_whole() {
    let _serial = serial();
    if !can_run("a_killed_ipc_client") {
        return;
    }
    // One channel: the next client gets it only if the dead one's is taken back.
    let node = AfPacketNode::new("j", 22, "[ipc]\nchannels = 1\nclient_timeout_ms = 500\n");
    let dataplane = node.start();
    let mut doomed = node
        .ipc_command(&[
            "bench",
            "produce",
            "--topic",
            "killed",
            "-n",
            "100000000",
            "--quiet",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    doomed.kill().unwrap();
    doomed.wait().unwrap();

    // Within the client timeout (plus a drain tick) the channel is free again.
    let started = Instant::now();
    let out = loop {
        let mut producer = node
            .ipc_command(&["produce", "after", "--verbose"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // A producer that finds no free channel exits before reading its input: the
        // broken pipe is expected then, and its exit status says what happened.
        let _ = producer.stdin.take().unwrap().write_all(b"one\ntwo\n");
        let out = producer.wait_with_output().unwrap();
        if out.status.success() || started.elapsed() > Duration::from_secs(30) {
            break out;
        }
        assert!(
            stderr(&out).contains("IPC channels") || stderr(&out).contains("in use"),
            "while the dead client's channel is held, the error says so: {}",
            stderr(&out)
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_success(&out, "a producer on the reclaimed channel");
    assert_eq!(stdout(&out), "0 0\n0 1\n");

    // What the killed client appended is whole: every stored batch decodes and verifies,
    // in order from sequence 0, with no gap and no duplicate.
    let out = node
        .ipc_command(&["consume", "killed", "--verify", "--to-end"])
        .output()
        .unwrap();
    assert_success(&out, "verified read of the killed client's topic");
    let counters = dataplane.stop();
    assert_eq!(
        counter(&counters, "ipc_channels_closed_timeout"),
        1,
        "the killed client's channel was taken back: {counters}"
    );
}

#[test]
fn ipc_clients_ride_out_a_data_plane_restart() {
    let _serial = serial();
    if !can_run("ipc_clients_ride_out_a_data_plane_restart") {
        return;
    }
    let node = AfPacketNode::new("r", 23, "");
    let dataplane = node.start();
    let messages = 3_000_000u64;
    let producer = node
        .ipc_command(&[
            "bench",
            "produce",
            "--topic",
            "restart",
            "-n",
            &messages.to_string(),
            "--acks",
            "durable",
            "--timeout-ms",
            "30000",
            "--quiet",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    dataplane.kill9();
    std::thread::sleep(Duration::from_millis(500));
    let dataplane = node.start();
    let out = producer.wait_with_output().unwrap();
    assert_success(&out, "the IPC producer across the restart");
    assert!(stdout(&out).contains("0 errors"), "{}", stdout(&out));

    // Idempotence makes the retransmits after the restart harmless: every message once.
    let out = node
        .ipc_command(&[
            "bench",
            "consume",
            "--topic",
            "restart",
            "-n",
            &messages.to_string(),
        ])
        .output()
        .unwrap();
    assert_success(&out, "consume after the restart");
    assert!(
        stderr(&out).contains(&format!(
            "verified: {messages} in order, 0 gaps (0 missing), 0 duplicates, 0 corrupt"
        )),
        "{}",
        stderr(&out)
    );

    // With no data plane at all, a client fails with a clear error, not a hang.
    dataplane.stop();
    let out = node
        .ipc_command(&["produce", "nobody", "--timeout-ms", "3000"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let message = stderr(&out);
    assert!(!out.status.success());
    assert!(
        message.contains("did not accept") || message.contains("stopped"),
        "{message}"
    );
}

#[test]
fn a_direct_reader_follows_the_writer_across_segment_rolls_without_asking_it() {
    let _serial = serial();
    if !can_run("a_direct_reader_follows_the_writer") {
        return;
    }
    // Small segments: the reader crosses sealed files on disk, sealed segments still in
    // memory and the active one while the producer is writing.
    let node = AfPacketNode::new("d", 24, "[storage]\nsegment_bytes = 2097152\n");
    let dataplane = node.start();
    let messages = 1_000_000u64;
    // The topic exists before the reader maps it.
    let out = node
        .ipc_command(&[
            "bench", "produce", "--topic", "direct", "-n", "1", "--quiet",
        ])
        .output()
        .unwrap();
    assert_success(&out, "first message");
    let reader = node
        .ipc_command(&[
            "consume",
            "direct",
            "--direct",
            "--verify",
            "--count",
            &(messages + 1).to_string(),
            "--idle-timeout-ms",
            "30000",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The bench payloads restart at sequence 0 per run: one continuous run after the first.
    let out = node
        .ipc_command(&[
            "bench",
            "produce",
            "--topic",
            "direct",
            "-n",
            &messages.to_string(),
            "--quiet",
        ])
        .output()
        .unwrap();
    assert_success(&out, "IPC producer");
    let out = reader.wait_with_output().unwrap();
    let report = stderr(&out);
    // Two runs of sequences: 0 then 0..messages. The verifier sees the second 0 as a
    // duplicate of the first and nothing else out of place.
    assert!(
        report.contains(&format!("verified {} messages", messages + 1)),
        "{report}"
    );
    assert!(
        report.contains("0 gaps (0 missing)") && report.contains("0 corrupt"),
        "{report}"
    );
    let counters = dataplane.stop();
    // The data plane never saw the reader: no fetch came from it.
    assert_eq!(counter(&counters, "fetch_requests"), 0, "{counters}");
    let segments = std::fs::read_dir(node.config.parent().unwrap().join("data/direct-0"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".log"))
        })
        .count();
    assert!(segments >= 10, "the run crossed many segments ({segments})");
}
