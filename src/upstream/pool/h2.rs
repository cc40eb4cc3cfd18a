//! HTTP/2 upstream connections on the `h2` crate: set-up (the peer's SETTINGS known before a
//! slot is handed out), the driver (PING keepalive, idle close) and one request on a slot.

use std::future::{poll_fn, Future};
use std::pin::{pin, Pin};
use std::task::Poll;

use bytes::Bytes;
use h2::client::{Connection, SendRequest};
use h2::{Ping, PingPong, Reason};
use http::request::Parts;
use http::{Request, Response, Version};
use tokio::time::Instant;

use super::body::{Pump, Replay, UpstreamBody};
use super::recv::H2Body;
use super::{Pool, Slot};
use crate::upstream::{ConnectError, TlsConn};

/// Per-stream receive window: a whole typical response in flight without waiting for the
/// proxy to hand data on (hyper's client default).
const STREAM_WINDOW: u32 = 2 * 1024 * 1024;
/// Connection receive window.
const CONNECTION_WINDOW: u32 = 5 * 1024 * 1024;

/// One HTTP/2 connection in the pool's state.
pub(super) struct Entry {
    pub id: u64,
    pub send: SendRequest<Bytes>,
    pub in_flight: usize,
    /// No new streams: GOAWAY received, or found closed.
    pub going_away: bool,
    pub idle_since: Instant,
}

/// A stream slot on one connection.
pub(super) struct Lease {
    pub send: SendRequest<Bytes>,
    pub slot: Slot,
}

impl Lease {
    pub fn id(&self) -> u64 {
        self.slot.h2.unwrap_or(u64::MAX)
    }
}

/// Why a request got no response on this connection.
pub(super) enum Failure {
    /// Nothing was written (the connection is closed or going away): safe to send elsewhere.
    Unsent(String),
    /// The peer provably did not process it (`refused_stream`, `goaway`): may be retried once.
    Refused(&'static str, String),
    /// Anything else: not retried.
    Failed(String),
}

/// The request head for one attempt (the pool keeps the original for a retry).
pub(super) fn head(parts: &Parts) -> Request<()> {
    let mut req = Request::new(());
    *req.method_mut() = parts.method.clone();
    *req.uri_mut() = parts.uri.clone();
    *req.version_mut() = Version::HTTP_2;
    *req.headers_mut() = parts.headers.clone();
    req
}

/// Sets up a connection, adds it to the pool and drives it until it closes.
pub(super) async fn run(pool: Pool, tls: TlsConn) {
    let host = pool.inner.host.clone();
    let handshake = h2::client::Builder::new()
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .enable_push(false)
        .handshake::<_, Bytes>(tls)
        .await;
    let (send, mut conn) = match handshake {
        Ok(pair) => pair,
        Err(e) => {
            return pool.connect_failed(ConnectError::Handshake {
                host,
                protocol: "HTTP/2",
                why: e.to_string(),
            })
        }
    };
    let mut pinger = conn.ping_pong();
    let mut conn = pin!(conn);
    // The peer's SETTINGS come before its answer to our first PING: once that answer is in,
    // `current_max_send_streams` is the peer's real limit, so no request queues behind a
    // limit the pool did not know.
    if let Err(why) = settle(
        conn.as_mut(),
        pinger.as_mut(),
        pool.inner.settings.ping_timeout,
    )
    .await
    {
        return pool.connect_failed(ConnectError::Handshake {
            host,
            protocol: "HTTP/2",
            why,
        });
    }
    let id = {
        let mut st = pool.lock();
        let id = st.next_id;
        st.next_id += 1;
        let limit = send.current_max_send_streams();
        st.h2.push(Entry {
            id,
            send,
            in_flight: 0,
            going_away: false,
            idle_since: Instant::now(),
        });
        pool.connected(&mut st, limit);
        id
    };
    let why = drive(&pool, id, conn, pinger).await;
    tracing::debug!(
        event = "upstream_closed",
        host = host.as_str(),
        protocol = "h2",
        why
    );
    pool.lock().h2.retain(|e| e.id != id);
    pool.closed();
}

/// Sends a PING and waits for its answer while driving the connection.
async fn settle(
    mut conn: Pin<&mut Connection<TlsConn, Bytes>>,
    pinger: Option<&mut PingPong>,
    limit: std::time::Duration,
) -> Result<(), String> {
    let Some(pinger) = pinger else {
        return Ok(());
    };
    let pong = pinger.ping(Ping::opaque());
    tokio::select! {
        r = conn.as_mut() => Err(match r {
            Ok(()) => "the connection closed during set-up".to_owned(),
            Err(e) => e.to_string(),
        }),
        r = tokio::time::timeout(limit, pong) => match r {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer to PING within {limit:?}")),
        },
    }
}

/// Drives the connection: a PING every interval (no answer in time: dropped), closed when
/// idle past `pool_idle_timeout` (checked at each interval). Returns why it ended.
async fn drive(
    pool: &Pool,
    id: u64,
    mut conn: Pin<&mut Connection<TlsConn, Bytes>>,
    mut pinger: Option<PingPong>,
) -> &'static str {
    let s = pool.inner.settings;
    loop {
        tokio::select! {
            r = conn.as_mut() => return if r.is_ok() { "closed" } else { "error" },
            _ = tokio::time::sleep(s.ping_interval) => {}
        }
        if close_if_idle(pool, id) {
            return "idle";
        }
        let Some(p) = pinger.as_mut() else { continue };
        let pong = p.ping(Ping::opaque());
        tokio::select! {
            r = conn.as_mut() => return if r.is_ok() { "closed" } else { "error" },
            r = tokio::time::timeout(s.ping_timeout, pong) => {
                if !matches!(r, Ok(Ok(_))) {
                    tracing::warn!(event = "upstream_ping_timeout", host = pool.inner.host.as_str(), timeout_ms = s.ping_timeout.as_millis() as u64);
                    return "ping_timeout";
                }
            }
        }
    }
}

/// Takes connection `id` out of the pool when it has had no stream for the idle timeout.
fn close_if_idle(pool: &Pool, id: u64) -> bool {
    let mut st = pool.lock();
    let idle = pool.inner.settings.idle_timeout;
    let Some(i) = st.h2.iter().position(|e| e.id == id) else {
        return false;
    };
    let e = &st.h2[i];
    if e.in_flight == 0 && e.idle_since.elapsed() >= idle {
        st.h2.swap_remove(i);
        return true;
    }
    false
}

/// Sends one request on a slot. The request body is written while the response is awaited;
/// if the response comes first, the rest of the body is written by a task of its own.
pub(super) async fn send(
    lease: Lease,
    head: Request<()>,
    body: Replay,
) -> Result<Response<UpstreamBody>, (Failure, Replay)> {
    let Lease { send, slot } = lease;
    let mut send = match send.ready().await {
        Ok(s) => s,
        Err(e) => return Err((Failure::Unsent(e.to_string()), body)),
    };
    let head_request = head.method() == http::Method::HEAD;
    let end = http_body::Body::is_end_stream(&body);
    let (mut response, stream) = match send.send_request(head, end) {
        Ok(pair) => pair,
        Err(e) => return Err((Failure::Unsent(e.to_string()), body)),
    };
    let mut pump = Pump::new(stream, body, end);
    let answer = poll_fn(|cx| {
        pump.poll_step(cx);
        match Pin::new(&mut response).poll(cx) {
            Poll::Ready(r) => Poll::Ready(r),
            Poll::Pending => Poll::Pending,
        }
    })
    .await;
    match answer {
        Ok(resp) => {
            pump.keep_nothing();
            if !pump.done() {
                tokio::spawn(pump.finish());
            }
            let (parts, recv) = resp.into_parts();
            let body = H2Body::new(recv, slot, head_request, &parts);
            Ok(Response::from_parts(parts, UpstreamBody::H2(body)))
        }
        Err(e) => {
            let failure = classify(&e);
            Err((failure, pump.into_body()))
        }
    }
}

/// REFUSED_STREAM from the peer, or a stream above the last id of the peer's GOAWAY, was not
/// processed (RFC 9113, 8.7): those may go elsewhere. Anything else may have been.
fn classify(e: &h2::Error) -> Failure {
    let why = e.to_string();
    if e.is_remote() && e.is_reset() && e.reason() == Some(Reason::REFUSED_STREAM) {
        Failure::Refused("refused_stream", why)
    } else if e.is_remote() && e.is_go_away() {
        Failure::Refused("goaway", why)
    } else {
        Failure::Failed(why)
    }
}
