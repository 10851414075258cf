use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use dicom_dictionary_std::{tags, uids};

use super::import::check_uid;
use super::*;
use crate::synth::{SynthSpec, ct_bytes, ct_object, new_uid, write_ct};

fn spec(study: &str, series: &str, instance_number: u32) -> SynthSpec {
    SynthSpec {
        study_iuid: study.to_string(),
        series_iuid: series.to_string(),
        sop_iuid: new_uid(),
        rows: 16,
        columns: 16,
        seed: u64::from(instance_number),
        patient_id: "PAT-1".to_string(),
        instance_number,
    }
}

async fn open() -> (tempfile::TempDir, Archive) {
    let dir = tempfile::tempdir().unwrap();
    let archive = Archive::open(&dir.path().join("data")).await.unwrap();
    (dir, archive)
}

fn write(dir: &Path, name: &str, s: &SynthSpec) -> PathBuf {
    let path = dir.join(name);
    write_ct(&path, s).unwrap();
    path
}

#[tokio::test]
async fn imports_byte_identical_and_indexes_attributes() {
    let (dir, archive) = open().await;
    let s = spec(&new_uid(), &new_uid(), 3);
    let src = write(dir.path(), "in.dcm", &s);

    let imported = archive.import_file(&src).await.unwrap();
    let Imported::Stored(inst) = imported else {
        panic!("expected Stored, got {imported:?}");
    };
    let storage = archive.storage_dir();
    assert!(storage.is_absolute());
    assert_eq!(
        inst.path,
        storage
            .join(&s.study_iuid)
            .join(&s.series_iuid)
            .join(format!("{}.dcm", s.sop_iuid))
    );
    assert_eq!(
        std::fs::read(&inst.path).unwrap(),
        std::fs::read(&src).unwrap()
    );
    assert_eq!(inst.study_iuid, s.study_iuid);
    assert_eq!(inst.series_iuid, s.series_iuid);
    assert_eq!(inst.sop_iuid, s.sop_iuid);
    assert_eq!(inst.sop_cuid, uids::CT_IMAGE_STORAGE);
    assert_eq!(inst.transfer_syntax, uids::EXPLICIT_VR_LITTLE_ENDIAN);
    assert_eq!(inst.size, std::fs::metadata(&src).unwrap().len());
    assert_eq!(archive.count().await.unwrap(), 1);
    // no temp files left behind
    let leftovers: Vec<_> = std::fs::read_dir(inst.path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers.len(), 1, "{leftovers:?}");

    let conn = rusqlite::Connection::open(dir.path().join("data/archive.sqlite")).unwrap();
    let row = conn
        .query_row(
            "SELECT patient_id, study_date, modality, accession_number, series_number,
                    instance_number, path, imported_at
             FROM instance WHERE sop_iuid = ?1",
            [&s.sop_iuid],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, i64>(5)?,
                    r.get::<_, String>(6)?,
                    r.get::<_, String>(7)?,
                ))
            },
        )
        .unwrap();
    assert_eq!(row.0, "PAT-1");
    assert_eq!(row.1, "20240115");
    assert_eq!(row.2, "CT");
    assert_eq!(row.3, "SYNTH0001");
    assert_eq!(row.4, 1);
    assert_eq!(row.5, 3);
    assert_eq!(
        row.6,
        format!("{}/{}/{}.dcm", s.study_iuid, s.series_iuid, s.sop_iuid)
    );
    assert!(
        chrono::DateTime::parse_from_rfc3339(&row.7).is_ok(),
        "{}",
        row.7
    );

    // reopening sees the same index
    drop(archive);
    let again = Archive::open(&dir.path().join("data")).await.unwrap();
    assert_eq!(again.count().await.unwrap(), 1);
}

#[tokio::test]
async fn reimport_is_idempotent() {
    let (dir, archive) = open().await;
    let s = spec(&new_uid(), &new_uid(), 1);
    let src = write(dir.path(), "a.dcm", &s);
    let copy = write(dir.path(), "copy-of-a.dcm", &s);

    assert!(matches!(
        archive.import_file(&src).await.unwrap(),
        Imported::Stored(_)
    ));
    for p in [&src, &copy] {
        match archive.import_file(p).await.unwrap() {
            Imported::AlreadyStored(i) => assert_eq!(i.sop_iuid, s.sop_iuid),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(archive.count().await.unwrap(), 1);
}

#[tokio::test]
async fn concurrent_duplicates_store_once() {
    let (dir, archive) = open().await;
    let s = spec(&new_uid(), &new_uid(), 1);
    let paths: Vec<_> = (0..6)
        .map(|i| write(dir.path(), &format!("{i}.dcm"), &s))
        .collect();
    let tasks: Vec<_> = paths
        .into_iter()
        .map(|p| {
            let archive = archive.clone();
            tokio::spawn(async move { archive.import_file(&p).await })
        })
        .collect();
    let mut stored = 0;
    for t in tasks {
        match t.await.unwrap().unwrap() {
            Imported::Stored(_) => stored += 1,
            Imported::AlreadyStored(_) => {}
        }
    }
    assert_eq!(stored, 1);
    assert_eq!(archive.count().await.unwrap(), 1);
    // The losers' temp files are gone.
    assert_eq!(
        files_in(
            &archive
                .storage_dir()
                .join(&s.study_iuid)
                .join(&s.series_iuid)
        ),
        [format!("{}.dcm", s.sop_iuid)]
    );
}

/// Names of the files in `dir`.
fn files_in(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

#[tokio::test]
async fn different_object_with_same_uid_is_refused() {
    let (dir, archive) = open().await;
    let first = spec(&new_uid(), &new_uid(), 1);
    let second = SynthSpec {
        seed: 999,
        ..first.clone()
    };
    let a = write(dir.path(), "a.dcm", &first);
    let b = write(dir.path(), "b.dcm", &second);
    let Imported::Stored(stored) = archive.import_file(&a).await.unwrap() else {
        panic!("first import must store");
    };

    let err = archive.import_file(&b).await.unwrap_err();
    assert!(matches!(err, ImportError::Conflict { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(&b.display().to_string()), "{msg}");
    assert!(msg.contains(&first.sop_iuid), "{msg}");
    // the first one is kept, and the refused copy is not left behind
    assert_eq!(
        std::fs::read(&stored.path).unwrap(),
        std::fs::read(&a).unwrap()
    );
    assert_eq!(
        files_in(stored.path.parent().unwrap()),
        [format!("{}.dcm", first.sop_iuid)]
    );

    // same UID, other study: also a different object
    let moved = SynthSpec {
        study_iuid: new_uid(),
        ..first.clone()
    };
    let c = write(dir.path(), "c.dcm", &moved);
    assert!(matches!(
        archive.import_file(&c).await.unwrap_err(),
        ImportError::Conflict { .. }
    ));
    assert_eq!(archive.count().await.unwrap(), 1);
}

#[tokio::test]
async fn missing_stored_file_is_restored() {
    let (dir, archive) = open().await;
    let s = spec(&new_uid(), &new_uid(), 1);
    let src = write(dir.path(), "a.dcm", &s);
    let stored = archive.import_file(&src).await.unwrap().instance().clone();
    std::fs::remove_file(&stored.path).unwrap();
    assert!(matches!(
        archive.import_file(&src).await.unwrap(),
        Imported::Stored(_)
    ));
    assert_eq!(
        std::fs::read(&stored.path).unwrap(),
        std::fs::read(&src).unwrap()
    );
    assert_eq!(archive.count().await.unwrap(), 1);
}

#[tokio::test]
async fn non_dicom_files_are_named() {
    let (dir, archive) = open().await;
    let txt = dir.path().join("notes.txt");
    std::fs::write(&txt, "just some text\n").unwrap();
    let zeros = dir.path().join("zeros.bin");
    std::fs::write(&zeros, [0u8; 400]).unwrap();
    let empty = dir.path().join("empty");
    std::fs::write(&empty, []).unwrap();

    for p in [&txt, &zeros, &empty] {
        let err = archive.import_file(p).await.unwrap_err();
        assert!(matches!(err, ImportError::NotDicom { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains(&p.display().to_string()), "{msg}");
        assert!(msg.contains("not a DICOM file"), "{msg}");
    }
    let gone = dir.path().join("does-not-exist.dcm");
    let err = archive.import_file(&gone).await.unwrap_err();
    assert!(matches!(err, ImportError::Unreadable { .. }), "{err:?}");
    assert!(err.to_string().contains("does-not-exist.dcm"));
    assert_eq!(archive.count().await.unwrap(), 0);
}

#[tokio::test]
async fn missing_study_uid_is_named() {
    let (dir, archive) = open().await;
    let mut obj = ct_object(&spec(&new_uid(), &new_uid(), 1)).unwrap();
    assert!(obj.remove_element(tags::STUDY_INSTANCE_UID));
    let path = dir.path().join("nostudy.dcm");
    obj.write_to_file(&path).unwrap();

    let err = archive.import_file(&path).await.unwrap_err();
    assert!(
        matches!(err, ImportError::MissingAttribute { .. }),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("StudyInstanceUID (0020,000D) missing"),
        "{msg}"
    );
    assert!(msg.contains(&path.display().to_string()), "{msg}");
}

#[tokio::test]
async fn path_traversal_uids_are_refused() {
    let (dir, archive) = open().await;
    for bad in [
        "../../evil",
        "..",
        "1.2/3",
        "1.2..3",
        ".1.2",
        "1.2.3.",
        "1.2.x",
    ] {
        let s = spec(bad, &new_uid(), 1);
        let path = write(dir.path(), "bad.dcm", &s);
        let err = archive.import_file(&path).await.unwrap_err();
        assert!(
            matches!(err, ImportError::InvalidUid { .. }),
            "{bad}: {err:?}"
        );
        let msg = err.to_string();
        assert!(msg.contains("StudyInstanceUID (0020,000D)"), "{msg}");
    }
    let series_bad = SynthSpec {
        series_iuid: "../x".into(),
        ..spec(&new_uid(), &new_uid(), 1)
    };
    let path = write(dir.path(), "bad2.dcm", &series_bad);
    assert!(matches!(
        archive.import_file(&path).await.unwrap_err(),
        ImportError::InvalidUid { .. }
    ));
    let long = SynthSpec {
        sop_iuid: format!("1.{}", "2".repeat(70)),
        ..spec(&new_uid(), &new_uid(), 1)
    };
    let path = write(dir.path(), "bad3.dcm", &long);
    assert!(matches!(
        archive.import_file(&path).await.unwrap_err(),
        ImportError::InvalidUid { .. }
    ));
    // nothing escaped or landed in storage
    assert_eq!(archive.count().await.unwrap(), 0);
    assert!(!dir.path().join("evil").exists());
    assert_eq!(std::fs::read_dir(archive.storage_dir()).unwrap().count(), 0);
}

#[test]
fn uid_syntax() {
    assert!(check_uid("1.2.840.10008.5.1.4.1.1.2").is_ok());
    assert!(check_uid("2.25.0").is_ok());
    assert!(check_uid(&"1".repeat(64)).is_ok());
    assert!(check_uid(&"1".repeat(65)).is_err());
    for bad in [
        "", ".", "..", "../a", "1..2", "1.2.", ".1", "1 2", "1\\2", "1.2\0",
    ] {
        assert!(check_uid(bad).is_err(), "{bad:?}");
    }
}

/// Synthetic bytes cut after the file meta, plus `tail`.
fn meta_then(tail: &[u8]) -> Vec<u8> {
    let full = ct_bytes(&spec("1.2.3", "1.2.3.4", 1));
    let group_len = u32::from_le_bytes(full[140..144].try_into().unwrap()) as usize;
    let mut v = full[..144 + group_len].to_vec();
    v.extend_from_slice(tail);
    v
}

#[tokio::test]
async fn huge_declared_length_fails_fast() {
    let (dir, archive) = open().await;
    // (0009,1010) OB, length 0xFFFFFFF0, then a few bytes
    let mut tail = vec![0x09, 0x00, 0x10, 0x10, b'O', b'B', 0, 0];
    tail.extend_from_slice(&0xFFFF_FFF0u32.to_le_bytes());
    tail.extend_from_slice(&[1, 2, 3, 4, 5, 6]);
    let path = dir.path().join("huge.dcm");
    std::fs::write(&path, meta_then(&tail)).unwrap();

    let start = Instant::now();
    let err = archive.import_file(&path).await.unwrap_err();
    let took = start.elapsed();
    assert!(matches!(err, ImportError::Malformed { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("huge.dcm") && msg.contains("4294967280"),
        "{msg}"
    );
    // zero-filling 4 GiB alone would take well over this
    assert!(took < Duration::from_secs(1), "{took:?}");

    // the same inside an undefined-length sequence item, as UT
    let mut tail = vec![
        0x08, 0x00, 0x15, 0x11, b'S', b'Q', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF,
    ];
    tail.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF]);
    tail.extend_from_slice(&[0x08, 0x00, 0x00, 0x01, b'U', b'T', 0, 0]);
    tail.extend_from_slice(&0xFFFF_FFF0u32.to_le_bytes());
    tail.extend_from_slice(&[0; 8]);
    let path = dir.path().join("huge-nested.dcm");
    std::fs::write(&path, meta_then(&tail)).unwrap();
    let err = archive.import_file(&path).await.unwrap_err();
    assert!(matches!(err, ImportError::Malformed { .. }), "{err:?}");
    assert_eq!(archive.count().await.unwrap(), 0);
}

#[tokio::test]
async fn truncated_file_is_malformed() {
    let (dir, archive) = open().await;
    let full = ct_bytes(&spec(&new_uid(), &new_uid(), 1));
    // cut in the middle of the data set header, before Pixel Data
    let path = dir.path().join("cut.dcm");
    std::fs::write(&path, &full[..400]).unwrap();
    let err = archive.import_file(&path).await.unwrap_err();
    assert!(matches!(err, ImportError::Malformed { .. }), "{err:?}");
    // cut inside the pixel data: would otherwise be archived and sent on
    std::fs::write(&path, &full[..full.len() - 10]).unwrap();
    let err = archive.import_file(&path).await.unwrap_err();
    assert!(matches!(err, ImportError::Malformed { .. }), "{err:?}");
    assert!(err.to_string().contains("(7FE0,0010)"), "{err}");
    assert_eq!(archive.count().await.unwrap(), 0);
}

#[tokio::test]
async fn parser_errors_are_reported_as_malformed() {
    let (dir, archive) = open().await;
    // structurally walkable, but (0002,0001) must be 2 bytes long
    let full = ct_bytes(&spec(&new_uid(), &new_uid(), 1));
    let mut v = full[..140].to_vec();
    v.extend_from_slice(&44u32.to_le_bytes());
    v.extend_from_slice(&[
        0x02, 0x00, 0x01, 0x00, b'O', b'B', 0, 0, 4, 0, 0, 0, 0, 1, 0, 0,
    ]);
    v.extend_from_slice(&[0x02, 0x00, 0x10, 0x00, b'U', b'I', 20, 0]);
    v.extend_from_slice(b"1.2.840.10008.1.2.1\0");
    let path = dir.path().join("badmeta.dcm");
    std::fs::write(&path, &v).unwrap();
    let err = archive.import_file(&path).await.unwrap_err();
    assert!(matches!(err, ImportError::Malformed { .. }), "{err:?}");
    let msg = err.to_string();
    eprintln!("{msg}");
    assert!(msg.contains("badmeta.dcm"), "{msg}");
}

#[derive(Default)]
struct Recorder {
    total: Mutex<Option<u64>>,
    done: Mutex<Vec<(PathBuf, bool)>>,
}

impl ImportProgress for Recorder {
    fn total(&self, files: u64) {
        *self.total.lock().unwrap() = Some(files);
    }
    fn file_done(&self, path: &Path, result: &Result<Imported, ImportError>) {
        self.done
            .lock()
            .unwrap()
            .push((path.to_path_buf(), result.is_ok()));
    }
}

#[tokio::test]
async fn directory_walk_reports_counts() {
    let (dir, archive) = open().await;
    let input = dir.path().join("input");
    let nested = input.join("a").join("b");
    std::fs::create_dir_all(&nested).unwrap();
    let study = new_uid();
    let series = new_uid();
    let s1 = spec(&study, &series, 1);
    write(&input, "1.dcm", &s1);
    write(&nested, "2.dcm", &spec(&study, &series, 2));
    write(&nested, ".hidden.dcm", &spec(&study, &series, 3));
    write(&input.join("a"), "dup-of-1.dcm", &s1);
    std::fs::write(input.join("README.txt"), "not dicom").unwrap();
    // a single file given directly, outside the folder
    let single = write(dir.path(), "single.dcm", &spec(&new_uid(), &new_uid(), 1));
    let missing = dir.path().join("missing");

    let rec = Recorder::default();
    let report = import_paths(&archive, &[input.clone(), single, missing.clone()], &rec).await;

    assert_eq!(report.stored, 4, "{report:?}");
    assert_eq!(report.already_stored, 1, "{report:?}");
    let failed: Vec<_> = report.failed.iter().map(|(p, _)| p.clone()).collect();
    assert_eq!(failed, vec![input.join("README.txt"), missing.clone()]);
    assert!(matches!(report.failed[0].1, ImportError::NotDicom { .. }));
    assert!(matches!(report.failed[1].1, ImportError::Unreadable { .. }));
    let expected_bytes: u64 = [
        input.join("1.dcm"),
        nested.join("2.dcm"),
        nested.join(".hidden.dcm"),
        dir.path().join("single.dcm"),
    ]
    .iter()
    .map(|p| std::fs::metadata(p).unwrap().len())
    .sum();
    assert_eq!(report.bytes, expected_bytes);
    assert_eq!(*rec.total.lock().unwrap(), Some(7));
    let done = rec.done.lock().unwrap().clone();
    assert_eq!(done.len(), 7);
    assert_eq!(done.iter().filter(|(_, ok)| *ok).count(), 5);
    assert_eq!(archive.count().await.unwrap(), 4);
}

#[cfg(unix)]
#[tokio::test]
async fn directory_walk_survives_symlink_loop() {
    let (dir, archive) = open().await;
    let input = dir.path().join("input");
    std::fs::create_dir_all(&input).unwrap();
    write(&input, "1.dcm", &spec(&new_uid(), &new_uid(), 1));
    std::os::unix::fs::symlink(&input, input.join("loop")).unwrap();
    let report = import_paths(&archive, &[input], &NoProgress).await;
    assert_eq!(report.stored, 1, "{report:?}");
    assert_eq!(report.failed.len(), 1, "{report:?}");
}

#[tokio::test]
async fn find_by_study_series_instance() {
    let (dir, archive) = open().await;
    let study = new_uid();
    let (se1, se2) = {
        let mut a = [new_uid(), new_uid()];
        a.sort();
        (a[0].clone(), a[1].clone())
    };
    // instance numbers out of order on disk, and a second study
    let specs = [
        spec(&study, &se2, 2),
        spec(&study, &se1, 10),
        spec(&study, &se1, 2),
        spec(&study, &se2, 1),
        spec(&new_uid(), &new_uid(), 1),
    ];
    for (i, s) in specs.iter().enumerate() {
        let p = write(dir.path(), &format!("{i}.dcm"), s);
        archive.import_file(&p).await.unwrap();
    }

    let all = archive.find(&study, None, None).await.unwrap();
    let order: Vec<_> = all.iter().map(|i| i.sop_iuid.clone()).collect();
    assert_eq!(
        order,
        vec![
            specs[2].sop_iuid.clone(),
            specs[1].sop_iuid.clone(),
            specs[3].sop_iuid.clone(),
            specs[0].sop_iuid.clone(),
        ]
    );
    assert!(all.iter().all(|i| i.path.is_file() && i.path.is_absolute()));

    let series = archive.find(&study, Some(&se2), None).await.unwrap();
    assert_eq!(series.len(), 2);
    assert!(series.iter().all(|i| i.series_iuid == se2));

    let one = archive
        .find(&study, Some(&se1), Some(&specs[1].sop_iuid))
        .await
        .unwrap();
    assert_eq!(one.len(), 1);
    assert_eq!(one[0].sop_iuid, specs[1].sop_iuid);

    // instance without series
    let one = archive
        .find(&study, None, Some(&specs[3].sop_iuid))
        .await
        .unwrap();
    assert_eq!(one.len(), 1);

    // mismatched hierarchy and unknown study find nothing
    assert!(
        archive
            .find(&study, Some(&se2), Some(&specs[1].sop_iuid))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(archive.find("1.2.3", None, None).await.unwrap().is_empty());
    assert_eq!(archive.count().await.unwrap(), 5);
}

#[test]
fn import_futures_are_send() {
    fn assert_send<T: Send>(_: &T) {}
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (_dir, archive) = open().await;
        let paths = vec![PathBuf::from("/nonexistent")];
        let fut = import_paths(&archive, &paths, &NoProgress);
        assert_send(&fut);
        let fut2 = archive.import_file(Path::new("/nonexistent"));
        assert_send(&fut2);
    });
}
