//! Who leads each partition of a topic, and where its requests go.
//!
//! A broker of a cluster answers Metadata with its own numbering of the topic (topic ids
//! are per broker) and [`MetadataLeaders`]: its id (`me`), each partition's leader as it
//! sees it, and the leaders' data-plane addresses. A look-up asks brokers one at a time:
//! a broker naming a leader it has not heard from yet sends the look-up there next, since
//! only the leader's own answer gives its handle for the partition and confirms that it
//! leads (a follower may still name a leader that is down). It stops once every wanted
//! partition has a confirmed leader, or every known broker was asked once.
//!
//! ```text
//!  bootstrap (broker 1)          broker 2                   broker 3
//!  Metadata "t" ------------>
//!  <- id 4, leaders [1,2,3]
//!                               Metadata "t" ---------->
//!                               <- id 0, leaders [1,2,3]
//!                                                          Metadata "t" ---------->
//!                                                          <- id 7, leaders [1,2,3]
//!  routes: p0 -> broker 1 handle (4,0), p1 -> broker 2 (0,1), p2 -> broker 3 (7,2)
//! ```
//!
//! A broker outside a cluster (no section) leads every partition it has: one Metadata,
//! every partition routed to it, exactly as before clusters.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use precursor_protocol::frame::{FrameHeader, PartitionHandle};

use crate::error::BrokerAddress;
use crate::metadata::{fetch_metadata, MetadataAnswer};
use crate::retransmit::RetransmitSchedule;
use crate::transport::{BrokerSlot, Transport};
use crate::{ClientConfig, ClientError};

/// Where one partition's requests go: a broker and that broker's handle for it.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Route {
    pub slot: BrokerSlot,
    pub handle: PartitionHandle,
}

/// A partition's leader as a look-up found it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Leader {
    /// The broker that said it leads the partition.
    Known(Route),
    /// No broker asked says it leads it: being decided (0), or the broker named is down.
    Unknown,
    /// Led by a broker this client cannot send to (IPC and RDMA reach one data plane).
    Elsewhere {
        broker_id: u8,
        address: Option<SocketAddr>,
        reason: &'static str,
    },
}

impl Leader {
    pub fn route(&self) -> Option<Route> {
        match self {
            Leader::Known(route) => Some(*route),
            _ => None,
        }
    }

    /// The error for sending to a partition led elsewhere.
    pub fn elsewhere_error(&self, topic: &str, partition: u16) -> Option<ClientError> {
        let Leader::Elsewhere {
            broker_id,
            address,
            reason,
        } = self
        else {
            return None;
        };
        Some(ClientError::LedElsewhere {
            topic: topic.to_string(),
            partition,
            broker_id: *broker_id,
            address: address.map_or_else(|| "an unknown address".to_string(), |a| a.to_string()),
            reason: reason.to_string(),
        })
    }
}

/// What a look-up learned about a topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct LeaderView {
    pub partition_count: u16,
    /// The smallest frame limit among the brokers that answered.
    pub frame_bytes_max: usize,
    /// Some broker answered as a member of a cluster: leaders can move.
    pub replicated: bool,
    /// One per partition.
    pub leaders: Vec<Leader>,
    /// The brokers asked, for messages: `10.0.0.1:9190 (broker 1), 10.0.0.2:9190 (no answer)`.
    pub asked: String,
}

/// Why a leader named by Metadata cannot be sent to.
const IPC_REACHES_ONE: &str = "IPC reaches only this host's data plane";
const RDMA_REACHES_ONE: &str = "this RDMA connection reaches only the data plane it is attached to";
const TOO_MANY_BROKERS: &str = "this client sends to at most 64 brokers";

/// The answers of a look-up so far, and what they say about each partition.
#[derive(Debug, Default)]
pub(crate) struct Claims {
    /// From the first answer.
    partition_count: u16,
    frame_bytes_max: usize,
    replicated: bool,
    answers: usize,
    /// Per partition: the brokers that say they lead it (slot, their topic id, broker id).
    claimed: Vec<Vec<(BrokerSlot, u16, u8)>>,
    /// Per partition: how many answers name each broker id as its leader.
    named: Vec<Vec<(u8, u32)>>,
    /// Leaders named that cannot be sent to: (id, address, why).
    unreachable: Vec<(u8, Option<SocketAddr>, &'static str)>,
}

impl Claims {
    /// Takes broker `slot`'s answer in; returns the leaders it names that have not
    /// answered yet, with their addresses (when the section gave them).
    pub fn add(
        &mut self,
        slot: BrokerSlot,
        answer: &MetadataAnswer,
    ) -> Vec<(u8, Option<SocketAddr>)> {
        let meta = answer.meta;
        if self.answers == 0 {
            self.partition_count = meta.partition_count;
            self.frame_bytes_max = meta.frame_bytes_max;
            self.claimed = vec![Vec::new(); meta.partition_count as usize];
            self.named = vec![Vec::new(); meta.partition_count as usize];
        }
        self.answers += 1;
        self.frame_bytes_max = self.frame_bytes_max.min(meta.frame_bytes_max);
        let count = self.partition_count.min(meta.partition_count);
        let section = answer.leaders.as_ref().filter(|l| l.me != 0);
        let Some(section) = section else {
            // Outside a cluster a broker leads every partition it has.
            for p in 0..count {
                self.claimed[p as usize].push((slot, meta.topic_id, 0));
            }
            return Vec::new();
        };
        self.replicated = true;
        let mut to_ask: Vec<(u8, Option<SocketAddr>)> = Vec::new();
        for p in 0..count {
            let Some(leader) = section.leaders.get(p as usize).copied().filter(|&l| l != 0) else {
                continue;
            };
            let votes = &mut self.named[p as usize];
            match votes.iter_mut().find(|(id, _)| *id == leader) {
                Some((_, n)) => *n += 1,
                None => votes.push((leader, 1)),
            }
            if leader == section.me {
                self.claimed[p as usize].push((slot, meta.topic_id, leader));
            } else if !to_ask.iter().any(|(id, _)| *id == leader) {
                let address = section
                    .brokers
                    .iter()
                    .find(|b| b.0 == leader)
                    .map(|b| SocketAddr::new(IpAddr::V4(b.1), b.2));
                to_ask.push((leader, address));
            }
        }
        // Those already claiming something answered: nothing more to ask them.
        to_ask.retain(|(id, _)| !self.claimed.iter().flatten().any(|c| c.2 == *id));
        to_ask
    }

    /// Leader `broker_id` (at `address`) cannot be sent to, for `reason`.
    pub fn unreachable(
        &mut self,
        broker_id: u8,
        address: Option<SocketAddr>,
        reason: &'static str,
    ) {
        if !self.unreachable.iter().any(|u| u.0 == broker_id) {
            self.unreachable.push((broker_id, address, reason));
        }
    }

    /// Whether each of `wanted` (every partition when `None`) has a confirmed leader.
    pub fn settled(&self, wanted: Option<&[u16]>) -> bool {
        if self.answers == 0 {
            return false;
        }
        let claimed = |p: u16| self.claimed.get(p as usize).is_some_and(|c| !c.is_empty());
        match wanted {
            Some(list) => list
                .iter()
                .all(|&p| p >= self.partition_count || claimed(p)),
            None => (0..self.partition_count).all(claimed),
        }
    }

    /// Each partition's leader: the broker claiming it (the claim most answers agree
    /// with, the latest on a tie), else a named leader that cannot be sent to, else
    /// unknown.
    pub fn leaders(&self) -> Vec<Leader> {
        (0..self.partition_count as usize)
            .map(|p| {
                let votes = |id: u8| {
                    self.named[p]
                        .iter()
                        .find(|(named, _)| *named == id)
                        .map_or(0, |(_, n)| *n)
                };
                let claim = self.claimed[p]
                    .iter()
                    .enumerate()
                    .max_by_key(|(order, c)| (votes(c.2), *order))
                    .map(|(_, c)| *c);
                if let Some((slot, topic_id, _)) = claim {
                    return Leader::Known(Route {
                        slot,
                        handle: PartitionHandle::new(topic_id, p as u16),
                    });
                }
                let most_named = self.named[p]
                    .iter()
                    .max_by_key(|(_, n)| *n)
                    .map(|(id, _)| *id);
                match most_named.and_then(|id| self.unreachable.iter().find(|u| u.0 == id)) {
                    Some(&(broker_id, address, reason)) => Leader::Elsewhere {
                        broker_id,
                        address,
                        reason,
                    },
                    None => Leader::Unknown,
                }
            })
            .collect()
    }
}

/// What to ask, in which order.
pub(crate) struct LeaderQuery<'a> {
    pub topic: &'a str,
    /// Ask the first broker to create the topic if it does not know it.
    pub auto_create: bool,
    /// Asked first, in this order; then every other broker the transport knows.
    pub first: Vec<BrokerSlot>,
    /// Never asked: a broker that stopped answering (its requests keep retrying it).
    pub skip: Option<BrokerSlot>,
    /// Stop once these partitions have a confirmed leader (`None`: every partition).
    pub wanted: Option<Vec<u16>>,
    /// The first broker asked waits this (the others `per_broker`).
    pub first_schedule: RetransmitSchedule,
    pub per_broker: RetransmitSchedule,
}

/// The wait for one broker's Metadata during a look-up: a few retransmissions (three at
/// the default 20 ms), never the whole delivery timeout, so a broker that is down holds a
/// look-up up only briefly.
pub(crate) fn per_broker_schedule(schedule: &RetransmitSchedule) -> RetransmitSchedule {
    /// 20 + 40 + 80: three transmissions at the first timeout, doubling.
    const TRIES_SPAN: u64 = 7;
    RetransmitSchedule {
        delivery_timeout_ms: schedule
            .request_timeout_ms
            .saturating_mul(TRIES_SPAN)
            .clamp(50, 1_000)
            .min(schedule.delivery_timeout_ms.max(1)),
        ..*schedule
    }
}

/// Asks brokers for `query.topic`'s Metadata (see the module's description) and returns
/// what they say; the first error when no broker answered. Frames answering other requests
/// go to `other`. Bounded: each broker is asked at most once ([`crate::transport::BROKERS_MAX`]).
pub(crate) fn look_up(
    transport: &mut Transport,
    query: &LeaderQuery<'_>,
    other: &mut dyn FnMut(BrokerSlot, &FrameHeader, &[u8]),
) -> Result<LeaderView, ClientError> {
    let mut queue: VecDeque<BrokerSlot> = query.first.iter().copied().collect();
    queue.extend(transport.slots().filter(|s| !query.first.contains(s)));
    let mut claims = Claims::default();
    let mut asked: Vec<BrokerSlot> = Vec::new();
    let mut described = String::new();
    let mut first_error: Option<ClientError> = None;
    while let Some(slot) = queue.pop_front() {
        if asked.contains(&slot) || Some(slot) == query.skip {
            continue;
        }
        if claims.settled(query.wanted.as_deref()) {
            break;
        }
        let schedule = if asked.is_empty() {
            &query.first_schedule
        } else {
            &query.per_broker
        };
        asked.push(slot);
        let answer = fetch_metadata(
            transport,
            slot,
            schedule,
            query.topic,
            query.auto_create && asked.len() == 1,
            other,
        );
        if !described.is_empty() {
            described.push_str(", ");
        }
        let _ = write!(described, "{}", transport.broker(slot));
        let answer = match answer {
            Ok(answer) => answer,
            Err(error) => {
                let _ = match &error {
                    ClientError::NoAnswer { .. } | ClientError::Timeout { .. } => {
                        write!(described, " (no answer)")
                    }
                    ClientError::UnknownTopic { .. } => write!(described, " (no such topic)"),
                    other => write!(described, " ({other})"),
                };
                first_error.get_or_insert(error);
                continue;
            }
        };
        if let Some(section) = answer.leaders.as_ref().filter(|l| l.me != 0) {
            transport.set_broker_id(slot, section.me);
            let _ = write!(described, " (broker {})", section.me);
        }
        for (broker_id, address) in claims.add(slot, &answer) {
            let reachable = address.and_then(|a| transport.slot_for(broker_id, a));
            match reachable {
                Some(next) if !asked.contains(&next) => queue.push_front(next),
                Some(_) => {}
                // Over UDP a leader whose address did not fit the answer stays unknown.
                None if transport.reaches_other_brokers() && address.is_none() => {}
                None => claims.unreachable(broker_id, address, unreachable_reason(transport)),
            }
        }
    }
    if claims.answers == 0 {
        return Err(first_error.unwrap_or_else(|| ClientError::Protocol {
            detail: format!("no broker to ask for topic '{}'", query.topic),
        }));
    }
    Ok(LeaderView {
        partition_count: claims.partition_count,
        frame_bytes_max: claims.frame_bytes_max,
        replicated: claims.replicated,
        leaders: claims.leaders(),
        asked: described,
    })
}

/// A topic's first look-up: the bootstrap brokers' Metadata (asking the first to create
/// the topic when `auto_create`), then each leader's. With one bootstrap broker it is
/// waited for up to the delivery timeout (as any request); with several each is asked
/// briefly in turn, round after round, until one answers or the delivery timeout passes.
pub(crate) fn learn_topic(
    transport: &mut Transport,
    config: &ClientConfig,
    schedule: &RetransmitSchedule,
    topic: &str,
    auto_create: bool,
    other: &mut dyn FnMut(BrokerSlot, &FrameHeader, &[u8]),
) -> Result<LeaderView, ClientError> {
    let per_broker = per_broker_schedule(schedule);
    let bootstrap = transport.bootstrap_slots(config);
    let query = LeaderQuery {
        topic,
        auto_create,
        first_schedule: if bootstrap.len() == 1 {
            *schedule
        } else {
            per_broker
        },
        first: bootstrap,
        skip: None,
        wanted: None,
        per_broker,
    };
    let give_up_at = schedule.give_up_at(Instant::now());
    // Bounded by the delivery timeout: each round waits for at least one broker.
    loop {
        match look_up(transport, &query, other) {
            Err(ClientError::NoAnswer { .. } | ClientError::Timeout { .. })
                if query.first.len() > 1 && Instant::now() < give_up_at => {}
            result => return result,
        }
    }
}

fn unreachable_reason(transport: &Transport) -> &'static str {
    match transport.broker(BrokerSlot(0)) {
        BrokerAddress::Ipc(_) => IPC_REACHES_ONE,
        BrokerAddress::Rdma(_) => RDMA_REACHES_ONE,
        BrokerAddress::Udp(_) => TOO_MANY_BROKERS,
    }
}

/// Rewrites the partition handle in an encoded frame's header (bytes 20..24): the same
/// request for another broker's numbering of the partition.
pub(crate) fn set_frame_partition(frame: &mut [u8], handle: PartitionHandle) {
    frame[20..24].copy_from_slice(&handle.0.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::TopicMetadata;
    use precursor_protocol::frame::{decode_frame, MetadataLeaders, Opcode, FRAME_HEADER_BYTES};
    use std::net::Ipv4Addr;

    fn answer(topic_id: u16, me: u8, leaders: &[u8]) -> MetadataAnswer {
        MetadataAnswer {
            meta: TopicMetadata {
                topic_id,
                partition_count: leaders.len() as u16,
                frame_bytes_max: 1472,
            },
            leaders: Some(MetadataLeaders {
                me,
                leaders: leaders.to_vec(),
                brokers: (1..=3)
                    .map(|id| (id, Ipv4Addr::new(10, 0, 0, id), 9190))
                    .collect(),
            }),
        }
    }

    fn route(slot: u8, topic_id: u16, partition: u16) -> Leader {
        Leader::Known(Route {
            slot: BrokerSlot(slot),
            handle: PartitionHandle::new(topic_id, partition),
        })
    }

    #[test]
    fn a_broker_outside_a_cluster_leads_everything_in_one_answer() {
        let mut claims = Claims::default();
        let single = MetadataAnswer {
            leaders: None,
            ..answer(5, 0, &[0, 0, 0])
        };
        assert!(claims.add(BrokerSlot(0), &single).is_empty());
        assert!(claims.settled(None));
        assert_eq!(
            claims.leaders(),
            vec![route(0, 5, 0), route(0, 5, 1), route(0, 5, 2)]
        );
        assert!(!claims.replicated);
    }

    #[test]
    fn each_leader_is_asked_and_routes_carry_its_own_topic_id() {
        let mut claims = Claims::default();
        let named = claims.add(BrokerSlot(0), &answer(4, 1, &[1, 2, 3]));
        let ids: Vec<u8> = named.iter().map(|n| n.0).collect();
        assert_eq!(ids, vec![2, 3]);
        assert_eq!(
            named[0].1,
            Some("10.0.0.2:9190".parse().unwrap()),
            "the section's address"
        );
        assert!(!claims.settled(None));
        assert!(claims.settled(Some(&[0])));
        claims.add(BrokerSlot(1), &answer(0, 2, &[1, 2, 3]));
        assert!(!claims.settled(None));
        let named = claims.add(BrokerSlot(2), &answer(7, 3, &[1, 2, 3]));
        assert!(named.is_empty(), "everyone named has answered");
        assert!(claims.settled(None));
        assert_eq!(
            claims.leaders(),
            vec![route(0, 4, 0), route(1, 0, 1), route(2, 7, 2)]
        );
        assert!(claims.replicated);
    }

    #[test]
    fn a_leader_named_but_not_confirmed_is_unknown_and_zero_is_unknown() {
        let mut claims = Claims::default();
        // Broker 1 says 2 leads partition 0 (2 never answers) and nobody leads 1.
        claims.add(BrokerSlot(0), &answer(4, 1, &[2, 0]));
        assert_eq!(claims.leaders(), vec![Leader::Unknown, Leader::Unknown]);
        // Over IPC broker 2 cannot be reached: partition 0 is led elsewhere.
        claims.unreachable(2, Some("10.0.0.2:9190".parse().unwrap()), IPC_REACHES_ONE);
        let leaders = claims.leaders();
        let error = leaders[0].elsewhere_error("orders", 0).unwrap().to_string();
        assert_eq!(
            error,
            "partition 0 of orders is led by broker 2 at 10.0.0.2:9190; \
             IPC reaches only this host's data plane"
        );
        assert_eq!(leaders[1], Leader::Unknown);
    }

    #[test]
    fn of_two_claims_the_one_others_agree_with_wins() {
        let mut claims = Claims::default();
        // Broker 1 still thinks it leads; brokers 2 and 3 say 3 does, and 3 says so too.
        claims.add(BrokerSlot(0), &answer(4, 1, &[1]));
        claims.add(BrokerSlot(1), &answer(0, 2, &[3]));
        claims.add(BrokerSlot(2), &answer(7, 3, &[3]));
        assert_eq!(claims.leaders(), vec![route(2, 7, 0)]);
    }

    #[test]
    fn the_frame_limit_is_the_smallest_and_the_count_the_first() {
        let mut claims = Claims::default();
        claims.add(BrokerSlot(0), &answer(4, 1, &[1, 2]));
        let mut smaller = answer(0, 2, &[1, 2, 2]);
        smaller.meta.frame_bytes_max = 1000;
        claims.add(BrokerSlot(1), &smaller);
        assert_eq!(claims.frame_bytes_max, 1000);
        assert_eq!(claims.leaders().len(), 2);
    }

    #[test]
    fn a_frame_is_readdressed_in_place() {
        let mut frame = vec![0u8; FRAME_HEADER_BYTES + 3];
        FrameHeader::new(Opcode::Produce, 9, PartitionHandle::new(1, 2).0, 3)
            .encode(&mut frame[..FRAME_HEADER_BYTES]);
        set_frame_partition(&mut frame, PartitionHandle::new(8, 2));
        let (header, payload) = decode_frame(&frame).unwrap();
        assert_eq!(header.partition, PartitionHandle::new(8, 2).0);
        assert_eq!(header.request_id, 9);
        assert_eq!(payload.len(), 3);
    }
}
