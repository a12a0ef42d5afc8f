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
use super::{bench_ipc, BrokerArgs, Transport};
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
    /// Fixed offered rate in messages/s over all producers: message i is due at
    /// start + i / rate, and its latency is measured from that intended time
    /// (coordinated-omission corrected). Without it: as fast as the window allows, and
    /// latency is from each send.
    #[arg(long, value_name = "MSGS_PER_S")]
    pub rate: Option<f64>,
    /// Producers, each a thread with its own client and socket, sharing --messages and
    /// --rate. With more than one, payload sequence numbers restart per producer, so a
    /// `bench consume` of the topic would not verify.
    #[arg(long, default_value_t = 1)]
    pub producers: u32,
    /// Messages each producer sends (and has acknowledged) before the measured ones.
    #[arg(long, default_value_t = 0)]
    pub warmup: u64,
    /// IPC only: send copies of one batch encoded once (--records-per-batch records),
    /// --in-flight batches outstanding: the channel and the lcore without the client's
    /// per-message encoding. Not verifiable by `bench consume` (sequences repeat).
    #[arg(long, conflicts_with_all = ["rate", "producers"])]
    pub pre_encoded: bool,
    /// Records in the pre-encoded batch.
    #[arg(long, default_value_t = 1000, requires = "pre_encoded")]
    pub records_per_batch: usize,
}

/// Most producers of one `bench produce`.
const PRODUCERS_MAX: u32 = 64;
/// Highest fixed rate `bench produce --rate` accepts, in messages/s.
const RATE_MAX: f64 = 100_000_000.0;
/// The schema version of the --json object (the one every system's result uses:
/// bench/src/result.rs).
const RESULT_SCHEMA: u32 = 1;

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

/// The result of one run, as printed with --json: the schema every system's result uses
/// (bench/src/result.rs), plus `acks`.
struct Report {
    transport: BenchTransport,
    workload: &'static str,
    acks: Option<Acks>,
    producers: u32,
    consumers: u32,
    messages: u64,
    size: usize,
    window: Option<usize>,
    rate: Option<f64>,
    /// Latency measured from each message's intended send time (fixed rate).
    from_intended: bool,
    seconds: f64,
    errors: u64,
    latency: Option<Histogram<u64>>,
}

/// The latency curve's points per factor of ten in 1 / (1 - q), up to 99.9999 %.
const CURVE_POINTS_PER_DECADE: u32 = 10;
const CURVE_DECADES: u32 = 6;

/// `[percentile, us]` points of the "latency by percentile" curve of the plots.
fn latency_curve(h: &Histogram<u64>) -> Vec<[f64; 2]> {
    (0..=CURVE_POINTS_PER_DECADE * CURVE_DECADES)
        .map(|step| {
            let q = 1.0 - 10f64.powf(-f64::from(step) / f64::from(CURVE_POINTS_PER_DECADE));
            [(q * 1e8).round() / 1e6, h.value_at_quantile(q) as f64 / 1e3]
        })
        .collect()
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
            .filter(|h| !h.is_empty())
            .map(|h| h.value_at_quantile(q) as f64 / 1e3)
    }
    fn max_us(&self) -> Option<f64> {
        self.latency
            .as_ref()
            .filter(|h| !h.is_empty())
            .map(|h| h.max() as f64 / 1e3)
    }

    fn json(&self) -> serde_json::Value {
        let round1 = |v: Option<f64>| v.map(|v| (v * 10.0).round() / 10.0);
        serde_json::json!({
            "schema": RESULT_SCHEMA,
            // Each transport is its own system in the comparison tables.
            "system": match self.transport {
                Transport::Udp => "precursor",
                Transport::Ipc => "precursor-ipc",
                Transport::Rdma => "precursor-rdma",
            },
            "transport": self.transport.name(),
            "workload": self.workload,
            "acks": self.acks.map(|a| a.name()),
            "durability": self.acks.map(|a| a.name()),
            "producers": self.producers,
            "consumers": self.consumers,
            "messages": self.messages,
            "size": self.size,
            "window": self.window,
            "rate": self.rate,
            "latency_from": self.latency.as_ref().map(|_| if self.from_intended { "intended" } else { "send" }),
            "seconds": (self.seconds * 1e6).round() / 1e6,
            "msgs_per_sec": self.msgs_per_sec().round(),
            "mb_per_sec": (self.mb_per_sec() * 100.0).round() / 100.0,
            "p50_us": round1(self.percentile_us(0.5)),
            "p90_us": round1(self.percentile_us(0.9)),
            "p99_us": round1(self.percentile_us(0.99)),
            "p999_us": round1(self.percentile_us(0.999)),
            "p9999_us": round1(self.percentile_us(0.9999)),
            "max_us": round1(self.max_us()),
            "curve": self.latency.as_ref().filter(|h| !h.is_empty()).map_or_else(Vec::new, latency_curve),
            "errors": self.errors,
        })
    }

    fn print(&self, json: bool) {
        let number = |v: Option<f64>| v.map_or("null".to_string(), |v| format!("{v:.1}"));
        if json {
            println!("{}", self.json());
        } else {
            print!(
                "{} messages of {} B over {} in {:.3} s: {:.0} msgs/s, {:.1} MB/s",
                self.messages,
                self.size,
                self.transport.name(),
                self.seconds,
                self.msgs_per_sec(),
                self.mb_per_sec()
            );
            if self.latency.is_some() {
                print!(
                    "; latency{} p50 {} us, p90 {} us, p99 {} us, p99.9 {} us, p99.99 {} us, max {} us",
                    if self.from_intended { " from intended send" } else { "" },
                    number(self.percentile_us(0.5)),
                    number(self.percentile_us(0.9)),
                    number(self.percentile_us(0.99)),
                    number(self.percentile_us(0.999)),
                    number(self.percentile_us(0.9999)),
                    number(self.max_us())
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

/// The transports `bench` drives: the client commands' `--transport` (udp, ipc). The
/// producer and consumer get it through `BrokerArgs::client_config`.
pub type BenchTransport = super::Transport;

/// Opens a producer over `transport`.
fn open_producer(transport: BenchTransport, config: ProducerConfig) -> Result<Producer> {
    Producer::new(config)
        .with_context(|| format!("cannot start the producer over {}", transport.name()))
}

/// Opens a consumer over `transport`.
fn open_consumer(transport: BenchTransport, config: ConsumerConfig) -> Result<Consumer> {
    Consumer::new(config)
        .with_context(|| format!("cannot start the consumer over {}", transport.name()))
}

/// The intended send times of a fixed-rate run: message `i` of producer `k` of `n` is due
/// at `start + (k + i * n) / rate` — the producers interleave at `rate / n` each.
#[derive(Clone, Copy, Debug)]
struct Schedule {
    start: Instant,
    interval_ns: f64,
    offset_ns: f64,
}

impl Schedule {
    fn new(start: Instant, rate: f64, producer: u32, producers: u32) -> Schedule {
        debug_assert!(rate > 0.0 && producer < producers);
        let total_interval_ns = 1e9 / rate;
        Schedule {
            start,
            interval_ns: total_interval_ns * f64::from(producers),
            offset_ns: total_interval_ns * f64::from(producer),
        }
    }

    fn intended(&self, index: u64) -> Instant {
        let ns = self.offset_ns + index as f64 * self.interval_ns;
        self.start + Duration::from_nanos(ns.round() as u64)
    }
}

/// Checks `bench produce`'s arguments; each bad one is named.
fn check_produce_args(args: &BenchProduceArgs) -> Result<()> {
    if args.size < bench_payload::PAYLOAD_BYTES_MIN {
        bail!(
            "--size must be at least {} bytes",
            bench_payload::PAYLOAD_BYTES_MIN
        );
    }
    if !(1..=PRODUCERS_MAX).contains(&args.producers) {
        bail!(
            "--producers {}: must be 1..={PRODUCERS_MAX}",
            args.producers
        );
    }
    if u64::from(args.producers) > args.common.messages {
        bail!(
            "--producers {} exceeds --messages {}",
            args.producers,
            args.common.messages
        );
    }
    if let Some(rate) = args.rate {
        if !(rate > 0.0 && rate <= RATE_MAX) {
            bail!("--rate {rate}: must be more than 0 and at most {RATE_MAX}");
        }
        if args.acks == Acks::None {
            bail!("--rate measures produce -> ack latency: it needs --acks leader or durable");
        }
    }
    Ok(())
}

/// What one producer thread did.
struct ProducerRun {
    latency: Histogram<u64>,
    tally: Tally,
    stats: precursor_client::ProducerStats,
    flush_error: Option<String>,
}

fn produce(args: &BenchProduceArgs) -> Result<Report> {
    if args.pre_encoded {
        return pre_encoded_produce(args);
    }
    check_produce_args(args)?;
    let common = &args.common;
    let n = args.producers;
    let share = |k: u32| {
        let base = common.messages / u64::from(n);
        base + if k == 0 {
            common.messages % u64::from(n)
        } else {
            0
        }
    };
    // Producers connect and warm up, then all start measuring from one instant.
    let ready = std::sync::Barrier::new(n as usize);
    let start = std::sync::OnceLock::new();
    let runs: Vec<Result<ProducerRun>> = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..n)
            .map(|k| {
                let (ready, start) = (&ready, &start);
                scope.spawn(move || produce_one(args, k, share(k), ready, start))
            })
            .collect();
        threads
            .into_iter()
            .map(|t| {
                t.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a producer thread panicked")))
            })
            .collect()
    });
    let seconds = start
        .get()
        .map_or(0.0, |s: &Instant| s.elapsed().as_secs_f64());
    let mut latency =
        Histogram::<u64>::new_with_bounds(1, LATENCY_NS_MAX, 3).expect("static bounds");
    let (mut delivered, mut errors) = (0u64, 0u64);
    for run in runs {
        let run = run?;
        latency.add(&run.latency).expect("same bounds");
        delivered += run.tally.delivered;
        errors += run.tally.errors;
        if let Some(error) = &run.flush_error {
            eprintln!("precursor: flush: {error}");
        }
        if let Some(error) = &run.tally.first_error {
            eprintln!("precursor: first error: {error}");
        }
        if !common.quiet {
            eprintln!(
                "producer: {} batches, {} retransmits, {} duplicates acknowledged, {} refusals answered by {} resends in {} rounds, {} leader look-ups, {} partitions moved",
                run.stats.batches_sent,
                run.stats.retransmits,
                run.stats.duplicates,
                run.stats.retriable_errors,
                run.stats.resends,
                run.stats.resend_rounds,
                run.stats.leader_look_ups,
                run.stats.leader_moves
            );
        }
    }
    Ok(Report {
        transport: common.broker.transport,
        workload: "produce",
        acks: Some(args.acks),
        producers: n,
        consumers: 0,
        messages: common.messages,
        size: args.size,
        window: Some(args.in_flight),
        rate: args.rate,
        from_intended: args.rate.is_some(),
        seconds,
        errors: errors + common.messages.saturating_sub(delivered + errors),
        latency: (args.acks != Acks::None).then_some(latency),
    })
}

/// One producer: connects, warms up, waits for the others, then sends `count` messages
/// (at its share of --rate when given) and waits for their acks.
fn produce_one(
    args: &BenchProduceArgs,
    k: u32,
    count: u64,
    ready: &std::sync::Barrier,
    start: &std::sync::OnceLock<Instant>,
) -> Result<ProducerRun> {
    let common = &args.common;
    let config = ProducerConfig {
        client: common.broker.client_config()?,
        acks: args.acks,
        linger_us: args.linger_us,
        in_flight_max: args.in_flight,
        batch_bytes_max: usize::MAX,
        auto_create_topics: true,
        ..ProducerConfig::default()
    };
    // A failure before the barrier must still release the others: wait, then report.
    let opened = open_producer(common.broker.transport, config).and_then(|mut producer| {
        let partitions = producer
            .partition_count(&args.topic)
            .with_context(|| format!("topic {:?}", args.topic))?;
        Ok((producer, partitions))
    });
    let (mut producer, partitions, mut sequences, mut payload) = match opened {
        Ok((producer, partitions)) => (
            producer,
            partitions,
            vec![0u64; partitions as usize],
            Vec::with_capacity(args.size),
        ),
        Err(error) => {
            ready.wait();
            return Err(error);
        }
    };
    let timeout = Duration::from_millis(common.broker.timeout_ms.saturating_mul(3));
    let mut warm = Histogram::<u64>::new_with_bounds(1, LATENCY_NS_MAX, 3).expect("static bounds");
    let mut warm_tally = Tally::default();
    for i in 0..args.warmup {
        let partition = (i % u64::from(partitions)) as u16;
        bench_payload::encode(sequences[partition as usize], args.size, &mut payload);
        sequences[partition as usize] += 1;
        producer.send(&args.topic, Some(partition), None, &payload)?;
        producer.drain_deliveries(|d| warm_tally.record(d, 0, &mut warm));
    }
    let warmed = producer.flush(timeout);
    producer.drain_deliveries(|d| warm_tally.record(d, 0, &mut warm));
    ready.wait();
    if let Err(error) = warmed {
        bail!("warm-up flush: {error}");
    }
    if warm_tally.errors > 0 {
        bail!(
            "warm-up: {} errors, first: {}",
            warm_tally.errors,
            warm_tally.first_error.unwrap_or_default()
        );
    }
    let started = *start.get_or_init(Instant::now);
    let schedule = args
        .rate
        .map(|rate| Schedule::new(started, rate, k, args.producers));
    // Message ids count from 0 per producer; the measured ones follow the warm-up's.
    let first_id = args.warmup;
    // How late each measured message was sent after its intended time (fixed rate only),
    // indexed by id - first_id: added to its send -> ack latency.
    let mut late_ns = vec![
        0u64;
        if schedule.is_some() {
            count as usize
        } else {
            0
        }
    ];
    let mut latency =
        Histogram::<u64>::new_with_bounds(1, LATENCY_NS_MAX, 3).expect("static bounds");
    let mut tally = Tally::default();
    let mut progress = Progress::new(common.quiet || k > 0, "produced");
    for i in 0..count {
        if let Some(schedule) = &schedule {
            let due = schedule.intended(i);
            while Instant::now() < due {
                producer.poll()?;
                producer
                    .drain_deliveries(|d| tally.record_late(d, first_id, &late_ns, &mut latency));
            }
            late_ns[i as usize] = Instant::now().saturating_duration_since(due).as_nanos() as u64;
        }
        let partition = (i % u64::from(partitions)) as u16;
        let seq = &mut sequences[partition as usize];
        bench_payload::encode(*seq, args.size, &mut payload);
        *seq += 1;
        producer.send(&args.topic, Some(partition), None, &payload)?;
        producer.drain_deliveries(|d| tally.record_late(d, first_id, &late_ns, &mut latency));
        progress.tick(tally.delivered);
    }
    let flushed = producer.flush(timeout);
    producer.drain_deliveries(|d| tally.record_late(d, first_id, &late_ns, &mut latency));
    progress.done(tally.delivered);
    Ok(ProducerRun {
        latency,
        tally,
        stats: producer.stats(),
        flush_error: flushed.err().map(|e| e.to_string()),
    })
}

fn consume(args: &BenchConsumeArgs) -> Result<Report> {
    let common = &args.common;
    let config = ConsumerConfig {
        client: common.broker.client_config()?,
        ..ConsumerConfig::default()
    };
    let mut consumer = open_consumer(common.broker.transport, config)?;
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
        transport: common.broker.transport,
        workload: "consume",
        acks: None,
        producers: 0,
        consumers: 1,
        messages: consumed,
        size: bytes.checked_div(consumed).unwrap_or(0) as usize,
        window: None,
        rate: None,
        from_intended: false,
        seconds,
        errors,
        latency: None,
    })
}

/// `bench produce --pre-encoded` (IPC): see [`bench_ipc::pre_encoded_produce`].
fn pre_encoded_produce(args: &BenchProduceArgs) -> Result<Report> {
    let common = &args.common;
    if common.broker.transport != Transport::Ipc {
        bail!("--pre-encoded needs --transport ipc");
    }
    if args.records_per_batch == 0 || args.in_flight == 0 {
        bail!("--records-per-batch and --in-flight must be at least 1");
    }
    let run = bench_ipc::pre_encoded_produce(
        &common.broker.ipc_dir,
        &args.topic,
        common.messages,
        args.size,
        args.records_per_batch,
        args.in_flight,
        args.acks,
    )?;
    Ok(Report {
        transport: common.broker.transport,
        workload: "produce-pre-encoded",
        acks: Some(args.acks),
        producers: 1,
        consumers: 0,
        messages: run.messages,
        size: args.size,
        window: Some(args.in_flight),
        rate: None,
        from_intended: false,
        seconds: run.seconds,
        errors: 0,
        latency: (args.acks != Acks::None).then_some(run.latency),
    })
}

/// `bench ping --transport ipc`: one Ping at a time over an IPC channel.
fn ipc_ping(args: &BenchPingArgs) -> Result<Report> {
    let common = &args.common;
    if args.window != 1 {
        bail!("bench ping over IPC keeps one ping outstanding (--window 1)");
    }
    let run = bench_ipc::ping(
        &common.broker.ipc_dir,
        common.messages,
        args.size,
        args.warmup,
    )?;
    Ok(Report {
        transport: common.broker.transport,
        workload: "ping",
        acks: None,
        producers: 1,
        consumers: 0,
        messages: run.messages,
        size: args.size,
        window: Some(1),
        rate: None,
        from_intended: false,
        seconds: run.seconds,
        errors: 0,
        latency: Some(run.latency),
    })
}

/// `bench ping --transport rdma`: see [`super::rdma::ping`].
fn rdma_ping(args: &BenchPingArgs) -> Result<Report> {
    let common = &args.common;
    if args.window != 1 {
        bail!("bench ping over RDMA keeps one ping outstanding (--window 1)");
    }
    let run = super::rdma::ping(
        common.broker.rdma_broker,
        common.messages,
        args.size,
        args.warmup,
    )?;
    Ok(Report {
        transport: common.broker.transport,
        workload: "ping",
        acks: None,
        producers: 1,
        consumers: 0,
        messages: run.messages,
        size: args.size,
        window: Some(1),
        rate: None,
        from_intended: false,
        seconds: run.seconds,
        errors: 0,
        latency: Some(run.latency),
    })
}

fn ping(args: &BenchPingArgs) -> Result<Report> {
    if args.common.broker.transport == Transport::Ipc {
        return ipc_ping(args);
    }
    if args.common.broker.transport == Transport::Rdma {
        return rdma_ping(args);
    }
    let common = &args.common;
    if !(1..=PING_WINDOW_MAX).contains(&args.window) {
        bail!("--window must be 1..={PING_WINDOW_MAX}");
    }
    if !(PING_PAYLOAD_BYTES_MIN..=PING_PAYLOAD_BYTES_MAX).contains(&args.size) {
        bail!("--size must be {PING_PAYLOAD_BYTES_MIN}..={PING_PAYLOAD_BYTES_MAX} bytes");
    }
    let broker = common.broker.broker.first();
    let mut pinger = Pinger::open(broker, args)
        .with_context(|| format!("cannot open a UDP socket to {broker}"))?;
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
        transport: common.broker.transport,
        workload: "ping",
        acks: None,
        producers: 1,
        consumers: 0,
        messages: common.messages,
        size: args.size,
        window: Some(args.window),
        rate: None,
        from_intended: false,
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
    /// A delivery, its latency from the send plus `late_ns` (how late the send was).
    fn record(&mut self, delivery: Delivery, late_ns: u64, latency: &mut Histogram<u64>) {
        match delivery.error {
            Some(error) => {
                self.errors += 1;
                self.first_error.get_or_insert_with(|| error.to_string());
            }
            None => {
                self.delivered += 1;
                latency.saturating_record(delivery.latency_ns.saturating_add(late_ns).max(1));
            }
        }
    }

    /// A measured delivery: `late_ns[id - first_id]` is how late its send was after its
    /// intended time (empty when not at a fixed rate), so its latency counts from then.
    fn record_late(
        &mut self,
        delivery: Delivery,
        first_id: u64,
        late_ns: &[u64],
        latency: &mut Histogram<u64>,
    ) {
        let late = delivery
            .id
            .0
            .checked_sub(first_id)
            .and_then(|i| late_ns.get(i as usize))
            .copied()
            .unwrap_or(0);
        self.record(delivery, late, latency);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;
    use precursor_client::MessageId;

    fn produce_args(extra: &[&str]) -> BenchProduceArgs {
        let mut argv = vec!["precursor", "bench", "produce"];
        argv.extend_from_slice(extra);
        match Cli::try_parse_from(argv).expect("parses").command {
            Command::Bench(BenchCommand::Produce(args)) => args,
            _ => unreachable!("bench produce"),
        }
    }

    #[test]
    fn rate_schedule_interleaves_producers_and_does_not_drift() {
        let start = Instant::now();
        let only = Schedule::new(start, 10_000.0, 0, 1);
        assert_eq!(only.intended(1) - start, Duration::from_micros(100));
        assert_eq!(only.intended(1_000_000) - start, Duration::from_secs(100));
        // Two producers at 1,000/s in total: 500/s each, 1 ms apart.
        let a = Schedule::new(start, 1_000.0, 0, 2);
        let b = Schedule::new(start, 1_000.0, 1, 2);
        assert_eq!(a.intended(1) - start, Duration::from_millis(2));
        assert_eq!(b.intended(0) - start, Duration::from_millis(1));
        assert_eq!(b.intended(1) - start, Duration::from_millis(3));
    }

    #[test]
    fn produce_arguments_are_checked_and_named() {
        let error = |extra: &[&str]| {
            check_produce_args(&produce_args(extra))
                .unwrap_err()
                .to_string()
        };
        assert!(error(&["--producers", "0"]).contains("--producers 0"));
        assert!(error(&["--producers", "65"]).contains("--producers 65"));
        assert!(error(&["--producers", "3", "--messages", "2"]).contains("exceeds --messages"));
        assert!(error(&["--rate", "0"]).contains("--rate 0"));
        assert!(error(&["--rate=-5"]).contains("--rate -5"));
        assert!(error(&["--rate", "1000", "--acks", "none"]).contains("needs --acks"));
        assert!(error(&["--size", "8"]).contains("--size"));
        let ok = produce_args(&["--rate", "10000", "--producers", "2", "--warmup", "100"]);
        check_produce_args(&ok).unwrap();
        assert_eq!((ok.rate, ok.producers, ok.warmup), (Some(10_000.0), 2, 100));
        assert_eq!(ok.common.broker.transport, BenchTransport::Udp);
        let unknown = Cli::try_parse_from([
            "precursor",
            "bench",
            "produce",
            "--transport",
            "carrier-pigeon",
        ]);
        assert!(unknown.is_err());
    }

    fn delivery(id: u64, latency_ns: u64) -> Delivery {
        Delivery {
            id: MessageId(id),
            topic_id: 1,
            partition: 0,
            offset: Some(id),
            latency_ns,
            error: None,
        }
    }

    /// A message sent 3 ms after its intended time and acked 20 us after the send counts
    /// 3.02 ms; warm-up ids (below first_id) count from their send.
    #[test]
    fn latency_counts_from_the_intended_time_at_a_fixed_rate() {
        let mut h = Histogram::<u64>::new_with_bounds(1, LATENCY_NS_MAX, 3).unwrap();
        let mut tally = Tally::default();
        let late_ns = [0, 3_000_000, 0];
        tally.record_late(delivery(11, 20_000), 10, &late_ns, &mut h);
        assert_eq!(h.max(), h.highest_equivalent(3_020_000));
        tally.record_late(delivery(3, 20_000), 10, &late_ns, &mut h);
        assert_eq!(h.min(), h.lowest_equivalent(20_000));
        assert_eq!(tally.delivered, 2);
    }

    #[test]
    fn json_carries_the_common_result_schema() {
        let mut h = Histogram::<u64>::new_with_bounds(1, LATENCY_NS_MAX, 3).unwrap();
        for us in 1..=1000u64 {
            h.record(us * 1000).unwrap();
        }
        let report = Report {
            transport: BenchTransport::Udp,
            workload: "produce",
            acks: Some(Acks::Durable),
            producers: 2,
            consumers: 0,
            messages: 1000,
            size: 100,
            window: Some(5),
            rate: Some(10_000.0),
            from_intended: true,
            seconds: 0.1,
            errors: 0,
            latency: Some(h),
        };
        let json = report.json();
        for field in [
            "schema",
            "system",
            "transport",
            "workload",
            "durability",
            "producers",
            "consumers",
            "messages",
            "size",
            "window",
            "rate",
            "latency_from",
            "seconds",
            "msgs_per_sec",
            "mb_per_sec",
            "p50_us",
            "p90_us",
            "p99_us",
            "p999_us",
            "p9999_us",
            "max_us",
            "curve",
            "errors",
            "acks",
        ] {
            assert!(json.get(field).is_some(), "{field} missing in {json}");
        }
        assert_eq!(json["system"], "precursor");
        assert_eq!(json["durability"], "durable");
        assert_eq!(json["latency_from"], "intended");
        assert_eq!(json["msgs_per_sec"], 10_000.0);
        // HdrHistogram answers the highest value of a bucket (0.1 % wide).
        let near = |field: &str, us: f64| (json[field].as_f64().unwrap() - us).abs() <= us * 0.001;
        assert!(
            near("p50_us", 500.0) && near("p99_us", 990.0) && near("max_us", 1000.0),
            "{json}"
        );
        assert_eq!(json["curve"].as_array().unwrap().len(), 61);
    }
}
