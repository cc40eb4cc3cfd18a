//! Config bytes -> plan (`plan::Plan::from_yaml`): no panic on any text; every error and every
//! printed plan free of the key and of the proxy password; every accepted plan usable (each
//! provider's header rules inject the key exactly once, its upstream is an https origin).
//!
//! Input: byte 0 picks the environment (bits 0-1: no proxy variables, HTTPS_PROXY with a
//! password, the same plus NO_PROXY, HTTPS_PROXY without a scheme), the rest is the YAML text.
//! Every `env:` variable other than the proxy ones holds `fuzz_support::KEY`.
//!
//! Inputs naming special files are skipped: `file:` keys and `extra_ca_file` are read, and
//! `/dev/zero` or a FIFO would hang the run rather than find a bug.
#![no_main]

use http::header::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use llm_keyproxy::proxy::headers::{is_hop_by_hop, set_by_proxy, to_upstream};
use llm_keyproxy::config::plan::{Credential, Plan};

const PROXY_PASSWORD: &str = "pxPASS5e1b";
const KEY: &str = fuzz_support::KEY;

/// Where reading a file could block or never end (`/dev/zero`, FIFOs, `/proc/self/fd/0`), and
/// the YAML escape character (a double-quoted scalar can spell any path with `\x2f` ...).
/// YAML line folding puts a space or newline between pieces, so no other spelling reaches them.
const SKIP: [&str; 5] = ["/dev", "/proc", "/sys", "/run", "\\"];

fuzz_target!(|data: &[u8]| {
    let Some((&env, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    if SKIP.iter().any(|s| text.contains(s)) {
        return;
    }
    let env = env & 3;
    let lookup = move |k: &str| -> Option<String> {
        match (k, env) {
            ("HTTPS_PROXY", 1 | 2) => {
                Some(format!("http://fuzz:{PROXY_PASSWORD}@squid.internal:3128"))
            }
            ("HTTPS_PROXY", 3) => Some(format!("fuzz:{PROXY_PASSWORD}@squid.internal:3128")),
            ("NO_PROXY", 2) => Some("localhost,.example.com,10.0.0.0/8".into()),
            ("HTTPS_PROXY" | "https_proxy" | "HTTP_PROXY" | "http_proxy", _) => None,
            ("NO_PROXY" | "no_proxy", _) => None,
            _ => Some(KEY.to_owned()),
        }
    };
    // A secret the text itself holds may legitimately be echoed (e.g. in a YAML error).
    let secrets: Vec<&str> = [KEY, PROXY_PASSWORD]
        .into_iter()
        .filter(|s| !text.contains(s))
        .collect();
    let check = |what: &str, out: &str| {
        for s in &secrets {
            assert!(!out.contains(s), "a secret is in the {what}:\n{out}");
        }
    };

    match Plan::from_yaml(&text, &lookup) {
        Err(errors) => {
            assert!(!errors.is_empty(), "Err with no error");
            check("errors", &errors.to_string());
            check("errors (Debug)", &format!("{errors:?}"));
        }
        Ok(plan) => {
            check("plan (--check)", &plan.describe());
            check("plan (Debug)", &format!("{plan:?}"));
            assert!(!plan.providers.is_empty(), "a plan with no provider");
            let id = HeaderValue::from_static("fuzz-request-1");
            for p in &plan.providers {
                assert_eq!(p.origin.scheme_str(), Some("https"), "{}", p.name);
                assert_eq!(p.origin.host(), Some(p.host.as_str()), "{}", p.name);
                assert!(
                    p.base_path.is_empty()
                        || (p.base_path.starts_with('/') && !p.base_path.ends_with('/')),
                    "{}: base path {:?}",
                    p.name,
                    p.base_path
                );
                if let Credential::Configured { name, value } = &p.credential {
                    assert!(value.is_sensitive(), "{}: key not marked sensitive", p.name);
                    assert!(
                        !is_hop_by_hop(name) && !set_by_proxy(name),
                        "{}: key in `{name}`",
                        p.name
                    );
                    // The key is sent, once, whatever the client sends.
                    let mut h = HeaderMap::new();
                    to_upstream(&mut h, p, &p.credential, &id);
                    assert_eq!(
                        h.get_all(name).iter().collect::<Vec<_>>(),
                        [value],
                        "{}: the key in `{name}` is not sent exactly once",
                        p.name
                    );
                }
            }
        }
    }
});
