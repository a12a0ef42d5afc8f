//! The brokers' processes: `precursor up` started in its namespace in a session of its own,
//! found again through its pid file, waited for, stopped.

use super::*;

/// The pid of the broker's `precursor up`, when it runs (the pid file names a live process
/// that is that broker's `up`: not a zombie, not a recycled pid).
pub(super) fn broker_pid(broker: &BrokerLayout) -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(&broker.pid_file)
        .ok()?
        .trim()
        .parse()
        .ok()?;
    process_is(pid, &broker.config).then_some(pid)
}

/// Whether `pid` is alive (not a zombie) and runs `precursor up --config <config>`.
pub(super) fn process_is(pid: i32, config: &Path) -> bool {
    let proc = PathBuf::from(format!("/proc/{pid}"));
    let Ok(stat) = std::fs::read_to_string(proc.join("stat")) else {
        return false;
    };
    // pid (comm) S ...: the state follows the last ')'.
    let state = stat.rsplit_once(')').map(|(_, rest)| rest.trim_start());
    if state.is_none_or(|s| s.starts_with('Z') || s.starts_with('X')) {
        return false;
    }
    // In the middle of an execve (setsid and `ip netns exec` exec the next program) the
    // command line reads empty for a moment: look again.
    let mut cmdline = Vec::new();
    for _ in 0..CMDLINE_READS_MAX {
        cmdline = std::fs::read(proc.join("cmdline")).unwrap_or_default();
        if !cmdline.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(CMDLINE_REREAD_MS));
    }
    let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
    let config = config.as_os_str().as_encoded_bytes();
    args.contains(&b"up".as_slice()) && args.contains(&config)
}

/// Starts the broker's `precursor up` in its namespace, in a session of its own (a
/// terminal's signals do not reach it), logging to its log file; writes its pid file.
pub(super) fn spawn_broker(broker: &BrokerLayout) -> Result<Child> {
    let binary = std::env::current_exe().context("cannot find the precursor binary")?;
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&broker.log)
        .with_context(|| format!("cannot open {}", broker.log.display()))?;
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let _ = writeln!(
        log,
        "--- precursor cluster: starting broker {} (unix time {since_epoch})",
        broker.id
    );
    let node_dir = broker.config.parent().expect("a config has a directory");
    // setsid and `ip netns exec` each exec the next program: the pid is `precursor up`'s.
    let child = Command::new("setsid")
        .args(["ip", "netns", "exec", &broker.netns])
        .arg(&binary)
        .arg("up")
        .arg("--config")
        .arg(&broker.config)
        .current_dir(node_dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone().context("cannot share the log file")?)
        .stderr(log)
        .spawn()
        .context("cannot start `setsid ip netns exec ... precursor up` (util-linux, iproute2)")?;
    std::fs::write(&broker.pid_file, format!("{}\n", child.id()))
        .with_context(|| format!("cannot write {}", broker.pid_file.display()))?;
    Ok(child)
}

/// Waits until every started broker's data plane is attached, bounded by
/// [`READY_TIMEOUT_MS`]; a broker that exits or does not come up is an error naming it,
/// with the last lines of its log.
pub(super) fn wait_ready(started: &mut [(&BrokerLayout, Child)]) -> Result<()> {
    let deadline = Instant::now() + Duration::from_millis(READY_TIMEOUT_MS);
    let mut ready = vec![false; started.len()];
    loop {
        for (i, (broker, child)) in started.iter_mut().enumerate() {
            if ready[i] {
                continue;
            }
            if let Ok(Some(status)) = child.try_wait() {
                bail!(
                    "broker {} exited at start-up ({status}); the end of {}:\n{}",
                    broker.id,
                    broker.log.display(),
                    log_tail(&broker.log)
                );
            }
            if let Ok(status) = dataplane_status(broker) {
                ready[i] = status.dataplane_alive;
            }
        }
        if ready.iter().all(|&r| r) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            let (broker, _) = started[ready.iter().position(|&r| !r).expect("one is not ready")];
            let why = match dataplane_status(broker) {
                Ok(_) => "its control plane answers, its data plane is not attached".to_string(),
                Err(error) => format!("{error:#}"),
            };
            bail!(
                "broker {} not up within {READY_TIMEOUT_MS} ms ({why}); the end of {}:\n{}",
                broker.id,
                broker.log.display(),
                log_tail(&broker.log)
            );
        }
        std::thread::sleep(Duration::from_millis(POLL_MS));
    }
}

pub(super) fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(LOG_TAIL_LINES);
    lines[start..]
        .iter()
        .map(|l| format!("  {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

pub(super) fn dataplane_status(broker: &BrokerLayout) -> Result<NodeStatus> {
    let timeout = Duration::from_millis(STATUS_TIMEOUT_MS);
    match admin::request_within(&broker.admin_socket, &Request::Status, timeout)? {
        Response::Status(status) => Ok(status),
        Response::Error { code, message } => bail!("{message} ({code})"),
        other => bail!("unexpected answer {other:?}"),
    }
}

pub(super) fn signal(pid: i32, signal: nix::sys::signal::Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal);
}

/// Processes inside a namespace (`ip netns pids`).
pub(super) fn netns_pids(netns: &str) -> Vec<i32> {
    if !netns_exists(netns) {
        return Vec::new();
    }
    Command::new("ip")
        .args(["netns", "pids", netns])
        .output()
        .map(|out| {
            String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

pub(super) fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X']))
    })
}

/// Refuses to stop or remove a cluster whose namespaces hold processes that are not its
/// own: the names are another cluster's now (started in another directory after this one
/// went down), or someone works inside one.
pub(super) fn check_no_foreign_processes(layout: &ClusterLayout) -> Result<()> {
    let dir = layout.dir.as_os_str().as_encoded_bytes();
    for broker in &layout.brokers {
        for pid in netns_pids(&broker.netns) {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let ours = cmdline.windows(dir.len()).any(|w| w == dir);
            if !ours && alive(pid) {
                let shown = String::from_utf8_lossy(&cmdline).replace('\0', " ");
                bail!(
                    "network namespace {} holds a process that is not this cluster's (pid \
                     {pid}: {}): another cluster named {:?}, started with another --dir, or a \
                     shell inside it; stop that first",
                    broker.netns,
                    shown.trim(),
                    layout.name
                );
            }
        }
    }
    Ok(())
}

/// SIGTERM to every broker's `precursor up` (it stops its data plane, which flushes); after
/// [`STOP_TIMEOUT_MS`] SIGKILL to whatever still runs in their namespaces. Removes their
/// pid files.
pub(super) fn stop_brokers(brokers: &[&BrokerLayout]) {
    use nix::sys::signal::Signal;
    for broker in brokers {
        if let Some(pid) = broker_pid(broker) {
            signal(pid, Signal::SIGTERM);
        }
    }
    let deadline = Instant::now() + Duration::from_millis(STOP_TIMEOUT_MS);
    let remaining = |broker: &BrokerLayout| {
        let mut pids = netns_pids(&broker.netns);
        pids.extend(broker_pid(broker));
        pids.retain(|&pid| alive(pid));
        pids
    };
    loop {
        let left: Vec<i32> = brokers.iter().flat_map(|b| remaining(b)).collect();
        if left.is_empty() {
            break;
        }
        if Instant::now() >= deadline {
            eprintln!(
                "precursor: warning: processes {left:?} did not stop within {STOP_TIMEOUT_MS} ms of SIGTERM: killing them"
            );
            for pid in &left {
                signal(*pid, Signal::SIGKILL);
            }
            let kill_deadline = Instant::now() + Duration::from_millis(STOP_TIMEOUT_MS);
            while left.iter().any(|&pid| alive(pid)) && Instant::now() < kill_deadline {
                std::thread::sleep(Duration::from_millis(POLL_MS));
            }
            break;
        }
        std::thread::sleep(Duration::from_millis(POLL_MS));
    }
    for broker in brokers {
        let _ = std::fs::remove_file(&broker.pid_file);
    }
}

/// Stops everything of the cluster and removes its network and shared-memory files; the
/// cluster's directory stays.
pub(super) fn teardown(layout: &ClusterLayout) {
    let brokers: Vec<&BrokerLayout> = layout.brokers.iter().collect();
    stop_brokers(&brokers);
    delete_network(layout);
    for broker in &layout.brokers {
        for dir in [&broker.cnc_dir, &broker.memory_dir] {
            if dir.exists() {
                if let Err(error) = std::fs::remove_dir_all(dir) {
                    eprintln!(
                        "precursor: warning: cannot remove {}: {error}",
                        dir.display()
                    );
                }
            }
        }
        // A control plane killed with SIGKILL leaves its socket file.
        let _ = std::fs::remove_file(&broker.admin_socket);
    }
}
