//! HTTP/1.1 upstream connections (ALPN without h2): one request at a time on hyper's
//! connection API, kept alive between requests and reused most-recent first.

use http::request::Parts;
use http::{header, HeaderValue, Request, Response, Uri};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::time::Instant;

use super::body::{Replay, UpstreamBody};
use super::{Pool, Slot};
use crate::upstream::{ConnectError, TlsConn};

/// A kept-alive connection with no request on it.
pub(super) struct Idle {
    sender: http1::SendRequest<Replay>,
    since: Instant,
}

impl Idle {
    /// The connection, unless it closed or idled past the timeout (then it is dropped, which
    /// closes it).
    pub fn usable(self, idle_timeout: std::time::Duration) -> Option<http1::SendRequest<Replay>> {
        (!self.sender.is_closed() && self.since.elapsed() < idle_timeout).then_some(self.sender)
    }
}

/// A connection taken for one request.
pub(super) struct Lease {
    pub sender: http1::SendRequest<Replay>,
    pub slot: Slot,
}

/// Gives the connection back to the pool once the response body has ended.
pub struct Recycle {
    pool: Pool,
    sender: http1::SendRequest<Replay>,
    _slot: Slot,
}

impl Recycle {
    /// The body ended: the connection takes the next request.
    pub fn now(recycle: &mut Option<Box<Recycle>>) {
        if let Some(r) = recycle.take() {
            let mut st = r.pool.lock();
            st.h1_idle.push(Idle {
                sender: r.sender,
                since: Instant::now(),
            });
            let woke = super::wake_one(&mut st);
            drop(st);
            if !woke {
                r.pool.offer_elsewhere();
            }
        }
    }
}

pub(super) enum Failure {
    /// The connection closed before the request was written: here it is back.
    Unsent(Box<Request<Replay>>, String),
    Failed(String),
}

/// Sets up a connection, offers it to the pool and serves it until it closes.
pub(super) async fn run(pool: Pool, tls: TlsConn) {
    let (sender, conn) = match http1::handshake(TokioIo::new(tls)).await {
        Ok(pair) => pair,
        Err(e) => {
            return pool.connect_failed(ConnectError::Handshake {
                host: pool.inner.host.clone(),
                protocol: "HTTP/1.1",
                why: e.to_string(),
            })
        }
    };
    {
        let mut st = pool.lock();
        st.h1_idle.push(Idle {
            sender,
            since: Instant::now(),
        });
        pool.connected(&mut st, 1);
    }
    // Ends when the server closes it, or when the pool drops its sender while it is idle.
    let _ = conn.await;
    pool.closed();
}

/// HTTP/1.1 wants an origin-form target and a `Host` header.
pub(super) fn prepare(mut parts: Parts, body: Replay, authority: &HeaderValue) -> Request<Replay> {
    if let Some(pq) = parts.uri.path_and_query().cloned() {
        parts.uri = Uri::from(pq);
    }
    parts.headers.insert(header::HOST, authority.clone());
    parts.version = http::Version::HTTP_11;
    Request::from_parts(parts, body)
}

/// Undoes `prepare` for a request that must go elsewhere; the absolute URI comes back from
/// the `Host` header (the upstream's own authority).
pub(super) fn unprepare(req: Request<Replay>) -> (Parts, Replay) {
    let (mut parts, body) = req.into_parts();
    if let Some(host) = parts.headers.remove(header::HOST) {
        let pq = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        if let Ok(uri) = format!("https://{}{pq}", host.to_str().unwrap_or_default()).parse() {
            parts.uri = uri;
        }
    }
    (parts, body)
}

/// Sends one request on a kept-alive connection.
pub(super) async fn send(
    pool: &Pool,
    lease: Lease,
    req: Request<Replay>,
) -> Result<Response<UpstreamBody>, Failure> {
    let Lease { mut sender, slot } = lease;
    if let Err(e) = sender.ready().await {
        return Err(Failure::Unsent(Box::new(req), e.to_string()));
    }
    match sender.try_send_request(req).await {
        Ok(resp) => {
            let recycle = Box::new(Recycle {
                pool: pool.clone(),
                sender,
                _slot: slot,
            });
            let (parts, body) = resp.into_parts();
            let mut recycle = Some(recycle);
            if hyper::body::Body::is_end_stream(&body) {
                Recycle::now(&mut recycle);
            }
            Ok(Response::from_parts(
                parts,
                UpstreamBody::H1 { body, recycle },
            ))
        }
        Err(mut e) => match e.take_message() {
            Some(req) => Err(Failure::Unsent(Box::new(req), e.error().to_string())),
            None => Err(Failure::Failed(e.into_error().to_string())),
        },
    }
}
