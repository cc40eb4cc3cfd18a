//! Token usage read from responses as they pass: OpenAI chat completions and Responses API,
//! Anthropic messages, Gemini `usageMetadata`; JSON bodies and SSE streams.
//!
//! The tap only looks at frames the body wrapper already holds (`Bytes` clones, no copy of
//! whole events); compressed bodies are kept by reference and decoded after the response
//! ended, on a blocking thread, never on the forwarding path.

use std::borrow::Cow;
use std::io::Read;

use bytes::Bytes;
use http::header::{HeaderMap, CONTENT_ENCODING, CONTENT_TYPE};
use memchr::memmem;
use serde::de::{IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

/// Largest body kept for a JSON or compressed usage read; larger ones count as unparsed.
pub const MAX_INSPECTED_BODY: usize = 4 * 1024 * 1024;
/// Longest SSE line parsed; longer lines are skipped.
const MAX_SSE_LINE: usize = 1024 * 1024;

/// Token counts and model read from one response.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub input: Option<u64>,
    pub output: Option<u64>,
    pub cache_read: Option<u64>,
    pub cache_write: Option<u64>,
    pub model: Option<String>,
}

impl Usage {
    /// Counts in `metrics::TOKEN_KINDS` order (missing = 0).
    pub fn counts(&self) -> [u64; 4] {
        [self.input, self.output, self.cache_read, self.cache_write].map(|c| c.unwrap_or(0))
    }

    pub fn has_tokens(&self) -> bool {
        self.input.is_some()
            || self.output.is_some()
            || self.cache_read.is_some()
            || self.cache_write.is_some()
    }

    /// Reads usage and model from one parsed JSON document or SSE event; later values
    /// overwrite earlier ones (Anthropic's `message_delta` carries the cumulative output
    /// count). The reference reading: the proxy uses `apply_json`, which must agree with it.
    pub fn apply(&mut self, v: &Value) {
        // Gemini's streamGenerateContent without `alt=sse` answers a JSON array of chunks.
        if let Value::Array(items) = v {
            for item in items {
                self.apply(item);
            }
            return;
        }
        if let Some(u) = v.get("usage") {
            self.apply_counts(u);
        }
        if let Some(u) = v.get("usageMetadata") {
            self.apply_gemini(u);
        }
        for nested in ["message", "response"] {
            if let Some(u) = v.get(nested).and_then(|m| m.get("usage")) {
                self.apply_counts(u);
            }
        }
        if self.model.is_none() {
            let model = v
                .get("model")
                .or_else(|| v.get("modelVersion"))
                .or_else(|| v.get("message").and_then(|m| m.get("model")))
                .or_else(|| v.get("response").and_then(|m| m.get("model")))
                .and_then(Value::as_str);
            if let Some(m) = model {
                self.model = Some(crate::telemetry::logging::sanitize(m, 100).into_owned());
            }
        }
    }

    /// Reads usage and model from one JSON document or SSE event given as bytes, the fast
    /// way: only the top-level keys that matter are read (`usage`, `usageMetadata`, `model`,
    /// `modelVersion`, and `usage` / `model` inside `message` and `response`); the parser skips
    /// everything else (choices, content, text deltas) without building it. Gives the same
    /// result as `apply` on the parsed `Value` (the `usage_json` fuzz target checks that).
    pub fn apply_json(&mut self, json: &[u8]) {
        // Skipped strings are not checked for UTF-8 by the parser: check the whole document
        // first, so invalid text fails here as it does for `Value`.
        if let Ok(json) = std::str::from_utf8(json) {
            self.apply_json_str(json);
        }
    }

    fn apply_json_str(&mut self, json: &str) {
        if json.trim_ascii_start().starts_with('[') {
            if let Ok(items) = serde_json::from_str::<Vec<&RawValue>>(json) {
                for item in items {
                    self.apply_json_str(item.get());
                }
            }
            return;
        }
        let Ok(doc) = serde_json::from_str::<Doc<'_>>(json) else {
            return;
        };
        let value =
            |raw: Option<&RawValue>| raw.and_then(|r| serde_json::from_str::<Value>(r.get()).ok());
        if let Some(u) = value(doc.usage) {
            self.apply_counts(&u);
        }
        if let Some(u) = value(doc.usage_metadata) {
            self.apply_gemini(&u);
        }
        let nested: Vec<Doc<'_>> = [doc.message, doc.response]
            .into_iter()
            .flatten()
            .filter_map(|r| serde_json::from_str::<Doc<'_>>(r.get()).ok())
            .collect();
        for n in &nested {
            if let Some(u) = value(n.usage) {
                self.apply_counts(&u);
            }
        }
        if self.model.is_none() {
            // The first key present decides, even when its value is not a string.
            let model = doc
                .model
                .or(doc.model_version)
                .or_else(|| nested.iter().find_map(|n| n.model))
                .and_then(|r| serde_json::from_str::<Cow<'_, str>>(r.get()).ok());
            if let Some(m) = model {
                self.model = Some(crate::telemetry::logging::sanitize(&m, 100).into_owned());
            }
        }
    }

    fn apply_counts(&mut self, u: &Value) {
        let num = |keys: &[&str]| keys.iter().find_map(|k| u.get(*k).and_then(Value::as_u64));
        // OpenAI, Anthropic, then Bedrock's Converse (`inputTokens`, camelCase).
        if let Some(n) = num(&["prompt_tokens", "input_tokens", "inputTokens"]) {
            self.input = Some(n);
        }
        if let Some(n) = num(&["completion_tokens", "output_tokens", "outputTokens"]) {
            self.output = Some(n);
        }
        let cached = u
            .get("cache_read_input_tokens")
            .or_else(|| {
                u.get("prompt_tokens_details")
                    .and_then(|d| d.get("cached_tokens"))
            })
            .or_else(|| {
                u.get("input_tokens_details")
                    .and_then(|d| d.get("cached_tokens"))
            })
            .or_else(|| u.get("cacheReadInputTokens"))
            .and_then(Value::as_u64);
        if let Some(n) = cached {
            self.cache_read = Some(n);
        }
        if let Some(n) = num(&["cache_creation_input_tokens", "cacheWriteInputTokens"]) {
            self.cache_write = Some(n);
        }
    }

    fn apply_gemini(&mut self, u: &Value) {
        let num = |k: &str| u.get(k).and_then(Value::as_u64);
        if let Some(n) = num("promptTokenCount") {
            self.input = Some(n);
        }
        if let Some(n) = num("candidatesTokenCount") {
            self.output = Some(n);
        }
        if let Some(n) = num("cachedContentTokenCount") {
            self.cache_read = Some(n);
        }
    }
}

/// The keys of one JSON object that can carry usage or the model, each left unparsed
/// (`RawValue`), so a value of an unexpected type loses only itself. A key given twice keeps
/// its last value, as `serde_json::Value` does.
#[derive(Default)]
struct Doc<'a> {
    usage: Option<&'a RawValue>,
    usage_metadata: Option<&'a RawValue>,
    model: Option<&'a RawValue>,
    model_version: Option<&'a RawValue>,
    message: Option<&'a RawValue>,
    response: Option<&'a RawValue>,
}

impl<'de> Deserialize<'de> for Doc<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Keys;
        impl<'de> Visitor<'de> for Keys {
            type Value = Doc<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Doc<'de>, A::Error> {
                let mut doc = Doc::default();
                while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                    let slot = match &*key {
                        "usage" => &mut doc.usage,
                        "usageMetadata" => &mut doc.usage_metadata,
                        "model" => &mut doc.model,
                        "modelVersion" => &mut doc.model_version,
                        "message" => &mut doc.message,
                        "response" => &mut doc.response,
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                            continue;
                        }
                    };
                    *slot = Some(map.next_value()?);
                }
                Ok(doc)
            }
        }
        d.deserialize_map(Keys)
    }
}

/// Body framing the tap understands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Json,
    Sse,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    Gzip,
    /// HTTP `deflate`: zlib-wrapped, or raw deflate as some servers send it.
    Deflate,
    Brotli,
}

/// The content codings whose usage can be read (`identity`: none). With token usage on, the
/// proxy asks the upstream for these only (docs/design.md §5.3), so no answer arrives in a
/// coding (such as `zstd`) that would leave its tokens uncounted.
pub const DECODED_ENCODINGS: &[&str] = &["gzip", "x-gzip", "deflate", "br", "identity"];

/// Reads SSE `data:` lines incrementally, parsing only lines that can carry usage or model.
#[derive(Debug, Default)]
pub struct SseScanner {
    line: Vec<u8>,
    skipping: bool,
}

impl SseScanner {
    pub fn feed(&mut self, mut bytes: &[u8], usage: &mut Usage) {
        while !bytes.is_empty() {
            match bytes.iter().position(|b| *b == b'\n') {
                Some(nl) => {
                    let (head, rest) = bytes.split_at(nl);
                    if !self.skipping {
                        if self.line.is_empty() {
                            parse_line(head, usage);
                        } else {
                            self.line.extend_from_slice(head);
                            let line = std::mem::take(&mut self.line);
                            parse_line(&line, usage);
                            self.line = line;
                            self.line.clear();
                        }
                    }
                    self.skipping = false;
                    self.line.clear();
                    bytes = &rest[1..];
                }
                None => {
                    if !self.skipping {
                        if self.line.len() + bytes.len() > MAX_SSE_LINE {
                            self.skipping = true;
                            self.line.clear();
                        } else {
                            self.line.extend_from_slice(bytes);
                        }
                    }
                    return;
                }
            }
        }
    }
}

fn parse_line(line: &[u8], usage: &mut Usage) {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let Some(data) = line.strip_prefix(b"data:") else {
        return;
    };
    // Most events carry neither usage nor (once it is known) the model: a byte search decides
    // before any JSON is read ("sage" matches `usage` and `usageMetadata`).
    let wanted = memmem::find(data, b"sage").is_some()
        || (usage.model.is_none() && memmem::find(data, b"model").is_some());
    if wanted {
        usage.apply_json(data);
    }
}
/// What the body wrapper feeds frames to.
#[derive(Debug)]
pub enum UsageTap {
    Sse {
        scanner: SseScanner,
        usage: Usage,
    },
    /// AWS event stream (Bedrock), read message by message.
    EventStream {
        scanner: Box<crate::telemetry::eventstream::EventStreamScanner>,
        usage: Usage,
    },
    Kept {
        format: Format,
        encoding: Option<Encoding>,
        chunks: Vec<Bytes>,
        size: usize,
    },
    Unparsed,
}

/// What is left to do when the body ended.
pub enum Finished {
    Ready(Usage),
    /// Decode (gzip/br) and parse, off the request path.
    Decode {
        format: Format,
        encoding: Option<Encoding>,
        chunks: Vec<Bytes>,
    },
    Unparsed,
}

impl UsageTap {
    /// The tap for a response, or `None` when it carries no usage (not JSON or SSE).
    pub fn for_response(headers: &HeaderMap) -> Option<UsageTap> {
        let ctype = headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let format = if ctype.starts_with(crate::telemetry::eventstream::CONTENT_TYPE) {
            return Some(UsageTap::EventStream {
                scanner: Default::default(),
                usage: Usage::default(),
            });
        } else if ctype.starts_with("text/event-stream") {
            Format::Sse
        } else if ctype.starts_with("application/json") {
            Format::Json
        } else {
            return None;
        };
        let encoding = match headers.get(CONTENT_ENCODING).map(|v| v.as_bytes()) {
            None | Some(b"identity") => None,
            Some(b"gzip" | b"x-gzip") => Some(Encoding::Gzip),
            Some(b"deflate") => Some(Encoding::Deflate),
            Some(b"br") => Some(Encoding::Brotli),
            Some(_) => return Some(UsageTap::Unparsed),
        };
        Some(match (format, encoding) {
            (Format::Sse, None) => UsageTap::Sse {
                scanner: SseScanner::default(),
                usage: Usage::default(),
            },
            _ => UsageTap::Kept {
                format,
                encoding,
                chunks: Vec::new(),
                size: 0,
            },
        })
    }

    /// Looks at one data frame as it passes.
    pub fn observe(&mut self, data: &Bytes) {
        match self {
            UsageTap::Sse { scanner, usage } => scanner.feed(data, usage),
            UsageTap::EventStream { scanner, usage } => scanner.feed(data, usage),
            UsageTap::Kept { chunks, size, .. } => {
                *size += data.len();
                if *size > MAX_INSPECTED_BODY {
                    *self = UsageTap::Unparsed;
                } else {
                    chunks.push(data.clone());
                }
            }
            UsageTap::Unparsed => {}
        }
    }

    pub fn finish(self) -> Finished {
        match self {
            UsageTap::Sse { usage, .. } => Finished::Ready(usage),
            UsageTap::EventStream { scanner, .. } if scanner.lost() => Finished::Unparsed,
            UsageTap::EventStream { usage, .. } => Finished::Ready(usage),
            UsageTap::Kept {
                format: Format::Json,
                encoding: None,
                chunks,
                ..
            } => {
                let mut usage = Usage::default();
                usage.apply_json(&chunks.concat());
                Finished::Ready(usage)
            }
            UsageTap::Kept {
                format,
                encoding,
                chunks,
                ..
            } => Finished::Decode {
                format,
                encoding,
                chunks,
            },
            UsageTap::Unparsed => Finished::Unparsed,
        }
    }
}

/// Decodes a kept body and reads its usage (blocking work: call from a blocking thread).
/// A body cut short decodes as far as it goes.
pub fn decode_and_read(format: Format, encoding: Option<Encoding>, chunks: &[Bytes]) -> Usage {
    let raw: Vec<u8> = chunks.concat();
    let mut plain = Vec::new();
    let limited = |r: &mut dyn Read, out: &mut Vec<u8>| {
        let _ = r.take(MAX_INSPECTED_BODY as u64 * 4).read_to_end(out);
    };
    match encoding {
        None => plain = raw,
        Some(Encoding::Gzip) => {
            limited(&mut flate2::read::MultiGzDecoder::new(&raw[..]), &mut plain)
        }
        Some(Encoding::Deflate) => {
            limited(&mut flate2::read::ZlibDecoder::new(&raw[..]), &mut plain);
            if plain.is_empty() {
                limited(&mut flate2::read::DeflateDecoder::new(&raw[..]), &mut plain);
            }
        }
        Some(Encoding::Brotli) => limited(
            &mut brotli_decompressor::Decompressor::new(&raw[..], 4096),
            &mut plain,
        ),
    }
    let mut usage = Usage::default();
    match format {
        Format::Json => usage.apply_json(&plain),
        Format::Sse => SseScanner::default().feed(&plain, &mut usage),
    }
    usage
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sse(text: &str, split: usize) -> Usage {
        let mut usage = Usage::default();
        let mut s = SseScanner::default();
        for chunk in text.as_bytes().chunks(split) {
            s.feed(chunk, &mut usage);
        }
        usage
    }

    #[test]
    fn openai_chat_stream_with_usage_chunk() {
        let text = "data: {\"model\":\"gpt-4o\",\"choices\":[]}\n\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":11,\"completion_tokens\":7,\"prompt_tokens_details\":{\"cached_tokens\":3}}}\n\ndata: [DONE]\n\n";
        for split in [1, 7, 1000] {
            let u = sse(text, split);
            assert_eq!(
                (u.input, u.output, u.cache_read),
                (Some(11), Some(7), Some(3)),
                "split {split}"
            );
            assert_eq!(u.model.as_deref(), Some("gpt-4o"));
        }
    }

    #[test]
    fn anthropic_stream_output_is_cumulative() {
        let text = "event: message_start\r\ndata: {\"type\":\"message_start\",\"message\":{\"model\":\"claude\",\"usage\":{\"input_tokens\":20,\"cache_read_input_tokens\":4,\"cache_creation_input_tokens\":2,\"output_tokens\":1}}}\r\n\r\nevent: message_delta\r\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":15}}\r\n\r\n";
        let u = sse(text, 5);
        assert_eq!(u.counts(), [20, 15, 4, 2]);
        assert_eq!(u.model.as_deref(), Some("claude"));
    }

    #[test]
    fn responses_api_and_gemini() {
        let text = "event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"model\":\"gpt-5\",\"usage\":{\"input_tokens\":9,\"output_tokens\":4,\"input_tokens_details\":{\"cached_tokens\":1}}}}\n\n";
        assert_eq!(sse(text, 3).counts(), [9, 4, 1, 0]);
        let mut u = Usage::default();
        u.apply(&serde_json::json!({"usageMetadata":{"promptTokenCount":5,"candidatesTokenCount":6,"cachedContentTokenCount":2},"modelVersion":"gemini-2"}));
        assert_eq!(u.counts(), [5, 6, 2, 0]);
        assert_eq!(u.model.as_deref(), Some("gemini-2"));
    }

    #[test]
    fn gemini_json_array_stream() {
        let mut u = Usage::default();
        u.apply(&serde_json::json!([
            {"usageMetadata": {"promptTokenCount": 5}},
            {"usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 9}}
        ]));
        assert_eq!(u.counts(), [5, 9, 0, 0]);
    }

    #[test]
    fn gzip_deflate_and_brotli_decode() {
        use std::io::Write;
        let body = br#"{"model":"m","usage":{"prompt_tokens":3,"completion_tokens":4}}"#;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(body).unwrap();
        let gz = gz.finish().unwrap();
        let u = decode_and_read(Format::Json, Some(Encoding::Gzip), &[Bytes::from(gz)]);
        assert_eq!(u.counts(), [3, 4, 0, 0]);
        // `deflate`: zlib-wrapped (RFC 9110) or raw, as some servers send it.
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(body).unwrap();
        let z = Bytes::from(z.finish().unwrap());
        let u = decode_and_read(Format::Json, Some(Encoding::Deflate), &[z]);
        assert_eq!(u.counts(), [3, 4, 0, 0]);
        let mut d = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        d.write_all(body).unwrap();
        let d = Bytes::from(d.finish().unwrap());
        let u = decode_and_read(Format::Json, Some(Encoding::Deflate), &[d]);
        assert_eq!(u.counts(), [3, 4, 0, 0]);
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, "application/json".parse().unwrap());
        headers.insert(CONTENT_ENCODING, "zstd".parse().unwrap());
        assert!(matches!(
            UsageTap::for_response(&headers),
            Some(UsageTap::Unparsed)
        ));
    }

    /// The fast byte reading agrees with the reference `Value` reading.
    #[test]
    fn apply_json_agrees_with_apply() {
        let docs: &[&str] = &[
            r#"{"model":"gpt-4o","choices":[{"delta":{"content":"hi \"usage\""}}],"usage":null}"#,
            r#"{"id":"x","model":"gpt-4o","usage":{"prompt_tokens":11,"completion_tokens":7,"prompt_tokens_details":{"cached_tokens":3}}}"#,
            r#"{"type":"message_start","message":{"model":"claude","usage":{"input_tokens":20,"cache_read_input_tokens":4,"cache_creation_input_tokens":2}}}"#,
            r#"{"type":"response.completed","response":{"model":"gpt-5","usage":{"input_tokens":9,"output_tokens":4}}}"#,
            r#"[{"usageMetadata":{"promptTokenCount":5}},{"usageMetadata":{"candidatesTokenCount":9},"modelVersion":"gemini-2"}]"#,
            r#"{"model":null,"modelVersion":"v2","usage":{"prompt_tokens":1}}"#,
            r#"{"model":7,"message":"text","response":{"model":"inner"}}"#,
            r#"{"message":{"usage":{"output_tokens":2}},"response":{"model":"r"}}"#,
            r#"{"usage":{"prompt_tokens":1},"usage":{"prompt_tokens":2}}"#,
            r#"{"usage":{"prompt_tokens":3},"model":"café"}"#,
            r#"{"usage":{"prompt_tokens":1}} trailing"#,
            r#"  {"usage":{"completion_tokens":18446744073709551615}}  "#,
            r#""usage""#,
            r#"[[{"usage":{"prompt_tokens":4}}]]"#,
            "",
        ];
        for doc in docs {
            let mut fast = Usage::default();
            fast.apply_json(doc.as_bytes());
            let mut reference = Usage::default();
            if let Ok(v) = serde_json::from_str::<Value>(doc) {
                reference.apply(&v);
            }
            assert_eq!(fast, reference, "{doc}");
        }
        let mut u = Usage::default();
        u.apply_json(docs[1].as_bytes());
        assert_eq!(
            (u.counts(), u.model.as_deref()),
            ([11, 7, 3, 0], Some("gpt-4o"))
        );
    }

    /// Events without usage are not parsed once the model is known; ones that mention usage are.
    #[test]
    fn sse_events_without_usage_are_not_parsed() {
        let mut usage = Usage::default();
        let mut s = SseScanner::default();
        // Not JSON at all: would be ignored anyway, but it must not stop the scan.
        s.feed(
            b"data: {\"model\":\"m\"}\n\ndata: {\"i\":1}\n\ndata: not json\n\n",
            &mut usage,
        );
        s.feed(b"data: {\"usage\":{\"prompt_tokens\":5}}\n\n", &mut usage);
        assert_eq!((usage.input, usage.model.as_deref()), (Some(5), Some("m")));
    }

    #[test]
    fn overlong_lines_are_skipped_not_buffered() {
        let mut usage = Usage::default();
        let mut s = SseScanner::default();
        let long = vec![b'x'; MAX_SSE_LINE + 10];
        s.feed(b"data: ", &mut usage);
        s.feed(&long, &mut usage);
        assert!(s.line.is_empty());
        s.feed(b"\ndata: {\"usage\":{\"prompt_tokens\":1}}\n", &mut usage);
        assert_eq!(usage.input, Some(1));
    }
}
