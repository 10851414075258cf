//! The task outcome rules and dcm4chee's outcome message.
//!
//! dcm4chee reports an export in which every instance failed as WARNING
//! (and so does not retry it by default). Here a task that stored nothing
//! is FAILED; one that stored some but not all is WARNING; COMPLETED means
//! every instance was stored without a warning.

use crate::outcome::{InstanceResult, InstanceStatus, Outcome, Retry};
use crate::task::{Counts, Status};

/// How many failure reasons the task's errorMessage lists.
const MAX_REASONS: usize = 3;

/// Counts per-instance results of one run.
#[derive(Debug, Default)]
pub struct Tally {
    counts: Counts,
    /// Distinct failure reasons with how often each occurred, in order seen.
    reasons: Vec<(String, u64)>,
    /// Whether any failure is worth retrying, and the longest wait asked for.
    retry: Retry,
}

impl Tally {
    pub fn add(&mut self, r: &InstanceResult) {
        match r.status {
            InstanceStatus::Completed => self.counts.completed += 1,
            InstanceStatus::Warning => self.counts.warning += 1,
            InstanceStatus::Failed => self.counts.failed += 1,
            InstanceStatus::Missing => self.counts.missing += 1,
        }
        if matches!(r.status, InstanceStatus::Failed | InstanceStatus::Missing) {
            self.retry = match (self.retry, r.retry) {
                (Retry::After(a), Retry::After(b)) => Retry::After(a.max(b)),
                (Retry::After(a), _) | (_, Retry::After(a)) => Retry::After(a),
                (Retry::No, Retry::No) => Retry::No,
                _ => Retry::Yes,
            };
            let reason = r.reason.clone().unwrap_or_else(|| "no reason given".into());
            match self.reasons.iter_mut().find(|(s, _)| *s == reason) {
                Some((_, n)) => *n += 1,
                None => self.reasons.push((reason, 1)),
            }
        }
    }

    /// Counts an instance not attempted because the task was canceled.
    pub fn add_remaining(&mut self) {
        self.counts.remaining += 1;
    }

    pub fn counts(&self) -> Counts {
        self.counts
    }

    /// The outcome of a run over `matched` instances to destination `dest`.
    pub fn outcome(&self, entity: &str, dest: &str, matched: u64) -> Outcome {
        let c = self.counts;
        let stored = c.completed + c.warning;
        let not_stored = c.failed + c.missing;
        let status = if c.remaining > 0 {
            Status::Canceled
        } else if stored == 0 {
            Status::Failed
        } else if not_stored > 0 || c.warning > 0 {
            Status::Warning
        } else {
            Status::Completed
        };
        let mut counts = format!("completed:{}", c.completed);
        for (name, n) in [
            ("warning", c.warning),
            ("failed", c.failed),
            ("missing", c.missing),
        ] {
            if n > 0 {
                counts.push_str(&format!(", {name}:{n}"));
            }
        }
        let message = if c.remaining > 0 {
            format!(
                "Export {entity} to {dest} canceled - remaining:{}, {counts}",
                c.remaining
            )
        } else {
            format!("Export {entity} to {dest} - {counts}")
        };
        let error = (!self.reasons.is_empty()).then(|| {
            let mut parts: Vec<String> = self
                .reasons
                .iter()
                .take(MAX_REASONS)
                .map(|(r, n)| {
                    if *n > 1 {
                        format!("{n}\u{d7} {r}")
                    } else {
                        r.clone()
                    }
                })
                .collect();
            if self.reasons.len() > MAX_REASONS {
                parts.push(format!(
                    "and {} other reasons",
                    self.reasons.len() - MAX_REASONS
                ));
            }
            parts.join("; ")
        });
        Outcome {
            status,
            message,
            error,
            counts: c,
            number_of_instances: matched,
            retry: self.retry,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(status: InstanceStatus, reason: Option<&str>) -> InstanceResult {
        InstanceResult {
            sop_iuid: "1".into(),
            status,
            reason: reason.map(str::to_string),
            kind: None,
            retry: Default::default(),
        }
    }

    fn tally(rs: &[InstanceResult]) -> Outcome {
        let mut t = Tally::default();
        rs.iter().for_each(|x| t.add(x));
        t.outcome("Study[uid=1.2]", "DCM4CHEE", rs.len() as u64)
    }

    #[test]
    fn all_completed() {
        let o = tally(&[
            r(InstanceStatus::Completed, None),
            r(InstanceStatus::Completed, None),
        ]);
        assert_eq!(o.status, Status::Completed);
        assert_eq!(o.message, "Export Study[uid=1.2] to DCM4CHEE - completed:2");
        assert_eq!(o.error, None);
    }

    #[test]
    fn some_failed_is_warning_in_dcm4chee_form() {
        let mut rs = vec![r(InstanceStatus::Completed, None); 12];
        rs.push(r(InstanceStatus::Failed, Some("HTTP 409 Conflict")));
        let o = tally(&rs);
        assert_eq!(o.status, Status::Warning);
        assert_eq!(
            o.message,
            "Export Study[uid=1.2] to DCM4CHEE - completed:12, failed:1"
        );
        assert_eq!(o.error.as_deref(), Some("HTTP 409 Conflict"));
    }

    #[test]
    fn every_instance_failed_is_failed_not_warning() {
        let o = tally(&[
            r(InstanceStatus::Failed, Some("HTTP 503")),
            r(InstanceStatus::Failed, Some("HTTP 503")),
            r(InstanceStatus::Missing, Some("gone")),
        ]);
        assert_eq!(o.status, Status::Failed);
        assert_eq!(
            o.message,
            "Export Study[uid=1.2] to DCM4CHEE - completed:0, failed:2, missing:1"
        );
        assert_eq!(o.error.as_deref(), Some("2\u{d7} HTTP 503; gone"));
    }

    #[test]
    fn warnings_only_are_reported_as_warning() {
        let o = tally(&[
            r(InstanceStatus::Completed, None),
            r(InstanceStatus::Warning, Some("WarningReason 0xB000")),
        ]);
        assert_eq!(o.status, Status::Warning);
        assert_eq!(
            o.message,
            "Export Study[uid=1.2] to DCM4CHEE - completed:1, warning:1"
        );
    }

    #[test]
    fn canceled_with_remaining() {
        let mut t = Tally::default();
        t.add(&r(InstanceStatus::Completed, None));
        t.add_remaining();
        t.add_remaining();
        let o = t.outcome("Study[uid=1.2]", "DCM4CHEE", 3);
        assert_eq!(o.status, Status::Canceled);
        assert_eq!(
            o.message,
            "Export Study[uid=1.2] to DCM4CHEE canceled - remaining:2, completed:1"
        );
    }

    #[test]
    fn reasons_are_capped() {
        let rs: Vec<_> = (0..5)
            .map(|i| r(InstanceStatus::Failed, Some(&format!("r{i}"))))
            .collect();
        assert_eq!(
            tally(&rs).error.as_deref(),
            Some("r0; r1; r2; and 2 other reasons")
        );
    }
}
