//! The command line's arguments: every subcommand and option of the
//! `stow-exporter` binary, as clap parses them, and their conversion into
//! the library's settings (limits, queue options, configuration source).
//!
//! Owns the option names, defaults and help texts; it runs nothing (the
//! commands are in the sibling modules) and must not reach into a running
//! service.

// The doc comments here are the command line's help texts, where
// `<queue>` or `<percent-encoded socket path>` are placeholders, not HTML.
#![allow(rustdoc::invalid_html_tags)]

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use crate::cli::CliError;
use crate::config::ldap::DEFAULT_BASE_DN;
use crate::config::{ConfigSource, DEFAULT_DEVICE_NAME, LdapSource, Secret};
use crate::http_server;
use crate::schedule::Zone;
use crate::stowrsd::{self, StowrsdOptions};

#[derive(Parser)]
#[command(
    name = "stow-exporter",
    version,
    about = "Exports DICOM objects to DICOMweb servers over STOW-RS, configured like dcm4chee-arc"
)]
pub struct Cli {
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(clap::Args, Clone)]
pub struct ConfigArgs {
    /// Configuration source: an LDIF file, a folder of *.ldif files
    /// (applied in name order), or an LDAP directory (ldap://host:port,
    /// ldaps://host:port, or ldapi://<percent-encoded socket path>).
    #[arg(long, default_value = "ldif", value_name = "PATH|URL")]
    pub config: String,
    /// dicomDeviceName of the archive device whose exporters this service runs.
    #[arg(long, default_value = DEFAULT_DEVICE_NAME)]
    pub device_name: String,
    /// Base DN of the DICOM configuration in the directory.
    #[arg(long, default_value = DEFAULT_BASE_DN, value_name = "DN")]
    pub ldap_base_dn: String,
    /// DN to bind as (simple bind); anonymous when absent. A bind DN needs
    /// a password (--ldap-password-file or LDAP_BIND_PASSWORD); without one
    /// the start is refused rather than binding anonymously.
    #[arg(long, value_name = "DN")]
    pub ldap_bind_dn: Option<String>,
    /// File holding the bind password. Without it the password comes from
    /// the environment variable LDAP_BIND_PASSWORD (never from the command
    /// line, where other users could read it).
    #[arg(long, value_name = "FILE", requires = "ldap_bind_dn")]
    pub ldap_password_file: Option<PathBuf>,
    /// Upgrade an ldap:// connection with StartTLS.
    #[arg(long)]
    pub ldap_starttls: bool,
    /// PEM file of CA certificates to trust for ldaps:// or StartTLS
    /// (default: the system's roots).
    #[arg(long, value_name = "FILE")]
    pub ldap_ca_file: Option<PathBuf>,
}

impl ConfigArgs {
    pub async fn source(&self) -> Result<ConfigSource, CliError> {
        let lower = self.config.to_ascii_lowercase();
        if !["ldap://", "ldaps://", "ldapi://"]
            .iter()
            .any(|s| lower.starts_with(s))
        {
            return Ok(ConfigSource::Ldif(PathBuf::from(&self.config)));
        }
        let password = match &self.ldap_password_file {
            Some(f) => Some(
                tokio::fs::read_to_string(f)
                    .await
                    .map_err(|source| CliError::PasswordFile {
                        path: f.clone(),
                        source,
                    })?
                    .trim_end_matches(['\r', '\n'])
                    .to_string(),
            ),
            None => std::env::var("LDAP_BIND_PASSWORD").ok(),
        };
        let mut l = LdapSource::new(&self.config);
        l.base_dn = self.ldap_base_dn.clone();
        l.bind_dn = self.ldap_bind_dn.clone();
        l.password = password.map(Secret::new);
        l.starttls = self.ldap_starttls;
        l.ca_file = self.ldap_ca_file.clone();
        // A bind DN without a password is refused here, before anything
        // starts, instead of becoming an anonymous bind.
        l.check()?;
        Ok(ConfigSource::Ldap(l))
    }
}

/// Slow, idle and too many clients, for every HTTP listener of a command.
#[derive(clap::Args, Clone)]
pub struct ListenerArgs {
    /// Seconds a client may take to send a request's headers; then it gets
    /// 408 and the connection closes.
    #[arg(long, value_name = "SECONDS", default_value_t = http_server::DEFAULT_HEADER_TIMEOUT.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub header_timeout: u64,
    /// Seconds a connection may wait for its client: between requests, in
    /// the middle of a request body (the request then fails), or for the
    /// client to read a response. Then the connection closes.
    #[arg(long, value_name = "SECONDS", default_value_t = http_server::DEFAULT_IDLE_TIMEOUT.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub idle_timeout: u64,
    /// Connections served at once per listener; more wait until one closes.
    /// Lowered at start, with a warning, to fit the open-file limit.
    #[arg(long, value_name = "N", default_value_t = http_server::DEFAULT_MAX_CONNECTIONS as u64,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_connections: u64,
}

impl ListenerArgs {
    /// The limits, fitted to the open-file limit for `listeners` listeners.
    pub fn limits(&self, listeners: usize) -> http_server::ListenerLimits {
        http_server::fit_descriptor_limit(
            http_server::ListenerLimits {
                header_timeout: std::time::Duration::from_secs(self.header_timeout),
                idle_timeout: std::time::Duration::from_secs(self.idle_timeout),
                max_connections: usize::try_from(self.max_connections).unwrap_or(usize::MAX),
            },
            listeners,
        )
    }
}

/// How `serve` keeps and hands out tasks.
#[derive(clap::Args)]
pub struct QueueArgs {
    /// How often a task may be handed out without an outcome (each of those
    /// runs ended with the process: a crash, kill -9, out of memory) before
    /// it is given up: FAILED with that reason, and over AMQP its message
    /// moved to <queue>.dlq.
    #[arg(long, value_name = "N", default_value_t = crate::queue::DEFAULT_MAX_DELIVERIES,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_deliveries: u32,
    /// How the task store waits for the disk. full (default): a task
    /// accepted (202), a recorded outcome and an AMQP acknowledgement that
    /// follows one survive an OS crash or power loss. normal: faster with
    /// many small tasks, but an OS crash or power loss may lose the last
    /// commits: tasks accepted just before (embedded queue), recorded
    /// outcomes (those tasks run again; over AMQP their records may stay
    /// SCHEDULED). A crash of the process alone loses nothing.
    #[arg(long, value_name = "full|normal", default_value = "full")]
    pub sqlite_synchronous: crate::db::Synchronous,
    /// With --database and no --queue (instances taking tasks from
    /// PostgreSQL): seconds an instance may be silent (killed, powered off,
    /// cut from the database) before another instance takes over the tasks
    /// it left IN PROCESS; each resumes after the instances already stored.
    /// Over a broker, the broker redelivers a dead instance's tasks at once.
    #[arg(long, value_name = "SECONDS", default_value_t = crate::queue::DEFAULT_TAKEOVER_AFTER.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub takeover_after: u64,
}

impl QueueArgs {
    pub fn options(&self) -> crate::queue::QueueOptions {
        crate::queue::QueueOptions {
            max_deliveries: self.max_deliveries,
            synchronous: self.sqlite_synchronous,
            takeover_after: std::time::Duration::from_secs(self.takeover_after),
            export_hook: None,
        }
    }
}

/// The warning for a password that would cross the network in clear text
/// (see `LdapSource::cleartext_password_warning`).
pub fn cleartext_warning(source: &ConfigSource) -> Option<String> {
    match source {
        ConfigSource::Ldap(l) => l.cleartext_password_warning(),
        ConfigSource::Ldif(_) => None,
    }
}

/// Longest `--watch` interval: a day (a longer one is a typo, and the
/// timer arithmetic stays far from overflow).
const MAX_WATCH_SECONDS: u64 = 86_400;

// Parsed once at start-up and matched once: the size of `serve`'s variant
// (its many options) costs nothing, and boxing would only add noise.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
pub enum Command {
    /// Run the service: workers for every queue and the control API.
    Serve(ServeArgs),
    /// Run only the built-in STOW-RS receiver.
    Stowrsd(StowrsdArgs),
    /// Import DICOM files and folders into the archive.
    Import(ImportArgs),
    /// Queue an export task, and with --wait follow it to its end.
    #[command(
        after_help = "Exit status with --wait: 0 COMPLETED, 2 WARNING, 1 FAILED or CANCELED \
(or any error), 3 --timeout passed (the task stays queued). Without --wait: 0 once the task is queued."
    )]
    Export(ExportArgs),
    /// Export tasks of a running service, over its control API.
    Tasks(crate::cli::tasks::TasksArgs),
    /// Decompress DICOM files as an export to a destination that takes only
    /// uncompressed syntaxes would, and report each (one JSON line per file).
    Transcode(TranscodeArgs),
    /// Validate the configuration and show the exporters it defines.
    CheckConfig(CheckConfigArgs),
}

/// The options of `Serve`.
#[derive(clap::Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Data directory: storage, archive index, task queue.
    #[arg(long, default_value = "data")]
    pub data: PathBuf,
    /// Address of the control API.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Also run the built-in STOW-RS receiver, storing into DIR, on the
    /// address of the `stowrsd` web application.
    #[arg(long, value_name = "DIR")]
    pub stowrsd: Option<PathBuf>,
    /// Override the built-in receiver's address.
    #[arg(long, value_name = "ADDR", requires = "stowrsd")]
    pub stowrsd_bind: Option<String>,
    /// Where the DICOM Storage SCP listens, instead of the DICOM
    /// connections of the device's network AEs (host:port, repeatable;
    /// "none" runs no SCP).
    #[arg(
        long,
        value_name = "ADDR",
        env = "STOW_EXPORTER_DICOM_LISTEN",
        value_delimiter = ','
    )]
    pub dicom_listen: Option<Vec<String>>,
    /// Storage SCP: associations open at once.
    #[arg(long, value_name = "N", default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub dicom_max_associations: u64,
    /// Storage SCP: seconds an association may be silent.
    #[arg(long, value_name = "SECONDS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86400))]
    pub dicom_idle_timeout: u64,
    /// Storage SCP: largest data set of one C-STORE (e.g. 4GiB).
    #[arg(long, value_name = "SIZE", default_value = "4GiB", value_parser = size_arg)]
    pub dicom_max_object_size: u64,
    /// The built-in receiver's limits, overwrite rule and token: the
    /// options of `stowrsd` with a `stowrsd-` prefix. The limits also
    /// bound STOW-RS into the archive (`/dcm4chee-arc/aets/{AET}/rs/studies`).
    #[command(flatten)]
    pub stowrsd_limits: ServeReceiverArgs,
    /// Reload automatically when the configuration source changes,
    /// checking every SECONDS (at most 86400).
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(0..=MAX_WATCH_SECONDS))]
    pub watch: Option<u64>,
    /// Time zone of the dcmSchedule windows: an IANA name such as
    /// Europe/Vienna, or "local" for the machine's local time.
    #[arg(long, default_value = "local", value_name = "ZONE")]
    pub time_zone: Zone,
    /// Task delivery: "embedded" (default; the SQLite queue in the data
    /// directory) or an AMQP broker URL, amqp://user:password@host:port/vhost
    /// (RabbitMQ; task records stay in the data directory). May also
    /// come from the environment, which other users cannot read.
    #[arg(
        long,
        env = "STOW_EXPORTER_QUEUE",
        hide_env_values = true,
        default_value = "embedded",
        value_name = "embedded|URL"
    )]
    pub queue: String,
    /// Objects decompressed at once, for destinations that do not take
    /// the stored transfer syntax (default: one per core).
    #[arg(long, value_name = "N")]
    pub transcode_jobs: Option<usize>,
    /// The largest object that is decompressed: its file, and its
    /// decoded pixel data, each at most this many MiB. Converted
    /// objects waiting for or in their requests hold at most this
    /// times the transcode jobs in all.
    #[arg(long, value_name = "MIB", default_value_t = 1024)]
    pub transcode_max_mib: u64,
    /// PEM file of CA certificates trusted for https web applications
    /// in addition to the system's roots (repeatable).
    #[arg(long, value_name = "PEM")]
    pub tls_ca_file: Vec<PathBuf>,
    /// PEM file of the client certificate (chain) sent to https web
    /// applications that ask for one (mutual TLS).
    #[arg(long, value_name = "PEM")]
    pub tls_client_cert: Option<PathBuf>,
    /// PEM file of the client certificate's private key (default: looked
    /// for in --tls-client-cert).
    #[arg(long, value_name = "PEM", requires = "tls_client_cert")]
    pub tls_client_key: Option<PathBuf>,
    /// File holding the control API's bearer token (default: the
    /// environment variable STOW_EXPORTER_API_TOKEN). Required when
    /// --listen is not a loopback address; when set, every request but
    /// /dcm4chee-arc/health/live must send `Authorization: Bearer <token>`.
    #[arg(long, value_name = "FILE")]
    pub api_token_file: Option<PathBuf>,
    /// After SIGTERM, how long running tasks may take to finish; then
    /// their remaining instances are left for the next start (the tasks
    /// go back to SCHEDULED).
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    pub shutdown_timeout: u64,
    /// A name under which clients reach the control API besides
    /// localhost, loopback addresses and the --listen address
    /// (repeatable; e.g. behind a reverse proxy). Without a token,
    /// requests addressed to any other name are refused (DNS rebinding),
    /// and so are state-changing requests from web pages of other origins.
    #[arg(long, value_name = "NAME", value_parser = crate::api::ops::parse_allowed_host)]
    pub allowed_host: Vec<String>,
    /// Limits of the control API and of the in-process receiver.
    #[command(flatten)]
    pub listener: ListenerArgs,
    #[command(flatten)]
    pub queue_args: QueueArgs,
    #[command(flatten)]
    pub database: DatabaseArgs,
}

/// Where task records and the archive index are kept when several
/// instances share them.
#[derive(clap::Args, Clone)]
pub struct DatabaseArgs {
    /// Keep task records and the archive index in this shared PostgreSQL
    /// database instead of the data directory (whose storage/ the
    /// instances share): postgres://USER:PASSWORD@HOST:PORT/DB (the :PASSWORD part optional). Several
    /// instances on one database share the tasks (over --queue amqp://...,
    /// or taken from the database itself). May also come from the
    /// environment; the password also from --database-password-file.
    #[arg(
        long,
        env = "STOW_EXPORTER_DATABASE",
        hide_env_values = true,
        value_name = "URL"
    )]
    pub database: Option<String>,
    /// File holding the database password (instead of in the URL).
    #[arg(long, value_name = "FILE", requires = "database")]
    pub database_password_file: Option<PathBuf>,
}

impl DatabaseArgs {
    /// The database URL with the password of --database-password-file in
    /// it, as a secret; `None` without --database.
    pub async fn url(&self) -> Result<Option<Secret>, CliError> {
        let Some(url) = &self.database else {
            return Ok(None);
        };
        let lower = url.to_ascii_lowercase();
        if !(lower.starts_with("postgres://") || lower.starts_with("postgresql://")) {
            return Err(CliError::DatabaseArgument(crate::queue::postgres::masked(
                url,
            )));
        }
        let Some(f) = &self.database_password_file else {
            return Ok(Some(Secret::new(url.clone())));
        };
        let f2 = f.clone();
        let password = tokio::task::spawn_blocking(move || crate::token::read_token_file(&f2))
            .await
            .map_err(|e| CliError::PasswordFile {
                path: f.clone(),
                source: std::io::Error::other(e),
            })?
            .map_err(|source| CliError::PasswordFile {
                path: f.clone(),
                source,
            })?;
        let password = password.trim_end_matches(['\r', '\n']);
        with_password(url, password)
            .map(|u| Some(Secret::new(u)))
            .ok_or_else(|| CliError::DatabaseArgument(crate::queue::postgres::masked(url)))
    }
}

/// `url` with `password` (percent-encoded) in its user information;
/// `None` when the URL names no user or already holds a password.
fn with_password(url: &str, password: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (user, host) = rest[..end].rsplit_once('@')?;
    if user.is_empty() || user.contains(':') {
        return None;
    }
    let encoded: String = password
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    Some(format!(
        "{scheme}://{user}:{encoded}@{host}{}",
        &rest[end..]
    ))
}

/// The options of `Stowrsd`.
#[derive(clap::Args)]
pub struct StowrsdArgs {
    /// Address to listen on. Off loopback a bearer token is required
    /// (--token-file).
    #[arg(long, default_value = "127.0.0.1:18080")]
    pub bind: String,
    /// Store each instance as DIR/<SOPInstanceUID>.dcm.
    #[arg(long, conflicts_with = "ignore", required_unless_present = "ignore")]
    pub dir: Option<PathBuf>,
    /// Read and acknowledge, but store nothing.
    #[arg(long)]
    pub ignore: bool,
    #[command(flatten)]
    pub limits: ReceiverArgs,
    #[command(flatten)]
    pub listener: ListenerArgs,
}

/// The options of `Import`.
#[derive(clap::Args)]
pub struct ImportArgs {
    #[arg(long, default_value = "data")]
    pub data: PathBuf,
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
}

/// The options of `Export`.
#[derive(clap::Args)]
pub struct ExportArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    #[arg(long, default_value = "data")]
    pub data: PathBuf,
    #[arg(long)]
    pub exporter: String,
    #[arg(long)]
    pub study: String,
    #[arg(long)]
    pub series: Option<String>,
    #[arg(long, requires = "series")]
    pub instance: Option<String>,
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[arg(long)]
    pub batch_id: Option<String>,
    /// Task delivery: "embedded" (default; the SQLite queue in the data
    /// directory) or an AMQP broker URL, amqp://user:password@host:port/vhost
    /// (RabbitMQ; task records stay in the data directory). May also
    /// come from the environment, which other users cannot read.
    #[arg(
        long,
        env = "STOW_EXPORTER_QUEUE",
        hide_env_values = true,
        default_value = "embedded",
        value_name = "embedded|URL"
    )]
    pub queue: String,
    /// Wait until the task has ended (a running `serve` on the same
    /// data directory runs it), showing progress on a terminal; then
    /// print the final task and exit with a status for its outcome.
    #[arg(long)]
    pub wait: bool,
    /// With --wait: give up after SECONDS (exit status 3); the task
    /// stays queued.
    #[arg(long, value_name = "SECONDS", requires = "wait")]
    pub timeout: Option<u64>,
}

/// The options of `Transcode`.
#[derive(clap::Args)]
pub struct TranscodeArgs {
    /// Target: ExplicitVRLittleEndian or ImplicitVRLittleEndian.
    #[arg(long, default_value = "ExplicitVRLittleEndian")]
    pub to: String,
    /// Write each result as DIR/<file name>.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Objects decoded at once (default: one per core).
    #[arg(long)]
    pub jobs: Option<usize>,
    /// Decode every file this many times (for benchmarks).
    #[arg(long, default_value_t = 1)]
    pub repeat: u32,
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
}

/// The options of `CheckConfig`.
#[derive(clap::Args)]
pub struct CheckConfigArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
}

/// The receiver's limits, overwrite rule and token as `stowrsd` takes them.
#[derive(clap::Args, Clone)]
pub struct ReceiverArgs {
    /// Most parts (instances) one request may hold; a request with more is
    /// answered 413 and not read further.
    #[arg(long, value_name = "N", default_value_t = stowrsd::limits::DEFAULT_MAX_PARTS)]
    pub max_parts: usize,
    /// Most bytes one request body may hold (such as 500MB or 16GiB);
    /// a larger one is answered 413 and not read further.
    #[arg(long, value_name = "SIZE", default_value_t = stowrsd::limits::DEFAULT_MAX_REQUEST_BYTES, value_parser = size_arg)]
    pub max_request_bytes: u64,
    /// Most bytes one part (one instance) may hold; a larger part ends the
    /// request with 413.
    #[arg(long, value_name = "SIZE", default_value_t = stowrsd::limits::DEFAULT_MAX_PART_BYTES, value_parser = size_arg)]
    pub max_part_bytes: u64,
    /// Free space kept on the store's file system: below it instances fail
    /// with 0xA700 (out of resources) instead of being stored; 0 turns the
    /// check off.
    #[arg(long, value_name = "SIZE", default_value_t = stowrsd::disk::DEFAULT_MIN_FREE_DISK, value_parser = size_arg)]
    pub min_free_disk: u64,
    /// Replace an instance already stored. By default it is kept: the same
    /// bytes again count as stored, other bytes fail with 0x0111
    /// (duplicate SOP instance).
    #[arg(long)]
    pub overwrite: bool,
    /// File holding the bearer token every sender must give (default: the
    /// environment variable STOW_EXPORTER_STOWRSD_TOKEN). Required when
    /// --bind is not a loopback address.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
}

/// The in-process receiver's limits, overwrite rule and token for `serve`
/// (the `stowrsd` options with a `stowrsd-` prefix).
#[derive(clap::Args, Clone)]
pub struct ServeReceiverArgs {
    /// Most parts one STOW-RS request (to the built-in receiver or into the
    /// archive) may hold.
    #[arg(long, value_name = "N", default_value_t = stowrsd::limits::DEFAULT_MAX_PARTS)]
    pub stowrsd_max_parts: usize,
    /// Most bytes one STOW-RS request body (to the built-in receiver or
    /// into the archive) may hold.
    #[arg(long, value_name = "SIZE", default_value_t = stowrsd::limits::DEFAULT_MAX_REQUEST_BYTES, value_parser = size_arg)]
    pub stowrsd_max_request_bytes: u64,
    /// Most bytes one part of a STOW-RS request (to the built-in receiver
    /// or into the archive) may hold.
    #[arg(long, value_name = "SIZE", default_value_t = stowrsd::limits::DEFAULT_MAX_PART_BYTES, value_parser = size_arg)]
    pub stowrsd_max_part_bytes: u64,
    /// Free space the built-in receiver keeps on its store's file system,
    /// and STOW-RS into the archive on the archive's (0: no check).
    #[arg(long, value_name = "SIZE", default_value_t = stowrsd::disk::DEFAULT_MIN_FREE_DISK, value_parser = size_arg)]
    pub stowrsd_min_free_disk: u64,
    /// The built-in receiver replaces instances it already holds.
    #[arg(long)]
    pub stowrsd_overwrite: bool,
    /// File holding the built-in receiver's bearer token (default: the
    /// environment variable STOW_EXPORTER_STOWRSD_TOKEN); not the control
    /// API's token. Required when the receiver's address is not a loopback
    /// address.
    #[arg(long, value_name = "FILE")]
    pub stowrsd_token_file: Option<PathBuf>,
}

/// A size option that is not one.
#[derive(Debug, thiserror::Error)]
#[error("expected a size such as 1073741824, 500MB or 2GiB, got {0:?}")]
pub struct SizeArgError(String);

fn size_arg(v: &str) -> Result<u64, SizeArgError> {
    crate::config::model::parse_size(v).ok_or_else(|| SizeArgError(v.to_string()))
}

impl ReceiverArgs {
    pub async fn options(&self, store_dir: Option<PathBuf>) -> Result<StowrsdOptions, CliError> {
        use stowrsd::access::{TokenOption, load_token};
        Ok(StowrsdOptions {
            store_dir,
            limits: stowrsd::limits::Limits {
                max_parts: self.max_parts,
                max_request_bytes: self.max_request_bytes,
                max_part_bytes: self.max_part_bytes,
            },
            min_free_disk: self.min_free_disk,
            overwrite: self.overwrite,
            token: load_token(self.token_file.as_deref(), TokenOption::Stowrsd).await?,
        })
    }
}

impl ServeReceiverArgs {
    /// The bounds of one STOW-RS request.
    pub fn limits(&self) -> stowrsd::limits::Limits {
        stowrsd::limits::Limits {
            max_parts: self.stowrsd_max_parts,
            max_request_bytes: self.stowrsd_max_request_bytes,
            max_part_bytes: self.stowrsd_max_part_bytes,
        }
    }

    pub async fn options(&self) -> Result<StowrsdOptions, CliError> {
        use stowrsd::access::{TokenOption, load_token};
        Ok(StowrsdOptions {
            store_dir: None,
            limits: self.limits(),
            min_free_disk: self.stowrsd_min_free_disk,
            overwrite: self.stowrsd_overwrite,
            token: load_token(self.stowrsd_token_file.as_deref(), TokenOption::Serve).await?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn verify_cli() {
        Cli::command().debug_assert();
    }

    #[test]
    fn the_password_file_goes_into_the_url_percent_encoded() {
        assert_eq!(
            with_password("postgres://stow@db:5432/stow?sslmode=disable", "p@ss:w/rd").as_deref(),
            Some("postgres://stow:p%40ss%3Aw%2Frd@db:5432/stow?sslmode=disable")
        );
        // No user to give it to, or a password already there: refused.
        assert_eq!(with_password("postgres://db:5432/stow", "x"), None);
        assert_eq!(with_password("postgres://u:p@db/stow", "x"), None);
    }
}
