//! Putting the control plane together, and `precursor up`'s supervision of the data plane.
//!
//! ```text
//!  precursor up
//!    ├─ admin socket task, metrics task, link thread (CnC)        served from the start
//!    └─ loop:
//!         spawn precursor-dataplane --config F  (own process group, stderr passed through)
//!         watch: child exit | heartbeat stale (link) | never came up | SIGINT/SIGTERM
//!         died  -> log, count, wait back-off (restart_backoff_ms doubling up to
//!                  restart_backoff_ms_max; reset after DATAPLANE_STABLE_MS of life), again
//!         signal -> SIGTERM the data plane, wait for it (it flushes), SIGKILL after
//!                  DATAPLANE_STOP_TIMEOUT_MS; remove the admin socket; exit 0
//! ```
//!
//! The link thread follows each new data plane by itself: it notices the replaced CnC file
//! (`ControlplaneCnc::is_replaced`) and attaches to the new one.

use crate::{admin, gateway, member, metrics, ControlplaneError, Node};
use precursor_config::Config;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

/// How the control plane finds its data plane.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    /// `precursor controlplane`: a data plane started elsewhere; follow it across restarts.
    Attach,
    /// `precursor up`: run `dataplane_binary --config <file>` as a child and supervise it.
    Supervise { dataplane_binary: PathBuf },
}

/// How long a started data plane may take to publish a live CnC (EAL start-up, recovery
/// of every partition) before it is killed and started again, in milliseconds.
pub const DATAPLANE_START_TIMEOUT_MS: u64 = 300_000;
/// `precursor-dataplane` exits with this code when its arguments or configuration are bad.
const DATAPLANE_USAGE_EXIT_CODE: i32 = 2;

/// How long a data plane may take to flush and exit after SIGTERM before SIGKILL, in ms.
pub const DATAPLANE_STOP_TIMEOUT_MS: u64 = 60_000;
/// A data plane that lived this long before dying restarts after the initial back-off
/// again, not the doubled one, in milliseconds.
pub const DATAPLANE_STABLE_MS: u64 = 60_000;
/// How often the supervisor and the transition log look at the link, in milliseconds.
const WATCH_INTERVAL_MS: u64 = 100;

const LOG: &str = "precursor-controlplane";

/// Runs the control plane until SIGINT or SIGTERM (see [`crate::run`]).
pub async fn serve(
    config: Config,
    config_path: Option<PathBuf>,
    mode: Mode,
) -> Result<(), ControlplaneError> {
    let (stop, stopping) = watch::channel(false);
    let mut sigint = signal(SignalKind::interrupt()).map_err(ControlplaneError::Signals)?;
    let mut sigterm = signal(SignalKind::terminate()).map_err(ControlplaneError::Signals)?;
    tokio::spawn(async move {
        tokio::select! {
            _ = sigint.recv() => {}
            _ = sigterm.recv() => {}
        }
        let _ = stop.send(true);
    });
    serve_until(config, config_path, mode, stopping).await
}

/// [`serve`] with the stop signal given by the caller (tests stop it this way).
pub async fn serve_until(
    config: Config,
    config_path: Option<PathBuf>,
    mode: Mode,
    mut stopping: watch::Receiver<bool>,
) -> Result<(), ControlplaneError> {
    let admin_socket = config.controlplane.admin_socket.clone();
    let metrics_listen = config.controlplane.metrics_listen.clone();
    let node = Node::new(config)?;
    let admin_server = admin::bind(&admin_socket)?;
    let metrics_listener = metrics::bind(&metrics_listen).await?;
    let metrics_address = metrics_listener
        .local_addr()
        .map_or(metrics_listen, |a| a.to_string());
    eprintln!(
        "{LOG}: admin socket {}, metrics http://{metrics_address}/metrics, shared files in {}",
        admin_socket.display(),
        node.cnc_dir.display()
    );
    let mut tasks = vec![
        tokio::spawn(admin::serve(admin_server, node.clone())),
        tokio::spawn(metrics::serve(metrics_listener, node.clone())),
        tokio::spawn(log_transitions(node.clone())),
    ];
    let cluster_listen = node.config.controlplane.cluster_listen.clone();
    if !cluster_listen.is_empty() {
        let listener = admin::bind_cluster_listener(&cluster_listen).await?;
        eprintln!(
            "{LOG}: cluster listener (admin API for the other brokers) on {}",
            listener
                .local_addr()
                .map_or(cluster_listen, |a| a.to_string())
        );
        tasks.push(tokio::spawn(admin::serve_cluster(listener, node.clone())));
    }
    if node.config.gateway.enabled {
        let listeners = gateway::bind(&node.config.gateway).await?;
        let gateway = gateway::Gateway::open(node.clone())?;
        let _ = node.gateway.set(Arc::downgrade(&gateway));
        let described: Vec<String> = listeners.iter().map(|l| l.describe()).collect();
        eprintln!(
            "{LOG}: kafka gateway on {}, state in {}",
            described.join(", "),
            node.config.gateway_state_dir().display()
        );
        tasks.push(tokio::spawn(gateway::serve(listeners, gateway)));
    }
    if node.config.cluster.quorum_enabled() {
        tasks.extend(member::start(&node).await?);
    }
    let outcome = match mode {
        Mode::Attach => {
            let _ = stopping.wait_for(|stop| *stop).await;
            member::leave(&node).await;
            Ok(())
        }
        Mode::Supervise { dataplane_binary } => {
            supervise(&node, &dataplane_binary, config_path, &mut stopping).await
        }
    };
    for task in tasks {
        task.abort();
        let _ = task.await; // dropping the admin server removes the socket file
    }
    eprintln!("{LOG}: stopped");
    outcome
}

/// Logs when a data plane attaches and when it goes away.
async fn log_transitions(node: Arc<Node>) {
    let mut was_alive = false;
    let mut interval = tokio::time::interval(Duration::from_millis(WATCH_INTERVAL_MS));
    loop {
        interval.tick().await;
        let state = node.link.state();
        let alive = state.is_alive();
        if alive && !was_alive {
            eprintln!(
                "{LOG}: attached to the data plane (pid {})",
                state.writer_pid().unwrap_or(0)
            );
        } else if !alive && was_alive {
            eprintln!("{LOG}: lost the data plane: {}", state.problem());
        }
        was_alive = alive;
    }
}

enum Death {
    Exited(ExitStatus),
    Hung,
    NeverCameUp,
    WaitFailed(std::io::Error),
}

async fn supervise(
    node: &Node,
    binary: &Path,
    config_path: Option<PathBuf>,
    stopping: &mut watch::Receiver<bool>,
) -> Result<(), ControlplaneError> {
    let (config_file, temporary) = match config_path {
        Some(path) => (path, false),
        None => {
            let path =
                std::env::temp_dir().join(format!("precursor-up-{}.toml", std::process::id()));
            std::fs::write(&path, node.config.to_toml()).map_err(|source| {
                ControlplaneError::ConfigFile {
                    path: path.clone(),
                    source,
                }
            })?;
            (path, true)
        }
    };
    let outcome = supervise_with(node, binary, &config_file, stopping).await;
    if temporary {
        let _ = std::fs::remove_file(&config_file);
    }
    outcome
}

async fn supervise_with(
    node: &Node,
    binary: &Path,
    config_file: &Path,
    stopping: &mut watch::Receiver<bool>,
) -> Result<(), ControlplaneError> {
    let backoff_min_ms = node.config.controlplane.restart_backoff_ms;
    let backoff_max_ms = node
        .config
        .controlplane
        .restart_backoff_ms_max
        .max(backoff_min_ms);
    let mut backoff_ms = backoff_min_ms;
    loop {
        // A binary that cannot be started (missing, not executable): no restart fixes it.
        let mut child = spawn(binary, config_file)?;
        // Held until this child is gone: `Child::wait` would close a stdin left inside it.
        let _lifeline = child.stdin.take();
        let pid = child.id().unwrap_or(0);
        let started = Instant::now();
        eprintln!(
            "{LOG}: started the data plane: {} --config {} (pid {pid})",
            binary.display(),
            config_file.display()
        );
        let death = tokio::select! {
            biased;
            _ = stopping.wait_for(|stop| *stop) => None,
            death = watch_child(node, &mut child, pid) => Some(death),
        };
        let Some(death) = death else {
            // Quorum mode: leaderships move away before the data plane stops.
            member::leave(node).await;
            stop_child(&mut child, pid).await;
            return Ok(());
        };
        // Before anything else: the quorum member withdraws the lease and fences at once.
        node.dataplane_deaths.send_modify(|deaths| *deaths += 1);
        match death {
            Death::Exited(status) if status.code() == Some(DATAPLANE_USAGE_EXIT_CODE) => {
                // A configuration or usage error: the same file fails the same way again.
                return Err(ControlplaneError::DataplaneRefused { status });
            }
            Death::Exited(status) => {
                eprintln!("{LOG}: the data plane (pid {pid}) exited: {status}")
            }
            Death::WaitFailed(error) => {
                eprintln!("{LOG}: cannot wait for the data plane (pid {pid}): {error}")
            }
            Death::Hung => {
                eprintln!(
                    "{LOG}: the data plane (pid {pid}) stopped its heartbeat for more than \
                     {} ms: killing it",
                    crate::link::HEARTBEAT_TIMEOUT_MS
                );
                kill_child(&mut child).await;
            }
            Death::NeverCameUp => {
                eprintln!(
                    "{LOG}: the data plane (pid {pid}) published no live CnC in {} within \
                     {DATAPLANE_START_TIMEOUT_MS} ms: killing it",
                    node.cnc_dir.display()
                );
                kill_child(&mut child).await;
            }
        }
        if started.elapsed() >= Duration::from_millis(DATAPLANE_STABLE_MS) {
            backoff_ms = backoff_min_ms;
        }
        eprintln!("{LOG}: restarting the data plane in {backoff_ms} ms");
        tokio::select! {
            biased;
            _ = stopping.wait_for(|stop| *stop) => return Ok(()),
            _ = tokio::time::sleep(Duration::from_millis(backoff_ms)) => {}
        }
        backoff_ms = backoff_ms.saturating_mul(2).min(backoff_max_ms);
        node.metrics.count_restart();
    }
}

fn spawn(binary: &Path, config_file: &Path) -> Result<Child, ControlplaneError> {
    Command::new(binary)
        .arg("--config")
        .arg(config_file)
        // A lifeline: the child's stdin is a pipe only we hold (never written; the caller
        // takes it out of `Child`). If this process dies, even by SIGKILL, the pipe closes
        // and the data plane shuts itself down cleanly instead of living on as an orphan.
        .arg("--lifeline-stdin")
        .stdin(std::process::Stdio::piped())
        // Its own process group: a terminal's Ctrl-C reaches the supervisor only, which
        // then stops the data plane with SIGTERM (one signal, one clean shut-down).
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| ControlplaneError::Spawn {
            binary: binary.to_path_buf(),
            source,
        })
}

/// Resolves when the child dies, hangs (stale heartbeat) or never publishes a live CnC.
async fn watch_child(node: &Node, child: &mut Child, pid: u32) -> Death {
    let started = Instant::now();
    let mut attached = false;
    let mut interval = tokio::time::interval(Duration::from_millis(WATCH_INTERVAL_MS));
    loop {
        tokio::select! {
            biased;
            status = child.wait() => {
                return match status {
                    Ok(status) => Death::Exited(status),
                    Err(error) => Death::WaitFailed(error),
                };
            }
            _ = interval.tick() => {}
        }
        let state = node.link.state();
        let ours = state.writer_pid() == Some(pid);
        if ours && state.is_alive() {
            attached = true;
        } else if attached && ours {
            return Death::Hung;
        } else if !attached
            && started.elapsed() >= Duration::from_millis(DATAPLANE_START_TIMEOUT_MS)
        {
            return Death::NeverCameUp;
        }
    }
}

/// SIGTERM, then wait for the flush and exit; SIGKILL after DATAPLANE_STOP_TIMEOUT_MS.
async fn stop_child(child: &mut Child, pid: u32) {
    eprintln!("{LOG}: stopping the data plane (pid {pid}): SIGTERM, waiting for it to flush");
    if let Ok(raw) = i32::try_from(pid) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(raw),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
    let limit = Duration::from_millis(DATAPLANE_STOP_TIMEOUT_MS);
    match tokio::time::timeout(limit, child.wait()).await {
        Ok(Ok(status)) => eprintln!("{LOG}: the data plane (pid {pid}) exited: {status}"),
        Ok(Err(error)) => eprintln!("{LOG}: cannot wait for the data plane: {error}"),
        Err(_) => {
            eprintln!(
                "{LOG}: the data plane (pid {pid}) did not exit within \
                 {DATAPLANE_STOP_TIMEOUT_MS} ms of SIGTERM: killing it"
            );
            kill_child(child).await;
        }
    }
}

async fn kill_child(child: &mut Child) {
    let _ = child.start_kill();
    let _ = child.wait().await;
}
