//! The PostgreSQL delivery ([`PgQueue`]) on a real server, a fresh
//! database per test (`common/postgres.rs`): the embedded delivery's
//! semantics (order, holds, take counts and `max-deliveries`, hand back)
//! and what several processes on one database add: two instances never
//! take one task, a publish on one wakes the other's waiting worker by
//! notification, and a crashed instance's tasks go to the other once
//! requeued. Two instances are two `PgQueue`s with pools and listeners of
//! their own, as two processes have. Waits are on observable events
//! (a hold asked, the listener listening), each bounded.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use stow_exporter::outcome::Outcome;
use stow_exporter::queue::{
    Hold, NewTask, PgQueue, QueueOptions, RecordInit, Release, TaskDelivery, TaskFilter, TaskStore,
};
use stow_exporter::task::{Counts, ExportTask, Status, TaskRequest};
use tokio::sync::{mpsc, watch};

#[path = "common/postgres.rs"]
mod postgres;

use postgres::TestDatabase;

const DEVICE: &str = "dev";

/// How long any awaited event may take before the test fails.
const BOUND: Duration = Duration::from_secs(10);

fn new_task(exporter: &str, study: &str) -> NewTask {
    NewTask {
        request: TaskRequest {
            exporter_id: exporter.into(),
            study_iuid: study.into(),
            series_iuid: None,
            sop_iuid: None,
            batch_id: None,
            scheduled_time: None,
        },
        device_name: DEVICE.into(),
        queue: "Q".into(),
        local_aet: Some("AET".into()),
    }
}

fn completed() -> Outcome {
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
    }
}

async fn connect(db: &TestDatabase, options: &QueueOptions) -> PgQueue {
    PgQueue::connect(db.url(), DEVICE, options).await.unwrap()
}

/// The take count of a task (`None`: no row, i.e. cleared).
async fn takes(db: &TestDatabase, task_id: &str) -> Option<i32> {
    let pk: i64 = task_id.parse().unwrap();
    postgres::client(db.url())
        .await
        .query_opt("SELECT takes FROM task_take WHERE task_pk = $1", &[&pk])
        .await
        .unwrap()
        .map(|r| r.get(0))
}

async fn status(q: &PgQueue, task_id: &str) -> Status {
    q.store().get(task_id).await.unwrap().status
}

async fn next_within(q: &PgQueue) -> ExportTask {
    tokio::time::timeout(BOUND, q.next("Q", &Hold::none))
        .await
        .expect("a due task is taken")
        .unwrap()
}

/// A hold that can be changed while a worker waits, and reports each time
/// it is asked (each look at the queue).
#[derive(Clone)]
struct SharedHold {
    hold: Arc<Mutex<Hold>>,
    asked: mpsc::UnboundedSender<()>,
}

impl SharedHold {
    fn new(hold: Hold) -> (SharedHold, mpsc::UnboundedReceiver<()>) {
        let (asked, rx) = mpsc::unbounded_channel();
        (
            SharedHold {
                hold: Arc::new(Mutex::new(hold)),
                asked,
            },
            rx,
        )
    }

    fn ask(&self) -> Hold {
        let _ = self.asked.send(());
        self.hold.lock().unwrap().clone()
    }

    fn set(&self, hold: Hold) {
        *self.hold.lock().unwrap() = hold;
    }
}

/// Waits (bounded) until the hold was asked `n` more times.
async fn asked(rx: &mut mpsc::UnboundedReceiver<()>, n: usize) {
    for _ in 0..n {
        tokio::time::timeout(BOUND, rx.recv())
            .await
            .expect("the worker looks at the queue")
            .unwrap();
    }
}

/// `next` of `q` on a task of its own, with `hold`.
fn spawn_next(
    q: &PgQueue,
    hold: &SharedHold,
) -> tokio::task::JoinHandle<Result<ExportTask, stow_exporter::queue::QueueError>> {
    let q = q.clone();
    let hold = hold.clone();
    tokio::spawn(async move { q.next("Q", &move || hold.ask()).await })
}

#[tokio::test]
async fn publish_next_finish_and_a_retry() {
    let db = TestDatabase::create().await;
    let q = connect(&db, &QueueOptions::default()).await;
    assert_eq!(q.backend().as_str(), "postgres");
    q.health().await.unwrap();

    let t1 = q.publish(new_task("E", "1.1")).await.unwrap();
    let t2 = q.publish(new_task("E", "1.2")).await.unwrap();
    assert_eq!(t1.status, Status::Scheduled);

    let got = next_within(&q).await;
    assert_eq!(got.task_id, t1.task_id, "the oldest due task first");
    assert_eq!(got.status, Status::InProcess);
    assert!(got.processing_start_time.is_some());
    assert_eq!(takes(&db, &got.task_id).await, Some(1));

    let fin = q.finish(&got.task_id, completed(), None).await.unwrap();
    assert_eq!(fin.status, Status::Completed);
    assert_eq!(fin.completed, 1);
    assert_eq!(
        takes(&db, &got.task_id).await,
        None,
        "the outcome clears it"
    );

    // A retry due now is taken again.
    let got = next_within(&q).await;
    assert_eq!(got.task_id, t2.task_id);
    let mut failed = completed();
    failed.status = Status::Failed;
    let r = q
        .finish(&got.task_id, failed, Some(Utc::now()))
        .await
        .unwrap();
    assert_eq!(r.status, Status::ScheduledForRetry);
    assert_eq!(r.failures, 1);
    let again = next_within(&q).await;
    assert_eq!(again.task_id, t2.task_id);
    assert_eq!(again.status, Status::InProcess);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_racing_take_every_task_exactly_once() {
    const TASKS: usize = 200;
    const WORKERS: usize = 3;
    let db = TestDatabase::create().await;
    let a = connect(&db, &QueueOptions::default()).await;
    let b = connect(&db, &QueueOptions::default()).await;
    let mut published = HashSet::new();
    for i in 0..TASKS {
        let t = a.publish(new_task("E", &format!("1.{i}"))).await.unwrap();
        published.insert(t.task_id);
    }

    let taken: Arc<Mutex<Vec<(&'static str, String)>>> = Arc::default();
    let (done_tx, done_rx) = watch::channel(false);
    let done_tx = Arc::new(done_tx);
    let mut workers = Vec::new();
    for (name, q) in [("a", &a), ("b", &b)] {
        for _ in 0..WORKERS {
            let q = q.clone();
            let taken = taken.clone();
            let mut done = done_rx.clone();
            let done_tx = done_tx.clone();
            workers.push(tokio::spawn(async move {
                loop {
                    // Canceling a `next` is safe only once every task was
                    // taken: there is none left it could be taking.
                    let t = tokio::select! {
                        biased;
                        _ = done.wait_for(|d| *d) => break,
                        t = q.next("Q", &Hold::none) => t.unwrap(),
                    };
                    q.finish(&t.task_id, completed(), None).await.unwrap();
                    let mut all = taken.lock().unwrap();
                    all.push((name, t.task_id));
                    if all.len() >= TASKS {
                        done_tx.send_replace(true);
                    }
                }
            }));
        }
    }
    tokio::time::timeout(Duration::from_secs(120), async {
        for w in workers {
            w.await.unwrap();
        }
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "only {} of {TASKS} tasks were taken",
            taken.lock().unwrap().len()
        )
    });

    let taken = taken.lock().unwrap().clone();
    let ids: HashSet<String> = taken.iter().map(|(_, id)| id.clone()).collect();
    assert_eq!(taken.len(), TASKS, "no task taken twice");
    assert_eq!(ids, published, "every task taken");
    for name in ["a", "b"] {
        assert!(
            taken.iter().any(|(n, _)| *n == name),
            "instance {name} took none: no race was run"
        );
    }
    let done = a
        .store()
        .count(TaskFilter {
            status: Some(Status::Completed),
            ..TaskFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(done, TASKS as u64);
}

#[tokio::test]
async fn held_exporters_a_closed_queue_and_other_devices_are_skipped() {
    let db = TestDatabase::create().await;
    let q = connect(&db, &QueueOptions::default()).await;
    // The oldest task is another device's: never this one's to take.
    let mut theirs = new_task("E2", "9.9");
    theirs.device_name = "other".into();
    let other = q
        .store()
        .insert(RecordInit::scheduled(theirs))
        .await
        .unwrap();
    let t1 = q.publish(new_task("E1", "1.1")).await.unwrap();
    let t2 = q.publish(new_task("E2", "1.2")).await.unwrap();

    let (hold, mut looks) = SharedHold::new(Hold {
        queue_closed: false,
        exporters: vec!["E1".into()],
    });
    let got = spawn_next(&q, &hold).await.unwrap().unwrap();
    assert_eq!(got.task_id, t2.task_id, "E1's older task is held");
    asked(&mut looks, 1).await;

    // Asked twice: the first look found nothing it may take.
    let waiting = spawn_next(&q, &hold);
    asked(&mut looks, 2).await;
    assert_eq!(status(&q, &t1.task_id).await, Status::Scheduled);
    hold.set(Hold::none());
    let got = tokio::time::timeout(BOUND, waiting)
        .await
        .expect("taken once released")
        .unwrap()
        .unwrap();
    assert_eq!(got.task_id, t1.task_id);
    while looks.try_recv().is_ok() {}

    let t3 = q.publish(new_task("E1", "1.3")).await.unwrap();
    hold.set(Hold {
        queue_closed: true,
        exporters: Vec::new(),
    });
    let waiting = spawn_next(&q, &hold);
    asked(&mut looks, 2).await;
    assert_eq!(status(&q, &t3.task_id).await, Status::Scheduled);
    hold.set(Hold::none());
    let got = tokio::time::timeout(BOUND, waiting)
        .await
        .expect("taken once the queue opens")
        .unwrap()
        .unwrap();
    assert_eq!(got.task_id, t3.task_id);

    assert_eq!(status(&q, &other.task_id).await, Status::Scheduled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_on_one_instance_wakes_a_waiting_worker_of_another() {
    // B polls once a minute: only the notification can wake it in time.
    const SLOW_POLL: Duration = Duration::from_secs(60);
    const PROMPT: Duration = Duration::from_secs(5);
    let db = TestDatabase::create().await;
    let a = connect(&db, &QueueOptions::default()).await;
    let b = PgQueue::connect_with_poll(db.url(), DEVICE, &QueueOptions::default(), SLOW_POLL)
        .await
        .unwrap();
    tokio::time::timeout(BOUND, b.listening())
        .await
        .expect("B's listener listens");
    assert!(b.is_listening());

    // B's first look finds its queue closed, so it waits; every later look
    // finds it open.
    let (hold, mut looks) = SharedHold::new(Hold {
        queue_closed: true,
        exporters: Vec::new(),
    });
    let opener = hold.clone();
    let first_look = move || {
        let h = opener.ask();
        opener.set(Hold::none());
        h
    };
    let waiting = {
        let b = b.clone();
        tokio::spawn(async move { b.next("Q", &first_look).await })
    };
    asked(&mut looks, 1).await;

    let started = Instant::now();
    let t = a.publish(new_task("E", "1.1")).await.unwrap();
    let got = tokio::time::timeout(PROMPT, waiting)
        .await
        .expect("the notification woke B's worker (not the poll)")
        .unwrap()
        .unwrap();
    assert_eq!(got.task_id, t.task_id);
    assert!(started.elapsed() < PROMPT);

    // A reschedule on A wakes B too (redeliver).
    b.finish(&got.task_id, completed(), None).await.unwrap();
    // The first `next` returned after its second look: both are in.
    while looks.try_recv().is_ok() {}
    hold.set(Hold {
        queue_closed: true,
        exporters: Vec::new(),
    });
    let opener = hold.clone();
    let first_look = move || {
        let h = opener.ask();
        opener.set(Hold::none());
        h
    };
    let waiting = {
        let b = b.clone();
        tokio::spawn(async move { b.next("Q", &first_look).await })
    };
    asked(&mut looks, 1).await;
    let r = reschedule_on(&a, &t.task_id)
        .await
        .expect("rescheduled on A");
    let got = tokio::time::timeout(PROMPT, waiting)
        .await
        .expect("the reschedule's notification woke B's worker")
        .unwrap()
        .unwrap();
    assert_eq!(got.task_id, r.task_id);
}

/// The server processes of the test database that listen for tasks.
async fn listeners(db: &TestDatabase) -> HashSet<i32> {
    postgres::client(db.url())
        .await
        .query(
            "SELECT pid FROM pg_stat_activity
             WHERE datname = current_database() AND query = 'LISTEN stow_exporter_task'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listener_connects_again_when_its_connection_drops() {
    const SLOW_POLL: Duration = Duration::from_secs(60);
    const PROMPT: Duration = Duration::from_secs(5);
    let db = TestDatabase::create().await;
    let a = connect(&db, &QueueOptions::default()).await;
    let b = PgQueue::connect_with_poll(db.url(), DEVICE, &QueueOptions::default(), SLOW_POLL)
        .await
        .unwrap();
    for q in [&a, &b] {
        tokio::time::timeout(BOUND, q.listening())
            .await
            .expect("listening");
    }
    // The server ends both listeners' connections (a restart, an idle
    // timeout, an operator): each instance connects again by itself.
    let before = listeners(&db).await;
    assert_eq!(before.len(), 2, "{before:?}");
    let ended: i64 = postgres::admin_client()
        .await
        .query_one(
            "SELECT COUNT(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE pid = ANY($1)) t",
            &[&before.iter().copied().collect::<Vec<i32>>()],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(ended, 2);
    tokio::time::timeout(BOUND, async {
        loop {
            let now = listeners(&db).await;
            if now.len() == 2 && now.is_disjoint(&before) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("both listen again on new connections");
    tokio::time::timeout(BOUND, b.listening())
        .await
        .expect("B listens again");

    let (hold, mut looks) = SharedHold::new(Hold {
        queue_closed: true,
        exporters: Vec::new(),
    });
    let opener = hold.clone();
    let first_look = move || {
        let h = opener.ask();
        opener.set(Hold::none());
        h
    };
    let waiting = {
        let b = b.clone();
        tokio::spawn(async move { b.next("Q", &first_look).await })
    };
    asked(&mut looks, 1).await;
    let t = a.publish(new_task("E", "1.1")).await.unwrap();
    let got = tokio::time::timeout(PROMPT, waiting)
        .await
        .expect("the new listener's notification woke B's worker")
        .unwrap()
        .unwrap();
    assert_eq!(got.task_id, t.task_id);
}

/// What `Submit::reschedule` does on `q`: the store resets the record,
/// the delivery delivers it again.
async fn reschedule_on(
    q: &PgQueue,
    task_id: &str,
) -> Result<ExportTask, stow_exporter::queue::QueueError> {
    let t = q
        .store()
        .reschedule(
            task_id,
            stow_exporter::queue::Reschedule {
                scheduled_time: Utc::now(),
                exporter: None,
            },
        )
        .await?;
    q.redeliver(&t).await?;
    Ok(t)
}

#[tokio::test]
async fn a_task_taken_max_deliveries_times_without_an_outcome_ends_failed() {
    let db = TestDatabase::create().await;
    let options = QueueOptions {
        max_deliveries: 2,
        ..QueueOptions::default()
    };
    let q = connect(&db, &options).await;
    let t = q.publish(new_task("E", "1.1")).await.unwrap();
    let later = q.publish(new_task("E", "1.2")).await.unwrap();
    for run in 1..=2 {
        let got = next_within(&q).await;
        assert_eq!(got.task_id, t.task_id, "run {run}");
        assert_eq!(takes(&db, &t.task_id).await, Some(run));
        // Each run ends with the process: its restart requeues the task.
        assert_eq!(q.store().requeue_unfinished().await.unwrap(), 1);
    }
    let got = next_within(&q).await;
    assert_eq!(got.task_id, later.task_id, "the third take gives it up");
    let failed = q.store().get(&t.task_id).await.unwrap();
    assert_eq!(failed.status, Status::Failed);
    assert_eq!(failed.failures, 1);
    let error = failed.error_message.unwrap();
    assert!(
        error.starts_with("taken 2 times without an outcome") && error.contains("max-deliveries 2"),
        "{error}"
    );
    let outcome = failed.outcome_message.unwrap();
    assert!(
        outcome.starts_with("Export ") && outcome.contains(" failed: taken 2 times"),
        "{outcome}"
    );
    assert!(failed.processing_end_time.is_some());
    assert_eq!(takes(&db, &t.task_id).await, None);
}

#[tokio::test]
async fn a_release_at_shutdown_does_not_count_a_fault_does() {
    let db = TestDatabase::create().await;
    let options = QueueOptions {
        max_deliveries: 1,
        ..QueueOptions::default()
    };
    let q = connect(&db, &options).await;
    let t = q.publish(new_task("E", "1.1")).await.unwrap();
    let later = q.publish(new_task("E", "1.2")).await.unwrap();

    assert_eq!(next_within(&q).await.task_id, t.task_id);
    q.release(&t.task_id, Release::Shutdown).await;
    assert_eq!(status(&q, &t.task_id).await, Status::Scheduled);
    assert_eq!(takes(&db, &t.task_id).await, Some(0));
    // Not counted: the one take allowed is still there.
    assert_eq!(next_within(&q).await.task_id, t.task_id);

    q.release(&t.task_id, Release::Fault).await;
    assert_eq!(status(&q, &t.task_id).await, Status::Scheduled);
    assert_eq!(takes(&db, &t.task_id).await, Some(1));
    assert_eq!(next_within(&q).await.task_id, later.task_id);
    assert_eq!(status(&q, &t.task_id).await, Status::Failed);
}

#[tokio::test]
async fn a_restarted_instance_takes_back_its_own_unfinished_tasks_never_a_siblings() {
    let db = TestDatabase::create().await;
    let opts = QueueOptions::default();
    let a = connect(&db, &opts).await.with_instance("dev@host:1");
    let b = connect(&db, &opts).await.with_instance("dev@host:2");
    let t1 = a.publish(new_task("E", "1.1")).await.unwrap();
    assert_eq!(next_within(&a).await.task_id, t1.task_id);
    let t2 = b.publish(new_task("E", "1.2")).await.unwrap();
    assert_eq!(next_within(&b).await.task_id, t2.task_id);
    // A dies with its task IN PROCESS: nothing is handed back.
    drop(a);
    // B restarts: only its own task goes back; A's is A's.
    assert_eq!(b.store().requeue_unfinished().await.unwrap(), 1);
    assert_eq!(status(&b, &t2.task_id).await, Status::Scheduled);
    assert_eq!(status(&b, &t1.task_id).await, Status::InProcess);
    // A comes back under its name and takes back what it left.
    let a = connect(&db, &opts).await.with_instance("dev@host:1");
    assert_eq!(a.store().requeue_unfinished().await.unwrap(), 1);
    assert_eq!(status(&a, &t1.task_id).await, Status::Scheduled);
    let mut taken = vec![next_within(&a).await.task_id, next_within(&a).await.task_id];
    taken.sort();
    let mut want = vec![t1.task_id.clone(), t2.task_id.clone()];
    want.sort();
    assert_eq!(taken, want);
    assert_eq!(
        takes(&db, &t1.task_id).await,
        Some(2),
        "A's first run counted"
    );
    a.finish(&t1.task_id, completed(), None).await.unwrap();
    assert_eq!(status(&a, &t1.task_id).await, Status::Completed);
}
