//! The request path as named steps (DESIGN section 5):
//!
//! ```text
//! client ─▶ request_id ─▶ check_target ─▶ check_configured ─▶ check_declared_size
//!        ─▶ upstream_request (strip, inject, rewrite path) ─▶ send (pool, timeout)
//!        ─▶ client_response (hop-by-hop out, body streamed frame by frame) ─▶ client
//! ```
//!
//! Every failure is a `ProxyError` answered as JSON and logged as `request_error`; answers that
//! come from the upstream are logged as `request_complete` when their body ends.

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use http::uri::{PathAndQuery, Uri};
use http::{header, HeaderValue, Method, Request, Response, Version};
use hyper::body::Incoming;

use crate::body::{OnEnd, Outcome, ProxyBody, RequestBody, RequestStats, ResponseBody};
use crate::error::ProxyError;
use crate::headers;
use crate::logging::log_path;
use crate::plan::{Credential, Limits, ProviderPlan};
use crate::upstream::{ConnectError, UpstreamClient};
use crate::Shared;

/// One provider's listener: its plan, its pooled upstream client, and the process state.
pub struct Route {
    pub provider: ProviderPlan,
    pub client: UpstreamClient,
    pub limits: Limits,
    pub shared: Arc<Shared>,
    /// The upstream host, shared by every log line of this route.
    upstream_host: Arc<str>,
    provider_name: Arc<str>,
}

impl Route {
    pub fn new(
        provider: ProviderPlan,
        client: UpstreamClient,
        limits: Limits,
        shared: Arc<Shared>,
    ) -> Self {
        Route {
            upstream_host: Arc::from(provider.host.as_str()),
            provider_name: Arc::from(provider.name.as_str()),
            provider,
            client,
            limits,
            shared,
        }
    }
}

/// What every log line of one request carries.
struct RequestInfo {
    request_id: HeaderValue,
    method: Method,
    path: String,
    start: Instant,
}

/// The hyper service of a provider listener.
pub async fn handle(
    route: Arc<Route>,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    let info = RequestInfo {
        request_id: headers::request_id(req.headers()),
        method: req.method().clone(),
        path: log_path(req.uri().path_and_query().map_or("", |p| p.as_str())).into_owned(),
        start: Instant::now(),
    };
    match forward(&route, req, &info).await {
        Ok(resp) => Ok(resp),
        Err(err) => {
            log_error(&route, &info, &err);
            Ok(err.into_response(&route.provider.name, &info.request_id))
        }
    }
}

async fn forward(
    route: &Arc<Route>,
    req: Request<Incoming>,
    info: &RequestInfo,
) -> Result<Response<ProxyBody>, ProxyError> {
    if route.shared.draining.load(Ordering::Relaxed) {
        return Err(ProxyError::ShuttingDown);
    }
    let path_and_query = check_target(&req)?;
    if matches!(route.provider.credential, Credential::Missing(_)) {
        return Err(ProxyError::NotConfigured);
    }
    check_declared_size(&req, route.limits.max_request_body)?;

    let stats = Arc::new(RequestStats::default());
    let upstream_req = upstream_request(route, req, &path_and_query, &info.request_id, &stats)?;
    let sent = tokio::time::timeout(
        route.limits.request_timeout,
        route.client.request(upstream_req),
    )
    .await;
    let resp = match sent {
        Ok(Ok(resp)) => resp,
        // The body cap decides first: the send failed because we cut the body.
        _ if stats.too_large.load(Ordering::Relaxed) => {
            return Err(ProxyError::TooLarge {
                limit: route.limits.max_request_body,
            })
        }
        Ok(Err(err)) => return Err(classify(&err)),
        Err(_) => return Err(ProxyError::Timeout(route.limits.request_timeout)),
    };
    Ok(client_response(route, resp, info, stats))
}

/// Step 2: origin-form only; the upstream host is fixed by config.
fn check_target(req: &Request<Incoming>) -> Result<PathAndQuery, ProxyError> {
    let uri = req.uri();
    if req.method() == Method::CONNECT {
        return Err(ProxyError::InvalidRequest("CONNECT is not supported: send origin-form requests such as `POST /v1/chat/completions`".into()));
    }
    // HTTP/2 always carries :scheme and :authority; HTTP/1.x must use origin-form.
    if req.version() < Version::HTTP_2 && (uri.scheme().is_some() || uri.authority().is_some()) {
        return Err(ProxyError::InvalidRequest("absolute-form request targets are not accepted: send the path only, e.g. `POST /v1/chat/completions`".into()));
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

/// Step 4a: a declared body over the cap is refused before the upstream is contacted.
fn check_declared_size(req: &Request<Incoming>, limit: u64) -> Result<(), ProxyError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(n) if n > limit => Err(ProxyError::TooLarge { limit }),
        _ => Ok(()),
    }
}

/// Steps 3-4: the request the upstream will see.
fn upstream_request(
    route: &Route,
    req: Request<Incoming>,
    pq: &PathAndQuery,
    request_id: &HeaderValue,
    stats: &Arc<RequestStats>,
) -> Result<Request<RequestBody>, ProxyError> {
    let provider = &route.provider;
    let (mut parts, body) = req.into_parts();
    let path = headers::upstream_path(provider, pq.path(), pq.query());
    let mut uri = provider.origin.clone().into_parts();
    uri.path_and_query =
        Some(PathAndQuery::try_from(path).map_err(|_| {
            ProxyError::InvalidRequest("the request path cannot be forwarded".into())
        })?);
    parts.uri = Uri::from_parts(uri)
        .map_err(|_| ProxyError::InvalidRequest("the request path cannot be forwarded".into()))?;
    parts.version = Version::HTTP_11;
    headers::to_upstream(&mut parts.headers, provider, request_id);
    let body = RequestBody::new(body, route.limits.max_request_body, stats.clone());
    Ok(Request::from_parts(parts, body))
}

/// Steps 6: status and headers passed through, the body streamed with an idle timeout.
fn client_response(
    route: &Arc<Route>,
    resp: Response<Incoming>,
    info: &RequestInfo,
    stats: Arc<RequestStats>,
) -> Response<ProxyBody> {
    let (mut parts, body) = resp.into_parts();
    headers::to_client(&mut parts.headers, &info.request_id);
    let done = Completion {
        route: route.clone(),
        request_id: info.request_id.clone(),
        method: info.method.clone(),
        path: info.path.clone(),
        status: parts.status.as_u16(),
        start: info.start,
        stats,
        upstream_protocol: match parts.version {
            Version::HTTP_2 => "h2",
            _ => "http1.1",
        },
    };
    let body = ResponseBody::new(body, route.limits.stream_idle_timeout, Box::new(done));
    Response::from_parts(parts, ProxyBody::Upstream(body))
}

/// Logs `request_complete` when the response body is finished, whichever way it ended.
struct Completion {
    route: Arc<Route>,
    request_id: HeaderValue,
    method: Method,
    path: String,
    status: u16,
    start: Instant,
    stats: Arc<RequestStats>,
    upstream_protocol: &'static str,
}

impl OnEnd for Completion {
    fn on_end(self: Box<Self>, outcome: Outcome, response_bytes: u64) {
        let duration_ms = self.start.elapsed().as_secs_f64() * 1000.0;
        let request_id = self.request_id.to_str().unwrap_or("");
        macro_rules! complete {
            ($level:ident) => {
                tracing::$level!(
                    event = "request_complete",
                    request_id,
                    provider = &*self.route.provider_name,
                    method = self.method.as_str(),
                    path = self.path.as_str(),
                    status = self.status,
                    duration_ms = (duration_ms * 1000.0).round() / 1000.0,
                    request_bytes = self.stats.bytes.load(Ordering::Relaxed),
                    response_bytes,
                    upstream_host = &*self.route.upstream_host,
                    upstream_protocol = self.upstream_protocol,
                    outcome = outcome.as_str(),
                )
            };
        }
        match outcome {
            Outcome::Completed | Outcome::ClientClosed => complete!(info),
            Outcome::UpstreamAborted | Outcome::IdleTimeout => complete!(warn),
        }
    }
}

fn log_error(route: &Route, info: &RequestInfo, err: &ProxyError) {
    let status = err.status().as_u16();
    let message = err.message(&route.provider.name);
    let message = crate::logging::sanitize(&message, crate::logging::MAX_LOGGED_CHARS);
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
}

/// Maps a client error to the answer: connection failures name what failed.
fn classify(err: &hyper_util::client::legacy::Error) -> ProxyError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(err);
    let mut deepest = None;
    while let Some(e) = source {
        if let Some(c) = e.downcast_ref::<ConnectError>() {
            return ProxyError::Unavailable(c.to_string());
        }
        deepest = Some(e);
        source = e.source();
    }
    let detail = deepest
        .map(|e| e.to_string())
        .unwrap_or_else(|| err.to_string());
    if err.is_connect() {
        ProxyError::Unavailable(format!("cannot connect: {detail}"))
    } else {
        ProxyError::Unavailable(format!(
            "the upstream connection failed before a response: {detail}"
        ))
    }
}
