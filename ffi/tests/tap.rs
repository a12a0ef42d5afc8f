//! A `net_tap` port against the Linux kernel, in a fresh network namespace
//! (nothing on the host changes; the interface vanishes with the process).
//! Needs root and /dev/net/tun: skipped (with a message) otherwise.

mod common;

use std::net::{Ipv4Addr, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{mbuf_with, no_huge_eal_args};
use precursor_ffi::{Eal, MbufBurst, Mempool, Port, PortConfig, SOCKET_ID_ANY};

const IFACE: &str = "prcffi0";
const KERNEL_IP: Ipv4Addr = Ipv4Addr::new(10, 213, 0, 1);
const DPDK_IP: Ipv4Addr = Ipv4Addr::new(10, 213, 0, 2);
const UDP_PORT: u16 = 47_000;
/// Bounded waits for the kernel (not a timing assertion: only a give-up point).
const WAIT_MAX: Duration = Duration::from_secs(10);

fn ip(args: &[&str]) {
    let status = Command::new("ip").args(args).status().expect("run ip");
    assert!(status.success(), "ip {args:?} failed");
}

fn kernel_mac() -> [u8; 6] {
    let out = Command::new("ip")
        .args(["-o", "link", "show", IFACE])
        .output()
        .expect("ip link");
    let text = String::from_utf8_lossy(&out.stdout);
    let hex = text
        .split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .expect("link/ether in ip output");
    let mut mac = [0u8; 6];
    for (byte, part) in mac.iter_mut().zip(hex.split(':')) {
        *byte = u8::from_str_radix(part, 16).expect("hex");
    }
    mac
}

fn checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Ethernet + IPv4 + UDP (checksum 0) from DPDK_IP to KERNEL_IP:UDP_PORT.
fn udp_frame(dst_mac: [u8; 6], src_mac: [u8; 6], payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&[0x08, 0x00]);
    let total = (20 + 8 + payload.len()) as u16;
    let mut ipv4 = vec![0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, 17, 0, 0];
    ipv4[2..4].copy_from_slice(&total.to_be_bytes());
    ipv4.extend_from_slice(&DPDK_IP.octets());
    ipv4.extend_from_slice(&KERNEL_IP.octets());
    let sum = checksum(&ipv4);
    ipv4[10..12].copy_from_slice(&sum.to_be_bytes());
    f.extend_from_slice(&ipv4);
    f.extend_from_slice(&40_000u16.to_be_bytes());
    f.extend_from_slice(&UDP_PORT.to_be_bytes());
    f.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(payload);
    f
}

fn is_arp_request_for(frame: &[u8], target: Ipv4Addr) -> bool {
    frame.len() >= 42
        && frame[12..14] == [0x08, 0x06]
        && frame[20..22] == [0, 1]
        && frame[38..42] == target.octets()
}

#[test]
fn tap_port_exchanges_frames_with_the_kernel() {
    // Root check without libc: the effective uid from /proc.
    let root = std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false);
    if !root || !std::path::Path::new("/dev/net/tun").exists() {
        eprintln!("skipped: net_tap needs root and /dev/net/tun");
        return;
    }
    if let Err(e) = precursor_ffi::unshare_network_namespace() {
        eprintln!("skipped: cannot create a network namespace: {e}");
        return;
    }
    // This thread is now in the new namespace: the tap interface EAL creates
    // and the `ip` commands below live there.
    let args = no_huge_eal_args("tap", &[&format!("net_tap0,iface={IFACE}")]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let eal = Eal::init(&args).expect("EAL with net_tap");
    let pool = Mempool::create(
        "tap",
        1024,
        32,
        Mempool::DEFAULT_DATA_ROOM_BYTES,
        SOCKET_ID_ANY,
    )
    .expect("pool");
    let mut port = Port::by_name(&eal, "net_tap0").expect("net_tap0");
    let cfg = PortConfig {
        rx_descriptors: 256,
        tx_descriptors: 256,
        ..PortConfig::default()
    };
    port.configure(&cfg, &pool).expect("configure tap");
    let applied = *port.applied_config().expect("applied");
    assert_eq!(applied.mtu_bytes, 1500);
    assert!(applied.mtu_enforced, "net_tap sets the interface MTU");
    port.start().expect("start tap");
    assert!(port.link().up, "tap link is up once started");
    let dpdk_mac = port.mac_address();
    assert_ne!(dpdk_mac, [0; 6]);

    ip(&["link", "set", "dev", "lo", "up"]);
    ip(&["addr", "add", &format!("{KERNEL_IP}/24"), "dev", IFACE]);
    ip(&["link", "set", "dev", IFACE, "up"]);
    let kernel_mac = kernel_mac();

    // Kernel -> DPDK: a UDP send to DPDK_IP makes the kernel ask for its MAC.
    let socket = UdpSocket::bind((KERNEL_IP, UDP_PORT)).expect("bind in the namespace");
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let mut rx: MbufBurst<32> = MbufBurst::new();
    let mut saw_arp = false;
    let started = Instant::now();
    while !saw_arp && started.elapsed() < WAIT_MAX {
        let _ = socket.send_to(b"hello dpdk", (DPDK_IP, 9));
        std::thread::sleep(Duration::from_millis(20));
        port.rx_burst(0, &mut rx);
        saw_arp = rx.drain().any(|m| is_arp_request_for(m.data(), DPDK_IP));
    }
    assert!(saw_arp, "the kernel's ARP request reached the DPDK port");
    assert!(port.stats().rx_packets >= 1);

    // DPDK -> kernel: a crafted UDP datagram arrives on the kernel socket.
    let payload = b"precursor over net_tap";
    let frame = udp_frame(kernel_mac, dpdk_mac, payload);
    let mut got = None;
    let started = Instant::now();
    let mut buf = [0u8; 2048];
    while got.is_none() && started.elapsed() < WAIT_MAX {
        let mut tx: MbufBurst<1> = MbufBurst::new();
        tx.push(mbuf_with(&pool, &frame)).expect("room");
        port.tx_burst(0, &mut tx);
        if let Ok((n, from)) = socket.recv_from(&mut buf) {
            got = Some((buf[..n].to_vec(), from));
        }
    }
    let (bytes, from) = got.expect("the kernel delivered the datagram");
    assert_eq!(bytes, payload);
    assert_eq!(from.ip(), DPDK_IP);
    assert!(port.stats().tx_packets >= 1);

    port.stop().expect("stop");
    drop(port);
    drop(pool);
}
