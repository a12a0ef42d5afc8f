//! The control plane against the real shared-memory files: a `cnc` made with
//! `DataplaneCnc::create` and a `counters` file made with `CountersWriter::create` in a
//! temporary directory, driven by a small thread that answers commands as the data plane's
//! contract says (one event per command, same correlation id; partition counters labelled
//! `topic=T,partition=P`). This tests the control plane's code on the real files; the end-to-
//! end tests with the real data plane live in the workspace's tests/.

use precursor_config::Config;
use precursor_controlplane::admin::{self, codes, Request, Response};
use precursor_controlplane::supervisor::serve_until;
use precursor_controlplane::Mode;
use precursor_protocol::command::{Command, Event, TopicReplication, ACKS_ALL_DURABLE};
use precursor_protocol::counter_kind as kind;
use precursor_protocol::frame::ErrorCode;
use precursor_shm::{CounterId, CountersWriter, DataplaneCnc, RING_PAYLOAD_BYTES_MAX};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Bounded waits of these tests: polls of 10 ms, this many at most (no timing asserts:
/// only an upper bound so that a broken build fails instead of hanging).
const POLLS_MAX: u32 = 2_000;

/// How the stand-in thread answers.
#[derive(Clone, Copy, PartialEq)]
enum Answer {
    /// As the data plane's contract says.
    Normally,
    /// Takes nothing off the command ring (a data plane stuck elsewhere, heartbeat alive).
    Never,
}

/// The shared files and the thread that keeps them alive.
struct SharedFiles {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Every CreateTopic the stand-in took: the name and the replication it carried.
    created: Arc<std::sync::Mutex<Vec<(String, TopicReplication)>>>,
}

impl SharedFiles {
    fn start(dir: &Path, answer: Answer) -> SharedFiles {
        std::fs::create_dir_all(dir).unwrap();
        let mut cnc = DataplaneCnc::create(dir, 64).unwrap();
        let mut counters = CountersWriter::create(dir, 4096).unwrap();
        let port = counters.allocate(kind::PORT_RX_PACKETS, "port=0").unwrap();
        counters.set(port, 9);
        let link = counters.allocate(kind::PORT_LINK_UP, "port=0").unwrap();
        counters.set(link, 1);
        let bad = counters
            .allocate(kind::BAD_FRAMES, "lcore=1,reason=truncated")
            .unwrap();
        counters.set(bad, 2);
        let fsync = counters
            .allocate_histogram(kind::FLUSHER_FDATASYNC, "flusher=0")
            .unwrap();
        fsync.record(&counters, 1_500);
        fsync.record(&counters, 3_000_000);
        let stop = Arc::new(AtomicBool::new(false));
        let thread_stop = stop.clone();
        let created = Arc::new(std::sync::Mutex::new(Vec::new()));
        let thread_created = created.clone();
        let thread = std::thread::spawn(move || {
            let mut topics: HashMap<String, Vec<CounterId>> = HashMap::new();
            let mut next_topic_id = 0u16;
            let mut payload = [0u8; RING_PAYLOAD_BYTES_MAX];
            let mut reply = [0u8; RING_PAYLOAD_BYTES_MAX];
            while !thread_stop.load(Ordering::Relaxed) {
                cnc.heartbeat(now_ms());
                while answer == Answer::Normally && !thread_stop.load(Ordering::Relaxed) {
                    let Some(entry) = cnc.commands().try_pop(&mut payload) else {
                        break;
                    };
                    let command = Command::decode(entry.kind, &payload[..entry.length]).unwrap();
                    let event = match command {
                        Command::CreateTopic {
                            name: "fail-me", ..
                        } => Event::Failed {
                            code: ErrorCode::StorageError,
                            message: "disk full (ENOSPC) creating the partition directory",
                        },
                        Command::CreateTopic {
                            name,
                            partitions,
                            replication,
                            ..
                        } => {
                            thread_created
                                .lock()
                                .unwrap()
                                .push((name.to_string(), replication));
                            let mut ids = Vec::new();
                            for partition in 0..partitions {
                                let label = format!("topic={name},partition={partition}");
                                for k in [kind::PARTITION_END_OFFSET, kind::PARTITION_BYTES] {
                                    let id = counters.allocate(k, &label).unwrap();
                                    counters.set(id, 10 + u64::from(partition));
                                    ids.push(id);
                                }
                            }
                            topics.insert(name.to_string(), ids);
                            next_topic_id += 1;
                            Event::TopicCreated {
                                topic_id: next_topic_id,
                                partitions,
                            }
                        }
                        Command::DeleteTopic { name } => {
                            for id in topics.remove(name).unwrap_or_default() {
                                counters.free(id);
                            }
                            Event::Done
                        }
                        Command::AlterTopic { .. }
                        | Command::Ping
                        | Command::SetLeader { .. }
                        | Command::SetIsr { .. }
                        | Command::SetTopicConfigs { .. } => Event::Done,
                        Command::CreatePartitions { .. } => Event::Failed {
                            code: ErrorCode::InvalidArgument,
                            message: "not in this test",
                        },
                    };
                    let length = event.encode(&mut reply);
                    cnc.events()
                        .try_push(event.kind(), entry.correlation_id, &reply[..length])
                        .unwrap();
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        });
        SharedFiles {
            stop,
            thread: Some(thread),
            created,
        }
    }

    /// Stops the heartbeat and the answers; the files stay.
    fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
    }
}

impl Drop for SharedFiles {
    fn drop(&mut self) {
        self.stop();
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A control plane (`Mode::Attach`) on its own runtime thread.
struct ControlPlane {
    socket: PathBuf,
    metrics: String,
    stop: tokio::sync::watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ControlPlane {
    fn start(dir: &Path, command_timeout_ms: u64, mode: Mode) -> ControlPlane {
        ControlPlane::start_with(dir, command_timeout_ms, mode, |_| {})
    }

    /// [`ControlPlane::start`] with the test's changes to the configuration.
    fn start_with(
        dir: &Path,
        command_timeout_ms: u64,
        mode: Mode,
        configure: impl FnOnce(&mut Config),
    ) -> ControlPlane {
        let mut config = Config::default();
        config.node.cnc_dir = dir.join("cnc");
        config.controlplane.admin_socket = dir.join("run/admin.sock");
        config.controlplane.command_timeout_ms = command_timeout_ms;
        config.controlplane.restart_backoff_ms = 10;
        config.controlplane.restart_backoff_ms_max = 40;
        // Tests run side by side: the Kafka gateway on a port of its own, its state here.
        config.gateway.listen = "127.0.0.1:0".into();
        config.gateway.state_dir = dir.join("kafka-gateway");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        config.controlplane.metrics_listen = format!("127.0.0.1:{port}");
        configure(&mut config);
        let socket = config.controlplane.admin_socket.clone();
        let metrics = config.controlplane.metrics_listen.clone();
        let (stop, stopping) = tokio::sync::watch::channel(false);
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime
                .block_on(serve_until(config, None, mode, stopping))
                .unwrap();
        });
        let control_plane = ControlPlane {
            socket,
            metrics,
            stop,
            thread: Some(thread),
        };
        wait_until("the admin socket answers", || {
            admin::request(&control_plane.socket, &Request::Config).is_ok()
        });
        control_plane
    }

    fn ask(&self, request: Request) -> Response {
        admin::request(&self.socket, &request).unwrap()
    }

    fn wait_alive(&self, alive: bool) {
        wait_until(
            "the data plane's state",
            || matches!(self.ask(Request::Status), Response::Status(s) if s.dataplane_alive == alive),
        );
    }

    fn http_get(&self, path: &str) -> (u16, String) {
        let mut stream = std::net::TcpStream::connect(&self.metrics).unwrap();
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut text = String::new();
        stream.read_to_string(&mut text).unwrap();
        let status = text.split(' ').nth(1).unwrap().parse().unwrap();
        let body = text.split_once("\r\n\r\n").unwrap().1.to_string();
        (status, body)
    }

    fn stop(mut self) -> PathBuf {
        self.stop.send(true).unwrap();
        self.thread.take().unwrap().join().unwrap();
        self.socket.clone()
    }
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..POLLS_MAX {
        if done() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("gave up waiting for {what}");
}

fn error_code(response: &Response) -> &str {
    match response {
        Response::Error { code, .. } => code,
        other => panic!("expected an error, got {other:?}"),
    }
}

#[test]
fn topics_are_created_listed_described_altered_and_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let _files = SharedFiles::start(&dir.path().join("cnc"), Answer::Normally);
    let cp = ControlPlane::start(dir.path(), 10_000, Mode::Attach);
    cp.wait_alive(true);

    let created = cp.ask(Request::CreateTopic {
        name: "orders".into(),
        partitions: 3,
        retention_ms: None,
        retention_bytes: Some(1 << 30),
    });
    assert_eq!(
        created,
        Response::TopicCreated {
            name: "orders".into(),
            topic_id: 1,
            partitions: 3
        }
    );
    let again = cp.ask(Request::CreateTopic {
        name: "orders".into(),
        partitions: 1,
        retention_ms: None,
        retention_bytes: None,
    });
    assert_eq!(error_code(&again), codes::TOPIC_EXISTS);

    let Response::Topics(topics) = cp.ask(Request::ListTopics) else {
        panic!("not a topic list")
    };
    assert_eq!(topics.len(), 1);
    assert_eq!(
        (topics[0].name.as_str(), topics[0].partitions),
        ("orders", 3)
    );

    let Response::Topic(topic) = cp.ask(Request::DescribeTopic {
        name: "orders".into(),
    }) else {
        panic!("not a description")
    };
    let ends: Vec<(u32, u64, u64)> = topic
        .partitions
        .iter()
        .map(|p| (p.partition, p.end_offset, p.bytes))
        .collect();
    assert_eq!(ends, vec![(0, 10, 10), (1, 11, 11), (2, 12, 12)]);

    let unknown = cp.ask(Request::DescribeTopic {
        name: "nope".into(),
    });
    assert_eq!(error_code(&unknown), codes::UNKNOWN_TOPIC);
    let Response::Error { message, .. } = unknown else {
        unreachable!()
    };
    assert!(message.contains("orders"), "{message}");

    let altered = cp.ask(Request::AlterTopic {
        name: "orders".into(),
        retention_ms: Some(1000),
        retention_bytes: None,
    });
    assert_eq!(altered, Response::Ok);

    assert_eq!(
        cp.ask(Request::DeleteTopic {
            name: "orders".into()
        }),
        Response::Ok
    );
    assert_eq!(cp.ask(Request::ListTopics), Response::Topics(vec![]));
    let gone = cp.ask(Request::DeleteTopic {
        name: "orders".into(),
    });
    assert_eq!(error_code(&gone), codes::UNKNOWN_TOPIC);

    let Response::Config(text) = cp.ask(Request::Config) else {
        panic!("no config")
    };
    assert!(Config::parse(&text).is_ok());
    let socket = cp.stop();
    assert!(!socket.exists(), "the admin socket is removed at exit");
}

#[test]
fn bad_requests_are_refused_before_the_data_plane_sees_them() {
    let dir = tempfile::tempdir().unwrap();
    let _files = SharedFiles::start(&dir.path().join("cnc"), Answer::Normally);
    let cp = ControlPlane::start(dir.path(), 10_000, Mode::Attach);
    cp.wait_alive(true);
    let create = |name: &str, partitions: u32| Request::CreateTopic {
        name: name.into(),
        partitions,
        retention_ms: None,
        retention_bytes: None,
    };
    for request in [
        create("orders", 0),
        create("orders", 1025),
        create("", 1),
        create("..", 1),
        create("with space", 1),
        create(&"x".repeat(250), 1),
        Request::AlterTopic {
            name: "orders".into(),
            retention_ms: None,
            retention_bytes: None,
        },
    ] {
        assert_eq!(error_code(&cp.ask(request)), codes::INVALID_ARGUMENT);
    }
    let alter_unknown = cp.ask(Request::AlterTopic {
        name: "nope".into(),
        retention_ms: Some(1),
        retention_bytes: None,
    });
    assert_eq!(error_code(&alter_unknown), codes::UNKNOWN_TOPIC);

    // The data plane's own failure comes back with its message.
    let failed = cp.ask(create("fail-me", 1));
    assert_eq!(
        failed,
        Response::error(
            codes::DATAPLANE_ERROR,
            "disk full (ENOSPC) creating the partition directory"
        )
    );

    // A line that is not a request gets an answer, and the connection goes on.
    let mut stream = std::os::unix::net::UnixStream::connect(&cp.socket).unwrap();
    stream
        .write_all(b"{\"format_disk\":{}}\n\"status\"\n")
        .unwrap();
    let mut lines = BufReader::new(stream).lines();
    let first: Response = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(error_code(&first), codes::INVALID_ARGUMENT);
    let second: Response = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert!(matches!(second, Response::Status(_)), "{second:?}");
    cp.stop();
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn outside_a_cluster_a_replicated_create_is_this_nodes_alone() {
    let dir = tempfile::tempdir().unwrap();
    let files = SharedFiles::start(&dir.path().join("cnc"), Answer::Normally);
    let cp = ControlPlane::start(dir.path(), 10_000, Mode::Attach);
    cp.wait_alive(true);
    let create =
        |name: &str, factor: Option<u8>, min_insync: Option<u8>| Request::ClusterCreateTopic {
            name: name.into(),
            partitions: 2,
            retention_ms: None,
            retention_bytes: None,
            replication_factor: factor,
            min_insync_replicas: min_insync,
            acks_all: Some(precursor_config::AcksAll::Durable),
            forwarded: false,
        };
    let Response::Error { code, message } = cp.ask(create("wide", Some(2), None)) else {
        panic!("a replication factor of 2 on one node")
    };
    assert_eq!(code, codes::INVALID_ARGUMENT);
    assert!(message.contains("not in a cluster"), "{message}");
    let Response::Error { message, .. } = cp.ask(create("wide", Some(1), Some(2))) else {
        panic!("a minimum ISR above the replication factor")
    };
    assert!(message.contains("min insync replicas 2"), "{message}");
    assert_eq!(
        cp.ask(create("orders", None, None)),
        Response::TopicCreated {
            name: "orders".into(),
            topic_id: 1,
            partitions: 2
        }
    );
    let replication = TopicReplication {
        factor: 1,
        min_insync: 1,
        acks_all: ACKS_ALL_DURABLE,
    };
    assert_eq!(
        *files.created.lock().unwrap(),
        vec![("orders".to_string(), replication)]
    );
    assert_eq!(
        cp.ask(Request::ClusterDeleteTopic {
            name: "orders".into(),
            forwarded: false
        }),
        Response::Ok
    );
    cp.stop();
}

/// Two control planes of a cluster (stand-in data planes, no DPDK): a create on one is
/// carried to the other through its cluster listener with the same replication; a broker
/// nobody listens for is reported unreachable.
#[test]
fn a_create_reaches_every_broker_through_the_cluster_listeners() {
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let files: Vec<SharedFiles> = dirs
        .iter()
        .map(|d| SharedFiles::start(&d.path().join("cnc"), Answer::Normally))
        .collect();
    let admins = [
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
        // Broker 3: configured, never started.
        format!("127.0.0.1:{}", free_port()),
    ];
    let brokers: Vec<precursor_config::BrokerSpec> = (1..=3u32)
        .map(|id| precursor_config::BrokerSpec {
            id,
            address: std::net::Ipv4Addr::new(10, 99, 0, id as u8),
            udp_port: 9190,
            kafka: String::new(),
            admin: admins[id as usize - 1].clone(),
            quorum: String::new(),
            rack: String::new(),
        })
        .collect();
    let cps: Vec<ControlPlane> = (1..=2u32)
        .map(|id| {
            let brokers = brokers.clone();
            let listen = admins[id as usize - 1].clone();
            ControlPlane::start_with(dirs[id as usize - 1].path(), 10_000, Mode::Attach, |c| {
                c.cluster.broker_id = id;
                c.cluster.brokers = brokers;
                c.port.address = std::net::Ipv4Addr::new(10, 99, 0, id as u8);
                c.controlplane.cluster_listen = listen;
                c.topics.default_replication_factor = 2;
                c.topics.default_min_insync_replicas = 2;
                c.validate().unwrap();
            })
        })
        .collect();
    for cp in &cps {
        cp.wait_alive(true);
    }
    let too_many = cps[0].ask(Request::ClusterCreateTopic {
        name: "orders".into(),
        partitions: 3,
        retention_ms: None,
        retention_bytes: None,
        replication_factor: Some(4),
        min_insync_replicas: None,
        acks_all: None,
        forwarded: false,
    });
    let Response::Error { message, .. } = too_many else {
        panic!("RF 4 of 3 brokers: {too_many:?}")
    };
    assert!(message.contains("between 1 and 3"), "{message}");
    let answer = cps[0].ask(Request::ClusterCreateTopic {
        name: "orders".into(),
        partitions: 3,
        retention_ms: None,
        retention_bytes: None,
        replication_factor: Some(3),
        min_insync_replicas: None,
        acks_all: None,
        forwarded: false,
    });
    let Response::ClusterResults(answers) = answer else {
        panic!("not the brokers' answers: {answer:?}")
    };
    let ids: Vec<u32> = answers.iter().map(|a| a.broker_id).collect();
    assert_eq!(ids, [1, 2, 3]);
    assert!(matches!(answers[0].answer, Response::TopicCreated { .. }));
    assert!(matches!(answers[1].answer, Response::TopicCreated { .. }));
    assert_eq!(answers[1].admin, admins[1]);
    assert_eq!(error_code(&answers[2].answer), codes::UNREACHABLE);
    // The broker that forwarded filled in every default: both made the same topic.
    let replication = TopicReplication {
        factor: 3,
        min_insync: 2,
        acks_all: precursor_protocol::command::ACKS_ALL_MEMORY,
    };
    for f in &files {
        assert_eq!(
            *f.created.lock().unwrap(),
            vec![("orders".to_string(), replication)]
        );
    }
    let verdict = admin::ClusterVerdict::of(&answers, codes::TOPIC_EXISTS);
    assert!(!verdict.complete());
    // Delete through broker 2: gone from both.
    let Response::ClusterResults(answers) = cps[1].ask(Request::ClusterDeleteTopic {
        name: "orders".into(),
        forwarded: false,
    }) else {
        panic!("not the brokers' answers")
    };
    assert_eq!(answers[0].broker_id, 2);
    assert_eq!(answers[0].answer, Response::Ok);
    assert_eq!(answers[1].answer, Response::Ok);
    for cp in cps {
        assert_eq!(cp.ask(Request::ListTopics), Response::Topics(vec![]));
        cp.stop();
    }
}

#[test]
fn a_missing_socket_says_the_broker_is_not_running() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("precursor.sock");
    let error = admin::request(&socket, &Request::Status).unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "cannot reach the control plane at {}: is the broker running? (precursor up / ci/up.sh)",
            socket.display()
        )
    );
    // A socket file nobody listens on (a control plane that was killed) reads the same.
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    let error = admin::request(&socket, &Request::Status).unwrap_err();
    assert!(
        error.to_string().contains("is the broker running?"),
        "{error}"
    );
}

#[test]
fn without_a_data_plane_admin_requests_say_so() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(dir.path(), 10_000, Mode::Attach);
    let Response::Status(status) = cp.ask(Request::Status) else {
        panic!("no status")
    };
    assert!(!status.dataplane_alive);
    assert_eq!(status.dataplane_pid, None);
    let list = cp.ask(Request::ListTopics);
    assert_eq!(error_code(&list), codes::DATAPLANE_UNAVAILABLE);
    let (code, body) = cp.http_get("/healthz");
    assert_eq!(code, 503, "{body}");
    cp.stop();
}

#[test]
fn a_command_nobody_answers_times_out() {
    let dir = tempfile::tempdir().unwrap();
    let _files = SharedFiles::start(&dir.path().join("cnc"), Answer::Never);
    let cp = ControlPlane::start(dir.path(), 200, Mode::Attach);
    cp.wait_alive(true);
    let response = cp.ask(Request::CreateTopic {
        name: "orders".into(),
        partitions: 1,
        retention_ms: None,
        retention_bytes: None,
    });
    assert_eq!(error_code(&response), codes::TIMEOUT);
    let Response::Status(status) = cp.ask(Request::Status) else {
        panic!("no status")
    };
    assert_eq!(
        status.command_ring_depth, 1,
        "the command still waits in the ring"
    );
    cp.stop();
}

#[test]
fn the_link_follows_a_replaced_cnc_file() {
    let dir = tempfile::tempdir().unwrap();
    let cnc_dir = dir.path().join("cnc");
    let mut first = SharedFiles::start(&cnc_dir, Answer::Normally);
    let cp = ControlPlane::start(dir.path(), 10_000, Mode::Attach);
    cp.wait_alive(true);
    assert!(matches!(
        cp.ask(Request::CreateTopic {
            name: "before".into(),
            partitions: 1,
            retention_ms: None,
            retention_bytes: None
        }),
        Response::TopicCreated { .. }
    ));
    // The "data plane" stops; a new one creates fresh files in the same directory.
    first.stop();
    let _second = SharedFiles::start(&cnc_dir, Answer::Normally);
    // The new files know no topic "before": once the link has moved over, creating it works.
    wait_until("the link attaches to the new cnc", || {
        matches!(
            cp.ask(Request::CreateTopic {
                name: "before".into(),
                partitions: 2,
                retention_ms: None,
                retention_bytes: None
            }),
            Response::TopicCreated { partitions: 2, .. }
        )
    });
    cp.stop();
}

#[test]
fn metrics_and_healthz() {
    let dir = tempfile::tempdir().unwrap();
    let mut files = SharedFiles::start(&dir.path().join("cnc"), Answer::Normally);
    let cp = ControlPlane::start(dir.path(), 10_000, Mode::Attach);
    cp.wait_alive(true);
    cp.ask(Request::CreateTopic {
        name: "orders".into(),
        partitions: 1,
        retention_ms: None,
        retention_bytes: None,
    });
    cp.ask(Request::DescribeTopic {
        name: "nope".into(),
    });

    let (code, body) = cp.http_get("/healthz");
    assert_eq!((code, body.as_str()), (200, "ok\n"));
    let (code, text) = cp.http_get("/metrics");
    assert_eq!(code, 200);
    // Every sample line is `name{labels} value` with a numeric value.
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (_, value) = line.rsplit_once(' ').unwrap();
        assert!(value.parse::<f64>().is_ok(), "{line}");
    }
    for expected in [
        "# TYPE precursor_port_rx_packets counter",
        "precursor_port_rx_packets_total{port=\"0\"} 9",
        "# TYPE precursor_port_link_up gauge",
        "precursor_port_link_up{port=\"0\"} 1",
        "precursor_bad_frames_total{lcore=\"1\",reason=\"truncated\"} 2",
        "precursor_partition_end_offset{topic=\"orders\",partition=\"0\"} 10",
        "# TYPE precursor_flusher_fdatasync_seconds histogram",
        "precursor_flusher_fdatasync_seconds_count{flusher=\"0\"} 2",
        "precursor_flusher_fdatasync_seconds_bucket{le=\"+Inf\",flusher=\"0\"} 2",
        "precursor_controlplane_dataplane_up 1",
        "precursor_controlplane_dataplane_restarts_total 0",
        "precursor_controlplane_admin_requests_total{type=\"create_topic\",outcome=\"ok\"} 1",
        "precursor_controlplane_admin_requests_total{type=\"describe_topic\",outcome=\"unknown_topic\"} 1",
    ] {
        assert!(text.lines().any(|l| l == expected), "no line {expected:?} in\n{text}");
    }
    // Buckets are cumulative, bounds in seconds: 1.5 us is in every bucket from 2 us on,
    // 3 ms in every bucket from 4 ms on.
    let prefix = "precursor_flusher_fdatasync_seconds_bucket{le=\"";
    let buckets: Vec<(f64, u64)> = text
        .lines()
        .filter_map(|l| l.strip_prefix(prefix))
        .filter_map(|rest| rest.split_once("\",flusher=\"0\"} "))
        .filter(|(le, _)| *le != "+Inf")
        .map(|(le, count)| (le.parse().unwrap(), count.parse().unwrap()))
        .collect();
    assert!(buckets.len() > 10, "{text}");
    for (le, count) in buckets {
        let expected = u64::from(le >= 1.5e-6) + u64::from(le >= 3e-3);
        assert_eq!(count, expected, "bucket le={le}");
    }
    assert_eq!(cp.http_get("/nothing").0, 404);

    // The heartbeat stops: /healthz turns 503 (after link::HEARTBEAT_TIMEOUT_MS).
    files.stop();
    wait_until("healthz turns 503", || cp.http_get("/healthz").0 == 503);
    let (_, text) = cp.http_get("/metrics");
    assert!(text
        .lines()
        .any(|l| l == "precursor_controlplane_dataplane_up 0"));
    cp.stop();
}

#[test]
fn up_restarts_a_dying_data_plane_with_the_effective_config() {
    let dir = tempfile::tempdir().unwrap();
    // Not a data plane: a program that records its arguments and exits 3, to drive the
    // supervisor's child-exit path (restart, back-off, count) and its config hand-over.
    let script = dir.path().join("dies.sh");
    let record = dir.path().join("seen.toml");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n[ \"$1\" = --config ] && cp \"$2\" {0}.tmp && mv {0}.tmp {0}\nexit 3\n",
            record.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let cp = ControlPlane::start(
        dir.path(),
        10_000,
        Mode::Supervise {
            dataplane_binary: script,
        },
    );
    wait_until(
        "three restarts",
        || matches!(cp.ask(Request::Status), Response::Status(s) if s.restarts >= 3),
    );
    let seen = std::fs::read_to_string(&record).unwrap();
    let config = Config::parse(&seen).unwrap_or_else(|e| panic!("{e}: {seen}"));
    assert_eq!(config.controlplane.restart_backoff_ms, 10);
    assert_eq!(config.node.cnc_dir, dir.path().join("cnc"));
    let (_, text) = cp.http_get("/metrics");
    assert!(
        text.lines().any(
            |l| l.starts_with("precursor_controlplane_dataplane_restarts_total ")
                && !l.ends_with(" 0")
        ),
        "{text}"
    );
    let socket = cp.stop();
    assert!(!socket.exists());
}
