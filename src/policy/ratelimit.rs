//! Per-provider rate limits over sliding windows: requests per minute (1 s buckets), requests
//! per hour (1 min buckets), request bytes per minute (1 s buckets).
//!
//! Each provider has its own small lock held for a few additions (no global lock); the clock is
//! tokio's, so tests drive window roll-over with a paused clock.

use std::sync::Mutex;

use tokio::time::Instant;

use crate::config::plan::RateLimitPlan;

const SLOTS: usize = 60;

/// Counts per time unit over the last 60 units.
#[derive(Debug)]
pub(crate) struct Ring {
    counts: [u64; SLOTS],
    stamps: [u64; SLOTS],
}

impl Ring {
    pub(crate) fn new() -> Ring {
        Ring {
            counts: [0; SLOTS],
            stamps: [u64::MAX; SLOTS],
        }
    }

    fn live(&self, i: usize, now: u64) -> bool {
        self.stamps[i] != u64::MAX && now.saturating_sub(self.stamps[i]) < SLOTS as u64
    }

    pub(crate) fn sum(&self, now: u64) -> u64 {
        (0..SLOTS)
            .filter(|i| self.live(*i, now))
            .map(|i| self.counts[i])
            .sum()
    }

    pub(crate) fn add(&mut self, now: u64, n: u64) {
        let i = (now % SLOTS as u64) as usize;
        if self.stamps[i] != now {
            self.stamps[i] = now;
            self.counts[i] = 0;
        }
        self.counts[i] += n;
    }

    /// Units until enough counts leave the window for `need` more to fit under `limit`.
    pub(crate) fn wait_for(&self, now: u64, limit: u64, need: u64) -> u64 {
        let mut live: Vec<(u64, u64)> = (0..SLOTS)
            .filter(|i| self.live(*i, now) && self.counts[*i] > 0)
            .map(|i| (self.stamps[i], self.counts[i]))
            .collect();
        live.sort_unstable();
        let mut total: u64 = live.iter().map(|(_, c)| c).sum();
        for (stamp, count) in live {
            total -= count;
            if total + need <= limit {
                return stamp + SLOTS as u64 - now;
            }
        }
        SLOTS as u64
    }
}

#[derive(Debug)]
struct Windows {
    per_second: Ring,
    per_minute: Ring,
    bytes: Ring,
}

/// A request over a limit: what to tell the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limited {
    /// Which limit: `requests_per_minute`, `requests_per_hour` or `bytes_per_minute`.
    pub which: &'static str,
    pub limit: u64,
    /// Seconds until the request would fit.
    pub retry_after: u64,
}

/// One provider's limiter.
#[derive(Debug)]
pub struct RateLimiter {
    pub plan: RateLimitPlan,
    start: Instant,
    windows: Mutex<Windows>,
}

/// Current use, for `/health`.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct WindowUsage {
    pub requests_last_minute: u64,
    pub requests_last_hour: u64,
    pub bytes_last_minute: u64,
}

impl RateLimiter {
    pub fn new(plan: RateLimitPlan) -> RateLimiter {
        RateLimiter {
            plan,
            start: Instant::now(),
            windows: Mutex::new(Windows {
                per_second: Ring::new(),
                per_minute: Ring::new(),
                bytes: Ring::new(),
            }),
        }
    }

    /// Admits one request of `bytes` (its declared length) and counts it, or says why not.
    /// A poisoned lock fails open: limits protect a budget, they must not take the proxy down.
    pub fn check(&self, bytes: u64) -> Result<(), Limited> {
        let secs = self.start.elapsed().as_secs();
        let mins = secs / 60;
        let Ok(mut w) = self.windows.lock() else {
            return Ok(());
        };
        if let Some(limit) = self.plan.requests_per_minute {
            if w.per_second.sum(secs) + 1 > limit {
                let retry_after = w.per_second.wait_for(secs, limit, 1);
                return Err(Limited {
                    which: "requests_per_minute",
                    limit,
                    retry_after,
                });
            }
        }
        if let Some(limit) = self.plan.requests_per_hour {
            if w.per_minute.sum(mins) + 1 > limit {
                let wait_minutes = w.per_minute.wait_for(mins, limit, 1);
                let retry_after = (mins + wait_minutes) * 60 - secs;
                return Err(Limited {
                    which: "requests_per_hour",
                    limit,
                    retry_after,
                });
            }
        }
        if let Some(limit) = self.plan.bytes_per_minute {
            if bytes > 0 && w.bytes.sum(secs) + bytes > limit {
                let retry_after = if bytes > limit {
                    60
                } else {
                    w.bytes.wait_for(secs, limit, bytes)
                };
                return Err(Limited {
                    which: "bytes_per_minute",
                    limit,
                    retry_after,
                });
            }
        }
        w.per_second.add(secs, 1);
        w.per_minute.add(mins, 1);
        if bytes > 0 {
            w.bytes.add(secs, bytes);
        }
        Ok(())
    }

    /// Counts a request another authority admitted (the shared store, docs/design.md §8c), so
    /// this replica's windows hold its own traffic when it has to decide alone.
    pub fn record(&self, bytes: u64) {
        let secs = self.start.elapsed().as_secs();
        if let Ok(mut w) = self.windows.lock() {
            w.per_second.add(secs, 1);
            w.per_minute.add(secs / 60, 1);
            if bytes > 0 {
                w.bytes.add(secs, bytes);
            }
        }
    }

    pub fn usage(&self) -> WindowUsage {
        let secs = self.start.elapsed().as_secs();
        match self.windows.lock() {
            Ok(w) => WindowUsage {
                requests_last_minute: w.per_second.sum(secs),
                requests_last_hour: w.per_minute.sum(secs / 60),
                bytes_last_minute: w.bytes.sum(secs),
            },
            Err(_) => WindowUsage {
                requests_last_minute: 0,
                requests_last_hour: 0,
                bytes_last_minute: 0,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn limiter(rpm: Option<u64>, rph: Option<u64>, bpm: Option<u64>) -> RateLimiter {
        RateLimiter::new(RateLimitPlan {
            requests_per_minute: rpm,
            requests_per_hour: rph,
            bytes_per_minute: bpm,
        })
    }

    #[tokio::test(start_paused = true)]
    async fn per_minute_edges_and_rollover() {
        let l = limiter(Some(3), None, None);
        for _ in 0..3 {
            assert!(l.check(0).is_ok());
        }
        let refused = l.check(0).unwrap_err();
        assert_eq!(
            (refused.which, refused.limit, refused.retry_after),
            ("requests_per_minute", 3, 60)
        );
        tokio::time::advance(Duration::from_secs(59)).await;
        assert_eq!(l.check(0).unwrap_err().retry_after, 1);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(l.check(0).is_ok(), "window rolled over");
        assert!(l.check(0).is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn sliding_not_fixed_window() {
        let l = limiter(Some(2), None, None);
        assert!(l.check(0).is_ok());
        tokio::time::advance(Duration::from_secs(30)).await;
        assert!(l.check(0).is_ok());
        assert_eq!(l.check(0).unwrap_err().retry_after, 30);
        tokio::time::advance(Duration::from_secs(30)).await;
        assert!(l.check(0).is_ok(), "the first request left the window");
        assert!(l.check(0).is_err(), "the second is still in it");
    }

    #[tokio::test(start_paused = true)]
    async fn per_hour() {
        let l = limiter(None, Some(2), None);
        assert!(l.check(0).is_ok());
        tokio::time::advance(Duration::from_secs(600)).await;
        assert!(l.check(0).is_ok());
        let e = l.check(0).unwrap_err();
        assert_eq!((e.which, e.retry_after), ("requests_per_hour", 3000));
        tokio::time::advance(Duration::from_secs(3000)).await;
        assert!(l.check(0).is_ok());
        assert_eq!(l.usage().requests_last_hour, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn bytes_per_minute_exact_limit_allowed() {
        let l = limiter(None, None, Some(1000));
        assert!(l.check(600).is_ok());
        assert!(l.check(400).is_ok(), "exactly at the limit is allowed");
        assert_eq!(l.check(1).unwrap_err().which, "bytes_per_minute");
        assert!(l.check(0).is_ok(), "zero-byte requests are fine");
        assert_eq!(l.check(1001).unwrap_err().retry_after, 60);
        tokio::time::advance(Duration::from_secs(60)).await;
        assert!(l.check(1000).is_ok());
    }
}
