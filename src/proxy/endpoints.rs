//! AWF compatibility endpoints on provider ports, answered locally and never proxied:
//! `GET /health` (aggregate on the first provider port, per provider elsewhere),
//! `GET /reflect` (every endpoint) and, on the first port only, `GET /metrics` (the Node
//! sidecar's JSON). They never touch the upstream.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use serde_json::{json, Map, Value};

use crate::config::plan::Credential;
use crate::proxy::body::ProxyBody;
use crate::proxy::Route;

/// Every route of the process, for the aggregate answers; made once all routes exist and
/// handed to every listener's service (a route itself never holds it).
pub struct Directory {
    routes: Vec<Arc<Route>>,
    /// `/reflect`'s `base_url` of each route, in the same order.
    base_urls: Vec<String>,
    /// The egress shown as `squid_proxy` (redacted), if any.
    squid_proxy: Option<String>,
}

impl Directory {
    /// `advertised_host` (the plan's) names the host of `/reflect`'s base URLs.
    pub fn new(routes: Vec<Arc<Route>>, advertised_host: Option<&str>) -> Directory {
        let squid_proxy = routes
            .iter()
            .find_map(|r| r.provider.proxy.as_ref().map(|p| p.to_string()));
        let base_urls = routes
            .iter()
            .map(|r| base_url(r.provider.listen, advertised_host))
            .collect();
        Directory {
            routes,
            base_urls,
            squid_proxy,
        }
    }

    /// The first provider's route: its port (AWF's 10000) answers the aggregate endpoints.
    fn is_first(&self, route: &Arc<Route>) -> bool {
        self.routes.first().is_some_and(|r| Arc::ptr_eq(r, route))
    }
}

/// `http://HOST:PORT` an agent can use: the advertised host, else the listen address with an
/// unspecified IP (`0.0.0.0`, `::`) shown as loopback, never as itself.
fn base_url(listen: SocketAddr, advertised_host: Option<&str>) -> String {
    let port = listen.port();
    match (advertised_host, listen.ip()) {
        (Some(host), _) => format!("http://{host}:{port}"),
        (None, IpAddr::V4(ip)) if ip.is_unspecified() => format!("http://127.0.0.1:{port}"),
        (None, IpAddr::V6(ip)) if ip.is_unspecified() => format!("http://[::1]:{port}"),
        (None, _) => format!("http://{listen}"),
    }
}

/// The local answer for `/health` and `/reflect`, or `None` to proxy the request.
pub fn answer<B>(
    route: &Arc<Route>,
    dir: &Directory,
    req: &Request<B>,
) -> Option<Response<ProxyBody>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return None;
    }
    match req.uri().path() {
        "/health" => Some(health(route, dir)),
        "/reflect" => Some(reflect(dir)),
        // Node's JSON metrics, on the first port only (AWF's 10000), as Node had them.
        "/metrics" if dir.is_first(route) => Some(reply(
            StatusCode::OK,
            &crate::telemetry::awf_metrics::node_shape(&route.registry),
        )),
        _ => None,
    }
}

fn configured(route: &Route) -> bool {
    route.key.get().usable()
}

fn health(route: &Arc<Route>, dir: &Directory) -> Response<ProxyBody> {
    let routes = &dir.routes;
    if dir.is_first(route) {
        let mut providers = Map::new();
        let mut limits = Map::new();
        let (mut total, mut active) = (0u64, 0i64);
        for r in routes {
            providers.insert(r.provider.name.clone(), Value::Bool(configured(r)));
            total += r.metrics.total_requests();
            active += r.metrics.active_requests.get();
            let limit = match &r.limiter {
                Some(l) => json!({
                    "enabled": true,
                    "requests_per_minute": l.plan.requests_per_minute,
                    "requests_per_hour": l.plan.requests_per_hour,
                    "bytes_per_minute": l.plan.bytes_per_minute,
                    "usage": l.usage(),
                }),
                None => json!({"enabled": false}),
            };
            limits.insert(r.provider.name.clone(), limit);
        }
        let mut budgets = Map::new();
        for r in routes {
            if let Some(b) = &r.budget {
                budgets.insert(
                    format!("provider:{}", r.provider.name),
                    json!({"limits": b.plan, "spent": b.spent()}),
                );
            }
        }
        for c in route.callers.iter() {
            if let Some(b) = &c.budget {
                budgets.insert(
                    format!("caller:{}", c.name),
                    json!({"limits": b.plan, "spent": b.spent()}),
                );
            }
        }
        // Why a cloud provider has no credential now (named, never a value).
        let credential_errors: Map<String, Value> = routes
            .iter()
            .filter(|r| r.provider.cloud.is_some())
            .filter_map(|r| match r.key.get() {
                Credential::Missing(why) => Some((r.provider.name.clone(), why.into())),
                _ => None,
            })
            .collect();
        let mut body = json!({
            "status": "healthy",
            "service": "awf-api-proxy",
            "squid_proxy": dir.squid_proxy,
            "providers": providers,
            "metrics_summary": {"total_requests": total, "active_requests": active},
            "rate_limits": limits,
            "budgets": budgets,
        });
        if !credential_errors.is_empty() {
            body["credential_errors"] = Value::Object(credential_errors);
        }
        // With shared_state the local `rate_limits`/`budgets` are this replica's share; the
        // shared view is every replica's (refreshed each second, docs/design.md §8c).
        if let Some(store) = &route.shared {
            body["shared_state"] = store.health();
        }
        return reply(StatusCode::OK, &body);
    }
    let service = format!("awf-api-proxy-{}", route.provider.name);
    match route.key.get() {
        Credential::Missing(why) => {
            let error = match &route.provider.cloud {
                // Names the source and why (never a value): the operator can act on it.
                Some(_) => format!("{} has no valid credential: {why}", route.provider.name),
                None => format!("{} has no API key configured", route.provider.name),
            };
            reply(
                StatusCode::SERVICE_UNAVAILABLE,
                &json!({"status": "not_configured", "service": service, "error": error}),
            )
        }
        _ => reply(
            StatusCode::OK,
            &json!({"status": "healthy", "service": service}),
        ),
    }
}

fn reflect(dir: &Directory) -> Response<ProxyBody> {
    let endpoints: Vec<Value> = dir
        .routes
        .iter()
        .zip(&dir.base_urls)
        .map(|(r, base_url)| {
            json!({
                "provider": r.provider.name,
                "port": r.provider.listen.port(),
                "base_url": base_url,
                "upstream": r.provider.shown_upstream(),
                "configured": configured(r),
            })
        })
        .collect();
    reply(
        StatusCode::OK,
        &json!({"service": "awf-api-proxy", "endpoints": endpoints}),
    )
}

fn reply(status: StatusCode, body: &Value) -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::full(Bytes::from(body.to_string())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_are_usable_addresses() {
        let at = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert_eq!(
            base_url(at("0.0.0.0:10000"), Some("api-proxy")),
            "http://api-proxy:10000"
        );
        assert_eq!(
            base_url(at("0.0.0.0:10001"), None),
            "http://127.0.0.1:10001"
        );
        assert_eq!(base_url(at("[::]:10002"), None), "http://[::1]:10002");
        assert_eq!(
            base_url(at("172.30.0.30:10003"), None),
            "http://172.30.0.30:10003"
        );
    }
}
