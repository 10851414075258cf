//! Interoperability with a real Orthanc 1.10 + DICOMweb plugin (Debian
//! packages orthanc and orthanc-dicomweb), each test with a private
//! instance on a loopback port (scripts/orthanc.sh): the exporter sending
//! to Orthanc's STOW-RS service, checked through Orthanc's REST API
//! (`/instances`, `/instances/{id}/file`, `/statistics`, `/tools/lookup`),
//! and Orthanc's own STOW-RS client sending to `stowrsd`.

mod common;
#[path = "common/orthanc.rs"]
mod orthanc;
#[path = "common/reference.rs"]
mod reference;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use orthanc::{Options, Orthanc};
use reference::*;
use serde_json::Value;

const EXPLICIT: &str = "1.2.840.10008.1.2.1";
/// The study of tests/reference/make_fixtures.py.
const SHIPPED_SERVICE_PATH: &str = "dcmWebServicePath: /dcm4chee-arc/aets/DCM4CHEE/rs\n";

/// The shipped configuration with the web app `DCM4CHEE` (exporter
/// `StowExporter`, queue Export1 without retries) pointing at Orthanc's
/// DICOMweb root, and `props` added to it.
fn config_for(dir: &Path, orthanc: &Orthanc, props: &[&str]) -> PathBuf {
    let extra = if props.is_empty() {
        String::new()
    } else {
        add_props(DCM4CHEE_WEBAPP_DN, props)
    };
    let cfg = write_config(dir, orthanc.port, &extra);
    let apps = cfg.join("60-web-apps.ldif");
    let text = std::fs::read_to_string(&apps).unwrap();
    assert!(
        text.contains(SHIPPED_SERVICE_PATH),
        "ldif/60-web-apps.ldif no longer has {SHIPPED_SERVICE_PATH:?}"
    );
    std::fs::write(
        &apps,
        text.replace(SHIPPED_SERVICE_PATH, "dcmWebServicePath: /dicom-web\n"),
    )
    .unwrap();
    cfg
}

/// Imports `files` into `dir/data`, runs the service against `cfg` and
/// exports `study` with StowExporter once per entry of `times`; returns
/// each task's final record and per-instance results.
async fn export(
    dir: &Path,
    cfg: &Path,
    files: &[PathBuf],
    study: &str,
    times: usize,
) -> Vec<(Value, Vec<Value>)> {
    let data = dir.join("data");
    import(&data, files).await;
    let svc = Service::start(cfg, &data).await;
    let mut out = Vec::new();
    for _ in 0..times {
        let t = svc.export_study("StowExporter", study).await;
        let id = t["taskID"].as_str().unwrap().to_string();
        let done = svc.wait_done(&id).await;
        let instances = svc.instances(&id).await;
        out.push((done, instances));
    }
    svc.stop().await;
    out
}

/// Orthanc holds exactly the SOP instances of `files`, each byte for byte.
async fn assert_holds_exactly(orthanc: &Orthanc, files: &[PathBuf]) {
    let held = orthanc.sop_uids().await;
    let want: BTreeSet<String> = files.iter().map(|f| sop_uid(f)).collect();
    assert_eq!(
        held.keys().cloned().collect::<BTreeSet<_>>(),
        want,
        "SOP instances in Orthanc"
    );
    for f in files {
        let sop = sop_uid(f);
        let id = orthanc
            .lookup_instance(&sop)
            .await
            .unwrap_or_else(|| panic!("/tools/lookup does not find {sop}"));
        assert_eq!(id, held[&sop]);
        let got = orthanc.file(&id).await;
        assert!(
            got == std::fs::read(f).unwrap(),
            "/instances/{id}/file differs from {}",
            f.display()
        );
    }
    assert_eq!(orthanc.count_instances().await, files.len() as u64);
}

fn statuses(instances: &[Value]) -> BTreeMap<String, String> {
    instances
        .iter()
        .map(|i| {
            (
                i["SOPInstanceUID"].as_str().unwrap().to_string(),
                i["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn compressed_inputs(dir: &Path) -> Vec<PathBuf> {
    let p = pydicom_files();
    let extra: Vec<PathBuf> = PYDICOM_EXTRAS.iter().map(|f| p.join(f)).collect();
    fixtures(dir, &extra)
}

/// Where on 127.0.0.1 a TCP port is listened on, from /proc/net/tcp{,6}:
/// the local addresses (hex, as the kernel writes them) in LISTEN state.
fn listeners(port: u16) -> Vec<String> {
    let mut out = Vec::new();
    for f in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(f) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            // local_address is ADDR:PORT in hex; state 0A is LISTEN.
            if cols.len() > 3
                && cols[3] == "0A"
                && let Some((addr, p)) = cols[1].split_once(':')
                && u16::from_str_radix(p, 16) == Ok(port)
            {
                out.push(addr.to_string());
            }
        }
    }
    out
}

#[tokio::test]
async fn orthanc_listens_on_loopback_only_and_stops_by_its_pid() {
    let o = Orthanc::start(None, None);
    let pid: i32 = std::fs::read_to_string(o.dir().join("orthanc.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // 0100007F is 127.0.0.1 as /proc/net/tcp prints it.
    assert_eq!(listeners(o.port), vec!["0100007F".to_string()]);
    let system = o.get_json("/system").await;
    assert_eq!(system["Version"], "1.10.1", "{system}");
    assert_eq!(o.count_instances().await, 0);
    let stopped_in = o.stop();
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists()
            || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|s| s.split(") ").nth(1).is_some_and(|r| r.starts_with('Z'))),
        "Orthanc (PID {pid}) still runs after stop"
    );
    assert!(listeners(o.port).is_empty());
    eprintln!(
        "Orthanc started in {:?}, stopped in {stopped_in:?}",
        o.started_in
    );
}

#[tokio::test]
async fn plain_export_arrives_byte_identical() {
    let tmp = tempfile::tempdir().unwrap();
    let o = Orthanc::start(None, None);
    let cfg = config_for(tmp.path(), &o, &[]);
    let (study, files) = study(&tmp.path().join("src"), 5, 64);
    let runs = export(tmp.path(), &cfg, &files, &study, 1).await;
    let (done, instances) = &runs[0];
    assert_eq!(done["status"], "COMPLETED", "{done}");
    assert_eq!(
        done["outcomeMessage"],
        format!("Export Study[uid={study}] to DCM4CHEE - completed:5")
    );
    assert!(
        instances.iter().all(|i| i["status"] == "COMPLETED"),
        "{instances:?}"
    );
    assert_holds_exactly(&o, &files).await;
    // Orthanc indexed what it received as the source's study.
    for id in o.instances().await {
        assert_eq!(o.tags(&id).await["StudyInstanceUID"], study.as_str());
    }
    let stats = o.statistics().await;
    assert_eq!(stats["CountStudies"], 1, "{stats}");
    assert_eq!(stats["CountInstances"], 5, "{stats}");
}

#[tokio::test]
async fn basic_auth_accepted_and_wrong_password_fails_with_401() {
    let tmp = tempfile::tempdir().unwrap();
    let o = Orthanc::start(Some(("stow", "s3cr3t-pass")), None);

    let good = tmp.path().join("good");
    let cfg = config_for(&good, &o, &["basic-auth=stow:s3cr3t-pass"]);
    let (study, files) = study(&good.join("src"), 3, 32);
    let runs = export(&good, &cfg, &files, &study, 1).await;
    assert_eq!(runs[0].0["status"], "COMPLETED", "{}", runs[0].0);
    assert_holds_exactly(&o, &files).await;

    let bad = tmp.path().join("bad");
    let cfg = config_for(&bad, &o, &["basic-auth=stow:wrong-pass"]);
    let (study2, files2) = common::study(&bad.join("src"), 2, 32);
    let runs = export(&bad, &cfg, &files2, &study2, 1).await;
    let (done, instances) = &runs[0];
    assert_eq!(done["status"], "FAILED", "{done}");
    let err = done["errorMessage"].as_str().unwrap_or_default();
    assert!(err.contains("401"), "{done}");
    assert!(!err.contains("wrong-pass"), "{done}");
    for i in instances {
        assert_eq!(i["status"], "FAILED", "{i}");
        assert!(i["reason"].as_str().unwrap().contains("401"), "{i}");
    }
    // Nothing of the second study arrived.
    assert_holds_exactly(&o, &files).await;
}

#[tokio::test]
async fn chunked_and_content_length_both_arrive() {
    let tmp = tempfile::tempdir().unwrap();
    let o = Orthanc::start(None, None);
    let mut all = Vec::new();
    for chunked in ["true", "false"] {
        let dir = tmp.path().join(format!("chunked-{chunked}"));
        let prop = format!("chunked={chunked}");
        let cfg = config_for(&dir, &o, &[&prop, "concurrency=2"]);
        let (study, files) = study(&dir.join("src"), 4, 64);
        let runs = export(&dir, &cfg, &files, &study, 1).await;
        assert_eq!(runs[0].0["status"], "COMPLETED", "{prop}: {}", runs[0].0);
        assert_eq!(runs[0].0["completed"], 4, "{prop}: {}", runs[0].0);
        all.extend(files);
        assert_holds_exactly(&o, &all).await;
    }
}

#[tokio::test]
async fn compressed_objects_arrive_as_stored() {
    let tmp = tempfile::tempdir().unwrap();
    let o = Orthanc::start(None, None);
    let cfg = config_for(tmp.path(), &o, &[]);
    let inputs = compressed_inputs(&tmp.path().join("in"));
    let runs = export(tmp.path(), &cfg, &inputs, STUDY, 1).await;
    let (done, instances) = &runs[0];
    assert_eq!(done["status"], "COMPLETED", "{done} {instances:?}");
    assert_holds_exactly(&o, &inputs).await;
    // Orthanc recorded each object's own syntax.
    let mut syntaxes = BTreeSet::new();
    for input in &inputs {
        let id = o.lookup_instance(&sop_uid(input)).await.unwrap();
        let ts = stored_ts(input);
        assert_eq!(o.transfer_syntax(&id).await, ts, "{}", input.display());
        syntaxes.insert(ts);
    }
    for ts in [
        "1.2.840.10008.1.2.4.50",
        "1.2.840.10008.1.2.4.51",
        "1.2.840.10008.1.2.4.57",
        "1.2.840.10008.1.2.4.70",
        "1.2.840.10008.1.2.4.80",
        "1.2.840.10008.1.2.4.81",
        "1.2.840.10008.1.2.4.90",
        "1.2.840.10008.1.2.5",
        "1.2.840.10008.1.2.1.99",
    ] {
        assert!(syntaxes.contains(ts), "no input in {ts}: {syntaxes:?}");
    }
}

/// The verdict on one compare.py result: acceptable or why not (the
/// rules of tests/transcode.rs).
fn verdict_explicit(r: &Value) -> Result<(), String> {
    if r["output_ts"] != EXPLICIT {
        return Err(format!("output in {}", r["output_ts"]));
    }
    match verdict(r) {
        (_, true) => Ok(()),
        (why, false) => Err(why),
    }
}

#[tokio::test]
async fn decompressed_for_a_destination_taking_only_explicit_vr_little_endian() {
    let tmp = tempfile::tempdir().unwrap();
    let o = Orthanc::start(None, None);
    let cfg = config_for(
        tmp.path(),
        &o,
        &["transfer-syntax=ExplicitVRLittleEndian", "concurrency=2"],
    );
    let inputs = compressed_inputs(&tmp.path().join("in"));
    let runs = export(tmp.path(), &cfg, &inputs, STUDY, 1).await;
    let (done, instances) = &runs[0];
    assert_eq!(done["status"], "COMPLETED", "{done} {instances:?}");

    let held = o.sop_uids().await;
    let want: BTreeSet<String> = inputs.iter().map(|f| sop_uid(f)).collect();
    assert_eq!(held.keys().cloned().collect::<BTreeSet<_>>(), want);
    assert_eq!(o.count_instances().await, inputs.len() as u64);
    let out = tmp.path().join("from-orthanc");
    std::fs::create_dir_all(&out).unwrap();
    let mut pairs = Vec::new();
    for input in &inputs {
        let id = &held[&sop_uid(input)];
        assert_eq!(o.transfer_syntax(id).await, EXPLICIT, "{}", input.display());
        let got = out.join(format!("{id}.dcm"));
        std::fs::write(&got, o.file(id).await).unwrap();
        assert_eq!(stored_ts(&got), EXPLICIT);
        assert_eq!(sop_uid(&got), sop_uid(input));
        pairs.push((input.clone(), got));
    }
    let mut bad = Vec::new();
    for r in compare(&pairs) {
        if let Err(e) = verdict_explicit(&r) {
            bad.push(format!("{}: {e}", r["source"]));
        }
    }
    assert!(bad.is_empty(), "wrong in Orthanc: {bad:#?}");
}

#[tokio::test]
async fn duplicate_sop_instance_uid_is_stored_once() {
    let tmp = tempfile::tempdir().unwrap();
    let o = Orthanc::start(None, None);
    let cfg = config_for(tmp.path(), &o, &[]);
    let (study, files) = study(&tmp.path().join("src"), 3, 32);
    // The same study twice: Orthanc answers 200 with every instance in
    // ReferencedSOPSequence again (its OverwriteInstances is false: the
    // first copy stays).
    let runs = export(tmp.path(), &cfg, &files, &study, 2).await;
    for (n, (done, instances)) in runs.iter().enumerate() {
        assert_eq!(done["status"], "COMPLETED", "task {n}: {done}");
        assert_eq!(done["completed"], 3, "task {n}: {done}");
        assert!(
            instances.iter().all(|i| i["status"] == "COMPLETED"),
            "task {n}: {instances:?}"
        );
    }
    assert_holds_exactly(&o, &files).await;
}

#[tokio::test]
async fn parts_with_a_transfer_syntax_parameter_are_dropped_by_orthanc_and_reported_failed() {
    let tmp = tempfile::tempdir().unwrap();
    let o = Orthanc::start(None, None);
    let cfg = config_for(tmp.path(), &o, &["transfer-syntax-parameter=true"]);
    let (study, files) = study(&tmp.path().join("src"), 3, 32);
    let runs = export(tmp.path(), &cfg, &files, &study, 1).await;
    let (done, instances) = &runs[0];
    // Orthanc answers 200 and names none of them: nothing was stored.
    assert_eq!(done["status"], "FAILED", "{done}");
    assert_eq!(done["failed"], 3, "{done}");
    assert_eq!(statuses(instances).len(), 3);
    for i in instances {
        assert_eq!(i["status"], "FAILED", "{i}");
        let reason = i["reason"].as_str().unwrap();
        assert!(
            reason.contains("HTTP 200") && reason.contains("not stored"),
            "{i}"
        );
    }
    assert_eq!(o.count_instances().await, 0);
    assert!(o.instances().await.is_empty());
    assert!(
        o.log_errors()
            .iter()
            .any(|l| l.contains("application/dicom; transfer-syntax=")),
        "{:?}",
        o.log_errors()
    );
}

#[tokio::test]
async fn a_part_orthanc_cannot_parse_fails_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let o = Orthanc::start(None, None);
    let cfg = config_for(tmp.path(), &o, &[]);
    let (study, files) = study(&tmp.path().join("src"), 3, 64);
    let data = tmp.path().join("data");
    import(&data, &files).await;
    // Overwrite the data set of the archive's copy of one instance with
    // 0xFF bytes, keeping its size and its File Meta Information (the
    // service checks the size against the index and reads the meta).
    // Orthanc answers 400 to it.
    let broken = sop_uid(&files[1]);
    let archived: Vec<PathBuf> = walk(&data.join("storage"))
        .into_iter()
        .filter(|p| p.file_name().unwrap().to_string_lossy() == format!("{broken}.dcm"))
        .collect();
    assert_eq!(archived.len(), 1, "archive copy of {broken}");
    let mut bytes = std::fs::read(&archived[0]).unwrap();
    assert_eq!(&bytes[128..132], b"DICM");
    // (0002,0000) File Meta Information Group Length, explicit VR UL.
    let group_len = u32::from_le_bytes(bytes[140..144].try_into().unwrap()) as usize;
    bytes[144 + group_len..].fill(0xFF);
    std::fs::write(&archived[0], &bytes).unwrap();

    let runs = export(tmp.path(), &cfg, &[], &study, 1).await;
    let (done, instances) = &runs[0];
    assert_eq!(done["status"], "WARNING", "{done} {instances:?}");
    assert_eq!(done["completed"], 2, "{done}");
    assert_eq!(done["failed"], 1, "{done}");
    let s = statuses(instances);
    assert_eq!(s[&broken], "FAILED", "{instances:?}");
    let reason = instances
        .iter()
        .find(|i| i["SOPInstanceUID"] == broken.as_str())
        .unwrap()["reason"]
        .as_str()
        .unwrap();
    assert!(reason.contains("HTTP 400"), "{reason}");
    let good = [files[0].clone(), files[2].clone()];
    assert_holds_exactly(&o, &good).await;
    assert!(
        o.log_errors()
            .iter()
            .any(|l| l.contains("Cannot parse an invalid DICOM file")),
        "{:?}",
        o.log_errors()
    );
}

/// Orthanc's STOW-RS client sends instances it holds to stowrsd; the
/// synchronous call succeeds only when Orthanc accepted stowrsd's answer
/// (every instance in ReferencedSOPSequence, no failures).
async fn orthanc_sends_to_stowrsd(chunked: Option<bool>) {
    let tmp = tempfile::tempdir().unwrap();
    let rcv = Receiver::start(&tmp.path().join("received"), Duration::ZERO).await;
    let o = Orthanc::start_with(Options {
        auth: None,
        stow_target: Some(format!("http://{}/stowrs/", rcv.addr)),
        stow_chunked: chunked,
    });
    let (_, mut files) = study(&tmp.path().join("src"), 3, 64);
    let p = pydicom_files();
    files.extend(
        [
            "MR_small_jpeg_ls_lossless.dcm",
            "SC_rgb_rle_32bit_2frame.dcm",
        ]
        .iter()
        .map(|f| p.join(f)),
    );
    let mut ids = Vec::new();
    for f in &files {
        ids.push(o.upload(std::fs::read(f).unwrap()).await);
    }
    let t0 = Instant::now();
    let (status, body) = o.stow_to("stowrsd", &ids).await;
    let took = t0.elapsed();
    assert_eq!(status, 200, "{body}\n{:?}", o.log_errors());
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        answer["InstancesCount"],
        files.len().to_string(),
        "{answer}"
    );
    eprintln!("Orthanc -> stowrsd ({chunked:?}): {answer} in {took:?}");

    // What stowrsd stored is what Orthanc holds, byte for byte.
    let stored = rcv.stored();
    assert_eq!(stored.len(), files.len(), "{stored:?}");
    for id in &ids {
        let sop = o.tags(id).await["SOPInstanceUID"]
            .as_str()
            .unwrap()
            .to_string();
        let got = std::fs::read(rcv.dir.join(format!("{sop}.dcm"))).unwrap();
        assert!(got == o.file(id).await, "{sop} differs");
    }
    let seen = rcv.seen();
    assert_eq!(seen.len(), 1, "Orthanc sends a job in one request");
    let s = &seen[0];
    assert_eq!(s.path, "/stowrs/studies");
    assert_eq!(s.part_content_types.len(), files.len());
    assert!(
        s.part_content_types
            .iter()
            .all(|c| c == "application/dicom")
    );
    if chunked == Some(false) {
        assert!(
            s.content_length.is_some() && s.transfer_encoding.is_none(),
            "{s:?}"
        );
    } else {
        assert_eq!(s.transfer_encoding.as_deref(), Some("chunked"), "{s:?}");
    }
}

#[tokio::test]
async fn orthanc_stow_client_to_stowrsd_chunked() {
    orthanc_sends_to_stowrsd(None).await;
}

#[tokio::test]
async fn orthanc_stow_client_to_stowrsd_with_content_length() {
    orthanc_sends_to_stowrsd(Some(false)).await;
}
