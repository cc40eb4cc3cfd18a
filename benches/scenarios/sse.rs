//! The SSE scenarios, every event of every stream parsed and checked (index in order, none
//! missing, none merged): streams at full speed (events/s, MB/s, proxy CPU per event), then slow
//! streams with 5 ms gaps at light load and with many streams started at once (TTFB and
//! per-event lag, and what each proxy adds to them).

use std::collections::HashMap;
use std::time::Duration;

use super::judge;
use crate::support::*;

/// SSE at full speed: every event checked.
pub async fn full_speed(r: &mut Report, env: &Env, scale: &Scale) {
    let (n, ev) = (scale.fast_streams, scale.fast_events);
    let path = format!("/mock/sse?events={ev}&gap_ms=0&size=256");
    for t in &env.targets {
        let cpu0 = t.cpu_secs();
        let s = sse_streams(&t.client, &t.url(&path), n, ev, Duration::ZERO).await;
        let label = format!("SSE {n}x{ev}x256B full speed");
        let keep = judge(
            r,
            t,
            s.errors == 0,
            format!(
                "{}: SSE full speed: {} events lost, merged, reordered or timed out",
                t.name, s.errors
            ),
        );
        let s = if keep { s } else { SseResult::missing() };
        r.set(
            "sse_fast_events_s",
            &format!("{label}: events/s"),
            Better::Higher,
            true,
            0,
            &t.name,
            s.events_per_sec(),
        );
        r.set(
            "sse_fast_mb_s",
            &format!("{label}: MB/s"),
            Better::Higher,
            true,
            1,
            &t.name,
            s.mb_per_sec(),
        );
        if let (Some(a), Some(b), true) = (cpu0, t.cpu_secs(), keep) {
            r.set(
                "sse_fast_cpu_us_per_event",
                &format!("{label}: proxy CPU per event (us)"),
                Better::Lower,
                false,
                2,
                &t.name,
                (b - a) / s.events.max(1) as f64 * 1e6,
            );
        }
    }
}

/// Slow streams (5 ms gaps): light load (starts spread over time), then 1,000 started at
/// once. A one-event pass first opens the client connections (no more than MAX_CONNECTING
/// at once: a burst of 1,000 connects overflows a slow peer's accept queue), so TTFB is the
/// proxy's forwarding, not the client's TCP connect (the upstream leg is each proxy's own:
/// its pool, or new TLS connections).
pub async fn slow_streams(r: &mut Report, env: &Env, scale: &Scale) {
    for (id, n, ev, stagger) in [
        (
            "sse_light",
            scale.light_streams,
            scale.light_events,
            Duration::from_micros(500),
        ),
        (
            "sse_many",
            scale.slow_streams,
            scale.slow_events,
            Duration::ZERO,
        ),
    ] {
        let path = format!("/mock/sse?events={ev}&gap_ms=5&size=128");
        let warm = "/mock/sse?events=1&gap_ms=0&size=128";
        let mut got = HashMap::new();
        for t in &env.targets {
            let _ = warm_connections(&t.client, &t.url(warm), n).await;
            let s = sse_streams(&t.client, &t.url(&path), n, ev, stagger).await;
            let keep = judge(
                r,
                t,
                s.errors == 0,
                format!(
                    "{}: {n} streams x {ev} events, 5 ms gaps: {} events lost, merged, reordered or timed out",
                    t.name, s.errors
                ),
            );
            let s = if keep { s } else { SseResult::missing() };
            got.insert(
                t.name.clone(),
                [s.ttfb.p(50.0), s.ttfb.p(99.0), s.lag.p(50.0), s.lag.p(99.0)],
            );
        }
        let what = ["TTFB p50", "TTFB p99", "event lag p50", "event lag p99"];
        let keys = ["ttfb_p50", "ttfb_p99", "lag_p50", "lag_p99"];
        for t in &env.targets {
            for i in 0..4 {
                let v = got[&t.name][i];
                r.set(
                    &format!("{id}_{}_us", keys[i]),
                    &format!("{n} streams, 5 ms gaps: {} (us)", what[i]),
                    Better::Lower,
                    true,
                    0,
                    &t.name,
                    v,
                );
            }
        }
        for t in env.targets.iter().filter(|t| t.is_proxy()) {
            for i in 0..4 {
                let v = got[&t.name][i] - got[DIRECT][i];
                r.set(
                    &format!("{id}_added_{}_us", keys[i]),
                    &format!("{n} streams, 5 ms gaps: added {} (us)", what[i]),
                    Better::Lower,
                    false,
                    0,
                    &t.name,
                    v,
                );
            }
        }
    }
}
