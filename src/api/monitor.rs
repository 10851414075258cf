//! The monitor API (`/monitor/export...`) and the QIDO-style export
//! trigger: query parameters parsed and checked here, with a 400 naming the
//! parameter for anything malformed or unknown.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Duration, NaiveDate, NaiveDateTime, TimeZone, Utc};
use serde_json::{Value, json};

use super::{ApiError, ApiState, parse_scheduled};
use crate::archive::StudyQuery;
use crate::queue::{
    CancelResult, NewTask, QueueError, Reschedule, RescheduleTo, TaskFilter, TimeRange,
};
use crate::task::{ExportTask, Status, TaskRequest, is_uid};

/// Query parameters as given, in order (repeatable ones may come twice).
pub(super) struct Params(Vec<(String, String)>);

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, message)
}

impl Params {
    pub(super) fn new(q: Query<Vec<(String, String)>>) -> Params {
        Params(q.0)
    }

    /// 400 for a parameter not in `allowed`.
    fn only(&self, allowed: &[&str]) -> Result<(), ApiError> {
        match self.0.iter().find(|(k, _)| !allowed.contains(&k.as_str())) {
            Some((k, _)) => Err(bad(format!(
                "unknown query parameter {k:?}; allowed here: {}",
                allowed.join(", ")
            ))),
            None => Ok(()),
        }
    }

    /// The value of a parameter given at most once; empty means absent.
    fn one(&self, name: &str) -> Result<Option<&str>, ApiError> {
        let mut it = self
            .0
            .iter()
            .filter(|(k, v)| k == name && !v.is_empty())
            .map(|(_, v)| v.as_str());
        let first = it.next();
        if it.next().is_some() {
            return Err(bad(format!("{name}: given more than once")));
        }
        Ok(first)
    }

    /// Every non-empty value of a repeatable parameter.
    fn all(&self, name: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, v)| k == name && !v.is_empty())
            .map(|(_, v)| v.clone())
            .collect()
    }

    fn number(&self, name: &str, min: u64) -> Result<Option<u64>, ApiError> {
        self.one(name)?
            .map(|v| match v.parse::<u64>() {
                Ok(n) if n >= min => Ok(n),
                _ => Err(bad(format!(
                    "{name}: {v:?} is not an integer of at least {min}"
                ))),
            })
            .transpose()
    }
}

/// The filters every monitor endpoint takes.
const FILTERS: &[&str] = &[
    "ExporterID",
    "StudyInstanceUID",
    "dicomDeviceName",
    "status",
    "batchID",
    "createdTime",
    "updatedTime",
];

/// A start and an end (exclusive).
type Span = (DateTime<Utc>, DateTime<Utc>);

/// One bound of a time range: `yyyyMMdd` (a whole day) or
/// `yyyyMMddHHmmss` (a whole second), in the service's local time as
/// dcm4chee reads them, or in UTC with a trailing `Z` (what the web page
/// sends, so that a browser in another time zone filters exactly).
/// Returns the start of that span and its end (exclusive).
fn parse_bound(v: &str) -> Option<Span> {
    let (v, utc) = match v.strip_suffix('Z') {
        Some(digits) => (digits, true),
        None => (v, false),
    };
    if !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let local = |n: NaiveDateTime| {
        if utc {
            return Some(n.and_utc());
        }
        chrono::Local
            .from_local_datetime(&n)
            .earliest()
            .map(|t| t.with_timezone(&Utc))
    };
    match v.len() {
        8 => {
            let d = NaiveDate::parse_from_str(v, "%Y%m%d").ok()?;
            let start = local(d.and_hms_opt(0, 0, 0)?)?;
            let end = local(d.succ_opt()?.and_hms_opt(0, 0, 0)?)?;
            Some((start, end))
        }
        14 => {
            let start = local(NaiveDateTime::parse_from_str(v, "%Y%m%d%H%M%S").ok()?)?;
            Some((start, start + Duration::seconds(1)))
        }
        _ => None,
    }
}

/// `from-to`, `from-`, `-to` or a single value (see [`parse_bound`]).
pub(super) fn parse_range(name: &str, v: &str) -> Result<TimeRange, ApiError> {
    let err = || {
        bad(format!(
            "{name}: {v:?} is not a date (yyyyMMdd) or date-time (yyyyMMddHHmmss), \
             local time or UTC with a trailing Z, nor a range of them (from-to, from-, -to)"
        ))
    };
    let bound = |s: &str| -> Result<Option<Span>, ApiError> {
        if s.is_empty() {
            Ok(None)
        } else {
            parse_bound(s).map(Some).ok_or_else(err)
        }
    };
    let (from, to) = match v.split_once('-') {
        Some((a, b)) => (bound(a)?, bound(b)?),
        None => {
            let b = bound(v)?;
            (b, b)
        }
    };
    if from.is_none() && to.is_none() {
        return Err(err());
    }
    let range = TimeRange {
        from: from.map(|b| b.0),
        to: to.map(|b| b.1),
    };
    if let (Some(a), Some(b)) = (range.from, range.to)
        && a >= b
    {
        return Err(bad(format!("{name}: {v:?} starts after it ends")));
    }
    Ok(range)
}

fn parse_status(v: &str) -> Result<Status, ApiError> {
    v.parse::<Status>().map_err(|e| {
        bad(format!(
            "status: {e}; one of {}",
            Status::ALL.map(Status::as_str).join(", ")
        ))
    })
}

/// The filters of `p` (offset, limit and orderby too when `paging`).
fn task_filter(p: &Params, paging: bool) -> Result<TaskFilter, ApiError> {
    let study = p.one("StudyInstanceUID")?;
    if let Some(s) = study
        && !is_uid(s)
    {
        return Err(bad(format!("StudyInstanceUID: {s:?} is not a DICOM UID")));
    }
    let mut f = TaskFilter {
        exporter_ids: p.all("ExporterID"),
        study_iuid: study.map(str::to_string),
        status: p.one("status")?.map(parse_status).transpose()?,
        batch_id: p.one("batchID")?.map(str::to_string),
        device_name: p.one("dicomDeviceName")?.map(str::to_string),
        created: p
            .one("createdTime")?
            .map(|v| parse_range("createdTime", v))
            .transpose()?
            .unwrap_or_default(),
        updated: p
            .one("updatedTime")?
            .map(|v| parse_range("updatedTime", v))
            .transpose()?
            .unwrap_or_default(),
        ..TaskFilter::default()
    };
    if paging {
        f.offset = p.number("offset", 0)?.unwrap_or(0);
        f.limit = p.number("limit", 1)?;
        if let Some(o) = p.one("orderby")? {
            f.order = o.parse().map_err(|e| bad(format!("orderby: {e}")))?;
        }
    }
    Ok(f)
}

fn allowed(extra: &[&'static str]) -> Vec<&'static str> {
    FILTERS.iter().chain(extra).copied().collect()
}

/// The columns of the CSV listing, in order: the task's JSON names.
pub const CSV_COLUMNS: &[&str] = &[
    "taskID",
    "dicomDeviceName",
    "queue",
    "type",
    "status",
    "batchID",
    "createdTime",
    "updatedTime",
    "scheduledTime",
    "processingStartTime",
    "processingEndTime",
    "failures",
    "outcomeMessage",
    "errorMessage",
    "ExporterID",
    "LocalAET",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
    "NumberOfInstances",
    "completed",
    "warning",
    "failed",
    "missing",
];

/// The first characters that make a spreadsheet read a cell as a formula
/// (OWASP, "CSV Injection"): `=`, `+`, `-`, `@`, and a tab or carriage
/// return, after which some spreadsheets look again.
const FORMULA_TRIGGERS: &[char] = &['=', '+', '-', '@', '\t', '\r'];

/// RFC 4180: a header line, then one line per task; a field with the
/// delimiter, a quote or a line break is quoted, quotes doubled. A text
/// field that a spreadsheet would run as a formula (a batchID or a
/// destination's error message starting with `=`, say) is neutralised as
/// OWASP recommends: a `'` in front, and quoted.
fn to_csv(tasks: &[ExportTask], delimiter: char) -> String {
    let sep = delimiter.to_string();
    let mut out = CSV_COLUMNS.join(&sep);
    out.push_str("\r\n");
    for t in tasks {
        let v = serde_json::to_value(t).unwrap_or_default();
        let line: Vec<String> = CSV_COLUMNS
            .iter()
            .map(|c| match &v[*c] {
                Value::Null => String::new(),
                Value::String(s) => csv_field(s, delimiter, true),
                // Numbers (counts, never negative): no formula.
                other => csv_field(&other.to_string(), delimiter, false),
            })
            .collect();
        out.push_str(&line.join(&sep));
        out.push_str("\r\n");
    }
    out
}

/// One CSV field: quoted when it holds the delimiter, a quote or a line
/// break; a `text` starting with a [`FORMULA_TRIGGERS`] character gets a
/// `'` in front and is quoted.
fn csv_field(s: &str, delimiter: char, text: bool) -> String {
    let formula = text && s.starts_with(FORMULA_TRIGGERS);
    if formula || s.contains([delimiter, '"', '\n', '\r']) {
        let lead = if formula { "'" } else { "" };
        format!("\"{lead}{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// JSON, or CSV (`text/csv`, `;delimiter=semicolon` for semicolons), by the
/// `accept` query parameter or else the `Accept` header; `None`: 406.
fn representation(accept: Option<&str>) -> Option<Option<char>> {
    let Some(accept) = accept else {
        return Some(None);
    };
    let mut json = false;
    for media in accept.split(',') {
        let mut parts = media.split(';').map(str::trim);
        let kind = parts.next().unwrap_or("").to_ascii_lowercase();
        if kind == "text/csv" {
            let semicolon = parts.any(|p| p.eq_ignore_ascii_case("delimiter=semicolon"));
            return Some(Some(if semicolon { ';' } else { ',' }));
        }
        if matches!(
            kind.as_str(),
            "application/json" | "application/*" | "*/*" | "" | "application/dicom+json"
        ) {
            json = true;
        }
    }
    json.then_some(None)
}

/// `GET /monitor/export`.
pub(super) async fn list(s: ApiState, headers: HeaderMap, p: Params) -> Result<Response, ApiError> {
    p.only(&allowed(&["offset", "limit", "orderby", "accept"]))?;
    let filter = task_filter(&p, true)?;
    let accept = match p.one("accept")? {
        Some(a) => Some(a.to_string()),
        None => headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
    };
    let Some(repr) = representation(accept.as_deref()) else {
        return Err(ApiError::new(
            StatusCode::NOT_ACCEPTABLE,
            format!(
                "cannot answer {accept:?}: application/json or text/csv (with ;delimiter=semicolon)"
            ),
        ));
    };
    let tasks = s.store.list(filter).await?;
    Ok(match repr {
        None => Json(tasks).into_response(),
        Some(delimiter) => {
            let ct = if delimiter == ';' {
                "text/csv; charset=utf-8; delimiter=semicolon"
            } else {
                "text/csv; charset=utf-8"
            };
            (
                [(header::CONTENT_TYPE, HeaderValue::from_static(ct))],
                to_csv(&tasks, delimiter),
            )
                .into_response()
        }
    })
}

/// `GET /monitor/export/count`.
pub(super) async fn count(
    State(s): State<ApiState>,
    q: Query<Vec<(String, String)>>,
) -> Result<Json<Value>, ApiError> {
    let p = Params::new(q);
    p.only(FILTERS)?;
    let n = s.store.count(task_filter(&p, false)?).await?;
    Ok(Json(json!({ "count": n })))
}

/// `GET /monitor/export/batch`.
pub(super) async fn batches(
    State(s): State<ApiState>,
    q: Query<Vec<(String, String)>>,
) -> Result<Json<Value>, ApiError> {
    let p = Params::new(q);
    p.only(&allowed(&["offset", "limit"]))?;
    let f = task_filter(&p, true)?;
    Ok(Json(json!(s.store.batches(f).await?)))
}

/// `scheduledTime` of a reschedule (now when absent), and the exporter it
/// goes to, if another.
fn reschedule_args(
    s: &ApiState,
    p: &Params,
    exporter: Option<&str>,
) -> Result<Reschedule, ApiError> {
    let scheduled_time = p
        .one("scheduledTime")?
        .map(parse_scheduled)
        .transpose()?
        .unwrap_or_else(Utc::now);
    let exporter = match exporter {
        None => None,
        Some(id) => {
            let snap = s.config.current();
            let e = snap
                .exporter(id)
                .ok_or_else(|| bad(format!("No such Exporter: {id}")))?;
            Some(RescheduleTo::of(e))
        }
    };
    Ok(Reschedule {
        scheduled_time,
        exporter,
    })
}

async fn reschedule_one(
    s: ApiState,
    task: String,
    exporter: Option<String>,
    p: Params,
) -> Result<StatusCode, ApiError> {
    p.only(&["scheduledTime"])?;
    let r = reschedule_args(&s, &p, exporter.as_deref())?;
    let t = s.submit.reschedule(&task, r).await?;
    tracing::info!(task = %task, exporter = %t.exporter_id, scheduled = %t.scheduled_time, "task rescheduled");
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /monitor/export/{taskID}/reschedule`.
pub(super) async fn reschedule(
    State(s): State<ApiState>,
    Path(task): Path<String>,
    q: Query<Vec<(String, String)>>,
) -> Result<StatusCode, ApiError> {
    reschedule_one(s, task, None, Params::new(q)).await
}

/// `POST /monitor/export/{taskID}/reschedule/{ExporterID}`.
pub(super) async fn reschedule_to(
    State(s): State<ApiState>,
    Path((task, exporter)): Path<(String, String)>,
    q: Query<Vec<(String, String)>>,
) -> Result<StatusCode, ApiError> {
    reschedule_one(s, task, Some(exporter), Params::new(q)).await
}

/// dcm4chee's answer to a bulk operation: 200 `{"count"}` when nothing
/// failed, 202 `{"count","failed"}` when some did, 409 `{"failed"}` when
/// all did.
fn bulk_answer(count: u64, failed: u64) -> Response {
    match (count, failed) {
        (_, 0) => Json(json!({ "count": count })).into_response(),
        (0, f) => (StatusCode::CONFLICT, Json(json!({ "failed": f }))).into_response(),
        (c, f) => (
            StatusCode::ACCEPTED,
            Json(json!({ "count": c, "failed": f })),
        )
            .into_response(),
    }
}

async fn reschedule_bulk(
    s: ApiState,
    exporter: Option<String>,
    p: Params,
) -> Result<Response, ApiError> {
    p.only(&allowed(&["scheduledTime"]))?;
    let r = reschedule_args(&s, &p, exporter.as_deref())?;
    let tasks = s.store.list(task_filter(&p, false)?).await?;
    let (mut count, mut failed) = (0, 0);
    for t in tasks {
        match s.submit.reschedule(&t.task_id, r.clone()).await {
            Ok(_) => count += 1,
            // IN PROCESS, or deleted meanwhile.
            Err(QueueError::Conflict(_) | QueueError::NotFound(_)) => failed += 1,
            Err(e) => return Err(e.into()),
        }
    }
    tracing::info!(count, failed, "tasks rescheduled");
    Ok(bulk_answer(count, failed))
}

/// `POST /monitor/export/reschedule`.
pub(super) async fn reschedule_matching(
    State(s): State<ApiState>,
    q: Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    reschedule_bulk(s, None, Params::new(q)).await
}

/// `POST /monitor/export/reschedule/{ExporterID}`.
pub(super) async fn reschedule_matching_to(
    State(s): State<ApiState>,
    Path(exporter): Path<String>,
    q: Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    reschedule_bulk(s, Some(exporter), Params::new(q)).await
}

/// `POST /monitor/export/cancel?status=...`: `status` is required and must
/// be one that has not ended.
pub(super) async fn cancel_matching(
    State(s): State<ApiState>,
    q: Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    let p = Params::new(q);
    p.only(FILTERS)?;
    let f = task_filter(&p, false)?;
    match f.status {
        None => {
            return Err(bad(
                "status: required (SCHEDULED, SCHEDULED FOR RETRY or IN PROCESS)",
            ));
        }
        Some(st) if st.is_done() => {
            return Err(bad(format!(
                "status: {st} tasks have ended and cannot be canceled"
            )));
        }
        Some(_) => {}
    }
    let (mut count, mut failed) = (0, 0);
    for t in s.store.list(f).await? {
        match s.store.cancel(&t.task_id).await {
            Ok(CancelResult::Canceled) => count += 1,
            Ok(CancelResult::Running) => {
                s.cancel.cancel(&t.task_id);
                count += 1;
            }
            Ok(CancelResult::AlreadyDone(_)) | Err(QueueError::NotFound(_)) => failed += 1,
            Err(e) => return Err(e.into()),
        }
    }
    tracing::info!(count, failed, "tasks canceled");
    Ok(bulk_answer(count, failed))
}

/// `DELETE /monitor/export/{taskID}`.
pub(super) async fn delete(
    State(s): State<ApiState>,
    Path(task): Path<String>,
) -> Result<StatusCode, ApiError> {
    s.store.delete(&task).await?;
    tracing::info!(task = %task, "task deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /monitor/export?filters`: tasks IN PROCESS stay.
pub(super) async fn delete_matching(
    State(s): State<ApiState>,
    q: Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    let p = Params::new(q);
    p.only(FILTERS)?;
    // Tasks IN PROCESS are kept, and counted as failed like the other bulk
    // forms count what they could not change.
    let (count, failed) = s.store.delete_matching(task_filter(&p, false)?).await?;
    tracing::info!(count, failed, "tasks deleted");
    Ok(bulk_answer(count, failed))
}

/// `StudyDate`: `YYYYMMDD`, or a range `from-to`, `from-`, `-to`.
fn study_dates(v: &str) -> Result<(Option<String>, Option<String>), ApiError> {
    let err = || {
        bad(format!(
            "StudyDate: {v:?} is not a date (YYYYMMDD) nor a range of dates (from-to, from-, -to)"
        ))
    };
    let date = |s: &str| -> Result<Option<String>, ApiError> {
        if s.is_empty() {
            return Ok(None);
        }
        NaiveDate::parse_from_str(s, "%Y%m%d")
            .ok()
            .filter(|_| s.len() == 8)
            .map(|_| Some(s.to_string()))
            .ok_or_else(err)
    };
    let (from, to) = match v.split_once('-') {
        Some((a, b)) => (date(a)?, date(b)?),
        None => {
            let d = date(v)?;
            (d.clone(), d)
        }
    };
    if from.is_none() && to.is_none() {
        return Err(err());
    }
    if let (Some(a), Some(b)) = (&from, &to)
        && a > b
    {
        return Err(bad(format!("StudyDate: {v:?} starts after it ends")));
    }
    Ok((from, to))
}

/// `POST /aets/{AET}/rs/studies/export/{ExporterID}`: one study export
/// task per indexed study matching the QIDO-style filters; `{"count":n}`.
pub(super) async fn export_matching(
    State(s): State<ApiState>,
    Path((aet, exporter_id)): Path<(String, String)>,
    q: Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    let p = Params::new(q);
    p.only(&[
        "PatientID",
        "StudyDate",
        "ModalitiesInStudy",
        "batchID",
        "scheduledTime",
    ])?;
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
    let (study_date_from, study_date_to) = match p.one("StudyDate")? {
        Some(v) => study_dates(v)?,
        None => (None, None),
    };
    let modalities: Vec<String> = p
        .all("ModalitiesInStudy")
        .iter()
        .flat_map(|v| v.split(['\\', ',']))
        .map(|m| m.trim().to_string())
        .filter(|m| !m.is_empty())
        .collect();
    if let Some(m) = modalities
        .iter()
        .find(|m| m.len() > 16 || !m.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
    {
        return Err(bad(format!(
            "ModalitiesInStudy: {m:?} is not a modality code"
        )));
    }
    let query = StudyQuery {
        patient_id: p.one("PatientID")?.map(str::to_string),
        study_date_from,
        study_date_to,
        modalities,
    };
    let batch_id = p.one("batchID")?.map(str::to_string);
    let scheduled_time = p.one("scheduledTime")?.map(parse_scheduled).transpose()?;
    let studies = s
        .archive
        .find_studies(query)
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let mut count = 0u64;
    for study in studies {
        let request = TaskRequest {
            exporter_id: exporter_id.clone(),
            study_iuid: study,
            series_iuid: None,
            sop_iuid: None,
            batch_id: batch_id.clone(),
            scheduled_time,
        };
        s.submit
            .publish(NewTask::for_exporter(
                request,
                s.device_name.clone(),
                exporter,
            ))
            .await?;
        count += 1;
    }
    tracing::info!(exporter = %exporter_id, count, "export tasks queued for matching studies");
    Ok((StatusCode::ACCEPTED, Json(json!({ "count": count }))).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        let r = parse_range("createdTime", "20261127-20261128").unwrap();
        assert_eq!(r.to.unwrap() - r.from.unwrap(), Duration::days(2));
        let r = parse_range("createdTime", "20261127100000-20261127100000").unwrap();
        assert_eq!(r.to.unwrap() - r.from.unwrap(), Duration::seconds(1));
        assert!(parse_range("x", "20261127-").unwrap().to.is_none());
        assert!(parse_range("x", "-20261127").unwrap().from.is_none());
        // A trailing Z: UTC, whatever the service's zone.
        let r = parse_range("x", "20261127100000Z-20261127Z").unwrap();
        assert_eq!(r.from.unwrap().to_rfc3339(), "2026-11-27T10:00:00+00:00");
        assert_eq!(r.to.unwrap().to_rfc3339(), "2026-11-28T00:00:00+00:00");
        for bad in [
            "",
            "-",
            "Z",
            "20261127ZZ",
            "2026112Z",
            "2026-11-27",
            "20261128-20261127",
            "2026112",
            "20261332",
        ] {
            assert!(parse_range("x", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn formulas_are_neutralised() {
        for s in ["=1+2", "+1", "-1", "@SUM(A1)", "\tx", "\rx"] {
            assert_eq!(csv_field(s, ',', true), format!("\"'{s}\""));
        }
        assert_eq!(
            csv_field("=HYPERLINK(\"x\")", ';', true),
            "\"'=HYPERLINK(\"\"x\"\")\""
        );
        assert_eq!(csv_field("a,b", ',', true), "\"a,b\"");
        assert_eq!(csv_field("a;b", ',', true), "a;b");
        assert_eq!(csv_field("plain", ',', true), "plain");
        // Not text: a number is left alone.
        assert_eq!(csv_field("-1", ',', false), "-1");
    }

    #[test]
    fn accept() {
        assert_eq!(representation(None), Some(None));
        assert_eq!(representation(Some("text/csv")), Some(Some(',')));
        assert_eq!(
            representation(Some("text/csv;delimiter=semicolon")),
            Some(Some(';'))
        );
        assert_eq!(representation(Some("application/json")), Some(None));
        assert_eq!(representation(Some("image/png")), None);
    }
}
