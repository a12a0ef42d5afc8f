//! [`Mbuf`]: one owned packet buffer.

use std::ptr::NonNull;

use crate::sys;

/// One owned packet mbuf (possibly the head of a segment chain); freed to its
/// pool on drop (`rte_pktmbuf_free`).
///
/// `#[repr(transparent)]` over the raw pointer, so a slice of `Mbuf` is a slice
/// of non-null `*mut rte_mbuf` (what [`crate::MbufBurst`] hands to DPDK).
#[repr(transparent)]
pub struct Mbuf {
    raw: NonNull<sys::rte_mbuf>,
}

// SAFETY: an Mbuf is the unique owner of its rte_mbuf (refcnt 1: this crate
// never clones or shares mbufs), and mbufs may be freed to their (thread-safe)
// pool from any thread.
unsafe impl Send for Mbuf {}

impl Drop for Mbuf {
    fn drop(&mut self) {
        // SAFETY: we own the mbuf (and its chain); it is not used after this.
        unsafe { sys::prc_pktmbuf_free(self.raw.as_ptr()) };
    }
}

impl std::fmt::Debug for Mbuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mbuf")
            .field("len", &self.len())
            .field("segments", &self.segments())
            .field("headroom", &self.headroom())
            .field("tailroom", &self.tailroom())
            .finish()
    }
}

impl Mbuf {
    /// Takes ownership of a raw mbuf.
    ///
    /// # Safety
    /// `raw` must be a valid packet mbuf from a live pktmbuf pool, not owned by
    /// anything else (not in a device ring, another `Mbuf` or a burst), with
    /// refcnt 1.
    #[inline]
    pub unsafe fn from_raw(raw: NonNull<sys::rte_mbuf>) -> Mbuf {
        Mbuf { raw }
    }

    /// Gives up ownership: the caller must free the mbuf or hand it to DPDK.
    #[inline]
    pub fn into_raw(self) -> NonNull<sys::rte_mbuf> {
        let raw = self.raw;
        std::mem::forget(self);
        raw
    }

    #[inline]
    fn header(&self) -> &sys::rte_mbuf {
        // SAFETY: raw points at a valid mbuf we own; &self keeps it alive and
        // no &mut to it exists while &self is borrowed.
        unsafe { self.raw.as_ref() }
    }

    /// Data of the first segment (`data_off .. data_off + data_len`).
    #[inline]
    pub fn data(&self) -> &[u8] {
        let m = self.header();
        // SAFETY: buf_addr + data_off .. + data_len lies inside the mbuf's data
        // buffer (DPDK invariant: data_off + data_len <= buf_len), which we own;
        // the memory is initialized bytes (hugepage or anonymous memory that the
        // kernel zeroed, or earlier packet data).
        unsafe {
            std::slice::from_raw_parts(
                (m.buf_addr as *const u8).add(m.data_off as usize),
                m.data_len as usize,
            )
        }
    }

    /// Data of the first segment, writable.
    #[inline]
    pub fn data_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `data`; &mut self gives exclusive access to the buffer
        // (refcnt 1: no other owner reads it).
        unsafe {
            let m = self.raw.as_ptr();
            std::slice::from_raw_parts_mut(
                ((*m).buf_addr as *mut u8).add((*m).data_off as usize),
                (*m).data_len as usize,
            )
        }
    }

    /// Packet length over all segments (`pkt_len`).
    #[inline]
    pub fn len(&self) -> usize {
        self.header().pkt_len as usize
    }

    /// True when the packet holds no data.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.header().pkt_len == 0
    }

    /// Length of the first segment (`data_len`).
    #[inline]
    pub fn data_len(&self) -> usize {
        self.header().data_len as usize
    }

    /// Number of segments (`nb_segs`).
    #[inline]
    pub fn segments(&self) -> u16 {
        self.header().nb_segs
    }

    /// True when the whole packet is in the first segment (`nb_segs == 1`), so
    /// [`Mbuf::data`] is the whole packet.
    #[inline]
    pub fn is_contiguous(&self) -> bool {
        self.header().nb_segs == 1
    }

    /// Input port of a received packet (`port`).
    #[inline]
    pub fn port(&self) -> u16 {
        self.header().port
    }

    /// Free bytes before the data (`rte_pktmbuf_headroom`).
    #[inline]
    pub fn headroom(&self) -> usize {
        // SAFETY: raw is a valid mbuf we own.
        unsafe { sys::prc_pktmbuf_headroom(self.raw.as_ptr()) as usize }
    }

    /// Free bytes after the data of the last segment (`rte_pktmbuf_tailroom`).
    #[inline]
    pub fn tailroom(&self) -> usize {
        // SAFETY: raw is a valid mbuf we own.
        unsafe { sys::prc_pktmbuf_tailroom(self.raw.as_ptr()) as usize }
    }

    /// Grows the packet by `bytes` at the end of the last segment
    /// (`rte_pktmbuf_append`) and returns the new bytes (their old contents
    /// are whatever the buffer held); `None` if the tailroom is too small.
    #[inline]
    pub fn append(&mut self, bytes: usize) -> Option<&mut [u8]> {
        let len = u16::try_from(bytes).ok()?;
        // SAFETY: raw is a valid mbuf we own exclusively (&mut self).
        let tail = unsafe { sys::prc_pktmbuf_append(self.raw.as_ptr(), len) };
        let tail = NonNull::new(tail.cast::<u8>())?;
        // SAFETY: DPDK returned the start of `len` bytes just added inside the
        // last segment's buffer, which we own; the borrow ties them to &mut self.
        Some(unsafe { std::slice::from_raw_parts_mut(tail.as_ptr(), bytes) })
    }

    /// Appends a copy of `bytes`; false (nothing appended) if they do not fit.
    #[inline]
    pub fn extend_from_slice(&mut self, bytes: &[u8]) -> bool {
        match self.append(bytes.len()) {
            Some(tail) => {
                tail.copy_from_slice(bytes);
                true
            }
            None => false,
        }
    }

    /// Grows the packet by `bytes` at the front, into the headroom
    /// (`rte_pktmbuf_prepend`); `None` if the headroom is too small.
    #[inline]
    pub fn prepend(&mut self, bytes: usize) -> Option<&mut [u8]> {
        let len = u16::try_from(bytes).ok()?;
        // SAFETY: raw is a valid mbuf we own exclusively.
        let head = unsafe { sys::prc_pktmbuf_prepend(self.raw.as_ptr(), len) };
        let head = NonNull::new(head.cast::<u8>())?;
        // SAFETY: DPDK returned the new start of data, `len` bytes inside the
        // first segment's buffer, which we own.
        Some(unsafe { std::slice::from_raw_parts_mut(head.as_ptr(), bytes) })
    }

    /// Removes `bytes` from the end of the last segment (`rte_pktmbuf_trim`);
    /// false (nothing removed) if that segment holds fewer.
    #[inline]
    #[must_use]
    pub fn trim(&mut self, bytes: usize) -> bool {
        let Ok(len) = u16::try_from(bytes) else {
            return false;
        };
        // SAFETY: raw is a valid mbuf we own exclusively.
        unsafe { sys::prc_pktmbuf_trim(self.raw.as_ptr(), len) == 0 }
    }

    /// Removes `bytes` from the front of the first segment (`rte_pktmbuf_adj`);
    /// false (nothing removed) if that segment holds fewer.
    #[inline]
    #[must_use]
    pub fn adj(&mut self, bytes: usize) -> bool {
        let Ok(len) = u16::try_from(bytes) else {
            return false;
        };
        // SAFETY: raw is a valid mbuf we own exclusively.
        unsafe { !sys::prc_pktmbuf_adj(self.raw.as_ptr(), len).is_null() }
    }

    /// Empties the packet and restores the default headroom
    /// (`rte_pktmbuf_reset`). Further segments, if any, are freed first.
    #[inline]
    pub fn reset(&mut self) {
        let m = self.raw.as_ptr();
        // SAFETY: we own the mbuf and its chain exclusively. The chain after the
        // head is detached (head becomes a single segment) and then freed as one
        // packet; rte_pktmbuf_reset requires exactly that single segment.
        unsafe {
            let next = (*m).next;
            if !next.is_null() {
                (*m).next = std::ptr::null_mut();
                (*m).nb_segs = 1;
                sys::prc_pktmbuf_free(next);
            }
            sys::prc_pktmbuf_reset(m);
        }
    }
}
