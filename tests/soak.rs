//! A bounded soak: mixed plain and streaming load, uploads, and random client aborts
//! against the in-process proxy for `KEYPROXY_SOAK_SECS` (default 20; CI sets 120; longer by
//! hand). Ignored by a plain `cargo test`: run it with
//! `KEYPROXY_SOAK_SECS=20 cargo test --release --test soak -- --ignored --nocapture`. Asserts no error beyond the injected aborts, RSS flat (the proxy shares this process:
//! the mean RSS of the last quarter may exceed the first quarter's by at most
//! `RSS_GROWTH_BOUND`), and no file-descriptor leak. Prints the figures.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http_body_util::BodyExt;
use mock_upstream::MockConfig;

/// Allowed RSS growth between the first and the last quarter of the run.
const RSS_GROWTH_BOUND: u64 = 20 << 20;
/// Allowed extra open file descriptors after the load, once connections have closed.
const FD_SLACK: usize = 8;
const WORKERS: usize = 12;

/// xorshift64: enough randomness for a load mix, no extra crate.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[derive(Default)]
struct Tally {
    plain: AtomicU64,
    streams: AtomicU64,
    uploads: AtomicU64,
    aborts: AtomicU64,
    errors: AtomicU64,
}

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

/// One request of the mix; `Err` is an error that was not injected.
async fn one(
    h: &Harness,
    c: &hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        http_body_util::Full<Bytes>,
    >,
    rng: &mut Rng,
    tally: &Tally,
) -> Result<(), String> {
    let roll = rng.below(100);
    let status_of = |r: &http::Response<hyper::body::Incoming>| r.status().as_u16();
    match roll {
        // Plain JSON completion.
        0..=34 => {
            let resp = c
                .request(post(
                    h.openai(),
                    "/v1/chat/completions",
                    r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#,
                ))
                .await
                .map_err(|e| e.to_string())?;
            let a = collect(resp).await;
            if a.status != 200 || a.json()["choices"][0]["message"]["content"].is_null() {
                return Err(format!("plain: {} {}", a.status, a.text()));
            }
            tally.plain.fetch_add(1, Ordering::Relaxed);
        }
        // Streaming completions, OpenAI or Anthropic shaped.
        35..=59 => {
            let (addr, path, body, last) = if roll % 2 == 0 {
                (
                    h.openai(),
                    "/v1/chat/completions",
                    r#"{"model":"gpt-4o-mini","stream":true,"messages":[]}"#,
                    "data: [DONE]",
                )
            } else {
                (
                    h.anthropic(),
                    "/v1/messages",
                    r#"{"model":"claude-x","stream":true,"max_tokens":5,"messages":[]}"#,
                    "message_stop",
                )
            };
            let mut req = post(addr, path, body);
            req.headers_mut()
                .insert("x-mock-gap-ms", http::HeaderValue::from_static("5"));
            let resp = c.request(req).await.map_err(|e| e.to_string())?;
            if status_of(&resp) != 200 {
                return Err(format!("stream: {}", collect(resp).await.text()));
            }
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| format!("stream cut: {e}"))?
                .to_bytes();
            if !String::from_utf8_lossy(&body).contains(last) {
                return Err(format!("stream without its end: {body:?}"));
            }
            tally.streams.fetch_add(1, Ordering::Relaxed);
        }
        // Upload of up to 512 KiB, echoed by hash.
        60..=74 => {
            let len = 1 + rng.below(512 * 1024) as usize;
            let body = vec![b'u'; len];
            let resp = c
                .request(post(h.openai(), "/mock/echo", body))
                .await
                .map_err(|e| e.to_string())?;
            let a = collect(resp).await;
            if a.status != 200 || a.json()["len"] != len as u64 {
                return Err(format!("upload: {} {}", a.status, a.text()));
            }
            tally.uploads.fetch_add(1, Ordering::Relaxed);
        }
        // Injected fault: the client reads a few events of a long stream and goes away.
        _ => {
            let resp = c
                .request(get(h.openai(), "/mock/sse?events=200&gap_ms=10"))
                .await
                .map_err(|e| e.to_string())?;
            if status_of(&resp) != 200 {
                return Err(format!("abort: {}", collect(resp).await.text()));
            }
            let mut body = resp.into_body();
            for _ in 0..1 + rng.below(5) {
                match body.frame().await {
                    Some(Ok(_)) => {}
                    other => return Err(format!("abort stream ended early: {other:?}")),
                }
            }
            drop(body);
            tally.aborts.fetch_add(1, Ordering::Relaxed);
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "minutes long: scripts/test.sh runs it when KEYPROXY_SOAK_SECS is set (CI: 120)"]
async fn soak_mixed_load_with_client_aborts() {
    let secs: u64 = std::env::var("KEYPROXY_SOAK_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let h = Arc::new(
        Harness::start(
            MockConfig {
                sse_gap: Duration::from_millis(5),
                ..MockConfig::default()
            },
            "",
        )
        .await,
    );
    // Warm up: the upstream connections and the allocator's arenas exist before measuring.
    let warm = client();
    for _ in 0..20 {
        let a = collect(
            warm.request(post(h.openai(), "/mock/echo", vec![b'w'; 64 * 1024]))
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(a.status, 200);
    }
    let a = collect(
        warm.request(post(h.anthropic(), "/v1/messages", r#"{"stream":true}"#))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(a.status, 200);
    drop(warm);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let fds_before = open_fds();

    let tally = Arc::new(Tally::default());
    let start = Instant::now();
    let deadline = start + Duration::from_secs(secs);
    let mut workers = Vec::new();
    for w in 0..WORKERS {
        let h = h.clone();
        let tally = tally.clone();
        workers.push(tokio::spawn(async move {
            let mut rng = Rng(0x2545_f491_4f6c_dd1d ^ ((w as u64 + 1) * 0x9e37_79b9));
            let c = client();
            let mut first_error = None;
            while Instant::now() < deadline {
                if let Err(e) = one(&h, &c, &mut rng, &tally).await {
                    tally.errors.fetch_add(1, Ordering::Relaxed);
                    first_error.get_or_insert(e);
                }
            }
            first_error
        }));
    }
    // Sample RSS; keep the mock's request records (test bookkeeping, not the proxy) empty.
    let mut samples = Vec::new();
    while Instant::now() < deadline {
        h.mock.clear();
        samples.push((start.elapsed(), rss_bytes()));
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let mut errors = Vec::new();
    for w in workers {
        if let Some(e) = w.await.unwrap() {
            errors.push(e);
        }
    }
    h.mock.clear();

    // Connections close once the clients are gone; give the proxy a moment to see it.
    let settle = Instant::now() + Duration::from_secs(5);
    while open_fds() > fds_before + FD_SLACK && Instant::now() < settle {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let fds_after = open_fds();

    let quarter = samples.len() / 4;
    let mean =
        |s: &[(Duration, u64)]| s.iter().map(|(_, r)| r).sum::<u64>() / s.len().max(1) as u64;
    let first = mean(&samples[..quarter.max(1)]);
    let last = mean(&samples[samples.len() - quarter.max(1)..]);
    let peak = samples.iter().map(|(_, r)| *r).max().unwrap_or(0);
    let t = &tally;
    let total = t.plain.load(Ordering::Relaxed)
        + t.streams.load(Ordering::Relaxed)
        + t.uploads.load(Ordering::Relaxed)
        + t.aborts.load(Ordering::Relaxed);
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    write_stdout(&format!(
        "soak: {secs} s, {WORKERS} workers: {total} requests ({:.0}/s): {} plain, {} streams, {} uploads, {} client aborts; {} errors\n\
         soak: RSS first quarter {:.1} MiB, last quarter {:.1} MiB (growth {:+.1} MiB, bound {:.0} MiB), peak {:.1} MiB\n\
         soak: fds before {fds_before}, after {fds_after} (slack {FD_SLACK})\n",
        total as f64 / secs as f64,
        t.plain.load(Ordering::Relaxed),
        t.streams.load(Ordering::Relaxed),
        t.uploads.load(Ordering::Relaxed),
        t.aborts.load(Ordering::Relaxed),
        t.errors.load(Ordering::Relaxed),
        mib(first),
        mib(last),
        mib(last) - mib(first),
        mib(RSS_GROWTH_BOUND),
        mib(peak),
    ));
    assert!(
        errors.is_empty(),
        "errors beyond the injected aborts: {errors:?}"
    );
    assert!(total > secs * 10, "too little load: {total}");
    assert!(
        last <= first + RSS_GROWTH_BOUND,
        "RSS grew {:.1} MiB",
        mib(last) - mib(first)
    );
    assert!(
        fds_after <= fds_before + FD_SLACK,
        "file descriptors leaked: {fds_before} -> {fds_after}"
    );
    // The proxy still serves, and nothing printed holds the key.
    let a = send(post(h.openai(), "/mock/echo", "{}")).await;
    assert_eq!(a.status, 200);
    assert_no_canary(&logs());
}
