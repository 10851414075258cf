//! The worker loops: one per queue, at most `dcmMaxTasksParallel` tasks at
//! once, each task run by the [`Executor`] with the snapshot it started
//! with. Owns taking tasks from the delivery, the `dcmSchedule` holds, and
//! turning a panic into a FAILED outcome that never keeps a slot; it must
//! not decide outcomes (the executor does) or touch task records beyond
//! finishing and releasing what it took.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use futures_util::FutureExt;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{CancelHandle, Executor, RunEnd, retry};
use crate::config::{LiveConfig, Snapshot};
use crate::outcome::{Outcome, Retry};
use crate::queue::{ExportHook, Hold, QueueError, Release, TaskDelivery};
use crate::schedule::Zone;
use crate::task::{Counts, ExportTask, Status};

/// What the `dcmSchedule` windows (and `dicomInstalled`) of the queue and
/// its exporters hold back right now. Unlike dcm4chee, an exporter's window
/// holds every task of that exporter, not only the ones export rules create.
fn hold_now(snap: &Snapshot, zone: Zone, queue: &str) -> Hold {
    let now = Utc::now();
    Hold {
        queue_closed: snap
            .queues
            .get(queue)
            .is_some_and(|q| !q.installed || !zone.is_open(&q.schedule, now)),
        exporters: snap
            .exporters
            .values()
            .filter(|e| e.queue == queue && !zone.is_open(&e.schedule, now))
            .map(|e| e.id.clone())
            .collect(),
    }
}

/// Panic messages are cut to this many characters in a task's outcome.
const MAX_PANIC_CHARS: usize = 512;

/// One of a queue's `dcmMaxTasksParallel` slots. Freed when dropped, so
/// also when the task holding it panics or its future is dropped.
struct Slot {
    in_use: Arc<AtomicU32>,
    freed: Arc<Notify>,
}

impl Slot {
    fn take(in_use: &Arc<AtomicU32>, freed: &Arc<Notify>) -> Slot {
        in_use.fetch_add(1, Ordering::SeqCst);
        Slot {
            in_use: in_use.clone(),
            freed: freed.clone(),
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.in_use.fetch_sub(1, Ordering::SeqCst);
        self.freed.notify_one();
    }
}

/// The text of a panic's payload (`panic!` gives a `&str` or a `String`).
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    let text = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into());
    crate::text::clip(&text, MAX_PANIC_CHARS)
}

/// The outcome of an export that panicked: FAILED, not retried. A panic is
/// a bug, most likely met again by the same objects on every attempt, so
/// retries would only repeat it; the reason names it for the operator, who
/// can reschedule the task once it is fixed.
fn panicked(task: &ExportTask, message: &str) -> Outcome {
    let error = format!("the export panicked: {message}");
    Outcome {
        status: Status::Failed,
        message: format!("Export {} failed: {error}", task.entity()),
        error: Some(error),
        counts: Counts::default(),
        number_of_instances: 0,
        retry: Retry::No,
    }
}

/// One worker loop per queue name.
#[derive(Clone)]
pub struct Workers {
    executor: Executor,
    queue: Arc<dyn TaskDelivery>,
    config: LiveConfig,
    running: Arc<Mutex<HashMap<String, ()>>>,
    stop: CancellationToken,
    tracker: TaskTracker,
    /// The time zone of the `dcmSchedule` windows.
    zone: Zone,
    /// See [`ExportHook`].
    hook: Option<ExportHook>,
}

impl Workers {
    pub fn new(
        executor: Executor,
        queue: Arc<dyn TaskDelivery>,
        config: LiveConfig,
        stop: CancellationToken,
        zone: Zone,
    ) -> Workers {
        Workers {
            executor,
            queue,
            config,
            running: Arc::default(),
            stop,
            tracker: TaskTracker::new(),
            zone,
            hook: None,
        }
    }

    /// Calls `hook` as each export starts (fault injection in tests).
    #[doc(hidden)]
    pub fn with_export_hook(mut self, hook: Option<ExportHook>) -> Workers {
        self.hook = hook;
        self
    }

    /// Starts a loop for every queue of the current snapshot that has none
    /// (called at start and after each reload).
    pub fn ensure_started(&self) {
        let snap = self.config.current();
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        for q in snap.queues.values() {
            if running.insert(q.name.clone(), ()).is_none() {
                let w = self.clone();
                let name = q.name.clone();
                self.tracker.spawn(async move { w.run_queue(name).await });
            }
        }
    }

    /// Starts the loops of queues that a reload added, until `stop`:
    /// the workers' subscription to the live configuration.
    pub async fn follow(
        &self,
        mut changes: tokio::sync::watch::Receiver<Arc<Snapshot>>,
        stop: CancellationToken,
    ) {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                changed = changes.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    self.ensure_started();
                }
            }
        }
    }

    async fn run_queue(self, name: String) {
        tracing::debug!(queue = %name, "worker started");
        let in_use = Arc::new(AtomicU32::new(0));
        let freed = Arc::new(Notify::new());
        let mut take_failing = false;
        loop {
            // Parallelism follows the queue's dcmMaxTasksParallel as it is
            // now, so a reload that changes it applies to the next task.
            let limit = self
                .config
                .current()
                .queues
                .get(&name)
                .map(|q| q.max_tasks_parallel.max(1))
                .unwrap_or(1);
            if in_use.load(Ordering::SeqCst) >= limit {
                tokio::select! {
                    _ = self.stop.cancelled() => break,
                    _ = freed.notified() => continue,
                }
            }
            let (snapshot, zone, queue_name) = (self.config.clone(), self.zone, name.clone());
            let hold = move || hold_now(&snapshot.current(), zone, &queue_name);
            let task = tokio::select! {
                _ = self.stop.cancelled() => break,
                t = self.queue.next(&name, &hold) => t,
            };
            let task = match task {
                Ok(t) => {
                    if take_failing {
                        tracing::info!(queue = %name, "taking tasks again");
                        take_failing = false;
                    }
                    t
                }
                Err(e) => {
                    // Once per outage, not once a second.
                    if !take_failing {
                        tracing::error!(queue = %name, error = %e, "cannot take a task; trying again every second until the queue backend answers");
                        take_failing = true;
                    }
                    tokio::select! {
                        _ = self.stop.cancelled() => break,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    }
                }
            };
            let slot = Slot::take(&in_use, &freed);
            let w = self.clone();
            self.tracker.spawn(async move {
                let _slot = slot;
                let id = task.task_id.clone();
                // `process` turns a panic of the export into an outcome;
                // this catches the rest (recording it), so that the task
                // goes back to the queue instead of staying taken.
                if let Err(p) = AssertUnwindSafe(w.process(task)).catch_unwind().await {
                    tracing::error!(task = %id, panic = %panic_message(&*p), "worker panicked; the task goes back to the queue");
                    w.queue.release(&id, Release::Fault).await;
                }
            });
        }
    }

    async fn process(&self, task: ExportTask) {
        let snapshot = self.config.current();
        let export = async {
            if let Some(hook) = &self.hook {
                hook(&task);
            }
            self.executor.run(&snapshot, &task).await
        };
        let outcome = match AssertUnwindSafe(export).catch_unwind().await {
            Ok(RunEnd::Outcome(outcome)) => outcome,
            Ok(RunEnd::Unread(reason)) => {
                self.unread(&task, &reason).await;
                return;
            }
            Err(p) => {
                let message = panic_message(&*p);
                tracing::error!(task = %task.task_id, panic = %message, "export panicked; the task ends FAILED");
                // `run` did not get to forget the task.
                self.executor
                    .running
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&task.task_id);
                self.executor
                    .interrupted
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&task.task_id);
                panicked(&task, &message)
            }
        };
        // The queue's retry policy as configured now (dcm4chee reads it
        // when the outcome comes back, too).
        let retry_at = snapshot
            .queues
            .get(&task.queue)
            .and_then(|q| retry::next_attempt(q, &outcome, task.failures))
            .map(|d| Utc::now() + chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX));
        if outcome.counts.remaining > 0
            && self
                .executor
                .interrupted
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&task.task_id)
        {
            // Stopped by the shutdown deadline: not an outcome, and not the
            // task's fault (the run does not count against max-deliveries).
            // The task goes back to SCHEDULED (embedded) or its message to
            // the broker (AMQP), to resume after a restart.
            tracing::info!(task = %task.task_id, remaining = outcome.counts.remaining, "export interrupted by shutdown; the task resumes at the next start");
            self.queue.release(&task.task_id, Release::Shutdown).await;
            return;
        }
        if retry_at.is_some()
            && let Some(e) = snapshot.exporter(&task.exporter_id)
        {
            self.executor
                .metrics
                .destination(&e.id, &e.web_app)
                .retry_scheduled();
        }
        match retry_at {
            Some(at) => {
                tracing::info!(task = %task.task_id, status = %outcome.status, retry_at = %at, "{}", outcome.message)
            }
            None => {
                tracing::info!(task = %task.task_id, status = %outcome.status, "{}", outcome.message)
            }
        }
        // Retried until the store answers (a database restarting, a network
        // cut): the outcome waits here rather than the export running
        // again. Said once, not once per attempt. Only a shutdown gives up
        // waiting; the task is then handed back, or left IN PROCESS for the
        // next start when even that cannot be written.
        let mut wait = Duration::from_millis(200);
        let mut failing_since: Option<std::time::Instant> = None;
        loop {
            match self
                .queue
                .finish(&task.task_id, outcome.clone(), retry_at)
                .await
            {
                Ok(_) => {
                    if let Some(since) = failing_since {
                        tracing::info!(task = %task.task_id, waited_s = since.elapsed().as_secs(), "task outcome recorded");
                    }
                    return;
                }
                // Another instance runs the task now (this one was silent
                // too long): its run ends the task, not this one.
                Err(e @ QueueError::TakenOver { .. }) => {
                    tracing::warn!(task = %task.task_id, error = %e, "outcome not recorded");
                    return;
                }
                // Deleted meanwhile: nothing left to record it on.
                Err(e @ QueueError::NotFound(_)) => {
                    tracing::warn!(task = %task.task_id, error = %e, "outcome not recorded");
                    return;
                }
                Err(e) => {
                    if failing_since.is_none() {
                        tracing::error!(task = %task.task_id, error = %e, "cannot record task outcome; it is kept until the task store answers");
                        failing_since = Some(std::time::Instant::now());
                    }
                    tokio::select! {
                        _ = self.stop.cancelled() => break,
                        _ = tokio::time::sleep(wait) => {}
                    }
                    wait = (wait * 2).min(Duration::from_secs(5));
                }
            }
        }
        // Not recorded: handed back (over AMQP the delivery is requeued
        // rather than held until the connection closes). The run counts,
        // so a task that can never be recorded is eventually given up.
        self.queue.release(&task.task_id, Release::Fault).await;
    }

    /// A run that could not read the task's records or the archive index
    /// ([`RunEnd::Unread`]). When the task store does not answer either,
    /// that is an outage (a database restarting): the task waits here until
    /// the store answers and goes back uncounted, so an outage fails no
    /// task (the worker loop says once that the backend is down). When the
    /// store answers, the fault is elsewhere (a broken index): the task
    /// goes back counted, so a fault that stays ends it after
    /// `max-deliveries`.
    async fn unread(&self, task: &ExportTask, reason: &str) {
        if self.executor.store.ping().await.is_ok() {
            tracing::error!(task = %task.task_id, reason, "the export could not read what it needs; the task goes back to the queue");
            self.queue.release(&task.task_id, Release::Fault).await;
            return;
        }
        tracing::debug!(task = %task.task_id, reason, "the task store does not answer; the task waits for it");
        let mut wait = Duration::from_millis(200);
        loop {
            tokio::select! {
                _ = self.stop.cancelled() => break,
                _ = tokio::time::sleep(wait) => {}
            }
            if self.executor.store.ping().await.is_ok() {
                break;
            }
            wait = (wait * 2).min(Duration::from_secs(5));
        }
        self.queue.release(&task.task_id, Release::Outage).await;
    }

    /// The handle that cancels these workers' running tasks.
    pub fn cancel_handle(&self) -> CancelHandle {
        self.executor.cancel_handle()
    }

    /// Stops taking tasks and waits for the running ones to finish.
    pub async fn shutdown(&self) {
        self.stop.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }

    /// At the shutdown deadline: stops the running exports before their
    /// next instance; see [`Executor::interrupt_all`]. Returns how many.
    pub fn interrupt(&self) -> usize {
        self.executor.interrupt_all()
    }
}
