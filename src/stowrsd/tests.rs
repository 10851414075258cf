//! End-to-end tests: a real server on 127.0.0.1:0, requests with reqwest.

use super::meta::tests::{CT_IMAGE_STORAGE, dicom_file};
use super::*;
use serde_json::Value;
use std::convert::Infallible;
use tokio::sync::oneshot;

struct Server {
    base: String,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<io::Result<()>>>,
}

impl Server {
    async fn start(store_dir: Option<PathBuf>) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let opts = StowrsdOptions {
            store_dir,
            ..Default::default()
        };
        let task = tokio::spawn(serve(listener, opts, async move {
            let _ = rx.await;
        }));
        Server {
            base: format!("http://{addr}"),
            stop: Some(tx),
            task: Some(task),
        }
    }

    async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }
}

const BOUNDARY: &str = "MIME-boundary-7f3a";
const CT: &str = "multipart/related; type=\"application/dicom\"; boundary=MIME-boundary-7f3a";

fn multipart_body(parts: &[(&str, &[u8])]) -> Vec<u8> {
    let mut body = Vec::new();
    for (ct, data) in parts {
        body.extend_from_slice(format!("--{BOUNDARY}\r\nContent-Type: {ct}\r\n\r\n").as_bytes());
        body.extend_from_slice(data);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    body
}

struct Reply {
    status: u16,
    content_type: String,
    warning: Option<String>,
    body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

async fn post(url: &str, ct: &str, accept: Option<&str>, body: reqwest::Body) -> Reply {
    let client = reqwest::Client::new();
    let mut req = client.post(url).header("content-type", ct).body(body);
    if let Some(a) = accept {
        req = req.header("accept", a);
    }
    let resp = req.send().await.unwrap();
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    let content_type = header("content-type").unwrap_or_default();
    let warning = header("warning");
    let status = resp.status().as_u16();
    let body = resp.bytes().await.unwrap().to_vec();
    Reply {
        status,
        content_type,
        warning,
        body,
    }
}

/// Sends `body` in chunks of `size` bytes (chunked transfer encoding).
fn chunked(body: Vec<u8>, size: usize) -> reqwest::Body {
    let chunks: Vec<Result<Bytes, Infallible>> = body
        .chunks(size)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    reqwest::Body::wrap_stream(futures_util::stream::iter(chunks))
}

fn uids(seq: &Value, tag: &str) -> Vec<String> {
    seq["Value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item[tag]["Value"][0].as_str().unwrap().to_owned())
        .collect()
}

fn dir_entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn two_instances_and_garbage_give_202_and_identical_files() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let server = Server::start(Some(store.clone())).await;
    let a = dicom_file("1.2.826.0.1.3680043.8.498.1", 300_000);
    let b = dicom_file("1.2.826.0.1.3680043.8.498.2", 1_000_001);
    let body = multipart_body(&[
        ("application/dicom", &a),
        ("application/dicom; transfer-syntax=1.2.840.10008.1.2.1", &b),
        ("application/dicom", b"this is not DICOM at all"),
    ]);
    let url = format!("{}/dcm4chee-arc/aets/DCM4CHEE/rs/studies", server.base);
    for body in [reqwest::Body::from(body.clone()), chunked(body, 4093)] {
        let reply = post(&url, CT, None, body).await;
        assert_eq!(reply.status, 202, "{}", reply.text());
        assert_eq!(reply.content_type, "application/dicom+json");
        let json = reply.json();
        let referenced = &json["00081199"];
        assert_eq!(referenced["vr"], "SQ");
        assert_eq!(
            uids(referenced, "00081155"),
            vec!["1.2.826.0.1.3680043.8.498.1", "1.2.826.0.1.3680043.8.498.2"]
        );
        assert_eq!(
            uids(referenced, "00081150"),
            vec![CT_IMAGE_STORAGE, CT_IMAGE_STORAGE]
        );
        let failed = json["00081198"]["Value"].as_array().unwrap();
        assert_eq!(failed.len(), 1);
        assert_eq!(
            failed[0],
            serde_json::json!({"00081197": {"vr": "US", "Value": [0xC000]}})
        );
        assert!(json.get("00081190").is_none());
        assert_eq!(
            std::fs::read(store.join("1.2.826.0.1.3680043.8.498.1.dcm")).unwrap(),
            a
        );
        assert_eq!(
            std::fs::read(store.join("1.2.826.0.1.3680043.8.498.2.dcm")).unwrap(),
            b
        );
        // No temporary files left behind.
        assert_eq!(dir_entries(&store).len(), 2, "{:?}", dir_entries(&store));
    }
    server.stop().await;
}

#[tokio::test]
async fn all_garbage_gives_409() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(Some(tmp.path().to_owned())).await;
    let not_dicom = vec![0u8; 500];
    let body = multipart_body(&[
        ("application/dicom", &not_dicom),
        ("text/plain", &dicom_file("1.2.3.4", 10)),
        ("application/dicom", b"tiny"),
    ]);
    let reply = post(
        &format!("{}/stowrs/studies", server.base),
        CT,
        Some("application/json"),
        body.into(),
    )
    .await;
    assert_eq!(reply.status, 409, "{}", reply.text());
    assert_eq!(reply.content_type, "application/json");
    let json = reply.json();
    assert!(json.get("00081199").is_none());
    let failed = json["00081198"]["Value"].as_array().unwrap();
    assert_eq!(failed.len(), 3);
    for item in failed {
        assert_eq!(item["00081197"]["Value"][0], 0xC000);
        assert!(item.get("00081155").is_none());
    }
    assert!(dir_entries(tmp.path()).is_empty());
    server.stop().await;
}

#[tokio::test]
async fn evil_uid_is_refused_and_nothing_written_outside() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let server = Server::start(Some(store.clone())).await;
    let good = "1.2.840.99999.1";
    let evil = "../../x/../abcd";
    let mut data = dicom_file(good, 100);
    let pos = memchr::memmem::find(&data, good.as_bytes()).unwrap();
    data[pos..pos + evil.len()].copy_from_slice(evil.as_bytes());
    let body = multipart_body(&[("application/dicom", &data)]);
    let reply = post(&format!("{}/studies", server.base), CT, None, body.into()).await;
    assert_eq!(reply.status, 409, "{}", reply.text());
    assert_eq!(
        reply.json()["00081198"]["Value"][0]["00081197"]["Value"][0],
        0xC000
    );
    assert_eq!(dir_entries(tmp.path()), Vec::<String>::new());
    server.stop().await;
}

#[tokio::test]
async fn unsupported_media_types_give_415_or_400() {
    let server = Server::start(None).await;
    let url = format!("{}/studies", server.base);
    let body = multipart_body(&[("application/dicom", &dicom_file("1.2.3", 10))]);
    for ct in [
        "application/dicom",
        "multipart/form-data; boundary=MIME-boundary-7f3a",
        "multipart/related; type=\"application/dicom+json\"; boundary=MIME-boundary-7f3a",
        "multipart/related; boundary=MIME-boundary-7f3a",
    ] {
        let reply = post(&url, ct, None, body.clone().into()).await;
        assert_eq!(reply.status, 415, "{ct}: {}", reply.text());
        assert!(reply.content_type.starts_with("text/plain"));
    }
    let reply = post(
        &url,
        "multipart/related; type=application/dicom",
        None,
        body.clone().into(),
    )
    .await;
    assert_eq!(reply.status, 400);
    assert!(reply.text().contains("boundary"), "{}", reply.text());
    // Case-insensitive media type, quoted boundary, unquoted type.
    let reply = post(
        &url,
        "Multipart/Related; boundary=\"MIME-boundary-7f3a\"; type=Application/DICOM",
        None,
        body.into(),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    server.stop().await;
}

#[tokio::test]
async fn unacceptable_accept_gives_406() {
    let server = Server::start(None).await;
    let body = multipart_body(&[("application/dicom", &dicom_file("1.2.3", 10))]);
    let reply = post(
        &format!("{}/studies", server.base),
        CT,
        Some("image/png, text/html"),
        body.into(),
    )
    .await;
    assert_eq!(reply.status, 406, "{}", reply.text());
    server.stop().await;
}

#[tokio::test]
async fn xml_response() {
    let server = Server::start(None).await;
    let body = multipart_body(&[
        ("application/dicom", &dicom_file("1.2.3.4.5", 10)),
        ("image/jpeg", b"\xff\xd8\xff"),
    ]);
    let reply = post(
        &format!("{}/rs/studies/1.2.3", server.base),
        CT,
        Some("application/dicom+xml"),
        body.into(),
    )
    .await;
    assert_eq!(reply.status, 202, "{}", reply.text());
    assert_eq!(reply.content_type, "application/dicom+xml");
    let xml = reply.text();
    assert!(xml.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?><NativeDicomModel"));
    assert!(xml.contains(
        "<DicomAttribute tag=\"00081155\" vr=\"UI\" keyword=\"ReferencedSOPInstanceUID\"><Value number=\"1\">1.2.3.4.5</Value></DicomAttribute>"
    ));
    assert!(xml.contains(&format!(
        "<DicomAttribute tag=\"00081150\" vr=\"UI\" keyword=\"ReferencedSOPClassUID\"><Value number=\"1\">{CT_IMAGE_STORAGE}</Value></DicomAttribute>"
    )));
    assert!(xml.contains(
        "<DicomAttribute tag=\"00081197\" vr=\"US\" keyword=\"FailureReason\"><Value number=\"1\">49152</Value></DicomAttribute>"
    ));
    server.stop().await;
}

#[tokio::test]
async fn ignore_mode_answers_with_uids() {
    let server = Server::start(None).await;
    let a = dicom_file("2.25.1234", 70_000);
    let b = dicom_file("2.25.5678", 10);
    let body = multipart_body(&[("application/dicom", &a), ("application/dicom", &b)]);
    let reply = post(
        &format!("{}/stowrs/studies/2.25.1", server.base),
        CT,
        Some("*/*"),
        chunked(body, 1000),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let json = reply.json();
    assert_eq!(
        uids(&json["00081199"], "00081155"),
        vec!["2.25.1234", "2.25.5678"]
    );
    assert!(json.get("00081198").is_none());
    server.stop().await;
}

#[tokio::test]
async fn truncated_bodies_give_400() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(Some(tmp.path().to_owned())).await;
    let url = format!("{}/studies", server.base);
    let a = dicom_file("1.2.3.1", 1000);
    let b = dicom_file("1.2.3.2", 1000);

    // Nothing complete: plain text.
    let mut body = multipart_body(&[("application/dicom", &a)]);
    body.truncate(body.len() - 100);
    let reply = post(&url, CT, None, body.into()).await;
    assert_eq!(reply.status, 400);
    assert!(reply.content_type.starts_with("text/plain"));
    assert!(reply.text().contains("close delimiter"), "{}", reply.text());
    assert!(dir_entries(tmp.path()).is_empty());

    // First instance stored, body cut inside the second: DICOM body + Warning.
    let mut body = multipart_body(&[("application/dicom", &a), ("application/dicom", &b)]);
    body.truncate(body.len() - 100);
    let reply = post(&url, CT, None, body.into()).await;
    assert_eq!(reply.status, 400);
    assert_eq!(reply.content_type, "application/dicom+json");
    assert!(
        reply
            .warning
            .as_deref()
            .unwrap_or("")
            .starts_with("299 stowrsd "),
        "{:?}",
        reply.warning
    );
    let json = reply.json();
    assert_eq!(uids(&json["00081199"], "00081155"), vec!["1.2.3.1"]);
    assert_eq!(uids(&json["00081198"], "00081155"), vec!["1.2.3.2"]);
    assert_eq!(json["00081198"]["Value"][0]["00081197"]["Value"][0], 0x0110);
    assert_eq!(dir_entries(tmp.path()), vec!["1.2.3.1.dcm"]);

    // Close delimiter but no part.
    let reply = post(&url, CT, None, format!("--{BOUNDARY}--\r\n").into()).await;
    assert_eq!(reply.status, 400);
    assert!(reply.text().contains("no parts"), "{}", reply.text());
    server.stop().await;
}

#[tokio::test]
async fn paths_and_methods() {
    let server = Server::start(None).await;
    let client = reqwest::Client::new();
    let status = |r: reqwest::Response| r.status().as_u16();
    let body = multipart_body(&[("application/dicom", &dicom_file("1.2.3", 10))]);
    for path in ["/", "/foo", "/studies/1.2.3/series", "/xstudies"] {
        let r = client
            .post(format!("{}{path}", server.base))
            .header("content-type", CT)
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(status(r), 404, "{path}");
    }
    let r = client
        .get(format!("{}/studies", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["allow"], "POST, OPTIONS");
    assert_eq!(status(r), 405);
    let r = client
        .request(Method::OPTIONS, format!("{}/a/b/studies", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(status(r), 204);
    for path in [
        "/studies",
        "/studies/",
        "/a/studies/1.2.3",
        "/a/b/c/studies/1.2/",
    ] {
        let r = client
            .post(format!("{}{path}", server.base))
            .header("content-type", CT)
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(status(r), 200, "{path}");
    }
    server.stop().await;
}

#[test]
fn media_type_parsing() {
    let (m, p) = parse_media_type(
        "Multipart/Related ; Type=\"application/dicom\"; boundary=\"a;b\\\"c\"; start=x",
    )
    .unwrap();
    assert_eq!(m, "multipart/related");
    assert_eq!(
        p,
        vec![
            ("type".to_owned(), "application/dicom".to_owned()),
            ("boundary".to_owned(), "a;b\"c".to_owned()),
            ("start".to_owned(), "x".to_owned()),
        ]
    );
    assert!(parse_media_type("garbage").is_none());
    assert!(parse_media_type("a/").is_none());
    assert_eq!(
        studies_path("/dcm4chee-arc/aets/DCM4CHEE/rs/studies"),
        Some(None)
    );
    assert_eq!(studies_path("/studies/1.2.3"), Some(Some("1.2.3")));
    assert_eq!(studies_path("/studies/1.2.3/series"), None);
    assert_eq!(studies_path("/nostudies"), None);
}
