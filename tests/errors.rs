//! Every error row of DESIGN section 5 that the core path makes, with its status and JSON body,
//! and the stream failure modes: upstream death, client disconnect, idle timeout.

mod common;

use std::time::{Duration, Instant};

use common::*;
use mock_upstream::{Alpn, MockConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn error_json(text: &str) -> serde_json::Value {
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {text}"))
}

fn assert_error(a: &Answer, status: u16, kind: &str, provider: &str) -> serde_json::Value {
    assert_eq!(a.status, status, "{}", a.text());
    assert_eq!(a.headers["content-type"], "application/json");
    assert!(a.headers.contains_key("x-request-id"));
    let v = a.json();
    assert_eq!(v["error"]["type"], kind, "{v}");
    assert_eq!(v["error"]["provider"], provider);
    assert!(v["error"]["message"]
        .as_str()
        .is_some_and(|m| !m.is_empty()));
    assert!(v["error"]["retryable"].is_boolean());
    v
}

#[tokio::test]
async fn non_origin_form_targets_get_400_and_never_reach_upstream() {
    let h = Harness::start(MockConfig::default(), "").await;
    for req in [
        "GET http://evil.example/v1/models HTTP/1.1\r\nHost: evil.example\r\n\r\n",
        "CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n\r\n",
        "GET //evil.example/v1/models HTTP/1.1\r\nHost: x\r\n\r\n",
        "OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n",
    ] {
        let text = raw(h.openai(), req.as_bytes(), Duration::from_secs(2)).await;
        assert!(text.starts_with("HTTP/1.1 400"), "{req:?} -> {text}");
        let v = error_json(&text);
        assert_eq!(v["error"]["type"], "invalid_request");
        assert_eq!(v["error"]["retryable"], false);
    }
    assert_eq!(h.mock.handshakes(), 0, "the upstream was contacted");
    assert_no_canary(&logs());
}

#[tokio::test]
async fn declared_body_over_cap_is_413_before_upstream_contact() {
    let h = Harness::start(MockConfig::default(), "limits: {max_request_body: 1KiB}").await;
    let start = Instant::now();
    // Headers only: the proxy must answer without waiting for the (never sent) body.
    let text = raw(
        h.openai(),
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 1025\r\n\r\n",
        Duration::from_secs(2),
    )
    .await;
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(start.elapsed() < Duration::from_secs(1));
    assert_eq!(error_json(&text)["error"]["type"], "request_too_large");
    // Exactly at the cap is fine.
    let ok = send(post(h.openai(), "/mock/echo", vec![b'a'; 1024])).await;
    assert_eq!(ok.status, 200);
    assert_eq!(h.mock.requests().len(), 1);
}

async fn chunked_body_over_cap(cfg: MockConfig) {
    let h = Harness::start(cfg, "limits: {max_request_body: 64KiB}").await;
    let mut s = TcpStream::connect(h.openai()).await.unwrap();
    s.write_all(b"POST /mock/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        .await
        .unwrap();
    let chunk = vec![b'z'; 16 * 1024];
    // 8 chunks of 16 KiB = 128 KiB: the cap is crossed on the 5th.
    for _ in 0..8 {
        let head = format!("{:x}\r\n", chunk.len());
        if s.write_all(head.as_bytes()).await.is_err()
            || s.write_all(&chunk).await.is_err()
            || s.write_all(b"\r\n").await.is_err()
        {
            break;
        }
    }
    let _ = s.write_all(b"0\r\n\r\n").await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert_eq!(error_json(&text)["error"]["type"], "request_too_large");
    // Whatever reached the upstream was cut short, never a complete 128 KiB body.
    tokio::time::sleep(Duration::from_millis(200)).await;
    for r in h.mock.requests() {
        assert!(
            !r.body_complete || r.body_len <= 64 * 1024,
            "upstream got {} bytes complete",
            r.body_len
        );
    }
}

#[tokio::test]
async fn chunked_body_crossing_cap_is_cut_with_413_h2() {
    chunked_body_over_cap(MockConfig::default()).await;
}

#[tokio::test]
async fn chunked_body_crossing_cap_is_cut_with_413_http1() {
    chunked_body_over_cap(MockConfig {
        alpn: Alpn::Http1Only,
        ..MockConfig::default()
    })
    .await;
}

#[tokio::test]
async fn provider_without_key_is_403_not_configured() {
    let h = Harness::start(MockConfig::default(), "").await;
    let a = send(post(h.unset(), "/v1/chat/completions", "{}")).await;
    let v = assert_error(&a, 403, "provider_not_configured", "unset");
    assert_eq!(v["error"]["retryable"], false);
    assert_eq!(h.mock.handshakes(), 0);
}

#[tokio::test]
async fn dead_upstream_is_502_naming_the_address() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = closed.local_addr().unwrap();
    drop(closed);
    let h = Harness::start_with(MockConfig::default(), |_| {
        format!("providers:\n  openai: {{listen: 127.0.0.1:0, api_key: env:KP_TEST_KEY, upstream_address: '{dead}'}}\n")
    })
    .await;
    let a = send(get(h.providers[0], "/v1/models")).await;
    let v = assert_error(&a, 502, "upstream_unavailable", "openai");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.contains(&dead.to_string()), "{msg}");
    assert_eq!(v["error"]["retryable"], true);
}

#[tokio::test]
async fn wrong_certificate_is_502_naming_the_verification_failure() {
    let h = Harness::start_with(MockConfig::default(), |mock| {
        format!(
            "providers:\n  custom: {{listen: 127.0.0.1:0, api_key: env:KP_TEST_KEY, upstream: 'https://not-in-the-cert.example', upstream_address: '{mock}', auth: {{header: authorization, prefix: 'Bearer '}}}}\n"
        )
    })
    .await;
    let a = send(get(h.providers[0], "/v1/models")).await;
    let v = assert_error(&a, 502, "upstream_unavailable", "custom");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("TLS handshake with not-in-the-cert.example failed")
            && msg.contains("certificate"),
        "{msg}"
    );
    assert!(h.mock.requests().is_empty());
}

#[tokio::test]
async fn untrusted_ca_is_502() {
    // No extra CA: the mock's certificate does not chain to the webpki roots.
    init_logs();
    let mock = mock_upstream::MockUpstream::start(MockConfig::default())
        .await
        .unwrap();
    let yaml = format!(
        "admin: {{listen: 127.0.0.1:0}}\nproviders:\n  openai: {{listen: 127.0.0.1:0, api_key: env:KP_TEST_KEY, upstream_address: '{}'}}\n",
        mock.addr()
    );
    let plan = llm_keyproxy::config::plan::Plan::from_yaml(&yaml, &env_lookup).unwrap();
    let bound = llm_keyproxy::Bound::bind(&plan).await.unwrap();
    let addr = bound.provider_addrs()[0];
    let shared = std::sync::Arc::new(llm_keyproxy::server::Shared::default());
    let task = tokio::spawn(llm_keyproxy::run(
        plan,
        bound,
        std::future::pending(),
        shared,
    ));
    let a = send(get(addr, "/v1/models")).await;
    let v = assert_error(&a, 502, "upstream_unavailable", "openai");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("UnknownIssuer"),
        "{v}"
    );
    task.abort();
}

#[tokio::test]
async fn stalled_tls_handshake_hits_connect_timeout_502() {
    // Accepts TCP but never speaks TLS.
    let stall = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = stall.local_addr().unwrap();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = stall.accept().await {
            held.push(s);
        }
    });
    let h = Harness::start_with(MockConfig::default(), |_| {
        format!("limits: {{connect_timeout: 300ms}}\nproviders:\n  openai: {{listen: 127.0.0.1:0, api_key: env:KP_TEST_KEY, upstream_address: '{addr}'}}\n")
    })
    .await;
    let start = Instant::now();
    let a = send(get(h.providers[0], "/v1/models")).await;
    let v = assert_error(&a, 502, "upstream_unavailable", "openai");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("took longer than"),
        "{v}"
    );
    assert!(start.elapsed() < Duration::from_secs(3));
    holder.abort();
}

#[tokio::test]
async fn no_response_headers_in_time_is_504() {
    let h = Harness::start(MockConfig::default(), "limits: {request_timeout: 300ms}").await;
    let a = send(get(h.openai(), "/mock/delay-headers?ms=3000")).await;
    let v = assert_error(&a, 504, "upstream_timeout", "openai");
    assert_eq!(v["error"]["retryable"], true);
    assert!(
        h.mock.wait_for_requests(1, Duration::from_secs(2)).await,
        "the request did reach the upstream"
    );
}

async fn upstream_dies_mid_stream(cfg: MockConfig) {
    let h = Harness::start(cfg, "").await;
    let resp = client()
        .request(get(h.openai(), "/mock/abort?after=3"))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let result = frames(resp, Duration::from_secs(5)).await;
    let err = result.expect_err("an aborted upstream stream must not end cleanly");
    assert!(err.contains("after 3 frames"), "{err}");
    // The proxy keeps serving.
    assert_eq!(send(get(h.openai(), "/v1/models")).await.status, 200);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(logs().contains("\"outcome\":\"upstream_aborted\""));
}

#[tokio::test]
async fn upstream_dying_mid_stream_aborts_the_client_stream_h2() {
    upstream_dies_mid_stream(MockConfig::default()).await;
}

#[tokio::test]
async fn upstream_dying_mid_stream_aborts_the_client_stream_http1() {
    upstream_dies_mid_stream(MockConfig {
        alpn: Alpn::Http1Only,
        ..MockConfig::default()
    })
    .await;
}

async fn client_disconnect_cancels_upstream(cfg: MockConfig) {
    let h = Harness::start(cfg, "").await;
    let resp = client()
        .request(get(h.openai(), "/mock/hang"))
        .await
        .unwrap();
    let mut body = resp.into_body();
    use http_body_util::BodyExt;
    let first = tokio::time::timeout(Duration::from_secs(2), body.frame())
        .await
        .unwrap();
    assert!(first.is_some());
    drop(body);
    assert!(
        h.mock.wait_for_cancelled(1, Duration::from_secs(3)).await,
        "upstream stream still running after the client left"
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(logs().contains("\"outcome\":\"client_closed\""));
}

#[tokio::test]
async fn client_disconnect_resets_the_upstream_stream_h2() {
    client_disconnect_cancels_upstream(MockConfig::default()).await;
}

#[tokio::test]
async fn client_disconnect_closes_the_upstream_request_http1() {
    client_disconnect_cancels_upstream(MockConfig {
        alpn: Alpn::Http1Only,
        ..MockConfig::default()
    })
    .await;
}

#[tokio::test]
async fn idle_stream_is_aborted_never_ended_cleanly() {
    let h = Harness::start(
        MockConfig::default(),
        "limits: {stream_idle_timeout: 300ms}",
    )
    .await;
    let start = Instant::now();
    let resp = client()
        .request(get(h.openai(), "/mock/hang"))
        .await
        .unwrap();
    let err = frames(resp, Duration::from_secs(5))
        .await
        .expect_err("idle stream ended cleanly");
    assert!(err.contains("after 1 frames"), "{err}");
    assert!(start.elapsed() < Duration::from_secs(3));
    assert!(h.mock.wait_for_cancelled(1, Duration::from_secs(3)).await);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(logs().contains("\"outcome\":\"idle_timeout\""));
}

#[tokio::test]
async fn graceful_shutdown_lets_streams_finish() {
    let mut h = Harness::start(MockConfig::default(), "limits: {drain_timeout: 5s}").await;
    let resp = client()
        .request(get(h.openai(), "/mock/sse?events=6&gap_ms=100"))
        .await
        .unwrap();
    h.shutdown();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(send(get(h.admin, "/ready")).await.status, 503);
    let frames = frames(resp, Duration::from_secs(5))
        .await
        .expect("stream completes during drain");
    assert_eq!(frames.len(), 6);
    let task = h.task.take().unwrap();
    let done = tokio::time::timeout(Duration::from_secs(2), task)
        .await
        .expect("run returns after drain");
    assert!(done.unwrap().is_ok());
    // New connections are refused once draining.
    assert!(TcpStream::connect(h.openai()).await.is_err());
}

#[tokio::test]
async fn drain_timeout_bounds_shutdown() {
    let mut h = Harness::start(MockConfig::default(), "limits: {drain_timeout: 300ms}").await;
    let resp = client()
        .request(get(h.openai(), "/mock/hang"))
        .await
        .unwrap();
    let start = Instant::now();
    h.shutdown();
    let task = h.task.take().unwrap();
    let done = tokio::time::timeout(Duration::from_secs(3), task)
        .await
        .expect("run returns after the drain timeout");
    assert!(done.unwrap().is_ok());
    assert!(start.elapsed() >= Duration::from_millis(250));
    drop(resp);
}
