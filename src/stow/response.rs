//! Reading a STOW-RS response (PS3.18 §10.5.3) and deciding, per instance
//! sent, whether it was stored.
//!
//! Unlike dcm4chee (which ignores the HTTP status and trusts the body) and
//! plain HTTP clients (which trust the status), both count: an instance is
//! completed only when the server names it in ReferencedSOPSequence of a
//! successful response. An instance the server does not mention at all is
//! *not* stored: Orthanc answers 200 and silently drops parts it dislikes.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::Value;

use crate::queue::{InstanceResult, InstanceStatus, Retry};

const REFERENCED_SOP_SEQUENCE: &str = "00081199";
const FAILED_SOP_SEQUENCE: &str = "00081198";
const REFERENCED_SOP_INSTANCE_UID: &str = "00081155";
const WARNING_REASON: &str = "00081196";
const FAILURE_REASON: &str = "00081197";

/// What the server said about one SOP instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mention {
    Referenced { warning: Option<u16> },
    Failed { reason: Option<u16> },
}

/// The parsed body of a STOW-RS response.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StowResponse {
    /// Keyed by SOP Instance UID.
    pub mentions: HashMap<String, Mention>,
    /// Failed items without a SOP Instance UID (a part the server could not read).
    pub anonymous_failures: Vec<Option<u16>>,
    /// A top-level WarningReason.
    pub warning: Option<u16>,
}

/// Parses a response body as DICOM XML when the Content-Type says XML or
/// the body starts with `<`, else as DICOM JSON.
pub fn parse(body: &[u8], content_type: Option<&str>) -> Result<StowResponse, String> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    if content_type.is_some_and(|c| c.contains("xml")) || first == Some(&b'<') {
        parse_xml(body)
    } else {
        parse_json(body)
    }
}

/// Parses a Native DICOM Model (PS3.19 Annex A) STOW-RS response body:
/// `DicomAttribute` elements with `Item`s and `Value`s.
pub fn parse_xml(body: &[u8]) -> Result<StowResponse, String> {
    use quick_xml::events::Event;
    /// Where the reader is: the attribute and item it is in.
    enum Frame {
        Attr(String),
        Item(HashMap<String, String>),
        Value,
        Other,
    }
    let mut reader = quick_xml::Reader::from_reader(body);
    let mut stack: Vec<Frame> = Vec::new();
    let mut r = StowResponse::default();
    let mut saw_root = false;
    let mut buf = Vec::new();
    loop {
        let ev = reader
            .read_event_into(&mut buf)
            .map_err(|e| format!("not XML: {e}"))?;
        match ev {
            Event::Start(e) => {
                let frame = match e.local_name().into_inner() {
                    "NativeDicomModel" => {
                        saw_root = true;
                        Frame::Other
                    }
                    "DicomAttribute" => {
                        let tag = e
                            .try_get_attribute("tag")
                            .ok()
                            .flatten()
                            .map(|a| a.value.to_ascii_uppercase())
                            .unwrap_or_default();
                        Frame::Attr(tag)
                    }
                    "Item" => Frame::Item(HashMap::new()),
                    "Value" => Frame::Value,
                    _ => Frame::Other,
                };
                stack.push(frame);
            }
            Event::Text(t) => {
                let n = stack.len();
                if n >= 2
                    && let (Frame::Attr(tag), Frame::Value) = (&stack[n - 2], &stack[n - 1])
                {
                    // UIDs and numbers: nothing to unescape.
                    let text = t.trim().to_string();
                    let tag = tag.clone();
                    match stack[..n - 2].last_mut() {
                        Some(Frame::Item(fields)) => {
                            fields.insert(tag, text);
                        }
                        _ if tag == WARNING_REASON => r.warning = text.parse().ok(),
                        _ => {}
                    }
                }
            }
            Event::End(_) => {
                let frame = stack.pop();
                // An item directly in a top-level sequence (the root and the
                // sequence attribute are below it) is one SOP reference.
                if let Some(Frame::Item(fields)) = frame
                    && stack.len() == 2
                    && let Some(Frame::Attr(seq)) = stack.last()
                {
                    let uid = fields.get(REFERENCED_SOP_INSTANCE_UID).cloned();
                    let code = |t: &str| fields.get(t).and_then(|v| v.parse().ok());
                    match (seq.as_str(), uid) {
                        (REFERENCED_SOP_SEQUENCE, Some(uid)) => {
                            r.mentions.entry(uid).or_insert(Mention::Referenced {
                                warning: code(WARNING_REASON),
                            });
                        }
                        (FAILED_SOP_SEQUENCE, Some(uid)) => {
                            r.mentions.insert(
                                uid,
                                Mention::Failed {
                                    reason: code(FAILURE_REASON),
                                },
                            );
                        }
                        (FAILED_SOP_SEQUENCE, None) => {
                            r.anonymous_failures.push(code(FAILURE_REASON))
                        }
                        _ => {}
                    }
                }
            }
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    if !saw_root {
        return Err("not a Native DICOM Model document (no NativeDicomModel element)".into());
    }
    Ok(r)
}

/// Parses a DICOM JSON (PS3.18 Annex F) STOW-RS response body.
pub fn parse_json(body: &[u8]) -> Result<StowResponse, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    // Some servers wrap the data set in a one-element array.
    let ds = match &v {
        Value::Array(a) if a.len() == 1 => &a[0],
        other => other,
    };
    let ds = ds
        .as_object()
        .ok_or_else(|| "not a DICOM JSON data set (expected an object)".to_string())?;
    let mut r = StowResponse {
        warning: us_value(ds.get(WARNING_REASON)),
        ..StowResponse::default()
    };
    for item in items(ds.get(REFERENCED_SOP_SEQUENCE)) {
        if let Some(uid) = ui_value(item.get(REFERENCED_SOP_INSTANCE_UID)) {
            r.mentions.insert(
                uid,
                Mention::Referenced {
                    warning: us_value(item.get(WARNING_REASON)),
                },
            );
        }
    }
    for item in items(ds.get(FAILED_SOP_SEQUENCE)) {
        let reason = us_value(item.get(FAILURE_REASON));
        match ui_value(item.get(REFERENCED_SOP_INSTANCE_UID)) {
            // A failure wins over a reference for the same UID.
            Some(uid) => {
                r.mentions.insert(uid, Mention::Failed { reason });
            }
            None => r.anonymous_failures.push(reason),
        }
    }
    Ok(r)
}

fn items(attr: Option<&Value>) -> impl Iterator<Item = &serde_json::Map<String, Value>> {
    attr.and_then(|a| a.get("Value"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_object)
}

fn ui_value(attr: Option<&Value>) -> Option<String> {
    let v = attr?.get("Value")?.as_array()?.first()?;
    v.as_str()
        .map(|s| s.trim_end_matches(['\0', ' ']).to_string())
}

fn us_value(attr: Option<&Value>) -> Option<u16> {
    let v = attr?.get("Value")?.as_array()?.first()?;
    // US is a JSON number; tolerate a string as some servers send.
    v.as_u64()
        .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
        .and_then(|n| u16::try_from(n).ok())
}

/// Describes a DICOM status code as `0xA700 (Out of Resources)` where known.
pub fn describe_status(code: u16) -> String {
    let name = match code {
        0x0107 => Some("Attribute list error"),
        0x0110 => Some("Processing failure"),
        0x0111 => Some("Duplicate SOP Instance"),
        0x0112 => Some("No such SOP instance"),
        0x0117 => Some("Invalid object instance"),
        0x0122 => Some("SOP class not supported"),
        0x0124 => Some("Not authorized"),
        0xA700..=0xA7FF => Some("Out of resources"),
        0xA900..=0xA9FF => Some("Data set does not match SOP class"),
        0xB000 => Some("Coercion of data elements"),
        0xB006 => Some("Elements discarded"),
        0xB007 => Some("Data set does not match SOP class"),
        0xC000..=0xCFFF => Some("Cannot understand"),
        _ => None,
    };
    match name {
        Some(n) => format!("0x{code:04X} ({n})"),
        None => format!("0x{code:04X}"),
    }
}

/// The HTTP exchange of one request, as far as it got.
pub enum Exchange<'a> {
    /// The server answered.
    Answered {
        status: u16,
        reason: &'a str,
        content_type: Option<&'a str>,
        /// From a `Retry-After` header.
        retry_after: Option<Duration>,
        body: &'a [u8],
    },
    /// No answer: connection refused, reset, timeout, a body read error.
    Transport(String),
}

/// Whether a request that got `status` is worth sending again: timeouts,
/// throttling and the server errors that are usually passing (PS3.18 and
/// RFC 9110); never a client error, which would fail the same way.
fn retry_for_status(status: u16, retry_after: Option<Duration>) -> Retry {
    match status {
        408 | 429 | 500 | 502 | 503 | 504 => retry_after.map_or(Retry::Yes, Retry::After),
        _ => Retry::No,
    }
}

/// What to add to the reason of an error status an operator can act on.
fn hint(status: u16) -> &'static str {
    match status {
        411 => " (the server wants a Content-Length: set chunked=false on the web application)",
        413 => " (the request exceeds the server's size limit)",
        401 => " (check bearer-token, basic-auth or the OAuth2 client of the web application)",
        _ => "",
    }
}

/// The result for an instance the server listed as failed. A duplicate the
/// server already holds counts as stored, with a warning; out of resources
/// is worth retrying.
fn listed_failure(
    sop: &str,
    http: &str,
    reason: Option<u16>,
    retry_after: Option<Duration>,
) -> InstanceResult {
    let (status, text, retry) = match reason {
        Some(0x0111) => (
            InstanceStatus::Warning,
            format!(
                "{http}: already stored at the destination, FailureReason {}",
                describe_status(0x0111)
            ),
            Retry::No,
        ),
        Some(code) => (
            InstanceStatus::Failed,
            format!("{http}: FailureReason {}", describe_status(code)),
            if (0xA700..=0xA7FF).contains(&code) {
                retry_after.map_or(Retry::Yes, Retry::After)
            } else {
                Retry::No
            },
        ),
        None => (
            InstanceStatus::Failed,
            format!("{http}: in FailedSOPSequence without FailureReason"),
            Retry::No,
        ),
    };
    InstanceResult {
        sop_iuid: sop.to_string(),
        status,
        reason: Some(text),
        retry,
    }
}

/// Decides each sent instance's result from the response.
pub fn classify(sent: &[String], exchange: Exchange<'_>) -> Vec<InstanceResult> {
    let failed = |sop: &String, reason: String, retry: Retry| InstanceResult {
        sop_iuid: sop.clone(),
        status: InstanceStatus::Failed,
        reason: Some(reason),
        retry,
    };
    let (status, reason, content_type, retry_after, body) = match exchange {
        // No answer: the next attempt may well get one.
        Exchange::Transport(e) => {
            return sent
                .iter()
                .map(|s| failed(s, e.clone(), Retry::Yes))
                .collect();
        }
        Exchange::Answered {
            status,
            reason,
            content_type,
            retry_after,
            body,
        } => (status, reason, content_type, retry_after, body),
    };
    let http = format!("HTTP {status} {reason}").trim_end().to_string();
    let success = (200..300).contains(&status);
    let status_retry = retry_for_status(status, retry_after);
    let error = || {
        let snippet = snippet(body);
        let hint = hint(status);
        if snippet.is_empty() {
            format!("{http}{hint}")
        } else {
            format!("{http}{hint}: {snippet}")
        }
    };
    let parsed = if body.is_empty() {
        Err("empty body".to_string())
    } else {
        parse(body, content_type)
    };
    sent.iter()
        .map(|sop| match &parsed {
            Ok(r) => match r.mentions.get(sop) {
                Some(Mention::Failed { reason }) => listed_failure(sop, &http, *reason, retry_after),
                Some(Mention::Referenced { warning }) if success => {
                    match warning.or(r.warning) {
                        Some(w) => InstanceResult {
                            sop_iuid: sop.clone(),
                            status: InstanceStatus::Warning,
                            reason: Some(format!("WarningReason {}", describe_status(w))),
                            retry: Retry::No,
                        },
                        None => InstanceResult {
                            sop_iuid: sop.clone(),
                            status: InstanceStatus::Completed,
                            reason: None,
                            retry: Retry::No,
                        },
                    }
                }
                Some(Mention::Referenced { .. }) => failed(
                    sop,
                    format!("{http} although the instance is in ReferencedSOPSequence"),
                    status_retry,
                ),
                // Orthanc's way of refusing a part: 200, and not a word
                // about it. Sending it again gets the same silence.
                None if success && !r.anonymous_failures.is_empty() => failed(
                    sop,
                    format!(
                        "{http}: not stored; the server failed {} part(s) it could not identify, with FailureReason {}",
                        r.anonymous_failures.len(),
                        r.anonymous_failures
                            .iter()
                            .map(|c| c.map_or("(none)".to_string(), describe_status))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    Retry::No,
                ),
                None if success => failed(
                    sop,
                    format!("{http} but the instance is in neither ReferencedSOPSequence nor FailedSOPSequence: not stored"),
                    Retry::No,
                ),
                // The body is a STOW response that does not name it: the
                // status says it all.
                None => failed(sop, format!("{http}{}", hint(status)), status_retry),
            },
            Err(e) if success => failed(
                sop,
                format!("{http} with an unreadable response body ({e}): {}", snippet(body)),
                Retry::No,
            ),
            Err(_) => failed(sop, error(), status_retry),
        })
        .collect()
}

/// The start of a body for an error message, on one line.
fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(200)]);
    let one_line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if body.len() > 200 {
        format!("{one_line}...")
    } else {
        one_line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent() -> Vec<String> {
        vec!["1.2.1".into(), "1.2.2".into(), "1.2.3".into()]
    }

    fn answered(status: u16, body: &str) -> Vec<InstanceResult> {
        classify(
            &sent(),
            Exchange::Answered {
                status,
                reason: "X",
                content_type: None,
                retry_after: None,
                body: body.as_bytes(),
            },
        )
    }

    const MIXED: &str = r#"{
      "00081190": {"vr":"UR","Value":["http://x/studies/1"]},
      "00081199": {"vr":"SQ","Value":[
        {"00081150":{"vr":"UI","Value":["1.2.840.10008.5.1.4.1.1.2"]},"00081155":{"vr":"UI","Value":["1.2.1"]}},
        {"00081155":{"vr":"UI","Value":["1.2.2"]},"00081196":{"vr":"US","Value":[45056]}}
      ]},
      "00081198": {"vr":"SQ","Value":[
        {"00081155":{"vr":"UI","Value":["1.2.3"]},"00081197":{"vr":"US","Value":[272]}}
      ]}
    }"#;

    #[test]
    fn mixed_202_response() {
        let r = answered(202, MIXED);
        assert_eq!(r[0].status, InstanceStatus::Completed);
        assert_eq!(r[1].status, InstanceStatus::Warning);
        assert!(r[1].reason.as_deref().unwrap().contains("0xB000"));
        assert_eq!(r[2].status, InstanceStatus::Failed);
        assert!(
            r[2].reason
                .as_deref()
                .unwrap()
                .contains("0x0110 (Processing failure)"),
            "{:?}",
            r[2]
        );
    }

    #[test]
    fn absent_instances_are_not_stored_even_with_200() {
        let r = answered(
            200,
            r#"{"00081199":{"vr":"SQ","Value":[{"00081155":{"vr":"UI","Value":["1.2.1"]}}]},"00081198":{"vr":"SQ"}}"#,
        );
        assert_eq!(r[0].status, InstanceStatus::Completed);
        assert_eq!(r[1].status, InstanceStatus::Failed);
        assert!(r[1].reason.as_deref().unwrap().contains("neither"));
    }

    #[test]
    fn empty_failed_sequence_is_not_a_failure() {
        let body = r#"{"00081199":{"vr":"SQ","Value":[{"00081155":{"vr":"UI","Value":["1.2.1"]}},{"00081155":{"vr":"UI","Value":["1.2.2"]}},{"00081155":{"vr":"UI","Value":["1.2.3"]}}]},"00081198":{"vr":"SQ","Value":[]}}"#;
        assert!(
            answered(200, body)
                .iter()
                .all(|r| r.status == InstanceStatus::Completed)
        );
    }

    #[test]
    fn conflict_and_garbage_and_transport() {
        let r = answered(
            409,
            r#"{"00081198":{"vr":"SQ","Value":[{"00081155":{"vr":"UI","Value":["1.2.1"]},"00081197":{"vr":"US","Value":[49152]}}]}}"#,
        );
        assert!(
            r[0].reason
                .as_deref()
                .unwrap()
                .starts_with("HTTP 409 X: FailureReason 0xC000")
        );
        assert_eq!(r[1].reason.as_deref(), Some("HTTP 409 X"));
        let r = answered(200, "<html>oops</html>");
        assert!(r.iter().all(|x| x.status == InstanceStatus::Failed));
        assert!(
            r[0].reason
                .as_deref()
                .unwrap()
                .contains("unreadable response body")
        );
        let r = answered(503, "<html>\n  busy\n</html>");
        assert_eq!(
            r[0].reason.as_deref(),
            Some("HTTP 503 X: <html> busy </html>")
        );
        let r = classify(&sent(), Exchange::Transport("connection refused".into()));
        assert!(
            r.iter()
                .all(|x| x.reason.as_deref() == Some("connection refused"))
        );
    }

    #[test]
    fn referenced_in_an_error_response_is_not_trusted() {
        let r = answered(500, MIXED);
        assert_eq!(r[0].status, InstanceStatus::Failed);
    }

    #[test]
    fn parse_tolerates_array_wrapping_and_string_numbers() {
        let r = parse_json(
            br#"[{"00081198":{"vr":"SQ","Value":[{"00081197":{"vr":"US","Value":["42752"]}}]}}]"#,
        )
        .unwrap();
        assert_eq!(r.anonymous_failures, vec![Some(0xA700)]);
        assert!(parse_json(b"[]").is_err());
    }

    const XML: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<NativeDicomModel xmlns="http://dicom.nema.org/PS3.19/models/NativeDICOM">
  <DicomAttribute tag="00081190" vr="UR" keyword="RetrieveURL"><Value number="1">http://x/studies/1</Value></DicomAttribute>
  <DicomAttribute tag="00081199" vr="SQ" keyword="ReferencedSOPSequence">
    <Item number="1">
      <DicomAttribute tag="00081150" vr="UI"><Value number="1">1.2.840.10008.5.1.4.1.1.2</Value></DicomAttribute>
      <DicomAttribute tag="00081155" vr="UI"><Value number="1">1.2.1</Value></DicomAttribute>
    </Item>
    <Item number="2">
      <DicomAttribute tag="00081155" vr="UI"><Value number="1">1.2.2</Value></DicomAttribute>
      <DicomAttribute tag="00081196" vr="US"><Value number="1">45056</Value></DicomAttribute>
    </Item>
  </DicomAttribute>
  <DicomAttribute tag="00081198" vr="SQ" keyword="FailedSOPSequence">
    <Item number="1">
      <DicomAttribute tag="00081155" vr="UI"><Value number="1">1.2.3</Value></DicomAttribute>
      <DicomAttribute tag="00081197" vr="US"><Value number="1">272</Value></DicomAttribute>
    </Item>
  </DicomAttribute>
</NativeDicomModel>"#;

    #[test]
    fn xml_response_reads_like_json() {
        assert_eq!(
            parse_xml(XML.as_bytes()).unwrap(),
            parse_json(MIXED.as_bytes()).unwrap()
        );
        let r = answered(202, XML);
        assert_eq!(r[0].status, InstanceStatus::Completed);
        assert_eq!(r[1].status, InstanceStatus::Warning);
        assert_eq!(r[2].status, InstanceStatus::Failed);
        assert!(parse_xml(b"<html><body>502</body></html>").is_err());
    }

    fn with(status: u16, body: &str, retry_after: Option<Duration>) -> Vec<InstanceResult> {
        classify(
            &sent(),
            Exchange::Answered {
                status,
                reason: "X",
                content_type: Some("application/dicom+json"),
                retry_after,
                body: body.as_bytes(),
            },
        )
    }

    #[test]
    fn transient_statuses_are_retried_and_client_errors_are_not() {
        for s in [408, 429, 500, 502, 503, 504] {
            assert_eq!(with(s, "", None)[0].retry, Retry::Yes, "{s}");
        }
        for s in [400, 401, 403, 404, 409, 411, 413, 415, 501] {
            assert_eq!(with(s, "", None)[0].retry, Retry::No, "{s}");
        }
        let r = with(503, "busy", Some(Duration::from_secs(7)));
        assert_eq!(r[0].retry, Retry::After(Duration::from_secs(7)));
        let r = classify(&sent(), Exchange::Transport("connection reset".into()));
        assert_eq!(r[0].retry, Retry::Yes);
        // A silent drop is not retried: the server would drop it again.
        let r = with(200, r#"{"00081199":{"vr":"SQ","Value":[]}}"#, None);
        assert_eq!(
            (r[0].status, r[0].retry),
            (InstanceStatus::Failed, Retry::No)
        );
    }

    #[test]
    fn hints_for_411_and_413() {
        let r = with(411, "", None);
        assert!(
            r[0].reason.as_deref().unwrap().contains("chunked=false"),
            "{:?}",
            r[0]
        );
        let r = with(413, "too big", None);
        assert!(
            r[0].reason.as_deref().unwrap().contains("size limit"),
            "{:?}",
            r[0]
        );
    }

    #[test]
    fn duplicate_is_stored_and_out_of_resources_is_retried() {
        let body = r#"{"00081198":{"vr":"SQ","Value":[
            {"00081155":{"vr":"UI","Value":["1.2.1"]},"00081197":{"vr":"US","Value":[273]}},
            {"00081155":{"vr":"UI","Value":["1.2.2"]},"00081197":{"vr":"US","Value":[42752]}}]}}"#;
        let r = with(409, body, None);
        assert_eq!(r[0].status, InstanceStatus::Warning);
        assert!(r[0].reason.as_deref().unwrap().contains("already stored"));
        assert_eq!(
            (r[1].status, r[1].retry),
            (InstanceStatus::Failed, Retry::Yes)
        );
        assert_eq!(r[2].retry, Retry::No);
    }
}
