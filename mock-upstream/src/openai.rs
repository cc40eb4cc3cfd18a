//! OpenAI-shaped routes: chat completions (JSON and SSE), the Responses API (JSON and SSE),
//! the model list, and OpenAI-shaped errors (401, 400, unknown URL 404). Chat completions are
//! shared with Azure OpenAI (src/azure.rs).

use std::sync::Arc;

use bytes::Bytes;
use http::{Method, StatusCode};

use crate::body::MockBody;
use crate::routes::{credential_ok, js, json, set_header, sse, unix_secs, Req, Resp, Scheme};
use crate::{chunk_text, expected_text, Shared};

/// `prompt_tokens` / `input_tokens` reported by every generated answer.
const PROMPT_TOKENS: usize = 11;
const DEFAULT_MODEL: &str = "gpt-4o-mini";
const SSE_TYPE: &str = "text/event-stream; charset=utf-8";

/// Parameters of one generation request.
pub(crate) struct Gen {
    model: String,
    stream: bool,
    include_usage: bool,
    chunks: usize,
}

/// Adds the headers the real API sends on every response.
fn decorate(shared: &Shared, mut resp: Resp) -> Resp {
    set_header(
        &mut resp,
        "x-request-id",
        &format!("req_{}", shared.next_id()),
    );
    set_header(&mut resp, "openai-processing-ms", "1");
    set_header(&mut resp, "openai-version", "2020-10-01");
    resp
}

fn error(shared: &Arc<Shared>, status: StatusCode, message: &str, code: Option<&str>) -> Resp {
    let code = code.map(js).unwrap_or_else(|| "null".into());
    let body = format!(
        "{{\"error\":{{\"message\":{},\"type\":\"invalid_request_error\",\"param\":null,\"code\":{code}}}}}",
        js(message)
    );
    json(shared, status, body)
}

/// Handles every path that is not `/mock/*`, `/v1/messages*` or `/v1beta/*`.
pub(crate) fn handle(shared: &Arc<Shared>, req: &Req) -> Resp {
    if !credential_ok(shared, req, Scheme::Bearer) {
        let msg = "Incorrect API key provided.";
        let resp = error(
            shared,
            StatusCode::UNAUTHORIZED,
            msg,
            Some("invalid_api_key"),
        );
        return decorate(shared, resp);
    }
    let path = req.path.strip_prefix("/v1").unwrap_or(&req.path);
    let resp = match (&req.method, path) {
        (&Method::POST, "/chat/completions") => match parse(req) {
            Some(gen) => chat(shared, req, gen),
            None => bad_json(shared),
        },
        (&Method::POST, "/responses") => match parse(req) {
            Some(gen) => responses(shared, req, gen),
            None => bad_json(shared),
        },
        (&Method::GET, "/models") => json(shared, StatusCode::OK, models()),
        _ => {
            let msg = format!("Invalid URL ({} {})", req.method, req.path);
            error(shared, StatusCode::NOT_FOUND, &msg, None)
        }
    };
    decorate(shared, resp)
}

/// The generation parameters of the request, or None when its body is not valid JSON.
pub(crate) fn parse(req: &Req) -> Option<Gen> {
    let mut gen = Gen {
        model: DEFAULT_MODEL.into(),
        stream: false,
        include_usage: false,
        chunks: req.chunks(),
    };
    if let Some(v) = req.json().ok()? {
        if let Some(m) = v.get("model").and_then(|m| m.as_str()) {
            gen.model = m.to_owned();
        }
        gen.stream = v.get("stream").and_then(|s| s.as_bool()) == Some(true);
        gen.include_usage = v
            .pointer("/stream_options/include_usage")
            .and_then(|s| s.as_bool())
            == Some(true);
    }
    Some(gen)
}

pub(crate) fn bad_json(shared: &Arc<Shared>) -> Resp {
    let msg = "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON.)";
    error(shared, StatusCode::BAD_REQUEST, msg, None)
}

fn models() -> String {
    let ids = ["gpt-4o-mini", "gpt-4o", "gpt-4.1-mini", "o4-mini"];
    let data: Vec<String> = ids
        .iter()
        .map(|id| {
            format!("{{\"id\":\"{id}\",\"object\":\"model\",\"created\":1715367049,\"owned_by\":\"system\"}}")
        })
        .collect();
    format!("{{\"object\":\"list\",\"data\":[{}]}}", data.join(","))
}

fn chat_usage(chunks: usize) -> String {
    format!(
        "{{\"prompt_tokens\":{PROMPT_TOKENS},\"completion_tokens\":{chunks},\"total_tokens\":{},\"prompt_tokens_details\":{{\"cached_tokens\":0,\"audio_tokens\":0}},\"completion_tokens_details\":{{\"reasoning_tokens\":0,\"audio_tokens\":0,\"accepted_prediction_tokens\":0,\"rejected_prediction_tokens\":0}}}}",
        PROMPT_TOKENS + chunks
    )
}

pub(crate) fn chat(shared: &Arc<Shared>, req: &Req, gen: Gen) -> Resp {
    let id = format!("chatcmpl-{}", shared.next_id());
    let created = unix_secs();
    let model = js(&gen.model);
    if !gen.stream {
        let body = format!(
            "{{\"id\":\"{id}\",\"object\":\"chat.completion\",\"created\":{created},\"model\":{model},\"choices\":[{{\"index\":0,\"message\":{{\"role\":\"assistant\",\"content\":{},\"refusal\":null,\"annotations\":[]}},\"logprobs\":null,\"finish_reason\":\"stop\"}}],\"usage\":{},\"service_tier\":\"default\",\"system_fingerprint\":\"fp_mock\"}}",
            js(&expected_text(gen.chunks)),
            chat_usage(gen.chunks)
        );
        return json(shared, StatusCode::OK, body);
    }
    let chunk = |rest: &str| {
        Bytes::from(format!(
            "data: {{\"id\":\"{id}\",\"object\":\"chat.completion.chunk\",\"created\":{created},\"model\":{model},{rest}}}\n\n"
        ))
    };
    let choice = |delta: &str, finish: &str| {
        format!("\"choices\":[{{\"index\":0,\"delta\":{delta},\"finish_reason\":{finish}}}]")
    };
    let mut frames = vec![chunk(&choice(
        r#"{"role":"assistant","content":""}"#,
        "null",
    ))];
    for i in 0..gen.chunks {
        let delta = format!("{{\"content\":{}}}", js(&chunk_text(i)));
        frames.push(chunk(&choice(&delta, "null")));
    }
    frames.push(chunk(&choice("{}", "\"stop\"")));
    if gen.include_usage {
        frames.push(chunk(&format!(
            "\"choices\":[],\"usage\":{}",
            chat_usage(gen.chunks)
        )));
    }
    frames.push(Bytes::from_static(b"data: [DONE]\n\n"));
    sse(SSE_TYPE, MockBody::frames(shared, req.gap(shared), frames))
}

/// A Responses API `response` object.
fn response_obj(
    id: &str,
    created: u64,
    model: &str,
    status: &str,
    output: &str,
    usage: &str,
) -> String {
    format!(
        "{{\"id\":\"{id}\",\"object\":\"response\",\"created_at\":{created},\"status\":\"{status}\",\"error\":null,\"incomplete_details\":null,\"model\":{model},\"output\":[{output}],\"parallel_tool_calls\":true,\"tool_choice\":\"auto\",\"tools\":[],\"usage\":{usage}}}"
    )
}

fn responses(shared: &Arc<Shared>, req: &Req, gen: Gen) -> Resp {
    let id = format!("resp_{}", shared.next_id());
    let msg_id = format!("msg_{}", shared.next_id());
    let created = unix_secs();
    let model = js(&gen.model);
    let text = js(&expected_text(gen.chunks));
    let usage = format!(
        "{{\"input_tokens\":{PROMPT_TOKENS},\"input_tokens_details\":{{\"cached_tokens\":0}},\"output_tokens\":{},\"output_tokens_details\":{{\"reasoning_tokens\":0}},\"total_tokens\":{}}}",
        gen.chunks,
        PROMPT_TOKENS + gen.chunks
    );
    let part = format!("{{\"type\":\"output_text\",\"annotations\":[],\"text\":{text}}}");
    let item = |status: &str, content: &str| {
        format!("{{\"id\":\"{msg_id}\",\"type\":\"message\",\"status\":\"{status}\",\"role\":\"assistant\",\"content\":[{content}]}}")
    };
    let done_item = item("completed", &part);
    let completed = response_obj(&id, created, &model, "completed", &done_item, &usage);
    if !gen.stream {
        return json(shared, StatusCode::OK, completed);
    }
    let in_progress = response_obj(&id, created, &model, "in_progress", "", "null");
    let loc = format!("\"item_id\":\"{msg_id}\",\"output_index\":0,\"content_index\":0");
    let mut events: Vec<(&str, String)> = vec![
        ("response.created", format!("\"response\":{in_progress}")),
        (
            "response.in_progress",
            format!("\"response\":{in_progress}"),
        ),
        (
            "response.output_item.added",
            format!("\"output_index\":0,\"item\":{}", item("in_progress", "")),
        ),
        (
            "response.content_part.added",
            format!("{loc},\"part\":{{\"type\":\"output_text\",\"annotations\":[],\"text\":\"\"}}"),
        ),
    ];
    for i in 0..gen.chunks {
        let delta = format!("{loc},\"delta\":{}", js(&chunk_text(i)));
        events.push(("response.output_text.delta", delta));
    }
    events.push((
        "response.output_text.done",
        format!("{loc},\"text\":{text}"),
    ));
    events.push((
        "response.content_part.done",
        format!("{loc},\"part\":{part}"),
    ));
    events.push((
        "response.output_item.done",
        format!("\"output_index\":0,\"item\":{done_item}"),
    ));
    events.push(("response.completed", format!("\"response\":{completed}")));
    let frames = events
        .into_iter()
        .enumerate()
        .map(|(seq, (kind, rest))| {
            Bytes::from(format!(
                "event: {kind}\ndata: {{\"type\":\"{kind}\",\"sequence_number\":{seq},{rest}}}\n\n"
            ))
        })
        .collect();
    sse(SSE_TYPE, MockBody::frames(shared, req.gap(shared), frames))
}
