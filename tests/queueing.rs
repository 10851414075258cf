//! The embedded queue's dcm4chee semantics: retry policy from `dcmQueue`,
//! resending only what was not stored, and cancel.

mod common;

use std::time::{Duration, Instant};

use common::*;

const EXPORT_QUEUE_DN: &str = "dcmQueueName=Export,dicomDeviceName=dcm4chee-arc,cn=Devices,cn=DICOM Configuration,dc=dcm4che,dc=org";

fn queue_policy(retries: u32, delay: &str, multiplier: u32) -> String {
    format!(
        "dn: {EXPORT_QUEUE_DN}\nchangetype: modify\nreplace: dcmMaxRetries\ndcmMaxRetries: {retries}\n-\n\
         replace: dcmRetryDelay\ndcmRetryDelay: {delay}\n-\nreplace: dcmRetryDelayMultiplier\ndcmRetryDelayMultiplier: {multiplier}\n-\n\
         delete: dcmMaxRetryDelay\n-\n\n"
    )
}

async fn setup(
    tmp: &std::path::Path,
    port: u16,
    extra: &str,
    count: usize,
) -> (Service, String, Vec<std::path::PathBuf>) {
    let cfg = write_config(tmp, port, extra);
    let (study_uid, files) = study(&tmp.join("src"), count, 32);
    let data = tmp.join("data");
    import(&data, &files).await;
    (Service::start(&cfg, &data).await, study_uid, files)
}

#[tokio::test]
async fn destination_failing_three_times_then_succeeding_follows_the_queue_policy() {
    let tmp = tempfile::tempdir().unwrap();
    let (port, times) = flaky(&tmp.path().join("received"), 3, None).await;
    let (svc, study_uid, _) = setup(tmp.path(), port, &queue_policy(5, "PT0.3S", 200), 1).await;
    let t = svc.export_study("STOWRSD", &study_uid).await;
    let id = t["taskID"].as_str().unwrap();

    // In between, the task waits as SCHEDULED FOR RETRY.
    let start = Instant::now();
    loop {
        let t = svc.task(id).await;
        if t["status"] == "SCHEDULED FOR RETRY" {
            assert!(
                t["outcomeMessage"].as_str().unwrap().contains("failed:1"),
                "{t}"
            );
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "never SCHEDULED FOR RETRY: {t}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let done = svc.wait_done(id).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    assert_eq!(done["failures"], 3);
    let times = times.lock().unwrap().clone();
    assert_eq!(
        times.len(),
        4,
        "three failed attempts and one that succeeded"
    );
    // Delays 0.3 s, then x2 each time: 0.6 s, 1.2 s (the queue is polled every 250 ms).
    for (i, min) in [0.3, 0.6, 1.2].into_iter().enumerate() {
        let gap = (times[i + 1] - times[i]).as_secs_f64();
        assert!(
            gap >= min && gap < min + 1.0,
            "retry {} came after {gap:.2} s, policy says {min} s",
            i + 1
        );
    }
    svc.stop().await;
}

#[tokio::test]
async fn a_retry_resends_only_what_was_not_stored() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg_dir = tmp.path().join("cfg");
    std::fs::create_dir_all(&cfg_dir).unwrap();
    let (study_uid, files) = study(&cfg_dir.join("src"), 3, 32);
    let victim = sop_uid(&files[1]);
    let (port, times) = flaky(&tmp.path().join("received"), 2, Some(victim.clone())).await;
    // A partial failure is WARNING, retried only with dcmRetryOnWarning, as in dcm4chee.
    let policy = format!(
        "{}dn: {EXPORT_QUEUE_DN}\nchangetype: modify\nadd: dcmRetryOnWarning\ndcmRetryOnWarning: TRUE\n-\n",
        queue_policy(3, "PT0.2S", 100)
    );
    let cfg = write_config(tmp.path(), port, &policy);
    let data = tmp.path().join("data");
    import(&data, &files).await;
    let svc = Service::start(&cfg, &data).await;
    let t = svc.export_study("STOWRSD", &study_uid).await;
    let done = svc.wait_done(t["taskID"].as_str().unwrap()).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    assert_eq!(done["completed"], 3);
    assert_eq!(
        times.lock().unwrap().len(),
        3 + 2,
        "only the failed instance went again, twice"
    );
    svc.stop().await;
}

#[tokio::test]
async fn past_the_last_retry_the_task_stays_failed() {
    let tmp = tempfile::tempdir().unwrap();
    let (port, times) = flaky(&tmp.path().join("received"), usize::MAX, None).await;
    let (svc, study_uid, _) = setup(tmp.path(), port, &queue_policy(1, "PT0.1S", 100), 1).await;
    let t = svc.export_study("STOWRSD", &study_uid).await;
    let done = svc.wait_done(t["taskID"].as_str().unwrap()).await;
    assert_eq!(done["status"], "FAILED", "{done}");
    assert_eq!(done["failures"], 2);
    assert!(
        done["errorMessage"]
            .as_str()
            .unwrap()
            .contains("HTTP 503 Service Unavailable")
    );
    // No third attempt: instead of a pause, a second task on the same
    // queue, triggered now, fails the same way (one attempt, one retry
    // 0.1 s later). The queue hands out due tasks by due time, one at a
    // time, so a third attempt of the first (due 0.1 s after it failed,
    // before the second's retry) would have come before the second ended.
    let t2 = svc.export_study("STOWRSD", &study_uid).await;
    let done2 = svc.wait_done(t2["taskID"].as_str().unwrap()).await;
    assert_eq!(done2["status"], "FAILED", "{done2}");
    assert_eq!(done2["failures"], 2, "{done2}");
    assert_eq!(
        times.lock().unwrap().len(),
        2 + 2,
        "one attempt and one retry of each task, no more"
    );
    let again = svc.task(t["taskID"].as_str().unwrap()).await;
    assert_eq!(
        (&again["status"], &again["failures"]),
        (&"FAILED".into(), &2.into()),
        "{again}"
    );
    svc.stop().await;
}

#[tokio::test]
async fn cancel_stops_a_running_export_and_a_waiting_task_never_starts() {
    let tmp = tempfile::tempdir().unwrap();
    let rcv = Receiver::start(&tmp.path().join("received"), Duration::from_millis(100)).await;
    let (svc, study_uid, _) = setup(tmp.path(), rcv.addr.port(), "", 20).await;

    let t = svc.export_study("STOWRSD", &study_uid).await;
    let id = t["taskID"].as_str().unwrap();
    let start = Instant::now();
    while rcv.seen().len() < 3 {
        assert!(start.elapsed() < Duration::from_secs(10));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let r = svc
        .http
        .post(svc.url(&format!("/monitor/export/{id}/cancel")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let done = svc.wait_done(id).await;
    assert_eq!(done["status"], "CANCELED", "{done}");
    let msg = done["outcomeMessage"].as_str().unwrap();
    assert!(msg.contains(" canceled - remaining:"), "{msg}");
    let completed = done["completed"].as_u64().unwrap();
    assert!(completed < 20, "{done}");
    assert!(
        msg.contains(&format!("remaining:{}", 20 - completed)),
        "{msg}"
    );
    assert_eq!(
        rcv.seen().len() as u64,
        completed,
        "no request after the cancel but the one in flight"
    );
    let r = svc
        .http
        .post(svc.url(&format!("/monitor/export/{id}/cancel")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409, "already done");

    // A task scheduled for later is canceled before it starts.
    let later = chrono::Local::now() + chrono::Duration::hours(1);
    let r = svc
        .http
        .post(svc.url(&format!(
            "/aets/{AET}/rs/studies/{study_uid}/export/STOWRSD?scheduledTime={}",
            later.format("%Y%m%d%H%M%S")
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let t: serde_json::Value = r.json().await.unwrap();
    let id2 = t["taskID"].as_str().unwrap();
    assert_eq!(t["status"], "SCHEDULED");
    let r = svc
        .http
        .post(svc.url(&format!("/monitor/export/{id2}/cancel")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(svc.task(id2).await["status"], "CANCELED");
    let r = svc
        .http
        .post(svc.url("/monitor/export/999999/cancel"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    svc.stop().await;
}

const STOW_EXPORTER_DN: &str = "dcmExporterID=StowExporter,dicomDeviceName=dcm4chee-arc,cn=Devices,cn=DICOM Configuration,dc=dcm4che,dc=org";
/// An exporter `Control1` on StowExporter's queue (Export1), always open,
/// to the stowrsd web app.
const CONTROL_EXPORTER_LDIF: &str = "dn: dcmExporterID=Control1,dicomDeviceName=dcm4chee-arc,cn=Devices,cn=DICOM Configuration,dc=dcm4che,dc=org
objectClass: dcmExporter
dcmExporterID: Control1
dcmURI: stow:stowrsd
dicomAETitle: DCM4CHEE1
dcmQueueName: Export1

";
const EXPORT1_QUEUE_DN: &str = "dcmQueueName=Export1,dicomDeviceName=dcm4chee-arc,cn=Devices,cn=DICOM Configuration,dc=dcm4che,dc=org";

/// An hour of the day that is certainly not now (12 hours away).
fn add_attr(dn: &str, attr: &str, value: &str) -> String {
    format!("dn: {dn}\nchangetype: modify\nadd: {attr}\n{attr}: {value}\n-\n\n")
}

#[tokio::test]
async fn tasks_wait_outside_their_windows_and_run_when_a_reload_opens_them() {
    let tmp = tempfile::tempdir().unwrap();
    let rcv = Receiver::start(&tmp.path().join("received"), Duration::ZERO).await;
    let window = format!("hour={} dayOfWeek=*", closed_hour());
    // The exporter's window is closed: every task of it waits (dcm4chee
    // would apply it only to tasks created by export rules).
    // Control1, another exporter on the same queue (Export1), is open.
    let (svc, study_uid, files) = setup(
        tmp.path(),
        rcv.addr.port(),
        &format!(
            "{}{CONTROL_EXPORTER_LDIF}",
            add_attr(STOW_EXPORTER_DN, "dcmSchedule", &window)
        ),
        2,
    )
    .await;
    let cfg = tmp.path().join("ldif");
    let t = svc.export_study("StowExporter", &study_uid).await;
    let id = t["taskID"].as_str().unwrap();
    // Instead of a pause: a task of Control1, triggered after, runs to its
    // end. The queue hands out due tasks oldest first, one at a time
    // (dcmMaxTasksParallel 1), so the worker has looked at the held task
    // before taking the control one, and passed it by.
    let control = svc.export_study("Control1", &study_uid).await;
    let done = svc.wait_done(control["taskID"].as_str().unwrap()).await;
    assert_eq!(done["status"], "COMPLETED", "the control task ran: {done}");
    assert_eq!(
        svc.task(id).await["status"],
        "SCHEDULED",
        "held by the exporter's window"
    );
    assert_eq!(
        rcv.seen().len(),
        files.len(),
        "only the control task sent anything"
    );
    // GET /export shows each exporter's window and when it next opens.
    let exporters: serde_json::Value = svc.get_json("/export").await;
    let by_id = |id: &str| {
        exporters
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["id"] == id)
            .unwrap_or_else(|| panic!("{id} in {exporters}"))
            .clone()
    };
    let held = by_id("StowExporter");
    assert_eq!(held["dcmSchedule"], serde_json::json!([window]));
    assert_eq!(held["scheduleOpen"], false);
    let time = |v: &serde_json::Value| {
        chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap_or_else(|| panic!("{held}")))
            .unwrap()
    };
    let (opens, closes) = (
        time(&held["nextScheduleOpen"]),
        time(&held["nextScheduleClose"]),
    );
    {
        use chrono::Timelike;
        let local = opens.with_timezone(&chrono::Local);
        assert_eq!(
            (local.hour(), local.minute(), local.second()),
            (closed_hour(), 0, 0)
        );
        let wait = opens.signed_duration_since(chrono::Utc::now());
        assert!(
            wait > chrono::TimeDelta::hours(11) && wait <= chrono::TimeDelta::hours(12),
            "{held}"
        );
        assert_eq!(closes - opens, chrono::TimeDelta::hours(1), "{held}");
    }
    let always = by_id("STOWRSD");
    assert_eq!(always["scheduleOpen"], true);
    assert!(
        always["nextScheduleClose"].is_null() && always["nextScheduleOpen"].is_null(),
        "{always}"
    );
    // Another exporter on another queue is not held.
    let other = svc.export_study("STOWRSD", &study_uid).await;
    assert_eq!(
        svc.wait_done(other["taskID"].as_str().unwrap()).await["status"],
        "COMPLETED"
    );

    // Open the window (as an administrator would) and reload: the task runs.
    std::fs::write(
        cfg.join("99-test.ldif"),
        add_attr(STOW_EXPORTER_DN, "dcmSchedule", "hour=* dayOfWeek=*"),
    )
    .unwrap();
    assert_eq!(
        svc.http
            .post(svc.url("/ctrl/reload"))
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    let done = svc.wait_done(id).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    assert_arrived(&rcv, &files);

    // The queue's window holds the whole queue; dicomInstalled FALSE pauses it.
    for hold in [
        add_attr(EXPORT1_QUEUE_DN, "dcmSchedule", &window),
        format!(
            "dn: {EXPORT1_QUEUE_DN}\nchangetype: modify\nadd: dicomInstalled\ndicomInstalled: FALSE\n-\n"
        ),
    ] {
        std::fs::write(cfg.join("99-test.ldif"), &hold).unwrap();
        assert_eq!(
            svc.http
                .post(svc.url("/ctrl/reload"))
                .send()
                .await
                .unwrap()
                .status(),
            204
        );
        let t = svc.export_study("StowExporter", &study_uid).await;
        let id = t["taskID"].as_str().unwrap();
        // Instead of a pause: a task on the other queue (Export), triggered
        // after, runs to its end. Adding a task wakes the worker of every
        // queue at once, and the held queue's worker looks at once (with
        // nothing to wait for when the queue is held), so by the time
        // the other queue's worker has run a whole export, this one has
        // looked and taken nothing.
        let seen = rcv.seen().len();
        let control = svc.export_study("STOWRSD", &study_uid).await;
        let done = svc.wait_done(control["taskID"].as_str().unwrap()).await;
        assert_eq!(done["status"], "COMPLETED", "the control task ran: {done}");
        assert_eq!(svc.task(id).await["status"], "SCHEDULED", "held by {hold}");
        assert_eq!(
            rcv.seen().len(),
            seen + files.len(),
            "only the control task sent anything"
        );
        std::fs::write(cfg.join("99-test.ldif"), "").unwrap();
        assert_eq!(
            svc.http
                .post(svc.url("/ctrl/reload"))
                .send()
                .await
                .unwrap()
                .status(),
            204
        );
        assert_eq!(svc.wait_done(id).await["status"], "COMPLETED");
    }
    svc.stop().await;
}
