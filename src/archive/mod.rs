//! The archive: a storage directory of DICOM files plus an index of them.
//!
//! Layout under the data directory:
//!
//! ```text
//! <data_dir>/archive.sqlite                               the index (embedded)
//! <data_dir>/storage/<StudyUID>/<SeriesUID>/<SOPUID>.dcm  byte-identical copies
//! ```
//!
//! or, with a shared database (`--database`), the index in PostgreSQL and
//! no `archive.sqlite`.
//!
//! [`Archive`] is what the rest of the program uses: import (write side,
//! `import.rs`) and the queries of export, the QIDO-style trigger and the
//! CLI (read side). It holds the storage directory and an
//! [`ArchiveIndex`] (`index.rs`: the seam and its contract): the embedded
//! [`SqliteIndex`] (`sqlite.rs`), or the [`PgIndex`] (`postgres.rs`) that
//! several processes on several hosts share ([`Archive::open_on`]); the
//! index keeps paths relative to the storage directory, so processes may
//! share one storage mounted at different paths. `scan.rs` checks a file's structure before it is
//! parsed. Nothing outside this module touches the index or writes to
//! storage.
//!
//! Files are imported byte for byte (never re-encoded), so what STOW-RS
//! later sends is exactly what was imported. A SOP Instance UID is stored
//! once: re-importing the same bytes is a no-op, and a different object
//! claiming an already stored UID is refused (the first one wins, like
//! Orthanc without `OverwriteInstances`).

mod import;
mod index;
pub mod postgres;
pub(crate) mod scan;
mod sqlite;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::Semaphore;

pub use import::{ImportProgress, ImportReport, NoProgress, PlannedExports, import_paths};
pub use index::{
    ArchiveIndex, Commit, EXPORT_CLAIM, IndexError, InstanceRecord, PendingExport, resolve,
};
pub use postgres::PgIndex;
pub use sqlite::SqliteIndex;

/// How many files are parsed at the same time. Parsing holds the header in
/// memory (bounded by the file size after the pre-scan); two at a time keeps
/// the worst case small while still overlapping parsing with copying.
const PARSE_CONCURRENCY: usize = 2;

/// The directory under storage where receivers write objects before they
/// are stored; hidden, so that no UID path can name it.
const INCOMING: &str = ".incoming";

/// Handle to an open archive; cheap to clone.
#[derive(Clone)]
pub struct Archive {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Archive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Archive")
            .field("storage", &self.inner.storage)
            .finish_non_exhaustive()
    }
}

struct Inner {
    /// The index's storage directory, kept here for import's temp files.
    storage: PathBuf,
    index: Arc<dyn ArchiveIndex>,
    parse_permits: Semaphore,
}

/// One indexed instance.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StoredInstance {
    pub study_iuid: String,
    pub series_iuid: String,
    pub sop_iuid: String,
    pub sop_cuid: String,
    pub transfer_syntax: String,
    pub size: u64,
    /// Absolute path of the stored file, as this process sees it (the
    /// index keeps it relative to the storage directory).
    pub path: PathBuf,
}

/// QIDO-style study filters over the index; all given ones must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StudyQuery {
    /// `PatientID`, exact or with the wildcards `*` and `?`.
    pub patient_id: Option<String>,
    /// `StudyDate` lower bound, `YYYYMMDD`, inclusive.
    pub study_date_from: Option<String>,
    /// `StudyDate` upper bound, `YYYYMMDD`, inclusive.
    pub study_date_to: Option<String>,
    /// `ModalitiesInStudy`: some instance of the study has one of these.
    pub modalities: Vec<String>,
}

/// Outcome of a successful import.
#[derive(Debug, Clone)]
pub enum Imported {
    /// Newly copied into storage and indexed.
    Stored(StoredInstance),
    /// The identical object was stored already; nothing changed.
    AlreadyStored(StoredInstance),
}

impl Imported {
    /// The stored instance, whichever the outcome.
    pub fn instance(&self) -> &StoredInstance {
        match self {
            Imported::Stored(i) | Imported::AlreadyStored(i) => i,
        }
    }
}

/// Errors opening or querying the archive.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("cannot create archive storage {}: {source}", path.display())]
    Storage {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("archive index: {0}")]
    Index(#[from] IndexError),
}

/// Why one file could not be imported. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{}: cannot read: {source}", path.display())]
    Unreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: not a DICOM file: {reason}", path.display())]
    NotDicom { path: PathBuf, reason: String },
    #[error("{}: malformed DICOM file: {reason}", path.display())]
    Malformed { path: PathBuf, reason: String },
    #[error("{}: {reason}", path.display())]
    UnsupportedTransferSyntax { path: PathBuf, reason: String },
    /// A required attribute is absent or empty, e.g.
    /// "StudyInstanceUID (0020,000D) missing".
    #[error("{}: {name} {tag} missing", path.display())]
    MissingAttribute {
        path: PathBuf,
        name: &'static str,
        tag: String,
    },
    /// A UID that is not digits and dots (at most 64 characters); UIDs name
    /// storage paths, so anything else could escape the storage directory.
    #[error("{}: invalid {name} {tag} {value:?}: {reason}", path.display())]
    InvalidUid {
        path: PathBuf,
        name: &'static str,
        tag: String,
        value: String,
        reason: &'static str,
    },
    #[error(
        "{}: SOP Instance UID {sop_iuid} is already stored as a different object ({}); \
         keeping the stored one",
        path.display(),
        stored.display()
    )]
    Conflict {
        path: PathBuf,
        sop_iuid: String,
        stored: PathBuf,
    },
    #[error("{}: cannot store as {}: {source}", path.display(), dest.display())]
    Store {
        path: PathBuf,
        dest: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: archive index: {source}", path.display())]
    Index { path: PathBuf, source: IndexError },
    #[error("{}: import failed: {message}", path.display())]
    Internal { path: PathBuf, message: String },
}

impl ImportError {
    /// The file the error is about.
    pub fn path(&self) -> &Path {
        match self {
            ImportError::Unreadable { path, .. }
            | ImportError::NotDicom { path, .. }
            | ImportError::Malformed { path, .. }
            | ImportError::UnsupportedTransferSyntax { path, .. }
            | ImportError::MissingAttribute { path, .. }
            | ImportError::InvalidUid { path, .. }
            | ImportError::Conflict { path, .. }
            | ImportError::Store { path, .. }
            | ImportError::Index { path, .. }
            | ImportError::Internal { path, .. } => path,
        }
    }
}

impl Archive {
    /// Opens (creating) `<data_dir>/storage/` and `<data_dir>/archive.sqlite`,
    /// the embedded index.
    pub async fn open(data_dir: &Path) -> Result<Archive, ArchiveError> {
        Archive::open_on(data_dir, None).await
    }

    /// Opens (creating) `<data_dir>/storage/` with the shared PostgreSQL
    /// index at `database` (a URL, a secret: errors mask its password)
    /// when given, else as [`Archive::open`] does: several processes on
    /// any host, each with the shared storage mounted as its
    /// `<data_dir>/storage`, then see one archive. No `archive.sqlite` is
    /// created with a database.
    pub async fn open_on(data_dir: &Path, database: Option<&str>) -> Result<Archive, ArchiveError> {
        let storage = data_dir.join("storage");
        tokio::fs::create_dir_all(&storage)
            .await
            .map_err(|source| ArchiveError::Storage {
                path: storage.clone(),
                source,
            })?;
        // StoredInstance paths are absolute, whatever the working directory
        // of later readers.
        let storage =
            tokio::fs::canonicalize(&storage)
                .await
                .map_err(|source| ArchiveError::Storage {
                    path: storage.clone(),
                    source,
                })?;
        let index: Arc<dyn ArchiveIndex> = match database {
            Some(url) => Arc::new(PgIndex::connect(url, storage).await?),
            None => Arc::new(SqliteIndex::open(&data_dir.join("archive.sqlite"), storage).await?),
        };
        Ok(Archive::with_index(index))
    }

    /// An archive over `index`, storing into the index's storage directory
    /// (which must exist): how another index backend is plugged in.
    pub fn with_index(index: Arc<dyn ArchiveIndex>) -> Archive {
        Archive {
            inner: Arc::new(Inner {
                storage: index.storage_dir().to_path_buf(),
                index,
                parse_permits: Semaphore::new(PARSE_CONCURRENCY),
            }),
        }
    }

    /// The absolute storage directory.
    pub fn storage_dir(&self) -> &Path {
        &self.inner.storage
    }

    /// Imports one file: checks and parses its header up to Pixel Data off
    /// the async runtime, copies it byte for byte into storage
    /// (`storage/<StudyUID>/<SeriesUID>/<SOPInstanceUID>.dcm`, via a temp
    /// file and a rename) and indexes it.
    pub async fn import_file(&self, path: &Path) -> Result<Imported, ImportError> {
        import::import_file(self, path).await
    }

    /// Where a receiver writes an object before [`Archive::store_received`]
    /// (inside storage, so that storing it is a rename). Created on demand.
    pub fn incoming_dir(&self) -> PathBuf {
        self.inner.storage.join(INCOMING)
    }

    /// Stores a received object: `tmp`, a complete and fsynced Part-10 file
    /// in [`Archive::incoming_dir`], is checked and parsed as an import is,
    /// renamed into place and indexed, together with the exports `plan`
    /// decides from its header, as one step: a stored object never lacks
    /// the exports its rules asked for. `tmp` is gone afterwards, whatever
    /// the outcome. The identical object stored before is
    /// [`Imported::AlreadyStored`] (then only `plan`'s `when_again` exports
    /// are recorded); a different one under the same SOP Instance UID is
    /// [`ImportError::Conflict`].
    pub async fn store_received<P>(&self, tmp: PathBuf, plan: P) -> Result<Imported, ImportError>
    where
        P: FnOnce(&dicom_object::DefaultDicomObject, &InstanceRecord) -> PlannedExports
            + Send
            + 'static,
    {
        import::store_received(self, tmp, plan).await
    }

    /// The Study Instance UID of `path`, a received object not stored yet,
    /// read as [`Archive::store_received`] would read it (pre-scan, header
    /// up to Pixel Data, UID checks; the same errors), for a receiver that
    /// must refuse an object of another study before storing it. Leaves
    /// `path` where it is, whatever the outcome.
    pub async fn received_study(&self, path: &Path) -> Result<String, ImportError> {
        import::received_study(self, path).await
    }

    /// Pending exports due at `now` (at most `limit`), claimed for
    /// [`EXPORT_CLAIM`]; see [`ArchiveIndex::due_exports`].
    pub async fn due_exports(
        &self,
        now: chrono::DateTime<chrono::Utc>,
        limit: usize,
    ) -> Result<Vec<PendingExport>, ArchiveError> {
        Ok(self.inner.index.due_exports(now, limit).await?)
    }

    /// Records pending exports, or pushes an existing one's due time back
    /// (see [`ArchiveIndex::add_exports`]).
    pub async fn add_exports(&self, exports: Vec<PendingExport>) -> Result<(), ArchiveError> {
        Ok(self.inner.index.add_exports(exports).await?)
    }

    /// Removes a pending export whose task was queued; see
    /// [`ArchiveIndex::finish_export`].
    pub async fn finish_export(&self, export: &PendingExport) -> Result<(), ArchiveError> {
        Ok(self.inner.index.finish_export(export).await?)
    }

    /// When the next pending export is due, if any.
    pub async fn next_export_due(
        &self,
    ) -> Result<Option<chrono::DateTime<chrono::Utc>>, ArchiveError> {
        Ok(self.inner.index.next_export_due().await?)
    }

    /// Instances of `study`, optionally narrowed to a series and an
    /// instance, ordered by series UID, then instance number (missing last),
    /// then SOP Instance UID.
    pub async fn find(
        &self,
        study: &str,
        series: Option<&str>,
        instance: Option<&str>,
    ) -> Result<Vec<StoredInstance>, ArchiveError> {
        Ok(self.inner.index.find(study, series, instance).await?)
    }

    /// A page of [`Archive::find`]'s matches, in (series UID, SOP Instance
    /// UID) order, after `after` = (series UID, SOP Instance UID) of the
    /// previous page's last instance.
    pub async fn find_page(
        &self,
        study: &str,
        series: Option<&str>,
        instance: Option<&str>,
        after: Option<(&str, &str)>,
        limit: usize,
    ) -> Result<Vec<StoredInstance>, ArchiveError> {
        Ok(self
            .inner
            .index
            .find_page(study, series, instance, after, limit)
            .await?)
    }

    /// Study Instance UIDs of the indexed studies matching `q` (QIDO-style
    /// study filters), in UID order.
    pub async fn find_studies(&self, q: StudyQuery) -> Result<Vec<String>, ArchiveError> {
        Ok(self.inner.index.find_studies(q).await?)
    }

    /// Number of indexed instances.
    pub async fn count(&self) -> Result<u64, ArchiveError> {
        Ok(self.inner.index.count().await?)
    }
}

#[cfg(test)]
mod tests;
