//! Bounded text for messages. What a peer, a broker message or a panic
//! says is cut here before it goes into a log line, a task record, a
//! header or an error, so no outside party decides how long those get.
//!
//! Owns only the rule for cutting; it must not decide what is shown (the
//! callers choose the limits and what to redact first).

/// `s` cut to at most `max` characters, the cut marked with `...`, which
/// counts towards `max`; cut on a character boundary.
pub fn clip(s: &str, max: usize) -> String {
    const MARK: &str = "...";
    if s.char_indices().nth(max).is_none() {
        return s.to_string();
    }
    let keep = max.saturating_sub(MARK.len());
    let end = s.char_indices().nth(keep).map_or(s.len(), |(i, _)| i);
    format!("{}{MARK}", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_within_the_limit_on_character_boundaries() {
        assert_eq!(clip("abcdef", 4), "a...");
        assert_eq!(clip("abcd", 4), "abcd");
        assert_eq!(clip("äöüäöü", 5), "äö...");
        assert_eq!(clip("abcdef", 2), "...");
        for max in 0..12 {
            assert!(clip("ÄÖÜ-äöü-xyz-123", max).chars().count() <= max.max(3));
        }
    }
}
