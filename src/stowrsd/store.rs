//! Writing a received part to a temporary file, renamed into place when
//! the part is complete.

use std::io;
use std::path::{Path, PathBuf};

use tokio::fs::{File, OpenOptions};
use tokio::io::{AsyncWriteExt, BufWriter};

/// Write buffer per part: coalesces the body's small chunks into large
/// blocking writes.
const WRITE_BUFFER: usize = 256 * 1024;

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

    /// Flushes, closes and renames the file to `dest` (replacing it). The
    /// temporary file is removed if that fails.
    pub async fn commit(mut self, dest: &Path) -> io::Result<()> {
        let Some((path, mut w)) = self.inner.take() else {
            return Err(io::Error::other("temporary file already closed"));
        };
        let result = async {
            w.flush().await?;
            drop(w);
            tokio::fs::rename(&path, dest).await
        }
        .await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&path).await;
        }
        result
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

    #[tokio::test]
    async fn commit_abort_drop() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("sub");
        let mut f = TempFile::create(&dir).await.unwrap();
        f.write(b"hello ").await.unwrap();
        f.write(&vec![b'x'; 300_000]).await.unwrap();
        assert_eq!(entries(&dir).len(), 1);
        assert!(entries(&dir)[0].ends_with(".part"));
        f.commit(&dir.join("a.dcm")).await.unwrap();
        assert_eq!(entries(&dir), vec!["a.dcm"]);
        assert_eq!(std::fs::read(dir.join("a.dcm")).unwrap().len(), 300_006);

        // Replaces an existing file.
        let mut f = TempFile::create(&dir).await.unwrap();
        f.write(b"new").await.unwrap();
        f.commit(&dir.join("a.dcm")).await.unwrap();
        assert_eq!(std::fs::read(dir.join("a.dcm")).unwrap(), b"new");

        let mut f = TempFile::create(&dir).await.unwrap();
        f.write(b"gone").await.unwrap();
        f.abort().await;
        let f = TempFile::create(&dir).await.unwrap();
        drop(f);
        assert_eq!(entries(&dir), vec!["a.dcm"]);
    }
}
