//! Masking the credentials in a URL before it goes into a log line, an
//! error, a task record or an API answer (a broker URL, an OAuth2 token
//! URL).
//!
//! A URL parser splits `scheme://user:password@host/path` at the first
//! `/`, `?` or `#` after the authority and then at the last `@` in it.
//! Nothing guarantees that the password is percent-encoded: a raw `/`, `?`,
//! `#` or `@` in it makes a parser put part of the password into the host
//! or the path (or refuse the URL), and a mask built on that split would
//! print that part. [`mask_url`] therefore masks everything between the
//! scheme and the LAST `@` of the whole string: the separator of the user
//! information is always at or before it, so no character of a password
//! survives, whatever it holds. The cost is over-masking an `@` in a
//! path or query (`https://****@example` for `https://kc/t?mail=a@example`),
//! which only ever hides more.

/// What replaces the secret part.
const MASK: &str = "****";

/// `uri` with its password (or, without a `:`, its whole user
/// information) masked: `amqp://user:****@host/vhost`. A string without
/// `@` is returned as it is.
pub fn mask_url(uri: &str) -> String {
    let Some(at) = uri.rfind('@') else {
        return uri.to_string();
    };
    // After `scheme://` when the string starts with a valid scheme (RFC
    // 3986 §3.1): a `://` inside a password does not count.
    let start = uri
        .find("://")
        .filter(|&i| is_scheme(&uri[..i]) && i + 3 <= at)
        .map_or(0, |i| i + 3);
    let userinfo = &uri[start..at];
    let user = match userinfo.split_once(':') {
        Some((user, _)) => format!("{user}:"),
        // No `:`: the whole user information may be the secret (a token).
        None => String::new(),
    };
    format!("{}{user}{MASK}{}", &uri[..start], &uri[at..])
}

/// `ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )`.
fn is_scheme(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    #[test]
    fn plain_cases() {
        assert_eq!(
            mask_url("amqp://guest:secret@127.0.0.1:5672/%2f"),
            "amqp://guest:****@127.0.0.1:5672/%2f"
        );
        assert_eq!(mask_url("amqp://127.0.0.1:5672"), "amqp://127.0.0.1:5672");
        assert_eq!(mask_url("https://T0KEN@kc/token"), "https://****@kc/token");
        // Unencoded delimiters in the password.
        assert_eq!(
            mask_url("amqps://u:p@s/s?w#rd@h:5671/v"),
            "amqps://u:****@h:5671/v"
        );
        // No scheme, or a `://` inside the password.
        assert_eq!(mask_url("u:pa://ss@h/v"), "u:****@h/v");
        assert_eq!(mask_url("u:secret@h"), "u:****@h");
        // Over-masking an `@` after the host hides more, never less.
        assert_eq!(
            mask_url("https://u:pw@kc:8443/realms/x?a=b@c"),
            "https://u:****@c"
        );
    }

    /// Characters a password may hold, delimiters and non-ASCII included.
    const CHARS: &[char] = &[
        'a', 'Z', '0', '9', ':', '@', '/', '?', '#', '%', '[', ']', '!', '$', '&', '\'', '(', ')',
        '*', '+', ',', ';', '=', ' ', '"', '<', '>', '\\', '^', '`', '{', '|', '}', '~', '.', '-',
        '_', 'é', '€', '😀', '\t',
    ];

    /// For random passwords of any characters, in URLs of several
    /// shapes, the masked URL is exactly the URL with everything between
    /// `user:` and the last `@` replaced, so it never contains the
    /// password.
    #[test]
    fn property_no_password_survives() {
        let mut rng = StdRng::seed_from_u64(0x5EED);
        // Always with a scheme, as every URL masked here has one (without,
        // `user://x@h` is ambiguous: scheme `user`, or password `//x`).
        let schemes = ["amqp://", "amqps://", "https://", "http://", "h2c+x-y.z://"];
        let tails = [
            "h.example",
            "h.example:5672/%2f",
            "10.0.0.1/v?x=1#f",
            "h/p@q",
        ];
        for _ in 0..20_000 {
            let len = rng.random_range(1..24);
            let password: String = (0..len)
                .map(|_| CHARS[rng.random_range(0..CHARS.len())])
                .collect();
            let scheme = schemes[rng.random_range(0..schemes.len())];
            let tail = tails[rng.random_range(0..tails.len())];
            let url = format!("{scheme}user:{password}@{tail}");
            let masked = mask_url(&url);
            let after_last_at = &url[url.rfind('@').unwrap()..];
            assert_eq!(
                masked,
                format!("{scheme}user:{MASK}{after_last_at}"),
                "{url:?}"
            );
            if password.chars().count() >= 4 && !format!("{scheme}user:{tail}").contains(&password)
            {
                assert!(!masked.contains(&password), "{url:?} -> {masked:?}");
            }
        }
    }
}
