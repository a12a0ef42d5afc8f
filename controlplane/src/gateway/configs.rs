//! DescribeConfigs (API 32), AlterConfigs (33) and IncrementalAlterConfigs (44): topic
//! configurations (see `precursor_protocol::topic_config` for the keys and their ranges)
//! and this broker's settings, read-only.
//!
//! - A topic is described with every supported key: its own value (DYNAMIC_TOPIC_CONFIG)
//!   or the broker's (DEFAULT_CONFIG), synonyms when asked (the topic's own, then the
//!   broker setting it falls back to), documentation from v3.
//! - A broker (resource name: its id, or empty) is described with the settings of its
//!   configuration file (STATIC_BROKER_CONFIG), all read-only; altering one is refused
//!   INVALID_REQUEST, as Kafka refuses a static broker config.
//! - AlterConfigs replaces the topic's whole dynamic set; IncrementalAlterConfigs SETs and
//!   DELETEs keys (APPEND and SUBTRACT: INVALID_REQUEST, no key of ours is a list but
//!   cleanup.policy, whose one value is `delete`). Both go through the admin path
//!   (`alter_topic_configs`): checked once, then in force on every broker.
//! - Other resource types (broker loggers, client metrics, groups): INVALID_REQUEST.

use super::requests::{api_name, RequestMeta};
use super::topics::{admin_error_code, one_answer};
use super::{str_bytes, Gateway};
use crate::admin::{self, codes};
use crate::topic_configs::{describe_broker, describe_topic, DescribedConfig};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::{
    alter_configs_response, incremental_alter_configs_response, AlterConfigsRequest,
    AlterConfigsResponse, DescribeConfigsRequest, DescribeConfigsResponse,
    IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
};
use kafka_protocol::protocol::StrBytes;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Kafka's `ConfigResource.Type`.
const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;
/// IncrementalAlterConfigs operations.
const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;
const OP_APPEND: i8 = 2;
const OP_SUBTRACT: i8 = 3;
/// The config source of a synonym that is the broker's own setting.
const SOURCE_DEFAULT: i8 = 5;

type ResourceError = (ResponseError, String);

fn resource_type_name(resource_type: i8) -> String {
    match resource_type {
        1 => "UNKNOWN (1)".into(),
        8 => "BROKER_LOGGER (8)".into(),
        16 => "CLIENT_METRICS (16)".into(),
        32 => "GROUP (32)".into(),
        other => format!("type {other}"),
    }
}

/// A broker resource names this broker (its id) or the cluster default (empty).
fn check_broker_name(gateway: &Gateway, name: &str) -> Result<(), ResourceError> {
    let me = gateway.broker_id();
    if name.is_empty() || name.parse::<i32>() == Ok(me) {
        return Ok(());
    }
    Err((
        ResponseError::InvalidRequest,
        format!("broker resource {name:?}: this is broker {me}; ask that broker itself"),
    ))
}

fn described(
    config: DescribedConfig,
    version: i16,
    synonyms: bool,
    documentation: bool,
) -> DescribeConfigsResourceResult {
    let mut entry = DescribeConfigsResourceResult::default();
    entry.name = StrBytes::from_static_str(config.name);
    entry.value = Some(str_bytes(&config.value));
    entry.read_only = config.read_only;
    entry.config_source = config.source.kafka_id();
    entry.is_sensitive = false;
    if synonyms {
        let own = (config.source == crate::topic_configs::ConfigSource::DynamicTopic)
            .then(|| (config.name, config.value.clone(), config.source.kafka_id()));
        let broker = config
            .synonym
            .map(|(name, value)| (name, value, SOURCE_DEFAULT));
        entry.synonyms = own
            .into_iter()
            .chain(broker)
            .map(|(name, value, source)| {
                let mut synonym = DescribeConfigsSynonym::default();
                synonym.name = StrBytes::from_static_str(name);
                synonym.value = Some(str_bytes(&value));
                synonym.source = source;
                synonym
            })
            .collect();
    }
    if version >= 3 {
        entry.config_type = config.config_type as i8;
        entry.documentation =
            documentation.then(|| StrBytes::from_static_str(config.documentation));
    }
    entry
}

/// DescribeConfigs.
pub async fn describe_configs(
    gateway: Arc<Gateway>,
    meta: RequestMeta,
    request: DescribeConfigsRequest,
) -> DescribeConfigsResponse {
    let mut response = DescribeConfigsResponse::default();
    let names: Vec<&str> = request
        .resources
        .iter()
        .filter(|r| r.resource_type == RESOURCE_TOPIC)
        .map(|r| r.resource_name.as_str())
        .collect();
    let topics = gateway.topics.get_including(&gateway, &names);
    for resource in &request.resources {
        let name = resource.resource_name.as_str();
        let keys: Option<Vec<&str>> = resource
            .configuration_keys
            .as_ref()
            .map(|keys| keys.iter().map(|k| k.as_str()).collect());
        let mut result = DescribeConfigsResult::default();
        result.resource_type = resource.resource_type;
        result.resource_name = resource.resource_name.clone();
        let configs = match resource.resource_type {
            RESOURCE_TOPIC => match &topics {
                Err(e) => Err((ResponseError::LeaderNotAvailable, e.to_string())),
                Ok(topics) if !topics.contains_key(name) => Err((
                    ResponseError::UnknownTopicOrPartition,
                    format!("no topic named {name:?}"),
                )),
                Ok(_) => gateway
                    .node
                    .topic_configs
                    .topic(name)
                    .map_err(|e| (ResponseError::UnknownServerError, e.to_string()))
                    .map(|configs| {
                        describe_topic(
                            &gateway.node.config,
                            &configs.unwrap_or_default(),
                            keys.as_deref(),
                        )
                    }),
            },
            RESOURCE_BROKER => check_broker_name(&gateway, name).map(|()| {
                describe_broker(&gateway.node.config, gateway.broker_id(), keys.as_deref())
            }),
            other => Err((
                ResponseError::InvalidRequest,
                format!(
                    "resource {}: only topics (2) and brokers (4) have configurations here",
                    resource_type_name(other)
                ),
            )),
        };
        match configs {
            Ok(configs) => {
                result.configs = configs
                    .into_iter()
                    .map(|c| {
                        described(
                            c,
                            meta.version,
                            request.include_synonyms,
                            request.include_documentation,
                        )
                    })
                    .collect();
            }
            Err((error, message)) => {
                result.error_code = error.code();
                result.error_message = Some(StrBytes::from_string(message));
            }
        }
        gateway.metrics.error(api_name(meta.api), result.error_code);
        response.results.push(result);
    }
    response
}

/// One topic resource's change, as the admin path takes it.
enum Change {
    Replace(BTreeMap<String, String>),
    Incremental {
        set: BTreeMap<String, String>,
        delete: Vec<String>,
    },
}

/// Carries out one resource's change (or only checks it); the per-resource error.
async fn alter_resource(
    gateway: &Gateway,
    resource_type: i8,
    name: &str,
    change: Result<Change, ResourceError>,
    validate_only: bool,
) -> Result<(), ResourceError> {
    match resource_type {
        RESOURCE_TOPIC => {}
        RESOURCE_BROKER => {
            check_broker_name(gateway, name)?;
            return Err((
                ResponseError::InvalidRequest,
                "broker configurations are read-only here: they come from the broker's \
                 configuration file (precursor.toml) and change with a restart"
                    .into(),
            ));
        }
        other => {
            return Err((
                ResponseError::InvalidRequest,
                format!(
                    "resource {}: only topic configurations can be altered",
                    resource_type_name(other)
                ),
            ))
        }
    }
    let (set, delete, replace) = match change? {
        Change::Replace(set) => (set, Vec::new(), true),
        Change::Incremental { set, delete } => (set, delete, false),
    };
    let request = admin::Request::AlterTopicConfigs {
        name: name.to_string(),
        set,
        delete,
        replace,
        validate_only,
        forwarded: false,
    };
    let answer = one_answer(admin::handle(&gateway.node, request).await, "");
    match answer {
        admin::Response::Ok => Ok(()),
        admin::Response::Error { code, message } => {
            let error = match code.as_str() {
                codes::UNKNOWN_TOPIC => ResponseError::UnknownTopicOrPartition,
                codes::INVALID_ARGUMENT => ResponseError::InvalidRequest,
                other => admin_error_code(other),
            };
            Err((error, message))
        }
        other => Err((
            ResponseError::UnknownServerError,
            format!("unexpected admin answer {other:?}"),
        )),
    }
}

/// Keys named twice in one resource are refused, as Kafka refuses them.
fn check_unique<'a>(names: impl Iterator<Item = &'a str>) -> Result<(), ResourceError> {
    let mut seen = std::collections::BTreeSet::new();
    for name in names {
        if !seen.insert(name) {
            return Err((
                ResponseError::InvalidRequest,
                format!("config {name:?} is named more than once for the resource"),
            ));
        }
    }
    Ok(())
}

/// AlterConfigs: each topic's whole dynamic configuration replaced.
pub async fn alter_configs(
    gateway: Arc<Gateway>,
    meta: RequestMeta,
    request: AlterConfigsRequest,
) -> AlterConfigsResponse {
    let mut response = AlterConfigsResponse::default();
    for resource in &request.resources {
        let name = resource.resource_name.as_str();
        let change =
            check_unique(resource.configs.iter().map(|c| c.name.as_str())).and_then(|()| {
                resource
                    .configs
                    .iter()
                    .map(|c| match &c.value {
                        Some(value) => Ok((c.name.to_string(), value.to_string())),
                        None => Err((
                            ResponseError::InvalidConfig,
                            format!("{}: a value is required (null given)", c.name.as_str()),
                        )),
                    })
                    .collect::<Result<BTreeMap<_, _>, _>>()
                    .map(Change::Replace)
            });
        let outcome = alter_resource(
            &gateway,
            resource.resource_type,
            name,
            change,
            request.validate_only,
        )
        .await;
        let mut result = alter_configs_response::AlterConfigsResourceResponse::default();
        result.resource_type = resource.resource_type;
        result.resource_name = resource.resource_name.clone();
        if let Err((error, message)) = outcome {
            result.error_code = error.code();
            result.error_message = Some(StrBytes::from_string(message));
        }
        gateway.metrics.error(api_name(meta.api), result.error_code);
        response.responses.push(result);
    }
    response
}

/// IncrementalAlterConfigs: SET and DELETE of single keys.
pub async fn incremental_alter_configs(
    gateway: Arc<Gateway>,
    meta: RequestMeta,
    request: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    let mut response = IncrementalAlterConfigsResponse::default();
    for resource in &request.resources {
        let name = resource.resource_name.as_str();
        let change =
            check_unique(resource.configs.iter().map(|c| c.name.as_str())).and_then(|()| {
                let mut set = BTreeMap::new();
                let mut delete = Vec::new();
                for config in &resource.configs {
                    let key = config.name.as_str();
                    match config.config_operation {
                        OP_SET => match &config.value {
                            Some(value) => {
                                set.insert(key.to_string(), value.to_string());
                            }
                            None => {
                                return Err((
                                    ResponseError::InvalidConfig,
                                    format!("{key}: SET needs a value (null given)"),
                                ))
                            }
                        },
                        OP_DELETE => delete.push(key.to_string()),
                        OP_APPEND | OP_SUBTRACT => {
                            return Err((
                                ResponseError::InvalidRequest,
                                format!(
                                    "{key}: APPEND and SUBTRACT are for list configs; {key} is \
                                 not one here (use SET or DELETE)"
                                ),
                            ))
                        }
                        other => {
                            return Err((
                                ResponseError::InvalidRequest,
                                format!("{key}: unknown operation {other} (0 SET, 1 DELETE)"),
                            ))
                        }
                    }
                }
                Ok(Change::Incremental { set, delete })
            });
        let outcome = alter_resource(
            &gateway,
            resource.resource_type,
            name,
            change,
            request.validate_only,
        )
        .await;
        let mut result =
            incremental_alter_configs_response::AlterConfigsResourceResponse::default();
        result.resource_type = resource.resource_type;
        result.resource_name = resource.resource_name.clone();
        if let Err((error, message)) = outcome {
            result.error_code = error.code();
            result.error_message = Some(StrBytes::from_string(message));
        }
        gateway.metrics.error(api_name(meta.api), result.error_code);
        response.responses.push(result);
    }
    response
}
