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
    #[error("malformed command set at byte {offset}: {reason}")]
    Malformed { offset: usize, reason: &'static str },
    #[error("command set lacks {0}")]
    Missing(&'static str),
}

/// Reads a command set (implicit VR little endian, as PS3.7 requires).
///
/// Walked by hand rather than by a data set parser: every length is
/// checked against the bytes there are before anything is taken, so a
/// peer's declared length never decides an allocation.
pub fn read_command(bytes: &[u8]) -> Result<Command, CommandError> {
    let mut field = None;
    let mut message_id = None;
    let mut data_set_type = None;
    let mut sop_class_uid = String::new();
    let mut sop_instance_uid = String::new();
    let mut at = 0;
    while at < bytes.len() {
        let malformed = |reason| CommandError::Malformed { offset: at, reason };
        let head = bytes
            .get(at..at + 8)
            .ok_or_else(|| malformed("an element header is cut off"))?;
        let group = u16::from_le_bytes([head[0], head[1]]);
        let element = u16::from_le_bytes([head[2], head[3]]);
        let len = u32::from_le_bytes([head[4], head[5], head[6], head[7]]) as usize;
        if group != 0x0000 {
            return Err(malformed("an element outside group 0000"));
        }
        let value = bytes
            .get(at + 8..)
            .and_then(|rest| rest.get(..len))
            .ok_or_else(|| malformed("a value longer than the command set"))?;
        let us = || {
            value
                .get(..2)
                .map(|v| u16::from_le_bytes([v[0], v[1]]))
                .ok_or_else(|| malformed("a US value shorter than 2 bytes"))
        };
        let ui = || {
            std::str::from_utf8(value)
                .map(|s| s.trim_end_matches(['\0', ' ']).to_string())
                .map_err(|_| malformed("a UID that is not text"))
        };
        match element {
            0x0002 => sop_class_uid = ui()?,
            0x0100 => field = Some(us()?),
            0x0110 => message_id = Some(us()?),
            0x0800 => data_set_type = Some(us()?),
            0x1000 => sop_instance_uid = ui()?,
            _ => {}
        }
        at += 8 + len;
    }
    let field = field.ok_or(CommandError::Missing("CommandField (0000,0100)"))?;
    let message_id = message_id.ok_or(CommandError::Missing("MessageID (0000,0110)"))?;
    let data_set_type =
        data_set_type.ok_or(CommandError::Missing("CommandDataSetType (0000,0800)"))?;
    Ok(Command {
        field,
        message_id,
        sop_class_uid,
        sop_instance_uid,
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
    fn hostile_lengths_are_errors_not_allocations() {
        // (0000,0100) declaring 4 GiB of value in a 12-byte command set.
        let mut cmd = vec![0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff];
        cmd.extend_from_slice(&[1, 0, 0, 0]);
        let e = read_command(&cmd).unwrap_err();
        assert!(e.to_string().contains("byte 0"), "{e}");
        assert!(matches!(
            read_command(&[0, 0, 0]),
            Err(CommandError::Malformed { .. })
        ));
        // Another group.
        let other = [8, 0, 0x60, 0, 2, 0, 0, 0, b'C', b'T'];
        assert!(matches!(
            read_command(&other),
            Err(CommandError::Malformed { .. })
        ));
        // Well formed but incomplete.
        let only_field = [0, 0, 0, 1, 2, 0, 0, 0, 0x30, 0];
        assert!(matches!(
            read_command(&only_field),
            Err(CommandError::Missing(_))
        ));
    }

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
