//! The STOW-RS response body (PS3.18 § 10.5.3): a data set with
//! ReferencedSOPSequence (0008,1199) and FailedSOPSequence (0008,1198),
//! rendered as DICOM JSON (PS3.18 Annex F) or as the Native DICOM Model
//! XML (PS3.19 Annex A).
//!
//! RetrieveURL (0008,1190) is never included: this receiver serves no
//! WADO-RS, so it would be a lie.
//!
//! Owns rendering; the statuses it renders are decided by the handler in
//! [`super`].

use axum::http::StatusCode;
use serde_json::{Map, Value, json};

/// Failure Reason (0008,1197) values used by the receiver.
pub mod failure_reason {
    /// Processing failure (PS3.4 C.4.2.1.4): storing the part failed
    /// (I/O error), or the body ended inside the part.
    pub const PROCESSING_FAILURE: u16 = 0x0110;
    /// Duplicate SOP instance (PS3.4 C.4.2.1.4): other bytes came under
    /// the name of an instance already stored, which is kept.
    pub const DUPLICATE_SOP_INSTANCE: u16 = 0x0111;
    /// Refused: out of resources: the disk is full, the free-disk reserve
    /// is reached, or a limit of the request cut the part off.
    pub const OUT_OF_RESOURCES: u16 = 0xA700;
    /// Error: data set does not match SOP Class (PS3.4 C.4.2.1.4), which
    /// PS3.18 § 10.5 also uses for an instance of another study than the
    /// one in the request's path. Not used by stowrsd itself (it does not
    /// parse the data set); STOW-RS into the archive (`crate::api::stow_in`)
    /// answers it for that and for missing or invalid UIDs.
    pub const DATA_SET_MISMATCH: u16 = 0xA900;
    /// Error: cannot understand — the part is not `application/dicom`, not a
    /// DICOM Part 10 file, has broken file meta information or invalid UIDs.
    pub const CANNOT_UNDERSTAND: u16 = 0xC000;
}

/// An instance that was stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReferencedSop {
    pub sop_class_uid: String,
    pub sop_instance_uid: String,
}

/// A part that was not stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedSop {
    /// Known only when the file meta information could be read.
    pub sop_class_uid: Option<String>,
    pub sop_instance_uid: Option<String>,
    pub reason: u16,
}

/// The outcome of one STOW-RS request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StowResponse {
    pub referenced: Vec<ReferencedSop>,
    pub failed: Vec<FailedSop>,
}

/// Representation of the response body chosen from `Accept`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// DICOM JSON with the given Content-Type.
    Json(&'static str),
    /// Native DICOM Model XML with the given Content-Type.
    Xml(&'static str),
}

impl Format {
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Json(ct) | Format::Xml(ct) => ct,
        }
    }
}

/// Picks the response representation from an `Accept` header value
/// (`None` = header absent). Ranges are tried by decreasing quality, ties
/// in order of appearance; `None` result means 406.
pub fn negotiate(accept: Option<&str>) -> Option<Format> {
    let Some(accept) = accept.filter(|a| !a.trim().is_empty()) else {
        return Some(Format::Json("application/dicom+json"));
    };
    let mut ranges: Vec<(f32, usize, Format)> = Vec::new();
    for (i, range) in super::split_unquoted(accept, b',').into_iter().enumerate() {
        let Some((media, params)) = super::parse_media_type(range) else {
            continue;
        };
        let q = params
            .iter()
            .find(|(k, _)| k == "q")
            .map(|(_, v)| v.trim().parse::<f32>().unwrap_or(0.0))
            .unwrap_or(1.0);
        if q <= 0.0 {
            continue;
        }
        let format = match media.as_str() {
            "*/*" | "application/*" | "application/dicom+json" => {
                Format::Json("application/dicom+json")
            }
            "application/json" => Format::Json("application/json"),
            "application/dicom+xml" => Format::Xml("application/dicom+xml"),
            "application/xml" => Format::Xml("application/xml"),
            "text/xml" => Format::Xml("text/xml"),
            _ => continue,
        };
        ranges.push((q, i, format));
    }
    ranges.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    ranges.first().map(|r| r.2)
}

const REFERENCED_SOP_SEQUENCE: (&str, &str) = ("00081199", "ReferencedSOPSequence");
const FAILED_SOP_SEQUENCE: (&str, &str) = ("00081198", "FailedSOPSequence");
const REFERENCED_SOP_CLASS_UID: (&str, &str) = ("00081150", "ReferencedSOPClassUID");
const REFERENCED_SOP_INSTANCE_UID: (&str, &str) = ("00081155", "ReferencedSOPInstanceUID");
const FAILURE_REASON: (&str, &str) = ("00081197", "FailureReason");

impl StowResponse {
    /// 200 when everything was stored, 202 when some parts failed and some
    /// were stored, 409 when parts were received but none was stored.
    pub fn status(&self) -> StatusCode {
        match (self.referenced.is_empty(), self.failed.is_empty()) {
            (false, true) => StatusCode::OK,
            (false, false) => StatusCode::ACCEPTED,
            (true, _) => StatusCode::CONFLICT,
        }
    }

    /// Renders the body in `format`.
    pub fn render(&self, format: Format) -> Vec<u8> {
        match format {
            Format::Json(_) => self.to_json().to_string().into_bytes(),
            Format::Xml(_) => self.to_xml().into_bytes(),
        }
    }

    /// DICOM JSON. A sequence is omitted when it has no items.
    pub fn to_json(&self) -> Value {
        fn ui(v: &str) -> Value {
            json!({"vr": "UI", "Value": [v]})
        }
        let mut root = Map::new();
        if !self.failed.is_empty() {
            let items: Vec<Value> = self
                .failed
                .iter()
                .map(|f| {
                    let mut item = Map::new();
                    if let Some(c) = &f.sop_class_uid {
                        item.insert(REFERENCED_SOP_CLASS_UID.0.into(), ui(c));
                    }
                    if let Some(i) = &f.sop_instance_uid {
                        item.insert(REFERENCED_SOP_INSTANCE_UID.0.into(), ui(i));
                    }
                    item.insert(
                        FAILURE_REASON.0.into(),
                        json!({"vr": "US", "Value": [f.reason]}),
                    );
                    Value::Object(item)
                })
                .collect();
            root.insert(
                FAILED_SOP_SEQUENCE.0.into(),
                json!({"vr": "SQ", "Value": items}),
            );
        }
        if !self.referenced.is_empty() {
            let items: Vec<Value> = self
                .referenced
                .iter()
                .map(|r| {
                    json!({
                        REFERENCED_SOP_CLASS_UID.0: ui(&r.sop_class_uid),
                        REFERENCED_SOP_INSTANCE_UID.0: ui(&r.sop_instance_uid),
                    })
                })
                .collect();
            root.insert(
                REFERENCED_SOP_SEQUENCE.0.into(),
                json!({"vr": "SQ", "Value": items}),
            );
        }
        Value::Object(root)
    }

    /// Native DICOM Model XML (attributes in tag order; empty sequences
    /// omitted).
    pub fn to_xml(&self) -> String {
        let mut x = String::with_capacity(256 + 400 * (self.referenced.len() + self.failed.len()));
        x.push_str(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
             <NativeDicomModel xmlns=\"http://dicom.nema.org/PS3.19/models/NativeDICOM\" \
             xml:space=\"preserve\">",
        );
        if !self.failed.is_empty() {
            open_attr(&mut x, FAILED_SOP_SEQUENCE, "SQ");
            for (n, f) in self.failed.iter().enumerate() {
                x.push_str(&format!("<Item number=\"{}\">", n + 1));
                if let Some(c) = &f.sop_class_uid {
                    value_attr(&mut x, REFERENCED_SOP_CLASS_UID, "UI", c);
                }
                if let Some(i) = &f.sop_instance_uid {
                    value_attr(&mut x, REFERENCED_SOP_INSTANCE_UID, "UI", i);
                }
                value_attr(&mut x, FAILURE_REASON, "US", &f.reason.to_string());
                x.push_str("</Item>");
            }
            x.push_str("</DicomAttribute>");
        }
        if !self.referenced.is_empty() {
            open_attr(&mut x, REFERENCED_SOP_SEQUENCE, "SQ");
            for (n, r) in self.referenced.iter().enumerate() {
                x.push_str(&format!("<Item number=\"{}\">", n + 1));
                value_attr(&mut x, REFERENCED_SOP_CLASS_UID, "UI", &r.sop_class_uid);
                value_attr(
                    &mut x,
                    REFERENCED_SOP_INSTANCE_UID,
                    "UI",
                    &r.sop_instance_uid,
                );
                x.push_str("</Item>");
            }
            x.push_str("</DicomAttribute>");
        }
        x.push_str("</NativeDicomModel>");
        x
    }
}

fn open_attr(x: &mut String, (tag, keyword): (&str, &str), vr: &str) {
    x.push_str(&format!(
        "<DicomAttribute tag=\"{tag}\" vr=\"{vr}\" keyword=\"{keyword}\">"
    ));
}

fn value_attr(x: &mut String, attr: (&str, &str), vr: &str, value: &str) {
    open_attr(x, attr, vr);
    x.push_str("<Value number=\"1\">");
    escape_xml(x, value);
    x.push_str("</Value></DicomAttribute>");
}

/// Appends `s` with the XML special characters escaped.
pub fn escape_xml(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> StowResponse {
        StowResponse {
            referenced: vec![ReferencedSop {
                sop_class_uid: "1.2.3".into(),
                sop_instance_uid: "1.2.3.4".into(),
            }],
            failed: vec![
                FailedSop {
                    sop_class_uid: Some("1.2.3".into()),
                    sop_instance_uid: Some("1.2.3.5".into()),
                    reason: failure_reason::PROCESSING_FAILURE,
                },
                FailedSop {
                    sop_class_uid: None,
                    sop_instance_uid: None,
                    reason: failure_reason::CANNOT_UNDERSTAND,
                },
            ],
        }
    }

    #[test]
    fn json_shape() {
        let v = sample().to_json();
        assert_eq!(
            v,
            json!({
                "00081199": {"vr": "SQ", "Value": [{
                    "00081150": {"vr": "UI", "Value": ["1.2.3"]},
                    "00081155": {"vr": "UI", "Value": ["1.2.3.4"]},
                }]},
                "00081198": {"vr": "SQ", "Value": [
                    {
                        "00081150": {"vr": "UI", "Value": ["1.2.3"]},
                        "00081155": {"vr": "UI", "Value": ["1.2.3.5"]},
                        "00081197": {"vr": "US", "Value": [272]},
                    },
                    {"00081197": {"vr": "US", "Value": [49152]}},
                ]},
            })
        );
        assert_eq!(StowResponse::default().to_json(), json!({}));
    }

    #[test]
    fn xml_shape_and_escaping() {
        let x = sample().to_xml();
        assert!(x.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?><NativeDicomModel "));
        assert!(x.contains(
            "<DicomAttribute tag=\"00081199\" vr=\"SQ\" keyword=\"ReferencedSOPSequence\">\
             <Item number=\"1\">\
             <DicomAttribute tag=\"00081150\" vr=\"UI\" keyword=\"ReferencedSOPClassUID\"><Value number=\"1\">1.2.3</Value></DicomAttribute>\
             <DicomAttribute tag=\"00081155\" vr=\"UI\" keyword=\"ReferencedSOPInstanceUID\"><Value number=\"1\">1.2.3.4</Value></DicomAttribute>\
             </Item></DicomAttribute>"
        ));
        assert!(x.contains("<Item number=\"2\"><DicomAttribute tag=\"00081197\" vr=\"US\" keyword=\"FailureReason\"><Value number=\"1\">49152</Value></DicomAttribute></Item>"));
        assert!(x.ends_with("</NativeDicomModel>"));
        let mut s = String::new();
        escape_xml(&mut s, "<a href=\"x\">&'</a>");
        assert_eq!(s, "&lt;a href=&quot;x&quot;&gt;&amp;&apos;&lt;/a&gt;");
    }

    #[test]
    fn status_rules() {
        let mut r = sample();
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        r.failed.clear();
        assert_eq!(r.status(), StatusCode::OK);
        let r = StowResponse {
            referenced: vec![],
            failed: sample().failed,
        };
        assert_eq!(r.status(), StatusCode::CONFLICT);
    }

    #[test]
    fn accept_negotiation() {
        let json = Some(Format::Json("application/dicom+json"));
        assert_eq!(negotiate(None), json);
        assert_eq!(negotiate(Some("")), json);
        assert_eq!(negotiate(Some("*/*")), json);
        assert_eq!(negotiate(Some("application/*")), json);
        assert_eq!(negotiate(Some("Application/DICOM+JSON")), json);
        assert_eq!(
            negotiate(Some("application/json")),
            Some(Format::Json("application/json"))
        );
        assert_eq!(
            negotiate(Some("application/dicom+xml")),
            Some(Format::Xml("application/dicom+xml"))
        );
        assert_eq!(negotiate(Some("text/xml")), Some(Format::Xml("text/xml")));
        assert_eq!(
            negotiate(Some(
                "image/png, application/dicom+xml;q=0.5, application/json;q=0.9"
            )),
            Some(Format::Json("application/json"))
        );
        assert_eq!(
            negotiate(Some("application/dicom+json;q=0, application/dicom+xml")),
            Some(Format::Xml("application/dicom+xml"))
        );
        assert_eq!(negotiate(Some("image/png")), None);
        assert_eq!(negotiate(Some("application/dicom+json;q=0")), None);
    }
}
