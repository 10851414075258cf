//! The `export` command: queue one export task the way the REST trigger
//! does, and with `--wait` follow it to its end ([`crate::cli::wait`]).
//!
//! Owns the `--queue` argument's reading and the exit status of a waited
//! task; it opens the queue the way `serve` does ([`crate::queue::open`]),
//! as a [`crate::queue::Role::Publisher`]: it publishes only, so it never
//! reschedules tasks that a running `serve` holds, and follows the record
//! through the [`crate::queue::TaskStore`] alone.

use std::io::IsTerminal;
use std::process::ExitCode;

use crate::cli::CliError;
use crate::cli::args::{ExportArgs, cleartext_warning};
use crate::cli::wait;
use crate::config::LiveConfig;
use crate::queue::{self, BrokerLink, DatabaseLink, NewTask, OpenQueue, QueueOptions, Role};
use crate::task::TaskRequest;

/// `--queue`: `None` for the embedded queue, else the broker URL.
pub fn queue_url(arg: &str) -> Result<Option<String>, CliError> {
    let lower = arg.to_ascii_lowercase();
    if arg.is_empty() || lower == "embedded" {
        Ok(None)
    } else if lower.starts_with("amqp://") || lower.starts_with("amqps://") {
        Ok(Some(arg.to_string()))
    } else {
        Err(CliError::QueueArgument(crate::redact::mask_url(arg)))
    }
}

/// `export`: publishes the task; with `--wait`, the exit status follows
/// its outcome (see the command's help).
pub async fn export(a: ExportArgs) -> Result<ExitCode, CliError> {
    let source = a.config.source().await?;
    if let Some(w) = cleartext_warning(&source) {
        tracing::warn!("{w}");
    }
    let snapshot = source.load(&a.config.device_name).await?;
    let ex = snapshot
        .exporter(&a.exporter)
        .ok_or_else(|| CliError::NoSuchExporter {
            exporter: a.exporter.clone(),
            config: snapshot.source.clone(),
        })?;
    let request = TaskRequest {
        exporter_id: a.exporter.clone(),
        study_iuid: a.study,
        series_iuid: a.series,
        sop_iuid: a.instance,
        batch_id: a.batch_id,
        scheduled_time: None,
    };
    request.validate()?;
    tokio::fs::create_dir_all(&a.data)
        .await
        .map_err(|source| CliError::CreateDir {
            path: a.data.clone(),
            source,
        })?;
    let broker_url = queue_url(&a.queue)?;
    let database = a.database.url().await?;
    let shared = broker_url
        .as_ref()
        .map(|_| LiveConfig::new(source, &a.config.device_name, snapshot.clone()));
    let queue = queue::open(OpenQueue {
        data_dir: &a.data,
        device_name: &a.config.device_name,
        // Publishing only: never reschedule tasks a running `serve` holds.
        role: Role::Publisher,
        options: &QueueOptions::default(),
        broker: broker_url
            .as_deref()
            .zip(shared.as_ref())
            .map(|(url, config)| BrokerLink { url, config }),
        // Publishing takes no task, so it needs no stable instance name.
        database: database.as_ref().map(|d| DatabaseLink {
            url: d.expose(),
            instance: None,
        }),
    })
    .await?;
    let task = queue
        .delivery
        .publish(NewTask::for_exporter(request, a.config.device_name, ex))
        .await?;
    if !a.wait {
        println!("{}", to_json(&task)?);
        return Ok(ExitCode::SUCCESS);
    }
    let opts = wait::WaitOptions {
        timeout: a.timeout.map(std::time::Duration::from_secs),
        total: wait::instances_in_archive(&a.data, database.as_ref().map(|d| d.expose()), &task)
            .await,
        progress: std::io::stderr().is_terminal(),
    };
    match wait::wait_for_task(queue.store.as_ref(), &task.task_id, &opts).await {
        Ok(done) => {
            println!("{}", to_json(&done)?);
            Ok(ExitCode::from(wait::exit_code(done.status)))
        }
        Err(e) => match &e {
            wait::WaitError::TimedOut { task, .. } => {
                // The record as it stands, for its ID and status.
                println!("{}", to_json(task)?);
                eprintln!("error: {e}");
                Ok(ExitCode::from(wait::EXIT_TIMEOUT))
            }
            wait::WaitError::Queue { .. } => Err(e.into()),
        },
    }
}

fn to_json(task: &crate::task::ExportTask) -> Result<String, CliError> {
    serde_json::to_string_pretty(task).map_err(CliError::Json)
}
