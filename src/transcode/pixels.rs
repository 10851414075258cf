//! Encapsulated pixel data to native: frames split out of the fragments,
//! each decoded by the codec for its transfer syntax.
//!
//! Ours: RLE (all bit depths) and JPEG (colour handled from the DICOM
//! header, 12-bit DCT). dicom-rs' adapters, through the transfer syntax
//! registry: JPEG-LS (CharLS) and JPEG 2000 (OpenJPEG).

use std::borrow::Cow;

use dicom_encoding::Codec;
use dicom_encoding::adapters::{PixelDataObject, RawPixelData};
use dicom_encoding::transfer_syntax::TransferSyntaxIndex;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;

use super::{jpeg, rle};

/// The attributes that describe the pixel data.
#[derive(Debug, Clone, Default)]
pub struct ImageInfo {
    pub rows: u16,
    pub cols: u16,
    pub samples: u16,
    pub bits_allocated: u16,
    pub bits_stored: u16,
    pub photometric: String,
    pub frames: u32,
}

impl ImageInfo {
    /// Bytes of native pixel data, all frames.
    pub fn native_len(&self) -> u64 {
        u64::from(self.rows)
            * u64::from(self.cols)
            * u64::from(self.samples)
            * u64::from(self.bits_allocated).div_ceil(8)
            * u64::from(self.frames.max(1))
    }

    fn frame_len(&self) -> usize {
        (self.native_len() / u64::from(self.frames.max(1))) as usize
    }
}

/// The codec family of an encapsulated transfer syntax.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Jpeg,
    Rle,
    /// Decoded through the transfer syntax registry (dicom-rs adapters).
    Registry,
}

pub fn family(ts: &str) -> Family {
    match ts {
        "1.2.840.10008.1.2.5" => Family::Rle,
        "1.2.840.10008.1.2.4.50"
        | "1.2.840.10008.1.2.4.51"
        | "1.2.840.10008.1.2.4.57"
        | "1.2.840.10008.1.2.4.70" => Family::Jpeg,
        _ => Family::Registry,
    }
}

/// Splits fragments into frames (PS3.5 A.4): one fragment per frame, the
/// basic offset table, or, for JPEG without a table, the end-of-image
/// markers.
pub fn frames<'a>(
    info: &ImageInfo,
    fam: Family,
    bot: &[u32],
    frags: &[&'a [u8]],
) -> Result<Vec<Cow<'a, [u8]>>, String> {
    let n = info.frames.max(1) as usize;
    if frags.len() == n {
        return Ok(frags.iter().map(|f| Cow::Borrowed(*f)).collect());
    }
    if frags.is_empty() {
        return Err("the pixel data has no fragments".into());
    }
    let concat = |fs: &[&[u8]]| -> Cow<'a, [u8]> { Cow::Owned(fs.concat()) };
    if n == 1 {
        return Ok(vec![concat(frags)]);
    }
    let mut out = Vec::with_capacity(n);
    if bot.len() == n {
        // Offsets count from the first fragment's item tag; each fragment
        // takes its length plus an 8-byte item header.
        let mut starts = Vec::with_capacity(frags.len());
        let mut at = 0u64;
        for f in frags {
            starts.push(at);
            at += f.len() as u64 + 8;
        }
        for (i, &off) in bot.iter().enumerate() {
            let end = bot.get(i + 1).map_or(u64::MAX, |&e| u64::from(e));
            let group: Vec<&[u8]> = frags
                .iter()
                .zip(&starts)
                .filter(|(_, s)| **s >= u64::from(off) && **s < end)
                .map(|(f, _)| *f)
                .collect();
            if group.is_empty() {
                return Err(format!(
                    "basic offset table entry {i} ({off}) points to no fragment"
                ));
            }
            out.push(concat(&group));
        }
        return Ok(out);
    }
    if fam == Family::Jpeg {
        let mut group = Vec::new();
        for f in frags {
            group.push(*f);
            let trimmed = f
                .iter()
                .rposition(|b| *b != 0)
                .map_or(&f[..0], |p| &f[..=p]);
            if trimmed.ends_with(&[0xFF, 0xD9]) {
                out.push(concat(&group));
                group.clear();
            }
        }
        if out.len() == n && group.is_empty() {
            return Ok(out);
        }
    }
    Err(format!(
        "{} fragments for {n} frames and no usable basic offset table: cannot tell the frames apart",
        frags.len()
    ))
}

/// The native size of the pixel data, if it is within `max_bytes`.
pub fn checked_len(info: &ImageInfo, max_bytes: usize) -> Result<u64, String> {
    let total = info.native_len();
    if total > max_bytes as u64 {
        return Err(format!(
            "{} frame(s) of {}x{}x{} at {} bits decode to {total} bytes, over the limit of {max_bytes}",
            info.frames.max(1),
            info.cols,
            info.rows,
            info.samples,
            info.bits_allocated
        ));
    }
    Ok(total)
}

/// Decodes every frame; the result is native pixel data, samples
/// interleaved, little endian.
#[cfg(test)]
pub fn decode(
    ts: &str,
    info: &ImageInfo,
    frames: &[Cow<'_, [u8]>],
    max_bytes: usize,
) -> Result<Vec<u8>, String> {
    let mut dst = Vec::new();
    decode_into(ts, info, frames, max_bytes, &mut dst)?;
    Ok(dst)
}

/// Decodes every frame and appends the native pixel data (samples
/// interleaved, little endian) to `out`, which the caller has sized.
pub fn decode_into(
    ts: &str,
    info: &ImageInfo,
    frames: &[Cow<'_, [u8]>],
    max_bytes: usize,
    out: &mut Vec<u8>,
) -> Result<(), String> {
    let total = checked_len(info, max_bytes)?;
    let frame_len = info.frame_len();
    let start = out.len();
    out.reserve(total as usize);
    decode_frames(ts, info, frames, max_bytes, frame_len, out)?;
    if out.len() - start != total as usize {
        return Err(format!(
            "decoded {} bytes, {total} expected",
            out.len() - start
        ));
    }
    Ok(())
}

fn decode_frames(
    ts: &str,
    info: &ImageInfo,
    frames: &[Cow<'_, [u8]>],
    max_bytes: usize,
    frame_len: usize,
    dst: &mut Vec<u8>,
) -> Result<(), String> {
    match family(ts) {
        Family::Rle => {
            let pixels = usize::from(info.rows) * usize::from(info.cols);
            for (i, f) in frames.iter().enumerate() {
                rle::decode_frame(f, pixels, info.samples, info.bits_allocated, dst)
                    .map_err(|e| format!("frame {}: {e}", i + 1))?;
            }
        }
        Family::Jpeg => {
            for (i, f) in frames.iter().enumerate() {
                let before = dst.len();
                jpeg::decode_frame(f, &info.photometric, info.bits_allocated, max_bytes, dst)
                    .map_err(|e| format!("frame {}: {e}", i + 1))?;
                check_size(dst.len() - before, frame_len, i)?;
            }
        }
        Family::Registry => {
            let obj = Frames { ts, info, frames };
            let reader = match TransferSyntaxRegistry.get(ts).map(|t| t.codec()) {
                Some(Codec::EncapsulatedPixelData(Some(r), _)) => r,
                _ => return Err("no decoder for this transfer syntax".into()),
            };
            for i in 0..frames.len() {
                let before = dst.len();
                reader
                    .decode_frame(&obj, i as u32, dst)
                    .map_err(|e| format!("frame {}: {}", i + 1, chain(&e)))?;
                check_size(dst.len() - before, frame_len, i)?;
            }
        }
    }
    Ok(())
}

fn check_size(got: usize, want: usize, frame: usize) -> Result<(), String> {
    if got != want {
        return Err(format!(
            "frame {} decoded to {got} bytes where Rows, Columns, Samples per Pixel and Bits Allocated give {want}",
            frame + 1
        ));
    }
    Ok(())
}

/// An error with its sources, which dicom-rs' adapters put the cause in.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(" <- ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

/// The view dicom-rs' adapters decode from: one fragment per frame.
struct Frames<'a> {
    ts: &'a str,
    info: &'a ImageInfo,
    frames: &'a [Cow<'a, [u8]>],
}

impl PixelDataObject for Frames<'_> {
    fn transfer_syntax_uid(&self) -> &str {
        self.ts
    }
    fn rows(&self) -> Option<u16> {
        Some(self.info.rows)
    }
    fn cols(&self) -> Option<u16> {
        Some(self.info.cols)
    }
    fn samples_per_pixel(&self) -> Option<u16> {
        Some(self.info.samples)
    }
    fn bits_allocated(&self) -> Option<u16> {
        Some(self.info.bits_allocated)
    }
    fn bits_stored(&self) -> Option<u16> {
        Some(self.info.bits_stored)
    }
    fn photometric_interpretation(&self) -> Option<&str> {
        Some(&self.info.photometric)
    }
    fn number_of_frames(&self) -> Option<u32> {
        Some(self.frames.len() as u32)
    }
    fn number_of_fragments(&self) -> Option<u32> {
        Some(self.frames.len() as u32)
    }
    fn fragment(&self, fragment: usize) -> Option<Cow<'_, [u8]>> {
        self.frames.get(fragment).map(|f| Cow::Borrowed(&f[..]))
    }
    fn offset_table(&self) -> Option<Cow<'_, [u32]>> {
        None
    }
    fn raw_pixel_data(&self) -> Option<RawPixelData> {
        Some(RawPixelData {
            fragments: self.frames.iter().map(|f| f.to_vec()).collect(),
            offset_table: Default::default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(frames: u32) -> ImageInfo {
        ImageInfo {
            rows: 2,
            cols: 2,
            samples: 1,
            bits_allocated: 8,
            bits_stored: 8,
            photometric: "MONOCHROME2".into(),
            frames,
        }
    }

    #[test]
    fn frames_by_offset_table() {
        let (a, b, c) = (vec![1u8; 4], vec![2u8; 6], vec![3u8; 2]);
        let frags: Vec<&[u8]> = vec![&a, &b, &c];
        // frame 1 = a+b, frame 2 = c: offsets 0 and (4+8)+(6+8) = 26
        let f = frames(&info(2), Family::Registry, &[0, 26], &frags).unwrap();
        assert_eq!(f[0].len(), 10);
        assert_eq!(&f[1][..], &c[..]);
    }

    #[test]
    fn jpeg_frames_by_end_of_image_marker() {
        let a1 = vec![0xFF, 0xD8, 1];
        let a2 = vec![2, 0xFF, 0xD9, 0];
        let b = vec![0xFF, 0xD8, 0xFF, 0xD9];
        let frags: Vec<&[u8]> = vec![&a1, &a2, &b];
        let f = frames(&info(2), Family::Jpeg, &[], &frags).unwrap();
        assert_eq!(f[0].len(), 7);
        let err = frames(&info(2), Family::Rle, &[], &frags).unwrap_err();
        assert!(err.contains("cannot tell the frames apart"), "{err}");
    }

    #[test]
    fn a_declared_size_over_the_limit_is_refused_before_allocating() {
        let mut i = info(1000);
        i.rows = 4096;
        i.cols = 4096;
        i.bits_allocated = 16;
        let err = decode("1.2.840.10008.1.2.5", &i, &[], 1 << 30).unwrap_err();
        assert!(err.contains("over the limit"), "{err}");
    }
}
