//! The real binary: `import`, `export`, `serve`, `check-config`, and a
//! `serve` killed with SIGKILL in the middle of an export.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_stow-exporter"))
}

fn serve(cfg: &Path, data: &Path, port: u16) -> Child {
    bin()
        .env("STOW_EXPORTER_DICOM_LISTEN", "none")
        .args(["serve", "--config"])
        .arg(cfg)
        .arg("--data")
        .arg(data)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

#[tokio::test]
async fn import_reports_bad_files_and_is_idempotent() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let (_, files) = study(&src, 3, 32);
    std::fs::write(src.join("notes.txt"), "not DICOM").unwrap();
    let data = tmp.path().join("data");
    let out = bin()
        .arg("import")
        .arg("--data")
        .arg(&data)
        .arg(&src)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(2),
        "a skipped file makes the exit status 2"
    );
    assert!(
        stdout.contains("imported 3 new, 0 already stored, 1 failed"),
        "{stdout}"
    );
    assert!(
        stderr.contains("notes.txt"),
        "the bad file is named: {stderr}"
    );
    let out = bin()
        .arg("import")
        .arg("--data")
        .arg(&data)
        .args(&files)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("imported 0 new, 3 already stored, 0 failed")
    );
}

#[tokio::test]
async fn check_config_names_the_bad_entry() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = write_config(tmp.path(), 18080, "");
    let out = bin()
        .arg("check-config")
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("StowExporter")
            && stdout.contains("http://127.0.0.1:18080/dcm4chee-arc/aets/DCM4CHEE/rs/studies"),
        "{stdout}"
    );

    std::fs::write(
        cfg.join("99-test.ldif"),
        add_props(DCM4CHEE_WEBAPP_DN, &["chunked"]),
    )
    .unwrap();
    let out = bin()
        .arg("check-config")
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!(
            "{DCM4CHEE_WEBAPP_DN}: dcmProperty: \"chunked\" is not name=value"
        )),
        "{stdout}"
    );
}

#[tokio::test]
async fn sigkill_during_export_then_restart_completes_without_loss() {
    let tmp = tempfile::tempdir().unwrap();
    // Slow receiver, so the kill lands in the middle of the export.
    let rcv = Receiver::start(&tmp.path().join("received"), Duration::from_millis(100)).await;
    let cfg = write_config(tmp.path(), rcv.addr.port(), "");
    let data = tmp.path().join("data");
    let (study_uid, files) = study(&tmp.path().join("src"), 20, 64);
    let out = bin()
        .arg("import")
        .arg("--data")
        .arg(&data)
        .arg(tmp.path().join("src"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let port = free_port();
    let mut child = serve(&cfg, &data, port);
    wait_up(port, Duration::from_secs(20)).await;
    // Queued by the CLI into the embedded queue, taken by the running serve.
    let out = bin()
        .args(["export", "--config"])
        .arg(&cfg)
        .arg("--data")
        .arg(&data)
        .args(["--exporter", "STOWRSD", "--study", &study_uid])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let task: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = task["taskID"].as_str().unwrap().to_string();

    let start = Instant::now();
    while rcv.stored().len() < 5 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "export did not start"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let before = rcv.stored().len();
    assert!(before < 20, "killed mid-export ({before} of 20 arrived)");

    let mut child = serve(&cfg, &data, port);
    wait_up(port, Duration::from_secs(20)).await;
    let http = reqwest::Client::new();
    let done = wait_done(
        &http,
        &format!("http://127.0.0.1:{port}/dcm4chee-arc"),
        &id,
        Duration::from_secs(60),
    )
    .await;
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(done["status"], "COMPLETED", "{done}");
    assert_eq!(done["completed"], 20);
    assert_arrived(&rcv, &files);
    // Resumed, not restarted: only an instance in flight at the kill may go twice.
    let requests = rcv.seen().len();
    assert!(requests <= 21, "{requests} requests for 20 instances");
}

#[tokio::test]
async fn embedded_default_with_builtin_receiver_and_clean_sigterm() {
    let tmp = tempfile::tempdir().unwrap();
    let rport = free_port();
    // Both shipped web apps (DCM4CHEE and stowrsd) resolve to this port.
    let cfg = write_config(tmp.path(), rport, "");
    let data = tmp.path().join("data");
    let received = tmp.path().join("received");
    let (study_uid, files) = study(&tmp.path().join("src"), 3, 32);
    assert!(
        bin()
            .arg("import")
            .arg("--data")
            .arg(&data)
            .args(&files)
            .status()
            .unwrap()
            .success()
    );

    let port = free_port();
    let mut child = bin()
        .env("STOW_EXPORTER_DICOM_LISTEN", "none")
        .args(["serve", "--config"])
        .arg(&cfg)
        .arg("--data")
        .arg(&data)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .arg("--stowrsd")
        .arg(&received)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_up(port, Duration::from_secs(20)).await;
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}/dcm4chee-arc");
    for exporter in ["StowExporter", "STOWRSD"] {
        let r = http
            .post(format!(
                "{base}/aets/{AET}/rs/studies/{study_uid}/export/{exporter}"
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        let t: serde_json::Value = r.json().await.unwrap();
        let done = wait_done(
            &http,
            &base,
            t["taskID"].as_str().unwrap(),
            Duration::from_secs(30),
        )
        .await;
        assert_eq!(done["status"], "COMPLETED", "{exporter}: {done}");
    }
    for f in &files {
        let got = received.join(format!("{}.dcm", sop_uid(f)));
        assert_eq!(std::fs::read(f).unwrap(), std::fs::read(&got).unwrap());
    }

    let st = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "serve did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "SIGTERM is a clean stop: {status:?}");
}

// ---------------------------------------------------------------------------
// `tasks` (a client of the control API) and `export --wait`.

/// `serve` on `port` with `extra` arguments and `env`; waits until it answers.
async fn start_serve(
    cfg: &Path,
    data: &Path,
    port: u16,
    extra: &[&std::ffi::OsStr],
    env: &[(&str, &str)],
) -> KillOnDrop {
    let mut c = bin();
    c.env("STOW_EXPORTER_DICOM_LISTEN", "none")
        .args(["serve", "--config"])
        .arg(cfg)
        .arg("--data")
        .arg(data)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(extra)
        .env_remove("STOW_EXPORTER_API_TOKEN")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (k, v) in env {
        c.env(k, v);
    }
    let running = KillOnDrop(c.spawn().unwrap());
    wait_up(port, Duration::from_secs(20)).await;
    running
}

/// A running `serve` on a fresh configuration and data directory: `ldif`
/// is added to the shipped configuration, a study of `instances` objects
/// (none for 0) is imported, and with `receiver` the built-in receiver runs
/// in-process at the stowrsd web app's address, storing into `received/`.
struct Fixture {
    cfg: PathBuf,
    data: PathBuf,
    study_uid: String,
    files: Vec<PathBuf>,
    received: PathBuf,
    url: String,
    base: String,
    _serve: KillOnDrop,
}

async fn fixture(
    tmp: &Path,
    ldif: &str,
    instances: usize,
    receiver: bool,
    env: &[(&str, &str)],
) -> Fixture {
    let cfg = write_config(tmp, free_port(), ldif);
    let data = tmp.join("data");
    let (study_uid, files) = if instances > 0 {
        let (uid, files) = study(&tmp.join("src"), instances, 32);
        import(&data, &files).await;
        (uid, files)
    } else {
        (String::new(), Vec::new())
    };
    let port = free_port();
    let received = tmp.join("received");
    let extra: Vec<&std::ffi::OsStr> = if receiver {
        vec!["--stowrsd".as_ref(), received.as_os_str()]
    } else {
        Vec::new()
    };
    let serve = start_serve(&cfg, &data, port, &extra, env).await;
    let url = format!("http://127.0.0.1:{port}");
    Fixture {
        base: format!("{url}/dcm4chee-arc"),
        cfg,
        data,
        study_uid,
        files,
        received,
        url,
        _serve: serve,
    }
}

/// `stow-exporter tasks --url <url> args...`, without the environment's
/// token or URL.
fn tasks(url: &str, args: &[&str]) -> std::process::Output {
    bin()
        .args(["tasks", "--url", url])
        .args(args)
        .env_remove("STOW_EXPORTER_API_TOKEN")
        .env_remove("STOW_EXPORTER_URL")
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Asserts success; returns stdout.
fn ok(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

async fn get_json(url: &str) -> (u16, serde_json::Value) {
    let r = reqwest::get(url).await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or_default())
}

async fn trigger(base: &str, exporter: &str, study: &str) -> String {
    let r = reqwest::Client::new()
        .post(format!(
            "{base}/aets/{AET}/rs/studies/{study}/export/{exporter}"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let t: serde_json::Value = r.json().await.unwrap();
    t["taskID"].as_str().unwrap().to_string()
}

const STOW_EXPORTER_DN: &str = "dcmExporterID=StowExporter,dicomDeviceName=dcm4chee-arc,cn=Devices,cn=DICOM Configuration,dc=dcm4che,dc=org";
/// An exporter `Control1` on StowExporter's queue (Export1), always open,
/// to the stowrsd web app.
const CONTROL_EXPORTER_LDIF: &str = "dn: dcmExporterID=Control1,dicomDeviceName=dcm4chee-arc,cn=Devices,cn=DICOM Configuration,dc=dcm4che,dc=org
objectClass: dcmExporter
dcmExporterID: Control1
dcmURI: stow:stowrsd
dicomAETitle: DCM4CHEE1
dcmQueueName: Export1

";
const EXPORT_QUEUE_DN: &str = "dcmQueueName=Export,dicomDeviceName=dcm4chee-arc,cn=Devices,cn=DICOM Configuration,dc=dcm4che,dc=org";

/// StowExporter's dcmSchedule window is an hour 12 hours away: its tasks
/// stay SCHEDULED.
#[tokio::test]
async fn tasks_list_and_show_match_the_rest_api() {
    let tmp = tempfile::tempdir().unwrap();
    let f = fixture(tmp.path(), "", 3, true, &[]).await;
    let (study_uid, url, base) = (&f.study_uid, &f.url, &f.base);
    let http = reqwest::Client::new();
    let mut ids = Vec::new();
    for exporter in ["StowExporter", "STOWRSD"] {
        let id = trigger(base, exporter, study_uid).await;
        let done = wait_done(&http, base, &id, Duration::from_secs(30)).await;
        assert_eq!(done["status"], "COMPLETED", "{done}");
        ids.push(id);
    }

    // --json: the API's array unchanged.
    let (_, rest) = get_json(&format!("{base}/monitor/export")).await;
    let out = ok(&tasks(url, &["list", "--json"]));
    let listed: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(listed, rest);
    let rest = rest.as_array().unwrap();
    assert_eq!(rest.len(), 2);

    // The table: a header, then one aligned line per task of the API.
    let out = ok(&tasks(&format!("{base}/"), &["list"]));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(
        lines[0].starts_with("ID  STATUS") && lines[0].contains("MESSAGE"),
        "{out}"
    );
    let status_col = lines[0].find("STATUS").unwrap();
    for (line, t) in lines[1..].iter().zip(rest) {
        let cells: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(cells[0], t["taskID"].as_str().unwrap(), "{out}");
        assert_eq!(cells[1], t["status"].as_str().unwrap(), "{out}");
        assert_eq!(cells[2], t["ExporterID"].as_str().unwrap(), "{out}");
        assert!(
            study_uid.ends_with(cells[3].trim_start_matches('\u{2026}')),
            "{out}"
        );
        assert_eq!(cells[4], "3/0/0/0", "{out}");
        assert_eq!(cells[5], "3", "{out}");
        assert_eq!(
            &line[status_col..status_col + 9],
            "COMPLETED",
            "aligned: {out}"
        );
    }

    // Filters and paging reach the API.
    let out = ok(&tasks(url, &["list", "--json", "--exporter", "STOWRSD"]));
    let v: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(v.len(), 1);
    assert_eq!(v[0]["taskID"], ids[1].as_str());
    let out = ok(&tasks(
        url,
        &[
            "list",
            "--json",
            "--status",
            "completed",
            "--study",
            study_uid,
            "--orderby",
            "createdTime",
            "--limit",
            "1",
        ],
    ));
    let v: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(v.len(), 1);
    assert_eq!(v[0]["taskID"], ids[0].as_str(), "oldest first");
    let out = ok(&tasks(url, &["list", "--status", "FAILED"]));
    assert_eq!(out, "no tasks match\n");

    // show: the record and every instance's result.
    let id = &ids[1];
    let out = ok(&tasks(url, &["show", id]));
    assert!(out.starts_with(&format!("Task {id}\n")), "{out}");
    assert!(
        out.contains("Status:    COMPLETED") && out.contains("Exporter:  STOWRSD"),
        "{out}"
    );
    assert!(
        out.contains("3 completed, 0 warning, 0 failed, 0 missing of 3"),
        "{out}"
    );
    for f in &f.files {
        let uid = sop_uid(f);
        assert!(
            out.lines()
                .any(|l| l.starts_with(&uid) && l.contains("COMPLETED")),
            "{uid}: {out}"
        );
    }
    let out = ok(&tasks(url, &["show", id, "--json"]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        v["task"],
        get_json(&format!("{base}/monitor/export/{id}")).await.1
    );
    assert_eq!(
        v["instances"],
        get_json(&format!("{base}/monitor/export/{id}/instances"))
            .await
            .1
    );
    assert_eq!(v["instances"].as_array().unwrap().len(), 3);

    let out = tasks(url, &["show", "999999"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("404 Not Found: task 999999 not found"),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test]
async fn tasks_cancel_reschedule_and_delete_a_waiting_task() {
    let tmp = tempfile::tempdir().unwrap();
    // Control, an exporter on StowExporter's queue (Export1) whose window
    // is open, to the built-in receiver.
    let ldif = format!("{}{CONTROL_EXPORTER_LDIF}", closed_window(STOW_EXPORTER_DN));
    let f = fixture(tmp.path(), &ldif, 2, true, &[]).await;
    let (study_uid, url, base) = (&f.study_uid, &f.url, &f.base);
    let status = |id: String| {
        let base = base.clone();
        async move { get_json(&format!("{base}/monitor/export/{id}")).await.1["status"].clone() }
    };

    let id = trigger(base, "StowExporter", study_uid).await;
    // Instead of a pause: a task of the control exporter, triggered after,
    // runs to its end. The queue hands out its due tasks oldest first, one
    // at a time (dcmMaxTasksParallel 1), so the worker has looked at the
    // held task before taking the control one, and passed it by.
    let control = trigger(base, "Control1", study_uid).await;
    let done = wait_done(
        &reqwest::Client::new(),
        base,
        &control,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(done["status"], "COMPLETED", "the control task ran: {done}");
    assert_eq!(status(id.clone()).await, "SCHEDULED", "held by the window");
    // The control task's record goes, so that the counts below are of
    // StowExporter's tasks alone.
    let r = reqwest::Client::new()
        .delete(format!("{base}/monitor/export/{control}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);

    let out = ok(&tasks(url, &["cancel", &id]));
    assert_eq!(out, format!("task {id}: CANCELED\n"));
    assert_eq!(status(id.clone()).await, "CANCELED");
    // Again: the API's 409 and its message, and a failure exit.
    let out = tasks(url, &["cancel", &id]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr).trim(),
        format!("error: 409 Conflict: Cannot cancel Task[id={id}] with Status: CANCELED")
    );

    // Rescheduled: SCHEDULED again, due when asked.
    let due = (chrono::Local::now() + chrono::Duration::days(1))
        .format("%Y%m%d%H%M%S")
        .to_string();
    let out = ok(&tasks(url, &["reschedule", &id, "--scheduled-time", &due]));
    assert!(
        out.starts_with(&format!(
            "task {id}: SCHEDULED (exporter StowExporter, due "
        )),
        "{out}"
    );
    let (_, t) = get_json(&format!("{base}/monitor/export/{id}")).await;
    assert_eq!(t["status"], "SCHEDULED");
    let scheduled =
        chrono::DateTime::parse_from_rfc3339(t["scheduledTime"].as_str().unwrap()).unwrap();
    assert_eq!(
        scheduled
            .with_timezone(&chrono::Local)
            .format("%Y%m%d%H%M%S")
            .to_string(),
        due
    );
    // With a task ID, --exporter names the exporter it goes to.
    let out = ok(&tasks(
        url,
        &[
            "reschedule",
            &id,
            "--exporter",
            "STOWRSD",
            "--scheduled-time",
            &due,
        ],
    ));
    assert!(
        out.starts_with(&format!("task {id}: SCHEDULED (exporter STOWRSD, due ")),
        "{out}"
    );
    let (_, t) = get_json(&format!("{base}/monitor/export/{id}")).await;
    assert_eq!(
        (&t["ExporterID"], &t["queue"]),
        (&"STOWRSD".into(), &"Export".into())
    );
    // --to-exporter says the same, here back to StowExporter.
    ok(&tasks(
        url,
        &[
            "reschedule",
            &id,
            "--to-exporter",
            "StowExporter",
            "--scheduled-time",
            &due,
        ],
    ));
    let (_, t) = get_json(&format!("{base}/monitor/export/{id}")).await;
    assert_eq!(
        (&t["ExporterID"], &t["queue"]),
        (&"StowExporter".into(), &"Export1".into())
    );
    let out = tasks(url, &["reschedule", &id, "--scheduled-time", "tomorrow"]);
    assert_eq!(out.status.code(), Some(2), "refused by the parser");

    // Bulk forms select by filters.
    let second = trigger(base, "StowExporter", study_uid).await;
    let out = ok(&tasks(
        url,
        &[
            "cancel",
            "--status",
            "SCHEDULED",
            "--exporter",
            "StowExporter",
        ],
    ));
    assert_eq!(out, "canceled 2 tasks\n");
    assert_eq!(status(id.clone()).await, "CANCELED");
    assert_eq!(status(second.clone()).await, "CANCELED");
    let out = tasks(url, &["cancel", "--status", "COMPLETED"]);
    assert!(
        text(&out.stderr).contains("400 Bad Request: status: COMPLETED tasks have ended"),
        "{}",
        text(&out.stderr)
    );
    let out = ok(&tasks(
        url,
        &[
            "reschedule",
            "--study",
            study_uid,
            "--scheduled-time",
            &due,
            "--json",
        ],
    ));
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&out).unwrap(),
        serde_json::json!({"count": 2})
    );
    assert_eq!(status(second.clone()).await, "SCHEDULED");

    // Delete one, then the rest; without a filter, --all is required.
    let out = ok(&tasks(url, &["delete", &id]));
    assert_eq!(out, format!("task {id}: deleted\n"));
    assert_eq!(
        get_json(&format!("{base}/monitor/export/{id}")).await.0,
        404
    );
    let out = tasks(url, &["delete"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("--all"), "{}", text(&out.stderr));
    assert_eq!(
        get_json(&format!("{base}/monitor/export/{second}")).await.0,
        200
    );
    let out = ok(&tasks(url, &["delete", "--all"]));
    assert_eq!(out, "deleted 1 task\n");
    assert_eq!(
        get_json(&format!("{base}/monitor/export")).await.1,
        serde_json::json!([])
    );
    let out = tasks(url, &["delete", &id, "--status", "SCHEDULED"]);
    assert!(
        text(&out.stderr).contains("not both"),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test]
async fn tasks_needs_the_token_and_never_prints_it() {
    const TOKEN: &str = "t0ken-Very-S3cret";
    let tmp = tempfile::tempdir().unwrap();
    let f = fixture(
        tmp.path(),
        "",
        0,
        false,
        &[("STOW_EXPORTER_API_TOKEN", TOKEN)],
    )
    .await;
    let url = &f.url;
    let no_leak = |out: &std::process::Output| {
        assert!(!text(&out.stdout).contains(TOKEN) && !text(&out.stderr).contains(TOKEN));
    };

    let out = tasks(url, &["list"]);
    no_leak(&out);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("401 Unauthorized: a valid bearer token is required")
            && err.contains("--api-token-file FILE or set STOW_EXPORTER_API_TOKEN"),
        "{err}"
    );

    let file = tmp.path().join("token");
    std::fs::write(&file, format!("{TOKEN}\n")).unwrap();
    let out = tasks(
        url,
        &["list", "--json", "--api-token-file", file.to_str().unwrap()],
    );
    no_leak(&out);
    assert_eq!(ok(&out).trim(), "[]");
    // The same variable as `serve`, and the URL from the environment.
    let out = bin()
        .args(["tasks", "list"])
        .env("STOW_EXPORTER_API_TOKEN", TOKEN)
        .env("STOW_EXPORTER_URL", url)
        .output()
        .unwrap();
    no_leak(&out);
    assert_eq!(ok(&out), "no tasks match\n");

    let wrong = tmp.path().join("wrong");
    std::fs::write(&wrong, "not-the-token").unwrap();
    let out = tasks(url, &["list", "--api-token-file", wrong.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("was refused"),
        "{}",
        text(&out.stderr)
    );
    assert!(!text(&out.stderr).contains("not-the-token"));

    // Nobody listening.
    let dead = format!("http://127.0.0.1:{}", free_port());
    let out = tasks(&dead, &["list"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!(
            "cannot reach the control API at {dead}/dcm4chee-arc: "
        )) && err.contains("Connection refused")
            && err.contains("--url"),
        "{err}"
    );
}

#[tokio::test]
async fn export_wait_exits_with_the_outcome() {
    let tmp = tempfile::tempdir().unwrap();
    let f = fixture(tmp.path(), "", 5, true, &[]).await;
    let (cfg, data, study_uid, files) = (&f.cfg, &f.data, &f.study_uid, &f.files);
    let out = bin()
        .args(["export", "--config"])
        .arg(cfg)
        .arg("--data")
        .arg(data)
        .args(["--exporter", "STOWRSD", "--study", study_uid, "--wait"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let t: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(t["status"], "COMPLETED", "{t}");
    assert_eq!(t["completed"], 5);
    assert_eq!(t["NumberOfInstances"], 5);
    // Not a terminal: no bar.
    assert!(
        !text(&out.stderr).contains("instances"),
        "{}",
        text(&out.stderr)
    );
    let (_, rest) = get_json(&format!(
        "{}/monitor/export/{}",
        f.base,
        t["taskID"].as_str().unwrap()
    ))
    .await;
    assert_eq!(rest, t);
    for file in files {
        let got = f.received.join(format!("{}.dcm", sop_uid(file)));
        assert_eq!(std::fs::read(file).unwrap(), std::fs::read(&got).unwrap());
    }
}

#[tokio::test]
async fn export_wait_fails_with_the_destination_and_times_out() {
    let tmp = tempfile::tempdir().unwrap();
    // Nobody listens at the destination, and the Export queue (STOWRSD's)
    // does not retry: the task fails at its first run.
    let no_retries = format!(
        "dn: {EXPORT_QUEUE_DN}\nchangetype: modify\nreplace: dcmMaxRetries\ndcmMaxRetries: 0\n-\n\n"
    );
    let f = fixture(
        tmp.path(),
        &(no_retries + &closed_window(STOW_EXPORTER_DN)),
        2,
        false,
        &[],
    )
    .await;
    let (cfg, data, study_uid) = (&f.cfg, &f.data, &f.study_uid);
    let export = |exporter: &str, extra: &[&str]| {
        bin()
            .args(["export", "--config"])
            .arg(cfg)
            .arg("--data")
            .arg(data)
            .args(["--exporter", exporter, "--study", study_uid, "--wait"])
            .args(extra)
            .output()
            .unwrap()
    };

    let out = export("STOWRSD", &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let t: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(t["status"], "FAILED", "{t}");
    assert_eq!(t["failed"], 2, "{t}");

    // StowExporter's window is closed: the wait gives up, the task stays.
    let started = Instant::now();
    let out = export("StowExporter", &["--timeout", "1"]);
    assert!(started.elapsed() < Duration::from_secs(15));
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let t: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = t["taskID"].as_str().unwrap();
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!(
            "gave up waiting for task {id} after 1s: it is SCHEDULED and stays queued"
        )),
        "{err}"
    );
    let (_, rest) = get_json(&format!("{}/monitor/export/{id}", f.base)).await;
    assert_eq!(rest["status"], "SCHEDULED");

    // --timeout only means something with --wait.
    let out = bin()
        .args([
            "export",
            "--exporter",
            "STOWRSD",
            "--study",
            "1.2.3",
            "--timeout",
            "1",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("--wait"),
        "{}",
        text(&out.stderr)
    );
}

/// `serve --database` with an unreachable database fails naming it,
/// masked (nothing listens on the URL's port here); `import --database`
/// too; the password never shows.
#[tokio::test]
async fn an_unreachable_database_is_named_and_its_password_stays_hidden() {
    let tmp = tempfile::tempdir().unwrap();
    let url = "postgres://stow:hunter2@127.0.0.1:1/db?connect_timeout=5";
    let data = tmp.path().join("data");
    let mut cmd = bin();
    cmd.env("STOW_EXPORTER_DICOM_LISTEN", "none")
        .args(["serve", "--config"])
        .arg(shipped_ldif())
        .arg("--data")
        .arg(&data)
        .args(["--listen", "127.0.0.1:0", "--database", url])
        .env_remove("STOW_EXPORTER_QUEUE");
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("postgres://stow:"), "{stderr}");
    assert!(!stderr.contains("hunter2"), "{stderr}");

    let (_, files) = study(&tmp.path().join("src"), 1, 16);
    let mut cmd = bin();
    cmd.arg("import")
        .arg("--data")
        .arg(&data)
        .args(["--database", url])
        .args(&files);
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("archive index postgres://stow:"),
        "{stderr}"
    );
    assert!(!stderr.contains("hunter2"), "{stderr}");
    assert!(!data.join("archive.sqlite").exists());
}
