//! A local cluster for end-to-end tests: `precursor cluster up` with a directory, a name
//! and a subnet of the test's own (they carry the test process's pid, so a test never
//! meets a user's cluster or another test run's), faults (kill -9 of a data plane, a broker
//! stopped, a link cut at the bridge), and the CLI run against one broker from the host
//! namespace. Dropping the [`Cluster`] runs `precursor cluster down --purge`: no namespace,
//! veth, bridge, process or shared file is left behind.
//!
//! ```ignore
//! let _serial = serial();                  // one data-plane test at a time
//! if !can_run("my_test") { return; }
//! let cluster = Cluster::up(3, ClusterOptions::default());
//! let out = cluster.precursor(1, &["topic", "create", "t", "-p", "3", "-r", "3"]);
//! cluster.kill_dataplane(2);               // `precursor up` restarts it
//! cluster.link_down(3);                    // DPDK bypasses netfilter: cut the link
//! ```

use super::{assert_success, precursor, stderr, stdout};
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Bounded waits of the helpers: how long a data plane may take to come back, in ms.
const DATAPLANE_RETURN_TIMEOUT_MS: u64 = 120_000;
const POLL_MS: u64 = 100;

/// What `precursor cluster up` is given besides the node count; `None` takes its default.
#[derive(Clone, Debug, Default)]
pub struct ClusterOptions {
    pub replication_factor: Option<u8>,
    pub min_insync_replicas: Option<u8>,
    /// `memory` or `durable`.
    pub acks_all: Option<&'static str>,
    /// `balanced`, `high` or `maximum`.
    pub preset: Option<&'static str>,
    pub segment_bytes: Option<u64>,
    pub mbufs: Option<u32>,
    /// `static` or `quorum` (`cluster.metadata`).
    pub metadata: Option<&'static str>,
}

/// One broker of a running [`Cluster`], as `cluster.json` describes it.
#[derive(Clone, Debug)]
pub struct Node {
    pub id: u32,
    /// `address:port` of the data plane, for `--broker` / `PRECURSOR_BROKER`.
    pub broker: String,
    /// `host:port` of the Kafka listener.
    pub kafka: String,
    /// `host:port` of the control plane's cluster listener.
    pub admin: String,
    /// `http://host:port/metrics`.
    pub metrics: String,
    pub admin_socket: PathBuf,
    pub config: PathBuf,
    pub log: PathBuf,
    pub data_dir: PathBuf,
    pub cnc_dir: PathBuf,
    pub memory_dir: PathBuf,
    pub netns: String,
    /// The host-side ends (on the bridge) of its kernel's and its data plane's veths.
    pub kernel_veth: String,
    pub dataplane_veth: String,
}

impl Node {
    /// `host:port` of the metrics listener (for a raw HTTP GET).
    pub fn metrics_address(&self) -> String {
        self.metrics
            .trim_start_matches("http://")
            .trim_end_matches("/metrics")
            .to_string()
    }
}

/// A running local cluster; `precursor cluster down --purge` when dropped.
pub struct Cluster {
    pub dir: PathBuf,
    pub name: String,
    pub subnet: String,
    pub bridge: String,
    nodes: Vec<Node>,
    _dir: tempfile::TempDir,
}

/// Clusters made by this test process so far (each gets its own name and subnet).
static CLUSTERS_MADE: AtomicU32 = AtomicU32::new(0);

fn base36(mut n: u32) -> String {
    let digits = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut text = Vec::new();
    loop {
        text.push(digits[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    text.reverse();
    String::from_utf8(text).unwrap()
}

impl Cluster {
    /// `precursor cluster up --nodes N` in a fresh directory, under a name and subnet of
    /// this test process's own; panics with the command's output if it fails.
    pub fn up(nodes: u32, options: ClusterOptions) -> Cluster {
        let pid = std::process::id();
        let serial = CLUSTERS_MADE.fetch_add(1, Ordering::Relaxed);
        // "t" + the pid in base 36 (at most 5) + one more: at most 7 of the 8 allowed.
        let name = format!("t{}{}", base36(pid), base36(serial % 36));
        let spread = pid.wrapping_mul(8).wrapping_add(serial);
        let subnet = format!("10.{}.{}.0/24", 150 + (spread / 250) % 100, spread % 250);
        let dir = tempfile::Builder::new()
            .prefix("precursor-cluster-test")
            .tempdir()
            .unwrap();
        let mut args: Vec<String> = vec![
            "cluster".into(),
            "up".into(),
            "--nodes".into(),
            nodes.to_string(),
            "--dir".into(),
            dir.path().display().to_string(),
            "--name".into(),
            name.clone(),
            "--subnet".into(),
            subnet.clone(),
            "--json".into(),
        ];
        let mut flag = |name: &str, value: Option<String>| {
            if let Some(value) = value {
                args.push(format!("--{name}"));
                args.push(value);
            }
        };
        flag(
            "replication-factor",
            options.replication_factor.map(|v| v.to_string()),
        );
        flag(
            "min-insync-replicas",
            options.min_insync_replicas.map(|v| v.to_string()),
        );
        flag("acks-all", options.acks_all.map(str::to_string));
        flag("preset", options.preset.map(str::to_string));
        flag(
            "segment-bytes",
            options.segment_bytes.map(|v| v.to_string()),
        );
        flag("mbufs", options.mbufs.map(|v| v.to_string()));
        flag("metadata", options.metadata.map(str::to_string));
        let out = Command::new(precursor())
            .args(&args)
            .output()
            .expect("precursor runs");
        if !out.status.success() {
            // Whatever it made before failing goes (it removes its own, this is the
            // belt to those braces).
            let _ = Command::new(precursor())
                .args(["cluster", "down", "--purge", "--dir"])
                .arg(dir.path())
                .output();
            panic!(
                "precursor {} failed ({}):\nstdout: {}\nstderr: {}",
                args.join(" "),
                out.status,
                stdout(&out),
                stderr(&out)
            );
        }
        let layout: serde_json::Value = serde_json::from_str(stdout(&out).trim())
            .unwrap_or_else(|e| panic!("cluster up --json: {e}: {}", stdout(&out)));
        let text = |v: &serde_json::Value, key: &str| {
            v[key]
                .as_str()
                .unwrap_or_else(|| panic!("{key} missing in {v}"))
                .to_string()
        };
        let nodes = layout["brokers"]
            .as_array()
            .expect("brokers in the layout")
            .iter()
            .map(|b| Node {
                id: b["id"].as_u64().unwrap() as u32,
                broker: format!("{}:{}", text(b, "dataplane_address"), b["udp_port"]),
                kafka: text(b, "kafka"),
                admin: text(b, "admin"),
                metrics: text(b, "metrics"),
                admin_socket: PathBuf::from(text(b, "admin_socket")),
                config: PathBuf::from(text(b, "config")),
                log: PathBuf::from(text(b, "log")),
                data_dir: PathBuf::from(text(b, "data_dir")),
                cnc_dir: PathBuf::from(text(b, "cnc_dir")),
                memory_dir: PathBuf::from(text(b, "memory_dir")),
                netns: text(b, "netns"),
                kernel_veth: text(b, "kernel_veth"),
                dataplane_veth: text(b, "dataplane_veth"),
            })
            .collect();
        Cluster {
            dir: dir.path().to_path_buf(),
            bridge: text(&layout, "bridge"),
            name,
            subnet,
            nodes,
            _dir: dir,
        }
    }

    /// `nodes` brokers with `cluster.metadata = "quorum"`, once every one registered with
    /// the metadata quorum (a topic is placed on registered brokers only).
    pub fn up_quorum(nodes: u32) -> Cluster {
        let cluster = Cluster::up(
            nodes,
            ClusterOptions {
                metadata: Some("quorum"),
                ..ClusterOptions::default()
            },
        );
        wait_until("every broker registered with the metadata quorum", || {
            (1..=nodes)
                .all(|i| cluster.precursor_json(i, &["status"])["quorum"]["registered"] == true)
        });
        cluster
    }

    /// Broker `i` (1-based, as the broker ids).
    pub fn node(&self, i: u32) -> &Node {
        self.nodes
            .iter()
            .find(|n| n.id == i)
            .unwrap_or_else(|| panic!("no broker {i} in a cluster of {}", self.nodes.len()))
    }

    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// Kafka's `bootstrap.servers`: every broker's listener.
    pub fn bootstrap_servers(&self) -> String {
        self.nodes
            .iter()
            .map(|n| n.kafka.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// `precursor cluster ARGS --dir <this cluster>`.
    pub fn cluster_command(&self, args: &[&str]) -> Output {
        Command::new(precursor())
            .arg("cluster")
            .args(args)
            .arg("--dir")
            .arg(&self.dir)
            .output()
            .expect("precursor runs")
    }

    /// `precursor ARGS` from the host namespace against broker `i`: admin commands go to
    /// its admin socket, client commands to its data plane (`PRECURSOR_ADMIN_SOCKET`,
    /// `PRECURSOR_BROKER`; an explicit `--socket`/`--broker` in ARGS wins).
    pub fn precursor(&self, i: u32, args: &[&str]) -> Output {
        let node = self.node(i);
        Command::new(precursor())
            .args(args)
            .env("PRECURSOR_ADMIN_SOCKET", &node.admin_socket)
            .env("PRECURSOR_BROKER", &node.broker)
            .output()
            .expect("precursor runs")
    }

    /// [`Cluster::precursor`] with `--json`, which must succeed; its output parsed.
    pub fn precursor_json(&self, i: u32, args: &[&str]) -> serde_json::Value {
        let mut with_json = args.to_vec();
        with_json.push("--json");
        let out = self.precursor(i, &with_json);
        assert_success(&out, &format!("broker {i}: precursor {}", args.join(" ")));
        serde_json::from_str(stdout(&out).trim())
            .unwrap_or_else(|e| panic!("{e}: {}", stdout(&out)))
    }

    /// `precursor cluster status --json` (whatever its exit status).
    pub fn status(&self) -> serde_json::Value {
        let out = self.cluster_command(&["status", "--json"]);
        serde_json::from_str(stdout(&out).trim())
            .unwrap_or_else(|e| panic!("cluster status --json: {e}: {}", stdout(&out)))
    }

    /// The pid of broker `i`'s data plane process, when one runs (found in its namespace).
    pub fn dataplane_pid(&self, i: u32) -> Option<u32> {
        let out = Command::new("ip")
            .args(["netns", "pids", &self.node(i).netns])
            .output()
            .expect("ip runs");
        stdout(&out)
            .split_whitespace()
            .filter_map(|p| p.parse::<u32>().ok())
            .find(|pid| {
                // argv[0] as `precursor up` started it (the exe link of a binary rebuilt
                // meanwhile reads "... (deleted)").
                let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                let program = cmdline.split(|&b| b == 0).next().unwrap_or_default();
                program.ends_with(b"precursor-dataplane")
            })
    }

    /// kill -9 of broker `i`'s data plane only (its `precursor up` restarts it); returns
    /// the pid it killed.
    pub fn kill_dataplane(&self, i: u32) -> u32 {
        let pid = self
            .dataplane_pid(i)
            .unwrap_or_else(|| panic!("broker {i} runs no data plane"));
        let status = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -9 {pid}");
        pid
    }

    /// Waits (bounded) until broker `i` has a live, attached data plane other than
    /// `not_pid`; returns its pid.
    pub fn wait_dataplane(&self, i: u32, not_pid: Option<u32>) -> u32 {
        let deadline = Instant::now() + Duration::from_millis(DATAPLANE_RETURN_TIMEOUT_MS);
        loop {
            let out = self.precursor(i, &["status", "--json"]);
            if out.status.success() {
                let status: serde_json::Value =
                    serde_json::from_str(stdout(&out).trim()).unwrap_or_default();
                let pid = status["dataplane_pid"].as_u64().map(|p| p as u32);
                let alive = status["dataplane_alive"] == true;
                if let Some(pid) = pid.filter(|&p| alive && Some(p) != not_pid) {
                    return pid;
                }
            }
            assert!(
                Instant::now() < deadline,
                "broker {i}: no live data plane within {DATAPLANE_RETURN_TIMEOUT_MS} ms: {}",
                stderr(&out)
            );
            std::thread::sleep(Duration::from_millis(POLL_MS));
        }
    }

    /// kill -9 of every process of broker `i` (its `precursor up` and its data plane): the
    /// machine died. Its namespace and links stay; [`Cluster::start_broker`] brings it back.
    pub fn kill_broker(&self, i: u32) {
        let out = Command::new("ip")
            .args(["netns", "pids", &self.node(i).netns])
            .output()
            .expect("ip runs");
        let pids: Vec<String> = stdout(&out)
            .split_whitespace()
            .map(str::to_string)
            .collect();
        assert!(!pids.is_empty(), "broker {i} runs no process");
        let status = Command::new("kill")
            .arg("-KILL")
            .args(&pids)
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -9 {pids:?}");
        wait_until(&format!("broker {i}'s processes to be gone"), || {
            let out = Command::new("ip")
                .args(["netns", "pids", &self.node(i).netns])
                .output()
                .expect("ip runs");
            stdout(&out).split_whitespace().all(|pid| {
                let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
                stat.rsplit_once(')')
                    .is_none_or(|(_, rest)| rest.trim_start().starts_with('Z'))
            })
        });
    }

    /// Sends `signal` (`STOP`, `CONT`) to every process of broker `i`.
    pub fn signal_broker(&self, i: u32, signal: &str) {
        let out = Command::new("ip")
            .args(["netns", "pids", &self.node(i).netns])
            .output()
            .expect("ip runs");
        for pid in stdout(&out).split_whitespace() {
            let _ = Command::new("kill")
                .args([&format!("-{signal}"), pid])
                .status();
        }
    }

    /// Stops broker `i` (`precursor cluster stop`): its control plane and data plane exit
    /// cleanly; its namespace and links stay.
    pub fn stop_broker(&self, i: u32) {
        let out = self.cluster_command(&["stop", "--node", &i.to_string()]);
        assert_success(&out, &format!("cluster stop --node {i}"));
    }

    /// Starts broker `i` again (`precursor cluster start`; returns once it is up).
    pub fn start_broker(&self, i: u32) {
        let out = self.cluster_command(&["start", "--node", &i.to_string()]);
        assert_success(&out, &format!("cluster start --node {i}"));
    }

    /// Cuts broker `i` off the bridge: both of its veths, the kernel's (Kafka, cluster
    /// listener) and the data plane's, go down at the bridge side. DPDK's traffic bypasses
    /// netfilter, so this (not iptables) is how a partition is made.
    pub fn link_down(&self, i: u32) {
        self.set_links(i, "down");
    }

    pub fn link_up(&self, i: u32) {
        self.set_links(i, "up");
    }

    /// Cuts only broker `i`'s data-plane link (replication and native clients), leaving its
    /// control plane reachable.
    pub fn dataplane_link_down(&self, i: u32) {
        let node = self.node(i);
        ip_link_set(&node.dataplane_veth, "down");
    }

    pub fn dataplane_link_up(&self, i: u32) {
        let node = self.node(i);
        ip_link_set(&node.dataplane_veth, "up");
    }

    fn set_links(&self, i: u32, state: &str) {
        let node = self.node(i);
        for veth in [&node.kernel_veth, &node.dataplane_veth] {
            ip_link_set(veth, state);
        }
    }

    /// `precursor cluster down --purge`, which must succeed (Drop does the same, quietly).
    pub fn down(self) {
        let out = self.cluster_command(&["down", "--purge"]);
        assert_success(&out, "cluster down --purge");
    }
}

fn ip_link_set(veth: &str, state: &str) {
    let out = Command::new("ip")
        .args(["link", "set", veth, state])
        .output()
        .expect("ip runs");
    assert_success(&out, &format!("ip link set {veth} {state}"));
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let out = self.cluster_command(&["down", "--purge"]);
        if !out.status.success() {
            eprintln!(
                "WARNING: cluster down --dir {} failed: {}",
                self.dir.display(),
                stderr(&out)
            );
        }
    }
}

impl Cluster {
    /// `topic describe` of `topic` as broker `i` sees it: its partitions (JSON).
    pub fn partitions(&self, i: u32, topic: &str) -> Vec<serde_json::Value> {
        let described = self.precursor_json(i, &["topic", "describe", topic]);
        described["partitions"]
            .as_array()
            .unwrap_or_else(|| panic!("describe {topic} on {i}: {described}"))
            .clone()
    }
}

/// A numeric field of a partition's JSON (`Cluster::partitions`).
pub fn field(partition: &serde_json::Value, name: &str) -> u64 {
    partition[name]
        .as_u64()
        .unwrap_or_else(|| panic!("no {name} in {partition}"))
}

/// Waits for `done`, polling every 100 ms, at most two minutes (a bounded wait, not a
/// timing claim: nothing asserts how long it took).
pub fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !done() {
        assert!(
            Instant::now() < deadline,
            "gave up waiting for {what} (a bounded wait, not a timing claim)"
        );
        std::thread::sleep(Duration::from_millis(POLL_MS));
    }
}

/// What a `precursor produce --acks all --verbose` run was told: each line acknowledged,
/// by offset (a retransmit the broker had appended before gets `u64::MAX - i`: its offset
/// is not known, its content is checked), and when each acknowledgement arrived.
pub struct AckHistory {
    pub acked: std::collections::BTreeMap<u64, String>,
    pub ack_times: Vec<Instant>,
}

impl AckHistory {
    /// The longest time between two acknowledgements: what a producer saw of an outage.
    pub fn longest_gap(&self) -> Duration {
        self.ack_times
            .windows(2)
            .map(|w| w[1].duration_since(w[0]))
            .max()
            .unwrap_or_default()
    }
}

/// `precursor produce TOPIC --acks all --verbose --partition 0 --broker BROKERS` of `count`
/// lines `"line {i}"`; `on_ack(acknowledged so far)` runs after each acknowledgement (a
/// fault test kills or stops brokers there). The command must succeed.
pub fn produce_acked(
    brokers: &str,
    topic: &str,
    count: u64,
    mut on_ack: impl FnMut(u64),
) -> AckHistory {
    use std::io::{BufRead, Write};
    let mut child = Command::new(precursor())
        .args(["produce", topic, "--acks", "all", "--verbose"])
        .args(["--broker", brokers, "--partition", "0"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let feeder = std::thread::spawn(move || {
        let mut stdin = std::io::BufWriter::new(&mut stdin);
        for i in 0..count {
            if writeln!(stdin, "line {i}").is_err() {
                break;
            }
        }
    });
    let lines = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut history = AckHistory {
        acked: std::collections::BTreeMap::new(),
        ack_times: Vec::with_capacity(count as usize),
    };
    for (i, line) in lines.lines().enumerate() {
        let line = line.unwrap();
        // "partition offset", in input order: line i got this offset.
        let offset = match line.split_whitespace().nth(1) {
            Some("-") => u64::MAX - i as u64,
            Some(offset) => offset
                .parse()
                .unwrap_or_else(|_| panic!("produce printed {line:?}")),
            None => panic!("produce printed {line:?}"),
        };
        history.acked.insert(offset, format!("line {i}"));
        history.ack_times.push(Instant::now());
        on_ack(history.acked.len() as u64);
    }
    feeder.join().unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "produce to {brokers}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    history
}

/// The checker of a history: partition 0 of `topic` read from every broker in `brokers`
/// holds `count` lines, none twice, and each acknowledged line at its offset (lost
/// acknowledged writes, duplicates, one offset with two values: all fail here).
pub fn check_history(
    cluster: &Cluster,
    brokers: &[u32],
    topic: &str,
    history: &AckHistory,
    count: u64,
) {
    for &id in brokers {
        let node = cluster.node(id);
        let out = Command::new(precursor())
            .args([
                "consume",
                topic,
                "--from-beginning",
                "--broker",
                &node.broker,
            ])
            .args(["--count", &count.to_string()])
            .output()
            .unwrap();
        assert_success(&out, &format!("consume from broker {id}"));
        let lines: Vec<String> = stdout(&out).lines().map(str::to_string).collect();
        assert_eq!(lines.len() as u64, count, "broker {id}");
        let distinct: std::collections::BTreeSet<&String> = lines.iter().collect();
        assert_eq!(distinct.len() as u64, count, "broker {id}: a line twice");
        for (offset, line) in &history.acked {
            if *offset < count {
                assert_eq!(
                    &lines[*offset as usize], line,
                    "broker {id} offset {offset}"
                );
            } else {
                assert!(distinct.contains(line), "broker {id}: {line} missing");
            }
        }
    }
}
