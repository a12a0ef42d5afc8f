//! Idempotent producer state of one partition, as Kafka keeps it: per producer id the
//! epoch and the last [`PRODUCER_BATCHES_REMEMBERED`] batches (sequence range and offsets).
//! Bounded and preallocated: `check` and `record` never allocate; when the table is full
//! the least recently used producer is evicted. The slots are reserved, not written, at
//! `new` (a `Vec` of that capacity, filled as producers arrive): an idle partition's
//! table costs address space, not memory, so ten thousand partitions of 1024 producers
//! each fit in a few MiB until their producers come.

use std::collections::HashMap;

use precursor_protocol::record_batch::{increment_sequence, RecordBatchHeader};

use super::AppendError;

/// Batches remembered per producer for duplicate detection (Kafka: 5, the most in-flight
/// requests an idempotent producer may have).
pub const PRODUCER_BATCHES_REMEMBERED: usize = 5;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct RememberedBatch {
    first_sequence: i32,
    last_sequence: i32,
    base_offset: u64,
    last_offset: u64,
}

#[derive(Clone, Copy, Debug, Default)]
struct ProducerEntry {
    producer_id: i64,
    epoch: i16,
    /// Ring of the last batches, oldest at `(head + PRODUCER_BATCHES_REMEMBERED - count) %`.
    batches: [RememberedBatch; PRODUCER_BATCHES_REMEMBERED],
    count: usize,
    head: usize,
    last_used: u64,
}

impl ProducerEntry {
    fn latest(&self) -> Option<&RememberedBatch> {
        (self.count > 0).then(|| {
            &self.batches
                [(self.head + PRODUCER_BATCHES_REMEMBERED - 1) % PRODUCER_BATCHES_REMEMBERED]
        })
    }

    fn oldest(&self) -> Option<&RememberedBatch> {
        (self.count > 0).then(|| {
            &self.batches[(self.head + PRODUCER_BATCHES_REMEMBERED - self.count)
                % PRODUCER_BATCHES_REMEMBERED]
        })
    }

    fn remembered(&self) -> impl Iterator<Item = &RememberedBatch> {
        (0..self.count).map(move |i| {
            &self.batches
                [(self.head + PRODUCER_BATCHES_REMEMBERED - 1 - i) % PRODUCER_BATCHES_REMEMBERED]
        })
    }

    fn push(&mut self, batch: RememberedBatch) {
        self.batches[self.head] = batch;
        self.head = (self.head + 1) % PRODUCER_BATCHES_REMEMBERED;
        self.count = (self.count + 1).min(PRODUCER_BATCHES_REMEMBERED);
    }
}

/// What the sequence check decided for a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SequenceCheck {
    /// Append it (and then `record` it).
    Append,
    /// A retransmission of a batch already in the log at these offsets.
    Duplicate { base_offset: u64, last_offset: u64 },
}

/// The producer table of one partition.
pub struct ProducerTable {
    /// Grows (within its capacity, never reallocating) up to `slots_max`.
    slots: Vec<ProducerEntry>,
    slots_max: usize,
    /// Producer id -> slot. Capacity is twice the slots so that hashbrown's in-place rehash
    /// (after many evictions) never needs to grow the table: no allocation after `new`.
    by_id: HashMap<i64, u32>,
    clock: u64,
}

impl ProducerTable {
    pub fn new(producers_max: u32) -> ProducerTable {
        assert!(producers_max > 0);
        let producers_max = producers_max as usize;
        ProducerTable {
            slots: Vec::with_capacity(producers_max),
            slots_max: producers_max,
            by_id: HashMap::with_capacity(producers_max * 2),
            clock: 0,
        }
    }

    /// Producers remembered.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Kafka's sequence check for a batch about to be appended.
    pub fn check(&self, header: &RecordBatchHeader) -> Result<SequenceCheck, AppendError> {
        if !header.has_producer_id() {
            return Ok(SequenceCheck::Append);
        }
        let Some(&slot) = self.by_id.get(&header.producer_id) else {
            // Unknown (new or evicted) producer: any sequence starts its history.
            return Ok(SequenceCheck::Append);
        };
        let entry = &self.slots[slot as usize];
        if header.producer_epoch < entry.epoch {
            return Err(AppendError::InvalidProducerEpoch);
        }
        let found = header.base_sequence;
        if header.producer_epoch > entry.epoch {
            // A new epoch restarts the sequence at 0.
            if found != 0 {
                return Err(AppendError::OutOfOrderSequence { expected: 0, found });
            }
            return Ok(SequenceCheck::Append);
        }
        let last_sequence = header.last_sequence();
        if let Some(original) = entry
            .remembered()
            .find(|b| b.first_sequence == found && b.last_sequence == last_sequence)
        {
            return Ok(SequenceCheck::Duplicate {
                base_offset: original.base_offset,
                last_offset: original.last_offset,
            });
        }
        let Some(latest) = entry.latest() else {
            return Ok(SequenceCheck::Append);
        };
        let expected = increment_sequence(latest.last_sequence, 1);
        if found == expected {
            return Ok(SequenceCheck::Append);
        }
        let oldest = entry.oldest().expect("count > 0");
        if found < oldest.first_sequence && last_sequence < oldest.first_sequence {
            return Err(AppendError::DuplicateSequence);
        }
        Err(AppendError::OutOfOrderSequence { expected, found })
    }

    /// Remembers a batch appended at `base_offset..=last_offset` (after `check` said
    /// `Append`, or replaying the log in recovery).
    pub fn record(&mut self, header: &RecordBatchHeader, base_offset: u64, last_offset: u64) {
        if !header.has_producer_id() {
            return;
        }
        self.clock += 1;
        let slot = match self.by_id.get(&header.producer_id) {
            Some(&slot) => slot,
            None => {
                let fresh = ProducerEntry {
                    producer_id: header.producer_id,
                    epoch: header.producer_epoch,
                    ..ProducerEntry::default()
                };
                let slot = if self.slots.len() < self.slots_max {
                    // Within the capacity reserved at `new`: no allocation.
                    debug_assert!(self.slots.len() < self.slots.capacity());
                    self.slots.push(fresh);
                    (self.slots.len() - 1) as u32
                } else {
                    let slot = self.evict_least_recently_used();
                    self.slots[slot as usize] = fresh;
                    slot
                };
                let had_room = self.by_id.len() < self.slots_max;
                assert!(had_room, "producer map holds more producers than slots");
                self.by_id.insert(header.producer_id, slot);
                assert_eq!(self.by_id.len(), self.slots.len());
                slot
            }
        };
        let entry = &mut self.slots[slot as usize];
        if header.producer_epoch != entry.epoch {
            entry.epoch = header.producer_epoch;
            entry.count = 0;
            entry.head = 0;
        }
        entry.last_used = self.clock;
        entry.push(RememberedBatch {
            first_sequence: header.base_sequence,
            last_sequence: header.last_sequence(),
            base_offset,
            last_offset,
        });
    }

    fn evict_least_recently_used(&mut self) -> u32 {
        // O(producers) but only when a new producer arrives at a full table.
        let (slot, entry) = self
            .slots
            .iter()
            .enumerate()
            .min_by_key(|(_, entry)| entry.last_used)
            .expect("at least one slot");
        let producer_id = entry.producer_id;
        let removed = self.by_id.remove(&producer_id);
        assert_eq!(removed, Some(slot as u32));
        slot as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(producer_id: i64, epoch: i16, base_sequence: i32, records: i32) -> RecordBatchHeader {
        RecordBatchHeader {
            base_offset: 0,
            batch_length: 49,
            partition_leader_epoch: -1,
            magic: 2,
            crc: 0,
            attributes: 0,
            last_offset_delta: records - 1,
            base_timestamp: 0,
            max_timestamp: 0,
            producer_id,
            producer_epoch: epoch,
            base_sequence,
            records_count: records,
        }
    }

    #[test]
    fn kafka_sequence_rules() {
        let mut table = ProducerTable::new(4);
        let mut offset = 0;
        let mut append = |table: &mut ProducerTable, h: RecordBatchHeader| {
            assert_eq!(table.check(&h).unwrap(), SequenceCheck::Append);
            table.record(&h, offset, offset + h.last_offset_delta as u64);
            offset += h.records_count as u64;
        };
        for i in 0..7 {
            append(&mut table, header(7, 0, i * 2, 2));
        }
        // Duplicates of the last five batches (sequences 4..=13) give their offsets.
        assert_eq!(
            table.check(&header(7, 0, 12, 2)).unwrap(),
            SequenceCheck::Duplicate {
                base_offset: 12,
                last_offset: 13
            }
        );
        assert_eq!(
            table.check(&header(7, 0, 4, 2)).unwrap(),
            SequenceCheck::Duplicate {
                base_offset: 4,
                last_offset: 5
            }
        );
        // Older than the window.
        assert_eq!(
            table.check(&header(7, 0, 0, 2)),
            Err(AppendError::DuplicateSequence)
        );
        // Gap.
        assert_eq!(
            table.check(&header(7, 0, 16, 1)),
            Err(AppendError::OutOfOrderSequence {
                expected: 14,
                found: 16
            })
        );
        // Fenced epoch, new epoch must start at 0.
        append(&mut table, header(7, 1, 0, 1));
        assert_eq!(
            table.check(&header(7, 0, 14, 1)),
            Err(AppendError::InvalidProducerEpoch)
        );
        assert_eq!(
            table.check(&header(7, 2, 5, 1)),
            Err(AppendError::OutOfOrderSequence {
                expected: 0,
                found: 5
            })
        );
        // Non-idempotent batches are never checked.
        assert_eq!(
            table.check(&header(-1, -1, -1, 3)).unwrap(),
            SequenceCheck::Append
        );
    }

    #[test]
    fn sequence_wraps_like_kafka() {
        let mut table = ProducerTable::new(1);
        let h = header(1, 0, i32::MAX - 1, 2);
        table.record(&h, 0, 1);
        assert_eq!(
            table.check(&header(1, 0, 0, 1)).unwrap(),
            SequenceCheck::Append
        );
    }

    #[test]
    fn least_recently_used_producer_is_evicted() {
        let mut table = ProducerTable::new(3);
        for round in 0..50 {
            for id in 0..5i64 {
                table.record(&header(id + round * 5, 0, 0, 1), 0, 0);
                assert!(table.len() <= 3);
            }
        }
        // Producer 249 is the most recent, 245 was evicted.
        assert!(table.by_id.contains_key(&249));
        assert!(!table.by_id.contains_key(&245));
    }
}
