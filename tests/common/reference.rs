//! The reference side of the decompression tests: dcmtk fixtures made by
//! tests/reference/make_fixtures.py, and tests/reference/compare.py, which
//! decodes with pydicom's plugins (or dcmtk) and checks what else changed.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// The study the fixtures share.
pub const STUDY: &str = "1.2.826.0.1.3680043.10.1137.5.1";

/// pydicom's files that need our own decoder paths (12-bit JPEG, an RGB
/// JPEG without Adobe marker, 32-bit RLE) or cover the other codecs.
pub const PYDICOM_EXTRAS: [&str; 7] = [
    "JPGExtended.dcm",
    "SC_jpeg_no_color_transform.dcm",
    "SC_rgb_rle_32bit_2frame.dcm",
    "examples_jpeg2k.dcm",
    "examples_ybr_color.dcm",
    "MR_small_jpeg_ls_lossless.dcm",
    "image_dfl.dcm",
];

pub fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/reference")
        .join(name)
}

pub fn python(args: &[&std::ffi::OsStr]) -> String {
    let out = Command::new("python3")
        .args(args)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "python3 {args:?} failed (scripts/test.sh installs pydicom, pylibjpeg and dcmtk): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Makes the dcmtk fixtures in `dir` (and copies `extra` into their study).
pub fn fixtures(dir: &Path, extra: &[PathBuf]) -> Vec<PathBuf> {
    let mut args = vec![script("make_fixtures.py").into_os_string(), dir.into()];
    args.extend(extra.iter().map(|p| p.clone().into_os_string()));
    let refs: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
    python(&refs).lines().map(PathBuf::from).collect()
}

/// compare.py over (source, output) pairs: one JSON object per pair.
pub fn compare(pairs: &[(PathBuf, PathBuf)]) -> Vec<Value> {
    let mut args = vec![script("compare.py").into_os_string()];
    for (a, b) in pairs {
        args.push(a.clone().into_os_string());
        args.push(b.clone().into_os_string());
    }
    let refs: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
    python(&refs)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Whether a difference is acceptable for the stored syntax: none for
/// lossless and lossy-but-deterministic codecs, the usual ±3 of IDCT
/// rounding between JPEG decoders for lossy JPEG.
pub fn tolerance(ts: &str) -> u64 {
    match ts {
        "1.2.840.10008.1.2.4.50" | "1.2.840.10008.1.2.4.51" => 3,
        _ => 0,
    }
}

/// The verdict on one compared pair, and whether it is acceptable.
pub fn verdict(r: &Value) -> (String, bool) {
    if let Some(e) = r["output_error"].as_str() {
        return (format!("output unreadable: {e}"), false);
    }
    let changed = r["changed"].as_array().cloned().unwrap_or_default();
    if !changed.is_empty() {
        return (format!("other elements changed: {changed:?}"), false);
    }
    if r["sop_instance_uid_kept"] != true {
        return ("SOP Instance UID not kept".into(), false);
    }
    if r["reference_error"].is_string() {
        return ("converted; no reference decoder reads it".into(), true);
    }
    let ts = r["stored_ts"].as_str().unwrap_or("");
    match r["max_diff"].as_u64() {
        None => ("converted (no pixel data)".into(), true),
        // A file pydicom's plugins cannot decode is compared with dcmtk.
        Some(0) if r["reference"] == "dcmtk" => ("exact (dcmtk as reference)".into(), true),
        Some(0) => ("exact".into(), true),
        Some(d) if d <= tolerance(ts) => (format!("within ±{d}"), true),
        Some(d) => (format!("DIFFERS by up to {d}"), false),
    }
}

/// The stored transfer syntax of a Part 10 file ("" when it has none).
pub fn stored_ts(path: &Path) -> String {
    dicom_object::OpenFileOptions::new()
        .read_until(dicom_dictionary_std::tags::PIXEL_DATA)
        .open_file(path)
        .map(|o| {
            o.meta()
                .transfer_syntax()
                .trim_end_matches('\0')
                .to_string()
        })
        .unwrap_or_default()
}
