//! The span of a request (docs/observability.md "Traces"): the OpenTelemetry GenAI and HTTP
//! attributes made from the same `Line` that `request_complete` / `request_error` log, once,
//! where the request ends. Never a key, token, prompt, completion or query string.

use std::time::{Duration, SystemTime};

use http::HeaderMap;
use opentelemetry::{KeyValue, StringValue};

use super::completion::Line;
use super::Route;
use crate::telemetry::otel::{SpanEnd, SpanStart};

/// Ends the request's span, when tracing is on and it was sampled.
pub(crate) fn record(start: Option<SpanStart>, line: &Line, error_type: Option<&str>) {
    let (Some(start), Some(tracer)) = (start, line.route.tracer.as_deref()) else {
        return;
    };
    let route = line.route;
    let operation = operation(line.path);
    let mut a = Vec::with_capacity(24);
    a.push(KeyValue::new("http.request.method", line.method.to_owned()));
    a.push(KeyValue::new("url.path", line.path.to_owned()));
    a.push(KeyValue::new(
        "http.response.status_code",
        i64::from(line.status),
    ));
    // Shared strings, not copies: a span costs few allocations.
    let shared = |s: &std::sync::Arc<str>| StringValue::from(s.clone());
    a.push(KeyValue::new(
        "server.address",
        shared(&route.upstream_host),
    ));
    a.push(KeyValue::new("server.port", i64::from(route.provider.port)));
    // The protocol spoken with the provider (none when it was not contacted).
    let version = match line.upstream_protocol {
        "h2" => Some("2"),
        "http1.1" => Some("1.1"),
        _ => None,
    };
    if let Some(v) = version {
        a.push(KeyValue::new("network.protocol.name", "http"));
        a.push(KeyValue::new("network.protocol.version", v));
    }
    a.push(KeyValue::new(
        "llm_keyproxy.provider",
        shared(&route.provider_name),
    ));
    a.push(KeyValue::new(
        "llm_keyproxy.request_id",
        line.request_id.to_owned(),
    ));
    a.push(KeyValue::new(
        "llm_keyproxy.outcome",
        line.outcome.to_owned(),
    ));
    a.push(KeyValue::new(
        "llm_keyproxy.request_bytes",
        line.request_bytes as i64,
    ));
    a.push(KeyValue::new(
        "llm_keyproxy.response_bytes",
        line.response_bytes as i64,
    ));
    if let Some(s) = line.streamed {
        a.push(KeyValue::new("llm_keyproxy.streamed", s));
    }
    if line.websocket == Some(true) {
        a.push(KeyValue::new("llm_keyproxy.websocket", true));
    }
    if let Some(c) = line.caller {
        a.push(KeyValue::new("llm_keyproxy.caller", c.to_owned()));
    }
    if let Some(op) = operation {
        a.push(KeyValue::new("gen_ai.operation.name", op));
        a.push(KeyValue::new("gen_ai.provider.name", provider_name(route)));
    }
    if let Some(m) = line.model {
        a.push(KeyValue::new("gen_ai.response.model", m.to_owned()));
    }
    let [input, output, cache_read, cache_write] = line.tokens;
    for (key, v) in [
        ("gen_ai.usage.input_tokens", input),
        ("gen_ai.usage.output_tokens", output),
        ("llm_keyproxy.usage.cache_read_tokens", cache_read),
        ("llm_keyproxy.usage.cache_write_tokens", cache_write),
    ] {
        if let Some(v) = v {
            a.push(KeyValue::new(key, v as i64));
        }
    }
    let mut events = Vec::new();
    if let Some(ms) = line.ttfb_ms {
        a.push(KeyValue::new("llm_keyproxy.ttfb_ms", ms));
        let at = start_time(&start) + Duration::from_secs_f64(ms / 1000.0);
        events.push(("llm_keyproxy.response_headers", at, Vec::new()));
    }
    let error = error_type
        .map(str::to_owned)
        .or_else(|| (line.status >= 500).then(|| line.status.to_string()))
        .or_else(|| {
            matches!(line.outcome, "upstream_aborted" | "idle_timeout")
                .then(|| line.outcome.to_owned())
        });
    if let Some(e) = &error {
        a.push(KeyValue::new("error.type", e.clone()));
    }
    let name = match (operation, line.model) {
        (Some(op), Some(m)) => format!("{op} {m}"),
        (Some(op), None) => op.to_owned(),
        _ => line.method.to_owned(),
    };
    tracer.end(
        start,
        SpanEnd {
            name,
            attributes: a,
            events,
            error,
        },
    );
}

fn start_time(start: &SpanStart) -> SystemTime {
    start.start_time()
}

/// `gen_ai.operation.name` from the request path; `None` for paths that are not a model call.
fn operation(path: &str) -> Option<&'static str> {
    let last = path.rsplit('/').next().unwrap_or("");
    match last {
        "completions" if path.ends_with("/chat/completions") => Some("chat"),
        "completions" => Some("text_completion"),
        "messages" | "responses" | "converse" | "converse-stream" | "realtime" => Some("chat"),
        "embeddings" => Some("embeddings"),
        _ if last.contains(":generateContent") || last.contains(":streamGenerateContent") => {
            Some("generate_content")
        }
        _ if last.starts_with("invoke") => Some("chat"),
        _ => None,
    }
}

/// `gen_ai.provider.name` (the GenAI conventions' well-known values) from the preset.
fn provider_name(route: &Route) -> StringValue {
    let known = match route.provider.preset {
        Some("openai") => "openai",
        Some("anthropic") => "anthropic",
        Some("gemini") => "gcp.gemini",
        Some("vertex") => "gcp.vertex_ai",
        Some("bedrock") => "aws.bedrock",
        Some("azure-openai") => "azure.ai.openai",
        Some("copilot") => "github_copilot",
        _ => "",
    };
    match known {
        "" => StringValue::from(route.provider_name.clone()),
        k => StringValue::from(k),
    }
}

/// The span begun for a request, when tracing is on.
pub(crate) fn begin(route: &Route, headers: &HeaderMap) -> Option<SpanStart> {
    route.tracer.as_ref()?.begin(headers)
}

/// The trace context the upstream sees: with `propagate_upstream`, this span as its parent
/// (and the client's `tracestate`); otherwise none, when tracing is on (docs/security.md).
/// Tracing off leaves the headers as the client sent them.
pub(crate) fn to_upstream(route: &Route, span: Option<&SpanStart>, headers: &mut HeaderMap) {
    let Some(tracer) = route.tracer.as_deref() else {
        return;
    };
    let propagate = tracer.propagate_upstream;
    match span.filter(|_| propagate) {
        Some(s) => {
            if let Ok(v) = http::HeaderValue::try_from(s.traceparent()) {
                headers.insert("traceparent", v);
            }
            let state = s.tracestate();
            match http::HeaderValue::try_from(state)
                .ok()
                .filter(|v| !v.is_empty())
            {
                Some(v) => {
                    headers.insert("tracestate", v);
                }
                None => {
                    headers.remove("tracestate");
                }
            }
        }
        None if propagate => {}
        None => {
            headers.remove("traceparent");
            headers.remove("tracestate");
        }
    }
}
