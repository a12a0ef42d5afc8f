//! NATS JetStream through the `async-nats` client, against Debian's `nats-server` 2.9
//! started with `-js` and a file-storage directory (bench/compare.sh starts it).
//!
//! - Stream: one subject, file storage, one replica, no limits; created fresh per run.
//! - Produce: `jetstream.publish` (a JetStream publish waits for a PubAck from the server
//!   once the message is stored); up to `--window` PubAcks outstanding per producer.
//! - Consume: an ordered pull consumer (ephemeral, no acks, flow-controlled pulls), the
//!   fastest way the client offers to read a stream in order.
//!
//! Durability, what the server does before it sends the PubAck (2.9.10's filestore,
//! checked in its source and with `nats-server -t`):
//! - `leader`: the server's only setting. Streams "flush in place": each message is
//!   `write(2)`n to its block file before the PubAck (it survives a kill -9 of the
//!   server), and the block files are fsync'd every 2 minutes (hard-coded in 2.9;
//!   `sync_interval` only appeared in 2.10 and 2.9 refuses the key).
//! - `durable`: the store directory carries the ext4 `S` attribute (`chattr +S`, inherited
//!   by every file the server creates in it), which makes every `write(2)` synchronous —
//!   the data and metadata on disk before the call returns, like `O_SYNC`. As each message
//!   is written in place before its PubAck, every acknowledged message is on disk: what
//!   2.10's `sync_interval: always` gives, one synchronous write per message (no group
//!   commit). This adapter refuses to label a run `durable` unless the store directory
//!   and every directory below it have the attribute (`chattr +S` on the empty directory
//!   before the server starts, as bench/compare.sh does).

use crate::harness::{
    run_consumers, run_producers, ProduceParams, Publisher, Subscriber, SystemLabel,
};
use crate::peers::Durability;
use crate::result::RunResult;
use anyhow::{bail, Context, Result};
use async_nats::jetstream::{self, consumer::pull, stream};
use bytes::Bytes;
use futures::{FutureExt, StreamExt};
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::time::Duration;

pub const SYSTEM: &str = "nats-jetstream";
/// How long a PubAck or an API answer may take before the client gives up.
const REQUEST_TIMEOUT_MS: u64 = 30_000;

/// Where the server is and how the run is labelled.
pub struct Target {
    pub url: String,
    pub stream: String,
    pub durability: Durability,
    /// The server's JetStream store directory; checked for the `S` attribute when durable.
    pub store_dir: Option<std::path::PathBuf>,
}

impl Target {
    fn label(&self) -> Result<SystemLabel> {
        let detail = match self.durability {
            Durability::Leader => {
                "nats-server 2.9 file store: message write(2) before the PubAck, fsync every 2 min (fixed in 2.9)".to_string()
            }
            Durability::Durable => {
                let dir = self
                    .store_dir
                    .as_deref()
                    .context("--durability durable needs --store-dir (checked for the S attribute)")?;
                check_synchronous_dir(dir)?;
                "nats-server 2.9 file store in a chattr +S directory: every write(2) synchronous before the PubAck".to_string()
            }
        };
        Ok(SystemLabel {
            system: SYSTEM,
            transport: "tcp",
            durability: Some(self.durability.name().to_string()),
            durability_detail: Some(detail),
        })
    }
}

/// Refuses a store directory unless it and every directory below it carry the ext4 `S`
/// (synchronous updates) attribute: files inherit it from the directory they are created
/// in, so a subdirectory made before `chattr +S` would hold ordinary, asynchronous files.
pub fn check_synchronous_dir(dir: &Path) -> Result<()> {
    let mut dirs = vec![dir.to_path_buf()];
    let mut next = 0;
    while next < dirs.len() {
        let entries = std::fs::read_dir(&dirs[next])
            .with_context(|| format!("cannot read {}", dirs[next].display()))?;
        for entry in entries {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                dirs.push(entry.path());
            }
        }
        next += 1;
    }
    let output = std::process::Command::new("lsattr")
        .arg("-d")
        .args(&dirs)
        .output()
        .context("cannot run lsattr (e2fsprogs) to check the store directory")?;
    if !output.status.success() {
        bail!(
            "lsattr -d {}: {}",
            dir.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let text = String::from_utf8_lossy(&output.stdout);
    for line in text.lines() {
        let (flags, path) = line.split_once(' ').unwrap_or((line, ""));
        if !flags.contains('S') {
            bail!(
                "{} lacks the S attribute (chattr +S on the empty store directory before the server starts): the server would not write synchronously, so the run is not durable",
                path.trim()
            );
        }
    }
    Ok(())
}

async fn connect(url: &str) -> Result<jetstream::Context> {
    let client = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(5))
        .connect(url)
        .await
        .with_context(|| format!("cannot connect to nats-server at {url}: is it running?"))?;
    let mut context = jetstream::new(client);
    context.set_timeout(Duration::from_millis(REQUEST_TIMEOUT_MS));
    Ok(context)
}

/// Deletes the stream if it is there and creates it empty.
async fn fresh_stream(context: &jetstream::Context, name: &str) -> Result<()> {
    let _ = context.delete_stream(name).await;
    context
        .create_stream(stream::Config {
            name: name.to_string(),
            subjects: vec![name.to_string()],
            storage: stream::StorageType::File,
            num_replicas: 1,
            ..Default::default()
        })
        .await
        .with_context(|| format!("cannot create stream {name:?} (is JetStream enabled: -js?)"))?;
    Ok(())
}

struct NatsPublisher {
    context: jetstream::Context,
    subject: String,
}

impl Publisher for NatsPublisher {
    type Ack = Pin<Box<dyn Future<Output = Result<()>> + Send>>;

    async fn publish(&mut self, payload: Bytes) -> Result<Self::Ack> {
        let ack = self
            .context
            .publish(self.subject.clone(), payload)
            .await
            .context("publish")?;
        Ok(Box::pin(async move {
            ack.await.map(|_| ()).map_err(anyhow::Error::from)
        }))
    }
}

pub async fn produce(target: &Target, params: &ProduceParams) -> Result<RunResult> {
    let label = target.label()?;
    params.check()?;
    fresh_stream(&connect(&target.url).await?, &target.stream).await?;
    run_producers(&label, params, |_| async {
        Ok(NatsPublisher {
            context: connect(&target.url).await?,
            subject: target.stream.clone(),
        })
    })
    .await
}

struct NatsSubscriber {
    messages: pull::Ordered,
}

impl Subscriber for NatsSubscriber {
    async fn next_batch(&mut self, out: &mut Vec<Bytes>, wait: Duration) -> Result<()> {
        let first = match tokio::time::timeout(wait, self.messages.next()).await {
            Err(_) | Ok(None) => return Ok(()),
            Ok(Some(message)) => message,
        };
        out.push(first.context("ordered consumer")?.message.payload);
        while let Some(Some(message)) = self.messages.next().now_or_never() {
            out.push(message.context("ordered consumer")?.message.payload);
        }
        Ok(())
    }
}

/// `consumers` ordered consumers each read `messages` from the start of the stream
/// (written by `produce` with one producer).
pub async fn consume(
    target: &Target,
    messages: u64,
    consumers: u32,
    idle_timeout: Duration,
) -> Result<RunResult> {
    let label = target.label()?;
    let mut subscribers = Vec::with_capacity(consumers as usize);
    for _ in 0..consumers {
        let context = connect(&target.url).await?;
        let stream = context
            .get_stream(&target.stream)
            .await
            .with_context(|| format!("stream {:?}: produce to it first", target.stream))?;
        let consumer = stream
            .create_consumer(pull::OrderedConfig {
                deliver_policy: jetstream::consumer::DeliverPolicy::All,
                ..Default::default()
            })
            .await
            .context("cannot create an ordered consumer")?;
        subscribers.push(NatsSubscriber {
            messages: consumer
                .messages()
                .await
                .context("ordered consumer messages")?,
        });
    }
    run_consumers(&label, &mut subscribers, messages, idle_timeout).await
}
