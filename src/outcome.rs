//! The result of an export, in the words every layer shares: what became
//! of each instance ([`InstanceResult`], [`InstanceStatus`]), why it
//! failed ([`FailureKind`]), whether sending it again could help
//! ([`Retry`]) and the task's final state ([`Outcome`]).
//!
//! A failure's kind is set where the failure happens (the STOW-RS client,
//! the file checks, the converter); metrics labels and retry decisions
//! derive from it, never from the wording of the reason text, which is for
//! people and may change.
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
    /// Why it was not stored (`None` when it was); only for this run's
    /// outcome and metrics, not kept with the task record.
    #[serde(skip)]
    pub kind: Option<FailureKind>,
    /// Whether sending it again could succeed; only for this run's outcome.
    #[serde(skip)]
    pub retry: Retry,
}

impl InstanceResult {
    /// Stored as sent.
    pub fn completed(sop_iuid: impl Into<String>) -> InstanceResult {
        InstanceResult {
            sop_iuid: sop_iuid.into(),
            status: InstanceStatus::Completed,
            reason: None,
            kind: None,
            retry: Retry::No,
        }
    }

    /// Stored with changes or already held: `reason` says which.
    pub fn warning(sop_iuid: impl Into<String>, reason: String) -> InstanceResult {
        InstanceResult {
            sop_iuid: sop_iuid.into(),
            status: InstanceStatus::Warning,
            reason: Some(reason),
            kind: None,
            retry: Retry::No,
        }
    }

    /// Not stored, for `kind` (which decides whether another attempt may
    /// help; see [`FailureKind::retry`]); `reason` says it in words. A
    /// stored file that is gone is MISSING rather than FAILED.
    pub fn failed(
        sop_iuid: impl Into<String>,
        kind: FailureKind,
        reason: String,
    ) -> InstanceResult {
        InstanceResult {
            sop_iuid: sop_iuid.into(),
            status: if kind == FailureKind::Gone {
                InstanceStatus::Missing
            } else {
                InstanceStatus::Failed
            },
            reason: Some(reason),
            kind: Some(kind),
            retry: kind.retry(None),
        }
    }

    /// As [`InstanceResult::failed`], with the destination's `Retry-After`.
    pub fn failed_after(
        sop_iuid: impl Into<String>,
        kind: FailureKind,
        reason: String,
        retry_after: Option<std::time::Duration>,
    ) -> InstanceResult {
        InstanceResult {
            retry: kind.retry(retry_after),
            ..InstanceResult::failed(sop_iuid, kind, reason)
        }
    }
}

/// Why an instance was not stored, as it is known where it happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureKind {
    /// The destination answered this (non-success) HTTP status and did
    /// not list the instance as failed.
    Status(u16),
    /// The destination failed it: listed in FailedSOPSequence with this
    /// FailureReason (`None`: without one), or among failed parts it did
    /// not identify.
    Rejected(Option<u16>),
    /// A success status, and the instance in neither ReferencedSOPSequence
    /// nor FailedSOPSequence: silently dropped.
    NotMentioned,
    /// A success status with a body that is not a readable STOW-RS
    /// response: the same request gets the same answer.
    BadResponse,
    /// A success status with a reply too large to read: not confirmed,
    /// and sending again is safe (a duplicate is answered as stored).
    Unconfirmed,
    /// No answer: refused, reset, or the reply lost on the way.
    Transport,
    /// No answer within the response timeout (`dcmResponseTimeout`).
    Timeout,
    /// No access token from the OAuth2 endpoint; `transient` when the
    /// endpoint may give one later (no answer, 5xx).
    Token { transient: bool },
    /// Conversion to a transfer syntax the destination accepts is
    /// impossible; `shortage` when it failed for want of descriptors or
    /// memory on this host, which passes.
    Conversion { shortage: bool },
    /// The stored file is unreadable or not the size the index says;
    /// `shortage` as for conversion.
    File { shortage: bool },
    /// The stored file is gone.
    Gone,
}

impl FailureKind {
    /// Whether another attempt could succeed, honouring the destination's
    /// `Retry-After` where the kind is transient: timeouts, throttling and
    /// the usually passing server errors (PS3.18, RFC 9110), out of
    /// resources (A7xx), no answer, and shortages on this host.
    pub fn retry(self, retry_after: Option<std::time::Duration>) -> Retry {
        let transient = match self {
            FailureKind::Status(s) => matches!(s, 408 | 429 | 500 | 502 | 503 | 504),
            FailureKind::Rejected(Some(code)) => (0xA700..=0xA7FF).contains(&code),
            FailureKind::Unconfirmed | FailureKind::Transport | FailureKind::Timeout => true,
            FailureKind::Token { transient } => transient,
            FailureKind::Conversion { shortage } | FailureKind::File { shortage } => shortage,
            FailureKind::Rejected(None)
            | FailureKind::NotMentioned
            | FailureKind::BadResponse
            | FailureKind::Gone => false,
        };
        match (transient, retry_after) {
            (false, _) => Retry::No,
            (true, None) => Retry::Yes,
            (true, Some(d)) => Retry::After(d),
        }
    }

    /// The class for the `reason` label of the failure metrics: one of
    /// [`FailureKind::CLASSES`].
    pub fn class(self) -> &'static str {
        match self {
            FailureKind::Status(s) if (400..500).contains(&s) => "http_4xx",
            FailureKind::Status(s) if (500..600).contains(&s) => "http_5xx",
            FailureKind::Status(_) | FailureKind::BadResponse | FailureKind::Unconfirmed => {
                "bad_response"
            }
            FailureKind::Rejected(_) => "rejected",
            FailureKind::NotMentioned => "not_mentioned",
            FailureKind::Transport | FailureKind::Timeout => "transport",
            FailureKind::Token { .. } => "token",
            FailureKind::Conversion { .. } => "decode",
            FailureKind::File { .. } => "file",
            FailureKind::Gone => "missing",
        }
    }

    /// Every value [`FailureKind::class`] gives.
    pub const CLASSES: &'static [&'static str] = &[
        "http_4xx",
        "http_5xx",
        "transport",
        "rejected",
        "not_mentioned",
        "bad_response",
        "decode",
        "missing",
        "file",
        "token",
    ];
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_kind_decides_whether_retry_after_applies() {
        let after = Some(Duration::from_secs(7));
        let after_7 = Retry::After(Duration::from_secs(7));
        assert_eq!(FailureKind::Status(503).retry(after), after_7);
        assert_eq!(FailureKind::Status(429).retry(None), Retry::Yes);
        assert_eq!(FailureKind::Status(409).retry(after), Retry::No);
        assert_eq!(FailureKind::Rejected(Some(0xA701)).retry(after), after_7);
        assert_eq!(FailureKind::Rejected(Some(0xC000)).retry(after), Retry::No);
        assert_eq!(FailureKind::Timeout.retry(None), Retry::Yes);
        assert_eq!(FailureKind::NotMentioned.retry(None), Retry::No);
        assert_eq!(FailureKind::File { shortage: true }.retry(None), Retry::Yes);
        assert_eq!(FailureKind::Gone.retry(None), Retry::No);
    }

    #[test]
    fn a_gone_file_is_missing_and_every_class_is_listed() {
        let r = InstanceResult::failed("1", FailureKind::Gone, "gone".into());
        assert_eq!(r.status, InstanceStatus::Missing);
        for k in [
            FailureKind::Status(404),
            FailureKind::Status(500),
            FailureKind::Status(302),
            FailureKind::Rejected(None),
            FailureKind::NotMentioned,
            FailureKind::BadResponse,
            FailureKind::Unconfirmed,
            FailureKind::Transport,
            FailureKind::Timeout,
            FailureKind::Token { transient: true },
            FailureKind::Conversion { shortage: false },
            FailureKind::File { shortage: false },
            FailureKind::Gone,
        ] {
            assert!(FailureKind::CLASSES.contains(&k.class()), "{k:?}");
        }
    }
}
