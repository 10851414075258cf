//! The `serve` application: configuration, archive, queue, workers, control
//! API and (optionally) the built-in receiver, wired together.
//!
//! [`Application::build`] binds every listener first, so tests can ask for
//! port 0 and read the real addresses before [`Application::run_until_stopped`].
//! Both listeners are served by [`crate::http_server`] with the same
//! [`ListenerLimits`] (each its own connection count); the control API is
//! guarded by its token, or without one by [`ops::SiteGuard`].

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::api::ops::{self, OpsState};
use crate::api::{self, ApiState};
use crate::archive::Archive;
use crate::cluster::Signals;
use crate::config::{ConfigSource, LiveConfig, LoadError, Secret, Snapshot};
use crate::export::{Executor, Workers};
use crate::forward::Receiver;
use crate::http_server::{self, ListenerLimits};
use crate::metrics::Metrics;
use crate::queue::{self, BrokerLink, DatabaseLink, OpenQueue, QueueError, Role, Submit};
use crate::schedule::Zone;
use crate::stowrsd::{self, StowrsdOptions};
use crate::transcode::Transcoder;

/// The address the built-in receiver uses when no `stowrsd` web app says otherwise.
pub const DEFAULT_STOWRSD_ADDR: &str = "127.0.0.1:18080";
/// How long running tasks may take to finish after SIGTERM by default
/// (`--shutdown-timeout`); what is left is resumed at the next start.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);
/// After the shutdown deadline, how long requests already in flight may
/// take to finish (no new instance starts); results not in by then are
/// sent again after the restart.
const IN_FLIGHT_GRACE: Duration = Duration::from_secs(5);

/// Settings of `serve`.
#[derive(Clone)]
pub struct Settings {
    pub config: ConfigSource,
    pub device_name: String,
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    /// Run the built-in receiver in-process, storing into this directory.
    pub stowrsd_dir: Option<PathBuf>,
    /// Where the in-process receiver listens; default: the `stowrsd` web app's address.
    pub stowrsd_bind: Option<String>,
    /// The in-process receiver's limits, overwrite rule and token (its
    /// `store_dir` is `stowrsd_dir`).
    pub stowrsd_options: StowrsdOptions,
    /// How often an unreachable configuration source is retried at start-up.
    pub startup_retries: u32,
    /// Reload automatically when the source changes, polling at this interval.
    pub watch: Option<Duration>,
    /// Time zone of the `dcmSchedule` windows.
    pub zone: Zone,
    /// Deliver tasks through this AMQP broker (`amqp://user:password@host:port/vhost`)
    /// instead of the embedded queue; task records stay in the data directory.
    pub queue_url: Option<String>,
    /// Objects decompressed at once for destinations that do not take the
    /// stored transfer syntax; default one per core.
    pub transcode_jobs: Option<usize>,
    /// Bounds on each decompressed object.
    pub transcode_limits: crate::transcode::Limits,
    /// CA files and client certificate for `https` web apps.
    pub tls: crate::stow::tls::TlsSettings,
    /// Delivery cap and durability of the task store.
    pub queue_options: crate::queue::QueueOptions,
    /// Keep task records and the archive index in this shared PostgreSQL
    /// database (`postgres://...`, a secret) instead of the data
    /// directory; the storage stays `<data_dir>/storage`.
    pub database: Option<Secret>,
    /// Where the Storage SCP listens: `None`, the DICOM connections of the
    /// device's accepting network AEs; otherwise these addresses (none:
    /// no SCP).
    pub dicom_listen: Option<Vec<String>>,
    /// The Storage SCP's limits.
    pub scp_options: crate::scp::ScpOptions,
}

impl std::fmt::Debug for Settings {
    // By hand, so the broker URL's password never reaches a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("config", &self.config)
            .field("device_name", &self.device_name)
            .field("data_dir", &self.data_dir)
            .field("listen", &self.listen)
            .field("stowrsd_dir", &self.stowrsd_dir)
            .field("stowrsd_bind", &self.stowrsd_bind)
            .field("stowrsd_options", &self.stowrsd_options)
            .field("startup_retries", &self.startup_retries)
            .field("watch", &self.watch)
            .field("zone", &self.zone)
            .field("transcode_jobs", &self.transcode_jobs)
            .field("transcode_limits", &self.transcode_limits)
            .field("tls", &self.tls)
            .field("queue_options", &self.queue_options)
            .field("dicom_listen", &self.dicom_listen)
            .field("scp_options", &self.scp_options)
            .field(
                "queue_url",
                &self.queue_url.as_deref().map(crate::redact::mask_url),
            )
            .field(
                "database",
                &self
                    .database
                    .as_ref()
                    .map(|d| crate::queue::postgres::masked(d.expose())),
            )
            .finish()
    }
}

/// Why the application could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("configuration: {0}")]
    Config(#[from] LoadError),
    #[error("archive: {0}")]
    Archive(#[from] crate::archive::ArchiveError),
    #[error("task queue: {0}")]
    Queue(#[from] QueueError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("server: {0}")]
    Serve(std::io::Error),
    #[error("control API: {0}")]
    Access(#[from] ops::OpenWithoutToken),
}

/// A built, not yet running service.
pub struct Application {
    listener: TcpListener,
    watch: Option<Duration>,
    stowrsd: Option<(TcpListener, StowrsdOptions)>,
    /// The Storage SCP's listeners (none when it is off).
    dicom: Vec<TcpListener>,
    scp_options: crate::scp::ScpOptions,
    /// Stores received objects with their rules' exports.
    receiver: Receiver,
    /// Queues the exports the rules recorded once they are due.
    forwarding: (Submit, Arc<Metrics>, Arc<Notify>),
    state: ApiState,
    workers: Workers,
    ops: OpsState,
    /// Required from every client (but `health/live`) when set.
    api_token: Option<Secret>,
    shutdown_timeout: Duration,
    /// Timeouts and connection limit of each listener.
    limits: ListenerLimits,
    /// Host names of the control API besides localhost and its address
    /// (`--allowed-host`), as [`ops::parse_allowed_host`] gives them.
    allowed_hosts: Vec<String>,
}

impl Application {
    pub async fn build(settings: Settings) -> Result<Application, AppError> {
        let snapshot = load_with_retry(&settings).await?;
        for w in &snapshot.warnings {
            tracing::warn!("{w}");
        }
        tokio::fs::create_dir_all(&settings.data_dir)
            .await
            .map_err(|e| {
                AppError::Serve(std::io::Error::other(format!(
                    "{}: {e}",
                    settings.data_dir.display()
                )))
            })?;
        // With a shared database the archive index is there too, so that
        // every instance finds what was imported on any host.
        let archive = Archive::open_on(
            &settings.data_dir,
            settings.database.as_ref().map(|d| d.expose()),
        )
        .await?;
        let live = LiveConfig::new(
            settings.config.clone(),
            &settings.device_name,
            snapshot.clone(),
        );
        // Bound before the queue opens: the port it got names this instance.
        let listener =
            TcpListener::bind(settings.listen)
                .await
                .map_err(|source| AppError::Bind {
                    addr: settings.listen.to_string(),
                    source,
                })?;
        let bound = listener.local_addr().unwrap_or(settings.listen);
        let instance = instance_name(&settings.device_name, bound).await;
        let queue = queue::open(OpenQueue {
            data_dir: &settings.data_dir,
            device_name: &settings.device_name,
            role: Role::Workers,
            options: &settings.queue_options,
            broker: settings
                .queue_url
                .as_deref()
                .map(|url| BrokerLink { url, config: &live }),
            // One instance per host and control API port: a restarted
            // instance finds the tasks it left IN PROCESS by this name.
            database: settings.database.as_ref().map(|d| DatabaseLink {
                url: d.expose(),
                instance: Some(&instance),
            }),
        })
        .await?;

        let dicom_addrs = match &settings.dicom_listen {
            Some(addrs) => addrs.clone(),
            None => crate::scp::configured_addresses(&snapshot),
        };
        let mut dicom = Vec::new();
        for addr in &dicom_addrs {
            let l = TcpListener::bind(addr)
                .await
                .map_err(|source| AppError::Bind {
                    addr: addr.clone(),
                    source,
                })?;
            dicom.push(l);
        }

        let stowrsd = match &settings.stowrsd_dir {
            None => None,
            Some(dir) => {
                let addr = settings
                    .stowrsd_bind
                    .clone()
                    .unwrap_or_else(|| stowrsd_address(&snapshot));
                let l = TcpListener::bind(&addr)
                    .await
                    .map_err(|source| AppError::Bind {
                        addr: addr.clone(),
                        source,
                    })?;
                let opts = StowrsdOptions {
                    store_dir: Some(dir.clone()),
                    ..settings.stowrsd_options.clone()
                };
                // Never open to the network without a token.
                let bound = l.local_addr().map_err(|source| AppError::Bind {
                    addr: addr.clone(),
                    source,
                })?;
                stowrsd::access::check_listen(
                    &bound,
                    opts.token.as_ref(),
                    stowrsd::access::TokenOption::Serve,
                )
                .map_err(|e| AppError::Bind {
                    addr: addr.clone(),
                    source: std::io::Error::new(std::io::ErrorKind::PermissionDenied, e),
                })?;
                stowrsd::sweep_store(dir).await;
                Some((l, opts))
            }
        };

        tracing::info!(
            source = %settings.config,
            exporters = snapshot.exporters.len(),
            queues = snapshot.queues.len(),
            "configuration loaded"
        );
        // Instances sharing a database label their own counts with their
        // name; alone, the series are as they always were.
        let metrics = Arc::new(match settings.database {
            Some(_) => Metrics::for_instance(&instance),
            None => Metrics::new(),
        });
        let transcoder = match settings.transcode_jobs {
            Some(n) => Transcoder::new(n, settings.transcode_limits),
            None => Transcoder::per_core(settings.transcode_limits),
        }
        .with_metrics(metrics.clone());
        let executor = Executor::new(
            archive.clone(),
            queue.store.clone(),
            transcoder,
            Arc::new(settings.tls.clone()),
        )
        .with_metrics(metrics.clone());
        let workers = Workers::new(
            executor,
            queue.delivery.clone(),
            live.clone(),
            CancellationToken::new(),
            settings.zone,
        )
        .with_export_hook(settings.queue_options.export_hook.clone());
        // On a shared database the instances tell one another of cancels
        // and reloads; alone, there is nobody to tell.
        let cluster = settings
            .database
            .as_ref()
            .map(|d| Signals::new(d.expose(), &instance));
        let ops = OpsState {
            metrics: metrics.clone(),
            config: live.clone(),
            data_dir: settings.data_dir.clone(),
            device_name: settings.device_name.clone(),
            store: queue.store.clone(),
            delivery: queue.delivery.clone(),
            database: settings
                .database
                .as_ref()
                .map(|d| crate::queue::masked_database(d.expose())),
            signals: cluster.clone(),
        };
        let cancel = match &cluster {
            Some(c) => workers.cancel_handle().with_broadcast(Arc::new(c.clone())),
            None => workers.cancel_handle(),
        };
        let wake = Arc::new(Notify::new());
        let receiver = Receiver::new(
            archive.clone(),
            live.clone(),
            settings.zone,
            metrics.clone(),
            wake.clone(),
        );
        let forwarding = (queue.submit(), metrics.clone(), wake);
        let state = ApiState {
            device_name: settings.device_name.clone(),
            config: live,
            store: queue.store.clone(),
            submit: queue.submit(),
            cancel,
            cluster,
            archive,
            zone: settings.zone,
            stow_in: api::StowIn {
                receiver: receiver.clone(),
                limits: settings.stowrsd_options.limits,
                min_free_disk: settings.stowrsd_options.min_free_disk,
            },
        };
        Ok(Application {
            listener,
            watch: settings.watch,
            stowrsd,
            dicom,
            scp_options: settings.scp_options.clone(),
            receiver,
            forwarding,
            state,
            workers,
            ops,
            api_token: None,
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
            limits: ListenerLimits::default(),
            allowed_hosts: Vec::new(),
        })
    }

    /// Requires `token` (`Authorization: Bearer <token>`) on every request
    /// but `health/live`. Without one, the control API must listen on
    /// loopback (see [`ops::check_listen`]).
    pub fn with_api_token(mut self, token: Option<Secret>) -> Application {
        self.api_token = token;
        self
    }

    /// How long running tasks may take to finish after the stop signal
    /// before their remaining instances are left for the next start.
    pub fn with_shutdown_timeout(mut self, timeout: Duration) -> Application {
        self.shutdown_timeout = timeout;
        self
    }

    /// Header and idle timeouts and the connection limit of the control
    /// API and of the in-process receiver (each counts its own connections).
    pub fn with_listener_limits(mut self, limits: ListenerLimits) -> Application {
        self.limits = limits;
        self
    }

    /// Names under which clients reach the control API, besides localhost,
    /// loopback addresses and its listen address (`--allowed-host`, e.g.
    /// behind a reverse proxy); without a token, requests with another
    /// `Host` are refused. Values as [`ops::parse_allowed_host`] gives them.
    pub fn with_allowed_hosts(mut self, names: Vec<String>) -> Application {
        self.allowed_hosts = names;
        self
    }

    /// The control API's address.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// The in-process receiver's address, if it runs.
    pub fn stowrsd_addr(&self) -> Option<SocketAddr> {
        self.stowrsd.as_ref().and_then(|(l, _)| l.local_addr().ok())
    }

    /// The Storage SCP's addresses (empty when it is off).
    pub fn dicom_addrs(&self) -> Vec<SocketAddr> {
        self.dicom
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect()
    }

    /// Runs until `shutdown` resolves, then stops taking tasks and lets
    /// running ones finish (up to a grace period).
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), AppError> {
        let api_addr = self.local_addr();
        ops::check_listen(&api_addr, self.api_token.as_ref())?;
        let stop = CancellationToken::new();
        let limits = self.limits;
        let receiver = self.stowrsd.map(|(l, opts)| {
            let stop = stop.clone();
            tracing::info!(addr = %l.local_addr().map(|a| a.to_string()).unwrap_or_default(), "built-in STOW-RS receiver listening");
            tokio::spawn(async move {
                http_server::serve(l, stowrsd::router(opts), &limits, async move {
                    stop.cancelled().await
                })
                .await
            })
        });
        self.workers.ensure_started();
        {
            let (submit, metrics, wake) = self.forwarding;
            let (archive, live, stop) = (
                self.state.archive.clone(),
                self.state.config.clone(),
                stop.clone(),
            );
            tokio::spawn(crate::forward::scheduler::run(
                archive, submit, live, metrics, wake, stop,
            ));
        }
        // Temp files of objects a crash cut off (SCP or STOW-RS), once they
        // are an hour old: a sibling instance on shared storage may be
        // writing younger ones.
        crate::stowrsd::sweep_store(&self.receiver.incoming_dir()).await;
        if !self.dicom.is_empty() {
            for l in &self.dicom {
                tracing::info!(addr = %l.local_addr().map(|a| a.to_string()).unwrap_or_default(), "DICOM Storage SCP listening");
            }
            tokio::spawn(crate::scp::serve(
                self.dicom,
                self.receiver,
                self.scp_options,
                stop.clone(),
            ));
        }
        if let Some(cluster) = self.state.cluster.clone() {
            // Cancels from other instances stop exports here, without
            // being passed on again.
            let (cancel, live, stop) = (
                self.workers.cancel_handle(),
                self.state.config.clone(),
                stop.clone(),
            );
            tokio::spawn(cluster.listen(cancel, live, stop));
        }
        // A reload (API or --watch) that adds a queue starts its worker.
        {
            let workers = self.workers.clone();
            let changes = self.state.config.subscribe();
            let stop = stop.clone();
            tokio::spawn(async move { workers.follow(changes, stop).await });
        }
        if let Some(every) = self.watch {
            let live = self.state.config.clone();
            let stop = stop.clone();
            tokio::spawn(async move { live.watch(every, stop).await });
        }
        tracing::info!(addr = %self.listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), "control API listening");
        let guard = Arc::new(ops::SiteGuard::new(
            api_addr,
            &self.allowed_hosts,
            self.api_token.is_some(),
        ));
        let token = self.api_token.map(Arc::new);
        // The token guards the control API, metrics and readiness; the
        // page's static files (which hold no data; the page sends the token
        // with its own requests) are merged outside that layer. Without a
        // token the site guard covers both, so that no other web page can
        // drive or read the API; liveness is merged outside both.
        // Kept for the shutdown, which returns unfinished tasks.
        let store = self.state.store.clone();
        let app = api::router(self.state)
            .merge(ops::router(self.ops.clone()))
            .layer(axum::middleware::from_fn_with_state(
                token,
                crate::token::require_token,
            ))
            .merge(api::ui::router())
            .layer(axum::middleware::from_fn_with_state(
                guard,
                ops::require_same_site,
            ))
            .merge(ops::public_router());
        let stop2 = stop.clone();
        let listener = self.listener;
        let server = tokio::spawn(async move {
            http_server::serve(
                listener,
                app,
                &limits,
                async move { stop2.cancelled().await },
            )
            .await
        });

        shutdown.await;
        tracing::info!(timeout = ?self.shutdown_timeout, "shutting down: no new tasks; waiting for running ones");
        let drained = self.workers.shutdown();
        let mut drained = std::pin::pin!(drained);
        if tokio::time::timeout(self.shutdown_timeout, &mut drained)
            .await
            .is_err()
        {
            let n = self.workers.interrupt();
            tracing::warn!(
                tasks = n,
                "shutdown deadline reached: running exports stop after the requests in flight; they resume at the next start"
            );
            if tokio::time::timeout(IN_FLIGHT_GRACE, &mut drained)
                .await
                .is_err()
            {
                tracing::warn!(
                    "requests still in flight after the grace; their instances are sent again at the next start"
                );
            }
        }
        // Unfinished tasks go back to the queue now: records left IN
        // PROCESS become SCHEDULED (as at start-up); over AMQP their
        // unacknowledged messages are redelivered when the connection closes.
        if let Err(e) = store.requeue_unfinished().await {
            tracing::error!(error = %e, "cannot return unfinished tasks to the queue; the next start does");
        }
        stop.cancel();
        if let Ok(Err(e)) = server.await {
            return Err(AppError::Serve(e));
        }
        if let Some(r) = receiver
            && let Ok(Err(e)) = r.await
        {
            return Err(AppError::Serve(e));
        }
        Ok(())
    }
}

/// Loads the configuration at start-up. An unreachable directory is waited
/// for with exponential backoff (saying why each time); an invalid
/// configuration fails at once, since waiting will not fix it.
async fn load_with_retry(settings: &Settings) -> Result<Snapshot, AppError> {
    let mut delay = Duration::from_millis(500);
    let mut attempts = 0u32;
    loop {
        match settings.config.load(&settings.device_name).await {
            Ok(s) => return Ok(s),
            Err(e) if e.is_unreachable() && attempts < settings.startup_retries => {
                attempts += 1;
                tracing::warn!(error = %e, retry_in = ?delay, "configuration source unreachable; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(30));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// `host:port` of the `stowrsd` web app, or the default.
fn stowrsd_address(snapshot: &Snapshot) -> String {
    snapshot
        .web_app("stowrsd")
        .and_then(|w| {
            let rest = w.service_url.split_once("://")?.1;
            Some(rest.split('/').next()?.to_string())
        })
        .unwrap_or_else(|| DEFAULT_STOWRSD_ADDR.to_string())
}

/// This process's name among the instances of its device on a shared
/// database: device, host and control API port, which stay the same when
/// the instance restarts and differ between instances.
async fn instance_name(device: &str, listen: SocketAddr) -> String {
    // A machine without the file gets "localhost".
    let host = tokio::fs::read_to_string("/proc/sys/kernel/hostname")
        .await
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into());
    format!("{device}@{host}:{}", listen.port())
}
