//! `precursor-dataplane`: the only binary that links DPDK.
//!
//! Usage: `precursor-dataplane [--config FILE] [--echo]`. With no file it runs the embedded
//! default (a TAP port `prc0`, see `precursor config show`). `--echo` sets up the same EAL
//! and port but only reflects UDP datagrams back to their senders (`echo.rs`): the raw
//! limit of the port, for benchmarks. SIGINT/SIGTERM stop it cleanly: the
//! lcore sends what it buffered, the flusher persists everything, then it exits and prints
//! its counters as one `COUNTERS {...}` line on stderr.

use precursor_config::Config;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// Library messages (recovery truncations, flusher errors) go to stderr, one line each.
struct StderrLogger;

impl log::Log for StderrLogger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= log::Level::Info
    }
    fn log(&self, record: &log::Record) {
        if self.enabled(record.metadata()) {
            let level = record.level().as_str().to_ascii_lowercase();
            eprintln!("precursor-dataplane: {level}: {}", record.args());
        }
    }
    fn flush(&self) {}
}

static LOGGER: StderrLogger = StderrLogger;

const USAGE: &str = "precursor-dataplane [--config FILE] [--echo]";

fn main() -> ExitCode {
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(log::LevelFilter::Info);
    }
    let mut config_path: Option<PathBuf> = None;
    let mut echo = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--config" | "-c" => match args.next() {
                Some(path) => config_path = Some(PathBuf::from(path)),
                None => return usage("--config needs a file"),
            },
            "--echo" => echo = true,
            "--help" | "-h" => {
                println!("usage: {USAGE}");
                return ExitCode::SUCCESS;
            }
            other => return usage(&format!("unknown argument {other:?}")),
        }
    }
    let config = match &config_path {
        Some(path) => match Config::load(path) {
            Ok(config) => config,
            Err(error) => {
                eprintln!("precursor-dataplane: {error}");
                return ExitCode::from(2);
            }
        },
        None => Config::default(),
    };
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        if let Err(error) = signal_hook::flag::register(signal, stop.clone()) {
            eprintln!("precursor-dataplane: cannot install a signal handler: {error}");
            return ExitCode::FAILURE;
        }
    }
    let result = if echo {
        precursor_dataplane::echo::run(&config, stop)
    } else {
        precursor_dataplane::node::run(&config, stop)
    };
    match result {
        Ok(counters) => {
            eprintln!("COUNTERS {counters}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("precursor-dataplane: {error}");
            ExitCode::FAILURE
        }
    }
}

fn usage(problem: &str) -> ExitCode {
    eprintln!("precursor-dataplane: {problem}\nusage: {USAGE}");
    ExitCode::from(2)
}
