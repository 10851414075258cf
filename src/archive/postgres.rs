//! The PostgreSQL index of stored instances: [`PgIndex`], the
//! [`ArchiveIndex`] that several processes (instances of `serve`, the
//! `import` and `export` CLI, on any host) share, each seeing the one
//! storage directory at its own mount point (issue 14).
//!
//! Owns: its tables (`archive_instance`, prefixed so that it lives beside
//! the task store's tables in the same database) and the numbered
//! migrations that make them ([`SCHEMA_VERSION`], recorded in a version
//! table of its own, `archive_schema_version`, and applied at
//! [`PgIndex::connect`] under an advisory lock of its own), its queries,
//! its connection pool, and the rename inside a commit. Must not touch:
//! file content (copying and fsyncing are `super::import`'s), the task
//! store's tables (`crate::queue::postgres`).
//!
//! Same semantics as [`super::SqliteIndex`], method by method. SQLite
//! serialises commits with its write lock; here the unique SOP Instance
//! UID is the claim: a commit inserts its row first (`ON CONFLICT DO
//! NOTHING`), and a concurrent insert of the same UID, from any process,
//! waits on the unique index until the first transaction ends. So only the
//! claimant renames, inside its transaction, before `COMMIT`; the others
//! then find its row ([`Commit::Existing`]). A row whose file is missing
//! is locked (`FOR UPDATE`) before it is repaired, so one of concurrent
//! repairs renames and the rest find the file in place.
//!
//! A crash (or a lost connection) between the rename and `COMMIT` leaves
//! the file at its name without a row, and the UID unclaimed: the next
//! import of that object claims it and renames its own copy over the
//! orphan (a rename replaces its target), so the file and the row agree
//! again. The converse, a row without its file, is the contract's
//! "missing file restored". Text columns compare bytewise (`COLLATE "C"`),
//! so orders and page boundaries are SQLite's whatever the database's
//! locale.
//!
//! The URL's password never appears in an error or a log line
//! ([`crate::queue::postgres::masked`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row};

use super::index::{
    ArchiveIndex, Commit, EXPORT_CLAIM, IndexError, InstanceRecord, PendingExport, resolve,
};
use super::{StoredInstance, StudyQuery};
use crate::queue::postgres::masked;

/// One step of the schema: applied in order, each in the transaction that
/// records its number in `archive_schema_version`.
#[doc(hidden)]
pub type Migration = &'static str;

/// The schema steps of this version of the code; step `i` (from 0) makes
/// version `i + 1`. Never edit a step that has shipped: add one.
pub const MIGRATIONS: &[Migration] = &[
    "
CREATE TABLE archive_instance (
    sop_iuid         TEXT COLLATE \"C\" PRIMARY KEY,
    study_iuid       TEXT COLLATE \"C\" NOT NULL,
    series_iuid      TEXT COLLATE \"C\" NOT NULL,
    sop_cuid         TEXT NOT NULL,
    transfer_syntax  TEXT NOT NULL,
    size             BIGINT NOT NULL,
    -- relative to the storage directory, '/'-separated
    path             TEXT NOT NULL,
    patient_id       TEXT COLLATE \"C\",
    study_date       TEXT COLLATE \"C\",
    modality         TEXT COLLATE \"C\",
    accession_number TEXT,
    series_number    BIGINT,
    instance_number  BIGINT,
    imported_time    TIMESTAMPTZ NOT NULL
);
CREATE INDEX archive_instance_page ON archive_instance (study_iuid, series_iuid, sop_iuid);
CREATE INDEX archive_instance_series ON archive_instance (series_iuid);
CREATE INDEX archive_instance_patient ON archive_instance (patient_id);
",
    "
CREATE TABLE archive_export_pending (
    exporter_id   TEXT COLLATE \"C\" NOT NULL,
    study_iuid    TEXT COLLATE \"C\" NOT NULL,
    series_iuid   TEXT COLLATE \"C\" NOT NULL,
    sop_iuid      TEXT COLLATE \"C\" NOT NULL,
    rule          TEXT NOT NULL,
    due           TIMESTAMPTZ NOT NULL,
    claimed_until TIMESTAMPTZ,
    PRIMARY KEY (exporter_id, study_iuid, series_iuid, sop_iuid)
);
CREATE INDEX archive_export_pending_due ON archive_export_pending (due);
",
];

/// The schema version this code reads and writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Connections the index keeps open: imports and exports share them; more
/// would only queue inside the server.
const POOL_SIZE: usize = 8;

/// How long connecting may take when the URL does not say.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Serialises migrations of the index by concurrent openers; not the task
/// store's lock, so that the two schemas migrate independently ("arch" in
/// ASCII).
const MIGRATION_LOCK: i64 = 0x61726368;

const COLUMNS: &str = "study_iuid, series_iuid, sop_iuid, sop_cuid, transfer_syntax, size, path";

/// The archive index in a shared PostgreSQL database; clones share the
/// pool.
#[derive(Clone)]
pub struct PgIndex {
    pool: Pool,
    /// The URL, password masked: what errors name.
    database: String,
    storage: PathBuf,
}

impl std::fmt::Debug for PgIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgIndex")
            .field("database", &self.database)
            .field("storage", &self.storage)
            .finish()
    }
}

impl PgIndex {
    /// Connects to the database at `url` (`postgres://user:password@host:port/db`),
    /// brings the index's schema to [`SCHEMA_VERSION`] and returns the
    /// index for the absolute storage directory `storage`. Fails with
    /// [`IndexError::Postgres`] when the URL is malformed or the server
    /// cannot be reached, and with [`IndexError::SchemaTooNew`] for an
    /// index a newer version of stow-exporter has migrated. Commits wait
    /// for the WAL as the server's `synchronous_commit` says (by default
    /// until it is flushed).
    pub async fn connect(url: &str, storage: PathBuf) -> Result<PgIndex, IndexError> {
        PgIndex::connect_with_migrations(url, storage, MIGRATIONS).await
    }

    /// [`PgIndex::connect`] with another list of schema steps: lets the
    /// tests play an older and a newer version of the code.
    #[doc(hidden)]
    pub async fn connect_with_migrations(
        url: &str,
        storage: PathBuf,
        migrations: &[Migration],
    ) -> Result<PgIndex, IndexError> {
        let database = masked(url);
        let mut config: tokio_postgres::Config =
            url.parse().map_err(|source| IndexError::Postgres {
                database: database.clone(),
                context: "invalid database URL",
                source,
            })?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                // A connection the server closed (restart, idle timeout) is
                // noticed before a query fails on it.
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .build()
            .map_err(|e| IndexError::PostgresPool {
                database: database.clone(),
                source: Box::new(e),
            })?;
        let index = PgIndex {
            pool,
            database,
            storage,
        };
        index.migrate(migrations).await?;
        Ok(index)
    }

    /// The database URL with its password masked.
    pub fn database(&self) -> &str {
        &self.database
    }

    /// Wraps a driver error with the database and what was being done.
    fn err(&self, context: &'static str) -> impl Fn(tokio_postgres::Error) -> IndexError + '_ {
        move |source| IndexError::Postgres {
            database: self.database.clone(),
            context,
            source,
        }
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, IndexError> {
        self.pool.get().await.map_err(|e| match e {
            deadpool_postgres::PoolError::Backend(source) => IndexError::Postgres {
                database: self.database.clone(),
                context: "cannot connect",
                source,
            },
            other => IndexError::PostgresPool {
                database: self.database.clone(),
                source: Box::new(other),
            },
        })
    }

    /// Brings the schema to the last of `migrations` under the advisory
    /// lock, so that processes opening the database together apply each
    /// step once; refuses an index a newer version has migrated. An index
    /// that is up to date is left untouched.
    async fn migrate(&self, migrations: &[Migration]) -> Result<(), IndexError> {
        let supported = migrations.len() as i64;
        let mut c = self.client().await?;
        let e = self.err("schema migration");
        // The common case, an index at this version, takes no lock and
        // writes nothing.
        let versioned: bool = c
            .query_one(
                "SELECT to_regclass('archive_schema_version') IS NOT NULL",
                &[],
            )
            .await
            .map_err(&e)?
            .get(0);
        if versioned {
            let version: Option<i64> = c
                .query_one("SELECT MAX(version) FROM archive_schema_version", &[])
                .await
                .map_err(&e)?
                .get(0);
            if version == Some(supported) {
                return Ok(());
            }
        }
        let tx = c.transaction().await.map_err(&e)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await
            .map_err(&e)?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS archive_schema_version (
                version BIGINT PRIMARY KEY,
                applied_time TIMESTAMPTZ NOT NULL
            )",
        )
        .await
        .map_err(&e)?;
        let found: i64 = tx
            .query_one(
                "SELECT COALESCE(MAX(version), 0) FROM archive_schema_version",
                &[],
            )
            .await
            .map_err(&e)?
            .get(0);
        if found > supported {
            return Err(IndexError::SchemaTooNew {
                database: self.database.clone(),
                found,
                supported,
            });
        }
        for (i, step) in migrations.iter().enumerate().skip(found as usize) {
            let version = i as i64 + 1;
            tx.batch_execute(step).await.map_err(&e)?;
            tx.execute(
                "INSERT INTO archive_schema_version (version, applied_time) VALUES ($1, now())",
                &[&version],
            )
            .await
            .map_err(&e)?;
            tracing::info!(database = %self.database, version, "archive index schema migrated");
        }
        tx.commit().await.map_err(&e)?;
        Ok(())
    }

    async fn get_row(&self, sop_iuid: &str) -> Result<Option<StoredInstance>, IndexError> {
        let c = self.client().await?;
        let row = c
            .query_opt(
                &format!("SELECT {COLUMNS} FROM archive_instance WHERE sop_iuid = $1"),
                &[&sop_iuid],
            )
            .await
            .map_err(self.err("get instance"))?;
        Ok(row.map(|r| from_row(&r, &self.storage)))
    }

    /// See [`ArchiveIndex::commit`] and the module documentation: claim
    /// by insert, rename, `COMMIT`.
    async fn commit_row(
        &self,
        rec: InstanceRecord,
        tmp: PathBuf,
        exports: Vec<PendingExport>,
    ) -> Result<Commit, IndexError> {
        let mut c = self.client().await?;
        let e = self.err("commit instance");
        let size = i64::try_from(rec.size).unwrap_or(i64::MAX);
        let dest = resolve(&self.storage, &rec.rel_path);
        let values: [&(dyn ToSql + Sync); 13] = [
            &rec.study_iuid,
            &rec.series_iuid,
            &rec.sop_iuid,
            &rec.sop_cuid,
            &rec.transfer_syntax,
            &size,
            &rec.rel_path,
            &rec.patient_id,
            &rec.study_date,
            &rec.modality,
            &rec.accession_number,
            &rec.series_number,
            &rec.instance_number,
        ];
        // Dropping `tx` without committing rolls back: every early return
        // below indexes nothing.
        let tx = c.transaction().await.map_err(&e)?;
        loop {
            // Waits on a concurrent uncommitted insert of the same UID, and
            // claims the UID when there is none (or it rolled back).
            let claimed = tx
                .query_opt(
                    "INSERT INTO archive_instance (study_iuid, series_iuid, sop_iuid, sop_cuid,
                        transfer_syntax, size, path, patient_id, study_date, modality,
                        accession_number, series_number, instance_number, imported_time)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, now())
                     ON CONFLICT (sop_iuid) DO NOTHING
                     RETURNING sop_iuid",
                    &values,
                )
                .await
                .map_err(&e)?
                .is_some();
            if claimed {
                break;
            }
            // The row of the UID's owner, locked so that only one of
            // concurrent repairs of a missing file renames.
            let Some(row) = tx
                .query_opt(
                    &format!(
                        "SELECT {COLUMNS} FROM archive_instance WHERE sop_iuid = $1 FOR UPDATE"
                    ),
                    &[&rec.sop_iuid],
                )
                .await
                .map_err(&e)?
            else {
                // Gone between the two statements (the index deletes no
                // rows today, but a hand may): claim again.
                continue;
            };
            let found = from_row(&row, &self.storage);
            // As `Path::exists` in SQLite: an unreadable path counts as
            // missing.
            let present = tokio::fs::try_exists(&found.path).await.unwrap_or(false);
            if present || found.study_iuid != rec.study_iuid || found.series_iuid != rec.series_iuid
            {
                return Ok(Commit::Existing(found));
            }
            tracing::warn!(
                sop_iuid = %rec.sop_iuid,
                path = %found.path.display(),
                "stored file missing; restoring it from the new import"
            );
            tx.execute(
                "UPDATE archive_instance SET study_iuid = $1, series_iuid = $2, sop_cuid = $4,
                    transfer_syntax = $5, size = $6, path = $7, patient_id = $8,
                    study_date = $9, modality = $10, accession_number = $11,
                    series_number = $12, instance_number = $13, imported_time = now()
                 WHERE sop_iuid = $3",
                &values,
            )
            .await
            .map_err(&e)?;
            break;
        }
        // The rename runs on the blocking pool, inside the transaction that
        // holds the claim: no other commit of the UID renames meanwhile.
        if let Err(err) = tokio::fs::rename(&tmp, &dest).await {
            return Ok(Commit::RenameFailed(err));
        }
        upsert_exports(&tx, &exports).await.map_err(&e)?;
        // Should this fail, the file stays in place without a row; the next
        // commit of the UID claims it again and renames over it.
        tx.commit().await.map_err(&e)?;
        Ok(Commit::Stored(StoredInstance {
            study_iuid: rec.study_iuid,
            series_iuid: rec.series_iuid,
            sop_iuid: rec.sop_iuid,
            sop_cuid: rec.sop_cuid,
            transfer_syntax: rec.transfer_syntax,
            size: rec.size,
            path: dest,
        }))
    }

    async fn find_rows(
        &self,
        study: &str,
        series: Option<&str>,
        instance: Option<&str>,
    ) -> Result<Vec<StoredInstance>, IndexError> {
        let c = self.client().await?;
        let rows = c
            .query(
                &format!(
                    "SELECT {COLUMNS} FROM archive_instance
                     WHERE study_iuid = $1
                       AND ($2::text IS NULL OR series_iuid = $2)
                       AND ($3::text IS NULL OR sop_iuid = $3)
                     ORDER BY series_iuid, instance_number IS NULL, instance_number, sop_iuid"
                ),
                &[&study, &series, &instance],
            )
            .await
            .map_err(self.err("find instances"))?;
        Ok(rows.iter().map(|r| from_row(r, &self.storage)).collect())
    }

    async fn find_page_rows(
        &self,
        study: &str,
        series: Option<&str>,
        instance: Option<&str>,
        after: Option<(&str, &str)>,
        limit: usize,
    ) -> Result<Vec<StoredInstance>, IndexError> {
        let (after_series, after_sop) = match after {
            Some((se, so)) => (Some(se), Some(so)),
            None => (None, None),
        };
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let c = self.client().await?;
        // Once per export page: the connection's statement cache spares
        // the server a parse and the client a round trip.
        let st = c
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM archive_instance
                 WHERE study_iuid = $1
                   AND ($2::text IS NULL OR series_iuid = $2)
                   AND ($3::text IS NULL OR sop_iuid = $3)
                   AND ($4::text IS NULL OR (series_iuid, sop_iuid) > ($4, $5::text))
                 ORDER BY series_iuid, sop_iuid
                 LIMIT $6"
            ))
            .await
            .map_err(self.err("find a page of instances"))?;
        let rows = c
            .query(
                &st,
                &[
                    &study,
                    &series,
                    &instance,
                    &after_series,
                    &after_sop,
                    &limit,
                ],
            )
            .await
            .map_err(self.err("find a page of instances"))?;
        Ok(rows.iter().map(|r| from_row(r, &self.storage)).collect())
    }

    async fn find_study_uids(&self, q: StudyQuery) -> Result<Vec<String>, IndexError> {
        let mut sql =
            String::from("SELECT DISTINCT study_iuid FROM archive_instance AS i WHERE TRUE");
        let mut args: Vec<Box<dyn ToSql + Sync + Send>> = Vec::new();
        if let Some(p) = q.patient_id {
            // QIDO's `*` and `?` become LIKE's `%` and `_`; LIKE's own
            // wildcards and its escape are matched literally, as every
            // other character is. `=` when there is no wildcard, so that
            // the value is compared as written.
            if p.contains(['*', '?']) {
                let mut pattern = String::with_capacity(p.len());
                for ch in p.chars() {
                    match ch {
                        '\\' | '%' | '_' => {
                            pattern.push('\\');
                            pattern.push(ch);
                        }
                        '*' => pattern.push('%'),
                        '?' => pattern.push('_'),
                        c => pattern.push(c),
                    }
                }
                args.push(Box::new(pattern));
                sql.push_str(&format!(" AND patient_id LIKE ${} ESCAPE '\\'", args.len()));
            } else {
                args.push(Box::new(p));
                sql.push_str(&format!(" AND patient_id = ${}", args.len()));
            }
        }
        if let Some(from) = q.study_date_from {
            args.push(Box::new(from));
            sql.push_str(&format!(" AND study_date >= ${}", args.len()));
        }
        if let Some(to) = q.study_date_to {
            args.push(Box::new(to));
            sql.push_str(&format!(" AND study_date <= ${}", args.len()));
        }
        if !q.modalities.is_empty() {
            // Any instance of the study has one of the modalities.
            args.push(Box::new(q.modalities));
            sql.push_str(&format!(
                " AND EXISTS (SELECT 1 FROM archive_instance AS m
                    WHERE m.study_iuid = i.study_iuid AND m.modality = ANY(${}))",
                args.len()
            ));
        }
        sql.push_str(" ORDER BY study_iuid");
        let refs: Vec<&(dyn ToSql + Sync)> = args
            .iter()
            .map(|a| a.as_ref() as &(dyn ToSql + Sync))
            .collect();
        let c = self.client().await?;
        let rows = c
            .query(&sql, &refs)
            .await
            .map_err(self.err("find studies"))?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    async fn count_rows(&self) -> Result<u64, IndexError> {
        let c = self.client().await?;
        let n: i64 = c
            .query_one("SELECT COUNT(*) FROM archive_instance", &[])
            .await
            .map_err(self.err("count instances"))?
            .get(0);
        Ok(u64::try_from(n).unwrap_or(0))
    }
}

impl ArchiveIndex for PgIndex {
    fn storage_dir(&self) -> &Path {
        &self.storage
    }

    fn get<'a>(
        &'a self,
        sop_iuid: &'a str,
    ) -> BoxFuture<'a, Result<Option<StoredInstance>, IndexError>> {
        self.get_row(sop_iuid).boxed()
    }

    fn commit_with_exports(
        &self,
        rec: InstanceRecord,
        tmp: PathBuf,
        exports: Vec<PendingExport>,
    ) -> BoxFuture<'_, Result<Commit, IndexError>> {
        self.commit_row(rec, tmp, exports).boxed()
    }

    fn add_exports(&self, exports: Vec<PendingExport>) -> BoxFuture<'_, Result<(), IndexError>> {
        async move {
            let mut c = self.client().await?;
            let e = self.err("record pending exports");
            let tx = c.transaction().await.map_err(&e)?;
            upsert_exports(&tx, &exports).await.map_err(&e)?;
            tx.commit().await.map_err(&e)
        }
        .boxed()
    }

    fn due_exports(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<PendingExport>, IndexError>> {
        async move {
            let c = self.client().await?;
            let until = now + EXPORT_CLAIM;
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            // Claimed in one statement; SKIP LOCKED lets processes sharing
            // the index claim disjoint rows at the same time.
            let rows = c
                .query(
                    "UPDATE archive_export_pending p SET claimed_until = $2
                     FROM (SELECT exporter_id, study_iuid, series_iuid, sop_iuid
                           FROM archive_export_pending
                           WHERE due <= $1 AND (claimed_until IS NULL OR claimed_until < $1)
                           ORDER BY due LIMIT $3 FOR UPDATE SKIP LOCKED) d
                     WHERE p.exporter_id = d.exporter_id AND p.study_iuid = d.study_iuid
                       AND p.series_iuid = d.series_iuid AND p.sop_iuid = d.sop_iuid
                     RETURNING p.exporter_id, p.study_iuid, p.series_iuid, p.sop_iuid,
                               p.rule, p.due",
                    &[&now, &until, &limit],
                )
                .await
                .map_err(self.err("claim due exports"))?;
            let opt = |s: String| (!s.is_empty()).then_some(s);
            let mut out: Vec<PendingExport> = rows
                .iter()
                .map(|r| PendingExport {
                    exporter_id: r.get(0),
                    study_iuid: r.get(1),
                    series_iuid: opt(r.get(2)),
                    sop_iuid: opt(r.get(3)),
                    rule: r.get(4),
                    due: r.get(5),
                })
                .collect();
            out.sort_by_key(|x| x.due);
            Ok(out)
        }
        .boxed()
    }

    fn finish_export<'a>(
        &'a self,
        export: &'a PendingExport,
    ) -> BoxFuture<'a, Result<(), IndexError>> {
        async move {
            let c = self.client().await?;
            let series = export.series_iuid.as_deref().unwrap_or("");
            let sop = export.sop_iuid.as_deref().unwrap_or("");
            c.execute(
                "DELETE FROM archive_export_pending
                 WHERE exporter_id = $1 AND study_iuid = $2 AND series_iuid = $3
                   AND sop_iuid = $4 AND due = $5",
                &[
                    &export.exporter_id,
                    &export.study_iuid,
                    &series,
                    &sop,
                    &export.due,
                ],
            )
            .await
            .map_err(self.err("remove a queued export"))?;
            Ok(())
        }
        .boxed()
    }

    fn next_export_due(&self) -> BoxFuture<'_, Result<Option<DateTime<Utc>>, IndexError>> {
        async move {
            let c = self.client().await?;
            let row = c
                .query_one(
                    "SELECT MIN(due) FROM archive_export_pending
                     WHERE claimed_until IS NULL OR claimed_until < now()",
                    &[],
                )
                .await
                .map_err(self.err("read pending exports"))?;
            Ok(row.get(0))
        }
        .boxed()
    }

    fn find<'a>(
        &'a self,
        study: &'a str,
        series: Option<&'a str>,
        instance: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<StoredInstance>, IndexError>> {
        self.find_rows(study, series, instance).boxed()
    }

    fn find_page<'a>(
        &'a self,
        study: &'a str,
        series: Option<&'a str>,
        instance: Option<&'a str>,
        after: Option<(&'a str, &'a str)>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<StoredInstance>, IndexError>> {
        self.find_page_rows(study, series, instance, after, limit)
            .boxed()
    }

    fn find_studies(&self, q: StudyQuery) -> BoxFuture<'_, Result<Vec<String>, IndexError>> {
        self.find_study_uids(q).boxed()
    }

    fn count(&self) -> BoxFuture<'_, Result<u64, IndexError>> {
        self.count_rows().boxed()
    }
}

/// Upserts `exports` inside `tx`: a pending export of the same exporter
/// and entity keeps the later due time and is unclaimed.
async fn upsert_exports(
    tx: &deadpool_postgres::Transaction<'_>,
    exports: &[PendingExport],
) -> Result<(), tokio_postgres::Error> {
    if exports.is_empty() {
        return Ok(());
    }
    let st = tx
        .prepare_cached(
            "INSERT INTO archive_export_pending
                (exporter_id, study_iuid, series_iuid, sop_iuid, rule, due)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (exporter_id, study_iuid, series_iuid, sop_iuid) DO UPDATE SET
                due = GREATEST(archive_export_pending.due, excluded.due),
                rule = excluded.rule, claimed_until = NULL",
        )
        .await?;
    for x in exports {
        let series = x.series_iuid.as_deref().unwrap_or("");
        let sop = x.sop_iuid.as_deref().unwrap_or("");
        tx.execute(
            &st,
            &[
                &x.exporter_id,
                &x.study_iuid,
                &series,
                &sop,
                &x.rule,
                &x.due,
            ],
        )
        .await?;
    }
    Ok(())
}

fn from_row(row: &Row, storage: &Path) -> StoredInstance {
    let rel: String = row.get(6);
    StoredInstance {
        study_iuid: row.get(0),
        series_iuid: row.get(1),
        sop_iuid: row.get(2),
        sop_cuid: row.get(3),
        transfer_syntax: row.get(4),
        size: u64::try_from(row.get::<_, i64>(5)).unwrap_or(0),
        // Relative for every row written; see `resolve`.
        path: resolve(storage, &rel),
    }
}
