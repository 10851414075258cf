//! The monitor and management REST API against a running service with real
//! tasks: filters, paging, order, CSV, count, cancel, reschedule, delete,
//! bulk forms, batches, the QIDO-style trigger, 400s, and `openapi.json`
//! against the router's routes.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use serde_json::Value;
use stow_exporter::synth::{self, SynthSpec};

const FUTURE: &str = "20990101000000";

#[test]
fn openapi_documents_exactly_the_routes() {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("openapi.json"))
        .unwrap();
    let doc: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(doc["servers"][0]["url"], "http://127.0.0.1:8080");
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            documented.insert((method.to_ascii_uppercase(), path.clone()));
            // Every path parameter is described, and nothing else is.
            let named: BTreeSet<String> = path
                .split('/')
                .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
                .map(str::to_string)
                .collect();
            let described: BTreeSet<String> = op["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|p| p["in"] == "path")
                .map(|p| p["name"].as_str().unwrap().to_string())
                .collect();
            assert_eq!(named, described, "{method} {path}");
            assert!(op["description"].as_str().is_some_and(|d| !d.is_empty()));
        }
    }
    let served: BTreeSet<(String, String)> = stow_exporter::api::routes()
        .into_iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    let undocumented: Vec<_> = served.difference(&documented).collect();
    let unserved: Vec<_> = documented.difference(&served).collect();
    assert!(
        undocumented.is_empty(),
        "not in openapi.json: {undocumented:?}"
    );
    assert!(unserved.is_empty(), "not served: {unserved:?}");
}

/// A tiny RFC 4180 reader: quoted fields with doubled quotes, delimiters
/// and line breaks inside quotes, CRLF or LF line ends.
fn parse_csv(text: &str, delimiter: char) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if quoted {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => quoted = false,
                _ => field.push(c),
            }
        } else if c == '"' && field.is_empty() {
            quoted = true;
        } else if c == delimiter {
            row.push(std::mem::take(&mut field));
        } else if c == '\r' && chars.peek() == Some(&'\n') {
        } else if c == '\n' {
            row.push(std::mem::take(&mut field));
            rows.push(std::mem::take(&mut row));
        } else {
            field.push(c);
        }
    }
    if !field.is_empty() || !row.is_empty() {
        row.push(field);
        rows.push(row);
    }
    rows
}

#[test]
fn csv_reader_reads_quotes() {
    assert_eq!(
        parse_csv("a,b\r\n\"x, \"\"y\"\"\",\r\n", ','),
        vec![vec!["a", "b"], vec!["x, \"y\"", ""]]
    );
}

async fn setup(tmp: &Path, delay: Duration, studies: usize) -> (Service, Receiver, Vec<String>) {
    let rcv = Receiver::start(&tmp.join("received"), delay).await;
    let cfg = write_config(tmp, rcv.addr.port(), "");
    let data = tmp.join("data");
    let mut uids = Vec::new();
    for i in 0..studies {
        let (uid, files) = study(&tmp.join(format!("src{i}")), 2, 16);
        import(&data, &files).await;
        uids.push(uid);
    }
    (Service::start(&cfg, &data).await, rcv, uids)
}

async fn call(svc: &Service, method: reqwest::Method, path: &str) -> (u16, Value) {
    let r = svc
        .http
        .request(method, svc.url(path))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn post(svc: &Service, path: &str) -> (u16, Value) {
    call(svc, reqwest::Method::POST, path).await
}

async fn delete(svc: &Service, path: &str) -> (u16, Value) {
    call(svc, reqwest::Method::DELETE, path).await
}

async fn get(svc: &Service, path: &str) -> (u16, Value) {
    call(svc, reqwest::Method::GET, path).await
}

fn ids(tasks: &[Value]) -> Vec<String> {
    tasks
        .iter()
        .map(|t| t["taskID"].as_str().unwrap().to_string())
        .collect()
}

fn id(t: &Value) -> String {
    t["taskID"].as_str().unwrap().to_string()
}

async fn export(svc: &Service, exporter: &str, study: &str, query: &str) -> Value {
    let (status, t) = post(
        svc,
        &format!("/aets/{AET}/rs/studies/{study}/export/{exporter}?{query}"),
    )
    .await;
    assert_eq!(status, 202, "{t}");
    t
}

async fn count(svc: &Service, query: &str) -> u64 {
    let (status, v) = get(svc, &format!("/monitor/export/count?{query}")).await;
    assert_eq!(status, 200, "{v}");
    v["count"].as_u64().unwrap()
}

async fn assert_400(svc: &Service, method: reqwest::Method, path: &str, mentions: &str) {
    let (status, v) = call(svc, method, path).await;
    assert_eq!(status, 400, "{path}: {v}");
    let msg = v["errorMessage"].as_str().unwrap_or_default();
    assert!(
        msg.contains(mentions),
        "{path}: {msg:?} should name {mentions}"
    );
}

/// Waits until `GET /monitor/export/{id}` shows `status`.
async fn wait_status(svc: &Service, id: &str, status: &str) -> Value {
    let start = Instant::now();
    loop {
        let t = svc.task(id).await;
        if t["status"] == status {
            return t;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "never {status}: {t}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn listing_filters_paging_order_csv_count_and_batches() {
    let tmp = tempfile::tempdir().unwrap();
    let (svc, _rcv, s) = setup(tmp.path(), Duration::ZERO, 2).await;
    let a1 = export(&svc, "STOWRSD", &s[0], "batchID=b1").await;
    let a2 = export(&svc, "STOWRSD", &s[0], "batchID=b1").await;
    let b1 = export(&svc, "StowExporter", &s[1], "batchID=b2").await;
    let later = export(&svc, "STOWRSD", &s[1], &format!("scheduledTime={FUTURE}")).await;
    for t in [&a1, &a2, &b1] {
        assert_eq!(svc.wait_done(&id(t)).await["status"], "COMPLETED");
    }
    let (st, _) = post(&svc, &format!("/monitor/export/{}/cancel", id(&later))).await;
    assert_eq!(st, 204);

    // Each filter.
    assert_eq!(svc.list("ExporterID=STOWRSD").await.len(), 3);
    assert_eq!(
        svc.list("ExporterID=STOWRSD&ExporterID=StowExporter")
            .await
            .len(),
        4
    );
    assert_eq!(
        ids(&svc.list("ExporterID=StowExporter").await),
        vec![id(&b1)]
    );
    assert_eq!(
        svc.list(&format!("StudyInstanceUID={}", s[0])).await.len(),
        2
    );
    assert_eq!(svc.list("status=COMPLETED").await.len(), 3);
    assert_eq!(ids(&svc.list("status=CANCELED").await), vec![id(&later)]);
    assert_eq!(svc.list("batchID=b1").await.len(), 2);
    assert_eq!(svc.list("dicomDeviceName=dcm4chee-arc").await.len(), 4);
    assert_eq!(svc.list("dicomDeviceName=other").await.len(), 0);
    let today = chrono::Local::now().format("%Y%m%d").to_string();
    let now = chrono::Local::now();
    let hour_ago = (now - chrono::Duration::hours(1)).format("%Y%m%d%H%M%S");
    let in_hour = (now + chrono::Duration::hours(1)).format("%Y%m%d%H%M%S");
    for f in ["createdTime", "updatedTime"] {
        assert_eq!(svc.list(&format!("{f}={today}")).await.len(), 4);
        assert_eq!(svc.list(&format!("{f}={today}-")).await.len(), 4);
        assert_eq!(svc.list(&format!("{f}=-{today}")).await.len(), 4);
        assert_eq!(svc.list(&format!("{f}=20200101-20200102")).await.len(), 0);
        assert_eq!(
            svc.list(&format!("{f}={hour_ago}-{in_hour}")).await.len(),
            4
        );
        assert_eq!(svc.list(&format!("{f}=-{hour_ago}")).await.len(), 0);
    }
    assert_eq!(
        svc.list(&format!("ExporterID=STOWRSD&status=COMPLETED&batchID=b1&StudyInstanceUID={}&createdTime={today}", s[0]))
            .await
            .len(),
        2
    );

    // Order and paging.
    let all = ids(&svc.list("orderby=createdTime").await);
    let mut by_id = all.clone();
    by_id.sort_by_key(|i| i.parse::<u64>().unwrap());
    assert_eq!(all, by_id, "created in ID order");
    let desc = ids(&svc.list("orderby=-createdTime").await);
    assert_eq!(desc, all.iter().rev().cloned().collect::<Vec<_>>());
    assert_eq!(
        ids(&svc.list("orderby=createdTime&limit=2").await),
        all[..2]
    );
    assert_eq!(
        ids(&svc.list("orderby=createdTime&offset=1&limit=2").await),
        all[1..3]
    );
    assert_eq!(
        ids(&svc.list("orderby=createdTime&offset=3").await),
        all[3..]
    );
    assert_eq!(svc.list("offset=10").await.len(), 0);
    let by_sched = ids(&svc.list("orderby=-scheduledTime").await);
    assert_eq!(by_sched[0], id(&later), "scheduled in 2099");
    // Default: the latest update first (the cancel came last).
    assert_eq!(ids(&svc.list("").await)[0], id(&later));

    // Count.
    assert_eq!(count(&svc, "").await, 4);
    assert_eq!(count(&svc, "status=COMPLETED&ExporterID=STOWRSD").await, 2);
    assert_eq!(count(&svc, "batchID=b2").await, 1);
    assert_eq!(count(&svc, "createdTime=20200101-20200102").await, 0);

    // CSV, parsed back, equal to the JSON.
    let json = svc.list("orderby=createdTime").await;
    for (accept, delimiter, by_param) in [
        ("text/csv", ',', false),
        ("text/csv;delimiter=semicolon", ';', false),
        ("text/csv", ',', true),
    ] {
        let req = if by_param {
            svc.http
                .get(svc.url("/monitor/export?orderby=createdTime&accept=text/csv"))
        } else {
            svc.http
                .get(svc.url("/monitor/export?orderby=createdTime"))
                .header("Accept", accept)
        };
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert!(
            r.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/csv")
        );
        let rows = parse_csv(&r.text().await.unwrap(), delimiter);
        assert_eq!(rows.len(), json.len() + 1, "{accept}");
        let head = &rows[0];
        for (row, t) in rows[1..].iter().zip(&json) {
            assert_eq!(row.len(), head.len());
            for (name, value) in head.iter().zip(row) {
                let expected = match &t[name.as_str()] {
                    Value::Null => String::new(),
                    Value::String(s) => s.clone(),
                    v => v.to_string(),
                };
                assert_eq!(value, &expected, "{accept} column {name}");
            }
        }
        assert!(head.contains(&"outcomeMessage".to_string()));
    }
    let r = svc
        .http
        .get(svc.url("/monitor/export"))
        .header("Accept", "image/png")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 406);

    // Batches.
    let (st, batches) = get(&svc, "/monitor/export/batch").await;
    assert_eq!(st, 200, "{batches}");
    let batches = batches.as_array().unwrap();
    assert_eq!(batches.len(), 2, "{batches:?}");
    let b = batches.iter().find(|b| b["batchID"] == "b1").unwrap();
    assert_eq!(b["tasks"]["completed"], 2, "{b}");
    assert_eq!(b["ExporterID"], serde_json::json!(["STOWRSD"]));
    assert_eq!(b["dicomDeviceName"], serde_json::json!(["dcm4chee-arc"]));
    let at = |v: &Value| chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap()).unwrap();
    assert!(at(&b["createdTimeRange"][0]) <= at(&b["createdTimeRange"][1]));
    assert!(b["processingEndTimeRange"].is_array());
    let (_, only) = get(&svc, "/monitor/export/batch?ExporterID=StowExporter").await;
    assert_eq!(only.as_array().unwrap().len(), 1);
    assert_eq!(only[0]["batchID"], "b2");
    assert_eq!(only[0]["tasks"]["completed"], 1);
    let (_, paged) = get(&svc, "/monitor/export/batch?limit=1").await;
    assert_eq!(paged.as_array().unwrap().len(), 1);

    // Clear 400s.
    use reqwest::Method as M;
    for (path, mentions) in [
        ("/monitor/export?status=DONE", "status"),
        ("/monitor/export?createdTime=2026-11-27", "createdTime"),
        (
            "/monitor/export?createdTime=20261128-20261127",
            "createdTime",
        ),
        ("/monitor/export?updatedTime=20261340", "updatedTime"),
        ("/monitor/export?createdTime=-", "createdTime"),
        ("/monitor/export?limit=0", "limit"),
        ("/monitor/export?limit=abc", "limit"),
        ("/monitor/export?limit=-1", "limit"),
        ("/monitor/export?offset=x", "offset"),
        ("/monitor/export?orderby=taskID", "orderby"),
        ("/monitor/export?StudyInstanceUID=abc", "StudyInstanceUID"),
        ("/monitor/export?Status=COMPLETED", "Status"),
        ("/monitor/export?status=COMPLETED&status=FAILED", "status"),
        ("/monitor/export/count?status=nope", "status"),
        ("/monitor/export/count?limit=1", "limit"),
        ("/monitor/export/batch?createdTime=yesterday", "createdTime"),
    ] {
        assert_400(&svc, M::GET, path, mentions).await;
    }
    assert_400(&svc, M::DELETE, "/monitor/export?status=x", "status").await;
    assert_400(
        &svc,
        M::POST,
        "/monitor/export/reschedule?updatedTime=1",
        "updatedTime",
    )
    .await;
    assert_eq!(
        count(&svc, "").await,
        4,
        "nothing changed by the bad requests"
    );
    svc.stop().await;
}

#[tokio::test]
async fn cancel_reschedule_and_delete() {
    let tmp = tempfile::tempdir().unwrap();
    let (svc, rcv, s) = setup(tmp.path(), Duration::ZERO, 2).await;
    let t = export(&svc, "STOWRSD", &s[0], "").await;
    let done = svc.wait_done(&id(&t)).await;
    assert_eq!(done["status"], "COMPLETED");
    let sent = rcv.seen().len();

    // Cancel of a finished task: 409; unknown task: 404.
    let (st, v) = post(&svc, &format!("/monitor/export/{}/cancel", id(&t))).await;
    assert_eq!(st, 409, "{v}");
    assert!(v["errorMessage"].as_str().unwrap().contains("COMPLETED"));
    assert_eq!(post(&svc, "/monitor/export/99999/cancel").await.0, 404);

    // Reschedule: the whole study is sent again.
    let (st, v) = post(&svc, &format!("/monitor/export/{}/reschedule", id(&t))).await;
    assert_eq!(st, 204, "{v}");
    let again = svc.wait_done(&id(&t)).await;
    assert_eq!(again["status"], "COMPLETED", "{again}");
    assert_eq!(again["completed"], 2);
    assert_eq!(again["failures"], 0);
    let time =
        |t: &Value, f: &str| chrono::DateTime::parse_from_rfc3339(t[f].as_str().unwrap()).unwrap();
    assert!(time(&again, "processingStartTime") >= time(&done, "processingEndTime"));
    assert_eq!(rcv.seen().len(), sent + 2, "both instances sent again");
    assert_eq!(svc.instances(&id(&t)).await.len(), 2);

    // To another exporter: its ID, queue and AE title.
    let (st, v) = post(
        &svc,
        &format!("/monitor/export/{}/reschedule/StowExporter", id(&t)),
    )
    .await;
    assert_eq!(st, 204, "{v}");
    let moved = svc.wait_done(&id(&t)).await;
    assert_eq!(moved["status"], "COMPLETED", "{moved}");
    assert_eq!(moved["ExporterID"], "StowExporter");
    assert_eq!(moved["queue"], "Export1");
    assert_eq!(moved["LocalAET"], "DCM4CHEE1");
    assert!(
        moved["outcomeMessage"]
            .as_str()
            .unwrap()
            .contains("DCM4CHEE")
    );

    // With a scheduledTime: waits.
    let (st, _) = post(
        &svc,
        &format!(
            "/monitor/export/{}/reschedule?scheduledTime={FUTURE}",
            id(&t)
        ),
    )
    .await;
    assert_eq!(st, 204);
    let waiting = svc.task(&id(&t)).await;
    assert_eq!(waiting["status"], "SCHEDULED");
    assert!(
        waiting["scheduledTime"]
            .as_str()
            .unwrap()
            .starts_with("2099-01-01")
            || waiting["scheduledTime"]
                .as_str()
                .unwrap()
                .starts_with("2098-12-31")
    );
    assert!(waiting.get("outcomeMessage").is_none(), "{waiting}");
    assert_eq!(waiting["completed"], 0);
    assert_eq!(svc.instances(&id(&t)).await.len(), 0, "results cleared");

    // Bad requests.
    let path = format!("/monitor/export/{}/reschedule/NoSuchExporter", id(&t));
    assert_400(&svc, reqwest::Method::POST, &path, "NoSuchExporter").await;
    let path = format!(
        "/monitor/export/{}/reschedule?scheduledTime=tomorrow",
        id(&t)
    );
    assert_400(&svc, reqwest::Method::POST, &path, "scheduledTime").await;
    assert_eq!(post(&svc, "/monitor/export/99999/reschedule").await.0, 404);

    // Delete one: gone, with its results.
    let (st, _) = delete(&svc, &format!("/monitor/export/{}", id(&t))).await;
    assert_eq!(st, 204);
    assert_eq!(
        get(&svc, &format!("/monitor/export/{}", id(&t))).await.0,
        404
    );
    assert_eq!(
        get(&svc, &format!("/monitor/export/{}/instances", id(&t)))
            .await
            .0,
        404
    );
    assert_eq!(
        delete(&svc, &format!("/monitor/export/{}", id(&t))).await.0,
        404
    );

    // Bulk cancel, reschedule and delete with filters.
    let mut later = Vec::new();
    for study in &s {
        later.push(
            export(
                &svc,
                "STOWRSD",
                study,
                &format!("batchID=later&scheduledTime={FUTURE}"),
            )
            .await,
        );
    }
    let keep = export(&svc, "STOWRSD", &s[0], "batchID=keep").await;
    svc.wait_done(&id(&keep)).await;
    assert_400(
        &svc,
        reqwest::Method::POST,
        "/monitor/export/cancel?batchID=later",
        "status",
    )
    .await;
    assert_400(
        &svc,
        reqwest::Method::POST,
        "/monitor/export/cancel?status=COMPLETED",
        "status",
    )
    .await;
    let (st, v) = post(
        &svc,
        "/monitor/export/cancel?status=SCHEDULED&batchID=later",
    )
    .await;
    assert_eq!((st, v["count"].as_u64()), (200, Some(2)), "{v}");
    assert_eq!(count(&svc, "status=CANCELED&batchID=later").await, 2);
    let (st, v) = post(&svc, "/monitor/export/reschedule?batchID=later").await;
    assert_eq!((st, v["count"].as_u64()), (200, Some(2)), "{v}");
    for t in &later {
        assert_eq!(svc.wait_done(&id(t)).await["status"], "COMPLETED");
    }
    let (st, v) = post(
        &svc,
        "/monitor/export/reschedule/StowExporter?batchID=later",
    )
    .await;
    assert_eq!((st, v["count"].as_u64()), (200, Some(2)), "{v}");
    for t in &later {
        let d = svc.wait_done(&id(t)).await;
        assert_eq!(
            (d["status"].as_str(), d["ExporterID"].as_str()),
            (Some("COMPLETED"), Some("StowExporter"))
        );
    }
    let (st, v) = delete(
        &svc,
        "/monitor/export?batchID=later&ExporterID=StowExporter",
    )
    .await;
    assert_eq!((st, v["count"].as_u64()), (200, Some(2)), "{v}");
    assert_eq!(count(&svc, "batchID=later").await, 0);
    assert_eq!(
        ids(&svc.list("").await),
        vec![id(&keep)],
        "the other task stays"
    );
    let (st, v) = delete(&svc, "/monitor/export?batchID=nothing").await;
    assert_eq!((st, v["count"].as_u64()), (200, Some(0)));
    svc.stop().await;
}

#[tokio::test]
async fn a_task_in_process_is_neither_rescheduled_nor_deleted() {
    let tmp = tempfile::tempdir().unwrap();
    let (svc, _rcv, s) = setup(tmp.path(), Duration::from_millis(1500), 1).await;
    let t = export(&svc, "STOWRSD", &s[0], "").await;
    wait_status(&svc, &id(&t), "IN PROCESS").await;
    let (st, v) = post(&svc, &format!("/monitor/export/{}/reschedule", id(&t))).await;
    assert_eq!(st, 409, "{v}");
    assert!(v["errorMessage"].as_str().unwrap().contains("IN PROCESS"));
    let (st, v) = delete(&svc, &format!("/monitor/export/{}", id(&t))).await;
    assert_eq!(st, 409, "{v}");
    let (st, v) = post(&svc, "/monitor/export/reschedule").await;
    assert_eq!((st, v["failed"].as_u64()), (409, Some(1)), "{v}");
    // Bulk delete keeps it and says so, like bulk reschedule.
    let (st, v) = delete(&svc, "/monitor/export").await;
    assert_eq!((st, v["failed"].as_u64()), (409, Some(1)), "{v}");
    // Bulk cancel of what runs: it stops before its next instance.
    let (st, v) = post(&svc, "/monitor/export/cancel?status=IN%20PROCESS").await;
    assert_eq!((st, v["count"].as_u64()), (200, Some(1)), "{v}");
    assert_eq!(svc.wait_done(&id(&t)).await["status"], "CANCELED");
    svc.stop().await;
}

/// Triggers the QIDO-style export with `q` under a new batch ID; returns
/// the studies of the tasks it queued.
async fn selected(svc: &Service, n: &mut u32, q: &str) -> BTreeSet<String> {
    *n += 1;
    let batch = format!("q{n}");
    let (st, v) = post(
        svc,
        &format!("/aets/{AET}/rs/studies/export/STOWRSD?{q}&batchID={batch}"),
    )
    .await;
    assert_eq!(st, 202, "{q}: {v}");
    let tasks = svc.list(&format!("batchID={batch}")).await;
    assert_eq!(v["count"].as_u64(), Some(tasks.len() as u64));
    for t in &tasks {
        assert_eq!(t["SeriesInstanceUID"], "*");
    }
    tasks
        .iter()
        .map(|t| t["StudyInstanceUID"].as_str().unwrap().to_string())
        .collect()
}

/// One instance with these attributes.
fn write_instance(dir: &Path, patient: &str, date: &str, modality: &str) -> (String, PathBuf) {
    std::fs::create_dir_all(dir).unwrap();
    let spec = SynthSpec {
        study_iuid: synth::new_uid(),
        series_iuid: synth::new_uid(),
        sop_iuid: synth::new_uid(),
        rows: 8,
        columns: 8,
        seed: 1,
        patient_id: patient.into(),
        instance_number: 1,
    };
    let mut obj = synth::ct_object(&spec).unwrap();
    obj.put(DataElement::new(
        tags::STUDY_DATE,
        VR::DA,
        PrimitiveValue::from(date),
    ));
    obj.put(DataElement::new(
        tags::MODALITY,
        VR::CS,
        PrimitiveValue::from(modality),
    ));
    let path = dir.join(format!("{}.dcm", spec.sop_iuid));
    obj.write_to_file(&path).unwrap();
    (spec.study_iuid, path)
}

#[tokio::test]
async fn qido_style_trigger_selects_studies_from_the_index() {
    let tmp = tempfile::tempdir().unwrap();
    let rcv = Receiver::start(&tmp.path().join("received"), Duration::ZERO).await;
    let cfg = write_config(tmp.path(), rcv.addr.port(), "");
    let data = tmp.path().join("data");
    let src = tmp.path().join("src");
    let (a, fa) = write_instance(&src, "PAT-A", "20200315", "CT");
    let (b, fb) = write_instance(&src, "PAT-B", "20210601", "MR");
    let (c, fc) = write_instance(&src, "OTHER", "20220101", "CT");
    import(&data, &[fa, fb, fc]).await;
    let svc = Service::start(&cfg, &data).await;

    let trigger = |q: &str| format!("/aets/{AET}/rs/studies/export/STOWRSD?{q}");
    let mut n = 0;
    let set = |v: &[&String]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    assert_eq!(selected(&svc, &mut n, "PatientID=PAT-A").await, set(&[&a]));
    assert_eq!(
        selected(&svc, &mut n, "PatientID=PAT-*").await,
        set(&[&a, &b])
    );
    assert_eq!(selected(&svc, &mut n, "PatientID=nobody").await, set(&[]));
    assert_eq!(
        selected(&svc, &mut n, "StudyDate=20210601").await,
        set(&[&b])
    );
    assert_eq!(
        selected(&svc, &mut n, "StudyDate=20200101-20211231").await,
        set(&[&a, &b])
    );
    assert_eq!(
        selected(&svc, &mut n, "StudyDate=20210101-").await,
        set(&[&b, &c])
    );
    assert_eq!(
        selected(&svc, &mut n, "StudyDate=-20201231").await,
        set(&[&a])
    );
    assert_eq!(
        selected(&svc, &mut n, "ModalitiesInStudy=CT").await,
        set(&[&a, &c])
    );
    assert_eq!(
        selected(&svc, &mut n, "ModalitiesInStudy=MR").await,
        set(&[&b])
    );
    assert_eq!(
        selected(&svc, &mut n, "ModalitiesInStudy=MR,CT").await,
        set(&[&a, &b, &c])
    );
    assert_eq!(
        selected(
            &svc,
            &mut n,
            "ModalitiesInStudy=CT&StudyDate=20220101&PatientID=OTHER"
        )
        .await,
        set(&[&c])
    );
    assert_eq!(
        selected(&svc, &mut n, "PatientID=PAT-A&ModalitiesInStudy=MR").await,
        set(&[])
    );

    // The tasks run like any other.
    let (_, v) = post(&svc, &trigger("PatientID=PAT-B&batchID=run")).await;
    assert_eq!(v["count"], 1);
    let t = svc.list("batchID=run").await;
    assert_eq!(svc.wait_done(&id(&t[0])).await["status"], "COMPLETED");

    use reqwest::Method as M;
    assert_400(&svc, M::POST, &trigger("StudyDate=2020"), "StudyDate").await;
    assert_400(
        &svc,
        M::POST,
        &trigger("StudyDate=20211231-20200101"),
        "StudyDate",
    )
    .await;
    assert_400(&svc, M::POST, &trigger("Modality=CT"), "Modality").await;
    assert_400(
        &svc,
        M::POST,
        &trigger("ModalitiesInStudy=C%27T"),
        "ModalitiesInStudy",
    )
    .await;
    assert_400(
        &svc,
        M::POST,
        &trigger("scheduledTime=soon"),
        "scheduledTime",
    )
    .await;
    let (st, _) = post(
        &svc,
        &format!("/aets/{AET}/rs/studies/export/Nope?PatientID=PAT-A"),
    )
    .await;
    assert_eq!(st, 404);
    let (st, _) = post(
        &svc,
        "/aets/NOAET/rs/studies/export/STOWRSD?PatientID=PAT-A",
    )
    .await;
    assert_eq!(st, 404);
    svc.stop().await;
}
