//! HTTPS fixtures: certificates made with the `openssl` command in a
//! temporary directory, and the real stowrsd receiver served over TLS
//! (tokio-rustls) on a loopback port, optionally requiring a client
//! certificate.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use stow_exporter::stowrsd::{self, StowrsdOptions};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

/// A certificate and its key, as PEM files.
#[derive(Debug, Clone)]
pub struct Pair {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Every certificate the TLS tests use.
#[derive(Debug, Clone)]
pub struct Certs {
    /// The CA the tests trust (`--tls-ca-file`).
    pub ca: Pair,
    /// Signed by `ca` for IP 127.0.0.1 and DNS localhost.
    pub server: Pair,
    /// Signed by `ca`, but for DNS other.example only.
    pub wrong_name: Pair,
    /// Self-signed, for 127.0.0.1.
    pub self_signed: Pair,
    /// A second CA nobody trusts.
    pub unknown_ca: Pair,
    /// Signed by `unknown_ca` for 127.0.0.1.
    pub unknown_issuer: Pair,
    /// A client certificate signed by `ca`.
    pub client: Pair,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the openssl command runs (scripts/test.sh installs it)");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A fresh P-256 key and a certificate request for `cn`.
fn key_and_csr(dir: &Path, name: &str, cn: &str) {
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            &format!("/CN={cn}"),
        ],
    );
}

/// Signs `name.csr` with `issuer` (itself when None) using the extensions `ext`.
fn sign(dir: &Path, name: &str, issuer: Option<&str>, ext: &str) -> Pair {
    let ext_file = format!("{name}.ext");
    std::fs::write(dir.join(&ext_file), format!("[v3]\n{ext}\n")).unwrap();
    let cert = format!("{name}.pem");
    let key = format!("{name}.key");
    let mut args = vec![
        "x509",
        "-req",
        "-in",
        &format!("{name}.csr"),
        "-out",
        &cert,
        "-days",
        "2",
        "-extfile",
        &ext_file,
        "-extensions",
        "v3",
    ]
    .into_iter()
    .map(String::from)
    .collect::<Vec<_>>();
    match issuer {
        Some(ca) => args.extend(
            [
                "-CA",
                &format!("{ca}.pem"),
                "-CAkey",
                &format!("{ca}.key"),
                "-set_serial",
                &format!("{}", rand_serial()),
            ]
            .map(String::from),
        ),
        None => args.extend(["-signkey".to_string(), key.clone()]),
    }
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    openssl(dir, &refs);
    Pair {
        cert: dir.join(cert),
        key: dir.join(key),
    }
}

fn rand_serial() -> u64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        & 0x7fff_ffff_ffff
}

const CA_EXT: &str = "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\nsubjectKeyIdentifier=hash";
const SERVER_EXT: &str = "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth";

/// Makes all certificates in `dir`.
pub fn make_certs(dir: &Path) -> Certs {
    std::fs::create_dir_all(dir).unwrap();
    let server_ext = |san: &str| format!("{SERVER_EXT}\nsubjectAltName={san}");

    key_and_csr(dir, "ca", "stow-exporter test CA");
    let ca = sign(dir, "ca", None, CA_EXT);
    key_and_csr(dir, "unknown-ca", "unknown test CA");
    let unknown_ca = sign(dir, "unknown-ca", None, CA_EXT);

    key_and_csr(dir, "server", "127.0.0.1");
    let server = sign(
        dir,
        "server",
        Some("ca"),
        &server_ext("IP:127.0.0.1,DNS:localhost"),
    );
    key_and_csr(dir, "wrong-name", "other.example");
    let wrong_name = sign(
        dir,
        "wrong-name",
        Some("ca"),
        &server_ext("DNS:other.example"),
    );
    key_and_csr(dir, "self-signed", "127.0.0.1");
    let self_signed = sign(dir, "self-signed", None, &server_ext("IP:127.0.0.1"));
    key_and_csr(dir, "unknown-issuer", "127.0.0.1");
    let unknown_issuer = sign(
        dir,
        "unknown-issuer",
        Some("unknown-ca"),
        &server_ext("IP:127.0.0.1"),
    );
    key_and_csr(dir, "client", "stow-exporter client");
    let client = sign(
        dir,
        "client",
        Some("ca"),
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth",
    );
    Certs {
        ca,
        server,
        wrong_name,
        self_signed,
        unknown_ca,
        unknown_issuer,
        client,
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The server side: `pair` as the server's certificate; with `client_ca`,
/// a client certificate signed by it is required.
fn server_config(pair: &Pair, client_ca: Option<&Path>) -> rustls::ServerConfig {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&pair.cert)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(&pair.key).unwrap();
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_file_iter(ca).unwrap() {
                roots.add(c.unwrap()).unwrap();
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .unwrap();
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(chain, key).unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config
}

/// Accepts TCP connections and completes the TLS handshake; a failed
/// handshake is recorded and the next connection taken.
pub struct TlsListener {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    failures: Arc<Mutex<Vec<String>>>,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((tcp, addr)) = self.tcp.accept().await else {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            match tokio::time::timeout(Duration::from_secs(10), self.acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => return (tls, addr),
                Ok(Err(e)) => self.failures.lock().unwrap().push(e.to_string()),
                Err(_) => self
                    .failures
                    .lock()
                    .unwrap()
                    .push("handshake timed out".into()),
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

/// A TLS listener on `tcp` for any app, with `pair` as the server's
/// certificate (with `client_ca`, a client certificate signed by it is
/// required), and where its failed handshakes are recorded.
pub fn tls_listener(
    tcp: TcpListener,
    pair: &Pair,
    client_ca: Option<&Path>,
) -> (TlsListener, Arc<Mutex<Vec<String>>>) {
    let failures: Arc<Mutex<Vec<String>>> = Arc::default();
    let listener = TlsListener {
        tcp,
        acceptor: TlsAcceptor::from(Arc::new(server_config(pair, client_ca))),
        failures: failures.clone(),
    };
    (listener, failures)
}

/// The real stowrsd over HTTPS on a loopback port.
pub struct HttpsReceiver {
    pub addr: SocketAddr,
    pub dir: PathBuf,
    /// Why handshakes failed, as the server saw it.
    pub failures: Arc<Mutex<Vec<String>>>,
    _server: super::ServerGuard,
}

impl HttpsReceiver {
    /// Serves stowrsd, storing into `dir`, with `pair` as its certificate;
    /// with `client_ca` it requires a client certificate signed by that CA.
    pub async fn start(dir: &Path, pair: &Pair, client_ca: Option<&Path>) -> HttpsReceiver {
        std::fs::create_dir_all(dir).unwrap();
        let acceptor = TlsAcceptor::from(Arc::new(server_config(pair, client_ca)));
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        let failures: Arc<Mutex<Vec<String>>> = Arc::default();
        let listener = TlsListener {
            tcp,
            acceptor,
            failures: failures.clone(),
        };
        let app = stowrsd::router(StowrsdOptions {
            store_dir: Some(dir.to_path_buf()),
        });
        HttpsReceiver {
            addr,
            dir: dir.to_path_buf(),
            failures,
            _server: super::serve_until_dropped(listener, app),
        }
    }

    pub fn failures(&self) -> Vec<String> {
        self.failures.lock().unwrap().clone()
    }

    /// Files stored so far.
    pub fn stored(&self) -> Vec<PathBuf> {
        super::stored_in(&self.dir)
    }
}
