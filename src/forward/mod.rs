//! Forwarding received objects by dcm4chee's export rules.
//!
//! The receivers (the Storage SCP, [`crate::scp`], and STOW-RS into the
//! archive) hand each complete object to a [`Receiver`], which stores it
//! in the archive together with the exports the `dcmExportRule` entries
//! ask for ([`plan`]), as one step of the archive index: a stored object is
//! never left without its exports, whatever crashes after. The
//! [`scheduler`] turns each pending export into an ordinary export task on
//! its exporter's queue once it is due: `dcmDuration` after the last
//! instance of its entity arrived, so a study arriving over minutes
//! becomes one task, as in dcm4chee.
//!
//! Owns: matching rules to a received object, and the pending exports'
//! way to the task queue. Must not touch: the association or HTTP
//! protocol (the receivers'), file content (the archive's), running
//! exports (the workers').

pub mod plan;
pub mod scheduler;

use std::path::PathBuf;
use std::sync::Arc;

use chrono::Utc;
use tokio::sync::Notify;

use crate::archive::{Archive, ImportError, Imported};
use crate::conditions::Parties;
use crate::config::LiveConfig;
use crate::metrics::Metrics;
use crate::schedule::Zone;

/// The status both receivers answer for an object the archive did not
/// store: a C-STORE Status and a STOW-RS FailureReason share the codes of
/// PS3.4 § B.2.3 (and PS3.18 for 0xA900 on a study mismatch).
pub fn refusal_status(e: &ImportError) -> u16 {
    match e {
        // Duplicate SOP Instance: another object holds the UID, kept.
        ImportError::Conflict { .. } => 0x0111,
        // Cannot understand.
        ImportError::NotDicom { .. }
        | ImportError::Malformed { .. }
        | ImportError::UnsupportedTransferSyntax { .. } => 0xC000,
        // Data Set does not match SOP Class (missing or invalid UIDs).
        ImportError::MissingAttribute { .. } | ImportError::InvalidUid { .. } => 0xA900,
        // Refused: Out of Resources.
        ImportError::Store { .. } | ImportError::Unreadable { .. } => 0xA700,
        // Processing failure.
        ImportError::Index { .. } | ImportError::Internal { .. } => 0x0110,
    }
}

/// How an object arrived, for the metrics' `path` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// A DICOM C-STORE.
    CStore,
    /// STOW-RS into the archive.
    StowRs,
}

impl Via {
    pub fn as_str(self) -> &'static str {
        match self {
            Via::CStore => "dimse",
            Via::StowRs => "stow-rs",
        }
    }
}

/// Stores received objects with the exports their rules ask for; cheap to
/// clone.
#[derive(Clone)]
pub struct Receiver {
    archive: Archive,
    live: LiveConfig,
    zone: Zone,
    metrics: Arc<Metrics>,
    /// Wakes the [`scheduler`] when an export may be due now.
    wake: Arc<Notify>,
}

impl std::fmt::Debug for Receiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receiver")
            .field("archive", &self.archive)
            .finish_non_exhaustive()
    }
}

impl Receiver {
    pub fn new(
        archive: Archive,
        live: LiveConfig,
        zone: Zone,
        metrics: Arc<Metrics>,
        wake: Arc<Notify>,
    ) -> Receiver {
        Receiver {
            archive,
            live,
            zone,
            metrics,
            wake,
        }
    }

    /// Where receivers write an object before [`Receiver::store`].
    pub fn incoming_dir(&self) -> PathBuf {
        self.archive.incoming_dir()
    }

    /// The configuration the receivers check callers against.
    pub fn config(&self) -> &LiveConfig {
        &self.live
    }

    /// Stores `tmp` (a complete, fsynced Part-10 file in
    /// [`Receiver::incoming_dir`]) received from `parties`, recording the
    /// exports of the rules it matches in the same step; `tmp` is gone
    /// afterwards. The metrics count it, its rule matches and exports.
    pub async fn store(
        &self,
        tmp: PathBuf,
        parties: Parties,
        via: Via,
    ) -> Result<Imported, ImportError> {
        let snapshot = self.live.current();
        let zone = self.zone;
        let now = Utc::now();
        let calling = parties.sending_aet.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        let result = self
            .archive
            .store_received(tmp, move |obj, rec| {
                let planned = plan::plan(&snapshot, &zone, now, obj, rec, &parties);
                let _ = tx.send((planned.matches.clone(), planned.due_now));
                planned.exports
            })
            .await;
        let (matches, due_now) = rx.try_recv().unwrap_or_default();
        match &result {
            Ok(Imported::Stored(_)) => {
                self.metrics
                    .object_received(via.as_str(), &calling, "stored");
                for m in &matches {
                    self.metrics.rule_matched(&m.rule);
                    self.metrics.export_planned(&m.rule, m.exports);
                }
            }
            Ok(Imported::AlreadyStored(_)) => {
                self.metrics
                    .object_received(via.as_str(), &calling, "already stored");
            }
            Err(_) => self
                .metrics
                .object_received(via.as_str(), &calling, "failed"),
        }
        if due_now && result.is_ok() {
            self.wake.notify_one();
        }
        result
    }
}
