//! Transfer syntax negotiation and decompression.
//!
//! [`choose`] applies dcm4chee's rule to a destination's `transfer-syntax`
//! list; [`transcode`] turns a stored file into Explicit or Implicit VR
//! Little Endian; [`Transcoder`] runs that off the async runtime with
//! bounds on parallelism, on memory per object, and on the memory that
//! converted objects hold until the request carrying them ends
//! ([`Transcoder::reserve`], sized by [`Transcoder::plan`]).
//!
//! Before any pixel is decoded, the decoded size is computed from the
//! attributes with checked arithmetic and held to the limit, and every
//! frame's codestream header must agree with those attributes
//! ([`codestream`]): decoders size their buffers from the codestream, not
//! from Rows and Columns.
//!
//! Only what decompression must change is changed: the pixel data, the
//! transfer syntax in the file meta, Photometric Interpretation (YBR
//! becomes RGB, because the decoders give RGB) and Planar Configuration
//! (samples come out interleaved). Every other element is copied as
//! encoded (see `encode`).

pub mod codestream;
pub(crate) mod dataset;
mod encode;
mod jpeg;
mod jpeg12;
mod jpegll;
mod pixels;
mod rle;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use dicom_core::Tag;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use dataset::{
    DatasetError, Element, Encoding, PIXEL_DATA, TS_DEFLATED, TS_EXPLICIT_BE, TS_EXPLICIT_LE,
    TS_IMPLICIT_LE, elements, fragments, peek_tag, read_element, split,
};
use encode::{Changes, PixelValue, write_file};
pub use pixels::ImageInfo;

use crate::transfer_syntax::transfer_syntax_name;

/// An uncompressed transfer syntax to send in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
}

impl Target {
    pub fn uid(self) -> &'static str {
        match self {
            Target::ExplicitVRLittleEndian => TS_EXPLICIT_LE,
            Target::ImplicitVRLittleEndian => TS_IMPLICIT_LE,
        }
    }

    fn encoding(self) -> Encoding {
        match self {
            Target::ExplicitVRLittleEndian => Encoding::ExplicitLE,
            Target::ImplicitVRLittleEndian => Encoding::ImplicitLE,
        }
    }
}

/// dcm4chee's rule: as stored when the list is empty (which `*` also
/// gives) or holds the stored syntax; else Explicit VR Little Endian if it
/// is listed, else Implicit VR Little Endian, which every DICOM
/// application must accept. `None` means send as stored.
pub fn choose(stored: &str, accepted: &[String]) -> Option<Target> {
    if accepted.is_empty() || accepted.iter().any(|t| t == stored) {
        return None;
    }
    if accepted.iter().any(|t| t == TS_EXPLICIT_LE) {
        Some(Target::ExplicitVRLittleEndian)
    } else {
        Some(Target::ImplicitVRLittleEndian)
    }
}

/// Why an object could not be transcoded: names the stored syntax and
/// the cause.
#[derive(Debug, thiserror::Error)]
#[error("cannot convert {name} ({uid}) to {target}: {cause}")]
pub struct TranscodeError {
    pub uid: String,
    pub name: String,
    pub target: &'static str,
    /// Boxed: the error travels in every result of the converter.
    #[source]
    pub cause: Box<Cause>,
}

impl TranscodeError {
    /// Reading the stored file met a shortage of descriptors or memory:
    /// the same conversion succeeds later, unlike every other cause.
    pub fn shortage(&self) -> Option<crate::shortage::Shortage> {
        match &*self.cause {
            Cause::Read { shortage, .. } => *shortage,
            _ => None,
        }
    }
}

/// The step of a conversion that failed.
#[derive(Debug, thiserror::Error)]
pub enum Cause {
    /// The file or its data set cannot be walked, or its pixel data not
    /// decoded.
    #[error(transparent)]
    Dataset(#[from] DatasetError),
    /// The pixel data is refused before decoding.
    #[error(transparent)]
    Pixels(#[from] pixels::PixelError),
    #[error("pixel data of defined length {0} under a compressed transfer syntax")]
    DefinedLength(u32),
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
        shortage: Option<crate::shortage::Shortage>,
    },
    #[error("the file is {len} bytes, over the limit of {limit} for decompression")]
    FileTooLarge { len: u64, limit: u64 },
    #[error("decoder crashed: {0}")]
    Crashed(#[source] tokio::task::JoinError),
    #[error("the converter is shut down")]
    Closed,
}

/// Limits on one object.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The most bytes one object may take: its file, and separately its
    /// decoded pixel data or inflated data set. Times the decode jobs, it
    /// is also the budget of memory converted objects hold (see
    /// [`Transcoder`]).
    pub max_object_bytes: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_object_bytes: 1 << 30,
        }
    }
}

/// The attributes read from the top level of a data set.
struct Scan {
    info: ImageInfo,
    /// Number of Frames as written, checked where frames are decoded.
    frames_text: Option<String>,
    planar_present: bool,
    pixel: Option<Element>,
    present: Vec<Tag>,
}

fn us(ds: &[u8], e: &Element, enc: Encoding) -> Option<u16> {
    let b: [u8; 2] = ds.get(e.value.start..e.value.start + 2)?.try_into().ok()?;
    Some(if enc == Encoding::ExplicitBE {
        u16::from_be_bytes(b)
    } else {
        u16::from_le_bytes(b)
    })
}

impl Scan {
    fn new() -> Scan {
        Scan {
            info: ImageInfo {
                samples: 1,
                frames: 1,
                ..Default::default()
            },
            frames_text: None,
            planar_present: false,
            pixel: None,
            present: Vec::new(),
        }
    }

    /// Notes a top-level element that describes the pixel data.
    fn note(&mut self, ds: &[u8], e: &Element, enc: Encoding) {
        let v = || us(ds, e, enc).unwrap_or(0);
        match (e.tag.0, e.tag.1) {
            (0x0028, 0x0002) => self.info.samples = v(),
            (0x0028, 0x0004) => self.info.photometric = dataset::text(&ds[e.value.clone()]),
            (0x0028, 0x0006) => self.planar_present = true,
            (0x0028, 0x0008) => {
                let t = dataset::text(&ds[e.value.clone()]);
                self.info.frames = pixels::number_of_frames(Some(&t)).unwrap_or(1);
                self.frames_text = Some(t);
            }
            (0x0028, 0x0010) => self.info.rows = v(),
            (0x0028, 0x0011) => self.info.cols = v(),
            (0x0028, 0x0100) => self.info.bits_allocated = v(),
            (0x0028, 0x0101) => self.info.bits_stored = v(),
            _ => {}
        }
    }
}

fn scan(ds: &[u8], enc: Encoding) -> Result<Scan, DatasetError> {
    let mut s = Scan::new();
    for e in elements(ds, 0..ds.len(), enc) {
        let e = e?;
        s.note(ds, &e, enc);
        if e.tag == PIXEL_DATA {
            s.pixel = Some(e.clone());
        }
        if e.tag.0 == 0x0028 || e.tag.0 == 0x7FE0 {
            s.present.push(e.tag);
        }
    }
    Ok(s)
}

/// A converted object.
#[derive(Debug)]
pub struct Transcoded {
    /// The Part 10 file in the target syntax.
    pub data: Vec<u8>,
    /// Bytes of pixel data decompressed (0 when none was compressed).
    pub decoded_pixel_bytes: u64,
}

/// Converts a Part 10 file to `target`. Pure and blocking: run it through
/// a [`Transcoder`] from async code.
pub fn transcode(
    file: &[u8],
    target: Target,
    limits: Limits,
) -> Result<Transcoded, TranscodeError> {
    let max = usize::try_from(limits.max_object_bytes).unwrap_or(usize::MAX);
    let mut uid = String::from("(no transfer syntax)");
    let fail = |uid: &str, cause: Cause| TranscodeError {
        uid: uid.to_string(),
        name: transfer_syntax_name(uid).to_string(),
        target: transfer_syntax_name(target.uid()),
        cause: Box::new(cause),
    };
    let parts = split(file, max).map_err(|e| fail(&uid, e.into()))?;
    uid.clone_from(&parts.transfer_syntax);
    let ds = &parts.dataset[..];
    let sc = scan(ds, parts.encoding).map_err(|e| fail(&uid, e.into()))?;
    let native_source =
        [TS_IMPLICIT_LE, TS_EXPLICIT_LE, TS_EXPLICIT_BE, TS_DEFLATED].contains(&uid.as_str());
    let mut changes = Changes::default();
    let decoded;
    let mut pixel_data = None;
    // Compressed pixel data is decoded straight into the output file.
    let mut decode_fn;
    let mut decoded_len = 0u64;
    match &sc.pixel {
        Some(px) if !native_source && px.undefined() => {
            let info = &sc.info;
            // Every declared number is checked before anything is sized
            // by it: the frame count, the decoded size (checked
            // arithmetic, within the limit), the frames against the
            // fragments, then each frame's codestream header against the
            // attributes. Only then is the output allocated and decoded.
            pixels::number_of_frames(sc.frames_text.as_deref())
                .map_err(|e| fail(&uid, e.into()))?;
            decoded_len = pixels::checked_len(info, max).map_err(|e| fail(&uid, e.into()))?;
            let (bot, ranges) =
                fragments(ds, px.value.clone()).map_err(|e| fail(&uid, e.into()))?;
            let frags: Vec<&[u8]> = ranges.iter().map(|r| &ds[r.clone()]).collect();
            let fam = pixels::family(&uid);
            let frames =
                pixels::frames(info, fam, &bot, &frags).map_err(|e| fail(&uid, e.into()))?;
            pixels::check_headers(&uid, info, &frames).map_err(|e| fail(&uid, e.into()))?;
            let ts = uid.as_str();
            decode_fn = move |out: &mut Vec<u8>| pixels::decode_into(ts, info, &frames, max, out);
            let vr = if info.bits_allocated > 8 {
                *b"OW"
            } else {
                *b"OB"
            };
            pixel_data = Some((vr, PixelValue::Decode(decoded_len, &mut decode_fn)));
            if info.samples > 1 {
                if info.photometric.starts_with("YBR") {
                    changes.set_text(Tag(0x0028, 0x0004), b"CS", "RGB");
                }
                if sc.planar_present {
                    changes.set_us(Tag(0x0028, 0x0006), 0);
                }
            }
            // The group length would be stale, and the total length
            // describes the fragments that are gone.
            changes.remove.extend([
                Tag(0x0028, 0x0000),
                Tag(0x7FE0, 0x0000),
                Tag(0x7FE0, 0x0003),
            ]);
        }
        Some(px) if !native_source => {
            return Err(fail(&uid, Cause::DefinedLength(px.len)));
        }
        Some(px) if parts.encoding == Encoding::ExplicitBE => {
            // Big endian OW pixel data is swapped in 16-bit words, and
            // 32-bit samples (RT dose) as 4-byte words; OB is bytes.
            let width = if px.vr == Some(*b"OB") {
                1
            } else {
                usize::from(sc.info.bits_allocated / 8).max(2)
            };
            let mut v = ds[px.value.clone()].to_vec();
            if width > 1 {
                v.chunks_exact_mut(width).for_each(<[u8]>::reverse);
            }
            decoded = v;
            let vr = if sc.info.bits_allocated > 8 {
                *b"OW"
            } else {
                *b"OB"
            };
            pixel_data = Some((vr, PixelValue::Bytes(&decoded[..])));
        }
        Some(px)
            if parts.encoding == Encoding::ImplicitLE
                && target == Target::ExplicitVRLittleEndian =>
        {
            // The dictionary says OB or OW; Bits Allocated decides.
            let vr = if sc.info.bits_allocated > 8 {
                *b"OW"
            } else {
                *b"OB"
            };
            pixel_data = Some((vr, PixelValue::Bytes(&ds[px.value.clone()])));
        }
        _ => {}
    }
    let new_pixels = match &pixel_data {
        Some((_, PixelValue::Bytes(p))) => p.len() as u64,
        Some((_, PixelValue::Decode(len, _))) => *len,
        None => 0,
    };
    let mut out = Vec::with_capacity(file.len() + new_pixels as usize);
    write_file(
        &parts,
        target.uid(),
        target.encoding(),
        &changes,
        pixel_data,
        &mut out,
    )
    .map_err(|e| fail(&uid, e.into()))?;
    let decoded_pixel_bytes = if native_source { 0 } else { decoded_len };
    Ok(Transcoded {
        data: out,
        decoded_pixel_bytes,
    })
}

/// How much of a file [`Transcoder::plan`] reads to find the attributes
/// that give its decoded size. They are in group 0028, early in every
/// image; a file whose attributes lie further is planned for the worst.
pub const PLAN_PREFIX_BYTES: u64 = 64 << 10;

/// Reservations count in units of this many bytes, so that the `u32`
/// permit count of one reservation covers 4 TiB.
const RESERVATION_UNIT: u64 = 1 << 10;

/// What converting one object will take, known before it is decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// The expected size of the converted object (a decompressed object
    /// counts its decoded pixels): what it counts against a request's
    /// byte limit.
    pub outgoing_bytes: u64,
    /// The memory its conversion holds, an upper bound: the file as read
    /// and the converted object, which stays until the request carrying
    /// it ends.
    pub reserve_bytes: u64,
}

/// Plans the conversion of a file of `file_len` bytes from its first
/// bytes (`prefix`, all of them for a small file). Pure: it reads element
/// headers and never allocates from what they declare.
pub fn plan_from_prefix(prefix: &[u8], file_len: u64, limits: Limits) -> Plan {
    let max = limits.max_object_bytes;
    // Attributes not found: a deflated data set may inflate, and pixel
    // data decode, up to the limit each.
    let worst = Plan {
        outgoing_bytes: file_len,
        reserve_bytes: file_len
            .saturating_mul(2)
            .saturating_add(max.saturating_mul(2)),
    };
    // An inflate limit of 0: a deflated data set is not inflated here
    // (the prefix would not inflate anyway), it is planned for the worst.
    let Ok(parts) = split(prefix, 0) else {
        return worst;
    };
    let native =
        [TS_IMPLICIT_LE, TS_EXPLICIT_LE, TS_EXPLICIT_BE].contains(&parts.transfer_syntax.as_str());
    if native {
        // Nothing is decoded: the object is re-encoded as it is (big
        // endian pixel data is copied once more while it is swapped).
        return Plan {
            outgoing_bytes: file_len,
            reserve_bytes: file_len.saturating_mul(3),
        };
    }
    let ds = &parts.dataset[..];
    let base = (prefix.len() - ds.len()) as u64;
    let mut sc = Scan::new();
    let mut pos = 0;
    let mut pixel_at = None;
    // Group 0028 precedes everything after it: once a later element is
    // seen (or the whole file was read), the attributes are known.
    let mut known = false;
    while pos < ds.len() {
        let Some(tag) = peek_tag(ds, pos, parts.encoding) else {
            break;
        };
        if tag.0 > 0x0028 {
            known = true;
        }
        if tag == PIXEL_DATA {
            pixel_at = Some(base + pos as u64);
            break;
        }
        match read_element(ds, pos, ds.len(), parts.encoding, 0) {
            Ok(e) => {
                sc.note(ds, &e, parts.encoding);
                pos = e.end;
            }
            Err(_) => break,
        }
    }
    if pos >= ds.len() && prefix.len() as u64 >= file_len {
        known = true;
    }
    if !known {
        return worst;
    }
    let Ok(decoded) = pixels::checked_len(&sc.info, usize::try_from(max).unwrap_or(usize::MAX))
    else {
        // No image, or one over the limit: the conversion copies the
        // file or fails before decoding.
        return Plan {
            outgoing_bytes: file_len,
            reserve_bytes: file_len.saturating_mul(2),
        };
    };
    Plan {
        // The elements before the pixel data, its new header (12 bytes)
        // and the decoded pixels; without the position, the whole file.
        outgoing_bytes: pixel_at.map_or(file_len, |at| at + 12) + decoded,
        reserve_bytes: file_len.saturating_mul(2).saturating_add(decoded),
    }
}

/// Memory held for converted objects; released when dropped.
#[derive(Debug)]
pub struct Reservation {
    _permit: Option<OwnedSemaphorePermit>,
    bytes: u64,
}

impl Reservation {
    /// Bytes this reservation holds (after clamping to the capacity).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

/// Runs transcodes on the blocking pool: at most `parallel` at once, each
/// bounded by [`Limits`]. Cloning shares the bounds.
///
/// Converted objects live in memory from their decode until the request
/// carrying them ends, and a request waits on its destination. So besides
/// the decode slots there is a budget for what converted objects hold:
/// `parallel` x the per-object limit (`--transcode-max-mib` x
/// `--transcode-jobs`). A caller reserves, with [`Transcoder::reserve`],
/// what [`Transcoder::plan`] says its objects need, all at once and
/// before decoding any of them, and keeps the reservation until their
/// request has ended. Reserving all at once is what keeps this free of
/// deadlock: nobody waits for memory while holding some, and a decode
/// slot is only taken by a caller who holds its memory already, so slot
/// holders never wait. A reservation larger than the whole budget is
/// clamped to it: such an object goes alone.
#[derive(Clone)]
pub struct Transcoder {
    permits: Arc<Semaphore>,
    /// The budget for converted objects, in [`RESERVATION_UNIT`]s.
    memory: Arc<Semaphore>,
    memory_units: u32,
    limits: Limits,
    /// Counts decoded objects and decode time by stored syntax.
    metrics: Option<Arc<crate::metrics::Metrics>>,
}

impl Transcoder {
    pub fn new(parallel: usize, limits: Limits) -> Transcoder {
        let parallel = parallel.max(1);
        let budget = limits
            .max_object_bytes
            .saturating_mul(parallel as u64)
            .div_ceil(RESERVATION_UNIT);
        let memory_units = budget
            .min(u64::from(u32::MAX))
            .min(Semaphore::MAX_PERMITS as u64)
            .max(1) as u32;
        Transcoder {
            permits: Arc::new(Semaphore::new(parallel)),
            memory: Arc::new(Semaphore::new(memory_units as usize)),
            memory_units,
            limits,
            metrics: None,
        }
    }

    /// The most that converted objects may hold at once, in bytes.
    pub fn memory_capacity(&self) -> u64 {
        u64::from(self.memory_units) * RESERVATION_UNIT
    }

    /// What is left of [`Transcoder::memory_capacity`] right now.
    pub fn memory_available(&self) -> u64 {
        self.memory.available_permits() as u64 * RESERVATION_UNIT
    }

    /// Waits until `bytes` (clamped to the capacity) are free and holds
    /// them until the reservation is dropped. Reserve everything a request
    /// needs in one call (see [`Transcoder`]).
    pub async fn reserve(&self, bytes: u64) -> Reservation {
        let units = bytes
            .div_ceil(RESERVATION_UNIT)
            .min(u64::from(self.memory_units)) as u32;
        if units == 0 {
            return Reservation {
                _permit: None,
                bytes: 0,
            };
        }
        // The semaphore is never closed.
        let permit = self.memory.clone().acquire_many_owned(units).await.ok();
        Reservation {
            _permit: permit,
            bytes: u64::from(units) * RESERVATION_UNIT,
        }
    }

    /// What converting the file at `path` (`file_len` bytes as indexed)
    /// will take, from its first [`PLAN_PREFIX_BYTES`]. A file that cannot
    /// be read is planned at its size: its conversion fails on the same
    /// read.
    pub async fn plan(&self, path: &Path, file_len: u64) -> Plan {
        use tokio::io::AsyncReadExt;
        let mut buf = Vec::with_capacity(file_len.min(PLAN_PREFIX_BYTES) as usize);
        let read = async {
            let f = tokio::fs::File::open(path).await?;
            f.take(PLAN_PREFIX_BYTES).read_to_end(&mut buf).await
        };
        match read.await {
            Ok(_) => plan_from_prefix(&buf, file_len, self.limits),
            Err(_) => Plan {
                outgoing_bytes: file_len,
                reserve_bytes: file_len,
            },
        }
    }

    /// Counts every object into `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<crate::metrics::Metrics>) -> Transcoder {
        self.metrics = Some(metrics);
        self
    }

    /// One object per core: decoding is CPU-bound, and each object may
    /// hold up to its limit in memory.
    pub fn per_core(limits: Limits) -> Transcoder {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Transcoder::new(cores, limits)
    }

    /// Reads `path` and converts it to `target`. `stored_ts` names the
    /// syntax in errors raised before the file is read.
    pub async fn transcode_file(
        &self,
        path: PathBuf,
        stored_ts: &str,
        target: Target,
    ) -> Result<Transcoded, TranscodeError> {
        let fail = |cause: Cause| TranscodeError {
            uid: stored_ts.to_string(),
            name: transfer_syntax_name(stored_ts).to_string(),
            target: transfer_syntax_name(target.uid()),
            cause: Box::new(cause),
        };
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| fail(Cause::Closed))?;
        let limits = self.limits;
        let (metrics, ts) = (self.metrics.clone(), stored_ts.to_string());
        tokio::task::spawn_blocking(move || {
            let started = std::time::Instant::now();
            let r = (|| {
                use std::io::Read;
                // An I/O error keeps its shortage (EMFILE, ENOMEM...),
                // which makes the instance worth retrying.
                let read = |source: std::io::Error| Cause::Read {
                    path: path.clone(),
                    shortage: crate::shortage::Shortage::of_io(&source),
                    source,
                };
                let mut f = std::fs::File::open(&path).map_err(read)?;
                let len = f.metadata().map_err(read)?.len();
                if len > limits.max_object_bytes {
                    return Err(Cause::FileTooLarge {
                        len,
                        limit: limits.max_object_bytes,
                    });
                }
                let mut buf = Vec::with_capacity(len as usize);
                f.read_to_end(&mut buf).map_err(read)?;
                Ok(transcode(&buf, target, limits))
            })();
            if let Some(m) = metrics {
                m.transcoded(&ts, matches!(r, Ok(Ok(_))), started.elapsed());
            }
            r
        })
        .await
        .map_err(|e| fail(Cause::Crashed(e)))?
        .map_err(fail)?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn dcm4chee_selection_rule() {
        let jpeg = "1.2.840.10008.1.2.4.50";
        assert_eq!(choose(jpeg, &[]), None);
        assert_eq!(choose(jpeg, &list(&[jpeg, TS_EXPLICIT_LE])), None);
        assert_eq!(
            choose(jpeg, &list(&[TS_IMPLICIT_LE, TS_EXPLICIT_LE])),
            Some(Target::ExplicitVRLittleEndian)
        );
        assert_eq!(
            choose(jpeg, &list(&[TS_IMPLICIT_LE])),
            Some(Target::ImplicitVRLittleEndian)
        );
        // Neither listed: implicit, which every application accepts.
        assert_eq!(
            choose(jpeg, &list(&["1.2.840.10008.1.2.4.90"])),
            Some(Target::ImplicitVRLittleEndian)
        );
        assert_eq!(
            choose(TS_IMPLICIT_LE, &list(&[TS_EXPLICIT_LE])),
            Some(Target::ExplicitVRLittleEndian)
        );
    }

    #[test]
    fn a_file_whose_attributes_are_not_in_the_prefix_is_planned_for_the_worst() {
        let limits = Limits {
            max_object_bytes: 1000,
        };
        let worst = plan_from_prefix(b"not dicom", 50, limits);
        assert_eq!(worst.outgoing_bytes, 50);
        assert_eq!(worst.reserve_bytes, 2 * 50 + 2 * 1000);
        // A JPEG file cut inside an element that precedes group 0028.
        let mut f = vec![0u8; 128];
        f.extend(b"DICM");
        let ts = b"1.2.840.10008.1.2.4.50";
        f.extend([0x02, 0x00, 0x10, 0x00, b'U', b'I']);
        f.extend((ts.len() as u16).to_le_bytes());
        f.extend(ts);
        f.extend([0x08, 0x00, 0x00, 0x11, b'O', b'B', 0, 0]);
        f.extend(100_000u32.to_le_bytes());
        f.extend([0u8; 16]);
        assert_eq!(plan_from_prefix(&f, 200_000, limits), {
            let mut w = worst;
            w.outgoing_bytes = 200_000;
            w.reserve_bytes = 2 * 200_000 + 2 * 1000;
            w
        });
    }

    #[test]
    fn garbage_is_an_error_naming_the_cause() {
        let err = transcode(
            b"not dicom",
            Target::ExplicitVRLittleEndian,
            Limits::default(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("no DICM prefix"), "{err}");
    }
}
