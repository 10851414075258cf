//! The result of an export, in the words every layer shares: what became
//! of each instance ([`InstanceResult`], [`InstanceStatus`]), whether
//! sending it again could help ([`Retry`]) and the task's final state
//! ([`Outcome`]).
//!
//! The STOW-RS client produces these, the executor sums them up, the queues
//! store them and the metrics count them; so they sit below all of those
//! and this module knows nothing but the task record's status and counts.

use serde::Serialize;

use crate::task::{Counts, Status};

/// The final state of one task run.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub status: Status,
    pub message: String,
    pub error: Option<String>,
    pub counts: Counts,
    pub number_of_instances: u64,
    /// Whether another run could do better: some instance failed in a way
    /// worth retrying (the queue's policy then decides whether and when).
    pub retry: Retry,
}

/// The result of sending one instance, kept with the task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InstanceResult {
    #[serde(rename = "SOPInstanceUID")]
    pub sop_iuid: String,
    pub status: InstanceStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Whether sending it again could succeed; only for this run's outcome.
    #[serde(skip)]
    pub retry: Retry,
}

/// Whether a failed instance is worth sending again, and when.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Retry {
    /// The same request would fail the same way (4xx, a rejected object).
    #[default]
    No,
    /// A transient failure: connection, timeout, 408, 429, 5xx.
    Yes,
    /// Transient, and the server asked to wait this long (`Retry-After`).
    After(std::time::Duration),
}

impl Retry {
    pub fn is_worth(self) -> bool {
        self != Retry::No
    }
}

/// Per-instance status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum InstanceStatus {
    Completed,
    Warning,
    Failed,
    Missing,
}

impl InstanceStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            InstanceStatus::Completed => "COMPLETED",
            InstanceStatus::Warning => "WARNING",
            InstanceStatus::Failed => "FAILED",
            InstanceStatus::Missing => "MISSING",
        }
    }

    pub fn parse(s: &str) -> Option<InstanceStatus> {
        [
            InstanceStatus::Completed,
            InstanceStatus::Warning,
            InstanceStatus::Failed,
            InstanceStatus::Missing,
        ]
        .into_iter()
        .find(|x| x.as_str() == s)
    }

    /// Stored at the destination (a warning means stored with changes).
    pub fn is_stored(self) -> bool {
        matches!(self, InstanceStatus::Completed | InstanceStatus::Warning)
    }
}
