//! `shared_state` (docs/design.md §8c) on a local Redis: Redis's own round trip (PING, one
//! connection, measured in the same run), then the same proxy with and without
//! `shared_state`, both with a rate limit that never refuses (so every request is checked:
//! in memory, or by one EVALSHA in Redis). Targets: added p50 per request <= 1.3x Redis's
//! round trip; requests/s at 64 connections >= 0.8x the proxy without it.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::STATUS_PATH;
use crate::support::*;

const REDIS: &str = "/usr/bin/redis-server";

/// A `redis-server` for the scenario; killed when dropped.
struct RedisChild(Child);

impl Drop for RedisChild {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub async fn shared_state(r: &mut Report, env: &Env, scale: &Scale) {
    if !std::path::Path::new(REDIS).exists() {
        r.note("shared_state: skipped, /usr/bin/redis-server is missing".into());
        return;
    }
    let port = free_port();
    let redis = RedisChild(
        Command::new(REDIS)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server"),
    );
    let url = format!("redis://127.0.0.1:{port}");
    let Some(mut conn) = redis_conn(&url).await else {
        r.check(false, "shared_state: redis-server did not start".into());
        return;
    };
    let limit = ", rate_limit: {requests_per_minute: 1000000000}";
    let plain = ProxyProcess::spawn_with(&env.dir, &env.upstream, "", limit, &[], "local-limit");
    let shared = ProxyProcess::spawn_with(
        &env.dir,
        &env.upstream,
        "shared_state: {redis: env:BENCH_REDIS_URL, timeout: 1s, on_unavailable: deny}",
        limit,
        &[("BENCH_REDIS_URL", &url)],
        "shared-limit",
    );
    shared.wait_ready(Duration::from_secs(10));
    let (a, b) = (
        Target::keyproxy("llm-keyproxy", &plain),
        Target::keyproxy("llm-keyproxy + shared_state", &shared),
    );
    let n = scale.small_n;
    let rtt = redis_rtt(&mut conn, n).await;
    let la = latency_1conn(&a.client, &a.url(STATUS_PATH), n).await;
    let lb = latency_1conn(&b.client, &b.url(STATUS_PATH), n).await;
    let ta = closed_loop(&a.client, &a.url(STATUS_PATH), 64, scale.tput_secs).await;
    let tb = closed_loop(&b.client, &b.url(STATUS_PATH), 64, scale.tput_secs).await;
    let rtt_p50 = rtt.p(50.0);
    let added = lb.p(50.0) - la.p(50.0);
    let no = "without shared_state";
    r.kp(
        "redis_rtt_p50_us",
        "Redis PING round trip, 1 connection: p50 (us)",
        rtt_p50,
        None,
        1,
    );
    r.kp(
        "shared_1conn_p50_us",
        "with shared_state: 1 connection p50 (us)",
        lb.p(50.0),
        Some((no, la.p(50.0))),
        1,
    );
    r.kp(
        "shared_added_over_rtt",
        "with shared_state: added p50 / Redis round trip p50 (target <= 1.3)",
        added / rtt_p50,
        None,
        2,
    );
    r.kp(
        "shared_rps_64",
        "with shared_state: requests/s at 64 connections",
        tb.rps(),
        Some((no, ta.rps())),
        0,
    );
    r.kp(
        "shared_rps_ratio",
        "with shared_state: requests/s ratio at 64 connections (target >= 0.8)",
        tb.rps() / ta.rps(),
        None,
        2,
    );
    r.check(
        ta.errors + tb.errors == 0,
        format!(
            "shared_state: {} + {} failed requests at 64 connections",
            ta.errors, tb.errors
        ),
    );
    r.note(format!(
        "shared_state targets: added p50 {:.1} us = {:.2}x Redis's round trip ({}), requests/s {:.2}x without ({})",
        added,
        added / rtt_p50,
        if added <= 1.3 * rtt_p50 { "met" } else { "not met" },
        tb.rps() / ta.rps(),
        if tb.rps() >= 0.8 * ta.rps() { "met" } else { "not met" },
    ));
    drop(redis);
}

async fn redis_conn(url: &str) -> Option<redis::aio::MultiplexedConnection> {
    let client = redis::Client::open(url).ok()?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(c) = client.get_multiplexed_async_connection().await {
            return Some(c);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

/// `n` sequential PINGs (after a warm-up): microseconds each.
async fn redis_rtt(conn: &mut redis::aio::MultiplexedConnection, n: usize) -> Samples {
    for _ in 0..(n / 10).max(10) {
        let _: redis::RedisResult<String> = redis::cmd("PING").query_async(conn).await;
    }
    let mut s = Samples::default();
    for _ in 0..n {
        let t = Instant::now();
        let _: redis::RedisResult<String> = redis::cmd("PING").query_async(conn).await;
        s.v.push(t.elapsed().as_secs_f64() * 1e6);
    }
    s
}
