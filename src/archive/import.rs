//! Importing files into the archive: header parsing, byte-for-byte copy into
//! storage, indexing, and the directory walk of `import`.
//!
//! A file reported stored is on disk, whatever the index backend: it is
//! copied to a hidden, randomised temp name in the directory of its
//! destination (so the rename is atomic and never crosses a file system)
//! and fsynced before the rename that gives it its name; that rename
//! happens inside [`super::ArchiveIndex::commit`], together with the row,
//! so a SOP Instance UID is claimed once; any directory created on the way
//! is fsynced in its parent, and the directory holding the name after the
//! rename, before the file is reported stored; the index commits durably
//! (SQLite: `synchronous=FULL`). A temp file that is not renamed (a
//! duplicate, a failure) is removed here.
//!
//! Owns the write side of storage; it must not be reached by an export,
//! which only reads ([`super::Archive`]'s queries), and it reaches the index
//! only through [`super::ArchiveIndex`].

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use dicom_core::Tag;
use dicom_dictionary_std::tags;
use dicom_object::file::ReadPreamble;
use dicom_object::{DefaultDicomObject, OpenFileOptions};
use futures_util::StreamExt;
use walkdir::WalkDir;

use super::index::{Commit, InstanceRecord, resolve};
use super::scan::{self, PREAMBLE_LEN, ScanError};
use super::{Archive, ImportError, Imported};

/// Files imported at the same time by [`import_paths`]: enough to overlap
/// parsing of one file with copying of another, without thrashing disks.
const IMPORT_CONCURRENCY: usize = 2;
/// Longest UID PS3.5 allows; also keeps storage path components short.
const MAX_UID_LEN: usize = 64;
const COMPARE_CHUNK: usize = 64 * 1024;

/// Receives progress of [`import_paths`].
pub trait ImportProgress {
    /// Called once, before any file, with the number of files found
    /// (walk errors included, as they are reported like failed files).
    fn total(&self, files: u64);
    /// Called once per file when it is done, in completion order.
    fn file_done(&self, path: &Path, result: &Result<Imported, ImportError>);
}

/// An [`ImportProgress`] that ignores everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl ImportProgress for NoProgress {
    fn total(&self, _files: u64) {}
    fn file_done(&self, _path: &Path, _result: &Result<Imported, ImportError>) {}
}

/// Summary of an [`import_paths`] run.
#[derive(Debug, Default)]
pub struct ImportReport {
    /// Files newly copied into storage.
    pub stored: u64,
    /// Files whose identical object was stored already.
    pub already_stored: u64,
    /// Files that could not be imported (and unreadable directory entries),
    /// sorted by path.
    pub failed: Vec<(PathBuf, ImportError)>,
    /// Bytes newly copied into storage (the sizes of the `stored` files).
    pub bytes: u64,
}

/// Walks files and folders (recursively, in file name order, following
/// symlinks with loop detection) and imports every regular file found,
/// `IMPORT_CONCURRENCY` at a time. Never aborts on a bad file: each failure
/// becomes an entry of [`ImportReport::failed`].
pub async fn import_paths(
    archive: &Archive,
    paths: &[PathBuf],
    progress: &(dyn ImportProgress + Sync),
) -> ImportReport {
    let roots = paths.to_vec();
    // The walk does blocking directory I/O, possibly over large trees.
    let (files, walk_errors) = match tokio::task::spawn_blocking(move || walk(&roots)).await {
        Ok(walked) => walked,
        Err(e) => {
            let errors = paths
                .iter()
                .map(|p| ImportError::Internal {
                    path: p.clone(),
                    message: format!("directory walk failed: {e}"),
                })
                .collect();
            (Vec::new(), errors)
        }
    };
    progress.total((files.len() + walk_errors.len()) as u64);

    let mut report = ImportReport::default();
    for error in walk_errors {
        let path = error.path().to_path_buf();
        let result = Err(error);
        progress.file_done(&path, &result);
        if let Err(error) = result {
            report.failed.push((path, error));
        }
    }

    let mut results = futures_util::stream::iter(files)
        .map(|path| async move {
            let result = archive.import_file(&path).await;
            (path, result)
        })
        .buffer_unordered(IMPORT_CONCURRENCY);
    while let Some((path, result)) = results.next().await {
        progress.file_done(&path, &result);
        match result {
            Ok(Imported::Stored(instance)) => {
                report.stored += 1;
                report.bytes += instance.size;
            }
            Ok(Imported::AlreadyStored(_)) => report.already_stored += 1,
            Err(error) => report.failed.push((path, error)),
        }
    }
    report.failed.sort_by(|a, b| a.0.cmp(&b.0));
    report
}

/// Regular files under `roots`, in walk order, and the entries that could
/// not be read (including symlink loops and dangling links).
fn walk(roots: &[PathBuf]) -> (Vec<PathBuf>, Vec<ImportError>) {
    let mut files = Vec::new();
    let mut errors = Vec::new();
    for root in roots {
        for entry in WalkDir::new(root).follow_links(true).sort_by_file_name() {
            match entry {
                Ok(entry) if entry.file_type().is_file() => files.push(entry.into_path()),
                Ok(entry) if entry.file_type().is_dir() => {}
                Ok(entry) => {
                    // FIFOs, sockets, devices: opening a FIFO would block.
                    tracing::debug!(path = %entry.path().display(), "skipping: not a regular file");
                }
                Err(error) => {
                    let path = error.path().map_or_else(|| root.clone(), Path::to_path_buf);
                    errors.push(ImportError::Unreadable {
                        path,
                        source: error.into(),
                    });
                }
            }
        }
    }
    (files, errors)
}

/// See [`Archive::import_file`].
pub(super) async fn import_file(archive: &Archive, path: &Path) -> Result<Imported, ImportError> {
    let inner = &archive.inner;
    let (file, rec) = {
        // Bounds the memory of concurrent header parses.
        let _permit = inner
            .parse_permits
            .acquire()
            .await
            .map_err(|e| internal(path, e))?;
        let p = path.to_path_buf();
        blocking(path, move || read_header(&p)).await?
    };
    let index_err = |source| ImportError::Index {
        path: path.to_path_buf(),
        source,
    };

    // Re-imports are the common case of a duplicate: compare with the stored
    // copy directly instead of copying first.
    if let Some(found) = inner.index.get(&rec.sop_iuid).await.map_err(index_err)?
        && tokio::fs::try_exists(&found.path).await.unwrap_or(false)
    {
        let stored = found.path.clone();
        let size = rec.size;
        let same = blocking(path, {
            let path = path.to_path_buf();
            move || same_content(file, size, &stored).map_err(|e| compare_err(&path, &stored, e))
        })
        .await?;
        return outcome(path, found, same);
    }

    let dest = resolve(&inner.storage, &rec.rel_path);
    let tmp = blocking(path, {
        let (path, dest, size) = (path.to_path_buf(), dest.clone(), rec.size);
        move || {
            copy_to_temp(file, size, &dest).map_err(|source| ImportError::Store {
                path,
                dest,
                source,
            })
        }
    })
    .await?;

    let size = rec.size;
    let committed = inner.index.commit(rec, tmp.clone()).await;
    match settle(path, &tmp, dest, size, committed).await? {
        Settled::Stored(instance) => {
            tracing::debug!(path = %path.display(), sop_iuid = %instance.sop_iuid, "stored");
            Ok(Imported::Stored(instance))
        }
        // Lost a race with a concurrent import of the same UID.
        Settled::Existing(found, same) => outcome(path, found, same),
    }
}

/// What a commit of `tmp` (bound for `dest`) came to.
enum Settled {
    /// Stored, its directory durable.
    Stored(super::StoredInstance),
    /// Another file holds the UID; whether it has the same bytes.
    Existing(super::StoredInstance, bool),
}

/// Finishes a commit of `tmp` for `path`: makes a stored file's directory
/// durable, compares a refused one with the stored file, and removes the
/// temp file wherever it was not renamed into place.
async fn settle(
    path: &Path,
    tmp: &Path,
    dest: PathBuf,
    size: u64,
    committed: Result<Commit, super::IndexError>,
) -> Result<Settled, ImportError> {
    match committed {
        Ok(Commit::Stored(instance)) => {
            // The rename is durable only once its directory is. Done
            // before the file is reported stored; should it not happen (a
            // crash), the index row points at a missing file, which the
            // next import of the same object restores.
            blocking(path, {
                let path = path.to_path_buf();
                move || {
                    sync_parent(&dest).map_err(|source| ImportError::Store { path, dest, source })
                }
            })
            .await?;
            Ok(Settled::Stored(instance))
        }
        Ok(Commit::Existing(found)) => {
            let stored = found.path.clone();
            let same = blocking(path, {
                let path = path.to_path_buf();
                let tmp = tmp.to_path_buf();
                move || {
                    let result = File::open(&tmp).and_then(|f| same_content(f, size, &stored));
                    remove_quietly(&tmp);
                    result.map_err(|e| compare_err(&path, &stored, e))
                }
            })
            .await?;
            Ok(Settled::Existing(found, same))
        }
        Ok(Commit::RenameFailed(source)) => {
            remove_quietly_async(tmp).await;
            Err(ImportError::Store {
                path: path.to_path_buf(),
                dest,
                source,
            })
        }
        Err(source) => {
            // If the rename happened before the failure the temp file is
            // gone and the stored file is orphaned; a later import reuses it.
            remove_quietly_async(tmp).await;
            Err(ImportError::Index {
                path: path.to_path_buf(),
                source,
            })
        }
    }
}

/// The exports to record with a received object, decided from its header
/// ([`super::Archive::store_received`]).
#[derive(Debug, Default)]
pub struct PlannedExports {
    /// Recorded with the instance when it is new.
    pub when_new: Vec<super::PendingExport>,
    /// Recorded when the identical object was stored before (rules that
    /// export reoccurred instances).
    pub when_again: Vec<super::PendingExport>,
}

/// See [`super::Archive::store_received`].
pub(super) async fn store_received<P>(
    archive: &Archive,
    tmp: PathBuf,
    plan: P,
) -> Result<Imported, ImportError>
where
    P: FnOnce(&DefaultDicomObject, &InstanceRecord) -> PlannedExports + Send + 'static,
{
    let inner = &archive.inner;
    let path = tmp.as_path();
    let storage = inner.storage.clone();
    let parsed = {
        let _permit = inner
            .parse_permits
            .acquire()
            .await
            .map_err(|e| internal(path, e))?;
        let p = tmp.clone();
        blocking(path, move || {
            let (file, rec, obj) = read_header_object(&p)?;
            drop(file);
            let planned = plan(&obj, &rec);
            let dest = resolve(&storage, &rec.rel_path);
            // The rename below moves the file into this directory.
            create_dir_durable(dest.parent().unwrap_or(&storage)).map_err(|source| {
                ImportError::Store {
                    path: p.clone(),
                    dest: dest.clone(),
                    source,
                }
            })?;
            Ok((rec, planned, dest))
        })
        .await
    };
    let (rec, planned, dest) = match parsed {
        Ok(x) => x,
        Err(e) => {
            remove_quietly_async(path).await;
            return Err(e);
        }
    };
    let index_err = |source| ImportError::Index {
        path: path.to_path_buf(),
        source,
    };
    let size = rec.size;
    let committed = inner
        .index
        .commit_with_exports(rec, tmp.clone(), planned.when_new)
        .await;
    match settle(path, &tmp, dest, size, committed).await? {
        Settled::Stored(instance) => Ok(Imported::Stored(instance)),
        Settled::Existing(found, same) => {
            if same && !planned.when_again.is_empty() {
                inner
                    .index
                    .add_exports(planned.when_again)
                    .await
                    .map_err(index_err)?;
            }
            outcome(path, found, same)
        }
    }
}

/// See [`super::Archive::received_study`].
pub(super) async fn received_study(archive: &Archive, path: &Path) -> Result<String, ImportError> {
    // Parsing takes the same permits as storing: the header parse is the
    // memory-hungry step both bound.
    let _permit = archive
        .inner
        .parse_permits
        .acquire()
        .await
        .map_err(|e| internal(path, e))?;
    let p = path.to_path_buf();
    blocking(path, move || read_header(&p).map(|(_, rec)| rec.study_iuid)).await
}

fn outcome(path: &Path, found: super::StoredInstance, same: bool) -> Result<Imported, ImportError> {
    if same {
        Ok(Imported::AlreadyStored(found))
    } else {
        Err(ImportError::Conflict {
            path: path.to_path_buf(),
            sop_iuid: found.sop_iuid,
            stored: found.path,
        })
    }
}

fn compare_err(path: &Path, stored: &Path, e: io::Error) -> ImportError {
    ImportError::Internal {
        path: path.to_path_buf(),
        message: format!(
            "cannot compare with the stored copy {}: {e}",
            stored.display()
        ),
    }
}

fn internal(path: &Path, e: impl std::fmt::Display) -> ImportError {
    ImportError::Internal {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// Runs blocking file work on Tokio's blocking pool.
async fn blocking<T, F>(path: &Path, f: F) -> Result<T, ImportError>
where
    F: FnOnce() -> Result<T, ImportError> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| internal(path, format!("background task failed: {e}")))?
}

/// [`remove_quietly`] for async code: the unlink runs off the runtime.
async fn remove_quietly_async(path: &Path) {
    if let Err(e) = tokio::fs::remove_file(path).await
        && e.kind() != io::ErrorKind::NotFound
    {
        tracing::warn!(path = %path.display(), error = %e, "cannot remove temp file");
    }
}

fn remove_quietly(path: &Path) {
    if let Err(e) = std::fs::remove_file(path)
        && e.kind() != io::ErrorKind::NotFound
    {
        tracing::warn!(path = %path.display(), error = %e, "cannot remove temp file");
    }
}

/// Opens `path`, pre-scans it, parses file meta and data set up to Pixel
/// Data, and extracts what the index needs. Returns the open file too, so
/// that the bytes copied are those of the file that was checked.
fn read_header(path: &Path) -> Result<(File, InstanceRecord), ImportError> {
    read_header_object(path).map(|(file, rec, _)| (file, rec))
}

/// [`read_header`] that also returns the parsed header (meta and data set
/// up to Pixel Data), for export rules' conditions.
fn read_header_object(
    path: &Path,
) -> Result<(File, InstanceRecord, DefaultDicomObject), ImportError> {
    let unreadable = |source| ImportError::Unreadable {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(unreadable)?;
    let meta = file.metadata().map_err(unreadable)?;
    if !meta.is_file() {
        return Err(ImportError::NotDicom {
            path: path.to_path_buf(),
            reason: "not a regular file".to_string(),
        });
    }
    let size = meta.len();
    let mut reader = BufReader::new(file);

    // Must come before dicom-object sees the file: see `scan`.
    let scanned = scan::scan(&mut reader, size).map_err(|e| match e {
        ScanError::NotDicom(reason) => ImportError::NotDicom {
            path: path.to_path_buf(),
            reason,
        },
        ScanError::Malformed(reason) => ImportError::Malformed {
            path: path.to_path_buf(),
            reason,
        },
        ScanError::Unsupported(reason) => ImportError::UnsupportedTransferSyntax {
            path: path.to_path_buf(),
            reason,
        },
        ScanError::Io(source) => unreadable(source),
    })?;

    reader
        .seek(SeekFrom::Start(PREAMBLE_LEN))
        .map_err(unreadable)?;
    let obj = OpenFileOptions::new()
        .read_preamble(ReadPreamble::Never)
        .read_until(tags::PIXEL_DATA)
        .from_reader(&mut reader)
        .map_err(|e| ImportError::Malformed {
            path: path.to_path_buf(),
            reason: error_chain(&e),
        })?;

    let study_iuid = required_uid(path, &obj, tags::STUDY_INSTANCE_UID, "StudyInstanceUID")?;
    let series_iuid = required_uid(path, &obj, tags::SERIES_INSTANCE_UID, "SeriesInstanceUID")?;
    let sop_iuid = required_uid(path, &obj, tags::SOP_INSTANCE_UID, "SOPInstanceUID")?;
    // The class only goes into the index and the STOW-RS response, never
    // into a path; the file meta copy is an acceptable fallback.
    let sop_cuid = match uid_text(&obj, tags::SOP_CLASS_UID) {
        Some(uid) => uid,
        None => {
            let meta_cuid = obj.meta().media_storage_sop_class_uid();
            if meta_cuid.is_empty() {
                return Err(missing(path, tags::SOP_CLASS_UID, "SOPClassUID"));
            }
            meta_cuid.to_string()
        }
    };
    let meta_iuid = obj.meta().media_storage_sop_instance_uid();
    if meta_iuid != sop_iuid {
        tracing::warn!(
            path = %path.display(),
            sop_iuid,
            media_storage_sop_instance_uid = meta_iuid,
            "SOP Instance UID differs from the file meta; using the data set's"
        );
    }

    let rel_path = format!("{study_iuid}/{series_iuid}/{sop_iuid}.dcm");
    let rec = InstanceRecord {
        study_iuid,
        series_iuid,
        sop_iuid,
        sop_cuid,
        transfer_syntax: scanned.transfer_syntax,
        size,
        rel_path,
        patient_id: text(&obj, tags::PATIENT_ID),
        study_date: text(&obj, tags::STUDY_DATE),
        modality: text(&obj, tags::MODALITY),
        accession_number: text(&obj, tags::ACCESSION_NUMBER),
        series_number: integer(&obj, tags::SERIES_NUMBER),
        instance_number: integer(&obj, tags::INSTANCE_NUMBER),
    };
    Ok((reader.into_inner(), rec, obj))
}

/// A UID value with its trailing `\0`/space padding removed; `None` when
/// absent, empty or not textual.
fn uid_text(obj: &DefaultDicomObject, tag: Tag) -> Option<String> {
    let value = obj.get(tag)?.value().to_str().ok()?;
    let value = value.trim_end_matches(['\0', ' ']);
    (!value.is_empty()).then(|| value.to_string())
}

/// A text attribute with its padding removed; `None` when absent or empty.
fn text(obj: &DefaultDicomObject, tag: Tag) -> Option<String> {
    let value = obj.get(tag)?.value().to_str().ok()?;
    let value = value.trim_matches(['\0', ' ']);
    (!value.is_empty()).then(|| value.to_string())
}

/// An IS attribute; `None` when absent or not a single integer.
fn integer(obj: &DefaultDicomObject, tag: Tag) -> Option<i64> {
    text(obj, tag)?.parse().ok()
}

fn missing(path: &Path, tag: Tag, name: &'static str) -> ImportError {
    ImportError::MissingAttribute {
        path: path.to_path_buf(),
        name,
        tag: tag.to_string(),
    }
}

fn required_uid(
    path: &Path,
    obj: &DefaultDicomObject,
    tag: Tag,
    name: &'static str,
) -> Result<String, ImportError> {
    let value = uid_text(obj, tag).ok_or_else(|| missing(path, tag, name))?;
    check_uid(&value).map_err(|reason| ImportError::InvalidUid {
        path: path.to_path_buf(),
        name,
        tag: tag.to_string(),
        value: value.clone(),
        reason,
    })?;
    Ok(value)
}

/// UIDs become storage path components, so only the UID syntax is allowed:
/// digits and dots, no empty component (which also rules out `.` and `..`),
/// at most 64 characters.
pub(super) fn check_uid(uid: &str) -> Result<(), &'static str> {
    if uid.len() > MAX_UID_LEN {
        return Err("longer than 64 characters");
    }
    if !uid.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Err("only digits and dots are allowed");
    }
    if uid.split('.').any(str::is_empty) {
        return Err("empty component (leading, trailing or doubled dot)");
    }
    Ok(())
}

/// fsyncs the directory holding `path`, so that a name created in it by a
/// rename or a `mkdir` survives a power loss.
fn sync_parent(path: &Path) -> io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| io::Error::other("storage path has no parent directory"))?;
    File::open(dir)?.sync_all()
}

/// `create_dir_all` whose new directories survive a power loss: each one
/// created here is made durable in its parent.
fn create_dir_durable(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        create_dir_durable(parent)?;
    }
    match std::fs::create_dir(dir) {
        Ok(()) => sync_parent(dir),
        // Made by a concurrent import, which may not have synced it yet.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => sync_parent(dir),
        Err(e) => Err(e),
    }
}

/// Copies `file` (from its start) to a temp file next to `dest` and fsyncs
/// it; the caller renames it into place. `size` is the size the file had
/// when checked.
fn copy_to_temp(mut file: File, size: u64, dest: &Path) -> io::Result<PathBuf> {
    let dir = dest
        .parent()
        .ok_or_else(|| io::Error::other("storage path has no parent directory"))?;
    create_dir_durable(dir)?;
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // Same directory as the destination, so the rename is atomic; hidden
    // and randomised so concurrent imports never share a temp file.
    let tmp = dir.join(format!(".{name}.{:016x}.tmp", rand::random::<u64>()));
    let result = (|| {
        file.seek(SeekFrom::Start(0))?;
        let mut out = File::create_new(&tmp)?;
        let copied = io::copy(&mut file, &mut out)?;
        if copied != size {
            return Err(io::Error::other(format!(
                "source changed during import: {size} bytes when checked, {copied} copied"
            )));
        }
        // The data is on disk before a name points to it: a rename that
        // survives a crash without its data would leave an empty file.
        out.sync_all()
    })();
    match result {
        Ok(()) => Ok(tmp),
        Err(e) => {
            remove_quietly(&tmp);
            Err(e)
        }
    }
}

/// Whether `file` (read from its start, `size` bytes) has exactly the
/// content of `stored`. A missing stored file counts as different.
fn same_content(mut file: File, size: u64, stored: &Path) -> io::Result<bool> {
    let mut other = match File::open(stored) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    if other.metadata()?.len() != size {
        return Ok(false);
    }
    file.seek(SeekFrom::Start(0))?;
    let mut a = vec![0u8; COMPARE_CHUNK];
    let mut b = vec![0u8; COMPARE_CHUNK];
    loop {
        let n = read_full(&mut file, &mut a)?;
        let m = read_full(&mut other, &mut b)?;
        if n != m || a[..n] != b[..m] {
            return Ok(false);
        }
        if n == 0 {
            return Ok(true);
        }
    }
}

/// Reads until `buf` is full or EOF; returns the bytes read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// An error with its sources: dicom-object's top-level messages alone
/// ("Could not read data set token") rarely say what was wrong.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let msg = s.to_string();
        if !out.contains(&msg) {
            out.push_str(": ");
            out.push_str(&msg);
        }
        source = s.source();
    }
    out
}
