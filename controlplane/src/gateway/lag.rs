//! Consumer lag: what each group committed against what its partitions hold, as
//! `kafka-consumer-groups --describe` shows it (`precursor group list|describe`,
//! `precursor_group_lag` on /metrics, the dashboard).
//!
//! ```text
//!  partition log:   start ............ committed ............ log end (high watermark)
//!                                      |<-------- lag -------->|
//! ```
//!
//! The log end is what a consumer can read up to: the high watermark of a partition with
//! several replicas (never above the log end), else the log end itself, both from the
//! data plane's partition gauges in the counters file. Groups come from two places: the
//! coordinator (live members and their assignments) and the offset store (committed
//! offsets, which outlive the members).

use super::groups::{GroupOverview, GroupState};
use super::Gateway;
use crate::admin::{
    AssignedTopic, GroupDescription, GroupMember, GroupPartition, GroupSummary, PartitionInfo,
};
use crate::counters::CountersSnapshot;
use bytes::Buf;
use kafka_protocol::messages::ConsumerProtocolAssignment;
use kafka_protocol::protocol::Decodable;
use std::collections::{BTreeMap, BTreeSet};

/// The highest consumer protocol (assignment) version kafka-protocol decodes.
const CONSUMER_ASSIGNMENT_VERSION_MAX: i16 = 3;

/// What a consumer can read up to in `partition`: see the module's picture.
pub fn log_end_offset(partition: &PartitionInfo) -> u64 {
    if partition.replicas.len() > 1 {
        partition.high_watermark.min(partition.end_offset)
    } else {
        partition.end_offset
    }
}

/// Messages between a commit and the log end; 0 when the commit is past it (a log cut
/// back after the commit).
pub fn lag(log_end_offset: u64, committed_offset: i64) -> u64 {
    let committed = u64::try_from(committed_offset).unwrap_or(0);
    log_end_offset.saturating_sub(committed)
}

/// The topics and partitions of a consumer-protocol assignment; empty when the bytes are
/// not one (another protocol type, or nothing assigned yet).
pub fn decode_assignment(bytes: &bytes::Bytes) -> Vec<AssignedTopic> {
    let mut buf = bytes.clone();
    if buf.remaining() < 2 {
        return Vec::new();
    }
    let version = buf.get_i16().clamp(0, CONSUMER_ASSIGNMENT_VERSION_MAX);
    match ConsumerProtocolAssignment::decode(&mut buf, version) {
        Ok(assignment) => assignment
            .assigned_partitions
            .into_iter()
            .map(|t| AssignedTopic {
                topic: t.topic.0.to_string(),
                partitions: t.partitions,
            })
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Every group this gateway knows: live ones and those with committed offsets.
fn group_names(gateway: &Gateway) -> BTreeSet<String> {
    let mut names: BTreeSet<String> = gateway.groups_with_offsets().into_iter().collect();
    let live = gateway.groups.lock().expect("coordinator lock").list();
    names.extend(live.into_iter().map(|(id, _, _)| id));
    names
}

/// `group describe NAME`; None when the group has neither live members nor commits.
pub fn describe_group(
    gateway: &Gateway,
    counters: Option<&CountersSnapshot>,
    name: &str,
) -> Option<GroupDescription> {
    let overview = gateway
        .groups
        .lock()
        .expect("coordinator lock")
        .overview(name);
    let committed = gateway.group_offsets(name);
    if overview.is_none() && committed.is_empty() {
        return None;
    }
    Some(describe(name, overview, committed, counters))
}

/// The description from its parts (a pure function: unit-tested below).
fn describe(
    name: &str,
    overview: Option<GroupOverview>,
    committed: Vec<(String, i32, super::offsets::CommittedOffset)>,
    counters: Option<&CountersSnapshot>,
) -> GroupDescription {
    let members: Vec<GroupMember> = overview
        .as_ref()
        .map(|o| {
            o.members
                .iter()
                .map(|m| GroupMember {
                    member_id: m.member_id.clone(),
                    instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    assignment: if o.protocol_type == "consumer" {
                        decode_assignment(&m.assignment)
                    } else {
                        Vec::new()
                    },
                })
                .collect()
        })
        .unwrap_or_default();
    let mut partitions: BTreeMap<(String, i32), GroupPartition> = BTreeMap::new();
    let blank = |topic: &str, partition: i32| GroupPartition {
        topic: topic.to_string(),
        partition,
        committed_offset: None,
        log_end_offset: None,
        lag: None,
        member_id: None,
        client_id: None,
        client_host: None,
    };
    for (topic, partition, offset) in committed {
        partitions
            .entry((topic.clone(), partition))
            .or_insert_with(|| blank(&topic, partition))
            .committed_offset = Some(offset.offset);
    }
    for member in &members {
        for assigned in &member.assignment {
            for &partition in &assigned.partitions {
                let entry = partitions
                    .entry((assigned.topic.clone(), partition))
                    .or_insert_with(|| blank(&assigned.topic, partition));
                entry.member_id = Some(member.member_id.clone());
                entry.client_id = Some(member.client_id.clone());
                entry.client_host = Some(member.client_host.clone());
            }
        }
    }
    for ((topic, partition), entry) in partitions.iter_mut() {
        let info = counters.and_then(|c| c.topic(topic)).and_then(|list| {
            list.iter()
                .find(|p| i64::from(p.partition) == i64::from(*partition))
        });
        entry.log_end_offset = info.map(log_end_offset);
        entry.lag = match (entry.log_end_offset, entry.committed_offset) {
            (Some(end), Some(committed)) => Some(lag(end, committed)),
            _ => None,
        };
    }
    let (state, protocol_type, protocol, generation, leader) = match overview {
        Some(o) => (
            o.state.name().to_string(),
            o.protocol_type,
            o.protocol,
            o.generation,
            o.leader,
        ),
        None => (
            GroupState::Empty.name().to_string(),
            String::new(),
            String::new(),
            0,
            String::new(),
        ),
    };
    GroupDescription {
        group: name.to_string(),
        state,
        protocol_type,
        protocol,
        generation,
        leader,
        members,
        partitions: partitions.into_values().collect(),
    }
}

/// Every group described (the metrics and the dashboard show them all).
pub fn describe_all(
    gateway: &Gateway,
    counters: Option<&CountersSnapshot>,
) -> Vec<GroupDescription> {
    group_names(gateway)
        .iter()
        .filter_map(|name| describe_group(gateway, counters, name))
        .collect()
}

/// `group list`.
pub fn list_groups(gateway: &Gateway, counters: Option<&CountersSnapshot>) -> Vec<GroupSummary> {
    describe_all(gateway, counters)
        .into_iter()
        .map(|g| summary(&g))
        .collect()
}

pub fn summary(group: &GroupDescription) -> GroupSummary {
    GroupSummary {
        group: group.group.clone(),
        state: group.state.clone(),
        protocol_type: group.protocol_type.clone(),
        members: group.members.len() as u32,
        partitions: group
            .partitions
            .iter()
            .filter(|p| p.committed_offset.is_some())
            .count() as u32,
        lag: group.partitions.iter().filter_map(|p| p.lag).sum(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::groups::MemberOverview;
    use super::super::offsets::CommittedOffset;
    use super::*;
    use crate::counters::Sample;
    use kafka_protocol::messages::consumer_protocol_assignment::TopicPartition;
    use kafka_protocol::messages::TopicName;
    use kafka_protocol::protocol::{Encodable, StrBytes};
    use precursor_protocol::counter_kind as kind;

    fn assignment(topic: &str, partitions: &[i32]) -> bytes::Bytes {
        let mut entry = TopicPartition::default();
        entry.topic = TopicName(StrBytes::from_string(topic.to_string()));
        entry.partitions = partitions.to_vec();
        let mut message = ConsumerProtocolAssignment::default();
        message.assigned_partitions = vec![entry];
        let mut out = bytes::BytesMut::new();
        out.extend_from_slice(&1i16.to_be_bytes());
        message.encode(&mut out, 1).unwrap();
        out.freeze()
    }

    fn committed(offset: i64) -> CommittedOffset {
        CommittedOffset {
            offset,
            leader_epoch: -1,
            metadata: None,
            commit_ms: 0,
        }
    }

    fn gauge(kind: u32, label: &str, value: u64) -> Sample {
        Sample {
            kind,
            labels: crate::counters::parse_labels(label),
            value,
        }
    }

    #[test]
    fn lag_is_the_log_end_minus_the_commit() {
        let counters = CountersSnapshot::from_samples(
            vec![
                gauge(kind::PARTITION_END_OFFSET, "topic=t,partition=0", 30),
                gauge(kind::PARTITION_END_OFFSET, "topic=t,partition=1", 20),
                // A replicated partition: its high watermark bounds what is readable.
                gauge(kind::PARTITION_END_OFFSET, "topic=r,partition=0", 50),
                gauge(kind::PARTITION_HIGH_WATERMARK, "topic=r,partition=0", 45),
                gauge(kind::PARTITION_REPLICAS, "topic=r,partition=0", 0x0201),
            ],
            vec![],
        );
        let overview = GroupOverview {
            state: GroupState::Stable,
            protocol_type: "consumer".into(),
            protocol: "range".into(),
            generation: 3,
            leader: "m1".into(),
            members: vec![MemberOverview {
                member_id: "m1".into(),
                instance_id: None,
                client_id: "rdkafka".into(),
                client_host: "/127.0.0.1".into(),
                assignment: assignment("t", &[0, 1]),
            }],
        };
        let described = describe(
            "g",
            Some(overview),
            vec![
                ("t".into(), 0, committed(10)),
                ("r".into(), 0, committed(40)),
                ("gone".into(), 0, committed(5)),
            ],
            Some(&counters),
        );
        assert_eq!(described.state, "Stable");
        assert_eq!(
            described.members[0].assignment,
            vec![AssignedTopic {
                topic: "t".into(),
                partitions: vec![0, 1]
            }]
        );
        let row = |topic: &str, partition: i32| {
            described
                .partitions
                .iter()
                .find(|p| p.topic == topic && p.partition == partition)
                .unwrap()
                .clone()
        };
        assert_eq!(
            (
                row("t", 0).committed_offset,
                row("t", 0).log_end_offset,
                row("t", 0).lag
            ),
            (Some(10), Some(30), Some(20))
        );
        assert_eq!(row("t", 0).member_id.as_deref(), Some("m1"));
        // Assigned, never committed: no lag yet.
        assert_eq!(
            (row("t", 1).log_end_offset, row("t", 1).lag),
            (Some(20), None)
        );
        assert_eq!(row("r", 0).lag, Some(5));
        assert_eq!(
            (row("gone", 0).log_end_offset, row("gone", 0).lag),
            (None, None)
        );
        let summary = summary(&described);
        assert_eq!(
            (summary.members, summary.partitions, summary.lag),
            (1, 3, 25)
        );
        assert_eq!(lag(10, 12), 0, "a commit past the end is no lag");
    }

    #[test]
    fn a_group_with_commits_only_is_empty() {
        let described = describe("old", None, vec![("t".into(), 0, committed(3))], None);
        assert_eq!(
            (described.state.as_str(), described.members.len()),
            ("Empty", 0)
        );
        assert_eq!(described.partitions[0].lag, None);
        assert!(decode_assignment(&bytes::Bytes::from_static(b"\x00")).is_empty());
    }
}
