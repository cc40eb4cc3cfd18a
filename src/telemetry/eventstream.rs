//! Token usage read from AWS event-stream responses (Bedrock `InvokeModelWithResponseStream`
//! and `ConverseStream`, `application/vnd.amazon.eventstream`) as they pass, message by
//! message, without holding back a byte: the framing is binary (length-prefixed messages with
//! CRC32s), each payload a JSON event.
//!
//! Invoke streams carry the model's own events base64-encoded in `{"bytes": ..}` (Anthropic's
//! `message_start` / `message_delta` usage, and Bedrock's `amazon-bedrock-invocationMetrics`
//! in the last one); Converse streams end with a `metadata` event holding `usage`.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_json::Value;

use crate::telemetry::usage::Usage;

/// Content type of AWS event streams.
pub const CONTENT_TYPE: &str = "application/vnd.amazon.eventstream";
/// Largest message parsed; larger ones are skipped (and the usage may then be incomplete).
const MAX_MESSAGE: usize = 1024 * 1024;
/// Prelude (total length, headers length, prelude CRC) and the message CRC.
const PRELUDE: usize = 12;
const OVERHEAD: usize = PRELUDE + 4;

/// Splits a byte stream into event-stream messages and reads usage from their payloads.
#[derive(Debug, Default)]
pub struct EventStreamScanner {
    buf: Vec<u8>,
    /// Bytes still to skip of a message larger than `MAX_MESSAGE`.
    skip: usize,
    /// The framing could not be followed (bad length or CRC): nothing more is read.
    lost: bool,
}

impl EventStreamScanner {
    pub fn feed(&mut self, mut bytes: &[u8], usage: &mut Usage) {
        if self.lost {
            return;
        }
        if self.skip > 0 {
            let n = self.skip.min(bytes.len());
            self.skip -= n;
            bytes = &bytes[n..];
        }
        self.buf.extend_from_slice(bytes);
        let mut at = 0;
        while self.buf.len() - at >= PRELUDE {
            let m = &self.buf[at..];
            let total = u32::from_be_bytes([m[0], m[1], m[2], m[3]]) as usize;
            let headers = u32::from_be_bytes([m[4], m[5], m[6], m[7]]) as usize;
            let crc = u32::from_be_bytes([m[8], m[9], m[10], m[11]]);
            if total < OVERHEAD || headers > total - OVERHEAD || crc32fast::hash(&m[..8]) != crc {
                self.lost = true;
                self.buf = Vec::new();
                return;
            }
            if total > MAX_MESSAGE {
                let have = m.len().min(total);
                self.skip = total - have;
                at += have;
                continue;
            }
            if m.len() < total {
                break;
            }
            apply_event(&m[PRELUDE + headers..total - 4], usage);
            at += total;
        }
        self.buf.drain(..at);
    }

    /// True when the framing was lost (usage is then unread from there on).
    pub fn lost(&self) -> bool {
        self.lost
    }
}

/// Reads usage and model from one message payload.
fn apply_event(payload: &[u8], usage: &mut Usage) {
    let Ok(v) = serde_json::from_slice::<Value>(payload) else {
        return;
    };
    match v.get("bytes").and_then(Value::as_str) {
        Some(b64) => {
            let inner = STANDARD
                .decode(b64)
                .ok()
                .and_then(|b| serde_json::from_slice::<Value>(&b).ok());
            if let Some(inner) = inner {
                usage.apply(&inner);
                apply_invocation_metrics(&inner, usage);
            }
        }
        None => usage.apply(&v),
    }
}

/// Bedrock's own count, in the last chunk of an invoke stream.
pub fn apply_invocation_metrics(v: &Value, usage: &mut Usage) {
    let Some(m) = v.get("amazon-bedrock-invocationMetrics") else {
        return;
    };
    let num = |k: &str| m.get(k).and_then(Value::as_u64);
    if let Some(n) = num("inputTokenCount") {
        usage.input = Some(n);
    }
    if let Some(n) = num("outputTokenCount") {
        usage.output = Some(n);
    }
    if let Some(n) = num("cacheReadInputTokenCount") {
        usage.cache_read = Some(n);
    }
    if let Some(n) = num("cacheWriteInputTokenCount") {
        usage.cache_write = Some(n);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// One event-stream message with a `:event-type` header (the framing AWS documents).
    pub(crate) fn message(event_type: &str, payload: &[u8]) -> Vec<u8> {
        let mut headers = Vec::new();
        for (name, value) in [
            (":event-type", event_type),
            (":content-type", "application/json"),
            (":message-type", "event"),
        ] {
            headers.push(name.len() as u8);
            headers.extend_from_slice(name.as_bytes());
            headers.push(7);
            headers.extend_from_slice(&(value.len() as u16).to_be_bytes());
            headers.extend_from_slice(value.as_bytes());
        }
        let total = OVERHEAD + headers.len() + payload.len();
        let mut m = Vec::new();
        m.extend_from_slice(&(total as u32).to_be_bytes());
        m.extend_from_slice(&(headers.len() as u32).to_be_bytes());
        let crc = crc32fast::hash(&m);
        m.extend_from_slice(&crc.to_be_bytes());
        m.extend_from_slice(&headers);
        m.extend_from_slice(payload);
        let crc = crc32fast::hash(&m);
        m.extend_from_slice(&crc.to_be_bytes());
        m
    }

    fn chunk(inner: &str) -> Vec<u8> {
        let payload = format!(r#"{{"bytes":"{}","p":"abc"}}"#, STANDARD.encode(inner));
        message("chunk", payload.as_bytes())
    }

    fn invoke_stream() -> Vec<u8> {
        [
            chunk(r#"{"type":"message_start","message":{"model":"claude-x","usage":{"input_tokens":11,"output_tokens":1}}}"#),
            chunk(r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi"}}"#),
            chunk(r#"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":7}}"#),
            chunk(r#"{"type":"message_stop","amazon-bedrock-invocationMetrics":{"inputTokenCount":11,"outputTokenCount":7,"invocationLatency":5,"firstByteLatency":2}}"#),
        ]
        .concat()
    }

    #[test]
    fn invoke_stream_in_any_split() {
        let all = invoke_stream();
        for step in [1, 3, 7, 64, all.len()] {
            let (mut s, mut u) = (EventStreamScanner::default(), Usage::default());
            for piece in all.chunks(step) {
                s.feed(piece, &mut u);
            }
            assert!(!s.lost());
            assert_eq!((u.input, u.output), (Some(11), Some(7)), "step {step}");
            assert_eq!(u.model.as_deref(), Some("claude-x"));
        }
    }

    #[test]
    fn converse_stream_metadata() {
        let all = [
            message("messageStart", br#"{"role":"assistant"}"#),
            message("contentBlockDelta", br#"{"contentBlockIndex":0,"delta":{"text":"Hi"}}"#),
            message("metadata", br#"{"usage":{"inputTokens":5,"outputTokens":9,"totalTokens":14},"metrics":{"latencyMs":3}}"#),
        ]
        .concat();
        let (mut s, mut u) = (EventStreamScanner::default(), Usage::default());
        s.feed(&all, &mut u);
        assert_eq!((u.input, u.output), (Some(5), Some(9)));
    }

    #[test]
    fn broken_framing_stops_reading() {
        let mut bad = invoke_stream();
        bad[9] ^= 0xff; // the first prelude CRC
        let (mut s, mut u) = (EventStreamScanner::default(), Usage::default());
        s.feed(&bad, &mut u);
        assert!(s.lost());
        assert_eq!(u, Usage::default());
    }
}
