//! Replication end to end: three real brokers (`precursor up`, each a DPDK af_packet data
//! plane and a control plane) in network namespaces on a bridge, real clients from the host
//! namespace. Acknowledged means replicated: acks=all through the native client and through
//! a Kafka client lands byte for byte on every replica; a leader's data plane killed with
//! -9 in the middle of an acks=all produce loses nothing it acknowledged; a follower cut off
//! leaves the ISR and rejoins; with min.insync 3 the same cut refuses acks=all.
//!
//! Root only (namespaces, veths, hugepages); each test runs alone (`serial`).

mod common;

use common::cluster::{
    check_history, field, produce_acked, wait_until, AckHistory, Cluster, ClusterOptions,
};
use common::*;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

/// Creates a one-partition topic with every broker a replica and waits until a leader is
/// known everywhere; returns the leader's id.
fn create_replicated(cluster: &Cluster, topic: &str, min_insync: u32) -> u32 {
    let out = cluster.precursor(
        1,
        &[
            "topic",
            "create",
            topic,
            "--partitions",
            "1",
            "--replication-factor",
            "3",
            "--min-insync-replicas",
            &min_insync.to_string(),
        ],
    );
    assert_success(&out, &format!("topic create {topic}"));
    wait_until(
        &format!("a leader of {topic} known to every broker"),
        || {
            let leaders: Vec<u64> = (1..=3)
                .map(|i| field(&cluster.partitions(i, topic)[0], "leader"))
                .collect();
            leaders[0] != 0 && leaders.iter().all(|l| *l == leaders[0])
        },
    );
    field(&cluster.partitions(1, topic)[0], "leader") as u32
}

/// Waits until every broker holds `end` offsets of partition 0 and the leader's HW is there.
fn wait_replicated(cluster: &Cluster, topic: &str, leader: u32, end: u64) {
    wait_until(
        &format!("{topic} replicated to {end} on every broker"),
        || {
            (1..=3).all(|i| field(&cluster.partitions(i, topic)[0], "end_offset") == end)
                && field(&cluster.partitions(leader, topic)[0], "high_watermark") == end
        },
    );
}

/// Waits until the leader's HW is `end` (the brokers still in sync hold it).
fn wait_replicated_on(cluster: &Cluster, topic: &str, leader: u32, end: u64) {
    wait_until(&format!("{topic}'s HW at {end} on broker {leader}"), || {
        field(&cluster.partitions(leader, topic)[0], "high_watermark") == end
    });
}

/// `precursor produce TOPIC --acks ACKS --partition 0` of `lines` lines `"{prefix} {i}"` to
/// broker `broker`'s data plane; returns the command's output.
fn produce_lines(
    cluster: &Cluster,
    broker: u32,
    topic: &str,
    acks: &str,
    prefix: &str,
    lines: u32,
) -> std::process::Output {
    let mut child = Command::new(precursor())
        .args(["produce", topic, "--acks", acks, "--partition", "0"])
        .args(["--broker", &cluster.node(broker).broker])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        let mut stdin = std::io::BufWriter::new(child.stdin.take().unwrap());
        for i in 0..lines {
            writeln!(stdin, "{prefix} {i}").unwrap();
        }
    }
    child.wait_with_output().unwrap()
}

/// (base offset, CRC) of every batch of a partition's segment files on one broker.
fn batch_crcs(data_dir: &Path, topic: &str) -> Vec<(i64, u32)> {
    let dir = data_dir.join(format!("{topic}-0"));
    let mut logs: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log") && !p.ends_with("spare.log"))
        .collect();
    logs.sort();
    let mut crcs = Vec::new();
    for log in logs {
        let bytes = std::fs::read(&log).unwrap();
        for item in precursor_protocol::record_batch::batches(&bytes) {
            let (header, _) = item.unwrap_or_else(|e| panic!("{}: {e}", log.display()));
            crcs.push((header.base_offset, header.crc));
        }
    }
    crcs
}

#[test]
fn acks_all_lands_byte_for_byte_on_every_replica_from_native_and_kafka_clients() {
    let _serial = serial();
    if !can_run("acks_all_lands_byte_for_byte_on_every_replica") {
        return;
    }
    let cluster = Cluster::up(3, ClusterOptions::default());
    let leader = create_replicated(&cluster, "native", 2);
    let broker = cluster.node(leader).broker.clone();
    // A million messages acks=all through the native client, verified on every broker.
    const NATIVE_MESSAGES: u64 = 1_000_000;
    let out = Command::new(precursor())
        .args(["bench", "produce", "--topic", "native", "--acks", "all"])
        .args([
            "--messages",
            &NATIVE_MESSAGES.to_string(),
            "--json",
            "--broker",
            &broker,
        ])
        .output()
        .unwrap();
    assert_success(&out, "bench produce acks=all");
    let result: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(result["errors"], 0, "{result}");
    wait_replicated(&cluster, "native", leader, NATIVE_MESSAGES);
    for node in cluster.nodes() {
        let out = Command::new(precursor())
            .args([
                "consume",
                "native",
                "--from-beginning",
                "--verify",
                "--broker",
                &node.broker,
            ])
            .args(["--count", &NATIVE_MESSAGES.to_string()])
            .output()
            .unwrap();
        assert_success(&out, &format!("consume --verify from broker {}", node.id));
    }

    // A hundred thousand through a Kafka client (kcat, librdkafka) with acks=-1 to the
    // leader's Kafka listener.
    let kafka_leader = create_replicated(&cluster, "kafka", 2);
    const KAFKA_MESSAGES: u64 = 100_000;
    let mut kcat = Command::new("kcat")
        .args([
            "-P",
            "-b",
            &cluster.node(kafka_leader).kafka,
            "-t",
            "kafka",
            "-p",
            "0",
        ])
        .args(["-X", "acks=-1", "-X", "enable.idempotence=true"])
        .env("LD_LIBRARY_PATH", "")
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kcat (ci/setup.sh installs it)");
    {
        let mut stdin = std::io::BufWriter::new(kcat.stdin.take().unwrap());
        for i in 0..KAFKA_MESSAGES {
            writeln!(stdin, "kafka message {i}").unwrap();
        }
    }
    let out = kcat.wait_with_output().unwrap();
    assert_success(&out, "kcat -P acks=-1");
    wait_replicated(&cluster, "kafka", kafka_leader, KAFKA_MESSAGES);

    // Every replica holds the same batches: same offsets, same CRCs, in the same order.
    for topic in ["native", "kafka"] {
        let per_broker: BTreeMap<u32, Vec<(i64, u32)>> = cluster
            .nodes()
            .iter()
            .map(|node| (node.id, batch_crcs(&node.data_dir, topic)))
            .collect();
        let first = &per_broker[&1];
        assert!(!first.is_empty(), "{topic}: no batches on broker 1");
        for (id, crcs) in &per_broker {
            assert_eq!(
                crcs, first,
                "{topic}: broker {id}'s batches differ from broker 1's"
            );
        }
    }
    // Replication moved the bytes, with nothing refused along the way.
    let status = cluster.precursor_json(leader, &["status"]);
    assert!(status.to_string().contains("replica"), "{status}");
}

/// [`produce_acked`] of `count` lines to `broker`, killing broker `victim`'s data plane -9
/// at each of `kill_after` (lines acknowledged so far).
fn produce_through_kills(
    cluster: &Cluster,
    broker: &str,
    topic: &str,
    count: u64,
    victim: u32,
    kill_after: &[u64],
) -> AckHistory {
    let mut kills = kill_after.iter().peekable();
    produce_acked(broker, topic, count, |acked| {
        if kills.peek().is_some_and(|&&at| acked >= at) {
            kills.next();
            let pid = cluster.kill_dataplane(victim);
            cluster.wait_dataplane(victim, Some(pid));
        }
    })
}

#[test]
fn a_leader_killed_during_acks_all_loses_nothing_it_acknowledged() {
    let _serial = serial();
    if !can_run("a_leader_killed_during_acks_all_loses_nothing_it_acknowledged") {
        return;
    }
    let cluster = Cluster::up(3, ClusterOptions::default());
    let leader = create_replicated(&cluster, "crash", 2);
    let epoch_before = field(&cluster.partitions(leader, "crash")[0], "leader_epoch");
    let broker = cluster.node(leader).broker.clone();
    const MESSAGES: u64 = 60_000;
    let acked = produce_through_kills(
        &cluster,
        &broker,
        "crash",
        MESSAGES,
        leader,
        &[7_000, 23_000, 41_000],
    );
    assert_eq!(
        acked.acked.len() as u64,
        MESSAGES,
        "every line acknowledged once"
    );
    // The restarted leader led again at a new epoch each time.
    let epoch_after = field(&cluster.partitions(leader, "crash")[0], "leader_epoch");
    assert!(
        epoch_after >= epoch_before + 3,
        "{epoch_before} -> {epoch_after}"
    );
    wait_replicated(&cluster, "crash", leader, MESSAGES);
    // Every acknowledged line is there, once, at its offset, on every broker.
    let ids: Vec<u32> = cluster.nodes().iter().map(|n| n.id).collect();
    check_history(&cluster, &ids, "crash", &acked, MESSAGES);
    let crcs: Vec<_> = cluster
        .nodes()
        .iter()
        .map(|n| batch_crcs(&n.data_dir, "crash"))
        .collect();
    assert!(
        crcs.iter().all(|c| c == &crcs[0]),
        "replicas differ after the kills"
    );
}

#[test]
fn a_follower_cut_off_leaves_the_isr_and_rejoins_and_min_insync_3_refuses_acks_all() {
    let _serial = serial();
    if !can_run("a_follower_cut_off_leaves_the_isr_and_rejoins") {
        return;
    }
    let cluster = Cluster::up(3, ClusterOptions::default());
    let leader = create_replicated(&cluster, "cut", 2);
    let strict_leader = create_replicated(&cluster, "strict", 3);
    let follower = (1..=3)
        .find(|&i| i != leader && i != strict_leader)
        .or_else(|| (1..=3).find(|&i| i != leader))
        .unwrap();
    let produce = |topic: &str, leader: u32, lines: u32| {
        produce_lines(&cluster, leader, topic, "all", topic, lines)
    };
    assert_success(&produce("cut", leader, 1000), "produce before the cut");
    wait_replicated(&cluster, "cut", leader, 1000);

    cluster.dataplane_link_down(follower);
    // acks=all goes on once the cut follower has left the ISR (replica_lag_ms).
    assert_success(
        &produce("cut", leader, 1000),
        "produce with a follower cut off",
    );
    let isr_of = |topic: &str, at: u32| -> Vec<u64> {
        cluster.partitions(at, topic)[0]["isr"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect()
    };
    // The leader's gauges are published every 10 ms: wait for the produce's last offset.
    wait_replicated_on(&cluster, "cut", leader, 2000);
    let on_leader = cluster.partitions(leader, "cut")[0].clone();
    assert!(
        !isr_of("cut", leader).contains(&u64::from(follower)),
        "{on_leader}"
    );
    assert!(field(&on_leader, "isr_shrinks") >= 1, "{on_leader}");
    // min.insync 3 with a replica gone: refused, not acknowledged, nothing appended.
    wait_until("the strict topic's ISR without the cut follower", || {
        !isr_of("strict", strict_leader).contains(&u64::from(follower))
    });
    let end_before = field(
        &cluster.partitions(strict_leader, "strict")[0],
        "end_offset",
    );
    let refused = produce("strict", strict_leader, 10);
    assert!(
        !refused.status.success(),
        "acks=all with min.insync 3 and two in sync"
    );
    let said = stderr(&refused);
    assert!(
        said.contains("in-sync") || said.contains("NotEnoughReplicas"),
        "the error names the cause: {said}"
    );
    let end_after = field(
        &cluster.partitions(strict_leader, "strict")[0],
        "end_offset",
    );
    assert_eq!(end_after, end_before, "nothing appended while refusing");

    // Back on the link: it catches up and rejoins.
    cluster.dataplane_link_up(follower);
    wait_until("the cut follower back in the ISR", || {
        isr_of("cut", leader).contains(&u64::from(follower))
    });
    let on_leader = cluster.partitions(leader, "cut")[0].clone();
    assert!(field(&on_leader, "isr_expands") >= 1, "{on_leader}");
    wait_replicated(&cluster, "cut", leader, 2000);
    assert_success(
        &produce("strict", strict_leader, 10),
        "min.insync 3 with all three back",
    );
}

#[test]
fn moving_the_leader_cuts_the_old_leaders_divergent_tail_and_keeps_what_was_acknowledged() {
    let _serial = serial();
    if !can_run("moving_the_leader_cuts_the_old_leaders_divergent_tail") {
        return;
    }
    let cluster = Cluster::up(3, ClusterOptions::default());
    let old = create_replicated(&cluster, "moved", 2);
    let followers: Vec<u32> = (1..=3).filter(|&i| i != old).collect();
    let produce = |leader: u32, acks: &str, prefix: &str, lines: u32| {
        let out = produce_lines(&cluster, leader, "moved", acks, prefix, lines);
        assert_success(
            &out,
            &format!("produce {prefix} acks={acks} to broker {leader}"),
        );
    };
    produce(old, "all", "acknowledged", 1000);
    wait_replicated(&cluster, "moved", old, 1000);
    // The followers cut off, the old leader takes what nobody else gets (acks=leader:
    // acknowledged by the leader alone, which acks=all would never have done).
    for &f in &followers {
        cluster.dataplane_link_down(f);
    }
    produce(old, "leader", "divergent", 100);
    // (The gauges are published every 10 ms: wait for the last offset to show.)
    wait_until("the divergent tail on the old leader", || {
        field(&cluster.partitions(old, "moved")[0], "end_offset") == 1100
    });
    // Leadership moves to a follower (in the ISR: it holds everything acknowledged by all).
    let new = followers[0];
    let out = cluster.precursor(
        new,
        &[
            "topic",
            "lead",
            "moved",
            "--partition",
            "0",
            "--broker-id",
            &new.to_string(),
        ],
    );
    assert_success(&out, "topic lead");
    for &f in &followers {
        cluster.dataplane_link_up(f);
    }
    // The old leader follows, finds its tail diverges from the new leader's epoch history,
    // and cuts it.
    wait_until("the old leader cut its divergent tail", || {
        let p = cluster.partitions(old, "moved")[0].clone();
        field(&p, "truncated_bytes") > 0 && field(&p, "end_offset") == 1000
    });
    let on_old = cluster.partitions(old, "moved")[0].clone();
    assert_eq!(field(&on_old, "leader"), u64::from(new), "{on_old}");
    produce(new, "all", "after", 1000);
    wait_replicated(&cluster, "moved", new, 2000);
    for node in cluster.nodes() {
        let out = Command::new(precursor())
            .args(["consume", "moved", "--from-beginning", "--count", "2000"])
            .args(["--broker", &node.broker])
            .output()
            .unwrap();
        assert_success(&out, &format!("consume from broker {}", node.id));
        let text = String::from_utf8_lossy(&out.stdout);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2000, "broker {}", node.id);
        assert!(lines[..1000].iter().all(|l| l.starts_with("acknowledged ")));
        assert!(lines[1000..].iter().all(|l| l.starts_with("after ")));
        assert!(
            !text.contains("divergent"),
            "broker {} kept the cut tail",
            node.id
        );
    }
    let crcs: Vec<_> = cluster
        .nodes()
        .iter()
        .map(|n| batch_crcs(&n.data_dir, "moved"))
        .collect();
    assert!(
        crcs.iter().all(|c| c == &crcs[0]),
        "replicas differ after the move"
    );
}
