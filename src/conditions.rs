//! dcm4chee's match conditions (`dcmProperty` values of a `dcmExportRule`):
//! parsing `key=regex` and matching a received object against them.
//!
//! Grammar, as dcm4chee's `Conditions`:
//! - `Keyword=regex` or `(gggg,eeee)=regex` (also `ggggeeee`): some value
//!   of the attribute matches the regular expression as a whole;
//! - a trailing `!` on the key negates: `Modality!=SR|KO` holds when no
//!   value matches (an absent attribute included);
//! - `Seq.Keyword=regex`: a path through sequences, any item of each
//!   sequence on the way (`Seq[2].Keyword`: only the second item);
//! - `Keyword[n]=regex`: only the n-th value (1-based) of a multi-valued
//!   attribute;
//! - the keys `SendingApplicationEntityTitle`,
//!   `ReceivingApplicationEntityTitle`, `SendingHostname` and
//!   `ReceivingHostname` match the association's (or the HTTP request's)
//!   parties instead of an attribute.
//!
//! All conditions of a rule must hold; a rule without conditions matches
//! everything. An absent attribute has no value, so it matches nothing
//! (and its negation holds).
//!
//! Owns: the parsed form ([`Conditions`]) and matching. Must not touch:
//! the configuration's entries (config calls [`Conditions::parse`] and
//! reports the errors with DN and attribute), receiving, the task store.

use std::fmt;

use dicom_core::Tag;
use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry};
use dicom_dictionary_std::StandardDataDictionary;
use dicom_object::InMemDicomObject;
use regex::Regex;

/// The keys that name a party of the transfer rather than an attribute.
pub const SENDING_AET: &str = "SendingApplicationEntityTitle";
pub const RECEIVING_AET: &str = "ReceivingApplicationEntityTitle";
pub const SENDING_HOST: &str = "SendingHostname";
pub const RECEIVING_HOST: &str = "ReceivingHostname";

/// The longest regular expression accepted (bytes), and the compiled
/// size limit: a configuration entry cannot make matching costly.
const MAX_PATTERN: usize = 1024;
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// Sequence levels a path may go through.
const MAX_DEPTH: usize = 8;

/// Who sent an object and who received it: what the special keys match.
#[derive(Debug, Clone, Default)]
pub struct Parties {
    pub sending_aet: String,
    pub receiving_aet: String,
    pub sending_host: String,
    pub receiving_host: String,
}

/// The conditions of one rule, all of which must hold.
#[derive(Debug, Clone, Default)]
pub struct Conditions {
    list: Vec<Condition>,
}

#[derive(Debug, Clone)]
struct Condition {
    /// As configured, for listing.
    text: String,
    subject: Subject,
    negated: bool,
    pattern: Regex,
}

#[derive(Debug, Clone)]
enum Subject {
    Party(Party),
    Path(Vec<Step>),
}

#[derive(Debug, Clone, Copy)]
enum Party {
    SendingAet,
    ReceivingAet,
    SendingHost,
    ReceivingHost,
}

/// One step of a path: an attribute, and the 1-based position of the item
/// (sequence) or value (last step) when one is given.
#[derive(Debug, Clone, Copy)]
struct Step {
    tag: Tag,
    position: Option<usize>,
}

/// Why a condition could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConditionError {
    #[error("{0:?} is not key=regex")]
    NoEquals(String),
    #[error("{condition:?}: {key:?} is neither a DICOM keyword nor a tag (gggg,eeee)")]
    UnknownKey { condition: String, key: String },
    #[error("{condition:?}: position [{position}] is not a number from 1")]
    Position { condition: String, position: String },
    #[error("{condition:?}: a path of more than {MAX_DEPTH} sequence levels")]
    TooDeep { condition: String },
    #[error("{condition:?}: {key} names a party, not an attribute: it takes no path or position")]
    PartyPath { condition: String, key: String },
    #[error("{condition:?}: the regular expression is longer than {MAX_PATTERN} bytes")]
    PatternTooLong { condition: String },
    #[error("{condition:?}: invalid regular expression: {reason}")]
    Pattern { condition: String, reason: String },
}

/// The most of a configured value an error message repeats: a
/// `dcmProperty` value may be as long as the directory lets it be.
const SHOWN_MAX: usize = 200;

fn shown(s: &str) -> String {
    crate::text::clip(s, SHOWN_MAX)
}

impl Conditions {
    /// Parses `key=regex` values; the first error is returned (config
    /// reports it with the entry's DN and `dcmProperty`).
    pub fn parse<'a>(
        values: impl IntoIterator<Item = &'a str>,
    ) -> Result<Conditions, ConditionError> {
        let list = values
            .into_iter()
            .map(Condition::parse)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Conditions { list })
    }

    /// Whether every condition holds for `object` received between
    /// `parties`.
    pub fn matches(&self, object: &InMemDicomObject, parties: &Parties) -> bool {
        self.list.iter().all(|c| c.holds(object, parties))
    }

    /// The conditions as configured.
    pub fn texts(&self) -> Vec<String> {
        self.list.iter().map(|c| c.text.clone()).collect()
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }
}

impl fmt::Display for Conditions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.texts().join(" & "))
    }
}

impl Condition {
    fn parse(text: &str) -> Result<Condition, ConditionError> {
        let (key, regex) = text
            .split_once('=')
            .ok_or_else(|| ConditionError::NoEquals(shown(text)))?;
        let key = key.trim();
        let (key, negated) = match key.strip_suffix('!') {
            Some(k) => (k.trim_end(), true),
            None => (key, false),
        };
        if regex.len() > MAX_PATTERN {
            return Err(ConditionError::PatternTooLong {
                condition: shown(text),
            });
        }
        // Anchored: dcm4chee matches the whole value (Java's matches()).
        let pattern = regex::RegexBuilder::new(&format!("^(?:{regex})$"))
            .size_limit(REGEX_SIZE_LIMIT)
            .build()
            .map_err(|e| ConditionError::Pattern {
                condition: shown(text),
                reason: crate::text::clip(&e.to_string(), SHOWN_MAX),
            })?;
        let party = match key {
            SENDING_AET => Some(Party::SendingAet),
            RECEIVING_AET => Some(Party::ReceivingAet),
            SENDING_HOST => Some(Party::SendingHost),
            RECEIVING_HOST => Some(Party::ReceivingHost),
            _ => None,
        };
        let subject = match party {
            Some(p) => Subject::Party(p),
            None => Subject::Path(parse_path(text, key)?),
        };
        Ok(Condition {
            text: text.to_string(),
            subject,
            negated,
            pattern,
        })
    }

    fn holds(&self, object: &InMemDicomObject, parties: &Parties) -> bool {
        let found = match &self.subject {
            Subject::Party(p) => {
                let v = match p {
                    Party::SendingAet => &parties.sending_aet,
                    Party::ReceivingAet => &parties.receiving_aet,
                    Party::SendingHost => &parties.sending_host,
                    Party::ReceivingHost => &parties.receiving_host,
                };
                self.pattern.is_match(v)
            }
            Subject::Path(steps) => path_matches(object, steps, &self.pattern),
        };
        found != self.negated
    }
}

/// `Seq[1].Other.Keyword[2]` into steps; a party key inside a path is an
/// error.
fn parse_path(condition: &str, key: &str) -> Result<Vec<Step>, ConditionError> {
    let mut steps = Vec::new();
    for part in split_path(key) {
        let (name, position) = match part.strip_suffix(']').and_then(|p| p.rsplit_once('[')) {
            Some((name, pos)) => {
                let n = pos
                    .trim()
                    .parse::<usize>()
                    .ok()
                    .filter(|n| *n >= 1)
                    .ok_or_else(|| ConditionError::Position {
                        condition: shown(condition),
                        position: shown(pos),
                    })?;
                (name.trim(), Some(n))
            }
            None => (part.trim(), None),
        };
        if [SENDING_AET, RECEIVING_AET, SENDING_HOST, RECEIVING_HOST].contains(&name) {
            return Err(ConditionError::PartyPath {
                condition: shown(condition),
                key: shown(name),
            });
        }
        let tag = tag_of(name).ok_or_else(|| ConditionError::UnknownKey {
            condition: shown(condition),
            key: shown(name),
        })?;
        steps.push(Step { tag, position });
    }
    if steps.len() > MAX_DEPTH + 1 {
        return Err(ConditionError::TooDeep {
            condition: shown(condition),
        });
    }
    if steps.is_empty() {
        return Err(ConditionError::UnknownKey {
            condition: shown(condition),
            key: shown(key),
        });
    }
    Ok(steps)
}

/// Splits at the dots between steps; a tag `(0008,0060)` holds no dot, so
/// a plain split is enough, but empty parts are kept (an error later).
fn split_path(key: &str) -> impl Iterator<Item = &str> {
    key.split('.')
}

/// A keyword of the standard dictionary, `(gggg,eeee)` or `ggggeeee`.
fn tag_of(name: &str) -> Option<Tag> {
    let hex = |s: &str| {
        (s.len() == 4 && s.chars().all(|c| c.is_ascii_hexdigit()))
            .then(|| u16::from_str_radix(s, 16).ok())
            .flatten()
    };
    if let Some(inner) = name.strip_prefix('(').and_then(|n| n.strip_suffix(')')) {
        let (g, e) = inner.split_once(',')?;
        return Some(Tag(hex(g.trim())?, hex(e.trim())?));
    }
    if name.len() == 8 && name.chars().all(|c| c.is_ascii_hexdigit()) {
        return Some(Tag(hex(&name[..4])?, hex(&name[4..])?));
    }
    StandardDataDictionary.by_name(name).map(|e| e.tag())
}

/// Whether some value at the end of `steps` (through any, or the given,
/// item of each sequence) matches `pattern`.
fn path_matches(object: &InMemDicomObject, steps: &[Step], pattern: &Regex) -> bool {
    let Some((step, rest)) = steps.split_first() else {
        return false;
    };
    let Ok(Some(element)) = object.element_opt(step.tag) else {
        return false;
    };
    if rest.is_empty() {
        let Ok(values) = element.to_multi_str() else {
            return false;
        };
        return match step.position {
            Some(n) => values
                .get(n - 1)
                .is_some_and(|v| pattern.is_match(v.trim_end_matches([' ', '\0']))),
            None => values
                .iter()
                .any(|v| pattern.is_match(v.trim_end_matches([' ', '\0']))),
        };
    }
    let Some(items) = element.items() else {
        return false;
    };
    match step.position {
        Some(n) => items
            .get(n - 1)
            .is_some_and(|item| path_matches(item, rest, pattern)),
        None => items.iter().any(|item| path_matches(item, rest, pattern)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dicom_core::value::DataSetSequence;
    use dicom_core::{DataElement, PrimitiveValue, VR};
    use dicom_dictionary_std::tags;

    fn object() -> InMemDicomObject {
        let mut o = InMemDicomObject::new_empty();
        o.put(DataElement::new(
            tags::MODALITY,
            VR::CS,
            PrimitiveValue::from("CT"),
        ));
        o.put(DataElement::new(
            tags::IMAGE_TYPE,
            VR::CS,
            PrimitiveValue::Strs(
                ["ORIGINAL", "PRIMARY", "AXIAL"]
                    .map(String::from)
                    .into_iter()
                    .collect(),
            ),
        ));
        o.put(DataElement::new(
            tags::INSTITUTION_NAME,
            VR::LO,
            PrimitiveValue::from("General Hospital "),
        ));
        let item = |code: &str| {
            let mut i = InMemDicomObject::new_empty();
            i.put(DataElement::new(
                tags::CODE_VALUE,
                VR::SH,
                PrimitiveValue::from(code),
            ));
            i
        };
        o.put(DataElement::new(
            tags::REQUEST_ATTRIBUTES_SEQUENCE,
            VR::SQ,
            DataSetSequence::from(vec![item("A1"), item("B2")]),
        ));
        o
    }

    fn parties() -> Parties {
        Parties {
            sending_aet: "MODALITY1".into(),
            receiving_aet: "DCM4CHEE".into(),
            sending_host: "ct1.example".into(),
            receiving_host: "archive.example".into(),
        }
    }

    fn check(conditions: &[&str]) -> bool {
        Conditions::parse(conditions.iter().copied())
            .unwrap()
            .matches(&object(), &parties())
    }

    #[test]
    fn keyword_and_tag_conditions_match_the_whole_value() {
        assert!(check(&["Modality=CT|MR"]));
        assert!(!check(&["Modality=C"]), "anchored, as Java's matches()");
        assert!(check(&["(0008,0060)=CT"]));
        assert!(check(&["00080060=CT"]));
        assert!(
            check(&["InstitutionName=General Hospital"]),
            "padding ignored"
        );
        assert!(check(&[]), "no condition: everything");
    }

    #[test]
    fn negation_holds_when_no_value_matches_an_absent_attribute_included() {
        assert!(check(&["Modality!=SR|KO"]));
        assert!(!check(&["Modality!=CT"]));
        assert!(check(&["StationName!=.*"]), "absent");
        assert!(!check(&["StationName=.*"]), "absent matches nothing");
    }

    #[test]
    fn values_positions_sequences_and_parties() {
        assert!(check(&["ImageType=AXIAL"]), "any value");
        assert!(check(&["ImageType[2]=PRIMARY"]));
        assert!(!check(&["ImageType[3]=PRIMARY"]));
        assert!(
            check(&["RequestAttributesSequence.CodeValue=B2"]),
            "any item"
        );
        assert!(!check(&["RequestAttributesSequence[1].CodeValue=B2"]));
        assert!(check(&["RequestAttributesSequence[2].CodeValue=B2"]));
        assert!(check(&["SendingApplicationEntityTitle=MODALITY\\d"]));
        assert!(check(&["ReceivingApplicationEntityTitle=DCM4CHEE"]));
        assert!(check(&[
            "SendingHostname=ct1\\..*",
            "ReceivingHostname!=ct1.*"
        ]));
        assert!(
            !check(&["Modality=CT", "SendingApplicationEntityTitle=OTHER"]),
            "all must hold"
        );
    }

    #[test]
    fn malformed_conditions_are_refused_with_what_is_wrong() {
        let err = |c: &str| Conditions::parse([c]).unwrap_err();
        assert!(matches!(err("Modality"), ConditionError::NoEquals(_)));
        assert!(matches!(
            err("NoSuchKeyword=x"),
            ConditionError::UnknownKey { .. }
        ));
        assert!(matches!(
            err("(0008,XYZ0)=x"),
            ConditionError::UnknownKey { .. }
        ));
        assert!(matches!(
            err("ImageType[0]=x"),
            ConditionError::Position { .. }
        ));
        assert!(matches!(
            err("Modality=(unclosed"),
            ConditionError::Pattern { .. }
        ));
        assert!(matches!(
            err("RequestAttributesSequence.SendingHostname=x"),
            ConditionError::PartyPath { .. }
        ));
        let long = format!("Modality={}", "a".repeat(MAX_PATTERN + 1));
        assert!(matches!(err(&long), ConditionError::PatternTooLong { .. }));
        assert!(err("Bogus=x").to_string().contains("Bogus"));
    }
}
