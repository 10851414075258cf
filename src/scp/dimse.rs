//! The DIMSE messages the Storage SCP reads and writes (PS3.7 § 9): command
//! sets in implicit VR little endian, C-ECHO and C-STORE, and the status
//! codes it answers with.
//!
//! Owns encoding and decoding of command sets only; no I/O.

use dicom_core::{DataElement, PrimitiveValue, VR, dicom_value};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::entries::IMPLICIT_VR_LITTLE_ENDIAN;

/// Command Field values (PS3.7 § E.1).
pub const C_STORE_RQ: u16 = 0x0001;
pub const C_STORE_RSP: u16 = 0x8001;
pub const C_ECHO_RQ: u16 = 0x0030;
pub const C_ECHO_RSP: u16 = 0x8030;
/// Command Data Set Type: no data set follows.
pub const NO_DATA_SET: u16 = 0x0101;

/// Statuses of a C-STORE-RSP (PS3.4 § B.2.3, PS3.7 § C).
pub mod status {
    pub const SUCCESS: u16 = 0x0000;
    /// Refused: Out of Resources (storage full or failing).
    pub const OUT_OF_RESOURCES: u16 = 0xA700;
    /// Error: Data Set does not match SOP Class.
    pub const DATA_SET_MISMATCH: u16 = 0xA900;
    /// Error: Cannot understand.
    pub const CANNOT_UNDERSTAND: u16 = 0xC000;
    /// Failure: Processing failure.
    pub const PROCESSING_FAILURE: u16 = 0x0110;
    /// Failure: Duplicate SOP Instance (the UID is stored as another
    /// object, which is kept).
    pub const DUPLICATE_SOP_INSTANCE: u16 = 0x0111;
    /// Refused: SOP Class not supported (PS3.7 C.4.2.1.4).
    pub const SOP_CLASS_NOT_SUPPORTED: u16 = 0x0122;
    /// Failure: Unrecognized operation.
    pub const UNRECOGNIZED_OPERATION: u16 = 0x0211;
}

/// Longest Error Comment (LO, 64 characters).
const ERROR_COMMENT_MAX: usize = 64;

/// What the SCP needs of a received command set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    pub field: u16,
    pub message_id: u16,
    pub sop_class_uid: String,
    pub sop_instance_uid: String,
    /// Whether a data set follows.
    pub has_data_set: bool,
}

/// Why a command set could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("malformed command set: {0}")]
    Malformed(#[source] dicom_object::ReadError),
    #[error("command set lacks {0}")]
    Missing(&'static str),
}

/// Reads a command set (implicit VR little endian, as PS3.7 requires).
pub fn read_command(bytes: &[u8]) -> Result<Command, CommandError> {
    let obj = InMemDicomObject::read_dataset_with_ts(bytes, &IMPLICIT_VR_LITTLE_ENDIAN.erased())
        .map_err(CommandError::Malformed)?;
    let u16_of = |tag, name| {
        obj.get(tag)
            .and_then(|e| e.to_int::<u16>().ok())
            .ok_or(CommandError::Missing(name))
    };
    let uid_of = |tag| {
        obj.get(tag)
            .and_then(|e| e.to_str().ok())
            .map(|s| s.trim_end_matches(['\0', ' ']).to_string())
            .unwrap_or_default()
    };
    let field = u16_of(tags::COMMAND_FIELD, "CommandField (0000,0100)")?;
    let message_id = u16_of(tags::MESSAGE_ID, "MessageID (0000,0110)")?;
    let data_set_type = u16_of(
        tags::COMMAND_DATA_SET_TYPE,
        "CommandDataSetType (0000,0800)",
    )?;
    Ok(Command {
        field,
        message_id,
        sop_class_uid: uid_of(tags::AFFECTED_SOP_CLASS_UID),
        sop_instance_uid: uid_of(tags::AFFECTED_SOP_INSTANCE_UID),
        has_data_set: data_set_type != NO_DATA_SET,
    })
}

/// The response to `rq` (C-ECHO-RSP or C-STORE-RSP) with `status` and,
/// for a failure, an Error Comment (clipped to 64 characters).
pub fn response(rq: &Command, status: u16, comment: Option<&str>) -> Vec<u8> {
    let field = if rq.field == C_ECHO_RQ {
        C_ECHO_RSP
    } else {
        rq.field | 0x8000
    };
    let mut elements = vec![
        DataElement::new(
            tags::AFFECTED_SOP_CLASS_UID,
            VR::UI,
            PrimitiveValue::from(rq.sop_class_uid.as_str()),
        ),
        DataElement::new(tags::COMMAND_FIELD, VR::US, dicom_value!(U16, [field])),
        DataElement::new(
            tags::MESSAGE_ID_BEING_RESPONDED_TO,
            VR::US,
            dicom_value!(U16, [rq.message_id]),
        ),
        DataElement::new(
            tags::COMMAND_DATA_SET_TYPE,
            VR::US,
            dicom_value!(U16, [NO_DATA_SET]),
        ),
        DataElement::new(tags::STATUS, VR::US, dicom_value!(U16, [status])),
    ];
    if !rq.sop_instance_uid.is_empty() {
        elements.push(DataElement::new(
            tags::AFFECTED_SOP_INSTANCE_UID,
            VR::UI,
            PrimitiveValue::from(rq.sop_instance_uid.as_str()),
        ));
    }
    if let Some(c) = comment {
        // LO: no backslash, no control characters.
        let c: String = c
            .chars()
            .map(|ch| {
                if ch == '\\' || ch.is_control() {
                    ' '
                } else {
                    ch
                }
            })
            .take(ERROR_COMMENT_MAX)
            .collect();
        elements.push(DataElement::new(
            tags::ERROR_COMMENT,
            VR::LO,
            PrimitiveValue::from(c),
        ));
    }
    let obj = InMemDicomObject::command_from_element_iter(elements);
    let mut out = Vec::with_capacity(256);
    // Writing to a Vec fails only on an encoder bug.
    if let Err(e) = obj.write_dataset_with_ts(&mut out, &IMPLICIT_VR_LITTLE_ENDIAN.erased()) {
        tracing::error!(error = %e, "cannot encode a DIMSE response");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_response_reads_back_with_its_status_and_ids() {
        let rq = Command {
            field: C_STORE_RQ,
            message_id: 7,
            sop_class_uid: "1.2.840.10008.5.1.4.1.1.2".into(),
            sop_instance_uid: "1.2.3.4".into(),
            has_data_set: true,
        };
        let bytes = response(&rq, status::DUPLICATE_SOP_INSTANCE, Some("a\\b"));
        let obj = InMemDicomObject::read_dataset_with_ts(
            bytes.as_slice(),
            &IMPLICIT_VR_LITTLE_ENDIAN.erased(),
        )
        .unwrap();
        assert_eq!(
            obj.get(tags::COMMAND_FIELD)
                .unwrap()
                .to_int::<u16>()
                .unwrap(),
            C_STORE_RSP
        );
        assert_eq!(
            obj.get(tags::STATUS).unwrap().to_int::<u16>().unwrap(),
            0x0111
        );
        assert_eq!(
            obj.get(tags::MESSAGE_ID_BEING_RESPONDED_TO)
                .unwrap()
                .to_int::<u16>()
                .unwrap(),
            7
        );
        assert_eq!(
            obj.get(tags::ERROR_COMMENT).unwrap().to_str().unwrap(),
            "a b"
        );
        let back = read_command(&bytes).unwrap_err();
        assert!(matches!(back, CommandError::Missing(_)), "{back}");
    }
}
