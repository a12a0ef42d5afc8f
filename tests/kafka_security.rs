//! TLS on the Kafka listeners with clients nobody here wrote: kcat (Debian's librdkafka
//! 2.0.2), the confluent-kafka 2.16 wheel and `openssl s_client`, against `precursor up`
//! with three extra listeners: `ssl` (TLS 1.3 only), `mtls` (a client certificate from the
//! test CA required) and `tls12` (TLS 1.2 allowed, a client certificate requested). The CA,
//! server and client certificates are made by the `openssl` command line in the test.
//!
//! Needs root (the data plane's af_packet port in a namespace), kcat, openssl and the venv
//! of ci/setup.sh. `flock /tmp/precursor-e2e.lock cargo test --release --test kafka_security`.

mod common;

use common::kafka::*;
use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// The confluent-kafka 2.16 wheel (its own librdkafka 2.12) that ci/setup.sh installs.
const WHEEL_PYTHON: &str = "/opt/precursor-kafka-venv/bin/python";

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl runs");
    assert_success(&out, &format!("openssl {}", args.join(" ")));
}

/// A P-256 key and a certificate for `cn` signed by `ca` (`<ca>.pem`, `<ca>.key`), with
/// `extensions` (an openssl extfile's lines); `<name>.pem` and `<name>.key` in `dir`.
fn issue(dir: &Path, ca: &str, name: &str, cn: &str, extensions: &str) {
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            &format!("/CN={cn}"),
        ],
    );
    std::fs::write(dir.join(format!("{name}.ext")), extensions).unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{ca}.pem"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            &format!("{name}.pem"),
            "-extfile",
            &format!("{name}.ext"),
        ],
    );
}

fn make_ca(dir: &Path, name: &str) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.pem"),
            "-days",
            "2",
            "-subj",
            &format!("/CN={name}"),
        ],
    );
}

/// The test PKI: `ca` signs `server` (127.0.0.1, localhost) and `alice` (a client);
/// `rogue` (a CA nobody trusts) signs `mallory`.
fn make_pki(dir: &Path) {
    make_ca(dir, "ca");
    make_ca(dir, "rogue");
    issue(
        dir,
        "ca",
        "server",
        "localhost",
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
         extendedKeyUsage=serverAuth\n",
    );
    let client = "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n";
    issue(dir, "ca", "alice", "alice", client);
    issue(dir, "rogue", "mallory", "mallory", client);
}

struct Ports {
    ssl: String,
    mtls: String,
    tls12: String,
}

fn listeners(dir: &Path) -> (Ports, String) {
    let ports = Ports {
        ssl: format!("127.0.0.1:{}", free_tcp_port()),
        mtls: format!("127.0.0.1:{}", free_tcp_port()),
        tls12: format!("127.0.0.1:{}", free_tcp_port()),
    };
    let file = |name: &str| format!("{:?}", dir.join(name).display().to_string());
    let (cert, key, ca) = (file("server.pem"), file("server.key"), file("ca.pem"));
    let text = format!(
        "[[gateway.listeners]]\nname = \"ssl\"\naddress = {:?}\nprotocol = \"SSL\"\n\
         cert_file = {cert}\nkey_file = {key}\n\
         [[gateway.listeners]]\nname = \"mtls\"\naddress = {:?}\nprotocol = \"SSL\"\n\
         cert_file = {cert}\nkey_file = {key}\nclient_ca_file = {ca}\nclient_auth = \"required\"\n\
         [[gateway.listeners]]\nname = \"tls12\"\naddress = {:?}\nprotocol = \"SSL\"\n\
         cert_file = {cert}\nkey_file = {key}\nclient_ca_file = {ca}\n\
         client_auth = \"requested\"\ntls_min_version = \"1.2\"\n",
        ports.ssl, ports.mtls, ports.tls12
    );
    (ports, text)
}

/// kcat's `-X` settings for the SSL listener, optionally with a client certificate.
fn ssl_settings(dir: &Path, client: Option<&str>) -> Vec<String> {
    let mut settings = vec![
        "security.protocol=SSL".to_string(),
        format!("ssl.ca.location={}", dir.join("ca.pem").display()),
    ];
    if let Some(name) = client {
        settings.push(format!(
            "ssl.certificate.location={}",
            dir.join(format!("{name}.pem")).display()
        ));
        settings.push(format!(
            "ssl.key.location={}",
            dir.join(format!("{name}.key")).display()
        ));
    }
    settings
}

/// `kcat -L` (metadata) over SSL with `client`'s certificate, if any.
fn kcat_metadata(bootstrap: &str, dir: &Path, client: Option<&str>) -> Output {
    kcat(
        bootstrap,
        &ssl_settings(dir, client),
        &["-L", "-m", "5"],
        None,
    )
}

fn kcat(bootstrap: &str, settings: &[String], args: &[&str], input: Option<&str>) -> Output {
    let mut command = kafka_client("kcat");
    command.args(["-b", bootstrap]);
    for setting in settings {
        command.args(["-X", setting]);
    }
    command.args(args);
    command
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("kcat runs");
    if let Some(input) = input {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    child.wait_with_output().unwrap()
}

/// Produces `count` lines with kcat to `topic` and reads them back, both over `bootstrap`.
fn kcat_round_trip(bootstrap: &str, settings: &[String], topic: &str, count: usize) {
    let values: Vec<String> = (0..count).map(|i| format!("{topic}-{i}")).collect();
    let input = values.join("\n") + "\n";
    let out = kcat(bootstrap, settings, &["-P", "-t", topic], Some(&input));
    assert_success(&out, "kcat -P over TLS");
    let out = kcat(
        bootstrap,
        settings,
        &[
            "-C",
            "-t",
            topic,
            "-o",
            "beginning",
            "-e",
            "-c",
            &count.to_string(),
            "-q",
        ],
        None,
    );
    assert_success(&out, "kcat -C over TLS");
    let got: Vec<String> = stdout(&out).lines().map(str::to_string).collect();
    assert_eq!(got, values, "what kcat read back over {bootstrap}");
}

/// `openssl s_client` to `address` with `args`; whether the handshake succeeded.
fn s_client(address: &str, args: &[&str]) -> bool {
    let out = Command::new("openssl")
        .args(["s_client", "-connect", address, "-brief"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("openssl s_client runs");
    out.status.success()
}

fn log_has(broker: &Broker, needle: &str) -> bool {
    broker
        .log
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.contains(needle))
}

fn wait_log(broker: &Broker, needle: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !log_has(broker, needle) {
        assert!(
            std::time::Instant::now() < deadline,
            "the broker's log never said {needle:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

const CONFLUENT_MTLS: &str = r#"
import sys
from confluent_kafka import Producer, Consumer
bootstrap, topic, ca, cert, key = sys.argv[1:6]
tls = {"bootstrap.servers": bootstrap, "security.protocol": "SSL", "ssl.ca.location": ca,
       "ssl.certificate.location": cert, "ssl.key.location": key}
p = Producer(dict(tls, **{"enable.idempotence": True}))
errors = []
for i in range(1000):
    p.produce(topic, value=b"v%d" % i, key=b"k%d" % i,
              on_delivery=lambda e, m: errors.append(e) if e else None)
    p.poll(0)
assert p.flush(30) == 0, "undelivered"
assert not errors, errors
c = Consumer(dict(tls, **{"group.id": "tls-group", "auto.offset.reset": "earliest"}))
c.subscribe([topic])
seen = []
import time
deadline = time.time() + 60
while len(seen) < 1000 and time.time() < deadline:
    m = c.poll(1.0)
    if m is None or m.error():
        continue
    seen.append(m.value())
c.close()
assert sorted(seen) == sorted(b"v%d" % i for i in range(1000)), len(seen)
print("ok", len(seen))
"#;

fn pki_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}

#[test]
fn tls_and_mtls_listeners_serve_real_clients_and_refuse_the_rest() {
    let _serial = serial();
    if !can_run("kafka_tls") || !clients_installed("kafka_tls") {
        return;
    }
    let pki = tempfile::tempdir().unwrap();
    make_pki(pki.path());
    let (ports, extra) = listeners(pki.path());
    let node = AfPacketNode::new("ks", 37, "");
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start_with(&node, dir.path(), &extra);
    let p = pki.path();

    // The default PLAINTEXT listener still serves (wait_ready probed it with kcat).
    // SSL, TLS 1.3, server authenticated only: kcat (Debian librdkafka 2.0.2) round trip.
    kcat_round_trip(&ports.ssl, &ssl_settings(p, None), "tls-kcat", 500);

    // mTLS: alice's certificate from the test CA; her principal is User:alice.
    kcat_round_trip(
        &ports.mtls,
        &ssl_settings(p, Some("alice")),
        "mtls-kcat",
        500,
    );
    wait_log(&broker, "listener mtls: 127.0.0.1");
    assert!(
        log_has(&broker, "as User:alice"),
        "principal User:alice logged"
    );

    // The confluent-kafka 2.16 wheel over mTLS: idempotent produce and a consumer group.
    if !Path::new(WHEEL_PYTHON).exists() {
        panic!("{WHEEL_PYTHON} is missing: run ci/setup.sh");
    }
    let out = kafka_client(WHEEL_PYTHON)
        .args(["-c", CONFLUENT_MTLS, &ports.mtls, "mtls-wheel"])
        .arg(pki_path(p, "ca.pem"))
        .arg(pki_path(p, "alice.pem"))
        .arg(pki_path(p, "alice.key"))
        .output()
        .unwrap();
    assert_success(&out, "confluent-kafka 2.16 over mTLS");
    assert!(stdout(&out).contains("ok 1000"), "{}", stdout(&out));

    // No client certificate where one is required: refused.
    let out = kcat_metadata(&ports.mtls, p, None);
    assert!(
        !out.status.success(),
        "kcat without a client certificate: {out:?}"
    );
    wait_log(&broker, "listener mtls: closing");
    // A client certificate from a CA nobody trusts: refused (both listeners that check).
    let out = kcat_metadata(&ports.mtls, p, Some("mallory"));
    assert!(
        !out.status.success(),
        "kcat with an untrusted client certificate: {out:?}"
    );
    let out = kcat_metadata(&ports.tls12, p, Some("mallory"));
    assert!(
        !out.status.success(),
        "untrusted certificate where one is requested: {out:?}"
    );
    // Where a certificate is only requested, a client without one is served.
    let out = kcat_metadata(&ports.tls12, p, None);
    assert_success(
        &out,
        "kcat without a certificate where one is only requested",
    );
    // The client does not trust a server whose CA it does not know.
    let mut rogue_trust = ssl_settings(p, None);
    rogue_trust[1] = format!("ssl.ca.location={}", p.join("rogue.pem").display());
    let out = kcat(&ports.ssl, &rogue_trust, &["-L", "-m", "5"], None);
    assert!(!out.status.success(), "kcat trusting another CA: {out:?}");

    // TLS 1.2 is refused where only 1.3 is allowed, served where 1.2 is configured.
    let ca = p.join("ca.pem").display().to_string();
    assert!(
        s_client(&ports.ssl, &["-tls1_3", "-CAfile", &ca]),
        "TLS 1.3 served"
    );
    assert!(
        !s_client(&ports.ssl, &["-tls1_2", "-CAfile", &ca]),
        "TLS 1.2 refused"
    );
    assert!(
        s_client(&ports.tls12, &["-tls1_2", "-CAfile", &ca]),
        "TLS 1.2 configured"
    );

    // Plaintext Kafka bytes to a TLS port: closed, logged, and the broker serves on.
    let mut stream = TcpStream::connect(&ports.ssl).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    // ApiVersions v0, correlation id 1, no client id.
    let request = [0, 0, 0, 10, 0, 18, 0, 0, 0, 0, 0, 1, 0xff, 0xff];
    stream.write_all(&request).unwrap();
    let mut answer = Vec::new();
    let read = stream.read_to_end(&mut answer);
    assert!(
        read.is_err() || !answer.starts_with(&[0, 0, 0]),
        "a plaintext request on a TLS port got no Kafka answer: {answer:?}"
    );
    wait_log(&broker, "listener ssl: closing");
    kcat_round_trip(&ports.ssl, &ssl_settings(p, None), "tls-after", 10);
    let page = broker.scrape_metrics();
    assert!(
        page.contains("reason=\"tls_handshake\""),
        "failed handshakes counted"
    );
}

#[test]
fn a_bad_tls_listener_config_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.toml");
    for (text, expect) in [
        (
            "[[gateway.listeners]]\nname = \"a\"\naddress = \"127.0.0.1:19093\"\nprotocol = \"SSL\"\n",
            "gateway.listeners[0].cert_file",
        ),
        (
            "[[gateway.listeners]]\nname = \"a\"\naddress = \"127.0.0.1:19093\"\nprotocol = \"TLS\"\n",
            "protocol",
        ),
        (
            "[[gateway.listeners]]\nname = \"a\"\naddress = \"127.0.0.1:19093\"\nprotocol = \"SSL\"\n\
             cert_file = \"/x.pem\"\nkey_file = \"/x.key\"\nclient_auth = \"required\"\n",
            "gateway.listeners[0].client_ca_file",
        ),
        (
            "[[gateway.listeners]]\nname = \"a\"\naddress = \"127.0.0.1:19093\"\n\
             protocol = \"SASL_SSL\"\n",
            "not implemented yet",
        ),
    ] {
        std::fs::write(&config, text).unwrap();
        let out = Command::new(precursor())
            .args(["config", "show", "--config"])
            .arg(&config)
            .output()
            .unwrap();
        assert!(!out.status.success(), "refused: {text}");
        assert!(
            stderr(&out).contains(expect),
            "{text}: {}",
            stderr(&out)
        );
    }
}
