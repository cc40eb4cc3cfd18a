//! Unavailability episodes of the shared store (docs/design.md §8c): the first failure after
//! a success logs `shared_state_unavailable` (WARN) once; the monitor's first round in which
//! every connection answers logs `shared_state_recovered` (INFO) with how long it lasted and
//! how many requests fell back; the `keyproxy_shared_state_up` gauge follows.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use crate::config::shared_state::OnUnavailable;
use crate::telemetry::metrics::SharedStateMetrics;

const STARTING: u8 = 0;
const UP: u8 = 1;
const DOWN: u8 = 2;

/// Up or down, and since when.
pub struct Episodes {
    state: AtomicU8,
    since: Mutex<Option<Instant>>,
    /// Requests that fell back during the current episode.
    fallbacks: AtomicU64,
    mode: OnUnavailable,
}

impl Episodes {
    pub fn new(mode: OnUnavailable) -> Episodes {
        Episodes {
            state: AtomicU8::new(STARTING),
            since: Mutex::new(None),
            fallbacks: AtomicU64::new(0),
            mode,
        }
    }

    /// True once an operation has succeeded and none has failed since.
    pub fn up(&self) -> bool {
        self.state.load(Ordering::Relaxed) == UP
    }

    /// Every connection answered the monitor in time.
    pub fn succeeded(&self, m: &SharedStateMetrics) {
        let was = self.state.swap(UP, Ordering::AcqRel);
        if was == UP {
            return;
        }
        m.up.set(1);
        if was == STARTING {
            tracing::info!(event = "shared_state_connected", store = "redis");
            return;
        }
        let down_ms = self
            .since
            .lock()
            .ok()
            .and_then(|mut s| s.take())
            .map_or(0, |t| t.elapsed().as_millis() as u64);
        tracing::info!(
            event = "shared_state_recovered",
            store = "redis",
            down_ms,
            fallbacks = self.fallbacks.swap(0, Ordering::Relaxed),
            on_unavailable = self.mode.as_str(),
        );
    }

    /// An operation failed or timed out; `why` never holds the URL or its password.
    pub fn failed(&self, op: &'static str, why: &str, m: &SharedStateMetrics) {
        let was = self.state.swap(DOWN, Ordering::AcqRel);
        if was == DOWN {
            return;
        }
        m.up.set(0);
        if let Ok(mut s) = self.since.lock() {
            *s = Some(Instant::now());
        }
        tracing::warn!(
            event = "shared_state_unavailable",
            store = "redis",
            op,
            reason = why,
            on_unavailable = self.mode.as_str(),
            "Redis cannot answer: requests get on_unavailable until it does",
        );
    }

    /// A request was decided without the store (its mode's counter, this episode's count).
    pub fn fell_back(&self, m: &SharedStateMetrics) {
        self.fallbacks.fetch_add(1, Ordering::Relaxed);
        m.fallback(self.mode.as_str());
    }
}
