//! [`CompletionQueue`] (`ibv_create_cq`) and [`WorkCompletion`]s polled from it.

use std::fmt;
use std::ptr::NonNull;
use std::sync::Arc;

use super::device::{Context, ContextInner};
use super::error::{wc_status_str, VerbsError};
use super::sys;

pub(crate) struct CqInner {
    pub(crate) raw: NonNull<sys::ibv_cq>,
    depth: u32,
    _ctx: Arc<ContextInner>,
}

// SAFETY: CQ calls are thread-safe in libibverbs (providers lock the CQ in
// poll). Destroyed only in Drop, when no QP uses it (QPs hold an Arc).
unsafe impl Send for CqInner {}
// SAFETY: as above.
unsafe impl Sync for CqInner {}

impl Drop for CqInner {
    fn drop(&mut self) {
        // SAFETY: raw is a live CQ with no QP attached (they hold Arcs to this).
        let ret = unsafe { sys::ibv_destroy_cq(self.raw.as_ptr()) };
        debug_assert_eq!(ret, 0, "ibv_destroy_cq");
    }
}

/// A completion queue, polled (no completion channel: no syscalls, no events).
/// Cloning shares it.
#[derive(Clone)]
pub struct CompletionQueue {
    pub(crate) inner: Arc<CqInner>,
}

impl fmt::Debug for CompletionQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CompletionQueue")
            .field("depth", &self.inner.depth)
            .finish()
    }
}

impl CompletionQueue {
    /// A CQ with room for at least `depth` completions. Size it for every
    /// signaled send plus every posted receive of the QPs that use it, or it
    /// overruns (and the QPs go to the error state).
    pub fn new(ctx: &Context, depth: u32) -> Result<CompletionQueue, VerbsError> {
        let cqe = i32::try_from(depth)
            .ok()
            .filter(|d| *d > 0)
            .ok_or_else(|| {
                VerbsError::invalid("CQ depth", format!("{depth} not in 1..=i32::MAX"))
            })?;
        // SAFETY: ctx is open; no CQ context, no completion channel, vector 0.
        let raw = unsafe {
            sys::ibv_create_cq(
                ctx.inner.raw.as_ptr(),
                cqe,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                0,
            )
        };
        let raw = NonNull::new(raw).ok_or_else(|| VerbsError::from_errno("ibv_create_cq"))?;
        // SAFETY: raw is a live CQ; cqe holds the actual size (>= requested).
        let depth = unsafe { (*raw.as_ptr()).cqe } as u32;
        Ok(CompletionQueue {
            inner: Arc::new(CqInner {
                raw,
                depth,
                _ctx: Arc::clone(&ctx.inner),
            }),
        })
    }

    /// Actual capacity (the device may round the requested depth up).
    pub fn depth(&self) -> u32 {
        self.inner.depth
    }

    /// Moves up to `out.len()` completions into `out` and returns how many
    /// (0 when none is ready). No allocation, no syscall.
    #[inline]
    pub fn poll(&self, out: &mut [WorkCompletion]) -> Result<usize, VerbsError> {
        let n = i32::try_from(out.len()).unwrap_or(i32::MAX);
        // SAFETY: raw is a live CQ; out has room for n ibv_wc (WorkCompletion is
        // repr(transparent) over ibv_wc).
        let ret =
            unsafe { sys::prc_ibv_poll_cq(self.inner.raw.as_ptr(), n, out.as_mut_ptr().cast()) };
        if ret < 0 {
            return Err(VerbsError::call("ibv_poll_cq", -ret));
        }
        Ok(ret as usize)
    }
}

/// Opcode of a successful completion (`ibv_wc_opcode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WcOpcode {
    /// A SEND finished.
    Send,
    /// An RDMA WRITE finished.
    RdmaWrite,
    /// An RDMA READ finished (the data is in the local SGEs).
    RdmaRead,
    /// Compare-and-swap.
    CompSwap,
    /// Fetch-and-add.
    FetchAdd,
    /// A receive consumed an incoming SEND.
    Recv,
    /// A receive consumed an incoming RDMA WRITE with immediate.
    RecvRdmaWithImm,
    /// Anything else (value kept).
    Other(u32),
}

/// One completion (`ibv_wc`); layout-compatible, so polling fills a slice of
/// these directly.
#[repr(transparent)]
#[derive(Clone, Copy, Default)]
pub struct WorkCompletion(sys::ibv_wc);

impl WorkCompletion {
    /// The `wr_id` of the request that completed.
    pub fn wr_id(&self) -> u64 {
        self.0.wr_id
    }

    /// True for `IBV_WC_SUCCESS`.
    pub fn is_success(&self) -> bool {
        self.0.status == sys::IBV_WC_SUCCESS
    }

    /// Raw `ibv_wc_status`.
    pub fn status(&self) -> u32 {
        self.0.status
    }

    /// `ibv_wc_status_str` of the status.
    pub fn status_text(&self) -> &'static str {
        wc_status_str(self.0.status)
    }

    /// `Ok(())` on success, else [`VerbsError::Completion`].
    pub fn result(&self) -> Result<(), VerbsError> {
        if self.is_success() {
            Ok(())
        } else {
            Err(VerbsError::Completion {
                wr_id: self.0.wr_id,
                qp_num: self.0.qp_num,
                status: self.0.status,
                status_text: self.status_text(),
                vendor_err: self.0.vendor_err,
            })
        }
    }

    /// The opcode (meaningful only for successful completions).
    pub fn opcode(&self) -> WcOpcode {
        match self.0.opcode {
            sys::IBV_WC_SEND => WcOpcode::Send,
            sys::IBV_WC_RDMA_WRITE => WcOpcode::RdmaWrite,
            sys::IBV_WC_RDMA_READ => WcOpcode::RdmaRead,
            sys::IBV_WC_COMP_SWAP => WcOpcode::CompSwap,
            sys::IBV_WC_FETCH_ADD => WcOpcode::FetchAdd,
            sys::IBV_WC_RECV => WcOpcode::Recv,
            sys::IBV_WC_RECV_RDMA_WITH_IMM => WcOpcode::RecvRdmaWithImm,
            other => WcOpcode::Other(other),
        }
    }

    /// Bytes received (receive completions) or read.
    pub fn byte_len(&self) -> u32 {
        self.0.byte_len
    }

    /// The local QP number the request belonged to.
    pub fn qp_num(&self) -> u32 {
        self.0.qp_num
    }

    /// Immediate data of a SEND/WRITE with immediate, host byte order.
    pub fn imm_data(&self) -> Option<u32> {
        if self.0.wc_flags & sys::IBV_WC_WITH_IMM != 0 {
            // SAFETY: with IBV_WC_WITH_IMM the union holds imm_data; both union
            // members are plain u32s anyway.
            Some(u32::from_be(unsafe { self.0.__bindgen_anon_1.imm_data }))
        } else {
            None
        }
    }
}

impl fmt::Debug for WorkCompletion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkCompletion")
            .field("wr_id", &self.0.wr_id)
            .field("status", &self.status_text())
            .field("opcode", &self.opcode())
            .field("byte_len", &self.0.byte_len)
            .field("qp_num", &self.0.qp_num)
            .finish()
    }
}
