//! Who may send to the receiver. On loopback anyone on the machine may, as
//! before; off loopback a sender must present the receiver's bearer token
//! (checked by the middleware the control API uses too,
//! [`crate::token::require_token`]), and [`check_listen`] refuses to
//! bind there without one, so a receiver is never open to the network by
//! accident.
//!
//! The receiver's token is its own (`stowrsd --token-file`, `serve
//! --stowrsd-token-file`, or [`TOKEN_ENV`]), not the control API's: senders
//! keep it in their configuration (the web application's `bearer-token`
//! property), and it must not open the control API to whoever reads that.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::config::Secret;
use crate::token::{BadToken, check_text, is_loopback};

/// The environment variable that may hold the receiver's bearer token.
pub const TOKEN_ENV: &str = "STOW_EXPORTER_STOWRSD_TOKEN";

/// The option naming the token file, as the error messages give it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenOption {
    /// `stowrsd --token-file`.
    Stowrsd,
    /// `serve --stowrsd-token-file`.
    Serve,
}

impl std::fmt::Display for TokenOption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TokenOption::Stowrsd => "--token-file",
            TokenOption::Serve => "--stowrsd-token-file",
        })
    }
}

/// A token that cannot be used, or an address that needs one.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error("{option} {}: {source}", file.display())]
    Read {
        option: TokenOption,
        file: PathBuf,
        source: io::Error,
    },
    #[error("{origin}: the STOW-RS receiver's token is empty")]
    Empty { origin: String },
    #[error("{origin}: the STOW-RS receiver's token must be one line of visible ASCII characters")]
    Malformed { origin: String },
    #[error(
        "the STOW-RS receiver's address {addr} is not a loopback address: it then requires a bearer token; \
         give {option} FILE or set {TOKEN_ENV} (or bind to 127.0.0.1)"
    )]
    OpenWithoutToken {
        addr: SocketAddr,
        option: TokenOption,
    },
}

/// The token from `file` (first line, surrounding whitespace removed), else
/// from [`TOKEN_ENV`]; none when neither is set. An empty token is an
/// error, never "no token".
pub async fn load_token(
    file: Option<&Path>,
    option: TokenOption,
) -> Result<Option<Secret>, AccessError> {
    let (token, origin) = match file {
        Some(f) => (
            {
                let path = f.to_owned();
                tokio::task::spawn_blocking(move || crate::token::read_token_file(&path))
                    .await
                    .unwrap_or_else(|e| Err(io::Error::other(e)))
                    .map_err(|source| AccessError::Read {
                        option,
                        file: f.to_owned(),
                        source,
                    })?
            },
            format!("{option} {}", f.display()),
        ),
        None => match std::env::var(TOKEN_ENV) {
            Ok(t) => (t, TOKEN_ENV.to_string()),
            Err(_) => return Ok(None),
        },
    };
    match check_text(&token) {
        Ok(t) => Ok(Some(t)),
        Err(BadToken::Empty) => Err(AccessError::Empty { origin }),
        Err(BadToken::Malformed) => Err(AccessError::Malformed { origin }),
    }
}

/// The receiver may listen off loopback only with a token.
pub fn check_listen(
    addr: &SocketAddr,
    token: Option<&Secret>,
    option: TokenOption,
) -> Result<(), AccessError> {
    if is_loopback(addr) || token.is_some() {
        return Ok(());
    }
    Err(AccessError::OpenWithoutToken {
        addr: *addr,
        option,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn token_rules() {
        let loopback: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let open: SocketAddr = "0.0.0.0:1".parse().unwrap();
        let token = Secret::new("t0k");
        assert!(check_listen(&loopback, None, TokenOption::Stowrsd).is_ok());
        assert!(check_listen(&open, Some(&token), TokenOption::Stowrsd).is_ok());
        let e = check_listen(&open, None, TokenOption::Serve).unwrap_err();
        assert!(e.to_string().contains("--stowrsd-token-file"), "{e}");
        assert!(e.to_string().contains(TOKEN_ENV), "{e}");

        let tmp = tempfile::tempdir().unwrap();
        let f = tmp.path().join("token");
        std::fs::write(&f, "  secret-1\n").unwrap();
        let t = load_token(Some(&f), TokenOption::Stowrsd).await.unwrap();
        assert_eq!(t.unwrap().expose(), "secret-1");
        std::fs::write(&f, "\n").unwrap();
        let e = load_token(Some(&f), TokenOption::Stowrsd)
            .await
            .unwrap_err();
        assert!(matches!(e, AccessError::Empty { .. }), "{e}");
        std::fs::write(&f, "two words").unwrap();
        let e = load_token(Some(&f), TokenOption::Stowrsd)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("--token-file"), "{e}");
        assert!(!e.to_string().contains("two words"), "{e}");
        let e = load_token(Some(&tmp.path().join("none")), TokenOption::Serve)
            .await
            .unwrap_err();
        assert!(e.to_string().starts_with("--stowrsd-token-file "), "{e}");
    }
}
