//! AWF drop-in behaviour on provider ports: the five presets' injected headers, `/health`
//! and `/reflect` answered locally, and per-provider rate limits.

mod common;

use std::time::{Duration, Instant};

use common::*;
use mock_upstream::MockConfig;

fn five(mock: std::net::SocketAddr, extra: &str) -> String {
    let p = |name: &str, key: &str| {
        format!("  {name}: {{listen: 127.0.0.1:0, api_key: env:{key}, upstream_address: '{mock}'{extra}}}\n")
    };
    format!(
        "providers:\n{}{}{}{}{}",
        p("openai", "KP_TEST_KEY"),
        p("anthropic", "KP_TEST_KEY"),
        p("copilot", "KP_TEST_KEY"),
        p("gemini", "KP_TEST_KEY"),
        p("vertex", "KP_UNSET_KEY"),
    )
}

#[tokio::test]
async fn five_presets_inject_their_headers() {
    let mut h = Harness::start_with(MockConfig::default(), |m| five(m, "")).await;
    // vertex has no key here; give it one through a second harness below.
    let body = r#"{"model":"m","messages":[]}"#;
    assert_eq!(
        send(post(h.providers[2], "/chat/completions", body))
            .await
            .status,
        200
    );
    let mut req = post(h.providers[2], "/chat/completions", body);
    req.headers_mut()
        .insert("x-initiator", "user".parse().unwrap());
    assert_eq!(send(req).await.status, 200);
    let gem =
        "/v1beta/models/gemini-2.0-flash:generateContent?key=leaked&alt=json&api_key=x&apiKey=y";
    let mut req = post(h.providers[3], gem, r#"{"contents":[]}"#);
    req.headers_mut()
        .insert("x-goog-api-key", "client-goog".parse().unwrap());
    assert_eq!(send(req).await.status, 200);
    let seen = h.mock.requests();
    assert_eq!(seen[0].sni.as_deref(), Some("api.githubcopilot.com"));
    assert_eq!(
        seen[0].header_all("authorization"),
        [format!("Bearer {CANARY}")]
    );
    assert_eq!(seen[0].header_all("x-initiator"), ["agent"]);
    assert_eq!(seen[1].header_all("x-initiator"), ["user"]);
    assert_eq!(
        seen[2].sni.as_deref(),
        Some("generativelanguage.googleapis.com")
    );
    assert_eq!(
        seen[2].path_and_query,
        "/v1beta/models/gemini-2.0-flash:generateContent?alt=json"
    );
    assert_eq!(seen[2].header_all("x-goog-api-key"), [CANARY]);
    assert!(seen[2].header("authorization").is_none());
    let a = send(post(
        h.providers[4],
        "/v1/projects/p/locations/l/publishers/google/models/m:generateContent",
        "{}",
    ))
    .await;
    assert_eq!(a.status, 403);
    h.shutdown();

    let v = Harness::start_with(MockConfig::default(), |m| {
        format!("providers:\n  vertex: {{listen: 127.0.0.1:0, api_key: env:KP_TEST_KEY, upstream_address: '{m}'}}\n")
    })
    .await;
    let mut req = post(
        v.providers[0],
        "/v1beta/models/gemini-2.0-flash:generateContent",
        "{}",
    );
    req.headers_mut()
        .insert("authorization", "Bearer client".parse().unwrap());
    send(req).await;
    let r = &v.mock.requests()[0];
    assert_eq!(r.sni.as_deref(), Some("aiplatform.googleapis.com"));
    assert_eq!(r.header_all("x-goog-api-key"), [CANARY]);
    assert!(r.header("authorization").is_none());
    assert_no_canary(&logs());
}

#[tokio::test]
async fn health_and_reflect_are_local_and_fast() {
    // The upstream is dead: health must not depend on it.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let h = Harness::start_with(MockConfig::default(), |_| five(dead, "")).await;
    let start = Instant::now();
    let a = send(get(h.providers[0], "/health")).await;
    let took = start.elapsed();
    assert_eq!(a.status, 200);
    let v = a.json();
    assert_eq!(v["status"], "healthy");
    assert_eq!(v["service"], "awf-api-proxy");
    assert!(v["squid_proxy"].is_null());
    assert_eq!(
        v["providers"],
        serde_json::json!({"openai": true, "anthropic": true, "copilot": true, "gemini": true, "vertex": false})
    );
    assert!(v["metrics_summary"]["total_requests"].is_u64());
    assert_eq!(v["rate_limits"]["openai"]["enabled"], false);
    assert!(took < Duration::from_millis(200), "health took {took:?}");

    let a = send(get(h.providers[1], "/health")).await;
    assert_eq!(
        (a.status, a.json()["service"].as_str()),
        (200, Some("awf-api-proxy-anthropic"))
    );
    let a = send(get(h.providers[4], "/health")).await;
    assert_eq!(a.status, 503);
    assert_eq!(a.json()["status"], "not_configured");
    for port in &h.providers {
        let a = send(get(*port, "/reflect")).await;
        assert_eq!(a.status, 200);
        let endpoints = a.json()["endpoints"].as_array().unwrap().clone();
        assert_eq!(endpoints.len(), 5);
        assert_eq!(endpoints[4]["provider"], "vertex");
        assert_eq!(endpoints[4]["configured"], false);
        assert_eq!(endpoints[0]["port"], h.providers[0].port());
    }
    assert_eq!(
        h.mock.handshakes(),
        0,
        "health or reflect reached the upstream"
    );
}

#[tokio::test]
async fn rate_limits_refuse_over_the_limit_per_provider() {
    let h = Harness::start_with(MockConfig::default(), |m| {
        five(
            m,
            ", rate_limit: {requests_per_minute: 2, bytes_per_minute: 1KiB}",
        )
    })
    .await;
    let body = r#"{"model":"m","messages":[]}"#;
    assert_eq!(
        send(post(h.providers[0], "/v1/chat/completions", body))
            .await
            .status,
        200
    );
    assert_eq!(
        send(post(h.providers[0], "/v1/chat/completions", body))
            .await
            .status,
        200
    );
    let a = send(post(h.providers[0], "/v1/chat/completions", body)).await;
    assert_eq!(a.status, 429, "{}", a.text());
    let v = a.json();
    assert_eq!(v["error"]["type"], "rate_limit_error");
    assert_eq!(v["error"]["retryable"], true);
    let retry: u64 = a.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry));
    assert_eq!(a.headers["x-ratelimit-limit"], "2");
    assert_eq!(a.headers["x-ratelimit-remaining"], "0");
    assert!(a.headers.contains_key("x-ratelimit-reset"));
    assert_eq!(
        h.mock.requests().len(),
        2,
        "a refused request reached the upstream"
    );
    // Providers are independent; bytes per minute counts the declared length.
    assert_eq!(
        send(post(h.providers[1], "/v1/messages", body))
            .await
            .status,
        200
    );
    let big = "x".repeat(1100);
    assert_eq!(
        send(post(h.providers[1], "/v1/messages", big)).await.status,
        429
    );
    let health = send(get(h.providers[0], "/health")).await.json();
    assert_eq!(health["rate_limits"]["openai"]["requests_per_minute"], 2);
    assert_eq!(
        health["rate_limits"]["openai"]["usage"]["requests_last_minute"],
        2
    );
    let metrics = send(get(h.admin, "/metrics")).await.text();
    assert!(
        metrics.contains(r#"keyproxy_rejections_total{provider="openai",reason="rate_limited"} 1"#),
        "{metrics}"
    );
}

/// `x-initiator: agent` goes only to `githubcopilot.com` hosts, as the Node sidecar's
/// `isCopilotHost` (docs/design.md §4): a `COPILOT_API_TARGET` elsewhere (a GHE.com tenant,
/// a gateway) gets the request without it.
#[tokio::test]
async fn copilot_initiator_only_towards_githubcopilot_hosts() {
    let mut cfg = MockConfig::default();
    cfg.hosts.push("api.enterprise.githubcopilot.com".into());
    cfg.hosts.push("copilot-api.acme.ghe.com".into());
    let h = Harness::start_with(cfg, |m| {
        let p = |name: &str, host: &str| {
            format!("  {name}: {{preset: copilot, listen: 127.0.0.1:0, api_key: env:KP_TEST_KEY, upstream: 'https://{host}', upstream_address: '{m}'}}\n")
        };
        format!(
            "providers:\n{}{}",
            p("ghes", "api.enterprise.githubcopilot.com"),
            p("tenant", "copilot-api.acme.ghe.com")
        )
    })
    .await;
    let body = r#"{"model":"m","messages":[]}"#;
    for addr in [h.providers[0], h.providers[1]] {
        assert_eq!(
            send(post(addr, "/chat/completions", body)).await.status,
            200
        );
    }
    let seen = h.mock.requests();
    assert_eq!(
        seen[0].sni.as_deref(),
        Some("api.enterprise.githubcopilot.com")
    );
    assert_eq!(seen[0].header_all("x-initiator"), ["agent"]);
    assert_eq!(seen[1].sni.as_deref(), Some("copilot-api.acme.ghe.com"));
    assert!(seen[1].header("x-initiator").is_none());
    assert_eq!(
        seen[1].header_all("authorization"),
        [format!("Bearer {CANARY}")]
    );
    assert_no_canary(&logs());
}

/// The JSON log lines of `event` for one request id.
fn logged(event: &str, request_id: &str) -> Vec<serde_json::Value> {
    logs()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["event"] == event && v["request_id"] == request_id)
        .collect()
}

/// An upstream 401 (a wrong key) logs `upstream_auth_error` with a hint naming where the key
/// comes from, as the Node sidecar did; a 200 logs none. Never any key material.
#[tokio::test]
async fn upstream_auth_errors_are_logged_with_a_hint() {
    let cfg = MockConfig {
        expected_key: Some("sk-the-right-one".into()),
        ..MockConfig::default()
    };
    let h = Harness::start(cfg, "").await;
    let mut req = post(h.openai(), "/v1/chat/completions", r#"{"model":"m"}"#);
    req.headers_mut()
        .insert("x-request-id", "auth-401".parse().unwrap());
    let a = send(req).await;
    assert_eq!(a.status, 401);
    let lines = logged("upstream_auth_error", "auth-401");
    assert_eq!(lines.len(), 1, "{lines:?}");
    let l = &lines[0];
    assert_eq!(l["level"], "WARN");
    assert_eq!(l["provider"], "openai");
    assert_eq!(l["status"], 401);
    assert_eq!(l["upstream_host"], "api.openai.com");
    assert_eq!(l["path"], "/v1/chat/completions");
    let message = l["message"].as_str().unwrap();
    assert!(
        message.contains("check that the API key for openai (env:KP_TEST_KEY)"),
        "{message}"
    );
    // A 200 (the mock's test routes need no key) logs none.
    let mut req = get(h.openai(), "/v1/mock/status/200");
    req.headers_mut()
        .insert("x-request-id", "auth-200".parse().unwrap());
    assert_eq!(send(req).await.status, 200);
    assert!(logged("upstream_auth_error", "auth-200").is_empty());
    assert_no_canary(&logs());
}

/// `GET /metrics` on the first port (AWF's 10000) answers the Node sidecar's JSON locally, as
/// AWF's tools read it; it never reaches the upstream, so the key never leaves with it. On
/// the other ports it is an ordinary path, proxied as Node did.
#[tokio::test]
async fn metrics_json_on_the_first_port_is_local() {
    let h = Harness::start(MockConfig::default(), "").await;
    let a = send(post(h.anthropic(), "/v1/messages", r#"{"model":"m"}"#)).await;
    assert_eq!(a.status, 200);
    let before = h.mock.requests().len();
    // The request is counted when its body has ended, which may trail the client's last byte.
    let mut m = send(get(h.openai(), "/metrics")).await;
    for _ in 0..100 {
        if m.json()["counters"]["requests_total:anthropic:2xx"].is_u64() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        m = send(get(h.openai(), "/metrics")).await;
    }
    assert_eq!(m.status, 200);
    assert_eq!(m.headers["content-type"], "application/json");
    let v = m.json();
    assert_eq!(h.mock.requests().len(), before, "forwarded upstream");
    // What AWF's tests read: counters with requests_total, histograms.request_duration_ms with
    // a count, gauges.active_requests back to 0, uptime_seconds.
    let counters = v["counters"].as_object().unwrap();
    assert!(
        counters
            .iter()
            .any(|(k, n)| k == "requests_total:anthropic:2xx" && n.as_u64() >= Some(1)),
        "{v}"
    );
    let durations = v["histograms"]["request_duration_ms"].as_object().unwrap();
    assert!(durations["anthropic"]["count"].as_u64() >= Some(1), "{v}");
    assert!(v["gauges"]["uptime_seconds"].is_u64());
    assert!(v["gauges"]["active_requests"].is_object());
    assert_no_canary(&m.text());

    let other = send(get(h.anthropic(), "/metrics")).await;
    assert!(!other.text().contains("uptime_seconds"));
    assert_eq!(h.mock.requests().len(), before + 1);
    assert_eq!(h.mock.requests()[before].path_and_query, "/metrics");
}

/// `redact_upstream_host` (AWF's `AWF_SENSITIVE_OPENAI_TARGET`): the host is never printed:
/// not at start-up, not in `request_complete`/`upstream_auth_error`/`request_error`, not in a
/// 502's message (a TLS failure names the host it failed with), not in `/reflect`.
#[tokio::test]
async fn a_sensitive_upstream_host_is_never_printed() {
    let mut cfg = MockConfig::default();
    cfg.hosts.push("lb.sensitive-openai.test".into());
    let h = Harness::start_with(cfg, |m| {
        format!(
            "providers:
  openai: {{listen: 127.0.0.1:0, api_key: env:KP_TEST_KEY, upstream: 'https://LB.Sensitive-OpenAI.test/v1', upstream_address: '{m}', redact_upstream_host: true}}
  broken: {{preset: openai, listen: 127.0.0.1:0, api_key: env:KP_TEST_KEY, upstream: 'https://not-in-cert.sensitive-openai.test', upstream_address: '{m}', redact_upstream_host: true}}
"
        )
    })
    .await;
    let mut req = post(h.providers[0], "/v1/chat/completions", r#"{"model":"m"}"#);
    req.headers_mut()
        .insert("x-request-id", "sensitive-ok".parse().unwrap());
    assert_eq!(send(req).await.status, 200);
    assert_eq!(
        h.mock.requests()[0].sni.as_deref(),
        Some("lb.sensitive-openai.test")
    );
    let mut req = get(h.providers[0], "/v1/mock/status/401");
    req.headers_mut()
        .insert("x-request-id", "sensitive-401".parse().unwrap());
    assert_eq!(send(req).await.status, 401);
    let mut req = post(h.providers[1], "/v1/chat/completions", "{}");
    req.headers_mut()
        .insert("x-request-id", "sensitive-502".parse().unwrap());
    let bad = send(req).await;
    assert_eq!(bad.status, 502);
    let message = bad.json()["error"]["message"].as_str().unwrap().to_owned();
    assert!(message.contains("[REDACTED]"), "{message}");
    let reflect = send(get(h.providers[0], "/reflect")).await.text();
    assert!(
        reflect.contains(r#""upstream":"https://[REDACTED]/v1""#),
        "{reflect}"
    );

    // request_complete is written when the body has ended: wait for it.
    for _ in 0..100 {
        if !logged("request_complete", "sensitive-ok").is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let done = logged("request_complete", "sensitive-ok");
    assert_eq!(done[0]["upstream_host"], "[REDACTED]");
    assert_eq!(
        logged("upstream_auth_error", "sensitive-401")[0]["upstream_host"],
        "[REDACTED]"
    );
    let err = &logged("request_error", "sensitive-502")[0];
    assert_eq!(err["upstream_host"], "[REDACTED]");
    let all = logs();
    assert!(all.contains(r#""upstream":"https://[REDACTED]/v1""#));
    for text in [all.as_str(), message.as_str(), reflect.as_str()] {
        assert!(
            !text.to_ascii_lowercase().contains("sensitive-openai.test"),
            "the host leaked:\n{text}"
        );
    }
    assert_no_canary(&all);
}
