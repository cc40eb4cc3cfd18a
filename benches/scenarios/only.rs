//! llm-keyproxy only: the small-request and SSE scenarios through a CONNECT tunnel (an
//! in-process CONNECT proxy, warm) next to the same proxy without; exec to `/ready`; SIGTERM
//! with streams in flight; the release binary's size.

use std::time::Duration;

use super::STATUS_PATH;
use crate::support::*;

/// Through a CONNECT proxy (warm tunnel), next to the same proxy without.
pub async fn tunnel(r: &mut Report, env: &Env, scale: &Scale) {
    let tunneled = env.start_tunneled().await;
    let plain = env.target(KEYPROXY);
    let tun = &tunneled.target;
    let _ = latency_1conn(&tun.client, &tun.url(STATUS_PATH), 100).await;
    let a = latency_1conn(&plain.client, &plain.url(STATUS_PATH), scale.small_n).await;
    let b = latency_1conn(&tun.client, &tun.url(STATUS_PATH), scale.small_n).await;
    let no = "without tunnel";
    r.kp(
        "tunnel_1conn_p50_us",
        "via CONNECT tunnel: 1 connection p50 (us)",
        b.p(50.0),
        Some((no, a.p(50.0))),
        1,
    );
    r.kp(
        "tunnel_1conn_p99_us",
        "via CONNECT tunnel: 1 connection p99 (us)",
        b.p(99.0),
        Some((no, a.p(99.0))),
        1,
    );
    let a = closed_loop(&plain.client, &plain.url(STATUS_PATH), 64, scale.tput_secs).await;
    let b = closed_loop(&tun.client, &tun.url(STATUS_PATH), 64, scale.tput_secs).await;
    r.kp(
        "tunnel_rps_64",
        "via CONNECT tunnel: requests/s at 64 connections",
        b.rps(),
        Some((no, a.rps())),
        0,
    );
    let (n, ev) = (scale.fast_streams, scale.fast_events);
    let path = format!("/mock/sse?events={ev}&gap_ms=0&size=256");
    let a = sse_streams(&plain.client, &plain.url(&path), n, ev, Duration::ZERO).await;
    let b = sse_streams(&tun.client, &tun.url(&path), n, ev, Duration::ZERO).await;
    r.kp(
        "tunnel_sse_events_s",
        &format!("via CONNECT tunnel: SSE {n}x{ev} events/s"),
        b.events_per_sec(),
        Some((no, a.events_per_sec())),
        0,
    );
    r.check(
        a.errors + b.errors == 0,
        format!(
            "SSE through the tunnel: {} + {} events lost",
            a.errors, b.errors
        ),
    );
    let (n, ev) = (scale.light_streams, scale.light_events);
    let path = format!("/mock/sse?events={ev}&gap_ms=5&size=128");
    let stagger = Duration::from_micros(500);
    let a = sse_streams(&plain.client, &plain.url(&path), n, ev, stagger).await;
    let b = sse_streams(&tun.client, &tun.url(&path), n, ev, stagger).await;
    r.kp(
        "tunnel_sse_ttfb_p99_us",
        &format!("via CONNECT tunnel: {n} streams, 5 ms gaps: TTFB p99 (us)"),
        b.ttfb.p(99.0),
        Some((no, a.ttfb.p(99.0))),
        0,
    );
    r.kp(
        "tunnel_sse_lag_p99_us",
        &format!("via CONNECT tunnel: {n} streams, 5 ms gaps: event lag p99 (us)"),
        b.lag.p(99.0),
        Some((no, a.lag.p(99.0))),
        0,
    );
    r.check(
        a.errors + b.errors == 0,
        format!(
            "slow SSE through the tunnel: {} + {} events lost",
            a.errors, b.errors
        ),
    );
    drop(tunneled);
}

/// Start-up, shutdown, binary size.
pub async fn lifecycle(r: &mut Report, env: &Env, scale: &Scale) {
    let ready = start_to_ready(env, scale.starts);
    r.kp(
        "ready_ms",
        &format!("exec to /ready 200: median of {} (ms)", scale.starts),
        ready.p(50.0) / 1000.0,
        None,
        2,
    );
    let (stop, complete) = sigterm_with_streams(env).await;
    r.kp(
        "sigterm_ms",
        "SIGTERM to exit, 10 SSE streams in flight (each ends ~200 ms in) (ms)",
        stop.as_secs_f64() * 1000.0,
        None,
        0,
    );
    r.check(
        complete == 10,
        format!("SIGTERM: only {complete} of 10 in-flight streams completed"),
    );
    let size = std::fs::metadata(keyproxy_bin())
        .map(|m| m.len())
        .unwrap_or(0);
    r.kp(
        "binary_mib",
        "release binary size (MiB)",
        size as f64 / (1 << 20) as f64,
        None,
        2,
    );
}
