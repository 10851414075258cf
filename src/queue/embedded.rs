//! The SQLite task store ([`SqliteStore`]: `queue.sqlite` under the data
//! directory) and the embedded delivery over it ([`EmbeddedQueue`]).
//!
//! The store keeps the records of every backend (the broker-backed queue
//! included) and, in tables of its own, each delivery's bookkeeping: the
//! embedded queue's takes, and the broker messages linked to records with
//! their delivery counts. That bookkeeping is reached through crate-private
//! methods only; everything else goes through [`TaskStore`]. The embedded
//! delivery owns waking its workers and must not write records but through
//! the store.
//!
//! Works like dcm4chee's task table: a task is SCHEDULED until due, then
//! IN PROCESS, then one of the final statuses. At start-up, tasks left IN
//! PROCESS by a killed process go back to SCHEDULED (dcm4chee's
//! `rescheduleInProcess`), so none is lost. Another process on the same
//! file (the `export` CLI) publishes by inserting; workers poll the file at a
//! short interval and are woken at once for tasks published in-process.
//!
//! Each take is counted in the transaction that marks the task IN PROCESS,
//! and the count is cleared with its outcome: a task taken
//! `max-deliveries` times without an outcome (each run ended with the
//! process) ends FAILED at its next take instead of running again. The
//! broker-backed queue keeps the same count per message here.
//!
//! The file's schema is versioned: a `schema_version` table and numbered
//! steps ([`SQLITE_SCHEMA_VERSION`]) applied at open; a file from before
//! versioning is version 1, and one a newer stow-exporter migrated is
//! refused ([`QueueError::SchemaTooNew`]).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use rusqlite::{OptionalExtension, Row, params};
use tokio::sync::Notify;

use super::ledger::{Begun, Count, DeliveryLedger};
use super::{
    BatchSummary, CancelResult, HealthError, Hold, NewTask, OrderField, QueueError, QueueOptions,
    RecordInit, Release, Reschedule, TaskDelivery, TaskFilter, TaskStore,
};
use crate::db::Db;
use crate::outcome::{InstanceResult, InstanceStatus, Outcome};
use crate::task::{ExportTask, Status};

/// Version 1 of `queue.sqlite`: the schema the store had before it was
/// versioned. Its statements are idempotent (`IF NOT EXISTS`) because a
/// file from that time has no `schema_version` table and gets this step
/// applied over the tables it holds (completing an older file that lacks
/// an index added since).
const SCHEMA_V1: &str = "
CREATE TABLE IF NOT EXISTS task (
    pk INTEGER PRIMARY KEY AUTOINCREMENT,
    device_name TEXT NOT NULL,
    queue_name TEXT NOT NULL,
    status TEXT NOT NULL,
    batch_id TEXT,
    created_time TEXT NOT NULL,
    updated_time TEXT NOT NULL,
    scheduled_time TEXT NOT NULL,
    proc_start_time TEXT,
    proc_end_time TEXT,
    num_failures INTEGER NOT NULL DEFAULT 0,
    outcome_msg TEXT,
    error_msg TEXT,
    exporter_id TEXT NOT NULL,
    local_aet TEXT,
    study_iuid TEXT NOT NULL,
    series_iuid TEXT NOT NULL,
    sop_iuid TEXT NOT NULL,
    num_instances INTEGER,
    completed INTEGER NOT NULL DEFAULT 0,
    warning INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0,
    missing INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS task_due ON task(queue_name, status, scheduled_time);
CREATE INDEX IF NOT EXISTS task_updated ON task(updated_time);
CREATE TABLE IF NOT EXISTS task_instance (
    task_pk INTEGER NOT NULL REFERENCES task(pk) ON DELETE CASCADE,
    sop_iuid TEXT NOT NULL,
    status TEXT NOT NULL,
    reason TEXT,
    PRIMARY KEY (task_pk, sop_iuid)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS task_message (
    message_id TEXT PRIMARY KEY,
    task_pk INTEGER NOT NULL REFERENCES task(pk) ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS task_created ON task(created_time);
CREATE INDEX IF NOT EXISTS task_batch ON task(batch_id);
-- Broker messages of deleted or rescheduled tasks: acknowledged without
-- running when they come (a rescheduled task travels in a new message).
CREATE TABLE IF NOT EXISTS retired_message (
    message_id TEXT PRIMARY KEY
) WITHOUT ROWID;
-- How often a task was taken since its last outcome (embedded queue).
CREATE TABLE IF NOT EXISTS task_take (
    task_pk INTEGER PRIMARY KEY REFERENCES task(pk) ON DELETE CASCADE,
    takes INTEGER NOT NULL
);
-- How often a broker message was delivered since it was last settled with
-- a decision (broker-backed queue); a message may come before its record.
CREATE TABLE IF NOT EXISTS message_delivery (
    message_id TEXT PRIMARY KEY,
    deliveries INTEGER NOT NULL
) WITHOUT ROWID;
";

/// The schema steps of `queue.sqlite`; step `i` (from 0) makes version
/// `i + 1`. Never edit a step that has shipped: add one.
const MIGRATIONS: &[&str] = &[SCHEMA_V1];

/// The schema version of `queue.sqlite` this code reads and writes.
pub const SQLITE_SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Brings `c` to the last of [`MIGRATIONS`] in one write transaction (so
/// that `serve` and the `export` CLI opening the file together apply each
/// step once); a file without a `schema_version` table is version 1 once
/// step 1 completed it. Returns the version found when it is newer than
/// this code's (nothing is changed then). An up-to-date file is not
/// written.
fn migrate(c: &mut rusqlite::Connection) -> rusqlite::Result<Result<(), i64>> {
    let versioned = |c: &rusqlite::Connection| -> rusqlite::Result<bool> {
        c.query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'",
            [],
            |r| r.get::<_, i64>(0),
        )
        .map(|n| n > 0)
    };
    let current = |c: &rusqlite::Connection| -> rusqlite::Result<i64> {
        c.query_row(
            "SELECT COALESCE(MAX(version), 0) FROM schema_version",
            [],
            |r| r.get(0),
        )
    };
    // The common case, a file at this version, reads and writes nothing else.
    if versioned(c)? && current(c)? == SQLITE_SCHEMA_VERSION {
        return Ok(Ok(()));
    }
    let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let found = if versioned(&tx)? {
        current(&tx)?
    } else {
        tx.execute_batch(
            "CREATE TABLE schema_version (
                version INTEGER PRIMARY KEY,
                applied_time TEXT NOT NULL
            );",
        )?;
        0
    };
    if found > SQLITE_SCHEMA_VERSION {
        return Ok(Err(found));
    }
    for (i, step) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        tx.execute_batch(step)?;
        tx.execute(
            "INSERT INTO schema_version (version, applied_time) VALUES (?1, ?2)",
            params![i as i64 + 1, ts(Utc::now())],
        )?;
    }
    tx.commit()?;
    Ok(Ok(()))
}

/// How often an idle worker looks for tasks inserted by another process.
const POLL_INTERVAL: Duration = Duration::from_millis(250);

/// Fixed-width UTC timestamps compare correctly as text in SQL.
fn ts(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

fn parse_ts(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_default()
}

/// Applies `change` to the counts of task `pk` (its takes and the
/// deliveries of its broker messages).
fn change_counts(c: &rusqlite::Connection, pk: i64, change: Count) -> rusqlite::Result<()> {
    let messages = "SELECT message_id FROM task_message WHERE task_pk = ?1";
    match change {
        Count::Reset => {
            c.execute("DELETE FROM task_take WHERE task_pk = ?1", [pk])?;
            c.execute(
                &format!("DELETE FROM message_delivery WHERE message_id IN ({messages})"),
                [pk],
            )?;
        }
        Count::Uncount => {
            c.execute(
                "UPDATE task_take SET takes = MAX(takes - 1, 0) WHERE task_pk = ?1",
                [pk],
            )?;
            c.execute(
                &format!(
                    "UPDATE message_delivery SET deliveries = MAX(deliveries - 1, 0)
                     WHERE message_id IN ({messages})"
                ),
                [pk],
            )?;
        }
        Count::Keep => {}
    }
    Ok(())
}

/// The SQLite [`TaskStore`]. Clones share the database.
#[derive(Clone)]
pub struct SqliteStore {
    db: Db,
    device_name: String,
    /// See [`QueueOptions::max_deliveries`].
    max_deliveries: u32,
}

/// The embedded delivery: workers take due tasks from the [`SqliteStore`]
/// directly.
#[derive(Clone)]
pub struct EmbeddedQueue {
    store: SqliteStore,
    /// Wakes workers waiting in `next` at once for a task published or
    /// rescheduled in this process (another process's are found by polling).
    wake: Arc<Notify>,
}

impl EmbeddedQueue {
    /// The embedded delivery over `store`.
    pub fn new(store: SqliteStore) -> EmbeddedQueue {
        EmbeddedQueue {
            store,
            wake: Arc::new(Notify::new()),
        }
    }

    /// [`SqliteStore::open`] and the delivery over it.
    pub async fn open(
        data_dir: &Path,
        device_name: &str,
        recover: bool,
    ) -> Result<EmbeddedQueue, QueueError> {
        Ok(EmbeddedQueue::new(
            SqliteStore::open(data_dir, device_name, recover).await?,
        ))
    }

    /// [`SqliteStore::open_with`] and the delivery over it.
    pub async fn open_with(
        data_dir: &Path,
        device_name: &str,
        recover: bool,
        options: &QueueOptions,
    ) -> Result<EmbeddedQueue, QueueError> {
        Ok(EmbeddedQueue::new(
            SqliteStore::open_with(data_dir, device_name, recover, options).await?,
        ))
    }

    /// The store the tasks are taken from.
    pub fn store(&self) -> &SqliteStore {
        &self.store
    }
}

impl SqliteStore {
    /// Opens `<data_dir>/queue.sqlite` with the default [`QueueOptions`].
    /// With `recover`, tasks of `device_name` left IN PROCESS are
    /// rescheduled; only the process that runs the workers may do that,
    /// never a CLI that merely publishes.
    pub async fn open(
        data_dir: &Path,
        device_name: &str,
        recover: bool,
    ) -> Result<SqliteStore, QueueError> {
        SqliteStore::open_with(data_dir, device_name, recover, &QueueOptions::default()).await
    }

    /// [`SqliteStore::open`] with `options` (the delivery cap and how
    /// commits wait for the disk).
    pub async fn open_with(
        data_dir: &Path,
        device_name: &str,
        recover: bool,
        options: &QueueOptions,
    ) -> Result<SqliteStore, QueueError> {
        // The schema comes from the numbered migrations below, not from
        // the handle's one idempotent batch.
        let db = Db::open_with(&data_dir.join("queue.sqlite"), "", options.synchronous).await?;
        if let Err(found) = db.call(migrate).await? {
            return Err(QueueError::SchemaTooNew {
                database: db.path().display().to_string(),
                found,
                supported: SQLITE_SCHEMA_VERSION,
            });
        }
        let q = SqliteStore {
            db,
            device_name: device_name.to_string(),
            max_deliveries: options.max_deliveries.max(1),
        };
        if recover {
            let n = q.requeue_in_process().await?;
            if n > 0 {
                tracing::warn!(
                    tasks = n,
                    "rescheduled tasks left IN PROCESS by an earlier run"
                );
            }
        }
        Ok(q)
    }

    async fn requeue_in_process(&self) -> Result<u64, QueueError> {
        let device = self.device_name.clone();
        let n = self
            .db
            .call(move |c| {
                c.execute(
                    "UPDATE task SET status = ?1, updated_time = ?2 WHERE status = ?3 AND device_name = ?4",
                    params![Status::Scheduled.as_str(), ts(Utc::now()), Status::InProcess.as_str(), device],
                )
            })
            .await?;
        Ok(n as u64)
    }

    async fn take_due(
        &self,
        queue: &str,
        held: Vec<String>,
    ) -> Result<Option<ExportTask>, QueueError> {
        let queue = queue.to_string();
        let device = self.device_name.clone();
        let max = self.max_deliveries;
        let t = self
            .db
            .call(move |c| {
                let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                let now = ts(Utc::now());
                // Tasks of exporters outside their window stay where they are.
                let mut sql = String::from(
                    "SELECT pk FROM task WHERE queue_name = ?1 AND device_name = ?2
                       AND status IN (?3, ?4) AND scheduled_time <= ?5",
                );
                let mut args: Vec<String> = vec![
                    queue,
                    device,
                    Status::Scheduled.as_str().to_string(),
                    Status::ScheduledForRetry.as_str().to_string(),
                    now.clone(),
                ];
                if !held.is_empty() {
                    let marks: Vec<String> = (0..held.len()).map(|i| format!("?{}", i + 6)).collect();
                    sql.push_str(&format!(" AND exporter_id NOT IN ({})", marks.join(", ")));
                    args.extend(held);
                }
                sql.push_str(" ORDER BY scheduled_time, pk LIMIT 1");
                // The take is counted in this transaction, before the task
                // runs: a run that ends with the process still counts.
                let pk = loop {
                    let pk: Option<i64> = tx
                        .query_row(&sql, rusqlite::params_from_iter(args.iter()), |r| r.get(0))
                        .optional()?;
                    let Some(pk) = pk else {
                        // Commits the tasks given up on the way, if any.
                        tx.commit()?;
                        return Ok(None);
                    };
                    let takes: u32 = tx.query_row(
                        "INSERT INTO task_take (task_pk, takes) VALUES (?1, 1)
                         ON CONFLICT (task_pk) DO UPDATE SET takes = takes + 1 RETURNING takes",
                        [pk],
                        |r| r.get(0),
                    )?;
                    if takes <= max {
                        break pk;
                    }
                    let t = tx.query_row("SELECT * FROM task WHERE pk = ?1", [pk], row_to_task)?;
                    let reason = super::gave_up(max, "taken");
                    tracing::error!(task = pk, "{reason}");
                    tx.execute(
                        "UPDATE task SET status = ?1, updated_time = ?2, proc_end_time = ?2,
                            error_msg = ?3, outcome_msg = ?4, num_failures = num_failures + 1
                         WHERE pk = ?5",
                        params![
                            Status::Failed.as_str(),
                            now,
                            reason,
                            format!("Export {} failed: {reason}", t.entity()),
                            pk
                        ],
                    )?;
                    change_counts(&tx, pk, Count::Reset)?;
                };
                tx.execute(
                    "UPDATE task SET status = ?1, proc_start_time = ?2, updated_time = ?2 WHERE pk = ?3",
                    params![Status::InProcess.as_str(), now, pk],
                )?;
                let t = tx.query_row("SELECT * FROM task WHERE pk = ?1", [pk], row_to_task)?;
                tx.commit()?;
                Ok(Some(t))
            })
            .await?;
        Ok(t)
    }
}

impl SqliteStore {
    /// See [`TaskStore::insert`].
    async fn insert_record(&self, init: RecordInit) -> Result<ExportTask, QueueError> {
        let now = Utc::now();
        let t = self
            .db
            .call(move |c| {
                let tx = c.transaction()?;
                let r = init.task.request;
                let (outcome, error) = match init.failure {
                    Some(f) => (Some(f.outcome), Some(f.error)),
                    None => (None, None),
                };
                let end = init.status.is_done().then(|| ts(now));
                let start = (init.status == Status::InProcess).then(|| ts(now));
                tx.execute(
                    "INSERT INTO task (device_name, queue_name, status, batch_id, created_time, updated_time,
                        scheduled_time, exporter_id, local_aet, study_iuid, series_iuid, sop_iuid,
                        outcome_msg, error_msg, proc_end_time, num_failures, proc_start_time)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
                    params![
                        init.task.device_name,
                        init.task.queue,
                        init.status.as_str(),
                        r.batch_id,
                        ts(now),
                        ts(r.scheduled_time.unwrap_or(now)),
                        r.exporter_id,
                        init.task.local_aet,
                        r.study_iuid,
                        r.series_iuid.unwrap_or_else(|| "*".into()),
                        r.sop_iuid.unwrap_or_else(|| "*".into()),
                        outcome,
                        error,
                        end,
                        i64::from(init.status == Status::Failed),
                        start,
                    ],
                )?;
                let pk = tx.last_insert_rowid();
                if let Some(message_id) = init.message_id {
                    tx.execute(
                        "INSERT OR REPLACE INTO task_message (message_id, task_pk) VALUES (?1, ?2)",
                        params![message_id, pk],
                    )?;
                }
                if init.status.is_done() {
                    change_counts(&tx, pk, Count::Reset)?;
                }
                let t = tx.query_row("SELECT * FROM task WHERE pk = ?1", [pk], row_to_task)?;
                tx.commit()?;
                Ok(t)
            })
            .await?;
        Ok(t)
    }
}

/// The SQLite side of a broker-backed delivery's bookkeeping (see
/// [`DeliveryLedger`]): message links, delivery counts and retired
/// messages live in the same database as the records, so each step is one
/// transaction with the record it changes.
impl SqliteStore {
    /// Counts a delivery of broker message `message_id` and looks at its
    /// record, in one transaction committed before the task runs (so that a
    /// run that ends with the process still counts). With `start`, a
    /// record that has not ended is marked IN PROCESS unless the message
    /// is over `max-deliveries`. A retired message or an ended record is
    /// not counted (it is acknowledged without running).
    async fn begin_delivery_in_db(
        &self,
        message_id: &str,
        start: bool,
    ) -> Result<Begun, QueueError> {
        let mid = message_id.to_string();
        let max = self.max_deliveries;
        let begun = self
            .db
            .call(move |c| {
                let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                let retired: i64 = tx.query_row(
                    "SELECT COUNT(*) FROM retired_message WHERE message_id = ?1",
                    [&mid],
                    |r| r.get(0),
                )?;
                let record = tx
                    .query_row(
                        "SELECT task.* FROM task JOIN task_message ON task_message.task_pk = task.pk
                         WHERE task_message.message_id = ?1",
                        [&mid],
                        row_to_task,
                    )
                    .optional()?;
                if retired > 0 || record.as_ref().is_some_and(|t| t.status.is_done()) {
                    tx.execute("DELETE FROM message_delivery WHERE message_id = ?1", [&mid])?;
                    tx.commit()?;
                    return Ok(Begun {
                        deliveries: 0,
                        retired: retired > 0,
                        record,
                        started: false,
                    });
                }
                let deliveries: u32 = tx.query_row(
                    "INSERT INTO message_delivery (message_id, deliveries) VALUES (?1, 1)
                     ON CONFLICT (message_id) DO UPDATE SET deliveries = deliveries + 1
                     RETURNING deliveries",
                    [&mid],
                    |r| r.get(0),
                )?;
                let mut begun = Begun {
                    deliveries,
                    retired: false,
                    record,
                    started: false,
                };
                if let Some(t) = &begun.record
                    && start
                    && deliveries <= max
                {
                    let pk = task_pk_sql(&t.task_id)?;
                    tx.execute(
                        "UPDATE task SET status = ?1, proc_start_time = ?2, updated_time = ?2 WHERE pk = ?3",
                        params![Status::InProcess.as_str(), ts(Utc::now()), pk],
                    )?;
                    begun.record =
                        Some(tx.query_row("SELECT * FROM task WHERE pk = ?1", [pk], row_to_task)?);
                    begun.started = true;
                }
                tx.commit()?;
                Ok(begun)
            })
            .await?;
        Ok(begun)
    }

    /// Puts a record IN PROCESS back to SCHEDULED (held by a window, not
    /// yet due, or handed back by a worker), changing its counts as `count`
    /// says, in one transaction.
    async fn unstart_record_in_db(&self, task_id: &str, count: Count) -> Result<(), QueueError> {
        let pk = task_pk(task_id)?;
        self.db
            .call(move |c| {
                let tx = c.transaction()?;
                tx.execute(
                    "UPDATE task SET status = ?1, updated_time = ?2 WHERE pk = ?3 AND status = ?4",
                    params![
                        Status::Scheduled.as_str(),
                        ts(Utc::now()),
                        pk,
                        Status::InProcess.as_str()
                    ],
                )?;
                change_counts(&tx, pk, count)?;
                tx.commit()
            })
            .await?;
        Ok(())
    }

    /// Marks a record FAILED with a reason (a message that could not be delivered).
    async fn fail_record_in_db(&self, task_id: &str, error: String) -> Result<(), QueueError> {
        let pk = task_pk(task_id)?;
        self.db
            .call(move |c| {
                let tx = c.transaction()?;
                let now = ts(Utc::now());
                tx.execute(
                    "UPDATE task SET status = ?1, updated_time = ?2, proc_end_time = ?2, error_msg = ?3,
                        outcome_msg = ?3, num_failures = num_failures + 1 WHERE pk = ?4",
                    params![Status::Failed.as_str(), now, error, pk],
                )?;
                change_counts(&tx, pk, Count::Reset)?;
                tx.commit()
            })
            .await?;
        Ok(())
    }

    /// Links another broker message ID to a record.
    async fn link_message_in_db(&self, task_id: &str, message_id: &str) -> Result<(), QueueError> {
        let pk = task_pk(task_id)?;
        let mid = message_id.to_string();
        self.db
            .call(move |c| {
                c.execute(
                    "INSERT OR REPLACE INTO task_message (message_id, task_pk) VALUES (?1, ?2)",
                    params![mid, pk],
                )
            })
            .await?;
        Ok(())
    }
}

impl DeliveryLedger for SqliteStore {
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

/// The `WHERE` clause of a filter (without offset, limit and order), with
/// its arguments.
fn filter_sql(f: &TaskFilter) -> (String, Vec<String>) {
    let mut sql = String::from(" WHERE 1=1");
    let mut args: Vec<String> = Vec::new();
    if !f.exporter_ids.is_empty() {
        let mut marks = Vec::new();
        for e in &f.exporter_ids {
            args.push(e.clone());
            marks.push(format!("?{}", args.len()));
        }
        sql.push_str(&format!(" AND exporter_id IN ({})", marks.join(", ")));
    }
    let mut cond = |sql: &mut String, expr: &str, v: String| {
        args.push(v);
        sql.push_str(&format!(" AND {expr} ?{}", args.len()));
    };
    if let Some(v) = &f.study_iuid {
        cond(&mut sql, "study_iuid =", v.clone());
    }
    if let Some(v) = f.status {
        cond(&mut sql, "status =", v.as_str().to_string());
    }
    if let Some(v) = &f.batch_id {
        cond(&mut sql, "batch_id =", v.clone());
    }
    if let Some(v) = &f.device_name {
        cond(&mut sql, "device_name =", v.clone());
    }
    for (col, range) in [("created_time", f.created), ("updated_time", f.updated)] {
        if let Some(from) = range.from {
            cond(&mut sql, &format!("{col} >="), ts(from));
        }
        if let Some(to) = range.to {
            cond(&mut sql, &format!("{col} <"), ts(to));
        }
    }
    (sql, args)
}

/// `ORDER BY ... LIMIT ... OFFSET ...` of a filter.
fn order_sql(f: &TaskFilter) -> String {
    let col = match f.order.field {
        OrderField::CreatedTime => "created_time",
        OrderField::UpdatedTime => "updated_time",
        OrderField::ScheduledTime => "scheduled_time",
    };
    let dir = if f.order.descending { "DESC" } else { "ASC" };
    format!(
        " ORDER BY {col} {dir}, pk {dir} LIMIT {} OFFSET {}",
        f.limit
            .map(|l| i64::try_from(l).unwrap_or(i64::MAX))
            .unwrap_or(-1),
        i64::try_from(f.offset).unwrap_or(i64::MAX)
    )
}

/// Retires the broker messages of task `pk` (their links and counts go).
fn retire_messages(c: &rusqlite::Connection, pk: i64) -> rusqlite::Result<()> {
    change_counts(c, pk, Count::Reset)?;
    c.execute(
        "INSERT OR IGNORE INTO retired_message (message_id)
         SELECT message_id FROM task_message WHERE task_pk = ?1",
        [pk],
    )?;
    c.execute("DELETE FROM task_message WHERE task_pk = ?1", [pk])?;
    Ok(())
}

fn status_of(c: &rusqlite::Connection, pk: i64) -> rusqlite::Result<Option<Status>> {
    Ok(
        c.query_row("SELECT status FROM task WHERE pk = ?1", [pk], |r| {
            r.get::<_, String>(0)
        })
        .optional()?
        .map(|s| s.parse().unwrap_or(Status::Failed)),
    )
}

impl SqliteStore {
    /// See [`TaskStore::reschedule`].
    async fn reschedule_record(
        &self,
        task_id: &str,
        r: Reschedule,
    ) -> Result<ExportTask, QueueError> {
        let pk = task_pk(task_id)?;
        let id = task_id.to_string();
        let device = self.device_name.clone();
        let t = self
            .db
            .call(move |c| {
                let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                match status_of(&tx, pk)? {
                    None => return Ok(Err(QueueError::NotFound(id))),
                    Some(Status::InProcess) => {
                        return Ok(Err(QueueError::Conflict(format!(
                            "Cannot reschedule Task[id={id}] with Status: IN PROCESS; cancel it first"
                        ))));
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
                tx.execute(
                    "UPDATE task SET status = ?1, scheduled_time = ?2, updated_time = ?3,
                        device_name = ?4, num_failures = 0, proc_start_time = NULL,
                        proc_end_time = NULL, outcome_msg = NULL, error_msg = NULL,
                        num_instances = NULL, completed = 0, warning = 0, failed = 0, missing = 0,
                        exporter_id = COALESCE(?5, exporter_id),
                        queue_name = COALESCE(?6, queue_name),
                        local_aet = CASE WHEN ?5 IS NULL THEN local_aet ELSE ?7 END
                     WHERE pk = ?8",
                    params![
                        Status::Scheduled.as_str(),
                        ts(r.scheduled_time),
                        ts(Utc::now()),
                        device,
                        exporter,
                        queue,
                        aet,
                        pk
                    ],
                )?;
                tx.execute("DELETE FROM task_instance WHERE task_pk = ?1", [pk])?;
                retire_messages(&tx, pk)?;
                let t = tx.query_row("SELECT * FROM task WHERE pk = ?1", [pk], row_to_task)?;
                tx.commit()?;
                Ok(Ok(t))
            })
            .await??;
        Ok(t)
    }
}

fn row_to_task(r: &Row<'_>) -> rusqlite::Result<ExportTask> {
    let status: String = r.get("status")?;
    let opt_ts = |name: &str| -> rusqlite::Result<Option<DateTime<Utc>>> {
        Ok(r.get::<_, Option<String>>(name)?.map(|s| parse_ts(&s)))
    };
    Ok(ExportTask {
        task_id: r.get::<_, i64>("pk")?.to_string(),
        device_name: r.get("device_name")?,
        queue: r.get("queue_name")?,
        task_type: "EXPORT".into(),
        status: status.parse().unwrap_or(Status::Failed),
        batch_id: r.get("batch_id")?,
        created_time: parse_ts(&r.get::<_, String>("created_time")?),
        updated_time: parse_ts(&r.get::<_, String>("updated_time")?),
        scheduled_time: parse_ts(&r.get::<_, String>("scheduled_time")?),
        processing_start_time: opt_ts("proc_start_time")?,
        processing_end_time: opt_ts("proc_end_time")?,
        failures: r.get("num_failures")?,
        outcome_message: r.get("outcome_msg")?,
        error_message: r.get("error_msg")?,
        exporter_id: r.get("exporter_id")?,
        local_aet: r.get("local_aet")?,
        study_iuid: r.get("study_iuid")?,
        series_iuid: r.get("series_iuid")?,
        sop_iuid: r.get("sop_iuid")?,
        number_of_instances: r.get::<_, Option<i64>>("num_instances")?.map(|n| n as u64),
        completed: r.get::<_, i64>("completed")? as u64,
        warning: r.get::<_, i64>("warning")? as u64,
        failed: r.get::<_, i64>("failed")? as u64,
        missing: r.get::<_, i64>("missing")? as u64,
    })
}

fn task_pk(task_id: &str) -> Result<i64, QueueError> {
    task_id
        .parse()
        .map_err(|_| QueueError::NotFound(task_id.to_string()))
}

/// [`task_pk`] inside a database call (IDs read from the table itself).
fn task_pk_sql(task_id: &str) -> rusqlite::Result<i64> {
    task_id
        .parse()
        .map_err(|_| rusqlite::Error::InvalidParameterName(task_id.to_string()))
}

/// Runs `f` (one transaction) with `synchronous=NORMAL` on a connection
/// that otherwise runs FULL, and puts the connection's level back after,
/// whatever `f` returned.
fn relaxed_commit<R>(
    c: &mut rusqlite::Connection,
    f: impl FnOnce(&mut rusqlite::Connection) -> rusqlite::Result<R>,
) -> rusqlite::Result<R> {
    let level: i64 = c.pragma_query_value(None, "synchronous", |r| r.get(0))?;
    if level < 2 {
        return f(c);
    }
    c.pragma_update(None, "synchronous", "NORMAL")?;
    let result = f(c);
    c.pragma_update(None, "synchronous", level)?;
    result
}

impl TaskStore for SqliteStore {
    fn ping(&self) -> BoxFuture<'_, Result<(), QueueError>> {
        async move {
            self.db
                .call(|c| c.query_row("SELECT 1", [], |_| Ok(())))
                .await?;
            Ok(())
        }
        .boxed()
    }

    fn requeue_unfinished(&self) -> BoxFuture<'_, Result<u64, QueueError>> {
        self.requeue_in_process().boxed()
    }

    fn insert(&self, init: RecordInit) -> BoxFuture<'_, Result<ExportTask, QueueError>> {
        self.insert_record(init).boxed()
    }

    fn record_instances<'a>(
        &'a self,
        task_id: &'a str,
        results: Vec<InstanceResult>,
    ) -> BoxFuture<'a, Result<(), QueueError>> {
        async move {
            let pk = task_pk(task_id)?;
            self.db
                .call(move |c| {
                    // Per-instance results are acknowledged to nobody: they
                    // only spare a resumed export from sending again. So
                    // they commit without waiting for the disk; the next
                    // FULL commit (the outcome, a task taken or accepted)
                    // fsyncs the log with them. A power loss can at worst
                    // revert the latest results, whose instances are then
                    // sent again and answered as already stored. With
                    // `--sqlite-synchronous full` that is 26 % of export
                    // throughput saved (bench/hostile.sh).
                    relaxed_commit(c, |c| {
                        // One transaction per batch: one log write, not one per instance.
                        let tx = c.transaction()?;
                    {
                        let mut st = tx.prepare_cached(
                            "INSERT INTO task_instance (task_pk, sop_iuid, status, reason) VALUES (?1, ?2, ?3, ?4)
                             ON CONFLICT (task_pk, sop_iuid) DO UPDATE SET status = excluded.status, reason = excluded.reason",
                        )?;
                        for r in &results {
                            st.execute(params![pk, r.sop_iuid, r.status.as_str(), r.reason])?;
                        }
                    }
                    tx.commit()
                    })
                })
                .await?;
            Ok(())
        }
        .boxed()
    }

    fn instance_result_count<'a>(
        &'a self,
        task_id: &'a str,
    ) -> BoxFuture<'a, Result<u64, QueueError>> {
        async move {
            let pk = task_pk(task_id)?;
            let n: i64 = self
                .db
                .call(move |c| {
                    c.query_row(
                        "SELECT COUNT(*) FROM task_instance WHERE task_pk = ?1",
                        [pk],
                        |r| r.get(0),
                    )
                })
                .await?;
            Ok(n as u64)
        }
        .boxed()
    }

    fn instance_results<'a>(
        &'a self,
        task_id: &'a str,
    ) -> BoxFuture<'a, Result<HashMap<String, InstanceResult>, QueueError>> {
        async move {
            let pk = task_pk(task_id)?;
            let rows = self
                .db
                .call(move |c| {
                    let mut st = c.prepare(
                        "SELECT sop_iuid, status, reason FROM task_instance WHERE task_pk = ?1",
                    )?;
                    let rows = st
                        .query_map([pk], |r| {
                            Ok(InstanceResult {
                                sop_iuid: r.get(0)?,
                                status: InstanceStatus::parse(&r.get::<_, String>(1)?)
                                    .unwrap_or(InstanceStatus::Failed),
                                reason: r.get(2)?,
                                kind: None,
                                retry: Default::default(),
                            })
                        })?
                        .collect::<rusqlite::Result<Vec<_>>>()?;
                    Ok(rows)
                })
                .await?;
            Ok(rows.into_iter().map(|r| (r.sop_iuid.clone(), r)).collect())
        }
        .boxed()
    }

    fn record_outcome<'a>(
        &'a self,
        task_id: &'a str,
        outcome: Outcome,
        retry_at: Option<DateTime<Utc>>,
    ) -> BoxFuture<'a, Result<ExportTask, QueueError>> {
        async move {
            let pk = task_pk(task_id)?;
            let id = task_id.to_string();
            let t = self
                .db
                .call(move |c| {
                    let now = ts(Utc::now());
                    let failed = matches!(outcome.status, Status::Failed) || retry_at.is_some();
                    let status = if retry_at.is_some() {
                        Status::ScheduledForRetry
                    } else {
                        outcome.status
                    };
                    // The outcome and the cleared counts in one commit.
                    let tx = c.transaction()?;
                    tx.execute(
                        "UPDATE task SET status = ?1, outcome_msg = ?2, error_msg = ?3, proc_end_time = ?4,
                            updated_time = ?4, num_failures = num_failures + ?5, num_instances = ?6,
                            completed = ?7, warning = ?8, failed = ?9, missing = ?10,
                            scheduled_time = COALESCE(?11, scheduled_time)
                         WHERE pk = ?12",
                        params![
                            status.as_str(),
                            outcome.message,
                            outcome.error,
                            now,
                            i64::from(failed),
                            outcome.number_of_instances as i64,
                            outcome.counts.completed as i64,
                            outcome.counts.warning as i64,
                            outcome.counts.failed as i64,
                            outcome.counts.missing as i64,
                            retry_at.map(ts),
                            pk
                        ],
                    )?;
                    change_counts(&tx, pk, Count::Reset)?;
                    let t = tx
                        .query_row("SELECT * FROM task WHERE pk = ?1", [pk], row_to_task)
                        .optional()?;
                    tx.commit()?;
                    Ok(t)
                })
                .await?;
            t.ok_or(QueueError::NotFound(id))
        }
        .boxed()
    }

    fn cancel<'a>(&'a self, task_id: &'a str) -> BoxFuture<'a, Result<CancelResult, QueueError>> {
        async move {
            let pk = task_pk(task_id)?;
            let r = self
                .db
                .call(move |c| {
                    // One transaction: a waiting task is either taken by a
                    // worker or canceled, never both.
                    let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                    let status: Option<String> = tx
                        .query_row("SELECT status FROM task WHERE pk = ?1", [pk], |r| r.get(0))
                        .optional()?;
                    let Some(status) = status else {
                        return Ok(None);
                    };
                    let status: Status = status.parse().unwrap_or(Status::Failed);
                    let r = match status {
                        Status::Scheduled | Status::ScheduledForRetry => {
                            let now = ts(Utc::now());
                            tx.execute(
                                "UPDATE task SET status = ?1, updated_time = ?2, proc_end_time = ?2,
                                    outcome_msg = COALESCE(outcome_msg || ' ', '') || 'Canceled before it started'
                                 WHERE pk = ?3",
                                params![Status::Canceled.as_str(), now, pk],
                            )?;
                            CancelResult::Canceled
                        }
                        Status::InProcess => CancelResult::Running,
                        done => CancelResult::AlreadyDone(done),
                    };
                    tx.commit()?;
                    Ok(Some(r))
                })
                .await?;
            r.ok_or_else(|| QueueError::NotFound(task_id.to_string()))
        }
        .boxed()
    }

    fn list(&self, filter: TaskFilter) -> BoxFuture<'_, Result<Vec<ExportTask>, QueueError>> {
        async move {
            let t = self
                .db
                .call(move |c| {
                    let (where_, args) = filter_sql(&filter);
                    let sql = format!("SELECT * FROM task{where_}{}", order_sql(&filter));
                    let mut st = c.prepare(&sql)?;
                    let rows = st
                        .query_map(rusqlite::params_from_iter(args.iter()), row_to_task)?
                        .collect::<rusqlite::Result<Vec<_>>>()?;
                    Ok(rows)
                })
                .await?;
            Ok(t)
        }
        .boxed()
    }

    fn get<'a>(&'a self, task_id: &'a str) -> BoxFuture<'a, Result<ExportTask, QueueError>> {
        async move {
            let pk = task_pk(task_id)?;
            let t = self
                .db
                .call(move |c| {
                    c.query_row("SELECT * FROM task WHERE pk = ?1", [pk], row_to_task)
                        .optional()
                })
                .await?;
            t.ok_or_else(|| QueueError::NotFound(task_id.to_string()))
        }
        .boxed()
    }

    fn status_counts<'a>(
        &'a self,
        device: &'a str,
    ) -> BoxFuture<'a, Result<Vec<crate::queue::StatusCount>, QueueError>> {
        let device = device.to_string();
        async move {
            let rows = self
                .db
                .call(move |c| {
                    let mut st = c.prepare(
                        "SELECT queue_name, status, COUNT(*) FROM task WHERE device_name = ?1 \
                         GROUP BY queue_name, status",
                    )?;
                    let rows = st
                        .query_map([device], |r| {
                            Ok((r.get(0)?, r.get(1)?, r.get::<_, i64>(2)?))
                        })?
                        .collect::<Result<Vec<(String, String, i64)>, _>>()?;
                    Ok(rows)
                })
                .await?;
            Ok(rows
                .into_iter()
                .map(|(q, s, n)| (q, s, u64::try_from(n).unwrap_or(0)))
                .collect())
        }
        .boxed()
    }

    fn count(&self, filter: TaskFilter) -> BoxFuture<'_, Result<u64, QueueError>> {
        async move {
            let n: i64 = self
                .db
                .call(move |c| {
                    let (where_, args) = filter_sql(&filter);
                    c.query_row(
                        &format!("SELECT COUNT(*) FROM task{where_}"),
                        rusqlite::params_from_iter(args.iter()),
                        |r| r.get(0),
                    )
                })
                .await?;
            Ok(u64::try_from(n).unwrap_or(0))
        }
        .boxed()
    }

    fn reschedule<'a>(
        &'a self,
        task_id: &'a str,
        r: Reschedule,
    ) -> BoxFuture<'a, Result<ExportTask, QueueError>> {
        self.reschedule_record(task_id, r).boxed()
    }

    fn delete<'a>(&'a self, task_id: &'a str) -> BoxFuture<'a, Result<(), QueueError>> {
        async move {
            let pk = task_pk(task_id)?;
            let id = task_id.to_string();
            self.db
                .call(move |c| {
                    let tx =
                        c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                    match status_of(&tx, pk)? {
                        None => return Ok(Err(QueueError::NotFound(id))),
                        Some(Status::InProcess) => {
                            return Ok(Err(QueueError::Conflict(format!(
                                "Cannot delete Task[id={id}] with Status: IN PROCESS; cancel it first"
                            ))));
                        }
                        Some(_) => {}
                    }
                    retire_messages(&tx, pk)?;
                    // Per-instance results go with it (ON DELETE CASCADE).
                    tx.execute("DELETE FROM task WHERE pk = ?1", [pk])?;
                    tx.commit()?;
                    Ok(Ok(()))
                })
                .await?
        }
        .boxed()
    }

    fn delete_matching(&self, filter: TaskFilter) -> BoxFuture<'_, Result<(u64, u64), QueueError>> {
        async move {
            let n = self
                .db
                .call(move |c| {
                    let (where_, mut args) = filter_sql(&filter);
                    args.push(Status::InProcess.as_str().to_string());
                    let chosen =
                        format!("SELECT pk FROM task{where_} AND status != ?{}", args.len());
                    let tx =
                        c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                    tx.execute(
                        &format!(
                            "INSERT OR IGNORE INTO retired_message (message_id)
                             SELECT message_id FROM task_message WHERE task_pk IN ({chosen})"
                        ),
                        rusqlite::params_from_iter(args.iter()),
                    )?;
                    tx.execute(
                        &format!(
                            "DELETE FROM message_delivery WHERE message_id IN
                             (SELECT message_id FROM task_message WHERE task_pk IN ({chosen}))"
                        ),
                        rusqlite::params_from_iter(args.iter()),
                    )?;
                    let n = tx.execute(
                        &format!("DELETE FROM task WHERE pk IN ({chosen})"),
                        rusqlite::params_from_iter(args.iter()),
                    )?;
                    // What is left of the match is what was IN PROCESS.
                    args.pop();
                    let kept: i64 = tx.query_row(
                        &format!("SELECT COUNT(*) FROM task{where_}"),
                        rusqlite::params_from_iter(args.iter()),
                        |r| r.get(0),
                    )?;
                    tx.commit()?;
                    Ok((n as u64, kept as u64))
                })
                .await?;
            Ok(n)
        }
        .boxed()
    }

    fn batches(&self, filter: TaskFilter) -> BoxFuture<'_, Result<Vec<BatchSummary>, QueueError>> {
        async move {
            let v = self
                .db
                .call(move |c| {
                    let (where_, args) = filter_sql(&filter);
                    let where_ = format!("{where_} AND batch_id IS NOT NULL");
                    let paging = format!(
                        " LIMIT {} OFFSET {}",
                        filter
                            .limit
                            .map(|l| i64::try_from(l).unwrap_or(i64::MAX))
                            .unwrap_or(-1),
                        i64::try_from(filter.offset).unwrap_or(i64::MAX)
                    );
                    let mut st = c.prepare(&format!(
                        "SELECT batch_id, MIN(created_time), MAX(created_time), MIN(updated_time),
                            MAX(updated_time), MIN(scheduled_time), MAX(scheduled_time),
                            MIN(proc_start_time), MAX(proc_start_time), MIN(proc_end_time),
                            MAX(proc_end_time)
                         FROM task{where_} GROUP BY batch_id
                         ORDER BY MAX(updated_time) DESC, batch_id{paging}"
                    ))?;
                    let range =
                        |r: &Row<'_>, i: usize| -> rusqlite::Result<Option<[DateTime<Utc>; 2]>> {
                            let a: Option<String> = r.get(i)?;
                            let b: Option<String> = r.get(i + 1)?;
                            Ok(a.zip(b).map(|(a, b)| [parse_ts(&a), parse_ts(&b)]))
                        };
                    let mut out: Vec<BatchSummary> = st
                        .query_map(rusqlite::params_from_iter(args.iter()), |r| {
                            Ok(BatchSummary {
                                batch_id: r.get(0)?,
                                tasks: Default::default(),
                                device_names: Vec::new(),
                                exporter_ids: Vec::new(),
                                created_time_range: range(r, 1)?.unwrap_or_default(),
                                updated_time_range: range(r, 3)?.unwrap_or_default(),
                                scheduled_time_range: range(r, 5)?.unwrap_or_default(),
                                processing_start_time_range: range(r, 7)?,
                                processing_end_time_range: range(r, 9)?,
                            })
                        })?
                        .collect::<rusqlite::Result<_>>()?;
                    let mut st = c.prepare(&format!(
                        "SELECT batch_id, status, device_name, exporter_id, COUNT(*)
                         FROM task{where_} GROUP BY batch_id, status, device_name, exporter_id"
                    ))?;
                    let rows = st
                        .query_map(rusqlite::params_from_iter(args.iter()), |r| {
                            Ok((
                                r.get::<_, String>(0)?,
                                r.get::<_, String>(1)?,
                                r.get::<_, String>(2)?,
                                r.get::<_, String>(3)?,
                                r.get::<_, i64>(4)?,
                            ))
                        })?
                        .collect::<rusqlite::Result<Vec<_>>>()?;
                    let at: HashMap<String, usize> = out
                        .iter()
                        .enumerate()
                        .map(|(i, b)| (b.batch_id.clone(), i))
                        .collect();
                    for (batch, status, device, exporter, n) in rows {
                        let Some(&i) = at.get(&batch) else { continue };
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
                })
                .await?;
            Ok(v)
        }
        .boxed()
    }
}

impl TaskDelivery for EmbeddedQueue {
    fn publish(&self, task: NewTask) -> BoxFuture<'_, Result<ExportTask, QueueError>> {
        async move {
            // Stored through the store like any backend's record; the
            // record is what `next` takes.
            let t = self.store.insert(RecordInit::scheduled(task)).await?;
            self.wake.notify_waiters();
            Ok(t)
        }
        .boxed()
    }

    fn next<'a>(
        &'a self,
        queue: &'a str,
        hold: &'a (dyn Fn() -> Hold + Send + Sync),
    ) -> BoxFuture<'a, Result<ExportTask, QueueError>> {
        async move {
            loop {
                // Register interest before looking, so a publish between the
                // look and the wait is not missed.
                let notified = self.wake.notified();
                let h = hold();
                if !h.queue_closed
                    && let Some(t) = self.store.take_due(queue, h.exporters).await?
                {
                    return Ok(t);
                }
                let _ = tokio::time::timeout(POLL_INTERVAL, notified).await;
            }
        }
        .boxed()
    }

    fn finish<'a>(
        &'a self,
        task_id: &'a str,
        outcome: Outcome,
        retry_at: Option<DateTime<Utc>>,
    ) -> BoxFuture<'a, Result<ExportTask, QueueError>> {
        // The record is the queue: a retry is due at its scheduled time.
        self.store.record_outcome(task_id, outcome, retry_at)
    }

    fn release<'a>(&'a self, task_id: &'a str, why: Release) -> BoxFuture<'a, ()> {
        async move {
            let count = match why {
                Release::Shutdown | Release::Outage => Count::Uncount,
                Release::Fault => Count::Keep,
            };
            if let Err(e) = self.store.unstart_record(task_id, count).await {
                // Left IN PROCESS: the next start reschedules it.
                tracing::error!(task = %task_id, error = %e, "cannot hand the task back to the queue");
            }
            self.wake.notify_waiters();
        }
        .boxed()
    }

    fn redeliver<'a>(&'a self, _task: &'a ExportTask) -> BoxFuture<'a, Result<(), QueueError>> {
        // The reset record is the delivery: waiting workers look again now.
        self.wake.notify_waiters();
        futures_util::future::ready(Ok(())).boxed()
    }

    fn health(&self) -> BoxFuture<'_, Result<(), HealthError>> {
        async move {
            self.store
                .db
                .call(|c| c.query_row("SELECT COUNT(*) FROM task_take", [], |r| r.get::<_, i64>(0)))
                .await
                .map(|_| ())
                .map_err(|e| HealthError::Store(e.into()))
        }
        .boxed()
    }

    fn broker_depths<'a>(
        &'a self,
        _queues: &'a [String],
    ) -> BoxFuture<'a, Option<std::collections::BTreeMap<String, u64>>> {
        futures_util::future::ready(None).boxed()
    }

    fn backend(&self) -> super::Backend {
        super::Backend::Embedded
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::{Counts, TaskRequest};

    fn new_task(study: &str) -> NewTask {
        NewTask {
            request: TaskRequest {
                exporter_id: "E".into(),
                study_iuid: study.into(),
                series_iuid: None,
                sop_iuid: None,
                batch_id: Some("b".into()),
                scheduled_time: None,
            },
            device_name: "dev".into(),
            queue: "Q".into(),
            local_aet: Some("AET".into()),
        }
    }

    #[tokio::test]
    async fn publish_take_finish_and_recover() {
        let dir = tempfile::tempdir().unwrap();
        let q = EmbeddedQueue::open(dir.path(), "dev", true).await.unwrap();
        let t1 = q.publish(new_task("1.1")).await.unwrap();
        let t2 = q.publish(new_task("1.2")).await.unwrap();
        assert_eq!(t1.status, Status::Scheduled);
        assert_eq!(t1.series_iuid, "*");

        let got = q.next("Q", &Hold::none).await.unwrap();
        assert_eq!(got.task_id, t1.task_id);
        assert_eq!(got.status, Status::InProcess);
        q.store()
            .record_instances(&got.task_id, vec![InstanceResult::completed("9")])
            .await
            .unwrap();

        // Simulate a crash: a new process opens the same file.
        drop(q);
        let q = EmbeddedQueue::open(dir.path(), "dev", true).await.unwrap();
        assert_eq!(
            q.store().get(&t1.task_id).await.unwrap().status,
            Status::Scheduled
        );
        let again = q.next("Q", &Hold::none).await.unwrap();
        assert_eq!(
            again.task_id, t1.task_id,
            "the interrupted task comes back first"
        );
        let done = q.store().instance_results(&again.task_id).await.unwrap();
        assert_eq!(done["9"].status, InstanceStatus::Completed);
        assert_eq!(
            q.store()
                .instance_result_count(&again.task_id)
                .await
                .unwrap(),
            done.len() as u64
        );

        let fin = q
            .finish(
                &again.task_id,
                Outcome {
                    status: Status::Completed,
                    message: "ok".into(),
                    error: None,
                    counts: Counts {
                        completed: 1,
                        ..Counts::default()
                    },
                    number_of_instances: 1,
                    retry: Default::default(),
                },
                None,
            )
            .await
            .unwrap();
        assert_eq!(fin.status, Status::Completed);
        assert_eq!(fin.completed, 1);
        assert_eq!(q.next("Q", &Hold::none).await.unwrap().task_id, t2.task_id);

        let listed = q
            .store()
            .list(TaskFilter {
                status: Some(Status::Completed),
                ..TaskFilter::default()
            })
            .await
            .unwrap();
        assert_eq!(listed.len(), 1);
        assert!(q.store().get("nope").await.is_err());
    }

    async fn synchronous(q: &EmbeddedQueue) -> i64 {
        q.store
            .db
            .call(|c| c.pragma_query_value(None, "synchronous", |r| r.get(0)))
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn the_task_store_commits_with_synchronous_full_unless_relaxed() {
        let dir = tempfile::tempdir().unwrap();
        // 2 is FULL: the WAL is fsynced at every commit.
        let q = EmbeddedQueue::open(dir.path(), "dev", true).await.unwrap();
        assert_eq!(synchronous(&q).await, 2);
        // Per-instance results commit relaxed, and the connection is FULL
        // again for what follows (the outcome, the next task).
        let t = q.publish(new_task("1.2.3")).await.unwrap();
        let result = InstanceResult::completed("1.2.3.4");
        q.store()
            .record_instances(&t.task_id, vec![result])
            .await
            .unwrap();
        assert_eq!(
            q.store().instance_result_count(&t.task_id).await.unwrap(),
            1
        );
        assert_eq!(synchronous(&q).await, 2);
        let relaxed = QueueOptions {
            synchronous: crate::db::Synchronous::Normal,
            ..QueueOptions::default()
        };
        let q = EmbeddedQueue::open_with(dir.path(), "dev", true, &relaxed)
            .await
            .unwrap();
        assert_eq!(synchronous(&q).await, 1);
    }

    #[tokio::test]
    async fn a_task_taken_max_deliveries_times_without_an_outcome_ends_failed() {
        let dir = tempfile::tempdir().unwrap();
        let options = QueueOptions {
            max_deliveries: 2,
            ..QueueOptions::default()
        };
        let open = || EmbeddedQueue::open_with(dir.path(), "dev", true, &options);
        let q = open().await.unwrap();
        let crashing = q.publish(new_task("1.1")).await.unwrap();
        for _ in 0..2 {
            // Taken, then the process dies: no outcome.
            let t = q.next("Q", &Hold::none).await.unwrap();
            assert_eq!(t.task_id, crashing.task_id);
            let q = open().await.unwrap();
            assert_eq!(
                q.store().get(&t.task_id).await.unwrap().status,
                Status::Scheduled
            );
        }
        let q = open().await.unwrap();
        let other = q.publish(new_task("1.2")).await.unwrap();
        let next = q.next("Q", &Hold::none).await.unwrap();
        assert_eq!(
            next.task_id, other.task_id,
            "the crashing task is not run again"
        );
        let t = q.store().get(&crashing.task_id).await.unwrap();
        assert_eq!(t.status, Status::Failed);
        assert!(
            t.error_message
                .unwrap()
                .contains("taken 2 times without an outcome"),
        );

        // An outcome clears the count: a task retried by the queue's policy
        // runs as often as the policy says.
        let retried = q.publish(new_task("1.3")).await.unwrap();
        for _ in 0..3 {
            let t = q.next("Q", &Hold::none).await.unwrap();
            assert_eq!(t.task_id, retried.task_id);
            let outcome = Outcome {
                status: Status::Failed,
                message: "503".into(),
                error: Some("503".into()),
                counts: Counts::default(),
                number_of_instances: 1,
                retry: crate::outcome::Retry::Yes,
            };
            q.finish(&t.task_id, outcome, Some(Utc::now()))
                .await
                .unwrap();
        }
        // And a run stopped by a shutdown does not count.
        for _ in 0..3 {
            let t = q.next("Q", &Hold::none).await.unwrap();
            assert_eq!(t.task_id, retried.task_id);
            q.release(&t.task_id, Release::Shutdown).await;
        }
        let t = q.next("Q", &Hold::none).await.unwrap();
        assert_eq!(t.task_id, retried.task_id);
        assert_eq!(t.status, Status::InProcess);
    }

    #[tokio::test]
    async fn next_wakes_on_publish_and_respects_schedule() {
        let dir = tempfile::tempdir().unwrap();
        let q = EmbeddedQueue::open(dir.path(), "dev", true).await.unwrap();
        let mut later = new_task("1.3");
        later.request.scheduled_time = Some(Utc::now() + chrono::Duration::hours(1));
        q.publish(later).await.unwrap();
        let q2 = q.clone();
        let waiter = tokio::spawn(async move { q2.next("Q", &Hold::none).await.unwrap() });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !waiter.is_finished(),
            "a task scheduled in an hour is not due"
        );
        let now = q.publish(new_task("1.4")).await.unwrap();
        let got = tokio::time::timeout(Duration::from_secs(2), waiter)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got.task_id, now.task_id);
    }
}
