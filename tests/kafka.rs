//! The Kafka gateway end to end with real Kafka clients nobody here wrote: kcat and
//! librdkafka (confluent-kafka for Python) and kafka-python, against `precursor up` (a real
//! data plane on an af_packet port, the control plane with its gateway on a loopback TCP
//! port). Hand-crafted bad requests check that a malformed request closes only its own
//! connection. The Python scripts are in tests/kafka/.
//!
//! Needs root (network namespaces for the data plane's port), kcat, python3-confluent-kafka
//! and python3-kafka (ci/setup.sh installs them). Run one e2e test at a time across
//! worktrees: `flock /tmp/precursor-e2e.lock cargo test --release --test kafka`.

mod common;

use common::kafka::*;
use common::*;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Runs `precursor-bench kafka ARGS` (librdkafka, statically linked into the bench);
/// returns its exit code, its one JSON result (Null when it printed none) and its stderr.
fn bench_kafka(args: &[&str]) -> (i32, serde_json::Value, String) {
    let binary = precursor().with_file_name("precursor-bench");
    assert!(
        binary.exists(),
        "{} is missing: build the workspace first (cargo build --release --workspace)",
        binary.display()
    );
    let out = Command::new(&binary)
        .arg("kafka")
        .args(args)
        .output()
        .expect("precursor-bench runs");
    let result = serde_json::from_str(stdout(&out).trim()).unwrap_or(serde_json::Value::Null);
    (out.status.code().unwrap_or(-1), result, stderr(&out))
}

/// Runs a Python script of tests/kafka with arguments; returns its stdout, asserting success.
fn python(name: &str, args: &[&str]) -> String {
    let out = kafka_client(PYTHON)
        .arg(script(name))
        .args(args)
        .output()
        .expect("python3 runs");
    assert_success(&out, name);
    stdout(&out)
}

#[test]
fn kcat_produces_and_consumes_100k_keyed_messages() {
    let _serial = serial();
    if !can_run("kcat_100k") || !clients_installed("kcat_100k") {
        return;
    }
    let node = AfPacketNode::new("ka", 31, "");
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(&node, dir.path());
    broker.create_topic("kcat-keyed", 4);

    let messages = 100_000;
    let mut input = String::new();
    for i in 0..messages {
        input.push_str(&format!(
            "key-{}:value-{i}-{}\n",
            i % 997,
            "x".repeat(i % 50)
        ));
    }
    let out = kcat_produce(
        &[
            "-b",
            &broker.bootstrap,
            "-P",
            "-t",
            "kcat-keyed",
            "-K",
            ":",
            "-X",
            "acks=all",
            "-X",
            "linger.ms=5",
        ],
        &input,
    );
    assert!(
        !stderr(&out).contains("ERROR"),
        "kcat reported delivery errors: {}",
        stderr(&out)
    );

    let out = kafka_client("kcat")
        .args([
            "-b",
            &broker.bootstrap,
            "-C",
            "-t",
            "kcat-keyed",
            "-o",
            "beginning",
        ])
        .args(["-e", "-q", "-f", "%p %o %k:%s\n"])
        .output()
        .unwrap();
    assert_success(&out, "kcat -C");
    let mut sent: Vec<&str> = input.lines().collect();
    let consumed_lines: Vec<String> = stdout(&out).lines().map(str::to_string).collect();
    let mut consumed: Vec<&str> = consumed_lines
        .iter()
        .map(|l| l.splitn(3, ' ').nth(2).unwrap())
        .collect();
    assert_eq!(consumed.len(), messages, "every message back, none twice");
    sent.sort_unstable();
    consumed.sort_unstable();
    assert!(
        sent == consumed,
        "the consumed messages are the produced ones"
    );
    // Keyed: one key always lands in one partition; offsets per partition are 0..n.
    let mut partition_of_key: BTreeMap<String, String> = BTreeMap::new();
    let mut offsets: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for line in &consumed_lines {
        let mut fields = line.splitn(3, ' ');
        let (p, o, kv) = (
            fields.next().unwrap(),
            fields.next().unwrap(),
            fields.next().unwrap(),
        );
        let key = kv.split(':').next().unwrap().to_string();
        let first = partition_of_key.entry(key.clone()).or_insert(p.to_string());
        assert_eq!(first, p, "key {key} in two partitions");
        offsets
            .entry(p.to_string())
            .or_default()
            .push(o.parse().unwrap());
    }
    assert!(
        offsets.len() > 1,
        "keys spread over partitions: {:?}",
        offsets.keys()
    );
    for (partition, list) in &offsets {
        let expected: Vec<u64> = (0..list.len() as u64).collect();
        assert!(
            list == &expected,
            "partition {partition}: offsets 0..n in order"
        );
    }
    // Fetch was served from the shared log maps (issue 5), not over IPC.
    let log = broker.log.lock().unwrap();
    assert!(
        log.iter()
            .any(|line| line.contains("Fetch reads the log maps directly")),
        "the gateway reads the log maps directly: {log:?}"
    );
    assert!(
        !log.iter()
            .any(|line| line.contains("Fetch goes through the data plane")),
        "no fallback to IPC: {log:?}"
    );
}

/// The compression codec ids and producer ids of every batch stored for `topic`, read
/// from the partition logs on disk (`<data_dir>/<topic>-<p>/*.log`).
fn stored_batches(node: &AfPacketNode, topic: &str) -> Vec<(u8, i64)> {
    use precursor_protocol::record_batch::batches;
    let data_dir = node.config.parent().unwrap().join("data");
    let mut found = Vec::new();
    for entry in std::fs::read_dir(&data_dir).unwrap() {
        let dir = entry.unwrap().path();
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        if !name.starts_with(&format!("{topic}-")) {
            continue;
        }
        for file in std::fs::read_dir(&dir).unwrap() {
            let path = file.unwrap().path();
            if path.extension().is_some_and(|e| e == "log") {
                let bytes = std::fs::read(&path).unwrap();
                for batch in batches(&bytes).map_while(Result::ok) {
                    let (header, _) = batch;
                    found.push(((header.attributes & 0x07) as u8, header.producer_id));
                }
            }
        }
    }
    found
}

/// A Python with a current confluent-kafka wheel (librdkafka bundled), made by ci/setup.sh.
const CURRENT_LIBRDKAFKA_PYTHON: &str = "/opt/precursor-kafka-venv/bin/python";

/// Runs idempotent_codecs.py with `interpreter` on `topic`; checks every message was
/// delivered once and read back once; returns the codec ids stored with producer ids.
fn idempotent_codecs(
    interpreter: &str,
    broker: &Broker,
    node: &AfPacketNode,
    topic: &str,
) -> Vec<(u8, i64)> {
    broker.create_topic(topic, 3);
    let per_codec = 5_000;
    let out = kafka_client(interpreter)
        .arg(script("idempotent_codecs.py"))
        .args([broker.bootstrap.as_str(), topic, &per_codec.to_string()])
        .output()
        .expect("python runs");
    assert_success(&out, "idempotent_codecs.py");
    let result: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    for codec in ["lz4", "zstd", "snappy", "gzip"] {
        let r = &result[codec];
        assert_eq!(r["delivered"], per_codec, "{interpreter} {codec}: {r}");
        assert_eq!(
            r["distinct_offsets"], per_codec,
            "{interpreter} {codec}: {r}"
        );
        assert_eq!(r["unflushed"], 0, "{interpreter} {codec}: {r}");
        assert_eq!(r["errors"].as_array().unwrap().len(), 0, "{codec}: {r}");
    }
    assert_eq!(result["consumed"], 4 * per_codec, "{result}");
    assert_eq!(result["consumed_distinct"], 4 * per_codec, "{result}");
    assert_eq!(result["missing"], 0, "{result}");
    assert_eq!(result["unexpected"], 0, "{result}");
    let stored = stored_batches(node, topic);
    assert!(
        stored.iter().all(|(_, pid)| *pid > 0 && *pid < (1 << 40)),
        "every batch idempotent, with a gateway producer id"
    );
    stored
}

fn stored_codecs(stored: &[(u8, i64)]) -> BTreeMap<(u8, i64), usize> {
    stored.iter().fold(BTreeMap::new(), |mut m, k| {
        *m.entry(*k).or_insert(0) += 1;
        m
    })
}

#[test]
fn confluent_kafka_idempotent_producer_with_every_codec() {
    let _serial = serial();
    if !can_run("librdkafka_codecs") || !clients_installed("librdkafka_codecs") {
        return;
    }
    let node = AfPacketNode::new("kb", 32, "");
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(&node, dir.path());
    // Debian's librdkafka 2.0.2: delivers and reads back every codec exactly once. It
    // compresses zstd only: before librdkafka 2.12 gzip, snappy and lz4 need Produce v0 in
    // ApiVersions (as against Kafka 4), see docs/kafka.md.
    let stored = idempotent_codecs(PYTHON, &broker, &node, "codecs-debian");
    assert!(
        stored.iter().any(|(codec, _)| *codec == 4),
        "zstd batches stored compressed: {:?}",
        stored_codecs(&stored)
    );
    // A current librdkafka (the PyPI wheel): every codec stored as the producer made it.
    if !Path::new(CURRENT_LIBRDKAFKA_PYTHON).exists() {
        panic!("{CURRENT_LIBRDKAFKA_PYTHON} is missing: run ci/setup.sh");
    }
    let stored = idempotent_codecs(CURRENT_LIBRDKAFKA_PYTHON, &broker, &node, "codecs-current");
    for (codec, id) in [("gzip", 1u8), ("snappy", 2), ("lz4", 3), ("zstd", 4)] {
        assert!(
            stored.iter().any(|(c, _)| *c == id),
            "no {codec} batch stored: (codec, producer id) -> batches {:?}",
            stored_codecs(&stored)
        );
    }
}

#[test]
fn kafka_python_produces_consumes_and_commits() {
    let _serial = serial();
    if !can_run("kafka_python") || !clients_installed("kafka_python") {
        return;
    }
    let node = AfPacketNode::new("kc", 33, "");
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(&node, dir.path());
    let out = python("kafka_python.py", &[&broker.bootstrap, "kp-topic", "3000"]);
    let result: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(
        result["create_again"], "TopicAlreadyExistsError",
        "{result}"
    );
    assert_eq!(result["produced"], 3000, "{result}");
    assert_eq!(result["produced_distinct_offsets"], 3000, "{result}");
    assert_eq!(result["consumed"], 3000, "{result}");
    assert_eq!(result["consumed_distinct"], 3000, "{result}");
    assert_eq!(result["missing"], 0, "{result}");
    assert_eq!(result["committed_is_end"], true, "{result}");
    assert_eq!(result["second_consumer_extra"], 0, "{result}");
    assert_eq!(result["second_consumer_at_committed"], true, "{result}");
    assert_eq!(result["groups_listed"], true, "{result}");
    assert_eq!(result["admin_offsets_committed"], true, "{result}");
    assert_eq!(result["offsets_for_times_right"], true, "{result}");
    assert_eq!(result["offsets_for_times_none_after_end"], true, "{result}");
    assert_eq!(result["beginning_is_zero"], true, "{result}");
}

/// Kafka's error codes the group admin test expects.
const GROUP_ID_NOT_FOUND: i64 = 69;
const GROUP_SUBSCRIBED_TO_TOPIC: i64 = 86;
const UNKNOWN_TOPIC_OR_PARTITION: i64 = 3;

#[test]
fn admin_clients_delete_groups_and_offsets_and_describe_log_dirs() {
    let _serial = serial();
    if !can_run("group_admin") || !clients_installed("group_admin") {
        return;
    }
    let node = AfPacketNode::new("kg", 45, "");
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Broker::start(&node, dir.path());
    const PARTITIONS: u32 = 3;
    broker.create_topic("ga", PARTITIONS);
    produce_values(&broker, "ga", &batch("ga", 300));
    let run = |broker: &Broker| {
        let out = kafka_client(CURRENT_LIBRDKAFKA_PYTHON)
            .arg(script("group_admin.py"))
            .args([broker.bootstrap.as_str(), "ga", &PARTITIONS.to_string()])
            .output()
            .unwrap();
        assert_success(&out, "group_admin.py");
        let steps: BTreeMap<String, serde_json::Value> = stdout(&out)
            .lines()
            .map(|line| {
                let step: serde_json::Value = serde_json::from_str(line).unwrap();
                (step["step"].as_str().unwrap().to_string(), step)
            })
            .collect();
        eprintln!("group_admin.py: {steps:#?}");
        steps
    };
    let steps = run(&broker);

    // A group with a member is not deleted, nor are the offsets of a topic it reads.
    let live = &steps["live"];
    assert!(live["read"].as_u64().unwrap() > 0, "{live}");
    assert_eq!(live["deleted"]["live"], "NON_EMPTY_GROUP", "{live}");
    assert_eq!(
        live["deleted"]["no-such-group"], "GROUP_ID_NOT_FOUND",
        "{live}"
    );
    assert_eq!(live["offset_delete"][0], 0, "no top-level error: {live}");
    assert_eq!(
        live["offset_delete"][1]["0"], GROUP_SUBSCRIBED_TO_TOPIC,
        "{live}"
    );

    // An idle group's offsets: partition 0's deleted, the others kept.
    let offsets = &steps["offsets"];
    assert_eq!(offsets["offset_delete"][0], 0, "{offsets}");
    assert_eq!(offsets["offset_delete"][1]["0"], 0, "{offsets}");
    assert_eq!(
        offsets["offset_delete"][1]["999"], UNKNOWN_TOPIC_OR_PARTITION,
        "{offsets}"
    );
    assert_eq!(offsets["unknown_group"][0], GROUP_ID_NOT_FOUND, "{offsets}");
    assert!(
        offsets["left"].get("0").is_none(),
        "partition 0 still committed: {offsets}"
    );
    for p in 1..PARTITIONS {
        assert_eq!(offsets["left"][p.to_string()], 5 + p, "{offsets}");
    }

    // Deleted groups are gone with their offsets.
    let deleted = &steps["deleted"];
    assert_eq!(
        deleted["first"]["idle"],
        serde_json::Value::Null,
        "{deleted}"
    );
    assert_eq!(
        deleted["first"]["live"],
        serde_json::Value::Null,
        "{deleted}"
    );
    assert_eq!(deleted["second"]["idle"], "GROUP_ID_NOT_FOUND", "{deleted}");
    assert_eq!(deleted["second"]["live"], "GROUP_ID_NOT_FOUND", "{deleted}");
    let listed = deleted["listed"].as_array().unwrap();
    assert!(
        !listed.iter().any(|g| g == "idle" || g == "live"),
        "{deleted}"
    );

    // One log dir, the data directory, with every partition's bytes as `topic describe`.
    let log_dirs = &steps["log_dirs"];
    let v1 = &log_dirs["v1"][0];
    assert_eq!(v1["error"], 0, "{log_dirs}");
    assert_eq!(log_dirs["v1"].as_array().unwrap().len(), 1, "{log_dirs}");
    let sizes = &v1["topics"]["ga"];
    assert_eq!(
        sizes.as_object().unwrap().len(),
        PARTITIONS as usize,
        "{log_dirs}"
    );
    let total: u64 = (0..PARTITIONS)
        .map(|p| sizes[p.to_string()].as_u64().unwrap())
        .sum();
    assert!(total > 300 * 4, "300 messages in {total} bytes: {log_dirs}");
    let v4 = &log_dirs["v4"];
    assert_eq!(v4["error"], 0, "{log_dirs}");
    let dir4 = &v4["dirs"][0];
    assert_eq!(
        dir4["topics"]["ga"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        vec!["1"],
        "only the partition asked for: {log_dirs}"
    );
    assert_eq!(dir4["topics"]["ga"]["1"], sizes["1"], "{log_dirs}");
    let (total_bytes, usable_bytes) = (
        dir4["total_bytes"].as_i64().unwrap(),
        dir4["usable_bytes"].as_i64().unwrap(),
    );
    assert!(
        total_bytes > 0 && (0..=total_bytes).contains(&usable_bytes),
        "{log_dirs}"
    );

    // Deletions are durable: after a restart no committed offset of either group is back
    // (`group list` shows every group with committed offsets).
    let listed = |broker: &Broker| {
        let out = broker.cli(&["group", "list"]);
        assert_success(&out, "precursor group list");
        stdout(&out)
    };
    assert!(!listed(&broker).contains("idle"), "{}", listed(&broker));
    broker.restart();
    let after = listed(&broker);
    assert!(
        !after.contains("idle") && !after.contains("live"),
        "deleted groups are back after a restart:\n{after}"
    );
}

/// A group_member.py process and the lines it printed.
struct Member(LineProcess);

impl Member {
    fn start(broker: &Broker, group: &str, topic: &str) -> Member {
        let mut command = kafka_client(PYTHON);
        command.arg(script("group_member.py")).args([
            broker.bootstrap.as_str(),
            group,
            topic,
            "range",
        ]);
        Member(LineProcess::spawn(command))
    }

    /// The partitions of the last ASSIGNED line (None before any).
    fn assigned(&self) -> Option<Vec<u32>> {
        let lines = self.0.lines.lock().unwrap();
        let last = lines.iter().rev().find(|l| l.starts_with("ASSIGNED"))?;
        Some(
            last.trim_start_matches("ASSIGNED")
                .trim()
                .split(',')
                .filter(|p| !p.is_empty())
                .map(|p| p.parse().unwrap())
                .collect(),
        )
    }

    /// (partition, offset, value) of every message it consumed and committed.
    fn messages(&self) -> Vec<(u32, u64, String)> {
        self.0
            .lines
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| l.strip_prefix("MSG "))
            .map(|l| {
                let mut f = l.splitn(3, ' ');
                (
                    f.next().unwrap().parse().unwrap(),
                    f.next().unwrap().parse().unwrap(),
                    f.next().unwrap().to_string(),
                )
            })
            .collect()
    }

    fn signal(&self, signal: &str) {
        let _ = Command::new("kill")
            .args([signal, &self.0.child.id().to_string()])
            .status();
    }
}

/// Produces `values` with kcat (keys spread them over the partitions), acks=all.
fn produce_values(broker: &Broker, topic: &str, values: &[String]) {
    let mut producer = kafka_client("kcat")
        .args([
            "-b",
            &broker.bootstrap,
            "-P",
            "-t",
            topic,
            "-K",
            ":",
            "-X",
            "acks=all",
        ])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = String::new();
    for (i, value) in values.iter().enumerate() {
        input.push_str(&format!("k{}:{value}\n", i % 61));
    }
    producer
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = producer.wait_with_output().unwrap();
    assert_success(&out, "kcat -P");
}

fn batch(name: &str, count: usize) -> Vec<String> {
    (0..count).map(|i| format!("{name}-{i}")).collect()
}

#[test]
fn a_consumer_group_splits_partitions_survives_a_kill_and_a_broker_restart() {
    let _serial = serial();
    if !can_run("consumer_group") || !clients_installed("consumer_group") {
        return;
    }
    let node = AfPacketNode::new("kd", 34, "");
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Broker::start(&node, dir.path());
    broker.create_topic("group-6", 6);
    let limit = Duration::from_secs(90);

    // Two members split the six partitions.
    let a = Member::start(&broker, "g6", "group-6");
    let b = Member::start(&broker, "g6", "group-6");
    wait_for(
        "both members assigned, three partitions each",
        limit,
        || match (a.assigned(), b.assigned()) {
            (Some(pa), Some(pb)) => {
                let mut all: Vec<u32> = pa.iter().chain(&pb).copied().collect();
                all.sort_unstable();
                pa.len() == 3 && pb.len() == 3 && all == (0..6).collect::<Vec<_>>()
            }
            _ => false,
        },
    );
    let first = batch("one", 3_000);
    produce_values(&broker, "group-6", &first);
    wait_for("the first batch consumed", limit, || {
        a.messages().len() + b.messages().len() >= first.len()
    });
    let owned_by_a = a.assigned().unwrap();
    assert!(
        a.messages().iter().all(|(p, _, _)| owned_by_a.contains(p)),
        "a consumed only its own partitions"
    );
    assert!(
        b.messages().iter().all(|(p, _, _)| !owned_by_a.contains(p)),
        "b consumed only the others"
    );

    // kill -9 one member while it is idle: its partitions move to the other once its
    // session (6 s) expires.
    a.signal("-KILL");
    let moved = wait_for("b owns all six partitions", limit, || {
        b.assigned().is_some_and(|p| p.len() == 6)
    });
    eprintln!(
        "partitions moved to the surviving member {} ms after the kill",
        moved.as_millis()
    );
    let second = batch("two", 3_000);
    produce_values(&broker, "group-6", &second);
    wait_for("the second batch consumed by b", limit, || {
        let got = b.messages();
        second.iter().all(|v| got.iter().any(|(_, _, g)| g == v))
    });
    // Nothing lost, nothing twice: every value of both batches consumed exactly once.
    let mut seen: Vec<String> = a
        .messages()
        .into_iter()
        .chain(b.messages())
        .map(|m| m.2)
        .collect();
    seen.sort_unstable();
    let mut expected: Vec<String> = first.iter().chain(&second).cloned().collect();
    expected.sort_unstable();
    assert!(
        seen == expected,
        "{} consumed, {} produced",
        seen.len(),
        expected.len()
    );

    // b leaves cleanly; the broker restarts (control plane and data plane); a new member
    // of the group starts from the committed offsets: the third batch only.
    b.signal("-TERM");
    wait_for("b closed", limit, || {
        b.0.lines.lock().unwrap().iter().any(|l| l == "CLOSED")
    });
    broker.restart();
    let third = batch("three", 2_000);
    produce_values(&broker, "group-6", &third);
    let c = Member::start(&broker, "g6", "group-6");
    wait_for("the third batch consumed by c", limit, || {
        c.messages().len() >= third.len()
    });
    std::thread::sleep(Duration::from_secs(3));
    let mut got: Vec<String> = c.messages().into_iter().map(|m| m.2).collect();
    got.sort_unstable();
    let mut expected = third.clone();
    expected.sort_unstable();
    assert!(
        got == expected,
        "after the restart c read {} messages ({} expected): committed offsets not honoured",
        got.len(),
        expected.len()
    );
    c.signal("-TERM");
}

/// A request frame with a v1 header (api key, version, correlation id, client id).
fn raw_request(api_key: i16, version: i16, correlation_id: i32, body: &[u8]) -> Vec<u8> {
    let client_id = b"hand-made";
    let mut frame = Vec::new();
    frame.extend_from_slice(&api_key.to_be_bytes());
    frame.extend_from_slice(&version.to_be_bytes());
    frame.extend_from_slice(&correlation_id.to_be_bytes());
    frame.extend_from_slice(&(client_id.len() as i16).to_be_bytes());
    frame.extend_from_slice(client_id);
    frame.extend_from_slice(body);
    let mut sized = (frame.len() as i32).to_be_bytes().to_vec();
    sized.extend_from_slice(&frame);
    sized
}

/// Sends `bytes` on a new connection; the answer frame (size prefix removed), or None
/// when the gateway closed the connection.
fn exchange(bootstrap: &str, bytes: &[u8]) -> Option<Vec<u8>> {
    let mut stream = TcpStream::connect(bootstrap).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(bytes).unwrap();
    let mut size = [0u8; 4];
    match stream.read_exact(&mut size) {
        Ok(()) => {}
        Err(error) => {
            assert!(
                matches!(
                    error.kind(),
                    std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset
                ),
                "expected a closed connection, got {error}"
            );
            return None;
        }
    }
    let mut answer = vec![0u8; i32::from_be_bytes(size) as usize];
    stream.read_exact(&mut answer).unwrap();
    Some(answer)
}

fn i16_at(bytes: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([bytes[at], bytes[at + 1]])
}

fn string(text: &str) -> Vec<u8> {
    let mut out = (text.len() as i16).to_be_bytes().to_vec();
    out.extend_from_slice(text.as_bytes());
    out
}

/// A Produce v3 body: one topic, one partition, `batch`, acks=1.
fn produce_v3_body(topic: &str, batch: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&(-1i16).to_be_bytes()); // transactional id: null
    body.extend_from_slice(&1i16.to_be_bytes()); // acks
    body.extend_from_slice(&10_000i32.to_be_bytes()); // timeout
    body.extend_from_slice(&1i32.to_be_bytes()); // topics
    body.extend_from_slice(&string(topic));
    body.extend_from_slice(&1i32.to_be_bytes()); // partitions
    body.extend_from_slice(&0i32.to_be_bytes()); // partition 0
    body.extend_from_slice(&(batch.len() as i32).to_be_bytes());
    body.extend_from_slice(batch);
    body
}

/// The error code of the first partition of a Produce v3 answer for `topic`.
fn produce_v3_error(answer: &[u8], topic: &str) -> i16 {
    // correlation id 4, topics count 4, name 2 + len, partitions count 4, index 4.
    i16_at(answer, 4 + 4 + 2 + topic.len() + 4 + 4)
}

#[test]
fn bad_requests_get_the_right_error_or_a_closed_connection() {
    use precursor_protocol::compression::Compression;
    use precursor_protocol::record_batch::RecordBatchBuilder;
    let _serial = serial();
    if !can_run("bad_requests") || !clients_installed("bad_requests") {
        return;
    }
    let node = AfPacketNode::new("ke", 35, "");
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(&node, dir.path());
    broker.create_topic("crc", 1);
    let gateway = broker.bootstrap.clone();

    // A size beyond gateway.request_bytes_max (and a negative one).
    let mut huge = 0x7fff_ffffi32.to_be_bytes().to_vec();
    huge.extend_from_slice(&[0; 64]);
    assert_eq!(exchange(&gateway, &huge), None, "oversized request");
    let mut negative = (-5i32).to_be_bytes().to_vec();
    negative.extend_from_slice(&[0; 16]);
    assert_eq!(exchange(&gateway, &negative), None, "negative size");
    // A size shorter than a header, and a size that cuts the body short.
    let mut short = 6i32.to_be_bytes().to_vec();
    short.extend_from_slice(&[0, 18, 0, 0, 0, 1]);
    assert_eq!(exchange(&gateway, &short), None, "truncated header");
    let mut cut = raw_request(3, 1, 7, &1i32.to_be_bytes()); // Metadata v1: 1 topic, no name
    cut.truncate(cut.len());
    assert_eq!(
        exchange(&gateway, &cut),
        None,
        "body shorter than its fields"
    );
    // Bytes after a whole body: ignored (and counted), as Kafka ignores them.
    let trailing = raw_request(18, 0, 8, &[1, 2, 3]);
    let answer = exchange(&gateway, &trailing).expect("ApiVersions with trailing bytes answered");
    assert_eq!(i32::from_be_bytes(answer[..4].try_into().unwrap()), 8);
    assert_eq!(i16_at(&answer, 4), 0, "no error");
    // An API key Kafka does not have, one we do not serve, a version we do not speak.
    assert_eq!(
        exchange(&gateway, &raw_request(999, 0, 9, &[])),
        None,
        "unknown key"
    );
    assert_eq!(
        exchange(&gateway, &raw_request(29, 1, 10, &[])),
        None,
        "DescribeAcls is not served"
    );
    // SaslHandshake on a listener without SASL: ILLEGAL_SASL_STATE (34).
    let answer = exchange(&gateway, &raw_request(17, 1, 10, &string("PLAIN")))
        .expect("SaslHandshake answered");
    assert_eq!(i16_at(&answer, 4), 34, "ILLEGAL_SASL_STATE");
    assert_eq!(
        exchange(&gateway, &raw_request(3, 99, 11, &[])),
        None,
        "Metadata v99"
    );
    // ApiVersions of an unknown version: answered in v0 with UNSUPPORTED_VERSION (35)
    // and the versions we do speak (KIP-511).
    let answer = exchange(&gateway, &raw_request(18, 99, 12, &[])).expect("an answer");
    assert_eq!(i32::from_be_bytes(answer[..4].try_into().unwrap()), 12);
    assert_eq!(i16_at(&answer, 4), 35, "UNSUPPORTED_VERSION");
    let apis = i32::from_be_bytes(answer[6..10].try_into().unwrap());
    assert_eq!(
        apis as usize,
        precursor_controlplane::gateway::SUPPORTED_APIS.len(),
        "every API a single broker supports is listed"
    );
    // An array claiming 54 million topics in 5 bytes: refused without allocating them.
    let lying = raw_request(3, 0, 13, &[0x03, 0x3c, 0x0c, 0x00, 0xb6]);
    assert_eq!(exchange(&gateway, &lying), None, "impossible array length");
    // ... and one claiming 2^31 - 1 of them (hundreds of GB if allocated up front).
    let lying = raw_request(3, 0, 13, &[0x7f, 0xff, 0xff, 0xff, 0x00, 0x01, 0x61]);
    assert_eq!(exchange(&gateway, &lying), None, "impossible array length");
    let lying = raw_request(
        11,
        5,
        13,
        &[
            0, 1, 0x67, 0, 0, 0x17, 0x70, 0, 0, 0x75, 0x30, 0, 0, 0xff, 0xff, 0, 8, 0x63, 0x6f,
            0x6e, 0x73, 0x75, 0x6d, 0x65, 0x72, 0x7f, 0xff, 0xff, 0xff,
        ],
    );
    assert_eq!(
        exchange(&gateway, &lying),
        None,
        "impossible JoinGroup protocols array"
    );

    // A record batch with a corrupt CRC: CORRUPT_MESSAGE (2), and nothing stored.
    let mut builder = RecordBatchBuilder::new(Compression::None, -1, -1, -1, 1_700_000_000_000);
    builder.append(1_700_000_000_000, Some(b"k"), b"value", &[]);
    let good = builder.finish();
    let mut corrupt = good.clone();
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0x5a;
    let answer = exchange(
        &gateway,
        &raw_request(0, 3, 14, &produce_v3_body("crc", &corrupt)),
    )
    .expect("a produce answer");
    assert_eq!(
        produce_v3_error(&answer, "crc"),
        2,
        "CORRUPT_MESSAGE: {answer:?}"
    );
    // Unknown topic: UNKNOWN_TOPIC_OR_PARTITION (3). The good batch is stored.
    let answer = exchange(
        &gateway,
        &raw_request(0, 3, 15, &produce_v3_body("nope", &good)),
    )
    .expect("a produce answer");
    assert_eq!(
        produce_v3_error(&answer, "nope"),
        3,
        "UNKNOWN_TOPIC_OR_PARTITION"
    );
    let answer = exchange(
        &gateway,
        &raw_request(0, 3, 16, &produce_v3_body("crc", &good)),
    )
    .expect("a produce answer");
    assert_eq!(produce_v3_error(&answer, "crc"), 0, "a good batch is taken");

    // The broker kept serving: a real client lists and reads the topic.
    let out = kafka_client("kcat")
        .args([
            "-b",
            &gateway,
            "-C",
            "-t",
            "crc",
            "-o",
            "beginning",
            "-e",
            "-q",
            "-f",
            "%s\n",
        ])
        .output()
        .unwrap();
    assert_success(&out, "kcat -C after the bad requests");
    assert_eq!(stdout(&out), "value\n", "one message: the good one");
    // librdkafka 2.1.0 and later write the null topics array of their all-topics Metadata
    // v9+ request in 4 bytes instead of 1 (librdkafka issue #5049), which leaves 1 to 3
    // bytes after the body: the newest one lists the topics.
    if !Path::new(CURRENT_LIBRDKAFKA_PYTHON).exists() {
        panic!("{CURRENT_LIBRDKAFKA_PYTHON} is missing: run ci/setup.sh");
    }
    let list_topics = "import sys, confluent_kafka, confluent_kafka.admin\n\
        admin = confluent_kafka.admin.AdminClient({'bootstrap.servers': sys.argv[1]})\n\
        print(confluent_kafka.libversion()[0], sorted(admin.list_topics(timeout=5).topics))\n";
    let out = kafka_client(CURRENT_LIBRDKAFKA_PYTHON)
        .args(["-c", list_topics, &gateway])
        .output()
        .unwrap();
    assert_success(&out, "AdminClient.list_topics (current librdkafka)");
    eprintln!("AdminClient.list_topics: {}", stdout(&out).trim());
    assert!(stdout(&out).contains("'crc'"), "{}", stdout(&out));
    assert!(
        broker.metric(
            "precursor_gateway_request_trailing_bytes_total",
            "api=\"Metadata\""
        ) >= 1.0,
        "the Metadata request's extra bytes counted"
    );
    assert!(
        broker.metric(
            "precursor_gateway_request_trailing_bytes_total",
            "api=\"ApiVersions\""
        ) >= 3.0,
        "the hand-made ApiVersions' extra bytes counted"
    );
    for reason in [
        "too_large",
        "truncated",
        "bad_body",
        "unknown_api_key",
        "unsupported_api",
        "unsupported_version",
    ] {
        let count = broker.metric(
            "precursor_gateway_malformed_requests_total",
            &format!("reason=\"{reason}\""),
        );
        assert!(count >= 1.0, "malformed requests counted under {reason}");
    }
    assert!(
        broker.metric("precursor_gateway_errors_total", "error=\"CorruptMessage\"") >= 1.0,
        "CORRUPT_MESSAGE counted"
    );
}

/// The benchmark's Kafka path (bench/compare.sh's Precursor-via-Kafka rows): librdkafka
/// producers at both acks levels get every message acknowledged, a librdkafka consumer
/// reads every one back intact and in order, a fixed-rate run measures from intended send
/// times, and a gateway that is not there is a clear error. Timings are never judged.
#[test]
fn the_bench_drives_the_gateway_through_librdkafka() {
    let _serial = serial();
    if !can_run("kafka_bench") {
        return;
    }
    let node = AfPacketNode::new("kf", 36, "");
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(&node, dir.path());
    let gateway = ["--bootstrap", broker.bootstrap.as_str()];
    let produce = |topic: &str, durability: &str, messages: u64, extra: &[&str]| {
        let count = messages.to_string();
        let mut args = vec!["produce", "--topic", topic, "--durability", durability];
        args.extend(gateway);
        args.extend([
            "--messages",
            &count,
            "--warmup",
            "1000",
            "--window",
            "65536",
        ]);
        args.extend(extra);
        let (code, result, log) = bench_kafka(&args);
        assert_eq!(code, 0, "{args:?}: {log}");
        assert_eq!(result["system"], "precursor-kafka", "{result}");
        assert_eq!(
            result["messages"], messages,
            "every message acknowledged: {result}"
        );
        assert_eq!(result["errors"], 0, "{result}");
        assert!(
            result["p99_us"].as_f64().is_some_and(|p| p > 0.0),
            "{result}"
        );
        result
    };
    let leader = produce("bench-leader", "leader", 200_000, &[]);
    assert_eq!(leader["durability"], "leader");
    assert_eq!(leader["latency_from"], "send");
    let durable = produce("bench-durable", "durable", 20_000, &[]);
    assert!(
        durable["durability_detail"]
            .as_str()
            .is_some_and(|d| d.contains("idempotence")),
        "{durable}"
    );
    let paced = produce(
        "bench-paced",
        "leader",
        2_000,
        &["--rate", "2000", "--linger-ms", "0"],
    );
    assert_eq!(paced["latency_from"], "intended", "{paced}");
    assert_eq!(paced["rate"], 2000.0, "{paced}");

    // Reads `messages` from the start of `topic`: (exit code, messages read, errors).
    let consume = |topic: &str, messages: &str| {
        let mut args = vec!["consume", "--topic", topic, "--durability", "leader"];
        args.extend(gateway);
        args.extend(["--messages", messages, "--idle-timeout-ms", "1000"]);
        let (code, result, log) = bench_kafka(&args);
        eprintln!("{log}");
        let counts = (result["messages"].as_u64(), result["errors"].as_u64());
        (code, counts)
    };
    // Warm-up and measured messages, sequence numbers 0.., each verified once in order.
    assert_eq!(
        consume("bench-leader", "201000"),
        (0, (Some(201_000), Some(0)))
    );
    // One more than was written: counted as an error once the topic runs dry.
    assert_eq!(
        consume("bench-durable", "21001"),
        (1, (Some(21_000), Some(1))),
        "a missing message is an error"
    );

    let nobody = format!("127.0.0.1:{}", free_tcp_port());
    let (code, result, log) = bench_kafka(&[
        "produce",
        "--bootstrap",
        &nobody,
        "--durability",
        "leader",
        "--messages",
        "10",
    ]);
    assert_eq!((code, result), (2, serde_json::Value::Null), "{log}");
    assert!(log.contains("cannot connect to the Kafka gateway"), "{log}");
}
