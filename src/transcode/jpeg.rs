//! JPEG (ISO 10918) frames: baseline and extended sequential DCT, 8 and
//! 12 bits, and the lossless process.
//!
//! 8-bit DCT goes through `jpeg-decoder`; 12-bit DCT, which it refuses,
//! through our own decoder ([`super::jpeg12`]); lossless through our fast
//! path ([`super::jpegll`]) when it takes the stream, else `jpeg-decoder`.
//! Unlike dicom-rs' adapter, the colour transform is chosen here from the
//! JPEG markers *and* the DICOM Photometric Interpretation: an RGB image
//! coded without a colour transform and without an Adobe marker is not
//! mistaken for YCbCr.

use std::io::Cursor;

use jpeg_decoder::{ColorTransform, Decoder};

use super::{jpeg12, jpegll};

/// Why a JPEG frame could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum JpegDecodeError {
    #[error("not a JPEG stream (no SOI or no frame header before the first scan)")]
    NotJpeg,
    #[error("{0}")]
    Decoder(#[source] jpeg_decoder::Error),
    #[error("no frame header")]
    NoFrameHeader,
    #[error("{precision}-bit samples in a Bits Allocated {bits_allocated} image")]
    SampleBits { precision: u8, bits_allocated: u16 },
    #[error("Bits Allocated {0} is not supported for JPEG")]
    BitsAllocated(u16),
    #[error("{precision}-bit JPEG in a Bits Allocated {bits_allocated} image")]
    Extended { precision: u8, bits_allocated: u16 },
    #[error(transparent)]
    Extended12(#[from] jpeg12::JpegError),
}

/// What the markers before the first scan say.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Markers {
    /// The SOF marker's second byte (0xC0 baseline, 0xC1 extended, 0xC3 lossless...).
    pub sof: u8,
    pub precision: u8,
    pub component_ids: Vec<u8>,
    pub jfif: bool,
    /// The Adobe APP14 transform flag (0 none, 1 YCbCr, 2 YCCK).
    pub adobe: Option<u8>,
}

/// Reads the markers up to the first SOS; None if the data is not JPEG.
pub fn scan_markers(data: &[u8]) -> Option<Markers> {
    if data.get(..2) != Some(&[0xFF, 0xD8]) {
        return None;
    }
    let mut m = Markers::default();
    let mut pos = 2;
    loop {
        // Fill bytes (FF FF ...) may precede a marker.
        while data.get(pos) == Some(&0xFF) && data.get(pos + 1) == Some(&0xFF) {
            pos += 1;
        }
        if data.get(pos) != Some(&0xFF) {
            return None;
        }
        let marker = *data.get(pos + 1)?;
        let len = usize::from(u16::from_be_bytes([
            *data.get(pos + 2)?,
            *data.get(pos + 3)?,
        ]));
        let seg = data.get(pos + 4..pos + 2 + len)?;
        match marker {
            0xDA => return (m.sof != 0).then_some(m),
            0xE0 if seg.starts_with(b"JFIF\0") => m.jfif = true,
            0xEE if seg.starts_with(b"Adobe") => m.adobe = seg.get(11).copied(),
            0xC0..=0xCF if !matches!(marker, 0xC4 | 0xC8 | 0xCC) => {
                m.sof = marker;
                m.precision = *seg.first()?;
                let n = usize::from(*seg.get(5)?);
                m.component_ids = (0..n)
                    .map(|i| seg.get(6 + i * 3).copied())
                    .collect::<Option<_>>()?;
            }
            _ => {}
        }
        pos += 2 + len;
    }
}

/// Whether three coded components are Y, Cb, Cr (to be converted to RGB)
/// rather than R, G, B. The markers decide where they speak; else the
/// Photometric Interpretation, which DICOM defines to describe the
/// components as coded (PS3.5 8.2.1).
pub fn is_ycbcr(m: &Markers, photometric: &str) -> bool {
    let pi_ybr = photometric.starts_with("YBR");
    match m.adobe {
        Some(1) => return true,
        // "No transform" in the JPEG sense: the components are as the
        // DICOM header describes them.
        Some(_) => return pi_ybr,
        None => {}
    }
    if m.jfif {
        return true;
    }
    if m.component_ids == b"RGB" {
        return false;
    }
    photometric != "RGB"
}

/// Decodes one frame into `dst` (appended): interleaved samples, 8-bit as
/// bytes, wider as little-endian 16-bit words. Colour comes out RGB.
pub fn decode_frame(
    data: &[u8],
    photometric: &str,
    bits_allocated: u16,
    max_bytes: usize,
    dst: &mut Vec<u8>,
) -> Result<(), JpegDecodeError> {
    let m = scan_markers(data).ok_or(JpegDecodeError::NotJpeg)?;
    let lossless = matches!(m.sof, 0xC3 | 0xC7 | 0xCB | 0xCF);
    if !lossless && m.precision > 8 {
        return decode_12(data, &m, photometric, bits_allocated, max_bytes, dst);
    }
    if lossless && jpegll::decode(data, bits_allocated, max_bytes, dst).is_some() {
        return Ok(());
    }
    let mut d = Decoder::new(Cursor::new(data));
    d.set_max_decoding_buffer_size(max_bytes);
    if m.component_ids.len() == 3 && !lossless {
        // `RGB` interleaves the components as they are; `None` would
        // return them one plane after the other.
        d.set_color_transform(if is_ycbcr(&m, photometric) {
            ColorTransform::YCbCr
        } else {
            ColorTransform::RGB
        });
    }
    let px = d.decode().map_err(JpegDecodeError::Decoder)?;
    let info = d.info().ok_or(JpegDecodeError::NoFrameHeader)?;
    match (info.pixel_format, bits_allocated) {
        (jpeg_decoder::PixelFormat::L16, 16) => {
            // jpeg-decoder gives native-endian words; DICOM wants little.
            dst.reserve(px.len());
            for w in px.chunks_exact(2) {
                dst.extend_from_slice(&u16::from_ne_bytes([w[0], w[1]]).to_le_bytes());
            }
        }
        (jpeg_decoder::PixelFormat::L16, _) => {
            return Err(JpegDecodeError::SampleBits {
                precision: m.precision,
                bits_allocated,
            });
        }
        (_, 8) => dst.extend_from_slice(&px),
        (_, 16) => {
            // 8-bit JPEG in a 16-bit-allocated image.
            for &b in &px {
                dst.extend_from_slice(&u16::from(b).to_le_bytes());
            }
        }
        (_, b) => return Err(JpegDecodeError::BitsAllocated(b)),
    }
    Ok(())
}

fn decode_12(
    data: &[u8],
    m: &Markers,
    photometric: &str,
    bits_allocated: u16,
    max_bytes: usize,
    dst: &mut Vec<u8>,
) -> Result<(), JpegDecodeError> {
    if bits_allocated != 16 {
        return Err(JpegDecodeError::Extended {
            precision: m.precision,
            bits_allocated,
        });
    }
    let img = jpeg12::decode(data, max_bytes)?;
    let mut samples = img.samples;
    if img.components == 3 && is_ycbcr(m, photometric) {
        ycbcr_to_rgb(&mut samples, img.precision);
    }
    dst.reserve(samples.len() * 2);
    for s in samples {
        dst.extend_from_slice(&s.to_le_bytes());
    }
    Ok(())
}

/// JFIF YCbCr to RGB (ITU-R BT.601 full range) at any precision, rounded
/// as libjpeg's integer tables round.
fn ycbcr_to_rgb(samples: &mut [u16], precision: u8) {
    let max = (1i32 << precision) - 1;
    let center = 1i32 << (precision - 1);
    const SCALE: i32 = 1 << 16;
    let fix = |x: f64| (x * f64::from(SCALE) + 0.5) as i32;
    let (cr_r, cb_b, cb_g, cr_g) = (fix(1.40200), fix(1.77200), fix(0.34414), fix(0.71414));
    for px in samples.chunks_exact_mut(3) {
        let y = i32::from(px[0]);
        let cb = i32::from(px[1]) - center;
        let cr = i32::from(px[2]) - center;
        let r = y + ((cr_r * cr + SCALE / 2) >> 16);
        let g = y + ((-cb_g * cb - cr_g * cr + SCALE / 2) >> 16);
        let b = y + ((cb_b * cb + SCALE / 2) >> 16);
        px[0] = r.clamp(0, max) as u16;
        px[1] = g.clamp(0, max) as u16;
        px[2] = b.clamp(0, max) as u16;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn markers(adobe: Option<u8>, jfif: bool, ids: &[u8]) -> Markers {
        Markers {
            sof: 0xC0,
            precision: 8,
            component_ids: ids.to_vec(),
            jfif,
            adobe,
        }
    }

    #[test]
    fn colour_transform_follows_markers_then_photometric() {
        // No marker, ids 0,1,2, PI RGB: coded as RGB (pydicom's
        // SC_jpeg_no_color_transform.dcm; dicom-rs gets this one wrong).
        assert!(!is_ycbcr(&markers(None, false, &[0, 1, 2]), "RGB"));
        assert!(is_ycbcr(&markers(None, false, &[1, 2, 3]), "YBR_FULL_422"));
        assert!(is_ycbcr(&markers(None, true, &[1, 2, 3]), "RGB"));
        assert!(!is_ycbcr(&markers(Some(0), false, &[1, 2, 3]), "RGB"));
        assert!(is_ycbcr(&markers(Some(1), false, &[0, 1, 2]), "RGB"));
        assert!(!is_ycbcr(&markers(None, false, b"RGB"), "YBR_FULL"));
    }

    #[test]
    fn scan_reads_sof_and_app_markers() {
        let mut j = vec![0xFF, 0xD8];
        j.extend([0xFF, 0xE0, 0, 7]);
        j.extend(b"JFIF\0");
        j.extend([0xFF, 0xC1, 0, 11, 12, 0, 2, 0, 3, 1, 1, 0x11, 0]);
        j.extend([0xFF, 0xDA, 0, 2]);
        let m = scan_markers(&j).unwrap();
        assert_eq!((m.sof, m.precision, m.jfif), (0xC1, 12, true));
        assert_eq!(m.component_ids, vec![1]);
        assert!(scan_markers(&j[..10]).is_none());
    }

    #[test]
    fn ycbcr_grey_stays_grey_at_12_bits() {
        let mut px = vec![1000, 2048, 2048];
        ycbcr_to_rgb(&mut px, 12);
        assert_eq!(px, vec![1000, 1000, 1000]);
    }
}
