//! Service metrics, written in the Prometheus text exposition format
//! (version 0.0.4) by [`Metrics::render`].
//!
//! One [`Metrics`] per running application (so several in one process,
//! as in the tests, do not mix). Counters are plain atomics behind a
//! per-label-set handle; the label sets are few (exporter × web app,
//! transfer syntaxes), so a mutex-guarded map finds the handle.
//!
//! Labels hold configuration names (exporter ID, web app name, queue
//! name), a transfer syntax UID, a status or a reason class: never a URL,
//! a user name or a token.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::outcome::{FailureKind, InstanceResult, InstanceStatus};

/// Upper bounds (seconds) of the STOW-RS request latency histogram.
pub const REQUEST_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];
/// Upper bounds (seconds) of the decode (transcode) time histogram.
pub const DECODE_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The reason classes of failed instances.
pub const REASON_CLASSES: &[&str] = FailureKind::CLASSES;

/// All metrics of one application.
#[derive(Default)]
pub struct Metrics {
    destinations: Mutex<BTreeMap<(String, String), Arc<Destination>>>,
    transcodes: Mutex<BTreeMap<String, Arc<Transcodes>>>,
}

/// Counters of one exporter sending to one web app.
pub struct Destination {
    sent: AtomicU64,
    bytes: AtomicU64,
    retries: AtomicU64,
    in_flight: AtomicI64,
    failed: Mutex<BTreeMap<&'static str, u64>>,
    latency: Histogram,
}

/// Counters of one stored transfer syntax being decompressed.
pub struct Transcodes {
    ok: AtomicU64,
    failed: AtomicU64,
    time: Histogram,
}

/// A cumulative histogram with fixed bounds.
pub struct Histogram {
    bounds: &'static [f64],
    inner: Mutex<HistogramData>,
}

#[derive(Default)]
struct HistogramData {
    /// Per bucket (not cumulative); the last one is +Inf.
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            inner: Mutex::new(HistogramData {
                counts: vec![0; bounds.len() + 1],
                ..HistogramData::default()
            }),
        }
    }

    pub fn observe(&self, d: Duration) {
        let v = d.as_secs_f64();
        let i = self
            .bounds
            .iter()
            .position(|b| v <= *b)
            .unwrap_or(self.bounds.len());
        let mut h = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        h.counts[i] += 1;
        h.sum += v;
        h.count += 1;
    }

    fn write(&self, out: &mut String, name: &str, labels: &[(&str, &str)]) {
        let h = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut cumulative = 0;
        for (i, n) in h.counts.iter().enumerate() {
            cumulative += n;
            let le = match self.bounds.get(i) {
                Some(b) => format_float(*b),
                None => "+Inf".to_string(),
            };
            let mut l = labels.to_vec();
            l.push(("le", &le));
            sample(out, &format!("{name}_bucket"), &l, cumulative as f64);
        }
        sample(out, &format!("{name}_sum"), labels, h.sum);
        sample(out, &format!("{name}_count"), labels, h.count as f64);
    }
}

tokio::task_local! {
    /// The counters the STOW-RS requests of the current task go to.
    static DESTINATION: Arc<Destination>;
}

/// Runs `f` (sending one batch) with its requests counted for `dest`.
pub async fn for_destination<F: std::future::Future>(dest: Arc<Destination>, f: F) -> F::Output {
    DESTINATION.scope(dest, f).await
}

/// Times one STOW-RS request and counts it as in flight until dropped;
/// does nothing outside [`for_destination`].
pub fn request_timer() -> RequestTimer {
    RequestTimer(
        DESTINATION
            .try_with(|d| (d.request_started(), std::time::Instant::now()))
            .ok(),
    )
}

/// See [`request_timer`].
pub struct RequestTimer(Option<(InFlight, std::time::Instant)>);

impl Drop for RequestTimer {
    fn drop(&mut self) {
        if let Some((in_flight, started)) = self.0.take() {
            in_flight.0.request_done(started.elapsed());
        }
    }
}

/// A request in flight; counted until dropped.
pub struct InFlight(Arc<Destination>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Destination {
    fn new() -> Destination {
        Destination {
            sent: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            in_flight: AtomicI64::new(0),
            failed: Mutex::default(),
            latency: Histogram::new(REQUEST_BUCKETS),
        }
    }

    /// Marks a request as started; it ends when the guard is dropped.
    pub fn request_started(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }

    /// One STOW-RS request took `d`.
    pub fn request_done(&self, d: Duration) {
        self.latency.observe(d);
    }

    /// Counts the results of one request: stored instances with their
    /// bytes (`bytes` gives each instance's size as sent), failed ones by
    /// reason class.
    pub fn results(&self, results: &[InstanceResult], bytes: impl Fn(&str) -> u64) {
        for r in results {
            if r.status.is_stored() {
                self.sent.fetch_add(1, Ordering::Relaxed);
                self.bytes.fetch_add(bytes(&r.sop_iuid), Ordering::Relaxed);
            } else {
                let class = reason_class(r);
                *self
                    .failed
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .entry(class)
                    .or_default() += 1;
            }
        }
    }

    /// A task of this exporter was scheduled for another attempt.
    pub fn retry_scheduled(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
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

impl Transcodes {
    fn new() -> Transcodes {
        Transcodes {
            ok: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            time: Histogram::new(DECODE_BUCKETS),
        }
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

impl Metrics {
    pub fn new() -> Metrics {
        Metrics::default()
    }

    /// The counters of `exporter` sending to `web_app`.
    pub fn destination(&self, exporter: &str, web_app: &str) -> Arc<Destination> {
        self.destinations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((exporter.to_string(), web_app.to_string()))
            .or_insert_with(|| Arc::new(Destination::new()))
            .clone()
    }

    /// One object stored in `transfer_syntax` was decompressed (or failed
    /// to be) in `d`.
    pub fn transcoded(&self, transfer_syntax: &str, ok: bool, d: Duration) {
        let t = self
            .transcodes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(transfer_syntax.to_string())
            .or_insert_with(|| Arc::new(Transcodes::new()))
            .clone();
        if ok { &t.ok } else { &t.failed }.fetch_add(1, Ordering::Relaxed);
        t.time.observe(d);
    }

    /// Everything, in the Prometheus text format.
    pub fn render(&self, gauges: &QueueGauges) -> String {
        let mut out = String::new();
        let dests: Vec<_> = self
            .destinations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let counter =
            |out: &mut String, name: &str, help: &str, f: &dyn Fn(&Destination) -> f64| {
                family(out, name, "counter", help);
                for ((e, w), d) in &dests {
                    sample(out, name, &[("exporter", e), ("web_app", w)], f(d));
                }
            };
        counter(
            &mut out,
            "stow_exporter_instances_sent_total",
            "Instances the destination stored (COMPLETED or WARNING).",
            &|d| d.sent.load(Ordering::Relaxed) as f64,
        );
        counter(
            &mut out,
            "stow_exporter_bytes_sent_total",
            "Bytes of the instances the destination stored, as sent (converted size when transcoded).",
            &|d| d.bytes.load(Ordering::Relaxed) as f64,
        );
        family(
            &mut out,
            "stow_exporter_instances_failed_total",
            "counter",
            "Instances not stored, by reason class.",
        );
        for ((e, w), d) in &dests {
            let failed = d.failed.lock().unwrap_or_else(|p| p.into_inner()).clone();
            for (class, n) in failed {
                sample(
                    &mut out,
                    "stow_exporter_instances_failed_total",
                    &[("exporter", e), ("web_app", w), ("reason", class)],
                    n as f64,
                );
            }
        }
        counter(
            &mut out,
            "stow_exporter_task_retries_total",
            "Tasks scheduled for another attempt (SCHEDULED FOR RETRY).",
            &|d| d.retries.load(Ordering::Relaxed) as f64,
        );
        family(
            &mut out,
            "stow_exporter_requests_in_flight",
            "gauge",
            "STOW-RS requests being sent now.",
        );
        for ((e, w), d) in &dests {
            sample(
                &mut out,
                "stow_exporter_requests_in_flight",
                &[("exporter", e), ("web_app", w)],
                d.in_flight.load(Ordering::Relaxed) as f64,
            );
        }
        family(
            &mut out,
            "stow_exporter_request_duration_seconds",
            "histogram",
            "Duration of STOW-RS requests, from the first byte sent to the response read.",
        );
        for ((e, w), d) in &dests {
            d.latency.write(
                &mut out,
                "stow_exporter_request_duration_seconds",
                &[("exporter", e), ("web_app", w)],
            );
        }

        family(
            &mut out,
            "stow_exporter_tasks",
            "gauge",
            "Task records of this device by queue and status.",
        );
        for ((q, s), n) in &gauges.tasks {
            sample(
                &mut out,
                "stow_exporter_tasks",
                &[("queue", q), ("status", s)],
                *n as f64,
            );
        }
        family(
            &mut out,
            "stow_exporter_queue_depth",
            "gauge",
            "Tasks waiting in the queue (embedded: SCHEDULED and SCHEDULED FOR RETRY records; AMQP: ready messages of the broker queue).",
        );
        for (q, n) in &gauges.depth {
            sample(
                &mut out,
                "stow_exporter_queue_depth",
                &[("queue", q)],
                *n as f64,
            );
        }

        let ts: Vec<_> = self
            .transcodes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        family(
            &mut out,
            "stow_exporter_transcoded_instances_total",
            "counter",
            "Instances decompressed for destinations that do not take the stored syntax, by stored transfer syntax and result.",
        );
        for (uid, t) in &ts {
            for (result, n) in [("ok", &t.ok), ("failed", &t.failed)] {
                sample(
                    &mut out,
                    "stow_exporter_transcoded_instances_total",
                    &[("transfer_syntax", uid), ("result", result)],
                    n.load(Ordering::Relaxed) as f64,
                );
            }
        }
        family(
            &mut out,
            "stow_exporter_decode_duration_seconds",
            "histogram",
            "Time to read and decompress one instance, by stored transfer syntax.",
        );
        for (uid, t) in &ts {
            t.time.write(
                &mut out,
                "stow_exporter_decode_duration_seconds",
                &[("transfer_syntax", uid)],
            );
        }
        out
    }
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {}", escape_help(help));
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: f64) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (k, v)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "{k}=\"{}\"", escape_label(v));
        }
        out.push('}');
    }
    let _ = writeln!(out, " {}", format_float(value));
}

fn format_float(v: f64) -> String {
    if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.to_string()
    } else if v.is_nan() {
        "NaN".to_string()
    } else {
        // Rust's shortest round-trip form: integers without a fraction.
        format!("{v}")
    }
}

fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed(kind: FailureKind) -> InstanceResult {
        InstanceResult::failed("1.2", kind, "some words".into())
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
    fn renders_text_format_with_escaped_labels() {
        let m = Metrics::new();
        let d = m.destination("Ex\"1", "W\\1");
        let ok = InstanceResult::completed("1");
        d.results(&[ok, failed(FailureKind::Status(500))], |_| 100);
        {
            let _g = d.request_started();
            d.request_done(Duration::from_millis(30));
        }
        m.transcoded("1.2.840.10008.1.2.4.50", true, Duration::from_millis(2));
        let text = m.render(&QueueGauges::default());
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
}
