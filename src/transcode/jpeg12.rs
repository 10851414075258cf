//! Sequential DCT JPEG decoder (ITU-T T.81 baseline SOF0 and extended sequential
//! SOF1, Huffman coding) for 8- and 12-bit samples, with no dependency beyond std.
//!
//! It exists for DICOM "JPEG Extended (Process 2 & 4)" (1.2.840.10008.1.2.4.51)
//! with 12-bit samples, which the `jpeg-decoder` crate refuses. The arithmetic
//! follows the IJG libjpeg that dcmtk embeds, so that the output equals
//! `dcmdjpeg`'s sample for sample:
//! - the accurate integer IDCT of `jidctint.c` (`jpeg_idct_islow`) with its range
//!   limiting table from `jdmaster.c`;
//! - the "fancy" triangular h2v1/h2v2 upsampling of `jdsample.c` (replication for
//!   the other integral factors, and for components at most 2 samples wide);
//! - the corrupt-data behaviour of `jdhuff.c`/`jdmarker.c`: a marker met inside
//!   entropy-coded data ends the segment, zero bits are fed past it, and the rest
//!   of that restart interval is left mid-grey; a bad Huffman code decodes as 0;
//!   restart markers are resynchronised like `jpeg_resync_to_restart`.
//!
//! Unlike libjpeg, running out of input inside entropy-coded data is an error
//! ([`JpegError::Truncated`]) rather than a warning (dcmtk fails there too); a
//! stream that only lacks its EOI is accepted. Like libjpeg, a component that no
//! scan coded before EOI decodes as mid-grey; unlike it, a component coded by two
//! scans is an error (sequential JPEG codes each component once, and re-decoding
//! would let a tiny stream cost many full-image passes).
//!
//! Untrusted input: `max_output_bytes` is checked against the frame header before
//! any allocation proportional to the image size, every access is bounds-checked
//! and arithmetic cannot overflow (corrupt data gives an error or libjpeg's
//! garbage, never a panic). Speed: a 9-bit lookahead Huffman table plus a combined
//! "fast AC" table, a 64-bit bit buffer with an 8-bytes-at-once refill, a DC-only
//! shortcut that skips the IDCT, and decoding straight into preallocated planes.
//!
//! No colour conversion is done: the samples are returned as coded (e.g. YCbCr),
//! with every component upsampled to the full image size and interleaved per
//! pixel in frame-header order.

/// A decoded image: samples interleaved per pixel (component order as in the frame header),
/// one u16 per sample (8-bit values are 0..=255, 12-bit 0..=4095).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    pub width: u16,
    pub height: u16,
    pub components: u8,
    pub precision: u8,
    pub samples: Vec<u16>,
    /// The transform byte of an APP14 "Adobe" marker (0 = none/RGB or CMYK, 1 = YCbCr, 2 = YCCK).
    pub adobe_transform: Option<u8>,
    /// An APP0 "JFIF" marker was present.
    pub jfif: bool,
    /// The component identifiers of the frame header, in order.
    pub component_ids: Vec<u8>,
}

/// Why a JPEG stream could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum JpegError {
    #[error("truncated JPEG data")]
    Truncated,
    #[error("not a JPEG stream: it starts with 0x{0:02X} 0x{1:02X} instead of the SOI marker")]
    NotJpeg(u8, u8),
    #[error("unsupported JPEG process: {0}")]
    UnsupportedProcess(&'static str),
    #[error("arithmetic coding is not supported")]
    ArithmeticCoding,
    #[error("sample precision {0} is not supported for DCT")]
    UnsupportedPrecision(u8),
    #[error("missing Huffman table {class} {id}")]
    MissingHuffmanTable { class: &'static str, id: u8 },
    #[error("missing quantization table {0}")]
    MissingQuantTable(u8),
    #[error(
        "image of {width}x{height} with {components} components exceeds the limit of {limit} bytes"
    )]
    TooLarge {
        width: u16,
        height: u16,
        components: u8,
        limit: usize,
    },
    #[error("image height 0 (height defined by a DNL marker) is not supported")]
    DnlNotSupported,
    #[error("unsupported JPEG feature: {0}")]
    Unsupported(String),
    #[error("invalid JPEG data: {0}")]
    Invalid(String),
}

fn invalid(msg: impl Into<String>) -> JpegError {
    JpegError::Invalid(msg.into())
}

/// Decodes a sequential DCT JPEG codestream (SOF0/SOF1, Huffman, 8 or 12 bits).
///
/// `max_output_bytes` bounds `width * height * components * 2`; it is checked as
/// soon as the frame header is read, before anything proportional to the image
/// size is allocated.
pub fn decode(data: &[u8], max_output_bytes: usize) -> Result<Decoded, JpegError> {
    Decoder::new(data, max_output_bytes).run()
}

/// `jpeg_natural_order`: zigzag index to natural (row-major) index, with 16 extra
/// entries so that corrupt run lengths past 63 land on the last coefficient.
const NATURAL_ORDER: [u8; 80] = [
    0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34, 27, 20,
    13, 6, 7, 14, 21, 28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51, 58, 59,
    52, 45, 38, 31, 39, 46, 53, 60, 61, 54, 47, 55, 62, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63,
    63, 63, 63, 63, 63, 63,
];

/// libjpeg's limits: components per frame, blocks per MCU, sampling factors.
const MAX_COMPONENTS: usize = 10;
const MAX_BLOCKS_IN_MCU: usize = 10;
const MAX_SAMPLING: u8 = 4;

// ---------------------------------------------------------------------------
// Huffman tables

pub(super) const LOOKAHEAD: u32 = 9;

/// A DHT table as transmitted (counts per code length and the symbols).
#[derive(Clone)]
pub(super) struct RawHuffman {
    pub(super) counts: [u8; 16],
    pub(super) values: [u8; 256],
}

/// The derived decoding tables (`jpeg_make_d_derived_tbl`) plus a lookahead table.
pub(super) struct HuffTable {
    /// Indexed by the next `LOOKAHEAD` bits: `(code length << 8) | symbol`, or 0
    /// when the code is longer than `LOOKAHEAD` bits.
    pub(super) lookup: [u16; 1 << LOOKAHEAD],
    /// For AC tables, indexed like `lookup`: when the code and its magnitude bits
    /// both fit in the lookahead, `value << 16 | run << 8 | total bits`, else 0.
    fast_ac: [i32; 1 << LOOKAHEAD],
    /// Largest code of each length, -1 when there is none; `maxcode[17]` is a sentinel.
    pub(super) maxcode: [i32; 18],
    /// Index in `values` of the first symbol of each length, minus its code.
    pub(super) valoffset: [i32; 18],
    pub(super) values: [u8; 256],
}

impl HuffTable {
    pub(super) fn build(raw: &RawHuffman) -> Result<Box<HuffTable>, JpegError> {
        let bad = || invalid("bogus Huffman table definition");
        let mut sizes = [0u8; 257];
        let mut codes = [0u32; 257];
        let mut n = 0usize;
        for (l, &count) in raw.counts.iter().enumerate() {
            let count = count as usize;
            if n + count > 256 {
                return Err(bad());
            }
            sizes[n..n + count].fill(l as u8 + 1);
            n += count;
        }
        // Figure C.2, checking that the counts describe a legal code tree.
        let mut code = 0u32;
        let mut si = u32::from(sizes[0]);
        let mut p = 0usize;
        while p < n {
            while p < n && u32::from(sizes[p]) == si {
                codes[p] = code;
                p += 1;
                code += 1;
            }
            if code >= (1u32 << si) {
                return Err(bad());
            }
            code <<= 1;
            si += 1;
        }
        let mut table = Box::new(HuffTable {
            lookup: [0; 1 << LOOKAHEAD],
            fast_ac: [0; 1 << LOOKAHEAD],
            maxcode: [-1; 18],
            valoffset: [0; 18],
            values: raw.values,
        });
        let mut p = 0usize;
        for l in 1..=16usize {
            let count = raw.counts[l - 1] as usize;
            if count != 0 {
                table.valoffset[l] = p as i32 - codes[p] as i32;
                p += count;
                table.maxcode[l] = codes[p - 1] as i32;
            }
        }
        table.maxcode[17] = 0xFFFFF;
        let mut p = 0usize;
        for l in 1..=LOOKAHEAD {
            for _ in 0..raw.counts[l as usize - 1] {
                let shift = LOOKAHEAD - l;
                let first = (codes[p] << shift) as usize;
                let entry = ((l as u16) << 8) | u16::from(raw.values[p]);
                table.lookup[first..first + (1 << shift)].fill(entry);
                p += 1;
            }
        }
        for (i, &entry) in table.lookup.iter().enumerate() {
            let (len, rs) = (u32::from(entry >> 8), entry & 0xFF);
            let (run, size) = (i32::from(rs >> 4), u32::from(rs & 15));
            if len == 0 || size == 0 || len + size > LOOKAHEAD {
                continue;
            }
            let bits = ((i as u32) >> (LOOKAHEAD - len - size)) & ((1 << size) - 1);
            let bits = bits as i32;
            let value = if bits < (1 << (size - 1)) {
                bits - (1 << size) + 1
            } else {
                bits
            };
            table.fast_ac[i] = (value << 16) | (run << 8) | (len + size) as i32;
        }
        Ok(table)
    }
}

// ---------------------------------------------------------------------------
// Bit reader for entropy-coded segments

pub(super) struct BitReader<'a> {
    data: &'a [u8],
    /// Next byte to read; once `stopped` by a marker, the position of that marker's 0xFF.
    pub(super) pos: usize,
    /// Bits, MSB first.
    pub(super) acc: u64,
    pub(super) nbits: u32,
    /// A marker or the end of the data was reached: only zero bits are fed from now on.
    pub(super) stopped: bool,
    /// `stopped` because the data ran out.
    pub(super) eof: bool,
    /// The code of the marker at `pos` when `stopped && !eof`.
    pub(super) marker: u8,
    /// Fake zero bits at the low end of `acc`.
    fake: u32,
    /// Some fake bits were consumed (libjpeg's `insufficient_data` condition).
    overrun: bool,
}

impl<'a> BitReader<'a> {
    pub(super) fn new(data: &'a [u8], pos: usize) -> Self {
        BitReader {
            data,
            pos,
            acc: 0,
            nbits: 0,
            stopped: false,
            eof: false,
            marker: 0,
            fake: 0,
            overrun: false,
        }
    }

    /// Fills the accumulator to at least 57 bits.
    #[inline]
    pub(super) fn refill(&mut self) {
        if self.nbits < self.fake {
            self.overrun = true;
            self.fake = self.nbits;
        }
        // Fast path: 8 plain bytes (no 0xFF among them) ahead.
        if !self.stopped
            && let Some(chunk) = self.data.get(self.pos..self.pos + 8)
        {
            let word = u64::from_be_bytes(chunk.try_into().unwrap_or([0xFF; 8]));
            // Any 0xFF byte in `word`? (classic has-zero-byte trick on !word)
            let inv = !word;
            if (inv.wrapping_sub(0x0101_0101_0101_0101) & !inv & 0x8080_8080_8080_8080) == 0 {
                let take = (63 - self.nbits) / 8; // whole bytes that fit
                if take == 0 {
                    return;
                }
                self.acc |= (word >> (64 - 8 * take)) << (64 - 8 * take - self.nbits);
                self.nbits += 8 * take;
                self.pos += take as usize;
                return;
            }
        }
        while self.nbits <= 56 {
            let byte = if self.stopped { None } else { self.next_byte() };
            let byte = match byte {
                Some(b) => b,
                None => {
                    self.fake += 8;
                    0
                }
            };
            self.acc |= u64::from(byte) << (56 - self.nbits);
            self.nbits += 8;
        }
    }

    /// The next data byte, undoing byte stuffing; `None` (and `stopped`) at a marker
    /// or at the end of the data.
    #[inline]
    fn next_byte(&mut self) -> Option<u8> {
        let data = self.data;
        let Some(&b) = data.get(self.pos) else {
            self.stopped = true;
            self.eof = true;
            return None;
        };
        self.pos += 1;
        if b != 0xFF {
            return Some(b);
        }
        // FF (FF...) 00 is a stuffed 0xFF data byte; FF (FF...) xx is a marker.
        let mut p = self.pos;
        while p < data.len() && data[p] == 0xFF {
            p += 1;
        }
        match data.get(p) {
            None => {
                self.pos = p;
                self.stopped = true;
                self.eof = true;
                None
            }
            Some(0) => {
                self.pos = p + 1;
                Some(0xFF)
            }
            Some(&m) => {
                self.marker = m;
                self.pos = p - 1;
                self.stopped = true;
                None
            }
        }
    }

    /// Whether fake zero bits have been consumed since the last `discard`.
    #[inline]
    pub(super) fn overran(&mut self) -> bool {
        if self.nbits < self.fake {
            self.overrun = true;
            self.fake = self.nbits;
        }
        self.overrun
    }

    /// Throws away the buffered bits (at a restart marker).
    pub(super) fn discard(&mut self) {
        self.acc = 0;
        self.nbits = 0;
        self.fake = 0;
        self.overrun = false;
    }

    #[inline(always)]
    pub(super) fn consume(&mut self, n: u32) {
        self.acc <<= n;
        self.nbits -= n;
    }

    /// Decodes one Huffman symbol. Needs at least 17 buffered bits.
    #[inline(always)]
    fn decode(&mut self, t: &HuffTable) -> u8 {
        let entry = t.lookup[(self.acc >> (64 - LOOKAHEAD)) as usize];
        let len = u32::from(entry >> 8);
        if len != 0 {
            self.consume(len);
            return entry as u8;
        }
        self.decode_slow(t)
    }

    #[cold]
    fn decode_slow(&mut self, t: &HuffTable) -> u8 {
        let mut l = LOOKAHEAD as usize + 1;
        let mut code = (self.acc >> (64 - l)) as i32;
        while l <= 16 && code > t.maxcode[l] {
            l += 1;
            code = (self.acc >> (64 - l)) as i32;
        }
        if l > 16 {
            // libjpeg: "Corrupt JPEG data: bad Huffman code"; 17 bits were read.
            self.consume(17);
            return 0;
        }
        self.consume(l as u32);
        t.values[((code + t.valoffset[l]) & 0xFF) as usize]
    }

    /// Reads `s` (1..=15) bits and sign-extends them (F.2.2.1 EXTEND).
    #[inline(always)]
    fn receive_extend(&mut self, s: u32) -> i32 {
        let v = (self.acc >> (64 - s)) as i32;
        self.consume(s);
        if v < (1 << (s - 1)) {
            v - (1 << s) + 1
        } else {
            v
        }
    }
}

/// Decodes one block's coefficients, dequantized, into `blk` (which must be zero).
/// Returns whether any AC coefficient was coded.
#[inline(always)]
fn decode_block(
    br: &mut BitReader<'_>,
    dc: &HuffTable,
    ac: &HuffTable,
    pred: &mut i32,
    quant: &[u16; 64],
    blk: &mut [i32; 64],
) -> bool {
    if br.nbits < 32 {
        br.refill();
    }
    let s = u32::from(br.decode(dc));
    // DC categories above 15 are undefined; libjpeg (dcmtk) treats them as 0.
    let diff = if s == 0 || s > 15 {
        0
    } else {
        br.receive_extend(s)
    };
    let dc_val = pred.wrapping_add(diff);
    *pred = dc_val;
    // Coefficients are stored as 16-bit JCOEFs before dequantization.
    blk[0] = i32::from(dc_val as i16) * i32::from(quant[0]);
    let mut has_ac = false;
    let mut k = 1usize;
    while k < 64 {
        if br.nbits < 32 {
            br.refill();
        }
        let fast = ac.fast_ac[(br.acc >> (64 - LOOKAHEAD)) as usize];
        if fast != 0 {
            br.consume((fast & 0xFF) as u32);
            k += ((fast >> 8) & 0xFF) as usize;
            let z = usize::from(NATURAL_ORDER[k]);
            blk[z] = (fast >> 16) * i32::from(quant[z]);
            has_ac = true;
            k += 1;
            continue;
        }
        let rs = br.decode(ac);
        let r = usize::from(rs >> 4);
        let s = u32::from(rs & 15);
        if s != 0 {
            k += r;
            let v = br.receive_extend(s);
            let z = usize::from(NATURAL_ORDER[k]);
            blk[z] = i32::from(v as i16) * i32::from(quant[z]);
            has_ac = true;
        } else {
            if r != 15 {
                break;
            }
            k += 15;
        }
        k += 1;
    }
    has_ac
}

// ---------------------------------------------------------------------------
// Inverse DCT: jidctint.c (jpeg_idct_islow), CONST_BITS 13.

const CONST_BITS: u32 = 13;
const FIX_0_298631336: i64 = 2446;
const FIX_0_390180644: i64 = 3196;
const FIX_0_541196100: i64 = 4433;
const FIX_0_765366865: i64 = 6270;
const FIX_0_899976223: i64 = 7373;
const FIX_1_175875602: i64 = 9633;
const FIX_1_501321110: i64 = 12299;
const FIX_1_847759065: i64 = 15137;
const FIX_1_961570560: i64 = 16069;
const FIX_2_053119869: i64 = 16819;
const FIX_2_562915447: i64 = 20995;
const FIX_3_072711026: i64 = 25172;

#[inline(always)]
fn descale(x: i64, n: u32) -> i64 {
    (x + (1i64 << (n - 1))) >> n
}

/// Sample range parameters (`MAXJSAMPLE`, `CENTERJSAMPLE`, `RANGE_MASK`).
#[derive(Clone, Copy)]
struct Range {
    max: i32,
    center: i32,
    mask: i32,
}

impl Range {
    fn new(precision: u8) -> Range {
        let max = (1i32 << precision) - 1;
        Range {
            max,
            center: (max + 1) / 2,
            mask: max * 4 + 3,
        }
    }

    /// `range_limit[x & RANGE_MASK]` of jdmaster.c's `prepare_range_limit_table`
    /// (IDCT_range_limit = sample_range_limit + CENTERJSAMPLE): adds the level
    /// shift and clamps, with the table's wraparound for wildly corrupt input.
    #[inline(always)]
    fn limit(self, x: i64) -> u16 {
        let v = (x as i32) & self.mask;
        let half = (self.mask + 1) / 2;
        let v = if v >= half { v - (self.mask + 1) } else { v };
        (v + self.center).clamp(0, self.max) as u16
    }
}

/// The value of every sample of a block whose only nonzero coefficient is the DC
/// (dequantized `dq`): what jpeg_idct_islow's zero-column/zero-row shortcuts yield.
#[inline(always)]
fn dc_only_value<const PASS1_BITS: u32>(dq: i32, range: Range) -> u16 {
    let ws = dq.wrapping_shl(PASS1_BITS);
    range.limit(descale(i64::from(ws), PASS1_BITS + 3))
}

/// One 8-point pass of libjpeg's accurate integer IDCT (jidctint.c): the
/// eight outputs in order, scaled by 2**CONST_BITS and not yet descaled.
/// `x` is the input row or column, `x[0]` the DC term.
#[inline(always)]
fn idct_1d(x: [i64; 8]) -> [i64; 8] {
    // Even part.
    let z1 = (x[2] + x[6]) * FIX_0_541196100;
    let tmp2 = z1 + x[6] * -FIX_1_847759065;
    let tmp3 = z1 + x[2] * FIX_0_765366865;
    let tmp0 = (x[0] + x[4]) << CONST_BITS;
    let tmp1 = (x[0] - x[4]) << CONST_BITS;
    let tmp10 = tmp0 + tmp3;
    let tmp13 = tmp0 - tmp3;
    let tmp11 = tmp1 + tmp2;
    let tmp12 = tmp1 - tmp2;
    // Odd part.
    let (mut tmp0, mut tmp1, mut tmp2, mut tmp3) = (x[7], x[5], x[3], x[1]);
    let z1 = tmp0 + tmp3;
    let z2 = tmp1 + tmp2;
    let z3 = tmp0 + tmp2;
    let z4 = tmp1 + tmp3;
    let z5 = (z3 + z4) * FIX_1_175875602;
    tmp0 *= FIX_0_298631336;
    tmp1 *= FIX_2_053119869;
    tmp2 *= FIX_3_072711026;
    tmp3 *= FIX_1_501321110;
    let z1 = z1 * -FIX_0_899976223;
    let z2 = z2 * -FIX_2_562915447;
    let z3 = z3 * -FIX_1_961570560 + z5;
    let z4 = z4 * -FIX_0_390180644 + z5;
    tmp0 += z1 + z3;
    tmp1 += z2 + z4;
    tmp2 += z2 + z3;
    tmp3 += z1 + z4;
    [
        tmp10 + tmp3,
        tmp11 + tmp2,
        tmp12 + tmp1,
        tmp13 + tmp0,
        tmp13 - tmp0,
        tmp12 - tmp1,
        tmp11 - tmp2,
        tmp10 - tmp3,
    ]
}

/// Dequantized coefficients in `blk` to 8x8 samples at `out` (row stride `stride`).
#[inline(always)]
fn idct_islow<const PASS1_BITS: u32>(
    blk: &[i32; 64],
    out: &mut [u16],
    stride: usize,
    range: Range,
) {
    let mut ws = [0i32; 64];
    // Pass 1: columns from input, store into work array, scaled up by 2**PASS1_BITS.
    for col in 0..8 {
        let c: [i64; 8] = std::array::from_fn(|row| i64::from(blk[row * 8 + col]));
        if c[1..].iter().all(|v| *v == 0) {
            let dcval = blk[col].wrapping_shl(PASS1_BITS);
            for row in 0..8 {
                ws[row * 8 + col] = dcval;
            }
            continue;
        }
        let sh = CONST_BITS - PASS1_BITS;
        for (row, v) in idct_1d(c).into_iter().enumerate() {
            ws[row * 8 + col] = descale(v, sh) as i32;
        }
    }
    // Pass 2: rows from the work array, descaled by 8 and 2**PASS1_BITS.
    let sh = CONST_BITS + PASS1_BITS + 3;
    for (row, w) in ws.chunks_exact(8).enumerate() {
        let o = &mut out[row * stride..row * stride + 8];
        if w[1..].iter().all(|v| *v == 0) {
            o.fill(range.limit(descale(i64::from(w[0]), PASS1_BITS + 3)));
            continue;
        }
        let r: [i64; 8] = std::array::from_fn(|i| i64::from(w[i]));
        for (o, v) in o.iter_mut().zip(idct_1d(r)) {
            *o = range.limit(descale(v, sh));
        }
    }
}

// ---------------------------------------------------------------------------
// Frame and scan state

struct Component {
    id: u8,
    h: usize,
    v: usize,
    tq: u8,
    /// Size in samples of the component (`downsampled_width/height`).
    dw: usize,
    dh: usize,
    /// Dequantization table latched at the component's scan, natural order.
    quant: [u16; 64],
    scanned: bool,
    /// Decoded samples, padded to whole MCUs; `stride` samples per row.
    plane: Vec<u16>,
    stride: usize,
}

struct Frame {
    precision: u8,
    width: usize,
    height: usize,
    hmax: usize,
    vmax: usize,
    mcux: usize,
    mcuy: usize,
    comps: Vec<Component>,
}

struct ScanComp {
    ci: usize,
    dc: Box<HuffTable>,
    ac: Box<HuffTable>,
}

struct Decoder<'a> {
    data: &'a [u8],
    pos: usize,
    max_output_bytes: usize,
    qtables: [Option<[u16; 64]>; 4],
    dc_tables: [Option<RawHuffman>; 4],
    ac_tables: [Option<RawHuffman>; 4],
    restart_interval: usize,
    frame: Option<Frame>,
    adobe_transform: Option<u8>,
    jfif: bool,
}

impl<'a> Decoder<'a> {
    fn new(data: &'a [u8], max_output_bytes: usize) -> Self {
        Decoder {
            data,
            pos: 0,
            max_output_bytes,
            qtables: [None; 4],
            dc_tables: [None, None, None, None],
            ac_tables: [None, None, None, None],
            restart_interval: 0,
            frame: None,
            adobe_transform: None,
            jfif: false,
        }
    }

    fn run(mut self) -> Result<Decoded, JpegError> {
        match self.data {
            [0xFF, 0xD8, ..] => self.pos = 2,
            [a, b, ..] => return Err(JpegError::NotJpeg(*a, *b)),
            _ => return Err(JpegError::Truncated),
        }
        loop {
            let Some(marker) = self.next_marker() else {
                // The data ended without EOI: accept it when every component is decoded.
                if self.all_scanned() {
                    break;
                }
                return Err(JpegError::Truncated);
            };
            match marker {
                0xD8 => return Err(invalid("two SOI markers")),
                0xD9 => break,
                // SOF0 and SOF1 decode alike (libjpeg accepts 12-bit SOF0 too).
                0xC0 | 0xC1 => self.read_sof()?,
                0xC2 => return Err(JpegError::UnsupportedProcess("SOF2 (progressive)")),
                0xC3 => return Err(JpegError::UnsupportedProcess("SOF3 (lossless)")),
                0xC5 => {
                    return Err(JpegError::UnsupportedProcess(
                        "SOF5 (differential sequential)",
                    ));
                }
                0xC6 => {
                    return Err(JpegError::UnsupportedProcess(
                        "SOF6 (differential progressive)",
                    ));
                }
                0xC7 => {
                    return Err(JpegError::UnsupportedProcess(
                        "SOF7 (differential lossless)",
                    ));
                }
                0xC8 => return Err(JpegError::UnsupportedProcess("JPG (reserved SOF)")),
                0xC9..=0xCB | 0xCD..=0xCF => return Err(JpegError::ArithmeticCoding),
                0xC4 => self.read_dht()?,
                0xDB => self.read_dqt()?,
                0xDD => self.read_dri()?,
                0xDA => self.read_sos_and_decode()?,
                0xE0..=0xEF => self.read_app(marker)?,
                // COM, DAC (arithmetic conditioning; harmless with Huffman SOFs), DNL
                // (the height is known from SOF, which must be nonzero).
                0xFE | 0xCC | 0xDC => {
                    self.skippable_segment()?;
                }
                // Standalone markers outside a scan are ignored, as libjpeg does.
                0x01 | 0xD0..=0xD7 => {}
                other => return Err(invalid(format!("unsupported marker 0xFF{other:02X}"))),
            }
        }
        self.finish()
    }

    fn all_scanned(&self) -> bool {
        self.frame
            .as_ref()
            .is_some_and(|f| f.comps.iter().all(|c| c.scanned))
    }

    /// libjpeg's `next_marker`: skips garbage (including FF 00) and fill bytes;
    /// `None` at the end of the data.
    fn next_marker(&mut self) -> Option<u8> {
        let (code, pos) = find_marker(self.data, self.pos)?;
        self.pos = pos + 2;
        Some(code)
    }

    /// The payload of a marker segment with a length field; advances past it.
    fn segment(&mut self) -> Result<&'a [u8], JpegError> {
        self.segment_with(false)
    }

    /// Like `segment`, but a length below 2 reads as an empty payload, as
    /// libjpeg's `skip_variable` does for COM and APPn.
    fn skippable_segment(&mut self) -> Result<&'a [u8], JpegError> {
        self.segment_with(true)
    }

    fn segment_with(&mut self, lenient: bool) -> Result<&'a [u8], JpegError> {
        let data = self.data;
        let len = match data.get(self.pos..self.pos + 2) {
            Some(b) => usize::from(u16::from_be_bytes([b[0], b[1]])),
            None => return Err(JpegError::Truncated),
        };
        if len < 2 {
            if lenient {
                self.pos += 2;
                return Ok(&[]);
            }
            return Err(invalid("marker segment length below 2"));
        }
        let seg = data
            .get(self.pos + 2..self.pos + len)
            .ok_or(JpegError::Truncated)?;
        self.pos += len;
        Ok(seg)
    }

    fn read_app(&mut self, marker: u8) -> Result<(), JpegError> {
        let seg = self.skippable_segment()?;
        if marker == 0xE0 && seg.len() >= 14 && seg.starts_with(b"JFIF\0") {
            self.jfif = true;
        } else if marker == 0xEE && seg.len() >= 12 && seg.starts_with(b"Adobe") {
            self.adobe_transform = Some(seg[11]);
        }
        Ok(())
    }

    fn read_dqt(&mut self) -> Result<(), JpegError> {
        let mut seg = self.segment()?;
        while let Some((&pq_tq, rest)) = seg.split_first() {
            let (pq, tq) = (pq_tq >> 4, usize::from(pq_tq & 15));
            if tq >= 4 {
                return Err(invalid(format!("bogus DQT index {tq}")));
            }
            let size = match pq {
                0 => 64,
                1 => 128,
                _ => return Err(invalid(format!("bogus DQT precision {pq}"))),
            };
            let values = rest
                .get(..size)
                .ok_or_else(|| invalid("DQT segment too short"))?;
            let mut table = [0u16; 64];
            for k in 0..64 {
                let q = if pq == 0 {
                    u16::from(values[k])
                } else {
                    u16::from_be_bytes([values[2 * k], values[2 * k + 1]])
                };
                table[usize::from(NATURAL_ORDER[k])] = q;
            }
            self.qtables[tq] = Some(table);
            seg = &rest[size..];
        }
        Ok(())
    }

    fn read_dht(&mut self) -> Result<(), JpegError> {
        let mut seg = self.segment()?;
        while let Some((&tc_th, rest)) = seg.split_first() {
            let (tc, th) = (tc_th >> 4, usize::from(tc_th & 15));
            if tc > 1 || th >= 4 {
                return Err(invalid(format!("bogus DHT index 0x{tc_th:02X}")));
            }
            let counts: [u8; 16] = rest
                .get(..16)
                .and_then(|c| c.try_into().ok())
                .ok_or_else(|| invalid("DHT segment too short"))?;
            let total: usize = counts.iter().map(|&c| usize::from(c)).sum();
            if total > 256 {
                return Err(invalid("bogus Huffman table definition"));
            }
            let symbols = rest
                .get(16..16 + total)
                .ok_or_else(|| invalid("DHT segment too short"))?;
            let mut values = [0u8; 256];
            values[..total].copy_from_slice(symbols);
            let raw = RawHuffman { counts, values };
            if tc == 0 {
                self.dc_tables[th] = Some(raw);
            } else {
                self.ac_tables[th] = Some(raw);
            }
            seg = &rest[16 + total..];
        }
        Ok(())
    }

    fn read_dri(&mut self) -> Result<(), JpegError> {
        let seg = self.segment()?;
        if seg.len() != 2 {
            return Err(invalid("bogus DRI length"));
        }
        self.restart_interval = usize::from(u16::from_be_bytes([seg[0], seg[1]]));
        Ok(())
    }

    fn read_sof(&mut self) -> Result<(), JpegError> {
        if self.frame.is_some() {
            return Err(invalid("more than one SOF marker"));
        }
        let seg = self.segment()?;
        if seg.len() < 6 {
            return Err(invalid("bogus SOF length"));
        }
        let precision = seg[0];
        let height = usize::from(u16::from_be_bytes([seg[1], seg[2]]));
        let width = usize::from(u16::from_be_bytes([seg[3], seg[4]]));
        let nc = usize::from(seg[5]);
        if precision != 8 && precision != 12 {
            return Err(JpegError::UnsupportedPrecision(precision));
        }
        if seg.len() != 6 + 3 * nc {
            return Err(invalid("bogus SOF length"));
        }
        if height == 0 {
            return Err(JpegError::DnlNotSupported);
        }
        if width == 0 || nc == 0 {
            return Err(invalid("empty image"));
        }
        if nc > MAX_COMPONENTS {
            return Err(JpegError::Unsupported(format!(
                "{nc} components (at most {MAX_COMPONENTS})"
            )));
        }
        let limit_error = || JpegError::TooLarge {
            width: width as u16,
            height: height as u16,
            components: nc as u8,
            limit: self.max_output_bytes,
        };
        let out_bytes = (width as u64) * (height as u64) * (nc as u64) * 2;
        if out_bytes > self.max_output_bytes as u64 {
            return Err(limit_error());
        }
        let mut specs = Vec::with_capacity(nc);
        for c in seg[6..].chunks_exact(3) {
            let (h, v) = (c[1] >> 4, c[1] & 15);
            if !(1..=MAX_SAMPLING).contains(&h) || !(1..=MAX_SAMPLING).contains(&v) {
                return Err(invalid(format!("bogus sampling factors {h}x{v}")));
            }
            specs.push((c[0], usize::from(h), usize::from(v), c[2]));
        }
        let hmax = specs.iter().map(|s| s.1).max().unwrap_or(1);
        let vmax = specs.iter().map(|s| s.2).max().unwrap_or(1);
        if specs.iter().any(|s| hmax % s.1 != 0 || vmax % s.2 != 0) {
            return Err(JpegError::Unsupported(
                "fractional sampling factor ratios".into(),
            ));
        }
        let mcux = width.div_ceil(8 * hmax);
        let mcuy = height.div_ceil(8 * vmax);
        // The planes are padded to whole MCUs; for sane images that adds little, but
        // bound them too (a 1-pixel-wide image with 4x4 sampling pads 32-fold).
        let plane_samples: u64 = specs
            .iter()
            .map(|s| (mcux * s.1 * 8) as u64 * (mcuy * s.2 * 8) as u64)
            .sum();
        if plane_samples * 2 > (self.max_output_bytes as u64).saturating_mul(2) + (16 << 20) {
            return Err(limit_error());
        }
        let comps = specs
            .into_iter()
            .map(|(id, h, v, tq)| {
                let stride = mcux * h * 8;
                Component {
                    id,
                    h,
                    v,
                    tq,
                    dw: (width * h).div_ceil(hmax),
                    dh: (height * v).div_ceil(vmax),
                    quant: [0; 64],
                    scanned: false,
                    plane: vec![0u16; stride * mcuy * v * 8],
                    stride,
                }
            })
            .collect();
        self.frame = Some(Frame {
            precision,
            width,
            height,
            hmax,
            vmax,
            mcux,
            mcuy,
            comps,
        });
        Ok(())
    }

    fn read_sos_and_decode(&mut self) -> Result<(), JpegError> {
        let seg = self.segment()?;
        let frame = self
            .frame
            .as_mut()
            .ok_or_else(|| invalid("SOS marker before SOF"))?;
        let ns = usize::from(*seg.first().ok_or_else(|| invalid("bogus SOS length"))?);
        if !(1..=4).contains(&ns) || seg.len() != 4 + 2 * ns {
            return Err(invalid("bogus SOS length"));
        }
        let mut scan: Vec<ScanComp> = Vec::with_capacity(ns);
        let mut blocks = 0usize;
        for sel in seg[1..1 + 2 * ns].chunks_exact(2) {
            let (cs, td, ta) = (sel[0], sel[1] >> 4, sel[1] & 15);
            let ci = frame
                .comps
                .iter()
                .enumerate()
                .position(|(i, c)| c.id == cs && !scan.iter().any(|s| s.ci == i))
                .ok_or_else(|| invalid(format!("SOS names unknown component {cs}")))?;
            let comp = &mut frame.comps[ci];
            if comp.scanned {
                return Err(invalid(format!(
                    "component {cs} appears in more than one scan"
                )));
            }
            if td >= 4 || ta >= 4 {
                return Err(invalid("bogus Huffman table index in SOS"));
            }
            let dc =
                self.dc_tables[usize::from(td)]
                    .as_ref()
                    .ok_or(JpegError::MissingHuffmanTable {
                        class: "DC",
                        id: td,
                    })?;
            let ac =
                self.ac_tables[usize::from(ta)]
                    .as_ref()
                    .ok_or(JpegError::MissingHuffmanTable {
                        class: "AC",
                        id: ta,
                    })?;
            if comp.tq >= 4 {
                return Err(JpegError::MissingQuantTable(comp.tq));
            }
            // Latch the quantization table now, as libjpeg does.
            comp.quant =
                self.qtables[usize::from(comp.tq)].ok_or(JpegError::MissingQuantTable(comp.tq))?;
            blocks += comp.h * comp.v;
            scan.push(ScanComp {
                ci,
                dc: HuffTable::build(dc)?,
                ac: HuffTable::build(ac)?,
            });
        }
        // Ss, Se, Ah/Al: libjpeg only warns when they are not 0, 63, 0/0.
        if ns > 1 && blocks > MAX_BLOCKS_IN_MCU {
            return Err(invalid("too many blocks in an MCU"));
        }
        let end = decode_scan(frame, &scan, self.data, self.pos, self.restart_interval)?;
        for s in &scan {
            frame.comps[s.ci].scanned = true;
        }
        self.pos = end;
        Ok(())
    }

    fn finish(self) -> Result<Decoded, JpegError> {
        let mut frame = self
            .frame
            .ok_or_else(|| invalid("no image (no SOF marker)"))?;
        if !frame.comps.iter().any(|c| c.scanned) {
            return Err(invalid("no image (no scan before EOI)"));
        }
        // A component that no scan coded (EOI came early) has all-zero coefficients
        // in libjpeg's pre-zeroed coefficient buffer: it decodes as mid-grey.
        let center = Range::new(frame.precision).center as u16;
        for c in frame.comps.iter_mut().filter(|c| !c.scanned) {
            c.plane.fill(center);
        }
        let samples = upsample_interleave(&frame);
        Ok(Decoded {
            width: frame.width as u16,
            height: frame.height as u16,
            components: frame.comps.len() as u8,
            precision: frame.precision,
            samples,
            adobe_transform: self.adobe_transform,
            jfif: self.jfif,
            component_ids: frame.comps.iter().map(|c| c.id).collect(),
        })
    }
}

/// libjpeg's `next_marker` from `pos`: returns the marker code and the position
/// of its (last) 0xFF byte.
pub(super) fn find_marker(data: &[u8], mut pos: usize) -> Option<(u8, usize)> {
    loop {
        while *data.get(pos)? != 0xFF {
            pos += 1;
        }
        while *data.get(pos + 1)? == 0xFF {
            pos += 1;
        }
        let code = data[pos + 1];
        if code != 0 {
            return Some((code, pos));
        }
        pos += 2; // FF 00 outside entropy-coded data: garbage
    }
}

/// Reads the restart marker expected after a restart interval (libjpeg's
/// `read_restart_marker` with the default `jpeg_resync_to_restart`).
pub(super) fn read_restart_marker(
    br: &mut BitReader<'_>,
    next_rst: &mut u8,
) -> Result<(), JpegError> {
    if !br.stopped {
        let (code, pos) = find_marker(br.data, br.pos).ok_or(JpegError::Truncated)?;
        br.marker = code;
        br.pos = pos;
        br.stopped = true;
    }
    if br.eof {
        return Err(JpegError::Truncated);
    }
    let desired = *next_rst;
    *next_rst = (desired + 1) & 7;
    loop {
        let m = br.marker;
        let action = if m < 0xC0 {
            2 // invalid marker: skip it
        } else if !(0xD0..=0xD7).contains(&m) {
            3 // a valid non-restart marker: leave it for later
        } else {
            let n = m - 0xD0;
            if n == desired {
                1
            } else if n == (desired + 1) & 7 || n == (desired + 2) & 7 {
                3 // one of the next two expected restarts
            } else if n == (desired + 7) & 7 || n == (desired + 6) & 7 {
                2 // a prior restart, so advance
            } else {
                1 // too far away: accept it
            }
        };
        match action {
            1 => {
                br.pos += 2;
                br.stopped = false;
                return Ok(());
            }
            2 => {
                let (code, pos) = find_marker(br.data, br.pos + 2).ok_or(JpegError::Truncated)?;
                br.marker = code;
                br.pos = pos;
            }
            _ => return Ok(()),
        }
    }
}

/// Decodes the entropy-coded data of one scan starting at `pos` into the planes
/// of its components; returns the position where marker parsing resumes.
fn decode_scan(
    frame: &mut Frame,
    scan: &[ScanComp],
    data: &[u8],
    pos: usize,
    restart_interval: usize,
) -> Result<usize, JpegError> {
    if frame.precision == 8 {
        decode_scan_p::<2>(frame, scan, data, pos, restart_interval)
    } else {
        decode_scan_p::<1>(frame, scan, data, pos, restart_interval)
    }
}

fn decode_scan_p<const PASS1_BITS: u32>(
    frame: &mut Frame,
    scan: &[ScanComp],
    data: &[u8],
    pos: usize,
    restart_interval: usize,
) -> Result<usize, JpegError> {
    let range = Range::new(frame.precision);
    let mut br = BitReader::new(data, pos);
    let interleaved = scan.len() > 1;
    let (mcus_x, mcus_y) = if interleaved {
        (frame.mcux, frame.mcuy)
    } else {
        let c = &frame.comps[scan[0].ci];
        (c.dw.div_ceil(8), c.dh.div_ceil(8))
    };
    let mut restarts_to_go = restart_interval;
    let mut next_rst = 0u8;
    let mut insufficient = false;
    let mut preds = [0i32; 4];
    let mut blk = [0i32; 64];
    let center = range.center as u16;
    for my in 0..mcus_y {
        for mx in 0..mcus_x {
            if restart_interval != 0 {
                if restarts_to_go == 0 {
                    br.discard();
                    read_restart_marker(&mut br, &mut next_rst)?;
                    preds = [0; 4];
                    restarts_to_go = restart_interval;
                    if !br.stopped {
                        insufficient = false;
                    }
                }
                restarts_to_go -= 1;
            }
            for (si, sc) in scan.iter().enumerate() {
                let comp = &mut frame.comps[sc.ci];
                let (bh, bv) = if interleaved {
                    (comp.h, comp.v)
                } else {
                    (1, 1)
                };
                let stride = comp.stride;
                for v in 0..bv {
                    for h in 0..bh {
                        let bx = mx * bh + h;
                        let by = my * bv + v;
                        let off = by * 8 * stride + bx * 8;
                        let out = comp
                            .plane
                            .get_mut(off..off + 7 * stride + 8)
                            .ok_or_else(|| invalid("block outside the image"))?;
                        if insufficient {
                            // libjpeg leaves the MCU's coefficients zero: mid-grey.
                            for row in out.chunks_mut(stride) {
                                row[..8].fill(center);
                            }
                            continue;
                        }
                        blk.fill(0);
                        let has_ac = decode_block(
                            &mut br,
                            &sc.dc,
                            &sc.ac,
                            &mut preds[si],
                            &comp.quant,
                            &mut blk,
                        );
                        if has_ac {
                            idct_islow::<PASS1_BITS>(&blk, out, stride, range);
                        } else {
                            let value = dc_only_value::<PASS1_BITS>(blk[0], range);
                            for row in out.chunks_mut(stride) {
                                row[..8].fill(value);
                            }
                        }
                    }
                }
            }
            if !insufficient && br.overran() {
                if br.eof {
                    return Err(JpegError::Truncated);
                }
                insufficient = true;
            }
        }
    }
    Ok(br.pos)
}

// ---------------------------------------------------------------------------
// Upsampling (jdsample.c) and interleaving

fn upsample_interleave(frame: &Frame) -> Vec<u16> {
    let (w, h) = (frame.width, frame.height);
    let nc = frame.comps.len();
    let mut out = vec![0u16; w * h * nc];
    let mut row = vec![0u16; w + 2];
    for (c, comp) in frame.comps.iter().enumerate() {
        let hr = frame.hmax / comp.h;
        let vr = frame.vmax / comp.v;
        let stride = comp.stride;
        let plane = &comp.plane;
        let src_row = |y: usize| &plane[y * stride..y * stride + comp.dw];
        for y in 0..h {
            let line: &[u16] = match (hr, vr) {
                (1, 1) => src_row(y),
                (2, 1) if comp.dw > 2 => {
                    h2v1_fancy(src_row(y), &mut row);
                    &row
                }
                (2, 2) if comp.dw > 2 => {
                    let iy = y / 2;
                    let ny = if y % 2 == 0 {
                        iy.saturating_sub(1)
                    } else {
                        (iy + 1).min(comp.dh - 1)
                    };
                    h2v2_fancy(src_row(iy), src_row(ny), &mut row);
                    &row
                }
                _ => {
                    let src = src_row(y / vr);
                    for (x, o) in row[..w].iter_mut().enumerate() {
                        *o = src[x / hr];
                    }
                    &row
                }
            };
            let dst = &mut out[y * w * nc..(y + 1) * w * nc];
            if nc == 1 {
                dst.copy_from_slice(&line[..w]);
            } else {
                for (d, &s) in dst[c..].iter_mut().step_by(nc).zip(&line[..w]) {
                    *d = s;
                }
            }
        }
    }
    out
}

/// `h2v1_fancy_upsample` for one row (`input.len() > 2`); writes `2 * input.len()`
/// samples (only the first `width` are used).
fn h2v1_fancy(input: &[u16], out: &mut [u16]) {
    let n = input.len();
    let px = |i: usize| i32::from(input[i]);
    out[0] = input[0];
    out[1] = ((px(0) * 3 + px(1) + 2) >> 2) as u16;
    for i in 1..n - 1 {
        let v = px(i) * 3;
        out[2 * i] = ((v + px(i - 1) + 1) >> 2) as u16;
        out[2 * i + 1] = ((v + px(i + 1) + 2) >> 2) as u16;
    }
    let i = n - 1;
    out[2 * i] = ((px(i) * 3 + px(i - 1) + 1) >> 2) as u16;
    out[2 * i + 1] = input[i];
}

/// `h2v2_fancy_upsample` for one output row: `near` is the nearest input row,
/// `far` the next nearest (above for even output rows, below for odd ones).
fn h2v2_fancy(near: &[u16], far: &[u16], out: &mut [u16]) {
    let n = near.len();
    let colsum = |i: usize| i32::from(near[i]) * 3 + i32::from(far[i]);
    let mut this = colsum(0);
    let mut next = colsum(1);
    out[0] = ((this * 4 + 8) >> 4) as u16;
    out[1] = ((this * 3 + next + 7) >> 4) as u16;
    let mut last = this;
    this = next;
    for i in 1..n - 1 {
        next = colsum(i + 1);
        out[2 * i] = ((this * 3 + last + 8) >> 4) as u16;
        out[2 * i + 1] = ((this * 3 + next + 7) >> 4) as u16;
        last = this;
        this = next;
    }
    let i = n - 1;
    out[2 * i] = ((this * 3 + last + 8) >> 4) as u16;
    out[2 * i + 1] = ((this * 4 + 7) >> 4) as u16;
}

#[cfg(test)]
mod tests {
    //! Fixtures: tests/fixtures/jpeg12 (README.txt there says how they were made).
    //! Every `.raw` is dcmdjpeg's output (dcmtk 3.6.7's IJG libjpeg) for the `.jpg`;
    //! all of them are matched exactly (measured max difference: 0).
    use super::*;

    const LIMIT: usize = 64 << 20;

    fn raw(bytes: &[u8]) -> Vec<u16> {
        bytes
            .chunks_exact(2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
            .collect()
    }

    fn fnv1a64(samples: &[u16]) -> u64 {
        let mut h = 0xcbf2_9ce4_8422_2325u64;
        for s in samples {
            for b in s.to_le_bytes() {
                h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
            }
        }
        h
    }

    fn max_diff(a: &[u16], b: &[u16]) -> u16 {
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(b)
            .map(|(x, y)| x.abs_diff(*y))
            .max()
            .unwrap_or(0)
    }

    fn decode_exact(
        jpg: &[u8],
        reference: &[u8],
        size: (u16, u16),
        components: u8,
        precision: u8,
    ) -> Decoded {
        let d = decode(jpg, LIMIT).expect("decodes");
        assert_eq!((d.width, d.height), size);
        assert_eq!(d.components, components);
        assert_eq!(d.precision, precision);
        assert_eq!(d.component_ids.len(), usize::from(components));
        let want = raw(reference);
        assert_eq!(d.samples.len(), want.len());
        assert_eq!(max_diff(&d.samples, &want), 0, "differs from dcmdjpeg");
        assert!(d.samples == want);
        d
    }

    const MONO12_DCMTK: &[u8] = include_bytes!("../../tests/fixtures/jpeg12/mono12_dcmtk.jpg");
    const MONO12_RST: &[u8] = include_bytes!("../../tests/fixtures/jpeg12/mono12_rst.jpg");
    const YCC12_2SCANS: &[u8] =
        include_bytes!("../../tests/fixtures/jpeg12/ycc12_420_2scans_rst.jpg");
    const YCC8_422: &[u8] = include_bytes!("../../tests/fixtures/jpeg12/ycc8_422_dcmtk.jpg");
    const YCC8_H4V1: &[u8] = include_bytes!("../../tests/fixtures/jpeg12/ycc8_h4v1_3scans_rst.jpg");
    const JPG_EXTENDED: &[u8] = include_bytes!("../../tests/fixtures/jpeg12/JPGExtended.jpg");

    #[test]
    fn mono12_from_dcmcjpeg_matches_dcmdjpeg() {
        let d = decode_exact(
            MONO12_DCMTK,
            include_bytes!("../../tests/fixtures/jpeg12/mono12_dcmtk.raw"),
            (67, 45),
            1,
            12,
        );
        assert!(d.jfif);
        assert_eq!(d.adobe_transform, None);
        assert!(d.samples.iter().all(|&s| s <= 4095));
        assert!(d.samples.iter().any(|&s| s > 3000) && d.samples.iter().any(|&s| s < 100));
    }

    #[test]
    fn mono12_restart_intervals_and_fill_bytes() {
        decode_exact(
            MONO12_RST,
            include_bytes!("../../tests/fixtures/jpeg12/mono12_rst.raw"),
            (67, 45),
            1,
            12,
        );
    }

    #[test]
    fn corrupt_restart_interval_recovers_like_libjpeg() {
        // A premature RST marker inside an interval: libjpeg feeds zeros, greys the
        // rest of the interval and resynchronises on the following markers.
        let d = decode_exact(
            include_bytes!("../../tests/fixtures/jpeg12/mono12_rst_corrupt.jpg"),
            include_bytes!("../../tests/fixtures/jpeg12/mono12_rst_corrupt.raw"),
            (67, 45),
            1,
            12,
        );
        assert!(d.samples.contains(&2048));
    }

    #[test]
    fn ycc12_420_two_scans_with_restarts() {
        let d = decode_exact(
            YCC12_2SCANS,
            include_bytes!("../../tests/fixtures/jpeg12/ycc12_420_2scans_rst.raw"),
            (67, 45),
            3,
            12,
        );
        assert_eq!(d.component_ids, vec![1, 2, 3]);
    }

    #[test]
    fn ycc8_422_fancy_h2v1_upsampling() {
        let d = decode_exact(
            YCC8_422,
            include_bytes!("../../tests/fixtures/jpeg12/ycc8_422_dcmtk.raw"),
            (67, 45),
            3,
            8,
        );
        assert!(d.jfif);
        // Converting our YCbCr with libjpeg's integer tables (jdcolor.c) gives
        // dcmdjpeg's RGB output exactly (measured max difference 0; 2 allowed).
        let rgb = ycc_to_rgb8(&d.samples);
        let want = raw(include_bytes!(
            "../../tests/fixtures/jpeg12/ycc8_422_dcmtk_rgb.raw"
        ));
        assert!(max_diff(&rgb, &want) <= 2);
        assert_eq!(max_diff(&rgb, &want), 0);
    }

    #[test]
    fn ycc8_420_fancy_h2v2_upsampling() {
        decode_exact(
            include_bytes!("../../tests/fixtures/jpeg12/ycc8_420_dcmtk.jpg"),
            include_bytes!("../../tests/fixtures/jpeg12/ycc8_420_dcmtk.raw"),
            (67, 45),
            3,
            8,
        );
    }

    #[test]
    fn ycc8_h4v1_one_scan_per_component_adobe() {
        let d = decode_exact(
            YCC8_H4V1,
            include_bytes!("../../tests/fixtures/jpeg12/ycc8_h4v1_3scans_rst.raw"),
            (67, 45),
            3,
            8,
        );
        assert_eq!(d.adobe_transform, Some(1));
        assert!(!d.jfif);
    }

    #[test]
    fn pydicom_jpg_extended_and_jpeg_lossy() {
        // References: dcmdjpeg on pydicom's JPGExtended.dcm / JPEG-lossy.dcm (the
        // latter's SOS says Se=0, which libjpeg ignores); 256x1024 12-bit samples,
        // hashed since they are 512 KiB.
        for jpg in [
            JPG_EXTENDED,
            include_bytes!("../../tests/fixtures/jpeg12/JPEG-lossy.jpg").as_slice(),
        ] {
            let d = decode(jpg, LIMIT).unwrap();
            assert_eq!(
                (d.width, d.height, d.components, d.precision),
                (256, 1024, 1, 12)
            );
            assert_eq!(
                d.samples.iter().map(|&s| u64::from(s)).sum::<u64>(),
                3_767_007
            );
            assert_eq!(d.samples.iter().max(), Some(&264));
            assert_eq!(fnv1a64(&d.samples), 0x55ea_d43f_2558_5a5c);
        }
    }

    /// libjpeg's `ycc_rgb_convert` (jdcolor.c) for 8-bit samples.
    fn ycc_to_rgb8(ycc: &[u16]) -> Vec<u16> {
        const SCALEBITS: i32 = 16;
        const ONE_HALF: i32 = 1 << (SCALEBITS - 1);
        let fix = |x: f64| (x * f64::from(1 << SCALEBITS) + 0.5) as i32;
        let clamp = |v: i32| v.clamp(0, 255) as u16;
        let mut out = Vec::with_capacity(ycc.len());
        for p in ycc.chunks_exact(3) {
            let (y, cb, cr) = (
                i32::from(p[0]),
                i32::from(p[1]) - 128,
                i32::from(p[2]) - 128,
            );
            let cr_r = (fix(1.40200) * cr + ONE_HALF) >> SCALEBITS;
            let cb_b = (fix(1.77200) * cb + ONE_HALF) >> SCALEBITS;
            let g = (-fix(0.34414) * cb + ONE_HALF + -fix(0.71414) * cr) >> SCALEBITS;
            out.extend([clamp(y + cr_r), clamp(y + g), clamp(y + cb_b)]);
        }
        out
    }

    #[test]
    fn truncated_data_is_an_error_never_a_panic() {
        for jpg in [MONO12_DCMTK, MONO12_RST, YCC12_2SCANS, YCC8_422, YCC8_H4V1] {
            let full = decode(jpg, LIMIT).unwrap();
            let sos = jpg.windows(2).position(|w| w == [0xFF, 0xDA]).unwrap();
            for cut in 0..jpg.len() {
                match decode(&jpg[..cut], LIMIT) {
                    // Only padding, a stuffed zero or the EOI were cut off: every
                    // needed bit is there.
                    Ok(d) => assert!(cut + 4 >= jpg.len() && d == full, "prefix of {cut} bytes"),
                    Err(e) => {
                        if cut > sos + 40 {
                            // Inside entropy-coded data.
                            assert!(matches!(e, JpegError::Truncated), "{cut}: {e:?}");
                        }
                    }
                }
            }
        }
        assert_eq!(
            decode(&MONO12_DCMTK[..MONO12_DCMTK.len() / 2], LIMIT)
                .unwrap_err()
                .to_string(),
            "truncated JPEG data"
        );
        // Only the EOI missing: every sample is there, so that is accepted.
        let d = decode(&MONO12_DCMTK[..MONO12_DCMTK.len() - 2], LIMIT).unwrap();
        assert_eq!(
            d.samples,
            raw(include_bytes!(
                "../../tests/fixtures/jpeg12/mono12_dcmtk.raw"
            ))
        );
    }

    #[test]
    fn corrupted_data_never_panics() {
        let mut seed = 0x2545_F491_4F6C_DD1Du64;
        let mut rnd = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let inputs = [
            MONO12_DCMTK,
            MONO12_RST,
            YCC12_2SCANS,
            YCC8_422,
            YCC8_H4V1,
            JPG_EXTENDED,
        ];
        let mut decoded = 0;
        for i in 0..3000 {
            let mut d = inputs[i % inputs.len()].to_vec();
            for _ in 0..1 + rnd() % 3 {
                let p = (rnd() % d.len() as u64) as usize;
                match rnd() % 4 {
                    0 => d[p] ^= 1 << (rnd() % 8),
                    1 => d[p] = rnd() as u8,
                    2 => d[p] = 0xFF,
                    _ => d[p.min(200)] = rnd() as u8, // headers
                }
            }
            if let Ok(out) = decode(&d, LIMIT) {
                let n =
                    usize::from(out.width) * usize::from(out.height) * usize::from(out.components);
                assert_eq!(out.samples.len(), n);
                decoded += 1;
            }
        }
        assert!(
            decoded > 100,
            "most single corruptions of entropy data still decode"
        );
    }

    fn header(sof: u8, precision: u8, height: u16, width: u16, nc: u8) -> Vec<u8> {
        let mut v = vec![0xFF, 0xD8, 0xFF, sof];
        v.extend_from_slice(&(8 + 3 * u16::from(nc)).to_be_bytes());
        v.push(precision);
        v.extend_from_slice(&height.to_be_bytes());
        v.extend_from_slice(&width.to_be_bytes());
        v.push(nc);
        for c in 0..nc {
            v.extend_from_slice(&[c + 1, 0x11, 0]);
        }
        v
    }

    #[test]
    fn bogus_huge_dimensions_hit_the_limit_before_allocating() {
        // 65535 x 65535 x 3 components would be 24 GiB of output: the SOF alone
        // (no tables, no data) must be refused by the limit check.
        let e = decode(&header(0xC1, 12, 65535, 65535, 3), 512 << 20).unwrap_err();
        assert!(matches!(
            e,
            JpegError::TooLarge {
                width: 65535,
                height: 65535,
                components: 3,
                ..
            }
        ));
        assert_eq!(
            e.to_string(),
            "image of 65535x65535 with 3 components exceeds the limit of 536870912 bytes"
        );
        // The limit is inclusive of exactly width*height*components*2.
        assert!(matches!(
            decode(&header(0xC0, 8, 10, 10, 1), 199),
            Err(JpegError::TooLarge { .. })
        ));
        assert!(matches!(
            decode(&header(0xC0, 8, 10, 10, 1), 200),
            Err(JpegError::Truncated)
        ));
        // A real image one byte over the limit.
        let e = decode(MONO12_DCMTK, 67 * 45 * 2 - 1).unwrap_err();
        assert!(matches!(
            e,
            JpegError::TooLarge {
                width: 67,
                height: 45,
                components: 1,
                ..
            }
        ));
        assert!(decode(MONO12_DCMTK, 67 * 45 * 2).is_ok());
    }

    #[test]
    fn unsupported_processes_and_precisions() {
        let e = decode(&header(0xC2, 8, 8, 8, 1), LIMIT).unwrap_err();
        assert!(matches!(e, JpegError::UnsupportedProcess(_)));
        assert_eq!(
            e.to_string(),
            "unsupported JPEG process: SOF2 (progressive)"
        );
        assert_eq!(
            decode(&header(0xC3, 16, 8, 8, 1), LIMIT)
                .unwrap_err()
                .to_string(),
            "unsupported JPEG process: SOF3 (lossless)"
        );
        assert_eq!(
            decode(&header(0xC9, 8, 8, 8, 1), LIMIT)
                .unwrap_err()
                .to_string(),
            "arithmetic coding is not supported"
        );
        assert_eq!(
            decode(&header(0xC1, 16, 8, 8, 1), LIMIT)
                .unwrap_err()
                .to_string(),
            "sample precision 16 is not supported for DCT"
        );
        assert!(matches!(
            decode(&header(0xC1, 12, 0, 8, 1), LIMIT),
            Err(JpegError::DnlNotSupported)
        ));
        assert!(matches!(
            decode(b"\x00\x01\x02", LIMIT),
            Err(JpegError::NotJpeg(0, 1))
        ));
        assert!(matches!(decode(b"\xFF", LIMIT), Err(JpegError::Truncated)));
    }

    /// Removes the first marker segment with the given code.
    fn without_segment(jpg: &[u8], marker: u8) -> Vec<u8> {
        let mut i = 2;
        loop {
            let len = usize::from(u16::from_be_bytes([jpg[i + 2], jpg[i + 3]]));
            if jpg[i + 1] == marker {
                return [&jpg[..i], &jpg[i + 2 + len..]].concat();
            }
            i += 2 + len;
        }
    }

    #[test]
    fn missing_tables_are_reported() {
        let e = decode(&without_segment(MONO12_DCMTK, 0xC4), LIMIT).unwrap_err();
        assert_eq!(e.to_string(), "missing Huffman table DC 0");
        let e = decode(&without_segment(MONO12_DCMTK, 0xDB), LIMIT).unwrap_err();
        assert_eq!(e.to_string(), "missing quantization table 0");
    }

    #[test]
    fn idct_matches_a_float_reference_closely() {
        // Sanity check of the islow IDCT against a float IDCT on pseudo-random
        // coefficients (libjpeg's islow is within 1 of the exact value here).
        let mut seed = 12345u64;
        let mut rnd = move || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) as i32
        };
        for precision in [8u8, 12] {
            let range = Range::new(precision);
            for _ in 0..200 {
                let mut blk = [0i32; 64];
                for (k, c) in blk.iter_mut().enumerate() {
                    let amp = if k == 0 {
                        1 << (precision + 1)
                    } else {
                        1 << (precision - 2)
                    };
                    *c = rnd() % amp / (1 + k as i32 / 8);
                }
                let mut out = [0u16; 64];
                if precision == 8 {
                    idct_islow::<2>(&blk, &mut out, 8, range);
                } else {
                    idct_islow::<1>(&blk, &mut out, 8, range);
                }
                for y in 0..8 {
                    for x in 0..8 {
                        let mut s = 0.0;
                        for v in 0..8 {
                            for u in 0..8 {
                                let cu = if u == 0 {
                                    std::f64::consts::FRAC_1_SQRT_2
                                } else {
                                    1.0
                                };
                                let cv = if v == 0 {
                                    std::f64::consts::FRAC_1_SQRT_2
                                } else {
                                    1.0
                                };
                                s += cu
                                    * cv
                                    * f64::from(blk[v * 8 + u])
                                    * ((2 * x + 1) as f64 * u as f64 * std::f64::consts::PI / 16.0)
                                        .cos()
                                    * ((2 * y + 1) as f64 * v as f64 * std::f64::consts::PI / 16.0)
                                        .cos();
                            }
                        }
                        let exact = (s / 4.0 + f64::from(range.center))
                            .round()
                            .clamp(0.0, f64::from(range.max));
                        let got = f64::from(out[y * 8 + x]);
                        assert!(
                            (got - exact).abs() <= 1.0,
                            "p{precision} ({x},{y}): {got} vs {exact}"
                        );
                    }
                }
            }
        }
    }
}
