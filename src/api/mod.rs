//! The control REST API, with dcm4chee-arc's paths and JSON names.
//!
//! - `POST /dcm4chee-arc/aets/{AET}/rs/studies/{study}[/series/{series}[/instances/{sop}]]/export/{ExporterID}`
//! - `POST /dcm4chee-arc/aets/{AET}/rs/studies[/{study}]`: STOW-RS into
//!   the archive ([`stow_in`])
//! - `POST /dcm4chee-arc/ctrl/reload`, `GET /dcm4chee-arc/ctrl/status`
//! - `GET /dcm4chee-arc/monitor/export[/{taskID}]`, `GET /dcm4chee-arc/monitor/export/{taskID}/instances`,
//!   `POST /dcm4chee-arc/monitor/export/{taskID}/cancel`
//! - `GET /dcm4chee-arc/export`, `GET /dcm4chee-arc/queue`
//! - the rest of the monitor API (count, reschedule, delete, bulk forms,
//!   batches, CSV) and the QIDO-style trigger in `monitor`
//!
//! Every route under `/dcm4chee-arc` is in `ROUTES`, the list the router
//! is built from; [`routes`] adds the operations endpoints and the web page,
//! and `openapi.json` documents exactly those (a test checks).
//!
//! Errors are JSON `{"errorMessage": "..."}` as in dcm4chee.
//!
//! What the API reaches of the queue: the task records through
//! [`TaskStore`] (read, cancel the record, delete), and a [`Submit`] handle
//! for the two things that must also reach the delivery side: publishing a
//! new task and delivering a rescheduled one again (over AMQP both put a
//! message on the broker; a record alone would never run). It never holds
//! the [`crate::queue::TaskDelivery`] itself, so no handler can take,
//! finish, release or acknowledge a task: those belong to the workers, and
//! a request racing them must not be able to settle a delivery.
//!
//! Owns the routes, parameter checks and JSON answers; must not touch the
//! workers (running exports are stopped through [`CancelHandle`] only) or
//! the configuration's reload logic ([`crate::config::LiveConfig`] owns it).

mod monitor;
pub mod ops;
pub mod stow_in;
pub mod ui;

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter, on};
use chrono::{NaiveDateTime, SecondsFormat, TimeZone, Utc};
use serde::Deserialize;
use serde_json::json;

use crate::archive::Archive;
use crate::cancel::CancelHandle;
use crate::cluster::{Signal, Signals};
use crate::config::LiveConfig;
use crate::queue::{CancelResult, NewTask, QueueError, Submit, TaskStore};
use crate::schedule::{Schedule, Zone};
use crate::task::TaskRequest;

pub use self::stow_in::StowIn;

/// What the handlers share.
#[derive(Clone)]
pub struct ApiState {
    pub device_name: String,
    pub config: LiveConfig,
    /// The task records.
    pub store: Arc<dyn TaskStore>,
    /// Publishing and rescheduling (see the module documentation).
    pub submit: Submit,
    /// Stops exports in process (the only reach into the workers), here
    /// and, on a shared database, on the other instances.
    pub cancel: CancelHandle,
    /// Signals to the other instances on a shared database (reload all);
    /// `None` when this instance is alone.
    pub cluster: Option<Signals>,
    /// The archive index, for the QIDO-style trigger.
    pub archive: Archive,
    /// Time zone of the `dcmSchedule` windows, to show when they open.
    pub zone: Zone,
    /// Stores what STOW-RS clients send into the archive.
    pub stow_in: StowIn,
}

/// An API error, answered as `{"errorMessage": ...}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    details: Vec<String>,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            details: Vec::new(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({ "errorMessage": self.message });
        if !self.details.is_empty() {
            body["errors"] = json!(self.details);
        }
        (self.status, Json(body)).into_response()
    }
}

impl From<QueueError> for ApiError {
    fn from(e: QueueError) -> ApiError {
        match e {
            QueueError::NotFound(_) => ApiError::new(StatusCode::NOT_FOUND, e.to_string()),
            QueueError::Conflict(_) => ApiError::new(StatusCode::CONFLICT, e.to_string()),
            // The broker did not take the task (down, or it refused): the
            // client may try again later; nothing was queued.
            QueueError::Broker(_) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
            other => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, other.to_string()),
        }
    }
}

/// A route's handler, for the method of its [`ROUTES`] entry.
type Handler = fn(MethodFilter) -> MethodRouter<ApiState>;

/// Every route under `/dcm4chee-arc`: method, path (OpenAPI's `{name}`
/// syntax, which axum shares) and handler. The router is built from this
/// list and `openapi.json` must document exactly these.
const ROUTES: &[(&str, &str, Handler)] = &[
    ("POST", "/aets/{AET}/rs/studies", |m| {
        on(m, stow_in::store_instances)
    }),
    ("POST", "/aets/{AET}/rs/studies/{StudyInstanceUID}", |m| {
        on(m, stow_in::store_study_instances)
    }),
    ("POST", "/aets/{AET}/rs/studies/export/{ExporterID}", |m| {
        on(m, monitor::export_matching)
    }),
    (
        "POST",
        "/aets/{AET}/rs/studies/{StudyInstanceUID}/export/{ExporterID}",
        |m| on(m, export_study),
    ),
    (
        "POST",
        "/aets/{AET}/rs/studies/{StudyInstanceUID}/series/{SeriesInstanceUID}/export/{ExporterID}",
        |m| on(m, export_series),
    ),
    (
        "POST",
        "/aets/{AET}/rs/studies/{StudyInstanceUID}/series/{SeriesInstanceUID}/instances/{SOPInstanceUID}/export/{ExporterID}",
        |m| on(m, export_instance),
    ),
    ("POST", "/ctrl/reload", |m| on(m, reload)),
    ("GET", "/ctrl/status", |m| on(m, status)),
    ("GET", "/monitor/export", |m| on(m, list_tasks)),
    ("DELETE", "/monitor/export", |m| {
        on(m, monitor::delete_matching)
    }),
    ("GET", "/monitor/export/count", |m| on(m, monitor::count)),
    ("GET", "/monitor/export/batch", |m| on(m, monitor::batches)),
    ("POST", "/monitor/export/cancel", |m| {
        on(m, monitor::cancel_matching)
    }),
    ("POST", "/monitor/export/reschedule", |m| {
        on(m, monitor::reschedule_matching)
    }),
    ("POST", "/monitor/export/reschedule/{ExporterID}", |m| {
        on(m, monitor::reschedule_matching_to)
    }),
    ("GET", "/monitor/export/{taskID}", |m| on(m, get_task)),
    ("DELETE", "/monitor/export/{taskID}", |m| {
        on(m, monitor::delete)
    }),
    ("GET", "/monitor/export/{taskID}/instances", |m| {
        on(m, task_instances)
    }),
    ("POST", "/monitor/export/{taskID}/cancel", |m| {
        on(m, cancel_task)
    }),
    ("POST", "/monitor/export/{taskID}/reschedule", |m| {
        on(m, monitor::reschedule)
    }),
    (
        "POST",
        "/monitor/export/{taskID}/reschedule/{ExporterID}",
        |m| on(m, monitor::reschedule_to),
    ),
    ("GET", "/export", |m| on(m, list_exporters)),
    ("GET", "/queue", |m| on(m, list_queues)),
    ("GET", "/export-rules", |m| on(m, list_export_rules)),
];

/// (method, full path) of every route the service answers: the control
/// API, the operations endpoints and the web page; `openapi.json`
/// documents exactly these.
pub fn routes() -> Vec<(&'static str, String)> {
    let control = ROUTES.iter().map(|(m, p, _)| (*m, *p));
    let page = ui::UI_ROUTES.iter().copied();
    control
        .chain(page)
        .map(|(m, p)| (m, format!("{BASE}{p}")))
        .chain(ops::ROUTES.iter().map(|(m, p)| (*m, p.to_string())))
        .collect()
}

/// Where dcm4chee-arc's REST API lives, and so ours.
pub(crate) const BASE: &str = "/dcm4chee-arc";

/// The router under `/dcm4chee-arc`.
pub fn router(state: ApiState) -> Router {
    let mut base = Router::new();
    for (method, path, handler) in ROUTES {
        let filter = Method::from_bytes(method.as_bytes())
            .ok()
            .and_then(|m| MethodFilter::try_from(m).ok())
            .unwrap_or_else(|| panic!("ROUTES: bad method {method}"));
        base = base.route(path, handler(filter));
    }
    let base = base.with_state(state);
    Router::new().nest(BASE, base)
}

#[derive(Debug, Deserialize)]
struct ExportParams {
    #[serde(rename = "batchID")]
    batch_id: Option<String>,
    /// `yyyyMMddHHmmss`, local time of the service (24-hour: dcm4chee's
    /// trigger parses a 12-hour pattern by mistake, the monitor API does not).
    #[serde(rename = "scheduledTime")]
    scheduled_time: Option<String>,
}

async fn export_study(
    State(s): State<ApiState>,
    Path((aet, study, exporter)): Path<(String, String, String)>,
    Query(p): Query<ExportParams>,
) -> Result<Response, ApiError> {
    trigger(s, aet, exporter, study, None, None, p).await
}

async fn export_series(
    State(s): State<ApiState>,
    Path((aet, study, series, exporter)): Path<(String, String, String, String)>,
    Query(p): Query<ExportParams>,
) -> Result<Response, ApiError> {
    trigger(s, aet, exporter, study, Some(series), None, p).await
}

async fn export_instance(
    State(s): State<ApiState>,
    Path((aet, study, series, sop, exporter)): Path<(String, String, String, String, String)>,
    Query(p): Query<ExportParams>,
) -> Result<Response, ApiError> {
    trigger(s, aet, exporter, study, Some(series), Some(sop), p).await
}

fn parse_scheduled(v: &str) -> Result<chrono::DateTime<Utc>, ApiError> {
    let bad = || {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("scheduledTime: {v:?} is not yyyyMMddHHmmss"),
        )
    };
    let naive = NaiveDateTime::parse_from_str(v, "%Y%m%d%H%M%S").map_err(|_| bad())?;
    chrono::Local
        .from_local_datetime(&naive)
        .earliest()
        .map(|t| t.with_timezone(&Utc))
        .ok_or_else(bad)
}

async fn trigger(
    s: ApiState,
    aet: String,
    exporter_id: String,
    study: String,
    series: Option<String>,
    sop: Option<String>,
    p: ExportParams,
) -> Result<Response, ApiError> {
    let snap = s.config.current();
    if !snap.ae_titles.contains(&aet) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("No such Application Entity: {aet}"),
        ));
    }
    let Some(exporter) = snap.exporter(&exporter_id) else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("No such Exporter: {exporter_id}"),
        ));
    };
    let request = TaskRequest {
        exporter_id: exporter_id.clone(),
        study_iuid: study,
        series_iuid: series,
        sop_iuid: sop,
        batch_id: p.batch_id,
        scheduled_time: p
            .scheduled_time
            .as_deref()
            .map(parse_scheduled)
            .transpose()?,
    };
    request
        .validate()
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.to_string()))?;
    let task = s
        .submit
        .publish(NewTask::for_exporter(
            request,
            s.device_name.clone(),
            exporter,
        ))
        .await?;
    tracing::info!(task = %task.task_id, exporter = %exporter_id, entity = %task.entity(), "export task queued");
    Ok((StatusCode::ACCEPTED, Json(task)).into_response())
}

/// `POST /ctrl/reload[?all=true]`: `all` also asks every other instance
/// sharing the database to reload (each validates before it swaps, as
/// here); alone, `all` is this instance.
#[derive(Deserialize)]
struct ReloadQuery {
    #[serde(default)]
    all: bool,
}

async fn reload(
    State(s): State<ApiState>,
    Query(q): Query<ReloadQuery>,
) -> Result<StatusCode, ApiError> {
    // Workers follow the swap themselves (they subscribe to it).
    match s.config.reload().await {
        Ok(_) => match (&s.cluster, q.all) {
            (Some(cluster), true) => match cluster.send(&Signal::Reload).await {
                Ok(()) => Ok(StatusCode::NO_CONTENT),
                Err(e) => {
                    tracing::error!(error = %e, "reloaded here; the other instances were not told");
                    Err(ApiError {
                        status: StatusCode::SERVICE_UNAVAILABLE,
                        message: format!(
                            "configuration reloaded on this instance; the other instances were not told: {e}"
                        ),
                        details: Vec::new(),
                    })
                }
            },
            _ => Ok(StatusCode::NO_CONTENT),
        },
        Err(e) => {
            tracing::error!(error = %e, "reload refused; the running configuration stays");
            // An unreachable directory is a temporary condition (503); an
            // invalid configuration needs an administrator (409).
            let status = if e.is_unreachable() {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                StatusCode::CONFLICT
            };
            Err(ApiError {
                status,
                message: format!(
                    "configuration not reloaded, the running one stays: {}",
                    e.errors().join("; ")
                ),
                details: e.errors(),
            })
        }
    }
}

async fn status() -> Json<serde_json::Value> {
    Json(json!({ "status": "STARTED" }))
}

/// `GET /monitor/export`: JSON, or CSV with `Accept: text/csv`.
async fn list_tasks(
    State(s): State<ApiState>,
    headers: HeaderMap,
    q: Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    monitor::list(s, headers, monitor::Params::new(q)).await
}

async fn get_task(
    State(s): State<ApiState>,
    Path(task): Path<String>,
) -> Result<Response, ApiError> {
    Ok(Json(s.store.get(&task).await?).into_response())
}

async fn task_instances(
    State(s): State<ApiState>,
    Path(task): Path<String>,
) -> Result<Response, ApiError> {
    s.store.get(&task).await?;
    let mut v: Vec<_> = s
        .store
        .instance_results(&task)
        .await?
        .into_values()
        .collect();
    v.sort_by(|a, b| a.sop_iuid.cmp(&b.sop_iuid));
    Ok(Json(v).into_response())
}

/// dcm4chee's cancel: 204; 404 for an unknown task; 409 when it has ended.
async fn cancel_task(
    State(s): State<ApiState>,
    Path(task): Path<String>,
) -> Result<StatusCode, ApiError> {
    match s.store.cancel(&task).await? {
        CancelResult::Canceled => {
            tracing::info!(task = %task, "task canceled before it started");
            Ok(StatusCode::NO_CONTENT)
        }
        CancelResult::Running => {
            s.cancel.cancel(&task);
            tracing::info!(task = %task, "canceling running task before its next instance");
            Ok(StatusCode::NO_CONTENT)
        }
        CancelResult::AlreadyDone(status) => Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("Cannot cancel Task[id={task}] with Status: {status}"),
        )),
    }
}

/// Configured exporters, sorted by ID.
async fn list_exporters(State(s): State<ApiState>) -> Json<serde_json::Value> {
    let snap = s.config.current();
    let now = Utc::now();
    Json(json!(
        snap.exporters
            .values()
            .map(|e| {
                let mut v = json!({"id": e.id, "description": e.description, "dcmURI": e.uri, "dcmQueueName": e.queue});
                merge(&mut v, window(s.zone, &e.schedule, now));
                v
            })
            .collect::<Vec<_>>()
    ))
}

async fn list_queues(State(s): State<ApiState>) -> Json<serde_json::Value> {
    let snap = s.config.current();
    let now = Utc::now();
    Json(json!(
        snap.queues
            .values()
            .map(|q| {
                let mut v = json!({"name": q.name, "description": q.description, "maxTasksParallel": q.max_tasks_parallel, "installed": q.installed});
                merge(&mut v, window(s.zone, &q.schedule, now));
                v
            })
            .collect::<Vec<_>>()
    ))
}

/// The export rules, with dcm4chee's attribute names and their window.
async fn list_export_rules(State(s): State<ApiState>) -> Json<serde_json::Value> {
    let snap = s.config.current();
    let now = Utc::now();
    Json(json!(
        snap.export_rules
            .iter()
            .map(|r| {
                let mut v = json!({
                    "cn": r.name,
                    "dn": r.dn,
                    "dcmEntity": r.entity,
                    "dcmExporterID": r.exporter_ids,
                    "dcmProperty": r.conditions.texts(),
                    "dcmDuration": crate::config::model::format_iso_duration(r.duration),
                    "dcmExportReoccurredInstances": r.reoccurred,
                    "dicomAETitle": r.ae_title,
                });
                merge(&mut v, window(s.zone, &r.schedule, now));
                v
            })
            .collect::<Vec<_>>()
    ))
}

/// A `dcmSchedule` window as operators want to see it: the values, whether
/// it is open now, and when it next opens and closes (RFC 3339, UTC; null
/// when it never closes).
fn window(zone: Zone, schedule: &Schedule, now: chrono::DateTime<Utc>) -> serde_json::Value {
    let open = zone.is_open(schedule, now);
    // While open: the end of this window, and the start of the next one.
    // While closed: the coming window, from its start to its end.
    let (next_open, next_close) = if open {
        let close = zone.next_close(schedule, now);
        (close.and_then(|c| zone.next_open(schedule, c)), close)
    } else {
        let start = zone.next_open(schedule, now);
        (start, start.and_then(|o| zone.next_close(schedule, o)))
    };
    let rfc =
        |t: Option<chrono::DateTime<Utc>>| t.map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true));
    json!({
        "dcmSchedule": schedule.values(),
        "scheduleOpen": open,
        "nextScheduleOpen": rfc(next_open),
        "nextScheduleClose": rfc(next_close),
    })
}

fn merge(into: &mut serde_json::Value, from: serde_json::Value) {
    if let (Some(into), serde_json::Value::Object(from)) = (into.as_object_mut(), from) {
        into.extend(from);
    }
}
