//! `Route`: what the request path needs for one provider listener, made once at start from
//! the provider's plan and the parts every route shares (`Common`).

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use rustls::ClientConfig;

use crate::config::plan::{Limits, ProviderPlan};
use crate::policy::access::Caller;
use crate::policy::budget::TokenBudget;
use crate::policy::ratelimit::RateLimiter;
use crate::policy::reload::{KeySlot, Keyed};
use crate::shared::Store;
use crate::telemetry::metrics::{Metrics, ProviderMetrics};
use crate::telemetry::otel::Tracer;
use crate::telemetry::usage_file::UsageLog;
use crate::upstream::pool::{self, Pool};
use crate::upstream::{self as upstream_conn, Connector};

/// What every route of the process shares.
pub struct Common {
    pub tls: Arc<ClientConfig>,
    pub limits: Limits,
    /// Worker threads: each gets its own upstream pool per route.
    pub workers: usize,
    /// Read token usage from responses.
    pub token_usage: bool,
    pub usage_log: Option<UsageLog>,
    /// When not empty, every request must present one of these callers' tokens.
    pub callers: Arc<Vec<Caller>>,
    /// The one metrics registry.
    pub registry: Arc<Metrics>,
    /// Shutdown has started: new requests get `shutting_down`.
    pub draining: Arc<AtomicBool>,
    /// Rate limits and budgets shared through Redis (`shared_state`, docs/design.md §8c).
    pub shared: Option<Arc<Store>>,
    /// OTLP traces, when on (docs/design.md §8d).
    pub tracer: Option<Arc<Tracer>>,
}

/// One provider's listener: its plan, its upstream pools, its policy and its metrics.
pub struct Route {
    pub provider: ProviderPlan,
    /// One upstream pool per worker (`server::workers`), so a worker's requests use
    /// connections that run on its own thread; the first also serves outside any worker.
    pub pools: Vec<Pool>,
    pub limits: Limits,
    pub draining: Arc<AtomicBool>,
    pub registry: Arc<Metrics>,
    pub metrics: ProviderMetrics,
    pub token_usage: bool,
    pub usage_log: Option<UsageLog>,
    pub limiter: Option<RateLimiter>,
    /// The upstream host as logs show it (`[REDACTED]` when sensitive), shared by every log
    /// line of this route.
    pub(crate) upstream_host: Arc<str>,
    pub(crate) provider_name: Arc<str>,
    /// The injected credential; replaced in place by a key reload.
    pub key: Arc<KeySlot>,
    pub callers: Arc<Vec<Caller>>,
    /// This provider's token budget.
    pub budget: Option<TokenBudget>,
    /// WebSocket: dedicated HTTP/1.1-only upstream connections.
    pub websocket: Connector,
    /// With `shared_state`: the limits and budgets above are enforced in Redis, and the local
    /// ones only when it cannot answer and `on_unavailable` is `local`.
    pub shared: Option<Arc<Store>>,
    pub tracer: Option<Arc<Tracer>>,
}

impl Route {
    pub fn new(provider: ProviderPlan, common: &Common) -> Route {
        let metrics = common.registry.provider(&provider.name);
        let limits = &common.limits;
        let connector = upstream_conn::connector(common.tls.clone(), &provider, limits, &metrics);
        let settings = pool::Settings::from_limits(limits);
        let group = Arc::new(pool::Group::default());
        let pools = (0..common.workers.max(1))
            .map(|_| {
                let m = metrics.pool.clone();
                Pool::new(connector.clone(), &provider, settings, group.clone(), m)
            })
            .collect();
        Route {
            upstream_host: Arc::from(provider.shown_host()),
            provider_name: Arc::from(provider.name.as_str()),
            pools,
            limits: *limits,
            draining: common.draining.clone(),
            registry: common.registry.clone(),
            metrics,
            token_usage: common.token_usage,
            usage_log: common.usage_log.clone(),
            limiter: provider.rate_limit.map(RateLimiter::new),
            websocket: upstream_conn::websocket_connector(&common.tls, &provider, limits),
            key: Arc::new(KeySlot::new(provider.credential.clone())),
            callers: common.callers.clone(),
            tracer: common.tracer.clone(),
            budget: provider.budget.map(TokenBudget::new),
            shared: common.shared.clone(),
            provider,
        }
    }

    /// The upstream pool of the worker running this request.
    pub fn pool(&self) -> Option<&Pool> {
        self.pools
            .get(pool::current_worker())
            .or_else(|| self.pools.first())
    }

    /// This route's key as a reload sees it; `None` when a cloud source refreshes it.
    pub fn keyed(&self) -> Option<Keyed> {
        Some(Keyed {
            name: self.provider.name.clone(),
            key_ref: self.provider.key_ref.clone()?,
            slot: self.key.clone(),
        })
    }
}
