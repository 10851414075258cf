//! Reading a STOW-RS response (PS3.18 §10.5.3) and deciding, per instance
//! sent, whether it was stored.
//!
//! Unlike dcm4chee (which ignores the HTTP status and trusts the body) and
//! plain HTTP clients (which trust the status), both count: an instance is
//! completed only when the server names it in ReferencedSOPSequence of a
//! successful response. An instance the server does not mention at all is
//! *not* stored: Orthanc answers 200 and silently drops parts it dislikes.
//!
//! What is kept of a reply is bounded whatever the destination sends: the
//! body is read only up to a limit (`MAX_REPLY_BYTES` in the parent module;
//! a larger one is [`Exchange::TooLarge`]), parsing streams through it and
//! keeps only the mentions of instances that were sent and a count per
//! FailureReason of the parts the server could not identify, and every
//! per-instance reason is at most [`MAX_REASON_CHARS`] long, with any text
//! quoted from the reply at most [`MAX_SERVER_TEXT_CHARS`].

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::time::Duration;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::outcome::{FailureKind, InstanceResult};
use crate::text::clip;

const REFERENCED_SOP_SEQUENCE: &str = "00081199";
const FAILED_SOP_SEQUENCE: &str = "00081198";
const REFERENCED_SOP_INSTANCE_UID: &str = "00081155";
const WARNING_REASON: &str = "00081196";
const FAILURE_REASON: &str = "00081197";

/// A per-instance reason is cut to this many characters. A reason goes into
/// the instance's stored result, the log line of the instance and the
/// task's errorMessage, once per instance: it must not grow with the reply.
pub const MAX_REASON_CHARS: usize = 1024;

/// Text quoted from a reply (the start of a body that is not a STOW-RS
/// response, a parser's message that may quote the reply) is cut to this
/// many characters.
pub const MAX_SERVER_TEXT_CHARS: usize = 200;

/// At most this many distinct FailureReasons of failed parts the server
/// could not identify are listed in a reason (the most frequent first);
/// the others are summed up as "and K more".
pub const MAX_LISTED_FAILURE_REASONS: usize = 5;

/// An XML reply nested deeper than this many elements is refused: a Native
/// DICOM Model STOW-RS response is five deep.
pub const MAX_XML_DEPTH: usize = 32;

/// A UID has at most 64 characters (PS3.5 §9.1): a longer value names no
/// instance that was sent, and is not kept.
const MAX_UID_CHARS: usize = 64;

/// What the server said about one SOP instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mention {
    Referenced { warning: Option<u16> },
    Failed { reason: Option<u16> },
}

/// The parsed body of a STOW-RS response.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StowResponse {
    /// Keyed by SOP Instance UID. A failure wins over a reference to the
    /// same UID.
    pub mentions: HashMap<String, Mention>,
    /// Failed items without a SOP Instance UID (a part the server could not
    /// read), counted by FailureReason (`None`: the item has none).
    pub anonymous_failures: BTreeMap<Option<u16>, u64>,
    /// A top-level WarningReason.
    pub warning: Option<u16>,
}

impl StowResponse {
    /// How many failed items had no SOP Instance UID.
    pub fn anonymous_count(&self) -> u64 {
        self.anonymous_failures.values().sum()
    }
}

/// Why a reply body is not a STOW-RS response. The messages quote at most
/// [`MAX_SERVER_TEXT_CHARS`] of what the reply held.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("empty body")]
    Empty,
    #[error("not DICOM JSON: {0}")]
    Json(String),
    #[error("not XML: {0}")]
    Xml(String),
    #[error("not a Native DICOM Model document (no NativeDicomModel element)")]
    NoXmlRoot,
    #[error("XML nested deeper than {MAX_XML_DEPTH} elements")]
    XmlTooDeep,
}

/// Which mentions a parse keeps: all (of UID length), or those of the
/// instances sent.
#[derive(Clone, Copy)]
enum Keep<'a> {
    All,
    Only(&'a HashSet<&'a str>),
}

impl Keep<'_> {
    fn keeps(self, uid: &str) -> bool {
        uid.len() <= MAX_UID_CHARS
            && match self {
                Keep::All => true,
                Keep::Only(sent) => sent.contains(uid),
            }
    }
}

/// Which top-level sequence an item is in.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Seq {
    Referenced,
    Failed,
}

/// A value of a UI or US attribute, as far as it matters here.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Scalar {
    /// A string of at most [`MAX_UID_CHARS`], without trailing padding.
    Str(String),
    /// A longer string: no UID sent, no number.
    TooLong,
    Number(u64),
    /// Anything else (negative, fractional, boolean, null, nested).
    Other,
}

impl Scalar {
    fn from_str(s: &str) -> Scalar {
        let s = s.trim_end_matches(['\0', ' ']);
        if s.len() > MAX_UID_CHARS {
            Scalar::TooLong
        } else {
            Scalar::Str(s.to_string())
        }
    }

    /// As US: a number (or a string, as some servers send) that fits.
    fn us(&self) -> Option<u16> {
        match self {
            Scalar::Number(n) => u16::try_from(*n).ok(),
            Scalar::Str(s) => s.trim().parse().ok(),
            _ => None,
        }
    }
}

/// The fields of one sequence item that matter.
#[derive(Default)]
struct ItemFields {
    uid: Option<Scalar>,
    warning: Option<u16>,
    failure: Option<u16>,
}

/// Where a parse puts what it finds.
struct Sink<'a> {
    r: StowResponse,
    keep: Keep<'a>,
}

impl Sink<'_> {
    fn item(&mut self, seq: Seq, f: ItemFields) {
        let uid = match f.uid {
            Some(Scalar::Str(s)) if !s.is_empty() => Some(s),
            // Names an instance, but none that was sent.
            Some(Scalar::TooLong) => return,
            _ => None,
        };
        match (seq, uid) {
            (Seq::Referenced, Some(uid)) if self.keep.keeps(&uid) => {
                self.r
                    .mentions
                    .entry(uid)
                    .or_insert(Mention::Referenced { warning: f.warning });
            }
            (Seq::Failed, Some(uid)) if self.keep.keeps(&uid) => {
                self.r
                    .mentions
                    .insert(uid, Mention::Failed { reason: f.failure });
            }
            (Seq::Failed, None) => *self.r.anonymous_failures.entry(f.failure).or_default() += 1,
            _ => {}
        }
    }
}

/// Parses a response body as DICOM XML when the Content-Type says XML or
/// the body starts with `<`, else as DICOM JSON; keeps every mention.
pub fn parse(body: &[u8], content_type: Option<&str>) -> Result<StowResponse, ParseError> {
    parse_keeping(body, content_type, Keep::All)
}

fn parse_keeping(
    body: &[u8],
    content_type: Option<&str>,
    keep: Keep<'_>,
) -> Result<StowResponse, ParseError> {
    if body.is_empty() {
        return Err(ParseError::Empty);
    }
    let mut sink = Sink {
        r: StowResponse::default(),
        keep,
    };
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    if content_type.is_some_and(|c| c.contains("xml")) || first == Some(&b'<') {
        xml_into(body, &mut sink)?;
    } else {
        json_into(body, &mut sink)?;
    }
    Ok(sink.r)
}

/// Parses a Native DICOM Model (PS3.19 Annex A) STOW-RS response body:
/// `DicomAttribute` elements with `Item`s and `Value`s.
pub fn parse_xml(body: &[u8]) -> Result<StowResponse, ParseError> {
    let mut sink = Sink {
        r: StowResponse::default(),
        keep: Keep::All,
    };
    xml_into(body, &mut sink)?;
    Ok(sink.r)
}

/// Parses a DICOM JSON (PS3.18 Annex F) STOW-RS response body.
pub fn parse_json(body: &[u8]) -> Result<StowResponse, ParseError> {
    let mut sink = Sink {
        r: StowResponse::default(),
        keep: Keep::All,
    };
    json_into(body, &mut sink)?;
    Ok(sink.r)
}

/// An attribute tag of interest, from an XML `tag` or a JSON key.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Tag {
    Referenced,
    Failed,
    Uid,
    Warning,
    Failure,
    Other,
}

impl Tag {
    fn of(s: &str) -> Tag {
        if s.len() != 8 {
            return Tag::Other;
        }
        match s.to_ascii_uppercase().as_str() {
            REFERENCED_SOP_SEQUENCE => Tag::Referenced,
            FAILED_SOP_SEQUENCE => Tag::Failed,
            REFERENCED_SOP_INSTANCE_UID => Tag::Uid,
            WARNING_REASON => Tag::Warning,
            FAILURE_REASON => Tag::Failure,
            _ => Tag::Other,
        }
    }
}

fn xml_into(body: &[u8], sink: &mut Sink<'_>) -> Result<(), ParseError> {
    use quick_xml::events::Event;
    /// Where the reader is: the attribute and item it is in.
    enum Frame {
        Attr(Tag),
        Item(ItemFields),
        Value,
        Other,
    }
    let mut reader = quick_xml::Reader::from_reader(body);
    let mut stack: Vec<Frame> = Vec::new();
    let mut saw_root = false;
    let mut buf = Vec::new();
    loop {
        let ev = reader
            .read_event_into(&mut buf)
            .map_err(|e| ParseError::Xml(clip(&e.to_string(), MAX_SERVER_TEXT_CHARS)))?;
        match ev {
            Event::Start(e) => {
                if stack.len() >= MAX_XML_DEPTH {
                    return Err(ParseError::XmlTooDeep);
                }
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
                            .map_or(Tag::Other, |a| Tag::of(&a.value));
                        Frame::Attr(tag)
                    }
                    "Item" => Frame::Item(ItemFields::default()),
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
                    let value = Scalar::from_str(t.trim());
                    let tag = *tag;
                    match (stack[..n - 2].last_mut(), tag) {
                        (Some(Frame::Item(f)), Tag::Uid) => f.uid = Some(value),
                        (Some(Frame::Item(f)), Tag::Warning) => f.warning = value.us(),
                        (Some(Frame::Item(f)), Tag::Failure) => f.failure = value.us(),
                        // The root and the attribute: a top-level WarningReason.
                        (_, Tag::Warning) if n == 3 => sink.r.warning = value.us(),
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
                    match seq {
                        Tag::Referenced => sink.item(Seq::Referenced, fields),
                        Tag::Failed => sink.item(Seq::Failed, fields),
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
        return Err(ParseError::NoXmlRoot);
    }
    Ok(())
}

// DICOM JSON is read in one streaming pass with serde visitors that keep
// only what `Sink` wants: nothing else of the reply is ever held, however
// many items or attributes it has. serde_json's recursion limit bounds the
// nesting.

fn json_into(body: &[u8], sink: &mut Sink<'_>) -> Result<(), ParseError> {
    let json_err =
        |e: serde_json::Error| ParseError::Json(clip(&e.to_string(), MAX_SERVER_TEXT_CHARS));
    let mut de = serde_json::Deserializer::from_slice(body);
    TopSeed(sink).deserialize(&mut de).map_err(json_err)?;
    de.end().map_err(json_err)
}

/// Implements the visits of values a visitor ignores (scalars; arrays and
/// objects drained unread), answering `Default::default()`.
macro_rules! ignore_others {
    ($($skip:ident),*) => {
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> { Ok(Default::default()) }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> { Ok(Default::default()) }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> { Ok(Default::default()) }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> { Ok(Default::default()) }
        fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> { Ok(Default::default()) }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> { Ok(Default::default()) }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> { Ok(Default::default()) }
        $(ignore_others!(@ $skip);)*
    };
    (@ seq) => {
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok(Default::default())
        }
    };
    (@ map) => {
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            Ok(Default::default())
        }
    };
}

/// A JSON object key read as a [`Tag`], without keeping the key.
struct TagKey(Tag);

impl<'de> de::Deserialize<'de> for TagKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = TagKey;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an attribute tag")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<TagKey, E> {
                Ok(TagKey(Tag::of(s)))
            }
        }
        d.deserialize_str(V)
    }
}

/// The reply: a data set, or a data set in a one-element array as some
/// servers send.
struct TopSeed<'s, 'a>(&'s mut Sink<'a>);

impl<'de> DeserializeSeed<'de> for TopSeed<'_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for TopSeed<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a DICOM JSON data set (an object)")
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        data_set(self.0, map)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        if seq.next_element_seed(DataSetSeed(self.0))?.is_none() {
            return Err(de::Error::custom(
                "an empty array, not a DICOM JSON data set",
            ));
        }
        if seq.next_element::<IgnoredAny>()?.is_some() {
            return Err(de::Error::custom(
                "an array of several data sets, not one STOW-RS response",
            ));
        }
        Ok(())
    }
}

struct DataSetSeed<'s, 'a>(&'s mut Sink<'a>);

impl<'de> DeserializeSeed<'de> for DataSetSeed<'_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for DataSetSeed<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a DICOM JSON data set (an object)")
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        data_set(self.0, map)
    }
}

fn data_set<'de, A: MapAccess<'de>>(sink: &mut Sink<'_>, mut map: A) -> Result<(), A::Error> {
    while let Some(TagKey(tag)) = map.next_key()? {
        match tag {
            Tag::Referenced => map.next_value_seed(SeqAttr(&mut *sink, Seq::Referenced))?,
            Tag::Failed => map.next_value_seed(SeqAttr(&mut *sink, Seq::Failed))?,
            Tag::Warning => sink.r.warning = map.next_value_seed(FirstValue)?.and_then(|v| v.us()),
            _ => {
                map.next_value::<IgnoredAny>()?;
            }
        }
    }
    Ok(())
}

/// A sequence attribute `{"vr": "SQ", "Value": [items]}`; each item goes to
/// the sink as it is read.
struct SeqAttr<'s, 'a>(&'s mut Sink<'a>, Seq);

impl<'de> DeserializeSeed<'de> for SeqAttr<'_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for SeqAttr<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a sequence attribute")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let SeqAttr(sink, seq) = self;
        while let Some(key) = map.next_key::<String>()? {
            if key == "Value" {
                map.next_value_seed(Items(&mut *sink, seq))?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(())
    }
    ignore_others!(seq);
}

/// The `Value` array of a sequence attribute.
struct Items<'s, 'a>(&'s mut Sink<'a>, Seq);

impl<'de> DeserializeSeed<'de> for Items<'_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Items<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the items of a sequence")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let Items(sink, which) = self;
        while let Some(fields) = seq.next_element_seed(Item)? {
            if let Some(fields) = fields {
                sink.item(which, fields);
            }
        }
        Ok(())
    }
    ignore_others!(map);
}

/// One item: its UID, WarningReason and FailureReason; `None` when it is
/// not an object.
struct Item;

impl<'de> DeserializeSeed<'de> for Item {
    type Value = Option<ItemFields>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Item {
    type Value = Option<ItemFields>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a sequence item")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut f = ItemFields::default();
        while let Some(TagKey(tag)) = map.next_key()? {
            match tag {
                Tag::Uid => f.uid = map.next_value_seed(FirstValue)?,
                Tag::Warning => f.warning = map.next_value_seed(FirstValue)?.and_then(|v| v.us()),
                Tag::Failure => f.failure = map.next_value_seed(FirstValue)?.and_then(|v| v.us()),
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Some(f))
    }
    ignore_others!(seq);
}

/// The first value of an attribute `{"vr": .., "Value": [v, ..]}`.
struct FirstValue;

impl<'de> DeserializeSeed<'de> for FirstValue {
    type Value = Option<Scalar>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for FirstValue {
    type Value = Option<Scalar>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an attribute")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut first = None;
        while let Some(key) = map.next_key::<String>()? {
            if key == "Value" {
                first = map.next_value_seed(FirstOf)?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(first)
    }
    ignore_others!(seq);
}

/// The first element of a `Value` array, the rest skipped.
struct FirstOf;

impl<'de> DeserializeSeed<'de> for FirstOf {
    type Value = Option<Scalar>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for FirstOf {
    type Value = Option<Scalar>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the values of an attribute")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let first = seq.next_element::<Scalar>()?;
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(first)
    }
    ignore_others!(map);
}

impl<'de> de::Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a value")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Scalar, E> {
                Ok(Scalar::from_str(s))
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Scalar, E> {
                Ok(Scalar::Number(n))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Scalar, E> {
                Ok(Scalar::Other)
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Scalar, E> {
                Ok(Scalar::Other)
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Scalar, E> {
                Ok(Scalar::Other)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Scalar, E> {
                Ok(Scalar::Other)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Scalar, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Scalar::Other)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Scalar, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Scalar::Other)
            }
        }
        d.deserialize_any(V)
    }
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
    /// The server answered with a body larger than `limit` bytes, which was
    /// not read: whatever it said about the instances is unknown.
    TooLarge {
        status: u16,
        reason: &'a str,
        retry_after: Option<Duration>,
        limit: usize,
    },
    /// No answer: connection refused, reset, a body read error; `timed_out`
    /// when the response timeout ran out.
    Transport { timed_out: bool, reason: String },
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
    let text = match reason {
        Some(0x0111) => {
            return InstanceResult::warning(
                sop,
                format!(
                    "{http}: already stored at the destination, FailureReason {}",
                    describe_status(0x0111)
                ),
            );
        }
        Some(code) => format!("{http}: FailureReason {}", describe_status(code)),
        None => format!("{http}: in FailedSOPSequence without FailureReason"),
    };
    InstanceResult::failed_after(sop, FailureKind::Rejected(reason), text, retry_after)
}

/// The reason of an instance not named in a successful reply that failed
/// parts it could not identify: how many, and with which FailureReasons
/// (the [`MAX_LISTED_FAILURE_REASONS`] most frequent, then how many more).
fn anonymous_reason(http: &str, failures: &BTreeMap<Option<u16>, u64>) -> String {
    let total: u64 = failures.values().sum();
    let mut by_count: Vec<(&Option<u16>, &u64)> = failures.iter().collect();
    // Most frequent first; equal counts in code order (the map's order).
    by_count.sort_by(|a, b| b.1.cmp(a.1));
    let mut listed: Vec<String> = by_count
        .iter()
        .take(MAX_LISTED_FAILURE_REASONS)
        .map(|(code, n)| {
            let code = code.map_or("(none)".to_string(), describe_status);
            if **n > 1 {
                format!("{code} \u{d7}{n}")
            } else {
                code
            }
        })
        .collect();
    if by_count.len() > MAX_LISTED_FAILURE_REASONS {
        listed.push(format!(
            "and {} more",
            by_count.len() - MAX_LISTED_FAILURE_REASONS
        ));
    }
    format!(
        "{http}: not stored; the server failed {total} part(s) it could not identify, with FailureReason {}",
        listed.join(", ")
    )
}

/// Decides each sent instance's result from the response. Every reason is
/// at most [`MAX_REASON_CHARS`] long.
pub fn classify(sent: &[String], exchange: Exchange<'_>) -> Vec<InstanceResult> {
    let mut results = classify_unbounded(sent, exchange);
    for r in &mut results {
        if let Some(reason) = &mut r.reason
            && reason.len() > MAX_REASON_CHARS
        {
            *reason = clip(reason, MAX_REASON_CHARS);
        }
    }
    results
}

fn classify_unbounded(sent: &[String], exchange: Exchange<'_>) -> Vec<InstanceResult> {
    // The kind decides whether the server's Retry-After applies.
    let after = match &exchange {
        Exchange::Transport { .. } => None,
        Exchange::TooLarge { retry_after, .. } | Exchange::Answered { retry_after, .. } => {
            *retry_after
        }
    };
    let failed = |sop: &String, kind: FailureKind, reason: String| {
        InstanceResult::failed_after(sop.clone(), kind, reason, after)
    };
    let (status, reason, content_type, retry_after, body) = match exchange {
        // No answer: the next attempt may well get one.
        Exchange::Transport { timed_out, reason } => {
            let kind = if timed_out {
                FailureKind::Timeout
            } else {
                FailureKind::Transport
            };
            return sent
                .iter()
                .map(|s| failed(s, kind, reason.clone()))
                .collect();
        }
        // An answer too large to read: the instances are not confirmed.
        // After a success status the outcome is unknown, as after a
        // connection lost while reading, and sending again is safe (a
        // server answers a duplicate as already stored); otherwise the
        // status decides.
        Exchange::TooLarge {
            status,
            reason,
            retry_after: _,
            limit,
        } => {
            let http = format!("HTTP {status} {reason}").trim_end().to_string();
            let (kind, text) = if (200..300).contains(&status) {
                (
                    FailureKind::Unconfirmed,
                    format!(
                        "{http}, but the reply exceeds {limit} bytes and was not read: not confirmed as stored"
                    ),
                )
            } else {
                (
                    FailureKind::Status(status),
                    format!(
                        "{http}{} (a reply of more than {limit} bytes, not read)",
                        hint(status)
                    ),
                )
            };
            // A success status's Retry-After is no throttling advice.
            return sent
                .iter()
                .map(|s| match kind {
                    FailureKind::Unconfirmed => {
                        InstanceResult::failed(s.clone(), kind, text.clone())
                    }
                    _ => failed(s, kind, text.clone()),
                })
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
    let sent_set: HashSet<&str> = sent.iter().map(String::as_str).collect();
    let parsed = parse_keeping(body, content_type, Keep::Only(&sent_set));
    // Reasons shared by many instances are made once.
    let mut anonymous = None;
    sent.iter()
        .map(|sop| match &parsed {
            Ok(r) => match r.mentions.get(sop) {
                Some(Mention::Failed { reason }) => listed_failure(sop, &http, *reason, retry_after),
                Some(Mention::Referenced { warning }) if success => {
                    match warning.or(r.warning) {
                        Some(w) => InstanceResult::warning(
                            sop.clone(),
                            format!("WarningReason {}", describe_status(w)),
                        ),
                        None => InstanceResult::completed(sop.clone()),
                    }
                }
                Some(Mention::Referenced { .. }) => failed(
                    sop,
                    FailureKind::Status(status),
                    format!("{http} although the instance is in ReferencedSOPSequence"),
                ),
                // Orthanc's way of refusing a part: 200, and not a word
                // about it. Sending it again gets the same silence.
                None if success && !r.anonymous_failures.is_empty() => failed(
                    sop,
                    FailureKind::Rejected(None),
                    anonymous
                        .get_or_insert_with(|| anonymous_reason(&http, &r.anonymous_failures))
                        .clone(),
                ),
                None if success => failed(
                    sop,
                    FailureKind::NotMentioned,
                    format!("{http} but the instance is in neither ReferencedSOPSequence nor FailedSOPSequence: not stored"),
                ),
                // The body is a STOW response that does not name it: the
                // status says it all.
                None => failed(
                    sop,
                    FailureKind::Status(status),
                    format!("{http}{}", hint(status)),
                ),
            },
            Err(e) if success => failed(
                sop,
                FailureKind::BadResponse,
                format!("{http} with an unreadable response body ({e}): {}", snippet(body)),
            ),
            Err(_) => {
                let snippet = snippet(body);
                let hint = hint(status);
                let text = if snippet.is_empty() {
                    format!("{http}{hint}")
                } else {
                    format!("{http}{hint}: {snippet}")
                };
                failed(sop, FailureKind::Status(status), text)
            }
        })
        .collect()
}

/// The start of a body for an error message, on one line, at most
/// [`MAX_SERVER_TEXT_CHARS`].
fn snippet(body: &[u8]) -> String {
    // Four bytes per character at most: enough to fill the limit.
    let head = &body[..body.len().min(MAX_SERVER_TEXT_CHARS * 4)];
    let text = String::from_utf8_lossy(head);
    let one_line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() > MAX_SERVER_TEXT_CHARS || head.len() < body.len() {
        let cut: String = one_line.chars().take(MAX_SERVER_TEXT_CHARS).collect();
        format!("{cut}...")
    } else {
        one_line
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::{InstanceStatus, Retry};

    fn sent() -> Vec<String> {
        vec!["1.2.1".into(), "1.2.2".into(), "1.2.3".into()]
    }

    /// The kind of each failure is set here, where the answer is read;
    /// the metrics' class derives from it.
    #[test]
    fn each_answer_sets_its_failure_kind() {
        let kind = |r: &[InstanceResult]| r[0].kind.map(FailureKind::class);
        assert_eq!(kind(&answered(409, "")), Some("http_4xx"));
        assert_eq!(kind(&answered(503, "")), Some("http_5xx"));
        assert_eq!(kind(&answered(200, "not json")), Some("bad_response"));
        assert_eq!(kind(&answered(200, "{}")), Some("not_mentioned"));
        let t = classify(&sent(), transport("timeout"));
        assert_eq!(kind(&t), Some("transport"));
        let t = classify(
            &sent(),
            Exchange::Transport {
                timed_out: true,
                reason: "timeout".into(),
            },
        );
        assert_eq!(t[0].kind, Some(FailureKind::Timeout));
        assert_eq!((kind(&t), t[0].retry), (Some("transport"), Retry::Yes));
        let big = |status| {
            classify(
                &sent(),
                Exchange::TooLarge {
                    status,
                    reason: "X",
                    retry_after: None,
                    limit: 10,
                },
            )
        };
        assert_eq!(big(200)[0].kind, Some(FailureKind::Unconfirmed));
        assert_eq!(big(200)[0].retry, Retry::Yes);
        assert_eq!(big(413)[0].kind, Some(FailureKind::Status(413)));
        let failed = r#"{"00081198":{"vr":"SQ","Value":[{"00081155":{"vr":"UI","Value":["1.2.1"]},"00081197":{"vr":"US","Value":[42752]}}]}}"#;
        let r = answered(409, failed);
        assert_eq!(r[0].kind, Some(FailureKind::Rejected(Some(0xA700))));
        assert_eq!(r[0].retry, Retry::Yes);
        assert_eq!(kind(&r[1..]), Some("http_4xx"));
        assert!(
            answered(200, "{}")
                .iter()
                .all(|x| x.status == InstanceStatus::Failed)
        );
    }

    fn transport(reason: &str) -> Exchange<'static> {
        Exchange::Transport {
            timed_out: false,
            reason: reason.into(),
        }
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
        let r = classify(&sent(), transport("connection refused"));
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
        assert_eq!(r.anonymous_failures, BTreeMap::from([(Some(0xA700), 1)]));
        assert!(parse_json(b"[]").is_err());
        assert!(parse_json(b"[{}, {}]").is_err());
        assert!(parse_json(b"{} trailing").is_err());
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
        let r = classify(&sent(), transport("connection reset"));
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

    /// `n` FailedSOPSequence items without a UID, with FailureReasons
    /// cycling through `codes` distinct values.
    fn anonymous_flood(n: usize, codes: usize) -> String {
        let items: Vec<String> = (0..n)
            .map(|i| {
                format!(
                    r#"{{"00081197":{{"vr":"US","Value":[{}]}}}}"#,
                    0xC000 + i % codes
                )
            })
            .collect();
        format!(
            r#"{{"00081198":{{"vr":"SQ","Value":[{}]}}}}"#,
            items.join(",")
        )
    }

    #[test]
    fn anonymous_failures_are_summed_up_within_bounds() {
        let r = answered(200, &anonymous_flood(30_000, 3000));
        assert_eq!(r.len(), 3);
        for x in &r {
            let reason = x.reason.as_deref().unwrap();
            assert!(
                reason.chars().count() <= MAX_REASON_CHARS,
                "{}",
                reason.len()
            );
            assert!(
                reason.starts_with("HTTP 200 X: not stored; the server failed 30000 part(s) it could not identify, with FailureReason 0xC000 (Cannot understand) \u{d7}10, "),
                "{reason}"
            );
            assert!(reason.ends_with(", and 2995 more"), "{reason}");
            assert_eq!((x.status, x.retry), (InstanceStatus::Failed, Retry::No));
        }
        // A few: all listed, single ones without a count.
        let r = answered(200, &anonymous_flood(3, 2));
        assert_eq!(
            r[0].reason.as_deref(),
            Some(
                "HTTP 200 X: not stored; the server failed 3 part(s) it could not identify, with FailureReason 0xC000 (Cannot understand) \u{d7}2, 0xC001 (Cannot understand)"
            )
        );
    }

    #[test]
    fn mentions_of_instances_not_sent_are_not_kept() {
        let sent: HashSet<&str> = ["1.2.1"].into();
        let body = r#"{"00081199":{"vr":"SQ","Value":[
            {"00081155":{"vr":"UI","Value":["1.2.1"]}},
            {"00081155":{"vr":"UI","Value":["9.9.9"]}},
            {"00081155":{"vr":"UI","Value":["1.2.1.0000000000000000000000000000000000000000000000000000000000000000"]}}]}}"#;
        let r = parse_keeping(body.as_bytes(), None, Keep::Only(&sent)).unwrap();
        assert_eq!(r.mentions.len(), 1);
        // Kept by the public parse, except the over-long "UID".
        assert_eq!(parse(body.as_bytes(), None).unwrap().mentions.len(), 2);
    }

    #[test]
    fn failure_wins_over_reference_in_any_order() {
        let body = r#"{"00081198":{"vr":"SQ","Value":[{"00081155":{"vr":"UI","Value":["1.2.1"]},"00081197":{"vr":"US","Value":[272]}}]},
                       "00081199":{"vr":"SQ","Value":[{"00081155":{"vr":"UI","Value":["1.2.1"]}}]}}"#;
        let r = answered(200, body);
        assert_eq!(r[0].status, InstanceStatus::Failed);
    }

    #[test]
    fn odd_shapes_are_tolerated_or_refused_without_panic() {
        // Values of the wrong JSON type are ignored, not fatal.
        let body = r#"{"00081199":{"vr":"SQ","Value":[1, "x", null, [], {"00081155":{"vr":"UI","Value":[7]}},
            {"00081155":{"vr":"UI","Value":["1.2.1", "extra"]},"00081196":{"vr":"US","Value":[-1]}}]},
            "00081198":null, "00081196":{"vr":"US"}}"#;
        let r = answered(200, body);
        assert_eq!(r[0].status, InstanceStatus::Completed, "{:?}", r[0]);
        // Deep nesting is refused by the recursion limit, not a stack overflow.
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(parse_json(deep.as_bytes()).is_err());
        let deep = format!("<NativeDicomModel>{}", "<a>".repeat(1000));
        assert_eq!(parse_xml(deep.as_bytes()), Err(ParseError::XmlTooDeep));
    }

    #[test]
    fn quoted_reply_text_is_bounded() {
        // A parser's message may quote the reply: cut.
        let name = "a".repeat(100_000);
        let xml = format!("<NativeDicomModel><{name}></b></NativeDicomModel>");
        let r = answered(200, &xml);
        let reason = r[0].reason.as_deref().unwrap();
        assert!(
            reason.chars().count() < 2 * MAX_SERVER_TEXT_CHARS + 200,
            "{}",
            reason.len()
        );
        let json = format!(r#"{{"00081199": "{}"}}"#, "b".repeat(100_000));
        let r = answered(200, &json);
        let reason = r[0].reason.as_deref().unwrap();
        assert!(
            reason.chars().count() < 2 * MAX_SERVER_TEXT_CHARS + 200,
            "{reason}"
        );
        // Multi-byte text is cut at a character boundary.
        let r = answered(500, &"é".repeat(10_000));
        let reason = r[0].reason.as_deref().unwrap();
        assert!(reason.ends_with("é..."), "{reason}");
    }

    #[test]
    fn too_large_reply_is_unconfirmed() {
        let r = classify(
            &sent(),
            Exchange::TooLarge {
                status: 200,
                reason: "OK",
                retry_after: None,
                limit: 4096,
            },
        );
        assert!(
            r.iter()
                .all(|x| x.status == InstanceStatus::Failed && x.retry == Retry::Yes)
        );
        assert_eq!(
            r[0].reason.as_deref(),
            Some(
                "HTTP 200 OK, but the reply exceeds 4096 bytes and was not read: not confirmed as stored"
            )
        );
        let r = classify(
            &sent(),
            Exchange::TooLarge {
                status: 409,
                reason: "Conflict",
                retry_after: None,
                limit: 4096,
            },
        );
        assert_eq!(r[0].retry, Retry::No);
        assert!(
            r[0].reason
                .as_deref()
                .unwrap()
                .starts_with("HTTP 409 Conflict")
        );
    }
}
