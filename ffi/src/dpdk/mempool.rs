//! [`Mempool`]: a pool of packet mbufs (`rte_pktmbuf_pool_create`).

use std::ffi::CString;
use std::ptr::NonNull;
use std::sync::Arc;

use super::burst::MbufBurst;
use super::eal::EalRef;
use super::error::DpdkError;
use super::mbuf::Mbuf;
use crate::sys;

/// Any NUMA socket (`SOCKET_ID_ANY`).
pub const SOCKET_ID_ANY: i32 = sys::SOCKET_ID_ANY;

/// Longest mempool name: `RTE_MEMPOOL_NAMESIZE - 1` (32-byte memzone names less
/// the "MP_" prefix, NUL included).
const NAME_BYTES_MAX: usize = 26;
/// `RTE_MEMPOOL_CACHE_MAX_SIZE`.
const CACHE_SIZE_MAX: u32 = 512;

/// A pool of packet mbufs. Cloning shares the pool (a reference count).
///
/// Allocation and free are thread-safe (default `ring_mp_mc` ops). Per-lcore
/// caches serve only EAL lcore threads; other threads go to the shared ring.
///
/// The pool is freed (`rte_mempool_free`) when the last handle is dropped,
/// including the ones kept by ports configured with it, and only if no mbuf is
/// still out: otherwise it is leaked on purpose, so those mbufs stay valid.
#[derive(Clone)]
pub struct Mempool {
    inner: Arc<PoolInner>,
}

struct PoolInner {
    raw: NonNull<sys::rte_mempool>,
    name: String,
    capacity: u32,
    /// `None` only after drop decided.
    eal: Option<EalRef>,
}

// SAFETY: an rte_mempool is designed for concurrent use from many threads
// (multi-producer/multi-consumer ring ops; per-lcore caches are indexed by the
// calling thread's lcore id, which EAL keeps unique). The pointer is only freed
// in Drop, when no other handle exists.
unsafe impl Send for PoolInner {}
// SAFETY: as above: every method takes &self and is thread-safe in DPDK.
unsafe impl Sync for PoolInner {}

impl Drop for PoolInner {
    fn drop(&mut self) {
        // SAFETY: raw is a live pool (we are its only owner).
        let in_use = unsafe { sys::rte_mempool_in_use_count(self.raw.as_ptr()) };
        if in_use == 0 {
            // SAFETY: no mbuf of the pool is out and no other handle exists (ports
            // hold handles while configured with it), so nothing can touch it again.
            unsafe { sys::rte_mempool_free(self.raw.as_ptr()) };
            drop(self.eal.take());
        } else {
            eprintln!(
                "precursor-ffi: mempool {:?} dropped with {in_use} mbufs still out: leaking it \
                 (and keeping the EAL up) so they stay valid",
                self.name
            );
            std::mem::forget(self.eal.take());
        }
    }
}

impl std::fmt::Debug for Mempool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mempool")
            .field("name", &self.inner.name)
            .field("capacity", &self.inner.capacity)
            .field("available", &self.available())
            .finish()
    }
}

impl Mempool {
    /// Headroom DPDK reserves at the front of each mbuf's data room, in bytes
    /// (`RTE_PKTMBUF_HEADROOM`).
    pub const HEADROOM_BYTES: u16 = sys::RTE_PKTMBUF_HEADROOM as u16;
    /// `RTE_MBUF_DEFAULT_BUF_SIZE`: 2048 bytes of frame plus the headroom.
    pub const DEFAULT_DATA_ROOM_BYTES: u16 = 2048 + Self::HEADROOM_BYTES;

    /// Creates a pool of `mbufs` packet mbufs (`rte_pktmbuf_pool_create`).
    ///
    /// - `name`: unique in the process, at most 26 bytes.
    /// - `cache_size`: per-lcore cache, <= 512 and <= `mbufs / 1.5` (0: none).
    /// - `data_room_bytes`: buffer size per mbuf *including* the 128-byte
    ///   headroom ([`Mempool::DEFAULT_DATA_ROOM_BYTES`] fits a 1500-byte MTU frame).
    /// - `socket_id`: NUMA socket, or [`SOCKET_ID_ANY`].
    pub fn create(
        name: &str,
        mbufs: u32,
        cache_size: u32,
        data_room_bytes: u16,
        socket_id: i32,
    ) -> Result<Mempool, DpdkError> {
        let invalid = |reason: String| DpdkError::InvalidArgument {
            what: "mempool parameters",
            reason,
        };
        if name.is_empty() || name.len() > NAME_BYTES_MAX {
            return Err(invalid(format!(
                "name {name:?} must be 1..={NAME_BYTES_MAX} bytes"
            )));
        }
        if mbufs == 0 {
            return Err(invalid("mbufs must be > 0".into()));
        }
        if cache_size > CACHE_SIZE_MAX || (cache_size as u64) * 3 > (mbufs as u64) * 2 {
            return Err(invalid(format!(
                "cache_size {cache_size} must be <= {CACHE_SIZE_MAX} and <= mbufs / 1.5 \
                 ({mbufs} mbufs)"
            )));
        }
        if data_room_bytes <= Self::HEADROOM_BYTES {
            return Err(invalid(format!(
                "data_room_bytes {data_room_bytes} must exceed the {}-byte headroom",
                Self::HEADROOM_BYTES
            )));
        }
        let c_name = CString::new(name).map_err(|_| invalid(format!("name {name:?} has a NUL")))?;
        let eal = EalRef::acquire()?;
        // SAFETY: the EAL is running (eal); c_name is a valid C string that DPDK
        // copies; the numbers were checked against DPDK's limits above.
        let raw = unsafe {
            sys::rte_pktmbuf_pool_create(
                c_name.as_ptr(),
                mbufs,
                cache_size,
                0,
                data_room_bytes,
                socket_id,
            )
        };
        let raw = NonNull::new(raw)
            .ok_or_else(|| DpdkError::from_rte_errno("rte_pktmbuf_pool_create"))?;
        Ok(Mempool {
            inner: Arc::new(PoolInner {
                raw,
                name: name.to_owned(),
                capacity: mbufs,
                eal: Some(eal),
            }),
        })
    }

    /// One mbuf, reset, with no data (`rte_pktmbuf_alloc`); `None` when the pool
    /// is exhausted.
    #[inline]
    pub fn alloc(&self) -> Option<Mbuf> {
        // SAFETY: raw is a live pktmbuf pool for as long as self exists.
        let m = unsafe { sys::prc_pktmbuf_alloc(self.inner.raw.as_ptr()) };
        // SAFETY: a non-null result is a fresh mbuf (refcnt 1) that we now own.
        NonNull::new(m).map(|m| unsafe { Mbuf::from_raw(m) })
    }

    /// Fills `count` empty slots of `burst` at once (`rte_pktmbuf_alloc_bulk`):
    /// all or nothing. Returns false (and adds nothing) if the pool has fewer
    /// than `count` mbufs or `burst` has fewer than `count` free slots.
    #[inline]
    pub fn alloc_bulk<const N: usize>(&self, burst: &mut MbufBurst<N>, count: usize) -> bool {
        let (slots, free) = burst.spare_slots();
        if count > free {
            return false;
        }
        // SAFETY: slots points at `free >= count` writable pointer slots of the
        // burst; raw is a live pktmbuf pool. On success DPDK wrote `count` fresh
        // mbufs there, which the burst then owns.
        let ret =
            unsafe { sys::prc_pktmbuf_alloc_bulk(self.inner.raw.as_ptr(), slots, count as u32) };
        if ret != 0 {
            return false;
        }
        // SAFETY: the `count` slots after the current length now hold owned mbufs.
        unsafe { burst.assume_pushed(count) };
        true
    }

    /// Mbufs free in the pool, per-lcore caches included (`rte_mempool_avail_count`).
    pub fn available(&self) -> u32 {
        // SAFETY: raw is a live pool.
        unsafe { sys::rte_mempool_avail_count(self.inner.raw.as_ptr()) }
    }

    /// Mbufs out of the pool (`rte_mempool_in_use_count`): held by the
    /// application, in device rings, or in flight in rte_rings.
    pub fn in_use(&self) -> u32 {
        // SAFETY: raw is a live pool.
        unsafe { sys::rte_mempool_in_use_count(self.inner.raw.as_ptr()) }
    }

    /// Number of mbufs the pool was created with.
    pub fn capacity(&self) -> u32 {
        self.inner.capacity
    }

    /// The pool's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    pub(crate) fn as_ptr(&self) -> *mut sys::rte_mempool {
        self.inner.raw.as_ptr()
    }
}
