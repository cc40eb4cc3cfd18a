//! Streamed usage for OpenAI-style chat: a streamed request without `stream_options` gets
//! `"stream_options":{"include_usage":true}`, so the stream's last chunk reports its tokens
//! and budgets see them (docs/design.md §5.4), as the Node sidecar's `injectStreamOptions`.
//! The one case where the proxy changes a request body; every other body is forwarded byte
//! for byte.

use bytes::{BufMut, Bytes, BytesMut};
use http::{header, HeaderMap, Method};
use serde_json::{Map, Value};

use crate::proxy::Route;

const MEMBER: &[u8] = br#""stream_options":{"include_usage":true},"#;

/// Whether this request's body may need `include_usage`: token usage on, a preset that speaks
/// OpenAI's chat API (openai, copilot), `POST .../chat/completions` (or the legacy
/// `.../completions`), and a body that is not content-encoded.
pub fn applies(route: &Route, method: &Method, path: &str, headers: &HeaderMap) -> bool {
    route.token_usage
        && route.provider.extras.stream_usage
        && method == Method::POST
        && path.ends_with("/completions")
        && !headers.contains_key(header::CONTENT_ENCODING)
}

/// The body with `stream_options.include_usage` added, or `None` to forward it as it came:
/// not a JSON object, not `"stream": true`, `stream_options` already there (whatever it says,
/// as in Node), or a Responses-style body (`input` without `messages`).
pub fn with_include_usage(body: &Bytes) -> Option<Bytes> {
    let object: Map<String, Value> = serde_json::from_slice(body).ok()?;
    if object.get("stream") != Some(&Value::Bool(true)) || object.contains_key("stream_options") {
        return None;
    }
    if object.contains_key("input") && !object.get("messages").is_some_and(Value::is_array) {
        return None;
    }
    // A JSON object starts with `{` after optional whitespace; the member goes right after
    // it, so every other byte stays as the client sent it. `"stream"` is a member, so a
    // comma always follows.
    let open = body.iter().position(|b| *b == b'{')?;
    let mut out = BytesMut::with_capacity(body.len() + MEMBER.len());
    out.put_slice(&body[..=open]);
    out.put_slice(MEMBER);
    out.put_slice(&body[open + 1..]);
    Some(out.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add(s: &str) -> Option<String> {
        with_include_usage(&Bytes::copy_from_slice(s.as_bytes()))
            .map(|b| String::from_utf8(b.to_vec()).unwrap())
    }

    #[test]
    fn added_only_to_streamed_chat_without_stream_options() {
        assert_eq!(
            add(" {\"model\":\"m\", \"stream\": true}").as_deref(),
            Some(
                " {\"stream_options\":{\"include_usage\":true},\"model\":\"m\", \"stream\": true}"
            )
        );
        let v: Value = serde_json::from_str(
            &add(r#"{"stream":true,"messages":[{"role":"user","content":"{"}]}"#).unwrap(),
        )
        .unwrap();
        assert_eq!(v["stream_options"]["include_usage"], true);
        assert_eq!(v["messages"][0]["content"], "{");
        for untouched in [
            r#"{"model":"m"}"#,
            r#"{"stream":false}"#,
            r#"{"stream":"true"}"#,
            r#"{"stream":true,"stream_options":{"include_usage":false}}"#,
            r#"{"stream":true,"stream_options":null}"#,
            r#"{"stream":true,"input":"hi"}"#,
            r#"[{"stream":true}]"#,
            r#"{"stream":true"#,
            "",
        ] {
            assert_eq!(add(untouched), None, "{untouched}");
        }
        assert!(add(r#"{"stream":true,"input":"x","messages":[]}"#).is_some());
    }
}
