//! Three voters in one process over real TCP on 127.0.0.1, each with its own directory.
//! Waits are bounded; no test asserts a duration.

use precursor_metadata::{
    HeartbeatReply, MetadataCommand, MetadataReply, MetadataState, Quorum, QuorumConfig,
    QuorumTimings, QuorumTuning, Refusal,
};
use std::collections::BTreeMap;
use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Bounded waits, at most, in milliseconds (generous: two cores shared with builds).
const WAIT_MS: u64 = 20_000;

/// One test at a time: three voters each already load a shared two-core machine.
static SERIAL: Mutex<()> = Mutex::new(());

fn run<F: Future<Output = ()>>(test: F) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(test);
}

fn timings() -> QuorumTimings {
    QuorumTimings {
        raft_heartbeat_ms: 50,
        raft_election_timeout_min_ms: 400,
        raft_election_timeout_max_ms: 800,
        broker_heartbeat_ms: 20,
        broker_session_ms: 1_000,
        lease_margin_ms: 100,
    }
}

fn free_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

struct Cluster {
    voters: BTreeMap<u32, SocketAddr>,
    dirs: BTreeMap<u32, tempfile::TempDir>,
    quorums: BTreeMap<u32, Quorum>,
    tuning: QuorumTuning,
}

impl Cluster {
    async fn start(tuning: QuorumTuning) -> Cluster {
        let voters: BTreeMap<u32, SocketAddr> = (1..=3).map(|id| (id, free_port())).collect();
        let dirs = (1..=3)
            .map(|id| (id, tempfile::tempdir().unwrap()))
            .collect();
        let mut cluster = Cluster {
            voters,
            dirs,
            quorums: BTreeMap::new(),
            tuning,
        };
        for id in 1..=3 {
            cluster.start_voter(id).await;
        }
        cluster
    }

    async fn start_voter(&mut self, id: u32) {
        let config = QuorumConfig {
            node_id: id,
            voters: self.voters.clone(),
            dir: self.dirs[&id].path().to_path_buf(),
            timings: timings(),
        };
        let quorum = Quorum::start_tuned(config, self.tuning.clone())
            .await
            .unwrap();
        self.quorums.insert(id, quorum);
    }

    async fn stop_voter(&mut self, id: u32) {
        let quorum = self.quorums.remove(&id).unwrap();
        quorum.shutdown().await;
    }

    /// The leader every running voter agrees on.
    async fn leader(&self) -> u32 {
        let mut found = 0;
        wait_for("an agreed leader", || {
            let leaders: Vec<Option<u32>> =
                self.quorums.values().map(|q| q.status().leader).collect();
            match leaders[0] {
                Some(l)
                    if self.quorums.contains_key(&l) && leaders.iter().all(|x| *x == Some(l)) =>
                {
                    found = l;
                    true
                }
                _ => false,
            }
        })
        .await;
        found
    }

    fn follower_of(&self, leader: u32) -> u32 {
        *self.quorums.keys().find(|id| **id != leader).unwrap()
    }

    /// Waits until every running voter's applied state satisfies `check`.
    async fn wait_applied(&self, what: &str, check: impl Fn(&MetadataState) -> bool) {
        wait_for(what, || {
            self.quorums.values().all(|q| check(&q.state().borrow()))
        })
        .await;
    }

    async fn shutdown(self) {
        for (_, quorum) in self.quorums {
            quorum.shutdown().await;
        }
    }
}

async fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_millis(WAIT_MS);
    while !check() {
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn register(id: u32, incarnation: u64) -> MetadataCommand {
    MetadataCommand::RegisterBroker {
        id,
        incarnation,
        rack: format!("rack-{id}"),
        kafka: true,
    }
}

#[test]
fn follower_proposal_applies_on_all_three() {
    run(async {
        let cluster = Cluster::start(QuorumTuning::default()).await;
        let leader = cluster.leader().await;
        let follower = cluster.follower_of(leader);
        let reply = cluster.quorums[&follower]
            .propose(register(1, 7))
            .await
            .unwrap();
        assert_eq!(reply, MetadataReply::Done);
        cluster
            .wait_applied("broker 1 registered everywhere", |s| {
                s.brokers.get(&1).is_some_and(|b| b.incarnation == 7)
            })
            .await;
        let status = cluster.quorums[&leader].status();
        assert_eq!(status.leader, Some(leader));
        assert_eq!(status.voters.len(), 3);
        assert!(status.voters.iter().all(|v| v.matched.is_some()));
        cluster.shutdown().await;
    });
}

#[test]
fn leader_shut_down_a_new_one_is_elected_and_proposals_go_on() {
    run(async {
        let mut cluster = Cluster::start(QuorumTuning::default()).await;
        let first = cluster.leader().await;
        let term = cluster.quorums[&first].status().term;
        cluster.quorums[&first]
            .propose(register(1, 1))
            .await
            .unwrap();
        cluster.stop_voter(first).await;
        let second = cluster.leader().await;
        assert_ne!(first, second);
        assert!(cluster.quorums[&second].status().term > term);
        let reply = cluster.quorums[&second]
            .propose(register(2, 1))
            .await
            .unwrap();
        assert_eq!(reply, MetadataReply::Done);
        cluster
            .wait_applied("both brokers on the two voters left", |s| {
                s.brokers.contains_key(&1) && s.brokers.contains_key(&2)
            })
            .await;
        cluster.shutdown().await;
    });
}

#[test]
fn restarted_voter_recovers_from_snapshot_and_log_and_catches_up() {
    run(async {
        let tuning = QuorumTuning {
            snapshot_logs_since_last: 5,
            snapshot_logs_kept: 2,
        };
        let mut cluster = Cluster::start(tuning).await;
        let leader = cluster.leader().await;
        let follower = cluster.follower_of(leader);
        for id in 1..=20 {
            cluster.quorums[&leader]
                .propose(register(id, 1))
                .await
                .unwrap();
        }
        cluster
            .wait_applied("20 brokers", |s| s.brokers.len() == 20)
            .await;
        let snapshot = cluster.dirs[&follower].path().join("snapshot.json");
        wait_for("a snapshot on the follower", || snapshot.exists()).await;
        cluster.stop_voter(follower).await;
        for id in 21..=30 {
            cluster.quorums[&leader]
                .propose(register(id, 1))
                .await
                .unwrap();
        }
        cluster.start_voter(follower).await;
        // Before it catches up it has at least what it had: snapshot + its log.
        let recovered = cluster.quorums[&follower].state().borrow().brokers.len();
        assert!(recovered >= 5, "recovered {recovered} brokers");
        cluster
            .wait_applied("30 brokers everywhere, the restarted voter too", |s| {
                s.brokers.len() == 30
            })
            .await;
        // The restarted voter serves proposals again.
        cluster.quorums[&follower]
            .propose(register(31, 1))
            .await
            .unwrap();
        cluster
            .wait_applied("31 brokers", |s| s.brokers.len() == 31)
            .await;
        cluster.shutdown().await;
    });
}

#[test]
fn a_silent_broker_is_fenced_and_its_leaderships_move() {
    run(async {
        let cluster = Cluster::start(QuorumTuning::default()).await;
        let leader = cluster.leader().await;
        let follower = cluster.follower_of(leader);
        let q = cluster.quorums[&follower].clone();
        for id in 1..=3 {
            assert_eq!(
                q.propose(register(id, 10)).await.unwrap(),
                MetadataReply::Done
            );
        }
        let reply = q
            .propose(MetadataCommand::CreateTopic {
                name: "orders".into(),
                replicas: vec![vec![1, 2, 3], vec![2, 3, 1], vec![3, 1, 2], vec![2, 1, 3]],
                min_insync: 2,
                unclean_leader_election: false,
                retention_ms: 60_000,
                retention_bytes: 1 << 30,
            })
            .await
            .unwrap();
        assert!(matches!(reply, MetadataReply::TopicCreated { .. }));

        // Heartbeats for 1..=3, each through a different voter; 2's stop on demand.
        let stop_two = Arc::new(AtomicBool::new(false));
        let stop_all = Arc::new(AtomicBool::new(false));
        let mut beaters = Vec::new();
        for (broker, voter) in [(1u32, 1u32), (2, 2), (3, 3)] {
            let q = cluster.quorums[&voter].clone();
            let stop_two = stop_two.clone();
            let stop_all = stop_all.clone();
            beaters.push(tokio::spawn(async move {
                while !stop_all.load(Ordering::SeqCst) {
                    if broker == 2 && stop_two.load(Ordering::SeqCst) {
                        return;
                    }
                    let _ = q.broker_heartbeat(broker, 10).await;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }));
        }
        let before = cluster.quorums[&leader].state().borrow().clone();
        assert!(
            cluster.quorums[&leader]
                .broker_heartbeat(1, 10)
                .await
                .unwrap()
                .accepted
        );
        stop_two.store(true, Ordering::SeqCst);

        cluster
            .wait_applied("broker 2 fenced", |s| s.brokers[&2].fenced)
            .await;
        let after = cluster.quorums[&follower].state().borrow().clone();
        assert!(!after.brokers[&1].fenced && !after.brokers[&3].fenced);
        let (old, new) = (&before.topics["orders"], &after.topics["orders"]);
        for (p, (old, new)) in old.partitions.iter().zip(&new.partitions).enumerate() {
            assert!(!new.isr.contains(&2), "partition {p}: {new:?}");
            if old.leader == 2 {
                assert_ne!(new.leader, 2);
                assert!(old.isr.contains(&new.leader), "partition {p}: {new:?}");
                assert_eq!(new.leader_epoch, old.leader_epoch + 1);
            } else {
                assert_eq!(
                    (new.leader, new.leader_epoch),
                    (old.leader, old.leader_epoch)
                );
            }
        }
        // Partition 1's replicas are [2, 3, 1]: 3 leads now.
        assert_eq!(new.partitions[1].leader, 3);

        // A fenced incarnation's heartbeat is refused: register again.
        let reply = q.broker_heartbeat(2, 10).await.unwrap();
        assert_eq!(
            reply,
            HeartbeatReply {
                accepted: false,
                leader_id: cluster.leader().await
            }
        );
        // AlterIsr with the old epoch is refused.
        let old1 = &old.partitions[1];
        let reply = q
            .propose(MetadataCommand::AlterIsr {
                topic: "orders".into(),
                partition: 1,
                leader: old1.leader,
                leader_epoch: old1.leader_epoch,
                isr: vec![2],
            })
            .await
            .unwrap();
        assert!(
            matches!(
                reply,
                MetadataReply::Refused(Refusal::FencedLeaderEpoch { .. })
            ),
            "{reply:?}"
        );
        // Re-register 2 with a new incarnation: accepted again.
        assert_eq!(
            q.propose(register(2, 11)).await.unwrap(),
            MetadataReply::Done
        );
        assert!(q.broker_heartbeat(2, 11).await.unwrap().accepted);
        stop_all.store(true, Ordering::SeqCst);
        for beater in beaters {
            beater.await.unwrap();
        }
        cluster.shutdown().await;
    });
}

#[test]
fn pre_vote_an_isolated_voter_healed_does_not_raise_the_term() {
    run(async {
        let cluster = Cluster::start(QuorumTuning::default()).await;
        let leader = cluster.leader().await;
        cluster.quorums[&leader]
            .propose(register(1, 1))
            .await
            .unwrap();
        let term = cluster.quorums[&leader].status().term;
        let cut = cluster.follower_of(leader);
        let fault = cluster.quorums[&cut].network_fault();
        fault.isolate();
        // Several election timeouts (max 800 ms) cut off.
        tokio::time::sleep(Duration::from_millis(4_000)).await;
        fault.heal();
        // It rejoins: a proposal after healing reaches it.
        cluster.quorums[&leader]
            .propose(register(2, 1))
            .await
            .unwrap();
        cluster
            .wait_applied("broker 2 everywhere, the healed voter too", |s| {
                s.brokers.contains_key(&2)
            })
            .await;
        assert_eq!(cluster.leader().await, leader);
        assert_eq!(cluster.quorums[&leader].status().term, term);
        assert_eq!(cluster.quorums[&cut].status().term, term);
        cluster.shutdown().await;
    });
}

#[test]
fn whole_cluster_restarts_from_its_directories_a_torn_log_tail_cut() {
    run(async {
        let mut cluster = Cluster::start(QuorumTuning::default()).await;
        let leader = cluster.leader().await;
        for id in 1..=5 {
            cluster.quorums[&leader]
                .propose(register(id, 1))
                .await
                .unwrap();
        }
        cluster
            .wait_applied("5 brokers", |s| s.brokers.len() == 5)
            .await;
        for id in 1..=3 {
            cluster.stop_voter(id).await;
        }
        // A record torn by a crash mid-write: a header promising more than is there.
        let log = cluster.dirs[&2].path().join("log");
        let mut bytes = std::fs::read(&log).unwrap();
        bytes.extend_from_slice(&[200, 0, 0, 0, 1, 2, 3, 4, b'{']);
        std::fs::write(&log, bytes).unwrap();
        for id in 1..=3 {
            cluster.start_voter(id).await;
        }
        let leader = cluster.leader().await;
        cluster.quorums[&leader]
            .propose(register(6, 1))
            .await
            .unwrap();
        cluster
            .wait_applied("6 brokers after the restart", |s| s.brokers.len() == 6)
            .await;
        cluster.shutdown().await;
    });
}

#[test]
fn malformed_and_oversized_frames_close_the_connection_only() {
    use std::io::{Read, Write};
    run(async {
        let cluster = Cluster::start(QuorumTuning::default()).await;
        let leader = cluster.leader().await;
        let addr = cluster.voters[&leader];
        let frames: [Vec<u8>; 2] = [
            // Oversized: a length past FRAME_BYTES_MAX.
            ((precursor_metadata::FRAME_BYTES_MAX as u32) + 1)
                .to_be_bytes()
                .to_vec(),
            // Malformed: a frame whose body is not a request.
            [&5u32.to_be_bytes()[..], b"hello"].concat(),
        ];
        for frame in frames {
            let read = tokio::task::spawn_blocking(move || {
                let mut stream = std::net::TcpStream::connect(addr).unwrap();
                stream
                    .set_read_timeout(Some(Duration::from_millis(WAIT_MS)))
                    .unwrap();
                stream.write_all(&frame).unwrap();
                let mut buffer = [0u8; 16];
                stream.read(&mut buffer)
            })
            .await
            .unwrap();
            // Closed by the voter: end of stream (or a reset), never an answer.
            assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
        }
        cluster.quorums[&leader]
            .propose(register(1, 1))
            .await
            .unwrap();
        cluster
            .wait_applied("the quorum still works", |s| s.brokers.contains_key(&1))
            .await;
        cluster.shutdown().await;
    });
}

#[test]
fn a_single_voter_elects_itself() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let config = QuorumConfig {
            node_id: 4,
            voters: [(4, free_port())].into_iter().collect(),
            dir: dir.path().to_path_buf(),
            timings: timings(),
        };
        let quorum = Quorum::start(config.clone()).await.unwrap();
        assert_eq!(
            quorum.propose(register(4, 1)).await.unwrap(),
            MetadataReply::Done
        );
        let reply = quorum
            .propose(MetadataCommand::AllocateProducerIds {
                broker: 4,
                count: 0,
            })
            .await
            .unwrap();
        assert_eq!(reply, MetadataReply::Refused(Refusal::CountInvalid));
        quorum.shutdown().await;
        // Restarted from its directory: not initialized again, the state is back.
        let quorum = Quorum::start(config).await.unwrap();
        wait_for("broker 4 recovered", || {
            quorum.state().borrow().brokers.contains_key(&4)
        })
        .await;
        assert_eq!(
            quorum.propose(register(5, 1)).await.unwrap(),
            MetadataReply::Done
        );
        quorum.shutdown().await;
    });
}

#[test]
fn config_without_this_voter_is_refused() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let config = QuorumConfig {
            node_id: 9,
            voters: [(1, free_port())].into_iter().collect(),
            dir: dir.path().to_path_buf(),
            timings: timings(),
        };
        assert!(matches!(
            Quorum::start(config).await,
            Err(precursor_metadata::QuorumError::Config(_))
        ));
    });
}
