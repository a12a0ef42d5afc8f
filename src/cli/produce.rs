//! `precursor produce TOPIC`: one message per line of stdin.

use super::BrokerArgs;
use anyhow::{bail, Context, Result};
use clap::Args;
use precursor_client::{Acks, Compression, Delivery, Producer, ProducerConfig};
use std::collections::BTreeMap;
use std::io::BufRead;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Args)]
pub struct ProduceArgs {
    pub topic: String,
    #[command(flatten)]
    pub broker: BrokerArgs,
    /// none, leader (appended in memory) or durable (fdatasync'd on the broker).
    #[arg(long, default_value = "durable", value_parser = parse_acks)]
    pub acks: Acks,
    /// Send every message to this partition (default: by key hash, else sticky).
    #[arg(long, short)]
    pub partition: Option<u16>,
    /// Split each line at the first SEPARATOR into key and value.
    #[arg(long, short = 'K')]
    pub key_separator: Option<char>,
    /// none, gzip, snappy, lz4 or zstd.
    #[arg(long, default_value = "none", value_parser = parse_compression)]
    pub compression: Compression,
    /// How long a batch waits for more messages, in microseconds.
    #[arg(long, default_value_t = 1000)]
    pub linger_us: u64,
    /// Print `partition offset` for every message, in input order (`-` when the offset is
    /// unknown: acks=none, or a retransmit the broker had already appended).
    #[arg(long, short)]
    pub verbose: bool,
}

pub fn parse_acks(name: &str) -> Result<Acks, String> {
    Acks::parse(name).ok_or_else(|| format!("{name:?}: one of none, leader, durable"))
}

pub fn parse_compression(name: &str) -> Result<Compression, String> {
    Compression::parse(name)
        .ok_or_else(|| format!("{name:?}: one of none, gzip, snappy, lz4, zstd"))
}

pub fn run(args: ProduceArgs) -> Result<ExitCode> {
    let config = ProducerConfig {
        client: args.broker.client_config()?,
        acks: args.acks,
        linger_us: args.linger_us,
        compression: args.compression,
        auto_create_topics: true,
        ..ProducerConfig::default()
    };
    let mut producer = Producer::new(config).context("cannot start the producer")?;
    let mut reports = Reports::new(args.verbose);
    let stdin = std::io::stdin();
    for line in stdin.lock().lines() {
        let line = line.context("reading stdin")?;
        let (key, value) = match args.key_separator {
            Some(separator) => match line.split_once(separator) {
                Some((key, value)) => (Some(key.as_bytes()), value.as_bytes()),
                None => bail!("line {line:?} has no key separator {separator:?}"),
            },
            None => (None, line.as_bytes()),
        };
        producer
            .send(&args.topic, args.partition, key, value)
            .with_context(|| format!("cannot send to topic {:?}", args.topic))?;
        producer.poll()?;
        producer.drain_deliveries(|d| reports.record(d));
        if reports.failures > 0 {
            // Stop at the first lost message: sending later lines would reorder the input.
            break;
        }
    }
    let flushed = producer.flush(Duration::from_millis(
        args.broker.timeout_ms.saturating_mul(2),
    ));
    producer.drain_deliveries(|d| reports.record(d));
    if reports.failures > 0 {
        bail!(
            "{} messages were not delivered; stopped reading stdin at the first",
            reports.failures
        );
    }
    flushed.context("not every message was acknowledged")?;
    Ok(ExitCode::SUCCESS)
}

/// Delivery reports, printed (with --verbose) as `partition offset` in input order: line i
/// of the output is the offset of line i of the input, however the partitions' acks
/// interleave. Printing stops at the first failed message.
struct Reports {
    verbose: bool,
    /// Acknowledged messages waiting for an earlier one, by message id (= input line).
    waiting: BTreeMap<u64, (u16, Option<u64>)>,
    next_line: u64,
    failures: u64,
}

impl Reports {
    fn new(verbose: bool) -> Reports {
        Reports {
            verbose,
            waiting: BTreeMap::new(),
            next_line: 0,
            failures: 0,
        }
    }

    fn record(&mut self, delivery: Delivery) {
        if let Some(error) = &delivery.error {
            self.failures += 1;
            eprintln!(
                "precursor: message {} not delivered: {error}",
                delivery.id.0 + 1
            );
            return;
        }
        if !self.verbose {
            return;
        }
        self.waiting
            .insert(delivery.id.0, (delivery.partition, delivery.offset));
        while let Some((partition, offset)) = self.waiting.remove(&self.next_line) {
            match offset {
                Some(offset) => println!("{partition} {offset}"),
                None => println!("{partition} -"),
            }
            self.next_line += 1;
        }
    }
}
