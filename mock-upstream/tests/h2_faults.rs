//! The mock's HTTP/2 fault switches, proven with the `h2` crate's client (which honours the
//! peer's stream limit and exposes PING and reset reasons): the advertised stream limit, a new
//! limit sent mid-connection, refused streams, frozen connections, and the connection counts.

#[allow(dead_code)]
mod common;

use std::future::poll_fn;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use mock_upstream::{Alpn, MockConfig, MockUpstream};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// Bound for every wait; generous, nothing here is timed tightly.
const T: Duration = Duration::from_secs(5);

async fn tls(mock: &MockUpstream, alpn: &[u8]) -> TlsStream<TcpStream> {
    let cfg = common::client_config(mock, alpn);
    let tcp = TcpStream::connect(mock.addr()).await.unwrap();
    let sni = ServerName::try_from("api.openai.com").unwrap();
    TlsConnector::from(Arc::new(cfg))
        .connect(sni, tcp)
        .await
        .unwrap()
}

/// One h2 client connection to the mock, driven by its own task.
struct H2 {
    send: h2::client::SendRequest<Bytes>,
    ping: h2::PingPong,
    /// The peer's stream limit as the client applies it (updated whenever the task runs).
    limit: Arc<AtomicUsize>,
    task: JoinHandle<Result<(), h2::Error>>,
}

impl H2 {
    async fn connect(mock: &MockUpstream) -> H2 {
        let io = tls(mock, b"h2").await;
        let (send, mut conn) = h2::client::handshake(io).await.unwrap();
        let ping = conn.ping_pong().unwrap();
        let limit = Arc::new(AtomicUsize::new(0));
        let seen = limit.clone();
        let task = tokio::spawn(poll_fn(move |cx| {
            let r = Pin::new(&mut conn).poll(cx);
            seen.store(conn.max_concurrent_send_streams(), Ordering::SeqCst);
            r
        }));
        H2 {
            send,
            ping,
            limit,
            task,
        }
    }

    /// GETs `path`; the whole body, or the stream's error.
    async fn get(&self, path: &str) -> Result<(u16, Vec<u8>), h2::Error> {
        let req = http::Request::get(format!("https://api.openai.com{path}"))
            .body(())
            .unwrap();
        let mut send = self.send.clone().ready().await?;
        let (resp, _) = send.send_request(req, true)?;
        let resp = resp.await?;
        let status = resp.status().as_u16();
        let mut body = resp.into_body();
        let mut out = Vec::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk?;
            out.extend_from_slice(&chunk);
            let _ = body.flow_control().release_capacity(chunk.len());
        }
        Ok((status, out))
    }

    /// True when a PING is answered within `limit`.
    async fn pings(&mut self, limit: Duration) -> bool {
        matches!(
            tokio::time::timeout(limit, self.ping.ping(h2::Ping::opaque())).await,
            Ok(Ok(_))
        )
    }

    /// Waits until the client applies a stream limit of `n`.
    async fn wait_limit(&self, n: usize) {
        let deadline = tokio::time::Instant::now() + T;
        while self.limit.load(Ordering::SeqCst) != n {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the client's stream limit stayed {} (want {n})",
                self.limit.load(Ordering::SeqCst)
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// `n` concurrent SSE streams (each about 100 ms long) on this connection: all complete.
    async fn burst(&self, n: usize) {
        let streams = (0..n).map(|_| self.get("/mock/sse?events=5&gap_ms=25"));
        let results = tokio::time::timeout(T * 2, futures_join_all(streams))
            .await
            .expect("burst in time");
        for r in results {
            let (status, body) = r.expect("stream ok");
            assert_eq!(status, 200);
            assert_eq!(String::from_utf8(body).unwrap().matches("id: ").count(), 5);
        }
    }
}

/// Runs the futures concurrently (on this task) and returns their outputs in order.
async fn futures_join_all<F: Future>(futs: impl Iterator<Item = F>) -> Vec<F::Output> {
    let mut futs: Vec<Pin<Box<F>>> = futs.map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = futs.iter().map(|_| None).collect();
    poll_fn(|cx| {
        let mut pending = false;
        for (f, o) in futs.iter_mut().zip(out.iter_mut()) {
            if o.is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *o = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().flatten().collect()
}

#[tokio::test]
async fn advertised_stream_limit_is_what_the_client_applies_and_peak_shows_it() {
    let cfg = MockConfig {
        h2_max_concurrent_streams: 3,
        ..MockConfig::default()
    };
    let mock = MockUpstream::start(cfg).await.unwrap();
    let c = H2::connect(&mock).await;
    assert_eq!(c.get("/mock/echo").await.unwrap().0, 200);
    c.wait_limit(3).await;
    c.burst(9).await;
    assert_eq!(mock.peak_streams_per_connection(), 3);
    assert_eq!(mock.handshakes(), 1);
    assert_eq!(mock.open_connections(), 1);
    assert_eq!(mock.requests().len(), 10);
}

#[tokio::test]
async fn default_limit_is_advertised_too() {
    let mock = MockUpstream::start(MockConfig::default()).await.unwrap();
    let c = H2::connect(&mock).await;
    assert_eq!(c.get("/mock/echo").await.unwrap().0, 200);
    c.wait_limit(mock_upstream::DEFAULT_H2_MAX_CONCURRENT_STREAMS as usize)
        .await;
    let all_open = async {
        assert!(mock.wait_for_streams_in_flight(20, T).await);
        assert_eq!(mock.streams_in_flight(), 20);
    };
    tokio::join!(c.burst(20), all_open);
    assert_eq!(mock.peak_streams_per_connection(), 20);
    assert_eq!(mock.streams_in_flight(), 0);
    // Streams still open when their connection goes count no more.
    let hold = c.get("/mock/hang");
    let drop_conn = async {
        assert!(mock.wait_for_streams_in_flight(1, T).await);
        c.task.abort();
    };
    let _ = tokio::join!(hold, drop_conn);
    assert!(mock.wait_for_open_connections(0, T).await);
    assert_eq!(mock.streams_in_flight(), 0);
}

#[tokio::test]
async fn limit_changed_mid_connection_by_a_new_settings_frame() {
    let mock = MockUpstream::start(MockConfig::default()).await.unwrap();
    let mut c = H2::connect(&mock).await;
    assert_eq!(c.get("/mock/echo").await.unwrap().0, 200);

    // Lowered on an idle connection: the frame goes out without h2 writing anything.
    mock.set_h2_max_concurrent_streams(2);
    c.wait_limit(2).await;
    // The client's ACK of the injected frame did not reach h2 (else PROTOCOL_ERROR).
    assert!(c.pings(T).await, "connection broken after the new SETTINGS");
    mock.reset_peak_streams();
    c.burst(6).await;
    assert_eq!(mock.peak_streams_per_connection(), 2);

    // Raised above the first value while streams run (h2 itself never refuses them).
    let running = tokio::spawn({
        let send = c.send.clone();
        async move {
            let req = http::Request::get("https://api.openai.com/mock/sse?events=10&gap_ms=20")
                .body(())
                .unwrap();
            let (resp, _) = send.ready().await?.send_request(req, true)?;
            let mut body = resp.await?.into_body();
            let mut n = 0;
            while let Some(chunk) = body.data().await {
                let chunk = chunk?;
                n += chunk.len();
                let _ = body.flow_control().release_capacity(chunk.len());
            }
            Ok::<_, h2::Error>(n)
        }
    });
    tokio::time::sleep(Duration::from_millis(30)).await;
    mock.set_h2_max_concurrent_streams(5);
    c.wait_limit(5).await;
    assert!(running.await.unwrap().unwrap() > 0);
    mock.reset_peak_streams();
    c.burst(10).await;
    assert_eq!(mock.peak_streams_per_connection(), 5);
    assert!(c.pings(T).await);

    // A new connection starts with the current value.
    let fresh = H2::connect(&mock).await;
    assert_eq!(fresh.get("/mock/echo").await.unwrap().0, 200);
    fresh.wait_limit(5).await;
    assert_eq!(mock.handshakes(), 2);
    assert!(!c.task.is_finished() && !fresh.task.is_finished());
}

#[tokio::test]
async fn refused_streams_are_reset_unprocessed() {
    let mock = MockUpstream::start(MockConfig::default()).await.unwrap();
    let c = H2::connect(&mock).await;
    mock.refuse_streams(2);
    for _ in 0..2 {
        let err = c.get("/mock/echo").await.expect_err("refused");
        assert_eq!(err.reason(), Some(h2::Reason::REFUSED_STREAM), "{err}");
        assert!(err.is_remote());
    }
    let (status, body) = c.get("/mock/echo").await.unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(mock.refused_streams(), 2);
    assert_eq!(mock.requests().len(), 1, "a refused stream was recorded");
    assert_eq!(mock.handshakes(), 1, "refusals cost the connection");

    // http/1.1 requests are never refused (a pending refusal waits for the next h2 stream).
    mock.refuse_streams(1);
    let mut h1 = tls(&mock, b"http/1.1").await;
    assert!(h1_get(&mut h1).await.starts_with("HTTP/1.1 200"));
    assert!(c.get("/mock/echo").await.is_err());
    assert_eq!(mock.refused_streams(), 3);
}

/// One `GET /mock/echo` on an http/1.1 connection; the response head and body as text.
async fn h1_get(io: &mut TlsStream<TcpStream>) -> String {
    io.write_all(b"GET /mock/echo HTTP/1.1\r\nhost: api.openai.com\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&out).contains('}') {
        let n = io.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&out));
        out.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn frozen_connections_answer_nothing_until_closed_new_ones_work() {
    let mock = MockUpstream::start(MockConfig::default()).await.unwrap();
    let mut old = H2::connect(&mock).await;
    assert_eq!(old.get("/mock/echo").await.unwrap().0, 200);
    let mut old_h1 = tls(&mock, b"http/1.1").await;
    assert!(h1_get(&mut old_h1).await.starts_with("HTTP/1.1 200"));
    assert!(mock.wait_for_open_connections(2, T).await);

    mock.freeze_connections();
    assert!(
        !old.pings(Duration::from_millis(500)).await,
        "a frozen PONG"
    );
    let stuck = tokio::time::timeout(Duration::from_millis(300), old.get("/mock/echo")).await;
    assert!(stuck.is_err(), "a frozen connection answered");
    let stuck = tokio::time::timeout(Duration::from_millis(300), h1_get(&mut old_h1)).await;
    assert!(stuck.is_err(), "a frozen http/1.1 connection answered");

    let mut new = H2::connect(&mock).await;
    assert_eq!(new.get("/mock/echo").await.unwrap().0, 200);
    assert!(new.pings(T).await);
    assert_eq!(mock.open_connections(), 3);

    // The client gives up on the frozen ones: they close, the new one stays.
    old.task.abort();
    drop(old);
    drop(old_h1);
    assert!(
        mock.wait_for_open_connections(1, T).await,
        "{} open",
        mock.open_connections()
    );
    assert_eq!(new.get("/mock/echo").await.unwrap().0, 200);
}

#[tokio::test]
async fn goaway_closes_connections_and_they_stop_counting_as_open() {
    let mock = MockUpstream::start(MockConfig {
        alpn: Alpn::Http2Only,
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let c = H2::connect(&mock).await;
    let running = tokio::spawn({
        let send = c.send.clone();
        async move {
            let req = http::Request::get("https://api.openai.com/mock/sse?events=6&gap_ms=30")
                .body(())
                .unwrap();
            let (resp, _) = send.ready().await?.send_request(req, true)?;
            let mut body = resp.await?.into_body();
            let mut events = 0;
            while let Some(chunk) = body.data().await {
                let chunk = chunk?;
                events += String::from_utf8_lossy(&chunk).matches("id: ").count();
                let _ = body.flow_control().release_capacity(chunk.len());
            }
            Ok::<_, h2::Error>(events)
        }
    });
    assert!(mock.wait_for_requests(1, T).await);
    mock.goaway();
    assert_eq!(running.await.unwrap().unwrap(), 6, "GOAWAY cut a stream");
    assert!(c.get("/mock/echo").await.is_err(), "a stream after GOAWAY");
    assert!(mock.wait_for_open_connections(0, T).await);
    assert!(tokio::time::timeout(T, c.task).await.is_ok());
}

/// New limits injected again and again while large DATA frames are being written: every frame
/// boundary is kept (the body arrives whole and in order) and the last value is applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limit_changes_during_a_large_body_keep_the_frames_intact() {
    let mock = MockUpstream::start(MockConfig::default()).await.unwrap();
    let c = H2::connect(&mock).await;
    let total = 8_000_000usize;
    let path = format!("/mock/large?bytes={total}");
    let download = c.get(&path);
    let flip = async {
        for i in 0..40u32 {
            mock.set_h2_max_concurrent_streams(10 + i);
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
    };
    let (got, ()) = tokio::join!(download, flip);
    let (status, body) = got.unwrap();
    assert_eq!(status, 200);
    assert_eq!(body.len(), total);
    assert!(body.iter().enumerate().all(|(j, b)| *b == (j % 251) as u8));
    c.wait_limit(49).await;
    assert_eq!(c.get("/mock/echo").await.unwrap().0, 200);
}
