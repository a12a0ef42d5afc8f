//! Devices ([`devices`], [`DeviceInfo`]), the opened device ([`Context`]) and its
//! port / GID queries.

use std::ffi::{CStr, CString};
use std::fmt;
use std::path::Path;
use std::ptr::NonNull;
use std::sync::Arc;

use super::error::{check, errno, VerbsError};
use super::sys;

/// One RDMA device as listed by `ibv_get_device_list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    /// Kernel name, e.g. `rxe0`, `mlx5_0`.
    pub name: String,
    /// Node GUID, host byte order.
    pub guid: u64,
    /// `ibv_node_type_str`, e.g. `InfiniBand channel adapter`.
    pub node_type: String,
}

/// True when this kernel exposes an RDMA subsystem (`/sys/class/infiniband`).
pub fn rdma_subsystem_present() -> bool {
    Path::new("/sys/class/infiniband").exists()
}

/// `ibv_get_device_list`, freed on drop.
struct DeviceList {
    list: *mut *mut sys::ibv_device,
    len: usize,
}

impl DeviceList {
    /// The devices; an empty list when the kernel has no RDMA (NULL with
    /// ENOSYS or ENOENT).
    fn get() -> Result<DeviceList, VerbsError> {
        let mut n: i32 = 0;
        // SAFETY: n is a valid out-pointer; the result is NULL or a list that
        // we free in Drop.
        let list = unsafe { sys::ibv_get_device_list(&mut n) };
        if list.is_null() {
            let e = errno();
            return match e {
                libc::ENOSYS | libc::ENOENT => Ok(DeviceList { list, len: 0 }),
                0 => Err(VerbsError::call("ibv_get_device_list", libc::EIO)),
                e => Err(VerbsError::call("ibv_get_device_list", e)),
            };
        }
        Ok(DeviceList {
            list,
            len: usize::try_from(n).unwrap_or(0),
        })
    }

    fn iter(&self) -> impl Iterator<Item = *mut sys::ibv_device> + '_ {
        (0..self.len).map(move |i| {
            // SAFETY: list holds `len` device pointers (plus a NULL terminator).
            unsafe { *self.list.add(i) }
        })
    }
}

impl Drop for DeviceList {
    fn drop(&mut self) {
        if !self.list.is_null() {
            // SAFETY: list came from ibv_get_device_list and is freed once; opened
            // contexts stay valid after the list is freed (ibv_get_device_list(3)).
            unsafe { sys::ibv_free_device_list(self.list) };
        }
    }
}

/// # Safety
/// `dev` is a device of a live device list, or of an open context.
unsafe fn device_name(dev: *mut sys::ibv_device) -> String {
    // SAFETY: per the contract, dev is valid; the name is NUL-terminated inside it.
    let name = unsafe { sys::ibv_get_device_name(dev) };
    if name.is_null() {
        return String::new();
    }
    // SAFETY: non-null NUL-terminated string owned by the device.
    unsafe { CStr::from_ptr(name) }
        .to_string_lossy()
        .into_owned()
}

/// The RDMA devices of this host. A kernel without an RDMA subsystem yields
/// `Ok(vec![])` (ibv_get_device_list fails with ENOSYS there); use
/// [`require_devices`] for an error that says so.
pub fn devices() -> Result<Vec<DeviceInfo>, VerbsError> {
    let list = DeviceList::get()?;
    Ok(list
        .iter()
        .map(|dev| {
            // SAFETY: dev is an entry of the live list.
            let name = unsafe { device_name(dev) };
            // SAFETY: as above; returns the GUID in network byte order.
            let guid = u64::from_be(unsafe { sys::ibv_get_device_guid(dev) });
            // SAFETY: dev is valid, so reading its node_type field is too.
            let node = unsafe { (*dev).node_type };
            // SAFETY: ibv_node_type_str accepts any value and returns a static string.
            let node_type = unsafe { CStr::from_ptr(sys::ibv_node_type_str(node)) }
                .to_string_lossy()
                .into_owned();
            DeviceInfo {
                name,
                guid,
                node_type,
            }
        })
        .collect())
}

/// Like [`devices`], but an empty result is an error saying why:
/// [`VerbsError::NoRdmaSubsystem`] or [`VerbsError::NoDevices`].
pub fn require_devices() -> Result<Vec<DeviceInfo>, VerbsError> {
    let devs = devices()?;
    if !devs.is_empty() {
        Ok(devs)
    } else if rdma_subsystem_present() {
        Err(VerbsError::NoDevices)
    } else {
        Err(VerbsError::NoRdmaSubsystem)
    }
}

/// A 128-bit GID (for RoCE: an IPv6 or IPv4-mapped address of the port).
#[derive(Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Gid(pub [u8; 16]);

impl Gid {
    /// All zeros: an empty GID table slot (or no GID, on InfiniBand with LIDs).
    pub fn is_zero(&self) -> bool {
        self.0 == [0; 16]
    }

    pub(crate) fn to_raw(self) -> sys::ibv_gid {
        sys::ibv_gid { raw: self.0 }
    }
}

impl fmt::Display for Gid {
    /// Eight colon-separated groups of four hex digits (as `ibv_devinfo -v`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, pair) in self.0.chunks(2).enumerate() {
            if i > 0 {
                f.write_str(":")?;
            }
            write!(f, "{:02x}{:02x}", pair[0], pair[1])?;
        }
        Ok(())
    }
}

impl fmt::Debug for Gid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Gid({self})")
    }
}

/// Path MTU (`ibv_mtu`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Mtu {
    /// 256 bytes.
    M256,
    /// 512 bytes.
    M512,
    /// 1024 bytes (soft-RoCE on a 1500-byte Ethernet MTU).
    M1024,
    /// 2048 bytes.
    M2048,
    /// 4096 bytes.
    M4096,
}

impl Mtu {
    /// From an `ibv_mtu` value; out-of-range values clamp to the nearest end.
    pub fn from_raw(raw: u32) -> Mtu {
        match raw {
            0..=1 => Mtu::M256,
            2 => Mtu::M512,
            3 => Mtu::M1024,
            4 => Mtu::M2048,
            _ => Mtu::M4096,
        }
    }

    pub(crate) fn to_raw(self) -> sys::ibv_mtu {
        match self {
            Mtu::M256 => sys::IBV_MTU_256,
            Mtu::M512 => sys::IBV_MTU_512,
            Mtu::M1024 => sys::IBV_MTU_1024,
            Mtu::M2048 => sys::IBV_MTU_2048,
            Mtu::M4096 => sys::IBV_MTU_4096,
        }
    }

    /// The MTU in bytes.
    pub fn bytes(self) -> u32 {
        256 << (self as u32)
    }
}

/// Link layer of a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkLayer {
    /// InfiniBand: addressed by LID (GID optional).
    InfiniBand,
    /// RoCE / iWARP: addressed by GID (LID is 0).
    Ethernet,
    /// Unspecified or unknown (value kept).
    Other(u8),
}

/// Port properties (`ibv_query_port`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortAttr {
    /// `ibv_port_state` (4 = ACTIVE).
    pub state: u32,
    /// Largest MTU the port supports.
    pub max_mtu: Mtu,
    /// MTU in use on the link.
    pub active_mtu: Mtu,
    /// Local identifier (InfiniBand; 0 on RoCE).
    pub lid: u16,
    /// Entries of the GID table.
    pub gid_tbl_len: i32,
    /// Largest message size.
    pub max_msg_sz: u32,
    /// InfiniBand or Ethernet (RoCE).
    pub link_layer: LinkLayer,
}

impl PortAttr {
    /// The port is ACTIVE (can carry traffic).
    pub fn is_active(&self) -> bool {
        self.state == sys::IBV_PORT_ACTIVE
    }
}

/// Device limits (`ibv_query_device`), the ones this layer's callers size with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceAttr {
    /// Number of physical ports (numbered from 1).
    pub phys_port_cnt: u8,
    /// Largest work queue.
    pub max_qp_wr: i32,
    /// Most scatter/gather entries per work request.
    pub max_sge: i32,
    /// Largest completion queue.
    pub max_cqe: i32,
    /// Largest memory registration, bytes.
    pub max_mr_size: u64,
    /// Most RDMA READs/atomics a QP may have outstanding as responder.
    pub max_qp_rd_atom: i32,
    /// Most RDMA READs/atomics a QP may have outstanding as initiator.
    pub max_qp_init_rd_atom: i32,
}

pub(crate) struct ContextInner {
    pub(crate) raw: NonNull<sys::ibv_context>,
    name: String,
    owner: ContextOwner,
}

/// Who closes a device context.
pub(crate) enum ContextOwner {
    /// Opened by [`Context::open`]: closed with `ibv_close_device` on drop.
    Opened,
    /// librdmacm's context of a connection-manager id: librdmacm keeps it open while
    /// the reference taken through `rdma_get_devices` (held here) lives.
    Cm(#[allow(dead_code)] Arc<super::cm::CmDeviceRefs>),
}

// SAFETY: libibverbs contexts are thread-safe (verbs may be called from any
// thread; providers lock internally). The pointer is only closed in Drop.
unsafe impl Send for ContextInner {}
// SAFETY: as above: every method takes &self and is thread-safe in libibverbs.
unsafe impl Sync for ContextInner {}

impl Drop for ContextInner {
    fn drop(&mut self) {
        if !matches!(self.owner, ContextOwner::Opened) {
            // librdmacm's: released with the device reference (rdma_free_devices).
            return;
        }
        // SAFETY: raw is an open context we opened, and no PD/CQ/QP holds it any
        // more (they keep an Arc to this). Failure is not actionable here.
        let ret = unsafe { sys::ibv_close_device(self.raw.as_ptr()) };
        debug_assert_eq!(ret, 0, "ibv_close_device");
    }
}

/// An opened RDMA device (`ibv_open_device`). Cloning shares it; it is closed
/// when the last clone and the last object made from it are dropped.
#[derive(Clone)]
pub struct Context {
    pub(crate) inner: Arc<ContextInner>,
}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("name", &self.inner.name)
            .finish()
    }
}

impl Context {
    /// Opens the device named `name` (e.g. `rxe0`).
    pub fn open(name: &str) -> Result<Context, VerbsError> {
        if CString::new(name).is_err() {
            return Err(VerbsError::invalid(
                "device name",
                format!("{name:?} has a NUL"),
            ));
        }
        let list = DeviceList::get()?;
        let mut available = Vec::new();
        for dev in list.iter() {
            // SAFETY: dev is an entry of the live list.
            let dev_name = unsafe { device_name(dev) };
            if dev_name == name {
                // SAFETY: dev is a valid device of the live list; the context
                // stays valid after the list is freed.
                let raw = unsafe { sys::ibv_open_device(dev) };
                let raw =
                    NonNull::new(raw).ok_or_else(|| VerbsError::from_errno("ibv_open_device"))?;
                return Ok(Context {
                    inner: Arc::new(ContextInner {
                        raw,
                        name: name.to_owned(),
                        owner: ContextOwner::Opened,
                    }),
                });
            }
            available.push(dev_name);
        }
        if available.is_empty() {
            return Err(if rdma_subsystem_present() {
                VerbsError::NoDevices
            } else {
                VerbsError::NoRdmaSubsystem
            });
        }
        Err(VerbsError::DeviceNotFound {
            name: name.to_owned(),
            available,
        })
    }

    /// A context librdmacm opened (a cm id's `verbs`), kept open by `refs`.
    ///
    /// # Safety
    /// `raw` is one of the contexts in the `rdma_get_devices` list `refs` holds.
    pub(crate) unsafe fn from_cm(
        raw: NonNull<sys::ibv_context>,
        refs: Arc<super::cm::CmDeviceRefs>,
    ) -> Context {
        // SAFETY: raw is an open context (caller); its device pointer is valid
        // while the context is.
        let name = unsafe { device_name((*raw.as_ptr()).device) };
        Context {
            inner: Arc::new(ContextInner {
                raw,
                name,
                owner: ContextOwner::Cm(refs),
            }),
        }
    }

    /// The device's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Port properties (ports are numbered from 1).
    pub fn port_attr(&self, port_num: u8) -> Result<PortAttr, VerbsError> {
        let mut attr = sys::ibv_port_attr::default();
        // SAFETY: raw is an open context; attr is a valid, writable ibv_port_attr
        // (the shim calls ___ibv_query_port, which passes its size).
        let ret = unsafe { sys::prc_ibv_query_port(self.inner.raw.as_ptr(), port_num, &mut attr) };
        check("ibv_query_port", ret)?;
        Ok(PortAttr {
            state: attr.state,
            max_mtu: Mtu::from_raw(attr.max_mtu),
            active_mtu: Mtu::from_raw(attr.active_mtu),
            lid: attr.lid,
            gid_tbl_len: attr.gid_tbl_len,
            max_msg_sz: attr.max_msg_sz,
            link_layer: match u32::from(attr.link_layer) {
                sys::IBV_LINK_LAYER_INFINIBAND => LinkLayer::InfiniBand,
                sys::IBV_LINK_LAYER_ETHERNET => LinkLayer::Ethernet,
                _ => LinkLayer::Other(attr.link_layer),
            },
        })
    }

    /// Entry `index` of the port's GID table (soft-RoCE: index 1 is the
    /// IPv4-mapped address of the net device).
    pub fn gid(&self, port_num: u8, index: u32) -> Result<Gid, VerbsError> {
        let index = i32::try_from(index)
            .map_err(|_| VerbsError::invalid("GID index", format!("{index} > i32::MAX")))?;
        let mut gid = sys::ibv_gid { raw: [0; 16] };
        // SAFETY: raw is an open context; gid is a valid, writable ibv_gid.
        let ret = unsafe { sys::ibv_query_gid(self.inner.raw.as_ptr(), port_num, index, &mut gid) };
        check("ibv_query_gid", ret)?;
        // SAFETY: every bit pattern of the union is a valid [u8; 16].
        Ok(Gid(unsafe { gid.raw }))
    }

    /// Device limits.
    pub fn device_attr(&self) -> Result<DeviceAttr, VerbsError> {
        let mut attr = sys::ibv_device_attr::default();
        // SAFETY: raw is an open context; attr is a valid, writable ibv_device_attr.
        let ret = unsafe { sys::ibv_query_device(self.inner.raw.as_ptr(), &mut attr) };
        check("ibv_query_device", ret)?;
        Ok(DeviceAttr {
            phys_port_cnt: attr.phys_port_cnt,
            max_qp_wr: attr.max_qp_wr,
            max_sge: attr.max_sge,
            max_cqe: attr.max_cqe,
            max_mr_size: attr.max_mr_size,
            max_qp_rd_atom: attr.max_qp_rd_atom,
            max_qp_init_rd_atom: attr.max_qp_init_rd_atom,
        })
    }
}
