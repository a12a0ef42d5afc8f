//! [`ring_port_pair`]: two ethdev ports wired back to back through two rte_rings
//! (ring PMD), for in-process tests.
//!
//! ```text
//!   Port A                          Port B
//!   tx queue 0 --> ring "<name>_ab" --> rx queue 0
//!   rx queue 0 <-- ring "<name>_ba" <-- tx queue 0
//! ```

use std::ffi::CString;
use std::ptr::NonNull;
use std::sync::{Arc, Mutex};

use super::eal::{Eal, EalRef};
use super::error::DpdkError;
use super::mempool::{Mempool, SOCKET_ID_ANY};
use super::port::Port;
use crate::sys;

/// Longest pair name: ring names are at most 29 bytes and get a 3-byte suffix.
const PAIR_NAME_BYTES_MAX: usize = 26;
/// Mbufs moved per dequeue while draining a ring at drop.
const DRAIN_BATCH: usize = 32;

/// The two rings of a pair, shared by both ports and freed after both are closed.
pub(crate) struct RingPairShared {
    rings: Vec<NonNull<sys::rte_ring>>,
    /// Pools the two ports were configured with: kept until the rings are
    /// drained, so the mbufs still in flight go back to live pools.
    pools: Mutex<Vec<Mempool>>,
    _eal: EalRef,
}

// SAFETY: the rings are only touched by the ring PMD through the ports (which
// are owned by single threads) and by Drop, which runs once both ports (each
// holding an Arc) are closed. The pool list is behind a Mutex.
unsafe impl Send for RingPairShared {}
// SAFETY: as above; &RingPairShared only reaches the Mutex-protected pool list.
unsafe impl Sync for RingPairShared {}

impl RingPairShared {
    pub(crate) fn keep_pool(&self, pool: &Mempool) {
        let mut pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        if !pools.iter().any(|p| p.as_ptr() == pool.as_ptr()) {
            pools.push(pool.clone());
        }
    }
}

impl Drop for RingPairShared {
    fn drop(&mut self) {
        for ring in &self.rings {
            let mut batch = [std::ptr::null_mut::<std::ffi::c_void>(); DRAIN_BATCH];
            loop {
                // SAFETY: both ports using the ring are closed (they held the Arc
                // whose last drop runs this), so this thread is its only user;
                // batch has DRAIN_BATCH writable slots.
                let n = unsafe {
                    sys::prc_ring_dequeue_burst(
                        ring.as_ptr(),
                        batch.as_mut_ptr(),
                        DRAIN_BATCH as u32,
                        std::ptr::null_mut(),
                    )
                } as usize;
                if n == 0 {
                    break;
                }
                // SAFETY: the ring PMD only enqueues mbufs handed to tx_burst,
                // whose ownership passed to the ring; their pools are alive
                // (kept in self.pools, or leaked by Mempool's drop if in use).
                unsafe { sys::rte_pktmbuf_free_bulk(batch.as_mut_ptr().cast(), n as u32) };
            }
            // SAFETY: the ring is empty and nothing refers to it any more.
            unsafe { sys::rte_ring_free(ring.as_ptr()) };
        }
    }
}

fn create_ring(name: &str, descriptors: u32) -> Result<NonNull<sys::rte_ring>, DpdkError> {
    let c_name = CString::new(name).map_err(|_| DpdkError::InvalidArgument {
        what: "ring name",
        reason: format!("{name:?} has a NUL byte"),
    })?;
    let flags = sys::RING_F_SP_ENQ | sys::RING_F_SC_DEQ | sys::RING_F_EXACT_SZ;
    // SAFETY: the EAL is running (callers hold an Eal); c_name is a valid C
    // string that DPDK copies.
    let raw = unsafe { sys::rte_ring_create(c_name.as_ptr(), descriptors, SOCKET_ID_ANY, flags) };
    NonNull::new(raw).ok_or_else(|| DpdkError::from_rte_errno("rte_ring_create"))
}

fn ring_port(
    name: &str,
    rx: NonNull<sys::rte_ring>,
    tx: NonNull<sys::rte_ring>,
    shared: &Arc<RingPairShared>,
) -> Result<Port, DpdkError> {
    let c_name = CString::new(name).map_err(|_| DpdkError::InvalidArgument {
        what: "ring port name",
        reason: format!("{name:?} has a NUL byte"),
    })?;
    let rx_rings = [rx.as_ptr()];
    let tx_rings = [tx.as_ptr()];
    // The new port's id may be one a dropping Port just closed: wait for its claim to go.
    let _lifecycle = super::port::PORT_LIFECYCLE
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    // SAFETY: c_name is a valid C string; the arrays hold one live ring each and
    // are only read during the call (the PMD copies the ring pointers). The
    // rings outlive the port: the port holds `shared`, which frees them.
    let port_id = unsafe {
        sys::rte_eth_from_rings(
            c_name.as_ptr(),
            rx_rings.as_ptr(),
            1,
            tx_rings.as_ptr(),
            1,
            SOCKET_ID_ANY as u32,
        )
    };
    if port_id < 0 {
        return Err(DpdkError::from_rte_errno("rte_eth_from_rings"));
    }
    Port::claim(port_id as u16, Some(Arc::clone(shared)))
}

/// Two ethdev ports wired back to back: what A sends, B receives, and the other
/// way round (rings `<name>_ab` and `<name>_ba` of `descriptors` entries each,
/// single-producer / single-consumer). The ports are named
/// `net_ring_<name>_a` / `net_ring_<name>_b` and have one RX and one TX queue;
/// [`Port::configure`] (with `rx_queues: 1, tx_queues: 1`) and [`Port::start`]
/// them as any port. `name` must be unique among live pairs, at most 26 bytes.
pub fn ring_port_pair(eal: &Eal, name: &str, descriptors: u32) -> Result<(Port, Port), DpdkError> {
    let _ = eal;
    if name.is_empty() || name.len() > PAIR_NAME_BYTES_MAX {
        return Err(DpdkError::InvalidArgument {
            what: "ring port pair name",
            reason: format!("{name:?} must be 1..={PAIR_NAME_BYTES_MAX} bytes"),
        });
    }
    if descriptors == 0 || descriptors > (1 << 31) - 1 {
        return Err(DpdkError::InvalidArgument {
            what: "ring port pair descriptors",
            reason: format!("{descriptors} must be 1..=2^31-1"),
        });
    }
    let mut shared = RingPairShared {
        rings: Vec::with_capacity(2),
        pools: Mutex::new(Vec::new()),
        _eal: EalRef::acquire()?,
    };
    let a_to_b = create_ring(&format!("{name}_ab"), descriptors)?;
    shared.rings.push(a_to_b);
    let b_to_a = create_ring(&format!("{name}_ba"), descriptors)?;
    shared.rings.push(b_to_a);
    let shared = Arc::new(shared);
    let a = ring_port(&format!("{name}_a"), b_to_a, a_to_b, &shared)?;
    let b = ring_port(&format!("{name}_b"), a_to_b, b_to_a, &shared)?;
    Ok((a, b))
}
