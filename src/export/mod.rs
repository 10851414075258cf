//! Runs export tasks: find the instances, send them, decide the outcome.
//!
//! [`Executor::run`] takes one task and the snapshot it started with. It
//! never fails: every problem becomes part of the [`Outcome`] recorded with
//! the task. [`Workers`] run one loop per queue, at most
//! `dcmMaxTasksParallel` tasks at once; a panic in an export becomes a
//! FAILED outcome and never keeps a slot.

pub mod outcome;
pub mod retry;

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};

use chrono::Utc;
use futures_util::FutureExt;
use futures_util::stream::{self, StreamExt};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::archive::{Archive, StoredInstance};
pub use crate::config::LiveConfig;
use crate::config::{Snapshot, WebApp};
use crate::outcome::{FailureKind, InstanceResult, InstanceStatus, Outcome, Retry};
use crate::queue::{ExportHook, Hold, Release, TaskDelivery, TaskStore};
use crate::schedule::Zone;
use crate::stow::{Converted, Outgoing, StowClient};
use crate::task::{Counts, ExportTask, Status};
use crate::transcode::{self, Target, Transcoder};
use outcome::Tally;

/// At most this many instance results are written in one transaction.
const RECORD_BATCH: usize = 64;
/// Matches read from the index at a time.
const PAGE_SIZE: usize = 500;

/// One instance's part of a task.
enum Work {
    /// To be sent in one request (or more, when decoded sizes exceed the
    /// byte limit): each as stored, or converted to the target syntax.
    Send(Request),
    /// Stored by an earlier, interrupted run of the same task.
    Resumed(InstanceResult),
    /// Not attempted: the task was canceled before their turn.
    Remaining(usize),
    /// The index could not be read further: the task fails with this.
    IndexError(String),
}

/// What to do with the results of one work item.
#[derive(Clone, PartialEq, Eq)]
enum Kind {
    /// New results: count and record them.
    Record,
    /// Recorded by an earlier run: count only.
    Count,
    /// Canceled before their turn.
    Remaining(usize),
    /// See [`Work::IndexError`].
    IndexError(String),
}

/// Everything a client is built from. Secrets are masked in `Debug`, so
/// they enter the key as a hash: a changed token must give a new client.
fn client_key(web_app: &WebApp) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    let p = &web_app.props;
    p.bearer_token.as_ref().map(|s| s.expose()).hash(&mut h);
    p.basic_auth.as_ref().map(|s| s.expose()).hash(&mut h);
    if let Some(kc) = &web_app.keycloak {
        kc.secret.as_ref().map(|s| s.expose()).hash(&mut h);
        if let crate::config::model::Grant::Password { password, .. } = &kc.grant {
            password.expose().hash(&mut h);
        }
    }
    format!("{web_app:?}/{:x}", h.finish())
}

/// Runs tasks; shared by all workers.
#[derive(Clone)]
pub struct Executor {
    archive: Archive,
    /// Per-instance results (resume, progress).
    store: Arc<dyn TaskStore>,
    /// Clients by web app name, rebuilt when the web app's settings change.
    clients: Arc<Mutex<HashMap<String, (String, StowClient)>>>,
    /// Cancellation of running tasks, by task ID.
    running: Arc<Mutex<HashMap<String, CancellationToken>>>,
    /// Decompression for destinations that do not take the stored syntax;
    /// shared by all tasks, so its bounds are global.
    transcoder: Transcoder,
    /// CA files and client certificate for `https` web apps.
    tls: Arc<crate::stow::tls::TlsSettings>,
    /// Counters of what was sent, for `/metrics`.
    metrics: Arc<crate::metrics::Metrics>,
    /// Tasks whose export the shutdown deadline stopped: they go back to
    /// the queue instead of ending CANCELED.
    interrupted: Arc<Mutex<std::collections::HashSet<String>>>,
}

impl Executor {
    pub fn new(
        archive: Archive,
        store: Arc<dyn TaskStore>,
        transcoder: Transcoder,
        tls: Arc<crate::stow::tls::TlsSettings>,
    ) -> Executor {
        Executor {
            archive,
            store,
            clients: Arc::default(),
            running: Arc::default(),
            transcoder,
            tls,
            metrics: Arc::default(),
            interrupted: Arc::default(),
        }
    }

    /// Counts into `metrics` instead of a private set.
    pub fn with_metrics(mut self, metrics: Arc<crate::metrics::Metrics>) -> Executor {
        self.metrics = metrics;
        self
    }

    /// Stops the export of every running task before its next instance
    /// (requests in flight finish), at the shutdown deadline. Those tasks
    /// are not finished as CANCELED: they stay IN PROCESS for the queue to
    /// take back. A task an operator canceled already stays canceled.
    pub fn interrupt_all(&self) -> usize {
        let running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        let mut interrupted = self.interrupted.lock().unwrap_or_else(|p| p.into_inner());
        for (id, token) in running.iter() {
            if !token.is_cancelled() {
                interrupted.insert(id.clone());
                token.cancel();
            }
        }
        interrupted.len()
    }

    async fn client(&self, web_app: &WebApp) -> Result<StowClient, ClientSetupError> {
        // The key covers every setting the client is built from, so a
        // reload that changes one gets a new client, and an unchanged web
        // app keeps its pooled connections.
        let key = client_key(web_app);
        {
            let clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((k, c)) = clients.get(&web_app.name)
                && *k == key
            {
                return Ok(c.clone());
            }
        }
        // Building one reads the system's root certificates and the CA and
        // client certificate files: blocking work, kept off the runtime.
        let (w, tls) = (web_app.clone(), self.tls.clone());
        let c = tokio::task::spawn_blocking(move || StowClient::new(&w, &tls)).await??;
        self.clients
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(web_app.name.clone(), (key, c.clone()));
        Ok(c)
    }

    /// The cancellation token of a task, created on first use (a cancel may
    /// arrive between the task being taken and its export starting).
    fn token(&self, task_id: &str) -> CancellationToken {
        self.cancel_handle().token(task_id)
    }

    /// Cancels this executor's running tasks for others (the control API).
    pub fn cancel_handle(&self) -> CancelHandle {
        CancelHandle {
            running: self.running.clone(),
        }
    }

    /// Stops the export of a running task before its next instance.
    pub fn cancel(&self, task_id: &str) {
        self.cancel_handle().cancel(task_id);
    }

    /// Runs `task` with `snapshot` and returns its outcome. Instances that
    /// an earlier, interrupted run of the same task already stored are not
    /// sent again.
    pub async fn run(&self, snapshot: &Snapshot, task: &ExportTask) -> Outcome {
        let entity = task.entity();
        let fail = |dest: &str, msg: String| Outcome {
            status: Status::Failed,
            message: format!("Export {entity} to {dest} failed: {msg}"),
            error: Some(msg),
            counts: Counts::default(),
            number_of_instances: 0,
            // Configuration, archive and task store problems may be gone
            // by the next attempt; the queue's policy decides.
            retry: Retry::Yes,
        };
        let Some(exporter) = snapshot.exporter(&task.exporter_id) else {
            return fail(
                &task.exporter_id,
                format!("no exporter {} in the configuration", task.exporter_id),
            );
        };
        let Some(web_app) = snapshot.web_app(&exporter.web_app) else {
            return fail(
                &exporter.web_app,
                format!("unknown web application {}", exporter.web_app),
            );
        };
        if !web_app.installed {
            return fail(
                &web_app.name,
                format!("web application {} is not installed", web_app.name),
            );
        }
        let client = match self.client(web_app).await {
            Ok(c) => c,
            Err(e) => return fail(&web_app.name, e.to_string()),
        };
        let previous = match self.store.instance_results(&task.task_id).await {
            Ok(p) => Arc::new(p),
            Err(e) => return fail(&web_app.name, format!("task store: {e}")),
        };
        if !previous.is_empty() {
            tracing::info!(task = %task.task_id, recorded = previous.len(), "resuming: instances stored by an earlier run are not sent again");
        }
        tracing::info!(task = %task.task_id, exporter = %exporter.id, url = %client.url(), "export started");

        // Matches are read page by page, so memory does not grow with the
        // size of the study. One instance per request, as dcm4chee; at most
        // `concurrency` in flight. Each request runs as a task of its own,
        // so requests keep moving while results are being recorded.
        let concurrency = web_app.props.concurrency.max(1);
        let matched = Arc::new(AtomicU64::new(0));
        let work = self.work(task, web_app, previous, matched.clone());
        let cancel = self.token(&task.task_id);
        let dest = self.metrics.destination(&exporter.id, &web_app.name);
        let results = work
            .map(|w| {
                // Checked as each item is taken, so a cancel stops the
                // export before its next instance; requests in flight finish.
                let w = if cancel.is_cancelled() {
                    match w {
                        Work::Send(batch) => Work::Remaining(batch.len()),
                        other => other,
                    }
                } else {
                    w
                };
                let client = client.clone();
                let transcoder = self.transcoder.clone();
                let dest = dest.clone();
                tokio::spawn(async move {
                    match w {
                        Work::Send(batch) => {
                            (send(&client, &transcoder, batch, &dest).await, Kind::Record)
                        }
                        Work::Resumed(r) => (vec![r], Kind::Count),
                        Work::Remaining(n) => (Vec::new(), Kind::Remaining(n)),
                        Work::IndexError(e) => (Vec::new(), Kind::IndexError(e)),
                    }
                })
            })
            .buffer_unordered(concurrency);
        let mut results = std::pin::pin!(results);
        let mut tally = Tally::default();
        let mut index_error = None;
        while let Some(first) = results.next().await {
            // Take every result that is ready now and write them in one
            // transaction: at high rates that batches, at low rates each
            // result is written as it comes.
            let mut ready = vec![first];
            while ready.len() < RECORD_BATCH {
                match results.next().now_or_never() {
                    Some(Some(r)) => ready.push(r),
                    _ => break,
                }
            }
            let mut batch = Vec::new();
            for joined in ready {
                match joined {
                    Ok((_, Kind::Remaining(n))) => (0..n).for_each(|_| tally.add_remaining()),
                    Ok((_, Kind::IndexError(e))) => index_error = Some(e),
                    Ok((rs, kind)) => {
                        let record = kind == Kind::Record;
                        for r in rs {
                            if r.status != InstanceStatus::Completed && record {
                                tracing::warn!(task = %task.task_id, sop = %r.sop_iuid, status = r.status.as_str(), reason = r.reason.as_deref().unwrap_or(""), "instance not completed");
                            }
                            tally.add(&r);
                            if record {
                                batch.push(r);
                            }
                        }
                    }
                    // Not reachable unless a bug panics; the instance then
                    // counts as not sent (and is sent again on a resume).
                    Err(e) => {
                        tracing::error!(task = %task.task_id, error = %e, "request task failed")
                    }
                }
            }
            self.record(task, batch).await;
        }
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&task.task_id);
        let matched = matched.load(Ordering::SeqCst);
        if let Some(e) = index_error {
            return fail(&web_app.name, format!("archive index: {e}"));
        }
        if matched == 0 {
            return fail(
                &web_app.name,
                format!("could not find {entity} in the archive"),
            );
        }
        tally.outcome(&entity, &web_app.name, matched)
    }

    /// The task's matches as a stream of work items, read from the index
    /// one page at a time.
    fn work(
        &self,
        task: &ExportTask,
        web_app: &WebApp,
        previous: Arc<HashMap<String, InstanceResult>>,
        matched: Arc<AtomicU64>,
    ) -> impl futures_util::Stream<Item = Work> + Send + 'static {
        let archive = self.archive.clone();
        let (study, series, instance) = (
            task.study_iuid.clone(),
            task.series().map(str::to_string),
            task.instance().map(str::to_string),
        );
        let web_app = web_app.clone();
        let after: Option<(String, String)> = None;
        stream::unfold(Some(after), move |state| {
            let archive = archive.clone();
            let (study, series, instance) = (study.clone(), series.clone(), instance.clone());
            let (web_app, previous, matched) = (web_app.clone(), previous.clone(), matched.clone());
            async move {
                let after = state?;
                let page = archive
                    .find_page(
                        &study,
                        series.as_deref(),
                        instance.as_deref(),
                        after.as_ref().map(|(a, b)| (a.as_str(), b.as_str())),
                        PAGE_SIZE,
                    )
                    .await;
                let page = match page {
                    Ok(p) => p,
                    // Ends the stream: nothing after this can be read.
                    Err(e) => {
                        let item = Work::IndexError(e.to_string());
                        return Some((stream::iter(vec![item]), None));
                    }
                };
                let next = (page.len() == PAGE_SIZE).then(|| {
                    page.last()
                        .map(|i| (i.series_iuid.clone(), i.sop_iuid.clone()))
                });
                matched.fetch_add(page.len() as u64, Ordering::SeqCst);
                let mut items = Vec::new();
                let mut batch = Batch::new(&web_app);
                for inst in page {
                    match previous.get(&inst.sop_iuid) {
                        // Stored by an earlier run of this task: resume after it.
                        Some(r) if r.status.is_stored() => items.push(Work::Resumed(r.clone())),
                        _ => {
                            let target = transcode::choose(
                                &inst.transfer_syntax,
                                &web_app.props.transfer_syntax,
                            );
                            items.extend(batch.add(inst, target));
                        }
                    }
                }
                items.extend(batch.take());
                Some((stream::iter(items), next))
            }
        })
        .flatten()
    }

    async fn record(&self, task: &ExportTask, results: Vec<InstanceResult>) {
        if results.is_empty() {
            return;
        }
        if let Err(e) = self.store.record_instances(&task.task_id, results).await {
            // The outcome still counts them; only resuming loses precision.
            tracing::error!(task = %task.task_id, error = %e, "cannot record instance results");
        }
    }
}

/// Packs instances into requests of at most `max-instances-per-request`
/// instances and `max-bytes-per-request` bytes by their stored sizes; an
/// instance larger than the byte limit goes alone. [`send`] packs again by
/// what actually goes out, where a decompressed instance counts its
/// decoded size.
struct Batch {
    max_instances: usize,
    max_bytes: u64,
    items: Vec<(StoredInstance, Option<Target>)>,
    bytes: u64,
}

/// Instances to send, each as stored or converted, and the byte limit of
/// one request.
struct Request {
    items: Vec<(StoredInstance, Option<Target>)>,
    max_bytes: u64,
}

impl Request {
    fn len(&self) -> usize {
        self.items.len()
    }
}

impl Batch {
    fn new(web_app: &WebApp) -> Batch {
        Batch {
            max_instances: web_app.props.max_instances_per_request.max(1),
            max_bytes: web_app.props.max_bytes_per_request.unwrap_or(u64::MAX),
            items: Vec::new(),
            bytes: 0,
        }
    }

    /// Adds an instance; returns the batch it completed, if any.
    fn add(&mut self, inst: StoredInstance, target: Option<Target>) -> Option<Work> {
        let full = !self.items.is_empty()
            && (self.items.len() >= self.max_instances
                || self.bytes.saturating_add(inst.size) > self.max_bytes);
        let done = if full { self.take() } else { None };
        self.bytes = self.bytes.saturating_add(inst.size);
        self.items.push((inst, target));
        done
    }

    fn take(&mut self) -> Option<Work> {
        self.bytes = 0;
        (!self.items.is_empty()).then(|| {
            Work::Send(Request {
                items: std::mem::take(&mut self.items),
                max_bytes: self.max_bytes,
            })
        })
    }
}

/// One instance of a request and what converting it will take.
struct Planned {
    inst: StoredInstance,
    target: Option<Target>,
    plan: transcode::Plan,
}

/// Splits `items` in order into runs of at most `max` by `size` (an item
/// larger than `max` goes alone) and, when `cost` is given, at most
/// `budget` by cost.
fn pack<T>(
    items: Vec<T>,
    max: u64,
    size: impl Fn(&T) -> u64,
    cost: impl Fn(&T) -> u64,
    budget: u64,
) -> Vec<Vec<T>> {
    let mut runs = Vec::new();
    let mut run: Vec<T> = Vec::new();
    let (mut bytes, mut spent) = (0u64, 0u64);
    for item in items {
        let (n, c) = (size(&item), cost(&item));
        if !run.is_empty() && (bytes.saturating_add(n) > max || spent.saturating_add(c) > budget) {
            runs.push(std::mem::take(&mut run));
            (bytes, spent) = (0, 0);
        }
        bytes = bytes.saturating_add(n);
        spent = spent.saturating_add(c);
        run.push(item);
    }
    if !run.is_empty() {
        runs.push(run);
    }
    runs
}

/// Sends one batch's instances, each converted first when the destination
/// does not take its stored syntax. An instance that cannot be converted
/// fails with the reason; the others still go.
///
/// Decoded data counts against the request's byte limit, and is held
/// within the transcoder's memory budget: each instance's decoded size is
/// planned from its header before anything is decoded; the instances are
/// grouped so that a group's planned size stays within the byte limit and
/// its memory within the budget; a group reserves its memory in one piece
/// (see [`Transcoder`]), is decoded, and is sent in requests packed by
/// the actual sizes, the reservation held until the last of them has
/// ended. So what converted objects hold across all concurrent requests
/// stays within `--transcode-max-mib` x `--transcode-jobs`.
async fn send(
    client: &StowClient,
    transcoder: &Transcoder,
    batch: Request,
    dest: &Arc<crate::metrics::Destination>,
) -> Vec<InstanceResult> {
    let max_bytes = batch.max_bytes;
    let planned =
        futures_util::future::join_all(batch.items.into_iter().map(|(inst, target)| async move {
            let plan = match target {
                Some(_) => transcoder.plan(&inst.path, inst.size).await,
                // Read from its file as the request goes out.
                None => transcode::Plan {
                    outgoing_bytes: inst.size,
                    reserve_bytes: 0,
                },
            };
            Planned { inst, target, plan }
        }))
        .await;
    let groups = pack(
        planned,
        max_bytes,
        |p| p.plan.outgoing_bytes,
        |p| p.plan.reserve_bytes,
        transcoder.memory_capacity(),
    );
    let mut results = Vec::new();
    for group in groups {
        let need = group
            .iter()
            .map(|p| p.plan.reserve_bytes)
            .fold(0u64, u64::saturating_add);
        let _held = transcoder.reserve(need).await;
        let prepared = futures_util::future::join_all(
            group
                .into_iter()
                .map(|p| prepare(transcoder, p.inst, p.target)),
        )
        .await;
        let mut outgoing = Vec::new();
        let mut failed = Vec::new();
        for r in prepared {
            match r {
                Ok(o) => outgoing.push(o),
                Err(r) => failed.push(r),
            }
        }
        dest.results(&failed, |_| 0);
        results.extend(failed);
        // A planned size may fall short (elements after the pixel data);
        // the actual sizes decide what goes in one request.
        for request in pack(outgoing, max_bytes, outgoing_len, |_| 0, 0) {
            results.extend(post(client, request, dest).await);
        }
    }
    results
}

/// The bytes an instance puts in a request.
fn outgoing_len(o: &Outgoing) -> u64 {
    o.converted
        .as_ref()
        .map_or(o.inst.size, |c| c.data.len() as u64)
}

/// One request, counted into the destination's metrics.
async fn post(
    client: &StowClient,
    outgoing: Vec<Outgoing>,
    dest: &Arc<crate::metrics::Destination>,
) -> Vec<InstanceResult> {
    let sizes: HashMap<String, u64> = outgoing
        .iter()
        .map(|o| (o.inst.sop_iuid.clone(), outgoing_len(o)))
        .collect();
    let stored = client.store(outgoing, dest.as_ref()).await;
    dest.results(&stored, |sop| sizes.get(sop).copied().unwrap_or(0));
    stored
}

/// A destination's requests in flight and latency histogram, told by the
/// STOW-RS client of each request it sends.
impl crate::stow::RequestObserver for crate::metrics::Destination {
    fn started(&self) {
        self.request_started();
    }

    fn finished(&self, took: std::time::Duration) {
        self.request_finished(took);
    }
}

/// An instance ready to go: as stored, or converted to `target`.
async fn prepare(
    transcoder: &Transcoder,
    inst: StoredInstance,
    target: Option<Target>,
) -> Result<Outgoing, InstanceResult> {
    let Some(target) = target else {
        return Ok(Outgoing {
            inst,
            converted: None,
        });
    };
    crate::stow::check_stored(&inst).await?;
    match transcoder
        .transcode_file(inst.path.clone(), &inst.transfer_syntax, target)
        .await
    {
        Ok(done) => Ok(Outgoing {
            inst,
            converted: Some(Converted {
                data: done.data.into(),
                transfer_syntax: target.uid(),
            }),
        }),
        // Decoding the same file again gives the same error, unless the
        // file could not be read for want of descriptors or memory.
        Err(e) => Err(InstanceResult::failed(
            inst.sop_iuid.clone(),
            FailureKind::Conversion {
                shortage: e.shortage().is_some(),
            },
            e.to_string(),
        )),
    }
}

/// Why no STOW-RS client could be built for a web application.
#[derive(Debug, thiserror::Error)]
enum ClientSetupError {
    #[error(transparent)]
    Client(#[from] crate::stow::ClientError),
    #[error("building the client stopped: {0}")]
    Stopped(#[from] tokio::task::JoinError),
}

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

/// Stops running exports by task ID: all that the control API may do to
/// the workers. A cancel for a task that has not started yet is kept until
/// it starts (it then stops before its first instance).
#[derive(Clone)]
pub struct CancelHandle {
    running: Arc<Mutex<HashMap<String, CancellationToken>>>,
}

impl CancelHandle {
    /// Stops the export of `task_id` before its next instance; requests in
    /// flight finish.
    pub fn cancel(&self, task_id: &str) {
        self.token(task_id).cancel();
    }

    fn token(&self, task_id: &str) -> CancellationToken {
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(task_id.to_string())
            .or_default()
            .clone()
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
                Ok(t) => t,
                Err(e) => {
                    tracing::error!(queue = %name, error = %e, "cannot take a task; retrying in 1 s");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
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
            Ok(outcome) => outcome,
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
        // Retry the write: a finished task left IN PROCESS would be sent
        // again after a restart (harmless, resumed) but never reported.
        for attempt in 0..5 {
            match self
                .queue
                .finish(&task.task_id, outcome.clone(), retry_at)
                .await
            {
                Ok(_) => return,
                Err(e) => {
                    tracing::error!(task = %task.task_id, error = %e, attempt, "cannot record task outcome");
                    tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
                }
            }
        }
        // Not recorded: handed back (over AMQP the delivery is requeued
        // rather than held until the connection closes). The run counts,
        // so a task that can never be recorded is eventually given up.
        self.queue.release(&task.task_id, Release::Fault).await;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Secret, WebAppProps};

    fn web_app(token: &str) -> WebApp {
        WebApp {
            name: "W".into(),
            dn: "dcmWebAppName=W".into(),
            service_url: "http://127.0.0.1:1/x".into(),
            service_classes: vec!["STOW_RS".into()],
            installed: true,
            props: WebAppProps {
                bearer_token: Some(Secret::new(token)),
                transfer_syntax: vec![
                    "1.2.840.10008.1.2.1".into(),
                    "1.2.840.10008.1.2.4.70".into(),
                ],
                ..WebAppProps::default()
            },
            connect_timeout: None,
            response_timeout: None,
            keycloak: None,
        }
    }

    #[test]
    fn a_changed_secret_changes_the_client_key() {
        assert_eq!(client_key(&web_app("a")), client_key(&web_app("a")));
        assert_ne!(client_key(&web_app("a")), client_key(&web_app("b")));
        assert!(!client_key(&web_app("topsecret")).contains("topsecret"));
    }
}
