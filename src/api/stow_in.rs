//! STOW-RS into the archive (PS3.18 § 10.5 Store Transaction):
//! `POST /dcm4chee-arc/aets/{AET}/rs/studies` and
//! `POST /dcm4chee-arc/aets/{AET}/rs/studies/{StudyInstanceUID}` on the
//! control API, behind its token (or site guard) like every route there.
//!
//! The request is handled by stowrsd's code (`stowrsd::post`): the media
//! types (415 for anything but `multipart/related;
//! type="application/dicom"`), the limits (parts, bytes per request and per
//! part, the free-disk reserve: the `serve --stowrsd-*` options), the
//! streamed multipart reader, the statuses (200 all stored, 202 some
//! failed, 409 none) and the Store Instances Response Module in DICOM JSON
//! or XML. Only the sink differs (`ArchiveSink`): each part is streamed to
//! a temporary file in the archive's incoming directory, fsynced, and
//! handed to [`Receiver::store`], which parses, stores and indexes it with
//! the exports of the `dcmExportRule` entries it matches, as for a C-STORE.
//!
//! - `{AET}` must be an accepting `dicomNetworkAE` of the device, else 404
//!   naming it. It is the receiving AE title of the export rules'
//!   conditions; the sending AE title is empty (HTTP has none), the hosts
//!   are the connection's addresses.
//! - With `{StudyInstanceUID}`, an instance of another study is not stored:
//!   FailureReason 0xA900, as PS3.18 says.
//! - An instance stored before with the same bytes is reported stored (a
//!   sender retrying after a lost reply gets its success); other bytes
//!   under a SOP Instance UID already stored fail with 0x0111 and the
//!   stored object is kept.
//! - Archive errors map to FailureReason as the Storage SCP maps them to
//!   C-STORE statuses ([`crate::forward::refusal_status`]).
//!
//! Owns: the AE title check and the archive sink. Must not touch: the
//! HTTP side of a Store Transaction (stowrsd's), how an object is stored
//! and matched to rules
//! (the archive's and [`crate::forward`]'s), authentication (the router's
//! layers, `crate::app`).

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path as FsPath, PathBuf};

use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::{ApiError, ApiState};
use crate::archive::{Archive, ImportError, Imported, StoredInstance};
use crate::conditions::Parties;
use crate::forward::{Receiver, Via};
use crate::http_server::LocalAddr;
use crate::stowrsd::limits::Limits;
use crate::stowrsd::meta::FileMeta;
use crate::stowrsd::response::{FailedSop, ReferencedSop, failure_reason};
use crate::stowrsd::store::TempFile;
use crate::stowrsd::{self, Intake, Sink, failed, io_failure};

/// What the Store Transaction needs of the service: the receiver that
/// stores into the archive, and the bounds of one request.
#[derive(Debug, Clone)]
pub struct StowIn {
    pub receiver: Receiver,
    /// Parts and bytes of one request (`serve --stowrsd-max-*`).
    pub limits: Limits,
    /// Bytes that stay free on the archive's file system
    /// (`serve --stowrsd-min-free-disk`); 0 checks nothing.
    pub min_free_disk: u64,
}

/// `POST /aets/{AET}/rs/studies`.
pub(super) async fn store_instances(
    State(s): State<ApiState>,
    Path(aet): Path<String>,
    req: Request,
) -> Response {
    store(s, aet, None, req).await
}

/// `POST /aets/{AET}/rs/studies/{StudyInstanceUID}`.
pub(super) async fn store_study_instances(
    State(s): State<ApiState>,
    Path((aet, study)): Path<(String, String)>,
    req: Request,
) -> Response {
    store(s, aet, Some(study), req).await
}

async fn store(s: ApiState, aet: String, study: Option<String>, req: Request) -> Response {
    if let Err(e) = check_aet(&s, &aet) {
        return e.into_response();
    }
    let ip = |a: Option<SocketAddr>| a.map(|a| a.ip().to_string()).unwrap_or_default();
    let parties = Parties {
        // HTTP has no calling AE title.
        sending_aet: String::new(),
        receiving_aet: aet,
        sending_host: ip(req
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0)),
        receiving_host: ip(req.extensions().get::<LocalAddr>().map(|l| l.0)),
    };
    let intake = Intake {
        sink: ArchiveSink {
            incoming: s.stow_in.receiver.incoming_dir(),
            receiver: s.stow_in.receiver.clone(),
            archive: s.archive.clone(),
            study,
            parties,
        },
        limits: s.stow_in.limits,
        min_free_disk: s.stow_in.min_free_disk,
    };
    stowrsd::post(&intake, req, intake.sink.study.as_deref()).await
}

/// `aet` must be an accepting network AE of the device.
fn check_aet(s: &ApiState, aet: &str) -> Result<(), ApiError> {
    match s.config.current().network_aes.get(aet) {
        Some(ae) if ae.acceptor => Ok(()),
        Some(_) => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!(
                "Application Entity {aet} does not accept objects (dicomAssociationAcceptor: FALSE)"
            ),
        )),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("No such Application Entity: {aet}"),
        )),
    }
}

/// The parts of one request go into the archive.
struct ArchiveSink {
    receiver: Receiver,
    archive: Archive,
    /// [`Receiver::incoming_dir`]: inside storage, so that storing a part
    /// is a rename, and the free-disk reserve watches the archive's disk.
    incoming: PathBuf,
    /// The study of the request's path: instances of others are refused.
    study: Option<String>,
    parties: Parties,
}

impl Sink for ArchiveSink {
    const AGENT: &'static str = "stow-exporter";

    fn dir(&self) -> Option<&FsPath> {
        Some(&self.incoming)
    }

    fn commit(
        &self,
        file: TempFile,
        meta: FileMeta,
    ) -> impl Future<Output = Result<ReferencedSop, FailedSop>> + Send {
        let job = StoreJob {
            receiver: self.receiver.clone(),
            archive: self.archive.clone(),
            study: self.study.clone(),
            parties: self.parties.clone(),
        };
        async move {
            let tmp = match file.persist().await {
                Ok(p) => p,
                Err(e) => return Err(io_failure(&meta, &e)),
            };
            // A task of its own, spawned with no wait since `persist`: once
            // begun, a store runs to its end even if the client goes away,
            // and its temporary file is never left behind.
            match tokio::spawn(job.run(tmp)).await {
                Ok(Ok(i)) => Ok(ReferencedSop {
                    sop_class_uid: i.sop_cuid,
                    sop_instance_uid: i.sop_iuid,
                }),
                Ok(Err(reason)) => Err(failed(&meta, reason)),
                Err(e) => {
                    tracing::error!(sop_instance_uid = %meta.sop_instance_uid, error = %e, "storing a STOW-RS part failed");
                    Err(failed(&meta, failure_reason::PROCESSING_FAILURE))
                }
            }
        }
    }
}

/// Stores one persisted part.
struct StoreJob {
    receiver: Receiver,
    archive: Archive,
    study: Option<String>,
    parties: Parties,
}

impl StoreJob {
    /// The stored instance, or the FailureReason of the part at `tmp`,
    /// which is gone afterwards either way.
    async fn run(self, tmp: PathBuf) -> Result<StoredInstance, u16> {
        let guard = Incoming(Some(tmp));
        if let Some(study) = &self.study {
            match self.archive.received_study(guard.path()).await {
                Ok(found) if found == *study => {}
                Ok(found) => {
                    tracing::warn!(
                        study_in_path = %study,
                        study_instance_uid = %found,
                        "STOW-RS part of another study than the request's path: not stored"
                    );
                    return Err(failure_reason::DATA_SET_MISMATCH);
                }
                Err(e) => return Err(refused(&e)),
            }
        }
        let tmp = guard.release();
        match self.receiver.store(tmp, self.parties, Via::StowRs).await {
            Ok(Imported::Stored(i)) => Ok(i),
            Ok(Imported::AlreadyStored(i)) => {
                tracing::info!(sop_instance_uid = %i.sop_iuid, "instance already stored with the same content: kept, reported stored");
                Ok(i)
            }
            Err(e) => Err(refused(&e)),
        }
    }
}

/// Logs why the archive did not store a part; its FailureReason.
fn refused(e: &ImportError) -> u16 {
    let reason = crate::forward::refusal_status(e);
    tracing::warn!(error = %e, failure_reason = format!("{reason:04X}H"), "STOW-RS part not stored");
    reason
}

/// A persisted part not handed to the archive yet: removed when dropped
/// (refused, or the task ended early) unless [`Incoming::release`]d.
struct Incoming(Option<PathBuf>);

impl Incoming {
    fn path(&self) -> &FsPath {
        self.0.as_deref().unwrap_or(FsPath::new(""))
    }

    /// Hands the file over to whoever removes it from now on.
    fn release(mut self) -> PathBuf {
        self.0.take().unwrap_or_default()
    }
}

impl Drop for Incoming {
    fn drop(&mut self) {
        if let Some(p) = self.0.take()
            && let Err(e) = std::fs::remove_file(&p)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %p.display(), error = %e, "cannot remove a temporary file");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_errors_map_as_the_storage_scp_maps_them() {
        let path = PathBuf::from("/x");
        let cases = [
            (
                ImportError::Conflict {
                    path: path.clone(),
                    sop_iuid: "1.2".into(),
                    stored: path.clone(),
                },
                0x0111,
            ),
            (
                ImportError::Malformed {
                    path: path.clone(),
                    reason: "x".into(),
                },
                0xC000,
            ),
            (
                ImportError::MissingAttribute {
                    path: path.clone(),
                    name: "StudyInstanceUID",
                    tag: "(0020,000D)".into(),
                },
                0xA900,
            ),
            (
                ImportError::Store {
                    path: path.clone(),
                    dest: path.clone(),
                    source: std::io::Error::other("full"),
                },
                0xA700,
            ),
            (
                ImportError::Internal {
                    path: path.clone(),
                    message: "x".into(),
                },
                0x0110,
            ),
        ];
        for (e, reason) in cases {
            assert_eq!(crate::forward::refusal_status(&e), reason, "{e}");
        }
    }

    #[test]
    fn an_unreleased_incoming_file_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let kept = dir.path().join("kept");
        let dropped = dir.path().join("dropped");
        std::fs::write(&kept, b"a").unwrap();
        std::fs::write(&dropped, b"b").unwrap();
        assert_eq!(Incoming(Some(kept.clone())).release(), kept);
        drop(Incoming(Some(dropped.clone())));
        assert!(kept.exists());
        assert!(!dropped.exists());
    }
}
