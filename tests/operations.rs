//! Operating a broker (issue 17): consumer lag in the CLI and on /metrics with a real
//! Kafka consumer group, the web dashboard in a real browser (headless Chromium), and the
//! Grafana dashboard's and the alert rules' metric names against a running broker's
//! /metrics (promtool checks and unit-tests the rules).
//!
//! Needs root (network namespaces for the data plane's port), kcat, the confluent-kafka
//! venv, chromium and promtool (ci/setup.sh installs them). Run one e2e test at a time
//! across worktrees: `flock /tmp/precursor-e2e.lock cargo test --release --test operations`.

mod common;

use common::kafka::*;
use common::*;
use std::process::Command;
use std::time::Duration;

/// A Python with a current confluent-kafka wheel (librdkafka bundled), made by ci/setup.sh.
const CURRENT_LIBRDKAFKA_PYTHON: &str = "/opt/precursor-kafka-venv/bin/python";

/// How long a consumer group may take to form and commit (a liveness bound).
const GROUP_FORMED_LIMIT: Duration = Duration::from_secs(60);

fn json(out: &std::process::Output, what: &str) -> serde_json::Value {
    assert_success(out, what);
    serde_json::from_str(stdout(out).trim())
        .unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {}", stdout(out)))
}

/// Starts lag_consumer.py: group `group` commits `commit_offset` on every partition of
/// `topic`, then stays in the group.
fn lag_consumer(
    broker: &Broker,
    group: &str,
    topic: &str,
    partitions: u32,
    commit_offset: u64,
) -> LineProcess {
    let mut command = kafka_client(CURRENT_LIBRDKAFKA_PYTHON);
    command.arg(script("lag_consumer.py")).args([
        broker.bootstrap.as_str(),
        group,
        topic,
        &partitions.to_string(),
        &commit_offset.to_string(),
        "lag-consumer",
    ]);
    LineProcess::spawn(command)
}

#[test]
fn consumer_lag_shows_in_group_describe_and_on_metrics() {
    let _serial = serial();
    if !can_run("consumer_lag") || !clients_installed("consumer_lag") {
        return;
    }
    let node = AfPacketNode::new("lg", 41, "");
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(&node, dir.path());
    broker.create_topic("lagged", 2);
    produce_to_partition(&broker.bootstrap, "lagged", 0, 30, "p0");
    produce_to_partition(&broker.bootstrap, "lagged", 1, 20, "p1");

    let consumer = lag_consumer(&broker, "lag-g", "lagged", 2, 10);
    wait_for("the consumer's commits", GROUP_FORMED_LIMIT, || {
        consumer.has_line("DONE")
    });
    // The member stays; the group is Stable once its SyncGroup is done (it is: it fetched).
    let described = json(
        &broker.cli(&["group", "describe", "lag-g", "--json"]),
        "group describe --json",
    );
    assert_eq!(described["group"], "lag-g", "{described}");
    assert_eq!(described["state"], "Stable", "{described}");
    assert_eq!(described["protocol_type"], "consumer", "{described}");
    assert_eq!(described["protocol"], "range", "{described}");
    let members = described["members"].as_array().unwrap();
    assert_eq!(members.len(), 1, "{described}");
    assert_eq!(members[0]["client_id"], "lag-consumer", "{described}");
    assert_eq!(members[0]["client_host"], "/127.0.0.1", "{described}");
    assert_eq!(
        members[0]["assignment"],
        serde_json::json!([{"topic": "lagged", "partitions": [0, 1]}]),
        "{described}"
    );
    let member_id = members[0]["member_id"].as_str().unwrap().to_string();
    let rows: Vec<(i64, i64, u64, u64, String)> = described["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["partition"].as_i64().unwrap(),
                p["committed_offset"].as_i64().unwrap(),
                p["log_end_offset"].as_u64().unwrap(),
                p["lag"].as_u64().unwrap(),
                p["member_id"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        vec![
            (0, 10, 30, 20, member_id.clone()),
            (1, 10, 20, 10, member_id.clone())
        ],
        "{described}"
    );

    // The table for people: kafka-consumer-groups' columns.
    let out = broker.cli(&["group", "describe", "lag-g"]);
    assert_success(&out, "group describe");
    let text = stdout(&out);
    let words = |line: &str| {
        line.split_whitespace()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let header = text
        .lines()
        .find(|l| l.starts_with("GROUP "))
        .map(words)
        .expect("a header line");
    assert_eq!(
        header,
        [
            "GROUP",
            "TOPIC",
            "PARTITION",
            "CURRENT-OFFSET",
            "LOG-END-OFFSET",
            "LAG",
            "CONSUMER-ID",
            "HOST",
            "CLIENT-ID"
        ],
        "{text}"
    );
    let line_of = |partition: &str| {
        text.lines()
            .map(words)
            .find(|w| w.len() == 9 && w[0] == "lag-g" && w[2] == partition)
            .unwrap_or_else(|| panic!("no line of partition {partition}: {text}"))
    };
    assert_eq!(
        line_of("0"),
        [
            "lag-g",
            "lagged",
            "0",
            "10",
            "30",
            "20",
            member_id.as_str(),
            "/127.0.0.1",
            "lag-consumer"
        ]
    );
    assert_eq!(line_of("1")[3..6], ["10", "20", "10"]);
    assert!(
        text.contains(&format!(
            "{member_id}  /127.0.0.1  lag-consumer  lagged(0,1)"
        )),
        "{text}"
    );

    let listed = json(
        &broker.cli(&["group", "list", "--json"]),
        "group list --json",
    );
    assert_eq!(
        listed,
        serde_json::json!([{"group": "lag-g", "state": "Stable", "protocol_type": "consumer",
                            "members": 1, "partitions": 2, "lag": 30}]),
    );

    let page = broker.scrape_metrics();
    let lag_of = |page: &str, partition: u32| {
        sample(
            page,
            "precursor_group_lag",
            &format!("group=\"lag-g\",topic=\"lagged\",partition=\"{partition}\""),
        )
    };
    assert_eq!(lag_of(&page, 0), Some(20.0), "{page}");
    assert_eq!(lag_of(&page, 1), Some(10.0));
    assert_eq!(
        sample(
            &page,
            "precursor_group_committed_offset",
            "group=\"lag-g\",topic=\"lagged\",partition=\"0\""
        ),
        Some(10.0)
    );
    assert_eq!(
        sample(&page, "precursor_group_members", "group=\"lag-g\""),
        Some(1.0)
    );

    // The consumer commits nothing more: new messages are lag.
    produce_to_partition(&broker.bootstrap, "lagged", 0, 5, "more");
    wait_for("the lag to grow", Duration::from_secs(10), || {
        lag_of(&broker.scrape_metrics(), 0) == Some(25.0)
    });
    assert_eq!(lag_of(&broker.scrape_metrics(), 1), Some(10.0));

    // The member leaves; its committed offsets and their lag stay.
    let _ = Command::new("kill")
        .args(["-TERM", &consumer.child.id().to_string()])
        .status();
    wait_for("the member to leave", GROUP_FORMED_LIMIT, || {
        consumer.has_line("CLOSED")
    });
    wait_for("an empty group", Duration::from_secs(10), || {
        let out = broker.cli(&["group", "describe", "lag-g", "--json"]);
        out.status.success() && json(&out, "group describe")["state"] == "Empty"
    });
    let described = json(
        &broker.cli(&["group", "describe", "lag-g", "--json"]),
        "group describe --json",
    );
    assert_eq!(described["members"], serde_json::json!([]));
    assert_eq!(described["partitions"][0]["lag"], 25, "{described}");
    let out = broker.cli(&["group", "describe", "nobody"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("(unknown_group)"), "{}", stderr(&out));
}

/// Where ci/setup.sh installs playwright-core (npm), which drives Debian's chromium.
const PLAYWRIGHT_CORE: &str = "/opt/precursor-playwright/node_modules/playwright-core";

fn browser_installed(test: &str) -> bool {
    let ok = std::path::Path::new("/usr/bin/chromium").exists()
        && std::path::Path::new(PLAYWRIGHT_CORE).exists()
        && Command::new("node").arg("--version").output().is_ok();
    if !ok {
        eprintln!("SKIPPED {test}: needs chromium, node and playwright-core (ci/setup.sh)");
    }
    ok
}

/// Loads the dashboard in headless Chromium until it has had `updates` updates (and, with
/// `latency`, shows a durable-ack p99), saves `screenshot` (under target/), and returns
/// what the page shows (tests/dashboard/read_dashboard.js).
fn read_dashboard(
    broker: &Broker,
    screenshot: &str,
    updates: u32,
    latency: bool,
) -> serde_json::Value {
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(screenshot);
    let out = Command::new("node")
        .arg(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/dashboard/read_dashboard.js"),
        )
        .args([
            PLAYWRIGHT_CORE,
            &format!("http://{}/", broker.metrics),
            &path.display().to_string(),
            &updates.to_string(),
            if latency { "latency" } else { "" },
        ])
        .output()
        .expect("node runs");
    let shown = json(&out, "read_dashboard.js");
    assert!(path.exists(), "no screenshot at {}", path.display());
    eprintln!("dashboard screenshot: {}", path.display());
    assert_eq!(
        shown["errors"],
        serde_json::json!([]),
        "script errors on the page"
    );
    shown
}

/// Produces to `topic` with the native client (acks=durable) from the client namespace,
/// 2000 messages a run, until `stop`; returns the runs made.
fn native_producer(
    node: &AfPacketNode,
    topic: &str,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<u32> {
    use std::io::Write;
    let command_of = {
        let netns = node.netns.name.clone();
        let broker = node.broker.clone();
        let topic = topic.to_string();
        move || {
            let mut command = Command::new("ip");
            command
                .args(["netns", "exec", &netns])
                .arg(precursor())
                .args(["produce", &topic, "--broker", &broker, "--acks", "durable"])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::null());
            command
        }
    };
    std::thread::spawn(move || {
        let mut runs = 0;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let mut child = command_of().spawn().expect("precursor produce starts");
            let lines: String = (0..2000).map(|i| format!("load-{runs}-{i}\n")).collect();
            child
                .stdin
                .take()
                .unwrap()
                .write_all(lines.as_bytes())
                .unwrap();
            let out = child.wait_with_output().unwrap();
            assert_success(&out, "precursor produce");
            runs += 1;
        }
        runs
    })
}

/// `precursor_partition_<gauge>{topic,partition}` on a /metrics page.
fn partition_gauge(page: &str, gauge: &str, topic: &str, partition: u64) -> Option<f64> {
    sample(
        page,
        &format!("precursor_partition_{gauge}"),
        &format!("topic=\"{topic}\",partition=\"{partition}\""),
    )
}

#[test]
fn the_dashboard_in_a_browser_shows_what_metrics_says() {
    let _serial = serial();
    if !can_run("dashboard") || !clients_installed("dashboard") || !browser_installed("dashboard") {
        return;
    }
    let node = AfPacketNode::new("db", 42, "");
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(&node, dir.path());
    broker.create_topic("dash", 2);
    produce_to_partition(&broker.bootstrap, "dash", 0, 40, "seed");
    produce_to_partition(&broker.bootstrap, "dash", 1, 40, "seed");
    let consumer = lag_consumer(&broker, "dash-g", "dash", 2, 15);
    wait_for("the consumer's commits", GROUP_FORMED_LIMIT, || {
        consumer.has_line("DONE")
    });

    // Under load: a native producer runs while the page is open.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let producer = native_producer(&node, "dash", stop.clone());
    wait_for(
        "the producer's first messages",
        Duration::from_secs(60),
        || {
            let page = broker.scrape_metrics();
            (0..2)
                .filter_map(|p| partition_gauge(&page, "end_offset", "dash", p))
                .sum::<f64>()
                > 2000.0
        },
    );
    let before = broker.scrape_metrics();
    let shown = read_dashboard(&broker, "dashboard-under-load.png", 4, true);
    let after = broker.scrape_metrics();
    assert!(
        shown["dataplane"]
            .as_str()
            .unwrap()
            .starts_with("data plane up"),
        "{shown}"
    );
    for partition in shown["partitions"].as_array().unwrap() {
        if partition["topic"] != "dash" {
            continue;
        }
        let p = partition["partition"].as_u64().unwrap();
        for field in ["end_offset", "durable_offset"] {
            let low = partition_gauge(&before, field, "dash", p).unwrap();
            let high = partition_gauge(&after, field, "dash", p).unwrap();
            let on_page = partition[field].as_f64().unwrap();
            assert!(
                low <= on_page && on_page <= high,
                "dash-{p} {field}: the page shows {on_page}, /metrics said {low} before and {high} after"
            );
        }
    }
    let dash = shown["topics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "dash")
        .unwrap_or_else(|| panic!("no topic dash on the page: {shown}"))
        .clone();
    assert!(
        dash["messages_per_s"].as_f64().unwrap() > 0.0,
        "a producer runs: {dash}"
    );
    let durable = shown["latency"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["histogram"] == "durable ack")
        .unwrap()
        .clone();
    let (p50, p99, p999) = (
        durable["p50_us"].as_f64().unwrap(),
        durable["p99_us"].as_f64().unwrap(),
        durable["p999_us"].as_f64().unwrap(),
    );
    assert!(
        0.0 < p50 && p50 <= p99 && p99 <= p999,
        "durable-ack percentiles in order: {durable}"
    );
    assert!(durable["count"].as_u64().unwrap() > 0, "{durable}");
    assert!(
        shown["busy"].as_str().unwrap().ends_with(" %"),
        "the lcore's busy fraction: {shown}"
    );
    let points = &shown["chart_points"];
    assert!(
        points
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["series"] == "dash" && s["points"].as_u64().unwrap() >= 2),
        "the throughput chart draws the topic: {points}"
    );

    // Stopped: the page must equal /metrics exactly.
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let runs = producer.join().unwrap();
    assert!(runs > 0);
    let settled = || {
        let page = broker.scrape_metrics();
        (0..2).all(|p| {
            partition_gauge(&page, "end_offset", "dash", p)
                == partition_gauge(&page, "durable_offset", "dash", p)
        })
    };
    wait_for("every message durable", Duration::from_secs(30), settled);
    let shown = read_dashboard(&broker, "dashboard-stopped.png", 2, false);
    let page = broker.scrape_metrics();
    let mut messages = 0.0;
    for p in 0..2u64 {
        let row = shown["partitions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["topic"] == "dash" && r["partition"] == p)
            .unwrap_or_else(|| panic!("no row of dash-{p}: {shown}"))
            .clone();
        for field in ["start_offset", "end_offset", "durable_offset", "bytes"] {
            assert_eq!(
                row[field].as_f64(),
                partition_gauge(&page, field, "dash", p),
                "dash-{p} {field}"
            );
        }
        messages += partition_gauge(&page, "messages", "dash", p).unwrap();
        let lag_row = shown["groups"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["group"] == "dash-g")
            .unwrap_or_else(|| panic!("no group dash-g on the page: {shown}"))["partitions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["topic"] == "dash" && r["partition"] == p)
            .unwrap()
            .clone();
        let labels = format!("group=\"dash-g\",topic=\"dash\",partition=\"{p}\"");
        assert_eq!(
            lag_row["lag"].as_f64(),
            sample(&page, "precursor_group_lag", &labels),
            "dash-g lag of partition {p}"
        );
        assert_eq!(lag_row["committed_offset"].as_f64(), Some(15.0));
        assert_eq!(
            lag_row["log_end_offset"].as_f64(),
            partition_gauge(&page, "end_offset", "dash", p)
        );
    }
    let dash = shown["topics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "dash")
        .unwrap()
        .clone();
    assert_eq!(dash["messages"].as_f64(), Some(messages), "{dash}");
    assert!(messages >= 2080.0, "seeded and produced: {messages}");
}

fn docs(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("docs")
        .join(name)
}

fn promtool_installed(test: &str) -> bool {
    let ok = Command::new("promtool").arg("--version").output().is_ok();
    if !ok {
        eprintln!("SKIPPED {test}: needs promtool (Debian's prometheus, ci/setup.sh)");
    }
    ok
}

/// Runs `promtool ARGS` in `dir`.
fn promtool(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("promtool runs")
}

#[test]
fn the_alert_rules_pass_promtool_check_and_their_unit_tests() {
    if !promtool_installed("alert_rules") {
        return;
    }
    let rules = std::fs::read_to_string(docs("alerts.yml")).unwrap();
    let alerts = rules
        .lines()
        .filter(|l| l.trim_start().starts_with("- alert: "))
        .count();
    assert!(alerts >= 10, "{alerts} alerts");
    let out = promtool(&docs(""), &["check", "rules", "alerts.yml"]);
    assert_success(&out, "promtool check rules");
    assert!(
        stdout(&out).contains(&format!("SUCCESS: {alerts} rules found")),
        "{}",
        stdout(&out)
    );
    let out = promtool(&docs(""), &["test", "rules", "alerts.test.yml"]);
    assert_success(&out, "promtool test rules");
    assert!(stdout(&out).contains("SUCCESS"), "{}", stdout(&out));
    // Every alert has a firing case in the unit tests.
    let tests = std::fs::read_to_string(docs("alerts.test.yml")).unwrap();
    for line in rules
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("- alert: "))
    {
        assert!(
            tests.contains(&format!("alertname: {line}\n        exp_alerts:")),
            "alert {line} has no firing case in alerts.test.yml"
        );
    }
    // The unit tests test: a rule with a wrong threshold fails them.
    let dir = tempfile::tempdir().unwrap();
    let broken = rules.replace(
        "precursor_filesystem_size_bytes{dir=\"data\"} < 0.10",
        "precursor_filesystem_size_bytes{dir=\"data\"} < 0.01",
    );
    assert_ne!(broken, rules, "the threshold to break is in the rules");
    std::fs::write(dir.path().join("alerts.yml"), broken).unwrap();
    std::fs::write(dir.path().join("alerts.test.yml"), &tests).unwrap();
    let out = promtool(dir.path(), &["test", "rules", "alerts.test.yml"]);
    assert!(
        !out.status.success(),
        "a broken rule passed: {}",
        stdout(&out)
    );
    // promtool reports the failing alert on stderr.
    let report = format!("{}{}", stdout(&out), stderr(&out));
    assert!(report.contains("PrecursorDiskNearlyFull"), "{report}");
}

/// Every `precursor_*` name in a PromQL expression.
fn metric_names_in(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut current = String::new();
    for c in expr.chars().chain(std::iter::once(' ')) {
        if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
            current.push(c);
        } else {
            if current.starts_with("precursor_") {
                names.push(std::mem::take(&mut current));
            }
            current.clear();
        }
    }
    names
}

/// Every `expr` (and templating `query`) string in the Grafana dashboard JSON.
fn grafana_expressions(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("expr" | "definition", serde_json::Value::String(expr)) => {
                        out.push(expr.clone())
                    }
                    _ => grafana_expressions(value, out),
                }
            }
        }
        serde_json::Value::Array(list) => list.iter().for_each(|v| grafana_expressions(v, out)),
        _ => {}
    }
}

#[test]
fn grafana_and_the_alert_rules_query_only_metrics_a_broker_has() {
    let _serial = serial();
    if !can_run("dashboard_metrics") || !clients_installed("dashboard_metrics") {
        return;
    }
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(docs("grafana/precursor.json")).unwrap())
            .expect("the Grafana dashboard is JSON");
    let mut grafana = Vec::new();
    grafana_expressions(&dashboard, &mut grafana);
    assert!(grafana.len() >= 30, "{} expressions", grafana.len());
    let rules = std::fs::read_to_string(docs("alerts.yml")).unwrap();
    let alerts: Vec<String> = rules
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("expr: "))
        .map(str::to_string)
        .collect();
    assert!(alerts.len() >= 10);

    let node = AfPacketNode::new("gm", 43, "");
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(&node, dir.path());
    broker.create_topic("graphed", 1);
    produce_to_partition(&broker.bootstrap, "graphed", 0, 10, "m");
    let names = metric_names(&broker.scrape_metrics());
    // Expressions that name no metric of a broker: only Prometheus' own scrape health.
    let mut foreign = Vec::new();
    for (source, expressions) in [
        ("docs/grafana/precursor.json", &grafana),
        ("docs/alerts.yml", &alerts),
    ] {
        for expr in expressions.iter() {
            let used = metric_names_in(expr);
            if used.is_empty() {
                foreign.push(expr.as_str());
            }
            for name in used {
                assert!(
                    names.contains(&name),
                    "{source} queries {name}, which a broker's /metrics does not have ({expr})"
                );
            }
        }
    }
    assert_eq!(foreign, vec!["up{job=\"precursor\"} == 0"]);
}
