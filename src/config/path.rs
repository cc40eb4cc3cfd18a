//! The normal form of a request path (docs/design.md §2b), shared by the allow-list patterns the
//! config accepts and the request paths `policy::access` matches against them, and what in a
//! path an upstream could still split on or decode into a separator once the list has matched.

use std::borrow::Cow;

/// Normalises a request path (percent-decoding unreserved characters, resolving dot segments,
/// folding repeated slashes). `None` when it climbs above the root or is not decodable.
pub fn normalise(path: &str) -> Option<String> {
    let decoded = decode_unreserved(path)?;
    let mut out: Vec<&str> = Vec::new();
    for seg in decoded.split('/').skip(1) {
        match seg {
            "" => {}
            "." => {}
            ".." => {
                out.pop()?;
            }
            s => out.push(s),
        }
    }
    let trailing = decoded.ends_with('/') && !out.is_empty();
    let mut s = String::with_capacity(decoded.len());
    for seg in &out {
        s.push('/');
        s.push_str(seg);
    }
    if s.is_empty() || trailing {
        s.push('/');
    }
    Some(s)
}

/// What in `path` an upstream or gateway could read differently from an allow-list that splits
/// on `/` only (docs/design.md §2b): a segment must, percent-decoded once, be UTF-8 text with no
/// `/`, `\`, `;`, `%`, `?`, `#` or control character, and hold no literal `\` or `;`. Such an
/// upstream would otherwise route `/ok/..%2fsecret`, `/ok/..\secret`, `/ok/..;/secret` or
/// `/ok/%252e%252e/secret` to a path the list never checked. `None` when there is none; else
/// what was found, for the error message (never the path itself).
pub fn split_risk(path: &str) -> Option<&'static str> {
    for seg in path.split('/') {
        if seg.contains('\\') {
            return Some("a `\\`");
        }
        if seg.contains(';') {
            return Some("a `;` (path parameter)");
        }
        let Some(bytes) = decode_escapes(seg, |_| true) else {
            return Some("a malformed percent-escape");
        };
        let Ok(text) = std::str::from_utf8(&bytes) else {
            return Some("percent-escapes that do not decode to UTF-8 (e.g. %C0%AF)");
        };
        let found = text.chars().find_map(|c| match c {
            '/' => Some("an encoded `/` (%2F)"),
            '\\' => Some("an encoded `\\` (%5C)"),
            ';' => Some("an encoded `;` (%3B)"),
            '%' => Some("an encoded `%` (%25)"),
            '?' => Some("an encoded `?` (%3F)"),
            '#' => Some("an encoded `#` (%23)"),
            c if c.is_control() => Some("an encoded control character (e.g. %00)"),
            _ => None,
        });
        if found.is_some() {
            return found;
        }
    }
    None
}

/// Decodes `%XX` only where XX is an unreserved character (RFC 3986); others stay encoded.
fn decode_unreserved(path: &str) -> Option<Cow<'_, str>> {
    if !path.contains('%') {
        return Some(Cow::Borrowed(path));
    }
    let unreserved = |v: u8| v.is_ascii_alphanumeric() || matches!(v, b'-' | b'.' | b'_' | b'~');
    String::from_utf8(decode_escapes(path, unreserved)?)
        .ok()
        .map(Cow::Owned)
}

/// Decodes each `%XX` whose byte `decode` accepts and keeps the others as they are; `None` when a
/// `%` is not followed by two hex digits.
fn decode_escapes(s: &str, decode: impl Fn(u8) -> bool) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = |j: usize| b.get(j).and_then(|&c| char::from(c).to_digit(16));
            let v = u8::try_from(hex(i + 1)? << 4 | hex(i + 2)?).ok()?;
            if decode(v) {
                out.push(v);
            } else {
                out.extend_from_slice(&b[i..i + 3]);
            }
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisation() {
        assert_eq!(
            normalise("/v1/chat/completions").as_deref(),
            Some("/v1/chat/completions")
        );
        assert_eq!(normalise("/v1/../files").as_deref(), Some("/files"));
        assert_eq!(normalise("/v1/%2e%2e/files").as_deref(), Some("/files"));
        assert_eq!(normalise("/v1/%2E%2e/files").as_deref(), Some("/files"));
        assert_eq!(normalise("//v1///models").as_deref(), Some("/v1/models"));
        assert_eq!(normalise("/v1/%63hat").as_deref(), Some("/v1/chat"));
        assert_eq!(normalise("/a%2Fb").as_deref(), Some("/a%2Fb"));
        assert_eq!(normalise("/.."), None);
        assert_eq!(normalise("/v1/../../x"), None);
        assert_eq!(normalise("/").as_deref(), Some("/"));
        assert_eq!(normalise("/v1/café%20x").as_deref(), Some("/v1/café%20x"));
        assert_eq!(normalise("/a%+1"), None, "`+1` is not two hex digits");
        assert_eq!(normalise("/a%2"), None);
    }

    #[test]
    fn split_risks_are_named() {
        for (path, what) in [
            ("/ok/..%2fsecret", "an encoded `/` (%2F)"),
            ("/ok/..%2Fsecret", "an encoded `/` (%2F)"),
            ("/ok/..%5csecret", "an encoded `\\` (%5C)"),
            ("/ok/..\\secret", "a `\\`"),
            ("/ok/..;/secret", "a `;` (path parameter)"),
            ("/ok/x;v=1", "a `;` (path parameter)"),
            ("/ok/..%3b/secret", "an encoded `;` (%3B)"),
            ("/ok/%252e%252e/secret", "an encoded `%` (%25)"),
            ("/ok/..%3f", "an encoded `?` (%3F)"),
            ("/ok/x%23", "an encoded `#` (%23)"),
            ("/ok/x%00", "an encoded control character (e.g. %00)"),
            ("/ok/x%0a", "an encoded control character (e.g. %00)"),
            ("/ok/x%7F", "an encoded control character (e.g. %00)"),
            ("/ok/x%c2%85", "an encoded control character (e.g. %00)"),
            (
                "/ok/%c0%af",
                "percent-escapes that do not decode to UTF-8 (e.g. %C0%AF)",
            ),
            (
                "/ok/%ff",
                "percent-escapes that do not decode to UTF-8 (e.g. %C0%AF)",
            ),
            ("/ok/%zz", "a malformed percent-escape"),
        ] {
            assert_eq!(split_risk(path), Some(what), "{path}");
        }
        for path in [
            "/",
            "/v1/chat/completions",
            "/v1/files/caf%C3%A9%20x",
            "/v1/café",
            "/v1beta/models/gemini-2.5-pro:streamGenerateContent",
            "/v1/x%2B%40%3A%3D",
        ] {
            assert_eq!(split_risk(path), None, "{path}");
        }
    }
}
