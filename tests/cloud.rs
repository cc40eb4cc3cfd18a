//! Keyless cloud providers end to end (docs/cloud.md): Bedrock signed with static keys and
//! with credentials from GitHub OIDC -> AWS STS, event streams passed through and their usage
//! counted; Vertex AI with a service-account key and with workload identity federation; Azure
//! OpenAI with its key and with Entra ID; refresh before expiry, a failed refresh serving until
//! expiry and then 403; no secret or token in any output.
//!
//! The token services are the mock's (real TLS, recording what they received); botocore checks
//! the SigV4 signatures in tests/e2e/test_cloud.py.

mod common;
mod squid_support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http::{Method, Request};
use http_body_util::Full;
use llm_keyproxy::config::plan::Plan;
use mock_upstream::{decode_event_stream, CloudService, MockConfig, MockUpstream};

const REGION: &str = "us-east-1";
const BEDROCK_HOST: &str = "bedrock-runtime.us-east-1.amazonaws.com";
const AZURE_HOST: &str = "kpres.openai.azure.com";
/// Model id as Bedrock clients send it (`:` percent-encoded).
const MODEL_PATH: &str = "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0";

// Every secret a test hands the proxy carries a canary marker (`KPCANARY` / `4e5f6789`).
const AWS_ID: &str = "AKIAKPCANARY00000001";
const AWS_SECRET: &str = "wJalrKPCANARY0a1b2c3d4e5f6789/EXAMPLEKEY";
const AWS_SESSION: &str = "FwoGZXKPCANARYsession4e5f6789";
const REQUEST_TOKEN: &str = "ghs-KPCANARY-request-4e5f6789";

fn mock_config() -> MockConfig {
    let mut cfg = MockConfig {
        expected_key: Some(CANARY.to_owned()),
        aws_access_key_id: Some(AWS_ID.to_owned()),
        oidc_request_token: Some(REQUEST_TOKEN.to_owned()),
        ..MockConfig::default()
    };
    cfg.hosts.extend(
        [
            BEDROCK_HOST,
            AZURE_HOST,
            "us-central1-aiplatform.googleapis.com",
        ]
        .map(str::to_owned),
    );
    cfg
}

/// The environment the proxy reads: the canary secrets, and GitHub's OIDC request variables
/// pointing at the mock when `oidc` is set.
fn lookup(mock: &MockUpstream, oidc: bool) -> impl Fn(&str) -> Option<String> {
    let url = format!(
        "https://127.0.0.1:{}/oidc/token?api-version=2.0",
        mock.addr().port()
    );
    move |name: &str| match name {
        "KP_TEST_KEY" => Some(CANARY.to_owned()),
        "KP_AWS_ID" => Some(AWS_ID.to_owned()),
        "KP_AWS_SECRET" => Some(AWS_SECRET.to_owned()),
        "KP_AWS_SESSION" => Some(AWS_SESSION.to_owned()),
        "ACTIONS_ID_TOKEN_REQUEST_URL" if oidc => Some(url.clone()),
        "ACTIONS_ID_TOKEN_REQUEST_TOKEN" if oidc => Some(REQUEST_TOKEN.to_owned()),
        _ => None,
    }
}

/// Starts the mock and a proxy with one provider (`provider` is its YAML, given the mock's
/// base URL `https://127.0.0.1:PORT`).
async fn start(oidc: bool, provider: impl FnOnce(&str, &MockUpstream) -> String) -> Harness {
    start_mock(
        MockUpstream::start(mock_config()).await.unwrap(),
        oidc,
        provider,
    )
    .await
}

async fn start_mock(
    mock: MockUpstream,
    oidc: bool,
    provider: impl FnOnce(&str, &MockUpstream) -> String,
) -> Harness {
    start_mock_with(mock, oidc, "", provider).await
}

/// `start_mock` with `top` YAML (e.g. `upstream_proxy: ...`) before the providers.
async fn start_mock_with(
    mock: MockUpstream,
    oidc: bool,
    top: &str,
    provider: impl FnOnce(&str, &MockUpstream) -> String,
) -> Harness {
    init_logs();
    let ca_file = std::env::temp_dir().join(format!(
        "kp-cloud-ca-{}-{}.pem",
        std::process::id(),
        mock.addr().port()
    ));
    std::fs::write(&ca_file, mock.ca_pem()).unwrap();
    let base = format!("https://127.0.0.1:{}", mock.addr().port());
    let text = format!(
        "admin: {{listen: 127.0.0.1:0}}\ntls: {{roots: [webpki], extra_ca_file: '{}'}}\n{top}\nproviders:\n{}",
        ca_file.display(),
        provider(&base, &mock)
    );
    let plan =
        Plan::from_yaml(&text, &lookup(&mock, oidc)).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_no_secret(&plan.describe());
    Harness::serve_plan(mock, plan, ca_file).await
}

fn bedrock_static(_base: &str, mock: &MockUpstream) -> String {
    format!(
        "  bedrock:
    listen: 127.0.0.1:0
    region: {REGION}
    upstream_address: '{}'
    aws: {{access_key_id: env:KP_AWS_ID, secret_access_key: env:KP_AWS_SECRET, session_token: env:KP_AWS_SESSION}}
",
        mock.addr()
    )
}

fn bedrock_role(base: &str, mock: &MockUpstream) -> String {
    format!(
        "  bedrock:
    listen: 127.0.0.1:0
    region: {REGION}
    upstream_address: '{}'
    aws:
      role_arn: arn:aws:iam::123456789012:role/agent
      web_identity: github_actions
      sts_endpoint: {base}/sts/
",
        mock.addr()
    )
}

/// No canary-marked secret in `text`.
fn assert_no_secret(text: &str) {
    assert_no_canary(text);
    for s in [AWS_ID, AWS_SECRET, AWS_SESSION, REQUEST_TOKEN] {
        assert!(!text.contains(s), "a secret leaked:\n{text}");
    }
}

/// No credential the mock issued, and none the test handed the proxy, in the logs or metrics.
async fn assert_nothing_leaked(h: &Harness) {
    let mut secrets: Vec<String> = Vec::new();
    for c in h.mock.aws_issued_credentials() {
        secrets.extend([c.access_key_id, c.secret_access_key, c.session_token]);
    }
    // Tokens that crossed the wire: bearer tokens the provider routes received, and the OIDC
    // tokens and assertions posted to the token services.
    for r in h.mock.requests() {
        if let Some(a) = r.header("authorization") {
            if let Some(t) = a.strip_prefix("Bearer ") {
                secrets.push(t.to_owned());
            }
        }
        let body = String::from_utf8_lossy(&r.body).into_owned();
        for field in [
            "WebIdentityToken",
            "assertion",
            "subject_token",
            "client_assertion",
        ] {
            for pair in body.split('&') {
                if let Some(v) = pair.strip_prefix(&format!("{field}=")) {
                    secrets.push(v.to_owned());
                }
            }
        }
    }
    let out = format!("{}\n{}", logs(), metrics_text(h.admin).await);
    assert_no_secret(&out);
    for s in secrets.iter().filter(|s| s.len() >= 8) {
        assert!(
            !out.contains(s.as_str()),
            "an issued credential leaked into the logs or metrics"
        );
    }
}

fn invoke(addr: std::net::SocketAddr, action: &str, chunks: usize) -> Request<Full<Bytes>> {
    let body = r#"{"anthropic_version":"bedrock-2023-05-31","max_tokens":64,"messages":[{"role":"user","content":"hi"}]}"#;
    Request::builder()
        .method(Method::POST)
        .uri(format!("http://{addr}{MODEL_PATH}/{action}"))
        .header("content-type", "application/json")
        .header("x-mock-chunks", chunks.to_string())
        // What an agent may send: its own (fake) credentials, all dropped.
        .header("authorization", "Bearer sk-agent-placeholder")
        .header("x-amz-security-token", "agent-session-placeholder")
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

/// The one provider's state on `/health` (its port is the first, so the AWF aggregate):
/// configured, and the credential error when not.
async fn health(h: &Harness) -> (bool, Option<String>) {
    let v = send(get(h.providers[0], "/health")).await.json();
    let (name, ok) = v["providers"].as_object().unwrap().iter().next().unwrap();
    let why = v["credential_errors"][name].as_str().map(str::to_owned);
    (ok.as_bool().unwrap(), why)
}

/// Waits until the provider reports a valid credential on `/health`.
async fn wait_credential(h: &Harness) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (ok, why) = health(h).await;
        if ok {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no credential after 10 s: {why:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A request id no other test uses (the tests of this file share one log).
fn request_id() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("cloud-{}-{n}", std::process::id())
}

/// The `request_complete` line of the request sent with `id`.
fn complete_line(id: &str) -> serde_json::Value {
    let needle = format!("\"request_id\":\"{id}\"");
    logs()
        .lines()
        .filter(|l| l.contains(r#""event":"request_complete""#))
        .find(|l| l.contains(&needle))
        .map(|l| serde_json::from_str(l).unwrap())
        .unwrap_or_else(|| panic!("no request_complete line for {id}"))
}

/// `req` with a fresh request id, and the id.
fn tagged(mut req: Request<Full<Bytes>>) -> (Request<Full<Bytes>>, String) {
    let id = request_id();
    req.headers_mut()
        .insert("x-request-id", id.parse().unwrap());
    (req, id)
}

/// Completion lines are logged when the body ends, just after the client has it.
async fn settled() {
    tokio::time::sleep(Duration::from_millis(100)).await;
}

#[tokio::test]
async fn bedrock_static_keys_sign_every_request() {
    let h = start(false, bedrock_static).await;
    let (req, id) = tagged(invoke(h.providers[0], "invoke", 3));
    let a = send(req).await;
    assert_eq!(a.status, 200, "{}", a.text());
    let (input, output) = mock_upstream::bedrock_usage(3);
    assert_eq!(a.json()["usage"]["output_tokens"], output);

    let reqs = h.mock.requests();
    let r = reqs.last().unwrap();
    // The path exactly as the client sent it (the signature covers it), on Bedrock's host.
    assert_eq!(r.path_and_query, format!("{MODEL_PATH}/invoke"));
    assert_eq!(r.authority.as_deref(), Some(BEDROCK_HOST));
    let auth = r.header("authorization").unwrap();
    let date = &r.header("x-amz-date").unwrap()[..8];
    assert!(
        auth.starts_with(&format!(
            "AWS4-HMAC-SHA256 Credential={AWS_ID}/{date}/{REGION}/bedrock/aws4_request, SignedHeaders=content-type;host;x-amz-date;x-amz-security-token, Signature="
        )),
        "{auth}"
    );
    // The agent's credentials are gone; the session token is the configured one.
    assert_eq!(
        r.header_all("x-amz-security-token"),
        vec![AWS_SESSION.to_owned()]
    );
    assert_eq!(r.header_all("authorization").len(), 1);

    settled().await;
    let line = complete_line(&id);
    assert_eq!(line["provider"], "bedrock");
    assert_eq!(line["input_tokens"], input);
    assert_eq!(line["output_tokens"], output);
    assert_nothing_leaked(&h).await;
}

#[tokio::test]
async fn bedrock_event_streams_pass_frame_by_frame_and_are_counted() {
    let h = start(false, bedrock_static).await;
    let chunks = 4;
    let (input, output) = mock_upstream::bedrock_usage(chunks);
    for action in ["invoke-with-response-stream", "converse-stream"] {
        let (mut req, id) = tagged(invoke(h.providers[0], action, chunks));
        req.headers_mut()
            .insert("x-mock-gap-ms", "150".parse().unwrap());
        let resp = client().request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(
            resp.headers()["content-type"],
            "application/vnd.amazon.eventstream"
        );
        let frames = frames(resp, Duration::from_secs(20)).await.unwrap();
        let all: Vec<u8> = frames.iter().flat_map(|(_, b)| b.to_vec()).collect();
        let messages = decode_event_stream(&all).unwrap();
        assert!(
            messages.len() > chunks,
            "{action}: {} messages",
            messages.len()
        );
        // Streamed, not buffered: the first message reached the client well before the last
        // was sent (the mock waits 150 ms between them).
        let spread = frames.last().unwrap().0 - frames[0].0;
        assert!(
            spread >= Duration::from_millis(300),
            "{action}: all frames within {spread:?}"
        );
        settled().await;
        let line = complete_line(&id);
        assert_eq!(line["path"], format!("{MODEL_PATH}/{action}"));
        assert_eq!(
            (
                line["input_tokens"].as_u64(),
                line["output_tokens"].as_u64()
            ),
            (Some(input as u64), Some(output as u64)),
            "{action}: {line}"
        );
        assert_eq!(line["streamed"], true);
    }
    let m = metrics_text(h.admin).await;
    assert!(
        metric_value(
            &m,
            r#"keyproxy_tokens_total{provider="bedrock",kind="output"}"#
        ) >= 2.0 * output as f64
    );
    assert_nothing_leaked(&h).await;
}

/// Bedrock keyless (GitHub OIDC -> STS) with credentials that live 6 s, the first one in.
async fn keyless_bedrock_6s() -> Harness {
    let mock = MockUpstream::start(mock_config()).await.unwrap();
    mock.set_token_lifetime(Duration::from_secs(6));
    let h = start_mock(mock, true, bedrock_role).await;
    wait_credential(&h).await;
    h
}

#[tokio::test]
async fn bedrock_keyless_from_github_oidc_refreshes_before_expiry() {
    let h = keyless_bedrock_6s().await;
    assert_eq!(h.mock.issued_tokens(CloudService::AwsSts), 1);
    assert_eq!(h.mock.issued_tokens(CloudService::Oidc), 1);
    // The OIDC token was asked for AWS's audience with the job's request token.
    let oidc = h
        .mock
        .requests()
        .into_iter()
        .find(|r| r.path_and_query.starts_with("/oidc/token"))
        .unwrap();
    assert!(
        oidc.path_and_query.ends_with("&audience=sts.amazonaws.com"),
        "{}",
        oidc.path_and_query
    );

    // Requests every 250 ms across two refreshes: none fails, none waits on a refresh.
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(9) {
        let a = send(invoke(h.providers[0], "invoke", 1)).await;
        assert_eq!(a.status, 200, "after {:?}: {}", start.elapsed(), a.text());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        h.mock.issued_tokens(CloudService::AwsSts) >= 2,
        "no refresh before expiry"
    );
    // Each request was signed with a credential the mock had issued and not yet expired
    // (the mock refuses others), carrying its session token.
    let issued = h.mock.aws_issued_credentials();
    let r = h
        .mock
        .requests()
        .into_iter()
        .rev()
        .find(|r| r.path_and_query.ends_with("/invoke"))
        .unwrap();
    let token = r.header("x-amz-security-token").unwrap();
    assert!(issued.iter().any(|c| c.session_token == token));
    let m = metrics_text(h.admin).await;
    assert!(
        metric_value(
            &m,
            r#"keyproxy_credential_refreshes_total{provider="bedrock",result="ok"}"#
        ) >= 2.0
    );
    assert!(
        metric_value(
            &m,
            r#"keyproxy_credential_expiry_timestamp_seconds{provider="bedrock"}"#
        ) > 1.7e9
    );
    assert!(logs().contains(r#""event":"credential_refreshed""#));
    assert_nothing_leaked(&h).await;
}

#[tokio::test]
async fn a_failed_refresh_serves_until_expiry_then_403_then_recovers() {
    let h = keyless_bedrock_6s().await;
    let got_at = Instant::now();
    h.mock.set_token_service_failure(true);
    // Still served while the credential lasts (6 s, refresh tried from 4 s on).
    while got_at.elapsed() < Duration::from_secs(5) {
        let a = send(invoke(h.providers[0], "invoke", 1)).await;
        assert_eq!(a.status, 200, "after {:?}: {}", got_at.elapsed(), a.text());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Then 403 provider_not_configured, saying why.
    let deadline = Instant::now() + Duration::from_secs(5);
    let refused = loop {
        let a = send(invoke(h.providers[0], "invoke", 1)).await;
        if a.status == 403 {
            break a;
        }
        assert_eq!(a.status, 200);
        assert!(
            Instant::now() < deadline,
            "still served 10 s after the credential expired"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let err = &refused.json()["error"];
    assert_eq!(err["type"], "provider_not_configured");
    assert!(
        err["message"].as_str().unwrap().contains("expired"),
        "{err}"
    );
    let (ok, why) = health(&h).await;
    assert!(!ok);
    assert!(
        why.as_deref().unwrap_or_default().contains("expired"),
        "{why:?}"
    );
    let ready = send(get(h.admin, "/ready")).await;
    assert_eq!(
        ready.status,
        200,
        "the process stays ready: {}",
        ready.text()
    );
    let missing = ready.json()["credentials_missing"]["bedrock"].clone();
    assert!(
        missing.as_str().unwrap_or_default().contains("expired"),
        "{}",
        ready.text()
    );
    let m = metrics_text(h.admin).await;
    assert!(
        metric_value(
            &m,
            r#"keyproxy_credential_refreshes_total{provider="bedrock",result="failed"}"#
        ) >= 1.0
    );
    assert_eq!(
        metric_value(
            &m,
            r#"keyproxy_credential_expiry_timestamp_seconds{provider="bedrock"}"#
        ),
        0.0
    );
    let log = logs();
    assert!(log.contains(r#""event":"credential_refresh_failed""#));
    assert!(log.contains(r#""event":"credential_expired""#));

    // The token service is back: within the backoff, requests are served again.
    h.mock.set_token_service_failure(false);
    let deadline = Instant::now() + Duration::from_secs(70);
    loop {
        let a = send(invoke(h.providers[0], "invoke", 1)).await;
        if a.status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "not served again: {}", a.text());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_nothing_leaked(&h).await;
}

#[tokio::test]
async fn keyless_without_an_oidc_token_is_not_configured() {
    let h = start(false, bedrock_role).await;
    let a = send(invoke(h.providers[0], "invoke", 1)).await;
    assert_eq!(a.status, 403, "{}", a.text());
    let msg = a.json()["error"]["message"].as_str().unwrap().to_owned();
    assert!(msg.contains("id-token: write"), "{msg}");
    // Only a restart fixes it: not retryable, and nothing is tried in the background.
    assert_eq!(a.json()["error"]["retryable"], false);
    assert!(h
        .mock
        .requests()
        .iter()
        .all(|r| !r.path_and_query.contains("/model/")));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(h.mock.issued_tokens(CloudService::Oidc), 0);
    let m = metrics_text(h.admin).await;
    assert!(
        !m.contains(r#"keyproxy_credential_refreshes_total{provider="bedrock""#),
        "{m}"
    );
}

fn vertex_path() -> &'static str {
    "/v1/projects/mock-project/locations/us-central1/publishers/google/models/gemini-2.0-flash:generateContent"
}

async fn vertex_call(h: &Harness) -> Answer {
    let body = r#"{"contents":[{"role":"user","parts":[{"text":"hi"}]}]}"#;
    let mut req = post(h.providers[0], vertex_path(), body);
    req.headers_mut()
        .insert("x-goog-api-key", "agent-placeholder".parse().unwrap());
    send(req).await
}

#[tokio::test]
async fn vertex_service_account_key() {
    let mock = MockUpstream::start(mock_config()).await.unwrap();
    let key_file: PathBuf = std::env::temp_dir().join(format!(
        "kp-sa-{}-{}.json",
        std::process::id(),
        mock.addr().port()
    ));
    let token_uri = format!("https://127.0.0.1:{}/google/token", mock.addr().port());
    let sa = mock_upstream::google_service_account_json(&token_uri);
    std::fs::write(&key_file, &sa).unwrap();
    let h = start_mock(mock, false, |_, mock| {
        format!(
            "  vertex:\n    listen: 127.0.0.1:0\n    region: us-central1\n    upstream_address: '{}'\n    google: {{service_account_key: 'file:{}'}}\n",
            mock.addr(),
            key_file.display()
        )
    })
    .await;
    wait_credential(&h).await;
    let a = vertex_call(&h).await;
    assert_eq!(a.status, 200, "{}", a.text());
    let r = h
        .mock
        .requests()
        .into_iter()
        .rev()
        .find(|r| r.path_and_query == vertex_path())
        .unwrap();
    assert_eq!(
        r.authority.as_deref(),
        Some("us-central1-aiplatform.googleapis.com")
    );
    assert!(r.header("authorization").unwrap().starts_with("Bearer "));
    assert!(r.header("x-goog-api-key").is_none());
    assert_eq!(h.mock.issued_tokens(CloudService::GoogleToken), 1);
    // The private key itself never shows.
    let v: serde_json::Value = serde_json::from_str(&sa).unwrap();
    let pem = v["private_key"].as_str().unwrap();
    let body_line = pem.lines().nth(3).unwrap();
    assert!(!logs().contains(body_line));
    assert_nothing_leaked(&h).await;
}

#[tokio::test]
async fn vertex_workload_identity_federation_with_impersonation() {
    let h = start(true, |base, mock| {
        format!(
            "  vertex:
    listen: 127.0.0.1:0
    upstream_address: '{}'
    google:
      workload_identity_provider: //iam.googleapis.com/projects/123/locations/global/workloadIdentityPools/pool/providers/github
      service_account: {}
      sts_endpoint: {base}/google/sts/v1/token
      iam_endpoint: {base}/google/iam
",
            mock.addr(),
            mock_upstream::SA_EMAIL
        )
    })
    .await;
    wait_credential(&h).await;
    let a = vertex_call(&h).await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(h.mock.issued_tokens(CloudService::GoogleSts), 1);
    assert_eq!(h.mock.issued_tokens(CloudService::GoogleIam), 1);
    assert_nothing_leaked(&h).await;
}

fn azure_path() -> &'static str {
    "/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21"
}

async fn azure_call(h: &Harness, stream: bool) -> (Answer, String) {
    let body = match stream {
        true => r#"{"messages":[{"role":"user","content":"hi"}],"stream":true}"#,
        false => r#"{"messages":[{"role":"user","content":"hi"}]}"#,
    };
    let (mut req, id) = tagged(post(h.providers[0], azure_path(), body));
    req.headers_mut()
        .insert("api-key", "agent-placeholder".parse().unwrap());
    (send(req).await, id)
}

#[tokio::test]
async fn azure_openai_key_keeps_api_version() {
    let h = start(false, |_, mock| {
        format!(
            "  azure:\n    preset: azure-openai\n    listen: 127.0.0.1:0\n    upstream: https://{AZURE_HOST}\n    upstream_address: '{}'\n    api_key: env:KP_TEST_KEY\n",
            mock.addr()
        )
    })
    .await;
    for stream in [false, true] {
        let (a, id) = azure_call(&h, stream).await;
        assert_eq!(a.status, 200, "{}", a.text());
        let r = h.mock.requests().pop().unwrap();
        assert_eq!(r.path_and_query, azure_path());
        assert_eq!(r.header_all("api-key"), vec![CANARY.to_owned()]);
        assert!(r.header("authorization").is_none());
        settled().await;
        let line = complete_line(&id);
        assert_eq!(line["upstream_host"], AZURE_HOST);
        assert_eq!(line["streamed"], stream, "{line}");
        // Streams carry usage only when the client asks (`stream_options.include_usage`).
        if !stream {
            assert!(
                line["output_tokens"].as_u64().is_some_and(|n| n > 0),
                "{line}"
            );
        }
    }
    // A request without api-version reaches Azure as sent, which refuses it.
    let a = send(post(
        h.providers[0],
        "/openai/deployments/gpt-4o/chat/completions",
        "{}",
    ))
    .await;
    assert_eq!(a.status, 404, "{}", a.text());
    assert_nothing_leaked(&h).await;
}

#[tokio::test]
async fn azure_openai_entra_id_federated() {
    let h = start(true, |base, mock| {
        format!(
            "  azure:
    preset: azure-openai
    listen: 127.0.0.1:0
    upstream: https://{AZURE_HOST}
    upstream_address: '{}'
    azure: {{tenant_id: kp-tenant, client_id: kp-app, authority: '{base}/entra'}}
",
            mock.addr()
        )
    })
    .await;
    wait_credential(&h).await;
    let (a, _) = azure_call(&h, false).await;
    assert_eq!(a.status, 200, "{}", a.text());
    let r = h.mock.requests().pop().unwrap();
    assert!(r.header("authorization").unwrap().starts_with("Bearer "));
    assert!(r.header("api-key").is_none());
    assert_eq!(h.mock.issued_tokens(CloudService::Entra), 1);
    let oidc = h
        .mock
        .requests()
        .into_iter()
        .find(|r| r.path_and_query.starts_with("/oidc/token"))
        .unwrap();
    assert!(
        oidc.path_and_query
            .ends_with("&audience=api%3A%2F%2FAzureADTokenExchange"),
        "{}",
        oidc.path_and_query
    );
    assert_nothing_leaked(&h).await;
}

#[test]
fn cloud_config_errors_name_what_to_change() {
    let env = |_: &str| None;
    let check = |yaml: &str, path: &str, words: &str| {
        let errors = Plan::from_yaml(yaml, &env).unwrap_err().to_string();
        assert!(errors.contains(path) && errors.contains(words), "{errors}");
    };
    check(
        "providers:\n  bedrock: {listen: 127.0.0.1:0, aws: {role_arn: 'arn:aws:iam::1:role/a'}}\n",
        "providers.bedrock.region",
        "region: us-east-1",
    );
    check(
        "providers:\n  bedrock: {listen: 127.0.0.1:0, region: us-east-1, api_key: env:X}\n",
        "providers.bedrock.api_key",
        "one credential source",
    );
    check(
        "providers:\n  openai: {api_key: env:X, aws: {role_arn: 'arn:aws:iam::1:role/a'}}\n",
        "providers.openai.aws",
        "bedrock preset",
    );
    check("providers:\n  bedrock: {listen: 127.0.0.1:0, region: us-east-1, aws: {access_key_id: 'AKIA123'}}\n", "providers.bedrock.aws.access_key_id", "env:NAME");
    check("providers:\n  bedrock: {listen: 127.0.0.1:0, region: us-east-1, aws: {role_arn: 'arn:aws:iam::1:role/a', web_identity: 'token'}}\n", "providers.bedrock.aws.web_identity", "file:");
    check(
        "providers:\n  az: {preset: azure-openai, listen: 127.0.0.1:0, api_key: env:X}\n",
        "providers.az.upstream",
        "openai.azure.com",
    );
    check(
        "providers:\n  vertex: {google: {workload_identity_provider: 'locations/global/pools/1'}}\n",
        "providers.vertex.google.workload_identity_provider",
        "//iam.googleapis.com/",
    );
}

/// A service-account key that is not there: the reason names it (never a parse error about
/// a key that was never read), and only a restart fixes it.
#[tokio::test]
async fn vertex_missing_key_file_is_named() {
    let h = start(false, |_, mock| {
        format!(
            "  vertex:\n    listen: 127.0.0.1:0\n    upstream_address: '{}'\n    google: {{service_account_key: 'env:KP_SA_UNSET'}}\n",
            mock.addr()
        )
    })
    .await;
    let a = vertex_call(&h).await;
    assert_eq!(a.status, 403, "{}", a.text());
    let err = &a.json()["error"];
    assert!(
        err["message"].as_str().unwrap().contains("KP_SA_UNSET"),
        "{err}"
    );
    assert!(!err["message"].as_str().unwrap().contains("PKCS"), "{err}");
    assert_eq!(err["retryable"], false);
    assert_eq!(h.mock.issued_tokens(CloudService::GoogleToken), 0);
}

/// Before the first credential arrives the refusal is retryable (the SDKs retry), and says so.
#[tokio::test]
async fn the_first_credential_on_its_way_is_retryable() {
    let mock = MockUpstream::start(mock_config()).await.unwrap();
    mock.set_token_service_failure(true);
    let h = start_mock(mock, true, bedrock_role).await;
    let a = send(invoke(h.providers[0], "invoke", 1)).await;
    assert_eq!(a.status, 403, "{}", a.text());
    let err = &a.json()["error"];
    assert_eq!(err["type"], "provider_not_configured");
    assert_eq!(err["retryable"], true, "{err}");
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("in the background"),
        "{err}"
    );
    // The token service comes back: served within the (shorter) backoff without a credential.
    h.mock.set_token_service_failure(false);
    let deadline = Instant::now() + Duration::from_secs(15);
    while send(invoke(h.providers[0], "invoke", 1)).await.status != 200 {
        assert!(
            Instant::now() < deadline,
            "not served 15 s after the token service came back"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_nothing_leaked(&h).await;
}

/// The token services are reached through the provider's egress, as in AWF where Squid is the
/// only way out: with Squid refusing CONNECT to them there is no credential (the reason names
/// the refusal); with Squid allowing it, a credential and a signed request.
#[tokio::test]
async fn token_services_are_reached_through_the_same_egress() {
    use squid_support::{Policy, Squid};
    let Some(bin) = squid_support::squid_or_skip() else {
        return;
    };
    for policy in [Policy::DenyMockPort, Policy::Allow] {
        let mock = MockUpstream::start(mock_config()).await.unwrap();
        let squid = Squid::start(&bin, mock.addr().port(), policy);
        let top = format!("upstream_proxy: {}", squid.url());
        let h = start_mock_with(mock, true, &top, bedrock_role).await;
        if policy == Policy::Allow {
            wait_credential(&h).await;
            let a = send(invoke(h.providers[0], "invoke", 1)).await;
            assert_eq!(a.status, 200, "{}", a.text());
            assert_nothing_leaked(&h).await;
            continue;
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        let why = loop {
            if let (false, Some(why)) = health(&h).await {
                if why.contains("refused CONNECT") {
                    break why;
                }
            }
            assert!(
                Instant::now() < deadline,
                "no refusal seen: {}",
                squid.diagnostics()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert!(why.contains("403"), "{why}");
        assert_eq!(h.mock.issued_tokens(CloudService::Oidc), 0);
    }
}

/// A web identity token file (Kubernetes projected tokens, `AWS_WEB_IDENTITY_TOKEN_FILE`),
/// read again at every refresh.
#[tokio::test]
async fn bedrock_keyless_from_a_web_identity_token_file() {
    use base64::Engine as _;
    let b64 = |v: serde_json::Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    let jwt = format!(
        "{}.{}.c2ln",
        b64(serde_json::json!({"alg": "RS256", "typ": "JWT"})),
        b64(
            serde_json::json!({"iss": "https://kubernetes.default.svc", "aud": "sts.amazonaws.com", "sub": "system:serviceaccount:agents:agent", "exp": exp})
        )
    );
    let file = std::env::temp_dir().join(format!("kp-wit-{}.jwt", std::process::id()));
    std::fs::write(&file, format!("{jwt}\n")).unwrap();
    let h = start(false, |base, mock| {
        format!(
            "  bedrock:\n    listen: 127.0.0.1:0\n    region: {REGION}\n    upstream_address: '{}'\n    aws: {{role_arn: 'arn:aws:iam::123456789012:role/agent', web_identity: 'file:{}', sts_endpoint: '{base}/sts/'}}\n",
            mock.addr(),
            file.display()
        )
    })
    .await;
    wait_credential(&h).await;
    let a = send(invoke(h.providers[0], "invoke", 1)).await;
    assert_eq!(a.status, 200, "{}", a.text());
    // The token went to STS as read from the file (trimmed), never to a log.
    let sts = h
        .mock
        .requests()
        .into_iter()
        .find(|r| r.path_and_query == "/sts/")
        .unwrap();
    assert!(String::from_utf8_lossy(&sts.body).contains(&format!("WebIdentityToken={jwt}")));
    assert!(!logs().contains(&jwt));
    assert_eq!(h.mock.issued_tokens(CloudService::Oidc), 0);
    assert_nothing_leaked(&h).await;
}
