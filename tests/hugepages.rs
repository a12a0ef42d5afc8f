//! Many partitions on the default hugepage reservation (issue: ~20 partitions used to
//! exhaust 1024 pages of 2 MiB, each holding its active segment and two prefaulted spares,
//! and later topic creation failed with ENOMEM). A real data plane with the default 32 MiB
//! segments: 64 topics auto-created by producing to them, every produce acknowledged and
//! every message read back; the segments that found no hugepages went to /dev/shm. Then a
//! restart: recovery leaves DPDK the hugepages it needs.

mod common;

use common::*;

const TOPICS: usize = 64;
const MESSAGES: u64 = 2_000;

fn hugepages_free() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("HugePages_Free:")?.trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn sixty_four_partitions_on_the_default_hugepages_all_take_produce() {
    let _serial = serial();
    if !can_run("sixty_four_partitions_on_the_default_hugepages_all_take_produce") {
        return;
    }
    let free_at_start = hugepages_free();
    let node = AfPacketNode::new("hp", 43, "");
    let _cnc = CncDirRemoved(node.ipc_dir());
    let dataplane = node.start();
    let messages = MESSAGES.to_string();
    for t in 0..TOPICS {
        let topic = format!("hp-{t}");
        let out = node
            .ipc_command(&["bench", "produce", "--topic", &topic, "-n", &messages])
            .output()
            .unwrap();
        assert_success(&out, &format!("produce to {topic}"));
        assert!(
            stdout(&out).contains(&format!("{MESSAGES} messages"))
                && stdout(&out).contains("0 errors"),
            "{topic}: {}",
            stdout(&out)
        );
    }
    for t in 0..TOPICS {
        let topic = format!("hp-{t}");
        let out = node
            .ipc_command(&["consume", &topic, "--verify", "--to-end"])
            .output()
            .unwrap();
        assert_success(&out, &format!("verified read of {topic}"));
        assert!(
            stderr(&out).contains(&format!(
                "verified {MESSAGES} messages: {MESSAGES} in order, 0 gaps (0 missing), 0 duplicates, 0 corrupt"
            )),
            "{topic}: {}",
            stderr(&out)
        );
    }
    // The last topics were created when the hugepages had run out: a direct reader (no
    // request, the shared maps only) finds their segments in the small-page directory.
    for t in TOPICS - 4..TOPICS {
        let topic = format!("hp-{t}");
        let out = node
            .ipc_command(&[
                "consume", &topic, "--direct", "--verify", "--count", &messages,
            ])
            .output()
            .unwrap();
        assert_success(&out, &format!("direct read of {topic}"));
        assert!(
            stderr(&out).contains(&format!(
                "verified {MESSAGES} messages: {MESSAGES} in order"
            )),
            "{topic}: {}",
            stderr(&out)
        );
    }
    let warned = dataplane
        .stderr()
        .iter()
        .filter(|l| l.contains("hugepages ran out"))
        .count();
    let counters = dataplane.stop();
    let on_small = counters["segments_on_small_pages"]
        .as_u64()
        .unwrap_or_else(|| panic!("no segments_on_small_pages in {counters}"));
    eprintln!(
        "{free_at_start} hugepages free at start; {on_small} segments on small pages, \
         {warned} partitions warned"
    );
    assert_eq!(
        counters["produce_records"].as_u64(),
        Some(TOPICS as u64 * MESSAGES),
        "{counters}"
    );
    // 64 active segments of 17 pages do not fit 1024 pages (less DPDK's share).
    if free_at_start < TOPICS as u64 * 17 {
        assert!(on_small > 0, "{counters}");
        assert!(warned > 0 && warned <= TOPICS, "{warned} warnings");
    }
    // A restart recovers all 64 partitions before DPDK starts: their new active segments
    // must leave DPDK the hugepages it was planned on (they once took them all, and the
    // packet pool failed with ENOMEM: the broker could not come back).
    let dataplane = node.start();
    for t in [0, TOPICS - 1] {
        let topic = format!("hp-{t}");
        let out = node
            .ipc_command(&["consume", &topic, "--verify", "--to-end"])
            .output()
            .unwrap();
        assert_success(&out, &format!("verified read of {topic} after the restart"));
        assert!(
            stderr(&out).contains(&format!(
                "verified {MESSAGES} messages: {MESSAGES} in order"
            )),
            "{topic}: {}",
            stderr(&out)
        );
    }
    let kept = dataplane
        .stderr()
        .iter()
        .any(|l| l.contains("kept for DPDK until it has started"));
    if free_at_start < TOPICS as u64 * 17 {
        assert!(
            kept,
            "no segment said it left hugepages to DPDK during recovery"
        );
    }
    dataplane.stop();
}
