//! The request path end to end against a real-TLS mock upstream (h2 and http/1.1): what the
//! upstream received, what the client got, byte for byte where it matters.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::Request;
use http_body_util::Full;
use mock_upstream::{Alpn, MockConfig};
use sha2::{Digest, Sha256};

fn h1() -> MockConfig {
    MockConfig {
        alpn: Alpn::Http1Only,
        ..MockConfig::default()
    }
}

/// A request carrying every header the proxy must strip.
fn hostile_request(addr: std::net::SocketAddr, body: Bytes) -> Request<Full<Bytes>> {
    Request::post(format!("http://{addr}/mock/echo?x=1"))
        .header("authorization", "Bearer sk-client-supplied")
        .header("x-api-key", "client-key")
        .header("x-goog-api-key", "client-key")
        .header("api-key", "client-key")
        .header("proxy-authorization", "Basic Y2xpZW50OmtleQ==")
        .header("proxy-foo", "1")
        .header("x-forwarded-for", "10.1.2.3")
        .header("x-forwarded-host", "evil.example")
        .header("forwarded", "for=10.1.2.3")
        .header("via", "1.1 agent")
        .header("connection", "keep-alive, x-hop")
        .header("x-hop", "1")
        .header("keep-alive", "timeout=5")
        .header("te", "trailers")
        .header("x-custom", "kept")
        .header("x-request-id", "client-req.42")
        .body(Full::new(body))
        .unwrap()
}

async fn strips_and_injects(cfg: MockConfig, alpn: &str, version: http::Version) {
    let h = Harness::start(cfg, "").await;
    let body: Bytes = (0..300_000u32)
        .map(|i| (i % 251) as u8)
        .collect::<Vec<_>>()
        .into();
    let answer = send(hostile_request(h.openai(), body.clone())).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.headers["x-request-id"], "client-req.42");
    let echoed = answer.json();
    let sha = hex(&Sha256::digest(&body));
    assert_eq!(echoed["sha256"], sha.as_str());

    let seen = h.mock.requests();
    assert_eq!(seen.len(), 1);
    let r = &seen[0];
    assert_eq!(r.version, version);
    assert_eq!(r.alpn.as_deref(), Some(alpn));
    assert_eq!(r.sni.as_deref(), Some("api.openai.com"));
    assert_eq!(r.authority.as_deref(), Some("api.openai.com"));
    assert_eq!(r.path_and_query, "/v1/mock/echo?x=1");
    assert_eq!(r.header_all("authorization"), [format!("Bearer {CANARY}")]);
    for gone in [
        "x-api-key",
        "x-goog-api-key",
        "api-key",
        "proxy-authorization",
        "proxy-foo",
        "x-forwarded-for",
        "x-forwarded-host",
        "forwarded",
        "via",
        "connection",
        "x-hop",
        "keep-alive",
        "te",
    ] {
        assert!(r.header(gone).is_none(), "{gone} reached the upstream");
    }
    assert_eq!(r.header("x-custom").as_deref(), Some("kept"));
    assert_eq!(r.header("x-request-id").as_deref(), Some("client-req.42"));
    assert_eq!(
        (r.body_len, r.body_sha256.as_str(), r.body_complete),
        (body.len() as u64, sha.as_str(), true)
    );
    assert_no_canary(&logs());
}

#[tokio::test]
async fn strips_client_credentials_and_injects_key_once_h2() {
    strips_and_injects(MockConfig::default(), "h2", http::Version::HTTP_2).await;
}

#[tokio::test]
async fn strips_client_credentials_and_injects_key_once_http1() {
    strips_and_injects(h1(), "http/1.1", http::Version::HTTP_11).await;
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn anthropic_version_added_only_when_absent_and_key_in_x_api_key() {
    let h = Harness::start(MockConfig::default(), "").await;
    let body = r#"{"model":"claude-x","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}"#;
    let mut req = post(h.anthropic(), "/v1/messages", body);
    req.headers_mut()
        .insert("x-api-key", "sk-ant-placeholder".parse().unwrap());
    assert_eq!(send(req).await.status, 200);
    let mut req = post(h.anthropic(), "/v1/messages", body);
    req.headers_mut()
        .insert("anthropic-version", "2024-10-22".parse().unwrap());
    assert_eq!(send(req).await.status, 200);
    let seen = h.mock.requests();
    assert_eq!(seen[0].header_all("anthropic-version"), ["2023-06-01"]);
    assert_eq!(seen[1].header_all("anthropic-version"), ["2024-10-22"]);
    for r in &seen {
        assert_eq!(r.header_all("x-api-key"), [CANARY]);
        assert!(r.header("authorization").is_none());
        assert_eq!(r.sni.as_deref(), Some("api.anthropic.com"));
    }
}

#[tokio::test]
async fn openai_base_path_rewrites() {
    let h = Harness::start(MockConfig::default(), "").await;
    let body = r#"{"model":"gpt-4o-mini","input":"hi"}"#;
    assert_eq!(send(post(h.openai(), "/responses", body)).await.status, 200);
    assert_eq!(
        send(post(h.openai(), "/v1/responses", body)).await.status,
        200
    );
    assert_eq!(send(get(h.openai(), "/v1/models")).await.status, 200);
    let paths: Vec<_> = h
        .mock
        .requests()
        .into_iter()
        .map(|r| r.path_and_query)
        .collect();
    assert_eq!(paths, ["/v1/responses", "/v1/responses", "/v1/models"]);
}

async fn streams_each_event_as_sent(cfg: MockConfig) {
    let h = Harness::start(cfg, "").await;
    let resp = client()
        .request(get(h.openai(), "/mock/sse?events=20&gap_ms=50&size=128"))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let frames = frames(resp, Duration::from_secs(10)).await.unwrap();
    let mut lags = Vec::new();
    let mut next = 0;
    for (arrived, data) in &frames {
        let arrived_ns = now_ns() - arrived.elapsed().as_nanos();
        let events = sse_events(data);
        assert_eq!(
            events.len(),
            1,
            "a frame carried {} events: merged",
            events.len()
        );
        let json: serde_json::Value =
            serde_json::from_str(events[0].split("data: ").nth(1).unwrap().trim()).unwrap();
        assert_eq!(json["i"], next, "out of order");
        next += 1;
        let sent = json["sent_ns"].as_u64().unwrap() as u128;
        lags.push((arrived_ns.saturating_sub(sent)) as f64 / 1e6);
    }
    assert_eq!(next, 20, "lost events");
    let worst = lags.iter().cloned().fold(0.0, f64::max);
    // Generous bound: the events are 50 ms apart, so buffering would show as >= 50 ms.
    assert!(
        worst < 40.0,
        "an event was delivered {worst:.1} ms after it was sent: {lags:?}"
    );
    write_stdout(&format!(
        "per-event lag ms: max {worst:.2}, all {lags:.2?}\n"
    ));
}

#[tokio::test]
async fn streams_each_sse_event_as_sent_h2() {
    streams_each_event_as_sent(MockConfig::default()).await;
}

#[tokio::test]
async fn streams_each_sse_event_as_sent_http1() {
    streams_each_event_as_sent(h1()).await;
}

#[tokio::test]
async fn h2_pool_one_handshake_for_sequential_and_concurrent() {
    h2_pool_handshakes(1).await;
}

/// Each worker has its own pool: two workers, at most two h2 connections for any number of
/// client connections and requests.
#[tokio::test]
async fn h2_pool_one_handshake_per_worker() {
    h2_pool_handshakes(2).await;
}

async fn h2_pool_handshakes(workers: usize) {
    let h = Harness::start(
        MockConfig::default(),
        &format!("limits: {{workers: {workers}}}"),
    )
    .await;
    assert_eq!(send(get(h.openai(), "/v1/models")).await.status, 200);
    for _ in 0..100 {
        assert_eq!(send(get(h.openai(), "/mock/status/200")).await.status, 200);
    }
    let mut tasks = Vec::new();
    for _ in 0..100 {
        let addr = h.openai();
        tasks.push(tokio::spawn(async move {
            send(get(addr, "/mock/delay-headers?ms=50")).await.status
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    assert_eq!(h.mock.requests().len(), 201);
    // Each request came on its own client connection: 100 sequential ones reach every worker
    // (all but surely), so the concurrent burst finds every pool warm.
    assert!(
        (1..=workers).contains(&h.mock.handshakes()),
        "{} h2 connections for {workers} worker(s): not shared",
        h.mock.handshakes()
    );
}

#[tokio::test]
async fn http1_pool_reuses_kept_alive_connections() {
    let h = Harness::start(h1(), "limits: {workers: 1}").await;
    for _ in 0..100 {
        assert_eq!(send(get(h.openai(), "/mock/status/200")).await.status, 200);
    }
    assert_eq!(h.mock.handshakes(), 1);
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let addr = h.openai();
        tasks.push(tokio::spawn(async move {
            send(get(addr, "/mock/delay-headers?ms=100")).await.status
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    let after_burst = h.mock.handshakes();
    assert!(
        after_burst <= 9,
        "{after_burst} handshakes for 8 concurrent requests"
    );
    for _ in 0..20 {
        assert_eq!(send(get(h.openai(), "/mock/status/200")).await.status, 200);
    }
    assert_eq!(
        h.mock.handshakes(),
        after_burst,
        "idle HTTP/1.1 connections were not reused"
    );
}

#[tokio::test]
async fn request_ids_are_kept_made_and_echoed() {
    let h = Harness::start(MockConfig::default(), "").await;
    let mut req = get(h.openai(), "/v1/models");
    req.headers_mut()
        .insert("x-request-id", "bad id!".parse().unwrap());
    let answer = send(req).await;
    let id = answer.headers["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(id.len(), 36);
    assert_ne!(id, "bad id!");
    assert_eq!(
        h.mock.requests()[0].header("x-request-id"),
        Some(id.clone())
    );
    // The mock sends its own x-request-id; ours wins, theirs is kept alongside.
    assert!(answer.headers.get("x-upstream-request-id").is_some());
    let answer = send(get(h.unset(), "/v1/models")).await;
    assert_eq!(answer.status, 403);
    assert_eq!(answer.headers["x-request-id"].len(), 36);
}

#[tokio::test]
async fn access_log_has_request_complete_without_query() {
    let h = Harness::start(MockConfig::default(), "").await;
    let mut req = get(h.openai(), "/v1/models?secret_param=zzz");
    req.headers_mut()
        .insert("x-request-id", "log-check-1".parse().unwrap());
    assert_eq!(send(req).await.status, 200);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let logs = logs();
    let line = logs
        .lines()
        .find(|l| l.contains("\"log-check-1\""))
        .expect("request_complete logged");
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(v["event"], "request_complete");
    assert_eq!(v["path"], "/v1/models");
    assert_eq!(v["provider"], "openai");
    assert_eq!(v["method"], "GET");
    assert_eq!(v["status"], 200);
    assert_eq!(v["upstream_host"], "api.openai.com");
    assert_eq!(v["outcome"], "completed");
    assert!(v["response_bytes"].as_u64().unwrap() > 0);
    assert!(v["duration_ms"].as_f64().is_some());
    assert!(v["ttfb_ms"]
        .as_f64()
        .is_some_and(|t| t <= v["duration_ms"].as_f64().unwrap()));
    assert_eq!(v["upstream_protocol"], "h2");
    assert!(v.get("timestamp").is_some() && v.get("level").is_some());
    assert!(!logs.contains("zzz"));
}

#[tokio::test]
async fn admin_live_and_ready() {
    let h = Harness::start(MockConfig::default(), "").await;
    assert_eq!(send(get(h.admin, "/live")).await.status, 200);
    assert_eq!(send(get(h.admin, "/ready")).await.status, 200);
    assert_eq!(send(get(h.admin, "/nope")).await.status, 404);
    h.shared
        .draining
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let ready = send(get(h.admin, "/ready")).await;
    assert_eq!(
        (ready.status, ready.json()["status"].as_str()),
        (503, Some("draining"))
    );
    let refused = send(get(h.openai(), "/v1/models")).await;
    assert_eq!(refused.status, 503);
    assert_eq!(refused.json()["error"]["type"], "shutting_down");
}
