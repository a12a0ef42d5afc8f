//! Self-checking benchmark messages: each carries its sequence number, its own length and a
//! CRC32C, so a consumer can prove that what arrived is what was sent, whole and in order.
//!
//! ```text
//!  0              8          12         16                                   size
//!  +--------------+----------+----------+-------------------------------------+
//!  |  seq u64 LE  | crc u32  | size u32 |  filler (derived from seq)           |
//!  +--------------+----------+----------+-------------------------------------+
//!  crc = CRC32C(bytes[0..8] ++ bytes[12..size])
//! ```
//!
//! Sequence numbers count per partition (0, 1, 2, ... for each partition a bench producer
//! writes to); [`Verifier`] checks them per partition.

use std::collections::BTreeMap;

use thiserror::Error;

/// The smallest payload: sequence, checksum and length.
pub const PAYLOAD_BYTES_MIN: usize = 16;
/// The length field is a u32.
pub const PAYLOAD_BYTES_MAX: usize = u32::MAX as usize;

#[derive(Copy, Clone, Debug, PartialEq, Eq, Error)]
pub enum PayloadError {
    #[error("bench payload of {bytes} bytes is shorter than the {PAYLOAD_BYTES_MIN}-byte minimum")]
    TooShort { bytes: usize },
    #[error("bench payload says it is {declared} bytes long but carries {actual}")]
    LengthMismatch { declared: usize, actual: usize },
    #[error("bench payload checksum {found:#010x} does not match its contents ({computed:#010x})")]
    ChecksumMismatch { found: u32, computed: u32 },
}

/// Writes a payload of exactly `size_bytes` bytes for `seq` into `out` (cleared first; its
/// capacity is reused). Panics if `size_bytes` is below [`PAYLOAD_BYTES_MIN`].
pub fn encode(seq: u64, size_bytes: usize, out: &mut Vec<u8>) {
    assert!(
        (PAYLOAD_BYTES_MIN..=PAYLOAD_BYTES_MAX).contains(&size_bytes),
        "bench payload size {size_bytes} outside {PAYLOAD_BYTES_MIN}..={PAYLOAD_BYTES_MAX}"
    );
    out.clear();
    out.reserve(size_bytes);
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&(size_bytes as u32).to_le_bytes());
    // Filler: an xorshift stream seeded by the sequence, so payloads differ from each other
    // (no accidental dedup) at the cost of a few instructions per 8 bytes.
    let mut state = seq ^ 0x9e37_79b9_7f4a_7c15;
    while out.len() < size_bytes {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let take = (size_bytes - out.len()).min(8);
        out.extend_from_slice(&state.to_le_bytes()[..take]);
    }
    let crc = checksum(out);
    out[8..12].copy_from_slice(&crc.to_le_bytes());
    debug_assert_eq!(out.len(), size_bytes);
}

/// Checks a payload and returns its sequence number.
pub fn verify(bytes: &[u8]) -> Result<u64, PayloadError> {
    if bytes.len() < PAYLOAD_BYTES_MIN {
        return Err(PayloadError::TooShort { bytes: bytes.len() });
    }
    let declared = u32::from_le_bytes(bytes[12..16].try_into().expect("4 bytes")) as usize;
    if declared != bytes.len() {
        return Err(PayloadError::LengthMismatch {
            declared,
            actual: bytes.len(),
        });
    }
    let found = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    let computed = checksum(bytes);
    if found != computed {
        return Err(PayloadError::ChecksumMismatch { found, computed });
    }
    Ok(u64::from_le_bytes(bytes[0..8].try_into().expect("8 bytes")))
}

fn checksum(bytes: &[u8]) -> u32 {
    let crc = crc32c::crc32c(&bytes[0..8]);
    crc32c::crc32c_append(crc, &bytes[12..])
}

/// What [`Verifier::observe`] made of one message.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Observation {
    /// The next sequence number, intact.
    InOrder { seq: u64 },
    /// Intact, but `missing` sequence numbers before it never arrived.
    Gap { seq: u64, missing: u64 },
    /// Intact, but at or below a sequence number already seen on this partition.
    Duplicate { seq: u64 },
    /// The payload failed [`verify`].
    Corrupt(PayloadError),
}

/// Counts for one partition, or summed over all of them.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct VerifierCounts {
    /// Messages that were intact and the expected next sequence.
    pub in_order: u64,
    /// Places where sequence numbers were skipped.
    pub gaps: u64,
    /// Sequence numbers skipped, summed over all gaps.
    pub missing: u64,
    /// Messages at or below a sequence already seen.
    pub duplicates: u64,
    /// Messages that failed their checksum or length check.
    pub corrupt: u64,
}

impl VerifierCounts {
    /// True when nothing was skipped, repeated or damaged.
    pub fn is_clean(&self) -> bool {
        self.gaps == 0 && self.missing == 0 && self.duplicates == 0 && self.corrupt == 0
    }

    fn add(&mut self, other: &VerifierCounts) {
        self.in_order += other.in_order;
        self.gaps += other.gaps;
        self.missing += other.missing;
        self.duplicates += other.duplicates;
        self.corrupt += other.corrupt;
    }
}

#[derive(Copy, Clone, Debug, Default)]
struct PartitionTrack {
    /// The sequence the next message should carry; `None` until the first one is seen
    /// (unless [`Verifier::expect`] set it).
    next_seq: Option<u64>,
    counts: VerifierCounts,
}

/// Checks, per partition, that bench payloads arrive intact, each sequence once, in order.
#[derive(Clone, Debug, Default)]
pub struct Verifier {
    partitions: BTreeMap<u16, PartitionTrack>,
}

impl Verifier {
    pub fn new() -> Verifier {
        Verifier::default()
    }

    /// Declares the first sequence expected on `partition` (for a consumer that starts
    /// at the beginning: 0). Without it the first message seen sets the start.
    pub fn expect(&mut self, partition: u16, first_seq: u64) {
        self.partitions.entry(partition).or_default().next_seq = Some(first_seq);
    }

    pub fn observe(&mut self, partition: u16, payload: &[u8]) -> Observation {
        let track = self.partitions.entry(partition).or_default();
        let seq = match verify(payload) {
            Ok(seq) => seq,
            Err(error) => {
                track.counts.corrupt += 1;
                return Observation::Corrupt(error);
            }
        };
        let expected = track.next_seq.unwrap_or(seq);
        if seq == expected {
            track.counts.in_order += 1;
            track.next_seq = Some(seq + 1);
            Observation::InOrder { seq }
        } else if seq > expected {
            let missing = seq - expected;
            track.counts.gaps += 1;
            track.counts.missing += missing;
            track.next_seq = Some(seq + 1);
            Observation::Gap { seq, missing }
        } else {
            track.counts.duplicates += 1;
            Observation::Duplicate { seq }
        }
    }

    /// Records that `partition` should have carried sequences up to `end_seq` (exclusive),
    /// for example the number a bench producer sent: any tail not yet seen counts as one gap.
    /// Returns how many were missing at the end.
    pub fn finish(&mut self, partition: u16, end_seq: u64) -> u64 {
        let track = self.partitions.entry(partition).or_default();
        let next = track.next_seq.unwrap_or(0);
        if end_seq > next {
            let missing = end_seq - next;
            track.counts.gaps += 1;
            track.counts.missing += missing;
            track.next_seq = Some(end_seq);
            missing
        } else {
            0
        }
    }

    /// The sequence expected next on `partition`, if any message or expectation was seen.
    pub fn next_seq(&self, partition: u16) -> Option<u64> {
        self.partitions.get(&partition).and_then(|t| t.next_seq)
    }

    pub fn partition_counts(&self, partition: u16) -> VerifierCounts {
        self.partitions
            .get(&partition)
            .map(|t| t.counts)
            .unwrap_or_default()
    }

    /// Counts per partition, by partition number.
    pub fn per_partition(&self) -> impl Iterator<Item = (u16, VerifierCounts)> + '_ {
        self.partitions.iter().map(|(p, t)| (*p, t.counts))
    }

    pub fn totals(&self) -> VerifierCounts {
        let mut sum = VerifierCounts::default();
        for track in self.partitions.values() {
            sum.add(&track.counts);
        }
        sum
    }

    pub fn is_clean(&self) -> bool {
        self.totals().is_clean()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_verify_round_trip_at_many_sizes() {
        let mut buf = Vec::new();
        for size in [16usize, 17, 23, 24, 25, 100, 1000, 8972] {
            for seq in [0u64, 1, 42, u64::MAX] {
                encode(seq, size, &mut buf);
                assert_eq!(buf.len(), size);
                assert_eq!(verify(&buf), Ok(seq), "size {size} seq {seq}");
            }
        }
    }

    #[test]
    fn payloads_of_different_sequences_differ() {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        encode(1, 64, &mut a);
        encode(2, 64, &mut b);
        assert_ne!(a[16..], b[16..]);
    }

    #[test]
    fn every_single_bit_flip_is_caught() {
        let mut buf = Vec::new();
        encode(7, 40, &mut buf);
        for byte in 0..buf.len() {
            for bit in 0..8 {
                let mut damaged = buf.clone();
                damaged[byte] ^= 1 << bit;
                assert!(verify(&damaged).is_err(), "flip of byte {byte} bit {bit}");
            }
        }
    }

    #[test]
    fn short_and_truncated_payloads_are_refused() {
        assert_eq!(verify(&[0; 15]), Err(PayloadError::TooShort { bytes: 15 }));
        let mut buf = Vec::new();
        encode(3, 64, &mut buf);
        assert_eq!(
            verify(&buf[..63]),
            Err(PayloadError::LengthMismatch {
                declared: 64,
                actual: 63
            })
        );
    }

    #[test]
    #[should_panic]
    fn encode_refuses_sizes_below_the_header() {
        encode(0, 15, &mut Vec::new());
    }

    fn payload(seq: u64) -> Vec<u8> {
        let mut buf = Vec::new();
        encode(seq, 32, &mut buf);
        buf
    }

    #[test]
    fn verifier_counts_in_order_gaps_duplicates_and_corruption() {
        let mut v = Verifier::new();
        v.expect(0, 0);
        assert_eq!(v.observe(0, &payload(0)), Observation::InOrder { seq: 0 });
        assert_eq!(v.observe(0, &payload(1)), Observation::InOrder { seq: 1 });
        assert_eq!(
            v.observe(0, &payload(4)),
            Observation::Gap { seq: 4, missing: 2 }
        );
        assert_eq!(v.observe(0, &payload(4)), Observation::Duplicate { seq: 4 });
        assert_eq!(v.observe(0, &payload(2)), Observation::Duplicate { seq: 2 });
        assert_eq!(v.observe(0, &payload(5)), Observation::InOrder { seq: 5 });
        let mut bad = payload(6);
        bad[20] ^= 0xff;
        assert!(matches!(
            v.observe(0, &bad),
            Observation::Corrupt(PayloadError::ChecksumMismatch { .. })
        ));
        assert_eq!(v.observe(0, &payload(6)), Observation::InOrder { seq: 6 });

        let counts = v.partition_counts(0);
        assert_eq!(
            counts,
            VerifierCounts {
                in_order: 4,
                gaps: 1,
                missing: 2,
                duplicates: 2,
                corrupt: 1
            }
        );
        assert!(!v.is_clean());
        assert_eq!(v.next_seq(0), Some(7));
    }

    #[test]
    fn verifier_keeps_partitions_apart() {
        let mut v = Verifier::new();
        for seq in 0..10 {
            v.observe(0, &payload(seq));
            v.observe(1, &payload(seq + 100));
        }
        assert!(v.is_clean());
        assert_eq!(v.totals().in_order, 20);
        assert_eq!(v.next_seq(0), Some(10));
        assert_eq!(v.next_seq(1), Some(110));
        assert_eq!(v.per_partition().count(), 2);
        assert_eq!(v.next_seq(2), None);
    }

    #[test]
    fn verifier_without_expectation_starts_at_the_first_seen() {
        let mut v = Verifier::new();
        assert_eq!(v.observe(3, &payload(50)), Observation::InOrder { seq: 50 });
        assert!(v.is_clean());
    }

    #[test]
    fn finish_counts_a_missing_tail() {
        let mut v = Verifier::new();
        v.expect(0, 0);
        for seq in 0..5 {
            v.observe(0, &payload(seq));
        }
        assert_eq!(v.finish(0, 5), 0);
        assert!(v.is_clean());
        assert_eq!(v.finish(0, 8), 3);
        assert_eq!(v.partition_counts(0).missing, 3);
        assert_eq!(
            v.finish(1, 2),
            2,
            "a partition never seen misses everything"
        );
    }
}
