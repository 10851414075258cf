//! STOW-RS over HTTPS: the web app's connection has `dicomTLSCipherSuite`,
//! the receiver is the real stowrsd behind TLS on loopback, and the
//! certificates are made in each test with the `openssl` command.
//!
//! Covered: a server certificate from a CA given with `--tls-ca-file`; the
//! same without the CA file (unknown to the system's roots); a certificate
//! for another host name, refused and then accepted with
//! `allow-any-hostname=true`; a certificate from an unknown CA, refused
//! even with `allow-any-hostname=true`; a self-signed certificate, refused
//! and then accepted with `disable-trust-manager=true`; a receiver that
//! requires a client certificate (mutual TLS); and unusable TLS files.

mod common;
#[path = "common/https.rs"]
mod https;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use https::{Certs, HttpsReceiver, Pair, make_certs};
use serde_json::Value;
use stow_exporter::config::ConfigSource;
use stow_exporter::stow::tls::TlsSettings;

/// The HTTP connection of the DCM4CHEE web app (the seed exporter's).
const HTTP_CONN_DN: &str =
    "cn=http,dicomDeviceName=dcm4chee-arc,cn=Devices,cn=DICOM Configuration,dc=dcm4che,dc=org";

/// Makes the DCM4CHEE web app's connection TLS (hence https) and adds `props`.
fn https_ldif(props: &[&str]) -> String {
    let mut s = format!(
        "dn: {HTTP_CONN_DN}\nchangetype: modify\nadd: dicomTLSCipherSuite\ndicomTLSCipherSuite: TLS_AES_128_GCM_SHA256\n-\n\n"
    );
    if !props.is_empty() {
        s.push_str(&add_props(DCM4CHEE_WEBAPP_DN, props));
    }
    s
}

/// What one export over HTTPS ended with.
struct Exported {
    task: Value,
    /// The task's outcome and error messages and every instance result,
    /// as one text to search for reasons.
    text: String,
    files: Vec<PathBuf>,
}

impl Exported {
    fn status(&self) -> &str {
        self.task["status"].as_str().unwrap_or("")
    }

    fn mentions(&self, what: &str) -> bool {
        self.text.to_lowercase().contains(&what.to_lowercase())
    }
}

/// Exports a synthetic study of two instances with the seed exporter
/// (`StowExporter`, queue Export1: no retries, so FAILED is final) to
/// `rcv`, running the service in `dir` with `tls` and the web app `props`.
async fn export(dir: &Path, rcv: &HttpsReceiver, props: &[&str], tls: TlsSettings) -> Exported {
    let cfg = write_config(dir, rcv.addr.port(), &https_ldif(props));
    let (study, files) = study(&dir.join("src"), 2, 16);
    let data = dir.join("data");
    import(&data, &files).await;
    let mut settings = Service::settings(ConfigSource::Ldif(cfg), &data);
    settings.tls = tls;
    let svc = Service::start_with_settings(settings).await;
    let task = svc.export_study("StowExporter", &study).await;
    let id = task["taskID"].as_str().unwrap().to_string();
    let task = svc.wait_done(&id).await;
    let mut text = format!("{} {}", task["outcomeMessage"], task["errorMessage"]);
    for i in svc.instances(&id).await {
        text.push(' ');
        text.push_str(&i.to_string());
    }
    svc.stop().await;
    Exported { task, text, files }
}

fn trusting(certs: &Certs) -> TlsSettings {
    TlsSettings {
        ca_files: vec![certs.ca.cert.clone()],
        ..Default::default()
    }
}

/// Every source file arrived at the receiver byte for byte.
fn assert_arrived_at(rcv: &HttpsReceiver, files: &[PathBuf]) {
    for src in files {
        let got = rcv.dir.join(format!("{}.dcm", sop_uid(src)));
        let a = std::fs::read(src).unwrap();
        let b =
            std::fs::read(&got).unwrap_or_else(|e| panic!("{} not received: {e}", got.display()));
        assert!(a == b, "{} differs from what was sent", got.display());
    }
}

fn assert_completed(e: &Exported, rcv: &HttpsReceiver) {
    assert_eq!(e.status(), "COMPLETED", "{}", e.text);
    assert_arrived_at(rcv, &e.files);
}

fn assert_failed(e: &Exported, rcv: &HttpsReceiver, reason: &str) {
    assert_eq!(e.status(), "FAILED", "{}", e.text);
    assert!(
        e.mentions(reason),
        "the reason should mention {reason:?}: {}",
        e.text
    );
    assert!(rcv.stored().is_empty(), "nothing may arrive");
}

async fn receiver(dir: &Path, pair: &Pair, client_ca: Option<&Path>) -> HttpsReceiver {
    HttpsReceiver::start(&dir.join("received"), pair, client_ca).await
}

#[tokio::test]
async fn certificate_from_a_configured_ca_is_trusted() {
    let tmp = tempfile::tempdir().unwrap();
    let certs = make_certs(&tmp.path().join("certs"));
    let rcv = receiver(tmp.path(), &certs.server, None).await;
    let e = export(tmp.path(), &rcv, &[], trusting(&certs)).await;
    assert_completed(&e, &rcv);
    assert_eq!(
        e.task["outcomeMessage"]
            .as_str()
            .unwrap()
            .rsplit(" - ")
            .next(),
        Some("completed:2")
    );
    assert!(rcv.failures().is_empty(), "{:?}", rcv.failures());
}

#[tokio::test]
async fn certificate_unknown_to_the_system_roots_fails() {
    let tmp = tempfile::tempdir().unwrap();
    let certs = make_certs(&tmp.path().join("certs"));
    let rcv = receiver(tmp.path(), &certs.server, None).await;
    let e = export(tmp.path(), &rcv, &[], TlsSettings::default()).await;
    assert_failed(&e, &rcv, "certificate");
}

#[tokio::test]
async fn certificate_for_another_host_name_fails() {
    let tmp = tempfile::tempdir().unwrap();
    let certs = make_certs(&tmp.path().join("certs"));
    let rcv = receiver(tmp.path(), &certs.wrong_name, None).await;
    let e = export(tmp.path(), &rcv, &[], trusting(&certs)).await;
    assert_failed(
        &e,
        &rcv,
        "invalid peer certificate: certificate not valid for name",
    );
}

#[tokio::test]
async fn allow_any_hostname_accepts_another_host_name() {
    let tmp = tempfile::tempdir().unwrap();
    let certs = make_certs(&tmp.path().join("certs"));
    let rcv = receiver(tmp.path(), &certs.wrong_name, None).await;
    let e = export(
        tmp.path(),
        &rcv,
        &["allow-any-hostname=true"],
        trusting(&certs),
    )
    .await;
    assert_completed(&e, &rcv);
}

#[tokio::test]
async fn allow_any_hostname_still_checks_the_chain() {
    let tmp = tempfile::tempdir().unwrap();
    let certs = make_certs(&tmp.path().join("certs"));
    let rcv = receiver(tmp.path(), &certs.unknown_issuer, None).await;
    let e = export(
        tmp.path(),
        &rcv,
        &["allow-any-hostname=true"],
        trusting(&certs),
    )
    .await;
    assert_failed(&e, &rcv, "UnknownIssuer");
}

#[tokio::test]
async fn disable_trust_manager_accepts_a_self_signed_certificate() {
    let tmp = tempfile::tempdir().unwrap();
    let certs = make_certs(&tmp.path().join("certs"));

    // Refused while verification is on, even with the CA file...
    let refused = tmp.path().join("refused");
    let rcv = receiver(&refused, &certs.self_signed, None).await;
    let e = export(&refused, &rcv, &[], trusting(&certs)).await;
    assert_failed(&e, &rcv, "invalid peer certificate: UnknownIssuer");

    // ...accepted when it is off.
    let accepted = tmp.path().join("accepted");
    let rcv = receiver(&accepted, &certs.self_signed, None).await;
    let e = export(
        &accepted,
        &rcv,
        &["disable-trust-manager=true"],
        TlsSettings::default(),
    )
    .await;
    assert_completed(&e, &rcv);
}

#[tokio::test]
async fn client_certificate_for_a_receiver_that_requires_one() {
    let tmp = tempfile::tempdir().unwrap();
    let certs = make_certs(&tmp.path().join("certs"));
    let ca = certs.ca.cert.clone();

    // Without a client certificate the receiver refuses the handshake.
    let without = tmp.path().join("without");
    let rcv = receiver(&without, &certs.server, Some(&ca)).await;
    let e = export(&without, &rcv, &[], trusting(&certs)).await;
    assert_failed(&e, &rcv, "CertificateRequired");
    assert!(
        rcv.failures()
            .iter()
            .any(|f| f.to_lowercase().contains("certificate")),
        "the receiver should have refused for want of a certificate: {:?}",
        rcv.failures()
    );

    // With certificate and key in two files.
    let with = tmp.path().join("with");
    let rcv = receiver(&with, &certs.server, Some(&ca)).await;
    let tls = TlsSettings {
        client_cert: Some(certs.client.cert.clone()),
        client_key: Some(certs.client.key.clone()),
        ..trusting(&certs)
    };
    let e = export(&with, &rcv, &[], tls).await;
    assert_completed(&e, &rcv);
    assert!(rcv.failures().is_empty(), "{:?}", rcv.failures());

    // With both in one file (no separate key file).
    let combined = tmp.path().join("combined");
    std::fs::create_dir_all(&combined).unwrap();
    let both = combined.join("client-with-key.pem");
    let mut pem = std::fs::read(&certs.client.cert).unwrap();
    pem.extend(std::fs::read(&certs.client.key).unwrap());
    std::fs::write(&both, pem).unwrap();
    let rcv = receiver(&combined, &certs.server, Some(&ca)).await;
    let tls = TlsSettings {
        client_cert: Some(both),
        ..trusting(&certs)
    };
    let e = export(&combined, &rcv, &[], tls).await;
    assert_completed(&e, &rcv);
}

#[tokio::test]
async fn unusable_tls_files_fail_the_task_naming_web_app_and_file() {
    let tmp = tempfile::tempdir().unwrap();
    let certs = make_certs(&tmp.path().join("certs"));
    let empty = tmp.path().join("empty.pem");
    std::fs::write(&empty, "not a certificate\n").unwrap();

    let ca = tmp.path().join("ca");
    let rcv = receiver(&ca, &certs.server, None).await;
    let tls = TlsSettings {
        ca_files: vec![empty.clone()],
        ..Default::default()
    };
    let e = export(&ca, &rcv, &[], tls).await;
    assert_failed(
        &e,
        &rcv,
        &format!(
            "web application DCM4CHEE: TLS: CA file {}: no certificates found",
            empty.display()
        ),
    );

    // A key file without a key (here: the certificate itself).
    let key = tmp.path().join("key");
    let rcv = receiver(&key, &certs.server, None).await;
    let tls = TlsSettings {
        client_cert: Some(certs.client.cert.clone()),
        client_key: Some(certs.client.cert.clone()),
        ..trusting(&certs)
    };
    let e = export(&key, &rcv, &[], tls).await;
    assert_failed(
        &e,
        &rcv,
        &format!(
            "web application DCM4CHEE: TLS: client key {}: no private key",
            certs.client.cert.display()
        ),
    );
}

#[test]
fn serve_refuses_to_start_with_an_unusable_ca_file() {
    let tmp = tempfile::tempdir().unwrap();
    let empty = tmp.path().join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_stow-exporter"))
        .env("STOW_EXPORTER_DICOM_LISTEN", "none")
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(tmp.path().join("data"))
        .arg("--tls-ca-file")
        .arg(&empty)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "CA file {}: no certificates found",
            empty.display()
        )),
        "{stderr}"
    );
}
