//! Hostile clients over raw sockets: request smuggling and framing tricks, slowloris,
//! oversized heads and bodies, connection floods. Every case asserts the status or the closed
//! connection, that the upstream saw nothing it should not, and that a normal request succeeds
//! right after. What hyper itself does with each form is noted where it matters
//! (docs/security.md has the table).

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use mock_upstream::{Alpn, MockConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What came back on a raw connection, and whether the proxy closed it.
struct Exchange {
    text: String,
    bytes: Vec<u8>,
    closed: bool,
}

impl Exchange {
    fn status_line(&self) -> &str {
        self.text.lines().next().unwrap_or("<nothing>")
    }
    fn json(&self) -> serde_json::Value {
        let body = self.text.split("\r\n\r\n").nth(1).unwrap_or("");
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {}", self.text))
    }
}

/// Writes `request` and reads until the proxy closes the connection or `limit` passes.
async fn exchange(addr: SocketAddr, request: &[u8], limit: Duration) -> Exchange {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    read_all(&mut s, limit).await
}

async fn read_all(s: &mut TcpStream, limit: Duration) -> Exchange {
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    let deadline = Instant::now() + limit;
    let closed = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Err(_) => break false,
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    };
    Exchange {
        text: String::from_utf8_lossy(&out).into_owned(),
        bytes: out,
        closed,
    }
}

/// A normal request right after: the proxy still serves, and the upstream sees it.
async fn still_serves(h: &Harness) {
    let before = h.mock.requests().len();
    let a = send(post(h.openai(), "/mock/echo", "{\"ok\":true}")).await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.json()["len"], 11);
    assert_eq!(h.mock.requests().len(), before + 1);
    assert_no_canary(&logs());
}

/// No recorded upstream request has a complete body, and none is for `/mock/smuggled`.
fn nothing_complete_upstream(h: &Harness, case: &str) {
    for r in h.mock.requests() {
        assert!(
            !r.path_and_query.contains("smuggled"),
            "{case}: a smuggled request reached the upstream"
        );
        assert!(
            !r.body_complete,
            "{case}: the upstream got a complete {} {} ({} bytes)",
            r.method, r.path_and_query, r.body_len
        );
    }
}

/// Framing that hyper's HTTP/1.1 parser refuses outright: 400, connection closed, and the
/// upstream is never contacted.
#[tokio::test]
async fn malformed_framing_and_header_bytes_get_400_and_never_reach_upstream() {
    let h = Harness::start(MockConfig::default(), "").await;
    let cases: &[(&str, &[u8])] = &[
        (
            "conflicting Content-Length",
            b"POST /mock/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 40\r\n\r\nabc",
        ),
        (
            "Content-Length list",
            b"POST /mock/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3, 3\r\n\r\nabc",
        ),
        (
            "signed Content-Length",
            b"POST /mock/echo HTTP/1.1\r\nHost: x\r\nContent-Length: +3\r\n\r\nabc",
        ),
        (
            "Transfer-Encoding not ending in chunked",
            b"POST /mock/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        ),
        (
            "Transfer-Encoding in HTTP/1.0",
            b"POST /mock/echo HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        ),
        (
            "obs-fold",
            b"GET /mock/echo HTTP/1.1\r\nHost: x\r\nX-Folded: a\r\n b\r\n\r\n",
        ),
        (
            "bare CR in a value",
            b"GET /mock/echo HTTP/1.1\r\nHost: x\r\nX-A: b\rc\r\n\r\n",
        ),
        (
            "NUL in a value",
            b"GET /mock/echo HTTP/1.1\r\nHost: x\r\nX-A: b\0c\r\n\r\n",
        ),
        (
            "control byte in a value",
            b"GET /mock/echo HTTP/1.1\r\nHost: x\r\nX-A: b\x01c\r\n\r\n",
        ),
        (
            "DEL in a value",
            b"GET /mock/echo HTTP/1.1\r\nHost: x\r\nX-A: b\x7fc\r\n\r\n",
        ),
        (
            "non-ASCII header name",
            "GET /mock/echo HTTP/1.1\r\nHost: x\r\nX-\u{c4}: b\r\n\r\n".as_bytes(),
        ),
        (
            "space before the colon",
            b"GET /mock/echo HTTP/1.1\r\nHost: x\r\nX-A : b\r\n\r\n",
        ),
        (
            "LF inside the request line",
            b"GET /mock/echo\nX HTTP/1.1\r\nHost: x\r\n\r\n",
        ),
    ];
    for (case, request) in cases {
        let got = exchange(h.openai(), request, Duration::from_secs(3)).await;
        assert!(
            got.status_line().starts_with("HTTP/1.1 400"),
            "{case}: {}",
            got.text
        );
        assert!(got.closed, "{case}: connection left open");
        assert!(h.mock.requests().is_empty(), "{case}: reached the upstream");
    }
    assert_eq!(h.mock.handshakes(), 0, "the upstream was contacted");
    still_serves(&h).await;
}

/// Invalid chunk sizes are found only once the head has gone upstream (the body streams):
/// the client gets 400 `invalid_request`, the upstream stream is cancelled and never sees a
/// complete body.
async fn invalid_chunks(cfg: MockConfig) {
    let h = Harness::start(cfg, "").await;
    let cases: &[(&str, &[u8])] = &[
        (
            "non-hex chunk size",
            b"POST /mock/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
        ),
        (
            "chunk size overflowing 64 bits",
            b"POST /mock/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffff\r\nabc\r\n0\r\n\r\n",
        ),
        (
            "negative chunk size",
            b"POST /mock/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n-3\r\nabc\r\n0\r\n\r\n",
        ),
        (
            "chunk data longer than its size",
            b"POST /mock/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcdef\r\n0\r\n\r\n",
        ),
    ];
    for (case, request) in cases {
        h.mock.clear();
        let got = exchange(h.openai(), request, Duration::from_secs(5)).await;
        assert!(
            got.status_line().starts_with("HTTP/1.1 400"),
            "{case}: {}",
            got.text
        );
        assert_eq!(got.json()["error"]["type"], "invalid_request", "{case}");
        assert!(got.closed, "{case}: connection left open");
        tokio::time::sleep(Duration::from_millis(100)).await;
        nothing_complete_upstream(&h, case);
    }
    still_serves(&h).await;
}

#[tokio::test]
async fn invalid_chunk_sizes_get_400_and_the_upstream_stream_is_cancelled_h2() {
    invalid_chunks(MockConfig::default()).await;
}

#[tokio::test]
async fn invalid_chunk_sizes_get_400_and_the_upstream_request_is_cut_http1() {
    invalid_chunks(MockConfig {
        alpn: Alpn::Http1Only,
        ..MockConfig::default()
    })
    .await;
}

/// `Content-Length` together with `Transfer-Encoding: chunked`, either order. hyper follows
/// RFC 9112 section 6.1: the chunked framing wins, `Content-Length` is dropped, and the
/// connection is closed after the response, so the bytes after the chunked body are never
/// parsed as a second request. (hyper offers no switch to answer 400 instead; a proxy-side
/// check cannot see the dropped header.) The upstream gets one request, re-framed by the
/// proxy's own client, and never the smuggled one.
#[tokio::test]
async fn content_length_with_transfer_encoding_never_smuggles_a_request() {
    let h = Harness::start(MockConfig::default(), "").await;
    let cases: &[(&str, &[u8])] = &[
        (
            "CL then TE",
            b"POST /mock/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 48\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /mock/smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        ),
        (
            "TE then CL",
            b"POST /mock/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 48\r\n\r\n0\r\n\r\nGET /mock/smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        ),
        (
            "CL 0 then TE with a chunk",
            b"POST /mock/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nGET /mock/smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        ),
    ];
    for (case, request) in cases {
        h.mock.clear();
        let got = exchange(h.openai(), request, Duration::from_secs(3)).await;
        assert!(got.closed, "{case}: connection kept alive after CL+TE");
        assert_eq!(
            got.text.matches("HTTP/1.1 ").count(),
            1,
            "{case}: more than one response: {}",
            got.text
        );
        let status = got.status_line();
        assert!(
            status.starts_with("HTTP/1.1 200") || status.starts_with("HTTP/1.1 400"),
            "{case}: {}",
            got.text
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        let seen = h.mock.requests();
        assert!(
            seen.iter().all(|r| !r.path_and_query.contains("smuggled")),
            "{case}: smuggled"
        );
        if status.starts_with("HTTP/1.1 200") {
            // Forwarded once, framed by the chunked encoding alone.
            assert_eq!(seen.len(), 1, "{case}");
            let r = &seen[0];
            let expected = if case.contains("chunk") { 3 } else { 0 };
            assert_eq!(r.body_len, expected, "{case}");
            assert!(r.header_all("content-length").len() <= 1, "{case}");
            assert!(r.header("transfer-encoding").is_none(), "{case}");
        }
    }
    still_serves(&h).await;
}

/// Forms hyper accepts (RFC 9110/9112 allow them): repeated identical `Content-Length`,
/// bare LF line ends, obs-text in values. Each reaches the upstream as exactly the request the
/// client meant, re-serialised by the proxy's client, with one unambiguous length.
#[tokio::test]
async fn lenient_forms_reach_the_upstream_unambiguously() {
    let h = Harness::start(MockConfig::default(), "").await;
    let cases: &[(&str, &[u8], u64)] = &[
        (
            "identical Content-Length twice",
            b"POST /mock/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc",
            3,
        ),
        (
            "bare LF line ends",
            b"POST /mock/echo HTTP/1.1\nHost: x\nContent-Length: 3\nX-Bare: lf\nConnection: close\n\nabc",
            3,
        ),
        (
            "obs-text in a value",
            b"POST /mock/echo HTTP/1.1\r\nHost: x\r\nX-Latin: caf\xe9\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc",
            3,
        ),
    ];
    for (case, request, len) in cases {
        h.mock.clear();
        let got = exchange(h.openai(), request, Duration::from_secs(3)).await;
        assert!(
            got.status_line().starts_with("HTTP/1.1 200"),
            "{case}: {}",
            got.text
        );
        let seen = h.mock.requests();
        assert_eq!(seen.len(), 1, "{case}");
        let r = &seen[0];
        assert_eq!(r.body_len, *len, "{case}");
        assert!(r.body_complete, "{case}");
        assert!(r.header_all("content-length").len() <= 1, "{case}");
        assert!(
            r.headers
                .iter()
                .all(|(n, v)| !n.contains('\n') && !v.contains(&b'\n') && !v.contains(&b'\r')),
            "{case}: a line end leaked into a forwarded header"
        );
    }
    still_serves(&h).await;
}

/// A head of 10,000 headers (and one of 200 small ones: over `max_headers`, under
/// `max_header_bytes`; and one huge header: over `max_header_bytes`) gets 431.
#[tokio::test]
async fn too_many_or_too_large_headers_get_431() {
    let h = Harness::start(MockConfig::default(), "").await;
    let head = |count: usize, value: &str| {
        let mut r = String::from("GET /mock/echo HTTP/1.1\r\nHost: x\r\n");
        for i in 0..count {
            r.push_str(&format!("X-H{i}: {value}\r\n"));
        }
        r.push_str("\r\n");
        r.into_bytes()
    };
    let huge = "v".repeat(100 * 1024);
    let cases = [
        ("10,000 headers", head(10_000, "v")),
        ("200 headers (over max_headers)", head(200, "v")),
        ("one 100 KiB header (over max_header_bytes)", head(1, &huge)),
    ];
    for (case, request) in &cases {
        let got = exchange(h.openai(), request, Duration::from_secs(5)).await;
        assert!(
            got.status_line().starts_with("HTTP/1.1 431"),
            "{case}: {}",
            got.status_line()
        );
        assert!(got.closed, "{case}: connection left open");
    }
    // Just under both limits passes.
    let ok = exchange(h.openai(), &head(90, "v"), Duration::from_secs(5)).await;
    assert!(ok.status_line().starts_with("HTTP/1.1 200"), "{}", ok.text);
    assert_eq!(h.mock.requests().len(), 1);
    still_serves(&h).await;
}

/// The limits come from the config: a raised `max_headers` lets 200 headers through.
#[tokio::test]
async fn header_limits_follow_the_config() {
    let h = Harness::start(
        MockConfig::default(),
        "limits: {max_headers: 300, max_header_bytes: 16KiB}",
    )
    .await;
    let mut r = String::from("GET /mock/echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n");
    for i in 0..200 {
        r.push_str(&format!("X-H{i}: v\r\n"));
    }
    r.push_str("\r\n");
    let got = exchange(h.openai(), r.as_bytes(), Duration::from_secs(5)).await;
    assert!(
        got.status_line().starts_with("HTTP/1.1 200"),
        "{}",
        got.text
    );
    let big = format!(
        "GET /mock/echo HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "v".repeat(20 * 1024)
    );
    let got = exchange(h.openai(), big.as_bytes(), Duration::from_secs(5)).await;
    assert!(
        got.status_line().starts_with("HTTP/1.1 431"),
        "{}",
        got.text
    );
    still_serves(&h).await;
}

/// Headers dribbled one byte a second: the connection is closed once `header_read_timeout`
/// passes, and nothing reaches the upstream.
#[tokio::test]
async fn headers_dribbled_one_byte_a_second_are_cut_at_the_header_read_timeout() {
    let h = Harness::start(MockConfig::default(), "limits: {header_read_timeout: 2s}").await;
    let request = b"POST /mock/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}";
    let mut s = TcpStream::connect(h.openai()).await.unwrap();
    let start = Instant::now();
    let mut sent = 0;
    let mut buf = [0u8; 1024];
    let mut answer = Vec::new();
    for byte in request.iter() {
        if s.write_all(&[*byte]).await.is_err() {
            break;
        }
        sent += 1;
        // Wait a second, noticing a close (EOF or an answer) as soon as it happens.
        match tokio::time::timeout(Duration::from_secs(1), s.read(&mut buf)).await {
            Err(_) => continue,
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => {
                answer.extend_from_slice(&buf[..n]);
                break;
            }
        }
    }
    let took = start.elapsed();
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        sent < request.len(),
        "the whole request went through at one byte a second"
    );
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(5),
        "closed after {took:?} ({sent} bytes)"
    );
    // hyper closes without an answer, or with 408; never with a proxied response.
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{answer}"
    );
    assert!(h.mock.requests().is_empty());
    still_serves(&h).await;
}

/// A connection that sends nothing is closed after `header_read_timeout` (hyper-util's
/// protocol sniffing has no timer of its own: the listener's idle timer covers it), and a
/// kept-alive HTTP/1.1 connection idle after a response is closed too.
#[tokio::test]
async fn silent_and_idle_keep_alive_connections_are_closed() {
    // hyper's header timer alone: it starts when hyper waits for the next head.
    let h = Harness::start(
        MockConfig::default(),
        "limits: {header_read_timeout: 1s, keep_alive_timeout: 1h}",
    )
    .await;
    let mut silent = TcpStream::connect(h.openai()).await.unwrap();
    let start = Instant::now();
    let got = read_all(&mut silent, Duration::from_secs(5)).await;
    assert!(got.closed && got.text.is_empty(), "{}", got.text);
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "{took:?}"
    );

    let idle_close = |h: &Harness| {
        let addr = h.openai();
        async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(b"GET /mock/echo HTTP/1.1\r\nHost: x\r\n\r\n")
                .await
                .unwrap();
            // Read the whole first answer (a small JSON body with content-length).
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            while !String::from_utf8_lossy(&got).contains("\"path\"") {
                let n = s.read(&mut buf).await.unwrap();
                assert!(n > 0, "closed before the answer");
                got.extend_from_slice(&buf[..n]);
            }
            let idle_from = Instant::now();
            let rest = read_all(&mut s, Duration::from_secs(5)).await;
            assert!(rest.closed, "kept-alive connection never closed");
            assert!(rest.text.is_empty(), "{}", rest.text);
            idle_from.elapsed()
        }
    };
    let took = idle_close(&h).await;
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "{took:?}"
    );
    still_serves(&h).await;

    // The listener's keep-alive timer alone.
    let h = Harness::start(
        MockConfig::default(),
        "limits: {header_read_timeout: 1h, keep_alive_timeout: 1s}",
    )
    .await;
    let took = idle_close(&h).await;
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "{took:?}"
    );
    // Before any request, `header_read_timeout` (here 1h) applies, not the keep-alive one.
    let mut silent = TcpStream::connect(h.openai()).await.unwrap();
    let got = read_all(&mut silent, Duration::from_millis(2500)).await;
    assert!(
        !got.closed,
        "a new connection was closed by the keep-alive timer"
    );
    still_serves(&h).await;
}

/// A 100 MB chunked body (never allocated: one 64 KiB buffer written over and over) is cut
/// at `max_request_body` with 413; the upstream never gets a complete body.
#[tokio::test]
async fn hundred_megabyte_chunked_body_is_cut_with_413_at_the_cap() {
    let h = Harness::start(MockConfig::default(), "").await;
    let cap = llm_keyproxy::config::DEFAULT_MAX_REQUEST_BODY;
    let s = TcpStream::connect(h.openai()).await.unwrap();
    let (mut rd, mut wr) = s.into_split();
    let reader = tokio::spawn(async move {
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(30), rd.read_to_end(&mut out)).await;
        String::from_utf8_lossy(&out).into_owned()
    });
    let start = Instant::now();
    let chunk = vec![b'x'; 64 * 1024];
    let total: u64 = 100_000_000;
    let mut written: u64 = 0;
    let _ = wr
        .write_all(b"POST /mock/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        .await;
    while written < total {
        let n = chunk.len().min((total - written) as usize);
        let head = format!("{n:x}\r\n");
        let ok = wr.write_all(head.as_bytes()).await.is_ok()
            && wr.write_all(&chunk[..n]).await.is_ok()
            && wr.write_all(b"\r\n").await.is_ok();
        if !ok {
            break;
        }
        written += n as u64;
        if start.elapsed() > Duration::from_secs(30) {
            break;
        }
    }
    if written == total {
        let _ = wr.write_all(b"0\r\n\r\n").await;
    }
    let text = reader.await.unwrap();
    assert!(
        text.starts_with("HTTP/1.1 413"),
        "{}",
        &text[..text.len().min(300)]
    );
    let v: serde_json::Value =
        serde_json::from_str(text.split("\r\n\r\n").nth(1).unwrap_or("")).unwrap();
    assert_eq!(v["error"]["type"], "request_too_large");
    assert!(
        written < total,
        "the proxy read all 100 MB ({written} bytes written)"
    );
    assert!(start.elapsed() < Duration::from_secs(30));
    tokio::time::sleep(Duration::from_millis(200)).await;
    for r in h.mock.requests() {
        assert!(
            !r.body_complete || r.body_len <= cap,
            "the upstream got {} bytes complete",
            r.body_len
        );
    }
    write_stdout(&format!(
        "100 MB chunked body: 413 after {} MiB written, {:?}\n",
        written >> 20,
        start.elapsed()
    ));
    still_serves(&h).await;
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

/// 5,000 idle connections opened at once and dropped: the proxy keeps serving while they
/// are open and after, and every server-side socket is closed again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_thousand_idle_connections_opened_and_dropped() {
    let h = Harness::start(MockConfig::default(), "limits: {max_connections: 6000}").await;
    still_serves(&h).await;
    let baseline = open_fds();
    let start = Instant::now();
    let addr = h.openai();
    let mut conns = Vec::with_capacity(5000);
    for batch in 0..50 {
        let mut opening = Vec::with_capacity(100);
        for _ in 0..100 {
            opening.push(tokio::spawn(TcpStream::connect(addr)));
        }
        for o in opening {
            conns.push(
                o.await
                    .unwrap()
                    .unwrap_or_else(|e| panic!("connect in batch {batch}: {e}")),
            );
        }
    }
    let opened = start.elapsed();
    // Served while 5,000 idle connections are held.
    still_serves(&h).await;
    let held = open_fds();
    drop(conns);
    // The proxy notices every close.
    let deadline = Instant::now() + Duration::from_secs(20);
    while open_fds() > baseline + 20 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after = open_fds();
    write_stdout(&format!(
        "5,000 idle connections: opened in {opened:?}; fds {baseline} -> {held} -> {after} ({:?} in all)\n",
        start.elapsed()
    ));
    assert!(
        held >= baseline + 9_000,
        "not all connections were accepted ({held})"
    );
    assert!(after <= baseline + 20, "fds leaked: {baseline} -> {after}");
    assert!(start.elapsed() < Duration::from_secs(60));
    still_serves(&h).await;
}

/// Beyond `max_connections`, a new connection is answered `503 overloaded` (the JSON error
/// shape) and closed; once a slot frees, connections are served again.
#[tokio::test]
async fn connections_beyond_max_connections_get_503_overloaded() {
    let h = Harness::start(MockConfig::default(), "limits: {max_connections: 3}").await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(TcpStream::connect(h.openai()).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let got = exchange(
        h.openai(),
        b"GET /mock/echo HTTP/1.1\r\nHost: x\r\n\r\n",
        Duration::from_secs(3),
    )
    .await;
    assert!(
        got.status_line().starts_with("HTTP/1.1 503"),
        "{}",
        got.text
    );
    assert!(got.closed);
    assert!(got.text.contains("x-request-id: "), "{}", got.text);
    let v = got.json();
    assert_eq!(v["error"]["type"], "overloaded");
    assert_eq!(v["error"]["provider"], "openai");
    assert_eq!(v["error"]["retryable"], true);
    assert!(h.mock.requests().is_empty());
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(logs().contains("\"event\":\"connection_refused\""));
    // Free one slot: served again.
    drop(held.pop());
    tokio::time::sleep(Duration::from_millis(200)).await;
    still_serves(&h).await;
}

/// h2c (prior knowledge): the server's `max_concurrent_streams` holds extra streams back, and
/// every stream still completes.
#[tokio::test]
async fn h2c_streams_beyond_max_concurrent_streams_wait_their_turn() {
    use http_body_util::{BodyExt, Empty};
    let h = Harness::start(MockConfig::default(), "limits: {max_concurrent_streams: 2}").await;
    let tcp = TcpStream::connect(h.openai()).await.unwrap();
    let (sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    // Let the server's SETTINGS arrive before the streams open.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let start = Instant::now();
    let mut streams = Vec::new();
    for _ in 0..4 {
        let mut sender = sender.clone();
        streams.push(tokio::spawn(async move {
            let req = http::Request::get("http://x/mock/sse?events=4&gap_ms=150")
                .body(Empty::<bytes::Bytes>::new())
                .unwrap();
            let resp = sender.send_request(req).await.unwrap();
            let headers_at = start.elapsed();
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            (headers_at, sse_events(&body).len())
        }));
    }
    let mut heads = Vec::new();
    for s in streams {
        let (at, events) = s.await.unwrap();
        assert_eq!(events, 4);
        heads.push(at);
    }
    heads.sort();
    // Two streams start at once; the other two only after those ended (~450 ms each).
    assert!(heads[1] < Duration::from_millis(300), "{heads:?}");
    assert!(heads[2] >= Duration::from_millis(400), "{heads:?}");
    still_serves(&h).await;
}

/// An h2c connection with no stream is closed too: GOAWAY after `header_read_timeout` (no
/// request yet), and a peer that never acknowledges the GOAWAY handshake's PING is cut after
/// one more idle period.
#[tokio::test]
async fn idle_h2c_connection_is_closed_even_when_the_peer_stalls_the_goaway() {
    let h = Harness::start(
        MockConfig::default(),
        "limits: {header_read_timeout: 1s, keep_alive_timeout: 1s}",
    )
    .await;
    let mut s = TcpStream::connect(h.openai()).await.unwrap();
    let start = Instant::now();
    // Preface and an empty SETTINGS frame; then silence (no SETTINGS ack, no PING ack).
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    let got = read_all(&mut s, Duration::from_secs(6)).await;
    let took = start.elapsed();
    assert!(got.closed, "h2c connection held open");
    assert!(
        took >= Duration::from_millis(1800) && took < Duration::from_secs(4),
        "{took:?}"
    );
    // Frame type 7 (GOAWAY) was sent before the close.
    let bytes = &got.bytes;
    let mut at = 0;
    let mut goaway = false;
    while at + 9 <= bytes.len() {
        let len = (usize::from(bytes[at]) << 16)
            | (usize::from(bytes[at + 1]) << 8)
            | usize::from(bytes[at + 2]);
        goaway |= bytes[at + 3] == 7;
        at += 9 + len;
    }
    assert!(goaway, "no GOAWAY before the close");
    still_serves(&h).await;
}

/// hyper >= 1.5.1 and h2 >= 0.4.17 (HTTP/2 reset and CONTINUATION floods) in the lockfile.
#[test]
fn lockfile_has_patched_hyper_and_h2() {
    let lock = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.lock")).unwrap();
    let version = |name: &str| -> Vec<u64> {
        let at = lock
            .find(&format!("name = \"{name}\"\nversion = \""))
            .unwrap_or_else(|| panic!("{name} not in Cargo.lock"));
        let rest = &lock[at..];
        let v = rest.split('"').nth(3).unwrap();
        v.split('.').map(|p| p.parse().unwrap_or(0)).collect()
    };
    assert!(
        version("hyper") >= vec![1, 5, 1],
        "hyper {:?}",
        version("hyper")
    );
    assert!(version("h2") >= vec![0, 4, 17], "h2 {:?}", version("h2"));
}

/// The protocol is chosen by peeking at the first bytes: an h2c preface that arrives in pieces
/// (here 3 bytes, then the rest 100 ms later) is still h2c, and an HTTP/1.1 request that starts
/// like the preface (`P` of `POST`, then the rest later) is still HTTP/1.1.
#[tokio::test]
async fn split_h2c_preface_and_preface_like_http1_start_are_told_apart() {
    let h = Harness::start(MockConfig::default(), "").await;

    let mut s = TcpStream::connect(h.openai()).await.unwrap();
    s.write_all(b"PRI").await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    s.write_all(b" * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    let mut head = [0u8; 9];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut head))
        .await
        .expect("no answer to a split preface")
        .unwrap();
    assert_eq!(
        head[3], 4,
        "the server's first frame is not SETTINGS: {head:?}"
    );

    let mut s = TcpStream::connect(h.openai()).await.unwrap();
    s.write_all(b"P").await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    s.write_all(
        b"OST /mock/echo HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\nconnection: close\r\n\r\nhi",
    )
    .await
    .unwrap();
    let got = read_all(&mut s, Duration::from_secs(5)).await;
    assert!(
        got.status_line().starts_with("HTTP/1.1 200"),
        "{}",
        got.text
    );
    assert_eq!(got.json()["len"], 2, "{}", got.text);
    still_serves(&h).await;
}
