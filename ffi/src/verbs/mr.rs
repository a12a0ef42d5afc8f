//! [`MemoryRegion`] (`ibv_reg_mr`), [`Access`] flags, and the scatter/gather
//! entries ([`Sge`]) work requests point with.
//!
//! Soundness model: registered memory is shared with the device, which reads
//! and writes it by DMA at times Rust cannot see (a posted receive, a remote
//! peer's RDMA WRITE or READ). So this layer never hands out `&`/`&mut`
//! references into it safely: bytes go in and out by copy ([`MemoryRegion::write`],
//! [`MemoryRegion::read`]) or through `unsafe` slices whose callers vouch that
//! no device access is in flight. Work requests name memory only by [`Sge`]s made
//! from a region, and the device checks every access against the key's
//! registration: a request that outlives its region fails with a protection
//! error instead of touching freed memory (the region is deregistered before
//! its memory is freed).

use std::alloc::Layout;
use std::fmt;
use std::ops::BitOr;
use std::ptr::NonNull;
use std::sync::Arc;

use super::error::VerbsError;
use super::pd::{PdInner, ProtectionDomain};
use super::sys;

/// Memory access rights of a registration (`ibv_access_flags`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Access(u32);

impl Access {
    /// Local reads only (sends from the region).
    pub const NONE: Access = Access(0);
    /// The device may write the region locally (receives, READ results).
    pub const LOCAL_WRITE: Access = Access(sys::IBV_ACCESS_LOCAL_WRITE);
    /// Remote peers may RDMA WRITE into the region (needs LOCAL_WRITE).
    pub const REMOTE_WRITE: Access = Access(sys::IBV_ACCESS_REMOTE_WRITE);
    /// Remote peers may RDMA READ the region.
    pub const REMOTE_READ: Access = Access(sys::IBV_ACCESS_REMOTE_READ);
    /// Remote atomics (needs LOCAL_WRITE).
    pub const REMOTE_ATOMIC: Access = Access(sys::IBV_ACCESS_REMOTE_ATOMIC);

    /// The raw `ibv_access_flags` bits.
    pub fn bits(self) -> u32 {
        self.0
    }

    /// True if every flag of `other` is set here.
    pub fn contains(self, other: Access) -> bool {
        self.0 & other.0 == other.0
    }
}

impl BitOr for Access {
    type Output = Access;
    fn bitor(self, rhs: Access) -> Access {
        Access(self.0 | rhs.0)
    }
}

/// One scatter/gather entry (`ibv_sge`): a range of a registered region with its
/// local key. Made by [`MemoryRegion::sge`]; layout-compatible with `ibv_sge`,
/// so a `&[Sge]` is handed to the device as is.
#[repr(transparent)]
#[derive(Clone, Copy)]
pub struct Sge(pub(crate) sys::ibv_sge);

impl Sge {
    /// An SGE from raw parts.
    ///
    /// # Safety
    /// `lkey` must be the local key of a registration made through this layer
    /// (or of memory that stays valid while the registration exists, see
    /// [`MemoryRegion::register_raw`]): the device writes through it.
    pub unsafe fn from_raw_parts(addr: u64, length: u32, lkey: u32) -> Sge {
        Sge(sys::ibv_sge { addr, length, lkey })
    }

    /// Start address (virtual, as registered).
    pub fn addr(&self) -> u64 {
        self.0.addr
    }

    /// Length in bytes.
    pub fn len(&self) -> u32 {
        self.0.length
    }

    /// True for a zero-length entry.
    pub fn is_empty(&self) -> bool {
        self.0.length == 0
    }

    /// Local key.
    pub fn lkey(&self) -> u32 {
        self.0.lkey
    }
}

impl fmt::Debug for Sge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sge")
            .field("addr", &format_args!("{:#x}", self.0.addr))
            .field("length", &self.0.length)
            .field("lkey", &format_args!("{:#x}", self.0.lkey))
            .finish()
    }
}

/// What a peer needs to RDMA READ/WRITE a region: address, remote key, length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemoteRegion {
    /// Start address (as registered).
    pub addr: u64,
    /// Remote key.
    pub rkey: u32,
    /// Length in bytes.
    pub len: u64,
}

impl RemoteRegion {
    /// Bytes on the wire of [`RemoteRegion::to_bytes`].
    pub const WIRE_BYTES: usize = 20;

    /// Little-endian encoding: addr, rkey, len.
    pub fn to_bytes(&self) -> [u8; Self::WIRE_BYTES] {
        let mut b = [0u8; Self::WIRE_BYTES];
        b[0..8].copy_from_slice(&self.addr.to_le_bytes());
        b[8..12].copy_from_slice(&self.rkey.to_le_bytes());
        b[12..20].copy_from_slice(&self.len.to_le_bytes());
        b
    }

    /// Decodes [`RemoteRegion::to_bytes`].
    pub fn from_bytes(b: &[u8; Self::WIRE_BYTES]) -> RemoteRegion {
        RemoteRegion {
            addr: u64::from_le_bytes(b[0..8].try_into().expect("8 bytes")),
            rkey: u32::from_le_bytes(b[8..12].try_into().expect("4 bytes")),
            len: u64::from_le_bytes(b[12..20].try_into().expect("8 bytes")),
        }
    }
}

/// Who owns the registered memory.
enum Memory {
    /// Allocated by [`MemoryRegion::alloc`]; freed after deregistration.
    Owned(Layout),
    /// Mapped by [`MemoryRegion::alloc_hugepages`] (`mmap` of this many bytes);
    /// unmapped after deregistration.
    Mapped(usize),
    /// Owned by the caller of [`MemoryRegion::register_raw`].
    Foreign,
}

/// Bytes of one huge page (x86-64's default hugetlb size).
pub const HUGE_PAGE_BYTES: usize = 2 << 20;

/// Alignment of [`MemoryRegion::alloc`] buffers: a page.
const ALLOC_ALIGN: usize = 4096;

/// A registered memory region. Dropping it deregisters it (`ibv_dereg_mr`)
/// first, then frees the memory if it owns it.
pub struct MemoryRegion {
    raw: NonNull<sys::ibv_mr>,
    ptr: NonNull<u8>,
    len: usize,
    access: Access,
    memory: Memory,
    pd: Arc<PdInner>,
}

// SAFETY: the MR handle is usable from any thread (libibverbs is thread-safe);
// the memory is reached only through raw-pointer copies (write needs &mut self)
// or unsafe accessors whose callers take on the aliasing rules.
unsafe impl Send for MemoryRegion {}
// SAFETY: &self methods only read the handle's keys or copy bytes out.
unsafe impl Sync for MemoryRegion {}

impl fmt::Debug for MemoryRegion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryRegion")
            .field("addr", &format_args!("{:#x}", self.addr()))
            .field("len", &self.len)
            .field("lkey", &format_args!("{:#x}", self.lkey()))
            .field("rkey", &format_args!("{:#x}", self.rkey()))
            .field("access", &self.access)
            .finish()
    }
}

fn check_access(access: Access) -> Result<(), VerbsError> {
    if (access.contains(Access::REMOTE_WRITE) || access.contains(Access::REMOTE_ATOMIC))
        && !access.contains(Access::LOCAL_WRITE)
    {
        return Err(VerbsError::invalid(
            "access flags",
            "REMOTE_WRITE and REMOTE_ATOMIC need LOCAL_WRITE too",
        ));
    }
    Ok(())
}

impl MemoryRegion {
    /// Allocates `len` zeroed, page-aligned bytes and registers them.
    pub fn alloc(
        pd: &ProtectionDomain,
        len: usize,
        access: Access,
    ) -> Result<MemoryRegion, VerbsError> {
        check_access(access)?;
        if len == 0 {
            return Err(VerbsError::invalid("region length", "must be > 0"));
        }
        let layout = Layout::from_size_align(len, ALLOC_ALIGN)
            .map_err(|e| VerbsError::invalid("region length", format!("{len}: {e}")))?;
        // SAFETY: layout has a non-zero size.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        let Some(ptr) = NonNull::new(ptr) else {
            std::alloc::handle_alloc_error(layout);
        };
        // SAFETY: ptr..ptr+len is a fresh allocation owned by the region; it is
        // freed only after deregistration (Drop), or right here on failure.
        match unsafe { Self::register_inner(pd, ptr, len, access, Memory::Owned(layout)) } {
            Ok(mr) => Ok(mr),
            Err(e) => {
                // SAFETY: registration failed, so the device never saw ptr; it
                // was allocated above with this layout.
                unsafe { std::alloc::dealloc(ptr.as_ptr(), layout) };
                Err(e)
            }
        }
    }

    /// Allocates `len` bytes (rounded up to whole 2 MiB pages) of anonymous
    /// hugepage memory (`mmap(MAP_HUGETLB)`, zeroed by the kernel) and registers
    /// it. Fails with `mmap(MAP_HUGETLB)` ENOMEM when the hugepage pool
    /// (`/proc/sys/vm/nr_hugepages`) has too few free pages: see
    /// [`MemoryRegion::alloc_prefer_hugepages`] for a fallback.
    pub fn alloc_hugepages(
        pd: &ProtectionDomain,
        len: usize,
        access: Access,
    ) -> Result<MemoryRegion, VerbsError> {
        check_access(access)?;
        if len == 0 {
            return Err(VerbsError::invalid("region length", "must be > 0"));
        }
        let mapped = len
            .checked_next_multiple_of(HUGE_PAGE_BYTES)
            .ok_or_else(|| VerbsError::invalid("region length", format!("{len} too large")))?;
        // SAFETY: a fresh anonymous private mapping; no existing memory is touched.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                mapped,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_HUGETLB | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(VerbsError::Call {
                call: "mmap(MAP_HUGETLB)",
                errno: super::error::errno(),
                reason: std::io::Error::last_os_error().to_string(),
                hint: "not enough free hugepages: reserve more (echo N > \
                       /proc/sys/vm/nr_hugepages) or use heap memory",
            });
        }
        let ptr = NonNull::new(ptr.cast::<u8>()).expect("mmap never returns NULL on success");
        // SAFETY: ptr..ptr+mapped is a fresh mapping owned by the region; it is
        // unmapped only after deregistration (Drop), or right here on failure.
        match unsafe { Self::register_inner(pd, ptr, len, access, Memory::Mapped(mapped)) } {
            Ok(mr) => Ok(mr),
            Err(e) => {
                // SAFETY: registration failed, so the device never saw the mapping.
                unsafe { libc::munmap(ptr.as_ptr().cast(), mapped) };
                Err(e)
            }
        }
    }

    /// [`MemoryRegion::alloc_hugepages`] when free hugepages allow, else
    /// [`MemoryRegion::alloc`]; the flag says which (true: hugepages).
    pub fn alloc_prefer_hugepages(
        pd: &ProtectionDomain,
        len: usize,
        access: Access,
    ) -> Result<(MemoryRegion, bool), VerbsError> {
        match Self::alloc_hugepages(pd, len, access) {
            Ok(mr) => Ok((mr, true)),
            Err(VerbsError::Call {
                call: "mmap(MAP_HUGETLB)",
                ..
            }) => Ok((Self::alloc(pd, len, access)?, false)),
            Err(e) => Err(e),
        }
    }

    /// True when the memory is hugepages ([`MemoryRegion::alloc_hugepages`]).
    pub fn is_hugepages(&self) -> bool {
        matches!(self.memory, Memory::Mapped(_))
    }

    /// Registers memory owned elsewhere (hugepages, a mapped segment file).
    ///
    /// # Safety
    /// `addr..addr+len` must be mapped, and stay mapped and unused by anything
    /// that relies on Rust's aliasing rules (no `&`/`&mut` to it elsewhere
    /// while device writes may land) until this region is dropped: the device
    /// (and, with REMOTE_* rights, remote peers) may read or write it at any
    /// time until then.
    pub unsafe fn register_raw(
        pd: &ProtectionDomain,
        addr: *mut u8,
        len: usize,
        access: Access,
    ) -> Result<MemoryRegion, VerbsError> {
        check_access(access)?;
        let ptr =
            NonNull::new(addr).ok_or_else(|| VerbsError::invalid("region address", "null"))?;
        if len == 0 {
            return Err(VerbsError::invalid("region length", "must be > 0"));
        }
        // SAFETY: the caller's contract above.
        unsafe { Self::register_inner(pd, ptr, len, access, Memory::Foreign) }
    }

    /// # Safety
    /// As [`MemoryRegion::register_raw`], with `memory` saying who frees it.
    unsafe fn register_inner(
        pd: &ProtectionDomain,
        ptr: NonNull<u8>,
        len: usize,
        access: Access,
        memory: Memory,
    ) -> Result<MemoryRegion, VerbsError> {
        // SAFETY: pd is a live PD; the range is valid per the caller; access was
        // checked. The shim expands the ibv_reg_mr macro (plain ibv_reg_mr for
        // these flags).
        let raw = unsafe {
            sys::prc_ibv_reg_mr(
                pd.inner.raw.as_ptr(),
                ptr.as_ptr().cast(),
                len,
                access.bits() as i32,
            )
        };
        let raw = NonNull::new(raw).ok_or_else(|| VerbsError::from_errno("ibv_reg_mr"))?;
        Ok(MemoryRegion {
            raw,
            ptr,
            len,
            access,
            memory,
            pd: Arc::clone(&pd.inner),
        })
    }

    /// Start address as registered (what peers use as `remote_addr`).
    pub fn addr(&self) -> u64 {
        self.ptr.as_ptr() as u64
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false (regions are at least one byte).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Local key (for this side's work requests).
    pub fn lkey(&self) -> u32 {
        // SAFETY: raw is a live registration; lkey is set at registration and
        // never changes.
        unsafe { (*self.raw.as_ptr()).lkey }
    }

    /// Remote key (for peers' RDMA READ/WRITE).
    pub fn rkey(&self) -> u32 {
        // SAFETY: as for lkey.
        unsafe { (*self.raw.as_ptr()).rkey }
    }

    /// Access rights of the registration.
    pub fn access(&self) -> Access {
        self.access
    }

    /// Raw start pointer. Reading or writing through it is subject to the
    /// module's rules (the device may write concurrently).
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    fn check_range(&self, offset: usize, len: usize) -> Result<(), VerbsError> {
        match offset.checked_add(len) {
            Some(end) if end <= self.len => Ok(()),
            _ => Err(VerbsError::invalid(
                "region range",
                format!("{offset}+{len} is outside the {}-byte region", self.len),
            )),
        }
    }

    /// An SGE for `offset..offset+len` of this region.
    pub fn sge(&self, offset: usize, len: usize) -> Result<Sge, VerbsError> {
        self.check_range(offset, len)?;
        let length = u32::try_from(len)
            .map_err(|_| VerbsError::invalid("SGE length", format!("{len} > u32::MAX")))?;
        Ok(Sge(sys::ibv_sge {
            addr: self.addr() + offset as u64,
            length,
            lkey: self.lkey(),
        }))
    }

    /// What a peer needs to READ/WRITE `offset..offset+len` of this region
    /// (requires REMOTE_READ or REMOTE_WRITE rights to be useful).
    pub fn remote(&self, offset: usize, len: usize) -> Result<RemoteRegion, VerbsError> {
        self.check_range(offset, len)?;
        Ok(RemoteRegion {
            addr: self.addr() + offset as u64,
            rkey: self.rkey(),
            len: len as u64,
        })
    }

    /// Copies `src` into the region at `offset`. Bytes the device is writing at
    /// the same time (an uncompleted receive or remote WRITE into this range)
    /// end up unspecified.
    pub fn write(&mut self, offset: usize, src: &[u8]) -> Result<(), VerbsError> {
        self.check_range(offset, src.len())?;
        // SAFETY: the range is inside the registration (checked), which is valid
        // memory for its lifetime; &mut self excludes other CPU writers; src
        // cannot overlap it (no safe reference into the region exists).
        unsafe {
            std::ptr::copy_nonoverlapping(src.as_ptr(), self.ptr.as_ptr().add(offset), src.len())
        };
        Ok(())
    }

    /// Copies the region's bytes at `offset` into `dst`. Read only ranges whose
    /// device writes have completed (polled), or the bytes are unspecified.
    pub fn read(&self, offset: usize, dst: &mut [u8]) -> Result<(), VerbsError> {
        self.check_range(offset, dst.len())?;
        // SAFETY: the range is inside the registration (checked); dst is a
        // distinct Rust buffer (no safe reference into the region exists).
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.ptr.as_ptr().add(offset),
                dst.as_mut_ptr(),
                dst.len(),
            )
        };
        Ok(())
    }

    /// The whole region as a slice, without copying.
    ///
    /// # Safety
    /// While the slice lives, nothing may write the region: no uncompleted
    /// receive, READ result or remote WRITE/atomic targeting it, and no
    /// [`MemoryRegion::write`] (which `&self` already excludes).
    pub unsafe fn as_slice(&self) -> &[u8] {
        // SAFETY: valid for len bytes; no writers per the caller's contract.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// The whole region as a mutable slice, without copying.
    ///
    /// # Safety
    /// While the slice lives, the device must not read or write the region: no
    /// uncompleted work request or remote access touches it.
    pub unsafe fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: valid for len bytes; &mut self excludes CPU aliases and the
        // caller excludes device access.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for MemoryRegion {
    fn drop(&mut self) {
        // SAFETY: raw is a live registration, deregistered once. After success
        // the device no longer accesses the memory (work requests still naming
        // its keys fail with a protection error).
        let ret = unsafe { sys::ibv_dereg_mr(self.raw.as_ptr()) };
        if ret != 0 {
            // The device may still reach the memory: keep it (and the PD) alive.
            eprintln!(
                "precursor-ffi: ibv_dereg_mr failed (errno {ret}): leaking the {}-byte region",
                self.len
            );
            std::mem::forget(Arc::clone(&self.pd));
            return;
        }
        match self.memory {
            Memory::Owned(layout) => {
                // SAFETY: allocated in alloc() with this layout; deregistered above,
                // so nothing references it any more.
                unsafe { std::alloc::dealloc(self.ptr.as_ptr(), layout) };
            }
            Memory::Mapped(mapped) => {
                // SAFETY: mapped in alloc_hugepages() with this length; deregistered
                // above, so nothing references it any more.
                unsafe { libc::munmap(self.ptr.as_ptr().cast(), mapped) };
            }
            Memory::Foreign => {}
        }
    }
}

/// A registration that remote peers may only RDMA READ (`IBV_ACCESS_REMOTE_READ`,
/// nothing else): how a broker exposes log segments to one-sided readers.
///
/// Registering is safe whatever the memory: the device never writes it (no local
/// or remote write right), and the kernel pins the pages for as long as the
/// registration lives, so unmapping the memory first cannot make the device reach
/// memory the process reuses (peers would then read the old bytes). What it does
/// is expose the bytes to any peer that holds the rkey (and, through a QP of this
/// PD, asks for them): register only what they may read, and drop the region when
/// they may no longer. A READ outside the registration fails on the device (the
/// reader's QP goes to the error state), never reaches other memory.
pub struct ReadableRegion {
    raw: NonNull<sys::ibv_mr>,
    addr: usize,
    len: usize,
    /// Bytes of a mapping made by [`ReadableRegion::register_file`], unmapped after the
    /// deregistration.
    mapped: Option<usize>,
    _pd: Arc<PdInner>,
}

// SAFETY: the handle is usable from any thread; no memory is accessed through it.
unsafe impl Send for ReadableRegion {}
// SAFETY: &self methods only read the keys.
unsafe impl Sync for ReadableRegion {}

impl fmt::Debug for ReadableRegion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadableRegion")
            .field("addr", &format_args!("{:#x}", self.addr))
            .field("len", &self.len)
            .field("rkey", &format_args!("{:#x}", self.rkey()))
            .finish()
    }
}

impl ReadableRegion {
    /// Registers `addr..addr+len` of this process's mapped memory for remote
    /// READs (a read-only file map works too). EFAULT when part of the range is
    /// not mapped.
    pub fn register(
        pd: &ProtectionDomain,
        addr: usize,
        len: usize,
    ) -> Result<ReadableRegion, VerbsError> {
        if addr == 0 || len == 0 {
            return Err(VerbsError::invalid(
                "readable region",
                format!("{len} bytes at {addr:#x}: needs a non-null address and a length"),
            ));
        }
        // SAFETY: pd is live. REMOTE_READ only: the device never writes the range,
        // and ibv_reg_mr pins the pages (or fails with EFAULT if they are not
        // mapped), so no memory of this process can be changed or reached after
        // reuse through the registration.
        let raw = unsafe {
            sys::prc_ibv_reg_mr(
                pd.inner.raw.as_ptr(),
                addr as *mut libc::c_void,
                len,
                Access::REMOTE_READ.bits() as i32,
            )
        };
        let raw = NonNull::new(raw).ok_or_else(|| VerbsError::from_errno("ibv_reg_mr"))?;
        Ok(ReadableRegion {
            raw,
            addr,
            len,
            mapped: None,
            _pd: Arc::clone(&pd.inner),
        })
    }

    /// Maps the first `len` bytes of the file at `path` (private, read-only, a mapping of
    /// the region's own) and registers them for remote READs. For files that no longer
    /// change (a sealed log segment).
    ///
    /// A read-only *shared* file mapping cannot be registered on kernels before 6.2 (they
    /// pin with FOLL_WRITE and refuse with EFAULT); a private one can: there the kernel
    /// copies the pages it pins (the file is read once into anonymous memory), on newer
    /// kernels it pins the page cache as is.
    pub fn register_file(
        pd: &ProtectionDomain,
        path: &std::path::Path,
        len: usize,
    ) -> Result<ReadableRegion, VerbsError> {
        use std::os::fd::AsRawFd;
        let file = std::fs::File::open(path).map_err(|e| VerbsError::InvalidArgument {
            what: "readable file",
            reason: format!("{}: {e}", path.display()),
        })?;
        let file_len = file
            .metadata()
            .map_err(|e| VerbsError::invalid("readable file", format!("{}: {e}", path.display())))?
            .len();
        if len == 0 || len as u64 > file_len {
            return Err(VerbsError::invalid(
                "readable file",
                format!("{len} bytes of the {file_len}-byte {}", path.display()),
            ));
        }
        // SAFETY: a fresh private read-only mapping of an open file; no existing memory
        // is touched. The fd may be closed afterwards (the mapping keeps the file).
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_PRIVATE,
                file.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(VerbsError::from_errno("mmap(readable file)"));
        }
        match ReadableRegion::register(pd, ptr as usize, len) {
            Ok(mut region) => {
                region.mapped = Some(len);
                Ok(region)
            }
            Err(e) => {
                // SAFETY: mapped above, never registered, referenced by nothing.
                unsafe { libc::munmap(ptr, len) };
                Err(e)
            }
        }
    }

    /// Start address (what readers use as `remote_addr`).
    pub fn addr(&self) -> u64 {
        self.addr as u64
    }

    /// Length in bytes: READs beyond it fail on the device.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false (regions are at least one byte).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The remote key readers present.
    pub fn rkey(&self) -> u32 {
        // SAFETY: raw is a live registration; rkey never changes.
        unsafe { (*self.raw.as_ptr()).rkey }
    }

    /// Address, rkey and length for a reader.
    pub fn remote(&self) -> RemoteRegion {
        RemoteRegion {
            addr: self.addr(),
            rkey: self.rkey(),
            len: self.len as u64,
        }
    }
}

impl Drop for ReadableRegion {
    fn drop(&mut self) {
        // SAFETY: raw is a live registration, deregistered once. Readers still
        // holding the rkey get a remote access error from then on.
        let ret = unsafe { sys::ibv_dereg_mr(self.raw.as_ptr()) };
        if ret != 0 {
            eprintln!(
                "precursor-ffi: ibv_dereg_mr failed (errno {ret}): the {}-byte readable region stays registered",
                self.len
            );
            // The registration still holds the PD (and the pages): keep both.
            std::mem::forget(Arc::clone(&self._pd));
            return;
        }
        if let Some(mapped) = self.mapped {
            // SAFETY: our own mapping (register_file), deregistered above; nothing else
            // refers to it.
            unsafe { libc::munmap(self.addr as *mut libc::c_void, mapped) };
        }
    }
}
