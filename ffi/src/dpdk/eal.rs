//! [`Eal`]: the one DPDK Environment Abstraction Layer of the process.

use std::ffi::{c_char, c_int, CStr, CString};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::OnceLock;

use super::error::DpdkError;
use crate::sys;

/// `argv[0]` handed to `rte_eal_init`.
const PROGRAM_NAME: &str = "precursor";

/// Set by the first `Eal::init`; never cleared (DPDK cannot init twice, nor
/// retry a failed init reliably).
static EAL_INIT_CLAIMED: AtomicBool = AtomicBool::new(false);
/// Live references on the running EAL (the `Eal` plus every pool and port);
/// 0 means not running. `rte_eal_cleanup` runs when it drops back to 0.
static EAL_REFS: AtomicUsize = AtomicUsize::new(0);

/// EAL's runtime directory (`/var/run/dpdk/<file-prefix>` for root).
fn runtime_dir() -> Option<std::path::PathBuf> {
    // SAFETY: returns a pointer to EAL's static, NUL-terminated path buffer
    // (empty before init); we copy it at once.
    let dir = unsafe { sys::rte_eal_get_runtime_dir() };
    if dir.is_null() {
        return None;
    }
    // SAFETY: non-null and NUL-terminated (see above).
    let dir = unsafe { CStr::from_ptr(dir) }.to_str().ok()?;
    (!dir.is_empty()).then(|| std::path::PathBuf::from(dir))
}

/// EAL creates its runtime directory even with `--no-shconf` / `--in-memory`
/// and never removes it: drop it when it is empty (nothing else is touched).
fn remove_if_empty(dir: Option<std::path::PathBuf>) {
    if let Some(dir) = dir {
        let _ = std::fs::remove_dir(dir);
    }
}

/// A counted reference that keeps the EAL from being cleaned up.
pub(crate) struct EalRef(());

impl EalRef {
    /// A new reference, if the EAL is running.
    pub(crate) fn acquire() -> Result<EalRef, DpdkError> {
        let mut refs = EAL_REFS.load(Ordering::Acquire);
        loop {
            if refs == 0 {
                return Err(DpdkError::EalNotRunning);
            }
            match EAL_REFS.compare_exchange_weak(
                refs,
                refs + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Ok(EalRef(())),
                Err(now) => refs = now,
            }
        }
    }
}

impl Drop for EalRef {
    fn drop(&mut self) {
        if EAL_REFS.fetch_sub(1, Ordering::AcqRel) == 1 {
            let runtime_dir = runtime_dir();
            // SAFETY: this was the last reference: no Eal, Mempool or Port is alive
            // (leaked pools forget their reference, so they keep the count above 0),
            // and EAL_REFS == 0 stops new ones from being made. rte_eal_cleanup is
            // called at most once since the count reaches 0 once (it never rises
            // from 0). Its failure is not actionable at this point.
            let ret = unsafe { sys::rte_eal_cleanup() };
            debug_assert!(ret == 0, "rte_eal_cleanup returned {ret}");
            remove_if_empty(runtime_dir);
        }
    }
}

/// The DPDK EAL (`rte_eal_init`). One per process: a second [`Eal::init`]
/// returns [`DpdkError::AlreadyInitialized`], even after the first was dropped
/// or failed.
///
/// Dropping it runs `rte_eal_cleanup`, once every [`crate::Mempool`] and
/// [`crate::Port`] is gone too.
///
/// Tests share one per test binary with [`Eal::shared_for_tests`].
pub struct Eal {
    _ref: EalRef,
}

impl std::fmt::Debug for Eal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Eal")
            .field("main_lcore", &Eal::main_lcore())
            .field("port_count", &self.port_count())
            .finish()
    }
}

impl Eal {
    /// Initializes the EAL with `args` (EAL arguments only; `argv[0]` is supplied),
    /// e.g. `["-l", "0", "--no-pci", "--in-memory", "--vdev=net_ring0"]`.
    ///
    /// The calling thread becomes the main lcore and is pinned to its core; so
    /// is every thread spawned from it afterwards (see
    /// [`crate::unpin_current_thread`]). The process's CPU affinity before the
    /// call is remembered for that function.
    pub fn init(args: &[&str]) -> Result<Eal, DpdkError> {
        if EAL_INIT_CLAIMED.swap(true, Ordering::AcqRel) {
            return Err(DpdkError::AlreadyInitialized);
        }
        // No retry after a failure either: EAL's getopt state is left half-way
        // (a retry was seen to exit the process from the usage path).
        Eal::init_claimed(args)
    }

    fn init_claimed(args: &[&str]) -> Result<Eal, DpdkError> {
        let mut owned = Vec::with_capacity(args.len() + 1);
        for arg in std::iter::once(&PROGRAM_NAME).chain(args) {
            owned.push(CString::new(*arg).map_err(|_| DpdkError::InvalidArgument {
                what: "EAL argument",
                reason: format!("{arg:?} contains a NUL byte"),
            })?);
        }
        crate::thread::remember_process_affinity();
        // EAL may keep pointers into argv (it parses in place and stores some
        // strings): leak the strings and the array for the life of the process.
        let argv: &'static mut [*mut c_char] = Vec::leak(
            owned
                .into_iter()
                .map(CString::into_raw)
                .chain(std::iter::once(std::ptr::null_mut()))
                .collect(),
        );
        let argc = (argv.len() - 1) as c_int;
        // SAFETY: argv holds argc valid NUL-terminated strings followed by NULL,
        // all leaked ('static), so whatever EAL keeps stays valid. EAL_INIT_CLAIMED
        // makes this the only rte_eal_init call in flight in this process.
        let parsed = unsafe { sys::rte_eal_init(argc, argv.as_mut_ptr()) };
        if parsed < 0 {
            return Err(DpdkError::from_rte_errno("rte_eal_init"));
        }
        EAL_REFS.store(1, Ordering::Release);
        let eal = Eal { _ref: EalRef(()) };
        if parsed < argc - 1 {
            // EAL stops at the first argument it does not know (or at "--").
            let mut rest = Vec::new();
            for &arg in &argv[(parsed + 1) as usize..argc as usize] {
                // SAFETY: argv is ours and 'static; its first argc entries are
                // still our valid C strings (EAL only permutes the pointers).
                rest.push(
                    unsafe { CStr::from_ptr(arg) }
                        .to_string_lossy()
                        .into_owned(),
                );
            }
            return Err(DpdkError::InvalidArgument {
                what: "EAL arguments",
                reason: format!(
                    "EAL did not parse {rest:?}: pass EAL arguments only (the EAL was \
                     cleaned up and cannot be initialized again in this process)"
                ),
            });
        }
        Ok(eal)
    }

    /// The process-wide EAL for tests: initialized with `args` on the first call
    /// (panicking with the decoded error if that fails), then shared; later
    /// calls ignore `args`. Never cleaned up (the process exit does it), so a
    /// test binary should pass `--in-memory` (no files left behind) and a
    /// unique `--file-prefix`.
    ///
    /// Arguments that leave nothing behind: without hugepages
    /// `-l 0 --no-pci --no-huge -m 256 --no-shconf --no-telemetry
    /// --file-prefix=NAME-PID` (`--in-memory` is refused with `--no-huge`);
    /// with hugepages `-l 0 --no-pci --in-memory --file-prefix=NAME-PID`
    /// (`--in-memory` implies `--huge-unlink`). The runtime directory EAL
    /// creates anyway is removed here if it is empty.
    pub fn shared_for_tests(args: &[&str]) -> &'static Eal {
        static SHARED: OnceLock<Eal> = OnceLock::new();
        SHARED.get_or_init(|| match Eal::init(args) {
            Ok(eal) => {
                remove_if_empty(runtime_dir());
                eal
            }
            Err(e) => panic!("Eal::init({args:?}) failed: {e}"),
        })
    }

    /// EAL's runtime directory (`/var/run/dpdk/<file-prefix>` for root), if any.
    pub fn runtime_dir(&self) -> Option<std::path::PathBuf> {
        runtime_dir()
    }

    /// Number of usable ethdev ports (`rte_eth_dev_count_avail`).
    pub fn port_count(&self) -> u16 {
        // SAFETY: the EAL is running (self holds a reference); the call only
        // reads ethdev's port table.
        unsafe { sys::rte_eth_dev_count_avail() }
    }

    /// Names of the usable ethdev ports, in port-id order.
    pub fn port_names(&self) -> Vec<String> {
        let mut names = Vec::new();
        let mut port_id: u16 = 0;
        while (port_id as u32) < sys::RTE_MAX_ETHPORTS {
            // SAFETY: the EAL is running; any port id is accepted and checked.
            if unsafe { sys::rte_eth_dev_is_valid_port(port_id) } == 1 {
                if let Some(name) = super::port::port_name(port_id) {
                    names.push(name);
                }
            }
            port_id += 1;
        }
        names
    }

    /// TSC ticks per second (`rte_get_tsc_hz`, measured at EAL init).
    pub fn tsc_hz() -> u64 {
        // SAFETY: reads a global set at EAL init (0 before it); no preconditions.
        unsafe { sys::rte_get_tsc_hz() }
    }

    /// The time-stamp counter now (`rte_rdtsc`: a plain RDTSC, not serializing).
    #[inline]
    pub fn tsc() -> u64 {
        #[cfg(target_arch = "x86_64")]
        {
            // SAFETY: RDTSC is available on every x86_64 CPU and has no
            // memory effects.
            unsafe { core::arch::x86_64::_rdtsc() }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            // SAFETY: rte_rdtsc reads the cycle counter; no preconditions.
            unsafe { sys::prc_rdtsc() }
        }
    }

    /// This thread's lcore id (`rte_lcore_id`); `u32::MAX` (`LCORE_ID_ANY`) on a
    /// thread that is not an EAL lcore.
    #[inline]
    pub fn lcore_id() -> u32 {
        // SAFETY: reads a thread-local; no preconditions.
        unsafe { sys::prc_lcore_id() }
    }

    /// The main lcore's id (`rte_get_main_lcore`): the thread that called
    /// [`Eal::init`].
    pub fn main_lcore() -> u32 {
        // SAFETY: reads EAL's global configuration (zeroed before init).
        unsafe { sys::rte_get_main_lcore() }
    }
}
