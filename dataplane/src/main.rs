//! `precursor-dataplane`: the only binary that links DPDK.
//!
//! Usage: `precursor-dataplane [--config FILE] [--echo]`. With no file it runs the embedded
//! default (a TAP port `prc0`, see `precursor config show`). `--echo` sets up the same EAL
//! and port but only reflects UDP datagrams back to their senders (`echo.rs`): the raw
//! limit of the port, for benchmarks. `--lifeline-stdin` (used by `precursor up`) stops it
//! when its stdin closes, i.e. when the supervisor is gone. SIGINT/SIGTERM stop it cleanly: the
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

const USAGE: &str = "precursor-dataplane [--config FILE] [--echo] [--lifeline-stdin]";

fn main() -> ExitCode {
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(log::LevelFilter::Info);
    }
    let mut config_path: Option<PathBuf> = None;
    let mut echo = false;
    let mut lifeline = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--config" | "-c" => match args.next() {
                Some(path) => config_path = Some(PathBuf::from(path)),
                None => return usage("--config needs a file"),
            },
            "--echo" => echo = true,
            "--lifeline-stdin" => lifeline = true,
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
    if lifeline {
        // Spawned before rte_eal_init, like every non-lcore thread (it is not pinned).
        if let Err(error) = watch_lifeline(stop.clone()) {
            eprintln!("precursor-dataplane: cannot watch stdin: {error}");
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

/// `--lifeline-stdin`: the supervisor (`precursor up`) holds the other end of our stdin.
/// When it goes away — even by SIGKILL — the pipe closes, and we stop as on SIGTERM: flush,
/// then exit. No orphaned data plane keeps the data directory locked.
fn watch_lifeline(stop: Arc<AtomicBool>) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("precursor-lifeline".into())
        .spawn(move || {
            use std::io::Read;
            let mut stdin = std::io::stdin();
            let mut buffer = [0u8; 64];
            // Whatever the supervisor might write is ignored; only EOF or an error counts.
            let why = loop {
                match stdin.read(&mut buffer) {
                    Ok(0) => break "stdin closed".to_string(),
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => break format!("stdin: {e}"),
                }
            };
            eprintln!("precursor-dataplane: the supervisor is gone ({why}): stopping");
            stop.store(true, std::sync::atomic::Ordering::Release);
        })?;
    Ok(())
}
