//! Shared by the ffi test binaries: EAL arguments and crafted frames.

#![allow(dead_code)]

use precursor_ffi::{Eal, Mbuf, Mempool};

/// EAL arguments for a test binary that needs no root set-up: no PCI scan, no
/// hugepages, no shared config files or telemetry socket (nothing left
/// behind; `--in-memory` is refused with `--no-huge`), a prefix unique to this
/// process.
pub fn no_huge_eal_args(test: &str, vdevs: &[&str]) -> Vec<String> {
    let mut args = vec![
        "-l".to_owned(),
        "0".to_owned(),
        "--no-pci".to_owned(),
        "--no-huge".to_owned(),
        "-m".to_owned(),
        "256".to_owned(),
        "--no-shconf".to_owned(),
        "--no-telemetry".to_owned(),
        format!("--file-prefix=precursor-ffi-{test}-{}", std::process::id()),
        "--log-level=3".to_owned(),
    ];
    args.extend(vdevs.iter().map(|v| format!("--vdev={v}")));
    args
}

/// The binary's one EAL.
pub fn shared_eal(args: &[String]) -> &'static Eal {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Eal::shared_for_tests(&args)
}

/// An Ethernet frame of `len` bytes (>= 14): broadcast destination, a fixed
/// source, the experimental ethertype 0x88b5, then a pattern derived from `seq`.
pub fn frame(seq: u32, len: usize) -> Vec<u8> {
    assert!(len >= 14);
    let mut bytes = Vec::with_capacity(len);
    bytes.extend_from_slice(&[0xff; 6]);
    bytes.extend_from_slice(&[0x02, 0x00, 0x00, 0x00, 0x00, 0x01]);
    bytes.extend_from_slice(&[0x88, 0xb5]);
    let mut x = seq.wrapping_mul(2_654_435_761).wrapping_add(1);
    while bytes.len() < len {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        bytes.push(x as u8);
    }
    bytes
}

/// An mbuf from `pool` holding `bytes`.
pub fn mbuf_with(pool: &Mempool, bytes: &[u8]) -> Mbuf {
    let mut m = pool.alloc().expect("mempool has a free mbuf");
    assert!(m.extend_from_slice(bytes), "frame fits the mbuf");
    m
}
