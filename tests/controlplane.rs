//! The control plane end to end, with real processes: `precursor up` supervises a real
//! data plane on an af_packet port; the CLI administers it through the admin socket; the
//! client produces from a network namespace; `/metrics` is scraped over TCP; the data plane
//! is killed with SIGKILL and must come back with every acknowledged message.

mod common;

use common::kafka::free_tcp_port;
use common::*;
use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `precursor up` for a node, with its admin socket, metrics port and CnC dir in a tempdir.
struct Up {
    child: Option<Child>,
    config: String,
    metrics: String,
}

impl Up {
    fn start(node: &AfPacketNode, dir: &std::path::Path) -> Up {
        let metrics = format!("127.0.0.1:{}", free_tcp_port());
        let config = node.up_config(dir, &metrics, "");
        let child = Command::new(precursor())
            .args(["up", "--config"])
            .arg(&config)
            .stdin(Stdio::null())
            .spawn()
            .expect("precursor up starts");
        let up = Up {
            child: Some(child),
            config: config.display().to_string(),
            metrics,
        };
        up.wait_alive(None);
        up
    }

    fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(precursor())
            .args(args)
            .args(["--config", &self.config])
            .output()
            .unwrap()
    }

    fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut with_json = args.to_vec();
        with_json.push("--json");
        let out = self.cli(&with_json);
        assert_success(&out, &args.join(" "));
        serde_json::from_str(stdout(&out).trim())
            .unwrap_or_else(|e| panic!("{e}: {}", stdout(&out)))
    }

    /// Waits until status reports a live data plane (other than `not_pid`); returns its pid.
    fn wait_alive(&self, not_pid: Option<u64>) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let out = self.cli(&["status", "--json"]);
            if out.status.success() {
                let status: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
                if let Some(pid) = status["dataplane_pid"].as_u64() {
                    if status["dataplane_alive"] == true && Some(pid) != not_pid {
                        return pid;
                    }
                }
            }
            assert!(
                Instant::now() < deadline,
                "no live data plane: {}",
                stderr(&out)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn scrape(&self, path: &str) -> (u16, String) {
        let mut stream = std::net::TcpStream::connect(&self.metrics).expect("metrics listener");
        write!(stream, "GET {path} HTTP/1.0\r\nHost: test\r\n\r\n").unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let code = response.split_whitespace().nth(1).unwrap().parse().unwrap();
        let body = response
            .split_once("\r\n\r\n")
            .map_or(String::new(), |(_, b)| b.to_string());
        (code, body)
    }

    fn stop(mut self) {
        let mut child = self.child.take().unwrap();
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let status = child.wait().unwrap();
        assert!(status.success(), "precursor up exit status {status}");
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = Command::new("pkill")
            .args(["-KILL", "-f", &self.config])
            .status();
    }
}

/// The value of the first sample of `metric` in a Prometheus text page.
fn sample(page: &str, metric: &str) -> Option<f64> {
    page.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| l.starts_with(metric) && l[metric.len()..].starts_with([' ', '{']))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[test]
fn up_administers_serves_metrics_and_restarts_a_killed_data_plane() {
    let _serial = serial();
    if !can_run("up_administers") {
        return;
    }
    let node = AfPacketNode::new("c", 4, "");
    let dir = tempfile::tempdir().unwrap();
    let up = Up::start(&node, dir.path());

    // Topic admin through the command ring.
    let created = up.cli(&["topic", "create", "orders", "--partitions", "3"]);
    assert_success(&created, "topic create");
    let again = up.cli(&["topic", "create", "orders", "--partitions", "3"]);
    assert!(!again.status.success());
    assert!(stderr(&again).contains("exists"), "{}", stderr(&again));
    let bad = up.cli(&["topic", "create", "bad/name", "--partitions", "1"]);
    assert!(
        !bad.status.success() && !stderr(&bad).contains("panicked"),
        "{}",
        stderr(&bad)
    );
    let zero = up.cli(&["topic", "create", "zero", "--partitions", "0"]);
    assert!(!zero.status.success(), "zero partitions refused");
    let unknown = up.cli(&["topic", "describe", "nope"]);
    assert!(!unknown.status.success());
    assert!(stderr(&unknown).contains("nope"), "{}", stderr(&unknown));
    let topics = up.json(&["topic", "list"]);
    assert!(topics.to_string().contains("orders"), "{topics}");

    // Produce through the data plane from the client namespace.
    let out = node.precursor(&[
        "bench",
        "produce",
        "--topic",
        "orders",
        "--messages",
        "30000",
        "--acks",
        "durable",
        "--json",
        "--quiet",
    ]);
    assert_success(&out, "bench produce");
    let describe = |up: &Up| -> u64 {
        let topic = up.json(&["topic", "describe", "orders"]);
        let partitions = topic["partitions"].as_array().expect("partitions").clone();
        assert_eq!(partitions.len(), 3, "{topic}");
        partitions
            .iter()
            .map(|p| p["end_offset"].as_u64().unwrap())
            .sum()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while describe(&up) != 30_000 {
        assert!(
            Instant::now() < deadline,
            "describe never showed the produced offsets"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // Metrics from the shared counters.
    let (code, page) = up.scrape("/metrics");
    assert_eq!(code, 200);
    assert!(page.contains("precursor_"), "{page}");
    let records = sample(&page, "precursor_produce_records_total");
    assert_eq!(
        records,
        Some(30_000.0),
        "produced records in /metrics:\n{page}"
    );
    // Latency histograms: the flusher's fdatasyncs and the durable acks' wait for them.
    for histogram in [
        "precursor_flusher_fdatasync_seconds_count",
        "precursor_durable_ack_wait_seconds_count",
    ] {
        let count = sample(&page, histogram).unwrap_or_else(|| panic!("{histogram} in\n{page}"));
        assert!(count >= 1.0, "{histogram} = {count}");
    }
    assert_eq!(up.scrape("/healthz").0, 200);

    // kill -9 the data plane: the supervisor restarts it, recovery keeps every acked message.
    let first = up.wait_alive(None);
    let _ = Command::new("kill")
        .args(["-KILL", &first.to_string()])
        .status();
    let second = up.wait_alive(Some(first));
    assert_ne!(first, second);
    assert_eq!(
        describe(&up),
        30_000,
        "acknowledged data survived the restart"
    );
    let out = node.precursor(&[
        "consume",
        "orders",
        "--verify",
        "--count",
        "30000",
        "--idle-timeout-ms",
        "10000",
    ]);
    assert_success(&out, "consume --verify after the restart");
    let status = up.json(&["status"]);
    assert!(status["restarts"].as_u64().unwrap() >= 1, "{status}");

    // Alter and delete.
    assert_success(
        &up.cli(&["topic", "alter", "orders", "--retention-ms", "3600000"]),
        "topic alter",
    );
    assert_success(&up.cli(&["topic", "delete", "orders"]), "topic delete");
    let topics = up.json(&["topic", "list"]);
    assert!(!topics.to_string().contains("orders"), "{topics}");
    let gone = up.cli(&["topic", "delete", "orders"]);
    assert!(!gone.status.success());

    up.stop();
}

#[test]
fn admin_commands_without_a_broker_fail_in_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("none.sock");
    let out = Command::new(precursor())
        .args(["topic", "list", "--socket"])
        .arg(&socket)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let message = stderr(&out);
    assert_eq!(message.trim().lines().count(), 1, "{message}");
    assert!(message.contains("is the broker running"), "{message}");
}

#[test]
fn a_bad_config_file_is_refused_with_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.toml");
    std::fs::write(&config, "[storage]\nsegment_bytes = 12\n").unwrap();
    let out = Command::new(precursor())
        .args(["up", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("storage.segment_bytes"),
        "{}",
        stderr(&out)
    );
    let out = Command::new(precursor())
        .args(["config", "show", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("storage.segment_bytes"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn ping_dataplane_times_command_ring_round_trips_against_the_real_data_plane() {
    let _serial = serial();
    if !can_run("ping_dataplane") {
        return;
    }
    let node = AfPacketNode::new("r", 5, "");
    let dir = tempfile::tempdir().unwrap();
    let up = Up::start(&node, dir.path());

    // The series, measured in the link thread: every ping answered, percentiles ordered.
    let series = up.json(&["bench", "command-ring", "--requests", "2000"]);
    assert_eq!(series["transport"], "command-ring", "{series}");
    assert_eq!(series["messages"], 2000, "{series}");
    assert_eq!(series["errors"], 0, "{series}");
    let us = |field: &str| {
        series[field]
            .as_f64()
            .unwrap_or_else(|| panic!("{field}: {series}"))
    };
    assert!(us("p50_us") > 0.0, "{series}");
    assert!(us("p50_us") <= us("p90_us"), "{series}");
    assert!(us("p90_us") <= us("p99_us"), "{series}");
    assert!(us("p99_us") <= us("p999_us"), "{series}");
    assert!(us("p999_us") <= us("max_us"), "{series}");

    // The raw admin answer carries the count and nanosecond percentiles.
    let socket = dir.path().join("admin.sock");
    let response = precursor_controlplane::admin::request(
        &socket,
        &precursor_controlplane::admin::Request::PingDataplane { count: 50 },
    )
    .unwrap();
    match response {
        precursor_controlplane::admin::Response::Latency {
            count,
            p50_ns,
            p90_ns,
            p99_ns,
            p999_ns,
            max_ns,
        } => {
            assert_eq!(count, 50);
            assert!(p50_ns > 0 && p50_ns <= p90_ns && p90_ns <= p99_ns);
            assert!(p99_ns <= p999_ns && p999_ns <= max_ns);
        }
        other => panic!("not a latency answer: {other:?}"),
    }

    // Out of range counts are refused with the reason, not attempted.
    let zero = up.cli(&["bench", "command-ring", "--requests", "0"]);
    assert!(!zero.status.success());
    assert!(stderr(&zero).contains("1..="), "{}", stderr(&zero));

    // The paced load: every request answered through the ring.
    let paced = up.json(&["bench", "command-ring", "--rate", "200", "--seconds", "1"]);
    assert_eq!(paced["messages"], 200, "{paced}");
    assert_eq!(paced["errors"], 0, "{paced}");

    // Ordinary admin commands still go through the ring afterwards.
    assert_success(
        &up.cli(&["topic", "create", "after-pings", "--partitions", "1"]),
        "topic create after a ping series",
    );
    up.stop();
}

#[test]
fn a_killed_supervisor_takes_its_data_plane_down_cleanly() {
    let _serial = serial();
    if !can_run("a_killed_supervisor") {
        return;
    }
    let node = AfPacketNode::new(
        "l",
        6,
        "[[topics.create]]\nname = \"kept\"\npartitions = 1\n",
    );
    let dir = tempfile::tempdir().unwrap();
    let mut up = Up::start(&node, dir.path());
    let out = node.precursor(&[
        "bench",
        "produce",
        "--topic",
        "kept",
        "--messages",
        "5000",
        "--acks",
        "durable",
        "--quiet",
    ]);
    assert_success(&out, "bench produce");
    let dataplane = up.wait_alive(None);

    // SIGKILL the supervisor: no chance to stop its child. The lifeline pipe closes and the
    // data plane stops on its own, flushing, instead of living on as an orphan.
    let mut supervisor = up.child.take().unwrap();
    supervisor.kill().unwrap();
    supervisor.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::path::Path::new(&format!("/proc/{dataplane}")).exists() {
        let state = std::fs::read_to_string(format!("/proc/{dataplane}/stat")).unwrap_or_default();
        if state.split_whitespace().nth(2) == Some("Z") {
            break; // exited, waiting to be reaped by init
        }
        assert!(
            Instant::now() < deadline,
            "the data plane outlived its supervisor"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // A new supervisor takes the same data directory (the lock was released) with all data.
    let up = Up::start(&node, dir.path());
    let topic = up.json(&["topic", "describe", "kept"]);
    assert_eq!(topic["partitions"][0]["end_offset"], 5000, "{topic}");
    up.stop();
}
