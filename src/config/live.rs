//! The live configuration: the one owner of the configuration source, the
//! snapshot the service runs on, and the reload that replaces it.
//!
//! [`LiveConfig::reload`] reads the source, validates it into a new
//! [`Snapshot`] and swaps it in only when valid, one reload at a time; a
//! task in flight keeps the `Arc<Snapshot>` it started with, so a reload
//! never changes it. [`LiveConfig::watch`] is `serve --watch`: it polls the
//! source's fingerprint and reloads when it changed. Whoever must react to
//! a new snapshot (the workers, which start a worker for a new queue)
//! subscribes with [`LiveConfig::subscribe`]; the control API only calls
//! [`LiveConfig::reload`] and reads [`LiveConfig::current`].
//!
//! Owns the swap and its lock; it must not know who subscribes (no
//! imports from `export`, `api` or `queue`).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Mutex, watch};
use tokio_util::sync::CancellationToken;

use super::{ConfigSource, LoadError, Snapshot};

/// The configuration the service runs on, and how it is replaced. Cheap to
/// clone: every clone is the same configuration.
#[derive(Clone)]
pub struct LiveConfig {
    inner: Arc<Inner>,
}

struct Inner {
    source: ConfigSource,
    device_name: String,
    current: watch::Sender<Arc<Snapshot>>,
    /// Serialises reloads: two at once must not race on the swap (the
    /// older read could be swapped in last).
    reload: Mutex<()>,
}

impl std::fmt::Debug for LiveConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveConfig")
            .field("source", &self.inner.source.to_string())
            .field("device_name", &self.inner.device_name)
            .finish_non_exhaustive()
    }
}

impl LiveConfig {
    /// Starts from `snapshot`, already loaded from `source` for
    /// `device_name`.
    pub fn new(source: ConfigSource, device_name: &str, snapshot: Snapshot) -> LiveConfig {
        let (current, _) = watch::channel(Arc::new(snapshot));
        LiveConfig {
            inner: Arc::new(Inner {
                source,
                device_name: device_name.to_string(),
                current,
                reload: Mutex::new(()),
            }),
        }
    }

    /// The snapshot to run a task on: kept by the caller for as long as the
    /// task runs.
    pub fn current(&self) -> Arc<Snapshot> {
        self.inner.current.borrow().clone()
    }

    /// Notified after every swap.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.inner.current.subscribe()
    }

    /// Where the configuration is read from (displays without secrets).
    pub fn source(&self) -> &ConfigSource {
        &self.inner.source
    }

    /// The archive device whose exporters run.
    pub fn device_name(&self) -> &str {
        &self.inner.device_name
    }

    /// Re-reads the source; swaps the snapshot only when the new one is
    /// valid, else the running one stays and the error says why.
    pub async fn reload(&self) -> Result<Arc<Snapshot>, LoadError> {
        let _one_at_a_time = self.inner.reload.lock().await;
        let snap = self.inner.source.load(&self.inner.device_name).await?;
        for w in &snap.warnings {
            tracing::warn!("{w}");
        }
        let exporters = snap.exporters.len();
        let snap = Arc::new(snap);
        self.inner.current.send_replace(snap.clone());
        tracing::info!(exporters, source = %self.inner.source, "configuration reloaded");
        Ok(snap)
    }

    /// `serve --watch`: checks the source every `every` and reloads when
    /// its fingerprint changed (for LDAP the DNs and modification stamps,
    /// for LDIF the files' names, sizes and modification times), until
    /// `stop`.
    pub async fn watch(&self, every: Duration, stop: CancellationToken) {
        let mut last = self.inner.source.fingerprint().await;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
            let now = self.inner.source.fingerprint().await;
            match (&last, &now) {
                (_, Err(e)) => {
                    tracing::warn!(error = %e, "cannot check the configuration source for changes");
                    continue;
                }
                (Ok(a), Ok(b)) if a == b => continue,
                _ => {}
            }
            tracing::info!(source = %self.inner.source, "configuration source changed; reloading");
            if let Err(e) = self.reload().await {
                tracing::error!(error = %e, "automatic reload refused; the running configuration stays");
            }
            last = now;
        }
    }
}
