//! The IPC file `<dir>/ipc`: channels through which co-located clients reach the data plane
//! with no system call on either side (Aeron IPC). Each channel is a request ring (client ->
//! data plane) and a response ring (data plane -> client) of native frames, one frame per
//! record (see [`crate::frame_ring`]).
//!
//! ```text
//!  offset  field                                          written by / when
//!  0       +---------------------------------------------+
//!          | magic u64  "PRECIPC\0" (little endian)       | data plane, LAST, Release
//!  8       | layout_version u32 | writer_pid u32          | data plane, at creation
//!  16      | writer_start_ns u64 (since UNIX epoch)       |
//!  24      | channel_count u32 | ring_capacity u32 (B)    |
//!  32      | channel_stride u64                           |
//!  40      | frame_bytes_max u32 | client_timeout_ms u32  |
//!  48      | layout_bytes u64                             |
//!  64      +---------------------------------------------+
//!          | heartbeat_ms u64 (ms since UNIX epoch)       | data plane, every drain tick
//!  4096    +---------------------------------------------+ <- channel 0 (page aligned)
//!          | state u32 | generation u32                   | see below
//!          | client_pid u32                               | client, when claiming
//!  +64     | keepalive u64 (a count)                      | client, as it polls
//!  +128    | request ring  frame_ring_bytes(capacity)     | producer: client
//!          | response ring frame_ring_bytes(capacity)     | producer: data plane
//!          +---------------------------------------------+ <- channel 1 (+ channel_stride)
//! ```
//!
//! A channel's life: `FREE` -> the client claims it with a compare-and-swap (`CLAIMED`) ->
//! the data plane, on its drain tick, empties both rings, bumps the generation and stores
//! `ACTIVE` (Release) -> the client attaches its ring ends. The client gives it back with
//! `CLOSING`, which the data plane turns into `FREE`. A client whose keepalive count stops
//! moving for `client_timeout_ms` is presumed dead: the data plane frees its channel. A
//! client that finds its channel no longer `ACTIVE` with its generation must claim anew.
//!
//! The data plane creates `ipc.tmp` and renames it over `ipc`, so a client still mapping a
//! previous data plane's file keeps valid memory; it notices the stale heartbeat.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::cnc::{create_atomically, file_replaced, now_ms, now_ns, open_checked, CncError};
use crate::frame_ring::{
    frame_ring_bytes, frame_ring_capacity_valid, record_body_bytes_max, FrameRingConsumer,
    FrameRingProducer,
};
use crate::ring::CACHE_LINE_BYTES;
use crate::{round_up_to_page, SharedMapping, ShmError};

/// Layout version of the `ipc` file; bump on any change.
pub const IPC_LAYOUT_VERSION: u32 = 1;
/// Name of the file in the node's CnC directory.
pub const IPC_FILE_NAME: &str = "ipc";
/// Name of the file being built before its rename over [`IPC_FILE_NAME`].
pub const IPC_TMP_FILE_NAME: &str = "ipc.tmp";
/// `b"PRECIPC\0"` as a little-endian u64.
pub const IPC_MAGIC: u64 = u64::from_le_bytes(*b"PRECIPC\0");
/// Bytes before channel 0.
pub const IPC_HEADER_BYTES: usize = 4096;
/// Bytes of a channel's header, before its request ring.
pub const CHANNEL_HEADER_BYTES: usize = 2 * CACHE_LINE_BYTES;
/// Most channels an `ipc` file has.
pub const IPC_CHANNELS_MAX: u32 = 256;
/// The record kind of a native frame.
pub const RECORD_KIND_FRAME: u32 = 1;

const VERSION_OFFSET: usize = 8;
const PID_OFFSET: usize = 12;
const START_NS_OFFSET: usize = 16;
const CHANNEL_COUNT_OFFSET: usize = 24;
const RING_CAPACITY_OFFSET: usize = 28;
const CHANNEL_STRIDE_OFFSET: usize = 32;
const FRAME_BYTES_MAX_OFFSET: usize = 40;
const CLIENT_TIMEOUT_MS_OFFSET: usize = 44;
const LAYOUT_BYTES_OFFSET: usize = 48;
const HEARTBEAT_MS_OFFSET: usize = CACHE_LINE_BYTES;

const STATE_OFFSET: usize = 0;
const GENERATION_OFFSET: usize = 4;
const CLIENT_PID_OFFSET: usize = 8;
const KEEPALIVE_OFFSET: usize = CACHE_LINE_BYTES;

/// A channel's state word.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum ChannelState {
    Free = 0,
    Claimed = 1,
    Active = 2,
    Closing = 3,
}

impl ChannelState {
    fn from_u32(value: u32) -> Option<ChannelState> {
        [Self::Free, Self::Claimed, Self::Active, Self::Closing]
            .into_iter()
            .find(|s| *s as u32 == value)
    }
}

/// The shape of an `ipc` file.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct IpcLayout {
    pub channels: u32,
    /// Data bytes of each ring (a power of two).
    pub ring_capacity: usize,
}

impl IpcLayout {
    /// The largest frame a ring of this layout carries (a quarter of the ring).
    pub fn frame_bytes_max(&self) -> usize {
        record_body_bytes_max(self.ring_capacity)
    }

    fn channel_stride(&self) -> usize {
        round_up_to_page(
            CHANNEL_HEADER_BYTES + 2 * frame_ring_bytes(self.ring_capacity),
            4096,
        )
    }

    fn layout_bytes(&self) -> usize {
        IPC_HEADER_BYTES + self.channels as usize * self.channel_stride()
    }

    fn channel_offset(&self, channel: u32) -> usize {
        assert!(channel < self.channels);
        IPC_HEADER_BYTES + channel as usize * self.channel_stride()
    }

    fn request_ring_offset(&self, channel: u32) -> usize {
        self.channel_offset(channel) + CHANNEL_HEADER_BYTES
    }

    fn response_ring_offset(&self, channel: u32) -> usize {
        self.request_ring_offset(channel) + frame_ring_bytes(self.ring_capacity)
    }

    fn validate(&self) -> Result<(), &'static str> {
        if self.channels == 0 || self.channels > IPC_CHANNELS_MAX {
            return Err("channels must be between 1 and 256");
        }
        if !frame_ring_capacity_valid(self.ring_capacity) {
            return Err("ring bytes must be a power of two between 4 KiB and 1 GiB");
        }
        Ok(())
    }
}

/// The data plane's ends of one channel.
#[derive(Debug)]
pub struct DataplaneChannel {
    pub requests: FrameRingConsumer,
    pub responses: FrameRingProducer,
    pub generation: u32,
}

/// The data plane's side of the `ipc` file.
#[derive(Debug)]
pub struct DataplaneIpc {
    mapping: Arc<SharedMapping>,
    layout: IpcLayout,
}

impl DataplaneIpc {
    /// Creates a fresh `<dir>/ipc`, replacing any previous file atomically.
    pub fn create(
        dir: &Path,
        layout: IpcLayout,
        client_timeout_ms: u32,
    ) -> Result<DataplaneIpc, ShmError> {
        layout.validate().map_err(|reason| ShmError::Layout {
            path: dir.join(IPC_FILE_NAME),
            reason,
        })?;
        let mapping = create_atomically(
            dir,
            IPC_TMP_FILE_NAME,
            IPC_FILE_NAME,
            layout.layout_bytes(),
            IPC_MAGIC,
            |mapping| {
                let u64_at = |offset: usize, value: u64| {
                    mapping.atomic_u64(offset).store(value, Ordering::Relaxed)
                };
                let u32_at = |offset: usize, value: u32| {
                    mapping.atomic_u32(offset).store(value, Ordering::Relaxed)
                };
                u32_at(VERSION_OFFSET, IPC_LAYOUT_VERSION);
                u32_at(PID_OFFSET, std::process::id());
                u64_at(START_NS_OFFSET, now_ns());
                u32_at(CHANNEL_COUNT_OFFSET, layout.channels);
                u32_at(RING_CAPACITY_OFFSET, layout.ring_capacity as u32);
                u64_at(CHANNEL_STRIDE_OFFSET, layout.channel_stride() as u64);
                u32_at(FRAME_BYTES_MAX_OFFSET, layout.frame_bytes_max() as u32);
                u32_at(CLIENT_TIMEOUT_MS_OFFSET, client_timeout_ms);
                u64_at(LAYOUT_BYTES_OFFSET, layout.layout_bytes() as u64);
                u64_at(HEARTBEAT_MS_OFFSET, now_ms());
            },
        )?;
        Ok(DataplaneIpc { mapping, layout })
    }

    pub fn layout(&self) -> IpcLayout {
        self.layout
    }

    pub fn path(&self) -> &Path {
        self.mapping.path()
    }

    /// Records that the data plane is alive at `now_ms` (one Relaxed store).
    #[inline]
    pub fn heartbeat(&self, now_ms: u64) {
        self.mapping
            .atomic_u64(HEARTBEAT_MS_OFFSET)
            .store(now_ms, Ordering::Relaxed);
    }

    fn word(&self, channel: u32, offset: usize) -> &AtomicU32 {
        self.mapping
            .atomic_u32(self.layout.channel_offset(channel) + offset)
    }

    /// The channel's state (a corrupt word reads as `Closing`: the channel is taken back).
    #[inline]
    pub fn state(&self, channel: u32) -> ChannelState {
        let value = self.word(channel, STATE_OFFSET).load(Ordering::Acquire);
        ChannelState::from_u32(value).unwrap_or(ChannelState::Closing)
    }

    /// The client's keepalive count.
    #[inline]
    pub fn keepalive(&self, channel: u32) -> u64 {
        self.mapping
            .atomic_u64(self.layout.channel_offset(channel) + KEEPALIVE_OFFSET)
            .load(Ordering::Relaxed)
    }

    /// The claiming client's pid (for messages).
    pub fn client_pid(&self, channel: u32) -> u32 {
        self.word(channel, CLIENT_PID_OFFSET)
            .load(Ordering::Relaxed)
    }

    /// Accepts a `Claimed` channel: empties both rings, bumps the generation, stores
    /// `Active`, and returns the data plane's ring ends.
    pub fn accept(&self, channel: u32) -> DataplaneChannel {
        assert_eq!(self.state(channel), ChannelState::Claimed);
        let capacity = self.layout.ring_capacity;
        let requests_at = self.layout.request_ring_offset(channel);
        let responses_at = self.layout.response_ring_offset(channel);
        for ring in [requests_at, responses_at] {
            self.mapping.atomic_u64(ring).store(0, Ordering::Relaxed);
            self.mapping
                .atomic_u64(ring + CACHE_LINE_BYTES)
                .store(0, Ordering::Relaxed);
        }
        let generation = self
            .word(channel, GENERATION_OFFSET)
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_add(1);
        self.word(channel, STATE_OFFSET)
            .store(ChannelState::Active as u32, Ordering::Release);
        DataplaneChannel {
            requests: FrameRingConsumer::attach(Arc::clone(&self.mapping), requests_at, capacity),
            responses: FrameRingProducer::attach(Arc::clone(&self.mapping), responses_at, capacity),
            generation,
        }
    }

    /// Frees a channel (closed by its client, or its client presumed dead). The data
    /// plane must have dropped its ring ends.
    pub fn free(&self, channel: u32) {
        self.word(channel, STATE_OFFSET)
            .store(ChannelState::Free as u32, Ordering::Release);
    }
}

/// Why a client could not get or keep a channel.
#[derive(Debug, thiserror::Error)]
pub enum IpcError {
    #[error(transparent)]
    File(#[from] CncError),
    #[error("every one of the {channels} IPC channels of {path} is in use (raise ipc.channels in the data plane's config)")]
    NoFreeChannel { path: PathBuf, channels: u32 },
    #[error("the data plane did not accept IPC channel {channel} within {waited_ms} ms (is it running? heartbeat {heartbeat_age_ms} ms old)")]
    NotAccepted {
        channel: u32,
        waited_ms: u64,
        heartbeat_age_ms: u64,
    },
}

/// A client's channel: its ring ends and the means to check that it still holds it.
#[derive(Debug)]
pub struct ClientChannel {
    mapping: Arc<SharedMapping>,
    layout: IpcLayout,
    channel: u32,
    generation: u32,
    pub requests: FrameRingProducer,
    pub responses: FrameRingConsumer,
    keepalive: u64,
}

impl ClientChannel {
    /// Maps `<dir>/ipc`, claims a free channel and waits (at most `accept_timeout`) for the
    /// data plane to accept it. Blocking and with syscalls: connection set-up only.
    pub fn claim(dir: &Path, accept_timeout: Duration) -> Result<ClientChannel, IpcError> {
        let path = dir.join(IPC_FILE_NAME);
        let mapping = open_checked(&path, IPC_MAGIC, IPC_LAYOUT_VERSION, IPC_HEADER_BYTES)?;
        let load_u32 = |offset: usize| mapping.atomic_u32(offset).load(Ordering::Relaxed);
        let layout = IpcLayout {
            channels: load_u32(CHANNEL_COUNT_OFFSET),
            ring_capacity: load_u32(RING_CAPACITY_OFFSET) as usize,
        };
        let corrupt = |reason: String| CncError::Corrupt {
            reason: format!("{}: {reason}", path.display()),
        };
        if let Err(reason) = layout.validate() {
            return Err(corrupt(reason.to_string()).into());
        }
        let stride = mapping
            .atomic_u64(CHANNEL_STRIDE_OFFSET)
            .load(Ordering::Relaxed);
        let layout_bytes = mapping
            .atomic_u64(LAYOUT_BYTES_OFFSET)
            .load(Ordering::Relaxed);
        if stride != layout.channel_stride() as u64
            || layout_bytes != layout.layout_bytes() as u64
            || mapping.len() < layout.layout_bytes()
        {
            return Err(corrupt(format!(
                "stride {stride} and size {layout_bytes} do not match {layout:?} ({} bytes mapped)",
                mapping.len()
            ))
            .into());
        }
        let word = |channel: u32, offset: usize| {
            mapping.atomic_u32(layout.channel_offset(channel) + offset)
        };
        let claimed = (0..layout.channels).find(|&channel| {
            word(channel, STATE_OFFSET)
                .compare_exchange(
                    ChannelState::Free as u32,
                    ChannelState::Claimed as u32,
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                )
                .is_ok()
        });
        let Some(channel) = claimed else {
            return Err(IpcError::NoFreeChannel {
                path,
                channels: layout.channels,
            });
        };
        word(channel, CLIENT_PID_OFFSET).store(std::process::id(), Ordering::Relaxed);
        let started = Instant::now();
        loop {
            let state = word(channel, STATE_OFFSET).load(Ordering::Acquire);
            if state == ChannelState::Active as u32 {
                break;
            }
            if started.elapsed() >= accept_timeout {
                // Give it back: whoever comes next may find a data plane that listens.
                let _ = word(channel, STATE_OFFSET).compare_exchange(
                    ChannelState::Claimed as u32,
                    ChannelState::Free as u32,
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                );
                let heartbeat = mapping
                    .atomic_u64(HEARTBEAT_MS_OFFSET)
                    .load(Ordering::Relaxed);
                return Err(IpcError::NotAccepted {
                    channel,
                    waited_ms: started.elapsed().as_millis() as u64,
                    heartbeat_age_ms: now_ms().saturating_sub(heartbeat),
                });
            }
            std::thread::sleep(Duration::from_micros(50));
        }
        let generation = word(channel, GENERATION_OFFSET).load(Ordering::Relaxed);
        let requests = FrameRingProducer::attach(
            Arc::clone(&mapping),
            layout.request_ring_offset(channel),
            layout.ring_capacity,
        );
        let responses = FrameRingConsumer::attach(
            Arc::clone(&mapping),
            layout.response_ring_offset(channel),
            layout.ring_capacity,
        );
        Ok(ClientChannel {
            mapping,
            layout,
            channel,
            generation,
            requests,
            responses,
            keepalive: 0,
        })
    }

    pub fn channel(&self) -> u32 {
        self.channel
    }

    pub fn generation(&self) -> u32 {
        self.generation
    }

    /// The largest frame either ring carries.
    pub fn frame_bytes_max(&self) -> usize {
        self.layout.frame_bytes_max()
    }

    /// Whether this client still holds the channel: `Active` with its generation (two loads).
    #[inline]
    pub fn is_held(&self) -> bool {
        let offset = self.layout.channel_offset(self.channel);
        self.mapping
            .atomic_u32(offset + STATE_OFFSET)
            .load(Ordering::Acquire)
            == ChannelState::Active as u32
            && self
                .mapping
                .atomic_u32(offset + GENERATION_OFFSET)
                .load(Ordering::Relaxed)
                == self.generation
    }

    /// Tells the data plane this client is alive (one Relaxed store of a count).
    #[inline]
    pub fn keepalive(&mut self) {
        self.keepalive += 1;
        self.mapping
            .atomic_u64(self.layout.channel_offset(self.channel) + KEEPALIVE_OFFSET)
            .store(self.keepalive, Ordering::Relaxed);
    }

    /// The data plane's last heartbeat, in ms since the UNIX epoch.
    pub fn dataplane_heartbeat_ms(&self) -> u64 {
        self.mapping
            .atomic_u64(HEARTBEAT_MS_OFFSET)
            .load(Ordering::Relaxed)
    }

    /// The data plane's pid.
    pub fn dataplane_pid(&self) -> u32 {
        self.mapping.atomic_u32(PID_OFFSET).load(Ordering::Relaxed)
    }

    /// Whether `<dir>/ipc` is another file now (a data plane restarted): a syscall, call it
    /// only once the heartbeat looks stale.
    pub fn is_replaced(&self) -> bool {
        file_replaced(&self.mapping, START_NS_OFFSET)
    }
}

impl Drop for ClientChannel {
    /// Gives the channel back (if still ours).
    fn drop(&mut self) {
        if self.is_held() {
            self.mapping
                .atomic_u32(self.layout.channel_offset(self.channel) + STATE_OFFSET)
                .store(ChannelState::Closing as u32, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LAYOUT: IpcLayout = IpcLayout {
        channels: 4,
        ring_capacity: 1 << 16,
    };

    #[test]
    fn claim_accept_talk_close_and_claim_again() {
        let dir = tempfile::tempdir().unwrap();
        let dataplane = DataplaneIpc::create(dir.path(), LAYOUT, 1000).unwrap();
        let path = dir.path().to_path_buf();
        let client = std::thread::spawn(move || {
            let mut channel = ClientChannel::claim(&path, Duration::from_secs(5)).unwrap();
            assert!(channel.is_held());
            assert!(channel.requests.try_write(RECORD_KIND_FRAME, b"request"));
            let mut answer = Vec::new();
            while answer.is_empty() {
                channel
                    .responses
                    .read(1, |_, body| {
                        answer.extend_from_slice(body);
                        true
                    })
                    .unwrap();
            }
            assert_eq!(answer, b"response");
            (channel.channel(), channel.generation())
        });
        let channel = loop {
            if let Some(c) =
                (0..LAYOUT.channels).find(|&c| dataplane.state(c) == ChannelState::Claimed)
            {
                break c;
            }
            std::thread::yield_now();
        };
        let mut ends = dataplane.accept(channel);
        assert_eq!(ends.generation, 1);
        let mut request = Vec::new();
        while request.is_empty() {
            ends.requests
                .read(1, |_, body| {
                    request.extend_from_slice(body);
                    true
                })
                .unwrap();
        }
        assert_eq!(request, b"request");
        assert!(ends.responses.try_write(RECORD_KIND_FRAME, b"response"));
        assert_eq!(client.join().unwrap(), (channel, 1));
        assert_eq!(
            dataplane.state(channel),
            ChannelState::Closing,
            "dropped client closes"
        );
        drop(ends);
        dataplane.free(channel);
        assert_eq!(dataplane.state(channel), ChannelState::Free);
    }

    #[test]
    fn no_free_channel_and_no_data_plane_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let missing = ClientChannel::claim(dir.path(), Duration::from_millis(10)).unwrap_err();
        assert!(
            missing
                .to_string()
                .contains("no data plane has started here"),
            "{missing}"
        );
        let layout = IpcLayout {
            channels: 1,
            ring_capacity: 4096,
        };
        let _dataplane = DataplaneIpc::create(dir.path(), layout, 1000).unwrap();
        let refused = ClientChannel::claim(dir.path(), Duration::from_millis(20)).unwrap_err();
        assert!(refused.to_string().contains("did not accept"), "{refused}");
        // The refused claim gave the channel back, so the next one waits for acceptance too.
        let again = ClientChannel::claim(dir.path(), Duration::from_millis(20)).unwrap_err();
        assert!(matches!(again, IpcError::NotAccepted { .. }), "{again}");
    }

    #[test]
    fn every_channel_taken_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let layout = IpcLayout {
            channels: 1,
            ring_capacity: 4096,
        };
        let dataplane = DataplaneIpc::create(dir.path(), layout, 1000).unwrap();
        let path = dir.path().to_path_buf();
        let first = std::thread::spawn(move || ClientChannel::claim(&path, Duration::from_secs(5)));
        while dataplane.state(0) != ChannelState::Claimed {
            std::thread::yield_now();
        }
        let _ends = dataplane.accept(0);
        let _first = first.join().unwrap().unwrap();
        let full = ClientChannel::claim(dir.path(), Duration::from_millis(10)).unwrap_err();
        assert!(full.to_string().contains("ipc.channels"), "{full}");
    }

    #[test]
    fn bad_layouts_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        for layout in [
            IpcLayout {
                channels: 0,
                ring_capacity: 4096,
            },
            IpcLayout {
                channels: 1,
                ring_capacity: 5000,
            },
        ] {
            assert!(DataplaneIpc::create(dir.path(), layout, 1000).is_err());
        }
    }
}
