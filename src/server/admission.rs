//! Connection admission, between a listener's accept and its connection task: what happens to
//! a new connection when the listener already holds its cap.
//!
//! - Provider listeners refuse it: `limits.max_connections` slots shared by the workers; one
//!   more connection is answered `503 overloaded` and closed (the clients there retry).
//! - The admin listener evicts: beyond `admin.max_connections` the oldest idle connection (no
//!   request in flight: silent, half a head, or kept alive) is closed to make room, so a flood
//!   of idle or slow connections cannot starve `/live` and `/ready` probes from new ones. When
//!   none is idle the oldest is closed anyway: admin answers are small and immediate, so a
//!   request still in flight with the whole roster busy is one whose client does not read.
//!
//! Both count what they turn away in `keyproxy_connections_refused_total` (docs/observability.md).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// What one connection is doing, read by its idle timer and by the admin roster. Plain
/// atomics: a request changes them without waking anyone; the idle timer looks when it fires.
#[derive(Debug)]
pub struct Load {
    /// Requests whose response body has not finished (or been dropped).
    in_flight: AtomicUsize,
    /// At least one request head was received.
    served: AtomicBool,
    /// When the connection opened or last had no request in flight, in ns after `opened`.
    idle_since: AtomicU64,
    /// Response bodies whose last frame hyper has not come back for yet (low 32 bits), and a
    /// count of its comebacks (high 32 bits, wrapping): one add per frame each way.
    writes: AtomicU64,
    /// The client stopped accepting bytes (`limits.client_write_timeout`): the connection is
    /// being closed, and bodies still waiting end as `client_stalled`.
    stalled: AtomicBool,
    opened: Instant,
}

/// `Load::writes`: one comeback (high half) and one body fewer waiting (low half) in one add.
const WRITE_TAKEN: u64 = (1 << 32) - 1;

impl Load {
    pub fn new() -> Arc<Load> {
        Arc::new(Load {
            in_flight: AtomicUsize::new(0),
            served: AtomicBool::new(false),
            idle_since: AtomicU64::new(0),
            writes: AtomicU64::new(0),
            stalled: AtomicBool::new(false),
            opened: Instant::now(),
        })
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub fn served(&self) -> bool {
        self.served.load(Ordering::Relaxed)
    }

    /// Since when the connection has had nothing in flight (meaningful when `in_flight` is 0).
    pub fn idle_since(&self) -> Instant {
        self.opened + Duration::from_nanos(self.idle_since.load(Ordering::Relaxed))
    }

    /// A request head arrived.
    pub fn start(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.served.store(true, Ordering::Relaxed);
    }

    /// A response body finished or was dropped.
    pub fn end(&self) {
        let nanos = u64::try_from(self.opened.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.idle_since.store(nanos, Ordering::Relaxed);
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    /// A response body handed hyper a frame: it waits until hyper asks for the next one,
    /// which hyper does only once the client has room for more.
    pub fn frame_out(&self) {
        self.writes.fetch_add(1, Ordering::Relaxed);
    }

    /// Hyper came back for the next frame of a waiting body (the client took the last one).
    pub fn frame_taken(&self) {
        self.writes.fetch_add(WRITE_TAKEN, Ordering::Relaxed);
    }

    /// A waiting body was dropped.
    pub fn frame_dropped(&self) {
        self.writes.fetch_sub(1, Ordering::Relaxed);
    }

    /// How many bodies are waiting for hyper, and a count that moves whenever hyper comes back
    /// for one: unchanged while some wait means the client accepted nothing meanwhile.
    pub fn writes(&self) -> (u32, u32) {
        let w = self.writes.load(Ordering::Relaxed);
        ((w & u64::from(u32::MAX)) as u32, (w >> 32) as u32)
    }

    /// The client stopped accepting bytes; the connection is about to be closed.
    pub fn mark_stalled(&self) {
        self.stalled.store(true, Ordering::Relaxed);
    }

    pub fn is_stalled(&self) -> bool {
        self.stalled.load(Ordering::Relaxed)
    }
}

/// How a listener admits connections beyond its cap.
#[derive(Clone)]
pub enum Admission {
    /// A provider listener: these slots (shared by its workers) or `503 overloaded`.
    Refuse {
        slots: Arc<Semaphore>,
        max: usize,
        refused: Counter,
    },
    /// The admin listener: the oldest idle connection makes room.
    Evict(Arc<Roster>),
}

impl Admission {
    /// Refuses connections beyond `max`, counting each in `refused`.
    pub fn refuse(max: usize, refused: Counter) -> Admission {
        Admission::Refuse {
            slots: Arc::new(Semaphore::new(max)),
            max,
            refused,
        }
    }

    /// Closes the oldest idle connection beyond `max` (logged as listener `name`), counting
    /// each in `evicted`.
    pub fn evict(max: usize, name: &str, evicted: Counter) -> Admission {
        Admission::Evict(Arc::new(Roster {
            max: max.max(1),
            name: name.to_owned(),
            open: Mutex::default(),
            evicted,
        }))
    }

    /// The connection cap.
    pub fn max(&self) -> usize {
        match self {
            Admission::Refuse { max, .. } => *max,
            Admission::Evict(roster) => roster.max,
        }
    }

    /// Whether a full listener closes an old connection (rather than refusing the new one).
    pub fn evicts(&self) -> bool {
        matches!(self, Admission::Evict(_))
    }

    /// A seat for a new connection whose state is `load`, or `None`: refuse it.
    pub fn admit(&self, load: &Arc<Load>) -> Option<Seat> {
        match self {
            Admission::Refuse { slots, refused, .. } => match slots.clone().try_acquire_owned() {
                Ok(slot) => Some(Seat::Slot(Arc::new(slot))),
                Err(_) => {
                    refused.inc();
                    None
                }
            },
            Admission::Evict(roster) => Some(roster.admit(load.clone())),
        }
    }
}

/// What a connection task holds while it is open; dropping it frees the place.
pub enum Seat {
    /// Shared with a WebSocket tunnel the connection becomes (`share`): the place is freed
    /// when both are done.
    Slot(Arc<OwnedSemaphorePermit>),
    Member(Member),
}

impl Seat {
    /// A handle that keeps this connection's place taken while it lives, for a WebSocket
    /// tunnel, which outlives the HTTP connection it was upgraded from (docs/security.md).
    /// `None` on the admin listener (no tunnels there).
    pub fn share(&self) -> Option<Arc<dyn Send + Sync>> {
        match self {
            Seat::Slot(slot) => Some(slot.clone()),
            Seat::Member(_) => None,
        }
    }

    /// Resolves when the admission policy closes this connection to make room for a new one
    /// (never for a provider listener's slot).
    pub async fn evicted(&mut self) {
        if let Seat::Member(member) = self {
            if let Some(rx) = member.evicted.as_mut() {
                let result = rx.await;
                member.evicted = None;
                if result.is_ok() {
                    return;
                }
            }
        }
        std::future::pending().await
    }
}

/// The admin listener's open connections, oldest first.
pub struct Roster {
    max: usize,
    name: String,
    open: Mutex<Open>,
    evicted: Counter,
}

struct Open {
    next_id: u64,
    /// By id, which grows with accept order: the first entry is the oldest connection.
    members: BTreeMap<u64, Entry>,
    log: RefusalLog,
}

impl Default for Open {
    fn default() -> Self {
        Open {
            next_id: 0,
            members: BTreeMap::new(),
            log: RefusalLog::evicted(),
        }
    }
}

struct Entry {
    load: Arc<Load>,
    close: oneshot::Sender<()>,
}

/// One connection on the roster; dropping it takes the connection off.
pub struct Member {
    roster: Arc<Roster>,
    id: u64,
    evicted: Option<oneshot::Receiver<()>>,
}

impl Roster {
    fn lock(&self) -> MutexGuard<'_, Open> {
        // A panic elsewhere while holding the lock leaves a consistent map: carry on with it.
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Puts a new connection on the roster, closing the oldest idle one when it is full.
    fn admit(self: &Arc<Self>, load: Arc<Load>) -> Seat {
        let (close, evicted) = oneshot::channel();
        let mut open = self.lock();
        if open.members.len() >= self.max {
            if let Some(victim) = open.victim() {
                if let Some(entry) = open.members.remove(&victim) {
                    let _ = entry.close.send(());
                    self.evicted.inc();
                    open.log.note(&self.name, self.max);
                }
            }
        }
        let id = open.next_id;
        open.next_id += 1;
        open.members.insert(id, Entry { load, close });
        Seat::Member(Member {
            roster: self.clone(),
            id,
            evicted: Some(evicted),
        })
    }
}

impl Open {
    /// The oldest connection with no request in flight, else the oldest of all.
    fn victim(&self) -> Option<u64> {
        self.members
            .iter()
            .find(|(_, e)| e.load.in_flight() == 0)
            .or_else(|| self.members.iter().next())
            .map(|(id, _)| *id)
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.roster.lock().members.remove(&self.id);
    }
}

/// Longest a refused connection is kept to deliver its 503 (answer, FIN, drain what was sent).
const REFUSAL_LINGER: Duration = Duration::from_secs(2);
/// At most this many refused connections are being answered at once; beyond, they are closed.
const REFUSING_AT_ONCE: usize = 256;

/// Answers refused connections `503 overloaded`, a bounded number at a time (beyond, they
/// are closed unanswered), and logs them at most once a second.
pub struct Refusals {
    answering: Arc<Semaphore>,
    log: RefusalLog,
}

impl Default for Refusals {
    fn default() -> Self {
        Refusals {
            answering: Arc::new(Semaphore::new(REFUSING_AT_ONCE)),
            log: RefusalLog::overloaded(),
        }
    }
}

impl Refusals {
    pub fn refuse(&mut self, stream: TcpStream, name: &str, max: usize) {
        self.log.note(name, max);
        if let Ok(turn) = self.answering.clone().try_acquire_owned() {
            let answer = overloaded(name, max);
            tokio::spawn(async move {
                refuse(stream, answer).await;
                drop(turn);
            });
        }
    }
}

/// Logs refused (or evicted) connections at most once a second per listener.
struct RefusalLog {
    reason: &'static str,
    why: &'static str,
    last: Option<tokio::time::Instant>,
    since: u64,
}

impl RefusalLog {
    fn overloaded() -> RefusalLog {
        RefusalLog {
            reason: "overloaded",
            why: "limits.max_connections reached: new connections get 503 overloaded",
            last: None,
            since: 0,
        }
    }

    fn evicted() -> RefusalLog {
        RefusalLog {
            reason: "evicted",
            why:
                "admin.max_connections reached: the oldest idle connection was closed to make room",
            last: None,
            since: 0,
        }
    }

    fn note(&mut self, name: &str, max: usize) {
        self.since += 1;
        let now = tokio::time::Instant::now();
        if self.last.is_some_and(|t| now - t < Duration::from_secs(1)) {
            return;
        }
        tracing::warn!(
            event = "connection_refused",
            listener = name,
            reason = self.reason,
            max_connections = max,
            refused = self.since,
            "{}",
            self.why,
        );
        self.last = Some(now);
        self.since = 0;
    }
}

/// The whole answer to a connection over `limits.max_connections`: `ProxyError::Overloaded`
/// (503, type `overloaded`), then close.
fn overloaded(name: &str, max: usize) -> Vec<u8> {
    crate::proxy::error::ProxyError::Overloaded { max }.into_http1_bytes(name)
}

/// Sends `answer`, closes our side, and reads what the client sent until it closes too (so
/// that the close does not reset the answer away), all within `REFUSAL_LINGER`.
async fn refuse(mut stream: TcpStream, answer: Vec<u8>) {
    let _ = tokio::time::timeout(REFUSAL_LINGER, async {
        stream.write_all(&answer).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 4096];
        while stream.read(&mut sink).await? > 0 {}
        Ok::<_, std::io::Error>(())
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(in_flight: usize) -> Arc<Load> {
        let load = Load::new();
        for _ in 0..in_flight {
            load.start();
        }
        load
    }

    fn evicted(seat: &mut Seat) -> bool {
        let Seat::Member(m) = seat else {
            return false;
        };
        m.evicted.as_mut().is_some_and(|rx| rx.try_recv().is_ok())
    }

    #[test]
    fn full_roster_closes_the_oldest_idle_then_the_oldest() {
        let admission = Admission::evict(3, "admin", Counter::default());
        let busy = load(1);
        let idle = load(0);
        let mut a = admission.admit(&busy).unwrap();
        let mut b = admission.admit(&idle).unwrap();
        let mut c = admission.admit(&idle).unwrap();
        // Full: the oldest idle one (b) goes, the busy older one (a) stays.
        let mut d = admission.admit(&idle).unwrap();
        assert!(!evicted(&mut a) && evicted(&mut b) && !evicted(&mut c));
        drop(b);
        // c and d idle: c goes next.
        let _e = admission.admit(&busy).unwrap();
        assert!(evicted(&mut c) && !evicted(&mut d));
        drop(c);
        // Everything busy except d: d goes; then all busy: the oldest (a) goes.
        let _f = admission.admit(&busy).unwrap();
        assert!(evicted(&mut d));
        drop(d);
        let _g = admission.admit(&busy).unwrap();
        assert!(evicted(&mut a));
    }

    #[test]
    fn dropped_members_free_their_place() {
        let admission = Admission::evict(2, "admin", Counter::default());
        let idle = load(0);
        for _ in 0..10 {
            let mut a = admission.admit(&idle).unwrap();
            let mut b = admission.admit(&idle).unwrap();
            assert!(!evicted(&mut a) && !evicted(&mut b));
        }
    }

    #[test]
    fn writes_count_waiting_bodies_and_comebacks() {
        let load = Load::new();
        load.frame_out();
        load.frame_out();
        assert_eq!(load.writes(), (2, 0));
        load.frame_taken();
        assert_eq!(load.writes(), (1, 1));
        load.frame_dropped();
        assert_eq!(load.writes(), (0, 1));
        load.frame_out();
        load.frame_taken();
        assert_eq!(load.writes(), (0, 2));
    }

    #[test]
    fn a_shared_slot_holds_the_place_until_both_are_gone() {
        let admission = Admission::refuse(1, Counter::default());
        let idle = load(0);
        let seat = admission.admit(&idle).unwrap();
        let tunnel = seat.share();
        assert!(tunnel.is_some());
        drop(seat);
        assert!(admission.admit(&idle).is_none());
        drop(tunnel);
        assert!(admission.admit(&idle).is_some());
    }

    #[test]
    fn refusal_beyond_the_slots_is_counted() {
        let refused = Counter::default();
        let admission = Admission::refuse(1, refused.clone());
        let idle = load(0);
        let first = admission.admit(&idle);
        assert!(first.is_some());
        assert!(admission.admit(&idle).is_none());
        assert_eq!(refused.get(), 1);
        drop(first);
        assert!(admission.admit(&idle).is_some());
    }
}
