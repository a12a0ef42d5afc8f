//! `precursor bench produce|consume|ping`: throughput and latency with self-checking payloads.
//!
//! Produce sends `--messages` payloads of `--size` bytes, each carrying its per-partition
//! sequence number and a CRC32C (`precursor_client::bench_payload`), round-robin over the
//! topic's partitions; latency is from `send()` to the ack, per message (HdrHistogram).
//! Consume reads the topic from its start and verifies every payload: intact, once, in
//! order per partition. Ping keeps up to `--window` Ping frames outstanding on one UDP socket
//! and times each round trip: against the data plane it measures the packet path without
//! the log; against `precursor-dataplane --echo`, which reflects every datagram unchanged
//! (the same Ping frame, same request id, comes back), the port's raw limit. Command-ring
//! asks the control plane (admin socket) for a `ping_dataplane` series: `--requests` pings
//! through the shared-memory rings, each round trip timed inside the control plane's link
//! thread; with `--rate R --seconds S` it instead sends R one-ping admin requests per second
//! on one connection (a paced load for measuring the data plane under admin traffic) and
//! times each from the client. `--json` prints one object; otherwise a line for people.
//! Timing is reported, never judged: comparisons live in docs/benchmarks.md.

use super::admin::AdminTarget;
use super::produce::parse_acks;
use super::{BrokerArgs, Transport};
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
    /// Command-ring round trips (control plane -> data plane -> control plane), through
    /// the admin socket; or, with --rate and --seconds, a paced admin load.
    CommandRing(BenchCommandRingArgs),
}

/// Most one-ping admin requests per second `bench command-ring --rate` sends.
const RING_RATE_MAX: u32 = 100_000;
/// Longest paced run, in seconds.
const RING_SECONDS_MAX: f64 = 3_600.0;
/// Requests sent on one admin connection before a new one is opened (the server serves at
/// most 10,000 per connection).
const RING_REQUESTS_PER_CONNECTION: u64 = 5_000;
/// How long a paced request waits for its answer, in milliseconds.
const RING_RESPONSE_TIMEOUT_MS: u64 = 10_000;
/// Longest answer line a paced request reads, in bytes.
const RING_RESPONSE_BYTES_MAX: u64 = 4_096;

#[derive(Args)]
pub struct BenchCommandRingArgs {
    /// Pings in the measured series (one admin request; the link thread times each).
    #[arg(long, short = 'n', default_value_t = 10_000)]
    pub requests: u32,
    /// Paced mode: one-ping admin requests per second (needs --seconds).
    #[arg(long, requires = "seconds", value_parser = clap::value_parser!(u32).range(1..=RING_RATE_MAX as i64))]
    pub rate: Option<u32>,
    /// Paced mode: for how long, in seconds (needs --rate).
    #[arg(long, requires = "rate")]
    pub seconds: Option<f64>,
    #[command(flatten)]
    pub target: AdminTarget,
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
    /// Un-acknowledged batches per partition. At most 5 keeps every retransmit within the
    /// batches the broker remembers per producer (Kafka's limit for idempotent producers),
    /// so a retransmit is answered with its offsets.
    #[arg(long, default_value_t = 5)]
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
        BenchCommand::CommandRing(args) => return command_ring(&args),
        BenchCommand::Produce(args) => {
            let report = produce(&args)?;
            (args.common, report)
        }
        BenchCommand::Consume(args) => {
            let report = consume(&args)?;
            (args.common, report)
        }
        BenchCommand::Ping(args) => {
            if args.common.broker.transport != Transport::Udp {
                bail!("bench ping measures the UDP path only (windowed raw datagrams); for IPC round trips use bench produce --transport ipc");
            }
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
        transport: common.broker.transport.name().to_string(),
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
        transport: common.broker.transport.name().to_string(),
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
        transport: common.broker.transport.name().to_string(),
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

/// `bench command-ring`: a series measured by the link thread, or a paced admin load.
fn command_ring(args: &BenchCommandRingArgs) -> Result<ExitCode> {
    let socket = args.target.socket()?;
    let (report, errors) = match (args.rate, args.seconds) {
        (Some(rate), Some(seconds)) => {
            if !(seconds > 0.0 && seconds <= RING_SECONDS_MAX) {
                bail!("--seconds {seconds}: must be more than 0 and at most {RING_SECONDS_MAX}");
            }
            paced_ring_load(&socket, rate, seconds)?
        }
        _ => ring_series(&socket, args.requests)?,
    };
    if args.target.json {
        println!("{report}");
    } else {
        let us = |field: &str| {
            report[field]
                .as_f64()
                .map_or("-".into(), |v| format!("{v:.1}"))
        };
        println!(
            "command-ring ({}): {} round trips in {:.3} s, {:.0}/s; p50 {} us, p90 {} us, p99 {} us, p99.9 {} us, max {} us; {} errors",
            report["mode"].as_str().unwrap_or("?"),
            report["messages"],
            report["seconds"].as_f64().unwrap_or(0.0),
            report["msgs_per_sec"].as_f64().unwrap_or(0.0),
            us("p50_us"),
            us("p90_us"),
            us("p99_us"),
            us("p999_us"),
            us("max_us"),
            errors
        );
    }
    Ok(if errors == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// One `ping_dataplane` request of `count` pings; percentiles as the link thread measured.
fn ring_series(socket: &std::path::Path, count: u32) -> Result<(serde_json::Value, u64)> {
    use precursor_controlplane::admin::{request, Request, Response};
    let started = Instant::now();
    let response = request(socket, &Request::PingDataplane { count })?;
    let seconds = started.elapsed().as_secs_f64();
    match response {
        Response::Latency {
            count: measured,
            p50_ns,
            p90_ns,
            p99_ns,
            p999_ns,
            max_ns,
        } => {
            let errors = u64::from(count.saturating_sub(measured));
            let us = |ns: u64| ns as f64 / 1e3;
            Ok((
                serde_json::json!({
                    "transport": "command-ring",
                    "mode": "series",
                    "messages": measured,
                    "seconds": seconds,
                    "msgs_per_sec": (f64::from(measured) / seconds.max(1e-9)).round(),
                    "p50_us": us(p50_ns),
                    "p90_us": us(p90_ns),
                    "p99_us": us(p99_ns),
                    "p999_us": us(p999_ns),
                    "max_us": us(max_ns),
                    "errors": errors,
                }),
                errors,
            ))
        }
        Response::Error { code, message } => bail!("{message} ({code})"),
        other => bail!("unexpected answer to ping_dataplane: {other:?}"),
    }
}

/// One admin connection for the paced load: a line out, a line back.
struct AdminConnection {
    reader: std::io::BufReader<std::os::unix::net::UnixStream>,
    writer: std::os::unix::net::UnixStream,
    sent: u64,
}

impl AdminConnection {
    fn open(socket: &std::path::Path) -> Result<AdminConnection> {
        let stream = std::os::unix::net::UnixStream::connect(socket).with_context(|| {
            format!(
                "cannot reach the control plane at {}: is the broker running?",
                socket.display()
            )
        })?;
        let timeout = Some(Duration::from_millis(RING_RESPONSE_TIMEOUT_MS));
        stream.set_read_timeout(timeout)?;
        stream.set_write_timeout(timeout)?;
        Ok(AdminConnection {
            reader: std::io::BufReader::new(stream.try_clone()?),
            writer: stream,
            sent: 0,
        })
    }

    /// Sends `line` (one request, ending in a newline) and returns the answer line.
    fn ask(&mut self, line: &[u8], answer: &mut String) -> std::io::Result<()> {
        use std::io::{BufRead, Read, Write};
        self.sent += 1;
        self.writer.write_all(line)?;
        answer.clear();
        (&mut self.reader)
            .take(RING_RESPONSE_BYTES_MAX)
            .read_line(answer)?;
        if answer.ends_with('\n') {
            Ok(())
        } else {
            Err(std::io::Error::new(
                ErrorKind::UnexpectedEof,
                "the control plane closed the connection",
            ))
        }
    }
}

/// `rate` one-ping admin requests per second for `seconds`, each timed from the client
/// (socket + control plane + ring). Paced on an absolute schedule: a late request is sent
/// at once, never skipped.
fn paced_ring_load(
    socket: &std::path::Path,
    rate: u32,
    seconds: f64,
) -> Result<(serde_json::Value, u64)> {
    use precursor_controlplane::admin::{Request, Response};
    let mut line = serde_json::to_string(&Request::PingDataplane { count: 1 })?;
    line.push('\n');
    let total = (f64::from(rate) * seconds).round().max(1.0) as u64;
    let interval = Duration::from_secs_f64(1.0 / f64::from(rate));
    let mut latency =
        Histogram::<u64>::new_with_bounds(1, LATENCY_NS_MAX, 3).expect("static bounds");
    let mut ring = Histogram::<u64>::new_with_bounds(1, LATENCY_NS_MAX, 3).expect("static bounds");
    let mut connection = AdminConnection::open(socket)?;
    let mut answer = String::new();
    let mut errors = 0u64;
    let started = Instant::now();
    for i in 0..total {
        let due = started + interval.mul_f64(i as f64);
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        if connection.sent >= RING_REQUESTS_PER_CONNECTION {
            connection = AdminConnection::open(socket)?;
        }
        let sent = Instant::now();
        if connection.ask(line.as_bytes(), &mut answer).is_err() {
            errors += 1;
            connection = AdminConnection::open(socket)?;
            continue;
        }
        let elapsed = sent.elapsed().as_nanos().max(1) as u64;
        match serde_json::from_str::<Response>(&answer) {
            Ok(Response::Latency {
                count: 1, p50_ns, ..
            }) => {
                latency.saturating_record(elapsed);
                ring.saturating_record(p50_ns.max(1));
            }
            _ => errors += 1,
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let messages = latency.len();
    let us = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1e3;
    Ok((
        serde_json::json!({
            "transport": "command-ring",
            "mode": "paced",
            "rate": rate,
            "messages": messages,
            "seconds": seconds,
            "msgs_per_sec": (messages as f64 / seconds.max(1e-9)).round(),
            "p50_us": us(&latency, 0.5),
            "p90_us": us(&latency, 0.9),
            "p99_us": us(&latency, 0.99),
            "p999_us": us(&latency, 0.999),
            "max_us": latency.max() as f64 / 1e3,
            "ring_p50_us": us(&ring, 0.5),
            "ring_p99_us": us(&ring, 0.99),
            "errors": errors,
        }),
        errors,
    ))
}
