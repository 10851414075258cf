//! OAuth2 client credentials: `dcmKeycloakClient` entries in the
//! configuration, and `TokenSource` against a real token endpoint on
//! loopback (a small server speaking Keycloak's token protocol: the peer a
//! Keycloak would be).
//!
//! [`token_server`] is self-contained (axum, tokio, serde_json only), for
//! reuse by the end-to-end export tests: `TokenServer` issues short-lived
//! tokens and counts them, `require_bearer` puts a STOW receiver behind
//! those tokens.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use stow_exporter::config::model::{Grant, KeycloakClient};
use stow_exporter::config::{ConfigSource, DEFAULT_DEVICE_NAME, LoadError, Snapshot};
use stow_exporter::stow::oauth::{TokenError, TokenSource, TokenTransport};
use token_server::{TokenServer, ValidTokens, require_bearer};

#[path = "common/token_server.rs"]
pub mod token_server;

const CLIENT_ID: &str = "stow-exporter";
const SECRET: &str = "kc-s3cr3t/+&=";
const KC_DN: &str = "dcmKeycloakClientID=stow-exporter,dicomDeviceName=stowrsd,cn=Devices,cn=DICOM Configuration,dc=dcm4che,dc=org";

/// LDIF: the `dcmKeycloakClient` entry `CLIENT_ID` on device stowrsd with
/// `attrs` (`name: value` lines), and web app stowrsd referring to `refers_to`.
fn keycloak_ldif(attrs: &str, refers_to: &str) -> String {
    format!(
        "dn: {KC_DN}\nobjectClass: dcmKeycloakClient\ndcmKeycloakClientID: {CLIENT_ID}\n{attrs}\n\
         dn: {STOWRSD_WEBAPP_DN}\nchangetype: modify\nadd: dcmKeycloakClientID\ndcmKeycloakClientID: {refers_to}\n-\n"
    )
}

async fn load_with(extra: &str) -> Result<Snapshot, LoadError> {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = write_config(tmp.path(), 18080, extra);
    ConfigSource::Ldif(cfg).load(DEFAULT_DEVICE_NAME).await
}

fn errors(r: Result<Snapshot, LoadError>) -> Vec<String> {
    match r {
        Ok(_) => panic!("expected the configuration to be rejected"),
        Err(e) => e.errors(),
    }
}

/// The Keycloak client of web app stowrsd in `extra`'s configuration.
async fn client_from(extra: &str) -> KeycloakClient {
    let s = load_with(extra).await.unwrap();
    s.web_app("stowrsd").unwrap().keycloak.clone().unwrap()
}

fn kc_attrs(server: &TokenServer, secret: &str) -> String {
    format!(
        "dcmURI: {}\ndcmKeycloakRealm: test\ndcmKeycloakClientSecret: {secret}\n",
        server.base_url()
    )
}

// --- configuration ---

#[tokio::test]
async fn keycloak_client_loads_from_ldif() {
    let c = client_from(&keycloak_ldif(
        "dcmURI: https://keycloak:8843/\ndcmKeycloakRealm: dcm4che\ndcmKeycloakGrantType: client_credentials\n\
         dcmKeycloakClientSecret: s3cr3t\ndcmTLSAllowAnyHostname: TRUE\n",
        CLIENT_ID,
    ))
    .await;
    assert_eq!(c.id, CLIENT_ID);
    assert_eq!(c.client_id, CLIENT_ID);
    assert_eq!(c.dn, KC_DN);
    assert_eq!(
        c.token_url,
        "https://keycloak:8843/realms/dcm4che/protocol/openid-connect/token"
    );
    assert_eq!(c.grant, Grant::ClientCredentials);
    assert_eq!(c.secret.as_ref().unwrap().expose(), "s3cr3t");
    assert!(c.allow_any_hostname && !c.disable_trust_manager);
    // The web app without a reference has none; the secret is masked.
    let s = load_with(&keycloak_ldif(
        "dcmURI: https://keycloak:8843\ndcmKeycloakRealm: dcm4che\ndcmKeycloakClientSecret: s3cr3t\n",
        CLIENT_ID,
    ))
    .await
    .unwrap();
    assert!(s.web_app("DCM4CHEE").is_some_and(|w| w.keycloak.is_none()));
    let shown = format!(
        "{s:?}{}",
        serde_json::to_string(&s.web_app("stowrsd").unwrap()).unwrap()
    );
    assert!(
        shown.contains(KC_DN) && !shown.contains("s3cr3t"),
        "{shown}"
    );
}

#[tokio::test]
async fn generic_token_url_and_password_grant() {
    // No realm: dcmURI is the token URL (any OAuth2 server).
    let c = client_from(&keycloak_ldif(
        "dcmURI: https://login.example.com/tenant/oauth2/v2.0/token\ndcmKeycloakClientSecret: x\n",
        CLIENT_ID,
    ))
    .await;
    assert_eq!(
        c.token_url,
        "https://login.example.com/tenant/oauth2/v2.0/token"
    );
    // A dcmURI ending in /token is the token URL even with a realm (which
    // dcm4che's schema makes mandatory in LDAP).
    let c = client_from(&keycloak_ldif(
        "dcmURI: https://auth.example.com/oauth/token\ndcmKeycloakRealm: unused\ndcmKeycloakClientSecret: x\n",
        CLIENT_ID,
    ))
    .await;
    assert_eq!(c.token_url, "https://auth.example.com/oauth/token");
    // A realm is one path segment.
    let c = client_from(&keycloak_ldif(
        "dcmURI: http://kc:8080/auth\ndcmKeycloakRealm: my realm/x\ndcmKeycloakClientSecret: x\n",
        CLIENT_ID,
    ))
    .await;
    assert_eq!(
        c.token_url,
        "http://kc:8080/auth/realms/my%20realm%2Fx/protocol/openid-connect/token"
    );
    // Password grant: uid and userPassword; a public client has no secret.
    let c = client_from(&keycloak_ldif(
        "dcmURI: https://kc\ndcmKeycloakRealm: r\ndcmKeycloakGrantType: password\nuid: exporter\nuserPassword: pw\n",
        CLIENT_ID,
    ))
    .await;
    assert!(c.secret.is_none());
    match &c.grant {
        Grant::Password { user, password } => {
            assert_eq!((user.as_str(), password.expose()), ("exporter", "pw"));
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn unknown_reference_names_web_app_dn_and_attribute() {
    let errs = errors(
        load_with(&keycloak_ldif(
            "dcmURI: https://kc\ndcmKeycloakRealm: r\ndcmKeycloakClientSecret: x\n",
            "no-such-client",
        ))
        .await,
    );
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0].starts_with(&format!(
            "{STOWRSD_WEBAPP_DN}: dcmKeycloakClientID: no dcmKeycloakClient \"no-such-client\" on the web application's device"
        )),
        "{errs:?}"
    );

    // A client of another device does not count (dcm4chee: the web app's device).
    let other = "dicomDeviceName=dcm4chee-arc,cn=Devices,cn=DICOM Configuration,dc=dcm4che,dc=org";
    let extra = format!(
        "dn: dcmKeycloakClientID=elsewhere,{other}\nobjectClass: dcmKeycloakClient\ndcmKeycloakClientID: elsewhere\n\
         dcmURI: https://kc\ndcmKeycloakRealm: r\ndcmKeycloakClientSecret: x\n\n\
         dn: {STOWRSD_WEBAPP_DN}\nchangetype: modify\nadd: dcmKeycloakClientID\ndcmKeycloakClientID: elsewhere\n-\n"
    );
    let errs = errors(load_with(&extra).await);
    assert!(
        errs[0].starts_with(&format!("{STOWRSD_WEBAPP_DN}: dcmKeycloakClientID: ")),
        "{errs:?}"
    );
}

#[tokio::test]
async fn keycloak_client_errors_name_dn_and_attribute() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "dcmKeycloakRealm: r\ndcmKeycloakClientSecret: x\n",
            "dcmURI",
            "missing",
        ),
        (
            "dcmURI: keycloak:8843\ndcmKeycloakRealm: r\ndcmKeycloakClientSecret: x\n",
            "dcmURI",
            "is not an http:// or https:// URL",
        ),
        (
            "dcmURI: https://kc\ndcmKeycloakRealm: r\ndcmKeycloakGrantType: authorization_code\ndcmKeycloakClientSecret: x\n",
            "dcmKeycloakGrantType",
            "\"authorization_code\" is not supported",
        ),
        (
            "dcmURI: https://kc\ndcmKeycloakRealm: r\n",
            "dcmKeycloakClientSecret",
            "missing",
        ),
        (
            "dcmURI: https://kc\ndcmKeycloakRealm: r\ndcmKeycloakGrantType: password\nuserPassword: pw\n",
            "uid",
            "missing",
        ),
        (
            "dcmURI: https://kc\ndcmKeycloakRealm: r\ndcmKeycloakGrantType: password\nuid: u\nuserPassword: {SSHA}c2VjcmV0aGFzaA==\n",
            "userPassword",
            "holds a password hash",
        ),
        (
            "dcmURI: https://kc\ndcmKeycloakRealm: r\ndcmKeycloakClientSecret: x\ndcmTLSDisableTrustManager: yes\n",
            "dcmTLSDisableTrustManager",
            "\"yes\" is not TRUE or FALSE",
        ),
    ];
    for (attrs, attr, what) in cases {
        let errs = errors(load_with(&keycloak_ldif(attrs, CLIENT_ID)).await);
        assert!(
            errs.iter()
                .any(|e| e.starts_with(&format!("{KC_DN}: {attr}: ")) && e.contains(what)),
            "{attrs}: {errs:?}"
        );
        assert!(
            !errs.iter().any(|e| e.contains("c2VjcmV0aGFzaA")),
            "{errs:?}"
        );
    }
}

// --- tokens ---

#[tokio::test]
async fn token_is_fetched_reused_and_refreshed_before_expiry() {
    let server = TokenServer::start(CLIENT_ID, SECRET, 2).await;
    let c = client_from(&keycloak_ldif(&kc_attrs(&server, SECRET), CLIENT_ID)).await;
    assert_eq!(c.token_url, server.url());
    let src = TokenSource::new(&c, &TokenTransport::default()).unwrap();
    let valid = server.tokens();
    let bearer = |h: &reqwest::header::HeaderValue| {
        h.to_str()
            .unwrap()
            .strip_prefix("Bearer ")
            .unwrap()
            .to_string()
    };

    let h1 = src.header().await.unwrap();
    assert!(h1.is_sensitive());
    assert!(valid.is_valid(&bearer(&h1)));
    assert_eq!(server.issued(), 1);
    // Within its lifetime (2 s, refreshed when 1 s is left): reused.
    assert_eq!(src.header().await.unwrap(), h1);
    assert_eq!(server.issued(), 1);

    // Past the refresh point, before expiry: a new one, the old still valid.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(valid.is_valid(&bearer(&h1)));
    let h2 = src.header().await.unwrap();
    assert_ne!(h2, h1);
    assert_eq!(server.issued(), 2);

    // A token the destination refused is dropped once: a 401 for h1
    // (already replaced) changes nothing, one for h2 forces a refresh.
    src.invalidate(&h1);
    assert_eq!(src.header().await.unwrap(), h2);
    src.invalidate(&h2);
    let h3 = src.header().await.unwrap();
    assert_ne!(h3, h2);
    assert_eq!(server.issued(), 3);

    // A longer lifetime from the server is honoured.
    server.set_expires_in(300);
    src.invalidate(&h3);
    let h4 = src.header().await.unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(src.header().await.unwrap(), h4);
    assert_eq!(server.issued(), 4);
}

#[tokio::test]
async fn generic_token_url_and_password_grant_get_tokens() {
    let server = TokenServer::start(CLIENT_ID, SECRET, 60).await;
    let c = client_from(&keycloak_ldif(
        &format!(
            "dcmURI: {}\ndcmKeycloakClientSecret: {SECRET}\n",
            server.generic_url()
        ),
        CLIENT_ID,
    ))
    .await;
    TokenSource::new(&c, &TokenTransport::default())
        .unwrap()
        .header()
        .await
        .unwrap();
    assert_eq!(server.issued(), 1);

    server.set_user("exporter", "p@ss word");
    let c = client_from(&keycloak_ldif(
        &format!(
            "{}dcmKeycloakGrantType: password\nuid: exporter\nuserPassword: p@ss word\n",
            kc_attrs(&server, SECRET)
        ),
        CLIENT_ID,
    ))
    .await;
    TokenSource::new(&c, &TokenTransport::default())
        .unwrap()
        .header()
        .await
        .unwrap();
    assert_eq!(server.issued(), 2);
}

#[tokio::test]
async fn refused_credentials_name_url_and_status_never_the_secret() {
    let server = TokenServer::start(CLIENT_ID, SECRET, 2).await;
    let wrong = "wr0ng-s3cr3t";
    let c = client_from(&keycloak_ldif(&kc_attrs(&server, wrong), CLIENT_ID)).await;
    let src = TokenSource::new(&c, &TokenTransport::default()).unwrap();
    let e = src.header().await.unwrap_err();
    assert!(matches!(e, TokenError::Status { status: 401, .. }), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.starts_with(&format!(
            "token endpoint {} answered HTTP 401",
            server.url()
        )),
        "{msg}"
    );
    assert!(msg.contains("unauthorized_client"), "{msg}");
    assert!(
        !msg.contains(wrong) && !format!("{e:?}").contains(wrong),
        "{msg}"
    );
    assert!(!format!("{src:?}").contains(wrong));

    // An unknown realm is named with the URL too.
    let c = client_from(&keycloak_ldif(
        &format!(
            "dcmURI: {}\ndcmKeycloakRealm: nope\ndcmKeycloakClientSecret: {SECRET}\n",
            server.base_url()
        ),
        CLIENT_ID,
    ))
    .await;
    let e = TokenSource::new(&c, &TokenTransport::default())
        .unwrap()
        .header()
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(404));
    assert!(e.to_string().contains("/realms/nope/"), "{e}");
}

#[tokio::test]
async fn concurrent_callers_on_an_empty_cache_share_one_fetch() {
    let server = TokenServer::start(CLIENT_ID, SECRET, 60).await;
    server.set_delay(Duration::from_millis(200));
    let c = client_from(&keycloak_ldif(&kc_attrs(&server, SECRET), CLIENT_ID)).await;
    let src = TokenSource::new(&c, &TokenTransport::default()).unwrap();
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let src = src.clone();
            tokio::spawn(async move { src.header().await })
        })
        .collect();
    let mut headers = Vec::new();
    for t in tasks {
        headers.push(t.await.unwrap().unwrap());
    }
    assert!(headers.iter().all(|h| *h == headers[0]));
    assert_eq!((server.issued(), server.requests()), (1, 1));

    // Concurrent 401s for the same token: one refresh.
    let used = headers[0].clone();
    for _ in 0..10 {
        src.invalidate(&used);
    }
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let (src, used) = (src.clone(), used.clone());
            tokio::spawn(async move {
                src.invalidate(&used);
                src.header().await
            })
        })
        .collect();
    for t in tasks {
        assert_ne!(t.await.unwrap().unwrap(), used);
    }
    assert_eq!(server.issued(), 2);
}

// --- the bearer gate for STOW receivers ---

#[tokio::test]
async fn require_bearer_refuses_unknown_and_expired_tokens() {
    let server = TokenServer::start(CLIENT_ID, SECRET, 1).await;
    let valid: Arc<ValidTokens> = server.tokens();
    let app = require_bearer(
        axum::Router::new().route("/stowrs/studies", axum::routing::post(|| async { "ok" })),
        valid.clone(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/stowrs/studies", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let c = client_from(&keycloak_ldif(&kc_attrs(&server, SECRET), CLIENT_ID)).await;
    let src = TokenSource::new(&c, &TokenTransport::default()).unwrap();
    let http = reqwest::Client::new();
    let post = |h: Option<reqwest::header::HeaderValue>| {
        let mut r = http.post(&url);
        if let Some(h) = h {
            r = r.header(reqwest::header::AUTHORIZATION, h);
        }
        async move { r.send().await.unwrap() }
    };
    let r = post(None).await;
    assert_eq!(r.status(), 401);
    assert!(r.headers().contains_key("www-authenticate"));
    assert_eq!(
        post(Some("Bearer forged".parse().unwrap())).await.status(),
        401
    );
    let h = src.header().await.unwrap();
    assert_eq!(post(Some(h.clone())).await.status(), 200);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(post(Some(h.clone())).await.status(), 401, "expired");
    // The source had refreshed it anyway (1 s lifetime, 0.5 s margin).
    assert_eq!(post(Some(src.header().await.unwrap())).await.status(), 200);
    valid.revoke_all();
    assert_eq!(post(Some(src.header().await.unwrap())).await.status(), 401);
    assert_eq!(
        (
            valid.accepted.load(std::sync::atomic::Ordering::SeqCst),
            valid.rejected.load(std::sync::atomic::Ordering::SeqCst)
        ),
        (2, 4)
    );
}

// --- LDAP ---

/// The entry as slapd stores it with our schema (dcm4che's MUST list), read
/// back through the LDAP source.
#[tokio::test]
async fn keycloak_client_in_slapd_resolves_like_the_files() {
    use std::process::Command;
    // Not a skip: a test that did not run is not a pass.
    assert!(
        Command::new("slapd").arg("-VV").output().is_ok()
            || std::path::Path::new("/usr/sbin/slapd").exists(),
        "slapd is not installed: run scripts/test.sh, which installs it"
    );
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/slapd.sh");
    let tmp = tempfile::tempdir().unwrap();
    let extra = keycloak_ldif(
        "dcmURI: https://keycloak:8843\ndcmKeycloakRealm: dcm4che\ndcmKeycloakGrantType: password\n\
         dcmKeycloakClientSecret: s3cr3t\nuid: exporter\nuserPassword: pw\ndcmTLSDisableTrustManager: TRUE\n",
        CLIENT_ID,
    );
    let cfg = write_config(tmp.path(), 18080, &extra);
    let port = loop {
        let p = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if p < 65000 && std::net::TcpListener::bind(("127.0.0.1", p + 1)).is_ok() {
            break p;
        }
    };
    let dir = tmp.path().join("slapd");
    struct Stop<'a>(&'a std::path::Path, &'a std::path::Path);
    impl Drop for Stop<'_> {
        fn drop(&mut self) {
            let _ = std::process::Command::new("bash")
                .arg(self.0)
                .arg("stop")
                .arg(self.1)
                .status();
        }
    }
    let run = |args: &[&str]| {
        let out = Command::new("bash")
            .arg(&script)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "slapd.sh {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let dir_s = dir.to_str().unwrap().to_string();
    run(&["start", &dir_s, &port.to_string()]);
    let _stop = Stop(&script, &dir);
    run(&["load", &dir_s, &port.to_string(), cfg.to_str().unwrap()]);

    let mut l = stow_exporter::config::LdapSource::new(format!("ldap://127.0.0.1:{port}"));
    l.bind_dn = Some("cn=admin,dc=dcm4che,dc=org".into());
    l.password = Some(stow_exporter::config::Secret::new("secret"));
    let from_ldap = ConfigSource::Ldap(l)
        .load(DEFAULT_DEVICE_NAME)
        .await
        .unwrap();
    let from_files = ConfigSource::Ldif(cfg)
        .load(DEFAULT_DEVICE_NAME)
        .await
        .unwrap();
    let k = from_ldap.web_app("stowrsd").unwrap().keycloak.clone();
    assert_eq!(k, from_files.web_app("stowrsd").unwrap().keycloak);
    let k = k.unwrap();
    assert_eq!(
        k.token_url,
        "https://keycloak:8843/realms/dcm4che/protocol/openid-connect/token"
    );
    assert!(
        matches!(k.grant, Grant::Password { ref user, ref password } if user == "exporter" && password.expose() == "pw")
    );
}

// --- end to end: the exporter against a receiver that wants tokens ---

/// The real stowrsd behind `require_bearer`, each request held `delay`.
async fn guarded_receiver(dir: &std::path::Path, valid: Arc<ValidTokens>, delay: Duration) -> u16 {
    use stow_exporter::stowrsd::{self, StowrsdOptions};
    let slow = move |req: axum::extract::Request, next: axum::middleware::Next| async move {
        tokio::time::sleep(delay).await;
        next.run(req).await
    };
    let app = require_bearer(
        stowrsd::router(StowrsdOptions {
            store_dir: Some(dir.to_path_buf()),
        }),
        valid,
    )
    .layer(axum::middleware::from_fn(slow));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    port
}

#[tokio::test]
async fn an_export_outlives_its_tokens_and_a_revoked_token_is_replaced() {
    use std::sync::atomic::Ordering;
    let tmp = tempfile::tempdir().unwrap();
    // Tokens live 2 s; the export takes about 5 s.
    let server = TokenServer::start(CLIENT_ID, SECRET, 2).await;
    let valid = server.tokens();
    let received = tmp.path().join("received");
    let port = guarded_receiver(&received, valid.clone(), Duration::from_millis(150)).await;
    let cfg = write_config(
        tmp.path(),
        port,
        &keycloak_ldif(&kc_attrs(&server, SECRET), CLIENT_ID),
    );
    let (study_uid, files) = study(&tmp.path().join("src"), 30, 32);
    let data = tmp.path().join("data");
    import(&data, &files).await;
    let svc = Service::start(&cfg, &data).await;
    let t = svc.export_study("STOWRSD", &study_uid).await;
    // A key rotation in the middle: every token issued so far is revoked.
    let v = valid.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(700)).await;
        v.revoke_all();
    });
    let done = svc.wait_done(t["taskID"].as_str().unwrap()).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    assert_eq!(done["failures"], 0, "{done}");
    for f in &files {
        assert!(received.join(format!("{}.dcm", sop_uid(f))).exists());
    }
    // Refreshed as tokens expired (dcm4chee would have kept the first one),
    // and the revoked one was answered 401 once, then replaced.
    assert!(server.issued() >= 3, "issued {}", server.issued());
    let rejected = valid.rejected.load(Ordering::SeqCst);
    assert!((1..=2).contains(&rejected), "rejected {rejected}");
    assert_eq!(valid.accepted.load(Ordering::SeqCst), 30);
    svc.stop().await;
}

#[tokio::test]
async fn a_refused_client_fails_the_task_without_retrying_or_showing_the_secret() {
    let tmp = tempfile::tempdir().unwrap();
    let server = TokenServer::start(CLIENT_ID, SECRET, 60).await;
    let port = guarded_receiver(
        &tmp.path().join("received"),
        server.tokens(),
        Duration::ZERO,
    )
    .await;
    let cfg = write_config(
        tmp.path(),
        port,
        &keycloak_ldif(&kc_attrs(&server, "wrong-s3cr3t"), CLIENT_ID),
    );
    let (study_uid, files) = study(&tmp.path().join("src"), 2, 32);
    let data = tmp.path().join("data");
    import(&data, &files).await;
    let svc = Service::start(&cfg, &data).await;
    let t = svc.export_study("STOWRSD", &study_uid).await;
    let done = svc.wait_done(t["taskID"].as_str().unwrap()).await;
    // The queue of STOWRSD retries 10 times, but a refused client would be
    // refused again.
    assert_eq!(done["status"], "FAILED", "{done}");
    assert_eq!(done["failures"], 1, "{done}");
    let err = done["errorMessage"].as_str().unwrap();
    assert!(
        err.contains("cannot get an access token") && err.contains("401"),
        "{err}"
    );
    assert!(!done.to_string().contains("wrong-s3cr3t"), "{done}");
    svc.stop().await;
}
