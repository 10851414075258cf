//! A cheap structural pre-scan of a DICOM file, run before dicom-object
//! parses it.
//!
//! dicom-object 0.10.1 allocates (and zero-fills) the *declared* length of
//! each element value before reading it; only the read then fails. A
//! malformed or hostile file declaring e.g. 0xFFFFFFF0 bytes therefore
//! costs 4 GiB of memory before it is rejected, and a reader limited to the
//! file size does not help because the allocation comes first. This module
//! walks the same element headers the parser will visit (file meta, then the
//! data set up to the top-level Pixel Data) seeking over values, and
//! rejects any defined length that exceeds the bytes left in the file. Once
//! it passes, every allocation the parser makes is bounded by the file size.
//!
//! The walk mirrors dicom-parser's tokenizer: group length driven meta,
//! 8-byte item headers, undefined lengths opening sequences, encapsulated
//! Pixel Data fragments skipped as bytes, defined-length items ending by
//! position. Nesting depth is bounded as well, since dicom-object builds
//! nested items recursively.

use std::io::{self, Read, Seek};

use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry};
use dicom_core::{Tag, VR};
use dicom_dictionary_std::{StandardDataDictionary, tags, uids};
use dicom_transfer_syntax_registry::{TransferSyntaxIndex, TransferSyntaxRegistry};

/// Offset of the "DICM" magic in a Part 10 file.
pub(crate) const PREAMBLE_LEN: u64 = 128;
const UNDEFINED: u32 = 0xFFFF_FFFF;
const ITEM: Tag = Tag(0xFFFE, 0xE000);
const ITEM_DELIMITATION: Tag = Tag(0xFFFE, 0xE00D);
const SEQUENCE_DELIMITATION: Tag = Tag(0xFFFE, 0xE0DD);
/// Deeper nesting than this does not occur in real objects and would let
/// dicom-object's recursive item builder exhaust the stack.
const MAX_DEPTH: u32 = 64;
/// Transfer Syntax UIDs are at most 64 characters; a longer value is junk.
const MAX_TS_LEN: u32 = 256;

#[derive(Debug)]
pub(crate) enum ScanError {
    /// No Part 10 structure: no preamble + "DICM", or no file meta group.
    NotDicom(String),
    /// The structure is broken in a way the parser must not see.
    Malformed(String),
    /// A transfer syntax whose data set cannot be walked (deflated) or is
    /// unknown to the registry, so it cannot be parsed either.
    Unsupported(String),
    Io(io::Error),
}

impl From<io::Error> for ScanError {
    fn from(e: io::Error) -> Self {
        ScanError::Io(e)
    }
}

#[derive(Debug)]
pub(crate) struct Scanned {
    /// Transfer Syntax UID from the file meta, trailing padding removed.
    pub transfer_syntax: String,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Encoding {
    ExplicitLe,
    ImplicitLe,
    ExplicitBe,
}

struct Header {
    tag: Tag,
    len: u32,
    /// Whether the parser treats a defined-length value as a sequence.
    is_sq: bool,
    /// Header size in bytes, for the file meta group length accounting.
    size: u32,
}

/// Checks the file from its start; `file_len` is the file size.
pub(crate) fn scan<R: Read + Seek>(reader: R, file_len: u64) -> Result<Scanned, ScanError> {
    let mut w = Walker {
        r: reader,
        pos: 0,
        len: file_len,
        enc: Encoding::ExplicitLe,
    };
    let transfer_syntax = w.meta()?;
    if transfer_syntax == uids::DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN {
        // Declared lengths can only be checked on the inflated data set:
        // inflate it (bounded, so a deflate bomb is an error) and walk that.
        use std::io::SeekFrom;
        let mut r = w.r;
        r.seek(SeekFrom::Start(w.pos))?;
        let mut inflated = Vec::new();
        flate2::read::DeflateDecoder::new(r)
            .take(MAX_INFLATED + 1)
            .read_to_end(&mut inflated)
            .map_err(|e| ScanError::Malformed(format!("deflated data set: {e}")))?;
        if inflated.len() as u64 > MAX_INFLATED {
            return Err(ScanError::Malformed(format!(
                "deflated data set inflates to more than {MAX_INFLATED} bytes"
            )));
        }
        let len = inflated.len() as u64;
        let mut w = Walker {
            r: io::Cursor::new(inflated),
            pos: 0,
            len,
            enc: Encoding::ExplicitLe,
        };
        w.dataset(None, 0, true)?;
        return Ok(Scanned { transfer_syntax });
    }
    w.enc = encoding(&transfer_syntax)?;
    w.dataset(None, 0, true)?;
    Ok(Scanned { transfer_syntax })
}

/// The largest inflated data set accepted.
const MAX_INFLATED: u64 = 1 << 30;

fn encoding(ts: &str) -> Result<Encoding, ScanError> {
    if ts == uids::JPIP_REFERENCED_DEFLATE || ts == uids::JPIPHTJ2K_REFERENCED_DEFLATE {
        // The data set is compressed: declared lengths cannot be checked
        // against the file size without inflating it.
        return Err(ScanError::Unsupported(format!(
            "deflated transfer syntax {ts} is not supported"
        )));
    }
    let Some(known) = TransferSyntaxRegistry.get(ts) else {
        return Err(ScanError::Unsupported(format!(
            "unknown transfer syntax {ts:?}"
        )));
    };
    if !known.is_codec_free() && !known.is_encapsulated_pixel_data() {
        // Codec::Dataset: a data set adapter (or none at all) is needed.
        return Err(ScanError::Unsupported(format!(
            "transfer syntax {ts} ({}) is not supported",
            known.name()
        )));
    }
    Ok(match ts {
        uids::IMPLICIT_VR_LITTLE_ENDIAN => Encoding::ImplicitLe,
        // Explicit VR Big Endian (retired, but still in the registry)
        "1.2.840.10008.1.2.2" => Encoding::ExplicitBe,
        // every other standard transfer syntax is explicit VR little endian
        _ => Encoding::ExplicitLe,
    })
}

struct Walker<R> {
    r: R,
    pos: u64,
    len: u64,
    enc: Encoding,
}

impl<R: Read + Seek> Walker<R> {
    fn remaining(&self) -> u64 {
        self.len.saturating_sub(self.pos)
    }

    fn truncated(&self) -> ScanError {
        ScanError::Malformed(format!("file truncated at offset {}", self.pos))
    }

    fn read<const N: usize>(&mut self) -> Result<[u8; N], ScanError> {
        if self.remaining() < N as u64 {
            return Err(self.truncated());
        }
        let mut buf = [0u8; N];
        self.r.read_exact(&mut buf).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                // the file shrank since its size was taken
                self.truncated()
            } else {
                ScanError::Io(e)
            }
        })?;
        self.pos += N as u64;
        Ok(buf)
    }

    fn u16(&mut self) -> Result<u16, ScanError> {
        let b = self.read::<2>()?;
        Ok(match self.enc {
            Encoding::ExplicitBe => u16::from_be_bytes(b),
            _ => u16::from_le_bytes(b),
        })
    }

    fn u32(&mut self) -> Result<u32, ScanError> {
        let b = self.read::<4>()?;
        Ok(match self.enc {
            Encoding::ExplicitBe => u32::from_be_bytes(b),
            _ => u32::from_le_bytes(b),
        })
    }

    fn tag(&mut self) -> Result<Tag, ScanError> {
        let group = self.u16()?;
        let element = self.u16()?;
        Ok(Tag(group, element))
    }

    fn skip(&mut self, n: u64) -> Result<(), ScanError> {
        if n > self.remaining() {
            return Err(self.truncated());
        }
        // n <= file size, which fits i64 for any real file
        let off = i64::try_from(n).map_err(|_| self.truncated())?;
        self.r.seek_relative(off)?;
        self.pos += n;
        Ok(())
    }

    /// Rejects a defined value length that runs past the end of the file:
    /// the one check that keeps the parser's allocations bounded.
    fn check_len(&self, tag: Tag, len: u32) -> Result<(), ScanError> {
        if u64::from(len) > self.remaining() {
            return Err(ScanError::Malformed(format!(
                "element {tag} at offset {} declares a value length of {len} bytes, \
                 but only {} bytes remain in the file",
                self.pos,
                self.remaining()
            )));
        }
        Ok(())
    }

    /// Reads an element header like dicom-encoding's decoders do.
    fn header(&mut self) -> Result<Header, ScanError> {
        let tag = self.tag()?;
        if self.enc == Encoding::ImplicitLe {
            let len = self.u32()?;
            // The implicit VR decoder takes the VR from the dictionary, with
            // Pixel Data and Overlay Data forced to OW.
            let is_sq = tag != tags::PIXEL_DATA
                && !(tag.0 >> 8 == 0x60 && tag.1 == 0x3000)
                && StandardDataDictionary
                    .by_tag(tag)
                    .is_some_and(|e| e.vr().relaxed() == VR::SQ);
            return Ok(Header {
                tag,
                len,
                is_sq,
                size: 8,
            });
        }
        if tag.0 == 0xFFFE {
            // items and delimiters carry no VR
            let len = self.u32()?;
            return Ok(Header {
                tag,
                len,
                is_sq: false,
                size: 8,
            });
        }
        let vr = self.read::<2>()?;
        // PS3.5 7.1.2: these VRs have a 16-bit length; all others (and
        // unknown VRs, which the decoder reads as UN) have 2 reserved bytes
        // and a 32-bit length.
        const SHORT: [&[u8; 2]; 21] = [
            b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FL", b"FD", b"IS", b"LO", b"LT",
            b"PN", b"SH", b"SL", b"SS", b"ST", b"TM", b"UI", b"UL", b"US",
        ];
        if SHORT.contains(&&vr) {
            let len = u32::from(self.u16()?);
            Ok(Header {
                tag,
                len,
                is_sq: false,
                size: 8,
            })
        } else {
            self.read::<2>()?;
            let len = self.u32()?;
            Ok(Header {
                tag,
                len,
                is_sq: &vr == b"SQ",
                size: 12,
            })
        }
    }

    /// Preamble, magic and the file meta group; returns the transfer syntax.
    fn meta(&mut self) -> Result<String, ScanError> {
        if self.len < PREAMBLE_LEN + 4 {
            return Err(ScanError::NotDicom(format!(
                "only {} bytes, too short for a DICOM file",
                self.len
            )));
        }
        self.skip(PREAMBLE_LEN)?;
        if &self.read::<4>()? != b"DICM" {
            return Err(ScanError::NotDicom(
                "no \"DICM\" magic at offset 128".to_string(),
            ));
        }
        let no_meta = || {
            ScanError::NotDicom(
                "no file meta information (File Meta Information Group Length (0002,0000) missing)"
                    .to_string(),
            )
        };
        let first = self.header().map_err(|_| no_meta())?;
        if first.tag != Tag(0x0002, 0x0000) || first.len != 4 {
            return Err(no_meta());
        }
        let group_len = self.u32()?;

        let mut transfer_syntax = None;
        let mut read: u32 = 0;
        // dicom-object reads meta elements until the group length is used up
        while read < group_len {
            let h = self.header()?;
            if h.len == UNDEFINED {
                return Err(ScanError::Malformed(format!(
                    "file meta element {} has an undefined length",
                    h.tag
                )));
            }
            self.check_len(h.tag, h.len)?;
            if h.tag == Tag(0x0002, 0x0010) {
                if h.len > MAX_TS_LEN {
                    return Err(ScanError::Malformed(format!(
                        "Transfer Syntax UID (0002,0010) is {} bytes long",
                        h.len
                    )));
                }
                let mut buf = vec![0u8; h.len as usize];
                self.r.read_exact(&mut buf)?;
                self.pos += u64::from(h.len);
                let ts = String::from_utf8_lossy(&buf)
                    .trim_end_matches(|c: char| c.is_whitespace() || c == '\0')
                    .to_string();
                transfer_syntax = Some(ts);
            } else {
                self.skip(u64::from(h.len))?;
            }
            read = read.saturating_add(h.size).saturating_add(h.len);
        }
        transfer_syntax.ok_or_else(|| {
            ScanError::NotDicom("Transfer Syntax UID (0002,0010) missing in file meta".to_string())
        })
    }

    /// A data set: the root (`top`) or the content of an item, which ends at
    /// `end` (defined length) or at an item delimiter.
    fn dataset(&mut self, end: Option<u64>, depth: u32, top: bool) -> Result<(), ScanError> {
        if depth > MAX_DEPTH {
            return Err(ScanError::Malformed(format!(
                "sequences nested deeper than {MAX_DEPTH} levels"
            )));
        }
        loop {
            if let Some(end) = end {
                if self.pos == end {
                    return Ok(());
                }
                if self.pos > end {
                    return Err(ScanError::Malformed(format!(
                        "item content overruns its declared end at offset {end}"
                    )));
                }
            }
            if self.remaining() == 0 {
                if top {
                    return Ok(());
                }
                return Err(ScanError::Malformed(
                    "file ends inside a sequence item".to_string(),
                ));
            }
            let h = self.header()?;
            if h.tag == ITEM_DELIMITATION {
                if top {
                    // the parser ignores a stray delimiter outside sequences
                    continue;
                }
                return Ok(());
            }
            if top && h.tag >= tags::PIXEL_DATA {
                // The parser stops here (read_until Pixel Data), but native
                // pixel data running past EOF means a truncated file, which
                // must not be archived and later sent on.
                if h.tag == tags::PIXEL_DATA && h.len != UNDEFINED {
                    self.check_len(h.tag, h.len)?;
                }
                return Ok(());
            }
            if h.len == UNDEFINED {
                if h.tag == tags::PIXEL_DATA {
                    self.pixel_sequence()?;
                } else {
                    // undefined lengths of any VR are read as a sequence
                    self.sequence(None, depth + 1)?;
                }
            } else {
                self.check_len(h.tag, h.len)?;
                if h.is_sq {
                    self.sequence(Some(self.pos + u64::from(h.len)), depth + 1)?;
                } else {
                    self.skip(u64::from(h.len))?;
                }
            }
        }
    }

    /// The items of a sequence, ending at `end` or at a sequence delimiter.
    fn sequence(&mut self, end: Option<u64>, depth: u32) -> Result<(), ScanError> {
        if depth > MAX_DEPTH {
            return Err(ScanError::Malformed(format!(
                "sequences nested deeper than {MAX_DEPTH} levels"
            )));
        }
        loop {
            if let Some(end) = end {
                if self.pos == end {
                    return Ok(());
                }
                if self.pos > end {
                    return Err(ScanError::Malformed(format!(
                        "sequence content overruns its declared end at offset {end}"
                    )));
                }
            }
            if self.remaining() == 0 {
                return Err(ScanError::Malformed(
                    "file ends inside a sequence".to_string(),
                ));
            }
            // item headers are always tag + 32-bit length
            let tag = self.tag()?;
            let len = self.u32()?;
            match tag {
                ITEM if len == UNDEFINED => self.dataset(None, depth + 1, false)?,
                ITEM => {
                    self.check_len(tag, len)?;
                    self.dataset(Some(self.pos + u64::from(len)), depth + 1, false)?;
                }
                SEQUENCE_DELIMITATION => return Ok(()),
                // tolerated by the parser like a stray item end
                ITEM_DELIMITATION => {}
                other => {
                    return Err(ScanError::Malformed(format!(
                        "unexpected element {other} at offset {} inside a sequence",
                        self.pos - 8
                    )));
                }
            }
        }
    }

    /// Encapsulated Pixel Data nested in an item: fragments are raw bytes.
    fn pixel_sequence(&mut self) -> Result<(), ScanError> {
        loop {
            if self.remaining() == 0 {
                // the parser accepts a file ending inside a pixel sequence
                return Ok(());
            }
            let tag = self.tag()?;
            let len = self.u32()?;
            match tag {
                ITEM if len == UNDEFINED => {
                    return Err(ScanError::Malformed(
                        "pixel data fragment with undefined length".to_string(),
                    ));
                }
                ITEM => {
                    self.check_len(tag, len)?;
                    self.skip(u64::from(len))?;
                }
                SEQUENCE_DELIMITATION => return Ok(()),
                other => {
                    return Err(ScanError::Malformed(format!(
                        "unexpected element {other} at offset {} inside encapsulated pixel data",
                        self.pos - 8
                    )));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    /// Part 10 prefix with a meta group holding only the transfer syntax.
    fn prefix(ts: &str) -> Vec<u8> {
        let mut ts = ts.as_bytes().to_vec();
        if ts.len() % 2 == 1 {
            ts.push(0);
        }
        let mut v = vec![0u8; 128];
        v.extend_from_slice(b"DICM");
        v.extend_from_slice(&[0x02, 0x00, 0x00, 0x00, b'U', b'L', 4, 0]);
        v.extend_from_slice(&(8 + ts.len() as u32).to_le_bytes());
        v.extend_from_slice(&[0x02, 0x00, 0x10, 0x00, b'U', b'I']);
        v.extend_from_slice(&(ts.len() as u16).to_le_bytes());
        v.extend_from_slice(&ts);
        v
    }

    fn elem_long(v: &mut Vec<u8>, g: u16, e: u16, vr: &[u8; 2], len: u32) {
        v.extend_from_slice(&g.to_le_bytes());
        v.extend_from_slice(&e.to_le_bytes());
        v.extend_from_slice(vr);
        v.extend_from_slice(&[0, 0]);
        v.extend_from_slice(&len.to_le_bytes());
    }

    fn item(v: &mut Vec<u8>, e: u16, len: u32) {
        v.extend_from_slice(&0xFFFEu16.to_le_bytes());
        v.extend_from_slice(&e.to_le_bytes());
        v.extend_from_slice(&len.to_le_bytes());
    }

    fn run(v: &[u8]) -> Result<Scanned, ScanError> {
        scan(Cursor::new(v), v.len() as u64)
    }

    #[test]
    fn synthetic_ct_passes() {
        let spec = crate::synth::SynthSpec {
            study_iuid: "1.2.3".into(),
            series_iuid: "1.2.3.4".into(),
            sop_iuid: "1.2.3.4.5".into(),
            rows: 8,
            columns: 8,
            seed: 1,
            patient_id: "P".into(),
            instance_number: 1,
        };
        let s = run(&crate::synth::ct_bytes(&spec)).unwrap();
        assert_eq!(s.transfer_syntax, uids::EXPLICIT_VR_LITTLE_ENDIAN);
    }

    #[test]
    fn not_dicom() {
        assert!(matches!(run(b"hello"), Err(ScanError::NotDicom(_))));
        assert!(matches!(run(&[0u8; 300]), Err(ScanError::NotDicom(_))));
        let mut v = vec![0u8; 128];
        v.extend_from_slice(b"DICM");
        v.extend_from_slice(&[0x08, 0x00, 0x16, 0x00, b'U', b'I', 2, 0, b'1', 0]);
        assert!(matches!(run(&v), Err(ScanError::NotDicom(_))));
    }

    #[test]
    fn huge_top_level_length() {
        let mut v = prefix(uids::EXPLICIT_VR_LITTLE_ENDIAN);
        elem_long(&mut v, 0x0009, 0x1010, b"OB", 0xFFFF_FFF0);
        v.extend_from_slice(&[1, 2, 3, 4]);
        match run(&v) {
            Err(ScanError::Malformed(m)) => assert!(m.contains("4294967280"), "{m}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn huge_length_inside_undefined_sequence() {
        let mut v = prefix(uids::EXPLICIT_VR_LITTLE_ENDIAN);
        elem_long(&mut v, 0x0008, 0x1115, b"SQ", UNDEFINED);
        item(&mut v, 0xE000, UNDEFINED);
        elem_long(&mut v, 0x0009, 0x1010, b"UT", 0x7FFF_0000);
        v.extend_from_slice(&[0; 16]);
        assert!(matches!(run(&v), Err(ScanError::Malformed(_))));
    }

    #[test]
    fn huge_item_length() {
        let mut v = prefix(uids::EXPLICIT_VR_LITTLE_ENDIAN);
        elem_long(&mut v, 0x0008, 0x1115, b"SQ", UNDEFINED);
        item(&mut v, 0xE000, 0x1000_0000);
        assert!(matches!(run(&v), Err(ScanError::Malformed(_))));
    }

    #[test]
    fn huge_length_implicit_vr() {
        let mut v = prefix(uids::IMPLICIT_VR_LITTLE_ENDIAN);
        // (0010,0010) PatientName, implicit: tag + 32-bit length
        v.extend_from_slice(&[0x10, 0x00, 0x10, 0x00]);
        v.extend_from_slice(&0xFFFF_FFF0u32.to_le_bytes());
        v.extend_from_slice(b"abcd");
        assert!(matches!(run(&v), Err(ScanError::Malformed(_))));
    }

    #[test]
    fn huge_meta_length() {
        let mut v = vec![0u8; 128];
        v.extend_from_slice(b"DICM");
        v.extend_from_slice(&[0x02, 0x00, 0x00, 0x00, b'U', b'L', 4, 0]);
        v.extend_from_slice(&100u32.to_le_bytes());
        elem_long(&mut v, 0x0002, 0x0001, b"OB", 0xFFFF_FFF0);
        assert!(matches!(run(&v), Err(ScanError::Malformed(_))));
    }

    #[test]
    fn nested_sequences_and_stop_at_pixel_data() {
        let mut v = prefix(uids::EXPLICIT_VR_LITTLE_ENDIAN);
        // defined-length SQ with one defined-length item holding a US
        elem_long(&mut v, 0x0008, 0x1115, b"SQ", 8 + 10);
        item(&mut v, 0xE000, 10);
        v.extend_from_slice(&[0x28, 0x00, 0x10, 0x00, b'U', b'S', 2, 0, 8, 0]);
        // undefined-length SQ, undefined item, with nested encapsulated
        // pixel data, then delimiters
        elem_long(&mut v, 0x0088, 0x0200, b"SQ", UNDEFINED);
        item(&mut v, 0xE000, UNDEFINED);
        elem_long(&mut v, 0x7FE0, 0x0010, b"OB", UNDEFINED);
        item(&mut v, 0xE000, 0);
        item(&mut v, 0xE000, 4);
        v.extend_from_slice(&[9, 9, 9, 9]);
        item(&mut v, 0xE0DD, 0);
        item(&mut v, 0xE00D, 0);
        item(&mut v, 0xE0DD, 0);
        // top-level pixel data, then trailing padding the parser never reads
        elem_long(&mut v, 0x7FE0, 0x0010, b"OW", 4);
        v.extend_from_slice(&[1, 2, 3, 4]);
        elem_long(&mut v, 0xFFFC, 0xFFFC, b"OB", 0xFFFF_FFF0);
        run(&v).unwrap();
    }

    #[test]
    fn truncated_pixel_data() {
        let mut v = prefix(uids::EXPLICIT_VR_LITTLE_ENDIAN);
        elem_long(&mut v, 0x7FE0, 0x0010, b"OW", 1000);
        v.extend_from_slice(&[0; 10]);
        match run(&v) {
            Err(ScanError::Malformed(m)) => assert!(m.contains("(7FE0,0010)"), "{m}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn deep_nesting_rejected() {
        let mut v = prefix(uids::EXPLICIT_VR_LITTLE_ENDIAN);
        for _ in 0..100 {
            elem_long(&mut v, 0x0008, 0x1115, b"SQ", UNDEFINED);
            item(&mut v, 0xE000, UNDEFINED);
        }
        assert!(matches!(run(&v), Err(ScanError::Malformed(_))));
    }

    #[test]
    fn deflated_data_set_is_checked_inflated() {
        use std::io::Write;
        let mut ds = Vec::new();
        elem_long(&mut ds, 0x7FE0, 0x0010, b"OW", 1000);
        ds.extend_from_slice(&[0; 10]);
        let mut v = prefix(uids::DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN);
        let mut z = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
        z.write_all(&ds).unwrap();
        v.extend(z.finish().unwrap());
        match run(&v) {
            Err(ScanError::Malformed(m)) => assert!(m.contains("(7FE0,0010)"), "{m}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn unsupported_syntaxes() {
        let v = prefix("1.2.3.4.5.6");
        assert!(matches!(run(&v), Err(ScanError::Unsupported(_))));
    }
}
