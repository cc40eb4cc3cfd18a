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
use hyper_util::rt::{TokioExecutor, TokioIo};
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

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// OTLP/HTTP: HTTP/1.1 POST of the protobuf.
    Http,
    /// OTLP/gRPC: HTTP/2 (prior knowledge), the protobuf in a gRPC frame.
    Grpc,
    /// Accepts requests and never answers.
    Hang,
}

/// An OTLP receiver on 127.0.0.1.
async fn receiver(mode: Mode) -> (SocketAddr, Arc<Mutex<Received>>) {
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
                        if mode == Mode::Hang {
                            std::future::pending::<()>().await;
                        }
                        let path = req.uri().path().to_owned();
                        let kind = req.headers()["content-type"].to_str().unwrap().to_owned();
                        let mut body = req.into_body().collect().await.unwrap().to_bytes();
                        if mode == Mode::Grpc {
                            assert_eq!(kind, "application/grpc");
                            // Uncompressed flag, then the 4-byte big-endian length.
                            assert_eq!(body[0], 0);
                            let len = u32::from_be_bytes(body[1..5].try_into().unwrap());
                            assert_eq!(len as usize, body.len() - 5);
                            body = body.slice(5..);
                        } else {
                            assert_eq!(kind, "application/x-protobuf");
                        }
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
                        // gRPC: a trailers-only answer (the status in the one header block).
                        let mut resp = http::Response::new(Full::new(Bytes::new()));
                        if mode == Mode::Grpc {
                            resp.headers_mut()
                                .insert("content-type", "application/grpc".parse().unwrap());
                            resp.headers_mut()
                                .insert("grpc-status", "0".parse().unwrap());
                        }
                        Ok::<_, std::convert::Infallible>(resp)
                    }
                });
                let io = TokioIo::new(tcp);
                if mode == Mode::Grpc {
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(io, svc)
                        .await;
                } else {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, svc)
                        .await;
                }
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
    start_with(
        tracing,
        if callers {
            "callers:\n  agent: {token: env:AGENT_TOKEN}\n"
        } else {
            ""
        },
    )
    .await
}

/// The proxy with `observability.tracing: {tracing}` and `extra` top-level YAML.
async fn start_with(tracing: &str, extra: &str) -> Harness {
    init_logs();
    let mock = mock_upstream::MockUpstream::start(MockConfig::default())
        .await
        .unwrap();
    let m = mock.addr();
    let ca = std::env::temp_dir().join(format!("kp-tr-ca-{}-{}.pem", std::process::id(), m.port()));
    std::fs::write(&ca, mock.ca_pem()).unwrap();
    let text = format!(
        "admin: {{listen: 127.0.0.1:0}}\ntls: {{extra_ca_file: '{}'}}\nobservability: {{tracing: {tracing}}}\n{extra}{}",
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

/// The metrics text once `series` reads `value` (or fails after a generous wait).
async fn wait_for_metric(admin: SocketAddr, series: &str, value: f64) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let m = metrics_text(admin).await;
        if metric_value(&m, series) == value {
            return m;
        }
        assert!(
            Instant::now() < deadline,
            "{series} never reached {value}:\n{m}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
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
    let (recv, got) = receiver(Mode::Http).await;
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
    // Counted once the receiver's answer is back, just after it stored the spans.
    let m = wait_for_metric(h.admin, "keyproxy_trace_spans_exported_total", 5.0).await;
    assert_eq!(metric_value(&m, "keyproxy_trace_spans_dropped_total"), 0.0);
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[tokio::test]
async fn propagate_upstream_sends_this_span_as_the_parent() {
    let (recv, got) = receiver(Mode::Http).await;
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
    let (recv, _) = receiver(Mode::Hang).await;
    unaffected_by(&format!("http://{recv}")).await;
}

#[tokio::test]
async fn grpc_protocol_exports_the_same_spans() {
    let (recv, got) = receiver(Mode::Grpc).await;
    let h = start(
        &format!("{{endpoint: 'http://{recv}', protocol: grpc, schedule_delay: 100ms}}"),
        false,
    )
    .await;
    let headers = [("x-request-id", "over-grpc")];
    let a = send(request(h.anthropic(), "/v1/messages", MSG_STREAM, &headers)).await;
    assert_eq!(a.status, 200);
    let spans = wait_for_spans(&got, 1).await;
    let a = attrs(by_request_id(&spans, "over-grpc"));
    assert_eq!(a["gen_ai.provider.name"], "anthropic");
    assert_eq!(a["gen_ai.response.model"], "claude-x");
    assert_eq!(a["llm_keyproxy.streamed"], "true");
    let paths = got.lock().unwrap().paths.clone();
    assert_eq!(
        paths,
        ["/opentelemetry.proto.collector.trace.v1.TraceService/Export"]
    );
    wait_for_metric(h.admin, "keyproxy_trace_spans_exported_total", 1.0).await;
}

/// A CONNECT proxy on 127.0.0.1 that records every target it tunnels to.
async fn connect_proxy() -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let targets = Arc::new(Mutex::new(Vec::new()));
    let seen = targets.clone();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if client.read(&mut byte).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                let target = head.split(' ').nth(1).unwrap_or("").to_owned();
                seen.lock().unwrap().push(target.clone());
                let Ok(mut up) = tokio::net::TcpStream::connect(&target).await else {
                    return;
                };
                client
                    .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                    .await
                    .unwrap();
                let _ = tokio::io::copy_bidirectional(&mut client, &mut up).await;
            });
        }
    });
    (addr, targets)
}

#[tokio::test]
async fn collector_reached_through_the_forward_proxy_and_default_parent_used() {
    let (recv, got) = receiver(Mode::Http).await;
    let (proxy, targets) = connect_proxy().await;
    let parent = format!("00-{PARENT_TRACE}-{PARENT_SPAN}-01");
    let h = start_with(
        &format!("{{endpoint: 'http://{recv}', schedule_delay: 100ms, parent: '{parent}'}}"),
        &format!("upstream_proxy: http://{proxy}\n"),
    )
    .await;
    let headers = [("x-request-id", "no-traceparent")];
    let a = send(request(h.openai(), "/v1/chat/completions", CHAT, &headers)).await;
    assert_eq!(a.status, 200);
    let other = "00-11111111111111111111111111111111-2222222222222222-01";
    let headers = [("x-request-id", "own-traceparent"), ("traceparent", other)];
    let a = send(request(h.openai(), "/v1/chat/completions", CHAT, &headers)).await;
    assert_eq!(a.status, 200);
    let spans = wait_for_spans(&got, 2).await;
    // No traceparent: the configured parent (AWF's workflow span); else the client's.
    let s = by_request_id(&spans, "no-traceparent");
    assert_eq!(
        (hex(&s.trace_id), hex(&s.parent_span_id)),
        (PARENT_TRACE.into(), PARENT_SPAN.into())
    );
    let s = by_request_id(&spans, "own-traceparent");
    assert_eq!(hex(&s.trace_id), "11111111111111111111111111111111");
    assert!(
        targets.lock().unwrap().contains(&recv.to_string()),
        "the export went through the forward proxy: {:?}",
        targets.lock().unwrap()
    );
}

/// A WebSocket session is one span, ended when the tunnel closes, in the client's trace.
#[tokio::test]
async fn websocket_session_is_one_span() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (recv, got) = receiver(Mode::Http).await;
    let h = start(
        &format!("{{endpoint: 'http://{recv}', schedule_delay: 100ms}}"),
        false,
    )
    .await;
    let mut s = tokio::net::TcpStream::connect(h.openai()).await.unwrap();
    let upgrade = format!(
        "GET /v1/responses HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         X-Request-Id: ws-session\r\ntraceparent: 00-{PARENT_TRACE}-{PARENT_SPAN}-01\r\n\r\n"
    );
    s.write_all(upgrade.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut b).await.unwrap(), 1);
        head.push(b[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"));
    drop(s);
    let spans = wait_for_spans(&got, 1).await;
    let span = by_request_id(&spans, "ws-session");
    let a = attrs(span);
    assert_eq!(a["llm_keyproxy.websocket"], "true");
    assert_eq!(a["http.response.status_code"], "101");
    assert_eq!(a["http.request.method"], "GET");
    assert_eq!(a["gen_ai.operation.name"], "chat");
    assert_eq!(hex(&span.parent_span_id), PARENT_SPAN);
    let rec = h.mock.requests().pop().unwrap();
    assert!(rec.headers.iter().all(|(k, _)| k != "traceparent"));
}
