//! The task store seam: [`TaskStore`], the records of export tasks and
//! their per-instance results, and [`RecordInit`], what a new record is
//! made of.
//!
//! Owns the contract every store keeps (below, on the trait). Must not
//! touch delivery: taking tasks, broker messages and their counts belong to
//! the [`super::TaskDelivery`] backends, which write records only through a
//! store. The SQLite store ([`super::SqliteStore`]) and the PostgreSQL
//! store ([`super::PgStore`]) implement it; `tests/task_store.rs` is the
//! behaviour suite any implementation must pass, and both do.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;

use super::{BatchSummary, CancelResult, NewTask, QueueError, Reschedule, StatusCount, TaskFilter};
use crate::outcome::{InstanceResult, Outcome};
use crate::task::{ExportTask, Status};

/// What a new record is made of.
#[derive(Debug, Clone)]
pub struct RecordInit {
    pub task: NewTask,
    /// SCHEDULED for a published task; IN PROCESS for a broker message that
    /// runs at once; FAILED for one that cannot run.
    pub status: Status,
    /// The broker message the record belongs to, if any: a redelivery of
    /// it finds the record (see [`TaskStore::insert`]).
    pub message_id: Option<String>,
    /// For a record created FAILED: why.
    pub failure: Option<RecordFailure>,
}

impl RecordInit {
    /// A SCHEDULED record of a published task, linked to no message.
    pub fn scheduled(task: NewTask) -> RecordInit {
        RecordInit {
            task,
            status: Status::Scheduled,
            message_id: None,
            failure: None,
        }
    }
}

/// The messages of a record created FAILED.
#[derive(Debug, Clone)]
pub struct RecordFailure {
    /// `outcomeMessage`.
    pub outcome: String,
    /// `errorMessage`.
    pub error: String,
}

/// The record store of export tasks.
///
/// # Contract
///
/// - **Durability.** A write that returned `Ok` is committed: it survives
///   a crash of the process and, when the store was opened with
///   [`crate::db::Synchronous::Full`], of the OS. The one exception is
///   [`TaskStore::record_instances`], which may commit without waiting for
///   the disk (the next durable commit carries it): a power loss may revert
///   the latest per-instance results, whose instances a resumed export then
///   sends again. A write that returned `Err` changed nothing; every
///   operation is one transaction.
/// - **Identity.** Task IDs are assigned by [`TaskStore::insert`], unique
///   and opaque (strings; a string that cannot be an ID of this store is
///   simply not found). [`QueueError::NotFound`] for an unknown ID.
/// - **Conflict.** [`QueueError::Conflict`] means the task's status forbids
///   the operation and nothing was changed: rescheduling or deleting a
///   task IN PROCESS (its export runs; cancel it first). Its message says
///   so for an operator.
/// - **Ordering.** [`TaskStore::list`] sorts by the filter's
///   [`super::TaskOrder`] (default newest update first), ties by insertion
///   order in the same direction, then applies offset and limit;
///   [`TaskStore::count`] and [`TaskStore::delete_matching`] ignore offset,
///   limit and order; [`TaskStore::batches`] lists the most recently
///   updated batch first, ties by batch ID.
/// - **Atomicity against delivery.** A waiting task is either taken by a
///   worker or canceled, never both; [`TaskStore::delete_matching`] never
///   deletes a record IN PROCESS, even one taken while it runs.
/// - **Messages.** A record may be linked to broker messages
///   ([`RecordInit::message_id`]); reschedule and delete retire them, so a
///   delivery of an old message finds no runnable record.
pub trait TaskStore: Send + Sync {
    /// Inserts a new record as `init` says and returns it: created and
    /// updated now, due at the request's `scheduledTime` or now, `*` for
    /// an entity level not given; with a final status it has ended now.
    fn insert(&self, init: RecordInit) -> BoxFuture<'_, Result<ExportTask, QueueError>>;

    /// One task record.
    fn get<'a>(&'a self, task_id: &'a str) -> BoxFuture<'a, Result<ExportTask, QueueError>>;

    /// Task records matching `filter`, in its order, offset and limit.
    fn list(&self, filter: TaskFilter) -> BoxFuture<'_, Result<Vec<ExportTask>, QueueError>>;

    /// Number of task records matching `filter` (its offset, limit and
    /// order ignored).
    fn count(&self, filter: TaskFilter) -> BoxFuture<'_, Result<u64, QueueError>>;

    /// Whether the store answers now (one trivial query): tells an outage
    /// (a database restarting, a network cut) from a fault of one task.
    fn ping(&self) -> BoxFuture<'_, Result<(), QueueError>>;

    /// Task records of `device` by queue name and status, for the metrics
    /// (only pairs that have records).
    fn status_counts<'a>(
        &'a self,
        device: &'a str,
    ) -> BoxFuture<'a, Result<Vec<StatusCount>, QueueError>>;

    /// Per-batch summaries of the tasks matching `filter` that have a
    /// batch ID, the most recently updated batch first; offset and limit
    /// count batches.
    fn batches(&self, filter: TaskFilter) -> BoxFuture<'_, Result<Vec<BatchSummary>, QueueError>>;

    /// Records results of instances of a running task, in one write; a
    /// later result of the same instance replaces the earlier one.
    fn record_instances<'a>(
        &'a self,
        task_id: &'a str,
        results: Vec<InstanceResult>,
    ) -> BoxFuture<'a, Result<(), QueueError>>;

    /// Results recorded so far for a task, by SOP Instance UID (used to
    /// resume).
    fn instance_results<'a>(
        &'a self,
        task_id: &'a str,
    ) -> BoxFuture<'a, Result<HashMap<String, InstanceResult>, QueueError>>;

    /// How many instance results are recorded so far for a task: progress
    /// while it runs (the record's counts are written at its end).
    fn instance_result_count<'a>(
        &'a self,
        task_id: &'a str,
    ) -> BoxFuture<'a, Result<u64, QueueError>>;

    /// The record side of a cancel: a task that waits (SCHEDULED, SCHEDULED
    /// FOR RETRY) is CANCELED at once and never starts; for one IN PROCESS
    /// nothing is written ([`CancelResult::Running`]: the caller stops the
    /// running export); an ended one is left as it is.
    fn cancel<'a>(&'a self, task_id: &'a str) -> BoxFuture<'a, Result<CancelResult, QueueError>>;

    /// Resets a record to run again, as dcm4chee does: status SCHEDULED,
    /// due at `r.scheduled_time`, failures, times, messages, counts and
    /// per-instance results cleared (the whole entity is sent again),
    /// optionally for another exporter; its messages are retired.
    /// [`QueueError::Conflict`] for a task IN PROCESS. The delivery then
    /// delivers it again ([`super::TaskDelivery::redeliver`]).
    fn reschedule<'a>(
        &'a self,
        task_id: &'a str,
        r: Reschedule,
    ) -> BoxFuture<'a, Result<ExportTask, QueueError>>;

    /// Deletes a task record and its per-instance results; its messages
    /// are retired. [`QueueError::Conflict`] for a task IN PROCESS (cancel
    /// it first).
    fn delete<'a>(&'a self, task_id: &'a str) -> BoxFuture<'a, Result<(), QueueError>>;

    /// Deletes the records matching `filter` except those IN PROCESS, in
    /// one transaction; returns how many were deleted and how many matching
    /// ones were kept because they are IN PROCESS.
    fn delete_matching(&self, filter: TaskFilter) -> BoxFuture<'_, Result<(u64, u64), QueueError>>;

    /// What finishing a task writes to its record: the outcome's status,
    /// messages and counts, the end time, a failure counted for a FAILED
    /// outcome or a retry; with `retry_at`, SCHEDULED FOR RETRY due then.
    /// Clears the delivery's count of runs without an outcome.
    fn record_outcome<'a>(
        &'a self,
        task_id: &'a str,
        outcome: Outcome,
        retry_at: Option<DateTime<Utc>>,
    ) -> BoxFuture<'a, Result<ExportTask, QueueError>>;

    /// Returns this store's device's records left IN PROCESS to SCHEDULED
    /// (after a crash, at start-up, or at shutdown for the tasks that did
    /// not finish), so they run again; returns how many. Only the process
    /// that runs this device's workers may call it.
    fn requeue_unfinished(&self) -> BoxFuture<'_, Result<u64, QueueError>>;
}
