//! The behaviour every [`TaskStore`] must show (its contract, documented on
//! the trait), independent of the backend: [`contract`] takes a
//! constructor and runs each check on a fresh store. The SQLite store runs
//! it below, on a real database in a temporary directory; the PostgreSQL
//! store on a fresh database per check (`common/postgres.rs`). The schema
//! versioning of both stores is checked here too.

use std::path::PathBuf;
use std::sync::Arc;

use chrono::{Duration, Utc};
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use stow_exporter::outcome::{InstanceResult, InstanceStatus, Outcome};
use stow_exporter::queue::postgres::{self as postgres_store, SCHEMA_VERSION as PG_SCHEMA_VERSION};
use stow_exporter::queue::{
    self, CancelResult, NewTask, OpenQueue, OrderField, PgStore, QueueError, QueueOptions,
    RecordInit, Reschedule, RescheduleTo, Role, SQLITE_SCHEMA_VERSION, SqliteStore, TaskFilter,
    TaskOrder, TaskStore, TimeRange,
};
use stow_exporter::task::{Counts, Status, TaskRequest};

#[path = "common/postgres.rs"]
mod postgres;

/// Makes a fresh, empty store; given a fresh directory it may use.
pub type OpenStore = fn(PathBuf) -> BoxFuture<'static, Fresh>;

/// A fresh store, and what must live as long as it does (a database that
/// is dropped after the check).
pub struct Fresh {
    pub store: Arc<dyn TaskStore>,
    pub keep: Box<dyn Send>,
}

impl Fresh {
    /// A store that needs nothing kept beside it.
    fn store(store: Arc<dyn TaskStore>) -> Fresh {
        Fresh {
            store,
            keep: Box::new(()),
        }
    }
}

const DEVICE: &str = "dev";

#[tokio::test]
async fn the_sqlite_store_keeps_the_contract() {
    contract(|dir| {
        async move {
            let s = SqliteStore::open(&dir, DEVICE, true).await.unwrap();
            Fresh::store(Arc::new(s))
        }
        .boxed()
    })
    .await;
}

#[tokio::test]
async fn the_store_queue_open_hands_out_keeps_the_contract_too() {
    // What `serve` and `export` get (the API reads through it).
    contract(|dir| {
        async move {
            let at = OpenQueue {
                data_dir: &dir,
                device_name: DEVICE,
                role: Role::Workers,
                options: &QueueOptions::default(),
                broker: None,
                database: None,
            };
            Fresh::store(queue::open(at).await.unwrap().store)
        }
        .boxed()
    })
    .await;
}

#[tokio::test]
async fn the_postgres_store_keeps_the_contract() {
    contract(|_dir| {
        async move {
            let db = postgres::TestDatabase::create().await;
            let s = PgStore::connect(db.url(), DEVICE, &QueueOptions::default())
                .await
                .unwrap();
            Fresh {
                store: Arc::new(s),
                keep: Box::new(db),
            }
        }
        .boxed()
    })
    .await;
}

/// The rows of a PostgreSQL store's `schema_version` table.
async fn pg_versions(url: &str) -> Vec<(i64, chrono::DateTime<Utc>)> {
    postgres::client(url)
        .await
        .query(
            "SELECT version, applied_time FROM schema_version ORDER BY version",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

#[tokio::test]
async fn a_postgres_database_is_migrated_forward_and_a_newer_one_refused() {
    let db = postgres::TestDatabase::create().await;
    let options = QueueOptions::default();
    // An empty database is brought to this version, step by step.
    let s = PgStore::connect(db.url(), DEVICE, &options).await.unwrap();
    let versions = pg_versions(db.url()).await;
    let numbers: Vec<i64> = versions.iter().map(|v| v.0).collect();
    assert_eq!(numbers, (1..=PG_SCHEMA_VERSION).collect::<Vec<_>>());
    let id = insert(&s, "E", "1.1").await;
    drop(s);

    // A newer version of the code migrates this (older) database, keeping
    // its records.
    let newer: Vec<postgres_store::Migration> = [
        postgres_store::MIGRATIONS,
        &["ALTER TABLE task ADD COLUMN note TEXT"],
    ]
    .concat();
    let s = PgStore::connect_with_migrations(db.url(), DEVICE, &options, &newer)
        .await
        .unwrap();
    assert_eq!(s.get(&id).await.unwrap().study_iuid, "1.1");
    let after = pg_versions(db.url()).await;
    assert_eq!(after.len() as i64, PG_SCHEMA_VERSION + 1);
    assert_eq!(
        after[..versions.len()],
        versions[..],
        "old steps not run again"
    );
    drop(s);

    // This version refuses the database the newer one migrated, naming both.
    let e = PgStore::connect(db.url(), DEVICE, &options)
        .await
        .expect_err("a newer schema is refused");
    match &e {
        QueueError::SchemaTooNew {
            found, supported, ..
        } => assert_eq!(
            (*found, *supported),
            (PG_SCHEMA_VERSION + 1, PG_SCHEMA_VERSION)
        ),
        other => panic!("{other:?}"),
    }
    let m = e.to_string();
    assert!(
        m.contains(&format!("schema version {}", PG_SCHEMA_VERSION + 1))
            && m.contains(&format!("version {PG_SCHEMA_VERSION} that this")),
        "{m}"
    );
    assert_eq!(pg_versions(db.url()).await, after, "nothing changed");
}

#[tokio::test]
async fn opening_an_up_to_date_postgres_database_changes_nothing() {
    let db = postgres::TestDatabase::create().await;
    let options = QueueOptions::default();
    let s = PgStore::connect(db.url(), DEVICE, &options).await.unwrap();
    let id = insert(&s, "E", "1.1").await;
    let before = pg_versions(db.url()).await;
    // Two processes opening together: each step runs once.
    let (a, b) = tokio::join!(
        PgStore::connect(db.url(), DEVICE, &options),
        PgStore::connect(db.url(), "other", &options)
    );
    a.unwrap();
    b.unwrap();
    assert_eq!(pg_versions(db.url()).await, before);
    assert_eq!(s.get(&id).await.unwrap().study_iuid, "1.1");
}

#[tokio::test]
async fn two_postgres_stores_on_one_database_share_one_view() {
    let db = postgres::TestDatabase::create().await;
    let options = QueueOptions::default();
    // Two devices, each with its own pool: two processes on one database.
    let (a, b) = tokio::join!(
        PgStore::connect(db.url(), "dev-a", &options),
        PgStore::connect(db.url(), "dev-b", &options)
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    let on = |device: &str, study: &str, status| RecordInit {
        status,
        ..RecordInit::scheduled(NewTask {
            device_name: device.into(),
            ..new_task("E", study, Some("shared"))
        })
    };
    let a_running = a
        .insert(on("dev-a", "1.1", Status::InProcess))
        .await
        .unwrap()
        .task_id;
    let a_waiting = a
        .insert(on("dev-a", "1.2", Status::Scheduled))
        .await
        .unwrap()
        .task_id;
    let b_running = b
        .insert(on("dev-b", "1.3", Status::InProcess))
        .await
        .unwrap()
        .task_id;

    for s in [&a, &b] {
        assert_eq!(s.count(filter()).await.unwrap(), 3, "one set of records");
        let batches = s.batches(filter()).await.unwrap();
        assert_eq!(batches.len(), 1);
        assert_eq!(batches[0].device_names, ["dev-a", "dev-b"]);
    }
    // What one writes the other reads at once.
    assert_eq!(b.cancel(&a_waiting).await.unwrap(), CancelResult::Canceled);
    assert_eq!(a.get(&a_waiting).await.unwrap().status, Status::Canceled);
    b.record_instances(&a_running, vec![result("9", InstanceStatus::Completed)])
        .await
        .unwrap();
    assert_eq!(a.instance_result_count(&a_running).await.unwrap(), 1);
    // Each device returns only its own unfinished tasks.
    assert_eq!(a.requeue_unfinished().await.unwrap(), 1);
    assert_eq!(b.get(&a_running).await.unwrap().status, Status::Scheduled);
    assert_eq!(a.get(&b_running).await.unwrap().status, Status::InProcess);
    let mut counts = b.status_counts("dev-b").await.unwrap();
    counts.sort();
    assert_eq!(counts, vec![("Q".into(), "IN PROCESS".into(), 1)]);
}

#[tokio::test]
async fn a_postgres_password_never_appears_in_an_error() {
    let secret = "s3cr3t-Pa55";
    let options = QueueOptions::default();
    for (url, shown) in [
        // Nothing listens on port 1: cannot connect.
        (
            format!("postgres://postgres:{secret}@127.0.0.1:1/x"),
            "postgres://postgres:****@127.0.0.1:1/x",
        ),
        (
            format!("postgres://postgres@127.0.0.1:1/x?password={secret}"),
            "postgres://****@127.0.0.1:1/x?password=****",
        ),
        (
            format!("host=127.0.0.1 port=1 user=postgres password={secret} dbname=x"),
            "host=127.0.0.1 port=1 user=postgres password=**** dbname=x",
        ),
        // Not a port: cannot parse.
        (
            format!("postgres://postgres:{secret}@127.0.0.1:port/x"),
            "postgres://postgres:****@127.0.0.1:port/x",
        ),
    ] {
        let e = PgStore::connect(&url, DEVICE, &options)
            .await
            .expect_err("cannot connect");
        let mut text = format!("{e} {e:?}");
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            text.push_str(&format!(" {s} {s:?}"));
            source = s.source();
        }
        assert!(!text.contains(secret), "{text}");
        assert!(text.contains(shown), "{text}");
        assert!(matches!(e, QueueError::Postgres { .. }), "{e:?}");
    }
}

/// Waits until a statement on database `name` waits for a lock (a row
/// another connection holds), at most 10 s.
async fn until_blocked(watch: &tokio_postgres::Client, name: &str) {
    for _ in 0..1000 {
        let n: i64 = watch
            .query_one(
                "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = $1 AND wait_event_type = 'Lock'",
                &[&name],
            )
            .await
            .unwrap()
            .get(0);
        if n > 0 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("no statement waited for the row lock within 10 s");
}

#[tokio::test]
async fn a_task_another_process_takes_meanwhile_is_neither_canceled_nor_deleted() {
    let db = postgres::TestDatabase::create().await;
    let s = PgStore::connect(db.url(), DEVICE, &QueueOptions::default())
        .await
        .unwrap();
    let watch = postgres::admin_client().await;
    // Another process takes the task (marks it IN PROCESS) in a transaction
    // it has not committed yet while the store decides on the same row.
    let mut taker = postgres::client(db.url()).await;
    let take = "UPDATE task SET status = 'IN PROCESS' WHERE pk = $1::bigint";

    let waiting = insert(&s, "A", "1.1").await;
    let pk: i64 = waiting.parse().unwrap();
    let tx = taker.transaction().await.unwrap();
    tx.execute(take, &[&pk]).await.unwrap();
    let store = s.clone();
    let id = waiting.clone();
    let cancel = tokio::spawn(async move { store.cancel(&id).await });
    until_blocked(&watch, db.name()).await;
    tx.commit().await.unwrap();
    assert_eq!(
        cancel.await.unwrap().unwrap(),
        CancelResult::Running,
        "the take came first: the cancel sees it running"
    );
    assert_eq!(s.get(&waiting).await.unwrap().status, Status::InProcess);

    let waiting = insert(&s, "B", "1.2").await;
    let pk: i64 = waiting.parse().unwrap();
    let tx = taker.transaction().await.unwrap();
    tx.execute(take, &[&pk]).await.unwrap();
    let store = s.clone();
    let delete = tokio::spawn(async move {
        store
            .delete_matching(TaskFilter {
                exporter_ids: vec!["B".into()],
                ..filter()
            })
            .await
    });
    until_blocked(&watch, db.name()).await;
    tx.commit().await.unwrap();
    assert_eq!(
        delete.await.unwrap().unwrap(),
        (0, 1),
        "taken while the delete waited: kept"
    );
    assert_eq!(s.get(&waiting).await.unwrap().status, Status::InProcess);
}

/// The rows of `queue.sqlite`'s `schema_version` table.
fn sqlite_versions(dir: &std::path::Path) -> Vec<(i64, String)> {
    let c = rusqlite::Connection::open(dir.join("queue.sqlite")).unwrap();
    let mut st = c
        .prepare("SELECT version, applied_time FROM schema_version ORDER BY version")
        .unwrap();
    st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[tokio::test]
async fn the_sqlite_store_is_versioned_without_breaking_older_files() {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(dir.path(), DEVICE, true).await.unwrap();
    let id = insert(&s, "E", "1.1").await;
    drop(s);
    let versions = sqlite_versions(dir.path());
    assert_eq!(versions.len() as i64, SQLITE_SCHEMA_VERSION);

    // Opening it again changes nothing.
    let s = SqliteStore::open(dir.path(), DEVICE, true).await.unwrap();
    drop(s);
    assert_eq!(sqlite_versions(dir.path()), versions);

    // A file from before versioning (no schema_version table) is version 1.
    let c = rusqlite::Connection::open(dir.path().join("queue.sqlite")).unwrap();
    c.execute_batch("DROP TABLE schema_version").unwrap();
    drop(c);
    let s = SqliteStore::open(dir.path(), DEVICE, true).await.unwrap();
    assert_eq!(s.get(&id).await.unwrap().study_iuid, "1.1", "records kept");
    drop(s);
    let numbers: Vec<i64> = sqlite_versions(dir.path()).iter().map(|v| v.0).collect();
    assert_eq!(numbers, (1..=SQLITE_SCHEMA_VERSION).collect::<Vec<_>>());

    // A file a newer version migrated is refused, naming both versions.
    let newer = SQLITE_SCHEMA_VERSION + 1;
    let c = rusqlite::Connection::open(dir.path().join("queue.sqlite")).unwrap();
    c.execute(
        "INSERT INTO schema_version (version, applied_time) VALUES (?1, 'later')",
        [newer],
    )
    .unwrap();
    drop(c);
    let e = SqliteStore::open(dir.path(), DEVICE, true)
        .await
        .err()
        .expect("a newer schema is refused");
    match &e {
        QueueError::SchemaTooNew {
            database,
            found,
            supported,
        } => {
            assert_eq!((*found, *supported), (newer, SQLITE_SCHEMA_VERSION));
            assert!(database.ends_with("queue.sqlite"), "{database}");
        }
        other => panic!("{other:?}"),
    }
    let m = e.to_string();
    assert!(
        m.contains(&format!("schema version {newer}"))
            && m.contains(&format!("version {SQLITE_SCHEMA_VERSION} that this")),
        "{m}"
    );
}

/// One check of the contract, given a fresh store.
type Check = fn(Arc<dyn TaskStore>) -> BoxFuture<'static, ()>;

/// Runs every check of the contract, each on a store of its own.
pub async fn contract(open: OpenStore) {
    let checks: &[(&str, Check)] = &[
        ("insert and get", |s| insert_and_get(s).boxed()),
        ("unknown IDs", |s| unknown_ids(s).boxed()),
        ("list filters", |s| list_filters(s).boxed()),
        ("list order and paging", |s| {
            list_order_and_paging(s).boxed()
        }),
        ("count and status counts", |s| counts(s).boxed()),
        ("batches", |s| batches(s).boxed()),
        ("cancel", |s| cancel(s).boxed()),
        ("outcome", |s| outcome(s).boxed()),
        ("reschedule resets", |s| reschedule_resets(s).boxed()),
        ("in process conflicts", |s| in_process_conflicts(s).boxed()),
        ("delete", |s| delete(s).boxed()),
        ("instance results", |s| instance_results(s).boxed()),
        ("requeue unfinished", |s| requeue_unfinished(s).boxed()),
    ];
    for (name, check) in checks {
        let dir = tempfile::tempdir().unwrap();
        let Fresh { store, keep } = open(dir.path().to_path_buf()).await;
        eprintln!("task store contract: {name}");
        check(store).await;
        drop(keep);
    }
}

fn new_task(exporter: &str, study: &str, batch: Option<&str>) -> NewTask {
    NewTask {
        request: TaskRequest {
            exporter_id: exporter.into(),
            study_iuid: study.into(),
            series_iuid: None,
            sop_iuid: None,
            batch_id: batch.map(str::to_string),
            scheduled_time: None,
        },
        device_name: DEVICE.into(),
        queue: "Q".into(),
        local_aet: Some("AET".into()),
    }
}

async fn insert(s: &dyn TaskStore, exporter: &str, study: &str) -> String {
    s.insert(RecordInit::scheduled(new_task(exporter, study, None)))
        .await
        .unwrap()
        .task_id
}

/// A record IN PROCESS, as a delivery that took it leaves it.
async fn insert_running(s: &dyn TaskStore, study: &str) -> String {
    s.insert(RecordInit {
        status: Status::InProcess,
        ..RecordInit::scheduled(new_task("E", study, None))
    })
    .await
    .unwrap()
    .task_id
}

/// The one place this suite builds an instance result.
fn result(sop: &str, status: InstanceStatus) -> InstanceResult {
    InstanceResult {
        sop_iuid: sop.into(),
        status,
        reason: (status != InstanceStatus::Completed).then(|| "why".into()),
        // A store keeps the words, not the kind (see InstanceResult::kind).
        kind: None,
        retry: Default::default(),
    }
}

fn failed_outcome() -> Outcome {
    Outcome {
        status: Status::Failed,
        message: "Export failed".into(),
        error: Some("503".into()),
        counts: Counts {
            failed: 2,
            ..Counts::default()
        },
        number_of_instances: 2,
        retry: Default::default(),
    }
}

fn filter() -> TaskFilter {
    TaskFilter::default()
}

async fn ids(s: &dyn TaskStore, f: TaskFilter) -> Vec<String> {
    s.list(f)
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.task_id)
        .collect()
}

async fn insert_and_get(s: Arc<dyn TaskStore>) {
    let before = Utc::now() - Duration::seconds(1);
    let t = s
        .insert(RecordInit::scheduled(new_task("E", "1.2.3", Some("b"))))
        .await
        .unwrap();
    assert_eq!(t.status, Status::Scheduled);
    assert_eq!(t.exporter_id, "E");
    assert_eq!(t.study_iuid, "1.2.3");
    assert_eq!(t.series_iuid, "*", "an entity level not given is *");
    assert_eq!(t.sop_iuid, "*");
    assert_eq!(t.batch_id.as_deref(), Some("b"));
    assert_eq!(t.device_name, DEVICE);
    assert_eq!(t.queue, "Q");
    assert_eq!(t.local_aet.as_deref(), Some("AET"));
    assert_eq!(t.failures, 0);
    assert!(t.created_time >= before && t.scheduled_time >= before);
    assert!(t.processing_start_time.is_none() && t.processing_end_time.is_none());
    assert_eq!(s.get(&t.task_id).await.unwrap(), t);

    // Due later when the request says so.
    let at = Utc::now() + Duration::hours(1);
    let mut later = new_task("E", "1.2.4", None);
    later.request.scheduled_time = Some(at);
    let l = s.insert(RecordInit::scheduled(later)).await.unwrap();
    assert!((l.scheduled_time - at).num_milliseconds().abs() <= 1);
    assert_ne!(l.task_id, t.task_id, "IDs are unique");

    // A record created FAILED has ended, with its messages.
    let f = s
        .insert(RecordInit {
            status: Status::Failed,
            failure: Some(queue::RecordFailure {
                outcome: "rejected".into(),
                error: "malformed".into(),
            }),
            message_id: Some("m-1".into()),
            ..RecordInit::scheduled(new_task("E", "1.2.5", None))
        })
        .await
        .unwrap();
    assert_eq!(f.status, Status::Failed);
    assert_eq!(f.failures, 1);
    assert_eq!(f.outcome_message.as_deref(), Some("rejected"));
    assert_eq!(f.error_message.as_deref(), Some("malformed"));
    assert!(f.processing_end_time.is_some());
}

async fn unknown_ids(s: Arc<dyn TaskStore>) {
    let known = insert(s.as_ref(), "E", "1.2.3").await;
    for id in ["999999", "not-an-id", ""] {
        assert!(id != known);
        assert!(
            matches!(s.get(id).await, Err(QueueError::NotFound(_))),
            "{id}"
        );
        assert!(matches!(s.cancel(id).await, Err(QueueError::NotFound(_))));
        assert!(matches!(s.delete(id).await, Err(QueueError::NotFound(_))));
        let r = Reschedule {
            scheduled_time: Utc::now(),
            exporter: None,
        };
        assert!(matches!(
            s.reschedule(id, r).await,
            Err(QueueError::NotFound(_))
        ));
    }
}

async fn list_filters(s: Arc<dyn TaskStore>) {
    let s = s.as_ref();
    let a = insert(s, "A", "1.1").await;
    let b = insert(s, "B", "1.2").await;
    let c = s
        .insert(RecordInit::scheduled(new_task("C", "1.1", Some("batch"))))
        .await
        .unwrap()
        .task_id;
    let mut other = new_task("A", "1.3", None);
    other.device_name = "other".into();
    let d = s
        .insert(RecordInit::scheduled(other))
        .await
        .unwrap()
        .task_id;
    s.cancel(&b).await.unwrap();

    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    let all = sorted(ids(s, filter()).await);
    assert_eq!(
        all,
        sorted(vec![a.clone(), b.clone(), c.clone(), d.clone()])
    );
    let f = TaskFilter {
        exporter_ids: vec!["A".into(), "C".into()],
        ..filter()
    };
    assert_eq!(
        sorted(ids(s, f).await),
        sorted(vec![a.clone(), c.clone(), d.clone()]),
        "any of the exporters"
    );
    let f = TaskFilter {
        study_iuid: Some("1.1".into()),
        ..filter()
    };
    assert_eq!(sorted(ids(s, f).await), sorted(vec![a.clone(), c.clone()]));
    let f = TaskFilter {
        status: Some(Status::Canceled),
        ..filter()
    };
    assert_eq!(ids(s, f).await, vec![b.clone()]);
    let f = TaskFilter {
        batch_id: Some("batch".into()),
        ..filter()
    };
    assert_eq!(ids(s, f).await, vec![c.clone()]);
    let f = TaskFilter {
        device_name: Some("other".into()),
        ..filter()
    };
    assert_eq!(ids(s, f).await, vec![d.clone()]);
    let f = TaskFilter {
        exporter_ids: vec!["A".into()],
        device_name: Some(DEVICE.into()),
        ..filter()
    };
    assert_eq!(ids(s, f).await, vec![a.clone()], "filters combine");

    // Time ranges: from inclusive, to exclusive, either open.
    let now = Utc::now();
    let hour = Duration::hours(1);
    let range = |from, to| TimeRange { from, to };
    for (created, n) in [
        (range(Some(now - hour), None), 4),
        (range(None, Some(now + hour)), 4),
        (range(Some(now + hour), None), 0),
        (range(None, Some(now - hour)), 0),
    ] {
        let f = TaskFilter {
            created,
            ..filter()
        };
        assert_eq!(s.list(f).await.unwrap().len(), n, "created {created:?}");
    }
    let canceled = s.get(&b).await.unwrap().updated_time;
    let f = TaskFilter {
        updated: range(Some(canceled), Some(canceled + Duration::milliseconds(1))),
        status: Some(Status::Canceled),
        ..filter()
    };
    assert_eq!(ids(s, f).await, vec![b.clone()], "from is inclusive");
    let f = TaskFilter {
        updated: range(None, Some(canceled)),
        status: Some(Status::Canceled),
        ..filter()
    };
    assert!(ids(s, f).await.is_empty(), "to is exclusive");
}

async fn list_order_and_paging(s: Arc<dyn TaskStore>) {
    let s = s.as_ref();
    let now = Utc::now();
    let mut inserted = Vec::new();
    // Inserted out of schedule order: 2 h, 1 h, 3 h.
    for (study, hours) in [("1.2", 2), ("1.1", 1), ("1.3", 3)] {
        let mut t = new_task("E", study, None);
        t.request.scheduled_time = Some(now + Duration::hours(hours));
        inserted.push(s.insert(RecordInit::scheduled(t)).await.unwrap().task_id);
    }
    let (t2, t1, t3) = (
        inserted[0].clone(),
        inserted[1].clone(),
        inserted[2].clone(),
    );
    let by = |field, descending| TaskFilter {
        order: TaskOrder { field, descending },
        ..filter()
    };
    assert_eq!(
        ids(s, by(OrderField::ScheduledTime, false)).await,
        vec![t1.clone(), t2.clone(), t3.clone()]
    );
    assert_eq!(
        ids(s, by(OrderField::ScheduledTime, true)).await,
        vec![t3.clone(), t2.clone(), t1.clone()]
    );
    // Created in insertion order (ties by insertion order too).
    assert_eq!(
        ids(s, by(OrderField::CreatedTime, false)).await,
        inserted.clone()
    );
    // The default: newest update first, ties newest insertion first.
    let newest_first: Vec<String> = inserted.iter().rev().cloned().collect();
    assert_eq!(ids(s, filter()).await, newest_first);
    assert_eq!(
        "-updatedTime".parse::<TaskOrder>().unwrap(),
        TaskOrder::default()
    );
    assert!("size".parse::<TaskOrder>().is_err());
    // An update moves a task forward: the listing follows updatedTime
    // (the clock may not have moved since the inserts: ties stay possible).
    s.cancel(&t2).await.unwrap();
    let listed = s.list(filter()).await.unwrap();
    assert!(
        listed
            .windows(2)
            .all(|w| w[0].updated_time >= w[1].updated_time),
        "newest update first"
    );
    let canceled = listed.iter().find(|t| t.task_id == t2).unwrap();
    assert_eq!(canceled.updated_time, listed[0].updated_time);

    // Offset and limit apply after the order.
    let page = TaskFilter {
        offset: 1,
        limit: Some(1),
        ..by(OrderField::ScheduledTime, false)
    };
    assert_eq!(ids(s, page).await, vec![t2.clone()]);
    let rest = TaskFilter {
        offset: 1,
        ..by(OrderField::ScheduledTime, false)
    };
    assert_eq!(ids(s, rest).await, vec![t2.clone(), t3.clone()]);
    let none = TaskFilter {
        offset: 3,
        ..filter()
    };
    assert!(ids(s, none).await.is_empty());
}

async fn counts(s: Arc<dyn TaskStore>) {
    let s = s.as_ref();
    let a = insert(s, "A", "1.1").await;
    insert(s, "A", "1.2").await;
    insert(s, "B", "1.3").await;
    let mut elsewhere = new_task("A", "1.4", None);
    elsewhere.device_name = "other".into();
    elsewhere.queue = "Q2".into();
    s.insert(RecordInit::scheduled(elsewhere)).await.unwrap();
    s.cancel(&a).await.unwrap();

    assert_eq!(s.count(filter()).await.unwrap(), 4);
    let f = TaskFilter {
        exporter_ids: vec!["A".into()],
        // Paging and order do not change a count.
        offset: 2,
        limit: Some(1),
        order: TaskOrder {
            field: OrderField::CreatedTime,
            descending: false,
        },
        ..filter()
    };
    assert_eq!(s.count(f).await.unwrap(), 3);
    let f = TaskFilter {
        status: Some(Status::Scheduled),
        device_name: Some(DEVICE.into()),
        ..filter()
    };
    assert_eq!(s.count(f).await.unwrap(), 2);

    let mut rows = s.status_counts(DEVICE).await.unwrap();
    rows.sort();
    assert_eq!(
        rows,
        vec![
            ("Q".into(), "CANCELED".into(), 1),
            ("Q".into(), "SCHEDULED".into(), 2),
        ],
        "only this device's records, only pairs that have some"
    );
    assert!(s.status_counts("nobody").await.unwrap().is_empty());
}

async fn batches(s: Arc<dyn TaskStore>) {
    let s = s.as_ref();
    let add = |exporter: &'static str, batch: Option<&'static str>| async move {
        s.insert(RecordInit::scheduled(new_task(exporter, "1.1", batch)))
            .await
            .unwrap()
            .task_id
    };
    add("B", Some("b2")).await;
    add("A", None).await;
    let one = add("A", Some("b1")).await;
    add("C", Some("b1")).await;
    // b1 was updated last: it comes first.
    s.cancel(&one).await.unwrap();

    let list = s.batches(filter()).await.unwrap();
    let names: Vec<&str> = list.iter().map(|b| b.batch_id.as_str()).collect();
    assert_eq!(names, ["b1", "b2"], "tasks without a batch are left out");
    let b1 = &list[0];
    assert_eq!(b1.tasks.get("scheduled"), Some(&1));
    assert_eq!(b1.tasks.get("canceled"), Some(&1));
    assert_eq!(b1.tasks.values().sum::<u64>(), 2);
    assert_eq!(b1.exporter_ids, ["A", "C"]);
    assert_eq!(b1.device_names, [DEVICE]);
    assert!(b1.created_time_range[0] <= b1.created_time_range[1]);
    assert!(
        b1.processing_end_time_range.is_some(),
        "the canceled one ended"
    );
    assert!(list[1].processing_end_time_range.is_none());

    // Filtered, and paged by batch.
    let f = TaskFilter {
        exporter_ids: vec!["B".into()],
        ..filter()
    };
    let only: Vec<String> = s
        .batches(f)
        .await
        .unwrap()
        .into_iter()
        .map(|b| b.batch_id)
        .collect();
    assert_eq!(only, ["b2"]);
    let f = TaskFilter {
        offset: 1,
        limit: Some(1),
        ..filter()
    };
    let page: Vec<String> = s
        .batches(f)
        .await
        .unwrap()
        .into_iter()
        .map(|b| b.batch_id)
        .collect();
    assert_eq!(page, ["b2"]);
}

async fn cancel(s: Arc<dyn TaskStore>) {
    let s = s.as_ref();
    let waiting = insert(s, "E", "1.1").await;
    assert_eq!(s.cancel(&waiting).await.unwrap(), CancelResult::Canceled);
    let t = s.get(&waiting).await.unwrap();
    assert_eq!(t.status, Status::Canceled);
    assert!(t.processing_end_time.is_some());
    assert_eq!(
        s.cancel(&waiting).await.unwrap(),
        CancelResult::AlreadyDone(Status::Canceled)
    );

    // One waiting for a retry is canceled too.
    let retrying = insert(s, "E", "1.2").await;
    let later = Utc::now() + Duration::hours(1);
    let t = s
        .record_outcome(&retrying, failed_outcome(), Some(later))
        .await
        .unwrap();
    assert_eq!(t.status, Status::ScheduledForRetry);
    assert_eq!(s.cancel(&retrying).await.unwrap(), CancelResult::Canceled);

    // One running is the caller's to stop: nothing is written.
    let running = insert_running(s, "1.3").await;
    let before = s.get(&running).await.unwrap();
    assert_eq!(s.cancel(&running).await.unwrap(), CancelResult::Running);
    assert_eq!(s.get(&running).await.unwrap(), before);
}

async fn outcome(s: Arc<dyn TaskStore>) {
    let s = s.as_ref();
    let id = insert_running(s, "1.1").await;
    let ok = Outcome {
        status: Status::Completed,
        message: "Export done".into(),
        error: None,
        counts: Counts {
            completed: 3,
            ..Counts::default()
        },
        number_of_instances: 3,
        retry: Default::default(),
    };
    let t = s.record_outcome(&id, ok, None).await.unwrap();
    assert_eq!(t.status, Status::Completed);
    assert_eq!(t.completed, 3);
    assert_eq!(t.number_of_instances, Some(3));
    assert_eq!(t.failures, 0);
    assert_eq!(t.outcome_message.as_deref(), Some("Export done"));
    assert!(t.processing_end_time.is_some());
    assert_eq!(s.get(&id).await.unwrap(), t, "returned as stored");

    // A retry: SCHEDULED FOR RETRY, due then, a failure counted.
    let id = insert_running(s, "1.2").await;
    let at = Utc::now() + Duration::minutes(5);
    let t = s
        .record_outcome(&id, failed_outcome(), Some(at))
        .await
        .unwrap();
    assert_eq!(t.status, Status::ScheduledForRetry);
    assert!((t.scheduled_time - at).num_milliseconds().abs() <= 1);
    assert_eq!(t.failures, 1);
    assert_eq!(t.failed, 2);
    assert_eq!(t.error_message.as_deref(), Some("503"));
    let t = s.record_outcome(&id, failed_outcome(), None).await.unwrap();
    assert_eq!(t.status, Status::Failed);
    assert_eq!(t.failures, 2, "failures add up");
    assert!(matches!(
        s.record_outcome("999999", failed_outcome(), None).await,
        Err(QueueError::NotFound(_))
    ));
}

async fn reschedule_resets(s: Arc<dyn TaskStore>) {
    let s = s.as_ref();
    let id = insert(s, "E", "1.1").await;
    s.record_instances(
        &id,
        vec![
            result("1", InstanceStatus::Failed),
            result("2", InstanceStatus::Failed),
        ],
    )
    .await
    .unwrap();
    s.record_outcome(&id, failed_outcome(), None).await.unwrap();

    let at = Utc::now() + Duration::hours(1);
    let t = s
        .reschedule(
            &id,
            Reschedule {
                scheduled_time: at,
                exporter: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(t.task_id, id, "the same record runs again");
    assert_eq!(t.status, Status::Scheduled);
    assert!((t.scheduled_time - at).num_milliseconds().abs() <= 1);
    assert_eq!(t.failures, 0);
    assert_eq!(t.outcome_message, None);
    assert_eq!(t.error_message, None);
    assert_eq!(t.number_of_instances, None);
    assert_eq!((t.completed, t.warning, t.failed, t.missing), (0, 0, 0, 0));
    assert!(t.processing_start_time.is_none() && t.processing_end_time.is_none());
    assert_eq!((t.exporter_id.as_str(), t.queue.as_str()), ("E", "Q"));
    assert_eq!(t.local_aet.as_deref(), Some("AET"));
    assert_eq!(
        s.instance_result_count(&id).await.unwrap(),
        0,
        "the whole entity is sent again"
    );
    assert_eq!(s.get(&id).await.unwrap(), t);

    // To another exporter: its ID, queue and AE title.
    let t = s
        .reschedule(
            &id,
            Reschedule {
                scheduled_time: Utc::now(),
                exporter: Some(RescheduleTo {
                    exporter_id: "E2".into(),
                    queue: "Q2".into(),
                    local_aet: None,
                }),
            },
        )
        .await
        .unwrap();
    assert_eq!((t.exporter_id.as_str(), t.queue.as_str()), ("E2", "Q2"));
    assert_eq!(t.local_aet, None);
}

async fn in_process_conflicts(s: Arc<dyn TaskStore>) {
    let s = s.as_ref();
    let running = insert_running(s, "1.1").await;
    let before = s.get(&running).await.unwrap();
    assert_eq!(before.status, Status::InProcess);
    assert!(before.processing_start_time.is_some());
    let r = Reschedule {
        scheduled_time: Utc::now(),
        exporter: None,
    };
    match s.reschedule(&running, r).await {
        Err(QueueError::Conflict(m)) => assert!(m.contains("IN PROCESS"), "{m}"),
        other => panic!("reschedule of a running task: {other:?}"),
    }
    match s.delete(&running).await {
        Err(QueueError::Conflict(m)) => assert!(m.contains("IN PROCESS"), "{m}"),
        other => panic!("delete of a running task: {other:?}"),
    }
    assert_eq!(s.get(&running).await.unwrap(), before, "nothing changed");
}

async fn requeue_unfinished(s: Arc<dyn TaskStore>) {
    let s = s.as_ref();
    let a = insert_running(s, "1.1").await;
    let b = insert_running(s, "1.2").await;
    let waiting = insert(s, "E", "1.3").await;
    // Another device's running task is that device's to return.
    let other = s
        .insert(RecordInit {
            status: Status::InProcess,
            ..RecordInit::scheduled(NewTask {
                device_name: "other".into(),
                ..new_task("E", "1.4", None)
            })
        })
        .await
        .unwrap()
        .task_id;
    assert_eq!(s.requeue_unfinished().await.unwrap(), 2);
    for id in [&a, &b, &waiting] {
        assert_eq!(s.get(id).await.unwrap().status, Status::Scheduled, "{id}");
    }
    assert_eq!(s.get(&other).await.unwrap().status, Status::InProcess);
    assert_eq!(s.requeue_unfinished().await.unwrap(), 0, "nothing twice");
}

async fn delete(s: Arc<dyn TaskStore>) {
    let s = s.as_ref();
    let one = insert(s, "E", "1.1").await;
    s.record_instances(&one, vec![result("1", InstanceStatus::Completed)])
        .await
        .unwrap();
    s.delete(&one).await.unwrap();
    assert!(matches!(s.get(&one).await, Err(QueueError::NotFound(_))));
    assert!(matches!(s.delete(&one).await, Err(QueueError::NotFound(_))));

    // Matching ones go, but not those IN PROCESS.
    let a = insert(s, "A", "1.2").await;
    let b = insert(s, "A", "1.3").await;
    s.cancel(&b).await.unwrap();
    let running = s
        .insert(RecordInit {
            status: Status::InProcess,
            ..RecordInit::scheduled(new_task("A", "1.4", None))
        })
        .await
        .unwrap()
        .task_id;
    let kept = insert(s, "B", "1.5").await;
    let f = TaskFilter {
        exporter_ids: vec!["A".into()],
        // Paging does not limit a bulk delete.
        limit: Some(1),
        ..filter()
    };
    assert_eq!(s.delete_matching(f).await.unwrap(), (2, 1));
    for gone in [&a, &b] {
        assert!(matches!(s.get(gone).await, Err(QueueError::NotFound(_))));
    }
    let mut left = ids(s, filter()).await;
    left.sort();
    let mut expected = vec![running.clone(), kept.clone()];
    expected.sort();
    assert_eq!(left, expected);
    assert_eq!(
        s.delete_matching(TaskFilter {
            status: Some(Status::Completed),
            ..filter()
        })
        .await
        .unwrap(),
        (0, 0)
    );
}

async fn instance_results(s: Arc<dyn TaskStore>) {
    let s = s.as_ref();
    let id = insert_running(s, "1.1").await;
    let other = insert_running(s, "1.2").await;
    assert_eq!(s.instance_result_count(&id).await.unwrap(), 0);
    assert!(s.instance_results(&id).await.unwrap().is_empty());
    s.record_instances(
        &id,
        vec![
            result("1", InstanceStatus::Completed),
            result("2", InstanceStatus::Failed),
        ],
    )
    .await
    .unwrap();
    s.record_instances(&other, vec![result("1", InstanceStatus::Missing)])
        .await
        .unwrap();
    assert_eq!(s.instance_result_count(&id).await.unwrap(), 2);
    // A later result of the same instance replaces the earlier one.
    s.record_instances(&id, vec![result("2", InstanceStatus::Warning)])
        .await
        .unwrap();
    let got = s.instance_results(&id).await.unwrap();
    assert_eq!(got.len(), 2);
    assert_eq!(s.instance_result_count(&id).await.unwrap(), 2);
    assert_eq!(got["1"].status, InstanceStatus::Completed);
    assert_eq!(got["1"].reason, None);
    assert_eq!(got["2"].status, InstanceStatus::Warning);
    assert_eq!(got["2"].reason.as_deref(), Some("why"));
    assert_eq!(got["2"].sop_iuid, "2");
    let theirs = s.instance_results(&other).await.unwrap();
    assert_eq!(theirs.len(), 1, "per task");
    assert_eq!(theirs["1"].status, InstanceStatus::Missing);
}
