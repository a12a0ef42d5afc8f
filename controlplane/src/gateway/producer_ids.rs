//! InitProducerId: producer ids for idempotent Kafka producers.
//!
//! Ids come from blocks of [`PRODUCER_ID_BLOCK`]: before the first id of a block is handed
//! out, the end of the block is written durably to `<state_dir>/producer_ids`; after a
//! restart the gateway continues from that end. An id is therefore never handed out twice,
//! even across crashes (a crash skips the rest of a block).
//!
//! The gateway's ids are `1 ..` [`GATEWAY_PRODUCER_ID_END`]; the native client draws its
//! ids at random from `NATIVE_PRODUCER_ID_MIN..=i64::MAX` (`client/src/producer.rs`), the
//! same bound: an id of one is never an id of the other.
//!
//! In a cluster each broker's gateway hands out ids from its own file, so the ids are
//! spread ([`IdSpace`]): broker `b` hands out `n * 64 + (b - 1)` for its `n`s. Producers
//! reach any broker for their id, and the data plane keys a partition's idempotence state
//! by producer id: two producers given the same id by two brokers would fence each other
//! (OUT_OF_ORDER_SEQUENCE_NUMBER at the first batch of the second).

use super::requests::{api_name, RequestMeta};
use super::Gateway;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};
use std::path::{Path, PathBuf};

/// Ids reserved by one durable write.
pub const PRODUCER_ID_BLOCK: i64 = 1_000;
/// Gateway producer ids are below this; native clients draw theirs at or above it.
pub const GATEWAY_PRODUCER_ID_END: i64 = precursor_protocol::record_batch::NATIVE_PRODUCER_ID_MIN;
/// The first id ever handed out (0 stays unused: some tools treat it as unset).
const FIRST_PRODUCER_ID: i64 = 1;
const FILE_NAME: &str = "producer_ids";

/// Which of the gateway's ids this broker hands out: all of them on a single node; in a
/// cluster those equal to `broker_id - 1` modulo [`precursor_config::BROKERS_MAX`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdSpace {
    stride: i64,
    offset: i64,
}

impl IdSpace {
    /// A single node's: every id.
    pub const ALONE: IdSpace = IdSpace {
        stride: 1,
        offset: 0,
    };

    /// The ids of broker `broker_id` (1..=64) of a cluster; `0` is [`IdSpace::ALONE`].
    pub fn of_broker(broker_id: u32) -> IdSpace {
        if broker_id == 0 {
            return IdSpace::ALONE;
        }
        debug_assert!(broker_id as usize <= precursor_config::BROKERS_MAX);
        IdSpace {
            stride: precursor_config::BROKERS_MAX as i64,
            offset: i64::from(broker_id) - 1,
        }
    }

    /// The id handed out as the `n`th of this space.
    fn id(self, n: i64) -> i64 {
        n * self.stride + self.offset
    }
}

/// The allocator: the next `n` (the file counts in `n`s of its [`IdSpace`]) and the end
/// of the block reserved on disk.
pub struct ProducerIdBlocks {
    path: PathBuf,
    space: IdSpace,
    next: i64,
    reserved_end: i64,
}

impl ProducerIdBlocks {
    /// Reads `<state_dir>/producer_ids` (missing: start at 1).
    pub fn open(state_dir: &Path, space: IdSpace) -> std::io::Result<ProducerIdBlocks> {
        let path = state_dir.join(FILE_NAME);
        let next = match std::fs::read_to_string(&path) {
            Ok(text) => text.trim().parse::<i64>().map_err(|_| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{}: not a producer id: {:?}", path.display(), text.trim()),
                )
            })?,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => FIRST_PRODUCER_ID,
            Err(error) => return Err(error),
        };
        if !(FIRST_PRODUCER_ID..=GATEWAY_PRODUCER_ID_END).contains(&next) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "{}: {next} is outside the gateway's id range",
                    path.display()
                ),
            ));
        }
        Ok(ProducerIdBlocks {
            path,
            space,
            next,
            reserved_end: next,
        })
    }

    /// A producer id never handed out before; reserves a new block durably when needed.
    pub fn allocate(&mut self) -> std::io::Result<i64> {
        if self.next >= self.reserved_end {
            let end = self.next + PRODUCER_ID_BLOCK;
            if self.space.id(end) > GATEWAY_PRODUCER_ID_END {
                return Err(std::io::Error::other(
                    "the gateway's producer ids are used up",
                ));
            }
            super::write_durably(&self.path, format!("{end}\n").as_bytes())?;
            self.reserved_end = end;
        }
        debug_assert!(self.next < self.reserved_end);
        let id = self.space.id(self.next);
        self.next += 1;
        Ok(id)
    }
}

/// InitProducerId. Without a transactional id Kafka hands out a new producer id with
/// epoch 0 whatever id and epoch the client sends (KIP-360 epoch bumps of idempotent
/// producers happen in the client); so does the gateway. Transactions are not
/// supported: a transactional id is answered INVALID_REQUEST.
pub fn init_producer_id(
    gateway: &Gateway,
    meta: &RequestMeta,
    request: InitProducerIdRequest,
) -> InitProducerIdResponse {
    let mut response = InitProducerIdResponse::default();
    response.producer_id = ProducerId(-1);
    response.producer_epoch = -1;
    if request.transactional_id.is_some() {
        response.error_code = ResponseError::InvalidRequest.code();
    } else {
        match gateway
            .producer_ids
            .lock()
            .expect("producer ids lock")
            .allocate()
        {
            Ok(id) => {
                response.producer_id = ProducerId(id);
                response.producer_epoch = 0;
            }
            Err(error) => {
                eprintln!("precursor-controlplane: kafka gateway: InitProducerId: {error}");
                response.error_code = ResponseError::CoordinatorNotAvailable.code();
            }
        }
    }
    gateway
        .metrics
        .error(api_name(meta.api), response.error_code);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_across_restarts_and_blocks_are_reserved_first() {
        let dir = tempfile::tempdir().unwrap();
        let mut blocks = ProducerIdBlocks::open(dir.path(), IdSpace::ALONE).unwrap();
        let first: Vec<i64> = (0..3).map(|_| blocks.allocate().unwrap()).collect();
        assert_eq!(first, vec![1, 2, 3]);
        let on_disk = std::fs::read_to_string(dir.path().join(FILE_NAME)).unwrap();
        assert_eq!(on_disk.trim(), (1 + PRODUCER_ID_BLOCK).to_string());
        // A restart (crash or not) continues after the reserved block.
        let mut again = ProducerIdBlocks::open(dir.path(), IdSpace::ALONE).unwrap();
        let next = again.allocate().unwrap();
        assert_eq!(next, 1 + PRODUCER_ID_BLOCK);
        for _ in 0..PRODUCER_ID_BLOCK {
            let id = again.allocate().unwrap();
            assert!(id > next && id < GATEWAY_PRODUCER_ID_END);
        }
        let on_disk = std::fs::read_to_string(dir.path().join(FILE_NAME)).unwrap();
        assert_eq!(on_disk.trim(), (1 + 3 * PRODUCER_ID_BLOCK).to_string());
    }

    #[test]
    fn brokers_of_a_cluster_never_hand_out_the_same_id() {
        let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
        let mut seen = std::collections::BTreeSet::new();
        for (broker, dir) in (1..=3).zip(&dirs) {
            let mut blocks =
                ProducerIdBlocks::open(dir.path(), IdSpace::of_broker(broker)).unwrap();
            for _ in 0..2 * PRODUCER_ID_BLOCK {
                let id = blocks.allocate().unwrap();
                assert!(id > 0 && id < GATEWAY_PRODUCER_ID_END);
                assert_eq!(id % 64, i64::from(broker) - 1);
                assert!(seen.insert(id), "{id} handed out twice");
            }
        }
        assert_eq!(IdSpace::of_broker(0), IdSpace::ALONE);
    }

    #[test]
    fn a_damaged_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE_NAME), "banana\n").unwrap();
        let error = ProducerIdBlocks::open(dir.path(), IdSpace::ALONE)
            .err()
            .unwrap();
        assert!(error.to_string().contains("not a producer id"), "{error}");
        std::fs::write(dir.path().join(FILE_NAME), format!("{}\n", i64::MAX)).unwrap();
        assert!(ProducerIdBlocks::open(dir.path(), IdSpace::ALONE).is_err());
    }
}
