//! Azure OpenAI routes: `POST /openai/deployments/{d}/chat/completions|embeddings?api-version=V`
//! and the v1 API `POST /openai/v1/chat/completions|embeddings`, behind `api-key` (checked like
//! the other providers' keys) or an Entra ID bearer token issued by src/idp.rs and still live.

use std::sync::Arc;

use http::{Method, StatusCode};
use serde_json::json;

use crate::cloud::CloudService;
use crate::openai::{bad_json, chat, parse};
use crate::routes::{bearer, json, set_header, Req, Resp};
use crate::Shared;

/// `prompt_tokens` of the embeddings answer.
const PROMPT_TOKENS: usize = 11;

/// Azure's error shape: `{"error":{"code":..,"message":..}}`.
fn error(shared: &Arc<Shared>, status: StatusCode, code: &str, msg: &str) -> Resp {
    let body = json!({"error": {"code": code, "message": msg}});
    json(shared, status, body.to_string())
}

fn authed(shared: &Shared, req: &Req) -> bool {
    match (req.header("api-key"), shared.cfg.expected_key.as_deref()) {
        (Some(got), Some(want)) => got == want,
        (Some(got), None) => !got.is_empty(),
        (None, _) => bearer(req).is_some_and(|t| shared.cloud.valid(t, &[CloudService::Entra])),
    }
}

/// Handles `/openai/*`.
pub(crate) fn handle(shared: &Arc<Shared>, req: &Req) -> Resp {
    let mut resp = route(shared, req);
    set_header(&mut resp, "apim-request-id", &shared.next_id());
    set_header(&mut resp, "x-ms-region", "East US");
    resp
}

fn route(shared: &Arc<Shared>, req: &Req) -> Resp {
    if !authed(shared, req) {
        let msg = "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key for an active subscription and use a correct regional API endpoint for your resource.";
        return error(shared, StatusCode::UNAUTHORIZED, "401", msg);
    }
    let op = if let Some(rest) = req.path.strip_prefix("/openai/deployments/") {
        if req.query("api-version").is_none_or(str::is_empty) {
            return error(shared, StatusCode::NOT_FOUND, "404", "Resource not found");
        }
        rest.split_once('/').map(|(_, op)| op)
    } else {
        req.path.strip_prefix("/openai/v1/")
    };
    match (&req.method, op) {
        (&Method::POST, Some("chat/completions")) => match parse(req) {
            Some(gen) => chat(shared, req, gen),
            None => bad_json(shared),
        },
        (&Method::POST, Some("embeddings")) => {
            if req.json().is_err() {
                return bad_json(shared);
            }
            let body = json!({"object": "list", "model": "text-embedding-3-small",
                "data": [{"object": "embedding", "index": 0, "embedding": [0.25, -0.5, 0.125]}],
                "usage": {"prompt_tokens": PROMPT_TOKENS, "total_tokens": PROMPT_TOKENS}});
            json(shared, StatusCode::OK, body.to_string())
        }
        _ => error(shared, StatusCode::NOT_FOUND, "404", "Resource not found"),
    }
}
