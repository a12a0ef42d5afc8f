//! Failed SASL authentications, counted per user name and per client address: after
//! `gateway.sasl_failures_max` failures within `gateway.sasl_failure_window_ms`, that
//! name (known or not: an unknown one is locked the same way) or address is locked for
//! `gateway.sasl_lockout_ms`; an attempt meanwhile is refused, right password or not, and
//! its answer waits `gateway.sasl_lockout_delay_ms`. A lock clears the failures counted,
//! so after it the client has the same few tries again.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Names and addresses tracked at once, at most: past it, entries with nothing in their
/// window and no lock are dropped; if none is, a new one is not tracked (its failures
/// are still refused like any, just not counted).
pub const LOCKOUT_ENTRIES_MAX: usize = 100_000;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Key {
    User(String),
    Address(IpAddr),
}

#[derive(Default)]
struct Failures {
    recent: VecDeque<Instant>,
    locked_until: Option<Instant>,
}

/// The lockout settings (from `[gateway]`).
#[derive(Clone, Copy, Debug)]
pub struct LockoutPolicy {
    pub failures_max: u32,
    pub window: Duration,
    pub lockout: Duration,
    pub delay: Duration,
}

impl LockoutPolicy {
    pub fn from_config(config: &precursor_config::GatewayConfig) -> LockoutPolicy {
        LockoutPolicy {
            failures_max: config.sasl_failures_max,
            window: Duration::from_millis(config.sasl_failure_window_ms),
            lockout: Duration::from_millis(config.sasl_lockout_ms),
            delay: Duration::from_millis(config.sasl_lockout_delay_ms),
        }
    }
}

/// What is locked out, and until when.
pub struct Lockout {
    pub policy: LockoutPolicy,
    entries: Mutex<HashMap<Key, Failures>>,
}

/// Why an attempt is refused without looking at its password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "too many failed authentications for this user or from this address: locked out for \
     {remaining_ms} ms more"
)]
pub struct LockedOut {
    pub remaining_ms: u64,
}

impl Lockout {
    pub fn new(policy: LockoutPolicy) -> Lockout {
        Lockout {
            policy,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn keys(user: Option<&str>, address: IpAddr) -> impl Iterator<Item = Key> {
        user.map(|u| Key::User(u.to_string()))
            .into_iter()
            .chain(std::iter::once(Key::Address(address)))
    }

    /// Err when `user` (if known yet) or `address` is locked out at `now`.
    pub fn check(
        &self,
        user: Option<&str>,
        address: IpAddr,
        now: Instant,
    ) -> Result<(), LockedOut> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let remaining = Lockout::keys(user, address)
            .filter_map(|key| entries.get(&key)?.locked_until)
            .filter(|until| *until > now)
            .map(|until| until - now)
            .max();
        match remaining {
            Some(left) => Err(LockedOut {
                remaining_ms: left.as_millis() as u64,
            }),
            None => Ok(()),
        }
    }

    /// Counts a failure of `user` (if its name was read) from `address`; whether it set
    /// a lock.
    pub fn failed(&self, user: Option<&str>, address: IpAddr, now: Instant) -> bool {
        let policy = self.policy;
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let mut locked = false;
        for key in Lockout::keys(user, address) {
            if !entries.contains_key(&key) && entries.len() >= LOCKOUT_ENTRIES_MAX {
                entries.retain(|_, f| {
                    f.locked_until.is_some_and(|u| u > now)
                        || f.recent.back().is_some_and(|t| now - *t < policy.window)
                });
                if entries.len() >= LOCKOUT_ENTRIES_MAX {
                    continue;
                }
            }
            let failures = entries.entry(key).or_default();
            while failures
                .recent
                .front()
                .is_some_and(|t| now.saturating_duration_since(*t) >= policy.window)
            {
                failures.recent.pop_front();
            }
            failures.recent.push_back(now);
            if failures.recent.len() >= policy.failures_max as usize {
                failures.recent.clear();
                failures.locked_until = Some(now + policy.lockout);
                locked = true;
            }
        }
        locked
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn n_failures_in_the_window_lock_the_user_and_the_address() {
        let lockout = Lockout::new(LockoutPolicy {
            failures_max: 3,
            window: Duration::from_secs(60),
            lockout: Duration::from_secs(10),
            delay: Duration::from_secs(1),
        });
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let t0 = Instant::now();
        assert!(!lockout.failed(Some("alice"), a, t0));
        assert!(!lockout.failed(Some("alice"), b, t0));
        assert!(lockout.check(Some("alice"), a, t0).is_ok());
        // The third failure of alice (from two addresses) locks alice, not the addresses.
        assert!(lockout.failed(Some("alice"), b, t0));
        assert!(lockout
            .check(Some("alice"), "10.0.0.3".parse().unwrap(), t0)
            .is_err());
        assert!(lockout.check(Some("bob"), a, t0).is_ok());
        // b failed twice already: once more (another user) locks b for everyone.
        assert!(lockout.failed(Some("bob"), b, t0));
        assert_eq!(
            lockout.check(Some("carol"), b, t0 + Duration::from_secs(4)),
            Err(LockedOut { remaining_ms: 6000 })
        );
        // The lock ends; old failures outside the window do not count.
        let later = t0 + Duration::from_secs(11);
        assert!(lockout.check(Some("alice"), b, later).is_ok());
        assert!(!lockout.failed(Some("alice"), a, later));
        assert!(!lockout.failed(None, a, later + Duration::from_secs(61)));
    }
}
