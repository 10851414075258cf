//! Runs export tasks: find the instances, send them, decide the outcome.
//!
//! [`Executor::run`] takes one task and the snapshot it started with. It
//! never fails: every problem becomes part of the [`Outcome`] recorded with
//! the task. [`Workers`] (`workers.rs`) run one loop per queue, at most
//! `dcmMaxTasksParallel` tasks at once; a panic in an export becomes a
//! FAILED outcome and never keeps a slot. [`CancelHandle`]
//! (`src/cancel.rs`) is all the control API sees of them.

pub mod outcome;
pub mod retry;
mod workers;

pub use crate::cancel::CancelHandle;
pub use workers::Workers;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures_util::FutureExt;
use futures_util::stream::{self, StreamExt};
use std::sync::atomic::{AtomicU64, Ordering};

use tokio_util::sync::CancellationToken;

use crate::archive::{Archive, StoredInstance};

use crate::config::{Snapshot, WebApp};
use crate::outcome::{FailureKind, InstanceResult, InstanceStatus, Outcome, Retry};
use crate::queue::TaskStore;
use crate::stow::{Converted, Outgoing, StowClient};
use crate::task::{Counts, ExportTask, Status};
use crate::transcode::{self, Target, Transcoder};
use outcome::Tally;

/// At most this many instance results are written in one transaction.
const RECORD_BATCH: usize = 64;
/// Matches read from the index at a time.
const PAGE_SIZE: usize = 500;

/// How a run of a task ended.
#[derive(Debug)]
pub enum RunEnd {
    /// With an outcome to record.
    Outcome(Outcome),
    /// Without one: the task's records or the archive index could not be
    /// read (a database restarting, a network cut, a broken file). Not
    /// an outcome of the task: the workers hand it back (see
    /// [`Workers`]), and a later run resumes it.
    Unread(String),
}

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
            broadcast: None,
        }
    }

    /// Stops the export of a running task before its next instance.
    pub fn cancel(&self, task_id: &str) {
        self.cancel_handle().cancel(task_id);
    }

    /// Runs `task` with `snapshot` and returns its outcome, or
    /// [`RunEnd::Unread`] when the task store or the archive index could
    /// not be read. Instances that an earlier, interrupted run of the same
    /// task already stored are not sent again.
    pub async fn run(&self, snapshot: &Snapshot, task: &ExportTask) -> RunEnd {
        let entity = task.entity();
        let fail = |dest: &str, msg: String| {
            RunEnd::Outcome(Outcome {
                status: Status::Failed,
                message: format!("Export {entity} to {dest} failed: {msg}"),
                error: Some(msg),
                counts: Counts::default(),
                number_of_instances: 0,
                // Configuration problems and a study not (yet) in the
                // archive may be gone by the next attempt; the queue's
                // policy decides.
                retry: Retry::Yes,
            })
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
            Err(e) => return RunEnd::Unread(format!("task store: {e}")),
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
            return RunEnd::Unread(format!("archive index: {e}"));
        }
        if matched == 0 {
            return fail(
                &web_app.name,
                format!("could not find {entity} in the archive"),
            );
        }
        RunEnd::Outcome(tally.outcome(&entity, &web_app.name, matched))
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
