//! `stowrsd`: the built-in STOW-RS receiver (PS3.18 § 10.5), like
//! dcm4che's `stowrsd` test server, but it really parses what it receives
//! and says so truthfully.
//!
//! Everything below but the resources and the storing (`DirSink`) is
//! `post`, which STOW-RS into the archive (`crate::api::stow_in`) shares
//! through a `Sink` of its own: one request handling, two destinations.
//!
//! # Resources
//!
//! Any path ending in `/studies` or `/studies/{StudyInstanceUID}` (e.g.
//! `/stowrs/studies`, `/dcm4chee-arc/aets/DCM4CHEE/rs/studies`) accepts
//! `POST`; `OPTIONS` answers 204 with `Allow`; other methods 405; other
//! paths 404. The study UID in the path is logged but not checked against
//! the instances (that would need parsing the data set, not only the meta
//! information).
//!
//! # Request
//!
//! `Content-Type: multipart/related; type="application/dicom"; boundary=…`
//! (415 for another media type or `type`, 400 without boundary). The body
//! is streamed through an incremental multipart reader ([`multipart`]);
//! parts are never buffered whole. Each part must be `application/dicom`
//! (parameters ignored; a part without Content-Type is taken as the
//! declared root type, `application/dicom`) and a DICOM Part 10 file: its
//! file meta information is parsed from the first bytes ([`meta`]) for the
//! SOP Class/Instance UIDs, which must be valid UIDs since the instance
//! UID names the stored file.
//!
//! With a store directory, each part is streamed to `.<random>.part` there
//! and, once the part ended cleanly, fsynced and given the name
//! `<SOPInstanceUID>.dcm`, byte for byte as received; the directory is
//! fsynced before the reply (`store`). An instance already stored is
//! kept: the same bytes again count as stored (a sender retrying after a
//! lost reply gets its success), other bytes fail with 0x0111 (duplicate
//! SOP instance), unless `--overwrite` says to replace it. Without a store
//! directory (`--ignore`) the bytes are discarded after the meta
//! information is read.
//!
//! # Limits and access
//!
//! A request holds at most [`Limits::max_parts`] parts,
//! [`Limits::max_request_bytes`] bytes and [`Limits::max_part_bytes`] bytes
//! per part ([`limits`]); the first one crossed ends the request there: the
//! rest of the body is not read, and the connection is closed. A part is
//! not stored while the store's file system has less than
//! [`StowrsdOptions::min_free_disk`] bytes free ([`disk`]). With a token,
//! every request needs `Authorization: Bearer <token>`; off loopback a
//! token is required ([`access`]).
//!
//! # Response
//!
//! Content negotiation on `Accept` ([`response::negotiate`]): DICOM JSON
//! (`application/dicom+json`, or `application/json` if asked for) by
//! default, Native DICOM Model XML for `application/dicom+xml`, `text/xml`
//! or `application/xml`, else 406. The body holds ReferencedSOPSequence
//! (stored instances) and FailedSOPSequence (failed parts, with the UIDs
//! when known and a FailureReason from [`response::failure_reason`]);
//! empty sequences are omitted, RetrieveURL is never given.
//!
//! | outcome                                  | status |
//! |------------------------------------------|--------|
//! | all parts stored                         | 200    |
//! | some stored, some failed                 | 202    |
//! | at least one part, none stored           | 409    |
//! | close delimiter but no part              | 400 (text/plain) |
//! | framing error / truncated body, nothing stored | 400 (text/plain) |
//! | framing error / truncated body after some instances were stored | 400 with the DICOM body listing them (the interrupted part as failed, 0x0110) and a `Warning: 299` header with the reason |
//! | over a limit, nothing stored             | 413 (text/plain naming the limit and its option), `Connection: close` |
//! | over a limit after some instances were stored | 202 with the DICOM body listing them, the part that crossed the limit (or, when none did, one item without UIDs for the unread rest) failed with 0xA700, a `Warning: 299` header naming the limit, `Connection: close` |
//! | no or wrong bearer token (when one is set) | 401 |
//!
//! Failure reasons: 0xC000 (cannot understand) for a part that is not
//! `application/dicom`, not a Part 10 file, has broken meta information or
//! invalid UIDs; 0x0110 (processing failure) for I/O errors while storing
//! (and a part cut off by the end of the body); 0xA700 (out of resources)
//! when the disk is full, the free-disk reserve is reached or a limit cut
//! the part off; 0x0111 (duplicate SOP instance) for other bytes under the
//! name of an instance already stored.

pub mod access;
pub mod disk;
pub mod limits;
pub mod meta;
pub mod multipart;
pub mod response;
pub(crate) mod store;

#[cfg(test)]
mod tests;

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::header::{ACCEPT, ALLOW, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, WARNING};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use futures_util::Stream;

use self::disk::{DiskError, DiskGuard};
use self::limits::{BodyError, Bounded, LimitExceeded, Limits};
use self::meta::{FileMeta, Progress};
use self::multipart::{Event, MultipartError, MultipartReader, PartHeaders};
use self::response::{FailedSop, Format, ReferencedSop, StowResponse, failure_reason};
use self::store::{Committed, TempFile};
use crate::config::Secret;

/// Options of the receiver.
#[derive(Debug, Clone)]
pub struct StowrsdOptions {
    /// Where to store received instances as `<dir>/<SOPInstanceUID>.dcm`,
    /// byte for byte; None = discard (--ignore).
    pub store_dir: Option<PathBuf>,
    /// Bounds of one request.
    pub limits: Limits,
    /// Bytes that stay free on the store's file system; 0 checks nothing.
    pub min_free_disk: u64,
    /// Replace an instance already stored instead of keeping it.
    pub overwrite: bool,
    /// When set, every request needs `Authorization: Bearer <token>`.
    pub token: Option<Secret>,
}

impl Default for StowrsdOptions {
    fn default() -> Self {
        StowrsdOptions {
            store_dir: None,
            limits: Limits::default(),
            min_free_disk: disk::DEFAULT_MIN_FREE_DISK,
            overwrite: false,
            token: None,
        }
    }
}

/// Request-level errors, each mapped to an HTTP status with a plain-text
/// reason.
#[derive(Debug, thiserror::Error)]
pub enum StowrsdError {
    #[error("no STOW-RS resource at {0}")]
    NotFound(String),
    #[error("method {0} not allowed")]
    MethodNotAllowed(Method),
    #[error("unsupported media type: {0}")]
    UnsupportedMediaType(String),
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("none of the accepted media types can be produced: {0}")]
    NotAcceptable(String),
    #[error("invalid multipart body: {0}")]
    Multipart(#[from] MultipartError),
    #[error("reading the request body failed: {0}")]
    Body(String),
    #[error(transparent)]
    TooLarge(#[from] LimitExceeded),
}

impl StowrsdError {
    pub fn status(&self) -> StatusCode {
        match self {
            StowrsdError::NotFound(_) => StatusCode::NOT_FOUND,
            StowrsdError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            StowrsdError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            StowrsdError::NotAcceptable(_) => StatusCode::NOT_ACCEPTABLE,
            StowrsdError::BadRequest(_) | StowrsdError::Multipart(_) | StowrsdError::Body(_) => {
                StatusCode::BAD_REQUEST
            }
            StowrsdError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
        }
    }

    /// Whether the rest of the body was left unread: the connection cannot
    /// serve another request and is closed after the reply.
    fn closes(&self) -> bool {
        matches!(self, StowrsdError::TooLarge(_))
    }
}

impl IntoResponse for StowrsdError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut resp = (
            status,
            [(CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("{self}\n"),
        )
            .into_response();
        if status == StatusCode::METHOD_NOT_ALLOWED {
            resp.headers_mut()
                .insert(ALLOW, HeaderValue::from_static(ALLOWED));
        }
        if self.closes() {
            resp.headers_mut()
                .insert(CONNECTION, HeaderValue::from_static("close"));
        }
        resp
    }
}

const ALLOWED: &str = "POST, OPTIONS";

/// At most this much epilogue is read after the close delimiter (so the
/// connection can be kept alive).
const MAX_EPILOGUE: usize = 64 * 1024;

/// Where the parts of a request go once they ended cleanly. The request
/// handling around it ([`post`]: media types, limits, the multipart
/// stream, the free-disk reserve, the reply) is the same whichever the
/// sink: stowrsd's store directory ([`DirSink`]) or the archive
/// (`crate::api::stow_in`).
pub(crate) trait Sink: Sync {
    /// The warn-agent of the `Warning` header of a partial reply.
    const AGENT: &'static str;

    /// The directory each part is streamed to (and whose file system the
    /// free-disk reserve watches) before [`Sink::commit`]; `None`
    /// discards the bytes once the file meta information is read.
    fn dir(&self) -> Option<&Path>;

    /// Keeps a part that ended cleanly: `file` (in [`Sink::dir`]) holds
    /// its bytes as received and is removed if dropped, `meta` is its
    /// file meta information. The instance stored, or why not.
    fn commit(
        &self,
        file: TempFile,
        meta: FileMeta,
    ) -> impl Future<Output = Result<ReferencedSop, FailedSop>> + Send;
}

/// stowrsd's sink: `<dir>/<SOPInstanceUID>.dcm`, byte for byte.
#[derive(Debug)]
struct DirSink {
    dir: Option<Arc<Path>>,
    overwrite: bool,
}

impl Sink for DirSink {
    const AGENT: &'static str = "stowrsd";

    fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    async fn commit(&self, file: TempFile, meta: FileMeta) -> Result<ReferencedSop, FailedSop> {
        let Some(dir) = self.dir.as_deref() else {
            // Not reached: without a directory no file is written.
            file.abort().await;
            return Err(failed(&meta, failure_reason::PROCESSING_FAILURE));
        };
        let dest = dir.join(format!("{}.dcm", meta.sop_instance_uid));
        match file.commit(&dest, self.overwrite).await {
            Ok(Committed::Stored) => {}
            Ok(Committed::AlreadyIdentical) => {
                tracing::info!(sop_instance_uid = %meta.sop_instance_uid, "instance already stored with the same bytes: kept");
            }
            Ok(Committed::AlreadyDifferent) => {
                tracing::warn!(
                    sop_instance_uid = %meta.sop_instance_uid,
                    "instance already stored with other bytes: kept, the received one dropped (--overwrite replaces it)"
                );
                return Err(failed(&meta, failure_reason::DUPLICATE_SOP_INSTANCE));
            }
            Err(e) => return Err(io_failure(&meta, &e)),
        }
        Ok(ReferencedSop {
            sop_class_uid: meta.sop_class_uid,
            sop_instance_uid: meta.sop_instance_uid,
        })
    }
}

/// A sink with the bounds of the requests it takes.
#[derive(Debug)]
pub(crate) struct Intake<K> {
    pub(crate) sink: K,
    pub(crate) limits: Limits,
    /// Bytes that stay free on the file system of [`Sink::dir`]; 0 checks
    /// nothing.
    pub(crate) min_free_disk: u64,
}

type Shared = Intake<DirSink>;

/// The receiver as an axum Router (a fallback handler, so that any path
/// prefix works), behind the token check when there is a token.
pub fn router(opts: StowrsdOptions) -> Router {
    let token = opts.token.map(Arc::new);
    let router = Router::new().fallback(handle).with_state(Arc::new(Intake {
        sink: DirSink {
            dir: opts.store_dir.map(Arc::from),
            overwrite: opts.overwrite,
        },
        limits: opts.limits,
        min_free_disk: opts.min_free_disk,
    }));
    match token {
        None => router,
        Some(t) => router.layer(axum::middleware::from_fn_with_state(
            Some(t),
            crate::token::require_token,
        )),
    }
}

/// Removes what a crash left in the store directory (temporary files
/// unwritten for `store::STALE_PART_AGE`) once now, before the receiver
/// listens, and then every hour in a task that ends with the runtime. A
/// failure to sweep is logged, never fatal: the files only take space.
pub async fn sweep_store(dir: &Path) {
    async fn once(dir: &Path) {
        match store::remove_stale_parts(dir, store::STALE_PART_AGE).await {
            Ok(0) => {}
            Ok(n) => {
                tracing::info!(dir = %dir.display(), removed = n, "removed temporary files left by an interrupted run")
            }
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot sweep temporary files")
            }
        }
    }
    once(dir).await;
    let dir = dir.to_owned();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(std::time::Duration::from_secs(3600));
        every.tick().await;
        loop {
            every.tick().await;
            once(&dir).await;
        }
    });
}

/// Serves until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    opts: StowrsdOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    // The shared accept loop with its default limits (header and idle
    // timeouts, connection limit); `serve` and `stowrsd` call
    // `http_server::serve` with `router` themselves to apply their options.
    let limits = crate::http_server::ListenerLimits::default();
    crate::http_server::serve(listener, router(opts), &limits, shutdown).await
}

async fn handle(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let path = req.uri().path().to_owned();
    let Some(study) = studies_path(&path) else {
        return StowrsdError::NotFound(path).into_response();
    };
    let study = study.map(str::to_owned);
    match *req.method() {
        Method::POST => {}
        Method::OPTIONS => {
            return (StatusCode::NO_CONTENT, [(ALLOW, ALLOWED)]).into_response();
        }
        ref other => return StowrsdError::MethodNotAllowed(other.clone()).into_response(),
    }
    post(&shared, req, study.as_deref()).await
}

/// One Store Transaction (a `POST` already routed): checks the media
/// types, streams the parts into `intake`'s sink within its limits, and
/// answers with the Store Instances Response Module (see the module
/// documentation). `study`, from the path, is only logged here: a sink
/// that checks it knows it itself.
pub(crate) async fn post<K: Sink>(
    intake: &Intake<K>,
    req: Request,
    study: Option<&str>,
) -> Response {
    let started = Instant::now();
    let path = req.uri().path().to_owned();
    let (boundary, format) = match check_request(req.headers()) {
        Ok(v) => v,
        Err(e) => {
            tracing::info!(path, status = e.status().as_u16(), error = %e, "STOW-RS request rejected");
            return e.into_response();
        }
    };
    let max = intake.limits.max_request_bytes;
    if let Some(declared) = content_length(req.headers())
        && declared > max
    {
        // Refused before a byte is read (a client that sent
        // `Expect: 100-continue` does not even send the body).
        let e = StowrsdError::from(LimitExceeded::DeclaredRequestBytes { declared, max });
        tracing::warn!(path, status = e.status().as_u16(), error = %e, "STOW-RS request refused");
        return e.into_response();
    }
    let body = Bounded::new(req.into_body().into_data_stream(), max);
    let mut reader = match MultipartReader::new(body, &boundary) {
        Ok(r) => r,
        Err(e) => return StowrsdError::from(e).into_response(),
    };
    let received = receive(intake, &mut reader).await;
    if received.error.is_none() {
        reader.drain(MAX_EPILOGUE).await;
    }
    let resp = respond(&received, format, K::AGENT);
    let error = received.error.as_ref().map(|e| e.to_string());
    macro_rules! log {
        ($level:ident) => {
            tracing::$level!(
                path,
                study = study.unwrap_or(""),
                parts = received.parts,
                stored = received.response.referenced.len(),
                failed = received.response.failed.len(),
                bytes = received.bytes,
                status = resp.status().as_u16(),
                error,
                elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
                "STOW-RS request"
            )
        };
    }
    // A limit is hit by a misconfigured or hostile sender: worth a warning.
    if received.error.as_ref().is_some_and(StowrsdError::closes) {
        log!(warn);
    } else {
        log!(info);
    }
    resp
}

/// The declared body length, when there is a valid one.
fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// `Some(study UID or None)` when `path` ends in `/studies` or
/// `/studies/{uid}` (one trailing slash tolerated).
fn studies_path(path: &str) -> Option<Option<&str>> {
    let path = path.strip_suffix('/').unwrap_or(path);
    let (head, last) = path.rsplit_once('/')?;
    if last == "studies" {
        return Some(None);
    }
    let (_, prev) = head.rsplit_once('/')?;
    (prev == "studies" && !last.is_empty()).then_some(Some(last))
}

/// Validates Content-Type and Accept: the boundary and response format.
fn check_request(headers: &HeaderMap) -> Result<(String, Format), StowrsdError> {
    let ct = headers
        .get(CONTENT_TYPE)
        .ok_or_else(|| StowrsdError::UnsupportedMediaType("no Content-Type".into()))?
        .to_str()
        .map_err(|_| StowrsdError::UnsupportedMediaType("unreadable Content-Type".into()))?;
    let (media, params) =
        parse_media_type(ct).ok_or_else(|| StowrsdError::UnsupportedMediaType(ct.to_owned()))?;
    if media != "multipart/related" {
        return Err(StowrsdError::UnsupportedMediaType(format!(
            "{media} (expected multipart/related; type=\"application/dicom\")"
        )));
    }
    match param(&params, "type") {
        Some(t) if t.trim().eq_ignore_ascii_case("application/dicom") => {}
        Some(t) => {
            return Err(StowrsdError::UnsupportedMediaType(format!(
                "multipart/related with type={t} (only application/dicom is supported)"
            )));
        }
        None => {
            return Err(StowrsdError::UnsupportedMediaType(
                "multipart/related without type=\"application/dicom\"".into(),
            ));
        }
    }
    let boundary = param(&params, "boundary")
        .filter(|b| !b.is_empty())
        .ok_or_else(|| StowrsdError::BadRequest("multipart/related without boundary".into()))?
        .to_owned();
    let mut accept = String::new();
    for v in headers.get_all(ACCEPT) {
        let v = v
            .to_str()
            .map_err(|_| StowrsdError::NotAcceptable("unreadable Accept".into()))?;
        if !accept.is_empty() {
            accept.push(',');
        }
        accept.push_str(v);
    }
    let format = response::negotiate((!accept.is_empty()).then_some(accept.as_str()))
        .ok_or(StowrsdError::NotAcceptable(accept))?;
    Ok((boundary, format))
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Splits `s` at `sep` outside double-quoted strings.
pub(crate) fn split_unquoted(s: &str, sep: u8) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, b) in s.bytes().enumerate() {
        if escaped {
            escaped = false;
        } else if quoted && b == b'\\' {
            escaped = true;
        } else if b == b'"' {
            quoted = !quoted;
        } else if !quoted && b == sep {
            out.push(&s[start..i]);
            start = i + 1;
        }
    }
    out.push(&s[start..]);
    out
}

/// Parses `type/subtype; name=value; name="quoted"` into the lower-cased
/// media type and (lower-cased name, unquoted value) parameters.
pub(crate) fn parse_media_type(s: &str) -> Option<(String, Vec<(String, String)>)> {
    let mut segments = split_unquoted(s, b';').into_iter();
    let media = segments.next()?.trim().to_ascii_lowercase();
    let (ty, sub) = media.split_once('/')?;
    if ty.is_empty() || sub.is_empty() || media.contains(char::is_whitespace) {
        return None;
    }
    let params = segments
        .filter_map(|p| {
            let (k, v) = p.split_once('=')?;
            let v = v.trim();
            let v = match v.strip_prefix('"') {
                Some(inner) => {
                    let inner = inner.strip_suffix('"').unwrap_or(inner);
                    let mut out = String::with_capacity(inner.len());
                    let mut chars = inner.chars();
                    while let Some(c) = chars.next() {
                        if c == '\\' {
                            if let Some(n) = chars.next() {
                                out.push(n);
                            }
                        } else {
                            out.push(c);
                        }
                    }
                    out
                }
                None => v.to_owned(),
            };
            Some((k.trim().to_ascii_lowercase(), v))
        })
        .collect();
    Some((media, params))
}

/// What one request produced.
#[derive(Debug, Default)]
struct Received {
    response: StowResponse,
    parts: usize,
    bytes: u64,
    /// Framing or body error, or the limit, that ended the request early.
    error: Option<StowrsdError>,
}

/// Where and how the parts of one request are stored.
struct Ctx<'a, K> {
    sink: &'a K,
    disk: Option<DiskGuard>,
    /// The reserve was reported for this request (once, not per part).
    disk_logged: bool,
}

impl<'a, K: Sink> Ctx<'a, K> {
    fn new(intake: &'a Intake<K>) -> Ctx<'a, K> {
        Ctx {
            sink: &intake.sink,
            disk: intake
                .sink
                .dir()
                .map(|d| DiskGuard::new(Arc::from(d), intake.min_free_disk)),
            disk_logged: false,
        }
    }

    /// Counts `written` bytes of `meta`'s instance against the free-disk
    /// reserve: the failure to report when storing must stop.
    async fn admit(&mut self, meta: &FileMeta, written: u64) -> Result<(), FailedSop> {
        let Some(disk) = self.disk.as_mut() else {
            return Ok(());
        };
        let Err(e) = disk.check(written).await else {
            return Ok(());
        };
        if !self.disk_logged {
            self.disk_logged = true;
            tracing::warn!(sop_instance_uid = %meta.sop_instance_uid, error = %e, "not storing: free-disk reserve");
        }
        Err(failed(
            meta,
            match e {
                DiskError::Low { .. } => failure_reason::OUT_OF_RESOURCES,
                DiskError::Stat { .. } => failure_reason::PROCESSING_FAILURE,
            },
        ))
    }
}

async fn receive<K, S, E>(intake: &Intake<K>, reader: &mut MultipartReader<S>) -> Received
where
    K: Sink,
    S: Stream<Item = Result<Bytes, BodyError<E>>> + Unpin,
    E: std::fmt::Display,
{
    let limits = intake.limits;
    let mut ctx = Ctx::new(intake);
    let mut received = Received::default();
    let mut current: Option<Part> = None;
    let mut part_bytes = 0u64;
    // Whether the request ended inside a part (which then has its item).
    let mut cut_off = false;
    loop {
        match reader.next().await {
            Ok(Some(Event::PartStart(headers))) => {
                if received.parts >= limits.max_parts {
                    received.error = Some(
                        LimitExceeded::Parts {
                            max: limits.max_parts,
                        }
                        .into(),
                    );
                    break;
                }
                received.parts += 1;
                part_bytes = 0;
                current = Some(Part::start(&headers));
            }
            Ok(Some(Event::PartData(data))) => {
                received.bytes += data.len() as u64;
                part_bytes += data.len() as u64;
                if part_bytes > limits.max_part_bytes {
                    if let Some(part) = current.take() {
                        let f = part.interrupt(failure_reason::OUT_OF_RESOURCES).await;
                        received.response.failed.push(f);
                        cut_off = true;
                    }
                    received.error = Some(
                        LimitExceeded::PartBytes {
                            part: received.parts,
                            max: limits.max_part_bytes,
                        }
                        .into(),
                    );
                    break;
                }
                if let Some(part) = current.as_mut() {
                    part.data(data, &mut ctx).await;
                }
            }
            Ok(Some(Event::PartEnd)) => {
                if let Some(part) = current.take() {
                    match part.finish(&mut ctx).await {
                        Ok(stored) => received.response.referenced.push(stored),
                        Err(failed) => received.response.failed.push(failed),
                    }
                }
            }
            Ok(Some(Event::End)) | Ok(None) => break,
            Err(e) => {
                let error = match e {
                    multipart::ReadError::Multipart(m) => StowrsdError::Multipart(m),
                    multipart::ReadError::Stream(BodyError::TooLarge(l)) => {
                        StowrsdError::TooLarge(l)
                    }
                    multipart::ReadError::Stream(BodyError::Read(s)) => {
                        StowrsdError::Body(s.to_string())
                    }
                };
                let reason = if error.closes() {
                    failure_reason::OUT_OF_RESOURCES
                } else {
                    failure_reason::PROCESSING_FAILURE
                };
                if let Some(part) = current.take() {
                    received.response.failed.push(part.interrupt(reason).await);
                    cut_off = true;
                }
                received.error = Some(error);
                break;
            }
        }
    }
    if received.error.as_ref().is_some_and(StowrsdError::closes) && !cut_off {
        // Stopped between parts: what was not read is one failure
        // without UIDs, so the reply does not pass for complete.
        received.response.failed.push(FailedSop {
            sop_class_uid: None,
            sop_instance_uid: None,
            reason: failure_reason::OUT_OF_RESOURCES,
        });
    }
    received
}

fn respond(received: &Received, format: Format, agent: &str) -> Response {
    let body = &received.response;
    match &received.error {
        None if received.parts == 0 => {
            StowrsdError::BadRequest("multipart body contains no parts".into()).into_response()
        }
        None => (
            body.status(),
            [(CONTENT_TYPE, format.content_type())],
            body.render(format),
        )
            .into_response(),
        Some(e) if body.referenced.is_empty() => {
            // Nothing was stored: a plain error.
            let mut resp = (
                e.status(),
                [(CONTENT_TYPE, "text/plain; charset=utf-8")],
                format!("{e}\n"),
            )
                .into_response();
            if e.closes() {
                resp.headers_mut()
                    .insert(CONNECTION, HeaderValue::from_static("close"));
            }
            resp
        }
        Some(e) => {
            // Some instances are stored: tell which, with the error as a
            // warning. Over a limit the status is 202 (some stored, some
            // not), so that a client that trusts the status as well as the
            // body (ours does) counts the stored ones as stored.
            let status = if e.closes() {
                StatusCode::ACCEPTED
            } else {
                e.status()
            };
            let mut resp = (
                status,
                [(CONTENT_TYPE, format.content_type())],
                body.render(format),
            )
                .into_response();
            let text: String = e
                .to_string()
                .chars()
                .map(|c| {
                    if c.is_ascii_graphic() && c != '"' && c != '\\' {
                        c
                    } else {
                        ' '
                    }
                })
                .collect();
            if let Ok(v) = HeaderValue::from_str(&format!("299 {agent} \"{text}\"")) {
                resp.headers_mut().insert(WARNING, v);
            }
            if e.closes() {
                resp.headers_mut()
                    .insert(CONNECTION, HeaderValue::from_static("close"));
            }
            resp
        }
    }
}

/// Processing state of the current part.
enum Part {
    /// Collecting the file meta information: the chunks received so far
    /// (to be written later) and a copy of just the meta bytes.
    Meta {
        pieces: Vec<Bytes>,
        head: BytesMut,
        need: usize,
    },
    /// Meta read: streaming to the temporary file (or discarding).
    Writing {
        meta: FileMeta,
        file: Option<TempFile>,
    },
    /// Not stored; the rest of the part is discarded.
    Failed(FailedSop),
}

impl Part {
    fn start(headers: &PartHeaders) -> Part {
        if let Some(ct) = headers.content_type() {
            let media = parse_media_type(ct).map(|(m, _)| m);
            if media.as_deref() != Some("application/dicom") {
                tracing::debug!(content_type = ct, "part is not application/dicom");
                return Part::Failed(cannot_understand());
            }
        }
        Part::Meta {
            pieces: Vec::new(),
            head: BytesMut::new(),
            need: 132,
        }
    }

    async fn data<K: Sink>(&mut self, data: Bytes, ctx: &mut Ctx<'_, K>) {
        match self {
            Part::Meta { pieces, head, need } => {
                pieces.push(data.clone());
                let mut off = 0;
                loop {
                    let take = need.saturating_sub(head.len()).min(data.len() - off);
                    head.extend_from_slice(&data[off..off + take]);
                    off += take;
                    if head.len() < *need {
                        return;
                    }
                    match meta::parse(head, false) {
                        Ok(Progress::NeedMore(n)) if n > head.len() => *need = n,
                        Ok(Progress::NeedMore(_)) => {
                            *self = Part::Failed(cannot_understand());
                            return;
                        }
                        Ok(Progress::Done(m)) => {
                            let pieces = std::mem::take(pieces);
                            *self = Part::begin(m, pieces, ctx).await;
                            return;
                        }
                        Err(e) => {
                            tracing::debug!(error = %e, "part rejected");
                            *self = Part::Failed(cannot_understand());
                            return;
                        }
                    }
                }
            }
            Part::Writing {
                meta,
                file: file @ Some(_),
            } => {
                let written = match file.as_mut() {
                    Some(f) => f.write(&data).await.map_err(|e| io_failure(meta, &e)),
                    None => Ok(()),
                };
                let admitted = match written {
                    Ok(()) => ctx.admit(meta, data.len() as u64).await,
                    Err(f) => Err(f),
                };
                if let Err(failed) = admitted {
                    if let Some(f) = file.take() {
                        f.abort().await;
                    }
                    *self = Part::Failed(failed);
                }
            }
            Part::Writing { file: None, .. } | Part::Failed(_) => {}
        }
    }

    /// Meta complete: open the temporary file and write what was held back.
    async fn begin<K: Sink>(meta: FileMeta, pieces: Vec<Bytes>, ctx: &mut Ctx<'_, K>) -> Part {
        let Some(dir) = ctx.sink.dir() else {
            return Part::Writing { meta, file: None };
        };
        let mut file = match TempFile::create(dir).await {
            Ok(f) => f,
            Err(e) => return Part::Failed(io_failure(&meta, &e)),
        };
        // Checked once the (empty) file exists: creating it creates the
        // store directory, whose file system is the one to look at.
        if let Err(f) = ctx.admit(&meta, 0).await {
            file.abort().await;
            return Part::Failed(f);
        }
        let mut written = 0u64;
        for piece in &pieces {
            if let Err(e) = file.write(piece).await {
                file.abort().await;
                return Part::Failed(io_failure(&meta, &e));
            }
            written += piece.len() as u64;
        }
        if let Err(f) = ctx.admit(&meta, written).await {
            file.abort().await;
            return Part::Failed(f);
        }
        Part::Writing {
            meta,
            file: Some(file),
        }
    }

    /// The part ended cleanly.
    async fn finish<K: Sink>(self, ctx: &mut Ctx<'_, K>) -> Result<ReferencedSop, FailedSop> {
        let part = match self {
            Part::Meta { pieces, head, .. } => match meta::parse(&head, true) {
                Ok(Progress::Done(m)) => Part::begin(m, pieces, ctx).await,
                Ok(Progress::NeedMore(_)) => Part::Failed(cannot_understand()),
                Err(e) => {
                    tracing::debug!(error = %e, "part rejected");
                    Part::Failed(cannot_understand())
                }
            },
            other => other,
        };
        match part {
            Part::Writing { meta, file } => {
                if let Some(file) = file {
                    return ctx.sink.commit(file, meta).await;
                }
                // Discarded (no store directory): read, not kept.
                Ok(ReferencedSop {
                    sop_class_uid: meta.sop_class_uid,
                    sop_instance_uid: meta.sop_instance_uid,
                })
            }
            Part::Failed(f) => Err(f),
            Part::Meta { .. } => Err(cannot_understand()),
        }
    }

    /// The body ended, broke or ran into a limit inside this part: it
    /// fails with `reason`, unless it had already failed for its own.
    async fn interrupt(self, reason: u16) -> FailedSop {
        match self {
            Part::Meta { .. } => FailedSop {
                sop_class_uid: None,
                sop_instance_uid: None,
                reason,
            },
            Part::Writing { meta, file } => {
                if let Some(f) = file {
                    f.abort().await;
                }
                FailedSop {
                    sop_class_uid: Some(meta.sop_class_uid),
                    sop_instance_uid: Some(meta.sop_instance_uid),
                    reason,
                }
            }
            Part::Failed(f) => f,
        }
    }
}

fn cannot_understand() -> FailedSop {
    FailedSop {
        sop_class_uid: None,
        sop_instance_uid: None,
        reason: failure_reason::CANNOT_UNDERSTAND,
    }
}

/// `meta`'s instance failed with `reason`.
pub(crate) fn failed(meta: &FileMeta, reason: u16) -> FailedSop {
    FailedSop {
        sop_class_uid: Some(meta.sop_class_uid.clone()),
        sop_instance_uid: Some(meta.sop_instance_uid.clone()),
        reason,
    }
}

pub(crate) fn io_failure(meta: &FileMeta, e: &io::Error) -> FailedSop {
    tracing::warn!(sop_instance_uid = %meta.sop_instance_uid, error = %e, "storing instance failed");
    failed(
        meta,
        if e.kind() == io::ErrorKind::StorageFull {
            failure_reason::OUT_OF_RESOURCES
        } else {
            failure_reason::PROCESSING_FAILURE
        },
    )
}
