//! One kernel UDP socket to one broker: frames out, frames in, request ids, and the
//! blocking request/answer exchange used for Metadata and Ping.

use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use precursor_protocol::frame::{
    decode_frame, FrameHeader, Opcode, FRAME_BYTES_MAX, FRAME_HEADER_BYTES,
};

use crate::retransmit::RetransmitSchedule;
use crate::{ClientConfig, ClientError};

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
    /// Sends the kernel refused for lack of buffer (the request will be retransmitted).
    pub send_drops: u64,
}

pub(crate) struct Transport {
    socket: UdpSocket,
    broker: SocketAddr,
    mode: SocketMode,
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
        Ok(Transport {
            socket,
            broker: config.broker,
            mode: SocketMode::NonBlocking,
            // Start request ids away from zero so a zeroed frame never matches a request.
            next_request_id: 1,
            send_buf: vec![0; FRAME_BYTES_MAX],
            recv_buf: vec![0; RECV_BUFFER_BYTES],
            recv_len: 0,
            answered: false,
            stats: TransportStats::default(),
        })
    }

    pub fn broker(&self) -> SocketAddr {
        self.broker
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
    /// from an earlier datagram) count as a lost datagram: retransmission covers it.
    pub fn send_raw(&mut self, frame: &[u8]) -> Result<(), ClientError> {
        debug_assert!(frame.len() >= FRAME_HEADER_BYTES);
        // Bounded: a refusal from an old ICMP error is reported once, so two tries suffice
        // for it; a full socket buffer switches the socket to blocking for the second try.
        for _ in 0..2 {
            match self.socket.send(frame) {
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

    /// Receives one datagram into the receive buffer: `wait` of `None` or zero does not
    /// block. Returns `false` when nothing arrived (or only an ICMP "refused" did).
    pub fn recv(&mut self, wait: Option<Duration>) -> Result<bool, ClientError> {
        let mode = match wait {
            Some(d) if !d.is_zero() => {
                SocketMode::Blocking(d.max(Duration::from_micros(WAIT_US_MIN)))
            }
            _ => SocketMode::NonBlocking,
        };
        self.set_mode(mode)?;
        match self.socket.recv(&mut self.recv_buf) {
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
        if mode == self.mode {
            return Ok(());
        }
        match mode {
            SocketMode::NonBlocking => self.socket.set_nonblocking(true)?,
            SocketMode::Blocking(timeout) => {
                if self.mode == SocketMode::NonBlocking {
                    self.socket.set_nonblocking(false)?;
                }
                self.socket.set_read_timeout(Some(timeout))?;
                self.socket.set_write_timeout(Some(timeout))?;
            }
        }
        self.mode = mode;
        Ok(())
    }

    /// The error for a request that got no answer in time.
    pub fn no_answer(&self, what: &str, tries: u32, started: Instant) -> ClientError {
        if self.answered {
            ClientError::Timeout {
                what: what.to_string(),
                broker: self.broker,
                waited_ms: started.elapsed().as_millis() as u64,
                tries,
            }
        } else {
            ClientError::NoAnswer {
                broker: self.broker,
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
