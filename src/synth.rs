//! Synthetic CT-like DICOM objects for tests and benchmarks.
//!
//! The objects are small but complete Part 10 files (preamble, file meta,
//! Explicit VR Little Endian data set) with random 12-bit pixels, so the
//! archive, the STOW-RS client and the receiver all see realistic input
//! without shipping real patient data.
//!
//! Owns generation only: the service never calls it; tests, benchmarks
//! and `examples/synth` do.

use std::path::{Path, PathBuf};

use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::{FileDicomObject, FileMetaTableBuilder, InMemDicomObject};
use rand::rngs::SmallRng;
use rand::{Rng, RngCore, SeedableRng};

/// What to put into one synthetic CT instance.
#[derive(Debug, Clone)]
pub struct SynthSpec {
    pub study_iuid: String,
    pub series_iuid: String,
    pub sop_iuid: String,
    pub rows: u16,
    pub columns: u16,
    /// Seed of the pixel generator: the same spec always gives the same bytes.
    pub seed: u64,
    pub patient_id: String,
    pub instance_number: u32,
}

/// Writes one Explicit VR Little Endian CT Image Storage object (16 bits
/// allocated, 12 stored, random pixels from `spec.seed`) with full file
/// meta to `path`; returns the number of bytes written.
pub fn write_ct(path: &Path, spec: &SynthSpec) -> std::io::Result<u64> {
    let bytes = encode(spec)?;
    std::fs::write(path, &bytes)?;
    Ok(bytes.len() as u64)
}

/// Same as [`write_ct`], into memory.
///
/// # Panics
///
/// Never in practice: encoding into a `Vec` cannot fail with I/O errors and
/// the file meta is always complete; a failure would be a bug in this module.
pub fn ct_bytes(spec: &SynthSpec) -> Vec<u8> {
    // The signature is infallible on purpose (tests and benchmarks call it in
    // tight loops); the only error sources are ruled out above.
    encode(spec).expect("encoding a synthetic CT object into memory cannot fail")
}

/// The synthetic CT as a dicom-object file object, for tests that need to
/// alter attributes (e.g. remove one) before writing it out.
pub fn ct_object(spec: &SynthSpec) -> std::io::Result<FileDicomObject<InMemDicomObject>> {
    let mut obj = InMemDicomObject::new_empty();
    let mut put_str = |tag, vr, value: &str| {
        obj.put(DataElement::new(tag, vr, PrimitiveValue::from(value)));
    };
    put_str(tags::SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 100");
    put_str(tags::IMAGE_TYPE, VR::CS, "ORIGINAL\\PRIMARY\\AXIAL");
    put_str(tags::SOP_CLASS_UID, VR::UI, uids::CT_IMAGE_STORAGE);
    put_str(tags::SOP_INSTANCE_UID, VR::UI, &spec.sop_iuid);
    put_str(tags::STUDY_DATE, VR::DA, "20240115");
    put_str(tags::SERIES_DATE, VR::DA, "20240115");
    put_str(tags::STUDY_TIME, VR::TM, "101500");
    put_str(tags::ACCESSION_NUMBER, VR::SH, "SYNTH0001");
    put_str(tags::MODALITY, VR::CS, "CT");
    put_str(tags::MANUFACTURER, VR::LO, "stow-exporter synth");
    put_str(tags::REFERRING_PHYSICIAN_NAME, VR::PN, "");
    put_str(tags::STUDY_DESCRIPTION, VR::LO, "Synthetic CT");
    put_str(tags::PATIENT_NAME, VR::PN, "Synthetic^Patient");
    put_str(tags::PATIENT_ID, VR::LO, &spec.patient_id);
    put_str(tags::PATIENT_BIRTH_DATE, VR::DA, "19700101");
    put_str(tags::PATIENT_SEX, VR::CS, "O");
    put_str(tags::KVP, VR::DS, "120");
    put_str(tags::SLICE_THICKNESS, VR::DS, "1");
    put_str(tags::STUDY_INSTANCE_UID, VR::UI, &spec.study_iuid);
    put_str(tags::SERIES_INSTANCE_UID, VR::UI, &spec.series_iuid);
    put_str(tags::STUDY_ID, VR::SH, "1");
    put_str(tags::SERIES_NUMBER, VR::IS, "1");
    put_str(
        tags::INSTANCE_NUMBER,
        VR::IS,
        &spec.instance_number.to_string(),
    );
    put_str(
        tags::IMAGE_POSITION_PATIENT,
        VR::DS,
        &format!("0\\0\\{}", spec.instance_number),
    );
    put_str(tags::IMAGE_ORIENTATION_PATIENT, VR::DS, "1\\0\\0\\0\\1\\0");
    put_str(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2");
    put_str(tags::PIXEL_SPACING, VR::DS, "0.5\\0.5");
    put_str(tags::RESCALE_INTERCEPT, VR::DS, "-1024");
    put_str(tags::RESCALE_SLOPE, VR::DS, "1");
    let mut put_us = |tag, value: u16| {
        obj.put(DataElement::new(tag, VR::US, PrimitiveValue::from(value)));
    };
    put_us(tags::SAMPLES_PER_PIXEL, 1);
    put_us(tags::ROWS, spec.rows);
    put_us(tags::COLUMNS, spec.columns);
    put_us(tags::BITS_ALLOCATED, 16);
    put_us(tags::BITS_STORED, 12);
    put_us(tags::HIGH_BIT, 11);
    put_us(tags::PIXEL_REPRESENTATION, 0);
    // Raw little-endian bytes under VR OW: dicom-object writes a U8 value
    // as is, which avoids a per-sample encoding loop for ~0.5 MB per object.
    obj.put(DataElement::new(
        tags::PIXEL_DATA,
        VR::OW,
        PrimitiveValue::U8(pixels(spec).into()),
    ));
    obj.with_meta(FileMetaTableBuilder::new().transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN))
        .map_err(std::io::Error::other)
}

fn encode(spec: &SynthSpec) -> std::io::Result<Vec<u8>> {
    let obj = ct_object(spec)?;
    let mut out = Vec::with_capacity(pixel_bytes(spec) + 4096);
    obj.write_all(&mut out).map_err(std::io::Error::other)?;
    Ok(out)
}

fn pixel_bytes(spec: &SynthSpec) -> usize {
    usize::from(spec.rows) * usize::from(spec.columns) * 2
}

/// Random 12-bit samples, little endian. Four samples come out of each
/// 64-bit draw, masked to 12 bits per lane, which keeps generation far
/// below the cost of writing the file.
fn pixels(spec: &SynthSpec) -> Vec<u8> {
    const MASK: u64 = 0x0FFF_0FFF_0FFF_0FFF;
    let len = pixel_bytes(spec);
    let mut rng = SmallRng::seed_from_u64(spec.seed);
    let mut out = vec![0u8; len];
    let mut chunks = out.chunks_exact_mut(8);
    for chunk in &mut chunks {
        chunk.copy_from_slice(&(rng.next_u64() & MASK).to_le_bytes());
    }
    let rest = chunks.into_remainder();
    let tail = (rng.next_u64() & MASK).to_le_bytes();
    rest.copy_from_slice(&tail[..rest.len()]);
    out
}

/// A fresh random UID under the 2.25 root: the decimal form of a random
/// (version 4) UUID, as PS3.5 B.2 describes; at most 44 characters.
pub fn new_uid() -> String {
    let mut x: u128 = rand::rng().random();
    // version 4 in bits 76..80, RFC 4122 variant (0b10) in bits 62..64
    x = (x & !(0xF << 76)) | (0x4 << 76);
    x = (x & !(0x3 << 62)) | (0x2 << 62);
    format!("2.25.{x}")
}

/// Writes `count` instances of one new study (one series) into `dir` as
/// `<n>.dcm`, `n` being the instance number 1..=count; returns the study
/// UID and the paths in instance order.
pub fn write_study(
    dir: &Path,
    count: usize,
    rows: u16,
    columns: u16,
) -> std::io::Result<(String, Vec<PathBuf>)> {
    std::fs::create_dir_all(dir)?;
    let study_iuid = new_uid();
    let series_iuid = new_uid();
    let patient_id = format!("SYNTH-{}", rand::rng().random_range(100_000..1_000_000u32));
    let mut seeds = SmallRng::from_os_rng();
    let mut paths = Vec::with_capacity(count);
    for n in 1..=count {
        let spec = SynthSpec {
            study_iuid: study_iuid.clone(),
            series_iuid: series_iuid.clone(),
            sop_iuid: new_uid(),
            rows,
            columns,
            seed: seeds.next_u64(),
            patient_id: patient_id.clone(),
            instance_number: u32::try_from(n).unwrap_or(u32::MAX),
        };
        let path = dir.join(format!("{n}.dcm"));
        write_ct(&path, &spec)?;
        paths.push(path);
    }
    Ok((study_iuid, paths))
}

#[cfg(test)]
mod tests {
    use super::*;
    use dicom_object::OpenFileOptions;

    fn spec(seed: u64) -> SynthSpec {
        SynthSpec {
            study_iuid: new_uid(),
            series_iuid: new_uid(),
            sop_iuid: new_uid(),
            rows: 64,
            columns: 32,
            seed,
            patient_id: "PID1".into(),
            instance_number: 7,
        }
    }

    fn text(obj: &InMemDicomObject, tag: dicom_core::Tag) -> String {
        obj.get(tag)
            .unwrap()
            .to_str()
            .unwrap()
            .trim_end_matches(['\0', ' '])
            .to_string()
    }

    #[test]
    fn uid_is_valid() {
        for _ in 0..1000 {
            let uid = new_uid();
            assert!(uid.len() <= 64, "{uid}");
            assert!(uid.starts_with("2.25."));
            let last = &uid[5..];
            assert!(last.bytes().all(|b| b.is_ascii_digit()));
            assert!(last == "0" || !last.starts_with('0'));
        }
        assert_ne!(new_uid(), new_uid());
    }

    #[test]
    fn deterministic_and_readable() {
        let s = spec(42);
        let a = ct_bytes(&s);
        assert_eq!(a, ct_bytes(&s));
        assert_ne!(
            a,
            ct_bytes(&SynthSpec {
                seed: 43,
                ..s.clone()
            })
        );
        assert_eq!(&a[128..132], b"DICM");

        let obj = OpenFileOptions::new().from_reader(&a[128..]).unwrap();
        assert_eq!(
            obj.meta().transfer_syntax(),
            uids::EXPLICIT_VR_LITTLE_ENDIAN
        );
        assert_eq!(obj.meta().media_storage_sop_instance_uid(), s.sop_iuid);
        assert_eq!(text(&obj, tags::SOP_CLASS_UID), uids::CT_IMAGE_STORAGE);
        assert_eq!(text(&obj, tags::STUDY_INSTANCE_UID), s.study_iuid);
        assert_eq!(text(&obj, tags::SERIES_INSTANCE_UID), s.series_iuid);
        assert_eq!(text(&obj, tags::MODALITY), "CT");
        assert_eq!(text(&obj, tags::PATIENT_ID), "PID1");
        assert_eq!(text(&obj, tags::INSTANCE_NUMBER), "7");
        assert_eq!(obj.get(tags::ROWS).unwrap().to_int::<u16>().unwrap(), 64);
        assert_eq!(obj.get(tags::COLUMNS).unwrap().to_int::<u16>().unwrap(), 32);
        let px = obj.get(tags::PIXEL_DATA).unwrap();
        assert_eq!(px.vr(), VR::OW);
        let px = px.to_bytes().unwrap();
        assert_eq!(px.len(), 64 * 32 * 2);
        assert!(
            px.chunks_exact(2)
                .all(|s| u16::from_le_bytes([s[0], s[1]]) < 4096)
        );
        // not all zero: the generator really ran
        assert!(px.iter().any(|&b| b != 0));
    }

    #[test]
    fn odd_sized_image() {
        let s = SynthSpec {
            rows: 3,
            columns: 3,
            ..spec(1)
        };
        let obj = OpenFileOptions::new()
            .from_reader(&ct_bytes(&s)[128..])
            .unwrap();
        assert_eq!(
            obj.get(tags::PIXEL_DATA).unwrap().to_bytes().unwrap().len(),
            18
        );
    }

    #[test]
    fn study_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let (study, paths) = write_study(dir.path(), 3, 16, 16).unwrap();
        assert_eq!(paths.len(), 3);
        for (i, p) in paths.iter().enumerate() {
            assert_eq!(p, &dir.path().join(format!("{}.dcm", i + 1)));
            let obj = dicom_object::open_file(p).unwrap();
            assert_eq!(text(&obj, tags::STUDY_INSTANCE_UID), study);
            assert_eq!(text(&obj, tags::INSTANCE_NUMBER), (i + 1).to_string());
        }
        let len = write_ct(&dir.path().join("x.dcm"), &spec(5)).unwrap();
        assert_eq!(
            len,
            std::fs::metadata(dir.path().join("x.dcm")).unwrap().len()
        );
    }

    #[test]
    fn full_size_is_fast_enough() {
        // The benchmark generates thousands of 512x512 objects.
        let s = SynthSpec {
            rows: 512,
            columns: 512,
            ..spec(9)
        };
        let start = std::time::Instant::now();
        for _ in 0..20 {
            assert!(ct_bytes(&s).len() > 512 * 512 * 2);
        }
        let per = start.elapsed() / 20;
        assert!(
            per < std::time::Duration::from_millis(100),
            "{per:?} per object"
        );
    }
}
