//! Cancelling running exports by task ID: all the control API may do to
//! the workers, kept below both so that the API does not depend on the
//! export module. Owns the map of cancellation tokens and the hook that
//! tells the other instances of a cluster ([`Broadcast`]); it must not
//! start, stop or look into the worker loops themselves.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

/// Stops running exports by task ID: all that the control API may do to
/// the workers. A cancel for a task that has not started yet is kept until
/// it starts (it then stops before its first instance).
#[derive(Clone)]
pub struct CancelHandle {
    pub(crate) running: Arc<Mutex<HashMap<String, CancellationToken>>>,
    /// Tells the other instances sharing the task records (the task may
    /// run on any of them); `None` when this process is alone.
    pub(crate) broadcast: Option<Arc<dyn Broadcast>>,
}

/// Passes a cancel on to the other instances of a cluster, which call
/// [`CancelHandle::cancel_here`] with it.
pub trait Broadcast: Send + Sync {
    fn cancel(&self, task_id: &str);
}

impl CancelHandle {
    /// Stops the export of `task_id` before its next instance, here and
    /// on every other instance of the cluster; requests in flight finish.
    pub fn cancel(&self, task_id: &str) {
        self.cancel_here(task_id);
        if let Some(b) = &self.broadcast {
            b.cancel(task_id);
        }
    }

    /// Stops the export of `task_id` if it runs (or starts) in this
    /// process; what another instance asked for.
    pub fn cancel_here(&self, task_id: &str) {
        self.token(task_id).cancel();
    }

    /// The same handle, also telling the other instances through `b`.
    pub fn with_broadcast(mut self, b: Arc<dyn Broadcast>) -> CancelHandle {
        self.broadcast = Some(b);
        self
    }

    pub(crate) fn token(&self, task_id: &str) -> CancellationToken {
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(task_id.to_string())
            .or_default()
            .clone()
    }
}
