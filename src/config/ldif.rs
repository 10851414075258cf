//! RFC 2849 LDIF parser (content and change records).
//!
//! Parsing runs in two stages: physical lines are first unfolded into
//! logical lines grouped per record (comments and blank lines handled
//! there), then each group is interpreted as a content or change record.
//! Keeping the stages apart means folding never has to be considered while
//! interpreting records, and every logical line still knows the physical
//! line it started on for error messages.
//!
//! Owns the LDIF grammar only: it turns text into records and leaves
//! applying them to [`super::entry`]; it performs no I/O, so it is fuzzed
//! as a pure function of its input.

use base64::Engine as _;
use base64::alphabet;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};

/// One LDIF record.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// Distinguished name as written (after base64 decoding for `dn::`).
    pub dn: String,
    /// 1-based line number where the record's `dn:` line starts.
    pub line: usize,
    pub body: RecordBody,
}

#[derive(Debug, Clone, PartialEq)]
pub enum RecordBody {
    /// A content record, or a change record with `changetype: add`.
    Add(Vec<AttrValue>),
    Delete,
    Modify(Vec<Modification>),
    /// `changetype: modrdn` / `moddn`.
    ModRdn {
        new_rdn: String,
        delete_old_rdn: bool,
        new_superior: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct AttrValue {
    /// Attribute description as written, options included (`userCertificate;binary`).
    pub attr: String,
    /// The value bytes (base64-decoded for `attr::`). Usually UTF-8 text.
    pub value: Vec<u8>,
    /// 1-based line number of the (first physical line of the) attribute line.
    pub line: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Modification {
    pub op: ModOp,
    pub attr: String,
    pub values: Vec<Vec<u8>>,
    pub line: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModOp {
    Add,
    Delete,
    Replace,
}

/// A parse error with the 1-based line it was found on.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct LdifError {
    pub line: usize,
    pub message: String,
}

/// Parses a whole LDIF document.
pub fn parse(input: &str) -> Result<Vec<Record>, LdifError> {
    let mut groups = logical_records(input)?;

    // `version:` may only appear as the very first line. It may be followed
    // by a blank line or directly by the first record; both are seen in the
    // wild, so drop the version line and keep whatever follows in its group.
    if let Some(first) = groups.first_mut()
        && let Some(head) = first.first()
        && !is_dash(head)
    {
        let field = parse_attr_line(head)?;
        if field.attr.eq_ignore_ascii_case("version") {
            let version = String::from_utf8_lossy(&field.value);
            if version.trim() != "1" {
                return Err(err(
                    field.line,
                    format!(
                        "unsupported LDIF version `{}` (only `version: 1` is supported)",
                        version.trim()
                    ),
                ));
            }
            first.remove(0);
            if first.is_empty() {
                groups.remove(0);
            }
        }
    }

    groups.iter().map(|lines| parse_record(lines)).collect()
}

/// A logical (unfolded) line and the physical line it started on.
#[derive(Debug)]
struct Line {
    line: usize,
    text: String,
}

fn err(line: usize, message: impl Into<String>) -> LdifError {
    LdifError {
        line,
        message: message.into(),
    }
}

/// Splits the input into records of unfolded lines, dropping comments.
fn logical_records(input: &str) -> Result<Vec<Vec<Line>>, LdifError> {
    // Windows editors like to prepend a BOM, which would otherwise end up in
    // the first attribute name and produce a baffling error.
    let input = input.strip_prefix('\u{feff}').unwrap_or(input);
    let mut records = Vec::new();
    let mut current: Vec<Line> = Vec::new();
    // Continuation lines of a comment belong to the comment, not to the
    // attribute line before it.
    let mut in_comment = false;

    for (idx, raw) in input.split('\n').enumerate() {
        let line_no = idx + 1;
        // Only the line terminator is removed: trailing spaces are part of
        // the value as far as RFC 2849 is concerned.
        let text = raw.strip_suffix('\r').unwrap_or(raw);

        if text.is_empty() {
            if !current.is_empty() {
                records.push(std::mem::take(&mut current));
            }
            in_comment = false;
            continue;
        }
        if let Some(rest) = text.strip_prefix(' ') {
            if in_comment {
                continue;
            }
            match current.last_mut() {
                Some(last) => last.text.push_str(rest),
                // A whitespace-only line between records is almost certainly
                // meant as a separator; there is nothing it could continue.
                None if text.trim().is_empty() => {}
                None => {
                    return Err(err(
                        line_no,
                        "continuation line (starting with a space) has no preceding line to continue",
                    ));
                }
            }
            continue;
        }
        if text.starts_with('#') {
            in_comment = true;
            continue;
        }
        in_comment = false;
        current.push(Line {
            line: line_no,
            text: text.to_owned(),
        });
    }
    if !current.is_empty() {
        records.push(current);
    }
    Ok(records)
}

/// Base64 as written by `ldapsearch` and friends; hand-written files
/// sometimes lack padding, which carries no information, so accept both.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Parses `attr: value`, `attr:: base64` or `attr:< url`.
fn parse_attr_line(l: &Line) -> Result<AttrValue, LdifError> {
    let Some((attr, rest)) = l.text.split_once(':') else {
        return Err(err(
            l.line,
            format!(
                "expected `attribute: value`, found a line without a colon: `{}`",
                snippet(&l.text)
            ),
        ));
    };
    if !valid_attr_desc(attr) {
        return Err(err(
            l.line,
            format!("invalid attribute description `{}`", snippet(attr)),
        ));
    }
    let value = if let Some(encoded) = rest.strip_prefix(':') {
        // Whitespace is never part of base64; removing all of it also
        // tolerates writers that fold with more than one leading space.
        let compact: String = encoded
            .chars()
            .filter(|c| !c.is_ascii_whitespace())
            .collect();
        BASE64
            .decode(compact.as_bytes())
            .map_err(|e| err(l.line, format!("invalid base64 in value of `{attr}`: {e}")))?
    } else if rest.starts_with('<') {
        return Err(err(
            l.line,
            format!("URL values (attr:<) are not supported (attribute `{attr}`)"),
        ));
    } else {
        rest.trim_start_matches(' ').as_bytes().to_vec()
    };
    Ok(AttrValue {
        attr: attr.to_owned(),
        value,
        line: l.line,
    })
}

/// RFC 2849 `AttributeDescription`: a name (or numeric OID) plus options.
fn valid_attr_desc(desc: &str) -> bool {
    let mut parts = desc.split(';');
    let Some(name) = parts.next() else {
        return false;
    };
    let is_keychar = |c: char| c.is_ascii_alphanumeric() || c == '-';
    let name_ok = match name.chars().next() {
        Some(c) if c.is_ascii_alphabetic() => name.chars().all(is_keychar),
        Some(c) if c.is_ascii_digit() => name.chars().all(|c| c.is_ascii_digit() || c == '.'),
        _ => false,
    };
    name_ok && parts.all(|opt| !opt.is_empty() && opt.chars().all(is_keychar))
}

/// Shortens a line for inclusion in an error message.
fn snippet(text: &str) -> String {
    const MAX: usize = 40;
    match text.char_indices().nth(MAX) {
        Some((end, _)) => format!("{}...", &text[..end]),
        None => text.to_owned(),
    }
}

/// The `-` line that ends a block of a modify record.
fn is_dash(l: &Line) -> bool {
    l.text.trim_end() == "-"
}

/// A value that must be text (DNs, RDNs, attribute names in modify blocks).
fn text_value(field: &AttrValue) -> Result<String, LdifError> {
    String::from_utf8(field.value.clone()).map_err(|_| {
        err(
            field.line,
            format!("value of `{}` is not valid UTF-8", field.attr),
        )
    })
}

fn parse_record(lines: &[Line]) -> Result<Record, LdifError> {
    let Some((first, rest)) = lines.split_first() else {
        // `logical_records` never yields empty groups.
        return Err(err(1, "empty record"));
    };
    let head = parse_attr_line(first)?;
    if !head.attr.eq_ignore_ascii_case("dn") {
        return Err(err(
            head.line,
            format!("record does not start with `dn:` (found `{}:`)", head.attr),
        ));
    }
    let dn = text_value(&head)?;

    // A second `dn:` almost always means a missing blank line between two
    // records; say so rather than reporting an odd attribute later.
    if let Some(l) = rest.iter().find(|l| {
        l.text
            .get(..3)
            .is_some_and(|p| p.eq_ignore_ascii_case("dn:"))
    }) {
        return Err(err(
            l.line,
            "unexpected `dn:` inside a record (records must be separated by a blank line)",
        ));
    }

    // Controls only make sense on change records, so they must be followed
    // by `changetype:`; anything else is a content record.
    let mut idx = 0;
    let mut changetype = None;
    while let Some(l) = rest.get(idx) {
        if is_dash(l) {
            break;
        }
        let field = parse_attr_line(l)?;
        if field.attr.eq_ignore_ascii_case("control") {
            idx += 1;
            continue;
        }
        if field.attr.eq_ignore_ascii_case("changetype") {
            changetype = Some(field);
            idx += 1;
        } else if idx > 0 {
            return Err(err(
                field.line,
                format!(
                    "expected `changetype:` after `control:`, found `{}:`",
                    field.attr
                ),
            ));
        }
        break;
    }
    if changetype.is_none() && idx > 0 {
        return Err(err(
            rest[idx - 1].line,
            "`control:` must be followed by `changetype:`",
        ));
    }
    let body_lines = &rest[idx..];

    let body = match changetype {
        None => RecordBody::Add(parse_attr_values(body_lines, head.line)?),
        Some(ct) => {
            let keyword = String::from_utf8_lossy(&ct.value)
                .trim()
                .to_ascii_lowercase();
            match keyword.as_str() {
                "add" => RecordBody::Add(parse_attr_values(body_lines, ct.line)?),
                "delete" => {
                    if let Some(l) = body_lines.first() {
                        return Err(err(
                            l.line,
                            "delete record must not contain attribute lines",
                        ));
                    }
                    RecordBody::Delete
                }
                "modify" => RecordBody::Modify(parse_modify(body_lines)?),
                "modrdn" | "moddn" => parse_modrdn(body_lines, ct.line)?,
                _ => {
                    return Err(err(
                        ct.line,
                        format!(
                            "unknown changetype `{keyword}` (expected add, delete, modify, modrdn or moddn)"
                        ),
                    ));
                }
            }
        }
    };
    Ok(Record {
        dn,
        line: head.line,
        body,
    })
}

/// The attribute lines of a content record or `changetype: add`.
fn parse_attr_values(lines: &[Line], header_line: usize) -> Result<Vec<AttrValue>, LdifError> {
    if lines.is_empty() {
        // RFC 2849 requires at least one attribute; an entry without any
        // would be rejected by the server anyway.
        return Err(err(header_line, "record has no attribute lines"));
    }
    lines.iter().map(parse_attr_line).collect()
}

fn mod_op(keyword: &str) -> Option<ModOp> {
    [
        ("add", ModOp::Add),
        ("delete", ModOp::Delete),
        ("replace", ModOp::Replace),
    ]
    .into_iter()
    .find(|(name, _)| keyword.eq_ignore_ascii_case(name))
    .map(|(_, op)| op)
}

fn op_name(op: ModOp) -> &'static str {
    match op {
        ModOp::Add => "add",
        ModOp::Delete => "delete",
        ModOp::Replace => "replace",
    }
}

fn parse_modify(lines: &[Line]) -> Result<Vec<Modification>, LdifError> {
    let mut mods = Vec::new();
    let mut iter = lines.iter();
    while let Some(l) = iter.next() {
        if is_dash(l) {
            return Err(err(
                l.line,
                "`-` without a preceding `add:`, `delete:` or `replace:` line",
            ));
        }
        let head = parse_attr_line(l)?;
        let Some(op) = mod_op(&head.attr) else {
            return Err(err(
                l.line,
                format!(
                    "expected `add:`, `delete:` or `replace:` in modify record, found `{}:`",
                    head.attr
                ),
            ));
        };
        let attr = text_value(&head)?.trim().to_owned();
        if !valid_attr_desc(&attr) {
            return Err(err(
                l.line,
                format!(
                    "invalid attribute description `{}` after `{}:`",
                    snippet(&attr),
                    op_name(op)
                ),
            ));
        }
        let mut values = Vec::new();
        // Running out of lines without a `-` is accepted: hand-written
        // files often omit the final one and the intent is unambiguous.
        for v in iter.by_ref() {
            if is_dash(v) {
                break;
            }
            let field = parse_attr_line(v)?;
            if !field.attr.eq_ignore_ascii_case(&attr) {
                let message = if mod_op(&field.attr).is_some() {
                    format!(
                        "missing `-` line to end the `{}: {attr}` block started on line {}",
                        op_name(op),
                        l.line
                    )
                } else {
                    format!(
                        "attribute `{}` does not match the `{}: {attr}` block started on line {}",
                        field.attr,
                        op_name(op),
                        l.line
                    )
                };
                return Err(err(field.line, message));
            }
            values.push(field.value);
        }
        mods.push(Modification {
            op,
            attr,
            values,
            line: l.line,
        });
    }
    Ok(mods)
}

/// Takes the next line of a modrdn record, which must be `name:`.
fn expect_field(line: Option<&Line>, name: &str, prev_line: usize) -> Result<AttrValue, LdifError> {
    let Some(l) = line else {
        return Err(err(
            prev_line,
            format!("modrdn record is missing `{name}:`"),
        ));
    };
    let field = if is_dash(l) {
        None
    } else {
        Some(parse_attr_line(l)?)
    };
    match field {
        Some(f) if f.attr.eq_ignore_ascii_case(name) => Ok(f),
        _ => Err(err(
            l.line,
            format!(
                "expected `{name}:` in modrdn record, found `{}`",
                snippet(&l.text)
            ),
        )),
    }
}

fn parse_modrdn(lines: &[Line], changetype_line: usize) -> Result<RecordBody, LdifError> {
    let mut iter = lines.iter();
    let new_rdn_field = expect_field(iter.next(), "newrdn", changetype_line)?;
    let new_rdn = text_value(&new_rdn_field)?;
    let del = expect_field(iter.next(), "deleteoldrdn", new_rdn_field.line)?;
    let delete_old_rdn = match String::from_utf8_lossy(&del.value).trim() {
        "0" => false,
        "1" => true,
        other => {
            return Err(err(
                del.line,
                format!("deleteoldrdn must be 0 or 1, found `{}`", snippet(other)),
            ));
        }
    };
    let new_superior = match iter.next() {
        None => None,
        Some(l) => Some(text_value(&expect_field(
            Some(l),
            "newsuperior",
            del.line,
        )?)?),
    };
    if let Some(extra) = iter.next() {
        return Err(err(
            extra.line,
            format!(
                "unexpected line after `newsuperior:` in modrdn record: `{}`",
                snippet(&extra.text)
            ),
        ));
    }
    Ok(RecordBody::ModRdn {
        new_rdn,
        delete_old_rdn,
        new_superior,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(record: &Record) -> Vec<(&str, &str)> {
        match &record.body {
            RecordBody::Add(values) => values
                .iter()
                .map(|v| {
                    (
                        v.attr.as_str(),
                        std::str::from_utf8(&v.value).expect("utf-8 value"),
                    )
                })
                .collect(),
            other => panic!("expected an add record, got {other:?}"),
        }
    }

    fn parse_err(input: &str) -> LdifError {
        parse(input).expect_err("input should be rejected")
    }

    #[test]
    fn empty_input_has_no_records() {
        assert_eq!(parse("").unwrap(), vec![]);
        assert_eq!(parse("\n\n# only a comment\n\n").unwrap(), vec![]);
        assert_eq!(parse("version: 1\n").unwrap(), vec![]);
    }

    #[test]
    fn dcm4chee_exporter_entry() {
        let input = "\
dn: dcmExporterID=StowExporter,dicomDeviceName=dcm4chee-arc,cn=Devices,cn=DICOM Configuration,dc=dcm4che,dc=org
objectClass: dcmExporter
dcmExporterID: StowExporter
dcmURI: stow:DCM4CHEE
dicomAETitle: DCM4CHEE1
dcmQueueName: Export1
dicomDescription: Export objects using STOW-RS service
";
        let records = parse(input).unwrap();
        assert_eq!(records.len(), 1);
        let r = &records[0];
        assert_eq!(
            r.dn,
            "dcmExporterID=StowExporter,dicomDeviceName=dcm4chee-arc,cn=Devices,\
             cn=DICOM Configuration,dc=dcm4che,dc=org"
        );
        assert_eq!(r.line, 1);
        assert_eq!(
            attrs(r),
            vec![
                ("objectClass", "dcmExporter"),
                ("dcmExporterID", "StowExporter"),
                ("dcmURI", "stow:DCM4CHEE"),
                ("dicomAETitle", "DCM4CHEE1"),
                ("dcmQueueName", "Export1"),
                ("dicomDescription", "Export objects using STOW-RS service"),
            ]
        );
        let RecordBody::Add(values) = &r.body else {
            unreachable!()
        };
        let lines: Vec<usize> = values.iter().map(|v| v.line).collect();
        assert_eq!(lines, vec![2, 3, 4, 5, 6, 7]);
    }

    #[test]
    fn several_records_with_line_numbers() {
        let input =
            "dn: cn=a,dc=x\ncn: a\n\n\n\ndn: cn=b,dc=x\ncn: b\nsn: B\n\ndn: cn=c,dc=x\ncn: c";
        let records = parse(input).unwrap();
        assert_eq!(records.len(), 3);
        assert_eq!(
            records.iter().map(|r| r.line).collect::<Vec<_>>(),
            vec![1, 6, 10]
        );
        assert_eq!(attrs(&records[1]), vec![("cn", "b"), ("sn", "B")]);
        assert_eq!(attrs(&records[2]), vec![("cn", "c")]);
    }

    #[test]
    fn folded_lines() {
        let input = "dn: cn=Long Name,\n ou=People,dc=exa\n mple,dc=org\ndescription: first\n  second with leading space\ncn: x\n";
        let records = parse(input).unwrap();
        assert_eq!(records[0].dn, "cn=Long Name,ou=People,dc=example,dc=org");
        assert_eq!(
            attrs(&records[0]),
            vec![
                ("description", "first second with leading space"),
                ("cn", "x")
            ]
        );
        let RecordBody::Add(values) = &records[0].body else {
            unreachable!()
        };
        // Folded lines report the line they start on.
        assert_eq!(values[0].line, 4);
        assert_eq!(values[1].line, 6);
    }

    #[test]
    fn folded_base64_value_and_dn() {
        // "cn=Jürgen Müller,dc=example" and "Grüße aus Köln"
        let input = "dn:: Y249SsO8cmdlbiBNw7xsbGVy\n LGRjPWV4YW1wbGU=\ndescription:: R3LDvMOfZSBh\n dXMgS8O2bG4=\n";
        let records = parse(input).unwrap();
        assert_eq!(records[0].dn, "cn=Jürgen Müller,dc=example");
        assert_eq!(attrs(&records[0]), vec![("description", "Grüße aus Köln")]);
    }

    #[test]
    fn base64_dn_and_binary_value_with_options() {
        let input = "dn:: Y249w4lsb2RpZSxkYz1leGFtcGxl\nuserCertificate;binary:: AAEC/w==\ncn;lang-de: Elodie\n";
        let records = parse(input).unwrap();
        assert_eq!(records[0].dn, "cn=Élodie,dc=example");
        let RecordBody::Add(values) = &records[0].body else {
            unreachable!()
        };
        assert_eq!(values[0].attr, "userCertificate;binary");
        assert_eq!(values[0].value, vec![0, 1, 2, 255]);
        assert_eq!(values[1].attr, "cn;lang-de");
    }

    #[test]
    fn base64_without_padding_and_empty_base64() {
        let records = parse("dn: cn=a\nx:: YWI\ny::\n").unwrap();
        assert_eq!(attrs(&records[0]), vec![("x", "ab"), ("y", "")]);
    }

    #[test]
    fn comments_are_skipped_including_folded_ones() {
        let input = "# leading comment\n continued comment\ndn: cn=a,dc=x\n# comment inside\n  dn: not a dn, still the comment\ncn: a\n#trailing\n\n# between\n records\ndn: cn=b,dc=x\ncn: b\n";
        let records = parse(input).unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].line, 3);
        assert_eq!(attrs(&records[0]), vec![("cn", "a")]);
        assert_eq!(records[1].line, 11);
    }

    #[test]
    fn hash_inside_folded_value_is_data() {
        let records = parse("dn: cn=a\ndescription: a\n #not a comment\n").unwrap();
        assert_eq!(attrs(&records[0]), vec![("description", "a#not a comment")]);
    }

    #[test]
    fn values_keep_trailing_whitespace_and_drop_leading_spaces() {
        let records =
            parse("dn: cn=a\ncn:    padded  \nempty:\nalso-empty: \ncolon: a:b: c\n").unwrap();
        assert_eq!(
            attrs(&records[0]),
            vec![
                ("cn", "padded  "),
                ("empty", ""),
                ("also-empty", ""),
                ("colon", "a:b: c"),
            ]
        );
    }

    #[test]
    fn crlf_line_endings() {
        let input = "version: 1\r\n\r\ndn: cn=a,dc=x\r\ncn: a \r\ndescription: fol\r\n ded\r\n\r\ndn: cn=b,dc=x\r\nchangetype: delete\r\n";
        let records = parse(input).unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].line, 3);
        assert_eq!(
            attrs(&records[0]),
            vec![("cn", "a "), ("description", "folded")]
        );
        assert_eq!(records[1].body, RecordBody::Delete);
        assert_eq!(records[1].line, 8);
    }

    #[test]
    fn version_line_with_and_without_separator() {
        let with = parse("version: 1\n\ndn: cn=a\ncn: a\n").unwrap();
        let without = parse("version: 1\ndn: cn=a\ncn: a\n").unwrap();
        assert_eq!(with[0].line, 3);
        assert_eq!(without[0].line, 2);
        assert_eq!(attrs(&with[0]), attrs(&without[0]));
        assert_eq!(with[0].dn, without[0].dn);
        // Comments may precede the version line.
        assert_eq!(
            parse("# hi\nversion: 1\n\ndn: cn=a\ncn: a").unwrap().len(),
            1
        );
    }

    #[test]
    fn unsupported_version() {
        let e = parse_err("version: 2\n\ndn: cn=a\ncn: a\n");
        assert_eq!(e.line, 1);
        assert!(e.message.contains("unsupported LDIF version `2`"), "{e}");
    }

    #[test]
    fn byte_order_mark_is_ignored() {
        let records = parse("\u{feff}version: 1\ndn: cn=a\ncn: a\n").unwrap();
        assert_eq!(records[0].dn, "cn=a");
    }

    #[test]
    fn changetype_add_with_controls() {
        let input = "dn: cn=a,dc=x\ncontrol: 1.2.840.113556.1.4.805 true\ncontrol: 1.3.6.1.4.1.4203.1.10.1\nChangeType: ADD\nobjectClass: top\ncn: a\n";
        let records = parse(input).unwrap();
        assert_eq!(
            attrs(&records[0]),
            vec![("objectClass", "top"), ("cn", "a")]
        );
        let RecordBody::Add(values) = &records[0].body else {
            unreachable!()
        };
        assert_eq!(values[0].line, 5);
    }

    #[test]
    fn delete_record() {
        let records = parse("dn: cn=gone,dc=x\nchangetype: delete\n").unwrap();
        assert_eq!(
            records,
            vec![Record {
                dn: "cn=gone,dc=x".into(),
                line: 1,
                body: RecordBody::Delete
            }]
        );
    }

    #[test]
    fn modify_with_all_ops() {
        let input = "\
dn: dicomDeviceName=dcm4chee-arc,cn=Devices,cn=DICOM Configuration,dc=dcm4che,dc=org
changetype: modify
add: dcmExporterID
dcmExporterID: StowExporter
dcmExporterID: StowExporter2
-
delete: dicomDescription
-
delete: dicomInstalled
dicomInstalled: FALSE
-
REPLACE: dcmURI;x-opt
dcmURI;X-OPT: stow:A
dcmURI;x-opt:: c3RvdzpC
-
";
        let records = parse(input).unwrap();
        let RecordBody::Modify(mods) = &records[0].body else {
            panic!("expected modify, got {:?}", records[0].body)
        };
        assert_eq!(
            mods,
            &vec![
                Modification {
                    op: ModOp::Add,
                    attr: "dcmExporterID".into(),
                    values: vec![b"StowExporter".to_vec(), b"StowExporter2".to_vec()],
                    line: 3,
                },
                Modification {
                    op: ModOp::Delete,
                    attr: "dicomDescription".into(),
                    values: vec![],
                    line: 7,
                },
                Modification {
                    op: ModOp::Delete,
                    attr: "dicomInstalled".into(),
                    values: vec![b"FALSE".to_vec()],
                    line: 9,
                },
                Modification {
                    op: ModOp::Replace,
                    attr: "dcmURI;x-opt".into(),
                    values: vec![b"stow:A".to_vec(), b"stow:B".to_vec()],
                    line: 12,
                },
            ]
        );
    }

    #[test]
    fn modify_accepts_missing_final_dash() {
        let input = "dn: cn=a\nchangetype: modify\nreplace: cn\ncn: b\n\ndn: cn=c\nchangetype: modify\nadd: sn\nsn: s\n";
        let records = parse(input).unwrap();
        assert_eq!(records.len(), 2);
        for r in &records {
            let RecordBody::Modify(mods) = &r.body else {
                panic!("expected modify")
            };
            assert_eq!(mods.len(), 1);
            assert_eq!(mods[0].values.len(), 1);
        }
    }

    #[test]
    fn modify_without_modifications_is_allowed() {
        let records = parse("dn: cn=a\nchangetype: modify\n").unwrap();
        assert_eq!(records[0].body, RecordBody::Modify(vec![]));
    }

    #[test]
    fn modrdn_and_moddn() {
        let input = "dn: cn=old,dc=x\nchangetype: modrdn\nnewrdn: cn=new\ndeleteoldrdn: 1\n\ndn: cn=a,ou=x,dc=x\nchangetype: MODDN\nnewrdn:: Y249w6k=\ndeleteoldrdn: 0\nnewsuperior: ou=y,dc=x\n";
        let records = parse(input).unwrap();
        assert_eq!(
            records[0].body,
            RecordBody::ModRdn {
                new_rdn: "cn=new".into(),
                delete_old_rdn: true,
                new_superior: None
            }
        );
        assert_eq!(
            records[1].body,
            RecordBody::ModRdn {
                new_rdn: "cn=é".into(),
                delete_old_rdn: false,
                new_superior: Some("ou=y,dc=x".into())
            }
        );
        assert_eq!(records[1].line, 6);
    }

    #[test]
    fn error_record_without_dn() {
        let e = parse_err("dn: cn=a\ncn: a\n\nobjectClass: top\ncn: b\n");
        assert_eq!(e.line, 4);
        assert!(e.message.contains("does not start with `dn:`"), "{e}");
        assert!(e.message.contains("objectClass"), "{e}");
    }

    #[test]
    fn error_line_without_colon() {
        let e = parse_err("dn: cn=a\ncn: a\nthis line has none\n");
        assert_eq!(e.line, 3);
        assert!(e.message.contains("without a colon"), "{e}");
        assert!(e.message.contains("this line has none"), "{e}");
        assert_eq!(e.to_string(), format!("line 3: {}", e.message));
    }

    #[test]
    fn error_invalid_attribute_description() {
        let e = parse_err("dn: cn=a\nnot an attr: x\n");
        assert_eq!(e.line, 2);
        assert!(e.message.contains("invalid attribute description"), "{e}");
        let e = parse_err("dn: cn=a\ncn;: x\n");
        assert_eq!(e.line, 2);
    }

    #[test]
    fn error_invalid_base64() {
        let e = parse_err("dn: cn=a\ncn: a\njpegPhoto:: not*base64\n");
        assert_eq!(e.line, 3);
        assert!(e.message.contains("invalid base64"), "{e}");
        assert!(e.message.contains("jpegPhoto"), "{e}");

        // Folded: the error names the first physical line of the value.
        let e = parse_err("dn:: Y249\n YQ=!\ncn: a\n");
        assert_eq!(e.line, 1);
        assert!(e.message.contains("`dn`"), "{e}");
    }

    #[test]
    fn error_dn_not_utf8() {
        let e = parse_err("\ndn:: /w==\ncn: a\n");
        assert_eq!(e.line, 2);
        assert!(e.message.contains("not valid UTF-8"), "{e}");
    }

    #[test]
    fn error_url_value() {
        let e = parse_err("dn: cn=a\ncn: a\njpegPhoto:< file:///tmp/photo.jpg\n");
        assert_eq!(e.line, 3);
        assert!(
            e.message.contains("URL values (attr:<) are not supported"),
            "{e}"
        );
        assert!(e.message.contains("jpegPhoto"), "{e}");
    }

    #[test]
    fn error_continuation_at_start_of_file() {
        let e = parse_err(" continued\ndn: cn=a\ncn: a\n");
        assert_eq!(e.line, 1);
        assert!(e.message.contains("no preceding line"), "{e}");

        // Same after a record separator: there is nothing to continue.
        let e = parse_err("dn: cn=a\ncn: a\n\n continued\n");
        assert_eq!(e.line, 4);
    }

    #[test]
    fn whitespace_only_line_between_records_is_a_separator() {
        let records = parse("dn: cn=a\ncn: a\n\n   \ndn: cn=b\ncn: b\n").unwrap();
        assert_eq!(records.len(), 2);
    }

    #[test]
    fn error_unknown_changetype() {
        let e = parse_err("dn: cn=a\ncn: a\n\ndn: cn=b\nchangetype: rename\n");
        assert_eq!(e.line, 5);
        assert!(e.message.contains("unknown changetype `rename`"), "{e}");
    }

    #[test]
    fn error_delete_with_attributes() {
        let e = parse_err("dn: cn=a\nchangetype: delete\ncn: a\n");
        assert_eq!(e.line, 3);
        assert!(
            e.message
                .contains("delete record must not contain attribute lines"),
            "{e}"
        );
    }

    #[test]
    fn error_modify_value_for_other_attribute() {
        let e = parse_err("dn: cn=a\nchangetype: modify\nadd: cn\ncn: b\nsn: c\n-\n");
        assert_eq!(e.line, 5);
        assert!(e.message.contains("`sn` does not match"), "{e}");
        assert!(e.message.contains("add: cn"), "{e}");
    }

    #[test]
    fn error_modify_missing_dash_between_blocks() {
        let e = parse_err("dn: cn=a\nchangetype: modify\nadd: cn\ncn: b\nreplace: sn\nsn: c\n-\n");
        assert_eq!(e.line, 5);
        assert!(e.message.contains("missing `-`"), "{e}");
        assert!(e.message.contains("line 3"), "{e}");
    }

    #[test]
    fn error_modify_bad_operation_and_stray_dash() {
        let e = parse_err("dn: cn=a\nchangetype: modify\nincrement: uidNumber\n");
        assert_eq!(e.line, 3);
        assert!(e.message.contains("expected `add:`"), "{e}");

        let e = parse_err("dn: cn=a\nchangetype: modify\n-\n");
        assert_eq!(e.line, 3);
        assert!(e.message.contains("`-` without"), "{e}");
    }

    #[test]
    fn error_bad_deleteoldrdn() {
        let e = parse_err("dn: cn=a\nchangetype: modrdn\nnewrdn: cn=b\ndeleteoldrdn: yes\n");
        assert_eq!(e.line, 4);
        assert!(e.message.contains("deleteoldrdn must be 0 or 1"), "{e}");
        assert!(e.message.contains("yes"), "{e}");
    }

    #[test]
    fn error_modrdn_missing_or_unexpected_fields() {
        let e = parse_err("dn: cn=a\nchangetype: modrdn\n");
        assert_eq!(e.line, 2);
        assert!(e.message.contains("missing `newrdn:`"), "{e}");

        let e = parse_err("dn: cn=a\nchangetype: modrdn\nnewrdn: cn=b\n");
        assert_eq!(e.line, 3);
        assert!(e.message.contains("missing `deleteoldrdn:`"), "{e}");

        let e = parse_err("dn: cn=a\nchangetype: modrdn\nnewrdn: cn=b\ndeleteoldrdn: 1\ncn: x\n");
        assert_eq!(e.line, 5);
        assert!(e.message.contains("expected `newsuperior:`"), "{e}");
    }

    #[test]
    fn error_missing_blank_line_between_records() {
        let e = parse_err("dn: cn=a\ncn: a\ndn: cn=b\ncn: b\n");
        assert_eq!(e.line, 3);
        assert!(e.message.contains("blank line"), "{e}");
    }

    #[test]
    fn error_control_without_changetype() {
        let e = parse_err("dn: cn=a\ncontrol: 1.2.3\ncn: a\n");
        assert_eq!(e.line, 3);
        assert!(e.message.contains("changetype"), "{e}");
    }

    #[test]
    fn error_record_with_only_dn() {
        let e = parse_err("dn: cn=a\ncn: a\n\ndn: cn=b\n");
        assert_eq!(e.line, 4);
        assert!(e.message.contains("no attribute lines"), "{e}");
    }

    #[test]
    fn version_only_allowed_first() {
        let e = parse_err("dn: cn=a\ncn: a\n\nversion: 1\n");
        assert_eq!(e.line, 4);
        assert!(e.message.contains("does not start with `dn:`"), "{e}");
    }
}
