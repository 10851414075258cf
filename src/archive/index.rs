//! The archive index seam: [`ArchiveIndex`], everything the program asks
//! of the index of stored instances, and what goes in and out of it
//! ([`InstanceRecord`], [`Commit`], [`IndexError`]).
//!
//! Owns the contract every index keeps (below, on the trait). Must not
//! touch the content of stored files: copying, comparing and fsyncing
//! them is [`super::import`]'s; an index only renames a finished temp file
//! into place inside its commit. The SQLite index ([`super::SqliteIndex`],
//! embedded) and the PostgreSQL index ([`super::PgIndex`], shared by
//! several processes) implement it; `tests/archive_index.rs` is the
//! behaviour suite every implementation passes.

use std::io;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;

use super::{StoredInstance, StudyQuery};
use crate::db::DbError;

/// Everything indexed about one instance, as read from its header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceRecord {
    pub study_iuid: String,
    pub series_iuid: String,
    pub sop_iuid: String,
    pub sop_cuid: String,
    pub transfer_syntax: String,
    pub size: u64,
    /// Where the file goes, relative to the storage directory and
    /// `/`-separated (`<StudyUID>/<SeriesUID>/<SOPUID>.dcm`, of UIDs import
    /// checked to be digits and dots, so it cannot leave the storage
    /// directory); this, never an absolute path, is what the index keeps.
    pub rel_path: String,
    pub patient_id: Option<String>,
    /// `StudyDate`, `YYYYMMDD`.
    pub study_date: Option<String>,
    pub modality: Option<String>,
    pub accession_number: Option<String>,
    pub series_number: Option<i64>,
    pub instance_number: Option<i64>,
}

/// An export an export rule asked for when an instance was stored: one
/// task of `exporter_id` for the entity (a study, or a series or instance
/// of it), due at `due`. Recorded in the same transaction as the
/// instance, so no stored object is left without its export; a later
/// instance of the same entity and exporter pushes the due time back
/// instead of adding a second one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingExport {
    pub exporter_id: String,
    /// The `cn` of the rule that matched last.
    pub rule: String,
    pub study_iuid: String,
    /// For a Series or Instance rule.
    pub series_iuid: Option<String>,
    /// For an Instance rule.
    pub sop_iuid: Option<String>,
    pub due: DateTime<Utc>,
}

/// How long a pending export handed out by [`ArchiveIndex::due_exports`]
/// stays claimed: another process sharing the index hands it out again
/// after that (its claimer died before it queued the task).
pub const EXPORT_CLAIM: std::time::Duration = std::time::Duration::from_secs(60);

/// What [`ArchiveIndex::commit`] did.
#[derive(Debug)]
pub enum Commit {
    /// The temp file was renamed into place and the row written.
    Stored(StoredInstance),
    /// The SOP Instance UID is indexed already, as this instance; nothing
    /// changed and the temp file is left where it was, for the caller to
    /// compare with the stored copy and remove.
    Existing(StoredInstance),
    /// Renaming the temp file failed; nothing was indexed and the temp
    /// file is the caller's to remove.
    RenameFailed(io::Error),
}

/// Errors of an index backend, with the database they concern.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// The embedded SQLite index.
    #[error(transparent)]
    Sqlite(#[from] DbError),
    /// The PostgreSQL index failed (a malformed URL, an unreachable
    /// server, a failed statement).
    #[error("archive index {database}: {context}: {source}")]
    Postgres {
        /// Its URL, password masked.
        database: String,
        /// What the index was doing.
        context: &'static str,
        #[source]
        source: tokio_postgres::Error,
    },
    /// The PostgreSQL index's connection pool failed other than by a
    /// driver error (it was closed, or could not be built).
    #[error("archive index {database}: connection pool: {source}")]
    PostgresPool {
        /// Its URL, password masked.
        database: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The index's schema was migrated by a newer version of
    /// stow-exporter: this one refuses it rather than write rows the newer
    /// one cannot read.
    #[error(
        "archive index {database} has schema version {found}, newer than version {supported} \
         that this stow-exporter knows: run the newer stow-exporter, or use another database"
    )]
    SchemaTooNew {
        /// The URL, password masked.
        database: String,
        /// The version found in it.
        found: i64,
        /// The newest version this code knows.
        supported: i64,
    },
}

/// The index of the instances in one storage directory.
///
/// An index is opened for a storage directory, the absolute path at which
/// this process sees it; several processes (with a shared index) may see
/// the same storage at different paths.
///
/// # Contract
///
/// - **Relative paths.** The index keeps each file's path relative to the
///   storage directory ([`InstanceRecord::rel_path`]) and hands out
///   [`StoredInstance::path`] resolved against its own storage directory
///   ([`resolve`]); a row written with an absolute path (older versions
///   did not, but a copied database might hold one) is handed out as it is.
/// - **Once per SOP Instance UID.** [`ArchiveIndex::commit`] claims the
///   UID, renames the temp file to its place and writes the row as one
///   step: of concurrent commits of the same UID (from this process or any
///   other sharing the index) exactly one returns [`Commit::Stored`], the
///   others [`Commit::Existing`] with the winner's instance, and a stored
///   file is never replaced by a later commit. The one exception is a row
///   whose file is missing from storage: a commit of the same study and
///   series puts the new file in its place ([`Commit::Stored`]).
/// - **Durability.** A commit that returned [`Commit::Stored`] is committed
///   (and on disk where the backend was opened durable) and its file has
///   its name; fsyncing the directory that holds the name is the caller's
///   (see `archive/import.rs`). Any other outcome, or an `Err`, indexed
///   nothing. When the row cannot be committed after the rename, the file
///   stays in place without a row; the next commit of that UID renames over
///   it.
/// - **Ordering.** [`ArchiveIndex::find`] orders by series UID, then
///   instance number (missing last), then SOP Instance UID;
///   [`ArchiveIndex::find_page`] by (series UID, SOP Instance UID), so that
///   a page can start after the previous one; [`ArchiveIndex::find_studies`]
///   by Study Instance UID.
/// - **No blocking.** The futures never block the async runtime: a backend
///   with blocking calls (SQLite, the rename) runs them off it.
pub trait ArchiveIndex: Send + Sync {
    /// The absolute storage directory paths are resolved against.
    fn storage_dir(&self) -> &Path;

    /// The indexed instance with this SOP Instance UID, if any.
    fn get<'a>(
        &'a self,
        sop_iuid: &'a str,
    ) -> BoxFuture<'a, Result<Option<StoredInstance>, IndexError>>;

    /// Claims `rec.sop_iuid`, renames `tmp` (a finished, fsynced file in
    /// the directory of its destination) to `rec.rel_path` under the storage
    /// directory and writes the row, as one step; see the contract.
    fn commit(
        &self,
        rec: InstanceRecord,
        tmp: PathBuf,
    ) -> BoxFuture<'_, Result<Commit, IndexError>> {
        self.commit_with_exports(rec, tmp, Vec::new())
    }

    /// As [`ArchiveIndex::commit`], recording `exports` in the same
    /// transaction when (and only when) it returns [`Commit::Stored`].
    fn commit_with_exports(
        &self,
        rec: InstanceRecord,
        tmp: PathBuf,
        exports: Vec<PendingExport>,
    ) -> BoxFuture<'_, Result<Commit, IndexError>>;

    /// Records `exports` (or pushes back the due time of the pending
    /// export of the same exporter and entity to the later of the two).
    fn add_exports(&self, exports: Vec<PendingExport>) -> BoxFuture<'_, Result<(), IndexError>>;

    /// At most `limit` pending exports due at `now`, oldest first, claimed
    /// for [`EXPORT_CLAIM`] so that no other process hands them out
    /// meanwhile.
    fn due_exports(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<PendingExport>, IndexError>>;

    /// Removes a pending export whose task was queued, unless it was
    /// pushed back since it was handed out (`export.due` is no longer its
    /// due time): then it stays, for a second task with the newer instances.
    fn finish_export<'a>(
        &'a self,
        export: &'a PendingExport,
    ) -> BoxFuture<'a, Result<(), IndexError>>;

    /// The earliest due time of the pending exports not claimed now, if
    /// any.
    fn next_export_due(&self) -> BoxFuture<'_, Result<Option<DateTime<Utc>>, IndexError>>;

    /// Instances of `study`, optionally narrowed to a series and an
    /// instance (each must match; no series with an instance means any
    /// series).
    fn find<'a>(
        &'a self,
        study: &'a str,
        series: Option<&'a str>,
        instance: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<StoredInstance>, IndexError>>;

    /// At most `limit` of [`ArchiveIndex::find`]'s matches in (series UID,
    /// SOP Instance UID) order, after `after` = (series UID, SOP Instance
    /// UID) of the previous page's last instance: an export walks a study of
    /// any size in bounded memory.
    fn find_page<'a>(
        &'a self,
        study: &'a str,
        series: Option<&'a str>,
        instance: Option<&'a str>,
        after: Option<(&'a str, &'a str)>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<StoredInstance>, IndexError>>;

    /// Study Instance UIDs of the studies matching `q`, each once, in UID
    /// order. A study matches when one of its instances matches
    /// `patient_id` (exact, or with `*` matching any run and `?` one
    /// character; every other character literal, case-sensitive) and both
    /// date bounds (inclusive; an instance without `StudyDate` or
    /// `PatientID` matches no bound on it), and, given `modalities`, some
    /// instance of the study (not necessarily the same) has one of them.
    fn find_studies(&self, q: StudyQuery) -> BoxFuture<'_, Result<Vec<String>, IndexError>>;

    /// Number of indexed instances.
    fn count(&self) -> BoxFuture<'_, Result<u64, IndexError>>;
}

/// Where a stored path points, seen from `storage`: a relative path (what
/// an index keeps) under it, an absolute one as it is.
pub fn resolve(storage: &Path, stored: &str) -> PathBuf {
    let p = Path::new(stored);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        // Kept '/'-separated so that it means the same on every host.
        storage.join(stored.split('/').collect::<PathBuf>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_relative_and_keeps_absolute() {
        let storage = Path::new("/mnt/a/storage");
        assert_eq!(
            resolve(storage, "1.2/3.4/5.6.dcm"),
            PathBuf::from("/mnt/a/storage/1.2/3.4/5.6.dcm")
        );
        assert_eq!(
            resolve(storage, "/old/storage/1.2/3.4/5.6.dcm"),
            PathBuf::from("/old/storage/1.2/3.4/5.6.dcm")
        );
    }
}
