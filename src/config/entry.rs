//! The raw directory model: entries as an LDAP server holds them.
//!
//! Both sources produce this model: LDIF files (records applied in order,
//! the way `ldapadd`/`ldapmodify` would) and, in a later step, an LDAP
//! search. Validation into a [`super::Snapshot`] then works on it alone, so
//! the two sources cannot drift apart.
//!
//! Owns entries, DNs and applying records to a directory; it must not
//! interpret what an entry means (that is [`super::model`]) and reads no
//! file or server itself.

use std::collections::BTreeMap;
use std::fmt;

use super::ldif::{ModOp, Record, RecordBody};

/// A distinguished name, compared the way the directory compares it:
/// attribute types case-insensitively, spaces around separators ignored,
/// `cn` and `dc` values case-insensitively (their schema says caseIgnore),
/// every other value exactly (`dcmExporterID` is case-sensitive in slapd).
#[derive(Clone)]
pub struct Dn {
    raw: String,
    rdns: Vec<Rdn>,
}

/// One relative distinguished name: `type=value` (multi-valued RDNs such as
/// `dicomHostname=h+dicomPort=1` keep every pair, in the order written).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub struct Rdn {
    pairs: Vec<(String, String)>,
}

impl Rdn {
    /// The value of `attr` in this RDN, unescaped.
    pub fn value(&self, attr: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(t, _)| t.eq_ignore_ascii_case(attr))
            .map(|(_, v)| v.as_str())
    }

    fn normalized(&self) -> String {
        self.pairs
            .iter()
            .map(|(t, v)| {
                let v = if t == "cn" || t == "dc" {
                    v.to_lowercase()
                } else {
                    v.clone()
                };
                format!("{t}={}", escape(&v))
            })
            .collect::<Vec<_>>()
            .join("+")
    }
}

/// A DN that could not be parsed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid DN {dn:?}: {reason}")]
pub struct DnError {
    pub dn: String,
    pub reason: String,
}

impl Dn {
    /// Parses an RFC 4514 string DN (escapes with `\`, multi-valued RDNs).
    pub fn parse(raw: &str) -> Result<Dn, DnError> {
        let err = |reason: &str| DnError {
            dn: raw.to_string(),
            reason: reason.to_string(),
        };
        let mut rdns = Vec::new();
        for rdn_text in split_unescaped(raw, ',') {
            let mut pairs = Vec::new();
            for pair in split_unescaped(&rdn_text, '+') {
                let (t, v) = pair
                    .split_once('=')
                    .ok_or_else(|| err("an RDN has no '='"))?;
                let t = t.trim().to_ascii_lowercase();
                if t.is_empty() {
                    return Err(err("an RDN has an empty attribute type"));
                }
                pairs.push((t, unescape(v.trim())));
            }
            rdns.push(Rdn { pairs });
        }
        if rdns.is_empty() {
            return Err(err("empty DN"));
        }
        Ok(Dn {
            raw: raw.trim().to_string(),
            rdns,
        })
    }

    /// The DN as written in the source.
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// The first (leftmost) RDN.
    pub fn rdn(&self) -> &Rdn {
        &self.rdns[0]
    }

    /// The parent DN, if this is not a one-RDN name.
    pub fn parent(&self) -> Option<Dn> {
        if self.rdns.len() < 2 {
            return None;
        }
        let rdns = self.rdns[1..].to_vec();
        let raw = rdns
            .iter()
            .map(|r| {
                r.pairs
                    .iter()
                    .map(|(t, v)| format!("{t}={}", escape(v)))
                    .collect::<Vec<_>>()
                    .join("+")
            })
            .collect::<Vec<_>>()
            .join(",");
        Some(Dn { raw, rdns })
    }

    /// True when `self` is a direct child of `parent`.
    pub fn is_child_of(&self, parent: &Dn) -> bool {
        self.parent().is_some_and(|p| p == *parent)
    }

    /// True when `self` is below `ancestor` at any depth.
    pub fn is_below(&self, ancestor: &Dn) -> bool {
        let n = ancestor.rdns.len();
        self.rdns.len() > n && self.key_of(self.rdns.len() - n) == ancestor.key()
    }

    /// The normalised form used for comparison and as map key.
    pub fn key(&self) -> String {
        self.key_of(0)
    }

    fn key_of(&self, from: usize) -> String {
        self.rdns[from..]
            .iter()
            .map(Rdn::normalized)
            .collect::<Vec<_>>()
            .join(",")
    }
}

impl PartialEq for Dn {
    fn eq(&self, other: &Dn) -> bool {
        self.key() == other.key()
    }
}

impl Eq for Dn {}

impl fmt::Display for Dn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

impl fmt::Debug for Dn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Dn({:?})", self.raw)
    }
}

/// Splits on `sep` where it is not escaped with a backslash.
fn split_unescaped(s: &str, sep: char) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            cur.push(c);
            if let Some(n) = chars.next() {
                cur.push(n);
            }
        } else if c == sep {
            out.push(std::mem::take(&mut cur));
        } else {
            cur.push(c);
        }
    }
    if !cur.trim().is_empty() || !out.is_empty() {
        out.push(cur);
    }
    out
}

fn unescape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let mut chars = v.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            // `\2C` style hex escapes: only ASCII ones matter for our names.
            Some(h1)
                if h1.is_ascii_hexdigit()
                    && chars.peek().is_some_and(|h| h.is_ascii_hexdigit()) =>
            {
                let h2 = chars.next().unwrap_or('0');
                let byte = u8::from_str_radix(&format!("{h1}{h2}"), 16).unwrap_or(b'?');
                out.push(byte as char);
            }
            Some(n) => out.push(n),
            None => {}
        }
    }
    out
}

fn escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        if matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';' | '=') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// One directory entry: a DN and its attributes, with where it came from.
#[derive(Debug, Clone)]
pub struct RawEntry {
    pub dn: Dn,
    /// Attribute name as first written, and its values in order.
    pub attrs: Vec<(String, Vec<String>)>,
    /// Where the entry was defined, e.g. `ldif/30-device.ldif:12` or an LDAP URL.
    pub source: String,
}

impl RawEntry {
    /// All values of `name`, matched case-insensitively; attribute options
    /// (`;binary`, `;lang-de`) are ignored for matching.
    pub fn values(&self, name: &str) -> &[String] {
        self.attrs
            .iter()
            .find(|(n, _)| base_name(n).eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
            .unwrap_or(&[])
    }

    /// The first value of `name`.
    pub fn first(&self, name: &str) -> Option<&str> {
        self.values(name).first().map(String::as_str)
    }

    /// True if the entry has `objectClass: oc` (case-insensitive).
    pub fn has_class(&self, oc: &str) -> bool {
        self.values("objectClass")
            .iter()
            .any(|c| c.eq_ignore_ascii_case(oc))
    }

    fn add_values(&mut self, name: &str, values: Vec<String>) {
        if let Some((_, v)) = self
            .attrs
            .iter_mut()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
        {
            for value in values {
                if !v.contains(&value) {
                    v.push(value);
                }
            }
        } else {
            self.attrs.push((name.to_string(), values));
        }
    }

    fn remove_attr(&mut self, name: &str) {
        self.attrs.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
    }

    fn remove_values(&mut self, name: &str, values: &[String]) {
        for (n, v) in self.attrs.iter_mut() {
            if n.eq_ignore_ascii_case(name) {
                v.retain(|x| !values.contains(x));
            }
        }
        self.attrs.retain(|(_, v)| !v.is_empty());
    }
}

fn base_name(attr: &str) -> &str {
    attr.split(';').next().unwrap_or(attr)
}

/// An LDIF record that cannot be applied, as `ldapadd`/`ldapmodify` would refuse it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{source_pos}: {dn}: {message}")]
pub struct ApplyError {
    /// `file:line` of the record.
    pub source_pos: String,
    pub dn: String,
    pub message: String,
}

/// A set of entries keyed by normalised DN, built by applying records in order.
#[derive(Debug, Default, Clone)]
pub struct Directory {
    entries: BTreeMap<String, RawEntry>,
}

impl Directory {
    pub fn new() -> Directory {
        Directory::default()
    }

    /// Builds a directory from entries read elsewhere (an LDAP search).
    pub fn from_entries(entries: impl IntoIterator<Item = RawEntry>) -> Directory {
        Directory {
            entries: entries.into_iter().map(|e| (e.dn.key(), e)).collect(),
        }
    }

    /// Applies one LDIF record from `file`.
    pub fn apply(&mut self, record: &Record, file: &str) -> Result<(), ApplyError> {
        let err = |message: String| ApplyError {
            source_pos: format!("{file}:{}", record.line),
            dn: record.dn.clone(),
            message,
        };
        let dn = Dn::parse(&record.dn).map_err(|e| err(e.to_string()))?;
        let key = dn.key();
        match &record.body {
            RecordBody::Add(values) => {
                if let Some(existing) = self.entries.get(&key) {
                    return Err(err(format!(
                        "entry already exists (defined at {})",
                        existing.source
                    )));
                }
                let mut entry = RawEntry {
                    dn,
                    attrs: Vec::new(),
                    source: format!("{file}:{}", record.line),
                };
                for v in values {
                    entry.add_values(&v.attr, vec![text(&v.value)]);
                }
                self.entries.insert(key, entry);
            }
            RecordBody::Delete => {
                if self.entries.remove(&key).is_none() {
                    return Err(err("cannot delete: no such entry".into()));
                }
                if self.entries.values().any(|e| e.dn.is_below(&dn)) {
                    return Err(err("cannot delete: entry has children".into()));
                }
            }
            RecordBody::Modify(mods) => {
                let entry = self
                    .entries
                    .get_mut(&key)
                    .ok_or_else(|| err("cannot modify: no such entry".into()))?;
                for m in mods {
                    let values: Vec<String> = m.values.iter().map(|v| text(v)).collect();
                    match m.op {
                        ModOp::Add => entry.add_values(&m.attr, values),
                        ModOp::Replace => {
                            entry.remove_attr(&m.attr);
                            if !values.is_empty() {
                                entry.add_values(&m.attr, values);
                            }
                        }
                        ModOp::Delete if values.is_empty() => entry.remove_attr(&m.attr),
                        ModOp::Delete => entry.remove_values(&m.attr, &values),
                    }
                }
            }
            RecordBody::ModRdn { .. } => {
                return Err(err(
                    "modrdn/moddn records are not supported in configuration files".into(),
                ));
            }
        }
        Ok(())
    }

    /// The entry with this DN.
    pub fn get(&self, dn: &Dn) -> Option<&RawEntry> {
        self.entries.get(&dn.key())
    }

    /// All entries, in normalised-DN order.
    pub fn iter(&self) -> impl Iterator<Item = &RawEntry> {
        self.entries.values()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Attribute values are text for every attribute this service reads; a
/// binary value elsewhere (a certificate, vendor data) is kept lossily
/// rather than refusing a directory that merely contains it.
fn text(v: &[u8]) -> String {
    String::from_utf8_lossy(v).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dn_comparison_is_directory_like() {
        let a = Dn::parse(
            "dicomDeviceName=dcm4chee-arc,cn=Devices,cn=DICOM Configuration,dc=dcm4che,dc=org",
        )
        .unwrap();
        let b = Dn::parse(
            "DICOMDEVICENAME=dcm4chee-arc, CN=devices,cn=DICOM configuration,DC=dcm4che,dc=ORG",
        )
        .unwrap();
        assert_eq!(a, b);
        let c = Dn::parse(
            "dicomDeviceName=DCM4CHEE-ARC,cn=Devices,cn=DICOM Configuration,dc=dcm4che,dc=org",
        )
        .unwrap();
        assert_ne!(a, c, "device names are compared exactly");
    }

    #[test]
    fn parent_child_and_escapes() {
        let dev = Dn::parse("dicomDeviceName=d,cn=Devices,dc=x").unwrap();
        let child = Dn::parse("dcmExporterID=A\\,B,dicomDeviceName=d,cn=Devices,dc=x").unwrap();
        assert!(child.is_child_of(&dev));
        assert!(child.is_below(&Dn::parse("dc=x").unwrap()));
        assert_eq!(child.rdn().value("dcmExporterID"), Some("A,B"));
        let multi =
            Dn::parse("dicomHostname=h+dicomPort=104,dicomDeviceName=d,cn=Devices,dc=x").unwrap();
        assert_eq!(multi.rdn().value("dicomPort"), Some("104"));
        assert!(multi.is_child_of(&dev));
        assert!(Dn::parse("novalue,dc=x").is_err());
    }

    fn rec(dn: &str, body: RecordBody) -> Record {
        Record {
            dn: dn.into(),
            line: 1,
            body,
        }
    }

    #[test]
    fn apply_add_modify_delete() {
        use super::super::ldif::{AttrValue, Modification};
        let av = |a: &str, v: &str| AttrValue {
            attr: a.into(),
            value: v.as_bytes().to_vec(),
            line: 1,
        };
        let mut d = Directory::new();
        d.apply(
            &rec(
                "cn=a,dc=x",
                RecordBody::Add(vec![
                    av("objectClass", "top"),
                    av("dcmProperty", "chunked=true"),
                    av("dcmProperty", "concurrency=2"),
                ]),
            ),
            "f",
        )
        .unwrap();
        let e = d.get(&Dn::parse("CN=A,dc=x").unwrap()).unwrap();
        assert_eq!(e.values("DCMPROPERTY").len(), 2);
        assert!(
            d.apply(&rec("cn=a,dc=x", RecordBody::Add(vec![])), "f")
                .unwrap_err()
                .message
                .contains("already exists")
        );
        d.apply(
            &rec(
                "cn=a,dc=x",
                RecordBody::Modify(vec![Modification {
                    op: ModOp::Replace,
                    attr: "dcmProperty".into(),
                    values: vec![b"concurrency=5".to_vec()],
                    line: 2,
                }]),
            ),
            "f",
        )
        .unwrap();
        let e = d.get(&Dn::parse("cn=a,dc=x").unwrap()).unwrap();
        assert_eq!(e.values("dcmProperty"), ["concurrency=5".to_string()]);
        d.apply(&rec("cn=a,dc=x", RecordBody::Delete), "f").unwrap();
        assert!(d.is_empty());
        let e = d
            .apply(&rec("cn=a,dc=x", RecordBody::Delete), "g")
            .unwrap_err();
        assert_eq!(e.source_pos, "g:1");
    }
}
