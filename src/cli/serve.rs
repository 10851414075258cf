//! The long-running commands: `serve` (the whole service) and `stowrsd`
//! (the receiver alone). Each checks what can be checked before anything
//! is bound (tokens, TLS files, the configuration source), then runs until
//! SIGTERM or Ctrl-C.
//!
//! Owns the order of those start-up checks; the service itself is
//! [`crate::app`], the receiver [`crate::stowrsd`].

use std::time::Duration;

use crate::app::{Application, Settings};
use crate::cli::CliError;
use crate::cli::args::{ServeArgs, StowrsdArgs, cleartext_warning};
use crate::cli::export::queue_url;
use crate::http_server;
use crate::stowrsd::{self, StowrsdOptions};

/// `serve`: the workers of every queue, the control API and, with
/// `--stowrsd`, the built-in receiver.
pub async fn serve(a: ServeArgs) -> Result<(), CliError> {
    // Refused before anything is bound or loaded.
    let api_token = crate::token::load_token(a.api_token_file.as_deref())?;
    crate::api::ops::check_listen(&a.listen, api_token.as_ref())?;
    let tls = crate::stow::tls::TlsSettings {
        ca_files: a.tls_ca_file,
        client_cert: a.tls_client_cert,
        client_key: a.tls_client_key,
    };
    // A wrong path fails at start, not in every task.
    tls.check()?;
    let source = a.config.source().await?;
    if let Some(w) = cleartext_warning(&source) {
        tracing::warn!("{w}");
    }
    // The token is only read when the receiver runs: the variable may be
    // set for a separate `stowrsd` on the same machine. The limits bound
    // STOW-RS into the archive as well, receiver or not.
    let stowrsd_options = match &a.stowrsd {
        Some(_) => a.stowrsd_limits.options().await?,
        None => StowrsdOptions {
            limits: a.stowrsd_limits.limits(),
            min_free_disk: a.stowrsd_limits.stowrsd_min_free_disk,
            ..StowrsdOptions::default()
        },
    };
    let app = Application::build(Settings {
        config: source,
        device_name: a.config.device_name,
        data_dir: a.data,
        listen: a.listen,
        stowrsd_dir: a.stowrsd,
        stowrsd_bind: a.stowrsd_bind,
        stowrsd_options,
        // About five minutes of backoff before giving up.
        startup_retries: 14,
        watch: a.watch.filter(|s| *s > 0).map(Duration::from_secs),
        zone: a.time_zone,
        queue_url: queue_url(&a.queue)?,
        transcode_jobs: a.transcode_jobs,
        transcode_limits: crate::transcode::Limits {
            max_object_bytes: a.transcode_max_mib.saturating_mul(1 << 20),
        },
        tls,
        queue_options: a.queue_args.options(),
        database: a.database.url().await?,
        dicom_listen: a.dicom_listen.map(|v| {
            v.into_iter()
                .filter(|x| !x.eq_ignore_ascii_case("none") && !x.is_empty())
                .collect()
        }),
        scp_options: crate::scp::ScpOptions {
            max_associations: usize::try_from(a.dicom_max_associations).unwrap_or(64),
            idle_timeout: Duration::from_secs(a.dicom_idle_timeout),
            max_object_bytes: a.dicom_max_object_size,
            ..Default::default()
        },
    })
    .await?
    .with_api_token(api_token)
    .with_shutdown_timeout(Duration::from_secs(a.shutdown_timeout))
    .with_allowed_hosts(a.allowed_host);
    let listeners = 1 + usize::from(app.stowrsd_addr().is_some());
    let app = app.with_listener_limits(a.listener.limits(listeners));
    app.run_until_stopped(shutdown_signal()).await?;
    Ok(())
}

/// `stowrsd`: the built-in STOW-RS receiver alone.
pub async fn stowrsd(a: StowrsdArgs) -> Result<(), CliError> {
    // A bad token fails before anything is bound.
    let opts = a.limits.options(a.dir.clone()).await?;
    // Swept before the port is bound: a client that can connect finds the
    // store clean.
    if let Some(d) = &a.dir {
        tokio::fs::create_dir_all(d)
            .await
            .map_err(|source| CliError::CreateDir {
                path: d.clone(),
                source,
            })?;
        stowrsd::sweep_store(d).await;
    }
    let listener = tokio::net::TcpListener::bind(&a.bind)
        .await
        .map_err(|source| CliError::Listen {
            addr: a.bind.clone(),
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| CliError::Listen {
        addr: a.bind.clone(),
        source,
    })?;
    stowrsd::access::check_listen(
        &addr,
        opts.token.as_ref(),
        stowrsd::access::TokenOption::Stowrsd,
    )?;
    tracing::info!(
        %addr,
        store = ?a.dir,
        ignore = a.ignore,
        limits = ?opts.limits,
        min_free_disk = opts.min_free_disk,
        overwrite = opts.overwrite,
        token = opts.token.is_some(),
        "stowrsd listening"
    );
    http_server::serve(
        listener,
        stowrsd::router(opts),
        &a.listener.limits(1),
        shutdown_signal(),
    )
    .await
    .map_err(|source| CliError::Serve { source })?;
    Ok(())
}

/// Resolves on SIGTERM or Ctrl-C: the start of a graceful shutdown.
pub async fn shutdown_signal() {
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
