//! [`MessageBuffers`]: one registered region cut into equal buffers that are
//! posted as receives, sent, or read into, with safe access to their bytes.
//!
//! The device owns a buffer from the moment it is posted until its completion
//! is polled; the CPU owns it otherwise. This type tracks which is which, so
//! `&[u8]`/`&mut [u8]` views are handed out only for buffers the device cannot
//! touch. A buffer changes hands back only through [`MessageBuffers::complete`]
//! with the very completion of its request: each post gets a fresh work request
//! id (a tag of this pool, a 32-bit post sequence, the buffer index), which a
//! stale or foreign completion does not match.
//!
//! ```text
//!   wr_id: | tag (8) | post sequence (32) | buffer index (24) |
//!
//!   CPU-owned --post_recv--> Receiving --complete--> CPU-owned (len = bytes received)
//!   CPU-owned --post_send--> Sending   --complete--> CPU-owned (len kept)
//!   CPU-owned --post_read--> Reading   --complete--> CPU-owned (len = bytes read)
//! ```
//!
//! Flushed requests (the QP went to the error state) complete too, with an
//! error status: that is how buffers come back from a failed connection. A
//! buffer posted to a QP that is destroyed without flushing stays device-owned
//! for good (leaked, never reused): flush before destroying (move the QP to the
//! error state, e.g. with `rdma_disconnect`, and poll).

use std::fmt;
use std::sync::atomic::{AtomicU8, Ordering};

use super::cq::{WcOpcode, WorkCompletion};
use super::error::VerbsError;
use super::mr::{Access, MemoryRegion, Sge};
use super::pd::ProtectionDomain;
use super::qp::{DestroyedQp, QueuePair, RemoteAddr, SendOp, SendRequest};

/// Buffers one pool may hold (24 bits of the work request id).
pub const BUFFERS_MAX: usize = 1 << 24;

const INDEX_BITS: u32 = 24;
const SEQUENCE_BITS: u32 = 32;
const INDEX_MASK: u64 = (1 << INDEX_BITS) - 1;
const SEQUENCE_MASK: u64 = (1 << SEQUENCE_BITS) - 1;

/// Tags of pools, 1..=255 then around again (0 is never used: a zeroed
/// completion matches no pool).
static NEXT_TAG: AtomicU8 = AtomicU8::new(1);

fn next_tag() -> u8 {
    loop {
        let tag = NEXT_TAG.fetch_add(1, Ordering::Relaxed);
        if tag != 0 {
            return tag;
        }
    }
}

/// Who may touch a buffer now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Owner {
    Cpu,
    Receiving,
    Sending,
    Reading,
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    owner: Owner,
    /// Sequence of the last post (in the wr_id).
    sequence: u32,
    /// QP the buffer is posted to (meaningful while the device owns it).
    qp_num: u32,
    /// Valid bytes while the CPU owns it.
    len: u32,
}

/// What a buffer's completed request was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BufferOp {
    /// A receive (a peer's SEND landed in it, or it was flushed).
    Recv,
    /// A SEND of its bytes.
    Send,
    /// An RDMA READ into it.
    Read,
}

/// A completion that returned a buffer to the CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Completed {
    /// The buffer.
    pub index: usize,
    /// What it had been posted for.
    pub op: BufferOp,
    /// The QP it had been posted to.
    pub qp_num: u32,
    /// Bytes received or read (0 for sends and failures).
    pub len: usize,
    /// `ibv_wc_status`: 0 on success; 5 (`IBV_WC_WR_FLUSH_ERR`) when the QP was
    /// in the error state; others are failures of the connection.
    pub status: u32,
}

impl Completed {
    /// True when the request succeeded.
    pub fn is_success(&self) -> bool {
        self.status == super::sys::IBV_WC_SUCCESS
    }

    /// True when the request was flushed (its QP had gone to the error state).
    pub fn is_flushed(&self) -> bool {
        self.status == super::sys::IBV_WC_WR_FLUSH_ERR
    }
}

/// A registered region of `count` buffers of `buffer_bytes` each.
pub struct MessageBuffers {
    mr: MemoryRegion,
    buffer_bytes: usize,
    slots: Vec<Slot>,
    tag: u8,
    device_owned: usize,
}

impl fmt::Debug for MessageBuffers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MessageBuffers")
            .field("count", &self.slots.len())
            .field("buffer_bytes", &self.buffer_bytes)
            .field("device_owned", &self.device_owned)
            .field("hugepages", &self.mr.is_hugepages())
            .finish()
    }
}

impl MessageBuffers {
    /// `count` buffers of `buffer_bytes` (a multiple of 64, so buffers start on
    /// cache lines) in one region with local write access, on hugepages when
    /// `prefer_hugepages` and free ones allow, else on the heap.
    pub fn new(
        pd: &ProtectionDomain,
        count: usize,
        buffer_bytes: usize,
        prefer_hugepages: bool,
    ) -> Result<MessageBuffers, VerbsError> {
        if count == 0 || count > BUFFERS_MAX {
            return Err(VerbsError::invalid(
                "buffer count",
                format!("{count} not in 1..={BUFFERS_MAX}"),
            ));
        }
        if buffer_bytes == 0 || !buffer_bytes.is_multiple_of(64) || buffer_bytes > u32::MAX as usize
        {
            return Err(VerbsError::invalid(
                "buffer bytes",
                format!("{buffer_bytes}: a positive multiple of 64 below 4 GiB"),
            ));
        }
        let total = count
            .checked_mul(buffer_bytes)
            .ok_or_else(|| VerbsError::invalid("buffer count", "count x bytes overflows"))?;
        let mr = if prefer_hugepages {
            MemoryRegion::alloc_prefer_hugepages(pd, total, Access::LOCAL_WRITE)?.0
        } else {
            MemoryRegion::alloc(pd, total, Access::LOCAL_WRITE)?
        };
        Ok(MessageBuffers {
            mr,
            buffer_bytes,
            slots: vec![
                Slot {
                    owner: Owner::Cpu,
                    sequence: 0,
                    qp_num: 0,
                    len: 0,
                };
                count
            ],
            tag: next_tag(),
            device_owned: 0,
        })
    }

    /// Number of buffers.
    pub fn count(&self) -> usize {
        self.slots.len()
    }

    /// Bytes of each buffer.
    pub fn buffer_bytes(&self) -> usize {
        self.buffer_bytes
    }

    /// True when the buffers are hugepage memory.
    pub fn is_hugepages(&self) -> bool {
        self.mr.is_hugepages()
    }

    /// Buffers posted and not completed yet.
    pub fn device_owned(&self) -> usize {
        self.device_owned
    }

    /// True when the CPU owns buffer `index` (not posted, or completed).
    pub fn is_cpu_owned(&self, index: usize) -> bool {
        self.slots.get(index).is_some_and(|s| s.owner == Owner::Cpu)
    }

    /// The buffer a work request id of this pool names (without checking that
    /// it is outstanding); `None` for another pool's ids.
    pub fn index_of(&self, wr_id: u64) -> Option<usize> {
        if (wr_id >> (INDEX_BITS + SEQUENCE_BITS)) as u8 != self.tag {
            return None;
        }
        let index = (wr_id & INDEX_MASK) as usize;
        (index < self.slots.len()).then_some(index)
    }

    fn cpu_slot(&mut self, index: usize, what: &'static str) -> Result<&mut Slot, VerbsError> {
        let count = self.slots.len();
        let slot = self
            .slots
            .get_mut(index)
            .ok_or_else(|| VerbsError::invalid(what, format!("buffer {index} of {count}")))?;
        if slot.owner != Owner::Cpu {
            return Err(VerbsError::invalid(
                what,
                format!(
                    "buffer {index} is posted ({:?}): wait for its completion",
                    slot.owner
                ),
            ));
        }
        Ok(slot)
    }

    /// The next work request id for `index`, with its sequence bumped.
    fn next_wr_id(tag: u8, slot: &mut Slot, index: usize) -> u64 {
        slot.sequence = slot.sequence.wrapping_add(1);
        (u64::from(tag) << (INDEX_BITS + SEQUENCE_BITS))
            | (u64::from(slot.sequence) << INDEX_BITS)
            | index as u64
    }

    fn sge(&self, index: usize, len: usize) -> Sge {
        self.mr
            .sge(index * self.buffer_bytes, len)
            .expect("index and len are within the region")
    }

    /// Posts buffer `index` as a receive on `qp`.
    pub fn post_recv(&mut self, qp: &QueuePair, index: usize) -> Result<(), VerbsError> {
        let tag = self.tag;
        let slot = self.cpu_slot(index, "post_recv")?;
        let mut draft = *slot;
        let wr_id = Self::next_wr_id(tag, &mut draft, index);
        let sge = self.sge(index, self.buffer_bytes);
        qp.post_recv(wr_id, &[sge])?;
        self.slots[index] = Slot {
            owner: Owner::Receiving,
            qp_num: qp.qp_num(),
            len: 0,
            ..draft
        };
        self.device_owned += 1;
        Ok(())
    }

    /// Lets `f` write into buffer `index` (all of it), keeping the length it
    /// returns (at most [`MessageBuffers::buffer_bytes`]) for a later send.
    pub fn fill(
        &mut self,
        index: usize,
        f: impl FnOnce(&mut [u8]) -> usize,
    ) -> Result<usize, VerbsError> {
        let bytes = self.buffer_bytes;
        self.cpu_slot(index, "fill")?;
        let start = index * bytes;
        // SAFETY: the CPU owns the buffer (checked: not posted, or its completion
        // was polled), it lies inside the registration, and &mut self excludes
        // any other view of it.
        let buf = unsafe { std::slice::from_raw_parts_mut(self.mr.as_ptr().add(start), bytes) };
        let len = f(buf);
        if len > bytes {
            return Err(VerbsError::invalid(
                "fill",
                format!("wrote {len} bytes into a {bytes}-byte buffer"),
            ));
        }
        self.slots[index].len = len as u32;
        Ok(len)
    }

    /// The valid bytes of buffer `index` (received, read or filled), if the CPU
    /// owns it.
    pub fn data(&self, index: usize) -> Option<&[u8]> {
        let slot = self.slots.get(index)?;
        if slot.owner != Owner::Cpu {
            return None;
        }
        let start = index * self.buffer_bytes;
        // SAFETY: the CPU owns the buffer: the device neither reads nor writes it
        // until it is posted again, which needs &mut self. len <= buffer_bytes.
        Some(unsafe { std::slice::from_raw_parts(self.mr.as_ptr().add(start), slot.len as usize) })
    }

    /// Sends the filled bytes of buffer `index` on `qp` (a signaled SEND; inline
    /// when `inline` and the QP allows that many bytes).
    pub fn post_send(
        &mut self,
        qp: &QueuePair,
        index: usize,
        inline: bool,
    ) -> Result<(), VerbsError> {
        let tag = self.tag;
        let slot = self.cpu_slot(index, "post_send")?;
        let mut draft = *slot;
        let wr_id = Self::next_wr_id(tag, &mut draft, index);
        let len = draft.len as usize;
        let sge = self.sge(index, len);
        let sges = [sge];
        let mut req = SendRequest::new(wr_id, SendOp::Send, &sges);
        req.inline = inline && len <= qp.caps().max_inline_data as usize;
        qp.post_send(&req)?;
        self.slots[index] = Slot {
            owner: Owner::Sending,
            qp_num: qp.qp_num(),
            ..draft
        };
        self.device_owned += 1;
        Ok(())
    }

    /// RDMA READs `len` bytes at `remote` (a peer's registration) into buffer
    /// `index`.
    pub fn post_read(
        &mut self,
        qp: &QueuePair,
        index: usize,
        len: usize,
        remote: RemoteAddr,
    ) -> Result<(), VerbsError> {
        if len == 0 || len > self.buffer_bytes {
            return Err(VerbsError::invalid(
                "post_read",
                format!("{len} bytes into a {}-byte buffer", self.buffer_bytes),
            ));
        }
        let tag = self.tag;
        let slot = self.cpu_slot(index, "post_read")?;
        let mut draft = *slot;
        let wr_id = Self::next_wr_id(tag, &mut draft, index);
        let sges = [self.sge(index, len)];
        qp.post_send(&SendRequest::read(wr_id, &sges, remote))?;
        self.slots[index] = Slot {
            owner: Owner::Reading,
            qp_num: qp.qp_num(),
            len: 0,
            ..draft
        };
        self.device_owned += 1;
        Ok(())
    }

    /// Takes back the buffers in `range` still posted to a QP that was destroyed (a device
    /// that did not flush them when the QP went to the error state): after the
    /// destruction the device touches none of them. Returns how many. Completions of
    /// theirs that were already queued no longer match ([`MessageBuffers::complete`]
    /// returns `None` for them).
    pub fn reclaim(&mut self, destroyed: &DestroyedQp, range: std::ops::Range<usize>) -> usize {
        let mut reclaimed = 0;
        let end = range.end.min(self.slots.len());
        for slot in &mut self.slots[range.start.min(end)..end] {
            if slot.owner != Owner::Cpu && slot.qp_num == destroyed.qp_num() {
                slot.owner = Owner::Cpu;
                slot.len = 0;
                // A queued completion of the old post must not match a new one.
                slot.sequence = slot.sequence.wrapping_add(1);
                reclaimed += 1;
            }
        }
        self.device_owned -= reclaimed;
        reclaimed
    }

    /// Takes a polled completion: if it is the outstanding request of one of
    /// these buffers, the CPU owns that buffer again and this says what
    /// happened. `None` for completions of other pools (or stale ones).
    pub fn complete(&mut self, wc: &WorkCompletion) -> Option<Completed> {
        let index = self.index_of(wc.wr_id())?;
        let sequence = ((wc.wr_id() >> INDEX_BITS) & SEQUENCE_MASK) as u32;
        let slot = &mut self.slots[index];
        if slot.sequence != sequence || slot.qp_num != wc.qp_num() {
            return None;
        }
        let op = match slot.owner {
            Owner::Cpu => return None,
            Owner::Receiving => BufferOp::Recv,
            Owner::Sending => BufferOp::Send,
            Owner::Reading => BufferOp::Read,
        };
        // The opcode is only meaningful on success; a successful completion of
        // another kind than posted would be a device bug: keep the buffer.
        let opcode_fits = !wc.is_success()
            || matches!(
                (op, wc.opcode()),
                (BufferOp::Recv, WcOpcode::Recv)
                    | (BufferOp::Send, WcOpcode::Send)
                    | (BufferOp::Read, WcOpcode::RdmaRead)
            );
        if !opcode_fits {
            return None;
        }
        let len = if wc.is_success() && op != BufferOp::Send {
            (wc.byte_len() as usize).min(self.buffer_bytes)
        } else if op == BufferOp::Send {
            slot.len as usize
        } else {
            0
        };
        slot.owner = Owner::Cpu;
        slot.len = len as u32;
        self.device_owned -= 1;
        Some(Completed {
            index,
            op,
            qp_num: wc.qp_num(),
            len: if op == BufferOp::Send { 0 } else { len },
            status: wc.status(),
        })
    }
}
