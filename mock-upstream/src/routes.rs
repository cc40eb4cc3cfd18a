//! Request dispatch: read and record the body, then route to the test-control (`/mock/*`),
//! cloud (token services, Bedrock, Vertex, Azure: [`cloud_route`]), Anthropic
//! (`/v1/messages*`), Gemini (`/v1beta/*`) or OpenAI handlers. Also the shared request/response
//! helpers and the credential check.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::body::{MockBody, Step};
use crate::record::{self, BodyRead, ConnInfo, Recorded, RECORD_LIMIT};
use crate::{
    anthropic, aws, azure, cloud, gemini, google, idp, openai, sts, tokenwire, vertex, Shared,
};

/// Provider routes buffer up to this much body to parse it as JSON.
const PARSE_LIMIT: usize = 64 << 20;
/// Frame size of `/mock/large`.
const LARGE_FRAME: usize = 16 * 1024;

pub(crate) type Resp = Response<MockBody>;

/// A request whose body has been read completely.
pub(crate) struct Req {
    pub(crate) method: Method,
    pub(crate) path: String,
    pub(crate) query: Option<String>,
    pub(crate) headers: HeaderMap,
    pub(crate) body: BodyRead,
}

impl Req {
    /// Raw (not percent-decoded) value of query parameter `name`.
    pub(crate) fn query(&self, name: &str) -> Option<&str> {
        self.query.as_deref()?.split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (k == name).then_some(v)
        })
    }

    pub(crate) fn query_u64(&self, name: &str, default: u64) -> u64 {
        self.query(name)
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    }

    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Number of generated content deltas: header `x-mock-chunks`, default 5.
    pub(crate) fn chunks(&self) -> usize {
        self.header("x-mock-chunks")
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(5)
    }

    /// Gap between generated SSE frames: header `x-mock-gap-ms`, else the configured gap.
    pub(crate) fn gap(&self, shared: &Shared) -> Duration {
        self.header("x-mock-gap-ms")
            .and_then(|v| v.trim().parse().ok())
            .map(Duration::from_millis)
            .unwrap_or(shared.cfg.sse_gap)
    }

    /// The body as JSON: `Err` when it is not valid JSON, `Ok(None)` when it was too large to
    /// buffer (the caller then uses defaults).
    pub(crate) fn json(&self) -> Result<Option<serde_json::Value>, ()> {
        if !self.body.is_whole() {
            return Ok(None);
        }
        serde_json::from_slice(&self.body.kept)
            .map(Some)
            .map_err(|_| ())
    }
}

/// Which request header carries the provider credential.
#[derive(Clone, Copy)]
pub(crate) enum Scheme {
    /// `authorization: Bearer K` (OpenAI and compatible).
    Bearer,
    /// `x-api-key: K` (Anthropic).
    XApiKey,
    /// `x-goog-api-key: K` or query `key=K` (Gemini).
    Goog,
}

/// The token of `authorization: Bearer T`.
pub(crate) fn bearer(req: &Req) -> Option<&str> {
    let (kind, token) = req.header("authorization")?.trim().split_once(' ')?;
    kind.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// True when the request carries a credential acceptable under the config.
pub(crate) fn credential_ok(shared: &Shared, req: &Req, scheme: Scheme) -> bool {
    let presented = match scheme {
        Scheme::Bearer => bearer(req),
        Scheme::XApiKey => req.header("x-api-key"),
        Scheme::Goog => req.header("x-goog-api-key").or_else(|| req.query("key")),
    };
    match (presented, shared.cfg.expected_key.as_deref()) {
        (None, _) => false,
        (Some(got), Some(want)) => got == want,
        (Some(got), None) => !got.is_empty(),
    }
}

/// JSON string literal for `s`.
pub(crate) fn js(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

pub(crate) fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub(crate) fn unix_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// A response with `content-type` and the given body.
pub(crate) fn respond(status: StatusCode, content_type: &'static str, body: MockBody) -> Resp {
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static(content_type),
    );
    resp
}

/// A JSON response.
pub(crate) fn json(shared: &Arc<Shared>, status: StatusCode, body: String) -> Resp {
    respond(status, "application/json", MockBody::full(shared, body))
}

/// An SSE response (adds `cache-control: no-cache`).
pub(crate) fn sse(content_type: &'static str, body: MockBody) -> Resp {
    let mut resp = respond(StatusCode::OK, content_type, body);
    resp.headers_mut().insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache"),
    );
    resp
}

/// Adds header `name: value` when `value` is a valid header value.
pub(crate) fn set_header(resp: &mut Resp, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        resp.headers_mut().insert(name, v);
    }
}

/// Reads and records the request, then answers it.
pub(crate) async fn handle(
    shared: Arc<Shared>,
    info: Arc<ConnInfo>,
    req: Request<Incoming>,
) -> Resp {
    if crate::ws::is_upgrade(&req) {
        return crate::ws::handle(shared, info, req).await; // WebSocket echo (src/ws.rs)
    }
    let (parts, body) = req.into_parts();
    // `/v1/mock/*` too: an OpenAI-style base path puts `/v1` before every proxied path.
    let raw_path = parts.uri.path();
    let path = match raw_path.strip_prefix("/v1") {
        Some(rest) if rest == "/mock" || rest.starts_with("/mock/") => rest.to_owned(),
        _ => raw_path.to_owned(),
    };
    let is_mock = path == "/mock" || path.starts_with("/mock/");
    let keep = if is_mock { RECORD_LIMIT } else { PARSE_LIMIT };
    let read = record::read_body(body, keep).await;
    shared.push_record(Recorded::new(&parts, &info, &read));
    if !read.complete {
        return json(
            &shared,
            StatusCode::BAD_REQUEST,
            r#"{"error":"request body failed"}"#.into(),
        );
    }
    let req = Req {
        method: parts.method,
        query: parts.uri.query().map(str::to_owned),
        path,
        headers: parts.headers,
        body: read,
    };
    let resp = if is_mock {
        return mock_route(&shared, &req).await;
    } else if let Some(resp) = cloud_route(&shared, &req) {
        resp
    } else if req.path.starts_with("/v1/messages") {
        anthropic::handle(&shared, &req)
    } else if req.path.starts_with("/v1beta/") {
        gemini::handle(&shared, &req)
    } else {
        openai::handle(&shared, &req)
    };
    // Like the real APIs: gzip when the client accepts it.
    let gzip = req
        .header("accept-encoding")
        .is_some_and(|v| v.contains("gzip"));
    let event_stream = resp
        .headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| {
            v.as_bytes()
                .starts_with(b"application/vnd.amazon.eventstream")
        });
    if gzip && resp.status() == StatusCode::OK && !event_stream {
        let (mut parts, body) = resp.into_parts();
        parts.headers.remove(http::header::CONTENT_LENGTH);
        parts.headers.insert(
            http::header::CONTENT_ENCODING,
            HeaderValue::from_static("gzip"),
        );
        return Response::from_parts(parts, body.gzipped());
    }
    resp
}

/// The cloud routes: token services (GitHub OIDC, AWS STS, Google OAuth/STS/IAM, Entra ID) and
/// the providers that accept their credentials (Bedrock, Vertex AI, Azure OpenAI).
fn cloud_route(shared: &Arc<Shared>, req: &Req) -> Option<Resp> {
    const IAM: [&str; 2] = [
        "/google/iam/v1/projects/-/serviceAccounts/",
        "/v1/projects/-/serviceAccounts/",
    ];
    let p = req.path.as_str();
    let post = req.method == Method::POST;
    let iam = IAM
        .iter()
        .find_map(|prefix| p.strip_prefix(prefix)?.strip_suffix(":generateAccessToken"));
    let entra = p
        .strip_prefix("/entra/")
        .and_then(|rest| rest.strip_suffix("/oauth2/v2.0/token"));
    Some(if p == "/oidc/token" {
        idp::oidc(shared, req)
    } else if let Some(tenant) = entra {
        idp::entra(shared, req, tenant)
    } else if p == "/sts" || p == "/sts/" || (p == "/" && post && sts::is_sts_form(req)) {
        sts::handle(shared, req)
    } else if p == "/google/token" {
        google::token(shared, req)
    } else if p == "/google/sts/v1/token" {
        google::sts(shared, req)
    } else if let Some(email) = iam {
        google::impersonate(shared, req, &tokenwire::percent_decode(email.as_bytes()))
    } else if p.starts_with("/model/") {
        aws::handle(shared, req)
    } else if vertex::is_vertex(p) {
        vertex::handle(shared, req)
    } else if p.starts_with("/openai/") {
        azure::handle(shared, req)
    } else {
        return None;
    })
}

/// `/mock/requests?last=N` (default 20): the last N recorded requests that were not `/mock/*`
/// control requests, oldest first, as [`Recorded::to_json`].
fn recent_requests(shared: &Arc<Shared>, req: &Req) -> Resp {
    let last = req.query_u64("last", 20) as usize;
    let records = shared.records();
    let mut picked: Vec<serde_json::Value> = records
        .iter()
        .rev()
        .filter(|r| {
            let p = r.path_and_query.as_str();
            !(p.starts_with("/mock/") || p.starts_with("/v1/mock/"))
        })
        .take(last)
        .map(Recorded::to_json)
        .collect();
    drop(records);
    picked.reverse();
    json(
        shared,
        StatusCode::OK,
        serde_json::Value::Array(picked).to_string(),
    )
}

/// One `/mock/sse`-style event: `id: i` and a JSON data line of about `size` bytes carrying the
/// send timestamp (taken now, i.e. right before the frame is handed to hyper).
fn sse_event(i: usize, size: usize) -> Bytes {
    let head = format!("{{\"i\":{i},\"sent_ns\":{},\"pad\":\"", unix_nanos());
    let pad = size.saturating_sub(head.len() + 2);
    let mut s = String::with_capacity(head.len() + pad + 24);
    let _ = write!(s, "id: {i}\ndata: {head}");
    s.extend(std::iter::repeat_n('x', pad));
    s.push_str("\"}\n\n");
    Bytes::from(s)
}

/// The `/mock/*` test-control routes (no credential needed, any method).
async fn mock_route(shared: &Arc<Shared>, req: &Req) -> Resp {
    let route = req.path.trim_start_matches("/mock/");
    match route {
        "echo" => {
            let body = format!(
                "{{\"len\":{},\"sha256\":\"{}\",\"method\":{},\"path\":{}}}",
                req.body.len,
                req.body.sha256,
                js(req.method.as_str()),
                js(&req.path)
            );
            json(shared, StatusCode::OK, body)
        }
        "sse" => {
            let events = req.query_u64("events", 5) as usize;
            let gap = Duration::from_millis(req.query_u64("gap_ms", 50));
            let size = req.query_u64("size", 64) as usize;
            let body = MockBody::paced(shared, gap, None, move |i| match i {
                i if i + 1 < events => Step::Data(sse_event(i, size)),
                i if i + 1 == events => Step::Last(sse_event(i, size)),
                _ => Step::End,
            });
            sse("text/event-stream", body)
        }
        "delay-headers" => {
            let ms = req.query_u64("ms", 0);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            json(shared, StatusCode::OK, format!("{{\"delayed_ms\":{ms}}}"))
        }
        "abort" => {
            let after = req.query_u64("after", 0) as usize;
            let gap = Duration::from_millis(10);
            let body = MockBody::paced(shared, gap, None, move |i| {
                if i < after {
                    Step::Data(sse_event(i, 64))
                } else {
                    Step::Fail
                }
            });
            sse("text/event-stream", body)
        }
        "hang" => {
            let body = MockBody::paced(shared, Duration::ZERO, None, |i| match i {
                0 => Step::Data(sse_event(0, 64)),
                _ => Step::Hang,
            });
            sse("text/event-stream", body)
        }
        "large" => large(shared, req.query_u64("bytes", 1 << 20)),
        "requests" => recent_requests(shared, req),
        _ if route.starts_with("cloud/") => cloud::control(shared, req, &route[6..]),
        _ => match route.strip_prefix("status/").map(str::parse::<u16>) {
            Some(Ok(code)) => status(shared, req, code),
            _ => json(
                shared,
                StatusCode::NOT_FOUND,
                format!(
                    "{{\"error\":{}}}",
                    js(&format!("no mock route {}", req.path))
                ),
            ),
        },
    }
}

/// `/mock/status/{code}`: that status with body `{"status":code}` (empty for 204/304);
/// optional query `retry_after=S` adds a `retry-after` header.
fn status(shared: &Arc<Shared>, req: &Req, code: u16) -> Resp {
    let Some(status) = StatusCode::from_u16(code).ok().filter(|_| code >= 200) else {
        return json(
            shared,
            StatusCode::BAD_REQUEST,
            format!("{{\"error\":\"unsupported status {code}\"}}"),
        );
    };
    let body = match code {
        204 | 304 => String::new(),
        _ => format!("{{\"status\":{code}}}"),
    };
    let mut resp = json(shared, status, body);
    if let Some(secs) = req.query("retry_after") {
        set_header(&mut resp, "retry-after", secs);
    }
    resp
}

/// `/mock/large?bytes=N`: N deterministic bytes (byte j = j % 251) in 16 KiB frames.
fn large(shared: &Arc<Shared>, total: u64) -> Resp {
    // One pattern buffer; every frame is a zero-copy slice of it.
    let pattern: Bytes = (0..LARGE_FRAME + 251).map(|j| (j % 251) as u8).collect();
    let body = MockBody::paced(shared, Duration::ZERO, Some(total), move |i| {
        let start = (i as u64).saturating_mul(LARGE_FRAME as u64);
        if start >= total {
            return Step::End;
        }
        let len = (total - start).min(LARGE_FRAME as u64) as usize;
        let off = (start % 251) as usize;
        let data = pattern.slice(off..off + len);
        if start + len as u64 == total {
            Step::Last(data)
        } else {
            Step::Data(data)
        }
    });
    respond(StatusCode::OK, "application/octet-stream", body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_event_has_requested_size() {
        let ev = sse_event(3, 200);
        let text = std::str::from_utf8(&ev).unwrap();
        assert!(text.starts_with("id: 3\ndata: {\"i\":3,\"sent_ns\":"));
        assert!(text.ends_with("\"}\n\n"));
        let data = text.lines().nth(1).unwrap().trim_start_matches("data: ");
        assert_eq!(data.len(), 200);
        let v: serde_json::Value = serde_json::from_str(data).unwrap();
        assert!(v["sent_ns"].as_u64().unwrap() > 0);
    }
}
