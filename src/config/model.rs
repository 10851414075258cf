//! The validated configuration model: what the service uses, resolved.
//!
//! Built from a [`Directory`] by [`Snapshot::build`]. What the service uses
//! (its STOW exporters, the web apps, connections and queues they refer to)
//! is validated strictly and every problem is reported with DN and
//! attribute; everything else in the directory is left alone, because a real
//! dcm4chee directory holds hundreds of entries, some incomplete.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use serde::Serialize;

use super::entry::{Directory, Dn, RawEntry};
use crate::schedule::Schedule;

/// One validation problem, naming the entry and the attribute.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConfigError {
    pub dn: String,
    pub attribute: Option<String>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.attribute {
            Some(a) => write!(f, "{}: {}: {}", self.dn, a, self.message),
            None => write!(f, "{}: {}", self.dn, self.message),
        }
    }
}

/// A schedule is shown as the values it was written with.
fn schedule_values<S: serde::Serializer>(s: &Schedule, ser: S) -> Result<S::Ok, S::Error> {
    ser.collect_seq(s.values())
}

/// A secret value (token, password): never shown in logs, Debug output,
/// API responses or task records.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }
    /// The secret itself, for building a request header only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("******")
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("******")
    }
}

/// The web application `dcmProperty` values the STOW client reads, with
/// dcm4chee's defaults.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WebAppProps {
    pub chunked: bool,
    pub concurrency: usize,
    /// Accepted transfer syntaxes as written; empty means any.
    pub transfer_syntax: Vec<String>,
    pub bearer_token: Option<Secret>,
    /// `user:password`.
    pub basic_auth: Option<Secret>,
    pub allow_any_hostname: bool,
    pub disable_trust_manager: bool,
    /// Not dcm4chee's: `allow-insecure-token-url=true` lets the OAuth2
    /// client send its secret to a plain `http://` token URL of another host.
    pub allow_insecure_token_url: bool,
    /// Not dcm4chee's: `transfer-syntax-parameter=true` puts the part's
    /// transfer syntax in its Content-Type, for servers that want it.
    pub transfer_syntax_parameter: bool,
    /// Not dcm4chee's (which sends one per request): instances packed into
    /// one request, at most this many (1..=500).
    pub max_instances_per_request: usize,
    /// ...and at most this many bytes; an instance larger goes alone.
    pub max_bytes_per_request: Option<u64>,
}

impl Default for WebAppProps {
    fn default() -> Self {
        WebAppProps {
            chunked: false,
            concurrency: 1,
            transfer_syntax: Vec::new(),
            bearer_token: None,
            basic_auth: None,
            allow_any_hostname: false,
            disable_trust_manager: false,
            allow_insecure_token_url: false,
            transfer_syntax_parameter: false,
            max_instances_per_request: 1,
            max_bytes_per_request: None,
        }
    }
}

/// A destination `dcmWebApp`, resolved to its service URL.
#[derive(Debug, Clone, Serialize)]
pub struct WebApp {
    pub name: String,
    pub dn: String,
    /// `scheme://host:port/path`, without the trailing `/studies`.
    pub service_url: String,
    pub service_classes: Vec<String>,
    /// False when the web app or its device has `dicomInstalled: FALSE`.
    pub installed: bool,
    pub props: WebAppProps,
    /// From the connection's `dcmTCPConnectTimeout` (ms).
    pub connect_timeout: Option<Duration>,
    /// From the connection's `dcmResponseTimeout` (ms).
    pub response_timeout: Option<Duration>,
    /// The `dcmKeycloakClient` named by the web app's `dcmKeycloakClientID`:
    /// requests carry an OAuth2 access token from it.
    pub keycloak: Option<KeycloakClient>,
}

/// Path of Keycloak's token endpoint below the server URL (`dcmURI`):
/// `{dcmURI}/realms/{realm}` + this.
pub const KEYCLOAK_TOKEN_PATH: &str = "/protocol/openid-connect/token";

/// A `dcmKeycloakClient` entry of the web app's device, resolved: where and
/// how to get an OAuth2 access token.
///
/// The token URL is Keycloak's `{dcmURI}/realms/{dcmKeycloakRealm}/protocol/openid-connect/token`.
/// Not in dcm4chee, for any other OAuth2 server: when `dcmKeycloakRealm` is
/// absent, or `dcmURI`'s path ends in `/token` (no Keycloak server URL
/// does), `dcmURI` is the token URL itself and the realm is not used.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KeycloakClient {
    /// `dcmKeycloakClientID`: the entry's name, and the OAuth2 client ID.
    pub id: String,
    pub dn: String,
    pub token_url: String,
    /// The `client_id` sent to the token endpoint (the same as `id`).
    pub client_id: String,
    /// `dcmKeycloakClientSecret`.
    pub secret: Option<Secret>,
    pub grant: Grant,
    /// `dcmTLSAllowAnyHostname`.
    pub allow_any_hostname: bool,
    /// `dcmTLSDisableTrustManager`.
    pub disable_trust_manager: bool,
}

/// The OAuth2 grant type of a [`KeycloakClient`] (`dcmKeycloakGrantType`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Grant {
    /// `client_credentials` (the default): the client's own secret.
    ClientCredentials,
    /// `password`: a user's credentials (`uid`, `userPassword`).
    Password { user: String, password: Secret },
}

/// A STOW-RS `dcmExporter` of the archive device.
#[derive(Debug, Clone, Serialize)]
pub struct Exporter {
    pub id: String,
    pub dn: String,
    pub uri: String,
    pub description: Option<String>,
    /// The `dcmWebAppName` after `stow:`.
    pub web_app: String,
    pub queue: String,
    /// `dicomAETitle`: the local AE the task records as `LocalAET`.
    pub ae_title: Option<String>,
    /// `dcmSchedule` windows: tasks of this exporter run only inside them.
    #[serde(rename = "schedules", serialize_with = "schedule_values")]
    pub schedule: Schedule,
}

/// An exporter of another kind (`dicom:`, `wado:` ...), not this service's.
#[derive(Debug, Clone, Serialize)]
pub struct SkippedExporter {
    pub id: String,
    pub dn: String,
    pub uri: String,
}

/// A `dcmQueue` of the archive device, with dcm4chee's defaults.
#[derive(Debug, Clone, Serialize)]
pub struct QueueDesc {
    pub name: String,
    pub dn: String,
    pub description: Option<String>,
    pub max_tasks_parallel: u32,
    pub max_retries: u32,
    pub retry_delay: Duration,
    pub retry_delay_multiplier: u32,
    pub max_retry_delay: Option<Duration>,
    pub retry_on_warning: bool,
    pub installed: bool,
    /// `dcmSchedule` windows: the queue is processed only inside them.
    #[serde(rename = "schedules", serialize_with = "schedule_values")]
    pub schedule: Schedule,
}

/// An immutable, validated view of the configuration. Tasks hold an
/// `Arc<Snapshot>` for their whole run, so a reload never changes the
/// settings of a task in flight.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    pub device_name: String,
    pub device_dn: String,
    /// AE titles of the archive device (`dicomNetworkAE` children).
    pub ae_titles: BTreeSet<String>,
    pub exporters: BTreeMap<String, Exporter>,
    pub skipped_exporters: Vec<SkippedExporter>,
    pub queues: BTreeMap<String, QueueDesc>,
    /// Web apps referenced by the exporters, by name.
    pub web_apps: BTreeMap<String, WebApp>,
    /// Non-fatal findings (unknown property keys, skipped exporters).
    pub warnings: Vec<String>,
    /// Where the configuration was read from.
    pub source: String,
}

impl Snapshot {
    /// Validates `dir` for the archive device `device_name`. Any error in
    /// what the service uses rejects the snapshot as a whole.
    pub fn build(
        dir: &Directory,
        device_name: &str,
        source: &str,
    ) -> Result<Snapshot, Vec<ConfigError>> {
        Builder {
            dir,
            errors: Vec::new(),
            warnings: Vec::new(),
        }
        .build(device_name, source)
    }

    pub fn exporter(&self, id: &str) -> Option<&Exporter> {
        self.exporters.get(id)
    }

    pub fn web_app(&self, name: &str) -> Option<&WebApp> {
        self.web_apps.get(name)
    }
}

struct Builder<'a> {
    dir: &'a Directory,
    errors: Vec<ConfigError>,
    warnings: Vec<String>,
}

const DEVICES_RDN: &str = "devices";

impl Builder<'_> {
    fn error(&mut self, entry: &RawEntry, attribute: Option<&str>, message: impl Into<String>) {
        self.errors.push(ConfigError {
            dn: entry.dn.to_string(),
            attribute: attribute.map(str::to_string),
            message: message.into(),
        });
    }

    fn build(mut self, device_name: &str, source: &str) -> Result<Snapshot, Vec<ConfigError>> {
        let device = self.dir.iter().find(|e| {
            e.dn.rdn().value("dicomDeviceName") == Some(device_name)
                && e.dn.parent().is_some_and(|p| is_devices_root(&p))
        });
        let Some(device) = device else {
            return Err(vec![ConfigError {
                dn: format!("dicomDeviceName={device_name},cn=Devices,..."),
                attribute: None,
                message: format!(
                    "archive device {device_name:?} not found in {source} (expected an entry dicomDeviceName={device_name} under cn=Devices)"
                ),
            }]);
        };
        let children: Vec<&RawEntry> = self
            .dir
            .iter()
            .filter(|e| e.dn.is_child_of(&device.dn))
            .collect();

        let ae_titles: BTreeSet<String> = children
            .iter()
            .filter(|e| e.has_class("dicomNetworkAE"))
            .filter_map(|e| e.first("dicomAETitle").or(e.dn.rdn().value("dicomAETitle")))
            .map(str::to_string)
            .collect();

        let mut queues = BTreeMap::new();
        for e in children.iter().filter(|e| e.has_class("dcmQueue")) {
            if let Some(q) = self.queue(e) {
                queues.insert(q.name.clone(), q);
            }
        }

        let mut exporters = BTreeMap::new();
        let mut skipped = Vec::new();
        let mut web_apps = BTreeMap::new();
        for e in children.iter().filter(|e| e.has_class("dcmExporter")) {
            let Some(id) = e
                .first("dcmExporterID")
                .or(e.dn.rdn().value("dcmExporterID"))
            else {
                self.error(e, Some("dcmExporterID"), "missing");
                continue;
            };
            let Some(uri) = e.first("dcmURI") else {
                self.error(e, Some("dcmURI"), "missing");
                continue;
            };
            let (scheme, rest) = uri.split_once(':').unwrap_or(("", uri));
            if !(scheme.eq_ignore_ascii_case("stow") || scheme.eq_ignore_ascii_case("stowrs")) {
                self.warnings.push(format!(
                    "{}: exporter {id} has dcmURI {uri}: not a STOW-RS exporter, skipped",
                    e.dn
                ));
                skipped.push(SkippedExporter {
                    id: id.to_string(),
                    dn: e.dn.to_string(),
                    uri: uri.to_string(),
                });
                continue;
            }
            let web_app_name = rest.trim();
            if web_app_name.is_empty() || web_app_name.contains(char::is_whitespace) {
                self.error(
                    e,
                    Some("dcmURI"),
                    format!("{uri:?} is not stow:<dcmWebAppName>"),
                );
                continue;
            }
            let queue = match e.first("dcmQueueName") {
                None => {
                    self.error(e, Some("dcmQueueName"), "missing");
                    continue;
                }
                Some(q) if !queues.contains_key(q) => {
                    self.error(
                        e,
                        Some("dcmQueueName"),
                        format!("no dcmQueue {q:?} on device {device_name}"),
                    );
                    continue;
                }
                Some(q) => q.to_string(),
            };
            let ae_title = e.first("dicomAETitle").map(str::to_string);
            if let Some(aet) = &ae_title
                && !ae_titles.contains(aet)
            {
                self.error(
                    e,
                    Some("dicomAETitle"),
                    format!("{aet:?} is not an AE title of device {device_name}"),
                );
                continue;
            }
            if !web_apps.contains_key(web_app_name) {
                match self.web_app(e, web_app_name) {
                    Some(w) => {
                        web_apps.insert(web_app_name.to_string(), w);
                    }
                    None => continue,
                }
            }
            let Some(schedule) = self.schedule(e) else {
                continue;
            };
            exporters.insert(
                id.to_string(),
                Exporter {
                    id: id.to_string(),
                    dn: e.dn.to_string(),
                    uri: uri.to_string(),
                    description: e.first("dicomDescription").map(str::to_string),
                    web_app: web_app_name.to_string(),
                    queue,
                    ae_title,
                    schedule,
                },
            );
        }

        if !self.errors.is_empty() {
            return Err(self.errors);
        }
        Ok(Snapshot {
            device_name: device_name.to_string(),
            device_dn: device.dn.to_string(),
            ae_titles,
            exporters,
            skipped_exporters: skipped,
            queues,
            web_apps,
            warnings: self.warnings,
            source: source.to_string(),
        })
    }

    fn queue(&mut self, e: &RawEntry) -> Option<QueueDesc> {
        let before = self.errors.len();
        let name = e
            .first("dcmQueueName")
            .or(e.dn.rdn().value("dcmQueueName"))
            .map(str::to_string);
        let Some(name) = name else {
            self.error(e, Some("dcmQueueName"), "missing");
            return None;
        };
        let q = QueueDesc {
            name,
            dn: e.dn.to_string(),
            description: e.first("dicomDescription").map(str::to_string),
            max_tasks_parallel: self.int(e, "dcmMaxTasksParallel", 1, 1),
            max_retries: self.int(e, "dcmMaxRetries", 0, 0),
            retry_delay: self
                .duration(e, "dcmRetryDelay")
                .unwrap_or(Duration::from_secs(60)),
            retry_delay_multiplier: self.int(e, "dcmRetryDelayMultiplier", 100, 1),
            max_retry_delay: self.duration(e, "dcmMaxRetryDelay"),
            retry_on_warning: self.boolean(e, "dcmRetryOnWarning", false),
            installed: self.boolean(e, "dicomInstalled", true),
            schedule: self.schedule(e).unwrap_or_default(),
        };
        (self.errors.len() == before).then_some(q)
    }

    /// The entry's `dcmSchedule` values, parsed with dcm4chee's grammar.
    fn schedule(&mut self, e: &RawEntry) -> Option<Schedule> {
        match Schedule::parse_all(e.values("dcmSchedule")) {
            Ok(s) => Some(s),
            Err(err) => {
                self.error(e, Some("dcmSchedule"), err.to_string());
                None
            }
        }
    }

    fn int(&mut self, e: &RawEntry, attr: &str, default: u32, min: u32) -> u32 {
        match e.first(attr) {
            None => default,
            Some(v) => match v.trim().parse::<u32>() {
                Ok(n) if n >= min => n,
                _ => {
                    self.error(e, Some(attr), format!("{v:?} is not an integer >= {min}"));
                    default
                }
            },
        }
    }

    fn boolean(&mut self, e: &RawEntry, attr: &str, default: bool) -> bool {
        match e.first(attr) {
            None => default,
            Some(v) => match parse_ldap_bool(v) {
                Some(b) => b,
                None => {
                    self.error(e, Some(attr), format!("{v:?} is not TRUE or FALSE"));
                    default
                }
            },
        }
    }

    fn duration(&mut self, e: &RawEntry, attr: &str) -> Option<Duration> {
        let v = e.first(attr)?;
        match parse_iso_duration(v) {
            Some(d) => Some(d),
            None => {
                self.error(
                    e,
                    Some(attr),
                    format!("{v:?} is not an ISO-8601 duration like PT30S"),
                );
                None
            }
        }
    }

    /// Resolves the web app `name` referenced by `exporter`.
    fn web_app(&mut self, exporter: &RawEntry, name: &str) -> Option<WebApp> {
        let dir = self.dir;
        let found: Vec<&RawEntry> = dir
            .iter()
            .filter(|e| {
                e.has_class("dcmWebApp")
                    && e.first("dcmWebAppName")
                        .or(e.dn.rdn().value("dcmWebAppName"))
                        == Some(name)
                    && e.dn.parent().is_some_and(|device| {
                        device.rdn().value("dicomDeviceName").is_some()
                            && device.parent().is_some_and(|p| is_devices_root(&p))
                    })
            })
            .collect();
        let w = match found.as_slice() {
            [] => {
                self.error(
                    exporter,
                    Some("dcmURI"),
                    format!("unknown web application {name:?} (no dcmWebApp with dcmWebAppName={name} on any device under cn=Devices)"),
                );
                return None;
            }
            [w] => *w,
            [w, ..] => {
                self.error(
                    w,
                    Some("dcmWebAppName"),
                    format!("web application name {name:?} is not unique"),
                );
                return None;
            }
        };
        let before = self.errors.len();
        let classes = w.values("dcmWebServiceClass").to_vec();
        if !classes.iter().any(|c| c.eq_ignore_ascii_case("STOW_RS")) {
            self.error(w, Some("dcmWebServiceClass"), "does not include STOW_RS");
        }
        let path = match w.first("dcmWebServicePath") {
            Some(p) if p.starts_with('/') => p.trim_end_matches('/').to_string(),
            Some(p) => format!("/{}", p.trim_end_matches('/')),
            None => {
                self.error(w, Some("dcmWebServicePath"), "missing");
                String::new()
            }
        };
        let props = self.props(w);
        let device_dn = w.dn.parent();
        let device_installed = device_dn
            .as_ref()
            .and_then(|d| dir.get(d))
            .and_then(|d| d.first("dicomInstalled"))
            .and_then(parse_ldap_bool)
            .unwrap_or(true);
        let installed = device_installed && self.boolean(w, "dicomInstalled", true);
        let keycloak = self.keycloak(w, device_dn.as_ref());

        // The first installed connection gives the URL, as in dcm4chee.
        let refs = w.values("dicomNetworkConnectionReference").to_vec();
        if refs.is_empty() {
            self.error(
                w,
                Some("dicomNetworkConnectionReference"),
                "missing: the web application needs an HTTP connection",
            );
            return None;
        }
        let before_refs = self.errors.len();
        let mut conn_entry = None;
        for r in &refs {
            let Ok(dn) = Dn::parse(r) else {
                self.error(
                    w,
                    Some("dicomNetworkConnectionReference"),
                    format!("{r:?} is not a valid DN"),
                );
                continue;
            };
            let Some(c) = dir.get(&dn) else {
                self.error(
                    w,
                    Some("dicomNetworkConnectionReference"),
                    format!("{r} does not exist"),
                );
                continue;
            };
            if device_dn.as_ref().is_some_and(|d| !c.dn.is_child_of(d)) {
                self.error(
                    w,
                    Some("dicomNetworkConnectionReference"),
                    format!("{r} is not a connection of the web application's device"),
                );
                continue;
            }
            let installed = c
                .first("dicomInstalled")
                .and_then(parse_ldap_bool)
                .unwrap_or(true);
            if installed && conn_entry.is_none() {
                conn_entry = Some(c);
            }
        }
        if self.errors.len() > before_refs {
            return None;
        }
        let Some(c) = conn_entry else {
            self.error(
                w,
                Some("dicomNetworkConnectionReference"),
                "no installed network connection",
            );
            return None;
        };
        let host = c.first("dicomHostname");
        if host.is_none() {
            self.error(c, Some("dicomHostname"), "missing");
        }
        let port = match c.first("dicomPort").map(|p| p.trim().parse::<u16>()) {
            Some(Ok(p)) if p > 0 => Some(p),
            Some(_) => {
                self.error(
                    c,
                    Some("dicomPort"),
                    format!("{:?} is not a TCP port", c.first("dicomPort").unwrap_or("")),
                );
                None
            }
            None => {
                self.error(c, Some("dicomPort"), "missing");
                None
            }
        };
        if let Some(proto) = c.first("dcmProtocol")
            && !proto.eq_ignore_ascii_case("HTTP")
        {
            self.error(
                c,
                Some("dcmProtocol"),
                format!("{proto} connection cannot serve a web application (needs HTTP)"),
            );
        }
        let ms = |b: &mut Self, attr: &str| -> Option<Duration> {
            let v = c.first(attr)?;
            match v.trim().parse::<u64>() {
                Ok(0) => None,
                Ok(n) => Some(Duration::from_millis(n)),
                Err(_) => {
                    b.error(
                        c,
                        Some(attr),
                        format!("{v:?} is not a number of milliseconds"),
                    );
                    None
                }
            }
        };
        let connect_timeout = ms(self, "dcmTCPConnectTimeout");
        let response_timeout = ms(self, "dcmResponseTimeout");
        if self.errors.len() > before {
            return None;
        }
        let tls = !c.values("dicomTLSCipherSuite").is_empty();
        let host = host.unwrap_or_default();
        // An IPv6 literal needs brackets in a URL.
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host.to_string()
        };
        Some(WebApp {
            name: name.to_string(),
            dn: w.dn.to_string(),
            service_url: format!(
                "{}://{}:{}{}",
                if tls { "https" } else { "http" },
                host,
                port.unwrap_or_default(),
                path
            ),
            service_classes: classes,
            installed,
            props,
            connect_timeout,
            response_timeout,
            keycloak,
        })
    }

    /// The `dcmKeycloakClient` the web app `w` names in `dcmKeycloakClientID`:
    /// a child of the web app's device, as in dcm4chee.
    fn keycloak(&mut self, w: &RawEntry, device_dn: Option<&Dn>) -> Option<KeycloakClient> {
        let id = w.first("dcmKeycloakClientID")?.trim();
        let device_dn = device_dn?;
        let dir = self.dir;
        let found: Vec<&RawEntry> = dir
            .iter()
            .filter(|e| {
                e.has_class("dcmKeycloakClient")
                    && e.dn.is_child_of(device_dn)
                    && e.first("dcmKeycloakClientID")
                        .or(e.dn.rdn().value("dcmKeycloakClientID"))
                        .map(str::trim)
                        == Some(id)
            })
            .collect();
        let k = match found.as_slice() {
            [] => {
                self.error(
                    w,
                    Some("dcmKeycloakClientID"),
                    format!(
                        "no dcmKeycloakClient {id:?} on the web application's device (expected an entry dcmKeycloakClientID={id},{device_dn})"
                    ),
                );
                return None;
            }
            [k] => *k,
            [k, ..] => {
                self.error(
                    k,
                    Some("dcmKeycloakClientID"),
                    format!("Keycloak client ID {id:?} is not unique on the device"),
                );
                return None;
            }
        };
        let before = self.errors.len();
        let uri = match k.first("dcmURI").map(str::trim) {
            None | Some("") => {
                self.error(k, Some("dcmURI"), "missing: the Keycloak server URL");
                None
            }
            Some(u) if !is_http_url(u) => {
                self.error(
                    k,
                    Some("dcmURI"),
                    format!("{u:?} is not an http:// or https:// URL"),
                );
                None
            }
            Some(u) => Some(u.trim_end_matches('/')),
        };
        let realm = k
            .first("dcmKeycloakRealm")
            .map(str::trim)
            .filter(|r| !r.is_empty());
        let secret = k.first("dcmKeycloakClientSecret").map(Secret::new);
        let grant = match k.first("dcmKeycloakGrantType").map(str::trim) {
            None | Some("client_credentials") => {
                if secret.is_none() {
                    self.error(
                        k,
                        Some("dcmKeycloakClientSecret"),
                        "missing: the client_credentials grant needs the client secret",
                    );
                }
                Some(Grant::ClientCredentials)
            }
            Some("password") => {
                let user = k.first("uid").map(str::to_string);
                let password = k.first("userPassword");
                if user.is_none() {
                    self.error(k, Some("uid"), "missing: the password grant needs a user");
                }
                match password {
                    None => self.error(
                        k,
                        Some("userPassword"),
                        "missing: the password grant needs the user's password",
                    ),
                    // A directory may store only a hash (`{SSHA}...`); that
                    // cannot be sent. The value itself is never echoed.
                    Some(p) if is_password_hash(p) => self.error(
                        k,
                        Some("userPassword"),
                        "holds a password hash ({SCHEME}...): the password grant needs the password itself",
                    ),
                    Some(_) => {}
                }
                match (user, password) {
                    (Some(user), Some(p)) => Some(Grant::Password {
                        user,
                        password: Secret::new(p),
                    }),
                    _ => None,
                }
            }
            Some(other) => {
                self.error(
                    k,
                    Some("dcmKeycloakGrantType"),
                    format!("{other:?} is not supported (client_credentials or password)"),
                );
                None
            }
        };
        let allow_any_hostname = self.boolean(k, "dcmTLSAllowAnyHostname", false);
        let disable_trust_manager = self.boolean(k, "dcmTLSDisableTrustManager", false);
        if self.errors.len() > before {
            return None;
        }
        let (uri, grant) = (uri?, grant?);
        let token_url = match realm {
            Some(realm) if !url_path(uri).ends_with("/token") => format!(
                "{uri}/realms/{}{KEYCLOAK_TOKEN_PATH}",
                encode_path_segment(realm)
            ),
            _ => uri.to_string(),
        };
        Some(KeycloakClient {
            id: id.to_string(),
            dn: k.dn.to_string(),
            token_url,
            client_id: id.to_string(),
            secret,
            grant,
            allow_any_hostname,
            disable_trust_manager,
        })
    }

    fn props(&mut self, w: &RawEntry) -> WebAppProps {
        let mut p = WebAppProps::default();
        for raw in w.values("dcmProperty").to_vec() {
            let Some((key, value)) = raw.split_once('=') else {
                self.error(w, Some("dcmProperty"), format!("{raw:?} is not name=value"));
                continue;
            };
            let bool_prop = |b: &mut Self| match value.trim().to_ascii_lowercase().as_str() {
                "true" => true,
                "false" => false,
                _ => {
                    b.error(
                        w,
                        Some("dcmProperty"),
                        format!("{key}={value}: expected true or false"),
                    );
                    false
                }
            };
            match key.trim() {
                "chunked" => p.chunked = bool_prop(self),
                "allow-any-hostname" => p.allow_any_hostname = bool_prop(self),
                "disable-trust-manager" => p.disable_trust_manager = bool_prop(self),
                "allow-insecure-token-url" => p.allow_insecure_token_url = bool_prop(self),
                "transfer-syntax-parameter" => p.transfer_syntax_parameter = bool_prop(self),
                "max-instances-per-request" => match value.trim().parse::<usize>() {
                    // A page of the index holds 500 matches; a batch never
                    // spans two.
                    Ok(n) if (1..=500).contains(&n) => p.max_instances_per_request = n,
                    _ => self.error(
                        w,
                        Some("dcmProperty"),
                        format!("max-instances-per-request={value}: expected an integer from 1 to 500"),
                    ),
                },
                "max-bytes-per-request" => match parse_size(value) {
                    Some(n) if n > 0 => p.max_bytes_per_request = Some(n),
                    _ => self.error(
                        w,
                        Some("dcmProperty"),
                        format!("max-bytes-per-request={value}: expected a size such as 50000000, 500MB or 2GiB"),
                    ),
                },
                "concurrency" => match value.trim().parse::<usize>() {
                    Ok(n) if (1..=256).contains(&n) => p.concurrency = n,
                    _ => self.error(
                        w,
                        Some("dcmProperty"),
                        format!("concurrency={value}: expected an integer from 1 to 256"),
                    ),
                },
                "transfer-syntax" => {
                    let mut uids = Vec::new();
                    for item in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                        if item == "*" {
                            // dcm4chee: `*` anywhere means any syntax.
                            uids.clear();
                            break;
                        }
                        match transfer_syntax_uid(item) {
                            Some(uid) => uids.push(uid),
                            None => self.error(
                                w,
                                Some("dcmProperty"),
                                format!(
                                    "transfer-syntax={value}: {item:?} is neither a transfer syntax UID nor a keyword such as ExplicitVRLittleEndian"
                                ),
                            ),
                        }
                    }
                    p.transfer_syntax = uids;
                }
                "bearer-token" => p.bearer_token = Some(Secret::new(value)),
                "basic-auth" => {
                    if !value.contains(':') {
                        // The value is a secret: name the key, never echo it.
                        self.error(
                            w,
                            Some("dcmProperty"),
                            "basic-auth=...: expected user:password",
                        );
                    } else {
                        p.basic_auth = Some(Secret::new(value));
                    }
                }
                other => self.warnings.push(format!(
                    "{}: dcmProperty: unknown key {other:?} ignored",
                    w.dn
                )),
            }
        }
        p
    }
}

/// Transfer syntax keywords as dcm4che names them (`UID.forName`), with the
/// older spellings still seen in configurations.
const TS_KEYWORDS: &[(&str, &str)] = &[
    ("ImplicitVRLittleEndian", "1.2.840.10008.1.2"),
    ("ExplicitVRLittleEndian", "1.2.840.10008.1.2.1"),
    ("DeflatedExplicitVRLittleEndian", "1.2.840.10008.1.2.1.99"),
    ("ExplicitVRBigEndian", "1.2.840.10008.1.2.2"),
    ("JPEGBaseline8Bit", "1.2.840.10008.1.2.4.50"),
    ("JPEGBaseline1", "1.2.840.10008.1.2.4.50"),
    ("JPEGExtended12Bit", "1.2.840.10008.1.2.4.51"),
    ("JPEGExtended24", "1.2.840.10008.1.2.4.51"),
    ("JPEGLossless", "1.2.840.10008.1.2.4.57"),
    ("JPEGLosslessNonHierarchical14", "1.2.840.10008.1.2.4.57"),
    ("JPEGLosslessSV1", "1.2.840.10008.1.2.4.70"),
    ("JPEGLSLossless", "1.2.840.10008.1.2.4.80"),
    ("JPEGLSNearLossless", "1.2.840.10008.1.2.4.81"),
    ("JPEG2000Lossless", "1.2.840.10008.1.2.4.90"),
    ("JPEG2000", "1.2.840.10008.1.2.4.91"),
    ("HTJ2KLossless", "1.2.840.10008.1.2.4.201"),
    ("HTJ2KLosslessRPCL", "1.2.840.10008.1.2.4.202"),
    ("HTJ2K", "1.2.840.10008.1.2.4.203"),
    ("RLELossless", "1.2.840.10008.1.2.5"),
];

/// The keyword of a transfer syntax UID, for messages; the UID itself when
/// it has none.
pub fn transfer_syntax_name(uid: &str) -> &str {
    TS_KEYWORDS
        .iter()
        .find(|(_, u)| *u == uid)
        .map_or(uid, |(k, _)| k)
}

/// The UID of a `transfer-syntax` list item: a UID as written, or a
/// keyword (matched regardless of case); None when it is neither.
pub fn transfer_syntax_uid(item: &str) -> Option<String> {
    if item.starts_with(|c: char| c.is_ascii_digit()) {
        return crate::task::is_uid(item).then(|| item.to_string());
    }
    TS_KEYWORDS
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(item))
        .map(|(_, u)| u.to_string())
}

/// True for `http://host...` or `https://host...` (scheme in any case).
fn is_http_url(u: &str) -> bool {
    let lower = u.to_ascii_lowercase();
    let rest = lower
        .strip_prefix("https://")
        .or_else(|| lower.strip_prefix("http://"));
    rest.is_some_and(|r| !r.is_empty() && !r.starts_with('/') && !r.contains(char::is_whitespace))
}

/// The path of an http(s) URL, without query or fragment.
fn url_path(u: &str) -> &str {
    let after_scheme = u.split_once("://").map_or(u, |(_, r)| r);
    let path = after_scheme.find('/').map_or("", |i| &after_scheme[i..]);
    path.split(['?', '#']).next().unwrap_or("")
}

/// A `userPassword` value that is a hash in RFC 3112 form (`{SSHA}...`).
fn is_password_hash(p: &str) -> bool {
    p.strip_prefix('{')
        .and_then(|r| r.split_once('}'))
        .is_some_and(|(scheme, _)| {
            !scheme.is_empty()
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        })
}

/// Percent-encodes `s` for one URL path segment (RFC 3986 unreserved kept).
fn encode_path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn is_devices_root(dn: &Dn) -> bool {
    dn.rdn()
        .value("cn")
        .is_some_and(|v| v.eq_ignore_ascii_case(DEVICES_RDN))
}

/// A byte count: digits with an optional unit, decimal (`kB`, `MB`, `GB`)
/// or binary (`KiB`, `MiB`, `GiB`), case-insensitive.
pub fn parse_size(v: &str) -> Option<u64> {
    let v = v.trim();
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (num, unit) = v.split_at(split);
    let n: u64 = num.parse().ok()?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(mult)
}

/// LDAP Boolean syntax is `TRUE`/`FALSE`; lower case is accepted because
/// hand-written LDIF often has it and slapd would only refuse it on import.
pub fn parse_ldap_bool(v: &str) -> Option<bool> {
    match v.trim() {
        s if s.eq_ignore_ascii_case("true") => Some(true),
        s if s.eq_ignore_ascii_case("false") => Some(false),
        _ => None,
    }
}

/// Parses the ISO-8601 durations dcm4chee uses: `PnDTnHnMnS` (any subset,
/// seconds may be fractional), and `PnW`.
pub fn parse_iso_duration(v: &str) -> Option<Duration> {
    let s = v.trim();
    let rest = s.strip_prefix('P').or_else(|| s.strip_prefix('p'))?;
    if rest.is_empty() {
        return None;
    }
    let mut secs = 0f64;
    let mut in_time = false;
    let mut num = String::new();
    let mut any = false;
    for c in rest.chars() {
        match c.to_ascii_uppercase() {
            'T' if !in_time && num.is_empty() => in_time = true,
            d if d.is_ascii_digit() || d == '.' => num.push(d),
            unit => {
                let n: f64 = num.parse().ok()?;
                num.clear();
                any = true;
                secs += n * match (in_time, unit) {
                    (false, 'W') => 604_800.0,
                    (false, 'D') => 86_400.0,
                    (true, 'H') => 3_600.0,
                    (true, 'M') => 60.0,
                    (true, 'S') => 1.0,
                    _ => return None,
                };
            }
        }
    }
    (any && num.is_empty()).then(|| Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_durations() {
        assert_eq!(parse_iso_duration("PT30S"), Some(Duration::from_secs(30)));
        assert_eq!(parse_iso_duration("PT10M"), Some(Duration::from_secs(600)));
        assert_eq!(parse_iso_duration("P1D"), Some(Duration::from_secs(86_400)));
        assert_eq!(
            parse_iso_duration("P1DT1H0.5S"),
            Some(Duration::from_secs_f64(90_000.5))
        );
        assert_eq!(parse_iso_duration("PT"), None);
        assert_eq!(parse_iso_duration("30S"), None);
        assert_eq!(parse_iso_duration("P1H"), None);
        assert_eq!(parse_iso_duration("PT5"), None);
    }

    #[test]
    fn transfer_syntax_items() {
        assert_eq!(
            transfer_syntax_uid("ExplicitVRLittleEndian").as_deref(),
            Some("1.2.840.10008.1.2.1")
        );
        assert_eq!(
            transfer_syntax_uid("jpeglosslesssv1").as_deref(),
            Some("1.2.840.10008.1.2.4.70")
        );
        assert_eq!(
            transfer_syntax_uid("1.2.840.10008.1.2.4.90").as_deref(),
            Some("1.2.840.10008.1.2.4.90")
        );
        assert_eq!(transfer_syntax_uid("JPEG2001"), None);
        assert_eq!(transfer_syntax_uid("1.2..3"), None);
    }

    #[test]
    fn secrets_are_masked() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "******");
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"******\"");
    }
}
