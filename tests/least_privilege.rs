//! Least privilege (DESIGN 2b): caller tokens, allow-lists with normalisation tricks, model
//! allow-lists, and token budgets charged from streamed and plain usage.

mod common;

use std::time::Duration;

use common::*;
use mock_upstream::MockConfig;

const AGENT_TOKEN: &str = "kp-caller-token-agent-1";
const CI_TOKEN: &str = "kp-caller-token-ci-2";

fn lookup(name: &str) -> Option<String> {
    match name {
        "AGENT_TOKEN" => Some(AGENT_TOKEN.into()),
        "CI_TOKEN" => Some(CI_TOKEN.into()),
        other => env_lookup(other),
    }
}

async fn start(yaml: impl FnOnce(std::net::SocketAddr) -> String) -> Harness {
    // Harness::start_with uses env_lookup; callers need their tokens too.
    init_logs();
    let mock = mock_upstream::MockUpstream::start(MockConfig::default())
        .await
        .unwrap();
    let ca = std::env::temp_dir().join(format!(
        "kp-lp-ca-{}-{}.pem",
        std::process::id(),
        mock.addr().port()
    ));
    std::fs::write(&ca, mock.ca_pem()).unwrap();
    let text = format!(
        "admin: {{listen: 127.0.0.1:0}}\ntls: {{extra_ca_file: '{}'}}\n{}",
        ca.display(),
        yaml(mock.addr())
    );
    let plan = llm_keyproxy::config::plan::Plan::from_yaml(&text, &lookup)
        .unwrap_or_else(|e| panic!("{e}"));
    Harness::serve_plan(mock, plan, ca).await
}

fn with_token(
    mut req: http::Request<http_body_util::Full<bytes::Bytes>>,
    header: &str,
    value: &str,
) -> http::Request<http_body_util::Full<bytes::Bytes>> {
    req.headers_mut().insert(
        http::HeaderName::from_bytes(header.as_bytes()).unwrap(),
        value.parse().unwrap(),
    );
    req
}

const CHAT: &str = r#"{"model":"gpt-4o-mini","messages":[]}"#;

#[tokio::test]
async fn caller_tokens_right_wrong_missing() {
    let h = start(|m| {
        format!(
            "callers:\n  agent: {{token: env:AGENT_TOKEN}}\n  ci: {{token: env:CI_TOKEN}}\nproviders:\n  openai: {{listen: 127.0.0.1:0, api_key: env:KP_TEST_KEY, upstream_address: '{m}'}}\n  anthropic: {{listen: 127.0.0.1:0, api_key: env:KP_TEST_KEY, upstream_address: '{m}'}}\n"
        )
    })
    .await;
    let ok = send(with_token(
        post(h.openai(), "/v1/chat/completions", CHAT),
        "authorization",
        &format!("Bearer {AGENT_TOKEN}"),
    ))
    .await;
    assert_eq!(ok.status, 200);
    let ok2 = send(with_token(
        post(
            h.anthropic(),
            "/v1/messages",
            r#"{"model":"m","max_tokens":1,"messages":[]}"#,
        ),
        "x-api-key",
        CI_TOKEN,
    ))
    .await;
    assert_eq!(ok2.status, 200);
    for (header, value) in [
        ("authorization", "Bearer kp-caller-token-agent-X".to_owned()),
        ("authorization", format!("Bearer {AGENT_TOKEN}x")),
        ("authorization", "Bearer ".to_owned()),
        ("x-api-key", "nope".to_owned()),
    ] {
        let a = send(with_token(
            post(h.openai(), "/v1/chat/completions", CHAT),
            header,
            &value,
        ))
        .await;
        assert_eq!(a.status, 401, "{header}: {value}");
        assert_eq!(a.json()["error"]["type"], "unauthorized_caller");
    }
    let a = send(post(h.openai(), "/v1/chat/completions", CHAT)).await;
    assert_eq!(a.status, 401, "missing token");
    let seen = h.mock.requests();
    assert_eq!(seen.len(), 2, "a refused caller reached the upstream");
    for r in &seen {
        for (_, v) in &r.headers {
            let v = String::from_utf8_lossy(v);
            assert!(
                !v.contains("kp-caller-token"),
                "the caller token reached the upstream: {v}"
            );
        }
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let logs = logs();
    assert!(logs.contains("\"caller\":\"agent\"") && logs.contains("\"caller\":\"ci\""));
    assert!(
        !logs.contains("kp-caller-token"),
        "a caller token was logged"
    );
}

#[tokio::test]
async fn allow_lists_and_normalisation_tricks() {
    let h = start(|m| {
        format!(
            "providers:\n  openai: {{listen: 127.0.0.1:0, api_key: env:KP_TEST_KEY, upstream_address: '{m}', allow: ['POST /v1/chat/completions', 'GET /v1/models', 'POST /v1/responses']}}\n"
        )
    })
    .await;
    let p = h.providers[0];
    assert_eq!(
        send(post(p, "/v1/chat/completions", CHAT)).await.status,
        200
    );
    assert_eq!(send(get(p, "/v1/models")).await.status, 200);
    assert_eq!(
        send(post(p, "/responses", r#"{"model":"m","input":"x"}"#))
            .await
            .status,
        403,
        "matching is on the path as sent"
    );
    for (method, path) in [
        ("GET", "/v1/files"),
        ("DELETE", "/v1/models"),
        ("GET", "/v1/chat/completions"),
        ("POST", "/v1/chat/completions/../../files"),
        ("POST", "/v1/chat/%2e%2e/%2e%2e/files"),
        ("POST", "/v1//chat/completions"),
        ("POST", "/V1/chat/completions"),
        ("POST", "/v1/chat/%63ompletions"),
        ("POST", "/v1/chat/completions/"),
        ("POST", "/v1/fine_tuning/jobs"),
    ] {
        let req = http::Request::builder()
            .method(method)
            .uri(format!("http://{p}{path}"))
            .body(http_body_util::Full::new(bytes::Bytes::from_static(
                CHAT.as_bytes(),
            )))
            .unwrap();
        let a = send(req).await;
        assert_eq!(a.status, 403, "{method} {path}");
        assert_eq!(a.json()["error"]["type"], "not_allowed");
    }
    assert_eq!(
        h.mock.requests().len(),
        2,
        "a refused path reached the upstream"
    );
}

#[tokio::test]
async fn model_allow_list_reads_the_body_only_when_configured() {
    let h = start(|m| {
        format!("providers:\n  openai: {{listen: 127.0.0.1:0, api_key: env:KP_TEST_KEY, upstream_address: '{m}', models: [gpt-4o-mini, 'gpt-5*']}}\n")
    })
    .await;
    let p = h.providers[0];
    assert_eq!(
        send(post(p, "/v1/chat/completions", CHAT)).await.status,
        200
    );
    assert_eq!(
        send(post(
            p,
            "/v1/chat/completions",
            r#"{"model":"gpt-5.1","messages":[]}"#
        ))
        .await
        .status,
        200
    );
    let a = send(post(
        p,
        "/v1/chat/completions",
        r#"{"model":"o3-pro","messages":[]}"#,
    ))
    .await;
    assert_eq!(
        (a.status, a.json()["error"]["type"].as_str()),
        (403, Some("not_allowed"))
    );
    assert_eq!(
        send(post(p, "/v1/chat/completions", "not json"))
            .await
            .status,
        403
    );
    assert_eq!(
        send(get(p, "/v1/models")).await.status,
        200,
        "no body, nothing to check"
    );
    let seen = h.mock.requests();
    assert_eq!(seen.len(), 3);
    // The buffered body is forwarded byte for byte.
    assert_eq!(seen[1].body, br#"{"model":"gpt-5.1","messages":[]}"#);
}

#[tokio::test]
async fn budgets_charge_streamed_and_plain_usage_and_refuse_when_spent() {
    // Each chat answer reports 11 input + N output tokens.
    let h = start(|m| {
        format!(
            "callers:\n  agent: {{token: env:AGENT_TOKEN, budget: {{tokens_total: 1000}}}}\nproviders:\n  openai: {{listen: 127.0.0.1:0, api_key: env:KP_TEST_KEY, upstream_address: '{m}', budget: {{tokens_per_hour: 40}}}}\n"
        )
    })
    .await;
    let p = h.providers[0];
    let auth = format!("Bearer {AGENT_TOKEN}");
    let mut req = with_token(
        post(p, "/v1/chat/completions", CHAT),
        "authorization",
        &auth,
    );
    req.headers_mut()
        .insert("x-mock-chunks", "4".parse().unwrap());
    assert_eq!(send(req).await.status, 200); // 15 tokens
    let stream = r#"{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true},"messages":[]}"#;
    let mut req = with_token(
        post(p, "/v1/chat/completions", stream),
        "authorization",
        &auth,
    );
    req.headers_mut()
        .insert("x-mock-chunks", "3".parse().unwrap());
    assert_eq!(send(req).await.status, 200); // 14 tokens: 29 spent, below 40
    tokio::time::sleep(Duration::from_millis(100)).await;
    let health = send(get(p, "/health")).await.json();
    assert_eq!(
        health["budgets"]["provider:openai"]["spent"]["last_hour"], 29,
        "{health}"
    );
    assert_eq!(health["budgets"]["caller:agent"]["spent"]["total"], 29);
    let mut req = with_token(
        post(p, "/v1/chat/completions", CHAT),
        "authorization",
        &auth,
    );
    req.headers_mut()
        .insert("x-mock-chunks", "5".parse().unwrap());
    assert_eq!(send(req).await.status, 200, "29 < 40: admitted"); // 16 more: 45
    tokio::time::sleep(Duration::from_millis(100)).await;
    let a = send(with_token(
        post(p, "/v1/chat/completions", CHAT),
        "authorization",
        &auth,
    ))
    .await;
    assert_eq!(a.status, 429);
    assert_eq!(a.json()["error"]["type"], "budget_exhausted");
    let retry: u64 = a.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=3600).contains(&retry), "{retry}");
    assert_eq!(h.mock.requests().len(), 3);
    let metrics = send(get(h.admin, "/metrics")).await.text();
    assert!(
        metrics.contains(
            r#"keyproxy_budget_spent_tokens{scope="provider",name="openai",window="hour"} 45"#
        ),
        "{metrics}"
    );
    assert!(metrics
        .contains(r#"keyproxy_rejections_total{provider="openai",reason="budget_exhausted"} 1"#));
}

#[tokio::test]
async fn concurrent_requests_racing_the_last_tokens_are_admitted_then_refused() {
    let h = start(|m| {
        format!("providers:\n  openai: {{listen: 127.0.0.1:0, api_key: env:KP_TEST_KEY, upstream_address: '{m}', budget: {{tokens_total: 10}}}}\n")
    })
    .await;
    let p = h.providers[0];
    // Spend below the limit admits: all of these race in before any usage is charged.
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let mut req = post(p, "/v1/chat/completions", CHAT);
        req.headers_mut()
            .insert("x-mock-gap-ms", "0".parse().unwrap());
        tasks.push(tokio::spawn(async move { send(req).await.status }));
    }
    let statuses: Vec<u16> = futures_join(tasks).await;
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 429),
        "{statuses:?}"
    );
    assert!(statuses.contains(&200));
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Once usage is charged the budget is spent for good (tokens_total has no reset).
    let a = send(post(p, "/v1/chat/completions", CHAT)).await;
    assert_eq!(a.status, 429);
    assert!(
        a.headers.get("retry-after").is_none(),
        "a total budget never resets"
    );
}

async fn futures_join(tasks: Vec<tokio::task::JoinHandle<u16>>) -> Vec<u16> {
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}
