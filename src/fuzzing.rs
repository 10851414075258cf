//! Entry points for fuzzing every parser of untrusted input, one function
//! per target of `fuzz/` (cargo-fuzz, run for minutes) and of
//! `tests/fuzz_targets.rs` (the same bodies over a seed corpus and bounded
//! random inputs, in CI).
//!
//! Each function takes arbitrary bytes, drives one parser the way the
//! service does, and checks what must hold whatever the input: no panic,
//! bounded output, errors that format, and where a parser has an
//! equivalence (a multipart body read whole or in pieces, a duration
//! formatted and read back) that it holds. Each returns whether the
//! parser accepted the input, so that a test can tell a target that
//! rejects everything (and so tests nothing deep) from one that works. It owns no state and touches no
//! file, socket or clock: the same bytes always do the same thing.

use std::io::Cursor;
use std::sync::LazyLock;

use bytes::Bytes;
use chrono::{TimeZone, Utc};

use crate::config::{self, Snapshot};
use crate::schedule::Schedule;
use crate::stow::response::{self, Exchange};
use crate::stowrsd::{meta, multipart};
use crate::transcode::codestream::{self, ImageGeometry, TransferSyntaxKind};

/// The device of the shipped configuration.
const DEVICE: &str = "dcm4chee-arc";

/// The shipped configuration, against which task messages are checked.
static SHIPPED: LazyLock<Snapshot> = LazyLock::new(|| {
    let mut dir = config::entry::Directory::new();
    for (name, text) in [
        ("10-base-dn.ldif", include_str!("../ldif/10-base-dn.ldif")),
        (
            "20-config-roots.ldif",
            include_str!("../ldif/20-config-roots.ldif"),
        ),
        (
            "30-archive-device.ldif",
            include_str!("../ldif/30-archive-device.ldif"),
        ),
        ("40-queues.ldif", include_str!("../ldif/40-queues.ldif")),
        (
            "50-stowrsd-device.ldif",
            include_str!("../ldif/50-stowrsd-device.ldif"),
        ),
        ("60-web-apps.ldif", include_str!("../ldif/60-web-apps.ldif")),
        (
            "70-exporters.ldif",
            include_str!("../ldif/70-exporters.ldif"),
        ),
    ] {
        config::apply_ldif(&mut dir, text, name).expect("the shipped LDIF parses");
    }
    Snapshot::build(&dir, DEVICE, "ldif/").expect("the shipped LDIF is valid")
});

/// Formats `e` and requires the message to stay short enough for a log
/// line whatever the input held.
fn formatted(e: &dyn std::fmt::Display, max: usize) {
    let s = e.to_string();
    assert!(s.len() <= max, "a message of {} bytes: {s:.200}", s.len());
}

/// LDIF text through the whole configuration path: parse, apply and
/// validate into a snapshot (the path `/ctrl/reload` takes), and the
/// value parsers the snapshot uses on attribute values.
pub fn ldif(data: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(data) else {
        return false;
    };
    if let Ok(records) = config::ldif::parse(text) {
        assert!(records.len() <= text.len(), "more records than bytes");
    }
    for line in text.lines() {
        let _ = config::entry::Dn::parse(line);
        let _ = config::model::parse_size(line);
        let _ = config::model::parse_ldap_bool(line);
    }
    match config::snapshot_from_ldif(text, DEVICE) {
        Ok(snap) => {
            for (id, e) in &snap.exporters {
                assert_eq!(id, &e.id);
            }
            true
        }
        Err(e) => {
            // A message per problem; each repeats at most a clip of a value.
            let _ = e.to_string();
            false
        }
    }
}

/// A multipart/related body as stowrsd reads it: first byte a chunk size,
/// the rest the body under boundary `B`. Read whole and read in chunks of
/// that size, the parts (headers and bytes) must be the same.
pub fn multipart(data: &[u8]) -> bool {
    let Some((&step, body)) = data.split_first() else {
        return false;
    };
    let _ = multipart::PartHeaders::parse(body);
    let whole = read_multipart(body, body.len().max(1));
    let pieces = read_multipart(body, usize::from(step).max(1));
    if let (Ok(a), Ok(b)) = (&whole, &pieces) {
        assert_eq!(a, b, "chunking changed the parts");
    }
    if let Ok(parts) = &whole {
        let held: usize = parts.iter().map(|(_, d)| d.len()).sum();
        assert!(held <= body.len(), "more part bytes than body bytes");
    }
    whole.is_ok()
}

type Parts = Vec<(Vec<(String, String)>, Vec<u8>)>;

fn read_multipart(body: &[u8], step: usize) -> Result<Parts, multipart::MultipartError> {
    let mut parser = multipart::Parser::with_max_header_bytes("B", 256)?;
    let mut parts: Parts = Vec::new();
    let mut chunks = body.chunks(step);
    loop {
        match parser.next_event()? {
            Some(multipart::Event::PartStart(h)) => parts.push((h.fields().to_vec(), Vec::new())),
            Some(multipart::Event::PartData(d)) => {
                assert!(!d.is_empty(), "an empty data event");
                parts
                    .last_mut()
                    .expect("data before a part started")
                    .1
                    .extend_from_slice(&d);
            }
            Some(multipart::Event::PartEnd) => {}
            Some(multipart::Event::End) => return Ok(parts),
            None => match chunks.next() {
                Some(c) => parser.feed(Bytes::copy_from_slice(c)),
                None => {
                    parser.finish()?;
                    return Ok(parts);
                }
            },
        }
    }
}

/// A received or imported file's first bytes through every header scan:
/// stowrsd's file meta reader (at every prefix length the network could
/// deliver, and at the end of the part), the archive's import scan, the
/// transcoder's plan and its data set split.
pub fn dicom_header(data: &[u8]) -> bool {
    for cut in [data.len() / 3, data.len() / 2, data.len()] {
        match meta::parse(&data[..cut], false) {
            Ok(meta::Progress::Done(m)) => {
                assert!(meta::is_valid_uid(&m.sop_instance_uid));
            }
            Ok(_) => {}
            Err(e) => formatted(&e, 4096),
        }
    }
    let accepted = match meta::parse(data, true) {
        Ok(p) => matches!(p, meta::Progress::Done(_)),
        Err(e) => {
            formatted(&e, 4096);
            false
        }
    };
    let len = data.len() as u64;
    let _ = crate::archive::scan::scan(Cursor::new(data), len);
    let limits = crate::transcode::Limits {
        max_object_bytes: 64 << 20,
    };
    let plan = crate::transcode::plan_from_prefix(data, len, limits);
    let _ = plan.outgoing_bytes.checked_add(plan.reserve_bytes);
    if let Ok(parts) = crate::transcode::dataset::split(data, 16 << 20) {
        assert!(parts.dataset.len() <= 16 << 20, "inflated past the cap");
    }
    accepted
}

/// A destination's STOW-RS reply: first byte picks the Content-Type and
/// the status, the rest is the body. Parsed as the client does, and
/// classified against three sent instances: every one of them gets
/// exactly one result, whatever the reply claims.
pub fn stow_reply(data: &[u8]) -> bool {
    let Some((&sel, body)) = data.split_first() else {
        return false;
    };
    let content_type = match sel % 4 {
        0 => Some("application/dicom+json"),
        1 => Some("application/dicom+xml"),
        2 => Some("multipart/related; type=\"application/dicom+xml\"; boundary=x"),
        _ => None,
    };
    let accepted = match response::parse(body, content_type) {
        Ok(r) => {
            let _ = r.anonymous_count();
            true
        }
        Err(e) => {
            formatted(&e, 4096);
            false
        }
    };
    let _ = response::parse_json(body);
    let _ = response::parse_xml(body);
    let status = [200u16, 202, 409, 400, 500][usize::from(sel / 4) % 5];
    let sent: Vec<String> = ["1.2.3.1", "1.2.3.2", "1.2.3.3"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let results = response::classify(
        &sent,
        Exchange::Answered {
            status,
            reason: "",
            content_type,
            retry_after: None,
            body,
        },
    );
    assert_eq!(results.len(), sent.len(), "not one result per instance");
    accepted
}

/// `dcmSchedule` values, one per line: parsed, and if valid asked whether
/// it is open at and when it next opens and closes after fixed instants,
/// in UTC and in a zone with daylight saving time.
pub fn schedule(data: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(data) else {
        return false;
    };
    let values: Vec<&str> = text.split('\n').collect();
    let schedule = match Schedule::parse_all(&values) {
        Ok(s) => s,
        Err(e) => {
            formatted(&e, 4096);
            return false;
        }
    };
    for t in [
        Utc.with_ymd_and_hms(2026, 3, 29, 0, 30, 0).unwrap(),
        Utc.with_ymd_and_hms(2026, 12, 31, 23, 59, 59).unwrap(),
    ] {
        let now = t;
        let open = schedule.is_open(now);
        if let Some(next) = schedule.next_open(now) {
            assert!(next >= now, "next opening in the past");
            assert!(open || next > now || schedule.is_open(next));
        }
        if let Some(next) = schedule.next_close(now) {
            assert!(next >= now, "next closing in the past");
        }
        let berlin = t.with_timezone(&chrono_tz::Europe::Berlin);
        let _ = schedule.is_open(berlin);
        let _ = schedule.next_open(berlin);
        let _ = schedule.next_close(berlin);
    }
    true
}

/// An ISO 8601 duration as read from the directory (`dcmRetryDelay` and
/// the like): parsed; a valid one formats to a text that reads back as the
/// same duration.
pub fn iso_duration(data: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(data) else {
        return false;
    };
    match config::model::parse_iso_duration(text) {
        Ok(d) => {
            let again = config::model::format_iso_duration(d);
            assert_eq!(
                config::model::parse_iso_duration(&again).ok(),
                Some(d),
                "{text:?} formats as {again:?}"
            );
            true
        }
        Err(e) => {
            formatted(&e, 4096);
            false
        }
    }
}

/// An AMQP message body as the queue consumer reads it: checked against
/// the shipped configuration, and (when it cannot run) the fields kept for
/// its FAILED record, each within its length limit.
pub fn amqp_task(data: &[u8]) -> bool {
    let accepted = match crate::queue::amqp::parse_request(data, &SHIPPED, "Export1") {
        Ok(r) => {
            assert!(SHIPPED.exporter(&r.exporter_id).is_some());
            assert!(crate::task::is_uid(&r.study_iuid));
            true
        }
        Err(_) => false,
    };
    let kept = crate::queue::amqp::readable_fields(data);
    assert!(kept.exporter_id.chars().count() <= crate::task::MAX_EXPORTER_ID_CHARS);
    assert!(
        kept.batch_id
            .as_ref()
            .is_none_or(|b| b.chars().count() <= crate::task::MAX_BATCH_ID_CHARS)
    );
    accepted
}

/// A compressed frame: the first byte picks the codestream family, the
/// next eight the DICOM attributes it must agree with (Rows, Columns,
/// Samples per Pixel, Bits Allocated), the rest is the frame.
pub fn codestream(data: &[u8]) -> bool {
    if data.len() < 9 {
        return false;
    }
    let kind = [
        TransferSyntaxKind::Jpeg,
        TransferSyntaxKind::JpegLs,
        TransferSyntaxKind::Jpeg2000,
        TransferSyntaxKind::Rle,
    ][usize::from(data[0] % 4)];
    let u16_at = |i: usize| u16::from_le_bytes([data[i], data[i + 1]]);
    let expected = ImageGeometry {
        rows: u16_at(1),
        columns: u16_at(3),
        samples_per_pixel: u16_at(5) % 5,
        bits_allocated: u16_at(7) % 33,
    };
    let frame = &data[9..];
    match codestream::read_header(kind, frame) {
        // What a header declares is read, not trusted: check_frame judges.
        Ok(_) => {}
        Err(e) => formatted(&e, 1024),
    }
    match codestream::check_frame(kind, frame, &expected) {
        Ok(()) => true,
        Err(e) => {
            formatted(&e, 1024);
            false
        }
    }
}

/// A DIMSE command set as the Storage SCP reads it from a peer: read, and
/// when it reads, answered; the answer reads back with the request's
/// command and message ID and the status given.
pub fn dimse_command(data: &[u8]) -> bool {
    use crate::scp::dimse;
    use dicom_dictionary_std::tags;
    match dimse::read_command(data) {
        Ok(rq) => {
            let out = dimse::response(&rq, dimse::status::CANNOT_UNDERSTAND, Some("fuzz\\comment"));
            let obj = dicom_object::InMemDicomObject::read_dataset_with_ts(
                out.as_slice(),
                &dicom_transfer_syntax_registry::entries::IMPLICIT_VR_LITTLE_ENDIAN.erased(),
            )
            .expect("a response reads back");
            let int = |tag| obj.get(tag).and_then(|e| e.to_int::<u16>().ok());
            assert_eq!(int(tags::STATUS), Some(dimse::status::CANNOT_UNDERSTAND));
            assert_eq!(
                int(tags::MESSAGE_ID_BEING_RESPONDED_TO),
                Some(rq.message_id)
            );
            assert_eq!(int(tags::COMMAND_FIELD).map(|f| f & 0x8000), Some(0x8000));
            true
        }
        Err(e) => {
            formatted(&e, 4096);
            false
        }
    }
}

/// The object export-rule conditions are matched against in
/// [`export_conditions`]: a CT with a referenced study in a sequence.
static CONDITION_OBJECT: LazyLock<dicom_object::InMemDicomObject> = LazyLock::new(|| {
    use dicom_core::value::DataSetSequence;
    use dicom_core::{DataElement, PrimitiveValue, VR};
    use dicom_dictionary_std::tags;
    let mut item = dicom_object::InMemDicomObject::new_empty();
    item.put(DataElement::new(
        tags::REFERENCED_SOP_INSTANCE_UID,
        VR::UI,
        PrimitiveValue::from("1.2.3.4"),
    ));
    let mut obj = dicom_object::InMemDicomObject::new_empty();
    obj.put(DataElement::new(
        tags::MODALITY,
        VR::CS,
        PrimitiveValue::from("CT"),
    ));
    obj.put(DataElement::new(
        tags::IMAGE_TYPE,
        VR::CS,
        PrimitiveValue::Strs(
            ["ORIGINAL", "PRIMARY", "AXIAL"]
                .into_iter()
                .map(String::from)
                .collect(),
        ),
    ));
    obj.put(DataElement::new(
        tags::REFERENCED_STUDY_SEQUENCE,
        VR::SQ,
        DataSetSequence::from(vec![item]),
    ));
    obj
});

/// `dcmProperty` values of an export rule (one per line) as the
/// configuration reads them: parsed, and when they parse, matched against
/// a fixed object and parties; a parsed list lists as given.
pub fn export_conditions(data: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(data) else {
        return false;
    };
    if text.is_empty() {
        return false;
    }
    let lines: Vec<&str> = text.lines().collect();
    match crate::conditions::Conditions::parse(lines.iter().copied()) {
        Ok(c) => {
            let parties = crate::conditions::Parties {
                sending_aet: "MODALITY1".into(),
                receiving_aet: "DCM4CHEE1".into(),
                sending_host: "127.0.0.1".into(),
                receiving_host: "127.0.0.1".into(),
            };
            let _ = c.matches(&CONDITION_OBJECT, &parties);
            assert_eq!(c.texts().len(), lines.len());
            true
        }
        Err(e) => {
            formatted(&e, 4096);
            false
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_shipped_configuration_loads() {
        assert!(super::SHIPPED.exporter("StowExporter").is_some());
    }
}
