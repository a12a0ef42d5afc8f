//! Redis Streams through the `redis` crate (tokio, multiplexed connection), against
//! Debian's `redis-server` 7.0 (bench/compare.sh starts it with its own port and dir).
//!
//! - Produce: `XADD stream * v PAYLOAD`, pipelined: each producer's XADDs queue for its
//!   pipeline task, which sends whatever is queued as one pipeline whenever one of its 32
//!   pipeline slots is free; up to `--window` XADDs un-answered per producer.
//! - Consume: `XREAD COUNT n BLOCK ms STREAMS stream last-id`, one connection, from `0-0`.
//!
//! Durability, what the server does before it answers an XADD (Redis 7.0, AOF on):
//! - `durable`: `appendonly yes` + `appendfsync always`: the command is appended to the
//!   AOF buffer, and before the event loop sends any reply it writes the buffer and
//!   fdatasyncs the AOF (once per event-loop iteration: a group commit of every command
//!   read in that iteration).
//! - `leader`: `appendonly yes` + `appendfsync everysec`: written to the AOF (page cache)
//!   before the reply, fdatasync'd once a second by a background thread. Precursor's
//!   acks=leader with the default `flush_interval_ms = 1000` also syncs once a second, but
//!   acknowledges from memory before the write.
//!
//! The adapter reads the server's `appendonly` and `appendfsync` (CONFIG GET) and refuses
//! a run whose label would not match them.

use crate::harness::{
    run_consumers, run_producers, ProduceParams, Publisher, Subscriber, SystemLabel,
};
use crate::peers::Durability;
use crate::result::RunResult;
use anyhow::{bail, Context, Result};
use bytes::Bytes;
use redis::aio::MultiplexedConnection;
use redis::Value;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, Semaphore};

pub const SYSTEM: &str = "redis-streams";
/// Most entries one XREAD returns.
const XREAD_COUNT_MAX: u32 = 4_096;

pub struct Target {
    pub url: String,
    pub stream: String,
    pub durability: Durability,
}

async fn connect(url: &str) -> Result<MultiplexedConnection> {
    let client = redis::Client::open(url).with_context(|| format!("bad redis url {url:?}"))?;
    client
        .get_multiplexed_async_connection()
        .await
        .with_context(|| format!("cannot connect to redis-server at {url}: is it running?"))
}

async fn config_get(connection: &mut MultiplexedConnection, key: &str) -> Result<String> {
    let pairs: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg(key)
        .query_async(connection)
        .await
        .with_context(|| format!("CONFIG GET {key}"))?;
    match pairs.as_slice() {
        [name, value] if name == key => Ok(value.clone()),
        _ => bail!("CONFIG GET {key}: unexpected answer {pairs:?}"),
    }
}

/// The label of a run against this server, after checking its persistence settings match
/// the durability asked for.
async fn label(
    connection: &mut MultiplexedConnection,
    durability: Durability,
) -> Result<SystemLabel> {
    let appendonly = config_get(connection, "appendonly").await?;
    let appendfsync = config_get(connection, "appendfsync").await?;
    let detail = format!("appendonly {appendonly}, appendfsync {appendfsync}");
    let matches = match durability {
        Durability::Durable => appendonly == "yes" && appendfsync == "always",
        Durability::Leader => {
            appendonly == "yes" && (appendfsync == "everysec" || appendfsync == "no")
        }
    };
    if !matches {
        bail!(
            "redis-server has {detail}: not what --durability {} compares (durable: appendonly yes + appendfsync always; leader: appendonly yes + appendfsync everysec or no)",
            durability.name()
        );
    }
    Ok(SystemLabel {
        system: SYSTEM,
        transport: "tcp",
        durability: Some(durability.name().to_string()),
        durability_detail: Some(detail),
    })
}

/// Most XADD pipelines one producer keeps on the wire. The multiplexed connection queues
/// at most 50 requests before it makes a sender wait, and a waiting request can be
/// overtaken (measured: entries out of order with 256 single XADDs in flight), so the
/// pipelines in flight stay below that and the depth comes from batching.
const PIPELINES_IN_FLIGHT_MAX: usize = 32;
/// Most XADDs in one pipeline.
const PIPELINE_COMMANDS_MAX: usize = 1_024;

type AckSender = oneshot::Sender<Result<()>>;

/// Queues XADDs for the producer's pipeline task: whatever is queued when a pipeline slot
/// frees up goes out as one pipeline (adaptive batching, as the NATS client and
/// Precursor's producer batch what is queued), in order.
struct RedisPublisher {
    queue: mpsc::UnboundedSender<(Bytes, AckSender)>,
}

impl RedisPublisher {
    fn start(connection: MultiplexedConnection, stream: String) -> RedisPublisher {
        let (queue, pending) = mpsc::unbounded_channel();
        tokio::spawn(pipeline_task(connection, stream, pending));
        RedisPublisher { queue }
    }
}

async fn pipeline_task(
    connection: MultiplexedConnection,
    stream: String,
    mut pending: mpsc::UnboundedReceiver<(Bytes, AckSender)>,
) {
    let slots = Arc::new(Semaphore::new(PIPELINES_IN_FLIGHT_MAX));
    while let Some(first) = pending.recv().await {
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < PIPELINE_COMMANDS_MAX {
            match pending.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let mut pipe = redis::pipe();
        for (payload, _) in &batch {
            pipe.cmd("XADD")
                .arg(&stream)
                .arg("*")
                .arg("v")
                .arg(payload.as_ref());
        }
        let mut connection = connection.clone();
        // Spawned tasks first run in spawn order, and each hands its pipeline to the
        // connection on that first poll: pipelines go out in order.
        tokio::spawn(async move {
            let answer: redis::RedisResult<Vec<Value>> = pipe.query_async(&mut connection).await;
            drop(slot);
            match answer {
                Ok(ids) if ids.len() == batch.len() => {
                    for ((_, ack), id) in batch.into_iter().zip(ids) {
                        let _ = ack.send(match id {
                            Value::BulkString(_) | Value::SimpleString(_) => Ok(()),
                            other => {
                                Err(anyhow::anyhow!("XADD answered {other:?}, not an entry id"))
                            }
                        });
                    }
                }
                Ok(ids) => {
                    let n = batch.len();
                    for (_, ack) in batch {
                        let _ = ack.send(Err(anyhow::anyhow!(
                            "a pipeline of {n} XADDs got {} answers",
                            ids.len()
                        )));
                    }
                }
                Err(error) => {
                    for (_, ack) in batch {
                        let _ = ack.send(Err(anyhow::anyhow!("XADD pipeline: {error}")));
                    }
                }
            }
        });
    }
}

impl Publisher for RedisPublisher {
    type Ack = Pin<Box<dyn Future<Output = Result<()>> + Send>>;

    async fn publish(&mut self, payload: Bytes) -> Result<Self::Ack> {
        let (ack, answer) = oneshot::channel();
        self.queue
            .send((payload, ack))
            .map_err(|_| anyhow::anyhow!("the XADD pipeline task has stopped"))?;
        Ok(Box::pin(async move {
            answer
                .await
                .map_err(|_| anyhow::anyhow!("the XADD pipeline task dropped an acknowledgment"))?
        }))
    }
}

pub async fn produce(target: &Target, params: &ProduceParams) -> Result<RunResult> {
    params.check()?;
    let mut connection = connect(&target.url).await?;
    let label = label(&mut connection, target.durability).await?;
    let _: Value = redis::cmd("DEL")
        .arg(&target.stream)
        .query_async(&mut connection)
        .await
        .context("DEL")?;
    run_producers(&label, params, |_| async {
        Ok(RedisPublisher::start(
            connect(&target.url).await?,
            target.stream.clone(),
        ))
    })
    .await
}

struct RedisSubscriber {
    connection: MultiplexedConnection,
    stream: String,
    last_id: String,
}

impl Subscriber for RedisSubscriber {
    async fn next_batch(&mut self, out: &mut Vec<Bytes>, wait: Duration) -> Result<()> {
        let reply: Value = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(XREAD_COUNT_MAX)
            .arg("BLOCK")
            .arg(wait.as_millis().max(1) as u64)
            .arg("STREAMS")
            .arg(&self.stream)
            .arg(&self.last_id)
            .query_async(&mut self.connection)
            .await
            .context("XREAD")?;
        if let Some(last) = stream_entries(reply, out)? {
            self.last_id = last;
        }
        Ok(())
    }
}

/// Appends the `v` field of each entry of an XREAD reply (one stream) to `out`; returns the
/// last entry id. Nil (nothing arrived) is an empty batch.
fn stream_entries(reply: Value, out: &mut Vec<Bytes>) -> Result<Option<String>> {
    let streams = match reply {
        Value::Nil => return Ok(None),
        Value::Array(streams) => streams,
        Value::Map(pairs) => pairs
            .into_iter()
            .map(|(k, v)| Value::Array(vec![k, v]))
            .collect(),
        other => bail!("XREAD answered {other:?}"),
    };
    let mut last = None;
    for stream in streams {
        let Value::Array(mut name_entries) = stream else {
            bail!("XREAD: a stream is not [name, entries]");
        };
        let Some(Value::Array(entries)) = name_entries.pop() else {
            bail!("XREAD: a stream has no entry list");
        };
        for entry in entries {
            let Value::Array(mut id_fields) = entry else {
                bail!("XREAD: an entry is not [id, fields]");
            };
            let (Some(Value::Array(mut fields)), Some(id)) = (id_fields.pop(), id_fields.pop())
            else {
                bail!("XREAD: an entry lacks its id or fields");
            };
            let id = match id {
                Value::BulkString(bytes) => String::from_utf8(bytes).context("XREAD: entry id")?,
                Value::SimpleString(text) => text,
                other => bail!("XREAD: entry id {other:?}"),
            };
            match (fields.pop(), fields.pop()) {
                (Some(Value::BulkString(value)), Some(_field)) => out.push(Bytes::from(value)),
                _ => bail!("XREAD: entry {id} has no value field"),
            }
            last = Some(id);
        }
    }
    Ok(last)
}

/// `consumers` connections each read `messages` from the start of the stream (written by
/// `produce` with one producer).
pub async fn consume(
    target: &Target,
    messages: u64,
    consumers: u32,
    idle_timeout: Duration,
) -> Result<RunResult> {
    let mut connection = connect(&target.url).await?;
    let label = label(&mut connection, target.durability).await?;
    let mut subscribers = Vec::with_capacity(consumers as usize);
    for _ in 0..consumers {
        subscribers.push(RedisSubscriber {
            connection: connect(&target.url).await?,
            stream: target.stream.clone(),
            last_id: "0-0".to_string(),
        });
    }
    run_consumers(&label, &mut subscribers, messages, idle_timeout).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, value: &[u8]) -> Value {
        Value::Array(vec![
            Value::BulkString(id.as_bytes().to_vec()),
            Value::Array(vec![
                Value::BulkString(b"v".to_vec()),
                Value::BulkString(value.to_vec()),
            ]),
        ])
    }

    #[test]
    fn reads_the_values_and_last_id_of_an_xread_reply() {
        let reply = Value::Array(vec![Value::Array(vec![
            Value::BulkString(b"s".to_vec()),
            Value::Array(vec![entry("1-0", b"a"), entry("1-1", b"bc")]),
        ])]);
        let mut out = Vec::new();
        assert_eq!(
            stream_entries(reply, &mut out).unwrap().as_deref(),
            Some("1-1")
        );
        assert_eq!(
            out,
            vec![Bytes::from_static(b"a"), Bytes::from_static(b"bc")]
        );
        assert_eq!(stream_entries(Value::Nil, &mut out).unwrap(), None);
    }

    #[test]
    fn refuses_a_malformed_xread_reply() {
        let mut out = Vec::new();
        assert!(stream_entries(Value::Int(3), &mut out).is_err());
        let no_value = Value::Array(vec![Value::Array(vec![
            Value::BulkString(b"s".to_vec()),
            Value::Array(vec![Value::Array(vec![
                Value::BulkString(b"1-0".to_vec()),
                Value::Array(vec![]),
            ])]),
        ])]);
        let error = stream_entries(no_value, &mut out).unwrap_err().to_string();
        assert!(error.contains("no value field"), "{error}");
    }
}
