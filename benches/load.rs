//! Load benchmarks through real loopback sockets: the same scenarios direct to the TLS mock
//! upstream and through llm-keyproxy (a release child process), side by side in one run, with
//! ratios. `cargo bench --bench load`; `KEYPROXY_BENCH_QUICK=1` for a seconds-long smoke run.
//!
//! The mock upstream and the load generator share this process; the proxy's CPU and memory are
//! read from /proc for its own pid only.

mod support;

use std::time::{Duration, Instant};

use support::*;

fn main() {
    let quick = std::env::var("KEYPROXY_BENCH_QUICK").is_ok_and(|v| v == "1");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (report, failed) = rt.block_on(run_all(quick));
    println!("{report}");
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-results.md");
    if std::fs::write(&out, &report).is_ok() {
        println!("(written to {})", out.display());
    }
    if failed {
        std::process::exit(1);
    }
}

async fn run_all(quick: bool) -> (String, bool) {
    let scale = if quick { Scale::quick() } else { Scale::full() };
    let env = Env::start().await;
    let mut t = Table::default();

    // Small requests, one connection, sequential.
    let direct = latency_1conn(
        &env.direct,
        &env.direct_url("/mock/status/200"),
        scale.small_n,
    )
    .await;
    let via = latency_1conn(
        &env.proxy_client,
        &env.proxy_url("/mock/status/200"),
        scale.small_n,
    )
    .await;
    t.row(
        "small request, 1 connection: p50 (us)",
        direct.p(50.0),
        via.p(50.0),
        Some(via.p(50.0) - direct.p(50.0)),
    );
    t.row(
        "small request, 1 connection: p99 (us)",
        direct.p(99.0),
        via.p(99.0),
        Some(via.p(99.0) - direct.p(99.0)),
    );

    // Fixed rate (open loop).
    let direct = fixed_rate(
        &env.direct,
        &env.direct_url("/mock/status/200"),
        scale.rate,
        scale.rate_secs,
    )
    .await;
    let cpu0 = env.proxy.cpu_secs();
    let via = fixed_rate(
        &env.proxy_client,
        &env.proxy_url("/mock/status/200"),
        scale.rate,
        scale.rate_secs,
    )
    .await;
    let cpu = env.proxy.cpu_secs() - cpu0;
    let label = format!("small request at {}/s: p99 (us)", scale.rate);
    t.row(
        &label,
        direct.p(99.0),
        via.p(99.0),
        Some(via.p(99.0) - direct.p(99.0)),
    );
    t.note(format!(
        "proxy CPU at {}/s: {:.1}% of one core",
        scale.rate,
        cpu / scale.rate_secs as f64 * 100.0
    ));

    // Throughput at 64 connections, and proxy CPU per 10k requests.
    let direct = closed_loop(
        &env.direct,
        &env.direct_url("/mock/status/200"),
        64,
        scale.tput_secs,
    )
    .await;
    let cpu0 = env.proxy.cpu_secs();
    let via = closed_loop(
        &env.proxy_client,
        &env.proxy_url("/mock/status/200"),
        64,
        scale.tput_secs,
    )
    .await;
    let cpu = env.proxy.cpu_secs() - cpu0;
    t.row(
        "small requests/s at 64 connections",
        direct.rps(),
        via.rps(),
        None,
    );
    t.note(format!(
        "proxy CPU per 10k requests: {:.3} s ({:.1} us per request)",
        cpu / via.count as f64 * 10_000.0,
        cpu / via.count as f64 * 1e6
    ));

    // SSE at full speed: 64 streams x 200 events x 256 B, every event checked.
    let path = "/mock/sse?events=200&gap_ms=0&size=256";
    let direct = sse_streams(&env.direct, &env.direct_url(path), 64, 200).await;
    let via = sse_streams(&env.proxy_client, &env.proxy_url(path), 64, 200).await;
    t.row(
        "SSE 64x200x256B: events/s",
        direct.events_per_sec(),
        via.events_per_sec(),
        None,
    );
    t.row(
        "SSE 64x200x256B: MB/s",
        direct.mb_per_sec(),
        via.mb_per_sec(),
        None,
    );
    t.check(
        direct.errors + via.errors == 0,
        format!(
            "SSE full speed: {} + {} events lost, merged or reordered",
            direct.errors, via.errors
        ),
    );

    // Many slow streams: added time to first byte and per-event latency.
    let n = scale.slow_streams;
    let path = format!("/mock/sse?events={}&gap_ms=5&size=128", scale.slow_events);
    let direct = sse_streams(&env.direct, &env.direct_url(&path), n, scale.slow_events).await;
    let via = sse_streams(
        &env.proxy_client,
        &env.proxy_url(&path),
        n,
        scale.slow_events,
    )
    .await;
    t.row(
        &format!("{n} streams, 5 ms gaps: TTFB p50 (us)"),
        direct.ttfb.p(50.0),
        via.ttfb.p(50.0),
        Some(via.ttfb.p(50.0) - direct.ttfb.p(50.0)),
    );
    t.row(
        &format!("{n} streams, 5 ms gaps: TTFB p99 (us)"),
        direct.ttfb.p(99.0),
        via.ttfb.p(99.0),
        Some(via.ttfb.p(99.0) - direct.ttfb.p(99.0)),
    );
    t.row(
        &format!("{n} streams, 5 ms gaps: event lag p50 (us)"),
        direct.lag.p(50.0),
        via.lag.p(50.0),
        Some(via.lag.p(50.0) - direct.lag.p(50.0)),
    );
    t.row(
        &format!("{n} streams, 5 ms gaps: event lag p99 (us)"),
        direct.lag.p(99.0),
        via.lag.p(99.0),
        Some(via.lag.p(99.0) - direct.lag.p(99.0)),
    );
    t.check(
        direct.errors + via.errors == 0,
        format!(
            "slow SSE: {} + {} events lost, merged or reordered",
            direct.errors, via.errors
        ),
    );

    // 10 MiB upload.
    let rss0 = env.proxy.rss_kib();
    let direct = upload(
        &env.direct,
        &env.direct_url("/mock/echo"),
        10 << 20,
        scale.uploads,
    )
    .await;
    let cpu0 = env.proxy.cpu_secs();
    let via = upload(
        &env.proxy_client,
        &env.proxy_url("/mock/echo"),
        10 << 20,
        scale.uploads,
    )
    .await;
    let cpu = env.proxy.cpu_secs() - cpu0;
    t.row("10 MiB upload: MB/s", direct, via, None);
    t.note(format!(
        "10 MiB upload: proxy CPU {:.1} ms per upload, RSS {} KiB before, {} KiB after",
        cpu / scale.uploads as f64 * 1000.0,
        rss0,
        env.proxy.rss_kib()
    ));
    let started = Instant::now();
    let status = too_large(env.proxy.port);
    t.note(format!(
        "413 path (declared 11 MiB): status {status} in {} us",
        started.elapsed().as_micros()
    ));

    // Through a CONNECT proxy (warm tunnel).
    let tunneled = Env::start_tunneled(&env).await;
    let via_direct = latency_1conn(
        &env.proxy_client,
        &env.proxy_url("/mock/status/200"),
        scale.small_n,
    )
    .await;
    let via_tunnel = latency_1conn(
        &tunneled.proxy_client,
        &tunneled.proxy_url("/mock/status/200"),
        scale.small_n,
    )
    .await;
    t.row(
        "via proxy, direct vs CONNECT tunnel: p50 (us)",
        via_direct.p(50.0),
        via_tunnel.p(50.0),
        None,
    );
    t.row(
        "via proxy, direct vs CONNECT tunnel: p99 (us)",
        via_direct.p(99.0),
        via_tunnel.p(99.0),
        None,
    );
    let path = "/mock/sse?events=200&gap_ms=0&size=256";
    let a = sse_streams(&env.proxy_client, &env.proxy_url(path), 64, 200).await;
    let b = sse_streams(&tunneled.proxy_client, &tunneled.proxy_url(path), 64, 200).await;
    t.row(
        "via proxy, direct vs CONNECT tunnel: SSE events/s",
        a.events_per_sec(),
        b.events_per_sec(),
        None,
    );
    t.check(
        a.errors + b.errors == 0,
        "SSE through the tunnel: events lost".into(),
    );
    drop(tunneled);

    // Memory: idle, with open streams, after they close.
    let idle = env.proxy.rss_kib();
    for open in scale.open_streams.iter().copied() {
        let (held, during) = hold_streams(&env, open).await;
        t.note(format!(
            "RSS with {open} open streams: {during} KiB ({:.1} KiB per stream over idle {idle} KiB; {held} held)",
            (during.saturating_sub(idle)) as f64 / open.max(1) as f64
        ));
        tokio::time::sleep(Duration::from_millis(500)).await;
        t.note(format!(
            "RSS after they closed: {} KiB",
            env.proxy.rss_kib()
        ));
    }

    // Start-up and shutdown.
    let ready = start_to_ready(&env, scale.starts).await;
    t.note(format!(
        "start to /ready: median {} us over {} starts",
        ready.p(50.0) as u64,
        scale.starts
    ));
    let stop = sigterm_with_streams(&env).await;
    t.note(format!("SIGTERM to exit with 10 streams in flight (drain timeout 1s, streams end after ~200 ms): {} ms", stop.as_millis()));
    drop(env);
    (t.render(quick), t.failed())
}
