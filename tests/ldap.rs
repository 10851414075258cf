//! The LDAP directory as configuration source, against a real private
//! slapd on loopback (started by scripts/slapd.sh, stopped by its PID): the
//! shipped schema and LDIF imported with the real ldapadd, then the
//! administrator's edits with ldapmodify followed by reloads.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::*;
use stow_exporter::config::{ConfigSource, DEFAULT_DEVICE_NAME, LdapSource, Secret};

const ADMIN: &str = "cn=admin,dc=dcm4che,dc=org";
const PASSWORD: &str = "secret";
const DEV: &str =
    "dicomDeviceName=dcm4chee-arc,cn=Devices,cn=DICOM Configuration,dc=dcm4che,dc=org";

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/slapd.sh")
}

fn free_port_pair() -> u16 {
    // slapd uses PORT for ldap:// and PORT+1 for ldaps://.
    loop {
        let p = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if p < 65000 && std::net::TcpListener::bind(("127.0.0.1", p + 1)).is_ok() {
            return p;
        }
    }
}

/// A private slapd, stopped (by its PID) when dropped.
struct Slapd {
    dir: PathBuf,
    port: u16,
}

impl Slapd {
    /// Starts slapd with the schema and imports `ldif_dir` with ldapadd.
    fn start(dir: &Path, ldif_dir: &Path) -> Slapd {
        let port = free_port_pair();
        let out = Command::new("bash")
            .arg(script())
            .arg("start")
            .arg(dir)
            .arg(port.to_string())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "slapd start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let s = Slapd {
            dir: dir.to_path_buf(),
            port,
        };
        let out = Command::new("bash")
            .arg(script())
            .arg("load")
            .arg(dir)
            .arg(port.to_string())
            .arg(ldif_dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "ldapadd of {}: {}",
            ldif_dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        s
    }

    fn url(&self) -> String {
        format!("ldap://127.0.0.1:{}", self.port)
    }

    fn source(&self) -> LdapSource {
        let mut l = LdapSource::new(self.url());
        l.bind_dn = Some(ADMIN.into());
        l.password = Some(Secret::new(PASSWORD));
        l
    }

    /// Runs ldapmodify (what Apache Directory Studio does on save).
    fn modify(&self, ldif: &str) {
        self.tool("ldapmodify", ldif);
    }

    fn tool(&self, tool: &str, ldif: &str) {
        let f = self.dir.join("edit.ldif");
        std::fs::write(&f, ldif).unwrap();
        let out = Command::new(tool)
            .args(["-x", "-H", &self.url(), "-D", ADMIN, "-w", PASSWORD, "-f"])
            .arg(&f)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{tool}: {}\n{ldif}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn stop(&self) {
        let _ = Command::new("bash")
            .arg(script())
            .arg("stop")
            .arg(&self.dir)
            .status();
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        self.stop();
    }
}

#[tokio::test]
async fn shipped_ldif_in_slapd_resolves_like_the_files() {
    let tmp = tempfile::tempdir().unwrap();
    let slapd = Slapd::start(&tmp.path().join("slapd"), &shipped_ldif());
    let from_ldap = ConfigSource::Ldap(slapd.source())
        .load(DEFAULT_DEVICE_NAME)
        .await
        .unwrap();
    let from_files = ConfigSource::Ldif(shipped_ldif())
        .load(DEFAULT_DEVICE_NAME)
        .await
        .unwrap();
    let e = from_ldap.exporter("StowExporter").unwrap();
    assert_eq!(
        (e.uri.as_str(), e.queue.as_str(), e.ae_title.as_deref()),
        ("stow:DCM4CHEE", "Export1", Some("DCM4CHEE1"))
    );
    assert_eq!(
        from_ldap.exporters.keys().collect::<Vec<_>>(),
        from_files.exporters.keys().collect::<Vec<_>>()
    );
    for (name, w) in &from_files.web_apps {
        assert_eq!(from_ldap.web_app(name).unwrap().service_url, w.service_url);
    }
    assert_eq!(
        from_ldap.queues.keys().collect::<Vec<_>>(),
        from_files.queues.keys().collect::<Vec<_>>()
    );
    assert!(from_ldap.source.starts_with("ldap://127.0.0.1:"));

    // Anonymous read works too (the test server allows reading).
    let anon = LdapSource::new(slapd.url());
    assert!(
        ConfigSource::Ldap(anon)
            .load(DEFAULT_DEVICE_NAME)
            .await
            .is_ok()
    );

    // A wrong password is a refused bind, named as such.
    let mut bad = slapd.source();
    bad.password = Some(Secret::new("wrong"));
    let e = ConfigSource::Ldap(bad)
        .load(DEFAULT_DEVICE_NAME)
        .await
        .unwrap_err();
    assert!(!e.is_unreachable());
    assert!(
        e.to_string().contains("bind failed") && e.to_string().contains("invalidCredentials"),
        "{e}"
    );
    assert!(
        !e.to_string().contains("wrong"),
        "the password is never shown: {e}"
    );

    // check-config against the directory, password from the environment.
    let run = |pw: &str| {
        Command::new(env!("CARGO_BIN_EXE_stow-exporter"))
            .args([
                "check-config",
                "--config",
                &slapd.url(),
                "--ldap-bind-dn",
                ADMIN,
            ])
            .env("LDAP_BIND_PASSWORD", pw)
            .output()
            .unwrap()
    };
    let ok = run(PASSWORD);
    let stdout = String::from_utf8_lossy(&ok.stdout);
    assert!(ok.status.success(), "{stdout}");
    assert!(
        stdout.contains("StowExporter")
            && stdout.contains("/dcm4chee-arc/aets/DCM4CHEE/rs/studies"),
        "{stdout}"
    );
    let bad = run("wrong");
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stdout).contains("invalidCredentials"));
}

#[tokio::test]
async fn administrator_edits_apply_on_reload() {
    let tmp = tempfile::tempdir().unwrap();
    let rcv = Receiver::start(&tmp.path().join("received"), Duration::from_millis(150)).await;
    let cfg = write_config(tmp.path(), rcv.addr.port(), "");
    let slapd = Slapd::start(&tmp.path().join("slapd"), &cfg);
    let (study_uid, files) = study(&tmp.path().join("src"), 6, 32);
    let data = tmp.path().join("data");
    import(&data, &files).await;

    let svc = Service::start_with(ConfigSource::Ldap(slapd.source()), &data).await;
    let reload = || async { svc.http.post(svc.url("/ctrl/reload")).send().await.unwrap() };

    // 1. concurrency=5 on a web app (dcmProperty added with ldapmodify).
    slapd.modify(&add_props(STOWRSD_WEBAPP_DN, &["concurrency=5"]));
    assert_eq!(reload().await.status(), 204);
    let t = svc.export_study("STOWRSD", &study_uid).await;
    assert_eq!(
        svc.wait_done(t["taskID"].as_str().unwrap()).await["status"],
        "COMPLETED"
    );
    assert_eq!(
        rcv.max_in_flight.load(Ordering::SeqCst),
        5,
        "the next task uses the new concurrency"
    );

    // 2. A new dcmExporter entry.
    slapd.tool(
        "ldapadd",
        &format!(
            "dn: dcmExporterID=NewOne,{DEV}\nobjectClass: dcmExporter\ndcmExporterID: NewOne\ndcmURI: stow:stowrsd\ndcmQueueName: Export\ndicomAETitle: DCM4CHEE1\n"
        ),
    );
    assert_eq!(reload().await.status(), 204);
    let t = svc.export_study("NewOne", &study_uid).await;
    assert_eq!(
        svc.wait_done(t["taskID"].as_str().unwrap()).await["status"],
        "COMPLETED"
    );

    // 3. A changed dcmURI: NewOne now goes to the DCM4CHEE web app's path.
    slapd.modify(&format!("dn: dcmExporterID=NewOne,{DEV}\nchangetype: modify\nreplace: dcmURI\ndcmURI: stow:DCM4CHEE\n-\n"));
    assert_eq!(reload().await.status(), 204);
    let before = rcv.seen().len();
    let t = svc.export_study("NewOne", &study_uid).await;
    assert_eq!(
        svc.wait_done(t["taskID"].as_str().unwrap()).await["status"],
        "COMPLETED"
    );
    assert!(
        rcv.seen()[before..]
            .iter()
            .all(|s| s.path == "/dcm4chee-arc/aets/DCM4CHEE/rs/studies")
    );

    // 4. A deleted exporter is gone after reload.
    slapd.tool("ldapdelete", &format!("dcmExporterID=NewOne,{DEV}\n"));
    assert_eq!(reload().await.status(), 204);
    let r = svc
        .http
        .post(svc.url(&format!("/aets/{AET}/rs/studies/{study_uid}/export/NewOne")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    // 5. An edit that makes an entry invalid: 409 naming DN and attribute; the old snapshot stays.
    slapd.modify(&format!(
        "dn: {STOWRSD_WEBAPP_DN}\nchangetype: modify\nreplace: dcmProperty\ndcmProperty: concurrency=abc\n-\n"
    ));
    let r = reload().await;
    assert_eq!(r.status(), 409);
    let body: serde_json::Value = r.json().await.unwrap();
    let err = body["errors"][0].as_str().unwrap();
    assert!(
        err.contains(STOWRSD_WEBAPP_DN)
            && err.contains("dcmProperty")
            && err.contains("concurrency=abc"),
        "{err}"
    );
    let t = svc.export_study("STOWRSD", &study_uid).await;
    assert_eq!(
        svc.wait_done(t["taskID"].as_str().unwrap()).await["status"],
        "COMPLETED"
    );

    // 6. The directory goes away during a reload: 503, and exports go on.
    slapd.stop();
    let r = reload().await;
    assert_eq!(r.status(), 503);
    assert!(r.text().await.unwrap().contains("unreachable"));
    let t = svc.export_study("STOWRSD", &study_uid).await;
    assert_eq!(
        svc.wait_done(t["taskID"].as_str().unwrap()).await["status"],
        "COMPLETED"
    );
    svc.stop().await;
}

/// Makes a CA and a server certificate for 127.0.0.1 with openssl.
fn make_certs(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=stow-exporter test CA",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
}

#[tokio::test]
async fn ldaps_and_starttls_with_a_test_ca() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("slapd");
    make_certs(&dir.join("tls"));
    let slapd = Slapd::start(&dir, &shipped_ldif());
    let ca = dir.join("tls/ca.crt");

    let mut ldaps = slapd.source();
    ldaps.url = format!("ldaps://127.0.0.1:{}", slapd.port + 1);
    ldaps.ca_file = Some(ca.clone());
    let s = ConfigSource::Ldap(ldaps.clone())
        .load(DEFAULT_DEVICE_NAME)
        .await
        .unwrap();
    assert!(s.exporter("StowExporter").is_some());

    let mut starttls = slapd.source();
    starttls.starttls = true;
    starttls.ca_file = Some(ca);
    assert!(
        ConfigSource::Ldap(starttls)
            .load(DEFAULT_DEVICE_NAME)
            .await
            .is_ok()
    );

    // Without the test CA the server's certificate is not trusted.
    ldaps.ca_file = None;
    let e = ConfigSource::Ldap(ldaps)
        .load(DEFAULT_DEVICE_NAME)
        .await
        .unwrap_err();
    assert!(e.is_unreachable(), "{e}");
    assert!(e.to_string().to_lowercase().contains("certificate"), "{e}");
}

#[tokio::test]
async fn serve_watch_reloads_on_directory_change() {
    let tmp = tempfile::tempdir().unwrap();
    let slapd = Slapd::start(&tmp.path().join("slapd"), &shipped_ldif());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let pwfile = tmp.path().join("ldap.pw");
    std::fs::write(&pwfile, format!("{PASSWORD}\n")).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_stow-exporter"))
        .env("STOW_EXPORTER_DICOM_LISTEN", "none")
        .args([
            "serve",
            "--config",
            &slapd.url(),
            "--ldap-bind-dn",
            ADMIN,
            "--ldap-password-file",
        ])
        .arg(&pwfile)
        .arg("--data")
        .arg(tmp.path().join("data"))
        .args(["--listen", &format!("127.0.0.1:{port}"), "--watch", "1"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let http = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/dcm4chee-arc/export");
    let describe = || async {
        let v: serde_json::Value = http.get(&url).send().await.ok()?.json().await.ok()?;
        v.as_array()?
            .iter()
            .find(|e| e["id"] == "StowExporter")
            .and_then(|e| e["description"].as_str().map(str::to_string))
    };
    let start = Instant::now();
    while describe().await.is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "serve did not come up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    slapd.modify(&format!(
        "dn: dcmExporterID=StowExporter,{DEV}\nchangetype: modify\nreplace: dicomDescription\ndicomDescription: edited in the directory\n-\n"
    ));
    let start = Instant::now();
    loop {
        if describe().await.as_deref() == Some("edited in the directory") {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "--watch did not pick up the change"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

#[tokio::test]
async fn serve_waits_for_an_unreachable_directory_at_start() {
    let tmp = tempfile::tempdir().unwrap();
    // The directory, loaded, then stopped (its data stays in its folder):
    // it is down when the service starts.
    let slapd = Slapd::start(&tmp.path().join("slapd"), &shipped_ldif());
    slapd.stop();
    let ldap_port = slapd.port;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // Killed (by its PID) when the test ends, also when it fails.
    let mut child = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_stow-exporter"))
            .env("STOW_EXPORTER_DICOM_LISTEN", "none")
            .args([
                "serve",
                "--config",
                &format!("ldap://127.0.0.1:{ldap_port}"),
                "--ldap-bind-dn",
                ADMIN,
            ])
            .env("LDAP_BIND_PASSWORD", PASSWORD)
            .arg("--data")
            .arg(tmp.path().join("data"))
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    // Its log, as it comes, read by a thread of its own.
    let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let reader = {
        let log = log.clone();
        let stderr = child.0.stderr.take().unwrap();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let mut l = log.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        })
    };
    // Not a pause: the service says it found the directory unreachable and
    // waits, and is still running after saying so.
    let start = Instant::now();
    while !log
        .lock()
        .unwrap()
        .contains("configuration source unreachable; retrying")
    {
        if let Some(status) = child.0.try_wait().unwrap() {
            panic!(
                "serve exited ({status}) instead of waiting for the directory: {}",
                log.lock().unwrap()
            );
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no \"configuration source unreachable; retrying\" within 20 s: {}",
            log.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        child.0.try_wait().unwrap().is_none(),
        "serve keeps waiting instead of exiting: {}",
        log.lock().unwrap()
    );

    // Up again, with the same data.
    let out = Command::new("bash")
        .arg(script())
        .arg("start")
        .arg(&slapd.dir)
        .arg(ldap_port.to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "slapd restart: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Once the directory is up the configuration loads: the service
    // answers, with the exporters from the directory.
    let exporters = eventually(Duration::from_secs(30), || async {
        let r = reqwest::get(format!("http://127.0.0.1:{port}/dcm4chee-arc/export"))
            .await
            .map_err(|e| format!("serve did not start once the directory was up: {e}"))?;
        r.json::<serde_json::Value>()
            .await
            .map_err(|e| format!("GET /export: {e}"))
    })
    .await;
    assert!(
        exporters
            .as_array()
            .is_some_and(|a| a.iter().any(|e| e["id"] == "StowExporter")),
        "the directory's configuration is loaded: {exporters}"
    );
    child.kill();
    reader.join().unwrap();
}

#[tokio::test]
async fn cn_config_schema_loads_with_ldapadd_into_a_core_only_slapd() {
    // The administrator's way: a running slapd with only `core`, the three
    // cn=config schema files added with ldapadd -Y EXTERNAL, then ldif/.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("slapd");
    let port = free_port_pair();
    let out = Command::new("bash")
        .arg(script())
        .arg("start")
        .arg(&dir)
        .arg(port.to_string())
        .env("SLAPD_CORE_ONLY", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let slapd = Slapd {
        dir: dir.clone(),
        port,
    };
    let ldapi = Command::new("bash")
        .arg(script())
        .arg("ldapi-url")
        .arg(&dir)
        .output()
        .unwrap();
    let ldapi = String::from_utf8(ldapi.stdout).unwrap().trim().to_string();
    let schema = Path::new(env!("CARGO_MANIFEST_DIR")).join("schema/slapd");
    // Before the schema, the configuration cannot be imported.
    let early = Command::new("bash")
        .arg(script())
        .arg("load")
        .arg(&dir)
        .arg(port.to_string())
        .arg(shipped_ldif())
        .output()
        .unwrap();
    assert!(!early.status.success());
    for name in ["dicom", "dcm4che", "dcm4chee-archive"] {
        let out = Command::new("ldapadd")
            .args(["-Q", "-Y", "EXTERNAL", "-H", &ldapi, "-f"])
            .arg(schema.join(format!("{name}.ldif")))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // The first attempt created the base DN before it stopped; as the
    // README says, skip 10-base-dn.ldif when the base DN exists.
    let rest = tmp.path().join("ldif-rest");
    std::fs::create_dir_all(&rest).unwrap();
    for e in std::fs::read_dir(shipped_ldif()).unwrap() {
        let p = e.unwrap().path();
        if p.file_name().unwrap() != "10-base-dn.ldif" {
            std::fs::copy(&p, rest.join(p.file_name().unwrap())).unwrap();
        }
    }
    let out = Command::new("bash")
        .arg(script())
        .arg("load")
        .arg(&dir)
        .arg(port.to_string())
        .arg(&rest)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = ConfigSource::Ldap(slapd.source())
        .load(DEFAULT_DEVICE_NAME)
        .await
        .unwrap();
    assert_eq!(s.exporter("StowExporter").unwrap().uri, "stow:DCM4CHEE");
}

#[tokio::test]
async fn export_rules_of_the_device_and_of_an_ae_load_from_slapd_like_the_files() {
    let tmp = tempfile::tempdir().unwrap();
    let slapd = Slapd::start(&tmp.path().join("slapd"), &shipped_ldif());
    // The shipped schema takes dcmExportRule: ldapadd refuses an entry
    // of an unknown class or attribute.
    let rules = format!(
        "dn: cn=Forward CT,{DEV}\nobjectClass: dcmExportRule\ncn: Forward CT\ndcmEntity: Series\n\
         dcmDuration: PT1M\ndcmExporterID: STOWRSD\ndcmExporterID: StowExporter\n\
         dcmProperty: Modality=CT\ndcmProperty: SendingApplicationEntityTitle!=TEST.*\n\
         dcmSchedule: hour=7-18\ndcmExportReoccurredInstances: ALWAYS\n\n\
         dn: cn=From the AE,dicomAETitle=DCM4CHEE1,{DEV}\nobjectClass: dcmExportRule\n\
         cn: From the AE\ndcmEntity: Study\ndcmExporterID: STOWRSD\n"
    );
    slapd.tool("ldapadd", &rules);
    let snap = ConfigSource::Ldap(slapd.source())
        .load(DEFAULT_DEVICE_NAME)
        .await
        .unwrap();
    let files = tmp.path().join("ldif");
    std::fs::create_dir_all(&files).unwrap();
    for e in std::fs::read_dir(shipped_ldif()).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, files.join(p.file_name().unwrap())).unwrap();
    }
    std::fs::write(
        files.join("90-rules.ldif"),
        format!("version: 1\n\n{rules}"),
    )
    .unwrap();
    let from_files = ConfigSource::Ldif(files)
        .load(DEFAULT_DEVICE_NAME)
        .await
        .unwrap();
    for s in [&snap, &from_files] {
        let json = serde_json::to_value(&s.export_rules).unwrap();
        assert_eq!(json.as_array().unwrap().len(), 2, "{json}");
        let device_rule = s
            .export_rules
            .iter()
            .find(|r| r.name == "Forward CT")
            .unwrap();
        let v = serde_json::to_value(device_rule).unwrap();
        assert_eq!(v["entity"], "Series");
        assert_eq!(
            v["exporter_ids"],
            serde_json::json!(["STOWRSD", "StowExporter"])
        );
        assert_eq!(v["duration"], "PT1M");
        assert_eq!(v["reoccurred"], "ALWAYS");
        assert_eq!(v["schedules"], serde_json::json!(["hour=7-18"]));
        assert_eq!(
            v["conditions"],
            serde_json::json!(["Modality=CT", "SendingApplicationEntityTitle!=TEST.*"])
        );
        assert_eq!(v["ae_title"], serde_json::Value::Null);
        let ae_rule = s
            .export_rules
            .iter()
            .find(|r| r.name == "From the AE")
            .unwrap();
        assert_eq!(ae_rule.ae_title.as_deref(), Some("DCM4CHEE1"));
        assert_eq!(
            serde_json::to_value(ae_rule).unwrap()["reoccurred"],
            "REPLACE",
            "dcm4chee's default"
        );
    }
}
