//! Several `serve` instances on one PostgreSQL database, one storage
//! directory and one RabbitMQ queue (issue 14): every task runs exactly
//! once, and every instance's monitor API shows all of them. Real
//! PostgreSQL (a fresh database per test, see `common/postgres.rs`), real
//! RabbitMQ on 127.0.0.1:5672, real receivers on loopback.

mod common;
#[path = "common/postgres.rs"]
mod postgres;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::amqp::*;
use common::*;
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use postgres::{PrivateServer, TestDatabase};
use serde_json::Value;
use stow_exporter::config::{ConfigSource, Secret};

/// An instance on the shared database, queue and data directory.
async fn start(cfg: &Path, data: &Path, db: &TestDatabase) -> Service {
    let mut s = Service::settings(ConfigSource::Ldif(cfg.to_path_buf()), data);
    s.queue_url = Some(amqp_url());
    s.database = Some(Secret::new(db.url()));
    joined(Service::start_with_settings(s).await).await
}

/// Waits until the instance says it is ready, which on a shared database
/// includes listening to the others' signals: a reload or cancel sent
/// before that would not reach it.
async fn joined(svc: Service) -> Service {
    eventually(Duration::from_secs(20), || async {
        let r = svc.http.get(svc.url("/health/ready")).send().await.unwrap();
        let status = r.status();
        let body: Value = r.json().await.unwrap();
        if status == 200 && body["checks"]["signals"]["status"] == "UP" {
            Ok(())
        } else {
            Err(format!("not ready: {status} {body}"))
        }
    })
    .await;
    svc
}

/// `stow-exporter import --database URL --data DIR paths...`, the binary
/// as an operator runs it on any host: the files go into DIR's storage,
/// their rows into the database's archive index.
async fn import_into(db: &TestDatabase, data: &Path, paths: &[PathBuf]) {
    import_to(db.url(), data, paths).await
}

/// [`import_into`] the database at `url`.
async fn import_to(url: &str, data: &Path, paths: &[PathBuf]) {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_stow-exporter"));
    cmd.arg("import")
        .arg("--database")
        .arg(url)
        .arg("--data")
        .arg(data)
        .args(paths);
    // The process is waited for off the runtime.
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap()
        .unwrap();
    assert!(
        out.status.success(),
        "import --database failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An instance on the shared database and data directory that takes its
/// tasks from the database (no broker).
async fn start_brokerless(cfg: &Path, data: &Path, db: &TestDatabase) -> Service {
    let mut s = Service::settings(ConfigSource::Ldif(cfg.to_path_buf()), data);
    s.database = Some(Secret::new(db.url()));
    joined(Service::start_with_settings(s).await).await
}

fn ids(l: &[Value]) -> BTreeSet<String> {
    l.iter()
        .map(|t| t["taskID"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn two_instances_on_one_database_run_each_task_once_and_show_one_view() {
    let db = TestDatabase::create().await;
    let tmp = tempfile::tempdir().unwrap();
    let q = TestQueue::new();
    let rcv = Receiver::start(&tmp.path().join("received"), Duration::from_millis(20)).await;
    let cfg = write_config(tmp.path(), rcv.addr.port(), &q.ldif(""));
    let mut studies = Vec::new();
    let mut files = Vec::new();
    for i in 0..20 {
        let (uid, f) = study(&tmp.path().join(format!("src{i}")), 1, 16);
        studies.push(uid);
        files.extend(f);
    }
    // One data directory for both: the shared storage.
    let data = tmp.path().join("shared");
    import_into(&db, &data, &files).await;
    let (_conn, ch) = client(&amqp_url()).await;
    let a = start(&cfg, &data, &db).await;
    let b = start(&cfg, &data, &db).await;
    // Both consumers are there before the work arrives, so both share it.
    let waited = Instant::now();
    loop {
        let d = ch
            .queue_declare(
                q.name.as_str().into(),
                QueueDeclareOptions {
                    durable: true,
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await;
        if d.is_ok_and(|d| d.consumer_count() == 2) {
            break;
        }
        assert!(
            waited.elapsed() < Duration::from_secs(10),
            "two consumers on {}",
            q.name
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for s in &studies {
        let body = format!(
            r#"{{"ExporterID":"{}","StudyInstanceUID":"{s}","batchID":"shared"}}"#,
            q.exporter
        );
        publish(&ch, &q.name, body.as_bytes(), None).await;
    }
    // One view: instance A's monitor shows every task, whichever ran it.
    let from_a = eventually(Duration::from_secs(60), || async {
        let l = a.list("batchID=shared&status=COMPLETED").await;
        if l.len() == studies.len() {
            Ok(l)
        } else {
            Err(format!(
                "{} of {} completed (seen from A)",
                l.len(),
                studies.len()
            ))
        }
    })
    .await;
    let from_b = b.list("batchID=shared").await;
    assert_eq!(ids(&from_a), ids(&from_b), "B shows the same tasks as A");
    assert_eq!(
        from_b.iter().filter(|t| t["status"] == "COMPLETED").count(),
        studies.len()
    );
    // Exactly once: one record per study, and the receiver got each
    // study's instance once.
    let mut ran: Vec<String> = from_a
        .iter()
        .map(|t| t["StudyInstanceUID"].as_str().unwrap().to_string())
        .collect();
    ran.sort();
    studies.sort();
    assert_eq!(ran, studies, "every study has one record");
    assert_eq!(rcv.seen().len(), studies.len(), "each instance sent once");
    // The records are the database's, not either instance's data directory.
    let rows: i64 = postgres::client(db.url())
        .await
        .query_one(
            "SELECT COUNT(*) FROM task WHERE batch_id = 'shared' AND status = 'COMPLETED'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, studies.len() as i64);
    assert!(!data.join("queue.sqlite").exists(), "no local task store");
    assert!(
        !data.join("archive.sqlite").exists(),
        "no local archive index"
    );
    assert_arrived(&rcv, &files);
    // Both did work: the records of the shared store are the only trace
    // of who ran what, so each instance's own metrics tell.
    for (name, svc) in [("A", &a), ("B", &b)] {
        let summary: Value = svc
            .http
            .get(format!("http://{}/metrics/summary", svc.addr))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let sent: u64 = summary["destinations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["instancesSent"].as_u64().unwrap())
            .sum();
        assert!(sent > 0, "instance {name} sent nothing: {summary}");
    }
    a.stop().await;
    b.stop().await;
    q.delete(&ch).await;
}

/// The exporter IDs `svc` runs with (`GET /export`).
async fn exporters(svc: &Service) -> BTreeSet<String> {
    let l: Vec<Value> = svc.get_json("/export").await;
    l.iter()
        .map(|e| e["id"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// Waits until `svc` lists the task in one of `statuses`; returns it.
async fn wait_status(svc: &Service, task_id: &str, statuses: &[&str]) -> Value {
    eventually(Duration::from_secs(30), || async {
        let t: Value = svc.get_json(&format!("/monitor/export/{task_id}")).await;
        if statuses.iter().any(|s| t["status"] == *s) {
            Ok(t)
        } else {
            Err(format!(
                "task {task_id} is {}, not {statuses:?}",
                t["status"]
            ))
        }
    })
    .await
}

#[tokio::test]
async fn a_cancel_sent_to_one_instance_stops_the_export_running_on_another() {
    let db = TestDatabase::create().await;
    let tmp = tempfile::tempdir().unwrap();
    let q = TestQueue::new();
    // Slow enough that the cancel arrives while instances remain.
    let rcv = Receiver::start(&tmp.path().join("received"), Duration::from_millis(300)).await;
    let cfg = write_config(tmp.path(), rcv.addr.port(), &q.ldif(""));
    let (study_uid, files) = study(&tmp.path().join("src"), 12, 16);
    let data = tmp.path().join("shared");
    import_into(&db, &data, &files).await;
    let (_conn, ch) = client(&amqp_url()).await;
    // Only A consumes when the task arrives, so A runs it.
    let a = start(&cfg, &data, &db).await;
    let body = format!(
        r#"{{"ExporterID":"{}","StudyInstanceUID":"{study_uid}","batchID":"cancel"}}"#,
        q.exporter
    );
    publish(&ch, &q.name, body.as_bytes(), None).await;
    let running = eventually(Duration::from_secs(30), || async {
        let l = a.list("batchID=cancel&status=IN%20PROCESS").await;
        l.first()
            .cloned()
            .ok_or_else(|| "not started on A yet".to_string())
    })
    .await;
    let id = running["taskID"].as_str().unwrap().to_string();
    let b = start(&cfg, &data, &db).await;
    assert_eq!(
        b.call(
            reqwest::Method::POST,
            &format!("/monitor/export/{id}/cancel")
        )
        .await,
        204,
        "B cancels a task it does not run"
    );
    let ended = wait_status(&a, &id, &["CANCELED"]).await;
    let sent = rcv.seen().len();
    assert!(
        sent < files.len(),
        "A stopped before its last instance: {sent} of {} sent; {ended}",
        files.len()
    );
    // B shows the same end.
    assert_eq!(
        wait_status(&b, &id, &["CANCELED"]).await["taskID"],
        ended["taskID"]
    );
    a.stop().await;
    b.stop().await;
    q.delete(&ch).await;
}

#[tokio::test]
async fn reload_with_all_reloads_every_instance_on_the_database() {
    let db = TestDatabase::create().await;
    let tmp = tempfile::tempdir().unwrap();
    let q = TestQueue::new();
    let rcv = Receiver::start(&tmp.path().join("received"), Duration::ZERO).await;
    let cfg = write_config(tmp.path(), rcv.addr.port(), &q.ldif(""));
    let data = tmp.path().join("shared");
    std::fs::create_dir_all(&data).unwrap();
    let a = start(&cfg, &data, &db).await;
    let b = start(&cfg, &data, &db).await;
    assert!(!exporters(&b).await.contains("Added"));
    // A new exporter in the source, then one reload with all=true on A.
    let added = q.ldif_with("", "")
        + &format!(
            "dn: dcmExporterID=Added,{DEVICE}\nobjectClass: dcmExporter\ndcmExporterID: Added\n\
         dcmURI: stow:stowrsd\ndicomAETitle: {AET}\ndcmQueueName: {}\n\n",
            q.name
        );
    write_config(tmp.path(), rcv.addr.port(), &added);
    assert_eq!(
        a.call(reqwest::Method::POST, "/ctrl/reload?all=true").await,
        204
    );
    eventually(Duration::from_secs(20), || async {
        if exporters(&b).await.contains("Added") {
            Ok(())
        } else {
            Err("B has not reloaded".to_string())
        }
    })
    .await;
    assert!(exporters(&a).await.contains("Added"));
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn without_a_broker_two_instances_take_each_task_once_from_the_database() {
    let db = TestDatabase::create().await;
    let tmp = tempfile::tempdir().unwrap();
    let rcv = Receiver::start(&tmp.path().join("received"), Duration::from_millis(20)).await;
    let cfg = write_config(tmp.path(), rcv.addr.port(), "");
    let mut studies = Vec::new();
    let mut files = Vec::new();
    for i in 0..20 {
        let (uid, f) = study(&tmp.path().join(format!("src{i}")), 1, 16);
        studies.push(uid);
        files.extend(f);
    }
    let data = tmp.path().join("shared");
    import_into(&db, &data, &files).await;
    let a = start_brokerless(&cfg, &data, &db).await;
    let b = start_brokerless(&cfg, &data, &db).await;
    // Triggered through both APIs; either instance may run any of them.
    for (i, s) in studies.iter().enumerate() {
        let via = if i % 2 == 0 { &a } else { &b };
        via.export_study("StowExporter", s).await;
    }
    let done = eventually(Duration::from_secs(60), || async {
        let l = b.list("status=COMPLETED").await;
        if l.len() == studies.len() {
            Ok(l)
        } else {
            Err(format!(
                "{} of {} completed (seen from B)",
                l.len(),
                studies.len()
            ))
        }
    })
    .await;
    assert_eq!(ids(&done), ids(&a.list("").await), "one view");
    assert_eq!(rcv.seen().len(), studies.len(), "each study sent once");
    assert_arrived(&rcv, &files);
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn a_study_imported_once_is_found_and_exported_by_every_instance() {
    let db = TestDatabase::create().await;
    let tmp = tempfile::tempdir().unwrap();
    let q = TestQueue::new();
    let rcv = Receiver::start(&tmp.path().join("received"), Duration::from_millis(5)).await;
    let cfg = write_config(tmp.path(), rcv.addr.port(), &q.ldif(""));
    let src = tmp.path().join("src");
    let (uid, files) = study(&src, 3, 16);
    // Imported once, by the CLI, into the storage both instances share.
    let data = tmp.path().join("shared");
    import_into(&db, &data, std::slice::from_ref(&src)).await;
    let rows: i64 = postgres::client(db.url())
        .await
        .query_one(
            "SELECT COUNT(*) FROM archive_instance WHERE study_iuid = $1",
            &[&uid],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 3, "the rows are the database's");
    let (_conn, ch) = client(&amqp_url()).await;
    let a = start(&cfg, &data, &db).await;
    let b = start(&cfg, &data, &db).await;
    // The QIDO-style trigger matches studies in the receiving instance's
    // index: each of them finds the study (the database is this test's
    // alone, so no filter is needed).
    for (name, svc) in [("A", &a), ("B", &b)] {
        let r = svc
            .http
            .post(svc.url(&format!(
                "/aets/{AET}/rs/studies/export/{}?batchID=from{name}",
                q.exporter
            )))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202, "instance {name}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["count"], 1, "instance {name} finds the study: {body}");
    }
    // Both tasks are exported with every instance, whichever instance
    // took each from the queue.
    for name in ["A", "B"] {
        let done = eventually(Duration::from_secs(60), || async {
            let l = a.list(&format!("batchID=from{name}")).await;
            match l.first() {
                Some(t) if ended(t) => Ok(t.clone()),
                other => Err(format!("task of batch from{name}: {other:?}")),
            }
        })
        .await;
        assert_eq!(done["status"], "COMPLETED", "{done}");
        assert_eq!(done["StudyInstanceUID"], uid.as_str());
        assert_eq!(done["completed"], 3, "{done}");
    }
    assert_arrived(&rcv, &files);
    assert!(
        !data.join("archive.sqlite").exists(),
        "no local archive index"
    );
    a.stop().await;
    b.stop().await;
    q.delete(&ch).await;
}

/// A real `serve` process on the shared database and data directory, on
/// control port `port`, over `queue` (a broker URL) or taking its tasks
/// from the database (`None`); `extra` are more options. Its log goes to
/// `log`; it is killed (SIGKILL) when dropped.
fn spawn_serve(
    cfg: &Path,
    data: &Path,
    db_url: &str,
    port: u16,
    queue: Option<&str>,
    extra: &[&str],
    log: &Path,
) -> KillOnDrop {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_stow-exporter"));
    cmd.env("STOW_EXPORTER_DICOM_LISTEN", "none")
        .args(["serve", "--config"])
        .arg(cfg)
        .arg("--data")
        .arg(data)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--database", db_url])
        .args(extra)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(log).unwrap());
    if let Some(q) = queue {
        cmd.args(["--queue", q]);
    }
    KillOnDrop(cmd.spawn().unwrap())
}

/// The control API of a `serve` process on `port`.
fn api(port: u16) -> String {
    format!("http://127.0.0.1:{port}/dcm4chee-arc")
}

/// The tasks IN PROCESS now and the port of the instance running each
/// (its owner is `device@host:port`), read from the database.
async fn running_on(db: &TestDatabase) -> Vec<(String, u16)> {
    postgres::client(db.url())
        .await
        .query(
            "SELECT pk::TEXT, owner FROM task WHERE status = 'IN PROCESS' AND owner IS NOT NULL",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| {
            let owner: String = r.get(1);
            let port = owner.rsplit(':').next().unwrap().parse().unwrap();
            (r.get(0), port)
        })
        .collect()
}

/// Studies of `n` instances each, imported into `data` and the database.
async fn studies(
    db: &TestDatabase,
    tmp: &Path,
    data: &Path,
    count: usize,
    n: usize,
) -> (Vec<String>, Vec<PathBuf>) {
    let mut uids = Vec::new();
    let mut files = Vec::new();
    for i in 0..count {
        let (uid, f) = study(&tmp.join(format!("src{i}")), n, 16);
        uids.push(uid);
        files.extend(f);
    }
    import_into(db, data, &files).await;
    (uids, files)
}

/// Lists every task through the control API at `base`.
async fn all_tasks(http: &reqwest::Client, base: &str) -> Vec<Value> {
    http.get(format!("{base}/monitor/export?limit=1000"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_on_one_queue_finish_everything_when_one_is_sigkilled_mid_task() {
    const STUDIES: usize = 6;
    const PER_STUDY: usize = 8;
    let db = TestDatabase::create().await;
    let tmp = tempfile::tempdir().unwrap();
    let q = TestQueue::new();
    // Slow, so that the kill lands while each instance runs a task.
    let rcv = Receiver::start(&tmp.path().join("received"), Duration::from_millis(150)).await;
    let cfg = write_config(tmp.path(), rcv.addr.port(), &q.ldif(""));
    let data = tmp.path().join("shared");
    let (uids, files) = studies(&db, tmp.path(), &data, STUDIES, PER_STUDY).await;
    let (_conn, ch) = client(&amqp_url()).await;
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let mut procs: Vec<Option<KillOnDrop>> = ports
        .iter()
        .enumerate()
        .map(|(i, p)| {
            Some(spawn_serve(
                &cfg,
                &data,
                db.url(),
                *p,
                Some(&amqp_url()),
                &[],
                &tmp.path().join(format!("serve{i}.log")),
            ))
        })
        .collect();
    for p in &ports {
        wait_up(*p, Duration::from_secs(60)).await;
    }
    for uid in &uids {
        let body = format!(
            r#"{{"ExporterID":"{}","StudyInstanceUID":"{uid}","batchID":"kill"}}"#,
            q.exporter
        );
        publish(&ch, &q.name, body.as_bytes(), None).await;
    }
    // Kill the instance running a task once that task has sent part of
    // its study.
    let (victim_task, victim_port) = eventually(Duration::from_secs(60), || async {
        let running = running_on(&db).await;
        let started = rcv.seen().len();
        match running.first() {
            Some(r) if started >= 2 => Ok(r.clone()),
            _ => Err(format!("{started} requests, running: {running:?}")),
        }
    })
    .await;
    let victim = ports.iter().position(|p| *p == victim_port).unwrap();
    let killed_running = running_on(&db)
        .await
        .iter()
        .filter(|(_, p)| *p == victim_port)
        .count();
    procs[victim].take().unwrap().kill();
    let survivor = ports[(victim + 1) % 3];
    let http = reqwest::Client::new();
    let done = eventually(Duration::from_secs(120), || async {
        let l = all_tasks(&http, &api(survivor)).await;
        let ended = l.iter().filter(|t| ended(t)).count();
        if l.len() == STUDIES && ended == STUDIES {
            Ok(l)
        } else {
            Err(format!("{ended} of {} tasks ended: {l:?}", l.len()))
        }
    })
    .await;
    for t in &done {
        assert_eq!(t["status"], "COMPLETED", "{t}");
        assert_eq!(t["completed"], PER_STUDY as u64, "{t}");
    }
    // One record per study: the redelivered message resumed the killed
    // run's record (the same task ID), not a second one.
    let studies_done: BTreeSet<String> = done
        .iter()
        .map(|t| t["StudyInstanceUID"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(studies_done.len(), STUDIES);
    assert!(
        done.iter().any(|t| t["taskID"] == victim_task.as_str()),
        "the killed run's record {victim_task} completed: {done:?}"
    );
    assert_arrived(&rcv, &files);
    // Resumed, not restarted: only what was in flight at the kill (one
    // request per running task, concurrency 1) may have gone twice.
    let requests = rcv.seen().len();
    assert!(
        requests <= files.len() + killed_running,
        "{requests} requests for {} instances ({killed_running} tasks were running on the killed instance)",
        files.len()
    );
    // Every surviving instance shows the same, complete view.
    for (i, p) in ports.iter().enumerate() {
        if i != victim {
            assert_eq!(ids(&all_tasks(&http, &api(*p)).await), ids(&done));
        }
    }
    drop(procs);
    q.delete(&ch).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_broker_a_task_of_a_sigkilled_instance_is_taken_over_and_resumed() {
    const PER_STUDY: usize = 12;
    let db = TestDatabase::create().await;
    let tmp = tempfile::tempdir().unwrap();
    let rcv = Receiver::start(&tmp.path().join("received"), Duration::from_millis(150)).await;
    let cfg = write_config(tmp.path(), rcv.addr.port(), "");
    let data = tmp.path().join("shared");
    let (uids, files) = studies(&db, tmp.path(), &data, 1, PER_STUDY).await;
    let [pa, pb] = [free_port(), free_port()];
    // A short takeover time, so that the test does not wait 30 s.
    let takeover = ["--takeover-after", "2"];
    let mut a = spawn_serve(
        &cfg,
        &data,
        db.url(),
        pa,
        None,
        &takeover,
        &tmp.path().join("a.log"),
    );
    wait_up(pa, Duration::from_secs(60)).await;
    let http = reqwest::Client::new();
    let r = http
        .post(format!(
            "{}/aets/{AET}/rs/studies/{}/export/StowExporter",
            api(pa),
            uids[0]
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
    let task: Value = r.json().await.unwrap();
    let id = task["taskID"].as_str().unwrap().to_string();
    eventually(Duration::from_secs(60), || async {
        let n = rcv.seen().len();
        if n >= 3 {
            Ok(())
        } else {
            Err(format!("{n} instances sent"))
        }
    })
    .await;
    a.kill();
    let sent_before = rcv.seen().len();
    assert!(sent_before < PER_STUDY, "killed mid-task");
    // B starts after the kill: the task is IN PROCESS, owned by A, which
    // no longer says it is alive.
    let _b = spawn_serve(
        &cfg,
        &data,
        db.url(),
        pb,
        None,
        &takeover,
        &tmp.path().join("b.log"),
    );
    wait_up(pb, Duration::from_secs(60)).await;
    let done = wait_done(&http, &api(pb), &id, Duration::from_secs(60)).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    assert_eq!(done["completed"], PER_STUDY as u64, "{done}");
    assert_arrived(&rcv, &files);
    let requests = rcv.seen().len();
    assert!(
        requests <= PER_STUDY + 1,
        "resumed after the {sent_before} instances A sent: {requests} requests for {PER_STUDY}"
    );
    assert_eq!(all_tasks(&http, &api(pb)).await.len(), 1, "one record");
    let log = std::fs::read_to_string(tmp.path().join("b.log")).unwrap();
    assert!(
        log.contains("silent for longer than the takeover time"),
        "B says it took the task over: {log}"
    );
}

/// The sum of `stow_exporter_instances_sent_total` in the metrics of the
/// instance on control port `port`, the `stow_instance` labels it carries
/// and the whole text.
async fn sent_by(http: &reqwest::Client, port: u16) -> (f64, BTreeSet<String>, String) {
    let text = http
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap();
    let mut sum = 0.0;
    let mut labels = BTreeSet::new();
    for s in scrape
        .samples
        .iter()
        .filter(|s| s.metric == "stow_exporter_instances_sent_total")
    {
        if let prometheus_parse::Value::Counter(v) = s.value {
            sum += v;
        }
        labels.extend(s.labels.get("stow_instance").map(str::to_string));
    }
    (sum, labels, text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgresql_restarted_during_500_tasks_loses_nothing() {
    const N: usize = 500;
    let pg = PrivateServer::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let q = TestQueue::new();
    let rcv = Receiver::start(&tmp.path().join("received"), Duration::from_millis(5)).await;
    let cfg = write_config(tmp.path(), rcv.addr.port(), &q.ldif(""));
    let data = tmp.path().join("shared");
    let mut uids = Vec::new();
    let mut files = Vec::new();
    for i in 0..N {
        let (uid, f) = study(&tmp.path().join(format!("src{i}")), 1, 8);
        uids.push(uid);
        files.extend(f);
    }
    import_to(&pg.url(), &data, &files).await;
    let (_conn, ch) = client(&amqp_url()).await;
    let ports = [free_port(), free_port()];
    let logs = [tmp.path().join("a.log"), tmp.path().join("b.log")];
    let procs: Vec<KillOnDrop> = (0..2)
        .map(|i| {
            spawn_serve(
                &cfg,
                &data,
                &pg.url(),
                ports[i],
                Some(&amqp_url()),
                &[],
                &logs[i],
            )
        })
        .collect();
    for p in ports {
        wait_up(p, Duration::from_secs(60)).await;
    }
    for uid in &uids {
        let body = format!(
            r#"{{"ExporterID":"{}","StudyInstanceUID":"{uid}","batchID":"restart"}}"#,
            q.exporter
        );
        publish(&ch, &q.name, body.as_bytes(), None).await;
    }
    eventually(Duration::from_secs(120), || async {
        let n = rcv.seen().len();
        if n >= N / 5 {
            Ok(())
        } else {
            Err(format!("{n} of {N} sent"))
        }
    })
    .await;
    pg.down().await;
    let at_stop = rcv.seen().len();
    let http = reqwest::Client::new();
    // Readiness names the database as what is down.
    let ready = eventually(Duration::from_secs(30), || async {
        let r = http
            .get(format!("{}/health/ready", api(ports[0])))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = r.status();
        let body: Value = r.json().await.map_err(|e| e.to_string())?;
        if status == 503 && body["checks"]["database"]["status"] == "DOWN" {
            Ok(body)
        } else {
            Err(format!("{status} {body}"))
        }
    })
    .await;
    assert!(
        ready["errorMessage"].as_str().unwrap().contains("database"),
        "{ready}"
    );
    assert_eq!(
        ready["checks"]["queue"]["status"], "UP",
        "the broker is up: {ready}"
    );
    pg.up().await;
    let done = eventually(Duration::from_secs(240), || async {
        let l = all_tasks(&http, &api(ports[1])).await;
        let completed = l.iter().filter(|t| t["status"] == "COMPLETED").count();
        if completed == N {
            Ok(l)
        } else {
            Err(format!("{completed} of {N} COMPLETED, {} records", l.len()))
        }
    })
    .await;
    assert_eq!(done.len(), N, "one record per task");
    assert_arrived(&rcv, &files);
    let requests = rcv.seen().len();
    eprintln!("PostgreSQL stopped after {at_stop} of {N} sent; {requests} requests in all");
    assert_eq!(
        requests, N,
        "each instance sent once: outcomes waited for the database"
    );
    // Ready again, and each instance's counters carry its own name and
    // add up to what was sent.
    for p in ports {
        let r = http
            .get(format!("{}/health/ready", api(p)))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let mut total = 0.0;
    for p in ports {
        let (sum, labels, text) = sent_by(&http, p).await;
        assert_eq!(labels.len(), 1, "{text}");
        assert!(
            labels.iter().next().unwrap().ends_with(&format!(":{p}")),
            "{labels:?}"
        );
        total += sum;
    }
    assert_eq!(total, N as f64, "the instances' counters add up");
    drop(procs);
    // Said once per outage, not once per task.
    for log in &logs {
        let text = std::fs::read_to_string(log).unwrap();
        let complaints: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("ERROR") || l.contains("WARN"))
            .collect();
        eprintln!("{}:\n{}", log.display(), complaints.join("\n"));
        assert!(
            complaints.len() <= 20,
            "{} warnings and errors for one outage during {N} tasks:\n{}",
            complaints.len(),
            complaints.join("\n")
        );
    }
    q.delete(&ch).await;
}

#[tokio::test]
async fn counts_csv_reschedule_and_delete_on_one_instance_act_on_tasks_another_ran() {
    let db = TestDatabase::create().await;
    let tmp = tempfile::tempdir().unwrap();
    let q = TestQueue::new();
    let rcv = Receiver::start(&tmp.path().join("received"), Duration::ZERO).await;
    let cfg = write_config(tmp.path(), rcv.addr.port(), &q.ldif(""));
    let data = tmp.path().join("shared");
    let (uids, files) = studies(&db, tmp.path(), &data, 4, 1).await;
    let (_conn, ch) = client(&amqp_url()).await;
    // Only A consumes while the tasks run: every record is A's run.
    let a = start(&cfg, &data, &db).await;
    for uid in &uids {
        let body = format!(
            r#"{{"ExporterID":"{}","StudyInstanceUID":"{uid}","batchID":"ops"}}"#,
            q.exporter
        );
        publish(&ch, &q.name, body.as_bytes(), None).await;
    }
    let done = eventually(Duration::from_secs(60), || async {
        let l = a.list("batchID=ops&status=COMPLETED").await;
        if l.len() == uids.len() {
            Ok(l)
        } else {
            Err(format!("{} of {} completed", l.len(), uids.len()))
        }
    })
    .await;
    assert_eq!(rcv.seen().len(), files.len());
    let b = start(&cfg, &data, &db).await;
    // Counts and CSV on B.
    let count: Value = b.get_json("/monitor/export/count?batchID=ops").await;
    assert_eq!(count["count"], uids.len() as u64, "{count}");
    let csv = b
        .http
        .get(b.url("/monitor/export?batchID=ops"))
        .header("Accept", "text/csv")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for t in &done {
        assert!(
            csv.contains(t["taskID"].as_str().unwrap()),
            "B's CSV lists task {}: {csv}",
            t["taskID"]
        );
    }
    // B reschedules a task A ran: it runs again (on either instance) and
    // both show it COMPLETED again, sent a second time.
    let id = done[0]["taskID"].as_str().unwrap().to_string();
    assert_eq!(
        b.call(
            reqwest::Method::POST,
            &format!("/monitor/export/{id}/reschedule")
        )
        .await,
        204
    );
    eventually(Duration::from_secs(60), || async {
        let n = rcv.seen().len();
        if n == files.len() + 1 {
            Ok(())
        } else {
            Err(format!("{n} requests"))
        }
    })
    .await;
    let again = wait_status(&a, &id, &["COMPLETED"]).await;
    assert_eq!(again["completed"], 1, "{again}");
    // A bulk delete on B removes A's records for both.
    let r = b
        .http
        .delete(b.url("/monitor/export?batchID=ops"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let deleted: Value = r.json().await.unwrap();
    assert_eq!(deleted["count"], uids.len() as u64, "{deleted}");
    assert!(a.list("batchID=ops").await.is_empty(), "gone on A too");
    a.stop().await;
    b.stop().await;
    q.delete(&ch).await;
}
