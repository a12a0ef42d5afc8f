//! Broker leases, kept by whichever voter leads the Raft group.
//!
//! The lease rule (both sides):
//!
//! - **Controller** (here, on the Raft leader): a heartbeat of broker `b` at incarnation `i`
//!   is recorded at the instant it arrives, and accepted only after the leader has
//!   confirmed with a quorum (ReadIndex) that it still leads. A broker not heard from for
//!   `broker_session_ms` is fenced (`FenceBroker` proposed). A newly elected leader, and a
//!   newly registered incarnation, start with a full session from the moment this leader
//!   first sees them, so nobody is fenced for heartbeats sent to an earlier leader.
//! - **Broker** (the control plane's side, not in this crate): it reads its clock *before*
//!   it sends a heartbeat (`send_time`) and, once that heartbeat is accepted, trusts its
//!   lease until `send_time + broker_session_ms - lease_margin_ms`. The controller's clock
//!   for that broker starts at arrival, which is after `send_time`, and the leader that
//!   accepted was confirmed after arrival; any later leader starts its own session after
//!   its election, later still. So the broker's lease always ends before any controller
//!   can fence it; `lease_margin_ms` covers clock rate differences and the delay between
//!   reading the clock and acting on it.

use crate::command::MetadataCommand;
use crate::state::MetadataState;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What the leader knows of each broker's lease, in memory only.
#[derive(Default)]
pub struct LeaseTable {
    inner: Mutex<LeaseInner>,
}

#[derive(Default)]
struct LeaseInner {
    /// Broker -> (incarnation, last heartbeat or first sighting).
    heard: BTreeMap<u32, (u64, Instant)>,
    /// The Raft term this voter leads in, and since when it has known.
    leading: Option<(u64, Instant)>,
    /// FenceBroker proposals in flight: (broker, incarnation).
    fencing: BTreeSet<(u32, u64)>,
}

impl LeaseTable {
    fn lock(&self) -> std::sync::MutexGuard<'_, LeaseInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a heartbeat that arrived at `now`. Returns whether that incarnation is the
    /// registered, unfenced one (else the broker must register again).
    pub fn heartbeat(
        &self,
        state: &MetadataState,
        broker: u32,
        incarnation: u64,
        now: Instant,
    ) -> bool {
        let live = state
            .brokers
            .get(&broker)
            .is_some_and(|b| b.incarnation == incarnation && !b.fenced);
        if live {
            self.lock().heard.insert(broker, (incarnation, now));
        }
        live
    }

    /// This voter does not lead (or no longer): forget the leadership.
    pub fn not_leading(&self) {
        let mut inner = self.lock();
        inner.leading = None;
        inner.fencing.clear();
    }

    /// One controller tick while leading in `term`: the FenceBroker commands to propose
    /// now (each marked in flight until [`LeaseTable::fence_done`]).
    pub fn expired(
        &self,
        state: &MetadataState,
        term: u64,
        now: Instant,
        session: Duration,
    ) -> Vec<MetadataCommand> {
        let mut inner = self.lock();
        let since = match inner.leading {
            Some((leading_term, since)) if leading_term == term => since,
            _ => {
                inner.leading = Some((term, now));
                inner.fencing.clear();
                now
            }
        };
        let mut commands = Vec::new();
        for (id, broker) in &state.brokers {
            if broker.fenced {
                continue;
            }
            let last = match inner.heard.get(id) {
                Some((incarnation, at)) if *incarnation == broker.incarnation => *at,
                _ => {
                    // A new incarnation: its session starts now.
                    inner.heard.insert(*id, (broker.incarnation, now));
                    now
                }
            };
            let last = last.max(since);
            let key = (*id, broker.incarnation);
            if now.saturating_duration_since(last) >= session && !inner.fencing.contains(&key) {
                inner.fencing.insert(key);
                commands.push(MetadataCommand::FenceBroker {
                    id: *id,
                    incarnation: broker.incarnation,
                });
            }
        }
        commands
    }

    pub fn fence_done(&self, broker: u32, incarnation: u64) {
        self.lock().fencing.remove(&(broker, incarnation));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fences_only_after_a_full_session_from_leadership_and_registration() {
        let mut state = MetadataState::default();
        for id in 1..=2 {
            state.apply(&MetadataCommand::RegisterBroker {
                id,
                incarnation: 7,
                rack: String::new(),
                kafka: true,
            });
        }
        let table = LeaseTable::default();
        let session = Duration::from_millis(100);
        let t0 = Instant::now();
        assert!(table.expired(&state, 3, t0, session).is_empty());
        assert!(table.heartbeat(&state, 1, 7, t0 + Duration::from_millis(90)));
        assert!(!table.heartbeat(&state, 1, 6, t0));
        assert!(!table.heartbeat(&state, 9, 1, t0));
        let fence = table.expired(&state, 3, t0 + Duration::from_millis(120), session);
        assert_eq!(
            fence,
            vec![MetadataCommand::FenceBroker {
                id: 2,
                incarnation: 7
            }]
        );
        // In flight: not proposed twice.
        assert!(table
            .expired(&state, 3, t0 + Duration::from_millis(130), session)
            .is_empty());
        // A new term restarts every session.
        assert!(table
            .expired(&state, 4, t0 + Duration::from_millis(300), session)
            .is_empty());
    }
}
