//! Native frames from a hostile peer, decoded and served by the real `Service` over real
//! partition logs (the path every transport takes: `Service::serve_frame`). Structure-aware:
//! most frames are well formed (a produce of a real record batch, a fetch, a metadata
//! request, a ping) and then damaged, so the fuzzer gets past the header and CRC checks
//! into the log's append and read paths; raw byte frames cover the decoder itself.
//!
//! Checked: nothing panics, every answer fits the room the transport reserves for it, every
//! ProduceAck names offsets the log holds, and what a fetch of an acknowledged offset
//! returns is whole record batches.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use precursor_dataplane::service::{Reply, ReplyTo};
use precursor_fuzz::{ServiceFixture, FUZZ_PARTITIONS};
use precursor_protocol::compression::Compression;
use precursor_protocol::frame::{
    encode_frame, Acks, FetchRequest, FrameHeader, MetadataRequest, Opcode, PartitionHandle,
    FLAG_FETCH_DURABLE_ONLY, FRAME_BYTES_MAX_MTU_1500, FRAME_HEADER_BYTES,
};
use precursor_protocol::record_batch::{batches, RecordBatchBuilder};
use std::cell::RefCell;

/// Requests one input sends at most (bounds an execution's length).
const REQUESTS_PER_INPUT_MAX: usize = 32;
/// Records one generated batch holds at most.
const RECORDS_PER_BATCH_MAX: usize = 8;

#[derive(Arbitrary, Debug)]
struct Record {
    key: Option<Vec<u8>>,
    value: Vec<u8>,
    header: Option<(String, Vec<u8>)>,
}

#[derive(Arbitrary, Debug)]
enum Damage {
    None,
    /// One byte XORed (anywhere in the frame, header included).
    Flip {
        at: u16,
        with: u8,
    },
    /// The frame cut short.
    Truncate {
        to: u16,
    },
    /// Bytes appended after the payload.
    Append(Vec<u8>),
    /// The header's length field replaced.
    Length(u32),
}

#[derive(Arbitrary, Debug)]
enum Request {
    Produce {
        partition: u8,
        acks: u8,
        codec: u8,
        producer: Option<(u16, i16, i32)>,
        timestamp_ms: i64,
        records: Vec<Record>,
    },
    Fetch {
        partition: u8,
        offset: u64,
        max_bytes: u32,
        durable_only: bool,
    },
    Metadata {
        topic: String,
        flags: u16,
    },
    Ping(Vec<u8>),
    /// Any opcode, any flags, any payload.
    Raw {
        opcode: u8,
        flags: u16,
        partition: u32,
        payload: Vec<u8>,
    },
    /// Bytes that may not even be a header.
    Garbage(Vec<u8>),
    /// The lcore's drain tick (maintenance, durable answers).
    Drain,
}

#[derive(Arbitrary, Debug)]
struct Step {
    request: Request,
    damage: Damage,
    transport: u8,
}

struct State {
    fixture: ServiceFixture,
    frame: Vec<u8>,
    fetched: Vec<u8>,
    now_ms: i64,
    request_id: u64,
}

thread_local! {
    static STATE: RefCell<State> = RefCell::new(State {
        fixture: ServiceFixture::new(FRAME_BYTES_MAX_MTU_1500),
        frame: vec![0u8; FRAME_BYTES_MAX_MTU_1500 * 2],
        fetched: vec![0u8; FRAME_BYTES_MAX_MTU_1500],
        now_ms: 1_700_000_000_000,
        request_id: 0,
    });
}

fn handle(partition: u8) -> u32 {
    // Mostly the topic's partitions (id 0), sometimes one that does not exist.
    let partition = u16::from(partition) % (FUZZ_PARTITIONS + 1);
    PartitionHandle::new(0, partition).0
}

fn reply_to(transport: u8) -> ReplyTo {
    match transport % 3 {
        0 => ReplyTo::Udp(precursor_dataplane::net::Peer {
            mac: [2, 0, 0, 0, 0, 1],
            ip: std::net::Ipv4Addr::new(10, 0, 0, 1),
            udp_port: 9000,
        }),
        1 => ReplyTo::Ipc {
            channel: 0,
            generation: 1,
        },
        _ => ReplyTo::Rdma {
            connection: 0,
            generation: 1,
        },
    }
}

/// Writes the frame of `request` into `out`; returns its length, `None` for a drain.
fn encode(request: &Request, request_id: u64, out: &mut [u8]) -> Option<usize> {
    let room = out.len() - FRAME_HEADER_BYTES;
    let (header, payload): (FrameHeader, Vec<u8>) = match request {
        Request::Produce {
            partition,
            acks,
            codec,
            producer,
            timestamp_ms,
            records,
        } => {
            let codec = Compression::ALL[usize::from(*codec) % Compression::ALL.len()];
            let (producer_id, epoch, sequence) = match producer {
                Some((id, epoch, sequence)) => (i64::from(*id), *epoch, *sequence),
                None => (-1, -1, -1),
            };
            let mut builder =
                RecordBatchBuilder::new(codec, producer_id, epoch, sequence, *timestamp_ms);
            for record in records.iter().take(RECORDS_PER_BATCH_MAX) {
                let headers: Vec<(&str, &[u8])> = record
                    .header
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_slice()))
                    .collect();
                builder.append(
                    *timestamp_ms,
                    record.key.as_deref(),
                    &record.value,
                    &headers,
                );
            }
            if builder.is_empty() {
                builder.append(*timestamp_ms, None, b"", &[]);
            }
            let batch = builder.finish();
            let mut header = FrameHeader::new(Opcode::Produce, request_id, handle(*partition), 0);
            header.flags = Acks::ALL[usize::from(*acks) % Acks::ALL.len()].to_flags();
            (header, batch)
        }
        Request::Fetch {
            partition,
            offset,
            max_bytes,
            durable_only,
        } => {
            let mut payload = vec![0u8; FetchRequest::BYTES];
            FetchRequest {
                offset: *offset % 4096,
                max_bytes: *max_bytes,
            }
            .encode(&mut payload);
            let mut header = FrameHeader::new(Opcode::Fetch, request_id, handle(*partition), 0);
            if *durable_only {
                header.flags |= FLAG_FETCH_DURABLE_ONLY;
            }
            (header, payload)
        }
        Request::Metadata { topic, flags } => {
            let request = MetadataRequest { topic };
            if topic.len() > precursor_protocol::frame::TOPIC_NAME_BYTES_MAX {
                return None;
            }
            let mut payload = vec![0u8; request.encoded_len()];
            request.encode(&mut payload);
            let mut header = FrameHeader::new(Opcode::Metadata, request_id, 0, 0);
            header.flags = *flags;
            (header, payload)
        }
        Request::Ping(payload) => (
            FrameHeader::new(Opcode::Ping, request_id, 0, 0),
            payload.clone(),
        ),
        Request::Raw {
            opcode,
            flags,
            partition,
            payload,
        } => {
            let opcode = Opcode::from_u8(*opcode).unwrap_or(Opcode::Ping);
            let mut header = FrameHeader::new(opcode, request_id, *partition, 0);
            header.flags = *flags;
            (header, payload.clone())
        }
        Request::Garbage(bytes) => {
            let n = bytes.len().min(out.len());
            out[..n].copy_from_slice(&bytes[..n]);
            return Some(n);
        }
        Request::Drain => return None,
    };
    if payload.len() > room {
        return None;
    }
    let mut header = header;
    header.length = payload.len() as u32;
    Some(encode_frame(&header, &payload, out))
}

fn damage(frame: &mut [u8], len: usize, damage: &Damage) -> usize {
    match damage {
        Damage::None => len,
        Damage::Flip { at, with } => {
            if len > 0 {
                frame[usize::from(*at) % len] ^= with;
            }
            len
        }
        Damage::Truncate { to } => len.min(usize::from(*to)),
        Damage::Append(bytes) => {
            let n = bytes.len().min(frame.len() - len);
            frame[len..len + n].copy_from_slice(&bytes[..n]);
            len + n
        }
        Damage::Length(length) => {
            if len >= FRAME_HEADER_BYTES {
                frame[24..28].copy_from_slice(&length.to_le_bytes());
            }
            len
        }
    }
}

fuzz_target!(|steps: Vec<Step>| {
    STATE.with(|state| {
        let state = &mut *state.borrow_mut();
        let frame_bytes_max = state.fixture.frame_bytes_max;
        for step in steps.iter().take(REQUESTS_PER_INPUT_MAX) {
            state.now_ms += 1;
            state.request_id += 1;
            let Some(len) = encode(&step.request, state.request_id, &mut state.frame) else {
                state.fixture.drain(state.now_ms);
                continue;
            };
            let len = damage(&mut state.frame, len, &step.damage);
            // A transport never hands over more than its frame size.
            let len = len.min(frame_bytes_max);
            let Some((request, reply)) = state.fixture.service.serve_frame(
                reply_to(step.transport),
                &state.frame[..len],
                frame_bytes_max,
                state.now_ms,
            ) else {
                continue;
            };
            if let Reply::Ack(ack) = reply {
                check_ack(state, &request, ack.base_offset, ack.last_offset);
            }
            state.fixture.render(reply, &request);
        }
    });
});

/// An acknowledged produce: its offsets are in the log, and a fetch from its base offset
/// returns whole batches, the first one holding that offset.
fn check_ack(state: &mut State, request: &FrameHeader, base_offset: u64, last_offset: u64) {
    assert!(
        base_offset <= last_offset,
        "ack {base_offset}..={last_offset}"
    );
    let log = state
        .fixture
        .service
        .topics
        .partition(PartitionHandle(request.partition))
        .expect("an acknowledged partition exists");
    assert!(
        last_offset < log.log_end_offset(),
        "ack of offset {last_offset} beyond the log end {}",
        log.log_end_offset()
    );
    if base_offset < log.log_start_offset() {
        return; // retention took it already
    }
    let n = log
        .read(base_offset, 1, false, &mut state.fetched)
        .expect("an acknowledged offset reads");
    assert!(n > 0, "nothing read at acknowledged offset {base_offset}");
    let mut count = 0;
    for batch in batches(&state.fetched[..n]) {
        let (header, _) = batch.expect("the log serves whole batches");
        if count == 0 {
            assert!(header.base_offset as u64 <= base_offset);
            assert!(base_offset <= header.last_offset() as u64);
        }
        count += 1;
    }
    assert!(count >= 1);
}
