//! CPU affinity and namespaces of the calling thread.
//!
//! `rte_eal_init` pins the calling (main lcore) thread to its core, and every
//! thread spawned from it afterwards inherits that pinning. A thread that must
//! not share the polling core (the data plane's flusher) calls
//! [`unpin_current_thread`] first thing.

use std::sync::OnceLock;

use crate::dpdk::DpdkError;

/// The CPU set of the thread that called `Eal::init`, taken just before
/// `rte_eal_init` pinned it.
static PROCESS_AFFINITY: OnceLock<libc::cpu_set_t> = OnceLock::new();

/// Bits in a `cpu_set_t` (`CPU_SETSIZE`).
const CPU_SET_BITS: usize = libc::CPU_SETSIZE as usize;

fn empty_set() -> libc::cpu_set_t {
    // SAFETY: cpu_set_t is a plain bit array; all-zero is the empty set.
    unsafe { std::mem::zeroed() }
}

fn get_affinity() -> Result<libc::cpu_set_t, DpdkError> {
    let mut set = empty_set();
    // SAFETY: pid 0 is the calling thread; set is a valid cpu_set_t of the size given.
    let ret =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if ret != 0 {
        return Err(DpdkError::from_os_errno("sched_getaffinity"));
    }
    Ok(set)
}

fn set_affinity(set: &libc::cpu_set_t) -> Result<(), DpdkError> {
    // SAFETY: pid 0 is the calling thread; set is a valid cpu_set_t of the size given.
    let ret = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), set) };
    if ret != 0 {
        return Err(DpdkError::from_os_errno("sched_setaffinity"));
    }
    Ok(())
}

/// Called by `Eal::init` before `rte_eal_init`.
pub(crate) fn remember_process_affinity() {
    if let Ok(set) = get_affinity() {
        let _ = PROCESS_AFFINITY.set(set);
    }
}

/// Lets the calling thread run on every CPU the process could use before
/// `Eal::init` pinned it (all CPUs if `Eal::init` was not called).
pub fn unpin_current_thread() -> Result<(), DpdkError> {
    match PROCESS_AFFINITY.get() {
        Some(set) => set_affinity(set),
        None => {
            let mut set = empty_set();
            for cpu in 0..CPU_SET_BITS {
                // SAFETY: cpu < CPU_SETSIZE, within the set. (The kernel keeps only
                // the CPUs that exist and that the process's cpuset allows.)
                unsafe { libc::CPU_SET(cpu, &mut set) };
            }
            set_affinity(&set)
        }
    }
}

/// Pins the calling thread to `cores` (CPU numbers as in /proc/cpuinfo).
pub fn set_current_thread_affinity(cores: &[usize]) -> Result<(), DpdkError> {
    if cores.is_empty() {
        return Err(DpdkError::InvalidArgument {
            what: "CPU set",
            reason: "at least one core is needed".into(),
        });
    }
    let mut set = empty_set();
    for &cpu in cores {
        if cpu >= CPU_SET_BITS {
            return Err(DpdkError::InvalidArgument {
                what: "CPU set",
                reason: format!("core {cpu} is beyond CPU_SETSIZE ({CPU_SET_BITS})"),
            });
        }
        // SAFETY: cpu < CPU_SETSIZE, within the set.
        unsafe { libc::CPU_SET(cpu, &mut set) };
    }
    set_affinity(&set)
}

/// The CPUs the calling thread may run on, ascending.
pub fn current_thread_affinity() -> Result<Vec<usize>, DpdkError> {
    let set = get_affinity()?;
    let mut cores = Vec::new();
    for cpu in 0..CPU_SET_BITS {
        // SAFETY: cpu < CPU_SETSIZE, within the set.
        if unsafe { libc::CPU_ISSET(cpu, &set) } {
            cores.push(cpu);
        }
    }
    Ok(cores)
}

/// Moves the calling thread into a new, empty network namespace
/// (`unshare(CLONE_NEWNET)`; needs root). Devices it creates afterwards (a
/// `net_tap` interface made by `Eal::init`) and processes it spawns (`ip ...`)
/// live there, and vanish with the process: for tests that must not touch the
/// host's network.
pub fn unshare_network_namespace() -> Result<(), DpdkError> {
    // SAFETY: unshare takes flags only; CLONE_NEWNET affects the calling thread.
    let ret = unsafe { libc::unshare(libc::CLONE_NEWNET) };
    if ret != 0 {
        return Err(DpdkError::from_os_errno("unshare(CLONE_NEWNET)"));
    }
    Ok(())
}

/// Sets the calling thread's timer slack (how late the kernel may wake a sleep, default
/// 50 µs for ordinary threads) to `nanoseconds`. A polling thread that parks for a few
/// microseconds between empty iterations (the `backoff` idle strategy) wakes when it asked
/// to instead of up to 50 µs later.
pub fn set_current_thread_timer_slack(nanoseconds: u64) -> std::io::Result<()> {
    // SAFETY: PR_SET_TIMERSLACK takes one integer argument by value and touches no memory
    // of ours; it only changes the calling thread's scheduler attribute.
    let ret = unsafe {
        libc::prctl(
            libc::PR_SET_TIMERSLACK,
            nanoseconds as libc::c_ulong,
            0,
            0,
            0,
        )
    };
    if ret != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
