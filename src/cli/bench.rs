//! `precursor bench produce|consume|ping`: throughput and latency with self-checking payloads.
//!
//! Produce sends `--messages` payloads of `--size` bytes, each carrying its per-partition
//! sequence number and a CRC32C (`precursor_client::bench_payload`), round-robin over the
//! topic's partitions; latency is from `send()` to the ack, per message (HdrHistogram).
//! Consume reads the topic from its start and verifies every payload: intact, once, in
//! order per partition. Ping keeps up to `--window` Ping frames outstanding on one UDP socket
//! and times each round trip: against the data plane it measures the packet path without
//! the log; against `precursor-dataplane --echo`, which reflects every datagram unchanged
//! (the same Ping frame, same request id, comes back), the port's raw limit. `--json` prints one object; otherwise a line for people. Timing is
//! reported, never judged: comparisons live in docs/benchmarks.md.

use super::produce::parse_acks;
use super::BrokerArgs;
use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use hdrhistogram::Histogram;
use precursor_client::bench_payload::{self, Verifier};
use precursor_client::{
    Acks, ConsumedRecord, Consumer, ConsumerConfig, Delivery, Producer, ProducerConfig, StartOffset,
};
use precursor_protocol::frame::{
    decode_frame, FrameHeader, Opcode, FRAME_BYTES_MAX_MTU_1500, FRAME_HEADER_BYTES,
};
use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Highest latency the histogram tracks, in nanoseconds (60 s).
const LATENCY_NS_MAX: u64 = 60_000_000_000;
const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);
/// Most Ping frames a `bench ping` keeps outstanding.
const PING_WINDOW_MAX: usize = 4096;
/// A ping payload carries its request id (8 bytes) and a fixed pattern after it.
const PING_PAYLOAD_BYTES_MIN: usize = 8;
/// Ping payloads fit one datagram on a standard MTU.
const PING_PAYLOAD_BYTES_MAX: usize = FRAME_BYTES_MAX_MTU_1500 - FRAME_HEADER_BYTES;
/// How long one blocking receive waits before lost requests are looked for again.
const PING_RECV_WAIT: Duration = Duration::from_millis(5);
/// ENOBUFS on Linux: the interface queue is full and the datagram is dropped.
const NO_BUFFER_SPACE_ERRNO: i32 = 105;
/// Largest datagram a ping answer can be (anything longer is not ours and is cut).
const PING_RECV_BUFFER_BYTES: usize = 2048;

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Produce N messages and report throughput and produce->ack latency.
    Produce(BenchProduceArgs),
    /// Consume N messages from the start of the topic, verifying each.
    Consume(BenchConsumeArgs),
    /// Ping round trips with up to --window outstanding (also against `precursor-dataplane --echo`).
    Ping(BenchPingArgs),
}

/// The topic produce and consume use when none is given.
const DEFAULT_TOPIC: &str = "bench";

#[derive(Args)]
pub struct Common {
    #[command(flatten)]
    pub broker: BrokerArgs,
    /// Messages to send or read (pings for `bench ping`).
    #[arg(long, short = 'n', default_value_t = 100_000)]
    pub messages: u64,
    /// Transport: udp (kernel socket to the data plane's DPDK port).
    #[arg(long, default_value = "udp")]
    pub transport: String,
    /// Print one JSON object instead of a line for people.
    #[arg(long)]
    pub json: bool,
    /// No progress lines on stderr.
    #[arg(long, short)]
    pub quiet: bool,
}

#[derive(Args)]
pub struct BenchProduceArgs {
    #[command(flatten)]
    pub common: Common,
    #[arg(long, default_value = DEFAULT_TOPIC)]
    pub topic: String,
    /// Bytes per message (at least 16: sequence, checksum, length).
    #[arg(long, short, default_value_t = 100)]
    pub size: usize,
    #[arg(long, default_value = "leader", value_parser = parse_acks)]
    pub acks: Acks,
    #[arg(long, default_value_t = 200)]
    pub linger_us: u64,
    /// Un-acknowledged batches per partition.
    #[arg(long, default_value_t = 16)]
    pub in_flight: usize,
}

#[derive(Args)]
pub struct BenchConsumeArgs {
    #[command(flatten)]
    pub common: Common,
    #[arg(long, default_value = DEFAULT_TOPIC)]
    pub topic: String,
}

#[derive(Args)]
pub struct BenchPingArgs {
    #[command(flatten)]
    pub common: Common,
    /// Ping frames outstanding at most.
    #[arg(long, short, default_value_t = 1)]
    pub window: usize,
    /// Ping payload bytes (the frame adds a 32-byte header).
    #[arg(long, short, default_value_t = 100)]
    pub size: usize,
    /// Pings sent and answered before the measured ones (ARP, caches, the lcore's idle backoff).
    #[arg(long, default_value_t = 1000)]
    pub warmup: u64,
    /// A ping unanswered for this long counts as lost (an error) and frees its window slot.
    #[arg(long, default_value_t = 1000)]
    pub lost_after_ms: u64,
}

/// The result of one run, as printed with --json.
struct Report {
    transport: String,
    acks: Option<Acks>,
    messages: u64,
    size: usize,
    seconds: f64,
    errors: u64,
    latency: Option<Histogram<u64>>,
}

impl Report {
    fn msgs_per_sec(&self) -> f64 {
        self.messages as f64 / self.seconds.max(1e-9)
    }
    fn mb_per_sec(&self) -> f64 {
        self.msgs_per_sec() * self.size as f64 / 1e6
    }
    fn percentile_us(&self, q: f64) -> Option<f64> {
        self.latency
            .as_ref()
            .map(|h| h.value_at_quantile(q) as f64 / 1e3)
    }

    fn print(&self, json: bool) {
        let number = |v: Option<f64>| v.map_or("null".to_string(), |v| format!("{v:.1}"));
        if json {
            let max = self.latency.as_ref().map(|h| h.max() as f64 / 1e3);
            println!(
                "{{\"transport\":\"{}\",\"acks\":{},\"messages\":{},\"size\":{},\"seconds\":{:.6},\"msgs_per_sec\":{:.0},\"mb_per_sec\":{:.2},\"p50_us\":{},\"p99_us\":{},\"p999_us\":{},\"max_us\":{},\"errors\":{}}}",
                self.transport,
                self.acks.map_or("null".to_string(), |a| format!("\"{}\"", a.name())),
                self.messages,
                self.size,
                self.seconds,
                self.msgs_per_sec(),
                self.mb_per_sec(),
                number(self.percentile_us(0.5)),
                number(self.percentile_us(0.99)),
                number(self.percentile_us(0.999)),
                number(max),
                self.errors
            );
        } else {
            print!(
                "{} messages of {} B over {} in {:.3} s: {:.0} msgs/s, {:.1} MB/s",
                self.messages,
                self.size,
                self.transport,
                self.seconds,
                self.msgs_per_sec(),
                self.mb_per_sec()
            );
            if self.latency.is_some() {
                print!(
                    "; latency p50 {} us, p99 {} us, p99.9 {} us, max {} us",
                    number(self.percentile_us(0.5)),
                    number(self.percentile_us(0.99)),
                    number(self.percentile_us(0.999)),
                    number(self.latency.as_ref().map(|h| h.max() as f64 / 1e3))
                );
            }
            println!("; {} errors", self.errors);
        }
    }
}

pub fn run(command: BenchCommand) -> Result<ExitCode> {
    let (common, report) = match command {
        BenchCommand::Produce(args) => {
            check_transport(&args.common)?;
            let report = produce(&args)?;
            (args.common, report)
        }
        BenchCommand::Consume(args) => {
            check_transport(&args.common)?;
            let report = consume(&args)?;
            (args.common, report)
        }
        BenchCommand::Ping(args) => {
            check_transport(&args.common)?;
            let report = ping(&args)?;
            (args.common, report)
        }
    };
    report.print(common.json);
    Ok(if report.errors == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn check_transport(common: &Common) -> Result<()> {
    if common.transport != "udp" {
        bail!(
            "transport {:?} is not available yet: only udp",
            common.transport
        );
    }
    Ok(())
}

fn produce(args: &BenchProduceArgs) -> Result<Report> {
    if args.size < bench_payload::PAYLOAD_BYTES_MIN {
        bail!(
            "--size must be at least {} bytes",
            bench_payload::PAYLOAD_BYTES_MIN
        );
    }
    let common = &args.common;
    let config = ProducerConfig {
        client: common.broker.client_config(),
        acks: args.acks,
        linger_us: args.linger_us,
        in_flight_max: args.in_flight,
        batch_bytes_max: usize::MAX,
        auto_create_topics: true,
        ..ProducerConfig::default()
    };
    let mut producer = Producer::new(config).context("cannot start the producer")?;
    let partitions = producer
        .partition_count(&args.topic)
        .with_context(|| format!("topic {:?}", args.topic))?;
    let mut latency =
        Histogram::<u64>::new_with_bounds(1, LATENCY_NS_MAX, 3).expect("static bounds");
    let mut sequences = vec![0u64; partitions as usize];
    let mut payload = Vec::with_capacity(args.size);
    let mut tally = Tally::default();
    let mut progress = Progress::new(common.quiet, "produced");
    let started = Instant::now();
    for i in 0..common.messages {
        let partition = (i % partitions as u64) as u16;
        let seq = &mut sequences[partition as usize];
        bench_payload::encode(*seq, args.size, &mut payload);
        *seq += 1;
        producer.send(&args.topic, Some(partition), None, &payload)?;
        producer.drain_deliveries(|d| tally.record(d, &mut latency));
        progress.tick(tally.delivered);
    }
    let flushed = producer.flush(Duration::from_millis(
        common.broker.timeout_ms.saturating_mul(3),
    ));
    producer.drain_deliveries(|d| tally.record(d, &mut latency));
    let seconds = started.elapsed().as_secs_f64();
    progress.done(tally.delivered);
    if let Err(error) = flushed {
        eprintln!("precursor: flush: {error}");
    }
    if let Some(error) = &tally.first_error {
        eprintln!("precursor: first error: {error}");
    }
    let stats = producer.stats();
    if !common.quiet {
        eprintln!(
            "producer: {} batches, {} retransmits, {} duplicates acknowledged",
            stats.batches_sent, stats.retransmits, stats.duplicates
        );
    }
    Ok(Report {
        transport: common.transport.clone(),
        acks: Some(args.acks),
        messages: common.messages,
        size: args.size,
        seconds,
        errors: tally.errors
            + common
                .messages
                .saturating_sub(tally.delivered + tally.errors),
        latency: (args.acks != Acks::None).then_some(latency),
    })
}

fn consume(args: &BenchConsumeArgs) -> Result<Report> {
    let common = &args.common;
    let config = ConsumerConfig {
        client: common.broker.client_config(),
        ..ConsumerConfig::default()
    };
    let mut consumer = Consumer::new(config).context("cannot start the consumer")?;
    consumer
        .assign(&args.topic, None, StartOffset::Earliest)
        .with_context(|| format!("topic {:?}", args.topic))?;
    let mut verifier = Verifier::new();
    for (partition, _) in consumer.positions() {
        verifier.expect(partition, 0);
    }
    let mut records: Vec<ConsumedRecord> = Vec::with_capacity(4096);
    let mut consumed = 0u64;
    let mut bytes = 0u64;
    let mut progress = Progress::new(common.quiet, "consumed");
    let idle_limit = Duration::from_millis(common.broker.timeout_ms);
    let started = Instant::now();
    let mut last_record = Instant::now();
    while consumed < common.messages {
        records.clear();
        consumer.poll(Duration::from_millis(100), &mut records)?;
        if records.is_empty() && last_record.elapsed() > idle_limit {
            eprintln!(
                "precursor: no message for {} ms after {consumed} of {}",
                idle_limit.as_millis(),
                common.messages
            );
            break;
        }
        for record in records.iter().take((common.messages - consumed) as usize) {
            verifier.observe(record.partition, &record.value);
            bytes += record.value.len() as u64;
            consumed += 1;
            last_record = Instant::now();
        }
        progress.tick(consumed);
    }
    let seconds = started.elapsed().as_secs_f64();
    progress.done(consumed);
    let totals = verifier.totals();
    let errors = totals.missing
        + totals.duplicates
        + totals.corrupt
        + common.messages.saturating_sub(consumed);
    if !common.quiet || errors > 0 {
        eprintln!(
            "verified: {} in order, {} gaps ({} missing), {} duplicates, {} corrupt",
            totals.in_order, totals.gaps, totals.missing, totals.duplicates, totals.corrupt
        );
    }
    Ok(Report {
        transport: common.transport.clone(),
        acks: None,
        messages: consumed,
        size: bytes.checked_div(consumed).unwrap_or(0) as usize,
        seconds,
        errors,
        latency: None,
    })
}

fn ping(args: &BenchPingArgs) -> Result<Report> {
    let common = &args.common;
    if !(1..=PING_WINDOW_MAX).contains(&args.window) {
        bail!("--window must be 1..={PING_WINDOW_MAX}");
    }
    if !(PING_PAYLOAD_BYTES_MIN..=PING_PAYLOAD_BYTES_MAX).contains(&args.size) {
        bail!("--size must be {PING_PAYLOAD_BYTES_MIN}..={PING_PAYLOAD_BYTES_MAX} bytes");
    }
    let mut pinger = Pinger::open(common.broker.broker, args)
        .with_context(|| format!("cannot open a UDP socket to {}", common.broker.broker))?;
    pinger.run(args.warmup, None, &mut Progress::new(true, "answered"))?;
    let mut latency =
        Histogram::<u64>::new_with_bounds(1, LATENCY_NS_MAX, 3).expect("static bounds");
    let mut progress = Progress::new(common.quiet, "answered");
    let started = Instant::now();
    let tally = pinger.run(common.messages, Some(&mut latency), &mut progress)?;
    let seconds = started.elapsed().as_secs_f64();
    progress.done(tally.answered());
    if !common.quiet || tally.errors() > 0 {
        eprintln!(
            "ping: window {}: {} pongs, {} reflected pings (echo), {} lost, {} error answers, {} corrupt, {} stray datagrams",
            args.window, tally.pongs, tally.reflected, tally.lost, tally.error_frames, tally.corrupt, tally.stray
        );
    }
    Ok(Report {
        transport: common.transport.clone(),
        acks: None,
        messages: common.messages,
        size: args.size,
        seconds,
        errors: tally.errors(),
        latency: Some(latency),
    })
}

/// A ping sent and not answered yet.
#[derive(Copy, Clone)]
struct Outstanding {
    request_id: u64,
    sent_at: Instant,
}

/// What became of the pings of one [`Pinger::run`].
#[derive(Default)]
struct PingTally {
    /// Answered by a Pong (the data plane).
    pongs: u64,
    /// Answered by the request itself, reflected (echo mode).
    reflected: u64,
    /// Not answered within `--lost-after-ms`.
    lost: u64,
    /// Answered by an Error frame.
    error_frames: u64,
    /// Answered with a payload other than the one sent.
    corrupt: u64,
    /// Datagrams that answer no outstanding ping (late, duplicated, or not frames).
    stray: u64,
}

impl PingTally {
    fn answered(&self) -> u64 {
        self.pongs + self.reflected
    }
    fn errors(&self) -> u64 {
        self.lost + self.error_frames + self.corrupt
    }
}

/// One UDP socket with up to `window` pings in flight; slot `request_id % window` holds a
/// ping, so request ids are sent in order and a slot frees when its ping is answered or lost.
struct Pinger {
    socket: UdpSocket,
    broker: SocketAddr,
    /// Whether any ping was ever answered: a loss before that means nobody is there.
    answered_ever: bool,
    window: Vec<Option<Outstanding>>,
    in_flight: usize,
    next_request_id: u64,
    payload_bytes: usize,
    lost_after: Duration,
    send_buf: Vec<u8>,
    recv_buf: Vec<u8>,
}

impl Pinger {
    fn open(broker: SocketAddr, args: &BenchPingArgs) -> std::io::Result<Pinger> {
        let bind: SocketAddr = if broker.is_ipv4() {
            ([0, 0, 0, 0], 0).into()
        } else {
            ([0u16; 8], 0).into()
        };
        let socket = UdpSocket::bind(bind)?;
        socket.connect(broker)?;
        socket.set_read_timeout(Some(PING_RECV_WAIT))?;
        Ok(Pinger {
            socket,
            broker,
            answered_ever: false,
            window: vec![None; args.window],
            in_flight: 0,
            // Away from zero, so a zeroed frame never matches a ping.
            next_request_id: 1,
            payload_bytes: args.size,
            lost_after: Duration::from_millis(args.lost_after_ms),
            send_buf: vec![0; FRAME_HEADER_BYTES + args.size],
            recv_buf: vec![0; PING_RECV_BUFFER_BYTES],
        })
    }

    /// Sends `count` pings, keeping the window full, and returns when each is answered or
    /// lost; round trips go to `latency` when given.
    fn run(
        &mut self,
        count: u64,
        mut latency: Option<&mut Histogram<u64>>,
        progress: &mut Progress,
    ) -> Result<PingTally> {
        let mut tally = PingTally::default();
        let last_request_id = self.next_request_id + count;
        let mut last_expiry = Instant::now();
        while self.next_request_id < last_request_id || self.in_flight > 0 {
            while self.next_request_id < last_request_id
                && self.slot(self.next_request_id).is_none()
            {
                self.send_ping()?;
            }
            if let Some(received) = self.receive()? {
                let received_at = Instant::now();
                match self.answer(received) {
                    Some((outstanding, answer)) => {
                        match answer {
                            Answer::Pong => tally.pongs += 1,
                            Answer::Reflected => tally.reflected += 1,
                            Answer::Error => tally.error_frames += 1,
                            Answer::Corrupt => tally.corrupt += 1,
                        }
                        if let (Some(h), Answer::Pong | Answer::Reflected) = (&mut latency, answer)
                        {
                            let ns = (received_at - outstanding.sent_at).as_nanos() as u64;
                            h.saturating_record(ns.max(1));
                        }
                    }
                    None => tally.stray += 1,
                }
                progress.tick(tally.answered());
            }
            let now = Instant::now();
            if now.duration_since(last_expiry) >= PING_RECV_WAIT {
                last_expiry = now;
                tally.lost += self.expire(now);
                if tally.lost > 0 && !self.answered_ever {
                    bail!(
                        "no answer from {} within {} ms: is a data plane (or one with --echo) there?",
                        self.broker,
                        self.lost_after.as_millis()
                    );
                }
            }
        }
        Ok(tally)
    }

    fn slot(&self, request_id: u64) -> Option<Outstanding> {
        self.window[(request_id % self.window.len() as u64) as usize]
    }

    fn send_ping(&mut self) -> Result<()> {
        let request_id = self.next_request_id;
        self.next_request_id += 1;
        FrameHeader::new(Opcode::Ping, request_id, 0, self.payload_bytes)
            .encode(&mut self.send_buf);
        ping_payload(request_id, &mut self.send_buf[FRAME_HEADER_BYTES..]);
        let sent_at = Instant::now();
        // Bounded: an ICMP error left from an earlier datagram fails one send only.
        for _ in 0..2 {
            match self.socket.send(&self.send_buf) {
                Ok(_) => break,
                Err(e) if e.kind() == ErrorKind::ConnectionRefused => {}
                // A full queue: the datagram is lost, which `expire` will count.
                Err(e)
                    if e.kind() == ErrorKind::WouldBlock
                        || e.raw_os_error() == Some(NO_BUFFER_SPACE_ERRNO) =>
                {
                    break
                }
                Err(e) => return Err(e).context("send"),
            }
        }
        let slot = (request_id % self.window.len() as u64) as usize;
        debug_assert!(self.window[slot].is_none());
        self.window[slot] = Some(Outstanding {
            request_id,
            sent_at,
        });
        self.in_flight += 1;
        Ok(())
    }

    /// One datagram, waiting at most [`PING_RECV_WAIT`]; its length.
    fn receive(&mut self) -> Result<Option<usize>> {
        match self.socket.recv(&mut self.recv_buf) {
            Ok(n) => Ok(Some(n)),
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock
                        | ErrorKind::TimedOut
                        | ErrorKind::Interrupted
                        | ErrorKind::ConnectionRefused
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(e).context("receive"),
        }
    }

    /// Matches a received datagram with its outstanding ping and frees the slot.
    fn answer(&mut self, bytes: usize) -> Option<(Outstanding, Answer)> {
        let (header, payload) = decode_frame(&self.recv_buf[..bytes]).ok()?;
        let slot = (header.request_id % self.window.len() as u64) as usize;
        let outstanding = self.window[slot].filter(|o| o.request_id == header.request_id)?;
        self.answered_ever = true;
        let answer = match header.opcode {
            Opcode::Error => Answer::Error,
            Opcode::Pong | Opcode::Ping if header.error != 0 => Answer::Error,
            Opcode::Pong | Opcode::Ping
                if !is_ping_payload(header.request_id, payload, self.payload_bytes) =>
            {
                Answer::Corrupt
            }
            Opcode::Pong => Answer::Pong,
            Opcode::Ping => Answer::Reflected,
            _ => return None,
        };
        self.window[slot] = None;
        self.in_flight -= 1;
        Some((outstanding, answer))
    }

    /// Frees the slots of pings unanswered for `lost_after`; returns how many.
    fn expire(&mut self, now: Instant) -> u64 {
        let mut lost = 0;
        for slot in self.window.iter_mut() {
            if slot.is_some_and(|o| now.duration_since(o.sent_at) >= self.lost_after) {
                *slot = None;
                lost += 1;
            }
        }
        self.in_flight -= lost as usize;
        lost
    }
}

/// How an outstanding ping was answered.
#[derive(Copy, Clone)]
enum Answer {
    Pong,
    Reflected,
    Error,
    Corrupt,
}

/// The payload of ping `request_id`: its id, then bytes counting up from it.
fn ping_payload(request_id: u64, out: &mut [u8]) {
    let id = request_id.to_le_bytes();
    out[..PING_PAYLOAD_BYTES_MIN].copy_from_slice(&id);
    for (i, byte) in out[PING_PAYLOAD_BYTES_MIN..].iter_mut().enumerate() {
        *byte = id[0].wrapping_add(i as u8);
    }
}

fn is_ping_payload(request_id: u64, payload: &[u8], bytes: usize) -> bool {
    let id = request_id.to_le_bytes();
    payload.len() == bytes
        && payload[..PING_PAYLOAD_BYTES_MIN] == id
        && payload[PING_PAYLOAD_BYTES_MIN..]
            .iter()
            .enumerate()
            .all(|(i, &b)| b == id[0].wrapping_add(i as u8))
}

/// Deliveries seen by a bench producer.
#[derive(Default)]
struct Tally {
    delivered: u64,
    errors: u64,
    first_error: Option<String>,
}

impl Tally {
    fn record(&mut self, delivery: Delivery, latency: &mut Histogram<u64>) {
        match delivery.error {
            Some(error) => {
                self.errors += 1;
                self.first_error.get_or_insert_with(|| error.to_string());
            }
            None => {
                self.delivered += 1;
                latency.saturating_record(delivery.latency_ns.max(1));
            }
        }
    }
}

/// A line on stderr about once a second.
struct Progress {
    quiet: bool,
    verb: &'static str,
    started: Instant,
    last: Instant,
}

impl Progress {
    fn new(quiet: bool, verb: &'static str) -> Progress {
        let now = Instant::now();
        Progress {
            quiet,
            verb,
            started: now,
            last: now,
        }
    }
    fn tick(&mut self, count: u64) {
        if self.quiet || self.last.elapsed() < PROGRESS_INTERVAL {
            return;
        }
        self.last = Instant::now();
        let seconds = self.started.elapsed().as_secs_f64();
        eprintln!(
            "... {} {count} messages in {seconds:.1} s ({:.0}/s)",
            self.verb,
            count as f64 / seconds
        );
    }
    fn done(&mut self, count: u64) {
        if !self.quiet && self.started.elapsed() >= PROGRESS_INTERVAL {
            self.last = self.started;
            self.tick(count);
        }
    }
}
