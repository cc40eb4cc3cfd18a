//! Step 4c: rate limits and token budgets. Without `shared_state` this process's own
//! (`policy/`); with it, one admission in Redis covering every limit that applies
//! (`shared/`, docs/design.md §8c), and `on_unavailable` when Redis cannot answer in time.

use crate::config::shared_state::OnUnavailable;
use crate::policy::budget::{BudgetPlan, Exhausted};
use crate::policy::ratelimit::Limited;
use crate::proxy::error::ProxyError;
use crate::proxy::Route;
use crate::shared::{Check, Decision, Store, COUNTER, MINUTE, SECOND};

/// What a shared check stands for, to answer a refusal exactly as the local one would.
enum Limit {
    Rate(&'static str),
    Budget { scope: String, which: &'static str },
}

/// Admits the request or says which limit refuses it.
pub(super) async fn check(
    route: &Route,
    declared: u64,
    caller: Option<usize>,
) -> Result<(), ProxyError> {
    let Some(store) = &route.shared else {
        return local(route, declared, caller);
    };
    let (checks, limits) = shared_checks(route, store, declared, caller);
    match store.admit(&checks).await {
        Decision::Admitted => {
            // This replica's own windows count its traffic too: `local` starts from them.
            if let Some(limiter) = &route.limiter {
                limiter.record(declared);
            }
            Ok(())
        }
        Decision::Refused { index, retry_after } => {
            let limit = checks.get(index).map_or(0, |c| c.limit);
            Err(match limits.into_iter().nth(index) {
                Some(Limit::Budget { scope, which }) => ProxyError::BudgetExhausted {
                    scope,
                    spent: Exhausted {
                        which,
                        limit,
                        retry_after,
                    },
                },
                Some(Limit::Rate(which)) => ProxyError::RateLimited(Limited {
                    which,
                    limit,
                    retry_after: retry_after.unwrap_or(60),
                }),
                None => ProxyError::SharedStateUnavailable(store.timeout),
            })
        }
        Decision::Unavailable => match store.on_unavailable {
            OnUnavailable::Deny => Err(ProxyError::SharedStateUnavailable(store.timeout)),
            OnUnavailable::Allow => Ok(()),
            OnUnavailable::Local => local(route, declared, caller),
        },
    }
}

/// This process's own limits and budgets (also `on_unavailable: local`).
fn local(route: &Route, declared: u64, caller: Option<usize>) -> Result<(), ProxyError> {
    if let Some(limiter) = &route.limiter {
        limiter.check(declared).map_err(ProxyError::RateLimited)?;
    }
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

/// Every limit of this request in the local order: rate limits (per minute, per hour, bytes;
/// counted when all pass), then the provider's budget and the caller's (total, hour, minute;
/// read only: usage is charged at completion).
fn shared_checks(
    route: &Route,
    store: &Store,
    declared: u64,
    caller: Option<usize>,
) -> (Vec<Check>, Vec<Limit>) {
    let (mut checks, mut limits) = (Vec::new(), Vec::new());
    let name = &route.provider.name;
    if let Some(rl) = &route.provider.rate_limit {
        let windows = [
            ("requests_per_minute", rl.requests_per_minute, SECOND, 1),
            ("requests_per_hour", rl.requests_per_hour, MINUTE, 1),
            (
                "bytes_per_minute",
                rl.bytes_per_minute.filter(|_| declared > 0),
                SECOND,
                declared,
            ),
        ];
        for (which, limit, unit, need) in windows {
            if let Some(limit) = limit {
                checks.push(Check {
                    key: store.key(&format!("rate:{name}:{which}")),
                    unit,
                    limit,
                    need,
                    incr: need,
                });
                limits.push(Limit::Rate(which));
            }
        }
    }
    let mut budget = |scope: &str, owner: &str, plan: &BudgetPlan| {
        let [minute, hour, total] = store.budget_keys(scope, owner);
        let windows = [
            ("tokens_total", plan.tokens_total, COUNTER, total),
            ("tokens_per_hour", plan.tokens_per_hour, MINUTE, hour),
            ("tokens_per_minute", plan.tokens_per_minute, SECOND, minute),
        ];
        for (which, limit, unit, key) in windows {
            if let Some(limit) = limit {
                checks.push(Check {
                    key,
                    unit,
                    limit,
                    need: 1,
                    incr: 0,
                });
                limits.push(Limit::Budget {
                    scope: format!("{scope} {owner}"),
                    which,
                });
            }
        }
    };
    if let Some(b) = &route.budget {
        budget("provider", name, &b.plan);
    }
    if let Some(c) = caller.and_then(|i| route.callers.get(i)) {
        if let Some(b) = &c.budget {
            budget("caller", &c.name, &b.plan);
        }
    }
    (checks, limits)
}

/// The budget keys a completed request's tokens are charged to (provider, then caller).
pub(super) fn charge_keys(route: &Route, store: &Store, caller: Option<usize>) -> Vec<String> {
    let mut keys = Vec::new();
    if route.budget.is_some() {
        keys.extend(store.budget_keys("provider", &route.provider.name));
    }
    if let Some(c) = caller.and_then(|i| route.callers.get(i)) {
        if c.budget.is_some() {
            keys.extend(store.budget_keys("caller", &c.name));
        }
    }
    keys
}
