//! OpenTelemetry traces (docs/observability.md "Traces"): a real OTLP/HTTP receiver (a hyper
//! server decoding the official `ExportTraceServiceRequest` protobuf) gets one span per request
//! with the GenAI and HTTP attributes, for OpenAI and Anthropic, plain and streamed, and for a
//! refused request; a client `traceparent` becomes the parent; no key or caller token is in
//! any exported value; a receiver that is down or never answers slows no request, and the
//! spans it loses are counted.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use mock_upstream::MockConfig;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;

const AGENT_TOKEN: &str = "agent-tok-7f3e9a1c5b";
const PARENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_SPAN: &str = "00f067aa0ba902b7";

/// What the receiver got: every span, and the resource attributes of the last request.
#[derive(Default)]
struct Received {
    spans: Vec<Span>,
    resource: Vec<(String, String)>,
    paths: Vec<String>,
}

/// An OTLP/HTTP receiver on 127.0.0.1; `hang` accepts requests and never answers.
async fn receiver(hang: bool) -> (SocketAddr, Arc<Mutex<Received>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let got = Arc::new(Mutex::new(Received::default()));
    let store = got.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let store = store.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let store = store.clone();
                    async move {
                        if hang {
                            std::future::pending::<()>().await;
                        }
                        let path = req.uri().path().to_owned();
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let msg = ExportTraceServiceRequest::decode(body).unwrap();
                        let mut r = store.lock().unwrap();
                        r.paths.push(path);
                        for rs in msg.resource_spans {
                            if let Some(res) = rs.resource {
                                r.resource = res
                                    .attributes
                                    .iter()
                                    .map(|kv| (kv.key.clone(), text(kv.value.as_ref())))
                                    .collect();
                            }
                            for ss in rs.scope_spans {
                                r.spans.extend(ss.spans);
                            }
                        }
                        Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                            Bytes::new(),
                        )))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    (addr, got)
}

fn text(v: Option<&opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match v.and_then(|v| v.value.as_ref()) {
        Some(Any::StringValue(s)) => s.clone(),
        Some(Any::IntValue(i)) => i.to_string(),
        Some(Any::DoubleValue(d)) => d.to_string(),
        Some(Any::BoolValue(b)) => b.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn attrs(span: &Span) -> HashMap<String, String> {
    span.attributes
        .iter()
        .map(|kv| (kv.key.clone(), text(kv.value.as_ref())))
        .collect()
}

fn lookup(name: &str) -> Option<String> {
    match name {
        "AGENT_TOKEN" => Some(AGENT_TOKEN.into()),
        "OTEL_RESOURCE_ATTRIBUTES" => Some("deployment.environment=test".into()),
        other => env_lookup(other),
    }
}

async fn start(tracing: &str, callers: bool) -> Harness {
    init_logs();
    let mock = mock_upstream::MockUpstream::start(MockConfig::default())
        .await
        .unwrap();
    let m = mock.addr();
    let ca = std::env::temp_dir().join(format!("kp-tr-ca-{}-{}.pem", std::process::id(), m.port()));
    std::fs::write(&ca, mock.ca_pem()).unwrap();
    let callers = match callers {
        true => "callers:\n  agent: {token: env:AGENT_TOKEN}\n",
        false => "",
    };
    let text = format!(
        "admin: {{listen: 127.0.0.1:0}}\ntls: {{extra_ca_file: '{}'}}\nobservability: {{tracing: {tracing}}}\n{callers}{}",
        ca.display(),
        default_providers(m)
    );
    let plan = llm_keyproxy::config::plan::Plan::from_yaml(&text, &lookup)
        .unwrap_or_else(|e| panic!("{e}\n{text}"));
    Harness::serve_plan(mock, plan, ca).await
}

fn request(
    addr: SocketAddr,
    path: &str,
    body: &str,
    headers: &[(&str, &str)],
) -> http::Request<Full<Bytes>> {
    let mut req = post(addr, path, body.to_owned());
    for (k, v) in headers {
        req.headers_mut().insert(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    req
}

async fn wait_for_spans(got: &Mutex<Received>, n: usize) -> Vec<Span> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let spans = got.lock().unwrap().spans.clone();
        if spans.len() >= n || Instant::now() > deadline {
            return spans;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn by_request_id<'a>(spans: &'a [Span], id: &str) -> &'a Span {
    spans
        .iter()
        .find(|s| attrs(s).get("llm_keyproxy.request_id").map(String::as_str) == Some(id))
        .unwrap_or_else(|| panic!("no span for request {id}"))
}

const CHAT: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#;
const CHAT_STREAM: &str = r#"{"model":"gpt-4o-mini","stream":true,"messages":[]}"#;
const MSG: &str =
    r#"{"model":"claude-x","max_tokens":9,"messages":[{"role":"user","content":"hi"}]}"#;
const MSG_STREAM: &str = r#"{"model":"claude-x","max_tokens":9,"stream":true,"messages":[]}"#;

#[tokio::test]
async fn spans_carry_genai_and_http_attributes_and_join_the_client_trace() {
    let (recv, got) = receiver(false).await;
    let h = start(
        &format!("{{endpoint: 'http://{recv}', schedule_delay: 100ms, service_name: kp-test}}"),
        true,
    )
    .await;
    let bearer = format!("Bearer {AGENT_TOKEN}");
    let auth = [("authorization", bearer.as_str())];
    let traceparent = format!("00-{PARENT_TRACE}-{PARENT_SPAN}-01");
    // (request id, provider address, path, body, extra header, expected model, streamed)
    let cases = [
        (
            "chat",
            h.openai(),
            "/v1/chat/completions",
            CHAT,
            "gpt-4o-mini",
            false,
        ),
        (
            "chat-stream",
            h.openai(),
            "/v1/chat/completions",
            CHAT_STREAM,
            "gpt-4o-mini",
            true,
        ),
        (
            "messages",
            h.anthropic(),
            "/v1/messages",
            MSG,
            "claude-x",
            false,
        ),
        (
            "messages-stream",
            h.anthropic(),
            "/v1/messages",
            MSG_STREAM,
            "claude-x",
            true,
        ),
    ];
    for (id, addr, path, body, _, _) in cases {
        let mut headers = vec![auth[0], ("x-request-id", id)];
        if id == "chat" {
            headers.push(("traceparent", &traceparent));
            headers.push(("tracestate", "vendor=abc"));
        }
        let a = send(request(addr, path, body, &headers)).await;
        assert_eq!(a.status, 200, "{id}: {}", a.text());
    }
    // Refused: a wrong caller token (401), before any upstream is contacted.
    let bad = [
        ("authorization", "Bearer nope"),
        ("x-request-id", "refused"),
    ];
    let a = send(request(h.openai(), "/v1/chat/completions", CHAT, &bad)).await;
    assert_eq!(a.status, 401);

    let spans = wait_for_spans(&got, 5).await;
    assert_eq!(spans.len(), 5, "spans: {spans:#?}");
    for (id, _, path, _, model, streamed) in cases {
        let span = by_request_id(&spans, id);
        let a = attrs(span);
        let provider = if path == "/v1/messages" {
            "anthropic"
        } else {
            "openai"
        };
        assert_eq!(span.kind, 2, "{id}: SERVER");
        assert_eq!(span.name, format!("chat {model}"), "{id}");
        for (k, v) in [
            ("gen_ai.provider.name", provider),
            ("gen_ai.operation.name", "chat"),
            ("gen_ai.response.model", model),
            ("gen_ai.usage.input_tokens", "11"),
            ("http.request.method", "POST"),
            ("url.path", path),
            ("http.response.status_code", "200"),
            ("server.address", &*format!("api.{provider}.com")),
            ("server.port", "443"),
            ("network.protocol.name", "http"),
            ("llm_keyproxy.provider", provider),
            ("llm_keyproxy.caller", "agent"),
            ("llm_keyproxy.outcome", "completed"),
            (
                "llm_keyproxy.streamed",
                if streamed { "true" } else { "false" },
            ),
        ] {
            assert_eq!(a.get(k).map(String::as_str), Some(v), "{id} {k}: {a:?}");
        }
        assert!(a.contains_key("gen_ai.usage.output_tokens"), "{id}: {a:?}");
        assert!(a["llm_keyproxy.ttfb_ms"].parse::<f64>().unwrap() >= 0.0);
        assert_eq!(span.events.len(), 1, "{id}: the response-headers event");
        assert!(!a.contains_key("error.type"), "{id}: {a:?}");
        assert!(span.end_time_unix_nano >= span.start_time_unix_nano);
    }
    // The client's traceparent is the parent; the others are roots of their own traces.
    let chat = by_request_id(&spans, "chat");
    assert_eq!(hex(&chat.trace_id), PARENT_TRACE);
    assert_eq!(hex(&chat.parent_span_id), PARENT_SPAN);
    assert_eq!(chat.trace_state, "vendor=abc");
    let other = by_request_id(&spans, "messages");
    assert!(other.parent_span_id.is_empty());
    assert_ne!(hex(&other.trace_id), PARENT_TRACE);
    // Refused: the error type and status, no GenAI usage.
    let refused = attrs(by_request_id(&spans, "refused"));
    assert_eq!(refused["error.type"], "unauthorized_caller", "{refused:?}");
    assert_eq!(refused["http.response.status_code"], "401");
    assert!(!refused.contains_key("llm_keyproxy.caller"));
    assert!(
        !refused.contains_key("network.protocol.version"),
        "no upstream was contacted"
    );
    assert!(!refused.contains_key("gen_ai.usage.input_tokens"));
    let (paths, resource, exported) = {
        let r = got.lock().unwrap();
        (
            r.paths.clone(),
            r.resource.clone(),
            format!("{:?}{:?}", r.spans, r.resource),
        )
    };
    assert!(paths.iter().all(|p| p == "/v1/traces"), "{paths:?}");
    assert!(resource.contains(&("service.name".into(), "kp-test".into())));
    assert!(resource.contains(&("deployment.environment".into(), "test".into())));
    // No key, no caller token, no prompt in anything exported.
    let everything = exported;
    assert_no_canary(&everything);
    assert!(!everything.contains(AGENT_TOKEN));
    assert!(!everything.contains("\"hi\"") && !everything.contains("content"));
    // Tracing on, propagate_upstream off (default): the provider sees no trace context.
    for rec in h.mock.requests() {
        assert!(
            rec.headers
                .iter()
                .all(|(k, _)| k != "traceparent" && k != "tracestate"),
            "{:?}",
            rec.headers
        );
    }
    let m = metrics_text(h.admin).await;
    assert_eq!(metric_value(&m, "keyproxy_trace_spans_exported_total"), 5.0);
    assert_eq!(metric_value(&m, "keyproxy_trace_spans_dropped_total"), 0.0);
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[tokio::test]
async fn propagate_upstream_sends_this_span_as_the_parent() {
    let (recv, got) = receiver(false).await;
    let h = start(
        &format!("{{endpoint: 'http://{recv}', schedule_delay: 100ms, propagate_upstream: true}}"),
        false,
    )
    .await;
    let tp = format!("00-{PARENT_TRACE}-{PARENT_SPAN}-01");
    let headers = [("traceparent", tp.as_str()), ("x-request-id", "prop")];
    let a = send(request(h.openai(), "/v1/chat/completions", CHAT, &headers)).await;
    assert_eq!(a.status, 200);
    let spans = wait_for_spans(&got, 1).await;
    let span = by_request_id(&spans, "prop");
    let rec = h.mock.requests().pop().unwrap();
    let sent: Vec<_> = rec
        .headers
        .iter()
        .filter(|(k, _)| k == "traceparent")
        .collect();
    assert_eq!(sent.len(), 1);
    let expect = format!("00-{PARENT_TRACE}-{}-01", hex(&span.span_id));
    assert_eq!(String::from_utf8_lossy(&sent[0].1), expect);
}

/// Requests through a proxy whose collector is `endpoint` (down or hanging): all answered
/// normally, and the spans that could not go are counted as dropped.
async fn unaffected_by(endpoint: &str) {
    let h = start(
        &format!("{{endpoint: '{endpoint}', schedule_delay: 50ms, max_queue_size: 2, export_timeout: 30s}}"),
        false,
    )
    .await;
    let started = Instant::now();
    for i in 0..30 {
        let t = Instant::now();
        let a = send(post(h.openai(), "/v1/chat/completions", CHAT)).await;
        assert_eq!(a.status, 200, "request {i}");
        // Generous: a request never waits for the exporter (its timeout here is 30 s).
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "request {i} took {:?}",
            t.elapsed()
        );
    }
    assert!(started.elapsed() < Duration::from_secs(20));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let m = metrics_text(h.admin).await;
        let dropped = metric_value(&m, "keyproxy_trace_spans_dropped_total");
        if dropped > 0.0 {
            assert_eq!(metric_value(&m, "keyproxy_trace_spans_exported_total"), 0.0);
            break;
        }
        assert!(Instant::now() < deadline, "no dropped spans counted:\n{m}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn receiver_down_requests_unaffected_drops_counted() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    unaffected_by(&format!("http://{addr}")).await;
}

#[tokio::test]
async fn receiver_hanging_requests_unaffected_drops_counted() {
    let (recv, _) = receiver(true).await;
    unaffected_by(&format!("http://{recv}")).await;
}
