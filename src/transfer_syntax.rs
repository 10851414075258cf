//! Transfer syntaxes by name: the UIDs and the keywords dcm4che gives
//! them (`UID.forName`), for the `transfer-syntax` property of a web app
//! and for messages that name a syntax.
//!
//! At the bottom: configuration and transcoding both read it; it knows
//! nothing but the UID grammar.

/// Transfer syntax keywords as dcm4che names them (`UID.forName`), with the
/// older spellings still seen in configurations.
const TS_KEYWORDS: &[(&str, &str)] = &[
    ("ImplicitVRLittleEndian", "1.2.840.10008.1.2"),
    ("ExplicitVRLittleEndian", "1.2.840.10008.1.2.1"),
    ("DeflatedExplicitVRLittleEndian", "1.2.840.10008.1.2.1.99"),
    ("ExplicitVRBigEndian", "1.2.840.10008.1.2.2"),
    ("JPEGBaseline8Bit", "1.2.840.10008.1.2.4.50"),
    ("JPEGBaseline1", "1.2.840.10008.1.2.4.50"),
    ("JPEGExtended12Bit", "1.2.840.10008.1.2.4.51"),
    ("JPEGExtended24", "1.2.840.10008.1.2.4.51"),
    ("JPEGLossless", "1.2.840.10008.1.2.4.57"),
    ("JPEGLosslessNonHierarchical14", "1.2.840.10008.1.2.4.57"),
    ("JPEGLosslessSV1", "1.2.840.10008.1.2.4.70"),
    ("JPEGLSLossless", "1.2.840.10008.1.2.4.80"),
    ("JPEGLSNearLossless", "1.2.840.10008.1.2.4.81"),
    ("JPEG2000Lossless", "1.2.840.10008.1.2.4.90"),
    ("JPEG2000", "1.2.840.10008.1.2.4.91"),
    ("HTJ2KLossless", "1.2.840.10008.1.2.4.201"),
    ("HTJ2KLosslessRPCL", "1.2.840.10008.1.2.4.202"),
    ("HTJ2K", "1.2.840.10008.1.2.4.203"),
    ("RLELossless", "1.2.840.10008.1.2.5"),
];

/// The keyword of a transfer syntax UID, for messages; the UID itself when
/// it has none.
pub fn transfer_syntax_name(uid: &str) -> &str {
    TS_KEYWORDS
        .iter()
        .find(|(_, u)| *u == uid)
        .map_or(uid, |(k, _)| k)
}

/// The UID of a `transfer-syntax` list item: a UID as written, or a
/// keyword (matched regardless of case); None when it is neither.
pub fn transfer_syntax_uid(item: &str) -> Option<String> {
    if item.starts_with(|c: char| c.is_ascii_digit()) {
        return crate::task::is_uid(item).then(|| item.to_string());
    }
    TS_KEYWORDS
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(item))
        .map(|(_, u)| u.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transfer_syntax_items() {
        assert_eq!(
            transfer_syntax_uid("ExplicitVRLittleEndian").as_deref(),
            Some("1.2.840.10008.1.2.1")
        );
        assert_eq!(
            transfer_syntax_uid("jpeglosslesssv1").as_deref(),
            Some("1.2.840.10008.1.2.4.70")
        );
        assert_eq!(
            transfer_syntax_uid("1.2.840.10008.1.2.4.90").as_deref(),
            Some("1.2.840.10008.1.2.4.90")
        );
        assert_eq!(transfer_syntax_uid("JPEG2001"), None);
        assert_eq!(transfer_syntax_uid("1.2..3"), None);
    }
}
