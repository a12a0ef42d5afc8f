//! IPC measurements below the producer library: the transport and the lcore alone.
//!
//! - [`ping`]: one Ping at a time over an IPC channel, each round trip timed (the IPC
//!   counterpart of `bench ping` over UDP, to put beside the bare shared-memory ping-pong
//!   of `precursor-bench limits`).
//! - [`pre_encoded_produce`]: one record batch of `records_per_batch` bench records is
//!   encoded once, then sent again and again (without a producer id, so every copy is
//!   appended) with as many frames in flight as the rings hold. It measures what the
//!   channel and the lcore sustain — validation, append, ack — without the client's
//!   per-message encoding, which `bench produce` includes.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use hdrhistogram::Histogram;
use precursor_client::{bench_payload, IpcConfig, IpcSession};
use precursor_protocol::compression::Compression;
use precursor_protocol::frame::{
    Acks, ErrorCode, MetadataRequest, MetadataResponse, Opcode, PartitionHandle,
    FLAG_METADATA_AUTO_CREATE,
};
use precursor_protocol::record_batch::RecordBatchBuilder;

/// Longest round trip recorded, in nanoseconds.
const LATENCY_NS_MAX: u64 = 60_000_000_000;
/// How long one answer may take before the run fails.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// What a run measured.
pub struct IpcRun {
    pub messages: u64,
    pub seconds: f64,
    /// Round trips (ping) or produce->ack times of whole batches (pre-encoded), in ns.
    pub latency: Histogram<u64>,
}

fn connect(dir: &Path) -> Result<IpcSession> {
    IpcSession::connect(&IpcConfig::new(dir)).context("cannot open an IPC channel")
}

/// Waits for the answer to `request_id` (answers come in order on a channel).
fn answer(session: &mut IpcSession, request_id: u64) -> Result<(u16, Opcode, Vec<u8>)> {
    let deadline = Instant::now() + ANSWER_TIMEOUT;
    let mut found = None;
    while found.is_none() {
        session.poll(|header, payload| {
            if header.request_id == request_id {
                found = Some((header.error, header.opcode, payload.to_vec()));
            }
        })?;
        if Instant::now() > deadline {
            bail!("no answer on the IPC channel within {ANSWER_TIMEOUT:?}");
        }
    }
    Ok(found.expect("loop ends with an answer"))
}

/// Sends `frame` (retrying while the request ring is full) and returns its request id.
fn send(
    session: &mut IpcSession,
    opcode: Opcode,
    flags: u16,
    partition: u32,
    payload: &[u8],
) -> Result<u64> {
    loop {
        if let Some(id) = session.try_send(opcode, flags, partition, payload)? {
            return Ok(id);
        }
        session.poll(|_, _| {})?;
    }
}

/// `pings` Ping round trips of `size`-byte payloads after `warmup` unmeasured ones.
pub fn ping(dir: &Path, pings: u64, size: usize, warmup: u64) -> Result<IpcRun> {
    let mut session = connect(dir)?;
    let payload = vec![0x5a; size.max(8)];
    let mut latency = Histogram::new_with_bounds(1, LATENCY_NS_MAX, 3).expect("static bounds");
    let mut started = Instant::now();
    for i in 0..warmup + pings {
        if i == warmup {
            started = Instant::now();
        }
        let sent_at = Instant::now();
        let id = send(&mut session, Opcode::Ping, 0, 0, &payload)?;
        let (error, opcode, echo) = answer(&mut session, id)?;
        let round_trip = sent_at.elapsed().as_nanos() as u64;
        if error != 0 || opcode != Opcode::Pong || echo != payload {
            bail!("ping answered with {opcode:?}, error {error}");
        }
        if i >= warmup {
            latency.saturating_record(round_trip.max(1));
        }
    }
    Ok(IpcRun {
        messages: pings,
        seconds: started.elapsed().as_secs_f64(),
        latency,
    })
}

/// The partition handle of `topic`'s partition 0, creating the topic if needed.
fn partition_of(session: &mut IpcSession, topic: &str) -> Result<(PartitionHandle, usize)> {
    let request = MetadataRequest { topic };
    let mut payload = vec![0u8; request.encoded_len()];
    request.encode(&mut payload);
    let deadline = Instant::now() + ANSWER_TIMEOUT;
    loop {
        let id = send(
            session,
            Opcode::Metadata,
            FLAG_METADATA_AUTO_CREATE,
            0,
            &payload,
        )?;
        let (error, opcode, body) = answer(session, id)?;
        if opcode == Opcode::MetadataResponse {
            let meta = MetadataResponse::decode(&body).context("metadata response")?;
            return Ok((
                PartitionHandle::new(meta.topic_id, 0),
                meta.frame_bytes_max as usize,
            ));
        }
        if ErrorCode::from_u16(error) != Some(ErrorCode::TopicNotReady) || Instant::now() > deadline
        {
            bail!(
                "metadata for {topic}: error {error}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Sends `messages` records as copies of one pre-encoded batch of `records_per_batch`
/// records of `size` bytes, with `acks`, keeping up to `in_flight` batches outstanding.
pub fn pre_encoded_produce(
    dir: &Path,
    topic: &str,
    messages: u64,
    size: usize,
    records_per_batch: usize,
    in_flight: usize,
    acks: Acks,
) -> Result<IpcRun> {
    assert!(records_per_batch > 0 && in_flight > 0);
    let mut session = connect(dir)?;
    let (handle, frame_bytes_max) = partition_of(&mut session, topic)?;
    // Record timestamps are now: stamped in 1970, the copies would fall to time retention.
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let mut builder = RecordBatchBuilder::new(Compression::None, -1, -1, -1, now_ms);
    let mut value = Vec::with_capacity(size);
    for seq in 0..records_per_batch as u64 {
        value.clear();
        bench_payload::encode(seq, size, &mut value);
        builder.append(now_ms, None, &value, &[]);
    }
    let batch = builder.finish();
    if batch.len() + 64 > frame_bytes_max {
        bail!(
            "a batch of {records_per_batch} records is {} bytes: more than an IPC frame ({frame_bytes_max}); use fewer --records-per-batch",
            batch.len()
        );
    }
    let batches = messages.div_ceil(records_per_batch as u64);
    let mut latency = Histogram::new_with_bounds(1, LATENCY_NS_MAX, 3).expect("static bounds");
    // Send times of the batches in flight, in request-id order (answers come in order).
    let mut outstanding: std::collections::VecDeque<(u64, Instant)> =
        std::collections::VecDeque::with_capacity(in_flight);
    let (mut sent, mut acked) = (0u64, 0u64);
    let started = Instant::now();
    let deadline_per_answer = ANSWER_TIMEOUT;
    let mut last_answer = Instant::now();
    let mut failure = None;
    let mut busy = 0u64;
    while acked < batches {
        // Batches answered Busy are sent again.
        sent -= std::mem::take(&mut busy);
        while sent < batches && outstanding.len() < in_flight {
            let Some(id) = session.try_send(Opcode::Produce, acks.to_flags(), handle.0, &batch)?
            else {
                break;
            };
            outstanding.push_back((id, Instant::now()));
            sent += 1;
            if acks == Acks::None {
                outstanding.pop_back();
                acked += 1;
            }
        }
        session.poll(|header, payload| {
            let Some(&(id, at)) = outstanding.front() else {
                return;
            };
            if header.request_id != id {
                return;
            }
            outstanding.pop_front();
            if ErrorCode::from_u16(header.error) == Some(ErrorCode::Busy) {
                // The next segment is being prepared (a roll at full speed): send it again.
                busy += 1;
                return;
            }
            if header.opcode != Opcode::ProduceAck {
                failure.get_or_insert(format!(
                    "produce answered with {:?}, error {}: {}",
                    header.opcode,
                    header.error,
                    String::from_utf8_lossy(payload)
                ));
            }
            latency.saturating_record((at.elapsed().as_nanos() as u64).max(1));
            acked += 1;
            last_answer = Instant::now();
        })?;
        if let Some(failure) = failure.take() {
            bail!(failure);
        }
        if last_answer.elapsed() > deadline_per_answer {
            bail!(
                "no ack within {deadline_per_answer:?} ({acked} of {batches} batches acknowledged)"
            );
        }
    }
    Ok(IpcRun {
        messages: batches * records_per_batch as u64,
        seconds: started.elapsed().as_secs_f64(),
        latency,
    })
}
