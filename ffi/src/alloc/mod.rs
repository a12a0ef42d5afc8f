//! Global allocators (`unsafe impl GlobalAlloc`), here with the other `unsafe` bindings to
//! the system: no DPDK needed, so the control plane and tests can use them with
//! `default-features = false`.
//!
//! - [`CountingAllocator`]: a per-thread allocation counter for no-allocation tests.
//! - [`ReserveFreeLargeAllocations`]: large allocations as `MAP_NORESERVE` mappings (the
//!   Kafka gateway's guard against decoders that pre-allocate from wire counts).

mod counting;
mod reserve_free;

pub use counting::{allocations_on_this_thread, CountingAllocator};
pub use reserve_free::{ReserveFreeLargeAllocations, RESERVE_FREE_BYTES_MIN};
