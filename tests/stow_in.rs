//! STOW-RS into the archive (issue 15): `POST
//! /dcm4chee-arc/aets/{AET}/rs/studies[/{study}]` of a running service,
//! with pydicom's real files; per-part failures, limits and refusals with
//! nothing left behind; forwarding by a `dcmExportRule` to the real
//! stowrsd; the control API's token.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use dicom_core::header::Header;
use dicom_dictionary_std::tags;
use serde_json::Value;
use stow_exporter::app::Application;
use stow_exporter::archive::Archive;
use stow_exporter::config::{ConfigSource, Secret};

const DEV: &str =
    "dicomDeviceName=dcm4chee-arc,cn=Devices,cn=DICOM Configuration,dc=dcm4che,dc=org";
const BOUNDARY: &str = "stow-in-test-boundary-8d1f";
const CANNOT_UNDERSTAND: u64 = 0xC000;
const DATA_SET_MISMATCH: u64 = 0xA900;
const OUT_OF_RESOURCES: u64 = 0xA700;
const DUPLICATE_SOP_INSTANCE: u64 = 0x0111;

/// A `multipart/related; type="application/dicom"` body of `parts`
/// (Content-Type of the part, bytes); its Content-Type header value.
fn multipart(parts: &[(&str, Vec<u8>)]) -> (String, Vec<u8>) {
    let mut body = Vec::new();
    for (ct, data) in parts {
        body.extend_from_slice(format!("--{BOUNDARY}\r\nContent-Type: {ct}\r\n\r\n").as_bytes());
        body.extend_from_slice(data);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    (
        format!("multipart/related; type=\"application/dicom\"; boundary={BOUNDARY}"),
        body,
    )
}

/// The files as DICOM parts.
fn dicom_parts(files: &[PathBuf]) -> Vec<(&'static str, Vec<u8>)> {
    files
        .iter()
        .map(|f| ("application/dicom", std::fs::read(f).unwrap()))
        .collect()
}

/// What a STOW-RS POST answered.
struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    /// (SOP Class UID, SOP Instance UID) of ReferencedSOPSequence.
    fn referenced(&self) -> Vec<(String, String)> {
        items(&self.json(), "00081199")
            .iter()
            .map(|i| (uid(i, "00081150").unwrap(), uid(i, "00081155").unwrap()))
            .collect()
    }

    /// (SOP Instance UID if known, FailureReason) of FailedSOPSequence.
    fn failed(&self) -> Vec<(Option<String>, u64)> {
        items(&self.json(), "00081198")
            .iter()
            .map(|i| {
                (
                    uid(i, "00081155"),
                    i["00081197"]["Value"][0].as_u64().unwrap(),
                )
            })
            .collect()
    }
}

fn items(v: &Value, tag: &str) -> Vec<Value> {
    v[tag]["Value"].as_array().cloned().unwrap_or_default()
}

fn uid(item: &Value, tag: &str) -> Option<String> {
    item[tag]["Value"][0].as_str().map(str::to_string)
}

/// POSTs `body` to `path` under `/dcm4chee-arc` with `headers`.
async fn post(
    svc: &Service,
    path: &str,
    content_type: &str,
    body: Vec<u8>,
    headers: &[(&str, &str)],
) -> Answer {
    let mut r = svc
        .http
        .post(svc.url(path))
        .header("content-type", content_type)
        .body(body);
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    let resp = r.send().await.unwrap();
    Answer {
        status: resp.status().as_u16(),
        headers: resp.headers().clone(),
        body: resp.text().await.unwrap(),
    }
}

/// POSTs `files` to the AE's studies resource (or a study's).
async fn store(svc: &Service, study: Option<&str>, files: &[PathBuf]) -> Answer {
    let (ct, body) = multipart(&dicom_parts(files));
    post(svc, &studies(study), &ct, body, &[]).await
}

fn studies(study: Option<&str>) -> String {
    match study {
        Some(s) => format!("/aets/{AET}/rs/studies/{s}"),
        None => format!("/aets/{AET}/rs/studies"),
    }
}

/// (study, series, SOP class, SOP instance) of a file's data set.
fn uids(path: &Path) -> (String, String, String, String) {
    let obj = dicom_object::open_file(path).unwrap();
    let s = |tag| {
        obj.element(tag)
            .unwrap()
            .to_str()
            .unwrap()
            .trim_end_matches(['\0', ' '])
            .to_string()
    };
    (
        s(tags::STUDY_INSTANCE_UID),
        s(tags::SERIES_INSTANCE_UID),
        s(tags::SOP_CLASS_UID),
        s(tags::SOP_INSTANCE_UID),
    )
}

/// Where the archive keeps the object of `src`.
fn stored_path(data: &Path, src: &Path) -> PathBuf {
    let (study, series, _, sop) = uids(src);
    data.join("storage")
        .join(study)
        .join(series)
        .join(format!("{sop}.dcm"))
}

/// Asserts that `stored` holds the data set of `src`: every element, pixel
/// data included (the meta group may differ).
fn assert_same_data_set(src: &Path, stored: &Path) {
    let a = dicom_object::open_file(src).unwrap();
    let b = dicom_object::open_file(stored)
        .unwrap_or_else(|e| panic!("{} not stored: {e}", stored.display()));
    assert_eq!(
        a.meta().transfer_syntax(),
        b.meta().transfer_syntax(),
        "{}",
        src.display()
    );
    if let Ok(px) = a.element(tags::PIXEL_DATA) {
        let stored_px = b.element(tags::PIXEL_DATA).unwrap();
        assert!(
            px.value() == stored_px.value(),
            "{}: pixel data differs",
            src.display()
        );
    }
    let (a, b) = (a.into_inner(), b.into_inner());
    let tags = |o: &dicom_object::InMemDicomObject| o.iter().map(|e| e.tag()).collect::<Vec<_>>();
    assert_eq!(tags(&a), tags(&b), "{}: elements differ", src.display());
    for e in a.iter() {
        let other = b.element(e.tag()).unwrap();
        // Compared by their full description (header, values, items):
        // dicom-core's `==` holds no undefined length equal to another, so
        // a sequence read twice from the same bytes would differ.
        assert!(
            format!("{e:?}") == format!("{other:?}"),
            "{}: {} differs: {:?} vs {:?}",
            src.display(),
            e.tag(),
            e.value(),
            other.value()
        );
    }
}

/// Waits (bounded) until the archive's receiving area holds no file.
async fn assert_nothing_incoming(data: &Path) {
    let incoming = data.join("storage").join(".incoming");
    eventually(Duration::from_secs(10), || async {
        let left: Vec<PathBuf> = std::fs::read_dir(&incoming)
            .map(|d| d.map(|e| e.unwrap().path()).collect())
            .unwrap_or_default();
        if left.is_empty() {
            Ok(())
        } else {
            Err(format!("temp files left: {left:?}"))
        }
    })
    .await
}

/// The files stored anywhere in the archive's storage (not `.incoming`).
fn stored_objects(data: &Path) -> Vec<PathBuf> {
    let storage = data.join("storage");
    if !storage.exists() {
        return Vec::new();
    }
    walk(&storage)
        .into_iter()
        .filter(|p| !p.starts_with(storage.join(".incoming")))
        .filter(|p| p.extension().is_some_and(|x| x == "dcm"))
        .collect()
}

fn pydicom(names: &[&str]) -> Vec<PathBuf> {
    let dir = pydicom_files();
    names.iter().map(|n| dir.join(n)).collect()
}

#[tokio::test]
async fn pydicom_files_are_stored_indexed_and_answered() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = write_config(tmp.path(), 1, "");
    let data = tmp.path().join("data");
    let svc = Service::start(&cfg, &data).await;
    // Several SOP classes and transfer syntaxes: CT and MR explicit little
    // endian, secondary capture JPEG 2000 and JPEG baseline, an RT plan in
    // implicit little endian without pixel data.
    let files = pydicom(&[
        "CT_small.dcm",
        "MR_small.dcm",
        "JPEG2000.dcm",
        "SC_rgb_jpeg_dcmtk.dcm",
        "rtplan.dcm",
    ]);
    let a = store(&svc, None, &files).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(
        a.headers["content-type"], "application/dicom+json",
        "{:?}",
        a.headers
    );
    assert!(a.failed().is_empty(), "{}", a.body);
    let expected: Vec<(String, String)> = files
        .iter()
        .map(|f| {
            let (_, _, class, sop) = uids(f);
            (class, sop)
        })
        .collect();
    assert_eq!(a.referenced(), expected);

    let archive = Archive::open(&data).await.unwrap();
    for f in &files {
        assert_same_data_set(f, &stored_path(&data, f));
        let (study, series, class, sop) = uids(f);
        let found = archive
            .find(&study, Some(&series), Some(&sop))
            .await
            .unwrap();
        assert_eq!(found.len(), 1, "{} indexed", f.display());
        assert_eq!(found[0].sop_cuid, class);
    }
    assert_eq!(archive.count().await.unwrap(), files.len() as u64);

    // The same objects again: success (already stored), nothing twice.
    let again = store(&svc, None, &files[..2]).await;
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(again.referenced(), expected[..2].to_vec());
    assert_eq!(archive.count().await.unwrap(), files.len() as u64);

    // Native DICOM Model XML on request.
    let (ct, body) = multipart(&dicom_parts(&files[..1]));
    let xml = post(
        &svc,
        &studies(None),
        &ct,
        body,
        &[("accept", "application/dicom+xml")],
    )
    .await;
    assert_eq!(xml.status, 200, "{}", xml.body);
    assert_eq!(xml.headers["content-type"], "application/dicom+xml");
    assert!(
        xml.body.contains("keyword=\"ReferencedSOPSequence\"") && xml.body.contains(&expected[0].1),
        "{}",
        xml.body
    );

    // Another object under MR_small's SOP Instance UID (the RLE copy):
    // refused as a duplicate, the stored one kept.
    let before = std::fs::read(stored_path(&data, &files[1])).unwrap();
    let rle = pydicom(&["MR_small_RLE.dcm"]);
    let c = store(&svc, None, &rle).await;
    assert_eq!(c.status, 409, "{}", c.body);
    assert_eq!(
        c.failed(),
        vec![(Some(expected[1].1.clone()), DUPLICATE_SOP_INSTANCE)]
    );
    assert_eq!(
        std::fs::read(stored_path(&data, &files[1])).unwrap(),
        before
    );
    assert_nothing_incoming(&data).await;
    svc.stop().await;
}

#[tokio::test]
async fn failures_limits_and_refusals_leave_nothing_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = write_config(tmp.path(), 1, "");
    let data = tmp.path().join("data");
    let mut settings = Service::settings(ConfigSource::Ldif(cfg), &data);
    // CT_small is about 39 KB, MR_small about 10 KB.
    settings.stowrsd_options.limits.max_request_bytes = 400_000;
    settings.stowrsd_options.limits.max_part_bytes = 200_000;
    let svc = Service::start_with_settings(settings).await;
    let [ct, mr] = <[PathBuf; 2]>::try_from(pydicom(&["CT_small.dcm", "MR_small.dcm"])).unwrap();
    let ct_sop = uids(&ct).3;
    let mr_sop = uids(&mr).3;
    let ct_bytes = std::fs::read(&ct).unwrap();
    let garbage = b"this is not a DICOM file".repeat(20);

    // One good part, one garbage part: 202, the garbage failed.
    let (t, body) = multipart(&[
        ("application/dicom", ct_bytes.clone()),
        ("application/dicom", garbage.clone()),
    ]);
    let a = post(&svc, &studies(None), &t, body, &[]).await;
    assert_eq!(a.status, 202, "{}", a.body);
    assert_eq!(a.referenced().len(), 1);
    assert_eq!(a.failed(), vec![(None, CANNOT_UNDERSTAND)]);
    assert_nothing_incoming(&data).await;

    // Only garbage (also a part that is not application/dicom): 409.
    let (t, body) = multipart(&[
        ("application/dicom", garbage.clone()),
        ("text/plain", b"hello".to_vec()),
    ]);
    let a = post(&svc, &studies(None), &t, body, &[]).await;
    assert_eq!(a.status, 409, "{}", a.body);
    assert_eq!(
        a.failed(),
        vec![(None, CANNOT_UNDERSTAND), (None, CANNOT_UNDERSTAND)]
    );
    assert_nothing_incoming(&data).await;

    // A wrong Content-Type: 415.
    for t in [
        "application/json".to_string(),
        format!("multipart/related; type=\"application/dicom+json\"; boundary={BOUNDARY}"),
    ] {
        let (_, body) = multipart(&[("application/dicom", ct_bytes.clone())]);
        let a = post(&svc, &studies(None), &t, body, &[]).await;
        assert_eq!(a.status, 415, "{t}: {}", a.body);
    }

    // The study in the path: an instance of another study is refused.
    let ct_study = uids(&ct).0;
    let a = store(&svc, Some(&ct_study), &[ct.clone(), mr.clone()]).await;
    assert_eq!(a.status, 202, "{}", a.body);
    assert_eq!(a.referenced().len(), 1);
    assert_eq!(a.referenced()[0].1, ct_sop);
    assert_eq!(a.failed(), vec![(Some(mr_sop.clone()), DATA_SET_MISMATCH)]);
    assert!(!stored_path(&data, &mr).exists(), "the MR is not stored");
    assert_nothing_incoming(&data).await;

    // An AE title the device does not have: 404 naming it.
    let (t, body) = multipart(&[("application/dicom", ct_bytes.clone())]);
    let a = post(&svc, "/aets/NOSUCHAE/rs/studies", &t, body, &[]).await;
    assert_eq!(a.status, 404, "{}", a.body);
    assert!(
        a.json()["errorMessage"]
            .as_str()
            .unwrap()
            .contains("NOSUCHAE"),
        "{}",
        a.body
    );

    // A body declared larger than the request limit: refused before it
    // is read, naming the limit and its option.
    let big = vec![0u8; 150_000];
    let (t, body) = multipart(&[
        ("application/dicom", big.clone()),
        ("application/dicom", big.clone()),
        ("application/dicom", big.clone()),
    ]);
    let a = post(&svc, &studies(None), &t, body, &[]).await;
    assert_eq!(a.status, 413, "{}", a.body);
    assert!(
        a.body.contains("400000") && a.body.contains("--stowrsd-max-request-bytes"),
        "{}",
        a.body
    );

    // A part over the part limit after a stored one: 202, the part failed
    // for lack of resources, a Warning naming the limit.
    let mut huge = std::fs::read(&mr).unwrap();
    huge.resize(250_000, 0);
    let (t, body) = multipart(&[
        ("application/dicom", ct_bytes.clone()),
        ("application/dicom", huge),
    ]);
    let a = post(&svc, &studies(None), &t, body, &[]).await;
    assert_eq!(a.status, 202, "{}", a.body);
    assert_eq!(a.referenced().len(), 1);
    assert_eq!(a.failed(), vec![(Some(mr_sop.clone()), OUT_OF_RESOURCES)]);
    let warning = a.headers["warning"].to_str().unwrap();
    assert!(warning.contains("--stowrsd-max-part-bytes"), "{warning}");
    assert!(!stored_path(&data, &mr).exists(), "the MR is not stored");

    assert_nothing_incoming(&data).await;
    // All that was stored is the CT, once.
    assert_eq!(stored_objects(&data), vec![stored_path(&data, &ct)]);
    svc.stop().await;
}

#[tokio::test]
async fn a_rule_forwards_what_stow_rs_stored() {
    let tmp = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(&tmp.path().join("received"), Duration::ZERO).await;
    // The rule also checks the HTTP peer's address, as its sending host.
    let rule = format!(
        "version: 1\n\n\
         dn: cn=Forward all,{DEV}\n\
         objectClass: dcmExportRule\n\
         cn: Forward all\n\
         dcmEntity: Study\n\
         dcmDuration: PT0S\n\
         dcmExporterID: STOWRSD\n\
         dcmProperty: ReceivingApplicationEntityTitle=DCM4CHEE1\n\
         dcmProperty: SendingHostname=127\\.0\\.0\\.1\n"
    );
    let cfg = write_config(tmp.path(), receiver.addr.port(), &rule);
    let data = tmp.path().join("data");
    let svc = Service::start(&cfg, &data).await;
    let files = pydicom(&["CT_small.dcm"]);
    let a = store(&svc, None, &files).await;
    assert_eq!(a.status, 200, "{}", a.body);

    let task = eventually(Duration::from_secs(30), || async {
        let tasks = svc.list("").await;
        tasks
            .into_iter()
            .find(|t| t["batchID"] == "Forward all")
            .ok_or_else(|| "no task of the rule yet".to_string())
    })
    .await;
    let id = task["taskID"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| task["taskID"].to_string());
    let done = svc.wait_done(&id).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    assert_eq!(done["StudyInstanceUID"], uids(&files[0]).0, "{done}");
    assert_arrived(&receiver, &files);
    svc.stop().await;
}

#[tokio::test]
async fn the_control_api_token_is_required() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = write_config(tmp.path(), 1, "");
    let data = tmp.path().join("data");
    let settings = Service::settings(ConfigSource::Ldif(cfg), &data);
    let app = Application::build(settings)
        .await
        .unwrap()
        .with_api_token(Some(Secret::new("st0w-in-t0ken")));
    let svc = Service::start_app(app, &data);
    let files = pydicom(&["CT_small.dcm"]);
    let (t, body) = multipart(&dicom_parts(&files));
    for study in [None, Some(uids(&files[0]).0)] {
        let a = post(&svc, &studies(study.as_deref()), &t, body.clone(), &[]).await;
        assert_eq!(a.status, 401, "{}", a.body);
        let a = post(
            &svc,
            &studies(study.as_deref()),
            &t,
            body.clone(),
            &[("authorization", "Bearer wrong")],
        )
        .await;
        assert_eq!(a.status, 401, "{}", a.body);
    }
    assert!(stored_objects(&data).is_empty());
    let a = post(
        &svc,
        &studies(None),
        &t,
        body,
        &[("authorization", "Bearer st0w-in-t0ken")],
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(stored_objects(&data), vec![stored_path(&data, &files[0])]);
    svc.stop().await;
}
