//! Bearer tokens: the control API's as the service and its clients read it
//! (from `--api-token-file`, first line, surrounding whitespace removed, or
//! the environment variable [`TOKEN_ENV`]), the rules every token's text
//! follows ([`check_text`], also for the receiver's token), and requiring
//! one on a router ([`require_token`], for the control API and the
//! receiver alike).
//!
//! Shared by `serve`, the receiver and the `tasks` client, so that none
//! depends on another's module. It never logs a token, and its errors never
//! hold one.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Json;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::config::Secret;

/// The environment variable that may hold the control API's bearer token.
pub const TOKEN_ENV: &str = "STOW_EXPORTER_API_TOKEN";

/// Most bytes read from a token file: a token is one short line, and a
/// wrong path (a log, a device) must not be read whole into memory.
const MAX_TOKEN_FILE_BYTES: u64 = 64 * 1024;

/// Where a token came from, for messages.
#[derive(Debug, Clone)]
pub enum TokenOrigin {
    File(PathBuf),
    Env,
}

impl std::fmt::Display for TokenOrigin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenOrigin::File(p) => write!(f, "--api-token-file {}", p.display()),
            TokenOrigin::Env => f.write_str(TOKEN_ENV),
        }
    }
}

/// Why no usable token could be read.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("--api-token-file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}: the API token is empty")]
    Empty(TokenOrigin),
    #[error("{0}: the API token must be one line of visible ASCII characters")]
    Malformed(TokenOrigin),
}

/// The token from `file`, else from [`TOKEN_ENV`]; none when neither is
/// set. An empty token is an error, never "no token". Blocking (reads a
/// file): call it off the async runtime.
pub fn load_token(file: Option<&Path>) -> Result<Option<Secret>, TokenError> {
    let (token, origin) = match file {
        Some(f) => (
            read_token_file(f).map_err(|source| TokenError::Read {
                path: f.to_path_buf(),
                source,
            })?,
            TokenOrigin::File(f.to_path_buf()),
        ),
        None => match std::env::var(TOKEN_ENV) {
            Ok(t) => (t, TokenOrigin::Env),
            Err(_) => return Ok(None),
        },
    };
    match check_text(&token) {
        Ok(t) => Ok(Some(t)),
        Err(BadToken::Empty) => Err(TokenError::Empty(origin)),
        Err(BadToken::Malformed) => Err(TokenError::Malformed(origin)),
    }
}

/// What is wrong with a token's text (never the text itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadToken {
    Empty,
    Malformed,
}

/// A token as read from a file or the environment: surrounding whitespace
/// removed; it must then be one non-empty run of visible ASCII characters
/// (what an `Authorization: Bearer` header can carry).
pub fn check_text(text: &str) -> Result<Secret, BadToken> {
    let token = text.trim();
    if token.is_empty() {
        return Err(BadToken::Empty);
    }
    if token.contains(char::is_whitespace) || !token.is_ascii() {
        return Err(BadToken::Malformed);
    }
    Ok(Secret::new(token))
}

/// A token file's text, for every token the service reads (the control
/// API's, the receiver's): refused with `InvalidData` past
/// `MAX_TOKEN_FILE_BYTES` (64 KiB) instead of read whole. Blocking.
pub fn read_token_file(f: &Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(f)?
        .take(MAX_TOKEN_FILE_BYTES + 1)
        .read_to_string(&mut text)?;
    if text.len() as u64 > MAX_TOKEN_FILE_BYTES {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("more than {MAX_TOKEN_FILE_BYTES} bytes: not a token file"),
        ));
    }
    Ok(text)
}

/// Whether `addr` is a loopback address (127.0.0.0/8 or ::1).
pub fn is_loopback(addr: &SocketAddr) -> bool {
    addr.ip().is_loopback()
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

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(matches!(load_token(Some(&f)), Err(TokenError::Empty(_))));
        std::fs::write(&f, "two words\n").unwrap();
        let e = load_token(Some(&f)).unwrap_err();
        assert!(matches!(e, TokenError::Malformed(_)));
        assert!(!e.to_string().contains("two words"), "{e}");
        std::fs::write(&f, vec![b'x'; 100_000]).unwrap();
        let e = load_token(Some(&f)).unwrap_err();
        assert!(e.to_string().contains("not a token file"), "{e}");
        let e = load_token(Some(&dir.path().join("none"))).unwrap_err();
        assert!(matches!(e, TokenError::Read { .. }));
        assert!(e.to_string().contains("--api-token-file"), "{e}");
    }
}
