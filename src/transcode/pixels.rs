//! Encapsulated pixel data to native: frames split out of the fragments,
//! each decoded by the codec for its transfer syntax.
//!
//! Ours: RLE (all bit depths), JPEG (colour handled from the DICOM
//! header, 12-bit DCT) and Deflated Image Frame Compression (inflated up to
//! the frame's size, no further). dicom-rs' adapters, through the transfer
//! syntax registry: JPEG-LS (CharLS) and JPEG 2000 (OpenJPEG).
//!
//! Nothing is allocated from a declared number before it is checked: the
//! decoded size from the attributes ([`checked_len`], checked arithmetic,
//! within the limit), the frame count against the fragments
//! ([`frames`]), and every frame's codestream header against the
//! attributes ([`check_headers`]), all before the first frame is decoded.

use std::borrow::Cow;

use dicom_encoding::Codec;
use dicom_encoding::adapters::{PixelDataObject, RawPixelData};
use dicom_encoding::transfer_syntax::TransferSyntaxIndex;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;

use super::codestream::{self, CodestreamError, ImageGeometry, TransferSyntaxKind};
use super::{jpeg, rle};

/// The largest value a native Pixel Data element can hold: its length is
/// a 32-bit field, and 0xFFFFFFFF means "undefined".
pub const MAX_NATIVE_PIXEL_BYTES: u64 = 0xFFFF_FFFE;

const TS_DEFLATED_FRAMES: &str = "1.2.840.10008.1.2.8.1";
const TS_ENCAPSULATED_UNCOMPRESSED: &str = "1.2.840.10008.1.2.1.98";

/// What the attributes declare, as reasons show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Declared {
    pub frames: u32,
    pub columns: u16,
    pub rows: u16,
    pub samples: u16,
    pub bits_allocated: u16,
}

impl std::fmt::Display for Declared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Number of Frames {} x Columns {} x Rows {} x Samples per Pixel {} x {} byte(s) per sample (Bits Allocated {})",
            self.frames,
            self.columns,
            self.rows,
            self.samples,
            self.bits_allocated.div_ceil(8),
            self.bits_allocated
        )
    }
}

/// Why the pixel data is refused before decoding.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PixelError {
    #[error("{0} is missing or 0")]
    Missing(&'static str),
    #[error("Number of Frames (0028,0008) {0:?} is not a whole number from 0 to 4294967295")]
    NumberOfFrames(String),
    #[error("{0} overflows a 64-bit size")]
    Overflow(Declared),
    #[error("{declared} = {total} bytes decoded, over the limit of {limit} for decompression")]
    OverLimit {
        declared: Declared,
        total: u64,
        limit: u64,
    },
    #[error(
        "{declared} = {total} bytes decoded, more than a native Pixel Data value can hold ({MAX_NATIVE_PIXEL_BYTES})"
    )]
    OverValueLength { declared: Declared, total: u64 },
    #[error(
        "Number of Frames (0028,0008) is {frames} but the pixel data has only {fragments} fragment(s), and every frame takes at least one"
    )]
    FramesOverFragments { frames: u32, fragments: usize },
    #[error("the pixel data has no fragments")]
    NoFragments,
    #[error("basic offset table entry {entry} ({offset}) points to no fragment")]
    OffsetTable { entry: usize, offset: u32 },
    #[error(
        "{fragments} fragments for {frames} frames and no usable basic offset table: cannot tell the frames apart"
    )]
    FramesApart { fragments: usize, frames: usize },
    #[error("frame {frame}: {error}")]
    Frame {
        frame: usize,
        error: CodestreamError,
    },
    #[error("no decoder for this transfer syntax")]
    NoDecoder,
}

/// Why decoding failed once the pixel data was accepted.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error(transparent)]
    Refused(#[from] PixelError),
    #[error("frame {frame}: {source}")]
    Frame {
        frame: usize,
        #[source]
        source: FrameError,
    },
    #[error(
        "frame {frame} decoded to {got} bytes where Rows, Columns, Samples per Pixel and Bits Allocated give {want}"
    )]
    FrameSize {
        frame: usize,
        got: usize,
        want: usize,
    },
    #[error("decoded {got} bytes, {want} expected")]
    Length { got: u64, want: u64 },
}

/// Why one frame could not be decoded, by codec.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error(transparent)]
    Rle(#[from] rle::RleError),
    #[error(transparent)]
    Jpeg(#[from] jpeg::JpegDecodeError),
    #[error(transparent)]
    Inflate(#[from] InflateError),
    /// dicom-rs' adapters put the cause in the error's sources, so the
    /// text shows the whole chain.
    #[error("{}", chain(.0.as_ref()))]
    Codec(Box<dyn std::error::Error + Send + Sync>),
}

/// Number of Frames from its text: absent or empty is one frame, and 0
/// too (as pydicom and dcmtk read it); anything else that is not a whole
/// number in range is an error naming the attribute.
pub fn number_of_frames(text: Option<&str>) -> Result<u32, PixelError> {
    let Some(t) = text.map(str::trim).filter(|t| !t.is_empty()) else {
        return Ok(1);
    };
    t.parse::<u32>()
        .map(|n| n.max(1))
        .map_err(|_| PixelError::NumberOfFrames(t.chars().take(32).collect()))
}

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
    /// What one frame is, by the attributes.
    pub fn geometry(&self) -> ImageGeometry {
        ImageGeometry {
            rows: self.rows,
            columns: self.cols,
            samples_per_pixel: self.samples,
            bits_allocated: self.bits_allocated,
        }
    }

    /// Bytes of native pixel data, all frames; None on overflow.
    pub fn native_len(&self) -> Option<u64> {
        self.geometry()
            .frame_bytes()
            .checked_mul(u64::from(self.frames.max(1)))
    }

    /// Bytes of one native frame (cannot overflow, see
    /// [`ImageGeometry::frame_bytes`]; callers have checked the total
    /// against the limit, so it fits in memory).
    fn frame_len(&self) -> usize {
        self.geometry().frame_bytes() as usize
    }

    fn declared(&self) -> Declared {
        Declared {
            frames: self.frames.max(1),
            columns: self.cols,
            rows: self.rows,
            samples: self.samples,
            bits_allocated: self.bits_allocated,
        }
    }
}

/// The codec family of an encapsulated transfer syntax.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Jpeg,
    Rle,
    /// Deflated Image Frame Compression: each frame a raw deflate stream.
    Deflated,
    /// Decoded through the transfer syntax registry (dicom-rs adapters).
    Registry,
}

pub fn family(ts: &str) -> Family {
    match ts {
        "1.2.840.10008.1.2.5" => Family::Rle,
        TS_DEFLATED_FRAMES => Family::Deflated,
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
) -> Result<Vec<Cow<'a, [u8]>>, PixelError> {
    let n = info.frames.max(1) as usize;
    if frags.len() == n {
        return Ok(frags.iter().map(|f| Cow::Borrowed(*f)).collect());
    }
    if frags.is_empty() {
        return Err(PixelError::NoFragments);
    }
    // Checked before anything is sized by the frame count: a frame takes
    // at least one fragment, and the fragments are in the file.
    if n > frags.len() {
        return Err(PixelError::FramesOverFragments {
            frames: info.frames,
            fragments: frags.len(),
        });
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
                return Err(PixelError::OffsetTable {
                    entry: i,
                    offset: off,
                });
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
    Err(PixelError::FramesApart {
        fragments: frags.len(),
        frames: n,
    })
}

/// The native size of the pixel data, if the attributes describe an
/// image and its size is within `max_bytes` (and within what a native
/// Pixel Data element can hold).
pub fn checked_len(info: &ImageInfo, max_bytes: usize) -> Result<u64, PixelError> {
    for (value, name) in [
        (info.rows, "Rows (0028,0010)"),
        (info.cols, "Columns (0028,0011)"),
        (info.samples, "Samples per Pixel (0028,0002)"),
        (info.bits_allocated, "Bits Allocated (0028,0100)"),
    ] {
        if value == 0 {
            return Err(PixelError::Missing(name));
        }
    }
    let total = info
        .native_len()
        .ok_or_else(|| PixelError::Overflow(info.declared()))?;
    if total > max_bytes as u64 {
        return Err(PixelError::OverLimit {
            declared: info.declared(),
            total,
            limit: max_bytes as u64,
        });
    }
    if total > MAX_NATIVE_PIXEL_BYTES {
        return Err(PixelError::OverValueLength {
            declared: info.declared(),
            total,
        });
    }
    Ok(total)
}

/// Reads every frame's codestream header and checks it against the
/// attributes (see [`codestream::check_frame`]), before any frame is
/// decoded. A syntax decoded through the registry whose headers are not
/// read here is refused: its decoder would size its output from a header
/// nobody checked.
pub fn check_headers(
    ts: &str,
    info: &ImageInfo,
    frames: &[Cow<'_, [u8]>],
) -> Result<(), PixelError> {
    let Some(kind) = TransferSyntaxKind::of(ts) else {
        return match family(ts) {
            // Bounded by the frame size as it is inflated.
            Family::Deflated => Ok(()),
            // Each fragment is the frame itself: bounded by the file.
            Family::Registry if ts == TS_ENCAPSULATED_UNCOMPRESSED => Ok(()),
            _ => Err(PixelError::NoDecoder),
        };
    };
    let geometry = info.geometry();
    for (i, f) in frames.iter().enumerate() {
        codestream::check_frame(kind, f, &geometry).map_err(|error| PixelError::Frame {
            frame: i + 1,
            error,
        })?;
    }
    Ok(())
}

/// Decodes every frame; the result is native pixel data, samples
/// interleaved, little endian.
#[cfg(test)]
pub fn decode(
    ts: &str,
    info: &ImageInfo,
    frames: &[Cow<'_, [u8]>],
    max_bytes: usize,
) -> Result<Vec<u8>, DecodeError> {
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
) -> Result<(), DecodeError> {
    let total = checked_len(info, max_bytes)?;
    check_headers(ts, info, frames)?;
    let frame_len = info.frame_len();
    let start = out.len();
    out.reserve(total as usize);
    decode_frames(ts, info, frames, max_bytes, frame_len, out)?;
    if out.len() - start != total as usize {
        return Err(DecodeError::Length {
            got: (out.len() - start) as u64,
            want: total,
        });
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
) -> Result<(), DecodeError> {
    let frame_error = |i: usize| {
        move |e: FrameError| DecodeError::Frame {
            frame: i + 1,
            source: e,
        }
    };
    match family(ts) {
        Family::Rle => {
            let pixels = usize::from(info.rows) * usize::from(info.cols);
            for (i, f) in frames.iter().enumerate() {
                rle::decode_frame(f, pixels, info.samples, info.bits_allocated, dst)
                    .map_err(|e| frame_error(i)(e.into()))?;
            }
        }
        Family::Jpeg => {
            for (i, f) in frames.iter().enumerate() {
                let before = dst.len();
                jpeg::decode_frame(f, &info.photometric, info.bits_allocated, max_bytes, dst)
                    .map_err(|e| frame_error(i)(e.into()))?;
                check_size(dst.len() - before, frame_len, i)?;
            }
        }
        Family::Deflated => {
            for (i, f) in frames.iter().enumerate() {
                inflate_frame(f, frame_len, dst).map_err(|e| frame_error(i)(e.into()))?;
            }
        }
        Family::Registry => {
            let obj = Frames { ts, info, frames };
            let reader = match TransferSyntaxRegistry.get(ts).map(|t| t.codec()) {
                Some(Codec::EncapsulatedPixelData(Some(r), _)) => r,
                _ => return Err(PixelError::NoDecoder.into()),
            };
            for i in 0..frames.len() {
                let before = dst.len();
                reader
                    .decode_frame(&obj, i as u32, dst)
                    .map_err(|e| frame_error(i)(FrameError::Codec(Box::new(e))))?;
                check_size(dst.len() - before, frame_len, i)?;
            }
        }
    }
    Ok(())
}

/// Why a deflated frame could not be inflated.
#[derive(Debug, thiserror::Error)]
pub enum InflateError {
    #[error("cannot inflate: {0}")]
    Io(#[from] std::io::Error),
    #[error(
        "inflates to more than the {0} bytes Rows, Columns, Samples per Pixel and Bits Allocated give"
    )]
    TooLong(usize),
}

/// Inflates one frame into `dst`, reading one byte past the frame's size
/// so a longer stream is detected, never followed.
fn inflate_frame(frame: &[u8], frame_len: usize, dst: &mut Vec<u8>) -> Result<(), InflateError> {
    use std::io::Read;
    let before = dst.len();
    flate2::read::DeflateDecoder::new(frame)
        .take(frame_len as u64 + 1)
        .read_to_end(dst)?;
    if dst.len() - before > frame_len {
        dst.truncate(before);
        return Err(InflateError::TooLong(frame_len));
    }
    Ok(())
}

fn check_size(got: usize, want: usize, frame: usize) -> Result<(), DecodeError> {
    if got != want {
        return Err(DecodeError::FrameSize {
            frame: frame + 1,
            got,
            want,
        });
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
        assert!(
            err.to_string().contains("cannot tell the frames apart"),
            "{err}"
        );
    }

    #[test]
    fn a_declared_size_over_the_limit_is_refused_before_allocating() {
        let mut i = info(1000);
        i.rows = 4096;
        i.cols = 4096;
        i.bits_allocated = 16;
        let err = decode("1.2.840.10008.1.2.5", &i, &[], 1 << 30).unwrap_err();
        assert!(
            matches!(err, DecodeError::Refused(PixelError::OverLimit { .. })),
            "{err}"
        );
        assert!(err.to_string().contains("over the limit"), "{err}");
    }

    #[test]
    fn overflowing_sizes_name_the_attributes() {
        let i = ImageInfo {
            rows: u16::MAX,
            cols: u16::MAX,
            samples: 3,
            bits_allocated: 16,
            frames: u32::MAX,
            ..info(1)
        };
        let err = checked_len(&i, usize::MAX).unwrap_err().to_string();
        assert_eq!(
            err,
            "Number of Frames 4294967295 x Columns 65535 x Rows 65535 x Samples per Pixel 3 x 2 byte(s) per sample (Bits Allocated 16) overflows a 64-bit size"
        );
        let err = checked_len(&ImageInfo { rows: 0, ..info(1) }, 1 << 30).unwrap_err();
        assert_eq!(err.to_string(), "Rows (0028,0010) is missing or 0");
    }

    #[test]
    fn more_frames_than_fragments_is_refused_before_sizing_anything() {
        let a = vec![1u8; 4];
        let frags: Vec<&[u8]> = vec![&a, &a];
        let err = frames(&info(1 << 31), Family::Jpeg, &[], &frags).unwrap_err();
        assert_eq!(
            err,
            PixelError::FramesOverFragments {
                frames: 1 << 31,
                fragments: 2
            }
        );
    }

    #[test]
    fn number_of_frames_text() {
        assert_eq!(number_of_frames(None), Ok(1));
        assert_eq!(number_of_frames(Some(" ")), Ok(1));
        assert_eq!(number_of_frames(Some("0")), Ok(1));
        assert_eq!(number_of_frames(Some("12 ")), Ok(12));
        for bad in ["-1", "4294967296", "1.5", "x"] {
            let err = number_of_frames(Some(bad)).unwrap_err().to_string();
            assert!(err.starts_with("Number of Frames (0028,0008)"), "{err}");
        }
    }

    #[test]
    fn a_deflated_frame_inflates_up_to_its_size_and_no_further() {
        use std::io::Write;
        let mut z = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
        z.write_all(&vec![0u8; 1 << 20]).unwrap();
        let bomb = z.finish().unwrap();
        let mut dst = Vec::new();
        let err = inflate_frame(&bomb, 4, &mut dst).unwrap_err();
        assert!(matches!(err, InflateError::TooLong(4)), "{err}");
        assert!(dst.is_empty());
        inflate_frame(&bomb, 1 << 20, &mut dst).unwrap();
        assert_eq!(dst.len(), 1 << 20);
    }
}
