//! [`VerbsError`]: which verbs call failed, the decoded errno, and what to do.

use std::ffi::CStr;

use super::sys;

/// The message for a kernel without RDMA (see [`VerbsError::NoRdmaSubsystem`]).
pub const NO_RDMA_SUBSYSTEM: &str =
    "this kernel has no RDMA subsystem (no /sys/class/infiniband): \
     RDMA tests run in the soft-RoCE guest, ci/rdma-guest.sh";

/// An error from libibverbs (or a check made before calling it).
#[derive(Debug, thiserror::Error)]
pub enum VerbsError {
    /// The kernel has no RDMA support at all (`ibv_get_device_list` failed with
    /// ENOSYS/ENOENT). [`super::devices`] returns an empty list in that case;
    /// [`super::require_devices`] and [`super::Context::open`] return this.
    #[error("{}", NO_RDMA_SUBSYSTEM)]
    NoRdmaSubsystem,
    /// The kernel has RDMA but no device is registered.
    #[error(
        "no RDMA device found: load the NIC's RDMA driver, or create a soft-RoCE device \
         (modprobe rdma_rxe; rdma link add rxe0 type rxe netdev IFACE)"
    )]
    NoDevices,
    /// No device with this name.
    #[error("no RDMA device named {name:?} (devices present: {available:?}); list them with ibv_devices")]
    DeviceNotFound {
        /// The name asked for.
        name: String,
        /// Names of the devices that do exist.
        available: Vec<String>,
    },
    /// A verbs call failed.
    #[error("{call} failed: {reason} (errno {errno}); {hint}")]
    Call {
        /// The failing function, e.g. `ibv_modify_qp(RTR)`.
        call: &'static str,
        /// Positive errno value.
        errno: i32,
        /// `strerror(errno)`.
        reason: String,
        /// What to do about it.
        hint: &'static str,
    },
    /// A work request completed with an error status.
    #[error("work request {wr_id} on QP {qp_num} completed with {status_text} (status {status}, vendor error {vendor_err:#x})")]
    Completion {
        /// The request's `wr_id`.
        wr_id: u64,
        /// Its QP number.
        qp_num: u32,
        /// `ibv_wc_status` value.
        status: u32,
        /// `ibv_wc_status_str(status)`.
        status_text: &'static str,
        /// Provider-specific error code.
        vendor_err: u32,
    },
    /// An argument outside the verbs' (or this layer's) limits, caught before calling.
    #[error("invalid {what}: {reason}")]
    InvalidArgument {
        /// Which argument.
        what: &'static str,
        /// Why, with the limit.
        reason: String,
    },
}

impl VerbsError {
    /// Error for `call` that failed with positive `errno`.
    pub(crate) fn call(call: &'static str, errno: i32) -> VerbsError {
        VerbsError::Call {
            call,
            errno,
            reason: std::io::Error::from_raw_os_error(errno).to_string(),
            hint: hint(call, errno),
        }
    }

    /// Error for `call` that returned NULL / -1 and set `errno`.
    pub(crate) fn from_errno(call: &'static str) -> VerbsError {
        VerbsError::call(call, errno())
    }

    pub(crate) fn invalid(what: &'static str, reason: impl Into<String>) -> VerbsError {
        VerbsError::InvalidArgument {
            what,
            reason: reason.into(),
        }
    }

    /// The errno of a failed call, if this is one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            VerbsError::Call { errno, .. } => Some(*errno),
            _ => None,
        }
    }
}

/// The calling thread's errno (0 if unset).
pub(crate) fn errno() -> i32 {
    // SAFETY: prc_ibv_errno reads the thread-local errno; no preconditions.
    unsafe { sys::prc_ibv_errno() }
}

/// Verbs' return conventions: 0 is success; a positive value is the errno
/// (ibv_modify_qp, ibv_post_*, ibv_query_port); -1 means "see errno"; other
/// negative values are -errno.
pub(crate) fn check(call: &'static str, ret: i32) -> Result<(), VerbsError> {
    match ret {
        0 => Ok(()),
        r if r > 0 => Err(VerbsError::call(call, r)),
        -1 => {
            let e = errno();
            Err(VerbsError::call(call, if e == 0 { libc::EIO } else { e }))
        }
        r => Err(VerbsError::call(call, -r)),
    }
}

/// `ibv_wc_status_str(status)`: a static string.
pub(crate) fn wc_status_str(status: u32) -> &'static str {
    // SAFETY: ibv_wc_status_str accepts any value and returns a pointer to a
    // static NUL-terminated string ("unknown" for values it does not know).
    let text = unsafe { sys::ibv_wc_status_str(status) };
    if text.is_null() {
        return "unknown completion status";
    }
    // SAFETY: non-null, static and NUL-terminated (see above).
    unsafe { CStr::from_ptr(text) }
        .to_str()
        .unwrap_or("unknown completion status")
}

const HINT_DMESG: &str = "the kernel's RDMA driver may have logged details (dmesg)";

fn hint(call: &'static str, errno: i32) -> &'static str {
    use libc::*;
    match (call, errno) {
        ("ibv_get_device_list", EPERM) | ("ibv_open_device", EACCES) | ("ibv_open_device", EPERM) => {
            "no permission on /dev/infiniband/uverbs*: run as root or add the user to the \
             rdma group"
        }
        ("ibv_get_device_list", _) => "the RDMA subsystem did not answer: check rdma-core's udev rules and /dev/infiniband",
        ("ibv_reg_mr", ENOMEM) | ("ibv_reg_mr", EAGAIN) => {
            "cannot pin the memory: raise RLIMIT_MEMLOCK (ulimit -l unlimited, or \
             LimitMEMLOCK=infinity in the systemd unit)"
        }
        ("ibv_reg_mr", EINVAL) => {
            "bad access flags (REMOTE_WRITE and REMOTE_ATOMIC need LOCAL_WRITE) or the range \
             is not mapped"
        }
        ("ibv_reg_mr", EFAULT) => "the range is not mapped in this process",
        ("ibv_create_cq", EINVAL) => "the depth exceeds the device's max_cqe (ibv_devinfo -v)",
        ("ibv_create_qp", EINVAL) => {
            "capabilities beyond the device's limits (max_qp_wr, max_sge in ibv_devinfo -v)"
        }
        ("ibv_create_qp", ENOMEM) | ("ibv_create_cq", ENOMEM) | ("ibv_alloc_pd", ENOMEM) => {
            "out of memory or of device resources (too many QPs/CQs/PDs); check RLIMIT_MEMLOCK"
        }
        ("ibv_modify_qp(INIT)", EINVAL) => "bad port number or access flags for this device",
        ("ibv_modify_qp(RTR)", EINVAL) => {
            "the remote endpoint or path is wrong: check the peer's qp_num/psn/gid, the local \
             gid_index (RoCE needs a valid GID; soft-RoCE's IPv4-mapped one is index 1) and \
             the path MTU (<= the port's active MTU)"
        }
        ("ibv_modify_qp(RTS)", EINVAL) => "timeout/retry/rd_atomic values out of range",
        ("ibv_modify_qp(ERR)", _) => HINT_DMESG,
        ("ibv_post_send", ENOMEM) | ("ibv_post_recv", ENOMEM) => {
            "the work queue is full: poll the completion queue before posting more (or size \
             the QP with larger QpCaps)"
        }
        ("ibv_post_send", EINVAL) | ("ibv_post_recv", EINVAL) => {
            "more SGEs than the QP's max_send_sge/max_recv_sge, or the QP is not in a state \
             that accepts posts (RTS for sends; INIT or later for receives)"
        }
        ("ibv_query_gid", _) => "the GID index is outside the port's table (PortAttr::gid_tbl_len) or the port number is wrong",
        ("ibv_query_port", _) => "the port number is wrong (ports start at 1)",
        ("ibv_poll_cq", _) => "the completion queue overran or the device failed: recreate the CQ and its QPs",
        _ => HINT_DMESG,
    }
}
