//! Request-target validation (`proxy::check_target`) on fuzzed method, version and URI, then
//! the upstream path and URI built from an accepted target, for every provider of the fixed plan.
//!
//! Input: byte 0 picks the method, byte 1 the HTTP version, the rest is the request target.
#![no_main]

use http::{Method, Request, Uri, Version};
use libfuzzer_sys::fuzz_target;
use llm_keyproxy::proxy::check_target;

const METHODS: [Method; 9] = [
    Method::GET,
    Method::POST,
    Method::PUT,
    Method::DELETE,
    Method::PATCH,
    Method::HEAD,
    Method::OPTIONS,
    Method::CONNECT,
    Method::TRACE,
];
const VERSIONS: [Version; 5] = [
    Version::HTTP_09,
    Version::HTTP_10,
    Version::HTTP_11,
    Version::HTTP_2,
    Version::HTTP_3,
];

fuzz_target!(|data: &[u8]| {
    let [m, v, target @ ..] = data else {
        return;
    };
    let method = METHODS
        .get(usize::from(*m) % (METHODS.len() + 1))
        .cloned()
        .unwrap_or_else(|| Method::from_bytes(b"FUZZ").expect("a valid token"));
    let version = VERSIONS[usize::from(*v) % VERSIONS.len()];
    let Ok(uri) = Uri::try_from(target) else {
        return;
    };
    let Ok(req) = Request::builder()
        .method(method.clone())
        .version(version)
        .uri(uri.clone())
        .body(())
    else {
        return;
    };
    match check_target(&req) {
        Ok(pq) => {
            assert_ne!(method, Method::CONNECT, "CONNECT accepted: {uri}");
            assert!(
                pq.path().starts_with('/') && !pq.path().starts_with("//"),
                "accepted path {:?} does not start with a single `/` ({uri})",
                pq.path()
            );
            if version < Version::HTTP_2 {
                assert!(
                    uri.scheme().is_none() && uri.authority().is_none(),
                    "absolute-form target accepted over {version:?}: {uri}"
                );
            }
            if let Some(orig) = uri.path_and_query() {
                assert_eq!(&pq, orig, "the accepted target is not the client's");
            }
            for p in &fuzz_support::plan().providers {
                fuzz_support::check_upstream_path(p, &fuzz_support::unlisted(pq.clone()));
            }
        }
        Err(e) => assert_eq!(e.status(), http::StatusCode::BAD_REQUEST, "{e:?}"),
    }
});
