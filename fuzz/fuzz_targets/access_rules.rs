//! Least-privilege checks (`access::{normalise, split_risk, allowed, check_allowed, Target,
//! model_allowed}`): the normal form is a fixed point with no dot segments or empty segments, a
//! path is only ever allowed in normal form and with no split risk, the path an admitted
//! `Target` forwards (`headers::upstream_path`) is the path checked, byte for byte, and a lenient
//! upstream (decoding repeatedly, splitting on `\` and `;`) routes it where the list matched;
//! model patterns match exactly what a reference matcher matches.
//!
//! Input: byte 0 picks the method; line 1 is the request path, line 2 a model name; every other
//! line is an allow rule (`METHOD /pattern`, kept when `allow_rules` would accept it) or, when
//! it starts with `model `, a model pattern.
#![no_main]

use http::uri::PathAndQuery;
use http::Method;
use libfuzzer_sys::fuzz_target;
use llm_keyproxy::policy::access::{
    allowed, check_allowed, model_allowed, normalise, split_risk, AllowRule, Target,
};

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

/// Every `%XX` decoded once (lossy: what a decoding upstream would see); a reference written
/// apart from the crate's own decoders on purpose.
fn decode_once(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match hex.filter(|h| h.bytes().all(|c| c.is_ascii_hexdigit())) {
            Some(h) if b[i] == b'%' => {
                out.push(u8::from_str_radix(h, 16).unwrap());
                i += 3;
            }
            _ => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The segments the allow-list matched, each decoded once: what an upstream that splits on `/`
/// only, then decodes, routes to.
fn matched(path: &str) -> String {
    path.split('/')
        .map(decode_once)
        .collect::<Vec<_>>()
        .join("/")
}

/// Where a lenient upstream or gateway would route `path`: escapes decoded until none is left
/// (up to three rounds), `\` read as `/`, anything from a decoded `?` or `#` on dropped, `;`
/// parameters dropped, dot segments resolved (a climb above the root stays at the root).
fn lenient_route(path: &str) -> String {
    let mut s = path.to_owned();
    for _ in 0..3 {
        s = decode_once(&s);
    }
    let s = s.replace('\\', "/");
    let mut out: Vec<&str> = Vec::new();
    for seg in s.split(['?', '#']).next().unwrap_or("").split('/').skip(1) {
        match seg.split(';').next().unwrap_or("") {
            "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    format!("/{}", out.join("/"))
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
        assert_eq!(split_risk(path), None, "allowed with a split risk");
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
            normalise(path).as_deref() == Some(path) && split_risk(path).is_none(),
            "`* /**` and {path:?}"
        );
    }

    // The path checked is the path forwarded (docs/design.md §2b), and no upstream reads it as
    // another one.
    if let Ok(pq) = PathAndQuery::try_from(path) {
        match Target::admit(Some(&rules), method, pq.clone(), "fuzz") {
            Ok(target) => {
                assert_eq!(target.path(), pq.path(), "admitted another path");
                assert_eq!(target.query(), pq.query(), "admitted another query");
                assert!(allowed(&rules, method, target.path()));
                let once = decode_once(target.path());
                assert!(
                    !once.contains('\u{fffd}') || target.path().contains('\u{fffd}'),
                    "{:?} decodes to bytes that are not UTF-8",
                    target.path()
                );
                assert!(
                    !once.chars().any(char::is_control),
                    "{:?} decodes to a control character",
                    target.path()
                );
                assert_eq!(
                    lenient_route(target.path()),
                    matched(target.path()),
                    "a lenient upstream routes {:?} elsewhere",
                    target.path()
                );
                for p in &fuzz_support::plan().providers {
                    fuzz_support::check_upstream_path(p, &target);
                }
            }
            Err(_) => assert!(check_allowed(&rules, method, pq.path(), "fuzz").is_err()),
        }
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
