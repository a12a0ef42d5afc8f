//! End to end, with real processes on real virtual devices: the `precursor-dataplane`
//! binary drives a DPDK port (`net_af_packet` on a veth end, or `net_tap`), the
//! `precursor` CLI runs in a network namespace with ordinary kernel UDP sockets.

mod common;

use common::*;
use std::collections::HashMap;
use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

#[test]
fn a_million_durable_messages_over_af_packet_arrive_intact_and_in_order() {
    let _serial = serial();
    if !can_run("a_million_durable_messages") {
        return;
    }
    let node = AfPacketNode::new(
        "m",
        1,
        "[[topics.create]]\nname = \"million\"\npartitions = 2\n",
    );
    let dataplane = node.start();

    let out = node.precursor(&[
        "bench",
        "produce",
        "--topic",
        "million",
        "--messages",
        "1000000",
        "--size",
        "100",
        "--acks",
        "durable",
        "--json",
        "--quiet",
    ]);
    assert_success(&out, "bench produce");
    let report: serde_json::Value =
        serde_json::from_str(stdout(&out).trim()).expect("one JSON object");
    assert_eq!(report["messages"], 1_000_000);
    assert_eq!(report["errors"], 0);
    assert_eq!(report["acks"], "durable");
    for field in [
        "transport",
        "size",
        "seconds",
        "msgs_per_sec",
        "mb_per_sec",
        "p50_us",
        "p99_us",
        "p999_us",
        "max_us",
    ] {
        assert!(!report[field].is_null(), "{field} in {report}");
    }

    let out = node.precursor(&[
        "consume",
        "million",
        "--verify",
        "--count",
        "1000000",
        "--idle-timeout-ms",
        "20000",
    ]);
    assert_success(&out, "consume --verify");
    assert!(
        stderr(&out).contains("1000000 in order, 0 gaps (0 missing), 0 duplicates, 0 corrupt"),
        "{}",
        stderr(&out)
    );

    let counters = dataplane.stop();
    assert_eq!(counters["produce_records"], 1_000_000, "{counters}");
}

#[test]
fn the_embedded_default_tap_port_serves_kernel_sockets() {
    let _serial = serial();
    if !can_run("the_embedded_default_tap_port") {
        return;
    }
    if !std::path::Path::new("/dev/net/tun").exists() {
        eprintln!("SKIPPED the_embedded_default_tap_port: no /dev/net/tun");
        return;
    }
    // The data plane runs inside its own namespace so its TAP (prc0, 10.77.0.1/24 on the
    // kernel side) is private to the test; clients run there too, with no flags at all.
    let netns = Netns::empty("tap");
    let dir = tempfile::tempdir().unwrap();
    let memory = memory_dir("tap");
    let config = dir.path().join("precursor.toml");
    std::fs::write(
        &config,
        format!(
            "[node]\ndata_dir = {:?}\nmemory_dir = {:?}\n[dataplane]\nfile_prefix = \"e2e-tap\"\n",
            dir.path().join("data").display().to_string(),
            memory.display().to_string()
        ),
    )
    .unwrap();
    let dataplane = Dataplane::start(&config, Some(&netns));

    let out = netns.precursor(&["ping", "--count", "2"]);
    assert_success(&out, "precursor ping");
    let lines: Vec<String> = (0..500)
        .map(|i| format!("line {i} of the tap test"))
        .collect();
    let mut producer = netns
        .command(&precursor())
        .args(["produce", "greetings", "--verbose"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    producer
        .stdin
        .take()
        .unwrap()
        .write_all((lines.join("\n") + "\n").as_bytes())
        .unwrap();
    let out = producer.wait_with_output().unwrap();
    assert_success(&out, "precursor produce");
    let offsets: Vec<&str> = stdout(&out)
        .lines()
        .map(str::to_owned)
        .collect::<Vec<_>>()
        .leak()
        .iter()
        .map(String::as_str)
        .collect();
    assert_eq!(
        offsets.len(),
        500,
        "one `partition offset` line per message"
    );
    assert_eq!(offsets[0], "0 0");
    assert_eq!(offsets[499], "0 499");

    let out = netns.precursor(&["consume", "greetings", "--from-beginning", "--count", "500"]);
    assert_success(&out, "precursor consume");
    assert_eq!(stdout(&out).lines().collect::<Vec<_>>(), lines);

    // An unknown topic without auto-creation is a clear one-line error, not a hang.
    let out = netns.precursor(&["consume", "no-such-topic", "--count", "1"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("no-such-topic"), "{}", stderr(&out));

    let counters = dataplane.stop();
    assert!(
        counters["arp_replies"].as_u64().unwrap() >= 1,
        "the kernel resolved us by ARP: {counters}"
    );
    assert_eq!(counters["produce_records"], 500);
    let _ = std::fs::remove_dir_all(&memory);
}

#[test]
fn kill_9_under_durable_load_loses_no_acknowledged_message() {
    let _serial = serial();
    if !can_run("kill_9_under_durable_load") {
        return;
    }
    // Small segments so the crashes also land around segment rolls.
    let extra =
        "[storage]\nsegment_bytes = 2097152\n[[topics.create]]\nname = \"crash\"\npartitions = 2\n";
    let node = AfPacketNode::new("k", 2, extra);

    // value -> (partition, offset) of every message the broker acknowledged as durable.
    let mut acknowledged: HashMap<String, (u16, u64)> = HashMap::new();
    let rounds = 4;
    let mut state = 0x9e37_79b9_u64 ^ std::process::id() as u64;
    for round in 0..rounds {
        let dataplane = node.start();
        let mut producer = node
            .netns
            .command(&precursor())
            .args([
                "produce",
                "crash",
                "--broker",
                &node.broker,
                "--acks",
                "durable",
                "--verbose",
                "--timeout-ms",
                "2000",
                "-K",
                ":",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = producer.stdin.take().unwrap();
        let writer = std::thread::spawn(move || {
            for i in 0..2_000_000u64 {
                // Keys spread messages over both partitions.
                if writeln!(stdin, "k{i}:round-{round}-message-{i}").is_err() {
                    break;
                }
            }
        });
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        std::thread::sleep(Duration::from_millis(300 + state % 1200));
        dataplane.kill9();
        let out = producer.wait_with_output().unwrap();
        let _ = writer.join();
        assert!(
            !out.status.success(),
            "the producer must notice the broker died"
        );
        // The producer printed `partition offset` for each acknowledged message, in order of
        // its input lines: line i's ack is the i-th printed line.
        let acked: Vec<(u16, u64)> = stdout(&out)
            .lines()
            .map(|l| {
                let (p, o) = l.split_once(' ').expect("partition offset");
                (p.parse().unwrap(), o.parse().unwrap())
            })
            .collect();
        eprintln!(
            "round {round}: {} messages acknowledged before kill -9",
            acked.len()
        );
        assert!(
            !acked.is_empty(),
            "round {round}: nothing acknowledged: {}",
            stderr(&out)
        );
        for (i, at) in acked.into_iter().enumerate() {
            let previous = acknowledged.insert(format!("round-{round}-message-{i}"), at);
            assert!(previous.is_none());
        }
    }

    // Restart (recovery from disk) and read everything back.
    let dataplane = node.start();
    let out = node.precursor(&[
        "consume",
        "crash",
        "--from-beginning",
        "--to-end",
        "--verbose",
    ]);
    assert_success(&out, "consume after the crashes");
    let mut found: HashMap<(u16, u64), String> = HashMap::new();
    let mut values = std::collections::HashSet::new();
    for line in stdout(&out).lines() {
        let mut fields = line.splitn(4, ' ');
        let partition: u16 = fields.next().unwrap().parse().unwrap();
        let offset: u64 = fields.next().unwrap().parse().unwrap();
        let _key = fields.next().unwrap();
        let value = fields.next().unwrap().to_string();
        assert!(values.insert(value.clone()), "{value} appended twice");
        found.insert((partition, offset), value);
    }
    for (value, at) in &acknowledged {
        assert_eq!(
            found.get(at),
            Some(value),
            "acknowledged {value} at {at:?} is missing or different after recovery"
        );
    }
    eprintln!(
        "{} acknowledged messages all present; {} records in the log",
        acknowledged.len(),
        found.len()
    );
    dataplane.stop();
}

#[test]
fn a_garbage_flood_from_kernel_sockets_is_counted_and_valid_clients_are_still_served() {
    let _serial = serial();
    if !can_run("a_garbage_flood") {
        return;
    }
    let node = AfPacketNode::new("g", 3, "");
    let dataplane = node.start();

    // Random datagrams of every size, frames with a valid magic and garbage after it, frames
    // whose length field lies, and traffic to another port: from an ordinary socket.
    let flood = format!(
        r#"
import os, random, socket, struct
random.seed(7)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
dst, other = ("{ip}", 9190), ("{ip}", 9191)
sent = 0
for i in range(20000):
    kind = i % 4
    if kind == 0:
        data = os.urandom(random.randrange(0, 1472))
    elif kind == 1:
        data = b"PR" + os.urandom(random.randrange(0, 200))
    elif kind == 2:
        data = struct.pack("<HBBHHIQII4x", 0x5250, 1, 1, 1, 0, 9, i, 0, 5000) + os.urandom(64)
    else:
        s.sendto(os.urandom(32), other); sent += 1; continue
    s.sendto(data, dst); sent += 1
print(sent)
"#,
        ip = node.netns.broker_ip
    );
    let out = node
        .netns
        .command(std::path::Path::new("/usr/bin/python3"))
        .args(["-c", &flood])
        .output()
        .unwrap();
    assert_success(&out, "garbage flood");

    let out = node.precursor(&[
        "bench",
        "produce",
        "--topic",
        "after-flood",
        "--messages",
        "20000",
        "--acks",
        "durable",
        "--json",
        "--quiet",
    ]);
    assert_success(&out, "bench produce after the flood");
    let out = node.precursor(&[
        "consume",
        "after-flood",
        "--verify",
        "--count",
        "20000",
        "--idle-timeout-ms",
        "10000",
    ]);
    assert_success(&out, "consume --verify after the flood");

    let counters = dataplane.stop();
    let bad = counters["bad_frames_total"].as_u64().unwrap();
    // af_packet may lose some of a flood; what arrived was counted, none of it was appended.
    assert!(bad >= 1000, "bad frames counted: {counters}");
    assert!(
        counters["dropped_other_port"].as_u64().unwrap() >= 100,
        "{counters}"
    );
    assert_eq!(
        counters["produce_records"], 20_000,
        "only the valid messages were appended: {counters}"
    );
}
