//! Decompression for destinations that do not take the stored transfer
//! syntax: coverage over real files against reference decoders, and
//! exports end to end.
//!
//! The reference is pydicom with its pixel plugins (pylibjpeg with libjpeg,
//! openjpeg and rle; pyjpegls), or dcmtk where those cannot decode a file
//! (tests/reference/compare.py). Compressed inputs are pydicom's bundled
//! files plus objects dcmtk makes from synthetic images
//! (tests/reference/make_fixtures.py).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use reference::*;

#[path = "common/reference.rs"]
mod reference;
use serde_json::Value;
use stow_exporter::transcode::{self, Limits, Target};

const EXPLICIT: &str = "1.2.840.10008.1.2.1";
const IMPLICIT: &str = "1.2.840.10008.1.2";
const COVERAGE: &str = "tests/transcode_coverage.md";

/// A result's rank: a file regresses when its rank drops.
fn rank(result: &str) -> u8 {
    if result.starts_with("exact") {
        4
    } else if result.starts_with("within") {
        3
    } else if result.starts_with("converted") {
        2
    } else if result.starts_with("failed") {
        1
    } else {
        0
    }
}

fn table_row(file: &str, ts: &str, result: &str) -> String {
    let name = stow_exporter::config::transfer_syntax_name(ts);
    let syntax = if name == ts {
        ts.to_string()
    } else {
        format!("{name} ({ts})")
    };
    format!("| {file} | {syntax} | {result} |")
}

#[test]
fn coverage_of_real_files_against_reference_decoders() {
    let tmp = tempfile::tempdir().unwrap();
    let mut inputs: Vec<PathBuf> = std::fs::read_dir(pydicom_files())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "dcm"))
        .collect();
    inputs.sort();
    inputs.extend(fixtures(&tmp.path().join("dcmtk"), &[]));
    let out = tmp.path().join("out");
    std::fs::create_dir_all(&out).unwrap();

    let mut rows = BTreeMap::new();
    let mut pairs = Vec::new();
    for (i, input) in inputs.iter().enumerate() {
        let name = input.file_name().unwrap().to_string_lossy().to_string();
        let bytes = std::fs::read(input).unwrap();
        match transcode::transcode(&bytes, Target::ExplicitVRLittleEndian, Limits::default()) {
            Ok(t) => {
                let o = out.join(format!("{i}.dcm"));
                std::fs::write(&o, t.data).unwrap();
                pairs.push((name, input.clone(), o));
            }
            Err(e) => {
                let row = (e.uid.clone(), format!("failed: {}", e.cause));
                rows.insert(name, row);
            }
        }
    }
    let pair_paths: Vec<(PathBuf, PathBuf)> = pairs
        .iter()
        .map(|(_, a, b)| (a.clone(), b.clone()))
        .collect();
    let mut bad = Vec::new();
    for ((name, _, _), r) in pairs.iter().zip(compare(&pair_paths)) {
        let (result, ok) = verdict(&r);
        if !ok {
            bad.push(format!("{name}: {result}"));
        }
        let ts = r["stored_ts"].as_str().unwrap_or("").to_string();
        assert_eq!(r["output_ts"], EXPLICIT, "{name}");
        rows.insert(name.clone(), (ts, result));
    }
    assert!(bad.is_empty(), "wrong conversions: {bad:#?}");

    // The table, for the README and for the next run to compare with.
    let table: Vec<String> = rows
        .iter()
        .map(|(f, (ts, result))| table_row(f, ts, result))
        .collect();
    let actual = format!(
        "| file | stored transfer syntax | to Explicit VR Little Endian |\n|---|---|---|\n{}\n",
        table.join("\n")
    );
    let target = Path::new(env!("CARGO_TARGET_TMPDIR")).join("transcode_coverage.md");
    std::fs::write(&target, &actual).unwrap();
    let expected_path = Path::new(env!("CARGO_MANIFEST_DIR")).join(COVERAGE);
    // Read before anything is written: an update must not hide a regression.
    let expected = std::fs::read_to_string(&expected_path).unwrap();
    let mut regressions = Vec::new();
    for line in expected.lines().skip(2) {
        let cells: Vec<&str> = line.trim_matches('|').split(" | ").map(str::trim).collect();
        let [file, _, was] = cells[..] else { continue };
        let now = rows
            .get(file)
            .map_or("missing from this run", |(_, r)| r.as_str());
        if rank(now) < rank(was) {
            regressions.push(format!("{file}: was {was:?}, now {now:?}"));
        }
    }
    assert!(
        regressions.is_empty(),
        "regressions against {COVERAGE} (this run's table: {}): {regressions:#?}",
        target.display()
    );
    // Only a table without regressions replaces the committed one.
    if std::env::var_os("STOW_UPDATE_COVERAGE").is_some() {
        std::fs::write(&expected_path, &actual).unwrap();
    }
    // Every compressed syntax in the inputs decodes at least once.
    for ts in [
        "1.2.840.10008.1.2.4.50",
        "1.2.840.10008.1.2.4.51",
        "1.2.840.10008.1.2.4.57",
        "1.2.840.10008.1.2.4.70",
        "1.2.840.10008.1.2.4.80",
        "1.2.840.10008.1.2.4.81",
        "1.2.840.10008.1.2.4.90",
        "1.2.840.10008.1.2.4.91",
        "1.2.840.10008.1.2.5",
        "1.2.840.10008.1.2.1.99",
    ] {
        assert!(
            rows.values().any(|(t, r)| t == ts && rank(r) >= 3),
            "no file of {ts} decoded within tolerance"
        );
    }
}

/// The compressed objects of an end-to-end export: dcmtk's, and some of
/// pydicom's that need our own decoder paths, in one study.
fn export_inputs(dir: &Path, corrupt: bool) -> Vec<PathBuf> {
    let p = pydicom_files();
    let mut extra: Vec<PathBuf> = PYDICOM_EXTRAS.iter().map(|f| p.join(f)).collect();
    if corrupt {
        // Its J2K codestream is broken: a sequence delimiter overwrites
        // the width in SIZ, which the header check refuses.
        extra.push(p.join("JPEG2000-embedded-sequence-delimiter.dcm"));
    }
    fixtures(dir, &extra)
}

/// Exports the inputs to a web app that takes only `accepts`, and checks
/// what arrived against the reference decoders.
async fn export_decompressed(accepts: &str, expect_ts: &str, corrupt: bool) -> (Value, Receiver) {
    let tmp = tempfile::tempdir().unwrap();
    let rcv = Receiver::start(&tmp.path().join("received"), Duration::ZERO).await;
    let props = [format!("transfer-syntax={accepts}"), "concurrency=2".into()];
    let props: Vec<&str> = props.iter().map(String::as_str).collect();
    let cfg = write_config(
        tmp.path(),
        rcv.addr.port(),
        &add_props(DCM4CHEE_WEBAPP_DN, &props),
    );
    let inputs = export_inputs(&tmp.path().join("in"), corrupt);
    import(&tmp.path().join("data"), &inputs).await;
    let svc = Service::start(&cfg, &tmp.path().join("data")).await;
    let t = svc.export_study("StowExporter", STUDY).await;
    let id = t["taskID"].as_str().unwrap().to_string();
    let done = svc.wait_done(&id).await;

    // Every part went as plain application/dicom, in the target syntax.
    for s in rcv.seen() {
        assert_eq!(s.part_content_types, vec!["application/dicom".to_string()]);
    }
    let by_sop: BTreeMap<String, PathBuf> =
        inputs.iter().map(|p| (sop_uid(p), p.clone())).collect();
    let received = rcv.stored();
    let mut pairs = Vec::new();
    for r in &received {
        assert_eq!(stored_ts(r), expect_ts, "{}", r.display());
        pairs.push((by_sop[&sop_uid(r)].clone(), r.clone()));
    }
    for (r, (src, _)) in compare(&pairs).iter().zip(&pairs) {
        let (result, ok) = verdict(r);
        assert!(ok, "{}: {result}", src.display());
        assert_eq!(r["output_ts"], expect_ts);
    }
    let expected_arrivals = inputs.len() - usize::from(corrupt);
    assert_eq!(received.len(), expected_arrivals, "{done}");
    let instances = svc.instances(&id).await;
    assert_eq!(instances.len(), inputs.len());
    svc.stop().await;
    (done, rcv)
}

#[tokio::test]
async fn export_decompresses_for_a_destination_taking_only_explicit_vr_little_endian() {
    let (done, _rcv) = export_decompressed("ExplicitVRLittleEndian", EXPLICIT, true).await;
    // The corrupt object fails with a reason naming its syntax and the
    // cause; the others still went.
    assert_eq!(done["status"], "WARNING", "{done}");
    let msg = done["outcomeMessage"].as_str().unwrap();
    assert!(msg.contains("failed:1"), "{msg}");
    let err = done["errorMessage"].as_str().unwrap();
    assert!(
        err.contains("cannot convert JPEG2000 (1.2.840.10008.1.2.4.91) to ExplicitVRLittleEndian")
            && err.contains("frame 1: JPEG 2000 codestream says 3722445056 x 1024 x 1 but the DICOM attributes say 256 x 1024 x 1"),
        "{err}"
    );
}

#[tokio::test]
async fn export_decompresses_for_a_destination_taking_only_implicit_vr_little_endian() {
    let (done, _rcv) = export_decompressed("ImplicitVRLittleEndian", IMPLICIT, false).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
}

#[tokio::test]
async fn stored_syntax_accepted_goes_as_stored_and_parameter_on_request() {
    let tmp = tempfile::tempdir().unwrap();
    let rcv = Receiver::start(&tmp.path().join("received"), Duration::ZERO).await;
    let cfg = write_config(
        tmp.path(),
        rcv.addr.port(),
        &add_props(
            DCM4CHEE_WEBAPP_DN,
            &[
                "transfer-syntax=JPEGLSLossless,RLELossless,ExplicitVRLittleEndian,JPEGBaseline8Bit,JPEGExtended12Bit,JPEGLossless,JPEGLosslessSV1,JPEGLSNearLossless,JPEG2000Lossless,JPEG2000,DeflatedExplicitVRLittleEndian",
                "transfer-syntax-parameter=true",
            ],
        ),
    );
    let inputs = export_inputs(&tmp.path().join("in"), false);
    import(&tmp.path().join("data"), &inputs).await;
    let svc = Service::start(&cfg, &tmp.path().join("data")).await;
    let t = svc.export_study("StowExporter", STUDY).await;
    let done = svc.wait_done(t["taskID"].as_str().unwrap()).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    // Every object arrived byte for byte as stored...
    assert_eq!(rcv.stored().len(), inputs.len());
    for input in &inputs {
        let got = std::fs::read(rcv.dir.join(format!("{}.dcm", sop_uid(input)))).unwrap();
        assert!(got == std::fs::read(input).unwrap(), "{}", input.display());
    }
    // ...and each part's Content-Type named its syntax.
    let mut params: Vec<String> = rcv
        .seen()
        .into_iter()
        .flat_map(|s| s.part_content_types)
        .collect();
    params.sort();
    let mut want: Vec<String> = inputs
        .iter()
        .map(|p| format!("application/dicom; transfer-syntax={}", stored_ts(p)))
        .collect();
    want.sort();
    assert_eq!(params, want);
    svc.stop().await;
}
