//! Fetch's direct path (issue 5): batches are read from the data plane's shared log maps
//! (`precursor_client::log_map`, as `precursor consume --direct` does) instead of being
//! asked for over IPC. One copy (map -> response `Bytes`), no frame, no thread hop, and
//! nothing the data plane has to do: a reader only loads the writer's published length.
//!
//! The maps are opened lazily per (topic, partition) and shared by every connection task:
//! each sits behind its own mutex, held for a read and its copy (memcpy speed), never
//! across an `.await`. A cached map is dropped, so that a deleted topic (or one deleted
//! and created again under the same name) is never served from old maps, when
//! - its topic is no longer in the gateway's topic view, or it has fewer partitions;
//! - its partition directory is gone or is another directory (device and inode, looked at
//!   every [`MAP_CHECK_INTERVAL_MS`] at most; the map holds the directory open so that its
//!   inode number cannot be given to a directory created again under the same name);
//! - the data plane restarted (the link attached to another CnC file): every map goes;
//! - a read of it failed (a directory vanished mid-read).
//!
//! Anything the direct view cannot answer goes to the IPC path, which stays the authority:
//! `<cnc_dir>/paths` missing or unreadable (said once in the log, retried every
//! [`PATHS_RETRY_INTERVAL_MS`]), a partition that cannot be mapped, and every
//! out-of-range offset (the map may lag the data plane by a segment roll for up to
//! `log_map::RESCAN_INTERVAL`; the data plane answers with its exact bounds).

use super::cluster::below_high_watermark;
use super::data_path::Fetched;
use super::topics::{Partition, Topics};
use bytes::Bytes;
use precursor_client::log_map::{DirectRead, EpochHistory, LogPaths, PartitionMap};
use precursor_client::ClientError;
use precursor_protocol::frame::FetchDataHeader;
use precursor_shm::FileId;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// While `<cnc_dir>/paths` cannot be read, how often it is tried again, in milliseconds.
pub const PATHS_RETRY_INTERVAL_MS: u64 = 1_000;
/// How often a cached map's partition directory is checked to still be the one mapped
/// (a `stat`), in milliseconds: a topic deleted and created again between two checks is
/// also caught by the topic view, which drops maps of topics that left it.
pub const MAP_CHECK_INTERVAL_MS: u64 = 100;

const LOG: &str = "precursor-controlplane: kafka gateway";

/// Why a partition is not read directly (the fetch then goes over IPC).
#[derive(Debug, thiserror::Error)]
pub enum DirectReadError {
    #[error("the log maps are not readable: {0}")]
    NoPaths(String),
    #[error("partition {partition} is out of the direct reader's range")]
    Partition { partition: i32 },
    #[error("{topic}-{partition}: {source}")]
    Map {
        topic: String,
        partition: u16,
        #[source]
        source: ClientError,
    },
    #[error("offset {offset} is outside [{log_start_offset}, {high_watermark}] as mapped")]
    OutOfRange {
        offset: u64,
        log_start_offset: u64,
        high_watermark: u64,
    },
}

/// A partition's map and the directory it was opened on.
struct CachedMap {
    map: PartitionMap,
    /// Its leader epochs below the high watermark (which no replica truncates), walked
    /// from the batch headers so far (OffsetForLeaderEpoch, ListOffsets).
    epochs: EpochHistory,
    dir: PathBuf,
    dir_id: FileId,
    /// Held open so that the directory's inode cannot be reused by a directory created
    /// again under the same name (which would otherwise look like the same one).
    _dir_handle: std::fs::File,
    checked_at: Instant,
}

type Slot = Arc<Mutex<Option<CachedMap>>>;

/// Where the logs are, for the data plane attached now.
struct Discovery {
    /// The link generation (one per CnC file attached) the maps belong to.
    generation: u64,
    paths: Option<LogPaths>,
    tried_at: Option<Instant>,
    /// What the last attempt said, so a change of state is logged once.
    problem: Option<String>,
    /// The topic view the maps were last checked against.
    view: Option<Arc<Topics>>,
}

/// The gateway's shared log maps.
pub struct LogReader {
    cnc_dir: PathBuf,
    discovery: Mutex<Discovery>,
    /// Topic -> partition -> map (a slot is created empty and filled at the first read).
    maps: Mutex<HashMap<String, HashMap<u16, Slot>>>,
}

impl LogReader {
    pub fn new(cnc_dir: PathBuf) -> LogReader {
        LogReader {
            cnc_dir,
            discovery: Mutex::new(Discovery {
                generation: u64::MAX,
                paths: None,
                tried_at: None,
                problem: None,
                view: None,
            }),
            maps: Mutex::new(HashMap::new()),
        }
    }

    /// Brings the cache in line with the data plane attached now (`generation`) and the
    /// topic view; returns where the logs are, or why they cannot be read directly.
    pub fn prepare(
        &self,
        generation: u64,
        view: &Arc<Topics>,
    ) -> Result<LogPaths, DirectReadError> {
        let mut discovery = self.discovery.lock().expect("log reader discovery lock");
        if discovery.generation != generation {
            // Another data plane: other memory files, maybe other directories.
            discovery.generation = generation;
            discovery.paths = None;
            discovery.tried_at = None;
            discovery.view = None;
            self.maps.lock().expect("log reader maps lock").clear();
        }
        if !discovery
            .view
            .as_ref()
            .is_some_and(|seen| Arc::ptr_eq(seen, view))
        {
            discovery.view = Some(view.clone());
            self.retain(view);
        }
        if discovery.paths.is_none() {
            let due = discovery
                .tried_at
                .is_none_or(|at| at.elapsed() >= Duration::from_millis(PATHS_RETRY_INTERVAL_MS));
            if due {
                discovery.tried_at = Some(Instant::now());
                match LogPaths::discover(&self.cnc_dir) {
                    Ok(paths) => {
                        eprintln!(
                            "{LOG}: Fetch reads the log maps directly (data {}, memory {})",
                            paths.data_dir.display(),
                            paths.memory_dir.display()
                        );
                        discovery.problem = None;
                        discovery.paths = Some(paths);
                    }
                    Err(error) => {
                        let problem = error.to_string();
                        if discovery.problem.as_deref() != Some(problem.as_str()) {
                            eprintln!("{LOG}: Fetch goes through the data plane (IPC): {problem}");
                        }
                        discovery.problem = Some(problem);
                    }
                }
            }
        }
        discovery
            .paths
            .clone()
            .ok_or_else(|| DirectReadError::NoPaths(discovery.problem.clone().unwrap_or_default()))
    }

    /// Drops the maps of topics that left the view and of partitions past its count.
    fn retain(&self, view: &Topics) {
        let mut maps = self.maps.lock().expect("log reader maps lock");
        maps.retain(|topic, partitions| match view.get(topic) {
            None => false,
            Some(known) => {
                partitions.retain(|&p, _| {
                    known
                        .binary_search_by_key(&i32::from(p), Partition::index)
                        .is_ok()
                });
                !partitions.is_empty()
            }
        });
    }

    fn slot(&self, topic: &str, partition: u16) -> Slot {
        let mut maps = self.maps.lock().expect("log reader maps lock");
        if let Some(slot) = maps.get(topic).and_then(|p| p.get(&partition)) {
            return slot.clone();
        }
        maps.entry(topic.to_string())
            .or_default()
            .entry(partition)
            .or_default()
            .clone()
    }

    /// Whole batches from the one holding `offset` (at least one, then more within
    /// `max_bytes`, from one segment: what the data plane's read returns), copied out, and
    /// the partition's bounds as mapped. With `below` (a high watermark), only the batches
    /// that end below it, and it is the high watermark answered.
    pub fn fetch(
        &self,
        paths: &LogPaths,
        topic: &str,
        partition: i32,
        offset: u64,
        max_bytes: u32,
        below: Option<u64>,
    ) -> Result<Fetched, DirectReadError> {
        self.with_map(paths, topic, partition, |entry| {
            read(&mut entry.map, offset, max_bytes as usize, below)
        })?
    }

    /// The partition's leader epochs, from its batch headers to the log end as mapped
    /// now. The part below `stable_below` (the high watermark; None: all of it, a
    /// partition of one replica) is kept and walked on from at the next call; the rest is
    /// walked afresh each time, since a replica may still truncate it.
    pub fn leader_epochs(
        &self,
        paths: &LogPaths,
        topic: &str,
        partition: i32,
        stable_below: Option<u64>,
    ) -> Result<EpochHistory, DirectReadError> {
        self.with_map(paths, topic, partition, |entry| {
            let stable_below = stable_below.unwrap_or(u64::MAX);
            entry.map.extend_epochs(&mut entry.epochs, stable_below)?;
            let mut history = entry.epochs.clone();
            if stable_below != u64::MAX {
                entry.map.extend_epochs(&mut history, u64::MAX)?;
            }
            Ok(history)
        })
    }

    /// Runs `use_map` on the partition's map, opened first if need be; a failure drops
    /// the map (a directory or file vanished: it is opened again next time).
    fn with_map<T>(
        &self,
        paths: &LogPaths,
        topic: &str,
        partition: i32,
        use_map: impl FnOnce(&mut CachedMap) -> Result<T, ClientError>,
    ) -> Result<T, DirectReadError> {
        let partition =
            u16::try_from(partition).map_err(|_| DirectReadError::Partition { partition })?;
        let slot = self.slot(topic, partition);
        let mut cached = slot.lock().expect("log map lock");
        let map_error = |source| DirectReadError::Map {
            topic: topic.to_string(),
            partition,
            source,
        };
        if let Some(entry) = cached.as_mut() {
            if entry.checked_at.elapsed() >= Duration::from_millis(MAP_CHECK_INTERVAL_MS) {
                if dir_id(&entry.dir).ok() == Some(entry.dir_id) {
                    entry.checked_at = Instant::now();
                } else {
                    *cached = None; // deleted, or deleted and created again
                }
            }
        }
        let entry = match cached.as_mut() {
            Some(entry) => entry,
            None => {
                // The directory first: the maps then belong to it or to a later one, which
                // the next check tells apart.
                let dir = paths.data_dir.join(format!("{topic}-{partition}"));
                let dir_handle = std::fs::File::open(&dir).map_err(|e| map_error(e.into()))?;
                let dir_id = dir_handle
                    .metadata()
                    .map(|m| FileId::of(&m))
                    .map_err(|e| map_error(e.into()))?;
                let map = PartitionMap::open(paths, topic, partition).map_err(map_error)?;
                debug_assert_eq!(map.dir(), dir);
                cached.insert(CachedMap {
                    map,
                    epochs: EpochHistory::default(),
                    dir,
                    dir_id,
                    _dir_handle: dir_handle,
                    checked_at: Instant::now(),
                })
            }
        };
        let used = use_map(entry);
        if used.is_err() {
            *cached = None; // a directory or file vanished: open it again next time
        }
        used.map_err(map_error)
    }
}

/// One read of a map: the batches copied out before the map (and its lock) is let go.
fn read(
    map: &mut PartitionMap,
    offset: u64,
    max_bytes: usize,
    below: Option<u64>,
) -> Result<Result<Fetched, DirectReadError>, ClientError> {
    let batches = match map.read(offset, max_bytes)? {
        DirectRead::Batches(bytes) => {
            let end = below.map_or(bytes.len(), |b| below_high_watermark(bytes, b));
            Some(Bytes::copy_from_slice(&bytes[..end]))
        }
        DirectRead::CaughtUp | DirectRead::OutOfRange { .. } => None,
    };
    // After the read, so that the log end covers every batch returned.
    let log_end = map.end_offset()?;
    let log_start_offset = map.log_start_offset().unwrap_or(log_end);
    if batches.is_none() && !(log_start_offset..=log_end).contains(&offset) {
        return Ok(Err(DirectReadError::OutOfRange {
            offset,
            log_start_offset,
            high_watermark: log_end,
        }));
    }
    debug_assert!(log_start_offset <= log_end);
    let high_watermark = below.map_or(log_end, |b| b.min(log_end));
    Ok(Ok(Fetched {
        header: FetchDataHeader {
            high_watermark,
            // Not known from the maps and not used by Fetch: claim nothing durable
            // beyond the log start.
            durable_offset: log_start_offset,
            log_start_offset,
        },
        out_of_range: false,
        batches: batches.unwrap_or_default(),
    }))
}

fn dir_id(dir: &Path) -> std::io::Result<FileId> {
    std::fs::metadata(dir).map(|m| FileId::of(&m))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::PartitionInfo;
    use precursor_shm::append_region;

    fn batch(base: u64, records: u32, bytes: usize) -> Vec<u8> {
        let mut out = vec![0u8; bytes];
        out[0..8].copy_from_slice(&(base as i64).to_be_bytes());
        out[8..12].copy_from_slice(&((bytes - 12) as i32).to_be_bytes());
        out[16] = 2;
        out[23..27].copy_from_slice(&((records - 1) as i32).to_be_bytes());
        out
    }

    fn view(topics: &[(&str, usize)]) -> Arc<Topics> {
        Arc::new(
            topics
                .iter()
                .map(|&(name, partitions)| {
                    let partitions = (0..partitions as u32)
                        .map(|partition| Partition {
                            info: PartitionInfo {
                                partition,
                                ..PartitionInfo::default()
                            },
                            ..Partition::default()
                        })
                        .collect();
                    (name.to_string(), partitions)
                })
                .collect(),
        )
    }

    /// A topic `t` of one partition whose memory segment holds `batches`.
    fn create_topic(
        paths: &LogPaths,
        batches: &[Vec<u8>],
        memory_file: u32,
    ) -> precursor_shm::AppendWriter {
        std::fs::create_dir_all(paths.data_dir.join("t-0")).unwrap();
        let path = paths.memory_dir.join(format!("t-0+{memory_file}.segment"));
        let (mut writer, _) = append_region(&path, 1 << 16).unwrap();
        for b in batches {
            writer.append(b).unwrap();
        }
        writer
    }

    #[test]
    fn fetches_copy_batches_and_bounds_and_leave_out_of_range_to_the_data_plane() {
        let dir = tempfile::tempdir().unwrap();
        let cnc = dir.path().join("cnc");
        std::fs::create_dir_all(&cnc).unwrap();
        let reader = LogReader::new(cnc.clone());
        let topics = view(&[("t", 1)]);
        assert!(matches!(
            reader.prepare(1, &topics),
            Err(DirectReadError::NoPaths(_))
        ));
        let paths = LogPaths {
            data_dir: dir.path().join("data"),
            memory_dir: dir.path().join("memory"),
            small_memory_dir: None,
        };
        std::fs::create_dir_all(&paths.memory_dir).unwrap();
        std::fs::write(
            cnc.join("paths"),
            format!(
                "data_dir={}\nmemory_dir={}\n",
                paths.data_dir.display(),
                paths.memory_dir.display()
            ),
        )
        .unwrap();
        // Retried at the next generation (a data plane start) without waiting.
        let found = reader.prepare(2, &topics).unwrap();
        assert_eq!(found, paths);
        let _writer = create_topic(&paths, &[batch(0, 3, 100), batch(3, 2, 100)], 1);
        let fetched = reader.fetch(&paths, "t", 0, 1, 0, None).unwrap();
        assert_eq!(&fetched.batches[..], &batch(0, 3, 100)[..]);
        assert_eq!(fetched.header.high_watermark, 5);
        assert_eq!(fetched.header.log_start_offset, 0);
        assert!(!fetched.out_of_range);
        let caught_up = reader.fetch(&paths, "t", 0, 5, 1 << 20, None).unwrap();
        assert!(caught_up.batches.is_empty());
        assert_eq!(caught_up.header.high_watermark, 5);
        assert!(matches!(
            reader.fetch(&paths, "t", 0, 6, 1 << 20, None),
            Err(DirectReadError::OutOfRange { offset: 6, .. })
        ));
        assert!(matches!(
            reader.fetch(&paths, "t", 1, 0, 1 << 20, None),
            Err(DirectReadError::Map { .. })
        ));
    }

    #[test]
    fn a_topic_deleted_and_created_again_is_not_served_from_old_maps() {
        let dir = tempfile::tempdir().unwrap();
        let paths = LogPaths {
            data_dir: dir.path().join("data"),
            memory_dir: dir.path().join("memory"),
            small_memory_dir: None,
        };
        std::fs::create_dir_all(&paths.memory_dir).unwrap();
        let reader = LogReader::new(dir.path().join("cnc"));
        let old = create_topic(&paths, &[batch(0, 10, 100)], 1);
        assert_eq!(
            reader
                .fetch(&paths, "t", 0, 0, 1 << 20, None)
                .unwrap()
                .header
                .high_watermark,
            10
        );
        // Deleted: gone from the view, so its map goes.
        drop(old);
        std::fs::remove_dir_all(paths.data_dir.join("t-0")).unwrap();
        std::fs::remove_file(paths.memory_dir.join("t-0+1.segment")).unwrap();
        reader.retain(&view(&[]));
        assert!(reader.maps.lock().unwrap().is_empty());
        // Created again (and a map cached in between is caught by its directory's identity).
        let _new = create_topic(&paths, &[batch(0, 2, 100)], 1);
        let fetched = reader.fetch(&paths, "t", 0, 0, 1 << 20, None).unwrap();
        assert_eq!(fetched.header.high_watermark, 2);
        std::fs::remove_dir_all(paths.data_dir.join("t-0")).unwrap();
        std::fs::remove_file(paths.memory_dir.join("t-0+1.segment")).unwrap();
        let _newer = create_topic(&paths, &[batch(0, 7, 100)], 2);
        std::thread::sleep(Duration::from_millis(MAP_CHECK_INTERVAL_MS + 1));
        let fetched = reader.fetch(&paths, "t", 0, 0, 1 << 20, None).unwrap();
        assert_eq!(fetched.header.high_watermark, 7);
        assert_eq!(&fetched.batches[..], &batch(0, 7, 100)[..]);
    }
}
