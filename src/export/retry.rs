//! dcm4chee's retry policy of a `dcmQueue`.
//!
//! COMPLETED and CANCELED are final; WARNING is final unless
//! `dcmRetryOnWarning`; FAILED is retried. The n-th failure waits
//! `dcmRetryDelay × (dcmRetryDelayMultiplier/100)^(n-1)`, capped at
//! `dcmMaxRetryDelay`, as long as n ≤ `dcmMaxRetries`; after that the task
//! keeps its final status and stays visible.
//!
//! Every delay saturates at [`MAX_RETRY_DELAY`] (one year), whatever the
//! queue says or the task's failure count is: the caller adds it to the
//! current time, which therefore can never overflow.

use std::time::Duration;

use crate::config::QueueDesc;
use crate::config::model::MAX_RETRY_DELAY;
use crate::outcome::{Outcome, Retry};
use crate::task::Status;

/// The delay before retry number `n` (1-based), at most
/// `dcmMaxRetryDelay` and never more than [`MAX_RETRY_DELAY`].
pub fn delay(q: &QueueDesc, n: u32) -> Duration {
    let cap = q
        .max_retry_delay
        .map_or(MAX_RETRY_DELAY, |m| m.min(MAX_RETRY_DELAY))
        .as_millis();
    let mut d = q.retry_delay.as_millis().min(cap);
    for _ in 2..=n {
        let next = d.saturating_mul(u128::from(q.retry_delay_multiplier)) / 100;
        // At the cap, or at a fixed point (0, or a multiplier of 100 %), it
        // stays there: no need to count up to a huge `n`.
        if next >= cap || next == d {
            d = next.min(cap);
            break;
        }
        d = next;
    }
    // d <= cap <= one year of milliseconds, far below u64::MAX.
    Duration::from_millis(u64::try_from(d).unwrap_or(u64::MAX))
}

/// When a task that ended with `outcome` after `failures` earlier failures
/// is to run again, if at all. Unlike dcm4chee, a run whose failures are
/// all of the kind that would fail again (4xx, a rejected or undecodable
/// object) is not retried, and a server's `Retry-After` lengthens the wait.
///
/// The wait is at most [`MAX_RETRY_DELAY`], so `now + wait` is always a
/// representable time.
pub fn next_attempt(q: &QueueDesc, outcome: &Outcome, failures: u32) -> Option<Duration> {
    let by_status = match outcome.status {
        Status::Failed => true,
        Status::Warning => q.retry_on_warning,
        _ => false,
    };
    let n = failures.saturating_add(1);
    if !by_status || n > q.max_retries {
        return None;
    }
    let wait = match outcome.retry {
        Retry::No => return None,
        Retry::Yes => delay(q, n),
        Retry::After(d) => delay(q, n).max(d),
    };
    Some(wait.min(MAX_RETRY_DELAY))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::Counts;

    fn outcome(status: Status, retry: Retry) -> Outcome {
        Outcome {
            status,
            message: String::new(),
            error: None,
            counts: Counts::default(),
            number_of_instances: 1,
            retry,
        }
    }

    #[test]
    fn failures_not_worth_retrying_are_final_and_retry_after_is_honoured() {
        let q = queue(5, 60, 100, None);
        assert!(next_attempt(&q, &outcome(Status::Failed, Retry::No), 0).is_none());
        assert_eq!(
            next_attempt(
                &q,
                &outcome(Status::Failed, Retry::After(Duration::from_secs(600))),
                0
            ),
            Some(Duration::from_secs(600))
        );
        assert_eq!(
            next_attempt(
                &q,
                &outcome(Status::Failed, Retry::After(Duration::from_secs(5))),
                0
            ),
            Some(Duration::from_secs(60))
        );
    }

    fn queue(retries: u32, delay_s: u64, mult: u32, max_s: Option<u64>) -> QueueDesc {
        QueueDesc {
            name: "Q".into(),
            dn: "dcmQueueName=Q".into(),
            description: None,
            max_tasks_parallel: 1,
            max_retries: retries,
            retry_delay: Duration::from_secs(delay_s),
            retry_delay_multiplier: mult,
            max_retry_delay: max_s.map(Duration::from_secs),
            retry_on_warning: false,
            installed: true,
            schedule: Default::default(),
        }
    }

    #[test]
    fn dcm4chee_default_export_queue() {
        // PT30S, 200 %, max PT10M, 10 retries: 30, 60, 120, 240, 480, then 600.
        let q = queue(10, 30, 200, Some(600));
        let secs: Vec<u64> = (0..10)
            .map(|f| {
                next_attempt(&q, &outcome(Status::Failed, Retry::Yes), f)
                    .unwrap()
                    .as_secs()
            })
            .collect();
        assert_eq!(secs, [30, 60, 120, 240, 480, 600, 600, 600, 600, 600]);
        assert_eq!(
            next_attempt(&q, &outcome(Status::Failed, Retry::Yes), 10),
            None,
            "past the last retry it stays FAILED"
        );
    }

    #[test]
    fn what_is_retried() {
        let mut q = queue(3, 1, 100, None);
        assert!(next_attempt(&q, &outcome(Status::Completed, Retry::Yes), 0).is_none());
        assert!(next_attempt(&q, &outcome(Status::Canceled, Retry::Yes), 0).is_none());
        assert!(next_attempt(&q, &outcome(Status::Warning, Retry::Yes), 0).is_none());
        q.retry_on_warning = true;
        assert_eq!(
            next_attempt(&q, &outcome(Status::Warning, Retry::Yes), 0),
            Some(Duration::from_secs(1))
        );
        assert_eq!(
            next_attempt(
                &queue(0, 60, 100, None),
                &outcome(Status::Failed, Retry::Yes),
                0
            ),
            None,
            "dcmMaxRetries defaults to 0"
        );
    }

    #[test]
    fn sub_second_delays_and_no_overflow() {
        let mut q = queue(50, 0, 300, None);
        q.retry_delay = Duration::from_millis(200);
        assert_eq!(delay(&q, 1), Duration::from_millis(200));
        assert_eq!(delay(&q, 2), Duration::from_millis(600));
        assert!(delay(&q, 50) > Duration::from_secs(1_000_000));
        assert_eq!(delay(&q, 50), MAX_RETRY_DELAY, "saturates at one year");
    }

    #[test]
    fn retry_times_saturate_and_can_be_added_to_now() {
        // Far beyond what the configuration accepts (a QueueDesc built in
        // code): the largest delay, multiplier and failure count.
        let mut q = queue(u32::MAX, u64::MAX / 4, u32::MAX, None);
        q.retry_delay = Duration::MAX;
        for failures in [0, 1, 2, 10, 1000, u32::MAX - 1, u32::MAX] {
            for retry in [Retry::Yes, Retry::After(Duration::MAX)] {
                let Some(d) = next_attempt(&q, &outcome(Status::Failed, retry), failures) else {
                    assert!(failures >= u32::MAX - 1, "{failures}");
                    continue;
                };
                assert!(d <= MAX_RETRY_DELAY, "{failures}: {d:?}");
                // What the worker does with it.
                let at = chrono::Utc::now()
                    + chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX);
                assert!(at > chrono::Utc::now());
            }
        }
        // A configured maximum below the cap applies; one above it does not.
        q.max_retry_delay = Some(Duration::from_secs(600));
        assert_eq!(delay(&q, 7), Duration::from_secs(600));
        q.max_retry_delay = Some(Duration::MAX);
        assert_eq!(delay(&q, 7), MAX_RETRY_DELAY);
        // A shrinking multiplier reaches zero and stays there, quickly.
        let q = queue(u32::MAX, 1, 1, None);
        assert_eq!(delay(&q, u32::MAX), Duration::ZERO);
    }
}
