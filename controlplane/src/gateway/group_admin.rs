//! Deleting consumer groups and their committed offsets: Kafka's DeleteGroups (42) and
//! OffsetDelete (47), as `kafka-consumer-groups --delete` and `--delete-offsets` use them.
//!
//! Both are answered by the group's coordinator only (NOT_COORDINATOR elsewhere) and only
//! once the deletion is as durable as a commit: fdatasync'd to the offsets file, or
//! committed by the metadata quorum ([`Gateway::delete_group_offsets`]). Kafka's rules:
//!
//! - DeleteGroups deletes a group with no members (and every offset it committed);
//!   NON_EMPTY_GROUP while members are in it, GROUP_ID_NOT_FOUND for a group that has
//!   neither members nor offsets.
//! - OffsetDelete deletes a group's offsets of the partitions named, except those of
//!   topics a live member subscribes to (GROUP_SUBSCRIBED_TO_TOPIC for those partitions);
//!   a live group of another protocol type than `consumer` is NON_EMPTY_GROUP as a whole.

use super::committed::CommitError;
use super::groups::{not_coordinator, OffsetsDeletable};
use super::requests::{api_name, Context, RequestMeta};
use super::topics::find_partition;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::{
    DeleteGroupsRequest, DeleteGroupsResponse, OffsetDeleteRequest, OffsetDeleteResponse,
};
use std::future::Future;

/// Groups in one DeleteGroups request, at most (each one a durable write).
pub const DELETE_GROUPS_PER_REQUEST_MAX: usize = 1000;

/// The error code of a failed durable deletion.
fn deletion_error(error: &CommitError) -> i16 {
    match error {
        CommitError::NotCoordinator(_) => ResponseError::NotCoordinator.code(),
        CommitError::UnknownTopicOrPartition => ResponseError::UnknownTopicOrPartition.code(),
        CommitError::Unavailable(_) => ResponseError::CoordinatorNotAvailable.code(),
    }
}

pub fn delete_groups(
    context: &Context,
    meta: &RequestMeta,
    request: DeleteGroupsRequest,
) -> impl Future<Output = DeleteGroupsResponse> + Send + 'static {
    let gateway = context.gateway.clone();
    let api = api_name(meta.api);
    // Each group: its answer now, or the deletion to wait for.
    let mut decided = Vec::with_capacity(request.groups_names.len());
    for (index, group_id) in request.groups_names.into_iter().enumerate() {
        let id = group_id.0.as_str().to_string();
        let early = if index >= DELETE_GROUPS_PER_REQUEST_MAX {
            Some(ResponseError::PolicyViolation)
        } else if id.is_empty() {
            Some(ResponseError::InvalidGroupId)
        } else {
            not_coordinator(&gateway, &id)
        };
        if let Some(error) = early {
            decided.push((group_id, Err(error.code())));
            continue;
        }
        let live = gateway.groups.lock().expect("coordinator lock").delete(&id);
        let outcome = match live {
            Err(error) => Err(error.code()),
            Ok(false) if gateway.group_offsets(&id).is_empty() => {
                Err(ResponseError::GroupIdNotFound.code())
            }
            Ok(_) => Ok(gateway.delete_group_offsets(&id, None)),
        };
        decided.push((group_id, outcome));
    }
    async move {
        let mut response = DeleteGroupsResponse::default();
        for (group_id, outcome) in decided {
            let error_code = match outcome {
                Err(code) => code,
                Ok(deletion) => match deletion.await {
                    Ok(()) => 0,
                    Err(error) => {
                        eprintln!(
                            "precursor-controlplane: kafka gateway: deleting group {:?}: {error}",
                            group_id.0.as_str()
                        );
                        deletion_error(&error)
                    }
                },
            };
            gateway.metrics.error(api, error_code);
            let mut result = DeletableGroupResult::default();
            result.group_id = group_id;
            result.error_code = error_code;
            response.results.push(result);
        }
        response
    }
}

pub fn offset_delete(
    context: &Context,
    meta: &RequestMeta,
    request: OffsetDeleteRequest,
) -> impl Future<Output = OffsetDeleteResponse> + Send + 'static {
    let gateway = context.gateway.clone();
    let api = api_name(meta.api);
    let group = request.group_id.0.as_str().to_string();
    let mut response = OffsetDeleteResponse::default();
    let top_level = if group.is_empty() {
        Some(ResponseError::InvalidGroupId)
    } else {
        not_coordinator(&gateway, &group)
    };
    let deletable = match top_level {
        Some(_) => OffsetsDeletable::None,
        None => gateway
            .groups
            .lock()
            .expect("coordinator lock")
            .offsets_deletable(&group),
    };
    let top_level = top_level.or_else(|| match deletable {
        OffsetsDeletable::None => Some(ResponseError::NonEmptyGroup),
        OffsetsDeletable::NoLiveGroup if gateway.group_offsets(&group).is_empty() => {
            Some(ResponseError::GroupIdNotFound)
        }
        _ => None,
    });
    let mut doomed = Vec::new();
    // Which response partitions wait for the deletion.
    let mut waiting = Vec::new();
    if let Some(error) = top_level {
        response.error_code = error.code();
        gateway.metrics.error(api, response.error_code);
    } else {
        let names: Vec<&str> = request.topics.iter().map(|t| t.name.0.as_str()).collect();
        let topics = gateway.topics.get_including(&gateway, &names).ok();
        let in_cluster = gateway.cluster_broker_id() != 0;
        for topic in &request.topics {
            let name = topic.name.0.as_str();
            let subscribed =
                matches!(&deletable, OffsetsDeletable::AllBut(topics) if topics.contains(name));
            let mut topic_response = OffsetDeleteResponseTopic::default();
            topic_response.name = topic.name.clone();
            for partition in &topic.partitions {
                let index = partition.partition_index;
                let known = topics.as_ref().is_some_and(|t| {
                    find_partition(t, name, index).is_some()
                        || (in_cluster && index >= 0 && t.contains_key(name))
                });
                let mut entry = OffsetDeleteResponsePartition::default();
                entry.partition_index = index;
                entry.error_code = if !known {
                    ResponseError::UnknownTopicOrPartition.code()
                } else if subscribed {
                    ResponseError::GroupSubscribedToTopic.code()
                } else {
                    doomed.push((name.to_string(), index));
                    waiting.push((response.topics.len(), topic_response.partitions.len()));
                    0
                };
                topic_response.partitions.push(entry);
            }
            response.topics.push(topic_response);
        }
    }
    let deletion = (!doomed.is_empty()).then(|| gateway.delete_group_offsets(&group, Some(doomed)));
    async move {
        if let Some(deletion) = deletion {
            if let Err(error) = deletion.await {
                eprintln!(
                    "precursor-controlplane: kafka gateway: deleting offsets of group \
                     {group:?}: {error}"
                );
                let code = deletion_error(&error);
                for (topic, partition) in waiting {
                    response.topics[topic].partitions[partition].error_code = code;
                }
            }
        }
        for topic in &response.topics {
            for partition in &topic.partitions {
                gateway.metrics.error(api, partition.error_code);
            }
        }
        response
    }
}
