//! The control API's bearer token as the service and its clients read it:
//! from `--api-token-file` (first line, surrounding whitespace removed) or
//! the environment variable [`TOKEN_ENV`].
//!
//! Shared by `serve` (which requires it) and the `tasks` client (which
//! sends it), so that neither depends on the other's module. It reads a
//! file and the environment; it never logs the token, and its errors never
//! hold it.

use std::path::{Path, PathBuf};

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
    let token = token.trim();
    if token.is_empty() {
        return Err(TokenError::Empty(origin));
    }
    if token.contains(char::is_whitespace) || !token.is_ascii() {
        return Err(TokenError::Malformed(origin));
    }
    Ok(Some(Secret::new(token)))
}

/// A token file's text, for every token the service reads (the control
/// API's, the receiver's): refused with `InvalidData` past
/// [`MAX_TOKEN_FILE_BYTES`] instead of read whole. Blocking.
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

#[cfg(test)]
mod tests {
    use super::*;

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
