//! The `transcode` command: DICOM files through the service's own
//! transcoder, as an export to a destination that takes only uncompressed
//! syntaxes would, one JSON line per file and a summary of decoded
//! megabytes per second (bench/decode_codecs.sh reads both).
//!
//! Owns the report's format; decoding is [`crate::transcode`].

use std::path::PathBuf;
use std::process::ExitCode;

use futures_util::stream::{self, StreamExt};

use crate::cli::CliError;
use crate::cli::args::TranscodeArgs;
use crate::transcode::{Limits, Target, Transcoder};

/// `transcode`: every file, `jobs` at a time; exit status 1 when any
/// failed.
pub async fn transcode(a: TranscodeArgs) -> Result<ExitCode, CliError> {
    let TranscodeArgs {
        to,
        out,
        jobs,
        repeat,
        paths,
    } = a;
    let target = match crate::config::transfer_syntax_uid(&to).as_deref() {
        Some("1.2.840.10008.1.2.1") => Target::ExplicitVRLittleEndian,
        Some("1.2.840.10008.1.2") => Target::ImplicitVRLittleEndian,
        _ => return Err(CliError::TranscodeTarget(to)),
    };
    let files: Vec<PathBuf> = paths
        .iter()
        .flat_map(|p| walkdir::WalkDir::new(p).sort_by_file_name())
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .map(|e| e.into_path())
        .collect();
    let t = match jobs {
        Some(n) => Transcoder::new(n, Limits::default()),
        None => Transcoder::per_core(Limits::default()),
    };
    // The Transcoder decodes at most `jobs` objects at once; twice as many
    // are handed to it so that a decoder that finishes finds the next
    // object already read and waiting, as on the export path, where more
    // requests wait for a decode slot than there are slots.
    let parallel =
        2 * jobs.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let started = std::time::Instant::now();
    let work = (0..repeat.max(1)).flat_map(|round| files.iter().map(move |f| (round, f.clone())));
    let mut results = stream::iter(work)
        .map(|(round, f)| {
            let t = t.clone();
            async move {
                let began = std::time::Instant::now();
                // The stored syntax only names the file in early errors.
                let r = t
                    .transcode_file(f.clone(), "the stored syntax", target)
                    .await;
                (round, f, r, began.elapsed())
            }
        })
        .buffer_unordered(parallel);
    let (mut ok, mut failed, mut pixel_bytes) = (0u64, 0u64, 0u64);
    while let Some((round, file, r, took)) = results.next().await {
        let mut line = serde_json::json!({
            "file": file.display().to_string(),
            // Includes the wait for a decode slot.
            "ms": took.as_secs_f64() * 1000.0,
        });
        match r {
            Ok(done) => {
                ok += 1;
                pixel_bytes += done.decoded_pixel_bytes;
                line["ok"] = true.into();
                line["decoded_pixel_bytes"] = done.decoded_pixel_bytes.into();
                if let (Some(dir), 0) = (&out, round) {
                    let name = file.file_name().unwrap_or_default();
                    let path = dir.join(name);
                    let written = match tokio::fs::create_dir_all(dir).await {
                        Ok(()) => tokio::fs::write(&path, &done.data).await,
                        Err(e) => Err(e),
                    };
                    written.map_err(|source| CliError::WriteOutput { path, source })?;
                }
            }
            Err(e) => {
                failed += 1;
                line["ok"] = false.into();
                line["stored"] = e.uid.clone().into();
                line["error"] = e.to_string().into();
            }
        }
        if round == 0 {
            println!("{line}");
        }
    }
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "{ok} converted, {failed} failed; {:.1} MB of pixels decoded in {secs:.3} s: {:.1} MB/s",
        pixel_bytes as f64 / 1e6,
        pixel_bytes as f64 / 1e6 / secs
    );
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
