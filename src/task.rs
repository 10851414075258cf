//! The export task record, with dcm4chee's field names and statuses.
//!
//! A [`TaskRequest`] is what a producer asks for (REST trigger, CLI, or an
//! AMQP message); an [`ExportTask`] is the record the queue keeps and the
//! monitor API shows.
//!
//! Owns the record's shape, its JSON names and the checks of a request;
//! it stores nothing (that is a task store's, [`crate::queue`]) and
//! decides no outcome (that is [`crate::outcome`] and [`crate::export`]).

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// dcm4chee's `Task.Status`, written with spaces as its REST API does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Status {
    #[serde(rename = "SCHEDULED")]
    Scheduled,
    #[serde(rename = "SCHEDULED FOR RETRY")]
    ScheduledForRetry,
    #[serde(rename = "IN PROCESS")]
    InProcess,
    #[serde(rename = "COMPLETED")]
    Completed,
    #[serde(rename = "WARNING")]
    Warning,
    #[serde(rename = "FAILED")]
    Failed,
    #[serde(rename = "CANCELED")]
    Canceled,
}

impl Status {
    pub const ALL: [Status; 7] = [
        Status::Scheduled,
        Status::ScheduledForRetry,
        Status::InProcess,
        Status::Completed,
        Status::Warning,
        Status::Failed,
        Status::Canceled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Scheduled => "SCHEDULED",
            Status::ScheduledForRetry => "SCHEDULED FOR RETRY",
            Status::InProcess => "IN PROCESS",
            Status::Completed => "COMPLETED",
            Status::Warning => "WARNING",
            Status::Failed => "FAILED",
            Status::Canceled => "CANCELED",
        }
    }

    /// COMPLETED, WARNING, FAILED and CANCELED are final.
    pub fn is_done(self) -> bool {
        matches!(
            self,
            Status::Completed | Status::Warning | Status::Failed | Status::Canceled
        )
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A status name that is none of [`Status::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown task status {0:?}")]
pub struct UnknownStatus(pub String);

impl FromStr for Status {
    type Err = UnknownStatus;
    fn from_str(s: &str) -> Result<Status, UnknownStatus> {
        Status::ALL
            .into_iter()
            .find(|st| {
                st.as_str().eq_ignore_ascii_case(s.trim())
                    || st.as_str().replace(' ', "_").eq_ignore_ascii_case(s.trim())
            })
            .ok_or_else(|| UnknownStatus(s.to_string()))
    }
}

/// What a producer asks to export. Field names are dcm4chee's, so other
/// systems can publish tasks with the names they already know.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskRequest {
    #[serde(rename = "ExporterID")]
    pub exporter_id: String,
    #[serde(rename = "StudyInstanceUID")]
    pub study_iuid: String,
    #[serde(
        rename = "SeriesInstanceUID",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub series_iuid: Option<String>,
    #[serde(
        rename = "SOPInstanceUID",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub sop_iuid: Option<String>,
    #[serde(rename = "batchID", default, skip_serializing_if = "Option::is_none")]
    pub batch_id: Option<String>,
    #[serde(
        rename = "scheduledTime",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub scheduled_time: Option<DateTime<Utc>>,
}

/// The longest `ExporterID` a task request may name, in characters
/// (dcm4chee's column width); a longer one is refused (REST 400, CLI error,
/// AMQP dead-letter) naming the field and the limit.
pub const MAX_EXPORTER_ID_CHARS: usize = 255;
/// The longest `batchID`, in characters (dcm4chee's column width); refused
/// like [`MAX_EXPORTER_ID_CHARS`].
pub const MAX_BATCH_ID_CHARS: usize = 255;

/// Why a task request is not acceptable.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct RequestError {
    pub field: &'static str,
    pub message: String,
}

impl TaskRequest {
    /// Checks every field: the texts against their length limits (and for
    /// control characters, which have no place in an ID and would reach
    /// logs and CSV files), the UIDs as UIDs (at most 64 characters): `*`
    /// (dcm4chee's "all") is accepted for series and instance.
    pub fn validate(&self) -> Result<(), RequestError> {
        if self.exporter_id.trim().is_empty() {
            return Err(RequestError {
                field: "ExporterID",
                message: "must not be empty".into(),
            });
        }
        check_text("ExporterID", &self.exporter_id, MAX_EXPORTER_ID_CHARS)?;
        if let Some(b) = &self.batch_id {
            check_text("batchID", b, MAX_BATCH_ID_CHARS)?;
        }
        check_uid("StudyInstanceUID", &self.study_iuid)?;
        if let Some(s) = &self.series_iuid {
            check_uid("SeriesInstanceUID", s)?;
        }
        if let Some(s) = &self.sop_iuid {
            check_uid("SOPInstanceUID", s)?;
            if self.series_iuid.is_none() {
                return Err(RequestError {
                    field: "SOPInstanceUID",
                    message: "needs SeriesInstanceUID".into(),
                });
            }
        }
        Ok(())
    }

    /// Normalises dcm4chee's `*` placeholders to "not given".
    pub fn normalized(mut self) -> TaskRequest {
        if self.series_iuid.as_deref() == Some("*") {
            self.series_iuid = None;
        }
        if self.sop_iuid.as_deref() == Some("*") {
            self.sop_iuid = None;
        }
        self
    }
}

/// True for a syntactically valid DICOM UID (digits and dots, at most 64).
pub fn is_uid(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && !s.starts_with('.')
        && !s.ends_with('.')
        && !s.contains("..")
}

fn check_uid(field: &'static str, v: &str) -> Result<(), RequestError> {
    if v == "*" && field != "StudyInstanceUID" {
        return Ok(());
    }
    if is_uid(v) {
        Ok(())
    } else if v.len() > 64 {
        // Not echoed: it may be anything up to the size of the request.
        Err(RequestError {
            field,
            message: format!(
                "is not a DICOM UID: {} characters, over 64",
                v.chars().count()
            ),
        })
    } else {
        Err(RequestError {
            field,
            message: format!("{v:?} is not a DICOM UID"),
        })
    }
}

/// A text field: at most `max` characters, no control characters. The
/// value is not echoed (it may be long or meant to garble a log line).
fn check_text(field: &'static str, v: &str, max: usize) -> Result<(), RequestError> {
    let n = v.chars().count();
    if n > max {
        return Err(RequestError {
            field,
            message: format!("{n} characters, longer than the limit of {max}"),
        });
    }
    if v.chars().any(char::is_control) {
        return Err(RequestError {
            field,
            message: "must not contain control characters".into(),
        });
    }
    Ok(())
}

/// Per-instance counts of one run, as in dcm4chee's outcome message.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub completed: u64,
    pub warning: u64,
    pub failed: u64,
    /// Indexed instances whose stored file is gone.
    pub missing: u64,
    /// Not attempted (canceled before their turn).
    pub remaining: u64,
}

/// The task record the queue keeps and the monitor API lists.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExportTask {
    #[serde(rename = "taskID")]
    pub task_id: String,
    #[serde(rename = "dicomDeviceName")]
    pub device_name: String,
    pub queue: String,
    #[serde(rename = "type")]
    pub task_type: String,
    pub status: Status,
    #[serde(rename = "batchID", skip_serializing_if = "Option::is_none")]
    pub batch_id: Option<String>,
    #[serde(rename = "createdTime")]
    pub created_time: DateTime<Utc>,
    #[serde(rename = "updatedTime")]
    pub updated_time: DateTime<Utc>,
    #[serde(rename = "scheduledTime")]
    pub scheduled_time: DateTime<Utc>,
    #[serde(
        rename = "processingStartTime",
        skip_serializing_if = "Option::is_none"
    )]
    pub processing_start_time: Option<DateTime<Utc>>,
    #[serde(rename = "processingEndTime", skip_serializing_if = "Option::is_none")]
    pub processing_end_time: Option<DateTime<Utc>>,
    pub failures: u32,
    #[serde(rename = "outcomeMessage", skip_serializing_if = "Option::is_none")]
    pub outcome_message: Option<String>,
    #[serde(rename = "errorMessage", skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
    #[serde(rename = "ExporterID")]
    pub exporter_id: String,
    #[serde(rename = "LocalAET", skip_serializing_if = "Option::is_none")]
    pub local_aet: Option<String>,
    #[serde(rename = "StudyInstanceUID")]
    pub study_iuid: String,
    /// `*` for a study-level export, as dcm4chee writes it.
    #[serde(rename = "SeriesInstanceUID")]
    pub series_iuid: String,
    #[serde(rename = "SOPInstanceUID")]
    pub sop_iuid: String,
    #[serde(rename = "NumberOfInstances", skip_serializing_if = "Option::is_none")]
    pub number_of_instances: Option<u64>,
    pub completed: u64,
    pub warning: u64,
    pub failed: u64,
    pub missing: u64,
}

impl ExportTask {
    /// dcm4chee's entity text: `Study[uid=S]`, `Series[uid=X] of Study[uid=S]`,
    /// `Instance[uid=I] of Series[uid=X] of Study[uid=S]`.
    pub fn entity(&self) -> String {
        entity(
            &self.study_iuid,
            opt(&self.series_iuid),
            opt(&self.sop_iuid),
        )
    }

    pub fn series(&self) -> Option<&str> {
        opt(&self.series_iuid)
    }

    pub fn instance(&self) -> Option<&str> {
        opt(&self.sop_iuid)
    }
}

fn opt(s: &str) -> Option<&str> {
    (s != "*" && !s.is_empty()).then_some(s)
}

/// See [`ExportTask::entity`].
pub fn entity(study: &str, series: Option<&str>, instance: Option<&str>) -> String {
    match (series, instance) {
        (Some(se), Some(i)) => {
            format!("Instance[uid={i}] of Series[uid={se}] of Study[uid={study}]")
        }
        (Some(se), None) => format!("Series[uid={se}] of Study[uid={study}]"),
        _ => format!("Study[uid={study}]"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_names_are_dcm4chee_names() {
        assert_eq!(
            serde_json::to_string(&Status::ScheduledForRetry).unwrap(),
            "\"SCHEDULED FOR RETRY\""
        );
        assert_eq!("in process".parse::<Status>().unwrap(), Status::InProcess);
        assert_eq!("IN_PROCESS".parse::<Status>().unwrap(), Status::InProcess);
        assert!("DONE".parse::<Status>().is_err());
    }

    #[test]
    fn request_json_uses_dcm4chee_names_and_validates() {
        let r: TaskRequest = serde_json::from_str(
            r#"{"ExporterID":"StowExporter","StudyInstanceUID":"1.2.3","SeriesInstanceUID":"*","batchID":"b1"}"#,
        )
        .unwrap();
        r.validate().unwrap();
        assert_eq!(r.clone().normalized().series_iuid, None);
        let bad: TaskRequest =
            serde_json::from_str(r#"{"ExporterID":"X","StudyInstanceUID":"../etc"}"#).unwrap();
        assert_eq!(bad.validate().unwrap_err().field, "StudyInstanceUID");
        assert!(serde_json::from_str::<TaskRequest>(r#"{"ExporterID":"X"}"#).is_err());
        assert!(
            serde_json::from_str::<TaskRequest>(
                r#"{"ExporterID":"X","StudyInstanceUID":"1","Oops":1}"#
            )
            .is_err()
        );
    }

    #[test]
    fn text_fields_are_bounded() {
        let mut r: TaskRequest =
            serde_json::from_str(r#"{"ExporterID":"X","StudyInstanceUID":"1.2"}"#).unwrap();
        r.batch_id = Some("b".repeat(MAX_BATCH_ID_CHARS));
        r.validate().unwrap();
        r.batch_id = Some("b".repeat(MAX_BATCH_ID_CHARS + 1));
        let e = r.validate().unwrap_err();
        assert_eq!(e.field, "batchID");
        assert!(e.to_string().contains("limit of 255"), "{e}");
        r.batch_id = Some("a\nb".into());
        assert_eq!(r.validate().unwrap_err().field, "batchID");
        r.batch_id = None;
        r.exporter_id = "E".repeat(MAX_EXPORTER_ID_CHARS + 1);
        assert_eq!(r.validate().unwrap_err().field, "ExporterID");
        r.exporter_id = "X".into();
        r.study_iuid = "1".repeat(65);
        let e = r.validate().unwrap_err();
        assert_eq!(e.field, "StudyInstanceUID");
        assert!(!e.to_string().contains("11111"), "not echoed: {e}");
    }

    #[test]
    fn entity_text() {
        assert_eq!(entity("1", None, None), "Study[uid=1]");
        assert_eq!(
            entity("1", Some("2"), None),
            "Series[uid=2] of Study[uid=1]"
        );
        assert_eq!(
            entity("1", Some("2"), Some("3")),
            "Instance[uid=3] of Series[uid=2] of Study[uid=1]"
        );
    }
}
