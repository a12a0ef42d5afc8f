//! What an lcore does with an iteration that found no work (Aeron's idle strategies).

use precursor_config::IdleStrategy;
use std::time::Duration;

/// Empty iterations spent spinning before the backoff strategy starts yielding.
const BACKOFF_SPINS: u32 = 1000;
/// ... and yielding before it starts parking.
const BACKOFF_YIELDS: u32 = 100;
const BACKOFF_PARK_US_MIN: u32 = 1;

pub struct Idle {
    strategy: IdleStrategy,
    park_us_max: u32,
    empty_iterations: u32,
    park_us: u32,
}

impl Idle {
    pub fn new(strategy: IdleStrategy, park_us_max: u32) -> Idle {
        Idle {
            strategy,
            park_us_max: park_us_max.max(BACKOFF_PARK_US_MIN),
            empty_iterations: 0,
            park_us: BACKOFF_PARK_US_MIN,
        }
    }

    /// Called after every iteration with the amount of work it did.
    #[inline]
    pub fn idle(&mut self, work: usize) {
        if work > 0 {
            self.empty_iterations = 0;
            self.park_us = BACKOFF_PARK_US_MIN;
            return;
        }
        self.empty_iterations = self.empty_iterations.saturating_add(1);
        match self.strategy {
            IdleStrategy::Spin => std::hint::spin_loop(),
            IdleStrategy::Yield => std::thread::yield_now(),
            IdleStrategy::Backoff => {
                if self.empty_iterations <= BACKOFF_SPINS {
                    std::hint::spin_loop();
                } else if self.empty_iterations <= BACKOFF_SPINS + BACKOFF_YIELDS {
                    std::thread::yield_now();
                } else {
                    std::thread::sleep(Duration::from_micros(self.park_us as u64));
                    self.park_us = (self.park_us * 2).min(self.park_us_max);
                }
            }
        }
    }
}
