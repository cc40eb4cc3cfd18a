//! Shared state (docs/design.md §8c): rate limits and token budgets counted in one Redis for
//! every replica using the same `key_prefix`, so N replicas enforce one limit, not N.
//!
//! One admission is one EVALSHA over every limit that applies (`redis.rs`, atomic in Redis);
//! a budget is charged at completion by one more, spawned off the request path and sent once
//! (never retried, so never double-charged; a charge that fails is counted and logged). Every
//! call is bounded by `shared_state.timeout`; without an answer the request gets
//! `on_unavailable` (`fallback.rs`). A monitor pings every second, drives the reconnects and
//! refreshes the shared view `/health` and `keyproxy_budget_spent_tokens` show.

pub mod fallback;
pub mod redis;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

use crate::config::plan::{RateLimitPlan, TlsPlan};
use crate::config::policy::BudgetPlan;
use crate::config::shared_state::{OnUnavailable, SharedStatePlan};
use crate::telemetry::metrics::{Metrics, SharedStateMetrics};
use fallback::Episodes;

/// Seconds per bucket: per-minute windows (60 buckets of 1 s), per-hour windows (60 of 1 min),
/// plain counters (a budget's `tokens_total`).
pub const SECOND: u64 = 1;
pub const MINUTE: u64 = 60;
pub const COUNTER: u64 = 0;

/// How often the monitor pings and refreshes the shared view.
const MONITOR_EVERY: Duration = Duration::from_secs(1);
/// The longest a charge (off the request path) waits for Redis.
const CHARGE_TIMEOUT: Duration = Duration::from_secs(1);

/// One limit of an admission: refused when `sum + need > limit`; adds `incr` when all pass.
#[derive(Debug, Clone)]
pub struct Check {
    pub key: String,
    pub unit: u64,
    pub limit: u64,
    pub need: u64,
    pub incr: u64,
}

/// What the store said about a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Admitted,
    /// Check `index` refused; seconds until it frees up (`None`: never, a total).
    Refused {
        index: usize,
        retry_after: Option<u64>,
    },
    /// No answer within `timeout`: apply `on_unavailable`.
    Unavailable,
}

/// A window the monitor reads for the shared view (`/health`, budget gauges).
#[derive(Debug, Clone)]
pub struct Watched {
    /// `provider` or `caller` for budgets, `rate_limit` for a provider's rate limits.
    pub scope: &'static str,
    pub name: String,
    /// `requests_per_minute`, ..., or a budget's `minute`, `hour`, `total`.
    pub window: &'static str,
    pub key: String,
    pub unit: u64,
    pub limit: Option<u64>,
}

/// The shared store of the process.
pub struct Store {
    redis: redis::Redis,
    prefix: String,
    pub timeout: Duration,
    pub on_unavailable: OnUnavailable,
    episodes: Episodes,
    metrics: SharedStateMetrics,
    registry: Arc<Metrics>,
    /// The latest shared view and when it was read.
    view: Mutex<(Value, Option<Instant>)>,
    last_rtt_us: AtomicU64,
    uncharged: AtomicU64,
}

impl Store {
    /// The store of `plan`; nothing is dialled yet (the monitor's first ping connects, each
    /// worker's first request its own connection).
    pub fn new(
        plan: &SharedStatePlan,
        tls: &TlsPlan,
        workers: usize,
        registry: &Arc<Metrics>,
    ) -> Result<Arc<Store>, String> {
        let metrics = registry.shared_state();
        Ok(Arc::new(Store {
            redis: redis::Redis::new(plan, tls, workers)?,
            prefix: plan.key_prefix.clone(),
            timeout: plan.timeout,
            on_unavailable: plan.on_unavailable,
            episodes: Episodes::new(plan.on_unavailable),
            metrics,
            registry: registry.clone(),
            view: Mutex::new((Value::Null, None)),
            last_rtt_us: AtomicU64::new(0),
            uncharged: AtomicU64::new(0),
        }))
    }

    /// `{prefix}:rest`: the braces are a hash tag, so a Redis Cluster keeps every key of a
    /// deployment in one slot and one script may touch them all.
    pub fn key(&self, rest: &str) -> String {
        format!("{{{}}}:{rest}", self.prefix)
    }

    /// The three keys of a budget (`scope` provider or caller): minute, hour, total.
    pub fn budget_keys(&self, scope: &str, name: &str) -> [String; 3] {
        ["minute", "hour", "total"].map(|w| self.key(&format!("budget:{scope}:{name}:{w}")))
    }

    /// Every window of every rate limit (`providers`: name, rate limit, budget) and budget
    /// (also `callers`'), for the shared view.
    pub fn watched<'a>(
        &self,
        providers: impl Iterator<Item = (&'a str, Option<&'a RateLimitPlan>, Option<&'a BudgetPlan>)>,
        callers: impl Iterator<Item = (&'a str, &'a BudgetPlan)>,
    ) -> Vec<Watched> {
        let mut out = Vec::new();
        let mut budget = |scope: &'static str, name: &str, plan: &BudgetPlan| {
            let [m, h, t] = self.budget_keys(scope, name);
            for (window, key, unit, limit) in [
                ("minute", m, SECOND, plan.tokens_per_minute),
                ("hour", h, MINUTE, plan.tokens_per_hour),
                ("total", t, COUNTER, plan.tokens_total),
            ] {
                let name = name.to_owned();
                out.push(Watched {
                    scope,
                    name,
                    window,
                    key,
                    unit,
                    limit,
                });
            }
        };
        let mut rates = Vec::new();
        for (name, rate, plan) in providers {
            if let Some(rl) = rate {
                for (window, unit, limit) in [
                    ("requests_per_minute", SECOND, rl.requests_per_minute),
                    ("requests_per_hour", MINUTE, rl.requests_per_hour),
                    ("bytes_per_minute", SECOND, rl.bytes_per_minute),
                ] {
                    if limit.is_some() {
                        rates.push(Watched {
                            scope: "rate_limit",
                            name: name.to_owned(),
                            window,
                            key: self.key(&format!("rate:{name}:{window}")),
                            unit,
                            limit,
                        });
                    }
                }
            }
            if let Some(plan) = plan {
                budget("provider", name, plan);
            }
        }
        for (name, plan) in callers {
            budget("caller", name, plan);
        }
        rates.extend(out);
        rates
    }

    /// True while Redis answers within `timeout`.
    pub fn up(&self) -> bool {
        self.episodes.up()
    }

    /// One round trip deciding every check at once (atomic in Redis).
    pub async fn admit(&self, checks: &[Check]) -> Decision {
        if checks.is_empty() {
            return Decision::Admitted;
        }
        let keys: Vec<String> = checks.iter().map(|c| c.key.clone()).collect();
        let args: Vec<u64> = checks
            .iter()
            .flat_map(|c| [c.unit, c.limit, c.need, c.incr])
            .collect();
        let start = Instant::now();
        let answer = self.redis.admit(&keys, &args, self.timeout, false).await;
        match answer {
            Ok(v) => {
                self.answered("admit", start);
                match (v.first().copied(), v.get(1).copied()) {
                    (Some(i), Some(retry)) if i > 0 => Decision::Refused {
                        index: (i - 1) as usize,
                        retry_after: u64::try_from(retry).ok(),
                    },
                    _ => Decision::Admitted,
                }
            }
            Err(f) => {
                self.failed("admit", &f);
                self.episodes.fell_back(&self.metrics);
                Decision::Unavailable
            }
        }
    }

    /// Charges `tokens` to the budgets of `keys` (`budget_keys`, concatenated), once, off the
    /// request path. A charge without an answer is not retried: counted and logged.
    pub fn charge(self: &Arc<Self>, keys: Vec<String>, tokens: u64, request_id: String) {
        if keys.is_empty() || tokens == 0 {
            return;
        }
        let store = self.clone();
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            self.metrics.uncharged_tokens.inc_by(tokens);
            self.uncharged.fetch_add(tokens, Ordering::Relaxed);
            return;
        };
        rt.spawn(async move {
            let start = Instant::now();
            match store.redis.charge(&keys, tokens, CHARGE_TIMEOUT).await {
                Ok(()) => store.answered("charge", start),
                Err(f) => {
                    store.failed("charge", &f);
                    store.metrics.uncharged_tokens.inc_by(tokens);
                    store.uncharged.fetch_add(tokens, Ordering::Relaxed);
                    tracing::debug!(
                        event = "shared_charge_failed",
                        request_id = request_id.as_str(),
                        tokens,
                        reason = f.message.as_str(),
                    );
                }
            }
        });
    }

    /// Only the monitor ends an episode, once every connection answers: a request answered on
    /// one worker's connection while another's is still broken would start a second one.
    fn answered(&self, op: &'static str, start: Instant) {
        self.metrics.latency(op, start.elapsed());
    }

    fn failed(&self, op: &'static str, f: &redis::Failure) {
        self.metrics.error(op, f.kind);
        self.episodes.failed(op, &f.message, &self.metrics);
    }

    /// Pings every second (connecting, reconnecting, ending episodes) and refreshes the shared
    /// view of `watched`, until `stop` turns true.
    pub async fn monitor(
        self: Arc<Self>,
        watched: Vec<Watched>,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut tick = tokio::time::interval(MONITOR_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => return,
            }
            match self.redis.ping(self.timeout).await {
                Ok(rtt) => {
                    self.metrics.latency("ping", rtt);
                    self.last_rtt_us
                        .store(rtt.as_micros() as u64, Ordering::Relaxed);
                    self.episodes.succeeded(&self.metrics);
                }
                Err(f) => {
                    self.failed("ping", &f);
                    continue;
                }
            }
            self.refresh_view(&watched).await;
        }
    }

    /// Reads every watched window (the admission script with nothing needed or added).
    async fn refresh_view(&self, watched: &[Watched]) {
        if watched.is_empty() {
            return;
        }
        let checks: Vec<Check> = watched
            .iter()
            .map(|w| Check {
                key: w.key.clone(),
                unit: w.unit,
                limit: 0,
                need: 0,
                incr: 0,
            })
            .collect();
        let keys: Vec<String> = checks.iter().map(|c| c.key.clone()).collect();
        let args: Vec<u64> = checks.iter().flat_map(|c| [c.unit, 0, 0, 0]).collect();
        let Ok(v) = self.redis.admit(&keys, &args, self.timeout, true).await else {
            return;
        };
        let mut view = Map::new();
        let mut spent: std::collections::BTreeMap<(&'static str, &str), [u64; 3]> =
            Default::default();
        for (i, w) in watched.iter().enumerate() {
            let used = v.get(2 + 2 * i).copied().unwrap_or(0).max(0) as u64;
            let reset = v.get(3 + 2 * i).copied().unwrap_or(-1);
            let entry = view
                .entry(format!("{}:{}", w.scope, w.name))
                .or_insert_with(|| Value::Object(Map::new()));
            let resets_in = u64::try_from(reset).ok();
            self.registry
                .shared_window(w.scope, &w.name, w.window, used, w.limit, resets_in);
            entry[w.window] = json!({
                "used": used,
                "limit": w.limit,
                "remaining": w.limit.map(|l| l.saturating_sub(used)),
                "resets_in_s": (reset >= 0).then_some(reset),
            });
            if w.scope != "rate_limit" {
                let slot = match w.window {
                    "minute" => 0,
                    "hour" => 1,
                    _ => 2,
                };
                spent.entry((w.scope, w.name.as_str())).or_default()[slot] = used;
            }
        }
        for ((scope, name), [m, h, t]) in spent {
            self.registry.budget_spent(
                scope,
                name,
                crate::policy::budget::Spent {
                    last_minute: m,
                    last_hour: h,
                    total: t,
                },
            );
        }
        if let Ok(mut slot) = self.view.lock() {
            *slot = (Value::Object(view), Some(Instant::now()));
        }
    }

    /// `/health`'s `shared_state`: the store's state and the latest shared view.
    pub fn health(&self) -> Value {
        let (view, at) = self
            .view
            .lock()
            .map(|v| v.clone())
            .unwrap_or((Value::Null, None));
        json!({
            "store": "redis",
            "connected": self.up(),
            "on_unavailable": self.on_unavailable.as_str(),
            "timeout_ms": self.timeout.as_millis() as u64,
            "last_ping_ms": self.last_rtt_us.load(Ordering::Relaxed) as f64 / 1000.0,
            "uncharged_tokens": self.uncharged.load(Ordering::Relaxed),
            "view_age_ms": at.map(|t| t.elapsed().as_millis() as u64),
            "view": view,
        })
    }
}
