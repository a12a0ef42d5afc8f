//! Reading one request: header, version check, body; and writing its answer.
//!
//! `dispatch` runs the synchronous part of a request at once (so requests of one
//! connection take effect in the order they were sent) and returns a future for the
//! answer. A request that cannot be read is a [`Malformed`]: the connection is closed.

use super::{
    cluster_admin, configs, create_partitions, fetch, group_admin, groups, list_offsets, log_dirs,
    offset_for_leader_epoch, produce, producer_ids, sasl, topics, versions, Gateway,
};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{self, ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// What a connection does once a request's future is done.
pub enum Outcome {
    /// Send these bytes (size prefix included).
    Respond(Bytes),
    /// Send nothing (a produce with acks=0).
    Silent,
    /// Close the connection (a produce with acks=0 that failed, as Kafka does).
    Close(&'static str),
    /// Send these bytes, then close the connection (a failed SASL authentication).
    RespondThenClose(Bytes, &'static str),
}

/// The answer to one request, when it is ready.
pub type Pending = Pin<Box<dyn Future<Output = Outcome> + Send>>;

/// Why a request could not be read. Each closes its connection and is counted under
/// [`Malformed::reason`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    #[error("request larger than gateway.request_bytes_max (or a negative size)")]
    TooLarge,
    #[error("request shorter than a request header")]
    Truncated,
    #[error("unknown API key {0}")]
    UnknownApiKey(i16),
    #[error("API {0:?} is not served by this gateway (not in ApiVersions)")]
    UnsupportedApi(ApiKey),
    #[error("API {0:?} version {1} is not supported (see ApiVersions)")]
    UnsupportedVersion(ApiKey, i16),
    #[error("request header does not decode")]
    Header,
    #[error("{0:?} v{1} body does not decode")]
    Body(ApiKey, i16),
    #[error("{0:?} before SASL authentication (only ApiVersions, SaslHandshake and SaslAuthenticate are served until then)")]
    Unauthenticated(ApiKey),
    #[error("{0:?} after the SASL session expired (connections_max_reauth_ms) without a re-authentication")]
    SessionExpired(ApiKey),
}

impl Malformed {
    /// The metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            Malformed::TooLarge => "too_large",
            Malformed::Truncated => "truncated",
            Malformed::UnknownApiKey(_) => "unknown_api_key",
            Malformed::UnsupportedApi(_) => "unsupported_api",
            Malformed::UnsupportedVersion(..) => "unsupported_version",
            Malformed::Header => "bad_header",
            Malformed::Body(..) => "bad_body",
            Malformed::Unauthenticated(_) => "sasl_unauthenticated",
            Malformed::SessionExpired(_) => "sasl_session_expired",
        }
    }
}

/// The connection a request came on.
pub struct Context {
    pub gateway: Arc<Gateway>,
    /// Our address as the client reached it (the advertised default).
    pub local: SocketAddr,
    pub peer: SocketAddr,
    /// A request of this connection had bytes after its body, and the log said so (once
    /// per connection; the metric counts every one).
    pub trailing_bytes_logged: AtomicBool,
    /// The `[[gateway.listeners]]` entry the client came in on; None for `gateway.listen`.
    pub listener: Option<Arc<precursor_config::ListenerConfig>>,
    /// Who the client is: `User:<name>` once it authenticated with SASL, else
    /// `User:<CN>` of its TLS certificate, else `User:ANONYMOUS` (kept for ACLs).
    pub principal: String,
    /// On a SASL listener: where the connection is in its authentication.
    pub sasl: Option<sasl::SaslSession>,
}

impl Context {
    pub fn new(gateway: Arc<Gateway>, local: SocketAddr, peer: SocketAddr) -> Context {
        Context {
            gateway,
            local,
            peer,
            trailing_bytes_logged: AtomicBool::new(false),
            listener: None,
            principal: super::tls::ANONYMOUS.to_string(),
            sasl: None,
        }
    }

    /// The `(host, port)` Metadata and FindCoordinator name for this broker: an extra
    /// listener's `advertised`, else the address the client reached (never another
    /// listener's port); the default listener follows [`Gateway::advertised`].
    pub fn advertised(&self) -> (String, i32) {
        match &self.listener {
            None => self.gateway.advertised(self.local),
            Some(listener) => listener
                .advertised
                .rsplit_once(':')
                .and_then(|(host, port)| {
                    Some((host.to_string(), i32::from(port.parse::<u16>().ok()?)))
                })
                .unwrap_or_else(|| (self.local.ip().to_string(), i32::from(self.local.port()))),
        }
    }
}

/// The header fields every answer needs.
#[derive(Clone, Debug)]
pub struct RequestMeta {
    pub api: ApiKey,
    pub version: i16,
    pub correlation_id: i32,
    pub client_id: String,
}

/// Bytes of the fixed header start: api key, api version, correlation id.
const HEADER_FIXED_BYTES: usize = 8;

/// A request body decoded with its API's version: what [`decode_request`] hands on.
/// Decoded once per request and moved straight into its handler.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum RequestBody {
    ApiVersions(messages::ApiVersionsRequest),
    Metadata(messages::MetadataRequest),
    CreateTopics(messages::CreateTopicsRequest),
    DeleteTopics(messages::DeleteTopicsRequest),
    CreatePartitions(messages::CreatePartitionsRequest),
    Produce(messages::ProduceRequest),
    Fetch(messages::FetchRequest),
    ListOffsets(messages::ListOffsetsRequest),
    OffsetForLeaderEpoch(messages::OffsetForLeaderEpochRequest),
    InitProducerId(messages::InitProducerIdRequest),
    FindCoordinator(messages::FindCoordinatorRequest),
    JoinGroup(messages::JoinGroupRequest),
    SyncGroup(messages::SyncGroupRequest),
    Heartbeat(messages::HeartbeatRequest),
    LeaveGroup(messages::LeaveGroupRequest),
    OffsetCommit(messages::OffsetCommitRequest),
    OffsetFetch(messages::OffsetFetchRequest),
    DescribeGroups(messages::DescribeGroupsRequest),
    ListGroups(messages::ListGroupsRequest),
    DeleteGroups(messages::DeleteGroupsRequest),
    OffsetDelete(messages::OffsetDeleteRequest),
    DescribeLogDirs(messages::DescribeLogDirsRequest),
    DescribeCluster(messages::DescribeClusterRequest),
    ElectLeaders(messages::ElectLeadersRequest),
    SaslHandshake(messages::SaslHandshakeRequest),
    SaslAuthenticate(messages::SaslAuthenticateRequest),
    DescribeUserScramCredentials(messages::DescribeUserScramCredentialsRequest),
    AlterUserScramCredentials(messages::AlterUserScramCredentialsRequest),
    DescribeConfigs(messages::DescribeConfigsRequest),
    AlterConfigs(messages::AlterConfigsRequest),
    IncrementalAlterConfigs(messages::IncrementalAlterConfigsRequest),
}

/// One request frame read off the wire by [`decode_request`].
#[allow(clippy::large_enum_variant)] // as RequestBody: made once, moved into its handler
#[derive(Debug)]
pub enum DecodedRequest {
    /// ApiVersions in a version we do not serve (KIP-511): answered in version 0 with
    /// UNSUPPORTED_VERSION and our versions. The rest of the request is not read: its
    /// header may be of a version we do not know.
    ApiVersionsUnsupported { correlation_id: i32 },
    Request {
        meta: RequestMeta,
        body: RequestBody,
        /// Bytes after the body, ignored (see [`decode_body`]).
        trailing_bytes: usize,
    },
}

/// Reads one request frame (size prefix removed): the header, the version check against
/// what ApiVersions advertises (`in_cluster`: with [`versions::CLUSTER_APIS`]), and the
/// body. No I/O and no state: the whole of what a client's bytes reach before a handler.
pub fn decode_request(mut frame: Bytes, in_cluster: bool) -> Result<DecodedRequest, Malformed> {
    if frame.len() < HEADER_FIXED_BYTES {
        return Err(Malformed::Truncated);
    }
    let raw_key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
    let api = ApiKey::try_from(raw_key).map_err(|_| Malformed::UnknownApiKey(raw_key))?;
    let Some(range) = versions::supported_versions(api, in_cluster) else {
        return Err(Malformed::UnsupportedApi(api));
    };
    if !(range.min..=range.max).contains(&version) {
        if api == ApiKey::ApiVersions {
            return Ok(DecodedRequest::ApiVersionsUnsupported { correlation_id });
        }
        return Err(Malformed::UnsupportedVersion(api, version));
    }
    let header = RequestHeader::decode(&mut frame, api.request_header_version(version))
        .map_err(|_| Malformed::Header)?;
    let meta = RequestMeta {
        api,
        version,
        correlation_id: header.correlation_id,
        client_id: header
            .client_id
            .as_ref()
            .map_or_else(String::new, |c| c.as_str().to_string()),
    };
    let body = match api {
        ApiKey::ApiVersions => RequestBody::ApiVersions(decode_body(&mut frame, &meta)?),
        ApiKey::Metadata => RequestBody::Metadata(decode_body(&mut frame, &meta)?),
        ApiKey::CreateTopics => RequestBody::CreateTopics(decode_body(&mut frame, &meta)?),
        ApiKey::DeleteTopics => RequestBody::DeleteTopics(decode_body(&mut frame, &meta)?),
        ApiKey::CreatePartitions => RequestBody::CreatePartitions(decode_body(&mut frame, &meta)?),
        ApiKey::Produce => RequestBody::Produce(decode_body(&mut frame, &meta)?),
        ApiKey::Fetch => RequestBody::Fetch(decode_body(&mut frame, &meta)?),
        ApiKey::ListOffsets => RequestBody::ListOffsets(decode_body(&mut frame, &meta)?),
        ApiKey::OffsetForLeaderEpoch => {
            RequestBody::OffsetForLeaderEpoch(decode_body(&mut frame, &meta)?)
        }
        ApiKey::InitProducerId => RequestBody::InitProducerId(decode_body(&mut frame, &meta)?),
        ApiKey::FindCoordinator => RequestBody::FindCoordinator(decode_body(&mut frame, &meta)?),
        ApiKey::JoinGroup => RequestBody::JoinGroup(decode_body(&mut frame, &meta)?),
        ApiKey::SyncGroup => RequestBody::SyncGroup(decode_body(&mut frame, &meta)?),
        ApiKey::Heartbeat => RequestBody::Heartbeat(decode_body(&mut frame, &meta)?),
        ApiKey::LeaveGroup => RequestBody::LeaveGroup(decode_body(&mut frame, &meta)?),
        ApiKey::OffsetCommit => RequestBody::OffsetCommit(decode_body(&mut frame, &meta)?),
        ApiKey::OffsetFetch => RequestBody::OffsetFetch(decode_body(&mut frame, &meta)?),
        ApiKey::DescribeGroups => RequestBody::DescribeGroups(decode_body(&mut frame, &meta)?),
        ApiKey::ListGroups => RequestBody::ListGroups(decode_body(&mut frame, &meta)?),
        ApiKey::DeleteGroups => RequestBody::DeleteGroups(decode_body(&mut frame, &meta)?),
        ApiKey::OffsetDelete => RequestBody::OffsetDelete(decode_body(&mut frame, &meta)?),
        ApiKey::DescribeLogDirs => RequestBody::DescribeLogDirs(decode_body(&mut frame, &meta)?),
        ApiKey::DescribeCluster => RequestBody::DescribeCluster(decode_body(&mut frame, &meta)?),
        ApiKey::ElectLeaders => RequestBody::ElectLeaders(decode_body(&mut frame, &meta)?),
        ApiKey::SaslHandshake => RequestBody::SaslHandshake(decode_body(&mut frame, &meta)?),
        ApiKey::SaslAuthenticate => RequestBody::SaslAuthenticate(decode_body(&mut frame, &meta)?),
        ApiKey::DescribeUserScramCredentials => {
            RequestBody::DescribeUserScramCredentials(decode_body(&mut frame, &meta)?)
        }
        ApiKey::AlterUserScramCredentials => {
            RequestBody::AlterUserScramCredentials(decode_body(&mut frame, &meta)?)
        }
        ApiKey::DescribeConfigs => RequestBody::DescribeConfigs(decode_body(&mut frame, &meta)?),
        ApiKey::AlterConfigs => RequestBody::AlterConfigs(decode_body(&mut frame, &meta)?),
        ApiKey::IncrementalAlterConfigs => {
            RequestBody::IncrementalAlterConfigs(decode_body(&mut frame, &meta)?)
        }
        other => return Err(Malformed::UnsupportedApi(other)),
    };
    Ok(DecodedRequest::Request {
        meta,
        body,
        trailing_bytes: frame.remaining(),
    })
}

/// Reads the header, checks the version, decodes the body and starts the request.
pub fn dispatch(context: &mut Context, frame: Bytes) -> Result<Pending, Malformed> {
    let gateway = &context.gateway.clone();
    let in_cluster = gateway.cluster_broker_id() != 0;
    let (meta, body, trailing_bytes) = match decode_request(frame, in_cluster) {
        Ok(DecodedRequest::Request {
            meta,
            body,
            trailing_bytes,
        }) => (meta, body, trailing_bytes),
        Ok(DecodedRequest::ApiVersionsUnsupported { correlation_id }) => {
            let api = ApiKey::ApiVersions;
            gateway.metrics.request(api_name(api));
            let code = ResponseError::UnsupportedVersion.code();
            gateway.metrics.error(api_name(api), code);
            let response = versions::api_versions_response(code, in_cluster);
            let meta = RequestMeta {
                api,
                version: 0,
                correlation_id,
                client_id: String::new(),
            };
            return Ok(ready(encode(&meta, &response)));
        }
        Err(malformed) => {
            // A request whose header was read counts as a request of its API.
            if let Malformed::Body(api, _) = malformed {
                gateway.metrics.request(api_name(api));
            }
            return Err(malformed);
        }
    };
    gateway.metrics.request(api_name(meta.api));
    if trailing_bytes > 0 {
        note_trailing_bytes(context, &meta, trailing_bytes);
    }
    sasl_gate(context, &meta, &body)?;
    Ok(match body {
        RequestBody::ApiVersions(_request) => {
            let response = versions::api_versions_response(0, in_cluster);
            ready(encode(&meta, &response))
        }
        RequestBody::Metadata(request) => {
            let answer = topics::metadata(context, &meta, request);
            respond_later(meta, answer)
        }
        RequestBody::CreateTopics(request) => {
            let answer = topics::create_topics(context.gateway.clone(), meta.clone(), request);
            respond_later(meta, answer)
        }
        RequestBody::DeleteTopics(request) => {
            let answer = topics::delete_topics(context.gateway.clone(), meta.clone(), request);
            respond_later(meta, answer)
        }
        RequestBody::CreatePartitions(request) => {
            let answer = create_partitions::create_partitions(
                context.gateway.clone(),
                meta.clone(),
                request,
            );
            respond_later(meta, answer)
        }
        RequestBody::DescribeConfigs(request) => {
            let answer = configs::describe_configs(context.gateway.clone(), meta.clone(), request);
            respond_later(meta, answer)
        }
        RequestBody::AlterConfigs(request) => {
            let answer = configs::alter_configs(context.gateway.clone(), meta.clone(), request);
            respond_later(meta, answer)
        }
        RequestBody::IncrementalAlterConfigs(request) => {
            let answer =
                configs::incremental_alter_configs(context.gateway.clone(), meta.clone(), request);
            respond_later(meta, answer)
        }
        RequestBody::Produce(request) => produce::produce(context, meta, request),
        RequestBody::Fetch(request) => {
            let answer = fetch::fetch(context.gateway.clone(), meta.clone(), request);
            respond_later(meta, answer)
        }
        RequestBody::ListOffsets(request) => {
            let answer = list_offsets::list_offsets(context.gateway.clone(), meta.clone(), request);
            respond_later(meta, answer)
        }
        RequestBody::OffsetForLeaderEpoch(request) => {
            let answer = offset_for_leader_epoch::offset_for_leader_epoch(
                context.gateway.clone(),
                meta.clone(),
                request,
            );
            respond_later(meta, answer)
        }
        RequestBody::InitProducerId(request) => {
            let response = producer_ids::init_producer_id(gateway, &meta, request);
            ready(encode(&meta, &response))
        }
        RequestBody::FindCoordinator(request) => {
            let response = groups::find_coordinator(context, &meta, request);
            ready(encode(&meta, &response))
        }
        RequestBody::JoinGroup(request) => {
            let answer = groups::join_group(context, &meta, request);
            respond_later(meta, answer)
        }
        RequestBody::SyncGroup(request) => {
            let answer = groups::sync_group(context, &meta, request);
            respond_later(meta, answer)
        }
        RequestBody::Heartbeat(request) => {
            let response = groups::heartbeat(context, &meta, request);
            ready(encode(&meta, &response))
        }
        RequestBody::LeaveGroup(request) => {
            let response = groups::leave_group(context, &meta, request);
            ready(encode(&meta, &response))
        }
        RequestBody::OffsetCommit(request) => {
            let answer = groups::offset_commit(context, &meta, request);
            respond_later(meta, answer)
        }
        RequestBody::OffsetFetch(request) => {
            let response = groups::offset_fetch(context, &meta, request);
            ready(encode(&meta, &response))
        }
        RequestBody::DescribeGroups(request) => {
            let response = groups::describe_groups(context, &meta, request);
            ready(encode(&meta, &response))
        }
        RequestBody::ListGroups(request) => {
            let response = groups::list_groups(context, &meta, request);
            ready(encode(&meta, &response))
        }
        RequestBody::DeleteGroups(request) => {
            let answer = group_admin::delete_groups(context, &meta, request);
            respond_later(meta, answer)
        }
        RequestBody::OffsetDelete(request) => {
            let answer = group_admin::offset_delete(context, &meta, request);
            respond_later(meta, answer)
        }
        RequestBody::DescribeLogDirs(request) => {
            let response = log_dirs::describe_log_dirs(context, &meta, request);
            ready(encode(&meta, &response))
        }
        RequestBody::DescribeCluster(request) => {
            let response = cluster_admin::describe_cluster(context, &meta, request);
            ready(encode(&meta, &response))
        }
        RequestBody::ElectLeaders(request) => {
            let answer = cluster_admin::elect_leaders(context, &meta, request);
            respond_later(meta, answer)
        }
        RequestBody::SaslHandshake(request) if meta.version == 0 => {
            // v0: the tokens would follow bare on the socket (before KIP-152); refused.
            let mut response = sasl::handshake(context, request);
            response.error_code = ResponseError::IllegalSaslState.code();
            gateway
                .metrics
                .error(api_name(meta.api), response.error_code);
            match encode(&meta, &response) {
                Outcome::Respond(bytes) => ready(Outcome::RespondThenClose(
                    bytes,
                    "SaslHandshake v0 (bare SASL tokens) is not served: v1 is",
                )),
                other => ready(other),
            }
        }
        RequestBody::SaslHandshake(request) => {
            let response = sasl::handshake(context, request);
            gateway
                .metrics
                .error(api_name(meta.api), response.error_code);
            ready(encode(&meta, &response))
        }
        RequestBody::SaslAuthenticate(request) => {
            let outcome = sasl::authenticate(context, request);
            let api = api_name(meta.api);
            gateway.metrics.error(api, outcome.response.error_code);
            let mut answer = encode(&meta, &outcome.response);
            if outcome.close {
                if let Some(message) = &outcome.response.error_message {
                    eprintln!(
                        "precursor-controlplane: kafka gateway: {}: SASL authentication \
                         failed: {}",
                        context.peer,
                        message.as_str()
                    );
                }
                if let Outcome::Respond(bytes) = answer {
                    answer = Outcome::RespondThenClose(bytes, "SASL authentication failed");
                }
            }
            match outcome.delay {
                None => ready(answer),
                Some(delay) => Box::pin(async move {
                    tokio::time::sleep(delay).await;
                    answer
                }),
            }
        }
        RequestBody::DescribeUserScramCredentials(request) => {
            let response = sasl::credentials_api::describe(context, request);
            gateway
                .metrics
                .error(api_name(meta.api), response.error_code);
            ready(encode(&meta, &response))
        }
        RequestBody::AlterUserScramCredentials(request) => {
            let response = sasl::credentials_api::alter(context, request);
            for result in &response.results {
                gateway.metrics.error(api_name(meta.api), result.error_code);
            }
            ready(encode(&meta, &response))
        }
    })
}

/// On a SASL listener: before authentication only ApiVersions, SaslHandshake and
/// SaslAuthenticate pass; after the session's lifetime (`connections_max_reauth_ms`)
/// without a re-authentication, only they do again. Anything else closes the
/// connection, as Kafka does.
fn sasl_gate(context: &Context, meta: &RequestMeta, body: &RequestBody) -> Result<(), Malformed> {
    let Some(session) = &context.sasl else {
        return Ok(());
    };
    if matches!(
        body,
        RequestBody::ApiVersions(_)
            | RequestBody::SaslHandshake(_)
            | RequestBody::SaslAuthenticate(_)
    ) {
        return Ok(());
    }
    if !session.authenticated() {
        return Err(Malformed::Unauthenticated(meta.api));
    }
    if session.expired(std::time::Instant::now()) {
        return Err(Malformed::SessionExpired(meta.api));
    }
    Ok(())
}

/// Decodes a request body of `meta`'s version. Bytes after the body are ignored, as
/// Apache Kafka ignores them: every librdkafka since 2.1.0 writes the null topics array
/// of its "all topics" Metadata v9+ request as a 4-byte placeholder where one byte
/// belongs (librdkafka issue #5049). The three extra zeros are read as the request's flags
/// and its real flags as tagged fields, which leaves 1 to 3 bytes over (the misread flags,
/// auto-creation and authorized operations, mean nothing for an all-topics request).
/// [`dispatch`] counts them and logs them once per connection ([`note_trailing_bytes`]).
fn decode_body<T: Decodable>(body: &mut Bytes, meta: &RequestMeta) -> Result<T, Malformed> {
    T::decode(body, meta.version).map_err(|_| Malformed::Body(meta.api, meta.version))
}

/// Bytes after a request's body: counted in
/// `precursor_gateway_request_trailing_bytes_total{api}` and logged once per connection.
fn note_trailing_bytes(context: &Context, meta: &RequestMeta, trailing: usize) {
    context
        .gateway
        .metrics
        .trailing_bytes(api_name(meta.api), trailing as u64);
    if !context.trailing_bytes_logged.swap(true, Ordering::Relaxed) {
        eprintln!(
            "precursor-controlplane: kafka gateway: {} (client id {:?}): {:?} v{} has \
             {trailing} bytes after its body: ignored, as Kafka does (librdkafka 2.1.0 and \
             later send 1 to 3 after an all-topics Metadata v9+, librdkafka issue \
             #5049); further ones on this connection are only counted",
            context.peer, meta.client_id, meta.api, meta.version
        );
    }
}

/// Encodes an answer: size prefix, response header of the API's version, body.
pub fn encode<T: Encodable>(meta: &RequestMeta, response: &T) -> Outcome {
    let header_version = meta.api.response_header_version(meta.version);
    let mut header = ResponseHeader::default();
    header.correlation_id = meta.correlation_id;
    let size = header
        .compute_size(header_version)
        .and_then(|h| Ok(h + response.compute_size(meta.version)?));
    let mut buffer = BytesMut::with_capacity(4 + size.unwrap_or(0));
    buffer.put_i32(0);
    let written = header
        .encode(&mut buffer, header_version)
        .and_then(|()| response.encode(&mut buffer, meta.version));
    if let Err(error) = written {
        // Our bug (a field out of its version's range): say so and drop the connection
        // rather than send bytes the client would misread.
        eprintln!(
            "precursor-controlplane: kafka gateway: cannot encode the {:?} v{} answer: {error}",
            meta.api, meta.version
        );
        return Outcome::Close("answer does not encode");
    }
    let length = (buffer.len() - 4) as i32;
    buffer[..4].copy_from_slice(&length.to_be_bytes());
    Outcome::Respond(buffer.freeze())
}

fn ready(outcome: Outcome) -> Pending {
    Box::pin(std::future::ready(outcome))
}

fn respond_later<T, F>(meta: RequestMeta, answer: F) -> Pending
where
    T: Encodable + Send + 'static,
    F: Future<Output = T> + Send + 'static,
{
    Box::pin(async move {
        let response = answer.await;
        encode(&meta, &response)
    })
}

/// A short name of an API for metrics labels.
pub fn api_name(api: ApiKey) -> &'static str {
    match api {
        ApiKey::Produce => "Produce",
        ApiKey::Fetch => "Fetch",
        ApiKey::ListOffsets => "ListOffsets",
        ApiKey::Metadata => "Metadata",
        ApiKey::OffsetCommit => "OffsetCommit",
        ApiKey::OffsetFetch => "OffsetFetch",
        ApiKey::FindCoordinator => "FindCoordinator",
        ApiKey::JoinGroup => "JoinGroup",
        ApiKey::Heartbeat => "Heartbeat",
        ApiKey::LeaveGroup => "LeaveGroup",
        ApiKey::SyncGroup => "SyncGroup",
        ApiKey::DescribeGroups => "DescribeGroups",
        ApiKey::ListGroups => "ListGroups",
        ApiKey::DeleteGroups => "DeleteGroups",
        ApiKey::OffsetDelete => "OffsetDelete",
        ApiKey::DescribeLogDirs => "DescribeLogDirs",
        ApiKey::ApiVersions => "ApiVersions",
        ApiKey::CreateTopics => "CreateTopics",
        ApiKey::DeleteTopics => "DeleteTopics",
        ApiKey::CreatePartitions => "CreatePartitions",
        ApiKey::InitProducerId => "InitProducerId",
        ApiKey::OffsetForLeaderEpoch => "OffsetForLeaderEpoch",
        ApiKey::DescribeCluster => "DescribeCluster",
        ApiKey::ElectLeaders => "ElectLeaders",
        ApiKey::SaslHandshake => "SaslHandshake",
        ApiKey::SaslAuthenticate => "SaslAuthenticate",
        ApiKey::DescribeUserScramCredentials => "DescribeUserScramCredentials",
        ApiKey::AlterUserScramCredentials => "AlterUserScramCredentials",
        ApiKey::DescribeConfigs => "DescribeConfigs",
        ApiKey::AlterConfigs => "AlterConfigs",
        ApiKey::IncrementalAlterConfigs => "IncrementalAlterConfigs",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::{JoinGroupRequest, MetadataRequest};

    #[test]
    fn lying_array_counts_fail_to_decode_without_taking_the_process_down() {
        // Metadata v0: "2^31 - 1 topics", then one byte. Each element is ~70 bytes: the
        // decoder's up-front Vec would be ~150 GB (see precursor_ffi::alloc::ReserveFreeLargeAllocations).
        let mut body = Bytes::from_static(&[0x7f, 0xff, 0xff, 0xff, 0x00, 0x01, 0x61]);
        assert!(MetadataRequest::decode(&mut body, 0).is_err());
        // JoinGroup v5 with a protocols array of 2^31 - 1 entries.
        let mut body = Bytes::from_static(&[
            0, 1, b'g', 0, 0, 0x17, 0x70, 0, 0, 0x75, 0x30, 0, 0, 0xff, 0xff, 0, 8, b'c', b'o',
            b'n', b's', b'u', b'm', b'e', b'r', 0x7f, 0xff, 0xff, 0xff,
        ]);
        assert!(JoinGroupRequest::decode(&mut body, 5).is_err());
    }
}
