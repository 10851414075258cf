//! Durable export task queues.
//!
//! [`TaskQueue`] is the seam between producers (REST trigger, CLI) and the
//! workers that run tasks. The embedded SQLite queue ([`embedded`]) is the
//! default backend; a broker-backed one plugs in behind the same trait.
//! Besides moving tasks, a queue keeps each task's record and per-instance
//! results, so that an interrupted export resumes where it stopped, and
//! counts how often a task was handed out without an outcome, so that a
//! task that crashes the process every time ends instead of looping.

pub mod amqp;
pub mod embedded;

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use serde::Serialize;

use crate::config::Exporter;
use crate::db::Synchronous;
use crate::outcome::{InstanceResult, Outcome};
use crate::task::{ExportTask, Status, TaskRequest};

pub use amqp::AmqpQueue;
pub use embedded::EmbeddedQueue;

/// Errors of a queue backend.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error(transparent)]
    Db(#[from] crate::db::DbError),
    #[error("task {0} not found")]
    NotFound(String),
    #[error("message broker: {0}")]
    Broker(String),
    #[error("queue backend stopped")]
    Closed,
    /// The task's state does not allow the operation (e.g. IN PROCESS).
    #[error("{0}")]
    Conflict(String),
}

/// How often a task may be handed out (an AMQP delivery, an embedded
/// queue's take) without an outcome being recorded before it is given up:
/// each such run ended with the process (a crash, `kill -9`, an OOM kill).
/// Default of `serve --max-deliveries`.
pub const DEFAULT_MAX_DELIVERIES: u32 = 10;

/// Fault injection for tests: called with each task as its export starts,
/// inside the code whose panics the workers catch. Never set by the binary.
#[doc(hidden)]
pub type ExportHook = Arc<dyn Fn(&ExportTask) + Send + Sync>;

/// How tasks are kept, handed out and run (`serve` options).
#[derive(Clone)]
pub struct QueueOptions {
    /// See [`DEFAULT_MAX_DELIVERIES`]; at least 1.
    pub max_deliveries: u32,
    /// How the task store waits for the disk; [`Synchronous::Full`] makes
    /// every recorded outcome (and, over AMQP, every acknowledgement that
    /// follows one) survive an OS crash.
    pub synchronous: Synchronous,
    /// See [`ExportHook`].
    #[doc(hidden)]
    pub export_hook: Option<ExportHook>,
}

impl Default for QueueOptions {
    fn default() -> QueueOptions {
        QueueOptions {
            max_deliveries: DEFAULT_MAX_DELIVERIES,
            synchronous: Synchronous::Full,
            export_hook: None,
        }
    }
}

impl std::fmt::Debug for QueueOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueOptions")
            .field("max_deliveries", &self.max_deliveries)
            .field("synchronous", &self.synchronous)
            .field("export_hook", &self.export_hook.is_some())
            .finish()
    }
}

/// The reason a task is given up with after `max` runs without an outcome
/// (`what`: "taken", "delivered").
pub(crate) fn gave_up(max: u32, what: &str) -> String {
    format!(
        "{what} {max} times without an outcome (each run ended with the process: a crash, \
         kill -9 or out of memory); not run again (max-deliveries {max})"
    )
}

/// Why a worker hands a task it took back without an outcome
/// ([`TaskQueue::release`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Release {
    /// The shutdown deadline stopped its export: not the task's fault, so
    /// this run does not count against `max-deliveries`.
    Shutdown,
    /// Its outcome could not be recorded (or the worker failed): the run
    /// counts, so a task that always ends this way is eventually given up.
    Fault,
}

/// Fields the producer resolves from the configuration at creation time.
#[derive(Debug, Clone)]
pub struct NewTask {
    pub request: TaskRequest,
    pub device_name: String,
    pub queue: String,
    pub local_aet: Option<String>,
}

impl NewTask {
    /// A task for `exporter`: its queue and its AE title as `LocalAET`,
    /// dcm4chee's `*` placeholders normalised away.
    pub fn for_exporter(request: TaskRequest, device_name: String, exporter: &Exporter) -> NewTask {
        NewTask {
            request: request.normalized(),
            device_name,
            queue: exporter.queue.clone(),
            local_aet: exporter.ae_title.clone(),
        }
    }
}

/// How many task records a queue holds in one status.
pub type StatusCount = (String, String, u64);

/// What may not be started right now (`dcmSchedule` windows, a paused queue).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hold {
    /// The whole queue waits (closed window, or `dicomInstalled: FALSE`).
    pub queue_closed: bool,
    /// Tasks of these exporters wait (their window is closed).
    pub exporters: Vec<String>,
}

impl Hold {
    /// Nothing is held.
    pub fn none() -> Hold {
        Hold::default()
    }
}

/// What [`TaskQueue::cancel`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelResult {
    /// The task was waiting and is now CANCELED.
    Canceled,
    /// The task is IN PROCESS: its export must be stopped.
    Running,
    /// The task had already ended with this status.
    AlreadyDone(Status),
}

/// Filters of the monitor listing (dcm4chee's query parameter names).
#[derive(Debug, Clone, Default)]
pub struct TaskFilter {
    /// `ExporterID`, repeatable: any of them.
    pub exporter_ids: Vec<String>,
    pub study_iuid: Option<String>,
    pub status: Option<Status>,
    pub batch_id: Option<String>,
    /// `dicomDeviceName`.
    pub device_name: Option<String>,
    /// `createdTime` range.
    pub created: TimeRange,
    /// `updatedTime` range.
    pub updated: TimeRange,
    pub order: TaskOrder,
    pub offset: u64,
    pub limit: Option<u64>,
}

/// A time range of a filter: `from` inclusive, `to` exclusive; either open.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimeRange {
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
}

/// The field `orderby` sorts on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OrderField {
    CreatedTime,
    #[default]
    UpdatedTime,
    ScheduledTime,
}

/// dcm4chee's `orderby`: `(-)createdTime|updatedTime|scheduledTime`,
/// default `-updatedTime` (newest update first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskOrder {
    pub field: OrderField,
    pub descending: bool,
}

impl Default for TaskOrder {
    fn default() -> TaskOrder {
        TaskOrder {
            field: OrderField::UpdatedTime,
            descending: true,
        }
    }
}

impl std::str::FromStr for TaskOrder {
    type Err = String;
    fn from_str(s: &str) -> Result<TaskOrder, String> {
        let (descending, name) = match s.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, s),
        };
        let field = match name {
            "createdTime" => OrderField::CreatedTime,
            "updatedTime" => OrderField::UpdatedTime,
            "scheduledTime" => OrderField::ScheduledTime,
            _ => {
                return Err(format!(
                    "{s:?} is not one of createdTime, updatedTime, scheduledTime (with an optional leading '-')"
                ));
            }
        };
        Ok(TaskOrder { field, descending })
    }
}

/// What [`TaskQueue::reschedule`] sets.
#[derive(Debug, Clone)]
pub struct Reschedule {
    /// When the task is due again.
    pub scheduled_time: DateTime<Utc>,
    /// Another exporter: its ID, queue and AE title.
    pub exporter: Option<RescheduleTo>,
}

/// The exporter a task is rescheduled to.
#[derive(Debug, Clone)]
pub struct RescheduleTo {
    pub exporter_id: String,
    pub queue: String,
    pub local_aet: Option<String>,
}

impl RescheduleTo {
    pub fn of(exporter: &Exporter) -> RescheduleTo {
        RescheduleTo {
            exporter_id: exporter.id.clone(),
            queue: exporter.queue.clone(),
            local_aet: exporter.ae_title.clone(),
        }
    }
}

/// One batch of the batch listing (`GET /monitor/export/batch`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BatchSummary {
    #[serde(rename = "batchID")]
    pub batch_id: String,
    /// Number of tasks by status, keys lower case with `-` for spaces
    /// (`scheduled`, `scheduled-for-retry`, `in-process`, `completed`, ...).
    pub tasks: std::collections::BTreeMap<String, u64>,
    #[serde(rename = "dicomDeviceName")]
    pub device_names: Vec<String>,
    #[serde(rename = "ExporterID")]
    pub exporter_ids: Vec<String>,
    #[serde(rename = "createdTimeRange")]
    pub created_time_range: [DateTime<Utc>; 2],
    #[serde(rename = "updatedTimeRange")]
    pub updated_time_range: [DateTime<Utc>; 2],
    #[serde(rename = "scheduledTimeRange")]
    pub scheduled_time_range: [DateTime<Utc>; 2],
    #[serde(
        rename = "processingStartTimeRange",
        skip_serializing_if = "Option::is_none"
    )]
    pub processing_start_time_range: Option<[DateTime<Utc>; 2]>,
    #[serde(
        rename = "processingEndTimeRange",
        skip_serializing_if = "Option::is_none"
    )]
    pub processing_end_time_range: Option<[DateTime<Utc>; 2]>,
}

/// A durable task queue. Implementations must never lose a task: a task
/// taken by [`TaskQueue::next`] and not finished (crash) is handed out
/// again after a restart.
pub trait TaskQueue: Send + Sync {
    /// Stores a new task durably and returns its record; returns only once
    /// the task would survive a crash.
    fn publish(&self, task: NewTask) -> BoxFuture<'_, Result<ExportTask, QueueError>>;

    /// Waits until a task of `queue` is due and not held by `hold` (asked
    /// again each time the queue is looked at), marks it IN PROCESS and
    /// returns it.
    fn next<'a>(
        &'a self,
        queue: &'a str,
        hold: &'a (dyn Fn() -> Hold + Send + Sync),
    ) -> BoxFuture<'a, Result<ExportTask, QueueError>>;

    /// Records results of instances of a running task, in one write.
    fn record_instances<'a>(
        &'a self,
        task_id: &'a str,
        results: Vec<InstanceResult>,
    ) -> BoxFuture<'a, Result<(), QueueError>>;

    /// Results recorded so far for a task (used to resume).
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

    /// Records the outcome of a task taken by `next`. With `retry_at`, the
    /// task goes to SCHEDULED FOR RETRY and is due again at that time.
    fn finish<'a>(
        &'a self,
        task_id: &'a str,
        outcome: Outcome,
        retry_at: Option<DateTime<Utc>>,
    ) -> BoxFuture<'a, Result<ExportTask, QueueError>>;

    /// Hands a task taken by `next` back without an outcome: it is taken
    /// again later (embedded: SCHEDULED; AMQP: the delivery is requeued).
    /// Never fails: what cannot be written now is repaired at the next start.
    fn release<'a>(&'a self, task_id: &'a str, why: Release) -> BoxFuture<'a, ()>;

    /// Cancels a task: one that waits is CANCELED at once and never starts;
    /// for one IN PROCESS the caller stops the running export.
    fn cancel<'a>(&'a self, task_id: &'a str) -> BoxFuture<'a, Result<CancelResult, QueueError>>;

    /// Task records for the monitor API, newest update first.
    fn list(&self, filter: TaskFilter) -> BoxFuture<'_, Result<Vec<ExportTask>, QueueError>>;

    /// One task record.
    fn get<'a>(&'a self, task_id: &'a str) -> BoxFuture<'a, Result<ExportTask, QueueError>>;

    /// Number of task records matching `filter` (its offset, limit and
    /// order ignored).
    fn count(&self, filter: TaskFilter) -> BoxFuture<'_, Result<u64, QueueError>>;

    /// Task records of `device` by queue name and status, for the metrics.
    fn status_counts<'a>(
        &'a self,
        device: &'a str,
    ) -> BoxFuture<'a, Result<Vec<StatusCount>, QueueError>>;

    /// Runs a task again, as dcm4chee does: status SCHEDULED, due at
    /// `r.scheduled_time`, failures, times, messages, counts and
    /// per-instance results cleared (the whole entity is sent again),
    /// optionally for another exporter. [`QueueError::Conflict`] for a task
    /// IN PROCESS.
    fn reschedule<'a>(
        &'a self,
        task_id: &'a str,
        r: Reschedule,
    ) -> BoxFuture<'a, Result<ExportTask, QueueError>>;

    /// Deletes a task record and its per-instance results.
    /// [`QueueError::Conflict`] for a task IN PROCESS (cancel it first).
    fn delete<'a>(&'a self, task_id: &'a str) -> BoxFuture<'a, Result<(), QueueError>>;

    /// Deletes the records matching `filter` except those IN PROCESS, in
    /// one transaction; returns how many were deleted and how many matching
    /// ones were kept because they are IN PROCESS.
    fn delete_matching(&self, filter: TaskFilter) -> BoxFuture<'_, Result<(u64, u64), QueueError>>;

    /// Per-batch summaries of the tasks matching `filter` that have a
    /// batch ID, the most recently updated batch first.
    fn batches(&self, filter: TaskFilter) -> BoxFuture<'_, Result<Vec<BatchSummary>, QueueError>>;
}
