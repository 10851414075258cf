//! Shared test fixtures: a configuration folder derived from the shipped
//! `ldif/`, the real stowrsd receiver on a loopback port (with an observing
//! layer that records request heads and in-flight counts), the real
//! Application on port 0, and synthetic studies.
#![allow(dead_code)]

pub mod amqp;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::Request;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use stow_exporter::app::{Application, Settings};
use stow_exporter::config::{ConfigSource, DEFAULT_DEVICE_NAME};
use stow_exporter::stowrsd::{self, StowrsdOptions};
use tokio::sync::oneshot;

pub const AET: &str = "DCM4CHEE1";

/// The shipped configuration folder.
pub fn shipped_ldif() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("ldif")
}

/// Copies the shipped `ldif/` into `dir`, pointing both HTTP connections
/// (web apps DCM4CHEE and stowrsd) at `port`; `extra` is appended as a last
/// file (`99-test.ldif`), e.g. `changetype: modify` records.
pub fn write_config(dir: &Path, port: u16, extra: &str) -> PathBuf {
    let cfg = dir.join("ldif");
    std::fs::create_dir_all(&cfg).unwrap();
    for e in std::fs::read_dir(shipped_ldif()).unwrap() {
        let p = e.unwrap().path();
        let text = std::fs::read_to_string(&p).unwrap();
        let text = text.replace("dicomPort: 18080", &format!("dicomPort: {port}"));
        std::fs::write(cfg.join(p.file_name().unwrap()), text).unwrap();
    }
    if !extra.is_empty() {
        std::fs::write(cfg.join("99-test.ldif"), extra).unwrap();
    }
    cfg
}

pub const STOWRSD_WEBAPP_DN: &str = "dcmWebAppName=stowrsd,dicomDeviceName=stowrsd,cn=Devices,cn=DICOM Configuration,dc=dcm4che,dc=org";
pub const DCM4CHEE_WEBAPP_DN: &str = "dcmWebAppName=DCM4CHEE,dicomDeviceName=dcm4chee-arc,cn=Devices,cn=DICOM Configuration,dc=dcm4che,dc=org";

/// An LDIF modify record adding `dcmProperty` values to the web app `dn`.
pub fn add_props(dn: &str, props: &[&str]) -> String {
    let mut s = format!("dn: {dn}\nchangetype: modify\nadd: dcmProperty\n");
    for p in props {
        s.push_str(&format!("dcmProperty: {p}\n"));
    }
    s.push_str("-\n\n");
    s
}

/// What the observing layer saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub path: String,
    pub content_length: Option<String>,
    pub transfer_encoding: Option<String>,
    pub authorization: Option<String>,
    pub content_type: Option<String>,
    pub accept: Option<String>,
    /// The Content-Type of each part of the multipart body.
    pub part_content_types: Vec<String>,
}

/// The Content-Type header of each part of a multipart body.
fn part_content_types(content_type: Option<&str>, body: &[u8]) -> Vec<String> {
    let Some(boundary) = content_type.and_then(|c| c.split("boundary=").nth(1)) else {
        return Vec::new();
    };
    let head = format!("--{}\r\nContent-Type: ", boundary.trim_matches('"'));
    memchr::memmem::find_iter(body, head.as_bytes())
        .filter_map(|at| {
            let rest = &body[at + head.len()..];
            let end = memchr::memmem::find(rest, b"\r\n")?;
            Some(String::from_utf8_lossy(&rest[..end]).into_owned())
        })
        .collect()
}

/// The real stowrsd on a loopback port.
pub struct Receiver {
    pub addr: SocketAddr,
    pub dir: PathBuf,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    pub max_in_flight: Arc<AtomicUsize>,
    /// Open (true) lets requests through; see [`Receiver::start_held`].
    gate: Arc<tokio::sync::watch::Sender<bool>>,
    _server: ServerGuard,
}

/// Stops a server started by [`serve_until_dropped`] when dropped.
pub struct ServerGuard(Option<oneshot::Sender<()>>);

impl Drop for ServerGuard {
    fn drop(&mut self) {
        if let Some(s) = self.0.take() {
            let _ = s.send(());
        }
    }
}

/// Serves `app` on `listener` (plain TCP or TLS) in the background until
/// the returned guard is dropped.
pub fn serve_until_dropped<L>(listener: L, app: axum::Router) -> ServerGuard
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    let (tx, rx) = oneshot::channel::<()>();
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = rx.await;
            })
            .await
            .unwrap();
    });
    ServerGuard(Some(tx))
}

/// The `*.dcm` files in `dir`, sorted: what a stowrsd stored there.
pub fn stored_in(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "dcm"))
        .collect();
    v.sort();
    v
}

impl Receiver {
    /// Starts stowrsd storing into `dir`; each request is held `delay`
    /// before it reaches the receiver, so that concurrency is observable.
    pub async fn start(dir: &Path, delay: Duration) -> Receiver {
        Receiver::start_gated(dir, delay, true).await
    }

    /// Starts stowrsd holding every request (after its body was read)
    /// until [`Receiver::release`]: a task stays IN PROCESS for as long as
    /// a test needs, however slow the machine.
    pub async fn start_held(dir: &Path) -> Receiver {
        Receiver::start_gated(dir, Duration::ZERO, false).await
    }

    /// Lets held requests (and all later ones) through.
    pub fn release(&self) {
        self.gate.send_replace(true);
    }

    async fn start_gated(dir: &Path, delay: Duration, open: bool) -> Receiver {
        std::fs::create_dir_all(dir).unwrap();
        let gate = Arc::new(tokio::sync::watch::Sender::new(open));
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let in_flight = Arc::new(AtomicUsize::new(0));
        let max_in_flight = Arc::new(AtomicUsize::new(0));
        let (s, i, m, g) = (
            seen.clone(),
            in_flight.clone(),
            max_in_flight.clone(),
            gate.clone(),
        );
        let observe = move |req: Request<Body>, next: Next| {
            let (s, i, m, g) = (s.clone(), i.clone(), m.clone(), g.clone());
            async move {
                // The body is read here to see the parts' headers, then
                // handed on to the receiver unchanged.
                let (head, body) = req.into_parts();
                let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
                let seen = {
                    let h = |n: &str| {
                        head.headers
                            .get(n)
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_string)
                    };
                    Seen {
                        path: head.uri.path().to_string(),
                        content_length: h("content-length"),
                        transfer_encoding: h("transfer-encoding"),
                        authorization: h("authorization"),
                        content_type: h("content-type"),
                        accept: h("accept"),
                        part_content_types: part_content_types(h("content-type").as_deref(), &body),
                    }
                };
                let req = Request::from_parts(head, Body::from(body));
                s.lock().unwrap().push(seen);
                let now = i.fetch_add(1, Ordering::SeqCst) + 1;
                m.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(delay).await;
                let _ = g.subscribe().wait_for(|open| *open).await;
                let r: Response = next.run(req).await;
                i.fetch_sub(1, Ordering::SeqCst);
                r
            }
        };
        let app = stowrsd::router(StowrsdOptions {
            store_dir: Some(dir.to_path_buf()),
            ..Default::default()
        })
        .layer(middleware::from_fn(observe));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        Receiver {
            addr,
            dir: dir.to_path_buf(),
            seen,
            max_in_flight,
            gate,
            _server: serve_until_dropped(listener, app),
        }
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Files stored so far, by name.
    pub fn stored(&self) -> Vec<PathBuf> {
        stored_in(&self.dir)
    }
}

/// A running Application on port 0.
pub struct Service {
    pub addr: SocketAddr,
    pub data: PathBuf,
    pub http: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    handle: Option<tokio::task::JoinHandle<()>>,
}

impl Service {
    pub async fn start(config: &Path, data: &Path) -> Service {
        Service::start_with(ConfigSource::Ldif(config.to_path_buf()), data).await
    }

    pub async fn start_with(config: ConfigSource, data: &Path) -> Service {
        Service::start_with_settings(Service::settings(config, data)).await
    }

    /// The settings `start_with` uses, to be adjusted by a test.
    pub fn settings(config: ConfigSource, data: &Path) -> Settings {
        Settings {
            config,
            device_name: DEFAULT_DEVICE_NAME.into(),
            data_dir: data.to_path_buf(),
            listen: "127.0.0.1:0".parse().unwrap(),
            stowrsd_dir: None,
            stowrsd_bind: None,
            stowrsd_options: Default::default(),
            startup_retries: 0,
            watch: None,
            zone: Default::default(),
            queue_url: None,
            transcode_jobs: None,
            transcode_limits: Default::default(),
            tls: Default::default(),
            queue_options: Default::default(),
            database: None,
            // Each in-process service gets its own free port for the
            // Storage SCP, never the configured 11112.
            dicom_listen: Some(vec!["127.0.0.1:0".into()]),
            scp_options: Default::default(),
        }
    }

    pub async fn start_with_settings(settings: Settings) -> Service {
        let data = settings.data_dir.clone();
        let app = Application::build(settings)
            .await
            .expect("application builds");
        Service::start_app(app, &data)
    }

    /// Runs an Application the test built and adjusted (`with_*`).
    pub fn start_app(app: Application, data: &Path) -> Service {
        let addr = app.local_addr();
        let (tx, rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(async move {
            app.run_until_stopped(async move {
                let _ = rx.await;
            })
            .await
            .unwrap();
        });
        Service {
            addr,
            data: data.to_path_buf(),
            http: reqwest::Client::new(),
            stop: Some(tx),
            handle: Some(handle),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}/dcm4chee-arc{path}", self.addr)
    }

    /// Triggers a study export through the REST API; returns the task JSON.
    pub async fn export_study(&self, exporter: &str, study: &str) -> Value {
        let r = self
            .http
            .post(self.url(&format!("/aets/{AET}/rs/studies/{study}/export/{exporter}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202, "export trigger answered {}", r.status());
        r.json().await.unwrap()
    }

    /// `GET /monitor/export?{query}`.
    pub async fn list(&self, query: &str) -> Vec<Value> {
        self.get_json(&format!("/monitor/export?{query}")).await
    }

    pub async fn task(&self, id: &str) -> Value {
        self.get_json(&format!("/monitor/export/{id}")).await
    }

    pub async fn instances(&self, id: &str) -> Vec<Value> {
        self.get_json(&format!("/monitor/export/{id}/instances"))
            .await
    }

    /// `GET` of a path under `/dcm4chee-arc`, as JSON.
    pub async fn get_json<T: serde::de::DeserializeOwned>(&self, path: &str) -> T {
        let r = self.http.get(self.url(path)).send().await.unwrap();
        r.json()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: not the expected JSON: {e}"))
    }

    /// A request without a body to a path under `/dcm4chee-arc`; its status.
    pub async fn call(&self, method: reqwest::Method, path: &str) -> u16 {
        let r = self
            .http
            .request(method, self.url(path))
            .send()
            .await
            .unwrap();
        r.status().as_u16()
    }

    /// Waits until the task reaches a final status and returns it.
    pub async fn wait_done(&self, id: &str) -> Value {
        wait_done(&self.http, &self.url(""), id, Duration::from_secs(60)).await
    }

    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(h) = self.handle.take() {
            h.await.unwrap();
        }
    }
}

/// Calls `probe` every 50 ms until it gives `Ok`; after `limit` the test
/// fails with the last `Err`, which says what was still missing.
pub async fn eventually<T, F, Fut>(limit: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let start = Instant::now();
    loop {
        match probe().await {
            Ok(v) => return v,
            Err(why) => assert!(start.elapsed() < limit, "after {limit:?}: {why}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether a task JSON has a final status.
pub fn ended(t: &Value) -> bool {
    matches!(
        t["status"].as_str(),
        Some("COMPLETED" | "WARNING" | "FAILED" | "CANCELED")
    )
}

/// Polls `GET {base}/monitor/export/{id}` until the status is final.
pub async fn wait_done(http: &reqwest::Client, base: &str, id: &str, limit: Duration) -> Value {
    eventually(limit, || async {
        let t = match http.get(format!("{base}/monitor/export/{id}")).send().await {
            Ok(r) => r.json::<Value>().await.map_err(|e| e.to_string())?,
            Err(e) => return Err(format!("task {id}: {e}")),
        };
        if ended(&t) {
            Ok(t)
        } else {
            Err(format!("task {id} not done: {t}"))
        }
    })
    .await
}

/// Waits until a `serve` on `port` answers its status endpoint.
pub async fn wait_up(port: u16, limit: Duration) {
    let start = Instant::now();
    while reqwest::get(format!("http://127.0.0.1:{port}/dcm4chee-arc/ctrl/status"))
        .await
        .is_err()
    {
        assert!(start.elapsed() < limit, "serve did not come up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Imports `files` into the archive at `data`; every one must import.
pub async fn import(data: &Path, files: &[PathBuf]) {
    let a = stow_exporter::archive::Archive::open(data).await.unwrap();
    let report =
        stow_exporter::archive::import_paths(&a, files, &stow_exporter::archive::NoProgress).await;
    assert!(
        report.failed.is_empty(),
        "import failed: {:?}",
        report.failed
    );
}

/// Writes a synthetic study of `count` instances into `dir`.
pub fn study(dir: &Path, count: usize, rows: u16) -> (String, Vec<PathBuf>) {
    stow_exporter::synth::write_study(dir, count, rows, rows).unwrap()
}

/// The SOP Instance UID in a Part-10 file's meta (for comparisons).
pub fn sop_uid(path: &Path) -> String {
    let obj = dicom_object::OpenFileOptions::new()
        .read_until(dicom_dictionary_std::tags::PIXEL_DATA)
        .open_file(path)
        .unwrap();
    obj.meta()
        .media_storage_sop_instance_uid()
        .trim_end_matches('\0')
        .to_string()
}

/// Asserts that every file in `sources` arrived at the receiver byte for byte.
pub fn assert_arrived(receiver: &Receiver, sources: &[PathBuf]) {
    for src in sources {
        let uid = sop_uid(src);
        let got = receiver.dir.join(format!("{uid}.dcm"));
        let a = std::fs::read(src).unwrap();
        let b =
            std::fs::read(&got).unwrap_or_else(|e| panic!("{} not received: {e}", got.display()));
        assert!(a == b, "{} differs from what was sent", got.display());
    }
}

/// The directory of the DICOM files the pydicom wheel ships (installed by
/// the test setup), from STOW_TEST_PYDICOM_FILES or python3.
pub fn pydicom_files() -> PathBuf {
    if let Ok(p) = std::env::var("STOW_TEST_PYDICOM_FILES") {
        return PathBuf::from(p);
    }
    let out = std::process::Command::new("python3")
        .args(["-c", "import pydicom, os; print(os.path.join(os.path.dirname(pydicom.__file__), 'data', 'test_files'))"])
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "pydicom is not installed: run scripts/test.sh, which installs the test dependencies ({})",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// The real stowrsd behind a layer that answers 503 to the first
/// `failures` requests (for every instance, or only those whose body
/// contains `only`), and records when each request came.
pub async fn flaky(
    dir: &std::path::Path,
    failures: usize,
    only: Option<String>,
) -> (u16, Arc<Mutex<Vec<Instant>>>) {
    let times: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let failed = Arc::new(Mutex::new(0usize));
    let t = times.clone();
    let layer = move |req: Request<Body>, next: Next| {
        let (t, failed, only) = (t.clone(), failed.clone(), only.clone());
        async move {
            t.lock().unwrap().push(Instant::now());
            let (parts, body) = req.into_parts();
            let bytes = axum::body::to_bytes(body, 64 << 20).await.unwrap();
            let targeted = only
                .as_ref()
                .is_none_or(|uid| bytes.windows(uid.len()).any(|w| w == uid.as_bytes()));
            let fail = targeted && {
                let mut f = failed.lock().unwrap();
                *f += 1;
                *f <= failures
            };
            if fail {
                return (axum::http::StatusCode::SERVICE_UNAVAILABLE, "busy").into_response();
            }
            let r: Response = next
                .run(Request::from_parts(parts, Body::from(bytes)))
                .await;
            r
        }
    };
    let app = stowrsd::router(StowrsdOptions {
        store_dir: Some(dir.to_path_buf()),
        ..Default::default()
    })
    .layer(middleware::from_fn(layer));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    (port, times)
}

/// A child process (a `serve`, say) killed (SIGKILL) and reaped by its PID
/// when dropped, also when a test fails half-way.
pub struct KillOnDrop(pub std::process::Child);

impl KillOnDrop {
    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        self.kill();
    }
}

/// An hour of the day (local time) that is certainly not now: a
/// `dcmSchedule: hour=<it>` window is closed for the whole test.
pub fn closed_hour() -> u32 {
    use chrono::Timelike;
    (chrono::Local::now().hour() + 12) % 24
}

/// LDIF closing the `dcmSchedule` window of the entry `dn` (an exporter or
/// a queue) for the whole test: its tasks stay SCHEDULED.
pub fn closed_window(dn: &str) -> String {
    format!(
        "dn: {dn}\nchangetype: modify\nadd: dcmSchedule\ndcmSchedule: hour={} dayOfWeek=*\n-\n\n",
        closed_hour()
    )
}

/// Every file under `dir`, recursively.
pub fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// A loopback port free right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
