//! `precursor consume TOPIC`: print values (or verify bench payloads).

use super::BrokerArgs;
use anyhow::{bail, Context, Result};
use clap::Args;
use precursor_client::bench_payload::Verifier;
use precursor_client::log_map::{self, DirectRead, LogPaths, PartitionMap};
use precursor_client::{ConsumedRecord, Consumer, ConsumerConfig, StartOffset};
use precursor_protocol::record_batch::records;
use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(Args)]
pub struct ConsumeArgs {
    pub topic: String,
    #[command(flatten)]
    pub broker: BrokerArgs,
    /// Start at the first retained offset (default: only new messages).
    #[arg(long)]
    pub from_beginning: bool,
    /// Start at this offset (with --partition).
    #[arg(long, conflicts_with = "from_beginning")]
    pub offset: Option<u64>,
    /// Stop after this many messages.
    #[arg(long, short = 'n')]
    pub count: Option<u64>,
    /// Read only this partition (default: all).
    #[arg(long, short)]
    pub partition: Option<u16>,
    /// Stop once every partition is read to its end.
    #[arg(long)]
    pub to_end: bool,
    /// Read only what the broker has persisted (fdatasync'd).
    #[arg(long)]
    pub durable_only: bool,
    /// Check bench payloads (sequence + checksum) instead of printing: every message must
    /// arrive intact, once, in order per partition. Exit code 1 otherwise.
    #[arg(long)]
    pub verify: bool,
    /// Print `partition offset key value` instead of the value alone.
    #[arg(long, short)]
    pub verbose: bool,
    /// Give up when no message arrives for this many milliseconds (0: wait forever).
    #[arg(long, default_value_t = 0)]
    pub idle_timeout_ms: u64,
    /// Read the log directly from the data plane's shared maps (same host; the data
    /// plane's CnC directory is `--ipc-dir`): no request at all, the data plane does not
    /// even see this reader.
    #[arg(long, conflicts_with = "durable_only")]
    pub direct: bool,
    /// Read one partition (`--partition`, default 0) with one-sided RDMA READs of the
    /// broker's log segments (`--transport rdma`; a `precursor` built with `--features
    /// rdma`): after one grant per segment the broker's CPU is not involved.
    #[arg(long, conflicts_with_all = ["direct", "durable_only"])]
    pub rdma_read: bool,
}

pub fn run(args: ConsumeArgs) -> Result<ExitCode> {
    if args.direct {
        return run_direct(args);
    }
    if args.rdma_read {
        return super::rdma::consume(args);
    }
    let config = ConsumerConfig {
        client: args.broker.client_config()?,
        durable_only: args.durable_only,
        ..ConsumerConfig::default()
    };
    let mut consumer = Consumer::new(config).context("cannot start the consumer")?;
    let start = match (args.offset, args.from_beginning || args.verify) {
        (Some(offset), _) => StartOffset::Offset(offset),
        (None, true) => StartOffset::Earliest,
        (None, false) => StartOffset::Latest,
    };
    if args.offset.is_some() && args.partition.is_none() {
        bail!("--offset needs --partition");
    }
    let partitions = args.partition.map(|p| vec![p]);
    consumer
        .assign(&args.topic, partitions.as_deref(), start)
        .with_context(|| format!("cannot read topic {:?}", args.topic))?;
    let mut verifier = Verifier::new();
    if args.verify {
        // A verified topic is read from its start: sequence 0 must be the first message.
        for p in 0..u16::MAX {
            if partitions.as_ref().is_some_and(|ps| !ps.contains(&p)) {
                continue;
            }
            if consumer
                .positions()
                .iter()
                .any(|(partition, _)| *partition == p)
            {
                verifier.expect(p, 0);
            }
        }
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
        if args.to_end && consumer.caught_up() {
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
        let got = consumer.poll(Duration::from_millis(100), &mut records)?;
        if got > 0 {
            last_progress = Instant::now();
        }
        for record in &records {
            if args.count.is_some_and(|count| consumed >= count) {
                break;
            }
            consumed += 1;
            emit(&args, &mut verifier, &mut out, record)?;
        }
    }
    out.flush()?;
    report(&args, &verifier, consumed)
}

/// What to do with one record: verify it, or print it.
pub(super) fn emit(
    args: &ConsumeArgs,
    verifier: &mut Verifier,
    out: &mut impl Write,
    record: &ConsumedRecord,
) -> Result<()> {
    if args.verify {
        verifier.observe(record.partition, &record.value);
    } else if args.verbose {
        let key = record
            .key
            .as_deref()
            .map(String::from_utf8_lossy)
            .unwrap_or_default();
        writeln!(
            out,
            "{} {} {} {}",
            record.partition,
            record.offset,
            key,
            String::from_utf8_lossy(&record.value)
        )?;
    } else {
        out.write_all(&record.value)?;
        out.write_all(b"\n")?;
    }
    Ok(())
}

pub(super) fn report(args: &ConsumeArgs, verifier: &Verifier, consumed: u64) -> Result<ExitCode> {
    if args.verify {
        let totals = verifier.totals();
        eprintln!(
            "verified {consumed} messages: {} in order, {} gaps ({} missing), {} duplicates, {} corrupt",
            totals.in_order, totals.gaps, totals.missing, totals.duplicates, totals.corrupt
        );
        if !verifier.is_clean() {
            return Ok(ExitCode::from(1));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `--direct`: batches straight from the shared maps, partition by partition in turn.
fn run_direct(args: ConsumeArgs) -> Result<ExitCode> {
    let paths = LogPaths::discover(&args.broker.ipc_dir)?;
    let partitions = match args.partition {
        Some(p) => vec![p],
        None => paths.partitions(&args.topic)?,
    };
    if args.offset.is_some() && args.partition.is_none() {
        bail!("--offset needs --partition");
    }
    let mut readers = Vec::new();
    let mut verifier = Verifier::new();
    for &partition in &partitions {
        let mut map = PartitionMap::open(&paths, &args.topic, partition)
            .with_context(|| format!("cannot map {}-{partition}", args.topic))?;
        let start = match (args.offset, args.from_beginning || args.verify) {
            (Some(offset), _) => offset,
            (None, true) => map.log_start_offset().unwrap_or(0),
            // Latest: the end of what is mapped now.
            (None, false) => map.end_offset()?,
        };
        if args.verify {
            verifier.expect(partition, 0);
        }
        readers.push((partition, map, start, false));
    }
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut consumed = 0u64;
    let mut last_progress = Instant::now();
    'reading: loop {
        let mut progressed = false;
        for (partition, map, position, caught_up) in &mut readers {
            match map.read(*position, DIRECT_READ_BYTES)? {
                DirectRead::Batches(batches) => {
                    *caught_up = false;
                    for batch in log_map::batches(batches) {
                        let records = records(batch).map_err(|e| {
                            anyhow::anyhow!("{}-{partition}: corrupt batch in the log map: {e}", args.topic)
                        })?;
                        for record in records {
                            let offset = record.offset as u64;
                            if offset < *position {
                                continue;
                            }
                            *position = offset + 1;
                            let record = ConsumedRecord {
                                partition: *partition,
                                offset,
                                timestamp_ms: record.timestamp,
                                key: record.key,
                                value: record.value.unwrap_or_default(),
                            };
                            emit(&args, &mut verifier, &mut out, &record)?;
                            consumed += 1;
                            progressed = true;
                            if args.count.is_some_and(|count| consumed >= count) {
                                break 'reading;
                            }
                        }
                    }
                }
                DirectRead::CaughtUp => *caught_up = true,
                DirectRead::OutOfRange { log_start_offset } => bail!(
                    "offset {} of {}-{partition} is below the first retained offset {log_start_offset}",
                    position,
                    args.topic
                ),
            }
        }
        if progressed {
            last_progress = Instant::now();
        } else {
            if args.to_end && readers.iter().all(|r| r.3) {
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
            std::thread::sleep(Duration::from_micros(100));
        }
    }
    out.flush()?;
    report(&args, &verifier, consumed)
}

/// Bytes of batches one direct read hands out at most (more when one batch is larger).
const DIRECT_READ_BYTES: usize = 1 << 20;
