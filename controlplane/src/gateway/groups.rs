//! The group coordinator: Kafka's classic consumer-group protocol (JoinGroup, SyncGroup,
//! Heartbeat, LeaveGroup), committed offsets (OffsetCommit, OffsetFetch) and the views
//! (DescribeGroups, ListGroups, FindCoordinator).
//!
//! ```text
//!              JoinGroup (first member)          all members rejoined, or the
//!   Empty ───────────────────────> Preparing ─── rebalance timeout passed ──> Completing
//!     ^                            Rebalance      (generation + 1, leader     Rebalance
//!     |  last member left/expired    ^   ^         gets the member list)          |
//!     +──────────────────────────────+   |                                        | leader's
//!                                        | JoinGroup (leader or new metadata),    | SyncGroup
//!                                        | LeaveGroup, session expired            v
//!                                        +─────────────────────────────────── Stable
//! ```
//!
//! The broker never looks inside protocol metadata or assignments: the group leader runs
//! whatever assignor the members agreed on (range, roundrobin, sticky,
//! cooperative-sticky) and the coordinator hands each member its bytes. The protocol is
//! chosen as Kafka chooses it: among the protocols every member supports, each member
//! votes for the first it lists; most votes wins.
//!
//! [`Coordinator`] is synchronous and takes the time as an argument (tests drive it with a
//! fake clock). Waiting answers (a JoinGroup until the rebalance completes, a follower's
//! SyncGroup until the leader's) are oneshot channels. Timers (session expiry, rebalance
//! and initial-delay deadlines) run on a tick every [`super::GROUP_TICK_INTERVAL_MS`].
//!
//! Group membership lives in memory only: after a control plane restart members get
//! UNKNOWN_MEMBER_ID and rejoin (committed offsets are durable, see `offsets.rs`).

use super::committed::CommitError;
use super::offsets::{CommittedOffset, OffsetKey};
use super::requests::{api_name, Context, RequestMeta};
use super::topics::find_partition;
use super::Gateway;
use super::{str_bytes, AUTHORIZED_OPERATIONS_OMITTED};
use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::find_coordinator_response::Coordinator as CoordinatorEntry;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponsePartition, OffsetFetchResponseTopic,
};
use kafka_protocol::messages::{
    BrokerId, DescribeGroupsRequest, DescribeGroupsResponse, FindCoordinatorRequest,
    FindCoordinatorResponse, GroupId, HeartbeatRequest, HeartbeatResponse, JoinGroupRequest,
    JoinGroupResponse, LeaveGroupRequest, LeaveGroupResponse, ListGroupsRequest,
    ListGroupsResponse, OffsetCommitRequest, OffsetCommitResponse, OffsetFetchRequest,
    OffsetFetchResponse, SyncGroupRequest, SyncGroupResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use precursor_config::GatewayConfig;
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// FindCoordinator key types.
const KEY_TYPE_GROUP: i8 = 0;

/// Limits of the coordinator, from `[gateway]`.
#[derive(Clone, Debug)]
pub struct GroupLimits {
    pub session_timeout_ms_min: u64,
    pub session_timeout_ms_max: u64,
    pub initial_rebalance_delay_ms: u64,
    pub members_max: usize,
}

impl GroupLimits {
    pub fn from_config(config: &GatewayConfig) -> GroupLimits {
        GroupLimits {
            session_timeout_ms_min: config.group_session_timeout_ms_min,
            session_timeout_ms_max: config.group_session_timeout_ms_max,
            initial_rebalance_delay_ms: config.group_initial_rebalance_delay_ms,
            members_max: config.group_members_max as usize,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
}

impl GroupState {
    /// The name Kafka uses in DescribeGroups and ListGroups.
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
        }
    }
}

/// The answer to a JoinGroup.
#[derive(Clone, Debug, PartialEq)]
pub struct JoinAnswer {
    pub error: i16,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: String,
    pub member_id: String,
    /// Filled for the leader only: every member with its metadata for the chosen protocol.
    pub members: Vec<(String, Option<String>, Bytes)>,
}

impl JoinAnswer {
    fn error(error: ResponseError, member_id: &str) -> JoinAnswer {
        JoinAnswer {
            error: error.code(),
            generation: -1,
            protocol_type: None,
            protocol_name: None,
            leader: String::new(),
            member_id: member_id.to_string(),
            members: Vec::new(),
        }
    }
}

/// The answer to a SyncGroup.
#[derive(Clone, Debug, PartialEq)]
pub struct SyncAnswer {
    pub error: i16,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignment: Bytes,
}

impl SyncAnswer {
    fn error(error: ResponseError) -> SyncAnswer {
        SyncAnswer {
            error: error.code(),
            protocol_type: None,
            protocol_name: None,
            assignment: Bytes::new(),
        }
    }
}

/// An answer now, or a channel that will carry it.
pub enum Answer<T> {
    Now(T),
    Later(oneshot::Receiver<T>),
}

/// What a JoinGroup asks.
#[derive(Clone, Debug)]
pub struct JoinParams {
    pub group_id: String,
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    /// Version 4 and later: a new member first gets MEMBER_ID_REQUIRED with its id.
    pub require_known_member_id: bool,
}

struct Member {
    instance_id: Option<String>,
    client_id: String,
    client_host: String,
    session_timeout: Duration,
    rebalance_timeout: Duration,
    protocol_type: String,
    protocols: Vec<(String, Bytes)>,
    assignment: Bytes,
    heartbeat_deadline: Instant,
    join: Option<oneshot::Sender<JoinAnswer>>,
    sync: Option<oneshot::Sender<SyncAnswer>>,
    /// Joined the group as the n-th member ever (picks a new leader).
    join_order: u64,
}

impl Member {
    fn metadata_for(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(name, _)| name == protocol)
            .map(|(_, metadata)| metadata.clone())
            .unwrap_or_default()
    }

    /// A member waiting for its JoinGroup or SyncGroup answer is kept alive (Kafka's
    /// rule); the others must heartbeat.
    fn expired(&self, now: Instant) -> bool {
        self.join.is_none() && self.sync.is_none() && now >= self.heartbeat_deadline
    }
}

struct Group {
    state: GroupState,
    generation: i32,
    protocol_type: Option<String>,
    protocol: Option<String>,
    leader: Option<String>,
    members: BTreeMap<String, Member>,
    /// Ids handed out with MEMBER_ID_REQUIRED, not yet back: id -> deadline.
    pending: HashMap<String, Instant>,
    /// PreparingRebalance: members that have not rejoined by then are removed.
    rebalance_deadline: Option<Instant>,
    /// PreparingRebalance of a group that was empty: wait at least until then for more
    /// members (Kafka's group.initial.rebalance.delay.ms).
    initial_delay_until: Option<Instant>,
    /// CompletingRebalance: members that have not sent SyncGroup by then are removed.
    sync_deadline: Option<Instant>,
}

impl Group {
    fn new() -> Group {
        Group {
            state: GroupState::Empty,
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: BTreeMap::new(),
            pending: HashMap::new(),
            rebalance_deadline: None,
            initial_delay_until: None,
            sync_deadline: None,
        }
    }

    fn rebalance_timeout(&self) -> Duration {
        self.members
            .values()
            .map(|m| m.rebalance_timeout)
            .max()
            .unwrap_or_default()
    }

    /// Whether a member with these protocols may join: same protocol type, and at least
    /// one protocol every member (and it) supports.
    fn supports(&self, protocol_type: &str, protocols: &[(String, Bytes)]) -> bool {
        if self.members.is_empty() {
            return true;
        }
        if self.protocol_type.as_deref() != Some(protocol_type) {
            return false;
        }
        protocols.iter().any(|(name, _)| {
            self.members
                .values()
                .all(|m| m.protocols.iter().any(|(other, _)| other == name))
        })
    }

    /// Kafka's vote: candidates are the protocols every member supports; each member
    /// votes for the first candidate in its own list.
    fn select_protocol(&self) -> Option<String> {
        let mut members: Vec<&Member> = self.members.values().collect();
        members.sort_by_key(|m| m.join_order);
        let first = members.first()?;
        let candidates: Vec<&String> = first
            .protocols
            .iter()
            .map(|(name, _)| name)
            .filter(|name| {
                members
                    .iter()
                    .all(|m| m.protocols.iter().any(|(other, _)| other == *name))
            })
            .collect();
        let mut votes: Vec<(&String, usize)> = candidates.iter().map(|c| (*c, 0)).collect();
        for member in &members {
            if let Some((name, _)) = member
                .protocols
                .iter()
                .find(|(name, _)| candidates.contains(&name))
            {
                if let Some(vote) = votes.iter_mut().find(|(c, _)| *c == name) {
                    vote.1 += 1;
                }
            }
        }
        // Most votes; ties go to the earliest in the first member's list.
        let best = votes.iter().map(|(_, n)| *n).max()?;
        votes
            .iter()
            .find(|(_, n)| *n == best)
            .map(|(name, _)| (*name).clone())
    }
}

/// Every group of this node.
pub struct Coordinator {
    groups: HashMap<String, Group>,
    limits: GroupLimits,
    joins_ever: u64,
}

impl Coordinator {
    pub fn new(limits: GroupLimits) -> Coordinator {
        Coordinator {
            groups: HashMap::new(),
            limits,
            joins_ever: 0,
        }
    }

    /// JoinGroup.
    pub fn join(&mut self, now: Instant, params: JoinParams) -> Answer<JoinAnswer> {
        let member_id = params.member_id.clone();
        let refuse = |error| Answer::Now(JoinAnswer::error(error, &member_id));
        if params.group_id.is_empty() {
            return refuse(ResponseError::InvalidGroupId);
        }
        let session_ms = u64::try_from(params.session_timeout_ms).unwrap_or(0);
        if !(self.limits.session_timeout_ms_min..=self.limits.session_timeout_ms_max)
            .contains(&session_ms)
        {
            return refuse(ResponseError::InvalidSessionTimeout);
        }
        if params.protocol_type.is_empty() || params.protocols.is_empty() {
            return refuse(ResponseError::InconsistentGroupProtocol);
        }
        if !params.member_id.is_empty() && !self.groups.contains_key(&params.group_id) {
            return refuse(ResponseError::UnknownMemberId);
        }
        let limits = self.limits.clone();
        let group = self
            .groups
            .entry(params.group_id.clone())
            .or_insert_with(Group::new);
        if !group.supports(&params.protocol_type, &params.protocols) {
            return refuse(ResponseError::InconsistentGroupProtocol);
        }
        let member_id = if params.member_id.is_empty() {
            if group.members.len() + group.pending.len() >= limits.members_max {
                return refuse(ResponseError::GroupMaxSizeReached);
            }
            // A static member coming back under a new id replaces its old self.
            if let Some(instance) = &params.instance_id {
                let old = group
                    .members
                    .iter()
                    .find(|(_, m)| m.instance_id.as_ref() == Some(instance))
                    .map(|(id, _)| id.clone());
                if let Some(old) = old {
                    remove_member(group, &old, ResponseError::FencedInstanceId, now);
                }
            }
            let new_id = new_member_id(&params.client_id);
            if params.require_known_member_id && params.instance_id.is_none() {
                let deadline = now + Duration::from_millis(session_ms);
                group.pending.insert(new_id.clone(), deadline);
                return Answer::Now(JoinAnswer::error(ResponseError::MemberIdRequired, &new_id));
            }
            new_id
        } else if group.pending.remove(&params.member_id).is_some() {
            params.member_id.clone()
        } else if let Some(member) = group.members.get(&params.member_id) {
            if params.instance_id.is_some() && member.instance_id != params.instance_id {
                return refuse(ResponseError::FencedInstanceId);
            }
            params.member_id.clone()
        } else {
            return refuse(ResponseError::UnknownMemberId);
        };
        self.joins_ever += 1;
        let joins_ever = self.joins_ever;
        let rebalance_ms = if params.rebalance_timeout_ms > 0 {
            params.rebalance_timeout_ms as u64
        } else {
            session_ms
        };
        let (sender, receiver) = oneshot::channel();
        let is_new = !group.members.contains_key(&member_id);
        let metadata_changed;
        {
            let member = group
                .members
                .entry(member_id.clone())
                .or_insert_with(|| Member {
                    instance_id: params.instance_id.clone(),
                    client_id: params.client_id.clone(),
                    client_host: params.client_host.clone(),
                    session_timeout: Duration::ZERO,
                    rebalance_timeout: Duration::ZERO,
                    protocol_type: params.protocol_type.clone(),
                    protocols: Vec::new(),
                    assignment: Bytes::new(),
                    heartbeat_deadline: now,
                    join: None,
                    sync: None,
                    join_order: joins_ever,
                });
            metadata_changed = member.protocols != params.protocols;
            member.session_timeout = Duration::from_millis(session_ms);
            member.rebalance_timeout = Duration::from_millis(rebalance_ms);
            member.protocols = params.protocols;
            member.protocol_type = params.protocol_type.clone();
            member.heartbeat_deadline = now + member.session_timeout;
            if let Some(previous) = member.join.replace(sender) {
                let _ = previous.send(JoinAnswer::error(
                    ResponseError::UnknownMemberId,
                    &member_id,
                ));
            }
        }
        if group.protocol_type.is_none() {
            group.protocol_type = Some(params.protocol_type);
        }
        match group.state {
            GroupState::Stable
                if !is_new && !metadata_changed && group.leader.as_deref() != Some(&member_id) =>
            {
                // A follower rejoining with what it had: Kafka answers with the current
                // generation and starts no rebalance.
                let member = group.members.get_mut(&member_id).expect("just joined");
                member.join = None;
                return Answer::Now(JoinAnswer {
                    error: 0,
                    generation: group.generation,
                    protocol_type: group.protocol_type.clone(),
                    protocol_name: group.protocol.clone(),
                    leader: group.leader.clone().unwrap_or_default(),
                    member_id,
                    members: Vec::new(),
                });
            }
            GroupState::Empty => {
                prepare_rebalance(group, now);
                if limits.initial_rebalance_delay_ms > 0 {
                    group.initial_delay_until =
                        Some(now + Duration::from_millis(limits.initial_rebalance_delay_ms));
                }
            }
            GroupState::Stable | GroupState::CompletingRebalance => prepare_rebalance(group, now),
            GroupState::PreparingRebalance => {
                // New members of a group in its initial delay push the delay out (up to
                // the rebalance deadline), as Kafka's InitialDelayedJoin does.
                if is_new && group.initial_delay_until.is_some() {
                    let extended = now + Duration::from_millis(limits.initial_rebalance_delay_ms);
                    let cap = group.rebalance_deadline.unwrap_or(extended);
                    group.initial_delay_until = Some(extended.min(cap));
                }
                let deadline = now + group.rebalance_timeout();
                if group.rebalance_deadline.is_none_or(|d| d < deadline) && is_new {
                    group.rebalance_deadline = Some(deadline);
                }
            }
        }
        maybe_complete_join(group, now);
        Answer::Later(receiver)
    }

    /// SyncGroup.
    #[allow(clippy::too_many_arguments)]
    pub fn sync(
        &mut self,
        now: Instant,
        group_id: &str,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
        protocol_type: Option<&str>,
        protocol_name: Option<&str>,
        assignments: Vec<(String, Bytes)>,
    ) -> Answer<SyncAnswer> {
        let refuse = |error| Answer::Now(SyncAnswer::error(error));
        let Some(group) = self.groups.get_mut(group_id) else {
            return refuse(ResponseError::UnknownMemberId);
        };
        let Some(member) = group.members.get_mut(member_id) else {
            return refuse(ResponseError::UnknownMemberId);
        };
        if instance_id.is_some() && member.instance_id.as_deref() != instance_id {
            return refuse(ResponseError::FencedInstanceId);
        }
        if generation != group.generation {
            return refuse(ResponseError::IllegalGeneration);
        }
        if protocol_type.is_some_and(|t| Some(t) != group.protocol_type.as_deref())
            || protocol_name.is_some_and(|p| Some(p) != group.protocol.as_deref())
        {
            return refuse(ResponseError::InconsistentGroupProtocol);
        }
        match group.state {
            GroupState::Empty => refuse(ResponseError::UnknownMemberId),
            GroupState::PreparingRebalance => refuse(ResponseError::RebalanceInProgress),
            GroupState::Stable => {
                member.heartbeat_deadline = now + member.session_timeout;
                Answer::Now(SyncAnswer {
                    error: 0,
                    protocol_type: group.protocol_type.clone(),
                    protocol_name: group.protocol.clone(),
                    assignment: member.assignment.clone(),
                })
            }
            GroupState::CompletingRebalance => {
                let (sender, receiver) = oneshot::channel();
                member.heartbeat_deadline = now + member.session_timeout;
                if let Some(previous) = member.sync.replace(sender) {
                    let _ = previous.send(SyncAnswer::error(ResponseError::RebalanceInProgress));
                }
                if group.leader.as_deref() == Some(member_id) {
                    let mut assignments: HashMap<String, Bytes> = assignments.into_iter().collect();
                    for (id, member) in group.members.iter_mut() {
                        member.assignment = assignments.remove(id).unwrap_or_default();
                    }
                    group.state = GroupState::Stable;
                    group.sync_deadline = None;
                    for member in group.members.values_mut() {
                        if let Some(waiter) = member.sync.take() {
                            let _ = waiter.send(SyncAnswer {
                                error: 0,
                                protocol_type: group.protocol_type.clone(),
                                protocol_name: group.protocol.clone(),
                                assignment: member.assignment.clone(),
                            });
                        }
                        member.heartbeat_deadline = now + member.session_timeout;
                    }
                }
                Answer::Later(receiver)
            }
        }
    }

    /// Heartbeat: the error code.
    pub fn heartbeat(
        &mut self,
        now: Instant,
        group_id: &str,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
    ) -> ResponseError {
        let Some(group) = self.groups.get_mut(group_id) else {
            return ResponseError::UnknownMemberId;
        };
        if group.state == GroupState::Empty {
            return ResponseError::UnknownMemberId;
        }
        let Some(member) = group.members.get_mut(member_id) else {
            return ResponseError::UnknownMemberId;
        };
        if instance_id.is_some() && member.instance_id.as_deref() != instance_id {
            return ResponseError::FencedInstanceId;
        }
        if generation != group.generation {
            return ResponseError::IllegalGeneration;
        }
        member.heartbeat_deadline = now + member.session_timeout;
        match group.state {
            GroupState::PreparingRebalance => ResponseError::RebalanceInProgress,
            _ => return_none(),
        }
    }

    /// LeaveGroup of some members: one error per member (member id, instance id).
    pub fn leave(
        &mut self,
        now: Instant,
        group_id: &str,
        members: &[(String, Option<String>)],
    ) -> Vec<ResponseError> {
        let Some(group) = self.groups.get_mut(group_id) else {
            return vec![ResponseError::UnknownMemberId; members.len()];
        };
        let mut errors = Vec::with_capacity(members.len());
        let mut removed = false;
        for (member_id, instance_id) in members {
            let found = if member_id.is_empty() {
                instance_id.as_ref().and_then(|instance| {
                    group
                        .members
                        .iter()
                        .find(|(_, m)| m.instance_id.as_ref() == Some(instance))
                        .map(|(id, _)| id.clone())
                })
            } else {
                group.members.get(member_id).and_then(|m| {
                    if instance_id.is_some() && m.instance_id != *instance_id {
                        None
                    } else {
                        Some(member_id.clone())
                    }
                })
            };
            match found {
                Some(id) => {
                    remove_member(group, &id, ResponseError::UnknownMemberId, now);
                    removed = true;
                    errors.push(return_none());
                }
                None if !member_id.is_empty()
                    && instance_id.is_some()
                    && group.members.contains_key(member_id) =>
                {
                    errors.push(ResponseError::FencedInstanceId)
                }
                None => errors.push(ResponseError::UnknownMemberId),
            }
        }
        if removed {
            after_removal(group, now);
        }
        errors
    }

    /// Checks an OffsetCommit against the group: Ok to store the offsets.
    pub fn check_commit(
        &mut self,
        now: Instant,
        group_id: &str,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
    ) -> Result<(), ResponseError> {
        if group_id.is_empty() {
            return Err(ResponseError::InvalidGroupId);
        }
        let Some(group) = self.groups.get_mut(group_id) else {
            // No live group: a "simple" commit (generation -1) creates nothing here, the
            // offsets store keeps the group; any other generation is unknown.
            return if generation < 0 {
                Ok(())
            } else {
                Err(ResponseError::IllegalGeneration)
            };
        };
        if generation < 0 && group.state == GroupState::Empty {
            return Ok(());
        }
        if group.state == GroupState::CompletingRebalance {
            return Err(ResponseError::RebalanceInProgress);
        }
        let Some(member) = group.members.get_mut(member_id) else {
            return Err(ResponseError::UnknownMemberId);
        };
        if instance_id.is_some() && member.instance_id.as_deref() != instance_id {
            return Err(ResponseError::FencedInstanceId);
        }
        if generation != group.generation {
            return Err(ResponseError::IllegalGeneration);
        }
        member.heartbeat_deadline = now + member.session_timeout;
        Ok(())
    }

    /// Runs the timers: expired sessions, pending member ids, rebalance, initial-delay and
    /// sync deadlines. Empty groups are forgotten (their offsets stay in the store).
    pub fn tick(&mut self, now: Instant) {
        for group in self.groups.values_mut() {
            group.pending.retain(|_, deadline| *deadline > now);
            let expired: Vec<String> = group
                .members
                .iter()
                .filter(|(_, m)| m.expired(now))
                .map(|(id, _)| id.clone())
                .collect();
            for id in &expired {
                remove_member(group, id, ResponseError::UnknownMemberId, now);
            }
            if group.state == GroupState::CompletingRebalance
                && group.sync_deadline.is_some_and(|d| now >= d)
            {
                // The leader never sent its assignment: drop the members that did not sync,
                // and try again with the rest.
                let silent: Vec<String> = group
                    .members
                    .iter()
                    .filter(|(_, m)| m.sync.is_none())
                    .map(|(id, _)| id.clone())
                    .collect();
                for id in &silent {
                    remove_member(group, id, ResponseError::UnknownMemberId, now);
                }
                prepare_rebalance(group, now);
            } else if !expired.is_empty() {
                after_removal(group, now);
            }
            maybe_complete_join(group, now);
        }
        self.groups.retain(|_, g| {
            !(g.state == GroupState::Empty && g.members.is_empty() && g.pending.is_empty())
        });
    }

    /// The state, protocol type and members of a group, for DescribeGroups.
    pub fn describe(&self, group_id: &str) -> Option<DescribedGroup> {
        let group = self.groups.get(group_id)?;
        let mut described = DescribedGroup::default();
        described.group_id = GroupId(str_bytes(group_id));
        described.group_state = str_bytes(group.state.name());
        described.protocol_type = str_bytes(group.protocol_type.as_deref().unwrap_or(""));
        described.authorized_operations = AUTHORIZED_OPERATIONS_OMITTED;
        let stable = group.state == GroupState::Stable;
        if stable {
            described.protocol_data = str_bytes(group.protocol.as_deref().unwrap_or(""));
        }
        for (id, member) in &group.members {
            let mut entry = DescribedGroupMember::default();
            entry.member_id = str_bytes(id);
            entry.group_instance_id = member.instance_id.as_deref().map(str_bytes);
            entry.client_id = str_bytes(&member.client_id);
            entry.client_host = str_bytes(&member.client_host);
            if stable {
                entry.member_metadata =
                    member.metadata_for(group.protocol.as_deref().unwrap_or(""));
                entry.member_assignment = member.assignment.clone();
            }
            described.members.push(entry);
        }
        Some(described)
    }

    /// A live group as `precursor group describe` shows it (None: no live group).
    pub fn overview(&self, group_id: &str) -> Option<GroupOverview> {
        let group = self.groups.get(group_id)?;
        Some(GroupOverview {
            state: group.state,
            protocol_type: group.protocol_type.clone().unwrap_or_default(),
            protocol: group.protocol.clone().unwrap_or_default(),
            generation: group.generation,
            leader: group.leader.clone().unwrap_or_default(),
            members: group
                .members
                .iter()
                .map(|(id, member)| MemberOverview {
                    member_id: id.clone(),
                    instance_id: member.instance_id.clone(),
                    client_id: member.client_id.clone(),
                    client_host: member.client_host.clone(),
                    assignment: member.assignment.clone(),
                })
                .collect(),
        })
    }

    /// DeleteGroups of a live group: forgets it if no member is in it (Ok(true)); a group
    /// with members is NON_EMPTY_GROUP, as in Kafka. Ok(false): no live group of that id.
    pub fn delete(&mut self, group_id: &str) -> Result<bool, ResponseError> {
        let Some(group) = self.groups.get(group_id) else {
            return Ok(false);
        };
        if !group.members.is_empty() {
            return Err(ResponseError::NonEmptyGroup);
        }
        self.groups.remove(group_id);
        Ok(true)
    }

    /// Which committed offsets of a group OffsetDelete may delete (Kafka's rule): all of
    /// an unknown or empty group's; of a live consumer group, those of topics no member
    /// subscribes to or is assigned; none of a live group of another protocol type.
    pub fn offsets_deletable(&self, group_id: &str) -> OffsetsDeletable {
        let Some(group) = self.groups.get(group_id) else {
            return OffsetsDeletable::NoLiveGroup;
        };
        if group.members.is_empty() {
            return OffsetsDeletable::All;
        }
        if group.protocol_type.as_deref() != Some(CONSUMER_PROTOCOL_TYPE) {
            return OffsetsDeletable::None;
        }
        let mut subscribed = std::collections::BTreeSet::new();
        for member in group.members.values() {
            for (_, metadata) in &member.protocols {
                subscribed.extend(decode_subscription(metadata));
            }
            for assigned in super::lag::decode_assignment(&member.assignment) {
                subscribed.insert(assigned.topic);
            }
        }
        OffsetsDeletable::AllBut(subscribed)
    }

    /// Live groups: id, state, protocol type.
    pub fn list(&self) -> Vec<(String, GroupState, String)> {
        self.groups
            .iter()
            .map(|(id, g)| {
                (
                    id.clone(),
                    g.state,
                    g.protocol_type.clone().unwrap_or_default(),
                )
            })
            .collect()
    }
}

/// What [`Coordinator::offsets_deletable`] allows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OffsetsDeletable {
    /// The coordinator holds no such group: every committed offset (GROUP_ID_NOT_FOUND
    /// when there are none either).
    NoLiveGroup,
    /// A group without members: every committed offset.
    All,
    /// Every offset except those of these topics (GROUP_SUBSCRIBED_TO_TOPIC).
    AllBut(std::collections::BTreeSet<String>),
    /// A live group of a protocol type other than `consumer` (NON_EMPTY_GROUP).
    None,
}

/// The protocol type of Kafka consumers, whose member metadata is a
/// ConsumerProtocolSubscription.
const CONSUMER_PROTOCOL_TYPE: &str = "consumer";
/// The highest consumer protocol (subscription) version kafka-protocol decodes.
const CONSUMER_SUBSCRIPTION_VERSION_MAX: i16 = 3;

/// The topics of a consumer-protocol subscription; empty when the bytes are not one.
fn decode_subscription(bytes: &Bytes) -> Vec<String> {
    use bytes::Buf;
    use kafka_protocol::protocol::Decodable;
    let mut buf = bytes.clone();
    if buf.remaining() < 2 {
        return Vec::new();
    }
    let version = buf.get_i16().clamp(0, CONSUMER_SUBSCRIPTION_VERSION_MAX);
    match kafka_protocol::messages::ConsumerProtocolSubscription::decode(&mut buf, version) {
        Ok(subscription) => subscription
            .topics
            .into_iter()
            .map(|topic| topic.to_string())
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// A live group: its state and members (see [`Coordinator::overview`]).
#[derive(Clone, Debug)]
pub struct GroupOverview {
    pub state: GroupState,
    pub protocol_type: String,
    /// The protocol (assignor) the members agreed on; empty before the first rebalance.
    pub protocol: String,
    pub generation: i32,
    pub leader: String,
    pub members: Vec<MemberOverview>,
}

/// One member of a live group; `assignment` is what the leader gave it (the consumer
/// protocol's bytes for `protocol_type = "consumer"`).
#[derive(Clone, Debug)]
pub struct MemberOverview {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub assignment: Bytes,
}

/// `ResponseError` has no "none" variant: code 0 is spelled by this helper's callers.
fn return_none() -> ResponseError {
    ResponseError::Unknown(0)
}

/// `<client id>-<uuid>`, as Kafka names members.
fn new_member_id(client_id: &str) -> String {
    let b = super::random_bytes_16();
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{client_id}-{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

fn prepare_rebalance(group: &mut Group, now: Instant) {
    if group.state == GroupState::CompletingRebalance {
        for member in group.members.values_mut() {
            if let Some(waiter) = member.sync.take() {
                let _ = waiter.send(SyncAnswer::error(ResponseError::RebalanceInProgress));
            }
        }
    }
    group.state = GroupState::PreparingRebalance;
    group.sync_deadline = None;
    group.initial_delay_until = None;
    group.rebalance_deadline = Some(now + group.rebalance_timeout());
}

/// Takes a member out of the group; a JoinGroup or SyncGroup it waits on gets `error`.
fn remove_member(group: &mut Group, member_id: &str, error: ResponseError, _now: Instant) {
    if let Some(mut member) = group.members.remove(member_id) {
        if let Some(waiter) = member.join.take() {
            let _ = waiter.send(JoinAnswer::error(error, member_id));
        }
        if let Some(waiter) = member.sync.take() {
            let _ = waiter.send(SyncAnswer::error(error));
        }
    }
    if group.leader.as_deref() == Some(member_id) {
        group.leader = None;
    }
}

/// After members left or expired: a rebalance for those who stay.
fn after_removal(group: &mut Group, now: Instant) {
    match group.state {
        GroupState::Stable | GroupState::CompletingRebalance => prepare_rebalance(group, now),
        GroupState::PreparingRebalance | GroupState::Empty => {}
    }
    if group.members.is_empty() && group.state == GroupState::PreparingRebalance {
        complete_join(group, now);
    }
}

/// Completes the join phase when every member has rejoined (and the initial delay is
/// over), or when the rebalance deadline passed (members that did not rejoin are removed).
fn maybe_complete_join(group: &mut Group, now: Instant) {
    if group.state != GroupState::PreparingRebalance {
        return;
    }
    let all_joined = group.members.values().all(|m| m.join.is_some()) && group.pending.is_empty();
    let delay_over = group.initial_delay_until.is_none_or(|d| now >= d);
    let deadline_passed = group.rebalance_deadline.is_some_and(|d| now >= d);
    if all_joined && delay_over {
        complete_join(group, now);
    } else if deadline_passed {
        let late: Vec<String> = group
            .members
            .iter()
            .filter(|(_, m)| m.join.is_none())
            .map(|(id, _)| id.clone())
            .collect();
        for id in &late {
            remove_member(group, id, ResponseError::UnknownMemberId, now);
        }
        group.pending.clear();
        complete_join(group, now);
    }
}

fn complete_join(group: &mut Group, now: Instant) {
    group.generation = group.generation.wrapping_add(1).max(1);
    group.rebalance_deadline = None;
    group.initial_delay_until = None;
    if group.members.is_empty() {
        group.state = GroupState::Empty;
        group.protocol = None;
        group.protocol_type = None;
        group.leader = None;
        return;
    }
    group.protocol = group.select_protocol();
    let protocol = group.protocol.clone().unwrap_or_default();
    if group
        .leader
        .as_ref()
        .is_none_or(|l| !group.members.contains_key(l))
    {
        group.leader = group
            .members
            .iter()
            .min_by_key(|(_, m)| m.join_order)
            .map(|(id, _)| id.clone());
    }
    let leader = group.leader.clone().unwrap_or_default();
    group.state = GroupState::CompletingRebalance;
    group.sync_deadline = Some(now + group.rebalance_timeout());
    let roster: Vec<(String, Option<String>, Bytes)> = group
        .members
        .iter()
        .map(|(id, m)| (id.clone(), m.instance_id.clone(), m.metadata_for(&protocol)))
        .collect();
    for (id, member) in group.members.iter_mut() {
        member.heartbeat_deadline = now + member.session_timeout;
        member.assignment = Bytes::new();
        if let Some(waiter) = member.join.take() {
            let _ = waiter.send(JoinAnswer {
                error: 0,
                generation: group.generation,
                protocol_type: group.protocol_type.clone(),
                protocol_name: Some(protocol.clone()),
                leader: leader.clone(),
                member_id: id.clone(),
                members: if *id == leader {
                    roster.clone()
                } else {
                    Vec::new()
                },
            });
        }
    }
}

/// Runs the coordinator's timers every [`super::GROUP_TICK_INTERVAL_MS`].
pub async fn tick_forever(gateway: Arc<Gateway>) {
    let mut interval = tokio::time::interval(Duration::from_millis(super::GROUP_TICK_INTERVAL_MS));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        gateway
            .groups
            .lock()
            .expect("coordinator lock")
            .tick(Instant::now());
    }
}

fn code(error: ResponseError) -> i16 {
    error.code()
}

// ---- Kafka request handlers ----

/// FindCoordinator: this node coordinates every group; in a cluster, each group has one
/// coordinator, the same whichever broker is asked (`cluster::group_coordinator`).
/// Transactions are not supported: a transactional key is answered
/// COORDINATOR_NOT_AVAILABLE (what a Kafka broker says when it cannot host a transaction
/// coordinator).
pub fn find_coordinator(
    context: &Context,
    meta: &RequestMeta,
    request: FindCoordinatorRequest,
) -> FindCoordinatorResponse {
    let gateway = &context.gateway;
    let own = (BrokerId(gateway.broker_id()), context.advertised());
    // (node, (host, port)) or (error, message).
    let answer_for =
        |key_type: i8, key: &str| -> Result<(BrokerId, (String, i32)), (i16, String)> {
            if key_type != KEY_TYPE_GROUP {
                return Err((
                    code(ResponseError::CoordinatorNotAvailable),
                    "transactions are not supported by this broker".into(),
                ));
            }
            if key.is_empty() {
                return Err((code(ResponseError::InvalidGroupId), "empty group id".into()));
            }
            match gateway.coordinates(key) {
                Ok(()) => Ok(own.clone()),
                Err(None) => Err((
                    code(ResponseError::CoordinatorNotAvailable),
                    "no live broker serving Kafka can coordinate the group".into(),
                )),
                Err(Some(id)) => match gateway.kafka_listener_of(id) {
                    Some(listener) => Ok((BrokerId(id as i32), listener)),
                    None => Err((
                        code(ResponseError::CoordinatorNotAvailable),
                        format!("broker {id} coordinates the group but has no Kafka listener"),
                    )),
                },
            }
        };
    let mut response = FindCoordinatorResponse::default();
    if meta.version >= 4 {
        for key in &request.coordinator_keys {
            let mut entry = CoordinatorEntry::default();
            entry.key = key.clone();
            match answer_for(request.key_type, key.as_str()) {
                Ok((node, (host, port))) => {
                    entry.node_id = node;
                    entry.host = str_bytes(&host);
                    entry.port = port;
                }
                Err((error, message)) => {
                    entry.error_code = error;
                    entry.error_message = Some(StrBytes::from_string(message));
                    entry.node_id = BrokerId(-1);
                    entry.port = -1;
                }
            }
            gateway.metrics.error(api_name(meta.api), entry.error_code);
            response.coordinators.push(entry);
        }
    } else {
        match answer_for(request.key_type, request.key.as_str()) {
            Ok((node, (host, port))) => {
                response.node_id = node;
                response.host = str_bytes(&host);
                response.port = port;
            }
            Err((error, message)) => {
                response.error_code = error;
                if meta.version >= 1 {
                    response.error_message = Some(StrBytes::from_string(message));
                }
                response.node_id = BrokerId(-1);
                response.port = -1;
            }
        }
        gateway
            .metrics
            .error(api_name(meta.api), response.error_code);
    }
    response
}

/// NOT_COORDINATOR for a group another broker of the cluster coordinates: the client
/// asks FindCoordinator again.
pub(super) fn not_coordinator(gateway: &Gateway, group: &str) -> Option<ResponseError> {
    gateway
        .coordinates(group)
        .err()
        .map(|_| ResponseError::NotCoordinator)
}

fn join_response(answer: JoinAnswer, version: i16) -> JoinGroupResponse {
    let mut response = JoinGroupResponse::default();
    response.error_code = answer.error;
    response.generation_id = answer.generation;
    response.protocol_type = answer.protocol_type.as_deref().map(str_bytes);
    // A string before version 7, nullable from then on.
    response.protocol_name = if version >= 7 {
        answer.protocol_name.as_deref().map(str_bytes)
    } else {
        Some(str_bytes(answer.protocol_name.as_deref().unwrap_or("")))
    };
    response.leader = str_bytes(&answer.leader);
    response.member_id = str_bytes(&answer.member_id);
    response.members = answer
        .members
        .into_iter()
        .map(|(id, instance, metadata)| {
            let mut member = JoinGroupResponseMember::default();
            member.member_id = str_bytes(&id);
            member.group_instance_id = instance.as_deref().map(str_bytes);
            member.metadata = metadata;
            member
        })
        .collect();
    response
}

/// JoinGroup; waits for the rebalance to complete.
pub fn join_group(
    context: &Context,
    meta: &RequestMeta,
    request: JoinGroupRequest,
) -> impl Future<Output = JoinGroupResponse> + Send + 'static {
    let gateway = context.gateway.clone();
    let version = meta.version;
    let api = api_name(meta.api);
    let member_id = request.member_id.as_str().to_string();
    let params = JoinParams {
        group_id: request.group_id.0.as_str().to_string(),
        member_id: member_id.clone(),
        instance_id: request
            .group_instance_id
            .as_ref()
            .map(|i| i.as_str().to_string()),
        client_id: meta.client_id.clone(),
        client_host: format!("/{}", context.peer.ip()),
        session_timeout_ms: request.session_timeout_ms,
        rebalance_timeout_ms: if version >= 1 {
            request.rebalance_timeout_ms
        } else {
            request.session_timeout_ms
        },
        protocol_type: request.protocol_type.as_str().to_string(),
        protocols: request
            .protocols
            .iter()
            .map(|p| (p.name.as_str().to_string(), p.metadata.clone()))
            .collect(),
        require_known_member_id: version >= 4,
    };
    let answer = match not_coordinator(&gateway, &params.group_id) {
        Some(error) => Answer::Now(JoinAnswer::error(error, &member_id)),
        None => gateway
            .groups
            .lock()
            .expect("coordinator lock")
            .join(Instant::now(), params),
    };
    async move {
        let answer = match answer {
            Answer::Now(answer) => answer,
            Answer::Later(receiver) => receiver
                .await
                .unwrap_or_else(|_| JoinAnswer::error(ResponseError::UnknownMemberId, &member_id)),
        };
        gateway.metrics.error(api, answer.error);
        join_response(answer, version)
    }
}

/// SyncGroup; a follower waits for the leader's assignment.
pub fn sync_group(
    context: &Context,
    meta: &RequestMeta,
    request: SyncGroupRequest,
) -> impl Future<Output = SyncGroupResponse> + Send + 'static {
    let gateway = context.gateway.clone();
    let api = api_name(meta.api);
    let version = meta.version;
    let answer = match not_coordinator(&gateway, request.group_id.0.as_str()) {
        Some(error) => Answer::Now(SyncAnswer::error(error)),
        None => gateway.groups.lock().expect("coordinator lock").sync(
            Instant::now(),
            request.group_id.0.as_str(),
            request.generation_id,
            request.member_id.as_str(),
            request.group_instance_id.as_ref().map(|i| i.as_str()),
            request.protocol_type.as_ref().map(|i| i.as_str()),
            request.protocol_name.as_ref().map(|i| i.as_str()),
            request
                .assignments
                .iter()
                .map(|a| (a.member_id.as_str().to_string(), a.assignment.clone()))
                .collect(),
        ),
    };
    async move {
        let answer = match answer {
            Answer::Now(answer) => answer,
            Answer::Later(receiver) => receiver
                .await
                .unwrap_or_else(|_| SyncAnswer::error(ResponseError::RebalanceInProgress)),
        };
        gateway.metrics.error(api, answer.error);
        let mut response = SyncGroupResponse::default();
        response.error_code = answer.error;
        if version >= 5 {
            response.protocol_type = answer.protocol_type.as_deref().map(str_bytes);
            response.protocol_name = answer.protocol_name.as_deref().map(str_bytes);
        }
        response.assignment = answer.assignment;
        response
    }
}

pub fn heartbeat(
    context: &Context,
    meta: &RequestMeta,
    request: HeartbeatRequest,
) -> HeartbeatResponse {
    let error = match not_coordinator(&context.gateway, request.group_id.0.as_str()) {
        Some(error) => error,
        None => context
            .gateway
            .groups
            .lock()
            .expect("coordinator lock")
            .heartbeat(
                Instant::now(),
                request.group_id.0.as_str(),
                request.generation_id,
                request.member_id.as_str(),
                request.group_instance_id.as_ref().map(|i| i.as_str()),
            ),
    };
    let mut response = HeartbeatResponse::default();
    response.error_code = error.code();
    context
        .gateway
        .metrics
        .error(api_name(meta.api), response.error_code);
    response
}

pub fn leave_group(
    context: &Context,
    meta: &RequestMeta,
    request: LeaveGroupRequest,
) -> LeaveGroupResponse {
    let members: Vec<(String, Option<String>)> = if meta.version >= 3 {
        request
            .members
            .iter()
            .map(|m| {
                (
                    m.member_id.as_str().to_string(),
                    m.group_instance_id.as_ref().map(|i| i.as_str().to_string()),
                )
            })
            .collect()
    } else {
        vec![(request.member_id.as_str().to_string(), None)]
    };
    let mut response = LeaveGroupResponse::default();
    if let Some(error) = not_coordinator(&context.gateway, request.group_id.0.as_str()) {
        response.error_code = error.code();
        context
            .gateway
            .metrics
            .error(api_name(meta.api), response.error_code);
        return response;
    }
    let errors = context
        .gateway
        .groups
        .lock()
        .expect("coordinator lock")
        .leave(Instant::now(), request.group_id.0.as_str(), &members);
    if meta.version >= 3 {
        response.members = members
            .iter()
            .zip(&errors)
            .map(|((id, instance), error)| {
                let mut member = MemberResponse::default();
                member.member_id = str_bytes(id);
                member.group_instance_id = instance.as_deref().map(str_bytes);
                member.error_code = error.code();
                context
                    .gateway
                    .metrics
                    .error(api_name(meta.api), member.error_code);
                member
            })
            .collect();
    } else {
        response.error_code = errors.first().map_or(0, |e| e.code());
        context
            .gateway
            .metrics
            .error(api_name(meta.api), response.error_code);
    }
    response
}

/// OffsetCommit: checks the member and generation, then stores the offsets durably
/// before answering.
pub fn offset_commit(
    context: &Context,
    meta: &RequestMeta,
    request: OffsetCommitRequest,
) -> impl Future<Output = OffsetCommitResponse> + Send + 'static {
    let gateway = context.gateway.clone();
    let api = api_name(meta.api);
    let group_id = request.group_id.0.as_str().to_string();
    let checked = match not_coordinator(&gateway, &group_id) {
        Some(error) => Err(error),
        None => gateway
            .groups
            .lock()
            .expect("coordinator lock")
            .check_commit(
                Instant::now(),
                &group_id,
                request.generation_id_or_member_epoch,
                request.member_id.as_str(),
                request.group_instance_id.as_ref().map(|i| i.as_str()),
            ),
    };
    let names: Vec<&str> = request.topics.iter().map(|t| t.name.0.as_str()).collect();
    let topics = gateway.topics.get_including(&gateway, &names).ok();
    let metadata_max = gateway.config.offset_metadata_bytes_max as usize;
    let commit_ms = super::now_ms();
    let mut response = OffsetCommitResponse::default();
    let mut entries = Vec::new();
    // Which response partitions wait for the write.
    let mut stored: Vec<(usize, usize)> = Vec::new();
    // A broker of a cluster may publish only the partitions it holds a replica of: there,
    // any partition of a known topic is taken (Kafka checks it against metadata of the
    // whole cluster, which no gateway has).
    let in_cluster = gateway.cluster_broker_id() != 0;
    for topic in &request.topics {
        let name = topic.name.0.as_str();
        let partition_known = |index: i32| {
            topics.as_ref().is_some_and(|t| {
                find_partition(t, name, index).is_some()
                    || (in_cluster && index >= 0 && t.contains_key(name))
            })
        };
        let mut topic_response = OffsetCommitResponseTopic::default();
        topic_response.name = topic.name.clone();
        for partition in &topic.partitions {
            let metadata = partition.committed_metadata.as_ref().map(|m| m.as_str());
            let error = if let Err(error) = checked {
                code(error)
            } else if topics.is_none() {
                code(ResponseError::CoordinatorNotAvailable)
            } else if !partition_known(partition.partition_index) {
                code(ResponseError::UnknownTopicOrPartition)
            } else if metadata.is_some_and(|m| m.len() > metadata_max) {
                code(ResponseError::OffsetMetadataTooLarge)
            } else {
                stored.push((response.topics.len(), topic_response.partitions.len()));
                entries.push((
                    OffsetKey {
                        group: group_id.clone(),
                        topic: name.to_string(),
                        partition: partition.partition_index,
                    },
                    CommittedOffset {
                        offset: partition.committed_offset,
                        leader_epoch: partition.committed_leader_epoch,
                        metadata: metadata.map(str::to_string),
                        commit_ms,
                    },
                ));
                0
            };
            let mut partition_response = OffsetCommitResponsePartition::default();
            partition_response.partition_index = partition.partition_index;
            partition_response.error_code = error;
            topic_response.partitions.push(partition_response);
        }
        response.topics.push(topic_response);
    }
    let write = (!entries.is_empty()).then(|| gateway.commit_offsets(&group_id, entries));
    async move {
        if let Some(write) = write {
            if let Err(error) = write.await {
                let refused = match error {
                    CommitError::NotCoordinator(_) => ResponseError::NotCoordinator,
                    CommitError::UnknownTopicOrPartition => ResponseError::UnknownTopicOrPartition,
                    CommitError::Unavailable(_) => ResponseError::CoordinatorNotAvailable,
                };
                eprintln!(
                    "precursor-controlplane: kafka gateway: OffsetCommit of group \
                     {group_id:?}: {error}"
                );
                for (t, p) in stored {
                    response.topics[t].partitions[p].error_code = code(refused);
                }
            }
        }
        for topic in &response.topics {
            for partition in &topic.partitions {
                gateway.metrics.error(api, partition.error_code);
            }
        }
        response
    }
}

/// OffsetFetch: committed offsets (-1 where none).
pub fn offset_fetch(
    context: &Context,
    meta: &RequestMeta,
    request: OffsetFetchRequest,
) -> OffsetFetchResponse {
    let gateway = &context.gateway;
    let group_id = request.group_id.0.as_str();
    let mut response = OffsetFetchResponse::default();
    let committed_of = |topic: &str, partition: i32| {
        let mut entry = OffsetFetchResponsePartition::default();
        entry.partition_index = partition;
        match gateway.committed_offset(group_id, topic, partition) {
            Some(committed) => {
                entry.committed_offset = committed.offset;
                entry.committed_leader_epoch = committed.leader_epoch;
                entry.metadata = Some(StrBytes::from_string(
                    committed.metadata.unwrap_or_default(),
                ));
            }
            None => {
                entry.committed_offset = -1;
                entry.committed_leader_epoch = -1;
                entry.metadata = Some(StrBytes::default());
            }
        }
        entry
    };
    match &request.topics {
        Some(topics) => {
            for topic in topics {
                let mut entry = OffsetFetchResponseTopic::default();
                entry.name = topic.name.clone();
                entry.partitions = topic
                    .partition_indexes
                    .iter()
                    .map(|p| committed_of(topic.name.0.as_str(), *p))
                    .collect();
                response.topics.push(entry);
            }
        }
        None => {
            let mut by_topic: BTreeMap<String, Vec<OffsetFetchResponsePartition>> = BTreeMap::new();
            for (topic, partition, _) in gateway.group_offsets(group_id) {
                let entry = committed_of(&topic, partition);
                by_topic.entry(topic).or_default().push(entry);
            }
            for (topic, partitions) in by_topic {
                let mut entry = OffsetFetchResponseTopic::default();
                entry.name = TopicName(StrBytes::from_string(topic));
                entry.partitions = partitions;
                response.topics.push(entry);
            }
        }
    }
    if group_id.is_empty() && meta.version >= 2 {
        response.error_code = code(ResponseError::InvalidGroupId);
    }
    if let Some(error) = not_coordinator(gateway, group_id) {
        // Before v2 the error goes in every partition.
        response.error_code = error.code();
        for topic in &mut response.topics {
            for partition in &mut topic.partitions {
                partition.error_code = error.code();
                partition.committed_offset = -1;
                partition.committed_leader_epoch = -1;
            }
        }
        if request.topics.is_none() {
            response.topics.clear();
        }
    }
    gateway
        .metrics
        .error(api_name(meta.api), response.error_code);
    response
}

pub fn describe_groups(
    context: &Context,
    meta: &RequestMeta,
    request: DescribeGroupsRequest,
) -> DescribeGroupsResponse {
    let coordinator = context.gateway.groups.lock().expect("coordinator lock");
    let mut response = DescribeGroupsResponse::default();
    for group_id in &request.groups {
        let id = group_id.0.as_str();
        if let Some(error) = not_coordinator(&context.gateway, id) {
            let mut described = DescribedGroup::default();
            described.group_id = group_id.clone();
            described.error_code = error.code();
            described.authorized_operations = AUTHORIZED_OPERATIONS_OMITTED;
            context
                .gateway
                .metrics
                .error(api_name(meta.api), described.error_code);
            response.groups.push(described);
            continue;
        }
        let described = coordinator.describe(id).unwrap_or_else(|| {
            // Kafka describes an unknown group as Dead without an error, and a group that
            // only has committed offsets as Empty.
            let mut described = DescribedGroup::default();
            described.group_id = group_id.clone();
            let state = if context.gateway.group_offsets(id).is_empty() {
                "Dead"
            } else {
                GroupState::Empty.name()
            };
            described.group_state = str_bytes(state);
            described.authorized_operations = AUTHORIZED_OPERATIONS_OMITTED;
            if id.is_empty() {
                described.error_code = code(ResponseError::InvalidGroupId);
            }
            described
        });
        context
            .gateway
            .metrics
            .error(api_name(meta.api), described.error_code);
        response.groups.push(described);
    }
    response
}

pub fn list_groups(
    context: &Context,
    meta: &RequestMeta,
    request: ListGroupsRequest,
) -> ListGroupsResponse {
    let mut listed: BTreeMap<String, (&'static str, String)> = BTreeMap::new();
    for group in context.gateway.groups_with_offsets() {
        listed.insert(group, (GroupState::Empty.name(), String::new()));
    }
    for (id, state, protocol_type) in context
        .gateway
        .groups
        .lock()
        .expect("coordinator lock")
        .list()
    {
        listed.insert(id, (state.name(), protocol_type));
    }
    let wanted_states: Vec<String> = request
        .states_filter
        .iter()
        .map(|s| s.as_str().to_ascii_lowercase())
        .collect();
    let wanted_types: Vec<String> = request
        .types_filter
        .iter()
        .map(|s| s.as_str().to_ascii_lowercase())
        .collect();
    let mut response = ListGroupsResponse::default();
    for (id, (state, protocol_type)) in listed {
        if meta.version >= 4
            && !wanted_states.is_empty()
            && !wanted_states.contains(&state.to_ascii_lowercase())
        {
            continue;
        }
        if !wanted_types.is_empty() && !wanted_types.contains(&"classic".to_string()) {
            continue;
        }
        let mut group = ListedGroup::default();
        group.group_id = GroupId(StrBytes::from_string(id));
        group.protocol_type = StrBytes::from_string(protocol_type);
        group.group_state = str_bytes(state);
        group.group_type = str_bytes("classic");
        response.groups.push(group);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(delay_ms: u64) -> GroupLimits {
        GroupLimits {
            session_timeout_ms_min: 1_000,
            session_timeout_ms_max: 60_000,
            initial_rebalance_delay_ms: delay_ms,
            members_max: 3,
        }
    }

    fn params(member_id: &str, protocols: &[&str]) -> JoinParams {
        JoinParams {
            group_id: "g".into(),
            member_id: member_id.into(),
            instance_id: None,
            client_id: "client".into(),
            client_host: "/127.0.0.1".into(),
            session_timeout_ms: 10_000,
            rebalance_timeout_ms: 30_000,
            protocol_type: "consumer".into(),
            protocols: protocols
                .iter()
                .map(|p| (p.to_string(), Bytes::from(format!("meta-{p}"))))
                .collect(),
            require_known_member_id: true,
        }
    }

    fn now_answer<T: std::fmt::Debug>(answer: Answer<T>) -> T {
        match answer {
            Answer::Now(answer) => answer,
            Answer::Later(_) => panic!("expected an answer now"),
        }
    }

    fn later<T>(answer: Answer<T>) -> oneshot::Receiver<T> {
        match answer {
            Answer::Later(receiver) => receiver,
            Answer::Now(_) => panic!("expected to wait"),
        }
    }

    fn ready<T>(receiver: &mut oneshot::Receiver<T>) -> Option<T> {
        receiver.try_recv().ok()
    }

    /// Joins a new member the v4 way (MEMBER_ID_REQUIRED first); returns its id and the
    /// receiver of its join answer.
    fn join_new(
        coordinator: &mut Coordinator,
        now: Instant,
        protocols: &[&str],
    ) -> (String, oneshot::Receiver<JoinAnswer>) {
        let first = now_answer(coordinator.join(now, params("", protocols)));
        assert_eq!(first.error, ResponseError::MemberIdRequired.code());
        assert!(
            first.member_id.starts_with("client-"),
            "{}",
            first.member_id
        );
        let id = first.member_id;
        let receiver = later(coordinator.join(now, params(&id, protocols)));
        (id, receiver)
    }

    #[test]
    fn two_members_join_the_leader_assigns_and_both_get_their_share() {
        let mut c = Coordinator::new(limits(0));
        let t0 = Instant::now();
        let (a, mut join_a) = join_new(&mut c, t0, &["range", "roundrobin"]);
        // One member, no delay: the join completes at once.
        let answer_a = ready(&mut join_a).expect("a joined");
        assert_eq!((answer_a.error, answer_a.generation), (0, 1));
        assert_eq!(answer_a.leader, a);
        assert_eq!(answer_a.members.len(), 1);
        // b arrives: a rebalance; a learns of it by heartbeat, rejoins.
        let (b, mut join_b) = join_new(&mut c, t0, &["roundrobin", "range"]);
        assert!(ready(&mut join_b).is_none(), "waits for a to rejoin");
        assert_eq!(
            c.heartbeat(t0, "g", 1, &a, None),
            ResponseError::RebalanceInProgress
        );
        let mut rejoin_a = later(c.join(t0, params(&a, &["range", "roundrobin"])));
        let answer_a = ready(&mut rejoin_a).expect("rebalance done");
        let answer_b = ready(&mut join_b).expect("rebalance done");
        assert_eq!(answer_a.generation, 2);
        assert_eq!(answer_b.generation, 2);
        assert_eq!(answer_a.leader, a, "the leader stays");
        // One vote each; the tie goes to the first member's preference.
        assert_eq!(answer_a.protocol_name.as_deref(), Some("range"));
        assert_eq!(answer_a.members.len(), 2);
        assert!(answer_b.members.is_empty(), "followers get no member list");
        assert_eq!(
            answer_a.members.iter().find(|m| m.0 == b).unwrap().2,
            Bytes::from("meta-range")
        );
        // The follower syncs first and waits; the leader's assignment releases both.
        let mut sync_b = later(c.sync(t0, "g", 2, &b, None, None, None, vec![]));
        assert!(ready(&mut sync_b).is_none());
        let assignments = vec![
            (a.clone(), Bytes::from_static(b"p0,p1,p2")),
            (b.clone(), Bytes::from_static(b"p3,p4,p5")),
        ];
        let mut sync_a = later(c.sync(
            t0,
            "g",
            2,
            &a,
            None,
            Some("consumer"),
            Some("range"),
            assignments,
        ));
        assert_eq!(
            ready(&mut sync_a).unwrap().assignment,
            Bytes::from_static(b"p0,p1,p2")
        );
        assert_eq!(
            ready(&mut sync_b).unwrap().assignment,
            Bytes::from_static(b"p3,p4,p5")
        );
        assert_eq!(c.heartbeat(t0, "g", 2, &b, None).code(), 0);
        assert_eq!(c.describe("g").unwrap().group_state.as_str(), "Stable");
        // Wrong generation, unknown member.
        assert_eq!(
            c.heartbeat(t0, "g", 1, &b, None),
            ResponseError::IllegalGeneration
        );
        assert_eq!(
            c.heartbeat(t0, "g", 2, "nobody", None),
            ResponseError::UnknownMemberId
        );
        assert_eq!(
            c.heartbeat(t0, "other", 2, &b, None),
            ResponseError::UnknownMemberId
        );
        let stale = now_answer(c.sync(t0, "g", 1, &b, None, None, None, vec![]));
        assert_eq!(stale.error, ResponseError::IllegalGeneration.code());
    }

    #[test]
    fn a_member_that_stops_heartbeating_is_removed_and_the_other_takes_over() {
        let mut c = Coordinator::new(limits(0));
        let t0 = Instant::now();
        let (a, mut join_a) = join_new(&mut c, t0, &["range"]);
        ready(&mut join_a).unwrap();
        let (b, mut join_b) = join_new(&mut c, t0, &["range"]);
        let mut rejoin_a = later(c.join(t0, params(&a, &["range"])));
        ready(&mut rejoin_a).unwrap();
        ready(&mut join_b).unwrap();
        drop(later(c.sync(t0, "g", 2, &b, None, None, None, vec![])));
        drop(later(c.sync(t0, "g", 2, &a, None, None, None, vec![])));
        // b goes silent; a keeps heartbeating.
        let mut t = t0;
        for _ in 0..12 {
            t += Duration::from_secs(1);
            assert_eq!(
                c.heartbeat(t, "g", 2, &a, None).code(),
                0,
                "stable while b's session lasts"
            );
            c.tick(t);
            if c.describe("g").unwrap().members.len() == 1 {
                break;
            }
        }
        assert!(
            t - t0 <= Duration::from_secs(11),
            "removed after the 10 s session"
        );
        assert_eq!(
            c.heartbeat(t, "g", 2, &a, None),
            ResponseError::RebalanceInProgress
        );
        let mut rejoin = later(c.join(t, params(&a, &["range"])));
        let answer = ready(&mut rejoin).unwrap();
        assert_eq!((answer.generation, answer.members.len()), (3, 1));
        assert_eq!(
            c.heartbeat(t, "g", 3, &b, None),
            ResponseError::UnknownMemberId
        );
    }

    #[test]
    fn the_initial_delay_gathers_members_before_the_first_rebalance() {
        let mut c = Coordinator::new(limits(3_000));
        let t0 = Instant::now();
        let (_a, mut join_a) = join_new(&mut c, t0, &["range"]);
        c.tick(t0 + Duration::from_millis(1_000));
        assert!(ready(&mut join_a).is_none(), "still in the initial delay");
        let (_b, mut join_b) = join_new(&mut c, t0 + Duration::from_millis(1_500), &["range"]);
        c.tick(t0 + Duration::from_millis(3_200));
        assert!(
            ready(&mut join_a).is_none(),
            "b's arrival pushed the delay out"
        );
        c.tick(t0 + Duration::from_millis(4_600));
        let a = ready(&mut join_a).expect("delay over");
        let b = ready(&mut join_b).expect("delay over");
        assert_eq!((a.generation, b.generation), (1, 1));
        assert_eq!(a.members.len() + b.members.len(), 2, "one leader sees both");
    }

    #[test]
    fn leaving_rebalances_and_the_last_member_empties_the_group() {
        let mut c = Coordinator::new(limits(0));
        let t0 = Instant::now();
        let (a, mut join_a) = join_new(&mut c, t0, &["range"]);
        ready(&mut join_a).unwrap();
        let errors = c.leave(t0, "g", &[(a.clone(), None), ("ghost".into(), None)]);
        assert_eq!(errors[0].code(), 0);
        assert_eq!(errors[1], ResponseError::UnknownMemberId);
        assert_eq!(c.describe("g").unwrap().group_state.as_str(), "Empty");
        c.tick(t0);
        assert!(c.describe("g").is_none(), "an empty group is forgotten");
        assert_eq!(
            c.leave(t0, "g", &[(a, None)])[0],
            ResponseError::UnknownMemberId
        );
    }

    #[test]
    fn joins_are_checked() {
        let mut c = Coordinator::new(limits(0));
        let t0 = Instant::now();
        let mut bad = params("", &["range"]);
        bad.session_timeout_ms = 10;
        assert_eq!(
            now_answer(c.join(t0, bad)).error,
            ResponseError::InvalidSessionTimeout.code()
        );
        let mut bad = params("", &["range"]);
        bad.group_id.clear();
        assert_eq!(
            now_answer(c.join(t0, bad)).error,
            ResponseError::InvalidGroupId.code()
        );
        assert_eq!(
            now_answer(c.join(t0, params("", &[]))).error,
            ResponseError::InconsistentGroupProtocol.code()
        );
        assert_eq!(
            now_answer(c.join(t0, params("made-up", &["range"]))).error,
            ResponseError::UnknownMemberId.code()
        );
        let (_a, mut join_a) = join_new(&mut c, t0, &["range"]);
        ready(&mut join_a).unwrap();
        // No protocol in common with the group.
        assert_eq!(
            now_answer(c.join(t0, params("", &["sticky"]))).error,
            ResponseError::InconsistentGroupProtocol.code()
        );
        // Versions before 4 join at once, without MEMBER_ID_REQUIRED.
        let mut old = params("", &["range"]);
        old.require_known_member_id = false;
        drop(later(c.join(t0, old)));
        // members_max = 3: two members and one more pending fill the group.
        let first = now_answer(c.join(t0, params("", &["range"])));
        assert_eq!(first.error, ResponseError::MemberIdRequired.code());
        assert_eq!(
            now_answer(c.join(t0, params("", &["range"]))).error,
            ResponseError::GroupMaxSizeReached.code()
        );
    }

    #[test]
    fn commits_are_checked_against_member_and_generation() {
        let mut c = Coordinator::new(limits(0));
        let t0 = Instant::now();
        assert!(
            c.check_commit(t0, "solo", -1, "", None).is_ok(),
            "simple commit"
        );
        assert_eq!(
            c.check_commit(t0, "solo", 3, "m", None),
            Err(ResponseError::IllegalGeneration)
        );
        let (a, mut join_a) = join_new(&mut c, t0, &["range"]);
        ready(&mut join_a).unwrap();
        assert_eq!(
            c.check_commit(t0, "g", 1, &a, None),
            Err(ResponseError::RebalanceInProgress),
            "no commits between join and sync"
        );
        drop(later(c.sync(t0, "g", 1, &a, None, None, None, vec![])));
        assert!(c.check_commit(t0, "g", 1, &a, None).is_ok());
        assert_eq!(
            c.check_commit(t0, "g", 0, &a, None),
            Err(ResponseError::IllegalGeneration)
        );
        assert_eq!(
            c.check_commit(t0, "g", 1, "stranger", None),
            Err(ResponseError::UnknownMemberId)
        );
        assert_eq!(
            c.check_commit(t0, "g", -1, "", None),
            Err(ResponseError::UnknownMemberId)
        );
    }

    #[test]
    fn a_leader_that_never_syncs_is_dropped_after_the_rebalance_timeout() {
        let mut c = Coordinator::new(limits(0));
        let t0 = Instant::now();
        let (a, mut join_a) = join_new(&mut c, t0, &["range"]);
        ready(&mut join_a).unwrap();
        let (b, mut join_b) = join_new(&mut c, t0, &["range"]);
        let mut rejoin_a = later(c.join(t0, params(&a, &["range"])));
        ready(&mut rejoin_a).unwrap();
        ready(&mut join_b).unwrap();
        let mut sync_b = later(c.sync(t0, "g", 2, &b, None, None, None, vec![]));
        c.tick(t0 + Duration::from_secs(31));
        assert_eq!(
            ready(&mut sync_b).unwrap().error,
            ResponseError::RebalanceInProgress.code()
        );
        assert_eq!(
            c.heartbeat(t0, "g", 2, &a, None),
            ResponseError::UnknownMemberId
        );
        let mut rejoin_b = later(c.join(t0 + Duration::from_secs(31), params(&b, &["range"])));
        let answer = ready(&mut rejoin_b).unwrap();
        assert_eq!((answer.leader, answer.generation), (b, 3));
    }

    #[test]
    fn a_static_member_rejoining_replaces_its_old_self() {
        let mut c = Coordinator::new(limits(0));
        let t0 = Instant::now();
        let mut p = params("", &["range"]);
        p.instance_id = Some("host-1".into());
        let mut first = later(c.join(t0, p.clone()));
        let old = ready(&mut first).unwrap().member_id;
        let mut again = later(c.join(t0, p));
        let new = ready(&mut again).unwrap();
        assert_ne!(new.member_id, old);
        assert_eq!(
            c.heartbeat(t0, "g", new.generation, &old, None),
            ResponseError::UnknownMemberId
        );
        assert_eq!(
            c.heartbeat(t0, "g", new.generation, &new.member_id, Some("host-2")),
            ResponseError::FencedInstanceId
        );
    }
}
