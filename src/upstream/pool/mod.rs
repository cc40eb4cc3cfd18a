//! The upstream pool of one provider on one worker: HTTP/2 connections hand out stream slots up
//! to the peer's current `SETTINGS_MAX_CONCURRENT_STREAMS`, HTTP/1.1 connections carry one
//! request at a time and are kept alive, a connect in progress is shared by every request
//! waiting for it, and `limits.max_upstream_connections` caps the connections of all workers.
//!
//! ```text
//! send ─▶ acquire ─┬─▶ a slot on the busiest HTTP/2 connection with room ─▶ h2::send
//!                  ├─▶ an idle HTTP/1.1 connection ─────────────────────────▶ h1::send
//!                  └─▶ neither: connect (unless the connects in progress already cover the
//!                      waiting requests, or the cap is reached), then wait; at the cap
//!                      nothing freed within `upstream_wait_timeout` ─▶ Busy (503)
//! h2::send: REFUSED_STREAM, or above GOAWAY's last stream id ─▶ sent once more, on another
//!           connection (the same one only when no other can be had under the cap);
//!           found closed before anything was written ─▶ sent elsewhere; nothing else retried
//! ```
//!
//! Everything here runs on one worker thread (`workers.rs`); the state's mutex is held only
//! for bookkeeping, never across an await, and another thread takes it only to close an idle
//! connection when its own worker is at the cap (`reclaim_elsewhere`).

mod body;
mod h1;
mod h2;
mod recv;

pub use body::UpstreamBody;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use http::{HeaderValue, Request, Response};
use tokio::sync::{oneshot, Notify};
use tokio::time::Instant;

use crate::config::plan::{Limits, ProviderPlan};
use crate::telemetry::metrics::PoolMetrics;
use crate::upstream::body::RequestBody;
use crate::upstream::{ConnectError, Connector};
use body::Replay;

/// Tries of one request: connections found closed before anything was written are skipped
/// (at most this many), and REFUSED_STREAM / GOAWAY gives one retry among them.
const MAX_ATTEMPTS: usize = 4;

/// Why the pool gave no response.
#[derive(Debug)]
pub enum SendError {
    /// Opening a connection failed (every request waiting for it gets the same error).
    Connect(Arc<ConnectError>),
    /// The cap is reached and no slot freed up within the wait bound.
    Busy { waited: Duration, cap: usize },
    /// The request was sent, or may have been, and failed before response headers.
    Failed(String),
}

/// The pool's part of `limits`.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    pub max_connections: usize,
    pub wait_timeout: Duration,
    pub idle_timeout: Duration,
    pub ping_interval: Duration,
    pub ping_timeout: Duration,
}

impl Settings {
    pub fn from_limits(l: &Limits) -> Settings {
        Settings {
            max_connections: l.max_upstream_connections,
            wait_timeout: l.upstream_wait_timeout,
            idle_timeout: l.pool_idle_timeout,
            ping_interval: l.upstream_ping_interval,
            ping_timeout: l.upstream_ping_timeout,
        }
    }
}

thread_local! {
    static WORKER: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Marks this thread as worker `index` (`server::workers`), whose pools it uses.
pub fn set_worker(index: usize) {
    WORKER.set(index);
}

/// The index of the worker running on this thread (0 outside any worker): which of a
/// provider's pools a request uses, so its connections run on its own thread.
pub fn current_worker() -> usize {
    WORKER.get()
}

/// What the pools of one provider (one per worker) share: the cap's count, and the way a
/// worker at the cap gets another worker to close an idle connection.
#[derive(Default)]
pub struct Group {
    /// Open and opening connections, all workers together.
    open: AtomicUsize,
    pools: Mutex<Vec<Weak<Inner>>>,
    /// A connection closed somewhere: requests waiting at the cap look again.
    freed: Notify,
    /// Streams per connection, learned from the last connection made by any worker (HTTP/1.1:
    /// 1; 0 until one is known).
    per_connection: AtomicUsize,
}

/// One provider's pool on one worker; cloning shares it.
#[derive(Clone)]
pub struct Pool {
    inner: Arc<Inner>,
}

struct Inner {
    connector: Connector,
    host: String,
    port: u16,
    /// `Host` of HTTP/1.1 requests (HTTP/2 sends `:authority` from the URI).
    authority: HeaderValue,
    settings: Settings,
    group: Arc<Group>,
    metrics: PoolMetrics,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    h2: Vec<h2::Entry>,
    h1_idle: Vec<h1::Idle>,
    /// Connects in progress on this worker.
    connecting: usize,
    /// Requests waiting for a slot, oldest first (some may have given up: closed senders).
    waiters: VecDeque<oneshot::Sender<Wake>>,
    next_id: u64,
}

/// What a waiting request is told.
enum Wake {
    /// Something changed: try again.
    Retry,
    /// The connect it waited for failed.
    Failed(Arc<ConnectError>),
}

enum Lease {
    H2(h2::Lease),
    H1(h1::Lease),
}

/// Holds an upstream request's place: the streams gauge, and for HTTP/2 the slot on its
/// connection, given back when dropped (the response body ended or was dropped).
pub struct Slot {
    pool: Pool,
    /// The HTTP/2 connection's entry id; `None` for HTTP/1.1.
    h2: Option<u64>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.pool.inner.metrics.streams.dec();
        if let Some(id) = self.h2 {
            self.pool.release(id);
        }
    }
}

impl Pool {
    /// An empty pool, one of `group` (the provider's pools on the other workers).
    pub fn new(
        connector: Connector,
        provider: &ProviderPlan,
        settings: Settings,
        group: Arc<Group>,
        metrics: PoolMetrics,
    ) -> Pool {
        let authority = provider
            .origin
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
            .unwrap_or_else(|| HeaderValue::from_static("localhost"));
        let inner = Arc::new(Inner {
            connector,
            host: provider
                .host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            port: provider.port,
            authority,
            settings,
            group: group.clone(),
            metrics,
            state: Mutex::default(),
        });
        lock(&group.pools).push(Arc::downgrade(&inner));
        Pool { inner }
    }

    /// Sends one request upstream; `req`'s URI is absolute (the upstream origin and path).
    pub async fn send(
        &self,
        req: Request<RequestBody>,
    ) -> Result<Response<UpstreamBody>, SendError> {
        let (mut parts, body) = req.into_parts();
        let mut body = Replay::new(body);
        let mut retried = false;
        let mut last = String::new();
        // After a refusal, the connection that refused is avoided when another can be used.
        let mut avoid = None;
        for _ in 0..MAX_ATTEMPTS {
            match self.acquire(avoid).await? {
                Lease::H2(lease) => {
                    let id = lease.id();
                    let head = h2::head(&parts);
                    match h2::send(lease, head, body).await {
                        Ok(resp) => return Ok(resp),
                        Err((failure, returned)) => {
                            body = returned;
                            match failure {
                                h2::Failure::Unsent(why) => {
                                    self.retire(id);
                                    last = why;
                                }
                                h2::Failure::Refused(reason, why) if !retried && body.rewind() => {
                                    if reason == "goaway" {
                                        self.retire(id);
                                    }
                                    tracing::debug!(
                                        event = "upstream_retry",
                                        reason,
                                        error = why.as_str()
                                    );
                                    self.inner.metrics.retry(reason);
                                    retried = true;
                                    avoid = Some(id);
                                    last = why;
                                }
                                h2::Failure::Refused(_, why) | h2::Failure::Failed(why) => {
                                    return Err(SendError::Failed(why))
                                }
                            }
                        }
                    }
                }
                Lease::H1(lease) => {
                    body.keep_nothing();
                    let req = h1::prepare(parts, body, &self.inner.authority);
                    match h1::send(self, lease, req).await {
                        Ok(resp) => return Ok(resp),
                        Err(h1::Failure::Unsent(req, why)) => {
                            (parts, body) = h1::unprepare(*req);
                            last = why;
                        }
                        Err(h1::Failure::Failed(why)) => return Err(SendError::Failed(why)),
                    }
                }
            }
        }
        Err(SendError::Failed(last))
    }

    /// A slot on a connection: at once when one has room, else after waiting for a connect
    /// or a slot to free up.
    async fn acquire(&self, avoid: Option<u64>) -> Result<Lease, SendError> {
        let start = Instant::now();
        let mut busy_since: Option<Instant> = None;
        loop {
            let freed = self.inner.group.freed.notified();
            let mut freed = std::pin::pin!(freed);
            freed.as_mut().enable();
            let wait = match self.try_lease(avoid) {
                Ok(lease) => {
                    let waited = start.elapsed().as_secs_f64();
                    self.inner.metrics.slot_wait.observe(waited);
                    return Ok(lease);
                }
                Err(wait) => wait,
            };
            // A connect in progress ends (connected or failed) within `connect_timeout`, and
            // wakes every waiter: wait for it. Otherwise every connection the cap allows is
            // open and full, or open on another worker: ask another worker to close an idle
            // one, and wait for a slot or a freed place, up to the bound.
            let woken = if wait.connecting {
                busy_since = None;
                wait.rx.await.ok()
            } else {
                let since = *busy_since.get_or_insert_with(Instant::now);
                if wait.at_cap {
                    self.reclaim_elsewhere();
                }
                let deadline = since + self.inner.settings.wait_timeout;
                tokio::select! {
                    woken = wait.rx => woken.ok(),
                    () = freed => Some(Wake::Retry),
                    () = tokio::time::sleep_until(deadline) => match self.try_lease(avoid) {
                        Ok(lease) => return Ok(lease),
                        Err(again) if again.connecting => again.rx.await.ok(),
                        Err(_) => {
                            return Err(SendError::Busy {
                                waited: since.elapsed(),
                                cap: self.inner.settings.max_connections,
                            })
                        }
                    },
                }
            };
            if let Some(Wake::Failed(err)) = woken {
                return Err(SendError::Connect(err));
            }
        }
    }

    /// At the cap with nothing to use here: closes one idle connection of another worker
    /// (its place under the cap comes free when it has closed, announced by `freed`).
    fn reclaim_elsewhere(&self) {
        let others: Vec<Arc<Inner>> = lock(&self.inner.group.pools)
            .iter()
            .filter_map(Weak::upgrade)
            .filter(|p| !Arc::ptr_eq(p, &self.inner))
            .collect();
        for other in others {
            let mut st = lock(&other.state);
            if let Some(i) = st.h2.iter().position(|e| e.in_flight == 0 && !e.going_away) {
                // Its last handle gone, the connection closes once its driver notices.
                let entry = st.h2.swap_remove(i);
                drop(st);
                drop(entry);
                return;
            }
            if let Some(idle) = st.h1_idle.pop() {
                drop(st);
                drop(idle);
                return;
            }
        }
    }

    /// Takes a slot, or queues a waiter (and starts a connect when the ones in progress will
    /// not cover the waiting requests and the cap allows).
    /// `avoid`: a connection to use only when no other can be had (it refused a stream).
    fn try_lease(&self, avoid: Option<u64>) -> Result<Lease, Wait> {
        let mut st = self.lock();
        if let Some(lease) = self.take_h2_slot(&mut st, avoid) {
            return Ok(Lease::H2(lease));
        }
        while let Some(idle) = st.h1_idle.pop() {
            if let Some(sender) = idle.usable(self.inner.settings.idle_timeout) {
                self.inner.metrics.streams.inc();
                let slot = Slot {
                    pool: self.clone(),
                    h2: None,
                };
                return Ok(Lease::H1(h1::Lease { sender, slot }));
            }
        }
        while st.waiters.front().is_some_and(|w| w.is_closed()) {
            st.waiters.pop_front();
        }
        // How many waiting requests the connects in progress will serve. Until one connection
        // of this upstream has told its stream limit, a connect in progress is taken to serve
        // them all: a cold burst waits for the first connection, then opens what the limit
        // asks for (about ceil(N / limit) connections, not one per guess).
        let covered = match self.inner.group.per_connection.load(Ordering::Relaxed) {
            0 if st.connecting > 0 => usize::MAX,
            per => st.connecting.saturating_mul(per),
        };
        let mut at_cap = false;
        if st.waiters.len() >= covered {
            if self.reserve() {
                st.connecting += 1;
                tokio::spawn(self.clone().connect());
            } else {
                at_cap = true;
            }
        }
        if at_cap && avoid.is_some() {
            if let Some(lease) = self.take_h2_slot(&mut st, None) {
                return Ok(Lease::H2(lease));
            }
        }
        let (tx, rx) = oneshot::channel();
        st.waiters.push_back(tx);
        Err(Wait {
            rx,
            connecting: st.connecting > 0,
            at_cap,
        })
    }

    /// The busiest HTTP/2 connection that still has room (so idle ones can close).
    fn take_h2_slot(&self, st: &mut State, avoid: Option<u64>) -> Option<h2::Lease> {
        let mut best: Option<(usize, usize)> = None;
        for (i, e) in st.h2.iter().enumerate() {
            if e.going_away
                || Some(e.id) == avoid
                || e.in_flight >= e.send.current_max_send_streams()
            {
                continue;
            }
            if best.is_none_or(|(_, load)| e.in_flight > load) {
                best = Some((i, e.in_flight));
            }
        }
        let entry = &mut st.h2[best?.0];
        entry.in_flight += 1;
        self.inner.metrics.streams.inc();
        Some(h2::Lease {
            send: entry.send.clone(),
            slot: Slot {
                pool: self.clone(),
                h2: Some(entry.id),
            },
        })
    }

    /// Counts one more connection against the cap, if there is room.
    fn reserve(&self) -> bool {
        let max = self.inner.settings.max_connections;
        self.inner
            .group
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok()
    }

    fn unreserve(&self) {
        self.inner.group.open.fetch_sub(1, Ordering::AcqRel);
        self.inner.group.freed.notify_waiters();
    }

    /// Opens one connection and serves it until it closes (spawned: a connect outlives the
    /// request that started it, since others wait for it too).
    async fn connect(self) {
        let inner = &self.inner;
        match inner.connector.connect(&inner.host, inner.port).await {
            Err(err) => self.connect_failed(err),
            Ok(tls) if tls.h2 => h2::run(self, tls).await,
            Ok(tls) => h1::run(self, tls).await,
        }
    }

    fn connect_failed(&self, err: ConnectError) {
        self.inner.metrics.connect(err.kind());
        tracing::debug!(event = "upstream_connect_failed", host = self.inner.host.as_str(), error = %err);
        self.unreserve();
        let err = Arc::new(err);
        let mut st = self.lock();
        st.connecting = st.connecting.saturating_sub(1);
        for w in st.waiters.drain(..) {
            let _ = w.send(Wake::Failed(err.clone()));
        }
    }

    /// A new connection is ready: every waiter looks again (those it cannot serve may start
    /// connects of their own now that the per-connection capacity is known).
    fn connected(&self, st: &mut State, per_connection: usize) {
        self.inner.metrics.connect("ok");
        st.connecting = st.connecting.saturating_sub(1);
        let per_connection = per_connection.max(1);
        self.inner
            .group
            .per_connection
            .store(per_connection, Ordering::Relaxed);
        wake_all(st);
    }

    /// A connection closed: its place under the cap is free again.
    fn closed(&self) {
        self.unreserve();
        wake_all(&mut self.lock());
    }

    /// The HTTP/2 slot `id` is free again.
    fn release(&self, id: u64) {
        let mut st = self.lock();
        if let Some(e) = st.h2.iter_mut().find(|e| e.id == id) {
            e.in_flight = e.in_flight.saturating_sub(1);
            if e.in_flight == 0 {
                e.idle_since = Instant::now();
            }
        }
        let woke = wake_one(&mut st);
        drop(st);
        if !woke {
            self.offer_elsewhere();
        }
    }

    /// A slot came free and no request of this worker wanted it. At the cap, a request of
    /// another worker may be waiting for a place this worker holds: wake it, so that it
    /// reclaims an idle connection (`reclaim_elsewhere`) instead of waiting out the bound.
    /// Below the cap nobody can be waiting for a place: one atomic load.
    pub(super) fn offer_elsewhere(&self) {
        let max = self.inner.settings.max_connections;
        if self.inner.group.open.load(Ordering::Acquire) >= max {
            self.inner.group.freed.notify_waiters();
        }
    }

    /// No new streams on connection `id` (GOAWAY received, or found closed).
    fn retire(&self, id: u64) {
        if let Some(e) = self.lock().h2.iter_mut().find(|e| e.id == id) {
            e.going_away = true;
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.inner.state)
    }
}

/// A panic while holding one of the pool's locks leaves only counters behind: keep going.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A request that found no slot: its wake-up, and what it is waiting for.
struct Wait {
    rx: oneshot::Receiver<Wake>,
    /// A connect is in progress on this worker.
    connecting: bool,
    /// A connect was wanted, but the cap is reached.
    at_cap: bool,
}

/// Wakes the first live waiter; false when there was none.
fn wake_one(st: &mut State) -> bool {
    while let Some(w) = st.waiters.pop_front() {
        if w.send(Wake::Retry).is_ok() {
            return true;
        }
    }
    false
}

fn wake_all(st: &mut State) {
    for w in st.waiters.drain(..) {
        let _ = w.send(Wake::Retry);
    }
}
