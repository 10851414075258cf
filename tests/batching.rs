//! Several instances per request (`max-instances-per-request`,
//! `max-bytes-per-request`) with exact per-instance outcomes, and which
//! failures a queue retries.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::Request;
use axum::middleware::{self, Next};
use axum::response::IntoResponse;
use common::*;
use stow_exporter::stowrsd::{self, StowrsdOptions};

const EXPORT_QUEUE_DN: &str = "dcmQueueName=Export,dicomDeviceName=dcm4chee-arc,cn=Devices,cn=DICOM Configuration,dc=dcm4che,dc=org";

/// The queue `Export` (exporter STOWRSD) with 5 quick retries.
fn retrying_queue() -> String {
    format!(
        "dn: {EXPORT_QUEUE_DN}\nchangetype: modify\nreplace: dcmMaxRetries\ndcmMaxRetries: 5\n-\n\
         replace: dcmRetryDelay\ndcmRetryDelay: PT0.2S\n-\ndelete: dcmMaxRetryDelay\n-\n\n"
    )
}

async fn setup(
    tmp: &Path,
    port: u16,
    extra: &str,
    count: usize,
) -> (Service, String, Vec<PathBuf>) {
    let cfg = write_config(tmp, port, extra);
    let (study_uid, files) = study(&tmp.join("src"), count, 32);
    let data = tmp.join("data");
    import(&data, &files).await;
    (Service::start(&cfg, &data).await, study_uid, files)
}

#[tokio::test]
async fn instances_are_packed_up_to_the_instance_limit() {
    let tmp = tempfile::tempdir().unwrap();
    let rcv = Receiver::start(&tmp.path().join("received"), Duration::ZERO).await;
    let props = add_props(DCM4CHEE_WEBAPP_DN, &["max-instances-per-request=3"]);
    let (svc, study, files) = setup(tmp.path(), rcv.addr.port(), &props, 10).await;
    let t = svc.export_study("StowExporter", &study).await;
    let done = svc.wait_done(t["taskID"].as_str().unwrap()).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    let mut parts: Vec<usize> = rcv
        .seen()
        .iter()
        .map(|s| s.part_content_types.len())
        .collect();
    parts.sort();
    assert_eq!(parts, vec![1, 3, 3, 3]);
    assert_arrived(&rcv, &files);
    svc.stop().await;
}

#[tokio::test]
async fn the_byte_limit_splits_requests_and_a_larger_instance_goes_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let rcv = Receiver::start(&tmp.path().join("received"), Duration::ZERO).await;
    let (study, files) = study(&tmp.path().join("src"), 6, 32);
    let size = std::fs::metadata(&files[0]).unwrap().len();
    // Room for two instances per request...
    let limit = format!("max-bytes-per-request={}", size * 5 / 2);
    let props = add_props(
        DCM4CHEE_WEBAPP_DN,
        &["max-instances-per-request=100", &limit],
    );
    let cfg = write_config(tmp.path(), rcv.addr.port(), &props);
    // ...and one instance larger than the limit.
    let (big_study, big) =
        stow_exporter::synth::write_study(&tmp.path().join("big"), 1, 128, 128).unwrap();
    assert!(std::fs::metadata(&big[0]).unwrap().len() > size * 5 / 2);
    let data = tmp.path().join("data");
    import(&data, &files).await;
    import(&data, &big).await;
    let svc = Service::start(&cfg, &data).await;
    let t = svc.export_study("StowExporter", &study).await;
    let done = svc.wait_done(t["taskID"].as_str().unwrap()).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    assert!(rcv.seen().iter().all(|s| s.part_content_types.len() == 2));
    assert_eq!(rcv.seen().len(), 3);
    let t = svc.export_study("StowExporter", &big_study).await;
    let done = svc.wait_done(t["taskID"].as_str().unwrap()).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    assert_eq!(rcv.seen().len(), 4);
    assert_eq!(rcv.seen()[3].part_content_types.len(), 1);
    svc.stop().await;
}

#[tokio::test]
async fn one_bad_part_in_a_batch_fails_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let rcv = Receiver::start(&tmp.path().join("received"), Duration::ZERO).await;
    let props = add_props(DCM4CHEE_WEBAPP_DN, &["max-instances-per-request=5"]);
    let (svc, study, files) = setup(tmp.path(), rcv.addr.port(), &props, 5).await;
    // Damage one stored object (same size, so it is still sent): the real
    // receiver cannot read that part, stores the other four and answers 202.
    let victim = sop_uid(&files[2]);
    let stored = walkdir::WalkDir::new(tmp.path().join("data"))
        .into_iter()
        .filter_map(Result::ok)
        .find(|e| e.file_name().to_string_lossy() == format!("{victim}.dcm"))
        .unwrap()
        .into_path();
    let len = std::fs::metadata(&stored).unwrap().len() as usize;
    std::fs::write(&stored, vec![0x5A; len]).unwrap();
    let t = svc.export_study("StowExporter", &study).await;
    let id = t["taskID"].as_str().unwrap();
    let done = svc.wait_done(id).await;
    assert_eq!(done["status"], "WARNING", "{done}");
    assert_eq!(rcv.seen().len(), 1, "one request");
    let instances = svc.instances(id).await;
    for i in &instances {
        let expect = if i["SOPInstanceUID"] == victim.as_str() {
            "FAILED"
        } else {
            "COMPLETED"
        };
        assert_eq!(i["status"], expect, "{i}");
    }
    let failed = instances.iter().find(|i| i["status"] == "FAILED").unwrap();
    assert!(
        failed["reason"].as_str().unwrap().contains("0xC000"),
        "{failed}"
    );
    assert_eq!(rcv.stored().len(), 4);
    svc.stop().await;
}

/// The real stowrsd behind a layer that answers every request with
/// `status` (and `Retry-After`, if given).
async fn answering(dir: &Path, status: u16, retry_after: Option<&'static str>) -> u16 {
    let layer = move |req: Request<Body>, _next: Next| async move {
        drop(req);
        let mut r = (
            axum::http::StatusCode::from_u16(status).unwrap(),
            "refused by the test",
        )
            .into_response();
        if let Some(v) = retry_after {
            r.headers_mut().insert("retry-after", v.parse().unwrap());
        }
        r
    };
    let app = stowrsd::router(StowrsdOptions {
        store_dir: Some(dir.to_path_buf()),
        ..Default::default()
    })
    .layer(middleware::from_fn(layer));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    port
}

#[tokio::test]
async fn client_errors_are_not_retried() {
    let tmp = tempfile::tempdir().unwrap();
    let port = answering(&tmp.path().join("received"), 403, None).await;
    let (svc, study, _) = setup(tmp.path(), port, &retrying_queue(), 1).await;
    let t = svc.export_study("STOWRSD", &study).await;
    let done = svc.wait_done(t["taskID"].as_str().unwrap()).await;
    // FAILED at once: the queue allows 5 retries, but a 403 would be 403 again.
    assert_eq!(done["status"], "FAILED", "{done}");
    assert_eq!(done["failures"], 1, "{done}");
    assert!(
        done["errorMessage"].as_str().unwrap().contains("HTTP 403"),
        "{done}"
    );
    svc.stop().await;
}

#[tokio::test]
async fn retry_after_delays_the_retry() {
    let tmp = tempfile::tempdir().unwrap();
    let port = answering(&tmp.path().join("received"), 503, Some("120")).await;
    let (svc, study, _) = setup(tmp.path(), port, &retrying_queue(), 1).await;
    let before = chrono::Utc::now();
    let t = svc.export_study("STOWRSD", &study).await;
    let id = t["taskID"].as_str().unwrap();
    let start = Instant::now();
    let t = loop {
        let t = svc.task(id).await;
        if t["status"] == "SCHEDULED FOR RETRY" {
            break t;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "{t}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // The queue says 0.2 s; the server asked for 120 s.
    let at = chrono::DateTime::parse_from_rfc3339(t["scheduledTime"].as_str().unwrap()).unwrap();
    let wait = at.with_timezone(&chrono::Utc) - before;
    assert!(wait >= chrono::Duration::seconds(115), "{t}");
    svc.stop().await;
}
