//! The CLI over the RDMA transport's one-sided side (`precursor` built with `--features
//! rdma`): `consume --rdma-read` reads a partition with RDMA READs of the broker's log
//! segments, and `bench ping --transport rdma` times SEND/RECV round trips below the
//! producer library. Built without the feature, both say how to get them.

use super::consume::ConsumeArgs;
#[cfg(not(feature = "rdma"))]
use anyhow::Result;
#[cfg(not(feature = "rdma"))]
use std::process::ExitCode;

#[cfg(not(feature = "rdma"))]
const NOT_BUILT: &str =
    "this precursor was built without RDMA (cargo build --release --features rdma)";

#[cfg(not(feature = "rdma"))]
pub fn consume(_args: ConsumeArgs) -> Result<ExitCode> {
    anyhow::bail!("--rdma-read: {NOT_BUILT}")
}

#[cfg(not(feature = "rdma"))]
pub fn ping(
    _broker: std::net::SocketAddr,
    _pings: u64,
    _size: usize,
    _warmup: u64,
) -> Result<PingRun> {
    anyhow::bail!("bench ping --transport rdma: {NOT_BUILT}")
}

/// What `ping` measured.
pub struct PingRun {
    pub messages: u64,
    pub seconds: f64,
    /// Round trips, in nanoseconds.
    pub latency: hdrhistogram::Histogram<u64>,
}

#[cfg(feature = "rdma")]
pub use with_rdma::{consume, ping};

#[cfg(feature = "rdma")]
mod with_rdma {
    use super::{ConsumeArgs, PingRun};
    use anyhow::{bail, Context, Result};
    use hdrhistogram::Histogram;
    use precursor_client::bench_payload::Verifier;
    use precursor_client::rdma::{RdmaConfig, RdmaReader, RdmaSession};
    use precursor_client::ConsumedRecord;
    use precursor_protocol::frame::{decode_frame, FrameHeader, Opcode, FRAME_HEADER_BYTES};
    use std::io::Write;
    use std::net::SocketAddr;
    use std::process::ExitCode;
    use std::time::{Duration, Instant};

    /// Longest round trip recorded, in nanoseconds.
    const LATENCY_NS_MAX: u64 = 60_000_000_000;
    /// How long one answer may take before the run fails.
    const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

    /// `consume --rdma-read`: one partition (`--partition`, default 0) read with one-sided
    /// RDMA READs from `--offset`, the log start (`--from-beginning`, `--verify`), or the
    /// end.
    pub fn consume(args: ConsumeArgs) -> Result<ExitCode> {
        if args.broker.transport != super::super::Transport::Rdma {
            bail!("--rdma-read needs --transport rdma");
        }
        if args.durable_only {
            bail!("--rdma-read reads what is committed (acknowledged by the leader); it has no --durable-only");
        }
        let partition = args.partition.unwrap_or(0);
        let config = RdmaConfig::new(args.broker.rdma_broker);
        let mut reader = RdmaReader::open(&config, &args.topic, partition, 0)
            .with_context(|| format!("cannot read topic {:?} over RDMA", args.topic))?;
        let start = match args.offset {
            Some(offset) => offset,
            None => {
                let (log_start, end) = reader.bounds()?;
                if args.from_beginning || args.verify {
                    log_start
                } else {
                    end
                }
            }
        };
        reader.seek(start);
        let mut verifier = Verifier::new();
        if args.verify {
            verifier.expect(partition, 0);
        }
        let mut records: Vec<ConsumedRecord> = Vec::new();
        let mut consumed = 0u64;
        let mut last_progress = Instant::now();
        let stdout = std::io::stdout();
        let mut out = std::io::BufWriter::new(stdout.lock());
        loop {
            if args.count.is_some_and(|count| consumed >= count) {
                break;
            }
            if args.idle_timeout_ms > 0
                && last_progress.elapsed() > Duration::from_millis(args.idle_timeout_ms)
            {
                out.flush()?;
                bail!(
                    "no message for {} ms after {consumed} messages",
                    args.idle_timeout_ms
                );
            }
            records.clear();
            let progress = reader.poll(&mut records)?;
            if progress.records == 0 {
                if args.to_end && reader.position() >= progress.high_watermark {
                    break;
                }
                std::thread::sleep(Duration::from_micros(100));
                continue;
            }
            last_progress = Instant::now();
            for record in &records {
                if args.count.is_some_and(|count| consumed >= count) {
                    break;
                }
                consumed += 1;
                super::super::consume::emit(&args, &mut verifier, &mut out, record)?;
            }
        }
        out.flush()?;
        eprintln!(
            "consume --rdma-read: {consumed} messages, {} grant requests, {} READs of batches",
            reader.grants, reader.reads
        );
        super::super::consume::report(&args, &verifier, consumed)
    }

    /// `bench ping --transport rdma`: one Ping at a time as a SEND, the Pong as a SEND
    /// back, each round trip timed.
    pub fn ping(broker: SocketAddr, pings: u64, size: usize, warmup: u64) -> Result<PingRun> {
        let mut session = RdmaSession::connect(&RdmaConfig::new(broker))
            .with_context(|| format!("cannot connect over RDMA to {broker}"))?;
        let payload_bytes = size.max(8);
        if FRAME_HEADER_BYTES + payload_bytes > session.frame_bytes_max() {
            bail!(
                "--size {size}: a Ping frame over RDMA holds at most {} bytes",
                session.frame_bytes_max() - FRAME_HEADER_BYTES
            );
        }
        let mut frame = vec![0x5au8; FRAME_HEADER_BYTES + payload_bytes];
        let mut latency = Histogram::new_with_bounds(1, LATENCY_NS_MAX, 3).expect("static bounds");
        let mut started = Instant::now();
        for i in 0..warmup + pings {
            if i == warmup {
                started = Instant::now();
            }
            let id = session.next_request_id();
            FrameHeader::new(Opcode::Ping, id, 0, payload_bytes).encode(&mut frame);
            let sent_at = Instant::now();
            if !session.send_frame(&frame, ANSWER_TIMEOUT)? {
                bail!("no send buffer came back within {ANSWER_TIMEOUT:?}");
            }
            let mut answered = false;
            while !answered {
                let mut ok = false;
                let got = session.recv_frame(ANSWER_TIMEOUT, |bytes| {
                    if let Ok((header, echo)) = decode_frame(bytes) {
                        answered = header.request_id == id;
                        ok = header.opcode == Opcode::Pong
                            && header.error == 0
                            && echo == &frame[FRAME_HEADER_BYTES..];
                    }
                })?;
                if !got {
                    bail!("no Pong within {ANSWER_TIMEOUT:?}");
                }
                if answered && !ok {
                    bail!("the Pong did not echo the Ping");
                }
            }
            if i >= warmup {
                latency.saturating_record((sent_at.elapsed().as_nanos() as u64).max(1));
            }
        }
        Ok(PingRun {
            messages: pings,
            seconds: started.elapsed().as_secs_f64(),
            latency,
        })
    }
}
