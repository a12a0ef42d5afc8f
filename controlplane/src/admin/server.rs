//! The control plane's side of the admin API: the Unix admin socket, and the TCP cluster
//! listener (`controlplane.cluster_listen`) through which the other brokers' control
//! planes forward topic creation and deletion. Both speak the same JSON lines.

use super::forward::ask_broker;
use super::types::{
    codes, BrokerAnswer, PartitionInfo, Request, Response, TopicConfigEntry, TopicDescription,
    TopicSummary, UserCredentialInfo, UserSummary,
};
use super::REQUEST_BYTES_MAX;
use crate::counters::CountersSnapshot;
use crate::link::{LinkError, Reply};
use crate::{ControlplaneError, Node};
use precursor_config::limits::PARTITIONS_PER_TOPIC_MAX;
use precursor_config::{AcksAll, REPLICATION_FACTOR_MAX};
use precursor_protocol::command::{Command, TopicReplication, ACKS_ALL_DURABLE, ACKS_ALL_MEMORY};
use precursor_protocol::frame::{is_valid_topic_name, TOPIC_NAME_BYTES_MAX};
use precursor_protocol::topic_config::TopicConfigs;
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, UnixListener};

/// Permissions of the admin socket: owner and group may administer the broker.
pub const ADMIN_SOCKET_MODE: u32 = 0o660;
/// After a create or delete, how long the answer waits for the counters file to show the
/// change (so that a `topic list` right after sees it), in milliseconds.
pub const TOPIC_VISIBLE_WAIT_MS: u64 = 2_000;
/// How often that wait looks, in milliseconds.
const TOPIC_VISIBLE_POLL_MS: u64 = 10;
/// Requests one connection may send, at most (bounded loop; the CLI sends one).
const REQUESTS_PER_CONNECTION_MAX: usize = 10_000;
/// A forwarded request's answer may take the other broker's command timeout and its
/// visibility wait; this much more is allowed for the network and its scheduling, in ms.
const FORWARD_MARGIN_MS: u64 = 5_000;

/// A bound admin socket; removes its file when dropped.
pub struct AdminServer {
    listener: UnixListener,
    path: PathBuf,
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Binds the admin socket at `path`: creates its directory, removes a stale socket file
/// (one nobody answers on), refuses to take over a live one, sets mode 0660.
pub fn bind(path: &Path) -> Result<AdminServer, ControlplaneError> {
    let io = |what: &'static str| {
        let path = path.to_path_buf();
        move |source| ControlplaneError::AdminSocket { path, what, source }
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(io("cannot create its directory"))?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(ControlplaneError::AdminSocketInUse {
                path: path.to_path_buf(),
            });
        }
        std::fs::remove_file(path).map_err(io("cannot remove the stale socket"))?;
    }
    let listener = UnixListener::bind(path).map_err(io("cannot listen"))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(ADMIN_SOCKET_MODE))
        .map_err(io("cannot set its mode"))?;
    Ok(AdminServer {
        listener,
        path: path.to_path_buf(),
    })
}

/// Answers admin connections until the task is dropped.
pub async fn serve(server: AdminServer, node: Arc<Node>) {
    loop {
        match server.listener.accept().await {
            Ok((stream, _)) => {
                let (read, write) = stream.into_split();
                tokio::spawn(connection(read, write, node.clone()));
            }
            Err(error) => {
                eprintln!("precursor-controlplane: admin socket accept: {error}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Binds the cluster listener (`controlplane.cluster_listen`, an `address:port`).
pub async fn bind_cluster_listener(address: &str) -> Result<TcpListener, ControlplaneError> {
    TcpListener::bind(address)
        .await
        .map_err(|source| ControlplaneError::ClusterListener {
            address: address.to_string(),
            source,
        })
}

/// Answers the other brokers' admin requests on the cluster listener until the task is
/// dropped: the same protocol as the admin socket, one JSON line each way.
pub async fn serve_cluster(listener: TcpListener, node: Arc<Node>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let _ = stream.set_nodelay(true);
                let (read, write) = stream.into_split();
                tokio::spawn(connection(read, write, node.clone()));
            }
            Err(error) => {
                eprintln!("precursor-controlplane: cluster listener accept: {error}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn connection<R, W>(read: R, mut write: W, node: Arc<Node>)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut lines = BufReader::new(read.take(u64::MAX));
    let mut line = Vec::new();
    for _ in 0..REQUESTS_PER_CONNECTION_MAX {
        line.clear();
        let limit = (REQUEST_BYTES_MAX + 1) as u64;
        lines.get_mut().set_limit(limit);
        match lines.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let response = if !line.ends_with(b"\n") {
            if lines.get_ref().limit() == 0 {
                Response::error(
                    codes::INVALID_ARGUMENT,
                    format!("request longer than {REQUEST_BYTES_MAX} bytes"),
                )
            } else {
                return; // the peer closed mid-line
            }
        } else {
            match serde_json::from_slice::<Request>(&line) {
                Ok(request) => {
                    let kind = request.type_name();
                    let response = handle(&node, request).await;
                    node.metrics.admin_request(kind, response.outcome());
                    response
                }
                Err(error) => {
                    node.metrics
                        .admin_request("invalid", codes::INVALID_ARGUMENT);
                    Response::error(
                        codes::INVALID_ARGUMENT,
                        format!("not an admin request: {error}"),
                    )
                }
            }
        };
        let mut text = serde_json::to_string(&response).expect("responses serialize");
        text.push('\n');
        if write.write_all(text.as_bytes()).await.is_err() {
            return;
        }
        if !line.ends_with(b"\n") {
            return; // an over-long line: its rest cannot be told from the next request
        }
    }
}

/// Consumer groups live in the Kafka gateway.
fn no_gateway() -> Response {
    Response::error(
        codes::GATEWAY_DISABLED,
        "consumer groups live in the Kafka gateway, which is off here (gateway.enabled = false)",
    )
}

/// `user create`: salts the password for each SCRAM mechanism asked for.
fn create_user(
    gateway: &crate::gateway::Gateway,
    name: &str,
    password: &str,
    mechanisms: &[precursor_config::SaslMechanism],
    iterations: Option<u32>,
) -> Response {
    use crate::gateway::sasl::scram::{self, ScramHash};
    if !crate::gateway::sasl::users::valid_user_name(name) {
        return Response::error(
            codes::INVALID_ARGUMENT,
            format!(
                "user name {name:?}: 1 to {} bytes, no control characters",
                crate::gateway::sasl::users::USER_NAME_BYTES_MAX
            ),
        );
    }
    if password.is_empty() {
        return Response::error(codes::INVALID_ARGUMENT, "an empty password");
    }
    let iterations = iterations.unwrap_or(scram::SCRAM_ITERATIONS_DEFAULT);
    if !(scram::SCRAM_ITERATIONS_MIN..=scram::SCRAM_ITERATIONS_MAX).contains(&iterations) {
        return Response::error(
            codes::INVALID_ARGUMENT,
            format!(
                "--iterations {iterations}: between {} and {}",
                scram::SCRAM_ITERATIONS_MIN,
                scram::SCRAM_ITERATIONS_MAX
            ),
        );
    }
    let mut hashes = Vec::new();
    for mechanism in mechanisms {
        match ScramHash::of(*mechanism) {
            Some(hash) => hashes.push(hash),
            None => {
                return Response::error(
                    codes::INVALID_ARGUMENT,
                    "PLAIN keeps no credential of its own: it checks the SCRAM-SHA-512 \
                     (else SCRAM-SHA-256) one",
                )
            }
        }
    }
    if hashes.is_empty() {
        hashes = ScramHash::ALL.to_vec();
    }
    match gateway
        .users
        .set_password(name, password.as_bytes(), &hashes, iterations)
    {
        Ok(()) => {
            eprintln!("precursor-controlplane: admin: SASL user {name:?} created or updated");
            Response::Ok
        }
        Err(error) => Response::error(codes::STORAGE_ERROR, error.to_string()),
    }
}

/// Answers one request.
pub async fn handle(node: &Node, request: Request) -> Response {
    match request {
        Request::Config => Response::Config(node.config.to_toml()),
        Request::PingDataplane { count } => match node.link.ping_series(count).await {
            Ok(stats) => Response::Latency {
                count: stats.count,
                p50_ns: stats.p50_ns,
                p90_ns: stats.p90_ns,
                p99_ns: stats.p99_ns,
                p999_ns: stats.p999_ns,
                max_ns: stats.max_ns,
            },
            Err(error) => failure(Err(error)),
        },
        Request::Status => match node.status() {
            Ok(status) => Response::Status(status),
            Err(response) => response,
        },
        Request::ListTopics => match read_counters(node) {
            Ok(counters) => Response::Topics(topic_summaries(&counters)),
            Err(response) => response,
        },
        Request::DescribeTopic { name } => {
            let counters = match read_counters(node) {
                Ok(counters) => counters,
                Err(response) => return response,
            };
            match counters.topic(&name) {
                Some(partitions) => Response::Topic(TopicDescription {
                    configs: topic_config_entries(node, &name),
                    name,
                    partitions: partitions.to_vec(),
                }),
                None => unknown_topic(&name, &counters),
            }
        }
        Request::CreateTopic {
            name,
            partitions,
            retention_ms,
            retention_bytes,
        } => {
            let replication = TopicReplication::default();
            create_topic(
                node,
                name,
                partitions,
                retention_ms,
                retention_bytes,
                replication,
            )
            .await
        }
        Request::DeleteTopic { name } => delete_topic(node, &name).await,
        Request::ListGroups => match node.gateway() {
            Some(gateway) => {
                let counters = CountersSnapshot::read(&node.cnc_dir).ok();
                Response::Groups(crate::gateway::lag::list_groups(
                    &gateway,
                    counters.as_ref(),
                ))
            }
            None => no_gateway(),
        },
        Request::CreateUser {
            name,
            password,
            mechanisms,
            iterations,
        } => match node.gateway() {
            Some(gateway) => create_user(&gateway, &name, &password, &mechanisms, iterations),
            None => no_gateway(),
        },
        Request::DeleteUser { name } => match node.gateway() {
            Some(gateway) => match gateway.users.delete(&name, None) {
                Ok(true) => {
                    eprintln!("precursor-controlplane: admin: SASL user {name:?} deleted");
                    Response::Ok
                }
                Ok(false) => {
                    Response::error(codes::UNKNOWN_USER, format!("no SASL user named {name:?}"))
                }
                Err(error) => Response::error(codes::STORAGE_ERROR, error.to_string()),
            },
            None => no_gateway(),
        },
        Request::ListUsers => match node.gateway() {
            Some(gateway) => Response::Users(
                gateway
                    .users
                    .list()
                    .into_iter()
                    .map(|(name, credentials)| UserSummary {
                        name,
                        credentials: credentials
                            .into_iter()
                            .map(|(hash, iterations)| UserCredentialInfo {
                                mechanism: hash.mechanism(),
                                iterations,
                            })
                            .collect(),
                    })
                    .collect(),
            ),
            None => no_gateway(),
        },
        Request::DescribeGroup { name } => {
            match node.gateway() {
                Some(gateway) => {
                    let counters = CountersSnapshot::read(&node.cnc_dir).ok();
                    match crate::gateway::lag::describe_group(&gateway, counters.as_ref(), &name) {
                    Some(group) => Response::Group(Box::new(group)),
                    None => Response::error(
                        codes::UNKNOWN_GROUP,
                        format!("no group named {name:?} here: no live members, no committed offsets"),
                    ),
                }
                }
                None => no_gateway(),
            }
        }
        Request::ClusterCreateTopic {
            name,
            partitions,
            retention_ms,
            retention_bytes,
            replication_factor,
            min_insync_replicas,
            acks_all,
            forwarded,
        } => {
            let creation = TopicCreation {
                name,
                partitions,
                retention_ms,
                retention_bytes,
                replication_factor,
                min_insync_replicas,
                acks_all,
            };
            cluster_create_topic(node, creation, forwarded).await
        }
        Request::ClusterDeleteTopic { name, forwarded } => {
            cluster_delete_topic(node, name, forwarded).await
        }
        Request::ClusterSetLeader {
            name,
            partition,
            leader,
            epoch,
            forwarded,
        } => cluster_set_leader(node, name, partition, leader, epoch, forwarded).await,
        Request::DrainBroker { broker } => drain_broker(node, broker).await,
        Request::CreatePartitions {
            name,
            partitions,
            forwarded,
        } => {
            let answer = cluster_create_partitions(node, name, partitions, forwarded).await;
            // The gateway's cached topic view would show the old count for up to
            // TOPIC_VIEW_MAX_AGE_MS: Metadata right after `topic alter` shows the new one.
            if let Some(gateway) = node.gateway() {
                gateway.topics.invalidate();
            }
            answer
        }
        Request::AlterTopicConfigs {
            name,
            set,
            delete,
            replace,
            validate_only,
            forwarded,
        } => {
            let change = ConfigChange {
                set,
                delete,
                replace,
            };
            alter_topic_configs(node, &name, &change, validate_only, forwarded).await
        }
        Request::AlterTopic {
            name,
            retention_ms,
            retention_bytes,
        } => {
            if retention_ms.is_none() && retention_bytes.is_none() {
                return Response::error(
                    codes::INVALID_ARGUMENT,
                    "nothing to alter: give --retention-ms and/or --retention-bytes",
                );
            }
            if let Err(response) = check_known(node, &name) {
                return response;
            }
            let command = Command::AlterTopic {
                name: &name,
                retention_ms,
                retention_bytes,
            };
            match node.link.call(command).await {
                Ok(Reply::Done) => Response::Ok,
                other => failure(other),
            }
        }
    }
}

/// Every supported configuration key of a topic, as this broker holds it (none when
/// the manifest cannot be read).
fn topic_config_entries(node: &Node, name: &str) -> Vec<TopicConfigEntry> {
    let Ok(configs) = node.topic_configs.topic(name) else {
        return Vec::new();
    };
    crate::topic_configs::describe_topic(&node.config, &configs.unwrap_or_default(), None)
        .into_iter()
        .map(|d| TopicConfigEntry {
            name: d.name.to_string(),
            value: d.value,
            source: d.source.name().to_string(),
            read_only: d.read_only,
        })
        .collect()
}

/// What an `alter_topic_configs` asks for.
pub struct ConfigChange {
    pub set: BTreeMap<String, String>,
    pub delete: Vec<String>,
    pub replace: bool,
}

/// The topic's configuration after `change`, checked as Kafka checks it (and the
/// replication factor, for `min.insync.replicas`).
fn changed_configs(
    node: &Node,
    name: &str,
    change: &ConfigChange,
) -> Result<TopicConfigs, Response> {
    let counters = check_known(node, name)?;
    node.topic_configs.invalidate();
    let current = node
        .topic_configs
        .topic(name)
        .map_err(|e| Response::error(codes::DATAPLANE_UNAVAILABLE, e.to_string()))?
        .unwrap_or_default();
    let mut configs = if change.replace {
        TopicConfigs::default()
    } else {
        current
    };
    let invalid = |e: precursor_protocol::topic_config::ConfigError| {
        Response::error(codes::INVALID_CONFIG, e.to_string())
    };
    for key in &change.delete {
        configs.delete(key).map_err(invalid)?;
    }
    let limits = crate::topic_configs::limits(&node.config);
    for (key, value) in &change.set {
        configs.set(key, Some(value), &limits).map_err(invalid)?;
    }
    let factor = counters
        .topic(name)
        .and_then(|p| p.first())
        .map_or(1, |p| p.replicas.len().max(1));
    if let Some(n) = configs.min_insync_replicas {
        if usize::from(n) > factor {
            return Err(Response::error(
                codes::INVALID_CONFIG,
                format!("min.insync.replicas={n}: 1 to the topic's replication factor ({factor})"),
            ));
        }
    }
    Ok(configs)
}

/// `alter_topic_configs`: checked here, then carried out on every broker (through the
/// metadata quorum in quorum mode) with the whole resulting set.
async fn alter_topic_configs(
    node: &Node,
    name: &str,
    change: &ConfigChange,
    validate_only: bool,
    forwarded: bool,
) -> Response {
    let configs = match changed_configs(node, name, change) {
        Ok(configs) => configs,
        Err(response) => return response,
    };
    if validate_only {
        return Response::Ok;
    }
    let whole: BTreeMap<String, String> = configs
        .entries()
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    if let Some(member) = node.member.get() {
        if !forwarded {
            let command = precursor_metadata::MetadataCommand::AlterTopicConfigs {
                name: name.to_string(),
                configs: whole,
            };
            match member.propose(command).await {
                Ok(precursor_metadata::MetadataReply::Done) => {}
                Ok(other) => {
                    return Response::error(
                        codes::INVALID_ARGUMENT,
                        format!("the metadata quorum refused the configuration: {other}"),
                    )
                }
                Err(error) => {
                    return Response::error(
                        codes::UNREACHABLE,
                        format!("the metadata quorum did not commit the configuration: {error}"),
                    )
                }
            }
        }
        // The member applies it on every broker; answered once it is in force here.
        return wait_for_configs(node, name, &configs).await;
    }
    let here = set_configs_here(node, name, configs);
    if forwarded || !node.config.cluster.enabled() {
        return here.await;
    }
    let request = Request::AlterTopicConfigs {
        name: name.to_string(),
        set: whole,
        delete: Vec::new(),
        replace: true,
        validate_only: false,
        forwarded: true,
    };
    on_every_broker(node, here, request).await
}

/// The topic's whole configuration to this broker's data plane.
pub async fn set_configs_here(node: &Node, name: &str, configs: TopicConfigs) -> Response {
    let command = Command::SetTopicConfigs { name, configs };
    let answer = node.link.call(command).await;
    node.topic_configs.invalidate();
    match answer {
        Ok(Reply::Done) => Response::Ok,
        other => failure(other),
    }
}

/// Waits, bounded, until this broker's manifest holds `configs` for the topic.
async fn wait_for_configs(node: &Node, name: &str, configs: &TopicConfigs) -> Response {
    let polls = TOPIC_VISIBLE_WAIT_MS / TOPIC_VISIBLE_POLL_MS;
    for _ in 0..polls {
        node.topic_configs.invalidate();
        if node.topic_configs.topic(name).ok().flatten().as_ref() == Some(configs) {
            return Response::Ok;
        }
        tokio::time::sleep(Duration::from_millis(TOPIC_VISIBLE_POLL_MS)).await;
    }
    Response::error(
        codes::TIMEOUT,
        format!(
            "the configuration of {name:?} is committed by the metadata quorum but not in              force on this broker within {TOPIC_VISIBLE_WAIT_MS} ms (see its log)"
        ),
    )
}

/// A `cluster_create_topic` request, its fields as sent.
struct TopicCreation {
    name: String,
    partitions: u32,
    retention_ms: Option<u64>,
    retention_bytes: Option<u64>,
    replication_factor: Option<u8>,
    min_insync_replicas: Option<u8>,
    acks_all: Option<AcksAll>,
}

/// Replication of a topic with every default filled in from this broker's configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct ResolvedReplication {
    factor: u8,
    min_insync: u8,
    acks_all: AcksAll,
}

impl ResolvedReplication {
    fn command(self) -> TopicReplication {
        TopicReplication {
            factor: self.factor,
            min_insync: self.min_insync,
            acks_all: match self.acks_all {
                AcksAll::Memory => ACKS_ALL_MEMORY,
                AcksAll::Durable => ACKS_ALL_DURABLE,
            },
        }
    }
}

/// Fills in the defaults and checks the replication factor against this cluster's brokers
/// and the minimum ISR against the factor.
fn resolve_replication(
    config: &precursor_config::Config,
    creation: &TopicCreation,
) -> Result<ResolvedReplication, Response> {
    let cluster = &config.cluster;
    let brokers = cluster.brokers.len().max(1);
    let factor_max = brokers.min(usize::from(REPLICATION_FACTOR_MAX));
    let factor = creation
        .replication_factor
        .unwrap_or(config.topics.default_replication_factor);
    if factor == 0 || usize::from(factor) > factor_max {
        let why = if !cluster.enabled() {
            "this broker is not in a cluster (cluster.broker_id = 0): 1 is the only choice"
                .to_string()
        } else if brokers > usize::from(REPLICATION_FACTOR_MAX) {
            format!(
                "between 1 and {REPLICATION_FACTOR_MAX} (the most replicas a partition may have)"
            )
        } else {
            format!("between 1 and {brokers}, the brokers of this cluster")
        };
        return Err(Response::error(
            codes::INVALID_ARGUMENT,
            format!("replication factor {factor}: {why}"),
        ));
    }
    let min_insync = creation
        .min_insync_replicas
        .unwrap_or_else(|| config.topics.default_min_insync_replicas.min(factor));
    if min_insync == 0 || min_insync > factor {
        return Err(Response::error(
            codes::INVALID_ARGUMENT,
            format!(
                "min insync replicas {min_insync}: between 1 and the replication factor {factor}"
            ),
        ));
    }
    Ok(ResolvedReplication {
        factor,
        min_insync,
        acks_all: creation.acks_all.unwrap_or(cluster.acks_all),
    })
}

/// `cluster_create_topic`: here, and (unless forwarded) on every other broker.
async fn cluster_create_topic(node: &Node, creation: TopicCreation, forwarded: bool) -> Response {
    if let Err(response) = check_creation(&creation.name, creation.partitions) {
        return response;
    }
    let replication = match resolve_replication(&node.config, &creation) {
        Ok(replication) => replication,
        Err(response) => return response,
    };
    if let Some(member) = node.member.get() {
        return quorum_create_topic(node, member, creation, replication, forwarded).await;
    }
    let here = create_topic(
        node,
        creation.name.clone(),
        creation.partitions,
        creation.retention_ms,
        creation.retention_bytes,
        replication.command(),
    );
    if forwarded || !node.config.cluster.enabled() {
        return here.await;
    }
    on_every_broker(node, here, forwarded_creation(creation, replication)).await
}

/// The creation as the other brokers get it: every default resolved here.
fn forwarded_creation(creation: TopicCreation, replication: ResolvedReplication) -> Request {
    Request::ClusterCreateTopic {
        name: creation.name,
        partitions: creation.partitions,
        retention_ms: creation.retention_ms,
        retention_bytes: creation.retention_bytes,
        replication_factor: Some(replication.factor),
        min_insync_replicas: Some(replication.min_insync),
        acks_all: Some(replication.acks_all),
        forwarded: true,
    }
}

/// `cluster_create_topic` with `cluster.metadata = "quorum"`: committed by the quorum
/// (unless forwarded: then the broker that proposed it asks whether it is here yet), then
/// each broker's member creates it on its data plane; answered once every broker has it.
async fn quorum_create_topic(
    node: &Node,
    member: &crate::member::Member,
    creation: TopicCreation,
    replication: ResolvedReplication,
    forwarded: bool,
) -> Response {
    if !forwarded {
        let command = precursor_metadata::MetadataCommand::CreateTopic {
            name: creation.name.clone(),
            replicas: crate::member::placement(
                &node.config.cluster,
                &creation.name,
                creation.partitions as u16,
                replication.factor,
            ),
            min_insync: replication.min_insync,
            unclean_leader_election: false,
            retention_ms: creation.retention_ms.unwrap_or(0),
            retention_bytes: creation.retention_bytes.unwrap_or(0),
        };
        use precursor_metadata::{MetadataReply, Refusal};
        match member.propose(command).await {
            Ok(MetadataReply::TopicCreated { .. }) => {}
            Ok(MetadataReply::Refused(Refusal::TopicExists)) => {
                return Response::error(
                    codes::TOPIC_EXISTS,
                    format!("topic {:?} exists already", creation.name),
                )
            }
            Ok(other) => {
                return Response::error(
                    codes::INVALID_ARGUMENT,
                    format!("the metadata quorum refused the topic: {other}"),
                )
            }
            Err(error) => {
                return Response::error(
                    codes::UNREACHABLE,
                    format!("the metadata quorum did not commit the topic: {error}"),
                )
            }
        }
    }
    let here = committed_topic_here(node, creation.name.clone());
    if forwarded {
        return here.await;
    }
    on_every_broker(node, here, forwarded_creation(creation, replication)).await
}

/// Waits (bounded) until this broker's data plane holds a topic the quorum committed.
async fn committed_topic_here(node: &Node, name: String) -> Response {
    wait_for_topic(node, &name, true).await;
    match read_counters(node) {
        Ok(counters) => match counters.topic(&name) {
            Some(partitions) => Response::TopicCreated {
                name,
                topic_id: 0,
                partitions: partitions.len() as u32,
            },
            None => Response::error(
                codes::TIMEOUT,
                format!(
                    "topic {name:?} is committed by the metadata quorum but not on this \
                     broker's data plane within {TOPIC_VISIBLE_WAIT_MS} ms (see its log)"
                ),
            ),
        },
        Err(response) => response,
    }
}

/// `create_partitions`: committed by the metadata quorum first in quorum mode; then here,
/// and (unless forwarded) on every other broker.
async fn cluster_create_partitions(
    node: &Node,
    name: String,
    partitions: u32,
    forwarded: bool,
) -> Response {
    if let Err(response) = check_name(&name) {
        return response;
    }
    let partitions_max = u32::from(PARTITIONS_PER_TOPIC_MAX);
    if partitions > partitions_max {
        return Response::error(
            codes::INVALID_ARGUMENT,
            format!("partitions {partitions}: a topic has at most {partitions_max}"),
        );
    }
    if let Some(member) = node.member.get() {
        if !forwarded {
            if let Err(response) = quorum_create_partitions(node, member, &name, partitions).await {
                return response;
            }
        }
        let here = committed_partitions_here(node, name.clone(), partitions);
        if forwarded {
            return here.await;
        }
        let request = Request::CreatePartitions {
            name,
            partitions,
            forwarded: true,
        };
        return on_every_broker(node, here, request).await;
    }
    let here = create_partitions_here(node, &name, partitions, forwarded);
    if forwarded || !node.config.cluster.enabled() {
        return here.await;
    }
    let request = Request::CreatePartitions {
        name: name.clone(),
        partitions,
        forwarded: true,
    };
    on_every_broker(node, here, request).await
}

/// The refusal of a count that does not grow the topic.
fn cannot_shrink(name: &str, existing: usize) -> Response {
    Response::error(
        codes::INVALID_PARTITIONS,
        format!("topic {name} has {existing} partitions; partitions can only grow"),
    )
}

/// Grows the topic on this broker's data plane. A forwarded request finding the count
/// there already is done (a retry, or the quorum's apply loop was first).
async fn create_partitions_here(
    node: &Node,
    name: &str,
    partitions: u32,
    forwarded: bool,
) -> Response {
    let counters = match check_known(node, name) {
        Ok(counters) => counters,
        Err(response) => return response,
    };
    let existing = counters.topic(name).map_or(0, <[PartitionInfo]>::len);
    if forwarded && existing == partitions as usize {
        return Response::TopicCreated {
            name: name.to_string(),
            topic_id: 0,
            partitions,
        };
    }
    if partitions as usize <= existing {
        return cannot_shrink(name, existing);
    }
    let command = Command::CreatePartitions {
        name,
        partitions: partitions as u16,
    };
    match node.link.call(command).await {
        Ok(Reply::TopicCreated {
            topic_id,
            partitions,
        }) => Response::TopicCreated {
            name: name.to_string(),
            topic_id: u32::from(topic_id),
            partitions: u32::from(partitions),
        },
        other => failure(other),
    }
}

/// Quorum mode: commits the new partitions (placed as `placement` places a created
/// topic's) unless the quorum's topic has the count already.
async fn quorum_create_partitions(
    node: &Node,
    member: &crate::member::Member,
    name: &str,
    partitions: u32,
) -> Result<(), Response> {
    use precursor_metadata::{MetadataReply, Refusal};
    let state = member.state();
    let Some(topic) = state.topics.get(name) else {
        return Err(Response::error(
            codes::UNKNOWN_TOPIC,
            format!("no topic named {name:?} in the metadata quorum"),
        ));
    };
    let existing = topic.partitions.len();
    if partitions as usize <= existing {
        return Err(cannot_shrink(name, existing));
    }
    let factor = topic.partitions.first().map_or(1, |p| p.replicas.len()) as u8;
    let command = precursor_metadata::MetadataCommand::CreatePartitions {
        topic: name.to_string(),
        partitions,
        replicas: crate::member::placement_from(
            &node.config.cluster,
            name,
            existing as u16..partitions as u16,
            factor,
        ),
    };
    drop(state);
    match member.propose(command).await {
        Ok(MetadataReply::PartitionsCreated { .. }) => Ok(()),
        Ok(MetadataReply::Refused(Refusal::TopicUnknown)) => Err(Response::error(
            codes::UNKNOWN_TOPIC,
            format!("no topic named {name:?} in the metadata quorum"),
        )),
        Ok(MetadataReply::Refused(Refusal::PartitionsNotAppended { existing })) => {
            // Another grow committed meanwhile.
            Err(cannot_shrink(name, existing as usize))
        }
        Ok(other) => Err(Response::error(
            codes::INVALID_ARGUMENT,
            format!("the metadata quorum refused the partitions: {other}"),
        )),
        Err(error) => Err(Response::error(
            codes::UNREACHABLE,
            format!("the metadata quorum did not commit the partitions: {error}"),
        )),
    }
}

/// Waits (bounded) until this broker's data plane holds `partitions` partitions of a
/// topic the quorum grew (its member's apply loop grows it).
async fn committed_partitions_here(node: &Node, name: String, partitions: u32) -> Response {
    let polls = TOPIC_VISIBLE_WAIT_MS / TOPIC_VISIBLE_POLL_MS;
    for _ in 0..polls {
        let counters = match read_counters(node) {
            Ok(counters) => counters,
            Err(response) => return response,
        };
        if counters.topic(&name).map_or(0, <[PartitionInfo]>::len) >= partitions as usize {
            return Response::TopicCreated {
                name,
                topic_id: 0,
                partitions,
            };
        }
        tokio::time::sleep(Duration::from_millis(TOPIC_VISIBLE_POLL_MS)).await;
    }
    Response::error(
        codes::TIMEOUT,
        format!(
            "topic {name:?} has {partitions} partitions in the metadata quorum but not on this \
             broker's data plane within {TOPIC_VISIBLE_WAIT_MS} ms (see its log)"
        ),
    )
}

/// `cluster_delete_topic`: here, and (unless forwarded) on every other broker.
async fn cluster_delete_topic(node: &Node, name: String, forwarded: bool) -> Response {
    if let Err(response) = check_name(&name) {
        return response;
    }
    let here = delete_topic(node, &name);
    if forwarded || !node.config.cluster.enabled() {
        return here.await;
    }
    let request = Request::ClusterDeleteTopic {
        name: name.clone(),
        forwarded: true,
    };
    on_every_broker(node, here, request).await
}

/// `broker drain` (quorum mode): one `DrainBroker` commit moves every leadership of the
/// broker; each member then tells its own data plane.
async fn drain_broker(node: &Node, broker: Option<u32>) -> Response {
    let cluster = &node.config.cluster;
    let Some(member) = node.member.get() else {
        return Response::error(
            codes::INVALID_ARGUMENT,
            "broker drain needs cluster.metadata = \"quorum\" (in static mode move each \
             leadership with `topic lead`)",
        );
    };
    let broker = broker.unwrap_or(cluster.broker_id);
    if cluster.broker(broker).is_none() {
        return Response::error(
            codes::INVALID_ARGUMENT,
            format!("broker {broker} is not a broker of this cluster ([cluster].brokers)"),
        );
    }
    match crate::member::drain(member, broker).await {
        Ok((moved, stuck)) => Response::Drained {
            broker,
            moved,
            stuck,
        },
        Err(message) => Response::error(codes::UNREACHABLE, message),
    }
}

/// `cluster_set_leader`: picks the epoch (one past every epoch a reachable broker knows
/// for the partition) unless given, then has every broker lead or follow at it.
async fn cluster_set_leader(
    node: &Node,
    name: String,
    partition: u32,
    leader: u32,
    epoch: Option<u32>,
    forwarded: bool,
) -> Response {
    if let Err(response) = check_name(&name) {
        return response;
    }
    let Ok(partition) = u16::try_from(partition) else {
        return Response::error(codes::INVALID_ARGUMENT, "partition: at most 65535");
    };
    let cluster = &node.config.cluster;
    if !cluster.enabled() || cluster.broker(leader).is_none() {
        return Response::error(
            codes::INVALID_ARGUMENT,
            format!("broker {leader} is not a broker of this cluster ([cluster].brokers)"),
        );
    }
    if let Some(member) = node.member.get() {
        // The quorum picks epochs: an election it commits, which every member then sends
        // to its data plane.
        if epoch.is_some() {
            return Response::error(
                codes::INVALID_ARGUMENT,
                "with cluster.metadata = \"quorum\" the metadata quorum picks the epoch: \
                 leave --epoch out",
            );
        }
        let elect = precursor_metadata::MetadataCommand::ElectLeader {
            topic: name.clone(),
            partition: u32::from(partition),
            leader,
        };
        return match member.propose(elect).await {
            Ok(precursor_metadata::MetadataReply::Partition(_)) => Response::Ok,
            Ok(precursor_metadata::MetadataReply::Refused(refusal)) => Response::error(
                codes::INVALID_ARGUMENT,
                format!("the metadata quorum refused the election: {refusal}"),
            ),
            Ok(other) => Response::error(codes::INVALID_ARGUMENT, other.to_string()),
            Err(error) => Response::error(
                codes::UNREACHABLE,
                format!("the metadata quorum did not commit the election: {error}"),
            ),
        };
    }
    let epoch = match epoch {
        Some(epoch) => epoch,
        None => {
            // The epochs the brokers know: this one's gauge and each reachable broker's.
            let describe = Request::DescribeTopic { name: name.clone() };
            let timeout = Duration::from_millis(node.config.controlplane.command_timeout_ms);
            let mut highest = 0u64;
            let mut answers = vec![handle_known_epoch(node, &name, partition)];
            for broker in cluster.brokers.iter().filter(|b| b.id != cluster.broker_id) {
                if broker.admin.is_empty() {
                    continue;
                }
                if let Ok(Response::Topic(topic)) =
                    ask_broker(&broker.admin, &describe, timeout).await
                {
                    answers.push(
                        topic
                            .partitions
                            .iter()
                            .find(|p| p.partition == u32::from(partition))
                            .map(|p| p.leader_epoch),
                    );
                }
            }
            for known in answers.into_iter().flatten() {
                highest = highest.max(known);
            }
            match u32::try_from(highest + 1) {
                Ok(epoch) => epoch,
                Err(_) => return Response::error(codes::INVALID_ARGUMENT, "epochs exhausted"),
            }
        }
    };
    let here = async {
        let command = Command::SetLeader {
            name: &name,
            partition,
            leader: leader as u16,
            epoch,
            // Static mode's rule: the leader alone, followers join as they catch up.
            isr: 0,
        };
        match node.link.call(command).await {
            Ok(Reply::Done) => Response::Ok,
            other => failure(other),
        }
    };
    if forwarded {
        return here.await;
    }
    let request = Request::ClusterSetLeader {
        name: name.clone(),
        partition: u32::from(partition),
        leader,
        epoch: Some(epoch),
        forwarded: true,
    };
    on_every_broker(node, here, request).await
}

/// The leader epoch this broker's data plane publishes for a partition.
fn handle_known_epoch(node: &Node, name: &str, partition: u16) -> Option<u64> {
    let counters = read_counters(node).ok()?;
    counters
        .topic(name)?
        .iter()
        .find(|p| p.partition == u32::from(partition))
        .map(|p| p.leader_epoch)
}

/// Runs `here` and sends `request` to every other broker's cluster listener, all at once;
/// answers with what each broker said, this one first.
async fn on_every_broker(
    node: &Node,
    here: impl std::future::Future<Output = Response>,
    request: Request,
) -> Response {
    let cluster = &node.config.cluster;
    let answer_timeout = Duration::from_millis(
        node.config.controlplane.command_timeout_ms + TOPIC_VISIBLE_WAIT_MS + FORWARD_MARGIN_MS,
    );
    let others = cluster
        .brokers
        .iter()
        .filter(|broker| broker.id != cluster.broker_id)
        .map(|broker| {
            let request = &request;
            async move {
                let answer = if broker.admin.is_empty() {
                    Response::error(
                        codes::UNREACHABLE,
                        format!(
                            "broker {} has no admin address (cluster.brokers[].admin): \
                             carry the request out on it yourself",
                            broker.id
                        ),
                    )
                } else {
                    match ask_broker(&broker.admin, request, answer_timeout).await {
                        Ok(answer) => answer,
                        Err(error) => Response::error(
                            codes::UNREACHABLE,
                            format!("broker {} ({}): {error}", broker.id, broker.admin),
                        ),
                    }
                };
                BrokerAnswer {
                    broker_id: broker.id,
                    admin: broker.admin.clone(),
                    answer,
                }
            }
        });
    let (here, others) = tokio::join!(here, futures_util::future::join_all(others));
    let mut answers = vec![BrokerAnswer {
        broker_id: cluster.broker_id,
        admin: String::new(),
        answer: here,
    }];
    answers.extend(others);
    Response::ClusterResults(answers)
}

fn check_creation(name: &str, partitions: u32) -> Result<(), Response> {
    check_name(name)?;
    let partitions_max = u32::from(PARTITIONS_PER_TOPIC_MAX);
    if !(1..=partitions_max).contains(&partitions) {
        return Err(Response::error(
            codes::INVALID_ARGUMENT,
            format!("partitions {partitions}: must be 1..={partitions_max}"),
        ));
    }
    Ok(())
}

async fn delete_topic(node: &Node, name: &str) -> Response {
    let counters = match check_known(node, name) {
        Ok(counters) => counters,
        Err(response) => return response,
    };
    drop(counters);
    match node.link.call(Command::DeleteTopic { name }).await {
        Ok(Reply::Done) => {
            wait_for_topic(node, name, false).await;
            Response::Ok
        }
        other => failure(other),
    }
}

async fn create_topic(
    node: &Node,
    name: String,
    partitions: u32,
    retention_ms: Option<u64>,
    retention_bytes: Option<u64>,
    replication: TopicReplication,
) -> Response {
    if let Err(response) = check_creation(&name, partitions) {
        return response;
    }
    let counters = match read_counters(node) {
        Ok(counters) => counters,
        Err(response) => return response,
    };
    if counters.topic(&name).is_some() {
        return Response::error(
            codes::TOPIC_EXISTS,
            format!("topic {name:?} exists already"),
        );
    }
    // 0 in the command means the data plane's default (storage.retention_*).
    let command = Command::CreateTopic {
        name: &name,
        partitions: partitions as u16,
        retention_ms: retention_ms.unwrap_or(0),
        retention_bytes: retention_bytes.unwrap_or(0),
        replication,
    };
    match node.link.call(command).await {
        Ok(Reply::TopicCreated {
            topic_id,
            partitions,
        }) => {
            wait_for_topic(node, &name, true).await;
            Response::TopicCreated {
                name,
                topic_id: topic_id as u32,
                partitions: partitions as u32,
            }
        }
        other => failure(other),
    }
}

fn check_name(name: &str) -> Result<(), Response> {
    if is_valid_topic_name(name) {
        return Ok(());
    }
    Err(Response::error(
        codes::INVALID_ARGUMENT,
        format!(
            "invalid topic name {name:?}: 1 to {TOPIC_NAME_BYTES_MAX} characters of \
             a-z A-Z 0-9 . _ -, not \".\" or \"..\""
        ),
    ))
}

fn check_known(node: &Node, name: &str) -> Result<CountersSnapshot, Response> {
    check_name(name)?;
    let counters = read_counters(node)?;
    if counters.topic(name).is_none() {
        return Err(unknown_topic(name, &counters));
    }
    Ok(counters)
}

fn unknown_topic(name: &str, counters: &CountersSnapshot) -> Response {
    let names = counters.topic_names();
    let known = if names.is_empty() {
        "there are no topics".to_string()
    } else {
        format!("topics: {}", names.join(", "))
    };
    Response::error(
        codes::UNKNOWN_TOPIC,
        format!("no topic named {name:?} ({known})"),
    )
}

/// The counters of a live data plane, or the `dataplane_unavailable` answer.
fn read_counters(node: &Node) -> Result<CountersSnapshot, Response> {
    if !node.link.state().is_alive() {
        return Err(Response::error(
            codes::DATAPLANE_UNAVAILABLE,
            format!(
                "the data plane is not running: {}",
                node.link.state().problem()
            ),
        ));
    }
    CountersSnapshot::read(&node.cnc_dir).map_err(|error| {
        Response::error(
            codes::DATAPLANE_UNAVAILABLE,
            format!("cannot read the data plane's counters: {error}"),
        )
    })
}

/// Waits, bounded, until the counters show the topic (`present`) or no longer do.
async fn wait_for_topic(node: &Node, name: &str, present: bool) {
    let polls = TOPIC_VISIBLE_WAIT_MS / TOPIC_VISIBLE_POLL_MS;
    for _ in 0..polls {
        match CountersSnapshot::read(&node.cnc_dir) {
            Ok(counters) if counters.topic(name).is_some() == present => return,
            Err(_) => return,
            Ok(_) => {}
        }
        tokio::time::sleep(Duration::from_millis(TOPIC_VISIBLE_POLL_MS)).await;
    }
}

fn topic_summaries(counters: &CountersSnapshot) -> Vec<TopicSummary> {
    counters
        .topics()
        .iter()
        .map(|(name, partitions)| TopicSummary {
            name: name.clone(),
            partitions: partitions.len() as u32,
            messages: partitions
                .iter()
                .map(|p: &PartitionInfo| p.end_offset.saturating_sub(p.start_offset))
                .sum(),
            bytes: partitions.iter().map(|p| p.bytes).sum(),
            segments: partitions.iter().map(|p| p.segments).sum(),
            replication_factor: partitions.first().map_or(0, |p| p.replicas.len() as u32),
            under_replicated: partitions
                .iter()
                .filter(|p| p.replicated() && p.isr.len() < p.replicas.len())
                .count() as u32,
            under_min_isr: partitions
                .iter()
                .filter(|p| p.replicated() && (p.isr.len() as u32) < p.min_insync)
                .count() as u32,
            leaders: if partitions.iter().any(PartitionInfo::replicated) {
                partitions.iter().map(|p| p.leader).collect()
            } else {
                Vec::new()
            },
        })
        .collect()
}

/// The answer for anything but the expected event.
fn failure(outcome: Result<Reply, LinkError>) -> Response {
    match outcome {
        Ok(Reply::Failed { code, message }) => {
            Response::error(crate::dataplane_error_code(code), message)
        }
        Ok(other) => Response::error(
            codes::DATAPLANE_ERROR,
            format!("the data plane answered with an unexpected event: {other:?}"),
        ),
        Err(LinkError::Timeout(ms)) => Response::error(
            codes::TIMEOUT,
            format!(
                "the data plane did not answer within {ms} ms (controlplane.command_timeout_ms); \
                 the command may still be carried out"
            ),
        ),
        Err(LinkError::Busy) => Response::error(codes::BUSY, LinkError::Busy.to_string()),
        Err(error @ (LinkError::Unavailable(_) | LinkError::Restarted)) => {
            Response::error(codes::DATAPLANE_UNAVAILABLE, error.to_string())
        }
        Err(error @ LinkError::BadEvent(_)) => {
            Response::error(codes::DATAPLANE_ERROR, error.to_string())
        }
        Err(error @ LinkError::BadCount(_)) => {
            Response::error(codes::INVALID_ARGUMENT, error.to_string())
        }
    }
}
