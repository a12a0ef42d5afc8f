//! Precursor through its Kafka gateway, driven by librdkafka (the `rdkafka` crate over
//! the librdkafka it builds, statically linked): what an existing Kafka application gets
//! from Precursor without a line changed.
//!
//! - **Produce** ([`produce`]): one librdkafka producer per `--producers`, each on its own
//!   thread with its own connection, sends the harness's self-checking payloads to
//!   partition 0 of a fresh one-partition topic. The thread calls `rd_kafka_producev` and
//!   `rd_kafka_poll(0)` in a loop, as Kafka's own performance tools do; delivery reports
//!   (librdkafka's acknowledgment, after the broker's answer to the Produce request)
//!   arrive on the same thread, so nothing is shared or allocated per message. At most
//!   `--window` messages are un-acknowledged per producer. Latency is from the send (or,
//!   at a fixed `--rate`, from the intended send time: coordinated omission corrected) to
//!   the delivery report.
//! - **Consume** ([`consume`]): a librdkafka consumer assigned partition 0 from its start
//!   (no group: nothing to rebalance) reads and verifies every payload through
//!   [`crate::harness::run_consumers`], with `fetch.queue.backoff.ms` at 10 ms (librdkafka
//!   otherwise pauses fetching for 1 s whenever its local queue is full).
//!
//! Durability: `leader` is `acks=1` (the gateway answers once the data plane appended the
//! batch to the active segment), `durable` is `acks=all` with `enable.idempotence=true`
//! (the gateway answers once the batch is fdatasync'd; the data plane checks the
//! producer's sequence numbers): a Kafka user's two usual settings.
//!
//! What librdkafka is left to decide is left at its defaults (batching by `linger.ms` and
//! `batch.size`, five requests in flight per connection), except `--linger-ms`, which the
//! fixed-rate latency runs set to 0 as a latency-minded Kafka user would.

use crate::harness::{produce_result, run_consumers, ProduceParams, Subscriber, SystemLabel};
use crate::latency::{LatencyRecorder, Schedule};
use crate::peers::Durability;
use crate::result::RunResult;
use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use precursor_client::bench_payload;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

pub const SYSTEM: &str = "precursor-kafka";
/// How the result names the path: the Kafka protocol over loopback TCP to the gateway.
const TRANSPORT: &str = "kafka-tcp";
/// Longest wait for the TCP connection of the reachability check, in milliseconds.
const CONNECT_TIMEOUT_MS: u64 = 2_000;
/// Longest wait for an admin answer (create or delete a topic), in milliseconds.
const ADMIN_TIMEOUT_MS: u64 = 10_000;
/// How long a fresh topic may take to be created after the old one's deletion, in ms.
const TOPIC_RECREATE_MS: u64 = 10_000;
/// Sends between two polls for delivery reports (when the window is not full).
const POLL_EVERY: u64 = 64;
/// librdkafka's `fetch.queue.backoff.ms` for the bench consumer, in milliseconds.
const FETCH_QUEUE_BACKOFF_MS: u64 = 10;
/// Messages a consumer takes from librdkafka's queue per harness batch, at most.
const CONSUME_BATCH_MAX: usize = 4_096;

/// Where the gateway is and how the run is labelled.
pub struct Target {
    /// `host:port` of the gateway (librdkafka's `bootstrap.servers`).
    pub bootstrap: String,
    pub topic: String,
    pub durability: Durability,
    /// librdkafka's `linger.ms`; `None`: its default (5 ms).
    pub linger_ms: Option<u64>,
}

impl Target {
    fn label(&self) -> SystemLabel {
        let detail = match self.durability {
            Durability::Leader => {
                "Kafka gateway, acks=1: answered once appended to the active segment"
            }
            Durability::Durable => {
                "Kafka gateway, acks=all + enable.idempotence: answered once fdatasync'd"
            }
        };
        SystemLabel {
            system: SYSTEM,
            transport: TRANSPORT,
            durability: Some(self.durability.name().to_string()),
            durability_detail: Some(detail.to_string()),
        }
    }

    fn producer_config(&self, params: &ProduceParams) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.bootstrap)
            .set("client.id", "precursor-bench")
            // The window bounds the queue; librdkafka's own bound must not be the lower one.
            .set(
                "queue.buffering.max.messages",
                params.window.max(1_000).to_string(),
            )
            .set(
                "message.timeout.ms",
                params.ack_timeout.as_millis().max(1).to_string(),
            );
        match self.durability {
            Durability::Leader => config.set("acks", "1"),
            Durability::Durable => config.set("acks", "all").set("enable.idempotence", "true"),
        };
        if let Some(linger) = self.linger_ms {
            config.set("linger.ms", linger.to_string());
        }
        config
    }
}

/// What one producer's delivery reports added up to. The reports arrive on the thread
/// that polls, the producer's own: the lock is never contended.
#[derive(Default)]
struct Deliveries {
    recorder: LatencyRecorder,
    acknowledged: u64,
    errors: u64,
    first_error: Option<String>,
}

/// The delivery callback: each message's opaque is the time latency is measured from, in
/// nanoseconds since the producer's epoch.
struct DeliveryCounter {
    epoch: Instant,
    deliveries: Mutex<Deliveries>,
    /// Reports so far, acknowledged or failed (read by the sending loop without the lock).
    settled: AtomicU64,
}

impl ClientContext for DeliveryCounter {}

impl ProducerContext for DeliveryCounter {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, from_ns: usize) {
        let now_ns = self.epoch.elapsed().as_nanos() as u64;
        let mut deliveries = self.deliveries.lock().expect("delivery lock");
        self.settled.fetch_add(1, Ordering::Relaxed);
        match result {
            Ok(_) => {
                deliveries.acknowledged += 1;
                deliveries
                    .recorder
                    .record_ns(now_ns.saturating_sub(from_ns as u64));
            }
            Err((error, _)) => {
                deliveries.errors += 1;
                deliveries
                    .first_error
                    .get_or_insert_with(|| error.to_string());
            }
        }
    }
}

impl DeliveryCounter {
    fn settled(&self) -> u64 {
        self.settled.load(Ordering::Relaxed)
    }
}

type KafkaProducer = BaseProducer<DeliveryCounter>;

fn connect_producer(target: &Target, params: &ProduceParams) -> Result<KafkaProducer> {
    let context = DeliveryCounter {
        epoch: Instant::now(),
        deliveries: Mutex::new(Deliveries::default()),
        settled: AtomicU64::new(0),
    };
    target
        .producer_config(params)
        .create_with_context(context)
        .with_context(|| {
            format!(
                "cannot create a librdkafka producer for {}",
                target.bootstrap
            )
        })
}

/// Sends messages `first_seq..first_seq + count` and waits until each has its delivery
/// report (or `ack_timeout` passed since the last send). Returns the reports.
fn send_all(
    producer: &KafkaProducer,
    topic: &str,
    first_seq: u64,
    count: u64,
    params: &ProduceParams,
    schedule: Option<Schedule>,
) -> Result<Deliveries> {
    let context = producer.context();
    let epoch = context.epoch;
    let settled_before = context.settled();
    let mut payload = Vec::with_capacity(params.size);
    for i in 0..count {
        let due = schedule.map(|s| s.intended(i));
        // Reports are taken every POLL_EVERY sends (a poll reads the clock several times,
        // and librdkafka hands over reports in batches anyway), and while waiting for a
        // free slot in the window or the intended time.
        if i % POLL_EVERY == 0 {
            producer.poll(Duration::ZERO);
        }
        loop {
            let in_flight = i - (context.settled() - settled_before);
            if in_flight < params.window && due.is_none_or(|t| Instant::now() >= t) {
                break;
            }
            producer.poll(Duration::ZERO);
            // librdkafka's threads (the broker thread writes the socket) may share this
            // core: give it to them rather than spin them out.
            std::thread::yield_now();
        }
        bench_payload::encode(first_seq + i, params.size, &mut payload);
        let from = due.unwrap_or_else(Instant::now);
        let from_ns = from.saturating_duration_since(epoch).as_nanos() as usize;
        let mut record = BaseRecord::<(), [u8], usize>::with_opaque_to(topic, from_ns)
            .partition(0)
            .payload(payload.as_slice());
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    // librdkafka's own queue is full: let it deliver, then try again.
                    record = back;
                    producer.poll(Duration::from_micros(100));
                }
                Err((error, _)) => bail!("cannot send message {}: {error}", first_seq + i),
            }
        }
    }
    let deadline = Instant::now() + params.ack_timeout;
    while context.settled() - settled_before < count && Instant::now() < deadline {
        producer.poll(Duration::from_millis(1));
    }
    let mut deliveries = context.deliveries.lock().expect("delivery lock");
    let missing = count.saturating_sub(deliveries.acknowledged + deliveries.errors);
    if missing > 0 {
        deliveries.errors += missing;
        deliveries.first_error.get_or_insert_with(|| {
            format!(
                "{missing} delivery reports missing after {} ms",
                params.ack_timeout.as_millis()
            )
        });
    }
    Ok(std::mem::take(&mut *deliveries))
}

/// One producer thread: warm-up (unmeasured, sequence numbers from 0), the common start,
/// then its share of the measured messages.
fn producer_thread(
    target: &Target,
    params: &ProduceParams,
    k: u32,
    start: &Barrier,
    started: &Mutex<Option<Instant>>,
) -> Result<Deliveries> {
    let producer = connect_producer(target, params)?;
    let warm = send_all(&producer, &target.topic, 0, params.warmup, params, None)?;
    if warm.errors > 0 {
        bail!(
            "warm-up failed: {} errors, first: {}",
            warm.errors,
            warm.first_error.unwrap_or_default()
        );
    }
    start.wait();
    let start_time = {
        let mut started = started.lock().expect("start lock");
        *started.get_or_insert_with(Instant::now)
    };
    let schedule = params
        .rate
        .map(|rate| Schedule::for_producer(start_time, rate, k, params.producers));
    send_all(
        &producer,
        &target.topic,
        params.warmup,
        params.share(k),
        params,
        schedule,
    )
}

/// Fails at once, clearly, when nothing listens at `bootstrap` (librdkafka would retry
/// until its request timeout and then report a timeout).
fn check_reachable(bootstrap: &str) -> Result<()> {
    let addresses: Vec<SocketAddr> = bootstrap
        .to_socket_addrs()
        .with_context(|| format!("--bootstrap {bootstrap:?}: expected host:port"))?
        .collect();
    let mut last_error = None;
    for address in addresses {
        match TcpStream::connect_timeout(&address, Duration::from_millis(CONNECT_TIMEOUT_MS)) {
            Ok(_) => return Ok(()),
            Err(error) => last_error = Some(error),
        }
    }
    match last_error {
        Some(error) => Err(error).with_context(|| {
            format!("cannot connect to the Kafka gateway at {bootstrap}: is it running ([gateway] listen)?")
        }),
        None => bail!("--bootstrap {bootstrap:?} resolves to no address"),
    }
}

/// Creates `topic` with one partition, deleting an older one of that name first.
async fn fresh_topic(bootstrap: &str, topic: &str) -> Result<()> {
    check_reachable(bootstrap)?;
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .with_context(|| format!("cannot create a librdkafka admin client for {bootstrap}"))?;
    let options =
        AdminOptions::new().request_timeout(Some(Duration::from_millis(ADMIN_TIMEOUT_MS)));
    let deleted = admin
        .delete_topics(&[topic], &options)
        .await
        .with_context(|| format!("DeleteTopics at {bootstrap}: is the gateway running?"))?;
    for outcome in deleted {
        match outcome {
            Ok(_) | Err((_, RDKafkaErrorCode::UnknownTopicOrPartition)) => {}
            Err((name, code)) => bail!("cannot delete topic {name:?}: {code}"),
        }
    }
    let new_topic = NewTopic::new(topic, 1, TopicReplication::Fixed(1));
    let deadline = Instant::now() + Duration::from_millis(TOPIC_RECREATE_MS);
    loop {
        let created = admin
            .create_topics([&new_topic], &options)
            .await
            .with_context(|| format!("CreateTopics at {bootstrap}"))?;
        match created.into_iter().next() {
            Some(Ok(_)) => return Ok(()),
            // The old topic's deletion is still under way.
            Some(Err((_, RDKafkaErrorCode::TopicAlreadyExists))) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Some(Err((name, code))) => bail!("cannot create topic {name:?}: {code}"),
            None => bail!("CreateTopics answered nothing for {topic:?}"),
        }
    }
}

/// Produces to a fresh `target.topic` and reports throughput and latency.
pub async fn produce(target: &Target, params: &ProduceParams) -> Result<RunResult> {
    params.check()?;
    fresh_topic(&target.bootstrap, &target.topic).await?;
    let label = target.label();
    let start = Arc::new(Barrier::new(params.producers as usize));
    let started = Arc::new(Mutex::new(None));
    let outcomes: Vec<Result<Deliveries>> = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..params.producers)
            .map(|k| {
                let (start, started) = (start.clone(), started.clone());
                std::thread::Builder::new()
                    .name(format!("kafka-producer-{k}"))
                    .spawn_scoped(scope, move || {
                        producer_thread(target, params, k, &start, &started)
                    })
                    .expect("spawn a producer thread")
            })
            .collect();
        threads
            .into_iter()
            .map(|t| {
                t.join()
                    .unwrap_or_else(|_| Err(anyhow!("a producer thread panicked")))
            })
            .collect()
    });
    let start_time = started
        .lock()
        .expect("start lock")
        .unwrap_or_else(Instant::now);
    let seconds = start_time.elapsed().as_secs_f64();
    let mut recorder = LatencyRecorder::new();
    let (mut acknowledged, mut errors) = (0, 0);
    for outcome in outcomes {
        let deliveries = outcome?;
        recorder.merge(&deliveries.recorder);
        acknowledged += deliveries.acknowledged;
        errors += deliveries.errors;
        if let Some(first) = deliveries.first_error {
            eprintln!("precursor-bench: {SYSTEM}: first error: {first}");
        }
    }
    Ok(produce_result(
        &label,
        params,
        &recorder,
        acknowledged,
        errors,
        seconds,
    ))
}

struct KafkaSubscriber {
    consumer: BaseConsumer,
    /// The message taken by [`KafkaSubscriber::ready`] before the clock started.
    first: Option<Bytes>,
}

impl KafkaSubscriber {
    /// Waits (at most `limit`) for the first message, kept for the first batch: a
    /// consumer in a group finds its coordinator before it fetches (about half a second
    /// with librdkafka 2.12, at any message count), set-up the other systems' consumers
    /// also finish before the clock starts.
    fn ready(&mut self, limit: Duration) -> Result<()> {
        let deadline = Instant::now() + limit;
        while self.first.is_none() && Instant::now() < deadline {
            if let Some(message) = self.consumer.poll(Duration::from_millis(10)) {
                let message = message.context("librdkafka consumer")?;
                self.first = Some(Bytes::copy_from_slice(
                    message.payload().unwrap_or_default(),
                ));
            }
        }
        Ok(())
    }
}

impl Subscriber for KafkaSubscriber {
    async fn next_batch(&mut self, out: &mut Vec<Bytes>, wait: Duration) -> Result<()> {
        let mut timeout = wait;
        if let Some(first) = self.first.take() {
            out.push(first);
            timeout = Duration::ZERO;
        }
        while out.len() < CONSUME_BATCH_MAX {
            match self.consumer.poll(timeout) {
                None => break,
                Some(Err(error)) => return Err(error).context("librdkafka consumer"),
                Some(Ok(message)) => {
                    out.push(Bytes::copy_from_slice(
                        message.payload().unwrap_or_default(),
                    ));
                }
            }
            timeout = Duration::ZERO;
        }
        Ok(())
    }
}

/// `consumers` consumers each read `messages` from the start of partition 0 of
/// `target.topic` (written by [`produce`] with one producer), verifying every payload.
pub async fn consume(
    target: &Target,
    messages: u64,
    consumers: u32,
    idle_timeout: Duration,
) -> Result<RunResult> {
    let label = target.label();
    check_reachable(&target.bootstrap)?;
    let mut subscribers = Vec::with_capacity(consumers as usize);
    for _ in 0..consumers {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &target.bootstrap)
            .set("client.id", "precursor-bench")
            .set("group.id", "precursor-bench")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            // Once its local queue is full librdkafka stops fetching for this long (1 s by
            // default): the verifying reader drains slower than a local fetch fills, so at
            // the default the figure measures those pauses, not the path.
            .set("fetch.queue.backoff.ms", FETCH_QUEUE_BACKOFF_MS.to_string())
            .create()
            .with_context(|| {
                format!(
                    "cannot create a librdkafka consumer for {}",
                    target.bootstrap
                )
            })?;
        let mut assignment = TopicPartitionList::new();
        assignment
            .add_partition_offset(&target.topic, 0, Offset::Beginning)
            .context("partition 0 from the beginning")?;
        consumer
            .assign(&assignment)
            .with_context(|| format!("cannot assign {:?} partition 0", target.topic))?;
        let mut subscriber = KafkaSubscriber {
            consumer,
            first: None,
        };
        subscriber.ready(idle_timeout)?;
        subscribers.push(subscriber);
    }
    let mut result = run_consumers(&label, &mut subscribers, messages, idle_timeout).await?;
    result.durability_detail = Some("Kafka gateway Fetch (long polling)".into());
    Ok(result)
}
