//! Writes a transcoded file: the source's elements, re-framed for the
//! target encoding where they must be, with the few top-level attributes
//! that describe the pixel data replaced.
//!
//! Values are copied byte for byte; only headers change (and byte order,
//! coming from big endian). Between two explicit VR little endian data sets
//! whole elements, sequences included, are copied unchanged.

use std::collections::HashMap;
use std::ops::Range;

use dicom_core::Tag;
use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry, VirtualVr};
use dicom_dictionary_std::StandardDataDictionary;

use super::dataset::{
    DatasetError, Element, Encoding, FileParts, PIXEL_DATA, UNDEFINED, elements, long_header,
    read_element,
};

const ITEM: Tag = Tag(0xFFFE, 0xE000);
const ITEM_END: Tag = Tag(0xFFFE, 0xE00D);
const SEQ_END: Tag = Tag(0xFFFE, 0xE0DD);
const TRANSFER_SYNTAX: Tag = Tag(0x0002, 0x0010);

/// What changes at the top level of the data set.
#[derive(Default)]
pub struct Changes {
    /// Replaced values (VR, value already padded to even length).
    pub set: HashMap<Tag, ([u8; 2], Vec<u8>)>,
    /// Left out.
    pub remove: Vec<Tag>,
}

impl Changes {
    /// Sets a text attribute, padded with a space as PS3.5 requires.
    pub fn set_text(&mut self, tag: Tag, vr: &[u8; 2], v: &str) {
        let mut b = v.as_bytes().to_vec();
        if b.len() % 2 == 1 {
            b.push(b' ');
        }
        self.set.insert(tag, (*vr, b));
    }

    pub fn set_us(&mut self, tag: Tag, v: u16) {
        self.set.insert(tag, (*b"US", v.to_le_bytes().to_vec()));
    }
}

/// A new pixel data value.
pub enum PixelValue<'a> {
    /// These bytes.
    Bytes(&'a [u8]),
    /// This many bytes, which the function appends to the output (the
    /// decoder, writing straight into the file being built).
    Decode(
        u64,
        &'a mut dyn FnMut(&mut Vec<u8>) -> Result<(), super::pixels::DecodeError>,
    ),
}

/// Writes preamble, file meta (with the new transfer syntax and group
/// length) and the data set in `target` encoding, with `changes` applied
/// and `pixel_data` (VR and value) in place of the source's pixel data.
pub fn write_file(
    parts: &FileParts<'_>,
    target_ts: &str,
    target: Encoding,
    changes: &Changes,
    mut pixel_data: Option<([u8; 2], PixelValue<'_>)>,
    out: &mut Vec<u8>,
) -> Result<(), DatasetError> {
    out.extend_from_slice(parts.prefix);
    write_meta(parts, target_ts, out);
    let ds = &parts.dataset[..];
    for e in elements(ds, 0..ds.len(), parts.encoding) {
        let e = e?;
        if changes.remove.contains(&e.tag) {
            continue;
        }
        if let Some((vr, v)) = changes.set.get(&e.tag) {
            write_header(out, e.tag, Some(*vr), v.len() as u32, target);
            out.extend_from_slice(v);
            continue;
        }
        if e.tag == PIXEL_DATA
            && let Some((vr, v)) = pixel_data.take()
        {
            let len = match v {
                PixelValue::Bytes(v) => {
                    write_header(out, e.tag, Some(vr), v.len() as u32, target);
                    out.extend_from_slice(v);
                    v.len()
                }
                PixelValue::Decode(len, decode) => {
                    write_header(out, e.tag, Some(vr), len as u32, target);
                    let before = out.len();
                    decode(out).map_err(DatasetError::Pixels)?;
                    let got = out.len() - before;
                    if got as u64 != len {
                        return Err(DatasetError::Pixels(super::pixels::DecodeError::Length {
                            got: got as u64,
                            want: len,
                        }));
                    }
                    got
                }
            };
            if len % 2 == 1 {
                out.push(0);
            }
            continue;
        }
        convert_element(ds, &e, parts.encoding, target, out, 0)?;
    }
    Ok(())
}

/// The meta group with a new transfer syntax; every other element as it
/// was, and the group length recomputed.
fn write_meta(parts: &FileParts<'_>, target_ts: &str, out: &mut Vec<u8>) {
    let mut ts = target_ts.as_bytes().to_vec();
    if ts.len() % 2 == 1 {
        ts.push(0);
    }
    let mut body = Vec::new();
    let mut ts_written = false;
    let src = parts.meta_bytes;
    let base = parts.meta.first().map(|e| e.start).unwrap_or(0);
    for e in &parts.meta {
        if e.tag == Tag(0x0002, 0x0000) {
            continue;
        }
        if e.tag >= TRANSFER_SYNTAX && !ts_written {
            write_header(
                &mut body,
                TRANSFER_SYNTAX,
                Some(*b"UI"),
                ts.len() as u32,
                Encoding::ExplicitLE,
            );
            body.extend_from_slice(&ts);
            ts_written = true;
        }
        if e.tag == TRANSFER_SYNTAX {
            continue;
        }
        body.extend_from_slice(&src[e.start - base..e.end - base]);
    }
    if !ts_written {
        write_header(
            &mut body,
            TRANSFER_SYNTAX,
            Some(*b"UI"),
            ts.len() as u32,
            Encoding::ExplicitLE,
        );
        body.extend_from_slice(&ts);
    }
    write_header(
        out,
        Tag(0x0002, 0x0000),
        Some(*b"UL"),
        4,
        Encoding::ExplicitLE,
    );
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&body);
}

/// Writes an element header. In explicit VR a value too long for a short
/// header goes out as UN, which has a long one.
pub fn write_header(out: &mut Vec<u8>, tag: Tag, vr: Option<[u8; 2]>, len: u32, enc: Encoding) {
    out.extend_from_slice(&tag.0.to_le_bytes());
    out.extend_from_slice(&tag.1.to_le_bytes());
    match (enc, vr) {
        (Encoding::ImplicitLE, _) | (_, None) => {}
        (_, Some(vr)) => {
            let vr = if !long_header(&vr) && len > 0xFFFF {
                *b"UN"
            } else {
                vr
            };
            out.extend_from_slice(&vr);
            if long_header(&vr) {
                out.extend_from_slice(&[0, 0]);
            } else {
                out.extend_from_slice(&(len as u16).to_le_bytes());
                return;
            }
        }
    }
    out.extend_from_slice(&len.to_le_bytes());
}

/// The VR of an element read in implicit VR, from the standard dictionary;
/// UN for what it does not know.
fn dictionary_vr(tag: Tag) -> [u8; 2] {
    if tag.1 == 0 {
        return *b"UL";
    }
    if tag.0 % 2 == 1 && (0x0010..=0x00FF).contains(&tag.1) {
        return *b"LO"; // private creator
    }
    match StandardDataDictionary.by_tag(tag).map(|e| e.vr()) {
        Some(VirtualVr::Exact(vr)) => vr.to_bytes(),
        Some(VirtualVr::Xs) => *b"US",
        Some(VirtualVr::Ox) => *b"OB",
        Some(VirtualVr::Px) | Some(VirtualVr::Lt) => *b"OW",
        _ => *b"UN",
    }
}

/// Swaps a value's byte order for its VR (big endian to little endian).
fn swap(vr: &[u8; 2], v: &mut [u8]) {
    let width = match vr {
        b"US" | b"SS" | b"OW" | b"AT" => 2,
        b"UL" | b"SL" | b"FL" | b"OF" | b"OL" => 4,
        b"FD" | b"OD" | b"SV" | b"UV" | b"OV" => 8,
        _ => return,
    };
    for c in v.chunks_exact_mut(width) {
        c.reverse();
    }
}

fn convert_element(
    buf: &[u8],
    e: &Element,
    from: Encoding,
    to: Encoding,
    out: &mut Vec<u8>,
    depth: usize,
) -> Result<(), DatasetError> {
    if from == to {
        out.extend_from_slice(&buf[e.start..e.end]);
        return Ok(());
    }
    let vr = e.vr.unwrap_or_else(|| dictionary_vr(e.tag));
    if &vr == b"UN" && e.undefined() {
        // CP-246: the value is an implicit VR little endian sequence in
        // every transfer syntax, so it is copied as it is.
        write_header(out, e.tag, Some(vr), UNDEFINED, to);
        out.extend_from_slice(&buf[e.value.clone()]);
        write_header(out, SEQ_END, None, 0, Encoding::ImplicitLE);
        return Ok(());
    }
    if &vr == b"SQ" || (e.vr.is_none() && e.undefined()) {
        // Nested elements change size with their headers, so sequences
        // and items are written with undefined lengths.
        write_header(out, e.tag, Some(*b"SQ"), UNDEFINED, to);
        for item in items(buf, e.value.clone(), from, depth)? {
            write_header(out, ITEM, None, UNDEFINED, Encoding::ImplicitLE);
            for inner in elements(buf, item, from) {
                convert_element(buf, &inner?, from, to, out, depth + 1)?;
            }
            write_header(out, ITEM_END, None, 0, Encoding::ImplicitLE);
        }
        write_header(out, SEQ_END, None, 0, Encoding::ImplicitLE);
        return Ok(());
    }
    let v = &buf[e.value.clone()];
    write_header(out, e.tag, Some(vr), v.len() as u32, to);
    let at = out.len();
    out.extend_from_slice(v);
    if from == Encoding::ExplicitBE {
        swap(&vr, &mut out[at..]);
    }
    Ok(())
}

/// The content ranges of a sequence's items.
fn items(
    buf: &[u8],
    value: Range<usize>,
    enc: Encoding,
    depth: usize,
) -> Result<Vec<Range<usize>>, DatasetError> {
    let mut out = Vec::new();
    let mut pos = value.start;
    while pos < value.end {
        let item = read_element(buf, pos, value.end, enc, depth)?;
        if item.tag != ITEM {
            return Err(DatasetError::Element {
                tag: format!("({:04X},{:04X})", item.tag.0, item.tag.1),
                offset: pos,
                what: "expected a sequence item".into(),
            });
        }
        if !item.undefined() {
            out.push(item.value.clone());
            pos = item.end;
            continue;
        }
        let start = item.end;
        let mut p = start;
        loop {
            let inner = read_element(buf, p, value.end, enc, depth + 1)?;
            if inner.tag == ITEM_END {
                out.push(start..p);
                pos = inner.end;
                break;
            }
            p = inner.end;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transcode::dataset::split;

    /// A tiny Part 10 file: meta + the given data set bytes.
    pub fn part10(ts: &str, ds: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; 128];
        f.extend_from_slice(b"DICM");
        let mut meta = Vec::new();
        let mut t = ts.as_bytes().to_vec();
        if t.len() % 2 == 1 {
            t.push(0);
        }
        write_header(
            &mut meta,
            Tag(0x0002, 0x0001),
            Some(*b"OB"),
            2,
            Encoding::ExplicitLE,
        );
        meta.extend([0, 1]);
        write_header(
            &mut meta,
            TRANSFER_SYNTAX,
            Some(*b"UI"),
            t.len() as u32,
            Encoding::ExplicitLE,
        );
        meta.extend(&t);
        write_header(
            &mut f,
            Tag(0x0002, 0x0000),
            Some(*b"UL"),
            4,
            Encoding::ExplicitLE,
        );
        f.extend((meta.len() as u32).to_le_bytes());
        f.extend(meta);
        f.extend(ds);
        f
    }

    /// `file` rewritten in `ts` with no changes.
    fn rewrite(file: &[u8], ts: &str, enc: Encoding) -> Vec<u8> {
        let parts = split(file, 1 << 20).unwrap();
        let mut out = Vec::new();
        write_file(&parts, ts, enc, &Changes::default(), None, &mut out).unwrap();
        out
    }

    /// The top-level elements of a split file.
    fn top(parts: &FileParts<'_>) -> Vec<Element> {
        elements(&parts.dataset, 0..parts.dataset.len(), parts.encoding)
            .collect::<Result<_, _>>()
            .unwrap()
    }

    fn el(out: &mut Vec<u8>, tag: Tag, vr: &[u8; 2], v: &[u8], enc: Encoding) {
        write_header(out, tag, Some(*vr), v.len() as u32, enc);
        out.extend(v);
    }

    #[test]
    fn explicit_to_implicit_keeps_values_and_nests_sequences() {
        let e = Encoding::ExplicitLE;
        let mut item = Vec::new();
        el(&mut item, Tag(0x0008, 0x1150), b"UI", b"1.2\0", e);
        let mut ds = Vec::new();
        el(&mut ds, Tag(0x0008, 0x0005), b"CS", b"ISO_IR 192", e);
        // defined-length SQ with one defined-length item
        let mut sq = Vec::new();
        write_header(&mut sq, ITEM, None, item.len() as u32, Encoding::ImplicitLE);
        sq.extend(&item);
        el(&mut ds, Tag(0x0008, 0x1140), b"SQ", &sq, e);
        el(
            &mut ds,
            Tag(0x0010, 0x0010),
            b"PN",
            "Müller^Jürgen".as_bytes(),
            e,
        );
        let file = part10("1.2.840.10008.1.2.1", &ds);
        let out = rewrite(&file, "1.2.840.10008.1.2", Encoding::ImplicitLE);
        let back = split(&out, 1 << 20).unwrap();
        assert_eq!(back.transfer_syntax, "1.2.840.10008.1.2");
        let els: Vec<Element> = elements(&back.dataset, 0..back.dataset.len(), back.encoding)
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(els.len(), 3);
        assert_eq!(
            &back.dataset[els[2].value.clone()],
            "Müller^Jürgen".as_bytes()
        );
        let inner = items(&back.dataset, els[1].value.clone(), back.encoding, 0).unwrap();
        let inner_els: Vec<Element> = elements(&back.dataset, inner[0].clone(), back.encoding)
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(&back.dataset[inner_els[0].value.clone()], b"1.2\0");
        // And back to explicit: the data set is as it started, except the
        // sequence, now of undefined length.
        let mut again = Vec::new();
        write_file(
            &back,
            "1.2.840.10008.1.2.1",
            Encoding::ExplicitLE,
            &Changes::default(),
            None,
            &mut again,
        )
        .unwrap();
        let round = split(&again, 1 << 20).unwrap();
        let vrs: Vec<Option<[u8; 2]>> =
            elements(&round.dataset, 0..round.dataset.len(), round.encoding)
                .map(|e| e.unwrap().vr)
                .collect();
        assert_eq!(vrs, vec![Some(*b"CS"), Some(*b"SQ"), Some(*b"PN")]);
    }

    #[test]
    fn big_endian_values_are_swapped_by_vr() {
        let mut ds = Vec::new();
        // (0028,0010) US 512 big endian, (0010,0010) PN text
        ds.extend([0x00, 0x28, 0x00, 0x10, b'U', b'S', 0x00, 0x02, 0x02, 0x00]);
        ds.extend([
            0x00, 0x10, 0x00, 0x10, b'P', b'N', 0x00, 0x04, b'A', b'^', b'B', b' ',
        ]);
        let file = part10("1.2.840.10008.1.2.2", &ds);
        let out = rewrite(&file, "1.2.840.10008.1.2.1", Encoding::ExplicitLE);
        let back = split(&out, 1 << 20).unwrap();
        let els = top(&back);
        assert_eq!(els[0].tag, Tag(0x0028, 0x0010));
        assert_eq!(&back.dataset[els[0].value.clone()], &512u16.to_le_bytes());
        assert_eq!(&back.dataset[els[1].value.clone()], b"A^B ");
    }

    #[test]
    fn meta_group_length_is_recomputed() {
        let file = part10("1.2.840.10008.1.2.4.50", &[]);
        let out = rewrite(&file, "1.2.840.10008.1.2.1", Encoding::ExplicitLE);
        let gl = u32::from_le_bytes(out[140..144].try_into().unwrap()) as usize;
        assert_eq!(144 + gl, out.len());
    }
}
