//! DescribeLogDirs (35): where this broker keeps its partitions and how large they are, as
//! `kafka-log-dirs --describe` and admin clients' `describe_log_dirs` ask for it.
//!
//! A broker has one log directory, `node.data_dir` (sealed segments; active segments live
//! in memory until they seal, and count in a partition's size all the same). A partition
//! is listed with the bytes its log holds (the data plane's gauge) and an `offset_lag` of 0:
//! the broker never moves a replica between its own directories ("future" replicas).

use super::requests::{api_name, Context, RequestMeta};
use super::str_bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use kafka_protocol::messages::{DescribeLogDirsRequest, DescribeLogDirsResponse, TopicName};
use std::collections::BTreeMap;

/// `total_bytes` / `usable_bytes` when they cannot be measured (Kafka's "unknown").
const BYTES_UNKNOWN: i64 = -1;

pub fn describe_log_dirs(
    context: &Context,
    meta: &RequestMeta,
    request: DescribeLogDirsRequest,
) -> DescribeLogDirsResponse {
    let gateway = &context.gateway;
    let mut response = DescribeLogDirsResponse::default();
    let config = &gateway.node.config;
    let mut result = DescribeLogDirsResult::default();
    result.log_dir = str_bytes(&config.node.data_dir.display().to_string());
    result.total_bytes = BYTES_UNKNOWN;
    result.usable_bytes = BYTES_UNKNOWN;
    if let Some(data) = crate::host::filesystems(config)
        .into_iter()
        .find(|fs| fs.dir == "data")
    {
        result.total_bytes = i64::try_from(data.size_bytes).unwrap_or(i64::MAX);
        result.usable_bytes = i64::try_from(data.free_bytes).unwrap_or(i64::MAX);
    }
    let topics = match gateway.topics.get(gateway) {
        Ok(topics) => topics,
        Err(unavailable) => {
            eprintln!("precursor-controlplane: kafka gateway: DescribeLogDirs: {unavailable}");
            // Kafka's answer for a directory it cannot read.
            result.error_code = ResponseError::KafkaStorageError.code();
            gateway.metrics.error(api_name(meta.api), result.error_code);
            response.results.push(result);
            return response;
        }
    };
    // None: every partition; else the partitions asked for, of the topics that exist.
    let wanted: Option<BTreeMap<&str, &[i32]>> = request.topics.as_ref().map(|list| {
        list.iter()
            .map(|t| (t.topic.0.as_str(), t.partitions.as_slice()))
            .collect()
    });
    for (name, partitions) in topics.iter() {
        let only = match &wanted {
            None => None,
            Some(wanted) => match wanted.get(name.as_str()) {
                None => continue,
                Some(indexes) => Some(*indexes),
            },
        };
        let mut topic = DescribeLogDirsTopic::default();
        topic.name = TopicName(str_bytes(name));
        for partition in partitions {
            if only.is_some_and(|indexes| !indexes.contains(&partition.index())) {
                continue;
            }
            let mut entry = DescribeLogDirsPartition::default();
            entry.partition_index = partition.index();
            entry.partition_size = i64::try_from(partition.info.bytes).unwrap_or(i64::MAX);
            topic.partitions.push(entry);
        }
        if !topic.partitions.is_empty() {
            result.topics.push(topic);
        }
    }
    response.results.push(result);
    response
}
