//! Fetch: the stored batches, byte for byte, with long polling.
//!
//! A round reads every partition of the request (each within its `partition_max_bytes`
//! and what is left of the response's `max_bytes`) from the data plane's shared log maps
//! (log_reader.rs: one copy, no request), or asks the data plane over IPC for what the
//! maps cannot answer (no `<cnc_dir>/paths`, a partition not mappable, an offset out of
//! range as mapped). The answer
//! goes back when the round found at least `min_bytes`, a partition failed, or
//! `max_wait_ms` (capped at `gateway.fetch_wait_ms_max`) passed; otherwise the next round
//! starts after `gateway.fetch_poll_interval_us`. As KIP-74 asks, the first batch of the
//! first partition with data is returned even when it is larger than the limits, so a
//! consumer can always make progress.
//!
//! Batches start at the one holding the fetch offset (its first records may be below the
//! offset: clients skip them, as with Kafka). There are no transactions, so
//! `last_stable_offset` is the high watermark and no transaction was ever aborted.
//! Incremental fetch sessions (KIP-227) are declined: the answer's `session_id` is 0 and
//! every fetch is a full one, which the protocol allows.

use super::data_path::{DataPathError, Fetched};
use super::produce::kafka_error;
use super::requests::{api_name, RequestMeta};
use super::Gateway;
use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{BrokerId, FetchRequest, FetchResponse};
use precursor_client::log_map::LogPaths;
use precursor_protocol::frame::ErrorCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Kafka's READ_COMMITTED isolation level.
const READ_COMMITTED: i8 = 1;

struct Wanted {
    topic_index: usize,
    partition_index: usize,
    topic: String,
    partition: i32,
    offset: i64,
    partition_max_bytes: u32,
}

/// Fetch.
pub async fn fetch(
    gateway: Arc<Gateway>,
    meta: RequestMeta,
    request: FetchRequest,
) -> FetchResponse {
    let api = api_name(meta.api);
    let config = &gateway.config;
    let mut response = FetchResponse::default();
    if meta.version >= 7 && request.session_id != 0 {
        // We never hand out a session id, so a client naming one is mistaken.
        response.error_code = ResponseError::FetchSessionIdNotFound.code();
        gateway.metrics.error(api, response.error_code);
        return response;
    }
    let max_wait = Duration::from_millis(
        u64::try_from(request.max_wait_ms)
            .unwrap_or(0)
            .min(config.fetch_wait_ms_max),
    );
    let min_bytes = u64::try_from(request.min_bytes).unwrap_or(0);
    let response_max_bytes = if meta.version >= 3 {
        u32::try_from(request.max_bytes).unwrap_or(0)
    } else {
        u32::MAX
    }
    .min(config.fetch_response_bytes_max);
    let one_batch_bytes = gateway.node.config.storage.batch_bytes_max;
    let names: Vec<&str> = request.topics.iter().map(|t| t.topic.0.as_str()).collect();
    let topics = gateway.topics.get_including(&gateway, &names);
    let mut wanted = Vec::new();
    for topic in &request.topics {
        let name = topic.topic.0.as_str();
        let known = topics
            .as_ref()
            .ok()
            .and_then(|t| t.get(name))
            .map(|p| p.len() as i32);
        let mut topic_response = FetchableTopicResponse::default();
        topic_response.topic = topic.topic.clone();
        for partition in &topic.partitions {
            let mut data = PartitionData::default();
            data.partition_index = partition.partition;
            data.high_watermark = -1;
            data.last_stable_offset = -1;
            data.log_start_offset = -1;
            data.preferred_read_replica = BrokerId(-1);
            if request.isolation_level == READ_COMMITTED {
                data.aborted_transactions = Some(Vec::new());
            }
            if topics.is_err() {
                data.error_code = ResponseError::NotLeaderOrFollower.code();
            } else if !known.is_some_and(|n| (0..n).contains(&partition.partition)) {
                data.error_code = ResponseError::UnknownTopicOrPartition.code();
            } else if partition.fetch_offset < 0 {
                data.error_code = ResponseError::OffsetOutOfRange.code();
            } else {
                wanted.push(Wanted {
                    topic_index: response.responses.len(),
                    partition_index: topic_response.partitions.len(),
                    topic: name.to_string(),
                    partition: partition.partition,
                    offset: partition.fetch_offset,
                    partition_max_bytes: u32::try_from(partition.partition_max_bytes).unwrap_or(0),
                });
            }
            topic_response.partitions.push(data);
        }
        response.responses.push(topic_response);
    }
    // The direct path, when the maps are readable (None: every partition over IPC).
    let generation = gateway.node.link.state().generation.load(Ordering::Acquire);
    let direct = match &topics {
        Ok(view) if !wanted.is_empty() => gateway.logs.prepare(generation, view).ok(),
        _ => None,
    };
    let deadline = Instant::now() + max_wait;
    let poll = Duration::from_micros(config.fetch_poll_interval_us);
    loop {
        // A waiting round re-reads the maps: a cheap local read, no request.
        let round = fetch_round(
            &gateway,
            direct.as_ref(),
            &wanted,
            response_max_bytes,
            one_batch_bytes,
        )
        .await;
        let bytes: u64 = round
            .iter()
            .map(|r| r.as_ref().map_or(0, |f| f.batches.len() as u64))
            .sum();
        let failed = round.iter().any(|r| match r {
            Err(_) => true,
            Ok(fetched) => fetched.out_of_range,
        });
        if bytes >= min_bytes.max(1) || failed || Instant::now() + poll >= deadline {
            for (want, result) in wanted.iter().zip(round) {
                let data =
                    &mut response.responses[want.topic_index].partitions[want.partition_index];
                fill(data, result);
            }
            break;
        }
        tokio::time::sleep(poll).await;
    }
    for topic in &response.responses {
        for partition in &topic.partitions {
            gateway.metrics.error(api, partition.error_code);
        }
    }
    response
}

/// One pass over the wanted partitions, in order, within the response budget.
async fn fetch_round(
    gateway: &Gateway,
    direct: Option<&LogPaths>,
    wanted: &[Wanted],
    response_max_bytes: u32,
    one_batch_bytes: u32,
) -> Vec<Result<Fetched, DataPathError>> {
    let mut results = Vec::with_capacity(wanted.len());
    let mut left = response_max_bytes;
    let mut any_data = false;
    for want in wanted {
        let budget = want.partition_max_bytes.min(left);
        let offset = want.offset as u64;
        if let Some(paths) = direct {
            // Reads at least one batch whatever the budget (as the data plane's read
            // does), and there is no frame to outgrow: KIP-74 holds without a retry.
            let read = gateway
                .logs
                .fetch(paths, &want.topic, want.partition, offset, budget);
            if let Ok(fetched) = read {
                let taken = fetched.batches.len() as u32;
                left = left.saturating_sub(taken);
                any_data |= taken > 0;
                results.push(Ok(fetched));
                continue;
            }
        }
        let mut result = gateway
            .data
            .fetch(&want.topic, want.partition as u32, offset, budget)
            .await;
        let too_large = matches!(
            &result,
            Err(DataPathError::Refused {
                code: ErrorCode::MessageTooLarge,
                ..
            })
        );
        if too_large && !any_data {
            // KIP-74: the first batch goes out even when it exceeds the limits.
            result = gateway
                .data
                .fetch(&want.topic, want.partition as u32, offset, one_batch_bytes)
                .await;
        } else if too_large {
            // No room left in this response: no batches, the bounds only; the client
            // asks again from the same offset.
            result = gateway
                .data
                .bounds(&want.topic, want.partition as u32)
                .await
                .map(|header| Fetched {
                    header,
                    out_of_range: false,
                    batches: Bytes::new(),
                });
        }
        if let Ok(fetched) = &result {
            let taken = fetched.batches.len() as u32;
            left = left.saturating_sub(taken);
            any_data |= taken > 0;
        }
        results.push(result);
    }
    results
}

fn fill(data: &mut PartitionData, result: Result<Fetched, DataPathError>) {
    match result {
        Ok(fetched) => {
            data.high_watermark = fetched.header.high_watermark as i64;
            data.last_stable_offset = fetched.header.high_watermark as i64;
            data.log_start_offset = fetched.header.log_start_offset as i64;
            if fetched.out_of_range {
                data.error_code = ResponseError::OffsetOutOfRange.code();
                data.records = Some(Bytes::new());
            } else {
                data.records = Some(fetched.batches);
            }
        }
        Err(error) => {
            data.error_code = kafka_error(&error).code();
            data.records = Some(Bytes::new());
        }
    }
}
