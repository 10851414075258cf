//! Service metrics: one [`prometheus_client`] registry per running
//! application, written in the Prometheus text exposition format (0.0.4)
//! by the crate's encoder ([`Metrics::render`], `GET /metrics`), and
//! summed up per destination as JSON for the web page
//! ([`Metrics::summary`], `GET /metrics/summary`).
//!
//! Owns: the metric families, their names, help texts, label sets and
//! histogram buckets, and [`reason_class`], the fixed classes of failure
//! the `reason` label takes. One [`Metrics`] per application, created by
//! `app` and handed explicitly to whoever counts (the executor, the
//! transcoder, the operations endpoints), so several applications in one
//! process (as in the tests) do not mix; no global or task-local state.
//!
//! Must not touch: the STOW-RS client (it reports each request through
//! [`crate::stow::RequestObserver`], which the executor implements with a
//! [`Destination`]), the task store or the broker (their gauges are read
//! by the operations endpoint and passed in as [`QueueGauges`]).
//!
//! Labels hold configuration names (exporter ID, web app name, queue
//! name), a transfer syntax UID, a status or a reason class: never a URL,
//! a user name or a token.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use serde::Serialize;

use crate::outcome::{FailureKind, InstanceResult, InstanceStatus};

/// The `Content-Type` of [`Metrics::render`]'s text.
pub use prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Upper bounds (seconds) of the STOW-RS request latency histogram.
pub const REQUEST_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];
/// Upper bounds (seconds) of the decode (transcode) time histogram.
pub const DECODE_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The label naming the instance (`dicomDeviceName@host:port`) on the
/// counters of an instance sharing a database ([`Metrics::for_instance`]).
/// Not `instance`, which Prometheus sets to the scraped address.
pub const INSTANCE_LABEL: &str = "stow_instance";

/// The reason classes of failed instances.
pub const REASON_CLASSES: &[&str] = FailureKind::CLASSES;

/// The labels of everything counted per exporter sending to a web app.
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
struct DestinationLabels {
    exporter: String,
    web_app: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailedLabels {
    exporter: String,
    web_app: String,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TaskLabels {
    queue: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueLabels {
    queue: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReceivedLabels {
    /// `dimse` or `stow-rs`.
    path: &'static str,
    /// The calling AE title (C-STORE) or the AE title of the request path
    /// (STOW-RS); `other` beyond [`MAX_CALLING_LABELS`] distinct ones.
    calling_aet: String,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RuleLabels {
    rule: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RuleTaskLabels {
    rule: String,
    exporter: String,
}

/// Distinct calling AE titles [`Metrics::object_received`] labels
/// separately: callers choose them, so their number is bounded.
pub const MAX_CALLING_LABELS: usize = 64;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TranscodeLabels {
    transfer_syntax: String,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SyntaxLabels {
    transfer_syntax: String,
}

/// A gauge of counts read at scrape time (never negative).
type CountGauge = Gauge<u64, AtomicU64>;

/// A family that is written (HELP and TYPE) even before its first series.
/// The crate leaves empty families out; the hand-written writer this
/// replaced declared every family from the start, and dashboards and
/// `tests/ops.rs` rely on the families being there before the first
/// export.
#[derive(Debug)]
struct Declared<M>(M);

impl<M: EncodeMetric> EncodeMetric for Declared<M> {
    fn encode(&self, encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        self.0.encode(encoder)
    }

    fn metric_type(&self) -> MetricType {
        self.0.metric_type()
    }
}

/// The families, kept beside the registry that encodes them so that
/// counting finds its series without going through the registry.
struct Families {
    sent: Family<DestinationLabels, Counter>,
    bytes: Family<DestinationLabels, Counter>,
    failed: Family<FailedLabels, Counter>,
    retries: Family<DestinationLabels, Counter>,
    in_flight: Family<DestinationLabels, Gauge>,
    /// Made with [`REQUEST_BUCKETS`].
    latency: Family<DestinationLabels, Histogram>,
    tasks: Family<TaskLabels, CountGauge>,
    depth: Family<QueueLabels, CountGauge>,
    transcoded: Family<TranscodeLabels, Counter>,
    /// Made with [`DECODE_BUCKETS`].
    decode: Family<SyntaxLabels, Histogram>,
    received: Family<ReceivedLabels, Counter>,
    rule_matches: Family<RuleLabels, Counter>,
    exports_planned: Family<RuleLabels, Counter>,
    rule_tasks: Family<RuleTaskLabels, Counter>,
}

impl Families {
    fn new() -> Families {
        Families {
            sent: Family::default(),
            bytes: Family::default(),
            failed: Family::default(),
            retries: Family::default(),
            in_flight: Family::default(),
            latency: Family::new_with_constructor(|| {
                Histogram::new(REQUEST_BUCKETS.iter().copied())
            }),
            tasks: Family::default(),
            depth: Family::default(),
            transcoded: Family::default(),
            decode: Family::new_with_constructor(|| Histogram::new(DECODE_BUCKETS.iter().copied())),
            received: Family::default(),
            rule_matches: Family::default(),
            exports_planned: Family::default(),
            rule_tasks: Family::default(),
        }
    }

    /// A registry holding every family, in the order the hand-written
    /// writer used but for the task gauges, now last. Names are given without the `_total` the encoder
    /// appends to counters, and help texts without the final period it
    /// appends, so the exposed names and texts are the ones before the
    /// move to `prometheus-client`.
    fn registry(&self, instance: Option<&str>) -> Registry {
        let mut top = Registry::default();
        // With several instances on one database, each instance's own
        // counts carry its name, so that a scrape of every instance sums
        // up; the task records are the database's, the same on every
        // instance, and stay without it.
        let r = match instance {
            Some(name) => top.sub_registry_with_label((
                std::borrow::Cow::Borrowed(INSTANCE_LABEL),
                std::borrow::Cow::Owned(name.to_string()),
            )),
            None => &mut top,
        };
        r.register(
            "stow_exporter_instances_sent",
            "Instances the destination stored (COMPLETED or WARNING)",
            Declared(self.sent.clone()),
        );
        r.register(
            "stow_exporter_bytes_sent",
            "Bytes of the instances the destination stored, as sent (converted size when transcoded)",
            Declared(self.bytes.clone()),
        );
        r.register(
            "stow_exporter_instances_failed",
            "Instances not stored, by reason class",
            Declared(self.failed.clone()),
        );
        r.register(
            "stow_exporter_task_retries",
            "Tasks scheduled for another attempt (SCHEDULED FOR RETRY)",
            Declared(self.retries.clone()),
        );
        r.register(
            "stow_exporter_requests_in_flight",
            "STOW-RS requests being sent now",
            Declared(self.in_flight.clone()),
        );
        r.register(
            "stow_exporter_request_duration_seconds",
            "Duration of STOW-RS requests, from the first byte sent to the response read",
            Declared(self.latency.clone()),
        );
        r.register(
            "stow_exporter_transcoded_instances",
            "Instances decompressed for destinations that do not take the stored syntax, by stored transfer syntax and result",
            Declared(self.transcoded.clone()),
        );
        r.register(
            "stow_exporter_decode_duration_seconds",
            "Time to read and decompress one instance, by stored transfer syntax",
            Declared(self.decode.clone()),
        );
        r.register(
            "stow_exporter_received_instances",
            "Objects received into the archive, by path (dimse, stow-rs), calling AE title and result (stored, already stored, failed)",
            Declared(self.received.clone()),
        );
        r.register(
            "stow_exporter_export_rule_matches",
            "Stored objects an export rule matched, by rule",
            Declared(self.rule_matches.clone()),
        );
        r.register(
            "stow_exporter_export_rule_exports",
            "Exports export rules recorded for stored objects (one per exporter and object; several of one entity become one task)",
            Declared(self.exports_planned.clone()),
        );
        r.register(
            "stow_exporter_export_rule_tasks",
            "Export tasks created by export rules, by rule and exporter",
            Declared(self.rule_tasks.clone()),
        );
        top.register(
            "stow_exporter_tasks",
            "Task records of this device by queue and status",
            Declared(self.tasks.clone()),
        );
        top.register(
            "stow_exporter_queue_depth",
            "Tasks waiting in the queue (embedded: SCHEDULED and SCHEDULED FOR RETRY records; AMQP: ready messages of the broker queue)",
            Declared(self.depth.clone()),
        );
        top
    }
}

/// All metrics of one application.
pub struct Metrics {
    families: Families,
    registry: Registry,
    /// Handles already made, for [`Metrics::summary`] to list (the
    /// families do not expose their series).
    destinations: Mutex<BTreeMap<DestinationLabels, Arc<Destination>>>,
    /// Held from setting the queue gauges to the end of encoding, so that
    /// concurrent scrapes do not write each other's gauges.
    scrape: Mutex<()>,
    /// Calling AE titles labelled so far (at most [`MAX_CALLING_LABELS`]).
    callers: Mutex<std::collections::BTreeSet<String>>,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

/// The series of one exporter sending to one web app.
pub struct Destination {
    labels: DestinationLabels,
    sent: Counter,
    bytes: Counter,
    retries: Counter,
    in_flight: Gauge,
    latency: Histogram,
    /// By reason class, made on first use: only classes that occurred
    /// are exposed.
    failed: Family<FailedLabels, Counter>,
}

impl Destination {
    /// A STOW-RS request is going out: in flight until
    /// [`Destination::request_finished`].
    pub fn request_started(&self) {
        self.in_flight.inc();
    }

    /// A request started with [`Destination::request_started`] ended
    /// after `took`.
    pub fn request_finished(&self, took: Duration) {
        self.in_flight.dec();
        self.latency.observe(took.as_secs_f64());
    }

    /// Counts the results of one request: stored instances with their
    /// bytes (`bytes` gives each instance's size as sent), failed ones by
    /// reason class.
    pub fn results(&self, results: &[InstanceResult], bytes: impl Fn(&str) -> u64) {
        for r in results {
            if r.status.is_stored() {
                self.sent.inc();
                self.bytes.inc_by(bytes(&r.sop_iuid));
            } else {
                self.failed
                    .get_or_create(&self.failed_labels(reason_class(r)))
                    .inc();
            }
        }
    }

    /// A task of this exporter was scheduled for another attempt.
    pub fn retry_scheduled(&self) {
        self.retries.inc();
    }

    fn failed_labels(&self, reason: &'static str) -> FailedLabels {
        FailedLabels {
            exporter: self.labels.exporter.clone(),
            web_app: self.labels.web_app.clone(),
            reason,
        }
    }

    fn summary(&self) -> DestinationSummary {
        let failed = REASON_CLASSES
            .iter()
            .filter_map(|&class| self.failed.get(&self.failed_labels(class)).map(|c| c.get()))
            .sum();
        DestinationSummary {
            exporter: self.labels.exporter.clone(),
            web_app: self.labels.web_app.clone(),
            instances_sent: self.sent.get(),
            bytes_sent: self.bytes.get(),
            instances_failed: failed,
            requests_in_flight: u64::try_from(self.in_flight.get()).unwrap_or(0),
        }
    }
}

/// The class of a failed or missing instance, for the `reason` label (a
/// fixed, small set; see [`REASON_CLASSES`]), from the kind of failure set
/// where it happened. A result without a kind (one read back from a task
/// record, which keeps only the text) counts by its status.
pub fn reason_class(r: &InstanceResult) -> &'static str {
    match (r.kind, r.status) {
        (Some(kind), _) => kind.class(),
        (None, InstanceStatus::Missing) => FailureKind::Gone.class(),
        (None, _) => FailureKind::Transport.class(),
    }
}

/// Gauges read from the task store and the broker when scraped.
#[derive(Debug, Default, Clone)]
pub struct QueueGauges {
    /// Task records by (queue, status).
    pub tasks: BTreeMap<(String, String), u64>,
    /// Tasks waiting per queue, where the backend can tell.
    pub depth: BTreeMap<String, u64>,
}

/// What one exporter sent to one web app since the start, for the web
/// page's throughput (`GET /metrics/summary`): the same counts as the
/// `stow_exporter_*` series of that exporter and web app.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DestinationSummary {
    pub exporter: String,
    pub web_app: String,
    pub instances_sent: u64,
    pub bytes_sent: u64,
    /// Over every reason class.
    pub instances_failed: u64,
    pub requests_in_flight: u64,
}

impl Metrics {
    pub fn new() -> Metrics {
        Metrics::build(None)
    }

    /// The metrics of one of several instances sharing a database: its own
    /// counters (instances sent, failures, requests, decoding) carry the
    /// label [`INSTANCE_LABEL`] with its name; the task records, which
    /// every instance reads from the database, do not.
    pub fn for_instance(instance: &str) -> Metrics {
        Metrics::build(Some(instance))
    }

    fn build(instance: Option<&str>) -> Metrics {
        let families = Families::new();
        Metrics {
            registry: families.registry(instance),
            families,
            destinations: Mutex::default(),
            scrape: Mutex::default(),
            callers: Mutex::default(),
        }
    }

    /// The series of `exporter` sending to `web_app`, made (at zero) on
    /// first use: an exporter that never ran has none.
    pub fn destination(&self, exporter: &str, web_app: &str) -> Arc<Destination> {
        let labels = DestinationLabels {
            exporter: exporter.to_string(),
            web_app: web_app.to_string(),
        };
        let f = &self.families;
        self.destinations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(labels.clone())
            .or_insert_with(|| {
                Arc::new(Destination {
                    sent: f.sent.get_or_create_owned(&labels),
                    bytes: f.bytes.get_or_create_owned(&labels),
                    retries: f.retries.get_or_create_owned(&labels),
                    in_flight: f.in_flight.get_or_create_owned(&labels),
                    latency: f.latency.get_or_create_owned(&labels),
                    failed: f.failed.clone(),
                    labels,
                })
            })
            .clone()
    }

    /// One object stored in `transfer_syntax` was decompressed (or failed
    /// to be) in `d`.
    pub fn transcoded(&self, transfer_syntax: &str, ok: bool, d: Duration) {
        let f = &self.families;
        let labels = |result| TranscodeLabels {
            transfer_syntax: transfer_syntax.to_string(),
            result,
        };
        // Both results are exposed once a syntax was seen, the other at 0,
        // so a rate of failures has a series to start from.
        let (hit, other) = if ok {
            ("ok", "failed")
        } else {
            ("failed", "ok")
        };
        f.transcoded.get_or_create(&labels(hit)).inc();
        f.transcoded.get_or_create_owned(&labels(other));
        f.decode
            .get_or_create(&SyntaxLabels {
                transfer_syntax: transfer_syntax.to_string(),
            })
            .observe(d.as_secs_f64());
    }

    /// An object received by `path` from `calling_aet` ended as `result`.
    pub fn object_received(&self, path: &'static str, calling_aet: &str, result: &'static str) {
        let calling_aet = {
            let mut seen = self.callers.lock().unwrap_or_else(|p| p.into_inner());
            if seen.contains(calling_aet) || seen.len() < MAX_CALLING_LABELS {
                seen.insert(calling_aet.to_string());
                calling_aet.to_string()
            } else {
                "other".to_string()
            }
        };
        self.families
            .received
            .get_or_create(&ReceivedLabels {
                path,
                calling_aet,
                result,
            })
            .inc();
    }

    /// Export rule `rule` matched a stored object.
    pub fn rule_matched(&self, rule: &str) {
        self.families
            .rule_matches
            .get_or_create(&RuleLabels {
                rule: rule.to_string(),
            })
            .inc();
    }

    /// Export rule `rule` recorded `n` exports for a stored object.
    pub fn export_planned(&self, rule: &str, n: usize) {
        self.families
            .exports_planned
            .get_or_create(&RuleLabels {
                rule: rule.to_string(),
            })
            .inc_by(n as u64);
    }

    /// Export rule `rule` created a task of `exporter`.
    pub fn rule_task_created(&self, rule: &str, exporter: &str) {
        self.families
            .rule_tasks
            .get_or_create(&RuleTaskLabels {
                rule: rule.to_string(),
                exporter: exporter.to_string(),
            })
            .inc();
    }

    /// Everything, in the Prometheus text format 0.0.4 ([`CONTENT_TYPE`]),
    /// with the queue gauges as `gauges` gives them.
    pub fn render(&self, gauges: &QueueGauges) -> Result<String, std::fmt::Error> {
        let _scrape = self.scrape.lock().unwrap_or_else(|p| p.into_inner());
        let f = &self.families;
        // Replaced whole: a queue removed from the configuration goes away.
        f.tasks.clear();
        for ((queue, status), n) in &gauges.tasks {
            f.tasks
                .get_or_create(&TaskLabels {
                    queue: queue.clone(),
                    status: status.clone(),
                })
                .set(*n);
        }
        f.depth.clear();
        for (queue, n) in &gauges.depth {
            f.depth
                .get_or_create(&QueueLabels {
                    queue: queue.clone(),
                })
                .set(*n);
        }
        let mut out = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)?;
        Ok(out)
    }

    /// Every destination that has sent (or tried to), in order of
    /// exporter and web app.
    pub fn summary(&self) -> Vec<DestinationSummary> {
        let dests: Vec<_> = self
            .destinations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        dests.iter().map(|d| d.summary()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed(kind: FailureKind) -> InstanceResult {
        InstanceResult::failed("1.2", kind, "some words".into())
    }

    fn completed() -> InstanceResult {
        InstanceResult::completed("1")
    }

    #[test]
    fn reasons_are_classified_by_kind_not_by_text() {
        let c = |k: FailureKind| reason_class(&failed(k));
        assert_eq!(c(FailureKind::Status(409)), "http_4xx");
        assert_eq!(c(FailureKind::Status(503)), "http_5xx");
        assert_eq!(c(FailureKind::Status(302)), "bad_response");
        assert_eq!(c(FailureKind::Transport), "transport");
        assert_eq!(c(FailureKind::Rejected(Some(0xA700))), "rejected");
        assert_eq!(c(FailureKind::NotMentioned), "not_mentioned");
        assert_eq!(c(FailureKind::BadResponse), "bad_response");
        assert_eq!(c(FailureKind::Conversion { shortage: false }), "decode");
        assert_eq!(c(FailureKind::File { shortage: true }), "file");
        assert_eq!(c(FailureKind::Token { transient: false }), "token");
        assert_eq!(c(FailureKind::Gone), "missing");
        // The same words under another kind count as that kind.
        let mut r = failed(FailureKind::Transport);
        r.reason = Some("HTTP 409 Conflict".into());
        assert_eq!(reason_class(&r), "transport");
        // Read back from a record (no kind): by status.
        let mut m = failed(FailureKind::Gone);
        m.kind = None;
        assert_eq!(reason_class(&m), "missing");
        for class in ["http_4xx", "decode", "missing", "not_mentioned"] {
            assert!(REASON_CLASSES.contains(&class));
        }
    }

    #[test]
    fn an_instance_labels_its_own_counts_and_not_the_task_records() {
        let m = Metrics::for_instance("dev@host:8080");
        m.destination("Ex", "W")
            .results(&[InstanceResult::completed("1")], |_| 10);
        let mut g = QueueGauges::default();
        g.tasks.insert(("Q".into(), "COMPLETED".into()), 1);
        let text = m.render(&g).unwrap();
        assert!(
            text.contains(
                "stow_exporter_instances_sent_total{stow_instance=\"dev@host:8080\",exporter=\"Ex\",web_app=\"W\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("stow_exporter_tasks{queue=\"Q\",status=\"COMPLETED\"} 1"),
            "{text}"
        );
        assert!(!Metrics::new().render(&g).unwrap().contains("stow_instance"));
    }

    #[test]
    fn renders_text_format_with_escaped_labels() {
        let m = Metrics::new();
        let d = m.destination("Ex\"1", "W\\1");
        let ok = InstanceResult::completed("1");
        d.results(&[ok, failed(FailureKind::Status(500))], |_| 100);
        d.request_started();
        d.request_finished(Duration::from_millis(30));
        m.transcoded("1.2.840.10008.1.2.4.50", true, Duration::from_millis(2));
        let text = m.render(&QueueGauges::default()).unwrap();
        assert!(
            text.contains(
                "stow_exporter_instances_sent_total{exporter=\"Ex\\\"1\",web_app=\"W\\\\1\"} 1\n"
            ),
            "{text}"
        );
        assert!(text.contains("reason=\"http_5xx\"} 1\n"), "{text}");
        assert!(text.contains(
            "stow_exporter_bytes_sent_total{exporter=\"Ex\\\"1\",web_app=\"W\\\\1\"} 100\n"
        ));
        assert!(text.contains("le=\"0.05\"} 1\n"), "{text}");
        assert!(text.contains("le=\"0.025\"} 0\n"), "{text}");
        assert!(text.contains("le=\"+Inf\"} 1\n"), "{text}");
        assert!(text.contains(
            "stow_exporter_requests_in_flight{exporter=\"Ex\\\"1\",web_app=\"W\\\\1\"} 0\n"
        ));
        assert!(text.contains(
            "stow_exporter_transcoded_instances_total{transfer_syntax=\"1.2.840.10008.1.2.4.50\",result=\"ok\"} 1\n"
        ));
    }

    #[test]
    fn names_help_and_types_are_those_before_prometheus_client() {
        // The crate appends `_total` to counters and a period to help
        // texts; neither may be doubled, and every family is declared
        // before it has a series.
        let text = Metrics::new().render(&QueueGauges::default()).unwrap();
        for (name, kind, help) in [
            (
                "stow_exporter_instances_sent_total",
                "counter",
                "Instances the destination stored (COMPLETED or WARNING).",
            ),
            (
                "stow_exporter_instances_failed_total",
                "counter",
                "Instances not stored, by reason class.",
            ),
            (
                "stow_exporter_request_duration_seconds",
                "histogram",
                "Duration of STOW-RS requests, from the first byte sent to the response read.",
            ),
            (
                "stow_exporter_tasks",
                "gauge",
                "Task records of this device by queue and status.",
            ),
            (
                "stow_exporter_decode_duration_seconds",
                "histogram",
                "Time to read and decompress one instance, by stored transfer syntax.",
            ),
            (
                "stow_exporter_export_rule_tasks_total",
                "counter",
                "Export tasks created by export rules, by rule and exporter.",
            ),
        ] {
            assert!(
                text.contains(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n")),
                "{name}:\n{text}"
            );
        }
        // Ten families of exports, four of receiving and export rules.
        assert_eq!(text.matches("# TYPE ").count(), 14, "{text}");
        assert!(!text.contains("_total_total"), "{text}");
    }

    #[test]
    fn queue_gauges_are_replaced_on_each_scrape() {
        let m = Metrics::new();
        let mut g = QueueGauges::default();
        g.tasks.insert(("Export".into(), "COMPLETED".into()), 3);
        g.depth.insert("Export".into(), 2);
        let text = m.render(&g).unwrap();
        assert!(
            text.contains("stow_exporter_tasks{queue=\"Export\",status=\"COMPLETED\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("stow_exporter_queue_depth{queue=\"Export\"} 2\n"),
            "{text}"
        );
        let text = m.render(&QueueGauges::default()).unwrap();
        assert!(!text.contains("queue=\"Export\""), "{text}");
    }

    #[test]
    fn the_summary_adds_up_each_destination() {
        let m = Metrics::new();
        assert_eq!(m.summary(), []);
        let d = m.destination("B", "w");
        let missing = failed(FailureKind::Gone);
        d.results(
            &[
                completed(),
                completed(),
                failed(FailureKind::Status(500)),
                missing,
            ],
            |_| 10,
        );
        d.request_started();
        m.destination("A", "w").retry_scheduled();
        assert_eq!(
            m.summary(),
            [
                DestinationSummary {
                    exporter: "A".into(),
                    web_app: "w".into(),
                    instances_sent: 0,
                    bytes_sent: 0,
                    instances_failed: 0,
                    requests_in_flight: 0,
                },
                DestinationSummary {
                    exporter: "B".into(),
                    web_app: "w".into(),
                    instances_sent: 2,
                    bytes_sent: 20,
                    instances_failed: 2,
                    requests_in_flight: 1,
                },
            ]
        );
    }
}
