//! Token usage read from a WebSocket's server-to-client bytes as they pass (the OpenAI
//! Responses API over WebSocket, Codex's default transport): RFC 6455 frames are followed
//! across reads of any size, text messages are put together from their fragments (control
//! frames may come between them), and each `response.completed` event gives its usage. The
//! bytes are only looked at: never held back, never changed (docs/design.md §5.7).

use std::borrow::Cow;

use memchr::memmem;
use serde::Deserialize;

use super::usage::Usage;

/// Largest text message put together for reading; longer ones pass unread (and are counted).
pub const MAX_WS_MESSAGE: usize = 1024 * 1024;
/// The event whose `response.usage` is read.
const COMPLETED: &str = "response.completed";
/// Buffers grown beyond this by one message are freed afterwards, not kept for the next.
const KEEP_CAPACITY: usize = 64 * 1024;

/// The frame being read.
struct Frame {
    /// Payload bytes still to come.
    left: u64,
    /// Payload bytes seen (the masking key's position).
    seen: u64,
    mask: Option<[u8; 4]>,
    /// Part of a data message (not a control frame).
    data: bool,
    fin: bool,
}

/// Follows the frames of one direction of a WebSocket connection.
#[derive(Default)]
pub struct WsUsageTap {
    /// A frame header being gathered (at most 2 + 8 + 4 bytes).
    head: Vec<u8>,
    frame: Option<Frame>,
    /// Between the first frame of a data message and its final fragment.
    in_message: bool,
    /// The message is being put together: text, uncompressed, within the cap so far.
    keep: bool,
    message: Vec<u8>,
    /// Text messages not read: over `MAX_WS_MESSAGE`, or compressed (RSV1).
    pub unread: u64,
}

impl WsUsageTap {
    pub fn new() -> WsUsageTap {
        WsUsageTap::default()
    }

    /// Looks at the next bytes of the stream; `on_usage` gets the usage of every
    /// `response.completed` event completed by them.
    pub fn observe(&mut self, mut bytes: &[u8], on_usage: &mut dyn FnMut(Usage)) {
        while !bytes.is_empty() {
            let Some(frame) = self.frame.as_mut() else {
                bytes = self.read_head(bytes);
                if self.frame.as_ref().is_some_and(|f| f.left == 0) {
                    self.end_frame(on_usage);
                }
                continue;
            };
            let n = usize::try_from(frame.left).map_or(bytes.len(), |l| l.min(bytes.len()));
            let (chunk, rest) = bytes.split_at(n);
            bytes = rest;
            if frame.data && self.keep {
                if self.message.len() + chunk.len() > MAX_WS_MESSAGE {
                    self.keep = false;
                    self.unread += 1;
                    self.message = Vec::new();
                } else {
                    let start = self.message.len();
                    self.message.extend_from_slice(chunk);
                    if let Some(mask) = frame.mask {
                        for (i, b) in self.message[start..].iter_mut().enumerate() {
                            *b ^= mask[((frame.seen + i as u64) % 4) as usize];
                        }
                    }
                }
            }
            frame.seen += n as u64;
            frame.left -= n as u64;
            if frame.left == 0 {
                self.end_frame(on_usage);
            }
        }
    }

    /// Gathers header bytes; once the header is whole, starts its frame. Returns the rest.
    fn read_head<'a>(&mut self, bytes: &'a [u8]) -> &'a [u8] {
        let mut bytes = bytes;
        loop {
            let need = match self.head.get(1) {
                None => 2,
                Some(b1) => {
                    let ext = match b1 & 0x7f {
                        126 => 2,
                        127 => 8,
                        _ => 0,
                    };
                    2 + ext + if b1 & 0x80 != 0 { 4 } else { 0 }
                }
            };
            if self.head.len() >= need {
                self.start_frame(need);
                return bytes;
            }
            let Some((&b, rest)) = bytes.split_first() else {
                return bytes;
            };
            self.head.push(b);
            bytes = rest;
        }
    }

    fn start_frame(&mut self, head_len: usize) {
        let h = &self.head;
        let (b0, b1) = (h[0], h[1]);
        let ext = &h[2..];
        let (left, rest) = match b1 & 0x7f {
            126 => (u64::from(u16::from_be_bytes([ext[0], ext[1]])), &ext[2..]),
            127 => {
                let mut n = [0u8; 8];
                n.copy_from_slice(&ext[..8]);
                (u64::from_be_bytes(n), &ext[8..])
            }
            n => (u64::from(n), ext),
        };
        let mask = (b1 & 0x80 != 0).then(|| [rest[0], rest[1], rest[2], rest[3]]);
        debug_assert_eq!(self.head.len(), head_len);
        let opcode = b0 & 0x0f;
        let data = opcode & 0x08 == 0;
        if data && opcode != 0 {
            // The first frame of a message (text 1, binary 2): compressed when RSV1 is set.
            let compressed = b0 & 0x40 != 0;
            self.in_message = true;
            self.keep = opcode == 1 && !compressed;
            if opcode == 1 && compressed {
                self.unread += 1;
            }
            self.message.clear();
        } else if data && !self.in_message {
            // A continuation without a message to continue: nothing to read.
            self.keep = false;
        }
        self.head.clear();
        self.frame = Some(Frame {
            left,
            seen: 0,
            mask,
            data,
            fin: b0 & 0x80 != 0,
        });
    }

    fn end_frame(&mut self, on_usage: &mut dyn FnMut(Usage)) {
        let Some(frame) = self.frame.take() else {
            return;
        };
        if !(frame.data && frame.fin) {
            return;
        }
        if self.keep {
            if let Some(usage) = completed_usage(&self.message) {
                on_usage(usage);
            }
        }
        self.in_message = false;
        self.keep = false;
        self.message.clear();
        if self.message.capacity() > KEEP_CAPACITY {
            self.message = Vec::new();
        }
    }
}

#[derive(Deserialize)]
struct Kind<'a> {
    #[serde(borrow, rename = "type")]
    kind: Option<Cow<'a, str>>,
}

/// The usage of a `response.completed` event; None for any other message.
pub fn completed_usage(message: &[u8]) -> Option<Usage> {
    memmem::find(message, COMPLETED.as_bytes())?;
    let kind: Kind<'_> = serde_json::from_slice(message).ok()?;
    if kind.kind.as_deref() != Some(COMPLETED) {
        return None;
    }
    let mut usage = Usage::default();
    usage.apply_json(message);
    Some(usage)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server frame (unmasked unless `mask` is given).
    fn frame(b0: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
        let mut out = vec![b0];
        let m = if mask.is_some() { 0x80 } else { 0 };
        match payload.len() {
            n if n < 126 => out.push(m | n as u8),
            n if n <= 0xffff => {
                out.push(m | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(m | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        match mask {
            Some(k) => {
                out.extend_from_slice(&k);
                out.extend(payload.iter().enumerate().map(|(i, b)| b ^ k[i % 4]));
            }
            None => out.extend_from_slice(payload),
        }
        out
    }

    fn completed(model: &str, input: u64, output: u64, pad: usize) -> String {
        format!(
            r#"{{"type":"response.completed","response":{{"id":"resp_1","model":"{model}","output":[{{"text":"{}"}}],"usage":{{"input_tokens":{input},"output_tokens":{output},"total_tokens":{}}}}}}}"#,
            "x".repeat(pad),
            input + output
        )
    }

    /// Feeds `bytes` in pieces of `split` bytes; returns every usage read.
    fn read(bytes: &[u8], split: usize) -> (Vec<Usage>, u64) {
        let mut tap = WsUsageTap::new();
        let mut got = Vec::new();
        for piece in bytes.chunks(split.max(1)) {
            tap.observe(piece, &mut |u| got.push(u));
        }
        (got, tap.unread)
    }

    fn stream() -> Vec<u8> {
        let created = r#"{"type":"response.created","response":{"model":"gpt-5-codex"}}"#;
        let delta = r#"{"type":"response.output_text.delta","delta":"response.completed"}"#;
        let done = completed("gpt-5-codex", 120, 34, 300);
        let (a, b) = done.as_bytes().split_at(40);
        let (b, c) = b.split_at(200);
        let mut s = Vec::new();
        s.extend(frame(0x81, created.as_bytes(), None));
        s.extend(frame(0x81, delta.as_bytes(), None));
        // Fragmented: text (no FIN), a ping between, continuation, continuation with FIN.
        s.extend(frame(0x01, a, None));
        s.extend(frame(0x89, b"ping", None));
        s.extend(frame(0x00, b, None));
        s.extend(frame(0x80, c, None));
        s.extend(frame(0x82, &[1, 2, 3], None));
        s.extend(frame(
            0x81,
            completed("gpt-5", 7, 8, 70_000).as_bytes(),
            None,
        ));
        s
    }

    #[test]
    fn usage_of_each_completed_event_at_every_read_split() {
        let s = stream();
        for split in [1, 2, 3, 7, 13, 64, 126, 127, 1000, s.len()] {
            let (got, unread) = read(&s, split);
            assert_eq!(got.len(), 2, "split {split}: {got:?}");
            assert_eq!(got[0].model.as_deref(), Some("gpt-5-codex"));
            assert_eq!((got[0].input, got[0].output), (Some(120), Some(34)));
            assert_eq!(got[1].model.as_deref(), Some("gpt-5"), "64-bit length");
            assert_eq!((got[1].input, got[1].output), (Some(7), Some(8)));
            assert_eq!(unread, 0);
        }
    }

    #[test]
    fn masked_frames_are_read_too() {
        let done = completed("m", 1, 2, 10);
        let s = frame(0x81, done.as_bytes(), Some([9, 8, 7, 6]));
        for split in [1, 5, s.len()] {
            let (got, _) = read(&s, split);
            assert_eq!(got.len(), 1);
            assert_eq!(got[0].output, Some(2));
        }
    }

    #[test]
    fn oversized_and_compressed_messages_pass_unread() {
        let big = completed("m", 1, 2, MAX_WS_MESSAGE);
        let mut s = frame(0x81, big.as_bytes(), None);
        s.extend(frame(0xC1, b"\x02\x00", None)); // RSV1: permessage-deflate
        s.extend(frame(0x81, completed("m", 3, 4, 0).as_bytes(), None));
        let (got, unread) = read(&s, 4096);
        assert_eq!(unread, 2);
        assert_eq!(got.len(), 1, "the next message is read again");
        assert_eq!(got[0].input, Some(3));
    }

    #[test]
    fn other_events_and_garbage_give_nothing() {
        assert!(completed_usage(
            br#"{"type":"response.created","response":{"usage":{"input_tokens":1}}}"#
        )
        .is_none());
        assert!(completed_usage(b"response.completed").is_none());
        assert!(completed_usage(b"").is_none());
        let (got, _) = read(&[0xff; 100], 7);
        assert!(got.is_empty());
    }
}
