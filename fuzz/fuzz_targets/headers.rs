//! Header and path rules (`headers::{to_upstream, to_client, request_id, upstream_path}`) on
//! client-controlled headers, against the fixed plan of `fuzz_support::PLAN_YAML`.
//!
//! Input: byte 0 picks the provider; then a request target line (`/path?query`); then one
//! `name: value` header per line (invalid ones skipped). The same headers are also used as an
//! upstream response for `to_client`.
#![no_main]

use fuzz_support::{
    check_upstream_path, connection_named, credential, header_map, is_request_id, values,
};
use http::header::{self, HeaderName, HeaderValue};
use http::{Request, Uri};
use libfuzzer_sys::fuzz_target;
use llm_keyproxy::config::presets::ANTHROPIC_VERSION;
use llm_keyproxy::proxy::check_target;
use llm_keyproxy::proxy::headers::{request_id, to_client, to_upstream, X_REQUEST_ID};

/// Never forwarded in either direction (RFC 9110 section 7.6.1).
const HOP_BY_HOP: [&str; 6] = [
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];
/// Client credentials, stripped before the key is injected.
const CREDENTIALS: [&str; 5] = [
    "authorization",
    "proxy-authorization",
    "x-api-key",
    "x-goog-api-key",
    "api-key",
];
/// Say where the request came from; the upstream must not see the agent's.
const FORWARDING: [&str; 3] = ["host", "forwarded", "via"];

fn stripped_upstream(name: &HeaderName, named: &[HeaderName]) -> bool {
    let n = name.as_str();
    HOP_BY_HOP.contains(&n)
        || CREDENTIALS.contains(&n)
        || FORWARDING.contains(&n)
        || n.starts_with("proxy-")
        || n.starts_with("x-forwarded-")
        || named.contains(name)
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let provider = fuzz_support::provider(selector);
    let (target, head) = match rest.iter().position(|b| *b == b'\n') {
        Some(nl) => (&rest[..nl], &rest[nl + 1..]),
        None => (rest, &[][..]),
    };
    let original = header_map(head);
    let named = connection_named(&original);

    // request_id: the client's when it is well-formed, else a fresh UUID; always well-formed.
    let id = request_id(&original);
    assert!(is_request_id(id.as_bytes()), "request id {id:?}");
    match original.get(&X_REQUEST_ID) {
        Some(theirs) if is_request_id(theirs.as_bytes()) => assert_eq!(&id, theirs),
        _ => assert_eq!(id.len(), 36, "generated request id {id:?} is not a UUID"),
    }

    // to_upstream: the key exactly once, nothing the upstream must not see, the rest untouched.
    let (cred_name, cred_value) = credential(provider);
    let mut up = original.clone();
    to_upstream(&mut up, provider, &provider.credential, &id);
    assert_eq!(
        values(&up, cred_name),
        [cred_value.clone()],
        "{}: the credential header is not there exactly once with the configured value",
        provider.name
    );
    assert!(
        up[cred_name].is_sensitive(),
        "credential not marked sensitive"
    );
    assert_eq!(values(&up, &X_REQUEST_ID), [id.clone()]);
    let anthropic_version = HeaderName::from_static("anthropic-version");
    let x_initiator = HeaderName::from_static("x-initiator");
    let defaults: [(&HeaderName, bool, &'static str); 2] = [
        (
            &anthropic_version,
            provider.extras.anthropic_version,
            ANTHROPIC_VERSION,
        ),
        (&x_initiator, provider.extras.copilot_initiator, "agent"),
    ];
    for name in up.keys() {
        let added = defaults.iter().any(|(n, on, _)| *on && *n == name);
        if name == cred_name || name == X_REQUEST_ID || added {
            continue;
        }
        assert!(
            !stripped_upstream(name, &named),
            "{}: `{name}` reached the upstream: {up:?}",
            provider.name
        );
        assert!(
            original.contains_key(name),
            "{}: `{name}` appeared from nowhere",
            provider.name
        );
    }
    for name in original.keys() {
        if name == cred_name || name == X_REQUEST_ID || stripped_upstream(name, &named) {
            continue;
        }
        assert_eq!(
            values(&up, name),
            values(&original, name),
            "{}: the client's `{name}` was changed",
            provider.name
        );
    }
    for (name, on, value) in defaults {
        let kept = original.contains_key(name) && !stripped_upstream(name, &named);
        if on && !kept {
            assert_eq!(values(&up, name), [HeaderValue::from_static(value)]);
        }
    }

    // to_client (the same headers as an upstream response): hop-by-hop out, our id in, theirs
    // kept as x-upstream-request-id when it differs.
    let mut down = original.clone();
    to_client(&mut down, &id);
    assert_eq!(values(&down, &X_REQUEST_ID), [id.clone()]);
    let upstream_id_name = HeaderName::from_static("x-upstream-request-id");
    for name in down.keys() {
        assert!(
            !HOP_BY_HOP.contains(&name.as_str()),
            "hop-by-hop `{name}` reached the client"
        );
        if *name != X_REQUEST_ID && *name != upstream_id_name {
            assert!(
                !named.contains(name),
                "`{name}`, named by Connection, reached the client"
            );
            assert_eq!(values(&down, name), values(&original, name));
        }
    }
    let theirs = original
        .get(&X_REQUEST_ID)
        .filter(|_| !named.contains(&X_REQUEST_ID));
    if let Some(theirs) = theirs.filter(|t| **t != id) {
        assert_eq!(values(&down, &upstream_id_name), [theirs.clone()]);
    }
    assert!(!down.contains_key(header::CONNECTION));

    // upstream_path, for targets the proxy accepts.
    if let Ok(uri) = Uri::try_from(target) {
        if let Ok(req) = Request::builder().uri(uri).body(()) {
            if let Ok(pq) = check_target(&req) {
                check_upstream_path(provider, &fuzz_support::unlisted(pq));
            }
        }
    }
});
