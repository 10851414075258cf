//! Cancelling running exports by task ID: all the control API may do to
//! the workers, kept below both so that the API does not depend on the
//! export module. Owns the map of cancellation tokens; it must not start,
//! stop or look into the worker loops themselves.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

/// Stops running exports by task ID: all that the control API may do to
/// the workers. A cancel for a task that has not started yet is kept until
/// it starts (it then stops before its first instance).
#[derive(Clone)]
pub struct CancelHandle {
    pub(crate) running: Arc<Mutex<HashMap<String, CancellationToken>>>,
}

impl CancelHandle {
    /// Stops the export of `task_id` before its next instance; requests in
    /// flight finish.
    pub fn cancel(&self, task_id: &str) {
        self.token(task_id).cancel();
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
