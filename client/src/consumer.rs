//! The consumer: one Fetch in flight per assigned partition, retransmitted until answered
//! (fetches are idempotent by offset), whole batches decoded into records.
//!
//! Positions are the offset of the next record to hand out. A fetch asks for the batch that
//! holds the position; records below the position in that first batch are skipped. When a
//! partition is caught up (an empty answer) it is fetched again after `fetch_backoff_ms`;
//! while it has more, the next fetch goes out as soon as the previous answer is decoded.

use std::time::{Duration, Instant};

use precursor_protocol::frame::{
    ErrorCode, FetchDataHeader, FetchRequest, FrameHeader, Opcode, PartitionHandle,
    FLAG_FETCH_DURABLE_ONLY, FRAME_BYTES_MAX, FRAME_HEADER_BYTES,
};
use precursor_protocol::record_batch::{batches, records, BatchError};

use crate::metadata::{fetch_metadata, TopicMetadata};
use crate::retransmit::RetransmitSchedule;
use crate::transport::Transport;
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
    handle: PartitionHandle,
    position: Position,
    high_watermark: Option<u64>,
    durable_offset: Option<u64>,
    log_start_offset: Option<u64>,
    in_flight: Option<FetchInFlight>,
    next_fetch_at: Instant,
}

impl PartitionCursor {
    fn partition(&self) -> u16 {
        self.handle.partition()
    }

    /// The offset to ask for: the position, or 0 to learn the log's bounds.
    fn fetch_offset(&self) -> u64 {
        match self.position {
            Position::At(offset) => offset,
            Position::Earliest | Position::Latest => 0,
        }
    }
}

/// Consumes the partitions of one topic from one broker over UDP.
pub struct Consumer {
    transport: Transport,
    config: ConsumerConfig,
    schedule: RetransmitSchedule,
    topic: Option<(String, TopicMetadata)>,
    cursors: Vec<PartitionCursor>,
    /// A received payload, copied out of the transport's buffer to be decoded.
    payload_buf: Vec<u8>,
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
    /// earlier assignment. Fetches the topic's metadata (the topic must exist).
    pub fn assign(
        &mut self,
        topic: &str,
        partitions: Option<&[u16]>,
        start: StartOffset,
    ) -> Result<(), ClientError> {
        let meta = fetch_metadata(
            &mut self.transport,
            &self.schedule,
            topic,
            false,
            &mut |_, _| {},
        )?;
        let chosen: Vec<u16> = match partitions {
            Some(list) => list.to_vec(),
            None => (0..meta.partition_count).collect(),
        };
        if let Some(&bad) = chosen.iter().find(|&&p| p >= meta.partition_count) {
            return Err(ClientError::UnknownPartition {
                topic: topic.to_string(),
                partition: bad,
                partition_count: meta.partition_count,
            });
        }
        let now = Instant::now();
        let position = match start {
            StartOffset::Earliest => Position::Earliest,
            StartOffset::Latest => Position::Latest,
            StartOffset::Offset(offset) => Position::At(offset),
        };
        self.cursors = chosen
            .iter()
            .map(|&partition| PartitionCursor {
                handle: PartitionHandle::new(meta.topic_id, partition),
                position,
                high_watermark: None,
                durable_offset: None,
                log_start_offset: None,
                in_flight: None,
                next_fetch_at: now,
            })
            .collect();
        self.cursors.sort_by_key(|c| c.handle);
        self.cursors.dedup_by_key(|c| c.handle);
        self.topic = Some((topic.to_string(), meta));
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
                let Some((header, payload)) = self.transport.frame() else {
                    continue;
                };
                let mut buf = std::mem::take(&mut self.payload_buf);
                buf.clear();
                buf.extend_from_slice(payload);
                let result = self.on_frame(&header, &buf, out);
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

    fn end_of(&self, cursor: &PartitionCursor) -> Option<u64> {
        if self.config.durable_only {
            cursor.durable_offset
        } else {
            cursor.high_watermark
        }
    }

    fn topic_name(&self) -> &str {
        self.topic
            .as_ref()
            .map(|(name, _)| name.as_str())
            .unwrap_or("?")
    }

    fn next_timer(&self) -> Option<Instant> {
        self.cursors
            .iter()
            .map(|c| match &c.in_flight {
                Some(f) => f.next_due.min(self.schedule.give_up_at(f.first_sent_at)),
                None => c.next_fetch_at,
            })
            .min()
    }

    fn send_due_fetches(&mut self, now: Instant) -> Result<(), ClientError> {
        let frame_bytes_max = self
            .topic
            .as_ref()
            .map_or(FRAME_BYTES_MAX, |(_, meta)| meta.frame_bytes_max);
        let max_bytes = fetch_bytes_limit(self.config.fetch_max_bytes, frame_bytes_max);
        let flags = if self.config.durable_only {
            FLAG_FETCH_DURABLE_ONLY
        } else {
            0
        };
        for i in 0..self.cursors.len() {
            let cursor = &self.cursors[i];
            let (request_id, offset, attempts) = match cursor.in_flight {
                Some(f) if now >= self.schedule.give_up_at(f.first_sent_at) => {
                    self.cursors[i].in_flight = None;
                    let what = format!(
                        "fetch from partition {} of topic {} at offset {}",
                        self.cursors[i].partition(),
                        self.topic_name(),
                        f.offset
                    );
                    return Err(self.transport.no_answer(&what, f.attempts, f.first_sent_at));
                }
                Some(f) if now >= f.next_due => (f.request_id, f.offset, f.attempts),
                Some(_) => continue,
                None if now >= cursor.next_fetch_at => {
                    (self.transport.next_request_id(), cursor.fetch_offset(), 0)
                }
                None => continue,
            };
            let mut header = FrameHeader::new(
                Opcode::Fetch,
                request_id,
                cursor.handle.0,
                FetchRequest::BYTES,
            );
            header.flags = flags;
            let mut payload = [0u8; FetchRequest::BYTES];
            FetchRequest { offset, max_bytes }.encode(&mut payload);
            self.transport.send_frame(&header, &payload)?;
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
        Ok(())
    }

    /// Handles one frame from the broker.
    fn on_frame(
        &mut self,
        header: &FrameHeader,
        payload: &[u8],
        out: &mut Vec<ConsumedRecord>,
    ) -> Result<(), ClientError> {
        let Some(index) = self.cursors.iter().position(|c| {
            c.handle.0 == header.partition
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
            .map(|(name, _)| name.clone())
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
                Some(c) if c.is_retriable() => {
                    cursor.next_fetch_at = now + backoff.max(self.schedule.wait(0));
                    Ok(())
                }
                Some(ErrorCode::UnknownTopicOrPartition) => Err(ClientError::UnknownTopic {
                    topic,
                    broker: self.transport.broker(),
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
            handle: PartitionHandle::new(1, 2),
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
        consumer.topic = Some(("t".to_string(), meta));
        let now = Instant::now();
        consumer.cursors = (0..2)
            .map(|p| PartitionCursor {
                handle: PartitionHandle::new(TOPIC_ID, p),
                position: start,
                high_watermark: None,
                durable_offset: None,
                log_start_offset: None,
                in_flight: None,
                next_fetch_at: now,
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
        consumer.on_frame(&header, &payload, &mut out).unwrap();
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
        consumer.on_frame(&header, &payload, &mut out).unwrap();
        assert_eq!(out.len(), 5);
    }

    #[test]
    fn an_empty_answer_at_the_end_means_caught_up() {
        let (mut consumer, silent) = silent_consumer(Position::At(4), |_| {});
        consumer.send_due_fetches(Instant::now()).unwrap();
        let mut out = Vec::new();
        for (request, _) in fetches(&silent) {
            let (header, payload) = fetch_data(&request, bounds(4, 0), &[]);
            consumer.on_frame(&header, &payload, &mut out).unwrap();
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
        consumer.on_frame(&header, &payload, &mut out).unwrap();
        assert!(out.is_empty(), "records before the end are not handed out");
        assert_eq!(consumer.positions()[0], (0, Some(42)));

        let (mut consumer, silent) = silent_consumer(Position::Earliest, |_| {});
        consumer.send_due_fetches(Instant::now()).unwrap();
        let sent = fetches(&silent);
        let (header, payload) = fetch_data(&sent[0].0, bounds(2, 0), &[batch(0, &[b"a", b"b"])]);
        consumer.on_frame(&header, &payload, &mut out).unwrap();
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
        consumer.on_frame(&header, &payload, &mut out).unwrap();
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
        let error = consumer.on_frame(&header, &payload, &mut out).unwrap_err();
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
            .on_frame(&header, &payload, &mut Vec::new())
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
}
