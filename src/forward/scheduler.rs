//! Turns pending exports into export tasks once they are due.
//!
//! A pending export (recorded with the instance that asked for it, see
//! [`super::Receiver`]) becomes one ordinary task on its exporter's queue,
//! embedded or RabbitMQ, with the rule's name as its `batchID`, so the
//! monitor lists and filters a rule's tasks as a batch; unless a task of
//! the same exporter and entity is still SCHEDULED, which the new
//! instances join (it lists the entity's instances when it starts).
//! A follow-up (the rule's earlier task of the entity has run) waits until
//! that task has ended and starts with its stored instances carried over,
//! so it sends only the instances that arrived since; a rescheduled task
//! still sends everything. The task is queued
//! first and the pending export removed after: a crash in between queues
//! the export a second time (the destination answers the instances it
//! holds as already stored) rather than losing it. With several instances
//! on one database each pending export is claimed by one of them
//! ([`crate::archive::EXPORT_CLAIM`]).
//!
//! Owns the loop and its waiting. Must not touch the index's tables (it
//! goes through [`Archive`]) or run exports (the workers do).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::archive::{Archive, PendingExport};
use crate::config::LiveConfig;
use crate::metrics::Metrics;
use crate::queue::{NewTask, Submit};
use crate::task::{Status, TaskRequest};

/// Pending exports queued per round.
const BATCH: usize = 200;
/// The longest wait between looks at the pending exports: another
/// instance on the same database may have recorded one due sooner than
/// this one knows of.
const MAX_WAIT: Duration = Duration::from_secs(2);
/// The rule's earlier tasks of an entity whose results a follow-up task
/// carries over.
const EARLIER_TASKS: u64 = 3;
/// How long a due export waits while the rule's task of its entity runs.
const FOLLOW_UP_WAIT: chrono::TimeDelta = chrono::TimeDelta::milliseconds(250);
/// How long a follow-up task is held so that its carried-over results are
/// recorded before a worker takes it.
const CARRY_OVER_DELAY: chrono::TimeDelta = chrono::TimeDelta::milliseconds(300);
/// The wait after the index or the queue failed.
const RETRY_WAIT: Duration = Duration::from_secs(1);

/// Queues due pending exports until `stop`; `wake` says that one may be
/// due now.
pub async fn run(
    archive: Archive,
    submit: Submit,
    live: LiveConfig,
    metrics: Arc<Metrics>,
    wake: Arc<Notify>,
    stop: CancellationToken,
) {
    // Logged once per outage, not once per round.
    let mut failing = false;
    loop {
        let wait = match round(&archive, &submit, &live, &metrics).await {
            Ok(full) => {
                if failing {
                    tracing::info!("export rules: pending exports are queued again");
                    failing = false;
                }
                if full {
                    Duration::ZERO
                } else {
                    next_wait(&archive).await
                }
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, "export rules: cannot queue pending exports; retrying");
                    failing = true;
                }
                RETRY_WAIT
            }
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = wake.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// Why a round stopped.
#[derive(Debug, thiserror::Error)]
enum RoundError {
    #[error(transparent)]
    Archive(#[from] crate::archive::ArchiveError),
    #[error("exporter {exporter}: {source}")]
    Queue {
        exporter: String,
        #[source]
        source: crate::queue::QueueError,
    },
}

/// Queues what is due; true when a whole batch was due (more may be).
async fn round(
    archive: &Archive,
    submit: &Submit,
    live: &LiveConfig,
    metrics: &Metrics,
) -> Result<bool, RoundError> {
    let due = archive.due_exports(Utc::now(), BATCH).await?;
    let full = due.len() == BATCH;
    let snapshot = live.current();
    for export in due {
        let Some(exporter) = snapshot.exporter(&export.exporter_id) else {
            // Removed from the configuration since: kept (claimed again
            // after the claim expires), so that restoring the exporter
            // forwards what was received meanwhile.
            tracing::warn!(
                exporter = %export.exporter_id,
                rule = %export.rule,
                study = %export.study_iuid,
                "export rule names an exporter that is not configured now; the export waits"
            );
            continue;
        };
        let request = request(&export);
        let queue_error = |source| RoundError::Queue {
            exporter: export.exporter_id.clone(),
            source,
        };
        if let Some(t) = submit.waiting(&request).await.map_err(queue_error)? {
            // Instances arriving faster than the queue drains (dcmDuration
            // zero) join the task that has not started instead of each
            // making one that re-sends the entity.
            tracing::debug!(
                task = %t.task_id,
                rule = %export.rule,
                study = %export.study_iuid,
                "export rule: the entity's task has not started; the new instances join it"
            );
            archive.finish_export(&export).await?;
            continue;
        }
        // A follow-up of the rule's earlier task for this entity sends only
        // what that task did not store: while the earlier one runs, wait
        // for its results; then carry them over.
        let earlier = submit
            .earlier(&request, EARLIER_TASKS)
            .await
            .map_err(queue_error)?;
        if earlier.iter().any(|t| t.status == Status::InProcess) {
            let mut later = export.clone();
            later.due = Utc::now() + FOLLOW_UP_WAIT;
            archive.add_exports(vec![later]).await?;
            continue;
        }
        let mut carried = BTreeMap::new();
        for t in &earlier {
            for r in submit.stored_by(&t.task_id).await.map_err(queue_error)? {
                carried.entry(r.sop_iuid.clone()).or_insert(r);
            }
        }
        let mut request = request;
        if !carried.is_empty() {
            // Not taken before its carried-over results are recorded.
            request.scheduled_time = Some(Utc::now() + CARRY_OVER_DELAY);
        }
        let task = NewTask::for_exporter(request, snapshot.device_name.clone(), exporter);
        let created = submit.publish(task).await.map_err(queue_error)?;
        if !carried.is_empty() {
            let n = carried.len();
            match submit
                .carry_over(&created.task_id, carried.into_values().collect())
                .await
            {
                Ok(()) => tracing::info!(
                    task = %created.task_id,
                    rule = %export.rule,
                    carried = n,
                    "export rule follow-up: instances the rule's earlier tasks stored are not sent again"
                ),
                // The task then sends the whole entity: more traffic, no loss.
                Err(e) => {
                    tracing::warn!(task = %created.task_id, error = %e, "cannot carry over the earlier task's results")
                }
            }
        }
        tracing::info!(
            task = %created.task_id,
            rule = %export.rule,
            exporter = %export.exporter_id,
            study = %export.study_iuid,
            "export rule created a task"
        );
        metrics.rule_task_created(&export.rule, &export.exporter_id);
        archive.finish_export(&export).await?;
    }
    Ok(full)
}

fn request(export: &PendingExport) -> TaskRequest {
    TaskRequest {
        exporter_id: export.exporter_id.clone(),
        study_iuid: export.study_iuid.clone(),
        series_iuid: export.series_iuid.clone(),
        sop_iuid: export.sop_iuid.clone(),
        batch_id: Some(export.rule.clone()),
        scheduled_time: None,
    }
}

/// Until the next pending export is due, at most [`MAX_WAIT`].
async fn next_wait(archive: &Archive) -> Duration {
    match archive.next_export_due().await {
        Ok(Some(at)) => (at - Utc::now())
            .to_std()
            .unwrap_or(Duration::ZERO)
            .min(MAX_WAIT),
        _ => MAX_WAIT,
    }
}
