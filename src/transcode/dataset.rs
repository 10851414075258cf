//! A DICOM file at the level of its encoded elements.
//!
//! Transcoding must change the pixel data and the handful of attributes
//! that describe it, and nothing else: no text re-encoded, no character set
//! touched, private elements kept byte for byte. So the file is not parsed
//! into values at all. This module walks element headers over the file's
//! bytes; every length is checked against what is left of the buffer
//! before it is used, so a bogus length field is an error, never an
//! allocation.

use std::borrow::Cow;
use std::ops::Range;

use dicom_core::Tag;

/// Value length meaning "until the delimiter".
pub const UNDEFINED: u32 = 0xFFFF_FFFF;
const ITEM: Tag = Tag(0xFFFE, 0xE000);
const ITEM_END: Tag = Tag(0xFFFE, 0xE00D);
const SEQ_END: Tag = Tag(0xFFFE, 0xE0DD);
/// Nesting deeper than this is treated as corrupt (it bounds recursion).
const MAX_DEPTH: usize = 64;

pub const TS_IMPLICIT_LE: &str = "1.2.840.10008.1.2";
pub const TS_EXPLICIT_LE: &str = "1.2.840.10008.1.2.1";
pub const TS_DEFLATED: &str = "1.2.840.10008.1.2.1.99";
pub const TS_EXPLICIT_BE: &str = "1.2.840.10008.1.2.2";

/// Why a file could not be walked.
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    #[error("not a DICOM Part 10 file (no DICM prefix)")]
    NoPreamble,
    #[error("file meta information: {0}")]
    Meta(String),
    #[error("element {tag} at byte {offset}: {what}")]
    Element {
        tag: String,
        offset: usize,
        what: String,
    },
    #[error("truncated at byte {0}")]
    Truncated(usize),
    #[error("deflated data set cannot be inflated: {0}")]
    Inflate(String),
    #[error("sequences nested deeper than {MAX_DEPTH} levels")]
    TooDeep,
    /// The pixel data could not be decoded.
    #[error(transparent)]
    Pixels(super::pixels::DecodeError),
}

/// How a data set is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    ExplicitLE,
    ImplicitLE,
    ExplicitBE,
}

impl Encoding {
    /// The data set encoding of a transfer syntax: every encapsulated
    /// syntax is explicit VR little endian; None for syntaxes whose data
    /// set is not plain (deflated is inflated first).
    pub fn of(ts: &str) -> Encoding {
        match ts {
            TS_IMPLICIT_LE => Encoding::ImplicitLE,
            TS_EXPLICIT_BE => Encoding::ExplicitBE,
            _ => Encoding::ExplicitLE,
        }
    }

    fn big(self) -> bool {
        self == Encoding::ExplicitBE
    }

    fn explicit(self) -> bool {
        self != Encoding::ImplicitLE
    }
}

/// One element header, as found in the buffer.
#[derive(Debug, Clone)]
pub struct Element {
    pub tag: Tag,
    /// The VR as written; None in implicit VR.
    pub vr: Option<[u8; 2]>,
    /// Where the element starts (its tag).
    pub start: usize,
    /// The value: for an undefined length, from after the header to
    /// before the sequence delimiter.
    pub value: Range<usize>,
    /// The length as written (may be [`UNDEFINED`]).
    pub len: u32,
    /// Where the next element starts.
    pub end: usize,
}

impl Element {
    pub fn undefined(&self) -> bool {
        self.len == UNDEFINED
    }
}

/// The VRs whose explicit header has a 4-byte length (PS3.5 7.1.2).
pub fn long_header(vr: &[u8; 2]) -> bool {
    matches!(
        vr,
        b"OB"
            | b"OD"
            | b"OF"
            | b"OL"
            | b"OV"
            | b"OW"
            | b"SQ"
            | b"SV"
            | b"UC"
            | b"UN"
            | b"UR"
            | b"UT"
            | b"UV"
    )
}

fn u16_at(buf: &[u8], at: usize, big: bool) -> Option<u16> {
    let b: [u8; 2] = buf.get(at..at + 2)?.try_into().ok()?;
    Some(if big {
        u16::from_be_bytes(b)
    } else {
        u16::from_le_bytes(b)
    })
}

fn u32_at(buf: &[u8], at: usize, big: bool) -> Option<u32> {
    let b: [u8; 4] = buf.get(at..at + 4)?.try_into().ok()?;
    Some(if big {
        u32::from_be_bytes(b)
    } else {
        u32::from_le_bytes(b)
    })
}

fn tag_at(buf: &[u8], at: usize, big: bool) -> Option<Tag> {
    Some(Tag(u16_at(buf, at, big)?, u16_at(buf, at + 2, big)?))
}

/// The tag of the element at `pos`, without reading the rest of it.
pub fn peek_tag(buf: &[u8], pos: usize, enc: Encoding) -> Option<Tag> {
    tag_at(buf, pos, enc.big())
}

fn elem_err(tag: Tag, offset: usize, what: impl Into<String>) -> DatasetError {
    DatasetError::Element {
        tag: format!("({:04X},{:04X})", tag.0, tag.1),
        offset,
        what: what.into(),
    }
}

/// Reads the element at `pos` of `buf`, which ends at `limit`.
pub fn read_element(
    buf: &[u8],
    pos: usize,
    limit: usize,
    enc: Encoding,
    depth: usize,
) -> Result<Element, DatasetError> {
    let big = enc.big();
    let tag = tag_at(buf, pos, big)
        .filter(|_| pos + 4 <= limit)
        .ok_or(DatasetError::Truncated(pos))?;
    // Items and delimiters have no VR, in any encoding.
    let explicit = enc.explicit() && tag.0 != 0xFFFE;
    let (vr, len, header) = if explicit {
        let vr: [u8; 2] = buf
            .get(pos + 4..pos + 6)
            .and_then(|b| b.try_into().ok())
            .ok_or(DatasetError::Truncated(pos))?;
        if !vr.iter().all(u8::is_ascii_uppercase) {
            return Err(elem_err(
                tag,
                pos,
                format!("invalid VR bytes {:02X} {:02X}", vr[0], vr[1]),
            ));
        }
        if long_header(&vr) {
            let len = u32_at(buf, pos + 8, big).ok_or(DatasetError::Truncated(pos))?;
            (Some(vr), len, 12)
        } else {
            let len = u16_at(buf, pos + 6, big).ok_or(DatasetError::Truncated(pos))?;
            (Some(vr), u32::from(len), 8)
        }
    } else {
        let len = u32_at(buf, pos + 4, big).ok_or(DatasetError::Truncated(pos))?;
        (None, len, 8)
    };
    let vstart = pos + header;
    if vstart > limit {
        return Err(DatasetError::Truncated(pos));
    }
    if len != UNDEFINED {
        let vend = vstart
            .checked_add(len as usize)
            .filter(|e| *e <= limit)
            .ok_or_else(|| {
                elem_err(
                    tag,
                    pos,
                    format!(
                        "length {len} goes beyond the end of its data ({} bytes left)",
                        limit - vstart
                    ),
                )
            })?;
        return Ok(Element {
            tag,
            vr,
            start: pos,
            value: vstart..vend,
            len,
            end: vend,
        });
    }
    if tag.0 == 0xFFFE {
        // An item of undefined length: its end is found by the caller
        // walking its elements.
        return Ok(Element {
            tag,
            vr,
            start: pos,
            value: vstart..vstart,
            len,
            end: vstart,
        });
    }
    // Undefined length: a sequence (SQ, UN per CP-246, or any element in
    // implicit VR), or encapsulated pixel data. Either way a list of items
    // closed by a sequence delimiter.
    let encapsulated = vr.is_some_and(|v| &v == b"OB" || &v == b"OW") || tag == PIXEL_DATA;
    let inner = if vr == Some(*b"UN") {
        Encoding::ImplicitLE
    } else {
        enc
    };
    let vend = skip_items(buf, vstart, limit, inner, encapsulated, depth + 1)?;
    Ok(Element {
        tag,
        vr,
        start: pos,
        value: vstart..vend,
        len,
        end: vend + 8,
    })
}

/// Skips the items of an undefined-length value starting at `pos` and
/// returns the position of its sequence delimiter.
fn skip_items(
    buf: &[u8],
    mut pos: usize,
    limit: usize,
    enc: Encoding,
    fragments: bool,
    depth: usize,
) -> Result<usize, DatasetError> {
    if depth > MAX_DEPTH {
        return Err(DatasetError::TooDeep);
    }
    // Items and delimiters are little endian except in big endian data.
    let big = enc.big();
    loop {
        let tag = tag_at(buf, pos, big)
            .filter(|_| pos + 8 <= limit)
            .ok_or(DatasetError::Truncated(pos))?;
        let len = u32_at(buf, pos + 4, big).ok_or(DatasetError::Truncated(pos))?;
        match tag {
            SEQ_END => return Ok(pos),
            ITEM if len != UNDEFINED => {
                pos = pos
                    .checked_add(8 + len as usize)
                    .filter(|e| *e <= limit)
                    .ok_or_else(|| {
                        elem_err(tag, pos, format!("item length {len} goes beyond its data"))
                    })?;
            }
            ITEM if !fragments => {
                pos += 8;
                loop {
                    let e = read_element(buf, pos, limit, enc, depth)?;
                    pos = e.end;
                    if e.tag == ITEM_END {
                        break;
                    }
                }
            }
            other => {
                return Err(elem_err(
                    other,
                    pos,
                    "expected an item or a sequence delimiter",
                ));
            }
        }
    }
}

pub const PIXEL_DATA: Tag = Tag(0x7FE0, 0x0010);

/// The elements of a data set (or item) in `range`, one after the other.
pub fn elements(
    buf: &[u8],
    range: Range<usize>,
    enc: Encoding,
) -> impl Iterator<Item = Result<Element, DatasetError>> + '_ {
    let mut pos = range.start;
    let limit = range.end;
    let mut failed = false;
    std::iter::from_fn(move || {
        if failed || pos >= limit {
            return None;
        }
        // Trailing padding shorter than a header is tolerated.
        if limit - pos < 8 && buf[pos..limit].iter().all(|b| *b == 0) {
            return None;
        }
        let r = read_element(buf, pos, limit, enc, 0);
        match &r {
            Ok(e) => pos = e.end,
            Err(_) => failed = true,
        }
        Some(r)
    })
}

/// A Part 10 file split into its parts.
pub struct FileParts<'a> {
    /// Preamble and "DICM".
    pub prefix: &'a [u8],
    /// The file meta elements (group 0002), explicit VR little endian.
    pub meta: Vec<Element>,
    pub meta_bytes: &'a [u8],
    pub transfer_syntax: String,
    /// The data set, inflated when it was deflated.
    pub dataset: Cow<'a, [u8]>,
    pub encoding: Encoding,
}

/// Splits `file` into preamble, file meta and data set.
pub fn split(file: &[u8], max_inflated: usize) -> Result<FileParts<'_>, DatasetError> {
    if file.get(128..132) != Some(b"DICM") {
        return Err(DatasetError::NoPreamble);
    }
    let mut pos = 132;
    let mut meta = Vec::new();
    // Group 0002 is read element by element rather than trusting the group
    // length: some writers get it wrong.
    while let Some(Tag(0x0002, _)) = tag_at(file, pos, false) {
        let e = read_element(file, pos, file.len(), Encoding::ExplicitLE, 0)
            .map_err(|e| DatasetError::Meta(e.to_string()))?;
        pos = e.end;
        meta.push(e);
    }
    let ts = meta
        .iter()
        .find(|e| e.tag == Tag(0x0002, 0x0010))
        .map(|e| text(&file[e.value.clone()]))
        .ok_or_else(|| DatasetError::Meta("no Transfer Syntax UID (0002,0010)".into()))?;
    let rest = &file[pos..];
    let (dataset, encoding) = if ts == TS_DEFLATED {
        (
            Cow::Owned(inflate(rest, max_inflated)?),
            Encoding::ExplicitLE,
        )
    } else {
        (Cow::Borrowed(rest), Encoding::of(&ts))
    };
    // Some writers put an implicit VR data set under an explicit transfer
    // syntax (pydicom's SC_rgb_jpeg.dcm). Where the first element has no
    // VR the data set is read as implicit, as pydicom and dcmtk do; the
    // output is then correct for the syntax it declares.
    let encoding = match (encoding, dataset.get(4..6)) {
        (Encoding::ExplicitLE, Some(vr)) if !vr.iter().all(u8::is_ascii_uppercase) => {
            Encoding::ImplicitLE
        }
        (e, _) => e,
    };
    Ok(FileParts {
        prefix: &file[..132],
        meta,
        meta_bytes: &file[132..pos],
        transfer_syntax: ts,
        dataset,
        encoding,
    })
}

/// A text value without its padding.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b)
        .trim_end_matches(['\0', ' '])
        .trim_start()
        .to_string()
}

fn inflate(raw: &[u8], max: usize) -> Result<Vec<u8>, DatasetError> {
    use std::io::Read;
    let mut out = Vec::new();
    // Read one byte past the limit so a bomb is detected, not truncated.
    flate2::read::DeflateDecoder::new(raw)
        .take(max as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| DatasetError::Inflate(e.to_string()))?;
    if out.len() > max {
        return Err(DatasetError::Inflate(format!(
            "inflates to more than the limit of {max} bytes"
        )));
    }
    Ok(out)
}

/// The fragments of encapsulated pixel data: the basic offset table and
/// each fragment's byte range.
pub fn fragments(
    buf: &[u8],
    value: Range<usize>,
) -> Result<(Vec<u32>, Vec<Range<usize>>), DatasetError> {
    let mut pos = value.start;
    let mut bot = None;
    let mut frags = Vec::new();
    while pos < value.end {
        let tag = tag_at(buf, pos, false).ok_or(DatasetError::Truncated(pos))?;
        let len = u32_at(buf, pos + 4, false).ok_or(DatasetError::Truncated(pos))? as usize;
        if tag != ITEM {
            return Err(elem_err(tag, pos, "expected a pixel data fragment"));
        }
        let r = pos + 8..pos + 8 + len;
        if r.end > value.end {
            return Err(elem_err(tag, pos, "fragment goes beyond the pixel data"));
        }
        if bot.is_none() {
            bot = Some(
                buf[r.clone()]
                    .chunks_exact(4)
                    .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
            );
        } else {
            frags.push(r.clone());
        }
        pos = r.end;
    }
    Ok((bot.unwrap_or_default(), frags))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn explicit(tag: Tag, vr: &[u8; 2], value: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend(tag.0.to_le_bytes());
        v.extend(tag.1.to_le_bytes());
        v.extend(vr);
        if long_header(vr) {
            v.extend([0, 0]);
            v.extend((value.len() as u32).to_le_bytes());
        } else {
            v.extend((value.len() as u16).to_le_bytes());
        }
        v.extend(value);
        v
    }

    #[test]
    fn walks_defined_and_undefined_sequences() {
        let mut ds = explicit(Tag(0x0008, 0x0016), b"UI", b"1.2\0");
        // SQ of undefined length with one undefined-length item.
        ds.extend([
            0x08, 0x00, 0x15, 0x11, b'S', b'Q', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF,
        ]);
        ds.extend([0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF]);
        ds.extend(explicit(Tag(0x0008, 0x1155), b"UI", b"1.3\0"));
        ds.extend([0xFE, 0xFF, 0x0D, 0xE0, 0, 0, 0, 0]);
        ds.extend([0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0]);
        ds.extend(explicit(Tag(0x0010, 0x0010), b"PN", b"Doe^J\0"));
        let tags: Vec<Tag> = elements(&ds, 0..ds.len(), Encoding::ExplicitLE)
            .map(|e| e.unwrap().tag)
            .collect();
        assert_eq!(
            tags,
            vec![
                Tag(0x0008, 0x0016),
                Tag(0x0008, 0x1115),
                Tag(0x0010, 0x0010)
            ]
        );
    }

    #[test]
    fn bogus_length_is_an_error_naming_the_tag() {
        let mut ds = explicit(Tag(0x0008, 0x1115), b"UN", b"");
        ds[8..12].copy_from_slice(&0xDFFF_FFFEu32.to_le_bytes());
        let err = elements(&ds, 0..ds.len(), Encoding::ExplicitLE)
            .next()
            .unwrap()
            .unwrap_err();
        assert!(err.to_string().contains("(0008,1115)"), "{err}");
        assert!(err.to_string().contains("beyond the end"), "{err}");
    }

    #[test]
    fn unterminated_sequence_is_truncated_not_a_panic() {
        let mut ds = Vec::new();
        ds.extend([
            0x08, 0x00, 0x15, 0x11, b'S', b'Q', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF,
        ]);
        ds.extend([0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF]);
        let r: Vec<_> = elements(&ds, 0..ds.len(), Encoding::ExplicitLE).collect();
        assert!(r[0].is_err());
    }
}
