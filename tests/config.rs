//! Configuration from LDIF files: the shipped folder, and every kind of
//! mistake an administrator makes, each named by DN and attribute.

mod common;

use std::time::Duration;

use common::*;
use stow_exporter::config::{ConfigSource, DEFAULT_DEVICE_NAME, LoadError, Snapshot};

const DEV: &str =
    "dicomDeviceName=dcm4chee-arc,cn=Devices,cn=DICOM Configuration,dc=dcm4che,dc=org";

async fn load_with(extra: &str) -> Result<Snapshot, LoadError> {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = write_config(tmp.path(), 18080, extra);
    ConfigSource::Ldif(cfg).load(DEFAULT_DEVICE_NAME).await
}

fn errors(r: Result<Snapshot, LoadError>) -> Vec<String> {
    match r {
        Ok(_) => panic!("expected the configuration to be rejected"),
        Err(e) => e.errors(),
    }
}

#[tokio::test]
async fn shipped_ldif_resolves() {
    let s = ConfigSource::Ldif(shipped_ldif())
        .load(DEFAULT_DEVICE_NAME)
        .await
        .unwrap();
    let e = s.exporter("StowExporter").unwrap();
    assert_eq!(e.uri, "stow:DCM4CHEE");
    assert_eq!(e.queue, "Export1");
    assert_eq!(e.ae_title.as_deref(), Some("DCM4CHEE1"));
    assert_eq!(
        e.description.as_deref(),
        Some("Export objects using STOW-RS service")
    );
    assert_eq!(
        s.web_app("DCM4CHEE").unwrap().service_url,
        "http://127.0.0.1:18080/dcm4chee-arc/aets/DCM4CHEE/rs"
    );
    assert_eq!(
        s.web_app("stowrsd").unwrap().service_url,
        "http://127.0.0.1:18080/stowrs"
    );
    assert_eq!(s.exporter("STOWRSD").unwrap().web_app, "stowrsd");
    let q = &s.queues["Export"];
    assert_eq!(
        (q.max_retries, q.retry_delay, q.retry_delay_multiplier),
        (10, Duration::from_secs(30), 200)
    );
    assert_eq!(q.max_retry_delay, Some(Duration::from_secs(600)));
    let q1 = &s.queues["Export1"];
    assert_eq!(
        (q1.max_retries, q1.retry_delay, q1.max_tasks_parallel),
        (0, Duration::from_secs(60), 1)
    );
    assert!(s.ae_titles.contains("DCM4CHEE1"));
    assert!(s.warnings.is_empty(), "{:?}", s.warnings);
    let p = &s.web_app("stowrsd").unwrap().props;
    assert!(!p.chunked && p.concurrency == 1 && p.transfer_syntax.is_empty());
}

#[tokio::test]
async fn other_schemes_are_skipped_and_stowrs_alias_accepted() {
    let extra = format!(
        "dn: dcmExporterID=STORESCP,{DEV}\nobjectClass: dcmExporter\ndcmExporterID: STORESCP\ndcmURI: dicom:STORESCP\ndcmQueueName: NoSuchQueue\n\n\
         dn: dcmExporterID=Alias,{DEV}\nobjectClass: dcmExporter\ndcmExporterID: Alias\ndcmURI: stowrs:stowrsd\ndcmQueueName: Export\n\n\
         dn: dcmWebAppName=Unused,{DEV}\nobjectClass: dcmWebApp\ndcmWebAppName: Unused\n"
    );
    let s = load_with(&extra).await.unwrap();
    assert_eq!(s.exporter("Alias").unwrap().web_app, "stowrsd");
    assert!(s.exporter("STORESCP").is_none());
    assert_eq!(s.skipped_exporters[0].id, "STORESCP");
    assert!(
        s.warnings
            .iter()
            .any(|w| w.contains("dcmExporterID=STORESCP") && w.contains("not a STOW-RS exporter"))
    );
}

#[tokio::test]
async fn exporter_errors_name_dn_and_attribute() {
    let extra = format!(
        "dn: dcmExporterID=Bad1,{DEV}\nobjectClass: dcmExporter\ndcmExporterID: Bad1\ndcmURI: stow:Nowhere\ndcmQueueName: Export\n\n\
         dn: dcmExporterID=Bad2,{DEV}\nobjectClass: dcmExporter\ndcmExporterID: Bad2\ndcmURI: stow:stowrsd\ndcmQueueName: Export9\n\n\
         dn: dcmExporterID=Bad3,{DEV}\nobjectClass: dcmExporter\ndcmExporterID: Bad3\ndcmURI: stow:stowrsd\ndcmQueueName: Export\ndicomAETitle: OTHER\n"
    );
    let errs = errors(load_with(&extra).await);
    assert_eq!(errs.len(), 3, "{errs:?}");
    assert!(
        errs[0].starts_with(&format!(
            "dcmExporterID=Bad1,{DEV}: dcmURI: unknown web application \"Nowhere\""
        )),
        "{errs:?}"
    );
    assert!(
        errs[1].starts_with(&format!(
            "dcmExporterID=Bad2,{DEV}: dcmQueueName: no dcmQueue \"Export9\""
        )),
        "{errs:?}"
    );
    assert!(
        errs[2].contains("dicomAETitle: \"OTHER\" is not an AE title"),
        "{errs:?}"
    );
}

#[tokio::test]
async fn property_and_connection_errors() {
    let conn =
        "cn=http,dicomDeviceName=stowrsd,cn=Devices,cn=DICOM Configuration,dc=dcm4che,dc=org";
    let extra = format!(
        "{}dn: {conn}\nchangetype: modify\nreplace: dicomPort\ndicomPort: http\n-\n",
        add_props(
            STOWRSD_WEBAPP_DN,
            &["concurrency=abc", "retries=3", "basic-auth=nocolon"]
        )
    );
    let errs = errors(load_with(&extra).await);
    assert!(errs.iter().any(|e| e == &format!("{STOWRSD_WEBAPP_DN}: dcmProperty: concurrency=abc: expected an integer from 1 to 256")), "{errs:?}");
    assert!(
        errs.iter().any(|e| e.starts_with(&format!(
            "{STOWRSD_WEBAPP_DN}: dcmProperty: basic-auth=...:"
        ))),
        "{errs:?}"
    );
    assert!(
        !errs.iter().any(|e| e.contains("nocolon")),
        "a secret is never echoed: {errs:?}"
    );
    assert!(
        errs.iter()
            .any(|e| e == &format!("{conn}: dicomPort: \"http\" is not a TCP port")),
        "{errs:?}"
    );

    // An unknown key alone is a warning naming the DN.
    let s = load_with(&add_props(STOWRSD_WEBAPP_DN, &["retries=3"]))
        .await
        .unwrap();
    assert!(
        s.warnings
            .iter()
            .any(|w| w.contains(STOWRSD_WEBAPP_DN) && w.contains("\"retries\""))
    );
}

#[tokio::test]
async fn tls_connection_gives_https_and_missing_device_is_named() {
    let conn =
        "cn=http,dicomDeviceName=stowrsd,cn=Devices,cn=DICOM Configuration,dc=dcm4che,dc=org";
    let s = load_with(&format!(
        "dn: {conn}\nchangetype: modify\nadd: dicomTLSCipherSuite\ndicomTLSCipherSuite: TLS_AES_128_GCM_SHA256\n-\n"
    ))
    .await
    .unwrap();
    assert_eq!(
        s.web_app("stowrsd").unwrap().service_url,
        "https://127.0.0.1:18080/stowrs"
    );

    let tmp = tempfile::tempdir().unwrap();
    let cfg = write_config(tmp.path(), 18080, "");
    let e = ConfigSource::Ldif(cfg)
        .load("no-such-device")
        .await
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("archive device \"no-such-device\" not found"),
        "{e}"
    );
}

#[tokio::test]
async fn ldif_mistakes_name_file_and_line() {
    let e = load_with("dn: cn=x,dc=dcm4che,dc=org\nobjectClass: top\nbroken line\n")
        .await
        .unwrap_err();
    assert!(matches!(e, LoadError::Ldif { line: 3, .. }), "{e}");
    assert!(e.to_string().contains("99-test.ldif:3"), "{e}");
    let e = load_with(&format!("dn: {DEV}\nobjectClass: dicomDevice\n"))
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("entry already exists (defined at")
            && e.to_string().contains("30-archive-device.ldif"),
        "{e}"
    );
}

#[tokio::test]
async fn schedules_are_parsed_with_dcm4chee_grammar_and_errors_named() {
    let exporter = format!("dcmExporterID=StowExporter,{DEV}");
    let ok = format!(
        "dn: {exporter}\nchangetype: modify\nadd: dcmSchedule\ndcmSchedule: hour=18-6 dayOfWeek=*\ndcmSchedule: hour=* dayOfWeek=0,6\n-\n"
    );
    let s = load_with(&ok).await.unwrap();
    assert_eq!(
        s.exporter("StowExporter").unwrap().schedule.values().len(),
        2
    );
    let bad =
        format!("dn: {exporter}\nchangetype: modify\nadd: dcmSchedule\ndcmSchedule: hour=25\n-\n");
    let errs = errors(load_with(&bad).await);
    assert!(
        errs[0].starts_with(&format!("{exporter}: dcmSchedule: \"hour=25\"")),
        "{errs:?}"
    );
}
