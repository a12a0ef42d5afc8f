//! The way to the brokers — one kernel UDP socket that reaches every broker of a cluster
//! the client needs, or an IPC channel / RDMA connection to one data plane: frames out,
//! frames in, request ids, and the blocking request/answer exchange used for Metadata and
//! Ping. Above it, producer and consumer do not know which it is: both lose nothing
//! silently (UDP may drop a datagram, a lost IPC channel drops what was in it), and both
//! are covered by retransmission and idempotence.
//!
//! Brokers are [`BrokerSlot`]s: slot 0 is the first bootstrap broker, the others the rest
//! of the bootstrap list and the leaders Metadata names (at most [`BROKERS_MAX`]). Over
//! UDP one unconnected socket serves them all (`send_to`, and `recv_from` tells which
//! broker answered), so one blocking wait covers every broker; request ids are unique
//! across brokers. IPC and RDMA reach only the data plane they are attached to: one slot.

use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use precursor_protocol::frame::{
    decode_frame, FrameHeader, Opcode, FRAME_BYTES_MAX, FRAME_HEADER_BYTES,
};

use crate::error::BrokerAddress;
use crate::ipc::{IpcConfig, IpcSession};
use crate::retransmit::RetransmitSchedule;
use crate::{ClientConfig, ClientError, TransportKind};

/// The receive buffer holds the largest UDP datagram, so no frame is ever cut short
/// (a broker announcing a frame_bytes_max above the jumbo MTU still fits).
const RECV_BUFFER_BYTES: usize = 65_536;

/// The shortest socket wait: SO_RCVTIMEO cannot be zero (zero means "forever").
const WAIT_US_MIN: u64 = 50;

/// The most brokers one client talks to (a cluster's brokers: bootstrap ones and leaders).
pub const BROKERS_MAX: usize = 64;

/// A broker this transport reaches: an index into its peers. Slot 0 is the first
/// bootstrap broker (over IPC and RDMA, the only one).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct BrokerSlot(pub u8);

/// One broker the transport sends to.
struct Peer {
    /// For messages.
    address: BrokerAddress,
    /// UDP only: where its datagrams go (in the socket's address family).
    udp: Option<SocketAddr>,
    /// Its broker id as Metadata said (`me`); 0 until known, and outside a cluster.
    broker_id: u8,
    /// Whether it ever answered: separates "nobody there" from "slow to ack".
    answered: bool,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum SocketMode {
    NonBlocking,
    Blocking(Duration),
}

/// Counters kept by the transport.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct TransportStats {
    pub frames_sent: u64,
    pub frames_received: u64,
    /// Datagrams that were not frames, or frames no request of ours asked for.
    pub frames_ignored: u64,
    /// Sends refused by the kernel for lack of buffer, or by a full IPC ring (the request
    /// will be retransmitted).
    pub send_drops: u64,
    /// IPC channels claimed anew after one was lost.
    pub reconnects: u64,
}

/// What carries the frames.
enum Medium {
    Udp {
        socket: UdpSocket,
        mode: SocketMode,
    },
    Ipc(Box<IpcLink>),
    #[cfg(feature = "rdma")]
    Rdma(Box<crate::rdma::RdmaLink>),
}

/// An IPC channel, or the wait for a new one after it was lost (the data plane restarting):
/// meanwhile frames count as lost and the caller's retransmission schedule keeps trying.
struct IpcLink {
    session: Option<IpcSession>,
    config: IpcConfig,
    next_attempt_at: Instant,
}

/// Between two attempts to claim a new channel.
const IPC_RECONNECT_INTERVAL: Duration = Duration::from_millis(100);
/// How long one such attempt waits for the data plane to accept.
const IPC_RECONNECT_ACCEPT_MS: u64 = 200;

impl IpcLink {
    /// The session, claiming a new channel first if the old one was lost and an attempt is
    /// due. `None` while there is none.
    fn session(&mut self, stats: &mut TransportStats) -> Option<&mut IpcSession> {
        if self.session.is_none() && Instant::now() >= self.next_attempt_at {
            let config = IpcConfig {
                accept_timeout_ms: IPC_RECONNECT_ACCEPT_MS,
                ..self.config.clone()
            };
            match IpcSession::connect(&config) {
                Ok(session) => {
                    stats.reconnects += 1;
                    self.session = Some(session);
                }
                Err(_) => self.next_attempt_at = Instant::now() + IPC_RECONNECT_INTERVAL,
            }
        }
        self.session.as_mut()
    }

    fn lost(&mut self) {
        self.session = None;
        self.next_attempt_at = Instant::now();
    }
}

pub(crate) struct Transport {
    medium: Medium,
    /// At most [`BROKERS_MAX`]; never empty, never shrinks (slots stay valid).
    peers: Vec<Peer>,
    next_request_id: u64,
    send_buf: Vec<u8>,
    recv_buf: Vec<u8>,
    recv_len: usize,
    /// Who sent what is in `recv_buf`; `None`: a datagram from nobody we know.
    recv_from: Option<BrokerSlot>,
    pub stats: TransportStats,
}

/// A received frame, copied out of the transport's buffer (used on the slow paths only).
pub(crate) struct OwnedFrame {
    pub header: FrameHeader,
    pub payload: Vec<u8>,
}

impl Transport {
    pub fn open(config: &ClientConfig) -> Result<Transport, ClientError> {
        let (medium, peers, recv_bytes) = match &config.transport {
            TransportKind::Udp => {
                let bind = config.bind.unwrap_or_else(|| {
                    if config.broker.is_ipv4() {
                        SocketAddr::from(([0, 0, 0, 0], 0))
                    } else {
                        SocketAddr::from(([0u16; 8], 0))
                    }
                });
                let socket = UdpSocket::bind(bind)?;
                socket.set_nonblocking(true)?;
                let ipv6 = socket.local_addr()?.is_ipv6();
                let mut peers: Vec<Peer> = Vec::new();
                let bootstrap =
                    std::iter::once(config.broker).chain(config.bootstrap_brokers.iter().copied());
                for address in bootstrap {
                    if peers.len() == BROKERS_MAX {
                        return Err(ClientError::Usage(format!(
                            "at most {BROKERS_MAX} bootstrap brokers"
                        )));
                    }
                    let target = in_family(address, ipv6);
                    if !peers.iter().any(|p| p.udp == Some(target)) {
                        peers.push(Peer::udp(address, target));
                    }
                }
                let medium = Medium::Udp {
                    socket,
                    mode: SocketMode::NonBlocking,
                };
                (medium, peers, RECV_BUFFER_BYTES)
            }
            TransportKind::Ipc(ipc) => {
                let session = IpcSession::connect(ipc)?;
                let bytes = session.frame_bytes_max().max(RECV_BUFFER_BYTES);
                let link = IpcLink {
                    session: Some(session),
                    config: ipc.clone(),
                    next_attempt_at: Instant::now(),
                };
                let peer = Peer::single(BrokerAddress::Ipc(ipc.dir.clone()));
                (Medium::Ipc(Box::new(link)), vec![peer], bytes)
            }
            #[cfg(feature = "rdma")]
            TransportKind::Rdma(rdma) => {
                let link = crate::rdma::RdmaLink::connect(rdma)?;
                let bytes = link.frame_bytes_max().max(RECV_BUFFER_BYTES);
                let peer = Peer::single(BrokerAddress::Rdma(rdma.broker));
                (Medium::Rdma(Box::new(link)), vec![peer], bytes)
            }
        };
        debug_assert!(!peers.is_empty() && peers.len() <= BROKERS_MAX);
        Ok(Transport {
            medium,
            peers,
            // Start request ids away from zero so a zeroed frame never matches a request.
            next_request_id: 1,
            send_buf: vec![0; FRAME_BYTES_MAX],
            recv_buf: vec![0; recv_bytes],
            recv_len: 0,
            recv_from: None,
            stats: TransportStats::default(),
        })
    }

    /// How broker `slot` is reached, for messages.
    pub fn broker(&self, slot: BrokerSlot) -> BrokerAddress {
        self.peers[slot.0 as usize].address.clone()
    }

    /// Every broker known so far, in slot order (bootstrap brokers first).
    pub fn slots(&self) -> impl Iterator<Item = BrokerSlot> {
        (0..self.peers.len() as u8).map(BrokerSlot)
    }

    /// The bootstrap brokers' slots (the first ones).
    pub fn bootstrap_slots(&self, config: &ClientConfig) -> Vec<BrokerSlot> {
        let count = match config.transport {
            TransportKind::Udp => 1 + config.bootstrap_brokers.len(),
            _ => 1,
        };
        self.slots().take(count).collect()
    }

    /// Whether brokers other than the one attached can be sent to (UDP, not IPC or RDMA).
    pub fn reaches_other_brokers(&self) -> bool {
        matches!(self.medium, Medium::Udp { .. })
    }

    /// Records broker `slot`'s id (the `me` of its Metadata answer).
    pub fn set_broker_id(&mut self, slot: BrokerSlot, broker_id: u8) {
        self.peers[slot.0 as usize].broker_id = broker_id;
    }

    /// The slot of broker `broker_id` at `address`: the one already known by that id, else
    /// by that address, else a new one. `None` when this transport cannot reach another
    /// broker (IPC, RDMA: one data plane) or already has [`BROKERS_MAX`].
    pub fn slot_for(&mut self, broker_id: u8, address: SocketAddr) -> Option<BrokerSlot> {
        let ipv6 = match &self.medium {
            Medium::Udp { socket, .. } => socket.local_addr().ok()?.is_ipv6(),
            _ => return None,
        };
        let target = in_family(address, ipv6);
        let by_id = (broker_id != 0)
            .then(|| self.peers.iter().position(|p| p.broker_id == broker_id))
            .flatten();
        let found = by_id.or_else(|| self.peers.iter().position(|p| p.udp == Some(target)));
        if let Some(index) = found {
            return Some(BrokerSlot(index as u8));
        }
        if self.peers.len() >= BROKERS_MAX {
            return None;
        }
        let mut peer = Peer::udp(address, target);
        peer.broker_id = broker_id;
        self.peers.push(peer);
        Some(BrokerSlot(self.peers.len() as u8 - 1))
    }

    pub fn next_request_id(&mut self) -> u64 {
        let id = self.next_request_id;
        self.next_request_id = self.next_request_id.wrapping_add(1).max(1);
        id
    }

    /// Encodes header + payload into the send buffer and sends it to broker `slot`.
    pub fn send_frame(
        &mut self,
        slot: BrokerSlot,
        header: &FrameHeader,
        payload: &[u8],
    ) -> Result<(), ClientError> {
        let total = FRAME_HEADER_BYTES + payload.len();
        if self.send_buf.len() < total {
            self.send_buf.resize(total, 0);
        }
        header.encode(&mut self.send_buf[..FRAME_HEADER_BYTES]);
        self.send_buf[FRAME_HEADER_BYTES..total].copy_from_slice(payload);
        let frame = std::mem::take(&mut self.send_buf);
        let result = self.send_raw(slot, &frame[..total]);
        self.send_buf = frame;
        result
    }

    /// Sends an already encoded frame to broker `slot`. Transient refusals (no buffer, an
    /// ICMP error left from an earlier datagram, a full IPC ring, a lost IPC channel) count
    /// as a lost frame: retransmission covers it.
    pub fn send_raw(&mut self, slot: BrokerSlot, frame: &[u8]) -> Result<(), ClientError> {
        debug_assert!(frame.len() >= FRAME_HEADER_BYTES);
        if let Medium::Ipc(_) = self.medium {
            return self.send_ipc(frame);
        }
        #[cfg(feature = "rdma")]
        if let Medium::Rdma(link) = &mut self.medium {
            return link.send(frame, &mut self.stats);
        }
        let target = self.peers[slot.0 as usize]
            .udp
            .expect("UDP peers have an address");
        // Bounded: a refusal from an old ICMP error is reported once, so two tries suffice
        // for it; a full socket buffer switches the socket to blocking for the second try.
        for _ in 0..2 {
            let Medium::Udp { socket, .. } = &self.medium else {
                unreachable!("IPC returned above")
            };
            match socket.send_to(frame, target) {
                Ok(_) => {
                    self.stats.frames_sent += 1;
                    return Ok(());
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    self.set_mode(SocketMode::Blocking(Duration::from_millis(100)))?;
                }
                Err(e) if e.kind() == ErrorKind::ConnectionRefused => {}
                Err(e) if e.raw_os_error() == Some(NO_BUFFER_SPACE_ERRNO) => {
                    self.stats.send_drops += 1;
                    return Ok(());
                }
                // No route to that broker (yet): lost, retransmission tries again.
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(NETWORK_UNREACHABLE_ERRNO | HOST_UNREACHABLE_ERRNO)
                    ) =>
                {
                    self.stats.send_drops += 1;
                    return Ok(());
                }
                Err(e) => return Err(e.into()),
            }
        }
        self.stats.send_drops += 1;
        Ok(())
    }

    fn send_ipc(&mut self, frame: &[u8]) -> Result<(), ClientError> {
        let Medium::Ipc(link) = &mut self.medium else {
            unreachable!("called for IPC only")
        };
        let Some(session) = link.session(&mut self.stats) else {
            self.stats.send_drops += 1;
            return Ok(());
        };
        match session.try_send_frame(frame) {
            Ok(true) => self.stats.frames_sent += 1,
            Ok(false) => self.stats.send_drops += 1,
            Err(error) if error.is_ipc_disconnect() => {
                self.stats.send_drops += 1;
                link.lost();
            }
            Err(error) => return Err(error),
        }
        Ok(())
    }

    /// Receives one frame into the receive buffer: `wait` of `None` or zero does not
    /// block. Returns `false` when nothing arrived (or only an ICMP "refused" did).
    pub fn recv(&mut self, wait: Option<Duration>) -> Result<bool, ClientError> {
        if let Medium::Ipc(_) = self.medium {
            self.recv_from = Some(BrokerSlot(0));
            return self.recv_ipc(wait);
        }
        #[cfg(feature = "rdma")]
        if let Medium::Rdma(link) = &mut self.medium {
            let wait = wait.unwrap_or(Duration::ZERO);
            let received = link.recv(wait, &mut self.recv_buf, &mut self.stats)?;
            self.recv_len = received.unwrap_or(0);
            self.recv_from = Some(BrokerSlot(0));
            return Ok(received.is_some());
        }
        let mode = match wait {
            Some(d) if !d.is_zero() => {
                SocketMode::Blocking(d.max(Duration::from_micros(WAIT_US_MIN)))
            }
            _ => SocketMode::NonBlocking,
        };
        self.set_mode(mode)?;
        let Medium::Udp { socket, .. } = &self.medium else {
            unreachable!("IPC returned above")
        };
        match socket.recv_from(&mut self.recv_buf) {
            Ok((n, from)) => {
                self.recv_len = n;
                self.stats.frames_received += 1;
                let from = unmapped(from);
                self.recv_from = self
                    .peers
                    .iter()
                    .position(|p| p.udp.map(unmapped) == Some(from))
                    .map(|index| BrokerSlot(index as u8));
                Ok(true)
            }
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) =>
            {
                Ok(false)
            }
            // An ICMP port unreachable from an earlier send: nobody listens (yet).
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// IPC: takes one response into the receive buffer, polling (spin, then yield, then
    /// short sleeps) until one arrives or `wait` passes.
    fn recv_ipc(&mut self, wait: Option<Duration>) -> Result<bool, ClientError> {
        let Medium::Ipc(link) = &mut self.medium else {
            unreachable!("called for IPC only")
        };
        let started = Instant::now();
        let wait = wait.unwrap_or(Duration::ZERO);
        let mut idle = IpcIdle::default();
        loop {
            if let Some(session) = link.session(&mut self.stats) {
                let recv_buf = &mut self.recv_buf;
                let mut recv_len = 0;
                let polled = session.poll_frames(1, |frame| {
                    recv_buf[..frame.len()].copy_from_slice(frame);
                    recv_len = frame.len();
                });
                match polled {
                    Ok(0) => {}
                    Ok(_) => {
                        self.recv_len = recv_len;
                        self.stats.frames_received += 1;
                        return Ok(true);
                    }
                    // What was in flight is gone; the caller retransmits on its schedule.
                    Err(error) if error.is_ipc_disconnect() => link.lost(),
                    Err(error) => return Err(error),
                }
            }
            if started.elapsed() >= wait {
                return Ok(false);
            }
            idle.idle();
        }
    }

    /// The last datagram received, decoded, and the broker it came from. `None` (and
    /// counted) when it is not a frame, not an answer, or from a sender we do not know.
    pub fn frame(&mut self) -> Option<(BrokerSlot, FrameHeader, &[u8])> {
        let Some(slot) = self.recv_from else {
            self.stats.frames_ignored += 1;
            return None;
        };
        match decode_frame(&self.recv_buf[..self.recv_len]) {
            Ok((header, payload)) if !header.opcode.is_request() => {
                self.peers[slot.0 as usize].answered = true;
                Some((slot, header, payload))
            }
            _ => {
                self.stats.frames_ignored += 1;
                None
            }
        }
    }

    fn set_mode(&mut self, mode: SocketMode) -> Result<(), ClientError> {
        let Medium::Udp {
            socket,
            mode: current,
        } = &mut self.medium
        else {
            return Ok(());
        };
        if mode == *current {
            return Ok(());
        }
        match mode {
            SocketMode::NonBlocking => socket.set_nonblocking(true)?,
            SocketMode::Blocking(timeout) => {
                if *current == SocketMode::NonBlocking {
                    socket.set_nonblocking(false)?;
                }
                socket.set_read_timeout(Some(timeout))?;
                socket.set_write_timeout(Some(timeout))?;
            }
        }
        *current = mode;
        Ok(())
    }

    /// The error for a request to broker `slot` that got no answer in time.
    pub fn no_answer(
        &self,
        slot: BrokerSlot,
        what: &str,
        tries: u32,
        started: Instant,
    ) -> ClientError {
        let peer = &self.peers[slot.0 as usize];
        if peer.answered {
            ClientError::Timeout {
                what: what.to_string(),
                broker: peer.address.clone(),
                waited_ms: started.elapsed().as_millis() as u64,
                tries,
            }
        } else {
            ClientError::NoAnswer {
                broker: peer.address.clone(),
                tries,
            }
        }
    }

    /// Sends one request to broker `slot` and retransmits it on `schedule` until the answer
    /// with its request id arrives from that broker, or the delivery timeout passes. Each
    /// transmission gets a fresh request id (so the round trip of the answered one is
    /// known); any of them may be answered. Frames answering other requests go to `other`.
    pub fn exchange(
        &mut self,
        slot: BrokerSlot,
        schedule: &RetransmitSchedule,
        what: &str,
        request: &FrameHeader,
        payload: &[u8],
        other: &mut dyn FnMut(BrokerSlot, &FrameHeader, &[u8]),
    ) -> Result<(OwnedFrame, Duration), ClientError> {
        let started = Instant::now();
        let give_up_at = schedule.give_up_at(started);
        // Request ids of this exchange are consecutive: first_id..=last_id.
        let mut first_id = 0u64;
        let mut last_id = 0u64;
        let mut sent_at: Vec<Instant> = Vec::new();
        let mut tries = 0u32;
        let mut next_send_at = started;
        let attempts_max = schedule.attempts_within_delivery_timeout();
        loop {
            let now = Instant::now();
            if now >= next_send_at && tries < attempts_max && now < give_up_at {
                let mut header = *request;
                header.request_id = self.next_request_id();
                if tries == 0 {
                    first_id = header.request_id;
                }
                last_id = header.request_id;
                self.send_frame(slot, &header, payload)?;
                sent_at.push(now);
                next_send_at = schedule.next_due(now, tries);
                tries += 1;
            }
            let now = Instant::now();
            let wake = if tries < attempts_max {
                next_send_at.min(give_up_at)
            } else {
                give_up_at
            };
            if now >= give_up_at {
                return Err(self.no_answer(slot, what, tries, started));
            }
            if !self.recv(Some(wake.saturating_duration_since(now)))? {
                continue;
            }
            let received_at = Instant::now();
            let Some((from, header, frame_payload)) = self.frame() else {
                continue;
            };
            let ours = from == slot
                && (first_id..=last_id).contains(&header.request_id)
                && first_id != 0
                && (header.opcode == Opcode::Error || answer_to(request.opcode) == header.opcode);
            if ours {
                let round_trip = received_at - sent_at[(header.request_id - first_id) as usize];
                let frame = OwnedFrame {
                    header,
                    payload: frame_payload.to_vec(),
                };
                return Ok((frame, round_trip));
            }
            other(from, &header, frame_payload);
        }
    }
}

impl Peer {
    fn udp(address: SocketAddr, target: SocketAddr) -> Peer {
        Peer {
            address: BrokerAddress::Udp(address),
            udp: Some(target),
            broker_id: 0,
            answered: false,
        }
    }

    fn single(address: BrokerAddress) -> Peer {
        Peer {
            address,
            udp: None,
            broker_id: 0,
            answered: false,
        }
    }
}

/// `address` as a socket of that family sends to it: an IPv4 address from an IPv6 socket
/// as its IPv4-mapped form.
fn in_family(address: SocketAddr, ipv6: bool) -> SocketAddr {
    match address.ip() {
        IpAddr::V4(ip) if ipv6 => SocketAddr::new(IpAddr::V6(ip.to_ipv6_mapped()), address.port()),
        _ => address,
    }
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is.
fn unmapped(address: SocketAddr) -> SocketAddr {
    match address.ip() {
        IpAddr::V6(ip) => match ip.to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), address.port()),
            None => address,
        },
        IpAddr::V4(_) => address,
    }
}

/// The opcode that answers a request opcode.
pub(crate) fn answer_to(request: Opcode) -> Opcode {
    match request {
        Opcode::Produce => Opcode::ProduceAck,
        Opcode::Fetch => Opcode::FetchData,
        Opcode::Metadata => Opcode::MetadataResponse,
        Opcode::Ping => Opcode::Pong,
        other => other,
    }
}

/// ENOBUFS on Linux: the interface queue is full; the datagram is dropped.
const NO_BUFFER_SPACE_ERRNO: i32 = 105;
/// ENETUNREACH and EHOSTUNREACH on Linux: no route to that broker (now).
const NETWORK_UNREACHABLE_ERRNO: i32 = 101;
const HOST_UNREACHABLE_ERRNO: i32 = 113;

/// How a client waits for an IPC response: spin first (the answer usually comes within
/// microseconds), then yield the core, then sleep in short naps.
#[derive(Default)]
struct IpcIdle {
    rounds: u32,
}

impl IpcIdle {
    const SPINS: u32 = 2_000;
    const YIELDS: u32 = 200;
    const NAP: Duration = Duration::from_micros(50);

    fn idle(&mut self) {
        self.rounds = self.rounds.saturating_add(1);
        if self.rounds <= Self::SPINS {
            std::hint::spin_loop();
        } else if self.rounds <= Self::SPINS + Self::YIELDS {
            std::thread::yield_now();
        } else {
            std::thread::sleep(Self::NAP);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn udp_transport(broker: SocketAddr) -> Transport {
        Transport::open(&ClientConfig {
            broker,
            bind: Some("127.0.0.1:0".parse().unwrap()),
            ..ClientConfig::default()
        })
        .unwrap()
    }

    /// One socket reaches every broker; each answer is told apart by who sent it, and a
    /// datagram from a sender that is not one of our brokers is ignored.
    #[test]
    fn one_socket_sends_to_each_broker_and_knows_who_answered() {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        let stranger = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut transport = udp_transport(a.local_addr().unwrap());
        let slot_b = transport.slot_for(2, b.local_addr().unwrap()).unwrap();
        assert_eq!(slot_b, BrokerSlot(1));
        let ping = FrameHeader::new(Opcode::Ping, 5, 0, 0);
        transport.send_frame(slot_b, &ping, &[]).unwrap();
        let mut buf = [0u8; 64];
        let (n, client) = b.recv_from(&mut buf).unwrap();
        assert_eq!(decode_frame(&buf[..n]).unwrap().0.request_id, 5);
        let mut pong = [0u8; FRAME_HEADER_BYTES];
        FrameHeader::new(Opcode::Pong, 5, 0, 0).encode(&mut pong);
        stranger.send_to(&pong, client).unwrap();
        b.send_to(&pong, client).unwrap();
        let wait = Some(Duration::from_secs(5));
        assert!(transport.recv(wait).unwrap());
        assert!(transport.frame().is_none(), "not from a broker of ours");
        assert!(transport.recv(wait).unwrap());
        let (from, header, _) = transport.frame().unwrap();
        assert_eq!((from, header.request_id), (slot_b, 5));
        assert_eq!(transport.stats.frames_ignored, 1);
    }

    #[test]
    fn brokers_are_known_by_id_then_address_and_bounded() {
        let mut transport = udp_transport("127.0.0.1:9000".parse().unwrap());
        transport.set_broker_id(BrokerSlot(0), 1);
        // Broker 1 advertises another address than the bootstrap one: the same broker.
        let elsewhere: SocketAddr = "127.0.0.2:9190".parse().unwrap();
        assert_eq!(transport.slot_for(1, elsewhere), Some(BrokerSlot(0)));
        let two: SocketAddr = "127.0.0.3:9190".parse().unwrap();
        assert_eq!(transport.slot_for(2, two), Some(BrokerSlot(1)));
        assert_eq!(
            transport.slot_for(0, two),
            Some(BrokerSlot(1)),
            "by address"
        );
        for port in 0..(BROKERS_MAX as u16 - 2) {
            let address = SocketAddr::from(([127, 0, 1, 1], 10_000 + port));
            assert!(transport.slot_for(0, address).is_some());
        }
        assert_eq!(transport.slots().count(), BROKERS_MAX);
        let one_more: SocketAddr = "127.0.2.1:9190".parse().unwrap();
        assert_eq!(
            transport.slot_for(0, one_more),
            None,
            "at most {BROKERS_MAX}"
        );
        assert_eq!(
            unmapped(in_family("10.0.0.1:9190".parse().unwrap(), true)),
            "10.0.0.1:9190".parse().unwrap()
        );
    }
}
