//! Metadata commit latency: three voters of the metadata quorum (openraft, real TCP on
//! 127.0.0.1, each with its own log directory and fdatasync) in this process, holding
//! `partitions` partitions (topics of 100 partitions, three replicas each), time one
//! proposal after another from a follower, as a broker's control plane proposes: a
//! `CommitOffsets` of one group and partition, what each Kafka OffsetCommit costs with
//! `cluster.metadata = "quorum"` (a failover's or an election's commit is one entry of
//! the same log, the same path). Each proposal's latency is
//! forwarding + append + fdatasync on a majority + apply on the leader + the answer.
//!
//! What grows with partitions: every apply publishes a copy of the whole state to the
//! control plane's readers, and a snapshot (every `SNAPSHOT_LOGS_SINCE_LAST` entries)
//! serializes it.

use crate::latency::LatencyRecorder;
use crate::result::RunResult;
use anyhow::{bail, Context, Result};
use precursor_metadata::{
    MetadataCommand, MetadataReply, OffsetCommit, Quorum, QuorumConfig, QuorumTimings, QuorumTuning,
};
use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

/// Partitions of each topic the run creates.
const PARTITIONS_PER_TOPIC: u32 = 100;
/// How long the voters may take to agree on a leader, in milliseconds.
const LEADER_WAIT_MS: u64 = 20_000;

fn free_port() -> Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").context("no free port")?;
    Ok(listener.local_addr()?)
}

/// Times `commits` CommitOffsets proposals against a quorum holding `partitions` partitions
/// (rounded up to whole topics of [`PARTITIONS_PER_TOPIC`]).
pub async fn commit_latency(partitions: u32, commits: u64, warmup: u64) -> Result<RunResult> {
    let ids = [1u32, 2, 3];
    let mut voters = BTreeMap::new();
    for id in ids {
        voters.insert(id, free_port()?);
    }
    let dirs: Vec<tempfile::TempDir> = ids
        .iter()
        .map(|_| tempfile::tempdir())
        .collect::<std::io::Result<_>>()?;
    let timings = QuorumTimings::default();
    let mut quorums = BTreeMap::new();
    for (id, dir) in ids.iter().zip(&dirs) {
        let config = QuorumConfig {
            node_id: *id,
            voters: voters.clone(),
            dir: dir.path().to_path_buf(),
            timings: timings.clone(),
        };
        let quorum = Quorum::start_tuned(config, QuorumTuning::default())
            .await
            .map_err(|e| anyhow::anyhow!("voter {id}: {e}"))?;
        quorums.insert(*id, quorum);
    }
    let deadline = Instant::now() + Duration::from_millis(LEADER_WAIT_MS);
    let leader = loop {
        let seen: Vec<Option<u32>> = quorums.values().map(|q| q.status().leader).collect();
        if let Some(Some(l)) = seen.first() {
            if seen.iter().all(|s| *s == Some(*l)) {
                break *l;
            }
        }
        if Instant::now() > deadline {
            bail!("the three voters agreed on no leader within {LEADER_WAIT_MS} ms");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    // A follower proposes, as most brokers' control planes do.
    let proposer = quorums
        .iter()
        .find(|(id, _)| **id != leader)
        .map(|(_, q)| q.clone())
        .expect("three voters");
    let propose = |command: MetadataCommand| {
        let proposer = proposer.clone();
        async move {
            proposer
                .propose(command)
                .await
                .map_err(|e| anyhow::anyhow!("proposal: {e}"))
        }
    };
    for id in ids {
        let reply = propose(MetadataCommand::RegisterBroker {
            id,
            incarnation: 1,
            rack: String::new(),
            kafka: true,
        })
        .await?;
        if reply != MetadataReply::Done {
            bail!("register broker {id}: {reply}");
        }
    }
    let topics = partitions.div_ceil(PARTITIONS_PER_TOPIC).max(1);
    for t in 0..topics {
        let replicas = (0..PARTITIONS_PER_TOPIC)
            .map(|p| (0..3).map(|r| ids[((p + r) % 3) as usize]).collect())
            .collect();
        let reply = propose(MetadataCommand::CreateTopic {
            name: format!("topic-{t}"),
            replicas,
            min_insync: 2,
            unclean_leader_election: false,
            retention_ms: 0,
            retention_bytes: 0,
        })
        .await?;
        if !matches!(reply, MetadataReply::TopicCreated { .. }) {
            bail!("create topic-{t}: {reply}");
        }
    }
    // One consumer group committing one partition's offset, again and again: what every
    // OffsetCommit of a group costs in quorum mode. (A commit that moves leaders would
    // need the brokers' heartbeats: without them the quorum fences them after a session.)
    let mut recorder = LatencyRecorder::new();
    let mut errors = 0u64;
    let started = Instant::now();
    for i in 0..warmup + commits {
        let command = MetadataCommand::CommitOffsets {
            group: "bench".to_string(),
            coordinator: 0,
            offsets: vec![OffsetCommit {
                topic: "topic-0".to_string(),
                partition: (i % u64::from(PARTITIONS_PER_TOPIC)) as u32,
                offset: i as i64,
                leader_epoch: 0,
                metadata: String::new(),
            }],
        };
        let sent = Instant::now();
        let reply = propose(command).await?;
        let done = Instant::now();
        if reply != MetadataReply::Done {
            errors += 1;
        }
        if i >= warmup {
            recorder.record(sent, done);
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    for (_, quorum) in quorums {
        quorum.shutdown().await;
    }
    let mut result = RunResult::new(
        "precursor-metadata",
        "tcp",
        "metadata-commit",
        commits,
        u64::from(topics * PARTITIONS_PER_TOPIC),
        seconds,
    )
    .with_latency(&recorder);
    result.durability = Some("durable".to_string());
    result.durability_detail = Some(format!(
        "3 voters, fdatasync before an append is acknowledged; {} partitions in the state \
         (the size field)",
        topics * PARTITIONS_PER_TOPIC
    ));
    result.errors = errors;
    Ok(result)
}
