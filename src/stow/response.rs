//! Reading a STOW-RS response (PS3.18 §10.5.3) and deciding, per instance
//! sent, whether it was stored.
//!
//! Unlike dcm4chee (which ignores the HTTP status and trusts the body) and
//! plain HTTP clients (which trust the status), both count: an instance is
//! completed only when the server names it in ReferencedSOPSequence of a
//! successful response. An instance the server does not mention at all is
//! *not* stored: Orthanc answers 200 and silently drops parts it dislikes.

use std::collections::HashMap;

use serde_json::Value;

use crate::queue::{InstanceResult, InstanceStatus};

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
        body: &'a [u8],
    },
    /// No answer: connection refused, reset, timeout, a body read error.
    Transport(String),
}

/// Decides each sent instance's result from the response.
pub fn classify(sent: &[String], exchange: Exchange<'_>) -> Vec<InstanceResult> {
    let failed = |sop: &String, reason: String| InstanceResult {
        sop_iuid: sop.clone(),
        status: InstanceStatus::Failed,
        reason: Some(reason),
    };
    let (status, reason, body) = match exchange {
        Exchange::Transport(e) => return sent.iter().map(|s| failed(s, e.clone())).collect(),
        Exchange::Answered {
            status,
            reason,
            body,
        } => (status, reason, body),
    };
    let http = format!("HTTP {status} {reason}").trim_end().to_string();
    let success = (200..300).contains(&status);
    let parsed = parse_json(body);
    sent.iter()
        .map(|sop| match &parsed {
            Ok(r) => match r.mentions.get(sop) {
                Some(Mention::Failed { reason }) => failed(
                    sop,
                    match reason {
                        Some(code) => format!("{http}: FailureReason {}", describe_status(*code)),
                        None => format!("{http}: in FailedSOPSequence without FailureReason"),
                    },
                ),
                Some(Mention::Referenced { warning }) if success => {
                    match warning.or(r.warning) {
                        Some(w) => InstanceResult {
                            sop_iuid: sop.clone(),
                            status: InstanceStatus::Warning,
                            reason: Some(format!("WarningReason {}", describe_status(w))),
                        },
                        None => InstanceResult {
                            sop_iuid: sop.clone(),
                            status: InstanceStatus::Completed,
                            reason: None,
                        },
                    }
                }
                Some(Mention::Referenced { .. }) => {
                    failed(sop, format!("{http} although the instance is in ReferencedSOPSequence"))
                }
                None if success => failed(
                    sop,
                    format!("{http} but the instance is in neither ReferencedSOPSequence nor FailedSOPSequence: not stored"),
                ),
                None => failed(sop, http.clone()),
            },
            Err(e) => {
                let snippet = snippet(body);
                if success {
                    failed(sop, format!("{http} with an unreadable response body ({e}): {snippet}"))
                } else if snippet.is_empty() {
                    failed(sop, http.clone())
                } else {
                    failed(sop, format!("{http}: {snippet}"))
                }
            }
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
}
