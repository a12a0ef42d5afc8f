//! [`ProtectionDomain`] (`ibv_alloc_pd`).

use std::fmt;
use std::ptr::NonNull;
use std::sync::Arc;

use super::device::{Context, ContextInner};
use super::error::VerbsError;
use super::sys;

pub(crate) struct PdInner {
    pub(crate) raw: NonNull<sys::ibv_pd>,
    pub(crate) ctx: Arc<ContextInner>,
}

// SAFETY: a PD is a kernel object handle; libibverbs calls on it are thread-safe.
// It is deallocated only in Drop, when no MR/QP holds it (they keep an Arc).
unsafe impl Send for PdInner {}
// SAFETY: as above.
unsafe impl Sync for PdInner {}

impl Drop for PdInner {
    fn drop(&mut self) {
        // SAFETY: raw is a live PD with no MR or QP left (they hold Arcs to this).
        let ret = unsafe { sys::ibv_dealloc_pd(self.raw.as_ptr()) };
        debug_assert_eq!(ret, 0, "ibv_dealloc_pd");
    }
}

/// A protection domain: memory regions and queue pairs of one PD may work
/// together. Cloning shares it; it is freed after its last MR and QP.
#[derive(Clone)]
pub struct ProtectionDomain {
    pub(crate) inner: Arc<PdInner>,
}

impl fmt::Debug for ProtectionDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProtectionDomain").finish_non_exhaustive()
    }
}

impl ProtectionDomain {
    /// Allocates a PD on `ctx`.
    pub fn new(ctx: &Context) -> Result<ProtectionDomain, VerbsError> {
        // SAFETY: ctx.inner.raw is an open context.
        let raw = unsafe { sys::ibv_alloc_pd(ctx.inner.raw.as_ptr()) };
        let raw = NonNull::new(raw).ok_or_else(|| VerbsError::from_errno("ibv_alloc_pd"))?;
        Ok(ProtectionDomain {
            inner: Arc::new(PdInner {
                raw,
                ctx: Arc::clone(&ctx.inner),
            }),
        })
    }

    /// The device this PD belongs to.
    pub fn context(&self) -> Context {
        Context {
            inner: Arc::clone(&self.inner.ctx),
        }
    }
}
