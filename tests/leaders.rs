//! The native client and partition leaders, end to end: three real brokers (`precursor
//! up`, each a DPDK af_packet data plane and a control plane) in network namespaces on a
//! bridge, real clients (`precursor bench produce`, `produce`, `consume`) from the host
//! namespace bootstrapped at one broker. A topic whose three partitions are led by three
//! brokers is produced and consumed through one client; a leader's whole broker restarted
//! in the middle of a produce loses and duplicates nothing; IPC, which reaches one data
//! plane, says which broker leads a partition it cannot reach.
//!
//! Root only (namespaces, veths, hugepages); each test runs alone (`serial`).

mod common;

use common::cluster::{field, wait_until, Cluster, ClusterOptions};
use common::*;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, Write};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// The clients' delivery timeout: long enough for a broker to be stopped and started.
const CLIENT_TIMEOUT_MS: &str = "120000";
/// How long a stopped broker stays down before it is started again.
const OUTAGE: Duration = Duration::from_secs(3);

/// Creates `topic` with three partitions on three replicas, waits until every broker
/// names the same leader for each, and returns the leaders by partition: three brokers
/// (placement rotates the first replica).
fn create_led_by_three(cluster: &Cluster, topic: &str) -> Vec<u32> {
    let out = cluster.precursor(
        1,
        &[
            "topic",
            "create",
            topic,
            "--partitions",
            "3",
            "--replication-factor",
            "3",
        ],
    );
    assert_success(&out, &format!("topic create {topic}"));
    let leaders_seen_by = |i: u32| -> Vec<u64> {
        cluster
            .partitions(i, topic)
            .iter()
            .map(|p| field(p, "leader"))
            .collect()
    };
    wait_until(&format!("the leaders of {topic} known everywhere"), || {
        let first = leaders_seen_by(1);
        first.len() == 3
            && first.iter().all(|&l| l != 0)
            && (2..=3).all(|i| leaders_seen_by(i) == first)
    });
    let leaders: Vec<u32> = leaders_seen_by(1).iter().map(|&l| l as u32).collect();
    let distinct: BTreeSet<u32> = leaders.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        3,
        "three partitions, three leaders: {leaders:?}"
    );
    leaders
}

/// Each broker's end offset of each partition of `topic`, by broker id.
fn end_offsets(cluster: &Cluster, topic: &str) -> BTreeMap<u32, Vec<u64>> {
    cluster
        .nodes()
        .iter()
        .map(|n| {
            let ends = cluster
                .partitions(n.id, topic)
                .iter()
                .map(|p| field(p, "end_offset"))
                .collect();
            (n.id, ends)
        })
        .collect()
}

#[test]
fn one_client_bootstrapped_at_one_broker_produces_and_consumes_partitions_led_by_three() {
    let _serial = serial();
    if !can_run("one_client_bootstrapped_at_one_broker_produces_and_consumes") {
        return;
    }
    let cluster = Cluster::up(3, ClusterOptions::default());
    let leaders = create_led_by_three(&cluster, "spread");
    let bootstrap = cluster.node(1).broker.clone();

    // 300k bench payloads through one producer bootstrapped at broker 1: each partition's
    // batches go to its own leader (bench sends message i to partition i % 3).
    const MESSAGES: u64 = 300_000;
    let out = Command::new(precursor())
        .args(["bench", "produce", "--topic", "spread", "--acks", "all"])
        .args(["--messages", &MESSAGES.to_string(), "--json", "--quiet"])
        .args(["--broker", &bootstrap, "--timeout-ms", CLIENT_TIMEOUT_MS])
        .output()
        .unwrap();
    assert_success(&out, "bench produce through broker 1");
    let result: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(result["errors"], 0, "{result}");
    // A third on each partition, on every replica.
    wait_until("the 300k on every broker", || {
        end_offsets(&cluster, "spread")
            .values()
            .all(|ends| ends.iter().all(|&e| e == MESSAGES / 3))
    });

    // Read back through one consumer bootstrapped at a list (broker 2, then broker 1):
    // every payload once, in order per partition.
    let list = format!("{},{}", cluster.node(2).broker, bootstrap);
    let out = Command::new(precursor())
        .args([
            "consume",
            "spread",
            "--verify",
            "--count",
            &MESSAGES.to_string(),
        ])
        .args(["--broker", &list, "--timeout-ms", CLIENT_TIMEOUT_MS])
        .output()
        .unwrap();
    assert_success(&out, "consume --verify through a list of brokers");
    let said = stderr(&out);
    assert!(
        said.contains(&format!(
            "verified {MESSAGES} messages: {MESSAGES} in order, 0 gaps"
        )),
        "{said}"
    );

    // IPC reaches broker 1's data plane only: a partition it leads is read there, one led
    // by another broker is refused, naming that broker.
    let ipc_dir = cluster.node(1).cnc_dir.display().to_string();
    let local = leaders.iter().position(|&l| l == 1).unwrap();
    let out = Command::new(precursor())
        .args([
            "consume",
            "spread",
            "--transport",
            "ipc",
            "--ipc-dir",
            &ipc_dir,
        ])
        .args(["--partition", &local.to_string(), "--verify"])
        .args(["--count", &(MESSAGES / 3).to_string()])
        .output()
        .unwrap();
    assert_success(&out, "consume over IPC of a partition broker 1 leads");
    let remote = leaders.iter().position(|&l| l != 1).unwrap();
    let remote_leader = cluster.node(leaders[remote]);
    for command in ["produce", "consume"] {
        let mut child = Command::new(precursor())
            .args([
                command,
                "spread",
                "--transport",
                "ipc",
                "--ipc-dir",
                &ipc_dir,
            ])
            .args(["--partition", &remote.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        writeln!(child.stdin.take().unwrap(), "not for this host").unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            !out.status.success(),
            "{command} over IPC to a remote leader"
        );
        let said = stderr(&out);
        let expected = format!(
            "partition {remote} of spread is led by broker {} at {}; \
             IPC reaches only this host's data plane",
            remote_leader.id, remote_leader.broker
        );
        assert!(said.contains(&expected), "{command}: {said}");
    }
    // Nothing was appended by the refused produce.
    assert_eq!(
        end_offsets(&cluster, "spread")[&leaders[remote]][remote],
        MESSAGES / 3
    );
}

#[test]
fn a_leader_restarted_during_a_produce_loses_and_duplicates_nothing() {
    let _serial = serial();
    if !can_run("a_leader_restarted_during_a_produce_loses_and_duplicates_nothing") {
        return;
    }
    let cluster = Cluster::up(3, ClusterOptions::default());
    let leaders = create_led_by_three(&cluster, "restart");
    // Restarted in turn: a broker the client learned of from Metadata alone, then the
    // bootstrap broker itself (the client asks the others meanwhile).
    const RESTARTS: [(u64, u32); 2] = [(15_000, 2), (40_000, 1)];
    let epochs_before: Vec<u64> = RESTARTS
        .iter()
        .map(|&(_, victim)| {
            let led = leaders.iter().position(|&l| l == victim).unwrap();
            field(&cluster.partitions(victim, "restart")[led], "leader_epoch")
        })
        .collect();

    // Numbered lines, unkeyed (sticky: every partition gets batches), acks=all, through
    // one producer bootstrapped at broker 1; `--verbose` prints `partition offset` per
    // line in input order.
    const LINES: u64 = 60_000;
    let mut child = Command::new(precursor())
        .args(["produce", "restart", "--acks", "all", "--verbose"])
        .args(["--broker", &cluster.node(1).broker])
        .args(["--timeout-ms", CLIENT_TIMEOUT_MS])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdin = child.stdin.take().unwrap();
    let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let acknowledged = AtomicU64::new(0);
    let restarted = AtomicBool::new(false);
    let acked: BTreeMap<u64, (u64, Option<u64>)> = std::thread::scope(|scope| {
        // Owns stdin: the end of input (EOF) is what makes produce flush and exit.
        scope.spawn(move || {
            let mut stdin = std::io::BufWriter::new(stdin);
            for i in 0..LINES {
                if writeln!(stdin, "line {i}").is_err() {
                    break;
                }
            }
        });
        // The restarts run beside the produce: the producer keeps retrying a stopped
        // leader, then resumes on it once it leads again.
        scope.spawn(|| {
            for (after, victim) in RESTARTS {
                wait_until(&format!("{after} lines acknowledged"), || {
                    acknowledged.load(Ordering::Relaxed) >= after
                });
                let at_stop = acknowledged.load(Ordering::Relaxed);
                cluster.stop_broker(victim);
                // Down for a while (many of the client's retransmissions and look-ups);
                // nothing is measured.
                std::thread::sleep(OUTAGE);
                let while_stopped = acknowledged.load(Ordering::Relaxed);
                cluster.start_broker(victim);
                eprintln!(
                    "broker {victim} stopped after {at_stop} lines acknowledged, started \
                     again after {while_stopped}; {} by now",
                    acknowledged.load(Ordering::Relaxed)
                );
            }
            restarted.store(true, Ordering::Relaxed);
        });
        let mut acked = BTreeMap::new();
        for (line_number, line) in stdout.lines().enumerate() {
            let line = line.unwrap();
            let mut words = line.split_whitespace();
            let partition: u64 = words
                .next()
                .and_then(|w| w.parse().ok())
                .unwrap_or_else(|| panic!("produce printed {line:?}"));
            // "-": a resend the leader had appended before (offset not known).
            let offset = match words.next() {
                Some("-") => None,
                Some(offset) => Some(offset.parse().unwrap()),
                None => panic!("produce printed {line:?}"),
            };
            acked.insert(line_number as u64, (partition, offset));
            acknowledged.store(acked.len() as u64, Ordering::Relaxed);
        }
        acked
    });
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "produce through the restart: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(restarted.load(Ordering::Relaxed), "the restart happened");
    assert_eq!(acked.len() as u64, LINES, "every line acknowledged once");
    // The restarted brokers lead their partitions again, at new epochs.
    for (&(_, victim), &epoch_before) in RESTARTS.iter().zip(&epochs_before) {
        let led = leaders.iter().position(|&l| l == victim).unwrap();
        wait_until(
            &format!("broker {victim} leading partition {led} again"),
            || {
                let seen = &cluster.partitions(victim, "restart")[led];
                field(seen, "leader") == u64::from(victim)
                    && field(seen, "leader_epoch") > epoch_before
            },
        );
    }

    // Every line is in the topic exactly once, where its acknowledgement said.
    let out = Command::new(precursor())
        .args([
            "consume",
            "restart",
            "--from-beginning",
            "--to-end",
            "--verbose",
        ])
        .args(["--broker", &cluster.node(3).broker])
        .args(["--timeout-ms", CLIENT_TIMEOUT_MS])
        .output()
        .unwrap();
    assert_success(&out, "consume the restarted topic");
    let mut stored: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        // partition offset key value: the key is empty, so two spaces.
        let mut words = line.splitn(4, ' ');
        let partition: u64 = words.next().unwrap().parse().unwrap();
        let offset: u64 = words.next().unwrap().parse().unwrap();
        let value = words.nth(1).unwrap_or_default().to_string();
        let earlier = stored.insert(value.clone(), (partition, offset));
        assert!(
            earlier.is_none(),
            "{value:?} stored twice: {earlier:?} and {line:?}"
        );
    }
    assert_eq!(stored.len() as u64, LINES, "as many stored as sent");
    for (line_number, (partition, offset)) in &acked {
        let value = format!("line {line_number}");
        let &(stored_partition, stored_offset) = stored
            .get(&value)
            .unwrap_or_else(|| panic!("{value:?} acknowledged, not stored"));
        assert_eq!(stored_partition, *partition, "{value:?}");
        if let Some(offset) = offset {
            assert_eq!(stored_offset, *offset, "{value:?}");
        }
    }
    // The replicas agree.
    wait_until("every replica at the same end", || {
        let ends = end_offsets(&cluster, "restart");
        ends.values().all(|e| e == &ends[&1])
    });
}
