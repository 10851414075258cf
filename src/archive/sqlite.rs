//! The SQLite index of stored instances: [`SqliteIndex`], the
//! [`ArchiveIndex`] of the embedded archive (`<data_dir>/archive.sqlite`).
//!
//! One denormalised `instance` table: the exporter always selects instances
//! by study (optionally narrowed to series/instance), so the hierarchy needs
//! no tables of its own; the study/series columns are indexed instead.
//!
//! Owns the table and its queries, and the rename inside a commit (under
//! the table's write lock, which is what makes a SOP Instance UID stored
//! once). Must not touch file content: copying and fsyncing are
//! [`super::import`]'s. Every SQLite call and the rename run on the
//! blocking pool ([`Db::call`]).

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use rusqlite::{OptionalExtension, Row, TransactionBehavior, params};

use super::index::{
    ArchiveIndex, Commit, EXPORT_CLAIM, IndexError, InstanceRecord, PendingExport, resolve,
};
use super::{StoredInstance, StudyQuery};
use crate::db::{Db, DbError};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS instance (
    sop_iuid         TEXT PRIMARY KEY NOT NULL,
    study_iuid       TEXT NOT NULL,
    series_iuid      TEXT NOT NULL,
    sop_cuid         TEXT NOT NULL,
    transfer_syntax  TEXT NOT NULL,
    size             INTEGER NOT NULL,
    -- relative to the storage directory, '/'-separated
    path             TEXT NOT NULL,
    patient_id       TEXT,
    study_date       TEXT,
    modality         TEXT,
    accession_number TEXT,
    series_number    INTEGER,
    instance_number  INTEGER,
    -- RFC 3339, UTC
    imported_at      TEXT NOT NULL
) STRICT;
CREATE INDEX IF NOT EXISTS instance_study ON instance (study_iuid, series_iuid);
CREATE INDEX IF NOT EXISTS instance_page ON instance (study_iuid, series_iuid, sop_iuid);
CREATE INDEX IF NOT EXISTS instance_series ON instance (series_iuid);
CREATE INDEX IF NOT EXISTS instance_patient ON instance (patient_id);
-- Exports asked for by export rules, written with the instance that
-- matched: one per exporter and entity (series/sop '' when the rule's
-- entity is wider); 'due' and 'claimed_until' RFC 3339 UTC in
-- milliseconds, so that text order is time order.
CREATE TABLE IF NOT EXISTS export_pending (
    exporter_id   TEXT NOT NULL,
    study_iuid    TEXT NOT NULL,
    series_iuid   TEXT NOT NULL,
    sop_iuid      TEXT NOT NULL,
    rule          TEXT NOT NULL,
    due           TEXT NOT NULL,
    claimed_until TEXT,
    PRIMARY KEY (exporter_id, study_iuid, series_iuid, sop_iuid)
) STRICT;
CREATE INDEX IF NOT EXISTS export_pending_due ON export_pending (due);
";

fn stamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Upserts `exports` inside `tx`: a pending export of the same exporter
/// and entity keeps the later due time and is unclaimed.
fn upsert_exports(
    tx: &rusqlite::Transaction<'_>,
    exports: &[PendingExport],
) -> rusqlite::Result<()> {
    let mut st = tx.prepare_cached(
        "INSERT INTO export_pending (exporter_id, study_iuid, series_iuid, sop_iuid, rule, due)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (exporter_id, study_iuid, series_iuid, sop_iuid) DO UPDATE SET
            due = max(due, excluded.due), rule = excluded.rule, claimed_until = NULL",
    )?;
    for x in exports {
        st.execute(params![
            x.exporter_id,
            x.study_iuid,
            x.series_iuid.as_deref().unwrap_or(""),
            x.sop_iuid.as_deref().unwrap_or(""),
            x.rule,
            stamp(x.due),
        ])?;
    }
    Ok(())
}

fn parse_stamp(s: &str) -> DateTime<Utc> {
    // Written by `stamp` only; a hand-edited row that does not parse is
    // due now rather than never.
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_else(|_| Utc::now())
}

const COLUMNS: &str = "study_iuid, series_iuid, sop_iuid, sop_cuid, transfer_syntax, size, path";

/// The archive index in an embedded SQLite database; cheap to clone.
#[derive(Clone)]
pub struct SqliteIndex {
    db: Db,
    storage: PathBuf,
}

impl SqliteIndex {
    /// Opens (creating) the index database `db_path` for the absolute
    /// storage directory `storage`. Commits are durable
    /// ([`crate::db::Synchronous::Full`]): an import is acknowledged only
    /// once its row is on disk.
    pub async fn open(db_path: &Path, storage: PathBuf) -> Result<SqliteIndex, IndexError> {
        let db = Db::open(db_path, SCHEMA).await?;
        Ok(SqliteIndex { db, storage })
    }

    async fn get_row(&self, sop_iuid: &str) -> Result<Option<StoredInstance>, DbError> {
        let storage = self.storage.clone();
        let sop = sop_iuid.to_string();
        self.db.call(move |conn| get(conn, &storage, &sop)).await
    }

    /// See [`ArchiveIndex::commit`].
    ///
    /// The check, rename and insert run in one IMMEDIATE transaction, so a
    /// concurrent import of the same SOP Instance UID (from this process or
    /// another one sharing the file) cannot overwrite the first stored copy.
    /// A row whose file has vanished from storage is repaired in place when
    /// the new object belongs to the same study and series.
    async fn commit_row(
        &self,
        rec: InstanceRecord,
        tmp: PathBuf,
        exports: Vec<PendingExport>,
    ) -> Result<Commit, DbError> {
        let storage = self.storage.clone();
        let imported_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        self.db
            .call(move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let existing = get(&tx, &storage, &rec.sop_iuid)?;
                let repair = match existing {
                    None => false,
                    Some(found)
                        if !found.path.exists()
                            && found.study_iuid == rec.study_iuid
                            && found.series_iuid == rec.series_iuid =>
                    {
                        tracing::warn!(
                            sop_iuid = %rec.sop_iuid,
                            path = %found.path.display(),
                            "stored file missing; restoring it from the new import"
                        );
                        true
                    }
                    Some(found) => return Ok(Commit::Existing(found)),
                };
                let dest = resolve(&storage, &rec.rel_path);
                if let Err(e) = std::fs::rename(&tmp, &dest) {
                    // dropping `tx` rolls back
                    return Ok(Commit::RenameFailed(e));
                }
                let size = i64::try_from(rec.size).unwrap_or(i64::MAX);
                if repair {
                    tx.execute("DELETE FROM instance WHERE sop_iuid = ?1", [&rec.sop_iuid])?;
                }
                tx.execute(
                    "INSERT INTO instance (study_iuid, series_iuid, sop_iuid, sop_cuid,
                        transfer_syntax, size, path, patient_id, study_date, modality,
                        accession_number, series_number, instance_number, imported_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
                    params![
                        rec.study_iuid,
                        rec.series_iuid,
                        rec.sop_iuid,
                        rec.sop_cuid,
                        rec.transfer_syntax,
                        size,
                        rec.rel_path,
                        rec.patient_id,
                        rec.study_date,
                        rec.modality,
                        rec.accession_number,
                        rec.series_number,
                        rec.instance_number,
                        imported_at,
                    ],
                )?;
                upsert_exports(&tx, &exports)?;
                tx.commit()?;
                Ok(Commit::Stored(StoredInstance {
                    study_iuid: rec.study_iuid,
                    series_iuid: rec.series_iuid,
                    sop_iuid: rec.sop_iuid,
                    sop_cuid: rec.sop_cuid,
                    transfer_syntax: rec.transfer_syntax,
                    size: rec.size,
                    path: dest,
                }))
            })
            .await
    }

    async fn find_rows(
        &self,
        study: &str,
        series: Option<&str>,
        instance: Option<&str>,
    ) -> Result<Vec<StoredInstance>, DbError> {
        let storage = self.storage.clone();
        let (study, series, instance) = (
            study.to_string(),
            series.map(str::to_string),
            instance.map(str::to_string),
        );
        self.db
            .call(move |conn| {
                let mut stmt = conn.prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM instance
                     WHERE study_iuid = ?1
                       AND (?2 IS NULL OR series_iuid = ?2)
                       AND (?3 IS NULL OR sop_iuid = ?3)
                     ORDER BY series_iuid, instance_number IS NULL, instance_number, sop_iuid"
                ))?;
                let rows = stmt.query_map(params![study, series, instance], |row| {
                    from_row(row, &storage)
                })?;
                rows.collect()
            })
            .await
    }

    async fn find_page_rows(
        &self,
        study: &str,
        series: Option<&str>,
        instance: Option<&str>,
        after: Option<(&str, &str)>,
        limit: usize,
    ) -> Result<Vec<StoredInstance>, DbError> {
        let storage = self.storage.clone();
        let (study, series, instance) = (
            study.to_string(),
            series.map(str::to_string),
            instance.map(str::to_string),
        );
        let (after_series, after_sop) = match after {
            Some((se, so)) => (Some(se.to_string()), Some(so.to_string())),
            None => (None, None),
        };
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.db
            .call(move |conn| {
                let mut stmt = conn.prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM instance
                     WHERE study_iuid = ?1
                       AND (?2 IS NULL OR series_iuid = ?2)
                       AND (?3 IS NULL OR sop_iuid = ?3)
                       AND (?4 IS NULL OR (series_iuid, sop_iuid) > (?4, ?5))
                     ORDER BY series_iuid, sop_iuid
                     LIMIT ?6"
                ))?;
                let rows = stmt.query_map(
                    params![study, series, instance, after_series, after_sop, limit],
                    |row| from_row(row, &storage),
                )?;
                rows.collect()
            })
            .await
    }

    async fn find_study_uids(&self, q: StudyQuery) -> Result<Vec<String>, DbError> {
        self.db
            .call(move |conn| {
                let mut sql =
                    String::from("SELECT DISTINCT study_iuid FROM instance AS i WHERE 1=1");
                let mut args: Vec<String> = Vec::new();
                if let Some(p) = q.patient_id {
                    // GLOB's `*` and `?` are QIDO's wildcards; its `[` would
                    // open a character class, so it is matched literally.
                    // Escaping only for GLOB: with `=` the escape would be
                    // compared as written and an ID with `[` never match.
                    let op = if p.contains(['*', '?']) {
                        args.push(p.replace('[', "[[]"));
                        "GLOB"
                    } else {
                        args.push(p);
                        "="
                    };
                    sql.push_str(&format!(" AND patient_id {op} ?{}", args.len()));
                }
                if let Some(from) = q.study_date_from {
                    args.push(from);
                    sql.push_str(&format!(" AND study_date >= ?{}", args.len()));
                }
                if let Some(to) = q.study_date_to {
                    args.push(to);
                    sql.push_str(&format!(" AND study_date <= ?{}", args.len()));
                }
                if !q.modalities.is_empty() {
                    // Any instance of the study has one of the modalities.
                    let mut marks = Vec::new();
                    for m in q.modalities {
                        args.push(m);
                        marks.push(format!("?{}", args.len()));
                    }
                    sql.push_str(&format!(
                        " AND EXISTS (SELECT 1 FROM instance AS m WHERE m.study_iuid = i.study_iuid
                            AND m.modality IN ({}))",
                        marks.join(", ")
                    ));
                }
                sql.push_str(" ORDER BY study_iuid");
                let mut stmt = conn.prepare(&sql)?;
                let rows = stmt.query_map(rusqlite::params_from_iter(args.iter()), |r| r.get(0))?;
                rows.collect()
            })
            .await
    }

    async fn count_rows(&self) -> Result<u64, DbError> {
        self.db
            .call(|conn| {
                conn.query_row("SELECT COUNT(*) FROM instance", [], |row| {
                    row.get::<_, i64>(0)
                })
            })
            .await
            .map(|n| u64::try_from(n).unwrap_or(0))
    }
}

impl ArchiveIndex for SqliteIndex {
    fn storage_dir(&self) -> &Path {
        &self.storage
    }

    fn get<'a>(
        &'a self,
        sop_iuid: &'a str,
    ) -> BoxFuture<'a, Result<Option<StoredInstance>, IndexError>> {
        async move { Ok(self.get_row(sop_iuid).await?) }.boxed()
    }

    fn commit_with_exports(
        &self,
        rec: InstanceRecord,
        tmp: PathBuf,
        exports: Vec<PendingExport>,
    ) -> BoxFuture<'_, Result<Commit, IndexError>> {
        async move { Ok(self.commit_row(rec, tmp, exports).await?) }.boxed()
    }

    fn add_exports(&self, exports: Vec<PendingExport>) -> BoxFuture<'_, Result<(), IndexError>> {
        async move {
            self.db
                .call(move |conn| {
                    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                    upsert_exports(&tx, &exports)?;
                    tx.commit()?;
                    Ok(())
                })
                .await?;
            Ok(())
        }
        .boxed()
    }

    fn due_exports(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<PendingExport>, IndexError>> {
        async move {
            let until = now + EXPORT_CLAIM;
            let rows = self
                .db
                .call(move |conn| {
                    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                    let now = stamp(now);
                    let rows = {
                        let mut st = tx.prepare_cached(
                            "SELECT exporter_id, study_iuid, series_iuid, sop_iuid, rule, due
                             FROM export_pending
                             WHERE due <= ?1 AND (claimed_until IS NULL OR claimed_until < ?1)
                             ORDER BY due LIMIT ?2",
                        )?;
                        st.query_map(
                            params![now, i64::try_from(limit).unwrap_or(i64::MAX)],
                            |r| {
                                let opt = |s: String| (!s.is_empty()).then_some(s);
                                Ok(PendingExport {
                                    exporter_id: r.get(0)?,
                                    study_iuid: r.get(1)?,
                                    series_iuid: opt(r.get(2)?),
                                    sop_iuid: opt(r.get(3)?),
                                    rule: r.get(4)?,
                                    due: parse_stamp(&r.get::<_, String>(5)?),
                                })
                            },
                        )?
                        .collect::<rusqlite::Result<Vec<_>>>()?
                    };
                    {
                        let mut st = tx.prepare_cached(
                            "UPDATE export_pending SET claimed_until = ?5
                             WHERE exporter_id = ?1 AND study_iuid = ?2 AND series_iuid = ?3
                               AND sop_iuid = ?4",
                        )?;
                        for x in &rows {
                            st.execute(params![
                                x.exporter_id,
                                x.study_iuid,
                                x.series_iuid.as_deref().unwrap_or(""),
                                x.sop_iuid.as_deref().unwrap_or(""),
                                stamp(until),
                            ])?;
                        }
                    }
                    tx.commit()?;
                    Ok(rows)
                })
                .await?;
            Ok(rows)
        }
        .boxed()
    }

    fn finish_export<'a>(
        &'a self,
        export: &'a PendingExport,
    ) -> BoxFuture<'a, Result<(), IndexError>> {
        async move {
            let x = export.clone();
            self.db
                .call(move |conn| {
                    conn.prepare_cached(
                        "DELETE FROM export_pending
                         WHERE exporter_id = ?1 AND study_iuid = ?2 AND series_iuid = ?3
                           AND sop_iuid = ?4 AND due = ?5",
                    )?
                    .execute(params![
                        x.exporter_id,
                        x.study_iuid,
                        x.series_iuid.as_deref().unwrap_or(""),
                        x.sop_iuid.as_deref().unwrap_or(""),
                        stamp(x.due),
                    ])?;
                    Ok(())
                })
                .await?;
            Ok(())
        }
        .boxed()
    }

    fn next_export_due(&self) -> BoxFuture<'_, Result<Option<DateTime<Utc>>, IndexError>> {
        async move {
            let now = stamp(Utc::now());
            let due: Option<String> = self
                .db
                .call(move |conn| {
                    conn.query_row(
                        "SELECT MIN(due) FROM export_pending
                         WHERE claimed_until IS NULL OR claimed_until < ?1",
                        [now],
                        |r| r.get(0),
                    )
                })
                .await?;
            Ok(due.as_deref().map(parse_stamp))
        }
        .boxed()
    }

    fn find<'a>(
        &'a self,
        study: &'a str,
        series: Option<&'a str>,
        instance: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<StoredInstance>, IndexError>> {
        async move { Ok(self.find_rows(study, series, instance).await?) }.boxed()
    }

    fn find_page<'a>(
        &'a self,
        study: &'a str,
        series: Option<&'a str>,
        instance: Option<&'a str>,
        after: Option<(&'a str, &'a str)>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<StoredInstance>, IndexError>> {
        async move {
            Ok(self
                .find_page_rows(study, series, instance, after, limit)
                .await?)
        }
        .boxed()
    }

    fn find_studies(&self, q: StudyQuery) -> BoxFuture<'_, Result<Vec<String>, IndexError>> {
        async move { Ok(self.find_study_uids(q).await?) }.boxed()
    }

    fn count(&self) -> BoxFuture<'_, Result<u64, IndexError>> {
        async move { Ok(self.count_rows().await?) }.boxed()
    }
}

fn get(
    conn: &rusqlite::Connection,
    storage: &Path,
    sop_iuid: &str,
) -> rusqlite::Result<Option<StoredInstance>> {
    conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM instance WHERE sop_iuid = ?1"
    ))?
    .query_row([sop_iuid], |row| from_row(row, storage))
    .optional()
}

fn from_row(row: &Row<'_>, storage: &Path) -> rusqlite::Result<StoredInstance> {
    let rel: String = row.get(6)?;
    Ok(StoredInstance {
        study_iuid: row.get(0)?,
        series_iuid: row.get(1)?,
        sop_iuid: row.get(2)?,
        sop_cuid: row.get(3)?,
        transfer_syntax: row.get(4)?,
        size: u64::try_from(row.get::<_, i64>(5)?).unwrap_or(0),
        // Relative for every row written today; see `resolve`.
        path: resolve(storage, &rel),
    })
}
