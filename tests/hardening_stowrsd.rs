//! The built-in receiver under hostile or broken senders: limits on parts
//! and bytes, the free-disk reserve, no overwriting of a stored instance,
//! durable acknowledgement, and the token off loopback. Real HTTP over
//! loopback to the real receiver (in-process or the binary), real DICOM
//! files; the senders that misbehave are raw TCP clients written here.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use serde_json::Value;
use stow_exporter::config::Secret;
use stow_exporter::outcome::Retry;
use stow_exporter::stow::response::{Exchange, classify};
use stow_exporter::stowrsd::limits::Limits;
use stow_exporter::stowrsd::{self, StowrsdOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

const BOUNDARY: &str = "hardening-b0undary";
/// Bound on any one exchange with a receiver: never reached when it works.
const EXCHANGE_LIMIT: Duration = Duration::from_secs(60);

/// The real receiver, in-process on 127.0.0.1:0 (or `bind`), stopped when
/// dropped.
struct Rcv {
    addr: SocketAddr,
    dir: PathBuf,
    _stop: oneshot::Sender<()>,
}

impl Rcv {
    async fn start(dir: &Path, opts: StowrsdOptions) -> Rcv {
        std::fs::create_dir_all(dir).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let opts = StowrsdOptions {
            store_dir: Some(dir.to_path_buf()),
            ..opts
        };
        tokio::spawn(stowrsd::serve(listener, opts, async move {
            let _ = rx.await;
        }));
        Rcv {
            addr,
            dir: dir.to_path_buf(),
            _stop: tx,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/stowrs/studies", self.addr.port())
    }

    fn loopback(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.addr.port()))
    }

    fn files(&self) -> Vec<String> {
        names(&self.dir)
    }
}

/// File names in `dir` (temporary `.part` files included), sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// A multipart/related body of `application/dicom` parts.
fn multipart(parts: &[&[u8]]) -> Vec<u8> {
    let mut body = Vec::new();
    for p in parts {
        body.extend_from_slice(
            format!("--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n").as_bytes(),
        );
        body.extend_from_slice(p);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    body
}

/// Real DICOM files of one synthetic study: `count` CT images of `rows`
/// x `rows` 16-bit pixels; (SOP Instance UID, bytes) each.
fn instances(dir: &Path, count: usize, rows: u16) -> Vec<(String, Vec<u8>)> {
    let (_, files) = study(dir, count, rows);
    files
        .iter()
        .map(|f| (sop_uid(f), std::fs::read(f).unwrap()))
        .collect()
}

/// What a raw client read back.
#[derive(Debug)]
struct Reply {
    status: u16,
    /// (lower-cased name, value).
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

/// How the raw client frames the body.
#[derive(Clone, Copy)]
enum Framing {
    /// `Content-Length` with the real length.
    Length,
    /// `Transfer-Encoding: chunked`, 64 KiB chunks.
    Chunked,
}

/// POSTs `body` over a plain TCP connection, as a sender that keeps
/// writing whatever the server does: the body is written by its own task
/// (a server that stops reading makes it fail, which is ignored), while the
/// reply is read until the server closes. `extra` are more header lines.
async fn raw_post(addr: SocketAddr, framing: Framing, extra: &str, body: Vec<u8>) -> Reply {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut rd, mut wr) = stream.into_split();
    let length = match framing {
        Framing::Length => format!("Content-Length: {}\r\n", body.len()),
        Framing::Chunked => "Transfer-Encoding: chunked\r\n".to_string(),
    };
    let head = format!(
        "POST /stowrs/studies HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: multipart/related; type=\"application/dicom\"; boundary={BOUNDARY}\r\n\
         Accept: application/dicom+json\r\n{extra}{length}\r\n"
    );
    let writer = tokio::spawn(async move {
        wr.write_all(head.as_bytes()).await?;
        match framing {
            Framing::Length => wr.write_all(&body).await?,
            Framing::Chunked => {
                for c in body.chunks(64 * 1024) {
                    wr.write_all(format!("{:x}\r\n", c.len()).as_bytes())
                        .await?;
                    wr.write_all(c).await?;
                    wr.write_all(b"\r\n").await?;
                }
                wr.write_all(b"0\r\n\r\n").await?;
            }
        }
        wr.flush().await?;
        Ok::<_, std::io::Error>(wr)
    });
    let mut raw = Vec::new();
    let read = tokio::time::timeout(EXCHANGE_LIMIT, async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => raw.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "no complete reply within {EXCHANGE_LIMIT:?}");
    writer.abort();
    parse_reply(&raw)
}

fn parse_reply(raw: &[u8]) -> Reply {
    let end = memchr::memmem::find(raw, b"\r\n\r\n").unwrap_or_else(|| {
        panic!(
            "no HTTP reply head in {:?}",
            String::from_utf8_lossy(&raw[..raw.len().min(300)])
        )
    });
    let head = String::from_utf8_lossy(&raw[..end]);
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line in {head:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = raw[end + 4..].to_vec();
    if let Some(n) = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok())
    {
        assert!(
            body.len() >= n,
            "reply body cut short: {} of {n}",
            body.len()
        );
        body.truncate(n);
    }
    Reply {
        status,
        headers,
        body,
    }
}

/// The SOP Instance UIDs of a DICOM JSON sequence.
fn uids(json: &Value, tag: &str) -> Vec<String> {
    json[tag]["Value"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|i| i["00081155"]["Value"][0].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The FailureReason of each FailedSOPSequence item.
fn reasons(json: &Value) -> Vec<u64> {
    json["00081198"]["Value"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|i| i["00081197"]["Value"][0].as_u64().unwrap())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn a_flood_of_empty_parts_is_refused_with_a_small_reply_and_no_files() {
    let tmp = tempfile::tempdir().unwrap();
    // The defaults: no option protects this receiver but the built-in ones.
    let rcv = Rcv::start(&tmp.path().join("store"), StowrsdOptions::default()).await;
    // Two million empty parts in 18 MB (the request that made a reply of
    // gigabytes before).
    let parts = 2_000_000;
    let mut body = Vec::with_capacity(9 * parts + 32);
    body.extend_from_slice(format!("--{BOUNDARY}\r\n\r\n").as_bytes());
    for _ in 1..parts {
        body.extend_from_slice(format!("\r\n--{BOUNDARY}\r\n\r\n").as_bytes());
    }
    body.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
    let reply = raw_post(rcv.loopback(), Framing::Length, "", body).await;
    assert_eq!(reply.status, 413, "{}", reply.text());
    assert!(
        reply
            .header("content-type")
            .unwrap_or("")
            .starts_with("text/plain"),
        "{reply:?}"
    );
    assert_eq!(reply.header("connection"), Some("close"));
    let text = reply.text();
    assert!(
        text.contains("10000 parts") && text.contains("--max-parts"),
        "{text}"
    );
    assert!(
        reply.body.len() < 1024,
        "{} bytes of reply",
        reply.body.len()
    );
    assert_eq!(rcv.files(), Vec::<String>::new());
}

#[tokio::test]
async fn a_body_over_the_request_limit_gets_413_and_leaves_nothing_half_written() {
    let tmp = tempfile::tempdir().unwrap();
    let max = 1 << 20;
    let opts = StowrsdOptions {
        limits: Limits {
            max_request_bytes: max,
            ..Limits::default()
        },
        ..StowrsdOptions::default()
    };
    let rcv = Rcv::start(&tmp.path().join("store"), opts).await;
    let small = instances(&tmp.path().join("small"), 1, 64).remove(0);
    let big = instances(&tmp.path().join("big"), 1, 1024).remove(0);
    assert!(big.1.len() as u64 > 2 * max);

    // Declared too large: refused before the body is read.
    let body = multipart(&[&big.1]);
    let reply = raw_post(rcv.loopback(), Framing::Length, "", body.clone()).await;
    assert_eq!(reply.status, 413, "{}", reply.text());
    assert!(
        reply.text().contains("Content-Length") && reply.text().contains("--max-request-bytes"),
        "{}",
        reply.text()
    );
    assert_eq!(rcv.files(), Vec::<String>::new());

    // Undeclared (chunked): cut off where it crosses the limit, the part
    // being written removed.
    let reply = raw_post(rcv.loopback(), Framing::Chunked, "", body).await;
    assert_eq!(reply.status, 413, "{}", reply.text());
    assert!(
        reply.text().contains(&format!("larger than {max} bytes")),
        "{}",
        reply.text()
    );
    assert_eq!(reply.header("connection"), Some("close"));
    assert_eq!(rcv.files(), Vec::<String>::new());

    // One instance stored before the limit: the STOW-RS reply says so,
    // with the part that crossed it failed (out of resources).
    let body = multipart(&[&small.1, &big.1]);
    let reply = raw_post(rcv.loopback(), Framing::Chunked, "", body).await;
    assert_eq!(reply.status, 202, "{}", reply.text());
    let json = reply.json();
    assert_eq!(uids(&json, "00081199"), vec![small.0.clone()]);
    assert_eq!(uids(&json, "00081198"), vec![big.0.clone()]);
    assert_eq!(reasons(&json), vec![0xA700]);
    assert!(
        reply
            .header("warning")
            .is_some_and(|w| w.contains("--max-request-bytes")),
        "{reply:?}"
    );
    assert_eq!(rcv.files(), vec![format!("{}.dcm", small.0)]);
}

#[tokio::test]
async fn a_part_over_the_part_limit_ends_the_request_and_leaves_nothing_of_it() {
    let tmp = tempfile::tempdir().unwrap();
    let max = 256 << 10;
    let opts = StowrsdOptions {
        limits: Limits {
            max_part_bytes: max,
            ..Limits::default()
        },
        ..StowrsdOptions::default()
    };
    let rcv = Rcv::start(&tmp.path().join("store"), opts).await;
    let smalls = instances(&tmp.path().join("small"), 2, 64);
    let big = instances(&tmp.path().join("big"), 1, 512).remove(0);
    assert!(big.1.len() as u64 > max);

    let reply = raw_post(rcv.loopback(), Framing::Length, "", multipart(&[&big.1])).await;
    assert_eq!(reply.status, 413, "{}", reply.text());
    assert!(
        reply.text().contains("part 1 is larger than 262144 bytes")
            && reply.text().contains("--max-part-bytes"),
        "{}",
        reply.text()
    );
    assert_eq!(rcv.files(), Vec::<String>::new());

    // Stored, cut off, never read.
    let body = multipart(&[&smalls[0].1, &big.1, &smalls[1].1]);
    let reply = raw_post(rcv.loopback(), Framing::Length, "", body).await;
    assert_eq!(reply.status, 202, "{}", reply.text());
    let json = reply.json();
    assert_eq!(uids(&json, "00081199"), vec![smalls[0].0.clone()]);
    assert_eq!(uids(&json, "00081198"), vec![big.0.clone()]);
    assert_eq!(reasons(&json), vec![0xA700]);
    assert_eq!(rcv.files(), vec![format!("{}.dcm", smalls[0].0)]);
}

#[tokio::test]
async fn below_the_free_disk_reserve_nothing_is_stored_and_our_client_retries() {
    let tmp = tempfile::tempdir().unwrap();
    // A reserve above any real free space.
    let opts = StowrsdOptions {
        min_free_disk: u64::MAX,
        ..StowrsdOptions::default()
    };
    let rcv = Rcv::start(&tmp.path().join("store"), opts).await;
    let two = instances(&tmp.path().join("src"), 2, 256);
    let body = multipart(&[&two[0].1, &two[1].1]);
    let reply = raw_post(rcv.loopback(), Framing::Chunked, "", body).await;
    assert_eq!(reply.status, 409, "{}", reply.text());
    let json = reply.json();
    assert_eq!(uids(&json, "00081199"), Vec::<String>::new());
    assert_eq!(
        uids(&json, "00081198"),
        vec![two[0].0.clone(), two[1].0.clone()]
    );
    assert_eq!(reasons(&json), vec![0xA700, 0xA700]);
    assert_eq!(rcv.files(), Vec::<String>::new());

    // Our exporter reads that reply as "not stored, worth retrying".
    let sent: Vec<String> = two.iter().map(|(u, _)| u.clone()).collect();
    let results = classify(
        &sent,
        Exchange::Answered {
            status: reply.status,
            reason: "Conflict",
            content_type: reply.header("content-type"),
            retry_after: None,
            body: &reply.body,
        },
    );
    for r in &results {
        assert_eq!(r.retry, Retry::Yes, "{r:?}");
    }
}

/// POSTs one instance with reqwest; (status, JSON body).
async fn post_one(url: &str, data: &[u8], token: Option<&str>) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .post(url)
        .header(
            "content-type",
            format!("multipart/related; type=\"application/dicom\"; boundary={BOUNDARY}"),
        )
        .body(multipart(&[data]));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.bytes().await.unwrap();
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

/// `data` with its last byte changed: the same SOP Instance UID, other
/// bytes.
fn altered(data: &[u8]) -> Vec<u8> {
    let mut v = data.to_vec();
    let last = v.len() - 1;
    v[last] ^= 0x5A;
    v
}

#[tokio::test]
async fn a_stored_instance_is_never_overwritten_unless_asked() {
    let tmp = tempfile::tempdir().unwrap();
    let rcv = Rcv::start(&tmp.path().join("store"), StowrsdOptions::default()).await;
    let (uid, data) = instances(&tmp.path().join("src"), 1, 64).remove(0);
    let stored = rcv.dir.join(format!("{uid}.dcm"));

    let (status, json) = post_one(&rcv.url(), &data, None).await;
    assert_eq!(status, 200, "{json}");
    // The same bytes again (a retry after a lost reply): stored, success.
    let (status, json) = post_one(&rcv.url(), &data, None).await;
    assert_eq!(status, 200, "{json}");
    assert_eq!(uids(&json, "00081199"), vec![uid.clone()]);
    // Other bytes under the same UID: kept as it was, 0x0111.
    let other = altered(&data);
    let (status, json) = post_one(&rcv.url(), &other, None).await;
    assert_eq!(status, 409, "{json}");
    assert_eq!(uids(&json, "00081198"), vec![uid.clone()]);
    assert_eq!(reasons(&json), vec![0x0111]);
    assert!(std::fs::read(&stored).unwrap() == data, "overwritten");
    assert_eq!(rcv.files(), vec![format!("{uid}.dcm")]);

    // Asked to overwrite: replaced.
    let opts = StowrsdOptions {
        overwrite: true,
        ..StowrsdOptions::default()
    };
    let rcv2 = Rcv::start(&rcv.dir, opts).await;
    let (status, json) = post_one(&rcv2.url(), &other, None).await;
    assert_eq!(status, 200, "{json}");
    assert!(std::fs::read(&stored).unwrap() == other, "not replaced");
}

#[tokio::test]
async fn our_exporter_sees_a_duplicate_as_stored_never_failed() {
    let tmp = tempfile::tempdir().unwrap();
    let rcv = Rcv::start(&tmp.path().join("received"), StowrsdOptions::default()).await;
    let cfg = write_config(tmp.path(), rcv.addr.port(), "");
    let (study, files) = study(&tmp.path().join("src"), 3, 64);
    import(&tmp.path().join("data"), &files).await;
    // The receiver already holds instance 1 with other bytes, and
    // instance 2 with the same bytes (a crash after storing, before the
    // reply reached the exporter).
    let uid1 = sop_uid(&files[0]);
    let uid2 = sop_uid(&files[1]);
    let held = altered(&std::fs::read(&files[0]).unwrap());
    std::fs::write(rcv.dir.join(format!("{uid1}.dcm")), &held).unwrap();
    std::fs::copy(&files[1], rcv.dir.join(format!("{uid2}.dcm"))).unwrap();

    let svc = Service::start(&cfg, &tmp.path().join("data")).await;
    let task = svc.export_study("STOWRSD", &study).await;
    let id = task["taskID"].as_str().unwrap();
    let done = svc.wait_done(id).await;
    assert_eq!(done["status"], "WARNING", "{done}");
    for i in svc.instances(id).await {
        let uid = i["SOPInstanceUID"].as_str().unwrap();
        if uid == uid1 {
            assert_eq!(i["status"], "WARNING", "{i}");
            assert!(
                i["reason"].as_str().unwrap().contains("already stored"),
                "{i}"
            );
        } else {
            assert_eq!(i["status"], "COMPLETED", "{i}");
        }
    }
    assert!(
        std::fs::read(rcv.dir.join(format!("{uid1}.dcm"))).unwrap() == held,
        "the instance held was overwritten"
    );
    assert!(
        std::fs::read(rcv.dir.join(format!("{uid2}.dcm"))).unwrap()
            == std::fs::read(&files[1]).unwrap()
    );
    svc.stop().await;
}

#[tokio::test]
async fn an_aborted_part_leaves_nothing_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let rcv = Rcv::start(&tmp.path().join("store"), StowrsdOptions::default()).await;
    let (_, data) = instances(&tmp.path().join("src"), 1, 1024).remove(0);
    let body = multipart(&[&data]);
    let mut stream = tokio::net::TcpStream::connect(rcv.loopback())
        .await
        .unwrap();
    let head = format!(
        "POST /stowrs/studies HTTP/1.1\r\nHost: x\r\n\
         Content-Type: multipart/related; type=\"application/dicom\"; boundary={BOUNDARY}\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body[..body.len() / 2]).await.unwrap();
    stream.flush().await.unwrap();
    // The part is being written...
    eventually(EXCHANGE_LIMIT, || async {
        let f = rcv.files();
        if f.iter().any(|n| n.ends_with(".part")) {
            Ok(())
        } else {
            Err(format!("no temporary file yet: {f:?}"))
        }
    })
    .await;
    // ...when the sender goes away.
    drop(stream);
    eventually(EXCHANGE_LIMIT, || async {
        let f = rcv.files();
        if f.is_empty() {
            Ok(())
        } else {
            Err(format!("left behind: {f:?}"))
        }
    })
    .await;
}

#[tokio::test]
async fn the_receiver_binary_refuses_an_open_address_without_a_token() {
    let tmp = tempfile::tempdir().unwrap();
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_stow-exporter"))
        .args(["stowrsd", "--bind", "0.0.0.0:0", "--dir"])
        .arg(tmp.path().join("store"))
        .env_remove(stowrsd::access::TOKEN_ENV)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let out = tokio::time::timeout(EXCHANGE_LIMIT, child.wait_with_output())
        .await
        .expect("stowrsd kept running on 0.0.0.0 without a token")
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("not a loopback address") && stderr.contains("--token-file"),
        "{stderr}"
    );
}

#[tokio::test]
async fn off_loopback_the_receiver_binary_wants_the_token() {
    let tmp = tempfile::tempdir().unwrap();
    let token = tmp.path().join("token");
    std::fs::write(&token, "rcv-t0ken-8f2\n").unwrap();
    let store = tmp.path().join("store");
    let port = free_port();
    let _child = KillOnDrop(
        std::process::Command::new(env!("CARGO_BIN_EXE_stow-exporter"))
            .args(["stowrsd", "--bind", &format!("0.0.0.0:{port}"), "--dir"])
            .arg(&store)
            .arg("--token-file")
            .arg(&token)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let url = format!("http://127.0.0.1:{port}/stowrs/studies");
    eventually(EXCHANGE_LIMIT, || async {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .map(|_| ())
            .map_err(|e| format!("stowrsd not up: {e}"))
    })
    .await;
    let (uid, data) = instances(&tmp.path().join("src"), 1, 64).remove(0);
    assert_eq!(post_one(&url, &data, None).await.0, 401);
    assert_eq!(post_one(&url, &data, Some("wrong")).await.0, 401);
    assert_eq!(names(&store), Vec::<String>::new());
    let (status, json) = post_one(&url, &data, Some("rcv-t0ken-8f2")).await;
    assert_eq!(status, 200, "{json}");
    assert_eq!(names(&store), vec![format!("{uid}.dcm")]);
}

#[tokio::test]
async fn serve_guards_its_receiver_off_loopback_and_our_exporter_sends_the_token() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let data = tmp.path().join("data");
    let received = tmp.path().join("received");
    let bind = format!("0.0.0.0:{port}");

    // No token: refused at start, naming the option.
    let cfg = write_config(tmp.path(), port, "");
    let mut settings = Service::settings(
        stow_exporter::config::ConfigSource::Ldif(cfg.clone()),
        &data,
    );
    settings.stowrsd_dir = Some(received.clone());
    settings.stowrsd_bind = Some(bind.clone());
    let err = match stow_exporter::app::Application::build(settings.clone()).await {
        Ok(_) => panic!("serve built a receiver open to the network without a token"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("--stowrsd-token-file"), "{err}");

    // With the token, and the web app sending it (`bearer-token`).
    let token = "serve-rcv-t0ken";
    let cfg = write_config(
        tmp.path(),
        port,
        &add_props(STOWRSD_WEBAPP_DN, &[&format!("bearer-token={token}")]),
    );
    settings.config = stow_exporter::config::ConfigSource::Ldif(cfg);
    settings.stowrsd_options.token = Some(Secret::new(token));
    let (study, files) = study(&tmp.path().join("src"), 2, 64);
    import(&data, &files).await;
    let svc = Service::start_with_settings(settings).await;
    let url = format!("http://127.0.0.1:{port}/stowrs/studies");
    let (_, bytes) = instances(&tmp.path().join("other"), 1, 64).remove(0);
    assert_eq!(post_one(&url, &bytes, None).await.0, 401);
    let task = svc.export_study("STOWRSD", &study).await;
    let done = svc.wait_done(task["taskID"].as_str().unwrap()).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    for f in &files {
        let got = std::fs::read(received.join(format!("{}.dcm", sop_uid(f)))).unwrap();
        assert!(got == std::fs::read(f).unwrap());
    }
    svc.stop().await;
}

/// Kills (SIGKILL) a process by PID when dropped: the receiver traced by
/// strace is strace's child, not ours.
struct KillPid(u32);

impl Drop for KillPid {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &self.0.to_string()])
            .status();
    }
}

/// The index of the line where the system call begun on line `i`
/// returned: `i` itself, or the `resumed` line of the same process.
fn returned(lines: &[&str], i: usize) -> usize {
    if !lines[i].contains("<unfinished ...>") {
        return i;
    }
    let pid = lines[i].split_whitespace().next().unwrap_or("");
    (i + 1..lines.len())
        .find(|&j| lines[j].starts_with(pid) && lines[j].contains("resumed>"))
        .unwrap_or_else(|| panic!("no return for {:?}", lines[i]))
}

#[tokio::test]
async fn an_acknowledged_instance_was_fsynced_and_named_before_the_reply() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    std::fs::create_dir_all(&store).unwrap();
    // Canonical: strace -y prints the path the descriptor was opened with.
    let store = store.canonicalize().unwrap();
    let log = tmp.path().join("strace.log");
    let port = free_port();
    let mut strace = KillOnDrop(
        std::process::Command::new("strace")
            .args([
                "-f",
                "-y",
                "-s",
                "48",
                "-e",
                "trace=fsync,fdatasync,link,linkat,rename,renameat,renameat2,write,writev,sendto,sendmsg",
                "-o",
            ])
            .arg(&log)
            .arg("--")
            .arg(env!("CARGO_BIN_EXE_stow-exporter"))
            .args(["stowrsd", "--bind", &format!("127.0.0.1:{port}"), "--dir"])
            .arg(&store)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("strace runs (scripts/test.sh installs it)"),
    );
    eventually(EXCHANGE_LIMIT, || async {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .map(|_| ())
            .map_err(|e| format!("stowrsd not up: {e}"))
    })
    .await;
    // Once it listens, the receiver is strace's only child (strace forks
    // short-lived probes of its own at start).
    let strace_pid = strace.0.id();
    let children =
        std::fs::read_to_string(format!("/proc/{strace_pid}/task/{strace_pid}/children")).unwrap();
    let traced: Vec<u32> = children
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    assert_eq!(traced.len(), 1, "strace's children: {children:?}");
    let receiver = KillPid(traced[0]);
    let (uid, data) = instances(&tmp.path().join("src"), 1, 64).remove(0);
    let url = format!("http://127.0.0.1:{port}/stowrs/studies");
    let (status, json) = post_one(&url, &data, None).await;
    assert_eq!(status, 200, "{json}");
    // strace writes everything out when its tracee is gone.
    drop(receiver);
    eventually(EXCHANGE_LIMIT, || {
        let ended = strace.0.try_wait();
        async move {
            match ended {
                Ok(Some(_)) => Ok(()),
                other => Err(format!("strace has not ended with its tracee: {other:?}")),
            }
        }
    })
    .await;
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let find = |what: &str, pred: &dyn Fn(&str) -> bool| {
        lines
            .iter()
            .position(|l| pred(l))
            .unwrap_or_else(|| panic!("no {what} in the trace:\n{text}"))
    };
    let dir = store.display().to_string();
    let dest = format!("{dir}/{uid}.dcm");
    // fsync of the temporary file, then its link to the final name, then
    // fsync of the directory, then the 200.
    let sync_file = find("fsync of the temporary file", &|l| {
        l.contains("fsync(") && l.contains(&format!("<{dir}/.")) && l.contains(".part>")
    });
    let link = find("link to the final name", &|l| {
        l.contains("link") && l.contains(&dest) && l.contains(".part")
    });
    let sync_dir = find("fsync of the directory", &|l| {
        l.contains("fsync(") && l.contains(&format!("<{dir}>"))
    });
    let reply = find("the 200 reply", &|l| l.contains("HTTP/1.1 200"));
    assert!(
        returned(&lines, sync_file) < link
            && returned(&lines, link) < sync_dir
            && returned(&lines, sync_dir) < reply,
        "out of order: fsync(file) at {sync_file}, link at {link}, fsync(dir) at {sync_dir}, reply at {reply}:\n{text}"
    );
    // The file fsynced is the file linked.
    let part = lines[sync_file]
        .split('<')
        .nth(1)
        .and_then(|s| s.split('>').next())
        .unwrap();
    assert!(
        lines[link].contains(part),
        "{}\n{}",
        lines[sync_file],
        lines[link]
    );
}

/// A `kill -9` in the middle of a request leaves its temporary file, which
/// no drop handler removes: the receiver sweeps such files (unwritten for an
/// hour) before it listens, and keeps younger ones, which may belong to a
/// request in progress.
#[tokio::test]
async fn temporary_files_left_by_a_crash_are_swept_at_start() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    std::fs::create_dir_all(&store).unwrap();
    let left = store.join(".00000000deadbeef.part");
    std::fs::write(&left, vec![0u8; 4096]).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&left)
        .unwrap()
        .set_modified(std::time::SystemTime::now() - Duration::from_secs(2 * 3600))
        .unwrap();
    let young = store.join(".00000000cafef00d.part");
    std::fs::write(&young, b"a request in progress").unwrap();
    let port = free_port();
    let _child = KillOnDrop(
        std::process::Command::new(env!("CARGO_BIN_EXE_stow-exporter"))
            .args(["stowrsd", "--bind", &format!("127.0.0.1:{port}"), "--dir"])
            .arg(&store)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    // The sweep runs before the port is bound: once it connects, it is done.
    eventually(EXCHANGE_LIMIT, || async {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| format!("stowrsd does not listen: {e}"))
    })
    .await;
    assert!(!left.exists(), "the crash's temporary file is still there");
    assert!(young.exists(), "a young temporary file was removed");
}
