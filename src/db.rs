//! A small async handle around one embedded SQLite database file.
//!
//! SQLite calls block, so every call runs on Tokio's blocking pool and the
//! async runtime never waits on disk. One connection per handle, behind a
//! `std::sync::Mutex`: it is only ever locked inside `spawn_blocking`, never
//! held across an `.await`.

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
    pub async fn open(path: &Path, schema: &'static str) -> Result<Db, DbError> {
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
            conn.execute_batch(
                "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON;",
            )
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
