//! What the mock records about each request, and the streaming body reader that hashes the
//! whole body while keeping only a bounded prefix.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use http::request::Parts;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use sha2::{Digest, Sha256};

/// At most this many body bytes are kept in [`Recorded::body`].
pub(crate) const RECORD_LIMIT: usize = 1 << 20;

/// One request as the mock received it.
#[derive(Clone, Debug)]
pub struct Recorded {
    /// Request method, e.g. `POST`.
    pub method: String,
    /// Path and query as received, e.g. `/v1/chat/completions?x=1`.
    pub path_and_query: String,
    /// `HTTP_2` or `HTTP_11` as received.
    pub version: http::Version,
    /// The h2 `:authority`, or the `Host` header for http/1.1.
    pub authority: Option<String>,
    /// Every header, names lowercase, duplicates kept. Order is hyper's `HeaderMap` order:
    /// names in order of first appearance, repeated values of one name grouped together.
    pub headers: Vec<(String, Vec<u8>)>,
    /// SNI the client sent.
    pub sni: Option<String>,
    /// Negotiated ALPN protocol (`h2` / `http/1.1`), if any.
    pub alpn: Option<String>,
    /// Length of the full body as received.
    pub body_len: u64,
    /// Lowercase hex SHA-256 of the full body as received.
    pub body_sha256: String,
    /// The first 1 MiB of the body.
    pub body: Vec<u8>,
    /// False when the body ended in an error or reset.
    pub body_complete: bool,
}

impl Recorded {
    /// First value of header `name` (case-insensitive), lossy UTF-8.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }

    /// All values of header `name` (case-insensitive), lossy UTF-8, in order.
    pub fn header_all(&self, name: &str) -> Vec<String> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .collect()
    }

    /// The recorded body (first 1 MiB) parsed as JSON, if it is valid JSON.
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// As `/mock/requests` answers it: `{"method","path_and_query","version","authority",
    /// "headers":[[name,value],..],"body_len","body_sha256","body_b64","body_complete"}`
    /// (values lossy UTF-8; `body_b64` is the standard base64 of [`Recorded::body`]).
    pub fn to_json(&self) -> serde_json::Value {
        let headers: Vec<[String; 2]> = self
            .headers
            .iter()
            .map(|(n, v)| [n.clone(), String::from_utf8_lossy(v).into_owned()])
            .collect();
        serde_json::json!({
            "method": self.method,
            "path_and_query": self.path_and_query,
            "version": format!("{:?}", self.version),
            "authority": self.authority,
            "headers": headers,
            "body_len": self.body_len,
            "body_sha256": self.body_sha256,
            "body_b64": STANDARD.encode(&self.body),
            "body_complete": self.body_complete,
        })
    }

    pub(crate) fn new(parts: &Parts, info: &ConnInfo, read: &BodyRead) -> Recorded {
        let authority = match parts.version {
            http::Version::HTTP_2 | http::Version::HTTP_3 => {
                parts.uri.authority().map(|a| a.as_str().to_owned())
            }
            _ => parts
                .headers
                .get(http::header::HOST)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .or_else(|| parts.uri.authority().map(|a| a.as_str().to_owned())),
        };
        let path_and_query = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_else(|| parts.uri.path().to_owned());
        Recorded {
            method: parts.method.as_str().to_owned(),
            path_and_query,
            version: parts.version,
            authority,
            headers: parts
                .headers
                .iter()
                .map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec()))
                .collect(),
            sni: info.sni.clone(),
            alpn: info.alpn.clone(),
            body_len: read.len,
            body_sha256: read.sha256.clone(),
            body: read.kept[..read.kept.len().min(RECORD_LIMIT)].to_vec(),
            body_complete: read.complete,
        }
    }
}

/// TLS facts of the connection a request arrived on.
#[derive(Debug, Default)]
pub(crate) struct ConnInfo {
    pub(crate) sni: Option<String>,
    pub(crate) alpn: Option<String>,
}

/// Result of reading a request body to its end.
pub(crate) struct BodyRead {
    pub(crate) len: u64,
    pub(crate) sha256: String,
    /// The first `keep` bytes of the body.
    pub(crate) kept: Vec<u8>,
    pub(crate) complete: bool,
}

impl BodyRead {
    /// True when `kept` holds the whole body.
    pub(crate) fn is_whole(&self) -> bool {
        self.kept.len() as u64 == self.len
    }
}

/// Lowercase hex encoding.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// Reads `body` to its end (or first error), hashing everything and keeping at most `keep` bytes.
pub(crate) async fn read_body(mut body: Incoming, keep: usize) -> BodyRead {
    let mut hasher = Sha256::new();
    let mut len = 0u64;
    let mut kept = Vec::new();
    let complete = loop {
        match body.frame().await {
            None => break true,
            Some(Err(_)) => break false,
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    hasher.update(&data);
                    len += data.len() as u64;
                    let room = keep.saturating_sub(kept.len());
                    kept.extend_from_slice(&data[..data.len().min(room)]);
                }
            }
        }
    };
    BodyRead {
        len,
        sha256: hex(&hasher.finalize()),
        kept,
        complete,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_encodes() {
        assert_eq!(hex(&[0x00, 0xab, 0xff]), "00abff");
    }

    #[test]
    fn header_lookup_is_case_insensitive() {
        let rec = Recorded {
            method: "GET".into(),
            path_and_query: "/".into(),
            version: http::Version::HTTP_11,
            authority: None,
            headers: vec![
                ("x-a".into(), b"1".to_vec()),
                ("x-b".into(), b"2".to_vec()),
                ("x-a".into(), b"3".to_vec()),
            ],
            sni: None,
            alpn: None,
            body_len: 0,
            body_sha256: String::new(),
            body: Vec::new(),
            body_complete: true,
        };
        assert_eq!(rec.header("X-A").as_deref(), Some("1"));
        assert_eq!(rec.header_all("x-a"), vec!["1", "3"]);
        assert_eq!(rec.header("x-c"), None);
    }
}
