//! Configuration never panics and never leaks a secret: hostile or mistaken
//! values in LDIF and LDAP (huge ISO durations, numbers, schedules,
//! malformed secret properties) are errors naming DN, attribute and value,
//! through `check-config`, start-up, `/ctrl/reload` and `--watch` (a real
//! slapd); retry times saturate instead of overflowing in a worker; an LDAP
//! bind DN needs a password, and a clear-text bind to another host is
//! warned about.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use common::*;
use serde_json::Value;
use stow_exporter::app::{AppError, Application};
use stow_exporter::config::model::MAX_RETRY_DELAY;
use stow_exporter::config::{
    ConfigSource, DEFAULT_DEVICE_NAME, LdapError, LdapSource, LoadError, Secret, Snapshot,
    snapshot_from_ldif,
};

const DEV: &str =
    "dicomDeviceName=dcm4chee-arc,cn=Devices,cn=DICOM Configuration,dc=dcm4che,dc=org";
const ADMIN: &str = "cn=admin,dc=dcm4che,dc=org";
const PASSWORD: &str = "secret";

fn queue_dn(name: &str) -> String {
    format!("dcmQueueName={name},{DEV}")
}

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_stow-exporter"))
}

/// LDIF replacing attributes of one entry (`changetype: modify`).
fn replace(dn: &str, attrs: &[(&str, &str)]) -> String {
    let mut s = format!("dn: {dn}\nchangetype: modify\n");
    for (a, v) in attrs {
        s.push_str(&format!("replace: {a}\n{a}: {v}\n-\n"));
    }
    s.push('\n');
    s
}

/// The exporter description edit that shows which configuration runs.
fn describe(text: &str) -> String {
    replace(
        &format!("dcmExporterID=StowExporter,{DEV}"),
        &[("dicomDescription", text)],
    )
}

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

fn has(errs: &[String], want: &str) -> bool {
    errs.iter().any(|e| e.contains(want))
}

/// The huge durations of the issue, on both queues.
fn huge_durations() -> String {
    replace(
        &queue_dn("Export"),
        &[
            // More seconds than a u64 holds: panicked in from_secs_f64.
            ("dcmRetryDelay", "P999999999999999D"),
            ("dcmMaxRetryDelay", "PT9999999999999999S"),
        ],
    ) + &replace(&queue_dn("Export1"), &[("dcmRetryDelay", "P999999999999D")])
}

fn assert_names_huge_durations(text: &str) {
    for (queue, attr, value) in [
        ("Export", "dcmRetryDelay", "P999999999999999D"),
        ("Export", "dcmMaxRetryDelay", "PT9999999999999999S"),
        ("Export1", "dcmRetryDelay", "P999999999999D"),
    ] {
        let want = format!(
            "{}: {attr}: \"{value}\" is longer than P365D, the longest accepted",
            queue_dn(queue)
        );
        assert!(text.contains(&want), "missing {want:?} in:\n{text}");
    }
}

#[tokio::test]
async fn check_config_and_start_up_refuse_huge_durations_naming_dn_attribute_and_value() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = write_config(tmp.path(), 18080, &huge_durations());
    let out = bin()
        .arg("check-config")
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "an invalid configuration, not a crash: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_names_huge_durations(&stdout);

    // Start-up (the service in-process) refuses the same, with the same words.
    let settings = Service::settings(ConfigSource::Ldif(cfg), &tmp.path().join("data"));
    match Application::build(settings).await {
        Ok(_) => panic!("the service started with huge durations"),
        Err(e) => {
            assert!(matches!(e, AppError::Config(LoadError::Invalid(_))), "{e}");
            assert_names_huge_durations(&e.to_string());
        }
    }
}

#[tokio::test]
async fn reload_answers_409_for_a_huge_duration_and_keeps_the_running_configuration() {
    let tmp = tempfile::tempdir().unwrap();
    let rcv = Receiver::start(&tmp.path().join("received"), Duration::ZERO).await;
    let cfg = write_config(tmp.path(), rcv.addr.port(), "");
    let data = tmp.path().join("data");
    let (study_uid, files) = study(&tmp.path().join("src"), 2, 16);
    import(&data, &files).await;
    let svc = Service::start(&cfg, &data).await;

    std::fs::write(
        cfg.join("99-test.ldif"),
        huge_durations() + &describe("the refused edit"),
    )
    .unwrap();
    let r = svc
        .http
        .post(svc.url("/ctrl/reload"))
        .send()
        .await
        .expect("an answer, not a dropped connection");
    assert_eq!(r.status(), 409);
    let body: Value = r.json().await.unwrap();
    let details: Vec<String> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap().to_string())
        .collect();
    assert_names_huge_durations(&details.join("\n"));

    // The running configuration stays, and works.
    let exporters: Vec<Value> = svc.get_json("/export").await;
    let e = exporters
        .iter()
        .find(|e| e["id"] == "StowExporter")
        .unwrap();
    assert_eq!(e["description"], "Export objects using STOW-RS service");
    let t = svc.export_study("STOWRSD", &study_uid).await;
    let done = svc.wait_done(t["taskID"].as_str().unwrap()).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    assert_arrived(&rcv, &files);
    svc.stop().await;
}

/// A private slapd (scripts/slapd.sh), stopped by its PID when dropped.
struct Slapd {
    dir: PathBuf,
    port: u16,
}

fn slapd_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/slapd.sh")
}

impl Slapd {
    fn start(dir: &Path, ldif_dir: &Path) -> Slapd {
        // slapd.sh uses PORT for ldap:// and PORT+1 for ldaps://.
        let port = loop {
            let p = free_port();
            if p < 65000 && std::net::TcpListener::bind(("127.0.0.1", p + 1)).is_ok() {
                break p;
            }
        };
        for (cmd, extra) in [("start", None), ("load", Some(ldif_dir))] {
            let mut c = Command::new("bash");
            c.arg(slapd_script())
                .arg(cmd)
                .arg(dir)
                .arg(port.to_string());
            if let Some(d) = extra {
                c.arg(d);
            }
            let out = c.output().unwrap();
            assert!(
                out.status.success(),
                "slapd.sh {cmd}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Slapd {
            dir: dir.to_path_buf(),
            port,
        }
    }

    fn url(&self) -> String {
        format!("ldap://127.0.0.1:{}", self.port)
    }

    fn ldapi_url(&self) -> String {
        let out = Command::new("bash")
            .arg(slapd_script())
            .arg("ldapi-url")
            .arg(&self.dir)
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    /// ldapmodify as the administrator.
    fn modify(&self, ldif: &str) {
        let f = self.dir.join("edit.ldif");
        std::fs::write(&f, ldif).unwrap();
        let out = Command::new("ldapmodify")
            .args(["-x", "-H", &self.url(), "-D", ADMIN, "-w", PASSWORD, "-f"])
            .arg(&f)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "ldapmodify: {}\n{ldif}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(slapd_script())
            .arg("stop")
            .arg(&self.dir)
            .status();
    }
}

/// Everything a child wrote to one of its pipes so far, read by a thread.
#[derive(Clone, Default)]
struct Output(Arc<Mutex<String>>);

impl Output {
    fn collect(pipe: impl std::io::Read + Send + 'static) -> Output {
        let out = Output::default();
        let text = out.0.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                let mut t = text.lock().unwrap();
                t.push_str(&line);
                t.push('\n');
            }
        });
        out
    }

    fn text(&self) -> String {
        self.0.lock().unwrap().clone()
    }

    /// Waits until the output contains every one of `parts`.
    async fn wait_for(&self, parts: &[&str], limit: Duration) -> String {
        eventually(limit, || async {
            let t = self.text();
            if parts.iter().all(|p| t.contains(p)) {
                Ok(t)
            } else {
                Err(format!("no {parts:?} in the output:\n{t}"))
            }
        })
        .await
    }
}

#[tokio::test]
async fn ldap_watch_and_reload_refuse_a_huge_duration_and_keep_serving() {
    let tmp = tempfile::tempdir().unwrap();
    let slapd = Slapd::start(&tmp.path().join("slapd"), &shipped_ldif());
    let port = free_port();
    let mut child = bin()
        .env("STOW_EXPORTER_DICOM_LISTEN", "none")
        .args(["serve", "--config", &slapd.url(), "--ldap-bind-dn", ADMIN])
        .env("LDAP_BIND_PASSWORD", PASSWORD)
        .env("RUST_LOG", "info")
        .arg("--data")
        .arg(tmp.path().join("data"))
        .args(["--listen", &format!("127.0.0.1:{port}"), "--watch", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let log = Output::collect(child.stderr.take().unwrap());
    let _child = KillOnDrop(child);
    wait_up(port, Duration::from_secs(20)).await;
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}/dcm4chee-arc");
    let description = || async {
        let v: Value = http
            .get(format!("{base}/export"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .find(|e| e["id"] == "StowExporter")
            .unwrap()["description"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let before = description().await;

    // The administrator's edit: a huge delay (and a new description).
    slapd.modify(
        &(replace(
            &queue_dn("Export"),
            &[("dcmRetryDelay", "P999999999999999D")],
        ) + &describe("the refused edit")),
    );
    let refused = format!(
        "{}: dcmRetryDelay: \"P999999999999999D\" is longer than P365D",
        queue_dn("Export")
    );
    log.wait_for(
        &["automatic reload refused", &refused],
        Duration::from_secs(20),
    )
    .await;
    // A manual reload says the same with 409.
    let r = http
        .post(format!("{base}/ctrl/reload"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["errors"][0].as_str().unwrap().contains(&refused),
        "{body}"
    );
    assert_eq!(
        description().await,
        before,
        "the running configuration stays"
    );

    // The watch is still alive: a repaired directory is picked up.
    slapd.modify(
        &(replace(&queue_dn("Export"), &[("dcmRetryDelay", "PT30S")])
            + &describe("repaired in the directory")),
    );
    eventually(Duration::from_secs(20), || async {
        let d = description().await;
        if d == "repaired in the directory" {
            Ok(())
        } else {
            Err(format!(
                "--watch did not reload the repaired directory: {d}"
            ))
        }
    })
    .await;
    assert!(!log.text().contains("panicked"), "{}", log.text());
}

fn scheduled_time(t: &Value) -> DateTime<Utc> {
    t["scheduledTime"].as_str().unwrap().parse().unwrap()
}

/// The task `id` once it has left IN PROCESS for a retry time far away
/// (`SCHEDULED FOR RETRY`), or FAILED.
async fn wait_parked(svc: &Service, id: &str) -> Value {
    eventually(Duration::from_secs(20), || async {
        let t = svc.task(id).await;
        let far = Utc::now() + chrono::Duration::days(300);
        match t["status"].as_str() {
            Some("FAILED") => Ok(t),
            Some("SCHEDULED FOR RETRY") if scheduled_time(&t) > far => Ok(t),
            _ => Err(format!("task {id} not parked for a late retry: {t}")),
        }
    })
    .await
}

#[tokio::test]
async fn overflowing_retry_arithmetic_saturates_and_the_worker_goes_on() {
    let tmp = tempfile::tempdir().unwrap();
    // Nothing listens on the destination's port: every export fails fast.
    let closed = free_port();
    let queue = |delay: &str| {
        format!(
            "dn: {}\nchangetype: modify\nreplace: dcmRetryDelay\ndcmRetryDelay: {delay}\n-\n\
             replace: dcmRetryDelayMultiplier\ndcmRetryDelayMultiplier: 10000\n-\n\
             replace: dcmMaxRetries\ndcmMaxRetries: 1000\n-\ndelete: dcmMaxRetryDelay\n-\n\n",
            queue_dn("Export")
        )
    };
    // First no delay at all, so that failures pile up at once...
    let cfg = write_config(tmp.path(), closed, &queue("PT0S"));
    let data = tmp.path().join("data");
    let (first, files) = study(&tmp.path().join("a"), 1, 16);
    import(&data, &files).await;
    let (second, files) = study(&tmp.path().join("b"), 1, 16);
    import(&data, &files).await;
    let svc = Service::start(&cfg, &data).await;
    let t1 = svc.export_study("STOWRSD", &first).await;
    let id1 = t1["taskID"].as_str().unwrap().to_string();
    eventually(Duration::from_secs(20), || async {
        let t = svc.task(&id1).await;
        if t["failures"].as_u64().unwrap_or(0) >= 3 {
            Ok(())
        } else {
            Err(format!("not failed three times yet: {t}"))
        }
    })
    .await;

    // ...then the largest delay and multiplier the configuration accepts:
    // one year x 100^(failures) is far beyond any representable time.
    std::fs::write(cfg.join("99-test.ldif"), queue("P365D")).unwrap();
    assert_eq!(svc.call(reqwest::Method::POST, "/ctrl/reload").await, 204);
    let parked = wait_parked(&svc, &id1).await;
    if parked["status"] == "SCHEDULED FOR RETRY" {
        let latest = Utc::now() + chrono::Duration::from_std(MAX_RETRY_DELAY).unwrap();
        assert!(
            scheduled_time(&parked) <= latest,
            "the retry time saturates at one year: {parked}"
        );
    }

    // The worker's slot came back: the next task of the queue runs too.
    let t2 = svc.export_study("STOWRSD", &second).await;
    let done = wait_parked(&svc, t2["taskID"].as_str().unwrap()).await;
    assert_eq!(done["failures"], 1, "{done}");
    svc.stop().await;
}

#[tokio::test]
async fn numbers_from_the_directory_are_range_checked() {
    let conn =
        "cn=http,dicomDeviceName=stowrsd,cn=Devices,cn=DICOM Configuration,dc=dcm4che,dc=org";
    let extra = replace(
        &queue_dn("Export"),
        &[
            ("dcmMaxRetries", "4294967295"),
            ("dcmRetryDelayMultiplier", "1000000"),
            ("dcmMaxTasksParallel", "100000"),
        ],
    ) + &replace(
        conn,
        &[
            ("dcmTCPConnectTimeout", "18446744073709551615"),
            ("dcmResponseTimeout", "86400001"),
        ],
    ) + &add_props(
        STOWRSD_WEBAPP_DN,
        &[
            "max-bytes-per-request=1000GiB",
            "max-instances-per-request=501",
        ],
    );
    let errs = errors(load_with(&extra).await);
    let q = queue_dn("Export");
    for want in [
        format!("{q}: dcmMaxRetries: \"4294967295\" is not an integer from 0 to 100000"),
        format!("{q}: dcmRetryDelayMultiplier: \"1000000\" is not an integer from 1 to 10000"),
        format!("{q}: dcmMaxTasksParallel: \"100000\" is not an integer from 1 to 256"),
        format!(
            "{conn}: dcmTCPConnectTimeout: \"18446744073709551615\" is not a number of milliseconds from 0 to 86400000"
        ),
        format!(
            "{conn}: dcmResponseTimeout: \"86400001\" is not a number of milliseconds from 0 to 86400000"
        ),
        format!(
            "{STOWRSD_WEBAPP_DN}: dcmProperty: max-bytes-per-request=1000GiB: expected a size from 1 byte to 4GiB"
        ),
        format!(
            "{STOWRSD_WEBAPP_DN}: dcmProperty: max-instances-per-request=501: expected an integer from 1 to 500"
        ),
    ] {
        assert!(has(&errs, &want), "missing {want:?} in {errs:#?}");
    }

    // The limits themselves are accepted.
    let s = load_with(
        &(replace(
            &queue_dn("Export"),
            &[
                ("dcmMaxRetries", "100000"),
                ("dcmRetryDelay", "P365D"),
                ("dcmMaxRetryDelay", "P52W1D"),
                ("dcmRetryDelayMultiplier", "10000"),
                ("dcmMaxTasksParallel", "256"),
            ],
        ) + &replace(conn, &[("dcmResponseTimeout", "86400000")])
            + &add_props(STOWRSD_WEBAPP_DN, &["max-bytes-per-request=4GiB"])),
    )
    .await
    .unwrap();
    let q = &s.queues["Export"];
    assert_eq!(
        (q.retry_delay, q.max_retry_delay),
        (MAX_RETRY_DELAY, Some(MAX_RETRY_DELAY))
    );
    assert_eq!(
        s.web_app("stowrsd").unwrap().response_timeout,
        Some(Duration::from_secs(86_400))
    );
}

#[tokio::test]
async fn schedules_are_errors_or_windows_with_bounded_messages() {
    let exporter = format!("dcmExporterID=StowExporter,{DEV}");
    let with = |values: &[String]| {
        let mut s = format!("dn: {exporter}\nchangetype: modify\nadd: dcmSchedule\n");
        for v in values {
            s.push_str(&format!("dcmSchedule: {v}\n"));
        }
        s + "-\n"
    };
    // A 20 kB value: the message names DN and attribute, and stays short.
    let long = format!("hour={}", "1,".repeat(10_000));
    let errs = errors(load_with(&with(&[long])).await);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0].starts_with(&format!("{exporter}: dcmSchedule: \"hour=1,1,"))
            && errs[0].contains("20005 bytes long; a schedule has at most 256"),
        "{}",
        errs[0]
    );
    assert!(errs[0].len() < exporter.len() + 200, "{}", errs[0]);

    // More values than any window needs.
    let many: Vec<String> = (0..200)
        .map(|h| format!("hour={} dayOfWeek={}", h % 24, h % 7))
        .collect();
    let errs = errors(load_with(&with(&many)).await);
    assert!(
        has(
            &errs,
            &format!("{exporter}: dcmSchedule: \"200 values\": an entry has at most 168")
        ),
        "{errs:?}"
    );

    // Odd values: each an error naming DN, attribute and value, or a window.
    for (value, ok) in [
        ("hour=99", false),
        ("hour=99999999999999999999", false),
        ("hour=5-1", true),
        ("dayOfWeek=6-0", true),
        ("hour=\u{661}", false),
        ("h\u{f6}ur=1", false),
        ("dayOfWeek=7", false),
        ("hour=1-", false),
    ] {
        match load_with(&with(&[value.to_string()])).await {
            Ok(s) => {
                assert!(ok, "{value:?} was accepted");
                assert_eq!(
                    s.exporter("StowExporter").unwrap().schedule.values(),
                    [value]
                );
            }
            Err(e) => {
                assert!(!ok, "{value:?}: {e}");
                let errs = e.errors();
                assert!(
                    errs[0].starts_with(&format!("{exporter}: dcmSchedule: {value:?}")),
                    "{errs:?}"
                );
            }
        }
    }
}

#[tokio::test]
async fn malformed_secret_properties_are_named_without_their_value() {
    let kc = "dcmKeycloakClientID=kc,dicomDeviceName=stowrsd,cn=Devices,cn=DICOM Configuration,dc=dcm4che,dc=org";
    let extra = add_props(
        STOWRSD_WEBAPP_DN,
        &[
            // Wrong separators, a token pasted alone, base64 with padding.
            "bearer-token:Bearer-Secret-4711",
            "eyJhbGciOiJIUzI1NiJ9.Pasted-Secret-4711",
            "dXNlcjpQYWRkZWQtU2VjcmV0LTQ3MTE=",
        ],
    ) + &add_props(DCM4CHEE_WEBAPP_DN, &["basic-auth alice:Basic-Secret-4711"])
        + &format!(
            "dn: {kc}\nobjectClass: dcmKeycloakClient\ndcmKeycloakClientID: kc\n\
             dcmURI: htps://admin:Url/Secret@4711@keycloak.example\ndcmKeycloakClientSecret: x\n\n\
             dn: {STOWRSD_WEBAPP_DN}\nchangetype: modify\nadd: dcmKeycloakClientID\ndcmKeycloakClientID: kc\n-\n"
        );
    let tmp = tempfile::tempdir().unwrap();
    let cfg = write_config(tmp.path(), 18080, &extra);
    let out = bin()
        .arg("check-config")
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(1), "{all}");
    for secret in ["Secret-4711", "U2VjcmV0LTQ3MTE", "Url/Secret"] {
        assert!(!all.contains(secret), "{secret} shown:\n{all}");
    }
    for want in [
        format!(
            "error: {STOWRSD_WEBAPP_DN}: dcmProperty: value #1 starts with bearer-token but is not bearer-token=<value>"
        ),
        format!(
            "error: {STOWRSD_WEBAPP_DN}: dcmProperty: value #2 (39 characters) is not name=value"
        ),
        format!("error: {DCM4CHEE_WEBAPP_DN}: dcmProperty: value #1 starts with basic-auth"),
        format!(
            "error: {kc}: dcmURI: \"htps://admin:****@keycloak.example\" is not an http:// or https:// URL"
        ),
    ] {
        assert!(all.contains(&want), "missing {want:?} in:\n{all}");
    }

    // The padded one alone is a warning, without the key it might be.
    let s = load_with(&add_props(
        STOWRSD_WEBAPP_DN,
        &["dXNlcjpQYWRkZWQtU2VjcmV0LTQ3MTE="],
    ))
    .await
    .unwrap();
    assert!(
        s.warnings
            .iter()
            .any(|w| w.contains(STOWRSD_WEBAPP_DN) && w.contains("value #1 ignored")),
        "{:?}",
        s.warnings
    );
    assert!(
        !format!("{:?}", s.warnings).contains("U2VjcmV0"),
        "{:?}",
        s.warnings
    );
}

#[tokio::test]
async fn bind_dn_without_password_is_refused_not_anonymous() {
    let tmp = tempfile::tempdir().unwrap();
    let slapd = Slapd::start(&tmp.path().join("slapd"), &shipped_ldif());
    let check = |pw: Option<&str>, url: &str| {
        let mut c = bin();
        c.args(["check-config", "--config", url, "--ldap-bind-dn", ADMIN])
            .env_remove("LDAP_BIND_PASSWORD");
        if let Some(pw) = pw {
            c.env("LDAP_BIND_PASSWORD", pw);
        }
        c.output().unwrap()
    };
    let text = |o: &std::process::Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    };
    // The server would read anonymously: the bind DN must not become that.
    for pw in [None, Some("")] {
        let out = check(pw, &slapd.url());
        let all = text(&out);
        assert!(!out.status.success(), "{pw:?}: {all}");
        assert!(
            all.contains(&format!("LDAP bind DN {ADMIN} has no password"))
                && all.contains("--ldap-password-file")
                && all.contains("LDAP_BIND_PASSWORD"),
            "{all}"
        );
    }
    // An empty password file too, and `serve` refuses at once.
    let empty = tmp.path().join("empty.pw");
    std::fs::write(&empty, "\n").unwrap();
    let out = bin()
        .env("STOW_EXPORTER_DICOM_LISTEN", "none")
        .args(["serve", "--config", &slapd.url(), "--ldap-bind-dn", ADMIN])
        .arg("--ldap-password-file")
        .arg(&empty)
        .arg("--data")
        .arg(tmp.path().join("data"))
        .args(["--listen", &format!("127.0.0.1:{}", free_port())])
        .env_remove("LDAP_BIND_PASSWORD")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(text(&out).contains("has no password"), "{}", text(&out));

    // The library refuses it as well (no anonymous read behind its back).
    let mut l = LdapSource::new(slapd.url());
    l.bind_dn = Some(ADMIN.into());
    let e = ConfigSource::Ldap(l.clone())
        .load(DEFAULT_DEVICE_NAME)
        .await
        .unwrap_err();
    assert!(
        matches!(e, LoadError::Ldap(LdapError::MissingPassword { .. })) && !e.is_unreachable(),
        "{e}"
    );

    // With the password, over loopback and over ldapi://: no clear-text warning.
    for url in [slapd.url(), slapd.ldapi_url()] {
        let out = check(Some(PASSWORD), &url);
        let all = text(&out);
        assert!(out.status.success(), "{url}: {all}");
        assert!(!all.contains("clear text"), "{url}: {all}");
    }
    l.password = Some(Secret::new(PASSWORD));
    assert!(
        ConfigSource::Ldap(l)
            .load(DEFAULT_DEVICE_NAME)
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn plain_ldap_bind_to_another_host_is_warned_about() {
    // TEST-NET-2 (RFC 5737): not this host, never answers. The warning
    // comes before any connection attempt; the processes are killed once
    // it is seen.
    let url = "ldap://198.51.100.1:389";
    let pw = "Bind-Secret-4711";
    let warning = format!(
        "the password of bind DN {ADMIN} goes to {url} in clear text (ldap:// without StartTLS)"
    );
    let mut check = bin()
        .args(["check-config", "--config", url, "--ldap-bind-dn", ADMIN])
        .env("LDAP_BIND_PASSWORD", pw)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = Output::collect(check.stdout.take().unwrap());
    let stderr = Output::collect(check.stderr.take().unwrap());
    let _check = KillOnDrop(check);
    let printed = stdout
        .wait_for(&[&format!("warning: {warning}")], Duration::from_secs(20))
        .await;
    assert!(!printed.contains(pw) && !stderr.text().contains(pw));

    let tmp = tempfile::tempdir().unwrap();
    let mut serve = bin()
        .env("STOW_EXPORTER_DICOM_LISTEN", "none")
        .args(["serve", "--config", url, "--ldap-bind-dn", ADMIN])
        .env("LDAP_BIND_PASSWORD", pw)
        .env("RUST_LOG", "info")
        .arg("--data")
        .arg(tmp.path().join("data"))
        .args(["--listen", &format!("127.0.0.1:{}", free_port())])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let log = Output::collect(serve.stderr.take().unwrap());
    let _serve = KillOnDrop(serve);
    let logged = log
        .wait_for(&["WARN", &warning], Duration::from_secs(20))
        .await;
    assert!(!logged.contains(pw), "{logged}");
}

/// A reproducible xorshift generator.
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// The shipped LDIF as one text, version lines dropped but the first.
fn shipped_text() -> String {
    let mut files: Vec<PathBuf> = std::fs::read_dir(shipped_ldif())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let mut out = String::from("version: 1\n\n");
    for f in files {
        let text = std::fs::read_to_string(f).unwrap();
        out.push_str(&text.replace("version: 1\n", ""));
        out.push('\n');
    }
    out
}

#[test]
fn mutated_ldif_never_panics_and_snapshots_stay_within_limits() {
    let base = shipped_text();
    assert!(snapshot_from_ldif(&base, DEFAULT_DEVICE_NAME).is_ok());
    let pieces = [
        "99999999999999999999999",
        "P999999999999999D",
        "PT9999999999999999S",
        "P365D",
        "4294967296",
        "-1",
        "0",
        "hour=99",
        "dayOfWeek=7-0",
        "\u{e9}",
        "\n",
        "\n\n",
        " ",
        ":",
        "::",
        "=",
        ",",
        "\\",
        "-\n",
        "dcmProperty: concurrency=99999999999\n",
        "dcmSchedule: hour=1-\n",
        "changetype: modify\n",
    ];
    let mut g = Gen(0x2545_f491_4f6c_dd1d);
    let mut accepted = 0;
    for _ in 0..3_000 {
        let mut text = base.clone().into_bytes();
        for _ in 0..1 + g.below(4) {
            let at = g.below(text.len());
            match g.below(4) {
                // Replace a run of digits (numbers, durations, ports).
                0 => {
                    if let Some(start) = (at..text.len()).find(|&i| text[i].is_ascii_digit()) {
                        let end = (start..text.len())
                            .find(|&i| !text[i].is_ascii_digit())
                            .unwrap_or(text.len());
                        let p = pieces[g.below(5)];
                        text.splice(start..end, p.bytes());
                    }
                }
                1 => {
                    let p = pieces[g.below(pieces.len())];
                    text.splice(at..at, p.bytes());
                }
                2 => {
                    let end = (at + g.below(40)).min(text.len());
                    text.drain(at..end);
                }
                _ => text[at] = b"x:= \n-P0T"[g.below(9)],
            }
        }
        let text = String::from_utf8_lossy(&text);
        if let Ok(s) = snapshot_from_ldif(&text, DEFAULT_DEVICE_NAME) {
            accepted += 1;
            for q in s.queues.values() {
                assert!(q.retry_delay <= MAX_RETRY_DELAY, "{q:?}");
                assert!(
                    q.max_retry_delay.is_none_or(|d| d <= MAX_RETRY_DELAY),
                    "{q:?}"
                );
                assert!(q.max_tasks_parallel <= 256 && q.retry_delay_multiplier <= 10_000);
            }
        }
    }
    assert!(accepted > 0, "some mutations are harmless");
}
