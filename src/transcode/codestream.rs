//! The headers of compressed frames, read and checked against the DICOM
//! attributes before any decoder sees the frame.
//!
//! Decoders allocate what the codestream's own header declares (CharLS and
//! OpenJPEG the image size, OpenJPEG also per tile), not what Rows and
//! Columns say; a few bytes of header can ask for gigabytes. So every frame
//! is read here first: the JPEG frame header (SOFn), the JPEG-LS frame
//! header (SOF55, and the LSE oversize-dimension segment that may replace
//! its sizes), the JPEG 2000 image and tile size (SIZ, in a raw codestream
//! or inside a JP2 file's codestream box) and the RLE header's segment
//! count and offsets. A frame whose header disagrees with the attributes
//! is refused, with both sizes in the reason, before anything is
//! allocated for it.
//!
//! A JPEG frame header may declare 0 lines and give the height later, in a
//! DNL marker after the first scan. None of the decoders here decodes such
//! a stream, so it is refused at the header with a reason of its own,
//! rather than passed on with a size nobody checked. JPEG 2000 tiles are
//! bounded too: OpenJPEG keeps coding parameters for every tile declared
//! in SIZ ([`J2K_TILE_PARAMS_BYTES`]).
//!
//! Everything here is a pure function over `&[u8]` that reads at most the
//! header and never allocates from a declared number, so it can be fed
//! arbitrary bytes (the fuzz targets call [`read_header`] and
//! [`check_frame`]).

use std::fmt;

/// The codestream families whose frame headers are read here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransferSyntaxKind {
    /// ISO 10918 (DCT and lossless processes).
    Jpeg,
    /// ISO 14495 (JPEG-LS lossless and near-lossless).
    JpegLs,
    /// ISO 15444 (Part 1, Part 2 multi-component and High-Throughput).
    Jpeg2000,
    /// DICOM RLE Lossless (PS3.5 Annex G).
    Rle,
}

impl TransferSyntaxKind {
    /// The family of an encapsulated transfer syntax; None for syntaxes
    /// whose frames have no header read here.
    pub fn of(ts_uid: &str) -> Option<TransferSyntaxKind> {
        let ts = ts_uid.trim_end_matches('\0');
        if ts == "1.2.840.10008.1.2.5" {
            return Some(TransferSyntaxKind::Rle);
        }
        let n: u32 = ts.strip_prefix("1.2.840.10008.1.2.4.")?.parse().ok()?;
        match n {
            // .50 to .66 (every JPEG process, retired ones included) and
            // .70 (lossless, first-order prediction).
            50..=66 | 70 => Some(TransferSyntaxKind::Jpeg),
            80 | 81 => Some(TransferSyntaxKind::JpegLs),
            // Part 1, Part 2 multi-component, High-Throughput.
            90..=93 | 201..=203 => Some(TransferSyntaxKind::Jpeg2000),
            _ => None,
        }
    }

    /// How reasons name the codestream.
    pub fn name(self) -> &'static str {
        match self {
            TransferSyntaxKind::Jpeg => "JPEG",
            TransferSyntaxKind::JpegLs => "JPEG-LS",
            TransferSyntaxKind::Jpeg2000 => "JPEG 2000",
            TransferSyntaxKind::Rle => "RLE",
        }
    }
}

/// What the DICOM attributes say one frame is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageGeometry {
    /// Rows (0028,0010).
    pub rows: u16,
    /// Columns (0028,0011).
    pub columns: u16,
    /// Samples per Pixel (0028,0002).
    pub samples_per_pixel: u16,
    /// Bits Allocated (0028,0100).
    pub bits_allocated: u16,
}

impl ImageGeometry {
    /// The native size of one frame, in bytes (cannot overflow: at most
    /// 2^16 x 2^16 x 2^16 x 2^13).
    pub fn frame_bytes(&self) -> u64 {
        u64::from(self.rows)
            * u64::from(self.columns)
            * u64::from(self.samples_per_pixel)
            * u64::from(self.bits_allocated.div_ceil(8))
    }

    fn dims(&self) -> Dims {
        Dims {
            width: u64::from(self.columns),
            height: u64::from(self.rows),
            components: u64::from(self.samples_per_pixel),
        }
    }
}

/// Width x height x components, as a reason shows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dims {
    pub width: u64,
    pub height: u64,
    pub components: u64,
}

impl fmt::Display for Dims {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} x {} x {}", self.width, self.height, self.components)
    }
}

/// What a frame's codestream header declares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameHeader {
    /// JPEG, JPEG-LS and JPEG 2000: the image the decoder will allocate.
    Image {
        dims: Dims,
        /// Bits per sample (for JPEG 2000 the largest of the components).
        precision: u8,
        /// JPEG 2000 tiles (1 for the others).
        tiles: u64,
    },
    /// RLE: the segment count and the largest segment offset.
    Rle { segments: u32, max_offset: u32 },
}

/// OpenJPEG keeps its coding parameters for every tile from the moment it
/// reads SIZ: about 5.6 KiB per tile (`opj_tcp_t`)...
pub const J2K_TILE_PARAMS_BYTES: u64 = 6 << 10;
/// ...plus about 1.1 KiB per tile and component (`opj_tccp_t`).
pub const J2K_TILE_COMPONENT_PARAMS_BYTES: u64 = 1152;
/// The tile parameters of a frame may take as much memory as the frame's
/// pixels, or this much if that is more: enough for thousands of tiles in
/// any image, not for 65535 one-pixel tiles (about 600 MB of parameters).
pub const J2K_TILE_PARAMS_FLOOR: u64 = 16 << 20;
/// RLE headers have room for 15 segment offsets.
pub const RLE_MAX_SEGMENTS: u32 = 15;
/// The fixed size of an RLE header.
pub const RLE_HEADER_BYTES: usize = 64;

/// Why a frame's header is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodestreamError {
    #[error(
        "{kind} codestream says {found} but the DICOM attributes say {expected} (columns x rows x samples per pixel)"
    )]
    SizeMismatch {
        kind: &'static str,
        found: Dims,
        expected: Dims,
    },
    #[error("{kind} codestream has {precision}-bit samples but Bits Allocated is {bits_allocated}")]
    Precision {
        kind: &'static str,
        precision: u8,
        bits_allocated: u16,
    },
    #[error(
        "JPEG frame header declares 0 lines (the height would follow in a DNL marker), which is not decoded"
    )]
    JpegHeightInDnl,
    #[error(
        "JPEG 2000 codestream has {tiles} tiles of {tile_width} x {tile_height} for a {width} x {height} image: their coding parameters would take about {bytes} bytes, over the limit of {limit}"
    )]
    TooManyTiles {
        tiles: u64,
        tile_width: u32,
        tile_height: u32,
        width: u64,
        height: u64,
        bytes: u64,
        limit: u64,
    },
    #[error(
        "RLE header has {found} segments but the DICOM attributes say {expected} ({samples} samples per pixel of {bytes} bytes)"
    )]
    RleSegments {
        found: u32,
        expected: u32,
        samples: u16,
        bytes: u16,
    },
    #[error("RLE segment {segment} starts at byte {offset}, beyond the {len}-byte frame")]
    RleOffset {
        segment: u32,
        offset: u32,
        len: usize,
    },
    #[error("Bits Allocated {0} is not a whole number of bytes, which RLE requires")]
    RleBits(u16),
    #[error("{kind} codestream: {what}")]
    Malformed {
        kind: &'static str,
        what: &'static str,
    },
}

fn malformed(kind: TransferSyntaxKind, what: &'static str) -> CodestreamError {
    CodestreamError::Malformed {
        kind: kind.name(),
        what,
    }
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Reads the header of one frame.
pub fn read_header(kind: TransferSyntaxKind, frame: &[u8]) -> Result<FrameHeader, CodestreamError> {
    match kind {
        TransferSyntaxKind::Jpeg | TransferSyntaxKind::JpegLs => jpeg_header(kind, frame),
        TransferSyntaxKind::Jpeg2000 => j2k_header(frame),
        TransferSyntaxKind::Rle => rle_header(frame),
    }
}

/// Reads the header of one frame and requires it to agree with
/// `expected`: the same width, height and component count, samples no
/// wider than Bits Allocated, and (JPEG 2000) tile parameters within
/// bounds; for RLE, one segment per byte of every sample, each starting
/// inside the frame.
pub fn check_frame(
    kind: TransferSyntaxKind,
    frame: &[u8],
    expected: &ImageGeometry,
) -> Result<(), CodestreamError> {
    match read_header(kind, frame)? {
        FrameHeader::Image {
            dims,
            precision,
            tiles,
        } => {
            if dims != expected.dims() {
                return Err(CodestreamError::SizeMismatch {
                    kind: kind.name(),
                    found: dims,
                    expected: expected.dims(),
                });
            }
            if u16::from(precision) > expected.bits_allocated {
                return Err(CodestreamError::Precision {
                    kind: kind.name(),
                    precision,
                    bits_allocated: expected.bits_allocated,
                });
            }
            if kind == TransferSyntaxKind::Jpeg2000 {
                check_tiles(frame, dims, tiles, expected)?;
            }
            Ok(())
        }
        FrameHeader::Rle {
            segments,
            max_offset,
        } => {
            let bits = expected.bits_allocated;
            if bits == 0 || !bits.is_multiple_of(8) {
                return Err(CodestreamError::RleBits(bits));
            }
            let bytes = bits / 8;
            let want = u32::from(expected.samples_per_pixel) * u32::from(bytes);
            if segments != want || want > RLE_MAX_SEGMENTS {
                return Err(CodestreamError::RleSegments {
                    found: segments,
                    expected: want,
                    samples: expected.samples_per_pixel,
                    bytes,
                });
            }
            if max_offset as usize > frame.len() {
                let segment = rle_offsets(frame, segments)
                    .position(|o| o == max_offset)
                    .unwrap_or(0) as u32;
                return Err(CodestreamError::RleOffset {
                    segment,
                    offset: max_offset,
                    len: frame.len(),
                });
            }
            Ok(())
        }
    }
}

fn check_tiles(
    frame: &[u8],
    dims: Dims,
    tiles: u64,
    expected: &ImageGeometry,
) -> Result<(), CodestreamError> {
    let per_tile = J2K_TILE_PARAMS_BYTES + dims.components * J2K_TILE_COMPONENT_PARAMS_BYTES;
    let bytes = tiles.saturating_mul(per_tile);
    let limit = expected.frame_bytes().max(J2K_TILE_PARAMS_FLOOR);
    if bytes > limit {
        let siz = j2k_siz(frame).ok();
        return Err(CodestreamError::TooManyTiles {
            tiles,
            tile_width: siz.map_or(0, |s| s.tile_width),
            tile_height: siz.map_or(0, |s| s.tile_height),
            width: dims.width,
            height: dims.height,
            bytes,
            limit,
        });
    }
    Ok(())
}

/// Walks the marker segments of a JPEG or JPEG-LS stream up to the first
/// scan, keeping the frame header (and for JPEG-LS an oversize-dimension
/// LSE segment, which supplies the sizes SOF55 gives as 0).
fn jpeg_header(kind: TransferSyntaxKind, data: &[u8]) -> Result<FrameHeader, CodestreamError> {
    let ls = kind == TransferSyntaxKind::JpegLs;
    if data.get(..2) != Some(&[0xFF, 0xD8]) {
        return Err(malformed(kind, "no start-of-image marker"));
    }
    let mut pos = 2;
    let mut sof: Option<(u32, u32, u32, u32)> = None;
    let mut oversize: Option<(u32, u32)> = None;
    loop {
        // Bytes before a marker are skipped, as libjpeg does (with a
        // warning); fill bytes (FF FF ...) may precede one.
        while pos < data.len() && data[pos] != 0xFF {
            pos += 1;
        }
        while data.get(pos + 1) == Some(&0xFF) {
            pos += 1;
        }
        let Some(&marker) = data.get(pos + 1) else {
            return Err(malformed(kind, "the data ends before the first scan"));
        };
        pos += 2;
        match marker {
            // Standalone markers, and a stuffed zero outside a scan.
            0x00 | 0x01 | 0xD0..=0xD7 => continue,
            0xD8 => return Err(malformed(kind, "a second start-of-image marker")),
            0xD9 => return Err(malformed(kind, "end of image before the first scan")),
            _ => {}
        }
        let len = usize::from(
            be16(data, pos).ok_or_else(|| malformed(kind, "a marker segment is truncated"))?,
        );
        if len < 2 {
            return Err(malformed(kind, "a marker segment has a length under 2"));
        }
        let seg = data
            .get(pos + 2..pos + len)
            .ok_or_else(|| malformed(kind, "a marker segment is truncated"))?;
        pos += len;
        match marker {
            0xDA => break,
            0xDE => {
                return Err(malformed(
                    kind,
                    "hierarchical JPEG (DHP marker), which is not decoded",
                ));
            }
            // SOF0..SOF15 except DHT (C4), JPG (C8) and DAC (CC).
            0xC0..=0xCF if !matches!(marker, 0xC4 | 0xC8 | 0xCC) => {
                if ls {
                    return Err(malformed(
                        kind,
                        "a JPEG frame header (SOFn) where JPEG-LS has SOF55",
                    ));
                }
                if sof.is_some() {
                    return Err(malformed(kind, "more than one frame header"));
                }
                sof = Some(sof_fields(kind, seg)?);
            }
            0xF7 => {
                if !ls {
                    return Err(malformed(
                        kind,
                        "a JPEG-LS frame header (SOF55) in a JPEG transfer syntax",
                    ));
                }
                if sof.is_some() {
                    return Err(malformed(kind, "more than one frame header"));
                }
                sof = Some(sof_fields(kind, seg)?);
            }
            // JPEG-LS preset parameters, type 4: oversize image dimension.
            0xF8 if ls && seg.first() == Some(&4) => {
                if oversize.is_some() {
                    return Err(malformed(kind, "more than one oversize-dimension segment"));
                }
                oversize = Some(lse_oversize(seg)?);
            }
            _ => {}
        }
    }
    let Some((precision, mut height, mut width, components)) = sof else {
        return Err(malformed(kind, "no frame header before the first scan"));
    };
    if let Some((h, w)) = oversize {
        // As CharLS: a size may come from SOF55 or from LSE, not both.
        if (h != 0 && height != 0) || (w != 0 && width != 0) {
            return Err(malformed(
                kind,
                "both the frame header and an oversize-dimension segment give a size",
            ));
        }
        height = height.max(h);
        width = width.max(w);
    }
    if height == 0 {
        return Err(if ls {
            malformed(kind, "the frame header declares 0 lines")
        } else {
            CodestreamError::JpegHeightInDnl
        });
    }
    Ok(FrameHeader::Image {
        dims: Dims {
            width: u64::from(width),
            height: u64::from(height),
            components: u64::from(components),
        },
        precision: precision as u8,
        tiles: 1,
    })
}

/// P, Y, X, Nf of a SOFn or SOF55 segment (the segment after its length).
fn sof_fields(
    kind: TransferSyntaxKind,
    seg: &[u8],
) -> Result<(u32, u32, u32, u32), CodestreamError> {
    if seg.len() < 6 {
        return Err(malformed(kind, "the frame header is shorter than 6 bytes"));
    }
    let nf = u32::from(seg[5]);
    if seg.len() < 6 + 3 * nf as usize {
        return Err(malformed(
            kind,
            "the frame header is shorter than its components",
        ));
    }
    Ok((
        u32::from(seg[0]),
        u32::from(u16::from_be_bytes([seg[1], seg[2]])),
        u32::from(u16::from_be_bytes([seg[3], seg[4]])),
        nf,
    ))
}

/// Height and width of a JPEG-LS LSE type 4 segment (ISO 14495-1 C.2.4.1.4).
fn lse_oversize(seg: &[u8]) -> Result<(u32, u32), CodestreamError> {
    let kind = TransferSyntaxKind::JpegLs;
    let short = || malformed(kind, "the oversize-dimension segment is truncated");
    let wxy = usize::from(*seg.get(1).ok_or_else(short)?);
    if !(2..=4).contains(&wxy) {
        return Err(malformed(
            kind,
            "the oversize-dimension segment has a size field of other than 2 to 4 bytes",
        ));
    }
    let read = |at: usize| -> Result<u32, CodestreamError> {
        let b = seg.get(at..at + wxy).ok_or_else(short)?;
        Ok(b.iter().fold(0u32, |v, &x| (v << 8) | u32::from(x)))
    };
    Ok((read(2)?, read(2 + wxy)?))
}

/// The SIZ fields of a JPEG 2000 codestream.
#[derive(Debug, Clone, Copy)]
struct Siz {
    width: u64,
    height: u64,
    components: u16,
    precision: u8,
    tile_width: u32,
    tile_height: u32,
    tiles: u64,
}

/// The signature box that starts a JP2 file (RFC 3745).
const JP2_SIGNATURE: [u8; 12] = [
    0x00, 0x00, 0x00, 0x0C, 0x6A, 0x50, 0x20, 0x20, 0x0D, 0x0A, 0x87, 0x0A,
];

fn j2k_header(frame: &[u8]) -> Result<FrameHeader, CodestreamError> {
    let s = j2k_siz(frame)?;
    Ok(FrameHeader::Image {
        dims: Dims {
            width: s.width,
            height: s.height,
            components: u64::from(s.components),
        },
        precision: s.precision,
        tiles: s.tiles,
    })
}

fn j2k_siz(frame: &[u8]) -> Result<Siz, CodestreamError> {
    let kind = TransferSyntaxKind::Jpeg2000;
    let cs = if frame.starts_with(&JP2_SIGNATURE) {
        jp2_codestream(frame)?
    } else {
        frame
    };
    if cs.get(..4) != Some(&[0xFF, 0x4F, 0xFF, 0x51]) {
        return Err(malformed(
            kind,
            "does not start with SOC and SIZ markers (nor is it a JP2 file)",
        ));
    }
    let short = || malformed(kind, "the SIZ segment is truncated");
    let lsiz = usize::from(be16(cs, 4).ok_or_else(short)?);
    let seg = cs.get(6..4 + lsiz).ok_or_else(short)?;
    // Rsiz(2) Xsiz Ysiz XOsiz YOsiz XTsiz YTsiz XTOsiz YTOsiz(4 each) Csiz(2).
    let f = |i: usize| be32(seg, 2 + 4 * i).ok_or_else(short);
    let (xsiz, ysiz, xo, yo) = (f(0)?, f(1)?, f(2)?, f(3)?);
    let (xt, yt, xto, yto) = (f(4)?, f(5)?, f(6)?, f(7)?);
    let csiz = be16(seg, 34).ok_or_else(short)?;
    if csiz == 0 {
        return Err(malformed(kind, "SIZ declares 0 components"));
    }
    let comps = seg
        .get(36..36 + 3 * usize::from(csiz))
        .ok_or_else(|| malformed(kind, "the SIZ segment is shorter than its components"))?;
    if xsiz <= xo || ysiz <= yo {
        return Err(malformed(kind, "SIZ declares an empty image"));
    }
    if xt == 0 || yt == 0 || xto > xo || yto > yo {
        return Err(malformed(kind, "SIZ declares an invalid tiling"));
    }
    let mut precision = 0u8;
    for c in comps.chunks_exact(3) {
        if c[1] == 0 || c[2] == 0 {
            return Err(malformed(kind, "SIZ declares a component subsampling of 0"));
        }
        precision = precision.max((c[0] & 0x7F) + 1);
    }
    let across = u64::from(xsiz - xto).div_ceil(u64::from(xt));
    let down = u64::from(ysiz - yto).div_ceil(u64::from(yt));
    Ok(Siz {
        width: u64::from(xsiz - xo),
        height: u64::from(ysiz - yo),
        components: csiz,
        precision,
        tile_width: xt,
        tile_height: yt,
        tiles: across * down,
    })
}

/// The contents of a JP2 file's contiguous codestream box ('jp2c').
fn jp2_codestream(file: &[u8]) -> Result<&[u8], CodestreamError> {
    let kind = TransferSyntaxKind::Jpeg2000;
    let mut pos = 0usize;
    while pos < file.len() {
        let short = || malformed(kind, "a JP2 box header is truncated");
        let lbox = be32(file, pos).ok_or_else(short)?;
        let tbox = file.get(pos + 4..pos + 8).ok_or_else(short)?;
        let (header, len) = match lbox {
            // To the end of the file.
            0 => (8, (file.len() - pos) as u64),
            1 => {
                let x = file.get(pos + 8..pos + 16).ok_or_else(short)?;
                (16, u64::from_be_bytes(x.try_into().unwrap_or_default()))
            }
            n => (8, u64::from(n)),
        };
        if len < header as u64 {
            return Err(malformed(kind, "a JP2 box is shorter than its header"));
        }
        let end = u64::try_from(pos)
            .ok()
            .and_then(|p| p.checked_add(len))
            .filter(|e| *e <= file.len() as u64)
            .ok_or_else(|| malformed(kind, "a JP2 box goes beyond the data"))?
            as usize;
        if tbox == b"jp2c" {
            return Ok(&file[pos + header..end]);
        }
        pos = end;
    }
    Err(malformed(kind, "a JP2 file without a codestream box"))
}

fn rle_offsets(frame: &[u8], segments: u32) -> impl Iterator<Item = u32> + '_ {
    (1..=segments.min(RLE_MAX_SEGMENTS) as usize).filter_map(move |i| {
        Some(u32::from_le_bytes(
            frame.get(i * 4..i * 4 + 4)?.try_into().ok()?,
        ))
    })
}

fn rle_header(frame: &[u8]) -> Result<FrameHeader, CodestreamError> {
    if frame.len() < RLE_HEADER_BYTES {
        return Err(malformed(
            TransferSyntaxKind::Rle,
            "the frame is shorter than the 64-byte header",
        ));
    }
    let segments = u32::from_le_bytes([frame[0], frame[1], frame[2], frame[3]]);
    let max_offset = rle_offsets(frame, segments).max().unwrap_or(0);
    Ok(FrameHeader::Rle {
        segments,
        max_offset,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn geometry(rows: u16, columns: u16, samples: u16, bits: u16) -> ImageGeometry {
        ImageGeometry {
            rows,
            columns,
            samples_per_pixel: samples,
            bits_allocated: bits,
        }
    }

    /// SOI, a COM segment, a frame header (`sof` marker) and a scan header.
    fn jpeg(sof: u8, p: u8, y: u16, x: u16, nf: u8) -> Vec<u8> {
        let mut j = vec![0xFF, 0xD8, 0xFF, 0xFE, 0, 4, b'h', b'i'];
        j.extend([0xFF, sof]);
        j.extend((8 + 3 * u16::from(nf)).to_be_bytes());
        j.push(p);
        j.extend(y.to_be_bytes());
        j.extend(x.to_be_bytes());
        j.push(nf);
        for i in 0..nf {
            j.extend([i + 1, 0x11, 0]);
        }
        j.extend([0xFF, 0xDA, 0, 2]);
        j
    }

    fn siz(x: u32, y: u32, tile: u32, comps: &[u8]) -> Vec<u8> {
        let mut s = vec![0xFF, 0x4F, 0xFF, 0x51];
        s.extend((38 + 3 * comps.len() as u16).to_be_bytes());
        s.extend([0, 0]);
        for v in [x, y, 0, 0, tile, tile, 0, 0] {
            s.extend(v.to_be_bytes());
        }
        s.extend((comps.len() as u16).to_be_bytes());
        for &c in comps {
            s.extend([c, 1, 1]);
        }
        s.extend([0xFF, 0x90]);
        s
    }

    #[test]
    fn kinds_of_transfer_syntaxes() {
        use TransferSyntaxKind::*;
        let of = TransferSyntaxKind::of;
        assert_eq!(of("1.2.840.10008.1.2.4.50"), Some(Jpeg));
        assert_eq!(of("1.2.840.10008.1.2.4.70\0"), Some(Jpeg));
        assert_eq!(of("1.2.840.10008.1.2.4.81"), Some(JpegLs));
        assert_eq!(of("1.2.840.10008.1.2.4.91"), Some(Jpeg2000));
        assert_eq!(of("1.2.840.10008.1.2.4.202"), Some(Jpeg2000));
        assert_eq!(of("1.2.840.10008.1.2.5"), Some(Rle));
        assert_eq!(of("1.2.840.10008.1.2.4.100"), None);
        assert_eq!(of("1.2.840.10008.1.2.1"), None);
    }

    #[test]
    fn jpeg_sizes_must_match_and_the_reason_names_both() {
        let ok = jpeg(0xC0, 8, 16, 16, 1);
        check_frame(TransferSyntaxKind::Jpeg, &ok, &geometry(16, 16, 1, 8)).unwrap();
        let big = jpeg(0xC1, 12, 20000, 20000, 1);
        let err = check_frame(TransferSyntaxKind::Jpeg, &big, &geometry(16, 16, 1, 16))
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "JPEG codestream says 20000 x 20000 x 1 but the DICOM attributes say 16 x 16 x 1 (columns x rows x samples per pixel)"
        );
        // Three components where the DICOM says one.
        let rgb = jpeg(0xC0, 8, 16, 16, 3);
        assert!(matches!(
            check_frame(TransferSyntaxKind::Jpeg, &rgb, &geometry(16, 16, 1, 8)),
            Err(CodestreamError::SizeMismatch { .. })
        ));
        // 12-bit samples in an 8-bit allocation.
        let deep = jpeg(0xC1, 12, 16, 16, 1);
        assert!(matches!(
            check_frame(TransferSyntaxKind::Jpeg, &deep, &geometry(16, 16, 1, 8)),
            Err(CodestreamError::Precision { precision: 12, .. })
        ));
    }

    #[test]
    fn jpeg_height_in_dnl_and_missing_frame_header_are_refused() {
        let dnl = jpeg(0xC3, 16, 0, 16, 1);
        assert_eq!(
            check_frame(TransferSyntaxKind::Jpeg, &dnl, &geometry(16, 16, 1, 16)),
            Err(CodestreamError::JpegHeightInDnl)
        );
        let no_sof = [0xFF, 0xD8, 0xFF, 0xDA, 0, 2];
        assert!(
            read_header(TransferSyntaxKind::Jpeg, &no_sof)
                .unwrap_err()
                .to_string()
                .contains("no frame header before the first scan")
        );
        assert!(read_header(TransferSyntaxKind::Jpeg, b"").is_err());
        // A truncated frame header is an error, not a panic.
        let full = jpeg(0xC0, 8, 16, 16, 3);
        for cut in 0..full.len() {
            let _ = read_header(TransferSyntaxKind::Jpeg, &full[..cut]);
        }
    }

    #[test]
    fn jpeg_ls_sizes_come_from_sof55_or_the_oversize_segment() {
        let ok = jpeg(0xF7, 16, 16, 16, 1);
        check_frame(TransferSyntaxKind::JpegLs, &ok, &geometry(16, 16, 1, 16)).unwrap();
        let err = check_frame(
            TransferSyntaxKind::JpegLs,
            &jpeg(0xF7, 16, 20000, 20000, 1),
            &geometry(16, 16, 1, 16),
        )
        .unwrap_err();
        assert!(
            err.to_string().starts_with(
                "JPEG-LS codestream says 20000 x 20000 x 1 but the DICOM attributes say 16 x 16 x 1"
            ),
            "{err}"
        );
        // SOF55 with 0 x 0 and an LSE type 4 giving 100000 x 100000.
        let mut big = vec![0xFF, 0xD8, 0xFF, 0xF8, 0, 12, 4, 4];
        big.extend(100_000u32.to_be_bytes());
        big.extend(100_000u32.to_be_bytes());
        big.extend(&jpeg(0xF7, 8, 0, 0, 1)[8..]);
        assert_eq!(
            read_header(TransferSyntaxKind::JpegLs, &big).unwrap(),
            FrameHeader::Image {
                dims: Dims {
                    width: 100_000,
                    height: 100_000,
                    components: 1
                },
                precision: 8,
                tiles: 1
            }
        );
        // A JPEG SOF in a JPEG-LS syntax.
        assert!(read_header(TransferSyntaxKind::JpegLs, &jpeg(0xC0, 8, 16, 16, 1)).is_err());
    }

    #[test]
    fn jpeg_2000_siz_raw_and_in_jp2() {
        let cs = siz(16, 16, 16, &[0x0F]);
        check_frame(TransferSyntaxKind::Jpeg2000, &cs, &geometry(16, 16, 1, 16)).unwrap();
        let err = check_frame(
            TransferSyntaxKind::Jpeg2000,
            &siz(20000, 20000, 20000, &[7, 7, 7]),
            &geometry(16, 16, 3, 8),
        )
        .unwrap_err();
        assert!(
            err.to_string().starts_with(
                "JPEG 2000 codestream says 20000 x 20000 x 3 but the DICOM attributes say 16 x 16 x 3"
            ),
            "{err}"
        );
        // The same codestream in a JP2 file: signature, ftyp, jp2c.
        let mut jp2 = JP2_SIGNATURE.to_vec();
        jp2.extend([0, 0, 0, 20]);
        jp2.extend(b"ftypjp2 \0\0\0\0jp2 ");
        let inner = siz(20000, 20000, 20000, &[7]);
        jp2.extend((8 + inner.len() as u32).to_be_bytes());
        jp2.extend(b"jp2c");
        jp2.extend(&inner);
        assert!(matches!(
            check_frame(TransferSyntaxKind::Jpeg2000, &jp2, &geometry(16, 16, 1, 8)),
            Err(CodestreamError::SizeMismatch { .. })
        ));
        // 16-bit samples in an 8-bit allocation.
        assert!(matches!(
            check_frame(TransferSyntaxKind::Jpeg2000, &cs, &geometry(16, 16, 1, 8)),
            Err(CodestreamError::Precision { .. })
        ));
    }

    #[test]
    fn jpeg_2000_one_pixel_tiles_are_refused() {
        // 255 x 257 one-pixel tiles: 65535, OpenJPEG's maximum.
        let cs = siz(255, 257, 1, &[7]);
        let err =
            check_frame(TransferSyntaxKind::Jpeg2000, &cs, &geometry(257, 255, 1, 8)).unwrap_err();
        assert!(
            matches!(err, CodestreamError::TooManyTiles { tiles: 65535, .. }),
            "{err}"
        );
        // 64 x 64 tiles of the same image are fine.
        let cs = siz(255, 257, 64, &[7]);
        check_frame(TransferSyntaxKind::Jpeg2000, &cs, &geometry(257, 255, 1, 8)).unwrap();
    }

    #[test]
    fn mutated_headers_are_errors_or_headers_never_panics() {
        // A small deterministic fuzz until the cargo-fuzz target runs:
        // every byte of real-looking headers replaced, and every cut.
        let mut jp2 = JP2_SIGNATURE.to_vec();
        jp2.extend([0, 0, 0, 0]);
        jp2.extend(b"jp2c");
        jp2.extend(siz(16, 16, 4, &[7, 7, 7]));
        let seeds: [(TransferSyntaxKind, Vec<u8>); 5] = [
            (TransferSyntaxKind::Jpeg, jpeg(0xC0, 8, 16, 16, 3)),
            (TransferSyntaxKind::JpegLs, jpeg(0xF7, 8, 16, 16, 1)),
            (TransferSyntaxKind::Jpeg2000, siz(16, 16, 4, &[7, 7, 7])),
            (TransferSyntaxKind::Jpeg2000, jp2),
            (TransferSyntaxKind::Rle, {
                let mut f = vec![0u8; 70];
                f[0] = 3;
                f
            }),
        ];
        let g = geometry(16, 16, 3, 8);
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        for (kind, seed) in &seeds {
            for cut in 0..=seed.len() {
                let _ = check_frame(*kind, &seed[..cut], &g);
            }
            for i in 0..seed.len() {
                for _ in 0..16 {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    let mut m = seed.clone();
                    m[i] = state as u8;
                    let _ = check_frame(*kind, &m, &g);
                }
            }
        }
    }

    #[test]
    fn rle_segments_and_offsets() {
        let mut f = vec![0u8; 80];
        f[0] = 2;
        f[4] = 64;
        f[8] = 72;
        check_frame(TransferSyntaxKind::Rle, &f, &geometry(2, 2, 1, 16)).unwrap();
        assert_eq!(
            check_frame(TransferSyntaxKind::Rle, &f, &geometry(2, 2, 3, 8))
                .unwrap_err()
                .to_string(),
            "RLE header has 2 segments but the DICOM attributes say 3 (3 samples per pixel of 1 bytes)"
        );
        f[8] = 200;
        assert!(matches!(
            check_frame(TransferSyntaxKind::Rle, &f, &geometry(2, 2, 1, 16)),
            Err(CodestreamError::RleOffset {
                segment: 1,
                offset: 200,
                ..
            })
        ));
        assert!(check_frame(TransferSyntaxKind::Rle, &f[..10], &geometry(2, 2, 1, 16)).is_err());
    }
}
