//! The one result schema every run prints, whatever the system and transport: Precursor's
//! `precursor bench produce|consume --json`, the peer adapters and the machine's limits.
//!
//! One JSON object per run, on one line:
//!
//! | field | meaning |
//! |---|---|
//! | `schema` | 1 |
//! | `system` | `precursor`, `nats-jetstream`, `redis-streams`, `machine` (the limits) |
//! | `transport` | `udp`, `ipc`, `tcp`, `shm` (ping-pong), `memory` (memcpy) |
//! | `workload` | `produce`, `consume`, `memcpy`, `pingpong` |
//! | `durability` | `leader` or `durable` (what was matched, see docs/benchmarks.md), else null |
//! | `durability_detail` | the exact setting (`appendfsync always`, `chattr +S store dir`, ...) |
//! | `producers`, `consumers` | clients in the run |
//! | `messages`, `size` | messages measured (all producers / per consumer) and bytes each |
//! | `window` | most messages (peers) or batches (Precursor) un-acknowledged per producer |
//! | `rate` | the fixed offered rate, messages/s over all producers; null for as-fast-as-possible |
//! | `latency_from` | `intended` (fixed rate: coordinated-omission corrected) or `send` |
//! | `seconds`, `msgs_per_sec`, `mb_per_sec` | the measured interval and its rates |
//! | `p50_us` .. `p9999_us`, `max_us` | latency percentiles (produce -> ack; a round trip for ping-pong) |
//! | `curve` | `[percentile, us]` points for the plots |
//! | `gb_per_sec` | memcpy only |
//! | `errors` | lost, failed, corrupt or out-of-order messages: 0 in a valid run |

use crate::latency::{LatencyRecorder, LatencySummary};
use serde::{Deserialize, Serialize};

pub const SCHEMA_VERSION: u32 = 1;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunResult {
    pub schema: u32,
    pub system: String,
    pub transport: String,
    pub workload: String,
    #[serde(default)]
    pub durability: Option<String>,
    #[serde(default)]
    pub durability_detail: Option<String>,
    #[serde(default)]
    pub producers: u32,
    #[serde(default)]
    pub consumers: u32,
    pub messages: u64,
    pub size: u64,
    #[serde(default)]
    pub window: Option<u64>,
    #[serde(default)]
    pub rate: Option<f64>,
    #[serde(default)]
    pub latency_from: Option<String>,
    pub seconds: f64,
    pub msgs_per_sec: f64,
    #[serde(default)]
    pub mb_per_sec: f64,
    #[serde(default)]
    pub p50_us: Option<f64>,
    #[serde(default)]
    pub p90_us: Option<f64>,
    #[serde(default)]
    pub p99_us: Option<f64>,
    #[serde(default)]
    pub p999_us: Option<f64>,
    #[serde(default)]
    pub p9999_us: Option<f64>,
    #[serde(default)]
    pub max_us: Option<f64>,
    #[serde(default)]
    pub curve: Vec<[f64; 2]>,
    #[serde(default)]
    pub gb_per_sec: Option<f64>,
    pub errors: u64,
}

impl RunResult {
    /// A result with its rates computed and no latency yet.
    pub fn new(
        system: &str,
        transport: &str,
        workload: &str,
        messages: u64,
        size: u64,
        seconds: f64,
    ) -> RunResult {
        let msgs_per_sec = messages as f64 / seconds.max(1e-9);
        RunResult {
            schema: SCHEMA_VERSION,
            system: system.to_string(),
            transport: transport.to_string(),
            workload: workload.to_string(),
            durability: None,
            durability_detail: None,
            producers: 0,
            consumers: 0,
            messages,
            size,
            window: None,
            rate: None,
            latency_from: None,
            seconds,
            msgs_per_sec,
            mb_per_sec: msgs_per_sec * size as f64 / 1e6,
            p50_us: None,
            p90_us: None,
            p99_us: None,
            p999_us: None,
            p9999_us: None,
            max_us: None,
            curve: Vec::new(),
            gb_per_sec: None,
            errors: 0,
        }
    }

    pub fn with_latency(mut self, recorder: &LatencyRecorder) -> RunResult {
        if let Some(s) = recorder.summary() {
            self.set_latency(s);
        }
        self
    }

    pub fn set_latency(&mut self, s: LatencySummary) {
        self.p50_us = Some(s.p50_us);
        self.p90_us = Some(s.p90_us);
        self.p99_us = Some(s.p99_us);
        self.p999_us = Some(s.p999_us);
        self.p9999_us = Some(s.p9999_us);
        self.max_us = Some(s.max_us);
        self.curve = s.curve;
    }

    /// One line of JSON.
    pub fn to_json_line(&self) -> String {
        serde_json::to_string(self).expect("a RunResult always serialises")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_json() {
        let mut recorder = LatencyRecorder::new();
        recorder.record_ns(2_000);
        let mut r = RunResult::new("redis-streams", "tcp", "produce", 1_000, 100, 0.5)
            .with_latency(&recorder);
        r.durability = Some("durable".into());
        r.rate = Some(10_000.0);
        assert_eq!(r.msgs_per_sec, 2_000.0);
        assert!((r.mb_per_sec - 0.2).abs() < 1e-12);
        let mut back: RunResult = serde_json::from_str(&r.to_json_line()).unwrap();
        // Floats read back within an ulp or so (serde_json's fast parser).
        for (a, b) in back.curve.iter().zip(&r.curve) {
            assert!((a[0] - b[0]).abs() < 1e-9 && (a[1] - b[1]).abs() < 1e-9);
        }
        back.curve.clone_from(&r.curve);
        assert_eq!(back, r);
    }

    /// Precursor's CLI prints the same fields (and a few more: `acks`); a line of it with
    /// the optional fields absent still reads.
    #[test]
    fn reads_a_precursor_line() {
        let line = r#"{"schema":1,"system":"precursor","transport":"udp","workload":"produce",
            "acks":"leader","durability":"leader","producers":1,"consumers":0,"messages":5000,
            "size":100,"window":5,"rate":null,"latency_from":"send","seconds":0.01,
            "msgs_per_sec":500000,"mb_per_sec":50.0,"p50_us":40.1,"p90_us":60.0,"p99_us":300.2,
            "p999_us":900.0,"p9999_us":1000.0,"max_us":2000.0,"curve":[[50.0,40.1]],"errors":0}"#;
        let r: RunResult = serde_json::from_str(line).unwrap();
        assert_eq!(r.system, "precursor");
        assert_eq!(r.p99_us, Some(300.2));
        assert_eq!(r.gb_per_sec, None);
    }

    #[test]
    fn a_line_without_required_fields_is_refused() {
        let error = serde_json::from_str::<RunResult>(r#"{"schema":1,"system":"x"}"#).unwrap_err();
        assert!(error.to_string().contains("missing field"), "{error}");
    }
}
