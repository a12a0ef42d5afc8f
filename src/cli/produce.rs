//! `precursor produce TOPIC`: one message per line of stdin.

use super::BrokerArgs;
use anyhow::{bail, Context, Result};
use clap::Args;
use precursor_client::{Acks, Compression, Delivery, Producer, ProducerConfig};
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
    /// Print `partition offset` for every message.
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
        client: args.broker.client_config(),
        acks: args.acks,
        linger_us: args.linger_us,
        compression: args.compression,
        auto_create_topics: true,
        ..ProducerConfig::default()
    };
    let mut producer = Producer::new(config).context("cannot start the producer")?;
    let mut failures = 0u64;
    let mut report = |delivery: Delivery| match (&delivery.error, delivery.offset) {
        (Some(error), _) => {
            failures += 1;
            eprintln!(
                "precursor: message {} not delivered: {error}",
                delivery.id.0
            );
        }
        (None, Some(offset)) if args.verbose => println!("{} {}", delivery.partition, offset),
        (None, _) => {}
    };
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
        producer.drain_deliveries(&mut report);
    }
    let flushed = producer.flush(Duration::from_millis(
        args.broker.timeout_ms.saturating_mul(2),
    ));
    producer.drain_deliveries(&mut report);
    flushed.context("not every message was acknowledged")?;
    if failures > 0 {
        bail!("{failures} messages were not delivered");
    }
    Ok(ExitCode::SUCCESS)
}
