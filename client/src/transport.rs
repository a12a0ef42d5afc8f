//! One way to one broker — a kernel UDP socket, or an IPC channel in shared memory:
//! frames out, frames in, request ids, and the blocking request/answer exchange used for
//! Metadata and Ping. Above it, producer and consumer do not know which it is: both lose
//! nothing silently (UDP may drop a datagram, a lost IPC channel drops what was in it),
//! and both are covered by retransmission and idempotence.

use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
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
    broker: BrokerAddress,
    next_request_id: u64,
    send_buf: Vec<u8>,
    recv_buf: Vec<u8>,
    recv_len: usize,
    /// Whether the broker ever answered: separates "nobody there" from "slow to ack".
    pub answered: bool,
    pub stats: TransportStats,
}

/// A received frame, copied out of the transport's buffer (used on the slow paths only).
pub(crate) struct OwnedFrame {
    pub header: FrameHeader,
    pub payload: Vec<u8>,
}

impl Transport {
    pub fn open(config: &ClientConfig) -> Result<Transport, ClientError> {
        let (medium, broker, recv_bytes) = match &config.transport {
            TransportKind::Udp => {
                let bind = config.bind.unwrap_or_else(|| {
                    if config.broker.is_ipv4() {
                        SocketAddr::from(([0, 0, 0, 0], 0))
                    } else {
                        SocketAddr::from(([0u16; 8], 0))
                    }
                });
                let socket = UdpSocket::bind(bind)?;
                socket.connect(config.broker)?;
                socket.set_nonblocking(true)?;
                let medium = Medium::Udp {
                    socket,
                    mode: SocketMode::NonBlocking,
                };
                (medium, BrokerAddress::Udp(config.broker), RECV_BUFFER_BYTES)
            }
            TransportKind::Ipc(ipc) => {
                let session = IpcSession::connect(ipc)?;
                let bytes = session.frame_bytes_max().max(RECV_BUFFER_BYTES);
                let link = IpcLink {
                    session: Some(session),
                    config: ipc.clone(),
                    next_attempt_at: Instant::now(),
                };
                (
                    Medium::Ipc(Box::new(link)),
                    BrokerAddress::Ipc(ipc.dir.clone()),
                    bytes,
                )
            }
            #[cfg(feature = "rdma")]
            TransportKind::Rdma(rdma) => {
                let link = crate::rdma::RdmaLink::connect(rdma)?;
                let bytes = link.frame_bytes_max().max(RECV_BUFFER_BYTES);
                (
                    Medium::Rdma(Box::new(link)),
                    BrokerAddress::Rdma(rdma.broker),
                    bytes,
                )
            }
        };
        Ok(Transport {
            medium,
            broker,
            // Start request ids away from zero so a zeroed frame never matches a request.
            next_request_id: 1,
            send_buf: vec![0; FRAME_BYTES_MAX],
            recv_buf: vec![0; recv_bytes],
            recv_len: 0,
            answered: false,
            stats: TransportStats::default(),
        })
    }

    pub fn broker(&self) -> BrokerAddress {
        self.broker.clone()
    }

    pub fn next_request_id(&mut self) -> u64 {
        let id = self.next_request_id;
        self.next_request_id = self.next_request_id.wrapping_add(1).max(1);
        id
    }

    /// Encodes header + payload into the send buffer and sends it.
    pub fn send_frame(&mut self, header: &FrameHeader, payload: &[u8]) -> Result<(), ClientError> {
        let total = FRAME_HEADER_BYTES + payload.len();
        if self.send_buf.len() < total {
            self.send_buf.resize(total, 0);
        }
        header.encode(&mut self.send_buf[..FRAME_HEADER_BYTES]);
        self.send_buf[FRAME_HEADER_BYTES..total].copy_from_slice(payload);
        let frame = std::mem::take(&mut self.send_buf);
        let result = self.send_raw(&frame[..total]);
        self.send_buf = frame;
        result
    }

    /// Sends an already encoded frame. Transient refusals (no buffer, an ICMP error left
    /// from an earlier datagram, a full IPC ring, a lost IPC channel) count as a lost
    /// frame: retransmission covers it.
    pub fn send_raw(&mut self, frame: &[u8]) -> Result<(), ClientError> {
        debug_assert!(frame.len() >= FRAME_HEADER_BYTES);
        if let Medium::Ipc(_) = self.medium {
            return self.send_ipc(frame);
        }
        #[cfg(feature = "rdma")]
        if let Medium::Rdma(link) = &mut self.medium {
            return link.send(frame, &mut self.stats);
        }
        // Bounded: a refusal from an old ICMP error is reported once, so two tries suffice
        // for it; a full socket buffer switches the socket to blocking for the second try.
        for _ in 0..2 {
            let Medium::Udp { socket, .. } = &self.medium else {
                unreachable!("IPC returned above")
            };
            match socket.send(frame) {
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
            return self.recv_ipc(wait);
        }
        #[cfg(feature = "rdma")]
        if let Medium::Rdma(link) = &mut self.medium {
            let wait = wait.unwrap_or(Duration::ZERO);
            let received = link.recv(wait, &mut self.recv_buf, &mut self.stats)?;
            self.recv_len = received.unwrap_or(0);
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
        match socket.recv(&mut self.recv_buf) {
            Ok(n) => {
                self.recv_len = n;
                self.stats.frames_received += 1;
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

    /// The last datagram received, decoded. `None` (and counted) when it is not a frame.
    pub fn frame(&mut self) -> Option<(FrameHeader, &[u8])> {
        match decode_frame(&self.recv_buf[..self.recv_len]) {
            Ok((header, payload)) if !header.opcode.is_request() => {
                self.answered = true;
                Some((header, payload))
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

    /// The error for a request that got no answer in time.
    pub fn no_answer(&self, what: &str, tries: u32, started: Instant) -> ClientError {
        if self.answered {
            ClientError::Timeout {
                what: what.to_string(),
                broker: self.broker.clone(),
                waited_ms: started.elapsed().as_millis() as u64,
                tries,
            }
        } else {
            ClientError::NoAnswer {
                broker: self.broker.clone(),
                tries,
            }
        }
    }

    /// Sends one request and retransmits it on `schedule` until the answer with its request
    /// id arrives, or the delivery timeout passes. Each transmission gets a fresh request id
    /// (so the round trip of the answered one is known); any of them may be answered.
    /// Frames answering other requests go to `other`.
    pub fn exchange(
        &mut self,
        schedule: &RetransmitSchedule,
        what: &str,
        request: &FrameHeader,
        payload: &[u8],
        other: &mut dyn FnMut(&FrameHeader, &[u8]),
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
                self.send_frame(&header, payload)?;
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
                return Err(self.no_answer(what, tries, started));
            }
            if !self.recv(Some(wake.saturating_duration_since(now)))? {
                continue;
            }
            let received_at = Instant::now();
            let Some((header, frame_payload)) = self.frame() else {
                continue;
            };
            let ours = (first_id..=last_id).contains(&header.request_id)
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
            other(&header, frame_payload);
        }
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
