//! Growing topics (CreatePartitions, Kafka API 37, and `precursor topic alter
//! --partitions`) end to end against `precursor up` on a real af_packet port, with clients
//! nobody here wrote: confluent-kafka's AdminClient (the venv's 2.16 and Debian's 2.0.2),
//! kafka-python's KafkaAdminClient, kcat. The Python side is tests/kafka/create_partitions.py.
//!
//! Needs root, kcat, python3-confluent-kafka, python3-kafka and the venv (ci/setup.sh). Run
//! one e2e test at a time across worktrees:
//! `flock /tmp/precursor-e2e.lock cargo test --release --test kafka_partitions`.

mod common;

use common::kafka::*;
use common::*;
use std::process::Command;
use std::time::Duration;

/// A Python with a current confluent-kafka wheel (librdkafka bundled), made by ci/setup.sh.
const CURRENT_LIBRDKAFKA_PYTHON: &str = "/opt/precursor-kafka-venv/bin/python";

/// create_partitions.py with `interpreter`; its one JSON line.
fn create_partitions_py(interpreter: &str, args: &[&str]) -> serde_json::Value {
    let out = kafka_client(interpreter)
        .arg(script("create_partitions.py"))
        .args(args)
        .output()
        .expect("python runs");
    assert_success(&out, "create_partitions.py");
    serde_json::from_str(stdout(&out).trim()).unwrap_or_else(|e| {
        panic!(
            "create_partitions.py printed no JSON ({e}): {}",
            stdout(&out)
        )
    })
}

/// `topic describe NAME --json`: the partitions the broker shows.
fn described_partitions(broker: &Broker, name: &str) -> usize {
    let out = broker.cli(&["topic", "describe", name, "--json"]);
    assert_success(&out, "topic describe");
    let topic: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    topic["partitions"].as_array().unwrap().len()
}

/// Messages of one partition, read from the beginning with kcat.
fn kcat_count(broker: &Broker, topic: &str, partition: u32, prefix: &str) -> usize {
    let out = kafka_client("kcat")
        .args(["-b", &broker.bootstrap, "-C", "-t", topic, "-p"])
        .arg(partition.to_string())
        .args(["-o", "beginning", "-e", "-q"])
        .output()
        .unwrap();
    assert_success(&out, "kcat -C");
    stdout(&out)
        .lines()
        .filter(|l| l.starts_with(prefix))
        .count()
}

/// The partition directories of `topic` in the broker's data directory.
fn partition_dirs(node: &AfPacketNode, topic: &str) -> Vec<u32> {
    let data_dir = node.config.parent().unwrap().join("data");
    let mut found: Vec<u32> = std::fs::read_dir(&data_dir)
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_dir())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let (t, p) = name.rsplit_once('-')?;
            (t == topic).then(|| p.parse().ok())?
        })
        .collect();
    found.sort_unstable();
    found
}

fn assert_errors(result: &serde_json::Value, expected: &[(&str, serde_json::Value)]) {
    for (case, want) in expected {
        assert_eq!(&result["errors"][case], want, "case {case}: {result}");
    }
}

fn assert_consumed(result: &serde_json::Value, partitions: usize, per_partition: u64) {
    assert_eq!(result["partitions"], partitions, "{result}");
    let consumed = result["consumed"].as_object().unwrap();
    assert_eq!(consumed.len(), partitions, "{result}");
    for (p, n) in consumed {
        assert_eq!(n.as_u64(), Some(per_partition), "partition {p}: {result}");
    }
}

#[test]
fn admin_clients_grow_topics_and_producers_and_consumers_use_every_partition() {
    let _serial = serial();
    if !can_run("create_partitions") || !clients_installed("create_partitions") {
        return;
    }
    let node = AfPacketNode::new("kp", 33, "");
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Broker::start(&node, dir.path());
    let null = serde_json::Value::Null;
    let name = |n: &str| serde_json::Value::String(n.into());

    // confluent-kafka 2.16: every bad request first, then the grow with explicit
    // assignments ([[this broker]]), then a producer and a consumer on every partition.
    broker.create_topic("grow-c", 4);
    for p in 0..4 {
        produce_to_partition(&broker.bootstrap, "grow-c", p, 10, "old");
    }
    let result = create_partitions_py(
        CURRENT_LIBRDKAFKA_PYTHON,
        &["confluent", &broker.bootstrap, "grow-c", "4", "8"],
    );
    assert!(
        result["client"].as_str().unwrap().starts_with("2.1"),
        "{result}"
    );
    assert_errors(
        &result,
        &[
            ("shrink", name("INVALID_PARTITIONS")),
            ("same", name("INVALID_PARTITIONS")),
            ("unknown_topic", name("UNKNOWN_TOPIC_OR_PART")),
            ("unknown_broker", name("INVALID_REPLICA_ASSIGNMENT")),
            ("too_few_assignments", name("INVALID_REPLICA_ASSIGNMENT")),
            ("too_many_partitions", name("INVALID_PARTITIONS")),
            ("validate_only", null.clone()),
            ("count_after_bad_requests", 4.into()),
            ("grow", null.clone()),
            ("duplicate", serde_json::json!([42, 42])),
        ],
    );
    assert_consumed(&result, 8, 20);
    assert_eq!(described_partitions(&broker, "grow-c"), 8);

    // Debian's confluent-kafka (librdkafka 2.0.2).
    broker.create_topic("grow-d", 2);
    let result = create_partitions_py(
        PYTHON,
        &["confluent", &broker.bootstrap, "grow-d", "2", "5"],
    );
    assert_errors(
        &result,
        &[
            ("shrink", name("INVALID_PARTITIONS")),
            ("unknown_topic", name("UNKNOWN_TOPIC_OR_PART")),
            ("unknown_broker", name("INVALID_REPLICA_ASSIGNMENT")),
            ("grow", null.clone()),
        ],
    );
    assert_consumed(&result, 5, 20);

    // kafka-python.
    broker.create_topic("grow-k", 3);
    let result = create_partitions_py(
        PYTHON,
        &["kafka-python", &broker.bootstrap, "grow-k", "3", "6"],
    );
    assert_errors(
        &result,
        &[
            ("shrink", name("InvalidPartitionsError")),
            ("same", name("InvalidPartitionsError")),
            ("unknown_topic", name("UnknownTopicOrPartitionError")),
            ("validate_only", null.clone()),
            ("count_after_bad_requests", 3.into()),
            ("grow", null.clone()),
        ],
    );
    assert_consumed(&result, 6, 20);

    // kcat to a new partition by number, and back.
    produce_to_partition(&broker.bootstrap, "grow-c", 7, 15, "kcat");
    assert_eq!(kcat_count(&broker, "grow-c", 7, "kcat-"), 15);

    // The CLI: a grow, and its errors.
    let out = broker.cli(&["topic", "alter", "grow-c", "--partitions", "10"]);
    assert_success(&out, "topic alter --partitions");
    assert!(
        stdout(&out).contains("now has 10 partition"),
        "{}",
        stdout(&out)
    );
    let out = broker.cli(&["topic", "alter", "grow-c", "--partitions", "10"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("topic grow-c has 10 partitions; partitions can only grow"),
        "{}",
        stderr(&out)
    );
    let out = broker.cli(&["topic", "alter", "nope", "--partitions", "3"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("unknown_topic"), "{}", stderr(&out));
    let out = broker.cli(&["topic", "alter", "grow-c", "--partitions", "1025"]);
    assert!(!out.status.success(), "clap refuses more than 1024");
    assert_eq!(partition_dirs(&node, "grow-c"), (0..10).collect::<Vec<_>>());

    // A restart keeps the counts and every partition's messages, old and new.
    broker.restart();
    assert_eq!(described_partitions(&broker, "grow-c"), 10);
    assert_eq!(described_partitions(&broker, "grow-k"), 6);
    for p in 0..4 {
        assert_eq!(
            kcat_count(&broker, "grow-c", p, "old-"),
            10,
            "partition {p}"
        );
    }
    assert_eq!(kcat_count(&broker, "grow-c", 7, "kcat-"), 15);
    assert_eq!(kcat_count(&broker, "grow-c", 5, "p5-"), 20);
    broker.stop();
}

/// The pid of `precursor up`'s data plane child.
fn dataplane_pid(broker: &Broker) -> Option<u32> {
    let up = broker.child.as_ref()?.id();
    let out = Command::new("pgrep")
        .args(["-P", &up.to_string(), "-f", "precursor-dataplane"])
        .output()
        .ok()?;
    stdout(&out).split_whitespace().next()?.parse().ok()
}

fn free_hugepages() -> u64 {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("HugePages_Free:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_grow_survives_kill_9_of_the_data_plane_and_200_partitions_take_produce() {
    let _serial = serial();
    if !can_run("create_partitions_crash") || !clients_installed("create_partitions_crash") {
        return;
    }
    let node = AfPacketNode::new("kq", 34, "");
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Broker::start(&node, dir.path());
    broker.create_topic("crash", 4);
    for p in 0..4 {
        produce_to_partition(&broker.bootstrap, "crash", p, 10, "old");
    }
    // kill -9 of the data plane while it grows the topic: whatever the moment, the count
    // after the restart is the old or the new one, and the directories match it.
    let pid = dataplane_pid(&broker).expect("a data plane runs");
    let config = broker.config.clone();
    let grow = std::thread::spawn(move || {
        Command::new(precursor())
            .args(["topic", "alter", "crash", "--partitions", "64", "--config"])
            .arg(&config)
            .output()
            .unwrap()
    });
    std::thread::sleep(Duration::from_millis(30));
    let killed = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let out = grow.join().unwrap();
    eprintln!(
        "grow during kill -9: {} {}",
        out.status,
        stderr(&out).trim()
    );
    // The supervisor restarts the data plane.
    wait_for("the data plane back", Duration::from_secs(60), || {
        dataplane_pid(&broker).is_some_and(|now| now != pid)
            && broker
                .cli(&["topic", "describe", "crash", "--json"])
                .status
                .success()
    });
    broker.wait_ready();
    let count = described_partitions(&broker, "crash");
    eprintln!("after kill -9 mid-grow: {count} partitions");
    assert!(count == 4 || count == 64, "{count} partitions");
    assert_eq!(
        partition_dirs(&node, "crash"),
        (0..count as u32).collect::<Vec<_>>(),
        "no directory of an uncommitted partition is left"
    );
    for p in 0..4 {
        assert_eq!(kcat_count(&broker, "crash", p, "old-"), 10, "partition {p}");
    }

    // Grow to 200 on one broker and produce to every partition.
    let free_before = free_hugepages();
    let out = broker.cli(&["topic", "alter", "crash", "--partitions", "200"]);
    assert_success(&out, "topic alter --partitions 200");
    let free_after = free_hugepages();
    eprintln!(
        "grow {count} -> 200 partitions: {} hugepages taken ({free_before} -> {free_after} free)",
        free_before.saturating_sub(free_after)
    );
    let result = create_partitions_py(
        CURRENT_LIBRDKAFKA_PYTHON,
        &["produce-all", &broker.bootstrap, "crash"],
    );
    assert_consumed(&result, 200, 20);
    assert_eq!(partition_dirs(&node, "crash"), (0..200).collect::<Vec<_>>());
    let dataplane = dataplane_pid(&broker).unwrap();
    let status = std::fs::read_to_string(format!("/proc/{dataplane}/status")).unwrap();
    let rss = status
        .lines()
        .find(|l| l.starts_with("VmRSS"))
        .unwrap_or("");
    eprintln!("data plane with 200 partitions (+ 0 other topics): {rss}");

    // kill -9 after the grow: everything holds.
    Command::new("kill")
        .args(["-KILL", &dataplane.to_string()])
        .status()
        .unwrap();
    wait_for("the data plane back", Duration::from_secs(60), || {
        dataplane_pid(&broker).is_some_and(|now| now != dataplane)
            && broker
                .cli(&["topic", "describe", "crash", "--json"])
                .status
                .success()
    });
    broker.wait_ready();
    assert_eq!(described_partitions(&broker, "crash"), 200);
    assert_eq!(kcat_count(&broker, "crash", 199, "p199-"), 20);
    assert_eq!(kcat_count(&broker, "crash", 0, "old-"), 10);
    broker.stop();
}
