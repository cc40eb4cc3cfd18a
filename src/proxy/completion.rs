//! The end of an upstream-answered request: when its response body is finished (completed,
//! client gone, upstream broke off, idle), metrics, token usage and budgets are recorded and
//! the `request_complete` line is written.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use http::{HeaderValue, Method};

use super::{Active, Route};
use crate::proxy::body::{OnEnd, Outcome, RequestStats};
use crate::telemetry::usage::{self, Finished, Usage, UsageTap};

/// Records metrics, usage and the `request_complete` line when the response body is finished.
pub(crate) struct Completion {
    pub(super) route: Arc<Route>,
    pub(super) request_id: HeaderValue,
    pub(super) method: Method,
    pub(super) path: String,
    pub(super) status: u16,
    pub(super) start: Instant,
    pub(super) span: Option<crate::telemetry::otel::SpanStart>,
    pub(super) stats: Arc<RequestStats>,
    pub(super) upstream_protocol: &'static str,
    pub(super) streamed: bool,
    /// Request sent upstream -> response headers, in milliseconds.
    pub(super) ttfb_ms: f64,
    /// Index into `route.callers`, when callers are configured.
    pub(super) caller: Option<usize>,
    pub(super) _active: Active,
    pub(super) _stream: Option<Active>,
}

impl OnEnd for Completion {
    fn on_end(self: Box<Self>, outcome: Outcome, response_bytes: u64, tap: Option<UsageTap>) {
        let m = &self.route.metrics;
        let request_bytes = self.stats.bytes.load(Ordering::Relaxed);
        count(
            &self.route,
            self.status,
            outcome.as_str(),
            self.start,
            request_bytes,
            response_bytes,
        );
        if outcome == Outcome::UpstreamAborted {
            m.upstream_error("reset");
        }
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
        if let Some(u) = &usage {
            let id = self.request_id.to_str().unwrap_or("");
            charge(&self.route, self.caller, u, id);
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
        let line = Line {
            route: &self.route,
            request_id,
            method: self.method.as_str(),
            path: self.path.as_str(),
            status: self.status,
            duration_ms,
            ttfb_ms: Some(self.ttfb_ms),
            request_bytes,
            response_bytes: end.response_bytes,
            upstream_protocol: self.upstream_protocol,
            outcome,
            streamed: Some(self.streamed),
            websocket: None,
            caller: caller_name,
            model,
            tokens,
        };
        let warn = matches!(
            end.outcome,
            Outcome::UpstreamAborted | Outcome::IdleTimeout | Outcome::ClientStalled
        );
        line.log(warn);
        super::span::record(self.span.clone(), &line, None);
        record_usage(
            &self.route,
            &UsageRecord {
                request_id,
                caller: caller_name,
                model,
                tokens,
                status: self.status,
                duration_ms,
                streamed: self.streamed,
                outcome,
            },
        );
    }
}

/// Counts the tokens of one response in the metrics and charges them to the provider's and
/// the caller's budgets (input + output tokens).
pub(crate) fn charge(route: &Route, caller: Option<usize>, u: &Usage, request_id: &str) {
    if !u.has_tokens() {
        return;
    }
    route.metrics.tokens(u.counts());
    // Budgets count input + output tokens.
    let spent = u.input.unwrap_or(0) + u.output.unwrap_or(0);
    // This process's budgets always (on_unavailable: local falls back to them); with
    // shared_state also Redis's, whose view the gauges then show (shared/).
    let metrics = route.shared.is_none().then_some(&route.registry);
    if let Some(b) = &route.budget {
        b.charge(spent);
        if let Some(m) = metrics {
            m.budget_spent("provider", &route.provider.name, b.spent());
        }
    }
    let named = caller.and_then(|i| route.callers.get(i));
    if let Some((c, b)) = named.and_then(|c| c.budget.as_ref().map(|b| (c, b))) {
        b.charge(spent);
        if let Some(m) = metrics {
            m.budget_spent("caller", &c.name, b.spent());
        }
    }
    if let Some(store) = &route.shared {
        let keys = super::limits::charge_keys(route, store, caller);
        store.charge(keys, spent, request_id.to_owned());
    }
}

/// One line of the usage file.
pub(crate) struct UsageRecord<'a> {
    pub request_id: &'a str,
    pub caller: Option<&'a str>,
    pub model: Option<&'a str>,
    /// input, output, cache read, cache write.
    pub tokens: [Option<u64>; 4],
    pub status: u16,
    pub duration_ms: f64,
    pub streamed: bool,
    pub outcome: &'a str,
}

/// Appends `r` to the usage file, when one is configured.
pub(crate) fn record_usage(route: &Route, r: &UsageRecord<'_>) {
    let Some(log) = &route.usage_log else {
        return;
    };
    let unix_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let line = serde_json::json!({
        "unix_ms": unix_ms,
        "request_id": r.request_id,
        "provider": &*route.provider_name,
        "caller": r.caller,
        "model": r.model,
        "input_tokens": r.tokens[0],
        "output_tokens": r.tokens[1],
        "cache_read_tokens": r.tokens[2],
        "cache_write_tokens": r.tokens[3],
        "status": r.status,
        "duration_ms": r.duration_ms,
        "streamed": r.streamed,
        "outcome": r.outcome,
    });
    log.record(line.to_string());
}

/// Counts a finished request (or tunnel) in the provider's metrics.
pub(crate) fn count(
    route: &Route,
    status: u16,
    outcome: &str,
    start: Instant,
    request_bytes: u64,
    response_bytes: u64,
) {
    let m = &route.metrics;
    m.request(status);
    m.outcome(outcome);
    m.duration.observe(start.elapsed().as_secs_f64());
    m.request_bytes.inc_by(request_bytes);
    m.response_bytes.inc_by(response_bytes);
}

/// The `request_complete` line of an HTTP request or a WebSocket tunnel: one shape, fields
/// that do not apply (`None`) left out.
pub(crate) struct Line<'a> {
    pub route: &'a Route,
    pub request_id: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    pub status: u16,
    pub duration_ms: f64,
    /// Request sent upstream -> response headers (HTTP only).
    pub ttfb_ms: Option<f64>,
    pub request_bytes: u64,
    pub response_bytes: u64,
    pub upstream_protocol: &'static str,
    pub outcome: &'a str,
    pub streamed: Option<bool>,
    pub websocket: Option<bool>,
    pub caller: Option<&'a str>,
    pub model: Option<&'a str>,
    /// input, output, cache read, cache write.
    pub tokens: [Option<u64>; 4],
}

impl Line<'_> {
    /// Writes the line (WARN when the stream broke off, else INFO).
    pub fn log(&self, warn: bool) {
        macro_rules! complete {
            ($level:ident) => {
                tracing::$level!(
                    event = "request_complete",
                    request_id = self.request_id,
                    provider = &*self.route.provider_name,
                    method = self.method,
                    path = self.path,
                    status = self.status,
                    duration_ms = self.duration_ms,
                    ttfb_ms = self.ttfb_ms,
                    request_bytes = self.request_bytes,
                    response_bytes = self.response_bytes,
                    upstream_host = &*self.route.upstream_host,
                    upstream_protocol = self.upstream_protocol,
                    outcome = self.outcome,
                    streamed = self.streamed,
                    websocket = self.websocket,
                    caller = self.caller,
                    model = self.model,
                    input_tokens = self.tokens[0],
                    output_tokens = self.tokens[1],
                    cache_read_tokens = self.tokens[2],
                    cache_write_tokens = self.tokens[3],
                )
            };
        }
        if warn {
            complete!(warn);
        } else {
            complete!(info);
        }
    }
}
