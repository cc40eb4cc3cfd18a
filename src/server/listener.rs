//! Listeners: bind every socket up front, then accept loops that serve each connection with
//! hyper (HTTP/1.1 and h2c) until the drain signal, when connections finish gracefully.
//!
//! Each listener enforces its connection limits (docs/security.md): `limits:` for provider
//! listeners, `admin:` for the admin listener. A cap on open connections (`admission.rs`:
//! provider listeners answer one more `503 overloaded`, the admin listener closes its oldest
//! idle connection to make room; a WebSocket tunnel keeps its connection's place), hyper's head
//! limits, an idle timer per connection fed by a count of requests in flight, and a stall
//! watch that cuts a connection whose client stops accepting response bytes.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::time::Instant;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::Service;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{mpsc, watch};

use crate::config::plan::Limits;
use crate::proxy::body::{BoxError, ProxyBody};
use crate::server::admission::{Admission, Load, Refusals, Seat};

/// A socket could not be bound; names the listener.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr} for {what}: {source}")]
pub struct BindError {
    pub addr: SocketAddr,
    pub what: String,
    pub source: std::io::Error,
}

/// Binds one listener.
pub async fn bind(addr: SocketAddr, what: &str) -> Result<TcpListener, BindError> {
    TcpListener::bind(addr).await.map_err(|source| BindError {
        addr,
        what: what.to_owned(),
        source,
    })
}

/// The admin listener's accept backlog (the kernel caps it at `net.core.somaxconn`); the
/// default 128 overflows under a burst of connections, and a dropped handshake costs the probe
/// caught in it a 1 s retransmit.
pub const ADMIN_BACKLOG: u32 = 4096;

/// Binds one listener with an accept queue of `backlog` connections.
pub async fn bind_with_backlog(
    addr: SocketAddr,
    what: &str,
    backlog: u32,
) -> Result<TcpListener, BindError> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    };
    socket
        .and_then(|s| {
            // As `TcpListener::bind` does: a restart can bind while old connections linger.
            s.set_reuseaddr(true)?;
            s.bind(addr)?;
            s.listen(backlog)
        })
        .map_err(|source| BindError {
            addr,
            what: what.to_owned(),
            source,
        })
}

/// Tells connection tasks to drain, and learns when they all have.
pub struct Drain {
    signal: watch::Sender<bool>,
    done_tx: mpsc::Sender<()>,
    done_rx: mpsc::Receiver<()>,
}

/// What a connection task holds: the drain signal and a guard whose drop says "finished".
#[derive(Clone)]
pub struct DrainHandle {
    signal: watch::Receiver<bool>,
    _done: mpsc::Sender<()>,
}

impl Default for Drain {
    fn default() -> Self {
        let (signal, _) = watch::channel(false);
        let (done_tx, done_rx) = mpsc::channel(1);
        Drain {
            signal,
            done_tx,
            done_rx,
        }
    }
}

impl Drain {
    pub fn handle(&self) -> DrainHandle {
        DrainHandle {
            signal: self.signal.subscribe(),
            _done: self.done_tx.clone(),
        }
    }

    /// Signals every connection to finish, and waits until they have.
    pub async fn drain(mut self) {
        let _ = self.signal.send(true);
        drop(self.done_tx);
        let _ = self.done_rx.recv().await;
    }
}

impl DrainHandle {
    async fn draining(&mut self) {
        let _ = self.signal.wait_for(|d| *d).await;
    }
}

/// An evicting (admin) accept loop lets its connection tasks run after this many accepts;
/// well under any sensible `admin.max_connections`, so a new connection is read before it
/// is the oldest, and rare enough not to slow accepts (a slow loop overflows the backlog).
const EVICTING_YIELD_EVERY: usize = 8;
/// hyper's own default header count; setting it explicitly moves the parser's slots to the heap.
const HYPER_DEFAULT_MAX_HEADERS: usize = 100;

/// What a listener serves: a request-path service whose futures can move between tasks.
pub trait ProxyService:
    Service<
        hyper::Request<Incoming>,
        Response = hyper::Response<ProxyBody>,
        Error = std::convert::Infallible,
        Future: Send + 'static,
    > + Send
    + 'static
{
}

impl<T> ProxyService for T where
    T: Service<
            hyper::Request<Incoming>,
            Response = hyper::Response<ProxyBody>,
            Error = std::convert::Infallible,
            Future: Send + 'static,
        > + Send
        + 'static
{
}

/// Accepts connections until draining starts; each connection is served until it is done
/// (after draining starts: until its in-flight requests finish).
///
/// `limits` bound every connection (docs/security.md): `header_read_timeout`, `max_header_bytes`
/// and `max_headers` (HTTP/1.1 head; h2c header list), `keep_alive_timeout` (no request in
/// flight) and `max_concurrent_streams` (h2c). `admission` caps the open connections on this
/// listener, shared by the workers accepting on it (see `admission.rs`). `name` appears in
/// the `503 overloaded` answer.
pub async fn serve<S, F>(
    listener: TcpListener,
    make_service: F,
    mut drain: DrainHandle,
    name: String,
    limits: Limits,
    admission: Admission,
) where
    F: Fn() -> S,
    S: ProxyService,
{
    let header_bytes = usize::try_from(limits.max_header_bytes).unwrap_or(usize::MAX);
    let builders = Arc::new(builders(&limits));
    let mut refusals = Refusals::default();
    let mut accepted_since_yield = 0;
    loop {
        let accepted = tokio::select! {
            biased;
            _ = drain.draining() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, _peer) = match accepted {
            Ok(a) => a,
            Err(err) => {
                // EMFILE and friends: back off briefly instead of spinning.
                tracing::warn!(event = "accept_error", error = %err);
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let load = Load::new();
        let Some(seat) = admission.admit(&load) else {
            refusals.refuse(stream, &name, admission.max());
            continue;
        };
        let _ = stream.set_nodelay(true);
        // WebSocket (docs/design.md §5.7): upgrades allowed; tunnels learn of shutdown via `Shutdown`.
        // A tunnel keeps the connection's place under `max_connections` (`seat.share()`).
        let service = crate::proxy::websocket::WithShutdown::new(
            make_service(),
            drain.signal.clone(),
            seat.share(),
        );
        let service = Tracked {
            inner: service,
            load: load.clone(),
            max_head: header_bytes,
        };
        let connection = Connection {
            stream,
            load,
            seat,
            drain: drain.clone(),
            timeouts: (limits.header_read_timeout, limits.keep_alive_timeout),
            write_timeout: limits.client_write_timeout,
            opened: Instant::now(),
        };
        tokio::spawn(connection.serve(service, builders.clone()));
        accepted_since_yield += 1;
        if admission.evicts() && accepted_since_yield >= EVICTING_YIELD_EVERY {
            // Let new connections read their heads before more accepts: a connection that is
            // still idle when `max_connections` newer ones arrived would be evicted itself.
            accepted_since_yield = 0;
            tokio::task::yield_now().await;
        }
    }
}

/// The HTTP/2 connection preface (RFC 9113 3.4): how an h2c client opens.
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// How long to wait between looks when a client sent only part of the preface so far.
const SNIFF_RETRY: Duration = Duration::from_millis(5);

/// Looks at the first bytes without consuming them: `Some(true)` for the h2 preface,
/// `Some(false)` for anything else (HTTP/1.1), `None` when the client closed first. Peeking
/// instead of reading means hyper reads the socket itself from the first byte, into one
/// right-sized buffer (a replayed prefix made hyper's HTTP/1.1 read buffer grow to 16 KiB).
async fn sniff(stream: &TcpStream) -> Option<bool> {
    let mut buf = [0u8; 24];
    loop {
        let n = stream.peek(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        if buf[..n] != H2_PREFACE[..n] {
            return Some(false);
        }
        if n == H2_PREFACE.len() {
            return Some(true);
        }
        // A prefix of the preface: wait for the rest (bounded by the idle timer around us).
        tokio::time::sleep(SNIFF_RETRY).await;
    }
}

/// hyper's HTTP/1.1 and h2c connection builders, bounded by `limits`.
fn builders(limits: &Limits) -> (http1::Builder, http2::Builder<TokioExecutor>) {
    let header_bytes = usize::try_from(limits.max_header_bytes).unwrap_or(usize::MAX);
    let mut http1 = http1::Builder::new();
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        // The read buffer: a request head that does not fit is answered 431.
        .max_buf_size(header_bytes);
    if limits.max_headers != HYPER_DEFAULT_MAX_HEADERS {
        http1.max_headers(limits.max_headers);
    }
    let mut http2 = http2::Builder::new(TokioExecutor::new());
    http2
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_concurrent_streams)
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
    (http1, http2)
}

/// One accepted client connection and what bounds it.
struct Connection {
    stream: TcpStream,
    load: Arc<Load>,
    /// Its place under the listener's connection cap (given back when dropped).
    seat: Seat,
    drain: DrainHandle,
    /// `header_read_timeout` (before the first request), `keep_alive_timeout` (after).
    timeouts: (Duration, Duration),
    /// `client_write_timeout`: a client that accepts no bytes for this long is cut.
    write_timeout: Duration,
    opened: Instant,
}

impl Connection {
    /// Sniffs the protocol, then serves the connection until it ends, drains, idles out,
    /// stalls (its client accepts nothing) or is evicted.
    async fn serve<S>(
        mut self,
        service: Tracked<crate::proxy::websocket::WithShutdown<S>>,
        builders: Arc<(http1::Builder, http2::Builder<TokioExecutor>)>,
    ) where
        S: ProxyService,
    {
        let (first, next) = self.timeouts;
        let opened = self.opened;
        // Which protocol: HTTP/1.1 unless the client opens with the h2 preface (h2c).
        let sniffed = tokio::select! {
            p = sniff(&self.stream) => p,
            _ = self.drain.draining() => None,
            _ = idle(self.load.clone(), first, next, opened) => None,
            _ = self.seat.evicted() => None,
        };
        // Closed, nothing sent before draining / the header timeout, or evicted: the seat
        // and the drain handle go with this task.
        let Some(h2c) = sniffed else {
            return;
        };
        let (http1, http2) = &*builders;
        let io = TokioIo::new(self.stream);
        let mut conn = pin!(if h2c {
            Conn::H2 {
                conn: http2.serve_connection(io, service),
            }
        } else {
            Conn::H1 {
                conn: http1.serve_connection(io, service).with_upgrades(),
            }
        });
        let mut stall = pin!(stalled(self.load.clone(), self.write_timeout));
        tokio::select! {
            _ = conn.as_mut() => {}
            _ = self.drain.draining() => {
                conn.as_mut().graceful_shutdown();
                tokio::select! {
                    _ = conn.as_mut() => {}
                    _ = stall.as_mut() => self.load.mark_stalled(),
                }
            }
            _ = idle(self.load.clone(), first, next, opened) => {
                // No request in flight: HTTP/1.1 closes now, h2c sends GOAWAY. A peer that
                // stalls the h2 GOAWAY handshake (never acks its PING) is cut after another
                // idle period.
                conn.as_mut().graceful_shutdown();
                tokio::select! {
                    _ = conn.as_mut() => {}
                    _ = idle(self.load, first, next, Instant::now()) => {}
                    _ = self.seat.evicted() => {}
                }
            }
            // The client stopped reading: dropping the connection drops its response bodies,
            // which cancels their upstream streams and logs them `client_stalled`.
            _ = stall.as_mut() => self.load.mark_stalled(),
            // Room for a newer connection (admin listener): closed at once, mid-head too.
            _ = self.seat.evicted() => {}
        }
    }
}

pin_project_lite::pin_project! {
    /// One client connection, HTTP/1.1 (with upgrades) or h2c.
    #[project = ConnProj]
    enum Conn<H1, H2> {
        H1 { #[pin] conn: H1 },
        H2 { #[pin] conn: H2 },
    }
}

/// A hyper server connection that can be asked to finish gracefully.
trait Graceful: Future {
    fn graceful_shutdown(self: Pin<&mut Self>);
}

impl<I, B, S> Graceful for http1::UpgradeableConnection<I, S>
where
    S: hyper::service::HttpService<Incoming, ResBody = B>,
    S::Error: Into<BoxError>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    B: Body + 'static,
    B::Error: Into<BoxError>,
{
    fn graceful_shutdown(self: Pin<&mut Self>) {
        http1::UpgradeableConnection::graceful_shutdown(self);
    }
}

impl<I, B, S, E> Graceful for http2::Connection<I, S, E>
where
    S: hyper::service::HttpService<Incoming, ResBody = B>,
    S::Error: Into<BoxError>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    B: Body + 'static,
    B::Error: Into<BoxError>,
    E: hyper::rt::bounds::Http2ServerConnExec<S::Future, B>,
{
    fn graceful_shutdown(self: Pin<&mut Self>) {
        http2::Connection::graceful_shutdown(self);
    }
}

impl<H1: Graceful, H2: Graceful> Conn<H1, H2> {
    fn graceful_shutdown(self: Pin<&mut Self>) {
        match self.project() {
            ConnProj::H1 { conn } => conn.graceful_shutdown(),
            ConnProj::H2 { conn } => conn.graceful_shutdown(),
        }
    }
}

impl<H1: Graceful, H2: Graceful> Future for Conn<H1, H2> {
    /// Connection errors (a client that vanished, a protocol error) end only this connection.
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        match self.project() {
            ConnProj::H1 { conn } => conn.poll(cx).map(|_| ()),
            ConnProj::H2 { conn } => conn.poll(cx).map(|_| ()),
        }
    }
}

/// Resolves once the connection has had no request in flight for `first` (before its first
/// request: covers the protocol sniffing and h2c connections that never open a stream) or
/// `next` (after one: the keep-alive idle timeout), counted from `not_before` at the earliest.
/// It looks only when its timer fires, so a request costs it nothing: while requests are in
/// flight it looks again every period, and never sleeps longer than the shorter limit (a
/// first request can move the deadline earlier when `next` is shorter than `first`).
async fn idle(load: Arc<Load>, first: Duration, next: Duration, not_before: Instant) {
    let step = first.min(next);
    loop {
        let limit = if load.served() { next } else { first };
        if load.in_flight() > 0 {
            tokio::time::sleep(step).await;
            continue;
        }
        let now = Instant::now();
        let deadline = load.idle_since().max(not_before) + limit;
        if now >= deadline {
            return;
        }
        tokio::time::sleep_until(deadline.min(now + step)).await;
    }
}

/// Resolves once the connection's client has accepted no bytes for `limit` while a response
/// waits to be written (docs/security.md): hyper asks a response body for its next frame only
/// when the client has room (HTTP/1.1: the socket and hyper's write buffer; h2c: its flow
/// control windows), so a body whose frame hyper has not come back for is waiting on the
/// client. It looks every quarter `limit` and fires between `limit` and 1.5 `limit` into a
/// stall; frames cost it one atomic add each (`Counted`).
async fn stalled(load: Arc<Load>, limit: Duration) {
    let step = limit / 4;
    // The comeback count when bodies were first seen waiting, and when.
    let mut waiting_since: Option<(u32, Instant)> = None;
    loop {
        tokio::time::sleep(step).await;
        let (waiting, taken) = load.writes();
        waiting_since = match waiting_since {
            _ if waiting == 0 => None,
            Some((seen, since)) if seen == taken => {
                if since.elapsed() >= limit {
                    return;
                }
                Some((seen, since))
            }
            _ => Some((taken, Instant::now())),
        };
    }
}

/// Counts one request in flight until its response body is finished or dropped.
struct InFlight(Arc<Load>);

impl InFlight {
    fn new(load: &Arc<Load>) -> InFlight {
        load.start();
        InFlight(load.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.end();
    }
}

/// A connection's service, counting its requests in flight.
struct Tracked<S> {
    inner: S,
    load: Arc<Load>,
    /// `limits.max_header_bytes`: an HTTP/1.1 head over it gets 431 here when hyper's read
    /// buffer cap let it through (hyper checks its cap only between reads, so a head that
    /// arrives in one large read can pass it).
    max_head: usize,
}

/// The size of an HTTP/1.1 request head as sent: request line, `name: value` lines, blank line.
fn head_size(req: &hyper::Request<Incoming>) -> usize {
    let line = req.method().as_str().len()
        + req.uri().path_and_query().map_or(1, |p| p.as_str().len())
        + " HTTP/1.1\r\n".len()
        + 1;
    req.headers()
        .iter()
        .fold(line + 2, |n, (k, v)| n + k.as_str().len() + v.len() + 4)
}

impl<S> Service<hyper::Request<Incoming>> for Tracked<S>
where
    S: Service<hyper::Request<Incoming>, Response = hyper::Response<ProxyBody>>,
{
    type Response = hyper::Response<Counted>;
    type Error = S::Error;
    /// Boxed: hyper keeps a slot the size of this future for every connection's lifetime,
    /// and the proxy's request future is kilobytes; boxed, only requests in progress pay it.
    type Future = TrackedFuture<S::Future>;

    fn call(&self, req: hyper::Request<Incoming>) -> Self::Future {
        if req.version() < http::Version::HTTP_2 && head_size(&req) > self.max_head {
            // What hyper answers for a head over its buffer: 431, empty body, then close.
            let mut resp = hyper::Response::new(ProxyBody::Full(None));
            *resp.status_mut() = http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE;
            resp.headers_mut().insert(
                http::header::CONNECTION,
                http::HeaderValue::from_static("close"),
            );
            return TrackedFuture {
                guard: None,
                inner: None,
                early: Some(resp),
            };
        }
        TrackedFuture {
            guard: Some(InFlight::new(&self.load)),
            inner: Some(Box::pin(self.inner.call(req))),
            early: None,
        }
    }
}

pin_project_lite::pin_project! {
    /// The service's future; hands its in-flight count to the response body.
    struct TrackedFuture<F> {
        inner: Option<Pin<Box<F>>>,
        // An answer decided before calling the service.
        early: Option<hyper::Response<ProxyBody>>,
        guard: Option<InFlight>,
    }
}

impl<F, E> Future for TrackedFuture<F>
where
    F: Future<Output = Result<hyper::Response<ProxyBody>, E>>,
{
    type Output = Result<hyper::Response<Counted>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let resp = match (this.early.take(), this.inner.as_mut()) {
            (Some(resp), _) => resp,
            (None, Some(inner)) => ready!(inner.as_mut().poll(cx))?,
            (None, None) => return Poll::Pending,
        };
        *this.inner = None;
        let guard = this.guard.take();
        Poll::Ready(Ok(resp.map(|inner| Counted {
            inner,
            guard,
            waiting: false,
        })))
    }
}

/// A response body that keeps its request counted in flight until it is done, and tells the
/// connection's stall watch (`stalled`) when it waits for hyper to take a frame.
pub struct Counted {
    inner: ProxyBody,
    guard: Option<InFlight>,
    /// A frame was handed out and hyper has not asked for the next one yet.
    waiting: bool,
}

impl Body for Counted {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let Some(InFlight(load)) = &this.guard else {
            return Pin::new(&mut this.inner).poll_frame(cx);
        };
        if std::mem::take(&mut this.waiting) {
            load.frame_taken();
        }
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(_))) = &polled {
            this.waiting = true;
            load.frame_out();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        if let (true, Some(InFlight(load))) = (self.waiting, &self.guard) {
            load.frame_dropped();
            if load.is_stalled() {
                self.inner.client_stalled();
            }
        }
    }
}

/// Runs `fut` and returns its output, or `None` once `limit` passes.
pub async fn within<F: Future>(limit: std::time::Duration, fut: F) -> Option<F::Output> {
    tokio::time::timeout(limit, fut).await.ok()
}
