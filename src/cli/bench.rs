//! `precursor bench produce|consume`: throughput and latency with self-checking payloads.
//!
//! Produce sends `--messages` payloads of `--size` bytes, each carrying its per-partition
//! sequence number and a CRC32C (`precursor_client::bench_payload`), round-robin over the
//! topic's partitions; latency is from `send()` to the ack, per message (HdrHistogram).
//! Consume reads the topic from its start and verifies every payload: intact, once, in
//! order per partition. `--json` prints one object; otherwise a line for people. Timing is
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
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Highest latency the histogram tracks, in nanoseconds (60 s).
const LATENCY_NS_MAX: u64 = 60_000_000_000;
const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Produce N messages and report throughput and produce->ack latency.
    Produce(BenchProduceArgs),
    /// Consume N messages from the start of the topic, verifying each.
    Consume(BenchConsumeArgs),
}

#[derive(Args)]
pub struct Common {
    #[command(flatten)]
    pub broker: BrokerArgs,
    #[arg(long, default_value = "bench")]
    pub topic: String,
    /// Messages to send or read.
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
            let report = consume(&args.common)?;
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
        .partition_count(&common.topic)
        .with_context(|| format!("topic {:?}", common.topic))?;
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
        producer.send(&common.topic, Some(partition), None, &payload)?;
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

fn consume(common: &Common) -> Result<Report> {
    let config = ConsumerConfig {
        client: common.broker.client_config(),
        ..ConsumerConfig::default()
    };
    let mut consumer = Consumer::new(config).context("cannot start the consumer")?;
    consumer
        .assign(&common.topic, None, StartOffset::Earliest)
        .with_context(|| format!("topic {:?}", common.topic))?;
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
        size: if consumed > 0 {
            (bytes / consumed) as usize
        } else {
            0
        },
        seconds,
        errors,
        latency: None,
    })
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
