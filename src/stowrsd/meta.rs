//! Incremental parsing of the DICOM File Meta Information (PS3.10 § 7.1)
//! at the start of a received part: 128-byte preamble, `DICM`, then group
//! 0002 in explicit VR little endian.
//!
//! [`parse`] works on a growing prefix of the part and says how many bytes
//! it needs before it can go on, so a caller buffers only the meta group
//! (capped at [`META_CAP`]), never the data set.
//!
//! Owns parsing only: it touches no file and allocates no more than the
//! meta group it was given.

/// Offset of the `DICM` magic.
const MAGIC_AT: usize = 128;
/// Offset of the first meta element.
const META_START: usize = MAGIC_AT + 4;
/// Largest meta information (including preamble) that is accepted.
pub const META_CAP: usize = 64 * 1024;

/// The attributes of the meta group the receiver cares about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileMeta {
    /// Media Storage SOP Class UID (0002,0002), trimmed and validated.
    pub sop_class_uid: String,
    /// Media Storage SOP Instance UID (0002,0003), trimmed and validated.
    pub sop_instance_uid: String,
    /// Transfer Syntax UID (0002,0010), trimmed and validated.
    pub transfer_syntax_uid: String,
    /// Bytes from the start of the part to the end of the meta group.
    pub len: usize,
}

/// Result of [`parse`] on an incomplete or complete prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// At least this many bytes (from the start of the part) are needed.
    NeedMore(usize),
    /// The meta group is complete.
    Done(FileMeta),
}

/// Why a part is not a usable DICOM file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetaError {
    #[error("no DICM magic at offset 128: not a DICOM Part 10 file")]
    NotDicom,
    #[error("part ended inside the file meta information")]
    Truncated,
    #[error("file meta information exceeds {META_CAP} bytes")]
    TooLarge,
    #[error("malformed file meta information: {0}")]
    Malformed(&'static str),
    #[error("file meta information lacks {0}")]
    Missing(&'static str),
    #[error("{name} is not a valid UID: {value:?}")]
    InvalidUid { name: &'static str, value: String },
}

/// VRs with a 2-byte reserved field and a 4-byte length in explicit VR.
const LONG_VRS: [&[u8; 2]; 13] = [
    b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV",
];

/// Parses the meta information from `buf`, a prefix of the part.
/// `eof` says the part ends with `buf` (no more bytes will come).
pub fn parse(buf: &[u8], eof: bool) -> Result<Progress, MetaError> {
    if buf.len() < META_START {
        return need(META_START, eof);
    }
    if &buf[MAGIC_AT..META_START] != b"DICM" {
        return Err(MetaError::NotDicom);
    }
    let mut pos = META_START;
    let mut group_end: Option<usize> = None;
    let mut class = None;
    let mut instance = None;
    let mut ts = None;
    loop {
        if let Some(end) = group_end {
            if pos == end {
                break;
            }
            if pos > end {
                return Err(MetaError::Malformed("element crosses the group length"));
            }
        }
        if buf.len() < pos + 8 {
            if eof && group_end.is_none() && buf.len() == pos && pos > META_START {
                // A meta-only file without group length.
                break;
            }
            return need(pos + 8, eof);
        }
        let group = u16::from_le_bytes([buf[pos], buf[pos + 1]]);
        let element = u16::from_le_bytes([buf[pos + 2], buf[pos + 3]]);
        if group != 0x0002 {
            if group_end.is_some() {
                return Err(MetaError::Malformed("group length larger than group 0002"));
            }
            // No group length: the meta group ends at the first other group.
            break;
        }
        let vr = [buf[pos + 4], buf[pos + 5]];
        if !vr.iter().all(u8::is_ascii_uppercase) {
            return Err(MetaError::Malformed("meta group is not explicit VR"));
        }
        let (header, len) = if LONG_VRS.contains(&&vr) {
            if buf.len() < pos + 12 {
                return need(pos + 12, eof);
            }
            let len =
                u32::from_le_bytes([buf[pos + 8], buf[pos + 9], buf[pos + 10], buf[pos + 11]]);
            if len == u32::MAX {
                return Err(MetaError::Malformed("undefined length in meta group"));
            }
            (12, len as usize)
        } else {
            (8, u16::from_le_bytes([buf[pos + 6], buf[pos + 7]]) as usize)
        };
        let value_at = pos + header;
        let next = value_at.checked_add(len).ok_or(MetaError::TooLarge)?;
        if next > META_CAP {
            return Err(MetaError::TooLarge);
        }
        if buf.len() < next {
            return need(next, eof);
        }
        let value = &buf[value_at..next];
        match element {
            0x0000 => {
                if pos != META_START || len != 4 {
                    return Err(MetaError::Malformed("misplaced group length"));
                }
                let gl = u32::from_le_bytes([value[0], value[1], value[2], value[3]]) as usize;
                let end = next.checked_add(gl).ok_or(MetaError::TooLarge)?;
                if end > META_CAP {
                    return Err(MetaError::TooLarge);
                }
                group_end = Some(end);
            }
            0x0002 => class = Some(value),
            0x0003 => instance = Some(value),
            0x0010 => ts = Some(value),
            _ => {}
        }
        pos = next;
    }
    let class = uid("MediaStorageSOPClassUID", class)?;
    let instance = uid("MediaStorageSOPInstanceUID", instance)?;
    let ts = uid("TransferSyntaxUID", ts)?;
    Ok(Progress::Done(FileMeta {
        sop_class_uid: class,
        sop_instance_uid: instance,
        transfer_syntax_uid: ts,
        len: pos,
    }))
}

fn need(n: usize, eof: bool) -> Result<Progress, MetaError> {
    if eof {
        Err(MetaError::Truncated)
    } else if n > META_CAP {
        Err(MetaError::TooLarge)
    } else {
        Ok(Progress::NeedMore(n))
    }
}

fn uid(name: &'static str, value: Option<&[u8]>) -> Result<String, MetaError> {
    let value = value.ok_or(MetaError::Missing(name))?;
    let text = String::from_utf8_lossy(value);
    let trimmed = text.trim_matches(|c| c == '\0' || c == ' ');
    if !is_valid_uid(trimmed) {
        return Err(MetaError::InvalidUid {
            name,
            value: trimmed.to_owned(),
        });
    }
    Ok(trimmed.to_owned())
}

/// Whether `s` is a syntactically valid UID (PS3.5 § 9.1): 1 to 64
/// characters, digits and dots only, no empty component. This makes it
/// safe as a file name (no `/`, no `.` or `..`).
pub fn is_valid_uid(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && s.split('.').all(|c| !c.is_empty())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use dicom_core::{DataElement, PrimitiveValue, VR};
    use dicom_dictionary_std::tags;
    use dicom_object::{FileMetaTableBuilder, InMemDicomObject};

    pub(crate) const CT_IMAGE_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.2";
    pub(crate) const EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1";

    /// A complete Part 10 file built with dicom-object.
    pub(crate) fn dicom_file(sop_instance_uid: &str, pixel_bytes: usize) -> Vec<u8> {
        let mut obj = InMemDicomObject::new_empty();
        obj.put(DataElement::new(
            tags::SOP_CLASS_UID,
            VR::UI,
            PrimitiveValue::from(CT_IMAGE_STORAGE),
        ));
        obj.put(DataElement::new(
            tags::SOP_INSTANCE_UID,
            VR::UI,
            PrimitiveValue::from(sop_instance_uid),
        ));
        obj.put(DataElement::new(
            tags::STUDY_INSTANCE_UID,
            VR::UI,
            PrimitiveValue::from("1.2.3.4"),
        ));
        obj.put(DataElement::new(
            tags::PATIENT_NAME,
            VR::PN,
            PrimitiveValue::from("Doe^John"),
        ));
        let pixels: Vec<u8> = (0..pixel_bytes).map(|i| (i * 7 % 251) as u8).collect();
        obj.put(DataElement::new(
            tags::PIXEL_DATA,
            VR::OB,
            PrimitiveValue::from(pixels),
        ));
        let meta = FileMetaTableBuilder::new()
            .media_storage_sop_class_uid(CT_IMAGE_STORAGE)
            .media_storage_sop_instance_uid(sop_instance_uid)
            .transfer_syntax(EXPLICIT_VR_LE)
            .implementation_class_uid("1.2.3.999")
            .build()
            .expect("meta");
        let file = obj.with_exact_meta(meta);
        let mut out = Vec::new();
        file.write_all(&mut out).expect("write");
        out
    }

    /// Feeds `data` growing the buffer as asked, like the receiver does.
    fn parse_incrementally(data: &[u8]) -> Result<FileMeta, MetaError> {
        let mut have = 0;
        loop {
            let eof = have >= data.len();
            match parse(&data[..have.min(data.len())], eof)? {
                Progress::NeedMore(n) => {
                    assert!(n > have);
                    have = n;
                }
                Progress::Done(meta) => return Ok(meta),
            }
        }
    }

    #[test]
    fn real_file() {
        let data = dicom_file("1.2.826.0.1.3680043.2.1125.1", 1000);
        let meta = parse_incrementally(&data).unwrap();
        assert_eq!(meta.sop_class_uid, CT_IMAGE_STORAGE);
        assert_eq!(meta.sop_instance_uid, "1.2.826.0.1.3680043.2.1125.1");
        assert_eq!(meta.transfer_syntax_uid, EXPLICIT_VR_LE);
        assert!(meta.len > 132 && meta.len < 400, "len {}", meta.len);
        // Consistent with dicom-object's own reader.
        let table = dicom_object::meta::FileMetaTable::from_reader(&data[128..]).unwrap();
        assert_eq!(meta.len, 132 + 12 + table.information_group_length as usize);
        // Whole buffer at once gives the same.
        assert_eq!(parse(&data, true).unwrap(), Progress::Done(meta));
    }

    #[test]
    fn odd_length_uid_is_padded_and_trimmed() {
        // "1.2.3" has odd length: padded with \0 in the file.
        let data = dicom_file("1.2.3", 10);
        let meta = parse_incrementally(&data).unwrap();
        assert_eq!(meta.sop_instance_uid, "1.2.3");
    }

    #[test]
    fn meta_without_group_length() {
        let data = dicom_file("1.2.3.4", 10);
        // Remove the (0002,0000) element (12 bytes).
        let mut stripped = data[..132].to_vec();
        stripped.extend_from_slice(&data[144..]);
        let meta = parse_incrementally(&stripped).unwrap();
        assert_eq!(meta.sop_instance_uid, "1.2.3.4");
        assert_eq!(meta.len, parse_incrementally(&data).unwrap().len - 12);
        // Meta-only (no data set) file without group length.
        let only_meta = &stripped[..meta.len];
        assert_eq!(
            parse(only_meta, true).unwrap(),
            Progress::Done(meta.clone())
        );
        assert_eq!(
            parse(only_meta, false).unwrap(),
            Progress::NeedMore(meta.len + 8)
        );
    }

    #[test]
    fn not_dicom() {
        let data = vec![b'x'; 300];
        assert_eq!(parse(&data, false), Err(MetaError::NotDicom));
        assert_eq!(parse(b"short", true), Err(MetaError::Truncated));
        assert_eq!(parse(b"short", false), Ok(Progress::NeedMore(132)));
    }

    #[test]
    fn truncated_meta() {
        let data = dicom_file("1.2.3.4", 10);
        for len in 132..200 {
            assert_eq!(
                parse(&data[..len], true),
                Err(MetaError::Truncated),
                "{len}"
            );
        }
    }

    #[test]
    fn evil_uid_rejected() {
        // Same-length substitution keeps the encoding valid.
        let good = "1.2.840.99999.1";
        let evil = "../../x/../abcd";
        assert_eq!(good.len(), evil.len());
        let data = dicom_file(good, 10);
        let pos = memchr::memmem::find(&data, good.as_bytes()).unwrap();
        let mut bad = data.clone();
        bad[pos..pos + evil.len()].copy_from_slice(evil.as_bytes());
        assert_eq!(
            parse_incrementally(&bad),
            Err(MetaError::InvalidUid {
                name: "MediaStorageSOPInstanceUID",
                value: evil.into()
            })
        );
    }

    #[test]
    fn huge_group_length_rejected() {
        let mut data = dicom_file("1.2.3.4", 10);
        data[140..144].copy_from_slice(&(1_000_000u32).to_le_bytes());
        assert_eq!(parse(&data, false), Err(MetaError::TooLarge));
    }

    #[test]
    fn uid_syntax() {
        assert!(is_valid_uid("1.2.840.10008.1.2.1"));
        assert!(is_valid_uid("0"));
        for bad in [
            "",
            ".",
            "..",
            "../x",
            "1..2",
            ".1",
            "1.",
            "1.2.a",
            "1/2",
            "1.2 ",
            &"1".repeat(65),
        ] {
            assert!(!is_valid_uid(bad), "{bad:?}");
        }
        assert!(is_valid_uid(&"1".repeat(64)));
    }
}
