//! Bench support: the mock upstream, the proxy as a child process, clients, load loops,
//! statistics and the report table.
#![allow(dead_code)]

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use llm_keyproxy::plan::TlsPlan;
use llm_keyproxy::upstream::{tls_config, Connector};
use mock_upstream::{MockConfig, MockUpstream};
use rustls::pki_types::{pem::PemObject, CertificateDer};

pub type DirectClient = Client<Connector, Full<Bytes>>;
pub type ProxyClient = Client<HttpConnector, Full<Bytes>>;

/// Workload sizes: full for `cargo bench`, quick for the CI smoke run.
pub struct Scale {
    pub small_n: usize,
    pub rate: u64,
    pub rate_secs: u64,
    pub tput_secs: u64,
    pub slow_streams: usize,
    pub slow_events: usize,
    pub uploads: usize,
    pub open_streams: Vec<usize>,
    pub starts: usize,
}

impl Scale {
    pub fn full() -> Scale {
        Scale {
            small_n: 5000,
            rate: 5000,
            rate_secs: 5,
            tput_secs: 5,
            slow_streams: 1000,
            slow_events: 20,
            uploads: 10,
            open_streams: vec![1000, 10_000],
            starts: 20,
        }
    }
    pub fn quick() -> Scale {
        Scale {
            small_n: 200,
            rate: 500,
            rate_secs: 1,
            tput_secs: 1,
            slow_streams: 50,
            slow_events: 5,
            uploads: 1,
            open_streams: vec![100],
            starts: 3,
        }
    }
}

/// A free loopback port (bound then released).
pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// The proxy running as a child process.
pub struct ProxyProcess {
    pub child: Child,
    pub port: u16,
    pub admin: u16,
}

impl ProxyProcess {
    pub fn spawn(
        dir: &std::path::Path,
        ca: &std::path::Path,
        mock: SocketAddr,
        extra: &str,
        name: &str,
    ) -> ProxyProcess {
        let (port, admin) = (free_port(), free_port());
        let config = dir.join(format!("{name}.yaml"));
        let yaml = format!(
            "admin: {{listen: '127.0.0.1:{admin}'}}\ntls: {{extra_ca_file: '{}'}}\nlimits: {{drain_timeout: 1s}}\n{extra}\nproviders:\n  bench: {{listen: '127.0.0.1:{port}', upstream: 'https://api.openai.com', upstream_address: '{mock}', api_key: env:BENCH_KEY, auth: {{header: authorization, prefix: 'Bearer '}}}}\n",
            ca.display()
        );
        std::fs::write(&config, yaml).expect("write config");
        let log = std::fs::File::create(dir.join(format!("{name}.log"))).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_llm-keyproxy"))
            .arg("--config")
            .arg(&config)
            .env("BENCH_KEY", "sk-bench-not-a-real-key")
            .stdout(Stdio::from(log))
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn llm-keyproxy");
        let p = ProxyProcess { child, port, admin };
        p.wait_ready(Duration::from_secs(10));
        p
    }

    pub fn wait_ready(&self, limit: Duration) -> Duration {
        let start = Instant::now();
        while start.elapsed() < limit {
            if http_status(self.admin, "/ready") == Some(200) {
                return start.elapsed();
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        panic!("proxy not ready within {limit:?}");
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// User + system CPU seconds of the proxy process so far.
    pub fn cpu_secs(&self) -> f64 {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap_or_default();
        let after = stat.rsplit(')').next().unwrap_or("");
        let f: Vec<&str> = after.split_whitespace().collect();
        let ticks: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
            + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
        ticks / 100.0
    }

    pub fn rss_kib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    pub fn sigterm(&self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status();
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A blocking one-shot GET, for readiness polling.
pub fn http_status(port: u16, path: &str) -> Option<u16> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).ok()?;
    std::str::from_utf8(&buf[..n])
        .ok()?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The mock upstream, the proxy, and a client for each path.
pub struct Env {
    pub mock: MockUpstream,
    pub dir: PathBuf,
    pub ca: PathBuf,
    pub proxy: ProxyProcess,
    pub direct: DirectClient,
    pub proxy_client: ProxyClient,
    _tunnel: Option<tokio::task::JoinHandle<()>>,
}

pub fn proxy_client() -> ProxyClient {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(20_000)
        .build(http)
}

impl Env {
    pub async fn start() -> Env {
        let mock = MockUpstream::start(MockConfig::default())
            .await
            .expect("mock");
        let dir = std::env::temp_dir().join(format!("kp-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("bench dir");
        let ca = dir.join("ca.pem");
        std::fs::write(&ca, mock.ca_pem()).expect("ca");
        let proxy = ProxyProcess::spawn(&dir, &ca, mock.addr(), "", "proxy");
        let cas: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(mock.ca_pem().as_bytes())
                .collect::<Result<_, _>>()
                .expect("ca pem");
        let tls = tls_config(&TlsPlan {
            webpki: false,
            native: false,
            extra_ca_file: None,
            extra_cas: cas,
        })
        .expect("tls");
        let connector = Connector::new(
            tls,
            Some(mock.addr().to_string()),
            None,
            Duration::from_secs(10),
            None,
        );
        let direct = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(20_000)
            .build(connector);
        Env {
            mock,
            dir,
            ca,
            proxy,
            direct,
            proxy_client: proxy_client(),
            _tunnel: None,
        }
    }

    /// A second proxy whose upstream connections go through an in-process CONNECT proxy.
    pub async fn start_tunneled(base: &Env) -> Tunneled {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(connect_proxy(listener));
        let proxy = ProxyProcess::spawn(
            &base.dir,
            &base.ca,
            base.mock.addr(),
            &format!("upstream_proxy: 'http://{addr}'"),
            "tunneled",
        );
        Tunneled {
            proxy,
            proxy_client: proxy_client(),
            task,
        }
    }

    pub fn direct_url(&self, path: &str) -> String {
        format!("https://api.openai.com{path}")
    }

    pub fn proxy_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.proxy.port)
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub struct Tunneled {
    pub proxy: ProxyProcess,
    pub proxy_client: ProxyClient,
    task: tokio::task::JoinHandle<()>,
}

impl Tunneled {
    pub fn proxy_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.proxy.port)
    }
}

impl Drop for Tunneled {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A minimal HTTP CONNECT proxy (what Squid does for the proxy's upstream connections).
async fn connect_proxy(listener: tokio::net::TcpListener) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    while let Ok((mut client, _)) = listener.accept().await {
        tokio::spawn(async move {
            let mut head = Vec::new();
            let mut b = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && head.len() < 8192 {
                if client.read_exact(&mut b).await.is_err() {
                    return;
                }
                head.push(b[0]);
            }
            let text = String::from_utf8_lossy(&head);
            let target = text.split_whitespace().nth(1).unwrap_or("").to_owned();
            let Ok(mut upstream) = tokio::net::TcpStream::connect(&target).await else {
                let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n").await;
                return;
            };
            let _ = upstream.set_nodelay(true);
            let _ = client.set_nodelay(true);
            if client
                .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                .await
                .is_ok()
            {
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            }
        });
    }
}

/// Microsecond samples.
#[derive(Default, Clone)]
pub struct Samples(pub Vec<f64>);

impl Samples {
    pub fn p(&self, pct: f64) -> f64 {
        if self.0.is_empty() {
            return f64::NAN;
        }
        let mut v = self.0.clone();
        v.sort_by(|a, b| a.total_cmp(b));
        let i = ((pct / 100.0) * (v.len() - 1) as f64).round() as usize;
        v[i.min(v.len() - 1)]
    }
}

pub trait Send1: Clone + Send + Sync + 'static {
    fn get(
        &self,
        url: &str,
    ) -> impl std::future::Future<Output = Result<http::Response<hyper::body::Incoming>, String>> + Send;
    fn post(
        &self,
        url: &str,
        body: Bytes,
    ) -> impl std::future::Future<Output = Result<http::Response<hyper::body::Incoming>, String>> + Send;
}

impl<C> Send1 for Client<C, Full<Bytes>>
where
    C: hyper_util::client::legacy::connect::Connect + Clone + Send + Sync + 'static,
{
    async fn get(&self, url: &str) -> Result<http::Response<hyper::body::Incoming>, String> {
        let req = Request::get(url)
            .header("authorization", "Bearer client-placeholder")
            .body(Full::new(Bytes::new()))
            .map_err(|e| e.to_string())?;
        self.request(req).await.map_err(|e| format!("{e:?}"))
    }
    async fn post(
        &self,
        url: &str,
        body: Bytes,
    ) -> Result<http::Response<hyper::body::Incoming>, String> {
        let req = Request::post(url)
            .header("content-type", "application/octet-stream")
            .body(Full::new(body))
            .map_err(|e| e.to_string())?;
        self.request(req).await.map_err(|e| format!("{e:?}"))
    }
}

async fn get_all<C: Send1>(c: &C, url: &str) -> Result<(), String> {
    let resp = c.get(url).await?;
    resp.into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// Sequential requests on one connection; latency per request.
pub async fn latency_1conn<C: Send1>(c: &C, url: &str, n: usize) -> Samples {
    for _ in 0..(n / 10).max(10) {
        let _ = get_all(c, url).await;
    }
    let mut s = Samples::default();
    for _ in 0..n {
        let t = Instant::now();
        if get_all(c, url).await.is_ok() {
            s.0.push(t.elapsed().as_secs_f64() * 1e6);
        }
    }
    s
}

/// Requests started at a fixed rate regardless of completions (open loop).
pub async fn fixed_rate<C: Send1>(c: &C, url: &str, rate: u64, secs: u64) -> Samples {
    let total = rate * secs;
    let every = Duration::from_secs_f64(1.0 / rate as f64);
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::with_capacity(total as usize);
    for i in 0..total {
        tokio::time::sleep_until(start + every * i as u32).await;
        let (c, url) = (c.clone(), url.to_owned());
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            get_all(&c, &url)
                .await
                .ok()
                .map(|_| t.elapsed().as_secs_f64() * 1e6)
        }));
    }
    let mut s = Samples::default();
    for t in tasks {
        if let Ok(Some(v)) = t.await {
            s.0.push(v);
        }
    }
    s
}

pub struct Throughput {
    pub count: u64,
    pub secs: f64,
}

impl Throughput {
    pub fn rps(&self) -> f64 {
        self.count as f64 / self.secs
    }
}

/// `conns` workers issuing requests back to back for `secs`.
pub async fn closed_loop<C: Send1>(c: &C, url: &str, conns: usize, secs: u64) -> Throughput {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let (c, url) = (c.clone(), url.to_owned());
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < deadline {
                if get_all(&c, &url).await.is_ok() {
                    n += 1;
                }
            }
            n
        }));
    }
    let mut count = 0;
    for t in tasks {
        count += t.await.unwrap_or(0);
    }
    Throughput {
        count,
        secs: start.elapsed().as_secs_f64(),
    }
}

pub struct SseResult {
    pub events: u64,
    pub bytes: u64,
    pub secs: f64,
    pub errors: u64,
    pub ttfb: Samples,
    pub lag: Samples,
}

impl SseResult {
    pub fn events_per_sec(&self) -> f64 {
        self.events as f64 / self.secs
    }
    pub fn mb_per_sec(&self) -> f64 {
        self.bytes as f64 / self.secs / 1e6
    }
}

fn now_ns() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// `n` concurrent SSE streams of `events` each; every event checked for order and count.
pub async fn sse_streams<C: Send1>(c: &C, url: &str, n: usize, events: usize) -> SseResult {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..n {
        let (c, url) = (c.clone(), url.to_owned());
        tasks.push(tokio::spawn(
            async move { one_stream(&c, &url, events).await },
        ));
    }
    let mut r = SseResult {
        events: 0,
        bytes: 0,
        secs: 0.0,
        errors: 0,
        ttfb: Samples::default(),
        lag: Samples::default(),
    };
    for t in tasks {
        match t.await {
            Ok(Ok((ev, bytes, ttfb, lags))) => {
                r.events += ev;
                r.bytes += bytes;
                r.ttfb.0.push(ttfb);
                r.lag.0.extend(lags);
                if ev != events as u64 {
                    r.errors += events as u64 - ev.min(events as u64);
                }
            }
            _ => r.errors += events as u64,
        }
    }
    r.secs = start.elapsed().as_secs_f64();
    r
}

async fn one_stream<C: Send1>(
    c: &C,
    url: &str,
    events: usize,
) -> Result<(u64, u64, f64, Vec<f64>), String> {
    let t = Instant::now();
    let resp = c.get(url).await?;
    let mut body = resp.into_body();
    let mut buf = Vec::new();
    let mut next = 0usize;
    let mut bytes = 0u64;
    let mut ttfb = None;
    let mut lags = Vec::with_capacity(events);
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| e.to_string())?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let arrived = now_ns();
        ttfb.get_or_insert_with(|| t.elapsed().as_secs_f64() * 1e6);
        bytes += data.len() as u64;
        buf.extend_from_slice(&data);
        while let Some(end) = buf.windows(2).position(|w| w == b"\n\n") {
            let event: Vec<u8> = buf.drain(..end + 2).collect();
            let text = String::from_utf8_lossy(&event);
            let json = text.split("data: ").nth(1).unwrap_or("").trim();
            let v: serde_json::Value = serde_json::from_str(json).map_err(|e| e.to_string())?;
            if v["i"].as_u64() != Some(next as u64) {
                return Err(format!("event {} arrived as {}", next, v["i"]));
            }
            if let Some(sent) = v["sent_ns"].as_u64() {
                lags.push(arrived.saturating_sub(sent as u128) as f64 / 1000.0);
            }
            next += 1;
        }
    }
    Ok((next as u64, bytes, ttfb.unwrap_or(f64::NAN), lags))
}

/// `n` uploads of `size` bytes; MB/s.
pub async fn upload<C: Send1>(c: &C, url: &str, size: usize, n: usize) -> f64 {
    let body = Bytes::from(vec![b'u'; size]);
    let start = Instant::now();
    for _ in 0..n {
        let resp = c.post(url, body.clone()).await.expect("upload");
        assert_eq!(resp.status(), 200);
        let _ = resp.into_body().collect().await;
    }
    (size * n) as f64 / start.elapsed().as_secs_f64() / 1e6
}

/// A declared 11 MiB body (head only, over a raw socket): the 413 comes before any of it is sent.
pub fn too_large(port: u16) -> u16 {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let _ = write!(
        s,
        "POST /mock/echo HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        11 << 20
    );
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).unwrap_or(0);
    std::str::from_utf8(&buf[..n])
        .ok()
        .and_then(|t| t.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Opens `n` streams that stay open, reads RSS, closes them. Returns (held, RSS KiB).
pub async fn hold_streams(env: &Env, n: usize) -> (usize, u64) {
    let mut held = Vec::with_capacity(n);
    let mut tasks = Vec::with_capacity(n);
    for _ in 0..n {
        let c = env.proxy_client.clone();
        let url = env.proxy_url("/mock/hang");
        tasks.push(tokio::spawn(async move {
            let resp = Send1::get(&c, &url).await.ok()?;
            let mut body = resp.into_body();
            body.frame().await?.ok()?;
            Some(body)
        }));
    }
    for t in tasks {
        if let Ok(Some(b)) = t.await {
            held.push(b);
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss = env.proxy.rss_kib();
    let count = held.len();
    drop(held);
    (count, rss)
}

/// Spawn to `/ready` 200, `n` times.
pub async fn start_to_ready(env: &Env, n: usize) -> Samples {
    let mut s = Samples::default();
    for i in 0..n {
        let t = Instant::now();
        let p = ProxyProcess::spawn(&env.dir, &env.ca, env.mock.addr(), "", &format!("start{i}"));
        s.0.push(t.elapsed().as_secs_f64() * 1e6);
        drop(p);
    }
    s
}

/// SIGTERM with streams in flight: time until the process exits.
pub async fn sigterm_with_streams(env: &Env) -> Duration {
    let mut p = ProxyProcess::spawn(&env.dir, &env.ca, env.mock.addr(), "", "sigterm");
    let client = proxy_client();
    let url = format!("http://127.0.0.1:{}/mock/sse?events=5&gap_ms=50", p.port);
    let mut streams = Vec::new();
    for _ in 0..10 {
        let (c, u) = (client.clone(), url.clone());
        streams.push(tokio::spawn(async move {
            one_stream(&c, &u, 5).await.map(|r| r.0)
        }));
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    let t = Instant::now();
    p.sigterm();
    let _ = tokio::task::spawn_blocking(move || {
        let _ = p.child.wait();
        p
    })
    .await;
    let took = t.elapsed();
    for s in streams {
        let _ = s.await;
    }
    took
}

/// The report: rows of direct vs through-the-proxy figures, notes, checks.
#[derive(Default)]
pub struct Table {
    rows: Vec<(String, f64, f64, Option<f64>)>,
    notes: Vec<String>,
    failures: Vec<String>,
}

impl Table {
    pub fn row(&mut self, label: &str, direct: f64, via: f64, added: Option<f64>) {
        self.rows.push((label.to_owned(), direct, via, added));
    }
    pub fn note(&mut self, s: String) {
        self.notes.push(s);
    }
    pub fn check(&mut self, ok: bool, what: String) {
        if !ok {
            self.failures.push(what);
        }
    }
    pub fn render(&self, quick: bool) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "llm-keyproxy load benchmark ({} run)\n",
            if quick { "quick smoke" } else { "full" }
        );
        let _ = writeln!(
            out,
            "| scenario | direct | via llm-keyproxy | via / direct | added |"
        );
        let _ = writeln!(out, "|---|---:|---:|---:|---:|");
        for (label, d, v, added) in &self.rows {
            let added = added.map(|a| format!("{a:.0}")).unwrap_or_default();
            let _ = writeln!(
                out,
                "| {label} | {d:.1} | {v:.1} | {:.2} | {added} |",
                v / d
            );
        }
        let _ = writeln!(out);
        for n in &self.notes {
            let _ = writeln!(out, "- {n}");
        }
        if self.failures.is_empty() {
            let _ = writeln!(out, "\nall events checked: none lost, merged or reordered");
        } else {
            for f in &self.failures {
                let _ = writeln!(out, "\nFAILED: {f}");
            }
        }
        out
    }

    pub fn failed(&self) -> bool {
        !self.failures.is_empty()
    }
}
