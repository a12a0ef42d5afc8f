//! Safe layer over RDMA verbs (rdma-core 44's libibverbs; feature `rdma`).
//!
//! Objects are reference counted towards their parents without lifetime
//! parameters: a [`ProtectionDomain`], [`CompletionQueue`], [`MemoryRegion`] or
//! [`QueuePair`] keeps what it was made from alive (device context, PD, CQs),
//! and each is destroyed when dropped, children first.
//!
//! The fast path ([`QueuePair::post_send`], [`QueuePair::post_recv`],
//! [`CompletionQueue::poll`]) allocates nothing and makes no syscall; it goes
//! through the C shim (verbs' versions are `static inline`).
//!
//! On a kernel without RDMA (our hosts) [`devices`] returns an empty list;
//! [`require_devices`] and [`Context::open`] return
//! [`VerbsError::NoRdmaSubsystem`]. Real devices exist in the soft-RoCE guest
//! (`ci/rdma-guest.sh`).
//!
//! Memory rules (see [`MemoryRegion`]): registered memory is only reached by
//! copy or through `unsafe` slices, since the device writes it behind Rust's
//! back; work requests name it by [`Sge`]s, which the device bounds-checks.

mod buffers;
mod cm;
mod cq;
mod device;
mod error;
mod mr;
mod pd;
mod qp;
pub mod sys;

pub use buffers::{BufferOp, Completed, MessageBuffers, BUFFERS_MAX};
pub use cm::{
    CmEvent, CmEventKind, CmId, ConnParams, EventChannel, PrivateData,
    ACCEPT_PRIVATE_DATA_BYTES_MAX, CONNECT_PRIVATE_DATA_BYTES_MAX, PRIVATE_DATA_BYTES_MAX,
};
pub use cq::{CompletionQueue, WcOpcode, WorkCompletion};
pub use device::{
    devices, rdma_subsystem_present, require_devices, Context, DeviceAttr, DeviceInfo, Gid,
    LinkLayer, Mtu, PortAttr,
};
pub use error::{VerbsError, NO_RDMA_SUBSYSTEM};
pub use mr::{Access, MemoryRegion, ReadableRegion, RemoteRegion, Sge, HUGE_PAGE_BYTES};
pub use pd::ProtectionDomain;
pub use qp::{
    ConnectOptions, DestroyedQp, Endpoint, QpCaps, QpState, QueuePair, RemoteAddr, SendOp,
    SendRequest,
};
