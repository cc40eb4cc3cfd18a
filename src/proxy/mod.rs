//! The request path as named steps (docs/design.md §5):
//!
//! ```text
//! client ─▶ handle: /health, /reflect, /metrics (first port) answered locally; request id (5.1);
//!                   span begun (tracing on: ids, the client's traceparent, start time; §8d)
//!        ─▶ admit: draining? ─▶ check_target (5.2) ─▶ check_caller ─▶ key configured?
//!                  ─▶ allow-list ─▶ check_declared_size (5.4)
//!        ─▶ limits: rate limit ─▶ budgets (this process's, or one Redis round trip with
//!           shared_state, §8c)
//!        ─▶ WebSocket upgrade? websocket::open (5.7), tunnelled
//!        ─▶ request_body (streamed and capped; read first only for a model allow-list or a
//!           streamed chat request that gets include_usage: stream_usage)
//!        ─▶ upstream_request (5.3: strip, inject, rewrite path; Accept-Encoding decodable only;
//!           trace context removed or replaced, span.rs)
//!        ─▶ send (5.5: the worker's pool, request_timeout)
//!        ─▶ client_response (5.6: hop-by-hop out, body streamed frame by frame; an upstream
//!           400/401/403 logs upstream_auth_error) ─▶ client
//!        ─▶ completion (when the body ends: metrics, usage, budgets, request_complete, the
//!           span ended and queued for export; a refused request's span ends in log_error)
//! ```
//!
//! Every failure is a `ProxyError` answered as JSON and logged as `request_error`; answers that
//! come from the upstream are logged as `request_complete` when their body ends.

pub mod body;
mod completion;
pub mod endpoints;
pub mod error;
pub mod headers;
mod limits;
mod route;
mod span;
pub mod stream_usage;
mod tunnel_idle;
pub mod websocket;
mod ws_tap;

pub use route::{Common, Route};

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use http::uri::{PathAndQuery, Uri};
use http::{header, HeaderValue, Method, Request, Response, Version};
use hyper::body::Incoming;
use prometheus_client::metrics::gauge::Gauge;

use crate::config::plan::Credential;
use crate::policy::access::Target;
use crate::proxy::body::{ProxyBody, RequestBody, RequestStats, ResponseBody};
use crate::proxy::error::ProxyError;
use crate::telemetry::logging::{log_path, redact_sensitive};
use crate::telemetry::usage::UsageTap;
use crate::upstream::pool::{SendError, UpstreamBody};
use completion::Completion;

/// What every log line of one request carries.
pub(crate) struct RequestInfo {
    pub(crate) request_id: HeaderValue,
    pub(crate) method: Method,
    pub(crate) path: String,
    pub(crate) start: Instant,
    /// The request's span, begun when it arrived (tracing on and sampled).
    pub(crate) span: Option<crate::telemetry::otel::SpanStart>,
}

/// Decrements a gauge when dropped (active requests, active streams).
pub(crate) struct Active(Gauge);

impl Active {
    pub(crate) fn new(g: &Gauge) -> Active {
        g.inc();
        Active(g.clone())
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The hyper service of a provider listener.
pub async fn handle(
    route: Arc<Route>,
    directory: Arc<endpoints::Directory>,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    if let Some(resp) = endpoints::answer(&route, &directory, &req) {
        return Ok(resp);
    }
    let active = Active::new(&route.metrics.active_requests);
    let info = RequestInfo {
        request_id: headers::request_id(req.headers()),
        method: req.method().clone(),
        path: log_path(req.uri().path_and_query().map_or("", |p| p.as_str())).into_owned(),
        start: Instant::now(),
        span: span::begin(&route, req.headers()),
    };
    match forward(&route, req, &info, active).await {
        Ok(resp) => Ok(resp),
        Err(err) => {
            let m = &route.metrics;
            m.request(err.status().as_u16());
            m.rejection(err.reason());
            if let Some(kind) = err.upstream_kind() {
                m.upstream_error(kind);
            }
            m.duration.observe(info.start.elapsed().as_secs_f64());
            log_error(&route, &info, &err);
            Ok(err.into_response(&route.provider.name, &info.request_id))
        }
    }
}

async fn forward(
    route: &Arc<Route>,
    req: Request<Incoming>,
    info: &RequestInfo,
    active: Active,
) -> Result<Response<ProxyBody>, ProxyError> {
    let admitted = admit(route, &req)?;
    limits::check(route, admitted.declared, admitted.caller).await?;
    // WebSocket upgrades (docs/design.md §5.7) are tunnelled, not proxied request by request.
    if admitted.websocket {
        return match websocket::open(route, req, &admitted.target, info, active, admitted.caller)
            .await?
        {
            websocket::Opened::Switched(resp) => Ok(*resp),
            websocket::Opened::Refused(resp, active) => {
                let ttfb = info.start.elapsed();
                let resp = resp.map(UpstreamBody::from);
                let caller = admitted.caller;
                Ok(client_response(
                    route,
                    resp,
                    info,
                    Arc::default(),
                    active,
                    ttfb,
                    caller,
                ))
            }
        };
    }
    let stats = Arc::new(RequestStats::default());
    let (mut parts, body) = req.into_parts();
    let body = request_body(route, &mut parts, body, &stats, &admitted.credential).await?;
    let upstream_req = upstream_request(route, parts, body, &admitted, info)?;
    let sent_at = Instant::now();
    let resp = send(route, upstream_req, &stats).await?;
    let ttfb = sent_at.elapsed();
    route.metrics.ttfb.observe(ttfb.as_secs_f64());
    Ok(client_response(
        route,
        resp,
        info,
        stats,
        active,
        ttfb,
        admitted.caller,
    ))
}

/// What the checks of steps 1-4 found for a request they let through.
struct Admitted {
    /// The path as the allow-list checked it: the one forwarded (docs/design.md §2b).
    target: Target,
    websocket: bool,
    caller: Option<usize>,
    credential: Credential,
    /// The declared body length (0 when none), which rate limits count.
    declared: u64,
}

/// Steps 1-4b: every check before the limits (`limits::check`, which may wait on Redis).
fn admit(route: &Route, req: &Request<Incoming>) -> Result<Admitted, ProxyError> {
    if route.draining.load(Ordering::Relaxed) {
        return Err(ProxyError::ShuttingDown);
    }
    let pq = check_target(req)?;
    let websocket = websocket::requested(req)?;
    let caller = check_caller(route, req)?;
    let credential = route.key.get();
    if let Credential::Missing(why) = &credential {
        return Err(match &route.provider.cloud {
            None => ProxyError::NotConfigured(None),
            Some(c) if crate::config::cloud::web_identity_missing_of(c).is_some() => {
                ProxyError::NotConfigured(Some(why.clone()))
            }
            Some(_) => ProxyError::CredentialPending(why.clone()),
        });
    }
    let allow = route.provider.allow.as_deref();
    let target = Target::admit(allow, req.method(), pq, &route.provider.name)
        .map_err(ProxyError::NotAllowed)?;
    let declared = check_declared_size(req, route.limits.max_request_body)?;
    Ok(Admitted {
        target,
        websocket,
        caller,
        credential,
        declared,
    })
}

/// Step 4b: the body, streamed and capped; read first (bounded by the cap) only when a model
/// allow-list must look at it, a SigV4 signature covers it (docs/cloud.md), or a streamed
/// chat request may need `include_usage` (`stream_usage`, docs/design.md §5.4), which then
/// changes it and its `Content-Length`.
async fn request_body(
    route: &Route,
    parts: &mut http::request::Parts,
    body: Incoming,
    stats: &Arc<RequestStats>,
    credential: &Credential,
) -> Result<RequestBody, ProxyError> {
    let cap = route.limits.max_request_body;
    let models = route.provider.models.as_deref();
    let (method, path) = (&parts.method, parts.uri.path());
    let add_usage = stream_usage::applies(route, method, path, &parts.headers);
    let signed = matches!(credential, Credential::Aws(_));
    if models.is_none() && !add_usage && !signed {
        return Ok(RequestBody::new(body, cap, stats.clone()));
    }
    let mut bytes = match http_body::Body::is_end_stream(&body) {
        true => bytes::Bytes::new(),
        false => read_capped(body, cap).await?,
    };
    if let Some(models) = models.filter(|_| !bytes.is_empty()) {
        crate::policy::access::check_model(models, &bytes, &route.provider.name)
            .map_err(ProxyError::NotAllowed)?;
    }
    if let Some(changed) = add_usage
        .then(|| stream_usage::with_include_usage(&bytes))
        .flatten()
    {
        if parts.headers.contains_key(header::CONTENT_LENGTH) {
            parts
                .headers
                .insert(header::CONTENT_LENGTH, HeaderValue::from(changed.len()));
        }
        bytes = changed;
    }
    Ok(RequestBody::buffered(bytes, stats.clone()))
}

/// Step 5: the worker's pool sends it, within `request_timeout` for the response headers.
/// A failure is first the body's (cut at the cap: 413; malformed: 400), then the upstream's.
async fn send(
    route: &Route,
    req: Request<RequestBody>,
    stats: &RequestStats,
) -> Result<Response<UpstreamBody>, ProxyError> {
    let pool = route.pool().ok_or_else(|| ProxyError::Unavailable {
        kind: "connect",
        message: "no upstream pool on this thread".into(),
    })?;
    let sent = tokio::time::timeout(route.limits.request_timeout, pool.send(req)).await;
    match sent {
        Ok(Ok(resp)) => Ok(resp),
        _ if stats.too_large.load(Ordering::Relaxed) => Err(ProxyError::TooLarge {
            limit: route.limits.max_request_body,
        }),
        _ if stats.client_failed.load(Ordering::Relaxed) => Err(ProxyError::InvalidRequest(
            "the request body is malformed (e.g. an invalid chunk size) or ended early".into(),
        )),
        Ok(Err(err)) => Err(classify(err)),
        Err(_) => Err(ProxyError::Timeout(route.limits.request_timeout)),
    }
}

/// Step 2: origin-form only; the upstream host is fixed by config.
pub fn check_target<B>(req: &Request<B>) -> Result<PathAndQuery, ProxyError> {
    let uri = req.uri();
    if req.method() == Method::CONNECT {
        return Err(ProxyError::InvalidRequest(
            "CONNECT is not supported: send origin-form requests such as `POST /v1/chat/completions`".into(),
        ));
    }
    // HTTP/2 always carries :scheme and :authority; HTTP/1.x must use origin-form.
    if req.version() < Version::HTTP_2 && (uri.scheme().is_some() || uri.authority().is_some()) {
        return Err(ProxyError::InvalidRequest(
            "absolute-form request targets are not accepted: send the path only, e.g. `POST /v1/chat/completions`".into(),
        ));
    }
    let pq = uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    if !pq.path().starts_with('/') || pq.path().starts_with("//") {
        return Err(ProxyError::InvalidRequest(
            "the request path must start with a single `/`".into(),
        ));
    }
    Ok(pq)
}

/// The caller presenting a valid token, when `callers:` is configured (docs/design.md §2b).
fn check_caller<B>(route: &Route, req: &Request<B>) -> Result<Option<usize>, ProxyError> {
    if route.callers.is_empty() {
        return Ok(None);
    }
    crate::policy::access::identify(&route.callers, req.headers())
        .map(Some)
        .ok_or(ProxyError::UnauthorizedCaller)
}

/// Reads a whole request body up to the cap (only for a model allow-list).
async fn read_capped(body: Incoming, cap: u64) -> Result<bytes::Bytes, ProxyError> {
    use http_body_util::BodyExt;
    let limit = usize::try_from(cap).unwrap_or(usize::MAX);
    match http_body_util::Limited::new(body, limit).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(ProxyError::TooLarge { limit: cap })
        }
        Err(_) => Err(ProxyError::InvalidRequest(
            "the request body could not be read".into(),
        )),
    }
}

/// Step 4a: a declared body over the cap is refused before the upstream is contacted.
/// Returns the declared length (0 when none), which rate limits count.
fn check_declared_size(req: &Request<Incoming>, limit: u64) -> Result<u64, ProxyError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(n) if n > limit => Err(ProxyError::TooLarge { limit }),
        n => Ok(n.unwrap_or(0)),
    }
}

/// Steps 3-4: the request the upstream will see.
fn upstream_request(
    route: &Route,
    mut parts: http::request::Parts,
    body: RequestBody,
    admitted: &Admitted,
    info: &RequestInfo,
) -> Result<Request<RequestBody>, ProxyError> {
    let provider = &route.provider;
    let path = headers::upstream_path(provider, &admitted.target);
    let unusable = || ProxyError::InvalidRequest("the request path cannot be forwarded".into());
    let mut uri = provider.origin.clone().into_parts();
    uri.path_and_query = Some(PathAndQuery::try_from(path).map_err(|_| unusable())?);
    parts.uri = Uri::from_parts(uri).map_err(|_| unusable())?;
    parts.version = Version::HTTP_11;
    let credential = &admitted.credential;
    headers::to_upstream(&mut parts.headers, provider, credential, &info.request_id);
    span::to_upstream(route, info.span.as_ref(), &mut parts.headers);
    if route.token_usage {
        headers::accept_decodable_only(&mut parts.headers);
    }
    // Last: the signature covers the request exactly as it leaves.
    if let Credential::Aws(keys) = credential {
        let region = provider.region.as_deref().unwrap_or_default();
        let bytes = body.buffered_bytes().unwrap_or_default();
        crate::cloud::sigv4::sign(
            &mut parts,
            &bytes,
            keys,
            region,
            std::time::SystemTime::now(),
        )
        .map_err(ProxyError::InvalidRequest)?;
    }
    Ok(Request::from_parts(parts, body))
}

/// Step 6: status and headers passed through, the body streamed with an idle timeout.
fn client_response(
    route: &Arc<Route>,
    resp: Response<UpstreamBody>,
    info: &RequestInfo,
    stats: Arc<RequestStats>,
    active: Active,
    ttfb: std::time::Duration,
    caller: Option<usize>,
) -> Response<ProxyBody> {
    let (mut parts, body) = resp.into_parts();
    log_upstream_auth_error(route, info, parts.status.as_u16());
    let streamed = parts.headers.get(header::CONTENT_TYPE).is_some_and(|v| {
        let v = v.as_bytes();
        v.starts_with(b"text/event-stream")
            || v.starts_with(crate::telemetry::eventstream::CONTENT_TYPE.as_bytes())
    });
    let tap = if route.token_usage {
        UsageTap::for_response(&parts.headers)
    } else {
        None
    };
    headers::to_client(&mut parts.headers, &info.request_id);
    let done = Completion {
        route: route.clone(),
        request_id: info.request_id.clone(),
        method: info.method.clone(),
        path: info.path.clone(),
        status: parts.status.as_u16(),
        start: info.start,
        span: info.span.clone(),
        stats,
        upstream_protocol: match parts.version {
            Version::HTTP_2 => "h2",
            _ => "http1.1",
        },
        streamed,
        ttfb_ms: (ttfb.as_secs_f64() * 1_000_000.0).round() / 1000.0,
        caller,
        _active: active,
        _stream: streamed.then(|| Active::new(&route.metrics.active_streams)),
    };
    let body = ResponseBody::new(body, route.limits.stream_idle_timeout, tap, Box::new(done));
    Response::from_parts(parts, ProxyBody::Upstream(body))
}

fn log_error(route: &Route, info: &RequestInfo, err: &ProxyError) {
    let status = err.status().as_u16();
    let message = err.message(&route.provider.name);
    let message =
        crate::telemetry::logging::sanitize(&message, crate::telemetry::logging::MAX_LOGGED_CHARS);
    tracing::warn!(
        event = "request_error",
        request_id = info.request_id.to_str().unwrap_or(""),
        provider = &*route.provider_name,
        method = info.method.as_str(),
        path = info.path.as_str(),
        status,
        error_type = err.kind(),
        message = &*message,
        duration_ms = (info.start.elapsed().as_secs_f64() * 1_000_000.0).round() / 1000.0,
        upstream_host = &*route.upstream_host,
    );
    if info.span.is_none() {
        return;
    }
    let line = completion::Line {
        route,
        request_id: info.request_id.to_str().unwrap_or(""),
        method: info.method.as_str(),
        path: info.path.as_str(),
        status,
        duration_ms: 0.0,
        ttfb_ms: None,
        request_bytes: 0,
        response_bytes: 0,
        upstream_protocol: "",
        outcome: "error",
        streamed: None,
        websocket: None,
        caller: None,
        model: None,
        tokens: [None; 4],
    };
    span::record(info.span.clone(), &line, Some(err.kind()));
}

/// `upstream_auth_error`: the upstream answered 400, 401 or 403, the statuses a wrong or
/// badly formatted key gets (the Node sidecar's event, which AWF's triage searches for). It
/// names where the key comes from, never the key.
fn log_upstream_auth_error(route: &Route, info: &RequestInfo, status: u16) {
    if !matches!(status, 400 | 401 | 403) {
        return;
    }
    let provider = &*route.provider_name;
    tracing::warn!(
        event = "upstream_auth_error",
        request_id = info.request_id.to_str().unwrap_or(""),
        provider,
        method = info.method.as_str(),
        path = info.path.as_str(),
        status,
        upstream_host = &*route.upstream_host,
        message = format!(
            "upstream returned {status}: check that the {} is valid and correctly formatted (a 400 may also be a malformed request)",
            match (&route.provider.key_ref, &route.provider.cloud) {
                (Some(r), _) => format!("API key for {provider} ({r})"),
                (None, Some(c)) => format!("{} credential of {provider} (and its cloud permissions)", c.kind()),
                (None, None) => format!("credential of {provider}"),
            }
        ),
    );
}

/// Maps a pool error to the answer: connection failures name what failed (the host only
/// when it is not sensitive).
fn classify(err: SendError) -> ProxyError {
    match err {
        SendError::Connect(c) => ProxyError::Unavailable {
            kind: c.kind(),
            message: redact_sensitive(c.to_string()),
        },
        SendError::Busy { waited, cap } => ProxyError::Busy { waited, cap },
        SendError::Failed(why) => ProxyError::Unavailable {
            kind: "reset",
            message: format!("the upstream connection failed before a response: {why}"),
        },
    }
}
