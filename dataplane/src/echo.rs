//! `precursor-dataplane --echo`: the bare DPDK echo of a port, the baseline every other
//! number in docs/benchmarks.md is compared with.
//!
//! The same EAL, mempool and port set-up as a node (`node::open_port`), but the agent
//! below replaces the lcore: no frame decode, no log, no flusher. Its `do_work` is
//!
//! ```text
//!   rx_burst ──► reflect each packet in place ──► tx_burst (what the queue refuses is freed)
//! ```
//!
//! Reflecting a UDP datagram addressed to the port's address and UDP port rewrites its
//! Ethernet, IPv4 and UDP headers back to the sender with [`net::write_udp_headers`] (MACs,
//! addresses and ports swapped, both checksums computed over the whole datagram, as the
//! real lcore does for every reply). The payload is not looked at: a native Ping frame
//! comes back as the same Ping frame, same request id (`precursor bench ping` accepts it).
//! ARP requests for the address and ICMP echo requests are answered too, so kernel hosts
//! can resolve and ping it; everything else is counted and freed.
//!
//! Nothing in the loop allocates, locks or makes a system call beyond what the PMD does.

use crate::idle::Idle;
use crate::net::{self, DropReason, Endpoint, Inbound, UDP_HEADERS_BYTES};
use crate::node::{self, NodeError};
use precursor_config::Config;
use precursor_ffi::dpdk::{Mbuf, MbufBurst, Port};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Packets one `rx_burst` takes at most (the lcore's burst size).
pub const ECHO_BURST_PACKETS_MAX: usize = crate::lcore::RX_BURST_PACKETS_MAX;

/// What reflecting a frame in place did.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Reflection {
    /// A UDP datagram for us, now addressed back to its sender: `bytes` long.
    Datagram {
        bytes: usize,
    },
    /// An ICMP echo request, now its reply (same length).
    IcmpEcho,
    /// An ARP request for our address: the caller writes the reply into a reset mbuf.
    ArpRequest {
        peer_mac: [u8; 6],
        peer_ip: Ipv4Addr,
    },
    Dropped(DropReason),
}

/// Turns `frame` into its reflection where it lies. Only the Ethernet, IPv4 and UDP (or
/// ICMP) headers are read and written; a datagram's payload is neither read nor copied
/// (the UDP checksum sums it).
pub fn reflect_in_place(frame: &mut [u8], me: &Endpoint) -> Reflection {
    let (peer, payload_at, payload_bytes) = match net::classify(frame, me) {
        Inbound::Datagram { peer, payload } => (
            peer,
            payload.as_ptr() as usize - frame.as_ptr() as usize,
            payload.len(),
        ),
        Inbound::EchoRequest => {
            net::echo_request_into_reply(frame, me);
            return Reflection::IcmpEcho;
        }
        Inbound::ArpRequest { peer_mac, peer_ip } => {
            return Reflection::ArpRequest { peer_mac, peer_ip }
        }
        // The echo server asks nothing, so an ARP reply is for someone else.
        Inbound::ArpReply { .. } => return Reflection::Dropped(DropReason::NotForUs),
        Inbound::Dropped(reason) => return Reflection::Dropped(reason),
    };
    // Replies never carry IPv4 options; a request with options is not worth a memmove.
    if payload_at != UDP_HEADERS_BYTES {
        return Reflection::Dropped(DropReason::MalformedHeaders);
    }
    let bytes = net::write_udp_headers(frame, me, &peer, payload_bytes);
    Reflection::Datagram { bytes }
}

/// The echo agent's counters, printed as one JSON object when it stops.
#[derive(Clone, Debug, Default)]
pub struct EchoCounters {
    pub rx_packets: u64,
    pub tx_packets: u64,
    /// UDP datagrams sent back.
    pub reflected: u64,
    pub arp_replies: u64,
    pub echo_replies: u64,
    /// Received frames that were not reflected (other traffic, multi-segment mbufs).
    pub dropped: u64,
    /// Reflections the TX queue did not take (freed; a client retransmits or counts a loss).
    pub tx_dropped: u64,
    pub loop_iterations: u64,
}

impl EchoCounters {
    pub fn to_json(&self) -> String {
        format!(
            "{{\"mode\":\"echo\",\"rx_packets\":{},\"tx_packets\":{},\"reflected\":{},\"arp_replies\":{},\"echo_replies\":{},\"dropped\":{},\"tx_dropped\":{},\"loop_iterations\":{}}}",
            self.rx_packets,
            self.tx_packets,
            self.reflected,
            self.arp_replies,
            self.echo_replies,
            self.dropped,
            self.tx_dropped,
            self.loop_iterations
        )
    }
}

/// The poll agent of echo mode: owns the port queue for the whole run.
pub struct Echo {
    endpoint: Endpoint,
    queue: u16,
    port: Port,
    rx: MbufBurst<ECHO_BURST_PACKETS_MAX>,
    /// Every received packet yields at most one reply, so TX holds a whole RX burst.
    tx: MbufBurst<ECHO_BURST_PACKETS_MAX>,
    counters: EchoCounters,
}

impl Echo {
    pub fn new(endpoint: Endpoint, queue: u16, port: Port) -> Echo {
        Echo {
            endpoint,
            queue,
            port,
            rx: MbufBurst::new(),
            tx: MbufBurst::new(),
            counters: EchoCounters::default(),
        }
    }

    pub fn counters(&self) -> &EchoCounters {
        &self.counters
    }

    /// Polls until `stop` is set.
    pub fn run(&mut self, stop: &AtomicBool, idle: &mut Idle) {
        while !stop.load(Ordering::Relaxed) {
            let work = self.do_work();
            idle.idle(work);
        }
    }

    /// One burst: receive, reflect in place, send. Returns the packets received.
    #[inline]
    pub fn do_work(&mut self) -> usize {
        self.counters.loop_iterations += 1;
        let received = self.port.rx_burst(self.queue, &mut self.rx);
        if received == 0 {
            return 0;
        }
        self.counters.rx_packets += received as u64;
        for mbuf in self.rx.drain() {
            if let Some(reply) = reflect(mbuf, &self.endpoint, &mut self.counters) {
                let pushed = self.tx.push(reply);
                debug_assert!(pushed.is_ok(), "TX holds a whole RX burst");
            }
        }
        let sent = self.port.tx_burst(self.queue, &mut self.tx);
        self.counters.tx_packets += sent as u64;
        if !self.tx.is_empty() {
            self.counters.tx_dropped += self.tx.len() as u64;
            self.tx.clear();
        }
        received
    }
}

/// The reply to one received packet, in the same mbuf; `None` when it is dropped (freed).
#[inline]
fn reflect(mut mbuf: Mbuf, me: &Endpoint, counters: &mut EchoCounters) -> Option<Mbuf> {
    if !mbuf.is_contiguous() {
        counters.dropped += 1;
        return None;
    }
    match reflect_in_place(mbuf.data_mut(), me) {
        Reflection::Datagram { bytes } => {
            // Ethernet padding of a short request goes; the reply is the datagram itself.
            let excess = mbuf.len() - bytes;
            if excess > 0 && !mbuf.trim(excess) {
                counters.dropped += 1;
                return None;
            }
            counters.reflected += 1;
            Some(mbuf)
        }
        Reflection::IcmpEcho => {
            counters.echo_replies += 1;
            Some(mbuf)
        }
        Reflection::ArpRequest { peer_mac, peer_ip } => {
            mbuf.reset();
            let out = mbuf.append(net::ETHERNET_FRAME_BYTES_MIN)?;
            net::write_arp_reply(out, me, peer_mac, peer_ip);
            counters.arp_replies += 1;
            Some(mbuf)
        }
        Reflection::Dropped(_) => {
            counters.dropped += 1;
            None
        }
    }
}

/// Runs echo mode until `stop` is set: the node's EAL and port set-up, then the echo agent
/// on the EAL's main thread. Returns its counters as JSON for the exit report.
pub fn run(config: &Config, stop: Arc<AtomicBool>) -> Result<String, NodeError> {
    // No partitions: the memory plan only decides DPDK's hugepages.
    let plan = node::plan_memory(config, 0)?;
    for warning in plan.warnings.iter().filter(|w| !w.contains("segments")) {
        eprintln!("precursor-dataplane: warning: {warning}");
    }
    let (eal, pool, port) = node::open_port(config, &plan)?;
    let endpoint = node::endpoint(config, &port);
    let mut echo = Echo::new(endpoint, 0, port);
    eprintln!(
        "precursor-dataplane: ready: echo mode (no frame decode, no log): {}:{} on {} (mac {}), lcore {}, {} hugepages",
        endpoint.ip,
        endpoint.udp_port,
        node::port_name(config),
        node::mac_string(endpoint.mac),
        config.lcore(),
        if plan.dpdk_hugepages {
            "with"
        } else {
            "without"
        },
    );
    let mut idle = Idle::new(config.dataplane.idle, config.dataplane.idle_park_us_max);
    echo.run(&stop, &mut idle);
    let counters = echo.counters().to_json();
    drop(echo);
    drop(pool);
    drop(eal);
    Ok(counters)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::Peer;
    use smoltcp::wire::{IpAddress, Ipv4Packet, UdpPacket};

    const ME: Endpoint = Endpoint {
        mac: [0x02, 0, 0, 0, 0, 0x02],
        ip: Ipv4Addr::new(10, 77, 0, 2),
        udp_port: 9190,
    };
    const CLIENT: Endpoint = Endpoint {
        mac: [0x02, 0, 0, 0, 0, 0x01],
        ip: Ipv4Addr::new(10, 77, 0, 1),
        udp_port: 40000,
    };

    fn as_peer(e: &Endpoint) -> Peer {
        Peer {
            mac: e.mac,
            ip: e.ip,
            udp_port: e.udp_port,
        }
    }

    fn datagram(from: &Endpoint, to: &Endpoint, payload: &[u8]) -> Vec<u8> {
        let mut packet = vec![0u8; UDP_HEADERS_BYTES + payload.len()];
        packet[UDP_HEADERS_BYTES..].copy_from_slice(payload);
        net::write_udp_headers(&mut packet, from, &as_peer(to), payload.len());
        packet
    }

    #[test]
    fn a_datagram_comes_back_to_its_sender_with_the_payload_untouched() {
        let mut packet = datagram(&CLIENT, &ME, b"a ping frame, not decoded");
        assert_eq!(
            reflect_in_place(&mut packet, &ME),
            Reflection::Datagram {
                bytes: packet.len()
            }
        );
        // Seen from the client, it is a datagram from us with the same payload.
        assert_eq!(
            net::classify(&packet, &CLIENT),
            Inbound::Datagram {
                peer: as_peer(&ME),
                payload: b"a ping frame, not decoded"
            }
        );
        let ip = Ipv4Packet::new_checked(&packet[net::ETHERNET_HEADER_BYTES..]).unwrap();
        let udp = UdpPacket::new_checked(ip.payload()).unwrap();
        assert!(udp.verify_checksum(&IpAddress::Ipv4(ME.ip), &IpAddress::Ipv4(CLIENT.ip)));
    }

    #[test]
    fn ethernet_padding_is_reported_so_the_mbuf_can_be_trimmed() {
        let mut packet = datagram(&CLIENT, &ME, b"x");
        let datagram_bytes = packet.len();
        packet.resize(net::ETHERNET_FRAME_BYTES_MIN, 0);
        assert_eq!(
            reflect_in_place(&mut packet, &ME),
            Reflection::Datagram {
                bytes: datagram_bytes
            }
        );
    }

    #[test]
    fn other_traffic_is_not_reflected() {
        let other_port = Endpoint { udp_port: 1, ..ME };
        let mut packet = datagram(&CLIENT, &other_port, b"x");
        assert_eq!(
            reflect_in_place(&mut packet, &ME),
            Reflection::Dropped(DropReason::OtherPort)
        );
        let elsewhere = Endpoint {
            ip: Ipv4Addr::new(10, 77, 0, 9),
            ..ME
        };
        let mut packet = datagram(&CLIENT, &elsewhere, b"x");
        assert_eq!(
            reflect_in_place(&mut packet, &ME),
            Reflection::Dropped(DropReason::NotForUs)
        );
    }

    #[test]
    fn counters_print_as_one_json_object() {
        let counters = EchoCounters {
            reflected: 3,
            ..EchoCounters::default()
        };
        let json = counters.to_json();
        assert!(json.starts_with('{') && json.ends_with('}'), "{json}");
        assert!(json.contains("\"reflected\":3"), "{json}");
    }
}
