//! `export --wait`: follows a published task through its record until it
//! has ended, with a progress bar of instances done on a terminal, and maps
//! the final status to the exit status.
//!
//! The record is read from the task store (the data directory's SQLite
//! file, for the embedded queue and AMQP alike), not over the control API,
//! so `export --wait` needs no `--url` or token: it already shares the data
//! directory with the `serve` that runs the task.
//!
//! Owns polling and the exit status; it only reads the task store and
//! never changes a record.

use std::path::Path;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use tokio::time::Instant;

use crate::archive::Archive;
use crate::queue::{QueueError, TaskStore};
use crate::task::{ExportTask, Status};

/// Exit status of `export --wait` for a task that ended COMPLETED.
pub const EXIT_COMPLETED: u8 = 0;
/// ... FAILED or CANCELED (also any error of the command itself).
pub const EXIT_FAILED: u8 = 1;
/// ... WARNING: stored, but not all as sent (or some missing).
pub const EXIT_WARNING: u8 = 2;
/// `--timeout` passed before the task ended; the task stays queued.
pub const EXIT_TIMEOUT: u8 = 3;

/// How often the task record is read.
const POLL: Duration = Duration::from_millis(200);

/// Errors of waiting for a task.
#[derive(Debug, thiserror::Error)]
pub enum WaitError {
    #[error("while waiting for task {task_id}: {source}")]
    Queue { task_id: String, source: QueueError },
    #[error(
        "gave up waiting for task {} after {}s: it is {} and stays queued \
         (follow it with `stow-exporter tasks show {}`; cancel it with `stow-exporter tasks cancel {}`)",
        .task.task_id, .after.as_secs(), .task.status, .task.task_id, .task.task_id
    )]
    TimedOut {
        /// The record as last read.
        task: Box<ExportTask>,
        after: Duration,
    },
}

/// The exit status for a final task status.
pub fn exit_code(status: Status) -> u8 {
    match status {
        Status::Completed => EXIT_COMPLETED,
        Status::Warning => EXIT_WARNING,
        _ => EXIT_FAILED,
    }
}

/// How to wait.
#[derive(Debug, Clone, Default)]
pub struct WaitOptions {
    /// Give up after this long (the task is left as it is).
    pub timeout: Option<Duration>,
    /// Instances the task will send, for the bar's length; unknown: a
    /// counter without a length.
    pub total: Option<u64>,
    /// Draw a progress bar on stderr.
    pub progress: bool,
}

/// Number of indexed instances the task's entity matches in the archive of
/// `data_dir` (its index in the shared `database` when given, as `serve`
/// on that database reads it), as the export will match them; `None` if
/// the archive cannot be read (the bar then has no length).
pub async fn instances_in_archive(
    data_dir: &Path,
    database: Option<&str>,
    task: &ExportTask,
) -> Option<u64> {
    let archive = Archive::open_on(data_dir, database).await.ok()?;
    let found = archive
        .find(&task.study_iuid, task.series(), task.instance())
        .await
        .ok()?;
    Some(found.len() as u64)
}

/// Reads the record of `task_id` until its status is final and returns it.
pub async fn wait_for_task(
    store: &dyn TaskStore,
    task_id: &str,
    opts: &WaitOptions,
) -> Result<ExportTask, WaitError> {
    let err = |source| WaitError::Queue {
        task_id: task_id.to_string(),
        source,
    };
    let bar = bar(opts);
    let started = Instant::now();
    let deadline = opts.timeout.map(|t| started + t);
    let result = loop {
        let task = store.get(task_id).await.map_err(err)?;
        if task.status.is_done() {
            if let Some(n) = task.number_of_instances {
                bar.set_length(n);
                bar.set_position(task.completed + task.warning + task.failed + task.missing);
            }
            break Ok(task);
        }
        if !bar.is_hidden() {
            // Results are recorded per instance as the run goes; the
            // record's counts only at its end. Counted only for the bar.
            let done = store.instance_result_count(task_id).await.map_err(err)?;
            bar.set_position(done);
            bar.set_message(status_note(&task));
        }
        let now = Instant::now();
        let pause = match deadline {
            Some(d) if now >= d => {
                break Err(WaitError::TimedOut {
                    task: Box::new(task),
                    after: opts.timeout.unwrap_or_default(),
                });
            }
            Some(d) => POLL.min(d - now),
            None => POLL,
        };
        tokio::time::sleep(pause).await;
    };
    bar.finish_and_clear();
    result
}

/// The bar's message: the status, and why it waits when that is not
/// obvious.
fn status_note(t: &ExportTask) -> String {
    match t.status {
        Status::ScheduledForRetry => format!(
            "{} (failures {}; next attempt {})",
            t.status,
            t.failures,
            t.scheduled_time
                .with_timezone(&chrono::Local)
                .format("%H:%M:%S")
        ),
        Status::Scheduled => format!("{} (waiting for `serve` to take it)", t.status),
        s => s.to_string(),
    }
}

fn bar(opts: &WaitOptions) -> ProgressBar {
    if !opts.progress {
        return ProgressBar::hidden();
    }
    let (b, template) = match opts.total {
        Some(n) => (
            ProgressBar::new(n),
            "{bar:40} {pos}/{len} instances {elapsed} {msg}",
        ),
        None => (
            ProgressBar::no_length(),
            "{spinner} {pos} instances {elapsed} {msg}",
        ),
    };
    b.set_style(
        ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    // Redrawn between polls too, so the elapsed time moves.
    b.enable_steady_tick(Duration::from_millis(250));
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_are_distinct_per_outcome() {
        assert_eq!(exit_code(Status::Completed), 0);
        assert_eq!(exit_code(Status::Warning), 2);
        assert_eq!(exit_code(Status::Failed), 1);
        assert_eq!(exit_code(Status::Canceled), 1);
        assert_ne!(EXIT_TIMEOUT, EXIT_WARNING);
        assert_ne!(EXIT_TIMEOUT, EXIT_FAILED);
    }
}
