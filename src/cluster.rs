//! Signals between the instances that share one PostgreSQL database: a
//! cancel of a task that may be running on another instance, and a reload
//! of the configuration on all of them (`POST /ctrl/reload?all=true`).
//! They travel as PostgreSQL notifications (`LISTEN`/`NOTIFY` on
//! [`CHANNEL`]), so the database the instances already share is the only
//! thing they need to reach one another.
//!
//! A notification is a nudge, not a record: the task's CANCELED status is
//! in the shared task store already when the cancel is sent, and a
//! reloaded configuration is read from its source by each instance, which
//! validates it before swapping (as a local reload does). A signal lost
//! while an instance's listening connection was down is therefore no
//! inconsistency: its running export ends at its next outcome check, and
//! the next reload brings its configuration up to date.
//!
//! Owns the listening connection (reconnected with backoff) and the
//! sending one. Must not touch the task records or decide anything: it
//! passes cancels to the local [`CancelHandle`] and reloads to the local
//! [`LiveConfig`].

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::Mutex as AsyncMutex;
use tokio_postgres::{AsyncMessage, NoTls};
use tokio_util::sync::CancellationToken;

use crate::cancel::{Broadcast, CancelHandle};
use crate::config::LiveConfig;
use crate::queue::postgres::masked;

/// The notification channel of the instances of all devices on a database.
pub const CHANNEL: &str = "stow_exporter_control";

/// Longest wait between attempts to listen again after the connection
/// dropped (database restarted or unreachable).
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Why a signal could not be sent or the channel not listened to.
#[derive(Debug, thiserror::Error)]
pub enum SignalError {
    #[error("cluster signals over {database}: {context}: {source}")]
    Postgres {
        /// The URL, password masked.
        database: String,
        context: &'static str,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("cluster signals over {database}: the listening connection ended")]
    Closed { database: String },
}

/// What one instance tells the others.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signal {
    /// Stop the export of this task before its next instance.
    Cancel(String),
    /// Reload the configuration from its source (validate, then swap).
    Reload,
}

impl Signal {
    /// The notification payload: `<kind> <sender> [<task ID>]`. The sender
    /// lets an instance skip what it sent itself.
    fn payload(&self, sender: &str) -> String {
        match self {
            Signal::Cancel(id) => format!("cancel {sender} {id}"),
            Signal::Reload => format!("reload {sender}"),
        }
    }

    /// The signal of a payload and its sender; `None` for a payload this
    /// version does not know (a newer instance's), which is ignored.
    fn parse(payload: &str) -> Option<(Signal, &str)> {
        let mut words = payload.split(' ');
        match (words.next()?, words.next()?, words.next()) {
            ("cancel", sender, Some(id)) if !id.is_empty() => {
                Some((Signal::Cancel(id.to_string()), sender))
            }
            ("reload", sender, None) => Some((Signal::Reload, sender)),
            _ => None,
        }
    }
}

/// The sending side; clones share the connection.
#[derive(Clone)]
pub struct Signals {
    url: Arc<str>,
    database: Arc<str>,
    /// This process among the instances; sender of its signals.
    instance: Arc<str>,
    client: Arc<AsyncMutex<Option<tokio_postgres::Client>>>,
    /// Whether the listening connection has run its `LISTEN`: until then
    /// (start-up, or an outage) signals of the others do not reach this
    /// instance, and readiness says so.
    listening: Arc<AtomicBool>,
}

impl std::fmt::Debug for Signals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signals")
            .field("database", &self.database)
            .field("instance", &self.instance)
            .finish()
    }
}

impl Signals {
    /// Signals over the database at `url` (a secret: errors and logs show
    /// it masked), sent as `instance`.
    pub fn new(url: &str, instance: &str) -> Signals {
        Signals {
            url: url.into(),
            database: masked(url).into(),
            instance: instance.into(),
            client: Arc::new(AsyncMutex::new(None)),
            listening: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Whether signals of the other instances reach this one now.
    pub fn is_listening(&self) -> bool {
        self.listening.load(Ordering::Acquire)
    }

    fn err(&self, context: &'static str) -> impl Fn(tokio_postgres::Error) -> SignalError + '_ {
        move |source| SignalError::Postgres {
            database: self.database.to_string(),
            context,
            source,
        }
    }

    /// Tells every other instance; reconnects once when the connection
    /// was lost.
    pub async fn send(&self, signal: &Signal) -> Result<(), SignalError> {
        let payload = signal.payload(&self.instance);
        let mut client = self.client.lock().await;
        for attempt in 0..2 {
            if client.as_ref().is_none_or(|c| c.is_closed()) {
                let (c, conn) = tokio_postgres::connect(&self.url, NoTls)
                    .await
                    .map_err(self.err("connect"))?;
                tokio::spawn(async move {
                    let _ = conn.await;
                });
                *client = Some(c);
            }
            let c = client.as_ref().expect("connected above");
            match c
                .execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &payload])
                .await
            {
                Ok(_) => return Ok(()),
                // A connection closed since its last use: once more on a
                // new one.
                Err(e) if attempt == 0 && c.is_closed() => {
                    tracing::debug!(error = %e, "signal connection closed; reconnecting");
                    *client = None;
                }
                Err(e) => return Err(self.err("notify")(e)),
            }
        }
        unreachable!("the second attempt returns")
    }

    /// Listens until `stop`: a cancel from another instance stops the
    /// export here if it runs here; a reload reloads `config` (which
    /// validates before it swaps). The connection is opened again with
    /// backoff when it drops; that is logged once per outage, not per try.
    pub async fn listen(self, cancel: CancelHandle, config: LiveConfig, stop: CancellationToken) {
        let mut backoff = Duration::from_secs(1);
        let mut down = false;
        while !stop.is_cancelled() {
            match self.listen_once(&cancel, &config, &stop, &mut down).await {
                Ok(()) => return,
                Err(e) => {
                    if !down {
                        tracing::warn!(error = %e, "cluster signals unavailable; retrying");
                        down = true;
                    }
                }
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// One listening connection, until it fails (`Err`) or `stop` (`Ok`).
    async fn listen_once(
        &self,
        cancel: &CancelHandle,
        config: &LiveConfig,
        stop: &CancellationToken,
        down: &mut bool,
    ) -> Result<(), SignalError> {
        let (client, mut conn) = tokio_postgres::connect(&self.url, NoTls)
            .await
            .map_err(self.err("connect to listen"))?;
        // The connection delivers notifications only while it is polled;
        // they go through a channel to this loop.
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let driver = tokio::spawn(async move {
            let mut messages = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
            while let Some(m) = messages.next().await {
                match m {
                    Ok(AsyncMessage::Notification(n)) => {
                        if tx.send(Ok(n.payload().to_string())).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                }
            }
        });
        let listening = client
            .batch_execute(&format!("LISTEN {CHANNEL}"))
            .await
            .map_err(self.err("listen"));
        if let Err(e) = listening {
            driver.abort();
            return Err(e);
        }
        self.listening.store(true, Ordering::Release);
        if *down {
            tracing::info!("cluster signals available again");
            *down = false;
        }
        tracing::debug!(database = %self.database, "listening for cluster signals");
        let result = loop {
            tokio::select! {
                _ = stop.cancelled() => break Ok(()),
                m = rx.recv() => match m {
                    Some(Ok(payload)) => self.handle(&payload, cancel, config).await,
                    Some(Err(e)) => break Err(self.err("listen")(e)),
                    // The connection ended without an error: listen again.
                    None => break Err(SignalError::Closed {
                        database: self.database.to_string(),
                    }),
                },
            }
        };
        self.listening.store(false, Ordering::Release);
        driver.abort();
        result
    }

    async fn handle(&self, payload: &str, cancel: &CancelHandle, config: &LiveConfig) {
        let Some((signal, sender)) = Signal::parse(payload) else {
            tracing::debug!(payload, "unknown cluster signal ignored");
            return;
        };
        if sender == &*self.instance {
            return;
        }
        match signal {
            Signal::Cancel(id) => {
                tracing::info!(task = %id, from = sender, "cancel from another instance");
                cancel.cancel_here(&id);
            }
            Signal::Reload => {
                tracing::info!(from = sender, "reload asked by another instance");
                if let Err(e) = config.reload().await {
                    tracing::error!(error = %e, "reload refused; the running configuration stays");
                }
            }
        }
    }
}

impl Broadcast for Signals {
    fn cancel(&self, task_id: &str) {
        // The cancel is recorded in the shared store already; the signal
        // only makes the instance running it stop sooner, so it is sent
        // without holding up the API's answer.
        let (signals, id) = (self.clone(), task_id.to_string());
        tokio::spawn(async move {
            if let Err(e) = signals.send(&Signal::Cancel(id.clone())).await {
                tracing::warn!(task = %id, error = %e, "cannot tell the other instances of a cancel");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_read_back_and_unknown_ones_are_ignored() {
        for s in [Signal::Cancel("42".into()), Signal::Reload] {
            assert_eq!(Signal::parse(&s.payload("a@h:1")), Some((s, "a@h:1")));
        }
        assert_eq!(Signal::parse("cancel a@h:1"), None);
        assert_eq!(Signal::parse("pause a@h:1 7"), None);
        assert_eq!(Signal::parse(""), None);
    }
}
