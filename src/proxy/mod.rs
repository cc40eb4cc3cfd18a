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

pub mod body;
pub mod endpoints;
pub mod error;
pub mod headers;
pub mod websocket;

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use http::uri::{PathAndQuery, Uri};
use http::{header, HeaderValue, Method, Request, Response, Version};
use hyper::body::Incoming;
use prometheus_client::metrics::gauge::Gauge;

use crate::config::plan::{Credential, Limits, ProviderPlan};
use crate::proxy::body::{OnEnd, Outcome, ProxyBody, RequestBody, RequestStats, ResponseBody};
use crate::proxy::error::ProxyError;
use crate::server::Shared;
use crate::telemetry::logging::log_path;
use crate::telemetry::metrics::ProviderMetrics;
use crate::telemetry::usage::{self, Finished, Usage, UsageTap};
use crate::telemetry::usage_file::UsageLog;
use crate::upstream::pool::{Pool, SendError, UpstreamBody};

/// One provider's listener: its plan, its pooled upstream clients, and the process state.
pub struct Route {
    pub provider: ProviderPlan,
    /// One upstream pool per worker (`workers.rs`), so a worker's requests use connections
    /// that run on its own thread; the first also serves outside any worker.
    pub pools: Vec<Pool>,
    pub limits: Limits,
    pub shared: Arc<Shared>,
    pub metrics: ProviderMetrics,
    /// Read token usage from responses.
    pub token_usage: bool,
    pub usage_log: Option<UsageLog>,
    pub limiter: Option<crate::policy::ratelimit::RateLimiter>,
    /// Every route of the process, for the AWF `/health` and `/reflect` answers.
    pub directory: Arc<crate::proxy::endpoints::Directory>,
    /// The upstream host, shared by every log line of this route.
    upstream_host: Arc<str>,
    provider_name: Arc<str>,
    /// The injected credential; replaced in place by a key reload.
    pub key: crate::policy::reload::KeySlot,
    /// When not empty, every request must present one of these callers' tokens.
    pub callers: Arc<Vec<crate::policy::access::Caller>>,
    /// This provider's token budget.
    pub budget: Option<crate::policy::budget::TokenBudget>,
    /// WebSocket (DESIGN 5.7): dedicated HTTP/1.1-only upstream connections.
    pub websocket: Option<crate::upstream::Connector>,
}

impl Route {
    pub fn new(
        provider: ProviderPlan,
        pools: Vec<Pool>,
        limits: Limits,
        shared: Arc<Shared>,
        metrics: ProviderMetrics,
    ) -> Self {
        Route {
            upstream_host: Arc::from(provider.host.as_str()),
            provider_name: Arc::from(provider.name.as_str()),
            pools,
            limits,
            shared,
            metrics,
            token_usage: true,
            usage_log: None,
            limiter: provider
                .rate_limit
                .map(crate::policy::ratelimit::RateLimiter::new),
            directory: Arc::default(),
            websocket: None,
            key: crate::policy::reload::KeySlot::new(provider.credential.clone()),
            callers: Arc::default(),
            budget: provider.budget.map(crate::policy::budget::TokenBudget::new),
            provider,
        }
    }

    /// The upstream pool of the worker running this request.
    pub fn pool(&self) -> Option<&Pool> {
        self.pools
            .get(crate::server::workers::current())
            .or_else(|| self.pools.first())
    }
}

/// What every log line of one request carries.
pub(crate) struct RequestInfo {
    pub(crate) request_id: HeaderValue,
    pub(crate) method: Method,
    pub(crate) path: String,
    pub(crate) start: Instant,
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
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    if let Some(resp) = crate::proxy::endpoints::answer(&route, &req) {
        return Ok(resp);
    }
    let active = Active::new(&route.metrics.active_requests);
    let info = RequestInfo {
        request_id: headers::request_id(req.headers()),
        method: req.method().clone(),
        path: log_path(req.uri().path_and_query().map_or("", |p| p.as_str())).into_owned(),
        start: Instant::now(),
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
    if route.shared.draining.load(Ordering::Relaxed) {
        return Err(ProxyError::ShuttingDown);
    }
    let path_and_query = check_target(&req)?;
    let websocket = websocket::requested(&req)?;
    let caller = check_caller(route, &req)?;
    let credential = route.key.get();
    if matches!(credential, Credential::Missing(_)) {
        return Err(ProxyError::NotConfigured);
    }
    if let Some(rules) = &route.provider.allow {
        crate::policy::access::check_allowed(
            rules,
            req.method(),
            path_and_query.path(),
            &route.provider.name,
        )
        .map_err(ProxyError::NotAllowed)?;
    }
    let declared = check_declared_size(&req, route.limits.max_request_body)?;
    if let Some(limiter) = &route.limiter {
        limiter.check(declared).map_err(ProxyError::RateLimited)?;
    }
    check_budgets(route, caller)?;
    // WebSocket upgrades (DESIGN 5.7) are tunnelled, not proxied request by request.
    if websocket {
        return match websocket::open(route, req, &path_and_query, info, active).await? {
            websocket::Opened::Switched(resp) => Ok(resp),
            websocket::Opened::Refused(resp, active) => {
                let ttfb = info.start.elapsed();
                Ok(client_response(
                    route,
                    resp.map(UpstreamBody::from),
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
    let (parts, body) = req.into_parts();
    let body = match &route.provider.models {
        Some(models) if !http_body::Body::is_end_stream(&body) => {
            let bytes = read_capped(body, route.limits.max_request_body).await?;
            crate::policy::access::check_model(models, &bytes, &route.provider.name)
                .map_err(ProxyError::NotAllowed)?;
            RequestBody::buffered(bytes, stats.clone())
        }
        _ => RequestBody::new(body, route.limits.max_request_body, stats.clone()),
    };
    let upstream_req = upstream_request(
        route,
        parts,
        body,
        &path_and_query,
        &credential,
        &info.request_id,
    )?;
    let sent_at = Instant::now();
    let pool = route.pool().ok_or_else(|| ProxyError::Unavailable {
        kind: "connect",
        message: "no upstream pool on this thread".into(),
    })?;
    let sent = tokio::time::timeout(route.limits.request_timeout, pool.send(upstream_req)).await;
    let resp = match sent {
        Ok(Ok(resp)) => resp,
        // The body cap decides first: the send failed because we cut the body.
        _ if stats.too_large.load(Ordering::Relaxed) => {
            return Err(ProxyError::TooLarge {
                limit: route.limits.max_request_body,
            })
        }
        // Then the client's own body: malformed framing or cut short is a 400, not a 502.
        _ if stats.client_failed.load(Ordering::Relaxed) => {
            return Err(ProxyError::InvalidRequest(
                "the request body is malformed (e.g. an invalid chunk size) or ended early".into(),
            ))
        }
        Ok(Err(err)) => return Err(classify(err)),
        Err(_) => return Err(ProxyError::Timeout(route.limits.request_timeout)),
    };
    let ttfb = sent_at.elapsed();
    route.metrics.ttfb.observe(ttfb.as_secs_f64());
    Ok(client_response(
        route, resp, info, stats, active, ttfb, caller,
    ))
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

/// The caller presenting a valid token, when `callers:` is configured (DESIGN 2b).
fn check_caller<B>(route: &Route, req: &Request<B>) -> Result<Option<usize>, ProxyError> {
    if route.callers.is_empty() {
        return Ok(None);
    }
    crate::policy::access::identify(&route.callers, req.headers())
        .map(Some)
        .ok_or(ProxyError::UnauthorizedCaller)
}

/// Token budgets admit a request while their spend is below the limit.
fn check_budgets(route: &Route, caller: Option<usize>) -> Result<(), ProxyError> {
    if let Some(b) = &route.budget {
        b.admit().map_err(|spent| ProxyError::BudgetExhausted {
            scope: format!("provider {}", route.provider.name),
            spent,
        })?;
    }
    if let Some(c) = caller.and_then(|i| route.callers.get(i)) {
        if let Some(b) = &c.budget {
            b.admit().map_err(|spent| ProxyError::BudgetExhausted {
                scope: format!("caller {}", c.name),
                spent,
            })?;
        }
    }
    Ok(())
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
    pq: &PathAndQuery,
    credential: &Credential,
    request_id: &HeaderValue,
) -> Result<Request<RequestBody>, ProxyError> {
    let provider = &route.provider;
    let path = headers::upstream_path(provider, pq.path(), pq.query());
    let unusable = || ProxyError::InvalidRequest("the request path cannot be forwarded".into());
    let mut uri = provider.origin.clone().into_parts();
    uri.path_and_query = Some(PathAndQuery::try_from(path).map_err(|_| unusable())?);
    parts.uri = Uri::from_parts(uri).map_err(|_| unusable())?;
    parts.version = Version::HTTP_11;
    headers::to_upstream(&mut parts.headers, provider, credential, request_id);
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
    let streamed = parts
        .headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
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

/// Records metrics, usage and the `request_complete` line when the response body is finished.
struct Completion {
    route: Arc<Route>,
    request_id: HeaderValue,
    method: Method,
    path: String,
    status: u16,
    start: Instant,
    stats: Arc<RequestStats>,
    upstream_protocol: &'static str,
    streamed: bool,
    /// Request sent upstream -> response headers, in milliseconds.
    ttfb_ms: f64,
    /// Index into `route.callers`, when callers are configured.
    caller: Option<usize>,
    _active: Active,
    _stream: Option<Active>,
}

impl OnEnd for Completion {
    fn on_end(self: Box<Self>, outcome: Outcome, response_bytes: u64, tap: Option<UsageTap>) {
        let m = &self.route.metrics;
        m.request(self.status);
        m.outcome(outcome.as_str());
        if outcome == Outcome::UpstreamAborted {
            m.upstream_error("reset");
        }
        m.duration.observe(self.start.elapsed().as_secs_f64());
        m.request_bytes
            .inc_by(self.stats.bytes.load(Ordering::Relaxed));
        m.response_bytes.inc_by(response_bytes);
        let end = End {
            outcome,
            response_bytes,
            duration_ms: self.start.elapsed().as_secs_f64() * 1000.0,
        };
        match tap.map(UsageTap::finish) {
            None => self.finish(end, None),
            Some(Finished::Ready(usage)) => self.finish(end, Some(usage)),
            Some(Finished::Unparsed) => {
                m.unparsed.inc();
                self.finish(end, None);
            }
            Some(Finished::Decode {
                format,
                encoding,
                chunks,
            }) => {
                // Decompression is work the client must not wait for: do it on a blocking thread.
                match tokio::runtime::Handle::try_current() {
                    Ok(rt) => {
                        let decode = rt.spawn_blocking(move || {
                            usage::decode_and_read(format, encoding, &chunks)
                        });
                        rt.spawn(async move {
                            let usage = decode.await.ok();
                            self.finish(end, usage);
                        });
                    }
                    Err(_) => self.finish(end, None),
                }
            }
        }
    }
}

/// How the body ended, measured when it did.
struct End {
    outcome: Outcome,
    response_bytes: u64,
    duration_ms: f64,
}

impl Completion {
    fn finish(self, end: End, usage: Option<Usage>) {
        let caller = self.caller.and_then(|i| self.route.callers.get(i));
        if let Some(u) = usage.as_ref().filter(|u| u.has_tokens()) {
            self.route.metrics.tokens(u.counts());
            // Budgets count input + output tokens.
            let spent = u.input.unwrap_or(0) + u.output.unwrap_or(0);
            let metrics = &self.route.shared.metrics;
            if let Some(b) = &self.route.budget {
                b.charge(spent);
                metrics.budget_spent("provider", &self.route.provider.name, b.spent());
            }
            if let Some((c, b)) = caller.and_then(|c| c.budget.as_ref().map(|b| (c, b))) {
                b.charge(spent);
                metrics.budget_spent("caller", &c.name, b.spent());
            }
        }
        let caller_name = caller.map(|c| c.name.as_str());
        let request_bytes = self.stats.bytes.load(Ordering::Relaxed);
        let request_id = self.request_id.to_str().unwrap_or("");
        let duration_ms = (end.duration_ms * 1000.0).round() / 1000.0;
        let outcome = end.outcome.as_str();
        let (model, tokens) = match &usage {
            Some(u) => (
                u.model.as_deref(),
                [u.input, u.output, u.cache_read, u.cache_write],
            ),
            None => (None, [None; 4]),
        };
        macro_rules! complete {
            ($level:ident) => {
                tracing::$level!(
                    event = "request_complete",
                    request_id,
                    provider = &*self.route.provider_name,
                    method = self.method.as_str(),
                    path = self.path.as_str(),
                    status = self.status,
                    duration_ms,
                    ttfb_ms = self.ttfb_ms,
                    request_bytes,
                    response_bytes = end.response_bytes,
                    upstream_host = &*self.route.upstream_host,
                    upstream_protocol = self.upstream_protocol,
                    outcome,
                    streamed = self.streamed,
                    caller = caller_name,
                    model,
                    input_tokens = tokens[0],
                    output_tokens = tokens[1],
                    cache_read_tokens = tokens[2],
                    cache_write_tokens = tokens[3],
                )
            };
        }
        match end.outcome {
            Outcome::Completed | Outcome::ClientClosed => complete!(info),
            Outcome::UpstreamAborted | Outcome::IdleTimeout => complete!(warn),
        }
        if let Some(log) = &self.route.usage_log {
            let unix_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            let line = serde_json::json!({
                "unix_ms": unix_ms,
                "request_id": request_id,
                "provider": &*self.route.provider_name,
                "caller": caller_name,
                "model": model,
                "input_tokens": tokens[0],
                "output_tokens": tokens[1],
                "cache_read_tokens": tokens[2],
                "cache_write_tokens": tokens[3],
                "status": self.status,
                "duration_ms": duration_ms,
                "streamed": self.streamed,
                "outcome": outcome,
            });
            log.record(line.to_string());
        }
    }
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
}

/// Maps a pool error to the answer: connection failures name what failed.
fn classify(err: SendError) -> ProxyError {
    match err {
        SendError::Connect(c) => ProxyError::Unavailable {
            kind: c.kind(),
            message: c.to_string(),
        },
        SendError::Busy { waited, cap } => ProxyError::Busy { waited, cap },
        SendError::Failed(why) => ProxyError::Unavailable {
            kind: "reset",
            message: format!("the upstream connection failed before a response: {why}"),
        },
    }
}
