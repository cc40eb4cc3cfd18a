//! AWS event-stream framing (`application/vnd.amazon.eventstream`, used by Bedrock's streaming
//! routes in src/aws.rs): the encoder the mock streams with, and a checking decoder for tests.
//!
//! A message: total length (u32), headers length (u32), CRC32 of those 8 bytes, headers, payload,
//! CRC32 of everything before it; big-endian; CRC32 is IEEE. A header: name length (u8), name,
//! value type (u8), value; the mock writes only type 7 (string: u16 length, bytes).

use bytes::Bytes;

/// Header value type 7: a UTF-8 string with a u16 length.
const TYPE_STRING: u8 = 7;
/// Prelude (8) + prelude CRC (4) + message CRC (4).
const OVERHEAD: usize = 16;

/// One decoded event-stream message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventMessage {
    /// `(name, value)` string headers in wire order, e.g. `(":event-type", "chunk")`.
    pub headers: Vec<(String, String)>,
    /// The payload bytes.
    pub payload: Vec<u8>,
}

impl EventMessage {
    /// The value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Encodes one message with string headers.
pub fn encode_event(headers: &[(&str, &str)], payload: &[u8]) -> Bytes {
    let mut head = Vec::new();
    for (name, value) in headers {
        head.push(name.len() as u8);
        head.extend_from_slice(name.as_bytes());
        head.push(TYPE_STRING);
        head.extend_from_slice(&(value.len() as u16).to_be_bytes());
        head.extend_from_slice(value.as_bytes());
    }
    let total = OVERHEAD + head.len() + payload.len();
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(&(total as u32).to_be_bytes());
    out.extend_from_slice(&(head.len() as u32).to_be_bytes());
    out.extend_from_slice(&crc32fast::hash(&out).to_be_bytes());
    out.extend_from_slice(&head);
    out.extend_from_slice(payload);
    out.extend_from_slice(&crc32fast::hash(&out).to_be_bytes());
    Bytes::from(out)
}

/// An event message as Bedrock streams them: `:event-type` `kind`, `:content-type`
/// `application/json`, `:message-type` `event`.
pub(crate) fn json_event(kind: &str, payload: &str) -> Bytes {
    let headers = [
        (":event-type", kind),
        (":content-type", "application/json"),
        (":message-type", "event"),
    ];
    encode_event(&headers, payload.as_bytes())
}

fn be32(b: &[u8], at: usize) -> Result<u32, String> {
    b.get(at..at + 4)
        .map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
        .ok_or_else(|| format!("truncated at byte {at}"))
}

/// Decodes a whole event stream, checking both CRCs of every message and that nothing trails.
pub fn decode_event_stream(bytes: &[u8]) -> Result<Vec<EventMessage>, String> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let total = be32(rest, 0)? as usize;
        let head_len = be32(rest, 4)? as usize;
        if total < OVERHEAD + head_len || total > rest.len() {
            return Err(format!("message {}: bad length {total}", out.len()));
        }
        if crc32fast::hash(&rest[..8]) != be32(rest, 8)? {
            return Err(format!("message {}: prelude CRC mismatch", out.len()));
        }
        if crc32fast::hash(&rest[..total - 4]) != be32(rest, total - 4)? {
            return Err(format!("message {}: message CRC mismatch", out.len()));
        }
        let headers = decode_headers(&rest[12..12 + head_len])
            .map_err(|e| format!("message {}: {e}", out.len()))?;
        let payload = rest[12 + head_len..total - 4].to_vec();
        out.push(EventMessage { headers, payload });
        rest = &rest[total..];
    }
    Ok(out)
}

fn decode_headers(mut b: &[u8]) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    while let Some((&name_len, tail)) = b.split_first() {
        let name = tail.get(..name_len as usize).ok_or("truncated header")?;
        let tail = &tail[name_len as usize..];
        match tail {
            [TYPE_STRING, hi, lo, value @ ..] => {
                let len = u16::from_be_bytes([*hi, *lo]) as usize;
                let v = value.get(..len).ok_or("truncated header value")?;
                out.push((
                    String::from_utf8_lossy(name).into_owned(),
                    String::from_utf8_lossy(v).into_owned(),
                ));
                b = &value[len..];
            }
            _ => return Err("unsupported header value type".into()),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_message_matches_the_aws_test_vector() {
        // `empty_message` of the AWS event-stream test suite (aws-c-event-stream).
        let want = [
            0, 0, 0, 0x10, 0, 0, 0, 0, 0x05, 0xc2, 0x48, 0xeb, 0x7d, 0x98, 0xc8, 0xff,
        ];
        assert_eq!(&encode_event(&[], b"")[..], &want);
        let msgs = decode_event_stream(&want).unwrap();
        assert_eq!(
            msgs,
            vec![EventMessage {
                headers: vec![],
                payload: vec![]
            }]
        );
    }

    #[test]
    fn round_trip_of_two_messages() {
        let mut stream = json_event("chunk", r#"{"bytes":"eyJ9","p":"ab"}"#).to_vec();
        stream.extend_from_slice(&encode_event(&[("a", "b")], b"xyz"));
        let msgs = decode_event_stream(&stream).unwrap();
        assert_eq!(msgs.len(), 2);
        assert_eq!(msgs[0].header(":event-type"), Some("chunk"));
        assert_eq!(msgs[0].header(":message-type"), Some("event"));
        assert_eq!(msgs[0].payload, br#"{"bytes":"eyJ9","p":"ab"}"#);
        assert_eq!(msgs[1].headers, vec![("a".to_owned(), "b".to_owned())]);
        assert_eq!(msgs[1].payload, b"xyz");
    }

    #[test]
    fn corrupt_or_truncated_streams_are_refused() {
        let msg = json_event("chunk", "{}").to_vec();
        let mut bad_payload = msg.clone();
        let at = bad_payload.len() - 5;
        bad_payload[at] ^= 1;
        let err = decode_event_stream(&bad_payload).unwrap_err();
        assert!(err.contains("message CRC"), "{err}");
        let mut bad_prelude = msg.clone();
        bad_prelude[7] ^= 1;
        let err = decode_event_stream(&bad_prelude).unwrap_err();
        assert!(err.contains("prelude CRC"), "{err}");
        assert!(decode_event_stream(&msg[..msg.len() - 1]).is_err());
        assert!(decode_event_stream(&msg[..3]).is_err());
    }
}
