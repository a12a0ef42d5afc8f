//! `precursor bench ping` end to end: the data plane on an af_packet port bound to a veth
//! end, the CLI in a network namespace with a kernel UDP socket. Against the real data
//! plane every ping is answered by a Pong; against `precursor-dataplane --echo` by the
//! request itself, reflected. Timings are printed by the CLI, never asserted here.

mod common;

use common::*;

/// Runs `precursor bench ping --json` in `netns` and returns its report.
fn bench_ping(netns: &Netns, broker: &str, messages: u64, window: u32) -> serde_json::Value {
    let out = netns.precursor(&[
        "bench",
        "ping",
        "--broker",
        broker,
        "--messages",
        &messages.to_string(),
        "--window",
        &window.to_string(),
        "--warmup",
        "100",
        "--json",
    ]);
    assert_success(&out, "bench ping");
    eprintln!("{}", stderr(&out));
    let report: serde_json::Value =
        serde_json::from_str(stdout(&out).trim()).expect("one JSON object");
    for field in [
        "transport",
        "messages",
        "size",
        "seconds",
        "msgs_per_sec",
        "mb_per_sec",
        "p50_us",
        "p99_us",
        "p999_us",
        "max_us",
        "errors",
    ] {
        assert!(!report[field].is_null(), "{field} in {report}");
    }
    assert_eq!(report["messages"], messages, "{report}");
    assert_eq!(report["errors"], 0, "{report}");
    assert_eq!(report["size"], 100, "{report}");
    report
}

fn af_packet_setup(tag: &str, subnet: u8) -> (Netns, tempfile::TempDir, std::path::PathBuf) {
    let netns = Netns::with_veth(tag, subnet);
    let dir = tempfile::tempdir().unwrap();
    let memory = memory_dir(tag);
    let config = dir.path().join("precursor.toml");
    std::fs::write(
        &config,
        af_packet_config(&netns, &dir.path().join("data"), &memory, ""),
    )
    .unwrap();
    (netns, dir, memory)
}

#[test]
fn bench_ping_through_the_data_plane_answers_every_ping() {
    let _serial = serial();
    if !can_run("bench_ping_through_the_data_plane") {
        return;
    }
    let (netns, dir, memory) = af_packet_setup("bp", 21);
    let dataplane = Dataplane::start(&dir.path().join("precursor.toml"), None);
    let broker = format!("{}:9190", netns.broker_ip);

    bench_ping(&netns, &broker, 2000, 1);
    bench_ping(&netns, &broker, 5000, 16);

    let counters = dataplane.stop();
    assert!(
        counters["pings"].as_u64().unwrap() >= 2000 + 5000 + 2 * 100,
        "every ping reached the lcore: {counters}"
    );
    let _ = std::fs::remove_dir_all(&memory);
}

#[test]
fn the_echo_data_plane_reflects_every_ping() {
    let _serial = serial();
    if !can_run("the_echo_data_plane_reflects_every_ping") {
        return;
    }
    let (netns, dir, memory) = af_packet_setup("be", 22);
    let dataplane = start_echo_dataplane(&dir.path().join("precursor.toml"), None);
    let broker = format!("{}:9190", netns.broker_ip);

    bench_ping(&netns, &broker, 2000, 1);
    bench_ping(&netns, &broker, 5000, 32);

    // A plain `precursor ping` wants a Pong: the echo answers with the Ping itself, so the
    // client reports no answer instead of hanging.
    let out = netns.precursor(&["ping", "--broker", &broker, "--timeout-ms", "300"]);
    assert!(!out.status.success(), "{}", stdout(&out));

    let counters = dataplane.stop();
    assert_eq!(counters["mode"], "echo", "{counters}");
    assert!(
        counters["reflected"].as_u64().unwrap() >= 2000 + 5000 + 2 * 100,
        "{counters}"
    );
    assert!(
        counters["arp_replies"].as_u64().unwrap() >= 1,
        "the kernel resolved the echo by ARP: {counters}"
    );
    // No storage in echo mode: nothing was written to the data directory.
    assert!(!dir.path().join("data").exists());
    let _ = std::fs::remove_dir_all(&memory);
}
