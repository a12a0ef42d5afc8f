//! The peer adapters against real servers: Debian's `redis-server` and `nats-server -js`,
//! each started here on a free port of 127.0.0.1 with its data in a temporary directory.
//! Small counts; every payload is verified on the way back; no timing is asserted.
//! Skipped (loudly) where the server binary is not installed (ci/setup.sh installs both).

use precursor_bench::harness::ProduceParams;
use precursor_bench::peers::{nats, redis, Durability};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A server process, killed when dropped.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn installed(binary: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {binary}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        eprintln!("SKIPPED: {binary} is not installed (ci/setup.sh installs it)");
    }
    found
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "server on port {port} not up in 10 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn params(messages: u64, rate: Option<f64>) -> ProduceParams {
    ProduceParams {
        messages,
        size: 100,
        producers: 1,
        window: 64,
        rate,
        warmup: 50,
        ack_timeout: Duration::from_secs(10),
    }
}

fn start_redis(dir: &Path, appendfsync: &str) -> (Server, u16) {
    let port = free_port();
    let child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ])
        .args(["--appendonly", "yes", "--appendfsync", appendfsync])
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server starts");
    wait_for_port(port);
    (Server(child), port)
}

#[test]
fn redis_streams_produce_consume_and_refuse_a_mismatched_durability() {
    if !installed("redis-server") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (_server, port) = start_redis(dir.path(), "everysec");
    let target = |durability| redis::Target {
        url: format!("redis://127.0.0.1:{port}/"),
        stream: "s".into(),
        durability,
    };
    let rt = runtime();
    let produced = rt
        .block_on(redis::produce(
            &target(Durability::Leader),
            &params(2_000, None),
        ))
        .unwrap();
    assert_eq!(
        (produced.messages, produced.errors),
        (2_000, 0),
        "{produced:?}"
    );
    assert_eq!(produced.system, "redis-streams");
    assert_eq!(
        produced.durability_detail.as_deref(),
        Some("appendonly yes, appendfsync everysec")
    );
    // The warm-up and the measured messages, in order, each verified.
    let read = rt
        .block_on(redis::consume(
            &target(Durability::Leader),
            2_050,
            2,
            Duration::from_secs(5),
        ))
        .unwrap();
    assert_eq!(
        (read.messages, read.errors, read.consumers),
        (2 * 2_050, 0, 2),
        "{read:?}"
    );

    let paced = rt
        .block_on(redis::produce(
            &target(Durability::Leader),
            &params(300, Some(3_000.0)),
        ))
        .unwrap();
    assert_eq!((paced.messages, paced.errors), (300, 0));
    assert_eq!(paced.latency_from.as_deref(), Some("intended"));

    // everysec is not what acks=durable compares: refused, saying why.
    let error = rt
        .block_on(redis::produce(
            &target(Durability::Durable),
            &params(10, None),
        ))
        .unwrap_err();
    let text = format!("{error:#}");
    assert!(
        text.contains("appendfsync everysec") && text.contains("always"),
        "{text}"
    );
}

#[test]
fn redis_durable_run_against_appendfsync_always() {
    if !installed("redis-server") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (_server, port) = start_redis(dir.path(), "always");
    let target = redis::Target {
        url: format!("redis://127.0.0.1:{port}/"),
        stream: "d".into(),
        durability: Durability::Durable,
    };
    let result = runtime()
        .block_on(redis::produce(&target, &params(500, None)))
        .unwrap();
    assert_eq!((result.messages, result.errors), (500, 0));
    assert_eq!(result.durability.as_deref(), Some("durable"));
}

#[test]
fn a_peer_that_is_not_there_is_a_clear_error() {
    let port = free_port();
    let rt = runtime();
    let target = redis::Target {
        url: format!("redis://127.0.0.1:{port}/"),
        stream: "s".into(),
        durability: Durability::Leader,
    };
    let text = format!(
        "{:#}",
        rt.block_on(redis::produce(&target, &params(10, None)))
            .unwrap_err()
    );
    assert!(text.contains("cannot connect to redis-server"), "{text}");
    let target = nats::Target {
        url: format!("nats://127.0.0.1:{port}"),
        stream: "s".into(),
        durability: Durability::Leader,
        store_dir: None,
    };
    let text = format!(
        "{:#}",
        rt.block_on(nats::produce(&target, &params(10, None)))
            .unwrap_err()
    );
    assert!(text.contains("cannot connect to nats-server"), "{text}");
}

fn start_nats(store: &Path) -> (Server, u16) {
    let port = free_port();
    let child = Command::new("nats-server")
        .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string()])
        .arg("-sd")
        .arg(store)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nats-server starts");
    wait_for_port(port);
    (Server(child), port)
}

fn nats_target(port: u16, durability: Durability, store_dir: Option<&Path>) -> nats::Target {
    nats::Target {
        url: format!("nats://127.0.0.1:{port}"),
        stream: "bench".into(),
        durability,
        store_dir: store_dir.map(Path::to_path_buf),
    }
}

#[test]
fn nats_jetstream_produce_consume_and_durability_checks() {
    if !installed("nats-server") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    std::fs::create_dir(&store).unwrap();
    let (server, port) = start_nats(&store);
    let rt = runtime();
    let leader = nats_target(port, Durability::Leader, None);
    let produced = rt
        .block_on(nats::produce(&leader, &params(2_000, None)))
        .unwrap();
    assert_eq!(
        (produced.messages, produced.errors),
        (2_000, 0),
        "{produced:?}"
    );
    let read = rt
        .block_on(nats::consume(&leader, 2_050, 2, Duration::from_secs(5)))
        .unwrap();
    assert_eq!(
        (read.messages, read.errors, read.consumers),
        (2 * 2_050, 0, 2),
        "{read:?}"
    );

    // durable needs the store directory, and the whole tree needs the S attribute: set on
    // the top only, after the server made its subdirectories, it is refused.
    let error = |t: nats::Target| {
        format!(
            "{:#}",
            rt.block_on(nats::produce(&t, &params(10, None)))
                .unwrap_err()
        )
    };
    assert!(error(nats_target(port, Durability::Durable, None)).contains("needs --store-dir"));
    assert!(error(nats_target(port, Durability::Durable, Some(&store)))
        .contains("lacks the S attribute"));
    let chattr = |path: &Path| {
        Command::new("chattr")
            .arg("+S")
            .arg(path)
            .status()
            .is_ok_and(|s| s.success())
    };
    if !chattr(&store) {
        eprintln!("chattr +S refused on this filesystem: the durable NATS run is not exercised");
        return;
    }
    let text = error(nats_target(port, Durability::Durable, Some(&store)));
    assert!(
        text.contains("lacks the S attribute") && text.contains("jetstream"),
        "{text}"
    );
    drop(server);

    // As bench/compare.sh does it: +S on the empty directory, then the server.
    let synchronous = dir.path().join("synchronous");
    std::fs::create_dir(&synchronous).unwrap();
    assert!(chattr(&synchronous));
    let (_server, port) = start_nats(&synchronous);
    let durable = nats_target(port, Durability::Durable, Some(&synchronous));
    let result = rt
        .block_on(nats::produce(&durable, &params(200, None)))
        .unwrap();
    assert_eq!((result.messages, result.errors), (200, 0));
    assert_eq!(result.durability.as_deref(), Some("durable"));
    nats::check_synchronous_dir(&synchronous).expect("every directory the server made inherited S");
}
