//! llm-keyproxy only: upstreams that limit the streams per HTTP/2 connection
//! (SETTINGS_MAX_CONCURRENT_STREAMS), as HTTP/2 front ends do. A cold burst of slow SSE streams
//! against 256 per connection (streams served, TLS handshakes at the upstream), then
//! `/mock/hang` streams held open against 100 per connection (errors, proxy RSS per stream,
//! handshakes, the proxy's own count of connects). Each part has its own in-process mock and a
//! fresh llm-keyproxy, so the pool starts cold and the mock's counters are that part's alone.
//!
//! The peers are left out: compare.sh points nginx and HAProxy at its own mock, which advertises
//! no limit, and nginx pools HTTP/1.1 upstream connections (one per stream in flight: there is
//! no stream limit for it to honour).

use std::future::Future;
use std::time::Duration;

use mock_upstream::{MockConfig, MockUpstream};

use super::STATUS_PATH;
use crate::support::*;

/// Streams per connection the burst's upstream advertises: a common value for HTTP/2 front ends.
const BURST_LIMIT: u32 = 256;
/// Streams per connection the held streams' upstream advertises.
const HELD_LIMIT: u32 = 100;
/// Events per burst stream and the gap between them: each stream lasts about a second, far
/// longer than it takes to start them all, so the whole burst is open at once.
const BURST_EVENTS: usize = 10;
const BURST_GAP_MS: u64 = 100;
/// The target for proxy memory per held stream (both legs), KiB.
const KIB_PER_STREAM_TARGET: f64 = 16.0;
/// Descriptors the bench process needs besides those open now and the held streams' client
/// sockets: the mock's side of the upstream connections (one per 100 streams), files, spares.
const FD_MARGIN: u64 = 200;

/// A mock advertising `limit` streams per h2 connection, and a fresh llm-keyproxy in front of it.
struct Limited {
    /// Dropped after the proxy (fields drop in order): the proxy is gone before the mock closes.
    proxy: ProxyProcess,
    target: Target,
    mock: MockUpstream,
}

impl Limited {
    async fn start(env: &Env, limit: u32, name: &str) -> Limited {
        let mock = MockUpstream::start(MockConfig {
            expected_key: Some(env.upstream.key.clone()),
            h2_max_concurrent_streams: limit,
            ..MockConfig::default()
        })
        .await
        .expect("mock");
        let ca = env.dir.join(format!("{name}-ca.pem"));
        std::fs::write(&ca, mock.ca_pem()).expect("ca");
        let upstream = Upstream {
            mock: mock.addr(),
            ca,
            key: env.upstream.key.clone(),
        };
        let proxy = ProxyProcess::spawn(&env.dir, &upstream, "", name);
        let target = Target::keyproxy(name, &proxy);
        Limited {
            proxy,
            target,
            mock,
        }
    }

    /// `keyproxy_upstream_connects_total{result="ok"}` from the proxy's admin /metrics.
    fn connects_ok(&self) -> f64 {
        metric_sum(
            self.proxy.admin,
            "keyproxy_upstream_connects_total",
            "result=\"ok\"",
        )
        .unwrap_or(f64::NAN)
    }
}

/// Runs `work` to its end, reading `probe` every millisecond meanwhile; its output and the most
/// `probe` returned.
async fn most_while<T>(work: impl Future<Output = T>, probe: impl Fn() -> usize) -> (T, usize) {
    tokio::pin!(work);
    let mut most = probe();
    loop {
        tokio::select! {
            out = &mut work => return (out, most.max(probe())),
            _ = tokio::time::sleep(Duration::from_millis(1)) => most = most.max(probe()),
        }
    }
}

/// The most TLS handshakes `n` streams should cost against `limit` streams per connection:
/// one connection per `limit` streams (llm-keyproxy's pool waits for its first connection's
/// SETTINGS before it opens more), plus two per worker for the streams split between workers
/// and a connect that starts as another completes. Against 100 per connection, the issue-13
/// target.
fn handshake_bound(n: usize, limit: u32) -> usize {
    n.div_ceil(limit as usize) + 2 * workers()
}

/// llm-keyproxy's upstream workers: its default, one per core (`limits.workers`).
fn workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// A cold burst: `burst_streams` slow SSE streams started at once through a fresh proxy whose
/// upstream advertises 256 streams per connection. Every stream must be served in full; the
/// upstream sees a few connections (at least ceil(n / 256), at most [`handshake_bound`]), not
/// one per stream.
pub async fn cold_burst(r: &mut Report, env: &Env, scale: &Scale) {
    let n = scale.burst_streams;
    let l = Limited::start(env, BURST_LIMIT, "burst").await;
    let url = l.target.url(&format!(
        "/mock/sse?events={BURST_EVENTS}&gap_ms={BURST_GAP_MS}&size=128"
    ));
    let mut tasks = Vec::with_capacity(n);
    for _ in 0..n {
        let (c, u) = (l.target.client.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            one_stream(&c, &u, BURST_EVENTS).await
        }));
    }
    let all = async {
        let mut served = 0;
        for t in tasks {
            if let Ok(Ok((events, ..))) = t.await {
                served += usize::from(events == BURST_EVENTS as u64);
            }
        }
        served
    };
    let (served, in_flight) = most_while(all, || l.mock.streams_in_flight()).await;
    let handshakes = l.mock.handshakes();
    let per_connection = l.mock.peak_streams_per_connection();
    let bound = handshake_bound(n, BURST_LIMIT);
    let what = format!(
        "cold burst of {n} SSE streams (~1 s each), upstream limit {BURST_LIMIT}/connection"
    );
    r.kp(
        "burst_served",
        &format!("{what}: streams served in full"),
        served as f64,
        Some(("started", n as f64)),
        0,
    );
    r.kp(
        "burst_open_upstream",
        &format!("{what}: most streams open upstream at once"),
        in_flight as f64,
        Some(("started", n as f64)),
        0,
    );
    limit_rows(
        r,
        "burst",
        &what,
        handshakes,
        bound,
        per_connection,
        BURST_LIMIT,
    );
    r.kp(
        "burst_connects_ok",
        &format!("{what}: upstream connects (the proxy's /metrics, result ok)"),
        l.connects_ok(),
        Some(("handshakes at the upstream", handshakes as f64)),
        0,
    );
    r.check(
        served == n,
        format!("{what}: only {served} of {n} streams served in full"),
    );
    limit_checks(r, &what, handshakes, bound, per_connection, BURST_LIMIT);
}

/// `held_streams` `/mock/hang` streams held open through a fresh proxy whose upstream advertises
/// 100 streams per connection: none may fail; proxy memory per stream (RSS over the RSS after
/// one request, both legs) and TLS handshakes against their targets.
pub async fn held_streams(r: &mut Report, env: &Env, scale: &Scale) {
    let n = scale.held_streams;
    let what = format!("{n} streams held, upstream limit {HELD_LIMIT}/connection");
    let needed = procs::open_files() + n as u64 + FD_MARGIN;
    if let Some(soft) = procs::open_file_limit().filter(|l| *l < needed) {
        r.check(
            false,
            format!("{what}: the open-file limit ({soft}) is below the {needed} descriptors this needs; raise it first (`ulimit -n $(ulimit -Hn)`, as compare.sh does)"),
        );
        return;
    }
    let l = Limited::start(env, HELD_LIMIT, "held").await;
    let Some(procs) = l.target.procs.clone() else {
        return;
    };
    // One request first: the runtime, the pool and one upstream connection exist, as before the
    // memory scenario's streams.
    let warm = get_all(&l.target.client, &l.target.url(STATUS_PATH)).await;
    r.check(warm.is_ok(), format!("{what}: first request: {warm:?}"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = procs.rss_kib();
    let mock = &l.mock;
    let (held, (during, open_upstream)) =
        hold_streams(&l.target.client, &l.target.url("/mock/hang"), n, || {
            (procs.rss_kib(), mock.streams_in_flight())
        })
        .await;
    let handshakes = l.mock.handshakes();
    let per_connection = l.mock.peak_streams_per_connection();
    let bound = handshake_bound(n, HELD_LIMIT);
    let per_stream = during.saturating_sub(before) as f64 / held.max(1) as f64;
    r.kp(
        "held_errors",
        &format!("{what}: streams that failed to open"),
        (n - held) as f64,
        None,
        0,
    );
    r.kp(
        "held_open_upstream",
        &format!("{what}: streams open upstream while held"),
        open_upstream as f64,
        Some(("held", held as f64)),
        0,
    );
    r.kp(
        "held_kib_per_stream",
        &format!("{what}: proxy RSS per open stream (KiB, both legs)"),
        per_stream,
        Some(("target", KIB_PER_STREAM_TARGET)),
        1,
    );
    r.kp(
        "held_rss_kib",
        &format!("{what}: proxy RSS (KiB)"),
        during as f64,
        Some(("before the streams", before as f64)),
        0,
    );
    limit_rows(
        r,
        "held",
        &what,
        handshakes,
        bound,
        per_connection,
        HELD_LIMIT,
    );
    r.kp(
        "held_connects_ok",
        &format!("{what}: upstream connects (the proxy's /metrics, result ok)"),
        l.connects_ok(),
        Some(("handshakes at the upstream", handshakes as f64)),
        0,
    );
    r.check(
        held == n,
        format!("{what}: {} of {n} streams failed to open", n - held),
    );
    limit_checks(r, &what, handshakes, bound, per_connection, HELD_LIMIT);
    if per_stream > KIB_PER_STREAM_TARGET {
        r.note(format!(
            "{what}: {per_stream:.1} KiB of proxy RSS per stream, over the {KIB_PER_STREAM_TARGET} KiB target"
        ));
    }
    r.note("limiting upstream (cold burst, streams held): llm-keyproxy only, each part a fresh process in front of its own in-process mock; the peers are left out (compare.sh points them at its own mock, which advertises no limit, and nginx's HTTP/1.1 upstream pool has no stream limit to honour)".into());
}

/// Handshakes against their bound, and the most streams seen on one connection against the
/// limit advertised.
fn limit_rows(
    r: &mut Report,
    id: &str,
    what: &str,
    handshakes: usize,
    bound: usize,
    per_connection: usize,
    limit: u32,
) {
    let w = workers();
    r.kp(
        &format!("{id}_handshakes"),
        &format!("{what}: TLS handshakes at the upstream"),
        handshakes as f64,
        Some((
            &format!("bound: streams / {limit}, rounded up, + 2 x {w} workers"),
            bound as f64,
        )),
        0,
    );
    r.kp(
        &format!("{id}_per_connection"),
        &format!("{what}: most streams on one upstream connection"),
        per_connection as f64,
        Some(("advertised limit", limit as f64)),
        0,
    );
}

/// A failed check when the handshakes exceed their bound or a connection carried more streams
/// than the peer allows.
fn limit_checks(
    r: &mut Report,
    what: &str,
    handshakes: usize,
    bound: usize,
    per_connection: usize,
    limit: u32,
) {
    r.check(
        handshakes <= bound,
        format!("{what}: {handshakes} TLS handshakes at the upstream, over the bound of {bound}"),
    );
    r.check(
        per_connection <= limit as usize,
        format!("{what}: {per_connection} streams on one upstream connection, over the {limit} it allows"),
    );
}
