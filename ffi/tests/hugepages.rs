//! The same ring-pair path on real hugepages, when the host has them reserved
//! (CI as root: `echo 256 > /proc/sys/vm/nr_hugepages; mkdir -p /dev/hugepages;
//! mount -t hugetlbfs nodev /dev/hugepages`). Skipped with a message otherwise.
//! `--in-memory` implies `--huge-unlink`: no hugepage file outlives the process.

mod common;

use common::{frame, mbuf_with};
use precursor_ffi::{ring_port_pair, Eal, MbufBurst, Mempool, PortConfig, SOCKET_ID_ANY};

/// 2 MiB pages this test needs free: 64 MiB.
const HUGEPAGES_FREE_MIN: u64 = 32;

fn free_hugepages() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("HugePages_Free:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

fn hugepage_files(prefix: &str) -> Vec<String> {
    let mut files = Vec::new();
    for mount in std::fs::read_to_string("/proc/mounts")
        .unwrap_or_default()
        .lines()
    {
        let fields: Vec<&str> = mount.split_whitespace().collect();
        if fields.get(2) == Some(&"hugetlbfs") {
            if let Ok(dir) = std::fs::read_dir(fields[1]) {
                files.extend(
                    dir.filter_map(Result::ok)
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .filter(|n| n.starts_with(prefix)),
                );
            }
        }
    }
    files
}

#[test]
fn ring_pair_on_real_hugepages() {
    let free = free_hugepages();
    if free < HUGEPAGES_FREE_MIN {
        eprintln!(
            "skipped: {free} free hugepages (< {HUGEPAGES_FREE_MIN}); as root: echo 256 > \
             /proc/sys/vm/nr_hugepages; mkdir -p /dev/hugepages; mount -t hugetlbfs nodev \
             /dev/hugepages"
        );
        return;
    }
    let prefix = format!("precursor-ffi-huge-{}", std::process::id());
    let args = [
        "-l",
        "0",
        "--no-pci",
        "--in-memory",
        "--no-telemetry",
        &format!("--file-prefix={prefix}"),
        "--log-level=3",
    ];
    let eal = Eal::init(&args).expect("EAL on hugepages");
    let pool = Mempool::create(
        "huge",
        2048,
        64,
        Mempool::DEFAULT_DATA_ROOM_BYTES,
        SOCKET_ID_ANY,
    )
    .expect("pool in hugepage memory");
    let start = pool.available();
    {
        let (mut a, mut b) = ring_port_pair(&eal, "huge", 512).expect("pair");
        let cfg = PortConfig {
            rx_descriptors: 512,
            tx_descriptors: 512,
            ..PortConfig::default()
        };
        for port in [&mut a, &mut b] {
            port.configure(&cfg, &pool).expect("configure");
            port.start().expect("start");
        }
        let mut tx: MbufBurst<32> = MbufBurst::new();
        let mut rx: MbufBurst<32> = MbufBurst::new();
        for round in 0..64u32 {
            for i in 0..32 {
                tx.push(mbuf_with(&pool, &frame(round * 32 + i, 64 + i as usize)))
                    .expect("room");
            }
            assert_eq!(a.tx_burst(0, &mut tx), 32);
            assert_eq!(b.rx_burst(0, &mut rx), 32);
            for (i, m) in rx.drain().enumerate() {
                assert_eq!(m.data(), &frame(round * 32 + i as u32, 64 + i)[..]);
            }
        }
        assert_eq!(b.stats().rx_packets, 64 * 32);
    }
    assert_eq!(pool.available(), start);
    assert!(
        hugepage_files(&prefix).is_empty(),
        "no hugepage file left while running"
    );
    drop(pool);
    drop(eal);
    assert!(
        hugepage_files(&prefix).is_empty(),
        "no hugepage file left behind"
    );
}
