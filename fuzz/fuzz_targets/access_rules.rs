//! Least-privilege checks (`access::{normalise, allowed, check_allowed, model_allowed}`): the
//! normal form is a fixed point with no dot segments or empty segments, a path is only ever
//! allowed in normal form, and model patterns match exactly what a reference matcher matches.
//!
//! Input: byte 0 picks the method; line 1 is the request path, line 2 a model name; every other
//! line is an allow rule (`METHOD /pattern`, kept when `allow_rules` would accept it) or, when
//! it starts with `model `, a model pattern.
#![no_main]

use http::Method;
use libfuzzer_sys::fuzz_target;
use llm_keyproxy::policy::access::{allowed, check_allowed, model_allowed, normalise, AllowRule};

const METHODS: [Method; 4] = [Method::GET, Method::POST, Method::DELETE, Method::PUT];
/// The model matcher backtracks (time grows with the model length to the power of the number of
/// `*`); models and patterns are kept short here so a run measures correctness, not that.
const MAX_MODEL: usize = 256;
const MAX_STARS: usize = 3;

/// What `allow_rules` accepts, built the same way.
fn rule(line: &str) -> Option<AllowRule> {
    let (method, pattern) = line.trim().split_once(' ')?;
    let method = match method {
        "*" => None,
        m => match Method::from_bytes(m.as_bytes()) {
            Ok(m) if m.as_str().bytes().all(|b| b.is_ascii_uppercase()) => Some(m),
            _ => return None,
        },
    };
    let pattern = pattern.trim();
    if !pattern.starts_with('/') || normalise(pattern).as_deref() != Some(pattern) {
        return None;
    }
    let segments: Vec<String> = pattern.split('/').skip(1).map(str::to_owned).collect();
    if segments
        .iter()
        .position(|s| s == "**")
        .is_some_and(|p| p + 1 != segments.len())
    {
        return None;
    }
    Some(AllowRule { method, segments })
}

/// Reference wildcard match (`*` = any run of bytes), by dynamic programming.
fn reference_glob(p: &[u8], s: &[u8]) -> bool {
    let mut row = vec![false; s.len() + 1];
    row[0] = true;
    for &c in p {
        let mut next = vec![false; s.len() + 1];
        if c == b'*' {
            let mut any = false;
            for j in 0..=s.len() {
                any |= row[j];
                next[j] = any;
            }
        } else {
            for j in 1..=s.len() {
                next[j] = row[j - 1] && s[j - 1] == c;
            }
        }
        row = next;
    }
    row[s.len()]
}

fuzz_target!(|data: &[u8]| {
    let Some((&m, rest)) = data.split_first() else {
        return;
    };
    let method = &METHODS[usize::from(m) % METHODS.len()];
    let text = String::from_utf8_lossy(rest);
    let mut lines = text.split('\n');
    let path = lines.next().unwrap_or("");
    let model = lines.next().unwrap_or("");
    let mut rules = Vec::new();
    let mut patterns = Vec::new();
    for line in lines {
        match line.strip_prefix("model ") {
            Some(p) => patterns.push(p.to_owned()),
            None => rules.extend(rule(line)),
        }
    }

    if let Some(n) = normalise(path) {
        assert!(n.starts_with('/'), "normalise({path:?}) = {n:?}");
        assert!(
            !n.contains("//"),
            "normalise({path:?}) = {n:?} has an empty segment"
        );
        assert!(
            !n.split('/').any(|s| s == "." || s == ".."),
            "normalise({path:?}) = {n:?} has a dot segment"
        );
        assert_eq!(
            normalise(&n).as_deref(),
            Some(n.as_str()),
            "not a fixed point"
        );
    }

    let ok = check_allowed(&rules, method, path, "fuzz").is_ok();
    if ok {
        assert_eq!(
            normalise(path).as_deref(),
            Some(path),
            "allowed out of normal form"
        );
        assert!(allowed(&rules, method, path));
    }
    if rules.is_empty() {
        assert!(!ok, "{method} {path:?} allowed by an empty list");
    }
    // `**` at the end of a rule allows everything below it, and nothing else.
    if rules
        .iter()
        .any(|r| r.method.is_none() && r.segments == ["**"])
    {
        assert_eq!(
            ok,
            normalise(path).as_deref() == Some(path),
            "`* /**` and {path:?}"
        );
    }

    if model.len() <= MAX_MODEL {
        patterns.retain(|p| p.len() <= 64 && p.bytes().filter(|b| *b == b'*').count() <= MAX_STARS);
        let want = patterns
            .iter()
            .any(|p| reference_glob(p.as_bytes(), model.as_bytes()));
        assert_eq!(
            model_allowed(&patterns, model),
            want,
            "model {model:?} against {patterns:?}"
        );
    }
});
