//! A Keycloak-like OAuth2 token endpoint and a bearer-token gate.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};

/// The realm the server answers for.
pub const REALM: &str = "test";

/// Tokens a server issued, with their expiry: what a resource server
/// (the STOW receiver behind [`require_bearer`]) accepts.
#[derive(Default)]
pub struct ValidTokens {
    tokens: Mutex<HashMap<String, Instant>>,
    /// Requests let through / answered 401 by [`require_bearer`].
    pub accepted: AtomicUsize,
    pub rejected: AtomicUsize,
}

impl ValidTokens {
    pub fn add(&self, token: &str, lifetime: Duration) {
        self.tokens
            .lock()
            .unwrap()
            .insert(token.to_string(), Instant::now() + lifetime);
    }

    /// True if `token` was issued and has not expired or been revoked.
    pub fn is_valid(&self, token: &str) -> bool {
        self.tokens
            .lock()
            .unwrap()
            .get(token)
            .is_some_and(|exp| Instant::now() < *exp)
    }

    pub fn revoke(&self, token: &str) {
        self.tokens.lock().unwrap().remove(token);
    }

    /// Revokes every token issued so far (a key rotation): the next
    /// request with a cached token gets 401.
    pub fn revoke_all(&self) {
        self.tokens.lock().unwrap().clear();
    }

    /// Every token issued and not revoked (to look for them where they
    /// must not be).
    pub fn all(&self) -> Vec<String> {
        self.tokens.lock().unwrap().keys().cloned().collect()
    }
}

struct Shared {
    client_id: String,
    secret: String,
    /// For the password grant: user and password.
    user: Mutex<Option<(String, String)>>,
    expires_in: AtomicU64,
    issued: AtomicUsize,
    /// Token requests received, successful or not.
    requests: AtomicUsize,
    /// Held before answering, to make concurrent requests overlap.
    delay_ms: AtomicU64,
    valid: Arc<ValidTokens>,
}

/// A token endpoint on loopback: `POST /realms/test/protocol/openid-connect/token`
/// (Keycloak's path; [`url`](Self::url)), also at `/token` for a generic
/// token URL. Checks client ID and secret (form fields or HTTP Basic),
/// and for the password grant user and password; answers like Keycloak.
pub struct TokenServer {
    pub addr: SocketAddr,
    /// `http://<addr>`, or what [`serve`](Self::serve) was given.
    base: String,
    shared: Arc<Shared>,
    _server: super::ServerGuard,
}

impl TokenServer {
    /// Starts a server for the confidential client `client_id` /
    /// `secret`, issuing tokens that live `expires_in` seconds.
    pub async fn start(client_id: &str, secret: &str, expires_in: u64) -> TokenServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        TokenServer::serve(
            client_id,
            secret,
            expires_in,
            listener,
            addr,
            format!("http://{addr}"),
        )
    }

    /// The same server on `listener` (a TLS one, say) bound to `addr`,
    /// reached at `base` (`https://127.0.0.1:port`).
    pub fn serve<L>(
        client_id: &str,
        secret: &str,
        expires_in: u64,
        listener: L,
        addr: SocketAddr,
        base: String,
    ) -> TokenServer
    where
        L: axum::serve::Listener,
        L::Addr: std::fmt::Debug,
    {
        let shared = Arc::new(Shared {
            client_id: client_id.into(),
            secret: secret.into(),
            user: Mutex::new(None),
            expires_in: AtomicU64::new(expires_in),
            issued: AtomicUsize::new(0),
            requests: AtomicUsize::new(0),
            delay_ms: AtomicU64::new(0),
            valid: Arc::default(),
        });
        let app = Router::new()
            .route(
                "/realms/{realm}/protocol/openid-connect/token",
                axum::routing::post(keycloak_token),
            )
            .route("/token", axum::routing::post(generic_token))
            .with_state(shared.clone());
        TokenServer {
            addr,
            base,
            shared,
            _server: super::serve_until_dropped(listener, app),
        }
    }

    /// The Keycloak server URL (`dcmURI` with `dcmKeycloakRealm: test`).
    pub fn base_url(&self) -> String {
        self.base.clone()
    }

    /// The token URL of realm [`REALM`].
    pub fn url(&self) -> String {
        format!(
            "{}/realms/{REALM}/protocol/openid-connect/token",
            self.base_url()
        )
    }

    /// A generic token URL (`dcmURI` without `dcmKeycloakRealm`).
    pub fn generic_url(&self) -> String {
        format!("{}/token", self.base_url())
    }

    /// Tokens issued so far.
    pub fn issued(&self) -> usize {
        self.shared.issued.load(Ordering::SeqCst)
    }

    /// Token requests received so far, refused ones included.
    pub fn requests(&self) -> usize {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// The lifetime of tokens issued from now on.
    pub fn set_expires_in(&self, secs: u64) {
        self.shared.expires_in.store(secs, Ordering::SeqCst);
    }

    /// How long each token request is held before it is answered.
    pub fn set_delay(&self, delay: Duration) {
        self.shared
            .delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    /// Accepts the password grant for `user` / `password`.
    pub fn set_user(&self, user: &str, password: &str) {
        *self.shared.user.lock().unwrap() = Some((user.into(), password.into()));
    }

    /// The tokens issued, for [`require_bearer`].
    pub fn tokens(&self) -> Arc<ValidTokens> {
        self.shared.valid.clone()
    }
}

fn form(body: &str) -> HashMap<String, String> {
    url_decode_pairs(body)
}

/// Decodes `application/x-www-form-urlencoded`.
fn url_decode_pairs(body: &str) -> HashMap<String, String> {
    let decode = |s: &str| {
        let b = s.as_bytes();
        let mut out = Vec::with_capacity(b.len());
        let mut i = 0;
        while i < b.len() {
            match b[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < b.len() => {
                    let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz");
                    match u8::from_str_radix(hex, 16) {
                        Ok(v) => {
                            out.push(v);
                            i += 2;
                        }
                        Err(_) => out.push(b'%'),
                    }
                }
                c => out.push(c),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    };
    body.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    (
        status,
        axum::Json(serde_json::json!({
            "error": error,
            "error_description": description,
        })),
    )
        .into_response()
}

async fn keycloak_token(
    State(s): State<Arc<Shared>>,
    Path(realm): Path<String>,
    headers: HeaderMap,
    body: String,
) -> Response {
    if realm != REALM {
        s.requests.fetch_add(1, Ordering::SeqCst);
        return oauth_error(StatusCode::NOT_FOUND, "Realm does not exist", "");
    }
    token(s, headers, body).await
}

async fn generic_token(State(s): State<Arc<Shared>>, headers: HeaderMap, body: String) -> Response {
    token(s, headers, body).await
}

async fn token(s: Arc<Shared>, headers: HeaderMap, body: String) -> Response {
    use base64::Engine;
    s.requests.fetch_add(1, Ordering::SeqCst);
    let delay = s.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let f = form(&body);
    // Client authentication: HTTP Basic, else the form fields.
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|b| {
            b.split_once(':')
                .map(|(u, p)| (u.to_string(), p.to_string()))
        });
    let (id, secret) = match basic {
        Some((u, p)) => (Some(u), Some(p)),
        None => (f.get("client_id").cloned(), f.get("client_secret").cloned()),
    };
    if id.as_deref() != Some(s.client_id.as_str()) || secret.as_deref() != Some(s.secret.as_str()) {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "unauthorized_client",
            "Invalid client or Invalid client credentials",
        );
    }
    match f.get("grant_type").map(String::as_str) {
        Some("client_credentials") => {}
        Some("password") => {
            let user = s.user.lock().unwrap().clone();
            let ok = user.is_some_and(|(u, p)| {
                f.get("username") == Some(&u) && f.get("password") == Some(&p)
            });
            if !ok {
                return oauth_error(
                    StatusCode::UNAUTHORIZED,
                    "invalid_grant",
                    "Invalid user credentials",
                );
            }
        }
        _ => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "Unsupported grant_type",
            );
        }
    }
    let n = s.issued.fetch_add(1, Ordering::SeqCst) + 1;
    let expires_in = s.expires_in.load(Ordering::SeqCst);
    let token = format!("tok-{n}-{:016x}", rand::random::<u64>());
    s.valid.add(&token, Duration::from_secs(expires_in));
    axum::Json(serde_json::json!({
        "access_token": token,
        "expires_in": expires_in,
        "refresh_expires_in": 0,
        "token_type": "Bearer",
        "not-before-policy": 0,
        "scope": "profile email",
    }))
    .into_response()
}

/// Answers 401 (with `WWW-Authenticate: Bearer`) unless the request
/// carries `Authorization: Bearer <token>` with a token in `valid`.
/// Use with `axum::middleware::from_fn_with_state(valid, check_bearer)`,
/// or [`require_bearer`].
pub async fn check_bearer(
    State(valid): State<Arc<ValidTokens>>,
    req: Request,
    next: Next,
) -> Response {
    let ok = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| valid.is_valid(t));
    if !ok {
        valid.rejected.fetch_add(1, Ordering::SeqCst);
        return (
            StatusCode::UNAUTHORIZED,
            [(
                header::WWW_AUTHENTICATE,
                "Bearer error=\"invalid_token\", error_description=\"Token verification failed\"",
            )],
        )
            .into_response();
    }
    valid.accepted.fetch_add(1, Ordering::SeqCst);
    next.run(req).await
}

/// `router` (e.g. `stowrsd::router(..)`) behind bearer tokens from `valid`.
pub fn require_bearer(router: Router, valid: Arc<ValidTokens>) -> Router {
    router.layer(middleware::from_fn_with_state(valid, check_bearer))
}
