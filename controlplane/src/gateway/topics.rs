//! Metadata, CreateTopics, DeleteTopics: the topic list comes from the data plane's
//! counters file (as for `precursor topic list`), creation and deletion go through the
//! admin path (the command ring), as the CLI's do.

use super::requests::{api_name, Context, RequestMeta};
use super::Gateway;
use crate::admin::{self, codes, PartitionInfo};
use crate::counters::CountersSnapshot;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{
    BrokerId, CreateTopicsRequest, CreateTopicsResponse, DeleteTopicsRequest, DeleteTopicsResponse,
    MetadataRequest, MetadataResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use precursor_config::limits::PARTITIONS_PER_TOPIC_MAX;
use precursor_protocol::frame::is_valid_topic_name;
use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a read of the counters file serves topic lookups, in milliseconds. A read
/// walks every counter (a busy gateway otherwise spends a few percent of a core on it);
/// a topic deleted through another path stays listed this long at most, and a produce to
/// it meanwhile is refused UNKNOWN_TOPIC_OR_PARTITION by the data plane.
pub const TOPIC_VIEW_MAX_AGE_MS: u64 = 500;
/// A lookup that misses a topic reads the file again if the cached read is older than
/// this, in milliseconds (a topic created a moment ago by another path is found; a client
/// asking for a topic that does not exist costs at most one read per this interval).
pub const TOPIC_VIEW_MISS_REFRESH_MS: u64 = 2;
/// "Not requested" for the authorized-operations fields (Kafka's INT32_MIN).
const AUTHORIZED_OPERATIONS_OMITTED: i32 = i32::MIN;

/// Topic name -> partitions (offsets, bytes) as the data plane last published them.
pub type Topics = BTreeMap<String, Vec<PartitionInfo>>;

/// Why there is no topic list.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the data plane is not running: {0}")]
pub struct TopicsUnavailable(pub String);

/// A cached read of the counters file's topics.
pub struct TopicView {
    cnc_dir: PathBuf,
    cache: Mutex<Option<(Instant, Arc<Topics>)>>,
}

impl TopicView {
    pub fn new(cnc_dir: PathBuf) -> TopicView {
        TopicView {
            cnc_dir,
            cache: Mutex::new(None),
        }
    }

    /// The topics, read at most [`TOPIC_VIEW_MAX_AGE_MS`] ago.
    pub fn get(&self, gateway: &Gateway) -> Result<Arc<Topics>, TopicsUnavailable> {
        self.get_including(gateway, &[])
    }

    /// The topics, read again (at most every [`TOPIC_VIEW_MISS_REFRESH_MS`]) when one of
    /// `names` is missing from the cached read.
    pub fn get_including(
        &self,
        gateway: &Gateway,
        names: &[&str],
    ) -> Result<Arc<Topics>, TopicsUnavailable> {
        let mut cache = self.cache.lock().expect("topic view lock");
        if let Some((read_at, topics)) = cache.as_ref() {
            let age = read_at.elapsed();
            let fresh = age < Duration::from_millis(TOPIC_VIEW_MAX_AGE_MS);
            let complete = names.iter().all(|name| topics.contains_key(*name))
                || age < Duration::from_millis(TOPIC_VIEW_MISS_REFRESH_MS);
            if fresh && complete {
                return Ok(topics.clone());
            }
        }
        let state = gateway.node.link.state();
        if !state.is_alive() {
            *cache = None;
            return Err(TopicsUnavailable(state.problem()));
        }
        let snapshot = CountersSnapshot::read(&self.cnc_dir)
            .map_err(|e| TopicsUnavailable(format!("cannot read its counters: {e}")))?;
        let topics = Arc::new(snapshot.topics().clone());
        *cache = Some((Instant::now(), topics.clone()));
        Ok(topics)
    }

    /// Forgets the cached read (after a create or delete).
    pub fn invalidate(&self) {
        *self.cache.lock().expect("topic view lock") = None;
    }
}

fn str_bytes(text: &str) -> StrBytes {
    StrBytes::from_string(text.to_string())
}

fn topic_name(text: &str) -> TopicName {
    TopicName(str_bytes(text))
}

/// The Kafka error code for an admin error answer.
fn admin_error_code(code: &str) -> ResponseError {
    match code {
        codes::TOPIC_EXISTS => ResponseError::TopicAlreadyExists,
        codes::UNKNOWN_TOPIC => ResponseError::UnknownTopicOrPartition,
        codes::INVALID_ARGUMENT => ResponseError::InvalidTopicException,
        codes::TIMEOUT | codes::BUSY | codes::DATAPLANE_UNAVAILABLE => {
            ResponseError::RequestTimedOut
        }
        _ => ResponseError::UnknownServerError,
    }
}

/// Metadata: the one broker (this gateway) and the topics asked for, creating unknown
/// ones when the client allows it and `topics.auto_create` is on.
pub fn metadata(
    context: &Context,
    meta: &RequestMeta,
    request: MetadataRequest,
) -> impl Future<Output = MetadataResponse> + Send + 'static {
    let gateway = context.gateway.clone();
    let (host, port) = gateway.advertised(context.local);
    let version = meta.version;
    let api = api_name(meta.api);
    async move {
        let mut response = MetadataResponse::default();
        let broker_id = BrokerId(gateway.config.broker_id);
        let mut broker = MetadataResponseBroker::default();
        broker.node_id = broker_id;
        broker.host = str_bytes(&host);
        broker.port = port;
        response.brokers = vec![broker];
        response.cluster_id = Some(str_bytes(&gateway.cluster_id));
        response.controller_id = broker_id;
        response.cluster_authorized_operations = AUTHORIZED_OPERATIONS_OMITTED;
        let wanted: Option<Vec<String>> = match request.topics {
            None => None,
            Some(topics) if topics.is_empty() && version == 0 => None,
            Some(topics) => Some(
                topics
                    .into_iter()
                    .map(|t| {
                        t.name
                            .map_or_else(String::new, |n| n.0.as_str().to_string())
                    })
                    .collect(),
            ),
        };
        let auto_create = (version < 4 || request.allow_auto_topic_creation)
            && gateway.node.config.topics.auto_create;
        let names: Vec<&str> = wanted.iter().flatten().map(String::as_str).collect();
        let mut topics = gateway.topics.get_including(&gateway, &names);
        match wanted {
            None => {
                if let Ok(topics) = &topics {
                    for (name, partitions) in topics.iter() {
                        response
                            .topics
                            .push(topic_metadata(&gateway, name, Some(partitions)));
                    }
                }
            }
            Some(names) => {
                for name in names {
                    let known = topics.as_ref().ok().and_then(|t| t.get(&name).cloned());
                    let entry = if let Some(partitions) = known {
                        topic_metadata(&gateway, &name, Some(&partitions))
                    } else if !is_valid_topic_name(&name) {
                        topic_error(&name, ResponseError::InvalidTopicException)
                    } else if topics.is_err() {
                        topic_error(&name, ResponseError::LeaderNotAvailable)
                    } else if auto_create {
                        create_default(&gateway, &name).await;
                        topics = gateway.topics.get(&gateway);
                        match topics.as_ref().ok().and_then(|t| t.get(&name)) {
                            Some(partitions) => topic_metadata(&gateway, &name, Some(partitions)),
                            None => topic_error(&name, ResponseError::LeaderNotAvailable),
                        }
                    } else {
                        topic_error(&name, ResponseError::UnknownTopicOrPartition)
                    };
                    response.topics.push(entry);
                }
            }
        }
        for topic in &response.topics {
            gateway.metrics.error(api, topic.error_code);
        }
        response
    }
}

/// Creates `name` with `topics.default_partitions` partitions (auto-creation). A
/// failure is logged; the client sees LEADER_NOT_AVAILABLE and asks again.
async fn create_default(gateway: &Gateway, name: &str) {
    let request = admin::Request::CreateTopic {
        name: name.to_string(),
        partitions: u32::from(gateway.node.config.topics.default_partitions),
        retention_ms: None,
        retention_bytes: None,
    };
    let answer = admin::handle(&gateway.node, request).await;
    gateway.topics.invalidate();
    if let admin::Response::Error { code, message } = answer {
        if code != codes::TOPIC_EXISTS {
            eprintln!(
                "precursor-controlplane: kafka gateway: cannot auto-create topic {name:?}: {message}"
            );
        }
    }
}

fn topic_error(name: &str, error: ResponseError) -> MetadataResponseTopic {
    let mut topic = MetadataResponseTopic::default();
    topic.name = Some(topic_name(name));
    topic.error_code = error.code();
    topic.topic_authorized_operations = AUTHORIZED_OPERATIONS_OMITTED;
    topic
}

fn topic_metadata(
    gateway: &Gateway,
    name: &str,
    partitions: Option<&Vec<PartitionInfo>>,
) -> MetadataResponseTopic {
    let broker_id = BrokerId(gateway.config.broker_id);
    let mut topic = topic_error(name, ResponseError::UnknownTopicOrPartition);
    topic.error_code = 0;
    topic.partitions = partitions
        .map(|p| p.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|p| {
            let mut partition = MetadataResponsePartition::default();
            partition.partition_index = p.partition as i32;
            partition.leader_id = broker_id;
            // Unknown (-1): there are no leader epochs without replication, and a client
            // that saw one would validate positions with OffsetForLeaderEpoch.
            partition.leader_epoch = -1;
            partition.replica_nodes = vec![broker_id];
            partition.isr_nodes = vec![broker_id];
            partition
        })
        .collect();
    topic
}

/// What a CreateTopics entry asks for, once checked.
struct TopicToCreate {
    partitions: u32,
    retention_ms: Option<i64>,
    retention_bytes: Option<i64>,
}

/// Checks one CreateTopics entry: Err is the error code and message.
fn check_creatable(
    gateway: &Gateway,
    topic: &kafka_protocol::messages::create_topics_request::CreatableTopic,
) -> Result<TopicToCreate, (ResponseError, String)> {
    let name = topic.name.0.as_str();
    if !is_valid_topic_name(name) {
        return Err((
            ResponseError::InvalidTopicException,
            format!(
                "invalid topic name {name:?}: 1 to 249 characters of [a-zA-Z0-9._-], not . or .."
            ),
        ));
    }
    let broker_id = gateway.config.broker_id;
    let partitions = if topic.assignments.is_empty() {
        if topic.replication_factor != -1 && topic.replication_factor != 1 {
            return Err((
                ResponseError::InvalidReplicationFactor,
                format!(
                    "replication factor {} > 1: this node keeps one copy (no replication yet)",
                    topic.replication_factor
                ),
            ));
        }
        match topic.num_partitions {
            -1 => u32::from(gateway.node.config.topics.default_partitions),
            n if n >= 1 && n <= i32::from(PARTITIONS_PER_TOPIC_MAX) => n as u32,
            n => {
                return Err((
                    ResponseError::InvalidPartitions,
                    format!("{n} partitions: must be 1..={PARTITIONS_PER_TOPIC_MAX}"),
                ))
            }
        }
    } else {
        if topic.num_partitions != -1 || topic.replication_factor != -1 {
            return Err((
                ResponseError::InvalidRequest,
                "replica assignments go with num_partitions = -1 and replication_factor = -1"
                    .into(),
            ));
        }
        let valid = topic.assignments.iter().enumerate().all(|(i, a)| {
            a.partition_index == i as i32 && a.broker_ids.iter().map(|b| b.0).eq([broker_id])
        });
        if !valid || topic.assignments.len() > usize::from(PARTITIONS_PER_TOPIC_MAX) {
            return Err((
                ResponseError::InvalidReplicaAssignment,
                format!("partitions 0..N in order, each on broker {broker_id} alone"),
            ));
        }
        topic.assignments.len() as u32
    };
    let mut create = TopicToCreate {
        partitions,
        retention_ms: None,
        retention_bytes: None,
    };
    for config in &topic.configs {
        let key = config.name.as_str();
        let value = config.value.as_ref().map(|v| v.as_str()).unwrap_or("");
        let number = || {
            value
                .parse::<i64>()
                .ok()
                .filter(|v| *v == -1 || *v > 0)
                .ok_or_else(|| {
                    (
                        ResponseError::InvalidConfig,
                        format!("{key}={value:?}: a positive number, or -1 for no limit"),
                    )
                })
        };
        match key {
            "retention.ms" => create.retention_ms = Some(number()?),
            "retention.bytes" => create.retention_bytes = Some(number()?),
            "cleanup.policy" if value == "delete" => {}
            _ => {
                return Err((
                    ResponseError::InvalidConfig,
                    format!(
                        "topic config {key}={value:?} is not supported (supported: retention.ms, \
                         retention.bytes, cleanup.policy=delete)"
                    ),
                ))
            }
        }
    }
    Ok(create)
}

/// CreateTopics through the admin path.
pub async fn create_topics(
    gateway: Arc<Gateway>,
    meta: RequestMeta,
    request: CreateTopicsRequest,
) -> CreateTopicsResponse {
    let mut response = CreateTopicsResponse::default();
    let existing = gateway.topics.get(&gateway).ok();
    for topic in &request.topics {
        let name = topic.name.0.as_str().to_string();
        let mut result = CreatableTopicResult::default();
        result.name = topic.name.clone();
        let duplicated = request
            .topics
            .iter()
            .filter(|t| t.name == topic.name)
            .count()
            > 1;
        let outcome = if duplicated {
            Err((
                ResponseError::InvalidRequest,
                format!("topic {name:?} is named more than once in the request"),
            ))
        } else {
            check_creatable(&gateway, topic)
        };
        let outcome = match outcome {
            Err(error) => Err(error),
            Ok(_) if existing.as_ref().is_some_and(|t| t.contains_key(&name)) => Err((
                ResponseError::TopicAlreadyExists,
                format!("topic {name:?} already exists"),
            )),
            Ok(create) if request.validate_only => Ok(create.partitions),
            Ok(create) => create_one(&gateway, &name, &create).await,
        };
        match outcome {
            Ok(partitions) => {
                result.num_partitions = partitions as i32;
                result.replication_factor = 1;
                result.configs = Some(Vec::new());
            }
            Err((error, message)) => {
                result.error_code = error.code();
                result.error_message = Some(StrBytes::from_string(message));
                result.num_partitions = -1;
                result.replication_factor = -1;
            }
        }
        gateway.metrics.error(api_name(meta.api), result.error_code);
        response.topics.push(result);
    }
    response
}

async fn create_one(
    gateway: &Gateway,
    name: &str,
    create: &TopicToCreate,
) -> Result<u32, (ResponseError, String)> {
    // 0 in the admin request is the node default; "no limit" (-1) is set by an alter.
    let positive = |v: Option<i64>| v.filter(|v| *v > 0).map(|v| v as u64);
    let request = admin::Request::CreateTopic {
        name: name.to_string(),
        partitions: create.partitions,
        retention_ms: positive(create.retention_ms),
        retention_bytes: positive(create.retention_bytes),
    };
    let answer = admin::handle(&gateway.node, request).await;
    gateway.topics.invalidate();
    let partitions = match answer {
        admin::Response::TopicCreated { partitions, .. } => partitions,
        admin::Response::Error { code, message } => return Err((admin_error_code(&code), message)),
        other => {
            return Err((
                ResponseError::UnknownServerError,
                format!("unexpected admin answer {other:?}"),
            ))
        }
    };
    let unlimited = |v: Option<i64>| (v == Some(-1)).then_some(0u64);
    if create.retention_ms == Some(-1) || create.retention_bytes == Some(-1) {
        let alter = admin::Request::AlterTopic {
            name: name.to_string(),
            retention_ms: unlimited(create.retention_ms),
            retention_bytes: unlimited(create.retention_bytes),
        };
        if let admin::Response::Error { code, message } = admin::handle(&gateway.node, alter).await
        {
            return Err((
                admin_error_code(&code),
                format!("created, but setting no retention limit failed: {message}"),
            ));
        }
    }
    Ok(partitions)
}

/// DeleteTopics through the admin path; the topic's committed offsets go with it.
pub async fn delete_topics(
    gateway: Arc<Gateway>,
    meta: RequestMeta,
    request: DeleteTopicsRequest,
) -> DeleteTopicsResponse {
    let mut response = DeleteTopicsResponse::default();
    for name in &request.topic_names {
        let text = name.0.as_str().to_string();
        let mut result = DeletableTopicResult::default();
        result.name = Some(name.clone());
        let answer = if is_valid_topic_name(&text) {
            admin::handle(
                &gateway.node,
                admin::Request::DeleteTopic { name: text.clone() },
            )
            .await
        } else {
            admin::Response::error(codes::UNKNOWN_TOPIC, format!("no topic named {text:?}"))
        };
        gateway.topics.invalidate();
        match answer {
            admin::Response::Ok => {
                if let Err(error) = gateway.offsets.delete_topic(&text).await {
                    eprintln!(
                        "precursor-controlplane: kafka gateway: topic {text:?} deleted, its \
                         committed offsets not: {error}"
                    );
                }
            }
            admin::Response::Error { code, message } => {
                result.error_code = admin_error_code(&code).code();
                result.error_message = Some(StrBytes::from_string(message));
            }
            other => {
                result.error_code = ResponseError::UnknownServerError.code();
                result.error_message = Some(StrBytes::from_string(format!(
                    "unexpected admin answer {other:?}"
                )));
            }
        }
        gateway.metrics.error(api_name(meta.api), result.error_code);
        response.responses.push(result);
    }
    response
}
