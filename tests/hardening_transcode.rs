//! Decompression bounds against hostile objects: codestream headers that
//! disagree with the DICOM attributes (JPEG-LS, JPEG 2000 raw and in JP2,
//! JPEG, RLE), frame counts and sizes that no memory holds or that
//! overflow, and the memory converted objects hold while their requests
//! are in flight.
//!
//! The objects are made by tests/reference/make_bombs.py: valid DICOM
//! files with valid codestreams of uniform images, which compress to a few
//! KB and decode to hundreds of MB. The peak memory of the real binary
//! (`stow-exporter transcode`) is read from the kernel's accounting of the
//! child (wait4), not sampled.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use serde_json::Value;

#[path = "common/reference.rs"]
#[allow(dead_code)]
mod reference;

/// The study the objects of make_bombs.py share.
const BOMB_STUDY: &str = "1.2.826.0.1.3680043.10.1137.12.1";

/// The peak RSS a refused bomb may cost the process: the binary at rest
/// (tokio, the codec libraries) is a few MB; each bomb decodes to more
/// than 100 MB.
const MAX_RSS_KIB: i64 = 100 * 1000;

/// Makes the objects whose names start with one of `wanted` in `dir`:
/// file name to path.
fn bombs(dir: &Path, wanted: &[&str]) -> BTreeMap<String, PathBuf> {
    let script = reference::script("make_bombs.py");
    let mut args = vec![script.as_os_str(), dir.as_os_str()];
    args.extend(wanted.iter().map(std::ffi::OsStr::new));
    reference::python(&args)
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(name, path)| (name.to_string(), PathBuf::from(path)))
        .collect()
}

/// What `stow-exporter transcode FILE` printed for the file, how it
/// exited, and its peak resident set in KiB (the kernel's maximum for
/// this child alone, from wait4).
struct Run {
    line: Value,
    exit: Option<i32>,
    signal: Option<i32>,
    peak_rss_kib: i64,
    stderr: String,
}

// The child is reaped by wait4 below (for its rusage), which clippy does
// not see.
#[allow(clippy::zombie_processes)]
fn transcode_cli(file: &Path) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let (out, err) = (dir.path().join("out"), dir.path().join("err"));
    let child = Command::new(env!("CARGO_BIN_EXE_stow-exporter"))
        .args(["transcode", "--jobs", "1"])
        .arg(file)
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: rusage is plain old data; wait4 fills it for our own child,
    // which nothing else reaps (std's Child does not wait on drop).
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(reaped, pid, "wait4: {}", std::io::Error::last_os_error());
    let stdout = std::fs::read_to_string(&out).unwrap();
    Run {
        line: stdout
            .lines()
            .next()
            .map_or(Value::Null, |l| serde_json::from_str(l).unwrap()),
        exit: libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status)),
        signal: libc::WIFSIGNALED(status).then(|| libc::WTERMSIG(status)),
        peak_rss_kib: usage.ru_maxrss,
        stderr: std::fs::read_to_string(&err).unwrap(),
    }
}

/// Runs the binary on `file` and checks that it refused the object with a
/// reason containing every one of `reason`, exited normally, and stayed
/// small.
fn refused(file: &Path, reason: &[&str]) {
    let run = transcode_cli(file);
    assert_eq!(
        (run.exit, run.signal),
        (Some(1), None),
        "{}: exit status (stderr: {})",
        file.display(),
        run.stderr
    );
    assert_eq!(run.line["ok"], false, "{}", run.line);
    let err = run.line["error"].as_str().unwrap_or_default();
    for part in reason {
        assert!(
            err.contains(part),
            "{}: {err:?} lacks {part:?}",
            file.display()
        );
    }
    assert!(
        run.peak_rss_kib < MAX_RSS_KIB,
        "{}: peak RSS {} KiB, over {MAX_RSS_KIB}",
        file.display(),
        run.peak_rss_kib
    );
}

#[test]
fn jpeg_ls_codestream_larger_than_the_attributes_is_refused_naming_both_sizes() {
    let tmp = tempfile::tempdir().unwrap();
    let b = bombs(tmp.path(), &["jpeg_ls_bomb"]);
    refused(
        &b["jpeg_ls_bomb.dcm"],
        &[
            "cannot convert JPEGLSLossless (1.2.840.10008.1.2.4.80) to ExplicitVRLittleEndian",
            "frame 1: JPEG-LS codestream says 16000 x 16000 x 1 but the DICOM attributes say 16 x 16 x 1",
        ],
    );
}

#[test]
fn jpeg_2000_siz_larger_than_the_attributes_is_refused_raw_and_in_jp2() {
    let tmp = tempfile::tempdir().unwrap();
    let b = bombs(tmp.path(), &["j2k_bomb", "jp2_bomb"]);
    for name in ["j2k_bomb.dcm", "jp2_bomb.dcm"] {
        refused(
            &b[name],
            &[
                "frame 1: JPEG 2000 codestream says 8000 x 8000 x 1 but the DICOM attributes say 64 x 64 x 1",
            ],
        );
    }
}

#[test]
fn jpeg_2000_in_one_pixel_tiles_is_refused_before_openjpeg_sizes_its_tiles() {
    let tmp = tempfile::tempdir().unwrap();
    let b = bombs(tmp.path(), &["j2k_tiles_bomb"]);
    // The size agrees with the attributes; the 65535 tiles would cost
    // OpenJPEG about 450 MB of coding parameters for a 64 KB image.
    refused(
        &b["j2k_tiles_bomb.dcm"],
        &[
            "frame 1: JPEG 2000 codestream has 65535 tiles of 1 x 1 for a 255 x 257 image",
            "over the limit of 16777216",
        ],
    );
}

#[test]
fn jpeg_frame_header_larger_than_the_attributes_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let b = bombs(tmp.path(), &["jpeg_bomb"]);
    refused(
        &b["jpeg_bomb.dcm"],
        &[
            "frame 1: JPEG codestream says 10000 x 10000 x 1 but the DICOM attributes say 16 x 16 x 1",
        ],
    );
}

#[test]
fn rle_segment_count_of_the_last_frame_is_refused_before_any_frame_is_decoded() {
    let tmp = tempfile::tempdir().unwrap();
    let b = bombs(tmp.path(), &["rle_late_bomb"]);
    // Eleven good frames of 16 MB first: refused only after decoding
    // them, the object would cost 176 MB.
    refused(
        &b["rle_late_bomb.dcm"],
        &[
            "frame 12: RLE header has 3 segments but the DICOM attributes say 1 (1 samples per pixel of 1 bytes)",
        ],
    );
}

#[test]
fn number_of_frames_2_to_the_31_is_an_error_naming_the_attribute() {
    let tmp = tempfile::tempdir().unwrap();
    let b = bombs(tmp.path(), &["frames_2_31"]);
    refused(
        &b["frames_2_31.dcm"],
        &[
            "Number of Frames 2147483648 x Columns 16 x Rows 16 x Samples per Pixel 1",
            "over the limit of 1073741824",
        ],
    );
}

#[test]
fn overflowing_rows_columns_and_frames_is_an_error_naming_the_attributes() {
    let tmp = tempfile::tempdir().unwrap();
    let b = bombs(tmp.path(), &["frames_overflow"]);
    refused(
        &b["frames_overflow.dcm"],
        &[
            "Number of Frames 4294967295 x Columns 65535 x Rows 65535 x Samples per Pixel 3 x 2 byte(s) per sample (Bits Allocated 16) overflows a 64-bit size",
        ],
    );
}

/// Imports `files` and exports their study to stowrsd through a web app
/// that takes only Explicit VR Little Endian, with `props` added; returns
/// the finished task, its per-instance results and the receiver.
async fn export_decompressed(
    tmp: &Path,
    files: &[PathBuf],
    props: &[&str],
    delay: Duration,
    settings: impl FnOnce(&mut stow_exporter::app::Settings),
) -> (Value, Vec<Value>, Receiver) {
    let rcv = Receiver::start(&tmp.join("received"), delay).await;
    let mut all = vec!["transfer-syntax=ExplicitVRLittleEndian"];
    all.extend(props);
    let cfg = write_config(tmp, rcv.addr.port(), &add_props(STOWRSD_WEBAPP_DN, &all));
    import(&tmp.join("data"), files).await;
    let mut s = Service::settings(
        stow_exporter::config::ConfigSource::Ldif(cfg),
        &tmp.join("data"),
    );
    settings(&mut s);
    let svc = Service::start_with_settings(s).await;
    let t = svc.export_study("STOWRSD", BOMB_STUDY).await;
    let id = t["taskID"].as_str().unwrap().to_string();
    let done = svc.wait_done(&id).await;
    let instances = svc.instances(&id).await;
    svc.stop().await;
    (done, instances, rcv)
}

#[tokio::test]
async fn a_bomb_in_a_study_fails_alone_with_its_reason_and_the_rest_arrives() {
    let tmp = tempfile::tempdir().unwrap();
    let b = bombs(&tmp.path().join("in"), &["good_", "jpeg_ls_bomb"]);
    let good = ["good_jpeg_ls.dcm", "good_rle.dcm", "good_jpeg.dcm"];
    let mut files: Vec<PathBuf> = good.iter().map(|n| b[*n].clone()).collect();
    files.push(b["jpeg_ls_bomb.dcm"].clone());
    let (done, instances, rcv) =
        export_decompressed(tmp.path(), &files, &[], Duration::ZERO, |_| {}).await;

    assert_eq!(done["status"], "WARNING", "{done}");
    let msg = done["outcomeMessage"].as_str().unwrap();
    assert!(msg.contains("failed:1"), "{msg}");
    let bomb = sop_uid(&b["jpeg_ls_bomb.dcm"]);
    let failed: Vec<&Value> = instances
        .iter()
        .filter(|i| i["status"] != "COMPLETED")
        .collect();
    assert_eq!(failed.len(), 1, "{instances:?}");
    assert_eq!(failed[0]["SOPInstanceUID"], bomb.as_str());
    let reason = failed[0]["reason"].as_str().unwrap();
    assert!(
        reason.contains(
            "frame 1: JPEG-LS codestream says 16000 x 16000 x 1 but the DICOM attributes say 16 x 16 x 1"
        ),
        "{reason}"
    );
    // The others arrived, decompressed.
    let mut arrived: Vec<String> = rcv.stored().iter().map(|p| sop_uid(p)).collect();
    arrived.sort();
    let mut want: Vec<String> = good.iter().map(|n| sop_uid(&b[*n])).collect();
    want.sort();
    assert_eq!(arrived, want);
    for p in rcv.stored() {
        assert_eq!(reference::stored_ts(&p), "1.2.840.10008.1.2.1");
    }
}

/// Ten RLE objects of 512 x 512 zeros: about 4 KB stored, 256 KiB decoded.
fn uniform_rle(b: &BTreeMap<String, PathBuf>) -> Vec<PathBuf> {
    let files: Vec<PathBuf> = b
        .iter()
        .filter(|(n, _)| n.starts_with("uniform_rle_"))
        .map(|(_, p)| p.clone())
        .collect();
    assert_eq!(files.len(), 10);
    for f in &files {
        assert!(std::fs::metadata(f).unwrap().len() < 8 << 10);
    }
    files
}

/// The decoded size of one of [`uniform_rle`]'s objects.
const UNIFORM_DECODED: u64 = 512 * 512;

#[tokio::test]
async fn a_request_counts_decoded_bytes_against_max_bytes_per_request() {
    let tmp = tempfile::tempdir().unwrap();
    let b = bombs(&tmp.path().join("in"), &["uniform_rle"]);
    let files = uniform_rle(&b);
    // Ten would fit in one request by their stored sizes (40 KB); by their
    // decoded sizes two do.
    let max_bytes = 2 * UNIFORM_DECODED + 64 * 1024;
    let max = format!("max-bytes-per-request={max_bytes}");
    let (done, _, rcv) = export_decompressed(
        tmp.path(),
        &files,
        &["max-instances-per-request=10", &max],
        Duration::ZERO,
        |_| {},
    )
    .await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    assert_eq!(rcv.stored().len(), 10);
    let parts: Vec<usize> = rcv
        .seen()
        .iter()
        .map(|s| s.part_content_types.len())
        .collect();
    assert_eq!(parts.iter().sum::<usize>(), 10, "{parts:?}");
    assert!(parts.iter().all(|&n| n <= 2), "{parts:?}");
    assert_eq!(parts.len(), 5, "{parts:?}");
    // What one request carried: its parts' bodies stay under the limit.
    for s in rcv.seen() {
        let len: u64 = s
            .content_length
            .as_deref()
            .map_or(0, |l| l.parse().unwrap());
        // The multipart framing adds a few hundred bytes per part.
        assert!(len <= max_bytes + 2048, "{len} > {max_bytes}");
    }
}

#[tokio::test]
async fn converted_objects_in_flight_stay_within_the_transcode_memory_budget() {
    let tmp = tempfile::tempdir().unwrap();
    let b = bombs(&tmp.path().join("in"), &["uniform_rle"]);
    let files = uniform_rle(&b);
    // A budget of 300 KiB (one job of at most 300 KiB): one converted
    // object (its file and its 256 KiB) at a time, although the web app
    // may have four requests in flight and the receiver holds each one
    // for a while.
    let (done, _, rcv) = export_decompressed(
        tmp.path(),
        &files,
        &["concurrency=4"],
        Duration::from_millis(150),
        |s| {
            s.transcode_jobs = Some(1);
            s.transcode_limits = stow_exporter::transcode::Limits {
                max_object_bytes: 300 << 10,
            };
        },
    )
    .await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    assert_eq!(rcv.stored().len(), 10);
    assert_eq!(
        rcv.max_in_flight.load(Ordering::SeqCst),
        1,
        "requests carrying converted objects in flight at once"
    );
}

#[tokio::test]
async fn a_reservation_waits_until_the_memory_it_needs_is_released() {
    use futures_util::FutureExt;
    use stow_exporter::transcode::{Limits, Transcoder};
    let tmp = tempfile::tempdir().unwrap();
    let b = bombs(tmp.path(), &["uniform_rle", "jpeg_ls_bomb"]);
    let t = Transcoder::new(
        2,
        Limits {
            max_object_bytes: 1 << 20,
        },
    );
    assert_eq!(t.memory_capacity(), 2 << 20);
    // A real object's plan counts its decoded pixels, read from its
    // header before anything is decoded.
    let f = &uniform_rle(&b)[0];
    let size = std::fs::metadata(f).unwrap().len();
    let plan = t.plan(f, size).await;
    assert!(
        (UNIFORM_DECODED..UNIFORM_DECODED + size).contains(&plan.outgoing_bytes),
        "{plan:?}"
    );
    assert!(plan.reserve_bytes >= plan.outgoing_bytes + size, "{plan:?}");
    // The bomb is planned by its attributes (16 x 16), not its codestream.
    let bomb = &b["jpeg_ls_bomb.dcm"];
    let bomb_plan = t.plan(bomb, std::fs::metadata(bomb).unwrap().len()).await;
    assert!(bomb_plan.reserve_bytes < 64 << 10, "{bomb_plan:?}");

    let held = t.reserve(3 << 19).await;
    assert_eq!(t.memory_available(), 1 << 19);
    // Another 1 MiB does not fit until the first is released...
    assert!(t.reserve(1 << 20).now_or_never().is_none());
    drop(held);
    // ...and then does at once; a reservation over the budget is clamped
    // to it, so it goes alone rather than never.
    let r = t.reserve(1 << 20).now_or_never().expect("free again");
    assert_eq!(r.bytes(), 1 << 20);
    drop(r);
    let all = t.reserve(u64::MAX).now_or_never().expect("clamped");
    assert_eq!(all.bytes(), 2 << 20);
    assert_eq!(t.memory_available(), 0);
}
