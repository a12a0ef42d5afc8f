//! CreatePartitions (API 37): grows topics through the admin path (`create_partitions`,
//! which carries it to every broker of a cluster, through the metadata quorum in quorum
//! mode).
//!
//! Per topic, as Kafka answers: INVALID_REQUEST for a topic named twice in one request,
//! UNKNOWN_TOPIC_OR_PARTITION, INVALID_PARTITIONS for a count that does not grow the topic
//! (or exceeds `PARTITIONS_PER_TOPIC_MAX`), INVALID_REPLICA_ASSIGNMENT for assignments that
//! do not fit (one list per new partition, the topic's replication factor of known brokers
//! without duplicates). The data planes place replicas themselves (`cluster.replicas_for`,
//! as at creation), so an explicit assignment is taken where it is that placement: on a
//! single broker `[[this broker]]`, in a cluster the lists `replicas_for` gives. A grow that
//! does not finish within `timeout_ms` is answered REQUEST_TIMED_OUT and goes on.

use super::requests::{api_name, RequestMeta};
use super::Gateway;
use crate::admin::{self, codes};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse};
use kafka_protocol::protocol::StrBytes;
use precursor_config::limits::PARTITIONS_PER_TOPIC_MAX;
use precursor_protocol::frame::is_valid_topic_name;
use std::sync::Arc;
use std::time::Duration;

/// What one topic of the request asks, checked.
struct Grow {
    name: String,
    partitions: u32,
}

type Refusal = (ResponseError, String);

/// CreatePartitions through the admin path.
pub async fn create_partitions(
    gateway: Arc<Gateway>,
    meta: RequestMeta,
    request: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let mut response = CreatePartitionsResponse::default();
    for topic in &request.topics {
        let names = request.topics.iter().map(|t| &t.name);
        let outcome = if let Err(refusal) = super::topics::named_once(names, &topic.name) {
            Err(refusal)
        } else {
            match check(&gateway, topic) {
                Ok(_) if request.validate_only => Ok(()),
                Ok(grow) => carry_out(&gateway, grow, request.timeout_ms).await,
                Err(refusal) => Err(refusal),
            }
        };
        let mut result = CreatePartitionsTopicResult::default();
        result.name = topic.name.clone();
        if let Err((error, message)) = outcome {
            result.error_code = error.code();
            result.error_message = Some(StrBytes::from_string(message));
        }
        gateway.metrics.error(api_name(meta.api), result.error_code);
        response.results.push(result);
    }
    response
}

/// The topic's partition count and replication factor as this broker knows them: the
/// metadata quorum's in quorum mode, else the data plane's (highest partition + 1: a
/// broker of a cluster may publish only some).
fn current(gateway: &Gateway, name: &str) -> Option<(u32, usize)> {
    if let Some(member) = gateway.node.member.get() {
        let state = member.state();
        let topic = state.topics.get(name)?;
        let factor = topic.partitions.first().map_or(1, |p| p.replicas.len());
        return Some((topic.partitions.len() as u32, factor));
    }
    // Read fresh: an admin request, and the count decides whether it may grow.
    let view = gateway
        .topics
        .get_within(gateway, &[name], std::time::Duration::ZERO)
        .ok()?;
    let partitions = view.get(name)?;
    let count = partitions.iter().map(|p| p.info.partition + 1).max()?;
    let factor = partitions
        .first()
        .map_or(1, |p| p.info.replicas.len().max(1));
    Some((count, factor))
}

fn check(gateway: &Gateway, topic: &CreatePartitionsTopic) -> Result<Grow, Refusal> {
    let name = topic.name.0.as_str();
    let unknown = || {
        (
            ResponseError::UnknownTopicOrPartition,
            format!("no topic named {name:?}"),
        )
    };
    if !is_valid_topic_name(name) {
        return Err(unknown());
    }
    let (existing, factor) = current(gateway, name).ok_or_else(unknown)?;
    let max = i32::from(PARTITIONS_PER_TOPIC_MAX);
    if topic.count <= existing as i32 {
        return Err((
            ResponseError::InvalidPartitions,
            format!(
                "topic {name} has {existing} partitions; partitions can only grow (asked for {})",
                topic.count
            ),
        ));
    }
    if topic.count > max {
        return Err((
            ResponseError::InvalidPartitions,
            format!(
                "{} partitions: a topic has at most {max} (PARTITIONS_PER_TOPIC_MAX)",
                topic.count
            ),
        ));
    }
    let partitions = topic.count as u32;
    if let Some(assignments) = &topic.assignments {
        check_assignments(gateway, name, (existing, partitions), factor, assignments)?;
    }
    Ok(Grow {
        name: name.to_string(),
        partitions,
    })
}

/// An explicit assignment: one list per new partition, `factor` known brokers each without
/// duplicates, and the placement this broker's data planes make (see the module doc).
fn check_assignments(
    gateway: &Gateway,
    name: &str,
    (existing, partitions): (u32, u32),
    factor: usize,
    assignments: &[kafka_protocol::messages::create_partitions_request::CreatePartitionsAssignment],
) -> Result<(), Refusal> {
    let invalid = |message: String| Err((ResponseError::InvalidReplicaAssignment, message));
    let added = (partitions - existing) as usize;
    if assignments.len() != added {
        return invalid(format!(
            "growing {name} from {existing} to {partitions} partitions needs {added} \
             assignments, {} given",
            assignments.len()
        ));
    }
    let cluster = &gateway.node.config.cluster;
    let known: Vec<i32> = if cluster.enabled() {
        cluster.brokers.iter().map(|b| b.id as i32).collect()
    } else {
        vec![gateway.broker_id()]
    };
    for (i, assignment) in assignments.iter().enumerate() {
        let partition = existing + i as u32;
        let ids: Vec<i32> = assignment.broker_ids.iter().map(|b| b.0).collect();
        if ids.len() != factor {
            return invalid(format!(
                "partition {partition}: {} replicas given, the topic has {factor} per partition",
                ids.len()
            ));
        }
        if let Some(unknown) = ids.iter().find(|id| !known.contains(id)) {
            return invalid(format!(
                "partition {partition}: broker {unknown} is not a broker of this cluster \
                 (brokers: {known:?})"
            ));
        }
        if ids.iter().enumerate().any(|(j, id)| ids[..j].contains(id)) {
            return invalid(format!("partition {partition}: a broker is named twice"));
        }
        if !cluster.enabled() {
            continue;
        }
        let placed: Vec<i32> = cluster
            .replicas_for(name, partition as u16, factor as u8)
            .into_iter()
            .map(|id| id as i32)
            .collect();
        if ids != placed {
            return invalid(format!(
                "partition {partition}: the brokers place replicas themselves, as at topic \
                 creation: {placed:?} (given {ids:?}); leave assignments out or give that"
            ));
        }
    }
    Ok(())
}

/// Grows one topic through the admin path; the admin work runs as its own task, so a
/// `timeout_ms` that passes answers REQUEST_TIMED_OUT while the grow goes on.
async fn carry_out(gateway: &Arc<Gateway>, grow: Grow, timeout_ms: i32) -> Result<(), Refusal> {
    let request = admin::Request::CreatePartitions {
        name: grow.name.clone(),
        partitions: grow.partitions,
        forwarded: false,
    };
    let node = gateway.node.clone();
    let task = tokio::spawn(async move { admin::handle(&node, request).await });
    let answer = if timeout_ms > 0 {
        match tokio::time::timeout(Duration::from_millis(timeout_ms as u64), task).await {
            Ok(joined) => joined,
            Err(_) => {
                gateway.topics.invalidate();
                return Err((
                    ResponseError::RequestTimedOut,
                    format!(
                        "topic {}: the new partitions were not ready within {timeout_ms} ms; \
                         they are still being added",
                        grow.name
                    ),
                ));
            }
        }
    } else {
        task.await
    };
    gateway.topics.invalidate();
    let answer = answer.unwrap_or_else(|error| {
        admin::Response::error(codes::DATAPLANE_ERROR, format!("admin task: {error}"))
    });
    match super::topics::one_answer(answer, "") {
        admin::Response::TopicCreated { .. } => Ok(()),
        admin::Response::Error { code, message } => Err((error_of(&code), message)),
        other => Err((
            ResponseError::UnknownServerError,
            format!("unexpected admin answer {other:?}"),
        )),
    }
}

fn error_of(code: &str) -> ResponseError {
    match code {
        codes::INVALID_PARTITIONS => ResponseError::InvalidPartitions,
        codes::UNKNOWN_TOPIC => ResponseError::UnknownTopicOrPartition,
        codes::INVALID_ARGUMENT => ResponseError::InvalidRequest,
        codes::TIMEOUT | codes::BUSY | codes::DATAPLANE_UNAVAILABLE | codes::UNREACHABLE => {
            ResponseError::RequestTimedOut
        }
        _ => ResponseError::UnknownServerError,
    }
}
