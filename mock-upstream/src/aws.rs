//! Bedrock runtime routes (`POST /model/{modelId}/invoke`, `/invoke-with-response-stream`,
//! `/converse`, `/converse-stream`) behind a SigV4 *shape* check: the Authorization header's
//! form, `x-amz-date`, and an access key that is the static one or a live STS-issued one with
//! its session token. The signature itself is verified by botocore in tests/e2e/sigv4_check.py.

use std::sync::Arc;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::Bytes;
use http::{Method, StatusCode};
use serde_json::json;

use crate::anthropic::{message_json, stream_events, INPUT_TOKENS};
use crate::body::MockBody;
use crate::eventstream::json_event;
use crate::routes::{js, json, respond, set_header, Req, Resp};
use crate::tokenwire::percent_decode;
use crate::{chunk_text, expected_text, Shared};

/// `invocationLatency` / `latencyMs` reported by every answer, in milliseconds.
const LATENCY_MS: u64 = 120;
/// `firstByteLatency` of the streamed answers, in milliseconds.
const FIRST_BYTE_MS: u64 = 40;

/// `(input, output)` tokens of a Bedrock answer with `chunks` text deltas: `(11, 2 * chunks +
/// 1)`, in the body and the `x-amzn-bedrock-*-token-count` headers (invoke, invoke stream's
/// message_delta and invocation metrics, converse usage).
pub fn bedrock_usage(chunks: usize) -> (usize, usize) {
    (INPUT_TOKENS, 2 * chunks + 1)
}

/// A Bedrock error: status, `{"message":..}` and `x-amzn-errortype: kind`.
fn error(shared: &Arc<Shared>, status: StatusCode, kind: &str, msg: &str) -> Resp {
    let mut resp = json(shared, status, json!({ "message": msg }).to_string());
    set_header(&mut resp, "x-amzn-errortype", kind);
    resp
}

/// The parts of `AWS4-HMAC-SHA256 Credential=AKID/DATE/REGION/SERVICE/aws4_request,
/// SignedHeaders=a;b, Signature=HEX`, or why it is malformed.
fn parse_authorization(value: &str) -> Result<(String, String), String> {
    let rest = value
        .strip_prefix("AWS4-HMAC-SHA256 ")
        .ok_or("Authorization header requires the AWS4-HMAC-SHA256 algorithm.")?;
    let mut credential = None;
    let mut signed = None;
    let mut signature = None;
    for part in rest.split(',').map(str::trim) {
        match part.split_once('=') {
            Some(("Credential", v)) => credential = Some(v),
            Some(("SignedHeaders", v)) => signed = Some(v),
            Some(("Signature", v)) => signature = Some(v),
            _ => return Err(format!("Unexpected Authorization element: {part}")),
        }
    }
    let (Some(credential), Some(signed), Some(signature)) = (credential, signed, signature) else {
        return Err("Authorization header requires 'Credential', 'SignedHeaders' and 'Signature' parameters.".into());
    };
    let scope: Vec<&str> = credential.split('/').collect();
    let [akid, date, region, service, "aws4_request"] = scope[..] else {
        return Err("Credential should be scoped to a valid region and service.".into());
    };
    if date.len() != 8 || !date.bytes().all(|b| b.is_ascii_digit()) || region.is_empty() {
        return Err("Credential should be scoped to a valid date and region.".into());
    }
    if service != "bedrock" {
        return Err(format!(
            "Credential should be scoped to correct service: 'bedrock'. (got '{service}')"
        ));
    }
    let hex64 = signature.len() == 64 && signature.bytes().all(|b| b.is_ascii_hexdigit());
    if !hex64 {
        return Err("Signature must be 64 hex digits.".into());
    }
    let names: Vec<&str> = signed.split(';').collect();
    if !names.contains(&"host") || !names.contains(&"x-amz-date") {
        return Err("SignedHeaders must include host and x-amz-date.".into());
    }
    Ok((akid.to_owned(), date.to_owned()))
}

/// `Err((x-amzn-errortype, message))` unless the request carries acceptable SigV4 credentials.
fn check_auth(shared: &Shared, req: &Req) -> Result<(), (&'static str, String)> {
    let forbidden = |kind: &'static str, msg: &str| Err((kind, msg.to_owned()));
    let Some(auth) = req.header("authorization") else {
        return forbidden(
            "MissingAuthenticationTokenException",
            "Missing Authentication Token",
        );
    };
    let (akid, date) = match parse_authorization(auth) {
        Ok(parts) => parts,
        Err(msg) => return forbidden("IncompleteSignatureException", &msg),
    };
    let amz_date = req.header("x-amz-date").unwrap_or_default();
    let date_ok = amz_date.len() == 16 && amz_date.starts_with(&date) && amz_date.ends_with('Z');
    if !date_ok {
        let msg = "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header matching the credential scope date.";
        return forbidden("IncompleteSignatureException", msg);
    }
    let invalid = "The security token included in the request is invalid.";
    if let Some(issued) = shared.cloud.lookup(&akid) {
        let live = issued.live();
        let session = issued.aws.map(|(_, s)| s).unwrap_or_default();
        if req.header("x-amz-security-token") != Some(session.as_str()) {
            return forbidden("UnrecognizedClientException", invalid);
        }
        if !live {
            let msg = "The security token included in the request is expired";
            return forbidden("ExpiredTokenException", msg);
        }
        return Ok(());
    }
    let shape_ok = (16..=128).contains(&akid.len())
        && akid
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
    match shared.cfg.aws_access_key_id.as_deref() {
        Some(want) if akid != want => forbidden("UnrecognizedClientException", invalid),
        None if !shape_ok => forbidden("UnrecognizedClientException", invalid),
        _ => Ok(()),
    }
}

/// Handles `/model/*`.
pub(crate) fn handle(shared: &Arc<Shared>, req: &Req) -> Resp {
    let mut resp = route(shared, req);
    set_header(&mut resp, "x-amzn-requestid", &shared.next_id());
    resp
}

fn route(shared: &Arc<Shared>, req: &Req) -> Resp {
    if let Err((kind, msg)) = check_auth(shared, req) {
        return error(shared, StatusCode::FORBIDDEN, kind, &msg);
    }
    let target = req
        .path
        .strip_prefix("/model/")
        .and_then(|r| r.rsplit_once('/'));
    let Some((raw_model, op)) = target.filter(|_| req.method == Method::POST) else {
        return error(
            shared,
            StatusCode::NOT_FOUND,
            "UnknownOperationException",
            "Unknown operation",
        );
    };
    let model = percent_decode(raw_model.as_bytes());
    if !matches!(req.json(), Ok(Some(_))) {
        let msg = "Malformed input request, please reformat your input and try again.";
        return error(shared, StatusCode::BAD_REQUEST, "ValidationException", msg);
    }
    let chunks = req.chunks();
    let (input, output) = bedrock_usage(chunks);
    match op {
        "invoke" => {
            let id = format!("msg_bdrk_{}", shared.next_id());
            let body = message_json(&id, &model, chunks, (input, output));
            let mut resp = json(shared, StatusCode::OK, body);
            set_header(
                &mut resp,
                "x-amzn-bedrock-input-token-count",
                &input.to_string(),
            );
            set_header(
                &mut resp,
                "x-amzn-bedrock-output-token-count",
                &output.to_string(),
            );
            set_header(
                &mut resp,
                "x-amzn-bedrock-invocation-latency",
                &LATENCY_MS.to_string(),
            );
            resp
        }
        "invoke-with-response-stream" => {
            let id = format!("msg_bdrk_{}", shared.next_id());
            let mut events = stream_events(&id, &model, chunks, (input, output));
            if let Some((_, last)) = events.last_mut() {
                *last = format!(
                    "{{\"type\":\"message_stop\",\"amazon-bedrock-invocationMetrics\":{{\"inputTokenCount\":{input},\"outputTokenCount\":{output},\"invocationLatency\":{LATENCY_MS},\"firstByteLatency\":{FIRST_BYTE_MS}}}}}"
                );
            }
            let messages = events
                .into_iter()
                .map(|(_, data)| {
                    let payload =
                        format!("{{\"bytes\":\"{}\",\"p\":\"abcd\"}}", STANDARD.encode(data));
                    json_event("chunk", &payload)
                })
                .collect();
            event_stream(shared, req, messages)
        }
        "converse" => {
            let body = format!(
                "{{\"output\":{{\"message\":{{\"role\":\"assistant\",\"content\":[{{\"text\":{}}}]}}}},\"stopReason\":\"end_turn\",\"usage\":{{\"inputTokens\":{input},\"outputTokens\":{output},\"totalTokens\":{}}},\"metrics\":{{\"latencyMs\":{LATENCY_MS}}}}}",
                js(&expected_text(chunks)),
                input + output
            );
            json(shared, StatusCode::OK, body)
        }
        "converse-stream" => {
            let mut messages = vec![json_event(
                "messageStart",
                r#"{"p":"abcd","role":"assistant"}"#,
            )];
            for i in 0..chunks {
                let delta = format!(
                    "{{\"contentBlockIndex\":0,\"delta\":{{\"text\":{}}},\"p\":\"abcd\"}}",
                    js(&chunk_text(i))
                );
                messages.push(json_event("contentBlockDelta", &delta));
            }
            messages.push(json_event(
                "contentBlockStop",
                r#"{"contentBlockIndex":0,"p":"abcd"}"#,
            ));
            messages.push(json_event(
                "messageStop",
                r#"{"p":"abcd","stopReason":"end_turn"}"#,
            ));
            let metadata = format!(
                "{{\"metrics\":{{\"latencyMs\":{LATENCY_MS}}},\"p\":\"abcd\",\"usage\":{{\"inputTokens\":{input},\"outputTokens\":{output},\"totalTokens\":{}}}}}",
                input + output
            );
            messages.push(json_event("metadata", &metadata));
            event_stream(shared, req, messages)
        }
        _ => error(
            shared,
            StatusCode::NOT_FOUND,
            "UnknownOperationException",
            "Unknown operation",
        ),
    }
}

/// An event-stream response of `messages`, one per body frame (paced like the SSE routes), or
/// each split in two frames when the request has `x-mock-split-frames: 1`.
fn event_stream(shared: &Arc<Shared>, req: &Req, messages: Vec<Bytes>) -> Resp {
    let frames = if req.header("x-mock-split-frames") == Some("1") {
        messages
            .into_iter()
            .flat_map(|m| {
                let half = m.len() / 2;
                [m.slice(..half), m.slice(half..)]
            })
            .collect()
    } else {
        messages
    };
    let body = MockBody::frames(shared, req.gap(shared), frames);
    let mut resp = respond(StatusCode::OK, "application/vnd.amazon.eventstream", body);
    set_header(&mut resp, "x-amzn-bedrock-content-type", "application/json");
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    const AUTH: &str = "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE0000001/20261204/us-east-1/bedrock/aws4_request, SignedHeaders=content-type;host;x-amz-date, Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7";

    #[test]
    fn authorization_parts() {
        let (akid, date) = parse_authorization(AUTH).unwrap();
        assert_eq!(
            (akid.as_str(), date.as_str()),
            ("AKIDEXAMPLE0000001", "20261204")
        );
        for bad in [
            AUTH.replace("AWS4-HMAC-SHA256", "AWS4-HMAC-SHA1"),
            AUTH.replace("/bedrock/", "/s3/"),
            AUTH.replace("/aws4_request", "/aws5_request"),
            AUTH.replace("20261204", "2026124"),
            AUTH.replace("Signature=5d", "Signature=5"),
            AUTH.replace("host;", ""),
            AUTH.replace(", Signature=", ", Sig="),
        ] {
            assert!(parse_authorization(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn usage_is_deterministic() {
        assert_eq!(bedrock_usage(0), (11, 1));
        assert_eq!(bedrock_usage(5), (11, 11));
    }
}
