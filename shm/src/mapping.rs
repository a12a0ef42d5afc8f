//! File-backed mappings: writable shared memory files and read-only maps of segment files.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64};

use memmap2::{Mmap, MmapOptions, MmapRaw};

use crate::ShmError;

/// Page size of ordinary (non-hugetlbfs) memory files.
pub const PAGE_BYTES_DEFAULT: usize = 4096;

/// Largest mapping this crate creates: mappings are sized by configuration, this only
/// catches nonsense (a negative number cast to u64, a unit mix-up).
const MAPPING_BYTES_MAX: u64 = 1 << 40;

/// Mount point of the first hugetlbfs in `/proc/mounts` and its huge page size in bytes.
pub fn hugetlbfs_mount() -> Option<(PathBuf, usize)> {
    let mounts = std::fs::read_to_string("/proc/mounts").ok()?;
    mounts.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        let _device = fields.next()?;
        let mount_point = fields.next()?;
        let fs_type = fields.next()?;
        let options = fields.next().unwrap_or("");
        (fs_type == "hugetlbfs").then(|| {
            (
                PathBuf::from(unescape_mount(mount_point)),
                hugetlbfs_page_bytes(options),
            )
        })
    })
}

/// The directory for memory files: the first hugetlbfs mount, else `/dev/shm`.
pub fn memory_dir_default() -> PathBuf {
    hugetlbfs_mount()
        .map(|(dir, _)| dir)
        .unwrap_or_else(|| PathBuf::from("/dev/shm"))
}

/// Page size of files in `dir`: the huge page size when `dir` is on hugetlbfs (there,
/// file sizes and mapping lengths must be multiples of it), else [`PAGE_BYTES_DEFAULT`].
pub fn page_bytes_for(dir: &Path) -> usize {
    let Ok(dir) = dir.canonicalize() else {
        return PAGE_BYTES_DEFAULT;
    };
    let Ok(mounts) = std::fs::read_to_string("/proc/mounts") else {
        return PAGE_BYTES_DEFAULT;
    };
    // The longest mount point that is a prefix of `dir` is the filesystem `dir` is on.
    let mut best: Option<(usize, usize)> = None; // (mount point length, page bytes)
    for line in mounts.lines() {
        let mut fields = line.split_whitespace();
        let (Some(_), Some(mount_point), Some(fs_type)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let options = fields.next().unwrap_or("");
        let mount_point = unescape_mount(mount_point);
        if !dir.starts_with(&mount_point) {
            continue;
        }
        let page_bytes = if fs_type == "hugetlbfs" {
            hugetlbfs_page_bytes(options)
        } else {
            PAGE_BYTES_DEFAULT
        };
        let longer = match best {
            Some((len, _)) => mount_point.len() >= len,
            None => true,
        };
        if longer {
            best = Some((mount_point.len(), page_bytes));
        }
    }
    best.map(|(_, page_bytes)| page_bytes)
        .unwrap_or(PAGE_BYTES_DEFAULT)
}

/// Huge pages a new memory file in `dir` can still get, when `dir` is on hugetlbfs (`None`
/// otherwise): the fewer of the mount's own free pages (`statfs` `f_bfree`, counting
/// reservations, when the mount has a `size=` limit) and the kernel's free, unreserved pages
/// of that size (`/sys/kernel/mm/hugepages/hugepages-<size>kB/`). Check it before creating
/// a file there: a mapping that gets its pages reserves them at `mmap` (ENOMEM when it
/// cannot), so asking first keeps failed attempts (and their log lines) away.
pub fn hugetlbfs_free_pages(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let page_bytes = page_bytes_for(dir);
    if page_bytes <= PAGE_BYTES_DEFAULT {
        return None;
    }
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: an all-zero statfs is a valid value of this plain C struct.
    let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is a NUL-terminated string and `stat` a writable statfs that outlives
    // the call; statfs writes only into it.
    let rc = unsafe { libc::statfs(path.as_ptr(), &mut stat) };
    if rc != 0 {
        return None;
    }
    const HUGETLBFS_MAGIC: i64 = 0x9584_58f6;
    if stat.f_type as i64 != HUGETLBFS_MAGIC {
        return None;
    }
    // Without a size limit hugetlbfs reports 0 blocks (no per-mount count).
    let mount_free = (stat.f_blocks > 0).then_some(stat.f_bfree as u64);
    let sysfs = format!("/sys/kernel/mm/hugepages/hugepages-{}kB", page_bytes / 1024);
    let read = |name: &str| -> Option<u64> {
        std::fs::read_to_string(format!("{sysfs}/{name}"))
            .ok()?
            .trim()
            .parse()
            .ok()
    };
    let kernel_free = match (read("free_hugepages"), read("resv_hugepages")) {
        (Some(free), Some(reserved)) => Some(free.saturating_sub(reserved)),
        _ => None,
    };
    match (mount_free, kernel_free) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => Some(a.or(b).unwrap_or(u64::MAX)),
    }
}

/// `bytes` rounded up to a whole number of `page_bytes` pages.
pub fn round_up_to_page(bytes: usize, page_bytes: usize) -> usize {
    assert!(
        page_bytes.is_power_of_two(),
        "page size {page_bytes} is not a power of two"
    );
    bytes.div_ceil(page_bytes) * page_bytes
}

fn unescape_mount(field: &str) -> String {
    // /proc/mounts escapes space, tab, newline and backslash as octal (\040 ...).
    field
        .replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

fn hugetlbfs_page_bytes(options: &str) -> usize {
    let from_option = options
        .split(',')
        .find_map(|option| option.strip_prefix("pagesize="))
        .and_then(parse_size);
    from_option.unwrap_or_else(default_huge_page_bytes)
}

fn default_huge_page_bytes() -> usize {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|meminfo| {
            meminfo.lines().find_map(|line| {
                let kib = line
                    .strip_prefix("Hugepagesize:")?
                    .trim()
                    .strip_suffix("kB")?;
                kib.trim().parse::<usize>().ok().map(|kib| kib * 1024)
            })
        })
        .unwrap_or(2 * 1024 * 1024)
}

fn parse_size(text: &str) -> Option<usize> {
    let (digits, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit())?);
    let number: usize = digits.parse().ok()?;
    let multiplier = match unit {
        "K" | "k" => 1 << 10,
        "M" | "m" => 1 << 20,
        "G" | "g" => 1 << 30,
        _ => return None,
    };
    Some(number * multiplier)
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> ShmError + '_ {
    move |source| ShmError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A writable `MAP_SHARED` mapping of a memory file. The file is created (or truncated) and
/// sized with ftruncate, never written with write(2): hugetlbfs supports only mmap.
pub struct SharedMapping {
    map: MmapRaw,
    path: PathBuf,
    mapped_bytes: usize,
    file_id: FileId,
}

/// Identity of a file: device and inode numbers. A file replaced by rename (or deleted and
/// created again elsewhere on the device) has another identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileId {
    pub device: u64,
    pub inode: u64,
}

impl FileId {
    pub fn of(metadata: &std::fs::Metadata) -> FileId {
        use std::os::unix::fs::MetadataExt;
        FileId {
            device: metadata.dev(),
            inode: metadata.ino(),
        }
    }
}

impl std::fmt::Debug for SharedMapping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedMapping")
            .field("path", &self.path)
            .field("mapped_bytes", &self.mapped_bytes)
            .finish()
    }
}

impl SharedMapping {
    /// Creates (or truncates) `path` and maps at least `bytes` bytes of it, rounded up to
    /// the page size of its filesystem. The memory reads as zeros.
    pub fn create(path: &Path, bytes: usize) -> Result<SharedMapping, ShmError> {
        if bytes == 0 || bytes as u64 > MAPPING_BYTES_MAX {
            return Err(ShmError::Size {
                path: path.to_path_buf(),
                bytes: bytes as u64,
            });
        }
        let dir = path.parent().unwrap_or(Path::new("."));
        let mapped_bytes = round_up_to_page(bytes, page_bytes_for(dir));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .map_err(io_error(path))?;
        // A file that could not be sized or mapped (no hugepages left: ENOMEM) is removed,
        // so failed attempts leave nothing behind for every retry to add to.
        let mapped = file
            .set_len(mapped_bytes as u64)
            .and_then(|()| file.metadata())
            .and_then(|metadata| {
                let map = MmapOptions::new().len(mapped_bytes).map_raw(&file)?;
                Ok((FileId::of(&metadata), map))
            });
        let (file_id, map) = mapped.map_err(|error| {
            let _ = std::fs::remove_file(path);
            io_error(path)(error)
        })?;
        assert_eq!(map.len(), mapped_bytes);
        Ok(SharedMapping {
            map,
            path: path.to_path_buf(),
            mapped_bytes,
            file_id,
        })
    }

    /// Bytes mapped (a whole number of pages).
    pub fn len(&self) -> usize {
        self.mapped_bytes
    }

    /// Never true: a mapping has at least one page.
    pub fn is_empty(&self) -> bool {
        self.mapped_bytes == 0
    }

    /// The memory file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Allocates and maps every page now, writable (`MADV_POPULATE_WRITE`), so that the
    /// first write to each page takes no page fault later. Blocking (the kernel zeroes
    /// the pages): call it off the lcore. On hugetlbfs the pages were reserved by `mmap`
    /// already, so this costs time, not memory.
    pub fn populate_writable(&self) -> Result<(), ShmError> {
        self.map
            .advise(memmap2::Advice::PopulateWrite)
            .map_err(io_error(&self.path))
    }

    /// Maps all of an existing memory file `path` read-write (another process created it;
    /// this one reads its header and moves its own ring positions). The file's length must
    /// be non-zero and is what gets mapped.
    pub fn open(path: &Path) -> Result<SharedMapping, ShmError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(io_error(path))?;
        let metadata = file.metadata().map_err(io_error(path))?;
        let file_bytes = metadata.len();
        if file_bytes == 0 || file_bytes > MAPPING_BYTES_MAX {
            return Err(ShmError::Size {
                path: path.to_path_buf(),
                bytes: file_bytes,
            });
        }
        let mapped_bytes = file_bytes as usize;
        let map = MmapOptions::new()
            .len(mapped_bytes)
            .map_raw(&file)
            .map_err(io_error(path))?;
        assert_eq!(map.len(), mapped_bytes);
        Ok(SharedMapping {
            map,
            path: path.to_path_buf(),
            mapped_bytes,
            file_id: FileId::of(&metadata),
        })
    }

    /// Device and inode of the mapped file.
    pub fn file_id(&self) -> FileId {
        self.file_id
    }

    /// Renames the memory file to `new_path` (same filesystem: an atomic replace of
    /// whatever was there). The mapping is unaffected.
    pub fn rename(&mut self, new_path: &Path) -> Result<(), ShmError> {
        std::fs::rename(&self.path, new_path).map_err(io_error(new_path))?;
        self.path = new_path.to_path_buf();
        Ok(())
    }

    /// Start of the mapping. Dereferencing it is the caller's business (see `append`).
    pub(crate) fn as_mut_ptr(&self) -> *mut u8 {
        self.map.as_mut_ptr()
    }

    /// The 8 bytes at `offset` as an atomic. `offset` must be 8-byte aligned and in bounds.
    #[inline]
    pub(crate) fn atomic_u64(&self, offset: usize) -> &AtomicU64 {
        assert!(offset & 7 == 0 && offset + 8 <= self.mapped_bytes);
        // SAFETY: in bounds and 8-byte aligned (the mapping starts page aligned; asserted
        // above), the mapping lives as long as `&self`, and every process touches these
        // bytes only through atomics of this width, so there is no non-atomic data race.
        unsafe { &*(self.map.as_mut_ptr().add(offset) as *const AtomicU64) }
    }

    /// The 4 bytes at `offset` as an atomic. `offset` must be 4-byte aligned and in bounds.
    #[inline]
    pub(crate) fn atomic_u32(&self, offset: usize) -> &AtomicU32 {
        assert!(offset & 3 == 0 && offset + 4 <= self.mapped_bytes);
        // SAFETY: as for `atomic_u64`, with 4-byte alignment and width.
        unsafe { &*(self.map.as_mut_ptr().add(offset) as *const AtomicU32) }
    }

    /// `[offset, offset + len)` of the mapping as bytes to read in place.
    ///
    /// # Safety
    /// No thread or process may write those bytes while the slice lives (a ring hands a
    /// record to its consumer only after the producer published it, and the producer does
    /// not touch it again until the consumer releases it).
    #[inline]
    pub(crate) unsafe fn bytes(&self, offset: usize, len: usize) -> &[u8] {
        assert!(offset + len <= self.mapped_bytes);
        // SAFETY: in bounds (asserted), alive as long as `&self`; that nobody writes the
        // bytes meanwhile is the caller's contract.
        unsafe { std::slice::from_raw_parts(self.map.as_mut_ptr().add(offset), len) }
    }

    /// `[offset, offset + len)` of the mapping as bytes to write in place.
    ///
    /// # Safety
    /// No other slice of those bytes may exist, and no thread or process may read or write
    /// them while this one lives (a ring's producer owns the free space it claimed).
    #[inline]
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn bytes_mut(&self, offset: usize, len: usize) -> &mut [u8] {
        assert!(offset + len <= self.mapped_bytes);
        // SAFETY: in bounds (asserted), alive as long as `&self`; exclusivity is the
        // caller's contract.
        unsafe { std::slice::from_raw_parts_mut(self.map.as_mut_ptr().add(offset), len) }
    }

    /// Copies `source` into the mapping at `offset`.
    ///
    /// # Safety
    /// No other thread or process may read or write `[offset, offset + source.len())`
    /// during the call (the ring's sequence protocol hands each slot to one side at a time).
    #[inline]
    pub(crate) unsafe fn write_bytes(&self, offset: usize, source: &[u8]) {
        assert!(offset + source.len() <= self.mapped_bytes);
        // SAFETY: in bounds (asserted); `source` is process memory, so it cannot overlap
        // the mapping's bytes being written; exclusivity is the caller's contract.
        unsafe {
            std::ptr::copy_nonoverlapping(
                source.as_ptr(),
                self.map.as_mut_ptr().add(offset),
                source.len(),
            )
        }
    }

    /// Copies `[offset, offset + target.len())` of the mapping into `target`.
    ///
    /// # Safety
    /// No other thread or process may write those bytes during the call.
    #[inline]
    pub(crate) unsafe fn read_bytes(&self, offset: usize, target: &mut [u8]) {
        assert!(offset + target.len() <= self.mapped_bytes);
        // SAFETY: in bounds (asserted); `target` is an exclusive borrow of process memory,
        // so it does not overlap the mapping; no concurrent writer is the caller's contract.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.map.as_mut_ptr().add(offset),
                target.as_mut_ptr(),
                target.len(),
            )
        }
    }
}

/// A read-only map of an ordinary file, e.g. a sealed segment.
///
/// The file must not be truncated while mapped (that would turn reads into SIGBUS): the
/// log only ever truncates a segment during recovery, before mapping it, and retires a
/// segment by unmapping it before or while unlinking it (unlink keeps the pages).
pub struct ReadOnlyFileMap {
    map: Option<Mmap>,
    path: PathBuf,
}

impl std::fmt::Debug for ReadOnlyFileMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadOnlyFileMap")
            .field("path", &self.path)
            .field("bytes", &self.len())
            .finish()
    }
}

impl ReadOnlyFileMap {
    /// Maps the first `bytes` bytes of `path` read-only (`bytes` may be zero: then nothing
    /// is mapped and [`ReadOnlyFileMap::bytes`] is empty).
    pub fn open(path: &Path, bytes: usize) -> Result<ReadOnlyFileMap, ShmError> {
        let file = File::open(path).map_err(io_error(path))?;
        let file_bytes = file.metadata().map_err(io_error(path))?.len();
        if bytes as u64 > file_bytes {
            return Err(ShmError::Size {
                path: path.to_path_buf(),
                bytes: bytes as u64,
            });
        }
        let map = if bytes == 0 {
            None
        } else {
            // SAFETY: the map is read-only and private to this process's view of a file the
            // log owns; the log never truncates or rewrites a sealed segment while it is
            // mapped (see the type's documentation), so the mapped bytes stay valid and
            // unchanged for the life of the map.
            Some(unsafe { MmapOptions::new().len(bytes).map(&file) }.map_err(io_error(path))?)
        };
        Ok(ReadOnlyFileMap {
            map,
            path: path.to_path_buf(),
        })
    }

    /// The mapped bytes.
    pub fn bytes(&self) -> &[u8] {
        self.map.as_deref().unwrap_or(&[])
    }

    /// Number of mapped bytes.
    pub fn len(&self) -> usize {
        self.bytes().len()
    }

    /// True when nothing is mapped.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The mapped file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_round_up_to_pages() {
        assert_eq!(round_up_to_page(1, 4096), 4096);
        assert_eq!(round_up_to_page(4096, 4096), 4096);
        assert_eq!(round_up_to_page(4097, 4096), 8192);
        assert_eq!(parse_size("2M"), Some(2 << 20));
        assert_eq!(parse_size("1G"), Some(1 << 30));
        assert_eq!(parse_size("64K"), Some(64 << 10));
    }

    #[test]
    fn shm_dir_has_small_pages() {
        assert_eq!(page_bytes_for(Path::new("/dev/shm")), PAGE_BYTES_DEFAULT);
    }

    #[test]
    fn read_only_map_sees_file_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("segment.log");
        std::fs::write(&path, b"hello segment").unwrap();
        let map = ReadOnlyFileMap::open(&path, 5).unwrap();
        assert_eq!(map.bytes(), b"hello");
        let empty = ReadOnlyFileMap::open(&path, 0).unwrap();
        assert!(empty.is_empty());
        assert!(ReadOnlyFileMap::open(&path, 100).is_err());
    }
}
