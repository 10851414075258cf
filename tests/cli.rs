//! The real binary: `import`, `export`, `serve`, `check-config`, and a
//! `serve` killed with SIGKILL in the middle of an export.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_stow-exporter"))
}

fn serve(cfg: &Path, data: &Path, port: u16) -> Child {
    bin()
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
