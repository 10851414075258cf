//! The `stow-exporter` command line: a thin layer over the library.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};

use stow_exporter::app::{Application, Settings};
use stow_exporter::archive::{self, Archive, ImportError, ImportProgress, Imported};
use stow_exporter::cli::wait;
use stow_exporter::config::ldap::DEFAULT_BASE_DN;
use stow_exporter::config::{ConfigSource, DEFAULT_DEVICE_NAME, LdapSource, Secret};
use stow_exporter::export::SharedSnapshot;
use stow_exporter::http_server;
use stow_exporter::queue::{AmqpQueue, EmbeddedQueue, NewTask, TaskQueue};
use stow_exporter::schedule::Zone;
use stow_exporter::stowrsd::{self, StowrsdOptions};
use stow_exporter::task::TaskRequest;

/// mimalloc keeps freed large buffers (files, decoded pixels) for reuse
/// instead of returning them with munmap, which serialised parallel
/// transcodes on the kernel's mm lock (bench/README.md, Decompression).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "stow-exporter",
    version,
    about = "Exports DICOM objects to DICOMweb servers over STOW-RS, configured like dcm4chee-arc"
)]
struct Cli {
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(clap::Args, Clone)]
struct ConfigArgs {
    /// Configuration source: an LDIF file, a folder of *.ldif files
    /// (applied in name order), or an LDAP directory (ldap://host:port,
    /// ldaps://host:port, or ldapi://<percent-encoded socket path>).
    #[arg(long, default_value = "ldif", value_name = "PATH|URL")]
    config: String,
    /// dicomDeviceName of the archive device whose exporters this service runs.
    #[arg(long, default_value = DEFAULT_DEVICE_NAME)]
    device_name: String,
    /// Base DN of the DICOM configuration in the directory.
    #[arg(long, default_value = DEFAULT_BASE_DN, value_name = "DN")]
    ldap_base_dn: String,
    /// DN to bind as (simple bind); anonymous when absent. A bind DN needs
    /// a password (--ldap-password-file or LDAP_BIND_PASSWORD); without one
    /// the start is refused rather than binding anonymously.
    #[arg(long, value_name = "DN")]
    ldap_bind_dn: Option<String>,
    /// File holding the bind password. Without it the password comes from
    /// the environment variable LDAP_BIND_PASSWORD (never from the command
    /// line, where other users could read it).
    #[arg(long, value_name = "FILE", requires = "ldap_bind_dn")]
    ldap_password_file: Option<PathBuf>,
    /// Upgrade an ldap:// connection with StartTLS.
    #[arg(long)]
    ldap_starttls: bool,
    /// PEM file of CA certificates to trust for ldaps:// or StartTLS
    /// (default: the system's roots).
    #[arg(long, value_name = "FILE")]
    ldap_ca_file: Option<PathBuf>,
}

impl ConfigArgs {
    async fn source(&self) -> Result<ConfigSource, BoxError> {
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
                    .map_err(|e| format!("--ldap-password-file {}: {e}", f.display()))?
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
struct ListenerArgs {
    /// Seconds a client may take to send a request's headers; then it gets
    /// 408 and the connection closes.
    #[arg(long, value_name = "SECONDS", default_value_t = http_server::DEFAULT_HEADER_TIMEOUT.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    header_timeout: u64,
    /// Seconds a connection may wait for its client: between requests, in
    /// the middle of a request body (the request then fails), or for the
    /// client to read a response. Then the connection closes.
    #[arg(long, value_name = "SECONDS", default_value_t = http_server::DEFAULT_IDLE_TIMEOUT.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    idle_timeout: u64,
    /// Connections served at once per listener; more wait until one closes.
    /// Lowered at start, with a warning, to fit the open-file limit.
    #[arg(long, value_name = "N", default_value_t = http_server::DEFAULT_MAX_CONNECTIONS as u64,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    max_connections: u64,
}

impl ListenerArgs {
    /// The limits, fitted to the open-file limit for `listeners` listeners.
    fn limits(&self, listeners: usize) -> http_server::ListenerLimits {
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
struct QueueArgs {
    /// How often a task may be handed out without an outcome (each of those
    /// runs ended with the process: a crash, kill -9, out of memory) before
    /// it is given up: FAILED with that reason, and over AMQP its message
    /// moved to <queue>.dlq.
    #[arg(long, value_name = "N", default_value_t = stow_exporter::queue::DEFAULT_MAX_DELIVERIES,
          value_parser = clap::value_parser!(u32).range(1..))]
    max_deliveries: u32,
    /// How the task store waits for the disk. full (default): a task
    /// accepted (202), a recorded outcome and an AMQP acknowledgement that
    /// follows one survive an OS crash or power loss. normal: faster with
    /// many small tasks, but an OS crash or power loss may lose the last
    /// commits: tasks accepted just before (embedded queue), recorded
    /// outcomes (those tasks run again; over AMQP their records may stay
    /// SCHEDULED). A crash of the process alone loses nothing.
    #[arg(long, value_name = "full|normal", default_value = "full")]
    sqlite_synchronous: stow_exporter::db::Synchronous,
}

impl QueueArgs {
    fn options(&self) -> stow_exporter::queue::QueueOptions {
        stow_exporter::queue::QueueOptions {
            max_deliveries: self.max_deliveries,
            synchronous: self.sqlite_synchronous,
            export_hook: None,
        }
    }
}

/// The warning for a password that would cross the network in clear text
/// (see `LdapSource::cleartext_password_warning`).
fn cleartext_warning(source: &ConfigSource) -> Option<String> {
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
enum Command {
    /// Run the service: workers for every queue and the control API.
    Serve {
        #[command(flatten)]
        config: ConfigArgs,
        /// Data directory: storage, archive index, task queue.
        #[arg(long, default_value = "data")]
        data: PathBuf,
        /// Address of the control API.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Also run the built-in STOW-RS receiver, storing into DIR, on the
        /// address of the `stowrsd` web application.
        #[arg(long, value_name = "DIR")]
        stowrsd: Option<PathBuf>,
        /// Override the built-in receiver's address.
        #[arg(long, value_name = "ADDR", requires = "stowrsd")]
        stowrsd_bind: Option<String>,
        /// The built-in receiver's limits, overwrite rule and token: the
        /// options of `stowrsd` with a `stowrsd-` prefix.
        #[command(flatten)]
        stowrsd_limits: ServeReceiverArgs,
        /// Reload automatically when the configuration source changes,
        /// checking every SECONDS (at most 86400).
        #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(0..=MAX_WATCH_SECONDS))]
        watch: Option<u64>,
        /// Time zone of the dcmSchedule windows: an IANA name such as
        /// Europe/Vienna, or "local" for the machine's local time.
        #[arg(long, default_value = "local", value_name = "ZONE")]
        time_zone: Zone,
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
        queue: String,
        /// Objects decompressed at once, for destinations that do not take
        /// the stored transfer syntax (default: one per core).
        #[arg(long, value_name = "N")]
        transcode_jobs: Option<usize>,
        /// The largest object that is decompressed: its file, and its
        /// decoded pixel data, each at most this many MiB. Converted
        /// objects waiting for or in their requests hold at most this
        /// times the transcode jobs in all.
        #[arg(long, value_name = "MIB", default_value_t = 1024)]
        transcode_max_mib: u64,
        /// PEM file of CA certificates trusted for https web applications
        /// in addition to the system's roots (repeatable).
        #[arg(long, value_name = "PEM")]
        tls_ca_file: Vec<PathBuf>,
        /// PEM file of the client certificate (chain) sent to https web
        /// applications that ask for one (mutual TLS).
        #[arg(long, value_name = "PEM")]
        tls_client_cert: Option<PathBuf>,
        /// PEM file of the client certificate's private key (default: looked
        /// for in --tls-client-cert).
        #[arg(long, value_name = "PEM", requires = "tls_client_cert")]
        tls_client_key: Option<PathBuf>,
        /// File holding the control API's bearer token (default: the
        /// environment variable STOW_EXPORTER_API_TOKEN). Required when
        /// --listen is not a loopback address; when set, every request but
        /// /dcm4chee-arc/health/live must send `Authorization: Bearer <token>`.
        #[arg(long, value_name = "FILE")]
        api_token_file: Option<PathBuf>,
        /// After SIGTERM, how long running tasks may take to finish; then
        /// their remaining instances are left for the next start (the tasks
        /// go back to SCHEDULED).
        #[arg(long, value_name = "SECONDS", default_value_t = 30)]
        shutdown_timeout: u64,
        /// A name under which clients reach the control API besides
        /// localhost, loopback addresses and the --listen address
        /// (repeatable; e.g. behind a reverse proxy). Without a token,
        /// requests addressed to any other name are refused (DNS rebinding),
        /// and so are state-changing requests from web pages of other origins.
        #[arg(long, value_name = "NAME", value_parser = stow_exporter::api::ops::parse_allowed_host)]
        allowed_host: Vec<String>,
        /// Limits of the control API and of the in-process receiver.
        #[command(flatten)]
        listener: ListenerArgs,
        #[command(flatten)]
        queue_args: QueueArgs,
    },
    /// Run only the built-in STOW-RS receiver.
    Stowrsd {
        /// Address to listen on. Off loopback a bearer token is required
        /// (--token-file).
        #[arg(long, default_value = "127.0.0.1:18080")]
        bind: String,
        /// Store each instance as DIR/<SOPInstanceUID>.dcm.
        #[arg(long, conflicts_with = "ignore", required_unless_present = "ignore")]
        dir: Option<PathBuf>,
        /// Read and acknowledge, but store nothing.
        #[arg(long)]
        ignore: bool,
        #[command(flatten)]
        limits: ReceiverArgs,
        #[command(flatten)]
        listener: ListenerArgs,
    },
    /// Import DICOM files and folders into the archive.
    Import {
        #[arg(long, default_value = "data")]
        data: PathBuf,
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Queue an export task, and with --wait follow it to its end.
    #[command(
        after_help = "Exit status with --wait: 0 COMPLETED, 2 WARNING, 1 FAILED or CANCELED \
(or any error), 3 --timeout passed (the task stays queued). Without --wait: 0 once the task is queued."
    )]
    Export {
        #[command(flatten)]
        config: ConfigArgs,
        #[arg(long, default_value = "data")]
        data: PathBuf,
        #[arg(long)]
        exporter: String,
        #[arg(long)]
        study: String,
        #[arg(long)]
        series: Option<String>,
        #[arg(long, requires = "series")]
        instance: Option<String>,
        #[arg(long)]
        batch_id: Option<String>,
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
        queue: String,
        /// Wait until the task has ended (a running `serve` on the same
        /// data directory runs it), showing progress on a terminal; then
        /// print the final task and exit with a status for its outcome.
        #[arg(long)]
        wait: bool,
        /// With --wait: give up after SECONDS (exit status 3); the task
        /// stays queued.
        #[arg(long, value_name = "SECONDS", requires = "wait")]
        timeout: Option<u64>,
    },
    /// Export tasks of a running service, over its control API.
    Tasks(stow_exporter::cli::tasks::TasksArgs),
    /// Decompress DICOM files as an export to a destination that takes only
    /// uncompressed syntaxes would, and report each (one JSON line per file).
    Transcode {
        /// Target: ExplicitVRLittleEndian or ImplicitVRLittleEndian.
        #[arg(long, default_value = "ExplicitVRLittleEndian")]
        to: String,
        /// Write each result as DIR/<file name>.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// Objects decoded at once (default: one per core).
        #[arg(long)]
        jobs: Option<usize>,
        /// Decode every file this many times (for benchmarks).
        #[arg(long, default_value_t = 1)]
        repeat: u32,
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Validate the configuration and show the exporters it defines.
    CheckConfig {
        #[command(flatten)]
        config: ConfigArgs,
    },
}

/// The receiver's limits, overwrite rule and token as `stowrsd` takes them.
#[derive(clap::Args, Clone)]
struct ReceiverArgs {
    /// Most parts (instances) one request may hold; a request with more is
    /// answered 413 and not read further.
    #[arg(long, value_name = "N", default_value_t = stowrsd::limits::DEFAULT_MAX_PARTS)]
    max_parts: usize,
    /// Most bytes one request body may hold (such as 500MB or 16GiB);
    /// a larger one is answered 413 and not read further.
    #[arg(long, value_name = "SIZE", default_value_t = stowrsd::limits::DEFAULT_MAX_REQUEST_BYTES, value_parser = size_arg)]
    max_request_bytes: u64,
    /// Most bytes one part (one instance) may hold; a larger part ends the
    /// request with 413.
    #[arg(long, value_name = "SIZE", default_value_t = stowrsd::limits::DEFAULT_MAX_PART_BYTES, value_parser = size_arg)]
    max_part_bytes: u64,
    /// Free space kept on the store's file system: below it instances fail
    /// with 0xA700 (out of resources) instead of being stored; 0 turns the
    /// check off.
    #[arg(long, value_name = "SIZE", default_value_t = stowrsd::disk::DEFAULT_MIN_FREE_DISK, value_parser = size_arg)]
    min_free_disk: u64,
    /// Replace an instance already stored. By default it is kept: the same
    /// bytes again count as stored, other bytes fail with 0x0111
    /// (duplicate SOP instance).
    #[arg(long)]
    overwrite: bool,
    /// File holding the bearer token every sender must give (default: the
    /// environment variable STOW_EXPORTER_STOWRSD_TOKEN). Required when
    /// --bind is not a loopback address.
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
}

/// The in-process receiver's limits, overwrite rule and token for `serve`
/// (the `stowrsd` options with a `stowrsd-` prefix).
#[derive(clap::Args, Clone)]
struct ServeReceiverArgs {
    /// Most parts one request to the built-in receiver may hold.
    #[arg(long, value_name = "N", default_value_t = stowrsd::limits::DEFAULT_MAX_PARTS)]
    stowrsd_max_parts: usize,
    /// Most bytes one request body to the built-in receiver may hold.
    #[arg(long, value_name = "SIZE", default_value_t = stowrsd::limits::DEFAULT_MAX_REQUEST_BYTES, value_parser = size_arg)]
    stowrsd_max_request_bytes: u64,
    /// Most bytes one part sent to the built-in receiver may hold.
    #[arg(long, value_name = "SIZE", default_value_t = stowrsd::limits::DEFAULT_MAX_PART_BYTES, value_parser = size_arg)]
    stowrsd_max_part_bytes: u64,
    /// Free space the built-in receiver keeps on its store's file system
    /// (0: no check).
    #[arg(long, value_name = "SIZE", default_value_t = stowrsd::disk::DEFAULT_MIN_FREE_DISK, value_parser = size_arg)]
    stowrsd_min_free_disk: u64,
    /// The built-in receiver replaces instances it already holds.
    #[arg(long)]
    stowrsd_overwrite: bool,
    /// File holding the built-in receiver's bearer token (default: the
    /// environment variable STOW_EXPORTER_STOWRSD_TOKEN); not the control
    /// API's token. Required when the receiver's address is not a loopback
    /// address.
    #[arg(long, value_name = "FILE")]
    stowrsd_token_file: Option<PathBuf>,
}

/// A size option that is not one.
#[derive(Debug, thiserror::Error)]
#[error("expected a size such as 1073741824, 500MB or 2GiB, got {0:?}")]
struct SizeArgError(String);

fn size_arg(v: &str) -> Result<u64, SizeArgError> {
    stow_exporter::config::model::parse_size(v).ok_or_else(|| SizeArgError(v.to_string()))
}

impl ReceiverArgs {
    async fn options(&self, store_dir: Option<PathBuf>) -> Result<StowrsdOptions, BoxError> {
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
    async fn options(&self) -> Result<StowrsdOptions, BoxError> {
        use stowrsd::access::{TokenOption, load_token};
        Ok(StowrsdOptions {
            store_dir: None,
            limits: stowrsd::limits::Limits {
                max_parts: self.stowrsd_max_parts,
                max_request_bytes: self.stowrsd_max_request_bytes,
                max_part_bytes: self.stowrsd_max_part_bytes,
            },
            min_free_disk: self.stowrsd_min_free_disk,
            overwrite: self.stowrsd_overwrite,
            token: load_token(self.stowrsd_token_file.as_deref(), TokenOption::Serve).await?,
        })
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        // OpenJPEG reports every tile it decodes at info (through jpeg2k).
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,jpeg2k=warn"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => b.json().init(),
        LogFormat::Text => b.init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

async fn run(command: Command) -> Result<ExitCode, BoxError> {
    match command {
        Command::Serve {
            config,
            data,
            listen,
            stowrsd,
            stowrsd_bind,
            stowrsd_limits,
            watch,
            time_zone,
            queue,
            transcode_jobs,
            transcode_max_mib,
            tls_ca_file,
            tls_client_cert,
            tls_client_key,
            api_token_file,
            shutdown_timeout,
            allowed_host,
            listener,
            queue_args,
        } => {
            // Refused before anything is bound or loaded.
            let api_token = stow_exporter::token::load_token(api_token_file.as_deref())?;
            stow_exporter::api::ops::check_listen(&listen, api_token.as_ref())?;
            let tls = stow_exporter::stow::tls::TlsSettings {
                ca_files: tls_ca_file,
                client_cert: tls_client_cert,
                client_key: tls_client_key,
            };
            // A wrong path fails at start, not in every task.
            tls.check()?;
            let source = config.source().await?;
            if let Some(w) = cleartext_warning(&source) {
                tracing::warn!("{w}");
            }
            // Only read when the receiver runs: the variable may be set for
            // a separate `stowrsd` on the same machine.
            let stowrsd_options = match &stowrsd {
                Some(_) => stowrsd_limits.options().await?,
                None => StowrsdOptions::default(),
            };
            let app = Application::build(Settings {
                config: source,
                device_name: config.device_name,
                data_dir: data,
                listen,
                stowrsd_dir: stowrsd,
                stowrsd_bind,
                stowrsd_options,
                // About five minutes of backoff before giving up.
                startup_retries: 14,
                watch: watch.filter(|s| *s > 0).map(std::time::Duration::from_secs),
                zone: time_zone,
                queue_url: queue_url(&queue)?,
                transcode_jobs,
                transcode_limits: stow_exporter::transcode::Limits {
                    max_object_bytes: transcode_max_mib.saturating_mul(1 << 20),
                },
                tls,
                queue_options: queue_args.options(),
            })
            .await?
            .with_api_token(api_token)
            .with_shutdown_timeout(std::time::Duration::from_secs(shutdown_timeout))
            .with_allowed_hosts(allowed_host);
            let listeners = 1 + usize::from(app.stowrsd_addr().is_some());
            let app = app.with_listener_limits(listener.limits(listeners));
            app.run_until_stopped(shutdown_signal()).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Stowrsd {
            bind,
            dir,
            ignore,
            limits,
            listener: listener_args,
        } => {
            // A bad token fails before anything is bound.
            let opts = limits.options(dir.clone()).await?;
            // Swept before the port is bound: a client that can connect
            // finds the store clean.
            if let Some(d) = &dir {
                tokio::fs::create_dir_all(d)
                    .await
                    .map_err(|e| format!("{}: {e}", d.display()))?;
                stowrsd::sweep_store(d).await;
            }
            let listener = tokio::net::TcpListener::bind(&bind)
                .await
                .map_err(|e| format!("cannot listen on {bind}: {e}"))?;
            let addr = listener.local_addr()?;
            stowrsd::access::check_listen(
                &addr,
                opts.token.as_ref(),
                stowrsd::access::TokenOption::Stowrsd,
            )?;
            tracing::info!(
                %addr,
                store = ?dir,
                ignore,
                limits = ?opts.limits,
                min_free_disk = opts.min_free_disk,
                overwrite = opts.overwrite,
                token = opts.token.is_some(),
                "stowrsd listening"
            );
            http_server::serve(
                listener,
                stowrsd::router(opts),
                &listener_args.limits(1),
                shutdown_signal(),
            )
            .await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Import { data, paths } => import(&data, &paths).await,
        Command::Export {
            config,
            data,
            exporter,
            study,
            series,
            instance,
            batch_id,
            queue: queue_arg,
            wait,
            timeout,
        } => {
            let source = config.source().await?;
            if let Some(w) = cleartext_warning(&source) {
                tracing::warn!("{w}");
            }
            let snapshot = source.load(&config.device_name).await?;
            let ex = snapshot.exporter(&exporter).ok_or_else(|| {
                format!("no STOW-RS exporter {exporter:?} in {}", snapshot.source)
            })?;
            let request = TaskRequest {
                exporter_id: exporter.clone(),
                study_iuid: study,
                series_iuid: series,
                sop_iuid: instance,
                batch_id,
                scheduled_time: None,
            };
            request.validate()?;
            tokio::fs::create_dir_all(&data).await?;
            // Publishing only: never reschedule tasks a running `serve` holds.
            let records = EmbeddedQueue::open(&data, &config.device_name, false).await?;
            let queue: Box<dyn TaskQueue> = match queue_url(&queue_arg)? {
                None => Box::new(records),
                Some(url) => {
                    let shared: SharedSnapshot =
                        Arc::new(std::sync::RwLock::new(Arc::new(snapshot.clone())));
                    Box::new(AmqpQueue::connect(&url, records, shared).await?)
                }
            };
            let task = queue
                .publish(NewTask::for_exporter(request, config.device_name, ex))
                .await?;
            if !wait {
                println!("{}", serde_json::to_string_pretty(&task)?);
                return Ok(ExitCode::SUCCESS);
            }
            let opts = wait::WaitOptions {
                timeout: timeout.map(std::time::Duration::from_secs),
                total: wait::instances_in_archive(&data, &task).await,
                progress: std::io::stderr().is_terminal(),
            };
            match wait::wait_for_task(queue.as_ref(), &task.task_id, &opts).await {
                Ok(done) => {
                    println!("{}", serde_json::to_string_pretty(&done)?);
                    Ok(ExitCode::from(wait::exit_code(done.status)))
                }
                Err(e) => match &e {
                    wait::WaitError::TimedOut { task, .. } => {
                        // The record as it stands, for its ID and status.
                        println!("{}", serde_json::to_string_pretty(task)?);
                        eprintln!("error: {e}");
                        Ok(ExitCode::from(wait::EXIT_TIMEOUT))
                    }
                    wait::WaitError::Queue { .. } => Err(e.into()),
                },
            }
        }
        Command::Tasks(args) => {
            stow_exporter::cli::tasks::run(args).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Transcode {
            to,
            out,
            jobs,
            repeat,
            paths,
        } => transcode_files(&to, out, jobs, repeat, paths).await,
        Command::CheckConfig { config } => {
            let source = config.source().await?;
            // Before loading: a directory that does not answer still gets
            // the warning.
            if let Some(w) = cleartext_warning(&source) {
                println!("warning: {w}");
            }
            match source.load(&config.device_name).await {
                Ok(s) => {
                    println!(
                        "configuration {} is valid: device {}",
                        s.source, s.device_name
                    );
                    println!(
                        "{:<16} {:<58} {:<10} {:<24} PROPERTIES",
                        "EXPORTER", "STOW-RS URL", "QUEUE", "SCHEDULE"
                    );
                    for e in s.exporters.values() {
                        let w = s.web_app(&e.web_app);
                        let url = w
                            .map(|w| format!("{}/studies", w.service_url))
                            .unwrap_or_default();
                        // Secrets serialize masked.
                        let props = w
                            .map(|w| serde_json::to_string(&w.props).unwrap_or_default())
                            .unwrap_or_default();
                        let schedule = if e.schedule.values().is_empty() {
                            "-".to_string()
                        } else {
                            e.schedule.values().join(" | ")
                        };
                        println!(
                            "{:<16} {:<58} {:<10} {:<24} {}",
                            e.id, url, e.queue, schedule, props
                        );
                    }
                    for w in &s.warnings {
                        println!("warning: {w}");
                    }
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    for line in e.errors() {
                        println!("error: {line}");
                    }
                    Ok(ExitCode::FAILURE)
                }
            }
        }
    }
}

/// `--queue`: `None` for the embedded queue, else the broker URL.
fn queue_url(arg: &str) -> Result<Option<String>, BoxError> {
    let lower = arg.to_ascii_lowercase();
    if arg.is_empty() || lower == "embedded" {
        Ok(None)
    } else if lower.starts_with("amqp://") || lower.starts_with("amqps://") {
        Ok(Some(arg.to_string()))
    } else {
        Err(format!(
            "--queue: expected \"embedded\" or an amqp:// or amqps:// URL, got {}",
            stow_exporter::redact::mask_url(arg)
        )
        .into())
    }
}

/// Progress on a terminal; one line per file that could not be imported.
struct Progress {
    bar: ProgressBar,
}

impl ImportProgress for Progress {
    fn total(&self, files: u64) {
        self.bar.set_length(files);
    }

    fn file_done(&self, path: &Path, result: &Result<Imported, ImportError>) {
        self.bar.inc(1);
        if let Err(e) = result {
            self.bar
                .suspend(|| eprintln!("skipped {}: {e}", path.display()));
        }
    }
}

async fn import(data: &Path, paths: &[PathBuf]) -> Result<ExitCode, BoxError> {
    tokio::fs::create_dir_all(data).await?;
    let archive = Archive::open(data).await?;
    let bar = if std::io::stderr().is_terminal() {
        let b = ProgressBar::new(0);
        b.set_style(
            ProgressStyle::with_template("{bar:40} {pos}/{len} files {per_sec} eta {eta}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        b
    } else {
        ProgressBar::hidden()
    };
    let progress = Arc::new(Progress { bar });
    let report = archive::import_paths(&archive, paths, progress.as_ref()).await;
    progress.bar.finish_and_clear();
    println!(
        "imported {} new, {} already stored, {} failed ({} bytes)",
        report.stored,
        report.already_stored,
        report.failed.len(),
        report.bytes
    );
    Ok(if report.failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// The `transcode` command: every file through the service's transcoder,
/// `jobs` at a time, with a summary of decoded megabytes per second.
async fn transcode_files(
    to: &str,
    out: Option<PathBuf>,
    jobs: Option<usize>,
    repeat: u32,
    paths: Vec<PathBuf>,
) -> Result<ExitCode, BoxError> {
    use futures_util::stream::{self, StreamExt};
    use stow_exporter::transcode::{Limits, Target, Transcoder};
    let target = match stow_exporter::config::transfer_syntax_uid(to).as_deref() {
        Some("1.2.840.10008.1.2.1") => Target::ExplicitVRLittleEndian,
        Some("1.2.840.10008.1.2") => Target::ImplicitVRLittleEndian,
        _ => {
            return Err(format!(
                "--to {to}: expected ExplicitVRLittleEndian or ImplicitVRLittleEndian"
            )
            .into());
        }
    };
    let files: Vec<PathBuf> = paths
        .iter()
        .flat_map(|p| walkdir::WalkDir::new(p).sort_by_file_name())
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .map(|e| e.into_path())
        .collect();
    let t = match jobs {
        Some(n) => Transcoder::new(n, Limits::default()),
        None => Transcoder::per_core(Limits::default()),
    };
    // The Transcoder decodes at most `jobs` objects at once; twice as many
    // are handed to it so that a decoder that finishes finds the next
    // object already read and waiting, as on the export path, where more
    // requests wait for a decode slot than there are slots.
    let parallel =
        2 * jobs.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let started = std::time::Instant::now();
    let work = (0..repeat.max(1)).flat_map(|round| files.iter().map(move |f| (round, f.clone())));
    let mut results = stream::iter(work)
        .map(|(round, f)| {
            let t = t.clone();
            async move {
                let began = std::time::Instant::now();
                // The stored syntax only names the file in early errors.
                let r = t
                    .transcode_file(f.clone(), "the stored syntax", target)
                    .await;
                (round, f, r, began.elapsed())
            }
        })
        .buffer_unordered(parallel);
    let (mut ok, mut failed, mut pixel_bytes) = (0u64, 0u64, 0u64);
    while let Some((round, file, r, took)) = results.next().await {
        let mut line = serde_json::json!({
            "file": file.display().to_string(),
            // Includes the wait for a decode slot.
            "ms": took.as_secs_f64() * 1000.0,
        });
        match r {
            Ok(done) => {
                ok += 1;
                pixel_bytes += done.decoded_pixel_bytes;
                line["ok"] = true.into();
                line["decoded_pixel_bytes"] = done.decoded_pixel_bytes.into();
                if let (Some(dir), 0) = (&out, round) {
                    let name = file.file_name().unwrap_or_default();
                    tokio::fs::create_dir_all(dir).await?;
                    tokio::fs::write(dir.join(name), &done.data).await?;
                }
            }
            Err(e) => {
                failed += 1;
                line["ok"] = false.into();
                line["stored"] = e.uid.clone().into();
                line["error"] = e.to_string().into();
            }
        }
        if round == 0 {
            println!("{line}");
        }
    }
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "{ok} converted, {failed} failed; {:.1} MB of pixels decoded in {secs:.3} s: {:.1} MB/s",
        pixel_bytes as f64 / 1e6,
        pixel_bytes as f64 / 1e6 / secs
    );
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn verify_cli() {
        Cli::command().debug_assert();
    }
}
