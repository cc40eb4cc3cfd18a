//! Anthropic-shaped routes: `POST /v1/messages` (JSON and the real SSE event sequence),
//! `POST /v1/messages/count_tokens`, and Anthropic-shaped errors. The answer generators are
//! shared with Vertex's `rawPredict` (src/vertex.rs) and Bedrock (src/aws.rs).

use std::sync::Arc;

use bytes::Bytes;
use http::{Method, StatusCode};

use crate::body::MockBody;
use crate::routes::{credential_ok, js, json, set_header, sse, Req, Resp, Scheme};
use crate::{chunk_text, expected_text, Shared};

/// `input_tokens` of every generated answer.
pub(crate) const INPUT_TOKENS: usize = 11;
const DEFAULT_MODEL: &str = "claude-sonnet-4-5";

fn error(shared: &Arc<Shared>, status: StatusCode, kind: &str, message: &str) -> Resp {
    let body = format!(
        "{{\"type\":\"error\",\"error\":{{\"type\":\"{kind}\",\"message\":{}}}}}",
        js(message)
    );
    json(shared, status, body)
}

/// Handles `/v1/messages*`.
pub(crate) fn handle(shared: &Arc<Shared>, req: &Req) -> Resp {
    let mut resp = route(shared, req);
    set_header(
        &mut resp,
        "request-id",
        &format!("req_{}", shared.next_id()),
    );
    resp
}

fn route(shared: &Arc<Shared>, req: &Req) -> Resp {
    if !credential_ok(shared, req, Scheme::XApiKey) {
        let kind = "authentication_error";
        return error(shared, StatusCode::UNAUTHORIZED, kind, "invalid x-api-key");
    }
    let count_only = match (&req.method, req.path.as_str()) {
        (&Method::POST, "/v1/messages") => false,
        (&Method::POST, "/v1/messages/count_tokens") => true,
        _ => {
            return error(
                shared,
                StatusCode::NOT_FOUND,
                "not_found_error",
                "Not Found",
            )
        }
    };
    let (model, stream) = match req.json() {
        Ok(Some(v)) => (
            v.get("model")
                .and_then(|m| m.as_str())
                .unwrap_or(DEFAULT_MODEL)
                .to_owned(),
            v.get("stream").and_then(|s| s.as_bool()) == Some(true),
        ),
        Ok(None) => (DEFAULT_MODEL.to_owned(), false),
        Err(()) => {
            let kind = "invalid_request_error";
            return error(
                shared,
                StatusCode::BAD_REQUEST,
                kind,
                "There was an error parsing the body of your request.",
            );
        }
    };
    if count_only {
        return json(
            shared,
            StatusCode::OK,
            format!("{{\"input_tokens\":{INPUT_TOKENS}}}"),
        );
    }
    answer(shared, req, &model, stream)
}

/// The generated answer to a Messages request for `model` (Vertex's `rawPredict` too): JSON, or
/// the real SSE event sequence (with its `ping`) when `stream`.
pub(crate) fn answer(shared: &Arc<Shared>, req: &Req, model: &str, stream: bool) -> Resp {
    let chunks = req.chunks();
    let id = format!("msg_{}", shared.next_id());
    if !stream {
        let body = message_json(&id, model, chunks, (INPUT_TOKENS, chunks));
        return json(shared, StatusCode::OK, body);
    }
    let mut events = stream_events(&id, model, chunks, (INPUT_TOKENS, chunks));
    // The real API sends this one after content_block_start, with a space after the colon.
    events.insert(2, ("ping", r#"{"type": "ping"}"#.to_owned()));
    let frames = events
        .into_iter()
        .map(|(kind, data)| Bytes::from(format!("event: {kind}\ndata: {data}\n\n")))
        .collect();
    let body = MockBody::frames(shared, req.gap(shared), frames);
    sse("text/event-stream; charset=utf-8", body)
}

/// A complete Messages API answer: `chunks` deltas of text, `usage` = (input, output) tokens.
pub(crate) fn message_json(id: &str, model: &str, chunks: usize, usage: (usize, usize)) -> String {
    let (input, output) = usage;
    format!(
        "{{\"id\":\"{id}\",\"type\":\"message\",\"role\":\"assistant\",\"model\":{},\"content\":[{{\"type\":\"text\",\"text\":{}}}],\"stop_reason\":\"end_turn\",\"stop_sequence\":null,\"usage\":{{\"input_tokens\":{input},\"output_tokens\":{output},\"cache_read_input_tokens\":0,\"cache_creation_input_tokens\":0}}}}",
        js(model),
        js(&expected_text(chunks))
    )
}

/// The Messages stream as `(event type, JSON)` pairs, without `ping`: message_start,
/// content_block_start, `chunks` content_block_delta, content_block_stop, message_delta (with
/// the output tokens of `usage`), message_stop.
pub(crate) fn stream_events(
    id: &str,
    model: &str,
    chunks: usize,
    usage: (usize, usize),
) -> Vec<(&'static str, String)> {
    let (input, output) = usage;
    let model = js(model);
    let mut events = vec![
        (
            "message_start",
            format!(
                "{{\"type\":\"message_start\",\"message\":{{\"id\":\"{id}\",\"type\":\"message\",\"role\":\"assistant\",\"model\":{model},\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{{\"input_tokens\":{input},\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":0,\"output_tokens\":1}}}}}}"
            ),
        ),
        (
            "content_block_start",
            r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#.to_owned(),
        ),
    ];
    for i in 0..chunks {
        events.push((
            "content_block_delta",
            format!(
                "{{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"text_delta\",\"text\":{}}}}}",
                js(&chunk_text(i))
            ),
        ));
    }
    events.push((
        "content_block_stop",
        r#"{"type":"content_block_stop","index":0}"#.to_owned(),
    ));
    events.push((
        "message_delta",
        format!("{{\"type\":\"message_delta\",\"delta\":{{\"stop_reason\":\"end_turn\",\"stop_sequence\":null}},\"usage\":{{\"output_tokens\":{output}}}}}"),
    ));
    events.push(("message_stop", r#"{"type":"message_stop"}"#.to_owned()));
    events
}
