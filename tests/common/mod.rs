//! Shared set-up for end-to-end tests: network namespaces with veth pairs, a data plane
//! process, and the `precursor` CLI run inside a namespace; a local cluster of brokers
//! ([`cluster::Cluster`]). Everything created is removed on drop. These tests need root (CI is root); without it they say so and skip.

#![allow(dead_code)]

pub mod cluster;
pub mod disk;
pub mod kafka;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// One data plane at a time: each polls a core, and the machines have two.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Waits (bounded: a liveness check, not a timing claim) until `done` holds.
pub fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !done() {
        if start.elapsed() >= limit {
            panic!("gave up waiting for {what} (bounded wait, not a timing claim)");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    start.elapsed()
}

pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0\n"))
        .unwrap_or(false)
}

/// Returns false (and says so loudly) when the test cannot run here.
pub fn can_run(test: &str) -> bool {
    if !is_root() {
        eprintln!("SKIPPED {test}: needs root for network namespaces (ci/test.sh runs as root)");
        return false;
    }
    true
}

pub fn precursor() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_precursor"))
}

pub fn dataplane_binary() -> PathBuf {
    let path = precursor().with_file_name("precursor-dataplane");
    assert!(
        path.exists(),
        "{} is missing: build the workspace first (cargo build --workspace)",
        path.display()
    );
    path
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("ip runs");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A network namespace holding one end of a veth pair, the other end left in the root
/// namespace for the data plane's af_packet port.
pub struct Netns {
    pub name: String,
    /// The veth end in the root namespace (the data plane binds it).
    pub outer: String,
    pub client_ip: String,
    pub broker_ip: String,
}

impl Netns {
    /// `subnet` picks 10.78.<subnet>.0/24 so tests never share addresses.
    pub fn with_veth(tag: &str, subnet: u8) -> Netns {
        let pid = std::process::id() % 10000;
        let name = format!("prc-{tag}-{pid}");
        let outer = format!("pv{tag}{pid}a");
        let inner = format!("pv{tag}{pid}b");
        assert!(outer.len() <= 15, "interface name {outer} too long");
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        let _ = Command::new("ip").args(["link", "del", &outer]).output();
        ip(&["netns", "add", &name]);
        ip(&[
            "link", "add", &outer, "type", "veth", "peer", "name", &inner,
        ]);
        ip(&["link", "set", &inner, "netns", &name]);
        ip(&["link", "set", &outer, "up"]);
        let client_ip = format!("10.78.{subnet}.1");
        let broker_ip = format!("10.78.{subnet}.2");
        ip(&[
            "-n",
            &name,
            "addr",
            "add",
            &format!("{client_ip}/24"),
            "dev",
            &inner,
        ]);
        ip(&["-n", &name, "link", "set", &inner, "up"]);
        ip(&["-n", &name, "link", "set", "lo", "up"]);
        Netns {
            name,
            outer,
            client_ip,
            broker_ip,
        }
    }

    /// A namespace with only loopback (the data plane runs inside it, e.g. with a TAP).
    pub fn empty(tag: &str) -> Netns {
        let pid = std::process::id() % 10000;
        let name = format!("prc-{tag}-{pid}");
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        ip(&["netns", "add", &name]);
        ip(&["-n", &name, "link", "set", "lo", "up"]);
        Netns {
            name,
            outer: String::new(),
            client_ip: String::new(),
            broker_ip: String::new(),
        }
    }

    /// A command run inside the namespace.
    pub fn command(&self, program: &Path) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name]).arg(program);
        command
    }

    /// Runs `precursor ARGS` inside the namespace against the data plane.
    pub fn precursor(&self, args: &[&str]) -> Output {
        let out = self
            .command(&precursor())
            .args(args)
            .output()
            .expect("precursor runs");
        out
    }
}

/// Deleting a namespace fails with EBUSY while a process that entered it (`ip netns exec`)
/// is still exiting; retry this long before giving up, in milliseconds.
const NETNS_DELETE_PATIENCE_MS: u64 = 5_000;

impl Drop for Netns {
    fn drop(&mut self) {
        let file = Path::new("/run/netns").join(&self.name);
        let deadline = Instant::now() + Duration::from_millis(NETNS_DELETE_PATIENCE_MS);
        loop {
            let out = Command::new("ip")
                .args(["netns", "del", &self.name])
                .output();
            if !file.exists() {
                break;
            }
            if Instant::now() >= deadline {
                let why = out.map(|o| stderr(&o)).unwrap_or_default();
                eprintln!(
                    "WARNING: network namespace {} left behind: {why}",
                    self.name
                );
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if !self.outer.is_empty() {
            let _ = Command::new("ip")
                .args(["link", "del", &self.outer])
                .output();
        }
    }
}

/// A running `precursor-dataplane` with its stderr collected.
pub struct Dataplane {
    child: Option<Child>,
    stderr: Arc<Mutex<Vec<String>>>,
}

/// Where active segments of a test live: hugetlbfs when mounted, else /dev/shm.
pub fn memory_dir(tag: &str) -> PathBuf {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let huge = mounts
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some("/dev/hugepages") && l.contains("hugetlbfs"));
    let base = if huge { "/dev/hugepages" } else { "/dev/shm" };
    PathBuf::from(format!("{base}/precursor-e2e-{tag}-{}", std::process::id()))
}

/// The configuration of a data plane on an af_packet port bound to `netns.outer`.
pub fn af_packet_config(netns: &Netns, data_dir: &Path, memory_dir: &Path, extra: &str) -> String {
    format!(
        "[node]\ndata_dir = {:?}\nmemory_dir = {:?}\n[dataplane]\nfile_prefix = \"e2e-{}\"\n[port]\nkind = \"af_packet\"\niface = {:?}\naddress = {:?}\n{extra}",
        data_dir.display().to_string(),
        memory_dir.display().to_string(),
        netns.outer,
        netns.outer,
        netns.broker_ip,
    )
}

impl Dataplane {
    /// Starts the data plane (optionally inside a namespace) and waits until it is ready.
    pub fn start(config_path: &Path, inside: Option<&Netns>) -> Dataplane {
        Dataplane::spawn(config_path, inside, &[], "dataplane")
    }

    /// Starts `precursor-dataplane --config F EXTRA...` (optionally inside a namespace),
    /// collects its stderr under `[label]`, and waits until it says it is ready.
    fn spawn(
        config_path: &Path,
        inside: Option<&Netns>,
        extra: &[&str],
        label: &'static str,
    ) -> Dataplane {
        let binary = dataplane_binary();
        let mut command = match inside {
            Some(netns) => netns.command(&binary),
            None => Command::new(&binary),
        };
        let mut child = command
            .arg("--config")
            .arg(config_path)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("data plane starts");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let lines = stderr.clone();
        let pipe = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                eprintln!("  [{label}] {line}");
                lines.lock().unwrap().push(line);
            }
        });
        let mut dataplane = Dataplane {
            child: Some(child),
            stderr,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if dataplane.stderr().iter().any(|l| l.contains("ready:")) {
                return dataplane;
            }
            if let Ok(Some(status)) = dataplane.child.as_mut().expect("running").try_wait() {
                std::thread::sleep(Duration::from_millis(100));
                panic!(
                    "{label} exited at start-up ({status}): {:?}",
                    dataplane.stderr()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{label} not ready: {:?}",
                dataplane.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn stderr(&self) -> Vec<String> {
        self.stderr.lock().unwrap().clone()
    }

    /// The collected stderr lines, still readable after `stop` (the exit report).
    pub fn stderr_lines(&self) -> Arc<Mutex<Vec<String>>> {
        self.stderr.clone()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// SIGTERM, wait, and return the counters JSON it printed.
    pub fn stop(mut self) -> serde_json::Value {
        let mut child = self.child.take().unwrap();
        // With `ip netns exec` the child is `ip`, which execs the data plane: same pid.
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let status = child.wait().expect("data plane exits");
        assert!(
            status.success(),
            "data plane exit status {status}: {:?}",
            self.stderr()
        );
        // The stderr reader thread may still be draining the pipe.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(line) = self
                .stderr()
                .iter()
                .find_map(|l| l.strip_prefix("COUNTERS ").map(str::to_string))
            {
                return serde_json::from_str(&line).expect("counters are JSON");
            }
            assert!(
                Instant::now() < deadline,
                "no COUNTERS line: {:?}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGKILL: no flush, no goodbye.
    pub fn kill9(mut self) {
        let mut child = self.child.take().unwrap();
        let _ = Command::new("kill")
            .args(["-KILL", &child.id().to_string()])
            .status();
        let _ = child.wait();
    }
}

impl Drop for Dataplane {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn assert_success(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        stdout(out),
        stderr(out)
    );
}

/// A data plane node on an af_packet port: a namespace with a veth pair for the client, a
/// data directory, a memory directory and a config file. Removed on drop.
pub struct AfPacketNode {
    pub netns: Netns,
    pub config: PathBuf,
    /// `address:port` of the data plane, for `--broker`.
    pub broker: String,
    memory: PathBuf,
    _dir: tempfile::TempDir,
}

/// Removes a data plane's CnC directory (counters, IPC rings: megabytes of /dev/shm) when
/// the test ends, however it ends.
pub struct CncDirRemoved(pub PathBuf);

impl Drop for CncDirRemoved {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl AfPacketNode {
    /// The node's CnC directory: the default `/dev/shm/precursor-<file_prefix>`.
    pub fn ipc_dir(&self) -> PathBuf {
        PathBuf::from(format!("/dev/shm/precursor-e2e-{}", self.netns.outer))
    }

    /// `precursor ARGS --transport ipc --ipc-dir <node's>` in the root namespace.
    pub fn ipc_command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(precursor());
        command
            .args(args)
            .arg("--transport")
            .arg("ipc")
            .arg("--ipc-dir")
            .arg(self.ipc_dir());
        command
    }

    /// Writes `dir/up.toml` for `precursor up` on this node: its config, the control
    /// plane's admin socket and shared files under `dir`, metrics on `metrics`, fast
    /// restarts, then `extra` (more TOML tables). Returns the file's path.
    pub fn up_config(&self, dir: &Path, metrics: &str, extra: &str) -> PathBuf {
        let mut text = std::fs::read_to_string(&self.config).unwrap();
        text.push_str(&format!(
            "\n[controlplane]\nadmin_socket = {:?}\nmetrics_listen = {metrics:?}\nrestart_backoff_ms = 50\n{extra}\n",
            dir.join("admin.sock").display().to_string()
        ));
        text = text.replace(
            "[node]\n",
            &format!(
                "[node]\ncnc_dir = {:?}\n",
                dir.join("cnc").display().to_string()
            ),
        );
        let config = dir.join("up.toml");
        std::fs::write(&config, text).unwrap();
        config
    }

    /// `tag` names the namespace and files; `subnet` picks 10.78.<subnet>.0/24; `extra` is
    /// appended to the config (more TOML tables).
    pub fn new(tag: &str, subnet: u8, extra: &str) -> AfPacketNode {
        AfPacketNode::with_data_dir(tag, subnet, None, extra)
    }

    /// As [`AfPacketNode::new`], with the data directory at `data_dir` (e.g. on a
    /// [`disk::LoopDisk`]) instead of `data` beside the config.
    pub fn with_data_dir(
        tag: &str,
        subnet: u8,
        data_dir: Option<&Path>,
        extra: &str,
    ) -> AfPacketNode {
        let netns = Netns::with_veth(tag, subnet);
        let dir = tempfile::tempdir().unwrap();
        let memory = memory_dir(tag);
        let config = dir.path().join("precursor.toml");
        let data = data_dir.map_or_else(|| dir.path().join("data"), Path::to_path_buf);
        std::fs::write(&config, af_packet_config(&netns, &data, &memory, extra)).unwrap();
        let broker = format!("{}:9190", netns.broker_ip);
        AfPacketNode {
            netns,
            config,
            broker,
            memory,
            _dir: dir,
        }
    }

    /// Starts (or restarts: recovery from disk) the data plane and waits until it is ready.
    pub fn start(&self) -> Dataplane {
        Dataplane::start(&self.config, None)
    }

    /// Runs `precursor ARGS --broker <this node>` inside the client namespace.
    pub fn precursor(&self, args: &[&str]) -> Output {
        let mut with_broker = args.to_vec();
        with_broker.extend(["--broker", &self.broker]);
        self.netns.precursor(&with_broker)
    }
}

impl Drop for AfPacketNode {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.memory);
        // Segments that found no hugepages went to /dev/shm/<the memory dir's name>.
        if let Some(name) = self.memory.file_name() {
            let _ = std::fs::remove_dir_all(Path::new("/dev/shm").join(name));
        }
    }
}

/// Starts `precursor-dataplane --echo` (the bare reflection of the port, no log) and waits
/// until it is ready; stop it like any data plane (its COUNTERS line has `"mode":"echo"`).
pub fn start_echo_dataplane(config_path: &Path, inside: Option<&Netns>) -> Dataplane {
    Dataplane::spawn(config_path, inside, &["--echo"], "echo")
}
