//! [`MbufBurst`]: a fixed-capacity array of owned mbufs, the unit of
//! `rx_burst` / `tx_burst`. No heap.

use std::mem::MaybeUninit;

use super::mbuf::Mbuf;
use crate::sys;

/// Up to `N` owned mbufs in a fixed array plus a length; no heap. Remaining
/// mbufs are freed on drop (`rte_pktmbuf_free_bulk`).
///
/// Slots `0..len` hold owned mbufs. [`crate::Port::rx_burst`] fills the empty
/// slots `len..N`; [`crate::Port::tx_burst`] sends from the front and keeps the
/// unsent rest, moved to the front, for the caller to retry or drop.
pub struct MbufBurst<const N: usize> {
    slots: [MaybeUninit<Mbuf>; N],
    len: usize,
}

impl<const N: usize> Default for MbufBurst<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> std::fmt::Debug for MbufBurst<N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MbufBurst")
            .field("capacity", &N)
            .field("len", &self.len)
            .finish()
    }
}

impl<const N: usize> MbufBurst<N> {
    const CAPACITY_OK: () = assert!(
        N > 0 && N <= u16::MAX as usize,
        "MbufBurst capacity must be 1..=65535 (DPDK burst counts are u16)"
    );

    /// An empty burst.
    #[inline]
    pub const fn new() -> Self {
        #[allow(clippy::let_unit_value)]
        let () = Self::CAPACITY_OK;
        MbufBurst {
            slots: [const { MaybeUninit::uninit() }; N],
            len: 0,
        }
    }

    /// Number of mbufs held.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no mbuf is held.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// True when all `N` slots are used.
    #[inline]
    pub fn is_full(&self) -> bool {
        self.len == N
    }

    /// `N`.
    #[inline]
    pub const fn capacity(&self) -> usize {
        N
    }

    /// Adds `mbuf` at the end, or gives it back when full.
    #[inline]
    pub fn push(&mut self, mbuf: Mbuf) -> Result<(), Mbuf> {
        if self.len == N {
            return Err(mbuf);
        }
        self.slots[self.len].write(mbuf);
        self.len += 1;
        Ok(())
    }

    /// Removes and returns the last mbuf.
    #[inline]
    pub fn pop(&mut self) -> Option<Mbuf> {
        if self.len == 0 {
            return None;
        }
        self.len -= 1;
        // SAFETY: slot `len` (the old last) held an owned mbuf; lowering len
        // first transfers its ownership out exactly once.
        Some(unsafe { self.slots[self.len].assume_init_read() })
    }

    /// The mbufs held, in order.
    #[inline]
    pub fn as_slice(&self) -> &[Mbuf] {
        // SAFETY: slots 0..len are initialized; MaybeUninit<Mbuf> has Mbuf's layout.
        unsafe { std::slice::from_raw_parts(self.slots.as_ptr().cast::<Mbuf>(), self.len) }
    }

    /// The mbufs held, writable (swapping an `Mbuf` in or out keeps ownership
    /// sound: each slot always holds exactly one owned mbuf).
    #[inline]
    pub fn as_mut_slice(&mut self) -> &mut [Mbuf] {
        // SAFETY: as in as_slice, with exclusive access through &mut self.
        unsafe { std::slice::from_raw_parts_mut(self.slots.as_mut_ptr().cast::<Mbuf>(), self.len) }
    }

    /// Iterates over the mbufs held.
    #[inline]
    pub fn iter(&self) -> std::slice::Iter<'_, Mbuf> {
        self.as_slice().iter()
    }

    /// Iterates mutably over the mbufs held.
    #[inline]
    pub fn iter_mut(&mut self) -> std::slice::IterMut<'_, Mbuf> {
        self.as_mut_slice().iter_mut()
    }

    /// Takes every mbuf out, in order; the ones not consumed are freed when the
    /// iterator is dropped. The burst is empty afterwards.
    #[inline]
    pub fn drain(&mut self) -> Drain<'_, N> {
        let end = self.len;
        // Set first: if the Drain is leaked, the mbufs leak rather than being
        // freed twice.
        self.len = 0;
        Drain {
            burst: self,
            next: 0,
            end,
        }
    }

    /// Frees every mbuf held (`rte_pktmbuf_free_bulk`).
    #[inline]
    pub fn clear(&mut self) {
        let len = self.len;
        self.len = 0;
        // SAFETY: slots 0..len held owned mbufs (len is already 0, so they are
        // freed exactly once); Mbuf is a transparent non-null rte_mbuf pointer.
        unsafe { free_bulk(self.slots.as_mut_ptr().cast::<*mut sys::rte_mbuf>(), len) };
    }

    /// Keeps the mbufs for which `keep` returns true (in order) and frees the others.
    pub fn retain(&mut self, mut keep: impl FnMut(&mut Mbuf) -> bool) {
        let len = self.len;
        self.len = 0;
        let mut kept = 0;
        for i in 0..len {
            // SAFETY: slot i < len holds an owned mbuf not yet moved (i >= kept);
            // reading it moves ownership into `mbuf`.
            let mut mbuf = unsafe { self.slots[i].assume_init_read() };
            if keep(&mut mbuf) {
                self.slots[kept].write(mbuf);
                kept += 1;
                // Keep len consistent in case `keep` panics on a later mbuf.
                self.len = kept;
            }
        }
    }

    /// Pointer to the first empty slot and the number of empty slots.
    #[inline]
    pub(crate) fn spare_slots(&mut self) -> (*mut *mut sys::rte_mbuf, usize) {
        // SAFETY: len <= N, so the pointer stays within (or one past) the array.
        let ptr = unsafe { self.slots.as_mut_ptr().add(self.len) };
        (ptr.cast::<*mut sys::rte_mbuf>(), N - self.len)
    }

    /// Pointer to the first held mbuf (as DPDK's `struct rte_mbuf **`).
    #[inline]
    pub(crate) fn raw_slots(&mut self) -> *mut *mut sys::rte_mbuf {
        self.slots.as_mut_ptr().cast::<*mut sys::rte_mbuf>()
    }

    /// Marks `count` more slots as holding owned mbufs.
    ///
    /// # Safety
    /// Slots `len .. len + count` (with `len + count <= N`) must have been
    /// written with non-null pointers to mbufs that the burst now owns.
    #[inline]
    pub(crate) unsafe fn assume_pushed(&mut self, count: usize) {
        debug_assert!(self.len + count <= N);
        self.len += count;
    }

    /// Forgets the first `sent` mbufs (DPDK took them) and moves the rest to
    /// the front.
    ///
    /// # Safety
    /// `sent <= len`, and ownership of the first `sent` mbufs has passed to DPDK.
    #[inline]
    pub(crate) unsafe fn consume_front(&mut self, sent: usize) {
        debug_assert!(sent <= self.len);
        let rest = self.len - sent;
        if sent > 0 && rest > 0 {
            let base = self.slots.as_mut_ptr();
            // SAFETY: both ranges lie within the array (sent + rest == len <= N);
            // ptr::copy allows overlap. The moved-from tail is treated as empty.
            unsafe { std::ptr::copy(base.add(sent), base, rest) };
        }
        self.len = rest;
    }
}

impl<const N: usize> Drop for MbufBurst<N> {
    fn drop(&mut self) {
        self.clear();
    }
}

/// Frees `count` mbufs from `mbufs` in one call.
///
/// # Safety
/// `mbufs[..count]` are non-null owned mbufs, not used afterwards.
#[inline]
unsafe fn free_bulk(mbufs: *mut *mut sys::rte_mbuf, count: usize) {
    if count > 0 {
        // SAFETY: per the contract; count <= N <= u16::MAX fits in u32.
        unsafe { sys::rte_pktmbuf_free_bulk(mbufs, count as u32) };
    }
}

/// Iterator returned by [`MbufBurst::drain`].
pub struct Drain<'a, const N: usize> {
    burst: &'a mut MbufBurst<N>,
    next: usize,
    end: usize,
}

impl<const N: usize> Iterator for Drain<'_, N> {
    type Item = Mbuf;

    #[inline]
    fn next(&mut self) -> Option<Mbuf> {
        if self.next == self.end {
            return None;
        }
        let i = self.next;
        self.next += 1;
        // SAFETY: slots next..end still hold owned mbufs (the burst's len is 0,
        // so only this iterator owns them); advancing `next` moves slot i out once.
        Some(unsafe { self.burst.slots[i].assume_init_read() })
    }

    #[inline]
    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.end - self.next;
        (n, Some(n))
    }
}

impl<const N: usize> ExactSizeIterator for Drain<'_, N> {}

impl<const N: usize> Drop for Drain<'_, N> {
    fn drop(&mut self) {
        let rest = self.end - self.next;
        // SAFETY: slots next..end still hold owned mbufs not yielded; after this
        // nothing refers to them (the burst's len is 0).
        unsafe {
            free_bulk(
                self.burst
                    .slots
                    .as_mut_ptr()
                    .add(self.next)
                    .cast::<*mut sys::rte_mbuf>(),
                rest,
            )
        };
        self.next = self.end;
    }
}
