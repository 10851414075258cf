//! A small async handle around one embedded SQLite database file.
//!
//! SQLite calls block, so every call runs on Tokio's blocking pool and the
//! async runtime never waits on disk. One connection per handle, behind a
//! `std::sync::Mutex`: it is only ever locked inside `spawn_blocking`, never
//! held across an `.await`. A commit returns only once it is on disk
//! ([`Synchronous::Full`]) unless a caller relaxes that.
//!
//! Owns the connection and its threading; schemas and queries are the
//! callers' ([`crate::archive`], [`crate::queue`]).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::Connection;

/// Errors of the embedded database layer, with the file they concern.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("cannot open database {path}: {source}")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("database {path}: {source}")]
    Sqlite {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("database {path}: background task failed: {message}")]
    Join { path: PathBuf, message: String },
}

/// When SQLite waits for the disk (`PRAGMA synchronous`), in WAL mode.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Synchronous {
    /// The WAL is fsynced at every commit: a committed transaction (a
    /// recorded outcome, an acknowledged import) survives an OS crash or a
    /// power loss.
    #[default]
    Full,
    /// The WAL is fsynced only at checkpoints: an OS crash or power loss
    /// may lose the last commits; a crash of the process alone loses
    /// nothing. Faster when every task is small.
    Normal,
}

impl Synchronous {
    /// The `PRAGMA synchronous` value.
    fn pragma(self) -> &'static str {
        match self {
            Synchronous::Full => "FULL",
            Synchronous::Normal => "NORMAL",
        }
    }
}

/// A `--sqlite-synchronous` value that is neither `full` nor `normal`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a synchronous level: use full or normal")]
pub struct UnknownSynchronous(String);

impl std::str::FromStr for Synchronous {
    type Err = UnknownSynchronous;
    fn from_str(s: &str) -> Result<Synchronous, UnknownSynchronous> {
        match s.to_ascii_lowercase().as_str() {
            "full" => Ok(Synchronous::Full),
            "normal" => Ok(Synchronous::Normal),
            _ => Err(UnknownSynchronous(s.to_string())),
        }
    }
}

impl std::fmt::Display for Synchronous {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.pragma().to_ascii_lowercase())
    }
}

/// A cheap-clone handle to one SQLite file.
#[derive(Clone)]
pub struct Db {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    conn: Mutex<Connection>,
}

impl Db {
    /// Opens (creating if needed) the database at `path` and applies
    /// `schema`, a batch of idempotent `CREATE ... IF NOT EXISTS` statements.
    /// Commits are durable ([`Synchronous::Full`]).
    pub async fn open(path: &Path, schema: &'static str) -> Result<Db, DbError> {
        Db::open_with(path, schema, Synchronous::Full).await
    }

    /// [`Db::open`] with the given `PRAGMA synchronous` level.
    pub async fn open_with(
        path: &Path,
        schema: &'static str,
        synchronous: Synchronous,
    ) -> Result<Db, DbError> {
        let path = path.to_path_buf();
        let p = path.clone();
        let conn = tokio::task::spawn_blocking(move || -> Result<Connection, DbError> {
            let open_err = |source| DbError::Open {
                path: p.clone(),
                source,
            };
            let conn = Connection::open(&p).map_err(open_err)?;
            // WAL lets the CLI (`export`, `import`) write while `serve` reads;
            // the busy timeout makes the two processes wait for each other
            // instead of failing with SQLITE_BUSY.
            conn.busy_timeout(Duration::from_secs(30))
                .map_err(open_err)?;
            // With WAL, FULL fsyncs the log at each commit (one fsync per
            // transaction, which is why writers batch their rows), so what
            // a caller acknowledged after a commit survives a power loss.
            conn.execute_batch(&format!(
                "PRAGMA journal_mode=WAL; PRAGMA synchronous={}; PRAGMA foreign_keys=ON;",
                synchronous.pragma()
            ))
            .map_err(open_err)?;
            conn.execute_batch(schema).map_err(open_err)?;
            Ok(conn)
        })
        .await
        .map_err(|e| DbError::Join {
            path: path.clone(),
            message: e.to_string(),
        })??;
        Ok(Db {
            inner: Arc::new(Inner {
                path,
                conn: Mutex::new(conn),
            }),
        })
    }

    /// The file this handle writes to.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Runs `f` with the connection on the blocking pool.
    pub async fn call<F, R>(&self, f: F) -> Result<R, DbError>
    where
        F: FnOnce(&mut Connection) -> rusqlite::Result<R> + Send + 'static,
        R: Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            // A poisoned lock only means another call panicked mid-way;
            // SQLite's own transactions keep the file consistent.
            let mut conn = inner.conn.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut conn).map_err(|source| DbError::Sqlite {
                path: inner.path.clone(),
                source,
            })
        })
        .await
        .map_err(|e| DbError::Join {
            path: self.inner.path.clone(),
            message: e.to_string(),
        })?
    }
}
