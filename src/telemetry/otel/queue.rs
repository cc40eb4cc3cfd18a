//! The bounded span queue between the request threads and the export thread. A push never
//! waits, and wakes the exporter only when a batch is full, never per span: a wake-up per
//! request (what a channel's `recv` costs) was most of tracing's CPU (docs/benchmarks.md
//! "Tracing").

use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use opentelemetry_sdk::trace::SpanData;

pub(super) struct Queue {
    state: Mutex<State>,
    ready: Condvar,
    capacity: usize,
    batch: usize,
}

struct State {
    spans: Vec<SpanData>,
    closed: bool,
}

impl Queue {
    pub(super) fn new(capacity: usize, batch: usize) -> Queue {
        Queue {
            state: Mutex::new(State {
                spans: Vec::new(),
                closed: false,
            }),
            ready: Condvar::new(),
            capacity,
            batch: batch.clamp(1, capacity.max(1)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves only a list of spans behind: keep using it.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues a span; `false` when the queue is full (the span is dropped).
    pub(super) fn push(&self, span: SpanData) -> bool {
        let mut s = self.lock();
        if s.spans.len() >= self.capacity || s.closed {
            return false;
        }
        s.spans.push(span);
        if s.spans.len() == self.batch {
            self.ready.notify_one();
        }
        true
    }

    /// No more spans will come: the exporter sends what is left and stops.
    pub(super) fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_one();
    }

    /// Waits until a batch is full, `delay` has passed or the queue is closed; takes at most a
    /// batch. The flag says the queue is closed and now empty.
    pub(super) fn take(&self, delay: Duration) -> (Vec<SpanData>, bool) {
        let deadline = Instant::now() + delay;
        let mut s = self.lock();
        while s.spans.len() < self.batch && !s.closed {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            s = self
                .ready
                .wait_timeout(s, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        let n = s.spans.len().min(self.batch);
        let batch: Vec<SpanData> = s.spans.drain(..n).collect();
        (batch, s.closed && s.spans.is_empty())
    }
}
