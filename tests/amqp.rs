//! Task delivery through RabbitMQ (`--queue amqp://...`), against the broker
//! on 127.0.0.1:5672 (guest/guest; `scripts/test.sh` starts a private one
//! when none answers there; STOW_TEST_AMQP_URL overrides the URL). Each test
//! uses a queue of its own and deletes it at the end.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::amqp::*;
use common::*;
use lapin::Channel;
use lapin::options::{BasicGetOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use reqwest::Method;
use serde_json::Value;
use stow_exporter::config::ConfigSource;

async fn start(cfg: &Path, data: &Path) -> Service {
    let mut s = Service::settings(ConfigSource::Ldif(cfg.to_path_buf()), data);
    s.queue_url = Some(amqp_url());
    Service::start_with_settings(s).await
}

/// Waits until the listing for `query` has `n` tasks, all ended.
async fn wait_listed(svc: &Service, query: &str, n: usize) -> Vec<Value> {
    eventually(Duration::from_secs(30), || async {
        let l = svc.list(query).await;
        let done = l.iter().filter(|t| ended(t)).count();
        if done >= n {
            Ok(l)
        } else {
            Err(format!("{query}: {done} of {n} tasks ended: {l:?}"))
        }
    })
    .await
}

#[tokio::test]
async fn a_task_published_by_a_plain_amqp_client_is_exported() {
    let tmp = tempfile::tempdir().unwrap();
    let q = TestQueue::new();
    let rcv = Receiver::start(&tmp.path().join("received"), Duration::ZERO).await;
    let cfg = write_config(tmp.path(), rcv.addr.port(), &q.ldif(""));
    let (study_uid, files) = study(&tmp.path().join("src"), 2, 32);
    let data = tmp.path().join("data");
    import(&data, &files).await;
    let (_conn, ch) = client(&amqp_url()).await;
    let svc = start(&cfg, &data).await;

    let body = format!(
        r#"{{"ExporterID":"{}","StudyInstanceUID":"{study_uid}","batchID":"amqp-1"}}"#,
        q.exporter
    );
    publish(&ch, &q.name, body.as_bytes(), None).await;
    let l = wait_listed(&svc, "batchID=amqp-1", 1).await;
    assert_eq!(l.len(), 1, "{l:?}");
    assert_eq!(l[0]["status"], "COMPLETED", "{l:?}");
    assert_eq!(l[0]["completed"], 2);
    assert_eq!(l[0]["queue"], q.name.as_str());
    assert_eq!(l[0]["LocalAET"], AET);
    assert_arrived(&rcv, &files);
    svc.stop().await;
    q.delete(&ch).await;
}

#[tokio::test]
async fn the_rest_trigger_publishes_with_confirm_and_the_task_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let q = TestQueue::new();
    let rcv = Receiver::start(&tmp.path().join("received"), Duration::ZERO).await;
    let cfg = write_config(tmp.path(), rcv.addr.port(), &q.ldif(""));
    let (study_uid, files) = study(&tmp.path().join("src"), 3, 32);
    let data = tmp.path().join("data");
    import(&data, &files).await;
    let (_conn, ch) = client(&amqp_url()).await;
    let svc = start(&cfg, &data).await;

    let t = svc.export_study(&q.exporter, &study_uid).await;
    assert_eq!(t["queue"], q.name.as_str());
    let done = svc.wait_done(t["taskID"].as_str().unwrap()).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    assert_eq!(done["completed"], 3);
    assert_arrived(&rcv, &files);
    // One record per task: the delivery found the one the trigger made.
    assert_eq!(
        svc.list(&format!("ExporterID={}", q.exporter)).await.len(),
        1
    );
    svc.stop().await;
    q.delete(&ch).await;
}

#[tokio::test]
async fn malformed_messages_end_failed_and_go_to_the_dead_letter_queue() {
    let tmp = tempfile::tempdir().unwrap();
    let q = TestQueue::new();
    let rcv = Receiver::start(&tmp.path().join("received"), Duration::ZERO).await;
    let cfg = write_config(tmp.path(), rcv.addr.port(), &q.ldif(""));
    let data = tmp.path().join("data");
    let (_conn, ch) = client(&amqp_url()).await;
    let svc = start(&cfg, &data).await;

    let bad_json = b"{\"ExporterID\": oops".to_vec();
    let unknown = br#"{"ExporterID":"NoSuchExporter","StudyInstanceUID":"1.2.3"}"#.to_vec();
    let extra_field = format!(
        r#"{{"ExporterID":"{}","StudyInstanceUID":"1.2.3","Oops":1}}"#,
        q.exporter
    )
    .into_bytes();
    let bad_uid = format!(
        r#"{{"ExporterID":"{}","StudyInstanceUID":"../etc"}}"#,
        q.exporter
    )
    .into_bytes();
    for b in [&bad_json, &unknown, &extra_field, &bad_uid] {
        publish(&ch, &q.name, b, None).await;
    }
    let l = wait_listed(&svc, "status=FAILED", 4).await;
    assert_eq!(l.len(), 4, "{l:?}");
    let errors: Vec<&str> = l
        .iter()
        .map(|t| t["errorMessage"].as_str().unwrap())
        .collect();
    let has = |s: &str| errors.iter().any(|e| e.contains(s));
    assert!(has("malformed message"), "{errors:?}");
    assert!(
        has("unknown exporter: no exporter NoSuchExporter"),
        "{errors:?}"
    );
    assert!(has("unknown field `Oops`"), "{errors:?}");
    assert!(has("StudyInstanceUID"), "{errors:?}");
    assert!(
        l.iter()
            .any(|t| t["ExporterID"] == "NoSuchExporter" && t["StudyInstanceUID"] == "1.2.3"),
        "{l:?}"
    );
    assert!(rcv.seen().is_empty());

    // The originals, as they came, in <queue>.dlq.
    let mut dead = Vec::new();
    while let Some(m) = ch
        .basic_get(
            format!("{}.dlq", q.name).as_str().into(),
            BasicGetOptions { no_ack: true },
        )
        .await
        .unwrap()
    {
        dead.push(m.delivery.data.clone());
    }
    dead.sort();
    let mut want = vec![bad_json, unknown, extra_field, bad_uid];
    want.sort();
    assert_eq!(dead, want);
    svc.stop().await;
    q.delete(&ch).await;
}

#[tokio::test]
async fn two_instances_on_one_queue_share_the_work() {
    let tmp = tempfile::tempdir().unwrap();
    let q = TestQueue::new();
    let rcv = Receiver::start(&tmp.path().join("received"), Duration::from_millis(50)).await;
    let cfg = write_config(tmp.path(), rcv.addr.port(), &q.ldif(""));
    let mut studies = Vec::new();
    let mut files = Vec::new();
    for i in 0..20 {
        let (uid, f) = study(&tmp.path().join(format!("src{i}")), 1, 16);
        studies.push(uid);
        files.extend(f);
    }
    let (da, db) = (tmp.path().join("a"), tmp.path().join("b"));
    import(&da, &files).await;
    import(&db, &files).await;
    let (_conn, ch) = client(&amqp_url()).await;
    let a = start(&cfg, &da).await;
    let b = start(&cfg, &db).await;
    // Both consumers are there before the work arrives.
    let start_wait = Instant::now();
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
        assert!(start_wait.elapsed() < Duration::from_secs(10));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for (i, s) in studies.iter().enumerate() {
        let body = format!(
            r#"{{"ExporterID":"{}","StudyInstanceUID":"{s}","batchID":"share","SeriesInstanceUID":"*"}}"#,
            q.exporter
        );
        publish(&ch, &q.name, body.as_bytes(), None).await;
        let _ = i;
    }
    let started = Instant::now();
    let (la, lb) = loop {
        let la = a.list("batchID=share&status=COMPLETED").await;
        let lb = b.list("batchID=share&status=COMPLETED").await;
        if la.len() + lb.len() >= 20 {
            break (la, lb);
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{} + {} of 20 completed",
            la.len(),
            lb.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // No study runs twice: rather than pausing and hoping a duplicate would
    // have shown by then, each instance must first deal with a marker
    // published now. A marker queues behind every message the broker could
    // still hand out (a requeued one goes back to its place, ahead of it),
    // and each instance takes one delivery at a time (prefetch 1, one task
    // in parallel), so an instance that has dealt with a marker has nothing
    // of the 20 left. A marker is dead-lettered unread (an unknown field),
    // so it sends nothing and leaves a FAILED record of batch `share-end`
    // in the store of the instance that took it.
    let marker = format!(
        r#"{{"ExporterID":"{}","StudyInstanceUID":"1.2.3","batchID":"share-end","Marker":1}}"#,
        q.exporter
    );
    let mut markers = 0;
    loop {
        assert!(
            markers < 20,
            "{markers} markers, all dealt with by one instance: the other is stuck"
        );
        publish(&ch, &q.name, marker.as_bytes(), None).await;
        markers += 1;
        let (ma, mb) = eventually(Duration::from_secs(30), || async {
            let ma = a.list("batchID=share-end&status=FAILED").await.len();
            let mb = b.list("batchID=share-end&status=FAILED").await.len();
            if ma + mb == markers {
                Ok((ma, mb))
            } else {
                Err(format!("{} of {markers} markers dead-lettered", ma + mb))
            }
        })
        .await;
        if ma > 0 && mb > 0 {
            break;
        }
    }
    assert_eq!(la.len() + lb.len(), 20);
    assert!(
        !la.is_empty() && !lb.is_empty(),
        "{} / {}",
        la.len(),
        lb.len()
    );
    let mut ran: Vec<String> = la
        .iter()
        .chain(lb.iter())
        .map(|t| t["StudyInstanceUID"].as_str().unwrap().to_string())
        .collect();
    ran.sort();
    studies.sort();
    assert_eq!(ran, studies, "every study exactly once");
    assert_eq!(rcv.seen().len(), 20, "each instance sent once");
    assert_arrived(&rcv, &files);
    assert_eq!(a.list("batchID=share").await.len(), la.len());
    assert_eq!(b.list("batchID=share").await.len(), lb.len());
    a.stop().await;
    b.stop().await;
    q.delete(&ch).await;
}

#[tokio::test]
async fn retries_wait_in_the_retry_queue_and_come_back_when_due() {
    let tmp = tempfile::tempdir().unwrap();
    let q = TestQueue::new();
    let (port, times) = flaky(&tmp.path().join("received"), 2, None).await;
    let cfg = write_config(
        tmp.path(),
        port,
        &q.ldif("dcmMaxRetries: 5\ndcmRetryDelay: PT0.3S\ndcmRetryDelayMultiplier: 100\n"),
    );
    let (study_uid, files) = study(&tmp.path().join("src"), 1, 32);
    let data = tmp.path().join("data");
    import(&data, &files).await;
    let (_conn, ch) = client(&amqp_url()).await;
    let svc = start(&cfg, &data).await;

    let t = svc.export_study(&q.exporter, &study_uid).await;
    let id = t["taskID"].as_str().unwrap();
    let started = Instant::now();
    loop {
        let t = svc.task(id).await;
        if t["status"] == "SCHEDULED FOR RETRY" {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "never SCHEDULED FOR RETRY: {t}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let done = svc.wait_done(id).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    assert_eq!(done["failures"], 2);
    let times = times.lock().unwrap().clone();
    assert_eq!(times.len(), 3, "two failed attempts and one that succeeded");
    for i in 0..2 {
        let gap = (times[i + 1] - times[i]).as_secs_f64();
        assert!(
            (0.3..1.5).contains(&gap),
            "retry {} came after {gap:.2} s, policy says 0.3 s",
            i + 1
        );
    }
    assert_eq!(
        svc.list(&format!("ExporterID={}", q.exporter)).await.len(),
        1
    );
    svc.stop().await;
    q.delete(&ch).await;
}

/// Messages waiting in `queue` (a passive declare).
async fn waiting(ch: &Channel, queue: &str) -> u32 {
    passive_declare(ch, queue).await.message_count()
}

/// Consumers of `queue` (a passive declare).
async fn consumers(ch: &Channel, queue: &str) -> u32 {
    passive_declare(ch, queue).await.consumer_count()
}

async fn passive_declare(ch: &Channel, queue: &str) -> lapin::Queue {
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
}

#[tokio::test]
async fn held_and_canceled_tasks_do_not_run() {
    let tmp = tempfile::tempdir().unwrap();
    let (q, q2) = (TestQueue::new(), TestQueue::new());
    let rcv = Receiver::start(&tmp.path().join("received"), Duration::ZERO).await;
    // The exporter of q has its window closed (an hour 12 hours away).
    let closed = closed_hour();
    let ldif = format!(
        "{}{}",
        q.ldif_with("", &format!("dcmSchedule: hour={closed} dayOfWeek=*\n")),
        q2.ldif("")
    );
    let cfg = write_config(tmp.path(), rcv.addr.port(), &ldif);
    let (study_uid, files) = study(&tmp.path().join("src"), 1, 32);
    // Exported by the control task below, which must run.
    let (control_uid, control_files) = study(&tmp.path().join("control"), 1, 32);
    let data = tmp.path().join("data");
    import(&data, &files).await;
    import(&data, &control_files).await;
    let (_conn, ch) = client(&amqp_url()).await;
    let svc = start(&cfg, &data).await;

    let t = svc.export_study(&q.exporter, &study_uid).await;
    let id = t["taskID"].as_str().unwrap();
    let started = Instant::now();
    // The worker has looked at the task and held it: its message moved to
    // <queue>.hold.
    while waiting(&ch, &format!("{}.hold", q.name)).await == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "never moved to {}.hold",
            q.name
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(svc.task(id).await["status"], "SCHEDULED");
    assert_eq!(waiting(&ch, &q.name).await, 0);

    // A canceled task whose message comes back later is acknowledged
    // without running: scheduled a moment ahead, it waits in .hold, then
    // returns to the queue.
    let r = svc
        .http
        .post(svc.url(&format!("/monitor/export/{id}/cancel")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(svc.task(id).await["status"], "CANCELED");
    let id2 = export_later(&svc, &q2.exporter, &study_uid, 2).await;
    let path = format!("/monitor/export/{id2}/cancel");
    assert_eq!(svc.call(Method::POST, &path).await, 204);
    // A control task on the same queue, due no sooner, triggered after the
    // cancel: its message travels the same way behind the canceled one
    // (through <queue>, then <queue>.hold, which expires messages in
    // order from its head, then back), and the queue's one consumer
    // (prefetch 1) settles deliveries one at a time. So once the control
    // task has ended, the canceled task's message has come back and been
    // dealt with: no pause that a slow machine could outlast.
    let control = export_later(&svc, &q2.exporter, &control_uid, 2).await;
    let done = svc.wait_done(&control).await;
    assert_eq!(done["status"], "COMPLETED", "the control task ran: {done}");
    assert_eq!(svc.task(&id2).await["status"], "CANCELED");
    assert_eq!(
        svc.task(id).await["status"],
        "CANCELED",
        "the held task stays canceled"
    );
    assert_eq!(rcv.seen().len(), 1, "only the control task sent anything");
    assert_eq!(
        rcv.stored(),
        vec![rcv.dir.join(format!("{}.dcm", sop_uid(&control_files[0])))],
        "nothing of the canceled tasks' study arrived"
    );
    for name in [q2.name.clone(), format!("{}.hold", q2.name)] {
        assert_eq!(waiting(&ch, &name).await, 0, "{name} is empty");
    }
    svc.stop().await;
    q.delete(&ch).await;
    q2.delete(&ch).await;
}

#[tokio::test]
async fn the_export_command_publishes_to_the_broker() {
    let tmp = tempfile::tempdir().unwrap();
    let q = TestQueue::new();
    let rcv = Receiver::start(&tmp.path().join("received"), Duration::ZERO).await;
    let cfg = write_config(tmp.path(), rcv.addr.port(), &q.ldif(""));
    let (study_uid, files) = study(&tmp.path().join("src"), 1, 32);
    let data = tmp.path().join("data");
    import(&data, &files).await;
    let (_conn, ch) = client(&amqp_url()).await;
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_stow-exporter"))
        .args(["export", "--config"])
        .arg(&cfg)
        .arg("--data")
        .arg(&data)
        .args(["--exporter", &q.exporter, "--study", &study_uid])
        .env("STOW_EXPORTER_QUEUE", amqp_url())
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        !stderr.contains("guest:guest") && stderr.contains("guest:****@127.0.0.1"),
        "the password is never logged: {stderr}"
    );
    let t: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(waiting(&ch, &q.name).await, 1, "confirmed in the broker");

    let svc = start(&cfg, &data).await;
    let done = svc.wait_done(t["taskID"].as_str().unwrap()).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    assert_arrived(&rcv, &files);
    svc.stop().await;
    q.delete(&ch).await;
}

#[tokio::test]
async fn an_unfinished_delivery_comes_back_and_an_ended_one_does_not_run_again() {
    use stow_exporter::config::DEFAULT_DEVICE_NAME;
    use stow_exporter::outcome::Outcome;
    use stow_exporter::queue::{AmqpQueue, Hold, SqliteStore, TaskDelivery};
    use stow_exporter::task::{Counts, Status};

    let tmp = tempfile::tempdir().unwrap();
    let q = TestQueue::new();
    let cfg = write_config(tmp.path(), 1, &q.ldif(""));
    let source = ConfigSource::Ldif(cfg);
    let snapshot = source.load(DEFAULT_DEVICE_NAME).await.unwrap();
    let shared = stow_exporter::config::LiveConfig::new(source, DEFAULT_DEVICE_NAME, snapshot);
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let open = || async {
        let records = SqliteStore::open(&data, DEFAULT_DEVICE_NAME, true)
            .await
            .unwrap();
        AmqpQueue::connect(&amqp_url(), std::sync::Arc::new(records), shared.clone())
            .await
            .unwrap()
    };
    let (_conn, ch) = client(&amqp_url()).await;
    let body = format!(
        r#"{{"ExporterID":"{}","StudyInstanceUID":"1.2.3"}}"#,
        q.exporter
    );
    let limit = Duration::from_secs(10);

    let q1 = open().await;
    let first = tokio::spawn({
        let name = q.name.clone();
        async move {
            let t = q1.next(&name, &Hold::none).await.unwrap();
            (q1, t)
        }
    });
    publish(&ch, &q.name, body.as_bytes(), Some("m-1")).await;
    let (q1, t) = tokio::time::timeout(limit, first).await.unwrap().unwrap();
    assert_eq!(t.status, Status::InProcess);
    // A crash: neither finished nor acknowledged.
    drop(q1);

    let q2 = open().await;
    assert_eq!(
        q2.store().get(&t.task_id).await.unwrap().status,
        Status::Scheduled
    );
    let again = tokio::time::timeout(limit, q2.next(&q.name, &Hold::none))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.task_id, t.task_id, "redelivered to the same record");
    let done = q2
        .finish(
            &again.task_id,
            Outcome {
                status: Status::Completed,
                message: "ok".into(),
                error: None,
                counts: Counts {
                    completed: 1,
                    ..Counts::default()
                },
                number_of_instances: 1,
                retry: Default::default(),
            },
            None,
        )
        .await
        .unwrap();
    assert_eq!(done.status, Status::Completed);

    // The same message once more: acknowledged without running. Rather
    // than waiting a while for nothing, a second message follows it: the
    // queue is FIFO and its consumer has a prefetch of 1, so what `next`
    // hands out now is the first message it did not acknowledge unread.
    publish(&ch, &q.name, body.as_bytes(), Some("m-1")).await;
    publish(&ch, &q.name, body.as_bytes(), Some("m-2")).await;
    let after = tokio::time::timeout(limit, q2.next(&q.name, &Hold::none))
        .await
        .expect("the message after the ended task's is handed out")
        .unwrap();
    assert_ne!(
        after.task_id, t.task_id,
        "an ended task is not handed out again"
    );
    assert_eq!(
        waiting(&ch, &q.name).await,
        0,
        "and its message was acknowledged"
    );
    let records = q2.store().list(Default::default()).await.unwrap();
    assert_eq!(
        records.iter().filter(|r| r.task_id == t.task_id).count(),
        1,
        "one record of the ended task"
    );
    assert_eq!(
        q2.store().get(&t.task_id).await.unwrap().status,
        Status::Completed,
        "still ended"
    );
    assert_eq!(records.len(), 2, "and one of the message after it");
    drop(q2);
    q.delete(&ch).await;
}

#[tokio::test]
async fn a_paused_queue_takes_no_deliveries_until_a_reload_opens_it() {
    let tmp = tempfile::tempdir().unwrap();
    let (q, q2) = (TestQueue::new(), TestQueue::new());
    let rcv = Receiver::start(&tmp.path().join("received"), Duration::ZERO).await;
    // q is paused; q2, open, is the control.
    let ldif = format!("{}{}", q.ldif("dicomInstalled: FALSE\n"), q2.ldif(""));
    let cfg = write_config(tmp.path(), rcv.addr.port(), &ldif);
    let (study_uid, files) = study(&tmp.path().join("src"), 1, 32);
    let data = tmp.path().join("data");
    import(&data, &files).await;
    let (_conn, ch) = client(&amqp_url()).await;
    let svc = start(&cfg, &data).await;

    let body = format!(
        r#"{{"ExporterID":"{}","StudyInstanceUID":"{study_uid}","batchID":"paused"}}"#,
        q.exporter
    );
    for _ in 0..3 {
        publish(&ch, &q.name, body.as_bytes(), None).await;
    }
    // Instead of a pause: a task published after them to the open queue q2
    // runs to its end. The workers of both queues started together, so by
    // then the worker of q has long looked at its queue; had it not seen
    // it paused, it would have consumed it. It has not: q has no consumer,
    // so the broker can hand it nothing, and its messages are all there.
    let control = format!(
        r#"{{"ExporterID":"{}","StudyInstanceUID":"{study_uid}","batchID":"control"}}"#,
        q2.exporter
    );
    publish(&ch, &q2.name, control.as_bytes(), None).await;
    let l = wait_listed(&svc, "batchID=control", 1).await;
    assert_eq!(l[0]["status"], "COMPLETED", "the control task ran: {l:?}");
    assert_eq!(
        consumers(&ch, &q2.name).await,
        1,
        "the open queue is consumed"
    );
    assert_eq!(consumers(&ch, &q.name).await, 0, "the paused queue is not");
    assert_eq!(waiting(&ch, &q.name).await, 3, "still in the broker");
    assert!(svc.list("batchID=paused").await.is_empty());
    // The broker tells the queue depth; readiness checks the broker.
    assert_eq!(depth(&svc, &q.name).await, Some(3));
    let ready: Value = svc.get_json("/health/ready").await;
    assert_eq!(ready["status"], "UP", "{ready}");
    assert_eq!(ready["checks"]["queue"]["backend"], "amqp", "{ready}");

    std::fs::write(cfg.join("99-test.ldif"), q.ldif("")).unwrap();
    let r = svc.http.post(svc.url("/ctrl/reload")).send().await.unwrap();
    assert_eq!(r.status(), 204);
    let l = wait_listed(&svc, "batchID=paused", 3).await;
    assert!(l.iter().all(|t| t["status"] == "COMPLETED"), "{l:?}");
    assert_arrived(&rcv, &files);
    assert_eq!(depth(&svc, &q.name).await, Some(0));
    svc.stop().await;
    q.delete(&ch).await;
    q2.delete(&ch).await;
}

/// `stow_exporter_queue_depth{queue="<queue>"}` from `/metrics`.
async fn depth(svc: &Service, queue: &str) -> Option<u64> {
    let text = svc
        .http
        .get(format!("http://{}/metrics", svc.addr))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let prefix = format!("stow_exporter_queue_depth{{queue=\"{queue}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map(|v| v.parse().unwrap())
}

/// Triggers a study export due `seconds` from now (it waits in `.hold`
/// until then); returns the task ID.
async fn export_later(svc: &Service, exporter: &str, study_uid: &str, seconds: i64) -> String {
    let at = chrono::Local::now() + chrono::Duration::seconds(seconds);
    let r = svc
        .http
        .post(svc.url(&format!(
            "/aets/{AET}/rs/studies/{study_uid}/export/{exporter}?scheduledTime={}",
            at.format("%Y%m%d%H%M%S")
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let t: Value = r.json().await.unwrap();
    t["taskID"].as_str().unwrap().to_string()
}

/// Polls the task until `cond` holds for it.
async fn wait_task(svc: &Service, id: &str, what: &str, cond: impl Fn(&Value) -> bool) -> Value {
    eventually(Duration::from_secs(15), || async {
        let t = svc.task(id).await;
        if cond(&t) {
            Ok(t)
        } else {
            Err(format!("never {what}: {t}"))
        }
    })
    .await
}

#[tokio::test]
async fn reschedule_and_delete_travel_over_the_broker() {
    let tmp = tempfile::tempdir().unwrap();
    let (q, q2) = (TestQueue::new(), TestQueue::new());
    // One instance; the destination refuses the first request and the
    // queue allows no retry, so the task ends FAILED.
    let (port, times) = flaky(&tmp.path().join("received"), 1, None).await;
    let ldif = format!("{}{}", q.ldif("dcmMaxRetries: 0\n"), q2.ldif(""));
    let cfg = write_config(tmp.path(), port, &ldif);
    let (study_uid, files) = study(&tmp.path().join("src"), 1, 32);
    // Exported by the control task at the end, which must run.
    let (control_uid, control_files) = study(&tmp.path().join("control"), 1, 32);
    let data = tmp.path().join("data");
    import(&data, &files).await;
    import(&data, &control_files).await;
    let (_conn, ch) = client(&amqp_url()).await;
    let svc = start(&cfg, &data).await;

    let t = svc.export_study(&q.exporter, &study_uid).await;
    let id = t["taskID"].as_str().unwrap().to_string();
    let failed = svc.wait_done(&id).await;
    assert_eq!(failed["status"], "FAILED", "{failed}");
    assert_eq!(times.lock().unwrap().len(), 1);

    // Reschedule: the task travels again in a new message on its queue and
    // now completes; the record is the same one.
    let path = format!("/monitor/export/{id}/reschedule");
    assert_eq!(svc.call(Method::POST, &path).await, 204);
    let done = wait_task(&svc, &id, "COMPLETED again", |t| t["status"] == "COMPLETED").await;
    assert_eq!(done["ExporterID"], q.exporter.as_str());
    assert_eq!(times.lock().unwrap().len(), 2, "one more request");
    assert_eq!(
        sop_uid(&walk(&tmp.path().join("received"))[0]),
        sop_uid(&files[0])
    );

    // Reschedule to another exporter, a moment ahead: the message waits in
    // the other queue's .hold and runs there when due.
    let soon = chrono::Local::now() + chrono::Duration::seconds(2);
    let path = format!(
        "/monitor/export/{id}/reschedule/{}?scheduledTime={}",
        q2.exporter,
        soon.format("%Y%m%d%H%M%S")
    );
    assert_eq!(svc.call(Method::POST, &path).await, 204);
    let moved = svc.task(&id).await;
    assert_eq!(moved["status"], "SCHEDULED", "{moved}");
    assert_eq!(moved["ExporterID"], q2.exporter.as_str());
    assert_eq!(moved["queue"], q2.name.as_str(), "{moved}");
    let started = Instant::now();
    while waiting(&ch, &format!("{}.hold", q2.name)).await == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "never held in {}.hold",
            q2.name
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(times.lock().unwrap().len(), 2, "not due yet");
    let done = wait_task(&svc, &id, "done on the other exporter", |t| {
        matches!(t["status"].as_str(), Some("COMPLETED" | "WARNING"))
    })
    .await;
    assert_eq!(done["ExporterID"], q2.exporter.as_str());
    assert_eq!(times.lock().unwrap().len(), 3);
    assert_eq!(
        waiting(&ch, &q.name).await,
        0,
        "nothing left on the first queue"
    );

    // Delete a task whose message waits in .hold: when the message comes
    // back it is acknowledged without running, and no record reappears.
    let held = format!(
        "/monitor/export/{}",
        export_later(&svc, &q2.exporter, &study_uid, 2).await
    );
    assert_eq!(svc.call(Method::DELETE, &held).await, 204);
    assert_eq!(svc.call(Method::GET, &held).await, 404);
    // A control task on the same queue, due no sooner, triggered after the
    // delete: its message travels behind the deleted task's (through
    // <queue>, then <queue>.hold, which expires messages in order from its
    // head, then back), and the queue's one consumer (prefetch 1) settles
    // deliveries one at a time. Once the control task has ended, the
    // deleted task's message has come back and been dealt with.
    let control = export_later(&svc, &q2.exporter, &control_uid, 2).await;
    let done = svc.wait_done(&control).await;
    assert_eq!(done["status"], "COMPLETED", "the control task ran: {done}");
    assert_eq!(
        times.lock().unwrap().len(),
        4,
        "the deleted task never ran: one more request, the control task's"
    );
    assert!(
        walk(&tmp.path().join("received"))
            .iter()
            .any(|f| sop_uid(f) == sop_uid(&control_files[0])),
        "that request was the control task's"
    );
    for name in [q2.name.clone(), format!("{}.hold", q2.name)] {
        assert_eq!(waiting(&ch, &name).await, 0, "{name} is empty");
    }
    let all = svc.list(&format!("StudyInstanceUID={study_uid}")).await;
    assert_eq!(
        all.len(),
        1,
        "only the rescheduled task is on record: {all:?}"
    );
    svc.stop().await;
    q.delete(&ch).await;
    q2.delete(&ch).await;
}
