//! The Kafka gateway of a cluster end to end: three brokers (`precursor cluster up`, each
//! `precursor up` with a DPDK af_packet data plane in its own network namespace on a
//! bridge) and Kafka clients nobody here wrote, from the host namespace: kcat and
//! confluent-kafka on Debian's librdkafka 2.0.2, and confluent-kafka 2.16's bundled
//! librdkafka (KIP-320: it validates its position with OffsetForLeaderEpoch after a leader
//! change). Hand-made requests check the answers clients only react to: a follower's
//! NOT_LEADER_OR_FOLLOWER, FENCED/UNKNOWN_LEADER_EPOCH, OffsetForLeaderEpoch's end offsets,
//! one coordinator per group whichever broker is asked.
//!
//! Root only (namespaces, veths, hugepages), kcat, python3-confluent-kafka and the venv of
//! ci/setup.sh; each test runs alone (`serial`). Nothing here asserts how long anything
//! took: waits are bounded liveness checks.

mod common;

use common::cluster::{field, wait_until, Cluster, ClusterOptions};
use common::kafka::{kafka_client, kcat_produce, LineProcess};
use common::*;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The Python with Debian's python3-confluent-kafka (librdkafka 2.0.2).
const PYTHON: &str = "/usr/bin/python3";
/// A Python with a current confluent-kafka wheel (librdkafka 2.16), made by ci/setup.sh.
const CURRENT_LIBRDKAFKA_PYTHON: &str = "/opt/precursor-kafka-venv/bin/python";

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/kafka")
        .join(name)
}

/// Whether the Kafka clients are installed; says so loudly when not.
fn clients_installed(test: &str) -> bool {
    let kcat = kafka_client("kcat").arg("-V").output().is_ok();
    let python = |interpreter| {
        kafka_client(interpreter)
            .args(["-c", "import confluent_kafka"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let installed = kcat && python(PYTHON) && python(CURRENT_LIBRDKAFKA_PYTHON);
    if !installed {
        eprintln!(
            "SKIPPED {test}: needs kcat, python3-confluent-kafka and {CURRENT_LIBRDKAFKA_PYTHON} \
             (ci/setup.sh)"
        );
    }
    installed
}

/// (leader, leader epoch) of each partition once every broker knows the same ones.
fn settled_leaders(cluster: &Cluster, topic: &str) -> Vec<(u32, i32)> {
    let view = |i| -> Vec<(u32, i32)> {
        cluster
            .partitions(i, topic)
            .iter()
            .map(|p| (field(p, "leader") as u32, field(p, "leader_epoch") as i32))
            .collect()
    };
    let mut settled = Vec::new();
    wait_until(
        &format!("every partition of {topic} led, alike on every broker"),
        || {
            let views: Vec<_> = cluster.nodes().iter().map(|n| view(n.id)).collect();
            let agreed = views.windows(2).all(|w| w[0] == w[1]);
            let led = views[0].iter().all(|(leader, _)| *leader != 0);
            settled = views[0].clone();
            agreed && led
        },
    );
    settled
}

/// Creates `topic` on every broker (through broker 1) with every broker a replica.
fn create_replicated(cluster: &Cluster, topic: &str, partitions: u32) -> Vec<(u32, i32)> {
    let out = cluster.precursor(
        1,
        &[
            "topic",
            "create",
            topic,
            "--partitions",
            &partitions.to_string(),
            "--replication-factor",
            "3",
            "--min-insync-replicas",
            "2",
        ],
    );
    assert_success(&out, &format!("topic create {topic}"));
    settled_leaders(cluster, topic)
}

/// Waits until every broker holds what the leader of each partition holds, and the
/// leader's high watermark is there.
fn wait_replicated(cluster: &Cluster, topic: &str, leaders: &[(u32, i32)]) {
    wait_until(&format!("{topic} on every replica"), || {
        leaders.iter().enumerate().all(|(p, (leader, _))| {
            let on_leader = &cluster.partitions(*leader, topic)[p];
            let end = field(on_leader, "end_offset");
            field(on_leader, "high_watermark") == end
                && cluster
                    .nodes()
                    .iter()
                    .all(|n| field(&cluster.partitions(n.id, topic)[p], "end_offset") == end)
        })
    });
}

/// The sum of `metric` lines containing `label` on broker `i`'s /metrics.
fn metric(cluster: &Cluster, i: u32, metric: &str, label: &str) -> f64 {
    let mut stream = TcpStream::connect(cluster.node(i).metrics_address()).unwrap();
    write!(stream, "GET /metrics HTTP/1.0\r\nHost: test\r\n\r\n").unwrap();
    let mut page = String::new();
    stream.read_to_string(&mut page).unwrap();
    page.lines()
        .filter(|l| l.starts_with(metric) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Produces `values` with kcat (acks=-1, keys spreading them over the partitions),
/// bootstrapped from every broker.
fn produce_values(cluster: &Cluster, topic: &str, values: &[String]) {
    let input: String = values
        .iter()
        .enumerate()
        .map(|(i, value)| format!("k{}:{value}\n", i % 61))
        .collect();
    let bootstrap = cluster.bootstrap_servers();
    kcat_produce(
        &[
            "-b",
            &bootstrap,
            "-P",
            "-t",
            topic,
            "-K",
            ":",
            "-X",
            "acks=-1",
            "-X",
            "enable.idempotence=true",
        ],
        &input,
    );
}

/// A Python client process and the lines it printed.
struct Client {
    process: LineProcess,
}

impl Client {
    fn start(interpreter: &str, name: &str, args: &[&str]) -> Client {
        let mut command = kafka_client(interpreter);
        command.arg(script(name)).args(args);
        Client {
            process: LineProcess::spawn(command),
        }
    }

    /// The partitions of the last ASSIGNED line (group_member.py; None before any).
    fn assigned(&self) -> Option<BTreeSet<u32>> {
        let lines = self.process.lines();
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

    /// (partition, offset, value) of every message it read.
    fn messages(&self) -> Vec<(u32, u64, String)> {
        self.process
            .lines()
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

    fn line_starting(&self, prefix: &str) -> Option<String> {
        let lines = self.process.lines();
        lines
            .iter()
            .find_map(|l| l.strip_prefix(prefix).map(str::to_string))
    }

    fn errors(&self) -> Vec<String> {
        let lines = self.process.lines();
        lines
            .iter()
            .filter(|l| l.starts_with("ERROR"))
            .cloned()
            .collect()
    }
}

// ---- hand-made requests (big-endian, request header v1) ----

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

/// Sends one request on a new connection; its answer (size prefix and correlation id
/// removed).
fn exchange(address: &str, request: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream.write_all(request).unwrap();
    let mut size = [0u8; 4];
    stream.read_exact(&mut size).expect("an answer");
    let mut answer = vec![0u8; i32::from_be_bytes(size) as usize];
    stream.read_exact(&mut answer).unwrap();
    answer.split_off(4)
}

fn string(text: &str) -> Vec<u8> {
    let mut out = (text.len() as i16).to_be_bytes().to_vec();
    out.extend_from_slice(text.as_bytes());
    out
}

/// Reads big-endian fields off the front of an answer.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> [u8; N] {
        let (head, rest) = self.0.split_at(N);
        self.0 = rest;
        head.try_into().unwrap()
    }
    fn i16(&mut self) -> i16 {
        i16::from_be_bytes(self.take())
    }
    fn i32(&mut self) -> i32 {
        i32::from_be_bytes(self.take())
    }
    fn i64(&mut self) -> i64 {
        i64::from_be_bytes(self.take())
    }
    fn string(&mut self) -> String {
        let length = self.i16() as usize;
        let (text, rest) = self.0.split_at(length);
        self.0 = rest;
        String::from_utf8(text.to_vec()).unwrap()
    }
}

/// One topic, one partition: the start every per-partition request body shares.
fn one_partition(topic: &str, partition: i32) -> Vec<u8> {
    let mut body = 1i32.to_be_bytes().to_vec();
    body.extend_from_slice(&string(topic));
    body.extend_from_slice(&1i32.to_be_bytes());
    body.extend_from_slice(&partition.to_be_bytes());
    body
}

/// ListOffsets v4 of the latest offset, naming `current_leader_epoch`: (error, offset,
/// leader epoch).
fn list_latest(
    address: &str,
    topic: &str,
    partition: i32,
    current_leader_epoch: i32,
) -> (i16, i64, i32) {
    let mut body = (-1i32).to_be_bytes().to_vec(); // replica id
    body.push(0); // isolation level
    body.extend_from_slice(&one_partition(topic, partition));
    body.extend_from_slice(&current_leader_epoch.to_be_bytes());
    body.extend_from_slice(&(-1i64).to_be_bytes()); // latest
    let answer = exchange(address, &raw_request(2, 4, 21, &body));
    let mut r = Reader(&answer);
    r.i32(); // throttle
    assert_eq!(r.i32(), 1);
    assert_eq!(r.string(), topic);
    assert_eq!(r.i32(), 1);
    assert_eq!(r.i32(), partition);
    let error = r.i16();
    r.i64(); // timestamp
    (error, r.i64(), r.i32())
}

/// OffsetForLeaderEpoch v2 (librdkafka's): (error, leader epoch, end offset).
fn end_of_epoch(
    address: &str,
    topic: &str,
    partition: i32,
    current_leader_epoch: i32,
    leader_epoch: i32,
) -> (i16, i32, i64) {
    let mut body = one_partition(topic, partition);
    body.extend_from_slice(&current_leader_epoch.to_be_bytes());
    body.extend_from_slice(&leader_epoch.to_be_bytes());
    let answer = exchange(address, &raw_request(23, 2, 22, &body));
    let mut r = Reader(&answer);
    r.i32(); // throttle
    assert_eq!(r.i32(), 1);
    assert_eq!(r.string(), topic);
    assert_eq!(r.i32(), 1);
    let error = r.i16();
    assert_eq!(r.i32(), partition);
    (error, r.i32(), r.i64())
}

/// Produce v3 of one batch, acks=1: the partition's error code.
fn produce_error(address: &str, topic: &str, partition: i32) -> i16 {
    produce_value_error(address, topic, partition, b"hand-made")
}

/// Produce v3 of one batch of one record holding `value`, acks=1: the partition's error.
fn produce_value_error(address: &str, topic: &str, partition: i32, value: &[u8]) -> i16 {
    use precursor_protocol::compression::Compression;
    use precursor_protocol::record_batch::RecordBatchBuilder;
    let mut builder = RecordBatchBuilder::new(Compression::None, -1, -1, -1, 1_700_000_000_000);
    builder.append(1_700_000_000_000, Some(b"k"), value, &[]);
    let batch = builder.finish();
    let mut body = (-1i16).to_be_bytes().to_vec(); // transactional id
    body.extend_from_slice(&1i16.to_be_bytes()); // acks
    body.extend_from_slice(&10_000i32.to_be_bytes());
    body.extend_from_slice(&one_partition(topic, partition));
    body.extend_from_slice(&(batch.len() as i32).to_be_bytes());
    body.extend_from_slice(&batch);
    let answer = exchange(address, &raw_request(0, 3, 23, &body));
    let mut r = Reader(&answer);
    assert_eq!(r.i32(), 1);
    assert_eq!(r.string(), topic);
    assert_eq!(r.i32(), 1);
    assert_eq!(r.i32(), partition);
    r.i16()
}

/// FindCoordinator v0 of a group: (error, node id, host, port).
fn coordinator(address: &str, group: &str) -> (i16, i32, String, i32) {
    let answer = exchange(address, &raw_request(10, 0, 24, &string(group)));
    let mut r = Reader(&answer);
    (r.i16(), r.i32(), r.string(), r.i32())
}

const NOT_LEADER_OR_FOLLOWER: i16 = 6;
const FENCED_LEADER_EPOCH: i16 = 74;
const UNKNOWN_LEADER_EPOCH: i16 = 75;

#[test]
fn kafka_clients_find_every_leader_and_a_group_has_one_coordinator() {
    let _serial = serial();
    let test = "kafka_clients_find_every_leader_and_a_group_has_one_coordinator";
    if !can_run(test) || !clients_installed(test) {
        return;
    }
    let cluster = Cluster::up(3, ClusterOptions::default());
    let leaders = create_replicated(&cluster, "orders", 6);
    let leading: BTreeSet<u32> = leaders.iter().map(|(leader, _)| *leader).collect();
    assert_eq!(
        leading.len(),
        3,
        "leaders spread over the brokers: {leaders:?}"
    );

    // Metadata from one broker: all three, and each partition's leader, replicas, ISR.
    let out = kafka_client("kcat")
        .args(["-b", &cluster.node(2).kafka, "-L", "-J", "-t", "orders"])
        .output()
        .unwrap();
    assert_success(&out, "kcat -L -J");
    let metadata: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    let brokers: BTreeMap<u64, String> = metadata["brokers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["id"].as_u64().unwrap(),
                b["name"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let expected: BTreeMap<u64, String> = cluster
        .nodes()
        .iter()
        .map(|n| (u64::from(n.id), n.kafka.clone()))
        .collect();
    assert_eq!(brokers, expected, "{metadata}");
    let topic = &metadata["topics"][0];
    for (p, (leader, _)) in leaders.iter().enumerate() {
        let partition = &topic["partitions"][p];
        assert_eq!(partition["partition"], p as u64, "{partition}");
        assert_eq!(partition["leader"], u64::from(*leader), "{partition}");
        assert_eq!(
            partition["replicas"].as_array().unwrap().len(),
            3,
            "{partition}"
        );
        assert!(
            !partition["isrs"].as_array().unwrap().is_empty(),
            "{partition}"
        );
    }

    // librdkafka 2.16 (idempotent, acks=all, every codec) bootstrapped from every broker:
    // each batch to its partition's leader, everything read back once.
    let per_codec = 2_000;
    let out = kafka_client(CURRENT_LIBRDKAFKA_PYTHON)
        .arg(script("idempotent_codecs.py"))
        .args([
            &cluster.bootstrap_servers(),
            "orders",
            &per_codec.to_string(),
        ])
        .output()
        .unwrap();
    assert_success(&out, "idempotent_codecs.py");
    let result: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    for codec in ["lz4", "zstd", "snappy", "gzip"] {
        assert_eq!(result[codec]["delivered"], per_codec, "{codec}: {result}");
        assert_eq!(
            result[codec]["distinct_offsets"], per_codec,
            "{codec}: {result}"
        );
    }
    assert_eq!(result["consumed_distinct"], 4 * per_codec, "{result}");
    assert_eq!(result["missing"], 0, "{result}");
    wait_replicated(&cluster, "orders", &leaders);

    // Hand-made requests: a follower turns a partition away, the leader checks epochs.
    let (leader, epoch) = leaders[0];
    let follower = (1..=3).find(|&i| i != leader).unwrap();
    let (at_leader, at_follower) = (&cluster.node(leader).kafka, &cluster.node(follower).kafka);
    assert_eq!(
        produce_error(at_follower, "orders", 0),
        NOT_LEADER_OR_FOLLOWER
    );
    assert_eq!(
        list_latest(at_follower, "orders", 0, -1).0,
        NOT_LEADER_OR_FOLLOWER
    );
    assert_eq!(
        list_latest(at_follower, "orders", 0, epoch).0,
        NOT_LEADER_OR_FOLLOWER
    );
    let end = field(&cluster.partitions(leader, "orders")[0], "end_offset") as i64;
    assert_eq!(list_latest(at_leader, "orders", 0, epoch), (0, end, epoch));
    assert_eq!(list_latest(at_leader, "orders", 0, -1), (0, end, epoch));
    assert_eq!(
        list_latest(at_leader, "orders", 0, epoch + 1).0,
        UNKNOWN_LEADER_EPOCH
    );
    if epoch > 0 {
        assert_eq!(
            list_latest(at_leader, "orders", 0, epoch - 1).0,
            FENCED_LEADER_EPOCH
        );
    }
    // OffsetForLeaderEpoch: the current epoch ends at the log end; every batch of the
    // topic was written in it, so an older one ends at offset 0.
    assert_eq!(
        end_of_epoch(at_leader, "orders", 0, epoch, epoch),
        (0, epoch, end)
    );
    assert_eq!(
        end_of_epoch(at_leader, "orders", 0, -1, epoch + 1).0,
        UNKNOWN_LEADER_EPOCH
    );
    assert_eq!(
        end_of_epoch(at_follower, "orders", 0, epoch, epoch).0,
        NOT_LEADER_OR_FOLLOWER
    );
    if epoch > 0 {
        assert_eq!(
            end_of_epoch(at_leader, "orders", 0, epoch, epoch - 1),
            (0, epoch - 1, 0)
        );
        assert_eq!(
            end_of_epoch(at_leader, "orders", 0, epoch - 1, epoch).0,
            FENCED_LEADER_EPOCH
        );
    }

    // A group has one coordinator whichever broker is asked; two members bootstrapped
    // from different brokers split the partitions between them.
    let coordinators: BTreeSet<(i16, i32, String, i32)> = cluster
        .nodes()
        .iter()
        .map(|n| coordinator(&n.kafka, "split"))
        .collect();
    assert_eq!(coordinators.len(), 1, "{coordinators:?}");
    let (error, node, host, port) = coordinators.into_iter().next().unwrap();
    assert_eq!(error, 0);
    assert_eq!(cluster.node(node as u32).kafka, format!("{host}:{port}"));
    let first = Client::start(
        PYTHON,
        "group_member.py",
        &[&cluster.node(1).kafka, "split", "orders"],
    );
    let second = Client::start(
        PYTHON,
        "group_member.py",
        &[&cluster.node(3).kafka, "split", "orders"],
    );
    wait_until("the two members to split the six partitions", || {
        match (first.assigned(), second.assigned()) {
            (Some(a), Some(b)) => {
                a.is_disjoint(&b) && a.union(&b).count() == 6 && !a.is_empty() && !b.is_empty()
            }
            _ => false,
        }
    });
    let values: Vec<String> = (0..600).map(|i| format!("group-{i}")).collect();
    produce_values(&cluster, "orders", &values);
    let read = || -> Vec<String> {
        [&first, &second]
            .iter()
            .flat_map(|m| m.messages())
            .map(|(_, _, value)| value)
            .filter(|v| v.starts_with("group-"))
            .collect()
    };
    wait_until("the members to read the 600 messages", || {
        read().len() >= values.len()
    });
    let seen = read();
    let distinct: BTreeSet<&String> = seen.iter().collect();
    assert_eq!(distinct.len(), values.len(), "every message read");
    assert_eq!(seen.len(), values.len(), "none read twice");
    assert!(
        first.errors().is_empty() && second.errors().is_empty(),
        "{:?} {:?}",
        first.errors(),
        second.errors()
    );
}

#[test]
fn a_librdkafka_consumer_follows_its_leader_to_a_new_epoch_and_loses_nothing() {
    let _serial = serial();
    let test = "a_librdkafka_consumer_follows_its_leader_to_a_new_epoch_and_loses_nothing";
    if !can_run(test) || !clients_installed(test) {
        return;
    }
    let cluster = Cluster::up(3, ClusterOptions::default());
    let leaders = create_replicated(&cluster, "epochs", 1);
    let (leader, epoch) = leaders[0];
    let before: Vec<String> = (0..1000).map(|i| format!("before-{i}")).collect();
    produce_values(&cluster, "epochs", &before);
    wait_replicated(&cluster, "epochs", &leaders);

    // librdkafka 2.16 in a group, bootstrapped from every broker, reads the first half.
    let consumer = Client::start(
        CURRENT_LIBRDKAFKA_PYTHON,
        "follow_leader.py",
        &[&cluster.bootstrap_servers(), "followers", "epochs", "2000"],
    );
    wait_until("the consumer to read the first 1000", || {
        consumer.messages().len() >= 1000
    });

    // The leader's data plane dies (kill -9); `precursor up` starts it again and it leads
    // at a new epoch. The consumer is fenced off the old epoch, asks where its epoch
    // ended (OffsetForLeaderEpoch) and goes on.
    let pid = cluster.kill_dataplane(leader);
    cluster.wait_dataplane(leader, Some(pid));
    let mut after_restart = Vec::new();
    wait_until("a leader at a newer epoch", || {
        after_restart = settled_leaders(&cluster, "epochs");
        after_restart[0].1 > epoch
    });
    let (new_leader, new_epoch) = after_restart[0];
    eprintln!("epochs: leader {leader} at {epoch}, then {new_leader} at {new_epoch}");
    let after: Vec<String> = (0..1000).map(|i| format!("after-{i}")).collect();
    produce_values(&cluster, "epochs", &after);
    wait_until("the consumer to finish", || {
        consumer.line_starting("DONE ").is_some()
    });
    let done = consumer.line_starting("DONE ").unwrap();
    eprintln!(
        "follow_leader.py: {done}; errors seen: {:?}",
        consumer.errors()
    );

    // Every message once, in offset order, none lost across the epoch change.
    let messages = consumer.messages();
    let offsets: Vec<u64> = messages.iter().map(|(_, offset, _)| *offset).collect();
    assert_eq!(
        offsets,
        (0..2000).collect::<Vec<u64>>(),
        "offsets 0..2000, each once"
    );
    let values: Vec<&str> = messages.iter().map(|(_, _, v)| v.as_str()).collect();
    let expected: Vec<&str> = before.iter().chain(&after).map(String::as_str).collect();
    assert_eq!(values, expected);
    // It did validate its position against the new epoch.
    let asked = metric(
        &cluster,
        new_leader,
        "precursor_gateway_requests_total",
        "api=\"OffsetForLeaderEpoch\"",
    );
    assert!(
        asked >= 1.0,
        "no OffsetForLeaderEpoch reached broker {new_leader}"
    );
    // And the end of the old epoch it was told is where the new epoch began.
    let at_leader = &cluster.node(new_leader).kafka;
    assert_eq!(
        end_of_epoch(at_leader, "epochs", 0, new_epoch, epoch),
        (0, epoch, 1000)
    );
}

#[test]
fn a_groups_coordinator_killed_whole_hands_the_group_and_its_committed_offsets_on() {
    let _serial = serial();
    let test = "a_groups_coordinator_killed_whole_hands_the_group_and_its_committed_offsets_on";
    if !can_run(test) || !clients_installed(test) {
        return;
    }
    // With the metadata quorum, committed offsets are committed by a majority of voters
    // and a group's coordinator is a hash over the live brokers.
    let cluster = Cluster::up_quorum(3);
    let leaders = create_replicated(&cluster, "handed", 3);
    const TOTAL: usize = 3_000;
    let values: Vec<String> = (0..TOTAL).map(|i| format!("handed-{i}")).collect();
    produce_values(&cluster, "handed", &values);
    wait_replicated(&cluster, "handed", &leaders);

    // Every broker names the same coordinator for the group.
    let group = "handed-over";
    let asked: BTreeSet<i32> = cluster
        .nodes()
        .iter()
        .map(|n| {
            let (error, node, _, _) = coordinator(&n.kafka, group);
            assert_eq!(error, 0, "FindCoordinator at broker {}", n.id);
            node
        })
        .collect();
    assert_eq!(asked.len(), 1, "one coordinator: {asked:?}");
    let coordinating = *asked.iter().next().unwrap() as u32;

    // librdkafka 2.16 reads about half, committing (synchronously) after every batch and
    // printing a message only once its commit was answered.
    let first = Client::start(
        CURRENT_LIBRDKAFKA_PYTHON,
        "follow_leader.py",
        &[
            &cluster.bootstrap_servers(),
            group,
            "handed",
            &(TOTAL / 2).to_string(),
        ],
    );
    wait_until("the first consumer to finish", || {
        first.line_starting("DONE ").is_some()
    });
    let read_first = first.messages();
    assert!(read_first.len() >= TOTAL / 2, "{}", read_first.len());
    assert!(first.errors().is_empty(), "{:?}", first.errors());
    drop(first);

    // The coordinator's broker dies whole. The quorum fences it; its groups move to the
    // live brokers, which read the offsets the quorum committed.
    cluster.kill_broker(coordinating);
    let survivors: Vec<u32> = (1..=3).filter(|&id| id != coordinating).collect();
    let mut heir = 0;
    wait_until("the survivors to agree on a new coordinator", || {
        let answers: Vec<(i16, i32)> = survivors
            .iter()
            .map(|&id| {
                let (error, node, _, _) = coordinator(&cluster.node(id).kafka, group);
                (error, node)
            })
            .collect();
        heir = answers[0].1 as u32;
        answers.iter().all(|a| *a == answers[0]) && answers[0].0 == 0 && heir != coordinating
    });
    eprintln!("group {group}: coordinator {coordinating} killed -9, now {heir}");

    // A new member of the group goes on from the committed offsets: it reads exactly what
    // the first did not, nothing twice.
    let rest = TOTAL - read_first.len();
    let second = Client::start(
        CURRENT_LIBRDKAFKA_PYTHON,
        "follow_leader.py",
        &[
            &cluster.bootstrap_servers(),
            group,
            "handed",
            &rest.to_string(),
        ],
    );
    wait_until("the second consumer to finish", || {
        second.line_starting("DONE ").is_some()
    });
    let read_second = second.messages();
    let first_seen: BTreeSet<(u32, u64)> = read_first.iter().map(|(p, o, _)| (*p, *o)).collect();
    let again: Vec<&(u32, u64, String)> = read_second
        .iter()
        .filter(|(p, o, _)| first_seen.contains(&(*p, *o)))
        .collect();
    assert!(
        again.is_empty(),
        "{} messages read again after the coordinator moved (committed offsets lost?): {:?}",
        again.len(),
        again.iter().take(5).collect::<Vec<_>>()
    );
    let mut all: Vec<String> = read_first
        .iter()
        .chain(&read_second)
        .map(|(_, _, v)| v.clone())
        .collect();
    all.sort();
    let mut expected = values.clone();
    expected.sort();
    assert_eq!(
        all, expected,
        "every message read once across the two members"
    );
    // The commits went through the quorum: the heir's /metrics shows its OffsetCommits.
    let commits = metric(
        &cluster,
        heir,
        "precursor_gateway_requests_total",
        "api=\"OffsetCommit\"",
    );
    assert!(commits >= 1.0, "no OffsetCommit reached broker {heir}");
}

/// The quorum leader each broker names in its status.
fn quorum_leaders(cluster: &Cluster) -> Vec<serde_json::Value> {
    cluster
        .nodes()
        .iter()
        .map(|n| cluster.precursor_json(n.id, &["status"])["quorum"]["leader"].clone())
        .collect()
}

#[test]
fn admin_clients_describe_the_cluster_and_elect_preferred_leaders_through_the_quorum() {
    let _serial = serial();
    let test = "admin_clients_describe_the_cluster_and_elect_preferred_leaders_through_the_quorum";
    if !can_run(test) || !clients_installed(test) {
        return;
    }
    let cluster = Cluster::up_quorum(3);
    const PARTITIONS: u32 = 3;
    create_replicated(&cluster, "elected", PARTITIONS);
    // Partition 0's leadership moves off its preferred replica (through the quorum).
    let partition = &cluster.partitions(1, "elected")[0];
    let replicas: Vec<u32> = partition["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_u64().unwrap() as u32)
        .collect();
    let (preferred, other) = (replicas[0], replicas[1]);
    let out = cluster.precursor(
        1,
        &[
            "topic",
            "lead",
            "elected",
            "--partition",
            "0",
            "--broker-id",
            &other.to_string(),
        ],
    );
    assert_success(&out, "topic lead away from the preferred replica");
    wait_until(
        "partition 0 led by the other replica, with 3 in sync",
        || {
            let p = &cluster.partitions(other, "elected")[0];
            field(p, "leader") as u32 == other && p["isr"].as_array().is_some_and(|i| i.len() == 3)
        },
    );

    let before = quorum_leaders(&cluster);
    let out = kafka_client(CURRENT_LIBRDKAFKA_PYTHON)
        .arg(script("cluster_admin.py"))
        .args([
            &cluster.bootstrap_servers(),
            "elected",
            &PARTITIONS.to_string(),
        ])
        .output()
        .unwrap();
    assert_success(&out, "cluster_admin.py");
    let result: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    eprintln!("cluster_admin.py: {result}");
    assert_eq!(result["brokers"], serde_json::json!([1, 2, 3]), "{result}");
    // The controller is the quorum's leader as the answering broker saw it (a loaded
    // machine may elect another meanwhile, and a follower learns of it a heartbeat later):
    // one of the leaders the brokers named before or after the script.
    let mut seen = before;
    seen.extend(quorum_leaders(&cluster));
    assert!(
        seen.contains(&result["controller"]),
        "controller {} while the brokers named {seen:?}",
        result["controller"]
    );
    // Partition 0 went back to its preferred replica; the others needed nothing.
    assert_eq!(
        result["preferred"]["0"],
        serde_json::Value::Null,
        "{result}"
    );
    for p in 1..PARTITIONS {
        assert_eq!(
            result["preferred"][p.to_string()],
            "ELECTION_NOT_NEEDED",
            "{result}"
        );
    }
    // Every partition has a leader: an unclean election is not needed anywhere.
    for p in 0..PARTITIONS {
        assert_eq!(
            result["unclean"][p.to_string()],
            "ELECTION_NOT_NEEDED",
            "{result}"
        );
    }
    wait_until(
        "partition 0 led by its preferred replica on every broker",
        || {
            (1..=3)
                .all(|i| field(&cluster.partitions(i, "elected")[0], "leader") as u32 == preferred)
        },
    );
}

/// create_partitions.py `produce-all` (confluent-kafka 2.16, acks=all): every partition of
/// `topic` gets 20 messages, read back; the messages per partition it found of its kind.
fn produce_to_every_partition(cluster: &Cluster, topic: &str) -> serde_json::Value {
    let out = kafka_client(CURRENT_LIBRDKAFKA_PYTHON)
        .arg(script("create_partitions.py"))
        .args(["produce-all", &cluster.bootstrap_servers(), topic])
        .output()
        .unwrap();
    assert_success(&out, "create_partitions.py produce-all");
    serde_json::from_str(stdout(&out).trim()).unwrap()
}

#[test]
fn a_replicated_topic_grows_through_the_quorum_and_its_new_partitions_survive_a_leader_kill() {
    let _serial = serial();
    let test = "a_replicated_topic_grows_through_the_quorum";
    if !can_run(test) || !clients_installed(test) {
        return;
    }
    let cluster = Cluster::up_quorum(3);
    create_replicated(&cluster, "grown", 2);
    let out = cluster.precursor(2, &["topic", "alter", "grown", "--partitions", "6"]);
    assert_success(&out, "topic alter --partitions 6");
    eprintln!("{}", stdout(&out));
    // Every broker has the six, each new one led (the quorum's first live replica) with
    // all three replicas in sync.
    let leaders = settled_leaders(&cluster, "grown");
    assert_eq!(leaders.len(), 6);
    wait_until("every partition of grown with 3 in sync", || {
        cluster.nodes().iter().all(|n| {
            let partitions = cluster.partitions(n.id, "grown");
            partitions.len() == 6
                && partitions
                    .iter()
                    .all(|p| p["isr"].as_array().is_some_and(|i| i.len() == 3))
        })
    });
    // Shrinking, or a count some broker has already, is refused everywhere.
    let out = cluster.precursor(3, &["topic", "alter", "grown", "--partitions", "6"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("topic grown has 6 partitions; partitions can only grow"),
        "{}",
        stderr(&out)
    );
    // acks=all to every partition, the new ones included, and read back.
    let result = produce_to_every_partition(&cluster, "grown");
    assert_eq!(result["partitions"], 6, "{result}");
    for p in 0..6 {
        assert_eq!(
            result["consumed"][p.to_string()],
            20,
            "partition {p}: {result}"
        );
    }
    wait_replicated(&cluster, "grown", &leaders);
    // The leader of a new partition dies: another in-sync replica takes over, nothing of
    // what was acknowledged is lost, and acks=all produce goes on.
    let (victim, _) = leaders[5];
    cluster.kill_broker(victim);
    let survivor = cluster
        .nodes()
        .iter()
        .map(|n| n.id)
        .find(|&id| id != victim)
        .unwrap();
    wait_until("partition 5 led by a survivor", || {
        let p = &cluster.partitions(survivor, "grown")[5];
        let leader = field(p, "leader") as u32;
        leader != 0 && leader != victim
    });
    let result = produce_to_every_partition(&cluster, "grown");
    for p in 0..6 {
        assert_eq!(
            result["consumed"][p.to_string()],
            40,
            "partition {p}: {result}"
        );
    }
    cluster.down();
}

/// DescribeConfigs v1 of one topic key on broker `address`: (error, value).
fn described_config(address: &str, topic: &str, key: &str) -> (i16, Option<String>) {
    let mut body = 1i32.to_be_bytes().to_vec();
    body.push(2); // TOPIC
    body.extend_from_slice(&string(topic));
    body.extend_from_slice(&1i32.to_be_bytes());
    body.extend_from_slice(&string(key));
    body.push(0); // include_synonyms
    let answer = exchange(address, &raw_request(32, 1, 25, &body));
    let mut r = Reader(&answer);
    let _throttle = r.i32();
    assert_eq!(r.i32(), 1, "one resource");
    let error = r.i16();
    let message_bytes = r.i16();
    if message_bytes > 0 {
        r.0 = &r.0[message_bytes as usize..];
    }
    let _resource_type = r.take::<1>();
    assert_eq!(r.string(), topic);
    if r.i32() < 1 {
        return (error, None);
    }
    assert_eq!(r.string(), key);
    let value_bytes = r.i16();
    let value = (value_bytes >= 0).then(|| {
        let (text, rest) = r.0.split_at(value_bytes as usize);
        r.0 = rest;
        String::from_utf8(text.to_vec()).unwrap()
    });
    (error, value)
}

#[test]
fn an_altered_topic_config_is_on_every_broker_and_enforced_after_a_failover() {
    let _serial = serial();
    let test = "an_altered_topic_config_is_on_every_broker_and_enforced_after_a_failover";
    if !can_run(test) {
        return;
    }
    let cluster = Cluster::up_quorum(3);
    let leaders = create_replicated(&cluster, "cfg-quorum", 1);
    // Altered through broker 2 (the quorum commits it, every member applies it).
    let out = cluster.precursor(
        2,
        &[
            "topic",
            "alter",
            "cfg-quorum",
            "--set",
            "max.message.bytes=2048",
        ],
    );
    assert_success(&out, "topic alter --set max.message.bytes=2048");
    for node in cluster.nodes() {
        wait_until(
            &format!("max.message.bytes 2048 on broker {}", node.id),
            || {
                described_config(&node.kafka, "cfg-quorum", "max.message.bytes")
                    == (0, Some("2048".into()))
            },
        );
    }
    let (leader, _) = leaders[0];
    let big = vec![b'x'; 4000];
    let kafka = |i: u32| cluster.node(i).kafka.clone();
    assert_eq!(
        produce_value_error(&kafka(leader), "cfg-quorum", 0, &big),
        10
    );
    assert_eq!(
        produce_value_error(&kafka(leader), "cfg-quorum", 0, b"small"),
        0
    );
    // The leader dies; the new one enforces the same limit.
    cluster.kill_broker(leader);
    let others: Vec<u32> = (1..=3).filter(|i| *i != leader).collect();
    let mut new_leader = 0;
    wait_until("a new leader of cfg-quorum-0", || {
        new_leader = field(&cluster.partitions(others[0], "cfg-quorum")[0], "leader") as u32;
        new_leader != 0 && new_leader != leader
    });
    wait_until("the new leader serves cfg-quorum-0", || {
        produce_value_error(&kafka(new_leader), "cfg-quorum", 0, b"small") == 0
    });
    assert_eq!(
        produce_value_error(&kafka(new_leader), "cfg-quorum", 0, &big),
        10
    );
    assert_eq!(
        described_config(&kafka(new_leader), "cfg-quorum", "max.message.bytes"),
        (0, Some("2048".into()))
    );
}
