//! The STOW-RS client: sends stored instances to a destination web app.
//!
//! One [`StowClient`] per destination holds a pooled HTTP/1.1 client built
//! from the web app's settings. [`StowClient::store`] POSTs one request to
//! `<service URL>/studies` and classifies each instance from the response
//! ([`response::classify`]). Files are streamed from storage; nothing here
//! reads a whole object into memory, and nothing the destination answers
//! is kept beyond [`MAX_REPLY_BYTES`].

pub mod body;
pub mod multipart;
pub mod oauth;
pub mod response;
pub mod tls;

use std::time::Duration;

use base64::Engine;
use reqwest::header::{
    ACCEPT, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, HeaderValue, RETRY_AFTER,
};

use crate::archive::StoredInstance;
use crate::config::WebApp;
use crate::outcome::{FailureKind, InstanceResult};
use multipart::{PartContent, PartFile};
use response::Exchange;

/// Told of every STOW-RS request [`StowClient::store`] sends, from just
/// before it goes out until its response has been read (or it failed or
/// was dropped). The caller passes one explicitly: this client sits below
/// the metrics and knows nothing of them (the executor counts requests in
/// flight and their latency per destination with it).
pub trait RequestObserver: Send + Sync {
    /// A request is going out.
    fn started(&self);
    /// The request announced by the matching [`RequestObserver::started`]
    /// ended after `took` (answered, failed, or dropped).
    fn finished(&self, took: Duration);
}

/// Reports one request to a [`RequestObserver`], ending it when dropped,
/// so a request whose future is dropped (shutdown) is not left in flight.
struct RequestTimer<'a> {
    observer: &'a dyn RequestObserver,
    started: std::time::Instant,
}

impl<'a> RequestTimer<'a> {
    fn start(observer: &'a dyn RequestObserver) -> RequestTimer<'a> {
        observer.started();
        RequestTimer {
            observer,
            started: std::time::Instant::now(),
        }
    }
}

impl Drop for RequestTimer<'_> {
    fn drop(&mut self) {
        self.observer.finished(self.started.elapsed());
    }
}

/// The media type asked for in `Accept`.
pub const ACCEPT_JSON: &str = "application/dicom+json";

/// A reply body larger than this is not read: the request's instances
/// are then not confirmed as stored ([`response::Exchange::TooLarge`]). A
/// STOW-RS reply names each instance of the request in an item of well
/// under 1 KiB, so even the largest batch (`max-instances-per-request=500`)
/// stays far below it; a larger reply is broken or hostile, and must not
/// cost memory in proportion to its size.
pub const MAX_REPLY_BYTES: usize = 4 * 1024 * 1024;

/// Why a client could not be built for a web app.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("web application {web_app}: cannot build HTTP client: {source}")]
    Build {
        web_app: String,
        source: reqwest::Error,
    },
    #[error("web application {web_app}: invalid {what} for an HTTP header")]
    Header { web_app: String, what: &'static str },
    #[error("web application {web_app}: OAuth2 client: {reason}")]
    Token { web_app: String, reason: String },
    #[error("web application {web_app}: TLS: {source}")]
    Tls {
        web_app: String,
        source: Box<tls::TlsError>,
    },
}

/// An HTTP client for one destination web app.
#[derive(Clone)]
pub struct StowClient {
    http: reqwest::Client,
    url: String,
    chunked: bool,
    transfer_syntax_parameter: bool,
    auth: Auth,
}

/// Where the `Authorization` header comes from.
#[derive(Clone)]
enum Auth {
    None,
    /// `bearer-token` or `basic-auth`: the same header every time.
    Fixed(HeaderValue),
    /// An OAuth2 client (`dcmKeycloakClientID`): a token per request,
    /// refreshed before it expires and after a 401.
    Tokens(oauth::TokenSource),
}

/// What one POST came to.
enum Posted {
    Results(Vec<InstanceResult>),
    /// 401 with a token that may have been revoked: worth one refresh.
    Unauthorized(HeaderValue),
}

/// One instance to send: its stored file, or a conversion of it for a
/// destination that does not take the stored transfer syntax.
pub struct Outgoing {
    pub inst: StoredInstance,
    pub converted: Option<Converted>,
}

/// An instance converted to another transfer syntax, in memory.
pub struct Converted {
    pub data: bytes::Bytes,
    pub transfer_syntax: &'static str,
}

impl StowClient {
    /// Builds the client for `web_app` (its URL, timeouts, auth, framing,
    /// and TLS from `tls` with the web app's trust properties).
    pub fn new(web_app: &WebApp, tls: &tls::TlsSettings) -> Result<StowClient, ClientError> {
        let props = &web_app.props;
        // Our own rustls configuration (system roots plus CA files, client
        // certificate, allow-any-hostname), built once per client; plain
        // http URLs never use it.
        let tls_config =
            tls::client_config(tls, props.allow_any_hostname, props.disable_trust_manager)
                .map_err(|source| ClientError::Tls {
                    web_app: web_app.name.clone(),
                    source: Box::new(source),
                })?;
        let b = reqwest::Client::builder()
            // HTTP/1.1 only: several STOW servers (Orthanc) speak nothing
            // else, and h2 behind proxies has dropped STOW bodies elsewhere.
            .http1_only()
            .pool_max_idle_per_host(props.concurrency.max(1))
            .pool_idle_timeout(Duration::from_secs(60))
            .tcp_nodelay(true)
            .connect_timeout(web_app.connect_timeout.unwrap_or(Duration::from_secs(10)))
            .user_agent(concat!("stow-exporter/", env!("CARGO_PKG_VERSION")))
            .tls_backend_preconfigured(tls_config)
            // An idle timeout between reads (dcmResponseTimeout, else two
            // minutes), never one deadline for a whole upload: a large
            // object may take long to send, but a server that stops
            // answering is given up on.
            .read_timeout(web_app.response_timeout.unwrap_or(DEFAULT_RESPONSE_TIMEOUT));
        let http = b.build().map_err(|source| ClientError::Build {
            web_app: web_app.name.clone(),
            source,
        })?;
        let header_err = |what| ClientError::Header {
            web_app: web_app.name.clone(),
            what,
        };
        // dcm4chee's precedence: an OAuth2 client, then bearer-token, then
        // basic-auth.
        let auth = if let Some(kc) = &web_app.keycloak {
            let transport = oauth::TokenTransport {
                tls: tls.clone(),
                allow_insecure_url: props.allow_insecure_token_url,
            };
            Auth::Tokens(oauth::TokenSource::new(kc, &transport).map_err(|e| {
                ClientError::Token {
                    web_app: web_app.name.clone(),
                    reason: e.to_string(),
                }
            })?)
        } else if let Some(token) = &props.bearer_token {
            let mut v = HeaderValue::from_str(&format!("Bearer {}", token.expose()))
                .map_err(|_| header_err("bearer-token"))?;
            v.set_sensitive(true);
            Auth::Fixed(v)
        } else if let Some(basic) = &props.basic_auth {
            let enc = base64::engine::general_purpose::STANDARD.encode(basic.expose().as_bytes());
            let mut v = HeaderValue::from_str(&format!("Basic {enc}"))
                .map_err(|_| header_err("basic-auth"))?;
            v.set_sensitive(true);
            Auth::Fixed(v)
        } else {
            Auth::None
        };
        Ok(StowClient {
            http,
            url: format!("{}/studies", web_app.service_url),
            chunked: props.chunked,
            transfer_syntax_parameter: props.transfer_syntax_parameter,
            auth,
        })
    }

    /// The request URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Sends `items` in one request and returns one result per item, in
    /// the same order. Instances whose file is gone are reported MISSING
    /// and not sent; every other failure is a FAILED result with its
    /// reason, never an error, so the caller can always record an outcome.
    /// A 401 to an OAuth2 token gets one new token and one more attempt.
    /// Each request sent is reported to `observer`.
    pub async fn store(
        &self,
        items: Vec<Outgoing>,
        observer: &dyn RequestObserver,
    ) -> Vec<InstanceResult> {
        let mut results: Vec<Option<InstanceResult>> = vec![None; items.len()];
        let mut first = true;
        loop {
            let mut parts = Vec::new();
            let mut sent = Vec::new();
            let mut sent_idx = Vec::new();
            for (i, item) in items.iter().enumerate() {
                match self.part(item).await {
                    Ok(p) => {
                        parts.push(p);
                        sent.push(item.inst.sop_iuid.clone());
                        sent_idx.push(i);
                    }
                    Err(r) => results[i] = Some(r),
                }
            }
            if parts.is_empty() {
                break;
            }
            match self.post(parts, &sent, first, observer).await {
                Posted::Results(classified) => {
                    for (i, r) in sent_idx.into_iter().zip(classified) {
                        results[i] = Some(r);
                    }
                    break;
                }
                Posted::Unauthorized(used) => {
                    if let Auth::Tokens(tokens) = &self.auth {
                        tracing::info!(url = %self.url, "401 with a cached token: fetching a new one and sending again");
                        tokens.invalidate(&used);
                    }
                    first = false;
                }
            }
        }
        results.into_iter().flatten().collect()
    }

    /// One item as a body part (its file opened again on every attempt).
    async fn part(&self, item: &Outgoing) -> Result<PartFile, InstanceResult> {
        let mut p = match &item.converted {
            Some(c) => PartFile {
                len: c.data.len() as u64,
                content: PartContent::Bytes(c.data.clone()),
                name: format!(
                    "{} (converted to {})",
                    item.inst.path.display(),
                    c.transfer_syntax
                ),
                transfer_syntax: Some(c.transfer_syntax.to_string()),
            },
            None => open_part(&item.inst).await?,
        };
        if !self.transfer_syntax_parameter {
            p.transfer_syntax = None;
        }
        Ok(p)
    }

    /// The `Authorization` header for the next request.
    async fn authorization(&self) -> Result<Option<HeaderValue>, (FailureKind, String)> {
        match &self.auth {
            Auth::None => Ok(None),
            Auth::Fixed(v) => Ok(Some(v.clone())),
            Auth::Tokens(tokens) => tokens.header().await.map(Some).map_err(|e| {
                // A refused client is refused again; an unreachable token
                // endpoint may be back by the next attempt.
                let kind = FailureKind::Token {
                    transient: e.is_worth_retrying(),
                };
                (kind, format!("cannot get an access token: {e}"))
            }),
        }
    }

    async fn post(
        &self,
        parts: Vec<PartFile>,
        sent: &[String],
        may_refresh: bool,
        observer: &dyn RequestObserver,
    ) -> Posted {
        let authorization = match self.authorization().await {
            Ok(a) => a,
            Err((kind, reason)) => {
                return Posted::Results(
                    sent.iter()
                        .map(|sop| InstanceResult::failed(sop.clone(), kind, reason.clone()))
                        .collect(),
                );
            }
        };
        let boundary = multipart::new_boundary();
        let len = multipart::body_len(&boundary, &parts);
        let body = reqwest::Body::wrap_stream(multipart::body_stream(boundary.clone(), parts));
        let mut req = self
            .http
            .post(&self.url)
            .header(CONTENT_TYPE, multipart::content_type(&boundary))
            .header(ACCEPT, ACCEPT_JSON)
            .body(body);
        if !self.chunked {
            // A stream body goes chunked unless the length is set explicitly.
            req = req.header(CONTENT_LENGTH, len);
        }
        if let Some(a) = &authorization {
            req = req.header(AUTHORIZATION, a.clone());
        }
        let _timer = RequestTimer::start(observer);
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                return Posted::Results(response::classify(
                    sent,
                    Exchange::Transport {
                        timed_out: e.is_timeout(),
                        reason: transport_reason(&e),
                    },
                ));
            }
        };
        let status = resp.status();
        if status == reqwest::StatusCode::UNAUTHORIZED
            && may_refresh
            && let (Auth::Tokens(_), Some(used)) = (&self.auth, authorization)
        {
            return Posted::Unauthorized(used);
        }
        let header = |name| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let content_type = header(CONTENT_TYPE);
        let retry_after = header(RETRY_AFTER).and_then(|v| parse_retry_after(&v));
        let reason = status.canonical_reason().unwrap_or("");
        Posted::Results(match body::read_limited(resp, MAX_REPLY_BYTES).await {
            Ok(body) => response::classify(
                sent,
                Exchange::Answered {
                    status: status.as_u16(),
                    reason,
                    content_type: content_type.as_deref(),
                    retry_after,
                    body: &body,
                },
            ),
            Err(body::ReadError::TooLarge { limit, .. }) => response::classify(
                sent,
                Exchange::TooLarge {
                    status: status.as_u16(),
                    reason,
                    retry_after,
                    limit,
                },
            ),
            Err(body::ReadError::Transport(e)) => response::classify(
                sent,
                Exchange::Transport {
                    timed_out: e.is_timeout(),
                    reason: format!(
                        "HTTP {status}: reading the response failed: {}",
                        transport_reason(&e)
                    ),
                },
            ),
        })
    }
}

/// The idle timeout when the connection has no `dcmResponseTimeout`.
const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(120);

/// Objects up to this size are read whole in one blocking call (one hop to
/// the blocking pool instead of one per read); larger ones are streamed, so
/// memory stays bounded by `concurrency` × this size.
const READ_WHOLE_MAX: u64 = 4 * 1024 * 1024;

/// Opens an instance's stored file, checks it still has its indexed size,
/// and reads it if it is small.
async fn open_part(inst: &StoredInstance) -> Result<PartFile, InstanceResult> {
    let path = inst.path.clone();
    let size = inst.size;
    let opened = tokio::task::spawn_blocking(move || -> std::io::Result<(PartContent, u64)> {
        use std::io::Read;
        let mut file = std::fs::File::open(&path)?;
        let len = file.metadata()?.len();
        if len != size || len > READ_WHOLE_MAX {
            return Ok((PartContent::File(tokio::fs::File::from_std(file)), len));
        }
        let mut buf = Vec::with_capacity(len as usize);
        file.read_to_end(&mut buf)?;
        Ok((PartContent::Bytes(bytes::Bytes::from(buf)), len))
    })
    .await
    .unwrap_or_else(|e| Err(std::io::Error::other(e)));
    let (content, len) = match opened {
        Ok((content, len)) => match file_problem(inst, Ok(len)) {
            Some(r) => return Err(r),
            None => (content, len),
        },
        Err(e) => return Err(file_problem(inst, Err(e)).expect("an error is a problem")),
    };
    Ok(PartFile {
        content,
        len,
        name: inst.path.display().to_string(),
        transfer_syntax: Some(inst.transfer_syntax.clone()),
    })
}

/// Checks that an instance's stored file is there with its indexed size.
pub async fn check_stored(inst: &StoredInstance) -> Result<(), InstanceResult> {
    let len = tokio::fs::metadata(&inst.path).await.map(|m| m.len());
    file_problem(inst, len).map_or(Ok(()), Err)
}

/// The result for an instance whose stored file cannot go as indexed:
/// gone (MISSING), unreadable or of another size (FAILED). A shortage of
/// descriptors or memory on this host is worth retrying; the rest would
/// fail the same way again.
fn file_problem(inst: &StoredInstance, len: std::io::Result<u64>) -> Option<InstanceResult> {
    let (kind, reason) = match len {
        Ok(len) if len == inst.size => return None,
        Ok(len) => (
            FailureKind::File { shortage: false },
            format!(
                "stored file {} has {len} bytes, the index says {}: not sent",
                inst.path.display(),
                inst.size
            ),
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => (
            FailureKind::Gone,
            format!("stored file {} is gone", inst.path.display()),
        ),
        Err(e) => match crate::shortage::Shortage::of_io(&e) {
            Some(short) => (
                FailureKind::File { shortage: true },
                format!(
                    "cannot read {}: {short}: not sent, worth another attempt",
                    inst.path.display()
                ),
            ),
            None => (
                FailureKind::File { shortage: false },
                format!("cannot read {}: {e}", inst.path.display()),
            ),
        },
    };
    Some(InstanceResult::failed(inst.sop_iuid.clone(), kind, reason))
}

/// A `Retry-After` value: delay seconds or an HTTP date (RFC 9110 10.2.3).
/// Capped at an hour, so a confused server cannot park a task for days.
fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    let d = match v.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => {
            let at = chrono::DateTime::parse_from_rfc2822(v).ok()?;
            (at.with_timezone(&chrono::Utc) - chrono::Utc::now())
                .to_std()
                .unwrap_or_default()
        }
    };
    Some(d.min(Duration::from_secs(3600)))
}

/// A one-line reason with the underlying cause (reqwest's Display alone
/// says only "error sending request"), led by the shortage of descriptors
/// or memory on this host when that is the cause.
fn transport_reason(e: &reqwest::Error) -> String {
    let mut s = if e.is_timeout() {
        "timeout".to_string()
    } else if e.is_connect() {
        "cannot connect".to_string()
    } else {
        e.to_string()
    };
    let mut src = std::error::Error::source(e);
    while let Some(cause) = src {
        let c = cause.to_string();
        if !s.contains(&c) {
            s.push_str(": ");
            s.push_str(&c);
        }
        src = cause.source();
    }
    if let Some(short) = crate::shortage::Shortage::in_chain(e) {
        s = format!("{short}: {s}");
    }
    // The URL is in the task already; keep the message free of it.
    s
}
