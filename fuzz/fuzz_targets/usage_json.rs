//! `Usage::apply` on arbitrary JSON, the fast `Usage::apply_json` against it (they must agree
//! whenever the document parses as a `Value`), and the JSON path of `UsageTap` /
//! `decode_and_read`.
//!
//! Input: the response body (any bytes; most are not JSON, which must simply read as no usage).
#![no_main]

use bytes::Bytes;
use http::header::{HeaderMap, HeaderValue, CONTENT_TYPE};
use libfuzzer_sys::fuzz_target;
use llm_keyproxy::telemetry::usage::{decode_and_read, Finished, Format, Usage, UsageTap};
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let mut fast = Usage::default();
    fast.apply_json(data);
    fuzz_support::check_usage(&fast);
    match serde_json::from_slice::<Value>(data) {
        Ok(v) => {
            let mut direct = Usage::default();
            direct.apply(&v);
            // Reading the same document twice changes nothing (later values overwrite earlier).
            let mut again = direct.clone();
            again.apply(&v);
            assert_eq!(again, direct, "apply is not idempotent");
            assert_eq!(fast, direct, "apply_json disagrees with apply");
        }
        // Nesting deeper than serde_json's recursion limit fails as a `Value` but can still
        // be skipped by the fast reader; any other invalid document reads as nothing.
        Err(e) if !e.to_string().contains("recursion limit") => {
            assert_eq!(fast, Usage::default(), "apply_json read an invalid document")
        }
        Err(_) => {}
    }

    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    let mut tap = UsageTap::for_response(&headers).expect("JSON gets a tap");
    let seed = data.first().copied().unwrap_or(0) | 1;
    let frames: Vec<Bytes> = fuzz_support::chunks(data, seed)
        .into_iter()
        .map(Bytes::copy_from_slice)
        .collect();
    for f in &frames {
        tap.observe(f);
    }
    match tap.finish() {
        Finished::Ready(u) => assert_eq!(u, fast, "UsageTap"),
        _ => panic!("an uncompressed JSON tap must finish Ready"),
    }
    assert_eq!(decode_and_read(Format::Json, None, &frames), fast);
});
