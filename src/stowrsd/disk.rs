//! The free-disk reserve of the store directory: a part is not stored, and
//! a part being stored is given up, when fewer bytes than the reserve are
//! left to unprivileged users on the store's file system (`statvfs`), so
//! that a sender can never fill the disk the task store, the logs and the
//! system share.
//!
//! Owns the check against the file system; it decides nothing about a
//! request beyond answering whether there is room.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Default reserve: 1 GiB stays free on the store's file system (room for
/// the SQLite task store, logs and the system, whatever senders do).
pub const DEFAULT_MIN_FREE_DISK: u64 = 1 << 30;

/// Bytes one request may write before the free space is read again (while
/// the last reading minus what was written since stays above the reserve).
/// Reading it is a system call on a blocking thread: once per part of a
/// batch of small instances would cost more than the writes. The reserve
/// can thus be undercut by at most this much per request in flight.
const RECHECK_EVERY: u64 = 16 << 20;

/// Why a part may not be stored.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error(
        "only {available} bytes are free in {}, less than the reserve of {reserve} bytes (stowrsd --min-free-disk, serve --stowrsd-min-free-disk)",
        dir.display()
    )]
    Low {
        dir: PathBuf,
        available: u64,
        reserve: u64,
    },
    #[error("cannot read the free space of {}: {source}", dir.display())]
    Stat { dir: PathBuf, source: io::Error },
}

/// The reserve check of one request: reads the free space before the first
/// part is stored and then every `RECHECK_EVERY` bytes written, or as
/// soon as what was written may have reached the reserve.
#[derive(Debug)]
pub struct DiskGuard {
    dir: Arc<Path>,
    reserve: u64,
    /// Free bytes at the last reading.
    available: Option<u64>,
    /// Bytes written by this request since then.
    written: u64,
}

impl DiskGuard {
    /// A guard for the store `dir`; a `reserve` of 0 checks nothing.
    pub fn new(dir: Arc<Path>, reserve: u64) -> DiskGuard {
        DiskGuard {
            dir,
            reserve,
            available: None,
            written: 0,
        }
    }

    /// Counts `written` more bytes and says whether storing may go on.
    pub async fn check(&mut self, written: u64) -> Result<(), DiskError> {
        if self.reserve == 0 {
            return Ok(());
        }
        self.written = self.written.saturating_add(written);
        let due = match self.available {
            None => true,
            Some(a) => {
                self.written >= RECHECK_EVERY || a.saturating_sub(self.written) < self.reserve
            }
        };
        if !due {
            return Ok(());
        }
        let dir = self.dir.clone();
        let available = tokio::task::spawn_blocking(move || available(&dir))
            .await
            .map_err(io::Error::other)
            .and_then(|r| r)
            .map_err(|source| DiskError::Stat {
                dir: self.dir.to_path_buf(),
                source,
            })?;
        self.available = Some(available);
        self.written = 0;
        if available < self.reserve {
            return Err(DiskError::Low {
                dir: self.dir.to_path_buf(),
                available,
                reserve: self.reserve,
            });
        }
        Ok(())
    }
}

/// Bytes an unprivileged user may still write on `dir`'s file system.
pub fn available(dir: &Path) -> io::Result<u64> {
    let s = rustix::fs::statvfs(dir)?;
    Ok(s.f_bavail.saturating_mul(s.f_frsize))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reserve_above_the_free_space_refuses() {
        let tmp = tempfile::tempdir().unwrap();
        let dir: Arc<Path> = Arc::from(tmp.path());
        let free = available(&dir).unwrap();
        assert!(free > 0);
        let mut ok = DiskGuard::new(dir.clone(), 1);
        ok.check(0).await.unwrap();
        ok.check(1000).await.unwrap();
        let mut low = DiskGuard::new(dir.clone(), free.saturating_mul(2).max(1 << 40));
        let e = low.check(0).await.unwrap_err();
        assert!(matches!(e, DiskError::Low { .. }), "{e}");
        assert!(e.to_string().contains("--min-free-disk"), "{e}");
        // Off: never reads.
        let mut off = DiskGuard::new(Arc::from(Path::new("/nonexistent/x")), 0);
        off.check(u64::MAX).await.unwrap();
        let mut missing = DiskGuard::new(Arc::from(Path::new("/nonexistent/x")), 1);
        assert!(matches!(
            missing.check(0).await,
            Err(DiskError::Stat { .. })
        ));
    }
}
