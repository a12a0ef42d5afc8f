//! Partition replication between data planes (DESIGN.md §10): followers pull.
//!
//! A follower keeps one [`ReplicaFetch`] outstanding per partition at its leader: "I hold
//! everything below `fetch_offset`, my last batch is of `last_fetched_epoch`, my disk has
//! everything below `durable_offset`". The leader answers with a [`ReplicaData`] frame:
//! whole batches from `fetch_offset` on, exactly as stored (same offsets, same CRC, the
//! batch's `partitionLeaderEpoch` set by the leader when it appended), and its high
//! watermark. A fetch at the leader's log end is parked (long poll) and answered in the
//! same loop iteration as the next append, so acks=all costs one round trip: leader
//! appends -> data to follower -> follower's next fetch (its new log end) -> high
//! watermark moves -> ack.
//!
//! The fetch offset *is* the acknowledgement: a follower fetching at X holds everything
//! below X. Loss is harmless: a fetch that gets no answer is sent again; a ReplicaData
//! whose first batch is not at the follower's log end is dropped.
//!
//! Divergence (KIP-101, KIP-320): the leader checks `last_fetched_epoch` against its own
//! epoch history. If its log for that epoch ends below `fetch_offset`, the answer carries
//! `diverging_end_offset`: the follower truncates its log there before it fetches again.
//!
//! Topics are named across brokers by [`topic key`](ReplicaFetch::topic_key), the FNV-1a
//! 64 of the topic's name (each broker numbers its topics itself), and the partition index.
//!
//! ```text
//! ReplicaFetch (48 bytes, little-endian):
//!   0 topic_key u64 | 8 partition u16 | 10 follower_id u16 | 12 leader_epoch u32 |
//!  16 fetch_offset u64 | 24 durable_offset u64 | 32 last_fetched_epoch u32 |
//!  36 max_bytes u32 | 40 fragment_bytes u32 | 44 zero u32
//!
//! ReplicaData header (64 bytes), then whole record batches or one batch's fragment:
//!   0 topic_key u64 | 8 partition u16 | 10 leader_id u16 | 12 leader_epoch u32 |
//!  16 high_watermark u64 | 24 log_start_offset u64 | 32 log_end_offset u64 |
//!  40 diverging_end_offset u64 | 48 isr_packed u64 | 56 fragment_at u32 |
//!  60 fragment_of u32
//! ```
//!
//! A batch larger than what one frame of the port carries (a 1 MB Kafka batch over a
//! 1500-byte MTU) travels in fragments: the follower copies each into its segment's
//! unpublished bytes and publishes the batch once whole and its CRC checks.

use crate::frame::{u16_le, u32_le, u64_le, FrameError, Opcode};

/// ReplicaData frame flag: more frames answer the same fetch (a train: the leader sends
/// up to a window of frames per fetch, so a follower catching up is not limited to one
/// frame per round trip). The frame without it is the fetch's last.
pub const FLAG_REPLICA_MORE: u16 = 1 << 0;

/// ReplicaData frame flag: the leader has acks=all-durable answers waiting on this
/// partition: fdatasync what you append now and report your durable offset when it moves.
pub const FLAG_REPLICA_SYNC: u16 = 1 << 1;

/// A [`ReplicaDataHeader::diverging_end_offset`] that says "no divergence".
pub const NO_DIVERGENCE: u64 = u64::MAX;
/// A [`ReplicaFetch::last_fetched_epoch`] of a follower whose log is empty.
pub const NO_EPOCH: u32 = u32::MAX;

/// A follower's fetch: what it holds, and how much it wants.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Default)]
pub struct ReplicaFetch {
    pub topic_key: u64,
    pub partition: u16,
    /// The follower's broker id (1..=64).
    pub follower_id: u16,
    /// The epoch the follower believes the leader leads.
    pub leader_epoch: u32,
    /// The follower's log end offset: it holds every offset below it.
    pub fetch_offset: u64,
    /// Offsets below this are fdatasync'd on the follower.
    pub durable_offset: u64,
    /// Leader epoch of the follower's last batch ([`NO_EPOCH`] for an empty log).
    pub last_fetched_epoch: u32,
    /// Bytes of batches the follower can take in one answer (a soft limit: at least one
    /// batch is always sent).
    pub max_bytes: u32,
    /// Bytes of the batch at `fetch_offset` the follower already holds from earlier
    /// fragments (a batch larger than a frame travels in pieces); 0 otherwise.
    pub fragment_bytes: u32,
}

impl ReplicaFetch {
    pub const BYTES: usize = 48;

    pub fn encode(&self, out: &mut [u8]) {
        let out = &mut out[..Self::BYTES];
        out[0..8].copy_from_slice(&self.topic_key.to_le_bytes());
        out[8..10].copy_from_slice(&self.partition.to_le_bytes());
        out[10..12].copy_from_slice(&self.follower_id.to_le_bytes());
        out[12..16].copy_from_slice(&self.leader_epoch.to_le_bytes());
        out[16..24].copy_from_slice(&self.fetch_offset.to_le_bytes());
        out[24..32].copy_from_slice(&self.durable_offset.to_le_bytes());
        out[32..36].copy_from_slice(&self.last_fetched_epoch.to_le_bytes());
        out[36..40].copy_from_slice(&self.max_bytes.to_le_bytes());
        out[40..44].copy_from_slice(&self.fragment_bytes.to_le_bytes());
        out[44..48].fill(0);
    }

    pub fn decode(payload: &[u8]) -> Result<ReplicaFetch, FrameError> {
        if payload.len() != Self::BYTES {
            return Err(FrameError::PayloadTooShort {
                opcode: Opcode::ReplicaFetch,
                bytes: payload.len(),
            });
        }
        let fetch = ReplicaFetch {
            topic_key: u64_le(payload, 0),
            partition: u16_le(payload, 8),
            follower_id: u16_le(payload, 10),
            leader_epoch: u32_le(payload, 12),
            fetch_offset: u64_le(payload, 16),
            durable_offset: u64_le(payload, 24),
            last_fetched_epoch: u32_le(payload, 32),
            max_bytes: u32_le(payload, 36),
            fragment_bytes: u32_le(payload, 40),
        };
        if fetch.durable_offset > fetch.fetch_offset {
            return Err(FrameError::Malformed {
                reason: "replica durable offset beyond its fetch offset",
            });
        }
        Ok(fetch)
    }
}

/// The fixed start of a ReplicaData payload.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Default)]
pub struct ReplicaDataHeader {
    pub topic_key: u64,
    pub partition: u16,
    pub leader_id: u16,
    pub leader_epoch: u32,
    /// Offsets below this are held by every in-sync replica (consumers may read them).
    pub high_watermark: u64,
    pub log_start_offset: u64,
    /// The leader's log end offset (the follower is caught up when it reaches it).
    pub log_end_offset: u64,
    /// [`NO_DIVERGENCE`], or where the follower must cut its log before fetching on.
    pub diverging_end_offset: u64,
    /// The in-sync replicas, broker ids packed one byte each from the lowest.
    pub isr_packed: u64,
    /// 0: whole batches follow. Else the payload is bytes `fragment_at..` of the one
    /// batch at the fetch offset, `fragment_of` bytes in all.
    pub fragment_at: u32,
    pub fragment_of: u32,
}

impl ReplicaDataHeader {
    pub const BYTES: usize = 64;

    pub fn encode(&self, out: &mut [u8]) {
        let out = &mut out[..Self::BYTES];
        out[0..8].copy_from_slice(&self.topic_key.to_le_bytes());
        out[8..10].copy_from_slice(&self.partition.to_le_bytes());
        out[10..12].copy_from_slice(&self.leader_id.to_le_bytes());
        out[12..16].copy_from_slice(&self.leader_epoch.to_le_bytes());
        out[16..24].copy_from_slice(&self.high_watermark.to_le_bytes());
        out[24..32].copy_from_slice(&self.log_start_offset.to_le_bytes());
        out[32..40].copy_from_slice(&self.log_end_offset.to_le_bytes());
        out[40..48].copy_from_slice(&self.diverging_end_offset.to_le_bytes());
        out[48..56].copy_from_slice(&self.isr_packed.to_le_bytes());
        out[56..60].copy_from_slice(&self.fragment_at.to_le_bytes());
        out[60..64].copy_from_slice(&self.fragment_of.to_le_bytes());
    }

    /// The header and the batches after it.
    pub fn decode(payload: &[u8]) -> Result<(ReplicaDataHeader, &[u8]), FrameError> {
        if payload.len() < Self::BYTES {
            return Err(FrameError::PayloadTooShort {
                opcode: Opcode::ReplicaData,
                bytes: payload.len(),
            });
        }
        let header = ReplicaDataHeader {
            topic_key: u64_le(payload, 0),
            partition: u16_le(payload, 8),
            leader_id: u16_le(payload, 10),
            leader_epoch: u32_le(payload, 12),
            high_watermark: u64_le(payload, 16),
            log_start_offset: u64_le(payload, 24),
            log_end_offset: u64_le(payload, 32),
            diverging_end_offset: u64_le(payload, 40),
            isr_packed: u64_le(payload, 48),
            fragment_at: u32_le(payload, 56),
            fragment_of: u32_le(payload, 60),
        };
        let rest = payload.len() - Self::BYTES;
        let fragment_overflows = header.fragment_of != 0
            && (header.fragment_at as usize + rest > header.fragment_of as usize);
        if header.high_watermark > header.log_end_offset
            || header.log_start_offset > header.log_end_offset
            || fragment_overflows
            || (header.fragment_of == 0 && header.fragment_at != 0)
        {
            return Err(FrameError::Malformed {
                reason: "replica data offsets out of order",
            });
        }
        Ok((header, &payload[Self::BYTES..]))
    }
}

/// FNV-1a 64 of a topic's name: how brokers name a topic to each other (the same function
/// as the config crate's placement hash, which cannot depend on this crate).
pub fn topic_key(name: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in name.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fetch_round_trips_and_refuses_bad_payloads() {
        let fetch = ReplicaFetch {
            topic_key: topic_key("orders"),
            partition: 7,
            follower_id: 3,
            leader_epoch: 12,
            fetch_offset: 1 << 40,
            durable_offset: 1 << 39,
            last_fetched_epoch: 11,
            max_bytes: 8916,
            fragment_bytes: 1400,
        };
        let mut bytes = [0xffu8; ReplicaFetch::BYTES];
        fetch.encode(&mut bytes);
        assert_eq!(ReplicaFetch::decode(&bytes), Ok(fetch));
        assert!(ReplicaFetch::decode(&bytes[..ReplicaFetch::BYTES - 1]).is_err());
        let mut longer = bytes.to_vec();
        longer.push(0);
        assert!(ReplicaFetch::decode(&longer).is_err());
        let forged = ReplicaFetch {
            durable_offset: fetch.fetch_offset + 1,
            ..fetch
        };
        forged.encode(&mut bytes);
        assert!(matches!(
            ReplicaFetch::decode(&bytes),
            Err(FrameError::Malformed { .. })
        ));
    }

    #[test]
    fn data_header_round_trips_and_refuses_disordered_offsets() {
        let header = ReplicaDataHeader {
            topic_key: 42,
            partition: 1,
            leader_id: 2,
            leader_epoch: 5,
            high_watermark: 90,
            log_start_offset: 10,
            log_end_offset: 100,
            diverging_end_offset: NO_DIVERGENCE,
            isr_packed: 0x0201,
            fragment_at: 0,
            fragment_of: 0,
        };
        let mut bytes = vec![0u8; ReplicaDataHeader::BYTES + 3];
        header.encode(&mut bytes);
        bytes[ReplicaDataHeader::BYTES..].copy_from_slice(b"abc");
        let (decoded, batches) = ReplicaDataHeader::decode(&bytes).unwrap();
        assert_eq!(decoded, header);
        assert_eq!(batches, b"abc");
        assert!(ReplicaDataHeader::decode(&bytes[..ReplicaDataHeader::BYTES - 1]).is_err());
        let fragment = ReplicaDataHeader {
            fragment_at: 10,
            fragment_of: 13,
            ..header
        };
        fragment.encode(&mut bytes);
        assert_eq!(ReplicaDataHeader::decode(&bytes).unwrap().0, fragment);
        for forged in [
            ReplicaDataHeader {
                high_watermark: 101,
                ..header
            },
            ReplicaDataHeader {
                fragment_at: 11,
                fragment_of: 13,
                ..header
            },
            ReplicaDataHeader {
                fragment_at: 1,
                ..header
            },
        ] {
            forged.encode(&mut bytes);
            assert!(ReplicaDataHeader::decode(&bytes).is_err(), "{forged:?}");
        }
    }

    #[test]
    fn topic_keys_are_stable() {
        // FNV-1a 64 test vectors.
        assert_eq!(topic_key(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(topic_key("a"), 0xaf63_dc4c_8601_ec8c);
        assert_ne!(topic_key("orders"), topic_key("orders2"));
    }
}
