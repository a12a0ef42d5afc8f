//! When to send a request again, and when to give up on it.
//!
//! Attempt 0 is the first transmission. After attempt `k` the client waits
//! `min(request_timeout_ms * 2^k, retransmit_backoff_max_ms)` for an answer before sending
//! attempt `k + 1`. A request older than `delivery_timeout_ms` (counted from its first
//! transmission, or from `send()` for a producer's messages) is reported as failed.

use std::time::{Duration, Instant};

use crate::ClientConfig;

/// The largest exponent used by the doubling: 2^20 times the first timeout is beyond any
/// sensible back-off cap, and bounding it keeps the shift from overflowing.
const BACKOFF_DOUBLINGS_MAX: u32 = 20;

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct RetransmitSchedule {
    pub request_timeout_ms: u64,
    pub retransmit_backoff_max_ms: u64,
    pub delivery_timeout_ms: u64,
}

impl RetransmitSchedule {
    pub fn from_config(config: &ClientConfig) -> RetransmitSchedule {
        RetransmitSchedule {
            request_timeout_ms: config.request_timeout_ms.max(1),
            retransmit_backoff_max_ms: config
                .retransmit_backoff_max_ms
                .max(config.request_timeout_ms.max(1)),
            delivery_timeout_ms: config.delivery_timeout_ms,
        }
    }

    /// How long to wait for an answer after attempt `attempt` (0 = the first send).
    pub fn wait_ms(&self, attempt: u32) -> u64 {
        let doublings = attempt.min(BACKOFF_DOUBLINGS_MAX);
        self.request_timeout_ms
            .saturating_mul(1u64 << doublings)
            .min(self.retransmit_backoff_max_ms)
    }

    pub fn wait(&self, attempt: u32) -> Duration {
        Duration::from_millis(self.wait_ms(attempt))
    }

    /// When attempt `attempt + 1` is due, given that attempt `attempt` went out at `sent_at`.
    pub fn next_due(&self, sent_at: Instant, attempt: u32) -> Instant {
        sent_at + self.wait(attempt)
    }

    /// When a request first sent (or a message accepted) at `started_at` is given up.
    pub fn give_up_at(&self, started_at: Instant) -> Instant {
        started_at + Duration::from_millis(self.delivery_timeout_ms)
    }

    /// How many transmissions fit in the delivery timeout (the first one included).
    pub fn attempts_within_delivery_timeout(&self) -> u32 {
        let mut elapsed_ms = 0u64;
        let mut attempts = 0u32;
        while elapsed_ms < self.delivery_timeout_ms && attempts < u32::MAX {
            elapsed_ms = elapsed_ms.saturating_add(self.wait_ms(attempts));
            attempts += 1;
        }
        attempts.max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(first: u64, max: u64, delivery: u64) -> RetransmitSchedule {
        RetransmitSchedule {
            request_timeout_ms: first,
            retransmit_backoff_max_ms: max,
            delivery_timeout_ms: delivery,
        }
    }

    #[test]
    fn wait_doubles_then_caps() {
        let s = schedule(10, 100, 1_000);
        let waits: Vec<u64> = (0..7).map(|k| s.wait_ms(k)).collect();
        assert_eq!(waits, vec![10, 20, 40, 80, 100, 100, 100]);
    }

    #[test]
    fn huge_attempt_numbers_do_not_overflow() {
        let s = schedule(u64::MAX / 2, u64::MAX, 1_000);
        assert_eq!(s.wait_ms(u32::MAX), u64::MAX);
        let s = schedule(5, 1_000, 1_000);
        assert_eq!(s.wait_ms(64), 1_000);
        assert_eq!(s.wait_ms(u32::MAX), 1_000);
    }

    #[test]
    fn from_config_never_caps_below_the_first_wait() {
        let config = ClientConfig {
            request_timeout_ms: 50,
            retransmit_backoff_max_ms: 10,
            delivery_timeout_ms: 1_000,
            ..ClientConfig::default()
        };
        let s = RetransmitSchedule::from_config(&config);
        assert_eq!(s.wait_ms(0), 50);
        assert_eq!(s.wait_ms(3), 50);
        let zero = ClientConfig {
            request_timeout_ms: 0,
            ..ClientConfig::default()
        };
        assert!(RetransmitSchedule::from_config(&zero).wait_ms(0) >= 1);
    }

    #[test]
    fn attempts_fit_the_delivery_timeout() {
        // 10 + 20 + 40 + 80 = 150 < 200, + 100 = 250 >= 200: five sends.
        assert_eq!(schedule(10, 100, 200).attempts_within_delivery_timeout(), 5);
        assert_eq!(schedule(10, 100, 0).attempts_within_delivery_timeout(), 1);
        assert_eq!(schedule(10, 100, 10).attempts_within_delivery_timeout(), 1);
        assert_eq!(schedule(10, 100, 11).attempts_within_delivery_timeout(), 2);
    }

    #[test]
    fn due_times_follow_the_waits() {
        let s = schedule(10, 100, 1_000);
        let t0 = Instant::now();
        assert_eq!(s.next_due(t0, 2), t0 + Duration::from_millis(40));
        assert_eq!(s.give_up_at(t0), t0 + Duration::from_millis(1_000));
    }
}
