//! Durable Raft storage under one directory: the log, the vote, the state machine's
//! snapshots.
//!
//! ```text
//! dir/
//!   log            records: [u32 LE payload bytes][u32 LE FNV-1a of payload][JSON entry]
//!   vote.json      the vote, replaced whole (tmp + fsync + rename + fsync dir)
//!   purged.json    the last purged log id, replaced whole the same way
//!   snapshot.json  the last snapshot: its log id, membership and state, the same way
//! ```
//!
//! Durability: openraft leaves it to the storage. `append` writes, `sync_data`s, and only
//! then reports the entries flushed; a vote is synced before `save_vote` returns. A torn
//! tail record (short, bad checksum, bad JSON) is cut off at start-up: it was never
//! reported flushed. The state machine itself is in memory: a restart loads the snapshot
//! and openraft re-applies the committed log after it.
//!
//! File IO is synchronous inside the async methods: metadata writes are small and rare,
//! and an fdatasync of a few records blocks one runtime worker for about a disk flush.

use crate::command::MetadataReply;
use crate::state::MetadataState;
use crate::TypeConfig;
use futures_util::StreamExt;
use openraft::alias::{EntryOf, LogIdOf, SnapshotMetaOf, SnapshotOf, StoredMembershipOf, VoteOf};
use openraft::storage::{EntryResponder, IOFlushed, RaftLogStorage, RaftStateMachine};
use openraft::{EntryPayload, LogState, OptionalSend, RaftLogReader, RaftSnapshotBuilder};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// One log record's payload, at most, in bytes (a record claiming more is a torn tail).
pub const LOG_RECORD_BYTES_MAX: usize = 16 * 1024 * 1024;
/// A record's header: payload length and checksum, in bytes.
const LOG_RECORD_HEADER_BYTES: usize = 8;

const LOG_FILE: &str = "log";
const VOTE_FILE: &str = "vote.json";
const PURGED_FILE: &str = "purged.json";
const SNAPSHOT_FILE: &str = "snapshot.json";

/// FNV-1a 32 of a record's payload: catches torn and zeroed tails.
fn checksum(bytes: &[u8]) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in bytes {
        hash ^= u32::from(*byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash
}

/// Writes `value` as `dir/name` so that a crash leaves the old or the new file whole.
fn write_file_atomic<T: Serialize>(dir: &Path, name: &str, value: &T) -> io::Result<()> {
    let bytes = serde_json::to_vec(value).map_err(io::Error::other)?;
    let tmp = dir.join(format!("{name}.tmp"));
    {
        let mut file = File::create(&tmp)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
    }
    fs::rename(&tmp, dir.join(name))?;
    File::open(dir)?.sync_all()
}

fn read_file<T: DeserializeOwned>(dir: &Path, name: &str) -> io::Result<Option<T>> {
    match fs::read(dir.join(name)) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{name}: {e}"))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

struct LogInner {
    dir: PathBuf,
    file: File,
    /// Index -> (entry, offset of its record in `log`).
    entries: BTreeMap<u64, (EntryOf<TypeConfig>, u64)>,
    /// Bytes of `log` that hold whole records.
    end_offset: u64,
    purged: Option<LogIdOf<TypeConfig>>,
    vote: Option<VoteOf<TypeConfig>>,
}

impl LogInner {
    fn encode(entry: &EntryOf<TypeConfig>) -> io::Result<Vec<u8>> {
        let payload = serde_json::to_vec(entry).map_err(io::Error::other)?;
        if payload.len() > LOG_RECORD_BYTES_MAX {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "log entry larger than LOG_RECORD_BYTES_MAX",
            ));
        }
        let mut record = Vec::with_capacity(LOG_RECORD_HEADER_BYTES + payload.len());
        record.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        record.extend_from_slice(&checksum(&payload).to_le_bytes());
        record.extend_from_slice(&payload);
        Ok(record)
    }

    /// Rewrites `log` with the entries in memory (after a purge), atomically.
    fn rewrite(&mut self) -> io::Result<()> {
        let tmp = self.dir.join(format!("{LOG_FILE}.tmp"));
        let mut offset = 0u64;
        {
            let mut file = File::create(&tmp)?;
            for (entry, entry_offset) in self.entries.values_mut() {
                let record = Self::encode(entry)?;
                file.write_all(&record)?;
                *entry_offset = offset;
                offset += record.len() as u64;
            }
            file.sync_all()?;
        }
        fs::rename(&tmp, self.dir.join(LOG_FILE))?;
        File::open(&self.dir)?.sync_all()?;
        self.file = OpenOptions::new()
            .append(true)
            .open(self.dir.join(LOG_FILE))?;
        self.end_offset = offset;
        Ok(())
    }
}

/// The Raft log and vote, on disk. Cloned handles share one log.
#[derive(Clone)]
pub struct LogStore {
    inner: Arc<Mutex<LogInner>>,
}

impl LogStore {
    /// Opens (or creates) the log under `dir`, cutting off a torn tail.
    pub fn open(dir: &Path) -> io::Result<LogStore> {
        fs::create_dir_all(dir)?;
        let vote: Option<VoteOf<TypeConfig>> = read_file(dir, VOTE_FILE)?;
        let purged: Option<LogIdOf<TypeConfig>> = read_file(dir, PURGED_FILE)?;
        let path = dir.join(LOG_FILE);
        let mut bytes = Vec::new();
        match File::open(&path) {
            Ok(mut file) => {
                file.read_to_end(&mut bytes)?;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let mut entries = BTreeMap::new();
        let mut offset = 0usize;
        let mut stale = false;
        let purged_index = purged.as_ref().map(|id| id.index);
        while let Some(header) = bytes.get(offset..offset + LOG_RECORD_HEADER_BYTES) {
            let length = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes")) as usize;
            let sum = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
            if length > LOG_RECORD_BYTES_MAX {
                break;
            }
            let start = offset + LOG_RECORD_HEADER_BYTES;
            let Some(payload) = bytes.get(start..start + length) else {
                break;
            };
            if checksum(payload) != sum {
                break;
            }
            let Ok(entry) = serde_json::from_slice::<EntryOf<TypeConfig>>(payload) else {
                break;
            };
            let index = entry.log_id.index;
            if let Some((last, _)) = entries.last_key_value() {
                if index != last + 1 {
                    tracing::error!(index, last, "metadata log: records out of order, cut");
                    break;
                }
            }
            if purged_index.is_some_and(|p| index <= p) {
                // Written before a purge that the rewrite did not finish.
                stale = true;
            } else {
                entries.insert(index, (entry, offset as u64));
            }
            offset = start + length;
        }
        if offset < bytes.len() {
            tracing::warn!(
                valid = offset,
                bytes = bytes.len(),
                "metadata log: torn tail cut off"
            );
        }
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        file.set_len(offset as u64)?;
        file.sync_all()?;
        let mut inner = LogInner {
            dir: dir.to_path_buf(),
            file,
            entries,
            end_offset: offset as u64,
            purged,
            vote,
        };
        if stale {
            inner.rewrite()?;
        }
        Ok(LogStore {
            inner: Arc::new(Mutex::new(inner)),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LogInner> {
        // A panic while holding the lock poisons it; the data is still whole (every write
        // is committed to memory only after its IO succeeded), so go on.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<EntryOf<TypeConfig>>, io::Error> {
        let inner = self.lock();
        Ok(inner
            .entries
            .range(range)
            .map(|(_, (entry, _))| entry.clone())
            .collect())
    }

    async fn read_vote(&mut self) -> Result<Option<VoteOf<TypeConfig>>, io::Error> {
        Ok(self.lock().vote)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let inner = self.lock();
        let last = inner
            .entries
            .last_key_value()
            .map(|(_, (entry, _))| entry.log_id)
            .or(inner.purged);
        Ok(LogState {
            last_purged_log_id: inner.purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &VoteOf<TypeConfig>) -> Result<(), io::Error> {
        let mut inner = self.lock();
        write_file_atomic(&inner.dir, VOTE_FILE, vote)?;
        inner.vote = Some(*vote);
        Ok(())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<TypeConfig>,
    ) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = EntryOf<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let result = (|| {
            let mut inner = self.lock();
            let mut buffer = Vec::new();
            let mut placed = Vec::new();
            let mut offset = inner.end_offset;
            for entry in entries {
                if let Some((previous, _)) = placed.last() {
                    let previous: &EntryOf<TypeConfig> = previous;
                    assert_eq!(entry.log_id.index, previous.log_id.index + 1);
                }
                let record = LogInner::encode(&entry)?;
                placed.push((entry, offset));
                offset += record.len() as u64;
                buffer.extend_from_slice(&record);
            }
            inner.file.write_all(&buffer)?;
            // Flushed means on disk: the callback only after the data is synced.
            inner.file.sync_data()?;
            inner.end_offset = offset;
            for (entry, entry_offset) in placed {
                inner
                    .entries
                    .insert(entry.log_id.index, (entry, entry_offset));
            }
            Ok::<(), io::Error>(())
        })();
        match &result {
            Ok(()) => callback.io_completed(Ok(())),
            Err(e) => callback.io_completed(Err(io::Error::new(e.kind(), e.to_string()))),
        }
        result
    }

    async fn truncate_after(
        &mut self,
        last_log_id: Option<LogIdOf<TypeConfig>>,
    ) -> Result<(), io::Error> {
        let mut inner = self.lock();
        let first_removed = last_log_id.map_or(0, |id| id.index + 1);
        let Some((_, (_, offset))) = inner.entries.range(first_removed..).next() else {
            return Ok(());
        };
        let offset = *offset;
        inner.file.set_len(offset)?;
        inner.file.sync_data()?;
        inner.end_offset = offset;
        let _removed = inner.entries.split_off(&first_removed);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogIdOf<TypeConfig>) -> Result<(), io::Error> {
        let mut inner = self.lock();
        // The purge point first: a crash before the rewrite leaves records that start-up
        // skips.
        write_file_atomic(&inner.dir, PURGED_FILE, &log_id)?;
        inner.purged = Some(log_id);
        let kept = inner.entries.split_off(&(log_id.index + 1));
        inner.entries = kept;
        inner.rewrite()
    }
}

/// `snapshot.json`.
#[derive(Serialize, Deserialize)]
struct SnapshotFile {
    last_log_id: Option<LogIdOf<TypeConfig>>,
    last_membership: StoredMembershipOf<TypeConfig>,
    state: MetadataState,
}

/// The applied metadata, in memory, and its snapshots on disk.
pub struct StateMachineStore {
    dir: PathBuf,
    state: MetadataState,
    last_applied: Option<LogIdOf<TypeConfig>>,
    last_membership: StoredMembershipOf<TypeConfig>,
    published: watch::Sender<Arc<MetadataState>>,
}

impl StateMachineStore {
    /// Loads the last snapshot under `dir`, if any, and publishes it.
    pub fn open(
        dir: &Path,
        published: watch::Sender<Arc<MetadataState>>,
    ) -> io::Result<StateMachineStore> {
        fs::create_dir_all(dir)?;
        let snapshot: Option<SnapshotFile> = read_file(dir, SNAPSHOT_FILE)?;
        let store = match snapshot {
            Some(file) => StateMachineStore {
                dir: dir.to_path_buf(),
                state: file.state,
                last_applied: file.last_log_id,
                last_membership: file.last_membership,
                published,
            },
            None => StateMachineStore {
                dir: dir.to_path_buf(),
                state: MetadataState::default(),
                last_applied: None,
                last_membership: StoredMembershipOf::<TypeConfig>::default(),
                published,
            },
        };
        store.publish();
        Ok(store)
    }

    fn publish(&self) {
        self.published.send_replace(Arc::new(self.state.clone()));
    }
}

/// Builds one snapshot from a copy of the state taken when openraft asked.
pub struct SnapshotWriter {
    dir: PathBuf,
    state: MetadataState,
    last_applied: Option<LogIdOf<TypeConfig>>,
    last_membership: StoredMembershipOf<TypeConfig>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotWriter {
    type SnapshotData = MetadataState;

    async fn build_snapshot(&mut self) -> Result<SnapshotOf<TypeConfig, MetadataState>, io::Error> {
        let file = SnapshotFile {
            last_log_id: self.last_applied,
            last_membership: self.last_membership.clone(),
            state: self.state.clone(),
        };
        write_file_atomic(&self.dir, SNAPSHOT_FILE, &file)?;
        tracing::info!(last_log_id = ?self.last_applied, "metadata snapshot written");
        Ok(openraft::Snapshot {
            meta: SnapshotMetaOf::<TypeConfig> {
                last_log_id: file.last_log_id,
                last_membership: file.last_membership,
            },
            snapshot: file.state,
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotData = MetadataState;
    type SnapshotBuilder = SnapshotWriter;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogIdOf<TypeConfig>>, StoredMembershipOf<TypeConfig>), io::Error> {
        Ok((self.last_applied, self.last_membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: futures_util::Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>>
            + Unpin
            + OptionalSend,
    {
        while let Some(next) = entries.next().await {
            let (entry, responder) = next?;
            let reply = match &entry.payload {
                EntryPayload::Blank => MetadataReply::Done,
                EntryPayload::Normal(command) => self.state.apply(command),
                EntryPayload::Membership(membership) => {
                    self.last_membership = StoredMembershipOf::<TypeConfig>::new(
                        Some(entry.log_id),
                        membership.clone(),
                    );
                    MetadataReply::Done
                }
            };
            self.last_applied = Some(entry.log_id);
            if let Some(responder) = responder {
                responder.send(reply);
            }
        }
        self.publish();
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotWriter {
            dir: self.dir.clone(),
            state: self.state.clone(),
            last_applied: self.last_applied,
            last_membership: self.last_membership.clone(),
        }
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMetaOf<TypeConfig>,
        snapshot: MetadataState,
    ) -> Result<(), io::Error> {
        let file = SnapshotFile {
            last_log_id: meta.last_log_id,
            last_membership: meta.last_membership.clone(),
            state: snapshot,
        };
        write_file_atomic(&self.dir, SNAPSHOT_FILE, &file)?;
        self.state = file.state;
        self.last_applied = file.last_log_id;
        self.last_membership = file.last_membership;
        self.publish();
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<SnapshotOf<TypeConfig, MetadataState>>, io::Error> {
        let file: Option<SnapshotFile> = read_file(&self.dir, SNAPSHOT_FILE)?;
        Ok(file.map(|file| openraft::Snapshot {
            meta: SnapshotMetaOf::<TypeConfig> {
                last_log_id: file.last_log_id,
                last_membership: file.last_membership,
            },
            snapshot: file.state,
        }))
    }
}
