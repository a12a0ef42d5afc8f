//! Admin commands (`topic ...`, `status`): one request to the control plane's admin socket,
//! printed as a table for people or as JSON with `--json`.

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use precursor_config::limits::PARTITIONS_PER_TOPIC_MAX;
use precursor_config::{AcksAll, Config, SaslMechanism};
use precursor_controlplane::admin::{
    self, codes, BrokerAnswer, ClusterVerdict, GroupDescription, NodeStatus, PartitionInfo,
    Request, Response,
};
use std::path::PathBuf;
use std::process::ExitCode;

/// Where the control plane is, and how to print its answer.
#[derive(Args, Clone, Debug)]
pub struct AdminTarget {
    /// Configuration file naming the admin socket (controlplane.admin_socket).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// The admin socket itself [default: /run/precursor/precursor.sock] [env:
    /// PRECURSOR_ADMIN_SOCKET; --config wins over the environment].
    #[arg(long, conflicts_with = "config")]
    socket: Option<PathBuf>,
    /// Print the answer as JSON.
    #[arg(long)]
    pub(super) json: bool,
}

impl AdminTarget {
    pub(super) fn socket(&self) -> Result<PathBuf> {
        if let Some(socket) = &self.socket {
            return Ok(socket.clone());
        }
        let config = match &self.config {
            Some(path) => Config::load(path)?,
            None => match std::env::var_os(ADMIN_SOCKET_ENV).filter(|v| !v.is_empty()) {
                Some(socket) => return Ok(PathBuf::from(socket)),
                None => Config::default(),
            },
        };
        Ok(config.controlplane.admin_socket)
    }
}

/// The admin socket when neither --socket nor --config is given (`precursor cluster up`
/// prints the line that sets it).
pub const ADMIN_SOCKET_ENV: &str = "PRECURSOR_ADMIN_SOCKET";

/// What `acks=all` waits for on every in-sync replica.
#[derive(clap::ValueEnum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum AcksAllArg {
    /// In every ISR member's memory (Kafka's meaning).
    Memory,
    /// fdatasync'd on every ISR member.
    Durable,
}

#[derive(Subcommand)]
pub enum TopicCommand {
    /// Create a topic (in a cluster: on every broker, through this broker's control plane).
    Create {
        name: String,
        /// Number of partitions (1..=1024).
        #[arg(long, short, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=PARTITIONS_PER_TOPIC_MAX as i64))]
        partitions: u32,
        /// Replicas of each partition: 1 up to the cluster's brokers (at most 5)
        /// [default: the broker's topics.default_replication_factor].
        #[arg(long, short = 'r', value_name = "R", value_parser = clap::value_parser!(u8).range(1..))]
        replication_factor: Option<u8>,
        /// acks=all produces are refused while fewer replicas are in sync (1..=R)
        /// [default: topics.default_min_insync_replicas, at most R].
        #[arg(long, value_name = "M", value_parser = clap::value_parser!(u8).range(1..))]
        min_insync_replicas: Option<u8>,
        /// What acks=all waits for on every in-sync replica [default: cluster.acks_all].
        #[arg(long, value_enum, value_name = "WHAT")]
        acks_all: Option<AcksAllArg>,
        /// Delete segments whose newest record is older than this, in ms
        /// [default, or 0: the node's storage.retention_ms].
        #[arg(long)]
        retention_ms: Option<u64>,
        /// Delete the oldest segments while a partition is larger than this, in bytes
        /// [default, or 0: the node's storage.retention_bytes].
        #[arg(long)]
        retention_bytes: Option<u64>,
        /// A Kafka topic configuration, KEY=VALUE (repeatable): retention.ms,
        /// retention.bytes, max.message.bytes, compression.type, min.insync.replicas,
        /// cleanup.policy, message.timestamp.type (docs/kafka.md lists their ranges).
        /// Kafka's tools call it --config; here --config names the broker's config file.
        #[arg(long = "set", value_name = "KEY=VALUE", value_parser = parse_config)]
        configs: Vec<(String, String)>,
        #[command(flatten)]
        target: AdminTarget,
    },
    /// List topics.
    List {
        #[command(flatten)]
        target: AdminTarget,
    },
    /// Show a topic's partitions (offsets and sizes) and its configuration.
    Describe {
        name: String,
        #[command(flatten)]
        target: AdminTarget,
    },
    /// Delete a topic and its data (in a cluster: on every broker).
    Delete {
        name: String,
        #[command(flatten)]
        target: AdminTarget,
    },
    /// Move a replicated partition's leadership to broker B (on every broker, at a new leader
    /// epoch): B leads from its log, the others follow it and cut what they hold beyond it.
    /// Pick B from the ISR (`topic describe`), or acknowledged messages can be cut.
    Lead {
        name: String,
        /// The partition (0-based).
        #[arg(long, short)]
        partition: u32,
        /// The broker id that is to lead it.
        #[arg(long = "broker-id", value_name = "B")]
        leader: u32,
        /// The leader epoch to use [default: one past the highest any broker knows].
        #[arg(long)]
        epoch: Option<u32>,
        #[command(flatten)]
        target: AdminTarget,
    },
    /// Change a topic: add partitions (--partitions), change its retention or its Kafka
    /// configuration (at least one of them; in a cluster on every broker). Done in that
    /// order, stopping at the first step refused.
    ///
    /// --partitions M grows the topic to M partitions (more than it has, at most 1024; in a
    /// cluster on every broker, placed and replicated as at creation). The partitions it
    /// has keep their data; keyed messages may map to other partitions from then on.
    #[command(group(clap::ArgGroup::new("change").required(true).multiple(true)))]
    Alter {
        name: String,
        /// The topic's new partition count (partitions only grow).
        #[arg(long, short, group = "change", value_name = "M", value_parser = clap::value_parser!(u32).range(1..=PARTITIONS_PER_TOPIC_MAX as i64))]
        partitions: Option<u32>,
        /// New time retention, in ms (0: no limit).
        #[arg(long, group = "change")]
        retention_ms: Option<u64>,
        /// New size retention per partition, in bytes (0: no limit).
        #[arg(long, group = "change")]
        retention_bytes: Option<u64>,
        /// Set a Kafka topic configuration, KEY=VALUE (repeatable; see `topic create`).
        #[arg(long = "set", value_name = "KEY=VALUE", value_parser = parse_config, group = "change")]
        configs: Vec<(String, String)>,
        /// Return a configuration key to the broker's default (repeatable).
        #[arg(long = "unset", value_name = "KEY", group = "change")]
        delete_configs: Vec<String>,
        #[command(flatten)]
        target: AdminTarget,
    },
}

/// `KEY=VALUE` of `--set`.
fn parse_config(text: &str) -> std::result::Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
        _ => Err(format!(
            "{text:?}: expected KEY=VALUE, e.g. compression.type=zstd"
        )),
    }
}

/// The admin request that sets `configs` (and deletes `delete`) on a topic.
fn configs_request(name: String, configs: Vec<(String, String)>, delete: Vec<String>) -> Request {
    Request::AlterTopicConfigs {
        name,
        set: configs.into_iter().collect(),
        delete,
        replace: false,
        validate_only: false,
        forwarded: false,
    }
}

pub fn topic(command: TopicCommand) -> Result<ExitCode> {
    let (request, target) = match command {
        TopicCommand::Create {
            name,
            partitions,
            replication_factor,
            min_insync_replicas,
            acks_all,
            retention_ms,
            retention_bytes,
            configs,
            target,
        } => {
            let then =
                (!configs.is_empty()).then(|| configs_request(name.clone(), configs, Vec::new()));
            let created = ask(
                &target,
                &Request::ClusterCreateTopic {
                    name,
                    partitions,
                    retention_ms,
                    retention_bytes,
                    replication_factor,
                    min_insync_replicas,
                    acks_all: acks_all.map(|a| match a {
                        AcksAllArg::Memory => AcksAll::Memory,
                        AcksAllArg::Durable => AcksAll::Durable,
                    }),
                    forwarded: false,
                },
            )?;
            return match then {
                Some(request) if created == ExitCode::SUCCESS => ask(&target, &request),
                _ => Ok(created),
            };
        }
        TopicCommand::Alter {
            name,
            partitions,
            retention_ms,
            retention_bytes,
            configs,
            delete_configs,
            target,
        } => {
            let mut steps = Vec::new();
            if let Some(partitions) = partitions {
                steps.push(Request::CreatePartitions {
                    name: name.clone(),
                    partitions,
                    forwarded: false,
                });
            }
            if retention_ms.is_some() || retention_bytes.is_some() {
                steps.push(Request::AlterTopic {
                    name: name.clone(),
                    retention_ms,
                    retention_bytes,
                });
            }
            if !configs.is_empty() || !delete_configs.is_empty() {
                steps.push(configs_request(name, configs, delete_configs));
            }
            let last = steps.pop().expect("clap requires one change at least");
            for step in &steps {
                let done = ask(&target, step)?;
                if done != ExitCode::SUCCESS {
                    return Ok(done);
                }
            }
            (last, target)
        }
        TopicCommand::Lead {
            name,
            partition,
            leader,
            epoch,
            target,
        } => (lead_request(name, partition, leader, epoch), target),
        TopicCommand::List { target } => (Request::ListTopics, target),
        TopicCommand::Describe { name, target } => (Request::DescribeTopic { name }, target),
        TopicCommand::Delete { name, target } => (
            Request::ClusterDeleteTopic {
                name,
                forwarded: false,
            },
            target,
        ),
    };
    ask(&target, &request)
}

fn lead_request(name: String, partition: u32, leader: u32, epoch: Option<u32>) -> Request {
    Request::ClusterSetLeader {
        name,
        partition,
        leader,
        epoch,
        forwarded: false,
    }
}

#[derive(Subcommand)]
pub enum BrokerCommand {
    /// Move every partition a broker leads to another in-sync replica, in one commit of
    /// the metadata quorum (cluster.metadata = "quorum"). The broker keeps running as a
    /// follower; `precursor down` and `cluster stop` do this by themselves first.
    Drain {
        /// The broker to drain [default: the one whose control plane is asked].
        #[arg(long = "broker-id", value_name = "B")]
        broker: Option<u32>,
        #[command(flatten)]
        target: AdminTarget,
    },
}

pub fn broker(command: BrokerCommand) -> Result<ExitCode> {
    match command {
        BrokerCommand::Drain { broker, target } => ask(&target, &Request::DrainBroker { broker }),
    }
}

/// Consumer groups of the Kafka gateway (committed offsets and lag).
#[derive(Subcommand)]
pub enum GroupCommand {
    /// List the groups this broker coordinates or holds committed offsets of.
    List {
        #[command(flatten)]
        target: AdminTarget,
    },
    /// A group's state, members and assignment, and per partition the committed offset,
    /// the log end offset and the lag (as `kafka-consumer-groups --describe`).
    Describe {
        name: String,
        #[command(flatten)]
        target: AdminTarget,
    },
}

pub fn group(command: GroupCommand) -> Result<ExitCode> {
    match command {
        GroupCommand::List { target } => ask(&target, &Request::ListGroups),
        GroupCommand::Describe { name, target } => ask(&target, &Request::DescribeGroup { name }),
    }
}

/// A SCRAM mechanism of `user create --mechanism`.
#[derive(clap::ValueEnum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum ScramMechanismArg {
    #[value(name = "SCRAM-SHA-256")]
    ScramSha256,
    #[value(name = "SCRAM-SHA-512")]
    ScramSha512,
}

/// SASL users of the Kafka listeners (docs/security.md).
#[derive(Subcommand)]
pub enum UserCommand {
    /// Create a user or set its password (salted; the password is never stored).
    Create {
        name: String,
        /// The password; left out: the first line of standard input.
        #[arg(long)]
        password: Option<String>,
        /// Only these mechanisms [default: both SCRAM mechanisms; PLAIN uses them].
        #[arg(long = "mechanism", value_enum)]
        mechanisms: Vec<ScramMechanismArg>,
        /// PBKDF2 iterations (4096..=16384) [default: 4096].
        #[arg(long)]
        iterations: Option<u32>,
        #[command(flatten)]
        target: AdminTarget,
    },
    /// Delete a user (all its credentials).
    Delete {
        name: String,
        #[command(flatten)]
        target: AdminTarget,
    },
    /// List the users and their mechanisms.
    List {
        #[command(flatten)]
        target: AdminTarget,
    },
}

pub fn user(command: UserCommand) -> Result<ExitCode> {
    match command {
        UserCommand::Create {
            name,
            password,
            mechanisms,
            iterations,
            target,
        } => {
            let password = match password {
                Some(password) => password,
                None => {
                    let mut line = String::new();
                    std::io::stdin().read_line(&mut line)?;
                    line.trim_end_matches(['\r', '\n']).to_string()
                }
            };
            let mechanisms = mechanisms
                .into_iter()
                .map(|m| match m {
                    ScramMechanismArg::ScramSha256 => SaslMechanism::ScramSha256,
                    ScramMechanismArg::ScramSha512 => SaslMechanism::ScramSha512,
                })
                .collect();
            let request = Request::CreateUser {
                name,
                password,
                mechanisms,
                iterations,
            };
            ask(&target, &request)
        }
        UserCommand::Delete { name, target } => ask(&target, &Request::DeleteUser { name }),
        UserCommand::List { target } => ask(&target, &Request::ListUsers),
    }
}

pub fn status(target: AdminTarget) -> Result<ExitCode> {
    ask(&target, &Request::Status)
}

fn ask(target: &AdminTarget, request: &Request) -> Result<ExitCode> {
    let socket = target.socket()?;
    let response = admin::request(&socket, request)?;
    if let Response::Error { code, message } = &response {
        if target.json {
            println!("{}", serde_json::to_string(&response)?);
            eprintln!("precursor: {message} ({code})");
            return Ok(ExitCode::FAILURE);
        }
        bail!("{message} ({code})");
    }
    if let Response::ClusterResults(answers) = &response {
        return cluster_results(target, request, answers);
    }
    if target.json {
        println!("{}", json(&response)?);
    } else {
        print!("{}", human(request, &response)?);
    }
    Ok(ExitCode::SUCCESS)
}

/// A create or delete carried out on every broker: a line per broker; success only when
/// every broker has the topic (create) or has it no more (delete).
fn cluster_results(
    target: &AdminTarget,
    request: &Request,
    answers: &[BrokerAnswer],
) -> Result<ExitCode> {
    let (name, verb, already_code, already_text) = match request {
        Request::ClusterDeleteTopic { name, .. } => {
            (name, "deleted", codes::UNKNOWN_TOPIC, "absent already")
        }
        Request::ClusterCreateTopic { name, .. } => {
            (name, "created", codes::TOPIC_EXISTS, "exists already")
        }
        Request::ClusterSetLeader { name, .. } => (name, "leader set", "", ""),
        Request::CreatePartitions { name, .. } => (name, "grown", "", ""),
        _ => bail!("the control plane answered with results from every broker to {request:?}"),
    };
    let verdict = ClusterVerdict::of(answers, already_code);
    let ids = |ids: &[u32]| {
        let mut ids = ids.to_vec();
        ids.sort_unstable();
        ids.iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    if target.json {
        let value = serde_json::json!({
            "name": name,
            "complete": verdict.complete(),
            "brokers": answers,
        });
        println!("{value}");
    } else {
        let mut text = if verdict.done.is_empty() {
            format!("topic {name}: {verb} on no broker\n")
        } else {
            format!("topic {name}: {verb} on broker(s) {}\n", ids(&verdict.done))
        };
        text.push_str(&table(
            &["BROKER", "ADMIN", "ANSWER"],
            answers
                .iter()
                .map(|a| {
                    let answer = match &a.answer {
                        Response::TopicCreated { partitions, .. }
                            if matches!(request, Request::CreatePartitions { .. }) =>
                        {
                            format!("{partitions} partition(s)")
                        }
                        Response::TopicCreated {
                            topic_id,
                            partitions,
                            ..
                        } => format!("created (id {topic_id}, {partitions} partition(s))"),
                        Response::Ok => verb.to_string(),
                        Response::Error { code, .. } if code == already_code => {
                            already_text.to_string()
                        }
                        Response::Error { code, message } => {
                            format!("FAILED: {message} ({code})")
                        }
                        other => format!("{other:?}"),
                    };
                    let admin = if a.admin.is_empty() {
                        "(this broker)".to_string()
                    } else {
                        a.admin.clone()
                    };
                    vec![a.broker_id.to_string(), admin, answer]
                })
                .collect(),
        ));
        print!("{text}");
    }
    if verdict.complete() {
        return Ok(ExitCode::SUCCESS);
    }
    let message = if let Some((broker, message, code)) = verdict.failed.first() {
        let others = if verdict.failed.len() > 1 {
            format!(
                " (and {} more broker(s): see above)",
                verdict.failed.len() - 1
            )
        } else {
            String::new()
        };
        let done = if verdict.done.is_empty() && verdict.already.is_empty() {
            String::new()
        } else {
            let mut ok = verdict.done.clone();
            ok.extend(&verdict.already);
            format!("done on broker(s) {}; ", ids(&ok))
        };
        format!(
            "topic {name}: {done}failed on broker {broker}: {message} ({code}){others}; \
             run the command again once that broker is back"
        )
    } else if already_code == codes::TOPIC_EXISTS {
        format!("topic {name:?} exists already on every broker ({already_code})")
    } else {
        format!("no topic named {name:?} on any broker ({already_code})")
    };
    eprintln!("precursor: {message}");
    Ok(ExitCode::FAILURE)
}

/// The answer's content as JSON, without the response tag.
fn json(response: &Response) -> Result<String> {
    Ok(match response {
        Response::Ok => serde_json::json!({ "ok": true }).to_string(),
        Response::TopicCreated {
            name,
            topic_id,
            partitions,
        } => serde_json::json!({ "name": name, "topic_id": topic_id, "partitions": partitions })
            .to_string(),
        Response::Topics(topics) => serde_json::to_string(topics)?,
        Response::Topic(topic) => serde_json::to_string(topic)?,
        Response::Status(status) => serde_json::to_string(status)?,
        Response::Config(text) => serde_json::json!({ "config": text }).to_string(),
        Response::Drained {
            broker,
            moved,
            stuck,
        } => serde_json::json!({ "broker": broker, "moved": moved, "stuck": stuck }).to_string(),
        Response::Latency {
            count,
            p50_ns,
            p90_ns,
            p99_ns,
            p999_ns,
            max_ns,
        } => serde_json::json!({
            "count": count, "p50_ns": p50_ns, "p90_ns": p90_ns, "p99_ns": p99_ns,
            "p999_ns": p999_ns, "max_ns": max_ns
        })
        .to_string(),
        Response::Groups(groups) => serde_json::to_string(groups)?,
        Response::Group(group) => serde_json::to_string(group)?,
        Response::Users(users) => serde_json::to_string(users)?,
        Response::Error { .. } | Response::ClusterResults(_) => serde_json::to_string(response)?,
    })
}

fn human(request: &Request, response: &Response) -> Result<String> {
    Ok(match response {
        Response::Ok => match request {
            Request::DeleteTopic { name } | Request::ClusterDeleteTopic { name, .. } => {
                format!("deleted topic {name}\n")
            }
            Request::AlterTopic { name, .. } | Request::AlterTopicConfigs { name, .. } => {
                format!("altered topic {name}\n")
            }
            Request::CreateUser { name, .. } => format!("user {name} set\n"),
            Request::DeleteUser { name } => format!("deleted user {name}\n"),
            _ => "ok\n".into(),
        },
        Response::TopicCreated {
            name, partitions, ..
        } if matches!(request, Request::CreatePartitions { .. }) => {
            format!("topic {name} now has {partitions} partition(s)\n")
        }
        Response::TopicCreated {
            name,
            topic_id,
            partitions,
        } => format!("created topic {name} (id {topic_id}) with {partitions} partition(s)\n"),
        Response::Drained {
            broker,
            moved,
            stuck,
        } => {
            let mut text = format!(
                "broker {broker} drained: {moved} leadership(s) moved to other in-sync replicas\n"
            );
            if !stuck.is_empty() {
                text.push_str(&format!(
                    "{} partition(s) have no other live in-sync replica and stay led by broker \
                     {broker}: {}\n",
                    stuck.len(),
                    stuck.join(", ")
                ));
            }
            text
        }
        Response::Topics(topics) if topics.is_empty() => "no topics\n".into(),
        Response::Topics(topics) if topics.iter().any(|t| !t.leaders.is_empty()) => table(
            &[
                "TOPIC",
                "PARTITIONS",
                "RF",
                "LEADERS",
                "UNDER-REPLICATED",
                "UNDER-MIN-ISR",
                "MESSAGES",
                "BYTES",
                "SEGMENTS",
            ],
            topics
                .iter()
                .map(|t| {
                    vec![
                        t.name.clone(),
                        t.partitions.to_string(),
                        t.replication_factor.to_string(),
                        leaders(&t.leaders),
                        t.under_replicated.to_string(),
                        t.under_min_isr.to_string(),
                        t.messages.to_string(),
                        bytes(t.bytes),
                        t.segments.to_string(),
                    ]
                })
                .collect(),
        ),
        Response::Topics(topics) => table(
            &["TOPIC", "PARTITIONS", "MESSAGES", "BYTES", "SEGMENTS"],
            topics
                .iter()
                .map(|t| {
                    vec![
                        t.name.clone(),
                        t.partitions.to_string(),
                        t.messages.to_string(),
                        bytes(t.bytes),
                        t.segments.to_string(),
                    ]
                })
                .collect(),
        ),
        Response::Topic(topic) => {
            let mut text = format!(
                "topic {}: {} partition(s)\n",
                topic.name,
                topic.partitions.len()
            );
            if topic.partitions.iter().any(PartitionInfo::replicated) {
                text.push_str(&replicated_partitions(&topic.partitions));
                text.push_str(&configs_text(&topic.configs));
                return Ok(text);
            }
            text.push_str(&table(
                &["PARTITION", "START", "END", "DURABLE", "BYTES", "SEGMENTS"],
                topic
                    .partitions
                    .iter()
                    .map(|p| {
                        vec![
                            p.partition.to_string(),
                            p.start_offset.to_string(),
                            p.end_offset.to_string(),
                            p.durable_offset.to_string(),
                            bytes(p.bytes),
                            p.segments.to_string(),
                        ]
                    })
                    .collect(),
            ));
            text.push_str(&configs_text(&topic.configs));
            text
        }
        Response::Status(status) => status_text(status),
        Response::Config(text) => text.clone(),
        Response::Latency {
            count,
            p50_ns,
            p90_ns,
            p99_ns,
            p999_ns,
            max_ns,
        } => format!(
            "{count} pings: p50 {p50_ns} ns, p90 {p90_ns} ns, p99 {p99_ns} ns, \
             p99.9 {p999_ns} ns, max {max_ns} ns\n"
        ),
        Response::Error { code, message } => format!("{message} ({code})\n"),
        Response::ClusterResults(answers) => format!("{answers:?}\n"),
        Response::Groups(groups) if groups.is_empty() => "no groups\n".into(),
        Response::Groups(groups) => table(
            &[
                "GROUP",
                "STATE",
                "PROTOCOL-TYPE",
                "MEMBERS",
                "PARTITIONS",
                "LAG",
            ],
            groups
                .iter()
                .map(|g| {
                    vec![
                        g.group.clone(),
                        g.state.clone(),
                        dash(&g.protocol_type),
                        g.members.to_string(),
                        g.partitions.to_string(),
                        g.lag.to_string(),
                    ]
                })
                .collect(),
        ),
        Response::Group(group) => group_text(group),
        Response::Users(users) if users.is_empty() => "no users\n".into(),
        Response::Users(users) => table(
            &["USER", "MECHANISMS"],
            users
                .iter()
                .map(|u| {
                    let mechanisms: Vec<String> = u
                        .credentials
                        .iter()
                        .map(|c| format!("{} ({} iterations)", c.mechanism.name(), c.iterations))
                        .collect();
                    vec![u.name.clone(), mechanisms.join(", ")]
                })
                .collect(),
        ),
    })
}

/// `-` for an empty field.
/// A topic's configuration under its partitions.
fn configs_text(configs: &[admin::TopicConfigEntry]) -> String {
    if configs.is_empty() {
        return String::new();
    }
    let rows = configs
        .iter()
        .map(|c| {
            let source = if c.read_only {
                format!("{} (read-only)", c.source)
            } else {
                c.source.clone()
            };
            vec![c.name.clone(), c.value.clone(), source]
        })
        .collect();
    format!("\n{}", table(&["CONFIG", "VALUE", "SOURCE"], rows))
}

fn dash(text: &str) -> String {
    if text.is_empty() {
        "-".into()
    } else {
        text.to_string()
    }
}

/// `group describe`: a header line, the partitions (kafka-consumer-groups' columns), then
/// the members with their assignments.
fn group_text(group: &GroupDescription) -> String {
    let mut text = format!(
        "group {}: state {}, protocol {}/{}, generation {}, {} member(s)\n\n",
        group.group,
        group.state,
        dash(&group.protocol_type),
        dash(&group.protocol),
        group.generation,
        group.members.len()
    );
    let optional = |value: Option<String>| value.unwrap_or_else(|| "-".into());
    text.push_str(&table(
        &[
            "GROUP",
            "TOPIC",
            "PARTITION",
            "CURRENT-OFFSET",
            "LOG-END-OFFSET",
            "LAG",
            "CONSUMER-ID",
            "HOST",
            "CLIENT-ID",
        ],
        group
            .partitions
            .iter()
            .map(|p| {
                vec![
                    group.group.clone(),
                    p.topic.clone(),
                    p.partition.to_string(),
                    optional(p.committed_offset.map(|o| o.to_string())),
                    optional(p.log_end_offset.map(|o| o.to_string())),
                    optional(p.lag.map(|o| o.to_string())),
                    optional(p.member_id.clone()),
                    optional(p.client_host.clone()),
                    optional(p.client_id.clone()),
                ]
            })
            .collect(),
    ));
    if !group.members.is_empty() {
        text.push('\n');
        text.push_str(&table(
            &["CONSUMER-ID", "HOST", "CLIENT-ID", "ASSIGNMENT"],
            group
                .members
                .iter()
                .map(|m| {
                    let assignment: Vec<String> = m
                        .assignment
                        .iter()
                        .map(|t| {
                            let partitions: Vec<String> =
                                t.partitions.iter().map(i32::to_string).collect();
                            format!("{}({})", t.topic, partitions.join(","))
                        })
                        .collect();
                    vec![
                        m.member_id.clone(),
                        m.client_host.clone(),
                        m.client_id.clone(),
                        if assignment.is_empty() {
                            "-".into()
                        } else {
                            assignment.join(" ")
                        },
                    ]
                })
                .collect(),
        ));
    }
    text
}

/// `topic describe` of a cluster's topic: replication columns first.
fn replicated_partitions(partitions: &[PartitionInfo]) -> String {
    table(
        &[
            "PARTITION",
            "LEADER",
            "EPOCH",
            "REPLICAS",
            "ISR",
            "MIN-ISR",
            "HW",
            "START",
            "END",
            "DURABLE",
            "BYTES",
            "SEGMENTS",
            "ISR-SHRINKS",
            "ISR-EXPANDS",
        ],
        partitions
            .iter()
            .map(|p| {
                vec![
                    p.partition.to_string(),
                    if p.leader == 0 {
                        "none".into()
                    } else {
                        p.leader.to_string()
                    },
                    p.leader_epoch.to_string(),
                    broker_list(&p.replicas),
                    broker_list(&p.isr),
                    p.min_insync.to_string(),
                    p.high_watermark.to_string(),
                    p.start_offset.to_string(),
                    p.end_offset.to_string(),
                    p.durable_offset.to_string(),
                    bytes(p.bytes),
                    p.segments.to_string(),
                    p.isr_shrinks.to_string(),
                    p.isr_expands.to_string(),
                ]
            })
            .collect(),
    )
}

/// Broker ids as `1,2,3`; `-` for none.
fn broker_list(ids: &[u32]) -> String {
    if ids.is_empty() {
        return "-".into();
    }
    ids.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
}

/// The leader of each partition in partition order, the first few of a long list.
fn leaders(ids: &[u32]) -> String {
    const SHOWN_MAX: usize = 8;
    let shown: Vec<String> = ids
        .iter()
        .take(SHOWN_MAX)
        .map(|&id| if id == 0 { "-".into() } else { id.to_string() })
        .collect();
    let mut text = shown.join(",");
    if ids.len() > SHOWN_MAX {
        text.push_str(&format!(",... ({} partitions)", ids.len()));
    }
    text
}

fn status_text(status: &NodeStatus) -> String {
    let mut text = String::new();
    let dataplane = match (status.dataplane_pid, status.dataplane_alive) {
        (Some(pid), true) => format!(
            "running, pid {pid}, attached {}",
            duration(status.dataplane_uptime_s.unwrap_or(0))
        ),
        (Some(pid), false) => format!("NOT RUNNING (pid {pid} stopped its heartbeat)"),
        (None, _) => "NOT RUNNING".into(),
    };
    text.push_str(&format!("data plane:     {dataplane}\n"));
    text.push_str(&format!(
        "control plane:  up {}, data plane restarts {}, command ring depth {}\n",
        duration(status.uptime_s),
        status.restarts,
        status.command_ring_depth
    ));
    if !status.dataplane_alive {
        return text;
    }
    text.push_str(&format!(
        "storage:        {} topic(s), {} partition(s), {} on disk\n",
        status.topics,
        status.partitions,
        bytes(status.disk_bytes)
    ));
    if !status.ports.is_empty() {
        text.push('\n');
        text.push_str(&table(
            &[
                "PORT",
                "NAME",
                "LINK",
                "SPEED",
                "RX PKTS",
                "RX BYTES",
                "RX MISSED",
                "RX ERRS",
                "TX PKTS",
                "TX BYTES",
                "TX ERRS",
            ],
            status
                .ports
                .iter()
                .map(|p| {
                    vec![
                        p.port.clone(),
                        p.name.clone().unwrap_or_else(|| "-".into()),
                        if p.link_up { "up" } else { "down" }.into(),
                        if p.speed_mbps == 0 {
                            "-".into()
                        } else {
                            format!("{} Mb/s", p.speed_mbps)
                        },
                        p.rx_packets.to_string(),
                        bytes(p.rx_bytes),
                        p.rx_missed.to_string(),
                        p.rx_errors.to_string(),
                        p.tx_packets.to_string(),
                        bytes(p.tx_bytes),
                        p.tx_errors.to_string(),
                    ]
                })
                .collect(),
        ));
    }
    for lcore in &status.lcores {
        text.push_str(&format!("\nlcore {}:\n", lcore.lcore));
        for (name, value) in &lcore.counters {
            text.push_str(&format!("  {name} {value}\n"));
        }
    }
    text
}

/// Left-aligned columns, two spaces apart.
pub(super) fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut text = String::new();
        for (i, (cell, width)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                text.push_str(cell);
            } else {
                text.push_str(&format!("{cell:<width$}  "));
            }
        }
        text.push('\n');
        text
    };
    let mut text = line(header.to_vec());
    for row in &rows {
        text.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    text
}

fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

fn duration(seconds: u64) -> String {
    match seconds {
        s if s < 60 => format!("{s} s"),
        s if s < 3600 => format!("{} min {} s", s / 60, s % 60),
        s => format!("{} h {} min", s / 3600, (s % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::super::Cli;
    use clap::Parser;

    #[test]
    fn topic_configs_and_the_config_file_do_not_share_an_option() {
        // `topic alter --config KEY=VALUE` once took the config file's path as a topic
        // configuration (and refused it): topic configurations are --set/--unset.
        for args in [
            &[
                "topic",
                "alter",
                "t",
                "--set",
                "retention.ms=5",
                "--config",
                "/c.toml",
            ][..],
            &[
                "topic",
                "alter",
                "t",
                "--unset",
                "retention.ms",
                "--config",
                "/c.toml",
            ],
            &[
                "topic",
                "create",
                "t",
                "-p",
                "1",
                "--set",
                "compression.type=zstd",
                "--config",
                "/c.toml",
            ],
        ] {
            // With a clash the path is parsed as KEY=VALUE and refused.
            if let Err(error) = parse(args) {
                panic!("{args:?}: {error}");
            }
        }
    }

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("precursor").chain(args.iter().copied()))
    }

    #[test]
    fn bad_admin_arguments_are_usage_errors() {
        for args in [
            &["topic", "create", "orders"][..], // no --partitions
            &["topic", "create", "orders", "--partitions", "0"], // below 1
            &["topic", "create", "orders", "--partitions", "1025"], // above 1024
            &["topic", "create", "orders", "--partitions", "many"],
            &["topic", "alter", "orders"], // nothing to alter
            &["topic", "describe"],        // no name
            &["topic", "list", "--socket", "/s", "--config", "/c"], // one or the other
            &["topic", "rename", "a", "b"],
            &["status", "--retention-ms", "5"],
            &["topic", "create", "o", "-p", "1", "-r", "0"], // replication factor 0
            &["topic", "create", "o", "-p", "1", "--acks-all", "sometimes"],
            &[
                "topic",
                "create",
                "o",
                "-p",
                "1",
                "--min-insync-replicas",
                "0",
            ],
            &["cluster", "up", "--nodes", "0"],
            &["cluster", "up", "--nodes", "6"],
            &["cluster", "stop"], // which broker?
            &["cluster", "status", "--nodes", "3"],
        ] {
            let error = parse(args)
                .err()
                .unwrap_or_else(|| panic!("{args:?} parsed"));
            assert_eq!(error.exit_code(), 2, "{args:?}: {error}");
        }
    }

    #[test]
    fn good_admin_arguments_parse() {
        for args in [
            &[
                "topic",
                "create",
                "orders",
                "-p",
                "3",
                "--retention-ms",
                "60000",
            ][..],
            &["topic", "list", "--json", "--socket", "/tmp/p.sock"],
            &["topic", "describe", "orders", "--config", "precursor.toml"],
            &["topic", "delete", "orders"],
            &[
                "topic",
                "alter",
                "orders",
                "--retention-bytes",
                "1073741824",
            ],
            &["status", "--json"],
            &[
                "topic",
                "create",
                "orders",
                "-p",
                "3",
                "--replication-factor",
                "3",
                "--min-insync-replicas",
                "2",
                "--acks-all",
                "durable",
            ],
            &["cluster", "up", "--nodes", "3", "--dir", "/tmp/c", "--json"],
            &["cluster", "down", "--purge"],
            &["cluster", "status", "--json"],
            &["cluster", "stop", "--node", "2"],
            &["cluster", "start", "--node", "2", "--dir", "/tmp/c"],
            &["up", "--config", "precursor.toml"],
            &["controlplane"],
        ] {
            assert!(parse(args).is_ok(), "{args:?}");
        }
    }

    #[test]
    fn a_cluster_topic_shows_its_replicas() {
        use precursor_controlplane::admin::{
            PartitionInfo, Request, Response, TopicDescription, TopicSummary,
        };
        let partition = PartitionInfo {
            partition: 0,
            end_offset: 12,
            high_watermark: 10,
            leader: 2,
            leader_epoch: 3,
            replicas: vec![2, 3, 1],
            isr: vec![2, 3],
            min_insync: 2,
            isr_shrinks: 1,
            ..PartitionInfo::default()
        };
        let describe = Request::DescribeTopic {
            name: "orders".into(),
        };
        let text = super::human(
            &describe,
            &Response::Topic(TopicDescription {
                name: "orders".into(),
                partitions: vec![partition.clone()],
                configs: Vec::new(),
            }),
        )
        .unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[1].starts_with("PARTITION  LEADER  EPOCH  REPLICAS  ISR"),
            "{text}"
        );
        let cells: Vec<&str> = lines[2].split_whitespace().collect();
        assert_eq!(
            cells[..7],
            ["0", "2", "3", "2,3,1", "2,3", "2", "10"],
            "{text}"
        );
        // Outside a cluster: the single-node columns, as before.
        let single = super::human(
            &describe,
            &Response::Topic(TopicDescription {
                name: "orders".into(),
                partitions: vec![PartitionInfo::default()],
                configs: vec![precursor_controlplane::admin::TopicConfigEntry {
                    name: "compression.type".into(),
                    value: "zstd".into(),
                    source: "dynamic".into(),
                    read_only: false,
                }],
            }),
        )
        .unwrap();
        assert!(
            single.contains("CONFIG")
                && single.contains("compression.type")
                && single.contains("dynamic"),
            "{single}"
        );
        assert!(
            single.contains("PARTITION  START  END  DURABLE"),
            "{single}"
        );
        let list = super::human(
            &Request::ListTopics,
            &Response::Topics(vec![TopicSummary {
                name: "orders".into(),
                partitions: 1,
                messages: 12,
                bytes: 0,
                segments: 1,
                replication_factor: 3,
                under_replicated: 1,
                under_min_isr: 0,
                leaders: vec![2],
            }]),
        )
        .unwrap();
        assert!(list.contains("RF  LEADERS  UNDER-REPLICATED"), "{list}");
        assert!(super::leaders(&[1; 10]).ends_with(",... (10 partitions)"));
    }

    #[test]
    fn sizes_and_durations_read_well() {
        assert_eq!(super::bytes(512), "512 B");
        assert_eq!(super::bytes(3 << 20), "3.0 MiB");
        assert_eq!(super::duration(59), "59 s");
        assert_eq!(super::duration(61), "1 min 1 s");
        assert_eq!(super::duration(7260), "2 h 1 min");
    }
}
