//! TLS for `https` web applications.
//!
//! [`client_config`] builds one rustls configuration per client. By
//! default it checks the server's certificate chain against the system's
//! roots plus the configured CA files and the host name against the
//! certificate. The web app's `dcmProperty` values relax that the way
//! dcm4chee does:
//!
//! - `allow-any-hostname=true` accepts a certificate issued for another
//!   host name, but its chain must still lead to a trusted CA;
//! - `disable-trust-manager=true` checks nothing about the certificate
//!   (the handshake signatures are still verified).
//!
//! A client certificate (mutual TLS) is sent when one is configured. The
//! aws-lc-rs provider is used explicitly: the project keeps one crypto
//! provider.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

/// TLS settings shared by all `https` web applications (`serve
/// --tls-ca-file/--tls-client-cert/--tls-client-key`). Holds paths only,
/// never key material.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsSettings {
    /// PEM files of CA certificates trusted in addition to the system's roots.
    pub ca_files: Vec<PathBuf>,
    /// PEM file of the client certificate (chain), sent when a server asks.
    pub client_cert: Option<PathBuf>,
    /// PEM file of the client certificate's private key; when absent it is
    /// looked for in `client_cert`.
    pub client_key: Option<PathBuf>,
}

/// Why a TLS configuration could not be built; names the file and what
/// was wrong with it.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{what} {}: {source}", path.display())]
    Read {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{what} {}: not valid PEM: {source}", path.display())]
    Pem {
        what: &'static str,
        path: PathBuf,
        source: pem::Error,
    },
    #[error("{what} {}: no certificates found", path.display())]
    NoCertificates { what: &'static str, path: PathBuf },
    #[error("CA file {}: {source}", path.display())]
    BadCa {
        path: PathBuf,
        source: rustls::Error,
    },
    #[error("client key {}: no private key", path.display())]
    NoPrivateKey { path: PathBuf },
    #[error("a client key ({}) needs a client certificate", path.display())]
    KeyWithoutCertificate { path: PathBuf },
    #[error("client certificate {} with key {}: {source}", cert.display(), key.display())]
    ClientAuth {
        cert: PathBuf,
        key: PathBuf,
        source: rustls::Error,
    },
    #[error(
        "no trusted CA certificates: the system store has none{system} and no CA file is configured"
    )]
    NoRoots { system: String },
    #[error("cannot build the certificate verifier: {0}")]
    Verifier(#[from] rustls::client::VerifierBuilderError),
    #[error("TLS protocol versions: {0}")]
    Versions(rustls::Error),
}

impl TlsSettings {
    /// Reads the configured files (CA files, client certificate and key)
    /// and reports the first problem, without consulting the system's
    /// roots: a start-up check, so that a wrong path fails at once rather
    /// than in every task.
    pub fn check(&self) -> Result<(), TlsError> {
        let mut roots = rustls::RootCertStore::empty();
        add_ca_files(&mut roots, &self.ca_files)?;
        identity(self)?;
        Ok(())
    }
}

/// The rustls configuration of one client (HTTP/1.1 only, as the client is).
pub fn client_config(
    settings: &TlsSettings,
    allow_any_hostname: bool,
    disable_trust_manager: bool,
) -> Result<rustls::ClientConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Versions)?;
    let verifier: Arc<dyn ServerCertVerifier> = if disable_trust_manager {
        Arc::new(AcceptAnyCertificate(provider))
    } else {
        let roots = Arc::new(roots(settings)?);
        let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider).build()?;
        if allow_any_hostname {
            Arc::new(AnyHostname(webpki))
        } else {
            webpki
        }
    };
    let builder = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match identity(settings)? {
        Some((cert_path, key_path, chain, key)) => builder
            .with_client_auth_cert(chain, key)
            .map_err(|source| TlsError::ClientAuth {
                cert: cert_path,
                key: key_path,
                source,
            })?,
        None => builder.with_no_client_auth(),
    };
    // reqwest sets ALPN only on configurations it builds itself; the
    // client speaks HTTP/1.1 only, so offer nothing else.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// The system's roots plus the CA files. A system store that fails in
/// part is a warning; no roots at all is an error.
fn roots(settings: &TlsSettings) -> Result<rustls::RootCertStore, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for e in &native.errors {
        tracing::warn!("system CA certificates: {e}");
    }
    let (added, ignored) = roots.add_parsable_certificates(native.certs);
    if ignored > 0 {
        tracing::debug!(
            added,
            ignored,
            "system CA certificates that rustls cannot use skipped"
        );
    }
    add_ca_files(&mut roots, &settings.ca_files)?;
    if roots.is_empty() {
        let system = native
            .errors
            .first()
            .map(|e| format!(" ({e})"))
            .unwrap_or_default();
        return Err(TlsError::NoRoots { system });
    }
    Ok(roots)
}

fn add_ca_files(roots: &mut rustls::RootCertStore, files: &[PathBuf]) -> Result<(), TlsError> {
    for path in files {
        for cert in read_certs("CA file", path)? {
            roots.add(cert).map_err(|source| TlsError::BadCa {
                path: path.clone(),
                source,
            })?;
        }
    }
    Ok(())
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_path_buf(),
        source,
    })
}

/// Every certificate in a PEM file; at least one.
fn read_certs(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(what, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Pem {
            what,
            path: path.to_path_buf(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificates {
            what,
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

type Identity = (
    PathBuf,
    PathBuf,
    Vec<CertificateDer<'static>>,
    PrivateKeyDer<'static>,
);

/// The client certificate chain and its key, when configured.
fn identity(settings: &TlsSettings) -> Result<Option<Identity>, TlsError> {
    let Some(cert_path) = &settings.client_cert else {
        return match &settings.client_key {
            Some(k) => Err(TlsError::KeyWithoutCertificate { path: k.clone() }),
            None => Ok(None),
        };
    };
    let chain = read_certs("client certificate", cert_path)?;
    let key_path = settings.client_key.as_ref().unwrap_or(cert_path);
    let pem = read("client key", key_path)?;
    let key = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        pem::Error::NoItemsFound => TlsError::NoPrivateKey {
            path: key_path.clone(),
        },
        source => TlsError::Pem {
            what: "client key",
            path: key_path.clone(),
            source,
        },
    })?;
    Ok(Some((cert_path.clone(), key_path.clone(), chain, key)))
}

/// `allow-any-hostname=true`: the chain is verified as usual, only a
/// certificate issued for another name is accepted.
#[derive(Debug)]
struct AnyHostname(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for AnyHostname {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // WebPkiServerVerifier checks the name last, after the chain.
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => {
                tracing::debug!(
                    server = ?server_name,
                    "certificate for another host name accepted (allow-any-hostname)"
                );
                Ok(ServerCertVerified::assertion())
            }
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// `disable-trust-manager=true`: any certificate, any name. The
/// handshake signatures are still checked, so the peer holds the key of
/// the certificate it showed.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let empty = file(dir.path(), "empty.pem", "nothing here\n");
        let s = TlsSettings {
            ca_files: vec![empty.clone()],
            ..Default::default()
        };
        let e = client_config(&s, false, false).unwrap_err().to_string();
        assert_eq!(
            e,
            format!("CA file {}: no certificates found", empty.display())
        );
        assert_eq!(s.check().unwrap_err().to_string(), e);

        let gone = dir.path().join("gone.pem");
        let s = TlsSettings {
            ca_files: vec![gone.clone()],
            ..Default::default()
        };
        let e = s.check().unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("CA file {}: ", gone.display())),
            "{e}"
        );

        let s = TlsSettings {
            client_key: Some(empty.clone()),
            ..Default::default()
        };
        assert!(matches!(
            s.check(),
            Err(TlsError::KeyWithoutCertificate { .. })
        ));
    }

    #[test]
    fn no_verification_needs_no_roots() {
        // disable-trust-manager consults no roots at all.
        let s = TlsSettings::default();
        let c = client_config(&s, false, true).unwrap();
        assert_eq!(c.alpn_protocols, vec![b"http/1.1".to_vec()]);
    }
}
