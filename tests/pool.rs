//! The upstream pool against a mock that limits streams per connection and
//! misbehaves on command: bursts at the peer's stream limit (1, 8, 100), the limit lowered
//! mid-connection, GOAWAY with 50 streams in flight, REFUSED_STREAM retried once, a connection
//! that stops answering PINGs, the connection cap reached (503 `upstream_busy`, never a hang),
//! and an HTTP/1.1 upstream's keep-alive pool. Bounds on time are generous; the counts are
//! what is checked: mock handshakes, the peak of streams on one connection, and /metrics.
//! (The same through a real Squid is in tests/squid.rs.)

mod common;

use std::time::{Duration, Instant};

use common::*;
use mock_upstream::{Alpn, MockConfig};

/// Deltas per streamed answer and the gap between them: each stream lasts about 0.6 s, long
/// enough for a burst's streams to overlap.
const CHUNKS: usize = 5;
const GAP_MS: u64 = 100;

fn limited(streams: u32) -> MockConfig {
    MockConfig {
        h2_max_concurrent_streams: streams,
        ..MockConfig::default()
    }
}

/// `n` streamed chat completions at once through `addr`, each checked byte for byte.
async fn burst(addr: std::net::SocketAddr, n: usize) -> Duration {
    all_ok(n, || chat_stream(addr, CHUNKS, GAP_MS)).await
}

/// `keyproxy_<name>{provider="openai"<labels>}` from /metrics.
async fn openai_metric(h: &Harness, name: &str, labels: &str) -> f64 {
    let text = metrics_text(h.admin).await;
    metric_value(
        &text,
        &format!("keyproxy_{name}{{provider=\"openai\"{labels}}}"),
    )
}

/// Waits until no upstream request is in flight (the gauge settles a moment after the last
/// body was read); returns the last value seen.
async fn streams_settle(h: &Harness) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let v = openai_metric(h, "upstream_streams", "").await;
        if v == 0.0 || Instant::now() > deadline {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// 10x `limit` concurrent streams against a mock advertising `limit` streams per connection,
/// with two workers: all of them are open at the upstream at once (none queued in the proxy),
/// all complete, about ceil(n / limit) connections are opened, and no connection ever carries
/// more than `limit` streams.
async fn burst_at_the_peer_limit(limit: u32) {
    let workers = 2;
    let h = Harness::start(limited(limit), &format!("limits: {{workers: {workers}}}")).await;
    let n = 10 * limit as usize;
    let addr = h.openai();
    // Streams of about 3.6 s: far longer than it takes to start them all.
    let running = tokio::spawn(async move { all_ok(n, || chat_stream(addr, 12, 300)).await });
    let burst = async { running.await.unwrap() };
    tokio::pin!(burst);
    let all_open = tokio::select! {
        ok = h.mock.wait_for_streams_in_flight(n, Duration::from_secs(30)) => ok,
        _ = &mut burst => false,
    };
    assert!(
        all_open,
        "the {n} streams were never all open upstream at once: the proxy queued them"
    );
    let took = burst.await;
    let handshakes = h.mock.handshakes();
    let peak = h.mock.peak_streams_per_connection();
    write_stdout(&format!(
        "limit {limit}: {n} streams in {took:?}, {handshakes} upstream connections, peak {peak} streams on one\n"
    ));
    assert_eq!(
        h.mock.requests().len(),
        n,
        "each request reached the mock once"
    );
    assert!(
        handshakes <= n.div_ceil(limit as usize) + workers,
        "{handshakes} connections for {n} streams at {limit} per connection"
    );
    assert!(
        peak <= limit as usize,
        "{peak} streams on one connection, limit {limit}"
    );
    assert_eq!(streams_settle(&h).await, 0.0, "upstream_streams gauge");
    let text = metrics_text(h.admin).await;
    let ok = metric_value(
        &text,
        r#"keyproxy_upstream_connects_total{provider="openai",result="ok"}"#,
    );
    assert_eq!(
        ok as usize, handshakes,
        "connects ok vs mock handshakes\n{text}"
    );
    assert!(text.contains("keyproxy_upstream_slot_wait_seconds_count{provider=\"openai\"}"));
    assert_no_canary(&logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_at_a_limit_of_1_stream_per_connection() {
    burst_at_the_peer_limit(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_at_a_limit_of_8_streams_per_connection() {
    burst_at_the_peer_limit(8).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_at_a_limit_of_100_streams_per_connection() {
    burst_at_the_peer_limit(100).await;
}

/// The mock lowers its limit from 100 to 2 by a new SETTINGS frame while 20 streams run on
/// one connection: those finish, a burst started right then completes too, and from then on
/// no connection carries more than 2 streams.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limit_lowered_mid_connection() {
    let h = Harness::start(MockConfig::default(), "limits: {workers: 1}").await;
    let addr = h.openai();
    burst(addr, 5).await; // one warm connection
    assert_eq!(h.mock.handshakes(), 1);

    let running = tokio::spawn(async move { all_ok(20, || chat_stream(addr, 10, GAP_MS)).await });
    assert!(
        h.mock
            .wait_for_streams_in_flight(20, Duration::from_secs(10))
            .await
    );
    h.mock.set_h2_max_concurrent_streams(2);
    tokio::time::sleep(Duration::from_millis(100)).await;
    burst(addr, 20).await; // above the new limit: they wait or go to new connections
    running.await.unwrap();
    assert_eq!(h.mock.requests().len(), 45);

    h.mock.reset_peak_streams();
    let before = h.mock.handshakes();
    burst(addr, 20).await;
    let peak = h.mock.peak_streams_per_connection();
    write_stdout(&format!(
        "limit lowered to 2: peak {peak} streams on one connection, {} connections in all\n",
        h.mock.handshakes()
    ));
    assert!(
        peak <= 2,
        "{peak} streams on one connection after the limit went down to 2"
    );
    assert!(
        h.mock.handshakes() - before <= 20 / 2 + 1,
        "{} new connections for 20 streams",
        h.mock.handshakes() - before
    );
    assert_eq!(streams_settle(&h).await, 0.0);
    assert_no_canary(&logs());
}

/// GOAWAY while 50 streams run on one connection: all 50 finish completely; requests sent
/// right after, and later ones, succeed on a new connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn goaway_while_50_streams_run() {
    let h = Harness::start(MockConfig::default(), "limits: {workers: 1}").await;
    let addr = h.openai();
    burst(addr, 1).await;
    assert_eq!(h.mock.handshakes(), 1);

    let running = tokio::spawn(async move { all_ok(50, || chat_stream(addr, 10, GAP_MS)).await });
    assert!(
        h.mock
            .wait_for_streams_in_flight(50, Duration::from_secs(10))
            .await,
        "the 50 streams were never all open at once"
    );
    h.mock.goaway();
    burst(addr, 10).await; // racing the GOAWAY: on the old connection or a new one
    running.await.unwrap();
    burst(addr, 10).await; // after it: on a new connection
    assert!(h.mock.handshakes() >= 2, "no new connection after GOAWAY");
    let after = h.mock.handshakes();
    burst(addr, 10).await;
    assert_eq!(h.mock.handshakes(), after, "the new connection is reused");
    assert_eq!(h.mock.requests().len(), 81);
    // The connection that got the GOAWAY is closed once its streams are done.
    let deadline = Instant::now() + Duration::from_secs(5);
    while h.mock.open_connections() >= h.mock.handshakes() {
        assert!(
            Instant::now() < deadline,
            "the GOAWAY'd connection stays open"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(streams_settle(&h).await, 0.0);
    assert_no_canary(&logs());
}

/// A stream answered REFUSED_STREAM is sent once more, on another connection, and succeeds,
/// counted as a retry; a request refused twice is not sent a third time: 502
/// `upstream_unavailable`, retryable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_stream_is_retried_once() {
    let h = Harness::start(MockConfig::default(), "limits: {workers: 1}").await;
    let addr = h.openai();
    chat_stream(addr, CHUNKS, 10).await.unwrap();

    h.mock.refuse_streams(1);
    chat_stream(addr, CHUNKS, 10).await.unwrap();
    assert_eq!(h.mock.refused_streams(), 1);
    assert_eq!(
        h.mock.requests().len(),
        2,
        "the refused attempt was not processed"
    );
    let retries = r#",reason="refused_stream""#;
    assert_eq!(
        openai_metric(&h, "upstream_retries_total", retries).await,
        1.0
    );

    h.mock.refuse_streams(2);
    let a = send(post(addr, "/mock/echo", "{}")).await;
    assert_eq!(a.status, 502, "{}", a.text());
    let v = a.json();
    assert_eq!(v["error"]["type"], "upstream_unavailable", "{v}");
    assert_eq!(v["error"]["retryable"], true, "{v}");
    assert_eq!(h.mock.refused_streams(), 3, "sent more than twice");
    assert_eq!(h.mock.requests().len(), 2);
    assert_eq!(
        openai_metric(&h, "upstream_retries_total", retries).await,
        2.0
    );
    let goaway = r#",reason="goaway""#;
    assert_eq!(
        openai_metric(&h, "upstream_retries_total", goaway).await,
        0.0
    );

    chat_stream(addr, CHUNKS, 10).await.unwrap();
    // The first retry went to another connection (opened for it); the second pair of
    // attempts used the two there are; refusals closed neither.
    assert_eq!(
        h.mock.handshakes(),
        2,
        "one connection per refusing peer at most"
    );
    assert_eq!(h.mock.open_connections(), 2, "a refusal cost a connection");
    assert_no_canary(&logs());
}

/// The upstream connection stops answering (PINGs included): the request in flight on it
/// gets an error once the PING goes unanswered (never a hang), the connection is dropped,
/// and the next request succeeds on a new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_that_stops_answering_pings_is_replaced() {
    let limits =
        "limits: {workers: 1, upstream_ping_interval: 300ms, upstream_ping_timeout: 300ms}";
    let h = Harness::start(MockConfig::default(), limits).await;
    let addr = h.openai();
    chat_stream(addr, CHUNKS, 10).await.unwrap();
    assert_eq!(h.mock.handshakes(), 1);

    h.mock.freeze_connections();
    let start = Instant::now();
    let a = tokio::time::timeout(
        Duration::from_secs(10),
        send(post(addr, "/mock/echo", "{}")),
    )
    .await
    .expect("a request on a frozen connection hung");
    write_stdout(&format!(
        "request on a frozen connection: {} after {:?}\n",
        a.status,
        start.elapsed()
    ));
    // Sent on the frozen connection (502: it may have been processed, so not retried), or
    // on a new one if the pool had already dropped it.
    if a.status != 200 {
        assert_eq!(a.status, 502, "{}", a.text());
        assert_eq!(a.json()["error"]["type"], "upstream_unavailable");
    }
    assert!(
        h.mock
            .wait_for_open_connections(usize::from(a.status == 200), Duration::from_secs(5))
            .await,
        "the frozen connection was not closed: {} open",
        h.mock.open_connections()
    );

    let start = Instant::now();
    chat_stream(addr, CHUNKS, 10).await.unwrap();
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
    assert!(h.mock.handshakes() >= 2);
    assert_no_canary(&logs());
}

/// The cap reached: one connection allowed, one stream per connection, and a long stream
/// holding it. Another request waits `upstream_wait_timeout` and gets 503 `upstream_busy`
/// (retryable), counted; once the stream ends, requests succeed again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cap_reached_is_upstream_busy_never_a_hang() {
    let limits = "limits: {workers: 1, max_upstream_connections: 1, upstream_wait_timeout: 500ms}";
    let h = Harness::start(limited(1), limits).await;
    let addr = h.openai();
    let long = tokio::spawn(async move { chat_stream(addr, 20, GAP_MS).await });
    assert!(h.mock.wait_for_requests(1, Duration::from_secs(5)).await);

    let start = Instant::now();
    let a = tokio::time::timeout(
        Duration::from_secs(10),
        send(post(addr, "/mock/echo", "{}")),
    )
    .await
    .expect("a request beyond the cap hung");
    let waited = start.elapsed();
    assert_eq!(a.status, 503, "{}", a.text());
    let v = a.json();
    assert_eq!(v["error"]["type"], "upstream_busy", "{v}");
    assert_eq!(v["error"]["retryable"], true, "{v}");
    assert_eq!(v["error"]["provider"], "openai", "{v}");
    assert!(
        waited >= Duration::from_millis(400) && waited < Duration::from_secs(5),
        "answered after {waited:?}"
    );
    assert_eq!(h.mock.requests().len(), 1);
    assert_eq!(h.mock.handshakes(), 1);
    let busy = r#",reason="upstream_busy""#;
    assert_eq!(openai_metric(&h, "rejections_total", busy).await, 1.0);

    long.await.unwrap().unwrap();
    let a = send(post(addr, "/mock/echo", "{}")).await;
    assert_eq!(a.status, 200, "{}", a.text());
    for _ in 0..3 {
        chat_stream(addr, CHUNKS, 10).await.unwrap();
    }
    assert_eq!(h.mock.handshakes(), 1);
    assert_eq!(h.mock.peak_streams_per_connection(), 1);
    assert_no_canary(&logs());
}

fn h1() -> MockConfig {
    MockConfig {
        alpn: Alpn::Http1Only,
        ..MockConfig::default()
    }
}

/// An HTTP/1.1 upstream, at most 4 connections at once: 20 concurrent requests all succeed (most
/// wait for a connection); more may be opened in all as workers hand idle ones over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_upstream_burst_within_the_cap() {
    let h = Harness::start(h1(), "limits: {workers: 2, max_upstream_connections: 4}").await;
    // The cap bounds the connections open at once. A worker at the cap takes over an idle
    // connection of the other worker by closing it and opening its own, so more than 4 may
    // be opened in all, never more than 4 at a time.
    let done = std::sync::atomic::AtomicBool::new(false);
    let sample = async {
        let mut peak = 0;
        while !done.load(std::sync::atomic::Ordering::Relaxed) {
            peak = peak.max(h.mock.open_connections());
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        peak
    };
    let burst = async {
        let took = all_ok(20, || chat_stream(h.openai(), CHUNKS, 50)).await;
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        took
    };
    let (took, peak) = tokio::join!(burst, sample);
    let handshakes = h.mock.handshakes();
    write_stdout(&format!(
        "http/1.1 upstream: 20 streams over {handshakes} connections (at most {peak} at once) in {took:?}\n"
    ));
    assert!(peak <= 4, "{peak} connections open at once, cap 4");
    assert_eq!(h.mock.requests().len(), 20);
    assert!(h
        .mock
        .requests()
        .iter()
        .all(|r| r.alpn.as_deref() == Some("http/1.1")));
    let text = metrics_text(h.admin).await;
    assert!(
        metric_value(
            &text,
            r#"keyproxy_upstream_connections{provider="openai",protocol="http1.1"}"#
        ) <= 4.0,
        "{text}"
    );
    assert_no_canary(&logs());
}

/// The cap is all taken by connections sitting idle in one worker: a request that lands on
/// the other worker must still be served (an idle connection makes room), not wait for a slot
/// nothing will free and get 503. Sequential requests, each on a new client connection, so
/// the kernel hands them to either worker.
async fn cap_held_by_idle_connections_of_another_worker(cfg: MockConfig) {
    let limits = "limits: {workers: 2, max_upstream_connections: 1, upstream_wait_timeout: 1s}";
    let h = Harness::start(cfg, limits).await;
    let mut busy = 0;
    for _ in 0..12 {
        let a = send(post(h.openai(), "/mock/echo", "{}")).await;
        match a.status {
            200 => {}
            503 => {
                assert_eq!(a.json()["error"]["type"], "upstream_busy", "{}", a.text());
                busy += 1;
            }
            other => panic!("{other}: {}", a.text()),
        }
    }
    assert_eq!(
        busy,
        0,
        "{busy} of 12 sequential requests got upstream_busy while no request was in flight \
         ({} upstream connections opened)",
        h.mock.handshakes()
    );
    assert_no_canary(&logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cap_held_by_idle_connections_of_another_worker_h2() {
    cap_held_by_idle_connections_of_another_worker(MockConfig::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cap_held_by_idle_connections_of_another_worker_http1() {
    cap_held_by_idle_connections_of_another_worker(h1()).await;
}

/// An HTTP/1.1 upstream: sequential requests reuse one keep-alive connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_upstream_sequential_requests_reuse_one_connection() {
    let h = Harness::start(h1(), "limits: {workers: 1, max_upstream_connections: 4}").await;
    for _ in 0..10 {
        chat_stream(h.openai(), CHUNKS, 10).await.unwrap();
        let a = send(post(h.openai(), "/mock/echo", "{\"x\":1}")).await;
        assert_eq!(a.status, 200, "{}", a.text());
    }
    assert_eq!(h.mock.handshakes(), 1);
    assert_eq!(h.mock.requests().len(), 20);
    assert_eq!(streams_settle(&h).await, 0.0);
    assert_no_canary(&logs());
}
