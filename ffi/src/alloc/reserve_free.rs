//! A global allocator for processes that decode untrusted input: huge allocations are
//! mapped without reserving memory, so a length prefix that lies cannot abort the process.
//!
//! Decoders of Kafka's wire format (kafka-protocol 0.18 among them) size a `Vec` from an
//! array count read off the wire before reading any element. A 20-byte request claiming
//! 2^31 elements of 100 bytes asks for 200 GB: `malloc` fails, and Rust answers a failed
//! allocation by aborting the process. With this allocator every allocation of at least
//! [`RESERVE_FREE_BYTES_MIN`] is an anonymous `mmap` with `MAP_NORESERVE`: the kernel hands
//! out the address range without counting it against memory, pages are only committed
//! when written, and the decoder fails on the missing elements and frees the range. Smaller
//! allocations go to the system allocator unchanged.
//!
//! Install it in a binary (or the library that owns the process's main loop) with
//! `#[global_allocator] static A: ReserveFreeLargeAllocations = ReserveFreeLargeAllocations;`.

use std::alloc::{GlobalAlloc, Layout, System};

/// Allocations this large or larger are mapped with `MAP_NORESERVE` (1 GiB: nothing of a
/// control plane's ordinary work comes near it).
pub const RESERVE_FREE_BYTES_MIN: usize = 1 << 30;
/// The largest alignment a fresh mapping guarantees (its page size).
const MAPPING_ALIGN_MAX: usize = 4096;

/// The system allocator, except that huge allocations reserve no memory (module doc).
pub struct ReserveFreeLargeAllocations;

fn mapped(layout: &Layout) -> bool {
    layout.size() >= RESERVE_FREE_BYTES_MIN && layout.align() <= MAPPING_ALIGN_MAX
}

fn map(bytes: usize) -> *mut u8 {
    // SAFETY: an anonymous private mapping at an address of the kernel's choosing touches
    // no existing memory; the result is checked against MAP_FAILED before use.
    let address = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            bytes,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if address == libc::MAP_FAILED {
        std::ptr::null_mut()
    } else {
        address.cast()
    }
}

// SAFETY: small layouts are handed to `System` unchanged. Large ones get a fresh anonymous
// mapping of exactly `layout.size()` bytes, page aligned (so any alignment up to 4096 is
// met), zero-filled by the kernel, and are unmapped with the same size on `dealloc`: the
// size and alignment of a layout decide the path both ways, so a block always goes back
// to where it came from. Nothing here unwinds.
unsafe impl GlobalAlloc for ReserveFreeLargeAllocations {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if mapped(&layout) {
            return map(layout.size());
        }
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if mapped(&layout) {
            return map(layout.size()); // anonymous mappings are zero-filled
        }
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if mapped(&layout) {
            // SAFETY: `ptr` is a mapping of `layout.size()` bytes made by `map` for this
            // layout (the caller passes the layout it allocated with).
            unsafe { libc::munmap(ptr.cast(), layout.size()) };
            return;
        }
        // SAFETY: `ptr` came from `System` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller guarantees `new_size` with `layout.align()` is a valid layout.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        if !mapped(&layout) && !mapped(&new_layout) {
            // SAFETY: same contract as our caller's; `ptr` came from `System`.
            return unsafe { System.realloc(ptr, layout, new_size) };
        }
        // SAFETY: `new_layout` is valid and non-zero (new_size > 0 by the caller's contract).
        let fresh = unsafe { self.alloc(new_layout) };
        if !fresh.is_null() {
            // SAFETY: both blocks are live, distinct, and at least this long.
            unsafe {
                std::ptr::copy_nonoverlapping(ptr, fresh, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
        }
        fresh
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_huge_allocation_reserves_nothing_and_works_where_written() {
        let allocator = ReserveFreeLargeAllocations;
        // 256 GiB: far beyond this machine's memory and swap.
        let layout = Layout::from_size_align(256 << 30, 8).unwrap();
        // SAFETY: a valid non-zero layout; the block is written within its size and freed
        // with the same layout.
        unsafe {
            let block = allocator.alloc(layout);
            assert!(
                !block.is_null(),
                "MAP_NORESERVE lets the range be handed out"
            );
            block.write(7);
            block.add((256 << 30) - 1).write(9);
            assert_eq!(block.read(), 7);
            allocator.dealloc(block, layout);
        }
        let small = Layout::from_size_align(64, 8).unwrap();
        // SAFETY: as above, through the system allocator.
        unsafe {
            let block = allocator.alloc_zeroed(small);
            assert_eq!(block.read(), 0);
            let grown = allocator.realloc(block, small, RESERVE_FREE_BYTES_MIN);
            assert!(!grown.is_null());
            allocator.dealloc(
                grown,
                Layout::from_size_align(RESERVE_FREE_BYTES_MIN, 8).unwrap(),
            );
        }
    }
}
