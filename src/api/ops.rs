//! Operations endpoints and the control API's access rule.
//!
//! - `GET /metrics`: Prometheus text format ([`crate::metrics`]).
//! - `GET /metrics/summary`: per exporter and web app, what was sent,
//!   failed and is in flight, as JSON (the web page's throughput).
//! - `GET /dcm4chee-arc/health/live`: 200 while the process serves.
//! - `GET /dcm4chee-arc/health/ready`: 200 with the checks (configuration
//!   loaded, task store readable and the queue backend's own health probe
//!   ([`crate::queue::TaskDelivery::health`]: its database, or its link to
//!   the broker), storage writable), or 503 naming the failing one.
//!
//! Access ([`crate::token::require_token`]): with a bearer token configured, every
//! route of [`router`] and of the control API needs `Authorization: Bearer
//! <token>` (compared in constant time); only [`public_router`]'s
//! `health/live` and the web page's static files go without. The API listens on loopback unless told
//! otherwise, and [`check_listen`] refuses any other address without a
//! token, so reload, export and task changes never run unauthenticated
//! off loopback.
//!
//! Without a token, loopback is not enough: any web page the operator
//! opens can send requests to it, directly or by DNS rebinding (a name of
//! the attacker's that resolves to 127.0.0.1). So [`require_same_site`]
//! ([`SiteGuard`]) answers only requests whose `Host` names this service
//! (`localhost`, a loopback address, the listen address, or a name given
//! with `--allowed-host`), and takes state-changing ones (any method but
//! GET, HEAD, OPTIONS, TRACE) only from the service's own page (`Origin`
//! equal to the address the request was sent to, or an allowed name) or
//! from clients that send no `Origin` (curl, the CLI), never with
//! `Sec-Fetch-Site` saying another site sent it. Browsers always send
//! `Origin` with such requests and cannot forge `Host`, `Origin` or
//! `Sec-Fetch-Site`. Refusals are 403 with an `errorMessage` saying why;
//! `health/live` is never refused. A token makes these checks moot (a page
//! cannot send it) and they are off then.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

use crate::cluster::Signals;
use crate::config::{LiveConfig, Secret};
use crate::metrics::{CONTENT_TYPE, Metrics, QueueGauges};
use crate::queue::{Backend, QueueError, TaskDelivery, TaskStore};
use crate::task::Status;
use crate::token::{TOKEN_ENV, is_loopback};

/// The path that never needs a token.
pub const LIVE_PATH: &str = "/dcm4chee-arc/health/live";
pub const READY_PATH: &str = "/dcm4chee-arc/health/ready";
pub const METRICS_PATH: &str = "/metrics";
pub const METRICS_SUMMARY_PATH: &str = "/metrics/summary";
/// (method, full path) of the operations routes, for `openapi.json`.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", METRICS_PATH),
    ("GET", METRICS_SUMMARY_PATH),
    ("GET", LIVE_PATH),
    ("GET", READY_PATH),
];

/// What the operations endpoints read.
#[derive(Clone)]
pub struct OpsState {
    pub metrics: Arc<Metrics>,
    pub config: LiveConfig,
    pub data_dir: PathBuf,
    pub device_name: String,
    /// The task store: records by queue and status.
    pub store: Arc<dyn TaskStore>,
    /// The queue backend: its health probe and, over AMQP, the depths.
    pub delivery: Arc<dyn TaskDelivery>,
    /// The shared database (`--database`), password masked: readiness
    /// then names it as a dependency of its own, beside the broker.
    pub database: Option<String>,
    /// The signals between the instances on that database: readiness
    /// waits for them to listen, so that an instance reported ready also
    /// hears the others' cancels and reloads.
    pub signals: Option<Signals>,
}

/// The router of `/metrics` and readiness: behind the token, like the
/// control API.
pub fn router(state: OpsState) -> Router {
    Router::new()
        .route(METRICS_PATH, get(metrics))
        .route(METRICS_SUMMARY_PATH, get(metrics_summary))
        .route(READY_PATH, get(ready))
        .with_state(state)
}

/// Liveness, which never needs the token: an orchestrator probes it
/// without credentials, and it tells nothing but that the process serves.
pub fn public_router() -> Router {
    Router::new().route(LIVE_PATH, get(live))
}

/// The control API may listen off loopback only with a token.
pub fn check_listen(addr: &SocketAddr, token: Option<&Secret>) -> Result<(), OpenWithoutToken> {
    if is_loopback(addr) || token.is_some() {
        return Ok(());
    }
    Err(OpenWithoutToken { addr: *addr })
}

/// The control API was asked to listen off loopback without a token.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "--listen {addr} is not a loopback address: the control API then requires a bearer token; \
     give --api-token-file FILE or set {TOKEN_ENV} (or listen on 127.0.0.1)"
)]
pub struct OpenWithoutToken {
    pub addr: SocketAddr,
}

/// The longest client-supplied `Host` or `Origin` quoted in a refusal
/// (the log and the reply); longer values are cut.
const MAX_QUOTED: usize = 200;

/// Why [`SiteGuard`] refused a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SiteRefusal {
    #[error(
        "the request has no Host header; without an API token the control API answers only \
         requests addressed to one of its names"
    )]
    NoHost,
    #[error(
        "Host {0:?} is not a name of this service; without an API token the control API answers \
         only requests addressed to localhost, a loopback address, its listen address or a name \
         given with --allowed-host (this refuses DNS rebinding)"
    )]
    ForeignHost(String),
    #[error(
        "cross-site request refused: Origin {origin:?} is not this service's page ({expected}); \
         without an API token the control API takes {method} requests only from its own page or \
         from clients that send no Origin (curl, the CLI)"
    )]
    CrossOrigin {
        origin: String,
        expected: String,
        method: Method,
    },
    #[error(
        "cross-site request refused: Sec-Fetch-Site: {site}; without an API token the control \
         API takes {method} requests only from its own page or from clients that are not browsers"
    )]
    CrossSite { site: String, method: Method },
}

/// A value given with `--allowed-host` that is not a host name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "--allowed-host {0:?}: expected a host name or IP address without scheme, port or path, \
     e.g. exporter.example.org"
)]
pub struct AllowedHostError(String);

/// Parses a `--allowed-host` value: a host name or IP address, kept
/// lower-case without a trailing dot (IPv6 with or without brackets).
pub fn parse_allowed_host(value: &str) -> Result<String, AllowedHostError> {
    let bad = || AllowedHostError(value.to_string());
    let bare = value.strip_prefix('[').and_then(|v| v.strip_suffix(']'));
    if let Some(ip) = bare
        .or(Some(value))
        .and_then(|v| v.parse::<Ipv6Addr>().ok())
    {
        return Ok(ip.to_string());
    }
    match split_host_port(value) {
        Some((host, None)) => Ok(host),
        _ => Err(bad()),
    }
}

/// `host[:port]` of a `Host` header or an origin's authority: the host
/// lower-case, without brackets or a trailing dot; `None` when malformed.
fn split_host_port(s: &str) -> Option<(String, Option<u16>)> {
    let port = |p: &str| -> Option<Option<u16>> {
        match p {
            "" => Some(None),
            p => Some(Some(p.strip_prefix(':')?.parse().ok()?)),
        }
    };
    if let Some(rest) = s.strip_prefix('[') {
        let (ip, after) = rest.split_once(']')?;
        let ip: Ipv6Addr = ip.parse().ok()?;
        return Some((ip.to_string(), port(after)?));
    }
    let (host, p) = match s.rsplit_once(':') {
        Some((h, p)) => (h, port(&format!(":{p}"))?),
        None => (s, None),
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    let valid = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_');
    valid.then(|| (host.to_ascii_lowercase(), p))
}

/// `value` cut to [`MAX_QUOTED`] characters, for a refusal.
fn quoted(value: &str) -> String {
    value.chars().take(MAX_QUOTED).collect()
}

/// Methods that change nothing: only these may come from another site.
fn is_safe(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    )
}

/// The control API's defence, without a token, against other web pages
/// and DNS rebinding (see the module documentation).
#[derive(Debug, Clone)]
pub struct SiteGuard {
    /// Off when a token is configured: a page cannot send it.
    enabled: bool,
    listen: IpAddr,
    /// From `--allowed-host`, as [`parse_allowed_host`] gives them.
    names: Vec<String>,
}

impl SiteGuard {
    /// The guard of a control API listening on `listen`; `names` from
    /// `--allowed-host`; off when `token_configured`.
    pub fn new(listen: SocketAddr, names: &[String], token_configured: bool) -> SiteGuard {
        SiteGuard {
            enabled: !token_configured,
            listen: listen.ip(),
            names: names.to_vec(),
        }
    }

    /// Whether `host` (as [`split_host_port`] gives it) names this service.
    fn is_own_name(&self, host: &str) -> bool {
        if let Ok(ip) = host.parse::<IpAddr>()
            && (ip.is_loopback() || ip == self.listen)
        {
            return true;
        }
        host == "localhost" || self.names.iter().any(|n| n == host)
    }

    /// Checks one request; `Err` says why it is refused.
    pub fn check(&self, method: &Method, headers: &HeaderMap) -> Result<(), SiteRefusal> {
        if !self.enabled {
            return Ok(());
        }
        let host_value = headers
            .get(header::HOST)
            .ok_or(SiteRefusal::NoHost)?
            .to_str()
            .map_err(|_| SiteRefusal::ForeignHost("(not text)".into()))?;
        let (host, port) = split_host_port(host_value)
            .filter(|(h, _)| self.is_own_name(h))
            .ok_or_else(|| SiteRefusal::ForeignHost(quoted(host_value)))?;
        if is_safe(method) {
            return Ok(());
        }
        if let Some(origin) = headers.get(header::ORIGIN) {
            let origin = origin.to_str().unwrap_or("(not text)");
            if !self.origin_matches(origin, &host, port) {
                return Err(SiteRefusal::CrossOrigin {
                    origin: quoted(origin),
                    expected: format!("http://{}", quoted(host_value)),
                    method: method.clone(),
                });
            }
        }
        if let Some(site) = headers.get("sec-fetch-site") {
            let site = site.to_str().unwrap_or("(not text)");
            // "none": the user's own action (typed address, bookmark).
            if !site.eq_ignore_ascii_case("same-origin") && !site.eq_ignore_ascii_case("none") {
                return Err(SiteRefusal::CrossSite {
                    site: quoted(site),
                    method: method.clone(),
                });
            }
        }
        Ok(())
    }

    /// Whether `origin` is the page of the address the request was sent to
    /// (`host`, `port` from `Host`, the port by default that of the
    /// origin's scheme), or of a name given with `--allowed-host` (a
    /// reverse proxy may rewrite `Host`). The scheme (http or https) is not
    /// compared: a TLS proxy in front changes it, and a page served from
    /// this host and port can only be this service's.
    fn origin_matches(&self, origin: &str, host: &str, port: Option<u16>) -> bool {
        let Some((scheme, authority)) = origin.split_once("://") else {
            return false; // "null" among others
        };
        let default_port = match scheme.to_ascii_lowercase().as_str() {
            "http" => 80,
            "https" => 443,
            _ => return false,
        };
        let Some((o_host, o_port)) = split_host_port(authority) else {
            return false;
        };
        let same = o_host == host && o_port.unwrap_or(default_port) == port.unwrap_or(default_port);
        same || self.names.contains(&o_host)
    }
}

/// Middleware: [`SiteGuard::check`], refusing with 403 and the reason.
pub async fn require_same_site(
    State(guard): State<Arc<SiteGuard>>,
    req: Request,
    next: Next,
) -> Response {
    match guard.check(req.method(), req.headers()) {
        Ok(()) => next.run(req).await,
        Err(e) => {
            tracing::warn!(method = %req.method(), path = %req.uri().path(), reason = %e, "control API request refused");
            (
                StatusCode::FORBIDDEN,
                Json(json!({"errorMessage": e.to_string()})),
            )
                .into_response()
        }
    }
}

async fn live() -> Json<Value> {
    Json(json!({"status": "UP"}))
}

async fn metrics(State(s): State<OpsState>) -> Response {
    // Gauges from the task store and broker; a failing source leaves its
    // gauges out rather than failing the scrape.
    let gauges = queue_gauges(&s).await.unwrap_or_else(|e| {
        tracing::warn!(error = %e, "metrics: cannot read the task store");
        QueueGauges::default()
    });
    let mut gauges = gauges;
    if let Some(depths) = s.delivery.broker_depths(&queue_names(&s)).await {
        gauges.depth = depths;
    }
    match s.metrics.render(&gauges) {
        Ok(text) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "metrics: cannot encode");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                Json(json!({"errorMessage": format!("cannot encode the metrics: {e}")})),
            )
                .into_response()
        }
    }
}

/// What the web page shows as throughput, without parsing the text format:
/// `{"destinations": [{"exporter", "webApp", "instancesSent", "bytesSent",
/// "instancesFailed", "requestsInFlight"}]}`.
async fn metrics_summary(State(s): State<OpsState>) -> Json<Value> {
    Json(json!({"destinations": s.metrics.summary()}))
}

fn queue_names(s: &OpsState) -> Vec<String> {
    s.config.current().queues.keys().cloned().collect()
}

/// Task records by queue and status (every configured queue and status,
/// zeros included), and for the embedded queue its depth.
async fn queue_gauges(s: &OpsState) -> Result<QueueGauges, QueueError> {
    let rows = s.store.status_counts(&s.device_name).await?;
    // A delivery that takes from the store (embedded, PostgreSQL) has its
    // waiting records as its depth; a broker counts its own
    // (`broker_depths`).
    let embedded = matches!(s.delivery.backend(), Backend::Embedded | Backend::Postgres);
    let mut g = QueueGauges::default();
    for q in queue_names(s) {
        for st in Status::ALL {
            g.tasks.insert((q.clone(), st.as_str().to_string()), 0);
        }
        if embedded {
            g.depth.insert(q, 0);
        }
    }
    for (q, st, n) in rows {
        if embedded
            && (st == Status::Scheduled.as_str() || st == Status::ScheduledForRetry.as_str())
        {
            *g.depth.entry(q.clone()).or_default() += n;
        }
        g.tasks.insert((q, st), n);
    }
    Ok(g)
}

async fn ready(State(s): State<OpsState>) -> Response {
    let mut checks = BTreeMap::new();
    let mut failing = Vec::new();
    let snap = s.config.current();
    checks.insert(
        "config",
        json!({"status": "UP", "source": snap.source.to_string(), "exporters": snap.exporters.len()}),
    );
    let backend = s.delivery.backend().as_str();
    let store = queue_gauges(&s).await;
    // With a shared database, the task records (and the archive index)
    // are there: when it is down, readiness says so by name, and the
    // queue check is left to the delivery's own probe (the broker's
    // link, which may well be up).
    let mut queue = match (&s.database, store) {
        (Some(db), Ok(_)) => {
            checks.insert("database", json!({"status": "UP", "database": db}));
            json!({"status": "UP", "backend": backend})
        }
        (Some(db), Err(e)) => {
            failing.push(format!("database: {e}"));
            checks.insert(
                "database",
                json!({"status": "DOWN", "database": db, "error": e.to_string()}),
            );
            json!({"status": "UP", "backend": backend})
        }
        (None, Ok(_)) => json!({"status": "UP", "backend": backend}),
        (None, Err(e)) => {
            failing.push(format!("queue: task store: {e}"));
            json!({"status": "DOWN", "error": format!("task store: {e}")})
        }
    };
    if queue["status"] == "UP"
        && let Err(e) = s.delivery.health().await
    {
        failing.push(format!("queue: {e}"));
        queue = json!({"status": "DOWN", "backend": backend, "error": e.to_string()});
    }
    checks.insert("queue", queue);
    if let Some(signals) = &s.signals {
        if signals.is_listening() {
            checks.insert("signals", json!({"status": "UP"}));
        } else {
            failing.push("signals: not listening to the other instances".to_string());
            checks.insert(
                "signals",
                json!({"status": "DOWN", "error": "not listening to the other instances"}),
            );
        }
    }
    match storage_writable(&s.data_dir.join("storage")).await {
        Ok(()) => checks.insert("storage", json!({"status": "UP"})),
        Err(e) => {
            failing.push(format!("storage: {e}"));
            checks.insert("storage", json!({"status": "DOWN", "error": e.to_string()}))
        }
    };
    if failing.is_empty() {
        (
            StatusCode::OK,
            Json(json!({"status": "UP", "checks": checks})),
        )
            .into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({
                "status": "DOWN",
                "errorMessage": format!("not ready: {}", failing.join("; ")),
                "checks": checks,
            })),
        )
            .into_response()
    }
}

/// Why the storage folder is not writable.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// Creating the folder, or writing, syncing the probe file in it.
    #[error("{}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The blocking probe did not finish (a panic, or the runtime stopping).
    #[error("storage probe: {0}")]
    Probe(#[source] tokio::task::JoinError),
}

/// Creates, writes and removes a file in the storage folder (off the
/// runtime: the sync may wait for the disk).
async fn storage_writable(dir: &Path) -> Result<(), StorageError> {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        std::fs::create_dir_all(&dir).map_err(|source| StorageError::Io {
            path: dir.clone(),
            source,
        })?;
        let probe = dir.join(format!(".ready-probe-{}", std::process::id()));
        let r = std::fs::File::create(&probe)
            .and_then(|mut f| f.write_all(b"ready").and_then(|_| f.sync_all()));
        let _ = std::fs::remove_file(&probe);
        r.map_err(|source| StorageError::Io {
            path: probe,
            source,
        })
    })
    .await
    .map_err(StorageError::Probe)?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_loopback_needs_a_token() {
        let token = Secret::new("t0ken");
        for a in ["127.0.0.1:8080", "127.10.0.1:0", "[::1]:8080"] {
            let a: SocketAddr = a.parse().unwrap();
            assert!(check_listen(&a, None).is_ok(), "{a}");
        }
        for a in [
            "0.0.0.0:8080",
            "[::]:8080",
            "10.1.2.3:80",
            "[::ffff:127.0.0.1]:80",
        ] {
            let a: SocketAddr = a.parse().unwrap();
            let e = check_listen(&a, None).unwrap_err().to_string();
            assert!(
                e.contains("--api-token-file") && e.contains(TOKEN_ENV),
                "{e}"
            );
            assert!(check_listen(&a, Some(&token)).is_ok());
        }
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, axum::http::HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn only_the_services_own_names_are_answered() {
        let listen: SocketAddr = "127.0.0.2:8080".parse().unwrap();
        let g = SiteGuard::new(listen, &["exporter.example".into()], false);
        let get = Method::GET;
        for host in [
            "127.0.0.1:8080",
            "127.0.0.2:8080",
            "127.9.9.9",
            "localhost:8080",
            "LOCALHOST:8080",
            "localhost.:9999",
            "[::1]:8080",
            "exporter.example",
            "Exporter.Example:443",
        ] {
            assert_eq!(g.check(&get, &headers(&[("host", host)])), Ok(()), "{host}");
        }
        for host in [
            "evil.example:8080",
            "localhost.evil.example",
            "10.0.0.1:8080",
            "[::2]:8080",
            "::1",
            "localhost:",
            "localhost:http",
            "user@localhost",
            "",
        ] {
            assert!(
                matches!(
                    g.check(&get, &headers(&[("host", host)])),
                    Err(SiteRefusal::ForeignHost(_))
                ),
                "{host}"
            );
        }
        assert_eq!(g.check(&get, &HeaderMap::new()), Err(SiteRefusal::NoHost));
    }

    #[test]
    fn state_changes_come_only_from_the_own_origin_or_no_origin() {
        let listen: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let g = SiteGuard::new(listen, &["exporter.example".into()], false);
        let ok = |m: Method, h: &[(&'static str, &str)]| g.check(&m, &headers(h));
        let host = ("host", "127.0.0.1:8080");
        assert_eq!(ok(Method::POST, &[host]), Ok(()));
        assert_eq!(
            ok(Method::POST, &[host, ("origin", "http://127.0.0.1:8080")]),
            Ok(())
        );
        assert_eq!(
            ok(
                Method::DELETE,
                &[
                    host,
                    ("origin", "http://127.0.0.1:8080"),
                    ("sec-fetch-site", "same-origin")
                ]
            ),
            Ok(())
        );
        // The scheme is not compared: a TLS proxy in front changes it, and
        // a page on this host and port can only be this service's.
        assert_eq!(
            ok(Method::POST, &[host, ("origin", "https://127.0.0.1:8080")]),
            Ok(())
        );
        // Default ports, and a name allowed for a reverse proxy.
        assert_eq!(
            ok(
                Method::POST,
                &[("host", "localhost"), ("origin", "http://localhost")]
            ),
            Ok(())
        );
        assert_eq!(
            ok(
                Method::POST,
                &[("host", "localhost:80"), ("origin", "http://localhost")]
            ),
            Ok(())
        );
        assert_eq!(
            ok(
                Method::POST,
                &[host, ("origin", "https://exporter.example")]
            ),
            Ok(())
        );
        for (origin, site) in [
            ("https://evil.example", None),
            ("http://localhost:8080", None),
            ("http://127.0.0.1:8081", None),
            ("null", None),
            ("file://", None),
            ("http://127.0.0.1:8080", Some("cross-site")),
            ("http://127.0.0.1:8080", Some("same-site")),
        ] {
            let mut h = vec![host, ("origin", origin)];
            if let Some(s) = site {
                h.push(("sec-fetch-site", s));
            }
            for m in [Method::POST, Method::PUT, Method::DELETE, Method::PATCH] {
                assert!(ok(m.clone(), &h).is_err(), "{m} {h:?}");
            }
            // Reads from another page are the browser's to block; only the
            // Host matters for them.
            assert_eq!(ok(Method::GET, &h), Ok(()), "{h:?}");
        }
        assert!(matches!(
            ok(Method::POST, &[host, ("sec-fetch-site", "cross-site")]),
            Err(SiteRefusal::CrossSite { .. })
        ));
        let e = ok(Method::POST, &[host, ("origin", "https://evil.example")]).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("https://evil.example") && text.contains("POST"),
            "{text}"
        );
    }

    #[test]
    fn a_token_turns_the_site_checks_off() {
        let listen: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        let g = SiteGuard::new(listen, &[], true);
        let h = headers(&[("host", "evil.example"), ("origin", "https://evil.example")]);
        assert_eq!(g.check(&Method::POST, &h), Ok(()));
    }

    #[test]
    fn allowed_host_values_are_names() {
        assert_eq!(
            parse_allowed_host("Exporter.Example."),
            Ok("exporter.example".into())
        );
        assert_eq!(parse_allowed_host("10.1.2.3"), Ok("10.1.2.3".into()));
        assert_eq!(parse_allowed_host("[FE80::1]"), Ok("fe80::1".into()));
        assert_eq!(parse_allowed_host("fe80::1"), Ok("fe80::1".into()));
        for bad in ["", "http://x", "x:8080", "x/y", "a b", "*"] {
            let e = parse_allowed_host(bad).unwrap_err().to_string();
            assert!(e.contains("--allowed-host"), "{e}");
        }
    }
}
