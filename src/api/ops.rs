//! Operations endpoints and the control API's access rule.
//!
//! - `GET /metrics`: Prometheus text format ([`crate::metrics`]).
//! - `GET /dcm4chee-arc/health/live`: 200 while the process serves.
//! - `GET /dcm4chee-arc/health/ready`: 200 with the checks (configuration
//!   loaded, task queue reachable, storage writable), or 503 naming the
//!   failing one.
//!
//! Access ([`require_token`]): with a bearer token configured, every
//! route of [`router`] and of the control API needs `Authorization: Bearer
//! <token>` (compared in constant time); only [`public_router`]'s
//! `health/live` and the web page's static files go without. The API listens on loopback unless told
//! otherwise, and [`check_listen`] refuses any other address without a
//! token, so reload, export and task changes never run unauthenticated
//! off loopback.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use tokio::sync::Mutex as AsyncMutex;

use crate::config::{Secret, SharedSnapshot, current};
use crate::metrics::{Metrics, QueueGauges};
use crate::task::Status;

/// The environment variable that may hold the control API's bearer token.
pub const TOKEN_ENV: &str = "STOW_EXPORTER_API_TOKEN";
/// The path that never needs a token.
pub const LIVE_PATH: &str = "/dcm4chee-arc/health/live";
pub const READY_PATH: &str = "/dcm4chee-arc/health/ready";
pub const METRICS_PATH: &str = "/metrics";
/// (method, full path) of the operations routes, for `openapi.json`.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", METRICS_PATH),
    ("GET", LIVE_PATH),
    ("GET", READY_PATH),
];

/// What the operations endpoints read.
#[derive(Clone)]
pub struct OpsState {
    pub metrics: Arc<Metrics>,
    pub snapshot: SharedSnapshot,
    pub data_dir: PathBuf,
    pub device_name: String,
    /// The task store: records by queue and status.
    pub queue: Arc<dyn crate::queue::TaskQueue>,
    /// The broker, when tasks travel over AMQP.
    pub broker: Option<Arc<BrokerProbe>>,
}

/// The router of `/metrics` and readiness: behind the token, like the
/// control API.
pub fn router(state: OpsState) -> Router {
    Router::new()
        .route(METRICS_PATH, get(metrics))
        .route(READY_PATH, get(ready))
        .with_state(state)
}

/// Liveness, which never needs the token: an orchestrator probes it
/// without credentials, and it tells nothing but that the process serves.
pub fn public_router() -> Router {
    Router::new().route(LIVE_PATH, get(live))
}

/// Whether `addr` is a loopback address (127.0.0.0/8 or ::1).
pub fn is_loopback(addr: &SocketAddr) -> bool {
    addr.ip().is_loopback()
}

/// The control API may listen off loopback only with a token.
pub fn check_listen(addr: &SocketAddr, token: Option<&Secret>) -> Result<(), String> {
    if is_loopback(addr) || token.is_some() {
        return Ok(());
    }
    Err(format!(
        "--listen {addr} is not a loopback address: the control API then requires a bearer token; \
         give --api-token-file FILE or set {TOKEN_ENV} (or listen on 127.0.0.1)"
    ))
}

/// The token from `file` (first line, surrounding whitespace removed), else
/// from the environment variable [`TOKEN_ENV`]; none when neither is set.
/// An empty token is an error, never "no token".
pub fn load_token(file: Option<&Path>) -> Result<Option<Secret>, String> {
    let (token, origin) = match file {
        Some(f) => (
            std::fs::read_to_string(f)
                .map_err(|e| format!("--api-token-file {}: {e}", f.display()))?,
            format!("--api-token-file {}", f.display()),
        ),
        None => match std::env::var(TOKEN_ENV) {
            Ok(t) => (t, TOKEN_ENV.to_string()),
            Err(_) => return Ok(None),
        },
    };
    let token = token.trim();
    if token.is_empty() {
        return Err(format!("{origin}: the API token is empty"));
    }
    if token.contains(char::is_whitespace) || !token.is_ascii() {
        return Err(format!(
            "{origin}: the API token must be one line of visible ASCII characters"
        ));
    }
    Ok(Some(Secret::new(token)))
}

/// Compares in time that depends only on the lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = (a.len() ^ b.len()) as u64;
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0xff);
        diff |= u64::from(x ^ y);
    }
    std::hint::black_box(diff) == 0
}

/// Middleware: with a token, every request must carry it. It wraps the
/// protected routers only (see `app`), so what needs no token is not routed
/// through it at all.
pub async fn require_token(
    State(token): State<Option<Arc<Secret>>>,
    req: Request,
    next: Next,
) -> Response {
    let Some(token) = token else {
        return next.run(req).await;
    };
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        });
    match given {
        Some(g) if constant_time_eq(g.as_bytes(), token.expose().as_bytes()) => next.run(req).await,
        _ => {
            let mut r = (
                StatusCode::UNAUTHORIZED,
                Json(json!({"errorMessage": "a valid bearer token is required"})),
            )
                .into_response();
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"stow-exporter\""),
            );
            r
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
    if let Some(b) = &s.broker {
        gauges.depth = b.depths(&queue_names(&s)).await;
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        s.metrics.render(&gauges),
    )
        .into_response()
}

fn queue_names(s: &OpsState) -> Vec<String> {
    current(&s.snapshot).queues.keys().cloned().collect()
}

/// Task records by queue and status (every configured queue and status,
/// zeros included), and for the embedded queue its depth.
async fn queue_gauges(s: &OpsState) -> Result<QueueGauges, String> {
    let rows = s
        .queue
        .status_counts(&s.device_name)
        .await
        .map_err(|e| e.to_string())?;
    let mut g = QueueGauges::default();
    for q in queue_names(s) {
        for st in Status::ALL {
            g.tasks.insert((q.clone(), st.as_str().to_string()), 0);
        }
        if s.broker.is_none() {
            g.depth.insert(q, 0);
        }
    }
    for (q, st, n) in rows {
        if s.broker.is_none()
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
    let snap = current(&s.snapshot);
    checks.insert(
        "config",
        json!({"status": "UP", "source": snap.source.to_string(), "exporters": snap.exporters.len()}),
    );
    let mut queue = match queue_gauges(&s).await {
        Ok(_) => {
            json!({"status": "UP", "backend": if s.broker.is_some() { "amqp" } else { "embedded" }})
        }
        Err(e) => {
            failing.push(format!("queue: task store: {e}"));
            json!({"status": "DOWN", "error": format!("task store: {e}")})
        }
    };
    if let Some(b) = &s.broker
        && queue["status"] == "UP"
        && let Err(e) = b.check().await
    {
        failing.push(format!("queue: {e}"));
        queue = json!({"status": "DOWN", "backend": "amqp", "error": e});
    }
    checks.insert("queue", queue);
    match storage_writable(&s.data_dir.join("storage")).await {
        Ok(()) => checks.insert("storage", json!({"status": "UP"})),
        Err(e) => {
            failing.push(format!("storage: {e}"));
            checks.insert("storage", json!({"status": "DOWN", "error": e}))
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

/// Creates, writes and removes a file in the storage folder.
async fn storage_writable(dir: &Path) -> Result<(), String> {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let probe = dir.join(format!(".ready-probe-{}", std::process::id()));
        let r = std::fs::File::create(&probe)
            .and_then(|mut f| f.write_all(b"ready").and_then(|_| f.sync_all()));
        let _ = std::fs::remove_file(&probe);
        r.map_err(|e| format!("{}: {e}", probe.display()))
    })
    .await
    .map_err(|e| e.to_string())?
}

/// A connection of its own to the AMQP broker, for the ready check and the
/// queue depth (message counts from passive declares).
pub struct BrokerProbe {
    uri: String,
    conn: AsyncMutex<Option<lapin::Connection>>,
}

impl BrokerProbe {
    pub fn new(uri: &str) -> BrokerProbe {
        BrokerProbe {
            uri: uri.to_string(),
            conn: AsyncMutex::new(None),
        }
    }

    async fn channel(&self) -> Result<lapin::Channel, String> {
        let masked = crate::queue::amqp::mask_url(&self.uri);
        let mut conn = self.conn.lock().await;
        if !conn.as_ref().is_some_and(|c| c.status().connected()) {
            let c = tokio::time::timeout(
                Duration::from_secs(5),
                lapin::Connection::connect(&self.uri, lapin::ConnectionProperties::default()),
            )
            .await
            .map_err(|_| format!("message broker {masked}: no answer within 5 s"))?
            .map_err(|e| format!("message broker {masked}: {e}"))?;
            *conn = Some(c);
        }
        let Some(c) = conn.as_ref() else {
            return Err(format!("message broker {masked}: not connected"));
        };
        c.create_channel()
            .await
            .map_err(|e| format!("message broker {masked}: {e}"))
    }

    /// The broker answers.
    pub async fn check(&self) -> Result<(), String> {
        let ch = self.channel().await?;
        let _ = ch.close(200, "".into()).await;
        Ok(())
    }

    /// Ready messages of each queue that exists on the broker.
    pub async fn depths(&self, queues: &[String]) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for q in queues {
            // A passive declare of a missing queue closes the channel: one
            // channel per queue.
            let Ok(ch) = self.channel().await else {
                return out;
            };
            let passive = lapin::options::QueueDeclareOptions {
                passive: true,
                ..Default::default()
            };
            if let Ok(info) = ch
                .queue_declare(q.as_str().into(), passive, Default::default())
                .await
            {
                out.insert(q.clone(), u64::from(info.message_count()));
                let _ = ch.close(200, "".into()).await;
            }
        }
        out
    }
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
            let e = check_listen(&a, None).unwrap_err();
            assert!(
                e.contains("--api-token-file") && e.contains(TOKEN_ENV),
                "{e}"
            );
            assert!(check_listen(&a, Some(&token)).is_ok());
        }
    }

    #[test]
    fn tokens_compare_exactly() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(!constant_time_eq(b"", b"a"));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn token_file_is_trimmed_and_must_not_be_empty() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("t");
        std::fs::write(&f, "s3cret\n").unwrap();
        assert_eq!(load_token(Some(&f)).unwrap().unwrap().expose(), "s3cret");
        std::fs::write(&f, "\n").unwrap();
        assert!(load_token(Some(&f)).unwrap_err().contains("empty"));
        let e = load_token(Some(&dir.path().join("none"))).unwrap_err();
        assert!(e.contains("--api-token-file"), "{e}");
    }
}
