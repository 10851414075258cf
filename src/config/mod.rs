//! Configuration: directory entries in, an immutable [`Snapshot`] out.
//!
//! [`ConfigSource`] reads raw entries ([`entry::Directory`]) from LDIF files
//! (the same files an administrator imports with `ldapadd`); [`Snapshot::build`]
//! validates them. Loading is async and never blocks the runtime.
//! [`LiveConfig`] holds the snapshot the service runs on and replaces it
//! on reload (the control API's and `--watch`'s).
//!
//! The parsers of untrusted text are public and total (an error, never a
//! panic, for any input), for fuzzing: [`ldif::parse`],
//! [`model::parse_iso_duration`], [`crate::schedule::Schedule::parse_all`],
//! and [`snapshot_from_ldif`] for the whole path from LDIF text to a
//! validated snapshot.

pub mod entry;
pub mod ldap;
pub mod ldif;
pub mod live;
pub mod model;

use std::fmt;
use std::path::{Path, PathBuf};

pub use crate::transfer_syntax::{transfer_syntax_name, transfer_syntax_uid};
pub use entry::{Directory, Dn, RawEntry};
pub use ldap::{LdapError, LdapSource};
pub use live::LiveConfig;
pub use model::{ConfigError, Exporter, QueueDesc, Secret, Snapshot, WebApp, WebAppProps};

/// The default archive device name, as in dcm4chee-arc.
pub const DEFAULT_DEVICE_NAME: &str = "dcm4chee-arc";

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: no .ldif files found")]
    Empty { path: PathBuf },
    #[error("{file}:{line}: LDIF syntax error: {message}")]
    Ldif {
        file: String,
        line: usize,
        message: String,
    },
    #[error("{0}")]
    Apply(#[from] entry::ApplyError),
    #[error("{0}")]
    Ldap(#[from] LdapError),
    #[error("invalid configuration ({} error{}):\n{}", .0.len(), if .0.len() == 1 { "" } else { "s" }, Errors(.0))]
    Invalid(Vec<ConfigError>),
}

impl LoadError {
    /// True when the source could not be reached at all (worth a retry;
    /// a reload answers 503 rather than 409).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, LoadError::Ldap(e) if e.is_unreachable())
    }

    /// The validation errors, or this error as a single one.
    pub fn errors(&self) -> Vec<String> {
        match self {
            LoadError::Invalid(v) => v.iter().map(ToString::to_string).collect(),
            other => vec![other.to_string()],
        }
    }
}

struct Errors<'a>(&'a [ConfigError]);

impl fmt::Display for Errors<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "  - {e}")?;
        }
        Ok(())
    }
}

/// Where configuration comes from.
#[derive(Debug, Clone)]
pub enum ConfigSource {
    /// An LDIF file, or a folder whose `*.ldif` files are applied in name order.
    Ldif(PathBuf),
    /// An LDAP directory.
    Ldap(LdapSource),
}

impl fmt::Display for ConfigSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigSource::Ldif(p) => write!(f, "{}", p.display()),
            ConfigSource::Ldap(l) => write!(f, "{l}"),
        }
    }
}

impl ConfigSource {
    /// Reads the raw directory.
    pub async fn read(&self) -> Result<Directory, LoadError> {
        match self {
            ConfigSource::Ldif(path) => read_ldif(path).await,
            ConfigSource::Ldap(l) => Ok(l.read().await?),
        }
    }

    /// Reads and validates a snapshot for the archive device `device_name`.
    pub async fn load(&self, device_name: &str) -> Result<Snapshot, LoadError> {
        let dir = self.read().await?;
        Snapshot::build(&dir, device_name, &self.to_string()).map_err(LoadError::Invalid)
    }

    /// A value that changes when the source may have: for LDAP a hash of
    /// the DNs and modification stamps, for LDIF of the files' names,
    /// sizes and modification times. Cheaper than a load.
    pub async fn fingerprint(&self) -> Result<u64, LoadError> {
        use std::hash::{Hash, Hasher};
        match self {
            ConfigSource::Ldap(l) => Ok(l.fingerprint().await?),
            ConfigSource::Ldif(path) => {
                let mut h = std::collections::hash_map::DefaultHasher::new();
                for f in ldif_files(path).await? {
                    let m = tokio::fs::metadata(&f)
                        .await
                        .map_err(|source| LoadError::Io {
                            path: f.clone(),
                            source,
                        })?;
                    (f, m.len(), m.modified().ok()).hash(&mut h);
                }
                Ok(h.finish())
            }
        }
    }
}

/// The files an LDIF source consists of, in the order they are applied.
pub async fn ldif_files(path: &Path) -> Result<Vec<PathBuf>, LoadError> {
    let io = |source| LoadError::Io {
        path: path.to_path_buf(),
        source,
    };
    let meta = tokio::fs::metadata(path).await.map_err(io)?;
    if !meta.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files = Vec::new();
    let mut rd = tokio::fs::read_dir(path).await.map_err(io)?;
    while let Some(e) = rd.next_entry().await.map_err(io)? {
        let p = e.path();
        if p.extension()
            .is_some_and(|x| x.eq_ignore_ascii_case("ldif"))
        {
            files.push(p);
        }
    }
    files.sort();
    if files.is_empty() {
        return Err(LoadError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(files)
}

async fn read_ldif(path: &Path) -> Result<Directory, LoadError> {
    let mut dir = Directory::new();
    for file in ldif_files(path).await? {
        let text = tokio::fs::read_to_string(&file)
            .await
            .map_err(|source| LoadError::Io {
                path: file.clone(),
                source,
            })?;
        apply_ldif(&mut dir, &text, &file.display().to_string())?;
    }
    Ok(dir)
}

/// Parses the LDIF `text` (named `name` in errors) and applies its records
/// to `dir`, as `ldapadd`/`ldapmodify` would.
pub fn apply_ldif(dir: &mut Directory, text: &str, name: &str) -> Result<(), LoadError> {
    let records = ldif::parse(text).map_err(|e| LoadError::Ldif {
        file: name.to_string(),
        line: e.line,
        message: e.message,
    })?;
    for r in &records {
        dir.apply(r, name)?;
    }
    Ok(())
}

/// The whole configuration path on one LDIF text, without I/O: parse,
/// apply, validate for the archive device `device_name`. Any input gives a
/// snapshot or an error, never a panic (a fuzzing entry point).
pub fn snapshot_from_ldif(text: &str, device_name: &str) -> Result<Snapshot, LoadError> {
    let mut dir = Directory::new();
    apply_ldif(&mut dir, text, "<ldif>")?;
    Snapshot::build(&dir, device_name, "<ldif>").map_err(LoadError::Invalid)
}
