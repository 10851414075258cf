//! RLE Lossless (PS3.5 Annex G), for every Bits Allocated that is a whole
//! number of bytes. dicom-rs' decoder stops at 16 bits; RT dose grids and
//! some secondary captures are 32-bit.

/// Why a frame could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RleError {
    #[error("RLE header is truncated ({0} bytes)")]
    ShortHeader(usize),
    #[error(
        "RLE header has {found} segments, {expected} expected ({samples} samples of {bytes} bytes)"
    )]
    Segments {
        found: u32,
        expected: usize,
        samples: u16,
        bytes: usize,
    },
    #[error("RLE segment {0} offset {1} is outside the frame")]
    Offset(usize, u32),
    #[error("Bits Allocated {0} is not a whole number of bytes")]
    Bits(u16),
}

/// Decodes one frame into `dst` (appended): samples interleaved per pixel
/// (Planar Configuration 0), each little endian.
pub fn decode_frame(
    frame: &[u8],
    pixels: usize,
    samples: u16,
    bits_allocated: u16,
    dst: &mut Vec<u8>,
) -> Result<(), RleError> {
    if bits_allocated == 0 || !bits_allocated.is_multiple_of(8) {
        return Err(RleError::Bits(bits_allocated));
    }
    let bytes = usize::from(bits_allocated / 8);
    let header = frame.get(..64).ok_or(RleError::ShortHeader(frame.len()))?;
    let word = |i: usize| u32::from_le_bytes(header[i * 4..i * 4 + 4].try_into().unwrap());
    let count = word(0);
    let expected = usize::from(samples) * bytes;
    if count as usize != expected || expected > 15 {
        return Err(RleError::Segments {
            found: count,
            expected,
            samples,
            bytes,
        });
    }
    let offsets: Vec<u32> = (1..=expected).map(word).collect();
    let stride = usize::from(samples) * bytes;
    let base = dst.len();
    dst.resize(base + pixels * stride, 0);
    let out = &mut dst[base..];
    for (seg, &off) in offsets.iter().enumerate() {
        let end = offsets.get(seg + 1).map_or(frame.len(), |&n| n as usize);
        let data = frame
            .get(off as usize..end.max(off as usize))
            .ok_or(RleError::Offset(seg, off))?;
        // Segments run sample by sample, most significant byte first.
        let (sample, byte) = (seg / bytes, seg % bytes);
        let at = sample * bytes + (bytes - 1 - byte);
        unpack(data, out, at, stride, pixels);
    }
    Ok(())
}

/// PackBits into every `stride`-th byte of `out` from `at`. A segment that
/// decodes short leaves zeros; one that runs long is cut at the frame.
fn unpack(data: &[u8], out: &mut [u8], at: usize, stride: usize, pixels: usize) {
    let mut i = 0;
    let mut n = 0;
    let mut put = |b: u8, n: &mut usize| {
        if *n < pixels {
            out[at + *n * stride] = b;
        }
        *n += 1;
    };
    while i < data.len() && n < pixels {
        let h = data[i] as i8;
        i += 1;
        if h >= 0 {
            let len = h as usize + 1;
            let lit = &data[i..(i + len).min(data.len())];
            for &b in lit {
                put(b, &mut n);
            }
            i += len;
        } else if h != -128 {
            let Some(&b) = data.get(i) else { break };
            i += 1;
            for _ in 0..(1 - h as isize) {
                put(b, &mut n);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Encodes one segment with literal runs only (enough for tests).
    fn literal(bytes: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        for c in bytes.chunks(128) {
            v.push((c.len() - 1) as u8);
            v.extend(c);
        }
        v
    }

    fn frame(segments: &[Vec<u8>]) -> Vec<u8> {
        let mut h = vec![0u8; 64];
        h[..4].copy_from_slice(&(segments.len() as u32).to_le_bytes());
        let mut off = 64u32;
        let mut body: Vec<u8> = Vec::new();
        for (i, s) in segments.iter().enumerate() {
            h[4 + i * 4..8 + i * 4].copy_from_slice(&off.to_le_bytes());
            off += s.len() as u32;
            body.extend(s);
        }
        h.extend(body);
        h
    }

    #[test]
    fn thirty_two_bit_rgb_is_reassembled_little_endian_interleaved() {
        // Two pixels, RGB, 32-bit: R = 0x01020304 / 0x11121314, etc.
        let px: [[u32; 3]; 2] = [[0x01020304, 0xA0B0C0D0, 7], [0x11121314, 0, 0xFFFFFFFF]];
        let mut segs = Vec::new();
        for s in 0..3 {
            for b in 0..4 {
                let plane: Vec<u8> = px.iter().map(|p| p[s].to_be_bytes()[b]).collect();
                segs.push(literal(&plane));
            }
        }
        let mut out = Vec::new();
        decode_frame(&frame(&segs), 2, 3, 32, &mut out).unwrap();
        let expect: Vec<u8> = px.iter().flatten().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(out, expect);
    }

    #[test]
    fn replicate_runs_and_noop() {
        // -3 → 4 copies of 9, -128 no-op, literal 2 bytes.
        let seg = vec![0xFD, 9, 0x80, 0x01, 5, 6];
        let mut out = Vec::new();
        decode_frame(&frame(&[seg]), 6, 1, 8, &mut out).unwrap();
        assert_eq!(out, vec![9, 9, 9, 9, 5, 6]);
    }

    #[test]
    fn wrong_segment_count_names_what_was_expected() {
        let err = decode_frame(&frame(&[vec![0, 1]]), 1, 1, 16, &mut Vec::new()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "RLE header has 1 segments, 2 expected (1 samples of 2 bytes)"
        );
    }

    #[test]
    fn truncated_segment_leaves_zeros_without_panicking() {
        let seg = vec![0x7F, 1, 2]; // claims 128 literals, has 2
        let mut out = Vec::new();
        decode_frame(&frame(&[seg]), 4, 1, 8, &mut out).unwrap();
        assert_eq!(out, vec![1, 2, 0, 0]);
    }
}
