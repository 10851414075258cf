//! A fast path for lossless JPEG (ITU-T T.81 process 14, SOF3, Huffman
//! coded): the layout DICOM's JPEG Lossless syntaxes use in practice.
//!
//! It decodes one interleaved scan of all components (1 to 4, each
//! sampled 1×1), predictors 1 to 7, any point transform, and restart
//! intervals of whole lines, straight into the output buffer: a row of
//! differences is Huffman-decoded (a combined code + magnitude lookup
//! table), then undifferenced against the previous row, as libjpeg's
//! `jdpred.c` does (the first line of the scan and of every restart
//! interval predicted from the left, starting at 2^(P−Pt−1); the first
//! column from above; everything modulo 2^16 and shifted left by Pt on
//! output).
//!
//! Anything else, and any stream that is not clean (a bad Huffman code,
//! a marker or the end of the data inside the scan, an unexpected restart
//! marker), returns `None` with `dst` as it was: the caller then decodes
//! the frame with `jpeg-decoder`, so unusual and corrupt streams behave
//! exactly as before.

use super::jpeg12::{
    BitReader, HuffTable, LOOKAHEAD, RawHuffman, find_marker, read_restart_marker,
};

/// Bits of lookahead of the combined table.
const FAST_BITS: u32 = 11;

/// A DC (difference) table: the combined fast table and the full tables
/// for codes and magnitudes that do not fit in it.
struct DiffTable {
    /// Indexed by the next `FAST_BITS` bits: `diff << 8 | bits used` when
    /// the code and its magnitude bits fit, else 0.
    fast: Box<[i32; 1 << FAST_BITS]>,
    slow: Box<HuffTable>,
}

impl DiffTable {
    fn build(raw: &RawHuffman) -> Option<DiffTable> {
        let slow = HuffTable::build(raw).ok()?;
        let mut fast = Box::new([0i32; 1 << FAST_BITS]);
        // Canonical codes (Figure C.2; `build` has checked the counts).
        let mut code = 0u32;
        let mut p = 0usize;
        for len in 1..=16u32 {
            for _ in 0..raw.counts[len as usize - 1] {
                let s = u32::from(raw.values[p]);
                p += 1;
                let c = code;
                code += 1;
                // 16: a difference of 32768 with no magnitude bits.
                let extra = if s == 16 { 0 } else { s };
                if s > 16 || len + extra > FAST_BITS {
                    continue;
                }
                let shift = FAST_BITS - len - extra;
                for m in 0..(1u32 << extra) {
                    let diff: i32 = match s {
                        0 => 0,
                        16 => 32768,
                        _ => extend(m as i32, s),
                    };
                    let first = (((c << extra) | m) << shift) as usize;
                    fast[first..first + (1 << shift)].fill((diff << 8) | (len + extra) as i32);
                }
            }
            code <<= 1;
        }
        Some(DiffTable { fast, slow })
    }
}

/// F.2.2.1 EXTEND: `v` is the `s` magnitude bits (1..=15).
#[inline(always)]
fn extend(v: i32, s: u32) -> i32 {
    if v < (1 << (s - 1)) {
        v - (1 << s) + 1
    } else {
        v
    }
}

/// One difference; `None` for a bad code or category. Needs at least 32
/// buffered bits.
#[inline(always)]
fn read_diff(br: &mut BitReader<'_>, t: &DiffTable) -> Option<i32> {
    let e = t.fast[(br.acc >> (64 - FAST_BITS)) as usize];
    if e != 0 {
        br.consume((e & 0xFF) as u32);
        return Some(e >> 8);
    }
    read_diff_slow(br, t)
}

#[cold]
fn read_diff_slow(br: &mut BitReader<'_>, t: &DiffTable) -> Option<i32> {
    let h = &t.slow;
    let entry = h.lookup[(br.acc >> (64 - LOOKAHEAD)) as usize];
    let s = if entry >> 8 != 0 {
        br.consume(u32::from(entry >> 8));
        u32::from(entry & 0xFF)
    } else {
        let mut l = LOOKAHEAD as usize + 1;
        let mut code = (br.acc >> (64 - l)) as i32;
        while l <= 16 && code > h.maxcode[l] {
            l += 1;
            code = (br.acc >> (64 - l)) as i32;
        }
        if l > 16 {
            return None;
        }
        br.consume(l as u32);
        u32::from(h.values[((code + h.valoffset[l]) & 0xFF) as usize])
    };
    match s {
        0 => Some(0),
        1..=15 => {
            let v = (br.acc >> (64 - s)) as i32;
            br.consume(s);
            Some(extend(v, s))
        }
        16 => Some(32768),
        _ => None,
    }
}

/// Decodes a lossless JPEG frame into `dst` (appended): interleaved
/// samples, as bytes when `bits_allocated` is 8 (precision at most 8), as
/// little-endian 16-bit words when it is 16. `None` (and `dst` unchanged)
/// when this fast path does not take the stream; see the module notes.
pub fn decode(data: &[u8], bits_allocated: u16, max_bytes: usize, dst: &mut Vec<u8>) -> Option<()> {
    let before = dst.len();
    let r = decode_inner(data, bits_allocated, max_bytes, dst);
    if r.is_none() {
        dst.truncate(before);
    }
    r
}

struct Frame {
    precision: u32,
    height: usize,
    width: usize,
    ids: Vec<u8>,
}

fn decode_inner(
    data: &[u8],
    bits_allocated: u16,
    max_bytes: usize,
    dst: &mut Vec<u8>,
) -> Option<()> {
    if data.get(..2)? != [0xFF, 0xD8] {
        return None;
    }
    let mut pos = 2;
    let mut tables: [Option<RawHuffman>; 4] = [None, None, None, None];
    let mut restart_interval = 0usize;
    let mut frame: Option<Frame> = None;
    loop {
        let (marker, at) = find_marker(data, pos)?;
        pos = at + 2;
        // Standalone markers (no length).
        if matches!(marker, 0x01 | 0xD0..=0xD7) {
            continue;
        }
        if matches!(marker, 0xD8 | 0xD9) {
            return None;
        }
        let len = usize::from(u16::from_be_bytes(data.get(pos..pos + 2)?.try_into().ok()?));
        let seg = data.get(pos + 2..pos + len.max(2))?;
        pos += len.max(2);
        match marker {
            0xC4 => {
                let mut seg = seg;
                while let Some((&tc_th, rest)) = seg.split_first() {
                    let (tc, th) = (tc_th >> 4, usize::from(tc_th & 15));
                    if tc > 1 || th >= 4 {
                        return None;
                    }
                    let counts: [u8; 16] = rest.get(..16)?.try_into().ok()?;
                    let total: usize = counts.iter().map(|&c| usize::from(c)).sum();
                    let symbols = rest.get(16..16 + total.min(256))?;
                    if total > 256 {
                        return None;
                    }
                    let mut values = [0u8; 256];
                    values[..total].copy_from_slice(symbols);
                    if tc == 0 {
                        tables[th] = Some(RawHuffman { counts, values });
                    }
                    seg = &rest[16 + total..];
                }
            }
            0xDD => {
                restart_interval = usize::from(u16::from_be_bytes(seg.try_into().ok()?));
            }
            0xC3 => {
                if frame.is_some() || seg.len() < 6 {
                    return None;
                }
                let precision = u32::from(seg[0]);
                let height = usize::from(u16::from_be_bytes([seg[1], seg[2]]));
                let width = usize::from(u16::from_be_bytes([seg[3], seg[4]]));
                let nc = usize::from(seg[5]);
                if !(2..=16).contains(&precision)
                    || height == 0
                    || width == 0
                    || !(1..=4).contains(&nc)
                    || seg.len() != 6 + 3 * nc
                {
                    return None;
                }
                let comps = &seg[6..];
                if comps.chunks_exact(3).any(|c| c[1] != 0x11) {
                    return None;
                }
                frame = Some(Frame {
                    precision,
                    height,
                    width,
                    ids: comps.chunks_exact(3).map(|c| c[0]).collect(),
                });
            }
            // Any other frame type, and DNL.
            0xC0..=0xCF | 0xDC => return None,
            0xDA => {
                let f = frame.as_ref()?;
                let ns = usize::from(*seg.first()?);
                if ns != f.ids.len() || seg.len() != 4 + 2 * ns {
                    return None;
                }
                let mut scan_tables = Vec::with_capacity(ns);
                for (i, sel) in seg[1..1 + 2 * ns].chunks_exact(2).enumerate() {
                    // The components in frame order, each once.
                    if sel[0] != f.ids[i] || f.ids[..i].contains(&sel[0]) {
                        return None;
                    }
                    let td = usize::from(sel[1] >> 4);
                    scan_tables.push(DiffTable::build(tables.get(td)?.as_ref()?)?);
                }
                let predictor = seg[1 + 2 * ns];
                let pt = u32::from(seg[3 + 2 * ns] & 15);
                if !(1..=7).contains(&predictor) || pt >= f.precision {
                    return None;
                }
                let bytes = match (bits_allocated, f.precision) {
                    (8, ..=8) => 1,
                    (16, _) => 2,
                    _ => return None,
                };
                let out_len = f
                    .width
                    .checked_mul(f.height)?
                    .checked_mul(ns)?
                    .checked_mul(bytes)?;
                if out_len > max_bytes {
                    return None;
                }
                let scan = Scan {
                    width: f.width,
                    height: f.height,
                    nc: ns,
                    tables: &scan_tables,
                    predictor,
                    pt,
                    initial: 1 << (f.precision - pt - 1),
                    restart_interval,
                };
                let start = dst.len();
                dst.resize(start + out_len, 0);
                return decode_scan(data, pos, &scan, &mut dst[start..]);
            }
            // APPn, COM and anything else with a length: skipped.
            _ => {}
        }
    }
}

struct Scan<'a> {
    width: usize,
    height: usize,
    nc: usize,
    tables: &'a [DiffTable],
    predictor: u8,
    pt: u32,
    initial: i32,
    restart_interval: usize,
}

fn decode_scan(data: &[u8], pos: usize, s: &Scan<'_>, out: &mut [u8]) -> Option<()> {
    let n = s.width * s.nc;
    let rows_per_interval = match s.restart_interval {
        0 => usize::MAX,
        ri if ri % s.width == 0 => ri / s.width,
        // Restarts inside a line: libjpeg does not do that either.
        _ => return None,
    };
    let mut br = BitReader::new(data, pos);
    let mut diffs = vec![0i32; n];
    let mut prev = vec![0u16; n];
    let mut cur = vec![0u16; n];
    let mut rows_left = rows_per_interval;
    let mut next_rst = 0u8;
    let mut first = true;
    let bytes = out.len() / (n * s.height);
    for row_out in out.chunks_exact_mut(n * bytes) {
        if rows_left == 0 {
            if br.overran() {
                return None;
            }
            br.discard();
            let expected = 0xD0 + next_rst;
            if !br.stopped {
                let (code, at) = find_marker(data, br.pos)?;
                if code != expected {
                    return None;
                }
                br.marker = code;
                br.pos = at;
                br.stopped = true;
            }
            if br.eof || br.marker != expected {
                return None;
            }
            read_restart_marker(&mut br, &mut next_rst).ok()?;
            if br.stopped {
                return None;
            }
            rows_left = rows_per_interval;
            first = true;
        }
        rows_left -= 1;
        // Entropy decoding of one line of differences.
        if s.nc == 1 {
            let t = &s.tables[0];
            for d in diffs.iter_mut() {
                if br.nbits < 32 {
                    br.refill();
                }
                *d = read_diff(&mut br, t)?;
            }
        } else {
            for px in diffs.chunks_exact_mut(s.nc) {
                for (d, t) in px.iter_mut().zip(s.tables) {
                    if br.nbits < 32 {
                        br.refill();
                    }
                    *d = read_diff(&mut br, t)?;
                }
            }
        }
        undifference(s, first, &diffs, &prev, &mut cur);
        first = false;
        // Output: shifted back by Pt.
        let pt = s.pt;
        if bytes == 1 {
            for (o, &v) in row_out.iter_mut().zip(&cur) {
                *o = (v << pt) as u8;
            }
        } else {
            for (o, &v) in row_out.chunks_exact_mut(2).zip(&cur) {
                o.copy_from_slice(&(v << pt).to_le_bytes());
            }
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    if br.overran() {
        return None;
    }
    Some(())
}

/// One line: `cur` from its differences and the line above (H.1.2.1,
/// libjpeg's `jdpred.c`).
#[inline(always)]
fn undifference(s: &Scan<'_>, first: bool, diffs: &[i32], prev: &[u16], cur: &mut [u16]) {
    let nc = s.nc;
    let wrap = |p: i32, d: i32| (p + d) as u16;
    if first {
        for c in 0..nc {
            cur[c] = wrap(s.initial, diffs[c]);
        }
        for i in nc..cur.len() {
            cur[i] = wrap(i32::from(cur[i - nc]), diffs[i]);
        }
        return;
    }
    for c in 0..nc {
        cur[c] = wrap(i32::from(prev[c]), diffs[c]);
    }
    macro_rules! line {
        (|$ra:ident, $rb:ident, $rc:ident| $pred:expr) => {
            for i in nc..cur.len() {
                let $ra = i32::from(cur[i - nc]);
                let $rb = i32::from(prev[i]);
                let $rc = i32::from(prev[i - nc]);
                cur[i] = wrap($pred, diffs[i]);
            }
        };
    }
    match s.predictor {
        1 => line!(|ra, _rb, _rc| ra),
        2 => line!(|_ra, rb, _rc| rb),
        3 => line!(|_ra, _rb, rc| rc),
        4 => line!(|ra, rb, rc| ra + rb - rc),
        5 => line!(|ra, rb, rc| ra + ((rb - rc) >> 1)),
        6 => line!(|ra, rb, rc| rb + ((ra - rc) >> 1)),
        _ => line!(|ra, rb, _rc| (ra + rb) >> 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transcode::{dataset, pixels, scan};

    /// Every lossless JPEG frame of pydicom's test files takes the fast
    /// path and gives the same samples as jpeg-decoder.
    /// pydicom's bundled test files: STOW_TEST_PYDICOM_FILES, else asked of
    /// python3. A test that cannot find them fails (a skip is not a pass).
    fn pydicom_files() -> std::path::PathBuf {
        if let Some(dir) = std::env::var_os("STOW_TEST_PYDICOM_FILES") {
            return dir.into();
        }
        let out = std::process::Command::new("python3")
            .args(["-c", "import pydicom, os; print(os.path.join(os.path.dirname(pydicom.__file__), 'data', 'test_files'))"])
            .output()
            .expect("python3 runs");
        assert!(
            out.status.success(),
            "pydicom is not installed: run scripts/test.sh, which installs the test dependencies"
        );
        String::from_utf8(out.stdout).unwrap().trim().into()
    }

    #[test]
    fn pydicom_lossless_frames_take_the_fast_path_and_match_jpeg_decoder() {
        let dir = pydicom_files();
        let mut checked = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let Ok(file) = std::fs::read(&path) else {
                continue;
            };
            let Ok(parts) = dataset::split(&file, 1 << 30) else {
                continue;
            };
            if !["1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70"]
                .contains(&parts.transfer_syntax.as_str())
            {
                continue;
            }
            let ds = &parts.dataset[..];
            let Ok(sc) = scan(ds, parts.encoding) else {
                continue;
            };
            let Some(px) = sc.pixel.as_ref().filter(|p| p.undefined()) else {
                continue;
            };
            let (bot, ranges) = dataset::fragments(ds, px.value.clone()).unwrap();
            let frags: Vec<&[u8]> = ranges.iter().map(|r| &ds[r.clone()]).collect();
            let frames = pixels::frames(&sc.info, pixels::Family::Jpeg, &bot, &frags).unwrap();
            for f in &frames {
                let mut ours = Vec::new();
                assert!(
                    decode(f, sc.info.bits_allocated, 1 << 30, &mut ours).is_some(),
                    "{}: not taken by the fast path",
                    path.display()
                );
                let mut d = jpeg_decoder::Decoder::new(std::io::Cursor::new(&f[..]));
                let theirs = d.decode().unwrap();
                let theirs: Vec<u8> = if sc.info.bits_allocated == 16 {
                    theirs
                        .chunks_exact(2)
                        .flat_map(|w| u16::from_ne_bytes([w[0], w[1]]).to_le_bytes())
                        .collect()
                } else {
                    theirs
                };
                assert!(ours == theirs, "{}: samples differ", path.display());
                checked += 1;
            }
        }
        assert!(checked > 0, "no lossless JPEG frame found");
        eprintln!("{checked} frames checked");
    }
    /// Pixel data bytes of a Part 10 file.
    fn pixel_bytes(file: &[u8]) -> Vec<u8> {
        let parts = dataset::split(file, 1 << 30).unwrap();
        let sc = scan(&parts.dataset, parts.encoding).unwrap();
        parts.dataset[sc.pixel.unwrap().value].to_vec()
    }

    /// dcmtk's lossless encoder with every predictor and a point
    /// transform, on a 16-bit CT and an 8-bit RGB image: the fast path
    /// takes every stream and gives dcmdjpeg's (libjpeg's) samples.
    #[test]
    fn predictors_and_point_transforms_match_dcmdjpeg() {
        let dir = pydicom_files();
        let ok = |c: &mut std::process::Command| c.status().is_ok_and(|s| s.success());
        assert!(
            ok(std::process::Command::new("dcmcjpeg").arg("--version")),
            "dcmcjpeg (dcmtk) is not installed: run scripts/test.sh, which installs it"
        );
        let tmp = tempfile::tempdir().unwrap();
        let rgb = tmp.path().join("rgb.dcm");
        let run = |tool: &str, args: &[&str], from: &std::path::Path, to: &std::path::Path| {
            let mut c = std::process::Command::new(tool);
            c.args(args).arg(from).arg(to);
            assert!(ok(&mut c), "{tool} {args:?} {} failed", from.display());
        };
        run("dcmdrle", &[], &dir.join("SC_rgb_rle.dcm"), &rgb);
        let ct = dir.join("CT_small.dcm");
        let mut cases: Vec<(&std::path::Path, Vec<&str>)> = vec![(&ct, vec!["+e1"])];
        for sv in ["1", "2", "3", "4", "5", "6", "7"] {
            cases.push((&ct, vec!["+el", "+sv", sv]));
            cases.push((&rgb, vec!["+el", "+sv", sv]));
        }
        cases.push((&ct, vec!["+el", "+sv", "6", "+pt", "3"]));
        cases.push((&rgb, vec!["+el", "+sv", "7", "+pt", "2"]));
        for (i, (src, opts)) in cases.iter().enumerate() {
            let jpeg = tmp.path().join(format!("{i}.jpeg.dcm"));
            let back = tmp.path().join(format!("{i}.dcmdjpeg.dcm"));
            run("dcmcjpeg", opts, src, &jpeg);
            run("dcmdjpeg", &["+px"], &jpeg, &back);
            let file = std::fs::read(&jpeg).unwrap();
            let parts = dataset::split(&file, 1 << 30).unwrap();
            let sc = scan(&parts.dataset, parts.encoding).unwrap();
            let ds = &parts.dataset[..];
            let (bot, ranges) = dataset::fragments(ds, sc.pixel.unwrap().value).unwrap();
            let frags: Vec<&[u8]> = ranges.iter().map(|r| &ds[r.clone()]).collect();
            let frames = pixels::frames(&sc.info, pixels::Family::Jpeg, &bot, &frags).unwrap();
            let mut ours = Vec::new();
            for f in &frames {
                assert!(
                    decode(f, sc.info.bits_allocated, 1 << 30, &mut ours).is_some(),
                    "{opts:?} on {}: not taken by the fast path",
                    src.display()
                );
            }
            let theirs = pixel_bytes(&std::fs::read(&back).unwrap());
            assert!(
                ours == theirs[..ours.len()],
                "{opts:?} on {}: samples differ from dcmdjpeg's",
                src.display()
            );
        }
    }
}
