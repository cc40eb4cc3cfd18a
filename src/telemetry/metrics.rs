//! Prometheus metrics: one registry made at start, names as consts here, bounded labels only
//! (provider names from the config, status codes, fixed reason/kind/outcome sets).
//!
//! Each provider's handles are resolved once (`ProviderMetrics`), so the request path touches
//! only atomics: no registry lock, no label allocation.

use std::sync::{Arc, OnceLock};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

pub const PREFIX: &str = "keyproxy";
pub const REQUESTS: &str = "requests";
pub const REQUEST_DURATION: &str = "request_duration_seconds";
pub const UPSTREAM_TTFB: &str = "upstream_ttfb_seconds";
pub const ACTIVE_REQUESTS: &str = "active_requests";
pub const ACTIVE_STREAMS: &str = "active_streams";
pub const WEBSOCKET_TUNNELS: &str = "websocket_tunnels";
pub const REQUEST_BYTES: &str = "request_bytes";
pub const RESPONSE_BYTES: &str = "response_bytes";
pub const REJECTIONS: &str = "rejections";
pub const UPSTREAM_ERRORS: &str = "upstream_errors";
pub const UPSTREAM_CONNECTIONS: &str = "upstream_connections";
pub const UPSTREAM_CONNECTS: &str = "upstream_connects";
pub const UPSTREAM_STREAMS: &str = "upstream_streams";
pub const UPSTREAM_SLOT_WAIT: &str = "upstream_slot_wait_seconds";
pub const UPSTREAM_RETRIES: &str = "upstream_retries";
pub const STREAM_OUTCOMES: &str = "stream_outcomes";
pub const TOKENS: &str = "tokens";
pub const USAGE_UNPARSED: &str = "usage_unparsed";
pub const USAGE_LINES_DROPPED: &str = "usage_lines_dropped";
pub const TRACE_SPANS_EXPORTED: &str = "trace_spans_exported";
pub const TRACE_SPANS_DROPPED: &str = "trace_spans_dropped";
pub const BUILD: &str = "build";
pub const BUDGET_SPENT: &str = "budget_spent_tokens";
pub const CONNECTIONS_REFUSED: &str = "connections_refused";
pub const CREDENTIAL_REFRESHES: &str = "credential_refreshes";
pub const CREDENTIAL_EXPIRY: &str = "credential_expiry_timestamp_seconds";
pub const SHARED_STATE_UP: &str = "shared_state_up";
pub const SHARED_STATE_LATENCY: &str = "shared_state_latency_seconds";
pub const SHARED_STATE_ERRORS: &str = "shared_state_errors";
pub const SHARED_STATE_FALLBACKS: &str = "shared_state_fallbacks";
pub const SHARED_STATE_UNCHARGED: &str = "shared_state_uncharged_tokens";
pub const SHARED_WINDOW_USED: &str = "shared_window_used";
pub const SHARED_WINDOW_REMAINING: &str = "shared_window_remaining";
pub const SHARED_WINDOW_RESET: &str = "shared_window_reset_seconds";

/// Buckets from 0.5 ms (a small JSON call) to 30 minutes (a long stream).
const DURATION_BUCKETS: [f64; 20] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 120.0, 300.0, 600.0, 1800.0,
];

/// Rejection reasons: the `type` of the proxy's JSON errors, except `rate_limited`
/// (whose JSON `type` is `rate_limit_error`, as the SDKs expect).
pub const REASONS: [&str; 12] = [
    "invalid_request",
    "request_too_large",
    "provider_not_configured",
    "upstream_unavailable",
    "upstream_timeout",
    "shutting_down",
    "rate_limited",
    "unauthorized_caller",
    "not_allowed",
    "budget_exhausted",
    "upstream_busy",
    "shared_state_unavailable",
];
/// Results of upstream connects: `ok` or the error kind.
pub const CONNECT_RESULTS: [&str; 5] = ["ok", "connect", "tls", "proxy_connect", "timeout"];
/// Why a request was sent again on another upstream connection.
pub const RETRY_REASONS: [&str; 2] = ["refused_stream", "goaway"];
/// Buckets of the wait for an upstream stream slot: mostly zero, up to the wait bound.
const WAIT_BUCKETS: [f64; 12] = [
    0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0,
];
/// Upstream error kinds.
pub const ERROR_KINDS: [&str; 5] = ["connect", "tls", "proxy_connect", "timeout", "reset"];
/// How a proxied response (or WebSocket tunnel) ended.
pub const OUTCOMES: [&str; 8] = [
    "completed",
    "client_closed",
    "client_stalled",
    "upstream_aborted",
    "idle_timeout",
    "shutdown",
    "aborted",
    "upgrade_failed",
];
/// Token kinds.
pub const TOKEN_KINDS: [&str; 4] = ["input", "output", "cache_read", "cache_write"];
/// Upstream protocols.
pub const PROTOCOLS: [&str; 2] = ["h2", "http1.1"];
/// Why a listener turned a client connection away: `overloaded` (a provider listener at
/// `limits.max_connections` answered a new one 503), `evicted` (the admin listener at
/// `admin.max_connections` closed its oldest idle one to admit a new one).
pub const REFUSAL_REASONS: [&str; 2] = ["overloaded", "evicted"];
/// Operations on the shared store (docs/design.md §8c).
pub const SHARED_STATE_OPS: [&str; 3] = ["admit", "charge", "ping"];
/// Why a shared-store operation got no answer.
pub const SHARED_STATE_ERROR_KINDS: [&str; 2] = ["timeout", "error"];
/// `shared_state.on_unavailable` modes, the label of a fallback.
pub const SHARED_STATE_MODES: [&str; 3] = ["deny", "allow", "local"];
/// Buckets of a Redis round trip: 50 µs to 1 s.
const STORE_BUCKETS: [f64; 14] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];
/// Results of a cloud credential refresh (docs/cloud.md).
pub const REFRESH_RESULTS: [&str; 2] = ["ok", "failed"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderLabel {
    provider: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    provider: String,
    status: u16,
}

type ByName = Family<Vec<(&'static str, String)>, Counter>;

/// The registry and every metric family.
pub struct Metrics {
    registry: Registry,
    requests: Family<StatusLabels, Counter>,
    duration: Family<ProviderLabel, Histogram>,
    ttfb: Family<ProviderLabel, Histogram>,
    active_requests: Family<ProviderLabel, Gauge>,
    active_streams: Family<ProviderLabel, Gauge>,
    websocket_tunnels: Family<ProviderLabel, Gauge>,
    request_bytes: Family<ProviderLabel, Counter>,
    response_bytes: Family<ProviderLabel, Counter>,
    rejections: ByName,
    upstream_errors: ByName,
    connections: Family<Vec<(&'static str, String)>, Gauge>,
    connects: ByName,
    upstream_streams: Family<ProviderLabel, Gauge>,
    slot_wait: Family<ProviderLabel, Histogram>,
    retries: ByName,
    outcomes: ByName,
    tokens: ByName,
    unparsed: ByName,
    pub usage_lines_dropped: Counter,
    /// Spans the collector accepted (docs/observability.md "Traces").
    pub trace_spans_exported: Counter,
    /// Spans dropped: the export queue was full, or their export failed.
    pub trace_spans_dropped: Counter,
    budget_spent: Family<Vec<(&'static str, String)>, Gauge>,
    connections_refused: ByName,
    credential_refreshes: ByName,
    credential_expiry: Family<ProviderLabel, Gauge>,
    shared_up: Family<Vec<(&'static str, String)>, Gauge>,
    shared_latency: Family<Vec<(&'static str, String)>, Histogram>,
    shared_errors: ByName,
    shared_fallbacks: ByName,
    shared_uncharged: ByName,
    shared_used: Family<Vec<(&'static str, String)>, Gauge>,
    shared_remaining: Family<Vec<(&'static str, String)>, Gauge>,
    shared_reset: Family<Vec<(&'static str, String)>, Gauge>,
    /// When the registry was made (the process start): AWF's `uptime_seconds`.
    pub started: std::time::Instant,
}

fn histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

fn wait_histogram() -> Histogram {
    Histogram::new(WAIT_BUCKETS)
}

fn store_histogram() -> Histogram {
    Histogram::new(STORE_BUCKETS)
}

impl Metrics {
    /// Makes the registry with every family registered, and the build info.
    pub fn new() -> Arc<Metrics> {
        let mut registry = Registry::with_prefix(PREFIX);
        let m = Metrics {
            started: std::time::Instant::now(),
            requests: Family::default(),
            duration: Family::new_with_constructor(histogram as fn() -> Histogram),
            ttfb: Family::new_with_constructor(histogram as fn() -> Histogram),
            active_requests: Family::default(),
            active_streams: Family::default(),
            websocket_tunnels: Family::default(),
            request_bytes: Family::default(),
            response_bytes: Family::default(),
            rejections: Family::default(),
            upstream_errors: Family::default(),
            connections: Family::default(),
            connects: Family::default(),
            upstream_streams: Family::default(),
            slot_wait: Family::new_with_constructor(wait_histogram as fn() -> Histogram),
            retries: Family::default(),
            outcomes: Family::default(),
            tokens: Family::default(),
            unparsed: Family::default(),
            usage_lines_dropped: Counter::default(),
            trace_spans_exported: Counter::default(),
            trace_spans_dropped: Counter::default(),
            budget_spent: Family::default(),
            connections_refused: Family::default(),
            credential_refreshes: Family::default(),
            credential_expiry: Family::default(),
            shared_up: Family::default(),
            shared_latency: Family::new_with_constructor(store_histogram as fn() -> Histogram),
            shared_errors: Family::default(),
            shared_fallbacks: Family::default(),
            shared_uncharged: Family::default(),
            shared_used: Family::default(),
            shared_remaining: Family::default(),
            shared_reset: Family::default(),
            registry: Registry::default(),
        };
        let r = &mut registry;
        r.register(
            REQUESTS,
            "Requests answered, by provider and status code",
            m.requests.clone(),
        );
        r.register(
            REQUEST_DURATION,
            "Request duration, from request head to end of response body",
            m.duration.clone(),
        );
        r.register(
            UPSTREAM_TTFB,
            "Time from sending a request upstream to its response headers",
            m.ttfb.clone(),
        );
        r.register(
            ACTIVE_REQUESTS,
            "Requests in flight",
            m.active_requests.clone(),
        );
        r.register(
            ACTIVE_STREAMS,
            "Server-sent-event responses in flight",
            m.active_streams.clone(),
        );
        r.register(
            WEBSOCKET_TUNNELS,
            "WebSocket tunnels open",
            m.websocket_tunnels.clone(),
        );
        r.register(
            REQUEST_BYTES,
            "Request body bytes received from clients",
            m.request_bytes.clone(),
        );
        r.register(
            RESPONSE_BYTES,
            "Response body bytes sent to clients",
            m.response_bytes.clone(),
        );
        r.register(
            REJECTIONS,
            "Requests the proxy answered with its own error, by reason",
            m.rejections.clone(),
        );
        r.register(
            UPSTREAM_ERRORS,
            "Upstream failures, by kind (connect, tls, proxy_connect, timeout, reset)",
            m.upstream_errors.clone(),
        );
        r.register(
            UPSTREAM_CONNECTIONS,
            "Open upstream connections, by protocol",
            m.connections.clone(),
        );
        r.register(
            UPSTREAM_CONNECTS,
            "Upstream connection attempts, by result (ok, connect, tls, proxy_connect, timeout)",
            m.connects.clone(),
        );
        r.register(
            UPSTREAM_STREAMS,
            "Requests in flight on upstream connections (HTTP/2 streams and HTTP/1.1 exchanges)",
            m.upstream_streams.clone(),
        );
        r.register(
            UPSTREAM_SLOT_WAIT,
            "Time a request waited for an upstream stream slot or connection",
            m.slot_wait.clone(),
        );
        r.register(
            UPSTREAM_RETRIES,
            "Requests sent again on another upstream connection (refused_stream, goaway)",
            m.retries.clone(),
        );
        r.register(
            STREAM_OUTCOMES,
            "How proxied response bodies ended",
            m.outcomes.clone(),
        );
        r.register(
            TOKENS,
            "Tokens reported by the upstream, by kind (input, output, cache_read, cache_write)",
            m.tokens.clone(),
        );
        r.register(
            USAGE_UNPARSED,
            "Responses whose token usage could not be read (unknown encoding, too large)",
            m.unparsed.clone(),
        );
        r.register(
            USAGE_LINES_DROPPED,
            "Usage-file lines dropped because the writer fell behind",
            m.usage_lines_dropped.clone(),
        );
        r.register(
            TRACE_SPANS_EXPORTED,
            "Spans the OTLP collector accepted",
            m.trace_spans_exported.clone(),
        );
        r.register(
            TRACE_SPANS_DROPPED,
            "Spans dropped: the export queue was full or their export failed",
            m.trace_spans_dropped.clone(),
        );
        r.register(
            BUDGET_SPENT,
            "Tokens spent against a budget (scope provider or caller; window minute, hour, total)",
            m.budget_spent.clone(),
        );
        r.register(
            CONNECTIONS_REFUSED,
            "Client connections a listener turned away at its connection cap, by listener and reason (overloaded, evicted)",
            m.connections_refused.clone(),
        );
        r.register(
            CREDENTIAL_REFRESHES,
            "Cloud credential refreshes (bedrock, vertex, azure-openai), by provider and result (ok, failed)",
            m.credential_refreshes.clone(),
        );
        r.register(
            CREDENTIAL_EXPIRY,
            "When the provider's current cloud credential expires (Unix time; 0: none valid)",
            m.credential_expiry.clone(),
        );
        r.register(
            SHARED_STATE_UP,
            "1 while the shared store (shared_state, Redis) answers within its timeout, else 0",
            m.shared_up.clone(),
        );
        r.register(
            SHARED_STATE_LATENCY,
            "Round trips to the shared store that answered, by op (admit, charge, ping)",
            m.shared_latency.clone(),
        );
        r.register(
            SHARED_STATE_ERRORS,
            "Shared-store operations without an answer, by op (admit, charge, ping) and kind (timeout, error)",
            m.shared_errors.clone(),
        );
        r.register(
            SHARED_STATE_FALLBACKS,
            "Requests decided without the shared store, by mode (on_unavailable: deny, allow, local)",
            m.shared_fallbacks.clone(),
        );
        r.register(
            SHARED_STATE_UNCHARGED,
            "Tokens whose charge to the shared store got no answer (sent once, never retried)",
            m.shared_uncharged.clone(),
        );
        r.register(
            SHARED_WINDOW_USED,
            "With shared_state: use of a window across every replica (scope rate_limit, provider or caller)",
            m.shared_used.clone(),
        );
        r.register(
            SHARED_WINDOW_REMAINING,
            "With shared_state: what a configured limit leaves in its window across every replica",
            m.shared_remaining.clone(),
        );
        r.register(
            SHARED_WINDOW_RESET,
            "With shared_state: seconds until the oldest use leaves the window (0: empty, or a total)",
            m.shared_reset.clone(),
        );
        // The admin listener's series exists from the start, like every provider's.
        let _ = m.connections_refused("admin", "evicted");
        r.register(
            BUILD,
            "Build information",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        Arc::new(Metrics { registry, ..m })
    }

    /// Publishes a budget's current spend.
    pub fn budget_spent(
        &self,
        scope: &'static str,
        name: &str,
        spent: crate::policy::budget::Spent,
    ) {
        for (window, v) in [
            ("minute", spent.last_minute),
            ("hour", spent.last_hour),
            ("total", spent.total),
        ] {
            let labels = vec![
                ("scope", scope.to_owned()),
                ("name", name.to_owned()),
                ("window", window.to_owned()),
            ];
            self.budget_spent
                .get_or_create(&labels)
                .set(i64::try_from(v).unwrap_or(i64::MAX));
        }
    }

    /// The counter of connections `listener` turned away for `reason` (`REFUSAL_REASONS`);
    /// `listener` is a provider name from the config or `admin`.
    pub fn connections_refused(&self, listener: &str, reason: &'static str) -> Counter {
        self.connections_refused.get_or_create_owned(&vec![
            ("listener", listener.to_owned()),
            ("reason", reason.to_owned()),
        ])
    }

    /// A cloud credential refresh of `provider` ended with `result` (`REFRESH_RESULTS`).
    pub fn credential_refresh(&self, provider: &str, result: &'static str) {
        self.credential_refreshes
            .get_or_create(&vec![
                ("provider", provider.to_owned()),
                ("result", result.to_owned()),
            ])
            .inc();
    }

    /// Publishes when `provider`'s current credential expires (`None`: no valid one).
    pub fn credential_expiry(&self, provider: &str, expires: Option<std::time::SystemTime>) {
        let secs = expires
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        self.credential_expiry
            .get_or_create(&ProviderLabel {
                provider: provider.to_owned(),
            })
            .set(secs);
    }

    /// The shared store's handles; its series exist from then on (only with `shared_state`).
    pub fn shared_state(&self) -> SharedStateMetrics {
        let store = || vec![("store", "redis".to_owned())];
        let by = |key: &'static str, names: &[&'static str], family: &ByName| -> Vec<Counter> {
            names
                .iter()
                .map(|n| family.get_or_create_owned(&vec![(key, (*n).to_owned())]))
                .collect()
        };
        let mut errors = Vec::new();
        for op in SHARED_STATE_OPS {
            for kind in SHARED_STATE_ERROR_KINDS {
                errors.push(
                    self.shared_errors.get_or_create_owned(&vec![
                        ("op", op.to_owned()),
                        ("kind", kind.to_owned()),
                    ]),
                );
            }
        }
        SharedStateMetrics {
            up: self.shared_up.get_or_create_owned(&store()),
            latency: SHARED_STATE_OPS
                .iter()
                .map(|op| {
                    self.shared_latency
                        .get_or_create_owned(&vec![("op", (*op).to_owned())])
                })
                .collect(),
            errors,
            fallbacks: by("mode", &SHARED_STATE_MODES, &self.shared_fallbacks),
            uncharged_tokens: self.shared_uncharged.get_or_create_owned(&store()),
        }
    }

    /// Publishes one window of the shared view (read from Redis every second).
    pub fn shared_window(
        &self,
        scope: &'static str,
        name: &str,
        window: &'static str,
        used: u64,
        limit: Option<u64>,
        resets_in: Option<u64>,
    ) {
        let labels = vec![
            ("scope", scope.to_owned()),
            ("name", name.to_owned()),
            ("window", window.to_owned()),
        ];
        let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.shared_used.get_or_create(&labels).set(n(used));
        if let Some(limit) = limit {
            let left = n(limit.saturating_sub(used));
            self.shared_remaining.get_or_create(&labels).set(left);
        }
        let reset = n(resets_in.unwrap_or(0));
        self.shared_reset.get_or_create(&labels).set(reset);
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// Resolves every handle of one provider (done once per listener).
    pub fn provider(self: &Arc<Self>, name: &str) -> ProviderMetrics {
        let p = ProviderLabel {
            provider: name.to_owned(),
        };
        let named = |family: &ByName, key: &'static str, names: &[&'static str]| -> Vec<Counter> {
            names
                .iter()
                .map(|n| {
                    family.get_or_create_owned(&vec![
                        ("provider", name.to_owned()),
                        (key, (*n).to_owned()),
                    ])
                })
                .collect()
        };
        // The provider listener's refusal series, there from startup with the others.
        let _ = self.connections_refused(name, "overloaded");
        ProviderMetrics {
            name: name.to_owned(),
            metrics: self.clone(),
            by_status: (0..500).map(|_| OnceLock::new()).collect(),
            duration: self.duration.get_or_create_owned(&p),
            ttfb: self.ttfb.get_or_create_owned(&p),
            active_requests: self.active_requests.get_or_create_owned(&p),
            active_streams: self.active_streams.get_or_create_owned(&p),
            websocket_tunnels: self.websocket_tunnels.get_or_create_owned(&p),
            request_bytes: self.request_bytes.get_or_create_owned(&p),
            response_bytes: self.response_bytes.get_or_create_owned(&p),
            rejections: named(&self.rejections, "reason", &REASONS),
            upstream_errors: named(&self.upstream_errors, "kind", &ERROR_KINDS),
            outcomes: named(&self.outcomes, "outcome", &OUTCOMES),
            pool: PoolMetrics {
                connects: named(&self.connects, "result", &CONNECT_RESULTS).into(),
                streams: self.upstream_streams.get_or_create_owned(&p),
                slot_wait: self.slot_wait.get_or_create_owned(&p),
                retries: named(&self.retries, "reason", &RETRY_REASONS).into(),
            },
            tokens: named(&self.tokens, "kind", &TOKEN_KINDS),
            unparsed: self
                .unparsed
                .get_or_create_owned(&vec![("provider", name.to_owned())]),
            connections: PROTOCOLS
                .iter()
                .map(|proto| {
                    self.connections.get_or_create_owned(&vec![
                        ("provider", name.to_owned()),
                        ("protocol", (*proto).to_owned()),
                    ])
                })
                .collect(),
        }
    }
}

/// The shared store's metric handles (docs/observability.md).
pub struct SharedStateMetrics {
    pub up: Gauge,
    latency: Vec<Histogram>,
    /// `SHARED_STATE_OPS` x `SHARED_STATE_ERROR_KINDS`, in that order.
    errors: Vec<Counter>,
    fallbacks: Vec<Counter>,
    pub uncharged_tokens: Counter,
}

impl SharedStateMetrics {
    pub fn latency(&self, op: &str, took: std::time::Duration) {
        if let Some(i) = index_of(&SHARED_STATE_OPS, op) {
            self.latency[i].observe(took.as_secs_f64());
        }
    }

    pub fn error(&self, op: &str, kind: &str) {
        let (Some(o), Some(k)) = (
            index_of(&SHARED_STATE_OPS, op),
            index_of(&SHARED_STATE_ERROR_KINDS, kind),
        ) else {
            return;
        };
        self.errors[o * SHARED_STATE_ERROR_KINDS.len() + k].inc();
    }

    pub fn fallback(&self, mode: &str) {
        if let Some(i) = index_of(&SHARED_STATE_MODES, mode) {
            self.fallbacks[i].inc();
        }
    }
}

/// One provider's metric handles; cloning shares the underlying atomics.
pub struct ProviderMetrics {
    name: String,
    metrics: Arc<Metrics>,
    /// Request counters by status 100..=599, created on first use.
    by_status: Vec<OnceLock<Counter>>,
    pub duration: Histogram,
    pub ttfb: Histogram,
    pub active_requests: Gauge,
    pub active_streams: Gauge,
    pub websocket_tunnels: Gauge,
    pub request_bytes: Counter,
    pub response_bytes: Counter,
    rejections: Vec<Counter>,
    upstream_errors: Vec<Counter>,
    outcomes: Vec<Counter>,
    tokens: Vec<Counter>,
    pub unparsed: Counter,
    connections: Vec<Gauge>,
    pub pool: PoolMetrics,
}

/// The upstream pool's handles of one provider (shared by every worker's pool).
#[derive(Clone)]
pub struct PoolMetrics {
    connects: Arc<[Counter]>,
    pub streams: Gauge,
    pub slot_wait: Histogram,
    retries: Arc<[Counter]>,
}

impl PoolMetrics {
    /// A connect ended: `ok` or its error kind.
    pub fn connect(&self, result: &str) {
        if let Some(i) = index_of(&CONNECT_RESULTS, result) {
            self.connects[i].inc();
        }
    }

    pub fn retry(&self, reason: &str) {
        if let Some(i) = index_of(&RETRY_REASONS, reason) {
            self.retries[i].inc();
        }
    }
}

fn index_of(names: &[&str], name: &str) -> Option<usize> {
    names.iter().position(|n| *n == name)
}

impl ProviderMetrics {
    pub fn request(&self, status: u16) {
        let counter = match self.by_status.get(usize::from(status.saturating_sub(100))) {
            Some(slot) => slot.get_or_init(|| {
                self.metrics.requests.get_or_create_owned(&StatusLabels {
                    provider: self.name.clone(),
                    status,
                })
            }),
            None => return,
        };
        counter.inc();
    }

    /// Requests answered so far (all statuses).
    pub fn total_requests(&self) -> u64 {
        self.by_status
            .iter()
            .filter_map(|c| c.get())
            .map(|c| c.get())
            .sum()
    }

    pub fn rejection(&self, reason: &str) {
        if let Some(i) = index_of(&REASONS, reason) {
            self.rejections[i].inc();
        }
    }

    pub fn upstream_error(&self, kind: &str) {
        if let Some(i) = index_of(&ERROR_KINDS, kind) {
            self.upstream_errors[i].inc();
        }
    }

    pub fn outcome(&self, outcome: &str) {
        if let Some(i) = index_of(&OUTCOMES, outcome) {
            self.outcomes[i].inc();
        }
    }

    /// Adds tokens in `TOKEN_KINDS` order.
    pub fn tokens(&self, counts: [u64; 4]) {
        for (counter, n) in self.tokens.iter().zip(counts) {
            if n > 0 {
                counter.inc_by(n);
            }
        }
    }

    /// The open-connections gauge for a protocol (`h2` or `http1.1`).
    pub fn connections(&self, protocol: &str) -> Gauge {
        let i = index_of(&PROTOCOLS, protocol).unwrap_or(1);
        self.connections[i].clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_prefix_and_labels() {
        let m = Metrics::new();
        let p = m.provider("openai");
        p.request(200);
        p.request(200);
        p.request(502);
        p.rejection("upstream_unavailable");
        p.tokens([10, 5, 0, 0]);
        let text = m.encode();
        assert!(
            text.contains(r#"keyproxy_requests_total{provider="openai",status="200"} 2"#),
            "{text}"
        );
        assert!(text.contains(r#"keyproxy_requests_total{provider="openai",status="502"} 1"#));
        assert!(text.contains(
            r#"keyproxy_rejections_total{provider="openai",reason="upstream_unavailable"} 1"#
        ));
        assert!(text.contains(r#"keyproxy_tokens_total{provider="openai",kind="input"} 10"#));
        assert!(text.contains(r#"keyproxy_build_info{version=""#));
        assert!(text.ends_with("# EOF\n"));
    }
}
