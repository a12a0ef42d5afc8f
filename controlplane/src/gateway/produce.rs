//! Produce: each partition's record batch goes to the data plane as it came (the log
//! stores Kafka RecordBatch v2 bytes; the data plane sets the base offset, checks the CRC
//! and the idempotent producer's id, epoch and sequence).
//!
//! acks: 0 -> none, 1 -> leader (appended to the active segment), -1 -> durable
//! (fdatasync'd: with one node, "all in-sync replicas" is the disk), and in a cluster
//! -1 -> all (every in-sync replica holds it; the data plane applies the topic's
//! `acks_all`: in memory or fdatasync'd on each). With acks=0 Kafka sends no answer, and
//! closes the connection when a batch failed; so does the gateway.
//!
//! In a cluster a partition this broker does not lead is refused NOT_LEADER_OR_FOLLOWER
//! without a round trip to the data plane (which refuses it too, should its leadership
//! have moved since the gateway's view of it).

use super::cluster::Leadership;
use super::data_path::DataPathError;
use super::requests::{api_name, encode, Context, Outcome, Pending, RequestMeta};
use super::topics::{find_partition, Topics};
use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use kafka_protocol::protocol::StrBytes;
use precursor_protocol::compression::DECOMPRESSED_BYTES_MAX;
use precursor_protocol::frame::{Acks, ErrorCode};
use precursor_protocol::record_batch::{recompress_batch, validate_batch, RecordBatchHeader};

/// The Kafka code for a data path failure (produce and fetch).
pub fn kafka_error(error: &DataPathError) -> ResponseError {
    match error {
        // Retriable, and makes clients refresh metadata: right while the data plane
        // restarts.
        DataPathError::Unavailable(_) => ResponseError::NotLeaderOrFollower,
        DataPathError::Timeout(_) => ResponseError::RequestTimedOut,
        DataPathError::Refused { code, .. } => match code {
            ErrorCode::UnknownTopicOrPartition => ResponseError::UnknownTopicOrPartition,
            ErrorCode::CorruptMessage => ResponseError::CorruptMessage,
            ErrorCode::MessageTooLarge => ResponseError::MessageTooLarge,
            ErrorCode::OutOfOrderSequence => ResponseError::OutOfOrderSequenceNumber,
            ErrorCode::DuplicateSequence => ResponseError::DuplicateSequenceNumber,
            ErrorCode::InvalidProducerEpoch => ResponseError::InvalidProducerEpoch,
            ErrorCode::StorageError => ResponseError::KafkaStorageError,
            ErrorCode::OffsetOutOfRange => ResponseError::OffsetOutOfRange,
            ErrorCode::InvalidTopic => ResponseError::InvalidTopicException,
            ErrorCode::TopicNotReady => ResponseError::LeaderNotAvailable,
            // A bounded queue of the data plane is full: nothing was appended, try again.
            ErrorCode::Busy => ResponseError::RequestTimedOut,
            ErrorCode::NotLeaderOrFollower => ResponseError::NotLeaderOrFollower,
            ErrorCode::NotEnoughReplicas => ResponseError::NotEnoughReplicas,
            ErrorCode::FencedLeaderEpoch => ResponseError::FencedLeaderEpoch,
            ErrorCode::UnknownLeaderEpoch => ResponseError::UnknownLeaderEpoch,
            _ => ResponseError::UnknownServerError,
        },
    }
}

/// The native acks level of Kafka's `acks`: -1 waits for every in-sync replica in a
/// cluster (the data plane applies the topic's `acks_all`), and for the disk on a single
/// node, as before replication.
fn kafka_acks(acks: i16, in_cluster: bool) -> Option<Acks> {
    match acks {
        0 => Some(Acks::None),
        1 => Some(Acks::Leader),
        -1 if in_cluster => Some(Acks::All),
        -1 => Some(Acks::Durable),
        _ => None,
    }
}

/// A produce goes to the data plane only for a partition this broker leads (or serves
/// alone).
fn check_leader(
    leadership: Leadership,
    topic: &str,
    partition: i32,
) -> Result<(), (ResponseError, String)> {
    leadership.check_serving(-1).map_err(|error| {
        let message = match leadership {
            Leadership::Elsewhere {
                leader: Some(leader),
                epoch,
            } => format!("broker {leader} leads {topic}-{partition} (leader epoch {epoch})"),
            _ => format!("{topic}-{partition} has no leader now (an election is under way)"),
        };
        (error, message)
    })
}

/// Checks one partition's records: exactly one valid v2 batch, not transactional, within
/// `batch_bytes_max`.
fn check_batch(
    records: Option<&Bytes>,
    batch_bytes_max: usize,
    version: i16,
) -> Result<(), (ResponseError, String)> {
    // INVALID_RECORD exists from Produce v8 on (KIP-467); older clients get CORRUPT_MESSAGE.
    let invalid_record = if version >= 8 {
        ResponseError::InvalidRecord
    } else {
        ResponseError::CorruptMessage
    };
    let Some(records) = records.filter(|r| !r.is_empty()) else {
        return Err((invalid_record, "no record batch".into()));
    };
    if records.len() > batch_bytes_max {
        return Err((
            ResponseError::MessageTooLarge,
            format!(
                "batch of {} bytes is larger than storage.batch_bytes_max ({batch_bytes_max})",
                records.len()
            ),
        ));
    }
    let header = RecordBatchHeader::parse(records)
        .map_err(|e| (ResponseError::CorruptMessage, e.to_string()))?;
    if header.total_bytes() < records.len() {
        return Err((
            invalid_record,
            "a produce carries exactly one record batch per partition".into(),
        ));
    }
    validate_batch(records).map_err(|e| (ResponseError::CorruptMessage, e.to_string()))?;
    if header.is_transactional() || header.is_control() {
        return Err((
            ResponseError::InvalidRequest,
            "transactions are not supported by this broker".into(),
        ));
    }
    Ok(())
}

/// The batch as the topic stores it: recompressed where its `compression.type` names
/// another codec than the producer's (records, producer id, epoch and sequence, offset
/// and timestamp deltas kept; CRC32C computed again). Done in line, before the batch is
/// handed on, so batches of one connection reach the data plane in the order they came
/// (idempotent producers pipeline them); it costs the gateway's thread the codecs' time.
fn stored_batch(
    gateway: &super::Gateway,
    topic: &str,
    batch: Bytes,
) -> Result<Bytes, (ResponseError, String)> {
    let compression = match gateway.node.topic_configs.topic(topic) {
        Ok(configs) => configs.and_then(|c| c.compression_type),
        Err(error) => {
            return Err((
                ResponseError::KafkaStorageError,
                format!("the topic's configuration cannot be read: {error}"),
            ))
        }
    };
    let Some(compression) = compression else {
        return Ok(batch);
    };
    let header = RecordBatchHeader::parse(&batch)
        .map_err(|e| (ResponseError::CorruptMessage, e.to_string()))?;
    let codec = header
        .compression()
        .map_err(|e| (ResponseError::CorruptMessage, e.to_string()))?;
    let Some(to) = compression.recompress_to(codec) else {
        return Ok(batch);
    };
    let bounded = gateway.node.config.storage.batch_bytes_max as usize * RECOMPRESS_EXPANSION_MAX;
    recompress_batch(&batch, to, bounded.min(DECOMPRESSED_BYTES_MAX))
        .map(Bytes::from)
        .map_err(|e| {
            (
                ResponseError::CorruptMessage,
                format!("recompressing the batch to {to} (compression.type) failed: {e}"),
            )
        })
}

/// A batch recompressed for its topic may decompress to at most this many times
/// `storage.batch_bytes_max` (and never more than the codecs' own bound).
pub const RECOMPRESS_EXPANSION_MAX: usize = 64;

/// Produce.
pub fn produce(context: &Context, meta: RequestMeta, request: ProduceRequest) -> Pending {
    let gateway = context.gateway.clone();
    let version = meta.version;
    let api = api_name(meta.api);
    let me = gateway.cluster_broker_id();
    let acks = kafka_acks(request.acks, me != 0);
    let names: Vec<&str> = request
        .topic_data
        .iter()
        .map(|t| t.name.0.as_str())
        .collect();
    let led_elsewhere = |topics: &Topics| {
        request.topic_data.iter().any(|topic| {
            topic.partition_data.iter().any(|data| {
                find_partition(topics, topic.name.0.as_str(), data.index)
                    .is_some_and(|p| p.leadership(me).check_serving(-1).is_err())
            })
        })
    };
    let topics = gateway.topics.get_serving(&gateway, &names, led_elsewhere);
    let batch_bytes_max = gateway.node.config.storage.batch_bytes_max as usize;
    let mut response = ProduceResponse::default();
    // (topic index, partition index, future) of the batches sent to the data plane.
    let mut sent = Vec::new();
    for topic in &request.topic_data {
        let name = topic.name.0.as_str();
        let mut topic_response = TopicProduceResponse::default();
        topic_response.name = topic.name.clone();
        for data in &topic.partition_data {
            let mut partition = PartitionProduceResponse::default();
            partition.index = data.index;
            partition.base_offset = -1;
            partition.log_append_time_ms = -1;
            partition.log_start_offset = -1;
            let checked = if acks.is_none() {
                Err((
                    ResponseError::InvalidRequiredAcks,
                    format!("acks {} (0, 1 or -1)", request.acks),
                ))
            } else if request.transactional_id.is_some() {
                Err((
                    ResponseError::InvalidRequest,
                    "transactions are not supported by this broker".into(),
                ))
            } else if topics.is_err() {
                Err((
                    ResponseError::NotLeaderOrFollower,
                    "the data plane is not running".into(),
                ))
            } else if let Some(partition) = topics
                .as_ref()
                .ok()
                .and_then(|t| find_partition(t, name, data.index))
            {
                check_leader(partition.leadership(me), name, data.index)
                    .and_then(|()| check_batch(data.records.as_ref(), batch_bytes_max, version))
            } else {
                Err((
                    ResponseError::UnknownTopicOrPartition,
                    format!("no partition {} of topic {name:?}", data.index),
                ))
            };
            let checked = checked.and_then(|()| {
                stored_batch(&gateway, name, data.records.clone().unwrap_or_default())
            });
            match (checked, acks) {
                (Ok(batch), Some(acks)) => {
                    let future = gateway.data.produce(name, data.index as u32, acks, batch);
                    sent.push((
                        response.responses.len(),
                        topic_response.partition_responses.len(),
                        future,
                    ));
                }
                (Ok(_), None) => unreachable!("acks checked above"),
                (Err((error, message)), _) => {
                    partition.error_code = error.code();
                    if version >= 8 {
                        partition.error_message = Some(StrBytes::from_string(message));
                    }
                }
            }
            topic_response.partition_responses.push(partition);
        }
        response.responses.push(topic_response);
    }
    Box::pin(async move {
        for (t, p, future) in sent {
            let partition = &mut response.responses[t].partition_responses[p];
            match future.await {
                Ok(Some(ack)) => partition.base_offset = ack.base_offset as i64,
                Ok(None) => {}
                Err(error) => {
                    let code = kafka_error(&error);
                    if code == ResponseError::NotLeaderOrFollower {
                        gateway.topics.leadership_changed();
                    }
                    partition.error_code = code.code();
                    if version >= 8 {
                        partition.error_message = Some(StrBytes::from_string(error.to_string()));
                    }
                }
            }
        }
        let mut failed = false;
        for topic in &response.responses {
            for partition in &topic.partition_responses {
                gateway.metrics.error(api, partition.error_code);
                failed |= partition.error_code != 0;
            }
        }
        if acks == Some(Acks::None) {
            return if failed {
                Outcome::Close("a produce with acks=0 failed")
            } else {
                Outcome::Silent
            };
        }
        encode(&meta, &response)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use precursor_protocol::record_batch::RecordBatchBuilder;

    fn batch() -> Vec<u8> {
        let mut builder = RecordBatchBuilder::new(
            precursor_protocol::compression::Compression::None,
            -1,
            -1,
            -1,
            1_700_000_000_000,
        );
        builder.append(1_700_000_000_000, Some(b"k"), b"v", &[]);
        builder.finish()
    }

    #[test]
    fn batches_are_checked_before_they_reach_the_data_plane() {
        let good = Bytes::from(batch());
        assert!(check_batch(Some(&good), 1 << 20, 9).is_ok());
        let mut corrupt = batch();
        let last = corrupt.len() - 1;
        corrupt[last] ^= 0xff;
        let (error, message) = check_batch(Some(&Bytes::from(corrupt)), 1 << 20, 9).unwrap_err();
        assert_eq!(error, ResponseError::CorruptMessage);
        assert!(message.contains("CRC"), "{message}");
        let mut two = batch();
        two.extend_from_slice(&batch());
        let (error, _) = check_batch(Some(&Bytes::from(two.clone())), 1 << 20, 9).unwrap_err();
        assert_eq!(error, ResponseError::InvalidRecord);
        let (error, _) = check_batch(Some(&Bytes::from(two)), 1 << 20, 7).unwrap_err();
        assert_eq!(
            error,
            ResponseError::CorruptMessage,
            "v7 clients know no INVALID_RECORD"
        );
        let (error, _) = check_batch(Some(&good), 10, 9).unwrap_err();
        assert_eq!(error, ResponseError::MessageTooLarge);
        assert!(check_batch(None, 1 << 20, 9).is_err());
    }

    #[test]
    fn data_plane_refusals_map_to_kafka_codes() {
        let refused = |code| DataPathError::Refused {
            code,
            reason: String::new(),
        };
        assert_eq!(
            kafka_error(&refused(ErrorCode::OutOfOrderSequence)),
            ResponseError::OutOfOrderSequenceNumber
        );
        assert_eq!(
            kafka_error(&refused(ErrorCode::DuplicateSequence)),
            ResponseError::DuplicateSequenceNumber
        );
        assert_eq!(
            kafka_error(&refused(ErrorCode::CorruptMessage)),
            ResponseError::CorruptMessage
        );
        assert_eq!(
            kafka_error(&DataPathError::Unavailable(String::new())),
            ResponseError::NotLeaderOrFollower
        );
        for (native, kafka) in [
            (
                ErrorCode::NotLeaderOrFollower,
                ResponseError::NotLeaderOrFollower,
            ),
            (
                ErrorCode::NotEnoughReplicas,
                ResponseError::NotEnoughReplicas,
            ),
            (
                ErrorCode::FencedLeaderEpoch,
                ResponseError::FencedLeaderEpoch,
            ),
            (
                ErrorCode::UnknownLeaderEpoch,
                ResponseError::UnknownLeaderEpoch,
            ),
        ] {
            assert_eq!(kafka_error(&refused(native)), kafka);
        }
        assert_eq!(ResponseError::NotLeaderOrFollower.code(), 6);
        assert_eq!(ResponseError::NotEnoughReplicas.code(), 19);
        assert_eq!(ResponseError::FencedLeaderEpoch.code(), 74);
        assert_eq!(ResponseError::UnknownLeaderEpoch.code(), 75);
    }

    #[test]
    fn acks_minus_one_waits_for_the_disk_alone_and_for_the_replicas_in_a_cluster() {
        assert_eq!(kafka_acks(-1, false), Some(Acks::Durable));
        assert_eq!(kafka_acks(-1, true), Some(Acks::All));
        for in_cluster in [false, true] {
            assert_eq!(kafka_acks(0, in_cluster), Some(Acks::None));
            assert_eq!(kafka_acks(1, in_cluster), Some(Acks::Leader));
            assert_eq!(kafka_acks(2, in_cluster), None);
        }
    }

    #[test]
    fn only_the_leader_takes_produces() {
        assert!(check_leader(Leadership::Alone, "t", 0).is_ok());
        assert!(check_leader(Leadership::Leader { epoch: 3 }, "t", 0).is_ok());
        let (error, message) = check_leader(
            Leadership::Elsewhere {
                leader: Some(2),
                epoch: 3,
            },
            "t",
            1,
        )
        .unwrap_err();
        assert_eq!(error, ResponseError::NotLeaderOrFollower);
        assert_eq!(message, "broker 2 leads t-1 (leader epoch 3)");
        let (error, message) = check_leader(
            Leadership::Elsewhere {
                leader: None,
                epoch: 3,
            },
            "t",
            1,
        )
        .unwrap_err();
        assert_eq!(error, ResponseError::NotLeaderOrFollower);
        assert!(message.contains("no leader"), "{message}");
    }
}
