//! Wire formats the cloud token services share (src/cloud.rs and its users): form bodies,
//! compact JWTs (parsed without a signature check, or minted unsigned), ISO 8601 UTC times.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::Value;

/// `application/x-www-form-urlencoded` pairs, percent- and `+`-decoded.
pub(crate) fn form(body: &[u8]) -> Vec<(String, String)> {
    body.split(|b| *b == b'&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let mut it = kv.splitn(2, |b| *b == b'=');
            let k = percent_decode(it.next().unwrap_or_default());
            let v = percent_decode(it.next().unwrap_or_default());
            (k, v)
        })
        .collect()
}

/// Percent-decoding with `+` as space (form encoding); invalid escapes stay as they are.
pub(crate) fn percent_decode(s: &[u8]) -> String {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        let escaped = match s.get(i..i + 3) {
            Some([b'%', h, l]) => hex(*h).zip(hex(*l)).map(|(h, l)| h << 4 | l),
            _ => None,
        };
        match (escaped, s[i]) {
            (Some(b), _) => {
                out.push(b);
                i += 3;
                continue;
            }
            (None, b'+') => out.push(b' '),
            (None, b) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The value of form field `name`.
pub(crate) fn field<'a>(form: &'a [(String, String)], name: &str) -> Option<&'a str> {
    form.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// The parts of a compact JWT: header and payload JSON, the signed input, the signature.
pub(crate) struct Jwt {
    pub(crate) header: Value,
    pub(crate) claims: Value,
    pub(crate) signing_input: String,
    pub(crate) signature: Vec<u8>,
}

/// Parses a compact JWT (`b64url(header).b64url(payload).b64url(sig)`); no signature check.
pub(crate) fn parse_jwt(token: &str) -> Option<Jwt> {
    let mut parts = token.split('.');
    let (h, p, s) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let header = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(h).ok()?).ok()?;
    let claims = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(p).ok()?).ok()?;
    Some(Jwt {
        header,
        claims,
        signing_input: format!("{h}.{p}"),
        signature: URL_SAFE_NO_PAD.decode(s).ok()?,
    })
}

impl Jwt {
    /// True when claim `aud` is `want` (or an array holding it).
    pub(crate) fn aud_is(&self, want: &str) -> bool {
        match &self.claims["aud"] {
            Value::String(s) => s == want,
            Value::Array(a) => a.iter().any(|v| v.as_str() == Some(want)),
            _ => false,
        }
    }

    /// True when claim `exp` is in the future.
    pub(crate) fn unexpired(&self) -> bool {
        self.claims["exp"]
            .as_u64()
            .is_some_and(|exp| exp > crate::routes::unix_secs())
    }
}

/// An unsigned-but-well-formed JWT (`alg` RS256, signature `signature`) with `claims`.
pub(crate) fn unsigned_jwt(claims: &Value) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    format!("{header}.{payload}.c2lnbmF0dXJl")
}

/// `t` as ISO 8601 UTC with second precision, e.g. `2026-12-04T08:00:00Z`.
pub(crate) fn iso8601(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let dt = time::OffsetDateTime::from_unix_timestamp(secs as i64)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        dt.year(),
        u8::from(dt.month()),
        dt.day(),
        dt.hour(),
        dt.minute(),
        dt.second()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::time::Duration;

    #[test]
    fn iso8601_formats_utc_seconds() {
        assert_eq!(iso8601(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let t = UNIX_EPOCH + Duration::from_secs(1_796_342_400 + 8 * 3600 + 61);
        assert_eq!(iso8601(t), "2026-12-04T08:01:01Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(iso8601(leap), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn form_decodes_percent_and_plus() {
        let f = form(b"a=1&RoleArn=arn%3Aaws%3Aiam%3A%3A1%3Arole%2Fr&s=x+y&bad=%zz&end=%4");
        assert_eq!(field(&f, "a"), Some("1"));
        assert_eq!(field(&f, "RoleArn"), Some("arn:aws:iam::1:role/r"));
        assert_eq!(field(&f, "s"), Some("x y"));
        assert_eq!(field(&f, "bad"), Some("%zz"));
        assert_eq!(field(&f, "end"), Some("%4"));
        assert_eq!(field(&f, "none"), None);
    }

    #[test]
    fn jwt_round_trip_and_claims() {
        let exp = crate::routes::unix_secs() + 60;
        let token = unsigned_jwt(&json!({"aud": ["x", "sts.amazonaws.com"], "exp": exp}));
        let jwt = parse_jwt(&token).unwrap();
        assert_eq!(jwt.header["alg"], "RS256");
        assert!(jwt.aud_is("sts.amazonaws.com"));
        assert!(!jwt.aud_is("y"));
        assert!(jwt.unexpired());
        assert_eq!(jwt.signature, b"signature");
        assert!(parse_jwt("a.b").is_none());
        assert!(parse_jwt(&format!("{token}.x")).is_none());
        let old = unsigned_jwt(&json!({"aud": "a", "exp": 5}));
        assert!(!parse_jwt(&old).unwrap().unexpired());
    }
}
