//! A private Orthanc (Debian packages orthanc + orthanc-dicomweb) on a
//! loopback port with its own storage, started by `scripts/orthanc.sh` and
//! stopped by its PID when dropped, plus helpers for its REST API.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/orthanc.sh")
}

/// A free loopback port (free when asked; the start retries on a clash).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One running Orthanc.
pub struct Orthanc {
    pub port: u16,
    pub auth: Option<(String, String)>,
    pub http: reqwest::Client,
    /// From running `scripts/orthanc.sh start` to `/system` answering.
    pub started_in: Duration,
    // Dropped last, after `drop` has stopped the process that uses it.
    dir: tempfile::TempDir,
}

/// What `start_with` may change.
#[derive(Default, Clone)]
pub struct Options<'a> {
    /// HTTP basic authentication with this one user.
    pub auth: Option<(&'a str, &'a str)>,
    /// Base URL of the DICOMweb server `stowrsd` in Orthanc's configuration.
    pub stow_target: Option<String>,
    /// `ChunkedTransfers` of that server (Orthanc's default: true).
    pub stow_chunked: Option<bool>,
}

impl Orthanc {
    /// Starts Orthanc, with basic authentication when `auth` is given and a
    /// DICOMweb server `stowrsd` at `stow_target` when given.
    pub fn start(auth: Option<(&str, &str)>, stow_target: Option<String>) -> Orthanc {
        Orthanc::start_with(Options {
            auth,
            stow_target,
            stow_chunked: None,
        })
    }

    pub fn start_with(opts: Options<'_>) -> Orthanc {
        let dir = tempfile::Builder::new()
            .prefix("orthanc")
            .tempdir()
            .unwrap();
        let mut last_error = String::new();
        // Another test may take the free port before Orthanc binds it.
        for _ in 0..3 {
            let port = free_port();
            let mut cmd = Command::new(script());
            cmd.arg("start").arg(dir.path()).arg(port.to_string());
            if let Some((u, p)) = opts.auth {
                cmd.arg(format!("{u}:{p}"));
            }
            cmd.env_remove("ORTHANC_STOW_TARGET")
                .env_remove("ORTHANC_STOW_CHUNKED");
            if let Some(t) = &opts.stow_target {
                cmd.env("ORTHANC_STOW_TARGET", t);
            }
            if let Some(c) = opts.stow_chunked {
                cmd.env("ORTHANC_STOW_CHUNKED", c.to_string());
            }
            let t0 = Instant::now();
            let out = cmd.output().expect("scripts/orthanc.sh runs");
            let started_in = t0.elapsed();
            if out.status.success() {
                return Orthanc {
                    port,
                    auth: opts.auth.map(|(u, p)| (u.to_string(), p.to_string())),
                    http: reqwest::Client::new(),
                    started_in,
                    dir,
                };
            }
            last_error = String::from_utf8_lossy(&out.stderr).into_owned();
        }
        panic!(
            "Orthanc did not start (scripts/orthanc.sh install installs it; scripts/test.sh does): {last_error}"
        );
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Orthanc's log so far (for assertion messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("orthanc.log")).unwrap_or_default()
    }

    /// The error lines of the log (`E...`).
    pub fn log_errors(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| l.starts_with('E'))
            .map(str::to_string)
            .collect()
    }

    fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let r = self.http.request(method, format!("{}{path}", self.base()));
        match &self.auth {
            Some((u, p)) => r.basic_auth(u, Some(p)),
            None => r,
        }
    }

    /// GET `path` as JSON; panics on a non-2xx answer.
    pub async fn get_json(&self, path: &str) -> Value {
        let r = self.req(reqwest::Method::GET, path).send().await.unwrap();
        let status = r.status();
        let text = r.text().await.unwrap();
        assert!(status.is_success(), "GET {path}: {status} {text}");
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("GET {path}: {e}: {text}"))
    }

    /// `GET /instances`: the Orthanc IDs of every stored instance.
    pub async fn instances(&self) -> Vec<String> {
        serde_json::from_value(self.get_json("/instances").await).unwrap()
    }

    /// `GET /instances/{id}/file`: the stored file, byte for byte.
    pub async fn file(&self, id: &str) -> Vec<u8> {
        let r = self
            .req(reqwest::Method::GET, &format!("/instances/{id}/file"))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "file of {id}: {}", r.status());
        r.bytes().await.unwrap().to_vec()
    }

    /// `GET /instances/{id}/simplified-tags`.
    pub async fn tags(&self, id: &str) -> Value {
        self.get_json(&format!("/instances/{id}/simplified-tags"))
            .await
    }

    /// The stored file's transfer syntax (`/instances/{id}/metadata/TransferSyntax`).
    pub async fn transfer_syntax(&self, id: &str) -> String {
        let r = self
            .req(
                reqwest::Method::GET,
                &format!("/instances/{id}/metadata/TransferSyntax"),
            )
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "metadata of {id}: {}", r.status());
        r.text().await.unwrap().trim().to_string()
    }

    /// `GET /statistics`.
    pub async fn statistics(&self) -> Value {
        self.get_json("/statistics").await
    }

    /// `CountInstances` of `/statistics`.
    pub async fn count_instances(&self) -> u64 {
        self.statistics().await["CountInstances"].as_u64().unwrap()
    }

    /// The Orthanc ID of the instance with this SOP Instance UID (`POST /tools/lookup`).
    pub async fn lookup_instance(&self, sop_uid: &str) -> Option<String> {
        let r = self
            .req(reqwest::Method::POST, "/tools/lookup")
            .body(sop_uid.to_string())
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "lookup {sop_uid}: {}", r.status());
        let found: Vec<Value> = r.json().await.unwrap();
        found
            .iter()
            .find(|f| f["Type"] == "Instance")
            .and_then(|f| f["ID"].as_str())
            .map(str::to_string)
    }

    /// Every stored instance: SOP Instance UID -> Orthanc ID.
    pub async fn sop_uids(&self) -> BTreeMap<String, String> {
        let all = self.get_json("/instances?expand").await;
        all.as_array()
            .unwrap()
            .iter()
            .map(|i| {
                (
                    i["MainDicomTags"]["SOPInstanceUID"]
                        .as_str()
                        .unwrap()
                        .to_string(),
                    i["ID"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }

    /// `POST /instances` with a Part-10 file; returns Orthanc's ID.
    pub async fn upload(&self, bytes: Vec<u8>) -> String {
        let r = self
            .req(reqwest::Method::POST, "/instances")
            .header("content-type", "application/dicom")
            .body(bytes)
            .send()
            .await
            .unwrap();
        let status = r.status();
        let v: Value = r.json().await.unwrap();
        assert!(status.is_success(), "upload: {status} {v}");
        v["ID"].as_str().unwrap().to_string()
    }

    /// `POST /dicom-web/servers/{server}/stow` (synchronous): status and body.
    pub async fn stow_to(&self, server: &str, resources: &[String]) -> (u16, String) {
        let r = self
            .req(
                reqwest::Method::POST,
                &format!("/dicom-web/servers/{server}/stow"),
            )
            .json(&json!({ "Resources": resources, "Synchronous": true }))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    /// Stops Orthanc now and says how long that took.
    pub fn stop(&self) -> Duration {
        let t0 = Instant::now();
        let out = Command::new(script())
            .arg("stop")
            .arg(self.dir.path())
            .output()
            .expect("scripts/orthanc.sh runs");
        if !out.status.success() {
            eprintln!(
                "scripts/orthanc.sh stop {}: {}",
                self.dir.path().display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        t0.elapsed()
    }
}

impl Drop for Orthanc {
    fn drop(&mut self) {
        // Stops by the PID in DIR/orthanc.pid; nothing when already stopped.
        self.stop();
    }
}
