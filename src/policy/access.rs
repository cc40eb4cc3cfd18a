//! Least privilege for the key (docs/design.md §2b): caller tokens checked in constant time, per-provider
//! allow-lists of methods and normalised paths, and model allow-lists. Config parsing lives in
//! `config/`; the pure checks live here, and `proxy/` calls them before anything reaches the
//! upstream. A checked path travels on as a `Target`, the only thing the proxy forwards.

use http::uri::PathAndQuery;
use http::{HeaderMap, Method};

use crate::config::secret::Secret;

pub use crate::config::path::{normalise, split_risk};
pub use crate::config::policy::{AllowRule, CallerPlan};

/// Whether `method path` is on the list. The path must already be in normal form.
pub fn allowed(rules: &[AllowRule], method: &Method, path: &str) -> bool {
    let segs: Vec<&str> = path.split('/').skip(1).collect();
    rules.iter().any(|r| {
        r.method.as_ref().is_none_or(|m| m == method) && {
            let mut i = 0;
            for (j, pat) in r.segments.iter().enumerate() {
                if pat == "**" {
                    return j <= segs.len();
                }
                match segs.get(i) {
                    Some(s) if pat == "*" && !s.is_empty() => {}
                    Some(s) if pat == s => {}
                    _ => return false,
                }
                i += 1;
            }
            i == segs.len()
        }
    })
}

/// Whether `model` matches one of the patterns (`*` = any run of characters).
pub fn model_allowed(patterns: &[String], model: &str) -> bool {
    // Model names are short; a longer one is refused before any matching work.
    model.len() <= MAX_MODEL_LEN
        && patterns
            .iter()
            .any(|p| glob(p.as_bytes(), model.as_bytes()))
}

/// Longest `model` value matched against a model allow-list.
pub const MAX_MODEL_LEN: usize = 256;

fn glob(p: &[u8], s: &[u8]) -> bool {
    match p.split_first() {
        None => s.is_empty(),
        Some((b'*', rest)) => (0..=s.len()).any(|i| glob(rest, &s[i..])),
        Some((c, rest)) => s.first() == Some(c) && glob(rest, &s[1..]),
    }
}

/// The token the client presented where it would put its API key.
pub fn presented_token(headers: &HeaderMap) -> Option<&[u8]> {
    if let Some(v) = headers.get(http::header::AUTHORIZATION) {
        let b = v.as_bytes();
        if b.len() > 7 && b[..7].eq_ignore_ascii_case(b"bearer ") {
            return Some(b[7..].trim_ascii());
        }
    }
    ["x-api-key", "x-goog-api-key", "api-key"]
        .iter()
        .find_map(|h| headers.get(*h).map(|v| v.as_bytes().trim_ascii()))
}

/// Compares in time that depends only on the lengths, never on where bytes differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let n = a.len().max(b.len());
    let mut diff = u8::from(a.len() != b.len());
    for i in 0..n {
        diff |= a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0xff);
    }
    diff == 0
}

/// A caller at run time: its plan and its budget's spend.
pub struct Caller {
    pub name: String,
    token: Secret,
    pub budget: Option<crate::policy::budget::TokenBudget>,
}

impl From<CallerPlan> for Caller {
    fn from(p: CallerPlan) -> Caller {
        Caller {
            name: p.name,
            token: p.token,
            budget: p.budget.map(crate::policy::budget::TokenBudget::new),
        }
    }
}

/// The index of the caller whose token matches (every caller is compared, so timing does not
/// say which one, nor how much of a wrong token was right).
pub fn identify(callers: &[Caller], headers: &HeaderMap) -> Option<usize> {
    let token = presented_token(headers)?;
    let mut found = None;
    for (i, c) in callers.iter().enumerate() {
        if constant_time_eq(c.token.expose().as_bytes(), token) {
            found = Some(i);
        }
    }
    found
}

/// Checks `METHOD path` against a provider's allow-list (docs/design.md §2b): the path must be
/// in normal form, with nothing an upstream could split on or decode into a separator
/// (`split_risk`), and match a rule. Messages name what was wrong; only a path that passed the
/// first two checks is echoed.
pub fn check_allowed(
    rules: &[AllowRule],
    method: &Method,
    path: &str,
    provider: &str,
) -> Result<(), String> {
    match normalise(path) {
        Some(n) if n == path => {}
        _ => return Err(format!("the path is not in normal form (dot segments, repeated slashes or encoded characters); provider {provider} only accepts listed paths")),
    }
    if let Some(what) = split_risk(path) {
        return Err(format!("the path has {what} in a segment, which an upstream could read as another path; provider {provider} has an allow-list and refuses such paths"));
    }
    if allowed(rules, method, path) {
        Ok(())
    } else {
        Err(format!(
            "{method} {path} is not allowed for provider {provider}"
        ))
    }
}

/// The request target as the allow-list checked it and as the upstream gets it (docs/design.md
/// §2b). Only `Target::admit` builds one, and `path()` returns the very bytes it checked, so the
/// path forwarded cannot differ from the path checked. The query is never matched; it is
/// forwarded as sent (less Gemini's key parameters, `headers::upstream_path`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target(PathAndQuery);

impl Target {
    /// Admits `pq` after `check_allowed` when the provider has an allow-list; without one the
    /// target is taken as sent.
    pub fn admit(
        allow: Option<&[AllowRule]>,
        method: &Method,
        pq: PathAndQuery,
        provider: &str,
    ) -> Result<Target, String> {
        if let Some(rules) = allow {
            check_allowed(rules, method, pq.path(), provider)?;
        }
        Ok(Target(pq))
    }

    /// The path, exactly as checked.
    pub fn path(&self) -> &str {
        self.0.path()
    }

    /// The query (not part of any match).
    pub fn query(&self) -> Option<&str> {
        self.0.query()
    }
}

/// Checks the JSON body's `model` against the patterns.
pub fn check_model(patterns: &[String], body: &[u8], provider: &str) -> Result<(), String> {
    let model = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("model").and_then(|m| m.as_str().map(str::to_owned)));
    match model {
        Some(m) if model_allowed(patterns, &m) => Ok(()),
        Some(m) => Err(format!(
            "model `{m}` is not allowed for provider {provider}; allowed: {}",
            patterns.join(", ")
        )),
        None => Err(format!(
            "the request body names no model; provider {provider} only allows: {}",
            patterns.join(", ")
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_forward_what_was_checked() {
        let rules = [AllowRule {
            method: Some(Method::GET),
            segments: vec!["ok".into(), "**".into()],
        }];
        let admit = |allow: Option<&[AllowRule]>, pq: &'static str| {
            Target::admit(allow, &Method::GET, PathAndQuery::from_static(pq), "p")
        };
        let t = admit(Some(&rules), "/ok/a%20b?x=%2f").unwrap();
        assert_eq!((t.path(), t.query()), ("/ok/a%20b", Some("x=%2f")));
        for pq in [
            "/ok/..%2fsecret",
            "/ok/..%5Csecret",
            "/ok/..\\secret",
            "/ok/..;/secret",
        ] {
            let e = admit(Some(&rules), pq).unwrap_err();
            assert!(
                e.contains("in a segment") && !e.contains("secret"),
                "{pq}: {e}"
            );
        }
        let e = admit(Some(&rules), "/ok/%252e%252e/secret").unwrap_err();
        assert!(e.contains("an encoded `%` (%25)"), "{e}");
        assert!(admit(Some(&rules), "/ok/%2E%2e/secret").is_err());
        // No allow-list: the target is taken as sent.
        let t = admit(None, "/ok/..%2fsecret?q").unwrap();
        assert_eq!((t.path(), t.query()), ("/ok/..%2fsecret", Some("q")));
    }

    #[test]
    fn rules_match() {
        let rule = |m: &str, p: &str| AllowRule {
            method: (m != "*").then(|| Method::from_bytes(m.as_bytes()).unwrap()),
            segments: p.split('/').skip(1).map(str::to_owned).collect(),
        };
        let rules = [
            rule("POST", "/v1/chat/completions"),
            rule("GET", "/v1/models/*"),
            rule("*", "/v1/responses/**"),
        ];
        assert!(allowed(&rules, &Method::POST, "/v1/chat/completions"));
        assert!(!allowed(&rules, &Method::GET, "/v1/chat/completions"));
        assert!(!allowed(&rules, &Method::POST, "/v1/chat/completions/x"));
        assert!(allowed(&rules, &Method::GET, "/v1/models/gpt-4o"));
        assert!(!allowed(&rules, &Method::GET, "/v1/models"));
        assert!(!allowed(&rules, &Method::GET, "/v1/models/a/b"));
        assert!(allowed(&rules, &Method::DELETE, "/v1/responses/abc/items"));
        assert!(allowed(&rules, &Method::POST, "/v1/responses"));
        assert!(!allowed(&rules, &Method::POST, "/V1/chat/completions"));
        assert!(!allowed(&rules, &Method::POST, "/v1/files"));
    }

    #[test]
    fn models_and_tokens() {
        let pats = vec!["gpt-4o-mini".to_owned(), "gpt-5*".to_owned()];
        assert!(model_allowed(&pats, "gpt-4o-mini"));
        assert!(model_allowed(&pats, "gpt-5.1-codex"));
        assert!(!model_allowed(&pats, "gpt-4o"));
        let long = format!("gpt-5{}", "x".repeat(MAX_MODEL_LEN));
        assert!(!model_allowed(&pats, &long));
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(!constant_time_eq(b"", b"\\xff"));
        let mut h = HeaderMap::new();
        h.insert("authorization", "Bearer  tok ".parse().unwrap());
        assert_eq!(presented_token(&h), Some(&b"tok"[..]));
        let mut h = HeaderMap::new();
        h.insert("x-api-key", "tok2".parse().unwrap());
        assert_eq!(presented_token(&h), Some(&b"tok2"[..]));
    }
}
