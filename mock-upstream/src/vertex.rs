//! Vertex AI routes: `POST /v1/projects/{p}/locations/{l}/publishers/google/models/{m}:
//! generateContent|streamGenerateContent` (Gemini's generator) and `.../publishers/anthropic/
//! models/{m}:rawPredict|streamRawPredict` (Anthropic's), behind Google auth: a live OAuth token
//! issued by src/google.rs, or `x-goog-api-key` (API-key mode, checked like Gemini's).

use std::sync::Arc;

use http::{Method, StatusCode};

use crate::cloud::CloudService;
use crate::google::{api_error, unauthenticated};
use crate::routes::{bearer, credential_ok, Req, Resp, Scheme};
use crate::{anthropic, gemini, Shared};

/// Tokens of these services are accepted.
const ACCEPTED: [CloudService; 3] = [
    CloudService::GoogleToken,
    CloudService::GoogleSts,
    CloudService::GoogleIam,
];

/// True when `path` is a Vertex publisher-model route.
pub(crate) fn is_vertex(path: &str) -> bool {
    path.starts_with("/v1/projects/") && path.contains("/publishers/")
}

/// Handles a Vertex publisher-model route.
pub(crate) fn handle(shared: &Arc<Shared>, req: &Req) -> Resp {
    let authed = if req.header("x-goog-api-key").is_some() {
        credential_ok(shared, req, Scheme::Goog)
    } else {
        bearer(req).is_some_and(|t| shared.cloud.valid(t, &ACCEPTED))
    };
    if !authed {
        return unauthenticated(shared);
    }
    let target = req
        .path
        .split_once("/publishers/")
        .and_then(|(_, rest)| rest.split_once("/models/"))
        .and_then(|(publisher, rest)| Some((publisher, rest.split_once(':')?)));
    let not_found = || {
        let msg = format!("Method not found: {} {}", req.method, req.path);
        api_error(shared, StatusCode::NOT_FOUND, &msg, "NOT_FOUND")
    };
    let Some((publisher, (model, method))) = target.filter(|_| req.method == Method::POST) else {
        return not_found();
    };
    match (publisher, method) {
        ("google", "generateContent") => gemini::generate(shared, req, model, false),
        ("google", "streamGenerateContent") => gemini::generate(shared, req, model, true),
        ("anthropic", "rawPredict") => {
            let stream = req
                .json()
                .ok()
                .flatten()
                .and_then(|v| v["stream"].as_bool());
            anthropic::answer(shared, req, model, stream == Some(true))
        }
        ("anthropic", "streamRawPredict") => anthropic::answer(shared, req, model, true),
        _ => not_found(),
    }
}
