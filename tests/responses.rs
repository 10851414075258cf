//! How the sender judges what a server answers. The real stowrsd stores
//! every instance; a fault layer in front of it then rewrites its answer
//! (a 409, a partial 202, garbage, a silent drop) — faults a real receiver
//! cannot be made to produce on demand.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::body::{Body, to_bytes};
use axum::extract::Request;
use axum::middleware::{self, Next};
use axum::response::IntoResponse;
use common::*;
use serde_json::{Value, json};
use stow_exporter::stowrsd::{self, StowrsdOptions};

#[derive(Clone, Copy)]
enum Fault {
    /// Every answer becomes 409 with the instance in FailedSOPSequence.
    Conflict,
    /// Every second answer becomes 202 with the instance failed (0xA700).
    EverySecondFails,
    /// 200 with an HTML body.
    Garbage,
    /// 200 with an empty data set: the instance is silently dropped.
    SilentDrop,
}

async fn start(fault: Fault, dir: &std::path::Path) -> std::net::SocketAddr {
    let n = Arc::new(AtomicUsize::new(0));
    let layer = move |req: Request<Body>, next: Next| {
        let n = n.clone();
        async move {
            let i = n.fetch_add(1, Ordering::SeqCst);
            let resp = next.run(req).await;
            let body = to_bytes(resp.into_body(), 1 << 20).await.unwrap();
            let mut v: Value = serde_json::from_slice(&body).unwrap();
            let fail_all = |v: &mut Value, reason: u16| {
                let mut items = v["00081199"]["Value"].take();
                for it in items.as_array_mut().unwrap() {
                    it["00081197"] = json!({"vr": "US", "Value": [reason]});
                }
                *v = json!({"00081198": {"vr": "SQ", "Value": items}});
            };
            let (status, body) = match fault {
                Fault::Conflict => {
                    // 0x0111 (duplicate) would mean "already stored".
                    fail_all(&mut v, 0x0110);
                    (409, v.to_string())
                }
                Fault::EverySecondFails if i % 2 == 1 => {
                    fail_all(&mut v, 0xA700);
                    (202, v.to_string())
                }
                Fault::EverySecondFails => (200, v.to_string()),
                Fault::Garbage => (
                    200,
                    "<html><body>Stored, probably</body></html>".to_string(),
                ),
                Fault::SilentDrop => (200, "{}".to_string()),
            };
            (
                axum::http::StatusCode::from_u16(status).unwrap(),
                [("content-type", "application/dicom+json")],
                body,
            )
                .into_response()
        }
    };
    let app = stowrsd::router(StowrsdOptions {
        store_dir: Some(dir.to_path_buf()),
        ..Default::default()
    })
    .layer(middleware::from_fn(layer));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    addr
}

async fn run(fault: Option<Fault>, count: usize) -> (Value, Vec<Value>) {
    let tmp = tempfile::tempdir().unwrap();
    let port = match fault {
        Some(f) => start(f, &tmp.path().join("received")).await.port(),
        // Nothing listens there: connection refused.
        None => std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port(),
    };
    let cfg = write_config(tmp.path(), port, "");
    let (study_uid, files) = study(&tmp.path().join("src"), count, 32);
    let data = tmp.path().join("data");
    import(&data, &files).await;
    let svc = Service::start(&cfg, &data).await;
    // The seed exporter: its queue Export1 does not retry, so a failure is final.
    let t = svc.export_study("StowExporter", &study_uid).await;
    let id = t["taskID"].as_str().unwrap().to_string();
    let done = tokio::time::timeout(Duration::from_secs(60), svc.wait_done(&id))
        .await
        .unwrap();
    let inst = svc.instances(&id).await;
    svc.stop().await;
    (done, inst)
}

fn reasons(inst: &[Value]) -> Vec<String> {
    inst.iter()
        .filter_map(|i| i["reason"].as_str().map(str::to_string))
        .collect()
}

#[tokio::test]
async fn conflict_for_every_instance_is_failed_not_warning() {
    let (done, inst) = run(Some(Fault::Conflict), 3).await;
    assert_eq!(done["status"], "FAILED", "{done}");
    assert!(
        done["outcomeMessage"]
            .as_str()
            .unwrap()
            .ends_with("to DCM4CHEE - completed:0, failed:3")
    );
    assert!(
        done["errorMessage"]
            .as_str()
            .unwrap()
            .contains("HTTP 409 Conflict: FailureReason 0x0110 (Processing failure)"),
        "{done}"
    );
    assert!(inst.iter().all(|i| i["status"] == "FAILED"));
}

#[tokio::test]
async fn partial_202_is_warning_with_per_instance_results() {
    let (done, inst) = run(Some(Fault::EverySecondFails), 3).await;
    assert_eq!(done["status"], "WARNING", "{done}");
    assert!(
        done["outcomeMessage"]
            .as_str()
            .unwrap()
            .ends_with("- completed:2, failed:1"),
        "{done}"
    );
    let failed: Vec<_> = inst.iter().filter(|i| i["status"] == "FAILED").collect();
    assert_eq!(failed.len(), 1);
    assert!(
        failed[0]["reason"]
            .as_str()
            .unwrap()
            .contains("HTTP 202 Accepted: FailureReason 0xA700 (Out of resources)")
    );
    assert_eq!(
        inst.iter().filter(|i| i["status"] == "COMPLETED").count(),
        2
    );
}

#[tokio::test]
async fn garbage_body_with_200_is_not_success() {
    let (done, inst) = run(Some(Fault::Garbage), 2).await;
    assert_eq!(done["status"], "FAILED", "{done}");
    assert!(
        reasons(&inst)
            .iter()
            .all(|r| r.contains("unreadable response body") && r.contains("Stored, probably"))
    );
}

#[tokio::test]
async fn silently_dropped_instance_is_not_stored() {
    let (done, inst) = run(Some(Fault::SilentDrop), 2).await;
    assert_eq!(done["status"], "FAILED", "{done}");
    assert!(
        reasons(&inst)
            .iter()
            .all(|r| r.contains("neither ReferencedSOPSequence nor FailedSOPSequence"))
    );
}

#[tokio::test]
async fn connection_refused_is_reported() {
    let (done, inst) = run(None, 2).await;
    assert_eq!(done["status"], "FAILED", "{done}");
    assert!(
        reasons(&inst)
            .iter()
            .all(|r| r.starts_with("cannot connect")),
        "{inst:?}"
    );
}
