//! `shared_state` (docs/design.md §8c) against real `redis-server` processes started here on
//! free ports (`--save '' --appendonly no`), never a mock, and real proxy processes (the
//! binary): one rate limit and one budget across three replicas; Redis killed and restarted
//! under each `on_unavailable`; down at start; slow (DEBUG SLEEP); failover to a promoted
//! replica behind an address we move; `rediss://` with the proxy's roots; the admission
//! script's answers; the Redis password never in any output.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{assert_no_canary, client, collect, get, metric_value, send, Answer, CANARY};
use http::Request;
use http_body_util::Full;
use mock_upstream::{MockConfig, MockUpstream};

const REDIS: &str = "/usr/bin/redis-server";
/// The Redis password: must appear in no output, answer or metric.
const PASSWORD: &str = "rpwCANARY7c3d9e41";
/// Tokens of one mock chat answer with `x-mock-chunks: 4`: 11 prompt + 4 completion.
const TOKENS: u64 = 15;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Configs, certificates and the proxies' output, under `target/test-logs/` (where
/// `scripts/test.sh` greps every log for the canary key).
fn tmp(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target/test-logs/shared_state")
        .join(std::process::id().to_string());
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// A `redis-server` we started; killed (SIGKILL, by its pid) when dropped.
struct RedisServer {
    port: u16,
    child: Option<Child>,
    args: Vec<String>,
}

impl RedisServer {
    fn start(port: u16, extra: &[&str]) -> RedisServer {
        let mut r = RedisServer {
            port,
            child: None,
            args: extra.iter().map(|s| s.to_string()).collect(),
        };
        r.restart();
        r
    }

    fn restart(&mut self) {
        let child = Command::new(REDIS)
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            // A replica's full sync writes an RDB file: never into the checkout.
            .arg("--dir")
            .arg(std::env::temp_dir())
            .args(["--requirepass", PASSWORD, "--masterauth", PASSWORD])
            .args(["--enable-debug-command", "yes"])
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.conn().is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn conn(&self) -> redis::RedisResult<redis::Connection> {
        let url = format!("redis://:{PASSWORD}@127.0.0.1:{}", self.port);
        let c = redis::Client::open(url)?;
        let mut conn = c.get_connection_with_timeout(Duration::from_secs(1))?;
        redis::cmd("PING").query::<String>(&mut conn)?;
        Ok(conn)
    }

    fn cmd<T: redis::FromRedisValue>(&self, args: &[&str]) -> T {
        let mut c = redis::cmd(args[0]);
        for a in &args[1..] {
            c.arg(*a);
        }
        c.query(&mut self.conn().unwrap()).unwrap()
    }

    fn url(&self) -> String {
        format!("redis://:{PASSWORD}@127.0.0.1:{}", self.port)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Skips (noted) when the Debian package is not installed; fails instead under `.ci/run`
/// (`KEYPROXY_REQUIRE_REDIS=1`).
fn have_redis() -> bool {
    if std::path::Path::new(REDIS).exists() {
        return true;
    }
    if std::env::var("KEYPROXY_REQUIRE_REDIS").as_deref() == Ok("1") {
        panic!("{REDIS} is missing and KEYPROXY_REQUIRE_REDIS=1");
    }
    common::note_skipped("redis-server is not installed (apt-get install redis-server)");
    false
}

/// A proxy process (the binary) with its own config; stdout and stderr kept in files.
struct Proxy {
    child: Child,
    admin: SocketAddr,
    openai: SocketAddr,
    budgeted: SocketAddr,
    out: PathBuf,
}

impl Proxy {
    /// `shared` is the `shared_state:` body; the URL comes from the environment.
    fn spawn(
        name: &str,
        mock: &MockUpstream,
        ca: &std::path::Path,
        url: &str,
        shared: &str,
    ) -> Proxy {
        let (admin, openai, budgeted) = (free_port(), free_port(), free_port());
        let m = mock.addr();
        let config = format!(
            "admin: {{listen: '127.0.0.1:{admin}'}}
tls: {{roots: [webpki], extra_ca_file: '{}'}}
shared_state: {{redis: env:KP_REDIS_URL, {shared}}}
providers:
  openai: {{listen: '127.0.0.1:{openai}', api_key: env:KP_TEST_KEY, upstream_address: '{m}', rate_limit: {{requests_per_minute: 6}}}}
  budgeted: {{preset: openai, listen: '127.0.0.1:{budgeted}', api_key: env:KP_TEST_KEY, upstream_address: '{m}', budget: {{tokens_total: 100}}}}
",
            ca.display()
        );
        let file = tmp(&format!("{name}.yaml"));
        std::fs::write(&file, config).unwrap();
        let out = tmp(&format!("{name}.log"));
        let log = std::fs::File::create(&out).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_llm-keyproxy"))
            .arg("--config")
            .arg(&file)
            .env("KP_TEST_KEY", CANARY)
            .env("KP_REDIS_URL", url)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        Proxy {
            child,
            admin: SocketAddr::from(([127, 0, 0, 1], admin)),
            openai: SocketAddr::from(([127, 0, 0, 1], openai)),
            budgeted: SocketAddr::from(([127, 0, 0, 1], budgeted)),
            out,
        }
    }

    /// Waits until the admin listener answers `/live` (not `/ready`: deny may hold it 503).
    async fn started(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let r = tokio::time::timeout(
                Duration::from_secs(2),
                client().request(get(self.admin, "/live")),
            )
            .await;
            if let Ok(Ok(resp)) = r {
                if resp.status() == 200 {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "proxy did not start: {}",
                self.output()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn metrics(&self) -> String {
        common::metrics_text(self.admin).await
    }

    async fn ready(&self) -> u16 {
        send(get(self.admin, "/ready")).await.status
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    fn events(&self, event: &str) -> Vec<serde_json::Value> {
        self.output()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["event"] == event || v["fields"]["event"] == event)
            .collect()
    }

    /// Waits (bounded) until `/metrics` says the store is up.
    async fn wait_up(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while metric_value(&self.metrics().await, UP) != 1.0 {
            assert!(Instant::now() < deadline, "store not up: {}", self.output());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const UP: &str = r#"keyproxy_shared_state_up{store="redis"}"#;

fn chat(addr: SocketAddr, stream: bool) -> Request<Full<Bytes>> {
    let body = if stream {
        r#"{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hi"}]}"#
    } else {
        r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#
    };
    Request::post(format!("http://{addr}/v1/chat/completions"))
        .header("content-type", "application/json")
        .header("x-mock-chunks", "4")
        .header("x-mock-gap-ms", "15")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap()
}

/// One request and how long the answer took (head and body).
async fn timed(req: Request<Full<Bytes>>) -> (Answer, Duration) {
    let start = Instant::now();
    let resp = tokio::time::timeout(Duration::from_secs(30), client().request(req))
        .await
        .expect("no answer in 30 s")
        .unwrap();
    let a = collect(resp).await;
    (a, start.elapsed())
}

async fn mock_and_ca() -> (MockUpstream, PathBuf) {
    let mock = MockUpstream::start(MockConfig::default()).await.unwrap();
    let ca = tmp(&format!("ca-{}.pem", mock.addr().port()));
    std::fs::write(&ca, mock.ca_pem()).unwrap();
    (mock, ca)
}

/// Every output the test can see holds neither the Redis password nor the key.
fn assert_clean(text: &str) {
    assert!(!text.contains(PASSWORD), "Redis password leaked:\n{text}");
    assert!(
        !text.contains("CANARY7c3d"),
        "Redis password leaked:\n{text}"
    );
    assert_no_canary(text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_replicas_share_one_rate_limit_and_one_budget() {
    if !have_redis() {
        return;
    }
    let redis = RedisServer::start(free_port(), &[]);
    let (mock, ca) = mock_and_ca().await;
    let shared = "key_prefix: three, timeout: 500ms, on_unavailable: deny";
    let proxies: Vec<Proxy> = (0..3)
        .map(|i| Proxy::spawn(&format!("three-{i}"), &mock, &ca, &redis.url(), shared))
        .collect();
    for p in &proxies {
        p.started().await;
        p.wait_up().await;
        assert_eq!(p.ready().await, 200);
    }

    // 6 requests per minute across three replicas: 18 at once, exactly 6 get through.
    let mut set = tokio::task::JoinSet::new();
    for i in 0..18 {
        let addr = proxies[i % 3].openai;
        set.spawn(async move { timed(chat(addr, i % 2 == 0)).await.0 });
    }
    let mut statuses = Vec::new();
    while let Some(a) = set.join_next().await {
        let a = a.unwrap();
        if a.status == 429 {
            let v = a.json();
            assert_eq!(v["error"]["type"], "rate_limit_error", "{v}");
            assert!(a.headers.contains_key("retry-after"));
            assert_eq!(a.headers["x-ratelimit-limit"], "6");
        }
        statuses.push(a.status);
    }
    let ok = statuses.iter().filter(|s| **s == 200).count();
    let limited = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!((ok, limited), (6, 12), "{statuses:?}");
    assert_eq!(
        mock.requests().len(),
        6,
        "the upstream saw exactly the admitted ones"
    );

    // tokens_total 100 across three replicas, 6 clients (2 per replica, streamed and plain)
    // racing the last tokens. A request is in flight from its admission until its charge
    // lands (one round trip after its body ends), so a client holds at most 2 uncharged
    // requests: overshoot <= 6 clients x 2 x 15 tokens; spent = 15 x admitted exactly.
    let mut set = tokio::task::JoinSet::new();
    for c in 0..6 {
        let addr = proxies[c % 3].budgeted;
        set.spawn(async move {
            let mut admitted = 0u64;
            loop {
                let (a, _) = timed(chat(addr, c % 2 == 0)).await;
                match a.status {
                    200 => admitted += 1,
                    429 => {
                        assert_eq!(a.json()["error"]["type"], "budget_exhausted");
                        return admitted;
                    }
                    s => panic!("status {s}: {}", a.text()),
                }
            }
        });
    }
    let mut admitted = 0;
    while let Some(n) = set.join_next().await {
        admitted += n.unwrap();
    }
    // Charges are spawned at completion: give the last ones their round trip.
    let total_key = "{three}:budget:provider:budgeted:total";
    let deadline = Instant::now() + Duration::from_secs(10);
    let spent = loop {
        let spent: u64 = redis.cmd::<Option<u64>>(&["GET", total_key]).unwrap_or(0);
        if spent == admitted * TOKENS || Instant::now() > deadline {
            break spent;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let bound = 100 - 1 + 6 * 2 * TOKENS;
    println!("budget: {admitted} admitted, {spent} tokens spent of 100 (bound {bound})");
    assert_eq!(
        spent,
        admitted * TOKENS,
        "every admitted request charged exactly once"
    );
    assert!(spent >= 100, "the budget was reached: {spent}");
    assert!(
        spent <= bound,
        "overshoot beyond the in-flight bound: {spent} > {bound}"
    );
    for p in &proxies {
        let (a, _) = timed(chat(p.budgeted, false)).await;
        assert_eq!(a.status, 429, "{}", a.text());
        let m = p.metrics().await;
        assert_eq!(
            metric_value(&m, r#"keyproxy_shared_state_fallbacks_total{mode="deny"}"#),
            0.0
        );
        assert_eq!(
            metric_value(
                &m,
                r#"keyproxy_shared_state_uncharged_tokens_total{store="redis"}"#
            ),
            0.0
        );
    }
    // /health on a replica shows the shared view: every replica's spend.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let health = send(get(proxies[0].openai, "/health")).await;
    let v = health.json();
    let shared = &v["shared_state"];
    assert_eq!(shared["connected"], true, "{v}");
    assert_eq!(
        shared["view"]["provider:budgeted"]["total"]["used"], spent,
        "{v}"
    );
    assert_eq!(
        shared["view"]["rate_limit:openai"]["requests_per_minute"]["used"], 6,
        "{v}"
    );
    // So does /metrics on every replica, whichever served the requests.
    for p in &proxies {
        let m = p.metrics().await;
        let rpm = r#"{scope="rate_limit",name="openai",window="requests_per_minute"}"#;
        assert_eq!(
            metric_value(&m, &format!("keyproxy_shared_window_used{rpm}")),
            6.0,
            "{m}"
        );
        assert_eq!(
            metric_value(&m, &format!("keyproxy_shared_window_remaining{rpm}")),
            0.0
        );
        assert!(metric_value(&m, &format!("keyproxy_shared_window_reset_seconds{rpm}")) > 0.0);
        let total = r#"{scope="provider",name="budgeted",window="total"}"#;
        assert_eq!(
            metric_value(&m, &format!("keyproxy_budget_spent_tokens{total}")),
            spent as f64
        );
        assert_clean(&p.output());
        assert_clean(&m);
    }
    assert_clean(&health.text());
}

/// Redis killed mid-run and restarted empty, under one `on_unavailable` mode: what requests
/// get while it is down, bounded waits, one WARN and one INFO per episode, the counters.
async fn kill_and_restart(mode: &str) {
    let mut redis = RedisServer::start(free_port(), &[]);
    let (mock, ca) = mock_and_ca().await;
    let timeout_ms = 200;
    let shared =
        format!("key_prefix: fault-{mode}, timeout: {timeout_ms}ms, on_unavailable: {mode}");
    let p = Proxy::spawn(&format!("fault-{mode}"), &mock, &ca, &redis.url(), &shared);
    p.started().await;
    p.wait_up().await;
    let (a, _) = timed(chat(p.openai, false)).await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(
        redis
            .cmd::<std::collections::HashMap<String, u64>>(&[
                "HGETALL",
                &format!("{{fault-{mode}}}:rate:openai:requests_per_minute")
            ])
            .values()
            .sum::<u64>(),
        1
    );

    redis.kill();
    let mut got = Vec::new();
    for stream in [false, true, false, true, false, false, false, false] {
        let (a, took) = timed(chat(p.openai, stream)).await;
        // Never waits on Redis longer than the timeout (plus the upstream's own time).
        assert!(took < Duration::from_millis(timeout_ms + 3000), "{took:?}");
        if a.status == 503 {
            let v = a.json();
            assert_eq!(v["error"]["type"], "shared_state_unavailable", "{v}");
            assert_eq!(v["error"]["retryable"], true);
            assert_eq!(a.headers["retry-after"], "1");
        }
        got.push(a.status);
    }
    match mode {
        "deny" => assert_eq!(got, vec![503; 8]),
        "allow" => assert_eq!(got, vec![200; 8]),
        // This replica's own limiter: 6 per minute, which counted the shared request too.
        _ => assert_eq!(got, [vec![200; 5], vec![429; 3]].concat()),
    }
    let m = p.metrics().await;
    assert_eq!(metric_value(&m, UP), 0.0);
    assert_eq!(
        metric_value(
            &m,
            &format!(r#"keyproxy_shared_state_fallbacks_total{{mode="{mode}"}}"#)
        ),
        8.0,
        "{m}"
    );
    assert!(
        metric_value(
            &m,
            r#"keyproxy_shared_state_errors_total{op="admit",kind="error"}"#
        ) + metric_value(
            &m,
            r#"keyproxy_shared_state_errors_total{op="admit",kind="timeout"}"#
        ) >= 8.0,
        "{m}"
    );
    if mode == "deny" {
        assert_eq!(p.ready().await, 503);
    } else {
        assert_eq!(p.ready().await, 200);
    }
    // Budgets while Redis is down: admitted by allow and local (this replica's budget), and
    // their charges, sent once, fail: counted in tokens, never silent, never retried.
    let mut admitted = 0;
    for stream in [false, true] {
        let (a, _) = timed(chat(p.budgeted, stream)).await;
        admitted += u64::from(a.status == 200);
    }
    assert_eq!(admitted, if mode == "deny" { 0 } else { 2 });
    let uncharged = r#"keyproxy_shared_state_uncharged_tokens_total{store="redis"}"#;
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric_value(&p.metrics().await, uncharged) != (admitted * TOKENS) as f64 {
        assert!(Instant::now() < deadline, "{}", p.metrics().await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    redis.restart();
    p.wait_up().await;
    assert_eq!(p.ready().await, 200);
    // Restarted empty: the window starts again, shared.
    for _ in 0..6 {
        let (a, _) = timed(chat(p.openai, false)).await;
        assert_eq!(a.status, 200, "{}", a.text());
    }
    let (a, _) = timed(chat(p.openai, false)).await;
    assert_eq!(a.status, 429, "{}", a.text());

    let down = p.events("shared_state_unavailable");
    let back = p.events("shared_state_recovered");
    assert_eq!(down.len(), 1, "one WARN per episode: {}", p.output());
    assert_eq!(back.len(), 1, "one INFO per episode: {}", p.output());
    let line = serde_json::to_string(&back[0]).unwrap();
    assert!(
        line.contains(&format!("\"on_unavailable\":\"{mode}\"")),
        "{line}"
    );
    assert!(
        line.contains("\"fallbacks\":10"),
        "8 chats and 2 budgeted: {line}"
    );
    let m = p.metrics().await;
    assert_clean(&p.output());
    assert_clean(&m);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_and_restarted_deny() {
    if have_redis() {
        kill_and_restart("deny").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_and_restarted_allow() {
    if have_redis() {
        kill_and_restart("allow").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_and_restarted_local() {
    if have_redis() {
        kill_and_restart("local").await;
    }
}

/// Down at start: the proxy starts, `/ready` is 503 under `deny` and requests get 503; when
/// Redis comes up, both turn. Then a slow Redis (DEBUG SLEEP): answers within the timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn down_at_start_then_slow() {
    if !have_redis() {
        return;
    }
    let port = free_port();
    let (mock, ca) = mock_and_ca().await;
    let url = format!("redis://:{PASSWORD}@127.0.0.1:{port}");
    let shared = "key_prefix: start, timeout: 100ms, on_unavailable: deny";
    let p = Proxy::spawn("down-at-start", &mock, &ca, &url, shared);
    p.started().await;
    assert_eq!(p.ready().await, 503);
    let body = send(get(p.admin, "/ready")).await.text();
    assert!(body.contains("shared_state_unavailable"), "{body}");
    let (a, _) = timed(chat(p.openai, false)).await;
    assert_eq!(a.status, 503, "{}", a.text());

    let redis = RedisServer::start(port, &[]);
    p.wait_up().await;
    assert_eq!(p.ready().await, 200);
    let (a, _) = timed(chat(p.openai, false)).await;
    assert_eq!(a.status, 200, "{}", a.text());

    // Redis blocked for 3 s: the request is answered (503, deny) within the timeout's reach.
    let port = redis.port;
    let sleeper = std::thread::spawn(move || {
        let url = format!("redis://:{PASSWORD}@127.0.0.1:{port}");
        let mut c = redis::Client::open(url).unwrap().get_connection().unwrap();
        let _: redis::RedisResult<String> = redis::cmd("DEBUG").arg("SLEEP").arg("3").query(&mut c);
    });
    // Until Redis stops answering (the sleep has begun), as a client would see it.
    let deadline = Instant::now() + Duration::from_secs(10);
    while answers_within(port, Duration::from_millis(200)) {
        assert!(Instant::now() < deadline, "DEBUG SLEEP never took hold");
    }
    let (a, took) = timed(chat(p.openai, false)).await;
    assert_eq!(a.status, 503, "{}", a.text());
    assert!(
        took < Duration::from_millis(2000),
        "waited {took:?} on a sleeping Redis"
    );
    sleeper.join().unwrap();
    p.wait_up().await;
    let m = p.metrics().await;
    assert!(
        metric_value(
            &m,
            r#"keyproxy_shared_state_errors_total{op="admit",kind="timeout"}"#
        ) >= 1.0,
        "{m}"
    );
    let (a, _) = timed(chat(p.openai, false)).await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_clean(&p.output());
    assert_clean(&m);
}

/// True when Redis answers a PING (any reply, even NOAUTH) within `limit`.
fn answers_within(port: u16, limit: Duration) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(limit));
    let mut buf = [0u8; 64];
    s.write_all(b"PING\r\n").is_ok() && matches!(s.read(&mut buf), Ok(n) if n > 0)
}

/// A TCP address we move from one Redis to another, as a VIP, DNS name or Sentinel-managed
/// address would: moving closes the connections through it.
struct Forwarder {
    addr: SocketAddr,
    target: Arc<Mutex<SocketAddr>>,
    conns: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    _accept: tokio::task::JoinHandle<()>,
}

impl Forwarder {
    async fn start(target: SocketAddr) -> Forwarder {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let target = Arc::new(Mutex::new(target));
        let conns: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>> = Arc::default();
        let (t, c) = (target.clone(), conns.clone());
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let to = *t.lock().unwrap();
                c.lock().unwrap().push(tokio::spawn(async move {
                    if let Ok(mut out) = tokio::net::TcpStream::connect(to).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                    }
                }));
            }
        });
        Forwarder {
            addr,
            target,
            conns,
            _accept: accept,
        }
    }

    fn move_to(&self, target: SocketAddr) {
        *self.target.lock().unwrap() = target;
        for c in self.conns.lock().unwrap().drain(..) {
            c.abort();
        }
    }
}

/// Failover: the primary dies, its replica is promoted and the address moves to it; the
/// proxy reconnects by itself and the counts replicated so far still hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_to_a_promoted_replica() {
    if !have_redis() {
        return;
    }
    let mut primary = RedisServer::start(free_port(), &[]);
    let pport = primary.port.to_string();
    let replica = RedisServer::start(free_port(), &["--replicaof", "127.0.0.1", &pport]);
    let fwd = Forwarder::start(SocketAddr::from(([127, 0, 0, 1], primary.port))).await;
    let (mock, ca) = mock_and_ca().await;
    let url = format!("redis://:{PASSWORD}@{}", fwd.addr);
    let shared = "key_prefix: failover, timeout: 200ms, on_unavailable: deny";
    let p = Proxy::spawn("failover", &mock, &ca, &url, shared);
    p.started().await;
    p.wait_up().await;
    for _ in 0..4 {
        let (a, _) = timed(chat(p.openai, false)).await;
        assert_eq!(a.status, 200, "{}", a.text());
    }
    let synced: i64 = primary.cmd(&["WAIT", "1", "5000"]);
    assert_eq!(synced, 1, "the replica has the counts");

    primary.kill();
    let _: String = replica.cmd(&["REPLICAOF", "NO", "ONE"]);
    fwd.move_to(SocketAddr::from(([127, 0, 0, 1], replica.port)));
    // Until the proxy has reconnected, deny answers 503 (never counted); then the window
    // carries on from the replicated 4: two more, then 429.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut admitted = 4;
    loop {
        let (a, took) = timed(chat(p.openai, false)).await;
        assert!(took < Duration::from_secs(4), "{took:?}");
        match a.status {
            200 => admitted += 1,
            429 => break,
            503 => tokio::time::sleep(Duration::from_millis(100)).await,
            s => panic!("{s}: {}", a.text()),
        }
        assert!(Instant::now() < deadline, "no reconnect: {}", p.output());
    }
    assert_eq!(admitted, 6, "6 per minute across the failover");
    assert_clean(&p.output());
    assert_clean(&p.metrics().await);
}

/// The admission script itself, against a real Redis: the local limiter's answers (sliding
/// windows, `Retry-After`, bytes over the limit, totals) and all-or-nothing counting. Old
/// buckets are written directly, at Redis's own clock, to stand for earlier traffic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admission_script_matches_the_local_windows() {
    use llm_keyproxy::config::plan::TlsPlan;
    use llm_keyproxy::config::secret::{Secret, SecretRef};
    use llm_keyproxy::config::shared_state::{OnUnavailable, SharedStatePlan};
    use llm_keyproxy::shared::{Check, Decision, Store, COUNTER, MINUTE, SECOND};
    if !have_redis() {
        return;
    }
    let redis = RedisServer::start(free_port(), &[]);
    let plan = SharedStatePlan {
        redis_ref: SecretRef::Env("UNUSED".into()),
        url: Secret::new(redis.url()),
        tls: false,
        key_prefix: "script".into(),
        timeout: Duration::from_secs(2),
        on_unavailable: OnUnavailable::Deny,
    };
    let tls = TlsPlan {
        webpki: true,
        native: false,
        extra_ca_file: None,
        extra_cas: Vec::new(),
    };
    let metrics = llm_keyproxy::telemetry::metrics::Metrics::new();
    let store = Store::new(&plan, &tls, 1, &metrics).unwrap();
    let check = |key: &str, unit, limit, need, incr| Check {
        key: store.key(key),
        unit,
        limit,
        need,
        incr,
    };
    let now: Vec<String> = redis.cmd(&["TIME"]);
    let now: u64 = now[0].parse().unwrap();
    let sum = |key: &str| -> u64 {
        let h: std::collections::HashMap<String, u64> = redis.cmd(&["HGETALL", &store.key(key)]);
        h.values().sum()
    };

    // Per minute, sliding: a request 30 s ago and a stale one 60 s ago (not counted, removed).
    let rpm = store.key("rpm");
    let _: i64 = redis.cmd(&["HSET", &rpm, &(now - 30).to_string(), "1"]);
    let _: i64 = redis.cmd(&["HSET", &rpm, &(now - 60).to_string(), "5"]);
    let c = [check("rpm", SECOND, 3, 1, 1)];
    assert_eq!(store.admit(&c).await, Decision::Admitted);
    assert_eq!(store.admit(&c).await, Decision::Admitted);
    match store.admit(&c).await {
        Decision::Refused {
            index: 0,
            retry_after: Some(r),
        } => assert!(
            (29..=30).contains(&r),
            "the 30 s old request leaves first: {r}"
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        sum("rpm"),
        3,
        "stale bucket removed, refused request not counted"
    );

    // Per hour (1-minute buckets): one request 10 minutes ago fills a limit of 1.
    let rph = store.key("rph");
    let _: i64 = redis.cmd(&["HSET", &rph, &(now / 60 - 10).to_string(), "1"]);
    match store.admit(&[check("rph", MINUTE, 1, 1, 1)]).await {
        Decision::Refused {
            retry_after: Some(r),
            ..
        } => assert!((2940..=3000).contains(&r), "{r}"),
        other => panic!("{other:?}"),
    }

    // Bytes: exactly at the limit is allowed; one byte more waits; over the limit alone: 60 s.
    assert_eq!(
        store.admit(&[check("bpm", SECOND, 1000, 1000, 1000)]).await,
        Decision::Admitted
    );
    assert!(matches!(
        store.admit(&[check("bpm", SECOND, 1000, 1, 1)]).await,
        Decision::Refused {
            retry_after: Some(60),
            ..
        }
    ));
    assert!(matches!(
        store
            .admit(&[check("bpm2", SECOND, 1000, 1001, 1001)])
            .await,
        Decision::Refused {
            retry_after: Some(60),
            ..
        }
    ));

    // A total (plain counter): refused while spent >= limit, never frees up.
    let _: () = redis.cmd(&["SET", &store.key("total"), "100"]);
    let budget = check("total", COUNTER, 100, 1, 0);
    assert_eq!(
        store.admit(std::slice::from_ref(&budget)).await,
        Decision::Refused {
            index: 0,
            retry_after: None
        }
    );

    // All or nothing: a rate limit that passes is not counted when a later budget refuses.
    let both = [check("rpm-both", SECOND, 10, 1, 1), budget];
    assert!(matches!(
        store.admit(&both).await,
        Decision::Refused { index: 1, .. }
    ));
    assert_eq!(sum("rpm-both"), 0);
    let _: () = redis.cmd(&["SET", &store.key("total"), "99"]);
    assert_eq!(store.admit(&both).await, Decision::Admitted);
    assert_eq!(sum("rpm-both"), 1);
    // Every key is under the hash tag of the prefix (one Cluster slot).
    let keys: Vec<String> = redis.cmd(&["KEYS", "*"]);
    assert!(keys.iter().all(|k| k.starts_with("{script}:")), "{keys:?}");
}

/// `rediss://`: Redis with TLS (the Debian build has it), trusted through the proxy's own
/// `tls.extra_ca_file`; a proxy whose roots lack Redis's CA never connects (and says so).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_uses_the_proxy_tls_roots() {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    if !have_redis() {
        return;
    }
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
        .unwrap()
        .signed_by(&leaf_key, &ca)
        .unwrap();
    let (ca_file, cert_file, key_file) = (tmp("redis-ca.pem"), tmp("redis.pem"), tmp("redis.key"));
    std::fs::write(&ca_file, ca.pem()).unwrap();
    std::fs::write(&cert_file, leaf.pem()).unwrap();
    std::fs::write(&key_file, leaf_key.serialize_pem()).unwrap();
    let port = free_port();
    let _redis = KillOnDrop(
        Command::new(REDIS)
            .args([
                "--port",
                "0",
                "--tls-port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
            ])
            .args([
                "--save",
                "",
                "--appendonly",
                "no",
                "--requirepass",
                PASSWORD,
            ])
            .arg("--tls-cert-file")
            .arg(&cert_file)
            .arg("--tls-key-file")
            .arg(&key_file)
            .arg("--tls-ca-cert-file")
            .arg(&ca_file)
            .args(["--tls-auth-clients", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "redis-server (TLS) did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (mock, mock_ca) = mock_and_ca().await;
    let both = tmp("both-ca.pem");
    std::fs::write(
        &both,
        format!("{}{}", std::fs::read_to_string(&mock_ca).unwrap(), ca.pem()),
    )
    .unwrap();
    let url = format!("rediss://:{PASSWORD}@127.0.0.1:{port}");
    let shared = "key_prefix: tls, timeout: 500ms, on_unavailable: deny";
    let p = Proxy::spawn("rediss", &mock, &both, &url, shared);
    p.started().await;
    p.wait_up().await;
    for _ in 0..6 {
        let (a, _) = timed(chat(p.openai, false)).await;
        assert_eq!(a.status, 200, "{}", a.text());
    }
    let (a, _) = timed(chat(p.openai, false)).await;
    assert_eq!(a.status, 429, "{}", a.text());

    // Roots without Redis's CA: the handshake fails, so deny answers and /ready says why.
    let untrusting = Proxy::spawn("rediss-untrusted", &mock, &mock_ca, &url, shared);
    untrusting.started().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(untrusting.ready().await, 503);
    let (a, _) = timed(chat(untrusting.openai, false)).await;
    assert_eq!(a.status, 503, "{}", a.text());
    assert_eq!(untrusting.events("shared_state_unavailable").len(), 1);
    assert_clean(&p.output());
    assert_clean(&untrusting.output());
}

/// A child process we started, killed (by its pid) when dropped.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
