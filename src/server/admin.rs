//! The admin listener: `GET /live`, `GET /ready` (200 only once every listener is bound,
//! 503 from the moment draining starts) and `GET /metrics` (OpenMetrics text).

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::proxy::body::ProxyBody;
use crate::server::Shared;

/// The hyper service of the admin listener.
pub async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    let (status, body) = match (req.method(), req.uri().path()) {
        (&Method::GET | &Method::HEAD, "/live") => (StatusCode::OK, r#"{"status":"live"}"#),
        (&Method::GET | &Method::HEAD, "/ready") => {
            if shared.draining.load(Ordering::Relaxed) {
                (StatusCode::SERVICE_UNAVAILABLE, r#"{"status":"draining"}"#)
            } else if shared.ready.load(Ordering::Relaxed) && !shared_state_denies(&shared) {
                match missing_credentials(&shared) {
                    None => (StatusCode::OK, r#"{"status":"ready"}"#),
                    Some(body) => return Ok(json(StatusCode::OK, Bytes::from(body))),
                }
            } else if shared.ready.load(Ordering::Relaxed) {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    r#"{"status":"shared_state_unavailable"}"#,
                )
            } else {
                (StatusCode::SERVICE_UNAVAILABLE, r#"{"status":"starting"}"#)
            }
        }
        (&Method::GET, "/metrics") => {
            let text = shared.metrics.encode();
            let mut resp = Response::new(ProxyBody::full(Bytes::from(text)));
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            return Ok(resp);
        }
        (_, "/live" | "/ready" | "/metrics") => {
            (StatusCode::METHOD_NOT_ALLOWED, r#"{"status":"use GET"}"#)
        }
        _ => (
            StatusCode::NOT_FOUND,
            r#"{"status":"not found: the admin listener serves /live, /ready and /metrics"}"#,
        ),
    };
    Ok(json(status, Bytes::from_static(body.as_bytes())))
}

fn json(status: StatusCode, body: Bytes) -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::full(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// With `shared_state.on_unavailable: deny`, a replica whose Redis does not answer would
/// refuse every request: `/ready` says 503 so a load balancer sends traffic elsewhere
/// (docs/design.md §8c). `allow` and `local` still serve, so they stay ready.
fn shared_state_denies(shared: &Shared) -> bool {
    shared.shared_state.get().is_some_and(|s| {
        s.on_unavailable == crate::config::shared_state::OnUnavailable::Deny && !s.up()
    })
}

/// `/ready`'s body when a cloud provider has no valid credential now (docs/cloud.md): still
/// 200, since the process is ready and the refresher keeps trying; each such provider named
/// with why.
fn missing_credentials(shared: &Shared) -> Option<String> {
    let missing: serde_json::Map<String, serde_json::Value> = shared
        .cloud_credentials
        .get()?
        .iter()
        .filter_map(|(name, slot)| match slot.get() {
            crate::config::plan::Credential::Missing(why) => Some((name.clone(), why.into())),
            _ => None,
        })
        .collect();
    (!missing.is_empty())
        .then(|| serde_json::json!({"status": "ready", "credentials_missing": missing}).to_string())
}
