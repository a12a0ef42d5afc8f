//! Single-producer single-consumer ring of fixed-size slots inside a shared mapping, usable
//! across processes (the Aeron CnC / Lamport ring): the command ring (control plane -> data
//! plane) and the event ring (data plane -> control plane) of the `cnc` file.
//!
//! ```text
//!  ring offset (64-byte aligned)
//!  +0    +----------------------------------------------------------------+
//!        | producer position u64 (entries ever pushed)    | pad to 64 B  |  written by the
//!  +64   +----------------------------------------------------------------+  producer only
//!        | consumer position u64 (entries ever popped)    | pad to 64 B  |  written by the
//!  +128  +----------------------------------------------------------------+  consumer only
//!        | slot 0                                              512 bytes  |
//!        +--------------+----------+------------+-------------------+-----+
//!        | sequence u64 | kind u32 | length u32 | correlation_id u64| payload 488 bytes
//!        +--------------+----------+------------+-------------------+-----+
//!        | slot 1 ...                                                     |
//!        | slot capacity-1                                                |
//!        +----------------------------------------------------------------+
//!  ring_bytes(capacity) = 128 + capacity * 512
//! ```
//!
//! Protocol: the entry at position `p` lives in slot `p % capacity`. The producer pushes at
//! `p` only when `p - consumer_position < capacity` (Acquire load of the consumer
//! position), writes kind, length, correlation id and payload, then stores the slot's
//! `sequence = p + 1` with Release and publishes `producer_position = p + 1` (Release; it
//! is only used for depth and to resume after a restart). The consumer at `c` pops when
//! the slot's sequence loads (Acquire) as `c + 1`, copies the entry out, then stores
//! `consumer_position = c + 1` with Release, which hands the slot back to the producer.
//! A zeroed ring is empty (every sequence is 0, never `c + 1`). Capacity is a power of two.
//!
//! Both positions live in the shared memory, so a consumer or producer that attaches later
//! (the control plane after a restart) resumes where its predecessor stopped.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::SharedMapping;

/// Bytes of one slot: eight cache lines.
pub const RING_SLOT_BYTES: usize = 512;
/// Bytes of a cache line; slots and positions are aligned to it.
pub const CACHE_LINE_BYTES: usize = 64;
/// Bytes of the slot header: sequence u64, kind u32, length u32, correlation id u64.
pub const RING_SLOT_HEADER_BYTES: usize = 24;
/// Largest payload of one entry, in bytes.
pub const RING_PAYLOAD_BYTES_MAX: usize = RING_SLOT_BYTES - RING_SLOT_HEADER_BYTES;
/// Bytes before the first slot: the producer and the consumer position, a line each.
pub const RING_HEADER_BYTES: usize = 2 * CACHE_LINE_BYTES;
/// Fewest slots a ring may have.
pub const RING_SLOTS_MIN: u32 = 2;
/// Most slots a ring may have (32 MiB of slots).
pub const RING_SLOTS_MAX: u32 = 1 << 16;

const PRODUCER_POSITION_OFFSET: usize = 0;
const CONSUMER_POSITION_OFFSET: usize = CACHE_LINE_BYTES;
const SLOT_SEQUENCE_OFFSET: usize = 0;
const SLOT_KIND_OFFSET: usize = 8;
const SLOT_LENGTH_OFFSET: usize = 12;
const SLOT_CORRELATION_OFFSET: usize = 16;
const SLOT_PAYLOAD_OFFSET: usize = RING_SLOT_HEADER_BYTES;

const _: () = assert!(RING_SLOT_BYTES & (CACHE_LINE_BYTES - 1) == 0);
const _: () = assert!(RING_PAYLOAD_BYTES_MAX == 488);
const _: () = assert!(RING_SLOTS_MIN.is_power_of_two() && RING_SLOTS_MAX.is_power_of_two());

/// Bytes a ring of `slots` slots occupies in its mapping.
pub const fn ring_bytes(slots: u32) -> usize {
    RING_HEADER_BYTES + slots as usize * RING_SLOT_BYTES
}

/// Whether `slots` is an acceptable ring capacity: a power of two in
/// `[RING_SLOTS_MIN, RING_SLOTS_MAX]`.
pub const fn ring_slots_valid(slots: u32) -> bool {
    slots.is_power_of_two() && slots >= RING_SLOTS_MIN && slots <= RING_SLOTS_MAX
}

/// Why a push was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RingError {
    /// Every slot holds an entry the consumer has not taken: back-pressure, retry later.
    #[error("ring full: all {capacity} slots hold unconsumed entries")]
    Full { capacity: u64 },
    /// The payload does not fit in a slot.
    #[error("ring entry payload of {payload_bytes} bytes exceeds {RING_PAYLOAD_BYTES_MAX} bytes")]
    TooLarge { payload_bytes: usize },
}

/// One entry taken off the ring; its payload is the first `length` bytes of the buffer
/// given to [`RingConsumer::try_pop`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingEntry {
    pub kind: u32,
    pub correlation_id: u64,
    pub length: usize,
}

/// Where a ring lives: its mapping, its offset in it, its capacity.
#[derive(Debug)]
struct RingPlace {
    mapping: Arc<SharedMapping>,
    offset: usize,
    capacity: u64,
    mask: u64,
}

impl RingPlace {
    fn new(mapping: Arc<SharedMapping>, offset: usize, slots: u32) -> RingPlace {
        assert!(ring_slots_valid(slots), "ring of {slots} slots");
        assert!(
            offset & (CACHE_LINE_BYTES - 1) == 0,
            "ring offset {offset} unaligned"
        );
        assert!(
            offset + ring_bytes(slots) <= mapping.len(),
            "ring past mapping end"
        );
        RingPlace {
            mapping,
            offset,
            capacity: u64::from(slots),
            mask: u64::from(slots) - 1,
        }
    }

    #[inline]
    fn producer_position(&self) -> &std::sync::atomic::AtomicU64 {
        self.mapping
            .atomic_u64(self.offset + PRODUCER_POSITION_OFFSET)
    }

    #[inline]
    fn consumer_position(&self) -> &std::sync::atomic::AtomicU64 {
        self.mapping
            .atomic_u64(self.offset + CONSUMER_POSITION_OFFSET)
    }

    #[inline]
    fn slot_offset(&self, position: u64) -> usize {
        self.offset + RING_HEADER_BYTES + ((position & self.mask) as usize) * RING_SLOT_BYTES
    }

    /// Entries pushed and not yet popped, as seen from either side.
    #[inline]
    fn depth(&self) -> u64 {
        let consumer = self.consumer_position().load(Ordering::Acquire);
        let producer = self.producer_position().load(Ordering::Acquire);
        producer.saturating_sub(consumer).min(self.capacity)
    }
}

/// The only producer of a ring. `Send`, not `Clone`.
#[derive(Debug)]
pub struct RingProducer {
    place: RingPlace,
    /// Position of the next push; mirrors the shared producer position.
    position: u64,
    /// Last consumer position seen; refreshed only when the ring looks full.
    consumer_position_cached: u64,
}

impl RingProducer {
    /// Attaches the producer of the ring at `offset` in `mapping`, resuming at the shared
    /// producer position. The caller guarantees there is no other producer.
    pub(crate) fn attach(mapping: Arc<SharedMapping>, offset: usize, slots: u32) -> Self {
        let place = RingPlace::new(mapping, offset, slots);
        let position = place.producer_position().load(Ordering::Acquire);
        let consumer_position_cached = place.consumer_position().load(Ordering::Acquire);
        RingProducer {
            place,
            position,
            consumer_position_cached,
        }
    }

    /// Copies one entry into the ring. Never blocks, allocates or enters the kernel.
    #[inline]
    pub fn try_push(
        &mut self,
        kind: u32,
        correlation_id: u64,
        payload: &[u8],
    ) -> Result<(), RingError> {
        if payload.len() > RING_PAYLOAD_BYTES_MAX {
            return Err(RingError::TooLarge {
                payload_bytes: payload.len(),
            });
        }
        let place = &self.place;
        if self.position - self.consumer_position_cached >= place.capacity {
            self.consumer_position_cached = place.consumer_position().load(Ordering::Acquire);
            assert!(
                self.consumer_position_cached <= self.position,
                "consumer ahead"
            );
            if self.position - self.consumer_position_cached >= place.capacity {
                return Err(RingError::Full {
                    capacity: place.capacity,
                });
            }
        }
        let slot = place.slot_offset(self.position);
        let mapping = &place.mapping;
        mapping
            .atomic_u32(slot + SLOT_KIND_OFFSET)
            .store(kind, Ordering::Relaxed);
        mapping
            .atomic_u32(slot + SLOT_LENGTH_OFFSET)
            .store(payload.len() as u32, Ordering::Relaxed);
        mapping
            .atomic_u64(slot + SLOT_CORRELATION_OFFSET)
            .store(correlation_id, Ordering::Relaxed);
        // SAFETY: the slot belongs to the producer: the consumer handed it back (its
        // position, loaded with Acquire, is more than one lap behind `self.position`) and
        // will not read it before the Release store of its sequence below.
        unsafe { mapping.write_bytes(slot + SLOT_PAYLOAD_OFFSET, payload) };
        self.position += 1;
        mapping
            .atomic_u64(slot + SLOT_SEQUENCE_OFFSET)
            .store(self.position, Ordering::Release);
        place
            .producer_position()
            .store(self.position, Ordering::Release);
        Ok(())
    }

    /// Entries pushed and not yet popped.
    #[inline]
    pub fn depth(&self) -> u64 {
        self.place.depth()
    }

    /// Slots of the ring.
    pub fn capacity(&self) -> u64 {
        self.place.capacity
    }
}

/// The only consumer of a ring. `Send`, not `Clone`.
#[derive(Debug)]
pub struct RingConsumer {
    place: RingPlace,
    /// Position of the next pop; mirrors the shared consumer position.
    position: u64,
}

impl RingConsumer {
    /// Attaches the consumer of the ring at `offset` in `mapping`, resuming at the shared
    /// consumer position. The caller guarantees there is no other consumer.
    pub(crate) fn attach(mapping: Arc<SharedMapping>, offset: usize, slots: u32) -> Self {
        let place = RingPlace::new(mapping, offset, slots);
        let position = place.consumer_position().load(Ordering::Acquire);
        RingConsumer { place, position }
    }

    /// Takes the oldest entry, copying its payload into `payload`; `None` when the ring is
    /// empty. Never blocks, allocates or enters the kernel. A length field beyond
    /// [`RING_PAYLOAD_BYTES_MAX`] (only a corrupt file has one) is clamped to it.
    #[inline]
    pub fn try_pop(&mut self, payload: &mut [u8; RING_PAYLOAD_BYTES_MAX]) -> Option<RingEntry> {
        let place = &self.place;
        let slot = place.slot_offset(self.position);
        let mapping = &place.mapping;
        let sequence = mapping
            .atomic_u64(slot + SLOT_SEQUENCE_OFFSET)
            .load(Ordering::Acquire);
        if sequence != self.position + 1 {
            return None;
        }
        let kind = mapping
            .atomic_u32(slot + SLOT_KIND_OFFSET)
            .load(Ordering::Relaxed);
        let length = (mapping
            .atomic_u32(slot + SLOT_LENGTH_OFFSET)
            .load(Ordering::Relaxed) as usize)
            .min(RING_PAYLOAD_BYTES_MAX);
        let correlation_id = mapping
            .atomic_u64(slot + SLOT_CORRELATION_OFFSET)
            .load(Ordering::Relaxed);
        // SAFETY: the slot's sequence (Acquire) says the producer finished writing it, and
        // the producer will not write it again before the Release store of our position
        // below, so nobody writes these bytes during the copy.
        unsafe { mapping.read_bytes(slot + SLOT_PAYLOAD_OFFSET, &mut payload[..length]) };
        self.position += 1;
        place
            .consumer_position()
            .store(self.position, Ordering::Release);
        Some(RingEntry {
            kind,
            correlation_id,
            length,
        })
    }

    /// Entries pushed and not yet popped.
    #[inline]
    pub fn depth(&self) -> u64 {
        self.place.depth()
    }

    /// Slots of the ring.
    pub fn capacity(&self) -> u64 {
        self.place.capacity
    }
}

/// A producer and consumer pair over a fresh ring in its own memory file at `path`, for
/// tests and for in-process hand-off. The file is created (or truncated).
pub fn ring_pair(
    path: &std::path::Path,
    slots: u32,
) -> Result<(RingProducer, RingConsumer), crate::ShmError> {
    if !ring_slots_valid(slots) {
        return Err(crate::ShmError::Layout {
            path: path.to_path_buf(),
            reason: "ring slots must be a power of two in [RING_SLOTS_MIN, RING_SLOTS_MAX]",
        });
    }
    let mapping = Arc::new(SharedMapping::create(path, ring_bytes(slots))?);
    Ok((
        RingProducer::attach(Arc::clone(&mapping), 0, slots),
        RingConsumer::attach(mapping, 0, slots),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(slots: u32) -> (tempfile::TempDir, RingProducer, RingConsumer) {
        let dir = tempfile::tempdir().unwrap();
        let (producer, consumer) = ring_pair(&dir.path().join("ring"), slots).unwrap();
        (dir, producer, consumer)
    }

    fn payload_for(index: u64) -> ([u8; RING_PAYLOAD_BYTES_MAX], usize) {
        let mut bytes = [0u8; RING_PAYLOAD_BYTES_MAX];
        let length = (index as usize * 7) % (RING_PAYLOAD_BYTES_MAX + 1);
        for (i, byte) in bytes[..length].iter_mut().enumerate() {
            *byte = (index as usize).wrapping_mul(31).wrapping_add(i) as u8;
        }
        (bytes, length)
    }

    #[test]
    fn layout_constants() {
        assert_eq!(RING_PAYLOAD_BYTES_MAX, 488);
        assert_eq!(ring_bytes(4), 128 + 4 * 512);
        assert!(ring_slots_valid(2) && ring_slots_valid(1 << 16));
        assert!(!ring_slots_valid(0) && !ring_slots_valid(1) && !ring_slots_valid(3));
        assert!(!ring_slots_valid(1 << 17));
    }

    #[test]
    fn wraps_around_many_times() {
        let (_dir, mut producer, mut consumer) = pair(4);
        let mut buffer = [0u8; RING_PAYLOAD_BYTES_MAX];
        assert_eq!(consumer.try_pop(&mut buffer), None);
        for index in 0..4 * 1000u64 {
            let (bytes, length) = payload_for(index);
            producer.try_push(7, index, &bytes[..length]).unwrap();
            assert_eq!(producer.depth(), 1);
            assert_eq!(consumer.depth(), 1);
            let entry = consumer.try_pop(&mut buffer).unwrap();
            assert_eq!(
                entry,
                RingEntry {
                    kind: 7,
                    correlation_id: index,
                    length
                }
            );
            assert_eq!(&buffer[..length], &bytes[..length]);
            assert_eq!(consumer.depth(), 0);
            assert_eq!(consumer.try_pop(&mut buffer), None);
        }
    }

    #[test]
    fn full_ring_pushes_back_then_drains_in_order() {
        let (_dir, mut producer, mut consumer) = pair(8);
        assert_eq!(producer.capacity(), 8);
        assert_eq!(consumer.capacity(), 8);
        for round in 0..3u64 {
            for index in 0..8 {
                producer
                    .try_push(1, round * 8 + index, &[index as u8])
                    .unwrap();
            }
            assert_eq!(producer.depth(), 8);
            assert_eq!(
                producer.try_push(1, 99, b"x"),
                Err(RingError::Full { capacity: 8 })
            );
            let mut buffer = [0u8; RING_PAYLOAD_BYTES_MAX];
            // One pop frees exactly one slot.
            assert_eq!(
                consumer.try_pop(&mut buffer).unwrap().correlation_id,
                round * 8
            );
            producer.try_push(1, round * 8 + 8, &[8]).unwrap();
            assert!(producer.try_push(1, 99, b"x").is_err());
            for index in 1..=8 {
                let entry = consumer.try_pop(&mut buffer).unwrap();
                assert_eq!(entry.correlation_id, round * 8 + index);
                assert_eq!(entry.length, 1);
                assert_eq!(buffer[0], index as u8);
            }
            assert_eq!(consumer.try_pop(&mut buffer), None);
            assert_eq!(producer.depth(), 0);
        }
    }

    #[test]
    fn too_large_payload_is_refused() {
        let (_dir, mut producer, mut consumer) = pair(2);
        let big = [0u8; RING_PAYLOAD_BYTES_MAX + 1];
        assert_eq!(
            producer.try_push(1, 1, &big),
            Err(RingError::TooLarge {
                payload_bytes: RING_PAYLOAD_BYTES_MAX + 1
            })
        );
        assert_eq!(producer.depth(), 0);
        producer
            .try_push(1, 2, &big[..RING_PAYLOAD_BYTES_MAX])
            .unwrap();
        producer.try_push(1, 3, &[]).unwrap();
        let mut buffer = [1u8; RING_PAYLOAD_BYTES_MAX];
        assert_eq!(
            consumer.try_pop(&mut buffer).unwrap().length,
            RING_PAYLOAD_BYTES_MAX
        );
        assert_eq!(buffer, [0u8; RING_PAYLOAD_BYTES_MAX]);
        assert_eq!(consumer.try_pop(&mut buffer).unwrap().length, 0);
        let message = RingError::TooLarge { payload_bytes: 489 }.to_string();
        assert!(
            message.contains("489") && message.contains("488"),
            "{message}"
        );
    }

    #[test]
    fn bad_slot_count_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        for slots in [0, 1, 3, 100, RING_SLOTS_MAX * 2] {
            assert!(
                ring_pair(&dir.path().join("ring"), slots).is_err(),
                "{slots}"
            );
        }
    }

    #[test]
    fn reattached_ends_resume_at_shared_positions() {
        let dir = tempfile::tempdir().unwrap();
        let mapping =
            Arc::new(SharedMapping::create(&dir.path().join("ring"), ring_bytes(4)).unwrap());
        let mut producer = RingProducer::attach(Arc::clone(&mapping), 0, 4);
        let mut consumer = RingConsumer::attach(Arc::clone(&mapping), 0, 4);
        let mut buffer = [0u8; RING_PAYLOAD_BYTES_MAX];
        for index in 0..6 {
            producer.try_push(2, index, b"a").unwrap();
            consumer.try_pop(&mut buffer).unwrap();
        }
        producer.try_push(2, 6, b"b").unwrap();
        drop(consumer);
        drop(producer);
        let mut consumer = RingConsumer::attach(Arc::clone(&mapping), 0, 4);
        let mut producer = RingProducer::attach(mapping, 0, 4);
        assert_eq!(consumer.depth(), 1);
        assert_eq!(consumer.try_pop(&mut buffer).unwrap().correlation_id, 6);
        producer.try_push(2, 7, b"c").unwrap();
        assert_eq!(consumer.try_pop(&mut buffer).unwrap().correlation_id, 7);
    }

    #[test]
    fn two_thread_stress() {
        let (_dir, mut producer, mut consumer) = pair(16);
        const ENTRIES: u64 = 200_000;
        let thread = std::thread::spawn(move || {
            for index in 0..ENTRIES {
                let (bytes, length) = payload_for(index);
                while producer.try_push(3, index, &bytes[..length]).is_err() {
                    std::thread::yield_now();
                }
            }
        });
        let mut buffer = [0u8; RING_PAYLOAD_BYTES_MAX];
        let mut next = 0;
        while next < ENTRIES {
            if let Some(entry) = consumer.try_pop(&mut buffer) {
                let (bytes, length) = payload_for(next);
                assert_eq!(entry.correlation_id, next);
                assert_eq!(entry.length, length);
                assert_eq!(&buffer[..length], &bytes[..length]);
                next += 1;
            } else {
                std::thread::yield_now();
            }
        }
        thread.join().unwrap();
        assert_eq!(consumer.depth(), 0);
    }

    #[test]
    fn ends_are_send() {
        fn is_send<T: Send>() {}
        is_send::<RingProducer>();
        is_send::<RingConsumer>();
    }
}
