//! Kafka clients against `precursor up`: the [`Broker`] (a data plane on an af_packet port,
//! the gateway on free loopback ports) and running clients nobody here wrote (kcat,
//! Debian's Python with confluent-kafka and kafka-python) with the system's loader path.

use super::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The Python that has the Debian packages python3-confluent-kafka and python3-kafka.
pub const PYTHON: &str = "/usr/bin/python3";

/// A Kafka client nobody here wrote (kcat, a Python interpreter), with the dynamic
/// loader's search path of the system. `cargo test --workspace` puts every build
/// script's native library directory on `LD_LIBRARY_PATH`, among them rdkafka-sys's,
/// which holds a librdkafka.so.1 (2.12, built for the bench): kcat and Debian's
/// confluent-kafka would load it instead of the librdkafka they were built against (kcat's
/// probe then sent Metadata requests the gateway rightly refused as malformed).
pub fn kafka_client(program: &str) -> Command {
    let mut command = Command::new(program);
    command.env_remove("LD_LIBRARY_PATH");
    command
}

pub fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/kafka")
        .join(name)
}

/// Whether the Kafka clients are installed; says so loudly when not.
pub fn clients_installed(test: &str) -> bool {
    let kcat = kafka_client("kcat").arg("-V").output().is_ok();
    let python = kafka_client(PYTHON)
        .args(["-c", "import confluent_kafka, kafka"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !(kcat && python) {
        eprintln!(
            "SKIPPED {test}: needs kcat, python3-confluent-kafka and python3-kafka (ci/setup.sh)"
        );
    }
    kcat && python
}

/// `precursor up` with its gateway on a free loopback port.
pub struct Broker {
    pub child: Option<Child>,
    pub config: PathBuf,
    /// `127.0.0.1:<port>` of the Kafka gateway.
    pub bootstrap: String,
    pub metrics: String,
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Broker {
    pub fn start(node: &AfPacketNode, dir: &Path) -> Broker {
        Broker::start_with(node, dir, "")
    }

    /// Like [`Broker::start`], with `extra` appended to the config after `[gateway]`
    /// (e.g. `[[gateway.listeners]]` tables).
    pub fn start_with(node: &AfPacketNode, dir: &Path, extra: &str) -> Broker {
        let bootstrap = format!("127.0.0.1:{}", free_tcp_port());
        let metrics = format!("127.0.0.1:{}", free_tcp_port());
        let config = node.up_config(
            dir,
            &metrics,
            &format!(
                "[gateway]\nlisten = {bootstrap:?}\ngroup_initial_rebalance_delay_ms = 1000\n{extra}"
            ),
        );
        let mut broker = Broker {
            child: None,
            config,
            bootstrap,
            metrics,
            log: Arc::new(Mutex::new(Vec::new())),
        };
        broker.spawn();
        broker
    }

    pub fn spawn(&mut self) {
        let mut child = Command::new(precursor())
            .args(["up", "--config"])
            .arg(&self.config)
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("precursor up starts");
        let pipe = child.stderr.take().unwrap();
        let log = self.log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                eprintln!("  [up] {line}");
                log.lock().unwrap().push(line);
            }
        });
        self.child = Some(child);
        self.wait_ready();
    }

    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(precursor())
            .args(args)
            .arg("--config")
            .arg(&self.config)
            .output()
            .unwrap()
    }

    /// Waits until the data plane is alive and the gateway answers Metadata.
    pub fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "precursor up exited ({status}): {:?}",
                    self.log.lock().unwrap()
                );
            }
            let out = self.cli(&["status", "--json"]);
            if out.status.success() && stdout(&out).contains("\"dataplane_alive\":true") {
                let probe = kafka_client("kcat")
                    .args(["-b", &self.bootstrap, "-L", "-m", "5"])
                    .output()
                    .unwrap();
                if probe.status.success() {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "the broker did not come up");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn create_topic(&self, name: &str, partitions: u32) {
        let out = self.cli(&[
            "topic",
            "create",
            name,
            "--partitions",
            &partitions.to_string(),
        ]);
        assert_success(&out, "topic create");
    }

    /// SIGTERM to `precursor up` and wait (it stops the data plane, which flushes).
    pub fn stop(&mut self) {
        let mut child = self.child.take().expect("running");
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let status = child.wait().unwrap();
        assert!(status.success(), "precursor up exit status {status}");
    }

    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    pub fn scrape_metrics(&self) -> String {
        let mut stream = TcpStream::connect(&self.metrics).expect("metrics listener");
        write!(stream, "GET /metrics HTTP/1.0\r\nHost: test\r\n\r\n").unwrap();
        let mut page = String::new();
        stream.read_to_string(&mut page).unwrap();
        page
    }

    /// The value of `metric{label}` on /metrics, 0 when absent.
    pub fn metric(&self, metric: &str, label: &str) -> f64 {
        let page = self.scrape_metrics();
        page.lines()
            .filter(|l| l.starts_with(metric) && l.contains(label))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = Command::new("pkill")
            .args(["-KILL", "-f", &self.config.display().to_string()])
            .status();
    }
}

/// A client process whose stdout lines are collected as they come (killed on drop).
pub struct LineProcess {
    pub child: Child,
    pub lines: Arc<Mutex<Vec<String>>>,
}

impl LineProcess {
    pub fn spawn(mut command: Command) -> LineProcess {
        let mut child = command
            .stdout(Stdio::piped())
            .spawn()
            .expect("client process starts");
        let pipe = child.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                eprintln!("  [client] {line}");
                sink.lock().unwrap().push(line);
            }
        });
        LineProcess { child, lines }
    }

    pub fn has_line(&self, line: &str) -> bool {
        self.lines.lock().unwrap().iter().any(|l| l == line)
    }

    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }
}

impl Drop for LineProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Produces `count` messages `<prefix>-<i>` to one partition of `topic` with kcat, acks=all.
pub fn produce_to_partition(
    bootstrap: &str,
    topic: &str,
    partition: u32,
    count: usize,
    prefix: &str,
) {
    let input: String = (0..count).map(|i| format!("{prefix}-{i}\n")).collect();
    let partition = partition.to_string();
    kcat_produce(
        &[
            "-b", bootstrap, "-P", "-t", topic, "-p", &partition, "-X", "acks=all",
        ],
        &input,
    );
}

/// `kcat <args>` with `input` on its stdin (a producer: `-P` among the args); asserts it
/// succeeded and returns what it printed.
pub fn kcat_produce(args: &[&str], input: &str) -> std::process::Output {
    let mut producer = kafka_client("kcat")
        .args(args)
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kcat (ci/setup.sh installs it)");
    producer
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = producer.wait_with_output().unwrap();
    assert_success(&out, "kcat -P");
    out
}

/// The value of the sample `name{labels}` exactly (labels as Prometheus prints them,
/// e.g. `group="g",topic="t",partition="0"`) in a /metrics page; None when absent.
pub fn sample(page: &str, name: &str, labels: &str) -> Option<f64> {
    let prefix = if labels.is_empty() {
        format!("{name} ")
    } else {
        format!("{name}{{{labels}}} ")
    };
    page.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
}

/// The metric family names a /metrics page declares (`# TYPE name type`), with the
/// sample suffixes a query may use (`_total`, `_bucket`, `_sum`, `_count`).
pub fn metric_names(page: &str) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    for line in page.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut fields = rest.split_whitespace();
            let (Some(name), Some(kind)) = (fields.next(), fields.next()) else {
                continue;
            };
            match kind {
                "counter" => {
                    names.insert(format!("{name}_total"));
                }
                "histogram" => {
                    for suffix in ["_bucket", "_sum", "_count"] {
                        names.insert(format!("{name}{suffix}"));
                    }
                }
                _ => {
                    names.insert(name.to_string());
                }
            }
        }
    }
    names
}
