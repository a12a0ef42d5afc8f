//! `precursor cluster` end to end: real brokers (`precursor up` with a DPDK af_packet data
//! plane each) in network namespaces on a bridge, reached from the host namespace. What
//! these tests need is the CLI and the control planes: the cluster comes up and goes away
//! without a trace, every broker answers, topics reach every broker through one broker's
//! control plane, and a broker that is down is reported. Replication itself is tested
//! elsewhere, on the same support module (tests/common/cluster.rs).

mod common;

use common::cluster::{Cluster, ClusterOptions};
use common::*;
use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

/// Names of the network namespaces on this host.
fn netns_names() -> Vec<String> {
    std::fs::read_dir("/run/netns")
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Names of the network interfaces of the root namespace.
fn interface_names() -> Vec<String> {
    std::fs::read_dir("/sys/class/net")
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// Pids of the live processes whose command line mentions `text`.
fn processes_mentioning(text: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_string_lossy().parse::<u32>().ok())
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let zombie = state
                .rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'));
            !zombie && String::from_utf8_lossy(&cmdline).contains(text)
        })
        .collect()
}

fn http_get(address: &str, path: &str) -> (u16, String) {
    let mut stream = std::net::TcpStream::connect(address)
        .unwrap_or_else(|e| panic!("cannot connect to {address}: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: test\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let code = response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, b)| b.to_string());
    (code, body)
}

/// The names of the topics broker `i` lists.
fn topics_of(cluster: &Cluster, i: u32) -> Vec<(String, u64)> {
    let list = cluster.precursor_json(i, &["topic", "list"]);
    list.as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["name"].as_str().unwrap().to_string(),
                t["partitions"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn every_broker_answers_and_down_leaves_nothing_behind() {
    let _serial = serial();
    if !can_run("every_broker_answers_and_down_leaves_nothing_behind") {
        return;
    }
    let cluster = Cluster::up(3, ClusterOptions::default());
    let name = cluster.name.clone();
    let dir = cluster.dir.display().to_string();
    assert!(netns_names().iter().any(|n| n.starts_with(&name)));
    let mut pids = Vec::new();
    for node in cluster.nodes() {
        let status = cluster.precursor_json(node.id, &["status"]);
        assert_eq!(
            status["dataplane_alive"], true,
            "broker {}: {status}",
            node.id
        );
        pids.push(status["dataplane_pid"].as_u64().unwrap() as u32);
        // The Kafka listener, the metrics and the data plane, from the host namespace.
        std::net::TcpStream::connect(&node.kafka)
            .unwrap_or_else(|e| panic!("broker {}: Kafka listener {}: {e}", node.id, node.kafka));
        let (code, body) = http_get(&node.metrics_address(), "/metrics");
        assert_eq!(code, 200, "broker {} /metrics", node.id);
        assert!(
            body.contains("precursor_controlplane_dataplane_up 1"),
            "broker {}: {body}",
            node.id
        );
        assert_eq!(http_get(&node.metrics_address(), "/healthz").0, 200);
        let ping = cluster.precursor(node.id, &["ping", "--count", "1"]);
        assert_success(&ping, &format!("ping broker {}'s data plane", node.id));
        assert!(node.cnc_dir.exists(), "{}", node.cnc_dir.display());
    }
    let status = cluster.status();
    let brokers = status["brokers"].as_array().unwrap();
    assert_eq!(brokers.len(), 3);
    for broker in brokers {
        assert_eq!(broker["dataplane_alive"], true, "{broker}");
        assert_eq!(broker["link_up"], true, "{broker}");
        pids.push(broker["pid"].as_u64().unwrap() as u32);
    }
    let shared: Vec<_> = cluster
        .nodes()
        .iter()
        .flat_map(|n| [n.cnc_dir.clone(), n.memory_dir.clone()])
        .collect();
    let kept = cluster.dir.clone();
    cluster.down();

    assert!(
        !netns_names().iter().any(|n| n.starts_with(&name)),
        "namespaces left: {:?}",
        netns_names()
    );
    assert!(
        !interface_names().iter().any(|n| n.starts_with(&name)),
        "interfaces left: {:?}",
        interface_names()
    );
    let left: Vec<u32> = pids
        .iter()
        .copied()
        .filter(|pid| Path::new(&format!("/proc/{pid}")).exists())
        .filter(|pid| {
            // A zombie waiting for its parent to reap it is gone for every purpose.
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            !stat
                .rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .collect();
    assert!(left.is_empty(), "processes left: {left:?}");
    assert!(processes_mentioning(&dir).is_empty());
    for path in shared {
        assert!(!path.exists(), "{} left", path.display());
    }
    assert!(
        !kept.join("cluster.json").exists(),
        "--purge removes the layout"
    );
}

#[test]
fn up_and_down_are_safe_to_run_again() {
    let _serial = serial();
    if !can_run("up_and_down_are_safe_to_run_again") {
        return;
    }
    let cluster = Cluster::up(2, ClusterOptions::default());
    let create = cluster.precursor(1, &["topic", "create", "kept", "-p", "2"]);
    assert_success(&create, "topic create kept");
    let up_args = |nodes: &str| {
        vec![
            "up".to_string(),
            "--nodes".into(),
            nodes.into(),
            "--name".into(),
            cluster.name.clone(),
            "--subnet".into(),
            cluster.subnet.clone(),
        ]
    };

    let up_again = up_args("2");
    let up_again: Vec<&str> = up_again.iter().map(String::as_str).collect();
    let again = cluster.cluster_command(&up_again);
    assert_success(&again, "cluster up on a running cluster");
    assert!(stdout(&again).contains("up already"), "{}", stdout(&again));

    let down = cluster.cluster_command(&["down"]);
    assert_success(&down, "cluster down");
    let status = cluster.cluster_command(&["status"]);
    assert!(
        !status.status.success(),
        "status of a stopped cluster fails"
    );
    assert!(stdout(&status).contains("stopped"), "{}", stdout(&status));
    let down_again = cluster.cluster_command(&["down"]);
    assert_success(&down_again, "cluster down of a stopped cluster");
    assert!(
        stdout(&down_again).contains("down already"),
        "{}",
        stdout(&down_again)
    );

    // Up again on the same directory: the brokers recover their data.
    let back = cluster.cluster_command(&up_again);
    assert_success(&back, "cluster up after down");
    for i in [1, 2] {
        assert_eq!(topics_of(&cluster, i), vec![("kept".to_string(), 2)]);
    }
    cluster.down();
}

#[test]
fn a_topic_created_on_one_broker_reaches_every_broker() {
    let _serial = serial();
    if !can_run("a_topic_created_on_one_broker_reaches_every_broker") {
        return;
    }
    let cluster = Cluster::up(3, ClusterOptions::default());
    let created = cluster.precursor_json(
        1,
        &[
            "topic",
            "create",
            "orders",
            "--partitions",
            "3",
            "--replication-factor",
            "3",
            "--min-insync-replicas",
            "2",
        ],
    );
    assert_eq!(created["complete"], true, "{created}");
    let answers = created["brokers"].as_array().unwrap();
    let ids: Vec<u64> = answers
        .iter()
        .map(|a| a["broker_id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, [1, 2, 3]);
    for answer in answers {
        assert_eq!(
            answer["answer"]["topic_created"]["partitions"], 3,
            "{answer}"
        );
    }
    for i in 1..=3 {
        assert_eq!(topics_of(&cluster, i), vec![("orders".to_string(), 3)]);
        let described = cluster.precursor_json(i, &["topic", "describe", "orders"]);
        assert_eq!(described["partitions"].as_array().unwrap().len(), 3);
    }

    // More replicas than brokers: refused before any broker creates anything.
    let too_many = cluster.precursor(2, &["topic", "create", "wide", "-p", "1", "-r", "4"]);
    assert!(!too_many.status.success());
    let message = stderr(&too_many);
    assert!(
        message.contains("replication factor 4") && message.contains("3, the brokers"),
        "{message}"
    );
    let min_isr = cluster.precursor(
        2,
        &[
            "topic",
            "create",
            "wide",
            "-p",
            "1",
            "-r",
            "2",
            "--min-insync-replicas",
            "3",
        ],
    );
    assert!(!min_isr.status.success());
    assert!(
        stderr(&min_isr).contains("min insync replicas 3"),
        "{}",
        stderr(&min_isr)
    );
    for i in 1..=3 {
        assert_eq!(
            topics_of(&cluster, i).len(),
            1,
            "broker {i} has only orders"
        );
    }

    // Deleted through another broker: gone from all three.
    let deleted = cluster.precursor(3, &["topic", "delete", "orders"]);
    assert_success(&deleted, "topic delete orders");
    assert!(
        stdout(&deleted).contains("deleted on broker(s) 1, 2, 3"),
        "{}",
        stdout(&deleted)
    );
    for i in 1..=3 {
        assert!(topics_of(&cluster, i).is_empty(), "broker {i}");
    }
    cluster.down();
}

#[test]
fn a_create_while_a_broker_is_stopped_reports_the_partial_failure() {
    let _serial = serial();
    if !can_run("a_create_while_a_broker_is_stopped_reports_the_partial_failure") {
        return;
    }
    let cluster = Cluster::up(3, ClusterOptions::default());
    cluster.stop_broker(3);
    let create = cluster.precursor(1, &["topic", "create", "payments", "-p", "2", "-r", "3"]);
    assert!(
        !create.status.success(),
        "a create that misses a broker fails: {}",
        stdout(&create)
    );
    let message = stderr(&create);
    assert!(
        message.contains("failed on broker 3") && message.contains("unreachable"),
        "{message}"
    );
    assert!(
        stdout(&create).contains("created on broker(s) 1, 2"),
        "{}",
        stdout(&create)
    );
    for i in [1, 2] {
        assert_eq!(topics_of(&cluster, i), vec![("payments".to_string(), 2)]);
    }

    // Once broker 3 is back the same command completes the topic there.
    cluster.start_broker(3);
    assert!(topics_of(&cluster, 3).is_empty());
    let again = cluster.precursor_json(1, &["topic", "create", "payments", "-p", "2", "-r", "3"]);
    assert_eq!(again["complete"], true, "{again}");
    assert_eq!(
        again["brokers"][2]["answer"]["topic_created"]["name"], "payments",
        "{again}"
    );
    assert_eq!(
        again["brokers"][0]["answer"]["error"]["code"], "topic_exists",
        "{again}"
    );
    assert_eq!(topics_of(&cluster, 3), vec![("payments".to_string(), 2)]);
    cluster.down();
}

#[test]
fn the_fault_helpers_kill_a_data_plane_and_cut_a_link() {
    let _serial = serial();
    if !can_run("the_fault_helpers_kill_a_data_plane_and_cut_a_link") {
        return;
    }
    let cluster = Cluster::up(2, ClusterOptions::default());
    let first = cluster.wait_dataplane(2, None);
    let killed = cluster.kill_dataplane(2);
    assert_eq!(killed, first);
    let second = cluster.wait_dataplane(2, Some(killed));
    assert_ne!(second, killed, "precursor up started a new data plane");

    cluster.link_down(1);
    let status = cluster.status();
    assert_eq!(status["brokers"][0]["link_up"], false, "{status}");
    let cut = cluster.precursor(1, &["ping", "--count", "1", "--timeout-ms", "1000"]);
    assert!(
        !cut.status.success(),
        "a data plane behind a cut link answers no ping"
    );
    cluster.link_up(1);
    let back = cluster.precursor(1, &["ping", "--count", "1"]);
    assert_success(&back, "ping after the link is back");
    cluster.down();
}
