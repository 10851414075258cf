//! The `check-config` command: loads and validates the configuration as
//! `serve` would, and prints the exporters and export rules it defines as
//! tables, or every error found (each naming its DN and attribute).
//!
//! Owns the table's layout; secrets reach it only in their masked
//! serialized form.

use std::process::ExitCode;

use crate::cli::CliError;
use crate::cli::args::{CheckConfigArgs, cleartext_warning};
use crate::config::Snapshot;

/// `check-config`: exit status 0 when the configuration is valid.
pub async fn check_config(a: CheckConfigArgs) -> Result<ExitCode, CliError> {
    let source = a.config.source().await?;
    // Before loading: a directory that does not answer still gets the
    // warning.
    if let Some(w) = cleartext_warning(&source) {
        println!("warning: {w}");
    }
    match source.load(&a.config.device_name).await {
        Ok(s) => {
            print!("{}", table(&s));
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            for line in e.errors() {
                println!("error: {line}");
            }
            Ok(ExitCode::FAILURE)
        }
    }
}

/// The valid configuration's summary: a heading line, one line per
/// exporter, then the warnings.
fn table(s: &Snapshot) -> String {
    let mut out = format!(
        "configuration {} is valid: device {}\n",
        s.source, s.device_name
    );
    out += &format!(
        "{:<16} {:<58} {:<10} {:<24} PROPERTIES\n",
        "EXPORTER", "STOW-RS URL", "QUEUE", "SCHEDULE"
    );
    for e in s.exporters.values() {
        let w = s.web_app(&e.web_app);
        let url = w
            .map(|w| format!("{}/studies", w.service_url))
            .unwrap_or_default();
        // Secrets serialize masked.
        let props = w
            .map(|w| serde_json::to_string(&w.props).unwrap_or_default())
            .unwrap_or_default();
        let schedule = if e.schedule.values().is_empty() {
            "-".to_string()
        } else {
            e.schedule.values().join(" | ")
        };
        out += &format!(
            "{:<16} {:<58} {:<10} {:<24} {}\n",
            e.id, url, e.queue, schedule, props
        );
    }
    if !s.export_rules.is_empty() {
        out += &format!(
            "{:<24} {:<8} {:<24} {:<10} {:<24} CONDITIONS\n",
            "EXPORT RULE", "ENTITY", "EXPORTERS", "DURATION", "SCHEDULE"
        );
    }
    for r in &s.export_rules {
        let schedule = if r.schedule.values().is_empty() {
            "-".to_string()
        } else {
            r.schedule.values().join(" | ")
        };
        let name = match &r.ae_title {
            Some(aet) => format!("{} ({aet})", r.name),
            None => r.name.clone(),
        };
        let conditions = if r.conditions.is_empty() {
            "-".to_string()
        } else {
            r.conditions.to_string()
        };
        out += &format!(
            "{:<24} {:<8} {:<24} {:<10} {:<24} {}\n",
            name,
            format!("{:?}", r.entity),
            r.exporter_ids.join(","),
            crate::config::model::format_iso_duration(r.duration),
            schedule,
            conditions
        );
    }
    for w in &s.warnings {
        out += &format!("warning: {w}\n");
    }
    out
}
