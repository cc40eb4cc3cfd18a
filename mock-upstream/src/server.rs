//! Accept loop and per-connection serving: TLS handshake, the fault-injection IO layer
//! (src/faultio.rs), then hyper (h2 or http/1.1 chosen from the negotiated ALPN).

use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::faultio::FaultIo;
use crate::record::ConnInfo;
use crate::{routes, Shared};

/// How long a client may take to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The stream limit h2 itself enforces: far above anything advertised, so the limit the mock
/// advertises (src/faultio.rs rewrites it into h2's SETTINGS) can be raised mid-connection.
const H2_INTERNAL_MAX_STREAMS: u32 = 1_000_000;

/// Accepts connections forever. Connection tasks live in a `JoinSet` owned by this future, so
/// aborting the accept task also aborts every connection.
pub(crate) async fn accept_loop(listener: TcpListener, acceptor: TlsAcceptor, shared: Arc<Shared>) {
    let mut conns = JoinSet::new();
    loop {
        let tcp = match listener.accept().await {
            Ok((tcp, _peer)) => tcp,
            Err(_) => {
                // E.g. EMFILE: back off briefly instead of spinning.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        while conns.try_join_next().is_some() {}
        conns.spawn(serve_connection(tcp, acceptor.clone(), shared.clone()));
    }
}

async fn serve_connection(tcp: TcpStream, acceptor: TlsAcceptor, shared: Arc<Shared>) {
    let _ = tcp.set_nodelay(true);
    let mut goaway = shared.goaway.subscribe();
    let delay = shared
        .handshake_delay_ms
        .load(std::sync::atomic::Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(delay)).await;
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        _ => return,
    };
    let (_, conn) = tls.get_ref();
    let info = Arc::new(ConnInfo {
        sni: conn.server_name().map(str::to_owned),
        alpn: conn
            .alpn_protocol()
            .map(|p| String::from_utf8_lossy(p).into_owned()),
    });
    shared.add_handshake();
    let _open = shared.connection_opened();
    let mut limit = shared.h2_limit.subscribe();
    let mut freeze = shared.freeze.subscribe();
    let io = FaultIo::new(tls, shared.clone(), info.alpn.as_deref() == Some("h2"));

    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new());
    if let Some(idle) = shared.cfg.h1_idle_close {
        // hyper starts this timer whenever it waits for a request head, so it is also the
        // idle keep-alive limit.
        builder.http1().header_read_timeout(idle);
    }
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(H2_INTERNAL_MAX_STREAMS);
    // h2 negotiated: serve h2 only; http/1.1 negotiated: http/1.1 only; no ALPN: detect from
    // the connection preface.
    let builder = match info.alpn.as_deref() {
        Some("h2") => builder.http2_only(),
        Some(_) => builder.http1_only(),
        None => builder,
    };
    let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
        let shared = shared.clone();
        let info = info.clone();
        async move {
            // hyper answers a service error on h2 with RST_STREAM carrying the h2 reason.
            if req.version() == http::Version::HTTP_2 && shared.take_refusal() {
                return Err(h2::Error::from(h2::Reason::REFUSED_STREAM));
            }
            Ok(routes::handle(shared, info, req).await)
        }
    });
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    let mut conn = std::pin::pin!(conn);
    let mut closing = false;
    loop {
        tokio::select! {
            _ = conn.as_mut() => return,
            // The IO layer acts on these when next polled: wake the connection so it is.
            _ = limit.changed() => {}
            _ = freeze.changed() => {}
            _ = goaway.changed(), if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}
