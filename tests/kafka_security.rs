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
    assert_success(&out, &format!("kcat -P over {bootstrap} with {settings:?}"));
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
    assert_success(&out, &format!("kcat -C over {bootstrap} with {settings:?}"));
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

/// Idempotent produce of 1000 messages and a consumer group reading them back, with the
/// confluent-kafka wheel: `bootstrap topic settings-json` (security settings).
const CONFLUENT_ROUND_TRIP: &str = r#"
import json, sys
from confluent_kafka import Producer, Consumer
bootstrap, topic, settings = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
tls = dict(settings, **{"bootstrap.servers": bootstrap})
p = Producer(dict(tls, **{"enable.idempotence": True}))
errors = []
for i in range(1000):
    p.produce(topic, value=b"v%d" % i, key=b"k%d" % i,
              on_delivery=lambda e, m: errors.append(e) if e else None)
    p.poll(0)
assert p.flush(30) == 0, "undelivered"
assert not errors, errors
c = Consumer(dict(tls, **{"group.id": topic + "-group", "auto.offset.reset": "earliest"}))
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

/// [`CONFLUENT_ROUND_TRIP`] over `bootstrap` with the security `settings`.
fn confluent_round_trip(bootstrap: &str, topic: &str, settings: &serde_json::Value) {
    if !Path::new(WHEEL_PYTHON).exists() {
        panic!("{WHEEL_PYTHON} is missing: run ci/setup.sh");
    }
    let out = kafka_client(WHEEL_PYTHON)
        .args(["-c", CONFLUENT_ROUND_TRIP, bootstrap, topic])
        .arg(settings.to_string())
        .output()
        .unwrap();
    assert_success(
        &out,
        &format!("confluent-kafka 2.16 round trip over {bootstrap}"),
    );
    assert!(stdout(&out).contains("ok 1000"), "{}", stdout(&out));
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
    let settings = serde_json::json!({
        "security.protocol": "SSL",
        "ssl.ca.location": pki_path(p, "ca.pem"),
        "ssl.certificate.location": pki_path(p, "alice.pem"),
        "ssl.key.location": pki_path(p, "alice.key"),
    });
    confluent_round_trip(&ports.mtls, "mtls-wheel", &settings);

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
            "gateway.listeners[0].sasl_mechanisms",
        ),
        (
            "[[gateway.listeners]]\nname = \"a\"\naddress = \"127.0.0.1:19093\"\n\
             protocol = \"SASL_PLAINTEXT\"\nsasl_mechanisms = [\"GSSAPI\"]\n",
            "sasl_mechanisms",
        ),
        (
            "[[gateway.listeners]]\nname = \"a\"\naddress = \"127.0.0.1:19093\"\n\
             protocol = \"PLAINTEXT\"\nsasl_mechanisms = [\"PLAIN\"]\n",
            "need SASL_PLAINTEXT or SASL_SSL",
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

// ---------------------------------------------------------------------------------------
// SASL: PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512 on SASL_PLAINTEXT and SASL_SSL listeners.

/// The SASL listeners of [`SaslBroker`]: `sasl` (SASL_PLAINTEXT), `sasl_ssl` (SASL_SSL),
/// both with every mechanism, and `reauth` (SASL_PLAINTEXT, SCRAM-SHA-512, sessions of
/// [`REAUTH_MS`]).
struct SaslPorts {
    sasl: String,
    sasl_ssl: String,
    reauth: String,
}

/// `connections_max_reauth_ms` of the `reauth` listener.
const REAUTH_MS: u64 = 3_000;

/// A broker with [`SaslPorts`] and the users `alice` (both SCRAM mechanisms) and `admin`
/// (a super user), made with `precursor user create`.
struct SaslBroker {
    broker: Broker,
    ports: SaslPorts,
    pki: tempfile::TempDir,
    _dir: tempfile::TempDir,
    _node: AfPacketNode,
}

const ALICE_PASSWORD: &str = "alice-secret";
const ADMIN_PASSWORD: &str = "admin-secret";

impl SaslBroker {
    /// `gateway` are more `[gateway]` keys (the lockout settings).
    fn start(gateway: &str) -> SaslBroker {
        let pki = tempfile::tempdir().unwrap();
        make_pki(pki.path());
        let ports = SaslPorts {
            sasl: format!("127.0.0.1:{}", free_tcp_port()),
            sasl_ssl: format!("127.0.0.1:{}", free_tcp_port()),
            reauth: format!("127.0.0.1:{}", free_tcp_port()),
        };
        let file = |name: &str| format!("{:?}", pki.path().join(name).display().to_string());
        let all = "sasl_mechanisms = [\"SCRAM-SHA-512\", \"SCRAM-SHA-256\", \"PLAIN\"]";
        let extra = format!(
            "super_users = [\"User:admin\"]\n{gateway}\n\
             [[gateway.listeners]]\nname = \"sasl\"\naddress = {:?}\n\
             protocol = \"SASL_PLAINTEXT\"\n{all}\n\
             [[gateway.listeners]]\nname = \"sasl_ssl\"\naddress = {:?}\nprotocol = \"SASL_SSL\"\n\
             cert_file = {}\nkey_file = {}\n{all}\n\
             [[gateway.listeners]]\nname = \"reauth\"\naddress = {:?}\n\
             protocol = \"SASL_PLAINTEXT\"\nsasl_mechanisms = [\"SCRAM-SHA-512\"]\n\
             connections_max_reauth_ms = {REAUTH_MS}\n",
            ports.sasl,
            ports.sasl_ssl,
            file("server.pem"),
            file("server.key"),
            ports.reauth,
        );
        let node = AfPacketNode::new("kt", 44, "");
        let dir = tempfile::tempdir().unwrap();
        let broker = Broker::start_with(&node, dir.path(), &extra);
        for (user, password) in [("alice", ALICE_PASSWORD), ("admin", ADMIN_PASSWORD)] {
            let out = broker.cli(&["user", "create", user, "--password", password]);
            assert_success(&out, "precursor user create");
        }
        SaslBroker {
            broker,
            ports,
            pki,
            _dir: dir,
            _node: node,
        }
    }

    /// kcat's `-X` settings for `mechanism` as `user` over `protocol`.
    fn kcat_settings(
        &self,
        protocol: &str,
        mechanism: &str,
        user: &str,
        password: &str,
    ) -> Vec<String> {
        let mut settings = vec![
            format!("security.protocol={protocol}"),
            format!("sasl.mechanisms={mechanism}"),
            format!("sasl.username={user}"),
            format!("sasl.password={password}"),
        ];
        if protocol == "SASL_SSL" {
            settings.push(format!(
                "ssl.ca.location={}",
                self.pki.path().join("ca.pem").display()
            ));
        }
        settings
    }

    /// The confluent-kafka settings for `mechanism` as `user` over `protocol`.
    fn confluent_settings(
        &self,
        protocol: &str,
        mechanism: &str,
        user: &str,
        password: &str,
    ) -> serde_json::Value {
        let mut settings = serde_json::json!({
            "security.protocol": protocol,
            "sasl.mechanisms": mechanism,
            "sasl.username": user,
            "sasl.password": password,
        });
        if protocol == "SASL_SSL" {
            settings["ssl.ca.location"] =
                self.pki.path().join("ca.pem").display().to_string().into();
        }
        settings
    }

    /// [`SASL_RAW`] with `args`: its one JSON line.
    fn raw(&self, args: &[&str]) -> serde_json::Value {
        let out = kafka_client(PYTHON)
            .arg(script("sasl_raw.py"))
            .args(args)
            .output()
            .unwrap();
        assert_success(&out, &format!("sasl_raw.py {args:?}"));
        serde_json::from_str(stdout(&out).trim()).expect("sasl_raw.py prints JSON")
    }
}

fn sasl_can_run(test: &str) -> bool {
    can_run(test) && clients_installed(test)
}

#[test]
fn sasl_scram_and_plain_serve_kcat_and_confluent_kafka_on_both_listeners() {
    let _serial = serial();
    if !sasl_can_run("sasl_clients") {
        return;
    }
    let mut sasl = SaslBroker::start("");
    let out = sasl.broker.cli(&["user", "list"]);
    assert_success(&out, "user list");
    assert!(
        stdout(&out).contains("alice")
            && stdout(&out).contains("SCRAM-SHA-256 (4096 iterations), SCRAM-SHA-512"),
        "{}",
        stdout(&out)
    );
    // kcat (Debian's librdkafka 2.0.2): every mechanism over both listeners, produce and
    // consume compared line by line.
    for (protocol, address) in [
        ("SASL_PLAINTEXT", sasl.ports.sasl.clone()),
        ("SASL_SSL", sasl.ports.sasl_ssl.clone()),
    ] {
        for mechanism in ["SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"] {
            let settings = sasl.kcat_settings(protocol, mechanism, "alice", ALICE_PASSWORD);
            let topic = format!(
                "kcat-{}-{}",
                protocol.to_lowercase(),
                mechanism.to_lowercase()
            );
            kcat_round_trip(&address, &settings, &topic, 200);
        }
    }
    assert!(log_has(&sasl.broker, "with SCRAM-SHA-256 as User:alice"));
    assert!(log_has(&sasl.broker, "with PLAIN as User:alice"));
    // The confluent-kafka 2.16 wheel (librdkafka 2.12): idempotent produce and a group.
    let settings = sasl.confluent_settings("SASL_SSL", "SCRAM-SHA-512", "alice", ALICE_PASSWORD);
    confluent_round_trip(&sasl.ports.sasl_ssl, "wheel-scram512", &settings);
    let settings =
        sasl.confluent_settings("SASL_PLAINTEXT", "SCRAM-SHA-256", "alice", ALICE_PASSWORD);
    confluent_round_trip(&sasl.ports.sasl, "wheel-scram256", &settings);

    // AlterUserScramCredentials / DescribeUserScramCredentials with the wheel's
    // AdminClient (kafka-python 2.0.2 has neither): as admin (a super user) bob is made,
    // described, used and deleted; alice (not a super user) is refused.
    let admin = sasl.confluent_settings("SASL_PLAINTEXT", "SCRAM-SHA-512", "admin", ADMIN_PASSWORD);
    let alice = sasl.confluent_settings("SASL_PLAINTEXT", "SCRAM-SHA-512", "alice", ALICE_PASSWORD);
    let out = kafka_client(WHEEL_PYTHON)
        .args(["-c", SCRAM_ADMIN, &sasl.ports.sasl, "upsert"])
        .arg(admin.to_string())
        .output()
        .unwrap();
    assert_success(&out, "alter_user_scram_credentials upsert");
    let described = stdout(&out);
    assert!(described.contains("bob SCRAM_SHA_256 8192"), "{described}");
    assert!(
        described.contains("alice SCRAM_SHA_512 4096"),
        "{described}"
    );
    assert!(
        described.contains("unknown-user RESOURCE_NOT_FOUND"),
        "{described}"
    );
    assert!(
        described.contains("few-iterations UNACCEPTABLE_CREDENTIAL"),
        "{described}"
    );
    let bob = sasl.kcat_settings("SASL_PLAINTEXT", "SCRAM-SHA-256", "bob", "bob-secret");
    kcat_round_trip(&sasl.ports.sasl, &bob, "bob-topic", 10);
    let bob_plain = sasl.kcat_settings("SASL_SSL", "PLAIN", "bob", "bob-secret");
    kcat_round_trip(&sasl.ports.sasl_ssl, &bob_plain, "bob-plain", 10);
    let out = kafka_client(WHEEL_PYTHON)
        .args(["-c", SCRAM_ADMIN, &sasl.ports.sasl, "delete"])
        .arg(admin.to_string())
        .output()
        .unwrap();
    assert_success(&out, "alter_user_scram_credentials delete");
    let out = kcat(&sasl.ports.sasl, &bob, &["-L", "-m", "5"], None);
    assert!(!out.status.success(), "bob deleted: {out:?}");
    let out = kafka_client(WHEEL_PYTHON)
        .args(["-c", SCRAM_ADMIN, &sasl.ports.sasl, "unauthorized"])
        .arg(alice.to_string())
        .output()
        .unwrap();
    assert_success(
        &out,
        "alter_user_scram_credentials as alice (not a super user)",
    );
    assert!(
        stdout(&out).contains("carol CLUSTER_AUTHORIZATION_FAILED"),
        "{}",
        stdout(&out)
    );

    // Users survive a restart (users.log replayed); `user delete` removes them.
    sasl.broker.restart();
    let settings = sasl.kcat_settings("SASL_PLAINTEXT", "SCRAM-SHA-512", "alice", ALICE_PASSWORD);
    kcat_round_trip(&sasl.ports.sasl, &settings, "after-restart", 10);
    assert_success(
        &sasl.broker.cli(&["user", "delete", "alice"]),
        "user delete",
    );
    let out = kcat(&sasl.ports.sasl, &settings, &["-L", "-m", "5"], None);
    assert!(!out.status.success(), "alice deleted: {out:?}");
    let page = sasl.broker.scrape_metrics();
    assert!(
        sample(
            &page,
            "precursor_sasl_authentications_total",
            "mechanism=\"SCRAM-SHA-512\",outcome=\"success\""
        )
        .is_some_and(|n| n >= 1.0),
        "successes counted"
    );
}

/// The wheel's AdminClient: `bootstrap case settings-json`; `upsert` makes bob
/// (SCRAM-SHA-256, 8192 iterations) and prints every user's credentials and the errors
/// of bad requests; `delete` deletes bob; `unauthorized` tries to make carol.
const SCRAM_ADMIN: &str = r#"
import json, sys
from confluent_kafka.admin import (AdminClient, ScramCredentialInfo, ScramMechanism,
    UserScramCredentialUpsertion, UserScramCredentialDeletion)
from confluent_kafka import KafkaException
bootstrap, case, settings = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
admin = AdminClient(dict(settings, **{"bootstrap.servers": bootstrap}))
def error_name(e):
    return e.args[0].name() if e.args else str(e)
if case == "upsert":
    info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 8192)
    for f in admin.alter_user_scram_credentials(
            [UserScramCredentialUpsertion("bob", info, b"bob-secret", b"pepper")]).values():
        f.result(30)
    for user, d in admin.describe_user_scram_credentials().result(30).items():
        for c in d.scram_credential_infos:
            print(user, c.mechanism.name, c.iterations)
    for user, f in admin.describe_user_scram_credentials(["unknown-user"]).items():
        try:
            f.result(30)
        except KafkaException as e:
            print(user, error_name(e))
    few = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 100)
    for user, f in admin.alter_user_scram_credentials(
            [UserScramCredentialUpsertion("few-iterations", few, b"pw", b"salt")]).items():
        try:
            f.result(30)
        except KafkaException as e:
            print(user, error_name(e))
elif case == "delete":
    for f in admin.alter_user_scram_credentials(
            [UserScramCredentialDeletion("bob", ScramMechanism.SCRAM_SHA_256)]).values():
        f.result(30)
    print("deleted")
elif case == "unauthorized":
    # Alter (per-user errors): librdkafka 2.12 crashes (SIGSEGV) after a describe
    # answered with a top-level error, as Kafka answers it; see docs/security.md.
    info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 4096)
    for user, f in admin.alter_user_scram_credentials(
            [UserScramCredentialUpsertion("carol", info, b"pw", b"salt")]).items():
        try:
            f.result(30)
            print(user, "altered")
        except KafkaException as e:
            print(user, error_name(e))
"#;

fn assert_refused(answer: &serde_json::Value, what: &str, message: &str) {
    assert_eq!(
        answer["error"], 58,
        "{what}: SASL_AUTHENTICATION_FAILED: {answer}"
    );
    assert!(
        answer["message"]
            .as_str()
            .is_some_and(|m| m.contains(message)),
        "{what}: the message says {message:?}: {answer}"
    );
    assert_eq!(
        answer["closed"], true,
        "{what}: the connection is closed: {answer}"
    );
}

#[test]
fn sasl_wrong_password_and_unknown_user_fail_alike() {
    let _serial = serial();
    if !sasl_can_run("sasl_wrong_password") {
        return;
    }
    let sasl = SaslBroker::start("sasl_failures_max = 1000");
    let port = sasl.ports.sasl.as_str();
    let invalid = "invalid credentials with SASL mechanism SCRAM-SHA-256";
    let (mut wrong_ms, mut unknown_ms) = (Vec::new(), Vec::new());
    let mut unknown_salts = std::collections::BTreeSet::new();
    for _ in 0..5 {
        let wrong = sasl.raw(&["scram", port, "alice", "not-her-password", "SCRAM-SHA-256"]);
        assert_refused(&wrong, "wrong password", invalid);
        wrong_ms.push(wrong["final_ms"].as_f64().unwrap());
        let unknown = sasl.raw(&["scram", port, "mallory", "whatever", "SCRAM-SHA-256"]);
        assert_refused(&unknown, "unknown user", invalid);
        assert_eq!(wrong["message"], unknown["message"], "the same error");
        unknown_ms.push(unknown["final_ms"].as_f64().unwrap());
        unknown_salts.insert(unknown["salt"].as_str().unwrap().to_string());
    }
    // An unknown user's salt is the same at every attempt (a decoy, not a random one).
    assert_eq!(unknown_salts.len(), 1, "{unknown_salts:?}");
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (wrong, unknown) = (median(&mut wrong_ms), median(&mut unknown_ms));
    eprintln!(
        "client-final answered in {wrong:.2} ms (wrong password), {unknown:.2} ms (unknown user)"
    );
    assert!(
        (wrong - unknown).abs() < 20.0,
        "similar timing: {wrong} ms vs {unknown} ms"
    );
    // PLAIN: the same for both.
    let wrong = sasl.raw(&["plain", port, "alice", "nope"]);
    let unknown = sasl.raw(&["plain", port, "mallory", "nope"]);
    assert_refused(
        &wrong,
        "PLAIN wrong password",
        "Invalid username or password",
    );
    assert_eq!(wrong["message"], unknown["message"]);
    // The right password, for contrast, and the server's signature checks out.
    let right = sasl.raw(&["scram", port, "alice", ALICE_PASSWORD, "SCRAM-SHA-256"]);
    assert_eq!(right["error"], 0, "{right}");
    assert_eq!(right["server_verified"], true, "{right}");
    assert_eq!(right["metadata_after"], true, "{right}");
    // kcat with a wrong password fails.
    let settings = sasl.kcat_settings("SASL_SSL", "SCRAM-SHA-512", "alice", "wrong");
    let out = kcat(&sasl.ports.sasl_ssl, &settings, &["-L", "-m", "5"], None);
    assert!(!out.status.success(), "kcat with a wrong password: {out:?}");
    assert!(
        sasl.broker.metric(
            "precursor_sasl_authentications_total",
            "outcome=\"failure\""
        ) >= 12.0,
        "failures counted"
    );
}

#[test]
fn sasl_tampered_scram_proof_and_nonce_are_refused() {
    let _serial = serial();
    if !sasl_can_run("sasl_tampered") {
        return;
    }
    let sasl = SaslBroker::start("");
    for mechanism in ["SCRAM-SHA-256", "SCRAM-SHA-512"] {
        let args = |case| {
            [
                case,
                sasl.ports.sasl.as_str(),
                "alice",
                ALICE_PASSWORD,
                mechanism,
            ]
        };
        let proof = sasl.raw(&args("tamper-proof"));
        assert_refused(&proof, "tampered proof", "invalid credentials");
        let nonce = sasl.raw(&args("tamper-nonce"));
        assert_refused(
            &nonce,
            "tampered nonce",
            "nonce does not end with this exchange's nonce",
        );
    }
}

#[test]
fn a_request_before_sasl_authentication_closes_the_connection() {
    let _serial = serial();
    if !sasl_can_run("sasl_before_auth") {
        return;
    }
    let sasl = SaslBroker::start("");
    for port in [&sasl.ports.sasl, &sasl.ports.reauth] {
        let answer = sasl.raw(&["before-auth", port]);
        assert_eq!(answer["answered"], false, "{answer}");
        assert_eq!(answer["closed"], true, "{answer}");
    }
    wait_log(&sasl.broker, "Metadata before SASL authentication");
    assert!(
        sasl.broker.metric(
            "precursor_gateway_malformed_requests_total",
            "reason=\"sasl_unauthenticated\""
        ) >= 2.0
    );
    // kcat configured without SASL against a SASL listener: no metadata.
    let out = kcat(&sasl.ports.sasl, &[], &["-L", "-m", "5"], None);
    assert!(!out.status.success(), "kcat without SASL: {out:?}");
}

#[test]
fn sasl_handshake_on_a_plaintext_listener_is_illegal_sasl_state() {
    let _serial = serial();
    if !sasl_can_run("sasl_on_plaintext") {
        return;
    }
    let sasl = SaslBroker::start("");
    let answer = sasl.raw(&["handshake", &sasl.broker.bootstrap, "", "", "SCRAM-SHA-256"]);
    assert_eq!(answer["error"], 34, "ILLEGAL_SASL_STATE: {answer}");
    assert_eq!(
        answer["metadata_after"], true,
        "the connection serves on: {answer}"
    );
    // On a SASL listener, a mechanism it does not offer: UNSUPPORTED_SASL_MECHANISM with
    // the ones it does.
    let answer = sasl.raw(&["handshake", &sasl.ports.reauth, "", "", "PLAIN"]);
    assert_eq!(answer["error"], 33, "{answer}");
    assert_eq!(answer["mechanisms"], serde_json::json!(["SCRAM-SHA-512"]));
}

#[test]
fn an_oversized_sasl_message_is_refused() {
    let _serial = serial();
    if !sasl_can_run("sasl_oversized") {
        return;
    }
    let sasl = SaslBroker::start("");
    let port = sasl.ports.sasl.as_str();
    let token = sasl.raw(&["oversized-token", port, "", "", "SCRAM-SHA-256"]);
    assert_refused(&token, "100 KiB SASL message", "SASL_AUTH_BYTES_MAX");
    let frame = sasl.raw(&["oversized-frame", port, "", "", "SCRAM-SHA-256"]);
    assert_eq!(frame["answered"], false, "{frame}");
    assert_eq!(frame["closed"], true, "{frame}");
    assert!(
        sasl.broker.metric(
            "precursor_gateway_malformed_requests_total",
            "reason=\"too_large\""
        ) >= 1.0
    );
    // The listener serves on.
    let settings = sasl.kcat_settings("SASL_PLAINTEXT", "SCRAM-SHA-512", "alice", ALICE_PASSWORD);
    kcat_round_trip(port, &settings, "after-oversized", 10);
}

#[test]
fn sasl_lockout_after_repeated_failures() {
    let _serial = serial();
    if !sasl_can_run("sasl_lockout") {
        return;
    }
    let sasl = SaslBroker::start(
        "sasl_failures_max = 3\nsasl_failure_window_ms = 60000\nsasl_lockout_ms = 4000\n\
         sasl_lockout_delay_ms = 1000",
    );
    let port = sasl.ports.sasl.as_str();
    for _ in 0..3 {
        let answer = sasl.raw(&["plain", port, "alice", "guess"]);
        assert_refused(&answer, "a guess", "Invalid username or password");
    }
    wait_log(&sasl.broker, "failed SASL authentications");
    // Locked: even the right password is refused, after the delay.
    let started = std::time::Instant::now();
    let locked = sasl.raw(&["plain", port, "alice", ALICE_PASSWORD]);
    let took = started.elapsed();
    assert_refused(&locked, "locked out", "locked out");
    assert!(
        took >= Duration::from_millis(1000),
        "answered after the delay: {took:?}"
    );
    let scram = sasl.raw(&["scram", port, "alice", ALICE_PASSWORD, "SCRAM-SHA-512"]);
    assert_eq!(scram["error"], 58, "SCRAM locked out too: {scram}");
    assert!(
        sasl.broker
            .metric("precursor_sasl_authentications_total", "outcome=\"locked\"")
            >= 2.0
    );
    // The lock ends.
    std::thread::sleep(Duration::from_millis(4200));
    let answer = sasl.raw(&["plain", port, "alice", ALICE_PASSWORD]);
    assert_eq!(answer["error"], 0, "after the lockout: {answer}");
}

/// Produces one message every 100 ms for `seconds` with the wheel over `bootstrap`,
/// counting deliveries; prints `delivered N errors M`.
const CONFLUENT_STEADY_PRODUCE: &str = r#"
import json, sys, time
from confluent_kafka import Producer
bootstrap, topic, seconds, settings = sys.argv[1], sys.argv[2], float(sys.argv[3]), json.loads(sys.argv[4])
p = Producer(dict(settings, **{"bootstrap.servers": bootstrap}))
state = {"ok": 0, "errors": []}
def done(error, message):
    if error:
        state["errors"].append(str(error))
    else:
        state["ok"] += 1
sent = 0
end = time.time() + seconds
while time.time() < end:
    p.produce(topic, value=b"m%d" % sent, on_delivery=done)
    sent += 1
    p.poll(0.1)
assert p.flush(30) == 0
print("sent", sent, "delivered", state["ok"], "errors", len(state["errors"]), state["errors"][:3])
"#;

#[test]
fn sasl_reauthentication_keeps_librdkafka_connected() {
    let _serial = serial();
    if !sasl_can_run("sasl_reauth") {
        return;
    }
    let sasl = SaslBroker::start("");
    // SaslAuthenticate v1 tells the session lifetime; a request after it closes.
    let port = sasl.ports.reauth.as_str();
    let answer = sasl.raw(&["scram", port, "alice", ALICE_PASSWORD, "SCRAM-SHA-512"]);
    assert_eq!(answer["lifetime_ms"], REAUTH_MS, "{answer}");
    let expired = sasl.raw(&["expire", port, "alice", ALICE_PASSWORD, "SCRAM-SHA-512"]);
    assert_eq!(expired["answered_after_expiry"], false, "{expired}");
    wait_log(&sasl.broker, "after the SASL session expired");
    // librdkafka 2.12 (the wheel) re-authenticates on its own (KIP-368): producing for
    // three session lifetimes loses nothing.
    let settings =
        sasl.confluent_settings("SASL_PLAINTEXT", "SCRAM-SHA-512", "alice", ALICE_PASSWORD);
    let seconds = (3 * REAUTH_MS / 1000 + 1).to_string();
    let out = kafka_client(WHEEL_PYTHON)
        .args([
            "-c",
            CONFLUENT_STEADY_PRODUCE,
            port,
            "reauth-steady",
            &seconds,
        ])
        .arg(settings.to_string())
        .output()
        .unwrap();
    assert_success(&out, "steady produce across re-authentications");
    let line = stdout(&out);
    eprintln!("{line}");
    let words: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(words[1], words[3], "every message delivered: {line}");
    assert_eq!(words[5], "0", "no delivery errors: {line}");
    wait_log(
        &sasl.broker,
        "re-authenticated with SCRAM-SHA-512 as User:alice",
    );
    let reauths = sasl
        .broker
        .log
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains("re-authenticated with SCRAM-SHA-512"))
        .count();
    assert!(reauths >= 2, "re-authenticated {reauths} times");
    assert_eq!(
        sasl.broker.metric(
            "precursor_gateway_malformed_requests_total",
            "reason=\"sasl_session_expired\""
        ),
        1.0,
        "only the raw client's expired session was closed, none of librdkafka's"
    );
}
