//! The `import` command: files and folders into the archive, with a
//! progress bar on a terminal and one line per file that was skipped.
//!
//! Owns only the presentation; reading, checking and storing files is
//! [`crate::archive::import_paths`]. With `--database` the files go into
//! the storage under `--data` and their rows into the shared PostgreSQL
//! index, where every `serve` on that database finds them.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use indicatif::{ProgressBar, ProgressStyle};

use crate::archive::{self, Archive, ImportError, ImportProgress, Imported};
use crate::cli::CliError;
use crate::config::Secret;

/// Progress on a terminal; one line per file that could not be imported.
struct Progress {
    bar: ProgressBar,
}

impl ImportProgress for Progress {
    fn total(&self, files: u64) {
        self.bar.set_length(files);
    }

    fn file_done(&self, path: &Path, result: &Result<Imported, ImportError>) {
        self.bar.inc(1);
        if let Err(e) = result {
            self.bar
                .suspend(|| eprintln!("skipped {}: {e}", path.display()));
        }
    }
}

/// `import`: exit status 0 when every file was stored (or already was),
/// 2 when some were skipped. `database`: the shared PostgreSQL index
/// (`--database`) instead of `<data>/archive.sqlite`.
pub async fn import(
    data: &Path,
    database: Option<&Secret>,
    paths: &[PathBuf],
) -> Result<ExitCode, CliError> {
    tokio::fs::create_dir_all(data)
        .await
        .map_err(|source| CliError::CreateDir {
            path: data.to_path_buf(),
            source,
        })?;
    let archive = Archive::open_on(data, database.map(|d| d.expose())).await?;
    let bar = if std::io::stderr().is_terminal() {
        let b = ProgressBar::new(0);
        b.set_style(
            ProgressStyle::with_template("{bar:40} {pos}/{len} files {per_sec} eta {eta}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        b
    } else {
        ProgressBar::hidden()
    };
    let progress = Progress { bar };
    let report = archive::import_paths(&archive, paths, &progress).await;
    progress.bar.finish_and_clear();
    println!(
        "imported {} new, {} already stored, {} failed ({} bytes)",
        report.stored,
        report.already_stored,
        report.failed.len(),
        report.bytes
    );
    Ok(if report.failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}
