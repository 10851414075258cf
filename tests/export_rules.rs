//! `dcmExportRule` entries (issue 15): read from LDIF like the other
//! entries, validated with errors naming DN and attribute, listed by
//! `check-config` (the real binary) and by `GET /dcm4chee-arc/export-rules`
//! of a running service with their schedule windows. Loading them from a
//! real slapd is in tests/ldap.rs.

mod common;

use std::path::Path;

use common::*;
use serde_json::Value;

const DEV: &str =
    "dicomDeviceName=dcm4chee-arc,cn=Devices,cn=DICOM Configuration,dc=dcm4che,dc=org";

/// `stow-exporter check-config --config DIR`: exit status and stdout.
fn check_config(dir: &Path) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_stow-exporter"))
        .args(["check-config", "--config"])
        .arg(dir)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// The shipped sample rule with its `# ` taken off.
fn uncommented_sample() -> String {
    let text = std::fs::read_to_string(shipped_ldif().join("80-export-rules.ldif")).unwrap();
    let mut out = String::from("version: 1\n\n");
    for line in text.lines() {
        if let Some(l) = line.strip_prefix("# ")
            && (l.starts_with("dn: ")
                || l.starts_with("dcm")
                || l.starts_with("objectClass: ")
                || l.starts_with("cn: "))
        {
            out.push_str(l);
            out.push('\n');
        }
    }
    out
}

#[tokio::test]
async fn the_shipped_sample_rule_is_inactive_and_valid_once_uncommented() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = write_config(tmp.path(), 18080, "");
    let (ok, out) = check_config(&cfg);
    assert!(ok, "{out}");
    assert!(!out.contains("EXPORT RULE"), "no rule is active: {out}");

    let cfg = write_config(tmp.path(), 18080, &uncommented_sample());
    let (ok, out) = check_config(&cfg);
    assert!(ok, "{out}");
    let line = out
        .lines()
        .find(|l| l.starts_with("Forward CT and MR"))
        .unwrap_or_else(|| panic!("the sample rule is listed: {out}"));
    for part in [
        "Series",
        "STOWRSD",
        "PT1M",
        "dayOfWeek=1-5",
        "Modality=CT|MR",
        "SendingApplicationEntityTitle=MODALITY1",
    ] {
        assert!(line.contains(part), "{part} in {line}");
    }
}

#[tokio::test]
async fn invalid_rules_are_refused_naming_dn_and_attribute() {
    let tmp = tempfile::tempdir().unwrap();
    let rule = |cn: &str, body: &str| {
        format!("dn: cn={cn},{DEV}\nobjectClass: dcmExportRule\ncn: {cn}\n{body}\n")
    };
    let extra = [
        rule("NoEntity", "dcmExporterID: STOWRSD"),
        rule("BadEntity", "dcmEntity: Patient\ndcmExporterID: STOWRSD"),
        rule("NoExporter", "dcmEntity: Study"),
        rule(
            "UnknownExporter",
            "dcmEntity: Study\ndcmExporterID: Nowhere",
        ),
        rule(
            "BadCondition",
            "dcmEntity: Study\ndcmExporterID: STOWRSD\ndcmProperty: NoSuchKeyword=x",
        ),
        rule(
            "BadRegex",
            "dcmEntity: Study\ndcmExporterID: STOWRSD\ndcmProperty: Modality=(CT",
        ),
        rule(
            "BadDuration",
            "dcmEntity: Study\ndcmExporterID: STOWRSD\ndcmDuration: 5 minutes",
        ),
        rule(
            "BadSchedule",
            "dcmEntity: Study\ndcmExporterID: STOWRSD\ndcmSchedule: hour=25",
        ),
        rule(
            "BadReoccurred",
            "dcmEntity: Study\ndcmExporterID: STOWRSD\ndcmExportReoccurredInstances: SOMETIMES",
        ),
        rule(
            "OtherDevice",
            "dcmEntity: Study\ndcmExporterID: STOWRSD\ndicomDeviceName: elsewhere",
        ),
    ]
    .join("\n");
    let cfg = write_config(tmp.path(), 18080, &format!("version: 1\n\n{extra}"));
    let (ok, out) = check_config(&cfg);
    assert!(!ok, "refused: {out}");
    let expect = [
        ("NoEntity", "dcmEntity: missing"),
        (
            "BadEntity",
            "dcmEntity: \"Patient\" is not Study, Series or Instance",
        ),
        ("NoExporter", "dcmExporterID: missing"),
        (
            "UnknownExporter",
            "dcmExporterID: no dcmExporter \"Nowhere\"",
        ),
        (
            "BadCondition",
            "dcmProperty: \"NoSuchKeyword=x\": \"NoSuchKeyword\" is neither a DICOM keyword",
        ),
        (
            "BadRegex",
            "dcmProperty: \"Modality=(CT\": invalid regular expression",
        ),
        ("BadDuration", "dcmDuration: "),
        ("BadSchedule", "dcmSchedule: "),
        (
            "BadReoccurred",
            "dcmExportReoccurredInstances: \"SOMETIMES\"",
        ),
        (
            "OtherDevice",
            "dicomDeviceName: \"elsewhere\" is not device dcm4chee-arc",
        ),
    ];
    for (cn, message) in expect {
        let prefix = format!("error: cn={cn},{DEV}: ");
        assert!(
            out.lines()
                .any(|l| l.starts_with(&prefix) && l.contains(message)),
            "{cn}: expected an error with {message:?}:\n{out}"
        );
    }
}

#[tokio::test]
async fn the_export_rules_endpoint_lists_device_and_ae_rules_with_their_window() {
    let tmp = tempfile::tempdir().unwrap();
    let hour = closed_hour();
    let extra = format!(
        "version: 1\n\n\
         dn: cn=Closed now,{DEV}\nobjectClass: dcmExportRule\ncn: Closed now\ndcmEntity: Instance\n\
         dcmExporterID: STOWRSD\ndcmSchedule: hour={hour}\ndcmProperty: Modality!=SR\n\n\
         dn: cn=Always,dicomAETitle=DCM4CHEE1,{DEV}\nobjectClass: dcmExportRule\ncn: Always\n\
         dcmEntity: Study\ndcmExporterID: StowExporter\ndcmDuration: PT30S\n"
    );
    let cfg = write_config(tmp.path(), 18080, &extra);
    let svc = Service::start(&cfg, &tmp.path().join("data")).await;
    let rules: Vec<Value> = svc.get_json("/export-rules").await;
    assert_eq!(rules.len(), 2, "{rules:?}");
    let by = |cn: &str| rules.iter().find(|r| r["cn"] == cn).unwrap().clone();
    let closed = by("Closed now");
    assert_eq!(closed["dcmEntity"], "Instance");
    assert_eq!(closed["dcmExporterID"], serde_json::json!(["STOWRSD"]));
    assert_eq!(closed["dcmProperty"], serde_json::json!(["Modality!=SR"]));
    assert_eq!(
        closed["dcmSchedule"],
        serde_json::json!([format!("hour={hour}")])
    );
    assert_eq!(closed["scheduleOpen"], false, "{closed}");
    assert!(closed["nextScheduleOpen"].is_string(), "{closed}");
    assert_eq!(closed["dicomAETitle"], Value::Null);
    assert_eq!(closed["dcmDuration"], "PT0S");
    let always = by("Always");
    assert_eq!(always["dicomAETitle"], "DCM4CHEE1");
    assert_eq!(always["dcmDuration"], "PT30S");
    assert_eq!(always["scheduleOpen"], true);
    assert_eq!(always["dcmExportReoccurredInstances"], "REPLACE");
    svc.stop().await;
}
