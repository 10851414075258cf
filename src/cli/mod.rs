//! The commands of the `stow-exporter` binary: its arguments ([`args`])
//! and one function per command, so that `main.rs` only parses, sets up
//! logging and the runtime, and calls [`run`].
//!
//! - [`serve`]: `serve` and `stowrsd`, the long-running commands;
//! - [`export`]: `export`, publishing a task, and with `--wait`
//!   following it ([`wait`]);
//! - [`tasks`]: the `tasks` group, a client of a running service's
//!   control API;
//! - [`import`], [`check_config`], [`transcode`]: the other commands.
//!
//! They live in the library so that the logic (error wording, table
//! layout, exit codes) is unit-testable. Commands call into the library's
//! modules and never the other way round: nothing below `cli` imports it.

pub mod args;
pub mod check_config;
pub mod export;
pub mod import;
pub mod serve;
pub mod tasks;
pub mod transcode;
pub mod wait;

use std::path::PathBuf;
use std::process::ExitCode;

use args::Command;

/// Errors of a command, printed by the binary as `error: ...`.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("--ldap-password-file {}: {source}", .path.display())]
    PasswordFile {
        path: PathBuf,
        source: std::io::Error,
    },
    /// `--database` is not a PostgreSQL URL, or its password cannot be
    /// put in it (shown masked).
    #[error(
        "--database: expected postgres://USER[:PASSWORD]@HOST:PORT/DB (with a user to give --database-password-file to, and no password of its own then), got {0}"
    )]
    DatabaseArgument(String),
    /// `--queue` is neither "embedded" nor an AMQP URL (shown masked).
    #[error("--queue: expected \"embedded\" or an amqp:// or amqps:// URL, got {0}")]
    QueueArgument(String),
    #[error("--to {0}: expected ExplicitVRLittleEndian or ImplicitVRLittleEndian")]
    TranscodeTarget(String),
    #[error("no STOW-RS exporter {exporter:?} in {config}")]
    NoSuchExporter { exporter: String, config: String },
    #[error("{}: {source}", .path.display())]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {source}", .path.display())]
    WriteOutput {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
    #[error("server: {source}")]
    Serve { source: std::io::Error },
    #[error(transparent)]
    ListenWithoutToken(#[from] crate::api::ops::OpenWithoutToken),
    #[error("cannot write JSON: {0}")]
    Json(#[source] serde_json::Error),
    #[error(transparent)]
    Token(#[from] crate::token::TokenError),
    #[error(transparent)]
    Ldap(#[from] crate::config::ldap::LdapError),
    #[error(transparent)]
    Tls(#[from] crate::stow::tls::TlsError),
    #[error(transparent)]
    Access(#[from] crate::stowrsd::access::AccessError),
    #[error(transparent)]
    Load(#[from] crate::config::LoadError),
    #[error(transparent)]
    App(#[from] crate::app::AppError),
    #[error(transparent)]
    Archive(#[from] crate::archive::ArchiveError),
    #[error(transparent)]
    Request(#[from] crate::task::RequestError),
    #[error(transparent)]
    Queue(#[from] crate::queue::QueueError),
    #[error(transparent)]
    Wait(#[from] wait::WaitError),
    #[error(transparent)]
    Tasks(#[from] tasks::TasksError),
}

/// Runs one command; the exit status is the command's own (see each
/// command's help), errors are the caller's to print.
pub async fn run(command: Command) -> Result<ExitCode, CliError> {
    match command {
        Command::Serve(a) => serve::serve(a).await.map(|()| ExitCode::SUCCESS),
        Command::Stowrsd(a) => serve::stowrsd(a).await.map(|()| ExitCode::SUCCESS),
        Command::Import(a) => {
            let database = a.database.url().await?;
            import::import(&a.data, database.as_ref(), &a.paths).await
        }
        Command::Export(a) => export::export(a).await,
        Command::Tasks(a) => tasks::run(a)
            .await
            .map(|()| ExitCode::SUCCESS)
            .map_err(Into::into),
        Command::Transcode(a) => transcode::transcode(a).await,
        Command::CheckConfig(a) => check_config::check_config(a).await,
    }
}
