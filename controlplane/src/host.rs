//! What the host has left for the broker: space on the filesystems of `node.data_dir`
//! (the logs) and of the memory directory (active segments), and hugepages. Read at each
//! /metrics scrape and dashboard update (`statvfs`, `/proc/meminfo`): no state.

use precursor_config::Config;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// One filesystem the broker writes to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FilesystemUse {
    /// `data` (node.data_dir) or `memory` (the active segments' directory).
    pub dir: &'static str,
    pub path: String,
    pub size_bytes: u64,
    /// Bytes an unprivileged writer may still use (`f_bavail`).
    pub free_bytes: u64,
}

/// Hugepages of the default size, from `/proc/meminfo`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Hugepages {
    pub total: u64,
    pub free: u64,
    pub page_bytes: u64,
}

/// The data and memory directories of `config`, each with its filesystem's use. A
/// directory that does not exist yet is measured at its nearest existing ancestor.
pub fn filesystems(config: &Config) -> Vec<FilesystemUse> {
    [
        ("data", config.node.data_dir.clone()),
        ("memory", config.memory_dir()),
    ]
    .into_iter()
    .filter_map(|(dir, path)| filesystem(dir, &path))
    .collect()
}

fn filesystem(dir: &'static str, path: &Path) -> Option<FilesystemUse> {
    let mut probe: PathBuf = path.to_path_buf();
    // Bounded: one step per path component.
    for _ in 0..=path.components().count() {
        if probe.as_os_str().is_empty() {
            probe = PathBuf::from(".");
        }
        if let Ok(stat) = nix::sys::statvfs::statvfs(&probe) {
            let fragment = stat.fragment_size();
            return Some(FilesystemUse {
                dir,
                path: path.display().to_string(),
                size_bytes: stat.blocks().saturating_mul(fragment),
                free_bytes: stat.blocks_available().saturating_mul(fragment),
            });
        }
        probe = probe.parent()?.to_path_buf();
    }
    None
}

/// Hugepages from `/proc/meminfo`; zeros when it cannot be read.
pub fn hugepages() -> Hugepages {
    std::fs::read_to_string("/proc/meminfo")
        .map(|text| parse_meminfo(&text))
        .unwrap_or_default()
}

fn parse_meminfo(text: &str) -> Hugepages {
    let mut pages = Hugepages::default();
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        let (Some(key), Some(value)) = (fields.next(), fields.next()) else {
            continue;
        };
        let Ok(value) = value.parse::<u64>() else {
            continue;
        };
        match key {
            "HugePages_Total:" => pages.total = value,
            "HugePages_Free:" => pages.free = value,
            "Hugepagesize:" => pages.page_bytes = value * 1024,
            _ => {}
        }
    }
    pages
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_hugepages_parse() {
        let pages = parse_meminfo(
            "MemTotal:       24000000 kB\nHugePages_Total:    1024\nHugePages_Free:      900\nHugepagesize:       2048 kB\n",
        );
        assert_eq!(
            pages,
            Hugepages {
                total: 1024,
                free: 900,
                page_bytes: 2 << 20
            }
        );
    }

    #[test]
    fn a_missing_directory_is_measured_at_its_parent() {
        let dir = tempfile::tempdir().unwrap();
        let fs = filesystem("data", &dir.path().join("not/yet")).unwrap();
        assert!(
            fs.size_bytes > 0 && fs.free_bytes <= fs.size_bytes,
            "{fs:?}"
        );
        assert!(fs.path.ends_with("not/yet"));
    }
}
