//! Both HTTP listeners (the control API and the STOW-RS receiver, in-process
//! and as `stowrsd`) against slow, idle and too many clients, and the
//! control API against other web pages and DNS rebinding: the real service
//! on loopback, raw TCP clients where a well-behaved HTTP client cannot
//! misbehave on purpose.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::Value;
use stow_exporter::app::Application;
use stow_exporter::config::{ConfigSource, Secret};
use stow_exporter::http_server::ListenerLimits;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Upper bound of every wait on the service: far above the 1 s limits the
/// tests set, far below the "forever" of an unprotected listener.
const BOUND: Duration = Duration::from_secs(20);

const STOW_EXPORTER_DN: &str = "dcmExporterID=StowExporter,dicomDeviceName=dcm4chee-arc,cn=Devices,cn=DICOM Configuration,dc=dcm4che,dc=org";

fn limits(header: u64, idle: u64, max_connections: usize) -> ListenerLimits {
    ListenerLimits {
        header_timeout: Duration::from_secs(header),
        idle_timeout: Duration::from_secs(idle),
        max_connections,
    }
}

/// The service with its in-process receiver on port 0; `adjust` sets the
/// listener limits, allowed hosts or token. Returns it and the receiver's
/// address.
async fn start(
    dir: &Path,
    extra_ldif: &str,
    adjust: impl FnOnce(Application) -> Application,
) -> (Service, SocketAddr) {
    let cfg = write_config(dir, 1, extra_ldif);
    let data = dir.join("data");
    let mut settings = Service::settings(ConfigSource::Ldif(cfg), &data);
    settings.stowrsd_dir = Some(dir.join("received"));
    settings.stowrsd_bind = Some("127.0.0.1:0".into());
    let app = adjust(Application::build(settings).await.unwrap());
    let receiver = app.stowrsd_addr().unwrap();
    (Service::start_app(app, &data), receiver)
}

/// `stow-exporter stowrsd --ignore` with `args`, once it accepts connections.
async fn stowrsd_binary(args: &[&str]) -> (KillOnDrop, SocketAddr) {
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_stow-exporter"))
        .args(["stowrsd", "--ignore", "--bind", &addr.to_string()])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let child = KillOnDrop(child);
    eventually(BOUND, || async {
        TcpStream::connect(addr)
            .await
            .map(drop)
            .map_err(|e| format!("stowrsd on {addr}: {e}"))
    })
    .await;
    (child, addr)
}

async fn connect(addr: SocketAddr) -> TcpStream {
    TcpStream::connect(addr).await.unwrap()
}

/// Reads until the service closes the connection (end of stream or
/// reset); fails when it is still open after [`BOUND`].
async fn until_closed(c: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let read = tokio::time::timeout(BOUND, async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match c.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    let text = String::from_utf8_lossy(&out).into_owned();
    assert!(
        read.is_ok(),
        "the connection is still open after {BOUND:?}; received {text:?}"
    );
    text
}

/// Reads one response (head, and a body of its Content-Length) from a
/// kept-alive connection: its status.
async fn read_response(c: &mut TcpStream) -> u16 {
    tokio::time::timeout(BOUND, async {
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let b = c.read_u8().await.expect("a response head");
            head.push(b);
        }
        let head = String::from_utf8(head).unwrap();
        let length = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse::<usize>().unwrap())
            })
            .unwrap_or(0);
        let mut body = vec![0u8; length];
        c.read_exact(&mut body).await.unwrap();
        head[9..12].parse().unwrap()
    })
    .await
    .unwrap_or_else(|_| panic!("no response within {BOUND:?}"))
}

/// Connections waiting in the kernel's accept queue of the listener on
/// 127.0.0.1:`port` (Linux: the receive queue of a LISTEN socket in
/// /proc/net/tcp): clients the service has not accepted.
fn accept_queue(port: u16) -> Result<u64, String> {
    let text = std::fs::read_to_string("/proc/net/tcp").map_err(|e| e.to_string())?;
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let local_port = f[1].rsplit(':').next().unwrap();
        if f[3] == "0A" && u16::from_str_radix(local_port, 16) == Ok(port) {
            let rx = f[4].split(':').nth(1).unwrap();
            return Ok(u64::from_str_radix(rx, 16).unwrap());
        }
    }
    Err(format!("no listener on port {port}"))
}

const LIVE: &[u8] = b"GET /dcm4chee-arc/health/live HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
const STOW_OPTIONS: &[u8] = b"OPTIONS /stowrs/studies HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";

// ---------------------------------------------------------------------------
// Slow and idle clients.

/// A client that starts a request's head and never finishes it.
async fn assert_half_head_gets_408(addr: SocketAddr, path: &str) {
    let mut c = connect(addr).await;
    let half = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Trickle: a");
    c.write_all(half.as_bytes()).await.unwrap();
    let got = until_closed(&mut c).await;
    assert!(got.starts_with("HTTP/1.1 408"), "{addr}: {got:?}");
    assert!(got.contains("--header-timeout"), "{addr}: {got:?}");
}

#[tokio::test]
async fn a_half_sent_head_gets_408_after_the_header_timeout_on_both_listeners() {
    let tmp = tempfile::tempdir().unwrap();
    let (svc, receiver) = start(tmp.path(), "", |a| {
        a.with_listener_limits(limits(1, 60, 100))
    })
    .await;
    assert_half_head_gets_408(svc.addr, "/dcm4chee-arc/ctrl/status").await;
    assert_half_head_gets_408(receiver, "/stowrs/studies").await;
    // The binary's option does the same.
    let (_bin, bin_addr) = stowrsd_binary(&["--header-timeout", "1"]).await;
    assert_half_head_gets_408(bin_addr, "/stowrs/studies").await;
    // Both listeners still serve.
    assert_eq!(svc.call(reqwest::Method::GET, "/ctrl/status").await, 200);
    let mut c = connect(receiver).await;
    c.write_all(STOW_OPTIONS).await.unwrap();
    assert_eq!(read_response(&mut c).await, 204);
    svc.stop().await;
}

/// A kept-alive connection with nothing more to ask is closed, quietly.
async fn assert_idle_connection_closed(addr: SocketAddr, request: &[u8], status: u16) {
    let mut c = connect(addr).await;
    c.write_all(request).await.unwrap();
    assert_eq!(read_response(&mut c).await, status);
    let rest = until_closed(&mut c).await;
    assert_eq!(rest, "", "{addr}: nothing more after the response");
}

#[tokio::test]
async fn an_idle_kept_alive_connection_is_closed_after_the_idle_timeout() {
    let tmp = tempfile::tempdir().unwrap();
    // The header timeout is far above BOUND: only the idle timeout can
    // close these connections in time.
    let (svc, receiver) = start(tmp.path(), "", |a| {
        a.with_listener_limits(limits(600, 1, 100))
    })
    .await;
    assert_idle_connection_closed(svc.addr, LIVE, 200).await;
    assert_idle_connection_closed(receiver, STOW_OPTIONS, 204).await;
    let (_bin, bin_addr) =
        stowrsd_binary(&["--idle-timeout", "1", "--header-timeout", "600"]).await;
    assert_idle_connection_closed(bin_addr, STOW_OPTIONS, 204).await;
    svc.stop().await;
}

#[tokio::test]
async fn a_request_body_that_stalls_ends_the_request() {
    let tmp = tempfile::tempdir().unwrap();
    let (svc, receiver) = start(tmp.path(), "", |a| {
        a.with_listener_limits(limits(600, 1, 100))
    })
    .await;
    let mut c = connect(receiver).await;
    // Headers promise a megabyte; a part begins, then nothing more comes.
    let mut req = b"POST /stowrs/studies HTTP/1.1\r\nHost: 127.0.0.1\r\n\
        Content-Type: multipart/related; type=\"application/dicom\"; boundary=XyZ\r\n\
        Content-Length: 1000000\r\n\r\n\
        --XyZ\r\nContent-Type: application/dicom\r\n\r\n"
        .to_vec();
    req.extend_from_slice(&[0u8; 300]);
    c.write_all(&req).await.unwrap();
    let got = until_closed(&mut c).await;
    assert!(got.starts_with("HTTP/1.1 400"), "{got:?}");
    assert!(
        got.contains("stalled") && got.contains("--idle-timeout"),
        "{got:?}"
    );
    let received = tmp.path().join("received");
    let left = if received.exists() {
        walk(&received)
    } else {
        Vec::new()
    };
    assert!(left.is_empty(), "nothing stored, nothing left: {left:?}");
    svc.stop().await;
}

#[tokio::test]
async fn a_client_that_does_not_read_its_responses_is_disconnected() {
    let tmp = tempfile::tempdir().unwrap();
    // One connection at a time: the second client is served only once the
    // first one's connection has been dropped by the service.
    let (svc, _) = start(tmp.path(), "", |a| {
        a.with_listener_limits(limits(600, 1, 1))
    })
    .await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut greedy = socket.connect(svc.addr).await.unwrap();
    // 300 pipelined requests for the 34 KB script: about 10 MB of replies,
    // far more than the sockets buffer, never read.
    const ASKED: usize = 300;
    let one = b"GET /dcm4chee-arc/ui2/app.js HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    greedy.write_all(&one.repeat(ASKED)).await.unwrap();

    let http = reqwest::Client::builder().timeout(BOUND).build().unwrap();
    let live = http
        .get(format!("http://{}/dcm4chee-arc/health/live", svc.addr))
        .send()
        .await
        .expect("served once the reader that stalled was dropped");
    assert_eq!(live.status(), 200);
    let got = until_closed(&mut greedy).await;
    let answered = got.matches("HTTP/1.1 200 OK").count();
    assert!(
        answered < ASKED,
        "all {ASKED} responses delivered: the stalled reader was not cut"
    );
    svc.stop().await;
}

/// With a limit of 2: a third client waits unaccepted (in the kernel's
/// queue) while the two are served, is served as soon as one closes, and
/// after a flood of connections the listener serves as before.
async fn assert_connection_limit(addr: SocketAddr, request: &[u8], status: u16) {
    let port = addr.port();
    let mut c1 = connect(addr).await;
    let mut c2 = connect(addr).await;
    for c in [&mut c1, &mut c2] {
        c.write_all(request).await.unwrap();
        assert_eq!(read_response(c).await, status);
    }
    let mut c3 = connect(addr).await;
    c3.write_all(request).await.unwrap();
    eventually(BOUND, || async {
        match accept_queue(port)? {
            1 => Ok(()),
            n => Err(format!("{n} connections waiting to be accepted, not 1")),
        }
    })
    .await;
    // The two keep being served; the third still waits, unanswered.
    c1.write_all(request).await.unwrap();
    assert_eq!(read_response(&mut c1).await, status);
    assert_eq!(accept_queue(port), Ok(1));
    let mut probe = [0u8; 1];
    assert!(
        matches!(c3.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the third connection got an answer before one closed"
    );
    drop(c1);
    assert_eq!(read_response(&mut c3).await, status);

    // A flood: every connection beyond the limit waits in the queue...
    let mut flood = Vec::new();
    for _ in 0..50 {
        flood.push(connect(addr).await);
    }
    eventually(BOUND, || async {
        match accept_queue(port)? {
            50 => Ok(()),
            n => Err(format!("{n} connections waiting, not the 50 of the flood")),
        }
    })
    .await;
    // ...and once it ends, the listener serves as before.
    drop(flood);
    drop(c2);
    drop(c3);
    for _ in 0..5 {
        let mut c = connect(addr).await;
        c.write_all(request).await.unwrap();
        assert_eq!(read_response(&mut c).await, status);
    }
}

#[tokio::test]
async fn with_max_connections_the_next_client_waits_until_one_closes() {
    let tmp = tempfile::tempdir().unwrap();
    let (svc, receiver) = start(tmp.path(), "", |a| {
        a.with_listener_limits(limits(600, 600, 2))
    })
    .await;
    assert_connection_limit(svc.addr, LIVE, 200).await;
    assert_connection_limit(receiver, STOW_OPTIONS, 204).await;
    let (_bin, bin_addr) = stowrsd_binary(&["--max-connections", "2"]).await;
    assert_connection_limit(bin_addr, STOW_OPTIONS, 204).await;
    svc.stop().await;
}

// ---------------------------------------------------------------------------
// Other web pages and DNS rebinding.

/// A request to the control API with extra headers; status and JSON body.
async fn request(
    svc: &Service,
    method: reqwest::Method,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, Value) {
    let mut r = svc.http.request(method, svc.url(path));
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    let r = r.send().await.unwrap();
    let status = r.status().as_u16();
    let body = r.bytes().await.unwrap();
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

fn error_message(v: &Value) -> &str {
    v["errorMessage"].as_str().unwrap_or("")
}

/// A task of StowExporter, whose window is closed: it stays SCHEDULED.
async fn held_task(svc: &Service) -> String {
    let t = svc.export_study("StowExporter", "1.2.3.4").await;
    t["taskID"].as_str().unwrap().to_string()
}

const EVIL_ORIGIN: &str = "https://evil.example";

#[tokio::test]
async fn another_web_page_cannot_change_anything_without_a_token() {
    let tmp = tempfile::tempdir().unwrap();
    let (svc, _) = start(tmp.path(), &closed_window(STOW_EXPORTER_DN), |a| a).await;
    let id = held_task(&svc).await;
    let before = svc.task(&id).await;
    let tasks_before = svc.list("").await.len();
    let evil = [("origin", EVIL_ORIGIN)];
    let post = reqwest::Method::POST;
    for (method, path) in [
        (post.clone(), format!("/monitor/export/{id}/cancel")),
        (post.clone(), format!("/monitor/export/{id}/reschedule")),
        (post.clone(), "/monitor/export/reschedule".to_string()),
        (post.clone(), "/monitor/export/cancel".to_string()),
        (reqwest::Method::DELETE, format!("/monitor/export/{id}")),
        (reqwest::Method::DELETE, "/monitor/export".to_string()),
        (
            post.clone(),
            format!("/aets/{AET}/rs/studies/1.2.3.4/export/STOWRSD"),
        ),
        (post.clone(), "/ctrl/reload".to_string()),
    ] {
        let (st, v) = request(&svc, method.clone(), &path, &evil).await;
        assert_eq!(st, 403, "{method} {path} from another origin: {v}");
        let msg = error_message(&v);
        assert!(
            msg.contains("cross-site") && msg.contains(EVIL_ORIGIN),
            "{method} {path}: {msg}"
        );
    }
    // Sandboxed frames and file pages send "null"; a browser that sends no
    // Origin still says where the request came from.
    for headers in [
        vec![("origin", "null")],
        vec![("sec-fetch-site", "cross-site")],
        vec![("sec-fetch-site", "same-site")],
        // Same host, another port: another origin.
        vec![("origin", "http://127.0.0.1:1")],
    ] {
        let path = format!("/monitor/export/{id}/cancel");
        let (st, v) = request(&svc, post.clone(), &path, &headers).await;
        assert_eq!(st, 403, "{headers:?}: {v}");
    }
    assert_eq!(svc.task(&id).await, before, "the task is unchanged");
    assert_eq!(svc.list("").await.len(), tasks_before, "no task added");

    // A reload refused changes nothing: an exporter added to the
    // configuration appears only with a reload the service accepts.
    let extra = std::fs::read_to_string(tmp.path().join("ldif/70-exporters.ldif"))
        .unwrap()
        .replace("StowExporter", "AddedExporter")
        .replace("dcmExporterID=STOWRSD", "dcmExporterID=AddedToo")
        .replace("dcmExporterID: STOWRSD", "dcmExporterID: AddedToo");
    std::fs::write(tmp.path().join("ldif/80-added.ldif"), extra).unwrap();
    let ids = |v: Vec<Value>| -> Vec<String> {
        v.iter()
            .map(|e| e["id"].as_str().unwrap().to_string())
            .collect()
    };
    let (st, _) = request(&svc, post.clone(), "/ctrl/reload", &evil).await;
    assert_eq!(st, 403);
    assert!(!ids(svc.get_json("/export").await).contains(&"AddedExporter".to_string()));
    // The same reload without an Origin (curl, the CLI) is taken.
    let (st, v) = request(&svc, post.clone(), "/ctrl/reload", &[]).await;
    assert_eq!(st, 204, "{v}");
    assert!(ids(svc.get_json("/export").await).contains(&"AddedExporter".to_string()));
    svc.stop().await;
}

#[tokio::test]
async fn only_the_own_page_and_clients_without_origin_may_change_tasks() {
    let tmp = tempfile::tempdir().unwrap();
    let (svc, _) = start(tmp.path(), &closed_window(STOW_EXPORTER_DN), |a| a).await;
    let port = svc.addr.port();
    let post = reqwest::Method::POST;
    let cancel = |id: &str| format!("/monitor/export/{id}/cancel");
    let own = format!("http://127.0.0.1:{port}");
    let host = format!("localhost:{port}");
    let origin = format!("http://localhost:{port}");
    for (who, headers) in [
        // curl-like: no Origin.
        ("a client without Origin", vec![]),
        // The page, as the browser sends its requests.
        (
            "the page",
            vec![("origin", own.as_str()), ("sec-fetch-site", "same-origin")],
        ),
        // The page reached as localhost.
        (
            "the page as localhost",
            vec![("host", host.as_str()), ("origin", origin.as_str())],
        ),
    ] {
        let id = held_task(&svc).await;
        // The same request from another page first: refused, no change.
        let mut foreign = headers.clone();
        foreign.retain(|(k, _)| *k != "origin" && *k != "sec-fetch-site");
        foreign.push(("origin", EVIL_ORIGIN));
        let (st, v) = request(&svc, post.clone(), &cancel(&id), &foreign).await;
        assert_eq!(st, 403, "{who}, but from another page: {v}");
        assert_eq!(svc.task(&id).await["status"], "SCHEDULED", "{who}");
        let (st, v) = request(&svc, post.clone(), &cancel(&id), &headers).await;
        assert_eq!(st, 204, "{who}: {v}");
        assert_eq!(svc.task(&id).await["status"], "CANCELED", "{who}");
    }
    svc.stop().await;
}

#[tokio::test]
async fn a_foreign_host_is_refused_without_a_token_but_liveness_answers() {
    let tmp = tempfile::tempdir().unwrap();
    let (svc, _) = start(tmp.path(), &closed_window(STOW_EXPORTER_DN), |a| a).await;
    let id = held_task(&svc).await;
    let before = svc.task(&id).await;
    // DNS rebinding: the attacker's name resolves to 127.0.0.1, so the
    // browser calls it same-origin and sends the attacker's Host.
    let rebound = [("host", "evil.example:8080")];
    let get = reqwest::Method::GET;
    for (method, path) in [
        (
            reqwest::Method::POST,
            format!("/monitor/export/{id}/cancel"),
        ),
        (reqwest::Method::DELETE, format!("/monitor/export/{id}")),
        (reqwest::Method::POST, "/ctrl/reload".to_string()),
        (get.clone(), "/monitor/export".to_string()),
        (get.clone(), format!("/monitor/export/{id}")),
        (get.clone(), "/ui2/".to_string()),
    ] {
        let (st, v) = request(&svc, method.clone(), &path, &rebound).await;
        assert_eq!(st, 403, "{method} {path}: {v}");
        let msg = error_message(&v);
        assert!(
            msg.contains("evil.example:8080") && msg.contains("--allowed-host"),
            "{msg}"
        );
    }
    let r = svc
        .http
        .get(format!("http://{}/metrics", svc.addr))
        .header("host", "evil.example:8080")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "metrics hold task counts too");
    let (st, _) = request(&svc, get.clone(), "/health/live", &rebound).await;
    assert_eq!(st, 200, "liveness answers whatever the Host");
    assert_eq!(svc.task(&id).await, before);
    svc.stop().await;
}

#[tokio::test]
async fn names_given_with_allowed_host_are_served() {
    let tmp = tempfile::tempdir().unwrap();
    let (svc, _) = start(tmp.path(), &closed_window(STOW_EXPORTER_DN), |a| {
        a.with_allowed_hosts(vec!["exporter.example".into()])
    })
    .await;
    let port = svc.addr.port();
    let id = held_task(&svc).await;
    let host = format!("exporter.example:{port}");
    let get = reqwest::Method::GET;
    let (st, v) = request(&svc, get.clone(), "/monitor/export", &[("host", &host)]).await;
    assert_eq!(st, 200, "{v}");
    // Behind a reverse proxy that keeps the upstream Host, the page's
    // Origin names the proxy: an allowed name.
    let headers = [("origin", "https://exporter.example")];
    let (st, v) = request(
        &svc,
        reqwest::Method::POST,
        &format!("/monitor/export/{id}/cancel"),
        &headers,
    )
    .await;
    assert_eq!(st, 204, "{v}");
    let (st, _) = request(&svc, get, "/monitor/export", &[("host", "other.example")]).await;
    assert_eq!(st, 403);
    svc.stop().await;
}

#[tokio::test]
async fn serve_takes_allowed_host_and_the_listener_options() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = write_config(tmp.path(), 1, "");
    let port = free_port();
    let run = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_stow-exporter"))
            .env("STOW_EXPORTER_DICOM_LISTEN", "none")
            .args(["serve", "--config"])
            .arg(&cfg)
            .arg("--data")
            .arg(tmp.path().join("data"))
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    // A value that is not a host name stops the start, naming the option.
    let out = run(&["--allowed-host", "http://exporter.example/"])
        .wait_with_output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("--allowed-host") && err.contains("expected a host name"),
        "{err}"
    );

    let _serve = KillOnDrop(run(&[
        "--allowed-host",
        "Exporter.Example",
        "--idle-timeout",
        "1",
        "--header-timeout",
        "600",
    ]));
    wait_up(port, BOUND).await;
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut c = connect(addr).await;
    let req = format!(
        "GET /dcm4chee-arc/monitor/export HTTP/1.1\r\nHost: exporter.example:{port}\r\n\r\n"
    );
    c.write_all(req.as_bytes()).await.unwrap();
    assert_eq!(read_response(&mut c).await, 200);
    assert_eq!(until_closed(&mut c).await, "", "closed when idle");
    let mut c = connect(addr).await;
    c.write_all(b"GET /dcm4chee-arc/monitor/export HTTP/1.1\r\nHost: other.example\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_response(&mut c).await, 403);
}

#[tokio::test]
async fn with_a_token_the_site_checks_give_way_to_it() {
    let tmp = tempfile::tempdir().unwrap();
    let (svc, _) = start(tmp.path(), &closed_window(STOW_EXPORTER_DN), |a| {
        a.with_api_token(Some(Secret::new("s3cret-t0ken")))
    })
    .await;
    let auth = ("authorization", "Bearer s3cret-t0ken");
    let evil = [auth, ("origin", EVIL_ORIGIN), ("host", "evil.example:8080")];
    // With the token (which no other page has), as before.
    let (st, v) = request(&svc, reqwest::Method::GET, "/monitor/export", &evil).await;
    assert_eq!(st, 200, "{v}");
    let path = format!("/aets/{AET}/rs/studies/1.2.3.4/export/StowExporter");
    let (st, v) = request(&svc, reqwest::Method::POST, &path, &evil).await;
    assert_eq!(st, 202, "{v}");
    // Without it: 401 as before, whatever the Origin.
    let (st, _) = request(
        &svc,
        reqwest::Method::POST,
        &path,
        &[("origin", EVIL_ORIGIN)],
    )
    .await;
    assert_eq!(st, 401);
    svc.stop().await;

    // The same request without a token configured is refused.
    let tmp = tempfile::tempdir().unwrap();
    let (svc, _) = start(tmp.path(), &closed_window(STOW_EXPORTER_DN), |a| a).await;
    let (st, _) = request(&svc, reqwest::Method::POST, &path, &evil[1..]).await;
    assert_eq!(st, 403);
    svc.stop().await;
}
