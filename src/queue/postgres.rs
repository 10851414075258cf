//! The PostgreSQL task store ([`PgStore`]): the records of export tasks
//! and their per-instance results in one PostgreSQL database that several
//! processes (devices, or `serve` and the `export` CLI) share (issue 14).
//!
//! Owns: its schema and the numbered migrations that make it
//! ([`SCHEMA_VERSION`], checked and applied at [`PgStore::connect`]), its
//! queries, and its connection pool. Must not touch: delivery (taking
//! tasks, broker messages and their counts are the
//! [`super::TaskDelivery`] backends'; the tables `task_take`, `instance`,
//! `task_message`, `retired_message` and `message_delivery` exist so that
//! a delivery can keep its bookkeeping beside the records, as it does in
//! the SQLite store, and this store only clears or retires them where the
//! [`TaskStore`] contract says so), the configuration, the HTTP layer.
//!
//! Same semantics as the SQLite store ([`super::SqliteStore`]), method by
//! method; the differences are the database's. SQLite has one writer at a
//! time, so its read-then-write transactions could not interleave; here
//! several processes write at once, so every such transaction locks the
//! rows it decides on (`SELECT ... FOR UPDATE`) and bulk statements rely
//! on PostgreSQL re-checking their `WHERE` on rows changed meanwhile.
//! Times are `timestamptz`, kept to the millisecond as SQLite keeps them.
//! Task IDs are the decimal primary key, as in SQLite.
//!
//! The URL's password never appears in an error or a log line: errors
//! carry the URL through [`masked`] ([`crate::redact::mask_url`], and a
//! `password` parameter masked too).

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};
use deadpool_postgres::Transaction;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row};

use super::ledger::{Begun, Count, DeliveryLedger};
use super::{
    BatchSummary, CancelResult, OrderField, QueueError, QueueOptions, RecordInit, Reschedule,
    TaskFilter, TaskStore,
};
use crate::outcome::{InstanceResult, InstanceStatus, Outcome};
use crate::task::{ExportTask, Status};

/// One step of the schema: applied in order, each in the transaction that
/// records its number in `schema_version`.
#[doc(hidden)]
pub type Migration = &'static str;

/// The schema steps of this version of the code; step `i` (from 0) makes
/// version `i + 1`. Never edit a step that has shipped: add one.
pub const MIGRATIONS: &[Migration] = &[
    "
CREATE TABLE task (
    pk BIGSERIAL PRIMARY KEY,
    device_name TEXT NOT NULL,
    queue_name TEXT NOT NULL,
    status TEXT NOT NULL,
    batch_id TEXT,
    created_time TIMESTAMPTZ NOT NULL,
    updated_time TIMESTAMPTZ NOT NULL,
    scheduled_time TIMESTAMPTZ NOT NULL,
    proc_start_time TIMESTAMPTZ,
    proc_end_time TIMESTAMPTZ,
    num_failures INTEGER NOT NULL DEFAULT 0,
    outcome_msg TEXT,
    error_msg TEXT,
    exporter_id TEXT NOT NULL,
    local_aet TEXT,
    study_iuid TEXT NOT NULL,
    series_iuid TEXT NOT NULL,
    sop_iuid TEXT NOT NULL,
    num_instances BIGINT,
    completed BIGINT NOT NULL DEFAULT 0,
    warning BIGINT NOT NULL DEFAULT 0,
    failed BIGINT NOT NULL DEFAULT 0,
    missing BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX task_due ON task (queue_name, status, scheduled_time);
CREATE INDEX task_updated ON task (updated_time);
CREATE INDEX task_created ON task (created_time);
CREATE INDEX task_batch ON task (batch_id);
CREATE INDEX task_device_status ON task (device_name, status);
CREATE TABLE task_instance (
    task_pk BIGINT NOT NULL REFERENCES task (pk) ON DELETE CASCADE,
    sop_iuid TEXT NOT NULL,
    status TEXT NOT NULL,
    reason TEXT,
    PRIMARY KEY (task_pk, sop_iuid)
);
CREATE TABLE task_message (
    message_id TEXT PRIMARY KEY,
    task_pk BIGINT NOT NULL REFERENCES task (pk) ON DELETE CASCADE
);
CREATE INDEX task_message_task ON task_message (task_pk);
-- Broker messages of deleted or rescheduled tasks: acknowledged without
-- running when they come (a rescheduled task travels in a new message).
CREATE TABLE retired_message (
    message_id TEXT PRIMARY KEY
);
-- How often a task was taken since its last outcome (embedded delivery).
CREATE TABLE task_take (
    task_pk BIGINT PRIMARY KEY REFERENCES task (pk) ON DELETE CASCADE,
    takes INTEGER NOT NULL
);
-- How often a broker message was delivered since it was last settled with
-- a decision; a message may come before its record.
CREATE TABLE message_delivery (
    message_id TEXT PRIMARY KEY,
    deliveries INTEGER NOT NULL
);
",
    "
-- Which process runs a task IN PROCESS: several instances of one device
-- share the database, and one that restarts returns only its own
-- unfinished tasks, never those another instance is running.
ALTER TABLE task ADD COLUMN owner TEXT;
",
    "
-- The instances that take tasks from the database (broker-less delivery)
-- and when each last said it was alive, by the database's clock: a task
-- IN PROCESS whose owner has been silent for longer than the takeover
-- time is handed to another instance.
CREATE TABLE instance (
    name TEXT PRIMARY KEY,
    device_name TEXT NOT NULL,
    started_time TIMESTAMPTZ NOT NULL,
    heartbeat_time TIMESTAMPTZ NOT NULL
);
",
];

/// The schema version this code reads and writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Connections the store keeps open: requests of the API, the workers and
/// the metrics share them; more would only queue inside the server.
const POOL_SIZE: usize = 8;

/// How long connecting may take when the URL does not say
/// (`connect_timeout`): an unreachable server fails a request instead of
/// holding it.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// `url` as errors and logs show it: the password of the user information
/// ([`crate::redact::mask_url`]) and the value of any `password` parameter
/// (`?password=...`, or `password=...` in a key=value string) masked.
pub fn masked(url: &str) -> String {
    let url = crate::redact::mask_url(url);
    let mut out = String::with_capacity(url.len());
    let mut rest = url.as_str();
    while let Some(i) = rest.to_ascii_lowercase().find("password") {
        let after = &rest[i + "password".len()..];
        let Some(value) = after.trim_start().strip_prefix('=') else {
            out.push_str(&rest[..i + "password".len()]);
            rest = after;
            continue;
        };
        let value = value.trim_start();
        out.push_str(&rest[..i]);
        out.push_str("password=****");
        // A quoted value ends at its closing quote (a `\'` inside does
        // not close it); a bare one at the next parameter.
        let end = if let Some(quoted) = value.strip_prefix('\'') {
            let mut escaped = false;
            quoted
                .char_indices()
                .find(|&(_, c)| {
                    let closes = c == '\'' && !escaped;
                    escaped = c == '\\' && !escaped;
                    closes
                })
                .map_or(value.len(), |(j, _)| j + 2)
        } else {
            value
                .find(|c: char| c == '&' || c == '#' || c.is_whitespace())
                .unwrap_or(value.len())
        };
        rest = &value[end..];
    }
    out.push_str(rest);
    out
}

/// Serialises migrations of concurrent openers of one database (an
/// arbitrary constant: "stow" in ASCII).
const MIGRATION_LOCK: i64 = 0x73746f77;

/// The PostgreSQL [`TaskStore`]. Clones share the pool.
#[derive(Clone)]
pub struct PgStore {
    pool: Pool,
    /// The URL, password masked: what errors name.
    database: String,
    device_name: String,
    /// This process among the instances of the device: what a task IN
    /// PROCESS records as its owner (see [`PgStore::with_instance`]).
    instance: String,
    /// See [`QueueOptions::max_deliveries`]: kept for the deliveries that
    /// will take tasks from this store.
    max_deliveries: u32,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("database", &self.database)
            .field("device_name", &self.device_name)
            .finish()
    }
}

impl PgStore {
    /// Connects to the database at `url` (`postgres://user:password@host:port/db`),
    /// brings its schema to [`SCHEMA_VERSION`] and returns the store of
    /// `device_name`. Fails with [`QueueError::Postgres`] when the URL is
    /// malformed or the server cannot be reached, and with
    /// [`QueueError::SchemaTooNew`] for a database that a newer version of
    /// stow-exporter has migrated. Unlike [`super::SqliteStore::open`] it
    /// does not requeue this device's unfinished tasks: the process that
    /// runs the workers calls [`TaskStore::requeue_unfinished`]. Of
    /// `options` it keeps `max_deliveries`; `synchronous` is SQLite's (a
    /// PostgreSQL commit waits for the WAL as the server's
    /// `synchronous_commit` says, by default until it is flushed).
    pub async fn connect(
        url: &str,
        device_name: &str,
        options: &QueueOptions,
    ) -> Result<PgStore, QueueError> {
        PgStore::connect_with_migrations(url, device_name, options, MIGRATIONS).await
    }

    /// [`PgStore::connect`] with another list of schema steps: lets the
    /// tests play an older and a newer version of the code.
    #[doc(hidden)]
    pub async fn connect_with_migrations(
        url: &str,
        device_name: &str,
        options: &QueueOptions,
        migrations: &[Migration],
    ) -> Result<PgStore, QueueError> {
        let database = masked(url);
        let mut config: tokio_postgres::Config =
            url.parse().map_err(|source| QueueError::Postgres {
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
            .map_err(|e| QueueError::PostgresPool {
                database: database.clone(),
                source: Box::new(e),
            })?;
        let store = PgStore {
            pool,
            database,
            device_name: device_name.to_string(),
            instance: format!("{device_name}/{:016x}", rand::random::<u64>()),
            max_deliveries: options.max_deliveries.max(1),
        };
        store.migrate(migrations).await?;
        Ok(store)
    }

    /// Names this process among the instances of its device sharing the
    /// database (default: the device name and a random suffix). A stable
    /// name (host and port) lets a restarted instance return the tasks it
    /// left IN PROCESS ([`TaskStore::requeue_unfinished`]); it never
    /// touches those another instance runs.
    pub fn with_instance(mut self, instance: impl Into<String>) -> PgStore {
        self.instance = instance.into();
        self
    }

    /// See [`PgStore::with_instance`].
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// The database URL with its password masked.
    pub fn database(&self) -> &str {
        &self.database
    }

    /// How many runs without an outcome a task gets.
    pub(crate) fn max_deliveries(&self) -> u32 {
        self.max_deliveries
    }

    /// Wraps a driver error with the database and what was being done.
    pub(super) fn err(
        &self,
        context: &'static str,
    ) -> impl Fn(tokio_postgres::Error) -> QueueError + '_ {
        move |source| QueueError::Postgres {
            database: self.database.clone(),
            context,
            source,
        }
    }

    pub(super) async fn client(&self) -> Result<deadpool_postgres::Object, QueueError> {
        self.pool.get().await.map_err(|e| match e {
            deadpool_postgres::PoolError::Backend(source) => QueueError::Postgres {
                database: self.database.clone(),
                context: "cannot connect",
                source,
            },
            other => QueueError::PostgresPool {
                database: self.database.clone(),
                source: Box::new(other),
            },
        })
    }

    /// Brings the schema to the last of `migrations`, under a lock so
    /// that processes opening the database together apply each step once;
    /// refuses a database a newer version has migrated. A database that is
    /// up to date is left untouched.
    async fn migrate(&self, migrations: &[Migration]) -> Result<(), QueueError> {
        let supported = migrations.len() as i64;
        let mut c = self.client().await?;
        let e = self.err("schema migration");
        // The common case, a database at this version, takes no lock and
        // writes nothing.
        let versioned: bool = c
            .query_one("SELECT to_regclass('schema_version') IS NOT NULL", &[])
            .await
            .map_err(&e)?
            .get(0);
        if versioned {
            let version: Option<i64> = c
                .query_one("SELECT MAX(version) FROM schema_version", &[])
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
            "CREATE TABLE IF NOT EXISTS schema_version (
                version BIGINT PRIMARY KEY,
                applied_time TIMESTAMPTZ NOT NULL
            )",
        )
        .await
        .map_err(&e)?;
        let found: i64 = tx
            .query_one("SELECT COALESCE(MAX(version), 0) FROM schema_version", &[])
            .await
            .map_err(&e)?
            .get(0);
        if found > supported {
            return Err(QueueError::SchemaTooNew {
                database: self.database.clone(),
                found,
                supported,
            });
        }
        for (i, step) in migrations.iter().enumerate().skip(found as usize) {
            let version = i as i64 + 1;
            tx.batch_execute(step).await.map_err(&e)?;
            tx.execute(
                "INSERT INTO schema_version (version, applied_time) VALUES ($1, now())",
                &[&version],
            )
            .await
            .map_err(&e)?;
            tracing::info!(database = %self.database, version, "task store schema migrated");
        }
        tx.commit().await.map_err(&e)?;
        Ok(())
    }
}

/// Times as SQLite keeps them (milliseconds), so that a record reads the
/// same from either store.
pub(super) fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(3)
}

fn ms(t: DateTime<Utc>) -> DateTime<Utc> {
    t.trunc_subsecs(3)
}

/// A bind parameter of a built query.
type Arg = Box<dyn ToSql + Sync + Send>;

fn refs(args: &[Arg]) -> Vec<&(dyn ToSql + Sync)> {
    args.iter()
        .map(|a| a.as_ref() as &(dyn ToSql + Sync))
        .collect()
}

/// The `WHERE` clause of a filter (without offset, limit and order), with
/// its arguments.
fn filter_sql(f: &TaskFilter) -> (String, Vec<Arg>) {
    let mut sql = String::from(" WHERE TRUE");
    let mut args: Vec<Arg> = Vec::new();
    if !f.exporter_ids.is_empty() {
        args.push(Box::new(f.exporter_ids.clone()));
        sql.push_str(&format!(" AND exporter_id = ANY(${})", args.len()));
    }
    let mut cond = |sql: &mut String, expr: &str, v: Arg| {
        args.push(v);
        sql.push_str(&format!(" AND {expr} ${}", args.len()));
    };
    if let Some(v) = &f.study_iuid {
        cond(&mut sql, "study_iuid =", Box::new(v.clone()));
    }
    if let Some(v) = f.status {
        cond(&mut sql, "status =", Box::new(v.as_str()));
    }
    if let Some(v) = &f.batch_id {
        cond(&mut sql, "batch_id =", Box::new(v.clone()));
    }
    if let Some(v) = &f.device_name {
        cond(&mut sql, "device_name =", Box::new(v.clone()));
    }
    for (col, range) in [("created_time", f.created), ("updated_time", f.updated)] {
        // Bounds at the stored precision, as SQLite compares them.
        if let Some(from) = range.from {
            cond(&mut sql, &format!("{col} >="), Box::new(ms(from)));
        }
        if let Some(to) = range.to {
            cond(&mut sql, &format!("{col} <"), Box::new(ms(to)));
        }
    }
    (sql, args)
}

/// ` LIMIT ... OFFSET ...` of a filter.
fn paging_sql(f: &TaskFilter) -> String {
    let limit = f
        .limit
        .map(|l| i64::try_from(l).unwrap_or(i64::MAX).to_string())
        .unwrap_or_else(|| "ALL".into());
    format!(
        " LIMIT {limit} OFFSET {}",
        i64::try_from(f.offset).unwrap_or(i64::MAX)
    )
}

/// `ORDER BY ... LIMIT ... OFFSET ...` of a filter.
fn order_sql(f: &TaskFilter) -> String {
    let col = match f.order.field {
        OrderField::CreatedTime => "created_time",
        OrderField::UpdatedTime => "updated_time",
        OrderField::ScheduledTime => "scheduled_time",
    };
    let dir = if f.order.descending { "DESC" } else { "ASC" };
    format!(" ORDER BY {col} {dir}, pk {dir}{}", paging_sql(f))
}

pub(super) fn row_to_task(r: &Row) -> Result<ExportTask, tokio_postgres::Error> {
    let status: String = r.try_get("status")?;
    let count = |name: &str| -> Result<u64, tokio_postgres::Error> {
        Ok(u64::try_from(r.try_get::<_, i64>(name)?).unwrap_or(0))
    };
    Ok(ExportTask {
        task_id: r.try_get::<_, i64>("pk")?.to_string(),
        device_name: r.try_get("device_name")?,
        queue: r.try_get("queue_name")?,
        task_type: "EXPORT".into(),
        status: status.parse().unwrap_or(Status::Failed),
        batch_id: r.try_get("batch_id")?,
        created_time: r.try_get("created_time")?,
        updated_time: r.try_get("updated_time")?,
        scheduled_time: r.try_get("scheduled_time")?,
        processing_start_time: r.try_get("proc_start_time")?,
        processing_end_time: r.try_get("proc_end_time")?,
        failures: u32::try_from(r.try_get::<_, i32>("num_failures")?).unwrap_or(0),
        outcome_message: r.try_get("outcome_msg")?,
        error_message: r.try_get("error_msg")?,
        exporter_id: r.try_get("exporter_id")?,
        local_aet: r.try_get("local_aet")?,
        study_iuid: r.try_get("study_iuid")?,
        series_iuid: r.try_get("series_iuid")?,
        sop_iuid: r.try_get("sop_iuid")?,
        number_of_instances: r
            .try_get::<_, Option<i64>>("num_instances")?
            .map(|n| u64::try_from(n).unwrap_or(0)),
        completed: count("completed")?,
        warning: count("warning")?,
        failed: count("failed")?,
        missing: count("missing")?,
    })
}

/// A task ID of this store: its primary key. Anything else is not found.
pub(super) fn task_pk(task_id: &str) -> Result<i64, QueueError> {
    task_id
        .parse()
        .map_err(|_| QueueError::NotFound(task_id.to_string()))
}

/// Clears the delivery counts of task `pk` (its takes and the deliveries
/// of its broker messages): an outcome or a final status settles them.
pub(super) async fn reset_counts(
    tx: &deadpool_postgres::Transaction<'_>,
    pk: i64,
) -> Result<(), tokio_postgres::Error> {
    tx.execute(
        &tx.prepare_cached("DELETE FROM task_take WHERE task_pk = $1")
            .await?,
        &[&pk],
    )
    .await?;
    tx.execute(
        &tx.prepare_cached(
            "DELETE FROM message_delivery WHERE message_id IN
         (SELECT message_id FROM task_message WHERE task_pk = $1)",
        )
        .await?,
        &[&pk],
    )
    .await?;
    Ok(())
}

/// Retires the broker messages of task `pk` (their links and counts go).
async fn retire_messages(tx: &Transaction<'_>, pk: i64) -> Result<(), tokio_postgres::Error> {
    reset_counts(tx, pk).await?;
    tx.execute(
        "INSERT INTO retired_message (message_id)
         SELECT message_id FROM task_message WHERE task_pk = $1
         ON CONFLICT DO NOTHING",
        &[&pk],
    )
    .await?;
    tx.execute("DELETE FROM task_message WHERE task_pk = $1", &[&pk])
        .await?;
    Ok(())
}

/// The status of task `pk`, its row locked until the transaction ends:
/// what is decided on it cannot change under the decision (another
/// process's take, cancel or delete waits).
async fn lock_status(
    tx: &Transaction<'_>,
    pk: i64,
) -> Result<Option<Status>, tokio_postgres::Error> {
    Ok(tx
        .query_opt("SELECT status FROM task WHERE pk = $1 FOR UPDATE", &[&pk])
        .await?
        .map(|r| r.get::<_, String>(0).parse().unwrap_or(Status::Failed)))
}

impl PgStore {
    async fn insert_record(&self, init: RecordInit) -> Result<ExportTask, QueueError> {
        let e = self.err("insert task");
        let now = now();
        let r = init.task.request;
        let (outcome, error) = match init.failure {
            Some(f) => (Some(f.outcome), Some(f.error)),
            None => (None, None),
        };
        let end = init.status.is_done().then_some(now);
        let start = (init.status == Status::InProcess).then_some(now);
        let failures = i32::from(init.status == Status::Failed);
        let c = self.client().await?;
        // The record, its message link and, for a record that is born
        // ended, the message's cleared delivery count, in one statement:
        // one commit and one round trip. (The new record has no take
        // count to clear, and its only message is this one.)
        let row = c
            .query_one(
                &c.prepare_cached(
                    "WITH t AS (
                        INSERT INTO task (device_name, queue_name, status, batch_id, created_time,
                            updated_time, scheduled_time, exporter_id, local_aet, study_iuid,
                            series_iuid, sop_iuid, outcome_msg, error_msg, proc_end_time,
                            num_failures, proc_start_time, owner)
                        VALUES ($1, $2, $3, $4, $5, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14,
                            $15, $16, $17)
                        RETURNING *),
                     link AS (
                        INSERT INTO task_message (message_id, task_pk)
                        SELECT $18::TEXT, pk FROM t WHERE $18::TEXT IS NOT NULL
                        ON CONFLICT (message_id) DO UPDATE SET task_pk = excluded.task_pk),
                     counts AS (
                        DELETE FROM message_delivery WHERE $19 AND message_id = $18::TEXT)
                     SELECT * FROM t",
                )
                .await
                .map_err(&e)?,
                &[
                    &init.task.device_name,
                    &init.task.queue,
                    &init.status.as_str(),
                    &r.batch_id,
                    &now,
                    &ms(r.scheduled_time.unwrap_or(now)),
                    &r.exporter_id,
                    &init.task.local_aet,
                    &r.study_iuid,
                    &r.series_iuid.unwrap_or_else(|| "*".into()),
                    &r.sop_iuid.unwrap_or_else(|| "*".into()),
                    &outcome,
                    &error,
                    &end,
                    &failures,
                    &start,
                    &start.map(|_| self.instance.as_str()),
                    &init.message_id,
                    &init.status.is_done(),
                ],
            )
            .await
            .map_err(&e)?;
        row_to_task(&row).map_err(&e)
    }

    async fn get_record(&self, task_id: &str) -> Result<ExportTask, QueueError> {
        let pk = task_pk(task_id)?;
        let e = self.err("read task");
        let c = self.client().await?;
        let row = c
            .query_opt(
                &c.prepare_cached("SELECT * FROM task WHERE pk = $1")
                    .await
                    .map_err(&e)?,
                &[&pk],
            )
            .await
            .map_err(&e)?
            .ok_or_else(|| QueueError::NotFound(task_id.to_string()))?;
        row_to_task(&row).map_err(&e)
    }

    async fn list_records(&self, filter: TaskFilter) -> Result<Vec<ExportTask>, QueueError> {
        let e = self.err("list tasks");
        let (where_, args) = filter_sql(&filter);
        let sql = format!("SELECT * FROM task{where_}{}", order_sql(&filter));
        let c = self.client().await?;
        let rows = c.query(&sql, &refs(&args)).await.map_err(&e)?;
        rows.iter().map(|r| row_to_task(r).map_err(&e)).collect()
    }

    async fn count_records(&self, filter: TaskFilter) -> Result<u64, QueueError> {
        let e = self.err("count tasks");
        let (where_, args) = filter_sql(&filter);
        let c = self.client().await?;
        let n: i64 = c
            .query_one(&format!("SELECT COUNT(*) FROM task{where_}"), &refs(&args))
            .await
            .map_err(&e)?
            .get(0);
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn status_counts_of(&self, device: &str) -> Result<Vec<super::StatusCount>, QueueError> {
        let e = self.err("count tasks by status");
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT queue_name, status, COUNT(*) FROM task WHERE device_name = $1
                 GROUP BY queue_name, status",
                &[&device],
            )
            .await
            .map_err(&e)?;
        Ok(rows
            .iter()
            .map(|r| {
                (
                    r.get(0),
                    r.get(1),
                    u64::try_from(r.get::<_, i64>(2)).unwrap_or(0),
                )
            })
            .collect())
    }

    async fn batch_summaries(&self, filter: TaskFilter) -> Result<Vec<BatchSummary>, QueueError> {
        let e = self.err("list batches");
        let (where_, args) = filter_sql(&filter);
        let where_ = format!("{where_} AND batch_id IS NOT NULL");
        let mut c = self.client().await?;
        // Both reads in one snapshot: the counts belong to the batches listed.
        let tx = c
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(&e)?;
        // Batch IDs sort bytewise, as SQLite sorts them, whatever the
        // database's collation.
        let rows = tx
            .query(
                &format!(
                    "SELECT batch_id, MIN(created_time), MAX(created_time), MIN(updated_time),
                        MAX(updated_time), MIN(scheduled_time), MAX(scheduled_time),
                        MIN(proc_start_time), MAX(proc_start_time), MIN(proc_end_time),
                        MAX(proc_end_time)
                     FROM task{where_} GROUP BY batch_id
                     ORDER BY MAX(updated_time) DESC, batch_id COLLATE \"C\"{}",
                    paging_sql(&filter)
                ),
                &refs(&args),
            )
            .await
            .map_err(&e)?;
        let range = |r: &Row, i: usize| -> Option<[DateTime<Utc>; 2]> {
            let a: Option<DateTime<Utc>> = r.get(i);
            let b: Option<DateTime<Utc>> = r.get(i + 1);
            a.zip(b).map(|(a, b)| [a, b])
        };
        let mut out: Vec<BatchSummary> = rows
            .iter()
            .map(|r| BatchSummary {
                batch_id: r.get(0),
                tasks: Default::default(),
                device_names: Vec::new(),
                exporter_ids: Vec::new(),
                created_time_range: range(r, 1).unwrap_or_default(),
                updated_time_range: range(r, 3).unwrap_or_default(),
                scheduled_time_range: range(r, 5).unwrap_or_default(),
                processing_start_time_range: range(r, 7),
                processing_end_time_range: range(r, 9),
            })
            .collect();
        let rows = tx
            .query(
                &format!(
                    "SELECT batch_id, status, device_name, exporter_id, COUNT(*)
                     FROM task{where_} GROUP BY batch_id, status, device_name, exporter_id"
                ),
                &refs(&args),
            )
            .await
            .map_err(&e)?;
        tx.commit().await.map_err(&e)?;
        let at: HashMap<String, usize> = out
            .iter()
            .enumerate()
            .map(|(i, b)| (b.batch_id.clone(), i))
            .collect();
        for r in &rows {
            let batch: String = r.get(0);
            let Some(&i) = at.get(&batch) else { continue };
            let status: String = r.get(1);
            let device: String = r.get(2);
            let exporter: String = r.get(3);
            let n: i64 = r.get(4);
            let b = &mut out[i];
            *b.tasks
                .entry(status.to_ascii_lowercase().replace(' ', "-"))
                .or_default() += u64::try_from(n).unwrap_or(0);
            if !b.device_names.contains(&device) {
                b.device_names.push(device);
            }
            if !b.exporter_ids.contains(&exporter) {
                b.exporter_ids.push(exporter);
            }
        }
        for b in &mut out {
            b.device_names.sort();
            b.exporter_ids.sort();
        }
        Ok(out)
    }

    async fn record_instance_results(
        &self,
        task_id: &str,
        results: Vec<InstanceResult>,
    ) -> Result<(), QueueError> {
        let pk = task_pk(task_id)?;
        let e = self.err("record instance results");
        // One statement cannot update a row twice: the last result of an
        // instance wins, as it does when they are written one by one.
        let mut last: HashMap<&str, &InstanceResult> = HashMap::new();
        for r in &results {
            last.insert(r.sop_iuid.as_str(), r);
        }
        let sops: Vec<&str> = last.keys().copied().collect();
        let statuses: Vec<&str> = sops.iter().map(|s| last[s].status.as_str()).collect();
        let reasons: Vec<Option<&str>> = sops.iter().map(|s| last[s].reason.as_deref()).collect();
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(&e)?;
        // The contract's one exception to durability: these results are
        // acknowledged to nobody (they only spare a resumed export from
        // sending again), so their commit does not wait for the WAL flush;
        // the next durable commit carries them.
        let insert = tx
            .prepare_cached(
                "INSERT INTO task_instance (task_pk, sop_iuid, status, reason)
                 SELECT $1::bigint, * FROM unnest($2::text[], $3::text[], $4::text[])
                 ON CONFLICT (task_pk, sop_iuid)
                 DO UPDATE SET status = excluded.status, reason = excluded.reason",
            )
            .await
            .map_err(&e)?;
        // Polled together, the two go out pipelined: one round trip.
        let params: [&(dyn ToSql + Sync); 4] = [&pk, &sops, &statuses, &reasons];
        tokio::try_join!(
            tx.batch_execute("SET LOCAL synchronous_commit = off"),
            tx.execute(&insert, &params),
        )
        .map_err(&e)?;
        tx.commit().await.map_err(&e)?;
        Ok(())
    }

    async fn instance_results_of(
        &self,
        task_id: &str,
    ) -> Result<HashMap<String, InstanceResult>, QueueError> {
        let pk = task_pk(task_id)?;
        let e = self.err("read instance results");
        let c = self.client().await?;
        let rows = c
            .query(
                &c.prepare_cached(
                    "SELECT sop_iuid, status, reason FROM task_instance WHERE task_pk = $1",
                )
                .await
                .map_err(&e)?,
                &[&pk],
            )
            .await
            .map_err(&e)?;
        Ok(rows
            .iter()
            .map(|r| {
                let sop: String = r.get(0);
                let result = InstanceResult {
                    sop_iuid: sop.clone(),
                    status: InstanceStatus::parse(r.get::<_, &str>(1))
                        .unwrap_or(InstanceStatus::Failed),
                    reason: r.get(2),
                    kind: None,
                    retry: Default::default(),
                };
                (sop, result)
            })
            .collect())
    }

    async fn instance_count(&self, task_id: &str) -> Result<u64, QueueError> {
        let pk = task_pk(task_id)?;
        let e = self.err("count instance results");
        let c = self.client().await?;
        let n: i64 = c
            .query_one(
                "SELECT COUNT(*) FROM task_instance WHERE task_pk = $1",
                &[&pk],
            )
            .await
            .map_err(&e)?
            .get(0);
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn cancel_record(&self, task_id: &str) -> Result<CancelResult, QueueError> {
        let pk = task_pk(task_id)?;
        let e = self.err("cancel task");
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(&e)?;
        // The row lock makes a waiting task either taken or canceled,
        // never both, whichever process takes it.
        let Some(status) = lock_status(&tx, pk).await.map_err(&e)? else {
            return Err(QueueError::NotFound(task_id.to_string()));
        };
        let r = match status {
            Status::Scheduled | Status::ScheduledForRetry => {
                tx.execute(
                    "UPDATE task SET status = $1, updated_time = $2, proc_end_time = $2,
                        outcome_msg = COALESCE(outcome_msg || ' ', '') || 'Canceled before it started'
                     WHERE pk = $3",
                    &[&Status::Canceled.as_str(), &now(), &pk],
                )
                .await
                .map_err(&e)?;
                CancelResult::Canceled
            }
            Status::InProcess => CancelResult::Running,
            done => CancelResult::AlreadyDone(done),
        };
        tx.commit().await.map_err(&e)?;
        Ok(r)
    }

    async fn reschedule_record(
        &self,
        task_id: &str,
        r: Reschedule,
    ) -> Result<ExportTask, QueueError> {
        let pk = task_pk(task_id)?;
        let e = self.err("reschedule task");
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(&e)?;
        match lock_status(&tx, pk).await.map_err(&e)? {
            None => return Err(QueueError::NotFound(task_id.to_string())),
            Some(Status::InProcess) => {
                return Err(QueueError::Conflict(format!(
                    "Cannot reschedule Task[id={task_id}] with Status: IN PROCESS; cancel it first"
                )));
            }
            Some(_) => {}
        }
        let (exporter, queue, aet) = match &r.exporter {
            Some(e) => (
                Some(e.exporter_id.clone()),
                Some(e.queue.clone()),
                e.local_aet.clone(),
            ),
            None => (None, None, None),
        };
        let row = tx
            .query_one(
                "UPDATE task SET status = $1, scheduled_time = $2, updated_time = $3,
                    device_name = $4, num_failures = 0, proc_start_time = NULL,
                    proc_end_time = NULL, outcome_msg = NULL, error_msg = NULL,
                    num_instances = NULL, completed = 0, warning = 0, failed = 0, missing = 0,
                    exporter_id = COALESCE($5, exporter_id),
                    queue_name = COALESCE($6, queue_name),
                    local_aet = CASE WHEN $5::text IS NULL THEN local_aet ELSE $7 END
                 WHERE pk = $8
                 RETURNING *",
                &[
                    &Status::Scheduled.as_str(),
                    &ms(r.scheduled_time),
                    &now(),
                    &self.device_name,
                    &exporter,
                    &queue,
                    &aet,
                    &pk,
                ],
            )
            .await
            .map_err(&e)?;
        tx.execute("DELETE FROM task_instance WHERE task_pk = $1", &[&pk])
            .await
            .map_err(&e)?;
        retire_messages(&tx, pk).await.map_err(&e)?;
        let t = row_to_task(&row).map_err(&e)?;
        tx.commit().await.map_err(&e)?;
        Ok(t)
    }

    async fn delete_record(&self, task_id: &str) -> Result<(), QueueError> {
        let pk = task_pk(task_id)?;
        let e = self.err("delete task");
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(&e)?;
        match lock_status(&tx, pk).await.map_err(&e)? {
            None => return Err(QueueError::NotFound(task_id.to_string())),
            Some(Status::InProcess) => {
                return Err(QueueError::Conflict(format!(
                    "Cannot delete Task[id={task_id}] with Status: IN PROCESS; cancel it first"
                )));
            }
            Some(_) => {}
        }
        retire_messages(&tx, pk).await.map_err(&e)?;
        // Per-instance results go with it (ON DELETE CASCADE).
        tx.execute("DELETE FROM task WHERE pk = $1", &[&pk])
            .await
            .map_err(&e)?;
        tx.commit().await.map_err(&e)?;
        Ok(())
    }

    async fn delete_matching_records(&self, filter: TaskFilter) -> Result<(u64, u64), QueueError> {
        let e = self.err("delete tasks");
        let (where_, mut args) = filter_sql(&filter);
        args.push(Box::new(Status::InProcess.as_str()));
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(&e)?;
        // Locks the rows to delete, in one order so that two bulk deletes
        // do not deadlock on each other. PostgreSQL re-checks the condition on a
        // row another process changed meanwhile: one taken (IN PROCESS)
        // since the statement began is skipped, never deleted.
        let chosen: Vec<i64> = tx
            .query(
                &format!(
                    "SELECT pk FROM task{where_} AND status <> ${} ORDER BY pk FOR UPDATE",
                    args.len()
                ),
                &refs(&args),
            )
            .await
            .map_err(&e)?
            .iter()
            .map(|r| r.get(0))
            .collect();
        tx.execute(
            "INSERT INTO retired_message (message_id)
             SELECT message_id FROM task_message WHERE task_pk = ANY($1)
             ON CONFLICT DO NOTHING",
            &[&chosen],
        )
        .await
        .map_err(&e)?;
        tx.execute(
            "DELETE FROM message_delivery WHERE message_id IN
             (SELECT message_id FROM task_message WHERE task_pk = ANY($1))",
            &[&chosen],
        )
        .await
        .map_err(&e)?;
        let deleted = tx
            .execute("DELETE FROM task WHERE pk = ANY($1)", &[&chosen])
            .await
            .map_err(&e)?;
        // What is left of the match is what was IN PROCESS.
        args.pop();
        let kept: i64 = tx
            .query_one(&format!("SELECT COUNT(*) FROM task{where_}"), &refs(&args))
            .await
            .map_err(&e)?
            .get(0);
        tx.commit().await.map_err(&e)?;
        Ok((deleted, u64::try_from(kept).unwrap_or(0)))
    }

    /// Records the outcome of a run. With `owner`, only if the task is
    /// still that instance's run: one taken over by another instance
    /// (see [`super::pg_delivery`]) keeps the other's run, and this one's
    /// outcome is refused with [`QueueError::TakenOver`].
    pub(super) async fn record_task_outcome(
        &self,
        task_id: &str,
        outcome: Outcome,
        retry_at: Option<DateTime<Utc>>,
        owner: Option<&str>,
    ) -> Result<ExportTask, QueueError> {
        let pk = task_pk(task_id)?;
        let e = self.err("record outcome");
        let failed = matches!(outcome.status, Status::Failed) || retry_at.is_some();
        let status = if retry_at.is_some() {
            Status::ScheduledForRetry
        } else {
            outcome.status
        };
        let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        let c = self.client().await?;
        // The outcome and the cleared counts in one statement, so one
        // commit and one round trip: the deletions act on the row the
        // update returned, and on nothing when it returned none.
        let row = c
            .query_opt(
                &c.prepare_cached(
                    "WITH done AS (
                        UPDATE task SET status = $1, outcome_msg = $2, error_msg = $3,
                            proc_end_time = $4, updated_time = $4,
                            num_failures = num_failures + $5, num_instances = $6,
                            completed = $7, warning = $8, failed = $9, missing = $10,
                            scheduled_time = COALESCE($11, scheduled_time)
                        WHERE pk = $12 AND ($13::TEXT IS NULL OR owner = $13)
                        RETURNING *),
                     takes AS (
                        DELETE FROM task_take WHERE task_pk IN (SELECT pk FROM done)),
                     deliveries AS (
                        DELETE FROM message_delivery WHERE message_id IN
                            (SELECT message_id FROM task_message
                             WHERE task_pk IN (SELECT pk FROM done)))
                     SELECT * FROM done",
                )
                .await
                .map_err(&e)?,
                &[
                    &status.as_str(),
                    &outcome.message,
                    &outcome.error,
                    &now(),
                    &i32::from(failed),
                    &n(outcome.number_of_instances),
                    &n(outcome.counts.completed),
                    &n(outcome.counts.warning),
                    &n(outcome.counts.failed),
                    &n(outcome.counts.missing),
                    &retry_at.map(ms),
                    &pk,
                    &owner,
                ],
            )
            .await
            .map_err(&e)?;
        let Some(row) = row else {
            let now_owner = c
                .query_opt("SELECT owner FROM task WHERE pk = $1", &[&pk])
                .await
                .map_err(&e)?;
            return Err(match now_owner {
                None => QueueError::NotFound(task_id.to_string()),
                Some(r) => QueueError::TakenOver {
                    task: task_id.to_string(),
                    by: r.get(0),
                },
            });
        };
        row_to_task(&row).map_err(&e)
    }

    async fn requeue_in_process(&self) -> Result<u64, QueueError> {
        let e = self.err("requeue unfinished tasks");
        let c = self.client().await?;
        // Only this device's: another device's running tasks are its own;
        // and of this device only what this instance (or a version before
        // owners were kept) left: another instance of the device may be
        // running the rest right now.
        let n = c
            .execute(
                "UPDATE task SET status = $1, updated_time = $2, owner = NULL
                 WHERE status = $3 AND device_name = $4 AND (owner = $5 OR owner IS NULL)",
                &[
                    &Status::Scheduled.as_str(),
                    &now(),
                    &Status::InProcess.as_str(),
                    &self.device_name,
                    &self.instance,
                ],
            )
            .await
            .map_err(&e)?;
        Ok(n)
    }
}

impl TaskStore for PgStore {
    fn ping(&self) -> BoxFuture<'_, Result<(), QueueError>> {
        async move {
            let c = self.client().await?;
            c.query_one("SELECT 1", &[])
                .await
                .map_err(self.err("ping"))?;
            Ok(())
        }
        .boxed()
    }

    fn insert(&self, init: RecordInit) -> BoxFuture<'_, Result<ExportTask, QueueError>> {
        self.insert_record(init).boxed()
    }

    fn get<'a>(&'a self, task_id: &'a str) -> BoxFuture<'a, Result<ExportTask, QueueError>> {
        self.get_record(task_id).boxed()
    }

    fn list(&self, filter: TaskFilter) -> BoxFuture<'_, Result<Vec<ExportTask>, QueueError>> {
        self.list_records(filter).boxed()
    }

    fn count(&self, filter: TaskFilter) -> BoxFuture<'_, Result<u64, QueueError>> {
        self.count_records(filter).boxed()
    }

    fn status_counts<'a>(
        &'a self,
        device: &'a str,
    ) -> BoxFuture<'a, Result<Vec<super::StatusCount>, QueueError>> {
        self.status_counts_of(device).boxed()
    }

    fn batches(&self, filter: TaskFilter) -> BoxFuture<'_, Result<Vec<BatchSummary>, QueueError>> {
        self.batch_summaries(filter).boxed()
    }

    fn record_instances<'a>(
        &'a self,
        task_id: &'a str,
        results: Vec<InstanceResult>,
    ) -> BoxFuture<'a, Result<(), QueueError>> {
        self.record_instance_results(task_id, results).boxed()
    }

    fn instance_results<'a>(
        &'a self,
        task_id: &'a str,
    ) -> BoxFuture<'a, Result<HashMap<String, InstanceResult>, QueueError>> {
        self.instance_results_of(task_id).boxed()
    }

    fn instance_result_count<'a>(
        &'a self,
        task_id: &'a str,
    ) -> BoxFuture<'a, Result<u64, QueueError>> {
        self.instance_count(task_id).boxed()
    }

    fn cancel<'a>(&'a self, task_id: &'a str) -> BoxFuture<'a, Result<CancelResult, QueueError>> {
        self.cancel_record(task_id).boxed()
    }

    fn reschedule<'a>(
        &'a self,
        task_id: &'a str,
        r: Reschedule,
    ) -> BoxFuture<'a, Result<ExportTask, QueueError>> {
        self.reschedule_record(task_id, r).boxed()
    }

    fn delete<'a>(&'a self, task_id: &'a str) -> BoxFuture<'a, Result<(), QueueError>> {
        self.delete_record(task_id).boxed()
    }

    fn delete_matching(&self, filter: TaskFilter) -> BoxFuture<'_, Result<(u64, u64), QueueError>> {
        self.delete_matching_records(filter).boxed()
    }

    fn record_outcome<'a>(
        &'a self,
        task_id: &'a str,
        outcome: Outcome,
        retry_at: Option<DateTime<Utc>>,
    ) -> BoxFuture<'a, Result<ExportTask, QueueError>> {
        self.record_task_outcome(task_id, outcome, retry_at, None)
            .boxed()
    }

    fn requeue_unfinished(&self) -> BoxFuture<'_, Result<u64, QueueError>> {
        self.requeue_in_process().boxed()
    }
}

/// Changes the delivery counts of task `pk` as `change` says, inside the
/// transaction that changes its record (see [`Count`]).
async fn change_counts(
    tx: &Transaction<'_>,
    pk: i64,
    change: Count,
) -> Result<(), tokio_postgres::Error> {
    match change {
        Count::Reset => reset_counts(tx, pk).await,
        Count::Uncount => {
            tx.execute(
                "UPDATE task_take SET takes = GREATEST(takes - 1, 0) WHERE task_pk = $1",
                &[&pk],
            )
            .await?;
            tx.execute(
                "UPDATE message_delivery SET deliveries = GREATEST(deliveries - 1, 0)
                 WHERE message_id IN (SELECT message_id FROM task_message WHERE task_pk = $1)",
                &[&pk],
            )
            .await?;
            Ok(())
        }
        Count::Keep => Ok(()),
    }
}

/// The bookkeeping of a broker delivery in the shared database. A message
/// redelivered to another instance (its first taker died) finds the record
/// through `task_message` and takes it over: the same record, now owned
/// by the new instance, resumed from its per-instance results.
impl PgStore {
    async fn begin_delivery_in_db(
        &self,
        message_id: &str,
        start: bool,
    ) -> Result<Begun, QueueError> {
        let e = self.err("count a delivery");
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(&e)?;
        let retired_st = tx
            .prepare_cached("SELECT EXISTS (SELECT 1 FROM retired_message WHERE message_id = $1)")
            .await
            .map_err(&e)?;
        // Locked: a cancel or delete on another instance waits for this
        // decision, and this decision for theirs.
        let record_st = tx
            .prepare_cached(
                "SELECT task.* FROM task JOIN task_message ON task_message.task_pk = task.pk
                 WHERE task_message.message_id = $1 FOR UPDATE OF task",
            )
            .await
            .map_err(&e)?;
        let by_message: [&(dyn ToSql + Sync); 1] = [&message_id];
        // What this transaction writes is acknowledged to nobody: a count
        // of deliveries and IN PROCESS, both redone by the redelivery
        // that follows a crash of this process (the message is not acked
        // before the outcome's durable commit, which also flushes this
        // one). So it commits without waiting for the WAL flush, as the
        // per-instance results; only a crash of the database server
        // itself could lose it, and then one delivery goes uncounted.
        // The three go out pipelined: one round trip.
        let (_, retired, record) = tokio::try_join!(
            tx.batch_execute("SET LOCAL synchronous_commit = off"),
            tx.query_one(&retired_st, &by_message),
            tx.query_opt(&record_st, &by_message),
        )
        .map_err(&e)?;
        let retired: bool = retired.get(0);
        let record = match record {
            Some(row) => Some(row_to_task(&row).map_err(&e)?),
            None => None,
        };
        if retired || record.as_ref().is_some_and(|t| t.status.is_done()) {
            tx.execute(
                &tx.prepare_cached("DELETE FROM message_delivery WHERE message_id = $1")
                    .await
                    .map_err(&e)?,
                &[&message_id],
            )
            .await
            .map_err(&e)?;
            tx.commit().await.map_err(&e)?;
            return Ok(Begun {
                deliveries: 0,
                retired,
                record,
                started: false,
            });
        }
        let deliveries: i32 = tx
            .query_one(
                &tx.prepare_cached(
                    "INSERT INTO message_delivery (message_id, deliveries) VALUES ($1, 1)
                 ON CONFLICT (message_id)
                 DO UPDATE SET deliveries = message_delivery.deliveries + 1
                 RETURNING deliveries",
                )
                .await
                .map_err(&e)?,
                &[&message_id],
            )
            .await
            .map_err(&e)?
            .get(0);
        let deliveries = u32::try_from(deliveries).unwrap_or(0);
        let mut begun = Begun {
            deliveries,
            retired: false,
            record,
            started: false,
        };
        if let Some(t) = &begun.record
            && start
            && deliveries <= self.max_deliveries
        {
            let pk = task_pk(&t.task_id)?;
            let now = now();
            let row = tx
                .query_one(
                    &tx.prepare_cached(
                        "UPDATE task SET status = $1, proc_start_time = $2, updated_time = $2,
                        owner = $3
                     WHERE pk = $4 RETURNING *",
                    )
                    .await
                    .map_err(&e)?,
                    &[&Status::InProcess.as_str(), &now, &self.instance, &pk],
                )
                .await
                .map_err(&e)?;
            begun.record = Some(row_to_task(&row).map_err(&e)?);
            begun.started = true;
        }
        tx.commit().await.map_err(&e)?;
        Ok(begun)
    }

    async fn unstart_record_in_db(&self, task_id: &str, count: Count) -> Result<(), QueueError> {
        let pk = task_pk(task_id)?;
        let e = self.err("hand a task back");
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(&e)?;
        tx.execute(
            "UPDATE task SET status = $1, updated_time = $2, owner = NULL
             WHERE pk = $3 AND status = $4",
            &[
                &Status::Scheduled.as_str(),
                &now(),
                &pk,
                &Status::InProcess.as_str(),
            ],
        )
        .await
        .map_err(&e)?;
        change_counts(&tx, pk, count).await.map_err(&e)?;
        tx.commit().await.map_err(&e)?;
        Ok(())
    }

    async fn fail_record_in_db(&self, task_id: &str, error: String) -> Result<(), QueueError> {
        let pk = task_pk(task_id)?;
        let e = self.err("record an undeliverable task");
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(&e)?;
        let now = now();
        tx.execute(
            "UPDATE task SET status = $1, updated_time = $2, proc_end_time = $2, error_msg = $3,
                outcome_msg = $3, num_failures = num_failures + 1, owner = NULL WHERE pk = $4",
            &[&Status::Failed.as_str(), &now, &error, &pk],
        )
        .await
        .map_err(&e)?;
        reset_counts(&tx, pk).await.map_err(&e)?;
        tx.commit().await.map_err(&e)?;
        Ok(())
    }

    async fn link_message_in_db(&self, task_id: &str, message_id: &str) -> Result<(), QueueError> {
        let pk = task_pk(task_id)?;
        let e = self.err("link a broker message");
        self.client()
            .await?
            .execute(
                "INSERT INTO task_message (message_id, task_pk) VALUES ($1, $2)
                 ON CONFLICT (message_id) DO UPDATE SET task_pk = excluded.task_pk",
                &[&message_id, &pk],
            )
            .await
            .map_err(&e)?;
        Ok(())
    }
}

impl DeliveryLedger for PgStore {
    fn max_deliveries(&self) -> u32 {
        self.max_deliveries
    }

    fn begin_delivery<'a>(
        &'a self,
        message_id: &'a str,
        start: bool,
    ) -> BoxFuture<'a, Result<Begun, QueueError>> {
        self.begin_delivery_in_db(message_id, start).boxed()
    }

    fn unstart_record<'a>(
        &'a self,
        task_id: &'a str,
        count: Count,
    ) -> BoxFuture<'a, Result<(), QueueError>> {
        self.unstart_record_in_db(task_id, count).boxed()
    }

    fn fail_record<'a>(
        &'a self,
        task_id: &'a str,
        error: String,
    ) -> BoxFuture<'a, Result<(), QueueError>> {
        self.fail_record_in_db(task_id, error).boxed()
    }

    fn link_message<'a>(
        &'a self,
        task_id: &'a str,
        message_id: &'a str,
    ) -> BoxFuture<'a, Result<(), QueueError>> {
        self.link_message_in_db(task_id, message_id).boxed()
    }
}

/// What the PostgreSQL delivery ([`super::pg_delivery`]) reads of the
/// store beside the helpers above it shares (`client`, `err`,
/// `row_to_task`, `reset_counts`): kept in a block of its own so that the
/// delivery's needs stay visible and apart from the store's queries.
impl PgStore {
    /// The device whose tasks this store's deliveries take.
    pub(super) fn device(&self) -> &str {
        &self.device_name
    }

    /// This process's name among the device's instances (see
    /// [`PgStore::with_instance`]): the owner a take records.
    pub(super) fn owner(&self) -> &str {
        &self.instance
    }
}

#[cfg(test)]
mod tests {
    use super::masked;

    #[test]
    fn passwords_are_masked_wherever_the_url_holds_them() {
        for (url, shown) in [
            (
                "postgres://stow:s3cret@db:5432/stow",
                "postgres://stow:****@db:5432/stow",
            ),
            (
                "postgres://stow@db/stow?password=s3cret&sslmode=disable",
                "postgres://****@db/stow?password=****&sslmode=disable",
            ),
            (
                "postgres://stow@db/stow?PASSWORD=s3cret",
                "postgres://****@db/stow?password=****",
            ),
            (
                "host=db user=stow password = 's3 cr\\'et' dbname=stow",
                "host=db user=stow password=**** dbname=stow",
            ),
            (
                "host=db password=s3cret user=stow",
                "host=db password=**** user=stow",
            ),
            ("postgres://db/passwords", "postgres://db/passwords"),
        ] {
            assert_eq!(masked(url), shown, "{url}");
            assert!(!masked(url).contains("s3"), "{url}");
        }
    }
}
