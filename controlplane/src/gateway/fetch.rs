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
//!
//! In a cluster only the leader serves (NOT_LEADER_OR_FOLLOWER otherwise; no follower
//! fetching, KIP-392), a `current_leader_epoch` (v9+) other than the partition's is
//! FENCED_LEADER_EPOCH (older) or UNKNOWN_LEADER_EPOCH (newer), and only batches below
//! the high watermark go out: every round reads the partition's high watermark gauge
//! afresh, and `high_watermark` and `last_stable_offset` are that bound. An offset between
//! the high watermark and the log end is answered with no batches (the consumer waits),
//! as Kafka answers it.

use super::cluster::{below_high_watermark, HighWatermark, Leadership};
use super::data_path::{DataPathError, Fetched};
use super::produce::kafka_error;
use super::requests::{api_name, RequestMeta};
use super::topics::{find_partition, Topics};
use super::Gateway;
use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::fetch_response::{
    FetchableTopicResponse, LeaderIdAndEpoch, PartitionData,
};
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
    /// Where reads stop when below the log end (a leader with followers).
    high_watermark: Option<HighWatermark>,
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
    let me = gateway.cluster_broker_id();
    let turns_away = |topics: &Topics| {
        request.topics.iter().any(|topic| {
            topic.partitions.iter().any(|p| {
                find_partition(topics, topic.topic.0.as_str(), p.partition).is_some_and(|known| {
                    known
                        .leadership(me)
                        .check_serving(p.current_leader_epoch)
                        .is_err()
                })
            })
        })
    };
    let topics = gateway.topics.get_serving(&gateway, &names, turns_away);
    let mut wanted = Vec::new();
    for topic in &request.topics {
        let name = topic.topic.0.as_str();
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
            let known = topics
                .as_ref()
                .ok()
                .and_then(|t| find_partition(t, name, partition.partition));
            let leadership = known.map(|p| p.leadership(me));
            let serving = leadership.map(|l| l.check_serving(partition.current_leader_epoch));
            if topics.is_err() {
                data.error_code = ResponseError::NotLeaderOrFollower.code();
            } else if known.is_none() {
                data.error_code = ResponseError::UnknownTopicOrPartition.code();
            } else if let (Some(Err(error)), Some(leadership)) = (serving, leadership) {
                data.error_code = error.code();
                data.current_leader = current_leader(leadership);
                data.records = Some(Bytes::new());
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
                    high_watermark: known.and_then(|p| HighWatermark::of(p, me)),
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
            .map(|(r, _)| r.as_ref().map_or(0, |f| f.batches.len() as u64))
            .sum();
        let failed = round.iter().any(|(r, _)| match r {
            Err(_) => true,
            Ok(fetched) => fetched.out_of_range,
        });
        if bytes >= min_bytes.max(1) || failed || Instant::now() + poll >= deadline {
            for (want, (result, bound)) in wanted.iter().zip(round) {
                let data =
                    &mut response.responses[want.topic_index].partitions[want.partition_index];
                if matches!(
                    &result,
                    Err(DataPathError::Refused {
                        code: ErrorCode::NotLeaderOrFollower,
                        ..
                    })
                ) {
                    gateway.topics.leadership_changed();
                }
                fill(data, result, bound);
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

/// One pass over the wanted partitions, in order, within the response budget: each
/// partition's batches and the high watermark they were read below (None: the log end).
async fn fetch_round(
    gateway: &Gateway,
    direct: Option<&LogPaths>,
    wanted: &[Wanted],
    response_max_bytes: u32,
    one_batch_bytes: u32,
) -> Vec<(Result<Fetched, DataPathError>, Option<u64>)> {
    let mut results = Vec::with_capacity(wanted.len());
    let mut left = response_max_bytes;
    let mut any_data = false;
    for want in wanted {
        let budget = want.partition_max_bytes.min(left);
        let offset = want.offset as u64;
        // Read before the batches: whatever is read below it is on every ISR member.
        let bound = want.high_watermark.as_ref().map(HighWatermark::now);
        if let Some(paths) = direct {
            // Reads at least one batch whatever the budget (as the data plane's read
            // does), and there is no frame to outgrow: KIP-74 holds without a retry.
            let read =
                gateway
                    .logs
                    .fetch(paths, &want.topic, want.partition, offset, budget, bound);
            if let Ok(fetched) = read {
                let taken = fetched.batches.len() as u32;
                left = left.saturating_sub(taken);
                any_data |= taken > 0;
                results.push((Ok(fetched), bound));
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
        if let (Ok(fetched), Some(bound)) = (&mut result, bound) {
            let end = below_high_watermark(&fetched.batches, bound);
            fetched.batches.truncate(end);
        }
        if let Ok(fetched) = &result {
            let taken = fetched.batches.len() as u32;
            left = left.saturating_sub(taken);
            any_data |= taken > 0;
        }
        results.push((result, bound));
    }
    results
}

/// `current_leader` (Fetch v12+, a tagged field) of a refused partition: who leads it as
/// far as this broker knows.
fn current_leader(leadership: Leadership) -> LeaderIdAndEpoch {
    let mut leader = LeaderIdAndEpoch::default();
    leader.leader_epoch = leadership.epoch();
    if let Leadership::Elsewhere {
        leader: Some(id), ..
    } = leadership
    {
        leader.leader_id = BrokerId(id as i32);
    }
    leader
}

fn fill(data: &mut PartitionData, result: Result<Fetched, DataPathError>, bound: Option<u64>) {
    match result {
        Ok(fetched) => {
            // Consumers are told the high watermark, never the log end beyond it.
            let high_watermark = bound.map_or(fetched.header.high_watermark, |b| {
                b.min(fetched.header.high_watermark)
            });
            data.high_watermark = high_watermark as i64;
            data.last_stable_offset = high_watermark as i64;
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
