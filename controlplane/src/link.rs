//! The link to the data plane: one thread owns the [`ControlplaneCnc`] (the command ring
//! has exactly one producer, this thread), sends commands, matches reply events by
//! correlation id, and follows the data plane across restarts.
//!
//! ```text
//!  admin tasks ──CommandRequest──> std mpsc ──> precursor-cnc thread
//!       ^                                         | try_push(kind, correlation_id, payload)
//!       |                                         v
//!       |                                  command ring (cp -> dp)
//!       |                                  event ring   (dp -> cp)
//!       |                                         | try_pop -> pending[correlation_id]
//!       └──────────── oneshot(Event) <────────────┘
//! ```
//!
//! The thread polls the event ring only while commands wait for their replies, every
//! [`EVENT_POLL_INTERVAL_US`]; otherwise it sleeps on its request channel for at most
//! [`HEALTH_CHECK_INTERVAL_MS`], then checks the writer's heartbeat and whether the CnC
//! file was replaced (a new data plane), and reconnects.
//!
//! A ping series ([`Link::ping_series`], the admin request `ping_dataplane`) measures the
//! ring round trip where it happens: the thread sends `count` [`Command::Ping`] one after
//! another and times each from just before `try_push` to its `Done` popped from the event
//! ring. While a series runs the thread does nothing else but wait on the event ring:
//! it spins [`PING_SPINS`] times, then yields the core between polls (never sleeps), so
//! the numbers measure the rings and the data plane's loop, not a timer. Other commands
//! queue on the request channel meanwhile; their replies popped during the series are
//! delivered as usual.

use hdrhistogram::Histogram;
use precursor_protocol::command::{Command, Event, KIND_PING};
use precursor_protocol::frame::ErrorCode;
use precursor_shm::{ControlplaneCnc, RING_PAYLOAD_BYTES_MAX};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// A data plane whose heartbeat is older than this is dead (hung or killed), in ms.
pub const HEARTBEAT_TIMEOUT_MS: u64 = 3_000;
/// How often the link checks the heartbeat and looks for a (new) CnC file, in ms.
pub const HEALTH_CHECK_INTERVAL_MS: u64 = 50;
/// How often the link polls the event ring while replies are awaited, in microseconds.
pub const EVENT_POLL_INTERVAL_US: u64 = 100;
/// Commands sent and not yet answered, at most. More are refused `busy`.
pub const COMMANDS_IN_FLIGHT_MAX: usize = 256;
/// Reply events handled per poll, at most (bounded loop).
const EVENTS_PER_POLL_MAX: usize = 64;
/// Pings one series may send, at most.
pub const PING_SERIES_COUNT_MAX: u32 = 1_000_000;
/// A series stops sending after this long and reports the pings it measured, in ms (the
/// link serves nothing else meanwhile).
pub const PING_SERIES_DURATION_MAX_MS: u64 = 10_000;
/// Empty polls of the event ring spent spinning before each further poll yields the core.
pub const PING_SPINS: u32 = 200;
/// Highest round trip the series histogram tracks, in nanoseconds (60 s).
const PING_LATENCY_NS_MAX: u64 = 60_000_000_000;

/// Why a command got no event.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum LinkError {
    #[error("the data plane is not running ({0})")]
    Unavailable(String),
    #[error("the data plane did not answer within {0} ms")]
    Timeout(u64),
    #[error("the command ring is full: the data plane is not taking commands")]
    Busy,
    #[error("the data plane restarted before answering; the command may or may not have been carried out")]
    Restarted,
    #[error("the data plane answered with an event this control plane cannot read: {0}")]
    BadEvent(String),
    #[error("a ping series takes 1..={PING_SERIES_COUNT_MAX} pings, not {0}")]
    BadCount(u32),
}

/// Round trips of a ping series (cp -> dp -> cp through the two rings), in nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PingStats {
    /// Pings measured: the count asked for, fewer when the series hit
    /// [`PING_SERIES_DURATION_MAX_MS`].
    pub count: u32,
    pub p50_ns: u64,
    pub p90_ns: u64,
    pub p99_ns: u64,
    pub p999_ns: u64,
    pub max_ns: u64,
    /// From the first push to the last reply, in nanoseconds.
    pub elapsed_ns: u64,
}

/// What the link knows about the data plane, shared with the admin, metrics and
/// supervisor tasks.
#[derive(Debug, Default)]
pub struct LinkState {
    /// A CnC file is mapped.
    pub connected: AtomicBool,
    /// ... and its writer's heartbeat is fresh.
    pub alive: AtomicBool,
    /// The writer pid in the mapped CnC header (0: none).
    pub writer_pid: AtomicU32,
    /// Commands in the command ring not yet taken by the data plane.
    pub command_ring_depth: AtomicU32,
    /// Counts CnC files attached to: a new one per data plane start.
    pub generation: AtomicU64,
    /// When the current CnC was attached.
    attached_at: Mutex<Option<Instant>>,
    /// Quorum mode: the leadership lease last set ([`Link::set_lease_until_ns`]), written
    /// again into every new CnC file (a restarted data plane starts expired).
    lease_until_ns: AtomicU64,
    /// Whether a lease was ever set (static mode never sets one: the data plane's own
    /// "forever" stays).
    lease_set: AtomicBool,
    /// Why the link is not connected, for messages.
    last_problem: Mutex<String>,
}

impl LinkState {
    pub fn is_alive(&self) -> bool {
        self.connected.load(Ordering::Acquire) && self.alive.load(Ordering::Acquire)
    }

    pub fn writer_pid(&self) -> Option<u32> {
        match self.writer_pid.load(Ordering::Acquire) {
            0 => None,
            pid => Some(pid),
        }
    }

    pub fn attached_for(&self) -> Option<Duration> {
        self.attached_at
            .lock()
            .expect("link state lock")
            .map(|t| t.elapsed())
    }

    /// Why there is no live data plane, for error messages.
    pub fn problem(&self) -> String {
        let problem = self.last_problem.lock().expect("link state lock").clone();
        if problem.is_empty() {
            "no CnC file attached yet".into()
        } else {
            problem
        }
    }

    fn set_problem(&self, problem: String) {
        *self.last_problem.lock().expect("link state lock") = problem;
    }
}

/// The data plane's answer to a command: an owned [`Event`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Done,
    TopicCreated { topic_id: u16, partitions: u16 },
    Failed { code: ErrorCode, message: String },
}

impl From<Event<'_>> for Reply {
    fn from(event: Event<'_>) -> Reply {
        match event {
            Event::Done => Reply::Done,
            Event::TopicCreated {
                topic_id,
                partitions,
            } => Reply::TopicCreated {
                topic_id,
                partitions,
            },
            Event::Failed { code, message } => Reply::Failed {
                code,
                message: message.to_string(),
            },
        }
    }
}

/// A command encoded by its caller, for the link thread to push.
struct CommandRequest {
    kind: u32,
    payload: Vec<u8>,
    reply: oneshot::Sender<Result<Reply, LinkError>>,
}

/// What the admin tasks ask of the link thread.
enum LinkRequest {
    Command(CommandRequest),
    PingSeries {
        count: u32,
        reply: oneshot::Sender<Result<PingStats, LinkError>>,
    },
    /// Write `LinkState::lease_until_ns` into the CnC now.
    Lease,
}

/// The async handle to the link thread. Cloneable; the thread stops when every handle
/// is dropped.
#[derive(Clone)]
pub struct Link {
    requests: mpsc::Sender<LinkRequest>,
    state: Arc<LinkState>,
    command_timeout_ms: u64,
}

impl Link {
    /// Starts the link thread for the CnC in `cnc_dir`.
    pub fn start(cnc_dir: PathBuf, command_timeout_ms: u64) -> std::io::Result<Link> {
        let (requests, receiver) = mpsc::channel();
        let state = Arc::new(LinkState::default());
        let thread_state = state.clone();
        std::thread::Builder::new()
            .name("precursor-cnc".into())
            .spawn(move || {
                LinkThread::new(cnc_dir, thread_state, receiver, command_timeout_ms).run()
            })?;
        Ok(Link {
            requests,
            state,
            command_timeout_ms,
        })
    }

    pub fn state(&self) -> &Arc<LinkState> {
        &self.state
    }

    /// Quorum mode: this broker may lead until `lease_until_ns` (CLOCK_MONOTONIC ns,
    /// `precursor_shm::monotonic_ns`, same host as the data plane); 0 fences it at once.
    /// Written into the CnC by the link thread as soon as it takes the request, and again
    /// into a new CnC after a data plane restart.
    pub fn set_lease_until_ns(&self, lease_until_ns: u64) -> Result<(), LinkError> {
        self.state
            .lease_until_ns
            .store(lease_until_ns, Ordering::Release);
        self.state.lease_set.store(true, Ordering::Release);
        self.requests
            .send(LinkRequest::Lease)
            .map_err(|_| LinkError::Unavailable("the link thread stopped".into()))
    }

    /// Quorum mode: tells the data plane the ISR the metadata quorum committed for a
    /// partition it leads at `epoch` (broker ids packed one byte each from the lowest, as
    /// the ISR gauge). `Reply::Failed` with FencedLeaderEpoch when `epoch` is not the
    /// leader's current one.
    pub async fn set_isr(
        &self,
        name: &str,
        partition: u16,
        epoch: u32,
        isr: u64,
    ) -> Result<Reply, LinkError> {
        self.call(Command::SetIsr {
            name,
            partition,
            epoch,
            isr,
        })
        .await
    }

    /// Sends `command` to the data plane and waits for its one reply event, at most
    /// `command_timeout_ms`. The caller has checked the command ([`Command::check`]).
    pub async fn call(&self, command: Command<'_>) -> Result<Reply, LinkError> {
        if !self.state.is_alive() {
            return Err(LinkError::Unavailable(self.state.problem()));
        }
        let mut payload = vec![0; RING_PAYLOAD_BYTES_MAX];
        let length = command.encode(&mut payload);
        payload.truncate(length);
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(LinkRequest::Command(CommandRequest {
                kind: command.kind(),
                payload,
                reply,
            }))
            .map_err(|_| LinkError::Unavailable("the link thread stopped".into()))?;
        let limit = Duration::from_millis(self.command_timeout_ms);
        match tokio::time::timeout(limit, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(LinkError::Unavailable("the link thread stopped".into())),
            // Dropping `answer` closes the channel: the thread forgets the command.
            Err(_) => Err(LinkError::Timeout(self.command_timeout_ms)),
        }
    }

    /// Sends `count` pings one after another and returns their round trips, measured in
    /// the link thread. Each ping waits at most `command_timeout_ms` for its reply.
    pub async fn ping_series(&self, count: u32) -> Result<PingStats, LinkError> {
        if !(1..=PING_SERIES_COUNT_MAX).contains(&count) {
            return Err(LinkError::BadCount(count));
        }
        if !self.state.is_alive() {
            return Err(LinkError::Unavailable(self.state.problem()));
        }
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(LinkRequest::PingSeries { count, reply })
            .map_err(|_| LinkError::Unavailable("the link thread stopped".into()))?;
        // Bounded by the thread: PING_SERIES_DURATION_MAX_MS of sending plus one
        // command timeout for the last ping (and whatever was queued before).
        answer
            .await
            .map_err(|_| LinkError::Unavailable("the link thread stopped".into()))?
    }
}

struct Pending {
    reply: oneshot::Sender<Result<Reply, LinkError>>,
}

struct LinkThread {
    cnc_dir: PathBuf,
    state: Arc<LinkState>,
    requests: mpsc::Receiver<LinkRequest>,
    command_timeout_ms: u64,
    cnc: Option<ControlplaneCnc>,
    pending: HashMap<u64, Pending>,
    next_correlation_id: u64,
    last_health_check: Instant,
    event: Box<[u8; RING_PAYLOAD_BYTES_MAX]>,
    /// Round trips of the current ping series: allocated once (about 200 KiB), reset per
    /// series, so a one-ping series costs no allocation.
    ping_latency: Histogram<u64>,
}

impl LinkThread {
    fn new(
        cnc_dir: PathBuf,
        state: Arc<LinkState>,
        requests: mpsc::Receiver<LinkRequest>,
        command_timeout_ms: u64,
    ) -> LinkThread {
        LinkThread {
            cnc_dir,
            state,
            requests,
            command_timeout_ms,
            cnc: None,
            pending: HashMap::with_capacity(COMMANDS_IN_FLIGHT_MAX),
            // Distinct across control plane runs, so a reply meant for a previous
            // control plane on the same CnC is never taken for one of ours.
            next_correlation_id: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64 | 1),
            last_health_check: Instant::now(),
            event: Box::new([0; RING_PAYLOAD_BYTES_MAX]),
            ping_latency: Histogram::<u64>::new_with_bounds(1, PING_LATENCY_NS_MAX, 3)
                .expect("static histogram bounds"),
        }
    }

    fn run(mut self) {
        self.check_health();
        loop {
            let wait = if self.pending.is_empty() {
                Duration::from_millis(HEALTH_CHECK_INTERVAL_MS)
            } else {
                Duration::from_micros(EVENT_POLL_INTERVAL_US)
            };
            match self.requests.recv_timeout(wait) {
                Ok(request) => self.take(request),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
            // Take every request already queued (bounded by the in-flight limit).
            while self.pending.len() < COMMANDS_IN_FLIGHT_MAX {
                match self.requests.try_recv() {
                    Ok(request) => self.take(request),
                    Err(_) => break,
                }
            }
            self.poll_events();
            self.pending.retain(|_, p| !p.reply.is_closed());
            if self.last_health_check.elapsed() >= Duration::from_millis(HEALTH_CHECK_INTERVAL_MS) {
                self.check_health();
            }
        }
        self.disconnect(String::from("the control plane is stopping"));
    }

    fn take(&mut self, request: LinkRequest) {
        match request {
            LinkRequest::Command(request) => self.send(request),
            LinkRequest::PingSeries { count, reply } => {
                let result = self.ping_series(count, &reply);
                let _ = reply.send(result);
            }
            LinkRequest::Lease => self.write_lease(),
        }
    }

    /// Copies the lease the control plane set (if any) into the mapped CnC.
    fn write_lease(&self) {
        if !self.state.lease_set.load(Ordering::Acquire) {
            return;
        }
        if let Some(cnc) = self.cnc.as_ref() {
            cnc.set_lease_until_ns(self.state.lease_until_ns.load(Ordering::Acquire));
        }
    }

    fn send(&mut self, request: CommandRequest) {
        let Some(cnc) = self.cnc.as_mut() else {
            let _ = request
                .reply
                .send(Err(LinkError::Unavailable(self.state.problem())));
            return;
        };
        if self.pending.len() >= COMMANDS_IN_FLIGHT_MAX {
            let _ = request.reply.send(Err(LinkError::Busy));
            return;
        }
        let correlation_id = self.next_correlation_id;
        self.next_correlation_id = self.next_correlation_id.wrapping_add(2);
        match cnc
            .commands()
            .try_push(request.kind, correlation_id, &request.payload)
        {
            Ok(()) => {
                self.pending.insert(
                    correlation_id,
                    Pending {
                        reply: request.reply,
                    },
                );
            }
            Err(_) => {
                let _ = request.reply.send(Err(LinkError::Busy));
            }
        }
        self.state
            .command_ring_depth
            .store(cnc.commands().depth() as u32, Ordering::Release);
    }

    fn poll_events(&mut self) {
        for _ in 0..EVENTS_PER_POLL_MAX {
            let Some(cnc) = self.cnc.as_mut() else {
                return;
            };
            let Some(entry) = cnc.events().try_pop(&mut self.event) else {
                break;
            };
            self.deliver(entry.correlation_id, entry.kind, entry.length);
        }
        let Some(cnc) = self.cnc.as_mut() else {
            return;
        };
        self.state
            .command_ring_depth
            .store(cnc.commands().depth() as u32, Ordering::Release);
    }

    /// Notices a dead or replaced data plane and attaches to a new CnC file.
    fn check_health(&mut self) {
        self.last_health_check = Instant::now();
        if let Some(cnc) = self.cnc.as_ref() {
            if cnc.is_replaced() {
                self.disconnect(format!(
                    "the data plane (pid {}) was replaced by a new one",
                    cnc.writer_pid()
                ));
            } else {
                let alive = cnc.writer_alive(HEARTBEAT_TIMEOUT_MS);
                self.state.alive.store(alive, Ordering::Release);
                if !alive {
                    self.state.set_problem(format!(
                        "the data plane (pid {}) stopped its heartbeat",
                        cnc.writer_pid()
                    ));
                }
                return;
            }
        }
        match ControlplaneCnc::open(&self.cnc_dir) {
            Ok(cnc) => {
                let alive = cnc.writer_alive(HEARTBEAT_TIMEOUT_MS);
                if !alive {
                    // A file left behind by a data plane that died: wait for a new one.
                    self.state.set_problem(format!(
                        "the CnC file in {} belongs to a data plane (pid {}) that is not running",
                        self.cnc_dir.display(),
                        cnc.writer_pid()
                    ));
                    return;
                }
                self.state
                    .writer_pid
                    .store(cnc.writer_pid(), Ordering::Release);
                self.state.alive.store(true, Ordering::Release);
                self.state.connected.store(true, Ordering::Release);
                self.state.generation.fetch_add(1, Ordering::AcqRel);
                *self.state.attached_at.lock().expect("link state lock") = Some(Instant::now());
                self.state.set_problem(String::new());
                self.cnc = Some(cnc);
                self.write_lease();
                // Events left over from before we attached answer nobody: drop them.
                self.poll_events();
            }
            Err(error) => self
                .state
                .set_problem(format!("{}: {error}", self.cnc_dir.display())),
        }
    }

    fn disconnect(&mut self, why: String) {
        self.cnc = None;
        self.state.connected.store(false, Ordering::Release);
        self.state.alive.store(false, Ordering::Release);
        self.state.writer_pid.store(0, Ordering::Release);
        self.state.command_ring_depth.store(0, Ordering::Release);
        *self.state.attached_at.lock().expect("link state lock") = None;
        self.state.set_problem(why);
        for (_, pending) in self.pending.drain() {
            let _ = pending.reply.send(Err(LinkError::Restarted));
        }
    }
}

impl LinkThread {
    /// Hands the event in `self.event` to the command waiting for it, if any.
    fn deliver(&mut self, correlation_id: u64, kind: u32, length: usize) {
        let Some(pending) = self.pending.remove(&correlation_id) else {
            // A reply to a command whose caller gave up (timeout), or one meant for an
            // earlier control plane: nobody waits for it.
            return;
        };
        let payload = &self.event[..length.min(RING_PAYLOAD_BYTES_MAX)];
        let event = Event::decode(kind, payload)
            .map(Reply::from)
            .map_err(|e| LinkError::BadEvent(e.to_string()));
        let _ = pending.reply.send(event);
    }

    /// Sends `count` pings, one at a time, timing each round trip (see the module doc).
    /// Stops early, with what it measured, after [`PING_SERIES_DURATION_MAX_MS`] or when
    /// the caller went away.
    fn ping_series(
        &mut self,
        count: u32,
        caller: &oneshot::Sender<Result<PingStats, LinkError>>,
    ) -> Result<PingStats, LinkError> {
        self.ping_latency.reset();
        let timeout = Duration::from_millis(self.command_timeout_ms);
        let series_limit = Duration::from_millis(PING_SERIES_DURATION_MAX_MS);
        let series_start = Instant::now();
        let mut measured = 0u32;
        while measured < count && series_start.elapsed() < series_limit && !caller.is_closed() {
            let round_trip = self.ping_once(timeout)?;
            self.ping_latency
                .saturating_record(round_trip.as_nanos().max(1) as u64);
            measured += 1;
        }
        let elapsed_ns = series_start.elapsed().as_nanos() as u64;
        if let Some(cnc) = self.cnc.as_mut() {
            self.state
                .command_ring_depth
                .store(cnc.commands().depth() as u32, Ordering::Release);
        }
        let latency = &self.ping_latency;
        Ok(PingStats {
            count: measured,
            p50_ns: latency.value_at_quantile(0.5),
            p90_ns: latency.value_at_quantile(0.9),
            p99_ns: latency.value_at_quantile(0.99),
            p999_ns: latency.value_at_quantile(0.999),
            max_ns: latency.max(),
            elapsed_ns,
        })
    }

    /// One ping: push, then poll the event ring until its reply, spinning [`PING_SPINS`]
    /// empty polls and yielding the core between the later ones. Replies to other commands
    /// popped meanwhile go to their callers. Returns the time from just before the push to
    /// the reply popped.
    fn ping_once(&mut self, timeout: Duration) -> Result<Duration, LinkError> {
        let correlation_id = self.next_correlation_id;
        self.next_correlation_id = self.next_correlation_id.wrapping_add(2);
        let Some(cnc) = self.cnc.as_mut() else {
            return Err(LinkError::Unavailable(self.state.problem()));
        };
        let sent = Instant::now();
        if cnc
            .commands()
            .try_push(KIND_PING, correlation_id, &[])
            .is_err()
        {
            return Err(LinkError::Busy);
        }
        let mut empty_polls = 0u32;
        loop {
            let Some(cnc) = self.cnc.as_mut() else {
                return Err(LinkError::Unavailable(self.state.problem()));
            };
            match cnc.events().try_pop(&mut self.event) {
                Some(entry) if entry.correlation_id == correlation_id => {
                    let round_trip = sent.elapsed();
                    let payload = &self.event[..entry.length.min(RING_PAYLOAD_BYTES_MAX)];
                    return match Event::decode(entry.kind, payload) {
                        Ok(Event::Done) => Ok(round_trip),
                        Ok(other) => {
                            Err(LinkError::BadEvent(format!("{other:?} in reply to a ping")))
                        }
                        Err(error) => Err(LinkError::BadEvent(error.to_string())),
                    };
                }
                Some(entry) => self.deliver(entry.correlation_id, entry.kind, entry.length),
                None => {
                    empty_polls = empty_polls.saturating_add(1);
                    if empty_polls <= PING_SPINS {
                        std::hint::spin_loop();
                    } else {
                        if sent.elapsed() >= timeout {
                            return Err(LinkError::Timeout(self.command_timeout_ms));
                        }
                        std::thread::yield_now();
                    }
                }
            }
        }
    }
}
