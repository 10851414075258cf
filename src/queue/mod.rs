//! Durable export task queues, in two parts.
//!
//! - [`TaskStore`] ([`store`]): the task records and their per-instance
//!   results, what the monitor API, the CLI and the web page read and
//!   edit. Its contract (durability, what [`QueueError::Conflict`] means,
//!   ordering) is on the trait; `tests/task_store.rs` checks it for every
//!   implementation. The SQLite store ([`SqliteStore`], in [`embedded`]) is
//!   the one [`open`] builds; the PostgreSQL store ([`PgStore`], in
//!   [`postgres`]) keeps the same contract on one database that several
//!   processes share, and is not yet built by [`open`].
//! - [`TaskDelivery`]: moving tasks to the workers: publish (the record
//!   via the store, then the task to the workers), hand out ([`TaskDelivery::next`]),
//!   finish (record the outcome, then acknowledge), hand back, schedule a
//!   retry, deliver a rescheduled task again, and a health probe. The
//!   embedded delivery ([`EmbeddedQueue`]) takes tasks from the store
//!   itself; the broker-backed one ([`AmqpQueue`]) moves them over
//!   RabbitMQ and keeps its records in the SQLite store; the PostgreSQL
//!   delivery ([`PgQueue`], in [`pg_delivery`]) takes them from the
//!   PostgreSQL store as the embedded one does, safely for several
//!   processes, and is not yet built by [`open`].
//!
//! [`open`] is the one place a queue is built (`serve` and `export` both
//! call it) and returns both handles; the control API gets only the store
//! and a [`Submit`] handle (publish, reschedule), never the delivery.
//!
//! Besides moving tasks, a delivery counts how often a task was handed out
//! without an outcome (in the store's tables: a take, a broker message's
//! deliveries), so that a task that crashes the process every time ends
//! instead of looping. That bookkeeping is the delivery's own and not part
//! of [`TaskStore`]; an interrupted export resumes from the per-instance
//! results, which are.
//!
//! Owns: the record types shared by store and delivery, the backends'
//! errors and their construction. Must not touch: the configuration's
//! reload, the HTTP layer, the export itself (which only reads and writes
//! through these traits).

pub mod amqp;
pub mod embedded;
pub mod ledger;
pub mod pg_delivery;
pub mod postgres;
pub mod store;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use serde::Serialize;

use crate::config::{Exporter, LiveConfig};
use crate::db::Synchronous;
use crate::outcome::{InstanceResult, Outcome};
use crate::task::{ExportTask, Status, TaskRequest};

pub use amqp::{AmqpQueue, BrokerError};
pub use embedded::{EmbeddedQueue, SQLITE_SCHEMA_VERSION, SqliteStore};
pub use ledger::DeliveryLedger;
pub use pg_delivery::PgQueue;
pub use postgres::{PgStore, masked as masked_database};
pub use store::{RecordFailure, RecordInit, TaskStore};

/// Errors of a queue backend.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error(transparent)]
    Db(#[from] crate::db::DbError),
    #[error("task {0} not found")]
    NotFound(String),
    /// The broker did not take or hand over a task (down, or it refused).
    #[error("message broker {0}")]
    Broker(#[from] BrokerError),
    #[error("queue backend stopped")]
    Closed,
    /// The task's state does not allow the operation (e.g. IN PROCESS).
    #[error("{0}")]
    Conflict(String),
    /// The PostgreSQL task store failed (a malformed URL, an unreachable
    /// server, a failed statement).
    #[error("task store {database}: {context}: {source}")]
    Postgres {
        /// Its URL, password masked.
        database: String,
        /// What the store was doing.
        context: &'static str,
        #[source]
        source: tokio_postgres::Error,
    },
    /// The PostgreSQL store's connection pool failed other than by a
    /// driver error (it was closed, or could not be built).
    #[error("task store {database}: connection pool: {source}")]
    PostgresPool {
        /// Its URL, password masked.
        database: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The outcome of a run that another instance took over meanwhile
    /// (this one was silent for longer than the takeover time, see
    /// [`PgQueue`]): the other's run is the task's, this one's outcome
    /// is not recorded.
    #[error(
        "task {task} was taken over by instance {} while this instance was silent; \
         its outcome here is not recorded",
        .by.as_deref().unwrap_or("(none)")
    )]
    TakenOver {
        task: String,
        /// The instance that runs it now, if any still does.
        by: Option<String>,
    },
    /// The task store's schema was migrated by a newer version of
    /// stow-exporter: this one does not know its tables and refuses it
    /// rather than write records the newer one cannot read.
    #[error(
        "task store {database} has schema version {found}, newer than version {supported} \
         that this stow-exporter knows: run the newer stow-exporter, or use another database"
    )]
    SchemaTooNew {
        /// The database (a file, or a URL with its password masked).
        database: String,
        /// The version found in it.
        found: i64,
        /// The newest version this code knows.
        supported: i64,
    },
}

/// Why a backend is not healthy ([`TaskDelivery::health`]).
#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    /// The task store cannot be read.
    #[error("task store: {0}")]
    Store(#[source] QueueError),
    /// The broker cannot be reached or did not answer a step of the probe.
    #[error("message broker {0}")]
    Broker(#[source] BrokerError),
    /// The task store (a PostgreSQL server) did not answer in time.
    #[error("task store {database}: no answer within {} s", .after.as_secs())]
    StoreTimeout {
        /// Its URL, password masked.
        database: String,
        after: std::time::Duration,
    },
    /// The broker did not answer in time.
    #[error("message broker {broker}: no answer within {} s", .after.as_secs())]
    Timeout {
        /// Its URL, password masked.
        broker: String,
        after: std::time::Duration,
    },
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
    /// How long an instance taking tasks from PostgreSQL without a broker
    /// may be silent before the others take over the tasks it left IN
    /// PROCESS (see [`PgQueue::take_over_after`]). Unused by the other
    /// backends (a broker redelivers a dead consumer's messages itself).
    pub takeover_after: std::time::Duration,
    /// See [`ExportHook`].
    #[doc(hidden)]
    pub export_hook: Option<ExportHook>,
}

/// Default of [`QueueOptions::takeover_after`] (`serve --takeover-after`):
/// long enough that a busy database or a short network hiccup does not
/// hand a running task to a second instance, short enough that a crashed
/// instance's task resumes within a minute.
pub const DEFAULT_TAKEOVER_AFTER: std::time::Duration = std::time::Duration::from_secs(30);

impl Default for QueueOptions {
    fn default() -> QueueOptions {
        QueueOptions {
            max_deliveries: DEFAULT_MAX_DELIVERIES,
            synchronous: Synchronous::Full,
            takeover_after: DEFAULT_TAKEOVER_AFTER,
            export_hook: None,
        }
    }
}

impl std::fmt::Debug for QueueOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueOptions")
            .field("max_deliveries", &self.max_deliveries)
            .field("synchronous", &self.synchronous)
            .field("takeover_after", &self.takeover_after)
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
/// ([`TaskDelivery::release`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Release {
    /// The shutdown deadline stopped its export: not the task's fault, so
    /// this run does not count against `max-deliveries`.
    Shutdown,
    /// Its export could not read the task store or the archive index while
    /// the task store did not answer (a database restarting): not the
    /// task's fault either, so uncounted, as [`Release::Shutdown`].
    Outage,
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

/// What [`TaskStore::cancel`] found.
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

/// An `orderby` value that is not one of the fields.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} is not one of createdTime, updatedTime, scheduledTime (with an optional leading '-')"
)]
pub struct UnknownOrder(pub String);

impl std::str::FromStr for TaskOrder {
    type Err = UnknownOrder;
    fn from_str(s: &str) -> Result<TaskOrder, UnknownOrder> {
        let (descending, name) = match s.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, s),
        };
        let field = match name {
            "createdTime" => OrderField::CreatedTime,
            "updatedTime" => OrderField::UpdatedTime,
            "scheduledTime" => OrderField::ScheduledTime,
            _ => return Err(UnknownOrder(s.to_string())),
        };
        Ok(TaskOrder { field, descending })
    }
}

/// What [`TaskStore::reschedule`] sets.
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

/// Moving tasks to the workers: the half of a queue that `serve`'s workers
/// (and, through [`Submit`], producers) use. Implementations must never
/// lose a task: a task taken by [`TaskDelivery::next`] and not finished
/// (crash) is handed out again after a restart. Records are written only
/// through the backend's [`TaskStore`].
pub trait TaskDelivery: Send + Sync {
    /// Stores a new task's record through the store and delivers the task;
    /// returns only once the task would survive a crash (over AMQP: once
    /// the broker confirmed the message; a refused message leaves the
    /// record FAILED).
    fn publish(&self, task: NewTask) -> BoxFuture<'_, Result<ExportTask, QueueError>>;

    /// Waits until a task of `queue` is due and not held by `hold` (asked
    /// again each time the queue is looked at), marks it IN PROCESS and
    /// returns it.
    fn next<'a>(
        &'a self,
        queue: &'a str,
        hold: &'a (dyn Fn() -> Hold + Send + Sync),
    ) -> BoxFuture<'a, Result<ExportTask, QueueError>>;

    /// Records the outcome of a task taken by `next` (through
    /// [`TaskStore::record_outcome`]), then settles its delivery. With
    /// `retry_at`, the task goes to SCHEDULED FOR RETRY and is delivered
    /// again at that time.
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

    /// Delivers `task` again after [`TaskStore::reschedule`] reset its
    /// record (which retired its old messages): AMQP publishes a new
    /// message linked to the record (a refused one leaves the record
    /// FAILED); the embedded queue wakes its workers.
    fn redeliver<'a>(&'a self, task: &'a ExportTask) -> BoxFuture<'a, Result<(), QueueError>>;

    /// Whether the backend can move tasks now: the embedded queue asks its
    /// database, the broker-backed one its connection to the broker.
    fn health(&self) -> BoxFuture<'_, Result<(), HealthError>>;

    /// Messages waiting in each of `queues` as the broker counts them, for
    /// the metrics; `None` when the backend has no count of its own (the
    /// embedded queue: the store's waiting records are its depth).
    fn broker_depths<'a>(
        &'a self,
        queues: &'a [String],
    ) -> BoxFuture<'a, Option<BTreeMap<String, u64>>>;

    /// Which backend this is.
    fn backend(&self) -> Backend;
}

/// The delivery backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Workers take tasks from the SQLite store ([`EmbeddedQueue`]).
    Embedded,
    /// Tasks travel over an AMQP broker ([`AmqpQueue`]).
    Amqp,
    /// Workers of one or more processes take tasks from the PostgreSQL
    /// store ([`PgQueue`]).
    Postgres,
}

impl Backend {
    /// The name the readiness check shows.
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Embedded => "embedded",
            Backend::Amqp => "amqp",
            Backend::Postgres => "postgres",
        }
    }
}

/// The producer's view of a queue: publish a task, run one again. This is
/// all the control API may do to the delivery side; it never takes,
/// finishes or hands back tasks (that is the workers').
#[derive(Clone)]
pub struct Submit {
    store: Arc<dyn TaskStore>,
    delivery: Arc<dyn TaskDelivery>,
}

impl Submit {
    /// See [`TaskDelivery::publish`].
    pub async fn publish(&self, task: NewTask) -> Result<ExportTask, QueueError> {
        self.delivery.publish(task).await
    }

    /// A task of `request`'s exporter and entity that has not started
    /// (SCHEDULED), if there is one. A task lists the entity's instances
    /// when it starts, so one still waiting will send an instance stored
    /// now: export rules let a new instance join it rather than make
    /// another task, as dcm4chee updates its waiting export task.
    pub async fn waiting(&self, request: &TaskRequest) -> Result<Option<ExportTask>, QueueError> {
        let tasks = self
            .store
            .list(TaskFilter {
                exporter_ids: vec![request.exporter_id.clone()],
                study_iuid: Some(request.study_iuid.clone()),
                status: Some(Status::Scheduled),
                limit: Some(100),
                ..TaskFilter::default()
            })
            .await?;
        Ok(tasks.into_iter().find(|t| {
            t.series() == request.series_iuid.as_deref()
                && t.instance() == request.sop_iuid.as_deref()
        }))
    }

    /// The earlier tasks of `request`'s exporter, entity and batch that
    /// have left SCHEDULED (running or ended), the most recently updated
    /// first, at most `limit`.
    pub async fn earlier(
        &self,
        request: &TaskRequest,
        limit: u64,
    ) -> Result<Vec<ExportTask>, QueueError> {
        let tasks = self
            .store
            .list(TaskFilter {
                exporter_ids: vec![request.exporter_id.clone()],
                study_iuid: Some(request.study_iuid.clone()),
                batch_id: request.batch_id.clone(),
                limit: Some(limit.saturating_mul(4)),
                ..TaskFilter::default()
            })
            .await?;
        Ok(tasks
            .into_iter()
            .filter(|t| {
                t.status != Status::Scheduled
                    && t.series() == request.series_iuid.as_deref()
                    && t.instance() == request.sop_iuid.as_deref()
            })
            .take(limit as usize)
            .collect())
    }

    /// The instances `task_id` stored (COMPLETED or WARNING).
    pub async fn stored_by(&self, task_id: &str) -> Result<Vec<InstanceResult>, QueueError> {
        Ok(self
            .store
            .instance_results(task_id)
            .await?
            .into_values()
            .filter(|r| r.status.is_stored())
            .collect())
    }

    /// Records `results` as `task_id`'s own before it starts: it resumes
    /// after them, as after an interrupted run, and sends only the rest.
    pub async fn carry_over(
        &self,
        task_id: &str,
        results: Vec<InstanceResult>,
    ) -> Result<(), QueueError> {
        self.store.record_instances(task_id, results).await
    }

    /// Resets the record ([`TaskStore::reschedule`], e.g.
    /// [`QueueError::Conflict`] for a task IN PROCESS), then delivers it
    /// again ([`TaskDelivery::redeliver`]).
    pub async fn reschedule(&self, task_id: &str, r: Reschedule) -> Result<ExportTask, QueueError> {
        let t = self.store.reschedule(task_id, r).await?;
        self.delivery.redeliver(&t).await?;
        Ok(t)
    }
}

/// The handles of an opened queue.
#[derive(Clone)]
pub struct Queue {
    /// The records.
    pub store: Arc<dyn TaskStore>,
    /// Moving tasks (the workers).
    pub delivery: Arc<dyn TaskDelivery>,
}

impl Queue {
    /// The producer's handle.
    pub fn submit(&self) -> Submit {
        Submit {
            store: self.store.clone(),
            delivery: self.delivery.clone(),
        }
    }
}

/// Who opens a queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `serve`, whose workers run the tasks: records its device left IN
    /// PROCESS (a killed run) go back to SCHEDULED at open.
    Workers,
    /// A command that only publishes (`export`): it must never reschedule
    /// tasks that a running `serve` holds.
    Publisher,
}

/// Where and how a queue is opened.
#[derive(Clone, Copy)]
pub struct OpenQueue<'a> {
    /// Holds `queue.sqlite`, the task store.
    pub data_dir: &'a Path,
    pub device_name: &'a str,
    pub role: Role,
    pub options: &'a QueueOptions,
    /// Deliver over this AMQP broker; `None`: the embedded queue.
    pub broker: Option<BrokerLink<'a>>,
    /// Keep the records in this shared PostgreSQL database instead of
    /// `queue.sqlite`; `None`: SQLite, as always.
    pub database: Option<DatabaseLink<'a>>,
}

/// The shared database a queue keeps its records in.
#[derive(Clone, Copy)]
pub struct DatabaseLink<'a> {
    /// `postgres://user:password@host:port/db`: a secret (its password
    /// never goes into a message; see [`postgres::masked`]).
    pub url: &'a str,
    /// This process among the device's instances on the database (see
    /// [`PgStore::with_instance`]); `None`: a random name, so nothing it
    /// left IN PROCESS is returned at the next start but by redelivery.
    pub instance: Option<&'a str>,
}

/// The broker a queue delivers over.
#[derive(Clone, Copy)]
pub struct BrokerLink<'a> {
    /// `amqp://user:password@host:port/vhost`.
    pub url: &'a str,
    /// The exporters (a message naming an unknown one is dead-lettered)
    /// and each queue's `dcmMaxTasksParallel`, the consumer's prefetch.
    pub config: &'a LiveConfig,
}

/// Opens the task store (`queue.sqlite` in `at.data_dir`, or the shared
/// database of `at.database`) and the delivery over it: the embedded
/// queue, or the broker of `at.broker` (fails at once when it cannot
/// connect).
pub async fn open(at: OpenQueue<'_>) -> Result<Queue, QueueError> {
    if let Some(db) = at.database {
        return open_shared(&at, db).await;
    }
    let store = SqliteStore::open_with(
        at.data_dir,
        at.device_name,
        at.role == Role::Workers,
        at.options,
    )
    .await?;
    let records: Arc<dyn TaskStore> = Arc::new(store.clone());
    let delivery: Arc<dyn TaskDelivery> = match at.broker {
        None => Arc::new(EmbeddedQueue::new(store)),
        Some(b) => Arc::new(AmqpQueue::connect(b.url, Arc::new(store), b.config.clone()).await?),
    };
    Ok(Queue {
        store: records,
        delivery,
    })
}

/// [`open`] on a shared PostgreSQL database: the records and the broker
/// delivery's bookkeeping there, the tasks over the broker.
async fn open_shared(at: &OpenQueue<'_>, db: DatabaseLink<'_>) -> Result<Queue, QueueError> {
    let Some(b) = at.broker else {
        // No broker: the workers take tasks from the database itself.
        let mut q = PgQueue::connect(db.url, at.device_name, at.options).await?;
        if let Some(instance) = db.instance {
            q = q.with_instance(instance);
        }
        if at.role == Role::Workers {
            requeue_own(q.store()).await?;
            q = q.take_over_after(at.options.takeover_after);
        }
        let store: Arc<dyn TaskStore> = Arc::new(q.store().clone());
        return Ok(Queue {
            store,
            delivery: Arc::new(q),
        });
    };
    let mut store = PgStore::connect(db.url, at.device_name, at.options).await?;
    if let Some(instance) = db.instance {
        store = store.with_instance(instance);
    }
    if at.role == Role::Workers {
        requeue_own(&store).await?;
    }
    let store = Arc::new(store);
    let delivery = AmqpQueue::connect(b.url, store.clone(), b.config.clone()).await?;
    Ok(Queue {
        store,
        delivery: Arc::new(delivery),
    })
}

/// What this instance left IN PROCESS when it was stopped goes back to
/// SCHEDULED; what another instance runs is not touched (see
/// [`PgStore::with_instance`]).
async fn requeue_own(store: &PgStore) -> Result<(), QueueError> {
    let n = store.requeue_unfinished().await?;
    if n > 0 {
        tracing::warn!(tasks = n, "rescheduled tasks this instance left IN PROCESS");
    }
    Ok(())
}
