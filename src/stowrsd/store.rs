//! Writing a received part to a temporary file and committing it durably
//! under its final name, without replacing an instance already stored
//! (unless told to).
//!
//! A commit is acknowledged only once it would survive a power loss: the
//! file's data is fsynced before it gets its name, and the directory is
//! fsynced after, so a 200 never names an instance that a crash could take
//! back. The name is given with `link(2)`, which never replaces an existing
//! file: two requests carrying the same SOP Instance UID at the same time
//! cannot overwrite each other, and the loser compares its bytes with the
//! winner's. The store directory must therefore be on a file system with
//! hard links (any POSIX one: ext4, XFS, btrfs, tmpfs, NFS); on one without
//! (FAT, some SMB mounts) every instance fails with 0x0110.

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use tokio::fs::{File, OpenOptions};
use tokio::io::{AsyncWriteExt, BufWriter};

/// Write buffer per part: coalesces the body's small chunks into large
/// blocking writes.
const WRITE_BUFFER: usize = 256 * 1024;

/// Read buffer per file when a duplicate is compared with the stored
/// instance (two of them at a time, on a blocking thread).
const COMPARE_BUFFER: usize = 256 * 1024;

/// What a commit did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Committed {
    /// The instance is stored under its name (new, or replacing the old
    /// one when overwriting was asked for).
    Stored,
    /// An instance of that name was already stored with the very same
    /// bytes: it is kept, and the re-sent copy is dropped. A client that
    /// sends again after a lost reply gets a success.
    AlreadyIdentical,
    /// An instance of that name was already stored with other bytes: it is
    /// kept, and the received copy is dropped.
    AlreadyDifferent,
}

/// A `.<random>.part` file in the store directory. Removed when dropped
/// unless committed.
#[derive(Debug)]
pub struct TempFile {
    inner: Option<(PathBuf, BufWriter<File>)>,
}

impl TempFile {
    /// Creates a new, uniquely named temporary file in `dir` (creating
    /// `dir` if it does not exist).
    pub async fn create(dir: &Path) -> io::Result<TempFile> {
        let mut created_dir = false;
        let mut collisions = 0;
        loop {
            let path = dir.join(format!(".{:016x}.part", rand::random::<u64>()));
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
                .await
            {
                Ok(file) => {
                    return Ok(TempFile {
                        inner: Some((path, BufWriter::with_capacity(WRITE_BUFFER, file))),
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound && !created_dir => {
                    tokio::fs::create_dir_all(dir).await?;
                    created_dir = true;
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && collisions < 8 => {
                    collisions += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Appends `data`.
    pub async fn write(&mut self, data: &[u8]) -> io::Result<()> {
        match &mut self.inner {
            Some((_, w)) => w.write_all(data).await,
            None => Err(io::Error::other("temporary file already closed")),
        }
    }

    /// Flushes and fsyncs the file, gives it the name `dest` and fsyncs the
    /// directory. Without `overwrite` an existing `dest` is kept and the
    /// received bytes are compared with it. The temporary file is gone
    /// afterwards, whatever happened.
    pub async fn commit(mut self, dest: &Path, overwrite: bool) -> io::Result<Committed> {
        let Some((path, mut w)) = self.inner.take() else {
            return Err(io::Error::other("temporary file already closed"));
        };
        if let Err(e) = w.flush().await {
            drop(w);
            let _ = tokio::fs::remove_file(&path).await;
            return Err(e);
        }
        let file = w.into_inner().into_std().await;
        let dest = dest.to_owned();
        // fsync, link and compare block: all on one blocking thread, in order.
        let job = {
            let path = path.clone();
            tokio::task::spawn_blocking(move || {
                let result = commit_blocking(file, &path, &dest, overwrite);
                // Gone in every case: renamed or linked (and its name
                // dropped), or not wanted.
                if let Err(e) = fs::remove_file(&path)
                    && e.kind() != io::ErrorKind::NotFound
                {
                    tracing::warn!(path = %path.display(), error = %e, "cannot remove a temporary file");
                }
                result
            })
        };
        match job.await {
            Ok(result) => result,
            Err(e) => {
                // The blocking task panicked or was cancelled: the file is
                // not known to be stored, and must not stay behind.
                let _ = tokio::fs::remove_file(&path).await;
                Err(io::Error::other(format!(
                    "storing the instance failed: {e}"
                )))
            }
        }
    }

    /// Flushes and fsyncs the file and hands it over under its temporary
    /// name, for a caller that stores it elsewhere (the archive takes it
    /// from there: `crate::api::stow_in`). On error the file is removed.
    /// Until it returns the file is still removed if the future is
    /// dropped, so a client that goes away leaves nothing behind.
    pub async fn persist(mut self) -> io::Result<PathBuf> {
        let synced = match self.inner.as_mut() {
            Some((_, w)) => match w.flush().await {
                // Data on disk before anyone may take it for stored.
                Ok(()) => w.get_ref().sync_all().await,
                Err(e) => Err(e),
            },
            None => Err(io::Error::other("temporary file already closed")),
        };
        if let Err(e) = synced {
            self.abort().await;
            return Err(e);
        }
        match self.inner.take() {
            Some((path, w)) => {
                drop(w);
                Ok(path)
            }
            None => Err(io::Error::other("temporary file already closed")),
        }
    }

    /// Closes and removes the file.
    pub async fn abort(mut self) {
        if let Some((path, w)) = self.inner.take() {
            drop(w);
            let _ = tokio::fs::remove_file(&path).await;
        }
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        // Reached when the request future is dropped mid-part (client gone).
        if let Some((path, w)) = self.inner.take() {
            drop(w);
            let _ = std::fs::remove_file(path);
        }
    }
}

/// How long a temporary file may go unwritten before it counts as left
/// behind. A live request writes its part continuously; one stalled this
/// long has long been cut off by the listener's timeouts.
pub const STALE_PART_AGE: Duration = Duration::from_secs(3600);

/// Removes the `.<random>.part` files in `dir` last modified more than
/// `older_than` ago: what a crash (`kill -9`, power loss) left behind in the
/// middle of a request, which no drop handler could remove. Newer ones may
/// belong to a request in progress (of this process or of another sharing
/// the directory) and are kept. The number removed; a missing directory
/// holds nothing.
pub async fn remove_stale_parts(dir: &Path, older_than: Duration) -> io::Result<usize> {
    let dir = dir.to_owned();
    tokio::task::spawn_blocking(move || remove_stale_parts_blocking(&dir, older_than))
        .await
        .map_err(io::Error::other)?
}

fn remove_stale_parts_blocking(dir: &Path, older_than: Duration) -> io::Result<usize> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let now = SystemTime::now();
    let mut removed = 0;
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if !(name.starts_with('.') && name.ends_with(".part")) {
            continue;
        }
        let Ok(meta) = entry.metadata() else { continue };
        let age = meta
            .modified()
            .ok()
            .and_then(|m| now.duration_since(m).ok())
            .unwrap_or_default();
        if !meta.is_file() || age < older_than {
            continue;
        }
        match fs::remove_file(entry.path()) {
            Ok(()) => removed += 1,
            // Another sweeper (an instance sharing the directory) was first.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(removed)
}

/// The blocking part of [`TempFile::commit`]; the caller removes `tmp`
/// where this did not.
fn commit_blocking(
    file: std::fs::File,
    tmp: &Path,
    dest: &Path,
    overwrite: bool,
) -> io::Result<Committed> {
    // Data first: a name must never point at bytes still in the page cache.
    file.sync_all()?;
    drop(file);
    let dir = dest.parent().unwrap_or(Path::new("."));
    let committed = if overwrite {
        fs::rename(tmp, dest)?;
        Committed::Stored
    } else {
        // link(2) fails with EEXIST instead of replacing: the atomic
        // "create this name unless it exists" that rename(2) lacks.
        match fs::hard_link(tmp, dest) {
            Ok(()) => {
                // Dropped before the directory is synced, so that a crash
                // leaves no second name behind.
                fs::remove_file(tmp)?;
                Committed::Stored
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                if same_content(tmp, dest)? {
                    // What the client is told is stored must be durable,
                    // even if an earlier, interrupted run put it there.
                    fs::File::open(dest)?.sync_all()?;
                    Committed::AlreadyIdentical
                } else {
                    return Ok(Committed::AlreadyDifferent);
                }
            }
            Err(e) => return Err(e),
        }
    };
    // The new name lives in the directory: persist it before anyone is
    // told.
    fs::File::open(dir)?.sync_all()?;
    Ok(committed)
}

/// Whether files `a` and `b` hold the same bytes (sizes first).
fn same_content(a: &Path, b: &Path) -> io::Result<bool> {
    let (mut fa, mut fb) = (fs::File::open(a)?, fs::File::open(b)?);
    if fa.metadata()?.len() != fb.metadata()?.len() {
        return Ok(false);
    }
    let (mut ba, mut bb) = (vec![0u8; COMPARE_BUFFER], vec![0u8; COMPARE_BUFFER]);
    loop {
        let n = read_full(&mut fa, &mut ba)?;
        let m = read_full(&mut fb, &mut bb)?;
        if n != m || ba[..n] != bb[..m] {
            return Ok(false);
        }
        if n == 0 {
            return Ok(true);
        }
    }
}

/// Reads until `buf` is full or the file ends; the bytes read.
fn read_full(f: &mut fs::File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    async fn temp_with(dir: &Path, data: &[u8]) -> TempFile {
        let mut f = TempFile::create(dir).await.unwrap();
        f.write(data).await.unwrap();
        f
    }

    #[tokio::test]
    async fn stale_parts_are_swept_and_live_ones_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let old = dir.join(".00000000000000aa.part");
        std::fs::write(&old, b"left by a crash").unwrap();
        let two_hours_ago = SystemTime::now() - Duration::from_secs(7200);
        std::fs::File::options()
            .write(true)
            .open(&old)
            .unwrap()
            .set_modified(two_hours_ago)
            .unwrap();
        let live = temp_with(dir, b"in progress").await;
        std::fs::write(dir.join("a.dcm"), b"stored").unwrap();
        let removed = remove_stale_parts(dir, STALE_PART_AGE).await.unwrap();
        assert_eq!(removed, 1);
        let left = entries(dir);
        assert_eq!(left.len(), 2, "{left:?}");
        assert!(left.contains(&"a.dcm".to_owned()));
        assert!(!left.contains(&".00000000000000aa.part".to_owned()));
        live.abort().await;
        assert_eq!(
            remove_stale_parts(&dir.join("missing"), STALE_PART_AGE)
                .await
                .unwrap(),
            0
        );
    }

    #[tokio::test]
    async fn commit_abort_drop() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("sub");
        let mut f = TempFile::create(&dir).await.unwrap();
        f.write(b"hello ").await.unwrap();
        f.write(&vec![b'x'; 300_000]).await.unwrap();
        assert_eq!(entries(&dir).len(), 1);
        assert!(entries(&dir)[0].ends_with(".part"));
        let dest = dir.join("a.dcm");
        assert_eq!(f.commit(&dest, false).await.unwrap(), Committed::Stored);
        assert_eq!(entries(&dir), vec!["a.dcm"]);
        assert_eq!(std::fs::read(&dest).unwrap().len(), 300_006);

        let mut f = TempFile::create(&dir).await.unwrap();
        f.write(b"gone").await.unwrap();
        f.abort().await;
        let f = TempFile::create(&dir).await.unwrap();
        drop(f);
        assert_eq!(entries(&dir), vec!["a.dcm"]);
    }

    #[tokio::test]
    async fn persist_hands_the_synced_file_over() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let f = temp_with(dir, &vec![3u8; 300_000]).await;
        let path = f.persist().await.unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), vec![3u8; 300_000]);
        assert_eq!(entries(dir).len(), 1);
        std::fs::remove_file(&path).unwrap();
    }

    #[tokio::test]
    async fn an_existing_instance_is_kept_unless_overwriting() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let dest = dir.join("a.dcm");
        let old = vec![7u8; 600_000];
        temp_with(dir, &old)
            .await
            .commit(&dest, false)
            .await
            .unwrap();

        // The same bytes again: kept, reported as already there.
        let f = temp_with(dir, &old).await;
        assert_eq!(
            f.commit(&dest, false).await.unwrap(),
            Committed::AlreadyIdentical
        );
        // Other bytes (same size, and another size): kept too.
        let mut other = old.clone();
        other[599_999] = 8;
        for data in [other.as_slice(), b"new".as_slice()] {
            let f = temp_with(dir, data).await;
            assert_eq!(
                f.commit(&dest, false).await.unwrap(),
                Committed::AlreadyDifferent
            );
            assert_eq!(std::fs::read(&dest).unwrap(), old);
        }
        assert_eq!(entries(dir), vec!["a.dcm"]);

        // Overwriting replaces it.
        let f = temp_with(dir, b"new").await;
        assert_eq!(f.commit(&dest, true).await.unwrap(), Committed::Stored);
        assert_eq!(std::fs::read(&dest).unwrap(), b"new");
        assert_eq!(entries(dir), vec!["a.dcm"]);
    }
}
