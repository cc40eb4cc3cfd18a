//! Minimal Gemini-shaped routes under `/v1beta/`: `models/{m}:generateContent`,
//! `models/{m}:streamGenerateContent` (SSE with `alt=sse`, else a streamed JSON array) and the
//! model list, with Google-shaped errors. The generator is shared with Vertex AI (src/vertex.rs).

use std::sync::Arc;

use bytes::Bytes;
use http::{Method, StatusCode};

use crate::body::MockBody;
use crate::google::api_error;
use crate::routes::{credential_ok, js, json, respond, sse, Req, Resp, Scheme};
use crate::{chunk_text, expected_text, Shared};

const PROMPT_TOKENS: usize = 11;

/// One `GenerateContentResponse` carrying `text`; `last` adds the finish reason and full usage.
fn candidate(model: &str, id: &str, text: &str, last: Option<usize>) -> String {
    let (finish, usage) = match last {
        Some(n) => (
            ",\"finishReason\":\"STOP\"".to_owned(),
            format!(
                "{{\"promptTokenCount\":{PROMPT_TOKENS},\"candidatesTokenCount\":{n},\"totalTokenCount\":{}}}",
                PROMPT_TOKENS + n
            ),
        ),
        None => (
            String::new(),
            format!("{{\"promptTokenCount\":{PROMPT_TOKENS},\"totalTokenCount\":{PROMPT_TOKENS}}}"),
        ),
    };
    format!(
        "{{\"candidates\":[{{\"content\":{{\"parts\":[{{\"text\":{}}}],\"role\":\"model\"}}{finish},\"index\":0}}],\"usageMetadata\":{usage},\"modelVersion\":{},\"responseId\":\"{id}\"}}",
        js(text),
        js(model)
    )
}

/// Handles `/v1beta/*`.
pub(crate) fn handle(shared: &Arc<Shared>, req: &Req) -> Resp {
    if !credential_ok(shared, req, Scheme::Goog) {
        let msg = "API key not valid. Please pass a valid API key.";
        return api_error(shared, StatusCode::UNAUTHORIZED, msg, "UNAUTHENTICATED");
    }
    if req.method == Method::GET && req.path == "/v1beta/models" {
        let body = r#"{"models":[{"name":"models/gemini-2.5-flash","displayName":"Gemini 2.5 Flash","supportedGenerationMethods":["generateContent","countTokens"]}]}"#;
        return json(shared, StatusCode::OK, body.to_owned());
    }
    let target = req
        .path
        .strip_prefix("/v1beta/models/")
        .and_then(|rest| rest.split_once(':'));
    let (model, stream) = match (&req.method, target) {
        (&Method::POST, Some((model, "generateContent"))) => (model, false),
        (&Method::POST, Some((model, "streamGenerateContent"))) => (model, true),
        _ => {
            let msg = format!("Method not found: {} {}", req.method, req.path);
            return api_error(shared, StatusCode::NOT_FOUND, &msg, "NOT_FOUND");
        }
    };
    generate(shared, req, model, stream)
}

/// The generated answer to a `generateContent` (`stream`: `streamGenerateContent`) request for
/// `model`; shared with Vertex (src/vertex.rs).
pub(crate) fn generate(shared: &Arc<Shared>, req: &Req, model: &str, stream: bool) -> Resp {
    if req.json().is_err() {
        let msg = "Invalid JSON payload received.";
        return api_error(shared, StatusCode::BAD_REQUEST, msg, "INVALID_ARGUMENT");
    }
    let chunks = req.chunks();
    let id = shared.next_id();
    if !stream {
        let body = candidate(model, &id, &expected_text(chunks), Some(chunks));
        return json(shared, StatusCode::OK, body);
    }
    let parts: Vec<String> = match chunks {
        0 => vec![candidate(model, &id, "", Some(0))],
        n => (0..n)
            .map(|i| candidate(model, &id, &chunk_text(i), (i + 1 == n).then_some(n)))
            .collect(),
    };
    let gap = req.gap(shared);
    if req.query("alt") == Some("sse") {
        let frames = parts
            .into_iter()
            .map(|p| Bytes::from(format!("data: {p}\r\n\r\n")))
            .collect();
        return sse("text/event-stream", MockBody::frames(shared, gap, frames));
    }
    let last = parts.len() - 1;
    let frames = parts
        .into_iter()
        .enumerate()
        .map(|(i, p)| {
            let open = if i == 0 { "[" } else { ",\r\n" };
            let close = if i == last { "]" } else { "" };
            Bytes::from(format!("{open}{p}{close}"))
        })
        .collect();
    respond(
        StatusCode::OK,
        "application/json",
        MockBody::frames(shared, gap, frames),
    )
}
