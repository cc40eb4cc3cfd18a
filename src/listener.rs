//! Listeners: bind every socket up front, then accept loops that serve each connection with
//! hyper (HTTP/1.1 and h2c) until the drain signal, when connections finish gracefully.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;

use hyper::body::Incoming;
use hyper::service::Service;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use crate::body::ProxyBody;

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

/// Accepts connections until draining starts; each connection is served until it is done
/// (after draining starts: until its in-flight requests finish).
pub async fn serve<S, F>(listener: TcpListener, make_service: F, mut drain: DrainHandle)
where
    F: Fn() -> S,
    S: Service<
            hyper::Request<Incoming>,
            Response = hyper::Response<ProxyBody>,
            Error = std::convert::Infallible,
        > + Send
        + 'static,
    S::Future: Send + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(crate::config::DEFAULT_HEADER_READ_TIMEOUT);
    builder.http2().timer(TokioTimer::new());
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
        let _ = stream.set_nodelay(true);
        // WebSocket (DESIGN 5.7): upgrades allowed; tunnels learn of shutdown via `Shutdown`.
        let service = crate::websocket::WithShutdown::new(make_service(), drain.signal.clone());
        let conn = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let mut handle = drain.clone();
        tokio::spawn(async move {
            let mut conn = pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = handle.draining() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
            drop(handle);
        });
    }
}

/// Runs `fut` and returns its output, or `None` once `limit` passes.
pub async fn within<F: Future>(limit: std::time::Duration, fut: F) -> Option<F::Output> {
    tokio::time::timeout(limit, fut).await.ok()
}
