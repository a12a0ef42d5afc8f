//! The harness every peer adapter is driven by: the same payloads, windows, fixed-rate
//! schedule, latency recording and verification for every system.
//!
//! - **Produce** ([`run_producers`]): `producers` clients, each with its own connection,
//!   send self-checking payloads (`precursor_client::bench_payload`: sequence number +
//!   CRC32C, the same bytes Precursor's own bench sends) to one stream. Each keeps up to
//!   `window` messages un-acknowledged (a pipeline). As fast as possible, latency is from
//!   each send to its ack; at a fixed `rate`, from each message's intended send time to its
//!   ack (coordinated omission corrected, see [`crate::latency`]). Warm-up messages go
//!   first, unmeasured.
//! - **Consume** ([`run_consumer`]): reads `messages` from the start of a stream one producer
//!   wrote and verifies every payload: intact, once, in order.
//!
//! Adapters implement [`Publisher`] and [`Subscriber`]; the loop is one task per client on
//! a single-threaded tokio runtime (the client's core), which spins between sends: the
//! same busy client Precursor's bench is.

use crate::latency::{LatencyRecorder, Schedule};
use crate::result::RunResult;
use anyhow::{bail, Result};
use bytes::Bytes;
use futures::stream::{FuturesOrdered, StreamExt};
use futures::FutureExt;
use precursor_client::bench_payload::{self, Verifier};
use std::future::Future;
use std::time::{Duration, Instant};

/// Most messages one producer keeps un-acknowledged.
pub const WINDOW_MAX: u64 = 65_536;
/// Most producers or consumers in one run.
pub const CLIENTS_MAX: u32 = 64;
/// Largest message, in bytes.
pub const SIZE_BYTES_MAX: usize = 1 << 20;

/// One client's way to publish: `publish` hands a message to the client (sending it or
/// queueing it for the connection) and returns the acknowledgment to wait for.
pub trait Publisher {
    type Ack: Future<Output = Result<()>>;
    fn publish(&mut self, payload: Bytes) -> impl Future<Output = Result<Self::Ack>>;
}

/// One client's way to read a stream from its start, a batch at a time.
pub trait Subscriber {
    /// Appends the next messages' payloads to `out` (none when nothing arrived in `wait`).
    fn next_batch(
        &mut self,
        out: &mut Vec<Bytes>,
        wait: Duration,
    ) -> impl Future<Output = Result<()>>;
}

/// What a produce run is asked to do.
#[derive(Clone, Debug)]
pub struct ProduceParams {
    /// Measured messages over all producers.
    pub messages: u64,
    pub size: usize,
    pub producers: u32,
    pub window: u64,
    /// Offered messages/s over all producers; `None`: as fast as the window allows.
    pub rate: Option<f64>,
    /// Unmeasured messages each producer sends first.
    pub warmup: u64,
    /// How long to wait for the last acknowledgments before counting them as errors.
    pub ack_timeout: Duration,
}

impl ProduceParams {
    pub fn check(&self) -> Result<()> {
        if self.messages == 0 {
            bail!("--messages must be at least 1");
        }
        if !(bench_payload::PAYLOAD_BYTES_MIN..=SIZE_BYTES_MAX).contains(&self.size) {
            bail!(
                "--size {}: must be {}..={SIZE_BYTES_MAX} bytes (sequence, checksum, length)",
                self.size,
                bench_payload::PAYLOAD_BYTES_MIN
            );
        }
        if !(1..=CLIENTS_MAX).contains(&self.producers) {
            bail!("--producers {}: must be 1..={CLIENTS_MAX}", self.producers);
        }
        if u64::from(self.producers) > self.messages {
            bail!(
                "--producers {} exceeds --messages {}",
                self.producers,
                self.messages
            );
        }
        if !(1..=WINDOW_MAX).contains(&self.window) {
            bail!("--window {}: must be 1..={WINDOW_MAX}", self.window);
        }
        if let Some(rate) = self.rate {
            if !(rate > 0.0 && rate <= crate::latency::RATE_MAX) {
                bail!(
                    "--rate {rate}: must be more than 0 and at most {}",
                    crate::latency::RATE_MAX
                );
            }
        }
        Ok(())
    }

    /// Messages producer `k` sends in the measured phase (the remainder goes to the first).
    pub fn share(&self, producer: u32) -> u64 {
        let base = self.messages / u64::from(self.producers);
        base + if producer == 0 {
            self.messages % u64::from(self.producers)
        } else {
            0
        }
    }
}

/// What one producer saw.
#[derive(Default)]
pub struct ProducerOutcome {
    pub recorder: LatencyRecorder,
    pub acknowledged: u64,
    pub errors: u64,
    pub first_error: Option<String>,
}

/// Sends `count` messages with sequence numbers from `first_seq` and waits for their acks.
/// `schedule`: the fixed-rate schedule (latency from intended times), or as fast as the
/// window allows (latency from the send).
pub async fn produce<P: Publisher>(
    publisher: &mut P,
    first_seq: u64,
    count: u64,
    size: usize,
    window: u64,
    schedule: Option<Schedule>,
    ack_timeout: Duration,
) -> Result<ProducerOutcome> {
    let mut outcome = ProducerOutcome::default();
    let mut in_flight = FuturesOrdered::new();
    let mut payload = Vec::with_capacity(size);
    for i in 0..count {
        let due = schedule.map(|s| s.intended(i));
        // Wait for the intended time and a free slot, taking acks meanwhile.
        loop {
            drain_ready(&mut in_flight, &mut outcome);
            let on_time = due.is_none_or(|t| Instant::now() >= t);
            if on_time && (in_flight.len() as u64) < window {
                break;
            }
            tokio::task::yield_now().await;
        }
        bench_payload::encode(first_seq + i, size, &mut payload);
        let sent = Instant::now();
        let from = due.unwrap_or(sent);
        let ack = publisher.publish(Bytes::copy_from_slice(&payload)).await;
        match ack {
            Ok(ack) => in_flight.push_back(async move {
                let result = ack.await;
                (result, from, Instant::now())
            }),
            Err(error) => outcome.fail(error),
        }
    }
    let deadline = tokio::time::Instant::now() + ack_timeout;
    while !in_flight.is_empty() {
        match tokio::time::timeout_at(deadline, in_flight.next()).await {
            Ok(Some(done)) => outcome.settle(done),
            Ok(None) => break,
            Err(_) => {
                let missing = in_flight.len() as u64;
                outcome.errors += missing;
                outcome.first_error.get_or_insert_with(|| {
                    format!(
                        "{missing} acknowledgments missing after {} ms",
                        ack_timeout.as_millis()
                    )
                });
                break;
            }
        }
    }
    Ok(outcome)
}

fn drain_ready<F>(in_flight: &mut FuturesOrdered<F>, outcome: &mut ProducerOutcome)
where
    F: Future<Output = (Result<()>, Instant, Instant)>,
{
    while let Some(Some(done)) = in_flight.next().now_or_never() {
        outcome.settle(done);
    }
}

impl ProducerOutcome {
    fn settle(&mut self, (result, from, completed): (Result<()>, Instant, Instant)) {
        match result {
            Ok(()) => {
                self.acknowledged += 1;
                self.recorder.record(from, completed);
            }
            Err(error) => self.fail(error),
        }
    }

    fn fail(&mut self, error: anyhow::Error) {
        self.errors += 1;
        self.first_error.get_or_insert_with(|| format!("{error:#}"));
    }
}

/// Describes the system under test for the result.
#[derive(Clone, Debug)]
pub struct SystemLabel {
    pub system: &'static str,
    pub transport: &'static str,
    pub durability: Option<String>,
    pub durability_detail: Option<String>,
}

/// Warms up and runs `params.producers` publishers (made by `connect`, one connection
/// each) against one stream, all measured from one common start.
pub async fn run_producers<P, C, Fut>(
    label: &SystemLabel,
    params: &ProduceParams,
    mut connect: C,
) -> Result<RunResult>
where
    P: Publisher,
    C: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<P>>,
{
    params.check()?;
    let mut publishers = Vec::with_capacity(params.producers as usize);
    for k in 0..params.producers {
        publishers.push(connect(k).await?);
    }
    // Warm-up: connections, server-side stream state, caches. Sequence numbers continue
    // into the measured phase, so a consumer of a one-producer stream sees 0, 1, 2, ...
    for publisher in publishers.iter_mut() {
        let warm = produce(
            publisher,
            0,
            params.warmup,
            params.size,
            params.window,
            None,
            params.ack_timeout,
        )
        .await?;
        if warm.errors > 0 {
            bail!(
                "warm-up failed: {} errors, first: {}",
                warm.errors,
                warm.first_error.unwrap_or_default()
            );
        }
    }
    let start = Instant::now();
    let runs = publishers.iter_mut().enumerate().map(|(k, publisher)| {
        let k = k as u32;
        let schedule = params
            .rate
            .map(|rate| Schedule::for_producer(start, rate, k, params.producers));
        produce(
            publisher,
            params.warmup,
            params.share(k),
            params.size,
            params.window,
            schedule,
            params.ack_timeout,
        )
    });
    let outcomes = futures::future::try_join_all(runs).await?;
    let seconds = start.elapsed().as_secs_f64();
    let mut recorder = LatencyRecorder::new();
    let mut errors = 0;
    let mut acknowledged = 0;
    for outcome in &outcomes {
        recorder.merge(&outcome.recorder);
        errors += outcome.errors;
        acknowledged += outcome.acknowledged;
        if let Some(first) = &outcome.first_error {
            eprintln!("precursor-bench: {}: first error: {first}", label.system);
        }
    }
    Ok(produce_result(
        label,
        params,
        &recorder,
        acknowledged,
        errors,
        seconds,
    ))
}

/// The result of a produce run: `acknowledged` messages with their latencies in
/// `recorder`, `errors` counted, over `seconds` from the common start. Messages neither
/// acknowledged nor failed count as errors too.
pub fn produce_result(
    label: &SystemLabel,
    params: &ProduceParams,
    recorder: &LatencyRecorder,
    acknowledged: u64,
    errors: u64,
    seconds: f64,
) -> RunResult {
    let mut result = RunResult::new(
        label.system,
        label.transport,
        "produce",
        acknowledged,
        params.size as u64,
        seconds,
    )
    .with_latency(recorder);
    result.durability = label.durability.clone();
    result.durability_detail = label.durability_detail.clone();
    result.producers = params.producers;
    result.window = Some(params.window);
    result.rate = params.rate;
    let from = if params.rate.is_some() {
        "intended"
    } else {
        "send"
    };
    result.latency_from = Some(from.into());
    result.errors = errors + params.messages.saturating_sub(acknowledged + errors);
    result
}

/// `subscribers.len()` consumers (each its own connection) read the same stream at once,
/// each `messages` from its start, each verifying every payload (fan-out). msgs/s is the
/// total read by all over the time the slowest took.
pub async fn run_consumers<S: Subscriber>(
    label: &SystemLabel,
    subscribers: &mut [S],
    messages: u64,
    idle_timeout: Duration,
) -> Result<RunResult> {
    if !(1..=CLIENTS_MAX as usize).contains(&subscribers.len()) {
        bail!(
            "--consumers {}: must be 1..={CLIENTS_MAX}",
            subscribers.len()
        );
    }
    let started = Instant::now();
    let runs = subscribers
        .iter_mut()
        .map(|s| run_consumer(label, s, messages, idle_timeout));
    let results = futures::future::try_join_all(runs).await?;
    let seconds = started.elapsed().as_secs_f64();
    let consumed: u64 = results.iter().map(|r| r.messages).sum();
    let mut total = results[0].clone();
    total.messages = consumed;
    total.seconds = seconds;
    total.msgs_per_sec = consumed as f64 / seconds.max(1e-9);
    total.mb_per_sec = total.msgs_per_sec * total.size as f64 / 1e6;
    total.consumers = results.len() as u32;
    total.errors = results.iter().map(|r| r.errors).sum();
    Ok(total)
}

/// Reads `messages` from the start of a stream written by one producer, verifying each.
pub async fn run_consumer<S: Subscriber>(
    label: &SystemLabel,
    subscriber: &mut S,
    messages: u64,
    idle_timeout: Duration,
) -> Result<RunResult> {
    if messages == 0 {
        bail!("--messages must be at least 1");
    }
    let mut verifier = Verifier::new();
    verifier.expect(0, 0);
    let mut batch = Vec::with_capacity(4096);
    let mut consumed = 0u64;
    let mut bytes = 0u64;
    let started = Instant::now();
    let mut last_message = started;
    while consumed < messages {
        batch.clear();
        subscriber
            .next_batch(&mut batch, Duration::from_millis(100))
            .await?;
        if batch.is_empty() {
            if last_message.elapsed() > idle_timeout {
                eprintln!(
                    "precursor-bench: {}: nothing for {} ms after {consumed} of {messages} messages",
                    label.system,
                    idle_timeout.as_millis()
                );
                break;
            }
            continue;
        }
        last_message = Instant::now();
        for payload in batch.iter().take((messages - consumed) as usize) {
            verifier.observe(0, payload);
            bytes += payload.len() as u64;
            consumed += 1;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let totals = verifier.totals();
    let errors =
        totals.missing + totals.duplicates + totals.corrupt + messages.saturating_sub(consumed);
    if errors > 0 {
        eprintln!(
            "precursor-bench: {}: verified {} in order, {} missing, {} duplicates, {} corrupt, {} not read",
            label.system,
            totals.in_order,
            totals.missing,
            totals.duplicates,
            totals.corrupt,
            messages.saturating_sub(consumed)
        );
    }
    let mut result = RunResult::new(
        label.system,
        label.transport,
        "consume",
        consumed,
        bytes.checked_div(consumed).unwrap_or(0),
        seconds,
    );
    // Reading has no acks level (Precursor's consume has none either); the server's
    // setting is kept as the detail.
    result.durability_detail = label.durability_detail.clone();
    result.consumers = 1;
    result.errors = errors;
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    /// A publisher whose acks arrive after a fixed service time, as a real one would.
    struct Delayed {
        service: Duration,
        fail_every: Option<u64>,
        published: u64,
        payloads: VecDeque<Bytes>,
    }

    impl Publisher for Delayed {
        type Ack = std::pin::Pin<Box<dyn Future<Output = Result<()>>>>;
        async fn publish(&mut self, payload: Bytes) -> Result<Self::Ack> {
            self.published += 1;
            self.payloads.push_back(payload);
            let fail = self
                .fail_every
                .is_some_and(|n| self.published.is_multiple_of(n));
            let service = self.service;
            Ok(Box::pin(async move {
                tokio::time::sleep(service).await;
                if fail {
                    bail!("refused")
                }
                Ok(())
            }))
        }
    }

    impl Subscriber for VecDeque<Bytes> {
        async fn next_batch(&mut self, out: &mut Vec<Bytes>, _wait: Duration) -> Result<()> {
            out.extend(self.drain(..self.len().min(7)));
            Ok(())
        }
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    fn label() -> SystemLabel {
        SystemLabel {
            system: "test",
            transport: "memory",
            durability: None,
            durability_detail: None,
        }
    }

    fn params(messages: u64) -> ProduceParams {
        ProduceParams {
            messages,
            size: 100,
            producers: 1,
            window: 8,
            rate: None,
            warmup: 3,
            ack_timeout: Duration::from_secs(5),
        }
    }

    #[test]
    fn produce_then_consume_verifies_every_payload() {
        runtime().block_on(async {
            let mut written = VecDeque::new();
            let result = run_producers(&label(), &params(50), |_| async {
                Ok(Delayed {
                    service: Duration::from_micros(10),
                    fail_every: None,
                    published: 0,
                    payloads: VecDeque::new(),
                })
            })
            .await
            .unwrap();
            assert_eq!((result.messages, result.errors), (50, 0));
            assert_eq!(result.latency_from.as_deref(), Some("send"));
            assert!(result.p50_us.unwrap() >= 10.0);

            // A stream with the warm-up and measured payloads, read back in order.
            let mut p = Delayed {
                service: Duration::ZERO,
                fail_every: None,
                published: 0,
                payloads: VecDeque::new(),
            };
            produce(&mut p, 0, 40, 100, 4, None, Duration::from_secs(1))
                .await
                .unwrap();
            written.extend(p.payloads);
            let read = run_consumer(&label(), &mut written, 40, Duration::from_millis(200))
                .await
                .unwrap();
            assert_eq!((read.messages, read.errors, read.size), (40, 0, 100));
        });
    }

    #[test]
    fn several_consumers_each_read_the_whole_stream() {
        runtime().block_on(async {
            let mut p = Delayed {
                service: Duration::ZERO,
                fail_every: None,
                published: 0,
                payloads: VecDeque::new(),
            };
            produce(&mut p, 0, 30, 100, 4, None, Duration::from_secs(1))
                .await
                .unwrap();
            let mut readers = vec![p.payloads.clone(), p.payloads.clone(), p.payloads];
            let read = run_consumers(&label(), &mut readers, 30, Duration::from_millis(200))
                .await
                .unwrap();
            assert_eq!((read.messages, read.errors, read.consumers), (90, 0, 3));
            let none: &mut [VecDeque<Bytes>] = &mut [];
            let error = run_consumers(&label(), none, 30, Duration::from_millis(10))
                .await
                .unwrap_err();
            assert!(error.to_string().contains("--consumers 0"));
        });
    }

    #[test]
    fn consumer_counts_gaps_corruption_and_shortfall() {
        runtime().block_on(async {
            let mut p = Delayed {
                service: Duration::ZERO,
                fail_every: None,
                published: 0,
                payloads: VecDeque::new(),
            };
            produce(&mut p, 0, 10, 64, 4, None, Duration::from_secs(1))
                .await
                .unwrap();
            let mut stream = p.payloads;
            stream.remove(3); // a gap
            let mut corrupt = stream[5].to_vec();
            corrupt[20] ^= 0xff;
            stream[5] = Bytes::from(corrupt);
            // 9 left; asking for 12 leaves 3 unread after the idle timeout. The corrupt
            // one (seq 6) also counts as missing when seq 7 follows: 2 missing.
            let read = run_consumer(&label(), &mut stream, 12, Duration::from_millis(150))
                .await
                .unwrap();
            assert_eq!(read.messages, 9);
            assert_eq!(read.errors, 2 + 1 + 3, "missing + corrupt + not read");
        });
    }

    #[test]
    fn failed_acks_are_errors() {
        runtime().block_on(async {
            let result = run_producers(
                &label(),
                &ProduceParams {
                    warmup: 0,
                    ..params(30)
                },
                |_| async {
                    Ok(Delayed {
                        service: Duration::ZERO,
                        fail_every: Some(10),
                        published: 0,
                        payloads: VecDeque::new(),
                    })
                },
            )
            .await
            .unwrap();
            assert_eq!((result.messages, result.errors), (27, 3));
        });
    }

    /// At a fixed rate the service time is shorter than the interval: latency is about the
    /// service time and the run takes messages / rate.
    #[test]
    fn fixed_rate_paces_the_producers_and_measures_from_the_schedule() {
        runtime().block_on(async {
            let p = ProduceParams {
                rate: Some(2_000.0),
                producers: 2,
                warmup: 0,
                ..params(100)
            };
            let result = run_producers(&label(), &p, |_| async {
                Ok(Delayed {
                    service: Duration::from_micros(100),
                    fail_every: None,
                    published: 0,
                    payloads: VecDeque::new(),
                })
            })
            .await
            .unwrap();
            assert_eq!(
                (result.messages, result.errors, result.producers),
                (100, 0, 2)
            );
            assert_eq!(result.latency_from.as_deref(), Some("intended"));
            assert_eq!(result.rate, Some(2_000.0));
            // 100 messages at 2,000/s: the last is due at 49.5 ms.
            assert!(result.seconds >= 0.0495, "{}", result.seconds);
            assert!(result.p50_us.unwrap() >= 100.0);
        });
    }

    #[test]
    fn bad_parameters_are_refused_with_the_flag_named() {
        let check = |p: ProduceParams| p.check().unwrap_err().to_string();
        assert!(check(ProduceParams {
            size: 8,
            ..params(10)
        })
        .contains("--size"));
        assert!(check(ProduceParams {
            window: 0,
            ..params(10)
        })
        .contains("--window"));
        assert!(check(ProduceParams {
            producers: 0,
            ..params(10)
        })
        .contains("--producers"));
        assert!(check(ProduceParams {
            producers: 11,
            ..params(10)
        })
        .contains("exceeds"));
        assert!(check(ProduceParams {
            rate: Some(-1.0),
            ..params(10)
        })
        .contains("--rate"));
        assert!(check(params(0)).contains("--messages"));
        let p = ProduceParams {
            producers: 3,
            ..params(10)
        };
        assert_eq!((p.share(0), p.share(1), p.share(2)), (4, 3, 3));
    }
}
