//! Token budgets per provider and per caller: input + output tokens per minute, per hour and
//! in total for the process lifetime, charged from the usage read out of responses.
//!
//! A budget admits a request while the spend is below the limit (docs/design.md §2b); usage is charged
//! when it is known, so requests racing the last tokens may overshoot by what they use. A
//! stream in flight is never cut by a budget.

use std::sync::Mutex;

use tokio::time::Instant;

use crate::policy::ratelimit::Ring;

pub use crate::config::policy::BudgetPlan;

/// Why a budget refuses: which window, its limit, and when it frees up (never for `total`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exhausted {
    pub which: &'static str,
    pub limit: u64,
    pub retry_after: Option<u64>,
}

struct Spend {
    per_second: Ring,
    per_minute: Ring,
    total: u64,
}

/// One budget's spend.
pub struct TokenBudget {
    pub plan: BudgetPlan,
    start: Instant,
    spend: Mutex<Spend>,
}

/// Current spend, for `/health` and metrics.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Spent {
    pub last_minute: u64,
    pub last_hour: u64,
    pub total: u64,
}

impl TokenBudget {
    pub fn new(plan: BudgetPlan) -> TokenBudget {
        TokenBudget {
            plan,
            start: Instant::now(),
            spend: Mutex::new(Spend {
                per_second: Ring::new(),
                per_minute: Ring::new(),
                total: 0,
            }),
        }
    }

    /// Admits a request while every window's spend is below its limit.
    pub fn admit(&self) -> Result<(), Exhausted> {
        let secs = self.start.elapsed().as_secs();
        let mins = secs / 60;
        let Ok(s) = self.spend.lock() else {
            return Ok(());
        };
        if let Some(limit) = self.plan.tokens_total {
            if s.total >= limit {
                return Err(Exhausted {
                    which: "tokens_total",
                    limit,
                    retry_after: None,
                });
            }
        }
        if let Some(limit) = self.plan.tokens_per_hour {
            let used = s.per_minute.sum(mins);
            if used >= limit {
                let wait = s.per_minute.wait_for(mins, limit, 1);
                return Err(Exhausted {
                    which: "tokens_per_hour",
                    limit,
                    retry_after: Some((mins + wait) * 60 - secs),
                });
            }
        }
        if let Some(limit) = self.plan.tokens_per_minute {
            if s.per_second.sum(secs) >= limit {
                let wait = s.per_second.wait_for(secs, limit, 1);
                return Err(Exhausted {
                    which: "tokens_per_minute",
                    limit,
                    retry_after: Some(wait),
                });
            }
        }
        Ok(())
    }

    /// Charges tokens reported by a response.
    pub fn charge(&self, tokens: u64) {
        if tokens == 0 {
            return;
        }
        let secs = self.start.elapsed().as_secs();
        if let Ok(mut s) = self.spend.lock() {
            s.per_second.add(secs, tokens);
            s.per_minute.add(secs / 60, tokens);
            s.total = s.total.saturating_add(tokens);
        }
    }

    pub fn spent(&self) -> Spent {
        let secs = self.start.elapsed().as_secs();
        match self.spend.lock() {
            Ok(s) => Spent {
                last_minute: s.per_second.sum(secs),
                last_hour: s.per_minute.sum(secs / 60),
                total: s.total,
            },
            Err(_) => Spent {
                last_minute: 0,
                last_hour: 0,
                total: 0,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn admits_below_the_limit_and_resets_by_window() {
        let b = TokenBudget::new(BudgetPlan {
            tokens_per_minute: Some(100),
            ..Default::default()
        });
        assert!(b.admit().is_ok());
        b.charge(99);
        assert!(b.admit().is_ok(), "spend below the limit admits");
        b.charge(1);
        let e = b.admit().unwrap_err();
        assert_eq!(
            (e.which, e.limit, e.retry_after),
            ("tokens_per_minute", 100, Some(60))
        );
        tokio::time::advance(Duration::from_secs(60)).await;
        assert!(b.admit().is_ok());
        assert_eq!(b.spent().total, 100);
    }

    #[tokio::test(start_paused = true)]
    async fn hour_and_total() {
        let b = TokenBudget::new(BudgetPlan {
            tokens_per_hour: Some(50),
            tokens_total: Some(80),
            ..Default::default()
        });
        b.charge(50);
        let e = b.admit().unwrap_err();
        assert_eq!((e.which, e.retry_after), ("tokens_per_hour", Some(3600)));
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert!(b.admit().is_ok());
        b.charge(30);
        let e = b.admit().unwrap_err();
        assert_eq!((e.which, e.retry_after), ("tokens_total", None));
    }
}
