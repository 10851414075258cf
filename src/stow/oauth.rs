//! OAuth2 access tokens for web apps with a `dcmKeycloakClientID`.
//!
//! A [`TokenSource`] gets tokens from the token endpoint of the web app's
//! [`KeycloakClient`] (Keycloak's, or any OAuth2 server's) with the
//! `client_credentials` or `password` grant, and caches them.
//!
//! # Why a token is asked for per request
//!
//! dcm4chee-arc fetches one token when an export task starts and sends it
//! with every request of that task: an export that runs longer than the
//! token lives (Keycloak's default is five minutes) fails with 401 from then
//! on. Here every request asks [`TokenSource::header`] for its header. The
//! cached token is returned while it has a safe margin left (at least 30 s
//! or a tenth of its lifetime, but never more than half of it) and is
//! refreshed ahead of expiry otherwise, so an export that outlives many
//! tokens keeps going, and only one request per refresh waits for the token
//! endpoint: concurrent callers share one fetch, and its failure. A 401 from
//! the destination (the token was revoked, or the clocks disagree) is
//! answered with [`TokenSource::invalidate`] and one retry with a fresh
//! token.
//!
//! Neither the token nor the client secret or password is ever logged or
//! put into an error: headers are marked sensitive, and an error response
//! of the token endpoint is shown truncated with any echoed secret masked.
//!
//! # Where the secret may go
//!
//! The token request carries the client secret (or a user's password), so
//! the endpoint is held to more than a STOW destination:
//!
//! - TLS is the web app's: the system's roots plus `--tls-ca-file`, the
//!   client certificate, and the Keycloak client's `dcmTLSAllowAnyHostname`
//!   (skips the host name check only: the chain must still lead to a
//!   trusted CA) and `dcmTLSDisableTrustManager` (no certificate check at
//!   all), with the meanings they have for STOW ([`super::tls`]).
//! - A plain `http://` token URL is refused unless its host is this one
//!   (`localhost` or a loopback address: the form never leaves the host)
//!   or the web app says `allow-insecure-token-url=true`.
//! - Redirects are not followed: a 307 or 308 would send the form, secret
//!   and all, to wherever the `Location` points. A 3xx is an error naming
//!   the status and the host it pointed to.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderValue, LOCATION};

use super::body::{self, ReadError};
use super::tls::{self, TlsSettings};
use crate::config::Secret;
use crate::config::model::{Grant, KeycloakClient};

/// A token is refreshed when it has less than this left ...
const MIN_MARGIN: Duration = Duration::from_secs(30);
/// ... or less than this fraction (1/n) of its lifetime, whichever is more,
/// but at most half of its lifetime (so a short-lived token is still reused).
const MARGIN_FRACTION: u32 = 10;
/// The lifetime assumed when the response has no `expires_in` (it is
/// optional in RFC 6749).
const DEFAULT_LIFETIME: Duration = Duration::from_secs(60);
/// A token reply larger than this is refused unread: a token response
/// (Keycloak's, with a signed JWT of many claims) is a few KiB.
pub const MAX_TOKEN_REPLY_BYTES: usize = 1024 * 1024;
/// How much of a redirect's `Location` host is shown.
const MAX_LOCATION_CHARS: usize = 100;
/// How much of an error response is shown.
const MAX_ERROR_BODY: usize = 512;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A token request is small: one deadline for the whole exchange.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Why no access token could be had. Names the token URL; never contains
/// the client secret, the password or a token.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TokenError {
    #[error("token endpoint {url}: invalid configuration: {reason}")]
    Config { url: String, reason: String },
    #[error("token endpoint {url}: {reason}")]
    Transport { url: String, reason: String },
    #[error("token endpoint {url} answered HTTP {status}: {body}")]
    Status {
        url: String,
        status: u16,
        /// The response body, truncated, secrets masked.
        body: String,
    },
    #[error("token endpoint {url}: invalid token response: {reason}")]
    Response { url: String, reason: String },
    #[error(
        "token endpoint {url}: plain http:// would send the client secret unencrypted to another host: use https://, or set dcmProperty allow-insecure-token-url=true on the web application to allow it"
    )]
    InsecureUrl { url: String },
    #[error(
        "token endpoint {url} answered HTTP {status} redirecting to {location}: redirects are not followed, the request carries the client secret; configure the token URL itself"
    )]
    Redirect {
        url: String,
        status: u16,
        /// The host (and port) of the `Location`, never its path or query.
        location: String,
    },
    #[error("token endpoint {url}: the reply exceeds the limit of {limit} bytes")]
    TooLarge { url: String, limit: usize },
}

impl TokenError {
    /// The HTTP status of the token endpoint's answer, if it answered with an error.
    pub fn status(&self) -> Option<u16> {
        match self {
            TokenError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Whether asking again later may succeed: not for a refused client
    /// (4xx), a configuration the service refuses (an insecure URL, a
    /// redirect), and not for a broken configuration; yes for an endpoint
    /// that is unreachable, failing or answering nonsense, which may pass.
    pub fn is_worth_retrying(&self) -> bool {
        match self {
            TokenError::Config { .. } | TokenError::InsecureUrl { .. } => false,
            TokenError::Redirect { .. } => false,
            TokenError::Status { status, .. } => !(400..500).contains(status),
            TokenError::Transport { .. }
            | TokenError::Response { .. }
            | TokenError::TooLarge { .. } => true,
        }
    }
}

/// How the token endpoint may be reached: `serve`'s TLS settings
/// (`--tls-ca-file`, `--tls-client-cert`, `--tls-client-key`) and whether a
/// plain `http://` token URL to another host is allowed (the web app's
/// `allow-insecure-token-url=true`).
#[derive(Debug, Clone, Default)]
pub struct TokenTransport {
    pub tls: TlsSettings,
    pub allow_insecure_url: bool,
}

/// Access tokens of one [`KeycloakClient`], cached and refreshed ahead of
/// expiry. Cheap to clone: clones share the cache.
#[derive(Clone)]
pub struct TokenSource {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    url: String,
    /// `url` with any user info masked, for messages.
    shown_url: String,
    /// The encoded form body; holds the secret and password.
    form: Secret,
    /// Values masked in error bodies that might echo them.
    secrets: Vec<Secret>,
    state: Mutex<State>,
    /// Held while a token is fetched: concurrent callers share one fetch.
    fetching: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct State {
    token: Option<Cached>,
    /// Fetches completed so far, successful or not.
    fetches: u64,
    /// The error of the last fetch, when it failed.
    last_error: Option<TokenError>,
}

struct Cached {
    header: HeaderValue,
    refresh_at: Instant,
}

impl State {
    fn fresh(&self) -> Option<HeaderValue> {
        self.token
            .as_ref()
            .filter(|t| Instant::now() < t.refresh_at)
            .map(|t| t.header.clone())
    }
}

impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSource")
            .field("url", &self.inner.shown_url)
            .finish_non_exhaustive()
    }
}

impl TokenSource {
    /// A token source for `client`, with its own HTTP client (the token
    /// endpoint is another server than the STOW destination) reached as
    /// `transport` allows. Nothing is fetched until the first
    /// [`header`](Self::header). Reads the system's root certificates and
    /// the CA files: call it off the async runtime.
    pub fn new(
        client: &KeycloakClient,
        transport: &TokenTransport,
    ) -> Result<TokenSource, TokenError> {
        let shown_url = crate::redact::mask_url(&client.token_url);
        let config_err = |reason: String| TokenError::Config {
            url: shown_url.clone(),
            reason,
        };
        let url = reqwest::Url::parse(&client.token_url)
            .map_err(|e| config_err(format!("not a URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(config_err("not an http:// or https:// URL".into()));
        }
        if url.scheme() == "http" && !transport.allow_insecure_url && !is_this_host(&url) {
            return Err(TokenError::InsecureUrl { url: shown_url });
        }
        let mut b = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("stow-exporter/", env!("CARGO_PKG_VERSION")));
        if url.scheme() == "https" {
            let config = tls::client_config(
                &transport.tls,
                client.allow_any_hostname,
                client.disable_trust_manager,
            )
            .map_err(|e| config_err(format!("TLS: {e}")))?;
            b = b.tls_backend_preconfigured(config);
        }
        let http = b
            .build()
            .map_err(|e| config_err(format!("cannot build HTTP client: {}", error_chain(e))))?;

        let mut pairs: Vec<(&str, &str)> = Vec::new();
        let mut secrets = Vec::new();
        match &client.grant {
            Grant::ClientCredentials => pairs.push(("grant_type", "client_credentials")),
            Grant::Password { user, password } => {
                pairs.push(("grant_type", "password"));
                pairs.push(("username", user));
                pairs.push(("password", password.expose()));
                secrets.push(password.clone());
            }
        }
        pairs.push(("client_id", &client.client_id));
        if let Some(s) = &client.secret {
            pairs.push(("client_secret", s.expose()));
            secrets.push(s.clone());
        }
        let form = Secret::new(form_encode(&pairs));
        // A server may echo a value form-encoded: mask that form too.
        for s in secrets.clone() {
            let enc = form_encode_value(s.expose());
            if enc != s.expose() {
                secrets.push(Secret::new(enc));
            }
        }
        secrets.retain(|s| !s.expose().is_empty());
        Ok(TokenSource {
            inner: Arc::new(Inner {
                http,
                url: client.token_url.clone(),
                shown_url,
                form,
                secrets,
                state: Mutex::default(),
                fetching: tokio::sync::Mutex::new(()),
            }),
        })
    }

    /// The token URL (user info masked), for messages.
    pub fn token_url(&self) -> &str {
        &self.inner.shown_url
    }

    /// The `Authorization` header for the next request: `Bearer <token>`,
    /// marked sensitive. The cached token while it has enough time left,
    /// else a new one; callers arriving during a fetch wait for it and share
    /// its token or its error.
    pub async fn header(&self) -> Result<HeaderValue, TokenError> {
        let seen = {
            let state = self.state();
            if let Some(h) = state.fresh() {
                return Ok(h);
            }
            state.fetches
        };
        let _fetching = self.inner.fetching.lock().await;
        {
            let state = self.state();
            if let Some(h) = state.fresh() {
                return Ok(h);
            }
            // A fetch finished while we waited, and failed: share its
            // error rather than asking again at once.
            if state.fetches != seen
                && let Some(e) = &state.last_error
            {
                return Err(e.clone());
            }
        }
        let result = self.fetch().await;
        let mut state = self.state();
        state.fetches += 1;
        match result {
            Ok(cached) => {
                let h = cached.header.clone();
                state.token = Some(cached);
                state.last_error = None;
                Ok(h)
            }
            Err(e) => {
                state.token = None;
                state.last_error = Some(e.clone());
                Err(e)
            }
        }
    }

    /// Forgets the cached token if it is still `used`, the header of a
    /// request the destination refused (401): the next
    /// [`header`](Self::header) fetches a new one. A token already replaced
    /// is left alone, so concurrent 401s for one token cause one refresh.
    pub fn invalidate(&self, used: &HeaderValue) {
        let mut state = self.state();
        if state.token.as_ref().is_some_and(|t| t.header == *used) {
            state.token = None;
            tracing::debug!(token_url = %self.inner.shown_url, "token refused by the destination, dropped");
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One token request.
    async fn fetch(&self) -> Result<Cached, TokenError> {
        let inner = &*self.inner;
        let url = || inner.shown_url.clone();
        let started = Instant::now();
        let resp = inner
            .http
            .post(&inner.url)
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(ACCEPT, "application/json")
            .body(inner.form.expose().to_string())
            .send()
            .await
            .map_err(|e| TokenError::Transport {
                url: url(),
                reason: error_chain(e),
            })?;
        let status = resp.status();
        if status.is_redirection() {
            let location = resp
                .headers()
                .get(LOCATION)
                .and_then(|v| v.to_str().ok())
                .map_or_else(
                    || "(no Location)".to_string(),
                    |l| location_host(&inner.url, l),
                );
            return Err(TokenError::Redirect {
                url: url(),
                status: status.as_u16(),
                location,
            });
        }
        let body = body::read_limited(resp, MAX_TOKEN_REPLY_BYTES)
            .await
            .map_err(|e| match e {
                ReadError::TooLarge { limit, .. } => TokenError::TooLarge { url: url(), limit },
                ReadError::Transport(e) => TokenError::Transport {
                    url: url(),
                    reason: format!(
                        "HTTP {status}: reading the response failed: {}",
                        error_chain(e)
                    ),
                },
            })?;
        if !status.is_success() {
            return Err(TokenError::Status {
                url: url(),
                status: status.as_u16(),
                body: self.shown_body(&body),
            });
        }
        let response_err = |reason: String| TokenError::Response { url: url(), reason };
        // Parsed as a Value, so that no message of a typed parse can echo
        // a token.
        let json: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|_| response_err(format!("HTTP {status}: the body is not JSON")))?;
        let token = match json.get("access_token") {
            Some(serde_json::Value::String(t)) if !t.is_empty() => t,
            _ => return Err(response_err("no access_token".into())),
        };
        match json.get("token_type") {
            None => {}
            Some(serde_json::Value::String(t)) if t.eq_ignore_ascii_case("bearer") => {}
            Some(serde_json::Value::String(t)) => {
                let t: String = t.chars().take(32).collect();
                return Err(response_err(format!(
                    "token_type {t:?} is not supported (Bearer only)"
                )));
            }
            Some(_) => return Err(response_err("token_type is not a string".into())),
        }
        let lifetime = match json.get("expires_in") {
            None | Some(serde_json::Value::Null) => DEFAULT_LIFETIME,
            Some(v) => {
                let secs = v
                    .as_f64()
                    .or_else(|| v.as_str().and_then(|s| s.trim().parse::<f64>().ok()))
                    .filter(|s| s.is_finite() && *s >= 0.0)
                    .ok_or_else(|| response_err("expires_in is not a number of seconds".into()))?;
                Duration::from_secs_f64(secs.min(1e9))
            }
        };
        let mut header = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
            response_err("access_token has characters not allowed in an HTTP header".into())
        })?;
        header.set_sensitive(true);
        tracing::debug!(
            token_url = %inner.shown_url,
            "token refreshed, expires in {} s",
            lifetime.as_secs()
        );
        Ok(Cached {
            header,
            // Counted from the request, not the answer: the token's clock
            // started no later than that.
            refresh_at: started + lifetime - refresh_margin(lifetime),
        })
    }

    /// An error body for a message: one line, secrets masked, truncated.
    fn shown_body(&self, body: &[u8]) -> String {
        let mut s = String::from_utf8_lossy(body).into_owned();
        for secret in &self.inner.secrets {
            s = s.replace(secret.expose(), "******");
        }
        let s = s.split_whitespace().collect::<Vec<_>>().join(" ");
        if s.chars().count() > MAX_ERROR_BODY {
            let cut: String = s.chars().take(MAX_ERROR_BODY).collect();
            format!("{cut}...")
        } else if s.is_empty() {
            "(empty body)".into()
        } else {
            s
        }
    }
}

/// How long before expiry a token is replaced: at least [`MIN_MARGIN`] or
/// 1/[`MARGIN_FRACTION`] of the lifetime, at most half of it.
fn refresh_margin(lifetime: Duration) -> Duration {
    MIN_MARGIN.max(lifetime / MARGIN_FRACTION).min(lifetime / 2)
}

/// Whether `url` names this host: `localhost` or a loopback address.
fn is_this_host(url: &reqwest::Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    match bare.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => host.eq_ignore_ascii_case("localhost"),
    }
}

/// The host (and port) a `Location` points to, resolved against the token
/// URL, for a message; its path and query may carry anything and are left
/// out.
fn location_host(base: &str, location: &str) -> String {
    let joined = reqwest::Url::parse(base).and_then(|b| b.join(location));
    let shown = match &joined {
        Ok(u) => match (u.host_str(), u.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_string(),
            (None, _) => "(a Location without a host)".to_string(),
        },
        Err(_) => "(an invalid Location)".to_string(),
    };
    crate::text::clip(&shown, MAX_LOCATION_CHARS)
}

/// A reqwest error with its causes, without the URL (the caller names it).
fn error_chain(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut s = if e.is_timeout() {
        "timeout".to_string()
    } else if e.is_connect() {
        "cannot connect".to_string()
    } else {
        e.to_string()
    };
    let mut src = std::error::Error::source(&e);
    while let Some(cause) = src {
        let c = cause.to_string();
        if !s.contains(&c) {
            s.push_str(": ");
            s.push_str(&c);
        }
        src = cause.source();
    }
    s
}

/// `application/x-www-form-urlencoded` of `pairs`.
fn form_encode(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", form_encode_value(k), form_encode_value(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn form_encode_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'*' | b'-' | b'.' | b'_' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use axum::extract::State as AxState;
    use axum::http::StatusCode;
    use axum::response::{IntoResponse, Response};

    fn client(url: &str, secret: &str) -> KeycloakClient {
        KeycloakClient {
            id: "stow-exporter".into(),
            dn: "dcmKeycloakClientID=stow-exporter,dicomDeviceName=d".into(),
            token_url: url.into(),
            client_id: "stow-exporter".into(),
            secret: Some(Secret::new(secret)),
            grant: Grant::ClientCredentials,
            allow_any_hostname: false,
            disable_trust_manager: false,
        }
    }

    #[derive(Clone, Default)]
    struct Endpoint {
        issued: Arc<AtomicUsize>,
        forms: Arc<Mutex<Vec<String>>>,
    }

    /// A token endpoint: secret `s3cr3t` gets a token living `expires_in`
    /// seconds (from the path); anything else 401, echoing the request.
    async fn token(
        AxState(ep): AxState<Endpoint>,
        axum::extract::Path(expires_in): axum::extract::Path<String>,
        body: String,
    ) -> Response {
        ep.forms.lock().unwrap().push(body.clone());
        if !body.contains("client_secret=s3cr3t") {
            return (
                StatusCode::UNAUTHORIZED,
                format!("{{\"error\":\"unauthorized_client\",\"echo\":\"{body}\"}}"),
            )
                .into_response();
        }
        let n = ep.issued.fetch_add(1, Ordering::SeqCst) + 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
        let expires: serde_json::Value = serde_json::from_str(&expires_in).unwrap();
        axum::Json(serde_json::json!({
            "access_token": format!("tok-{n}"),
            "token_type": "bearer",
            "expires_in": expires,
        }))
        .into_response()
    }

    async fn endpoint() -> (String, Endpoint) {
        let ep = Endpoint::default();
        let app = axum::Router::new()
            .route("/token/{expires_in}", axum::routing::post(token))
            .with_state(ep.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (format!("http://{addr}/token"), ep)
    }

    #[test]
    fn margins() {
        assert_eq!(
            refresh_margin(Duration::from_secs(300)),
            Duration::from_secs(30)
        );
        assert_eq!(
            refresh_margin(Duration::from_secs(3600)),
            Duration::from_secs(360)
        );
        assert_eq!(
            refresh_margin(Duration::from_secs(2)),
            Duration::from_secs(1)
        );
        assert_eq!(refresh_margin(Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn form_and_url_encoding() {
        assert_eq!(
            form_encode(&[("grant_type", "password"), ("password", "a b&c=d/é")]),
            "grant_type=password&password=a+b%26c%3Dd%2F%C3%A9"
        );
    }

    #[tokio::test]
    async fn caches_and_refreshes() {
        let (url, ep) = endpoint().await;
        let src = TokenSource::new(
            &client(&format!("{url}/2"), "s3cr3t"),
            &TokenTransport::default(),
        )
        .unwrap();
        let h1 = src.header().await.unwrap();
        assert!(h1.is_sensitive());
        assert_eq!(h1, "Bearer tok-1");
        assert_eq!(src.header().await.unwrap(), "Bearer tok-1");
        assert_eq!(ep.issued.load(Ordering::SeqCst), 1);
        assert_eq!(
            ep.forms.lock().unwrap()[0],
            "grant_type=client_credentials&client_id=stow-exporter&client_secret=s3cr3t"
        );
        // Half of a 2 s lifetime is the margin: refreshed after 1 s.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert_eq!(src.header().await.unwrap(), "Bearer tok-2");
        // A 401 for a token already replaced changes nothing ...
        src.invalidate(&h1);
        assert_eq!(src.header().await.unwrap(), "Bearer tok-2");
        // ... for the current one it forces a refresh.
        src.invalidate(&HeaderValue::from_static("Bearer tok-2"));
        assert_eq!(src.header().await.unwrap(), "Bearer tok-3");
        assert_eq!(ep.issued.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn expires_in_as_string_and_zero() {
        let (url, ep) = endpoint().await;
        let src = TokenSource::new(
            &client(&format!("{url}/\"60\""), "s3cr3t"),
            &TokenTransport::default(),
        )
        .unwrap();
        src.header().await.unwrap();
        src.header().await.unwrap();
        assert_eq!(ep.issued.load(Ordering::SeqCst), 1);
        // A token that expires at once is never reused.
        let src = TokenSource::new(
            &client(&format!("{url}/0"), "s3cr3t"),
            &TokenTransport::default(),
        )
        .unwrap();
        src.header().await.unwrap();
        src.header().await.unwrap();
        assert_eq!(ep.issued.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn refused_secret_is_named_without_the_secret() {
        let (url, _ep) = endpoint().await;
        let src = TokenSource::new(
            &client(&format!("{url}/2"), "wr0ng s/cret"),
            &TokenTransport::default(),
        )
        .unwrap();
        let e = src.header().await.unwrap_err();
        let msg = e.to_string();
        assert_eq!(e.status(), Some(401));
        assert!(
            msg.contains(&format!("{url}/2")) && msg.contains("401"),
            "{msg}"
        );
        assert!(msg.contains("unauthorized_client"), "{msg}");
        assert!(
            !msg.contains("wr0ng") && !msg.contains("s/cret") && !msg.contains("s%2Fcret"),
            "secret echoed: {msg}"
        );
    }

    #[tokio::test]
    async fn concurrent_callers_share_one_fetch_and_its_failure() {
        let (url, ep) = endpoint().await;
        let src = TokenSource::new(
            &client(&format!("{url}/60"), "s3cr3t"),
            &TokenTransport::default(),
        )
        .unwrap();
        let all = futures_util::future::join_all((0..10).map(|_| src.header())).await;
        assert!(all.iter().all(|h| h.as_ref().unwrap() == "Bearer tok-1"));
        assert_eq!(ep.issued.load(Ordering::SeqCst), 1);

        let bad = TokenSource::new(
            &client(&format!("{url}/60"), "nope"),
            &TokenTransport::default(),
        )
        .unwrap();
        let before = ep.forms.lock().unwrap().len();
        let all = futures_util::future::join_all((0..10).map(|_| bad.header())).await;
        assert!(
            all.iter()
                .all(|r| r.as_ref().unwrap_err().status() == Some(401))
        );
        assert_eq!(ep.forms.lock().unwrap().len() - before, 1);
    }

    #[tokio::test]
    async fn unreachable_endpoint_and_bad_url() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/token", listener.local_addr().unwrap());
        drop(listener);
        let e = TokenSource::new(&client(&url, "s3cr3t"), &TokenTransport::default())
            .unwrap()
            .header()
            .await
            .unwrap_err();
        assert!(matches!(e, TokenError::Transport { .. }), "{e}");
        assert!(
            e.to_string()
                .starts_with(&format!("token endpoint {url}: ")),
            "{e}"
        );
        assert!(
            TokenSource::new(
                &client("ftp://x/token", "s3cr3t"),
                &TokenTransport::default()
            )
            .is_err()
        );
    }

    #[test]
    fn debug_shows_no_secret() {
        let src = TokenSource::new(
            &client("https://u:pw@kc/token", "s3cr3t"),
            &TokenTransport::default(),
        )
        .unwrap();
        let d = format!("{src:?}");
        assert!(!d.contains("s3cr3t") && !d.contains("pw"), "{d}");
    }
}
