//! Latency measurement with coordinated-omission correction.
//!
//! A fixed-rate run gives every message an *intended* send time, `start + i / rate`, before
//! the run starts ([`Schedule`]). A message's latency is measured from that intended time
//! to its acknowledgment, not from the moment it was actually sent: when the system under
//! test stalls (or the sender's window fills), every message that should have gone out
//! during the stall is charged the time it waited. Measuring from the actual send instead
//! would drop exactly those waits — Gil Tene's "coordinated omission" — and report the
//! stall as one slow message.
//!
//! [`LatencyRecorder`] keeps the latencies in an HdrHistogram (1 ns .. 60 s, 3 significant
//! digits) and summarises them as [`LatencySummary`].

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

/// Highest latency the histograms track, in nanoseconds (60 s); longer ones saturate.
pub const LATENCY_NS_MAX: u64 = 60_000_000_000;
/// Significant decimal digits the histograms keep (0.1 % resolution).
const HISTOGRAM_DIGITS: u8 = 3;
/// Highest fixed rate a run may ask for, in messages per second.
pub const RATE_MAX: f64 = 100_000_000.0;

/// The intended send times of a fixed-rate run: message `i` is due at `start + i / rate`.
#[derive(Clone, Copy, Debug)]
pub struct Schedule {
    start: Instant,
    interval_ns: f64,
}

impl Schedule {
    /// `rate` messages per second from `start`. Panics on a rate outside (0, RATE_MAX]: the
    /// command line checks it first.
    pub fn new(start: Instant, rate: f64) -> Schedule {
        assert!(
            rate > 0.0 && rate <= RATE_MAX,
            "rate {rate} outside (0, {RATE_MAX}]"
        );
        Schedule {
            start,
            interval_ns: 1e9 / rate,
        }
    }

    /// When message `index` is due.
    pub fn intended(&self, index: u64) -> Instant {
        self.start + Duration::from_nanos((index as f64 * self.interval_ns).round() as u64)
    }

    /// The schedule of producer `producer` of `producers` sharing a total `rate`: each
    /// producer runs at `rate / producers`, shifted by its share of one interval so the
    /// producers interleave instead of sending in bursts.
    pub fn for_producer(start: Instant, rate: f64, producer: u32, producers: u32) -> Schedule {
        assert!(producers > 0 && producer < producers);
        let own_rate = rate / f64::from(producers);
        let shift_ns = (1e9 / rate) * f64::from(producer);
        Schedule::new(
            start + Duration::from_nanos(shift_ns.round() as u64),
            own_rate,
        )
    }
}

/// Latencies of one run (or the merge of several producers' runs).
pub struct LatencyRecorder {
    histogram: Histogram<u64>,
}

impl Default for LatencyRecorder {
    fn default() -> Self {
        LatencyRecorder::new()
    }
}

impl LatencyRecorder {
    pub fn new() -> LatencyRecorder {
        LatencyRecorder {
            histogram: Histogram::new_with_bounds(1, LATENCY_NS_MAX, HISTOGRAM_DIGITS)
                .expect("static histogram bounds are valid"),
        }
    }

    /// One message: from `from` (its intended send time in a fixed-rate run, else its
    /// actual send time) to `completed` (its acknowledgment). A completion before `from`
    /// cannot happen with a monotonic clock; it is recorded as 1 ns rather than dropped.
    pub fn record(&mut self, from: Instant, completed: Instant) {
        let ns = completed.saturating_duration_since(from).as_nanos();
        self.record_ns(u64::try_from(ns).unwrap_or(u64::MAX));
    }

    pub fn record_ns(&mut self, ns: u64) {
        self.histogram
            .saturating_record(ns.clamp(1, LATENCY_NS_MAX));
    }

    /// Adds another recorder's latencies (several producers of one run).
    pub fn merge(&mut self, other: &LatencyRecorder) {
        self.histogram
            .add(&other.histogram)
            .expect("recorders share their bounds");
    }

    pub fn count(&self) -> u64 {
        self.histogram.len()
    }

    pub fn histogram(&self) -> &Histogram<u64> {
        &self.histogram
    }

    /// Percentiles in microseconds; `None` when nothing was recorded.
    pub fn summary(&self) -> Option<LatencySummary> {
        LatencySummary::from_histogram(&self.histogram)
    }
}

/// The percentiles every result reports, in microseconds, and the curve the plots draw.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub p9999_us: f64,
    pub max_us: f64,
    /// `[percentile, microseconds]` pairs from 0 up to 99.9999 %, log-spaced in
    /// 1 / (1 - q): the "latency by percentile" curve of the plots.
    pub curve: Vec<[f64; 2]>,
}

/// The curve's points per factor of ten in 1 / (1 - q).
const CURVE_POINTS_PER_DECADE: u32 = 10;
/// The curve stops at 1 - 10^-6 = 99.9999 %.
const CURVE_DECADES: u32 = 6;

impl LatencySummary {
    pub fn from_histogram(histogram: &Histogram<u64>) -> Option<LatencySummary> {
        if histogram.is_empty() {
            return None;
        }
        let us = |q: f64| histogram.value_at_quantile(q) as f64 / 1e3;
        let mut curve = Vec::with_capacity((CURVE_POINTS_PER_DECADE * CURVE_DECADES + 1) as usize);
        for step in 0..=CURVE_POINTS_PER_DECADE * CURVE_DECADES {
            let q = 1.0 - 10f64.powf(-f64::from(step) / f64::from(CURVE_POINTS_PER_DECADE));
            // Percent, rounded to 1e-6 so the JSON stays short.
            curve.push([(q * 1e8).round() / 1e6, us(q)]);
        }
        Some(LatencySummary {
            p50_us: us(0.5),
            p90_us: us(0.9),
            p99_us: us(0.99),
            p999_us: us(0.999),
            p9999_us: us(0.9999),
            max_us: histogram.max() as f64 / 1e3,
            curve,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_spaces_messages_by_the_interval() {
        let start = Instant::now();
        let schedule = Schedule::new(start, 10_000.0);
        assert_eq!(schedule.intended(0), start);
        assert_eq!(schedule.intended(1) - start, Duration::from_micros(100));
        assert_eq!(schedule.intended(10_000) - start, Duration::from_secs(1));
        // No drift over a long run: the time of message i is computed, not accumulated.
        let third = Schedule::new(start, 3.0);
        assert_eq!(
            third.intended(3_000_000) - start,
            Duration::from_secs(1_000_000)
        );
    }

    #[test]
    fn producers_share_the_rate_and_interleave() {
        let start = Instant::now();
        let a = Schedule::for_producer(start, 1_000.0, 0, 2);
        let b = Schedule::for_producer(start, 1_000.0, 1, 2);
        // 500/s each, b half a producer-interval (one total interval) after a.
        assert_eq!(a.intended(1) - a.intended(0), Duration::from_millis(2));
        assert_eq!(b.intended(0) - start, Duration::from_millis(1));
        assert_eq!(b.intended(1) - start, Duration::from_millis(3));
    }

    #[test]
    #[should_panic(expected = "outside")]
    fn schedule_refuses_a_zero_rate() {
        Schedule::new(Instant::now(), 0.0);
    }

    /// The point of measuring from the intended time: a 10 ms stall at 1,000 msgs/s delays
    /// ten messages. Measured from their actual send (just after the stall, each answered in
    /// 50 us) they look fast; from their intended times they waited 10 ms, 9 ms, ... 1 ms.
    #[test]
    fn intended_time_charges_a_stall_to_every_message_it_delayed() {
        let start = Instant::now();
        let schedule = Schedule::new(start, 1_000.0);
        let service = Duration::from_micros(50);
        let stall_end = start + Duration::from_millis(10);
        let mut corrected = LatencyRecorder::new();
        let mut naive = LatencyRecorder::new();
        for i in 0..100u64 {
            let intended = schedule.intended(i);
            // Messages due during the stall go out when it ends, back to back.
            let sent = intended.max(stall_end);
            let completed = sent + service;
            corrected.record(intended, completed);
            naive.record(sent, completed);
        }
        let naive = naive.summary().unwrap();
        let corrected = corrected.summary().unwrap();
        assert!((naive.max_us - 50.0).abs() < 0.1, "{naive:?}");
        assert!((naive.p99_us - 50.0).abs() < 0.1);
        // Message 0 waited the whole stall plus service: 10.05 ms.
        assert!(
            (corrected.max_us - 10_050.0).abs() < 10.0,
            "{}",
            corrected.max_us
        );
        // 10 of 100 were delayed by 1.05 .. 10.05 ms: the 99th latency is message 1's,
        // 9.05 ms, where the naive p99 above saw 50 us; the 90 on time stay at 50 us.
        assert!(
            (corrected.p99_us - 9_050.0).abs() < 10.0,
            "{}",
            corrected.p99_us
        );
        assert!(
            (corrected.p90_us - 50.0).abs() < 0.1,
            "{}",
            corrected.p90_us
        );
        assert!((corrected.p50_us - 50.0).abs() < 0.1);
    }

    #[test]
    fn percentiles_of_a_known_distribution() {
        let mut recorder = LatencyRecorder::new();
        // 1..=10_000 microseconds, once each.
        for us in 1..=10_000u64 {
            recorder.record_ns(us * 1_000);
        }
        let s = recorder.summary().unwrap();
        let near = |value: f64, expected: f64| (value - expected).abs() <= expected * 0.001 + 0.01;
        assert!(near(s.p50_us, 5_000.0), "{}", s.p50_us);
        assert!(near(s.p90_us, 9_000.0), "{}", s.p90_us);
        assert!(near(s.p99_us, 9_900.0), "{}", s.p99_us);
        assert!(near(s.p999_us, 9_990.0), "{}", s.p999_us);
        assert!(near(s.p9999_us, 9_999.0), "{}", s.p9999_us);
        assert!(near(s.max_us, 10_000.0), "{}", s.max_us);
        // The curve rises monotonically from the minimum to 99.9999 %.
        assert_eq!(s.curve.len(), 61);
        assert_eq!(s.curve[0][0], 0.0);
        assert!((s.curve[60][0] - 99.9999).abs() < 1e-9);
        assert!(s
            .curve
            .windows(2)
            .all(|w| w[0][0] < w[1][0] && w[0][1] <= w[1][1]));
    }

    #[test]
    fn merged_recorders_count_both() {
        let mut a = LatencyRecorder::new();
        let mut b = LatencyRecorder::new();
        a.record_ns(1_000);
        b.record_ns(3_000_000);
        a.merge(&b);
        assert_eq!(a.count(), 2);
        assert!((a.summary().unwrap().max_us - 3_000.0).abs() < 3.0);
    }

    #[test]
    fn empty_and_out_of_range_values() {
        let mut recorder = LatencyRecorder::new();
        assert!(recorder.summary().is_none());
        let t = Instant::now();
        // A completion "before" the start is clamped to 1 ns, and a huge value saturates.
        recorder.record(t + Duration::from_secs(1), t);
        recorder.record_ns(u64::MAX);
        assert_eq!(recorder.count(), 2);
        let s = recorder.summary().unwrap();
        assert!(s.max_us >= LATENCY_NS_MAX as f64 / 1e3 * 0.999);
    }
}
