//! The Storage SCP: DICOM associations for the archive device's network
//! AEs, C-ECHO and C-STORE into the archive.
//!
//! Each association is checked against the configuration current when it
//! arrives: the called AE title must be an accepting `dicomNetworkAE` of
//! the device (else A-ASSOCIATE-RJ "called AE title not recognized"), and
//! when that AE lists `dcmAcceptedCallingAETitle` values, the calling AE
//! title must be one of them ("calling AE title not recognized").
//! Presentation contexts are accepted for the storage SOP classes and
//! Verification with the transfer syntaxes of [`DEFAULT_TRANSFER_SYNTAXES`]
//! (or, when the AEs have `dicomTransferCapability` children in the SCP
//! role, those), the caller's preferred one first: objects are stored as
//! received, never transcoded.
//!
//! A received data set is streamed to a temp file under the archive's
//! incoming directory behind a Part-10 meta group (at most
//! [`ScpOptions::max_object_bytes`], a buffer of [`WRITE_BUFFER`] bytes per
//! association, never the object in memory), fsynced, then stored by the
//! [`Receiver`] with its exports, and only then answered with success. An
//! association that ends mid-object (abort, timeout, closed socket) leaves
//! nothing: the temp file is removed.
//!
//! Owns the listeners, the associations and their limits. Must not touch
//! the index or storage layout (the [`Receiver`] stores), nor decide
//! exports.

pub mod dimse;
pub mod sop_classes;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use dicom_dictionary_std::uids;
use dicom_ul::Pdu;
use dicom_ul::association::server::AccessControl;
use dicom_ul::association::{Association, AsyncServerAssociation, ServerAssociationOptions};
use dicom_ul::pdu::{AssociationRJServiceUserReason, PDataValue, PDataValueType, UserIdentity};
use tokio::io::{AsyncWriteExt, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::conditions::Parties;
use crate::config::Snapshot;
use crate::forward::{Receiver, Via};
use dimse::{Command, status};

/// This implementation's class UID in the meta group of stored objects.
pub const IMPLEMENTATION_CLASS_UID: &str = "2.25.267503723582685157355693267385518745396";
/// Its version name (SH, at most 16 characters).
pub const IMPLEMENTATION_VERSION_NAME: &str = "STOW_EXPORTER_01";

/// Largest command set read (fragments are gathered until the last): a
/// C-STORE-RQ is a few hundred bytes; more is a hostile or broken peer.
pub const MAX_COMMAND_BYTES: usize = 64 * 1024;

/// Bytes buffered between the association and a temp file.
pub const WRITE_BUFFER: usize = 1 << 20;

/// Transfer syntaxes accepted when no `dicomTransferCapability` says
/// otherwise: the uncompressed ones and the common compressed ones, stored
/// as received. Those the transfer syntax registry cannot parse a data set
/// of are left out by the negotiation itself.
pub const DEFAULT_TRANSFER_SYNTAXES: &[&str] = &[
    uids::EXPLICIT_VR_LITTLE_ENDIAN,
    uids::IMPLICIT_VR_LITTLE_ENDIAN,
    uids::DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
    uids::JPEG_BASELINE8_BIT,
    uids::JPEG_EXTENDED12_BIT,
    uids::JPEG_LOSSLESS,
    uids::JPEG_LOSSLESS_SV1,
    uids::JPEGLS_LOSSLESS,
    uids::JPEGLS_NEAR_LOSSLESS,
    uids::JPEG2000_LOSSLESS,
    uids::JPEG2000,
    uids::HTJ2K_LOSSLESS,
    uids::HTJ2K_LOSSLESS_RPCL,
    uids::HTJ2K,
    uids::RLE_LOSSLESS,
    uids::MPEG2MPML,
    uids::MPEG4HP41,
    uids::HEVCMP51,
];

/// Limits of the SCP (`serve --dicom-*`).
#[derive(Debug, Clone)]
pub struct ScpOptions {
    /// Associations open at once; more are closed at once.
    pub max_associations: usize,
    /// How long an association may be silent (also the A-ASSOCIATE-RQ
    /// wait after connecting).
    pub idle_timeout: Duration,
    /// Largest PDU this SCP receives.
    pub max_pdu: u32,
    /// Largest data set of one C-STORE, in bytes.
    pub max_object_bytes: u64,
}

impl Default for ScpOptions {
    fn default() -> ScpOptions {
        ScpOptions {
            max_associations: 64,
            idle_timeout: Duration::from_secs(60),
            max_pdu: 128 * 1024,
            max_object_bytes: 4 << 30,
        }
    }
}

/// Where the SCP listens: the addresses of the AEs' DICOM connections in
/// `snapshot`, each once.
pub fn configured_addresses(snapshot: &Snapshot) -> Vec<String> {
    let set: BTreeSet<String> = snapshot
        .network_aes
        .values()
        .filter(|ae| ae.acceptor)
        .flat_map(|ae| ae.listen.iter().cloned())
        .collect();
    set.into_iter().collect()
}

/// Accepts associations on `listeners` until `stop`.
pub async fn serve(
    listeners: Vec<TcpListener>,
    receiver: Receiver,
    options: ScpOptions,
    stop: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(options.max_associations.max(1)));
    let options = Arc::new(options);
    let mut loops = Vec::new();
    for l in listeners {
        let (receiver, options, slots, stop) = (
            receiver.clone(),
            options.clone(),
            slots.clone(),
            stop.clone(),
        );
        loops.push(tokio::spawn(accept_loop(l, receiver, options, slots, stop)));
    }
    for l in loops {
        let _ = l.await;
    }
}

async fn accept_loop(
    listener: TcpListener,
    receiver: Receiver,
    options: Arc<ScpOptions>,
    slots: Arc<Semaphore>,
    stop: CancellationToken,
) {
    let local = listener.local_addr().ok();
    loop {
        let (socket, peer) = tokio::select! {
            _ = stop.cancelled() => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and the like: wait instead of spinning.
                    tracing::warn!(error = %e, "DICOM listener cannot accept");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%peer, limit = options.max_associations, "too many DICOM associations; connection closed");
            continue;
        };
        let _ = socket.set_nodelay(true);
        let (receiver, options, stop) = (receiver.clone(), options.clone(), stop.clone());
        tokio::spawn(async move {
            let _permit = permit;
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = association(socket, peer, local, receiver, &options) => {}
            }
        });
    }
}

/// The association's access rule: the called AE must be an accepting AE
/// of the device, and the calling AE one it accepts.
struct AeAccess {
    /// Called AE title → accepted calling AE titles (empty: any).
    aes: BTreeMap<String, Vec<String>>,
}

impl AccessControl for AeAccess {
    fn check_access(
        &self,
        _this_ae_title: &str,
        calling_ae_title: &str,
        called_ae_title: &str,
        _user_identity: Option<&UserIdentity>,
    ) -> Result<(), AssociationRJServiceUserReason> {
        let Some(accepted) = self.aes.get(called_ae_title.trim()) else {
            return Err(AssociationRJServiceUserReason::CalledAETitleNotRecognized);
        };
        if !accepted.is_empty() && !accepted.iter().any(|a| a == calling_ae_title.trim()) {
            return Err(AssociationRJServiceUserReason::CallingAETitleNotRecognized);
        }
        Ok(())
    }
}

fn negotiation(
    snapshot: &Snapshot,
    options: &ScpOptions,
) -> ServerAssociationOptions<'static, AeAccess, dicom_ul::association::server::DefaultNegotiation>
{
    let aes = snapshot
        .network_aes
        .values()
        .filter(|ae| ae.acceptor)
        .map(|ae| (ae.ae_title.clone(), ae.accepted_calling.clone()))
        .collect();
    let mut o = ServerAssociationOptions::new()
        .ae_access_control(AeAccess { aes })
        .max_pdu_length(options.max_pdu)
        .read_timeout(options.idle_timeout)
        .write_timeout(options.idle_timeout)
        .with_abstract_syntax(uids::VERIFICATION);
    let capabilities: Vec<_> = snapshot
        .network_aes
        .values()
        .filter(|ae| ae.acceptor)
        .flat_map(|ae| ae.transfer_capabilities.iter())
        .collect();
    if capabilities.is_empty() {
        for cuid in sop_classes::STORAGE_SOP_CLASSES {
            o = o.with_abstract_syntax(*cuid);
        }
        for ts in DEFAULT_TRANSFER_SYNTAXES {
            o = o.with_transfer_syntax(*ts);
        }
    } else {
        // dicom-ul negotiates one set of transfer syntaxes for every
        // abstract syntax: the union of the capabilities'.
        let mut syntaxes = BTreeSet::new();
        for tc in &capabilities {
            o = o.with_abstract_syntax(tc.sop_class.clone());
            for ts in &tc.transfer_syntaxes {
                if ts == "*" {
                    syntaxes.extend(DEFAULT_TRANSFER_SYNTAXES.iter().map(|s| s.to_string()));
                } else {
                    syntaxes.insert(ts.clone());
                }
            }
        }
        // Verification needs the default syntax.
        syntaxes.insert(uids::IMPLICIT_VR_LITTLE_ENDIAN.to_string());
        for ts in syntaxes {
            o = o.with_transfer_syntax(ts);
        }
    }
    o
}

/// Why an association ended before its release.
#[derive(Debug, thiserror::Error)]
enum AssociationError {
    #[error("association: {0}")]
    Ul(#[from] dicom_ul::association::Error),
    #[error("{0}")]
    Command(#[from] dimse::CommandError),
    #[error("data set of C-STORE {sop_iuid} exceeds the limit of {limit} bytes")]
    TooLarge { sop_iuid: String, limit: u64 },
    #[error("command set longer than {MAX_COMMAND_BYTES} bytes")]
    CommandTooLarge,
    #[error("data set fragment without a C-STORE-RQ")]
    UnexpectedData,
    #[error("data set fragment for presentation context {0}, not the C-STORE-RQ's")]
    WrongContext(u8),
    #[error("C-STORE-RQ on presentation context {0}, which was not accepted")]
    UnknownContext(u8),
    #[error("temp file {}: {source}", path.display())]
    Temp {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What one association serves under: its parties, and the SOP class to
/// transfer syntax pairs of the AEs' `dicomTransferCapability` entries
/// when there are any (`None`: the defaults). dicom-ul negotiates one set
/// of transfer syntaxes for every SOP class, so a C-STORE in a syntax its
/// SOP class does not list is refused when it arrives.
struct Session {
    parties: Parties,
    capabilities: Option<BTreeMap<String, BTreeSet<String>>>,
}

impl Session {
    fn new(parties: Parties, snapshot: &Snapshot) -> Session {
        let mut caps: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for tc in snapshot
            .network_aes
            .values()
            .filter(|ae| ae.acceptor && ae.ae_title == parties.receiving_aet)
            .flat_map(|ae| ae.transfer_capabilities.iter())
        {
            let set = caps.entry(tc.sop_class.clone()).or_default();
            for ts in &tc.transfer_syntaxes {
                if ts == "*" {
                    set.extend(DEFAULT_TRANSFER_SYNTAXES.iter().map(|s| s.to_string()));
                } else {
                    set.insert(ts.clone());
                }
            }
        }
        Session {
            parties,
            capabilities: (!caps.is_empty()).then_some(caps),
        }
    }

    /// Why a C-STORE of `sop_class` in `transfer_syntax` is refused, if it is.
    fn refuses(&self, sop_class: &str, transfer_syntax: &str) -> Option<(u16, String)> {
        let caps = self.capabilities.as_ref()?;
        match caps.get(sop_class.trim_end_matches('\0')) {
            None => Some((
                status::SOP_CLASS_NOT_SUPPORTED,
                format!("SOP class {sop_class} is not configured"),
            )),
            Some(ts) if !ts.contains(transfer_syntax) => Some((
                status::CANNOT_UNDERSTAND,
                format!(
                    "transfer syntax {transfer_syntax} is not configured for SOP class {sop_class}"
                ),
            )),
            Some(_) => None,
        }
    }
}

/// The data set of the C-STORE being received.
enum Incoming {
    Storing(Storing),
    /// Refused when its command came; its fragments are read and dropped.
    Refusing {
        rq: Command,
        context: u8,
        code: u16,
        comment: String,
    },
}

impl Incoming {
    fn rq(&self) -> &Command {
        match self {
            Incoming::Storing(x) => &x.rq,
            Incoming::Refusing { rq, .. } => rq,
        }
    }

    async fn discard(self) {
        if let Incoming::Storing(x) = self {
            x.discard().await;
        }
    }
}

/// A C-STORE whose data set is being written to a temp file.
struct Storing {
    rq: Command,
    context: u8,
    path: PathBuf,
    file: BufWriter<tokio::fs::File>,
    bytes: u64,
}

impl Storing {
    /// Removes the temp file of an object that will not be stored.
    async fn discard(self) {
        drop(self.file);
        if let Err(e) = tokio::fs::remove_file(&self.path).await
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %self.path.display(), error = %e, "cannot remove temp file");
        }
    }
}

async fn association(
    socket: TcpStream,
    peer: SocketAddr,
    local: Option<SocketAddr>,
    receiver: Receiver,
    options: &ScpOptions,
) {
    let snapshot = receiver.config().current();
    let negotiation = negotiation(&snapshot, options);
    let mut assoc = match negotiation.establish_async(socket).await {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!(%peer, error = %e, "DICOM association refused or failed");
            return;
        }
    };
    let parties = Parties {
        sending_aet: assoc.peer_ae_title().trim().to_string(),
        receiving_aet: assoc.called_ae_title().trim().to_string(),
        sending_host: peer.ip().to_string(),
        receiving_host: local.map(|a| a.ip().to_string()).unwrap_or_default(),
    };
    tracing::info!(
        %peer,
        calling = %parties.sending_aet,
        called = %parties.receiving_aet,
        "DICOM association accepted"
    );
    let session = Session::new(parties, &snapshot);
    let parties = &session.parties;
    let mut incoming: Option<Incoming> = None;
    let result = run(&mut assoc, &receiver, &session, options, &mut incoming).await;
    if let Some(x) = incoming.take() {
        tracing::warn!(
            %peer,
            sop_iuid = %x.rq().sop_instance_uid,
            "association ended inside a C-STORE; nothing stored of it"
        );
        x.discard().await;
    }
    match result {
        Ok(Ended::Released) => {
            tracing::info!(%peer, calling = %parties.sending_aet, "DICOM association released")
        }
        Ok(Ended::Aborted) => {
            tracing::info!(%peer, calling = %parties.sending_aet, "DICOM association aborted by the peer")
        }
        Err(e) => {
            tracing::warn!(%peer, calling = %parties.sending_aet, error = %e, "DICOM association ended");
            let _ = assoc.abort().await;
        }
    }
}

/// How an association ended without a failure of ours.
enum Ended {
    Released,
    Aborted,
}

/// Serves one association until its release or abort (`Ok`) or a failure.
async fn run(
    assoc: &mut AsyncServerAssociation<TcpStream>,
    receiver: &Receiver,
    session: &Session,
    options: &ScpOptions,
    incoming: &mut Option<Incoming>,
) -> Result<Ended, AssociationError> {
    // Command fragments of the message being read.
    let mut command = Vec::new();
    loop {
        let pdu = assoc.receive().await?;
        match pdu {
            Pdu::PData { data } => {
                for pdv in data {
                    match pdv.value_type {
                        PDataValueType::Command => {
                            if command.len() + pdv.data.len() > MAX_COMMAND_BYTES {
                                return Err(AssociationError::CommandTooLarge);
                            }
                            command.extend_from_slice(&pdv.data);
                            if pdv.is_last {
                                let rq = dimse::read_command(&command)?;
                                command.clear();
                                on_command(
                                    assoc,
                                    receiver,
                                    session,
                                    rq,
                                    pdv.presentation_context_id,
                                    incoming,
                                )
                                .await?;
                            }
                        }
                        PDataValueType::Data => {
                            on_data(assoc, receiver, session, options, pdv, incoming).await?;
                        }
                    }
                }
            }
            Pdu::ReleaseRQ => {
                assoc.send(&Pdu::ReleaseRP).await?;
                return Ok(Ended::Released);
            }
            Pdu::AbortRQ { .. } => return Ok(Ended::Aborted),
            other => {
                tracing::debug!(pdu = %other.short_description(), "unexpected PDU ignored");
            }
        }
    }
}

async fn on_command(
    assoc: &mut AsyncServerAssociation<TcpStream>,
    receiver: &Receiver,
    session: &Session,
    rq: Command,
    context: u8,
    incoming: &mut Option<Incoming>,
) -> Result<(), AssociationError> {
    let parties = &session.parties;
    if let Some(x) = incoming.take() {
        // A new command before the last data fragment: the object is lost.
        x.discard().await;
    }
    match rq.field {
        dimse::C_ECHO_RQ => {
            respond(assoc, context, &rq, status::SUCCESS, None).await?;
        }
        dimse::C_STORE_RQ if rq.has_data_set => {
            let pc = assoc
                .presentation_contexts()
                .iter()
                .find(|pc| pc.id == context)
                .ok_or(AssociationError::UnknownContext(context))?;
            let transfer_syntax = pc.transfer_syntax.trim_end_matches(['\0', ' ']).to_string();
            if let Some((code, comment)) = session.refuses(&rq.sop_class_uid, &transfer_syntax) {
                tracing::warn!(calling = %parties.sending_aet, sop_iuid = %rq.sop_instance_uid, %comment, "C-STORE refused");
                *incoming = Some(Incoming::Refusing {
                    rq,
                    context,
                    code,
                    comment,
                });
                return Ok(());
            }
            let dir = receiver.incoming_dir();
            let path = dir.join(format!(".{:016x}.part", rand::random::<u64>()));
            let temp = |source| AssociationError::Temp {
                path: path.clone(),
                source,
            };
            tokio::fs::create_dir_all(&dir).await.map_err(temp)?;
            let file = tokio::fs::File::create_new(&path).await.map_err(temp)?;
            let mut file = BufWriter::with_capacity(WRITE_BUFFER, file);
            let head = part10_head(&rq, &transfer_syntax, &parties.sending_aet);
            file.write_all(&head).await.map_err(temp)?;
            *incoming = Some(Incoming::Storing(Storing {
                rq,
                context,
                path,
                file,
                bytes: 0,
            }));
        }
        _ => {
            tracing::warn!(field = format!("{:#06x}", rq.field), calling = %parties.sending_aet, "DIMSE operation not supported");
            respond(
                assoc,
                context,
                &rq,
                status::UNRECOGNIZED_OPERATION,
                Some("only C-ECHO and C-STORE"),
            )
            .await?;
        }
    }
    Ok(())
}

async fn on_data(
    assoc: &mut AsyncServerAssociation<TcpStream>,
    receiver: &Receiver,
    session: &Session,
    options: &ScpOptions,
    pdv: PDataValue,
    incoming: &mut Option<Incoming>,
) -> Result<(), AssociationError> {
    let parties = &session.parties;
    let x = match incoming.as_mut() {
        None => return Err(AssociationError::UnexpectedData),
        Some(Incoming::Refusing { context, .. }) => {
            if pdv.presentation_context_id != *context {
                return Err(AssociationError::WrongContext(pdv.presentation_context_id));
            }
            if let (
                true,
                Some(Incoming::Refusing {
                    rq,
                    context,
                    code,
                    comment,
                }),
            ) = (pdv.is_last, incoming.take())
            {
                respond(assoc, context, &rq, code, Some(&comment)).await?;
            }
            return Ok(());
        }
        Some(Incoming::Storing(x)) => x,
    };
    if pdv.presentation_context_id != x.context {
        return Err(AssociationError::WrongContext(pdv.presentation_context_id));
    }
    x.bytes += pdv.data.len() as u64;
    if x.bytes > options.max_object_bytes {
        return Err(AssociationError::TooLarge {
            sop_iuid: x.rq.sop_instance_uid.clone(),
            limit: options.max_object_bytes,
        });
    }
    let temp = |path: &PathBuf, source| AssociationError::Temp {
        path: path.clone(),
        source,
    };
    x.file
        .write_all(&pdv.data)
        .await
        .map_err(|e| temp(&x.path, e))?;
    if !pdv.is_last {
        return Ok(());
    }
    let Some(Incoming::Storing(mut x)) = incoming.take() else {
        return Ok(());
    };
    let finished = async {
        x.file.flush().await?;
        // On disk before a name in storage points to it.
        x.file.get_ref().sync_all().await
    }
    .await;
    if let Err(e) = finished {
        let path = x.path.clone();
        let rq = x.rq.clone();
        let context = x.context;
        x.discard().await;
        tracing::error!(path = %path.display(), error = %e, "cannot write a received object");
        respond(
            assoc,
            context,
            &rq,
            status::OUT_OF_RESOURCES,
            Some("cannot write to storage"),
        )
        .await?;
        return Ok(());
    }
    let Storing {
        rq,
        context,
        path,
        file,
        ..
    } = x;
    drop(file);
    let stored = receiver.store(path, parties.clone(), Via::CStore).await;
    let (code, comment) = match &stored {
        Ok(_) => (status::SUCCESS, None),
        Err(e) => {
            tracing::warn!(
                calling = %parties.sending_aet,
                sop_iuid = %rq.sop_instance_uid,
                error = %e,
                "C-STORE not stored"
            );
            (crate::forward::refusal_status(e), Some(e.to_string()))
        }
    };
    respond(assoc, context, &rq, code, comment.as_deref()).await?;
    Ok(())
}

async fn respond(
    assoc: &mut AsyncServerAssociation<TcpStream>,
    context: u8,
    rq: &Command,
    code: u16,
    comment: Option<&str>,
) -> Result<(), AssociationError> {
    let pdu = Pdu::PData {
        data: vec![PDataValue {
            presentation_context_id: context,
            value_type: PDataValueType::Command,
            is_last: true,
            data: dimse::response(rq, code, comment),
        }],
    };
    assoc.send(&pdu).await?;
    Ok(())
}

/// Preamble, `DICM` and the meta group of a received object (PS3.10
/// § 7.1): the data set follows as received.
fn part10_head(rq: &Command, transfer_syntax: &str, calling: &str) -> Vec<u8> {
    let mut out = vec![0u8; 128];
    out.extend_from_slice(b"DICM");
    let mut meta = dicom_object::FileMetaTableBuilder::new()
        .media_storage_sop_class_uid(rq.sop_class_uid.as_str())
        .media_storage_sop_instance_uid(rq.sop_instance_uid.as_str())
        .transfer_syntax(transfer_syntax)
        .implementation_class_uid(IMPLEMENTATION_CLASS_UID)
        .implementation_version_name(IMPLEMENTATION_VERSION_NAME);
    if !calling.is_empty() {
        meta = meta.source_application_entity_title(calling);
    }
    match meta.build() {
        Ok(table) => {
            if let Err(e) = table.write(&mut out) {
                tracing::error!(error = %e, "cannot encode a file meta group");
            }
        }
        Err(e) => tracing::error!(error = %e, "cannot build a file meta group"),
    }
    out
}
