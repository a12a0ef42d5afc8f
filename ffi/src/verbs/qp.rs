//! [`QueuePair`]: reliable-connected (RC) queue pairs, connected from exchanged
//! [`Endpoint`]s (RESET -> INIT -> RTR -> RTS), and their work requests.

use std::fmt;
use std::ptr::NonNull;
use std::sync::Arc;

use super::cq::{CompletionQueue, CqInner};
use super::device::{Context, Gid, LinkLayer, Mtu};
use super::error::{check, VerbsError};
use super::mr::{Access, RemoteRegion, Sge};
use super::pd::{PdInner, ProtectionDomain};
use super::sys;

/// Largest packet sequence number + 1 (PSNs are 24 bits).
const PSN_LIMIT: u32 = 1 << 24;

/// Work queue sizes of a QP (`ibv_qp_cap`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QpCaps {
    /// Outstanding send-queue requests.
    pub max_send_wr: u32,
    /// Outstanding receive-queue requests.
    pub max_recv_wr: u32,
    /// SGEs per send request.
    pub max_send_sge: u32,
    /// SGEs per receive request.
    pub max_recv_sge: u32,
    /// Bytes a send request may carry inline (copied at post time; see
    /// [`SendRequest::inline`]). 0: none.
    pub max_inline_data: u32,
}

impl Default for QpCaps {
    fn default() -> Self {
        QpCaps {
            max_send_wr: 128,
            max_recv_wr: 128,
            max_send_sge: 4,
            max_recv_sge: 4,
            max_inline_data: 0,
        }
    }
}

impl QpCaps {
    pub(crate) fn to_raw(self) -> sys::ibv_qp_cap {
        sys::ibv_qp_cap {
            max_send_wr: self.max_send_wr,
            max_recv_wr: self.max_recv_wr,
            max_send_sge: self.max_send_sge,
            max_recv_sge: self.max_recv_sge,
            max_inline_data: self.max_inline_data,
        }
    }

    pub(crate) fn from_raw(cap: sys::ibv_qp_cap) -> QpCaps {
        QpCaps {
            max_send_wr: cap.max_send_wr,
            max_recv_wr: cap.max_recv_wr,
            max_send_sge: cap.max_send_sge,
            max_recv_sge: cap.max_recv_sge,
            max_inline_data: cap.max_inline_data,
        }
    }
}

/// What one side of an RC connection tells the other (and keeps for itself).
///
/// Exchange [`Endpoint::to_bytes`] out of band (TCP, rdma_cm private data).
/// `port_num` and `gid_index` are the describing side's own; in a *remote*
/// endpoint they are informational only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoint {
    /// QP number.
    pub qp_num: u32,
    /// Initial packet sequence number (24 bits) of this side's send queue.
    pub psn: u32,
    /// Port LID (InfiniBand; 0 on RoCE).
    pub lid: u16,
    /// Port GID (required on RoCE).
    pub gid: Gid,
    /// Local port number (from 1).
    pub port_num: u8,
    /// Index of `gid` in the port's GID table.
    pub gid_index: u8,
}

impl Endpoint {
    /// Bytes of [`Endpoint::to_bytes`].
    pub const WIRE_BYTES: usize = 28;

    /// Little-endian fixed layout: qp_num, psn, lid, gid, port_num, gid_index, 2 zero bytes.
    pub fn to_bytes(&self) -> [u8; Self::WIRE_BYTES] {
        let mut b = [0u8; Self::WIRE_BYTES];
        b[0..4].copy_from_slice(&self.qp_num.to_le_bytes());
        b[4..8].copy_from_slice(&self.psn.to_le_bytes());
        b[8..10].copy_from_slice(&self.lid.to_le_bytes());
        b[10..26].copy_from_slice(&self.gid.0);
        b[26] = self.port_num;
        b[27] = self.gid_index;
        b
    }

    /// Decodes [`Endpoint::to_bytes`].
    pub fn from_bytes(b: &[u8; Self::WIRE_BYTES]) -> Endpoint {
        let mut gid = [0u8; 16];
        gid.copy_from_slice(&b[10..26]);
        Endpoint {
            qp_num: u32::from_le_bytes(b[0..4].try_into().expect("4 bytes")),
            psn: u32::from_le_bytes(b[4..8].try_into().expect("4 bytes")),
            lid: u16::from_le_bytes(b[8..10].try_into().expect("2 bytes")),
            gid: Gid(gid),
            port_num: b[26],
            gid_index: b[27],
        }
    }
}

/// Transport parameters of [`QueuePair::connect_with`]; `Default` is what
/// [`QueuePair::connect`] uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectOptions {
    /// Path MTU; `None`: the local port's active MTU.
    pub path_mtu: Option<Mtu>,
    /// Rights remote peers get on this QP (READ/WRITE/atomics into our regions,
    /// still bounded by each region's own rights).
    pub remote_access: Access,
    /// Outstanding RDMA READs/atomics in each direction; clamped to the
    /// device's limits.
    pub max_rd_atomic: u8,
    /// Local ACK timeout exponent: 4.096 us * 2^timeout (14: ~67 ms).
    pub timeout: u8,
    /// Transport retries (0..=7).
    pub retry_cnt: u8,
    /// Retries on receiver-not-ready (7: forever).
    pub rnr_retry: u8,
    /// RNR NAK timer code advertised to the peer (12: 0.64 ms).
    pub min_rnr_timer: u8,
    /// GRH hop limit (RoCE v2 routed paths need > 1).
    pub hop_limit: u8,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            path_mtu: None,
            remote_access: Access::LOCAL_WRITE | Access::REMOTE_READ | Access::REMOTE_WRITE,
            max_rd_atomic: 16,
            timeout: 14,
            retry_cnt: 7,
            rnr_retry: 7,
            min_rnr_timer: 12,
            hop_limit: 64,
        }
    }
}

/// A send-queue operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendOp {
    /// SEND: consumes one receive posted by the peer.
    Send,
    /// SEND with 32-bit immediate data.
    SendWithImm(u32),
    /// RDMA WRITE of the SGEs into the peer's region.
    RdmaWrite(RemoteAddr),
    /// RDMA WRITE with immediate (consumes a peer receive).
    RdmaWriteWithImm(RemoteAddr, u32),
    /// RDMA READ from the peer's region into the SGEs (their region needs
    /// LOCAL_WRITE).
    RdmaRead(RemoteAddr),
}

/// A peer's memory address with its remote key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemoteAddr {
    /// Virtual address in the peer's registration.
    pub addr: u64,
    /// The peer region's rkey.
    pub rkey: u32,
}

impl RemoteRegion {
    /// The address `offset` bytes into the region.
    pub fn at(&self, offset: u64) -> RemoteAddr {
        RemoteAddr {
            addr: self.addr + offset,
            rkey: self.rkey,
        }
    }
}

/// One send-queue work request.
#[derive(Debug, Clone, Copy)]
pub struct SendRequest<'a> {
    /// Returned in the completion.
    pub wr_id: u64,
    /// What to do.
    pub op: SendOp,
    /// Local memory: gathered for SEND/WRITE, scattered into for READ.
    pub sges: &'a [Sge],
    /// Generate a completion (unsignaled requests complete silently; signal
    /// at least one in every send-queue-depth requests).
    pub signaled: bool,
    /// Wait for earlier READs/atomics before this one (IBV_SEND_FENCE).
    pub fence: bool,
    /// Copy the gathered bytes into the work request at post time
    /// (IBV_SEND_INLINE; SEND/WRITE only, at most the QP's `max_inline_data`):
    /// the device does not read the SGEs' memory afterwards, and no DMA read
    /// precedes the transmission (lower latency for small messages).
    pub inline: bool,
}

impl<'a> SendRequest<'a> {
    /// A signaled SEND of `sges`.
    pub fn send(wr_id: u64, sges: &'a [Sge]) -> Self {
        Self::new(wr_id, SendOp::Send, sges)
    }

    /// A signaled RDMA READ from `remote` into `sges`.
    pub fn read(wr_id: u64, sges: &'a [Sge], remote: RemoteAddr) -> Self {
        Self::new(wr_id, SendOp::RdmaRead(remote), sges)
    }

    /// A signaled RDMA WRITE of `sges` to `remote`.
    pub fn write(wr_id: u64, sges: &'a [Sge], remote: RemoteAddr) -> Self {
        Self::new(wr_id, SendOp::RdmaWrite(remote), sges)
    }

    /// A signaled request.
    pub fn new(wr_id: u64, op: SendOp, sges: &'a [Sge]) -> Self {
        SendRequest {
            wr_id,
            op,
            sges,
            signaled: true,
            fence: false,
            inline: false,
        }
    }
}

/// QP state (`ibv_qp_state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QpState {
    /// Fresh or reset.
    Reset,
    /// Initialized: receives may be posted.
    Init,
    /// Ready to receive.
    Rtr,
    /// Ready to send.
    Rts,
    /// Send queue drained.
    Sqd,
    /// Send queue error.
    Sqe,
    /// Error: every request completes with a flush error.
    Error,
    /// Any other value.
    Unknown(u32),
}

impl QpState {
    fn from_raw(raw: u32) -> QpState {
        match raw {
            sys::IBV_QPS_RESET => QpState::Reset,
            sys::IBV_QPS_INIT => QpState::Init,
            sys::IBV_QPS_RTR => QpState::Rtr,
            sys::IBV_QPS_RTS => QpState::Rts,
            sys::IBV_QPS_SQD => QpState::Sqd,
            sys::IBV_QPS_SQE => QpState::Sqe,
            sys::IBV_QPS_ERR => QpState::Error,
            other => QpState::Unknown(other),
        }
    }
}

/// Proof that the QP numbered `qp_num` was destroyed: made only by this layer, right
/// after the destruction ([`QueuePair::destroy`], [`CmId::destroy`](super::CmId::destroy)).
#[derive(Debug)]
pub struct DestroyedQp {
    qp_num: u32,
}

impl DestroyedQp {
    pub(crate) fn new(qp_num: u32) -> DestroyedQp {
        DestroyedQp { qp_num }
    }

    /// The number the QP had (numbers are reused by later QPs).
    pub fn qp_num(&self) -> u32 {
        self.qp_num
    }
}

/// Who destroys a queue pair.
enum QpOwner {
    /// Made by [`QueuePair::new_rc`]: `ibv_destroy_qp` on drop.
    Verbs,
    /// Made on a connection-manager id ([`super::CmId::create_qp`]): destroyed
    /// (`rdma_destroy_qp`) with the id, after the last handle to either is gone.
    Cm(#[allow(dead_code)] Arc<super::cm::CmIdInner>),
}

/// A reliable-connected queue pair. Dropping it destroys it
/// (`ibv_destroy_qp`, or with its connection-manager id); its PD and CQs live at
/// least as long.
pub struct QueuePair {
    raw: NonNull<sys::ibv_qp>,
    caps: QpCaps,
    owner: QpOwner,
    pd: Arc<PdInner>,
    _send_cq: Arc<CqInner>,
    _recv_cq: Arc<CqInner>,
}

// SAFETY: verbs on a QP are thread-safe in libibverbs (providers lock the
// send and receive queues). Destroyed only in Drop.
unsafe impl Send for QueuePair {}
// SAFETY: as above: posting and modifying take &self and are thread-safe.
unsafe impl Sync for QueuePair {}

impl fmt::Debug for QueuePair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueuePair")
            .field("qp_num", &self.qp_num())
            .field("caps", &self.caps)
            .finish()
    }
}

impl Drop for QueuePair {
    fn drop(&mut self) {
        if !matches!(self.owner, QpOwner::Verbs) {
            // Destroyed with its cm id (CmIdInner's Drop), which this Arc keeps.
            return;
        }
        // SAFETY: raw is a live QP we created, destroyed once; outstanding
        // requests are dropped by the device (their memory is protected by the
        // MR keys).
        let ret = unsafe { sys::ibv_destroy_qp(self.raw.as_ptr()) };
        debug_assert_eq!(ret, 0, "ibv_destroy_qp");
    }
}

impl QueuePair {
    /// Creates an RC QP in `pd` completing sends on `send_cq` and receives on
    /// `recv_cq` (may be the same CQ). It starts in RESET; [`QueuePair::connect`]
    /// brings it to RTS.
    pub fn new_rc(
        pd: &ProtectionDomain,
        send_cq: &CompletionQueue,
        recv_cq: &CompletionQueue,
        caps: QpCaps,
    ) -> Result<QueuePair, VerbsError> {
        let mut init = rc_init_attr(send_cq, recv_cq, caps);
        // SAFETY: pd and both CQs are live and of the same device (a PD from
        // another device makes ibv_create_qp fail, not misbehave); init is valid.
        let raw = unsafe { sys::ibv_create_qp(pd.inner.raw.as_ptr(), &mut init) };
        let raw = NonNull::new(raw).ok_or_else(|| VerbsError::from_errno("ibv_create_qp"))?;
        Ok(QueuePair {
            raw,
            // ibv_create_qp writes back the actual capacities.
            caps: QpCaps::from_raw(init.cap),
            owner: QpOwner::Verbs,
            pd: Arc::clone(&pd.inner),
            _send_cq: Arc::clone(&send_cq.inner),
            _recv_cq: Arc::clone(&recv_cq.inner),
        })
    }

    /// A handle to the QP a cm id created (`rdma_create_qp`); `owner` keeps the
    /// id, which destroys the QP when the last handle is gone.
    pub(crate) fn from_cm(
        raw: NonNull<sys::ibv_qp>,
        caps: QpCaps,
        owner: Arc<super::cm::CmIdInner>,
        pd: &ProtectionDomain,
        send_cq: &CompletionQueue,
        recv_cq: &CompletionQueue,
    ) -> QueuePair {
        QueuePair {
            raw,
            caps,
            owner: QpOwner::Cm(owner),
            pd: Arc::clone(&pd.inner),
            _send_cq: Arc::clone(&send_cq.inner),
            _recv_cq: Arc::clone(&recv_cq.inner),
        }
    }

    /// True when this QP was made on the cm id `inner` (so the id destroys it).
    pub(crate) fn belongs_to(&self, inner: &Arc<super::cm::CmIdInner>) -> bool {
        matches!(&self.owner, QpOwner::Cm(owner) if Arc::ptr_eq(owner, inner))
    }

    /// Destroys the QP now (`ibv_destroy_qp`): from then on the device touches none of
    /// the memory its outstanding work requests named, and the returned proof lets
    /// [`MessageBuffers::reclaim`](super::MessageBuffers::reclaim) take those buffers
    /// back. For a QP made on a cm id use [`CmId::destroy`](super::CmId::destroy).
    pub fn destroy(self) -> Result<DestroyedQp, QueuePair> {
        if !matches!(self.owner, QpOwner::Verbs) {
            return Err(self);
        }
        let qp_num = self.qp_num();
        drop(self);
        Ok(DestroyedQp { qp_num })
    }

    /// The QP number peers address.
    pub fn qp_num(&self) -> u32 {
        // SAFETY: raw is live; qp_num is fixed at creation.
        unsafe { (*self.raw.as_ptr()).qp_num }
    }

    /// Actual work queue sizes (>= the requested ones).
    pub fn caps(&self) -> QpCaps {
        self.caps
    }

    fn context(&self) -> Context {
        Context {
            inner: Arc::clone(&self.pd.ctx),
        }
    }

    /// This QP's endpoint on `port_num` using GID `gid_index` (soft-RoCE:
    /// 1 is the IPv4-mapped GID), starting its send queue at `psn`.
    pub fn endpoint(&self, port_num: u8, gid_index: u8, psn: u32) -> Result<Endpoint, VerbsError> {
        if psn >= PSN_LIMIT {
            return Err(VerbsError::invalid(
                "PSN",
                format!("{psn:#x} exceeds 24 bits"),
            ));
        }
        let ctx = self.context();
        let port = ctx.port_attr(port_num)?;
        let gid = ctx.gid(port_num, u32::from(gid_index))?;
        Ok(Endpoint {
            qp_num: self.qp_num(),
            psn,
            lid: port.lid,
            gid,
            port_num,
            gid_index,
        })
    }

    /// The current state (`ibv_query_qp`).
    pub fn state(&self) -> Result<QpState, VerbsError> {
        let mut attr = sys::ibv_qp_attr::default();
        let mut init = sys::ibv_qp_init_attr::default();
        // SAFETY: raw is live; attr and init are valid, writable.
        let ret = unsafe {
            sys::ibv_query_qp(
                self.raw.as_ptr(),
                &mut attr,
                sys::IBV_QP_STATE as i32,
                &mut init,
            )
        };
        check("ibv_query_qp", ret)?;
        Ok(QpState::from_raw(attr.qp_state))
    }

    fn modify(
        &self,
        call: &'static str,
        attr: &mut sys::ibv_qp_attr,
        mask: u32,
    ) -> Result<(), VerbsError> {
        // SAFETY: raw is live; attr is a valid ibv_qp_attr whose fields named by
        // mask are set.
        let ret = unsafe { sys::ibv_modify_qp(self.raw.as_ptr(), attr, mask as i32) };
        check(call, ret)
    }

    /// Connects to `remote` with [`ConnectOptions::default`]; see
    /// [`QueuePair::connect_with`].
    pub fn connect(&self, local: &Endpoint, remote: &Endpoint) -> Result<(), VerbsError> {
        self.connect_with(local, remote, &ConnectOptions::default())
    }

    /// RESET -> INIT -> RTR -> RTS towards `remote` (the peer's endpoint),
    /// `local` being this QP's own (from [`QueuePair::endpoint`]). Receives may
    /// be posted before (from INIT on); the peer must reach RTR before this side
    /// sends, or its first packets are dropped and retried.
    pub fn connect_with(
        &self,
        local: &Endpoint,
        remote: &Endpoint,
        opts: &ConnectOptions,
    ) -> Result<(), VerbsError> {
        if local.qp_num != self.qp_num() {
            return Err(VerbsError::invalid(
                "local endpoint",
                format!(
                    "qp_num {} is not this QP's ({})",
                    local.qp_num,
                    self.qp_num()
                ),
            ));
        }
        if local.psn >= PSN_LIMIT || remote.psn >= PSN_LIMIT {
            return Err(VerbsError::invalid("PSN", "PSNs are 24 bits"));
        }
        let ctx = self.context();
        let port = ctx.port_attr(local.port_num)?;
        if port.link_layer == LinkLayer::Ethernet && remote.gid.is_zero() {
            return Err(VerbsError::invalid(
                "remote endpoint",
                "RoCE addresses peers by GID, and the remote GID is all zeros (wrong GID index \
                 on the remote side?)",
            ));
        }
        let dev = ctx.device_attr()?;
        let clamp = |limit: i32| -> u8 {
            let limit = u8::try_from(limit.max(1)).unwrap_or(u8::MAX);
            opts.max_rd_atomic.clamp(1, limit)
        };
        let mtu = opts
            .path_mtu
            .unwrap_or(port.active_mtu)
            .min(port.active_mtu);

        let mut attr = sys::ibv_qp_attr {
            qp_state: sys::IBV_QPS_INIT,
            pkey_index: 0,
            port_num: local.port_num,
            qp_access_flags: opts.remote_access.bits(),
            ..Default::default()
        };
        self.modify(
            "ibv_modify_qp(INIT)",
            &mut attr,
            sys::IBV_QP_STATE
                | sys::IBV_QP_PKEY_INDEX
                | sys::IBV_QP_PORT
                | sys::IBV_QP_ACCESS_FLAGS,
        )?;

        let mut attr = sys::ibv_qp_attr {
            qp_state: sys::IBV_QPS_RTR,
            path_mtu: mtu.to_raw(),
            dest_qp_num: remote.qp_num,
            rq_psn: remote.psn,
            max_dest_rd_atomic: clamp(dev.max_qp_rd_atom),
            min_rnr_timer: opts.min_rnr_timer,
            ah_attr: sys::ibv_ah_attr {
                dlid: remote.lid,
                sl: 0,
                src_path_bits: 0,
                port_num: local.port_num,
                is_global: 0,
                ..Default::default()
            },
            ..Default::default()
        };
        if !remote.gid.is_zero() {
            attr.ah_attr.is_global = 1;
            attr.ah_attr.grh = sys::ibv_global_route {
                dgid: remote.gid.to_raw(),
                flow_label: 0,
                sgid_index: local.gid_index,
                hop_limit: opts.hop_limit,
                traffic_class: 0,
            };
        }
        self.modify(
            "ibv_modify_qp(RTR)",
            &mut attr,
            sys::IBV_QP_STATE
                | sys::IBV_QP_AV
                | sys::IBV_QP_PATH_MTU
                | sys::IBV_QP_DEST_QPN
                | sys::IBV_QP_RQ_PSN
                | sys::IBV_QP_MAX_DEST_RD_ATOMIC
                | sys::IBV_QP_MIN_RNR_TIMER,
        )?;

        let mut attr = sys::ibv_qp_attr {
            qp_state: sys::IBV_QPS_RTS,
            timeout: opts.timeout,
            retry_cnt: opts.retry_cnt,
            rnr_retry: opts.rnr_retry,
            sq_psn: local.psn,
            max_rd_atomic: clamp(dev.max_qp_init_rd_atom),
            ..Default::default()
        };
        self.modify(
            "ibv_modify_qp(RTS)",
            &mut attr,
            sys::IBV_QP_STATE
                | sys::IBV_QP_TIMEOUT
                | sys::IBV_QP_RETRY_CNT
                | sys::IBV_QP_RNR_RETRY
                | sys::IBV_QP_SQ_PSN
                | sys::IBV_QP_MAX_QP_RD_ATOMIC,
        )
    }

    /// Sets the receiver-not-ready timer the QP advertises (RTS -> RTS): how long a peer
    /// waits before resending a SEND that found no posted receive here. `code` is the
    /// IB encoding: 1 = 0.01 ms, 12 = 0.64 ms, 0 = 655 ms (what the connection manager
    /// leaves a QP with).
    pub fn set_min_rnr_timer(&self, code: u8) -> Result<(), VerbsError> {
        // SAFETY: raw is a live QP.
        unsafe { modify_min_rnr_timer(self.raw.as_ptr(), code) }
    }

    /// Moves the QP to the error state: outstanding and later requests complete
    /// with a flush error (how to tear a connection down, or test that path).
    pub fn set_error(&self) -> Result<(), VerbsError> {
        let mut attr = sys::ibv_qp_attr {
            qp_state: sys::IBV_QPS_ERR,
            ..Default::default()
        };
        self.modify("ibv_modify_qp(ERR)", &mut attr, sys::IBV_QP_STATE)
    }

    /// Posts one receive scattering into `sges` (`ibv_post_recv`); its
    /// completion carries `wr_id`. Allowed from INIT on.
    #[inline]
    pub fn post_recv(&self, wr_id: u64, sges: &[Sge]) -> Result<(), VerbsError> {
        let mut wr = sys::ibv_recv_wr {
            wr_id,
            next: std::ptr::null_mut(),
            sg_list: sges_ptr(sges),
            num_sge: num_sge(sges)?,
        };
        let mut bad = std::ptr::null_mut();
        // SAFETY: raw is live; wr is a valid single request whose SGEs (repr
        // transparent ibv_sge, read only during the call) name registered memory,
        // which the device bounds-checks by lkey.
        let ret = unsafe { sys::prc_ibv_post_recv(self.raw.as_ptr(), &mut wr, &mut bad) };
        check("ibv_post_recv", ret)
    }

    /// Posts one send-queue request (`ibv_post_send`). Allowed in RTS.
    #[inline]
    pub fn post_send(&self, req: &SendRequest<'_>) -> Result<(), VerbsError> {
        if req.inline {
            let bytes: u64 = req.sges.iter().map(|s| u64::from(s.len())).sum();
            if matches!(req.op, SendOp::RdmaRead(_)) || bytes > u64::from(self.caps.max_inline_data)
            {
                return Err(VerbsError::invalid(
                    "inline send",
                    format!(
                        "{bytes} bytes inline (QP max_inline_data {}); READs cannot be inline",
                        self.caps.max_inline_data
                    ),
                ));
            }
        }
        let mut wr = sys::ibv_send_wr {
            wr_id: req.wr_id,
            next: std::ptr::null_mut(),
            sg_list: sges_ptr(req.sges),
            num_sge: num_sge(req.sges)?,
            send_flags: (if req.signaled {
                sys::IBV_SEND_SIGNALED
            } else {
                0
            }) | (if req.fence { sys::IBV_SEND_FENCE } else { 0 })
                | (if req.inline { sys::IBV_SEND_INLINE } else { 0 }),
            ..Default::default()
        };
        let (opcode, remote, imm) = match req.op {
            SendOp::Send => (sys::IBV_WR_SEND, None, None),
            SendOp::SendWithImm(imm) => (sys::IBV_WR_SEND_WITH_IMM, None, Some(imm)),
            SendOp::RdmaWrite(r) => (sys::IBV_WR_RDMA_WRITE, Some(r), None),
            SendOp::RdmaWriteWithImm(r, imm) => {
                (sys::IBV_WR_RDMA_WRITE_WITH_IMM, Some(r), Some(imm))
            }
            SendOp::RdmaRead(r) => (sys::IBV_WR_RDMA_READ, Some(r), None),
        };
        wr.opcode = opcode;
        if let Some(r) = remote {
            wr.wr.rdma = sys::ibv_send_wr__bindgen_ty_2__bindgen_ty_1 {
                remote_addr: r.addr,
                rkey: r.rkey,
            };
        }
        if let Some(imm) = imm {
            wr.__bindgen_anon_1.imm_data = imm.to_be();
        }
        let mut bad = std::ptr::null_mut();
        // SAFETY: raw is live; wr is a valid single request (no inline data, so
        // the device reaches memory only through the SGEs' lkeys, which it
        // bounds-checks; the remote side checks remote_addr/rkey). The SGE array
        // is only read during the call.
        let ret = unsafe { sys::prc_ibv_post_send(self.raw.as_ptr(), &mut wr, &mut bad) };
        check("ibv_post_send", ret)
    }
}

/// RTS -> RTS with a new min_rnr_timer.
///
/// # Safety
/// `qp` is a live QP.
pub(crate) unsafe fn modify_min_rnr_timer(
    qp: *mut sys::ibv_qp,
    code: u8,
) -> Result<(), VerbsError> {
    if code > 31 {
        return Err(VerbsError::invalid(
            "RNR timer",
            format!("code {code} > 31"),
        ));
    }
    let mut attr = sys::ibv_qp_attr {
        qp_state: sys::IBV_QPS_RTS,
        min_rnr_timer: code,
        ..Default::default()
    };
    // SAFETY: qp is live (caller); attr sets the state and the RNR timer named by the mask.
    let ret = unsafe {
        sys::ibv_modify_qp(
            qp,
            &mut attr,
            (sys::IBV_QP_STATE | sys::IBV_QP_MIN_RNR_TIMER) as i32,
        )
    };
    check("ibv_modify_qp(RTS min_rnr_timer)", ret)
}

/// Init attributes of an RC QP: no shared receive queue, sends signaled per request.
pub(crate) fn rc_init_attr(
    send_cq: &CompletionQueue,
    recv_cq: &CompletionQueue,
    caps: QpCaps,
) -> sys::ibv_qp_init_attr {
    sys::ibv_qp_init_attr {
        send_cq: send_cq.inner.raw.as_ptr(),
        recv_cq: recv_cq.inner.raw.as_ptr(),
        cap: caps.to_raw(),
        qp_type: sys::IBV_QPT_RC,
        sq_sig_all: 0,
        ..Default::default()
    }
}

fn sges_ptr(sges: &[Sge]) -> *mut sys::ibv_sge {
    if sges.is_empty() {
        std::ptr::null_mut()
    } else {
        // The provider only reads the list (the C prototype is not const).
        sges.as_ptr().cast_mut().cast()
    }
}

fn num_sge(sges: &[Sge]) -> Result<i32, VerbsError> {
    i32::try_from(sges.len())
        .map_err(|_| VerbsError::invalid("SGE list", format!("{} entries", sges.len())))
}
