//! Single-producer single-consumer ring of variable-length records inside a shared mapping,
//! across processes (Aeron's one-to-one ring buffer): the request and response rings of an
//! IPC channel. The producer writes a record in place (`claim`, write, `commit`), the
//! consumer reads it in place (`read`): one copy in, none out.
//!
//! ```text
//!  ring offset (64-byte aligned)
//!  +0    +----------------------------------------------------------------+
//!        | producer position u64 (bytes ever committed)  | pad to 64 B   |  producer only
//!  +64   +----------------------------------------------------------------+
//!        | consumer position u64 (bytes ever released)   | pad to 64 B   |  consumer only
//!  +128  +----------------------------------------------------------------+
//!        | data: capacity bytes (a power of two), records back to back    |
//!        |   +------------+----------+------------------------+---------+ |
//!        |   | length u32 | kind u32 | body (length bytes)    | pad to 8| |
//!        |   +------------+----------+------------------------+---------+ |
//!        +----------------------------------------------------------------+
//!  frame_ring_bytes(capacity) = 128 + capacity
//! ```
//!
//! Positions only grow; the record at position `p` starts at data offset `p % capacity`.
//! A record never wraps: when one does not fit before the end of the data, the producer
//! fills the rest with a padding record (kind [`PADDING_KIND`]) and starts at offset 0.
//! Protocol: the producer writes records past its position, then publishes the new
//! producer position with Release; the consumer loads it with Acquire, reads every record
//! below it in place, then stores the new consumer position with Release, which hands the
//! space back. A zeroed ring is empty.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::ring::CACHE_LINE_BYTES;
use crate::SharedMapping;

/// Bytes before the data: the producer and the consumer position, a cache line each.
pub const FRAME_RING_HEADER_BYTES: usize = 2 * CACHE_LINE_BYTES;
/// Bytes of a record's header: length u32, kind u32.
pub const RECORD_HEADER_BYTES: usize = 8;
/// Records start at multiples of this many bytes.
pub const RECORD_ALIGNMENT_BYTES: usize = 8;
/// The kind of a padding record (skipped by the consumer).
pub const PADDING_KIND: u32 = u32::MAX;
/// Smallest data capacity of a ring, in bytes.
pub const FRAME_RING_CAPACITY_MIN: usize = 4096;
/// Largest data capacity of a ring, in bytes.
pub const FRAME_RING_CAPACITY_MAX: usize = 1 << 30;

const PRODUCER_POSITION_OFFSET: usize = 0;
const CONSUMER_POSITION_OFFSET: usize = CACHE_LINE_BYTES;

/// Bytes a ring of `capacity` data bytes occupies in its mapping.
pub const fn frame_ring_bytes(capacity: usize) -> usize {
    FRAME_RING_HEADER_BYTES + capacity
}

/// Whether `capacity` is acceptable: a power of two in the limits.
pub const fn frame_ring_capacity_valid(capacity: usize) -> bool {
    capacity.is_power_of_two()
        && capacity >= FRAME_RING_CAPACITY_MIN
        && capacity <= FRAME_RING_CAPACITY_MAX
}

/// The largest record body a ring of `capacity` takes: a quarter of it, so that a record
/// and the padding before it always fit once the consumer has caught up.
pub const fn record_body_bytes_max(capacity: usize) -> usize {
    capacity / 4 - RECORD_HEADER_BYTES
}

/// Bytes a record of `body_bytes` takes in the data, header and alignment included.
#[inline]
pub const fn record_bytes(body_bytes: usize) -> usize {
    (RECORD_HEADER_BYTES + body_bytes + RECORD_ALIGNMENT_BYTES - 1) & !(RECORD_ALIGNMENT_BYTES - 1)
}

#[derive(Debug)]
struct Place {
    mapping: Arc<SharedMapping>,
    offset: usize,
    capacity: usize,
}

impl Place {
    fn new(mapping: Arc<SharedMapping>, offset: usize, capacity: usize) -> Place {
        assert!(
            frame_ring_capacity_valid(capacity),
            "ring of {capacity} bytes"
        );
        assert!(
            offset.is_multiple_of(CACHE_LINE_BYTES),
            "ring offset {offset} unaligned"
        );
        assert!(
            offset + frame_ring_bytes(capacity) <= mapping.len(),
            "ring past mapping end"
        );
        Place {
            mapping,
            offset,
            capacity,
        }
    }

    #[inline]
    fn producer_position(&self) -> &AtomicU64 {
        self.mapping
            .atomic_u64(self.offset + PRODUCER_POSITION_OFFSET)
    }

    #[inline]
    fn consumer_position(&self) -> &AtomicU64 {
        self.mapping
            .atomic_u64(self.offset + CONSUMER_POSITION_OFFSET)
    }

    /// Offset in the mapping of data index `index`.
    #[inline]
    fn data(&self, index: usize) -> usize {
        debug_assert!(index < self.capacity);
        self.offset + FRAME_RING_HEADER_BYTES + index
    }

    #[inline]
    fn index(&self, position: u64) -> usize {
        (position as usize) & (self.capacity - 1)
    }
}

/// The only producer of a frame ring. `Send`, not `Clone`.
#[derive(Debug)]
pub struct FrameRingProducer {
    place: Place,
    /// Position of the next record; mirrors the shared producer position once committed.
    position: u64,
    /// Last consumer position seen; refreshed only when the ring looks full.
    consumer_position_cached: u64,
    /// The claim not committed yet: (data index of its header, padding before it, body bytes).
    claimed: Option<(usize, usize, usize)>,
    /// The consumer published an impossible position (see `free_bytes`).
    consumer_lied: bool,
}

impl FrameRingProducer {
    /// Attaches the producer of the ring at `offset` in `mapping`, resuming at the shared
    /// producer position. The caller guarantees there is no other producer.
    pub(crate) fn attach(mapping: Arc<SharedMapping>, offset: usize, capacity: usize) -> Self {
        let place = Place::new(mapping, offset, capacity);
        let position = place.producer_position().load(Ordering::Acquire);
        let consumer_position_cached = place.consumer_position().load(Ordering::Acquire);
        FrameRingProducer {
            place,
            position,
            consumer_position_cached,
            claimed: None,
            consumer_lied: false,
        }
    }

    /// The largest record body this ring takes.
    pub fn body_bytes_max(&self) -> usize {
        record_body_bytes_max(self.place.capacity)
    }

    /// Whether a record of `body_bytes` could be claimed now, wherever the position is.
    #[inline]
    pub fn has_room_for(&mut self, body_bytes: usize) -> bool {
        // The worst case: padding almost a whole record before it.
        self.free_bytes(2 * record_bytes(body_bytes))
    }

    #[inline]
    fn free_bytes(&mut self, needed: usize) -> bool {
        let capacity = self.place.capacity as u64;
        if self.consumer_lied {
            return false;
        }
        if self.position - self.consumer_position_cached + needed as u64 <= capacity {
            return true;
        }
        let consumer = self.place.consumer_position().load(Ordering::Acquire);
        // The consumer is another process: a position ahead of ours, or more than a ring
        // behind it (it never saw those bytes), is a lie. No room from now on: the data
        // plane takes the channel back ([`Self::consumer_broke_protocol`]).
        if consumer > self.position || self.position - consumer > capacity {
            self.consumer_lied = true;
            return false;
        }
        self.consumer_position_cached = consumer;
        self.position - self.consumer_position_cached + needed as u64 <= capacity
    }

    /// Whether the consumer ever published an impossible position (ahead of this
    /// producer, or more than the ring behind it): the ring refuses every claim since.
    pub fn consumer_broke_protocol(&self) -> bool {
        self.consumer_lied
    }

    /// Room for a record of up to `body_bytes` bytes, to be written in place and then
    /// [`commit`](Self::commit)ted. `None` when the consumer has not released enough space
    /// (back-pressure: retry later). Never blocks, allocates or enters the kernel.
    #[inline]
    pub fn claim(&mut self, body_bytes: usize) -> Option<&mut [u8]> {
        assert!(self.claimed.is_none(), "claim while another is open");
        assert!(
            body_bytes <= self.body_bytes_max(),
            "record of {body_bytes} bytes"
        );
        let needed = record_bytes(body_bytes);
        let index = self.place.index(self.position);
        let padding = if index + needed > self.place.capacity {
            self.place.capacity - index
        } else {
            0
        };
        if !self.free_bytes(padding + needed) {
            return None;
        }
        let header_index = if padding > 0 { 0 } else { index };
        self.claimed = Some((header_index, padding, body_bytes));
        let body = self.place.data(header_index) + RECORD_HEADER_BYTES;
        // SAFETY: [position, position + padding + needed) is free space: the consumer
        // released it (checked just above) and only this producer writes there until it
        // publishes a position past it; the borrow of `self` keeps a second claim away.
        Some(unsafe { self.place.mapping.bytes_mut(body, body_bytes) })
    }

    /// Publishes the claimed record with its first `body_bytes` bytes (at most what was
    /// claimed) and `kind` (anything but [`PADDING_KIND`]).
    #[inline]
    pub fn commit(&mut self, kind: u32, body_bytes: usize) {
        let (header_index, padding, claimed) = self.claimed.take().expect("commit without claim");
        assert!(
            body_bytes <= claimed,
            "commit of {body_bytes} > claimed {claimed}"
        );
        assert_ne!(kind, PADDING_KIND);
        let mapping = &self.place.mapping;
        if padding > 0 {
            let at = self.place.data(self.place.index(self.position));
            write_header(
                mapping,
                at,
                (padding - RECORD_HEADER_BYTES) as u32,
                PADDING_KIND,
            );
        }
        write_header(
            mapping,
            self.place.data(header_index),
            body_bytes as u32,
            kind,
        );
        self.position += (padding + record_bytes(body_bytes)) as u64;
        self.place
            .producer_position()
            .store(self.position, Ordering::Release);
    }

    /// Copies one record into the ring; `false` when full.
    pub fn try_write(&mut self, kind: u32, body: &[u8]) -> bool {
        let Some(room) = self.claim(body.len()) else {
            return false;
        };
        room.copy_from_slice(body);
        self.commit(kind, body.len());
        true
    }

    /// Bytes committed and not yet released by the consumer.
    pub fn depth_bytes(&self) -> u64 {
        // The consumer's position is another process's word: never trusted to be behind.
        self.position
            .saturating_sub(self.place.consumer_position().load(Ordering::Acquire))
    }
}

fn write_header(mapping: &SharedMapping, at: usize, length: u32, kind: u32) {
    let mut header = [0u8; RECORD_HEADER_BYTES];
    header[..4].copy_from_slice(&length.to_le_bytes());
    header[4..].copy_from_slice(&kind.to_le_bytes());
    // SAFETY: the header lies in space this producer claimed and has not published yet.
    unsafe { mapping.write_bytes(at, &header) };
}

/// The only consumer of a frame ring. `Send`, not `Clone`.
#[derive(Debug)]
pub struct FrameRingConsumer {
    place: Place,
    position: u64,
}

/// Why a ring's records cannot be read: the producer broke the layout (a bad length, an
/// impossible position), so the other side is not to be trusted any more.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameRingCorrupt {
    #[error("frame ring corrupt at position {position}: record of {length} bytes")]
    Record { position: u64, length: u32 },
    #[error(
        "frame ring corrupt: producer position {producer} is behind the consumer's \
         {consumer} or more than the ring's {capacity_bytes} bytes ahead of it"
    )]
    Position {
        producer: u64,
        consumer: u64,
        capacity_bytes: usize,
    },
}

impl FrameRingConsumer {
    /// Attaches the consumer of the ring at `offset` in `mapping`, resuming at the shared
    /// consumer position. The caller guarantees there is no other consumer.
    pub(crate) fn attach(mapping: Arc<SharedMapping>, offset: usize, capacity: usize) -> Self {
        let place = Place::new(mapping, offset, capacity);
        let position = place.consumer_position().load(Ordering::Acquire);
        FrameRingConsumer { place, position }
    }

    /// Whether a record is waiting (one Acquire load).
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.place.producer_position().load(Ordering::Acquire) == self.position
    }

    /// Calls `f(kind, body)` for up to `records_max` records in order, each read in place,
    /// while `f` returns `true`; the record `f` refused stays for the next call. Then hands
    /// the space back. Returns the records taken. Never blocks, allocates or enters the
    /// kernel.
    #[inline]
    pub fn read(
        &mut self,
        records_max: usize,
        mut f: impl FnMut(u32, &[u8]) -> bool,
    ) -> Result<usize, FrameRingCorrupt> {
        let producer = self.place.producer_position().load(Ordering::Acquire);
        // The producer is another process: a position behind ours (we never read past
        // what it published), or more than a ring ahead (it would have overwritten what
        // we did not release), is a lie. Refused here, the walk below covers at most one
        // ring's bytes: bounded even when every record is padding.
        let capacity = self.place.capacity as u64;
        if producer < self.position || producer - self.position > capacity {
            return Err(FrameRingCorrupt::Position {
                producer,
                consumer: self.position,
                capacity_bytes: self.place.capacity,
            });
        }
        let mut position = self.position;
        let mut taken = 0;
        let result = loop {
            if taken == records_max || position == producer {
                break Ok(());
            }
            let index = self.place.index(position);
            let at = self.place.data(index);
            let mut header = [0u8; RECORD_HEADER_BYTES];
            // SAFETY: below the producer position loaded with Acquire: published, and not
            // written again before this consumer releases it.
            unsafe { self.place.mapping.read_bytes(at, &mut header) };
            let length = u32::from_le_bytes(header[..4].try_into().expect("4 bytes"));
            let kind = u32::from_le_bytes(header[4..].try_into().expect("4 bytes"));
            let bytes = record_bytes(length as usize);
            let available = (producer - position) as usize;
            if index + bytes > self.place.capacity || bytes > available {
                break Err(FrameRingCorrupt::Record { position, length });
            }
            if kind != PADDING_KIND {
                // SAFETY: as above, the whole record is published and ours until released.
                let body = unsafe {
                    self.place
                        .mapping
                        .bytes(at + RECORD_HEADER_BYTES, length as usize)
                };
                if !f(kind, body) {
                    break Ok(());
                }
                taken += 1;
            }
            position += bytes as u64;
        };
        if position != self.position {
            self.position = position;
            self.place
                .consumer_position()
                .store(position, Ordering::Release);
        }
        result.map(|()| taken)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(capacity: usize) -> (tempfile::TempDir, FrameRingProducer, FrameRingConsumer) {
        let dir = tempfile::tempdir().unwrap();
        let mapping = Arc::new(
            SharedMapping::create(&dir.path().join("ring"), frame_ring_bytes(capacity)).unwrap(),
        );
        let producer = FrameRingProducer::attach(Arc::clone(&mapping), 0, capacity);
        let consumer = FrameRingConsumer::attach(mapping, 0, capacity);
        (dir, producer, consumer)
    }

    #[test]
    fn records_arrive_in_order_across_many_wraps() {
        let (_dir, mut producer, mut consumer) = ring(4096);
        let mut next_read = 0u32;
        for i in 0u32..20_000 {
            let len = (i as usize * 7) % 900;
            while !producer.try_write(i, &vec![(i % 251) as u8; len]) {
                let taken = consumer
                    .read(usize::MAX, |kind, body| {
                        assert_eq!(kind, next_read);
                        assert_eq!(body.len(), (next_read as usize * 7) % 900);
                        assert!(body.iter().all(|&b| b == (next_read % 251) as u8));
                        next_read += 1;
                        true
                    })
                    .unwrap();
                assert!(taken > 0, "full ring must have something to read");
            }
        }
        consumer
            .read(usize::MAX, |kind, _| {
                assert_eq!(kind, next_read);
                next_read += 1;
                true
            })
            .unwrap();
        assert_eq!(next_read, 20_000);
        assert!(consumer.is_empty());
        assert_eq!(producer.depth_bytes(), 0);
    }

    #[test]
    fn a_refused_record_stays_for_the_next_read() {
        let (_dir, mut producer, mut consumer) = ring(4096);
        for i in 0..3 {
            assert!(producer.try_write(i, b"abc"));
        }
        assert_eq!(consumer.read(10, |kind, _| kind != 1).unwrap(), 1);
        assert_eq!(consumer.read(1, |kind, _| kind == 1).unwrap(), 1);
        assert_eq!(consumer.read(10, |kind, _| kind == 2).unwrap(), 1);
        assert!(consumer.is_empty());
    }

    #[test]
    fn full_ring_refuses_and_claims_can_shrink() {
        let (_dir, mut producer, mut consumer) = ring(4096);
        let max = producer.body_bytes_max();
        assert_eq!(max, 1024 - 8);
        let mut written = 0;
        while producer.try_write(7, &vec![1; max]) {
            written += 1;
        }
        assert_eq!(written, 4, "four records of a quarter fill the ring");
        assert!(!producer.has_room_for(1));
        assert_eq!(consumer.read(1, |_, body| body.len() == max).unwrap(), 1);
        let room = producer.claim(max).expect("a quarter released");
        room[..5].copy_from_slice(b"hello");
        producer.commit(9, 5);
        assert_eq!(consumer.read(10, |_, _| true).unwrap(), 4);
    }

    #[test]
    fn a_bad_length_is_reported_not_followed() {
        let (_dir, mut producer, mut consumer) = ring(4096);
        assert!(producer.try_write(1, b"ok"));
        // A hostile producer writes a length past what it published.
        write_header(&producer.place.mapping, producer.place.data(0), 4000, 1);
        let error = consumer.read(10, |_, _| true).unwrap_err();
        assert!(matches!(
            error,
            FrameRingCorrupt::Record { length: 4000, .. }
        ));
    }

    /// Found by fuzz/ipc_ring: a producer position behind the consumer's overflowed the
    /// subtraction (a panic in debug builds; in release a walk of 2^64 bytes of padding
    /// records: the lcore hung).
    #[test]
    fn a_producer_position_behind_or_beyond_the_ring_is_refused() {
        let (_dir, mut producer, mut consumer) = ring(4096);
        assert!(producer.try_write(1, b"ok"));
        assert_eq!(consumer.read(10, |_, _| true).unwrap(), 1);
        let published = producer.place.producer_position().load(Ordering::Acquire);
        for lie in [0, published - 1, published + 4096 + 8, u64::MAX] {
            producer
                .place
                .producer_position()
                .store(lie, Ordering::Release);
            let error = consumer.read(usize::MAX, |_, _| true).unwrap_err();
            assert_eq!(
                error,
                FrameRingCorrupt::Position {
                    producer: lie,
                    consumer: published,
                    capacity_bytes: 4096,
                }
            );
        }
    }

    /// A ring full of padding records, published a whole ring ahead: the walk ends after
    /// one ring's bytes, having handed out nothing.
    #[test]
    fn a_ring_of_padding_records_is_walked_once() {
        let (_dir, producer, mut consumer) = ring(4096);
        for index in (0..4096).step_by(RECORD_HEADER_BYTES) {
            write_header(
                &producer.place.mapping,
                producer.place.data(index),
                0,
                PADDING_KIND,
            );
        }
        producer
            .place
            .producer_position()
            .store(4096, Ordering::Release);
        assert_eq!(consumer.read(usize::MAX, |_, _| true).unwrap(), 0);
        assert!(consumer.is_empty());
    }

    /// A consumer position ahead of the producer (or more than a ring behind) tripped an
    /// assertion: a client could take the lcore down through its response ring.
    #[test]
    fn a_consumer_position_that_lies_stops_the_producer_without_a_panic() {
        for lie in [u64::MAX, 4096 * 2] {
            let (_dir, mut producer, consumer) = ring(4096);
            // Fill the ring, so that the next claim looks at the consumer's position.
            while producer.try_write(1, &[7; 1000]) {}
            assert!(!producer.consumer_broke_protocol());
            consumer
                .place
                .consumer_position()
                .store(lie, Ordering::Release);
            assert!(!producer.try_write(1, &[7; 1000]));
            assert!(!producer.has_room_for(1));
            assert!(producer.consumer_broke_protocol());
            assert_eq!(producer.depth_bytes(), 0);
        }
        // Behind by more than a ring: the producer went past 4096 bytes, the consumer
        // says it released nothing.
        let (_dir, mut producer, consumer) = ring(4096);
        while producer.try_write(1, &[7; 1000]) {}
        consumer
            .place
            .consumer_position()
            .store(3 * 1008, Ordering::Release);
        assert!(producer.try_write(1, &[7; 1000]));
        consumer
            .place
            .consumer_position()
            .store(0, Ordering::Release);
        while producer.try_write(1, &[7; 1000]) {}
        assert!(producer.consumer_broke_protocol());
    }

    #[test]
    fn two_processes_worth_of_threads() {
        let (_dir, mut producer, mut consumer) = ring(1 << 16);
        let writer = std::thread::spawn(move || {
            for i in 0u32..200_000 {
                let body = i.to_le_bytes();
                while !producer.try_write(1, &body) {
                    std::hint::spin_loop();
                }
            }
        });
        let mut expected = 0u32;
        while expected < 200_000 {
            consumer
                .read(64, |_, body| {
                    assert_eq!(u32::from_le_bytes(body.try_into().unwrap()), expected);
                    expected += 1;
                    true
                })
                .unwrap();
        }
        writer.join().unwrap();
    }
}
