//! The health signal cannot be starved: floods of idle and slow-header connections,
//! on the admin listener or on a provider listener, while `/ready` and `/live` are probed from
//! fresh connections, each of which must answer 200 within 1 s. The probe latencies seen are
//! printed (run with `--nocapture` to read them).

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use mock_upstream::{MockConfig, MockUpstream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

const IDLE: usize = 2_000;
const SLOW: usize = 200;
/// What every probe must stay under.
const PROBE_LIMIT: Duration = Duration::from_secs(1);
/// Between probes while a flood is on.
const PROBE_EVERY: Duration = Duration::from_millis(20);

/// The open-files limit this process has (soft), from `/proc/self/limits`.
fn open_files_limit() -> Option<usize> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// The floods hold about `IDLE + SLOW` client sockets, plus the proxy's own side.
fn enough_open_files() {
    let want = 2 * (IDLE + SLOW) + 1_000;
    if let Some(have) = open_files_limit() {
        assert!(
            have >= want,
            "these tests need about {want} open files and the limit is {have}: \
             run `ulimit -n 65536` first (scripts/test.sh raises it)"
        );
    }
}

/// Opens `n` connections to `addr`, 100 at a time.
async fn open(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    let mut conns = Vec::with_capacity(n);
    while conns.len() < n {
        let batch: Vec<_> = (0..100.min(n - conns.len()))
            .map(|_| tokio::spawn(TcpStream::connect(addr)))
            .collect();
        for b in batch {
            conns.push(b.await.unwrap().unwrap_or_else(|e| panic!("connect: {e}")));
        }
    }
    conns
}

/// `SLOW` connections that send the start of a request head, then one more byte of a header
/// that never ends every 500 ms, until `stop`; write errors (closed by the proxy) are ignored.
async fn slow_headers(addr: SocketAddr, stop: Arc<AtomicBool>) -> JoinHandle<usize> {
    let conns = open(addr, SLOW).await;
    tokio::spawn(async move {
        for c in &conns {
            let _ = c.try_write(b"GET /ready HTTP/1.1\r\nHost: x\r\nX-Slow: ");
        }
        while !stop.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(500)).await;
            for c in &conns {
                let _ = c.try_write(b"a");
            }
        }
        conns.len()
    })
}

/// One probe from a fresh connection: the status line, and how long it took (connect
/// included). Fails the test past `PROBE_LIMIT`.
async fn probe(addr: SocketAddr, path: &str) -> Duration {
    let start = Instant::now();
    let exchange = async {
        let mut s = TcpStream::connect(addr).await?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await?;
        let mut out = Vec::new();
        s.read_to_end(&mut out).await?;
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&out).into_owned())
    };
    let answer = tokio::time::timeout(PROBE_LIMIT, exchange)
        .await
        .unwrap_or_else(|_| panic!("GET {path} did not answer within {PROBE_LIMIT:?}"))
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let took = start.elapsed();
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "GET {path} during the flood: {answer}"
    );
    took
}

/// Waits until `/ready` answers 200 (every listener bound), within 5 s.
async fn wait_ready(admin: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while send(get(admin, "/ready")).await.status != 200 {
        assert!(Instant::now() < deadline, "never ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Probes `/ready` and `/live` alternately every `PROBE_EVERY` until `stop`.
fn probing(admin: SocketAddr, stop: Arc<AtomicBool>) -> JoinHandle<Vec<Duration>> {
    tokio::spawn(async move {
        let mut seen = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            seen.push(probe(admin, "/ready").await);
            seen.push(probe(admin, "/live").await);
            tokio::time::sleep(PROBE_EVERY).await;
        }
        seen
    })
}

/// The flood on `target` while the admin listener is probed: 2,000 idle connections, 200
/// slow-header ones, held for a while; then the idle ones closed and opened again (a client
/// that reopens what the proxy closed). Returns the probe latencies.
async fn flood_while_probing(admin: SocketAddr, target: SocketAddr) -> Vec<Duration> {
    let stop = Arc::new(AtomicBool::new(false));
    let probes = probing(admin, stop.clone());
    let idle = open(target, IDLE).await;
    let slow = slow_headers(target, stop.clone()).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    drop(idle);
    let idle = open(target, IDLE).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    let mut seen = probes.await.unwrap();
    assert_eq!(slow.await.unwrap(), SLOW);
    drop(idle);
    // And right after.
    seen.push(probe(admin, "/ready").await);
    seen.push(probe(admin, "/live").await);
    assert!(seen.len() >= 10, "only {} probes ran", seen.len());
    seen
}

fn report(what: &str, mut seen: Vec<Duration>) {
    seen.sort();
    let p50 = seen[seen.len() / 2];
    let max = seen[seen.len() - 1];
    write_stdout(&format!(
        "{what}: {} probes, each 200; latency p50 {p50:?}, max {max:?}\n",
        seen.len()
    ));
}

/// `keyproxy_connections_refused_total{listener=...,reason=...}` from `/metrics`.
async fn refused(admin: SocketAddr, listener: &str, reason: &str) -> u64 {
    let text = send(get(admin, "/metrics")).await.text();
    let series = format!(
        "keyproxy_connections_refused_total{{listener=\"{listener}\",reason=\"{reason}\"}} "
    );
    let line = text
        .lines()
        .find(|l| l.starts_with(&series))
        .unwrap_or_else(|| panic!("no {series} in\n{text}"));
    line[series.len()..].trim().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_flood_of_idle_and_slow_header_connections_never_starves_the_probes() {
    enough_open_files();
    let h = Harness::start(MockConfig::default(), "").await;
    wait_ready(h.admin).await;
    let seen = flood_while_probing(h.admin, h.admin).await;
    report("admin flood (2,000 idle + 200 slow-header)", seen);
    // Room was made by closing old connections, and counted.
    assert!(refused(h.admin, "admin", "evicted").await >= IDLE as u64);
    assert_eq!(refused(h.admin, "openai", "overloaded").await, 0);
    let logs = logs();
    assert!(
        logs.contains("\"reason\":\"evicted\""),
        "no eviction logged"
    );
    assert_no_canary(&logs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_flood_leaves_the_probes_alone_and_the_proxy_serves_after() {
    enough_open_files();
    let h = Harness::start(MockConfig::default(), "").await;
    wait_ready(h.admin).await;
    let seen = flood_while_probing(h.admin, h.openai()).await;
    report("provider flood (2,000 idle + 200 slow-header)", seen);
    // The provider listener refused what went over `limits.max_connections` (1024)...
    assert!(refused(h.admin, "openai", "overloaded").await > 0);
    // ... and the admin listener had nothing to do with it.
    assert_eq!(refused(h.admin, "admin", "evicted").await, 0);

    // Once the flood's connections are closed, a normal request is proxied.
    let deadline = Instant::now() + Duration::from_secs(10);
    let a = loop {
        let a = send(post(h.openai(), "/mock/echo", "{\"ok\":true}")).await;
        if a.status != 503 || Instant::now() > deadline {
            break a;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.json()["len"], 11);
    assert_no_canary(&logs());
}

/// `admin:` bounds are the admin listener's own: a tiny `limits.max_connections` does not
/// reach it, `admin.max_connections` does, and a probe still gets through past it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_bounds_are_its_own() {
    let mock = MockUpstream::start(MockConfig::default()).await.unwrap();
    let ca_file = std::env::temp_dir().join(format!(
        "kp-ca-admin-{}-{}.pem",
        std::process::id(),
        mock.addr().port()
    ));
    std::fs::write(&ca_file, mock.ca_pem()).unwrap();
    let text = format!(
        "admin: {{listen: 127.0.0.1:0, max_connections: 4, header_read_timeout: 1s, keep_alive_timeout: 1s}}\n\
         tls: {{roots: [webpki], extra_ca_file: '{}'}}\n\
         limits: {{max_connections: 2}}\n{}",
        ca_file.display(),
        default_providers(mock.addr())
    );
    let plan = llm_keyproxy::config::plan::Plan::from_yaml(&text, &env_lookup).unwrap();
    assert_eq!(plan.admin.max_connections, 4);
    assert_eq!(plan.admin.limits().max_connections, 4);
    assert_eq!(
        plan.admin.limits().header_read_timeout,
        Duration::from_secs(1)
    );
    let h = Harness::serve_plan(mock, plan, ca_file).await;
    wait_ready(h.admin).await;

    // Three idle connections: over the providers' cap, under the admin one: nobody evicted.
    let held = open(h.admin, 3).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    probe(h.admin, "/live").await;
    assert_eq!(refused(h.admin, "admin", "evicted").await, 0);
    // Ten more: the oldest make room, and probes still answer.
    let more = open(h.admin, 10).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    probe(h.admin, "/ready").await;
    assert!(refused(h.admin, "admin", "evicted").await >= 9);

    // The evicted ones were closed by the proxy; `header_read_timeout: 1s` closes the rest.
    let start = Instant::now();
    for mut s in held.into_iter().chain(more) {
        let mut buf = [0u8; 16];
        let n = tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf))
            .await
            .expect("an idle admin connection stayed open past header_read_timeout");
        assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
    }
    assert!(start.elapsed() < Duration::from_secs(3));
}
