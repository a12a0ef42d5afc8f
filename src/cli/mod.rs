//! The command line (clap). Client commands (produce, consume, bench, ping) use the client
//! library; `dataplane` execs the data plane binary; `up` and `controlplane` run the control
//! plane (`up` supervising the data plane); admin commands (`topic`, `status`) ask the
//! control plane's admin socket; `cluster` runs a local cluster of brokers in network
//! namespaces; `config show` prints configuration.

mod admin;
mod bench;
mod bench_ipc;
mod cluster;
mod consume;
mod produce;
mod rdma;
mod up;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use precursor_client::{ClientConfig, IpcConfig, TransportKind, DEFAULT_BROKER};
use precursor_config::{Config, Preset};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "precursor",
    version,
    about = "Precursor: a persisted, partitioned message log with a kernel-bypass data plane"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a broker in the foreground: the data plane and the control plane, supervised
    /// (the data plane is restarted when it dies; Ctrl-C stops both cleanly).
    Up {
        /// Configuration file; the embedded default when absent.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Run the data plane (DPDK, poll mode) in the foreground.
    Dataplane {
        /// Configuration file; the embedded default when absent.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Run the control plane alone (admin socket, metrics), attached to a data plane
    /// started elsewhere with the same configuration.
    Controlplane {
        /// Configuration file; the embedded default when absent.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Topic administration, through the control plane.
    #[command(subcommand)]
    Topic(admin::TopicCommand),
    /// Consumer groups: members, committed offsets and lag, through the control plane.
    #[command(subcommand)]
    Group(admin::GroupCommand),
    /// SASL users of the Kafka listeners (SCRAM credentials), through the control plane.
    #[command(subcommand)]
    User(admin::UserCommand),
    /// A local cluster of brokers in network namespaces on this machine (root).
    #[command(subcommand)]
    Cluster(cluster::ClusterCommand),
    /// A broker of a cluster: `broker drain` moves its leaderships away.
    #[command(subcommand)]
    Broker(admin::BrokerCommand),
    /// The node's state: data plane, ports, lcores, partitions, disk use.
    Status {
        #[command(flatten)]
        target: admin::AdminTarget,
    },
    /// Produce lines from stdin as messages.
    Produce(produce::ProduceArgs),
    /// Consume messages and print their values.
    Consume(consume::ConsumeArgs),
    /// Measure produce or consume throughput and latency.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Check that the data plane answers, and how fast.
    Ping {
        #[command(flatten)]
        broker: BrokerArgs,
        /// Pings to send.
        #[arg(long, default_value_t = 5)]
        count: u32,
    },
    /// Configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print the effective configuration as TOML.
    Show {
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Start from this preset instead of the file's (balanced, high, maximum).
        #[arg(long)]
        preset: Option<String>,
    },
}

/// How a client command reaches the data plane.
#[derive(clap::ValueEnum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum Transport {
    /// Kernel UDP socket to the data plane's DPDK port (`--broker`).
    Udp,
    /// Shared-memory channel to a data plane on this host (`--ipc-dir`): no system call
    /// per message on either side.
    Ipc,
    /// RDMA reliable connection to the data plane's `[rdma]` address (`--rdma-broker`);
    /// needs a `precursor` built with `--features rdma`.
    Rdma,
}

impl Transport {
    pub fn name(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Ipc => "ipc",
            Transport::Rdma => "rdma",
        }
    }
}

/// The data plane's CnC directory in the embedded default (`node.cnc_dir`).
pub const DEFAULT_IPC_DIR: &str = "/dev/shm/precursor-precursor";

/// Where the broker is.
#[derive(Args, Clone, Debug)]
pub struct BrokerArgs {
    /// How to reach the data plane [env: PRECURSOR_TRANSPORT].
    #[arg(long, value_enum, default_value_t = Transport::Udp, env = "PRECURSOR_TRANSPORT")]
    pub transport: Transport,
    /// The bootstrap broker's data-plane UDP address, or several comma-separated (asked in
    /// turn until one answers). Each partition's requests then go to its leader, as
    /// Metadata names it [env: PRECURSOR_BROKER].
    #[arg(long, short = 'b', default_value = DEFAULT_BROKER, env = "PRECURSOR_BROKER")]
    pub broker: BrokerList,
    /// IPC: the data plane's CnC directory (its `node.cnc_dir`), where its `ipc` file is
    /// [env: PRECURSOR_IPC_DIR].
    #[arg(long, default_value = DEFAULT_IPC_DIR, env = "PRECURSOR_IPC_DIR")]
    pub ipc_dir: PathBuf,
    /// RDMA: the data plane's `[rdma]` address:port (rdma_cm) [env: PRECURSOR_RDMA_BROKER].
    #[arg(long, default_value = DEFAULT_RDMA_BROKER, env = "PRECURSOR_RDMA_BROKER")]
    pub rdma_broker: SocketAddr,
    /// Give up on a request after this many milliseconds without an answer.
    #[arg(long, default_value_t = 10_000)]
    pub timeout_ms: u64,
}

/// `--broker`: one or more `address:port`, comma-separated, the first tried first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokerList(Vec<SocketAddr>);

/// Bootstrap brokers one command takes at most (the client's limit of brokers).
const BOOTSTRAP_BROKERS_MAX: usize = precursor_client::BROKERS_MAX;

impl BrokerList {
    /// The first broker: where single-broker commands (ping) go.
    pub fn first(&self) -> SocketAddr {
        self.0[0]
    }

    pub fn rest(&self) -> &[SocketAddr] {
        &self.0[1..]
    }
}

impl std::str::FromStr for BrokerList {
    type Err = String;

    fn from_str(text: &str) -> Result<BrokerList, String> {
        let mut brokers = Vec::new();
        for item in text.split(',').map(str::trim) {
            if item.is_empty() {
                return Err(format!(
                    "{text:?}: an empty broker in the list (address:port, comma-separated)"
                ));
            }
            let address = item.parse::<SocketAddr>().map_err(|_| {
                format!("{item:?} is not an address:port (e.g. 10.77.0.2:9190; lists are comma-separated)")
            })?;
            if !brokers.contains(&address) {
                brokers.push(address);
            }
        }
        if brokers.len() > BOOTSTRAP_BROKERS_MAX {
            return Err(format!(
                "{} brokers given: at most {BOOTSTRAP_BROKERS_MAX}",
                brokers.len()
            ));
        }
        Ok(BrokerList(brokers))
    }
}

impl std::fmt::Display for BrokerList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, address) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{address}")?;
        }
        Ok(())
    }
}

impl BrokerArgs {
    pub fn client_config(&self) -> Result<ClientConfig> {
        let transport = match self.transport {
            Transport::Udp => TransportKind::Udp,
            Transport::Ipc => TransportKind::Ipc(IpcConfig::new(&self.ipc_dir)),
            #[cfg(feature = "rdma")]
            Transport::Rdma => TransportKind::Rdma(precursor_client::rdma::RdmaConfig::new(
                self.rdma_broker,
            )),
            #[cfg(not(feature = "rdma"))]
            Transport::Rdma => anyhow::bail!(
                "--transport rdma: this precursor was built without RDMA (cargo build --release --features rdma)"
            ),
        };
        let defaults = ClientConfig::default();
        Ok(ClientConfig {
            transport,
            broker: self.broker.first(),
            bootstrap_brokers: self.broker.rest().to_vec(),
            delivery_timeout_ms: self.timeout_ms,
            // IPC loses nothing in transit: a retransmit only follows a lost channel.
            request_timeout_ms: match self.transport {
                Transport::Udp => defaults.request_timeout_ms,
                Transport::Ipc => IPC_REQUEST_TIMEOUT_MS,
                // RC delivers or breaks the connection: a retransmit only follows a
                // reconnect (or an answer the broker had no send buffer for).
                Transport::Rdma => IPC_REQUEST_TIMEOUT_MS,
            },
            ..defaults
        })
    }
}

/// The data plane's `[rdma]` address in the embedded default configuration.
pub const DEFAULT_RDMA_BROKER: &str = "10.0.0.1:9191";

/// First retransmission over IPC: long, since rings drop nothing; only a channel lost
/// with the data plane's restart needs it.
const IPC_REQUEST_TIMEOUT_MS: u64 = 200;

pub fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Up { config } => up::up(config),
        Command::Dataplane { config } => exec_dataplane(config),
        Command::Controlplane { config } => up::controlplane(config),
        Command::Topic(command) => admin::topic(command),
        Command::Group(command) => admin::group(command),
        Command::User(command) => admin::user(command),
        Command::Cluster(command) => cluster::run(command),
        Command::Broker(command) => admin::broker(command),
        Command::Status { target } => admin::status(target),
        Command::Produce(args) => produce::run(args),
        Command::Consume(args) => consume::run(args),
        Command::Bench(command) => bench::run(command),
        Command::Ping { broker, count } => ping(&broker, count),
        Command::Config(ConfigCommand::Show { config, preset }) => config_show(config, preset),
    }
}

fn ping(broker: &BrokerArgs, count: u32) -> Result<ExitCode> {
    let config = broker.client_config()?;
    for _ in 0..count {
        let first = broker.broker.first();
        let rtt = precursor_client::ping(&config).with_context(|| format!("ping {first}"))?;
        println!("pong from {first}: {:.1} us", rtt.as_secs_f64() * 1e6);
    }
    Ok(ExitCode::SUCCESS)
}

fn config_show(path: Option<PathBuf>, preset: Option<String>) -> Result<ExitCode> {
    let config = match (&path, &preset) {
        (Some(path), None) => Config::load(path)?,
        (Some(path), Some(name)) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            let mut table: toml::Table = text
                .parse()
                .with_context(|| format!("config file {}", path.display()))?;
            table.insert("preset".into(), toml::Value::String(name.clone()));
            Config::parse(&toml::to_string(&table)?)?
        }
        (None, Some(name)) => match Preset::parse(name) {
            Some(preset) => Config::preset(preset),
            None => bail!(
                "unknown preset {name:?}: one of {}",
                Preset::NAMES.join(", ")
            ),
        },
        (None, None) => Config::default(),
    };
    print!("{}", config.to_toml());
    Ok(ExitCode::SUCCESS)
}

/// `precursor-dataplane` from the same directory as this binary, else from PATH.
pub fn dataplane_binary() -> PathBuf {
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("precursor-dataplane")))
        .filter(|path| path.exists());
    beside.unwrap_or_else(|| PathBuf::from("precursor-dataplane"))
}

/// Replaces this process with `precursor-dataplane` (see [`dataplane_binary`]).
fn exec_dataplane(config: Option<PathBuf>) -> Result<ExitCode> {
    use std::os::unix::process::CommandExt;
    let program = dataplane_binary();
    let mut command = std::process::Command::new(&program);
    if let Some(config) = config {
        command.arg("--config").arg(config);
    }
    let error = command.exec();
    bail!(
        "cannot start {}: {error} (build it with `cargo build --release -p precursor-dataplane`)",
        program.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_lists_are_comma_separated_addresses_first_one_first() {
        let list: BrokerList = "10.0.0.1:9190, 10.0.0.2:9190,10.0.0.1:9190"
            .parse()
            .unwrap();
        assert_eq!(list.first(), "10.0.0.1:9190".parse::<SocketAddr>().unwrap());
        assert_eq!(
            list.rest(),
            &["10.0.0.2:9190".parse::<SocketAddr>().unwrap()]
        );
        assert_eq!(list.to_string(), "10.0.0.1:9190,10.0.0.2:9190");
        let config = BrokerArgs {
            transport: Transport::Udp,
            broker: list,
            ipc_dir: DEFAULT_IPC_DIR.into(),
            rdma_broker: DEFAULT_RDMA_BROKER.parse().unwrap(),
            timeout_ms: 10,
        }
        .client_config()
        .unwrap();
        assert_eq!(config.bootstrap_brokers.len(), 1);

        let bad = |text: &str| text.parse::<BrokerList>().unwrap_err();
        assert!(
            bad("10.0.0.1:9190,").contains("an empty broker"),
            "{}",
            bad("x,")
        );
        assert!(bad("broker-1:9190").contains("\"broker-1:9190\" is not an address:port"));
        assert!(bad("10.0.0.1").contains("not an address:port"));
        let many: Vec<String> = (0..65).map(|i| format!("10.0.1.{i}:9190")).collect();
        assert!(bad(&many.join(",")).contains("at most 64"));
    }
}
