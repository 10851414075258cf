//! The operator's web page in headless Chromium, driven over chromedriver's
//! W3C WebDriver protocol (plain HTTP with reqwest), against the real
//! service with real export tasks: task rows and statuses, per-instance
//! results, cancel and reschedule, exporters, throughput, filters, and the
//! access token. Chromium missing is a failure, not a skip: the page would
//! otherwise go untested unnoticed.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use common::*;
use serde_json::{Value, json};
use stow_exporter::app::Application;
use stow_exporter::config::{ConfigSource, Secret};

/// The W3C key of an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";
/// Longest wait for anything the page shows (it polls every 2–3 s).
const PAGE: Duration = Duration::from_secs(20);

const STOW_EXPORTER_DN: &str = "dcmExporterID=StowExporter,dicomDeviceName=dcm4chee-arc,cn=Devices,cn=DICOM Configuration,dc=dcm4che,dc=org";
const INSTALL_HINT: &str =
    "scripts/test.sh installs the Debian packages chromium and chromium-driver";

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Where a person finds the screenshots: the target directory.
fn screenshot_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap_or(Path::new(env!("CARGO_TARGET_TMPDIR")))
        .join(name)
}

/// chromedriver and one headless Chromium session. Dropping it (also when
/// an assertion fails) ends the session and kills chromedriver's process
/// group by its PID, so no browser outlives the test.
struct Browser {
    driver: Child,
    base: String,
    session: Option<String>,
    http: reqwest::Client,
    /// TMPDIR of chromedriver and Chromium: what Chromium leaves behind
    /// (profile, scoped dirs, shared memory files) goes when this drops,
    /// after the processes (fields drop after `Drop::drop`).
    _tmp: tempfile::TempDir,
}

impl Browser {
    async fn start() -> Browser {
        let chromium = on_path("chromium").unwrap_or_else(|| {
            panic!("chromium is not on PATH; the web page test needs it ({INSTALL_HINT})")
        });
        let chromedriver = on_path("chromedriver").unwrap_or_else(|| {
            panic!("chromedriver is not on PATH; the web page test needs it ({INSTALL_HINT})")
        });
        let port = free_port();
        let tmp = tempfile::tempdir().unwrap();
        let driver = {
            use std::os::unix::process::CommandExt;
            Command::new(&chromedriver)
                .arg(format!("--port={port}"))
                .env("TMPDIR", tmp.path())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                // A group of its own: Chromium's processes are its children,
                // and killing the group reaches them too.
                .process_group(0)
                .spawn()
                .unwrap_or_else(|e| panic!("{}: {e}", chromedriver.display()))
        };
        let mut b = Browser {
            driver,
            base: format!("http://127.0.0.1:{port}"),
            session: None,
            http: reqwest::Client::new(),
            _tmp: tmp,
        };
        let start = Instant::now();
        loop {
            if let Ok(r) = b.http.get(format!("{}/status", b.base)).send().await
                && let Ok(v) = r.json::<Value>().await
                && v["value"]["ready"] == true
            {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "chromedriver did not come up"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1400,900"],
            },
            "goog:loggingPrefs": {"browser": "ALL"},
        }}});
        let v = b
            .send(reqwest::Method::POST, "/session".into(), Some(caps))
            .await
            .unwrap_or_else(|e| panic!("no browser session: {e}"));
        b.session = Some(v["sessionId"].as_str().unwrap().to_string());
        b
    }

    /// A WebDriver command; `Err` carries the driver's error value.
    async fn send(
        &self,
        method: reqwest::Method,
        path: String,
        body: Option<Value>,
    ) -> Result<Value, Value> {
        let mut r = self.http.request(method, format!("{}{path}", self.base));
        if let Some(b) = body {
            r = r.json(&b);
        }
        let r = r.send().await.map_err(|e| json!(e.to_string()))?;
        let ok = r.status().is_success();
        let v: Value = r.json().await.map_err(|e| json!(e.to_string()))?;
        if ok {
            Ok(v["value"].clone())
        } else {
            Err(v["value"].clone())
        }
    }

    async fn session(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        let id = self.session.as_deref().unwrap();
        let body =
            (method != reqwest::Method::GET && method != reqwest::Method::DELETE).then_some(body);
        self.send(method, format!("/session/{id}{path}"), body)
            .await
            .unwrap_or_else(|e| panic!("WebDriver {path}: {e}"))
    }

    async fn goto(&self, url: &str) {
        self.session(reqwest::Method::POST, "/url", json!({ "url": url }))
            .await;
    }

    /// Runs `script` (a function body) in the page and returns its result.
    async fn js(&self, script: &str) -> Value {
        self.js_with(script, json!([])).await
    }

    /// [`Browser::js`] with `arguments` for the script.
    async fn js_with(&self, script: &str, args: Value) -> Value {
        self.session(
            reqwest::Method::POST,
            "/execute/sync",
            json!({"script": script, "args": args}),
        )
        .await
    }

    async fn find(&self, css: &str) -> Option<String> {
        let id = self.session.as_deref().unwrap();
        let v = self
            .send(
                reqwest::Method::POST,
                format!("/session/{id}/element"),
                Some(json!({"using": "css selector", "value": css})),
            )
            .await
            .ok()?;
        v[ELEMENT].as_str().map(str::to_string)
    }

    /// Waits for the element, then clicks it as a user would.
    async fn click(&self, css: &str) {
        let el = self.wait_element(css).await;
        self.session(
            reqwest::Method::POST,
            &format!("/element/{el}/click"),
            json!({}),
        )
        .await;
    }

    async fn type_into(&self, css: &str, text: &str) {
        let el = self.wait_element(css).await;
        self.session(
            reqwest::Method::POST,
            &format!("/element/{el}/clear"),
            json!({}),
        )
        .await;
        self.session(
            reqwest::Method::POST,
            &format!("/element/{el}/value"),
            json!({ "text": text }),
        )
        .await;
    }

    async fn wait_element(&self, css: &str) -> String {
        let start = Instant::now();
        loop {
            if let Some(e) = self.find(css).await {
                return e;
            }
            assert!(
                start.elapsed() < PAGE,
                "no {css} on the page within {PAGE:?}; it shows:\n{}",
                self.text().await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn text(&self) -> String {
        self.js("return document.body.innerText;")
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Polls `check` (a script returning a value, or null while not yet)
    /// until it answers non-null; panics naming `what` after [`PAGE`].
    async fn wait_js(&self, what: &str, check: &str) -> Value {
        let start = Instant::now();
        loop {
            let v = self.js(check).await;
            if !v.is_null() {
                return v;
            }
            assert!(
                start.elapsed() < PAGE,
                "{what}: not within {PAGE:?}; the page shows:\n{}",
                self.text().await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn screenshot(&self, path: &Path) {
        let png = self
            .session(reqwest::Method::GET, "/screenshot", Value::Null)
            .await;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().unwrap())
            .unwrap();
        std::fs::write(path, bytes).unwrap();
    }

    /// The browser's console messages so far.
    async fn console(&self) -> Vec<String> {
        self.session(reqwest::Method::POST, "/se/log", json!({"type": "browser"}))
            .await
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| format!("{} {}", e["level"], e["message"]))
            .collect()
    }

    async fn quit(mut self) {
        if let Some(id) = self.session.take() {
            let _ = self
                .send(reqwest::Method::DELETE, format!("/session/{id}"), None)
                .await;
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Synchronous (Drop may run while unwinding a panic): a bare
        // HTTP/1.1 DELETE lets chromedriver close Chromium cleanly.
        if let Some(id) = self.session.take() {
            use std::io::{Read, Write};
            let addr = self.base.trim_start_matches("http://").to_string();
            if let Ok(mut s) = std::net::TcpStream::connect(&addr) {
                let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                let _ = write!(
                    s,
                    "DELETE /session/{id} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
                let _ = s.read_to_end(&mut Vec::new());
            }
        }
        // The whole group by its ID (chromedriver's PID), then reap it.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.driver.id())])
            .status();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// A JavaScript string literal of `s`.
fn js_str(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

/// The task rows on the page: taskID → status, or null while there are
/// fewer than `n`.
fn rows_script(n: usize) -> String {
    format!(
        "const rows = Array.from(document.querySelectorAll('#tasks tbody tr.task'));
         if (rows.length < {n}) return null;
         const out = {{}};
         for (const r of rows) out[r.dataset.taskId] = r.querySelector('td.status').textContent;
         return out;"
    )
}

/// Null until the row of `id` shows `status`.
fn status_is(id: &str, status: &str) -> String {
    format!(
        "const r = document.querySelector('#tasks tr.task[data-task-id=' + CSS.escape({}) + ']');
         return r && r.querySelector('td.status').textContent === {} ? true : null;",
        js_str(id),
        js_str(status)
    )
}

/// A CSS selector of the task row `id`, and of something in it.
fn row(id: &str, inner: &str) -> String {
    format!("#tasks tr.task[data-task-id=\"{id}\"] {inner}")
}

/// Polls the REST API until task `id` has `status`.
async fn wait_rest_status(svc: &Service, id: &str, status: &str) -> Value {
    let start = Instant::now();
    loop {
        let t = svc.task(id).await;
        if t["status"] == status {
            return t;
        }
        assert!(start.elapsed() < PAGE, "task {id} never {status}: {t}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// No script errors and nothing the content security policy blocked.
async fn assert_no_script_errors(b: &Browser) {
    let console = b.console().await;
    let bad: Vec<&String> = console
        .iter()
        .filter(|m| {
            m.contains("Uncaught")
                || m.contains("Content Security Policy")
                || m.contains("TypeError")
        })
        .collect();
    assert!(bad.is_empty(), "console: {bad:#?}");
}

#[tokio::test]
async fn the_page_lists_expands_cancels_and_reschedules_tasks() {
    let tmp = tempfile::tempdir().unwrap();
    let rcv = Receiver::start(&tmp.path().join("received"), Duration::ZERO).await;
    // StowExporter's window is closed now: its task stays SCHEDULED, to be
    // canceled and rescheduled. STOWRSD runs at once.
    let cfg = write_config(
        tmp.path(),
        rcv.addr.port(),
        &closed_window(STOW_EXPORTER_DN),
    );
    // 256×256: big enough that a few instances read as more than 0 MB/s.
    let (study_uid, files) = study(&tmp.path().join("src"), 3, 256);
    let data = tmp.path().join("data");
    import(&data, &files).await;
    let svc = Service::start(&cfg, &data).await;

    let done = svc.export_study("STOWRSD", &study_uid).await;
    let done = done["taskID"].as_str().unwrap().to_string();
    assert_eq!(svc.wait_done(&done).await["status"], "COMPLETED");
    let held = svc.export_study("StowExporter", &study_uid).await;
    let held = held["taskID"].as_str().unwrap().to_string();
    assert_eq!(svc.task(&held).await["status"], "SCHEDULED");

    // What the REST API reports, to compare the page with.
    let listed: Vec<(String, String)> = svc
        .list("")
        .await
        .iter()
        .map(|t| {
            (
                t["taskID"].as_str().unwrap().to_string(),
                t["status"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(listed.len(), 2, "{listed:?}");
    let mut sops: Vec<String> = svc
        .instances(&done)
        .await
        .iter()
        .map(|i| i["SOPInstanceUID"].as_str().unwrap().to_string())
        .collect();
    sops.sort();
    assert_eq!(sops.len(), 3);
    let exporters: Vec<Value> = svc.get_json("/export").await;

    let b = Browser::start().await;
    // Without the trailing slash: the redirect must bring the page.
    b.goto(&svc.url("/ui2")).await;
    assert!(
        b.js("return location.pathname;").await == "/dcm4chee-arc/ui2/",
        "not redirected to the slash"
    );

    // The rows: the REST API's task IDs with its statuses.
    let shown = b.wait_js("two task rows", &rows_script(2)).await;
    let shown: Vec<(String, String)> = shown
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
        .collect();
    let mut expected = listed.clone();
    expected.sort();
    assert_eq!(shown, expected, "page rows vs GET /monitor/export");
    // Newest update first, as the API orders them.
    let order = b
        .js("return Array.from(document.querySelectorAll('#tasks tr.task')).map(r => r.dataset.taskId);")
        .await;
    let api_order: Vec<&str> = listed.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(order, json!(api_order));
    let counts = b
        .js(&format!(
            "const r = document.querySelector('#tasks tr.task[data-task-id=\"{done}\"]');
             return ['n', 'completed', 'failed', 'remaining'].map(c => r.querySelector('td.' + c).textContent);"
        ))
        .await;
    assert_eq!(counts, json!(["3", "3", "0", "0"]));

    // Expanding the completed task shows its instances, as the API has them.
    b.click(&row(&done, "button.toggle")).await;
    let inst = b
        .wait_js(
            "the instance rows of the completed task",
            &format!(
                "const rows = Array.from(document.querySelectorAll('#tasks tr.detail[data-task-id=\"{done}\"] tr.inst'));
                 if (rows.length < 3) return null;
                 return rows.map(r => [r.dataset.sop, r.querySelector('td.status').textContent]);"
            ),
        )
        .await;
    let mut inst: Vec<(String, String)> = serde_json::from_value(inst).unwrap();
    inst.sort();
    let want: Vec<(String, String)> = sops
        .iter()
        .map(|s| (s.clone(), "COMPLETED".to_string()))
        .collect();
    assert_eq!(inst, want);

    // Only what the API allows is offered: an ended task has no Cancel,
    // a scheduled one has both buttons.
    let enabled = "const b = document.querySelector(arguments[0]); return b ? !b.disabled : null;";
    for (id, button, want) in [
        (&done, "button.cancel", false),
        (&done, "button.reschedule", true),
        (&held, "button.cancel", true),
    ] {
        let got = b.js_with(enabled, json!([row(id, button)])).await;
        assert_eq!(got, json!(want), "{button} of task {id} enabled");
    }

    // Cancel of the scheduled task: CANCELED in the API and on the page.
    b.click(&row(&held, "button.cancel")).await;
    wait_rest_status(&svc, &held, "CANCELED").await;
    b.wait_js("the canceled status", &status_is(&held, "CANCELED"))
        .await;

    // Reschedule: SCHEDULED again (the window is still closed).
    b.click(&row(&held, "button.reschedule")).await;
    wait_rest_status(&svc, &held, "SCHEDULED").await;
    b.wait_js("the rescheduled status", &status_is(&held, "SCHEDULED"))
        .await;

    // Auto-refresh keeps the expanded row and what is typed in a filter.
    b.type_into("#f-batch", "not-applied-yet").await;
    let before = b
        .js("return document.getElementById('tasks-updated').textContent;")
        .await;
    b.wait_js(
        "a refresh of the task list",
        &format!(
            "return document.getElementById('tasks-updated').textContent !== {before} ? true : null;"
        ),
    )
    .await;
    let kept = b
        .js(&format!(
            "return [document.getElementById('f-batch').value,
                     document.querySelectorAll('#tasks tr.detail[data-task-id=\"{done}\"] tr.inst').length];"
        ))
        .await;
    assert_eq!(kept, json!(["not-applied-yet", 3]));

    // A filter: ExporterID=STOWRSD leaves only the completed task.
    b.type_into("#f-batch", "").await;
    b.type_into("#f-exporter", "STOWRSD").await;
    b.click("#filters button[type=submit]").await;
    b.wait_js(
        "the ExporterID filter",
        &format!(
            "const ids = Array.from(document.querySelectorAll('#tasks tr.task')).map(r => r.dataset.taskId);
             return ids.length === 1 && ids[0] === {} ? true : null;",
            js_str(&done)
        ),
    )
    .await;
    b.click("#f-clear").await;
    b.wait_js("both rows after Clear", &rows_script(2)).await;

    // The exporters, with their schedule window when the API reports it.
    let panel = b
        .wait_js(
            "the exporters",
            &format!(
                "const rows = Array.from(document.querySelectorAll('#exporters tr.exporter'));
                 if (rows.length < {}) return null;
                 const out = {{}};
                 for (const r of rows) out[r.dataset.exporterId] = r.querySelector('td.window').textContent;
                 return out;",
                exporters.len()
            ),
        )
        .await;
    let panel = panel.as_object().unwrap();
    assert_eq!(panel.len(), exporters.len(), "{panel:?}");
    for e in &exporters {
        let id = e["id"].as_str().unwrap();
        let window = panel
            .get(id)
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("exporter {id} not on the page: {panel:?}"));
        match e["scheduleOpen"].as_bool() {
            Some(true) => assert!(window.starts_with("open now"), "{id}: {window}"),
            Some(false) => assert!(window.starts_with("closed"), "{id}: {window}"),
            None => {}
        }
    }

    // Throughput: numbers once two /metrics/summary samples have been taken.
    let tp = b
        .wait_js(
            "throughput numbers",
            "const v = ['tp-instances', 'tp-mbytes', 'tp-inflight']
                 .map(id => document.getElementById(id).textContent);
             return v.every(s => s !== '' && Number.isFinite(Number(s))) ? v : null;",
        )
        .await;
    for v in tp.as_array().unwrap() {
        let n: f64 = v.as_str().unwrap().parse().unwrap();
        assert!(n >= 0.0, "{tp}");
    }

    // While an export runs, the rates go above zero.
    let again = svc.export_study("STOWRSD", &study_uid).await;
    b.wait_js(
        "instances/s and MB/s above zero",
        "const v = ['tp-instances', 'tp-mbytes']
             .map(id => Number(document.getElementById(id).textContent));
         return v.every(n => n > 0) ? v : null;",
    )
    .await;
    assert_eq!(
        svc.wait_done(again["taskID"].as_str().unwrap()).await["status"],
        "COMPLETED"
    );

    // No script errors and nothing the content security policy blocked.
    assert_no_script_errors(&b).await;

    // The completed task expanded, for a person to look at.
    b.screenshot(&screenshot_path("ui-screenshot.png")).await;

    // Paging: 20 more held tasks, 20 rows a page.
    for _ in 0..20 {
        svc.export_study("StowExporter", &study_uid).await;
    }
    let all = svc.list("").await.len();
    assert_eq!(all, 23);
    b.click("#page-size option:nth-child(1)").await;
    let page_info = |text: String| {
        format!(
            "return document.getElementById('page-info').textContent === {} ? true : null;",
            js_str(&text)
        )
    };
    b.wait_js("the first page", &page_info(format!("1–20 of {all}")))
        .await;
    assert_eq!(
        b.js("return document.querySelectorAll('#tasks tr.task').length;")
            .await,
        20
    );
    b.click("#page-next").await;
    b.wait_js("the second page", &page_info(format!("21–{all} of {all}")))
        .await;
    let second = b
        .js("return Array.from(document.querySelectorAll('#tasks tr.task')).map(r => r.dataset.taskId);")
        .await;
    let api_second: Vec<String> = svc
        .list("offset=20&limit=20&orderby=-updatedTime")
        .await
        .iter()
        .map(|t| t["taskID"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(second, json!(api_second));

    b.quit().await;
    svc.stop().await;
}

/// The Application with a bearer token, on port 0.
struct TokenService {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    run: Option<tokio::task::JoinHandle<Result<(), stow_exporter::app::AppError>>>,
}

impl TokenService {
    async fn start(cfg: &Path, data: &Path, token: &str) -> TokenService {
        let settings = Service::settings(ConfigSource::Ldif(cfg.to_path_buf()), data);
        let app = Application::build(settings)
            .await
            .unwrap()
            .with_api_token(Some(Secret::new(token)));
        let addr = app.local_addr();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let run = tokio::spawn(app.run_until_stopped(async move {
            let _ = rx.await;
        }));
        TokenService {
            addr,
            stop: Some(tx),
            run: Some(run),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(r) = self.run.take() {
            r.await.unwrap().unwrap();
        }
    }
}

#[tokio::test]
async fn the_page_asks_for_the_token_and_then_lists_the_tasks() {
    const TOKEN: &str = "s3cret-t0ken";
    let tmp = tempfile::tempdir().unwrap();
    let rcv = Receiver::start(&tmp.path().join("received"), Duration::ZERO).await;
    let cfg = write_config(tmp.path(), rcv.addr.port(), "");
    let (study_uid, files) = study(&tmp.path().join("src"), 1, 32);
    let data = tmp.path().join("data");
    import(&data, &files).await;
    let svc = TokenService::start(&cfg, &data, TOKEN).await;
    let mut auth = reqwest::header::HeaderMap::new();
    auth.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {TOKEN}").parse().unwrap(),
    );
    let http = reqwest::Client::builder()
        .default_headers(auth)
        .build()
        .unwrap();
    let r = http
        .post(svc.url(&format!(
            "/dcm4chee-arc/aets/{AET}/rs/studies/{study_uid}/export/STOWRSD"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let id = r.json::<Value>().await.unwrap()["taskID"]
        .as_str()
        .unwrap()
        .to_string();
    let t = wait_done(&http, &svc.url("/dcm4chee-arc"), &id, PAGE).await;
    assert_eq!(t["status"], "COMPLETED");

    // The page's files need no token, and carry their headers.
    let plain = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = plain
        .get(svc.url("/dcm4chee-arc/ui2"))
        .send()
        .await
        .unwrap();
    assert!(matches!(r.status().as_u16(), 301 | 308), "{}", r.status());
    assert_eq!(r.headers()["location"], "/dcm4chee-arc/ui2/");
    for (path, content_type) in [
        ("/dcm4chee-arc/ui2/", "text/html; charset=utf-8"),
        ("/dcm4chee-arc/ui2/app.js", "text/javascript; charset=utf-8"),
        ("/dcm4chee-arc/ui2/style.css", "text/css; charset=utf-8"),
    ] {
        let r = plain.get(svc.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let h = r.headers();
        assert_eq!(h["content-type"], content_type, "{path}");
        assert_eq!(h["cache-control"], "no-cache", "{path}");
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(
            csp.contains("default-src 'self'") && !csp.contains("unsafe-inline"),
            "{path}: {csp}"
        );
    }
    // Every listed route is served.
    for (method, path) in stow_exporter::api::ui::UI_ROUTES {
        assert_eq!(*method, "GET");
        let r = plain
            .get(svc.url(&format!("/dcm4chee-arc{path}")))
            .send()
            .await
            .unwrap();
        assert!(
            r.status().is_success() || r.status().is_redirection(),
            "{path}"
        );
    }

    let b = Browser::start().await;
    b.goto(&svc.url("/dcm4chee-arc/ui2/")).await;
    b.wait_js(
        "the token input",
        "return document.getElementById('token-panel').hidden ? null : true;",
    )
    .await;
    assert_eq!(
        b.js("return document.querySelectorAll('#tasks tr.task').length;")
            .await,
        0
    );
    b.screenshot(&screenshot_path("ui-screenshot-token.png"))
        .await;

    // A wrong token is refused, and the page asks again.
    b.type_into("#token-input", "wrong").await;
    b.click("#token-form button[type=submit]").await;
    b.wait_js(
        "the refused-token note",
        "const p = document.getElementById('token-panel');
         const note = document.getElementById('token-note').textContent;
         return !p.hidden && note.includes('refused') ? note : null;",
    )
    .await;

    b.type_into("#token-input", TOKEN).await;
    b.click("#token-form button[type=submit]").await;
    let rows = b.wait_js("the task row", &rows_script(1)).await;
    assert_eq!(rows, json!({ id.clone(): "COMPLETED" }));
    let kept = b
        .js("return [document.getElementById('token-panel').hidden,
                     sessionStorage.getItem('stow-exporter.apiToken'),
                     location.href];")
        .await;
    assert_eq!(kept[0], true);
    assert_eq!(kept[1], TOKEN);
    assert!(
        !kept[2].as_str().unwrap().contains(TOKEN),
        "the token is in the URL: {}",
        kept[2]
    );

    b.quit().await;
    svc.stop().await;
}

const STOWRSD_DN: &str = "dcmExporterID=STOWRSD,dicomDeviceName=dcm4chee-arc,cn=Devices,cn=DICOM Configuration,dc=dcm4che,dc=org";

/// The task IDs on the page, in order.
const IDS: &str =
    "return Array.from(document.querySelectorAll('#tasks tr.task')).map(r => r.dataset.taskId);";

/// Null until the page lists exactly `ids` (in any order).
fn listed_exactly(ids: &[String]) -> String {
    format!(
        "const want = {};
         const got = Array.from(document.querySelectorAll('#tasks tr.task')).map(r => r.dataset.taskId);
         return got.length === want.length && want.every(id => got.includes(id)) ? true : null;",
        serde_json::to_string(ids).unwrap()
    )
}

/// Sets the Status filter as a choice in the list would (its change
/// applies the filters).
async fn choose_status(b: &Browser, status: &str) {
    b.js_with(
        "const s = document.getElementById('f-status');
         s.value = arguments[0];
         s.dispatchEvent(new Event('change'));",
        json!([status]),
    )
    .await;
}

/// Fills the four time inputs (datetime-local values, '' for none) and
/// applies the filters.
async fn time_filters(b: &Browser, created: (&str, &str), updated: (&str, &str)) {
    b.js_with(
        "const ids = ['f-created-from', 'f-created-to', 'f-updated-from', 'f-updated-to'];
         ids.forEach((id, i) => { document.getElementById(id).value = arguments[0][i]; });
         return ids.map(id => document.getElementById(id).value);",
        json!([[created.0, created.1, updated.0, updated.1]]),
    )
    .await;
    b.click("#filters button[type=submit]").await;
}

/// The API's bound of a datetime-local value: its digits, with `seconds`.
fn bound(v: &str, seconds: &str) -> String {
    if v.is_empty() {
        return String::new();
    }
    let digits: String = v.chars().filter(char::is_ascii_digit).collect();
    format!("{digits}{seconds}")
}

/// The same bound in UTC with a trailing Z, as the page sends it (the
/// browser runs in this machine's zone).
fn bound_utc(v: &str, seconds: &str) -> String {
    use chrono::TimeZone;
    let local = chrono::NaiveDateTime::parse_from_str(&bound(v, seconds), "%Y%m%d%H%M%S").unwrap();
    let t = chrono::Local
        .from_local_datetime(&local)
        .earliest()
        .unwrap();
    format!("{}Z", t.with_timezone(&chrono::Utc).format("%Y%m%d%H%M%S"))
}

/// Clicks a bulk action, checks its confirmation names the count the REST
/// API gives for `query`, and confirms. Returns that count.
async fn bulk(b: &Browser, svc: &Service, action: &str, query: &str) -> u64 {
    b.click(&format!("#bulk-{action}")).await;
    let asked = b
        .wait_js(
            &format!("the confirmation of {action} matching"),
            &format!(
                "const c = document.getElementById('confirm');
                 return !c.hidden && c.dataset.action === {} ?
                     [Number(c.dataset.count), document.getElementById('confirm-text').textContent,
                      document.getElementById('confirm-yes').textContent] : null;",
                js_str(action)
            ),
        )
        .await;
    let n = svc
        .get_json::<Value>(&format!("/monitor/export/count?{query}"))
        .await["count"]
        .as_u64()
        .unwrap();
    assert_eq!(asked[0], json!(n), "{asked}");
    let tasks = if n == 1 {
        "1 task".to_string()
    } else {
        format!("{n} tasks")
    };
    assert!(
        asked[1].as_str().unwrap().contains(&tasks) && asked[2].as_str().unwrap().contains(&tasks),
        "{asked}"
    );
    b.click("#confirm-yes").await;
    n
}

/// Null until the notice reads `text`.
fn notice_is(text: &str) -> String {
    format!(
        "const n = document.getElementById('notice');
         return !n.hidden && document.getElementById('notice-text').textContent === {} ? true : null;",
        js_str(text)
    )
}

#[tokio::test]
async fn the_page_deletes_tasks_filters_by_time_and_acts_on_all_matching() {
    let tmp = tempfile::tempdir().unwrap();
    let rcv = Receiver::start(&tmp.path().join("received"), Duration::ZERO).await;
    // Both exporters' windows closed: every task stays SCHEDULED.
    let extra = closed_window(STOW_EXPORTER_DN) + &closed_window(STOWRSD_DN);
    let cfg = write_config(tmp.path(), rcv.addr.port(), &extra);
    let (study_uid, files) = study(&tmp.path().join("src"), 1, 32);
    let data = tmp.path().join("data");
    import(&data, &files).await;
    let svc = Service::start(&cfg, &data).await;

    let mut held = Vec::new();
    for _ in 0..4 {
        let t = svc.export_study("StowExporter", &study_uid).await;
        held.push(t["taskID"].as_str().unwrap().to_string());
    }
    // Matches the status filter below but not the exporter: never touched.
    let other = svc.export_study("STOWRSD", &study_uid).await;
    let other = other["taskID"].as_str().unwrap().to_string();
    for id in held.iter().chain([&other]) {
        assert_eq!(svc.task(id).await["status"], "SCHEDULED", "task {id}");
    }
    let other_before = svc.task(&other).await;
    let untouched = || async {
        let now = svc.task(&other).await;
        assert_eq!(now["status"], "SCHEDULED", "{now}");
        assert_eq!(now["updatedTime"], other_before["updatedTime"], "{now}");
    };

    let b = Browser::start().await;
    b.goto(&svc.url("/ui2/")).await;
    b.wait_js("five task rows", &rows_script(5)).await;

    // Delete: the first click only asks, in the button; the second deletes.
    let gone = held.remove(0);
    let del = row(&gone, "button.delete");
    let enabled = "const b = document.querySelector(arguments[0]); return b ? !b.disabled : null;";
    assert_eq!(b.js_with(enabled, json!([del])).await, true);
    b.click(&del).await;
    b.wait_js(
        "the delete confirmation",
        &format!(
            "const b = document.querySelector({});
             return b && b.textContent === 'Confirm?' ? true : null;",
            js_str(&del)
        ),
    )
    .await;
    b.screenshot(&screenshot_path("ui-screenshot-delete.png"))
        .await;
    let path = format!("/monitor/export/{gone}");
    assert_eq!(svc.call(reqwest::Method::GET, &path).await, 200);
    b.click(&del).await;
    b.wait_js(
        "the deleted notice",
        &notice_is(&format!("Task {gone} deleted.")),
    )
    .await;
    assert_eq!(svc.call(reqwest::Method::GET, &path).await, 404);
    let mut left = held.clone();
    left.push(other.clone());
    b.wait_js("the rows without the deleted task", &listed_exactly(&left))
        .await;

    // Time ranges, entered in the browser's time (this machine's zone);
    // the page sends them in UTC. A day long ago: nothing.
    let none = "return document.querySelectorAll('#tasks tr.task').length === 0
                    && !document.getElementById('tasks-empty').hidden ? true : null;";
    time_filters(&b, ("2000-01-01T00:00", "2000-01-02T00:00"), ("", "")).await;
    b.wait_js("no rows for a range in 2000", none).await;
    assert!(
        svc.list("createdTime=20000101000000-20000102000059")
            .await
            .is_empty()
    );
    // An hour either side of now: all of them, as the API lists them.
    let around = b
        .js("const p = (n) => String(n).padStart(2, '0');
             const f = (d) => `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}`;
             return [f(new Date(Date.now() - 3600e3)), f(new Date(Date.now() + 3600e3))];")
        .await;
    let (from, to) = (around[0].as_str().unwrap(), around[1].as_str().unwrap());
    time_filters(&b, (from, to), ("", "")).await;
    b.wait_js("the rows created around now", &listed_exactly(&left))
        .await;
    let param = format!("{}-{}", bound(from, "00"), bound(to, "59"));
    let mut api: Vec<String> = svc
        .list(&format!("createdTime={param}"))
        .await
        .iter()
        .map(|t| t["taskID"].as_str().unwrap().to_string())
        .collect();
    let mut page: Vec<String> = serde_json::from_value(b.js(IDS).await).unwrap();
    api.sort();
    page.sort();
    assert_eq!(page, api, "createdTime={param}");
    // The page sends the range in UTC: the API lists the same for it.
    let utc = format!("{}-{}", bound_utc(from, "00"), bound_utc(to, "59"));
    let mut api_utc: Vec<String> = svc
        .list(&format!("createdTime={utc}"))
        .await
        .iter()
        .map(|t| t["taskID"].as_str().unwrap().to_string())
        .collect();
    api_utc.sort();
    assert_eq!(page, api_utc, "createdTime={utc}");
    // A range that ends before it starts is refused on the page.
    time_filters(&b, (to, from), ("", "")).await;
    b.wait_js(
        "the backwards-range notice",
        &notice_is("Created: the start is after the end."),
    )
    .await;
    assert_eq!(b.js(IDS).await.as_array().unwrap().len(), left.len());
    // Updated from an hour ahead on (the end left open): nothing.
    time_filters(&b, (from, to), (to, "")).await;
    b.wait_js("no rows updated from an hour ahead", none).await;
    assert!(
        svc.list(&format!(
            "createdTime={param}&updatedTime={}-",
            bound(to, "00")
        ))
        .await
        .is_empty()
    );
    b.click("#f-clear").await;
    b.wait_js("all rows after Clear", &listed_exactly(&left))
        .await;

    // Bulk cancel needs a status; without one it is offered disabled.
    b.type_into("#f-exporter", "StowExporter").await;
    b.click("#filters button[type=submit]").await;
    b.wait_js("the StowExporter rows", &listed_exactly(&held))
        .await;
    assert_eq!(b.js_with(enabled, json!(["#bulk-cancel"])).await, false);
    assert_eq!(b.js_with(enabled, json!(["#bulk-reschedule"])).await, true);

    // Cancel matching: every held StowExporter task, not the other one.
    choose_status(&b, "SCHEDULED").await;
    b.wait_js(
        "the cancel button offered",
        "return document.getElementById('bulk-cancel').disabled ? null : true;",
    )
    .await;
    let scheduled = "ExporterID=StowExporter&status=SCHEDULED";
    assert_eq!(bulk(&b, &svc, "cancel", scheduled).await, 3);
    for id in &held {
        wait_rest_status(&svc, id, "CANCELED").await;
    }
    b.wait_js("the canceled notice", &notice_is("3 tasks canceled."))
        .await;
    b.wait_js("no SCHEDULED rows left", none).await;
    untouched().await;

    // Reschedule matching: the canceled ones are SCHEDULED again.
    choose_status(&b, "CANCELED").await;
    b.wait_js("the canceled rows", &listed_exactly(&held)).await;
    assert_eq!(b.js_with(enabled, json!(["#bulk-cancel"])).await, false);
    let canceled = "ExporterID=StowExporter&status=CANCELED";
    // A screenshot with the confirmation open, for a person to look at.
    b.click("#bulk-reschedule").await;
    b.wait_js(
        "the confirmation",
        "return document.getElementById('confirm').hidden ? null : true;",
    )
    .await;
    b.screenshot(&screenshot_path("ui-screenshot-bulk.png"))
        .await;
    b.click("#confirm-no").await;
    assert_eq!(bulk(&b, &svc, "reschedule", canceled).await, 3);
    for id in &held {
        wait_rest_status(&svc, id, "SCHEDULED").await;
    }
    b.wait_js("the rescheduled notice", &notice_is("3 tasks rescheduled."))
        .await;
    untouched().await;

    // Delete matching: gone from the API; the other task stays.
    choose_status(&b, "SCHEDULED").await;
    b.wait_js("the scheduled rows", &listed_exactly(&held))
        .await;
    assert_eq!(bulk(&b, &svc, "delete", scheduled).await, 3);
    b.wait_js("the deleted notice", &notice_is("3 tasks deleted."))
        .await;
    assert!(svc.list(scheduled).await.is_empty());
    b.wait_js("no rows after the delete", none).await;
    untouched().await;
    b.click("#f-clear").await;
    b.wait_js(
        "only the other task",
        &listed_exactly(std::slice::from_ref(&other)),
    )
    .await;

    assert_no_script_errors(&b).await;

    b.quit().await;
    svc.stop().await;
}

#[tokio::test]
async fn a_task_in_process_is_not_deleted_but_canceled_by_status() {
    let tmp = tempfile::tempdir().unwrap();
    // A receiver holding every request until released: the task of three
    // instances stays IN PROCESS while the page looks, however slow the
    // machine (a cancel stops it before its next instance).
    let rcv = Receiver::start_held(&tmp.path().join("received")).await;
    // StowExporter's window closed: its task waits, and can be deleted.
    let cfg = write_config(
        tmp.path(),
        rcv.addr.port(),
        &closed_window(STOW_EXPORTER_DN),
    );
    let (study_uid, files) = study(&tmp.path().join("src"), 3, 32);
    let data = tmp.path().join("data");
    import(&data, &files).await;
    let svc = Service::start(&cfg, &data).await;
    let id = svc.export_study("STOWRSD", &study_uid).await;
    let id = id["taskID"].as_str().unwrap().to_string();
    wait_rest_status(&svc, &id, "IN PROCESS").await;
    let waiting = svc.export_study("StowExporter", &study_uid).await;
    let waiting = waiting["taskID"].as_str().unwrap().to_string();

    let b = Browser::start().await;
    b.goto(&svc.url("/ui2/")).await;
    b.wait_js("the running task", &status_is(&id, "IN PROCESS"))
        .await;
    // Delete is not offered while the task runs; the API would refuse it.
    let del = b
        .js_with(
            "const b = document.querySelector(arguments[0]); return [b.disabled, b.title];",
            json!([row(&id, "button.delete")]),
        )
        .await;
    assert_eq!(del[0], true, "{del}");
    assert!(del[1].as_str().unwrap().contains("running"), "{del}");
    let path = format!("/monitor/export/{id}");
    assert_eq!(svc.call(reqwest::Method::DELETE, &path).await, 409);

    // Delete matching deletes the waiting task, keeps the running one,
    // and says so.
    b.wait_js("both rows", &rows_script(2)).await;
    assert_eq!(bulk(&b, &svc, "delete", "").await, 2);
    b.wait_js(
        "the partly-deleted notice",
        &notice_is("1 task deleted; 1 of 2 could not be deleted (in process: cancel them first)."),
    )
    .await;
    assert_eq!(
        svc.call(reqwest::Method::GET, &format!("/monitor/export/{waiting}"))
            .await,
        404
    );
    assert_eq!(svc.task(&id).await["status"], "IN PROCESS");
    b.wait_js(
        "the running row alone",
        &listed_exactly(std::slice::from_ref(&id)),
    )
    .await;

    // With the IN PROCESS filter, Delete matching is not offered.
    choose_status(&b, "IN PROCESS").await;
    b.wait_js(
        "the IN PROCESS filter",
        "return document.getElementById('bulk-cancel').disabled ? null : true;",
    )
    .await;
    let enabled = "const b = document.querySelector(arguments[0]); return b ? !b.disabled : null;";
    assert_eq!(b.js_with(enabled, json!(["#bulk-delete"])).await, false);
    let running = "status=IN+PROCESS";

    // Cancel matching stops it.
    assert_eq!(bulk(&b, &svc, "cancel", running).await, 1);
    b.wait_js("the canceled notice", &notice_is("1 task canceled."))
        .await;
    // The request in flight ends; no further instance is sent.
    rcv.release();
    let start = Instant::now();
    loop {
        let t = svc.task(&id).await;
        if t["status"] == "CANCELED" {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(45),
            "never CANCELED: {t}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    b.click("#f-clear").await;
    b.wait_js("the canceled row", &status_is(&id, "CANCELED"))
        .await;
    assert_no_script_errors(&b).await;

    b.quit().await;
    svc.stop().await;
}

#[tokio::test]
async fn the_page_shows_the_export_rules_as_the_api_lists_them() {
    let tmp = tempfile::tempdir().unwrap();
    let dev = "dicomDeviceName=dcm4chee-arc,cn=Devices,cn=DICOM Configuration,dc=dcm4che,dc=org";
    let hour = closed_hour();
    let rules = format!(
        "version: 1\n\n\
         dn: cn=CT series,{dev}\nobjectClass: dcmExportRule\ncn: CT series\ndcmEntity: Series\n\
         dcmExporterID: STOWRSD\ndcmDuration: PT1M\ndcmProperty: Modality=CT\n\
         dcmProperty: SendingApplicationEntityTitle!=TEST\ndcmSchedule: hour={hour}\n\n\
         dn: cn=Everything,dicomAETitle=DCM4CHEE1,{dev}\nobjectClass: dcmExportRule\n\
         cn: Everything\ndcmEntity: Study\ndcmExporterID: StowExporter\ndcmExporterID: STOWRSD\n"
    );
    let cfg = write_config(tmp.path(), 18080, &rules);
    let svc = Service::start(&cfg, &tmp.path().join("data")).await;
    let listed: Vec<Value> = svc.get_json("/export-rules").await;
    assert_eq!(listed.len(), 2);

    let b = Browser::start().await;
    b.goto(&svc.url("/ui2/")).await;
    let shown = b
        .wait_js(
            "the export rules",
            "const rows = Array.from(document.querySelectorAll('#export-rules tr.export-rule'));
             if (rows.length < 2) return null;
             const out = {};
             for (const r of rows) out[r.dataset.rule] = Array.from(r.cells).map(c => c.textContent);
             return out;",
        )
        .await;
    let shown = shown.as_object().unwrap();
    assert_eq!(shown.len(), listed.len(), "{shown:?}");
    for r in &listed {
        let dn = r["dn"].as_str().unwrap();
        let cells: Vec<&str> = shown[dn]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap())
            .collect();
        let name = match r["dicomAETitle"].as_str() {
            Some(aet) => format!("{} ({aet})", r["cn"].as_str().unwrap()),
            None => r["cn"].as_str().unwrap().to_string(),
        };
        assert_eq!(cells[0], name);
        assert_eq!(cells[1], r["dcmEntity"].as_str().unwrap());
        let exporters: Vec<&str> = r["dcmExporterID"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e.as_str().unwrap())
            .collect();
        assert_eq!(cells[2], exporters.join(", "));
        assert_eq!(cells[4], r["dcmDuration"].as_str().unwrap());
        let window = cells[6];
        if r["scheduleOpen"] == true {
            assert!(window.starts_with("open now"), "{dn}: {window}");
        } else {
            assert!(window.starts_with("closed"), "{dn}: {window}");
        }
    }
    let ct = &shown[listed.iter().find(|r| r["cn"] == "CT series").unwrap()["dn"]
        .as_str()
        .unwrap()];
    assert_eq!(
        ct[3], "Modality=CT & SendingApplicationEntityTitle!=TEST",
        "the conditions as configured"
    );
    assert_no_script_errors(&b).await;
    b.quit().await;
    svc.stop().await;
}
