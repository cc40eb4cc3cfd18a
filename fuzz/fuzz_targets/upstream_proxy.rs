//! The forward-proxy settings (`upstream_proxy::{ProxyTarget::parse, no_proxy_matches}`): no
//! panic on any text, and a proxy password never shows in an error or in the parsed target.
//!
//! Input: up to three lines A, P, B. `ProxyTarget::parse` runs on the whole text, then on
//! `A:<marker>P<marker>@B` (a URL whose userinfo password is framed by two markers, which must
//! appear in no output); `no_proxy_matches` runs with A as NO_PROXY and B as the host.
#![no_main]

use libfuzzer_sys::fuzz_target;
use llm_keyproxy::config::egress::{no_proxy_matches, redact_url, ProxyTarget};

const HEAD: &str = "PWhead9q";
const TAIL: &str = "PWtail7z";

fn leaks(s: &str) -> bool {
    s.contains(HEAD) || s.contains(TAIL)
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(t) = ProxyTarget::parse(&text) {
        assert!(t.port != 0 && !t.host.is_empty(), "{t:?}");
        let shown = t.to_string();
        assert!(shown.starts_with("http://"), "{shown}");
        assert_eq!(t.authorization.is_some(), shown.contains("***@"), "{shown}");
    }

    let mut lines = text.splitn(3, '\n');
    let (a, p, b) = (
        lines.next().unwrap_or(""),
        lines.next().unwrap_or(""),
        lines.next().unwrap_or(""),
    );
    if !(leaks(a) || leaks(p) || leaks(b)) {
        let url = format!("{a}:{HEAD}{p}{TAIL}@{b}");
        match ProxyTarget::parse(&url) {
            Err(e) => assert!(!leaks(&e), "the password is in the error for {url:?}: {e}"),
            Ok(t) => {
                for shown in [t.to_string(), format!("{t:?}"), t.host.clone(), t.address()] {
                    assert!(!leaks(&shown), "the password shows for {url:?}: {shown}");
                }
                assert!(t.authorization.as_ref().is_some_and(|v| v.is_sensitive()));
            }
        }
        let shown = redact_url(&url);
        assert!(!leaks(&shown), "redact_url({url:?}) = {shown:?}");
    }

    // NO_PROXY: no panic; `*` matches everything; a plain name matches itself and subdomains.
    let matched = no_proxy_matches(a, b);
    assert!(no_proxy_matches("*", b));
    if a.split(',').any(|e| e.trim() == "*") {
        assert!(matched, "`*` in {a:?} did not match {b:?}");
    }
    let plain = |s: &str| {
        !s.is_empty()
            && s.split('.')
                .all(|l| !l.is_empty() && l.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-'))
    };
    if plain(b) && b.parse::<std::net::IpAddr>().is_err() {
        assert!(no_proxy_matches(b, b), "{b:?} does not match itself");
        assert!(no_proxy_matches(&format!(".{b}"), &format!("x.{b}")));
        assert!(
            no_proxy_matches(b, &b.to_ascii_uppercase()),
            "case matters for {b:?}"
        );
        assert!(!no_proxy_matches(b, &format!("x{b}")), "{b:?} matched x{b}");
    }
});
