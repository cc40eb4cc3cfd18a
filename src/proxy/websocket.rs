//! WebSocket tunnels (docs/design.md §5.7).
//!
//! An HTTP/1.1 `Upgrade: websocket` request passes the same checks as any other request, then
//! gets the usual header rules and key injection and is sent on a dedicated (unpooled)
//! HTTP/1.1-only upstream connection. On `101` both upgraded connections are joined with
//! `copy_bidirectional` until either side closes, the tunnel idles out (`tunnel_idle.rs`) or
//! the proxy shuts down; the tunnel keeps its client connection's place under
//! `limits.max_connections` until then. Any other `Upgrade` is refused with 400. A non-101
//! answer is passed back as a normal response.
//!
//! With `observability.token_usage`, what the upstream sends is read as it passes
//! (`telemetry::ws_usage`): each `response.completed` event is counted and charged to the
//! budgets at once, and the tunnel's `request_complete` line carries the model and the summed
//! tokens. The client's `permessage-deflate` offer is then not forwarded, so frames stay
//! readable (they are uncompressed JSON either way).

use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use http::uri::PathAndQuery;
use http::{header, HeaderValue, Method, Request, Response, StatusCode, Version};
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper::service::Service;
use hyper_util::rt::TokioIo;
use tokio::sync::watch;

use super::ws_tap::{Tapped, Totals};
use crate::policy::access::Target;
use crate::proxy::body::ProxyBody;
use crate::proxy::error::ProxyError;
use crate::proxy::headers;
use crate::proxy::tunnel_idle::{Activity, Watched};
use crate::proxy::{Active, RequestInfo, Route};
use crate::telemetry::ws_usage::WsUsageTap;

/// Put in every request's extensions by the listener: tells a tunnel when to end, and holds
/// the connection's place under `limits.max_connections` for it.
#[derive(Clone)]
pub struct Shutdown(watch::Receiver<bool>, Option<Slot>);

/// A connection's place under `limits.max_connections`: a tunnel keeps it until it closes, so
/// tunnels count toward the cap like the connections they were upgraded from.
type Slot = Arc<dyn Send + Sync>;

impl Shutdown {
    /// Resolves once the listener's drain has finished or was abandoned (its sender dropped).
    async fn closed(mut self) {
        while self.0.changed().await.is_ok() {}
    }
}

/// Wraps a connection's service so that each request carries the `Shutdown` signal.
pub struct WithShutdown<S> {
    inner: S,
    signal: watch::Receiver<bool>,
    slot: Option<Slot>,
}

impl<S> WithShutdown<S> {
    pub fn new(inner: S, signal: watch::Receiver<bool>, slot: Option<Slot>) -> Self {
        WithShutdown {
            inner,
            signal,
            slot,
        }
    }
}

impl<S: Service<Request<Incoming>>> Service<Request<Incoming>> for WithShutdown<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn call(&self, mut req: Request<Incoming>) -> Self::Future {
        let shutdown = Shutdown(self.signal.clone(), self.slot.clone());
        req.extensions_mut().insert(shutdown);
        self.inner.call(req)
    }
}

fn has_token(req: &Request<Incoming>, name: header::HeaderName, token: &str) -> bool {
    req.headers()
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// `Ok(true)` for a WebSocket upgrade, `Ok(false)` for no upgrade, 400 for any other upgrade.
pub fn requested(req: &Request<Incoming>) -> Result<bool, ProxyError> {
    if !req.headers().contains_key(header::UPGRADE) {
        return Ok(false);
    }
    let websocket = has_token(req, header::UPGRADE, "websocket")
        && has_token(req, header::CONNECTION, "upgrade")
        && req.version() == Version::HTTP_11
        && req.method() == Method::GET;
    if websocket {
        Ok(true)
    } else {
        Err(ProxyError::InvalidRequest(
            "only WebSocket upgrades are supported (`GET` with `Connection: upgrade` and `Upgrade: websocket` over HTTP/1.1)".into(),
        ))
    }
}

/// How the upstream answered the upgrade.
pub(crate) enum Opened {
    /// 101: the tunnel runs in its own task; this is the client's 101 (boxed: the response
    /// body type is large, and upgrades are rare).
    Switched(Box<Response<ProxyBody>>),
    /// Anything else: answered to the client as a normal response.
    Refused(Response<Incoming>, Active),
}

fn reset(err: hyper::Error) -> ProxyError {
    ProxyError::Unavailable {
        kind: "reset",
        message: format!("the upstream connection failed before a response: {err}"),
    }
}

/// Sends the upgrade upstream; on 101 starts the tunnel.
pub(crate) async fn open(
    route: &Arc<Route>,
    mut req: Request<Incoming>,
    target: &Target,
    info: &RequestInfo,
    active: Active,
    caller: Option<usize>,
) -> Result<Opened, ProxyError> {
    let mut shutdown = req.extensions_mut().remove::<Shutdown>();
    let slot = shutdown.as_mut().and_then(|s| s.1.take());
    let client_upgrade = hyper::upgrade::on(&mut req);
    let (parts, _body) = req.into_parts();
    let up = upgrade_request(route, parts.headers, target, info)?;
    let mut resp = match tokio::time::timeout(route.limits.request_timeout, send(route, up)).await {
        Ok(r) => r?,
        Err(_) => return Err(ProxyError::Timeout(route.limits.request_timeout)),
    };
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        return Ok(Opened::Refused(resp, active));
    }
    let upstream_upgrade = hyper::upgrade::on(&mut resp);
    let (mut parts, _) = resp.into_parts();
    headers::to_client(&mut parts.headers, &info.request_id);
    parts
        .headers
        .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    parts
        .headers
        .insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    let tunnel = Tunnel {
        _open: Active::new(&route.metrics.websocket_tunnels),
        route: route.clone(),
        request_id: info.request_id.clone(),
        method: info.method.clone(),
        path: info.path.clone(),
        start: info.start,
        caller,
        totals: Arc::default(),
        span: info.span.clone(),
        _active: active,
        _slot: slot,
    };
    tokio::spawn(tunnel.run(client_upgrade, upstream_upgrade, shutdown));
    Ok(Opened::Switched(Box::new(Response::from_parts(
        parts,
        ProxyBody::Full(None),
    ))))
}

/// The upgrade as the upstream sees it: the same header rules and key as any request.
fn upgrade_request(
    route: &Route,
    mut headers: http::HeaderMap,
    target: &Target,
    info: &RequestInfo,
) -> Result<Request<Empty<Bytes>>, ProxyError> {
    let provider = &route.provider;
    headers::to_upstream(&mut headers, provider, &route.key.get(), &info.request_id);
    if route.token_usage {
        // Compressed frames could not be read for usage: the upstream is not offered it.
        headers.remove(header::SEC_WEBSOCKET_EXTENSIONS);
    }
    super::span::to_upstream(route, info.span.as_ref(), &mut headers);
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    let authority = provider.origin.authority().map_or("", |a| a.as_str());
    let unusable = || ProxyError::InvalidRequest("the request path cannot be forwarded".into());
    headers.insert(
        header::HOST,
        HeaderValue::from_str(authority).map_err(|_| unusable())?,
    );
    let path = headers::upstream_path(provider, target);
    let mut up = Request::new(Empty::<Bytes>::new());
    *up.method_mut() = Method::GET;
    *up.uri_mut() = PathAndQuery::try_from(path)
        .map_err(|_| unusable())?
        .as_str()
        .parse()
        .map_err(|_| unusable())?;
    *up.headers_mut() = headers;
    Ok(up)
}

/// A dedicated HTTP/1.1 connection (same egress as the pool) carrying the upgrade.
async fn send(route: &Route, up: Request<Empty<Bytes>>) -> Result<Response<Incoming>, ProxyError> {
    let origin = &route.provider.origin;
    let host = origin
        .host()
        .unwrap_or_default()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let port = origin.port_u16().unwrap_or(443);
    let io = route
        .websocket
        .connect(host, port)
        .await
        .map_err(|c| ProxyError::Unavailable {
            kind: c.kind(),
            message: crate::telemetry::logging::redact_sensitive(c.to_string()),
        })?;
    let io = hyper_util::rt::TokioIo::new(io);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(reset)?;
    tokio::spawn(conn.with_upgrades());
    sender.send_request(up).await.map_err(reset)
}

/// What the `request_complete` line of a tunnel needs.
struct Tunnel {
    route: Arc<Route>,
    request_id: HeaderValue,
    method: Method,
    path: String,
    start: Instant,
    /// Index into `route.callers`, when callers are configured.
    caller: Option<usize>,
    totals: Arc<Mutex<Totals>>,
    span: Option<crate::telemetry::otel::SpanStart>,
    _active: Active,
    _open: Active,
    /// The client connection's place under `limits.max_connections`, freed when the tunnel is.
    _slot: Option<Slot>,
}

impl Tunnel {
    /// Copies both ways until either side closes, no byte moved for
    /// `limits.websocket_idle_timeout`, or the proxy's drain ends the tunnel.
    async fn run(
        self,
        client: hyper::upgrade::OnUpgrade,
        upstream: hyper::upgrade::OnUpgrade,
        shutdown: Option<Shutdown>,
    ) {
        let activity = Activity::new();
        let copy = async {
            let (client, upstream) =
                tokio::try_join!(client, upstream).map_err(|_| "upgrade_failed")?;
            let mut client = Watched::new(TokioIo::new(client), &activity);
            let upstream = TokioIo::new(upstream);
            if self.route.token_usage {
                let mut upstream = Tapped {
                    io: upstream,
                    tap: WsUsageTap::new(),
                    route: self.route.clone(),
                    caller: self.caller,
                    totals: self.totals.clone(),
                    request_id: self.request_id.to_str().unwrap_or("").to_owned(),
                };
                tokio::io::copy_bidirectional(&mut client, &mut upstream).await
            } else {
                let mut upstream = upstream;
                tokio::io::copy_bidirectional(&mut client, &mut upstream).await
            }
            .map_err(|_| "aborted")
        };
        let stop = async {
            match shutdown {
                Some(s) => s.closed().await,
                None => std::future::pending().await,
            }
        };
        let result = tokio::select! {
            r = copy => r,
            _ = stop => Err("shutdown"),
            _ = activity.idle(self.route.limits.websocket_idle_timeout) => Err("idle_timeout"),
        };
        self.finish(result);
    }

    fn finish(self, result: Result<(u64, u64), &'static str>) {
        let (outcome, (sent, received)) = match result {
            Ok(bytes) => ("completed", bytes),
            Err(why) => (why, (0, 0)),
        };
        let route = &self.route;
        super::completion::count(route, 101, outcome, self.start, sent, received);
        let totals = self
            .totals
            .lock()
            .map(|mut t| std::mem::take(&mut *t))
            .unwrap_or_default();
        if totals.unread > 0 {
            route.metrics.unparsed.inc_by(totals.unread);
        }
        let caller = self
            .caller
            .and_then(|i| route.callers.get(i))
            .map(|c| c.name.as_str());
        let duration_ms = (self.start.elapsed().as_secs_f64() * 1_000_000.0).round() / 1000.0;
        let request_id = self.request_id.to_str().unwrap_or("");
        let line = super::completion::Line {
            route,
            request_id,
            method: self.method.as_str(),
            path: self.path.as_str(),
            status: 101,
            duration_ms,
            ttfb_ms: None,
            request_bytes: sent,
            response_bytes: received,
            upstream_protocol: "http1.1",
            outcome,
            streamed: None,
            websocket: Some(true),
            caller,
            model: totals.model.as_deref(),
            tokens: totals.tokens,
        };
        line.log(false);
        super::span::record(self.span, &line, None);
        if totals.tokens.iter().any(Option::is_some) {
            super::completion::record_usage(
                route,
                &super::completion::UsageRecord {
                    request_id,
                    caller,
                    model: totals.model.as_deref(),
                    tokens: totals.tokens,
                    status: 101,
                    duration_ms,
                    streamed: true,
                    outcome,
                },
            );
        }
    }
}
