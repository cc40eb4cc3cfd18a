//! Shared pieces of the fuzz targets: the fixed plan the header and path targets run against,
//! the byte formats the targets read, and the checks more than one target makes.
//!
//! Nothing here is fuzzed itself; every function either builds input for `llm_keyproxy` or
//! asserts an invariant about its output (a failed assertion is the crash libFuzzer reports).

use std::sync::OnceLock;

use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::uri::{PathAndQuery, Uri};
use llm_keyproxy::config::plan::{Credential, Plan, ProviderPlan};
use llm_keyproxy::policy::access::Target;
use llm_keyproxy::proxy::headers::upstream_path;
use llm_keyproxy::telemetry::usage::Usage;

/// The key every `env:` reference of the fixed plan resolves to. Long and odd enough that no
/// message can contain it by accident.
pub const KEY: &str = "kpfuzzKEY7f3a9c01d2e4";

/// The plan of the `headers` and `request_target` targets: the presets with extras (Anthropic's
/// version header, Copilot's initiator, Gemini's key parameters), a base path (OpenAI's `/v1`),
/// and a custom provider with its own header and prefix.
pub const PLAN_YAML: &str = "\
providers:
  openai: {api_key: env:FUZZ_KEY}
  anthropic: {api_key: env:FUZZ_KEY}
  gemini: {api_key: env:FUZZ_KEY}
  copilot: {api_key: env:FUZZ_KEY}
  custom:
    listen: 127.0.0.1:10010
    upstream: https://llm.internal.example:8443/gw/v1/
    api_key: env:FUZZ_KEY
    auth: {header: x-custom-key, prefix: \"Token \"}
";

/// The fixed plan, built once per process.
pub fn plan() -> &'static Plan {
    static PLAN: OnceLock<Plan> = OnceLock::new();
    PLAN.get_or_init(|| {
        let lookup = |k: &str| (k == "FUZZ_KEY").then(|| KEY.to_owned());
        match Plan::from_yaml(PLAN_YAML, &lookup) {
            Ok(plan) => plan,
            Err(errors) => panic!("the fuzz plan does not validate: {errors}"),
        }
    })
}

/// The provider `selector` picks (modulo the number of providers).
pub fn provider(selector: u8) -> &'static ProviderPlan {
    let providers = &plan().providers;
    &providers[usize::from(selector) % providers.len()]
}

/// The configured credential of a provider of the fixed plan.
pub fn credential(p: &ProviderPlan) -> (&HeaderName, &HeaderValue) {
    match &p.credential {
        Credential::Configured { name, value } => (name, value),
        Credential::Missing(why) => panic!("provider {} has no key: {why}", p.name),
        Credential::Aws(_) => panic!("provider {} signs with AWS keys", p.name),
    }
}

/// Most headers read from one input (an `http::HeaderMap` panics beyond 32,768 entries).
const MAX_HEADERS: usize = 2000;

/// Headers from `name:value` lines (`\n` or `\r\n`; one space after the colon is dropped, as
/// HTTP/1 parsers do). Lines that do not make a valid name and value are skipped.
pub fn header_map(bytes: &[u8]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for line in bytes.split(|b| *b == b'\n') {
        if headers.len() >= MAX_HEADERS {
            break;
        }
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        let value = value.strip_prefix(b" ").unwrap_or(value);
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value)) {
            headers.append(n, v);
        }
    }
    headers
}

/// The header names a `Connection` header lists (RFC 9110 section 7.6.1), read the way a
/// receiver must: comma-separated, case-insensitive, whitespace around each token ignored.
pub fn connection_named(headers: &HeaderMap) -> Vec<HeaderName> {
    headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().to_ascii_lowercase().as_bytes()).ok())
        .collect()
}

/// All values of `name`, in order.
pub fn values(headers: &HeaderMap, name: &HeaderName) -> Vec<HeaderValue> {
    headers.get_all(name).iter().cloned().collect()
}

/// `^[A-Za-z0-9_.-]{1,128}$`, the request ids the proxy accepts and sends.
pub fn is_request_id(v: &[u8]) -> bool {
    (1..=128).contains(&v.len())
        && v.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

/// `pq` admitted with no allow-list, as the proxy does for a provider without one.
pub fn unlisted(pq: PathAndQuery) -> Target {
    Target::admit(None, &http::Method::GET, pq, "fuzz")
        .unwrap_or_else(|e| panic!("refused without an allow-list: {e}"))
}

/// Checks `upstream_path` for an admitted target (`check_target`, then `Target::admit`): the
/// path forwarded is the target's path byte for byte, after the base path when it lacked it
/// (docs/design.md §2b), and the URI the proxy then builds (`proxy::upstream_request`) is valid
/// and still names the provider's origin. Returns the upstream path and query.
pub fn check_upstream_path(p: &ProviderPlan, target: &Target) -> String {
    let out = upstream_path(p, target);
    assert!(
        out.starts_with('/') && !out.starts_with("//"),
        "{}: upstream path {out:?} for {target:?} does not start with a single `/`",
        p.name
    );
    let base = p.base_path.as_str();
    let after_base = out.strip_prefix(base).unwrap_or_else(|| {
        panic!(
            "{}: upstream path {out:?} for {target:?} is outside the base path {base:?}",
            p.name
        )
    });
    assert!(
        after_base.is_empty() || after_base.starts_with('/') || after_base.starts_with('?'),
        "{}: upstream path {out:?} for {target:?} only looks like it is under {base:?}",
        p.name
    );
    let (path, query) = match out.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (out.as_str(), None),
    };
    assert!(
        path == target.path() || path.strip_prefix(base) == Some(target.path()),
        "{}: upstream path {out:?} is not the checked path {:?}",
        p.name,
        target.path()
    );
    if p.extras.strip_key_params {
        for param in query.into_iter().flat_map(|q| q.split('&')) {
            let name = param.split('=').next().unwrap_or("");
            assert!(
                !matches!(name, "key" | "apiKey" | "api_key"),
                "{}: upstream path {out:?} for {target:?} still has a key parameter",
                p.name
            );
            assert!(!param.is_empty(), "{}: empty parameter in {out:?}", p.name);
        }
    } else {
        let want = target.query().filter(|q| !q.is_empty());
        assert_eq!(
            query, want,
            "{}: upstream path {out:?} changed the query of {target:?}",
            p.name
        );
    }

    // What proxy.rs does with it: origin + path-and-query, sent as the request URI.
    let forwarded = PathAndQuery::try_from(out.as_str()).unwrap_or_else(|e| {
        panic!(
            "{}: upstream path {out:?} for {target:?} is not a request target: {e}",
            p.name
        )
    });
    let mut parts = p.origin.clone().into_parts();
    parts.path_and_query = Some(forwarded);
    let uri = Uri::from_parts(parts)
        .unwrap_or_else(|e| panic!("{}: cannot build the upstream URI for {out:?}: {e}", p.name));
    let reparsed: Uri = uri
        .to_string()
        .parse()
        .unwrap_or_else(|e| panic!("{}: upstream URI {uri} does not parse back: {e}", p.name));
    assert_eq!(
        reparsed.authority(),
        p.origin.authority(),
        "{}: the path {target:?} changed the upstream host: {uri}",
        p.name
    );
    assert_eq!(
        reparsed.path_and_query().map(PathAndQuery::as_str),
        Some(out.as_str()),
        "{}: upstream URI {uri} does not carry {out:?}",
        p.name
    );
    out
}

/// What every `Usage` must look like, whatever the body: the model is sanitised (no control
/// characters, at most 100 characters; it is logged and written to the usage file).
pub fn check_usage(u: &Usage) {
    if let Some(m) = &u.model {
        assert!(
            m.chars().count() <= 100,
            "model longer than 100 chars: {m:?}"
        );
        assert!(
            !m.chars().any(char::is_control),
            "model has control chars: {m:?}"
        );
    }
}

/// Splits `data` into chunks whose lengths come from `seed` (0: one byte at a time; others: a
/// xorshift sequence of lengths 1..=64), so that every boundary position gets tried.
pub fn chunks(data: &[u8], seed: u8) -> Vec<&[u8]> {
    if seed == 0 {
        return data.chunks(1).collect();
    }
    let mut state = u32::from(seed).wrapping_mul(0x9E37_79B9) | 1;
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let len = (state % 64) as usize + 1;
        let (head, tail) = rest.split_at(len.min(rest.len()));
        out.push(head);
        rest = tail;
    }
    out
}
