//! Where a message goes: Kafka's default partitioner, so a key lands on the same partition
//! number here as it would with a Kafka client on a topic of the same partition count.

/// Kafka's `Utils.murmur2`: MurmurHash2, 32-bit, seed 0x9747b28c.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;

    let length = data.len();
    let mut h: u32 = SEED ^ (length as u32);
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = chunks.remainder();
    if tail.len() >= 3 {
        h ^= (tail[2] as u32) << 16;
    }
    if tail.len() >= 2 {
        h ^= (tail[1] as u32) << 8;
    }
    if !tail.is_empty() {
        h ^= tail[0] as u32;
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// Kafka's `Utils.toPositive`: clears the sign bit (not `abs`, which overflows on MIN).
pub fn to_positive(number: i32) -> u32 {
    (number & 0x7fff_ffff) as u32
}

/// The partition Kafka's default partitioner picks for a keyed record.
pub fn partition_for_key(key: &[u8], partition_count: u16) -> u16 {
    assert!(partition_count > 0, "a topic has at least one partition");
    (to_positive(murmur2(key)) % partition_count as u32) as u16
}

/// The partition for a record without key and without an explicit partition: stick to one
/// partition until its batch is sent, then move to the next (Kafka's sticky partitioner,
/// here round-robin so the load spreads evenly and deterministically).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct StickyPartition {
    current: u16,
}

impl StickyPartition {
    /// Starts at `seed % partition_count`, so producers started together spread out.
    pub fn new(seed: u64, partition_count: u16) -> StickyPartition {
        assert!(partition_count > 0);
        StickyPartition {
            current: (seed % partition_count as u64) as u16,
        }
    }

    pub fn current(&self) -> u16 {
        self.current
    }

    /// Called when the batch of `closed` was closed: moves on only if it was ours.
    pub fn on_batch_closed(&mut self, closed: u16, partition_count: u16) {
        assert!(partition_count > 0);
        if closed == self.current {
            self.current = ((self.current as u32 + 1) % partition_count as u32) as u16;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Kafka's own `UtilsTest.testMurmur2` cases, plus librdkafka's and Akka's checks of them.
    #[test]
    fn murmur2_matches_kafka() {
        let cases: &[(&[u8], i32)] = &[
            (b"21", -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            (b"abc", 479_470_107),
            (b"1", -1_993_445_489),
            (b"12", 126_087_238),
            (b"123", -267_702_483),
            (b"1234", -1_614_185_708),
            (b"12345", -1_188_365_604),
            (b"string-f-24-chars-length", 124_730_809),
            (b"string-fo-25-chars-length", 1_269_511_650),
            (b"string-foo-26-chars-length", 119_165_628),
            (b"string-last-27-chars-length", 1_089_971_754),
            (b"kafka", -798_503_068),
        ];
        for (key, want) in cases {
            assert_eq!(
                murmur2(key),
                *want,
                "murmur2({:?})",
                String::from_utf8_lossy(key)
            );
        }
    }

    #[test]
    fn to_positive_clears_the_sign_bit() {
        assert_eq!(
            to_positive(-973_932_308),
            (-973_932_308i32 & 0x7fff_ffff) as u32
        );
        assert_eq!(to_positive(i32::MIN), 0);
        assert_eq!(to_positive(-1), 0x7fff_ffff);
        assert_eq!(to_positive(5), 5);
    }

    #[test]
    fn keyed_partition_is_kafkas() {
        // toPositive(murmur2("21")) = 1173551340; mod 7 = 3, mod 16 = 12.
        assert_eq!(to_positive(murmur2(b"21")), 1_173_551_340);
        assert_eq!(partition_for_key(b"21", 7), 3);
        assert_eq!(partition_for_key(b"21", 16), 12);
        assert_eq!(partition_for_key(b"anything", 1), 0);
    }

    #[test]
    fn sticky_moves_only_when_its_own_batch_closes() {
        let mut sticky = StickyPartition::new(5, 3);
        assert_eq!(sticky.current(), 2);
        sticky.on_batch_closed(0, 3);
        assert_eq!(sticky.current(), 2);
        sticky.on_batch_closed(2, 3);
        assert_eq!(sticky.current(), 0);
        sticky.on_batch_closed(0, 3);
        assert_eq!(sticky.current(), 1);
    }
}
