//! Reading the configuration from an LDAP directory (OpenLDAP, or any
//! server holding dcm4che's schema).
//!
//! One paged subtree search under `cn=Devices,cn=DICOM Configuration,<base>`
//! fetches every entry kind the service reads (devices, connections, AEs,
//! web apps, exporters, queues, Keycloak clients) into the same raw
//! [`Directory`] the LDIF reader builds, so validation is shared. Search
//! references are filtered out (ldap3 panics on them otherwise), attribute
//! names are matched case-insensitively downstream.
//!
//! Binding: a bind DN needs a password (an empty one would be an anonymous
//! bind under RFC 4513 5.1.2, silently reading as nobody); a password sent
//! over plain `ldap://` to another host without StartTLS is named by
//! [`LdapSource::cleartext_password_warning`].

use std::collections::hash_map::DefaultHasher;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ldap3::adapters::{Adapter, EntriesOnly, PagedResults};
use ldap3::{Ldap, LdapConnAsync, LdapConnSettings, Scope, SearchEntry};

use super::entry::{Directory, Dn, RawEntry};
use super::model::Secret;

/// The default base DN, as in dcm4chee-arc.
pub const DEFAULT_BASE_DN: &str = "dc=dcm4che,dc=org";

/// Entries fetched per page of the paged search.
const PAGE_SIZE: i32 = 500;

/// How long to wait for the server to answer one operation.
const OP_TIMEOUT: Duration = Duration::from_secs(30);

const FILTER: &str = "(|(objectClass=dicomDevice)(objectClass=dicomNetworkConnection)(objectClass=dicomNetworkAE)\
(objectClass=dcmWebApp)(objectClass=dcmExporter)(objectClass=dcmQueue)(objectClass=dcmKeycloakClient)\
(objectClass=dcmExportRule)(objectClass=dicomTransferCapability))";

/// Why the directory could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LdapError {
    /// The server could not be reached (refused, timed out, TLS failed):
    /// worth retrying later.
    #[error("LDAP server {url} unreachable: {reason}")]
    Unreachable { url: String, reason: String },
    /// The server answered with an error (bind refused, no such base ...).
    #[error("LDAP server {url}: {operation} failed: {reason}")]
    Refused {
        url: String,
        operation: &'static str,
        reason: String,
    },
    #[error("cannot read {path}: {reason}")]
    File { path: PathBuf, reason: String },
    /// A bind DN without a password: refused instead of binding
    /// anonymously.
    #[error(
        "LDAP bind DN {bind_dn} has no password: give it in a file with --ldap-password-file FILE \
         or in the environment variable LDAP_BIND_PASSWORD (an empty password would be an anonymous bind)"
    )]
    MissingPassword { bind_dn: String },
}

impl LdapError {
    /// True for a failure to reach the server at all.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, LdapError::Unreachable { .. })
    }
}

/// Connection settings of an LDAP configuration source.
#[derive(Clone)]
pub struct LdapSource {
    /// `ldap://host:port` or `ldaps://host:port`.
    pub url: String,
    pub base_dn: String,
    pub bind_dn: Option<String>,
    pub password: Option<Secret>,
    /// Upgrade an `ldap://` connection with StartTLS.
    pub starttls: bool,
    /// PEM file of CA certificates to trust instead of the system roots.
    pub ca_file: Option<PathBuf>,
    pub connect_timeout: Duration,
}

impl fmt::Debug for LdapSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LdapSource")
            .field("url", &self.url)
            .field("base_dn", &self.base_dn)
            .field("bind_dn", &self.bind_dn)
            .field("starttls", &self.starttls)
            .field("ca_file", &self.ca_file)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for LdapSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.url)?;
        if self.starttls {
            write!(f, " (StartTLS)")?;
        }
        Ok(())
    }
}

impl LdapSource {
    pub fn new(url: impl Into<String>) -> LdapSource {
        LdapSource {
            url: url.into(),
            base_dn: DEFAULT_BASE_DN.into(),
            bind_dn: None,
            password: None,
            starttls: false,
            ca_file: None,
            connect_timeout: Duration::from_secs(5),
        }
    }

    /// Refuses settings that would not bind as configured: a bind DN
    /// without a password (or with an empty one).
    pub fn check(&self) -> Result<(), LdapError> {
        match &self.bind_dn {
            Some(dn) if self.password.as_ref().is_none_or(|p| p.expose().is_empty()) => {
                Err(LdapError::MissingPassword {
                    bind_dn: dn.clone(),
                })
            }
            _ => Ok(()),
        }
    }

    /// A warning when a simple bind would send the password in clear text
    /// over the network: an `ldap://` URL without StartTLS to a host other
    /// than this one. Loopback (`localhost`, 127.0.0.0/8, `::1`) is exempt:
    /// the password does not leave the machine, and that is how a local
    /// slapd or an stunnel/ssh tunnel is reached. `ldaps://` and `ldapi://`
    /// (a local socket) are never warned about.
    pub fn cleartext_password_warning(&self) -> Option<String> {
        let dn = self.bind_dn.as_ref()?;
        let lower = self.url.to_ascii_lowercase();
        let rest = lower.strip_prefix("ldap://")?;
        if self.starttls || is_loopback_host(url_host(rest)) {
            return None;
        }
        Some(format!(
            "the password of bind DN {dn} goes to {} in clear text (ldap:// without StartTLS): \
             use ldaps:// or --ldap-starttls",
            self.url
        ))
    }

    fn devices_dn(&self) -> String {
        format!("cn=Devices,cn=DICOM Configuration,{}", self.base_dn)
    }

    fn unreachable(&self, e: impl fmt::Display) -> LdapError {
        LdapError::Unreachable {
            url: self.url.clone(),
            reason: e.to_string(),
        }
    }

    fn refused(&self, operation: &'static str, e: impl fmt::Display) -> LdapError {
        LdapError::Refused {
            url: self.url.clone(),
            operation,
            reason: e.to_string(),
        }
    }

    async fn tls_config(&self) -> Result<Option<Arc<rustls::ClientConfig>>, LdapError> {
        let Some(path) = &self.ca_file else {
            return Ok(None);
        };
        let pem = tokio::fs::read(path).await.map_err(|e| LdapError::File {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        let file_err = |reason: String| LdapError::File {
            path: path.clone(),
            reason,
        };
        use rustls_pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_pki_types::CertificateDer::pem_slice_iter(&pem) {
            let cert = cert.map_err(|e| file_err(format!("not a PEM certificate: {e}")))?;
            roots
                .add(cert)
                .map_err(|e| file_err(format!("unusable CA certificate: {e}")))?;
        }
        if roots.is_empty() {
            return Err(file_err("no certificate in file".into()));
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| file_err(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Some(Arc::new(config)))
    }

    /// Connects and binds.
    async fn connect(&self) -> Result<Ldap, LdapError> {
        self.check()?;
        let mut settings = LdapConnSettings::new()
            .set_conn_timeout(self.connect_timeout)
            .set_starttls(self.starttls);
        if let Some(cfg) = self.tls_config().await? {
            settings = settings.set_config(cfg);
        }
        let (conn, mut ldap) = LdapConnAsync::with_settings(settings, &self.url)
            .await
            .map_err(|e| self.unreachable(e))?;
        ldap3::drive!(conn);
        if let Some(dn) = &self.bind_dn {
            // Never empty: `check` refused that above.
            let pw = self.password.as_ref().map(Secret::expose).unwrap_or("");
            ldap.with_timeout(OP_TIMEOUT)
                .simple_bind(dn, pw)
                .await
                .map_err(|e| self.unreachable(e))?
                .success()
                .map_err(|e| self.refused("bind", e))?;
        }
        Ok(ldap)
    }

    /// Reads the raw directory.
    pub async fn read(&self) -> Result<Directory, LdapError> {
        let entries = self.search(vec!["*"]).await?;
        let mut out = Vec::with_capacity(entries.len());
        for e in entries {
            let Ok(dn) = Dn::parse(&e.dn) else {
                // An unparsable DN from the server is not ours to judge.
                tracing::warn!(dn = %e.dn, "LDAP entry with an unparsable DN ignored");
                continue;
            };
            let mut attrs: Vec<(String, Vec<String>)> = e.attrs.into_iter().collect();
            for (name, values) in e.bin_attrs {
                attrs.push((
                    name,
                    values
                        .iter()
                        .map(|v| String::from_utf8_lossy(v).into_owned())
                        .collect(),
                ));
            }
            out.push(RawEntry {
                dn,
                attrs,
                source: self.url.clone(),
            });
        }
        Ok(Directory::from_entries(out))
    }

    /// A fingerprint of the entries the service reads: DN and modification
    /// stamp of each. Cheap to poll; changes on add, modify and delete.
    pub async fn fingerprint(&self) -> Result<u64, LdapError> {
        let mut rows: Vec<String> = self
            .search(vec!["entryCSN", "modifyTimestamp"])
            .await?
            .into_iter()
            .map(|e| {
                let mut attrs: Vec<_> = e.attrs.into_iter().collect();
                attrs.sort();
                format!("{}|{:?}", e.dn.to_ascii_lowercase(), attrs)
            })
            .collect();
        rows.sort();
        let mut h = DefaultHasher::new();
        rows.hash(&mut h);
        Ok(h.finish())
    }

    async fn search(&self, attrs: Vec<&str>) -> Result<Vec<SearchEntry>, LdapError> {
        let mut ldap = self.connect().await?;
        let base = self.devices_dn();
        let adapters: Vec<Box<dyn Adapter<_, _>>> = vec![
            // Drop search references and intermediate messages.
            Box::new(EntriesOnly::new()),
            Box::new(PagedResults::new(PAGE_SIZE)),
        ];
        let mut stream = ldap
            .with_timeout(OP_TIMEOUT)
            .streaming_search_with(adapters, &base, Scope::Subtree, FILTER, attrs)
            .await
            .map_err(|e| self.unreachable(e))?;
        let mut entries = Vec::new();
        loop {
            match stream.next().await {
                Ok(Some(re)) => entries.push(SearchEntry::construct(re)),
                Ok(None) => break,
                Err(e) => return Err(self.unreachable(e)),
            }
        }
        let res = stream.finish().await;
        res.success()
            .map_err(|e| self.refused("search", format!("{e} (base {base})")))?;
        let _ = ldap.unbind().await;
        Ok(entries)
    }
}

/// The host of an LDAP URL after its `scheme://` (`[::1]`, `host:port`).
fn url_host(rest: &str) -> &str {
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let authority = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if let Some(v6) = authority.strip_prefix('[') {
        return v6.split(']').next().unwrap_or("");
    }
    authority.split(':').next().unwrap_or("")
}

/// `localhost` or a loopback IP address.
fn is_loopback_host(host: &str) -> bool {
    host.trim_end_matches('.').eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(url: &str, dn: Option<&str>, pw: Option<&str>) -> LdapSource {
        let mut l = LdapSource::new(url);
        l.bind_dn = dn.map(str::to_string);
        l.password = pw.map(Secret::new);
        l
    }

    #[test]
    fn a_bind_dn_needs_a_password() {
        for pw in [None, Some("")] {
            let e = source("ldap://h", Some("cn=admin"), pw)
                .check()
                .unwrap_err();
            let text = e.to_string();
            assert!(
                text.contains("cn=admin")
                    && text.contains("--ldap-password-file")
                    && text.contains("LDAP_BIND_PASSWORD"),
                "{text}"
            );
            assert!(!e.is_unreachable());
        }
        assert!(
            source("ldap://h", Some("cn=admin"), Some("pw"))
                .check()
                .is_ok()
        );
        assert!(
            source("ldap://h", None, None).check().is_ok(),
            "anonymous on purpose"
        );
    }

    #[test]
    fn cleartext_warning_for_plain_ldap_to_another_host() {
        let warn = |url: &str, starttls: bool| {
            let mut l = source(url, Some("cn=admin"), Some("s3cret"));
            l.starttls = starttls;
            l.cleartext_password_warning()
        };
        for url in [
            "ldap://ldap.example.org",
            "LDAP://10.0.0.5:389",
            "ldap://[2001:db8::1]:389/",
            "ldap://localhost.example.org",
            "ldap://",
        ] {
            let w = warn(url, false).unwrap_or_else(|| panic!("{url}: no warning"));
            assert!(w.contains("cn=admin") && w.contains("clear text"), "{w}");
            assert!(!w.contains("s3cret"));
        }
        for (url, starttls) in [
            ("ldap://ldap.example.org", true),
            ("ldaps://ldap.example.org", false),
            ("ldapi://%2Fvar%2Frun%2Fldapi", false),
            ("ldap://127.0.0.1:1389", false),
            ("ldap://127.3.4.5", false),
            ("ldap://[::1]:389", false),
            ("ldap://LOCALHOST:389/", false),
        ] {
            assert_eq!(warn(url, starttls), None, "{url}");
        }
        let anon = source("ldap://ldap.example.org", None, None);
        assert_eq!(
            anon.cleartext_password_warning(),
            None,
            "no password to send"
        );
    }
}
