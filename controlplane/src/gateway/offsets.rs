//! Committed offsets of consumer groups: in memory for OffsetFetch, in a log file for
//! restarts. An OffsetCommit is answered only after its records are fdatasync'd.
//!
//! ```text
//!  <state_dir>/offsets.log: records back to back, the last one of a key wins
//!
//!  record   0        4        8
//!           +--------+--------+------------------------------------------------+
//!           | length | crc32c | body (length bytes)                            |
//!           | u32 BE | u32 BE | over the body                                  |
//!           +--------+--------+------------------------------------------------+
//!  body     kind u8 (1 commit, 2 delete) | partition i32 | offset i64 |
//!           leader_epoch i32 | commit_ms i64 | group_len u16 | group |
//!           topic_len u16 | topic | metadata_len i32 (-1: null) | metadata
//!           (big-endian, as Kafka's own formats)
//! ```
//!
//! One writer thread (`precursor-offsets`) appends: it takes every commit queued while
//! it was busy, writes them with one `write`, one `fdatasync`, then answers them all
//! (group commit). At open the file is read whole; a torn or corrupt tail (a crash in the
//! middle of a write) is cut off at the first bad record: a commit that was answered was
//! synced whole before its answer, so it is never cut. The file is rewritten with only
//! the live records (temporary file, fsync, rename, fsync of the directory) when it grows
//! beyond [`COMPACT_RATIO`] times their size plus [`COMPACT_SLACK_BYTES`].
//!
//! Why a file and not an internal topic: the store must work while the data plane is
//! down or restarting (OffsetFetch after a broker restart comes first), and the file gives
//! the same guarantee (fdatasync before the answer) with no dependency on the data path.
//! docs/kafka.md says more.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Mutex};
use tokio::sync::oneshot;

const FILE_NAME: &str = "offsets.log";
/// Record framing: length and CRC, in bytes.
const RECORD_HEADER_BYTES: usize = 8;
/// Body bytes before the group name.
const BODY_FIXED_BYTES: usize = 1 + 4 + 8 + 4 + 8;
/// Largest record body read back, in bytes (a group, a topic, 1 MiB of metadata).
pub const RECORD_BODY_BYTES_MAX: usize = 2 << 20;
/// Compact when the file is larger than this many times the live records ...
pub const COMPACT_RATIO: u64 = 4;
/// ... plus this many bytes.
pub const COMPACT_SLACK_BYTES: u64 = 4 << 20;
/// Commits written by one `write` + `fdatasync`, at most.
const COMMITS_PER_SYNC_MAX: usize = 4096;
const KIND_COMMIT: u8 = 1;
const KIND_DELETE: u8 = 2;

/// Group, topic, partition.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OffsetKey {
    pub group: String,
    pub topic: String,
    pub partition: i32,
}

/// What a group committed for one partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommittedOffset {
    pub offset: i64,
    /// -1 when the client sent none.
    pub leader_epoch: i32,
    pub metadata: Option<String>,
    pub commit_ms: i64,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum OffsetStoreError {
    #[error("offsets file {path}: {message}")]
    Io { path: String, message: String },
    #[error("the offsets file failed earlier and takes no more commits until a restart: {0}")]
    Failed(String),
    #[error("the offsets writer stopped")]
    Stopped,
}

type Committed = BTreeMap<String, BTreeMap<(String, i32), CommittedOffset>>;

/// The store: the committed offsets in memory and the handle of the writer thread.
pub struct OffsetStore {
    committed: Mutex<Committed>,
    writer: Mutex<mpsc::Sender<WriteJob>>,
    path: PathBuf,
}

struct WriteJob {
    /// Encoded records to append.
    bytes: Vec<u8>,
    /// The keys they set (Some: the record) or delete (None).
    live: Vec<(OffsetKey, Option<Vec<u8>>)>,
    done: oneshot::Sender<Result<(), OffsetStoreError>>,
}

fn io_error(path: &Path, error: impl std::fmt::Display) -> OffsetStoreError {
    OffsetStoreError::Io {
        path: path.display().to_string(),
        message: error.to_string(),
    }
}

impl OffsetStore {
    /// Opens (creating) `<state_dir>/offsets.log`, recovers it, and starts the writer.
    pub fn open(state_dir: &Path) -> Result<OffsetStore, OffsetStoreError> {
        let path = state_dir.join(FILE_NAME);
        let mut bytes = Vec::new();
        match File::open(&path) {
            Ok(mut file) => {
                file.read_to_end(&mut bytes)
                    .map_err(|e| io_error(&path, e))?;
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(io_error(&path, error)),
        }
        let (live, good_bytes, problem) = replay(&bytes);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| io_error(&path, e))?;
        if let Some(problem) = problem {
            eprintln!(
                "precursor-controlplane: kafka gateway: {}: cutting {} bytes at position \
                 {good_bytes} (torn or corrupt tail: {problem})",
                path.display(),
                bytes.len() - good_bytes
            );
            file.set_len(good_bytes as u64)
                .and_then(|()| file.sync_all())
                .map_err(|e| io_error(&path, e))?;
        }
        let mut committed = Committed::new();
        for (key, record) in &live {
            if let Some((_, value)) = decode_body(&record[RECORD_HEADER_BYTES..])
                .ok()
                .and_then(|(kind, k, v)| (kind == KIND_COMMIT).then_some((k, v)))
            {
                committed
                    .entry(key.group.clone())
                    .or_default()
                    .insert((key.topic.clone(), key.partition), value);
            }
        }
        let mut writer = Writer {
            path: path.clone(),
            file,
            file_bytes: good_bytes as u64,
            live,
            failed: None,
        };
        writer.compact_if_large();
        let (sender, receiver) = mpsc::channel();
        std::thread::Builder::new()
            .name("precursor-offsets".into())
            .spawn(move || writer.run(receiver))
            .map_err(|e| io_error(&path, e))?;
        Ok(OffsetStore {
            committed: Mutex::new(committed),
            writer: Mutex::new(sender),
            path,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records `entries` (visible to `get` at once) and resolves once they are durable.
    pub fn commit(
        &self,
        entries: Vec<(OffsetKey, CommittedOffset)>,
    ) -> impl std::future::Future<Output = Result<(), OffsetStoreError>> + Send + 'static {
        let mut bytes = Vec::new();
        let mut live = Vec::with_capacity(entries.len());
        {
            let mut committed = self.committed.lock().expect("offsets lock");
            for (key, value) in entries {
                let start = bytes.len();
                encode_record(&mut bytes, KIND_COMMIT, &key, &value);
                live.push((key.clone(), Some(bytes[start..].to_vec())));
                committed
                    .entry(key.group)
                    .or_default()
                    .insert((key.topic, key.partition), value);
            }
        }
        self.send(bytes, live)
    }

    /// Forgets every committed offset of `topic` (the topic was deleted), durably.
    pub fn delete_topic(
        &self,
        topic: &str,
    ) -> impl std::future::Future<Output = Result<(), OffsetStoreError>> + Send + 'static {
        let (bytes, live) = self.take_where(|_, t, _| t == topic);
        self.send(bytes, live)
    }

    /// Forgets committed offsets of `group` (DeleteGroups, OffsetDelete), durably:
    /// `partitions` None is every offset of the group.
    pub fn delete_group_offsets(
        &self,
        group: &str,
        partitions: Option<&[(String, i32)]>,
    ) -> impl std::future::Future<Output = Result<(), OffsetStoreError>> + Send + 'static {
        let (bytes, live) = self.take_where(|g, topic, partition| {
            g == group
                && partitions
                    .is_none_or(|wanted| wanted.iter().any(|(t, p)| t == topic && *p == partition))
        });
        self.send(bytes, live)
    }

    /// Forgets (in memory) every committed offset whose (group, topic, partition) `doomed`
    /// picks, and returns the delete records to write, one each.
    #[allow(clippy::type_complexity)]
    fn take_where(
        &self,
        mut doomed: impl FnMut(&str, &str, i32) -> bool,
    ) -> (Vec<u8>, Vec<(OffsetKey, Option<Vec<u8>>)>) {
        let mut bytes = Vec::new();
        let mut live = Vec::new();
        {
            let mut committed = self.committed.lock().expect("offsets lock");
            for (group, offsets) in committed.iter_mut() {
                offsets.retain(|(topic, partition), value| {
                    if !doomed(group, topic, *partition) {
                        return true;
                    }
                    let key = OffsetKey {
                        group: group.clone(),
                        topic: topic.clone(),
                        partition: *partition,
                    };
                    encode_record(&mut bytes, KIND_DELETE, &key, value);
                    live.push((key, None));
                    false
                });
            }
            committed.retain(|_, offsets| !offsets.is_empty());
        }
        (bytes, live)
    }

    fn send(
        &self,
        bytes: Vec<u8>,
        live: Vec<(OffsetKey, Option<Vec<u8>>)>,
    ) -> impl std::future::Future<Output = Result<(), OffsetStoreError>> + Send + 'static {
        let (done, answer) = oneshot::channel();
        let sent = if live.is_empty() {
            let _ = done.send(Ok(()));
            Ok(())
        } else {
            self.writer
                .lock()
                .expect("offsets writer lock")
                .send(WriteJob { bytes, live, done })
                .map_err(|_| OffsetStoreError::Stopped)
        };
        async move {
            sent?;
            answer.await.map_err(|_| OffsetStoreError::Stopped)?
        }
    }

    /// The committed offset of one partition.
    pub fn get(&self, group: &str, topic: &str, partition: i32) -> Option<CommittedOffset> {
        let committed = self.committed.lock().expect("offsets lock");
        committed
            .get(group)
            .and_then(|offsets| offsets.get(&(topic.to_string(), partition)))
            .cloned()
    }

    /// Every committed offset of `group`, by topic and partition.
    pub fn group(&self, group: &str) -> Vec<(String, i32, CommittedOffset)> {
        let committed = self.committed.lock().expect("offsets lock");
        committed
            .get(group)
            .map(|offsets| {
                offsets
                    .iter()
                    .map(|((t, p), v)| (t.clone(), *p, v.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Groups with at least one committed offset.
    pub fn groups(&self) -> Vec<String> {
        let committed = self.committed.lock().expect("offsets lock");
        committed.keys().cloned().collect()
    }
}

/// Appends one record (header + body) to `out`.
fn encode_record(out: &mut Vec<u8>, kind: u8, key: &OffsetKey, value: &CommittedOffset) {
    let start = out.len();
    out.extend_from_slice(&[0; RECORD_HEADER_BYTES]);
    out.push(kind);
    out.extend_from_slice(&key.partition.to_be_bytes());
    out.extend_from_slice(&value.offset.to_be_bytes());
    out.extend_from_slice(&value.leader_epoch.to_be_bytes());
    out.extend_from_slice(&value.commit_ms.to_be_bytes());
    for text in [&key.group, &key.topic] {
        let bytes = &text.as_bytes()[..text.len().min(u16::MAX as usize)];
        out.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
        out.extend_from_slice(bytes);
    }
    match &value.metadata {
        None => out.extend_from_slice(&(-1i32).to_be_bytes()),
        Some(metadata) => {
            out.extend_from_slice(&(metadata.len() as i32).to_be_bytes());
            out.extend_from_slice(metadata.as_bytes());
        }
    }
    let body = &out[start + RECORD_HEADER_BYTES..];
    let length = body.len() as u32;
    let crc = crc32c::crc32c(body);
    out[start..start + 4].copy_from_slice(&length.to_be_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_be_bytes());
}

/// Reads a record body: kind, key, value.
fn decode_body(body: &[u8]) -> Result<(u8, OffsetKey, CommittedOffset), &'static str> {
    if body.len() < BODY_FIXED_BYTES + 4 {
        return Err("record body too short");
    }
    let kind = body[0];
    if kind != KIND_COMMIT && kind != KIND_DELETE {
        return Err("unknown record kind");
    }
    let i32_at = |at: usize| i32::from_be_bytes(body[at..at + 4].try_into().expect("4 bytes"));
    let i64_at = |at: usize| i64::from_be_bytes(body[at..at + 8].try_into().expect("8 bytes"));
    let partition = i32_at(1);
    let offset = i64_at(5);
    let leader_epoch = i32_at(13);
    let commit_ms = i64_at(17);
    let mut at = BODY_FIXED_BYTES;
    let text = |at: &mut usize| -> Result<String, &'static str> {
        let length_end = *at + 2;
        let length = u16::from_be_bytes(
            body.get(*at..length_end)
                .ok_or("truncated name")?
                .try_into()
                .expect("2 bytes"),
        ) as usize;
        let bytes = body
            .get(length_end..length_end + length)
            .ok_or("truncated name")?;
        *at = length_end + length;
        String::from_utf8(bytes.to_vec()).map_err(|_| "name is not UTF-8")
    };
    let group = text(&mut at)?;
    let topic = text(&mut at)?;
    let metadata_length = body
        .get(at..at + 4)
        .map(|b| i32::from_be_bytes(b.try_into().expect("4 bytes")))
        .ok_or("truncated metadata")?;
    at += 4;
    let metadata = if metadata_length < 0 {
        None
    } else {
        let bytes = body
            .get(at..at + metadata_length as usize)
            .ok_or("truncated metadata")?;
        at += metadata_length as usize;
        Some(String::from_utf8(bytes.to_vec()).map_err(|_| "metadata is not UTF-8")?)
    };
    if at != body.len() {
        return Err("bytes after the record body");
    }
    Ok((
        kind,
        OffsetKey {
            group,
            topic,
            partition,
        },
        CommittedOffset {
            offset,
            leader_epoch,
            metadata,
            commit_ms,
        },
    ))
}

/// Replays a file: the live records by key, the bytes up to the last good record, and
/// why the rest (if any) was refused.
fn replay(bytes: &[u8]) -> (HashMap<OffsetKey, Vec<u8>>, usize, Option<&'static str>) {
    let mut live = HashMap::new();
    let mut at = 0;
    while at < bytes.len() {
        let Some(header) = bytes.get(at..at + RECORD_HEADER_BYTES) else {
            return (live, at, Some("truncated record header"));
        };
        let length = u32::from_be_bytes(header[..4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_be_bytes(header[4..].try_into().expect("4 bytes"));
        if length > RECORD_BODY_BYTES_MAX {
            return (live, at, Some("record length out of range"));
        }
        let end = at + RECORD_HEADER_BYTES + length;
        let Some(body) = bytes.get(at + RECORD_HEADER_BYTES..end) else {
            return (live, at, Some("truncated record"));
        };
        if crc32c::crc32c(body) != crc {
            return (live, at, Some("CRC mismatch"));
        }
        match decode_body(body) {
            Ok((KIND_COMMIT, key, _)) => {
                live.insert(key, bytes[at..end].to_vec());
            }
            Ok((_, key, _)) => {
                live.remove(&key);
            }
            Err(reason) => return (live, at, Some(reason)),
        }
        at = end;
    }
    (live, at, None)
}

struct Writer {
    path: PathBuf,
    file: File,
    file_bytes: u64,
    /// The current record of every live key (what a compaction writes).
    live: HashMap<OffsetKey, Vec<u8>>,
    failed: Option<String>,
}

impl Writer {
    fn run(mut self, jobs: mpsc::Receiver<WriteJob>) {
        let mut batch: Vec<WriteJob> = Vec::new();
        let mut bytes = Vec::new();
        while let Ok(job) = jobs.recv() {
            batch.push(job);
            while batch.len() < COMMITS_PER_SYNC_MAX {
                match jobs.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            bytes.clear();
            for job in &batch {
                bytes.extend_from_slice(&job.bytes);
            }
            let outcome = self.append(&bytes);
            for job in batch.drain(..) {
                if outcome.is_ok() {
                    for (key, record) in job.live {
                        match record {
                            Some(record) => {
                                self.live.insert(key, record);
                            }
                            None => {
                                self.live.remove(&key);
                            }
                        }
                    }
                }
                let _ = job.done.send(outcome.clone());
            }
            if outcome.is_ok() {
                self.compact_if_large();
            }
        }
    }

    fn append(&mut self, bytes: &[u8]) -> Result<(), OffsetStoreError> {
        if let Some(why) = &self.failed {
            return Err(OffsetStoreError::Failed(why.clone()));
        }
        let written = self
            .file
            .write_all(bytes)
            .and_then(|()| self.file.sync_data());
        match written {
            Ok(()) => {
                self.file_bytes += bytes.len() as u64;
                Ok(())
            }
            Err(error) => {
                let why = format!("{}: {error}", self.path.display());
                eprintln!(
                    "precursor-controlplane: kafka gateway: writing committed offsets failed: \
                     {why}; OffsetCommit is refused until a restart"
                );
                self.failed = Some(why.clone());
                Err(OffsetStoreError::Io {
                    path: self.path.display().to_string(),
                    message: error.to_string(),
                })
            }
        }
    }

    fn compact_if_large(&mut self) {
        let live_bytes: u64 = self.live.values().map(|r| r.len() as u64).sum();
        if self.file_bytes <= COMPACT_RATIO * live_bytes + COMPACT_SLACK_BYTES {
            return;
        }
        let mut bytes = Vec::with_capacity(live_bytes as usize);
        for record in self.live.values() {
            bytes.extend_from_slice(record);
        }
        let compacted = super::write_durably(&self.path, &bytes)
            .and_then(|()| OpenOptions::new().append(true).open(&self.path));
        match compacted {
            Ok(file) => {
                self.file = file;
                self.file_bytes = bytes.len() as u64;
            }
            Err(error) => {
                // The old file is still whole (the rename is atomic): keep appending to it.
                eprintln!(
                    "precursor-controlplane: kafka gateway: compacting {} failed: {error}",
                    self.path.display()
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(group: &str, topic: &str, partition: i32) -> OffsetKey {
        OffsetKey {
            group: group.into(),
            topic: topic.into(),
            partition,
        }
    }

    fn value(offset: i64, metadata: Option<&str>) -> CommittedOffset {
        CommittedOffset {
            offset,
            leader_epoch: -1,
            metadata: metadata.map(str::to_string),
            commit_ms: 1_700_000_000_000,
        }
    }

    fn block_on<F: std::future::Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(future)
    }

    #[test]
    fn commits_survive_a_reopen_and_the_last_one_wins() {
        let dir = tempfile::tempdir().unwrap();
        let store = OffsetStore::open(dir.path()).unwrap();
        block_on(store.commit(vec![
            (key("g", "orders", 0), value(5, Some("m"))),
            (key("g", "orders", 1), value(7, None)),
        ]))
        .unwrap();
        block_on(store.commit(vec![(key("g", "orders", 0), value(9, Some("")))])).unwrap();
        block_on(store.commit(vec![(key("h", "other", 3), value(1, None))])).unwrap();
        assert_eq!(store.get("g", "orders", 0).unwrap().offset, 9);
        drop(store);
        let again = OffsetStore::open(dir.path()).unwrap();
        assert_eq!(again.get("g", "orders", 0), Some(value(9, Some(""))));
        assert_eq!(again.get("g", "orders", 1), Some(value(7, None)));
        assert_eq!(again.groups(), vec!["g".to_string(), "h".to_string()]);
        block_on(again.delete_topic("orders")).unwrap();
        assert!(again.get("g", "orders", 0).is_none());
        drop(again);
        let third = OffsetStore::open(dir.path()).unwrap();
        assert!(third.get("g", "orders", 1).is_none());
        assert_eq!(third.group("h").len(), 1);
        assert_eq!(third.groups(), vec!["h".to_string()]);
    }

    #[test]
    fn a_groups_offsets_are_deleted_by_partition_or_whole_and_stay_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let store = OffsetStore::open(dir.path()).unwrap();
        block_on(store.commit(vec![
            (key("g", "a", 0), value(1, None)),
            (key("g", "a", 1), value(2, None)),
            (key("g", "b", 0), value(3, None)),
            (key("h", "a", 0), value(4, None)),
        ]))
        .unwrap();
        let some = [("a".to_string(), 1), ("nope".to_string(), 0)];
        block_on(store.delete_group_offsets("g", Some(&some))).unwrap();
        assert!(store.get("g", "a", 1).is_none());
        assert_eq!(store.group("g").len(), 2);
        drop(store);
        let store = OffsetStore::open(dir.path()).unwrap();
        assert!(store.get("g", "a", 1).is_none(), "the delete is durable");
        block_on(store.delete_group_offsets("g", None)).unwrap();
        assert_eq!(store.groups(), vec!["h".to_string()]);
        drop(store);
        let store = OffsetStore::open(dir.path()).unwrap();
        assert_eq!(store.groups(), vec!["h".to_string()]);
        assert_eq!(store.get("h", "a", 0).unwrap().offset, 4);
    }

    #[test]
    fn a_torn_or_corrupt_tail_is_cut_and_what_came_before_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = OffsetStore::open(dir.path()).unwrap();
        block_on(store.commit(vec![(key("g", "t", 0), value(1, None))])).unwrap();
        block_on(store.commit(vec![(key("g", "t", 0), value(2, None))])).unwrap();
        let path = store.path().to_path_buf();
        drop(store);
        let whole = std::fs::read(&path).unwrap();
        let record_bytes = whole.len() / 2;
        // Torn: half of a third record.
        let mut torn = whole.clone();
        torn.extend_from_slice(&whole[..record_bytes / 2]);
        std::fs::write(&path, &torn).unwrap();
        let store = OffsetStore::open(dir.path()).unwrap();
        assert_eq!(store.get("g", "t", 0).unwrap().offset, 2);
        drop(store);
        assert_eq!(std::fs::read(&path).unwrap().len(), whole.len(), "tail cut");
        // Corrupt: a flipped byte in the second record's body.
        let mut corrupt = whole.clone();
        corrupt[record_bytes + RECORD_HEADER_BYTES + 6] ^= 0xff;
        std::fs::write(&path, &corrupt).unwrap();
        let store = OffsetStore::open(dir.path()).unwrap();
        assert_eq!(
            store.get("g", "t", 0).unwrap().offset,
            1,
            "first record kept"
        );
        block_on(store.commit(vec![(key("g", "t", 0), value(3, None))])).unwrap();
        drop(store);
        let store = OffsetStore::open(dir.path()).unwrap();
        assert_eq!(store.get("g", "t", 0).unwrap().offset, 3);
    }

    #[test]
    fn the_file_is_compacted_when_it_grows() {
        let dir = tempfile::tempdir().unwrap();
        let store = OffsetStore::open(dir.path()).unwrap();
        let metadata = "x".repeat(4000);
        // Rewrite one key until the file passes the slack: it must shrink back.
        let rounds = (COMPACT_SLACK_BYTES / 4000) as i64 + 10;
        for offset in 0..rounds {
            block_on(store.commit(vec![(key("g", "t", 0), value(offset, Some(&metadata)))]))
                .unwrap();
        }
        let size = std::fs::metadata(store.path()).unwrap().len();
        assert!(size < COMPACT_SLACK_BYTES, "compacted to {size} bytes");
        drop(store);
        let store = OffsetStore::open(dir.path()).unwrap();
        assert_eq!(store.get("g", "t", 0).unwrap().offset, rounds - 1);
    }

    #[test]
    fn records_round_trip_and_bad_bodies_are_refused() {
        let mut out = Vec::new();
        let k = key("grp", "topic.a", 42);
        let v = value(i64::MAX, Some("ünïcode"));
        encode_record(&mut out, KIND_COMMIT, &k, &v);
        let (kind, k2, v2) = decode_body(&out[RECORD_HEADER_BYTES..]).unwrap();
        assert_eq!((kind, k2, v2), (KIND_COMMIT, k, v));
        assert!(decode_body(&out[RECORD_HEADER_BYTES..out.len() - 1]).is_err());
        let mut bad_kind = out[RECORD_HEADER_BYTES..].to_vec();
        bad_kind[0] = 9;
        assert_eq!(decode_body(&bad_kind).unwrap_err(), "unknown record kind");
        let (live, good, problem) = replay(&out[..out.len() - 3]);
        assert!(live.is_empty() && good == 0 && problem == Some("truncated record"));
    }
}
