//! Real filesystems for the disk fault tests: a small ext4 on a loop device, mounted by
//! the test and unmounted (and its image removed) when dropped, however the test ends.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Unmounting fails with EBUSY while a process that used the mount is still exiting;
/// retry this long before a lazy unmount, in milliseconds.
const UNMOUNT_PATIENCE_MS: u64 = 10_000;

fn run(program: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("{program}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{program} {}: {} {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// An ext4 filesystem of `size_mib` MiB in an image file, loop-mounted (`mount -o loop`)
/// at [`LoopDisk::path`]. No reserved blocks (`-m 0`): a root data plane fills it to the
/// last block, as an unprivileged one would.
pub struct LoopDisk {
    mount_point: PathBuf,
    image: PathBuf,
    mounted: bool,
    _dir: tempfile::TempDir,
}

impl LoopDisk {
    /// None (said loudly) when this machine cannot loop-mount an ext4.
    pub fn new(size_mib: u64) -> Option<LoopDisk> {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("disk.img");
        let mount_point = dir.path().join("mnt");
        std::fs::create_dir(&mount_point).unwrap();
        let made = run(
            "truncate",
            &["-s", &format!("{size_mib}M"), path_str(&image)],
        )
        .and_then(|_| run("mkfs.ext4", &["-q", "-F", "-m", "0", path_str(&image)]));
        if let Err(error) = made {
            eprintln!("SKIPPED: cannot make an ext4 image: {error}");
            return None;
        }
        let mut disk = LoopDisk {
            mount_point,
            image,
            mounted: false,
            _dir: dir,
        };
        if let Err(error) = disk.mount() {
            eprintln!("SKIPPED: cannot loop-mount an ext4: {error}");
            return None;
        }
        Some(disk)
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        &self.mount_point
    }

    /// Mounts the image (again): after [`LoopDisk::unmount`], the journal replays.
    pub fn mount(&mut self) -> Result<(), String> {
        assert!(!self.mounted);
        run(
            "mount",
            &[
                "-o",
                "loop",
                "-t",
                "ext4",
                path_str(&self.image),
                path_str(&self.mount_point),
            ],
        )?;
        self.mounted = true;
        Ok(())
    }

    /// Unmounts (the loop device goes with it), retrying while the mount is busy.
    pub fn unmount(&mut self) {
        assert!(self.mounted);
        let deadline = Instant::now() + Duration::from_millis(UNMOUNT_PATIENCE_MS);
        loop {
            match run("umount", &[path_str(&self.mount_point)]) {
                Ok(_) => break,
                Err(error) if Instant::now() >= deadline => {
                    eprintln!(
                        "WARNING: lazy unmount of {}: {error}",
                        self.mount_point.display()
                    );
                    let _ = run("umount", &["-l", path_str(&self.mount_point)]);
                    break;
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
        self.mounted = false;
    }

    /// Bytes an unprivileged writer could still allocate (`statfs` f_bavail x f_bsize).
    pub fn free_bytes(&self) -> u64 {
        let out = run("stat", &["-f", "-c", "%a %S", path_str(&self.mount_point)]).unwrap();
        let numbers: Vec<u64> = out.split_whitespace().map(|w| w.parse().unwrap()).collect();
        numbers[0] * numbers[1]
    }

    /// Allocates a filler file `name` taking all but about `leave_bytes` of the free
    /// space (fallocate: real blocks). Returns its path; delete it to give space back.
    pub fn fill(&self, name: &str, leave_bytes: u64) -> PathBuf {
        let path = self.mount_point.join(name);
        let free = self.free_bytes();
        assert!(free > leave_bytes, "only {free} bytes free");
        run(
            "fallocate",
            &["-l", &(free - leave_bytes).to_string(), path_str(&path)],
        )
        .unwrap();
        path
    }

    /// Shuts the filesystem down (EXT4_IOC_SHUTDOWN, journal not flushed: a power cut's
    /// view): every later write and fdatasync on it fails with EIO until it is unmounted
    /// and mounted again.
    pub fn shut_down(&self) {
        precursor_ffi::fs::shut_down_filesystem(&self.mount_point)
            .unwrap_or_else(|e| panic!("shutting {} down: {e}", self.mount_point.display()));
    }
}

impl Drop for LoopDisk {
    fn drop(&mut self) {
        if self.mounted {
            self.unmount();
        }
    }
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("test paths are UTF-8")
}
