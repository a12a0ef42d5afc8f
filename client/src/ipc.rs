//! The IPC transport's client end: one channel of the data plane's `<cnc_dir>/ipc` file, a
//! request ring written in place and a response ring read in place, with no system call on
//! either side once connected.
//!
//! [`IpcSession`] is the frame-level API (the Kafka gateway uses it directly); the producer
//! and the consumer use it through the crate's transport with `ClientConfig::transport`
//! set to [`TransportKind::Ipc`](crate::TransportKind).
//!
//! Liveness both ways: every poll moves this client's keepalive count (the data plane takes
//! back a channel whose count stops for its `ipc.client_timeout_ms`), and a poll that finds
//! nothing checks, at most every [`LIVENESS_CHECK_INTERVAL`], that the data plane's
//! heartbeat is fresh. A lost channel or a stopped data plane is a clear error; the
//! producer and consumer then claim a new channel (a restarted data plane's) by themselves.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use precursor_protocol::frame::{decode_frame, FrameHeader, Opcode, FRAME_HEADER_BYTES};
use precursor_shm::ipc::{ClientChannel, IpcError, RECORD_KIND_FRAME};

use crate::ClientError;

/// How often an idle poll looks at the data plane's heartbeat.
pub const LIVENESS_CHECK_INTERVAL: Duration = Duration::from_millis(100);
/// Responses one [`IpcSession::poll`] hands out at most.
pub const RESPONSES_PER_POLL_MAX: usize = 256;

/// How to reach the data plane over IPC.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpcConfig {
    /// The data plane's CnC directory (`node.cnc_dir`; default
    /// `/dev/shm/precursor-<file_prefix>`), where its `ipc` file is.
    pub dir: PathBuf,
    /// How long connecting waits for the data plane to accept a channel.
    pub accept_timeout_ms: u64,
    /// A data plane whose heartbeat is older than this is presumed stopped.
    pub dataplane_timeout_ms: u64,
}

impl IpcConfig {
    pub fn new(dir: impl Into<PathBuf>) -> IpcConfig {
        IpcConfig {
            dir: dir.into(),
            accept_timeout_ms: 2_000,
            dataplane_timeout_ms: 2_000,
        }
    }
}

/// One IPC channel to the data plane, at the level of native frames.
pub struct IpcSession {
    config: IpcConfig,
    channel: ClientChannel,
    next_request_id: u64,
    last_liveness_check: Instant,
}

impl std::fmt::Debug for IpcSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IpcSession")
            .field("dir", &self.config.dir)
            .field("channel", &self.channel.channel())
            .field("generation", &self.channel.generation())
            .finish()
    }
}

impl IpcSession {
    /// Claims a channel and waits for the data plane to accept it (blocking, with
    /// syscalls: connection set-up only).
    pub fn connect(config: &IpcConfig) -> Result<IpcSession, ClientError> {
        let timeout = Duration::from_millis(config.accept_timeout_ms);
        let channel = ClientChannel::claim(&config.dir, timeout)
            .map_err(|error| ipc_error(&config.dir, error))?;
        Ok(IpcSession {
            config: config.clone(),
            channel,
            // Away from zero, so a zeroed frame never matches a request.
            next_request_id: 1,
            last_liveness_check: Instant::now(),
        })
    }

    /// Gives up this channel and claims a new one (after [`ClientError::IpcChannelLost`]
    /// or [`ClientError::DataplaneStopped`]). Requests in flight on the old one are lost.
    pub fn reconnect(&mut self) -> Result<(), ClientError> {
        let fresh = IpcSession::connect(&self.config)?;
        let next_request_id = self.next_request_id;
        *self = fresh;
        self.next_request_id = next_request_id;
        Ok(())
    }

    pub fn config(&self) -> &IpcConfig {
        &self.config
    }

    /// The largest frame (header included) either ring carries.
    pub fn frame_bytes_max(&self) -> usize {
        self.channel.frame_bytes_max()
    }

    /// A fresh request id (never 0).
    pub fn next_request_id(&mut self) -> u64 {
        let id = self.next_request_id;
        self.next_request_id = self.next_request_id.wrapping_add(1).max(1);
        id
    }

    /// Queues one request frame built from its parts; its request id, or `None` when the
    /// request ring is full (the data plane is behind: poll, then retry).
    pub fn try_send(
        &mut self,
        opcode: Opcode,
        flags: u16,
        partition: u32,
        payload: &[u8],
    ) -> Result<Option<u64>, ClientError> {
        let request_id = self.next_request_id();
        let mut header = FrameHeader::new(opcode, request_id, partition, payload.len());
        header.flags = flags;
        let sent = self.try_send_with(FRAME_HEADER_BYTES + payload.len(), |frame| {
            header.encode(&mut frame[..FRAME_HEADER_BYTES]);
            frame[FRAME_HEADER_BYTES..].copy_from_slice(payload);
        })?;
        Ok(sent.then_some(request_id))
    }

    /// Queues one already encoded frame; `false` when the request ring is full.
    pub fn try_send_frame(&mut self, frame: &[u8]) -> Result<bool, ClientError> {
        self.try_send_with(frame.len(), |room| room.copy_from_slice(frame))
    }

    /// Queues a frame of `bytes` bytes that `write` builds in place in the ring.
    pub fn try_send_with(
        &mut self,
        bytes: usize,
        write: impl FnOnce(&mut [u8]),
    ) -> Result<bool, ClientError> {
        if bytes < FRAME_HEADER_BYTES || bytes > self.frame_bytes_max() {
            return Err(ClientError::MessageTooLarge {
                bytes,
                limit_bytes: self.frame_bytes_max(),
            });
        }
        self.check_held()?;
        let Some(room) = self.channel.requests.claim(bytes) else {
            return Ok(false);
        };
        write(room);
        self.channel.requests.commit(RECORD_KIND_FRAME, bytes);
        Ok(true)
    }

    /// Calls `f(header, payload)` for every response that arrived, in order (at most
    /// [`RESPONSES_PER_POLL_MAX`]), each read in place. Returns how many.
    pub fn poll(&mut self, mut f: impl FnMut(&FrameHeader, &[u8])) -> Result<usize, ClientError> {
        self.channel.keepalive();
        let read = self
            .channel
            .responses
            .read(RESPONSES_PER_POLL_MAX, |kind, frame| {
                if kind == RECORD_KIND_FRAME {
                    if let Ok((header, payload)) = decode_frame(frame) {
                        f(&header, payload);
                    }
                }
                true
            })
            .map_err(|corrupt| ClientError::Protocol {
                detail: format!("IPC response ring: {corrupt}"),
            })?;
        if read == 0 {
            self.check_liveness()?;
        }
        Ok(read)
    }

    /// Like [`poll`](Self::poll) for at most `responses_max` whole frames, undecoded.
    pub(crate) fn poll_frames(
        &mut self,
        responses_max: usize,
        mut f: impl FnMut(&[u8]),
    ) -> Result<usize, ClientError> {
        self.channel.keepalive();
        let read = self
            .channel
            .responses
            .read(responses_max, |kind, frame| {
                if kind == RECORD_KIND_FRAME {
                    f(frame);
                }
                true
            })
            .map_err(|corrupt| ClientError::Protocol {
                detail: format!("IPC response ring: {corrupt}"),
            })?;
        if read == 0 {
            self.check_liveness()?;
        }
        Ok(read)
    }

    fn check_held(&self) -> Result<(), ClientError> {
        if self.channel.is_held() {
            return Ok(());
        }
        Err(ClientError::IpcChannelLost {
            channel: self.channel.channel(),
            dir: self.config.dir.clone(),
        })
    }

    /// At most every LIVENESS_CHECK_INTERVAL: still our channel, data plane still beating.
    fn check_liveness(&mut self) -> Result<(), ClientError> {
        let now = Instant::now();
        if now.duration_since(self.last_liveness_check) < LIVENESS_CHECK_INTERVAL {
            return Ok(());
        }
        self.last_liveness_check = now;
        self.check_held()?;
        let age_ms = wall_clock_ms().saturating_sub(self.channel.dataplane_heartbeat_ms());
        if age_ms > self.config.dataplane_timeout_ms || self.channel.is_replaced() {
            return Err(ClientError::DataplaneStopped {
                pid: self.channel.dataplane_pid(),
                heartbeat_age_ms: age_ms,
                dir: self.config.dir.clone(),
            });
        }
        Ok(())
    }
}

fn wall_clock_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn ipc_error(dir: &Path, error: IpcError) -> ClientError {
    ClientError::IpcUnavailable {
        dir: dir.to_path_buf(),
        reason: error.to_string(),
    }
}
