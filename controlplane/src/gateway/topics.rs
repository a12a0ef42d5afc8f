//! Metadata, CreateTopics, DeleteTopics: the topic list comes from the data plane's
//! counters file (as for `precursor topic list`), creation and deletion go through the
//! admin path (the command ring), as the CLI's do.

use super::cluster::{Leadership, LiveGauge};
use super::requests::{api_name, Context, RequestMeta};
use super::Gateway;
use super::{str_bytes, AUTHORIZED_OPERATIONS_OMITTED};
use crate::admin::{self, codes, PartitionInfo};
use crate::counters::{parse_labels, CountersSnapshot, Sample};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
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
use precursor_config::REPLICATION_FACTOR_MAX;
use precursor_protocol::frame::is_valid_topic_name;
use precursor_protocol::topic_config::TopicConfigs;
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
/// In a cluster, a request that the cached view would turn away for leadership (a
/// partition led elsewhere, an epoch it does not know) reads the view again first when it
/// is older than this, in milliseconds, and Metadata is answered from a view at most this
/// old: after a leader change (published within 10 ms) clients are told at once.
pub const TOPIC_VIEW_LEADERSHIP_MAX_AGE_MS: u64 = 20;

/// One partition of the topic view: its offsets, bytes and (in a cluster) replication,
/// as the data plane last published them.
#[derive(Clone, Debug, Default)]
pub struct Partition {
    pub info: PartitionInfo,
    /// The high watermark gauge's slot, for live reads (Fetch's bound; in a cluster).
    pub high_watermark_gauge: Option<LiveGauge>,
}

impl Partition {
    pub fn index(&self) -> i32 {
        self.info.partition as i32
    }

    /// Who serves it, for a broker whose `cluster.broker_id` is `me` (0: not a cluster).
    pub fn leadership(&self, me: u32) -> Leadership {
        Leadership::of(me, &self.info)
    }
}

/// Topic name -> its partitions in partition order, as the data plane last published
/// them. A broker of a cluster may publish only some partitions of a topic.
pub type Topics = BTreeMap<String, Vec<Partition>>;

/// Refused INVALID_REQUEST when a request names `topic` more than once (CreateTopics,
/// CreatePartitions: Kafka answers each such entry so).
pub(super) fn named_once<'a>(
    names: impl Iterator<Item = &'a TopicName>,
    topic: &TopicName,
) -> Result<(), (ResponseError, String)> {
    if names.filter(|name| *name == topic).nth(1).is_none() {
        return Ok(());
    }
    Err((
        ResponseError::InvalidRequest,
        format!(
            "topic {:?} is named more than once in the request",
            topic.0.as_str()
        ),
    ))
}

/// Partition `index` of `topic` in the view.
pub fn find_partition<'a>(topics: &'a Topics, topic: &str, index: i32) -> Option<&'a Partition> {
    let partitions = topics.get(topic)?;
    partitions
        .binary_search_by_key(&index, Partition::index)
        .ok()
        .map(|at| &partitions[at])
}

/// The topic view of a snapshot of the counters file.
pub fn topics_of(snapshot: &CountersSnapshot) -> Topics {
    snapshot
        .topics()
        .iter()
        .map(|(name, partitions)| {
            let partitions = partitions
                .iter()
                .map(|info| Partition {
                    info: info.clone(),
                    high_watermark_gauge: None,
                })
                .collect();
            (name.clone(), partitions)
        })
        .collect()
}

/// Reads the counters file once: the topic view, with live high watermark gauges in a
/// cluster.
fn read_topics(cnc_dir: &std::path::Path, me: u32) -> Result<Topics, precursor_shm::CncError> {
    use precursor_protocol::counter_kind::PARTITION_HIGH_WATERMARK;
    let reader = Arc::new(precursor_shm::CountersReader::open(cnc_dir)?);
    let mut samples = Vec::new();
    let mut high_watermarks = Vec::new();
    reader.for_each(|counter| {
        let sample = Sample {
            kind: counter.kind,
            labels: parse_labels(counter.label),
            value: counter.value,
        };
        if me != 0 && counter.kind == PARTITION_HIGH_WATERMARK {
            high_watermarks.push((counter.id, counter.label.to_string(), sample.clone()));
        }
        samples.push(sample);
    });
    let mut topics = topics_of(&CountersSnapshot::from_samples(samples, Vec::new()));
    for (id, label, sample) in high_watermarks {
        let topic = sample.labels.iter().find(|(k, _)| k == "topic");
        let index = sample.labels.iter().find(|(k, _)| k == "partition");
        let (Some((_, topic)), Some(index)) = (topic, index.and_then(|(_, v)| v.parse().ok()))
        else {
            continue;
        };
        let Some(partitions) = topics.get_mut(topic.as_str()) else {
            continue;
        };
        if let Ok(at) = partitions.binary_search_by_key(&index, Partition::index) {
            partitions[at].high_watermark_gauge = Some(LiveGauge::new(
                reader.clone(),
                id,
                PARTITION_HIGH_WATERMARK,
                label,
            ));
        }
    }
    Ok(topics)
}

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
        self.get_within(gateway, names, Duration::from_millis(TOPIC_VIEW_MAX_AGE_MS))
    }

    /// The topics read at most `max_age` ago (and read again, at most every
    /// [`TOPIC_VIEW_MISS_REFRESH_MS`], when one of `names` is missing).
    pub fn get_within(
        &self,
        gateway: &Gateway,
        names: &[&str],
        max_age: Duration,
    ) -> Result<Arc<Topics>, TopicsUnavailable> {
        let mut cache = self.cache.lock().expect("topic view lock");
        if let Some((read_at, topics)) = cache.as_ref() {
            let age = read_at.elapsed();
            let fresh = age < max_age;
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
        let topics = read_topics(&self.cnc_dir, gateway.cluster_broker_id())
            .map_err(|e| TopicsUnavailable(format!("cannot read its counters: {e}")))?;
        let topics = Arc::new(topics);
        *cache = Some((Instant::now(), topics.clone()));
        Ok(topics)
    }

    /// The topics for serving requests: the cached view, read again first (when older
    /// than [`TOPIC_VIEW_LEADERSHIP_MAX_AGE_MS`]) if `turns_away` says it would refuse
    /// one of the request's partitions for leadership. Outside a cluster nothing is
    /// refused for leadership and this is [`TopicView::get_including`].
    pub fn get_serving(
        &self,
        gateway: &Gateway,
        names: &[&str],
        turns_away: impl Fn(&Topics) -> bool,
    ) -> Result<Arc<Topics>, TopicsUnavailable> {
        let topics = self.get_including(gateway, names)?;
        if gateway.cluster_broker_id() == 0 || !turns_away(&topics) {
            return Ok(topics);
        }
        let max_age = Duration::from_millis(TOPIC_VIEW_LEADERSHIP_MAX_AGE_MS);
        self.get_within(gateway, names, max_age)
    }

    /// Forgets the cached read (after a create or delete).
    pub fn invalidate(&self) {
        *self.cache.lock().expect("topic view lock") = None;
    }

    /// Forgets the cached read if it is older than
    /// [`TOPIC_VIEW_LEADERSHIP_MAX_AGE_MS`]: the data plane refused a request for
    /// leadership the view did not know of.
    pub fn leadership_changed(&self) {
        let mut cache = self.cache.lock().expect("topic view lock");
        let max_age = Duration::from_millis(TOPIC_VIEW_LEADERSHIP_MAX_AGE_MS);
        if cache
            .as_ref()
            .is_some_and(|(read_at, _)| read_at.elapsed() >= max_age)
        {
            *cache = None;
        }
    }
}

fn topic_name(text: &str) -> TopicName {
    TopicName(str_bytes(text))
}

/// The Kafka error code for an admin error answer.
pub(super) fn admin_error_code(code: &str) -> ResponseError {
    match code {
        codes::TOPIC_EXISTS => ResponseError::TopicAlreadyExists,
        codes::UNKNOWN_TOPIC => ResponseError::UnknownTopicOrPartition,
        codes::INVALID_ARGUMENT => ResponseError::InvalidTopicException,
        codes::INVALID_CONFIG => ResponseError::InvalidConfig,
        codes::TIMEOUT | codes::BUSY | codes::DATAPLANE_UNAVAILABLE | codes::UNREACHABLE => {
            ResponseError::RequestTimedOut
        }
        _ => ResponseError::UnknownServerError,
    }
}

/// Metadata: the brokers (this gateway alone outside a cluster; every broker of
/// `[cluster]` with a Kafka listener in one) and the topics asked for, creating unknown
/// ones when the client allows it and `topics.auto_create` is on.
pub fn metadata(
    context: &Context,
    meta: &RequestMeta,
    request: MetadataRequest,
) -> impl Future<Output = MetadataResponse> + Send + 'static {
    let gateway = context.gateway.clone();
    let own = context.advertised();
    let version = meta.version;
    let api = api_name(meta.api);
    async move {
        let mut response = MetadataResponse::default();
        let me = gateway.cluster_broker_id();
        let brokers = gateway.kafka_brokers(own);
        let listed = Listed {
            me,
            own_id: gateway.broker_id(),
            brokers: brokers.iter().map(|b| b.id).collect(),
        };
        response.brokers = brokers
            .into_iter()
            .map(|b| {
                let mut broker = MetadataResponseBroker::default();
                broker.node_id = BrokerId(b.id);
                broker.host = str_bytes(&b.host);
                broker.port = b.port;
                broker.rack = b.rack.as_deref().map(str_bytes);
                broker
            })
            .collect();
        response.cluster_id = Some(str_bytes(&gateway.cluster_id));
        response.controller_id = BrokerId(gateway.controller_id());
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
        // In a cluster, leaders as of the last 20 ms: clients ask after a NOT_LEADER.
        let max_age = Duration::from_millis(if me == 0 {
            TOPIC_VIEW_MAX_AGE_MS
        } else {
            TOPIC_VIEW_LEADERSHIP_MAX_AGE_MS
        });
        let mut topics = gateway.topics.get_within(&gateway, &names, max_age);
        match wanted {
            None => {
                if let Ok(topics) = &topics {
                    for (name, partitions) in topics.iter() {
                        response
                            .topics
                            .push(topic_metadata(&listed, name, partitions));
                    }
                }
            }
            Some(names) => {
                for name in names {
                    let known = topics.as_ref().ok().and_then(|t| t.get(&name).cloned());
                    let entry = if let Some(partitions) = known {
                        topic_metadata(&listed, &name, &partitions)
                    } else if !is_valid_topic_name(&name) {
                        topic_error(&name, ResponseError::InvalidTopicException)
                    } else if topics.is_err() {
                        topic_error(&name, ResponseError::LeaderNotAvailable)
                    } else if auto_create {
                        create_default(&gateway, &name).await;
                        topics = gateway.topics.get(&gateway);
                        match topics.as_ref().ok().and_then(|t| t.get(&name)) {
                            Some(partitions) => topic_metadata(&listed, &name, partitions),
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
            for partition in &topic.partitions {
                gateway.metrics.error(api, partition.error_code);
            }
        }
        response
    }
}

/// Who a Metadata answer speaks for, and which brokers it lists.
struct Listed {
    /// `cluster.broker_id` (0: not a cluster).
    me: u32,
    /// The broker id clients know this gateway by.
    own_id: i32,
    /// The ids in the answer's broker list.
    brokers: Vec<i32>,
}

/// Creates `name` with `topics.default_partitions` partitions (auto-creation). A
/// failure is logged; the client sees LEADER_NOT_AVAILABLE and asks again.
async fn create_default(gateway: &Gateway, name: &str) {
    let partitions = u32::from(gateway.node.config.topics.default_partitions);
    let answer = create_topic(gateway, name, partitions, None, None, None).await;
    gateway.topics.invalidate();
    if let admin::Response::Error { code, message } = answer {
        if code != codes::TOPIC_EXISTS {
            eprintln!(
                "precursor-controlplane: kafka gateway: cannot auto-create topic {name:?}: {message}"
            );
        }
    }
}

/// Creates a topic through the admin path: on this broker, or in a cluster on every
/// broker (the admin path forwards it through their cluster listeners, with the
/// replication factor, `None` for `topics.default_replication_factor`).
async fn create_topic(
    gateway: &Gateway,
    name: &str,
    partitions: u32,
    retention_ms: Option<u64>,
    retention_bytes: Option<u64>,
    replication_factor: Option<u8>,
) -> admin::Response {
    let request = if gateway.cluster_broker_id() == 0 {
        admin::Request::CreateTopic {
            name: name.to_string(),
            partitions,
            retention_ms,
            retention_bytes,
        }
    } else {
        admin::Request::ClusterCreateTopic {
            name: name.to_string(),
            partitions,
            retention_ms,
            retention_bytes,
            replication_factor,
            min_insync_replicas: None,
            acks_all: None,
            forwarded: false,
        }
    };
    one_answer(
        admin::handle(&gateway.node, request).await,
        codes::TOPIC_EXISTS,
    )
}

/// Deletes a topic through the admin path, on every broker in a cluster.
async fn delete_topic(gateway: &Gateway, name: &str) -> admin::Response {
    let request = if gateway.cluster_broker_id() == 0 {
        admin::Request::DeleteTopic {
            name: name.to_string(),
        }
    } else {
        admin::Request::ClusterDeleteTopic {
            name: name.to_string(),
            forwarded: false,
        }
    };
    one_answer(
        admin::handle(&gateway.node, request).await,
        codes::UNKNOWN_TOPIC,
    )
}

/// One answer for a create or delete the cluster carried out on every broker (this
/// broker's answer first): this broker's, unless it succeeded and another broker failed
/// (other than with `done_already`: the topic was there already, or was gone), which makes
/// the answer that failure, naming every broker that failed.
pub(super) fn one_answer(answer: admin::Response, done_already: &str) -> admin::Response {
    let admin::Response::ClusterResults(answers) = answer else {
        return answer;
    };
    let Some((own, others)) = answers.split_first() else {
        return admin::Response::error(codes::UNREACHABLE, "no broker answered");
    };
    if matches!(own.answer, admin::Response::Error { .. }) {
        return own.answer.clone();
    }
    let failed: Vec<(&str, String)> = others
        .iter()
        .filter_map(|other| match &other.answer {
            admin::Response::Error { code, message } if code != done_already => Some((
                code.as_str(),
                format!("broker {}: {message}", other.broker_id),
            )),
            _ => None,
        })
        .collect();
    match failed.first() {
        None => own.answer.clone(),
        Some((code, _)) => {
            let each: Vec<&str> = failed.iter().map(|(_, m)| m.as_str()).collect();
            admin::Response::error(
                code,
                format!("done on this broker, not on every one: {}", each.join("; ")),
            )
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

fn topic_metadata(listed: &Listed, name: &str, partitions: &[Partition]) -> MetadataResponseTopic {
    let mut topic = topic_error(name, ResponseError::UnknownTopicOrPartition);
    topic.error_code = 0;
    topic.partitions = partitions
        .iter()
        .map(|p| partition_metadata(listed, p))
        .collect();
    topic
}

/// One partition's leader, epoch, replicas and in-sync replicas. Alone (outside a cluster,
/// or without replication gauges): this broker, epoch -1 (no leader epochs, so clients do
/// not validate positions with OffsetForLeaderEpoch). In a cluster: the gauges; a leader
/// that is not known, or that clients cannot reach (no Kafka listener), is
/// LEADER_NOT_AVAILABLE with leader -1, and clients ask again.
fn partition_metadata(listed: &Listed, partition: &Partition) -> MetadataResponsePartition {
    let mut answer = MetadataResponsePartition::default();
    answer.partition_index = partition.index();
    let own = BrokerId(listed.own_id);
    let leadership = partition.leadership(listed.me);
    if leadership == Leadership::Alone {
        answer.leader_id = own;
        answer.leader_epoch = -1;
        answer.replica_nodes = vec![own];
        answer.isr_nodes = vec![own];
        return answer;
    }
    let info = &partition.info;
    let leader = info.leader as i32;
    let reachable = leader != 0 && listed.brokers.contains(&leader);
    answer.leader_id = BrokerId(if reachable { leader } else { -1 });
    if !reachable {
        answer.error_code = ResponseError::LeaderNotAvailable.code();
    }
    answer.leader_epoch = leadership.epoch();
    let or_leader = |ids: &[u32]| -> Vec<BrokerId> {
        if ids.is_empty() && leader != 0 {
            vec![BrokerId(leader)]
        } else {
            ids.iter().map(|&id| BrokerId(id as i32)).collect()
        }
    };
    answer.replica_nodes = or_leader(&info.replicas);
    answer.isr_nodes = or_leader(&info.isr);
    // Which replicas are offline is not published: none are said to be.
    answer.offline_replicas = Vec::new();
    answer
}

/// What a CreateTopics entry asks for, once checked.
struct TopicToCreate {
    partitions: u32,
    /// Checked by the one parser of topic configurations.
    configs: TopicConfigs,
    /// In a cluster; None: `topics.default_replication_factor`.
    replication_factor: Option<u8>,
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
    let broker_id = gateway.broker_id();
    let in_cluster = gateway.cluster_broker_id() != 0;
    let brokers = gateway.node.config.cluster.brokers.len();
    let replication_factor = match topic.replication_factor {
        -1 => None,
        1 if !in_cluster => None,
        rf if in_cluster
            && rf >= 1
            && rf <= i16::from(REPLICATION_FACTOR_MAX)
            && rf as usize <= brokers =>
        {
            Some(rf as u8)
        }
        rf if in_cluster => {
            return Err((
                ResponseError::InvalidReplicationFactor,
                format!(
                    "replication factor {rf}: 1 to {} (the cluster's brokers, at most \
                     {REPLICATION_FACTOR_MAX})",
                    brokers.min(usize::from(REPLICATION_FACTOR_MAX))
                ),
            ))
        }
        rf => {
            return Err((
                ResponseError::InvalidReplicationFactor,
                format!(
                    "replication factor {rf}: this node is not one of a cluster, it keeps one copy"
                ),
            ))
        }
    };
    let partitions = if topic.assignments.is_empty() {
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
        if in_cluster {
            return Err((
                ResponseError::InvalidReplicaAssignment,
                "replica assignments are not taken in a cluster: replicas are placed by \
                 cluster.replicas_for (or a topic's fixed replicas in the config)"
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
    let limits = crate::topic_configs::limits(&gateway.node.config);
    let pairs = topic
        .configs
        .iter()
        .map(|c| (c.name.as_str(), c.value.as_ref().map(|v| v.as_str())));
    let configs = TopicConfigs::from_pairs(pairs, &limits)
        .map_err(|e| (ResponseError::InvalidConfig, e.to_string()))?;
    let create = TopicToCreate {
        partitions,
        configs,
        replication_factor,
    };
    if let Some(n) = configs.min_insync_replicas {
        let factor = replicas_of(gateway, &create);
        if n > factor {
            return Err((
                ResponseError::InvalidConfig,
                format!("min.insync.replicas={n}: 1 to the replication factor ({factor})"),
            ));
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
        let names = request.topics.iter().map(|t| &t.name);
        let outcome =
            named_once(names, &topic.name).and_then(|()| check_creatable(&gateway, topic));
        let outcome = match outcome {
            Err(error) => Err(error),
            Ok(_) if existing.as_ref().is_some_and(|t| t.contains_key(&name)) => Err((
                ResponseError::TopicAlreadyExists,
                format!("topic {name:?} already exists"),
            )),
            Ok(create) if request.validate_only => Ok((
                create.partitions,
                replicas_of(&gateway, &create),
                create.configs,
            )),
            Ok(create) => create_one(&gateway, &name, &create)
                .await
                .map(|partitions| (partitions, replicas_of(&gateway, &create), create.configs)),
        };
        match outcome {
            Ok((partitions, replication_factor, configs)) => {
                result.num_partitions = partitions as i32;
                result.replication_factor = i16::from(replication_factor);
                // v5+: the topic's configuration as created (KIP-525).
                let described =
                    crate::topic_configs::describe_topic(&gateway.node.config, &configs, None);
                result.configs = Some(
                    described
                        .into_iter()
                        .map(|d| {
                            let mut config = CreatableTopicConfigs::default();
                            config.name = StrBytes::from_static_str(d.name);
                            config.value = Some(StrBytes::from_string(d.value));
                            config.read_only = d.read_only;
                            config.config_source = d.source.kafka_id();
                            config
                        })
                        .collect(),
                );
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

/// The replication factor a created topic gets.
fn replicas_of(gateway: &Gateway, create: &TopicToCreate) -> u8 {
    if gateway.cluster_broker_id() == 0 {
        return 1;
    }
    create
        .replication_factor
        .unwrap_or(gateway.node.config.topics.default_replication_factor)
}

async fn create_one(
    gateway: &Gateway,
    name: &str,
    create: &TopicToCreate,
) -> Result<u32, (ResponseError, String)> {
    // 0 in the admin request is the node default; "no limit" (-1) is set by the alter.
    let positive = |v: Option<i64>| v.filter(|v| *v > 0).map(|v| v as u64);
    let answer = create_topic(
        gateway,
        name,
        create.partitions,
        positive(create.configs.retention_ms),
        positive(create.configs.retention_bytes),
        create.replication_factor,
    )
    .await;
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
    let entries = create.configs.entries();
    if !entries.is_empty() {
        let alter = admin::Request::AlterTopicConfigs {
            name: name.to_string(),
            set: entries
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
            delete: Vec::new(),
            replace: false,
            validate_only: false,
            forwarded: false,
        };
        let answer = one_answer(admin::handle(&gateway.node, alter).await, "");
        if let admin::Response::Error { code, message } = answer {
            return Err((
                admin_error_code(&code),
                format!("created, but setting its configuration failed: {message}"),
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
            delete_topic(&gateway, &text).await
        } else {
            admin::Response::error(codes::UNKNOWN_TOPIC, format!("no topic named {text:?}"))
        };
        gateway.topics.invalidate();
        match answer {
            admin::Response::Ok => {
                if let Err(error) = gateway.forget_topic_offsets(&text).await {
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

#[cfg(test)]
mod tests {
    use super::*;
    use precursor_protocol::counter_kind as kind;

    fn sample(kind: u32, label: &str, value: u64) -> Sample {
        Sample {
            kind,
            labels: parse_labels(label),
            value,
        }
    }

    /// `orders` as broker 1 of three sees it: it leads partition 0 (epoch 4), broker 2
    /// leads partition 2 (broker 1 holds no replica of partition 1), partition 3 has no
    /// leader; `legacy` comes from a data plane without replication gauges.
    fn snapshot() -> CountersSnapshot {
        let mut samples = Vec::new();
        for (partition, leader, epoch, replicas, isr) in [
            (0u32, 1u64, 4u64, 0x03_02_01u64, 0x02_01u64),
            (2, 2, 9, 0x01_03_02, 0x01_03_02),
            (3, 0, 2, 0x02_01_03, 0),
        ] {
            let label = format!("topic=orders,partition={partition}");
            samples.extend([
                sample(kind::PARTITION_END_OFFSET, &label, 50),
                sample(kind::PARTITION_HIGH_WATERMARK, &label, 40),
                sample(kind::PARTITION_LEADER, &label, leader),
                sample(kind::PARTITION_LEADER_EPOCH, &label, epoch),
                sample(kind::PARTITION_REPLICAS, &label, replicas),
                sample(kind::PARTITION_ISR, &label, isr),
            ]);
        }
        samples.push(sample(
            kind::PARTITION_END_OFFSET,
            "topic=legacy,partition=0",
            7,
        ));
        CountersSnapshot::from_samples(samples, Vec::new())
    }

    fn listed(me: u32) -> Listed {
        Listed {
            me,
            own_id: if me == 0 { 0 } else { me as i32 },
            brokers: vec![1, 2, 3],
        }
    }

    #[test]
    fn partitions_are_found_by_number_even_with_gaps() {
        let topics = topics_of(&snapshot());
        let orders = &topics["orders"];
        assert_eq!(
            orders.iter().map(Partition::index).collect::<Vec<_>>(),
            [0, 2, 3]
        );
        assert!(find_partition(&topics, "orders", 1).is_none());
        assert_eq!(find_partition(&topics, "orders", 2).unwrap().index(), 2);
        assert!(find_partition(&topics, "orders", 4).is_none());
        assert!(find_partition(&topics, "nope", 0).is_none());
        assert_eq!(
            find_partition(&topics, "orders", 2).unwrap().leadership(1),
            Leadership::Elsewhere {
                leader: Some(2),
                epoch: 9
            }
        );
    }

    #[test]
    fn cluster_metadata_says_who_leads_at_which_epoch_with_replicas_and_isr() {
        let topics = topics_of(&snapshot());
        let orders = topic_metadata(&listed(1), "orders", &topics["orders"]);
        assert_eq!(orders.error_code, 0);
        let ids = |ids: &[BrokerId]| ids.iter().map(|b| b.0).collect::<Vec<_>>();
        let p0 = &orders.partitions[0];
        assert_eq!((p0.partition_index, p0.error_code), (0, 0));
        assert_eq!((p0.leader_id.0, p0.leader_epoch), (1, 4));
        assert_eq!(ids(&p0.replica_nodes), [1, 2, 3]);
        assert_eq!(ids(&p0.isr_nodes), [1, 2]);
        assert!(p0.offline_replicas.is_empty());
        let p2 = &orders.partitions[1];
        assert_eq!(
            (p2.partition_index, p2.leader_id.0, p2.leader_epoch),
            (2, 2, 9)
        );
        assert_eq!(ids(&p2.replica_nodes), [2, 3, 1]);
        // No leader: LEADER_NOT_AVAILABLE with leader -1, the replicas still listed.
        let p3 = &orders.partitions[2];
        assert_eq!(p3.error_code, ResponseError::LeaderNotAvailable.code());
        assert_eq!((p3.leader_id.0, p3.leader_epoch), (-1, 2));
        assert_eq!(ids(&p3.replica_nodes), [3, 1, 2]);
        assert!(p3.isr_nodes.is_empty());
        // A leader clients cannot reach (no Kafka listener): not available either.
        let unreachable = Listed {
            brokers: vec![1, 3],
            ..listed(1)
        };
        let orders = topic_metadata(&unreachable, "orders", &topics["orders"]);
        assert_eq!(
            orders.partitions[1].error_code,
            ResponseError::LeaderNotAvailable.code()
        );
        assert_eq!(orders.partitions[1].leader_id.0, -1);
        // Without replication gauges: this broker alone, no epoch.
        let legacy = topic_metadata(&listed(1), "legacy", &topics["legacy"]);
        let p = &legacy.partitions[0];
        assert_eq!((p.leader_id.0, p.leader_epoch, p.error_code), (1, -1, 0));
        assert_eq!(ids(&p.replica_nodes), [1]);
    }

    #[test]
    fn a_create_on_every_broker_is_one_answer_naming_the_brokers_that_failed() {
        use admin::{BrokerAnswer, Response};
        let created = Response::TopicCreated {
            name: "t".into(),
            topic_id: 1,
            partitions: 3,
        };
        let answer = |broker_id, answer: &Response| BrokerAnswer {
            broker_id,
            admin: String::new(),
            answer: answer.clone(),
        };
        let exists = Response::error(codes::TOPIC_EXISTS, "exists");
        let down = Response::error(codes::UNREACHABLE, "connection refused");
        // Every broker: this broker's answer (a broker that had it already counts as done).
        let all = Response::ClusterResults(vec![
            answer(1, &created),
            answer(2, &created),
            answer(3, &exists),
        ]);
        assert_eq!(one_answer(all, codes::TOPIC_EXISTS), created);
        // This broker refused: its refusal.
        let refused = Response::ClusterResults(vec![answer(1, &exists), answer(2, &created)]);
        assert_eq!(one_answer(refused, codes::TOPIC_EXISTS), exists);
        // Another failed: a failure naming it, retriable for Kafka clients.
        let partial = Response::ClusterResults(vec![answer(1, &created), answer(3, &down)]);
        let Response::Error { code, message } = one_answer(partial, codes::TOPIC_EXISTS) else {
            panic!("a partial create is a failure");
        };
        assert_eq!(code, codes::UNREACHABLE);
        assert!(
            message.contains("broker 3: connection refused"),
            "{message}"
        );
        assert_eq!(admin_error_code(&code), ResponseError::RequestTimedOut);
        // Outside a cluster the answer is the node's own.
        assert_eq!(one_answer(created.clone(), codes::TOPIC_EXISTS), created);
    }

    #[test]
    fn outside_a_cluster_metadata_is_as_on_a_single_node() {
        // The gauges are not even looked at: every partition is this broker's, epoch -1.
        let topics = topics_of(&snapshot());
        let orders = topic_metadata(&listed(0), "orders", &topics["orders"]);
        for partition in &orders.partitions {
            assert_eq!(partition.error_code, 0);
            assert_eq!((partition.leader_id.0, partition.leader_epoch), (0, -1));
            assert_eq!(partition.replica_nodes, vec![BrokerId(0)]);
            assert_eq!(partition.isr_nodes, vec![BrokerId(0)]);
        }
        assert!(topics["orders"]
            .iter()
            .all(|p| p.leadership(0) == Leadership::Alone
                && p.leadership(0).check_serving(17).is_ok()));
    }
}
