//! `stow-exporter tasks`: list, show, cancel, reschedule and delete export
//! tasks of a running service, over its control API (the monitor API of
//! [`crate::api`], dcm4chee's paths and parameter names).
//!
//! Talking HTTP rather than opening the queue database means the command
//! works the same for the embedded queue and AMQP, from another machine,
//! and goes through the same checks (token, IN PROCESS conflicts) as any
//! other client.
//!
//! Owns the client's requests, its output and exit codes; it must not open
//! the task store directly.

use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Local, NaiveDateTime, Utc};
use clap::{Args, Subcommand};
use reqwest::{Method, StatusCode, Url};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::config::Secret;
use crate::task::{ExportTask, Status};
use crate::token::{TOKEN_ENV, TokenError, load_token};

/// The environment variable that may hold `--url`.
pub const URL_ENV: &str = "STOW_EXPORTER_URL";
/// `serve --listen`'s default address.
pub const DEFAULT_URL: &str = "http://127.0.0.1:8080";
/// The control API's path prefix.
const API_PREFIX: &str = "dcm4chee-arc";
/// Study UIDs longer than this are shortened in the table (the end is kept:
/// the start is usually an organisation's root shared by every study).
const STUDY_WIDTH: usize = 28;

/// Errors of the `tasks` commands.
#[derive(Debug, thiserror::Error)]
pub enum TasksError {
    #[error("--url {url:?}: {reason}")]
    BadUrl { url: String, reason: String },
    /// Reading or checking the API token failed (the message names the
    /// file or variable, never the token).
    #[error(transparent)]
    Token(TokenError),
    #[error("cannot read the API token: {0}")]
    TokenTask(tokio::task::JoinError),
    #[error(
        "cannot reach the control API at {url}: {cause} \
         (is `stow-exporter serve` running there? give its address with --url or {URL_ENV})"
    )]
    Unreachable { url: String, cause: String },
    /// The API answered an error: its status and `errorMessage`.
    #[error("{status}: {message}{}", hint(*.status, *.token_sent))]
    Api {
        status: StatusCode,
        message: String,
        token_sent: bool,
    },
    #[error("unexpected answer from {url}: {reason}")]
    BadAnswer { url: String, reason: String },
    /// A bulk operation changed some matching tasks but not all.
    #[error(
        "{failed} of the matching tasks could not be {verb} (ended, IN PROCESS or deleted meanwhile)"
    )]
    Partial { failed: u64, verb: &'static str },
    #[error("{0}")]
    Usage(String),
    #[error("cannot write the output: {0}")]
    Output(#[from] std::io::Error),
}

/// What to try after an error status.
fn hint(status: StatusCode, token_sent: bool) -> String {
    match (status, token_sent) {
        (StatusCode::UNAUTHORIZED, false) => format!(
            " (the service requires its API token: give --api-token-file FILE or set {TOKEN_ENV})"
        ),
        (StatusCode::UNAUTHORIZED, true) => format!(
            " (the token from --api-token-file or {TOKEN_ENV} was refused: is it the service's?)"
        ),
        _ => String::new(),
    }
}

/// `stow-exporter tasks`: the options every subcommand shares.
#[derive(Debug, Args)]
pub struct TasksArgs {
    /// Address of the service's control API (`serve --listen`); the
    /// /dcm4chee-arc path may be given or left out.
    #[arg(long, global = true, env = URL_ENV, default_value = DEFAULT_URL, value_name = "URL")]
    pub url: String,
    /// File holding the control API's bearer token (default: the environment
    /// variable STOW_EXPORTER_API_TOKEN, as for `serve`).
    #[arg(long, global = true, value_name = "FILE")]
    pub api_token_file: Option<PathBuf>,
    /// Print the API's JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: TasksCommand,
}

/// Filters of the monitor API, by their dcm4chee parameter names.
#[derive(Debug, Clone, Default, Args)]
pub struct Filters {
    /// Only tasks with this status: SCHEDULED, "SCHEDULED FOR RETRY" (or
    /// SCHEDULED_FOR_RETRY), IN_PROCESS, COMPLETED, WARNING, FAILED, CANCELED.
    #[arg(long)]
    pub status: Option<Status>,
    /// Only tasks of this exporter (ExporterID; repeatable: any of them).
    #[arg(long, value_name = "ID")]
    pub exporter: Vec<String>,
    /// Only tasks of this study (StudyInstanceUID).
    #[arg(long, value_name = "UID")]
    pub study: Option<String>,
    /// Only tasks of this batch (batchID).
    #[arg(long, value_name = "ID")]
    pub batch: Option<String>,
}

impl Filters {
    fn is_empty(&self) -> bool {
        self.status.is_none()
            && self.exporter.is_empty()
            && self.study.is_none()
            && self.batch.is_none()
    }

    fn query(&self) -> Vec<(&'static str, String)> {
        let mut q = Vec::new();
        if let Some(s) = self.status {
            q.push(("status", s.as_str().to_string()));
        }
        for e in &self.exporter {
            q.push(("ExporterID", e.clone()));
        }
        if let Some(s) = &self.study {
            q.push(("StudyInstanceUID", s.clone()));
        }
        if let Some(b) = &self.batch {
            q.push(("batchID", b.clone()));
        }
        q
    }
}

#[derive(Debug, Subcommand)]
pub enum TasksCommand {
    /// List export tasks, most recently updated first.
    ///
    /// Columns C/W/F/M: instances completed, with warnings, failed and
    /// missing; TOTAL: instances the last run matched.
    List {
        #[command(flatten)]
        filters: Filters,
        /// At most this many tasks.
        #[arg(long)]
        limit: Option<u64>,
        /// Skip this many tasks first.
        #[arg(long)]
        offset: Option<u64>,
        /// Order: createdTime, updatedTime or scheduledTime, with a leading
        /// '-' for descending (default -updatedTime).
        #[arg(long, value_name = "[-]FIELD", allow_hyphen_values = true)]
        orderby: Option<String>,
    },
    /// Show one task and the result of each of its instances.
    ///
    /// With --json: {"task": ..., "instances": [...]}, both as the API
    /// answers them.
    Show {
        /// The taskID.
        id: String,
    },
    /// Cancel a task, or every task matching the filters.
    ///
    /// Without a task ID --status is required: SCHEDULED,
    /// SCHEDULED_FOR_RETRY or IN_PROCESS. A task IN PROCESS stops before
    /// its next instance.
    Cancel {
        /// The taskID; without it, the filters select the tasks.
        id: Option<String>,
        #[command(flatten)]
        filters: Filters,
    },
    /// Run a task again, or every task matching the filters.
    ///
    /// The task goes back to SCHEDULED with its counts and per-instance
    /// results cleared: the whole entity is sent again.
    Reschedule {
        /// The taskID; without it, the filters select the tasks.
        id: Option<String>,
        #[command(flatten)]
        filters: Filters,
        /// Run it with this exporter instead. With a task ID, --exporter
        /// means the same (there is nothing to filter).
        #[arg(long, value_name = "ID")]
        to_exporter: Option<String>,
        /// When it is due, local time of the service (default: now).
        #[arg(long, value_name = "yyyyMMddHHmmss", value_parser = parse_time)]
        scheduled_time: Option<String>,
        /// Without a task ID or filters: reschedule every task.
        #[arg(long)]
        all: bool,
    },
    /// Delete a task record, or every record matching the filters.
    ///
    /// Its per-instance results go too. Tasks IN PROCESS stay: cancel them
    /// first.
    Delete {
        /// The taskID; without it, the filters select the tasks.
        id: Option<String>,
        #[command(flatten)]
        filters: Filters,
        /// Without a task ID or filters: delete every task record.
        #[arg(long)]
        all: bool,
    },
}

/// `--scheduled-time`: checked here so a typo fails before any request.
fn parse_time(s: &str) -> Result<String, BadTime> {
    NaiveDateTime::parse_from_str(s, "%Y%m%d%H%M%S")
        .map(|_| s.to_string())
        .map_err(|_| BadTime(s.to_string()))
}

/// A `--scheduled-time` that is not a date and time.
#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not yyyyMMddHHmmss")]
pub struct BadTime(String);

/// A client of the control API.
pub struct Client {
    http: reqwest::Client,
    /// `.../dcm4chee-arc`, without a trailing slash.
    base: Url,
    token: Option<Secret>,
}

impl Client {
    /// `url`: the service's address, with or without the `/dcm4chee-arc`
    /// path.
    pub fn new(url: &str, token: Option<Secret>) -> Result<Client, TasksError> {
        let bad = |reason: &str| TasksError::BadUrl {
            url: url.to_string(),
            reason: reason.to_string(),
        };
        let mut base = Url::parse(url).map_err(|e| bad(&e.to_string()))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(bad("expected an http:// or https:// URL"));
        }
        if base.query().is_some() || base.fragment().is_some() {
            return Err(bad("expected no query or fragment"));
        }
        {
            let mut segs = base
                .path_segments_mut()
                .map_err(|_| bad("not a base URL"))?;
            segs.pop_if_empty();
        }
        if base.path_segments().and_then(|mut s| s.next_back()) != Some(API_PREFIX) {
            base.path_segments_mut()
                .map_err(|_| bad("not a base URL"))?
                .push(API_PREFIX);
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(120))
            .build()
            .map_err(|e| bad(&e.to_string()))?;
        Ok(Client { http, base, token })
    }

    /// The base URL for messages: no user or password, if any were given.
    fn shown_base(&self) -> String {
        let mut u = self.base.clone();
        let _ = u.set_username("");
        let _ = u.set_password(None);
        u.to_string()
    }

    /// `base/seg/seg?query`, each segment and value percent-encoded.
    fn url(&self, segments: &[&str], query: &[(&str, String)]) -> Url {
        let mut u = self.base.clone();
        if let Ok(mut s) = u.path_segments_mut() {
            s.extend(segments);
        }
        if !query.is_empty() {
            let mut q = u.query_pairs_mut();
            for (k, v) in query {
                q.append_pair(k, v);
            }
        }
        u
    }

    /// Sends a request; returns status and body of any answer (error
    /// statuses included, for the callers that read them).
    async fn send(&self, method: Method, url: Url) -> Result<(StatusCode, Vec<u8>), TasksError> {
        let mut req = self.http.request(method, url);
        if let Some(t) = &self.token {
            // bearer_auth marks the header sensitive (kept out of debug output).
            req = req.bearer_auth(t.expose());
        }
        let r = req.send().await.map_err(|e| self.unreachable(&e))?;
        let status = r.status();
        let body = r.bytes().await.map_err(|e| self.unreachable(&e))?;
        Ok((status, body.to_vec()))
    }

    fn unreachable(&self, e: &reqwest::Error) -> TasksError {
        // reqwest's own message only repeats the URL; the causes below it
        // say what happened (refused, timed out, DNS, TLS).
        let mut causes = Vec::new();
        let mut src = std::error::Error::source(e);
        while let Some(s) = src {
            let m = s.to_string();
            if !causes.iter().any(|c: &String| c.contains(&m)) {
                causes.push(m);
            }
            src = s.source();
        }
        // The deepest message not already part of one above it, e.g. "tcp
        // connect error: Connection refused (os error 111)".
        let cause = causes.pop().unwrap_or_else(|| e.to_string());
        TasksError::Unreachable {
            url: self.shown_base(),
            cause,
        }
    }

    /// The API's error for a non-success answer.
    fn api_error(&self, status: StatusCode, body: &[u8]) -> TasksError {
        let message = serde_json::from_slice::<Value>(body)
            .ok()
            .and_then(|v| v["errorMessage"].as_str().map(str::to_string))
            .unwrap_or_else(|| {
                // Not the API's JSON (a proxy's page?): its start, or the reason.
                let text = String::from_utf8_lossy(body);
                let text = text.trim();
                if text.is_empty() {
                    status.canonical_reason().unwrap_or("error").to_string()
                } else {
                    text.chars().take(200).collect()
                }
            });
        TasksError::Api {
            status,
            message,
            token_sent: self.token.is_some(),
        }
    }

    /// A request whose success is any 2xx; returns the body.
    async fn call(&self, method: Method, url: Url) -> Result<Vec<u8>, TasksError> {
        let (status, body) = self.send(method, url).await?;
        if status.is_success() {
            Ok(body)
        } else {
            Err(self.api_error(status, &body))
        }
    }

    fn parse<T: for<'de> Deserialize<'de>>(&self, url: &Url, body: &[u8]) -> Result<T, TasksError> {
        serde_json::from_slice(body).map_err(|e| TasksError::BadAnswer {
            url: url.to_string(),
            reason: e.to_string(),
        })
    }

    /// `GET /monitor/export?query`: the raw JSON and the tasks.
    pub async fn list(
        &self,
        query: &[(&str, String)],
    ) -> Result<(Vec<u8>, Vec<ExportTask>), TasksError> {
        let url = self.url(&["monitor", "export"], query);
        let body = self.call(Method::GET, url.clone()).await?;
        let tasks = self.parse(&url, &body)?;
        Ok((body, tasks))
    }

    /// `GET /monitor/export/{id}`: the raw JSON and the task.
    pub async fn task(&self, id: &str) -> Result<(Value, ExportTask), TasksError> {
        let url = self.url(&["monitor", "export", id], &[]);
        let body = self.call(Method::GET, url.clone()).await?;
        let raw: Value = self.parse(&url, &body)?;
        let task = self.parse(&url, &body)?;
        Ok((raw, task))
    }

    /// `GET /monitor/export/{id}/instances`.
    pub async fn instances(&self, id: &str) -> Result<Value, TasksError> {
        let url = self.url(&["monitor", "export", id, "instances"], &[]);
        let body = self.call(Method::GET, url.clone()).await?;
        self.parse(&url, &body)
    }

    /// A bulk operation: dcm4chee answers 200 `{"count"}`, 202
    /// `{"count","failed"}` when some failed, 409 `{"failed"}` when all did.
    async fn bulk(
        &self,
        method: Method,
        url: Url,
        verb: &'static str,
    ) -> Result<BulkAnswer, TasksError> {
        let (status, body) = self.send(method, url.clone()).await?;
        let answer: Option<BulkAnswer> = serde_json::from_slice(&body).ok();
        match (status, answer) {
            (s, Some(a)) if s.is_success() => Ok(BulkAnswer { raw: body, ..a }),
            (StatusCode::CONFLICT, Some(a)) if a.failed > 0 => Err(TasksError::Api {
                status,
                message: format!("none of the {} matching tasks could be {verb}", a.failed),
                token_sent: self.token.is_some(),
            }),
            (s, _) if s.is_success() => Err(TasksError::BadAnswer {
                url: url.to_string(),
                reason: "expected {\"count\": n}".into(),
            }),
            (s, _) => Err(self.api_error(s, &body)),
        }
    }
}

/// The answer of a bulk operation.
#[derive(Debug, Default, Deserialize)]
struct BulkAnswer {
    #[serde(default)]
    count: u64,
    #[serde(default)]
    failed: u64,
    #[serde(skip)]
    raw: Vec<u8>,
}

/// One instance of `GET /monitor/export/{id}/instances`.
#[derive(Debug, Deserialize)]
struct InstanceRow {
    #[serde(rename = "SOPInstanceUID")]
    sop_iuid: String,
    status: String,
    #[serde(default)]
    reason: Option<String>,
}

const CANCEL_MISSING: &str =
    "give a task ID, or --status (SCHEDULED, SCHEDULED_FOR_RETRY or IN_PROCESS) and other filters";
const ALL_MISSING: &str = "give a task ID, filters, or --all for every task";

/// Runs a `tasks` subcommand; what it prints goes to stdout.
pub async fn run(args: TasksArgs) -> Result<(), TasksError> {
    let file = args.api_token_file.clone();
    // The token file is read off the async runtime.
    let token = tokio::task::spawn_blocking(move || load_token(file.as_deref()))
        .await
        .map_err(TasksError::TokenTask)?
        .map_err(TasksError::Token)?;
    let client = Client::new(&args.url, token)?;
    let json = args.json;
    match args.command {
        TasksCommand::List {
            filters,
            limit,
            offset,
            orderby,
        } => {
            let mut q = filters.query();
            if let Some(n) = limit {
                q.push(("limit", n.to_string()));
            }
            if let Some(n) = offset {
                q.push(("offset", n.to_string()));
            }
            if let Some(o) = orderby {
                q.push(("orderby", o));
            }
            let (raw, tasks) = client.list(&q).await?;
            if json {
                // The API's array as it came, for scripts.
                let mut raw = raw;
                raw.push(b'\n');
                emit_bytes(&raw)
            } else {
                emit(&task_table(&tasks))
            }
        }
        TasksCommand::Show { id } => {
            let (raw, task) = client.task(&id).await?;
            let instances = client.instances(&id).await?;
            if json {
                emit_json(&json!({ "task": raw, "instances": instances }))
            } else {
                let rows: Vec<InstanceRow> =
                    serde_json::from_value(instances).map_err(|e| TasksError::BadAnswer {
                        url: client
                            .url(&["monitor", "export", &id, "instances"], &[])
                            .to_string(),
                        reason: e.to_string(),
                    })?;
                emit(&show_text(&task, &rows))
            }
        }
        TasksCommand::Cancel { id, filters } => {
            match one_or_filters(id, &filters, false, CANCEL_MISSING)? {
                Some(id) => {
                    let url = client.url(&["monitor", "export", &id, "cancel"], &[]);
                    client.call(Method::POST, url).await?;
                    let (raw, task) = client.task(&id).await?;
                    if json {
                        emit_json(&raw)
                    } else if task.status == Status::InProcess {
                        emit(&format!(
                            "task {id}: IN PROCESS, canceled: it stops before its next instance\n"
                        ))
                    } else {
                        emit(&format!("task {id}: {}\n", task.status))
                    }
                }
                None => {
                    let url = client.url(&["monitor", "export", "cancel"], &filters.query());
                    let a = client.bulk(Method::POST, url, "canceled").await?;
                    report_bulk(json, &a, "canceled")
                }
            }
        }
        TasksCommand::Reschedule {
            id,
            mut filters,
            to_exporter,
            scheduled_time,
            all,
        } => {
            let mut to = to_exporter;
            // With a task ID, --exporter can only mean where it goes
            // (dcm4chee's .../{taskID}/reschedule/{ExporterID}).
            if id.is_some() && to.is_none() && filters.exporter.len() == 1 {
                to = filters.exporter.pop();
            }
            let mut q = Vec::new();
            if let Some(t) = scheduled_time {
                q.push(("scheduledTime", t));
            }
            match one_or_filters(id, &filters, all, ALL_MISSING)? {
                Some(id) => {
                    let mut segs = vec!["monitor", "export", id.as_str(), "reschedule"];
                    segs.extend(to.as_deref());
                    client.call(Method::POST, client.url(&segs, &q)).await?;
                    let (raw, task) = client.task(&id).await?;
                    if json {
                        emit_json(&raw)
                    } else {
                        emit(&format!(
                            "task {id}: {} (exporter {}, due {})\n",
                            task.status,
                            task.exporter_id,
                            local(&task.scheduled_time)
                        ))
                    }
                }
                None => {
                    let mut segs = vec!["monitor", "export", "reschedule"];
                    segs.extend(to.as_deref());
                    let mut query = filters.query();
                    query.extend(q);
                    let url = client.url(&segs, &query);
                    let a = client.bulk(Method::POST, url, "rescheduled").await?;
                    report_bulk(json, &a, "rescheduled")
                }
            }
        }
        TasksCommand::Delete { id, filters, all } => {
            match one_or_filters(id, &filters, all, ALL_MISSING)? {
                Some(id) => {
                    let url = client.url(&["monitor", "export", &id], &[]);
                    client.call(Method::DELETE, url).await?;
                    if json {
                        emit_json(&json!({ "count": 1 }))
                    } else {
                        emit(&format!("task {id}: deleted\n"))
                    }
                }
                None => {
                    let url = client.url(&["monitor", "export"], &filters.query());
                    let a = client.bulk(Method::DELETE, url, "deleted").await?;
                    report_bulk(json, &a, "deleted")
                }
            }
        }
    }
}

/// A task ID, or `None` for the bulk form. A bulk form without any filter
/// would touch every task, so it needs `--all` (`missing` says what to
/// give instead; cancel has no `--all`, it needs --status).
fn one_or_filters(
    id: Option<String>,
    filters: &Filters,
    all: bool,
    missing: &str,
) -> Result<Option<String>, TasksError> {
    match (id, filters.is_empty(), all) {
        (Some(_), false, _) => Err(TasksError::Usage(
            "give a task ID or filters (--status, --exporter, --study, --batch), not both".into(),
        )),
        (Some(_), true, true) => Err(TasksError::Usage(
            "--all selects every task: give it without a task ID".into(),
        )),
        (Some(id), true, false) => Ok(Some(id)),
        (None, true, false) => Err(TasksError::Usage(format!(
            "no task ID and no filters: {missing}"
        ))),
        (None, _, _) => Ok(None),
    }
}

/// The outcome of a bulk operation; partial failure is an error (exit 1).
fn report_bulk(json: bool, a: &BulkAnswer, verb: &'static str) -> Result<(), TasksError> {
    if json {
        let mut raw = a.raw.clone();
        raw.push(b'\n');
        emit_bytes(&raw)?;
    } else {
        let noun = if a.count == 1 { "task" } else { "tasks" };
        emit(&format!("{verb} {} {noun}\n", a.count))?;
    }
    if a.failed > 0 {
        return Err(TasksError::Partial {
            failed: a.failed,
            verb,
        });
    }
    Ok(())
}

fn emit(s: &str) -> Result<(), TasksError> {
    emit_bytes(s.as_bytes())
}

fn emit_json(v: &Value) -> Result<(), TasksError> {
    let mut s = serde_json::to_string_pretty(v).unwrap_or_default();
    s.push('\n');
    emit(&s)
}

/// Writes to stdout; a closed pipe (`| head`) is not an error.
fn emit_bytes(b: &[u8]) -> Result<(), TasksError> {
    let mut out = std::io::stdout().lock();
    match out.write_all(b).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => Ok(r?),
    }
}

fn local(t: &DateTime<Utc>) -> String {
    t.with_timezone(&Local)
        .format("%Y-%m-%d %H:%M:%S")
        .to_string()
}

/// The end of a long UID, marked as shortened.
fn short_uid(uid: &str) -> String {
    let n = uid.chars().count();
    if n <= STUDY_WIDTH {
        uid.to_string()
    } else {
        // One ellipsis character: "..." would run into the UID's dots.
        let tail: String = uid.chars().skip(n - (STUDY_WIDTH - 1)).collect();
        format!("\u{2026}{tail}")
    }
}

/// The message worth showing: the error if any, else the outcome.
fn message(t: &ExportTask) -> &str {
    t.error_message
        .as_deref()
        .or(t.outcome_message.as_deref())
        .unwrap_or("-")
}

/// The task listing as an aligned table.
pub fn task_table(tasks: &[ExportTask]) -> String {
    if tasks.is_empty() {
        return "no tasks match\n".to_string();
    }
    let header = [
        "ID", "STATUS", "EXPORTER", "STUDY", "C/W/F/M", "TOTAL", "UPDATED", "MESSAGE",
    ];
    let rows: Vec<Vec<String>> = tasks
        .iter()
        .map(|t| {
            vec![
                t.task_id.clone(),
                t.status.to_string(),
                t.exporter_id.clone(),
                short_uid(&t.study_iuid),
                format!("{}/{}/{}/{}", t.completed, t.warning, t.failed, t.missing),
                t.number_of_instances
                    .map_or_else(|| "-".to_string(), |n| n.to_string()),
                local(&t.updated_time),
                message(t).to_string(),
            ]
        })
        .collect();
    table(&header, &rows, &[true, false, false, false, true, true])
}

/// Columns padded to their widest cell; `right[i]` right-aligns column i
/// (numbers). The last column is not padded, so lines end without blanks.
fn table(header: &[&str], rows: &[Vec<String>], right: &[bool]) -> String {
    let width = |i: usize| {
        rows.iter()
            .map(|r| r[i].chars().count())
            .chain([header[i].len()])
            .max()
            .unwrap_or(0)
    };
    let widths: Vec<usize> = (0..header.len()).map(width).collect();
    let line = |cells: Vec<&str>| {
        let last = cells.len() - 1;
        let mut s = String::new();
        for (i, c) in cells.into_iter().enumerate() {
            if i == last {
                s.push_str(c);
            } else if right.get(i).copied().unwrap_or(false) {
                s.push_str(&format!("{c:>w$}  ", w = widths[i]));
            } else {
                s.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        s.truncate(s.trim_end().len());
        s.push('\n');
        s
    };
    let mut out = line(header.to_vec());
    for r in rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}

/// `tasks show`: the record, then one line per instance.
fn show_text(t: &ExportTask, instances: &[InstanceRow]) -> String {
    let mut fields: Vec<(&str, String)> = vec![
        ("Status", t.status.to_string()),
        ("Exporter", t.exporter_id.clone()),
        ("Queue", t.queue.clone()),
        ("Entity", t.entity()),
    ];
    if let Some(b) = &t.batch_id {
        fields.push(("Batch", b.clone()));
    }
    fields.push(("Created", local(&t.created_time)));
    fields.push(("Scheduled", local(&t.scheduled_time)));
    if let Some(s) = &t.processing_start_time {
        fields.push(("Started", local(s)));
    }
    if let Some(e) = &t.processing_end_time {
        fields.push(("Ended", local(e)));
    }
    fields.push(("Updated", local(&t.updated_time)));
    fields.push(("Failures", t.failures.to_string()));
    fields.push((
        "Instances",
        format!(
            "{} completed, {} warning, {} failed, {} missing of {}",
            t.completed,
            t.warning,
            t.failed,
            t.missing,
            t.number_of_instances
                .map_or_else(|| "-".to_string(), |n| n.to_string())
        ),
    ));
    if let Some(m) = &t.outcome_message {
        fields.push(("Outcome", m.clone()));
    }
    if let Some(m) = &t.error_message {
        fields.push(("Error", m.clone()));
    }
    let mut out = format!("Task {}\n", t.task_id);
    for (k, v) in fields {
        out.push_str(&format!("  {:<10} {v}\n", format!("{k}:")));
    }
    out.push('\n');
    if instances.is_empty() {
        out.push_str("no instance results yet\n");
    } else {
        let rows: Vec<Vec<String>> = instances
            .iter()
            .map(|i| {
                vec![
                    i.sop_iuid.clone(),
                    i.status.clone(),
                    i.reason.clone().unwrap_or_default(),
                ]
            })
            .collect();
        out.push_str(&table(
            &["SOP INSTANCE UID", "STATUS", "REASON"],
            &rows,
            &[],
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_url_gets_the_api_prefix_once() {
        for given in [
            "http://127.0.0.1:8080",
            "http://127.0.0.1:8080/",
            "http://127.0.0.1:8080/dcm4chee-arc",
            "http://127.0.0.1:8080/dcm4chee-arc/",
        ] {
            let c = Client::new(given, None).unwrap();
            assert_eq!(
                c.url(
                    &["monitor", "export", "1 2"],
                    &[("status", "SCHEDULED FOR RETRY".into())]
                )
                .as_str(),
                "http://127.0.0.1:8080/dcm4chee-arc/monitor/export/1%202?status=SCHEDULED+FOR+RETRY",
                "{given}"
            );
        }
        assert!(Client::new("127.0.0.1:8080", None).is_err());
        assert!(Client::new("ftp://h/", None).is_err());
    }

    #[test]
    fn table_aligns_and_shortens() {
        let rows = vec![
            vec!["1".to_string(), "a".to_string(), "x".to_string()],
            vec!["12".to_string(), "bbb".to_string(), String::new()],
        ];
        assert_eq!(
            table(&["ID", "S", "M"], &rows, &[true]),
            "ID  S    M\n 1  a    x\n12  bbb\n"
        );
        let uid = "1.2.826.0.1.3680043.8.498.12345678901234567890";
        let s = short_uid(uid);
        assert_eq!(s.chars().count(), STUDY_WIDTH);
        assert!(uid.ends_with(s.strip_prefix('\u{2026}').unwrap()));
        assert_eq!(short_uid("1.2.3"), "1.2.3");
    }

    #[test]
    fn error_text_has_status_message_and_hint() {
        let e = TasksError::Api {
            status: StatusCode::CONFLICT,
            message: "Cannot cancel Task[id=12] with Status: COMPLETED".into(),
            token_sent: false,
        };
        assert_eq!(
            e.to_string(),
            "409 Conflict: Cannot cancel Task[id=12] with Status: COMPLETED"
        );
        let e = TasksError::Api {
            status: StatusCode::UNAUTHORIZED,
            message: "a valid bearer token is required".into(),
            token_sent: false,
        };
        assert!(e.to_string().contains("--api-token-file"), "{e}");
    }

    #[test]
    fn id_and_filters_exclude_each_other() {
        let f = Filters {
            status: Some(Status::Scheduled),
            ..Filters::default()
        };
        let none = Filters::default();
        assert!(one_or_filters(Some("1".into()), &f, false, "").is_err());
        assert!(one_or_filters(Some("1".into()), &none, true, "").is_err());
        assert_eq!(
            one_or_filters(Some("1".into()), &none, false, "").unwrap(),
            Some("1".into())
        );
        assert_eq!(one_or_filters(None, &f, false, "").unwrap(), None);
        let e = one_or_filters(None, &none, false, ALL_MISSING).unwrap_err();
        assert!(e.to_string().contains("--all"), "{e}");
        assert_eq!(one_or_filters(None, &none, true, "").unwrap(), None);
    }
}
