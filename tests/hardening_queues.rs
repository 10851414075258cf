//! Queues never stall and acknowledged means durable: every AMQP delivery
//! ends settled (an error while taking it, a panic in its export), a task
//! that ends with the process on every run is given up after
//! `--max-deliveries`, over-long message fields are dead-lettered naming
//! the field and the limit, and `import` fsyncs around its rename.
//!
//! Real RabbitMQ on 127.0.0.1:5672 (STOW_TEST_AMQP_URL overrides it; one
//! queue per test, deleted at the end), the real service in-process or as
//! the binary (killed with SIGKILL by its PID), real SQLite files, real
//! DICOM files, and strace watching a real `import`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::amqp::*;
use common::*;
use lapin::Channel;
use lapin::options::{BasicGetOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use serde_json::Value;
use stow_exporter::config::ConfigSource;
use stow_exporter::queue::QueueOptions;
use stow_exporter::queue::amqp::REASON_HEADER;
use stow_exporter::task::ExportTask;

const LIMIT: Duration = Duration::from_secs(30);

/// The service on `cfg`/`data`, over the test broker when `amqp`.
async fn start(cfg: &Path, data: &Path, amqp: bool, options: QueueOptions) -> Service {
    let mut s = Service::settings(ConfigSource::Ldif(cfg.to_path_buf()), data);
    if amqp {
        s.queue_url = Some(amqp_url());
    }
    s.queue_options = options;
    Service::start_with_settings(s).await
}

/// Messages ready in `queue` (a passive declare; unacknowledged ones are
/// not counted).
async fn ready(ch: &Channel, queue: &str) -> u32 {
    ch.queue_declare(
        queue.into(),
        QueueDeclareOptions {
            durable: true,
            passive: true,
            ..QueueDeclareOptions::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap()
    .message_count()
}

/// A dead-lettered message: its body and the reason header.
#[derive(Debug)]
struct Dead {
    body: Vec<u8>,
    reason: String,
}

/// Takes `n` messages from `<queue>.dlq`, waiting for them (a bounded
/// poll, like `eventually`).
async fn dead_letters(ch: &Channel, queue: &str, n: usize) -> Vec<Dead> {
    let dlq = format!("{queue}.dlq");
    // Declared as the service declares it, so that looking does not fail
    // (and close the channel) before the service's worker declared it.
    ch.queue_declare(
        dlq.as_str().into(),
        QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    let start = std::time::Instant::now();
    let mut got = Vec::new();
    loop {
        while let Some(m) = ch
            .basic_get(dlq.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
        {
            let d = &m.delivery;
            let reason = d
                .properties
                .headers()
                .as_ref()
                .and_then(|h| {
                    h.inner()
                        .iter()
                        .find(|(k, _)| k.as_str() == REASON_HEADER)
                        .map(|(_, v)| v.clone())
                })
                .map(|v| match v {
                    AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into(),
                    other => format!("{other:?}"),
                })
                .unwrap_or_default();
            got.push(Dead {
                body: d.data.clone(),
                reason,
            });
        }
        if got.len() >= n {
            return got;
        }
        assert!(
            start.elapsed() < LIMIT,
            "after {LIMIT:?}: {} of {n} messages in {dlq}: {got:?}",
            got.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the listing for `query` has a task, ended; returns it.
async fn ended_task(svc: &Service, query: &str) -> Value {
    eventually(LIMIT, || async {
        let l = svc.list(query).await;
        match l.first() {
            Some(t) if ended(t) => Ok(t.clone()),
            _ => Err(format!("{query}: no ended task yet: {l:?}")),
        }
    })
    .await
}

fn task_body(exporter: &str, study: &str, batch: &str) -> String {
    format!(r#"{{"ExporterID":"{exporter}","StudyInstanceUID":"{study}","batchID":"{batch}"}}"#)
}

/// One queue of this test, two studies in the archive, a receiver.
struct Setup {
    tmp: tempfile::TempDir,
    q: TestQueue,
    rcv: Receiver,
    cfg: PathBuf,
    data: PathBuf,
    studies: Vec<(String, Vec<PathBuf>)>,
}

async fn setup(studies: usize, receiver_delay: Duration) -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let q = TestQueue::new();
    let rcv = Receiver::start(&tmp.path().join("received"), receiver_delay).await;
    // dcmMaxTasksParallel 1: prefetch 1, one slot.
    let cfg = write_config(tmp.path(), rcv.addr.port(), &q.ldif(""));
    let data = tmp.path().join("data");
    let mut all = Vec::new();
    let mut files = Vec::new();
    for i in 0..studies {
        let s = study(&tmp.path().join(format!("src{i}")), 2, 16);
        files.extend(s.1.clone());
        all.push(s);
    }
    import(&data, &files).await;
    Setup {
        tmp,
        q,
        rcv,
        cfg,
        data,
        studies: all,
    }
}

#[tokio::test]
async fn an_error_while_taking_a_delivery_requeues_it_and_the_next_message_runs() {
    let s = setup(2, Duration::ZERO).await;
    let (_conn, ch) = client(&amqp_url()).await;
    let options = QueueOptions {
        max_deliveries: 2,
        ..QueueOptions::default()
    };
    let svc = start(&s.cfg, &s.data, true, options).await;
    // A real fault of the record store for this one message: SQLite
    // refuses to insert its record, as a full or broken disk would.
    let db = rusqlite::Connection::open(s.data.join("queue.sqlite")).unwrap();
    db.busy_timeout(Duration::from_secs(10)).unwrap();
    db.execute_batch(
        "CREATE TRIGGER refuse_poison BEFORE INSERT ON task WHEN NEW.batch_id = 'poison'
         BEGIN SELECT RAISE(ABORT, 'injected: the record store refuses this task'); END;",
    )
    .unwrap();

    let poison = task_body(&s.q.exporter, &s.studies[0].0, "poison");
    publish(&ch, &s.q.name, poison.as_bytes(), Some("poison-1")).await;
    let good = task_body(&s.q.exporter, &s.studies[1].0, "good");
    publish(&ch, &s.q.name, good.as_bytes(), Some("good-1")).await;

    // With prefetch 1 an unsettled delivery would hold the queue forever;
    // requeued and counted, it is dead-lettered after two deliveries, and
    // the message behind it runs.
    let done = ended_task(&svc, "batchID=good").await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    assert_arrived(&s.rcv, &s.studies[1].1);
    let dead = dead_letters(&ch, &s.q.name, 1).await;
    assert_eq!(dead[0].body, poison.as_bytes());
    assert!(
        dead[0]
            .reason
            .contains("delivered 2 times without an outcome"),
        "{dead:?}"
    );
    svc.stop().await;
    // Nothing left unacknowledged: after the connection closed, nothing
    // came back to the queue.
    assert_eq!(ready(&ch, &s.q.name).await, 0);
    s.q.delete(&ch).await;
    drop(s.tmp);
}

/// Options whose export panics for tasks of batch `boom`.
fn panicking() -> QueueOptions {
    QueueOptions {
        export_hook: Some(Arc::new(|t: &ExportTask| {
            if t.batch_id.as_deref() == Some("boom") {
                panic!("injected fault in the export of task {}", t.task_id);
            }
        })),
        ..QueueOptions::default()
    }
}

#[tokio::test]
async fn a_panicking_export_over_amqp_ends_failed_is_acknowledged_and_frees_its_slot() {
    let s = setup(2, Duration::ZERO).await;
    let (_conn, ch) = client(&amqp_url()).await;
    let svc = start(&s.cfg, &s.data, true, panicking()).await;
    let boom = task_body(&s.q.exporter, &s.studies[0].0, "boom");
    publish(&ch, &s.q.name, boom.as_bytes(), Some("boom-1")).await;
    let good = task_body(&s.q.exporter, &s.studies[1].0, "good");
    publish(&ch, &s.q.name, good.as_bytes(), Some("good-1")).await;

    let failed = ended_task(&svc, "batchID=boom").await;
    assert_eq!(failed["status"], "FAILED", "{failed}");
    let why = failed["errorMessage"].as_str().unwrap_or_default();
    assert!(
        why.contains("the export panicked: injected fault in the export"),
        "{failed}"
    );
    // The one slot (dcmMaxTasksParallel 1) was given back.
    let done = ended_task(&svc, "batchID=good").await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    assert_arrived(&s.rcv, &s.studies[1].1);
    svc.stop().await;
    // Both deliveries were acknowledged: none comes back once the
    // connection is closed.
    assert_eq!(ready(&ch, &s.q.name).await, 0);
    assert_eq!(ready(&ch, &format!("{}.dlq", s.q.name)).await, 0);
    s.q.delete(&ch).await;
}

#[tokio::test]
async fn a_panicking_export_on_the_embedded_queue_ends_failed_and_frees_its_slot() {
    let s = setup(2, Duration::ZERO).await;
    let svc = start(&s.cfg, &s.data, false, panicking()).await;
    let trigger = |study: &str, batch: &str| {
        svc.http
            .post(svc.url(&format!(
                "/aets/{AET}/rs/studies/{study}/export/{}?batchID={batch}",
                s.q.exporter
            )))
            .send()
    };
    assert_eq!(
        trigger(&s.studies[0].0, "boom").await.unwrap().status(),
        202
    );
    assert_eq!(
        trigger(&s.studies[1].0, "good").await.unwrap().status(),
        202
    );
    let failed = ended_task(&svc, "batchID=boom").await;
    assert_eq!(failed["status"], "FAILED", "{failed}");
    assert!(
        failed["errorMessage"]
            .as_str()
            .unwrap_or_default()
            .contains("the export panicked: injected fault in the export"),
        "{failed}"
    );
    let done = ended_task(&svc, "batchID=good").await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    assert_arrived(&s.rcv, &s.studies[1].1);
    svc.stop().await;
}

#[tokio::test]
async fn over_long_message_fields_are_dead_lettered_naming_field_and_limit() {
    let s = setup(1, Duration::ZERO).await;
    let (_conn, ch) = client(&amqp_url()).await;
    let svc = start(&s.cfg, &s.data, true, QueueOptions::default()).await;
    let study = &s.studies[0].0;
    let long_batch = task_body(&s.q.exporter, study, &"b".repeat(300));
    let long_exporter = task_body(&"E".repeat(300), study, "x");
    let huge = task_body(&s.q.exporter, study, &"h".repeat(70_000));
    for (i, b) in [&long_batch, &long_exporter, &huge].iter().enumerate() {
        publish(&ch, &s.q.name, b.as_bytes(), Some(&format!("long-{i}"))).await;
    }
    let dead = dead_letters(&ch, &s.q.name, 3).await;
    let reason_of = |body: &str| {
        dead.iter()
            .find(|d| d.body == body.as_bytes())
            .map(|d| d.reason.clone())
            .unwrap_or_else(|| panic!("not dead-lettered: {:.80}", body))
    };
    let r = reason_of(&long_batch);
    assert!(
        r.contains("batchID") && r.contains("limit of 255"),
        "batchID: {r}"
    );
    let r = reason_of(&long_exporter);
    assert!(
        r.contains("ExporterID") && r.contains("limit of 255"),
        "ExporterID: {r}"
    );
    let r = reason_of(&huge);
    assert!(r.contains("over the limit of 65536 bytes"), "size: {r}");
    // Recorded FAILED with the same reasons; nothing was sent.
    let failed = eventually(LIMIT, || async {
        let l = svc.list("status=FAILED").await;
        if l.len() >= 3 {
            Ok(l)
        } else {
            Err(format!("{} of 3 FAILED: {l:?}", l.len()))
        }
    })
    .await;
    assert!(
        failed.iter().any(|t| t["errorMessage"]
            .as_str()
            .is_some_and(|e| e.contains("batchID") && e.contains("limit of 255"))),
        "{failed:?}"
    );
    assert!(s.rcv.seen().is_empty());
    svc.stop().await;
    s.q.delete(&ch).await;
}

#[tokio::test]
async fn the_rest_trigger_refuses_an_over_long_batch_id_naming_the_field() {
    let s = setup(1, Duration::ZERO).await;
    let svc = start(&s.cfg, &s.data, false, QueueOptions::default()).await;
    let r = svc
        .http
        .post(svc.url(&format!(
            "/aets/{AET}/rs/studies/{}/export/{}?batchID={}",
            s.studies[0].0,
            s.q.exporter,
            "b".repeat(300)
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    let msg = body["errorMessage"].as_str().unwrap_or_default();
    assert!(
        msg.contains("batchID") && msg.contains("limit of 255"),
        "{body}"
    );
    assert!(svc.list("").await.is_empty(), "no task was created");
    svc.stop().await;
}

/// A real `serve` process (killed with SIGKILL when dropped), its log in
/// `log`.
fn serve(cfg: &Path, data: &Path, port: u16, amqp: bool, log: &Path) -> KillOnDrop {
    let mut c = Command::new(env!("CARGO_BIN_EXE_stow-exporter"));
    c.env("STOW_EXPORTER_DICOM_LISTEN", "none")
        .args(["serve", "--config"])
        .arg(cfg)
        .arg("--data")
        .arg(data)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--max-deliveries", "2"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap());
    if amqp {
        c.args(["--queue", &amqp_url()]);
    }
    KillOnDrop(c.spawn().unwrap())
}

/// A task whose run ends with the process every time (SIGKILL while its
/// request hangs at the receiver) runs `--max-deliveries` (2) times, then
/// ends FAILED with that reason (over AMQP, its message in `<queue>.dlq`).
async fn killed_on_every_run(amqp: bool) {
    // The receiver holds every request: the task is always mid-run.
    let s = setup(1, Duration::from_secs(3600)).await;
    let port = free_port();
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}/dcm4chee-arc");
    let log = |n: usize| s.tmp.path().join(format!("serve-{n}.log"));

    let mut first = serve(&s.cfg, &s.data, port, amqp, &log(1));
    wait_up(port, LIMIT).await;
    let r = http
        .post(format!(
            "{base}/aets/{AET}/rs/studies/{}/export/{}",
            s.studies[0].0, s.q.exporter
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let id = r.json::<Value>().await.unwrap()["taskID"]
        .as_str()
        .unwrap()
        .to_string();
    for run in 1..=2 {
        eventually(LIMIT, || async {
            let n = s.rcv.seen().len();
            if n >= run {
                Ok(())
            } else {
                Err(format!(
                    "run {run} did not reach the receiver ({n} requests)"
                ))
            }
        })
        .await;
        first.kill();
        first = serve(&s.cfg, &s.data, port, amqp, &log(run + 1));
        wait_up(port, LIMIT).await;
    }
    let done = wait_done(&http, &base, &id, LIMIT).await;
    let logs: String = (1..=3)
        .map(|n| std::fs::read_to_string(log(n)).unwrap_or_default())
        .collect();
    assert_eq!(done["status"], "FAILED", "{done}\n{logs}");
    let what = if amqp { "delivered" } else { "taken" };
    let why = done["errorMessage"].as_str().unwrap_or_default();
    assert!(
        why.contains(&format!("{what} 2 times without an outcome")),
        "{done}"
    );
    assert_eq!(s.rcv.seen().len(), 2, "not run a third time");
    if amqp {
        let (_conn, ch) = client(&amqp_url()).await;
        let dead = dead_letters(&ch, &s.q.name, 1).await;
        assert!(
            dead[0]
                .reason
                .contains("delivered 2 times without an outcome"),
            "{dead:?}"
        );
        assert_eq!(ready(&ch, &s.q.name).await, 0);
        drop(first);
        s.q.delete(&ch).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_killing_the_process_on_every_delivery_is_dead_lettered() {
    killed_on_every_run(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedded_task_killing_the_process_on_every_take_ends_failed() {
    killed_on_every_run(false).await;
}

/// One line of strace's output, without its PID.
fn call(line: &str) -> &str {
    line.split_once(' ')
        .map(|(pid, rest)| {
            if pid.bytes().all(|b| b.is_ascii_digit()) {
                rest.trim_start()
            } else {
                line
            }
        })
        .unwrap_or(line)
}

#[test]
fn import_fsyncs_the_copy_before_the_rename_and_the_directory_and_index_after() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, files) = study(&tmp.path().join("src"), 1, 8);
    let data = tmp.path().join("data");
    let trace = tmp.path().join("strace.txt");
    let out = Command::new("strace")
        .args([
            "-f",
            "-y",
            "-e",
            "trace=fsync,fdatasync,rename,renameat,renameat2",
            "-o",
        ])
        .arg(&trace)
        .arg(env!("CARGO_BIN_EXE_stow-exporter"))
        .args(["import", "--data"])
        .arg(&data)
        .arg(&files[0])
        .output()
        .unwrap_or_else(|e| panic!("strace runs (scripts/test.sh installs it): {e}"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&trace).unwrap();
    let lines: Vec<&str> = text.lines().map(call).collect();
    let sop = sop_uid(&files[0]);
    let dest_name = format!("{sop}.dcm\"");
    let rename = lines
        .iter()
        .position(|l| l.starts_with("rename") && l.contains(".tmp\"") && l.contains(&dest_name))
        .unwrap_or_else(|| panic!("no rename into {sop}.dcm:\n{text}"));
    let synced = |range: &[&str], what: &dyn Fn(&str) -> bool| {
        range
            .iter()
            .any(|l| (l.starts_with("fsync(") || l.starts_with("fdatasync(")) && what(l))
    };
    assert!(
        synced(&lines[..rename], &|l| l.contains(".tmp>")
            && l.contains(&sop)),
        "the copy is not fsynced before its rename:\n{text}"
    );
    let dest = walk(&data.join("storage"))
        .into_iter()
        .find(|p| p.ends_with(format!("{sop}.dcm")))
        .unwrap();
    let dir = std::fs::canonicalize(dest.parent().unwrap()).unwrap();
    let dir_fd = format!("<{}>", dir.display());
    assert!(
        synced(&lines[rename..], &|l| l.contains(&dir_fd)),
        "its directory {} is not fsynced after the rename:\n{text}",
        dir.display()
    );
    assert!(
        synced(&lines[rename..], &|l| l.contains("archive.sqlite-wal>")),
        "the index commit is not fsynced (synchronous=FULL):\n{text}"
    );
}
