//! Cluster administration over the Kafka protocol: DescribeCluster (API 60) and
//! ElectLeaders (API 43), what `kafka-leader-election.sh` and admin clients'
//! `describe_cluster` / `elect_leaders` send.
//!
//! - DescribeCluster: the brokers clients are told of (as in Metadata), the cluster id and
//!   the controller: the metadata quorum's leader with `cluster.metadata = "quorum"`, else
//!   this broker (there is no other controller).
//! - ElectLeaders (quorum mode): a preferred-leader election per partition, each one
//!   `ElectLeader` commit of the quorum (the quorum picks the epoch, every broker's data
//!   plane follows). Kafka's answers: ELECTION_NOT_NEEDED when the preferred replica leads
//!   already, PREFERRED_LEADER_NOT_AVAILABLE when it is fenced or out of the ISR. An
//!   unclean election on request is not offered (a topic's `unclean_leader_election` lets
//!   the quorum elect an out-of-sync replica by itself): ELIGIBLE_LEADERS_NOT_AVAILABLE
//!   for a partition without a leader, ELECTION_NOT_NEEDED for one with. Outside quorum
//!   mode leaders move with `precursor topic lead` (static epochs): INVALID_REQUEST.

use super::requests::{api_name, Context, RequestMeta};
use super::{str_bytes, AUTHORIZED_OPERATIONS_OMITTED};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use kafka_protocol::messages::{
    BrokerId, DescribeClusterRequest, DescribeClusterResponse, ElectLeadersRequest,
    ElectLeadersResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use precursor_metadata::{MetadataCommand, MetadataReply, MetadataState, Refusal};
use std::future::Future;

/// DescribeCluster `endpoint_type` 1: brokers (2, controllers, is not served: clients
/// reach no controller listener of ours).
const ENDPOINT_TYPE_BROKERS: i8 = 1;
/// ElectLeaders `election_type` 0: preferred; 1: unclean.
const ELECTION_PREFERRED: i8 = 0;
/// Partitions in one ElectLeaders, at most (each is one quorum commit).
pub const ELECTIONS_PER_REQUEST_MAX: usize = 10_000;

pub fn describe_cluster(
    context: &Context,
    meta: &RequestMeta,
    request: DescribeClusterRequest,
) -> DescribeClusterResponse {
    let gateway = &context.gateway;
    let mut response = DescribeClusterResponse::default();
    response.endpoint_type = request.endpoint_type;
    response.cluster_id = str_bytes(&gateway.cluster_id);
    response.cluster_authorized_operations = AUTHORIZED_OPERATIONS_OMITTED;
    if meta.version >= 1 && request.endpoint_type != ENDPOINT_TYPE_BROKERS {
        response.error_code = ResponseError::UnsupportedEndpointType.code();
        response.error_message = Some(StrBytes::from_static_str(
            "only endpoint_type 1 (brokers) is served",
        ));
        response.controller_id = BrokerId(-1);
        gateway
            .metrics
            .error(api_name(meta.api), response.error_code);
        return response;
    }
    response.controller_id = BrokerId(gateway.controller_id());
    response.brokers = gateway
        .kafka_brokers(context.advertised())
        .into_iter()
        .map(|b| {
            let mut broker = DescribeClusterBroker::default();
            broker.broker_id = BrokerId(b.id);
            broker.host = str_bytes(&b.host);
            broker.port = b.port;
            broker.rack = b.rack.as_deref().map(str_bytes);
            broker
        })
        .collect();
    gateway.metrics.error(api_name(meta.api), 0);
    response
}

/// One partition's election: what to propose, or the answer already.
enum Election {
    Propose { leader: u32 },
    Answered(ResponseError, String),
}

fn election_of(state: &MetadataState, unclean: bool, topic: &str, partition: i32) -> Election {
    let answered = |error, message: String| Election::Answered(error, message);
    let Some(current) = u32::try_from(partition)
        .ok()
        .and_then(|p| state.partition(topic, p))
    else {
        return answered(
            ResponseError::UnknownTopicOrPartition,
            format!("no partition {topic}-{partition}"),
        );
    };
    if unclean {
        return if current.leader != 0 {
            answered(
                ResponseError::ElectionNotNeeded,
                format!("led by broker {}", current.leader),
            )
        } else {
            answered(
                ResponseError::EligibleLeadersNotAvailable,
                "unclean elections on request are not offered: set unclean_leader_election \
                 on the topic and the quorum elects an out-of-sync replica itself"
                    .to_string(),
            )
        };
    }
    let preferred = current.replicas[0];
    if current.leader == preferred {
        return answered(
            ResponseError::ElectionNotNeeded,
            format!("the preferred replica {preferred} leads already"),
        );
    }
    if !state.broker_live(preferred) || !current.isr.contains(&preferred) {
        return answered(
            ResponseError::PreferredLeaderNotAvailable,
            format!("the preferred replica {preferred} is fenced or not in sync"),
        );
    }
    Election::Propose { leader: preferred }
}

pub fn elect_leaders(
    context: &Context,
    meta: &RequestMeta,
    request: ElectLeadersRequest,
) -> impl Future<Output = ElectLeadersResponse> + Send + 'static {
    let gateway = context.gateway.clone();
    let api = api_name(meta.api);
    let version = meta.version;
    async move {
        let mut response = ElectLeadersResponse::default();
        let Some(member) = gateway.node.member.get() else {
            response.error_code = ResponseError::InvalidRequest.code();
            gateway.metrics.error(api, response.error_code);
            return response;
        };
        let state = member.state();
        let unclean = version >= 1 && request.election_type != ELECTION_PREFERRED;
        // Null: every partition of every topic.
        let wanted: Vec<(String, Vec<i32>)> = match request.topic_partitions {
            Some(topics) => topics
                .into_iter()
                .map(|t| (t.topic.0.as_str().to_string(), t.partitions))
                .collect(),
            None => state
                .topics
                .iter()
                .map(|(name, topic)| (name.clone(), (0..topic.partitions.len() as i32).collect()))
                .collect(),
        };
        let count: usize = wanted.iter().map(|(_, p)| p.len()).sum();
        if count > ELECTIONS_PER_REQUEST_MAX {
            response.error_code = ResponseError::InvalidRequest.code();
            gateway.metrics.error(api, response.error_code);
            return response;
        }
        for (topic, partitions) in wanted {
            let mut result = ReplicaElectionResult::default();
            result.topic = TopicName(str_bytes(&topic));
            for partition in partitions {
                let (error, message) = match election_of(&state, unclean, &topic, partition) {
                    Election::Answered(error, message) => (Some(error), message),
                    Election::Propose { leader } => {
                        let command = MetadataCommand::ElectLeader {
                            topic: topic.clone(),
                            partition: partition as u32,
                            leader,
                        };
                        match member.propose(command).await {
                            Ok(MetadataReply::Partition(_)) => (None, String::new()),
                            Ok(MetadataReply::Refused(
                                refusal @ (Refusal::TargetFenced | Refusal::TargetNotInIsr),
                            )) => (
                                Some(ResponseError::PreferredLeaderNotAvailable),
                                refusal.to_string(),
                            ),
                            Ok(other) => (
                                Some(ResponseError::UnknownServerError),
                                format!("the metadata quorum refused the election: {other}"),
                            ),
                            Err(error) => (
                                Some(ResponseError::RequestTimedOut),
                                format!("the metadata quorum did not commit the election: {error}"),
                            ),
                        }
                    }
                };
                let mut answer = PartitionResult::default();
                answer.partition_id = partition;
                answer.error_code = error.map_or(0, |e| e.code());
                answer.error_message = error.map(|_| StrBytes::from_string(message));
                gateway.metrics.error(api, answer.error_code);
                result.partition_result.push(answer);
            }
            response.replica_election_results.push(result);
        }
        response
    }
}
