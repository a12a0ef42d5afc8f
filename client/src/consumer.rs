//! The consumer: one Fetch in flight per assigned partition, retransmitted until answered
//! (fetches are idempotent by offset), whole batches decoded into records.
//!
//! Positions are the offset of the next record to hand out. A fetch asks for the batch that
//! holds the position; records below the position in that first batch are skipped. When a
//! partition is caught up (an empty answer) it is fetched again after `fetch_backoff_ms`;
//! while it has more, the next fetch goes out as soon as the previous answer is decoded.
//!
//! Leaders (see `leaders.rs`): each partition is fetched from its leader, with that
//! broker's handle. `NotLeaderOrFollower`, or a fetch unanswered after
//! [`SILENT_TRIES_BEFORE_LOOK_UP`] transmissions, has the brokers asked who leads it now;
//! a partition whose leader moved is fetched from the new one at the same position.
//! A partition without a known leader for the delivery timeout is `ClientError::NoLeader`.

use std::time::{Duration, Instant};

use precursor_protocol::frame::{
    ErrorCode, FetchDataHeader, FetchRequest, FrameHeader, Opcode, PartitionHandle,
    FLAG_FETCH_DURABLE_ONLY, FRAME_BYTES_MAX, FRAME_HEADER_BYTES,
};
use precursor_protocol::record_batch::{batches, records, BatchError};

use crate::leaders::{learn_topic, look_up, per_broker_schedule, Leader, LeaderQuery, Route};
use crate::metadata::TopicMetadata;
use crate::producer::SILENT_TRIES_BEFORE_LOOK_UP;
use crate::retransmit::RetransmitSchedule;
use crate::transport::{BrokerSlot, Transport};
use crate::{ClientConfig, ClientError};

/// At most this many datagrams are read per receive burst.
const RECV_BURST_MAX: usize = 256;

/// How to consume.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsumerConfig {
    pub client: ClientConfig,
    /// Batch bytes asked for per fetch; capped by the broker's frame limit.
    pub fetch_max_bytes: u32,
    /// Wait this long before fetching again a partition that had nothing new.
    pub fetch_backoff_ms: u64,
    /// Read only what is on disk (below the durable offset), not everything appended.
    pub durable_only: bool,
    /// What to do when the position is outside the log (retention passed it, or it is
    /// beyond the end).
    pub offset_reset: OffsetReset,
}

impl Default for ConsumerConfig {
    fn default() -> ConsumerConfig {
        ConsumerConfig {
            client: ClientConfig::default(),
            fetch_max_bytes: FRAME_BYTES_MAX as u32,
            fetch_backoff_ms: 1,
            durable_only: false,
            offset_reset: OffsetReset::Earliest,
        }
    }
}

/// Where an assignment starts reading.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum StartOffset {
    /// The first offset still retained.
    Earliest,
    /// The end of the log: only records appended from now on.
    Latest,
    Offset(u64),
}

/// What to do on OffsetOutOfRange.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum OffsetReset {
    Earliest,
    Latest,
    /// Report `ClientError::OffsetOutOfRange` from `poll()`.
    Fail,
}

/// One record as handed to the application.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsumedRecord {
    pub partition: u16,
    pub offset: u64,
    pub timestamp_ms: i64,
    pub key: Option<Vec<u8>>,
    /// Empty for a tombstone (null value).
    pub value: Vec<u8>,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Position {
    /// The next offset to hand out.
    At(u64),
    /// Not known yet: resolved by the first answer.
    Earliest,
    Latest,
}

#[derive(Copy, Clone, Debug)]
struct FetchInFlight {
    request_id: u64,
    offset: u64,
    first_sent_at: Instant,
    attempts: u32,
    next_due: Instant,
}

#[derive(Clone, Debug)]
struct PartitionCursor {
    partition: u16,
    /// Where its fetches go: its leader and that broker's handle. `None` while no broker
    /// says it leads the partition.
    route: Option<Route>,
    /// Since when its leader is not known (NotLeaderOrFollower, or none yet).
    awaiting_leader_since: Option<Instant>,
    position: Position,
    high_watermark: Option<u64>,
    durable_offset: Option<u64>,
    log_start_offset: Option<u64>,
    in_flight: Option<FetchInFlight>,
    next_fetch_at: Instant,
}

impl PartitionCursor {
    fn partition(&self) -> u16 {
        self.partition
    }

    fn new(partition: u16, leader: &Leader, position: Position, now: Instant) -> Self {
        let route = leader.route();
        PartitionCursor {
            partition,
            route,
            awaiting_leader_since: route.is_none().then_some(now),
            position,
            high_watermark: None,
            durable_offset: None,
            log_start_offset: None,
            in_flight: None,
            next_fetch_at: now,
        }
    }

    /// The offset to ask for: the position, or 0 to learn the log's bounds.
    fn fetch_offset(&self) -> u64 {
        match self.position {
            Position::At(offset) => offset,
            Position::Earliest | Position::Latest => 0,
        }
    }
}

/// Consumes the partitions of one topic from their leaders (over UDP; over IPC and RDMA
/// from the data plane attached).
pub struct Consumer {
    transport: Transport,
    config: ConsumerConfig,
    schedule: RetransmitSchedule,
    topic: Option<ConsumedTopic>,
    cursors: Vec<PartitionCursor>,
    /// A received payload, copied out of the transport's buffer to be decoded.
    payload_buf: Vec<u8>,
}

/// The topic assigned, as the brokers describe it.
struct ConsumedTopic {
    name: String,
    /// The frame limit is the smallest of its brokers'.
    meta: TopicMetadata,
    /// Learned from a broker of a cluster: leaders can move.
    replicated: bool,
    /// A look-up of leaders is due at this time.
    look_up_due: Option<Instant>,
    /// Do not ask this broker in that look-up (it stopped answering).
    look_up_skip: Option<BrokerSlot>,
    /// Ask this one first (it answered NotLeaderOrFollower).
    look_up_prefer: Option<BrokerSlot>,
    /// Consecutive look-ups that left a partition without a leader (the back-off).
    look_up_rounds: u32,
    /// The brokers the latest look-up asked, for errors.
    asked: String,
    leader_look_ups: u64,
}

/// The fetch size to ask for: the configured size, within what one frame can carry.
pub(crate) fn fetch_bytes_limit(fetch_max_bytes: u32, frame_bytes_max: usize) -> u32 {
    let frame_room = frame_bytes_max.saturating_sub(FRAME_HEADER_BYTES + FetchDataHeader::BYTES);
    (fetch_max_bytes as usize).min(frame_room).max(1) as u32
}

/// Which records of a fetched batch to hand out: those at or above `position`.
/// Returns the position after the batch (its last offset + 1), or `None` when the whole batch
/// lies below the position.
pub(crate) fn position_after_batch(position: u64, batch_last_offset: i64) -> Option<u64> {
    let last = u64::try_from(batch_last_offset).ok()?;
    (last >= position).then_some(last + 1)
}

impl Consumer {
    pub fn new(config: ConsumerConfig) -> Result<Consumer, ClientError> {
        let transport = Transport::open(&config.client)?;
        let schedule = RetransmitSchedule::from_config(&config.client);
        Ok(Consumer {
            transport,
            config,
            schedule,
            topic: None,
            cursors: Vec::new(),
            payload_buf: Vec::new(),
        })
    }

    /// Reads `partitions` of `topic` (all of them with `None`) from `start`. Replaces any
    /// earlier assignment. Fetches the topic's metadata (the topic must exist) and learns
    /// each partition's leader.
    pub fn assign(
        &mut self,
        topic: &str,
        partitions: Option<&[u16]>,
        start: StartOffset,
    ) -> Result<(), ClientError> {
        let view = learn_topic(
            &mut self.transport,
            &self.config.client,
            &self.schedule,
            topic,
            false,
            &mut |_, _, _| {},
        )?;
        let chosen: Vec<u16> = match partitions {
            Some(list) => list.to_vec(),
            None => (0..view.partition_count).collect(),
        };
        if let Some(&bad) = chosen.iter().find(|&&p| p >= view.partition_count) {
            return Err(ClientError::UnknownPartition {
                topic: topic.to_string(),
                partition: bad,
                partition_count: view.partition_count,
            });
        }
        if let Some(error) = chosen
            .iter()
            .find_map(|&p| view.leaders[p as usize].elsewhere_error(topic, p))
        {
            return Err(error);
        }
        let now = Instant::now();
        let position = match start {
            StartOffset::Earliest => Position::Earliest,
            StartOffset::Latest => Position::Latest,
            StartOffset::Offset(offset) => Position::At(offset),
        };
        self.cursors = chosen
            .iter()
            .map(|&p| PartitionCursor::new(p, &view.leaders[p as usize], position, now))
            .collect();
        self.cursors.sort_by_key(|c| c.partition);
        self.cursors.dedup_by_key(|c| c.partition);
        let waiting = self.cursors.iter().any(|c| c.route.is_none());
        self.topic = Some(ConsumedTopic {
            name: topic.to_string(),
            meta: TopicMetadata {
                topic_id: view
                    .leaders
                    .iter()
                    .find_map(|l| l.route())
                    .map_or(0, |r| r.handle.topic_id()),
                partition_count: view.partition_count,
                frame_bytes_max: view.frame_bytes_max,
            },
            replicated: view.replicated,
            look_up_due: waiting.then_some(now),
            look_up_skip: None,
            look_up_prefer: None,
            look_up_rounds: 0,
            asked: view.asked,
            leader_look_ups: 0,
        });
        Ok(())
    }

    /// Fetches from every assigned partition and appends records to `out`, waiting up to
    /// `timeout` for the first ones. Returns how many were appended (0 on timeout).
    /// On an error, `out` keeps the records decoded before it and positions are past them.
    pub fn poll(
        &mut self,
        timeout: Duration,
        out: &mut Vec<ConsumedRecord>,
    ) -> Result<usize, ClientError> {
        if self.cursors.is_empty() {
            return Err(ClientError::Usage(
                "consumer has no partitions: call assign() first".to_string(),
            ));
        }
        let started_len = out.len();
        let deadline = Instant::now() + timeout;
        loop {
            self.look_up_due_leaders(Instant::now())?;
            let now = Instant::now();
            self.send_due_fetches(now)?;
            if out.len() > started_len {
                return Ok(out.len() - started_len);
            }
            // At least one non-blocking receive even with a zero timeout.
            let wait = (now < deadline).then(|| {
                let wake = self.next_timer().map_or(deadline, |t| t.min(deadline));
                wake.saturating_duration_since(now)
            });
            let mut wait = wait;
            for _ in 0..RECV_BURST_MAX {
                if !self.transport.recv(wait.take())? {
                    break;
                }
                let Some((slot, header, payload)) = self.transport.frame() else {
                    continue;
                };
                let mut buf = std::mem::take(&mut self.payload_buf);
                buf.clear();
                buf.extend_from_slice(payload);
                let result = self.on_frame(slot, &header, &buf, out);
                self.payload_buf = buf;
                result?;
            }
            // With records the loop top sends the next fetches, then returns them.
            if out.len() == started_len && now >= deadline {
                return Ok(0);
            }
        }
    }

    /// Each assigned partition's position (the next offset to hand out); `None` until
    /// known (start Earliest / Latest before the first answer).
    pub fn positions(&self) -> Vec<(u16, Option<u64>)> {
        self.cursors
            .iter()
            .map(|c| {
                let position = match c.position {
                    Position::At(offset) => Some(offset),
                    _ => None,
                };
                (c.partition(), position)
            })
            .collect()
    }

    /// Each assigned partition's end as of its last FetchData: the high watermark, or the
    /// durable offset with `durable_only`. `None` before the first answer.
    pub fn high_watermarks(&self) -> Vec<(u16, Option<u64>)> {
        self.cursors
            .iter()
            .map(|c| (c.partition(), self.end_of(c)))
            .collect()
    }

    /// True when every assigned partition's position has reached its end (as last seen).
    pub fn caught_up(&self) -> bool {
        self.cursors
            .iter()
            .all(|c| match (c.position, self.end_of(c)) {
                (Position::At(position), Some(end)) => position >= end,
                _ => false,
            })
    }

    /// Counters of the socket underneath.
    pub fn transport_stats(&self) -> crate::TransportStats {
        self.transport.stats
    }

    /// Look-ups of the topic's leaders after its first Metadata.
    pub fn leader_look_ups(&self) -> u64 {
        self.topic.as_ref().map_or(0, |t| t.leader_look_ups)
    }

    /// Asks the brokers who leads the partitions without a known leader, when a look-up
    /// is due, and fetches each from its leader from then on (at the same position).
    /// Bounded: each broker is asked once, briefly.
    fn look_up_due_leaders(&mut self, now: Instant) -> Result<(), ClientError> {
        let Some(topic) = self.topic.as_mut() else {
            return Ok(());
        };
        if topic.look_up_due.is_none_or(|due| now < due) {
            return Ok(());
        }
        topic.look_up_due = None;
        topic.leader_look_ups += 1;
        let skip = topic.look_up_skip.take();
        let prefer = topic.look_up_prefer.take();
        // Those without a leader, and those led by the broker that went silent.
        let wanted: Vec<u16> = self
            .cursors
            .iter()
            .filter(|c| {
                c.awaiting_leader_since.is_some()
                    || c.route.is_none()
                    || (skip.is_some() && c.route.map(|r| r.slot) == skip)
            })
            .map(|c| c.partition)
            .collect();
        let per_broker = per_broker_schedule(&self.schedule);
        let name = topic.name.clone();
        let query = LeaderQuery {
            topic: &name,
            auto_create: false,
            first: prefer.into_iter().collect(),
            skip,
            wanted: Some(wanted),
            first_schedule: per_broker,
            per_broker,
        };
        // Fetch answers arriving meanwhile are dropped: their fetches are sent again.
        let view = look_up(&mut self.transport, &query, &mut |_, _, _| {});
        let topic = self.topic.as_mut().expect("checked above");
        let now = Instant::now();
        if let Ok(view) = view {
            topic.asked = view.asked;
            topic.replicated |= view.replicated;
            topic.meta.frame_bytes_max = topic.meta.frame_bytes_max.min(view.frame_bytes_max);
            for cursor in &mut self.cursors {
                let Some(found) = view.leaders.get(cursor.partition as usize) else {
                    continue;
                };
                if let Some(error) = found.elsewhere_error(&name, cursor.partition) {
                    return Err(error);
                }
                let Some(route) = found.route() else {
                    // Nobody else leads it: waiting keeps waiting, silent keeps retrying.
                    continue;
                };
                if cursor.route != Some(route) || cursor.awaiting_leader_since.is_some() {
                    // Fetched from the new leader, at the same position, at once.
                    cursor.route = Some(route);
                    cursor.awaiting_leader_since = None;
                    cursor.in_flight = None;
                    cursor.next_fetch_at = now;
                }
            }
        }
        let waiting = self
            .cursors
            .iter()
            .any(|c| c.awaiting_leader_since.is_some() || c.route.is_none());
        topic.look_up_rounds = if waiting {
            topic.look_up_rounds.saturating_add(1)
        } else {
            0
        };
        if waiting {
            topic.look_up_due = Some(now + self.schedule.wait(topic.look_up_rounds - 1));
            topic.look_up_prefer = prefer;
        }
        Ok(())
    }

    /// Asks for a look-up of the topic's leaders: at once after a success, else after the
    /// back-off of the failed rounds.
    fn want_look_up(&mut self, now: Instant, prefer: Option<BrokerSlot>, skip: Option<BrokerSlot>) {
        let schedule = self.schedule;
        let Some(topic) = self.topic.as_mut() else {
            return;
        };
        match topic.look_up_due {
            Some(_) => {
                topic.look_up_prefer = topic.look_up_prefer.or(prefer);
                if topic.look_up_skip != skip {
                    topic.look_up_skip = None;
                }
            }
            None => {
                let wait = match topic.look_up_rounds {
                    0 => Duration::ZERO,
                    rounds => schedule.wait(rounds - 1),
                };
                topic.look_up_due = Some(now + wait);
                topic.look_up_prefer = prefer;
                topic.look_up_skip = skip;
            }
        }
    }

    fn end_of(&self, cursor: &PartitionCursor) -> Option<u64> {
        if self.config.durable_only {
            cursor.durable_offset
        } else {
            cursor.high_watermark
        }
    }

    fn topic_name(&self) -> &str {
        self.topic.as_ref().map(|t| t.name.as_str()).unwrap_or("?")
    }

    fn next_timer(&self) -> Option<Instant> {
        let look_up = self.topic.as_ref().and_then(|t| t.look_up_due);
        self.cursors
            .iter()
            .map(|c| match (&c.in_flight, c.awaiting_leader_since) {
                (_, Some(since)) => self.schedule.give_up_at(since),
                (Some(f), None) => f.next_due.min(self.schedule.give_up_at(f.first_sent_at)),
                (None, None) => c.next_fetch_at,
            })
            .chain(look_up)
            .min()
    }

    fn send_due_fetches(&mut self, now: Instant) -> Result<(), ClientError> {
        let frame_bytes_max = self
            .topic
            .as_ref()
            .map_or(FRAME_BYTES_MAX, |t| t.meta.frame_bytes_max);
        let replicated = self.topic.as_ref().is_some_and(|t| t.replicated);
        let mut silent: Option<BrokerSlot> = None;
        let max_bytes = fetch_bytes_limit(self.config.fetch_max_bytes, frame_bytes_max);
        let flags = if self.config.durable_only {
            FLAG_FETCH_DURABLE_ONLY
        } else {
            0
        };
        for i in 0..self.cursors.len() {
            let cursor = &self.cursors[i];
            let route = cursor
                .route
                .filter(|_| cursor.awaiting_leader_since.is_none());
            let Some(route) = route else {
                let since = cursor.awaiting_leader_since.unwrap_or(now);
                if now >= self.schedule.give_up_at(since) {
                    let topic = self.topic.as_ref().expect("assigned");
                    return Err(ClientError::NoLeader {
                        topic: topic.name.clone(),
                        partition: cursor.partition,
                        waited_ms: now.saturating_duration_since(since).as_millis() as u64,
                        brokers: topic.asked.clone(),
                    });
                }
                continue;
            };
            let (request_id, offset, attempts) = match cursor.in_flight {
                Some(f) if now >= self.schedule.give_up_at(f.first_sent_at) => {
                    self.cursors[i].in_flight = None;
                    let what = format!(
                        "fetch from partition {} of topic {} at offset {}",
                        self.cursors[i].partition(),
                        self.topic_name(),
                        f.offset
                    );
                    return Err(self.transport.no_answer(
                        route.slot,
                        &what,
                        f.attempts,
                        f.first_sent_at,
                    ));
                }
                Some(f) if now >= f.next_due => (f.request_id, f.offset, f.attempts),
                Some(_) => continue,
                None if now >= cursor.next_fetch_at => {
                    (self.transport.next_request_id(), cursor.fetch_offset(), 0)
                }
                None => continue,
            };
            if replicated && attempts >= SILENT_TRIES_BEFORE_LOOK_UP {
                // Three fetches unanswered (and each one after): has the partition moved?
                silent = Some(route.slot);
            }
            let mut header = FrameHeader::new(
                Opcode::Fetch,
                request_id,
                route.handle.0,
                FetchRequest::BYTES,
            );
            header.flags = flags;
            let mut payload = [0u8; FetchRequest::BYTES];
            FetchRequest { offset, max_bytes }.encode(&mut payload);
            self.transport.send_frame(route.slot, &header, &payload)?;
            let cursor = &mut self.cursors[i];
            let first_sent_at = cursor.in_flight.map_or(now, |f| f.first_sent_at);
            cursor.in_flight = Some(FetchInFlight {
                request_id,
                offset,
                first_sent_at,
                attempts: attempts + 1,
                next_due: self.schedule.next_due(now, attempts),
            });
        }
        if let Some(slot) = silent {
            self.want_look_up(now, None, Some(slot));
        }
        Ok(())
    }

    /// Handles one frame from broker `slot`.
    fn on_frame(
        &mut self,
        slot: BrokerSlot,
        header: &FrameHeader,
        payload: &[u8],
        out: &mut Vec<ConsumedRecord>,
    ) -> Result<(), ClientError> {
        let route = Route {
            slot,
            handle: PartitionHandle(header.partition),
        };
        let Some(index) = self.cursors.iter().position(|c| {
            c.route == Some(route)
                && c.in_flight
                    .is_some_and(|f| f.request_id == header.request_id)
        }) else {
            // A late answer to a fetch already answered (a retransmitted one): stale.
            return Ok(());
        };
        let now = Instant::now();
        let backoff = Duration::from_millis(self.config.fetch_backoff_ms);
        let topic = self
            .topic
            .as_ref()
            .map(|t| t.name.clone())
            .unwrap_or_default();
        let reset = self.config.offset_reset;
        let cursor = &mut self.cursors[index];
        let fetch = cursor.in_flight.take().expect("matched an in-flight fetch");
        let partition = cursor.partition();

        if header.error != 0 || header.opcode != Opcode::FetchData {
            let code = ErrorCode::from_u16(header.error);
            // A FetchData frame carrying an error may still tell the log's bounds.
            if header.opcode == Opcode::FetchData {
                if let Ok((bounds, _)) = FetchDataHeader::decode(payload) {
                    cursor.high_watermark = Some(bounds.high_watermark);
                    cursor.durable_offset = Some(bounds.durable_offset);
                    cursor.log_start_offset = Some(bounds.log_start_offset);
                }
            }
            return match code {
                Some(ErrorCode::OffsetOutOfRange) => {
                    reset_position(cursor, fetch.offset, reset, now)
                }
                Some(ErrorCode::NotLeaderOrFollower) => {
                    // Fetched again from whoever leads it now, at the same position.
                    cursor.awaiting_leader_since.get_or_insert(now);
                    self.want_look_up(now, Some(slot), None);
                    Ok(())
                }
                Some(c) if c.is_retriable() => {
                    cursor.next_fetch_at = now + backoff.max(self.schedule.wait(0));
                    Ok(())
                }
                Some(ErrorCode::UnknownTopicOrPartition) => Err(ClientError::UnknownTopic {
                    topic,
                    broker: self.transport.broker(slot),
                }),
                _ => Err(ClientError::from_broker(
                    format!("fetch from partition {partition} of topic {topic}"),
                    header.error,
                    payload,
                )),
            };
        }

        let (bounds, data) =
            FetchDataHeader::decode(payload).map_err(|e| ClientError::Protocol {
                detail: format!("fetch data: {e}"),
            })?;
        cursor.high_watermark = Some(bounds.high_watermark);
        cursor.durable_offset = Some(bounds.durable_offset);
        cursor.log_start_offset = Some(bounds.log_start_offset);
        let mut position = match cursor.position {
            Position::At(offset) => offset,
            Position::Earliest => fetch.offset.max(bounds.log_start_offset),
            Position::Latest => {
                // The probe's batches are older than the end: skip them.
                cursor.position = Position::At(bounds.high_watermark);
                cursor.next_fetch_at = now;
                return Ok(());
            }
        };
        cursor.position = Position::At(position);
        if fetch.offset != position {
            // Not an answer for where we are (the Earliest probe below the log start):
            // fetch again from the position.
            cursor.next_fetch_at = now;
            return Ok(());
        }
        for item in batches(data) {
            let (batch_header, batch) = match item {
                Ok(pair) => pair,
                Err(BatchError::Truncated { .. }) => break,
                Err(e) => {
                    cursor.position = Position::At(position);
                    return Err(ClientError::CorruptBatch {
                        partition,
                        offset: position,
                        detail: e.to_string(),
                    });
                }
            };
            let Some(after) = position_after_batch(position, batch_header.last_offset()) else {
                continue;
            };
            if !batch_header.is_control() {
                let decoded = records(batch).map_err(|e| ClientError::CorruptBatch {
                    partition,
                    offset: batch_header.base_offset.max(0) as u64,
                    detail: e.to_string(),
                });
                let decoded = match decoded {
                    Ok(decoded) => decoded,
                    Err(error) => {
                        cursor.position = Position::At(position);
                        return Err(error);
                    }
                };
                for record in decoded {
                    let Ok(offset) = u64::try_from(record.offset) else {
                        continue;
                    };
                    if offset < position {
                        continue;
                    }
                    out.push(ConsumedRecord {
                        partition,
                        offset,
                        timestamp_ms: record.timestamp,
                        key: record.key,
                        value: record.value.unwrap_or_default(),
                    });
                }
            }
            position = after;
        }
        cursor.position = Position::At(position);
        let end = if self.config.durable_only {
            bounds.durable_offset
        } else {
            bounds.high_watermark
        };
        // More to read: fetch again at once. Caught up, or no progress (nothing fitted the
        // frame): back off rather than spin.
        cursor.next_fetch_at = if position < end && position > fetch.offset {
            now
        } else {
            now + backoff
        };
        Ok(())
    }
}

/// Applies the reset policy after OffsetOutOfRange for `offset`.
fn reset_position(
    cursor: &mut PartitionCursor,
    offset: u64,
    reset: OffsetReset,
    now: Instant,
) -> Result<(), ClientError> {
    let target = match (reset, cursor.position) {
        // Probing for the bounds failed: the answer to the probe decides.
        (_, Position::Earliest) | (OffsetReset::Earliest, _) => cursor.log_start_offset,
        (_, Position::Latest) | (OffsetReset::Latest, _) => cursor.high_watermark,
        (OffsetReset::Fail, Position::At(_)) => None,
    };
    match target {
        Some(target) if target != offset => {
            cursor.position = Position::At(target);
            cursor.next_fetch_at = now;
            Ok(())
        }
        _ => Err(ClientError::OffsetOutOfRange {
            partition: cursor.partition(),
            offset,
            log_start_offset: cursor.log_start_offset,
            high_watermark: cursor.high_watermark,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fetch_size_fits_one_frame() {
        assert_eq!(fetch_bytes_limit(1 << 20, 1472), (1472 - 32 - 24) as u32);
        assert_eq!(fetch_bytes_limit(4096, 8972), 4096);
        assert_eq!(fetch_bytes_limit(0, 8972), 1);
    }

    #[test]
    fn batches_below_the_position_are_skipped() {
        assert_eq!(position_after_batch(10, 9), None);
        assert_eq!(position_after_batch(10, 10), Some(11));
        assert_eq!(position_after_batch(0, 4), Some(5));
        assert_eq!(position_after_batch(0, -1), None);
    }

    fn cursor(position: Position) -> PartitionCursor {
        PartitionCursor {
            partition: 2,
            route: Some(Route {
                slot: BrokerSlot(0),
                handle: PartitionHandle::new(1, 2),
            }),
            awaiting_leader_since: None,
            position,
            high_watermark: Some(100),
            durable_offset: Some(90),
            log_start_offset: Some(40),
            in_flight: None,
            next_fetch_at: Instant::now(),
        }
    }

    #[test]
    fn out_of_range_resets_per_policy() {
        let now = Instant::now();
        let mut c = cursor(Position::At(10));
        reset_position(&mut c, 10, OffsetReset::Earliest, now).unwrap();
        assert_eq!(c.position, Position::At(40));

        let mut c = cursor(Position::At(500));
        reset_position(&mut c, 500, OffsetReset::Latest, now).unwrap();
        assert_eq!(c.position, Position::At(100));

        let mut c = cursor(Position::At(500));
        let error = reset_position(&mut c, 500, OffsetReset::Fail, now).unwrap_err();
        assert!(matches!(
            error,
            ClientError::OffsetOutOfRange { offset: 500, .. }
        ));

        // A start of Latest probes offset 0; out of range there still lands at the end.
        let mut c = cursor(Position::Latest);
        reset_position(&mut c, 0, OffsetReset::Fail, now).unwrap();
        assert_eq!(c.position, Position::At(100));
    }

    #[test]
    fn out_of_range_without_known_bounds_is_an_error_not_a_loop() {
        let now = Instant::now();
        let mut c = cursor(Position::Earliest);
        c.log_start_offset = None;
        assert!(reset_position(&mut c, 0, OffsetReset::Earliest, now).is_err());
        // Resetting to the very offset that failed would fetch it again forever.
        let mut c = cursor(Position::At(40));
        assert!(reset_position(&mut c, 40, OffsetReset::Earliest, now).is_err());
    }
}

#[cfg(test)]
mod decode_tests {
    use super::*;
    use crate::TransportKind;
    use precursor_protocol::compression::Compression;
    use precursor_protocol::frame::decode_frame;
    use precursor_protocol::record_batch::{set_base_offset, RecordBatchBuilder};
    use std::net::UdpSocket;

    const TOPIC_ID: u16 = 9;

    /// A consumer of a silent loopback "broker", with topic `t` (2 partitions) assigned
    /// without a metadata round trip.
    fn silent_consumer(
        start: Position,
        tweak: impl FnOnce(&mut ConsumerConfig),
    ) -> (Consumer, UdpSocket) {
        let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
        silent.set_nonblocking(true).unwrap();
        let mut config = ConsumerConfig {
            client: ClientConfig {
                transport: TransportKind::Udp,
                broker: silent.local_addr().unwrap(),
                bootstrap_brokers: Vec::new(),
                bind: Some("127.0.0.1:0".parse().unwrap()),
                request_timeout_ms: 60_000,
                retransmit_backoff_max_ms: 60_000,
                delivery_timeout_ms: 600_000,
            },
            ..ConsumerConfig::default()
        };
        tweak(&mut config);
        let mut consumer = Consumer::new(config).unwrap();
        let meta = TopicMetadata {
            topic_id: TOPIC_ID,
            partition_count: 2,
            frame_bytes_max: 1472,
        };
        consumer.topic = Some(ConsumedTopic {
            name: "t".to_string(),
            meta,
            replicated: false,
            look_up_due: None,
            look_up_skip: None,
            look_up_prefer: None,
            look_up_rounds: 0,
            asked: String::new(),
            leader_look_ups: 0,
        });
        let now = Instant::now();
        consumer.cursors = (0..2)
            .map(|p| {
                let leader = Leader::Known(Route {
                    slot: BrokerSlot(0),
                    handle: PartitionHandle::new(TOPIC_ID, p),
                });
                PartitionCursor::new(p, &leader, start, now)
            })
            .collect();
        (consumer, silent)
    }

    fn fetches(silent: &UdpSocket) -> Vec<(FrameHeader, FetchRequest)> {
        let mut out = Vec::new();
        let mut buf = [0u8; 256];
        while let Ok(n) = silent.recv(&mut buf) {
            let (header, payload) = decode_frame(&buf[..n]).unwrap();
            out.push((header, FetchRequest::decode(payload).unwrap()));
        }
        out
    }

    /// A stored batch of `values` starting at `base_offset`.
    fn batch(base_offset: i64, values: &[&[u8]]) -> Vec<u8> {
        let mut builder = RecordBatchBuilder::new(Compression::None, 77, 0, 0, 1_000);
        for (i, v) in values.iter().enumerate() {
            builder.append(1_000 + i as i64, Some(b"k"), v, &[]);
        }
        let mut bytes = builder.finish();
        set_base_offset(&mut bytes, base_offset);
        bytes
    }

    fn fetch_data(
        request: &FrameHeader,
        bounds: FetchDataHeader,
        batches: &[Vec<u8>],
    ) -> (FrameHeader, Vec<u8>) {
        let mut payload = vec![0u8; FetchDataHeader::BYTES];
        bounds.encode(&mut payload);
        for b in batches {
            payload.extend_from_slice(b);
        }
        let header = FrameHeader::new(
            Opcode::FetchData,
            request.request_id,
            request.partition,
            payload.len(),
        );
        (header, payload)
    }

    fn bounds(high_watermark: u64, log_start_offset: u64) -> FetchDataHeader {
        FetchDataHeader {
            high_watermark,
            durable_offset: high_watermark,
            log_start_offset,
        }
    }

    #[test]
    fn fetched_batches_are_decoded_from_the_position_on() {
        let (mut consumer, silent) = silent_consumer(Position::At(3), |_| {});
        consumer.send_due_fetches(Instant::now()).unwrap();
        let sent = fetches(&silent);
        assert_eq!(sent.len(), 2, "one fetch per assigned partition");
        let (request, fetch) = sent[0];
        assert_eq!(fetch.offset, 3);
        assert_eq!(fetch.max_bytes, (1472 - 32 - 24) as u32);
        assert_eq!(request.flags & FLAG_FETCH_DURABLE_ONLY, 0);

        let a = batch(0, &[b"0", b"1", b"2", b"3", b"4"]);
        let b = batch(5, &[b"5", b"6", b"7"]);
        let (header, payload) = fetch_data(&request, bounds(10, 0), &[a, b]);
        let mut out = Vec::new();
        consumer
            .on_frame(BrokerSlot(0), &header, &payload, &mut out)
            .unwrap();
        let offsets: Vec<u64> = out.iter().map(|r| r.offset).collect();
        assert_eq!(offsets, vec![3, 4, 5, 6, 7]);
        assert!(out
            .iter()
            .all(|r| r.value == r.offset.to_string().into_bytes()));
        assert_eq!(out[0].key.as_deref(), Some(&b"k"[..]));
        assert_eq!(out[0].timestamp_ms, 1_003);
        let partition = PartitionHandle(request.partition).partition();
        assert!(out.iter().all(|r| r.partition == partition));
        assert!(consumer.positions().contains(&(partition, Some(8))));
        assert!(consumer.high_watermarks().contains(&(partition, Some(10))));
        assert!(!consumer.caught_up());

        // The same answer again (to a retransmission): stale, nothing handed out twice.
        consumer
            .on_frame(BrokerSlot(0), &header, &payload, &mut out)
            .unwrap();
        assert_eq!(out.len(), 5);
    }

    #[test]
    fn an_empty_answer_at_the_end_means_caught_up() {
        let (mut consumer, silent) = silent_consumer(Position::At(4), |_| {});
        consumer.send_due_fetches(Instant::now()).unwrap();
        let mut out = Vec::new();
        for (request, _) in fetches(&silent) {
            let (header, payload) = fetch_data(&request, bounds(4, 0), &[]);
            consumer
                .on_frame(BrokerSlot(0), &header, &payload, &mut out)
                .unwrap();
        }
        assert!(out.is_empty());
        assert!(consumer.caught_up());
    }

    #[test]
    fn latest_starts_at_the_high_watermark_and_earliest_at_the_log_start() {
        let (mut consumer, silent) = silent_consumer(Position::Latest, |_| {});
        consumer.send_due_fetches(Instant::now()).unwrap();
        let sent = fetches(&silent);
        assert!(
            sent.iter().all(|(_, f)| f.offset == 0),
            "the probe asks from 0"
        );
        let mut out = Vec::new();
        let (header, payload) = fetch_data(&sent[0].0, bounds(42, 0), &[batch(0, &[b"old"])]);
        consumer
            .on_frame(BrokerSlot(0), &header, &payload, &mut out)
            .unwrap();
        assert!(out.is_empty(), "records before the end are not handed out");
        assert_eq!(consumer.positions()[0], (0, Some(42)));

        let (mut consumer, silent) = silent_consumer(Position::Earliest, |_| {});
        consumer.send_due_fetches(Instant::now()).unwrap();
        let sent = fetches(&silent);
        let (header, payload) = fetch_data(&sent[0].0, bounds(2, 0), &[batch(0, &[b"a", b"b"])]);
        consumer
            .on_frame(BrokerSlot(0), &header, &payload, &mut out)
            .unwrap();
        assert_eq!(out.len(), 2);
        assert_eq!(consumer.positions()[0], (0, Some(2)));
    }

    #[test]
    fn out_of_range_answer_resets_to_the_log_start() {
        let (mut consumer, silent) = silent_consumer(Position::At(5), |_| {});
        consumer.send_due_fetches(Instant::now()).unwrap();
        let (request, _) = fetches(&silent)[0];
        let (mut header, payload) = fetch_data(&request, bounds(100, 50), &[]);
        header.error = ErrorCode::OffsetOutOfRange as u16;
        let mut out = Vec::new();
        consumer
            .on_frame(BrokerSlot(0), &header, &payload, &mut out)
            .unwrap();
        assert_eq!(consumer.positions()[0], (0, Some(50)));
    }

    #[test]
    fn a_corrupt_batch_is_an_error_and_the_position_stays() {
        let (mut consumer, silent) = silent_consumer(Position::At(0), |_| {});
        consumer.send_due_fetches(Instant::now()).unwrap();
        let (request, _) = fetches(&silent)[0];
        let mut damaged = batch(0, &[b"x", b"y"]);
        let last = damaged.len() - 1;
        damaged[last] ^= 0xff;
        let (header, payload) = fetch_data(&request, bounds(2, 0), &[damaged]);
        let mut out = Vec::new();
        let error = consumer
            .on_frame(BrokerSlot(0), &header, &payload, &mut out)
            .unwrap_err();
        assert!(
            matches!(
                error,
                ClientError::CorruptBatch {
                    partition: 0,
                    offset: 0,
                    ..
                }
            ),
            "{error:?}"
        );
        assert!(out.is_empty());
        assert_eq!(consumer.positions()[0], (0, Some(0)));
    }

    #[test]
    fn durable_only_sets_the_flag_and_reads_the_durable_end() {
        let (mut consumer, silent) = silent_consumer(Position::At(0), |c| c.durable_only = true);
        consumer.send_due_fetches(Instant::now()).unwrap();
        let sent = fetches(&silent);
        assert!(sent
            .iter()
            .all(|(h, _)| h.flags & FLAG_FETCH_DURABLE_ONLY != 0));
        let (header, payload) = fetch_data(
            &sent[0].0,
            FetchDataHeader {
                high_watermark: 10,
                durable_offset: 0,
                log_start_offset: 0,
            },
            &[],
        );
        consumer
            .on_frame(BrokerSlot(0), &header, &payload, &mut Vec::new())
            .unwrap();
        assert_eq!(consumer.high_watermarks()[0], (0, Some(0)));
    }

    #[test]
    fn unanswered_fetches_are_retransmitted_then_reported() {
        let (mut consumer, silent) = silent_consumer(Position::At(7), |c| {
            c.client.request_timeout_ms = 2;
            c.client.retransmit_backoff_max_ms = 4;
            c.client.delivery_timeout_ms = 40;
        });
        let mut out = Vec::new();
        // Bounded: each poll waits at most its timeout; the give-up comes after 40 ms.
        let mut error = None;
        for _ in 0..1_000 {
            match consumer.poll(Duration::from_millis(10), &mut out) {
                Ok(n) => assert_eq!(n, 0),
                Err(e) => {
                    error = Some(e);
                    break;
                }
            }
        }
        let error = error.expect("the fetch gives up");
        assert!(matches!(error, ClientError::NoAnswer { .. }), "{error:?}");
        let sent = fetches(&silent);
        assert!(sent.len() >= 4, "two partitions, each retransmitted");
        assert!(sent.iter().all(|(_, f)| f.offset == 7));
    }

    #[test]
    fn poll_without_assignment_is_a_usage_error() {
        let (mut consumer, _silent) = silent_consumer(Position::At(0), |_| {});
        consumer.cursors.clear();
        let error = consumer.poll(Duration::ZERO, &mut Vec::new()).unwrap_err();
        assert!(matches!(error, ClientError::Usage(_)));
    }

    #[test]
    fn not_leader_holds_the_partition_for_a_look_up_and_keeps_its_position() {
        let (mut consumer, silent) = silent_consumer(Position::At(5), |_| {});
        consumer.send_due_fetches(Instant::now()).unwrap();
        let sent = fetches(&silent);
        assert_eq!(sent.len(), 2);
        let (request, _) = sent[0];
        let mut refusal = FrameHeader::new(Opcode::Error, request.request_id, request.partition, 0);
        refusal.error = ErrorCode::NotLeaderOrFollower as u16;
        let mut out = Vec::new();
        consumer
            .on_frame(BrokerSlot(0), &refusal, &[], &mut out)
            .unwrap();
        let partition = PartitionHandle(request.partition).partition();
        let cursor = consumer
            .cursors
            .iter()
            .find(|c| c.partition == partition)
            .unwrap();
        assert!(cursor.awaiting_leader_since.is_some());
        assert_eq!(cursor.position, Position::At(5), "the position stays");
        let topic = consumer.topic.as_ref().unwrap();
        assert_eq!(topic.look_up_prefer, Some(BrokerSlot(0)));
        assert!(topic.look_up_due.is_some());
        // Nothing is fetched from it meanwhile, and nothing busy-waits on it.
        consumer
            .send_due_fetches(Instant::now() + Duration::from_secs(120))
            .unwrap();
        assert!(fetches(&silent)
            .iter()
            .all(|(h, _)| PartitionHandle(h.partition).partition() != partition));
        consumer.topic.as_mut().unwrap().look_up_due = None;
        assert!(consumer.next_timer().unwrap() > Instant::now());
    }
}
