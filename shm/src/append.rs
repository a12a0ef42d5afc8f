//! Single-writer append region: how an lcore appends record batches into an active segment
//! in (huge page) memory while the flusher thread persists the published prefix, no lock.
//!
//! ```text
//!   0                         published                          capacity   mapped
//!   +---------------------------+-----------------------------------+--------+
//!   | published: immutable,     | unpublished: only the writer      | unused |
//!   | readable by every reader  | touches it (write, patch, reread) | (page  |
//!   |                           |                                   | slack) |
//!   +---------------------------+-----------------------------------+--------+
//!                               ^ AtomicUsize: writer stores with Release after writing
//!                                 the bytes below it; readers load with Acquire.
//! ```
//!
//! Invariants: `published` only grows and never exceeds `capacity`; no byte below
//! `published` is ever written again; there is exactly one writer (`AppendWriter` is not
//! `Clone`). So a reader's `&[u8]` over `[0, published)` never aliases the writer's
//! `&mut [u8]` over `[published, capacity)`, and the Release/Acquire pair makes the bytes
//! written before a publish visible to a reader that observes it.

//!
//! The memory file starts with a 64-byte header so that other processes can read the
//! published prefix too ([`AppendRegionView`]: a consumer reading the log's memory
//! directly, never blocking the writer):
//!
//! ```text
//!  0   magic u64 "PRECSEG\0" | layout version u32 | reserved u32
//!  16  capacity u64 (usable bytes)
//!  24  published u64 (the writer's Release store; readers' Acquire load)
//!  64  data: capacity bytes (record batches, exactly as they go to the .log file)
//! ```

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use memmap2::{MmapOptions, MmapRaw};

use crate::{SharedMapping, ShmError};

/// Bytes before the data of an append region's memory file.
pub const APPEND_HEADER_BYTES: usize = 64;
/// `b"PRECSEG\0"` as a little-endian u64.
pub const APPEND_MAGIC: u64 = u64::from_le_bytes(*b"PRECSEG\0");
/// Layout version of an append region's memory file.
pub const APPEND_LAYOUT_VERSION: u32 = 1;
const MAGIC_OFFSET: usize = 0;
const VERSION_OFFSET: usize = 8;
const CAPACITY_OFFSET: usize = 16;
const PUBLISHED_OFFSET: usize = 24;

struct Region {
    mapping: SharedMapping,
    capacity: usize,
}

impl Region {
    /// The published length, in the file's header.
    #[inline]
    fn published_cell(&self) -> &AtomicU64 {
        self.mapping.atomic_u64(PUBLISHED_OFFSET)
    }

    #[inline]
    fn data_ptr(&self) -> *mut u8 {
        // SAFETY: the mapping holds the header and `capacity` bytes after it (created so),
        // so the offset stays inside it.
        unsafe { self.mapping.as_mut_ptr().add(APPEND_HEADER_BYTES) }
    }
}

/// Creates the memory file `path` with room for `capacity_bytes` (rounded up to its
/// filesystem's page size when mapped) and returns its only writer and a first reader.
pub fn append_region(
    path: &Path,
    capacity_bytes: usize,
) -> Result<(AppendWriter, AppendReader), ShmError> {
    let mapping = SharedMapping::create(path, APPEND_HEADER_BYTES + capacity_bytes)?;
    assert!(mapping.len() >= APPEND_HEADER_BYTES + capacity_bytes);
    mapping
        .atomic_u32(VERSION_OFFSET)
        .store(APPEND_LAYOUT_VERSION, Ordering::Relaxed);
    mapping
        .atomic_u64(CAPACITY_OFFSET)
        .store(capacity_bytes as u64, Ordering::Relaxed);
    mapping
        .atomic_u64(MAGIC_OFFSET)
        .store(APPEND_MAGIC, Ordering::Release);
    let region = Arc::new(Region {
        mapping,
        capacity: capacity_bytes,
    });
    let reader = AppendReader {
        region: Arc::clone(&region),
    };
    Ok((AppendWriter { region }, reader))
}

/// The region had no room for the bytes offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("append region full: {needed_bytes} bytes needed, {free_bytes} free")]
pub struct RegionFull {
    pub needed_bytes: usize,
    pub free_bytes: usize,
}

/// The only writer of an append region. Not `Clone`; `Send` so it can move to its lcore.
pub struct AppendWriter {
    region: Arc<Region>,
}

impl std::fmt::Debug for AppendWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppendWriter")
            .field("path", &self.region.mapping.path())
            .field("capacity", &self.region.capacity)
            .field("published", &self.published())
            .finish()
    }
}

impl AppendWriter {
    /// Usable bytes of the region.
    pub fn capacity(&self) -> usize {
        self.region.capacity
    }

    /// The published length (the writer is its only mutator: a relaxed load suffices).
    pub fn published(&self) -> usize {
        self.region.published_cell().load(Ordering::Relaxed) as usize
    }

    /// Bytes that may still be written.
    pub fn free_bytes(&self) -> usize {
        self.capacity() - self.published()
    }

    /// The unpublished tail `[published, capacity)`: write new bytes here, patch them,
    /// read them back; nobody else sees them until [`AppendWriter::publish`].
    pub fn unpublished_mut(&mut self) -> &mut [u8] {
        let published = self.published();
        assert!(published <= self.region.capacity);
        // SAFETY: the mapping is at least `capacity` bytes long and lives as long as
        // `self.region`. Bytes in [published, capacity) are accessed by nobody else:
        // readers only form slices below a published length they loaded, which is <= the
        // current one, and there is a single writer (not Clone) borrowed mutably here. The
        // memory file is private to this process (created by `SharedMapping::create`).
        unsafe {
            std::slice::from_raw_parts_mut(
                self.region.data_ptr().add(published),
                self.region.capacity - published,
            )
        }
    }

    /// Makes `[0, published_bytes)` visible to readers (Release). `published_bytes` may not
    /// shrink the published length nor pass the capacity.
    pub fn publish(&mut self, published_bytes: usize) {
        let published = self.published();
        assert!(
            published_bytes >= published,
            "publish shrinks {published} to {published_bytes}"
        );
        assert!(published_bytes <= self.region.capacity);
        self.region
            .published_cell()
            .store(published_bytes as u64, Ordering::Release);
    }

    /// Copies `bytes` after the published length and publishes them; returns the position
    /// they were written at.
    pub fn append(&mut self, bytes: &[u8]) -> Result<usize, RegionFull> {
        let position = self.published();
        let free_bytes = self.free_bytes();
        if bytes.len() > free_bytes {
            return Err(RegionFull {
                needed_bytes: bytes.len(),
                free_bytes,
            });
        }
        self.unpublished_mut()[..bytes.len()].copy_from_slice(bytes);
        self.publish(position + bytes.len());
        Ok(position)
    }

    /// The published prefix, as readers see it.
    pub fn published_bytes(&self) -> &[u8] {
        published_prefix(&self.region, self.published())
    }

    /// A new reader of this region.
    pub fn reader(&self) -> AppendReader {
        AppendReader {
            region: Arc::clone(&self.region),
        }
    }

    /// Gives up writing: what is published is final.
    pub fn into_reader(self) -> AppendReader {
        AppendReader {
            region: self.region,
        }
    }

    /// The memory file's path.
    pub fn path(&self) -> &Path {
        self.region.mapping.path()
    }

    /// Takes the page faults of the whole region now (see
    /// [`SharedMapping::populate_writable`]): appends into it then never fault. Blocking:
    /// the preparer of a segment calls it before handing the writer to its lcore.
    pub fn prefault(&self) -> Result<(), ShmError> {
        self.region.mapping.populate_writable()
    }
}

/// A reader of an append region: sees the published prefix only.
#[derive(Clone)]
pub struct AppendReader {
    region: Arc<Region>,
}

impl std::fmt::Debug for AppendReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppendReader")
            .field("path", &self.region.mapping.path())
            .field("published", &self.published())
            .finish()
    }
}

impl AppendReader {
    /// The published length (Acquire: every byte below it is visible).
    pub fn published(&self) -> usize {
        self.region.published_cell().load(Ordering::Acquire) as usize
    }

    /// The published prefix at the time of the call. It never changes afterwards.
    pub fn bytes(&self) -> &[u8] {
        published_prefix(&self.region, self.published())
    }

    /// Usable bytes of the region.
    pub fn capacity(&self) -> usize {
        self.region.capacity
    }

    /// The memory file's path.
    pub fn path(&self) -> &Path {
        self.region.mapping.path()
    }

    /// Number of handles (writer and readers) on this region, this one included. When it
    /// is 1, dropping this reader unmaps the region.
    pub fn handles(&self) -> usize {
        Arc::strong_count(&self.region)
    }
}

fn published_prefix(region: &Region, published: usize) -> &[u8] {
    assert!(published <= region.capacity);
    // SAFETY: `published` was loaded from `region.published` (Acquire, or Relaxed by the
    // writer itself, which wrote the bytes), so every byte below it was written before and
    // is visible. Published bytes are never written again (the writer only touches
    // [published, capacity), and `published` never shrinks), so the shared slice aliases
    // no mutable access. The mapping lives as long as `region`, which the slice borrows.
    // Other processes map the file read-only ([`AppendRegionView`]).
    unsafe { std::slice::from_raw_parts(region.data_ptr(), published) }
}

/// A read-only view of another process's append region (a consumer reading an active or
/// sealed segment in the data plane's memory directory). It sees the published prefix and
/// never writes, so it cannot block or disturb the writer. The file may be unlinked while
/// viewed (the writer's segment was sealed and released): the pages stay valid.
pub struct AppendRegionView {
    map: MmapRaw,
    capacity: usize,
    path: std::path::PathBuf,
}

impl std::fmt::Debug for AppendRegionView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppendRegionView")
            .field("path", &self.path)
            .field("published", &self.published())
            .finish()
    }
}

impl AppendRegionView {
    /// Maps the memory file `path` read-only and checks its header.
    pub fn open(path: &Path) -> Result<AppendRegionView, ShmError> {
        let io = |source| ShmError::Io {
            path: path.to_path_buf(),
            source,
        };
        let layout = |reason| ShmError::Layout {
            path: path.to_path_buf(),
            reason,
        };
        let file = std::fs::File::open(path).map_err(io)?;
        let file_bytes = file.metadata().map_err(io)?.len() as usize;
        if file_bytes < APPEND_HEADER_BYTES {
            return Err(layout("shorter than an append region's header"));
        }
        let map = MmapOptions::new()
            .len(file_bytes)
            .map_raw_read_only(&file)
            .map_err(io)?;
        let view = AppendRegionView {
            map,
            capacity: 0,
            path: path.to_path_buf(),
        };
        if view.load(MAGIC_OFFSET, Ordering::Acquire) != APPEND_MAGIC {
            return Err(layout("not an append region (magic)"));
        }
        if view.load(VERSION_OFFSET, Ordering::Relaxed) as u32 != APPEND_LAYOUT_VERSION {
            return Err(layout("append region of another layout version"));
        }
        let capacity = view.load(CAPACITY_OFFSET, Ordering::Relaxed) as usize;
        if APPEND_HEADER_BYTES + capacity > file_bytes {
            return Err(layout("append region capacity past the file's end"));
        }
        Ok(AppendRegionView { capacity, ..view })
    }

    fn load(&self, offset: usize, ordering: Ordering) -> u64 {
        assert!(offset.is_multiple_of(8) && offset + 8 <= APPEND_HEADER_BYTES);
        // SAFETY: in the header (asserted), 8-byte aligned (the map is page aligned); the
        // writer accesses these words only through atomics of this width; an atomic load
        // from a read-only page is a plain load.
        let cell = unsafe { &*(self.map.as_ptr().add(offset) as *const AtomicU64) };
        cell.load(ordering)
    }

    /// The published length now (Acquire: every byte below it is visible).
    pub fn published(&self) -> usize {
        (self.load(PUBLISHED_OFFSET, Ordering::Acquire) as usize).min(self.capacity)
    }

    /// The published prefix at the time of the call; it never changes afterwards.
    pub fn bytes(&self) -> &[u8] {
        let published = self.published();
        // SAFETY: below a published length loaded with Acquire: written before, visible,
        // and never written again by the single writer; the map lives as long as `self`.
        unsafe { std::slice::from_raw_parts(self.map.as_ptr().add(APPEND_HEADER_BYTES), published) }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(capacity: usize) -> (tempfile::TempDir, AppendWriter, AppendReader) {
        let dir = tempfile::tempdir_in(crate::memory_dir_default())
            .or_else(|_| tempfile::tempdir())
            .unwrap();
        let (writer, reader) = append_region(&dir.path().join("region.mem"), capacity).unwrap();
        (dir, writer, reader)
    }

    #[test]
    fn writer_publishes_and_reader_sees_prefix() {
        let (_dir, mut writer, reader) = region(100);
        assert_eq!(reader.bytes(), b"");
        assert_eq!(writer.append(b"abc").unwrap(), 0);
        assert_eq!(reader.bytes(), b"abc");
        // Write, patch, then publish.
        let tail = writer.unpublished_mut();
        tail[..4].copy_from_slice(b"wxyz");
        tail[0] = b'W';
        assert_eq!(reader.bytes(), b"abc");
        writer.publish(7);
        assert_eq!(reader.bytes(), b"abcWxyz");
        assert_eq!(writer.published_bytes(), b"abcWxyz");
        assert_eq!(
            writer.append(&[0; 94]),
            Err(RegionFull {
                needed_bytes: 94,
                free_bytes: 93
            })
        );
        writer.append(&[1; 93]).unwrap();
        assert_eq!(writer.free_bytes(), 0);
        let late = writer.into_reader();
        assert_eq!(late.bytes().len(), 100);
        assert_eq!(late.handles(), 2);
    }

    #[test]
    #[should_panic(expected = "publish shrinks")]
    fn publish_never_shrinks() {
        let (_dir, mut writer, _reader) = region(10);
        writer.append(b"12345").unwrap();
        writer.publish(3);
    }

    /// One thread appends checksummed records of varying length; another verifies every
    /// byte it ever sees published, record by record, until the region is full.
    #[test]
    fn two_thread_stress() {
        const CAPACITY_BYTES: usize = 4 << 20;
        const RECORD_BYTES_MAX: usize = 300;
        let (_dir, mut writer, reader) = region(CAPACITY_BYTES);
        let verifier = std::thread::spawn(move || {
            let mut verified = 0usize;
            let mut records = 0u64;
            loop {
                let bytes = reader.bytes();
                while verified < bytes.len() {
                    // Record: len u32 LE | seq u64 LE | payload | crc32c u32 LE, or a
                    // zero length filler at the very end.
                    let len = u32::from_le_bytes(bytes[verified..verified + 4].try_into().unwrap())
                        as usize;
                    if len == 0 {
                        assert_eq!(bytes.len(), CAPACITY_BYTES);
                        return records;
                    }
                    let record = &bytes[verified..verified + len];
                    let seq = u64::from_le_bytes(record[4..12].try_into().unwrap());
                    assert_eq!(seq, records, "records out of order");
                    let crc = u32::from_le_bytes(record[len - 4..].try_into().unwrap());
                    assert_eq!(crc32c::crc32c(&record[..len - 4]), crc, "torn record {seq}");
                    records += 1;
                    verified += len;
                }
                std::thread::yield_now();
            }
        });
        let mut seq = 0u64;
        loop {
            let payload_bytes = (seq as usize * 7919) % RECORD_BYTES_MAX;
            let len = 4 + 8 + payload_bytes + 4;
            if writer.free_bytes() < len + 4 {
                // Filler: publish the rest of the region as zeros (length 0 marks it).
                let rest = writer.free_bytes();
                writer.unpublished_mut().fill(0);
                writer.publish(writer.published() + rest);
                break;
            }
            let tail = writer.unpublished_mut();
            tail[..4].copy_from_slice(&(len as u32).to_le_bytes());
            tail[4..12].copy_from_slice(&seq.to_le_bytes());
            for (i, byte) in tail[12..12 + payload_bytes].iter_mut().enumerate() {
                *byte = (seq as usize + i) as u8;
            }
            let crc = crc32c::crc32c(&tail[..len - 4]);
            tail[len - 4..len].copy_from_slice(&crc.to_le_bytes());
            let position = writer.published();
            writer.publish(position + len);
            seq += 1;
        }
        assert_eq!(verifier.join().unwrap(), seq);
    }

    #[test]
    fn another_process_view_sees_the_published_prefix_only() {
        let (_dir, mut writer, _reader) = region(1000);
        writer.append(b"batch one").unwrap();
        let view = AppendRegionView::open(writer.path()).unwrap();
        assert_eq!(view.capacity(), 1000);
        assert_eq!(view.bytes(), b"batch one");
        writer.unpublished_mut()[..3].copy_from_slice(b"two");
        assert_eq!(view.bytes(), b"batch one", "unpublished bytes stay unseen");
        writer.publish(12);
        assert_eq!(view.bytes(), b"batch onetwo");
        // Not a region: refused with the reason.
        let plain = tempfile::tempdir().unwrap();
        let other = plain.path().join("other");
        std::fs::write(&other, [7u8; 128]).unwrap();
        let error = AppendRegionView::open(&other).unwrap_err().to_string();
        assert!(error.contains("not an append region"), "{error}");
    }
}
