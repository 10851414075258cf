//! Operations: `/metrics` and `/metrics/summary` checked against real
//! exports, health endpoints, the control API's bearer token, and a
//! graceful SIGTERM of the real binary in the middle of an export.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use stow_exporter::app::Application;
use stow_exporter::config::{ConfigSource, Secret};

// ---------------------------------------------------------------------------
// The exposition, parsed by `prometheus-parse`, with the checks of its
// structure that the crate leaves to its user (it skips what it cannot
// read and keeps no TYPE for a family without samples).

use prometheus_parse::{LineInfo, SampleType, Value as Prom};

type LabelPairs = Vec<(String, String)>;

#[derive(Debug)]
struct Scrape {
    /// Family name -> type, from the TYPE lines.
    types: HashMap<String, SampleType>,
    /// Every sample; a histogram's buckets as one value per label set,
    /// its `_sum` and `_count` as plain samples.
    samples: BTreeMap<(String, LabelPairs), Prom>,
}

fn pairs(labels: &prometheus_parse::Labels) -> LabelPairs {
    let mut l: LabelPairs = labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    l.sort();
    l
}

/// Parses `text` and checks what Prometheus needs of it: every sample of
/// a declared family, each family declared once, counters named `_total`
/// and not negative, no series twice, histograms with cumulative buckets
/// that end in `+Inf` equal to `_count`, and a `_sum`.
fn parse_exposition(text: &str) -> Scrape {
    assert!(text.ends_with('\n'), "the last line ends with a newline");
    let mut types = HashMap::new();
    let mut helped = BTreeSet::new();
    let mut lines = 0;
    for line in text.lines() {
        match LineInfo::parse(line) {
            LineInfo::Type {
                metric_name,
                metric_alias,
                sample_type,
            } => {
                // A histogram's TYPE is kept under `<name>_bucket`.
                let name = metric_alias.unwrap_or(metric_name);
                assert!(
                    types.insert(name.clone(), sample_type).is_none(),
                    "TYPE twice: {name}"
                );
            }
            LineInfo::Doc { metric_name, .. } => {
                assert!(helped.insert(metric_name.to_string()), "HELP twice: {line}");
            }
            LineInfo::Sample { .. } => lines += 1,
            LineInfo::Empty | LineInfo::Ignored => {}
        }
    }
    let parsed = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap();
    let mut samples = BTreeMap::new();
    let mut read = 0;
    for s in parsed.samples {
        let family = match &s.value {
            Prom::Histogram(b) => {
                read += b.len();
                s.metric.clone()
            }
            _ => {
                read += 1;
                ["_sum", "_count"]
                    .iter()
                    .find_map(|suffix| {
                        let base = s.metric.strip_suffix(suffix)?;
                        (types.get(base) == Some(&SampleType::Histogram)).then(|| base.to_string())
                    })
                    .unwrap_or_else(|| s.metric.clone())
            }
        };
        let kind = types
            .get(&family)
            .unwrap_or_else(|| panic!("no TYPE for {}", s.metric));
        assert!(
            *kind != SampleType::Histogram
                || family != s.metric
                || matches!(s.value, Prom::Histogram(_)),
            "histogram sample without suffix: {}",
            s.metric
        );
        if *kind == SampleType::Counter {
            let Prom::Counter(v) = s.value else {
                panic!("{}: not read as a counter", s.metric)
            };
            assert!(
                v >= 0.0 && s.metric.ends_with("_total"),
                "counter must be _total and non-negative: {}",
                s.metric
            );
        }
        let key = (s.metric.clone(), pairs(&s.labels));
        assert!(
            samples.insert(key, s.value).is_none(),
            "series twice: {} {:?}",
            s.metric,
            s.labels
        );
    }
    assert_eq!(read, lines, "every sample line was read:\n{text}");
    let scrape = Scrape { types, samples };
    for ((name, labels), v) in &scrape.samples {
        let Prom::Histogram(buckets) = v else {
            continue;
        };
        let mut buckets: Vec<_> = buckets.iter().map(|b| (b.less_than, b.count)).collect();
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        assert!(
            buckets.windows(2).all(|w| w[0].1 <= w[1].1),
            "{name} not cumulative"
        );
        let inf = buckets.last().unwrap();
        assert!(inf.0.is_infinite(), "{name} has no +Inf bucket");
        let labels: Vec<(&str, &str)> = labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let count = scrape.value(&format!("{name}_count"), &labels);
        assert_eq!(inf.1, count, "{name}: +Inf bucket != _count");
        scrape.value(&format!("{name}_sum"), &labels);
    }
    scrape
}

impl Scrape {
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let mut l: LabelPairs = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        l.sort();
        match self.samples.get(&(name.to_string(), l))? {
            Prom::Counter(v) | Prom::Gauge(v) | Prom::Untyped(v) => Some(*v),
            other => panic!("{name}: not a single value: {other:?}"),
        }
    }

    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels)
            .unwrap_or_else(|| panic!("no {name}{labels:?} in the scrape"))
    }
}

async fn scrape(http: &reqwest::Client, base: &str, token: Option<&str>) -> Scrape {
    let mut req = http.get(format!("{base}/metrics"));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = r.text().await.unwrap();
    assert!(
        !text.contains("127.0.0.1:"),
        "no URL in the metrics:\n{text}"
    );
    parse_exposition(&text)
}

#[test]
fn the_structure_checks_catch_what_the_parser_lets_through() {
    let ok = |t: &'static str| std::panic::catch_unwind(|| parse_exposition(t)).is_ok();
    assert!(ok("# TYPE a_total counter\na_total{x=\"1\"} 2\n"));
    assert!(!ok("a_total 1\n"), "no TYPE");
    assert!(
        !ok("# TYPE a_total counter\na_total{x=\"1\"} two\n"),
        "bad value"
    );
    assert!(
        !ok("# TYPE a_total counter\na_total 1\na_total 1\n"),
        "duplicate series"
    );
    assert!(!ok("# TYPE a counter\na 1\n"), "counter without _total");
    assert!(
        !ok(
            "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n"
        ),
        "not cumulative"
    );
    assert!(
        !ok("# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 1\n"),
        "+Inf != _count"
    );
    assert!(ok("# TYPE g gauge\ng{a=\"q\"} -1.5\n"));
}

/// `GET /metrics/summary`, the web page's throughput source.
async fn summary(http: &reqwest::Client, base: &str) -> serde_json::Value {
    let r = http
        .get(format!("{base}/metrics/summary"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    r.json().await.unwrap()
}

fn file_sizes(files: &[PathBuf]) -> u64 {
    files
        .iter()
        .map(|f| std::fs::metadata(f).unwrap().len())
        .sum()
}

// ---------------------------------------------------------------------------

#[tokio::test]
async fn metrics_count_real_exports_and_health_checks() {
    let tmp = tempfile::tempdir().unwrap();
    let rcv = Receiver::start(&tmp.path().join("received"), Duration::ZERO).await;
    let cfg = write_config(tmp.path(), rcv.addr.port(), "");
    let data = tmp.path().join("data");
    let (study_ok, files_ok) = study(&tmp.path().join("ok"), 5, 64);
    let (study_bad, files_bad) = study(&tmp.path().join("bad"), 3, 32);
    import(&data, &files_ok).await;
    import(&data, &files_bad).await;
    // One instance of the second study is gone from storage: MISSING.
    let gone = sop_uid(&files_bad[0]);
    let stored: Vec<PathBuf> = walk(&data.join("storage"))
        .into_iter()
        .filter(|p| p.file_name().unwrap().to_string_lossy() == format!("{gone}.dcm"))
        .collect();
    assert_eq!(stored.len(), 1);
    std::fs::remove_file(&stored[0]).unwrap();

    let svc = Service::start(&cfg, &data).await;
    let base = format!("http://{}", svc.addr);
    let http = reqwest::Client::new();

    // Before any export: the families are there, the task gauges are zero.
    let s = scrape(&http, &base, None).await;
    assert_eq!(
        s.types["stow_exporter_request_duration_seconds"],
        SampleType::Histogram
    );
    assert_eq!(
        s.value(
            "stow_exporter_tasks",
            &[("queue", "Export"), ("status", "COMPLETED")]
        ),
        0.0
    );
    assert_eq!(
        s.value("stow_exporter_queue_depth", &[("queue", "Export")]),
        0.0
    );
    assert_eq!(
        summary(&http, &base).await,
        serde_json::json!({"destinations": []})
    );

    let t = svc.export_study("STOWRSD", &study_ok).await;
    let done = svc.wait_done(t["taskID"].as_str().unwrap()).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    let t = svc.export_study("STOWRSD", &study_bad).await;
    let done = svc.wait_done(t["taskID"].as_str().unwrap()).await;
    assert_eq!(done["status"], "WARNING", "{done}");

    let s = scrape(&http, &base, None).await;
    let dest = [("exporter", "STOWRSD"), ("web_app", "stowrsd")];
    assert_eq!(s.value("stow_exporter_instances_sent_total", &dest), 7.0);
    assert_eq!(
        s.value("stow_exporter_bytes_sent_total", &dest),
        (file_sizes(&files_ok) + file_sizes(&files_bad[1..])) as f64
    );
    assert_eq!(
        s.value(
            "stow_exporter_instances_failed_total",
            &[dest[0], dest[1], ("reason", "missing")]
        ),
        1.0
    );
    // One request per instance sent (the missing one never went).
    assert_eq!(
        s.value("stow_exporter_request_duration_seconds_count", &dest),
        7.0
    );
    assert_eq!(s.value("stow_exporter_requests_in_flight", &dest), 0.0);
    assert_eq!(s.value("stow_exporter_task_retries_total", &dest), 0.0);
    let tasks = |st| {
        s.value(
            "stow_exporter_tasks",
            &[("queue", "Export"), ("status", st)],
        )
    };
    assert_eq!(tasks("COMPLETED"), 1.0);
    assert_eq!(tasks("WARNING"), 1.0);
    assert_eq!(tasks("IN PROCESS"), 0.0);
    assert_eq!(
        s.value("stow_exporter_queue_depth", &[("queue", "Export")]),
        0.0
    );
    // Nothing for the exporter that did not run.
    assert_eq!(
        s.get(
            "stow_exporter_instances_sent_total",
            &[("exporter", "StowExporter"), ("web_app", "DCM4CHEE")]
        ),
        None
    );

    // The page's summary: the same counts, per exporter and web app.
    assert_eq!(
        summary(&http, &base).await,
        serde_json::json!({"destinations": [{
            "exporter": "STOWRSD",
            "webApp": "stowrsd",
            "instancesSent": 7,
            "bytesSent": file_sizes(&files_ok) + file_sizes(&files_bad[1..]),
            "instancesFailed": 1,
            "requestsInFlight": 0,
        }]})
    );

    // Health.
    let health = |check: &str| {
        let r = http
            .get(format!("{base}/dcm4chee-arc/health/{check}"))
            .send();
        async move { r.await.unwrap() }
    };
    let r = health("live").await;
    assert_eq!(r.status(), 200);
    let r = health("ready").await;
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    for c in ["config", "queue", "storage"] {
        assert_eq!(body["checks"][c]["status"], "UP", "{body}");
    }
    // Storage not writable: the folder replaced by a file (permissions
    // would not do: the tests may run as root).
    std::fs::rename(data.join("storage"), data.join("storage.away")).unwrap();
    std::fs::write(data.join("storage"), "not a folder").unwrap();
    let r = health("ready").await;
    assert_eq!(r.status(), 503);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["checks"]["storage"]["status"], "DOWN", "{body}");
    assert_eq!(body["checks"]["queue"]["status"], "UP", "{body}");
    assert!(
        body["errorMessage"]
            .as_str()
            .unwrap()
            .starts_with("not ready: storage:"),
        "{body}"
    );
    let r = health("live").await;
    assert_eq!(r.status(), 200, "live stays up");
    std::fs::remove_file(data.join("storage")).unwrap();
    std::fs::rename(data.join("storage.away"), data.join("storage")).unwrap();
    let r = health("ready").await;
    assert_eq!(r.status(), 200);
    svc.stop().await;
}

fn meta(path: &Path) -> (String, String) {
    let obj = dicom_object::OpenFileOptions::new()
        .read_until(dicom_dictionary_std::tags::PIXEL_DATA)
        .open_file(path)
        .unwrap();
    let study = obj
        .element(dicom_dictionary_std::tags::STUDY_INSTANCE_UID)
        .unwrap()
        .to_str()
        .unwrap()
        .trim_end_matches('\0')
        .to_string();
    let ts = obj
        .meta()
        .transfer_syntax()
        .trim_end_matches('\0')
        .to_string();
    (study, ts)
}

#[tokio::test]
async fn metrics_count_decoding_by_transfer_syntax() {
    let tmp = tempfile::tempdir().unwrap();
    let rcv = Receiver::start(&tmp.path().join("received"), Duration::ZERO).await;
    let cfg = write_config(
        tmp.path(),
        rcv.addr.port(),
        &add_props(
            STOWRSD_WEBAPP_DN,
            &["transfer-syntax=ExplicitVRLittleEndian"],
        ),
    );
    let data = tmp.path().join("data");
    let good = pydicom_files().join("MR_small_RLE.dcm");
    // Its J2K codestream is broken: OpenJPEG cannot read its header.
    let broken = pydicom_files().join("JPEG2000-embedded-sequence-delimiter.dcm");
    import(&data, &[good.clone(), broken.clone()]).await;
    let (good_study, good_ts) = meta(&good);
    let (broken_study, broken_ts) = meta(&broken);
    assert_ne!(good_study, broken_study);

    let svc = Service::start(&cfg, &data).await;
    let t = svc.export_study("STOWRSD", &good_study).await;
    let done = svc.wait_done(t["taskID"].as_str().unwrap()).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    let t = svc.export_study("STOWRSD", &broken_study).await;
    let done = svc.wait_done(t["taskID"].as_str().unwrap()).await;
    assert_eq!(done["status"], "FAILED", "{done}");

    let s = scrape(
        &reqwest::Client::new(),
        &format!("http://{}", svc.addr),
        None,
    )
    .await;
    let n = |ts: &str, result| {
        s.value(
            "stow_exporter_transcoded_instances_total",
            &[("transfer_syntax", ts), ("result", result)],
        )
    };
    assert_eq!(n(&good_ts, "ok"), 1.0);
    assert_eq!(n(&good_ts, "failed"), 0.0);
    assert_eq!(n(&broken_ts, "failed"), 1.0);
    assert_eq!(
        s.value(
            "stow_exporter_decode_duration_seconds_count",
            &[("transfer_syntax", &good_ts)]
        ),
        1.0
    );
    assert!(
        s.value(
            "stow_exporter_decode_duration_seconds_sum",
            &[("transfer_syntax", &good_ts)]
        ) > 0.0
    );
    let dest = [("exporter", "STOWRSD"), ("web_app", "stowrsd")];
    assert_eq!(s.value("stow_exporter_instances_sent_total", &dest), 1.0);
    // Sent converted: the bytes are the converted object's, as received.
    let received = rcv.stored();
    assert_eq!(received.len(), 1);
    assert_eq!(
        s.value("stow_exporter_bytes_sent_total", &dest),
        std::fs::metadata(&received[0]).unwrap().len() as f64
    );
    assert_eq!(
        s.value(
            "stow_exporter_instances_failed_total",
            &[dest[0], dest[1], ("reason", "decode")]
        ),
        1.0
    );
    svc.stop().await;
}

#[tokio::test]
async fn a_configured_token_is_required_even_on_loopback() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = write_config(tmp.path(), 1, "");
    let settings = Service::settings(ConfigSource::Ldif(cfg), &tmp.path().join("data"));
    let app = Application::build(settings)
        .await
        .unwrap()
        .with_api_token(Some(Secret::new("s3cret-t0ken")));
    let addr = app.local_addr();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(app.run_until_stopped(async move {
        let _ = rx.await;
    }));
    let base = format!("http://{addr}");
    let http = reqwest::Client::new();
    let get = |path: &str, auth: Option<&str>| {
        let mut r = http.get(format!("{base}{path}"));
        if let Some(a) = auth {
            r = r.header("authorization", a);
        }
        r.send()
    };
    for path in [
        "/metrics",
        "/metrics/summary",
        "/dcm4chee-arc/health/ready",
        "/dcm4chee-arc/ctrl/status",
        "/dcm4chee-arc/monitor/export",
    ] {
        let r = get(path, None).await.unwrap();
        assert_eq!(r.status(), 401, "{path} without a token");
        assert!(r.headers().contains_key("www-authenticate"));
        for wrong in [
            "Bearer s3cret-t0keN",
            "Bearer s3cret-t0ken2",
            "Basic s3cret-t0ken",
            "Bearer",
        ] {
            assert_eq!(
                get(path, Some(wrong)).await.unwrap().status(),
                401,
                "{path} {wrong}"
            );
        }
        let r = get(path, Some("Bearer s3cret-t0ken")).await.unwrap();
        assert_eq!(r.status(), 200, "{path} with the token");
    }
    // Task-changing endpoints are refused before they run.
    for path in [
        "/dcm4chee-arc/ctrl/reload",
        &format!("/dcm4chee-arc/aets/{AET}/rs/studies/1.2.3/export/STOWRSD"),
        "/dcm4chee-arc/monitor/export/1/cancel",
    ] {
        let r = http.post(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(r.status(), 401, "{path}");
    }
    assert!(
        get("/dcm4chee-arc/monitor/export", Some("Bearer s3cret-t0ken"))
            .await
            .unwrap()
            .json::<Vec<serde_json::Value>>()
            .await
            .unwrap()
            .is_empty(),
        "nothing was queued"
    );
    // Liveness never needs the token.
    assert_eq!(
        get("/dcm4chee-arc/health/live", None)
            .await
            .unwrap()
            .status(),
        200
    );
    let _ = tx.send(());
    run.await.unwrap().unwrap();
}

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_stow-exporter"))
}

#[test]
fn serve_off_loopback_without_a_token_refuses_to_start() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let out = bin()
        .env("STOW_EXPORTER_DICOM_LISTEN", "none")
        .args(["serve", "--config"])
        .arg(tmp.path().join("no-such-config"))
        .arg("--data")
        .arg(&data)
        .args(["--listen", "0.0.0.0:0"])
        .env_remove("STOW_EXPORTER_API_TOKEN")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("0.0.0.0:0 is not a loopback address")
            && stderr.contains("--api-token-file"),
        "{stderr}"
    );
    // Refused before the configuration was read or anything was made.
    assert!(!stderr.contains("no-such-config"), "{stderr}");
    assert!(!data.exists());

    // An empty token file is an error, not "no token".
    let f = tmp.path().join("token");
    std::fs::write(&f, "\n").unwrap();
    let out = bin()
        .env("STOW_EXPORTER_DICOM_LISTEN", "none")
        .args(["serve", "--listen", "0.0.0.0:0", "--api-token-file"])
        .arg(&f)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("empty"));
}

// ---------------------------------------------------------------------------

fn serve(cfg: &Path, data: &Path, port: u16, log: &Path, extra: &[&str]) -> Child {
    bin()
        .args(extra)
        .env("STOW_EXPORTER_DICOM_LISTEN", "none")
        .args(["serve", "--config"])
        .arg(cfg)
        .arg("--data")
        .arg(data)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--shutdown-timeout", "1"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

fn task_status(data: &Path, id: &str) -> String {
    let c = rusqlite::Connection::open(data.join("queue.sqlite")).unwrap();
    c.query_row(
        "SELECT status FROM task WHERE pk = ?1",
        [id.parse::<i64>().unwrap()],
        |r| r.get(0),
    )
    .unwrap()
}

#[tokio::test]
async fn sigterm_stops_at_the_deadline_and_the_task_resumes_after_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let rcv = Receiver::start(&tmp.path().join("received"), Duration::from_millis(50)).await;
    let cfg = write_config(tmp.path(), rcv.addr.port(), "");
    let data = tmp.path().join("data");
    let (study_uid, files) = study(&tmp.path().join("src"), 100, 32);
    import(&data, &files).await;

    let port = free_port();
    let base = format!("http://127.0.0.1:{port}/dcm4chee-arc");
    let mut child = serve(&cfg, &data, port, &tmp.path().join("serve1.log"), &[]);
    wait_up(port, Duration::from_secs(20)).await;
    let http = reqwest::Client::new();
    let r = http
        .post(format!(
            "{base}/aets/{AET}/rs/studies/{study_uid}/export/STOWRSD"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let id = r.json::<serde_json::Value>().await.unwrap()["taskID"]
        .as_str()
        .unwrap()
        .to_string();
    let start = Instant::now();
    while rcv.stored().len() < 10 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "export did not start"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let st = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let term = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            term.elapsed() < Duration::from_secs(10),
            "serve did not stop within the deadline"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let took = term.elapsed();
    let log = std::fs::read_to_string(tmp.path().join("serve1.log")).unwrap();
    assert!(status.success(), "exit 0 on SIGTERM: {status:?}\n{log}");
    // One second of deadline, then only the request in flight (50 ms).
    assert!(
        took < Duration::from_secs(3),
        "stopped after {took:?}\n{log}"
    );
    assert!(
        took >= Duration::from_millis(900),
        "stopped after {took:?}: before the deadline?"
    );
    let before = rcv.stored().len();
    assert!(before < 100, "stopped mid-export ({before} of 100 arrived)");
    assert!(log.contains("shutdown deadline reached"), "{log}");
    // Back in the queue, neither IN PROCESS nor CANCELED nor FAILED.
    assert_eq!(task_status(&data, &id), "SCHEDULED");
    assert_eq!(
        rcv.seen().len(),
        before,
        "every request that went out was answered and stored"
    );

    // The second run logs JSON lines, as a log shipper wants them.
    let mut child = serve(
        &cfg,
        &data,
        port,
        &tmp.path().join("serve2.log"),
        &["--log-format", "json"],
    );
    wait_up(port, Duration::from_secs(20)).await;
    let in_process = http
        .get(format!("{base}/monitor/export?status=IN%20PROCESS"))
        .send()
        .await
        .unwrap()
        .json::<Vec<serde_json::Value>>()
        .await
        .unwrap();
    assert!(
        in_process.iter().all(|t| t["taskID"] == id.as_str()),
        "only the resumed task may run: {in_process:?}"
    );
    let done = wait_done(&http, &base, &id, Duration::from_secs(60)).await;
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(done["status"], "COMPLETED", "{done}");
    assert_eq!(done["completed"], 100, "{done}");
    assert_arrived(&rcv, &files);
    // Resumed, not restarted: what arrived before was not sent again.
    assert_eq!(rcv.seen().len(), 100, "one request per instance in all");

    let log = std::fs::read_to_string(tmp.path().join("serve2.log")).unwrap();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect();
    assert!(
        lines
            .iter()
            .all(|l| l["level"].is_string() && l["timestamp"].is_string()),
        "{log}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l["fields"]["message"] == "control API listening"),
        "{log}"
    );
}

#[tokio::test]
async fn bound_off_loopback_every_unauthenticated_call_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = write_config(tmp.path(), free_port(), "");
    let token = tmp.path().join("token");
    std::fs::write(&token, "off-l00pback-token\n").unwrap();
    let port = free_port();
    // Listening on every interface; the test itself talks over loopback only.
    let _serve = KillOnDrop(
        bin()
            .env("STOW_EXPORTER_DICOM_LISTEN", "none")
            .args(["serve", "--config"])
            .arg(&cfg)
            .arg("--data")
            .arg(tmp.path().join("data"))
            .args(["--listen", &format!("0.0.0.0:{port}")])
            .arg("--api-token-file")
            .arg(&token)
            .env_remove("STOW_EXPORTER_API_TOKEN")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_up(port, Duration::from_secs(20)).await;
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    for (method, path) in stow_exporter::api::routes() {
        let path = path
            .replace("{AET}", AET)
            .replace("{ExporterID}", "STOWRSD")
            .replace("{taskID}", "1")
            .replace("{StudyInstanceUID}", "1.2.3")
            .replace("{SeriesInstanceUID}", "1.2.3.4")
            .replace("{SOPInstanceUID}", "1.2.3.4.5");
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let r = http
            .request(method.clone(), format!("{base}{path}"))
            .send()
            .await
            .unwrap();
        let open = path == "/dcm4chee-arc/health/live" || path.starts_with("/dcm4chee-arc/ui2");
        if open {
            assert_ne!(r.status(), 401, "{method} {path} needs no token");
        } else {
            assert_eq!(r.status(), 401, "{method} {path} without the token");
        }
    }
    let r = http
        .get(format!("{base}/dcm4chee-arc/ctrl/status"))
        .bearer_auth("off-l00pback-token")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "with the token");
}
