//! Where committed consumer offsets live, and who coordinates a group.
//!
//! - Alone or with `cluster.metadata = "static"`: this broker's offsets file
//!   ([`super::offsets::OffsetStore`]); a group is placed by `[cluster]` alone
//!   ([`super::cluster::group_coordinator`]), so a dead coordinator's groups wait for it.
//! - With `cluster.metadata = "quorum"`: the metadata quorum. An OffsetCommit is answered
//!   once its `CommitOffsets` is committed by a majority of voters, so it survives losing
//!   the coordinator; OffsetFetch reads the state this broker's voter applied. The group's
//!   coordinator is [`MetadataState::group_coordinator`]: a hash over the live brokers
//!   that serve Kafka, so the groups of a fenced broker move to the others at once.
//!
//! Why the quorum's order makes a moved group read every commit: the state machine takes a
//! `CommitOffsets` only from the group's coordinator at that point of the log. A broker
//! becomes a group's coordinator by applying the entry that moved it (a fence, a
//! registration); every commit of the previous coordinator the quorum accepted comes before
//! that entry, so the new coordinator has applied it before it answers any request of the
//! group.

use super::offsets::{CommittedOffset, OffsetKey, OffsetStoreError};
use super::Gateway;
use precursor_metadata::{MetadataCommand, MetadataReply, MetadataState, OffsetCommit, Refusal};
use std::future::Future;
use std::sync::Arc;

/// Why committed offsets were not stored.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CommitError {
    /// Another broker (or none) coordinates the group now.
    #[error("this broker does not coordinate the group (now: {0:?})")]
    NotCoordinator(Option<u32>),
    #[error("a topic or partition of the commit does not exist")]
    UnknownTopicOrPartition,
    #[error("{0}")]
    Unavailable(String),
}

impl Gateway {
    /// The metadata quorum's state, when this broker is a member of one.
    fn quorum_state(&self) -> Option<Arc<MetadataState>> {
        self.node.member.get().map(|member| member.state())
    }

    /// Where consumer group `group` is coordinated: Ok on this broker, else the id of the
    /// broker that coordinates it, or None when no live broker can.
    pub fn coordinates(&self, group: &str) -> Result<(), Option<u32>> {
        let placed = match self.quorum_state() {
            Some(state) => match state.group_coordinator(group) {
                Some(id) => Some(id),
                None => return Err(None),
            },
            None => super::cluster::group_coordinator(&self.node.config.cluster, group),
        };
        match placed {
            Some(id) if id != self.cluster_broker_id() => Err(Some(id)),
            _ => Ok(()),
        }
    }

    /// The committed offset of one partition.
    pub fn committed_offset(
        &self,
        group: &str,
        topic: &str,
        partition: i32,
    ) -> Option<CommittedOffset> {
        let Some(state) = self.quorum_state() else {
            return self.offsets.get(group, topic, partition);
        };
        state
            .committed_offset(group, topic, u32::try_from(partition).ok()?)
            .map(from_quorum)
    }

    /// Every committed offset of `group`, by topic and partition.
    pub fn group_offsets(&self, group: &str) -> Vec<(String, i32, CommittedOffset)> {
        let Some(state) = self.quorum_state() else {
            return self.offsets.group(group);
        };
        state
            .group_offsets(group)
            .into_iter()
            .flatten()
            .map(|((topic, partition), committed)| {
                (topic.clone(), *partition as i32, from_quorum(committed))
            })
            .collect()
    }

    /// Groups with at least one committed offset that this broker coordinates (as Kafka's
    /// ListGroups: each broker lists its own; a client asks every broker).
    pub fn groups_with_offsets(&self) -> Vec<String> {
        let Some(state) = self.quorum_state() else {
            return self.offsets.groups();
        };
        let me = self.cluster_broker_id();
        state
            .offsets
            .keys()
            .filter(|group| state.group_coordinator(group) == Some(me))
            .cloned()
            .collect()
    }

    /// Stores `entries` (all of one group) and resolves once they are durable: fdatasync'd
    /// to the offsets file, or committed by the metadata quorum.
    pub fn commit_offsets(
        &self,
        group: &str,
        entries: Vec<(OffsetKey, CommittedOffset)>,
    ) -> impl Future<Output = Result<(), CommitError>> + Send + 'static {
        debug_assert!(entries.iter().all(|(key, _)| key.group == group));
        let change = if self.node.member.get().is_none() {
            OffsetsChange::File(self.offsets.commit(entries))
        } else {
            let offsets = entries
                .into_iter()
                .map(|(key, committed)| OffsetCommit {
                    topic: key.topic,
                    partition: u32::try_from(key.partition).unwrap_or(u32::MAX),
                    offset: committed.offset,
                    leader_epoch: committed.leader_epoch,
                    metadata: committed.metadata.unwrap_or_default(),
                })
                .collect();
            OffsetsChange::Quorum(MetadataCommand::CommitOffsets {
                group: group.to_string(),
                coordinator: self.cluster_broker_id(),
                offsets,
            })
        };
        self.offsets_durable(change, "commit")
    }

    /// Deletes committed offsets of `group` (all of them when `partitions` is None) and
    /// resolves once that is durable, as [`Gateway::commit_offsets`].
    pub fn delete_group_offsets(
        &self,
        group: &str,
        partitions: Option<Vec<(String, i32)>>,
    ) -> impl Future<Output = Result<(), CommitError>> + Send + 'static {
        let change = if self.node.member.get().is_none() {
            OffsetsChange::File(
                self.offsets
                    .delete_group_offsets(group, partitions.as_deref()),
            )
        } else {
            let partitions = partitions.map(|list| {
                list.into_iter()
                    .filter_map(|(topic, partition)| Some((topic, u32::try_from(partition).ok()?)))
                    .collect()
            });
            OffsetsChange::Quorum(MetadataCommand::DeleteOffsets {
                group: group.to_string(),
                coordinator: self.cluster_broker_id(),
                partitions,
            })
        };
        self.offsets_durable(change, "deletion")
    }

    /// Resolves once `change` is durable: its write to the offsets file synced, or its
    /// command committed by the metadata quorum (refusals as [`CommitError`]s).
    fn offsets_durable<F>(
        &self,
        change: OffsetsChange<F>,
        what: &'static str,
    ) -> impl Future<Output = Result<(), CommitError>> + Send + 'static
    where
        F: Future<Output = Result<(), OffsetStoreError>> + Send + 'static,
    {
        let node = self.node.clone();
        async move {
            match change {
                OffsetsChange::File(written) => written
                    .await
                    .map_err(|error| CommitError::Unavailable(error.to_string())),
                OffsetsChange::Quorum(command) => {
                    let member = node.member.get().expect("a quorum change needs a member");
                    quorum_answer(member.propose(command).await, what)
                }
            }
        }
    }

    /// Forgets every committed offset of a deleted topic. The quorum drops them itself
    /// when it applies the deletion.
    pub fn forget_topic_offsets(
        &self,
        topic: &str,
    ) -> impl Future<Output = Result<(), String>> + Send + 'static {
        let file = self
            .node
            .member
            .get()
            .is_none()
            .then(|| self.offsets.delete_topic(topic));
        async move {
            match file {
                Some(file) => file.await.map_err(|error| error.to_string()),
                None => Ok(()),
            }
        }
    }
}

/// A change of committed offsets, where this broker keeps them.
enum OffsetsChange<F> {
    /// Alone or in static mode: the offsets file's write, resolving once synced.
    File(F),
    /// With `cluster.metadata = "quorum"`: the command to commit.
    Quorum(MetadataCommand),
}

/// A committed offsets command's answer from the quorum, as a [`CommitError`].
fn quorum_answer<E: std::fmt::Display>(
    answer: Result<MetadataReply, E>,
    what: &str,
) -> Result<(), CommitError> {
    match answer {
        Ok(MetadataReply::Done) => Ok(()),
        Ok(MetadataReply::Refused(Refusal::NotCoordinator { coordinator })) => {
            Err(CommitError::NotCoordinator(coordinator))
        }
        Ok(MetadataReply::Refused(Refusal::TopicUnknown | Refusal::PartitionUnknown)) => {
            Err(CommitError::UnknownTopicOrPartition)
        }
        Ok(other) => Err(CommitError::Unavailable(format!(
            "the metadata quorum refused the offsets {what}: {other}"
        ))),
        Err(error) => Err(CommitError::Unavailable(format!(
            "the metadata quorum did not commit the offsets {what}: {error}"
        ))),
    }
}

fn from_quorum(committed: &precursor_metadata::CommittedOffset) -> CommittedOffset {
    CommittedOffset {
        offset: committed.offset,
        leader_epoch: committed.leader_epoch,
        metadata: Some(committed.metadata.clone()),
        // The quorum keeps no commit time (it would be the proposer's clock).
        commit_ms: 0,
    }
}
