//! Topics: the persisted manifest, the lcore's table, and the admin thread that creates
//! partitions off the lcore.
//!
//! A topic has a stable 16-bit id, persisted in `<data_dir>/topics.manifest` (one line per
//! topic: `id name partitions`), so that [`PartitionHandle`]s stay valid across restarts.
//! Creating a topic makes directories and files — system calls — so the lcore never does it:
//! it queues a [`CreateTopic`] for the admin thread, answers `TopicNotReady` meanwhile (as
//! Kafka answers LEADER_NOT_AVAILABLE while auto-creating), and installs the finished
//! [`Topic`] on its next drain. Both queues are bounded and lock-free.

use crate::log::{FlusherHandle, LogConfig, PartitionLog};
use crossbeam_queue::ArrayQueue;
use precursor_protocol::frame::{is_valid_topic_name, PartitionHandle, TOPIC_NAME_BYTES_MAX};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Topics one node holds at most (ids are 16 bits; the manifest stays small).
pub const TOPICS_MAX: usize = 4096;
/// Topic creations queued between the lcore and the admin thread.
pub const CREATE_QUEUE_DEPTH: usize = 64;
const MANIFEST_FILE: &str = "topics.manifest";
const ADMIN_IDLE_SLEEP: Duration = Duration::from_millis(1);

/// A topic name held inline, so a creation request crosses threads without allocating.
#[derive(Copy, Clone)]
pub struct TopicName {
    bytes: [u8; TOPIC_NAME_BYTES_MAX],
    len: u8,
}

impl TopicName {
    pub fn new(name: &str) -> Option<TopicName> {
        if !is_valid_topic_name(name) {
            return None;
        }
        let mut bytes = [0u8; TOPIC_NAME_BYTES_MAX];
        bytes[..name.len()].copy_from_slice(name.as_bytes());
        Some(TopicName {
            bytes,
            len: name.len() as u8,
        })
    }
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.bytes[..self.len as usize]).expect("validated ASCII")
    }
}

impl std::fmt::Debug for TopicName {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

/// One line of the manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicEntry {
    pub id: u16,
    pub name: String,
    pub partitions: u16,
}

#[derive(Debug, thiserror::Error)]
pub enum TopicError {
    #[error("topic manifest {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("topic manifest {path} line {line}: {reason}")]
    Corrupt {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("topic {name:?}: {source}")]
    Log {
        name: String,
        source: crate::log::LogError,
    },
    #[error("no topic id left (at most {TOPICS_MAX} topics)")]
    TooManyTopics,
    #[error("topic {0:?} is not a valid name")]
    InvalidName(String),
}

/// The persisted list of topics.
pub struct Manifest {
    path: PathBuf,
    entries: Vec<TopicEntry>,
}

impl Manifest {
    pub fn load(data_dir: &Path) -> Result<Manifest, TopicError> {
        let path = data_dir.join(MANIFEST_FILE);
        let io = |source| TopicError::Io {
            path: path.clone(),
            source,
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(io(e)),
        };
        let mut entries = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let corrupt = |reason: &str| TopicError::Corrupt {
                path: path.clone(),
                line: i + 1,
                reason: reason.into(),
            };
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [id, name, partitions] = fields[..] else {
                return Err(corrupt("expected `id name partitions`"));
            };
            let entry = TopicEntry {
                id: id.parse().map_err(|_| corrupt("bad id"))?,
                name: name.to_string(),
                partitions: partitions
                    .parse()
                    .map_err(|_| corrupt("bad partition count"))?,
            };
            if !is_valid_topic_name(name) || entry.partitions == 0 {
                return Err(corrupt("bad topic name or partition count"));
            }
            if entries
                .iter()
                .any(|e: &TopicEntry| e.id == entry.id || e.name == entry.name)
            {
                return Err(corrupt("topic id or name listed twice"));
            }
            entries.push(entry);
        }
        Ok(Manifest { path, entries })
    }

    pub fn entries(&self) -> &[TopicEntry] {
        &self.entries
    }

    pub fn find(&self, name: &str) -> Option<&TopicEntry> {
        self.entries.iter().find(|e| e.name == name)
    }

    /// Adds a topic with the lowest free id and persists the manifest (write, fsync, rename).
    pub fn add(&mut self, name: &str, partitions: u16) -> Result<TopicEntry, TopicError> {
        if !is_valid_topic_name(name) {
            return Err(TopicError::InvalidName(name.into()));
        }
        assert!(
            self.find(name).is_none(),
            "caller checks for an existing topic"
        );
        let id = (0..TOPICS_MAX as u16)
            .find(|id| !self.entries.iter().any(|e| e.id == *id))
            .ok_or(TopicError::TooManyTopics)?;
        let entry = TopicEntry {
            id,
            name: name.into(),
            partitions,
        };
        self.entries.push(entry.clone());
        if let Err(e) = self.persist() {
            self.entries.pop();
            return Err(e);
        }
        Ok(entry)
    }

    fn persist(&self) -> Result<(), TopicError> {
        let io = |source| TopicError::Io {
            path: self.path.clone(),
            source,
        };
        let tmp = self.path.with_extension("manifest.tmp");
        let mut file = std::fs::File::create(&tmp).map_err(io)?;
        for e in &self.entries {
            writeln!(file, "{} {} {}", e.id, e.name, e.partitions).map_err(io)?;
        }
        file.sync_all().map_err(io)?;
        std::fs::rename(&tmp, &self.path).map_err(io)?;
        let dir = self.path.parent().expect("manifest lives in a directory");
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io)?;
        Ok(())
    }
}

/// A topic with its open partition logs, owned by the lcore.
pub struct Topic {
    pub id: u16,
    pub name: String,
    pub partitions: Vec<PartitionLog>,
}

impl Topic {
    /// Opens (recovering) or creates every partition log of `entry`.
    pub fn open(
        entry: &TopicEntry,
        log: &LogConfig,
        flusher: &FlusherHandle,
    ) -> Result<Topic, TopicError> {
        let partitions = (0..entry.partitions)
            .map(|p| PartitionLog::open(log, &entry.name, p, flusher))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|source| TopicError::Log {
                name: entry.name.clone(),
                source,
            })?;
        Ok(Topic {
            id: entry.id,
            name: entry.name.clone(),
            partitions,
        })
    }
}

/// The lcore's view of every topic: by id for the data path, by name for Metadata.
/// Sized for [`TOPICS_MAX`] at start-up, so installing a topic never allocates.
pub struct TopicTable {
    by_id: Vec<Option<Topic>>,
    by_name: HashMap<String, u16>,
}

impl TopicTable {
    pub fn new() -> TopicTable {
        let mut by_id = Vec::with_capacity(TOPICS_MAX);
        by_id.resize_with(TOPICS_MAX, || None);
        TopicTable {
            by_id,
            by_name: HashMap::with_capacity(TOPICS_MAX),
        }
    }

    /// Installs `topic` under `key` (its name, made by the caller so that installing on the
    /// lcore allocates nothing: the admin thread builds it).
    pub fn install(&mut self, topic: Topic, key: String) {
        let id = topic.id as usize;
        assert!(self.by_id[id].is_none(), "topic id {id} installed twice");
        assert_eq!(key, topic.name);
        let previous = self.by_name.insert(key, topic.id);
        assert!(previous.is_none(), "topic {:?} installed twice", topic.name);
        self.by_id[id] = Some(topic);
    }

    pub fn by_name(&self, name: &str) -> Option<&Topic> {
        let id = *self.by_name.get(name)?;
        self.by_id[id as usize].as_ref()
    }

    #[inline]
    pub fn partition_mut(&mut self, handle: PartitionHandle) -> Option<&mut PartitionLog> {
        self.by_id
            .get_mut(handle.topic_id() as usize)?
            .as_mut()?
            .partitions
            .get_mut(handle.partition() as usize)
    }

    #[inline]
    pub fn partition(&self, handle: PartitionHandle) -> Option<&PartitionLog> {
        self.by_id
            .get(handle.topic_id() as usize)?
            .as_ref()?
            .partitions
            .get(handle.partition() as usize)
    }

    pub fn topics(&self) -> impl Iterator<Item = &Topic> {
        self.by_id.iter().flatten()
    }

    pub fn topics_mut(&mut self) -> impl Iterator<Item = &mut Topic> {
        self.by_id.iter_mut().flatten()
    }

    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

impl Default for TopicTable {
    fn default() -> TopicTable {
        TopicTable::new()
    }
}

/// A request from the lcore to create a topic.
#[derive(Copy, Clone, Debug)]
pub struct CreateTopic {
    pub name: TopicName,
    pub partitions: u16,
}

/// The admin thread's answer.
pub enum Created {
    /// The topic and its name as the table's key (built off the lcore).
    Topic(Topic, String),
    Failed {
        name: String,
        reason: String,
    },
}

/// The lcore's end of the admin queues.
pub struct AdminLink {
    requests: Arc<ArrayQueue<CreateTopic>>,
    replies: Arc<ArrayQueue<Created>>,
}

impl AdminLink {
    /// Queues a creation; false when the queue is full (answer Busy).
    pub fn request(&self, request: CreateTopic) -> bool {
        self.requests.push(request).is_ok()
    }
    pub fn poll(&self) -> Option<Created> {
        self.replies.pop()
    }
}

/// Starts the admin thread; it owns the manifest from now on.
pub fn spawn_admin(
    manifest: Manifest,
    log: LogConfig,
    flusher: FlusherHandle,
    stop: Arc<AtomicBool>,
) -> std::io::Result<(AdminLink, std::thread::JoinHandle<()>)> {
    let requests = Arc::new(ArrayQueue::new(CREATE_QUEUE_DEPTH));
    let replies = Arc::new(ArrayQueue::new(CREATE_QUEUE_DEPTH));
    let link = AdminLink {
        requests: requests.clone(),
        replies: replies.clone(),
    };
    let handle = std::thread::Builder::new()
        .name("precursor-admin".into())
        .spawn(move || {
            let mut manifest = manifest;
            while !stop.load(Ordering::Acquire) {
                let Some(request) = requests.pop() else {
                    std::thread::sleep(ADMIN_IDLE_SLEEP);
                    continue;
                };
                let reply = create(&mut manifest, &log, &flusher, request);
                if let Created::Failed { name, reason } = &reply {
                    eprintln!("precursor-dataplane: cannot create topic {name:?}: {reason}");
                }
                // The lcore keeps at most CREATE_QUEUE_DEPTH creations outstanding.
                assert!(replies.push(reply).is_ok(), "admin reply queue overflow");
            }
        })?;
    Ok((link, handle))
}

fn create(
    manifest: &mut Manifest,
    log: &LogConfig,
    flusher: &FlusherHandle,
    request: CreateTopic,
) -> Created {
    let name = request.name.as_str();
    let entry = match manifest.find(name) {
        // Asked twice (a retry raced the first creation): the lcore dedups on install.
        Some(entry) => entry.clone(),
        None => match manifest.add(name, request.partitions) {
            Ok(entry) => entry,
            Err(e) => {
                return Created::Failed {
                    name: request.name.as_str().to_string(),
                    reason: e.to_string(),
                }
            }
        },
    };
    match Topic::open(&entry, log, flusher) {
        Ok(topic) => {
            let key = topic.name.clone();
            Created::Topic(topic, key)
        }
        Err(e) => Created::Failed {
            name: request.name.as_str().to_string(),
            reason: e.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_round_trips_and_assigns_the_lowest_free_id() {
        let dir = tempfile::tempdir().unwrap();
        let mut manifest = Manifest::load(dir.path()).unwrap();
        assert!(manifest.entries().is_empty());
        assert_eq!(manifest.add("orders", 4).unwrap().id, 0);
        assert_eq!(manifest.add("quotes", 1).unwrap().id, 1);
        let reloaded = Manifest::load(dir.path()).unwrap();
        assert_eq!(reloaded.entries(), manifest.entries());
        assert_eq!(reloaded.find("orders").unwrap().partitions, 4);
    }

    #[test]
    fn a_corrupt_manifest_is_refused_with_its_line() {
        let dir = tempfile::tempdir().unwrap();
        for (text, reason) in [
            ("0 orders\n", "expected `id name partitions`"),
            ("x orders 1\n", "bad id"),
            ("0 orders 1\n0 quotes 1\n", "listed twice"),
            ("0 bad/name 1\n", "bad topic name"),
            ("0 orders 0\n", "partition count"),
        ] {
            std::fs::write(dir.path().join(MANIFEST_FILE), text).unwrap();
            let message = Manifest::load(dir.path()).err().unwrap().to_string();
            assert!(
                message.contains(reason) && message.contains("line"),
                "{text:?}: {message}"
            );
        }
    }

    #[test]
    fn invalid_names_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut manifest = Manifest::load(dir.path()).unwrap();
        assert!(matches!(
            manifest.add("a b", 1),
            Err(TopicError::InvalidName(_))
        ));
        assert!(TopicName::new("..").is_none());
        assert!(TopicName::new(&"x".repeat(250)).is_none());
        assert_eq!(
            TopicName::new("ok.name_1-2").unwrap().as_str(),
            "ok.name_1-2"
        );
    }
}
