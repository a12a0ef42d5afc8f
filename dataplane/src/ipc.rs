//! The IPC transport: co-located clients' channels in `<cnc_dir>/ipc` (see
//! [`precursor_shm::ipc`]), polled by the lcore like a NIC queue.
//!
//! Every iteration, each open channel's request ring is read in place — at most
//! [`REQUESTS_PER_CHANNEL_MAX`] frames, and only while the response ring has room for the
//! largest answer — and each frame is served by the [`Service`] exactly like a UDP datagram;
//! its answer is rendered straight into the response ring. On the drain timer, claimed
//! channels are accepted, closed ones freed, and a channel whose client's keepalive has not
//! moved for `client_timeout` is taken back (the client is presumed dead). No system call,
//! lock or allocation on any of these paths.

use std::time::{Duration, Instant};

use crate::counters::IpcClose;
use crate::service::{Reply, ReplyTo, Service};
use precursor_protocol::frame::{FrameHeader, FRAME_HEADER_BYTES};
use precursor_shm::ipc::{
    ChannelState, DataplaneChannel, DataplaneIpc, IpcLayout, RECORD_KIND_FRAME,
};
use precursor_shm::ShmError;
use std::path::Path;

/// Frames one channel may have served per iteration: fairness between channels, and a
/// bound on the iteration's length.
pub const REQUESTS_PER_CHANNEL_MAX: usize = 64;

struct OpenChannel {
    ends: DataplaneChannel,
    /// The client's keepalive count when last seen moving, and when.
    keepalive: u64,
    keepalive_moved_at: Instant,
}

pub struct IpcTransport {
    file: DataplaneIpc,
    /// By channel index; `None` while free.
    channels: Vec<Option<OpenChannel>>,
    frame_bytes_max: usize,
    client_timeout: Duration,
}

impl IpcTransport {
    /// Creates `<dir>/ipc` with `layout` (start-up: allocates, makes syscalls).
    pub fn create(
        dir: &Path,
        layout: IpcLayout,
        client_timeout: Duration,
    ) -> Result<IpcTransport, ShmError> {
        let client_timeout_ms = client_timeout.as_millis().min(u32::MAX as u128) as u32;
        let file = DataplaneIpc::create(dir, layout, client_timeout_ms)?;
        Ok(IpcTransport {
            channels: (0..layout.channels).map(|_| None).collect(),
            frame_bytes_max: layout.frame_bytes_max(),
            file,
            client_timeout,
        })
    }

    /// The largest frame of this transport.
    pub fn frame_bytes_max(&self) -> usize {
        self.frame_bytes_max
    }

    pub fn path(&self) -> &Path {
        self.file.path()
    }

    /// Serves what the open channels' request rings hold. Returns the frames served.
    #[inline]
    /// `clock` gives the wall-clock time in ms; it is read once, and only when a channel
    /// holds a request (an idle iteration costs one load per open channel).
    pub fn poll(&mut self, service: &mut Service, clock: fn() -> i64) -> usize {
        let frame_bytes_max = self.frame_bytes_max;
        let mut served = 0;
        let mut now_ms = None;
        for (index, slot) in self.channels.iter_mut().enumerate() {
            let Some(open) = slot else {
                continue;
            };
            if open.ends.requests.is_empty() {
                continue;
            }
            let now_ms = *now_ms.get_or_insert_with(clock);
            let reply_to = ReplyTo::Ipc {
                channel: index as u16,
                generation: open.ends.generation,
            };
            let DataplaneChannel {
                requests,
                responses,
                ..
            } = &mut open.ends;
            let read = requests.read(REQUESTS_PER_CHANNEL_MAX, |kind, frame| {
                // Back-pressure: a request is taken only when its answer surely fits.
                if !responses.has_room_for(frame_bytes_max) {
                    return false;
                }
                service.counters.ipc_requests += 1;
                if kind != RECORD_KIND_FRAME {
                    return true;
                }
                if let Some((header, reply)) =
                    service.serve_frame(reply_to, frame, frame_bytes_max, now_ms)
                {
                    let written = write_reply(service, responses, frame_bytes_max, &header, reply);
                    debug_assert!(written, "room was checked");
                }
                true
            });
            match read {
                Ok(_) if responses.consumer_broke_protocol() => {
                    eprintln!(
                        "precursor-dataplane: IPC channel {index} (client pid {}): its response ring's consumer position is impossible; channel taken back",
                        self.file.client_pid(index as u32)
                    );
                    *slot = None;
                    close(&self.file, index as u32, IpcClose::Corrupt, service);
                }
                Ok(frames) => served += frames,
                Err(corrupt) => {
                    eprintln!(
                        "precursor-dataplane: IPC channel {index} (client pid {}): {corrupt}; channel taken back",
                        self.file.client_pid(index as u32)
                    );
                    *slot = None;
                    close(&self.file, index as u32, IpcClose::Corrupt, service);
                }
            }
        }
        served
    }

    /// Sends an answer given later (a durable ack). Dropped, and counted, when the channel
    /// is gone or its response ring is full: the client retransmits.
    pub fn deliver(
        &mut self,
        service: &mut Service,
        channel: u16,
        generation: u32,
        request: &FrameHeader,
        reply: Reply,
    ) {
        let frame_bytes_max = self.frame_bytes_max;
        let open = self
            .channels
            .get_mut(channel as usize)
            .and_then(Option::as_mut)
            .filter(|open| open.ends.generation == generation);
        let delivered = open.is_some_and(|open| {
            write_reply(
                service,
                &mut open.ends.responses,
                frame_bytes_max,
                request,
                reply,
            )
        });
        if !delivered {
            service.counters.ipc_replies_dropped += 1;
        }
    }

    /// The drain timer: accepts claimed channels, frees closed ones, takes back the
    /// channels of clients whose keepalive stopped. Returns the channels changed.
    pub fn maintain(&mut self, service: &mut Service, now: Instant, now_ms: u64) -> usize {
        self.file.heartbeat(now_ms);
        let mut changed = 0;
        for (index, slot) in self.channels.iter_mut().enumerate() {
            let channel = index as u32;
            match (self.file.state(channel), slot.as_mut()) {
                (ChannelState::Claimed, None) => {
                    let ends = self.file.accept(channel);
                    *slot = Some(OpenChannel {
                        ends,
                        keepalive: self.file.keepalive(channel),
                        keepalive_moved_at: now,
                    });
                    service.counters.ipc_channels_opened += 1;
                    changed += 1;
                }
                (ChannelState::Closing, _) => {
                    *slot = None;
                    close(&self.file, channel, IpcClose::Closed, service);
                    changed += 1;
                }
                (ChannelState::Active, Some(open)) => {
                    let keepalive = self.file.keepalive(channel);
                    if keepalive != open.keepalive {
                        open.keepalive = keepalive;
                        open.keepalive_moved_at = now;
                    } else if now.duration_since(open.keepalive_moved_at) >= self.client_timeout {
                        eprintln!(
                            "precursor-dataplane: IPC channel {index} (client pid {}): no keepalive for {} ms; channel taken back",
                            self.file.client_pid(channel),
                            self.client_timeout.as_millis()
                        );
                        *slot = None;
                        close(&self.file, channel, IpcClose::Timeout, service);
                        changed += 1;
                    }
                }
                // Active in the file but not open here: left by nobody this data plane
                // accepted (impossible: the file is ours from creation). Claimed while
                // open: the client broke the protocol; Free: nothing to do.
                (ChannelState::Active, None) | (ChannelState::Claimed, Some(_)) => {
                    *slot = None;
                    close(&self.file, channel, IpcClose::Corrupt, service);
                    changed += 1;
                }
                (ChannelState::Free, _) => {}
            }
        }
        service.counters.ipc_channels_active =
            self.channels.iter().filter(|c| c.is_some()).count() as u64;
        changed
    }
}

/// Frees `channel` and forgets the answers parked for it.
fn close(file: &DataplaneIpc, channel: u32, reason: IpcClose, service: &mut Service) {
    file.free(channel);
    service.counters.ipc_channels_closed[reason as usize] += 1;
    service.forget_answers_to(
        |to| matches!(to, ReplyTo::Ipc { channel: c, .. } if u32::from(*c) == channel),
    );
}

/// Renders `reply` into the response ring; `false` when the ring has no room for it.
fn write_reply(
    service: &mut Service,
    responses: &mut precursor_shm::frame_ring::FrameRingProducer,
    frame_bytes_max: usize,
    request: &FrameHeader,
    reply: Reply,
) -> bool {
    if reply == Reply::Nothing {
        return true;
    }
    let reserved = FRAME_HEADER_BYTES + reply.payload_bytes_max(frame_bytes_max);
    let Some(room) = responses.claim(reserved) else {
        return false;
    };
    let header = service
        .render(reply, request, &mut room[FRAME_HEADER_BYTES..])
        .expect("a reply other than Nothing renders a frame");
    header.encode(&mut room[..FRAME_HEADER_BYTES]);
    responses.commit(
        RECORD_KIND_FRAME,
        FRAME_HEADER_BYTES + header.length as usize,
    );
    true
}
