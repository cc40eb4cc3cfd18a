//! HTTP/2 wire bookkeeping for the IO under each h2 connection (src/faultio.rs): frame headers,
//! the SETTINGS frames the mock writes or rewrites, and the table of streams open on the wire.

use std::collections::HashMap;

/// Length of an HTTP/2 frame header.
pub(crate) const HEAD_LEN: usize = 9;
/// Length of the client connection preface (`PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n`).
pub(crate) const PREFACE_LEN: usize = 24;

const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
/// END_STREAM on DATA and HEADERS; ACK on SETTINGS and PING.
const END_STREAM_OR_ACK: u8 = 0x1;
const MAX_CONCURRENT_STREAMS: u16 = 0x3;

/// One frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Head {
    /// Payload length.
    pub(crate) len: usize,
    kind: u8,
    flags: u8,
    stream: u32,
}

impl Head {
    /// Parses the header at the start of `b` (at least [`HEAD_LEN`] bytes).
    pub(crate) fn parse(b: &[u8]) -> Head {
        Head {
            len: (usize::from(b[0]) << 16) | (usize::from(b[1]) << 8) | usize::from(b[2]),
            kind: b[3],
            flags: b[4],
            stream: u32::from_be_bytes([b[5], b[6], b[7], b[8]]) & 0x7fff_ffff,
        }
    }

    /// A SETTINGS frame that is not an ACK: the peer must acknowledge it.
    pub(crate) fn is_settings(&self) -> bool {
        self.kind == SETTINGS && self.flags & END_STREAM_OR_ACK == 0
    }

    pub(crate) fn is_rst_stream(&self) -> bool {
        self.kind == RST_STREAM
    }

    pub(crate) fn is_settings_ack(&self) -> bool {
        self.kind == SETTINGS && self.flags & END_STREAM_OR_ACK != 0
    }

    fn ends_stream(&self) -> bool {
        (self.kind == DATA || self.kind == HEADERS) && self.flags & END_STREAM_OR_ACK != 0
    }
}

/// A SETTINGS frame carrying the given parameters.
pub(crate) fn settings(params: &[(u16, u32)]) -> Vec<u8> {
    let len = params.len() * 6;
    let mut f = Vec::with_capacity(HEAD_LEN + len);
    f.extend_from_slice(&(len as u32).to_be_bytes()[1..]);
    f.extend_from_slice(&[SETTINGS, 0, 0, 0, 0, 0]);
    for (id, value) in params {
        f.extend_from_slice(&id.to_be_bytes());
        f.extend_from_slice(&value.to_be_bytes());
    }
    f
}

/// A frame with the given header fields and payload (for tests).
#[cfg(test)]
pub(crate) fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut f = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    f.extend_from_slice(&[kind, flags]);
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// A SETTINGS frame carrying only MAX_CONCURRENT_STREAMS = `n`.
pub(crate) fn max_streams_frame(n: u32) -> Vec<u8> {
    settings(&[(MAX_CONCURRENT_STREAMS, n)])
}

/// The whole SETTINGS frame `frame` (header and payload) with MAX_CONCURRENT_STREAMS set to
/// `n` (replaced, or appended when absent); every other parameter kept in order.
pub(crate) fn with_max_streams(frame: &[u8], n: u32) -> Vec<u8> {
    let mut params: Vec<(u16, u32)> = frame[HEAD_LEN..]
        .chunks_exact(6)
        .map(|p| {
            (
                u16::from_be_bytes([p[0], p[1]]),
                u32::from_be_bytes([p[2], p[3], p[4], p[5]]),
            )
        })
        .filter(|(id, _)| *id != MAX_CONCURRENT_STREAMS)
        .collect();
    params.push((MAX_CONCURRENT_STREAMS, n));
    settings(&params)
}

/// Which ends of a stream have finished (END_STREAM sent).
#[derive(Default)]
struct Ends {
    client: bool,
    server: bool,
}

/// Streams open on one connection as its frames show them: from the client's HEADERS until
/// both ends sent END_STREAM or either reset it (open and half-closed streams are what
/// SETTINGS_MAX_CONCURRENT_STREAMS limits, RFC 9113 section 5.1.2). Server frames count when
/// the mock writes them, before the client can have seen them, so a client that honours the
/// limit never shows up above it.
#[derive(Default)]
pub(crate) struct Streams {
    open: HashMap<u32, Ends>,
    /// Highest stream id opened so far: HEADERS on a lower id are trailers of a stream
    /// already closed here, not a new stream.
    last: u32,
}

impl Streams {
    /// Streams open now.
    pub(crate) fn len(&self) -> usize {
        self.open.len()
    }

    /// A frame the client sent.
    pub(crate) fn client_frame(&mut self, h: &Head) {
        if h.kind == HEADERS && h.stream % 2 == 1 && h.stream > self.last {
            self.last = h.stream;
            self.open.insert(h.stream, Ends::default());
        }
        self.end(h, |e| e.client = true);
    }

    /// A frame the server wrote.
    pub(crate) fn server_frame(&mut self, h: &Head) {
        self.end(h, |e| e.server = true);
    }

    fn end(&mut self, h: &Head, mark: impl FnOnce(&mut Ends)) {
        if h.kind == RST_STREAM {
            self.open.remove(&h.stream);
        } else if h.ends_stream() {
            if let Some(e) = self.open.get_mut(&h.stream) {
                mark(e);
                if e.client && e.server {
                    self.open.remove(&h.stream);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(kind: u8, flags: u8, stream: u32) -> Head {
        Head {
            len: 0,
            kind,
            flags,
            stream,
        }
    }

    #[test]
    fn parses_a_header() {
        let h = Head::parse(&[0x01, 0x02, 0x03, 0x04, 0x01, 0x80, 0, 0, 5]);
        assert_eq!(h.len, 0x010203);
        assert!(h.is_settings_ack() && !h.is_settings());
        assert_eq!(h.stream, 5, "the reserved bit is ignored");
    }

    #[test]
    fn max_streams_frame_layout() {
        let f = max_streams_frame(7);
        assert_eq!(f, [0, 0, 6, 4, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 7]);
        assert!(Head::parse(&f).is_settings());
    }

    #[test]
    fn rewrites_or_appends_max_streams() {
        let own = settings(&[(0x4, 65535), (0x3, 100_000), (0x5, 16384)]);
        let got = with_max_streams(&own, 2);
        assert_eq!(got, settings(&[(0x4, 65535), (0x5, 16384), (0x3, 2)]));
        let none = settings(&[(0x4, 65535)]);
        assert_eq!(
            with_max_streams(&none, 9),
            settings(&[(0x4, 65535), (0x3, 9)])
        );
    }

    #[test]
    fn streams_open_until_both_ends_finish_or_reset() {
        let mut s = Streams::default();
        s.client_frame(&head(HEADERS, 0x4, 1)); // request with a body to follow
        s.client_frame(&head(HEADERS, 0x5, 3)); // GET: END_STREAM on HEADERS
        s.client_frame(&head(HEADERS, 0x5, 5));
        assert_eq!(s.len(), 3);
        s.server_frame(&head(DATA, 0x1, 3)); // response to 3 done
        assert_eq!(s.len(), 2);
        s.server_frame(&head(DATA, 0x1, 1)); // answered before the request body ended
        assert_eq!(s.len(), 2, "half-closed still counts");
        s.client_frame(&head(DATA, 0x1, 1));
        assert_eq!(s.len(), 1);
        s.client_frame(&head(RST_STREAM, 0, 5));
        assert_eq!(s.len(), 0);
        s.client_frame(&head(HEADERS, 0x5, 5)); // trailers of a closed stream: not new
        assert_eq!(s.len(), 0);
    }
}
