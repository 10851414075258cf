//! The PostgreSQL delivery ([`PgQueue`]): workers take due tasks from the
//! PostgreSQL store ([`PgStore`]) as the embedded delivery takes them from
//! the SQLite store, with the same semantics (order, holds, the take count
//! and `max-deliveries`, hand back), but safe for several `serve`
//! processes on one database (issue 14).
//!
//! What differs from the embedded delivery is what several processes
//! need. SQLite has one writer at a time; here a take locks the task it
//! chooses with `SELECT ... FOR UPDATE SKIP LOCKED`, so two processes
//! never take one task and neither waits for the other's choice. Waking is
//! `LISTEN`/`NOTIFY` on [`CHANNEL`]: a task published, rescheduled, handed
//! back or set to retry by any process wakes the waiting workers of every
//! process at once, through a dedicated connection per [`PgQueue`] that is
//! reconnected with backoff when it drops; a bounded poll remains as the
//! fallback, so a lost notification (or a connection down) delays a task
//! by at most the poll interval, and due times (retries, a future
//! `scheduledTime`) are found at that resolution.
//!
//! Owns: taking (the row lock, the take count in `task_take`, giving a
//! task up past `max-deliveries`, marking it IN PROCESS), handing back
//! with the [`Count`] rule, the notifications and their listener, the
//! health probe. Must not touch: records other than through those steps
//! and [`TaskStore`] (outcomes, inserts, reschedules are the store's),
//! `queue::open` and the CLI (which select backends), the broker
//! bookkeeping (`task_message`, `retired_message`) beyond clearing counts
//! as [`Count`] says.
//!
//! The database URL's password never appears in a log line or an error:
//! both name the database by [`PgStore::database`] (masked).

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use futures_util::{FutureExt, StreamExt};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio_postgres::{AsyncMessage, NoTls};

use super::ledger::Count;
use super::postgres::{now, reset_counts, row_to_task, task_pk};
use super::{
    Backend, HealthError, Hold, NewTask, PgStore, QueueError, QueueOptions, RecordInit, Release,
    TaskDelivery, TaskStore,
};
use crate::outcome::Outcome;
use crate::task::{ExportTask, Status};

/// The notification channel of task changes a worker may take (payload:
/// the task's queue, informational; every waiting worker looks again).
pub const CHANNEL: &str = "stow_exporter_task";

/// How often an idle worker looks for due tasks although no notification
/// came: the fallback for a lost notification or a listener that is
/// reconnecting, and the resolution at which future due times are found
/// (as the embedded delivery's poll).
pub const POLL_INTERVAL: Duration = Duration::from_millis(250);

/// How long the health probe waits for the server: readiness must answer
/// even when the database hangs.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the listener's connecting may take when the URL does not say
/// (as the store's pool).
const LISTEN_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// TCP keepalive idle time of the listener's connection: a connection that
/// died silently (a network partition, a server host gone) only ever shows
/// itself by keepalive, and until then notifications would not come.
const LISTEN_KEEPALIVE: Duration = Duration::from_secs(30);

/// First and longest wait before the listener connects again.
const LISTEN_BACKOFF_MIN: Duration = Duration::from_millis(100);
const LISTEN_BACKOFF_MAX: Duration = Duration::from_secs(10);

/// The PostgreSQL delivery. Clones share the store, the wake-up and the
/// listener (which stops when the last clone is dropped).
#[derive(Clone)]
pub struct PgQueue {
    store: PgStore,
    /// Woken by every notification on [`CHANNEL`] (any process's) and, at
    /// once, by this process's own publishes.
    wake: Arc<Notify>,
    /// See [`POLL_INTERVAL`].
    poll: Duration,
    listener: Arc<Listener>,
    /// The heartbeat and takeover task, once [`PgQueue::take_over_after`]
    /// started it.
    keeper: Option<Arc<Keeper>>,
}

/// The task that keeps this instance's heartbeat and takes over the tasks
/// of silent instances ([`keep_lease`]); stops when the last clone of the
/// queue is dropped.
struct Keeper {
    task: JoinHandle<()>,
}

impl Drop for Keeper {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The task that keeps the `LISTEN` connection, and whether it listens now.
struct Listener {
    task: JoinHandle<()>,
    listening: watch::Receiver<bool>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        // Its connection closes with it.
        self.task.abort();
    }
}

impl std::fmt::Debug for PgQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgQueue")
            .field("store", &self.store)
            .field("poll", &self.poll)
            .finish()
    }
}

impl PgQueue {
    /// Connects the store ([`PgStore::connect`], same errors) and the
    /// delivery over it; the listener connects in the background (until it
    /// does, the poll finds the tasks). Must run inside a tokio runtime.
    ///
    /// Tasks are taken by device, as the embedded delivery takes them:
    /// each process takes the tasks of its own `device_name`. Several
    /// `serve` processes of one device (same `dicomDeviceName`) on one
    /// database therefore share that device's tasks, each task taken by
    /// exactly one of them: the scale-out of issue 14. A take records this
    /// process as the task's owner ([`PgQueue::with_instance`]), so
    /// [`TaskStore::requeue_unfinished`] at a restart returns only what
    /// this instance left, never what a live sibling runs.
    pub async fn connect(
        url: &str,
        device_name: &str,
        options: &QueueOptions,
    ) -> Result<PgQueue, QueueError> {
        PgQueue::connect_with_poll(url, device_name, options, POLL_INTERVAL).await
    }

    /// [`PgQueue::connect`] with another poll interval: lets the tests
    /// tell a notification's wake-up from the poll's.
    #[doc(hidden)]
    pub async fn connect_with_poll(
        url: &str,
        device_name: &str,
        options: &QueueOptions,
        poll: Duration,
    ) -> Result<PgQueue, QueueError> {
        let store = PgStore::connect(url, device_name, options).await?;
        // The store's pool does not hand out its configuration; the URL
        // parsed again is the same (it parsed once already).
        let mut config: tokio_postgres::Config =
            url.parse().map_err(|source| QueueError::Postgres {
                database: store.database().to_string(),
                context: "invalid database URL",
                source,
            })?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(LISTEN_CONNECT_TIMEOUT);
        }
        config.keepalives(true).keepalives_idle(LISTEN_KEEPALIVE);
        let wake = Arc::new(Notify::new());
        let (tx, listening) = watch::channel(false);
        let task = tokio::spawn(listen(
            config,
            store.database().to_string(),
            wake.clone(),
            tx,
        ));
        Ok(PgQueue {
            store,
            wake,
            poll: poll.max(Duration::from_millis(1)),
            listener: Arc::new(Listener { task, listening }),
            keeper: None,
        })
    }

    /// Starts this instance's heartbeat (a row in the table `instance`,
    /// written every `lease / 5` by the database's clock) and the takeover
    /// of tasks left IN PROCESS by an instance of the device that has been
    /// silent for `lease`: SIGKILL, a power loss or a network cut leave no
    /// task IN PROCESS for good; another instance takes it again and the
    /// export resumes after the instances already stored. Only for the
    /// process that runs workers, after [`PgQueue::with_instance`].
    ///
    /// A takeover needs this instance to have been heard for a whole
    /// `lease` itself, so that after an outage of the database, which
    /// silences every instance at once, the owners speak again before
    /// anyone takes their tasks. Tasks delivered over a broker are not
    /// taken over: their broker redelivers them.
    pub fn take_over_after(mut self, lease: Duration) -> PgQueue {
        let lease = lease.max(Duration::from_millis(500));
        let task = tokio::spawn(keep_lease(self.store.clone(), self.wake.clone(), lease));
        self.keeper = Some(Arc::new(Keeper { task }));
        self
    }

    /// Names this process among the device's instances: the owner its
    /// takes record (see [`PgStore::with_instance`]).
    pub fn with_instance(mut self, instance: &str) -> PgQueue {
        self.store = self.store.with_instance(instance);
        self
    }

    /// The store the tasks are taken from.
    pub fn store(&self) -> &PgStore {
        &self.store
    }

    /// Whether the listener is connected and listening now.
    pub fn is_listening(&self) -> bool {
        *self.listener.listening.borrow()
    }

    /// Waits until the listener listens (at once when it does): from then
    /// on, another process's notification wakes this one's workers.
    pub async fn listening(&self) {
        let mut rx = self.listener.listening.clone();
        // Fails only when the listener task ended, which it does not
        // before the queue is dropped.
        let _ = rx.wait_for(|l| *l).await;
    }

    /// Wakes this process's waiting workers and, by `NOTIFY`, every other
    /// process's. A notification that cannot be sent is only logged: the
    /// change it announces is committed and the poll finds it.
    async fn announce(&self, queue: &str) {
        self.wake.notify_waiters();
        let sent = async {
            let c = self.store.client().await?;
            c.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &queue])
                .await
                .map_err(self.store.err("notify workers"))?;
            Ok::<(), QueueError>(())
        }
        .await;
        if let Err(e) = sent {
            tracing::warn!(queue, error = %e, "cannot notify the workers of other processes; they find the task by polling");
        }
    }

    /// Takes the oldest due task of `queue` not held by an exporter in
    /// `held`, in one transaction: locks it (skipping tasks another
    /// process is taking), counts the take, gives up a task taken more
    /// than `max-deliveries` times without an outcome (and looks for the
    /// next), marks the taken one IN PROCESS.
    async fn take_due(
        &self,
        queue: &str,
        held: &[String],
    ) -> Result<Option<ExportTask>, QueueError> {
        let s = &self.store;
        let e = s.err("take a task");
        let max = s.max_deliveries();
        let waiting = [
            Status::Scheduled.as_str(),
            Status::ScheduledForRetry.as_str(),
        ];
        let mut c = s.client().await?;
        let tx = c.transaction().await.map_err(&e)?;
        let now = now();
        let pk = loop {
            // SKIP LOCKED: a task another process is taking (or canceling,
            // deleting) is passed over rather than waited for; one it took
            // meanwhile fails the re-checked condition (IN PROCESS) and is
            // passed over too, the next one in order taken instead.
            let Some(row) = tx
                .query_opt(
                    &tx.prepare_cached(
                        "SELECT pk FROM task
                     WHERE queue_name = $1 AND device_name = $2 AND status = ANY($3)
                       AND scheduled_time <= $4 AND exporter_id <> ALL($5)
                     ORDER BY scheduled_time, pk
                     LIMIT 1
                     FOR UPDATE SKIP LOCKED",
                    )
                    .await
                    .map_err(&e)?,
                    &[&queue, &s.device(), &&waiting[..], &now, &held],
                )
                .await
                .map_err(&e)?
            else {
                // Commits the tasks given up on the way, if any.
                tx.commit().await.map_err(&e)?;
                return Ok(None);
            };
            let pk: i64 = row.get(0);
            // Counted in this transaction, before the task runs: a run
            // that ends with the process still counts.
            let takes: i32 = tx
                .query_one(
                    &tx.prepare_cached(
                        "INSERT INTO task_take (task_pk, takes) VALUES ($1, 1)
                     ON CONFLICT (task_pk) DO UPDATE SET takes = task_take.takes + 1
                     RETURNING takes",
                    )
                    .await
                    .map_err(&e)?,
                    &[&pk],
                )
                .await
                .map_err(&e)?
                .get(0);
            if u32::try_from(takes).unwrap_or(0) <= max {
                break pk;
            }
            let t = row_to_task(
                &tx.query_one(
                    &tx.prepare_cached("SELECT * FROM task WHERE pk = $1")
                        .await
                        .map_err(&e)?,
                    &[&pk],
                )
                .await
                .map_err(&e)?,
            )
            .map_err(&e)?;
            let reason = super::gave_up(max, "taken");
            tracing::error!(task = pk, "{reason}");
            tx.execute(
                &tx.prepare_cached(
                    "UPDATE task SET status = $1, updated_time = $2, proc_end_time = $2,
                    error_msg = $3, outcome_msg = $4, num_failures = num_failures + 1
                 WHERE pk = $5",
                )
                .await
                .map_err(&e)?,
                &[
                    &Status::Failed.as_str(),
                    &now,
                    &reason,
                    &format!("Export {} failed: {reason}", t.entity()),
                    &pk,
                ],
            )
            .await
            .map_err(&e)?;
            reset_counts(&tx, pk).await.map_err(&e)?;
        };
        let row = tx
            .query_one(
                &tx.prepare_cached(
                    "UPDATE task SET status = $1, proc_start_time = $2, updated_time = $2,
                    owner = $4
                 WHERE pk = $3 RETURNING *",
                )
                .await
                .map_err(&e)?,
                &[&Status::InProcess.as_str(), &now, &pk, &self.store.owner()],
            )
            .await
            .map_err(&e)?;
        let t = row_to_task(&row).map_err(&e)?;
        tx.commit().await.map_err(&e)?;
        Ok(Some(t))
    }

    /// Puts a task IN PROCESS back to SCHEDULED, its counts changed as
    /// `count` says, and notifies the workers in the same transaction (the
    /// notification is delivered at its commit).
    async fn hand_back(&self, task_id: &str, count: Count) -> Result<(), QueueError> {
        let pk = task_pk(task_id)?;
        let s = &self.store;
        let e = s.err("hand a task back");
        let mut c = s.client().await?;
        let tx = c.transaction().await.map_err(&e)?;
        let queue: Option<String> = tx
            .query_opt(
                "UPDATE task SET status = $1, updated_time = $2, owner = NULL
                 WHERE pk = $3 AND status = $4 AND (owner = $5 OR owner IS NULL)
                 RETURNING queue_name",
                &[
                    &Status::Scheduled.as_str(),
                    &now(),
                    &pk,
                    &Status::InProcess.as_str(),
                    &s.owner(),
                ],
            )
            .await
            .map_err(&e)?
            .map(|r| r.get(0));
        match count {
            Count::Reset => reset_counts(&tx, pk).await.map_err(&e)?,
            Count::Uncount => {
                tx.execute(
                    "UPDATE task_take SET takes = GREATEST(takes - 1, 0) WHERE task_pk = $1",
                    &[&pk],
                )
                .await
                .map_err(&e)?;
                tx.execute(
                    "UPDATE message_delivery SET deliveries = GREATEST(deliveries - 1, 0)
                     WHERE message_id IN (SELECT message_id FROM task_message WHERE task_pk = $1)",
                    &[&pk],
                )
                .await
                .map_err(&e)?;
            }
            Count::Keep => {}
        }
        if let Some(queue) = &queue {
            tx.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, queue])
                .await
                .map_err(&e)?;
        }
        tx.commit().await.map_err(&e)?;
        Ok(())
    }

    async fn ping(&self) -> Result<(), QueueError> {
        let c = self.store.client().await?;
        c.query_one("SELECT 1", &[])
            .await
            .map_err(self.store.err("health probe"))?;
        Ok(())
    }
}

/// Every `lease / 5`: says this instance is alive and, once it has been
/// heard for a whole `lease`, takes over what silent instances left (see
/// [`PgQueue::take_over_after`]). Errors are logged once per outage (the
/// workers and the health check say the rest). Runs until aborted.
async fn keep_lease(store: PgStore, wake: Arc<Notify>, lease: Duration) {
    let beat = (lease / 5).clamp(Duration::from_millis(100), Duration::from_secs(10));
    let mut heard_since: Option<tokio::time::Instant> = None;
    let mut failing = false;
    loop {
        let step = async {
            heartbeat(&store).await?;
            let since = *heard_since.get_or_insert_with(tokio::time::Instant::now);
            if since.elapsed() >= lease {
                take_over(&store, lease).await
            } else {
                Ok(Vec::new())
            }
        };
        match step.await {
            Ok(taken) => {
                if failing {
                    tracing::info!(database = %store.database(), "heartbeat written again");
                    failing = false;
                }
                for (task, queue, owner) in &taken {
                    tracing::warn!(task, queue, silent_instance = %owner, lease_s = lease.as_secs_f64(),
                        "task left IN PROCESS by an instance silent for longer than the takeover time: scheduled again here");
                }
                if !taken.is_empty() {
                    wake.notify_waiters();
                }
            }
            Err(e) => {
                heard_since = None;
                if !failing {
                    tracing::warn!(error = %e, "cannot write this instance's heartbeat; other instances may take over its tasks if this lasts");
                    failing = true;
                }
            }
        }
        tokio::time::sleep(beat).await;
    }
}

/// Writes this instance's heartbeat row (the database's clock, so that
/// the hosts' clocks need not agree).
async fn heartbeat(store: &PgStore) -> Result<(), QueueError> {
    let c = store.client().await?;
    c.execute(
        "INSERT INTO instance (name, device_name, started_time, heartbeat_time)
         VALUES ($1, $2, now(), now())
         ON CONFLICT (name) DO UPDATE SET heartbeat_time = now(), device_name = excluded.device_name",
        &[&store.owner(), &store.device()],
    )
    .await
    .map_err(store.err("write the heartbeat"))?;
    Ok(())
}

/// Schedules again the device's tasks IN PROCESS whose owner has not
/// written its heartbeat for `lease` (or never did), except tasks that
/// travel over a broker (linked to a message: the broker redelivers them)
/// and this instance's own. Their take count stays: a task that ends every
/// instance that runs it is given up after `max-deliveries`. Returns the
/// tasks (id, queue, the silent owner); the notification reaches the other
/// processes at the commit.
async fn take_over(
    store: &PgStore,
    lease: Duration,
) -> Result<Vec<(String, String, String)>, QueueError> {
    let e = store.err("take over tasks of silent instances");
    let mut c = store.client().await?;
    let tx = c.transaction().await.map_err(&e)?;
    let rows = tx
        .query(
            "WITH silent AS (
                 SELECT pk, owner FROM task
                 WHERE status = $1 AND device_name = $2 AND owner IS NOT NULL AND owner <> $3
                   AND NOT EXISTS (SELECT 1 FROM task_message m WHERE m.task_pk = task.pk)
                   AND NOT EXISTS (SELECT 1 FROM instance i WHERE i.name = task.owner
                                   AND i.heartbeat_time > now() - make_interval(secs => $4))
                 FOR UPDATE SKIP LOCKED)
             UPDATE task t SET status = $5, updated_time = $6, owner = NULL
             FROM silent WHERE t.pk = silent.pk
             RETURNING t.pk, t.queue_name, silent.owner",
            &[
                &Status::InProcess.as_str(),
                &store.device(),
                &store.owner(),
                &lease.as_secs_f64(),
                &Status::Scheduled.as_str(),
                &now(),
            ],
        )
        .await
        .map_err(&e)?;
    let taken: Vec<(String, String, String)> = rows
        .iter()
        .map(|r| {
            (
                r.get::<_, i64>(0).to_string(),
                r.get::<_, String>(1),
                r.get::<_, String>(2),
            )
        })
        .collect();
    if !taken.is_empty() {
        tx.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &taken[0].1])
            .await
            .map_err(&e)?;
    }
    tx.commit().await.map_err(&e)?;
    Ok(taken)
}

/// Keeps a connection that `LISTEN`s on [`CHANNEL`], waking `wake` at each
/// notification; connects again with backoff whenever it drops. Runs until
/// aborted (the [`PgQueue`] dropped).
async fn listen(
    config: tokio_postgres::Config,
    database: String,
    wake: Arc<Notify>,
    listening: watch::Sender<bool>,
) {
    let mut backoff = LISTEN_BACKOFF_MIN;
    loop {
        let ended = listen_once(&config, &wake, &listening).await;
        let was_listening = listening.send_replace(false);
        // Said when a listening connection ends; the failed attempts to
        // connect again during an outage are not repeated in the log.
        if was_listening {
            match ended {
                Ok(()) => {
                    tracing::warn!(database = %database, "task notification connection closed; connecting again (tasks are found by polling meanwhile)")
                }
                Err(e) => {
                    tracing::warn!(database = %database, error = %e, "task notification connection failed; connecting again (tasks are found by polling meanwhile)")
                }
            }
            // It had worked: a drop now is not a server that refuses us.
            backoff = LISTEN_BACKOFF_MIN;
        } else if let Err(e) = ended {
            tracing::debug!(database = %database, error = %e, "task notification connection: still cannot connect");
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(LISTEN_BACKOFF_MAX);
    }
}

/// One connection of [`listen`]: connects, listens, and forwards
/// notifications until the connection ends.
async fn listen_once(
    config: &tokio_postgres::Config,
    wake: &Arc<Notify>,
    listening: &watch::Sender<bool>,
) -> Result<(), tokio_postgres::Error> {
    let (client, mut connection) = config.connect(NoTls).await?;
    let forward = wake.clone();
    // The connection makes progress only while its messages are polled, so
    // this drives it (the LISTEN below included) and wakes at each
    // notification.
    let driven = async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(m) = messages.next().await {
            if let AsyncMessage::Notification(_) = m? {
                forward.notify_waiters();
            }
        }
        Ok::<(), tokio_postgres::Error>(())
    };
    tokio::pin!(driven);
    let statement = format!("LISTEN {CHANNEL}");
    tokio::select! {
        ended = &mut driven => return ended,
        listened = client.batch_execute(&statement) => listened?,
    }
    listening.send_replace(true);
    // Whatever was published while no connection listened: look now
    // rather than at the next poll.
    wake.notify_waiters();
    // `client` lives until the connection ends: dropping it would close it.
    let ended = driven.await;
    drop(client);
    ended
}

impl TaskDelivery for PgQueue {
    fn publish(&self, task: NewTask) -> BoxFuture<'_, Result<ExportTask, QueueError>> {
        async move {
            // The record is the task, as in the embedded delivery. The
            // notification follows the store's commit rather than riding in
            // it (the insert is the store's own transaction): a worker it
            // wakes finds the committed record either way.
            let t = self.store.insert(RecordInit::scheduled(task)).await?;
            self.announce(&t.queue).await;
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
                // Register interest before looking, so a notification
                // between the look and the wait is not missed.
                let notified = self.wake.notified();
                let h = hold();
                if !h.queue_closed
                    && let Some(t) = self.take_due(queue, &h.exporters).await?
                {
                    return Ok(t);
                }
                let _ = tokio::time::timeout(self.poll, notified).await;
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
        async move {
            // The store clears the take count with the outcome; a run
            // another instance took over meanwhile is not this one's to end.
            let t = self
                .store
                .record_task_outcome(task_id, outcome, retry_at, Some(self.store.owner()))
                .await?;
            if retry_at.is_some() {
                // A retry due now is taken at once, by any process.
                self.announce(&t.queue).await;
            }
            Ok(t)
        }
        .boxed()
    }

    fn release<'a>(&'a self, task_id: &'a str, why: Release) -> BoxFuture<'a, ()> {
        async move {
            let count = match why {
                Release::Shutdown | Release::Outage => Count::Uncount,
                Release::Fault => Count::Keep,
            };
            if let Err(e) = self.hand_back(task_id, count).await {
                // Left IN PROCESS: requeue_unfinished at the next start
                // reschedules it.
                tracing::error!(task = %task_id, error = %e, "cannot hand the task back to the queue");
            }
            self.wake.notify_waiters();
        }
        .boxed()
    }

    fn redeliver<'a>(&'a self, task: &'a ExportTask) -> BoxFuture<'a, Result<(), QueueError>> {
        async move {
            // The reset record is the delivery: every process's waiting
            // workers look again now.
            self.announce(&task.queue).await;
            Ok(())
        }
        .boxed()
    }

    fn health(&self) -> BoxFuture<'_, Result<(), HealthError>> {
        async move {
            match tokio::time::timeout(HEALTH_TIMEOUT, self.ping()).await {
                Ok(r) => r.map_err(HealthError::Store),
                Err(_) => Err(HealthError::StoreTimeout {
                    database: self.store.database().to_string(),
                    after: HEALTH_TIMEOUT,
                }),
            }
        }
        .boxed()
    }

    fn broker_depths<'a>(
        &'a self,
        _queues: &'a [String],
    ) -> BoxFuture<'a, Option<std::collections::BTreeMap<String, u64>>> {
        // The store's waiting records are the depth.
        futures_util::future::ready(None).boxed()
    }

    fn backend(&self) -> Backend {
        Backend::Postgres
    }
}
