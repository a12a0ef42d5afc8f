//! [`DpdkError`]: which DPDK call failed, the decoded errno, and what an operator
//! should do about it.

use std::ffi::CStr;

use crate::sys;

/// An error from DPDK (or from the OS calls this crate makes next to it).
///
/// `Call` carries the failing function, the errno (from `rte_errno` or a negative
/// return) decoded with `rte_strerror`, and a hint saying what to do.
#[derive(Debug, thiserror::Error)]
pub enum DpdkError {
    /// `Eal::init` was called a second time in this process (after a success or
    /// a failure).
    #[error(
        "the DPDK EAL was already initialized in this process (DPDK allows one rte_eal_init per \
         process, and no retry after a failed one): create one Eal at start-up and share it \
         (tests: Eal::shared_for_tests); after a failed init, fix the arguments and restart"
    )]
    AlreadyInitialized,
    /// A DPDK object was requested while no `Eal` is alive.
    #[error(
        "the DPDK EAL is not running (never initialized, or already cleaned up): call Eal::init \
         first and keep the Eal alive while DPDK objects exist"
    )]
    EalNotRunning,
    /// A DPDK (or OS) call failed.
    #[error("{call} failed: {reason} (errno {errno}); {hint}")]
    Call {
        /// The failing function, e.g. `rte_pktmbuf_pool_create`.
        call: &'static str,
        /// Positive errno value (from `rte_errno`, a negative return, or `errno`).
        errno: i32,
        /// `rte_strerror(errno)`.
        reason: String,
        /// What to do about it.
        hint: &'static str,
    },
    /// No ethdev port with this name.
    #[error(
        "no DPDK port named {name:?} (ports present: {available:?}): create it with an EAL \
         argument (e.g. --vdev=net_tap0,iface=prc0, --vdev=net_ring0, \
         --vdev=net_af_packet0,iface=veth0) or bind a NIC to vfio-pci and allow its PCI address \
         (-a 0000:01:00.0); if the --vdev was given, its probe failed: read DPDK's log on stderr \
         (raise --log-level) — tap and af_packet need root and an existing interface"
    )]
    PortNotFound {
        /// The name asked for.
        name: String,
        /// Names of the ports that do exist.
        available: Vec<String>,
    },
    /// The port is owned by another live `Port` value.
    #[error(
        "DPDK port {port_id} ({name}) is already owned by another Port in this process: keep one \
         Port per device"
    )]
    PortInUse {
        /// ethdev port id.
        port_id: u16,
        /// ethdev name.
        name: String,
    },
    /// An argument out of DPDK's (or the device's) limits, caught before calling DPDK.
    #[error("invalid {what}: {reason}")]
    InvalidArgument {
        /// Which argument.
        what: &'static str,
        /// Why, with the limit.
        reason: String,
    },
}

impl DpdkError {
    /// Error for `call` that failed with positive `errno`.
    pub(crate) fn call(call: &'static str, errno: i32) -> DpdkError {
        DpdkError::Call {
            call,
            errno,
            reason: strerror(errno),
            hint: hint(call, errno),
        }
    }

    /// Error for `call` that signalled failure and set `rte_errno`.
    pub(crate) fn from_rte_errno(call: &'static str) -> DpdkError {
        DpdkError::call(call, rte_errno())
    }

    /// Error for an OS call that failed and set `errno`.
    pub(crate) fn from_os_errno(call: &'static str) -> DpdkError {
        let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
        DpdkError::Call {
            call,
            errno,
            reason: std::io::Error::from_raw_os_error(errno).to_string(),
            hint: hint(call, errno),
        }
    }

    /// The errno of a failed call, if this is one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            DpdkError::Call { errno, .. } => Some(*errno),
            _ => None,
        }
    }
}

/// `Ok(ret)` for `ret >= 0`, else the error for `call` with errno `-ret`
/// (ethdev's convention).
pub(crate) fn check(call: &'static str, ret: i32) -> Result<i32, DpdkError> {
    if ret >= 0 {
        Ok(ret)
    } else {
        Err(DpdkError::call(call, -ret))
    }
}

/// The calling thread's `rte_errno`.
pub(crate) fn rte_errno() -> i32 {
    // SAFETY: prc_rte_errno reads a thread-local int; no preconditions.
    unsafe { sys::prc_rte_errno() }
}

/// `rte_strerror(errno)`, copied out (DPDK's buffer is thread-local and reused).
pub(crate) fn strerror(errno: i32) -> String {
    // SAFETY: rte_strerror accepts any int and returns a pointer to a
    // NUL-terminated string (static, or in a thread-local buffer), valid until
    // the next call on this thread; we copy it before returning.
    let text = unsafe { sys::rte_strerror(errno) };
    if text.is_null() {
        return format!("errno {errno}");
    }
    // SAFETY: non-null, NUL-terminated, valid until the next rte_strerror on
    // this thread (see above).
    unsafe { CStr::from_ptr(text) }
        .to_string_lossy()
        .into_owned()
}

const HINT_LOG: &str = "DPDK logged the details on stderr (raise --log-level=8 to see more)";

fn hint(call: &'static str, errno: i32) -> &'static str {
    use libc::*;
    match (call, errno) {
        ("rte_eal_init", EACCES) | ("rte_eal_init", ENODEV) => {
            "cannot use hugepages: as root reserve and mount them \
             (echo 512 > /proc/sys/vm/nr_hugepages; mkdir -p /dev/hugepages; \
             mount -t hugetlbfs nodev /dev/hugepages), or pass --no-huge -m 256 (tests)"
        }
        ("rte_eal_init", ENOMEM) => {
            "not enough memory for the EAL: reserve more hugepages \
             (echo 512 > /proc/sys/vm/nr_hugepages), lower -m, or pass --no-huge -m 256"
        }
        ("rte_eal_init", EINVAL) => {
            "an EAL argument is invalid (check spelling of -l/--lcores, --vdev, -a, -m); \
             DPDK printed which on stderr"
        }
        ("rte_eal_init", EALREADY) => {
            "a previous rte_eal_init in this process failed part-way and DPDK cannot retry: \
             restart the process"
        }
        ("rte_eal_init", EPROTO) => {
            "the PCI bus is not readable: pass --no-pci, or run as root with devices bound to vfio-pci"
        }
        ("rte_eal_init", EAGAIN) => {
            "a bus or resource was busy, often another DPDK process with the same --file-prefix: \
             use a distinct --file-prefix or --in-memory"
        }
        ("rte_eal_init", _) => HINT_LOG,
        ("rte_pktmbuf_pool_create", ENOMEM) | ("rte_ring_create", ENOMEM) => {
            "not enough EAL memory: lower the count or data room, raise -m (with --no-huge) or \
             reserve more hugepages"
        }
        ("rte_pktmbuf_pool_create", EEXIST) | ("rte_ring_create", EEXIST) => {
            "an object with this name already exists: names must be unique per process"
        }
        ("rte_pktmbuf_pool_create", EINVAL) => {
            "cache_size must be <= 512 and <= mbufs / 1.5, and the data room must hold the \
             128-byte headroom"
        }
        ("rte_pktmbuf_pool_create", ENOSPC) | ("rte_ring_create", ENOSPC) => {
            "no free memzone descriptor left (too many pools and rings)"
        }
        ("rte_pktmbuf_pool_create", ENAMETOOLONG) | ("rte_ring_create", ENAMETOOLONG) => {
            "the name is too long: mempool names <= 26 bytes, ring names <= 29 bytes"
        }
        ("rte_ring_create", EINVAL) => "the ring size must be between 1 and 2^31 - 1",
        ("rte_eth_dev_configure", EBUSY) | ("rte_eth_rx_queue_setup", EBUSY) => {
            "the port is started: stop() it before configure()"
        }
        ("rte_eth_dev_configure", EINVAL) => {
            "queue counts, MTU or offloads are outside the device's limits (rte_eth_dev_info_get)"
        }
        ("rte_eth_rx_queue_setup", ENOMEM) | ("rte_eth_tx_queue_setup", ENOMEM) => {
            "not enough memory for the queue's rings or mbufs: grow the mempool (mbufs >= \
             rx_queues * rx_descriptors + in-flight) or reserve more memory"
        }
        ("rte_eth_rx_queue_setup", EINVAL) => {
            "descriptor count or mbuf data room too small for the device (data room must hold \
             the MTU frame plus 128 bytes of headroom unless the PMD scatters)"
        }
        ("rte_eth_dev_start", _) => {
            "the device refused to start: check the interface exists and is not in use, and \
             that configure() succeeded; DPDK logged the reason on stderr"
        }
        ("rte_eth_from_rings", _) => {
            "the ring PMD could not create the port: the name may be taken (names must be \
             unique) or ethdev ports (RTE_MAX_ETHPORTS = 32) are exhausted"
        }
        ("sched_setaffinity", EINVAL) => {
            "no CPU of the mask is online and allowed for this process (check cgroup cpusets \
             and taskset)"
        }
        ("unshare(CLONE_NEWNET)", EPERM) => "needs root (CAP_SYS_ADMIN)",
        (_, ENOTSUP) => "the driver (PMD) does not support this operation",
        (_, ENODEV) => "the port does not exist (closed, or a wrong port id)",
        _ => HINT_LOG,
    }
}
