//! Secrets never leave: after exports with a bearer token, basic auth and
//! an OAuth2 client, none of the secret values (nor their encodings, nor
//! the access tokens issued) appears in the logs at trace level, in any
//! file of the data directory (task records, queue, index), in the REST
//! API's answers, or in `check-config`'s output.

mod common;

#[path = "common/token_server.rs"]
pub mod token_server;

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use common::*;
use stow_exporter::stowrsd::{self, StowrsdOptions};
use token_server::{TokenServer, ValidTokens};

const BEARER: &str = "B3arer-t0ken-7f3a";
const BASIC_PASSWORD: &str = "B4sic-passw0rd-91c2";
const CLIENT_SECRET: &str = "K3ycl0ak-s3cret-5d8e";
const KC_DN: &str = "dcmKeycloakClientID=stow-exporter,dicomDeviceName=stowrsd,cn=Devices,cn=DICOM Configuration,dc=dcm4che,dc=org";

/// stowrsd, with the `stowrsd` web app's path behind the token server's
/// tokens (the `DCM4CHEE` path takes anything).
async fn receiver(dir: &Path, valid: Arc<ValidTokens>) -> u16 {
    let guard = move |req: axum::extract::Request, next: axum::middleware::Next| {
        let valid = valid.clone();
        async move {
            let token_ok = req
                .headers()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .is_some_and(|t| valid.is_valid(t));
            if req.uri().path().starts_with("/stowrs") && !token_ok {
                use axum::response::IntoResponse;
                return axum::http::StatusCode::UNAUTHORIZED.into_response();
            }
            next.run(req).await
        }
    };
    let app = stowrsd::router(StowrsdOptions {
        store_dir: Some(dir.to_path_buf()),
        ..Default::default()
    })
    .layer(axum::middleware::from_fn(guard));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    port
}

/// Stops the service by its PID if the test ends early.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Every file under `dir`, as bytes.
fn files_under(dir: &Path) -> Vec<(String, Vec<u8>)> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .map(|e| {
            (
                e.path().display().to_string(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn no_secret_in_logs_records_api_or_check_config() {
    let tmp = tempfile::tempdir().unwrap();
    let server = TokenServer::start("stow-exporter", CLIENT_SECRET, 60).await;
    let valid = server.tokens();
    let port = receiver(&tmp.path().join("received"), valid.clone()).await;
    let extra = format!(
        "{}dn: {KC_DN}\nobjectClass: dcmKeycloakClient\ndcmKeycloakClientID: stow-exporter\n\
         dcmURI: {}\ndcmKeycloakRealm: test\ndcmKeycloakClientSecret: {CLIENT_SECRET}\n\n\
         dn: {STOWRSD_WEBAPP_DN}\nchangetype: modify\nadd: dcmKeycloakClientID\ndcmKeycloakClientID: stow-exporter\n-\n",
        add_props(
            DCM4CHEE_WEBAPP_DN,
            &[
                &format!("bearer-token={BEARER}"),
                &format!("basic-auth=exporter:{BASIC_PASSWORD}"),
            ],
        ),
        server.base_url()
    );
    let cfg = write_config(tmp.path(), port, &extra);
    let data = tmp.path().join("data");
    let (study_uid, files) = study(&tmp.path().join("src"), 3, 32);
    import(&data, &files).await;

    let log = tmp.path().join("serve.log");
    let api = free_port();
    let mut child = Running(
        Command::new(env!("CARGO_BIN_EXE_stow-exporter"))
            .env("STOW_EXPORTER_DICOM_LISTEN", "none")
            .args(["serve", "--config"])
            .arg(&cfg)
            .arg("--data")
            .arg(&data)
            .args(["--listen", &format!("127.0.0.1:{api}")])
            .env("RUST_LOG", "trace")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    wait_up(api, Duration::from_secs(20)).await;
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{api}/dcm4chee-arc");
    let mut answers = String::new();
    let mut ids = Vec::new();
    for exporter in ["StowExporter", "STOWRSD"] {
        let r = http
            .post(format!(
                "{base}/aets/{AET}/rs/studies/{study_uid}/export/{exporter}"
            ))
            .send()
            .await
            .unwrap();
        let t: serde_json::Value = r.json().await.unwrap();
        let id = t["taskID"].as_str().unwrap().to_string();
        let done = wait_done(&http, &base, &id, Duration::from_secs(30)).await;
        assert_eq!(done["status"], "COMPLETED", "{exporter}: {done}");
        ids.push(id);
    }
    // STOWRSD completed behind the guard: it used the client's tokens.
    assert!(server.issued() >= 1);
    let mut paths = vec![
        "/monitor/export".to_string(),
        "/export".into(),
        "/queue".into(),
        "/ctrl/status".into(),
    ];
    for id in &ids {
        paths.push(format!("/monitor/export/{id}"));
        paths.push(format!("/monitor/export/{id}/instances"));
    }
    for p in paths {
        let r = http.get(format!("{base}{p}")).send().await.unwrap();
        assert!(r.status().is_success(), "{p}: {}", r.status());
        answers.push_str(&r.text().await.unwrap());
    }
    let reload = http
        .post(format!("{base}/ctrl/reload"))
        .send()
        .await
        .unwrap();
    answers.push_str(&reload.text().await.unwrap());
    Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap();
    child.0.wait().unwrap();
    let check = Command::new(env!("CARGO_BIN_EXE_stow-exporter"))
        .args(["check-config", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(check.status.success());

    let b64 = base64::engine::general_purpose::STANDARD;
    let mut secrets = vec![
        BEARER.to_string(),
        BASIC_PASSWORD.to_string(),
        b64.encode(format!("exporter:{BASIC_PASSWORD}")),
        CLIENT_SECRET.to_string(),
    ];
    let tokens = valid.all();
    assert!(!tokens.is_empty());
    secrets.extend(tokens);

    let log_text = std::fs::read_to_string(&log).unwrap();
    assert!(log_text.contains("export started"), "the log was written");
    let mut places: Vec<(String, Vec<u8>)> = vec![
        ("serve log".into(), log_text.into_bytes()),
        ("REST answers".into(), answers.into_bytes()),
        ("check-config".into(), [check.stdout, check.stderr].concat()),
    ];
    places.extend(
        files_under(&data)
            .into_iter()
            .filter(|(p, _)| !p.ends_with(".dcm")),
    );
    for (place, bytes) in &places {
        for s in &secrets {
            assert!(
                !bytes.windows(s.len()).any(|w| w == s.as_bytes()),
                "{place} holds a secret"
            );
        }
    }
}
