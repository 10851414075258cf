//! Which exports a received object asks for: the `dcmExportRule` entries
//! it matches, each giving one pending export per exporter for the rule's
//! entity, due `dcmDuration` from now.
//!
//! A rule configured under an AE (`cn=...,dicomAETitle=AET,...`) applies
//! only to objects that AE received. A rule whose `dcmSchedule` is closed
//! when the object arrives does not drop it, as dcm4chee does: its export
//! is due when the window opens next (and `dcmDuration` has passed), so
//! nothing received outside a window is silently never forwarded.
//!
//! Owns the decision only: pure over the configuration, the clock value
//! and the object's header. Must not touch storage, the index or queues.

use chrono::{DateTime, Utc};
use dicom_object::InMemDicomObject;

use crate::archive::{InstanceRecord, PendingExport, PlannedExports};
use crate::conditions::Parties;
use crate::config::Snapshot;
use crate::config::model::{Entity, Reoccurred};
use crate::schedule::Zone;
use crate::task::MAX_BATCH_ID_CHARS;

/// One rule that matched, with the exports it asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleMatch {
    /// The rule's `cn`.
    pub rule: String,
    pub exports: usize,
}

/// What [`plan`] decided for one object.
#[derive(Debug, Default)]
pub struct Plan {
    pub exports: PlannedExports,
    pub matches: Vec<RuleMatch>,
    /// Some export is due at once (`dcmDuration` zero, window open).
    pub due_now: bool,
}

/// The exports `obj` (received from `parties` at `now`) asks for under
/// `snapshot`'s export rules.
pub fn plan(
    snapshot: &Snapshot,
    zone: &Zone,
    now: DateTime<Utc>,
    obj: &InMemDicomObject,
    rec: &InstanceRecord,
    parties: &Parties,
) -> Plan {
    let mut out = Plan::default();
    for rule in &snapshot.export_rules {
        if rule
            .ae_title
            .as_deref()
            .is_some_and(|aet| aet != parties.receiving_aet)
        {
            continue;
        }
        if !rule.conditions.matches(obj, parties) {
            continue;
        }
        let mut due = now + rule.duration;
        if !zone.is_open(&rule.schedule, now) {
            match zone.next_open(&rule.schedule, now) {
                Some(open) => due = due.max(open),
                // Validation refuses a schedule that never opens; should
                // one get here, the export waits for a person to see it.
                None => {
                    tracing::warn!(rule = %rule.dn, "export rule's dcmSchedule never opens; no export");
                    continue;
                }
            }
        }
        let (series, sop) = match rule.entity {
            Entity::Study => (None, None),
            Entity::Series => (Some(rec.series_iuid.clone()), None),
            Entity::Instance => (Some(rec.series_iuid.clone()), Some(rec.sop_iuid.clone())),
        };
        let name: String = rule.name.chars().take(MAX_BATCH_ID_CHARS).collect();
        let mut n = 0;
        for id in &rule.exporter_ids {
            // An exporter that is not a STOW-RS exporter of this device was
            // warned about when the configuration was loaded.
            if snapshot.exporter(id).is_none() {
                continue;
            }
            let export = PendingExport {
                exporter_id: id.clone(),
                rule: name.clone(),
                study_iuid: rec.study_iuid.clone(),
                series_iuid: series.clone(),
                sop_iuid: sop.clone(),
                due,
            };
            if rule.reoccurred == Reoccurred::Always {
                out.exports.when_again.push(export.clone());
            }
            out.exports.when_new.push(export);
            n += 1;
        }
        if n > 0 {
            out.due_now |= due <= now;
            out.matches.push(RuleMatch {
                rule: name,
                exports: n,
            });
        }
    }
    out
}
