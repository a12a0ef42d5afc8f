//! Where to start looking for the first record at or after a timestamp: the sealed
//! segments' `.timeindex` files (Kafka's format, written by the data plane's flusher,
//! `dataplane/src/log/index.rs`).
//!
//! ```text
//!  <data_dir>/<topic>-<partition>/<base>.timeindex: 12-byte entries
//!      timestamp_ms i64 BE | relative_offset u32 BE
//!  an entry (t, o): t is the largest timestamp of the segment up to offset base + o,
//!  so every record at or below base + o is older than t; the last entry is the
//!  segment's largest timestamp (written when it is sealed).
//! ```
//!
//! Segments whose largest timestamp is older than the target are skipped whole; in the
//! first one that is not, the last entry older than the target bounds the start. The
//! active segment (no `.timeindex` yet) and segments without timestamps are scanned from
//! their base. The caller scans the batches from the returned offset through the data
//! path: the index only narrows where that scan starts.

use std::path::Path;

/// Bytes of one `.timeindex` entry.
pub const TIME_ENTRY_BYTES: usize = 12;
/// Largest `.timeindex` file read, in bytes (a 1 GiB segment with 512-byte intervals).
pub const TIME_INDEX_BYTES_MAX: u64 = 24 << 20;

/// The base offsets of a partition's segments, ascending (from the `<base>.log` names).
fn segment_bases(dir: &Path) -> Vec<u64> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut bases: Vec<u64> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name();
            let name = name.to_str()?;
            let stem = name.strip_suffix(".log")?;
            (stem.len() == 20).then(|| stem.parse::<u64>().ok())?
        })
        .collect();
    bases.sort_unstable();
    bases
}

/// The entries of `<base>.timeindex`, or None when there is none (active segment, not
/// sealed yet, deleted meanwhile) or it is unreadable.
fn time_entries(dir: &Path, base: u64) -> Option<Vec<(i64, u32)>> {
    let path = dir.join(format!("{base:020}.timeindex"));
    let length = std::fs::metadata(&path).ok()?.len();
    if length > TIME_INDEX_BYTES_MAX || length % TIME_ENTRY_BYTES as u64 != 0 {
        return None;
    }
    let bytes = std::fs::read(&path).ok()?;
    Some(
        bytes
            .chunks_exact(TIME_ENTRY_BYTES)
            .map(|entry| {
                (
                    i64::from_be_bytes(entry[..8].try_into().expect("8 bytes")),
                    u32::from_be_bytes(entry[8..].try_into().expect("4 bytes")),
                )
            })
            .collect(),
    )
}

/// The offset a scan for the first record with timestamp >= `target_ms` may start at, in
/// the partition directory `dir`. 0 when the directory has no segments.
pub fn scan_start(dir: &Path, target_ms: i64) -> u64 {
    let bases = segment_bases(dir);
    let Some(&first) = bases.first() else {
        return 0;
    };
    let mut start = first;
    for (i, &base) in bases.iter().enumerate() {
        let entries = match time_entries(dir, base) {
            Some(entries) if !entries.is_empty() => entries,
            _ => return base,
        };
        let largest = entries.last().map_or(i64::MIN, |e| e.0);
        if largest < target_ms {
            // Nothing here is new enough: the answer is in a later segment.
            start = bases.get(i + 1).copied().unwrap_or(base);
            continue;
        }
        let mut bound = base;
        for &(timestamp, relative) in &entries {
            if timestamp >= target_ms {
                break;
            }
            bound = base + u64::from(relative) + 1;
        }
        return bound;
    }
    start
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_index(dir: &Path, base: u64, entries: &[(i64, u32)]) {
        std::fs::write(dir.join(format!("{base:020}.log")), b"").unwrap();
        let mut bytes = Vec::new();
        for (t, o) in entries {
            bytes.extend_from_slice(&t.to_be_bytes());
            bytes.extend_from_slice(&o.to_be_bytes());
        }
        std::fs::write(dir.join(format!("{base:020}.timeindex")), bytes).unwrap();
    }

    #[test]
    fn sealed_segments_narrow_the_scan() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        assert_eq!(scan_start(d, 5), 0, "no segments");
        write_index(d, 0, &[(100, 9), (200, 19), (300, 29)]);
        write_index(d, 30, &[(400, 5), (500, 15), (600, 29)]);
        // The active segment: a .log, no .timeindex.
        std::fs::write(d.join(format!("{:020}.log", 60)), b"").unwrap();
        std::fs::write(d.join("spare.log"), b"").unwrap();
        assert_eq!(
            scan_start(d, 50),
            0,
            "older than everything: from the start"
        );
        assert_eq!(scan_start(d, 250), 20, "after the (200, 19) entry");
        assert_eq!(
            scan_start(d, 200),
            10,
            "an entry equal to the target is not skipped"
        );
        assert_eq!(scan_start(d, 350), 30, "first segment skipped whole");
        assert_eq!(scan_start(d, 550), 46);
        assert_eq!(
            scan_start(d, 9_999),
            60,
            "only the active segment can hold it"
        );
    }

    #[test]
    fn unreadable_or_empty_indexes_mean_scanning_that_segment() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        write_index(d, 0, &[]);
        write_index(d, 10, &[(100, 3)]);
        assert_eq!(scan_start(d, 500), 0, "no timestamps in the first segment");
        std::fs::write(d.join(format!("{:020}.timeindex", 0)), b"odd").unwrap();
        assert_eq!(scan_start(d, 500), 0);
    }
}
