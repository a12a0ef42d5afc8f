//! A partition's leader-epoch history (Kafka's leader-epoch cache, KIP-101): for each
//! leader epoch, the offset of its first batch. Rebuilt from the batches themselves at
//! recovery (every stored batch carries the `partitionLeaderEpoch` its leader stamped) and
//! checkpointed to `<partition dir>/leader-epoch-checkpoint` in Kafka's format when a
//! partition is opened:
//!
//! ```text
//! 0              version
//! 2              entries
//! 3 0            epoch start_offset
//! 5 1200
//! ```
//!
//! It answers "where does my log for epoch E end?" — the start of the first later epoch,
//! or the log end — which is how a follower finds the divergent tail it must cut.
//! Fixed size, no allocation: the lcore updates it on every replicated append.

use std::io::Write;
use std::path::Path;

/// Epochs remembered per partition; the oldest is forgotten first (a follower that far
/// behind truncates to the oldest remembered start, then fetches on).
pub const EPOCHS_MAX: usize = 64;
pub const CHECKPOINT_FILE: &str = "leader-epoch-checkpoint";

#[derive(Copy, Clone, Debug, PartialEq, Eq, Default)]
pub struct EpochEntry {
    pub epoch: u32,
    pub start_offset: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EpochHistory {
    entries: [EpochEntry; EPOCHS_MAX],
    len: usize,
}

impl Default for EpochHistory {
    fn default() -> EpochHistory {
        EpochHistory {
            entries: [EpochEntry::default(); EPOCHS_MAX],
            len: 0,
        }
    }
}

impl EpochHistory {
    pub fn entries(&self) -> &[EpochEntry] {
        &self.entries[..self.len]
    }

    /// The epoch of the last batch (or of the last leadership assigned).
    pub fn last_epoch(&self) -> Option<u32> {
        self.entries().last().map(|e| e.epoch)
    }

    /// A batch of `epoch` starts at `base_offset`. Epochs only grow: a batch of an older
    /// epoch than the last (a producer's own value on a partition never replicated) is
    /// ignored, negative epochs (Kafka producers write -1) too.
    pub fn on_batch(&mut self, epoch: i32, base_offset: u64) {
        let Ok(epoch) = u32::try_from(epoch) else {
            return;
        };
        match self.entries().last() {
            Some(last) if last.epoch >= epoch => {}
            _ => self.push(EpochEntry {
                epoch,
                start_offset: base_offset,
            }),
        }
    }

    /// This broker leads from `start_offset` at `epoch` (an epoch with no batch yet still
    /// ends where the previous one does).
    pub fn assign(&mut self, epoch: u32, start_offset: u64) {
        if let Some(last) = self.entries().last() {
            assert!(epoch >= last.epoch, "leader epochs only grow");
            assert!(start_offset >= last.start_offset);
            if last.epoch == epoch {
                return;
            }
        }
        self.push(EpochEntry {
            epoch,
            start_offset,
        });
    }

    fn push(&mut self, entry: EpochEntry) {
        if self.len == EPOCHS_MAX {
            self.entries.copy_within(1.., 0);
            self.len -= 1;
        }
        self.entries[self.len] = entry;
        self.len += 1;
    }

    /// Where this log's `epoch` ends (Kafka's OffsetForLeaderEpoch): the largest epoch at
    /// or below `epoch` and the start of the epoch after it, or `log_end` when it is the
    /// last. `None` when every remembered epoch is newer than `epoch` (the caller cuts to
    /// the oldest remembered start).
    pub fn end_offset_for(&self, epoch: u32, log_end: u64) -> Option<EpochEntry> {
        let entries = self.entries();
        let at = entries.partition_point(|e| e.epoch <= epoch);
        if at == 0 {
            return None;
        }
        let end = entries.get(at).map_or(log_end, |next| next.start_offset);
        Some(EpochEntry {
            epoch: entries[at - 1].epoch,
            start_offset: end,
        })
    }

    /// The oldest remembered start (where a follower with no common epoch cuts to).
    pub fn first_start(&self) -> Option<u64> {
        self.entries().first().map(|e| e.start_offset)
    }

    /// Forgets epochs that start at or after `offset` (the log was cut there).
    pub fn truncate_to(&mut self, offset: u64) {
        while self.len > 0 && self.entries[self.len - 1].start_offset >= offset {
            self.len -= 1;
        }
    }

    /// Writes the checkpoint file (tmp, fdatasync, rename). Off the lcore only.
    pub fn write_checkpoint(&self, dir: &Path) -> std::io::Result<()> {
        let path = dir.join(CHECKPOINT_FILE);
        let tmp = path.with_extension("tmp");
        let mut file = std::fs::File::create(&tmp)?;
        writeln!(file, "0\n{}", self.len)?;
        for entry in self.entries() {
            writeln!(file, "{} {}", entry.epoch, entry.start_offset)?;
        }
        file.sync_data()?;
        std::fs::rename(&tmp, &path)
    }

    /// Reads the checkpoint file; a missing file is an empty history, a malformed one is an
    /// error naming the line.
    pub fn read_checkpoint(dir: &Path) -> std::io::Result<EpochHistory> {
        let path = dir.join(CHECKPOINT_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(e),
        };
        let bad = |line: usize| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "{} line {line}: not Kafka's checkpoint format",
                    path.display()
                ),
            )
        };
        let mut lines = text.lines();
        if lines.next() != Some("0") {
            return Err(bad(1));
        }
        let count: usize = lines.next().and_then(|l| l.parse().ok()).ok_or(bad(2))?;
        let mut history = EpochHistory::default();
        for (i, line) in lines.enumerate() {
            let mut fields = line.split_whitespace();
            let (Some(epoch), Some(start), None) = (fields.next(), fields.next(), fields.next())
            else {
                return Err(bad(i + 3));
            };
            let (Ok(epoch), Ok(start_offset)) = (epoch.parse(), start.parse()) else {
                return Err(bad(i + 3));
            };
            if history.last_epoch().is_some_and(|last| last >= epoch) {
                return Err(bad(i + 3));
            }
            history.push(EpochEntry {
                epoch,
                start_offset,
            });
        }
        if history.len != count.min(EPOCHS_MAX) {
            return Err(bad(2));
        }
        Ok(history)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn end_offsets_follow_kafkas_offset_for_leader_epoch() {
        let mut history = EpochHistory::default();
        history.on_batch(-1, 0); // a producer's own value: ignored
        assert_eq!(history.last_epoch(), None);
        history.on_batch(1, 0);
        history.on_batch(1, 10);
        history.on_batch(3, 20);
        history.assign(5, 35); // leads, no batch yet
        assert_eq!(history.entries().len(), 3);
        let end = |e| {
            history
                .end_offset_for(e, 40)
                .map(|x| (x.epoch, x.start_offset))
        };
        assert_eq!(end(0), None);
        assert_eq!(end(1), Some((1, 20)));
        assert_eq!(
            end(2),
            Some((1, 20)),
            "an epoch with no batch ends where the last did"
        );
        assert_eq!(end(3), Some((3, 35)));
        assert_eq!(end(5), Some((5, 40)));
        assert_eq!(end(9), Some((5, 40)));
        history.on_batch(2, 41); // older than the last: ignored
        assert_eq!(history.last_epoch(), Some(5));
        history.truncate_to(20);
        assert_eq!(history.last_epoch(), Some(1));
    }

    #[test]
    fn the_oldest_epoch_goes_when_full() {
        let mut history = EpochHistory::default();
        for epoch in 0..(EPOCHS_MAX as u32 + 3) {
            history.on_batch(epoch as i32, u64::from(epoch) * 10);
        }
        assert_eq!(history.entries().len(), EPOCHS_MAX);
        assert_eq!(history.first_start(), Some(30));
    }

    #[test]
    fn checkpoint_round_trips_and_refuses_garbage() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            EpochHistory::read_checkpoint(dir.path()).unwrap(),
            EpochHistory::default()
        );
        let mut history = EpochHistory::default();
        history.assign(0, 0);
        history.assign(4, 77);
        history.write_checkpoint(dir.path()).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join(CHECKPOINT_FILE)).unwrap(),
            "0\n2\n0 0\n4 77\n"
        );
        assert_eq!(EpochHistory::read_checkpoint(dir.path()).unwrap(), history);
        for garbage in ["1\n0\n", "0\n2\n0 0\n", "0\n1\nx 0\n", "0\n2\n4 0\n3 9\n"] {
            std::fs::write(dir.path().join(CHECKPOINT_FILE), garbage).unwrap();
            let error = EpochHistory::read_checkpoint(dir.path()).unwrap_err();
            assert!(
                error.to_string().contains("checkpoint format"),
                "{garbage:?}"
            );
        }
    }
}
