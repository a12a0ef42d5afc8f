//! The IPC transport read by the lcore (`IpcTransport::poll` and `maintain`, serving each
//! request with the real `Service`) while a hostile client owns its side of the shared
//! file: it writes records honestly or not, garbage into its ring, lying record lengths,
//! producer positions behind, far ahead of or beyond the ring, the lcore's own consumer
//! position, the response ring's consumer position (which only it should move), and any
//! state word. The client writes through the file (`pwrite` on the tmpfs file the data
//! plane maps), as a separate process would through its own mapping.
//!
//! Checked: nothing panics, reads out of bounds or hangs (every poll is bounded: libFuzzer's
//! `-timeout` reports a poll that does not return), and a channel the client corrupted is
//! taken back rather than followed.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use precursor_dataplane::ipc::IpcTransport;
use precursor_fuzz::ServiceFixture;
use precursor_protocol::frame::{encode_frame, FrameHeader, Opcode};
use precursor_shm::frame_ring::{frame_ring_bytes, record_bytes, FRAME_RING_HEADER_BYTES};
use precursor_shm::ipc::{
    IpcLayout, CHANNEL_HEADER_BYTES, IPC_FILE_NAME, IPC_HEADER_BYTES, RECORD_KIND_FRAME,
};
use precursor_shm::ring::CACHE_LINE_BYTES;
use std::cell::RefCell;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

/// The smallest ring there is: wraps come often.
const RING_CAPACITY_BYTES: usize = 4096;
/// Client actions one input takes at most.
const ACTIONS_PER_INPUT_MAX: usize = 64;
/// Never reached in a run: channels are taken back for corruption, not for silence.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

// The channel header's words (shm/src/ipc.rs layout).
const CHANNEL_0_OFFSET: u64 = IPC_HEADER_BYTES as u64;
const STATE_OFFSET: u64 = CHANNEL_0_OFFSET;
const KEEPALIVE_OFFSET: u64 = CHANNEL_0_OFFSET + CACHE_LINE_BYTES as u64;
const STATE_CLAIMED: u32 = 1;
const STATE_ACTIVE: u32 = 2;
const REQUEST_RING_OFFSET: u64 = CHANNEL_0_OFFSET + CHANNEL_HEADER_BYTES as u64;
const RESPONSE_RING_OFFSET: u64 =
    REQUEST_RING_OFFSET + frame_ring_bytes(RING_CAPACITY_BYTES) as u64;
const PRODUCER_POSITION: u64 = 0;
const CONSUMER_POSITION: u64 = CACHE_LINE_BYTES as u64;
const DATA: u64 = FRAME_RING_HEADER_BYTES as u64;

#[derive(Arbitrary, Debug)]
enum Action {
    /// A well-formed record at the client's position, published.
    Record {
        kind: u32,
        body: Vec<u8>,
    },
    /// A well-formed ping frame as a record, published.
    Ping(Vec<u8>),
    /// A record header claiming `length`, then the position moved by `advance`.
    LyingRecord {
        length: u32,
        kind: u32,
        advance: u16,
    },
    /// Bytes anywhere in the request ring's data (not published).
    Garbage {
        at: u16,
        bytes: Vec<u8>,
    },
    /// The request ring's producer position, set to anything.
    ProducerPosition(u64),
    /// The lcore's consumer position of the request ring, overwritten.
    RequestConsumerPosition(u64),
    /// The response ring's consumer position: honestly (all read), or anything.
    ResponsesRead,
    ResponseConsumerPosition(u64),
    /// The response ring's producer position (the lcore's), overwritten.
    ResponseProducerPosition(u64),
    /// The channel's state word.
    State(u32),
    Keepalive,
    /// The lcore's drain tick.
    Maintain,
    Poll,
}

struct State {
    fixture: ServiceFixture,
    transport: IpcTransport,
    file: File,
    /// Where the client writes its next record (its producer position).
    position: u64,
    now_ms: i64,
    keepalive: u64,
    _dir: tempfile::TempDir,
}

fn now_ms() -> i64 {
    1_700_000_000_000
}

impl State {
    fn new() -> State {
        let dir = tempfile::tempdir_in("/dev/shm").expect("temporary /dev/shm directory");
        let layout = IpcLayout {
            channels: 1,
            ring_capacity: RING_CAPACITY_BYTES,
        };
        let mut fixture = ServiceFixture::new(layout.frame_bytes_max());
        let transport = IpcTransport::create(dir.path(), layout, CLIENT_TIMEOUT).expect("ipc file");
        fixture
            .service
            .serve_frames_up_to(transport.frame_bytes_max());
        let file = File::options()
            .read(true)
            .write(true)
            .open(dir.path().join(IPC_FILE_NAME))
            .expect("the ipc file opens");
        State {
            fixture,
            transport,
            file,
            position: 0,
            now_ms: now_ms(),
            keepalive: 0,
            _dir: dir,
        }
    }

    fn write_u32(&self, at: u64, value: u32) {
        self.file
            .write_all_at(&value.to_le_bytes(), at)
            .expect("write to the ipc file");
    }

    fn write_u64(&self, at: u64, value: u64) {
        self.file
            .write_all_at(&value.to_le_bytes(), at)
            .expect("write to the ipc file");
    }

    fn read_u32(&self, at: u64) -> u32 {
        let mut bytes = [0u8; 4];
        self.file
            .read_exact_at(&mut bytes, at)
            .expect("read of the ipc file");
        u32::from_le_bytes(bytes)
    }

    fn read_u64(&self, at: u64) -> u64 {
        let mut bytes = [0u8; 8];
        self.file
            .read_exact_at(&mut bytes, at)
            .expect("read of the ipc file");
        u64::from_le_bytes(bytes)
    }

    fn maintain(&mut self) {
        self.now_ms += 1;
        self.transport.maintain(
            &mut self.fixture.service,
            Instant::now(),
            self.now_ms as u64,
        );
    }

    /// Claims the channel when it is not active, as a (returning) client does; the lcore
    /// accepts it on its drain tick and empties both rings.
    fn ensure_channel(&mut self) {
        if self.read_u32(STATE_OFFSET) == STATE_ACTIVE {
            return;
        }
        self.write_u32(STATE_OFFSET, STATE_CLAIMED);
        self.maintain();
        self.position = 0;
    }

    /// Writes a record (header and body) at the client's position, wrapping with a padding
    /// record as an honest producer does, and publishes it. Skipped when it cannot fit.
    fn publish(&mut self, kind: u32, body: &[u8]) {
        let capacity = RING_CAPACITY_BYTES as u64;
        // An honest record needs an honest position: aligned (a lying one is an action
        // of its own).
        if body.len() > RING_CAPACITY_BYTES / 4 - 8 || !self.position.is_multiple_of(8) {
            return;
        }
        let needed = record_bytes(body.len()) as u64;
        let mut index = self.position % capacity;
        let consumer = self.read_u64(REQUEST_RING_OFFSET + CONSUMER_POSITION);
        let padding = if index + needed > capacity {
            capacity - index
        } else {
            0
        };
        let in_use = self.position.wrapping_sub(consumer);
        if in_use > capacity || in_use + padding + needed > capacity {
            return; // full (or the positions are already a lie)
        }
        if padding > 0 {
            self.record_header(index, (padding - 8) as u32, u32::MAX);
            self.position = self.position.wrapping_add(padding);
            index = 0;
        }
        self.record_header(index, body.len() as u32, kind);
        self.file
            .write_all_at(body, REQUEST_RING_OFFSET + DATA + index + 8)
            .expect("write to the ipc file");
        self.position = self.position.wrapping_add(needed);
        self.write_u64(REQUEST_RING_OFFSET + PRODUCER_POSITION, self.position);
    }

    fn record_header(&self, index: u64, length: u32, kind: u32) {
        let at = REQUEST_RING_OFFSET + DATA + index;
        self.write_u32(at, length);
        self.write_u32(at + 4, kind);
    }
}

thread_local! {
    static STATE: RefCell<State> = RefCell::new(State::new());
}

fuzz_target!(|actions: Vec<Action>| {
    STATE.with(|state| {
        let state = &mut *state.borrow_mut();
        state.ensure_channel();
        for action in actions.iter().take(ACTIONS_PER_INPUT_MAX) {
            match action {
                Action::Record { kind, body } => state.publish(*kind, body),
                Action::Ping(payload) => {
                    let payload = &payload[..payload.len().min(256)];
                    let header = FrameHeader::new(Opcode::Ping, 1, 0, payload.len());
                    let mut frame = vec![0u8; 32 + payload.len()];
                    let n = encode_frame(&header, payload, &mut frame);
                    state.publish(RECORD_KIND_FRAME, &frame[..n]);
                }
                Action::LyingRecord {
                    length,
                    kind,
                    advance,
                } => {
                    let index = state.position % RING_CAPACITY_BYTES as u64;
                    let index = index.min(RING_CAPACITY_BYTES as u64 - 8);
                    state.record_header(index, *length, *kind);
                    state.position = state.position.wrapping_add(u64::from(*advance));
                    state.write_u64(REQUEST_RING_OFFSET + PRODUCER_POSITION, state.position);
                }
                Action::Garbage { at, bytes } => {
                    let at = u64::from(*at) % RING_CAPACITY_BYTES as u64;
                    let room = RING_CAPACITY_BYTES as u64 - at;
                    let n = (bytes.len() as u64).min(room) as usize;
                    state
                        .file
                        .write_all_at(&bytes[..n], REQUEST_RING_OFFSET + DATA + at)
                        .expect("write to the ipc file");
                }
                Action::ProducerPosition(position) => {
                    state.position = *position;
                    state.write_u64(REQUEST_RING_OFFSET + PRODUCER_POSITION, *position);
                }
                Action::RequestConsumerPosition(position) => {
                    state.write_u64(REQUEST_RING_OFFSET + CONSUMER_POSITION, *position)
                }
                Action::ResponsesRead => {
                    let produced = state.read_u64(RESPONSE_RING_OFFSET + PRODUCER_POSITION);
                    state.write_u64(RESPONSE_RING_OFFSET + CONSUMER_POSITION, produced);
                }
                Action::ResponseConsumerPosition(position) => {
                    state.write_u64(RESPONSE_RING_OFFSET + CONSUMER_POSITION, *position)
                }
                Action::ResponseProducerPosition(position) => {
                    state.write_u64(RESPONSE_RING_OFFSET + PRODUCER_POSITION, *position)
                }
                Action::State(word) => state.write_u32(STATE_OFFSET, *word),
                Action::Keepalive => {
                    state.keepalive += 1;
                    state.write_u64(KEEPALIVE_OFFSET, state.keepalive);
                }
                Action::Maintain => state.maintain(),
                Action::Poll => {
                    state.transport.poll(&mut state.fixture.service, now_ms);
                }
            }
        }
        state.transport.poll(&mut state.fixture.service, now_ms);
        state.maintain();
        state.ensure_channel();
    });
});
