//! `precursor-bench`: see the library's documentation and docs/benchmarks.md. Every run
//! prints one JSON line (the `result` schema) on stdout; exit status 1 when it counted
//! errors (lost, failed or corrupt messages), 2 on bad usage.

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use precursor_bench::harness::ProduceParams;
use precursor_bench::peers::{nats, redis, Durability};
use precursor_bench::report::{self, Report};
use precursor_bench::result::RunResult;
use precursor_bench::{kafka, limits, metadata, plot};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Default pipeline depth of the peers' producers, in messages.
const PEER_WINDOW: u64 = 256;
/// Default pipeline depth of a librdkafka producer, in messages: enough for its 1 MB
/// batches and five requests in flight.
const KAFKA_WINDOW: u64 = 65_536;

#[derive(Parser)]
#[command(
    name = "precursor-bench",
    version,
    about = "Precursor beside its peers: limits, NATS JetStream, Redis Streams, reports"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The machine's limit: memcpy bandwidth or a shared-memory ping-pong.
    #[command(subcommand)]
    Limits(LimitsCommand),
    /// NATS JetStream (async-nats) against a running nats-server -js.
    #[command(subcommand)]
    Nats(PeerCommand),
    /// Redis Streams (redis crate) against a running redis-server.
    #[command(subcommand)]
    Redis(PeerCommand),
    /// Precursor's Kafka gateway through librdkafka (rdkafka crate).
    #[command(subcommand)]
    Kafka(KafkaCommand),
    /// The metadata quorum's commit latency (three voters in this process, real TCP and
    /// fdatasync) with `--partitions` partitions in its state.
    MetadataCommit {
        #[arg(long, default_value_t = 1_000)]
        partitions: u32,
        /// Proposals measured, one after another.
        #[arg(long, default_value_t = 2_000)]
        commits: u64,
        /// Unmeasured proposals first.
        #[arg(long, default_value_t = 100)]
        warmup: u64,
    },
    /// Render docs/benchmarks.md's generated section and the SVG plots from a results dir.
    Report(ReportArgs),
    /// Print the one-line summary of a results dir (ratios Precursor / peer).
    Summary {
        #[arg(long)]
        results: PathBuf,
    },
}

#[derive(Subcommand)]
enum LimitsCommand {
    /// memcpy bandwidth between two buffers larger than the caches (median of --runs).
    Memcpy {
        #[arg(long, default_value_t = 64)]
        mib: usize,
        #[arg(long, default_value_t = 9)]
        runs: u32,
    },
    /// Round trips of one cache line between two pinned threads.
    Pingpong {
        #[arg(long, default_value_t = 1_000_000)]
        round_trips: u64,
        #[arg(long, default_value_t = 100_000)]
        warmup: u64,
        #[arg(long, default_value_t = 0)]
        ping_core: usize,
        #[arg(long, default_value_t = 1)]
        pong_core: usize,
    },
}

#[derive(Args)]
struct PeerTarget {
    /// The server: nats://127.0.0.1:PORT or redis://127.0.0.1:PORT/.
    #[arg(long)]
    url: String,
    /// Stream name (NATS: the stream and its subject; Redis: the key).
    #[arg(long, default_value = "bench")]
    stream: String,
    /// The Precursor acks level this run is matched to: leader or durable. Checked against
    /// the server's configuration.
    #[arg(long, value_parser = Durability::parse)]
    durability: Durability,
    /// NATS only: the server's store directory (checked for chattr +S when durable).
    #[arg(long)]
    store_dir: Option<PathBuf>,
}

#[derive(Subcommand)]
enum PeerCommand {
    /// Publish --messages (after --warmup) and report throughput and produce -> ack latency.
    Produce {
        #[command(flatten)]
        target: PeerTarget,
        #[command(flatten)]
        load: LoadArgs,
    },
    /// Read --messages from the start of the stream, verifying every payload.
    Consume {
        #[command(flatten)]
        target: PeerTarget,
        #[arg(long, short = 'n', default_value_t = 100_000)]
        messages: u64,
        /// Consumers, each its own connection, each reading every message (fan-out).
        #[arg(long, default_value_t = 1)]
        consumers: u32,
        /// Give up after this long without a message.
        #[arg(long, default_value_t = 10_000)]
        idle_timeout_ms: u64,
    },
}

#[derive(Args)]
struct KafkaTarget {
    /// The gateway's `host:port` (librdkafka's bootstrap.servers).
    #[arg(long, default_value = "127.0.0.1:9092")]
    bootstrap: String,
    /// The topic: produce creates it fresh, with one partition.
    #[arg(long, default_value = "bench")]
    topic: String,
    /// leader: acks=1; durable: acks=all with enable.idempotence=true.
    #[arg(long, value_parser = Durability::parse)]
    durability: Durability,
    /// librdkafka's linger.ms (absent: librdkafka's default, 5 ms).
    #[arg(long)]
    linger_ms: Option<u64>,
}

impl KafkaTarget {
    fn target(self) -> kafka::Target {
        kafka::Target {
            bootstrap: self.bootstrap,
            topic: self.topic,
            durability: self.durability,
            linger_ms: self.linger_ms,
        }
    }
}

#[derive(Subcommand)]
enum KafkaCommand {
    /// Produce --messages (after --warmup) with one librdkafka producer per --producers.
    Produce {
        #[command(flatten)]
        target: KafkaTarget,
        #[command(flatten)]
        load: LoadArgs,
    },
    /// Read --messages from the start of partition 0, verifying every payload.
    Consume {
        #[command(flatten)]
        target: KafkaTarget,
        #[arg(long, short = 'n', default_value_t = 100_000)]
        messages: u64,
        #[arg(long, default_value_t = 1)]
        consumers: u32,
        /// Give up after this long without a message.
        #[arg(long, default_value_t = 10_000)]
        idle_timeout_ms: u64,
    },
}

#[derive(Args)]
struct LoadArgs {
    /// Measured messages over all producers.
    #[arg(long, short = 'n', default_value_t = 100_000)]
    messages: u64,
    /// Bytes per message (at least 16: sequence, checksum, length).
    #[arg(long, short, default_value_t = 100)]
    size: usize,
    #[arg(long, default_value_t = 1)]
    producers: u32,
    /// Most messages un-acknowledged per producer (the pipeline depth). Default: 256 for
    /// the peers; 65536 for kafka, whose client batches up to 1 MB per request.
    #[arg(long)]
    window: Option<u64>,
    /// Fixed offered rate in messages/s over all producers (latency from intended send
    /// times); absent: as fast as the window allows.
    #[arg(long)]
    rate: Option<f64>,
    /// Unmeasured messages each producer sends first.
    #[arg(long, default_value_t = 1_000)]
    warmup: u64,
    /// How long the last acknowledgments may take before they count as errors.
    #[arg(long, default_value_t = 30_000)]
    ack_timeout_ms: u64,
}

impl LoadArgs {
    fn params(&self, default_window: u64) -> ProduceParams {
        ProduceParams {
            messages: self.messages,
            size: self.size,
            producers: self.producers,
            window: self.window.unwrap_or(default_window),
            rate: self.rate,
            warmup: self.warmup,
            ack_timeout: Duration::from_millis(self.ack_timeout_ms),
        }
    }
}

#[derive(Args)]
struct ReportArgs {
    /// Directory of result files (*.json, one result per line).
    #[arg(long)]
    results: PathBuf,
    /// The document whose generated section is rewritten (between the marker lines).
    #[arg(long)]
    doc: PathBuf,
    /// Where the SVG plots go.
    #[arg(long)]
    plots: PathBuf,
    /// The plots' directory as the document links it.
    #[arg(long, default_value = "plots")]
    plots_link: String,
    /// One line describing the machine and versions.
    #[arg(long, default_value = "")]
    machine: String,
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("precursor-bench: {error:#}");
            ExitCode::from(2)
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")
}

fn print(result: RunResult) -> ExitCode {
    println!("{}", result.to_json_line());
    if result.errors == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::MetadataCommit {
            partitions,
            commits,
            warmup,
        } => {
            // Three voters, as three control planes would be: more than one thread.
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .context("cannot start the tokio runtime")?;
            Ok(print(runtime.block_on(metadata::commit_latency(
                partitions, commits, warmup,
            ))?))
        }
        Command::Limits(LimitsCommand::Memcpy { mib, runs }) => {
            Ok(print(limits::memcpy(mib, runs)?))
        }
        Command::Limits(LimitsCommand::Pingpong {
            round_trips,
            warmup,
            ping_core,
            pong_core,
        }) => Ok(print(limits::pingpong(
            ping_core,
            pong_core,
            round_trips,
            warmup,
        )?)),
        Command::Nats(command) => {
            let rt = runtime()?;
            let result = match command {
                PeerCommand::Produce { target, load } => rt.block_on(nats::produce(
                    &nats_target(target),
                    &load.params(PEER_WINDOW),
                ))?,
                PeerCommand::Consume {
                    target,
                    messages,
                    consumers,
                    idle_timeout_ms,
                } => rt.block_on(nats::consume(
                    &nats_target(target),
                    messages,
                    consumers,
                    Duration::from_millis(idle_timeout_ms),
                ))?,
            };
            Ok(print(result))
        }
        Command::Redis(command) => {
            let rt = runtime()?;
            let result = match command {
                PeerCommand::Produce { target, load } => rt.block_on(redis::produce(
                    &redis_target(target)?,
                    &load.params(PEER_WINDOW),
                ))?,
                PeerCommand::Consume {
                    target,
                    messages,
                    consumers,
                    idle_timeout_ms,
                } => rt.block_on(redis::consume(
                    &redis_target(target)?,
                    messages,
                    consumers,
                    Duration::from_millis(idle_timeout_ms),
                ))?,
            };
            Ok(print(result))
        }
        Command::Kafka(command) => {
            let rt = runtime()?;
            let result = match command {
                KafkaCommand::Produce { target, load } => {
                    rt.block_on(kafka::produce(&target.target(), &load.params(KAFKA_WINDOW)))?
                }
                KafkaCommand::Consume {
                    target,
                    messages,
                    consumers,
                    idle_timeout_ms,
                } => rt.block_on(kafka::consume(
                    &target.target(),
                    messages,
                    consumers,
                    Duration::from_millis(idle_timeout_ms),
                ))?,
            };
            Ok(print(result))
        }
        Command::Report(args) => {
            let results = report::load_dir(&args.results)?;
            let report = Report::new(&results);
            let document = std::fs::read_to_string(&args.doc)
                .with_context(|| format!("cannot read {}", args.doc.display()))?;
            let section = report.render(&args.machine, &args.plots_link);
            let updated = report::splice(&document, &section)
                .with_context(|| format!("{}", args.doc.display()))?;
            let plots = plot::latency_plots(&report, &args.plots)?;
            std::fs::write(&args.doc, updated)
                .with_context(|| format!("cannot write {}", args.doc.display()))?;
            eprintln!(
                "precursor-bench: wrote {} and {} plots in {}",
                args.doc.display(),
                plots.len(),
                args.plots.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Summary { results } => {
            println!("{}", Report::new(&report::load_dir(&results)?).summary());
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn nats_target(t: PeerTarget) -> nats::Target {
    nats::Target {
        url: t.url,
        stream: t.stream,
        durability: t.durability,
        store_dir: t.store_dir,
    }
}

fn redis_target(t: PeerTarget) -> Result<redis::Target> {
    if t.store_dir.is_some() {
        anyhow::bail!(
            "--store-dir is for nats only (redis-server's persistence is read with CONFIG GET)"
        );
    }
    Ok(redis::Target {
        url: t.url,
        stream: t.stream,
        durability: t.durability,
    })
}
