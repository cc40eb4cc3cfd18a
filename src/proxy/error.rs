//! `ProxyError`: every error the proxy answers itself, mapped in one place to status, JSON
//! body (docs/design.md §5), rejection reason and log text.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};

use crate::proxy::body::ProxyBody;
use crate::telemetry::logging::sanitize;

/// Where an error came from decides 4xx (the client's request) or 5xx (upstream, us).
#[derive(Debug)]
pub enum ProxyError {
    /// The request target is not origin-form, or the path is unusable.
    InvalidRequest(String),
    /// The body is over `limits.max_request_body` (declared or while streaming).
    TooLarge { limit: u64 },
    /// No usable credential, and none will come without a restart: `None` for a missing key,
    /// `Some(why)` for a cloud source that cannot start (why names what is missing).
    NotConfigured(Option<String>),
    /// A cloud source has no valid credential now but keeps requesting one (not yet obtained,
    /// or expired and not yet refreshed): transient, so retryable. Why names the source and
    /// the failure, never a value.
    CredentialPending(String),
    /// Connect, TLS or CONNECT failure, or the connection failed before a response;
    /// `kind` is the metrics label (connect, tls, proxy_connect, timeout, reset).
    Unavailable { kind: &'static str, message: String },
    /// No response headers within `limits.request_timeout`.
    Timeout(std::time::Duration),
    /// No upstream stream slot within `limits.upstream_wait_timeout`: every connection the
    /// cap allows is open and full.
    Busy {
        waited: std::time::Duration,
        cap: usize,
    },
    /// The process is draining.
    ShuttingDown,
    /// A listener holds `limits.max_connections` connections: answered by the listener
    /// itself (`server::admission`) before HTTP parsing, then the connection is closed.
    Overloaded { max: usize },
    /// A configured rate limit is reached.
    RateLimited(crate::policy::ratelimit::Limited),
    /// `callers:` is configured and the request presented no matching token.
    UnauthorizedCaller,
    /// The method, path or model is not on the provider's allow-list.
    NotAllowed(String),
    /// A token budget is spent; `scope` names it (`provider openai`, `caller agent`).
    BudgetExhausted {
        scope: String,
        spent: crate::policy::budget::Exhausted,
    },
    /// `shared_state` is configured with `on_unavailable: deny` and Redis did not answer
    /// within `shared_state.timeout` (docs/design.md §8c).
    SharedStateUnavailable(std::time::Duration),
}

impl ProxyError {
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::InvalidRequest(_) => StatusCode::BAD_REQUEST,
            ProxyError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::NotConfigured(_) | ProxyError::CredentialPending(_) => {
                StatusCode::FORBIDDEN
            }
            ProxyError::Unavailable { .. } => StatusCode::BAD_GATEWAY,
            ProxyError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::Busy { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::ShuttingDown | ProxyError::Overloaded { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ProxyError::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            ProxyError::UnauthorizedCaller => StatusCode::UNAUTHORIZED,
            ProxyError::NotAllowed(_) => StatusCode::FORBIDDEN,
            ProxyError::BudgetExhausted { .. } => StatusCode::TOO_MANY_REQUESTS,
            ProxyError::SharedStateUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The `error.type` of the JSON body; also the rejection reason in logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            ProxyError::InvalidRequest(_) => "invalid_request",
            ProxyError::TooLarge { .. } => "request_too_large",
            ProxyError::NotConfigured(_) | ProxyError::CredentialPending(_) => {
                "provider_not_configured"
            }
            ProxyError::Unavailable { .. } => "upstream_unavailable",
            ProxyError::Timeout(_) => "upstream_timeout",
            ProxyError::Busy { .. } => "upstream_busy",
            ProxyError::ShuttingDown => "shutting_down",
            ProxyError::Overloaded { .. } => "overloaded",
            ProxyError::RateLimited(_) => "rate_limit_error",
            ProxyError::UnauthorizedCaller => "unauthorized_caller",
            ProxyError::NotAllowed(_) => "not_allowed",
            ProxyError::BudgetExhausted { .. } => "budget_exhausted",
            ProxyError::SharedStateUnavailable(_) => "shared_state_unavailable",
        }
    }

    /// The bounded `reason` label of `keyproxy_rejections_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            ProxyError::RateLimited(_) => "rate_limited",
            other => other.kind(),
        }
    }

    /// Whether retrying the same request may succeed.
    pub fn retryable(&self) -> bool {
        matches!(
            self,
            ProxyError::Unavailable { .. }
                | ProxyError::Timeout(_)
                | ProxyError::Busy { .. }
                | ProxyError::ShuttingDown
                | ProxyError::Overloaded { .. }
                | ProxyError::RateLimited(_)
                | ProxyError::BudgetExhausted { .. }
                // A cloud credential being obtained or refreshed: transient.
                | ProxyError::CredentialPending(_)
                | ProxyError::SharedStateUnavailable(_)
        )
    }

    /// The upstream error kind for metrics, when the upstream is to blame.
    pub fn upstream_kind(&self) -> Option<&'static str> {
        match self {
            ProxyError::Unavailable { kind, .. } => Some(kind),
            ProxyError::Timeout(_) => Some("timeout"),
            _ => None,
        }
    }

    pub fn message(&self, provider: &str) -> String {
        match self {
            ProxyError::InvalidRequest(why) => why.clone(),
            ProxyError::TooLarge { limit } => format!(
                "request body is larger than the proxy's limit of {} bytes",
                limit
            ),
            ProxyError::NotConfigured(Some(why)) => format!(
                "provider {provider} is not configured in llm-keyproxy: {why}; fix it and restart the proxy"
            ),
            ProxyError::CredentialPending(why) => format!(
                "provider {provider} has no valid cloud credential now ({why}); the proxy keeps requesting one in the background"
            ),
            ProxyError::NotConfigured(None) => format!(
                "provider {provider} has no API key configured in llm-keyproxy; set its key and restart the proxy"
            ),
            ProxyError::Unavailable { message, .. } => format!("upstream unavailable: {message}"),
            ProxyError::Timeout(after) => format!(
                "upstream sent no response headers within {}",
                crate::config::show_duration(*after)
            ),
            ProxyError::Busy { waited, cap } => format!(
                "every upstream connection provider {provider} may open (limits.max_upstream_connections = {cap}) is in use and none had a free stream slot within {}; retry shortly",
                crate::config::show_duration(*waited)
            ),
            ProxyError::ShuttingDown => "llm-keyproxy is shutting down; retry on a new connection".into(),
            ProxyError::Overloaded { max } => format!(
                "llm-keyproxy already holds {max} connections on the {provider} listener (limits.max_connections); retry shortly"
            ),
            ProxyError::UnauthorizedCaller => "this proxy requires a caller token: present it where the SDK puts its API key (Authorization: Bearer, x-api-key or x-goog-api-key)".into(),
            ProxyError::NotAllowed(why) => why.clone(),
            ProxyError::BudgetExhausted { scope, spent } => match spent.retry_after {
                Some(s) => format!("token budget of {scope} is spent ({} {}); it frees up in {s} s", spent.limit, spent.which.replace('_', " ")),
                None => format!("token budget of {scope} is spent ({} tokens in total); restart or raise the budget", spent.limit),
            },
            ProxyError::SharedStateUnavailable(after) => format!(
                "the shared rate-limit store did not answer within {} and shared_state.on_unavailable is deny; retry shortly",
                crate::config::show_duration(*after)
            ),
            ProxyError::RateLimited(l) => format!(
                "rate limit reached for provider {provider}: {} {} ; retry after {} s",
                l.limit,
                l.which.replace('_', " "),
                l.retry_after
            ),
        }
    }

    /// The JSON body of docs/design.md §5, sanitised like logs.
    pub fn body(&self, provider: &str) -> Bytes {
        let body = serde_json::json!({
            "error": {
                "type": self.kind(),
                "message": sanitize(&self.message(provider), 500),
                "provider": provider,
                "retryable": self.retryable(),
            }
        });
        Bytes::from(body.to_string())
    }

    /// The whole answer as HTTP/1.1 bytes, for a listener that answers before any HTTP parsing
    /// (a connection over `limits.max_connections`).
    pub fn into_http1_bytes(self, provider: &str) -> Vec<u8> {
        let request_id = crate::proxy::headers::request_id(&http::HeaderMap::new());
        let (parts, body) = self.into_response(provider, &request_id).into_parts();
        let body = match body {
            ProxyBody::Full(Some(bytes)) => bytes,
            _ => Bytes::new(),
        };
        let status = parts.status;
        let mut out = format!(
            "HTTP/1.1 {} {}\r\n",
            status.as_str(),
            status.canonical_reason().unwrap_or("")
        )
        .into_bytes();
        for (name, value) in &parts.headers {
            out.extend_from_slice(name.as_str().as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(format!("content-length: {}\r\n\r\n", body.len()).as_bytes());
        out.extend_from_slice(&body);
        out
    }

    /// The whole response, with `x-request-id` echoed.
    pub fn into_response(self, provider: &str, request_id: &HeaderValue) -> Response<ProxyBody> {
        let mut resp = Response::new(ProxyBody::full(self.body(provider)));
        *resp.status_mut() = self.status();
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        h.insert(
            crate::proxy::headers::X_REQUEST_ID.clone(),
            request_id.clone(),
        );
        match &self {
            ProxyError::ShuttingDown => {
                h.insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            ProxyError::RateLimited(l) => {
                let reset = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs())
                    + l.retry_after;
                h.insert(header::RETRY_AFTER, HeaderValue::from(l.retry_after.max(1)));
                h.insert("x-ratelimit-limit", HeaderValue::from(l.limit));
                h.insert("x-ratelimit-remaining", HeaderValue::from(0u64));
                h.insert("x-ratelimit-reset", HeaderValue::from(reset));
            }
            ProxyError::Busy { .. } | ProxyError::SharedStateUnavailable(_) => {
                h.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            ProxyError::Overloaded { .. } => {
                h.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                h.insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            ProxyError::BudgetExhausted { spent, .. } => {
                if let Some(after) = spent.retry_after {
                    h.insert(header::RETRY_AFTER, HeaderValue::from(after.max(1)));
                }
            }
            _ => {}
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_shape() {
        let e = ProxyError::NotConfigured(None);
        let v: serde_json::Value = serde_json::from_slice(&e.body("openai")).unwrap();
        assert_eq!(v["error"]["type"], "provider_not_configured");
        assert_eq!(v["error"]["provider"], "openai");
        assert_eq!(v["error"]["retryable"], false);
        assert_eq!(e.status(), 403);
        let e = ProxyError::Unavailable {
            kind: "connect",
            message: "bad\nthing\u{7}".into(),
        };
        let v: serde_json::Value = serde_json::from_slice(&e.body("x")).unwrap();
        assert_eq!(v["error"]["message"], "upstream unavailable: badthing");
        assert_eq!(v["error"]["retryable"], true);
    }

    #[test]
    fn overloaded_answer_is_a_whole_http1_response() {
        let bytes = ProxyError::Overloaded { max: 7 }.into_http1_bytes("openai");
        let text = String::from_utf8(bytes).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(
            head.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
            "{head}"
        );
        assert!(head.contains("\r\nconnection: close"), "{head}");
        assert!(head.contains("\r\nretry-after: 1"), "{head}");
        assert!(
            head.contains(&format!("\r\ncontent-length: {}", body.len())),
            "{head}"
        );
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["error"]["type"], "overloaded");
        assert_eq!(v["error"]["retryable"], true);
        assert!(v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("7 connections"));
    }
}
