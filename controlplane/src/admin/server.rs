//! The control plane's side of the admin socket.

use super::types::{codes, PartitionInfo, Request, Response, TopicDescription, TopicSummary};
use super::REQUEST_BYTES_MAX;
use crate::counters::CountersSnapshot;
use crate::link::{LinkError, Reply};
use crate::{ControlplaneError, Node};
use precursor_config::limits::PARTITIONS_PER_TOPIC_MAX;
use precursor_protocol::command::Command;
use precursor_protocol::frame::{is_valid_topic_name, TOPIC_NAME_BYTES_MAX};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

/// Permissions of the admin socket: owner and group may administer the broker.
pub const ADMIN_SOCKET_MODE: u32 = 0o660;
/// After a create or delete, how long the answer waits for the counters file to show the
/// change (so that a `topic list` right after sees it), in milliseconds.
pub const TOPIC_VISIBLE_WAIT_MS: u64 = 2_000;
/// How often that wait looks, in milliseconds.
const TOPIC_VISIBLE_POLL_MS: u64 = 10;
/// Requests one connection may send, at most (bounded loop; the CLI sends one).
const REQUESTS_PER_CONNECTION_MAX: usize = 10_000;

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
                tokio::spawn(connection(stream, node.clone()));
            }
            Err(error) => {
                eprintln!("precursor-controlplane: admin socket accept: {error}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn connection(stream: UnixStream, node: Arc<Node>) {
    let (read, mut write) = stream.into_split();
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
        } => create_topic(node, name, partitions, retention_ms, retention_bytes).await,
        Request::DeleteTopic { name } => {
            let counters = match check_known(node, &name) {
                Ok(counters) => counters,
                Err(response) => return response,
            };
            drop(counters);
            match node.link.call(Command::DeleteTopic { name: &name }).await {
                Ok(Reply::Done) => {
                    wait_for_topic(node, &name, false).await;
                    Response::Ok
                }
                other => failure(other),
            }
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

async fn create_topic(
    node: &Node,
    name: String,
    partitions: u32,
    retention_ms: Option<u64>,
    retention_bytes: Option<u64>,
) -> Response {
    if let Err(response) = check_name(&name) {
        return response;
    }
    let partitions_max = u32::from(PARTITIONS_PER_TOPIC_MAX);
    if !(1..=partitions_max).contains(&partitions) {
        return Response::error(
            codes::INVALID_ARGUMENT,
            format!("partitions {partitions}: must be 1..={partitions_max}"),
        );
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
        replication: precursor_protocol::command::TopicReplication::default(),
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
