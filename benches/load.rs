//! Load benchmarks through real loopback sockets: the same scenarios direct to the TLS mock
//! upstream, through llm-keyproxy (a release child process) and, when given, through peer
//! proxies (nginx, HAProxy: see benches/compare.sh), side by side in one run, with ratios.
//! Each scenario is one function in `benches/scenarios/`, run in the order of [`run_all`]; the
//! last ones are llm-keyproxy's alone (a CONNECT tunnel, start-up and shutdown, upstreams
//! that limit the streams per HTTP/2 connection: a cold burst and 10,000 held streams, and
//! `shared_state` on a local Redis next to the same proxy without).
//!
//! `cargo bench --bench load`; `KEYPROXY_BENCH_QUICK=1` for a seconds-long smoke run.
//! Environment (all optional):
//! - `KEYPROXY_BENCH_PEERS="nginx=127.0.0.1:P1,haproxy=127.0.0.1:P2"`: plain-HTTP listeners of
//!   peer proxies forwarding to the mock given by
//! - `KEYPROXY_BENCH_MOCK=127.0.0.1:PORT` and `KEYPROXY_BENCH_MOCK_CA=PATH` (an external
//!   `mock-upstream` binary; without them the mock runs inside this process);
//! - `KEYPROXY_BENCH_PEER_PIDS="nginx=/path/nginx.pid,haproxy=1234"`: a pidfile or pid per peer;
//!   that process and its descendants are measured (CPU, RSS, PSS);
//! - `KEYPROXY_BENCH_KEY`: the key the proxies inject (default `sk-bench-not-a-real-key`);
//! - `KEYPROXY_BENCH_LATE_413="node"`: peers that answer 413 only after reading more than
//!   10 MiB of a body, not on its declared length: the 413 check becomes a note for them;
//! - `KEYPROXY_BENCH_NOTE`: lines added to the report (peer versions, settings);
//! - `KEYPROXY_BENCH_ONLY="limiting,sse"`: only these groups of scenarios (`support::GROUPS`);
//! - `KEYPROXY_BENCH_BIN=PATH`: the llm-keyproxy binary to measure (another build, an earlier
//!   commit) instead of the release build cargo made for the bench.
//!
//! Results: stdout, `target/bench-results.md` and `target/bench-results.json` (the chart script
//! `benches/chart.py` reads the latter). Exits 1 when a check failed (a lost, merged or
//! reordered SSE event, a failed or timed-out request, a wrong status) for direct or
//! llm-keyproxy, or when llm-keyproxy opened more upstream connections than a limiting upstream
//! needs (or put more streams on one than it allows). A peer's failure in a scenario is a note instead, and that peer's figures for
//! the scenario are left out (n/a): a slow or stuck peer neither hangs nor fails the bench
//! (every request has a timeout, `support::load::REQUEST_TIMEOUT`).

mod scenarios;
mod support;

use std::time::Instant;

use serde_json::json;
use support::*;

fn main() {
    let cfg = BenchConfig::from_env();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let started = Instant::now();
    let mut report = rt.block_on(run_all(&cfg));
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    report
        .meta
        .insert("loadavg_at_end".into(), json!(load.join(" ")));
    let start_load = report.meta["machine"]["loadavg_at_start"].clone();
    report.note(format!(
        "load average (1/5/15 min) at start {}, at end {}: the machine is shared; the bench and its targets alone keep about 2-3 tasks runnable, more means other work competed for the cores",
        start_load.as_str().unwrap_or("?"),
        load.join(" ")
    ));
    report.meta.insert(
        "duration_secs".into(),
        json!(started.elapsed().as_secs_f64().round()),
    );
    let md = report.markdown();
    println!("{md}");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
    let _ = std::fs::create_dir_all(&dir);
    let json = serde_json::to_string_pretty(&report.json()).expect("json");
    for (name, body) in [("bench-results.md", &md), ("bench-results.json", &json)] {
        let out = dir.join(name);
        if std::fs::write(&out, body).is_ok() {
            println!("(written to {})", out.display());
        }
    }
    if report.failed() {
        std::process::exit(1);
    }
}

/// Every scenario in order, against every target it applies to.
async fn run_all(cfg: &BenchConfig) -> Report {
    let scale = if cfg.quick {
        Scale::quick()
    } else {
        Scale::full()
    };
    let mut env = Env::start(cfg).await;
    let mut r = new_report(cfg, &env);
    let idle_rss = scenarios::memory::idle(&mut r, &env).await;
    let problems = env.preflight().await;
    if !problems.is_empty() {
        for p in problems {
            r.check(false, format!("preflight: {p}"));
        }
        return r;
    }
    if cfg.runs("small") {
        scenarios::small::one_connection(&mut r, &env, &scale).await;
        scenarios::small::fixed_rate_load(&mut r, &env, &scale).await;
        scenarios::small::connections_64(&mut r, &env, &scale).await;
    }
    if cfg.runs("sse") {
        scenarios::sse::full_speed(&mut r, &env, &scale).await;
        scenarios::sse::slow_streams(&mut r, &env, &scale).await;
    }
    if cfg.runs("signing") {
        scenarios::signing::signed_100k(&mut r, &env, &scale).await;
    }
    if cfg.runs("upload") {
        scenarios::upload::upload_and_413(&mut r, &env, &scale).await;
    }
    if cfg.runs("memory") {
        scenarios::memory::open_streams(&mut r, &mut env, &scale, &idle_rss).await;
    }
    if cfg.runs("tunnel") {
        scenarios::only::tunnel(&mut r, &env, &scale).await;
    }
    if cfg.runs("lifecycle") {
        scenarios::only::lifecycle(&mut r, &env, &scale).await;
    }
    if cfg.runs("limiting") {
        scenarios::limiting::cold_burst(&mut r, &env, &scale).await;
        scenarios::limiting::held_streams(&mut r, &env, &scale).await;
    }
    if cfg.runs("shared_state") {
        scenarios::shared::shared_state(&mut r, &env, &scale).await;
    }
    if cfg.runs("tracing") {
        scenarios::tracing::cost(&mut r, &env, &scale).await;
    }
    closing_notes(&mut r, cfg, &scale);
    if let Some(only) = &cfg.only {
        r.note(format!("KEYPROXY_BENCH_ONLY: only {}", only.join(", ")));
    }
    if let Some(bin) = std::env::var_os("KEYPROXY_BENCH_BIN") {
        r.note(format!(
            "llm-keyproxy binary: {} (KEYPROXY_BENCH_BIN)",
            std::path::Path::new(&bin).display()
        ));
    }
    r
}

/// An empty report with the columns (direct, llm-keyproxy, the peers) and the run's context.
fn new_report(cfg: &BenchConfig, env: &Env) -> Report {
    let names: Vec<String> = env.targets.iter().map(|t| t.name.clone()).collect();
    let peers: Vec<String> = cfg.peers.iter().map(|(n, _)| n.clone()).collect();
    let mut r = Report::new(cfg.quick, names, peers);
    r.meta.insert("machine".into(), procs::machine());
    r.meta.insert(
        "unix_time".into(),
        json!(std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)),
    );
    r.meta.insert(
        "mock".into(),
        json!(if cfg.mock.is_some() {
            "external"
        } else {
            "in-process"
        }),
    );
    if let Ok(notes) = std::env::var("KEYPROXY_BENCH_NOTE") {
        for note in notes.lines().filter(|l| !l.trim().is_empty()) {
            r.note(note.to_owned());
        }
    }
    r
}

/// How the figures were gathered, under the tables.
fn closing_notes(r: &mut Report, cfg: &BenchConfig, scale: &Scale) {
    r.note(format!(
        "{} round(s) of the small-request scenarios (target order rotated; median shown); {} requests per round at 1 connection, {} s at {}/s, {} s at 64 connections",
        scale.rounds, scale.small_n, scale.rate_secs, scale.rate, scale.tput_secs
    ));
    r.note("ratios in parentheses: the target's figure over direct; last column: llm-keyproxy's figure over the best peer's (below 1 is better for latency, CPU and memory, above 1 for throughput)".into());
    r.note(format!(
        "mock upstream: {}",
        if cfg.mock.is_some() {
            "external process (mock-upstream binary)"
        } else {
            "inside the bench process"
        }
    ));
}
