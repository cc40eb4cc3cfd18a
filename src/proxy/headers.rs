//! Pure header rules: what is stripped from requests and responses, and what is injected.
//!
//! No I/O here: `proxy.rs` calls these on the way through, and fuzz targets can call them alone.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::config::plan::{Credential, ProviderPlan};
use crate::config::presets::ANTHROPIC_VERSION;
use crate::policy::access::Target;

pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static ANTHROPIC_VERSION_HEADER: HeaderName = HeaderName::from_static("anthropic-version");
static X_INITIATOR: HeaderName = HeaderName::from_static("x-initiator");

pub use crate::config::{is_hop_by_hop, set_by_proxy, HOP_BY_HOP};

/// Request headers never forwarded upstream: credentials, forwarding and hop-by-hop ones.
fn not_for_upstream(name: &str) -> bool {
    matches!(
        name,
        "host"
            | "authorization"
            | "proxy-authorization"
            | "x-api-key"
            | "x-goog-api-key"
            | "api-key"
            | "forwarded"
            | "via"
            | "connection"
            | "keep-alive"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    ) || name.starts_with("x-forwarded-")
        || name.starts_with("proxy-")
}

/// Response headers never passed to the client: hop-by-hop ones.
fn not_for_client(name: &str) -> bool {
    HOP_BY_HOP.contains(&name) || name.starts_with("proxy-")
}

/// Removes every header `doomed` picks, and every header a `Connection` header names. One pass
/// over the names finds them (most requests carry only `host` and a placeholder key), so the
/// names that are absent cost no hash lookup.
fn strip(headers: &mut HeaderMap, doomed: fn(&str) -> bool) {
    // Headers named by Connection are collected first; the common case (no Connection) allocates nothing.
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().to_ascii_lowercase().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    let mut found: [Option<HeaderName>; 8] = Default::default();
    let mut more = Vec::new();
    for (n, name) in headers.keys().filter(|k| doomed(k.as_str())).enumerate() {
        match found.get_mut(n) {
            Some(slot) => *slot = Some(name.clone()),
            None => more.push(name.clone()),
        }
    }
    for name in found.into_iter().flatten().chain(more) {
        headers.remove(name);
    }
}

/// Turns the client's headers into the upstream's (docs/design.md §5.3): strip the client's
/// credentials, forwarding and hop-by-hop headers, then inject the key exactly once.
pub fn to_upstream(
    headers: &mut HeaderMap,
    provider: &ProviderPlan,
    credential: &Credential,
    request_id: &HeaderValue,
) {
    strip(headers, not_for_upstream);

    // Host is not set here: the client writes `Host` (HTTP/1.1) or `:authority` (HTTP/2) from
    // the request URI, which is always the upstream's origin.
    if let Credential::Configured { name, value } = credential {
        headers.insert(name.clone(), value.clone());
    }
    // Unique per request: never worth a place in the upstream's HPACK table (indexing it
    // would evict the entries that do repeat).
    let mut id = request_id.clone();
    id.set_sensitive(true);
    headers.insert(X_REQUEST_ID.clone(), id);
    let extras = provider.extras;
    if extras.anthropic_version && !headers.contains_key(&ANTHROPIC_VERSION_HEADER) {
        headers.insert(
            ANTHROPIC_VERSION_HEADER.clone(),
            HeaderValue::from_static(ANTHROPIC_VERSION),
        );
    }
    if extras.copilot_initiator && !headers.contains_key(&X_INITIATOR) {
        headers.insert(X_INITIATOR.clone(), HeaderValue::from_static("agent"));
    }
}

/// With token usage on: `Accept-Encoding` keeps only the codings whose usage can be read
/// (`usage::DECODED_ENCODINGS`, q-values kept), so `zstd` and unknown codings never come
/// back uncounted; nothing left means `identity`. Untouched when nothing had to go. The Node
/// sidecar did the same (its `sanitizeAcceptEncoding`).
pub fn accept_decodable_only(headers: &mut HeaderMap) {
    use crate::telemetry::usage::DECODED_ENCODINGS;
    let decodable = |item: &str| {
        let coding = item.split(';').next().unwrap_or("").trim();
        DECODED_ENCODINGS
            .iter()
            .any(|d| d.eq_ignore_ascii_case(coding))
    };
    let items: Vec<&str> = headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|i| !i.is_empty())
        .collect();
    if items.iter().all(|i| decodable(i)) {
        return;
    }
    let kept: Vec<&str> = items.into_iter().filter(|i| decodable(i)).collect();
    let value = if kept.is_empty() {
        "identity".to_owned()
    } else {
        kept.join(", ")
    };
    // Built from pieces of valid header values, so still valid.
    if let Ok(v) = HeaderValue::from_str(&value) {
        headers.insert(header::ACCEPT_ENCODING, v);
    }
}

static X_UPSTREAM_REQUEST_ID: HeaderName = HeaderName::from_static("x-upstream-request-id");

/// Cleans the upstream's response headers for the client: hop-by-hop removed, request id set.
/// An upstream `x-request-id` that differs from ours (OpenAI sends its own) is kept as
/// `x-upstream-request-id`, since provider support asks for it.
pub fn to_client(headers: &mut HeaderMap, request_id: &HeaderValue) {
    strip(headers, not_for_client);
    if let Some(theirs) = headers.insert(X_REQUEST_ID.clone(), request_id.clone()) {
        if theirs != *request_id {
            headers.insert(X_UPSTREAM_REQUEST_ID.clone(), theirs);
        }
    }
}

/// The client's `X-Request-ID` when it matches `^[A-Za-z0-9_.-]{1,128}$`, else a new UUIDv4.
pub fn request_id(headers: &HeaderMap) -> HeaderValue {
    if let Some(v) = headers.get(&X_REQUEST_ID) {
        let b = v.as_bytes();
        if !b.is_empty()
            && b.len() <= 128
            && b.iter()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
        {
            return v.clone();
        }
    }
    let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
    let text = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut buf);
    // A hyphenated UUID is always a valid header value.
    HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static("invalid-uuid"))
}

/// The upstream path and query for an admitted target (docs/design.md §2: base path rule;
/// Gemini's key parameters removed). The path is the target's, byte for byte, after the base
/// path (docs/design.md §2b: the path checked is the path forwarded).
pub fn upstream_path(provider: &ProviderPlan, target: &Target) -> String {
    let (path, query) = (target.path(), target.query());
    let base = provider.base_path.as_str();
    let has_base = base.is_empty()
        || path == base
        || path.strip_prefix(base).is_some_and(|r| r.starts_with('/'));
    let needs_base = !has_base;
    let mut out = String::with_capacity(base.len() + path.len() + query.map_or(0, |q| q.len() + 1));
    if needs_base {
        out.push_str(base);
    }
    out.push_str(path);
    if let Some(q) = query {
        if provider.extras.strip_key_params {
            let kept: Vec<&str> = q
                .split('&')
                .filter(|p| !p.is_empty())
                .filter(|p| {
                    // Compare the decoded name, so `k%65y=` is caught too.
                    let name = percent_decoded(p.split('=').next().unwrap_or(""));
                    !matches!(name.as_str(), "key" | "apiKey" | "api_key")
                })
                .collect();
            if !kept.is_empty() {
                out.push('?');
                out.push_str(&kept.join("&"));
            }
        } else if !q.is_empty() {
            out.push('?');
            out.push_str(q);
        }
    }
    out
}

/// A query parameter name with `%XX` escapes decoded (invalid escapes kept as they are).
fn percent_decoded(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (b[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::plan::Plan;

    fn plan(yaml: &str) -> Plan {
        let lookup = |k: &str| (k == "KEY").then(|| "sk-test".to_string());
        Plan::from_yaml(yaml, &lookup).unwrap()
    }

    #[test]
    fn strips_and_injects_once() {
        let p = plan("providers:\n  openai: {api_key: env:KEY}\n");
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("authorization", "Bearer client"),
            ("authorization", "Bearer client2"),
            ("x-api-key", "k"),
            ("x-goog-api-key", "k"),
            ("api-key", "k"),
            ("proxy-authorization", "Basic x"),
            ("proxy-connection", "keep-alive"),
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-host", "evil"),
            ("forwarded", "for=1"),
            ("via", "1.1 x"),
            ("connection", "keep-alive, x-custom-hop"),
            ("x-custom-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("trailer", "x"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "h2c"),
            ("host", "evil.example"),
            ("content-type", "application/json"),
            ("x-custom", "kept"),
        ] {
            h.append(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        let id = HeaderValue::from_static("req-1");
        to_upstream(&mut h, &p.providers[0], &p.providers[0].credential, &id);
        let mut names: Vec<_> = h.keys().map(|k| k.as_str().to_owned()).collect();
        names.sort();
        assert_eq!(
            names,
            ["authorization", "content-type", "x-custom", "x-request-id"]
        );
        assert_eq!(h.get_all("authorization").iter().count(), 1);
        assert_eq!(h["authorization"], "Bearer sk-test");
        assert!(h["authorization"].is_sensitive());
    }

    #[test]
    fn anthropic_version_only_when_absent() {
        let p = plan("providers:\n  anthropic: {api_key: env:KEY}\n");
        let id = HeaderValue::from_static("r");
        let mut h = HeaderMap::new();
        to_upstream(&mut h, &p.providers[0], &p.providers[0].credential, &id);
        assert_eq!(h["anthropic-version"], ANTHROPIC_VERSION);
        assert_eq!(h["x-api-key"], "sk-test");
        let mut h = HeaderMap::new();
        h.insert("anthropic-version", HeaderValue::from_static("2024-01-01"));
        to_upstream(&mut h, &p.providers[0], &p.providers[0].credential, &id);
        assert_eq!(
            h.get_all("anthropic-version").iter().collect::<Vec<_>>(),
            ["2024-01-01"]
        );
    }

    #[test]
    fn accept_encoding_keeps_decodable_codings() {
        let run = |values: &[&str]| {
            let mut h = HeaderMap::new();
            for v in values {
                h.append(header::ACCEPT_ENCODING, HeaderValue::from_str(v).unwrap());
            }
            accept_decodable_only(&mut h);
            let all: Vec<_> = h.get_all(header::ACCEPT_ENCODING).iter().cloned().collect();
            all.iter()
                .map(|v| v.to_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        };
        assert_eq!(run(&["gzip, zstd, br"]), ["gzip, br"]);
        assert_eq!(run(&["zstd;q=1.0, gzip;q=0.5"]), ["gzip;q=0.5"]);
        assert_eq!(run(&["ZSTD"]), ["identity"]);
        assert_eq!(run(&["gzip", "zstd, *"]), ["gzip"]);
        // Nothing to drop: left exactly as sent (one value or several).
        assert_eq!(run(&["gzip,deflate , br"]), ["gzip,deflate , br"]);
        assert_eq!(run(&["gzip", "br"]), ["gzip", "br"]);
        assert_eq!(run(&["identity"]), ["identity"]);
        assert!(run(&[]).is_empty());
    }

    #[test]
    fn request_ids() {
        let mut h = HeaderMap::new();
        h.insert("x-request-id", HeaderValue::from_static("abc-DEF_1.2"));
        assert_eq!(request_id(&h), "abc-DEF_1.2");
        h.insert("x-request-id", HeaderValue::from_static("bad id"));
        let id = request_id(&h);
        assert_eq!(id.len(), 36);
        assert_eq!(id.to_str().unwrap().as_bytes()[14], b'4');
        h.insert(
            "x-request-id",
            HeaderValue::from_str(&"a".repeat(129)).unwrap(),
        );
        assert_eq!(request_id(&h).len(), 36);
    }

    /// `upstream_path` for a target admitted without an allow-list.
    fn forwarded(p: &ProviderPlan, path: &str, query: Option<&str>) -> String {
        let pq = match query {
            Some(q) => format!("{path}?{q}"),
            None => path.to_owned(),
        };
        let pq = http::uri::PathAndQuery::try_from(pq).unwrap();
        upstream_path(
            p,
            &Target::admit(None, &http::Method::GET, pq, "p").unwrap(),
        )
    }

    #[test]
    fn base_path_rule() {
        let p = plan("providers:\n  openai: {api_key: env:KEY}\n");
        let o = &p.providers[0];
        assert_eq!(forwarded(o, "/responses", None), "/v1/responses");
        assert_eq!(forwarded(o, "/v1/responses", None), "/v1/responses");
        assert_eq!(forwarded(o, "/v1", None), "/v1");
        assert_eq!(forwarded(o, "/v10/x", None), "/v1/v10/x");
        assert_eq!(forwarded(o, "/v1/models", Some("a=1")), "/v1/models?a=1");
        assert_eq!(forwarded(o, "/v1/models", Some("")), "/v1/models");
    }

    #[test]
    fn gemini_key_params_removed() {
        let p = plan("providers:\n  gemini: {api_key: env:KEY}\n");
        let g = &p.providers[0];
        assert_eq!(
            forwarded(g, "/v1beta/m", Some("key=x&alt=sse")),
            "/v1beta/m?alt=sse"
        );
        assert_eq!(
            forwarded(g, "/v1beta/m", Some("apiKey=x&api_key=y")),
            "/v1beta/m"
        );
        assert_eq!(
            forwarded(g, "/v1beta/m", Some("keys=1")),
            "/v1beta/m?keys=1"
        );
        assert_eq!(
            forwarded(g, "/v1beta/m", Some("k%65y=x&a=1")),
            "/v1beta/m?a=1"
        );
    }
}
