//! Hostile and broken peers of the STOW-RS client (issue 12): a
//! destination whose reply floods FailedSOPSequence or exceeds the reply
//! limit, a token endpoint that redirects, is reached over plain http, or
//! shows a certificate the web app's TLS settings must judge; credentials
//! in URLs; and formula injection through the CSV export of the REST API.
//!
//! The service is the real one (in-process, real HTTP on loopback); the
//! destinations and token endpoints that misbehave are servers written
//! here, since no real one misbehaves on demand. Certificates are made with
//! the `openssl` command (tests/common/https.rs).

mod common;
#[path = "common/https.rs"]
mod https;
#[path = "common/token_server.rs"]
pub mod token_server;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::body::Body;
use axum::extract::Request;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use common::*;
use serde_json::{Value, json};
use stow_exporter::config::ConfigSource;
use stow_exporter::config::Secret;
use stow_exporter::config::model::{Grant, KeycloakClient};
use stow_exporter::stow::MAX_REPLY_BYTES;
use stow_exporter::stow::oauth::{TokenError, TokenSource, TokenTransport};
use stow_exporter::stow::response::MAX_REASON_CHARS;
use stow_exporter::stow::tls::TlsSettings;
use token_server::{TokenServer, require_bearer};

const CLIENT_ID: &str = "stow-exporter";
const SECRET: &str = "kc-s3cr3t/+&=";

/// A destination written here: reads each request whole and answers
/// `status` with a fresh `body()`; counts the requests.
async fn hostile_destination(
    status: StatusCode,
    body: impl Fn() -> Body + Clone + Send + Sync + 'static,
) -> (u16, Arc<AtomicUsize>, ServerGuard) {
    let requests = Arc::new(AtomicUsize::new(0));
    let n = requests.clone();
    let app = axum::Router::new().fallback(move |req: Request| {
        let (n, body) = (n.clone(), body.clone());
        async move {
            // Read what the client sends, as a server would, then answer.
            let _ = axum::body::to_bytes(req.into_body(), 256 << 20).await;
            n.fetch_add(1, Ordering::SeqCst);
            Response::builder()
                .status(status)
                .header(header::CONTENT_TYPE, "application/dicom+json")
                .body(body())
                .unwrap()
        }
    });
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    (port, requests, serve_until_dropped(l, app))
}

/// Exports a study of `count` instances with the seed exporter
/// (StowExporter, queue Export1: no retries, FAILED is final) to the
/// destination on `port`, in one request; returns the task and its
/// per-instance results as the REST API shows them.
async fn export_to(port: u16, count: usize) -> (Value, Vec<Value>) {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = write_config(
        tmp.path(),
        port,
        &add_props(
            DCM4CHEE_WEBAPP_DN,
            &[&format!("max-instances-per-request={count}")],
        ),
    );
    let (study_uid, files) = study(&tmp.path().join("src"), count, 16);
    let data = tmp.path().join("data");
    import(&data, &files).await;
    let svc = Service::start(&cfg, &data).await;
    let t = svc.export_study("StowExporter", &study_uid).await;
    let id = t["taskID"].as_str().unwrap().to_string();
    let done = svc.wait_done(&id).await;
    let inst = svc.instances(&id).await;
    svc.stop().await;
    (done, inst)
}

// --- hostile destinations ---

/// A reply of 200 with ~3.5 MB of FailedSOPSequence items without a SOP
/// Instance UID, with thousands of distinct FailureReasons: every
/// instance's stored reason stays short and sums them up.
#[tokio::test]
async fn flood_of_anonymous_failures_gives_bounded_reasons() {
    const ITEMS: usize = 80_000;
    let mut items = Vec::with_capacity(ITEMS);
    for i in 0..ITEMS {
        // 4000 distinct codes, the first one far more frequent.
        let code = if i % 2 == 0 {
            0x0110
        } else {
            0xC000 + (i / 2) % 4000
        };
        items.push(json!({"00081197": {"vr": "US", "Value": [code]}}));
    }
    let reply = json!({"00081198": {"vr": "SQ", "Value": items}}).to_string();
    assert!(reply.len() > 3_000_000 && reply.len() < MAX_REPLY_BYTES);
    let reply = bytes::Bytes::from(reply);
    let (port, requests, _server) =
        hostile_destination(StatusCode::OK, move || Body::from(reply.clone())).await;

    let (done, inst) = export_to(port, 20).await;
    assert_eq!(
        requests.load(Ordering::SeqCst),
        1,
        "one request for 20 instances"
    );
    assert_eq!(done["status"], "FAILED", "{done}");
    assert_eq!(inst.len(), 20);
    for i in &inst {
        assert_eq!(i["status"], "FAILED", "{i}");
        let reason = i["reason"].as_str().unwrap();
        assert!(
            reason.chars().count() <= MAX_REASON_CHARS,
            "a reason of {} characters",
            reason.len()
        );
        // It still says what happened: how many parts, the most frequent
        // reason, and that more were left out.
        assert!(
            reason.contains(&format!("failed {ITEMS} part(s) it could not identify")),
            "{reason}"
        );
        assert!(
            reason.contains("0x0110 (Processing failure) \u{d7}40000"),
            "{reason}"
        );
        assert!(reason.contains("and 3996 more"), "{reason}");
    }
    let error = done["errorMessage"].as_str().unwrap();
    assert!(
        error.chars().count() <= 4 * MAX_REASON_CHARS,
        "{}",
        error.len()
    );
}

/// A reply larger than the limit is not read, let alone parsed, even when
/// what it starts with would confirm every instance: they are failed as
/// not confirmed, with a reason naming the limit.
#[tokio::test]
async fn reply_over_the_limit_is_a_failure_of_its_own() {
    let uids: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
    let u = uids.clone();
    // A valid reply naming every instance, padded past the limit with an
    // attribute the client ignores, sent chunked (no Content-Length).
    let body = move || {
        let refs: Vec<Value> = u
            .lock()
            .unwrap()
            .iter()
            .map(|uid| json!({"00081155": {"vr": "UI", "Value": [uid]}}))
            .collect();
        let head = json!({"00081199": {"vr": "SQ", "Value": refs}}).to_string();
        let head = head.trim_end_matches('}').to_string();
        let pad = "x".repeat(MAX_REPLY_BYTES + 1000);
        let chunks: Vec<Result<String, std::io::Error>> = vec![
            Ok(format!("{head},\"00081190\":{{\"vr\":\"UR\",\"Value\":[\"")),
            Ok(pad),
            Ok("\"]}}".to_string()),
        ];
        Body::from_stream(futures_util::stream::iter(chunks))
    };
    let (port, _requests, _server) = hostile_destination(StatusCode::OK, body).await;
    let tmp = tempfile::tempdir().unwrap();
    let (study_uid, files) = study(&tmp.path().join("src"), 3, 16);
    *uids.lock().unwrap() = files.iter().map(|f| sop_uid(f)).collect();
    let cfg = write_config(
        tmp.path(),
        port,
        &add_props(DCM4CHEE_WEBAPP_DN, &["max-instances-per-request=3"]),
    );
    let data = tmp.path().join("data");
    import(&data, &files).await;
    let svc = Service::start(&cfg, &data).await;
    let t = svc.export_study("StowExporter", &study_uid).await;
    let id = t["taskID"].as_str().unwrap().to_string();
    let done = svc.wait_done(&id).await;
    let inst = svc.instances(&id).await;
    svc.stop().await;

    assert_eq!(done["status"], "FAILED", "{done}");
    assert_eq!(inst.len(), 3);
    for i in &inst {
        assert_eq!(i["status"], "FAILED", "{i}");
        let reason = i["reason"].as_str().unwrap();
        assert!(
            reason.starts_with(&format!(
                "HTTP 200 OK, but the reply exceeds {MAX_REPLY_BYTES} bytes and was not read: not confirmed as stored"
            )),
            "{reason}"
        );
    }
}

// --- OAuth2 token endpoint: TLS, plain http, redirects ---

fn keycloak(
    token_url: &str,
    allow_any_hostname: bool,
    disable_trust_manager: bool,
) -> KeycloakClient {
    KeycloakClient {
        id: CLIENT_ID.into(),
        dn: format!("dcmKeycloakClientID={CLIENT_ID},dicomDeviceName=dcm4chee-arc"),
        token_url: token_url.into(),
        client_id: CLIENT_ID.into(),
        secret: Some(Secret::new(SECRET)),
        grant: Grant::ClientCredentials,
        allow_any_hostname,
        disable_trust_manager,
    }
}

/// The token server over TLS with `pair` as its certificate (requiring a
/// client certificate signed by `client_ca`, if given).
async fn https_token_server(pair: &https::Pair, client_ca: Option<&Path>) -> TokenServer {
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let (listener, _failures) = https::tls_listener(tcp, pair, client_ca);
    TokenServer::serve(
        CLIENT_ID,
        SECRET,
        60,
        listener,
        addr,
        format!("https://127.0.0.1:{}", addr.port()),
    )
}

fn trusting(ca: &Path) -> TokenTransport {
    TokenTransport {
        tls: TlsSettings {
            ca_files: vec![ca.to_path_buf()],
            ..Default::default()
        },
        allow_insecure_url: false,
    }
}

/// `dcmTLSAllowAnyHostname` accepts a certificate for another host name
/// from a trusted CA, and nothing else: not a self-signed certificate, not
/// one from an unknown CA. `dcmTLSDisableTrustManager` accepts those.
#[tokio::test]
async fn allow_any_hostname_skips_only_the_name_check_at_the_token_endpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let certs = https::make_certs(&tmp.path().join("certs"));
    let transport = trusting(&certs.ca.cert);

    let wrong_name = https_token_server(&certs.wrong_name, None).await;
    let strict = TokenSource::new(&keycloak(&wrong_name.url(), false, false), &transport).unwrap();
    let e = strict.header().await.unwrap_err();
    assert!(matches!(e, TokenError::Transport { .. }), "{e}");
    let lax = TokenSource::new(&keycloak(&wrong_name.url(), true, false), &transport).unwrap();
    lax.header().await.unwrap();
    assert_eq!(wrong_name.issued(), 1);

    for pair in [&certs.self_signed, &certs.unknown_issuer] {
        let server = https_token_server(pair, None).await;
        let lax = TokenSource::new(&keycloak(&server.url(), true, false), &transport).unwrap();
        let e = lax.header().await.unwrap_err();
        assert!(matches!(e, TokenError::Transport { .. }), "{e}");
        assert_eq!(
            server.requests(),
            0,
            "no token request over an untrusted channel"
        );
        let none = TokenSource::new(&keycloak(&server.url(), false, true), &transport).unwrap();
        none.header().await.unwrap();
        assert_eq!(server.issued(), 1);
    }
}

/// A token endpoint whose certificate is trusted only through
/// `--tls-ca-file`, and which requires the client certificate of
/// `--tls-client-cert`: the export through the real service gets its token
/// there and completes.
#[tokio::test]
async fn token_endpoint_uses_the_services_tls_settings() {
    let tmp = tempfile::tempdir().unwrap();
    let certs = https::make_certs(&tmp.path().join("certs"));
    let server = https_token_server(&certs.server, Some(&certs.ca.cert)).await;

    // The destination: the real stowrsd behind the token server's tokens.
    let app = require_bearer(
        stow_exporter::stowrsd::router(stow_exporter::stowrsd::StowrsdOptions {
            store_dir: Some(tmp.path().join("received")),
        }),
        server.tokens(),
    );
    std::fs::create_dir_all(tmp.path().join("received")).unwrap();
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let _rcv = serve_until_dropped(l, app);

    let kc_dn = format!(
        "dcmKeycloakClientID={CLIENT_ID},dicomDeviceName=dcm4chee-arc,cn=Devices,cn=DICOM Configuration,dc=dcm4che,dc=org"
    );
    let extra = format!(
        "dn: {kc_dn}\nobjectClass: dcmKeycloakClient\ndcmKeycloakClientID: {CLIENT_ID}\n\
         dcmURI: {}\ndcmKeycloakRealm: test\ndcmKeycloakClientSecret: {SECRET}\n\n\
         dn: {DCM4CHEE_WEBAPP_DN}\nchangetype: modify\nadd: dcmKeycloakClientID\ndcmKeycloakClientID: {CLIENT_ID}\n-\n",
        server.base_url()
    );
    let cfg = write_config(tmp.path(), port, &extra);
    let (study_uid, files) = study(&tmp.path().join("src"), 2, 16);
    let data = tmp.path().join("data");
    import(&data, &files).await;
    let mut settings = Service::settings(ConfigSource::Ldif(cfg), &data);
    settings.tls = TlsSettings {
        ca_files: vec![certs.ca.cert.clone()],
        client_cert: Some(certs.client.cert.clone()),
        client_key: Some(certs.client.key.clone()),
    };
    let svc = Service::start_with_settings(settings).await;
    let t = svc.export_study("StowExporter", &study_uid).await;
    let done = svc.wait_done(t["taskID"].as_str().unwrap()).await;
    svc.stop().await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    assert_eq!(server.issued(), 1);
    assert_eq!(stored_in(&tmp.path().join("received")).len(), 2);
}

/// A plain http:// token URL to another host is refused before anything
/// is sent, naming the URL and the property that allows it; with the
/// property it is tried.
#[tokio::test]
async fn plain_http_token_url_to_another_host_is_refused_naming_the_property() {
    let url = "http://kc.example.invalid:8080/realms/test/protocol/openid-connect/token";
    let e = TokenSource::new(&keycloak(url, false, false), &TokenTransport::default()).unwrap_err();
    assert!(matches!(e, TokenError::InsecureUrl { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains(url) && msg.contains("allow-insecure-token-url=true"),
        "{msg}"
    );
    let allowed = TokenTransport {
        allow_insecure_url: true,
        ..Default::default()
    };
    assert!(TokenSource::new(&keycloak(url, false, false), &allowed).is_ok());

    // Through the service: the export fails with that reason, not retried.
    let tmp = tempfile::tempdir().unwrap();
    let kc_dn = format!(
        "dcmKeycloakClientID={CLIENT_ID},dicomDeviceName=dcm4chee-arc,cn=Devices,cn=DICOM Configuration,dc=dcm4che,dc=org"
    );
    let extra = format!(
        "dn: {kc_dn}\nobjectClass: dcmKeycloakClient\ndcmKeycloakClientID: {CLIENT_ID}\n\
         dcmURI: http://kc.example.invalid:8080\ndcmKeycloakRealm: test\ndcmKeycloakClientSecret: {SECRET}\n\n\
         dn: {DCM4CHEE_WEBAPP_DN}\nchangetype: modify\nadd: dcmKeycloakClientID\ndcmKeycloakClientID: {CLIENT_ID}\n-\n"
    );
    let cfg = write_config(tmp.path(), free_port(), &extra);
    let (study_uid, files) = study(&tmp.path().join("src"), 1, 16);
    let data = tmp.path().join("data");
    import(&data, &files).await;
    let svc = Service::start(&cfg, &data).await;
    let t = svc.export_study("StowExporter", &study_uid).await;
    let done = svc.wait_done(t["taskID"].as_str().unwrap()).await;
    svc.stop().await;
    assert_eq!(done["status"], "FAILED", "{done}");
    let error = done["errorMessage"].as_str().unwrap();
    assert!(
        error.contains(url) && error.contains("allow-insecure-token-url=true"),
        "{error}"
    );
}

/// A token endpoint answering 307 (or 308) with a Location elsewhere: the
/// client does not follow, the error names the status and the host, and
/// the redirect target never receives a request, let alone the secret.
#[tokio::test]
async fn token_endpoint_redirect_is_refused_and_the_target_gets_nothing() {
    let target = TokenServer::start(CLIENT_ID, SECRET, 60).await;
    for status in [
        StatusCode::TEMPORARY_REDIRECT,
        StatusCode::PERMANENT_REDIRECT,
    ] {
        let location = target.generic_url();
        let app = axum::Router::new().fallback(move || {
            let location = location.clone();
            async move { (status, [(header::LOCATION, location)]).into_response() }
        });
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/token", l.local_addr().unwrap());
        let _server = serve_until_dropped(l, app);

        let src =
            TokenSource::new(&keycloak(&url, false, false), &TokenTransport::default()).unwrap();
        let e = src.header().await.unwrap_err();
        match &e {
            TokenError::Redirect {
                status: s,
                location,
                ..
            } => {
                assert_eq!(*s, status.as_u16());
                assert_eq!(*location, target.addr.to_string());
            }
            other => panic!("{other}"),
        }
        assert!(!e.is_worth_retrying());
        let msg = e.to_string();
        assert!(
            msg.contains(&status.as_u16().to_string())
                && msg.contains(&target.addr.to_string())
                && !msg.contains(SECRET),
            "{msg}"
        );
    }
    assert_eq!(target.requests(), 0, "the redirect target got a request");
}

// --- credentials in URLs ---

/// Broker and token URLs whose password holds unencoded `/ ? # @ :` are
/// shown masked wherever the service prints them: the start-up error, the
/// settings' Debug, a token endpoint's error.
#[tokio::test]
async fn passwords_with_url_delimiters_never_show() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = write_config(tmp.path(), free_port(), "");
    for password in ["pa/ss?w#rd", "p@ss/w:rd", "s3cr3t#frag", "q?uery@x"] {
        // Nothing listens on port 1: start-up fails and says why.
        let queue_url = format!("amqp://guest:{password}@127.0.0.1:1/%2f");
        let mut settings =
            Service::settings(ConfigSource::Ldif(cfg.clone()), &tmp.path().join("data"));
        settings.queue_url = Some(queue_url.clone());
        let debug = format!("{settings:?}");
        assert!(!debug.contains(password), "{debug}");
        let e = match stow_exporter::app::Application::build(settings).await {
            Ok(_) => panic!("{queue_url}: started without a broker"),
            Err(e) => e.to_string(),
        };
        assert!(!e.contains(password), "{e}");

        let token_url = format!("http://exporter:{password}@127.0.0.1:1/token");
        match TokenSource::new(
            &keycloak(&token_url, false, false),
            &TokenTransport::default(),
        ) {
            Ok(src) => {
                assert!(!format!("{src:?}").contains(password));
                let e = src.header().await.unwrap_err();
                assert!(!e.to_string().contains(password), "{e}");
            }
            Err(e) => assert!(!e.to_string().contains(password), "{e}"),
        }
    }
}

// --- CSV ---

/// Every byte but ASCII letters and digits as `%XX`.
fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// A task whose batchID starts like a spreadsheet formula is listed in the
/// REST API's CSV with the formula neutralised (`'` in front, quoted).
#[tokio::test]
async fn csv_export_neutralises_formulas() {
    let tmp = tempfile::tempdir().unwrap();
    // The exporter's window is closed: the tasks wait, nothing is sent.
    let exporter_dn = "dcmExporterID=StowExporter,dicomDeviceName=dcm4chee-arc,cn=Devices,cn=DICOM Configuration,dc=dcm4che,dc=org";
    let cfg = write_config(tmp.path(), free_port(), &closed_window(exporter_dn));
    let svc = Service::start(&cfg, &tmp.path().join("data")).await;
    let batches = ["=1+2", "@SUM(A1)", "-2+3", "+cmd|' /C calc'!A0", "plain"];
    for b in batches {
        let r = svc
            .http
            .post(svc.url(&format!(
                "/aets/{AET}/rs/studies/1.2.3/export/StowExporter?batchID={}",
                percent_encode(b)
            )))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
    }
    for (accept, delimiter) in [("text/csv", ','), ("text/csv;delimiter=semicolon", ';')] {
        let r = svc
            .http
            .get(svc.url("/monitor/export"))
            .header(header::ACCEPT, accept)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let csv = r.text().await.unwrap();
        let column = csv
            .lines()
            .next()
            .unwrap()
            .split(delimiter)
            .position(|c| c == "batchID")
            .unwrap();
        let mut cells: Vec<String> = csv
            .lines()
            .skip(1)
            .map(|l| l.split(delimiter).nth(column).unwrap().to_string())
            .collect();
        cells.sort();
        let mut want = vec![
            "\"'=1+2\"".to_string(),
            "\"'@SUM(A1)\"".into(),
            "\"'-2+3\"".into(),
            "\"'+cmd|' /C calc'!A0\"".into(),
            "plain".into(),
        ];
        want.sort();
        assert_eq!(cells, want, "{csv}");
    }
    svc.stop().await;
}
