//! The packet path's headers: Ethernet, ARP, IPv4, ICMP echo and UDP, read and written
//! with `smoltcp::wire` over plain byte slices (an mbuf's data), with no allocation.
//!
//! ```text
//!  0             14                    34          42
//!  +-------------+---------------------+-----------+---------------------------+
//!  | Ethernet II |  IPv4 (no options)  |    UDP    | native frame (frame.rs)   |
//!  +-------------+---------------------+-----------+---------------------------+
//! ```
//! Every response is addressed to the MAC the request came from, so the data plane keeps no
//! ARP table; it answers ARP requests and pings for its own address so kernel hosts can
//! reach it.

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol,
    EthernetRepr, Icmpv4Message, Icmpv4Packet, IpAddress, IpProtocol, Ipv4Packet, Ipv4Repr,
    UdpPacket,
};
use std::net::Ipv4Addr;

pub const ETHERNET_HEADER_BYTES: usize = 14;
pub const IPV4_HEADER_BYTES: usize = 20;
pub const UDP_HEADER_BYTES: usize = 8;
/// Bytes in front of a native frame in every datagram the data plane sends.
pub const UDP_HEADERS_BYTES: usize = ETHERNET_HEADER_BYTES + IPV4_HEADER_BYTES + UDP_HEADER_BYTES;
/// Shortest Ethernet frame on the wire (without FCS); shorter frames are padded.
pub const ETHERNET_FRAME_BYTES_MIN: usize = 60;
const ARP_FRAME_BYTES: usize = ETHERNET_HEADER_BYTES + 28;
const TTL_HOPS: u8 = 64;

/// This side of a conversation: our MAC, IPv4 address and UDP port.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub mac: [u8; 6],
    pub ip: Ipv4Addr,
    pub udp_port: u16,
}

/// The other side, taken from a request's headers.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    pub mac: [u8; 6],
    pub ip: Ipv4Addr,
    pub udp_port: u16,
}

/// Why a received frame is not served. Each is a counter.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// Too short or inconsistent Ethernet, IPv4 or UDP headers, or a bad IPv4 checksum.
    MalformedHeaders,
    /// Neither IPv4 nor ARP (IPv6 router solicitations, LLDP, ...).
    OtherEthertype,
    /// IPv4 to another address, or ARP not asking for ours.
    NotForUs,
    /// IPv4 fragments: native frames always fit one packet.
    Fragment,
    /// IPv4 but neither UDP nor ICMP echo.
    OtherProtocol,
    /// UDP to a port we do not serve.
    OtherPort,
}

impl DropReason {
    pub const ALL: [DropReason; 6] = [
        DropReason::MalformedHeaders,
        DropReason::OtherEthertype,
        DropReason::NotForUs,
        DropReason::Fragment,
        DropReason::OtherProtocol,
        DropReason::OtherPort,
    ];
    pub fn name(self) -> &'static str {
        match self {
            DropReason::MalformedHeaders => "malformed_headers",
            DropReason::OtherEthertype => "other_ethertype",
            DropReason::NotForUs => "not_for_us",
            DropReason::Fragment => "fragment",
            DropReason::OtherProtocol => "other_protocol",
            DropReason::OtherPort => "other_port",
        }
    }
}

/// What a received Ethernet frame is, for us.
#[derive(Debug, PartialEq, Eq)]
pub enum Inbound<'a> {
    /// A UDP datagram to our address and port: `payload` is a native frame (still to decode).
    Datagram {
        peer: Peer,
        payload: &'a [u8],
    },
    /// An ARP request for our address.
    ArpRequest {
        peer_mac: [u8; 6],
        peer_ip: Ipv4Addr,
    },
    /// An ARP reply to us (to a request of ours for a broker's address).
    ArpReply {
        peer_mac: [u8; 6],
        peer_ip: Ipv4Addr,
    },
    /// An ICMP echo request to our address.
    EchoRequest,
    Dropped(DropReason),
}

/// Reads the headers of `frame` and says what it is.
pub fn classify<'a>(frame: &'a [u8], me: &Endpoint) -> Inbound<'a> {
    let Ok(ethernet) = EthernetFrame::new_checked(frame) else {
        return Inbound::Dropped(DropReason::MalformedHeaders);
    };
    match ethernet.ethertype() {
        EthernetProtocol::Arp => classify_arp(ethernet.payload(), me),
        EthernetProtocol::Ipv4 => classify_ipv4(ethernet.src_addr().0, ethernet.payload(), me),
        _ => Inbound::Dropped(DropReason::OtherEthertype),
    }
}

fn classify_arp<'a>(bytes: &[u8], me: &Endpoint) -> Inbound<'a> {
    let Ok(packet) = ArpPacket::new_checked(bytes) else {
        return Inbound::Dropped(DropReason::MalformedHeaders);
    };
    match ArpRepr::parse(&packet) {
        Ok(ArpRepr::EthernetIpv4 {
            operation: ArpOperation::Request,
            source_hardware_addr,
            source_protocol_addr,
            target_protocol_addr,
            ..
        }) if target_protocol_addr == me.ip => Inbound::ArpRequest {
            peer_mac: source_hardware_addr.0,
            peer_ip: source_protocol_addr,
        },
        Ok(ArpRepr::EthernetIpv4 {
            operation: ArpOperation::Reply,
            source_hardware_addr,
            source_protocol_addr,
            target_protocol_addr,
            ..
        }) if target_protocol_addr == me.ip => Inbound::ArpReply {
            peer_mac: source_hardware_addr.0,
            peer_ip: source_protocol_addr,
        },
        Ok(_) => Inbound::Dropped(DropReason::NotForUs),
        Err(_) => Inbound::Dropped(DropReason::MalformedHeaders),
    }
}

fn classify_ipv4<'a>(peer_mac: [u8; 6], bytes: &'a [u8], me: &Endpoint) -> Inbound<'a> {
    let Ok(packet) = Ipv4Packet::new_checked(bytes) else {
        return Inbound::Dropped(DropReason::MalformedHeaders);
    };
    if packet.version() != 4 || !packet.verify_checksum() {
        return Inbound::Dropped(DropReason::MalformedHeaders);
    }
    if packet.dst_addr() != me.ip {
        return Inbound::Dropped(DropReason::NotForUs);
    }
    if packet.more_frags() || packet.frag_offset() != 0 {
        return Inbound::Dropped(DropReason::Fragment);
    }
    let peer_ip = packet.src_addr();
    let payload: &'a [u8] = packet.payload();
    match packet.next_header() {
        IpProtocol::Udp => {
            let Ok(udp) = UdpPacket::new_checked(payload) else {
                return Inbound::Dropped(DropReason::MalformedHeaders);
            };
            if udp.dst_port() != me.udp_port {
                return Inbound::Dropped(DropReason::OtherPort);
            }
            // The UDP checksum is not verified: kernels hand veth/TAP traffic over with
            // checksum offload pending, and every native payload that matters carries its
            // own CRC32C (the record batch).
            let peer = Peer {
                mac: peer_mac,
                ip: peer_ip,
                udp_port: udp.src_port(),
            };
            Inbound::Datagram {
                peer,
                payload: udp_payload(payload),
            }
        }
        IpProtocol::Icmp => match Icmpv4Packet::new_checked(payload) {
            Ok(icmp) if icmp.msg_type() == Icmpv4Message::EchoRequest => Inbound::EchoRequest,
            Ok(_) => Inbound::Dropped(DropReason::OtherProtocol),
            Err(_) => Inbound::Dropped(DropReason::MalformedHeaders),
        },
        _ => Inbound::Dropped(DropReason::OtherProtocol),
    }
}

/// The payload of a checked UDP packet, with the slice's own lifetime.
fn udp_payload(udp: &[u8]) -> &[u8] {
    let length = u16::from_be_bytes([udp[4], udp[5]]) as usize;
    &udp[UDP_HEADER_BYTES..length]
}

/// Writes Ethernet, IPv4 and UDP headers into `packet[..UDP_HEADERS_BYTES]` for a payload of
/// `payload_bytes` that already sits at `packet[UDP_HEADERS_BYTES..]`; fills both checksums.
/// Returns the packet's length.
pub fn write_udp_headers(
    packet: &mut [u8],
    me: &Endpoint,
    peer: &Peer,
    payload_bytes: usize,
) -> usize {
    let total = UDP_HEADERS_BYTES + payload_bytes;
    assert!(
        packet.len() >= total,
        "packet buffer too short for the datagram"
    );
    let packet = &mut packet[..total];
    let mut ethernet = EthernetFrame::new_unchecked(&mut *packet);
    EthernetRepr {
        src_addr: EthernetAddress(me.mac),
        dst_addr: EthernetAddress(peer.mac),
        ethertype: EthernetProtocol::Ipv4,
    }
    .emit(&mut ethernet);
    let ip_bytes = &mut packet[ETHERNET_HEADER_BYTES..];
    {
        let mut udp = UdpPacket::new_unchecked(&mut ip_bytes[IPV4_HEADER_BYTES..]);
        udp.set_src_port(me.udp_port);
        udp.set_dst_port(peer.udp_port);
        udp.set_len((UDP_HEADER_BYTES + payload_bytes) as u16);
        udp.fill_checksum(&IpAddress::Ipv4(me.ip), &IpAddress::Ipv4(peer.ip));
    }
    let mut ip = Ipv4Packet::new_unchecked(&mut *ip_bytes);
    Ipv4Repr {
        src_addr: me.ip,
        dst_addr: peer.ip,
        next_header: IpProtocol::Udp,
        payload_len: UDP_HEADER_BYTES + payload_bytes,
        hop_limit: TTL_HOPS,
    }
    .emit(&mut ip, &ChecksumCapabilities::default());
    total
}

/// Writes an ARP reply telling `peer` our MAC; returns its length (padded to the minimum).
pub fn write_arp_reply(
    packet: &mut [u8],
    me: &Endpoint,
    peer_mac: [u8; 6],
    peer_ip: Ipv4Addr,
) -> usize {
    assert!(packet.len() >= ETHERNET_FRAME_BYTES_MIN);
    let frame = &mut packet[..ETHERNET_FRAME_BYTES_MIN];
    frame.fill(0);
    let mut ethernet = EthernetFrame::new_unchecked(&mut *frame);
    EthernetRepr {
        src_addr: EthernetAddress(me.mac),
        dst_addr: EthernetAddress(peer_mac),
        ethertype: EthernetProtocol::Arp,
    }
    .emit(&mut ethernet);
    let mut arp = ArpPacket::new_unchecked(&mut frame[ETHERNET_HEADER_BYTES..ARP_FRAME_BYTES]);
    ArpRepr::EthernetIpv4 {
        operation: ArpOperation::Reply,
        source_hardware_addr: EthernetAddress(me.mac),
        source_protocol_addr: me.ip,
        target_hardware_addr: EthernetAddress(peer_mac),
        target_protocol_addr: peer_ip,
    }
    .emit(&mut arp);
    ETHERNET_FRAME_BYTES_MIN
}

/// Writes a broadcast ARP request asking who has `ip`; returns its length (padded).
pub fn write_arp_request(packet: &mut [u8], me: &Endpoint, ip: Ipv4Addr) -> usize {
    assert!(packet.len() >= ETHERNET_FRAME_BYTES_MIN);
    let frame = &mut packet[..ETHERNET_FRAME_BYTES_MIN];
    frame.fill(0);
    let mut ethernet = EthernetFrame::new_unchecked(&mut *frame);
    EthernetRepr {
        src_addr: EthernetAddress(me.mac),
        dst_addr: EthernetAddress::BROADCAST,
        ethertype: EthernetProtocol::Arp,
    }
    .emit(&mut ethernet);
    let mut arp = ArpPacket::new_unchecked(&mut frame[ETHERNET_HEADER_BYTES..ARP_FRAME_BYTES]);
    ArpRepr::EthernetIpv4 {
        operation: ArpOperation::Request,
        source_hardware_addr: EthernetAddress(me.mac),
        source_protocol_addr: me.ip,
        target_hardware_addr: EthernetAddress([0; 6]),
        target_protocol_addr: ip,
    }
    .emit(&mut arp);
    ETHERNET_FRAME_BYTES_MIN
}

/// Turns a received ICMP echo request (already classified as [`Inbound::EchoRequest`]) into
/// its reply in place: swaps addresses, sets the type, refreshes checksums.
pub fn echo_request_into_reply(frame: &mut [u8], me: &Endpoint) {
    let mut ethernet = EthernetFrame::new_unchecked(&mut *frame);
    let peer_mac = ethernet.src_addr();
    ethernet.set_dst_addr(peer_mac);
    ethernet.set_src_addr(EthernetAddress(me.mac));
    let mut ip = Ipv4Packet::new_unchecked(ethernet.payload_mut());
    let peer_ip = ip.src_addr();
    ip.set_src_addr(me.ip);
    ip.set_dst_addr(peer_ip);
    ip.set_hop_limit(TTL_HOPS);
    ip.fill_checksum();
    let mut icmp = Icmpv4Packet::new_unchecked(ip.payload_mut());
    icmp.set_msg_type(Icmpv4Message::EchoReply);
    icmp.fill_checksum();
}

#[cfg(test)]
mod tests {
    use super::*;
    use smoltcp::wire::{Icmpv4Repr, UdpRepr};

    const ME: Endpoint = Endpoint {
        mac: [0x02, 0, 0, 0, 0, 0x02],
        ip: Ipv4Addr::new(10, 77, 0, 2),
        udp_port: 9190,
    };
    const CLIENT: Peer = Peer {
        mac: [0x02, 0, 0, 0, 0, 0x01],
        ip: Ipv4Addr::new(10, 77, 0, 1),
        udp_port: 40000,
    };

    fn client_endpoint() -> Endpoint {
        Endpoint {
            mac: CLIENT.mac,
            ip: CLIENT.ip,
            udp_port: CLIENT.udp_port,
        }
    }

    fn me_as_peer() -> Peer {
        Peer {
            mac: ME.mac,
            ip: ME.ip,
            udp_port: ME.udp_port,
        }
    }

    fn datagram(payload: &[u8]) -> Vec<u8> {
        let mut packet = vec![0u8; UDP_HEADERS_BYTES + payload.len()];
        packet[UDP_HEADERS_BYTES..].copy_from_slice(payload);
        write_udp_headers(
            &mut packet,
            &client_endpoint(),
            &me_as_peer(),
            payload.len(),
        );
        packet
    }

    #[test]
    fn a_udp_datagram_for_us_yields_its_payload_and_peer() {
        let packet = datagram(b"hello");
        assert_eq!(
            classify(&packet, &ME),
            Inbound::Datagram {
                peer: CLIENT,
                payload: b"hello"
            }
        );
    }

    #[test]
    fn written_checksums_verify() {
        let packet = datagram(b"checksum me");
        let ip = Ipv4Packet::new_checked(&packet[ETHERNET_HEADER_BYTES..]).unwrap();
        assert!(ip.verify_checksum());
        let udp = UdpPacket::new_checked(ip.payload()).unwrap();
        assert!(udp.verify_checksum(&IpAddress::Ipv4(CLIENT.ip), &IpAddress::Ipv4(ME.ip)));
        let repr = UdpRepr::parse(
            &udp,
            &IpAddress::Ipv4(CLIENT.ip),
            &IpAddress::Ipv4(ME.ip),
            &ChecksumCapabilities::default(),
        )
        .unwrap();
        assert_eq!(repr.dst_port, ME.udp_port);
    }

    #[test]
    fn ethernet_padding_beyond_the_ip_length_is_ignored() {
        let mut packet = datagram(b"x");
        packet.resize(ETHERNET_FRAME_BYTES_MIN, 0xee);
        assert!(matches!(
            classify(&packet, &ME),
            Inbound::Datagram { payload: b"x", .. }
        ));
    }

    #[test]
    fn other_ports_addresses_and_protocols_are_dropped_with_their_reason() {
        let mut other_port = datagram(b"x");
        other_port[ETHERNET_HEADER_BYTES + IPV4_HEADER_BYTES + 2..][..2]
            .copy_from_slice(&1u16.to_be_bytes());
        assert_eq!(
            classify(&other_port, &ME),
            Inbound::Dropped(DropReason::OtherPort)
        );

        let mut other_address = datagram(b"x");
        other_address[ETHERNET_HEADER_BYTES + 16..][..4].copy_from_slice(&[10, 77, 0, 9]);
        let mut ip = Ipv4Packet::new_unchecked(&mut other_address[ETHERNET_HEADER_BYTES..]);
        ip.fill_checksum();
        assert_eq!(
            classify(&other_address, &ME),
            Inbound::Dropped(DropReason::NotForUs)
        );

        let mut bad_checksum = datagram(b"x");
        bad_checksum[ETHERNET_HEADER_BYTES + 10] ^= 0xff;
        assert_eq!(
            classify(&bad_checksum, &ME),
            Inbound::Dropped(DropReason::MalformedHeaders)
        );

        let mut ipv6 = datagram(b"x");
        ipv6[12..14].copy_from_slice(&0x86ddu16.to_be_bytes());
        assert_eq!(
            classify(&ipv6, &ME),
            Inbound::Dropped(DropReason::OtherEthertype)
        );

        let mut tcp = datagram(b"x");
        tcp[ETHERNET_HEADER_BYTES + 9] = 6;
        Ipv4Packet::new_unchecked(&mut tcp[ETHERNET_HEADER_BYTES..]).fill_checksum();
        assert_eq!(
            classify(&tcp, &ME),
            Inbound::Dropped(DropReason::OtherProtocol)
        );

        let mut fragment = datagram(b"x");
        Ipv4Packet::new_unchecked(&mut fragment[ETHERNET_HEADER_BYTES..]).set_more_frags(true);
        Ipv4Packet::new_unchecked(&mut fragment[ETHERNET_HEADER_BYTES..]).fill_checksum();
        assert_eq!(
            classify(&fragment, &ME),
            Inbound::Dropped(DropReason::Fragment)
        );
    }

    #[test]
    fn every_truncation_of_a_datagram_is_dropped_not_misread() {
        let packet = datagram(b"0123456789");
        for len in 0..packet.len() {
            match classify(&packet[..len], &ME) {
                Inbound::Dropped(_) => {}
                other => panic!("truncated to {len}: {other:?}"),
            }
        }
    }

    #[test]
    fn arp_requests_for_us_are_answered() {
        let mut request = vec![0u8; ARP_FRAME_BYTES];
        EthernetRepr {
            src_addr: EthernetAddress(CLIENT.mac),
            dst_addr: EthernetAddress::BROADCAST,
            ethertype: EthernetProtocol::Arp,
        }
        .emit(&mut EthernetFrame::new_unchecked(&mut request[..]));
        let ask = |target: Ipv4Addr, request: &mut [u8]| {
            ArpRepr::EthernetIpv4 {
                operation: ArpOperation::Request,
                source_hardware_addr: EthernetAddress(CLIENT.mac),
                source_protocol_addr: CLIENT.ip,
                target_hardware_addr: EthernetAddress([0; 6]),
                target_protocol_addr: target,
            }
            .emit(&mut ArpPacket::new_unchecked(
                &mut request[ETHERNET_HEADER_BYTES..],
            ));
        };
        ask(ME.ip, &mut request);
        assert_eq!(
            classify(&request, &ME),
            Inbound::ArpRequest {
                peer_mac: CLIENT.mac,
                peer_ip: CLIENT.ip
            }
        );
        let mut reply = [0u8; 64];
        let len = write_arp_reply(&mut reply, &ME, CLIENT.mac, CLIENT.ip);
        let frame = EthernetFrame::new_checked(&reply[..len]).unwrap();
        assert_eq!(frame.dst_addr().0, CLIENT.mac);
        match ArpRepr::parse(&ArpPacket::new_checked(frame.payload()).unwrap()).unwrap() {
            ArpRepr::EthernetIpv4 {
                operation,
                source_hardware_addr,
                source_protocol_addr,
                ..
            } => {
                assert_eq!(operation, ArpOperation::Reply);
                assert_eq!(source_hardware_addr.0, ME.mac);
                assert_eq!(source_protocol_addr, ME.ip);
            }
            other => panic!("{other:?}"),
        }
        ask(Ipv4Addr::new(10, 77, 0, 200), &mut request);
        assert_eq!(
            classify(&request, &ME),
            Inbound::Dropped(DropReason::NotForUs)
        );
    }

    #[test]
    fn pings_are_answered_in_place() {
        let echo = Icmpv4Repr::EchoRequest {
            ident: 7,
            seq_no: 3,
            data: b"ping-data",
        };
        let mut packet = vec![0u8; ETHERNET_HEADER_BYTES + IPV4_HEADER_BYTES + echo.buffer_len()];
        EthernetRepr {
            src_addr: EthernetAddress(CLIENT.mac),
            dst_addr: EthernetAddress(ME.mac),
            ethertype: EthernetProtocol::Ipv4,
        }
        .emit(&mut EthernetFrame::new_unchecked(&mut packet[..]));
        let caps = ChecksumCapabilities::default();
        Ipv4Repr {
            src_addr: CLIENT.ip,
            dst_addr: ME.ip,
            next_header: IpProtocol::Icmp,
            payload_len: echo.buffer_len(),
            hop_limit: 64,
        }
        .emit(
            &mut Ipv4Packet::new_unchecked(&mut packet[ETHERNET_HEADER_BYTES..]),
            &caps,
        );
        echo.emit(
            &mut Icmpv4Packet::new_unchecked(
                &mut packet[ETHERNET_HEADER_BYTES + IPV4_HEADER_BYTES..],
            ),
            &caps,
        );
        assert_eq!(classify(&packet, &ME), Inbound::EchoRequest);
        echo_request_into_reply(&mut packet, &ME);
        let ip = Ipv4Packet::new_checked(&packet[ETHERNET_HEADER_BYTES..]).unwrap();
        assert!(ip.verify_checksum());
        assert_eq!(ip.dst_addr(), CLIENT.ip);
        let icmp = Icmpv4Packet::new_checked(ip.payload()).unwrap();
        assert!(icmp.verify_checksum());
        match Icmpv4Repr::parse(&icmp, &caps).unwrap() {
            Icmpv4Repr::EchoReply {
                ident,
                seq_no,
                data,
            } => {
                assert_eq!((ident, seq_no, data), (7, 3, &b"ping-data"[..]));
            }
            other => panic!("{other:?}"),
        }
    }
}
