//! Faults around task delivery through RabbitMQ (`--queue amqp://...`):
//! a private broker node (scripts/rabbitmq.sh) stopped and started again in
//! the middle of 200 tasks, and a real `serve` killed with SIGKILL in the
//! middle of a task on the broker at 127.0.0.1:5672 (STOW_TEST_AMQP_URL
//! overrides it). Each test uses a queue of its own and deletes it at the
//! end; everything started here is stopped by its PID.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::amqp::*;
use common::*;
use serde_json::Value;
use stow_exporter::config::ConfigSource;

fn free_ports<const N: usize>() -> [u16; N] {
    // Held together, so that the N ports differ; none of RabbitMQ's defaults.
    let mut held = Vec::new();
    while held.len() < N {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let p = l.local_addr().unwrap().port();
        if ![5672, 4369, 4370, 25672].contains(&p) {
            held.push(l);
        }
    }
    std::array::from_fn(|i| held[i].local_addr().unwrap().port())
}

/// A private RabbitMQ node (scripts/rabbitmq.sh) with all its state in
/// `dir`; stopped by its recorded PIDs when dropped.
struct Broker {
    dir: PathBuf,
    port: u16,
    epmd_port: u16,
    dist_port: u16,
}

impl Broker {
    fn script() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/rabbitmq.sh")
    }

    async fn start(dir: &Path) -> Broker {
        let [port, epmd_port, dist_port] = free_ports::<3>();
        let b = Broker {
            dir: dir.to_path_buf(),
            port,
            epmd_port,
            dist_port,
        };
        b.up().await;
        b
    }

    fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    /// Starts the node from `dir` (again): returns once it takes AMQP
    /// connections.
    async fn up(&self) {
        let out = tokio::process::Command::new(Self::script())
            .arg("start")
            .arg(&self.dir)
            .args([
                self.port.to_string(),
                self.epmd_port.to_string(),
                self.dist_port.to_string(),
            ])
            .output()
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "rabbitmq.sh start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Stops the node and its epmd by their PIDs; returns once the AMQP
    /// port no longer answers.
    async fn down(&self) {
        let out = tokio::process::Command::new(Self::script())
            .arg("stop")
            .arg(&self.dir)
            .output()
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "rabbitmq.sh stop: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let start = Instant::now();
        while tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .is_ok()
        {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "the broker still answers after stop"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = Command::new(Self::script())
            .arg("stop")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn broker_restart_during_200_tasks_loses_nothing() {
    const N: usize = 200;
    let tmp = tempfile::tempdir().unwrap();
    let broker = Broker::start(&tmp.path().join("rabbitmq")).await;
    let q = TestQueue::new();
    let rcv = Receiver::start(&tmp.path().join("received"), Duration::from_millis(5)).await;
    let cfg = write_config(
        tmp.path(),
        rcv.addr.port(),
        &q.ldif("dcmMaxTasksParallel: 2\n"),
    );
    let mut studies = BTreeSet::new();
    let mut files = Vec::new();
    for i in 0..N {
        let (uid, f) = study(&tmp.path().join(format!("src{i}")), 1, 8);
        studies.insert(uid);
        files.extend(f);
    }
    assert_eq!(studies.len(), N);
    let data = tmp.path().join("data");
    import(&data, &files).await;
    let (conn, ch) = client(&broker.url()).await;
    let mut settings = Service::settings(ConfigSource::Ldif(cfg.clone()), &data);
    settings.queue_url = Some(broker.url());
    let svc = Service::start_with_settings(settings).await;

    for (i, s) in studies.iter().enumerate() {
        let body = format!(
            r#"{{"ExporterID":"{}","StudyInstanceUID":"{s}","batchID":"restart"}}"#,
            q.exporter
        );
        publish(&ch, &q.name, body.as_bytes(), Some(&format!("restart-{i}"))).await;
    }
    drop(ch);
    drop(conn);
    let started = Instant::now();
    while rcv.stored().len() < 30 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the export did not start: {} arrived",
            rcv.stored().len()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let at_stop = rcv.stored().len();
    broker.down().await;
    let while_down = rcv.stored().len();
    eprintln!(
        "broker stopped at {at_stop} of {N} studies arrived, down at {while_down} ({:.1} s)",
        started.elapsed().as_secs_f64()
    );
    assert!(
        while_down < N,
        "the broker went down only after every study arrived"
    );
    // Not ready while the broker is away, naming it (password masked).
    let ready = svc.http.get(svc.url("/health/ready")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    let ready: Value = ready.json().await.unwrap();
    assert_eq!(ready["checks"]["queue"]["status"], "DOWN", "{ready}");
    let why = ready["checks"]["queue"]["error"]
        .as_str()
        .unwrap_or_default();
    assert!(
        why.contains("message broker amqp://guest:****@127.0.0.1"),
        "{ready}"
    );
    broker.up().await;
    let ready = svc.http.get(svc.url("/health/ready")).send().await.unwrap();
    assert_eq!(ready.status(), 200, "ready again once the broker is back");
    eprintln!(
        "broker up again at {} of {N} ({:.1} s)",
        rcv.stored().len(),
        started.elapsed().as_secs_f64()
    );

    // The service reconnects by itself and the rest arrives.
    let restarted = Instant::now();
    while rcv.stored().len() < N {
        assert!(
            restarted.elapsed() < Duration::from_secs(120),
            "{} of {N} studies arrived within 120 s after the broker restart \
             (the service did not resume delivery)",
            rcv.stored().len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "all {N} arrived {:.1} s after the restart; {} requests",
        restarted.elapsed().as_secs_f64(),
        rcv.seen().len()
    );
    assert_arrived(&rcv, &files);

    // Every task record ends COMPLETED, one record per message.
    let l = loop {
        let l = svc.list("batchID=restart").await;
        if l.len() >= N && l.iter().all(|t| t["status"] == "COMPLETED") {
            break l;
        }
        assert!(
            restarted.elapsed() < Duration::from_secs(120),
            "not every task COMPLETED: {:?}",
            l.iter()
                .filter(|t| t["status"] != "COMPLETED")
                .map(|t| (t["taskID"].clone(), t["status"].clone()))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(l.len(), N, "one record per message");
    let ran: BTreeSet<String> = l
        .iter()
        .map(|t| t["StudyInstanceUID"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ran, studies, "every study has its task");
    assert!(l.iter().all(|t| t["completed"] == 1), "{l:?}");
    // Delivered twice after the restart is allowed, lost is not.
    assert!(rcv.seen().len() >= N);

    svc.stop().await;
    let (_conn, ch) = client(&broker.url()).await;
    q.delete(&ch).await;
    drop(broker);
}

/// A real `serve` process on `queue`, killed (SIGKILL) when dropped.
fn start_serve(cfg: &Path, data: &Path, port: u16, queue: &str) -> KillOnDrop {
    KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_stow-exporter"))
            .env("STOW_EXPORTER_DICOM_LISTEN", "none")
            .args(["serve", "--config"])
            .arg(cfg)
            .arg("--data")
            .arg(data)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--queue", queue])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_task_is_redelivered_and_completes() {
    let tmp = tempfile::tempdir().unwrap();
    let url = amqp_url();
    let q = TestQueue::new();
    // Slow receiver, so the kill lands in the middle of the task.
    let rcv = Receiver::start(&tmp.path().join("received"), Duration::from_millis(100)).await;
    let cfg = write_config(tmp.path(), rcv.addr.port(), &q.ldif(""));
    let (study_uid, files) = study(&tmp.path().join("src"), 20, 64);
    let data = tmp.path().join("data");
    import(&data, &files).await;
    let (_conn, ch) = client(&url).await;

    let port = free_ports::<1>()[0];
    let mut first = start_serve(&cfg, &data, port, &url);
    wait_up(port, Duration::from_secs(30)).await;
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_stow-exporter"))
        .args(["export", "--config"])
        .arg(&cfg)
        .arg("--data")
        .arg(&data)
        .args(["--exporter", &q.exporter, "--study", &study_uid])
        .args(["--queue", &url])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let task: Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = task["taskID"].as_str().unwrap().to_string();

    let started = Instant::now();
    while rcv.stored().len() < 5 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the export did not start"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    first.kill();
    let before = rcv.stored().len();
    assert!(before < 20, "killed mid-task ({before} of 20 arrived)");

    let _second = start_serve(&cfg, &data, port, &url);
    wait_up(port, Duration::from_secs(30)).await;
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}/dcm4chee-arc");
    let done = wait_done(&http, &base, &id, Duration::from_secs(120)).await;
    eprintln!(
        "killed at {before} of 20; COMPLETED {:.1} s after the export began; {} requests",
        started.elapsed().as_secs_f64(),
        rcv.seen().len()
    );
    assert_eq!(done["status"], "COMPLETED", "{done}");
    assert_eq!(done["completed"], 20, "{done}");
    assert_eq!(rcv.stored().len(), 20);
    assert_arrived(&rcv, &files);
    let instances: Vec<Value> = http
        .get(format!("{base}/monitor/export/{id}/instances"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(instances.len(), 20, "{instances:?}");
    // One record: the redelivery found the one the export command made.
    let l: Vec<Value> = http
        .get(format!("{base}/monitor/export?ExporterID={}", q.exporter))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(l.len(), 1, "{l:?}");
    drop(_second);
    q.delete(&ch).await;
}
