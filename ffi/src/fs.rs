//! Filesystem control the tests of disk faults need: shutting an ext4 (or XFS) filesystem
//! down, the kernel's own way of making every later write and fsync on it fail with EIO
//! (what xfstests' `shutdown` does; ext4's `EXT4_IOC_SHUTDOWN`, XFS's `XFS_IOC_GOINGDOWN`:
//! the same ioctl number).

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

/// `_IOR('X', 125, __u32)`.
const FS_IOC_SHUTDOWN: libc::c_ulong = 0x8004_587d;
/// Shut down without flushing the journal: what a power cut leaves (only what was
/// fdatasynced survives).
const SHUTDOWN_FLAGS_NOLOGFLUSH: u32 = 0x2;

/// Shuts the filesystem holding `path` down: from now on every write, fsync and
/// fdatasync on it fails with EIO, until it is unmounted and mounted again. Needs
/// CAP_SYS_ADMIN.
pub fn shut_down_filesystem(path: &Path) -> io::Result<()> {
    let file = File::open(path)?;
    let flags: u32 = SHUTDOWN_FLAGS_NOLOGFLUSH;
    // SAFETY: `file` is an open descriptor for the call's duration, and the ioctl reads
    // one u32 through the pointer, which points at `flags`, alive until it returns.
    let result = unsafe { libc::ioctl(file.as_raw_fd(), FS_IOC_SHUTDOWN as _, &flags) };
    if result == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
