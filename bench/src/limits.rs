//! The machine's limits, measured in the same run as everything else:
//!
//! - **memcpy bandwidth**: `copy_from_slice` between two buffers much larger than the L2
//!   (and usually the L3) cache, the median of several timed copies; GB/s counts the bytes
//!   copied once (not read + written).
//! - **shared-memory ping-pong**: two threads pinned to two cores bounce one atomic counter
//!   that has a cache line (128 bytes, for adjacent-line prefetch) to itself: the pinger
//!   writes an odd value, the ponger spins until it sees it and writes the next even one,
//!   the pinger spins until it sees that. One round trip is two cache-line transfers
//!   between the cores: the least any cross-core request/answer (an IPC ring, the command
//!   ring) can cost. Each round trip is timed with the monotonic clock (one read per round
//!   trip) into an HdrHistogram.

use crate::latency::LatencyRecorder;
use crate::result::RunResult;
use anyhow::{bail, Context, Result};
use nix::sched::{sched_setaffinity, CpuSet};
use nix::unistd::Pid;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// Smallest memcpy buffer, in MiB: well beyond any L2 and most L3 caches.
pub const MEMCPY_MIB_MIN: usize = 8;
pub const MEMCPY_MIB_MAX: usize = 4096;
/// Most timed copies in one memcpy measurement.
pub const MEMCPY_RUNS_MAX: u32 = 1_000;
/// Most round trips in one ping-pong measurement.
pub const PINGPONG_ROUND_TRIPS_MAX: u64 = 1_000_000_000;

/// The bandwidth of copying `mib` MiB, median of `runs` copies (after one untimed copy
/// that faults every page in).
pub fn memcpy(mib: usize, runs: u32) -> Result<RunResult> {
    if !(MEMCPY_MIB_MIN..=MEMCPY_MIB_MAX).contains(&mib) {
        bail!("--mib {mib}: must be {MEMCPY_MIB_MIN}..={MEMCPY_MIB_MAX} (larger than the caches)");
    }
    if !(1..=MEMCPY_RUNS_MAX).contains(&runs) {
        bail!("--runs {runs}: must be 1..={MEMCPY_RUNS_MAX}");
    }
    let bytes = mib << 20;
    let source: Vec<u8> = (0..bytes).map(|i| (i % 251) as u8).collect();
    let mut destination = vec![0u8; bytes];
    destination.copy_from_slice(&source);
    let mut seconds = Vec::with_capacity(runs as usize);
    for _ in 0..runs {
        let started = Instant::now();
        destination.copy_from_slice(std::hint::black_box(&source));
        std::hint::black_box(&mut destination);
        seconds.push(started.elapsed().as_secs_f64());
    }
    if destination[bytes - 1] != source[bytes - 1] {
        bail!("memcpy: the copy differs from its source");
    }
    let median = median(&mut seconds);
    let mut result = RunResult::new(
        "machine",
        "memory",
        "memcpy",
        u64::from(runs),
        bytes as u64,
        median,
    );
    result.msgs_per_sec = 1.0 / median.max(1e-12);
    result.mb_per_sec = bytes as f64 / median.max(1e-12) / 1e6;
    result.gb_per_sec = Some(result.mb_per_sec / 1e3);
    Ok(result)
}

/// The median of `values` (sorted in place); the mean of the middle two for an even count.
pub fn median(values: &mut [f64]) -> f64 {
    assert!(!values.is_empty(), "median of nothing");
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

/// One atomic alone on its cache line (two lines: the adjacent-line prefetcher pairs them).
#[repr(C, align(128))]
struct PaddedCounter {
    value: AtomicU64,
}

/// Pins the calling thread to `core`.
fn pin_to(core: usize) -> Result<()> {
    let mut set = CpuSet::new();
    set.set(core)
        .with_context(|| format!("core {core} is beyond the CPU set's size"))?;
    sched_setaffinity(Pid::from_raw(0), &set)
        .with_context(|| format!("cannot pin a thread to core {core} (is it online and allowed?)"))
}

/// `round_trips` measured round trips (after `warmup` unmeasured ones) between a thread on
/// `ping_core` and one on `pong_core`.
pub fn pingpong(
    ping_core: usize,
    pong_core: usize,
    round_trips: u64,
    warmup: u64,
) -> Result<RunResult> {
    if ping_core == pong_core {
        bail!("ping-pong needs two different cores (got {ping_core} twice)");
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if ping_core.max(pong_core) >= cores {
        bail!(
            "ping-pong: core {} does not exist here ({cores} cores)",
            ping_core.max(pong_core)
        );
    }
    if !(1..=PINGPONG_ROUND_TRIPS_MAX).contains(&round_trips) {
        bail!("--round-trips {round_trips}: must be 1..={PINGPONG_ROUND_TRIPS_MAX}");
    }
    let total = warmup + round_trips;
    let counter = Arc::new(PaddedCounter {
        value: AtomicU64::new(0),
    });
    let ponger = {
        let counter = Arc::clone(&counter);
        std::thread::Builder::new()
            .name("pong".into())
            .spawn(move || -> Result<()> {
                pin_to(pong_core)?;
                for i in 0..total {
                    let ping = 2 * i + 1;
                    while counter.value.load(Ordering::Acquire) != ping {
                        std::hint::spin_loop();
                    }
                    counter.value.store(ping + 1, Ordering::Release);
                }
                Ok(())
            })
            .context("cannot start the pong thread")?
    };
    pin_to(ping_core)?;
    let mut recorder = LatencyRecorder::new();
    let mut started = Instant::now();
    let mut last = started;
    for i in 0..total {
        if i == warmup {
            started = Instant::now();
            last = started;
        }
        let ping = 2 * i + 1;
        counter.value.store(ping, Ordering::Release);
        while counter.value.load(Ordering::Acquire) != ping + 1 {
            std::hint::spin_loop();
        }
        if i >= warmup {
            let now = Instant::now();
            recorder.record(last, now);
            last = now;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    ponger
        .join()
        .map_err(|_| anyhow::anyhow!("the pong thread panicked"))??;
    let mut result = RunResult::new("machine", "shm", "pingpong", round_trips, 8, seconds)
        .with_latency(&recorder);
    result.producers = 1;
    result.consumers = 1;
    result.latency_from = Some("send".into());
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(&mut [7.0]), 7.0);
    }

    #[test]
    fn memcpy_reports_a_bandwidth_and_refuses_small_buffers() {
        let r = memcpy(MEMCPY_MIB_MIN, 3).unwrap();
        assert_eq!(r.workload, "memcpy");
        assert_eq!(r.size, (MEMCPY_MIB_MIN as u64) << 20);
        assert!(r.gb_per_sec.unwrap() > 0.0);
        let error = memcpy(1, 3).unwrap_err().to_string();
        assert!(error.contains("larger than the caches"), "{error}");
        assert!(memcpy(MEMCPY_MIB_MIN, 0).is_err());
    }

    #[test]
    fn pingpong_counts_every_round_trip() {
        if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
            return;
        }
        let r = pingpong(0, 1, 2_000, 100).unwrap();
        assert_eq!(r.messages, 2_000);
        assert!(r.p50_us.unwrap() > 0.0);
        assert!(r.p50_us <= r.p99_us && r.p99_us <= r.max_us);
    }

    #[test]
    fn pingpong_refuses_one_core_twice_and_missing_cores() {
        assert!(pingpong(0, 0, 10, 0)
            .unwrap_err()
            .to_string()
            .contains("two different cores"));
        let error = pingpong(0, 4096, 10, 0).unwrap_err().to_string();
        assert!(error.contains("does not exist"), "{error}");
    }
}
