//! ListOffsets: earliest (-2), latest (-1), and the first offset at or after a timestamp.
//!
//! Earliest and latest are the partition's bounds as the data plane answers them at the
//! time of the request (a fetch past the end, answered with the bounds); while the data
//! path is unavailable, the counters file's values (at most 10 ms old) stand in.
//!
//! By timestamp: `time_index::scan_start` skips the sealed segments that are too old (their
//! `.timeindex`), then the batches are read through the data path from there; the first
//! batch whose `max_timestamp` reaches the target is decoded (decompressed if needed) to
//! find the first record at or after it, as Kafka does. No such record: offset -1,
//! timestamp -1 (Kafka's answer).
//!
//! In a cluster only the leader answers (NOT_LEADER_OR_FOLLOWER otherwise), a
//! `current_leader_epoch` (v4+) other than the partition's is FENCED_LEADER_EPOCH or
//! UNKNOWN_LEADER_EPOCH, "latest" is the high watermark (what a consumer may read up to)
//! and a timestamp found at or above it is not found yet. `leader_epoch` is the current
//! epoch for latest, and the epoch of the batch holding the offset otherwise (from the
//! batch headers, as OffsetForLeaderEpoch reads them; -1 when they cannot be read).

use super::cluster::{epoch_at, HighWatermark, Leadership};
use super::data_path::DataPathError;
use super::produce::kafka_error;
use super::requests::{api_name, RequestMeta};
use super::topics::{find_partition, Partition, Topics};
use super::{time_index, Gateway};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};
use precursor_protocol::record_batch::{batches, records};
use std::sync::Arc;

const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
/// Batches read per scan of one ListOffsets partition, at most (bounded loop: about a
/// segment's worth of fetches of `storage.batch_bytes_max`).
const SCAN_FETCHES_MAX: usize = 100_000;

/// ListOffsets.
pub async fn list_offsets(
    gateway: Arc<Gateway>,
    meta: RequestMeta,
    request: ListOffsetsRequest,
) -> ListOffsetsResponse {
    let api = api_name(meta.api);
    let names: Vec<&str> = request.topics.iter().map(|t| t.name.0.as_str()).collect();
    let me = gateway.cluster_broker_id();
    let turns_away = |topics: &Topics| {
        request.topics.iter().any(|topic| {
            topic.partitions.iter().any(|p| {
                find_partition(topics, topic.name.0.as_str(), p.partition_index).is_some_and(
                    |known| {
                        known
                            .leadership(me)
                            .check_serving(p.current_leader_epoch)
                            .is_err()
                    },
                )
            })
        })
    };
    let topics = gateway.topics.get_serving(&gateway, &names, turns_away);
    let mut response = ListOffsetsResponse::default();
    for topic in &request.topics {
        let name = topic.name.0.as_str();
        let mut topic_response = ListOffsetsTopicResponse::default();
        topic_response.name = topic.name.clone();
        for partition in &topic.partitions {
            let mut answer = ListOffsetsPartitionResponse::default();
            answer.partition_index = partition.partition_index;
            answer.timestamp = -1;
            answer.offset = -1;
            answer.leader_epoch = -1;
            let known = topics
                .as_ref()
                .ok()
                .and_then(|t| find_partition(t, name, partition.partition_index));
            let outcome = match (&topics, known) {
                (Err(_), _) => Err(ResponseError::NotLeaderOrFollower),
                (Ok(_), None) => Err(ResponseError::UnknownTopicOrPartition),
                (Ok(_), Some(known)) => {
                    let leadership = known.leadership(me);
                    match leadership.check_serving(partition.current_leader_epoch) {
                        Err(error) => Err(error),
                        Ok(()) => {
                            let high_watermark = HighWatermark::of(known, me);
                            offset_of(&gateway, name, known, high_watermark, partition.timestamp)
                                .await
                        }
                    }
                }
            };
            match outcome {
                Ok((offset, timestamp)) => {
                    answer.offset = offset;
                    answer.timestamp = timestamp;
                    if let (Some(known), true) = (known, meta.version >= 4) {
                        answer.leader_epoch =
                            offset_epoch(&gateway, name, known, partition.timestamp, offset);
                    }
                }
                Err(error) => answer.error_code = error.code(),
            }
            gateway.metrics.error(api, answer.error_code);
            topic_response.partitions.push(answer);
        }
        response.topics.push(topic_response);
    }
    response
}

/// The offset (and timestamp) a ListOffsets partition asks for, of a partition this
/// broker serves.
async fn offset_of(
    gateway: &Gateway,
    topic: &str,
    partition: &Partition,
    high_watermark: Option<HighWatermark>,
    timestamp: i64,
) -> Result<(i64, i64), ResponseError> {
    let index = partition.info.partition;
    let info = &partition.info;
    // Read before the log: the offsets found below it are on every ISR member.
    let bound = high_watermark.as_ref().map(HighWatermark::now);
    match timestamp {
        LATEST | EARLIEST => {
            let bounds = match gateway.data.bounds(topic, index).await {
                Ok(header) => Ok((header.log_start_offset, header.high_watermark)),
                Err(DataPathError::Unavailable(_)) => Ok((info.start_offset, info.end_offset)),
                Err(error) => Err(kafka_error(&error)),
            };
            bounds.map(|(start, end)| {
                let end = bound.map_or(end, |b| b.min(end));
                let offset = if timestamp == LATEST { end } else { start };
                (offset as i64, -1)
            })
        }
        target if target >= 0 => {
            let found = by_timestamp(gateway, topic, index, target).await?;
            match bound {
                Some(b) if found.0 >= 0 && found.0 as u64 >= b => Ok((-1, -1)),
                _ => Ok(found),
            }
        }
        _ => Err(ResponseError::InvalidRequest),
    }
}

/// ListOffsets v4+'s `leader_epoch` of the offset found: -1 on a partition without
/// epochs, the current epoch for latest, else the epoch of the batch holding it.
fn offset_epoch(
    gateway: &Gateway,
    topic: &str,
    partition: &Partition,
    timestamp: i64,
    offset: i64,
) -> i32 {
    let me = gateway.cluster_broker_id();
    let Leadership::Leader { epoch } = partition.leadership(me) else {
        return -1;
    };
    if timestamp == LATEST {
        return epoch;
    }
    if offset < 0 {
        return -1;
    }
    let stable_below = HighWatermark::of(partition, me).map(|b| b.now());
    match gateway.leader_epochs(topic, partition.index(), stable_below) {
        Some((starts, _)) => epoch_at(&starts, offset as u64),
        None => -1,
    }
}

/// The first record with a timestamp at or after `target_ms`: (offset, timestamp), or
/// (-1, -1) when there is none.
async fn by_timestamp(
    gateway: &Gateway,
    topic: &str,
    partition: u32,
    target_ms: i64,
) -> Result<(i64, i64), ResponseError> {
    let dir = gateway
        .node
        .config
        .node
        .data_dir
        .join(format!("{topic}-{partition}"));
    let mut offset = time_index::scan_start(&dir, target_ms);
    let fetch_bytes = gateway.node.config.storage.batch_bytes_max;
    for _ in 0..SCAN_FETCHES_MAX {
        let fetched = gateway
            .data
            .fetch(topic, partition, offset, fetch_bytes)
            .await
            .map_err(|e| kafka_error(&e))?;
        if fetched.out_of_range {
            if offset < fetched.header.log_start_offset {
                // Retention removed what the index pointed at: go on from the start.
                offset = fetched.header.log_start_offset;
                continue;
            }
            return Ok((-1, -1));
        }
        if fetched.batches.is_empty() {
            return Ok((-1, -1));
        }
        let mut next = offset;
        for batch in batches(&fetched.batches) {
            let Ok((header, bytes)) = batch else {
                return Err(ResponseError::CorruptMessage);
            };
            let last = header.last_offset();
            next = next.max((last + 1) as u64);
            if header.max_timestamp < target_ms || last < offset as i64 {
                continue;
            }
            let decoded = records(bytes).map_err(|_| ResponseError::CorruptMessage)?;
            if let Some(record) = decoded
                .iter()
                .find(|r| r.offset >= offset as i64 && r.timestamp >= target_ms)
            {
                return Ok((record.offset, record.timestamp));
            }
        }
        if next == offset {
            return Ok((-1, -1));
        }
        offset = next;
    }
    Err(ResponseError::RequestTimedOut)
}
