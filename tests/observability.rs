//! Observability: `/metrics` counters after a known mix of requests, token usage read from
//! every supported format (plain and gzip, streamed and not, abandoned), the usage file, and
//! the stream latency with usage parsing on and off.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use http_body_util::BodyExt;
use mock_upstream::MockConfig;

fn providers(mock: std::net::SocketAddr, usage: &std::path::Path, token_usage: bool) -> String {
    format!(
        "observability: {{token_usage: {token_usage}{}}}
limits: {{workers: 1}}
providers:
  openai: {{listen: 127.0.0.1:0, api_key: env:KP_TEST_KEY, upstream_address: '{mock}'}}
  anthropic: {{listen: 127.0.0.1:0, api_key: env:KP_TEST_KEY, upstream_address: '{mock}'}}
  gemini: {{listen: 127.0.0.1:0, api_key: env:KP_TEST_KEY, upstream_address: '{mock}'}}
",
        if token_usage {
            format!(", usage_file: '{}'", usage.display())
        } else {
            String::new()
        }
    )
}

/// Reads the value of one sample line `name{labels} value` from the exposition.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0.0)
}

struct Case {
    id: &'static str,
    provider: usize,
    path: &'static str,
    body: &'static str,
    chunks: u64,
    gzip: bool,
    /// Expected (input, output); None when the response declares no usage.
    expect: Option<(u64, u64)>,
}

const CHAT: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#;
const CHAT_STREAM_USAGE: &str = r#"{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true},"messages":[]}"#;
const CHAT_STREAM: &str = r#"{"model":"gpt-4o-mini","stream":true,"messages":[]}"#;
const RESP: &str = r#"{"model":"gpt-5","input":"hi"}"#;
const RESP_STREAM: &str = r#"{"model":"gpt-5","input":"hi","stream":true}"#;
const MSG: &str =
    r#"{"model":"claude-x","max_tokens":9,"messages":[{"role":"user","content":"hi"}]}"#;
const MSG_STREAM: &str = r#"{"model":"claude-x","max_tokens":9,"stream":true,"messages":[]}"#;
const GEM: &str = r#"{"contents":[{"parts":[{"text":"hi"}]}]}"#;

/// (id, provider index, path, body, chunks, expected (input, output)).
type BaseCase = (
    &'static str,
    usize,
    &'static str,
    &'static str,
    u64,
    Option<(u64, u64)>,
);

fn cases() -> Vec<Case> {
    let mut out = Vec::new();
    let base: [BaseCase; 8] = [
        ("chat", 0, "/v1/chat/completions", CHAT, 3, Some((11, 3))),
        (
            "chat-stream-usage",
            0,
            "/v1/chat/completions",
            CHAT_STREAM_USAGE,
            4,
            Some((11, 4)),
        ),
        // No stream_options: the proxy adds include_usage (docs/design.md §5.4), so counted.
        (
            "chat-stream",
            0,
            "/v1/chat/completions",
            CHAT_STREAM,
            2,
            Some((11, 2)),
        ),
        ("responses", 0, "/v1/responses", RESP, 6, Some((11, 6))),
        (
            "responses-stream",
            0,
            "/v1/responses",
            RESP_STREAM,
            7,
            Some((11, 7)),
        ),
        ("messages", 1, "/v1/messages", MSG, 8, Some((11, 8))),
        (
            "messages-stream",
            1,
            "/v1/messages",
            MSG_STREAM,
            9,
            Some((11, 9)),
        ),
        (
            "gemini",
            2,
            "/v1beta/models/gemini-2.0-flash:generateContent",
            GEM,
            10,
            Some((11, 10)),
        ),
    ];
    for gzip in [false, true] {
        for (id, provider, path, body, chunks, expect) in base {
            let id: &'static str =
                Box::leak(format!("{id}{}", if gzip { "-gz" } else { "" }).into_boxed_str());
            out.push(Case {
                id,
                provider,
                path,
                body,
                chunks,
                gzip,
                expect,
            });
        }
    }
    out.push(Case {
        id: "gemini-sse",
        provider: 2,
        path: "/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse",
        body: GEM,
        chunks: 4,
        gzip: false,
        expect: Some((11, 4)),
    });
    out
}

#[tokio::test]
async fn token_usage_from_every_format_and_metrics_match() {
    let dir = std::env::temp_dir().join(format!("kp-obs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let usage_path = dir.join("usage.jsonl");
    let up = usage_path.clone();
    let mut h = Harness::start_with(
        MockConfig {
            sse_gap: Duration::from_millis(2),
            ..MockConfig::default()
        },
        move |m| providers(m, &up, true),
    )
    .await;
    let cases = cases();
    let mut per_provider = [0u64; 3];
    for c in &cases {
        let mut req = post(h.providers[c.provider], c.path, c.body);
        let hdrs = req.headers_mut();
        hdrs.insert("x-request-id", c.id.parse().unwrap());
        hdrs.insert("x-mock-chunks", c.chunks.to_string().parse().unwrap());
        if c.gzip {
            hdrs.insert("accept-encoding", "gzip".parse().unwrap());
        }
        let a = send(req).await;
        assert_eq!(a.status, 200, "{}: {}", c.id, a.text());
        assert_eq!(
            a.headers.get("content-encoding").is_some(),
            c.gzip,
            "{}",
            c.id
        );
        per_provider[c.provider] += 1;
    }
    // A known mix of refusals.
    assert_eq!(
        raw(
            h.openai(),
            b"GET http://x/ HTTP/1.1\r\nHost: x\r\n\r\n",
            Duration::from_secs(2)
        )
        .await[..12]
            .to_string(),
        "HTTP/1.1 400"
    );
    let text = String::from_utf8(
        client()
            .request(get(h.admin, "/metrics"))
            .await
            .unwrap()
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap();
    // Streams end a moment after the client read them; wait for the tallies to settle.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let text2 = send(get(h.admin, "/metrics")).await.text();
    let text = if text2.len() >= text.len() {
        text2
    } else {
        text
    };

    let names = ["openai", "anthropic", "gemini"];
    for (i, name) in names.iter().enumerate() {
        let got = sample(
            &text,
            &format!("keyproxy_requests_total{{provider=\"{name}\",status=\"200\"}}"),
        );
        assert_eq!(got as u64, per_provider[i], "{name} 200s\n{text}");
        let active = sample(
            &text,
            &format!("keyproxy_active_requests{{provider=\"{name}\"}}"),
        );
        assert_eq!(active, 0.0, "{name} active requests");
    }
    assert_eq!(
        sample(
            &text,
            r#"keyproxy_requests_total{provider="openai",status="400"}"#
        ),
        1.0
    );
    assert_eq!(
        sample(
            &text,
            r#"keyproxy_rejections_total{provider="openai",reason="invalid_request"}"#
        ),
        1.0
    );
    let mut want: HashMap<(usize, &str), u64> = HashMap::new();
    for c in &cases {
        if let Some((i, o)) = c.expect {
            *want.entry((c.provider, "input")).or_default() += i;
            *want.entry((c.provider, "output")).or_default() += o;
        }
    }
    for ((p, kind), n) in &want {
        let got = sample(
            &text,
            &format!(
                "keyproxy_tokens_total{{provider=\"{}\",kind=\"{kind}\"}}",
                names[*p]
            ),
        );
        assert_eq!(got as u64, *n, "{} {kind}\n{text}", names[*p]);
    }
    assert!(
        text.contains("keyproxy_upstream_connections{provider=\"openai\",protocol=\"h2\"} 1"),
        "{text}"
    );
    assert!(text.contains("keyproxy_build_info{version="));
    assert_no_canary(&text);

    // The usage file: flushed on shutdown.
    h.shutdown();
    let task = h.task.take().unwrap();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let usage = std::fs::read_to_string(&usage_path).unwrap();
    assert_no_canary(&usage);
    let lines: HashMap<String, serde_json::Value> = usage
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .map(|v| (v["request_id"].as_str().unwrap().to_owned(), v))
        .collect();
    for c in &cases {
        let line = lines
            .get(c.id)
            .unwrap_or_else(|| panic!("no usage line for {}\n{usage}", c.id));
        match c.expect {
            Some((i, o)) => {
                assert_eq!(
                    (
                        line["input_tokens"].as_u64(),
                        line["output_tokens"].as_u64()
                    ),
                    (Some(i), Some(o)),
                    "{}: {line}",
                    c.id
                );
            }
            None => assert!(line["input_tokens"].is_null(), "{}: {line}", c.id),
        }
        assert_eq!(line["outcome"], "completed", "{}", c.id);
        assert_eq!(
            line["streamed"],
            c.body.contains("\"stream\":true") || c.path.contains("alt=sse"),
            "{}",
            c.id
        );
    }
    assert_eq!(lines["chat"]["model"], "gpt-4o-mini");
    assert_eq!(lines["messages-stream-gz"]["model"], "claude-x");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn abandoned_stream_still_records_what_was_seen() {
    let dir = std::env::temp_dir().join(format!("kp-obs-abandon-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let usage_path = dir.join("usage.jsonl");
    let up = usage_path.clone();
    let mut h = Harness::start_with(MockConfig::default(), move |m| providers(m, &up, true)).await;
    let mut req = post(h.anthropic(), "/v1/messages", MSG_STREAM);
    req.headers_mut()
        .insert("x-request-id", "abandoned".parse().unwrap());
    req.headers_mut()
        .insert("x-mock-chunks", "50".parse().unwrap());
    req.headers_mut()
        .insert("x-mock-gap-ms", "50".parse().unwrap());
    let resp = client().request(req).await.unwrap();
    let mut body = resp.into_body();
    let mut seen = String::new();
    while !seen.contains("content_block_delta") {
        let f = tokio::time::timeout(Duration::from_secs(3), body.frame())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        seen.push_str(&String::from_utf8_lossy(f.data_ref().unwrap()));
    }
    drop(body);
    assert!(h.mock.wait_for_cancelled(1, Duration::from_secs(3)).await);
    h.shutdown();
    let task = h.task.take().unwrap();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let usage = std::fs::read_to_string(&usage_path).unwrap();
    let line: serde_json::Value =
        serde_json::from_str(usage.lines().find(|l| l.contains("abandoned")).unwrap()).unwrap();
    assert_eq!(line["outcome"], "client_closed");
    assert_eq!(line["input_tokens"], 11, "{line}");
    assert_eq!(
        line["output_tokens"], 1,
        "message_start's count is what was seen: {line}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

async fn worst_event_lag(token_usage: bool) -> f64 {
    let dir = std::env::temp_dir();
    let up = dir.join(format!(
        "kp-obs-lag-{}-{token_usage}.jsonl",
        std::process::id()
    ));
    let h = Harness::start_with(MockConfig::default(), move |m| {
        providers(m, &up, token_usage)
    })
    .await;
    let resp = client()
        .request(get(h.openai(), "/mock/sse?events=20&gap_ms=30&size=512"))
        .await
        .unwrap();
    let frames = frames(resp, Duration::from_secs(10)).await.unwrap();
    assert_eq!(frames.len(), 20);
    let mut worst = 0.0f64;
    for (arrived, data) in &frames {
        let arrived_ns = now_ns() - arrived.elapsed().as_nanos();
        let text = String::from_utf8_lossy(data);
        let json: serde_json::Value =
            serde_json::from_str(text.split("data: ").nth(1).unwrap().trim()).unwrap();
        let sent = json["sent_ns"].as_u64().unwrap() as u128;
        worst = worst.max(arrived_ns.saturating_sub(sent) as f64 / 1e6);
    }
    worst
}

#[tokio::test]
async fn usage_parsing_adds_no_stream_delay() {
    let off = worst_event_lag(false).await;
    let on = worst_event_lag(true).await;
    write_stdout(&format!(
        "worst per-event lag: usage parsing off {off:.2} ms, on {on:.2} ms\n"
    ));
    assert!(off < 40.0 && on < 40.0, "off {off:.2} ms, on {on:.2} ms");
}

/// With token usage on, the upstream is asked only for codings whose usage the proxy can read
/// (`zstd` dropped, the rest kept in order, as the Node sidecar did); with it off, the
/// client's `Accept-Encoding` passes unchanged.
#[tokio::test]
async fn zstd_is_not_requested_while_usage_is_read() {
    for (token_usage, expected) in [(true, "gzip, br"), (false, "gzip, zstd, br")] {
        let usage = std::env::temp_dir().join(format!("kp-ae-{}.jsonl", std::process::id()));
        let h =
            Harness::start_with(MockConfig::default(), |m| providers(m, &usage, token_usage)).await;
        let mut req = post(h.openai(), "/v1/chat/completions", r#"{"model":"m"}"#);
        req.headers_mut()
            .insert("accept-encoding", "gzip, zstd, br".parse().unwrap());
        assert_eq!(send(req).await.status, 200);
        let seen = h.mock.requests();
        assert_eq!(seen[0].header_all("accept-encoding"), [expected]);
        let _ = std::fs::remove_file(&usage);
    }
}

/// The JSON log lines of `event` for one request id, once there (a request is logged when its
/// body has ended, which may trail the client's last byte).
async fn logged_once(event: &str, request_id: &str) -> serde_json::Value {
    for _ in 0..200 {
        let found = logs()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| v["event"] == event && v["request_id"] == request_id);
        if let Some(v) = found {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no {event} for {request_id}");
}

/// A streamed chat request without `stream_options` gets `include_usage: true` (as the Node
/// sidecar did), so its tokens are counted; the member goes right after `{`, every other byte
/// stays, `Content-Length` follows. Bodies that already say something, non-streamed ones, and
/// everything with token usage off reach the upstream byte for byte.
#[tokio::test]
async fn streamed_chat_gets_include_usage_while_usage_is_read() {
    let usage = std::env::temp_dir().join(format!("kp-iu-{}.jsonl", std::process::id()));
    let h = Harness::start_with(MockConfig::default(), |m| providers(m, &usage, true)).await;
    let streamed =
        r#"{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    let mut req = post(h.openai(), "/v1/chat/completions", streamed);
    req.headers_mut()
        .insert("x-request-id", "include-usage".parse().unwrap());
    let a = send(req).await;
    assert_eq!(a.status, 200);
    // The client did not ask for usage and gets the final usage chunk anyway (Node did too).
    assert!(
        a.text().contains(r#""choices":[],"usage":"#),
        "{}",
        a.text()
    );
    let seen = h.mock.requests();
    let expected = format!(
        "{{\"stream_options\":{{\"include_usage\":true}},{}",
        &streamed[1..]
    );
    assert_eq!(String::from_utf8_lossy(&seen[0].body), expected);
    assert_eq!(seen[0].body_len, expected.len() as u64);
    if let Some(cl) = seen[0].header("content-length") {
        assert_eq!(cl, expected.len().to_string());
    }
    let done = logged_once("request_complete", "include-usage").await;
    assert!(done["input_tokens"].as_u64() > Some(0), "{done}");
    assert!(done["output_tokens"].as_u64() > Some(0), "{done}");

    let untouched = [
        r#"{"model":"m","stream":true,"stream_options":{"include_usage":false},"messages":[]}"#,
        r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#,
    ];
    for body in untouched {
        assert_eq!(
            send(post(h.openai(), "/v1/chat/completions", body))
                .await
                .status,
            200
        );
    }
    // Not a chat path (Node left the Responses API alone too).
    let responses = r#"{"model":"m","stream":true,"input":"hi"}"#;
    send(post(h.openai(), "/v1/responses", responses)).await;
    let seen = h.mock.requests();
    assert_eq!(seen[1].body, untouched[0].as_bytes());
    assert_eq!(seen[2].body, untouched[1].as_bytes());
    assert_eq!(seen[3].body, responses.as_bytes());
    drop(h);

    let off = Harness::start_with(MockConfig::default(), |m| providers(m, &usage, false)).await;
    send(post(off.openai(), "/v1/chat/completions", streamed)).await;
    assert_eq!(off.mock.requests()[0].body, streamed.as_bytes());
    let _ = std::fs::remove_file(&usage);
}

/// A plain (non-streamed) JSON answer read to its end by the client is `completed` in the
/// `request_complete` line and in `keyproxy_stream_outcomes_total`, whichever protocol the
/// upstream speaks; and the proxy does not reset the upstream's h2 stream after its last byte.
async fn plain_json_completes(alpn: mock_upstream::Alpn, id: &str) {
    let cfg = MockConfig {
        alpn,
        end_stream_gap: Duration::from_millis(30),
        ..MockConfig::default()
    };
    let h = Harness::start(cfg, "").await;
    for i in 0..3 {
        let mut req = post(h.openai(), "/v1/chat/completions", CHAT);
        req.headers_mut()
            .insert("x-request-id", format!("{id}-{i}").parse().unwrap());
        let answer = send(req).await;
        assert_eq!(answer.status, 200);
        assert!(answer.text().contains(&mock_upstream::expected_text(1)));
    }
    let series = r#"keyproxy_stream_outcomes_total{provider="openai",outcome="completed"}"#;
    let mut text = String::new();
    for _ in 0..100 {
        text = metrics_text(h.admin).await;
        if metric_value(&text, series) >= 3.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(metric_value(&text, series), 3.0, "{text}");
    assert_eq!(
        metric_value(
            &text,
            r#"keyproxy_stream_outcomes_total{provider="openai",outcome="client_closed"}"#
        ),
        0.0,
        "{text}"
    );
    let logs = logs();
    for i in 0..3 {
        let rid = format!("\"request_id\":\"{id}-{i}\"");
        let line = logs
            .lines()
            .find(|l| l.contains(&rid) && l.contains("request_complete"))
            .unwrap_or_else(|| panic!("no request_complete for {rid}"));
        let line: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(line["outcome"], "completed", "{line}");
    }
    if alpn == mock_upstream::Alpn::Http2Only {
        // (Over http/1.1 hyper drops the mock's body at its content-length, before its end.)
        assert_eq!(
            h.mock.cancelled_streams(),
            0,
            "the mock's END_STREAM was not read"
        );
    }
    assert_eq!(
        h.mock.client_resets(),
        0,
        "the proxy reset a finished h2 stream"
    );
}

#[tokio::test]
async fn plain_json_over_h2_is_completed() {
    plain_json_completes(mock_upstream::Alpn::Http2Only, "plain-h2").await;
}

#[tokio::test]
async fn plain_json_over_h1_is_completed() {
    plain_json_completes(mock_upstream::Alpn::Http1Only, "plain-h1").await;
}
