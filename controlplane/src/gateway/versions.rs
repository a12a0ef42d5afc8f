//! The APIs and versions the gateway implements: exactly what ApiVersions advertises.
//!
//! Floors: Produce 3 and Fetch 4 are the first versions that carry RecordBatch v2 (the
//! only format the log stores); the others start where kafka-protocol 0.18 (Kafka 4.1's
//! specs) starts. Ceilings: the last version whose fields the gateway fills with meaning
//! (Fetch 13+ and Produce 13 name topics by UUID, Metadata 10+ returns topic ids,
//! ListOffsets 7+ asks for the max-timestamp offset, JoinGroup 8+ and OffsetCommit 9+ are
//! KIP-848 era). A broker of a cluster also answers OffsetForLeaderEpoch
//! ([`CLUSTER_APIS`]). docs/kafka.md lists them with what is not supported.

use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::ApiKey;
use kafka_protocol::messages::ApiVersionsResponse;
use kafka_protocol::protocol::VersionRange;

/// `(api, min, max)` for every API the gateway answers.
pub const SUPPORTED_APIS: [(ApiKey, i16, i16); 29] = [
    (ApiKey::Produce, 3, 9),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ListOffsets, 1, 6),
    (ApiKey::Metadata, 0, 9),
    (ApiKey::OffsetCommit, 2, 8),
    (ApiKey::OffsetFetch, 1, 7),
    (ApiKey::FindCoordinator, 0, 4),
    (ApiKey::JoinGroup, 0, 7),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 4),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::ListGroups, 0, 4),
    (ApiKey::DeleteGroups, 0, 2),
    (ApiKey::OffsetDelete, 0, 0),
    (ApiKey::DescribeLogDirs, 1, 4),
    (ApiKey::ApiVersions, 0, 3),
    (ApiKey::CreateTopics, 2, 5),
    (ApiKey::DeleteTopics, 1, 5),
    // CreatePartitions: v2 is flexible, v3 the same fields (KIP-599's throttling: unused).
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::InitProducerId, 0, 4),
    (ApiKey::DescribeCluster, 0, 1),
    // SASL (sasl/mod.rs): tokens travel in SaslAuthenticate after a v1 handshake; a v0
    // handshake (bare tokens on the socket) is answered ILLEGAL_SASL_STATE and closed,
    // but v0 is advertised: librdkafka wants SaslHandshake 0..1 in ApiVersions before it
    // uses SASL at all. SaslAuthenticate v1 tells the session lifetime (KIP-368).
    // Advertised on every listener, as Kafka does.
    (ApiKey::SaslHandshake, 0, 1),
    (ApiKey::SaslAuthenticate, 0, 2),
    (ApiKey::DescribeUserScramCredentials, 0, 0),
    (ApiKey::AlterUserScramCredentials, 0, 0),
    // Topic configurations (configs.rs). DescribeConfigs v0 is gone from Kafka 4's specs
    // (KIP-896), so from kafka-protocol: v1 is the floor.
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::AlterConfigs, 0, 2),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
];

/// `(api, min, max)` of the APIs a broker of a cluster answers besides
/// [`SUPPORTED_APIS`]. OffsetForLeaderEpoch (v2 is librdkafka's, v3 adds the replica id,
/// v4 is flexible) only means something where leader epochs are given out: on a single
/// node Metadata says -1 and librdkafka, seeing it not advertised, skips the validation
/// it would otherwise ask for with the epochs producers write into their batches.
/// ElectLeaders (preferred-leader elections through the metadata quorum; v2 is flexible)
/// too.
pub const CLUSTER_APIS: [(ApiKey, i16, i16); 2] = [
    (ApiKey::OffsetForLeaderEpoch, 2, 4),
    (ApiKey::ElectLeaders, 0, 2),
];

/// The APIs advertised: [`SUPPORTED_APIS`], and [`CLUSTER_APIS`] in a cluster.
fn advertised(in_cluster: bool) -> impl Iterator<Item = &'static (ApiKey, i16, i16)> {
    let cluster: &'static [(ApiKey, i16, i16)] = if in_cluster { &CLUSTER_APIS } else { &[] };
    SUPPORTED_APIS.iter().chain(cluster)
}

/// The versions of `api` the gateway implements, if any.
pub fn supported_versions(api: ApiKey, in_cluster: bool) -> Option<VersionRange> {
    advertised(in_cluster)
        .find(|(key, _, _)| *key == api)
        .map(|&(_, min, max)| VersionRange { min, max })
}

/// The ApiVersions answer: every supported API, with `error_code`.
pub fn api_versions_response(error_code: i16, in_cluster: bool) -> ApiVersionsResponse {
    let mut response = ApiVersionsResponse::default();
    response.error_code = error_code;
    response.api_keys = advertised(in_cluster)
        .map(|&(key, min, max)| {
            let mut version = ApiVersion::default();
            version.api_key = key as i16;
            version.min_version = min;
            version.max_version = max;
            version
        })
        .collect();
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::protocol::Message;

    fn crate_range(api: ApiKey) -> VersionRange {
        api.valid_versions()
    }

    #[test]
    fn every_advertised_version_is_one_the_crate_can_decode_and_encode() {
        for &(api, min, max) in advertised(true) {
            assert!(min <= max, "{api:?}");
            let range = crate_range(api);
            assert!(
                range.min <= min && max <= range.max,
                "{api:?} {min}..={max} outside kafka-protocol's {range}"
            );
        }
        // The API list has no duplicates.
        let all: Vec<ApiKey> = advertised(true).map(|(key, _, _)| *key).collect();
        for (i, a) in all.iter().enumerate() {
            assert!(all[i + 1..].iter().all(|b| a != b));
        }
    }

    #[test]
    fn offset_for_leader_epoch_is_a_cluster_api() {
        assert!(supported_versions(ApiKey::OffsetForLeaderEpoch, false).is_none());
        let range = supported_versions(ApiKey::OffsetForLeaderEpoch, true).unwrap();
        assert_eq!((range.min, range.max), (2, 4));
        assert_eq!(
            api_versions_response(0, false).api_keys.len(),
            SUPPORTED_APIS.len()
        );
        assert_eq!(
            api_versions_response(0, true).api_keys.len(),
            SUPPORTED_APIS.len() + CLUSTER_APIS.len()
        );
    }

    #[test]
    fn record_batch_v2_floors() {
        assert_eq!(supported_versions(ApiKey::Produce, false).unwrap().min, 3);
        assert_eq!(supported_versions(ApiKey::Fetch, false).unwrap().min, 4);
        assert_eq!(
            supported_versions(ApiKey::SaslHandshake, false)
                .unwrap()
                .max,
            1
        );
        assert!(supported_versions(ApiKey::EndTxn, true).is_none());
        let response = api_versions_response(0, false);
        assert_eq!(response.api_keys.len(), SUPPORTED_APIS.len());
        let _ = kafka_protocol::messages::ProduceRequest::VERSIONS;
    }
}
