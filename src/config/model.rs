//! The validated configuration model: what the service uses, resolved.
//!
//! Built from a [`Directory`] by [`Snapshot::build`]. What the service uses
//! (its STOW exporters, the web apps, connections and queues they refer to)
//! is validated strictly and every problem is reported with DN and
//! attribute; everything else in the directory is left alone, because a real
//! dcm4chee directory holds hundreds of entries, some incomplete.
//!
//! Owns validation and the resolved types; it reads nothing (no I/O, no
//! clock) and knows no consumer of a snapshot.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use serde::Serialize;

use super::entry::{Directory, Dn, RawEntry};
use crate::schedule::Schedule;
use crate::transfer_syntax::transfer_syntax_uid;

/// Longest `dcmRetryDelay` and `dcmMaxRetryDelay` accepted: one year
/// (`P365D`). Nobody waits longer than that for a retry, and every retry
/// time is at most this far in the future (the retry policy saturates at
/// it), so adding it to the current time can never overflow.
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(365 * 86_400);

/// Largest `dcmMaxRetries`: at the shortest sensible delays this is months
/// of retrying; more is a typo.
pub const MAX_RETRIES: u32 = 100_000;

/// Largest `dcmRetryDelayMultiplier`, in percent (dcm4chee's unit): each
/// retry waits at most 100 times longer than the one before.
pub const MAX_RETRY_DELAY_MULTIPLIER: u32 = 10_000;

/// Largest `dcmMaxTasksParallel`: tasks of one queue running at once, each
/// with up to [`MAX_CONCURRENCY`] requests.
pub const MAX_TASKS_PARALLEL: u32 = 256;

/// Largest `concurrency` web app property: requests in flight per task.
pub const MAX_CONCURRENCY: usize = 256;

/// Largest `max-instances-per-request`: a page of the index holds 500
/// matches, and a batch never spans two.
pub const MAX_INSTANCES_PER_REQUEST: usize = 500;

/// Largest `max-bytes-per-request` (4 GiB): a batch is held while its
/// request is sent, so the bound keeps one request's memory finite.
pub const MAX_BYTES_PER_REQUEST: u64 = 4 << 30;

/// Longest `dcmTCPConnectTimeout` / `dcmResponseTimeout` of a connection
/// (one day, in dcm4chee's milliseconds): longer is a typo, and timer
/// arithmetic on it must not overflow.
pub const MAX_CONNECTION_TIMEOUT: Duration = Duration::from_secs(86_400);

/// At most this many characters of a configured value are repeated in an
/// error message, so a huge value cannot make a huge message.
const MAX_SHOWN_VALUE: usize = 80;

/// `dcmProperty` keys whose values are secrets: never repeated in a message.
pub const SECRET_PROPERTIES: &[&str] = &["bearer-token", "basic-auth"];

/// Every `dcmProperty` key of a web app this service reads.
pub const KNOWN_PROPERTIES: &[&str] = &[
    "chunked",
    "allow-any-hostname",
    "disable-trust-manager",
    "transfer-syntax-parameter",
    "max-instances-per-request",
    "max-bytes-per-request",
    "concurrency",
    "transfer-syntax",
    "bearer-token",
    "basic-auth",
];

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

/// A `dicomNetworkAE` of the archive device that accepts associations:
/// the Storage SCP listens for it on its DICOM connections.
#[derive(Debug, Clone, Serialize)]
pub struct NetworkAe {
    #[serde(rename = "dicomAETitle")]
    pub ae_title: String,
    pub dn: String,
    /// `dicomAssociationAcceptor` (TRUE when absent, as in dcm4che).
    #[serde(rename = "dicomAssociationAcceptor")]
    pub acceptor: bool,
    /// `dcmAcceptedCallingAETitle`: when not empty, associations from any
    /// other calling AE title are rejected.
    #[serde(rename = "dcmAcceptedCallingAETitle")]
    pub accepted_calling: Vec<String>,
    /// `host:port` of its installed DICOM connections
    /// (`dicomNetworkConnectionReference` without `dcmProtocol` or with
    /// `DICOM`).
    #[serde(rename = "dicomNetworkConnection")]
    pub listen: Vec<String>,
    /// `dicomTransferCapability` children in the SCP role: SOP Class UID
    /// and its transfer syntaxes (`*` any). Empty: the default set.
    #[serde(rename = "dicomTransferCapability")]
    pub transfer_capabilities: Vec<TransferCapability>,
}

/// A `dicomTransferCapability` of an AE in the SCP role.
#[derive(Debug, Clone, Serialize)]
pub struct TransferCapability {
    #[serde(rename = "dicomSOPClass")]
    pub sop_class: String,
    #[serde(rename = "dicomTransferSyntax")]
    pub transfer_syntaxes: Vec<String>,
}

/// What one task of an export rule covers (`dcmEntity`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Entity {
    Study,
    Series,
    Instance,
}

/// What a rule does when an instance it has seen arrives again
/// (`dcmExportReoccurredInstances`; dcm4chee's default REPLACE).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Reoccurred {
    /// No task for an instance received before.
    Never,
    /// A task every time.
    Always,
    /// A task when the instance replaced a different stored one.
    Replace,
    /// A task when the instance completes what was received before.
    Complete,
}

/// Longest `dcmDuration` of an export rule: a week (a longer one is a typo;
/// the task would wait that long after the last instance).
pub const MAX_RULE_DURATION: Duration = Duration::from_secs(7 * 86_400);

/// A `dcmExportRule` of the archive device (`cn=<name>,<device>`) or of one
/// of its AEs (`cn=<name>,dicomAETitle=<AET>,<device>`, which applies only
/// to objects that AE receives): objects it matches become export tasks.
#[derive(Debug, Clone, Serialize)]
pub struct ExportRule {
    /// `cn`.
    pub name: String,
    pub dn: String,
    pub entity: Entity,
    /// `dcmExporterID`: one task per exporter (STOW-RS exporters of this
    /// device only; the others are left out with a warning).
    pub exporter_ids: Vec<String>,
    /// `dcmProperty` conditions, all of which must hold.
    #[serde(serialize_with = "condition_texts")]
    pub conditions: crate::conditions::Conditions,
    /// `dcmSchedule`: the rule fires only for objects received inside.
    #[serde(rename = "schedules", serialize_with = "schedule_values")]
    pub schedule: Schedule,
    /// `dcmDuration`: how long after the entity's last instance its task
    /// runs (each new instance pushes it back).
    #[serde(serialize_with = "iso_duration")]
    pub duration: Duration,
    pub reoccurred: Reoccurred,
    /// The AE the rule is configured under, if any.
    pub ae_title: Option<String>,
}

fn condition_texts<S: serde::Serializer>(
    c: &crate::conditions::Conditions,
    ser: S,
) -> Result<S::Ok, S::Error> {
    ser.collect_seq(c.texts())
}

fn iso_duration<S: serde::Serializer>(d: &Duration, ser: S) -> Result<S::Ok, S::Error> {
    ser.serialize_str(&format_iso_duration(*d))
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
    /// Those AEs in detail, by AE title: what the Storage SCP accepts.
    pub network_aes: BTreeMap<String, NetworkAe>,
    pub exporters: BTreeMap<String, Exporter>,
    pub skipped_exporters: Vec<SkippedExporter>,
    pub queues: BTreeMap<String, QueueDesc>,
    /// Web apps referenced by the exporters, by name.
    pub web_apps: BTreeMap<String, WebApp>,
    /// `dcmExportRule` entries of the device and its AEs, by DN.
    pub export_rules: Vec<ExportRule>,
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

        let network_aes = self.network_aes(&children);

        let mut queues = BTreeMap::new();
        // Queues with errors of their own: an exporter naming one is not
        // told that the queue does not exist, and its web app is still
        // checked, so one pass reports every problem.
        let mut broken_queues = BTreeSet::new();
        for e in children.iter().filter(|e| e.has_class("dcmQueue")) {
            match self.queue(e) {
                Some(q) => {
                    queues.insert(q.name.clone(), q);
                }
                None => {
                    if let Some(name) = e.first("dcmQueueName").or(e.dn.rdn().value("dcmQueueName"))
                    {
                        broken_queues.insert(name.to_string());
                    }
                }
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
                let uri = redact_userinfo(uri);
                self.warnings.push(format!(
                    "{}: exporter {id} has dcmURI {}: not a STOW-RS exporter, skipped",
                    e.dn,
                    clip(&uri)
                ));
                skipped.push(SkippedExporter {
                    id: id.to_string(),
                    dn: e.dn.to_string(),
                    uri,
                });
                continue;
            }
            let web_app_name = rest.trim();
            if web_app_name.is_empty() || web_app_name.contains(char::is_whitespace) {
                self.error(
                    e,
                    Some("dcmURI"),
                    format!(
                        "{} is not stow:<dcmWebAppName>",
                        shown(&redact_userinfo(uri))
                    ),
                );
                continue;
            }
            let queue = match e.first("dcmQueueName") {
                None => {
                    self.error(e, Some("dcmQueueName"), "missing");
                    continue;
                }
                Some(q) if broken_queues.contains(q) => None,
                Some(q) if !queues.contains_key(q) => {
                    self.error(
                        e,
                        Some("dcmQueueName"),
                        format!("no dcmQueue {} on device {device_name}", shown(q)),
                    );
                    continue;
                }
                Some(q) => Some(q.to_string()),
            };
            let ae_title = e.first("dicomAETitle").map(str::to_string);
            if let Some(aet) = &ae_title
                && !ae_titles.contains(aet)
            {
                self.error(
                    e,
                    Some("dicomAETitle"),
                    format!("{} is not an AE title of device {device_name}", shown(aet)),
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
            let Some(queue) = queue else {
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

        let export_rules = self.export_rules(device, device_name, &exporters, &skipped);

        if !self.errors.is_empty() {
            return Err(self.errors);
        }
        Ok(Snapshot {
            device_name: device_name.to_string(),
            device_dn: device.dn.to_string(),
            ae_titles,
            network_aes,
            exporters,
            skipped_exporters: skipped,
            queues,
            web_apps,
            export_rules,
            warnings: self.warnings,
            source: source.to_string(),
        })
    }

    /// The device's export rules and those of its AEs (dcm4chee reads
    /// both: `cn=<rule>,<device>` and `cn=<rule>,dicomAETitle=<AET>,<device>`),
    /// each validated with errors naming its DN and attribute.
    /// The device's network AEs with their DICOM connections, accepted
    /// calling AE titles and SCP transfer capabilities.
    fn network_aes(&mut self, children: &[&RawEntry]) -> BTreeMap<String, NetworkAe> {
        let dir = self.dir;
        let mut aes = BTreeMap::new();
        for e in children.iter().filter(|e| e.has_class("dicomNetworkAE")) {
            let Some(aet) = e.first("dicomAETitle").or(e.dn.rdn().value("dicomAETitle")) else {
                continue;
            };
            let acceptor = e
                .first("dicomAssociationAcceptor")
                .and_then(parse_ldap_bool)
                .unwrap_or(true);
            let mut listen = Vec::new();
            for r in e.values("dicomNetworkConnectionReference") {
                let Some(c) = Dn::parse(r).ok().and_then(|dn| dir.get(&dn)) else {
                    self.error(
                        e,
                        Some("dicomNetworkConnectionReference"),
                        format!("{} does not exist", shown(r)),
                    );
                    continue;
                };
                let dicom = c
                    .first("dcmProtocol")
                    .is_none_or(|p| p.eq_ignore_ascii_case("DICOM"));
                let installed = c
                    .first("dicomInstalled")
                    .and_then(parse_ldap_bool)
                    .unwrap_or(true);
                if !dicom || !installed {
                    continue;
                }
                let host = c.first("dicomHostname").unwrap_or("0.0.0.0");
                match c.first("dicomPort").map(|p| p.trim().parse::<u16>()) {
                    Some(Ok(p)) if p > 0 => {
                        let host = c.first("dcmBindAddress").unwrap_or(host);
                        listen.push(if host.contains(':') {
                            format!("[{host}]:{p}")
                        } else {
                            format!("{host}:{p}")
                        });
                    }
                    // A connection without a port only initiates associations.
                    None => {}
                    Some(_) => self.error(
                        c,
                        Some("dicomPort"),
                        format!(
                            "{} is not a TCP port",
                            shown(c.first("dicomPort").unwrap_or(""))
                        ),
                    ),
                }
            }
            let transfer_capabilities = dir
                .iter()
                .filter(|t| t.dn.is_child_of(&e.dn) && t.has_class("dicomTransferCapability"))
                .filter(|t| {
                    t.first("dicomTransferRole")
                        .is_some_and(|r| r.eq_ignore_ascii_case("SCP"))
                })
                .filter_map(|t| {
                    let Some(cuid) = t.first("dicomSOPClass") else {
                        self.error(t, Some("dicomSOPClass"), "missing");
                        return None;
                    };
                    Some(TransferCapability {
                        sop_class: cuid.trim().to_string(),
                        transfer_syntaxes: t
                            .values("dicomTransferSyntax")
                            .iter()
                            .map(|s| s.trim().to_string())
                            .collect(),
                    })
                })
                .collect();
            aes.insert(
                aet.to_string(),
                NetworkAe {
                    ae_title: aet.to_string(),
                    dn: e.dn.to_string(),
                    acceptor,
                    accepted_calling: e
                        .values("dcmAcceptedCallingAETitle")
                        .iter()
                        .map(|s| s.trim().to_string())
                        .collect(),
                    listen,
                    transfer_capabilities,
                },
            );
        }
        aes
    }

    fn export_rules(
        &mut self,
        device: &RawEntry,
        device_name: &str,
        exporters: &BTreeMap<String, Exporter>,
        skipped: &[SkippedExporter],
    ) -> Vec<ExportRule> {
        let dir = self.dir;
        let mut rules = Vec::new();
        for e in dir.iter().filter(|e| e.has_class("dcmExportRule")) {
            let ae_title = match e.dn.parent() {
                Some(p) if p.key() == device.dn.key() => None,
                Some(p) if p.is_child_of(&device.dn) => match p.rdn().value("dicomAETitle") {
                    Some(aet) => Some(aet.to_string()),
                    None => continue,
                },
                _ => continue,
            };
            if let Some(rule) = self.export_rule(e, ae_title, device_name, exporters, skipped) {
                rules.push(rule);
            }
        }
        rules.sort_by(|a, b| a.dn.cmp(&b.dn));
        rules
    }

    fn export_rule(
        &mut self,
        e: &RawEntry,
        ae_title: Option<String>,
        device_name: &str,
        exporters: &BTreeMap<String, Exporter>,
        skipped: &[SkippedExporter],
    ) -> Option<ExportRule> {
        let before = self.errors.len();
        let name = e.first("cn").or(e.dn.rdn().value("cn")).map(str::to_string);
        if name.is_none() {
            self.error(e, Some("cn"), "missing");
        }
        let entity = match e.first("dcmEntity").map(str::trim) {
            None => {
                self.error(e, Some("dcmEntity"), "missing");
                None
            }
            Some(v) if v.eq_ignore_ascii_case("Study") => Some(Entity::Study),
            Some(v) if v.eq_ignore_ascii_case("Series") => Some(Entity::Series),
            Some(v) if v.eq_ignore_ascii_case("Instance") => Some(Entity::Instance),
            Some(v) => {
                self.error(
                    e,
                    Some("dcmEntity"),
                    format!("{} is not Study, Series or Instance", shown(v)),
                );
                None
            }
        };
        if let Some(other) = e.first("dicomDeviceName")
            && other != device_name
        {
            self.error(
                e,
                Some("dicomDeviceName"),
                format!(
                    "{} is not device {device_name}: a rule runs the exporters of this device only",
                    shown(other)
                ),
            );
        }
        let mut exporter_ids = Vec::new();
        if e.values("dcmExporterID").is_empty() {
            self.error(e, Some("dcmExporterID"), "missing");
        }
        for id in e.values("dcmExporterID") {
            if exporters.contains_key(id) {
                exporter_ids.push(id.clone());
            } else if skipped.iter().any(|s| &s.id == id) {
                self.warnings.push(format!(
                    "{}: rule names exporter {id}, not a STOW-RS exporter: no task is made for it",
                    e.dn
                ));
            } else {
                self.error(
                    e,
                    Some("dcmExporterID"),
                    format!("no dcmExporter {} on device {device_name}", shown(id)),
                );
            }
        }
        let conditions = match crate::conditions::Conditions::parse(
            e.values("dcmProperty").iter().map(String::as_str),
        ) {
            Ok(c) => c,
            Err(err) => {
                self.error(e, Some("dcmProperty"), clip(&err.to_string()));
                crate::conditions::Conditions::default()
            }
        };
        let schedule = self.schedule(e).unwrap_or_default();
        let duration = self
            .duration(e, "dcmDuration", MAX_RULE_DURATION)
            .unwrap_or(Duration::ZERO);
        let reoccurred = match e.first("dcmExportReoccurredInstances").map(str::trim) {
            None => Reoccurred::Replace,
            Some(v) => match v.to_ascii_uppercase().as_str() {
                "NEVER" => Reoccurred::Never,
                "ALWAYS" => Reoccurred::Always,
                "REPLACE" => Reoccurred::Replace,
                "COMPLETE" => Reoccurred::Complete,
                _ => {
                    self.error(
                        e,
                        Some("dcmExportReoccurredInstances"),
                        format!("{} is not NEVER, ALWAYS, REPLACE or COMPLETE", shown(v)),
                    );
                    Reoccurred::Replace
                }
            },
        };
        if e.first("dcmExportPreviousEntity").is_some() {
            self.warnings.push(format!(
                "{}: dcmExportPreviousEntity (exporting prior studies) is not supported: ignored",
                e.dn
            ));
        }
        if self.errors.len() != before {
            return None;
        }
        Some(ExportRule {
            name: name?,
            dn: e.dn.to_string(),
            entity: entity?,
            exporter_ids,
            conditions,
            schedule,
            duration,
            reoccurred,
            ae_title,
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
            max_tasks_parallel: self.int(e, "dcmMaxTasksParallel", 1, 1..=MAX_TASKS_PARALLEL),
            max_retries: self.int(e, "dcmMaxRetries", 0, 0..=MAX_RETRIES),
            retry_delay: self
                .duration(e, "dcmRetryDelay", MAX_RETRY_DELAY)
                .unwrap_or(Duration::from_secs(60)),
            retry_delay_multiplier: self.int(
                e,
                "dcmRetryDelayMultiplier",
                100,
                1..=MAX_RETRY_DELAY_MULTIPLIER,
            ),
            max_retry_delay: self.duration(e, "dcmMaxRetryDelay", MAX_RETRY_DELAY),
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

    /// An integer attribute within `range`; `default` when absent.
    fn int(
        &mut self,
        e: &RawEntry,
        attr: &str,
        default: u32,
        range: std::ops::RangeInclusive<u32>,
    ) -> u32 {
        match e.first(attr) {
            None => default,
            Some(v) => match v.trim().parse::<u32>() {
                Ok(n) if range.contains(&n) => n,
                _ => {
                    self.error(
                        e,
                        Some(attr),
                        format!(
                            "{} is not an integer from {} to {}",
                            shown(v),
                            range.start(),
                            range.end()
                        ),
                    );
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
                    self.error(e, Some(attr), format!("{} is not TRUE or FALSE", shown(v)));
                    default
                }
            },
        }
    }

    /// An ISO-8601 duration attribute of at most `max`.
    fn duration(&mut self, e: &RawEntry, attr: &str, max: Duration) -> Option<Duration> {
        let v = e.first(attr)?;
        let message = match parse_iso_duration(v) {
            Ok(d) if d <= max => return Some(d),
            Ok(_) | Err(DurationError::TooLong) => format!(
                "{} is longer than {}, the longest accepted",
                shown(v),
                format_iso_duration(max)
            ),
            Err(DurationError::Syntax) => {
                format!("{} is not an ISO-8601 duration like PT30S", shown(v))
            }
        };
        self.error(e, Some(attr), message);
        None
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
                    format!("{} is not a valid DN", shown(r)),
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
                    format!(
                        "{} is not a TCP port",
                        shown(c.first("dicomPort").unwrap_or(""))
                    ),
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
            let max = MAX_CONNECTION_TIMEOUT.as_millis();
            match v.trim().parse::<u64>() {
                Ok(0) => None,
                Ok(n) if u128::from(n) <= max => Some(Duration::from_millis(n)),
                _ => {
                    b.error(
                        c,
                        Some(attr),
                        format!(
                            "{} is not a number of milliseconds from 0 to {max}",
                            shown(v)
                        ),
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
                    format!(
                        "{} is not an http:// or https:// URL",
                        shown(&redact_userinfo(u))
                    ),
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
                    format!(
                        "{} is not supported (client_credentials or password)",
                        shown(other)
                    ),
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
        for (i, raw) in w.values("dcmProperty").to_vec().iter().enumerate() {
            let Some((key, value)) = raw.split_once('=') else {
                let message = malformed_property(raw, i + 1);
                self.error(w, Some("dcmProperty"), message);
                continue;
            };
            let key = key.trim();
            // Only non-secret keys reach the messages below with their
            // value, and then shortened.
            let shown_value = clip(value);
            let bool_prop = |b: &mut Self| match value.trim().to_ascii_lowercase().as_str() {
                "true" => true,
                "false" => false,
                _ => {
                    b.error(
                        w,
                        Some("dcmProperty"),
                        format!("{key}={shown_value}: expected true or false"),
                    );
                    false
                }
            };
            match key {
                "chunked" => p.chunked = bool_prop(self),
                "allow-any-hostname" => p.allow_any_hostname = bool_prop(self),
                "disable-trust-manager" => p.disable_trust_manager = bool_prop(self),
                "allow-insecure-token-url" => p.allow_insecure_token_url = bool_prop(self),
                "transfer-syntax-parameter" => p.transfer_syntax_parameter = bool_prop(self),
                "max-instances-per-request" => match value.trim().parse::<usize>() {
                    Ok(n) if (1..=MAX_INSTANCES_PER_REQUEST).contains(&n) => {
                        p.max_instances_per_request = n
                    }
                    _ => self.error(
                        w,
                        Some("dcmProperty"),
                        format!(
                            "max-instances-per-request={shown_value}: expected an integer from 1 to {MAX_INSTANCES_PER_REQUEST}"
                        ),
                    ),
                },
                "max-bytes-per-request" => match parse_size(value) {
                    Some(n) if n > 0 && n <= MAX_BYTES_PER_REQUEST => {
                        p.max_bytes_per_request = Some(n)
                    }
                    _ => self.error(
                        w,
                        Some("dcmProperty"),
                        format!(
                            "max-bytes-per-request={shown_value}: expected a size from 1 byte to 4GiB, such as 50000000, 500MB or 2GiB"
                        ),
                    ),
                },
                "concurrency" => match value.trim().parse::<usize>() {
                    Ok(n) if (1..=MAX_CONCURRENCY).contains(&n) => p.concurrency = n,
                    _ => self.error(
                        w,
                        Some("dcmProperty"),
                        format!(
                            "concurrency={shown_value}: expected an integer from 1 to {MAX_CONCURRENCY}"
                        ),
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
                                    "transfer-syntax={shown_value}: {} is neither a transfer syntax UID nor a keyword such as ExplicitVRLittleEndian",
                                    shown(item)
                                ),
                            ),
                        }
                    }
                    p.transfer_syntax = uids;
                }
                // The values below are secrets: messages name the key,
                // never the value.
                "bearer-token" => {
                    if value.trim().is_empty() {
                        self.error(
                            w,
                            Some("dcmProperty"),
                            "bearer-token=...: the token is empty",
                        );
                    } else {
                        p.bearer_token = Some(Secret::new(value));
                    }
                }
                "basic-auth" => {
                    if !value.contains(':') {
                        self.error(
                            w,
                            Some("dcmProperty"),
                            "basic-auth=...: expected user:password (the value is not shown)",
                        );
                    } else {
                        p.basic_auth = Some(Secret::new(value));
                    }
                }
                // A pasted base64 secret ends in `=` padding and reads as
                // a key with an empty value: such a key is not repeated.
                other if looks_like_key(other) && !value.trim_matches('=').trim().is_empty() => {
                    self.warnings.push(format!(
                    "{}: dcmProperty: unknown key {other:?} ignored",
                    w.dn
                ))
                }
                _ => self.warnings.push(format!(
                    "{}: dcmProperty: value #{} ignored: not a known property=value (not shown, it may hold a secret)",
                    w.dn,
                    i + 1
                )),
            }
        }
        p
    }
}

/// The message for a `dcmProperty` value without `=`. Such a value may be a
/// secret written with the wrong separator (`bearer-token:xyz`) or pasted
/// alone, so it is repeated only when it starts with a known property name
/// that holds no secret.
fn malformed_property(raw: &str, position: usize) -> String {
    let lead = raw
        .trim_start()
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
        .next()
        .unwrap_or("");
    match KNOWN_PROPERTIES
        .iter()
        .find(|k| k.eq_ignore_ascii_case(lead))
    {
        Some(k) if !SECRET_PROPERTIES.contains(k) => format!("{} is not name=value", shown(raw)),
        Some(k) => format!(
            "value #{position} starts with {k} but is not {k}=<value> (the value is not shown: it holds a secret)"
        ),
        None => format!(
            "value #{position} ({} characters) is not name=value (not shown: it names no known property and may hold a secret)",
            raw.chars().count()
        ),
    }
}

/// Whether `k` looks like a property name (and not like a pasted secret):
/// a letter, then letters, digits, `-`, `_` or `.`, at most 64 characters.
fn looks_like_key(k: &str) -> bool {
    k.len() <= 64
        && k.starts_with(|c: char| c.is_ascii_alphabetic())
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// A configured value for a message: quoted, and shortened to
/// [`MAX_SHOWN_VALUE`] characters.
pub(crate) fn shown(v: &str) -> String {
    match v.char_indices().nth(MAX_SHOWN_VALUE) {
        Some((end, _)) => format!("{:?}... ({} bytes)", &v[..end], v.len()),
        None => format!("{v:?}"),
    }
}

/// The same, unquoted (after `key=` in a message).
fn clip(v: &str) -> String {
    match v.char_indices().nth(MAX_SHOWN_VALUE) {
        Some((end, _)) => format!("{}... ({} bytes)", &v[..end], v.len()),
        None => v.to_string(),
    }
}

/// A URI with its user information masked ([`crate::redact::mask_url`]:
/// everything up to the last `@`, so a password with any character in it
/// never shows).
pub(crate) fn redact_userinfo(u: &str) -> String {
    crate::redact::mask_url(u)
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

/// Why a value is not a duration [`parse_iso_duration`] accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("not an ISO-8601 duration like PT30S")]
    Syntax,
    /// Well-formed, but longer than a [`Duration`] holds (about 584 billion
    /// years); callers apply their own, much lower, limits.
    #[error("too long")]
    TooLong,
}

/// Parses the ISO-8601 durations dcm4chee uses: `PnDTnHnMnS` (any subset),
/// and `PnW`. Any component may have a fraction (`PT0.5S`, `P1.5D`); digits
/// past nanoseconds are ignored. Exact integer arithmetic, checked at every
/// step: no input panics or wraps.
pub fn parse_iso_duration(v: &str) -> Result<Duration, DurationError> {
    const NANOS: u128 = 1_000_000_000;
    /// Fraction digits kept: enough for nanoseconds of a week.
    const FRACTION_DIGITS: u32 = 18;
    let s = v.trim();
    let rest = s
        .strip_prefix('P')
        .or_else(|| s.strip_prefix('p'))
        .ok_or(DurationError::Syntax)?;
    let mut total: u128 = 0;
    let mut in_time = false;
    // A component seen at all, and one after `T` (ISO: `T` needs one).
    let (mut any, mut any_time) = (false, false);
    let (mut int, mut frac, mut frac_len) = (0u128, 0u128, 0u32);
    let (mut digits, mut dot) = (false, false);
    for c in rest.chars() {
        match c.to_ascii_uppercase() {
            'T' if !in_time && !digits && !dot => in_time = true,
            d @ '0'..='9' => {
                let d = u128::from(d as u8 - b'0');
                digits = true;
                if dot {
                    if frac_len < FRACTION_DIGITS {
                        frac = frac * 10 + d;
                        frac_len += 1;
                    }
                } else {
                    int = int
                        .checked_mul(10)
                        .and_then(|n| n.checked_add(d))
                        .ok_or(DurationError::TooLong)?;
                }
            }
            '.' | ',' if !dot => dot = true,
            unit => {
                let secs: u128 = match (in_time, unit) {
                    (false, 'W') => 604_800,
                    (false, 'D') => 86_400,
                    (true, 'H') => 3_600,
                    (true, 'M') => 60,
                    (true, 'S') => 1,
                    _ => return Err(DurationError::Syntax),
                };
                if !digits {
                    return Err(DurationError::Syntax);
                }
                // frac < 10^18, so frac * secs * 1e9 < 6.1e32: no overflow.
                let part = int
                    .checked_mul(secs * NANOS)
                    .and_then(|n| n.checked_add(frac * secs * NANOS / 10u128.pow(frac_len)))
                    .ok_or(DurationError::TooLong)?;
                total = total.checked_add(part).ok_or(DurationError::TooLong)?;
                any = true;
                any_time = in_time;
                (int, frac, frac_len, digits, dot) = (0, 0, 0, false, false);
            }
        }
    }
    if !any || digits || dot || (in_time && !any_time) {
        return Err(DurationError::Syntax);
    }
    let secs = u64::try_from(total / NANOS).map_err(|_| DurationError::TooLong)?;
    // The remainder is below 1e9.
    Ok(Duration::new(secs, (total % NANOS) as u32))
}

/// `d` as an ISO-8601 duration (`P365D`, `PT10M`, `P1DT0.5S`), for messages.
pub fn format_iso_duration(d: Duration) -> String {
    let secs = d.as_secs();
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (h, m, s) = (rest / 3_600, rest % 3_600 / 60, rest % 60);
    let mut out = String::from("P");
    if days > 0 {
        out.push_str(&format!("{days}D"));
    }
    if h > 0 || m > 0 || s > 0 || d.subsec_nanos() > 0 || days == 0 {
        out.push('T');
        if h > 0 {
            out.push_str(&format!("{h}H"));
        }
        if m > 0 {
            out.push_str(&format!("{m}M"));
        }
        if s > 0 || d.subsec_nanos() > 0 || (h == 0 && m == 0) {
            if d.subsec_nanos() > 0 {
                let frac = format!("{:09}", d.subsec_nanos());
                out.push_str(&format!("{s}.{}S", frac.trim_end_matches('0')));
            } else {
                out.push_str(&format!("{s}S"));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_durations() {
        assert_eq!(parse_iso_duration("PT30S"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_iso_duration("PT10M"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_iso_duration("P1D"), Ok(Duration::from_secs(86_400)));
        assert_eq!(
            parse_iso_duration("P1DT1H0.5S"),
            Ok(Duration::from_secs_f64(90_000.5))
        );
        assert_eq!(
            parse_iso_duration("P1.5D"),
            Ok(Duration::from_secs(129_600))
        );
        assert_eq!(
            parse_iso_duration("PT0,25S"),
            Ok(Duration::from_millis(250))
        );
        assert_eq!(
            parse_iso_duration("P2W"),
            Ok(Duration::from_secs(1_209_600))
        );
        for bad in [
            "PT", "P", "30S", "P1H", "PT5", "P.D", "PT1.2.3S", "PT1S.", "PTT1S", "P1DT", "-PT1S",
            "PT-1S", "PT1e3S",
        ] {
            assert_eq!(parse_iso_duration(bad), Err(DurationError::Syntax), "{bad}");
        }
    }

    #[test]
    fn huge_durations_are_errors_not_panics() {
        // 8.64e19 s: more than a u64 of seconds (from_secs_f64 panicked).
        assert_eq!(
            parse_iso_duration("P999999999999999D"),
            Err(DurationError::TooLong)
        );
        assert_eq!(
            parse_iso_duration(&format!("PT{}S", "9".repeat(400))),
            Err(DurationError::TooLong)
        );
        assert_eq!(
            parse_iso_duration("PT9999999999999999S"),
            Ok(Duration::from_secs(9_999_999_999_999_999))
        );
        assert_eq!(
            parse_iso_duration(&format!("PT0.{}1S", "0".repeat(100))),
            Ok(Duration::ZERO),
            "digits past nanoseconds are ignored"
        );
        assert_eq!(
            parse_iso_duration(&format!("PT{}S", u64::MAX)),
            Ok(Duration::from_secs(u64::MAX))
        );
        assert_eq!(
            parse_iso_duration(&format!("PT{}.999999999S", u64::MAX)),
            Ok(Duration::MAX)
        );
        assert_eq!(
            parse_iso_duration(&format!("PT{}S1S", u64::MAX)),
            Err(DurationError::TooLong)
        );
    }

    #[test]
    fn durations_format_back() {
        for (d, s) in [
            (MAX_RETRY_DELAY, "P365D"),
            (Duration::from_secs(600), "PT10M"),
            (Duration::ZERO, "PT0S"),
            (Duration::from_millis(86_400_500), "P1DT0.5S"),
            (Duration::from_secs(3_661), "PT1H1M1S"),
        ] {
            assert_eq!(format_iso_duration(d), s);
            assert_eq!(parse_iso_duration(s), Ok(d));
        }
    }

    /// A simple generator (xorshift), so the loops below are reproducible.
    pub(crate) struct Gen(u64);

    impl Gen {
        pub(crate) fn new(seed: u64) -> Gen {
            Gen(seed | 1)
        }
        pub(crate) fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        pub(crate) fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
            from[(self.next() % from.len() as u64) as usize]
        }
    }

    #[test]
    fn generated_durations_never_panic_and_agree_with_their_format() {
        let pieces = [
            "P",
            "T",
            "1",
            "0",
            "9",
            "99999999999",
            "18446744073709551615",
            ".",
            ",",
            "5",
            "W",
            "D",
            "H",
            "M",
            "S",
            "p",
            "t",
            "s",
            " ",
            "\u{e9}",
            "-",
            "+",
            "e",
        ];
        let mut g = Gen::new(0x5eed);
        for _ in 0..20_000 {
            let n = 1 + g.next() % 10;
            let v: String = (0..n).map(|_| g.pick(&pieces)).collect();
            if let Ok(d) = parse_iso_duration(&v) {
                assert_eq!(parse_iso_duration(&format_iso_duration(d)), Ok(d), "{v}");
            }
        }
    }

    #[test]
    fn secrets_are_masked() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "******");
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"******\"");
    }
}
