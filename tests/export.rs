//! End to end on embedded defaults: import, REST trigger, embedded queue,
//! STOW-RS over loopback to the real stowrsd receiver.

mod common;

use std::time::Duration;

use base64::Engine;
use common::*;
use stow_exporter::archive::{self, Archive, NoProgress};

#[tokio::test]
async fn study_arrives_byte_identical_with_content_length() {
    let tmp = tempfile::tempdir().unwrap();
    let rcv = Receiver::start(&tmp.path().join("received"), Duration::ZERO).await;
    let cfg = write_config(tmp.path(), rcv.addr.port(), "");
    let (study, files) = study(&tmp.path().join("src"), 5, 64);
    import(&tmp.path().join("data"), &files).await;
    let svc = Service::start(&cfg, &tmp.path().join("data")).await;

    // The seed exporter: stow:DCM4CHEE, queue Export1, LocalAET DCM4CHEE1.
    let task = svc.export_study("StowExporter", &study).await;
    assert_eq!(task["ExporterID"], "StowExporter");
    assert_eq!(task["queue"], "Export1");
    assert_eq!(task["LocalAET"], "DCM4CHEE1");
    assert_eq!(task["SeriesInstanceUID"], "*");
    let done = svc.wait_done(task["taskID"].as_str().unwrap()).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    assert_eq!(
        done["outcomeMessage"],
        format!("Export Study[uid={study}] to DCM4CHEE - completed:5")
    );
    assert_arrived(&rcv, &files);

    let seen = rcv.seen();
    assert_eq!(seen.len(), 5, "one request per instance");
    for s in &seen {
        assert_eq!(s.path, "/dcm4chee-arc/aets/DCM4CHEE/rs/studies");
        assert!(
            s.content_length.is_some() && s.transfer_encoding.is_none(),
            "{s:?}"
        );
        assert!(
            s.content_type
                .as_deref()
                .unwrap()
                .starts_with("multipart/related; type=\"application/dicom\"; boundary=")
        );
        assert_eq!(s.accept.as_deref(), Some("application/dicom+json"));
        assert_eq!(s.authorization, None);
    }
    svc.stop().await;
}

#[tokio::test]
async fn chunked_concurrency_and_basic_auth() {
    let tmp = tempfile::tempdir().unwrap();
    let rcv = Receiver::start(&tmp.path().join("received"), Duration::from_millis(300)).await;
    let cfg = write_config(
        tmp.path(),
        rcv.addr.port(),
        &add_props(
            STOWRSD_WEBAPP_DN,
            &[
                "chunked=true",
                "concurrency=4",
                "basic-auth=stow:s3cr3t-pass",
            ],
        ),
    );
    let (study, files) = study(&tmp.path().join("src"), 8, 64);
    import(&tmp.path().join("data"), &files).await;
    let svc = Service::start(&cfg, &tmp.path().join("data")).await;

    let task = svc.export_study("STOWRSD", &study).await;
    let done = svc.wait_done(task["taskID"].as_str().unwrap()).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    assert_arrived(&rcv, &files);
    assert_eq!(
        rcv.max_in_flight.load(std::sync::atomic::Ordering::SeqCst),
        4,
        "four requests really in flight"
    );
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("stow:s3cr3t-pass")
    );
    for s in rcv.seen() {
        assert_eq!(s.path, "/stowrs/studies");
        assert_eq!(s.transfer_encoding.as_deref(), Some("chunked"), "{s:?}");
        assert_eq!(s.content_length, None);
        assert_eq!(s.authorization.as_deref(), Some(expected.as_str()));
    }
    // The secret is nowhere in what the API shows.
    let listed = svc
        .http
        .get(svc.url("/monitor/export"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!listed.contains("s3cr3t"), "{listed}");
    svc.stop().await;
}

#[tokio::test]
async fn bearer_token_wins_over_basic_auth() {
    let tmp = tempfile::tempdir().unwrap();
    let rcv = Receiver::start(&tmp.path().join("received"), Duration::ZERO).await;
    let cfg = write_config(
        tmp.path(),
        rcv.addr.port(),
        &add_props(
            DCM4CHEE_WEBAPP_DN,
            &["bearer-token=tok-123", "basic-auth=a:b"],
        ),
    );
    let (study, files) = study(&tmp.path().join("src"), 2, 32);
    import(&tmp.path().join("data"), &files).await;
    let svc = Service::start(&cfg, &tmp.path().join("data")).await;
    let task = svc.export_study("StowExporter", &study).await;
    let done = svc.wait_done(task["taskID"].as_str().unwrap()).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    assert!(
        rcv.seen()
            .iter()
            .all(|s| s.authorization.as_deref() == Some("Bearer tok-123"))
    );
    svc.stop().await;
}

#[tokio::test]
async fn series_and_instance_exports_and_unknown_targets() {
    let tmp = tempfile::tempdir().unwrap();
    let rcv = Receiver::start(&tmp.path().join("received"), Duration::ZERO).await;
    let cfg = write_config(tmp.path(), rcv.addr.port(), "");
    let (study, files) = study(&tmp.path().join("src"), 3, 32);
    import(&tmp.path().join("data"), &files).await;
    let svc = Service::start(&cfg, &tmp.path().join("data")).await;
    let archive = Archive::open(&tmp.path().join("data")).await.unwrap();
    let all = archive.find(&study, None, None).await.unwrap();
    let series = &all[0].series_iuid;
    let sop = &all[1].sop_iuid;

    let r = svc
        .http
        .post(svc.url(&format!(
            "/aets/{AET}/rs/studies/{study}/series/{series}/instances/{sop}/export/STOWRSD"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let t: serde_json::Value = r.json().await.unwrap();
    let done = svc.wait_done(t["taskID"].as_str().unwrap()).await;
    assert_eq!(done["status"], "COMPLETED");
    assert_eq!(
        done["outcomeMessage"],
        format!(
            "Export Instance[uid={sop}] of Series[uid={series}] of Study[uid={study}] to stowrsd - completed:1"
        )
    );
    assert_eq!(rcv.stored().len(), 1);

    let r = svc
        .http
        .post(svc.url(&format!(
            "/aets/{AET}/rs/studies/{study}/series/{series}/export/STOWRSD?batchID=b-7"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let t: serde_json::Value = r.json().await.unwrap();
    assert_eq!(t["batchID"], "b-7");
    assert_eq!(
        svc.wait_done(t["taskID"].as_str().unwrap()).await["completed"],
        3
    );

    for (path, what) in [
        (
            format!("/aets/NOSUCHAE/rs/studies/{study}/export/STOWRSD"),
            "No such Application Entity",
        ),
        (
            format!("/aets/{AET}/rs/studies/{study}/export/NoSuchExporter"),
            "No such Exporter",
        ),
    ] {
        let r = svc.http.post(svc.url(&path)).send().await.unwrap();
        assert_eq!(r.status(), 404);
        assert!(r.text().await.unwrap().contains(what));
    }
    let r = svc
        .http
        .post(svc.url(&format!("/aets/{AET}/rs/studies/1.2.x/export/STOWRSD")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    // A study that is not in the archive fails with a clear message. (The
    // seed exporter's queue Export1 has no retries; Export would retry it.)
    let t = svc.export_study("StowExporter", "1.2.3.4.5.6.7").await;
    let done = svc.wait_done(t["taskID"].as_str().unwrap()).await;
    assert_eq!(done["status"], "FAILED");
    assert!(
        done["outcomeMessage"]
            .as_str()
            .unwrap()
            .contains("could not find Study[uid=1.2.3.4.5.6.7]")
    );

    let exporters: serde_json::Value = svc
        .http
        .get(svc.url("/export"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = exporters
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["STOWRSD", "StowExporter"]);
    svc.stop().await;
}

#[tokio::test]
async fn reload_swaps_valid_config_and_keeps_running_one_on_error() {
    let tmp = tempfile::tempdir().unwrap();
    let rcv = Receiver::start(&tmp.path().join("received"), Duration::from_millis(150)).await;
    let cfg = write_config(tmp.path(), rcv.addr.port(), "");
    let (study, files) = study(&tmp.path().join("src"), 4, 32);
    import(&tmp.path().join("data"), &files).await;
    let svc = Service::start(&cfg, &tmp.path().join("data")).await;

    // A broken property: the reload is refused, naming DN and attribute.
    std::fs::write(
        cfg.join("99-test.ldif"),
        add_props(STOWRSD_WEBAPP_DN, &["concurrency=abc"]),
    )
    .unwrap();
    let r = svc.http.post(svc.url("/ctrl/reload")).send().await.unwrap();
    assert_eq!(r.status(), 409);
    let body: serde_json::Value = r.json().await.unwrap();
    let err = body["errors"][0].as_str().unwrap();
    assert!(
        err.contains(STOWRSD_WEBAPP_DN)
            && err.contains("dcmProperty")
            && err.contains("concurrency=abc"),
        "{err}"
    );

    // The running snapshot still works (concurrency 1).
    let t = svc.export_study("STOWRSD", &study).await;
    assert_eq!(
        svc.wait_done(t["taskID"].as_str().unwrap()).await["status"],
        "COMPLETED"
    );
    assert_eq!(
        rcv.max_in_flight.load(std::sync::atomic::Ordering::SeqCst),
        1
    );

    // Fixed: reload answers 204 and the next task uses concurrency=2.
    std::fs::write(
        cfg.join("99-test.ldif"),
        add_props(STOWRSD_WEBAPP_DN, &["concurrency=2"]),
    )
    .unwrap();
    let r = svc.http.post(svc.url("/ctrl/reload")).send().await.unwrap();
    assert_eq!(r.status(), 204);
    let t = svc.export_study("STOWRSD", &study).await;
    assert_eq!(
        svc.wait_done(t["taskID"].as_str().unwrap()).await["status"],
        "COMPLETED"
    );
    assert_eq!(
        rcv.max_in_flight.load(std::sync::atomic::Ordering::SeqCst),
        2
    );

    // A syntax error in a file names file and line.
    std::fs::write(
        cfg.join("99-test.ldif"),
        "dn: cn=x,dc=dcm4che,dc=org\nthis line has no colon\n",
    )
    .unwrap();
    let r = svc.http.post(svc.url("/ctrl/reload")).send().await.unwrap();
    assert_eq!(r.status(), 409);
    let text = r.text().await.unwrap();
    assert!(text.contains("99-test.ldif:2"), "{text}");
    svc.stop().await;
}

#[tokio::test]
async fn real_dicom_files_from_pydicom_arrive_byte_identical() {
    let tmp = tempfile::tempdir().unwrap();
    let rcv = Receiver::start(&tmp.path().join("received"), Duration::ZERO).await;
    let cfg = write_config(
        tmp.path(),
        rcv.addr.port(),
        &add_props(STOWRSD_WEBAPP_DN, &["concurrency=2"]),
    );
    let files = pydicom_files();
    let data = tmp.path().join("data");
    let archive = Archive::open(&data).await.unwrap();
    // The whole folder: good files are stored, broken ones reported, none aborts the run.
    let report = archive::import_paths(&archive, std::slice::from_ref(&files), &NoProgress).await;
    assert!(report.stored >= 40, "{} stored", report.stored);
    assert!(
        !report.failed.is_empty(),
        "the folder has deliberately broken files"
    );
    let svc = Service::start(&cfg, &data).await;

    let mut sent = Vec::new();
    for name in [
        "CT_small.dcm",
        "MR_small.dcm",
        "JPEG2000.dcm",
        "SC_rgb_rle_2frame.dcm",
        "examples_ybr_color.dcm",
    ] {
        let path = files.join(name);
        let obj = dicom_object::OpenFileOptions::new()
            .read_until(dicom_dictionary_std::tags::PIXEL_DATA)
            .open_file(&path)
            .unwrap();
        let study = obj
            .element(dicom_dictionary_std::tags::STUDY_INSTANCE_UID)
            .unwrap()
            .to_str()
            .unwrap();
        let study = study.trim_end_matches(['\0', ' ']).to_string();
        let t = svc.export_study("STOWRSD", &study).await;
        let done = svc.wait_done(t["taskID"].as_str().unwrap()).await;
        assert_eq!(done["status"], "COMPLETED", "{name}: {done}");
        // Several bundled files share UIDs; the archive kept the first
        // imported variant, and that is what must arrive.
        sent.extend(
            archive
                .find(&study, None, None)
                .await
                .unwrap()
                .into_iter()
                .map(|i| i.path),
        );
    }
    assert_arrived(&rcv, &sent);
    svc.stop().await;
}

#[tokio::test]
async fn a_study_larger_than_one_index_page_goes_whole() {
    // Matches are read 500 at a time; 1,050 crosses two page boundaries.
    let tmp = tempfile::tempdir().unwrap();
    let rcv = Receiver::start(&tmp.path().join("received"), Duration::ZERO).await;
    let cfg = write_config(
        tmp.path(),
        rcv.addr.port(),
        &add_props(STOWRSD_WEBAPP_DN, &["concurrency=4"]),
    );
    let (study, files) = study(&tmp.path().join("src"), 1050, 8);
    import(&tmp.path().join("data"), &files).await;
    let svc = Service::start(&cfg, &tmp.path().join("data")).await;
    let t = svc.export_study("STOWRSD", &study).await;
    let id = t["taskID"].as_str().unwrap();
    let done = svc.wait_done(id).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    assert_eq!(done["completed"], 1050);
    assert_eq!(done["NumberOfInstances"], 1050);
    assert_eq!(rcv.seen().len(), 1050, "each instance sent exactly once");
    assert_eq!(rcv.stored().len(), 1050);
    assert_eq!(svc.instances(id).await.len(), 1050);
    assert_arrived(&rcv, &files[..20]);
    assert_arrived(&rcv, &files[1030..]);
    svc.stop().await;
}
