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

use super::data_path::DataPathError;
use super::produce::kafka_error;
use super::requests::{api_name, RequestMeta};
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
    let topics = gateway.topics.get_including(&gateway, &names);
    let mut response = ListOffsetsResponse::default();
    for topic in &request.topics {
        let name = topic.name.0.as_str();
        let known = topics.as_ref().ok().and_then(|t| t.get(name)).cloned();
        let mut topic_response = ListOffsetsTopicResponse::default();
        topic_response.name = topic.name.clone();
        for partition in &topic.partitions {
            let mut answer = ListOffsetsPartitionResponse::default();
            answer.partition_index = partition.partition_index;
            answer.timestamp = -1;
            answer.offset = -1;
            answer.leader_epoch = -1;
            let info = known.as_ref().and_then(|p| {
                usize::try_from(partition.partition_index)
                    .ok()
                    .and_then(|i| p.get(i))
            });
            let outcome = match (&topics, info) {
                (Err(_), _) => Err(ResponseError::NotLeaderOrFollower),
                (Ok(_), None) => Err(ResponseError::UnknownTopicOrPartition),
                (Ok(_), Some(info)) => {
                    let index = partition.partition_index as u32;
                    match partition.timestamp {
                        LATEST | EARLIEST => {
                            let bounds = match gateway.data.bounds(name, index).await {
                                Ok(header) => Ok((header.log_start_offset, header.high_watermark)),
                                Err(DataPathError::Unavailable(_)) => {
                                    Ok((info.start_offset, info.end_offset))
                                }
                                Err(error) => Err(kafka_error(&error)),
                            };
                            bounds.map(|(start, end)| {
                                let offset = if partition.timestamp == LATEST {
                                    end
                                } else {
                                    start
                                };
                                (offset as i64, -1)
                            })
                        }
                        target if target >= 0 => by_timestamp(&gateway, name, index, target).await,
                        _ => Err(ResponseError::InvalidRequest),
                    }
                }
            };
            match outcome {
                Ok((offset, timestamp)) => {
                    answer.offset = offset;
                    answer.timestamp = timestamp;
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
