//! OffsetForLeaderEpoch (API 23, v2-4; advertised in a cluster only): where an epoch
//! of a partition's log ends, so that a consumer can tell after a leader change whether
//! the log it read from was truncated (KIP-320; librdkafka asks before fetching from a
//! position whose leader epoch it knows).
//!
//! The data plane keeps each partition's epoch history in memory, out of the gateway's
//! reach; but every batch header carries the epoch of the leader that appended it
//! (`partitionLeaderEpoch`), and the gateway reads the log maps anyway. So the history is
//! read from the batch headers (log_reader.rs, `PartitionMap::extend_epochs`: one header
//! per segment, and every header only of the segments where an epoch begins), kept per
//! partition below the high watermark and walked afresh above it. The answer is then
//! Kafka's (`cluster::epoch_end_offset`): the current epoch ends at the log end, an older
//! one where the next epoch in the log begins.
//!
//! When the log maps cannot be read, an older epoch is answered UNKNOWN_LEADER_EPOCH:
//! librdkafka refreshes its metadata and asks again 500 ms later, and fetches from the
//! partition wait meanwhile; a guess could hide a truncation (an end too high) or move
//! consumers back (too low). Partitions without epochs (outside a cluster, or a data plane
//! without replication gauges) never truncate: the requested epoch ends at the log end.

use super::cluster::{epoch_end_offset, HighWatermark, Leadership};
use super::data_path::DataPathError;
use super::produce::kafka_error;
use super::requests::{api_name, RequestMeta};
use super::topics::{find_partition, Partition, Topics};
use super::Gateway;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};
use std::sync::Arc;

/// OffsetForLeaderEpoch.
pub async fn offset_for_leader_epoch(
    gateway: Arc<Gateway>,
    meta: RequestMeta,
    request: OffsetForLeaderEpochRequest,
) -> OffsetForLeaderEpochResponse {
    let api = api_name(meta.api);
    let me = gateway.cluster_broker_id();
    let names: Vec<&str> = request.topics.iter().map(|t| t.topic.0.as_str()).collect();
    let turns_away = |topics: &Topics| {
        request.topics.iter().any(|topic| {
            topic.partitions.iter().any(|p| {
                find_partition(topics, topic.topic.0.as_str(), p.partition).is_some_and(|known| {
                    let leadership = known.leadership(me);
                    let unknown_epoch =
                        leadership != Leadership::Alone && p.leader_epoch > leadership.epoch();
                    leadership.check_serving(p.current_leader_epoch).is_err() || unknown_epoch
                })
            })
        })
    };
    let topics = gateway.topics.get_serving(&gateway, &names, turns_away);
    let mut response = OffsetForLeaderEpochResponse::default();
    for topic in &request.topics {
        let name = topic.topic.0.as_str();
        let mut result = OffsetForLeaderTopicResult::default();
        result.topic = topic.topic.clone();
        for asked in &topic.partitions {
            let mut answer = EpochEndOffset::default();
            answer.partition = asked.partition;
            answer.leader_epoch = -1;
            answer.end_offset = -1;
            let known = topics
                .as_ref()
                .ok()
                .and_then(|t| find_partition(t, name, asked.partition));
            let outcome = match (&topics, known) {
                (Err(_), _) => Err(ResponseError::NotLeaderOrFollower),
                (Ok(_), None) => Err(ResponseError::UnknownTopicOrPartition),
                (Ok(_), Some(known)) => {
                    end_of_epoch(
                        &gateway,
                        name,
                        known,
                        asked.current_leader_epoch,
                        asked.leader_epoch,
                    )
                    .await
                }
            };
            match outcome {
                Ok((epoch, end_offset)) => {
                    answer.leader_epoch = epoch;
                    answer.end_offset = end_offset;
                }
                Err(error) => answer.error_code = error.code(),
            }
            gateway.metrics.error(api, answer.error_code);
            result.partitions.push(answer);
        }
        response.topics.push(result);
    }
    response
}

/// `(epoch, end_offset)` of `requested` on a partition, checked as Kafka checks it (the
/// client's current epoch, then the leadership).
async fn end_of_epoch(
    gateway: &Gateway,
    topic: &str,
    partition: &Partition,
    current_leader_epoch: i32,
    requested: i32,
) -> Result<(i32, i64), ResponseError> {
    let me = gateway.cluster_broker_id();
    let leadership = partition.leadership(me);
    leadership.check_serving(current_leader_epoch)?;
    if requested < 0 {
        return Ok((-1, -1)); // Kafka's undefined answer
    }
    match leadership {
        Leadership::Leader { epoch } if requested < epoch => {
            // An older epoch ends where the next one in the log begins, or, when no later
            // one wrote yet, where the walk ended (the current epoch begins there).
            let stable_below = HighWatermark::of(partition, me).map(|b| b.now());
            let Some((starts, walked_to)) =
                gateway.leader_epochs(topic, partition.index(), stable_below)
            else {
                return Err(ResponseError::UnknownLeaderEpoch);
            };
            epoch_end_offset(requested, epoch, &starts, walked_to)
        }
        Leadership::Leader { epoch } if requested > epoch => Err(ResponseError::UnknownLeaderEpoch),
        Leadership::Leader { epoch } => epoch_end_offset(
            requested,
            epoch,
            &[],
            log_end(gateway, topic, partition).await?,
        ),
        // No epochs: nothing is ever truncated.
        Leadership::Alone => Ok((requested, log_end(gateway, topic, partition).await? as i64)),
        Leadership::Elsewhere { .. } => Err(ResponseError::NotLeaderOrFollower),
    }
}

/// Kafka's log end, at least every offset served whatever the path: the data plane's
/// answer, or the topic view's while it cannot answer.
async fn log_end(
    gateway: &Gateway,
    topic: &str,
    partition: &Partition,
) -> Result<u64, ResponseError> {
    match gateway.data.bounds(topic, partition.info.partition).await {
        Ok(header) => Ok(header.high_watermark),
        Err(DataPathError::Unavailable(_)) => Ok(partition.info.end_offset),
        Err(error) => Err(kafka_error(&error)),
    }
}
