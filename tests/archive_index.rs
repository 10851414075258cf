//! The behaviour every [`ArchiveIndex`] must show (its contract, documented
//! on the trait), independent of the backend: [`contract`] takes a
//! constructor and runs each check on a fresh index over a fresh storage
//! directory, with real files. The SQLite index and the PostgreSQL index
//! (a fresh database per check, see `common/postgres.rs`) run it below,
//! and the PostgreSQL index's schema migrations are checked.

#[path = "common/postgres.rs"]
mod postgres;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use stow_exporter::archive::{
    Archive, ArchiveIndex, Commit, EXPORT_CLAIM, Imported, IndexError, InstanceRecord,
    PendingExport, PgIndex, SqliteIndex, StoredInstance, StudyQuery,
};

/// Where to open an index.
#[derive(Debug, Clone)]
pub struct IndexAt {
    /// Names the index: opening the same `dir` again opens the same index
    /// (another process sharing it); a fresh `dir` an empty one. A backend
    /// may keep its files there.
    pub dir: PathBuf,
    /// The storage directory as this opener sees it (absolute, existing).
    pub storage: PathBuf,
}

/// Opens the index `at` names.
pub type OpenIndex = fn(IndexAt) -> BoxFuture<'static, Arc<dyn ArchiveIndex>>;

#[tokio::test]
async fn the_sqlite_index_keeps_the_contract() {
    contract(|at| {
        async move {
            let i = SqliteIndex::open(&at.dir.join("archive.sqlite"), at.storage)
                .await
                .unwrap();
            Arc::new(i) as Arc<dyn ArchiveIndex>
        }
        .boxed()
    })
    .await;
}

/// The database of each index directory the PostgreSQL contract opened:
/// a fresh one for a fresh directory, the same one when a check opens its
/// directory again (another process sharing the index). Dropped (with
/// their databases) when the test ends.
static PG_DATABASES: tokio::sync::Mutex<Option<HashMap<PathBuf, postgres::TestDatabase>>> =
    tokio::sync::Mutex::const_new(None);

#[tokio::test]
async fn the_postgres_index_keeps_the_contract() {
    contract(|at| {
        async move {
            let url = {
                let mut dbs = PG_DATABASES.lock().await;
                let dbs = dbs.get_or_insert_with(HashMap::new);
                if !dbs.contains_key(&at.dir) {
                    dbs.insert(at.dir.clone(), postgres::TestDatabase::create().await);
                }
                dbs[&at.dir].url().to_string()
            };
            let i = PgIndex::connect(&url, at.storage).await.unwrap();
            Arc::new(i) as Arc<dyn ArchiveIndex>
        }
        .boxed()
    })
    .await;
    let dbs = PG_DATABASES.lock().await.take();
    drop(dbs);
}

/// A fresh database gets the current schema, beside the task store's
/// tables; opening it again changes nothing; an index a newer version
/// migrated is refused with both versions named, the password masked.
#[tokio::test]
async fn the_postgres_index_migrates_and_refuses_a_newer_schema() {
    use stow_exporter::archive::postgres::{MIGRATIONS, SCHEMA_VERSION};
    let db = postgres::TestDatabase::create().await;
    let root = tempfile::tempdir().unwrap();
    let storage = std::fs::canonicalize(root.path()).unwrap();
    // The task store first: the two schemas share the database.
    stow_exporter::queue::postgres::PgStore::connect(
        db.url(),
        "dev",
        &stow_exporter::queue::QueueOptions::default(),
    )
    .await
    .unwrap();
    let ix = PgIndex::connect(db.url(), storage.clone()).await.unwrap();
    store(&ix, record("20", "20.1", "20.1.1", &CT, 3), b"abc").await;
    let c = postgres::client(db.url()).await;
    let versions = |table: &'static str| {
        let c = &c;
        async move {
            let v: Vec<i64> = c
                .query(
                    &format!("SELECT version FROM {table} ORDER BY version"),
                    &[],
                )
                .await
                .unwrap()
                .iter()
                .map(|r| r.get(0))
                .collect();
            v
        }
    };
    let current: Vec<i64> = (1..=SCHEMA_VERSION).collect();
    assert_eq!(versions("archive_schema_version").await, current);
    let task_store = versions("schema_version").await;
    assert_eq!(
        task_store.len() as i64,
        stow_exporter::queue::postgres::SCHEMA_VERSION
    );

    // Opened again: the same rows, nothing migrated twice.
    let again = PgIndex::connect(db.url(), storage.clone()).await.unwrap();
    assert_eq!(again.count().await.unwrap(), 1);
    assert_eq!(versions("archive_schema_version").await, current);

    // A newer version adds a step; this one refuses the database.
    let mut newer = MIGRATIONS.to_vec();
    newer.push("ALTER TABLE archive_instance ADD COLUMN later TEXT;");
    PgIndex::connect_with_migrations(db.url(), storage.clone(), &newer)
        .await
        .unwrap();
    let with_password = db.url().replacen("postgres@", "postgres:hunter2@", 1);
    let err = PgIndex::connect(&with_password, storage).await.unwrap_err();
    match &err {
        IndexError::SchemaTooNew {
            found, supported, ..
        } => {
            assert_eq!((*found, *supported), (SCHEMA_VERSION + 1, SCHEMA_VERSION));
        }
        other => panic!("expected SchemaTooNew, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("schema version {}", SCHEMA_VERSION + 1))
            && msg.contains(&format!("version {SCHEMA_VERSION} ")),
        "{msg}"
    );
    assert!(!msg.contains("hunter2"), "{msg}");
    // The task store is not affected by the index's version.
    assert_eq!(versions("schema_version").await, task_store);
}

/// A server that cannot be reached fails the open with the driver's
/// error, the URL in it with its password masked.
#[tokio::test]
async fn the_postgres_index_masks_the_password_in_errors() {
    let root = tempfile::tempdir().unwrap();
    // Port 1 on loopback: nothing listens there.
    let url = "postgres://stow:hunter2@127.0.0.1:1/db?connect_timeout=5";
    let err = PgIndex::connect(url, root.path().to_path_buf())
        .await
        .unwrap_err();
    assert!(matches!(err, IndexError::Postgres { .. }), "{err:?}");
    let msg = format!("{err} {err:?}");
    assert!(!msg.contains("hunter2"), "{msg}");
    assert!(msg.contains("127.0.0.1:1"), "{msg}");
    assert!(
        std::error::Error::source(&err).is_some(),
        "the driver error is the source"
    );
}

/// What a check gets: a fresh index, and how to open it again.
struct Env {
    index: Arc<dyn ArchiveIndex>,
    open: OpenIndex,
    at: IndexAt,
    /// A fresh directory outside storage the check may use.
    scratch: PathBuf,
}

/// One check of the contract.
type Check = fn(Env) -> BoxFuture<'static, ()>;

/// Runs every check of the contract, each on an index of its own.
pub async fn contract(open: OpenIndex) {
    let checks: &[(&str, Check)] = &[
        ("commit then look up", |e| commit_then_look_up(e).boxed()),
        ("pages", |e| pages(e).boxed()),
        ("duplicate refused", |e| duplicate_refused(e).boxed()),
        ("missing file restored", |e| {
            missing_file_restored(e).boxed()
        }),
        ("rename failure indexes nothing", |e| {
            rename_failure(e).boxed()
        }),
        ("orphan file replaced", |e| orphan_file_replaced(e).boxed()),
        ("relative paths", |e| relative_paths(e).boxed()),
        ("study query", |e| study_query(e).boxed()),
        ("counts", |e| counts(e).boxed()),
        ("concurrent commits of one SOP", |e| {
            concurrent_commits(e).boxed()
        }),
        ("the archive over it", |e| archive_over_it(e).boxed()),
        ("pending exports", |e| pending_exports(e).boxed()),
    ];
    for (name, check) in checks {
        let root = tempfile::tempdir().unwrap();
        let root_path = std::fs::canonicalize(root.path()).unwrap();
        let at = IndexAt {
            dir: root_path.join("index"),
            storage: root_path.join("storage"),
        };
        let scratch = root_path.join("scratch");
        for d in [&at.dir, &at.storage, &scratch] {
            std::fs::create_dir_all(d).unwrap();
        }
        let index = open(at.clone()).await;
        eprintln!("archive index contract: {name}");
        check(Env {
            index,
            open,
            at,
            scratch,
        })
        .await;
    }
}

/// A record with the attributes the study query looks at.
#[derive(Clone)]
struct Attrs {
    patient: Option<&'static str>,
    date: Option<&'static str>,
    modality: Option<&'static str>,
    number: Option<i64>,
}

const CT: Attrs = Attrs {
    patient: Some("PAT-1"),
    date: Some("20240115"),
    modality: Some("CT"),
    number: None,
};

fn record(study: &str, series: &str, sop: &str, a: &Attrs, size: u64) -> InstanceRecord {
    InstanceRecord {
        study_iuid: study.into(),
        series_iuid: series.into(),
        sop_iuid: sop.into(),
        sop_cuid: "1.2.840.10008.5.1.4.1.1.2".into(),
        transfer_syntax: "1.2.840.10008.1.2.1".into(),
        size,
        rel_path: format!("{study}/{series}/{sop}.dcm"),
        patient_id: a.patient.map(str::to_string),
        study_date: a.date.map(str::to_string),
        modality: a.modality.map(str::to_string),
        accession_number: Some("ACC".into()),
        series_number: Some(1),
        instance_number: a.number,
    }
}

/// A finished temp file holding `bytes` next to `rec`'s destination, as
/// import leaves it for a commit; `tag` keeps concurrent ones apart.
fn temp_file(storage: &Path, rec: &InstanceRecord, tag: &str, bytes: &[u8]) -> PathBuf {
    let dest = storage.join(&rec.rel_path);
    let dir = dest.parent().unwrap();
    std::fs::create_dir_all(dir).unwrap();
    let tmp = dir.join(format!(".{}.{tag}.tmp", rec.sop_iuid));
    std::fs::write(&tmp, bytes).unwrap();
    tmp
}

/// Commits `rec` from a temp file of `bytes`; must store.
async fn store(index: &dyn ArchiveIndex, rec: InstanceRecord, bytes: &[u8]) -> StoredInstance {
    let tmp = temp_file(index.storage_dir(), &rec, "t", bytes);
    match index.commit(rec, tmp.clone()).await.unwrap() {
        Commit::Stored(i) => {
            assert!(!tmp.exists(), "the temp file was renamed");
            i
        }
        other => panic!("expected Stored, got {other:?}"),
    }
}

async fn store_simple(index: &dyn ArchiveIndex, study: &str, series: &str, sop: &str, a: &Attrs) {
    store(index, record(study, series, sop, a, 3), b"abc").await;
}

fn sops(found: &[StoredInstance]) -> Vec<&str> {
    found.iter().map(|i| i.sop_iuid.as_str()).collect()
}

async fn commit_then_look_up(e: Env) {
    let ix = &*e.index;
    assert_eq!(ix.storage_dir(), e.at.storage);
    let n = |number| Attrs { number, ..CT };
    // Instance numbers out of order, one missing, and another study.
    let recs = [
        record("1.1", "1.1.2", "1.1.2.1", &n(Some(2)), 11),
        record("1.1", "1.1.1", "1.1.1.9", &n(Some(10)), 12),
        record("1.1", "1.1.1", "1.1.1.8", &n(Some(2)), 13),
        record("1.1", "1.1.1", "1.1.1.1", &n(None), 14),
        record("1.1", "1.1.2", "1.1.2.2", &n(Some(1)), 15),
        record("1.9", "1.9.1", "1.9.1.1", &n(Some(1)), 16),
    ];
    for r in &recs {
        let bytes = r.sop_iuid.as_bytes().to_vec();
        let stored = store(ix, r.clone(), &bytes).await;
        let dest = e.at.storage.join(&r.rel_path);
        assert_eq!(stored.path, dest);
        assert_eq!(std::fs::read(&dest).unwrap(), bytes);
        assert_eq!(
            (
                stored.study_iuid.as_str(),
                stored.series_iuid.as_str(),
                stored.sop_iuid.as_str()
            ),
            (
                r.study_iuid.as_str(),
                r.series_iuid.as_str(),
                r.sop_iuid.as_str()
            )
        );
        assert_eq!(stored.sop_cuid, r.sop_cuid);
        assert_eq!(stored.transfer_syntax, r.transfer_syntax);
        assert_eq!(stored.size, r.size);
        assert_eq!(ix.get(&r.sop_iuid).await.unwrap(), Some(stored));
    }
    assert_eq!(ix.get("1.2.3.4").await.unwrap(), None);

    // Study: series UID, then instance number (missing last), then SOP UID.
    let all = ix.find("1.1", None, None).await.unwrap();
    assert_eq!(
        sops(&all),
        ["1.1.1.8", "1.1.1.9", "1.1.1.1", "1.1.2.2", "1.1.2.1"]
    );
    assert!(all.iter().all(|i| i.path.is_file()));
    let series = ix.find("1.1", Some("1.1.2"), None).await.unwrap();
    assert_eq!(sops(&series), ["1.1.2.2", "1.1.2.1"]);
    let one = ix
        .find("1.1", Some("1.1.1"), Some("1.1.1.9"))
        .await
        .unwrap();
    assert_eq!(sops(&one), ["1.1.1.9"]);
    // An instance without its series; a mismatched hierarchy; unknowns.
    let one = ix.find("1.1", None, Some("1.1.2.1")).await.unwrap();
    assert_eq!(sops(&one), ["1.1.2.1"]);
    assert!(
        ix.find("1.1", Some("1.1.2"), Some("1.1.1.9"))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        ix.find("1.9", None, Some("1.1.1.9"))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(ix.find("7.7", None, None).await.unwrap().is_empty());
    assert_eq!(ix.count().await.unwrap(), 6);
}

async fn pages(e: Env) {
    let ix = &*e.index;
    for (series, sop) in [
        ("2.1", "2.1.3"),
        ("2.2", "2.2.1"),
        ("2.1", "2.1.1"),
        ("2.1", "2.1.2"),
        ("2.2", "2.2.2"),
    ] {
        store_simple(ix, "2", series, sop, &CT).await;
    }
    store_simple(ix, "3", "3.1", "3.1.1", &CT).await;

    // Walk the study two at a time, as an export does.
    let mut walked = Vec::new();
    let mut after: Option<(String, String)> = None;
    loop {
        let page = ix
            .find_page(
                "2",
                None,
                None,
                after.as_ref().map(|(a, b)| (a.as_str(), b.as_str())),
                2,
            )
            .await
            .unwrap();
        assert!(page.len() <= 2);
        walked.extend(page.iter().map(|i| i.sop_iuid.clone()));
        match page.last() {
            Some(last) if page.len() == 2 => {
                after = Some((last.series_iuid.clone(), last.sop_iuid.clone()))
            }
            _ => break,
        }
    }
    assert_eq!(walked, ["2.1.1", "2.1.2", "2.1.3", "2.2.1", "2.2.2"]);

    // Narrowed to a series, and to an instance.
    let page = ix
        .find_page("2", Some("2.2"), None, None, 10)
        .await
        .unwrap();
    assert_eq!(sops(&page), ["2.2.1", "2.2.2"]);
    let page = ix
        .find_page("2", Some("2.2"), None, Some(("2.2", "2.2.1")), 10)
        .await
        .unwrap();
    assert_eq!(sops(&page), ["2.2.2"]);
    let page = ix
        .find_page("2", None, Some("2.1.3"), None, 10)
        .await
        .unwrap();
    assert_eq!(sops(&page), ["2.1.3"]);
    assert!(
        ix.find_page("2", None, None, Some(("2.2", "2.2.2")), 10)
            .await
            .unwrap()
            .is_empty()
    );
}

/// Names in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

async fn duplicate_refused(e: Env) {
    let ix = &*e.index;
    let rec = record("4", "4.1", "4.1.1", &CT, 5);
    let first = store(ix, rec.clone(), b"first").await;

    // The same UID again, other bytes: the row and the file stay the first.
    let tmp = temp_file(&e.at.storage, &rec, "second", b"second");
    match ix.commit(rec.clone(), tmp.clone()).await.unwrap() {
        Commit::Existing(found) => assert_eq!(found, first),
        other => panic!("expected Existing, got {other:?}"),
    }
    assert_eq!(std::fs::read(&first.path).unwrap(), b"first");
    // The temp file is untouched, the caller's to compare and remove.
    assert_eq!(std::fs::read(&tmp).unwrap(), b"second");
    std::fs::remove_file(&tmp).unwrap();
    assert_eq!(names(first.path.parent().unwrap()), ["4.1.1.dcm"]);

    // Claimed in another study and series: refused all the same.
    let moved = record("5", "5.1", "4.1.1", &CT, 5);
    let tmp = temp_file(&e.at.storage, &moved, "moved", b"moved");
    match ix.commit(moved, tmp.clone()).await.unwrap() {
        Commit::Existing(found) => assert_eq!(found, first),
        other => panic!("expected Existing, got {other:?}"),
    }
    assert!(tmp.exists());
    assert!(!e.at.storage.join("5/5.1/4.1.1.dcm").exists());
    assert_eq!(ix.count().await.unwrap(), 1);
    assert!(ix.find("5", None, None).await.unwrap().is_empty());
}

async fn missing_file_restored(e: Env) {
    let ix = &*e.index;
    let rec = record("6", "6.1", "6.1.1", &CT, 5);
    let first = store(ix, rec.clone(), b"first").await;
    std::fs::remove_file(&first.path).unwrap();

    // Another study claiming the UID is still refused...
    let moved = record("7", "7.1", "6.1.1", &CT, 5);
    let tmp = temp_file(&e.at.storage, &moved, "moved", b"moved");
    assert!(matches!(
        ix.commit(moved, tmp).await.unwrap(),
        Commit::Existing(_)
    ));
    // ...the same study and series puts a file back in its place.
    let again = store(ix, rec, b"again").await;
    assert_eq!(again.path, first.path);
    assert_eq!(std::fs::read(&again.path).unwrap(), b"again");
    assert_eq!(ix.count().await.unwrap(), 1);
}

async fn rename_failure(e: Env) {
    let ix = &*e.index;
    let rec = record("8", "8.1", "8.1.1", &CT, 5);
    let gone = e.scratch.join("never-written.tmp");
    assert!(matches!(
        ix.commit(rec.clone(), gone).await.unwrap(),
        Commit::RenameFailed(_)
    ));
    assert_eq!(ix.get("8.1.1").await.unwrap(), None);
    assert_eq!(ix.count().await.unwrap(), 0);
    // The UID was not claimed.
    store(ix, rec, b"now").await;
}

async fn orphan_file_replaced(e: Env) {
    // A crash between the rename and the index's commit leaves the file
    // at its name without a row: the UID is not claimed, and the next
    // commit of it renames its own copy over the orphan.
    let ix = &*e.index;
    let rec = record("16", "16.1", "16.1.1", &CT, 3);
    let dest = e.at.storage.join(&rec.rel_path);
    std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
    std::fs::write(&dest, b"orphan").unwrap();
    assert_eq!(ix.get("16.1.1").await.unwrap(), None);
    let stored = store(ix, rec, b"new").await;
    assert_eq!(stored.path, dest);
    assert_eq!(std::fs::read(&dest).unwrap(), b"new");
    assert_eq!(names(dest.parent().unwrap()), ["16.1.1.dcm"]);
    assert_eq!(ix.count().await.unwrap(), 1);
}

async fn relative_paths(e: Env) {
    let ix = &*e.index;
    let rec = record("9", "9.1", "9.1.1", &CT, 5);
    let here = store(ix, rec.clone(), b"bytes").await;
    assert_eq!(here.path, e.at.storage.join("9/9.1/9.1.1.dcm"));

    // Another process sees the same storage mounted elsewhere: the same
    // index hands it paths under its own mount point.
    let mount = e.scratch.join("elsewhere");
    std::fs::create_dir_all(mount.join("9/9.1")).unwrap();
    std::fs::copy(&here.path, mount.join("9/9.1/9.1.1.dcm")).unwrap();
    let there = (e.open)(IndexAt {
        dir: e.at.dir.clone(),
        storage: mount.clone(),
    })
    .await;
    assert_eq!(there.storage_dir(), mount);
    let expect = StoredInstance {
        path: mount.join("9/9.1/9.1.1.dcm"),
        ..here.clone()
    };
    assert_eq!(there.get("9.1.1").await.unwrap(), Some(expect.clone()));
    assert_eq!(
        there.find("9", None, None).await.unwrap(),
        vec![expect.clone()]
    );
    assert_eq!(
        there.find_page("9", None, None, None, 5).await.unwrap(),
        vec![expect]
    );
    // A duplicate seen from there is the same row, found under its mount.
    let tmp = temp_file(&mount, &rec, "dup", b"other");
    match there.commit(rec, tmp).await.unwrap() {
        Commit::Existing(found) => assert_eq!(found.path, mount.join("9/9.1/9.1.1.dcm")),
        other => panic!("expected Existing, got {other:?}"),
    }
    // The first view is unchanged.
    assert_eq!(ix.get("9.1.1").await.unwrap(), Some(here));
}

async fn study_query(e: Env) {
    let ix = &*e.index;
    let a = |patient, date, modality| Attrs {
        patient,
        date,
        modality,
        number: None,
    };
    // Study 10.1: CT and SR instances; 10.2: MR; 10.3: patient with a
    // bracket; 10.4: no attributes at all.
    store_simple(
        ix,
        "10.1",
        "10.1.1",
        "10.1.1.1",
        &a(Some("PAT-1"), Some("20240110"), Some("CT")),
    )
    .await;
    store_simple(
        ix,
        "10.1",
        "10.1.1",
        "10.1.1.2",
        &a(Some("PAT-1"), Some("20240110"), Some("CT")),
    )
    .await;
    store_simple(
        ix,
        "10.1",
        "10.1.2",
        "10.1.2.1",
        &a(Some("PAT-1"), Some("20240110"), Some("SR")),
    )
    .await;
    store_simple(
        ix,
        "10.2",
        "10.2.1",
        "10.2.1.1",
        &a(Some("PAT-2"), Some("20240220"), Some("MR")),
    )
    .await;
    store_simple(
        ix,
        "10.3",
        "10.3.1",
        "10.3.1.1",
        &a(Some("X[1]"), Some("20231231"), Some("CT")),
    )
    .await;
    store_simple(ix, "10.4", "10.4.1", "10.4.1.1", &a(None, None, None)).await;

    let q = |patient: Option<&str>, from: Option<&str>, to: Option<&str>, modalities: &[&str]| {
        StudyQuery {
            patient_id: patient.map(str::to_string),
            study_date_from: from.map(str::to_string),
            study_date_to: to.map(str::to_string),
            modalities: modalities.iter().map(|m| m.to_string()).collect(),
        }
    };
    let cases: Vec<(StudyQuery, Vec<&str>)> = vec![
        // No filter: every study once, in UID order.
        (StudyQuery::default(), vec!["10.1", "10.2", "10.3", "10.4"]),
        (q(Some("PAT-1"), None, None, &[]), vec!["10.1"]),
        (q(Some("PAT"), None, None, &[]), vec![]),
        (q(Some("pat-1"), None, None, &[]), vec![]),
        (q(Some("pat-*"), None, None, &[]), vec![]),
        (q(Some("PAT-*"), None, None, &[]), vec!["10.1", "10.2"]),
        (q(Some("PAT-?"), None, None, &[]), vec!["10.1", "10.2"]),
        (q(Some("P?T"), None, None, &[]), vec![]),
        (q(Some("*"), None, None, &[]), vec!["10.1", "10.2", "10.3"]),
        // Brackets are literal, not a character class.
        (q(Some("X[1]"), None, None, &[]), vec!["10.3"]),
        (q(Some("X[1]*"), None, None, &[]), vec!["10.3"]),
        (q(Some("X1"), None, None, &[]), vec![]),
        // Date bounds are inclusive, each may be given alone.
        (q(None, Some("20240110"), None, &[]), vec!["10.1", "10.2"]),
        (q(None, None, Some("20240110"), &[]), vec!["10.1", "10.3"]),
        (
            q(None, Some("20240111"), Some("20240220"), &[]),
            vec!["10.2"],
        ),
        (
            q(None, Some("20240110"), Some("20240110"), &[]),
            vec!["10.1"],
        ),
        // Modalities: some instance of the study has one of them.
        (q(None, None, None, &["SR"]), vec!["10.1"]),
        (q(None, None, None, &["CT"]), vec!["10.1", "10.3"]),
        (q(None, None, None, &["MR", "SR"]), vec!["10.1", "10.2"]),
        (q(None, None, None, &["US"]), vec![]),
        // All given filters must match.
        (
            q(Some("PAT-*"), Some("20240101"), None, &["CT"]),
            vec!["10.1"],
        ),
        (q(Some("PAT-2"), None, None, &["CT"]), vec![]),
    ];
    for (query, want) in cases {
        let got = ix.find_studies(query.clone()).await.unwrap();
        assert_eq!(got, want, "{query:?}");
    }
}

async fn counts(e: Env) {
    let ix = &*e.index;
    assert_eq!(ix.count().await.unwrap(), 0);
    store_simple(ix, "11", "11.1", "11.1.1", &CT).await;
    store_simple(ix, "11", "11.1", "11.1.2", &CT).await;
    store_simple(ix, "12", "12.1", "12.1.1", &CT).await;
    assert_eq!(ix.count().await.unwrap(), 3);
    // A refused duplicate adds nothing.
    let rec = record("11", "11.1", "11.1.1", &CT, 3);
    let tmp = temp_file(&e.at.storage, &rec, "dup", b"abc");
    assert!(matches!(
        ix.commit(rec, tmp).await.unwrap(),
        Commit::Existing(_)
    ));
    assert_eq!(ix.count().await.unwrap(), 3);
    // Counts are the index's, seen by another opener too.
    let again = (e.open)(e.at.clone()).await;
    assert_eq!(again.count().await.unwrap(), 3);
}

async fn concurrent_commits(e: Env) {
    // Two tasks commit the same SOP Instance UID at once, each from its
    // own temp file, through two openers of the index (as two processes
    // would), several times over: exactly one wins each time.
    let other = (e.open)(e.at.clone()).await;
    for round in 0..8 {
        let rec = record("13", "13.1", &format!("13.1.{round}"), &CT, 1);
        let barrier = Arc::new(tokio::sync::Barrier::new(2));
        let mut tasks = Vec::new();
        for (who, ix) in [("a", e.index.clone()), ("b", other.clone())] {
            let tmp = temp_file(&e.at.storage, &rec, who, who.as_bytes());
            let (rec, barrier) = (rec.clone(), barrier.clone());
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                (who, tmp.clone(), ix.commit(rec, tmp).await.unwrap())
            }));
        }
        let mut winners = Vec::new();
        let mut losers = Vec::new();
        for t in tasks {
            match t.await.unwrap() {
                (who, _, Commit::Stored(i)) => winners.push((who, i)),
                (_, tmp, Commit::Existing(i)) => losers.push((tmp, i)),
                (_, _, c) => panic!("{c:?}"),
            }
        }
        assert_eq!(winners.len(), 1, "round {round}");
        let (who, won) = &winners[0];
        let (tmp, lost) = &losers[0];
        assert_eq!(lost, won);
        assert_eq!(std::fs::read(&won.path).unwrap(), who.as_bytes());
        assert!(tmp.exists(), "the loser's temp file stays the caller's");
        std::fs::remove_file(tmp).unwrap();
    }
    assert_eq!(e.index.count().await.unwrap(), 8);
    let dir = e.at.storage.join("13/13.1");
    let expect: BTreeSet<String> = (0..8).map(|r| format!("13.1.{r}.dcm")).collect();
    assert_eq!(names(&dir).into_iter().collect::<BTreeSet<_>>(), expect);
}

async fn archive_over_it(e: Env) {
    // Import and export see the index only through Archive.
    let archive = Archive::with_index(e.index.clone());
    assert_eq!(archive.storage_dir(), e.at.storage);
    let spec = stow_exporter::synth::SynthSpec {
        study_iuid: "14".into(),
        series_iuid: "14.1".into(),
        sop_iuid: "14.1.1".into(),
        rows: 4,
        columns: 4,
        seed: 1,
        patient_id: "PAT-14".into(),
        instance_number: 1,
    };
    let src = e.scratch.join("in.dcm");
    stow_exporter::synth::write_ct(&src, &spec).unwrap();
    let Imported::Stored(stored) = archive.import_file(&src).await.unwrap() else {
        panic!("the first import stores");
    };
    assert_eq!(stored.path, e.at.storage.join("14/14.1/14.1.1.dcm"));
    assert_eq!(
        std::fs::read(&stored.path).unwrap(),
        std::fs::read(&src).unwrap()
    );
    assert!(matches!(
        archive.import_file(&src).await.unwrap(),
        Imported::AlreadyStored(_)
    ));
    assert_eq!(archive.find("14", None, None).await.unwrap(), vec![stored]);
    let q = StudyQuery {
        patient_id: Some("PAT-14".into()),
        ..StudyQuery::default()
    };
    assert_eq!(archive.find_studies(q).await.unwrap(), ["14"]);
    assert_eq!(archive.count().await.unwrap(), 1);
    assert_eq!(names(&e.at.storage.join("14/14.1")), ["14.1.1.dcm"]);
}

/// SQLite only: a row written with an absolute path (none is today, but a
/// database copied from elsewhere may hold one) is read as it is, and new
/// rows keep the relative path.
#[tokio::test]
async fn sqlite_reads_absolute_rows_and_writes_relative_ones() {
    let root = tempfile::tempdir().unwrap();
    let storage = std::fs::canonicalize(root.path()).unwrap().join("storage");
    std::fs::create_dir_all(&storage).unwrap();
    let db = root.path().join("archive.sqlite");
    let ix = SqliteIndex::open(&db, storage.clone()).await.unwrap();
    store(&ix, record("15", "15.1", "15.1.1", &CT, 3), b"new").await;

    let old = root.path().join("old-mount/15/15.1/15.1.2.dcm");
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute(
        "INSERT INTO instance (study_iuid, series_iuid, sop_iuid, sop_cuid, transfer_syntax,
            size, path, imported_at)
         VALUES ('15', '15.1', '15.1.2', '1.2', '1.2.840.10008.1.2.1', 3, ?1,
            '2026-01-01T00:00:00.000Z')",
        [old.to_str().unwrap()],
    )
    .unwrap();
    let stored: Vec<String> = conn
        .prepare("SELECT path FROM instance ORDER BY sop_iuid")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        stored,
        ["15/15.1/15.1.1.dcm".to_string(), old.display().to_string()]
    );

    let found = ix.find("15", None, None).await.unwrap();
    let paths: Vec<_> = found.iter().map(|i| i.path.clone()).collect();
    assert_eq!(paths, [storage.join("15/15.1/15.1.1.dcm"), old]);
}

/// A pending export of `study` (and `series`) to `exporter`, due `due`.
fn export(exporter: &str, study: &str, series: Option<&str>, due: DateTime<Utc>) -> PendingExport {
    PendingExport {
        exporter_id: exporter.into(),
        rule: format!("rule of {exporter}"),
        study_iuid: study.into(),
        series_iuid: series.map(str::to_string),
        sop_iuid: None,
        due,
    }
}

/// Pending exports (issue 15): recorded with the instance in one commit
/// and only when it stores, pushed back to the later due time per
/// exporter and entity, handed out once (claimed) when due, to one
/// process of several, again after the claim expires, and removed when
/// done unless pushed back meanwhile.
async fn pending_exports(e: Env) {
    let ix = &*e.index;
    let secs = |n: i64| chrono::Duration::seconds(n);
    // Due times are kept to the millisecond.
    let t0 = Utc
        .timestamp_millis_opt(Utc::now().timestamp_millis())
        .unwrap()
        + secs(3600);
    assert_eq!(ix.next_export_due().await.unwrap(), None);

    let rec = record("9", "9.1", "9.1.1", &CT, 3);
    let tmp = temp_file(ix.storage_dir(), &rec, "t", b"abc");
    let a = export("A", "9", None, t0);
    let c = ix
        .commit_with_exports(rec.clone(), tmp, vec![a.clone()])
        .await
        .unwrap();
    assert!(matches!(c, Commit::Stored(_)), "{c:?}");
    assert_eq!(ix.next_export_due().await.unwrap(), Some(t0));

    // A duplicate stores nothing, and so records none of its exports.
    let tmp = temp_file(ix.storage_dir(), &rec, "again", b"abc");
    let c = ix
        .commit_with_exports(
            rec.clone(),
            tmp.clone(),
            vec![export("B", "9", None, t0 - secs(60))],
        )
        .await
        .unwrap();
    assert!(matches!(c, Commit::Existing(_)), "{c:?}");
    std::fs::remove_file(&tmp).unwrap();
    assert_eq!(ix.next_export_due().await.unwrap(), Some(t0));

    // Another instance of the study pushes the export back; an earlier
    // due time does not bring it forward.
    ix.add_exports(vec![export("A", "9", None, t0 + secs(10))])
        .await
        .unwrap();
    ix.add_exports(vec![export("A", "9", None, t0 + secs(5))])
        .await
        .unwrap();
    assert_eq!(ix.next_export_due().await.unwrap(), Some(t0 + secs(10)));
    // Another entity of the same study is an export of its own.
    ix.add_exports(vec![export("A", "9", Some("9.1"), t0 + secs(20))])
        .await
        .unwrap();

    // Nothing is due before its time.
    assert!(ix.due_exports(t0 + secs(9), 10).await.unwrap().is_empty());
    let due = ix.due_exports(t0 + secs(10), 10).await.unwrap();
    assert_eq!(due.len(), 1, "{due:?}");
    assert_eq!(due[0].due, t0 + secs(10));
    assert_eq!(due[0].series_iuid, None);
    assert_eq!(due[0].rule, "rule of A");
    // Handed out once: neither this process nor another one sharing the
    // index gets it again while it is claimed.
    assert!(ix.due_exports(t0 + secs(10), 10).await.unwrap().is_empty());
    let other = (e.open)(e.at.clone()).await;
    assert!(
        other
            .due_exports(t0 + secs(10), 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(ix.next_export_due().await.unwrap(), Some(t0 + secs(20)));
    // A claim that was never finished (its process died) expires.
    let claim = chrono::Duration::from_std(EXPORT_CLAIM).unwrap();
    let again = other.due_exports(t0 + secs(11) + claim, 10).await.unwrap();
    assert_eq!(
        again.len(),
        2,
        "the expired claim and the series export: {again:?}"
    );

    // Done: removed.
    ix.finish_export(&due[0]).await.unwrap();
    let series = again
        .iter()
        .find(|x| x.series_iuid.is_some())
        .unwrap()
        .clone();
    // Pushed back after it was handed out (a new instance arrived while
    // its task was queued): it stays, for a second task.
    ix.add_exports(vec![export("A", "9", Some("9.1"), t0 + secs(30))])
        .await
        .unwrap();
    ix.finish_export(&series).await.unwrap();
    assert_eq!(ix.next_export_due().await.unwrap(), Some(t0 + secs(30)));
    let last = ix.due_exports(t0 + secs(30), 10).await.unwrap();
    assert_eq!(last.len(), 1, "{last:?}");
    ix.finish_export(&last[0]).await.unwrap();
    assert_eq!(ix.next_export_due().await.unwrap(), None);
    assert!(
        ix.due_exports(t0 + secs(10_000), 10)
            .await
            .unwrap()
            .is_empty()
    );
}
