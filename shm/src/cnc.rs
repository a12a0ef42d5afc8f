//! The command-and-control file `<dir>/cnc` (DESIGN.md §3): a versioned header, the command
//! ring (control plane -> data plane) and the event ring (data plane -> control plane).
//! Every command the control plane pushes gets exactly one event with its correlation id.
//!
//! ```text
//!  offset  field                                      written by / when
//!  0       +-----------------------------------------+
//!          | magic u64  "PRECCNC\0" (little endian)   | data plane, LAST, Release
//!  8       | layout_version u32 | writer_pid u32      | data plane, at creation
//!  16      | writer_start_ns u64 (since UNIX epoch)   |
//!  24      | command_ring_offset u64                  |
//!  32      | command_ring_slots u32 | event_ring_slots u32
//!  40      | event_ring_offset u64                    |
//!  48      | layout_bytes u64 (header + both rings)   |
//!  56      | reserved                                 |
//!  64      +-----------------------------------------+
//!          | heartbeat_ms u64 (ms since UNIX epoch)   | data plane, every few ms, Relaxed
//!  128     +-----------------------------------------+
//!          | lease_until_ns u64 (CLOCK_MONOTONIC)     | data plane at creation (u64::MAX
//!          |                                         |  static mode, 0 quorum mode), then
//!          |                                         |  control plane (Release); the
//!          |                                         |  lcore reads it (Acquire)
//!  192     +-----------------------------------------+ <- command_ring_offset
//!          | command ring: ring_bytes(command slots)  | producer: control plane
//!          +-----------------------------------------+ <- event_ring_offset
//!          | event ring: ring_bytes(event slots)      | producer: data plane
//!          +-----------------------------------------+ <- layout_bytes (then page slack)
//! ```
//!
//! The data plane creates `cnc.tmp`, fills the header, stores the magic last (Release) and
//! renames it over `cnc`: a reader sees either the previous complete file or the new one.
//! Every header field is read through atomics.
//!
//! The leadership lease (`metadata = "quorum"`): the data plane leads its replicated
//! partitions only while [`monotonic_ns`] is below `lease_until_ns`; the control plane
//! moves it forward each time the metadata quorum renews this broker's lease. Both
//! processes run on one host and read the same CLOCK_MONOTONIC.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::ring::{ring_bytes, ring_slots_valid, RingConsumer, RingProducer, CACHE_LINE_BYTES};
use crate::{FileId, SharedMapping, ShmError};

/// Layout version of the `cnc` file; bump on any change to the header or the rings.
pub const CNC_LAYOUT_VERSION: u32 = 2;
/// Name of the file in the node's memory directory.
pub const CNC_FILE_NAME: &str = "cnc";
/// Name of the file being built before its rename over [`CNC_FILE_NAME`].
pub const CNC_TMP_FILE_NAME: &str = "cnc.tmp";
/// `b"PRECCNC\0"` as a little-endian u64.
pub const CNC_MAGIC: u64 = u64::from_le_bytes(*b"PRECCNC\0");
/// Bytes of the header: a line of fixed fields, a line for the heartbeat, a line for the
/// leadership lease (each written by one side, on a line of its own).
pub const CNC_HEADER_BYTES: usize = 3 * CACHE_LINE_BYTES;
/// [`DataplaneCnc::create`]'s lease in static mode: never expires.
pub const LEASE_FOREVER_NS: u64 = u64::MAX;
/// [`DataplaneCnc::create`]'s lease in quorum mode: expired (lead nothing until renewed).
pub const LEASE_EXPIRED_NS: u64 = 0;

const MAGIC_OFFSET: usize = 0;
const VERSION_OFFSET: usize = 8;
const PID_OFFSET: usize = 12;
const START_NS_OFFSET: usize = 16;
const COMMAND_RING_OFFSET_OFFSET: usize = 24;
const COMMAND_RING_SLOTS_OFFSET: usize = 32;
const EVENT_RING_SLOTS_OFFSET: usize = 36;
const EVENT_RING_OFFSET_OFFSET: usize = 40;
const LAYOUT_BYTES_OFFSET: usize = 48;
const HEARTBEAT_MS_OFFSET: usize = CACHE_LINE_BYTES;
const LEASE_UNTIL_NS_OFFSET: usize = 2 * CACHE_LINE_BYTES;

/// Why the control plane could not open a shared file (`cnc` or `counters`).
#[derive(Debug, thiserror::Error)]
pub enum CncError {
    #[error("no data plane has started here: {path} does not exist. Is it running, with the same memory directory?")]
    Missing { path: PathBuf },
    #[error("shared file layout version {found}, this binary expects {expected}: the data plane and the control plane come from different builds; restart them with matching binaries")]
    VersionMismatch { found: u32, expected: u32 },
    #[error("shared file is corrupt: {reason}")]
    Corrupt { reason: String },
    #[error("shared file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

pub(crate) fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_nanos() as u64)
        .unwrap_or(0)
}

/// CLOCK_MONOTONIC in nanoseconds: the clock of the leadership lease. A vDSO call (no
/// system call in practice), cheap enough for the lcore's loop.
pub fn monotonic_ns() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid, writable timespec for the call's duration;
    // CLOCK_MONOTONIC is always supported on Linux, so the call cannot fail.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    debug_assert_eq!(rc, 0);
    (now.tv_sec as u64) * 1_000_000_000 + now.tv_nsec as u64
}

pub(crate) fn now_ms() -> u64 {
    now_ns() / 1_000_000
}

/// Whether a process with `pid` is running: `/proc/<pid>/stat` exists and its state is
/// neither zombie (`Z`) nor dead (`X`). A data plane killed after its supervisor stays a
/// zombie until its new parent reaps it (a container's init may never do so), and its CnC
/// file must not look alive meanwhile.
pub(crate) fn pid_exists(pid: u32) -> bool {
    if pid == 0 {
        return false;
    }
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // "pid (comm) S ...": comm may hold spaces and parentheses, so split at the last ')'.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next());
    !matches!(state, Some("Z") | Some("X") | None)
}

/// Creates `<dir>/<tmp_name>` of `bytes`, lets `fill` initialise it (magic excluded), stores
/// `magic` at offset 0 with Release and renames the file to `<dir>/<name>`.
pub(crate) fn create_atomically(
    dir: &Path,
    tmp_name: &str,
    name: &str,
    bytes: usize,
    magic: u64,
    fill: impl FnOnce(&SharedMapping),
) -> Result<Arc<SharedMapping>, ShmError> {
    let mut mapping = SharedMapping::create(&dir.join(tmp_name), bytes)?;
    assert!(mapping.len() >= bytes);
    fill(&mapping);
    mapping
        .atomic_u64(MAGIC_OFFSET)
        .store(magic, Ordering::Release);
    mapping.rename(&dir.join(name))?;
    Ok(Arc::new(mapping))
}

/// Maps `<dir>/<name>` and checks its magic and version (at offsets 0 and 8, common to the
/// shared files); `header_bytes` is the least the file must hold.
pub(crate) fn open_checked(
    path: &Path,
    magic: u64,
    version: u32,
    header_bytes: usize,
) -> Result<Arc<SharedMapping>, CncError> {
    let mapping = match SharedMapping::open(path) {
        Ok(mapping) => mapping,
        Err(ShmError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            return Err(CncError::Missing {
                path: path.to_path_buf(),
            })
        }
        Err(ShmError::Io { path, source }) => return Err(CncError::Io { path, source }),
        Err(error) => {
            return Err(CncError::Corrupt {
                reason: error.to_string(),
            })
        }
    };
    if mapping.len() < header_bytes {
        return Err(CncError::Corrupt {
            reason: format!(
                "{}: {} bytes, shorter than its {header_bytes}-byte header",
                path.display(),
                mapping.len()
            ),
        });
    }
    let found_magic = mapping.atomic_u64(MAGIC_OFFSET).load(Ordering::Acquire);
    if found_magic != magic {
        return Err(CncError::Corrupt {
            reason: format!(
                "{}: magic {found_magic:#018x}, expected {magic:#018x}",
                path.display()
            ),
        });
    }
    let found = mapping.atomic_u32(VERSION_OFFSET).load(Ordering::Relaxed);
    if found != version {
        return Err(CncError::VersionMismatch {
            found,
            expected: version,
        });
    }
    Ok(Arc::new(mapping))
}

/// Whether the file now at `path` is another file than `mapping` (another inode, or the
/// same inode number with another start time at `start_ns_offset`), or is gone.
pub(crate) fn file_replaced(mapping: &SharedMapping, start_ns_offset: usize) -> bool {
    let path = mapping.path();
    let Ok(file) = std::fs::File::open(path) else {
        return true;
    };
    let Ok(metadata) = file.metadata() else {
        return true;
    };
    if FileId::of(&metadata) != mapping.file_id() {
        return true;
    }
    let mut start_ns = [0u8; 8];
    if file
        .read_exact_at(&mut start_ns, start_ns_offset as u64)
        .is_err()
    {
        return true;
    }
    u64::from_le_bytes(start_ns) != mapping.atomic_u64(start_ns_offset).load(Ordering::Relaxed)
}

struct CncLayout {
    command_ring_offset: usize,
    command_ring_slots: u32,
    event_ring_offset: usize,
    event_ring_slots: u32,
    layout_bytes: usize,
}

impl CncLayout {
    fn new(command_ring_slots: u32, event_ring_slots: u32) -> CncLayout {
        let command_ring_offset = CNC_HEADER_BYTES;
        let event_ring_offset = command_ring_offset + ring_bytes(command_ring_slots);
        CncLayout {
            command_ring_offset,
            command_ring_slots,
            event_ring_offset,
            event_ring_slots,
            layout_bytes: event_ring_offset + ring_bytes(event_ring_slots),
        }
    }
}

/// The data plane's side of the `cnc` file: consumer of commands, producer of events.
#[derive(Debug)]
pub struct DataplaneCnc {
    mapping: Arc<SharedMapping>,
    commands: RingConsumer,
    events: RingProducer,
}

impl DataplaneCnc {
    /// Creates a fresh `<dir>/cnc` with two rings of `ring_slots` slots each (a power of
    /// two in `[RING_SLOTS_MIN, RING_SLOTS_MAX]`), replacing any previous file atomically.
    /// Its lease never expires ([`LEASE_FOREVER_NS`]: static mode).
    pub fn create(dir: &Path, ring_slots: u32) -> Result<DataplaneCnc, ShmError> {
        DataplaneCnc::create_with_lease(dir, ring_slots, LEASE_FOREVER_NS)
    }

    /// [`DataplaneCnc::create`] with the lease to start with: [`LEASE_FOREVER_NS`] in
    /// static mode, [`LEASE_EXPIRED_NS`] in quorum mode.
    pub fn create_with_lease(
        dir: &Path,
        ring_slots: u32,
        lease_until_ns: u64,
    ) -> Result<DataplaneCnc, ShmError> {
        if !ring_slots_valid(ring_slots) {
            return Err(ShmError::Layout {
                path: dir.join(CNC_FILE_NAME),
                reason: "ring slots must be a power of two in [RING_SLOTS_MIN, RING_SLOTS_MAX]",
            });
        }
        let layout = CncLayout::new(ring_slots, ring_slots);
        let mapping = create_atomically(
            dir,
            CNC_TMP_FILE_NAME,
            CNC_FILE_NAME,
            layout.layout_bytes,
            CNC_MAGIC,
            |mapping| {
                let store_u64 = |offset: usize, value: u64| {
                    mapping.atomic_u64(offset).store(value, Ordering::Relaxed)
                };
                let store_u32 = |offset: usize, value: u32| {
                    mapping.atomic_u32(offset).store(value, Ordering::Relaxed)
                };
                store_u32(VERSION_OFFSET, CNC_LAYOUT_VERSION);
                store_u32(PID_OFFSET, std::process::id());
                store_u64(START_NS_OFFSET, now_ns());
                store_u64(
                    COMMAND_RING_OFFSET_OFFSET,
                    layout.command_ring_offset as u64,
                );
                store_u32(COMMAND_RING_SLOTS_OFFSET, layout.command_ring_slots);
                store_u32(EVENT_RING_SLOTS_OFFSET, layout.event_ring_slots);
                store_u64(EVENT_RING_OFFSET_OFFSET, layout.event_ring_offset as u64);
                store_u64(LAYOUT_BYTES_OFFSET, layout.layout_bytes as u64);
                store_u64(HEARTBEAT_MS_OFFSET, now_ms());
                store_u64(LEASE_UNTIL_NS_OFFSET, lease_until_ns);
            },
        )?;
        let commands = RingConsumer::attach(
            Arc::clone(&mapping),
            layout.command_ring_offset,
            layout.command_ring_slots,
        );
        let events = RingProducer::attach(
            Arc::clone(&mapping),
            layout.event_ring_offset,
            layout.event_ring_slots,
        );
        Ok(DataplaneCnc {
            mapping,
            commands,
            events,
        })
    }

    /// The command ring's consumer end.
    pub fn commands(&mut self) -> &mut RingConsumer {
        &mut self.commands
    }

    /// The event ring's producer end.
    pub fn events(&mut self) -> &mut RingProducer {
        &mut self.events
    }

    /// Records that the data plane is alive at `now_ms` (ms since the UNIX epoch). One
    /// Relaxed store: no syscall, call it from the poll loop's drain timer.
    #[inline]
    pub fn heartbeat(&self, now_ms: u64) {
        self.heartbeat_cell().store(now_ms, Ordering::Relaxed);
    }

    fn heartbeat_cell(&self) -> &AtomicU64 {
        self.mapping.atomic_u64(HEARTBEAT_MS_OFFSET)
    }

    /// Until when (CLOCK_MONOTONIC ns, [`monotonic_ns`]) this broker may lead: one
    /// Acquire load, for the lcore's loop.
    #[inline]
    pub fn lease_until_ns(&self) -> u64 {
        self.mapping
            .atomic_u64(LEASE_UNTIL_NS_OFFSET)
            .load(Ordering::Acquire)
    }

    /// Path of the `cnc` file.
    pub fn path(&self) -> &Path {
        self.mapping.path()
    }
}

impl Drop for DataplaneCnc {
    /// A data plane that stops says so: heartbeat 0 makes the file dead at once for every
    /// reader, even while the process lingers (flushing, exiting, or a zombie).
    fn drop(&mut self) {
        self.heartbeat_cell().store(0, Ordering::Release);
    }
}

/// The control plane's side of the `cnc` file: producer of commands, consumer of events.
#[derive(Debug)]
pub struct ControlplaneCnc {
    mapping: Arc<SharedMapping>,
    commands: RingProducer,
    events: RingConsumer,
}

impl ControlplaneCnc {
    /// Maps `<dir>/cnc` and checks its magic, version and ring layout. The caller must be
    /// the only control plane attached (the rings are single-producer single-consumer).
    pub fn open(dir: &Path) -> Result<ControlplaneCnc, CncError> {
        let path = dir.join(CNC_FILE_NAME);
        let mapping = open_checked(&path, CNC_MAGIC, CNC_LAYOUT_VERSION, CNC_HEADER_BYTES)?;
        let load_u64 = |offset: usize| mapping.atomic_u64(offset).load(Ordering::Relaxed);
        let load_u32 = |offset: usize| mapping.atomic_u32(offset).load(Ordering::Relaxed);
        let command_ring_slots = load_u32(COMMAND_RING_SLOTS_OFFSET);
        let event_ring_slots = load_u32(EVENT_RING_SLOTS_OFFSET);
        let corrupt = |reason: String| CncError::Corrupt {
            reason: format!("{}: {reason}", path.display()),
        };
        if !ring_slots_valid(command_ring_slots) || !ring_slots_valid(event_ring_slots) {
            return Err(corrupt(format!(
                "ring slots {command_ring_slots} and {event_ring_slots} are not powers of two in range"
            )));
        }
        let layout = CncLayout::new(command_ring_slots, event_ring_slots);
        let found = (
            load_u64(COMMAND_RING_OFFSET_OFFSET),
            load_u64(EVENT_RING_OFFSET_OFFSET),
            load_u64(LAYOUT_BYTES_OFFSET),
        );
        let expected = (
            layout.command_ring_offset as u64,
            layout.event_ring_offset as u64,
            layout.layout_bytes as u64,
        );
        if found != expected {
            return Err(corrupt(format!(
                "ring offsets and size {found:?}, expected {expected:?}"
            )));
        }
        if layout.layout_bytes > mapping.len() {
            return Err(corrupt(format!(
                "{} bytes, its layout needs {}",
                mapping.len(),
                layout.layout_bytes
            )));
        }
        let commands = RingProducer::attach(
            Arc::clone(&mapping),
            layout.command_ring_offset,
            command_ring_slots,
        );
        let events = RingConsumer::attach(
            Arc::clone(&mapping),
            layout.event_ring_offset,
            event_ring_slots,
        );
        Ok(ControlplaneCnc {
            mapping,
            commands,
            events,
        })
    }

    /// The command ring's producer end.
    pub fn commands(&mut self) -> &mut RingProducer {
        &mut self.commands
    }

    /// The event ring's consumer end.
    pub fn events(&mut self) -> &mut RingConsumer {
        &mut self.events
    }

    /// Process id of the data plane that created the file.
    pub fn writer_pid(&self) -> u32 {
        self.mapping.atomic_u32(PID_OFFSET).load(Ordering::Relaxed)
    }

    /// When that data plane created the file, in ns since the UNIX epoch.
    pub fn writer_start_ns(&self) -> u64 {
        self.mapping
            .atomic_u64(START_NS_OFFSET)
            .load(Ordering::Relaxed)
    }

    /// Renews (or ends) this broker's leadership lease: the data plane leads while
    /// [`monotonic_ns`] is below `lease_until_ns`. One Release store; 0 fences it at once.
    pub fn set_lease_until_ns(&self, lease_until_ns: u64) {
        self.mapping
            .atomic_u64(LEASE_UNTIL_NS_OFFSET)
            .store(lease_until_ns, Ordering::Release);
    }

    /// The lease as the data plane sees it.
    pub fn lease_until_ns(&self) -> u64 {
        self.mapping
            .atomic_u64(LEASE_UNTIL_NS_OFFSET)
            .load(Ordering::Acquire)
    }

    /// The data plane's last heartbeat, in ms since the UNIX epoch.
    pub fn heartbeat_ms(&self) -> u64 {
        self.mapping
            .atomic_u64(HEARTBEAT_MS_OFFSET)
            .load(Ordering::Relaxed)
    }

    /// True when the writer's process exists and its heartbeat is at most
    /// `heartbeat_timeout_ms` old (a heartbeat from the future counts as recent).
    pub fn writer_alive(&self, heartbeat_timeout_ms: u64) -> bool {
        pid_exists(self.writer_pid())
            && now_ms().saturating_sub(self.heartbeat_ms()) <= heartbeat_timeout_ms
    }

    /// True when the file at the path is no longer the one mapped (another inode, or
    /// another start time), or is gone: the data plane restarted; open again.
    pub fn is_replaced(&self) -> bool {
        file_replaced(&self.mapping, START_NS_OFFSET)
    }

    /// Path of the `cnc` file.
    pub fn path(&self) -> &Path {
        self.mapping.path()
    }
}
