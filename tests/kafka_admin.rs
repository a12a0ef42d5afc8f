//! Topic configurations end to end (docs/kafka.md, "Topic configurations"): CreateTopics
//! with configs, DescribeConfigs, AlterConfigs and IncrementalAlterConfigs through
//! confluent-kafka 2.16's AdminClient and kafka-python's KafkaAdminClient, the CLI's
//! `topic alter --config` and `topic describe`, `max.message.bytes` refusing a produce
//! (librdkafka and kcat see MSG_SIZE_TOO_LARGE) until it is raised, `compression.type=zstd`
//! recompressing what lz4 and uncompressed producers send, and all of it kept across a
//! broker restart. The Python scripts are in tests/kafka/.
//!
//! Needs root, kcat, python3-kafka and the confluent-kafka venv (ci/setup.sh). One e2e
//! test at a time: `flock /tmp/precursor-e2e.lock cargo test --release --test kafka_admin`.

mod common;

use common::kafka::*;
use common::*;
use std::io::Write;
use std::path::Path;
use std::process::Stdio;

/// A Python with a current confluent-kafka wheel (librdkafka 2.16), made by ci/setup.sh.
const CURRENT_LIBRDKAFKA_PYTHON: &str = "/opt/precursor-kafka-venv/bin/python";

/// The codec ids of every batch stored for `topic`, from the partition logs on disk.
fn stored_codecs(node: &AfPacketNode, topic: &str) -> Vec<u8> {
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
                for (header, _) in batches(&bytes).map_while(Result::ok) {
                    found.push((header.attributes & 0x07) as u8);
                }
            }
        }
    }
    found
}

fn run_python(interpreter: &str, script_name: &str, args: &[&str]) -> serde_json::Value {
    let out = kafka_client(interpreter)
        .arg(script(script_name))
        .args(args)
        .output()
        .expect("python runs");
    assert_success(&out, script_name);
    serde_json::from_str(stdout(&out).trim()).expect("one JSON line")
}

/// The `configs` of `topic describe --json`, name -> (value, source).
fn described(broker: &Broker, topic: &str) -> serde_json::Map<String, serde_json::Value> {
    let out = broker.cli(&["topic", "describe", topic, "--json"]);
    assert_success(&out, "topic describe");
    let topic: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    topic["configs"]
        .as_array()
        .expect("configs listed")
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_string(),
                serde_json::json!([c["value"], c["source"]]),
            )
        })
        .collect()
}

#[test]
fn topic_configs_through_admin_clients_and_the_cli_survive_a_restart() {
    let _serial = serial();
    if !can_run("topic_configs") || !clients_installed("topic_configs") {
        return;
    }
    assert!(
        Path::new(CURRENT_LIBRDKAFKA_PYTHON).exists(),
        "{CURRENT_LIBRDKAFKA_PYTHON} is missing: run ci/setup.sh"
    );
    let node = AfPacketNode::new("kc", 45, "");
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Broker::start(&node, dir.path());

    let seen = run_python(
        CURRENT_LIBRDKAFKA_PYTHON,
        "topic_configs.py",
        &[&broker.bootstrap, "alter"],
    );
    assert_eq!(seen["too_large"], serde_json::json!(["MSG_SIZE_TOO_LARGE"]));
    for (key, says) in [
        ("retention.ms", "a number of milliseconds"),
        (
            "compression.type",
            "one of producer, uncompressed, gzip, snappy, lz4, zstd",
        ),
        ("no.such.key", "unknown topic config"),
        ("cleanup.policy", "compaction is not supported yet"),
        ("max.message.bytes", "from 0 to 1048588"),
    ] {
        let message = seen["bad"][key].as_str().unwrap();
        assert!(message.contains(says), "{key}: {message:?} lacks {says:?}");
    }
    assert_eq!(seen["broker"]["message.max.bytes"], "1048588");
    assert_eq!(seen["zstd"]["read"], 2000, "{seen}");

    // Stored zstd, whatever the producers sent (lz4, uncompressed).
    let codecs = stored_codecs(&node, "cfg-zstd");
    assert!(!codecs.is_empty());
    assert!(
        codecs.iter().all(|c| *c == 4),
        "every cfg-zstd batch stored zstd: {codecs:?}"
    );

    // kcat: over the limit, refused with the broker's MSG_SIZE_TOO_LARGE.
    let line = "k".repeat(10_000);
    let mut kcat = kafka_client("kcat")
        .args(["-P", "-b", &broker.bootstrap, "-t", "cfg-limit"])
        .args(["-X", "compression.codec=none"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kcat runs");
    kcat.stdin
        .take()
        .unwrap()
        .write_all(format!("{line}\n").as_bytes())
        .unwrap();
    let out = kcat.wait_with_output().unwrap();
    let said = format!("{}{}", stdout(&out), stderr(&out));
    assert!(
        said.contains("Message size too large") || said.contains("MSG_SIZE_TOO_LARGE"),
        "kcat: {said}"
    );

    // kafka-python's DescribeConfigs.
    let kafka_python = run_python(
        PYTHON,
        "kafka_python_configs.py",
        &[&broker.bootstrap, "cfg-limit"],
    );
    assert_eq!(kafka_python["topic"]["max.message.bytes"], "4096");
    assert_eq!(kafka_python["topic"]["cleanup.policy"], "delete");
    assert_eq!(kafka_python["broker"]["message.max.bytes"], "1048588");

    // The CLI: describe, alter, and a bad value with its message.
    let configs = described(&broker, "cfg-limit");
    assert_eq!(
        configs["max.message.bytes"],
        serde_json::json!(["4096", "dynamic"])
    );
    assert_eq!(
        configs["compression.type"],
        serde_json::json!(["producer", "default"])
    );
    let out = broker.cli(&[
        "topic",
        "alter",
        "cfg-zstd",
        "--set",
        "retention.ms=86400000",
        "--set",
        "min.insync.replicas=1",
    ]);
    assert_success(&out, "topic alter --config");
    let configs = described(&broker, "cfg-zstd");
    assert_eq!(
        configs["retention.ms"],
        serde_json::json!(["86400000", "dynamic"])
    );
    let out = broker.cli(&["topic", "alter", "cfg-zstd", "--unset", "retention.ms"]);
    assert_success(&out, "topic alter --unset");
    assert_eq!(described(&broker, "cfg-zstd")["retention.ms"][1], "default");
    let out = broker.cli(&["topic", "alter", "cfg-zstd", "--set", "retention.ms=abc"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("retention.ms=\"abc\"") && stderr(&out).contains("invalid_config"),
        "{}",
        stderr(&out)
    );
    let out = broker.cli(&[
        "topic",
        "create",
        "cfg-cli",
        "-p",
        "1",
        "--set",
        "compression.type=gzip",
    ]);
    assert_success(&out, "topic create --config");
    assert_eq!(
        described(&broker, "cfg-cli")["compression.type"],
        serde_json::json!(["gzip", "dynamic"])
    );

    // Every configuration survives a restart (the data plane's manifest).
    broker.restart();
    run_python(
        CURRENT_LIBRDKAFKA_PYTHON,
        "topic_configs.py",
        &[&broker.bootstrap, "restart"],
    );
    assert_eq!(
        described(&broker, "cfg-cli")["compression.type"],
        serde_json::json!(["gzip", "dynamic"])
    );
    broker.stop();
}
