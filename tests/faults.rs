//! Upstream faults, injected by the mock on command: a stream reset among healthy
//! streams on one HTTP/2 connection, a stalled stream, GOAWAY with streams in flight, a slow
//! TLS handshake, and an http/1.1 upstream closing idle keep-alive connections just as requests
//! are sent; and a client that stops reading its stream. In every case each client gets either its complete answer or an unmistakable
//! error (never a cut body that ends cleanly), and the proxy keeps serving.
//! (A wrong certificate is in tests/errors.rs.)

mod common;

use std::time::{Duration, Instant};

use common::*;
use mock_upstream::{Alpn, MockConfig};
use sha2::{Digest, Sha256};

fn h1() -> MockConfig {
    MockConfig {
        alpn: Alpn::Http1Only,
        ..MockConfig::default()
    }
}

/// A normal request: the proxy still serves.
async fn still_serves(h: &Harness) {
    let a = send(post(h.openai(), "/mock/echo", "{\"ok\":true}")).await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.json()["len"], 11);
    assert_no_canary(&logs());
}

/// Streams `path` through the proxy: `Ok(events)` when it ended cleanly, `Err` when cut.
async fn stream(addr: std::net::SocketAddr, path: &str) -> Result<usize, String> {
    let resp = client().request(get(addr, path)).await.unwrap();
    assert_eq!(resp.status(), 200);
    let frames = frames(resp, Duration::from_secs(10)).await?;
    let bytes: Vec<u8> = frames.iter().flat_map(|(_, b)| b.to_vec()).collect();
    Ok(sse_events(&bytes).len())
}

/// One upstream stream is reset mid-way (`/mock/abort`), four others run on the same HTTP/2
/// connection at the same time: only the reset one fails, the others complete.
#[tokio::test]
async fn h2_stream_reset_affects_only_its_own_stream() {
    // One worker: all five streams on its one h2 connection.
    let h = Harness::start(MockConfig::default(), "limits: {workers: 1}").await;
    still_serves(&h).await;
    let addr = h.openai();
    let healthy: Vec<_> = (0..4)
        .map(|_| tokio::spawn(async move { stream(addr, "/mock/sse?events=10&gap_ms=50").await }))
        .collect();
    tokio::time::sleep(Duration::from_millis(60)).await;
    let aborted = stream(addr, "/mock/abort?after=3").await;
    let err = aborted.expect_err("a reset stream ended cleanly");
    assert!(err.contains("after 3 frames"), "{err}");
    for s in healthy {
        assert_eq!(s.await.unwrap(), Ok(10), "a healthy stream was hurt");
    }
    assert_eq!(
        h.mock.handshakes(),
        1,
        "the streams did not share one h2 connection"
    );
    still_serves(&h).await;
    assert_eq!(h.mock.handshakes(), 1, "the reset took the connection down");
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(logs().contains("\"outcome\":\"upstream_aborted\""));
}

/// A stalled stream is cut by `stream_idle_timeout`, alone: a stream beside it whose gaps stay
/// under the timeout completes.
#[tokio::test]
async fn stalled_stream_is_cut_alone() {
    let h = Harness::start(
        MockConfig::default(),
        "limits: {stream_idle_timeout: 500ms}",
    )
    .await;
    let addr = h.openai();
    let healthy = tokio::spawn(async move { stream(addr, "/mock/sse?events=8&gap_ms=150").await });
    let start = Instant::now();
    let stalled = stream(addr, "/mock/hang").await;
    let err = stalled.expect_err("a stalled stream ended cleanly");
    assert!(err.contains("after 1 frames"), "{err}");
    assert!(start.elapsed() < Duration::from_secs(3));
    assert_eq!(healthy.await.unwrap(), Ok(8));
    assert!(h.mock.wait_for_cancelled(1, Duration::from_secs(3)).await);
    still_serves(&h).await;
}

/// A client that stops reading cannot hold its stream open: once it has accepted nothing for
/// `limits.client_write_timeout` with bytes waiting, its connection is cut, the upstream
/// stream cancelled, and the request logged and counted `client_stalled`; a stream on another
/// connection meanwhile completes.
#[tokio::test]
async fn non_reading_client_is_cut_while_others_flow() {
    use tokio::io::AsyncWriteExt;
    let h = Harness::start(
        MockConfig::default(),
        "limits: {client_write_timeout: 500ms, workers: 1}",
    )
    .await;
    still_serves(&h).await;
    let addr = h.openai();
    let healthy = tokio::spawn(async move { stream(addr, "/mock/sse?events=20&gap_ms=100").await });
    // 32 MiB of events, far more than the socket buffers, asked for and never read.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stalled = socket.connect(addr).await.unwrap();
    let id = format!("stalled-{}", std::process::id());
    let request = format!(
        "GET /mock/sse?events=2048&gap_ms=0&size=16384 HTTP/1.1\r\nHost: localhost\r\n\
         X-Request-Id: {id}\r\n\r\n"
    );
    stalled.write_all(request.as_bytes()).await.unwrap();
    assert_cut_as_stalled(&h, &id).await;
    assert_eq!(
        healthy.await.unwrap(),
        Ok(20),
        "the reading stream was hurt"
    );
    drop(stalled);
    still_serves(&h).await;
}

/// The same over h2c: a client that never reads its stream leaves the proxy's stream window
/// full, hyper stops taking frames, and the bound cuts the connection.
#[tokio::test]
async fn non_reading_h2c_client_is_cut() {
    use http_body_util::{BodyExt, Empty};
    let h = Harness::start(
        MockConfig::default(),
        "limits: {client_write_timeout: 500ms}",
    )
    .await;
    let tcp = tokio::net::TcpStream::connect(h.openai()).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .initial_stream_window_size(65_535)
            .initial_connection_window_size(65_535)
            .handshake(hyper_util::rt::TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    let id = format!("stalled-h2c-{}", std::process::id());
    let req = http::Request::get("http://x/mock/sse?events=256&gap_ms=0&size=16384")
        .header("x-request-id", &id)
        .body(Empty::<bytes::Bytes>::new())
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    // Not read until the proxy has given up on it.
    assert_cut_as_stalled(&h, &id).await;
    let rest = resp.into_body().collect().await;
    assert!(rest.is_err(), "a cut stream ended cleanly");
    still_serves(&h).await;
}

/// The non-reading client's request `id` was cut: its upstream stream cancelled, and it is
/// logged and counted `client_stalled`.
async fn assert_cut_as_stalled(h: &Harness, id: &str) {
    assert!(
        h.mock.wait_for_cancelled(1, Duration::from_secs(10)).await,
        "the upstream stream of the non-reading client was not cancelled"
    );
    let series = "keyproxy_stream_outcomes_total{provider=\"openai\",outcome=\"client_stalled\"}";
    let text = metrics_text(h.admin).await;
    assert_eq!(metric_value(&text, series), 1.0, "{text}");
    let needle = format!("\"request_id\":\"{id}\"");
    let logged = logs();
    let line = logged
        .lines()
        .find(|l| l.contains("\"request_complete\"") && l.contains(&needle))
        .expect("request_complete for the stalled stream");
    assert!(line.contains("\"outcome\":\"client_stalled\""), "{line}");
}

/// The upstream shuts its connections down gracefully (h2: GOAWAY; http/1.1: close after the
/// response) while streams are in flight: they finish, and new requests go to a new
/// connection.
async fn goaway_with_streams_in_flight(cfg: MockConfig, streams: usize) {
    let h = Harness::start(cfg, "").await;
    still_serves(&h).await;
    let before = h.mock.handshakes();
    let addr = h.openai();
    let running: Vec<_> = (0..streams)
        .map(|_| tokio::spawn(async move { stream(addr, "/mock/sse?events=8&gap_ms=100").await }))
        .collect();
    tokio::time::sleep(Duration::from_millis(250)).await;
    h.mock.goaway();
    for s in running {
        assert_eq!(
            s.await.unwrap(),
            Ok(8),
            "a stream in flight was cut by GOAWAY"
        );
    }
    let opened = h.mock.handshakes();
    for _ in 0..3 {
        still_serves(&h).await;
    }
    assert!(
        h.mock.handshakes() > opened,
        "new requests did not open a new connection"
    );
    assert!(opened >= before);
}

#[tokio::test]
async fn goaway_with_streams_in_flight_h2() {
    goaway_with_streams_in_flight(MockConfig::default(), 4).await;
}

#[tokio::test]
async fn graceful_close_with_a_response_in_flight_http1() {
    goaway_with_streams_in_flight(h1(), 2).await;
}

/// A slow TLS handshake: under `connect_timeout` it only delays the answer; over it, 502
/// naming the timeout, while requests on an already open connection keep being served.
#[tokio::test]
async fn slow_tls_handshake_within_and_beyond_the_connect_timeout() {
    // Within: served.
    let slow = MockConfig {
        handshake_delay: Duration::from_millis(300),
        ..MockConfig::default()
    };
    let h = Harness::start(slow, "limits: {connect_timeout: 3s}").await;
    let start = Instant::now();
    let a = send(post(h.openai(), "/mock/echo", "{}")).await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert!(start.elapsed() >= Duration::from_millis(300));

    // Beyond: openai's pool already holds an h2 connection; anthropic's pool must open one.
    let h = Harness::start(
        MockConfig::default(),
        "limits: {connect_timeout: 600ms, workers: 1}",
    )
    .await;
    still_serves(&h).await;
    h.mock.set_handshake_delay(Duration::from_secs(3));
    let stalled = tokio::spawn(send(post(h.anthropic(), "/mock/echo", "{}")));
    let start = Instant::now();
    // Served meanwhile, on the open connection.
    for _ in 0..3 {
        still_serves(&h).await;
    }
    assert!(start.elapsed() < Duration::from_millis(500));
    let a = stalled.await.unwrap();
    let took = start.elapsed();
    assert_eq!(a.status, 502, "{}", a.text());
    let v = a.json();
    assert_eq!(v["error"]["type"], "upstream_unavailable");
    assert_eq!(v["error"]["provider"], "anthropic");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("took longer than"),
        "{v}"
    );
    assert!(
        took >= Duration::from_millis(500) && took < Duration::from_secs(2),
        "{took:?}"
    );
    h.mock.set_handshake_delay(Duration::ZERO);
    let a = send(post(h.anthropic(), "/mock/echo", "{}")).await;
    assert_eq!(a.status, 200, "{}", a.text());
}

/// An http/1.1 upstream that closes keep-alive connections idle for 150 ms, and requests sent
/// right around that moment: each gets its complete answer or a 502 `upstream_unavailable`;
/// never a short body presented as complete.
#[tokio::test]
async fn upstream_closing_idle_http1_connections_as_requests_are_sent() {
    let idle = Duration::from_millis(150);
    let h = Harness::start(
        MockConfig {
            h1_idle_close: Some(idle),
            ..h1()
        },
        "",
    )
    .await;
    let (mut complete, mut failed) = (0, 0);
    let mut rng = 0x9e37_79b9_7f4a_7c15_u64;
    for i in 0..40u64 {
        // Sleep from 140 to 160 ms: the close races the next request.
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        tokio::time::sleep(idle - Duration::from_millis(10) + Duration::from_millis(rng % 21))
            .await;
        let (status, ok) = if i % 2 == 0 {
            let body = vec![b'q'; 1000 + (rng % 60_000) as usize];
            let want = hex(&Sha256::digest(&body));
            let a = send(post(h.openai(), "/mock/echo", body.clone())).await;
            let ok = a.status == 200 && a.json()["sha256"] == want.as_str();
            (a, ok)
        } else {
            let n = 100_000 + rng % 200_000;
            let a = send(get(h.openai(), &format!("/mock/large?bytes={n}"))).await;
            let ok = a.status == 200
                && a.body.len() as u64 == n
                && a.body
                    .iter()
                    .enumerate()
                    .all(|(j, b)| *b == (j % 251) as u8);
            (a, ok)
        };
        match status.status {
            200 => {
                assert!(ok, "request {i}: a 200 whose body is not the whole answer");
                complete += 1;
            }
            502 => {
                let v = status.json();
                assert_eq!(v["error"]["type"], "upstream_unavailable", "{v}");
                assert_eq!(v["error"]["retryable"], true);
                failed += 1;
            }
            other => panic!("request {i}: unexpected {other}: {}", status.text()),
        }
    }
    write_stdout(&format!(
        "upstream closing idle h1 connections: {complete} complete, {failed} clean 502, {} handshakes\n",
        h.mock.handshakes()
    ));
    assert!(complete >= 30, "{complete} of 40 complete");
    assert!(
        h.mock.handshakes() > 5,
        "the mock did not close idle connections"
    );
    still_serves(&h).await;
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
