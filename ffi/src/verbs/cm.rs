//! Connection management over librdmacm (`rdma_cm`): an [`EventChannel`], the
//! ids on it ([`CmId`]: listen, connect, accept, disconnect) and the RC queue
//! pair made on an id ([`CmId::create_qp`]), which the connection manager moves
//! through INIT/RTR/RTS by itself.
//!
//! Everything here may block or make system calls: it belongs on a thread of
//! its own (the data plane's cm thread, a client's caller), never on a polling
//! lcore. The queue pair handle ([`QueuePair`]) is what a poller uses; it keeps
//! its id alive, and the id (and its QP) is destroyed when the last of the two
//! handles is dropped, so the poller hands its QP handle back to the cm thread
//! to have the syscalls of `rdma_destroy_qp`/`rdma_destroy_id` happen there.
//!
//! ```text
//!  passive side (listener)                active side (client)
//!  ----------------------                 --------------------
//!  id = channel.create_id(); bind; listen id = channel.create_id()
//!                                         resolve_addr  -> ADDR_RESOLVED
//!                                         resolve_route -> ROUTE_RESOLVED
//!                                         create_qp, post receives
//!            <------ REQ (private data) -- connect(params)
//!  CONNECT_REQUEST: event.request = new id
//!  create_qp, post receives,
//!  accept(params) -- REP (private data) ->
//!                                         ESTABLISHED (event.private_data)
//!  ESTABLISHED   <------------ RTU -------
//!  ...   SEND/RECV, READ on the QPs   ...
//!  disconnect()  -- DREQ --------------->  DISCONNECTED
//!  DISCONNECTED  (both sides get one)
//! ```
//!
//! Ids carry a 64-bit token of the caller's (`rdma_cm_id.context`), so events
//! say which connection they are about without any lookup by pointer. A
//! connect request's new id inherits its listener's token until
//! [`CmId::set_token`] gives it its own.

use std::cell::Cell;
use std::ffi::CStr;
use std::fmt;
use std::marker::PhantomData;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use super::cq::{CompletionQueue, CqInner};
use super::device::{rdma_subsystem_present, Context};
use super::error::{check, errno, VerbsError};
use super::pd::{PdInner, ProtectionDomain};
use super::qp::{rc_init_attr, DestroyedQp, QpCaps, QueuePair};
use super::sys;

/// Largest private data librdmacm returns with an event (`RDMA_MAX_PRIVATE_DATA`).
pub const PRIVATE_DATA_BYTES_MAX: usize = 256;
/// Private data a connect request may carry on RoCE/InfiniBand (REQ: 92 bytes, 36
/// of them taken by the connection manager's own header).
pub const CONNECT_PRIVATE_DATA_BYTES_MAX: usize = 56;
/// Private data an accept may carry (REP).
pub const ACCEPT_PRIVATE_DATA_BYTES_MAX: usize = 196;

/// A reference on every device librdmacm knows (`rdma_get_devices`): while it
/// lives, librdmacm keeps their verbs contexts open. Contexts borrowed from cm
/// ids ([`CmId::context`]) hold one.
pub(crate) struct CmDeviceRefs {
    list: NonNull<*mut sys::ibv_context>,
}

// SAFETY: the list is a malloc'ed array of context pointers, only read (and
// freed once, in Drop); librdmacm's reference counts are mutex-protected.
unsafe impl Send for CmDeviceRefs {}
// SAFETY: as above: shared access only reads the array.
unsafe impl Sync for CmDeviceRefs {}

impl CmDeviceRefs {
    fn take() -> Result<CmDeviceRefs, VerbsError> {
        let mut n: i32 = 0;
        // SAFETY: n is a valid out-pointer; the result is NULL or a NULL-terminated
        // list we free in Drop.
        let list = unsafe { sys::rdma_get_devices(&mut n) };
        let list = NonNull::new(list).ok_or_else(|| VerbsError::from_errno("rdma_get_devices"))?;
        Ok(CmDeviceRefs { list })
    }

    fn contains(&self, ctx: *mut sys::ibv_context) -> bool {
        let mut i = 0;
        loop {
            // SAFETY: the list is NULL-terminated; i never passes the terminator.
            let entry = unsafe { *self.list.as_ptr().add(i) };
            if entry.is_null() {
                return false;
            }
            if entry == ctx {
                return true;
            }
            i += 1;
        }
    }
}

impl Drop for CmDeviceRefs {
    fn drop(&mut self) {
        // SAFETY: the list came from rdma_get_devices and is freed once.
        unsafe { sys::rdma_free_devices(self.list.as_ptr()) };
    }
}

pub(crate) struct ChannelInner {
    raw: NonNull<sys::rdma_event_channel>,
}

// SAFETY: the channel is a file descriptor in a malloc'ed struct; librdmacm's
// calls on it are reads of the fd. It is destroyed only in Drop, after every id
// (ids hold an Arc to this).
unsafe impl Send for ChannelInner {}
// SAFETY: as above.
unsafe impl Sync for ChannelInner {}

impl Drop for ChannelInner {
    fn drop(&mut self) {
        // SAFETY: raw is a live channel with no id left on it (ids hold Arcs).
        unsafe { sys::rdma_destroy_event_channel(self.raw.as_ptr()) };
    }
}

/// An event channel: where the connection manager reports what happened to the
/// ids created on it. One thread takes events from it at a time (`!Sync`).
pub struct EventChannel {
    inner: Arc<ChannelInner>,
    _not_sync: PhantomData<Cell<()>>,
}

impl fmt::Debug for EventChannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventChannel")
            .field("fd", &self.fd())
            .finish()
    }
}

/// What happened (`rdma_cm_event_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmEventKind {
    /// [`CmId::resolve_addr`] found a device for the destination.
    AddrResolved,
    /// Address resolution failed (`status` says why).
    AddrError,
    /// [`CmId::resolve_route`] succeeded.
    RouteResolved,
    /// Route resolution failed.
    RouteError,
    /// A peer wants to connect: [`CmEvent::request`] holds its new id.
    ConnectRequest,
    /// Active side without a QP: the peer accepted (not used with QPs).
    ConnectResponse,
    /// Connecting failed (timeout, protocol error).
    ConnectError,
    /// The remote side is unreachable.
    Unreachable,
    /// The peer rejected the connection (`status` and private data say why).
    Rejected,
    /// The connection is up: the QP is in RTS.
    Established,
    /// The connection is down: the peer (or this side) disconnected.
    Disconnected,
    /// The device went away: destroy everything made on it.
    DeviceRemoval,
    /// The QP may be reused (after a disconnect's time-wait).
    TimewaitExit,
    /// The address's device changed (bonding fail-over).
    AddrChange,
    /// Any other value (multicast events, newer kernels).
    Other(u32),
}

impl CmEventKind {
    fn from_raw(raw: u32) -> CmEventKind {
        match raw {
            sys::RDMA_CM_EVENT_ADDR_RESOLVED => CmEventKind::AddrResolved,
            sys::RDMA_CM_EVENT_ADDR_ERROR => CmEventKind::AddrError,
            sys::RDMA_CM_EVENT_ROUTE_RESOLVED => CmEventKind::RouteResolved,
            sys::RDMA_CM_EVENT_ROUTE_ERROR => CmEventKind::RouteError,
            sys::RDMA_CM_EVENT_CONNECT_REQUEST => CmEventKind::ConnectRequest,
            sys::RDMA_CM_EVENT_CONNECT_RESPONSE => CmEventKind::ConnectResponse,
            sys::RDMA_CM_EVENT_CONNECT_ERROR => CmEventKind::ConnectError,
            sys::RDMA_CM_EVENT_UNREACHABLE => CmEventKind::Unreachable,
            sys::RDMA_CM_EVENT_REJECTED => CmEventKind::Rejected,
            sys::RDMA_CM_EVENT_ESTABLISHED => CmEventKind::Established,
            sys::RDMA_CM_EVENT_DISCONNECTED => CmEventKind::Disconnected,
            sys::RDMA_CM_EVENT_DEVICE_REMOVAL => CmEventKind::DeviceRemoval,
            sys::RDMA_CM_EVENT_TIMEWAIT_EXIT => CmEventKind::TimewaitExit,
            sys::RDMA_CM_EVENT_ADDR_CHANGE => CmEventKind::AddrChange,
            other => CmEventKind::Other(other),
        }
    }

    fn to_raw(self) -> u32 {
        match self {
            CmEventKind::AddrResolved => sys::RDMA_CM_EVENT_ADDR_RESOLVED,
            CmEventKind::AddrError => sys::RDMA_CM_EVENT_ADDR_ERROR,
            CmEventKind::RouteResolved => sys::RDMA_CM_EVENT_ROUTE_RESOLVED,
            CmEventKind::RouteError => sys::RDMA_CM_EVENT_ROUTE_ERROR,
            CmEventKind::ConnectRequest => sys::RDMA_CM_EVENT_CONNECT_REQUEST,
            CmEventKind::ConnectResponse => sys::RDMA_CM_EVENT_CONNECT_RESPONSE,
            CmEventKind::ConnectError => sys::RDMA_CM_EVENT_CONNECT_ERROR,
            CmEventKind::Unreachable => sys::RDMA_CM_EVENT_UNREACHABLE,
            CmEventKind::Rejected => sys::RDMA_CM_EVENT_REJECTED,
            CmEventKind::Established => sys::RDMA_CM_EVENT_ESTABLISHED,
            CmEventKind::Disconnected => sys::RDMA_CM_EVENT_DISCONNECTED,
            CmEventKind::DeviceRemoval => sys::RDMA_CM_EVENT_DEVICE_REMOVAL,
            CmEventKind::TimewaitExit => sys::RDMA_CM_EVENT_TIMEWAIT_EXIT,
            CmEventKind::AddrChange => sys::RDMA_CM_EVENT_ADDR_CHANGE,
            CmEventKind::Other(raw) => raw,
        }
    }

    /// librdmacm's name for it (`rdma_event_str`), e.g. `RDMA_CM_EVENT_ESTABLISHED`.
    pub fn name(self) -> &'static str {
        // SAFETY: rdma_event_str accepts any value and returns a static string.
        let text = unsafe { sys::rdma_event_str(self.to_raw()) };
        if text.is_null() {
            return "UNKNOWN EVENT";
        }
        // SAFETY: non-null, static and NUL-terminated.
        unsafe { CStr::from_ptr(text) }
            .to_str()
            .unwrap_or("UNKNOWN EVENT")
    }
}

/// Private data carried by a connection event, copied out of it.
#[derive(Clone, Copy)]
pub struct PrivateData {
    bytes: [u8; PRIVATE_DATA_BYTES_MAX],
    len: usize,
}

impl PrivateData {
    fn empty() -> PrivateData {
        PrivateData {
            bytes: [0; PRIVATE_DATA_BYTES_MAX],
            len: 0,
        }
    }

    /// The bytes. On InfiniBand/RoCE the transport pads private data to its
    /// maximum, so this may be longer than what the peer sent: carry a length
    /// or a fixed layout inside.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

impl fmt::Debug for PrivateData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PrivateData({} bytes)", self.len)
    }
}

/// One event, copied out of librdmacm and acknowledged already.
#[derive(Debug)]
pub struct CmEvent {
    /// What happened.
    pub kind: CmEventKind,
    /// 0, or a negative errno / a transport reason (REJECTED: the reject reason).
    pub status: i32,
    /// The token of the id the event is about (a connect request's: its
    /// listener's, inherited).
    pub token: u64,
    /// Private data of CONNECT_REQUEST, ESTABLISHED (active side), REJECTED.
    pub private_data: PrivateData,
    /// CONNECT_REQUEST only: the new id, now owned by the receiver of the event.
    /// Accept or reject it; dropping it destroys it (a peer then times out).
    pub request: Option<CmId>,
    /// CONNECT_REQUEST only: the peer's address.
    pub peer: Option<SocketAddr>,
    /// CONNECT_REQUEST: RDMA READs the peer will have outstanding towards us
    /// (its initiator depth); ESTABLISHED: what was agreed.
    pub initiator_depth: u8,
    /// CONNECT_REQUEST: READs the peer serves in parallel (its responder resources).
    pub responder_resources: u8,
}

impl EventChannel {
    /// A new channel (`rdma_create_event_channel`). On a host without RDMA:
    /// [`VerbsError::NoRdmaSubsystem`].
    pub fn new() -> Result<EventChannel, VerbsError> {
        // SAFETY: no arguments; NULL on failure.
        let raw = unsafe { sys::rdma_create_event_channel() };
        let Some(raw) = NonNull::new(raw) else {
            if !rdma_subsystem_present() {
                return Err(VerbsError::NoRdmaSubsystem);
            }
            return Err(VerbsError::from_errno("rdma_create_event_channel"));
        };
        Ok(EventChannel {
            inner: Arc::new(ChannelInner { raw }),
            _not_sync: PhantomData,
        })
    }

    /// The channel's file descriptor (readable when an event waits).
    pub fn fd(&self) -> i32 {
        // SAFETY: raw is a live channel; fd is set at creation and never changes.
        unsafe { (*self.inner.raw.as_ptr()).fd }
    }

    /// A new RC id (`RDMA_PS_TCP`) on this channel, carrying `token`.
    pub fn create_id(&self, token: u64) -> Result<CmId, VerbsError> {
        let mut raw = std::ptr::null_mut();
        // SAFETY: the channel is live; raw is a valid out-pointer. The context is
        // an integer token stored as a pointer, never dereferenced.
        let ret = unsafe {
            sys::rdma_create_id(
                self.inner.raw.as_ptr(),
                &mut raw,
                token as usize as *mut libc::c_void,
                sys::RDMA_PS_TCP,
            )
        };
        check("rdma_create_id", ret)?;
        let raw = NonNull::new(raw).ok_or_else(|| VerbsError::call("rdma_create_id", libc::EIO))?;
        Ok(CmId::wrap(raw, &self.inner))
    }

    /// Waits up to `timeout` for the next event; `Ok(None)` when none came (or a
    /// signal interrupted the wait). The event is acknowledged before it is
    /// returned: what it carries is copied.
    pub fn next_event(&self, timeout: Duration) -> Result<Option<CmEvent>, VerbsError> {
        let mut pfd = libc::pollfd {
            fd: self.fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let timeout_ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: pfd is one valid pollfd.
        let ready = unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
        if ready < 0 {
            let e = errno();
            if e == libc::EINTR {
                return Ok(None);
            }
            return Err(VerbsError::call("poll(rdma event channel)", e));
        }
        if ready == 0 {
            return Ok(None);
        }
        let mut event = std::ptr::null_mut();
        // SAFETY: the channel is live; event is a valid out-pointer. An event is
        // ready, so this does not block for long.
        let ret = unsafe { sys::rdma_get_cm_event(self.inner.raw.as_ptr(), &mut event) };
        check("rdma_get_cm_event", ret)?;
        let event =
            NonNull::new(event).ok_or_else(|| VerbsError::call("rdma_get_cm_event", libc::EIO))?;
        // SAFETY: event is a live event until acked below; everything is copied
        // out of it first.
        let copied = unsafe { self.copy_event(event) };
        // SAFETY: acked exactly once; nothing refers to the event afterwards.
        let ret = unsafe { sys::rdma_ack_cm_event(event.as_ptr()) };
        check("rdma_ack_cm_event", ret)?;
        Ok(Some(copied))
    }

    /// # Safety
    /// `event` is a live (not yet acknowledged) event of this channel.
    unsafe fn copy_event(&self, event: NonNull<sys::rdma_cm_event>) -> CmEvent {
        // SAFETY: per the contract the event is live; it is plain data.
        let ev = unsafe { *event.as_ptr() };
        let kind = CmEventKind::from_raw(ev.event);
        // SAFETY: every connected-mode event's param is `conn` (UD events are not
        // produced on RDMA_PS_TCP ids); a plain struct of integers and a pointer.
        let conn = unsafe { ev.param.conn };
        let mut private_data = PrivateData::empty();
        if !conn.private_data.is_null() && conn.private_data_len > 0 {
            let len = usize::from(conn.private_data_len).min(PRIVATE_DATA_BYTES_MAX);
            // SAFETY: librdmacm holds private_data_len bytes there until the ack.
            let src = unsafe { std::slice::from_raw_parts(conn.private_data.cast::<u8>(), len) };
            private_data.bytes[..len].copy_from_slice(src);
            private_data.len = len;
        }
        let token = if ev.id.is_null() {
            0
        } else {
            // SAFETY: event ids are live until the ack (an id cannot be destroyed
            // while one of its events is unacknowledged).
            unsafe { load_token(ev.id) }
        };
        let (request, peer) = match (kind, NonNull::new(ev.id)) {
            (CmEventKind::ConnectRequest, Some(id)) => {
                // SAFETY: a connect request's id is new and ours from now on; its
                // route holds the peer's address, written before the event.
                let peer = unsafe { sockaddr_to_std(dst_addr_ptr(id.as_ptr())) };
                (Some(CmId::wrap(id, &self.inner)), peer)
            }
            _ => (None, None),
        };
        CmEvent {
            kind,
            status: ev.status,
            token,
            private_data,
            request,
            peer,
            initiator_depth: conn.initiator_depth,
            responder_resources: conn.responder_resources,
        }
    }
}

/// # Safety
/// `id` is a live id.
unsafe fn load_token(id: *mut sys::rdma_cm_id) -> u64 {
    // SAFETY: the context field is a properly aligned pointer-sized field of a
    // live id; it is only ever accessed atomically by this module after creation.
    let slot = unsafe { AtomicPtr::from_ptr(std::ptr::addr_of_mut!((*id).context)) };
    slot.load(Ordering::Acquire) as usize as u64
}

/// # Safety
/// `id` is a live id.
unsafe fn dst_addr_ptr(id: *mut sys::rdma_cm_id) -> *const sys::sockaddr {
    // SAFETY: a field address inside the live id (rdma_get_peer_addr's body).
    unsafe { std::ptr::addr_of!((*id).route.addr.__bindgen_anon_2.dst_addr) }
}

/// # Safety
/// `sa` points to a sockaddr at least as large as its family says.
unsafe fn sockaddr_to_std(sa: *const sys::sockaddr) -> Option<SocketAddr> {
    // SAFETY: reading the family of a valid sockaddr.
    let family = i32::from(unsafe { (*sa).sa_family });
    match family {
        libc::AF_INET => {
            // SAFETY: AF_INET: the storage holds a sockaddr_in.
            let sin = unsafe { *sa.cast::<libc::sockaddr_in>() };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)),
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: AF_INET6: the storage holds a sockaddr_in6.
            let sin6 = unsafe { *sa.cast::<libc::sockaddr_in6>() };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// A socket address in C layout, for librdmacm's `struct sockaddr *` arguments.
#[repr(C)]
union SockAddr {
    v4: libc::sockaddr_in,
    v6: libc::sockaddr_in6,
}

impl SockAddr {
    fn new(addr: SocketAddr) -> SockAddr {
        match addr {
            SocketAddr::V4(a) => SockAddr {
                v4: libc::sockaddr_in {
                    sin_family: libc::AF_INET as libc::sa_family_t,
                    sin_port: a.port().to_be(),
                    sin_addr: libc::in_addr {
                        s_addr: u32::from(*a.ip()).to_be(),
                    },
                    sin_zero: [0; 8],
                },
            },
            SocketAddr::V6(a) => SockAddr {
                v6: libc::sockaddr_in6 {
                    sin6_family: libc::AF_INET6 as libc::sa_family_t,
                    sin6_port: a.port().to_be(),
                    sin6_flowinfo: a.flowinfo(),
                    sin6_addr: libc::in6_addr {
                        s6_addr: a.ip().octets(),
                    },
                    sin6_scope_id: a.scope_id(),
                },
            },
        }
    }

    fn as_mut_ptr(&mut self) -> *mut sys::sockaddr {
        (self as *mut SockAddr).cast()
    }
}

/// The PD and CQs of an id's QP: kept until the QP is destroyed (with the id).
struct QpParents {
    _pd: Arc<PdInner>,
    _send_cq: Arc<CqInner>,
    _recv_cq: Arc<CqInner>,
}

pub(crate) struct CmIdInner {
    raw: NonNull<sys::rdma_cm_id>,
    /// Set once a QP was created on the id.
    qp: OnceLock<QpParents>,
    _channel: Arc<ChannelInner>,
}

// SAFETY: librdmacm ids may be used from any thread; the fields this module
// reads without librdmacm (context) are accessed atomically; the id is
// destroyed once, in Drop, when no handle is left.
unsafe impl Send for CmIdInner {}
// SAFETY: as above: shared handles (QueuePair) never touch the id; CmId methods
// go through librdmacm, which serializes its own state.
unsafe impl Sync for CmIdInner {}

impl Drop for CmIdInner {
    fn drop(&mut self) {
        if self.qp.get().is_some() {
            // SAFETY: the id is live and has a QP that no handle uses any more
            // (QueuePair handles hold an Arc to this).
            unsafe { sys::rdma_destroy_qp(self.raw.as_ptr()) };
        }
        // SAFETY: the id is live, destroyed once; its events are acknowledged as
        // soon as they are read (EventChannel::next_event), so this does not
        // wait for one.
        let ret = unsafe { sys::rdma_destroy_id(self.raw.as_ptr()) };
        debug_assert_eq!(ret, 0, "rdma_destroy_id");
    }
}

/// A connection-manager id (`rdma_cm_id`, RC port space): a listener, or one
/// connection. Dropping it (and every [`QueuePair`] made on it) disconnects
/// abruptly and destroys it. Used by one thread at a time (`!Sync`).
pub struct CmId {
    inner: Arc<CmIdInner>,
    _not_sync: PhantomData<Cell<()>>,
}

impl fmt::Debug for CmId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CmId")
            .field("token", &self.token())
            .field("has_qp", &self.inner.qp.get().is_some())
            .finish()
    }
}

/// Parameters of [`CmId::connect`] and [`CmId::accept`].
#[derive(Debug, Clone, Copy)]
pub struct ConnParams<'a> {
    /// At most [`CONNECT_PRIVATE_DATA_BYTES_MAX`] (connect) or
    /// [`ACCEPT_PRIVATE_DATA_BYTES_MAX`] (accept) bytes for the peer.
    pub private_data: &'a [u8],
    /// RDMA READs this side serves in parallel; 255: the device's maximum.
    pub responder_resources: u8,
    /// RDMA READs this side keeps outstanding; 255: the device's maximum.
    pub initiator_depth: u8,
    /// Transport retries (0..=7).
    pub retry_count: u8,
    /// Receiver-not-ready retries (7: forever).
    pub rnr_retry_count: u8,
}

impl Default for ConnParams<'_> {
    fn default() -> Self {
        ConnParams {
            private_data: &[],
            responder_resources: sys::RDMA_MAX_RESP_RES as u8,
            initiator_depth: sys::RDMA_MAX_INIT_DEPTH as u8,
            retry_count: 7,
            rnr_retry_count: 7,
        }
    }
}

impl ConnParams<'_> {
    fn to_raw(self, limit: usize, what: &'static str) -> Result<sys::rdma_conn_param, VerbsError> {
        if self.private_data.len() > limit {
            return Err(VerbsError::invalid(
                what,
                format!(
                    "{} bytes of private data, at most {limit}",
                    self.private_data.len()
                ),
            ));
        }
        if self.retry_count > 7 || self.rnr_retry_count > 7 {
            return Err(VerbsError::invalid(what, "retry counts are 0..=7"));
        }
        Ok(sys::rdma_conn_param {
            private_data: if self.private_data.is_empty() {
                std::ptr::null()
            } else {
                self.private_data.as_ptr().cast()
            },
            private_data_len: self.private_data.len() as u8,
            responder_resources: self.responder_resources,
            initiator_depth: self.initiator_depth,
            flow_control: 1,
            retry_count: self.retry_count,
            rnr_retry_count: self.rnr_retry_count,
            srq: 0,
            qp_num: 0,
        })
    }
}

fn timeout_ms(timeout: Duration) -> i32 {
    i32::try_from(timeout.as_millis())
        .unwrap_or(i32::MAX)
        .max(1)
}

impl CmId {
    fn wrap(raw: NonNull<sys::rdma_cm_id>, channel: &Arc<ChannelInner>) -> CmId {
        CmId {
            inner: Arc::new(CmIdInner {
                raw,
                qp: OnceLock::new(),
                _channel: Arc::clone(channel),
            }),
            _not_sync: PhantomData,
        }
    }

    fn raw(&self) -> *mut sys::rdma_cm_id {
        self.inner.raw.as_ptr()
    }

    /// The caller's token for this id (events carry it).
    pub fn token(&self) -> u64 {
        // SAFETY: the id is live while self is.
        unsafe { load_token(self.raw()) }
    }

    /// Gives the id a new token (a connect request's id starts with its
    /// listener's); events read after this carry it.
    pub fn set_token(&self, token: u64) {
        // SAFETY: the id is live; the context field is only accessed atomically
        // by this module (librdmacm reads it when it copies a listener's token
        // into a new request id, and never writes it after creation).
        let slot = unsafe { AtomicPtr::from_ptr(std::ptr::addr_of_mut!((*self.raw()).context)) };
        slot.store(token as usize as *mut libc::c_void, Ordering::Release);
    }

    /// Sets `SO_REUSEADDR`-like reuse of the address (a restarted listener need
    /// not wait for old connections' time-wait).
    pub fn set_reuse_addr(&self) -> Result<(), VerbsError> {
        let mut on: i32 = 1;
        // SAFETY: the id is live; optval points to an int of optlen bytes.
        let ret = unsafe {
            sys::rdma_set_option(
                self.raw(),
                sys::RDMA_OPTION_ID as i32,
                sys::RDMA_OPTION_ID_REUSEADDR as i32,
                (&mut on as *mut i32).cast(),
                std::mem::size_of::<i32>(),
            )
        };
        check("rdma_set_option(REUSEADDR)", ret)
    }

    /// Binds to a local address (`rdma_bind_addr`); an address of an RDMA
    /// device's net device also binds the id to that device ([`CmId::context`]).
    pub fn bind(&self, addr: SocketAddr) -> Result<(), VerbsError> {
        let mut sa = SockAddr::new(addr);
        // SAFETY: the id is live; sa is a valid sockaddr of its family's size.
        let ret = unsafe { sys::rdma_bind_addr(self.raw(), sa.as_mut_ptr()) };
        check("rdma_bind_addr", ret)
    }

    /// Listens for connect requests (`rdma_listen`); they arrive as
    /// CONNECT_REQUEST events on the channel.
    pub fn listen(&self, backlog: i32) -> Result<(), VerbsError> {
        // SAFETY: the id is live and bound.
        let ret = unsafe { sys::rdma_listen(self.raw(), backlog) };
        check("rdma_listen", ret)
    }

    /// Starts resolving `dst` to a device and path (ADDR_RESOLVED or ADDR_ERROR
    /// follows on the channel).
    pub fn resolve_addr(&self, dst: SocketAddr, timeout: Duration) -> Result<(), VerbsError> {
        let mut sa = SockAddr::new(dst);
        // SAFETY: the id is live; sa is a valid sockaddr; no source address.
        let ret = unsafe {
            sys::rdma_resolve_addr(
                self.raw(),
                std::ptr::null_mut(),
                sa.as_mut_ptr(),
                timeout_ms(timeout),
            )
        };
        check("rdma_resolve_addr", ret)
    }

    /// Starts resolving the route (ROUTE_RESOLVED or ROUTE_ERROR follows).
    pub fn resolve_route(&self, timeout: Duration) -> Result<(), VerbsError> {
        // SAFETY: the id is live with a resolved address.
        let ret = unsafe { sys::rdma_resolve_route(self.raw(), timeout_ms(timeout)) };
        check("rdma_resolve_route", ret)
    }

    /// The device the id is bound to (after [`CmId::bind`] to a device's address,
    /// address resolution, or for a connect request's id). Its PDs, CQs and
    /// memory regions work with this id's QP.
    pub fn context(&self) -> Result<Context, VerbsError> {
        // SAFETY: the id is live; verbs is set by librdmacm when the id binds to
        // a device and not changed afterwards.
        let verbs = unsafe { (*self.raw()).verbs };
        let verbs = NonNull::new(verbs).ok_or_else(|| {
            VerbsError::invalid(
                "cm id",
                "not bound to an RDMA device: bind it to the address of an RDMA device's \
                 net device (0.0.0.0 binds to none), or resolve an address first",
            )
        })?;
        let refs = Arc::new(CmDeviceRefs::take()?);
        if !refs.contains(verbs.as_ptr()) {
            return Err(VerbsError::invalid(
                "cm id",
                "its device is not among librdmacm's devices (removed?)",
            ));
        }
        // SAFETY: verbs is in the list refs holds.
        Ok(unsafe { Context::from_cm(verbs, refs) })
    }

    /// The port of the device the id is bound to (from 1).
    pub fn port_num(&self) -> u8 {
        // SAFETY: the id is live; port_num is written by librdmacm on binding.
        unsafe { (*self.raw()).port_num }
    }

    /// Creates the id's RC queue pair in `pd` (`rdma_create_qp`): the connection
    /// manager moves it to INIT now (receives may be posted) and to RTR/RTS on
    /// connect/accept. One QP per id. `pd` and the CQs must belong to the id's
    /// device ([`CmId::context`]).
    pub fn create_qp(
        &self,
        pd: &ProtectionDomain,
        send_cq: &CompletionQueue,
        recv_cq: &CompletionQueue,
        caps: QpCaps,
    ) -> Result<QueuePair, VerbsError> {
        if self.inner.qp.get().is_some() {
            return Err(VerbsError::invalid("cm id", "it has a QP already"));
        }
        let mut init = rc_init_attr(send_cq, recv_cq, caps);
        // SAFETY: the id is live; pd and the CQs are live (librdmacm refuses a PD of
        // another device with EINVAL); init is a valid attribute set.
        let ret = unsafe { sys::rdma_create_qp(self.raw(), pd.inner.raw.as_ptr(), &mut init) };
        check("rdma_create_qp", ret)?;
        // SAFETY: on success librdmacm stored the new QP in the id.
        let qp = unsafe { (*self.raw()).qp };
        let qp = NonNull::new(qp).ok_or_else(|| VerbsError::call("rdma_create_qp", libc::EIO))?;
        let parents = QpParents {
            _pd: Arc::clone(&pd.inner),
            _send_cq: Arc::clone(&send_cq.inner),
            _recv_cq: Arc::clone(&recv_cq.inner),
        };
        if self.inner.qp.set(parents).is_err() {
            unreachable!("checked above, and CmId is not Sync");
        }
        Ok(QueuePair::from_cm(
            qp,
            QpCaps::from_raw(init.cap),
            Arc::clone(&self.inner),
            pd,
            send_cq,
            recv_cq,
        ))
    }

    /// Sets the receiver-not-ready timer of the id's QP once connected (see
    /// [`QueuePair::set_min_rnr_timer`]): the connection manager leaves it at 655 ms.
    pub fn set_min_rnr_timer(&self, code: u8) -> Result<(), VerbsError> {
        if self.inner.qp.get().is_none() {
            return Err(VerbsError::invalid("cm id", "it has no QP"));
        }
        // SAFETY: the id is live and has a QP (checked), which lives as long as the id.
        let qp = unsafe { (*self.raw()).qp };
        // SAFETY: qp is the id's live QP.
        unsafe { super::qp::modify_min_rnr_timer(qp, code) }
    }

    /// Destroys the id and its QP now (`rdma_destroy_qp`, `rdma_destroy_id`), given the
    /// QP's handle: the proof that follows lets buffers still posted to it (a device that
    /// did not flush them) be reclaimed. Both come back unchanged when `qp` is not this
    /// id's QP, or when another handle to the id exists.
    #[allow(clippy::result_large_err)]
    pub fn destroy(self, qp: QueuePair) -> Result<DestroyedQp, (CmId, QueuePair)> {
        // The id's handles are this one and its QP's (CmId is not Clone, one QP per id).
        if !qp.belongs_to(&self.inner) || Arc::strong_count(&self.inner) != 2 {
            return Err((self, qp));
        }
        let qp_num = qp.qp_num();
        drop(qp);
        // The last handle: CmIdInner's Drop destroys the QP, then the id.
        drop(self);
        Ok(DestroyedQp::new(qp_num))
    }

    /// Connects (active side, after ROUTE_RESOLVED and [`CmId::create_qp`]):
    /// ESTABLISHED, REJECTED, UNREACHABLE or CONNECT_ERROR follows.
    pub fn connect(&self, params: &ConnParams<'_>) -> Result<(), VerbsError> {
        let mut raw = params.to_raw(CONNECT_PRIVATE_DATA_BYTES_MAX, "connect parameters")?;
        // SAFETY: the id is live; raw is valid and its private data outlives the call.
        let ret = unsafe { sys::rdma_connect(self.raw(), &mut raw) };
        check("rdma_connect", ret)
    }

    /// Accepts a connect request's id (after [`CmId::create_qp`] and posting
    /// receives): ESTABLISHED (or CONNECT_ERROR) follows for this id.
    pub fn accept(&self, params: &ConnParams<'_>) -> Result<(), VerbsError> {
        let mut raw = params.to_raw(ACCEPT_PRIVATE_DATA_BYTES_MAX, "accept parameters")?;
        // SAFETY: the id is live; raw is valid and its private data outlives the call.
        let ret = unsafe { sys::rdma_accept(self.raw(), &mut raw) };
        check("rdma_accept", ret)
    }

    /// Rejects a connect request's id, telling the peer why in `private_data`
    /// (at most [`CONNECT_PRIVATE_DATA_BYTES_MAX`] bytes reach it reliably).
    pub fn reject(&self, private_data: &[u8]) -> Result<(), VerbsError> {
        let len = u8::try_from(private_data.len())
            .map_err(|_| VerbsError::invalid("reject private data", "at most 255 bytes"))?;
        let ptr = if private_data.is_empty() {
            std::ptr::null()
        } else {
            private_data.as_ptr().cast()
        };
        // SAFETY: the id is live; ptr/len describe a valid buffer (or none).
        let ret = unsafe { sys::rdma_reject(self.raw(), ptr, len) };
        check("rdma_reject", ret)
    }

    /// Disconnects (`rdma_disconnect`): the QP goes to the error state (every
    /// outstanding work request completes with a flush error) and the peer gets
    /// DISCONNECTED; so does this side.
    pub fn disconnect(&self) -> Result<(), VerbsError> {
        // SAFETY: the id is live.
        let ret = unsafe { sys::rdma_disconnect(self.raw()) };
        check("rdma_disconnect", ret)
    }
}
