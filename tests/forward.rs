//! Receiving by DICOM C-STORE and forwarding by `dcmExportRule` (issue
//! 15), with dcmtk's `echoscu` and `storescu` as the real clients of the
//! service's Storage SCP, the real stowrsd as the destination, and a
//! hostile DIMSE client written here (dicom-ul) for what dcmtk cannot do on
//! demand (an association aborted mid-object).

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use serde_json::Value;
use stow_exporter::app::Application;
use stow_exporter::config::ConfigSource;

const DEV: &str =
    "dicomDeviceName=dcm4chee-arc,cn=Devices,cn=DICOM Configuration,dc=dcm4che,dc=org";
const AE_DN: &str = "dicomAETitle=DCM4CHEE1,dicomDeviceName=dcm4chee-arc,cn=Devices,cn=DICOM Configuration,dc=dcm4che,dc=org";

/// A `dcmExportRule` of the device to the exporter STOWRSD.
fn rule(cn: &str, entity: &str, duration: &str, more: &[&str]) -> String {
    rule_to(cn, "STOWRSD", entity, duration, more)
}

/// A `dcmExportRule` of the device to `exporter`. Rules naming the same
/// exporter for the same entity share one task, as in dcm4chee: tests
/// that tell rules apart give each its own exporter ([`exporter`]).
fn rule_to(cn: &str, exporter: &str, entity: &str, duration: &str, more: &[&str]) -> String {
    let mut s = format!(
        "dn: cn={cn},{DEV}\nobjectClass: dcmExportRule\ncn: {cn}\ndcmEntity: {entity}\n\
         dcmDuration: {duration}\ndcmExporterID: {exporter}\n"
    );
    for m in more {
        s.push_str(m);
        s.push('\n');
    }
    s.push('\n');
    s
}

/// One more exporter to the built-in receiver's web app.
fn exporter(id: &str) -> String {
    format!(
        "dn: dcmExporterID={id},{DEV}\nobjectClass: dcmExporter\ndcmExporterID: {id}\n\
         dcmURI: stow:stowrsd\ndicomAETitle: {AET}\ndcmQueueName: Export\n\n"
    )
}

/// Asserts that the receiver in `dir` holds each of `sources` with the
/// same data set (the archive's meta group is its own).
fn assert_forwarded(dir: &Path, sources: &[PathBuf]) {
    for src in sources {
        let got = dir.join(format!("{}.dcm", sop_uid(src)));
        assert!(got.exists(), "{} forwarded", src.display());
        assert_same_object(src, &got);
    }
}

/// A running service with its Storage SCP on a free loopback port.
struct Bridge {
    svc: Service,
    scp: SocketAddr,
    data: PathBuf,
    cfg: PathBuf,
}

async fn start(dir: &Path, receiver_port: u16, extra: &str) -> Bridge {
    let cfg = write_config(dir, receiver_port, extra);
    let data = dir.join("data");
    let settings = Service::settings(ConfigSource::Ldif(cfg.clone()), &data);
    let app = Application::build(settings)
        .await
        .expect("application builds");
    let scp = app.dicom_addrs()[0];
    let svc = Service::start_app(app, &data);
    Bridge {
        svc,
        scp,
        data,
        cfg,
    }
}

/// Runs a dcmtk tool; (success, stdout + stderr).
async fn dcmtk(tool: &str, args: &[String]) -> (bool, String) {
    let out = tokio::process::Command::new(tool)
        .args(args)
        .output()
        .await
        .unwrap_or_else(|e| panic!("{tool} runs (dcmtk is installed by scripts/test.sh): {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn peer_args(scp: SocketAddr, calling: &str, called: &str) -> Vec<String> {
    vec![
        "-aet".into(),
        calling.into(),
        "-aec".into(),
        called.into(),
        scp.ip().to_string(),
        scp.port().to_string(),
    ]
}

async fn echoscu(scp: SocketAddr, calling: &str, called: &str) -> (bool, String) {
    dcmtk("echoscu", &peer_args(scp, calling, called)).await
}

async fn storescu(scp: SocketAddr, calling: &str, files: &[PathBuf]) -> (bool, String) {
    storescu_with(scp, calling, &[], files).await
}

/// `storescu` with `options` (e.g. `-xw`: propose JPEG 2000 too, so that
/// such objects travel and are stored as they are).
async fn storescu_with(
    scp: SocketAddr,
    calling: &str,
    options: &[&str],
    files: &[PathBuf],
) -> (bool, String) {
    let mut args: Vec<String> = options.iter().map(|o| o.to_string()).collect();
    args.extend(peer_args(scp, calling, AET));
    args.extend(files.iter().map(|f| f.display().to_string()));
    dcmtk("storescu", &args).await
}

/// Where the archive keeps the object `src`.
fn stored_path(data: &Path, src: &Path) -> PathBuf {
    let obj = dicom_object::open_file(src).unwrap();
    let s = |tag| {
        obj.element(tag)
            .unwrap()
            .to_str()
            .unwrap()
            .trim_end_matches('\0')
            .to_string()
    };
    data.join("storage")
        .join(s(dicom_dictionary_std::tags::STUDY_INSTANCE_UID))
        .join(s(dicom_dictionary_std::tags::SERIES_INSTANCE_UID))
        .join(format!(
            "{}.dcm",
            s(dicom_dictionary_std::tags::SOP_INSTANCE_UID)
        ))
}

/// A Part-10 file's data set bytes (after the meta group) and its
/// transfer syntax.
fn data_set(path: &Path) -> (Vec<u8>, String) {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(&bytes[128..132], b"DICM", "{} is Part-10", path.display());
    // (0002,0000) UL, explicit VR: tag, "UL", length 4, value.
    let group_len = u32::from_le_bytes(bytes[140..144].try_into().unwrap()) as usize;
    let end = 144 + group_len;
    let meta = dicom_object::OpenFileOptions::new()
        .read_until(dicom_dictionary_std::tags::PIXEL_DATA)
        .open_file(path)
        .unwrap();
    let ts = meta
        .meta()
        .transfer_syntax()
        .trim_end_matches('\0')
        .to_string();
    (bytes[end..].to_vec(), ts)
}

/// The differences between two data sets: attributes, VRs and values,
/// into sequence items; pixel data (native or each compressed fragment)
/// byte for byte; group lengths and item lengths, which senders may
/// encode either way, aside.
fn differences(
    a: &dicom_object::InMemDicomObject,
    b: &dicom_object::InMemDicomObject,
    at: &str,
    out: &mut Vec<String>,
) {
    use dicom_core::value::Value;
    let compared = |t: &dicom_core::Tag| t.element() != 0 && *t != dicom_core::Tag(0xFFFC, 0xFFFC);
    let tags = |o: &dicom_object::InMemDicomObject| -> Vec<dicom_core::Tag> {
        o.iter().map(|e| e.header().tag).filter(compared).collect()
    };
    if tags(a) != tags(b) {
        out.push(format!("{at}: attributes {:?} vs {:?}", tags(a), tags(b)));
        return;
    }
    for e in a.iter().filter(|e| compared(&e.header().tag)) {
        let tag = e.header().tag;
        let other = b.element(tag).unwrap();
        if e.vr() != other.vr() {
            out.push(format!("{at}{tag}: VR {:?} vs {:?}", e.vr(), other.vr()));
            continue;
        }
        match (e.value(), other.value()) {
            (Value::Sequence(x), Value::Sequence(y)) => {
                if x.items().len() != y.items().len() {
                    out.push(format!("{at}{tag}: item count"));
                    continue;
                }
                for (i, (p, q)) in x.items().iter().zip(y.items()).enumerate() {
                    differences(p, q, &format!("{at}{tag}[{i}]."), out);
                }
            }
            (Value::PixelSequence(x), Value::PixelSequence(y)) => {
                if x.fragments() != y.fragments() || x.offset_table() != y.offset_table() {
                    out.push(format!("{at}{tag}: fragments"));
                }
            }
            (x, y) => {
                if x != y {
                    out.push(format!("{at}{tag}: value"));
                }
            }
        }
    }
}

/// Asserts that two Part-10 objects hold the same data set (see
/// [`differences`]) in the same transfer syntax.
fn assert_same_object(want: &Path, have: &Path) {
    let a = dicom_object::open_file(want).unwrap();
    let b = dicom_object::open_file(have).unwrap();
    let mut diff = Vec::new();
    differences(&a, &b, "", &mut diff);
    assert!(
        diff.is_empty(),
        "{} vs {}: {diff:?}",
        want.display(),
        have.display()
    );
    assert_eq!(
        a.meta().transfer_syntax().trim_end_matches('\0'),
        b.meta().transfer_syntax().trim_end_matches('\0'),
        "{}: stored in the transfer syntax it was sent in",
        want.display()
    );
}

/// Asserts that `data` holds each of `sources` as received, behind a meta
/// group naming the object and the calling AE.
fn assert_stored(data: &Path, sources: &[PathBuf], calling: &str) {
    for src in sources {
        let got = stored_path(data, src);
        assert!(
            got.exists(),
            "{} stored as {}",
            src.display(),
            got.display()
        );
        assert_same_object(src, &got);
        let meta = dicom_object::open_file(&got).unwrap();
        let m = meta.meta();
        assert_eq!(
            m.media_storage_sop_instance_uid().trim_end_matches('\0'),
            sop_uid(src)
        );
        assert_eq!(
            m.source_application_entity_title
                .as_deref()
                .map(|s| s.trim_end_matches([' ', '\0'])),
            Some(calling)
        );
    }
}

/// The service's `/metrics` text.
async fn metrics(svc: &Service) -> String {
    let r = svc.http.get(format!("http://{}/metrics", svc.addr)).send();
    r.await.unwrap().text().await.unwrap()
}

/// The tasks whose batchID is `rule`.
async fn rule_tasks(svc: &Service, rule: &str) -> Vec<Value> {
    svc.list("")
        .await
        .into_iter()
        .filter(|t| t["batchID"] == rule)
        .collect()
}

/// Waits for `n` tasks of `rule` to end; returns them.
async fn wait_rule_tasks(svc: &Service, rule: &str, n: usize) -> Vec<Value> {
    eventually(Duration::from_secs(60), || async {
        let l = rule_tasks(svc, rule).await;
        if l.len() >= n && l.iter().all(ended) {
            Ok(l)
        } else {
            Err(format!("rule {rule}: waiting for {n} ended tasks: {l:?}"))
        }
    })
    .await
}

async fn next_export_due(data: &Path) -> Option<chrono::DateTime<chrono::Utc>> {
    let a = stow_exporter::archive::Archive::open(data).await.unwrap();
    a.next_export_due().await.unwrap()
}

#[tokio::test]
async fn echoscu_and_storescu_objects_are_stored_byte_for_byte() {
    let tmp = tempfile::tempdir().unwrap();
    let b = start(tmp.path(), free_port(), "").await;
    let (ok, out) = echoscu(b.scp, "MODALITY1", AET).await;
    assert!(ok, "C-ECHO: {out}");

    let (_, mut files) = study(&tmp.path().join("src"), 3, 64);
    let (ok, out) = storescu(b.scp, "MODALITY1", &files).await;
    assert!(ok, "C-STORE: {out}");
    // Compressed objects are stored as received, in their transfer syntax.
    let py = pydicom_files();
    for (option, name) in [
        ("-xw", "JPEG2000.dcm"),
        ("-xt", "MR_small_jpeg_ls_lossless.dcm"),
        ("-xs", "SC_rgb_jpeg_gdcm.dcm"),
        ("-xy", "SC_rgb_jpeg_dcmtk.dcm"),
    ] {
        let f = py.join(name);
        let (ok, out) =
            storescu_with(b.scp, "MODALITY1", &[option], std::slice::from_ref(&f)).await;
        assert!(ok, "C-STORE {name}: {out}");
        files.push(f);
    }
    // Another object under a SOP Instance UID the archive holds (pydicom's
    // RLE copy of the JPEG-LS one) is refused, the stored one kept.
    let (ok, out) = storescu_with(
        b.scp,
        "MODALITY1",
        &["-v", "-xr"],
        &[py.join("MR_small_RLE.dcm")],
    )
    .await;
    assert!(
        !ok || out.contains("Duplicate") || out.contains("0x0111"),
        "{out}"
    );
    assert_stored(&b.data, &files, "MODALITY1");
    // Indexed like an imported object: exportable by the REST API.
    let a = stow_exporter::archive::Archive::open(&b.data)
        .await
        .unwrap();
    assert_eq!(a.count().await.unwrap(), files.len() as u64);
    // Nothing left behind in the receiving area.
    let incoming = b.data.join("storage").join(".incoming");
    let left: Vec<_> = std::fs::read_dir(&incoming)
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "temp files left: {left:?}");

    // Sending the same objects again is answered with success, nothing
    // stored twice.
    let (ok, out) = storescu(b.scp, "MODALITY1", &files[..1]).await;
    assert!(ok, "repeated C-STORE: {out}");
    assert_eq!(a.count().await.unwrap(), files.len() as u64);

    let metrics = metrics(&b.svc).await;
    let line = metrics
        .lines()
        .find(|l| {
            l.starts_with("stow_exporter_received_instances")
                && l.contains("calling_aet=\"MODALITY1\"")
                && l.contains("result=\"stored\"")
        })
        .unwrap_or_else(|| panic!("received instances counted: {metrics}"));
    assert!(line.contains("path=\"dimse\""), "{line}");
    assert!(line.ends_with(&format!(" {}", files.len())), "{line}");
    b.svc.stop().await;
}

#[tokio::test]
async fn a_study_sent_over_several_associations_becomes_one_task() {
    let tmp = tempfile::tempdir().unwrap();
    let rcv = Receiver::start(&tmp.path().join("received"), Duration::ZERO).await;
    let extra = rule("Whole study", "Study", "PT3S", &[]);
    let b = start(tmp.path(), rcv.addr.port(), &extra).await;
    let (_, files) = study(&tmp.path().join("src"), 4, 32);
    // Four associations, each instance pushing the study's export back
    // to dcmDuration after it.
    for f in &files {
        let before = chrono::Utc::now();
        let (ok, out) = storescu(b.scp, "MODALITY1", std::slice::from_ref(f)).await;
        assert!(ok, "{out}");
        eventually(Duration::from_secs(10), || async {
            match next_export_due(&b.data).await {
                Some(due) if due >= before + chrono::Duration::seconds(3) => Ok(()),
                other => Err(format!("the study's export is due {other:?}")),
            }
        })
        .await;
    }
    let tasks = wait_rule_tasks(&b.svc, "Whole study", 1).await;
    assert_eq!(tasks.len(), 1, "one task for the study: {tasks:?}");
    assert_eq!(tasks[0]["status"], "COMPLETED", "{tasks:?}");
    assert_eq!(tasks[0]["completed"], files.len(), "{tasks:?}");
    assert_eq!(tasks[0]["ExporterID"], "STOWRSD", "{tasks:?}");
    assert_forwarded(&rcv.dir, &files);
    // Nothing is pending any more.
    assert_eq!(next_export_due(&b.data).await, None);
    b.svc.stop().await;
}

#[tokio::test]
async fn conditions_decide_which_rules_forward() {
    let tmp = tempfile::tempdir().unwrap();
    let rcv = Receiver::start(&tmp.path().join("received"), Duration::ZERO).await;
    let rules = [
        (
            "CT from MODALITY1",
            &[
                "dcmProperty: Modality=CT",
                "dcmProperty: SendingApplicationEntityTitle=MODALITY1",
            ][..],
            true,
        ),
        ("MR only", &["dcmProperty: Modality=MR"][..], false),
        (
            "Not from MODALITY1",
            &["dcmProperty: SendingApplicationEntityTitle!=MODALITY1"][..],
            false,
        ),
        ("Anything but SR", &["dcmProperty: Modality!=SR"][..], true),
        (
            "Referencing study 1.2.3.4",
            &["dcmProperty: ReferencedStudySequence.ReferencedSOPInstanceUID=1\\.2\\.3\\.4"][..],
            true,
        ),
        (
            "Referencing study 9.9",
            &["dcmProperty: ReferencedStudySequence.ReferencedSOPInstanceUID=9\\.9"][..],
            false,
        ),
        (
            "Received by another AE",
            &["dcmProperty: ReceivingApplicationEntityTitle=OTHER"][..],
            false,
        ),
        (
            "From loopback",
            &[
                "dcmProperty: SendingHostname=127\\.0\\.0\\.1",
                "dcmProperty: (0008,0060)=C.",
            ][..],
            true,
        ),
    ];
    let extra: String = rules
        .iter()
        .enumerate()
        .map(|(i, (cn, props, _))| {
            exporter(&format!("R{i}")) + &rule_to(cn, &format!("R{i}"), "Series", "PT0S", props)
        })
        .collect();
    let b = start(tmp.path(), rcv.addr.port(), &extra).await;
    let (_, files) = study(&tmp.path().join("src"), 1, 32);
    // A sequence to match a path through: ReferencedStudySequence item 1.
    let (ok, out) = dcmtk(
        "dcmodify",
        &[
            "-nb".into(),
            "-i".into(),
            "(0008,1110)[0].(0008,1155)=1.2.3.4".into(),
            files[0].display().to_string(),
        ],
    )
    .await;
    assert!(ok, "{out}");
    let (ok, out) = storescu(b.scp, "MODALITY1", &files).await;
    assert!(ok, "{out}");
    for (cn, _, fires) in &rules {
        if *fires {
            let t = wait_rule_tasks(&b.svc, cn, 1).await;
            assert_eq!(t.len(), 1, "{cn}: {t:?}");
            assert_eq!(t[0]["status"], "COMPLETED", "{cn}: {t:?}");
        }
    }
    // Every pending export has become a task: the rules that did not fire
    // have none, and nothing waits for them.
    assert_eq!(next_export_due(&b.data).await, None);
    for (cn, _, fires) in &rules {
        if !*fires {
            let t = rule_tasks(&b.svc, cn).await;
            assert!(t.is_empty(), "{cn} must not fire: {t:?}");
        }
    }
    let metrics = metrics(&b.svc).await;
    for family in [
        "stow_exporter_export_rule_matches",
        "stow_exporter_export_rule_tasks",
    ] {
        let line = metrics
            .lines()
            .find(|l| l.starts_with(family) && l.contains("rule=\"Anything but SR\""))
            .unwrap_or_else(|| panic!("{family} counts the rule: {metrics}"));
        assert!(line.ends_with(" 1"), "{line}");
    }
    assert!(!metrics.contains("rule=\"MR only\""), "{metrics}");
    b.svc.stop().await;
}

#[tokio::test]
async fn a_rule_outside_its_schedule_waits_for_its_window() {
    let tmp = tempfile::tempdir().unwrap();
    let rcv = Receiver::start(&tmp.path().join("received"), Duration::ZERO).await;
    let closed = closed_hour();
    let extra = rule_to(
        "Nightly",
        "StowExporter",
        "Study",
        "PT0S",
        &[&format!("dcmSchedule: hour={closed}")],
    ) + &rule("At once", "Study", "PT0S", &[]);
    let b = start(tmp.path(), rcv.addr.port(), &extra).await;
    let (_, files) = study(&tmp.path().join("src"), 1, 32);
    let (ok, out) = storescu(b.scp, "MODALITY1", &files).await;
    assert!(ok, "{out}");
    // The open rule's task shows the scheduler has looked at both.
    wait_rule_tasks(&b.svc, "At once", 1).await;
    assert!(rule_tasks(&b.svc, "Nightly").await.is_empty());
    // The closed rule's export is kept, due when its window opens.
    let due = next_export_due(&b.data)
        .await
        .expect("the closed rule's export is pending");
    use chrono::Timelike;
    let local = due.with_timezone(&chrono::Local);
    assert_eq!(
        (local.hour(), local.minute(), local.second()),
        (closed, 0, 0),
        "{local}"
    );
    assert!(due > chrono::Utc::now(), "{due}");
    b.svc.stop().await;
}

#[tokio::test]
async fn calling_and_called_ae_titles_are_checked() {
    let tmp = tempfile::tempdir().unwrap();
    let b = start(tmp.path(), free_port(), "").await;
    // No dcmAcceptedCallingAETitle: any calling AE is accepted.
    let (ok, out) = echoscu(b.scp, "INTRUDER", AET).await;
    assert!(ok, "{out}");
    let (ok, out) = echoscu(b.scp, "MODALITY1", "NOBODY").await;
    assert!(!ok, "a wrong called AE title is refused: {out}");
    assert!(out.contains("Called AE Title Not Recognized"), "{out}");

    // Listing accepted calling AE titles, then reloading.
    std::fs::write(
        b.cfg.join("99-test.ldif"),
        format!(
            "dn: {AE_DN}\nchangetype: modify\nadd: objectClass\nobjectClass: dcmNetworkAE\n-\n\
             add: dcmAcceptedCallingAETitle\ndcmAcceptedCallingAETitle: MODALITY1\n\
             dcmAcceptedCallingAETitle: MODALITY2\n-\n\n"
        ),
    )
    .unwrap();
    assert_eq!(b.svc.call(reqwest::Method::POST, "/ctrl/reload").await, 204);
    let (ok, out) = echoscu(b.scp, "INTRUDER", AET).await;
    assert!(!ok, "an unlisted calling AE is refused: {out}");
    assert!(out.contains("Calling AE Title Not Recognized"), "{out}");
    for calling in ["MODALITY1", "MODALITY2"] {
        let (ok, out) = echoscu(b.scp, calling, AET).await;
        assert!(ok, "{calling}: {out}");
    }
    let (_, files) = study(&tmp.path().join("src"), 1, 16);
    let (ok, _) = storescu(b.scp, "INTRUDER", &files).await;
    assert!(!ok);
    assert!(!stored_path(&b.data, &files[0]).exists());
    b.svc.stop().await;
}

/// An Implicit VR Little Endian command set.
fn command(elements: &[(u16, Vec<u8>)]) -> Vec<u8> {
    let mut body = Vec::new();
    for (elem, value) in elements {
        body.extend_from_slice(&0u16.to_le_bytes());
        body.extend_from_slice(&elem.to_le_bytes());
        body.extend_from_slice(&(value.len() as u32).to_le_bytes());
        body.extend_from_slice(value);
    }
    let mut out = Vec::new();
    out.extend_from_slice(&[0, 0, 0, 0, 4, 0, 0, 0]);
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

fn ui(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    if v.len() % 2 == 1 {
        v.push(0);
    }
    v
}

#[tokio::test]
async fn an_association_ending_mid_object_stores_nothing() {
    use dicom_ul::pdu::{PDataValue, PDataValueType};
    use dicom_ul::{ClientAssociationOptions, Pdu};

    let tmp = tempfile::tempdir().unwrap();
    let b = start(tmp.path(), free_port(), "").await;
    let (_, files) = study(&tmp.path().join("src"), 1, 256);
    let (set, ts) = data_set(&files[0]);
    let sop = sop_uid(&files[0]);
    let incoming = b.data.join("storage").join(".incoming");
    let parts = || -> Vec<PathBuf> {
        std::fs::read_dir(&incoming)
            .map(|d| d.map(|e| e.unwrap().path()).collect())
            .unwrap_or_default()
    };

    for abort in [true, false] {
        let mut assoc = ClientAssociationOptions::new()
            .calling_ae_title("HOSTILE")
            .called_ae_title(AET)
            .with_presentation_context(
                dicom_dictionary_std::uids::CT_IMAGE_STORAGE,
                vec![ts.as_str()],
            )
            .establish_async(b.scp)
            .await
            .unwrap();
        let pc = assoc.presentation_contexts()[0].id;
        let rq = command(&[
            (0x0002, ui(dicom_dictionary_std::uids::CT_IMAGE_STORAGE)),
            (0x0100, 0x0001u16.to_le_bytes().to_vec()),
            (0x0110, 7u16.to_le_bytes().to_vec()),
            (0x0700, 0u16.to_le_bytes().to_vec()),
            (0x0800, 0u16.to_le_bytes().to_vec()),
            (0x1000, ui(&sop)),
        ]);
        assoc
            .send(&Pdu::PData {
                data: vec![PDataValue {
                    presentation_context_id: pc,
                    value_type: PDataValueType::Command,
                    is_last: true,
                    data: rq,
                }],
            })
            .await
            .unwrap();
        // Half the data set, not the last fragment.
        assoc
            .send(&Pdu::PData {
                data: vec![PDataValue {
                    presentation_context_id: pc,
                    value_type: PDataValueType::Data,
                    is_last: false,
                    data: set[..set.len() / 2].to_vec(),
                }],
            })
            .await
            .unwrap();
        // The SCP is writing it: its temp file exists.
        eventually(Duration::from_secs(10), || async {
            if parts().is_empty() {
                Err("no temp file yet".to_string())
            } else {
                Ok(())
            }
        })
        .await;
        if abort {
            assoc.abort().await.unwrap();
        } else {
            // The socket just closes.
            drop(assoc);
        }
        eventually(Duration::from_secs(10), || async {
            let left = parts();
            if left.is_empty() {
                Ok(())
            } else {
                Err(format!("temp files left: {left:?}"))
            }
        })
        .await;
        assert!(!stored_path(&b.data, &files[0]).exists());
    }
    let a = stow_exporter::archive::Archive::open(&b.data)
        .await
        .unwrap();
    assert_eq!(a.count().await.unwrap(), 0);
    // The SCP still serves others.
    let (ok, out) = storescu(b.scp, "MODALITY1", &files).await;
    assert!(ok, "{out}");
    assert_stored(&b.data, &files, "MODALITY1");
    b.svc.stop().await;
}

/// Starts the real binary: control API on `api`, Storage SCP on `scp`,
/// tasks on RabbitMQ; killed by its PID when dropped.
fn spawn_serve(cfg: &Path, data: &Path, api: u16, scp: u16) -> KillOnDrop {
    let log = std::fs::File::create(data.with_extension(format!("{api}.log"))).unwrap();
    KillOnDrop(
        std::process::Command::new(env!("CARGO_BIN_EXE_stow-exporter"))
            .arg("serve")
            .arg("--config")
            .arg(cfg)
            .arg("--data")
            .arg(data)
            .args(["--listen", &format!("127.0.0.1:{api}")])
            .args(["--dicom-listen", &format!("127.0.0.1:{scp}")])
            .args(["--queue", &common::amqp::amqp_url()])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    )
}

#[tokio::test]
async fn a_service_killed_between_store_and_task_creates_the_task_after_restart() {
    use common::amqp::{TestQueue, client};
    let tmp = tempfile::tempdir().unwrap();
    let rcv = Receiver::start(&tmp.path().join("received"), Duration::ZERO).await;
    let q = TestQueue::new();
    let (_conn, ch) = client(&common::amqp::amqp_url()).await;
    // The task is due 5 s after the last instance: the service is killed
    // before, with the objects stored and acknowledged.
    let extra = q.ldif("") + &rule_to("Survives a kill", &q.exporter, "Study", "PT5S", &[]);
    let cfg = write_config(tmp.path(), rcv.addr.port(), &extra);
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let (api, scp) = (free_port(), free_port());
    let mut serve = spawn_serve(&cfg, &data, api, scp);
    wait_up(api, Duration::from_secs(60)).await;
    let addr: SocketAddr = format!("127.0.0.1:{scp}").parse().unwrap();
    let (_, files) = study(&tmp.path().join("src"), 3, 32);
    let (ok, out) = storescu(addr, "MODALITY1", &files).await;
    assert!(ok, "{out}");
    serve.kill();

    // Every acknowledged object is stored, and its export is recorded.
    assert_stored(&data, &files, "MODALITY1");
    assert!(
        next_export_due(&data).await.is_some(),
        "the export of the stored study is pending"
    );
    let _serve = spawn_serve(&cfg, &data, api, scp);
    wait_up(api, Duration::from_secs(60)).await;
    let base = format!("http://127.0.0.1:{api}/dcm4chee-arc");
    let http = reqwest::Client::new();
    let task = eventually(Duration::from_secs(60), || async {
        let l: Vec<Value> = http
            .get(format!("{base}/monitor/export?batchID=Survives%20a%20kill"))
            .send()
            .await
            .map_err(|e| e.to_string())?
            .json()
            .await
            .map_err(|e| e.to_string())?;
        match l.as_slice() {
            [t] if ended(t) => Ok(t.clone()),
            _ => Err(format!("waiting for the rule's task: {l:?}")),
        }
    })
    .await;
    assert_eq!(task["status"], "COMPLETED", "{task}");
    assert_eq!(task["completed"], files.len(), "{task}");
    assert_forwarded(&rcv.dir, &files);
    assert_eq!(next_export_due(&data).await, None);
    q.delete(&ch).await;
}

#[path = "common/orthanc.rs"]
mod orthanc;

#[tokio::test]
async fn orthanc_to_orthanc_through_the_bridge() {
    let tmp = tempfile::tempdir().unwrap();
    let source = orthanc::Orthanc::start(None, None);
    let dest = orthanc::Orthanc::start(None, None);
    // The web app DCM4CHEE (exporter StowExporter) is the second
    // Orthanc's DICOMweb root; a rule forwards what the first one sends.
    let extra = rule_to(
        "From Orthanc",
        "StowExporter",
        "Study",
        "PT1S",
        &["dcmProperty: SendingApplicationEntityTitle=ORTHANC"],
    );
    let cfg = write_config(tmp.path(), dest.port, &extra);
    let apps = cfg.join("60-web-apps.ldif");
    let text = std::fs::read_to_string(&apps).unwrap();
    let shipped = "dcmWebServicePath: /dcm4chee-arc/aets/DCM4CHEE/rs\n";
    assert!(text.contains(shipped), "{text}");
    std::fs::write(
        &apps,
        text.replace(shipped, "dcmWebServicePath: /dicom-web\n"),
    )
    .unwrap();
    let data = tmp.path().join("data");
    let settings = Service::settings(ConfigSource::Ldif(cfg.clone()), &data);
    let app = Application::build(settings)
        .await
        .expect("application builds");
    let scp = app.dicom_addrs()[0];
    let svc = Service::start_app(app, &data);

    let (_, mut files) = study(&tmp.path().join("src"), 3, 64);
    files.push(pydicom_files().join("JPEG2000.dcm"));
    let mut ids = Vec::new();
    for f in &files {
        ids.push(source.upload(std::fs::read(f).unwrap()).await);
    }
    // Orthanc's own C-STORE SCU, to the service's SCP.
    let http = reqwest::Client::new();
    let r = http
        .put(format!("{}/modalities/bridge", source.base()))
        .json(&serde_json::json!({"AET": AET, "Host": "127.0.0.1", "Port": scp.port()}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    let r = http
        .post(format!("{}/modalities/bridge/store", source.base()))
        .json(&serde_json::json!({"Resources": ids, "Synchronous": true}))
        .send()
        .await
        .unwrap();
    let status = r.status();
    assert!(
        status.is_success(),
        "{status}: {} {}",
        r.text().await.unwrap(),
        source.log()
    );

    // Each study one task (JPEG2000.dcm is another study).
    let tasks = wait_rule_tasks(&svc, "From Orthanc", 2).await;
    assert!(
        tasks.iter().all(|t| t["status"] == "COMPLETED"),
        "{tasks:?}"
    );
    // The second Orthanc holds every object with its data set unchanged.
    for f in &files {
        let sop = sop_uid(f);
        let id = dest
            .lookup_instance(&sop)
            .await
            .unwrap_or_else(|| panic!("{sop} reached the second Orthanc: {}", dest.log()));
        let got = tmp.path().join(format!("{sop}.orthanc.dcm"));
        std::fs::write(&got, dest.file(&id).await).unwrap();
        assert_same_object(f, &got);
    }
    assert_eq!(dest.count_instances().await, files.len() as u64);
    svc.stop().await;
}

#[tokio::test]
async fn transfer_capabilities_limit_what_the_scp_accepts() {
    let tmp = tempfile::tempdir().unwrap();
    // CT Image Storage in Explicit VR Little Endian only.
    let extra = format!(
        "dn: cn=CT,{AE_DN}\nobjectClass: dicomTransferCapability\ncn: CT\n\
         dicomSOPClass: 1.2.840.10008.5.1.4.1.1.2\ndicomTransferRole: SCP\n\
         dicomTransferSyntax: 1.2.840.10008.1.2.1\n\n"
    );
    let b = start(tmp.path(), free_port(), &extra).await;
    let (_, ct) = study(&tmp.path().join("src"), 1, 16);
    let (ok, out) = storescu(b.scp, "MODALITY1", &ct).await;
    assert!(ok, "{out}");
    assert_stored(&b.data, &ct, "MODALITY1");
    // Another SOP class, and CT in another transfer syntax: refused.
    let mr = pydicom_files().join("MR_small.dcm");
    let (ok, out) = storescu(b.scp, "MODALITY1", std::slice::from_ref(&mr)).await;
    assert!(!ok, "MR is not accepted: {out}");
    let (_, ct2) = study(&tmp.path().join("src2"), 1, 16);
    let (ok, out) = storescu_with(b.scp, "MODALITY1", &["-xi"], &ct2).await;
    assert!(!ok, "Implicit VR is not accepted: {out}");
    assert!(!stored_path(&b.data, &mr).exists());
    assert!(!stored_path(&b.data, &ct2[0]).exists());
    // Verification stays available.
    let (ok, out) = echoscu(b.scp, "MODALITY1", AET).await;
    assert!(ok, "{out}");
    b.svc.stop().await;
}

#[tokio::test]
async fn instances_arriving_with_no_delay_join_the_task_that_waits() {
    let tmp = tempfile::tempdir().unwrap();
    // The destination holds every request until released: the first task
    // stays IN PROCESS while the rest of the study arrives.
    let rcv = Receiver::start_held(&tmp.path().join("received")).await;
    let extra = rule("No delay", "Study", "PT0S", &[]);
    let b = start(tmp.path(), rcv.addr.port(), &extra).await;
    let (_, files) = study(&tmp.path().join("src"), 20, 16);
    let (ok, out) = storescu(b.scp, "MODALITY1", &files).await;
    assert!(ok, "{out}");
    // One task runs (held at the destination); what arrived meanwhile
    // waits for it: at most one more task, not one per instance.
    let tasks = rule_tasks(&b.svc, "No delay").await;
    assert!(
        !tasks.is_empty() && tasks.len() <= 2,
        "{} tasks: {tasks:?}",
        tasks.len()
    );
    rcv.release();
    // Everything forwarded, nothing pending, every task ended.
    let tasks = eventually(Duration::from_secs(60), || async {
        let tasks = rule_tasks(&b.svc, "No delay").await;
        let held = files
            .iter()
            .filter(|f| rcv.dir.join(format!("{}.dcm", sop_uid(f))).exists())
            .count();
        let pending = next_export_due(&b.data).await;
        if held == files.len() && pending.is_none() && tasks.iter().all(ended) {
            Ok(tasks)
        } else {
            Err(format!(
                "{held} forwarded, pending {pending:?}, tasks {tasks:?}"
            ))
        }
    })
    .await;
    assert!(tasks.len() <= 3, "{} tasks: {tasks:?}", tasks.len());
    assert!(
        tasks.iter().all(|t| t["status"] == "COMPLETED"),
        "{tasks:?}"
    );
    assert_forwarded(&rcv.dir, &files);
    // A follow-up carries over what the earlier task stored: every
    // instance went over the wire once, and the last task accounts for
    // the whole study.
    assert_eq!(rcv.seen().len(), files.len(), "one request per instance");
    let newest = tasks
        .iter()
        .max_by_key(|t| t["createdTime"].as_str().unwrap_or("").to_string())
        .unwrap();
    assert_eq!(newest["completed"], files.len(), "{newest}");
    b.svc.stop().await;
}
