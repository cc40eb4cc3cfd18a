//! Bench support: configuration from the environment, the mock upstream (in-process or
//! external), llm-keyproxy as a child process, the targets (direct, llm-keyproxy, peers), the
//! CONNECT proxy, and start-up / shutdown measurements.
#![allow(dead_code)]

pub mod load;
pub mod procs;
pub mod report;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use llm_keyproxy::config::plan::TlsPlan;
use llm_keyproxy::upstream::{tls_config, Connector};
use mock_upstream::{MockConfig, MockUpstream};
use rustls::pki_types::{pem::PemObject, CertificateDer};

pub use load::*;
pub use procs::Procs;
pub use report::{Better, Report, DIRECT, KEYPROXY};

/// The key llm-keyproxy (and, in compare.sh, nginx and HAProxy) inject, and the in-process mock
/// demands on its provider routes. `KEYPROXY_BENCH_KEY` overrides it.
pub const DEFAULT_KEY: &str = "sk-bench-not-a-real-key";

/// Workload sizes: full for `cargo bench`, quick for the CI smoke run.
pub struct Scale {
    /// Sequential requests per round at 1 connection.
    pub small_n: usize,
    /// Rounds of the small-request scenarios (1 connection, fixed rate, 64 connections); the
    /// target order rotates each round and the median of the rounds is reported.
    pub rounds: usize,
    pub rate: u64,
    pub rate_secs: u64,
    pub tput_secs: f64,
    pub fast_streams: usize,
    pub fast_events: usize,
    pub light_streams: usize,
    pub light_events: usize,
    pub slow_streams: usize,
    pub slow_events: usize,
    pub uploads: usize,
    pub open_streams: Vec<usize>,
    /// SSE streams started at once against an upstream limiting streams per connection.
    pub burst_streams: usize,
    /// `/mock/hang` streams held against an upstream limiting streams per connection.
    pub held_streams: usize,
    pub starts: usize,
    pub too_large_tries: usize,
}

impl Scale {
    pub fn full() -> Scale {
        Scale {
            small_n: 5000,
            rounds: 3,
            rate: 5000,
            rate_secs: 5,
            tput_secs: 5.0,
            fast_streams: 64,
            fast_events: 200,
            light_streams: 64,
            light_events: 50,
            slow_streams: 1000,
            slow_events: 20,
            uploads: 10,
            open_streams: vec![1000, 10_000],
            burst_streams: 1000,
            held_streams: 10_000,
            starts: 20,
            too_large_tries: 20,
        }
    }
    pub fn quick() -> Scale {
        Scale {
            small_n: 200,
            rounds: 1,
            rate: 500,
            rate_secs: 1,
            tput_secs: 1.0,
            fast_streams: 16,
            fast_events: 100,
            light_streams: 16,
            light_events: 5,
            slow_streams: 50,
            slow_events: 5,
            uploads: 1,
            open_streams: vec![100],
            burst_streams: 300,
            held_streams: 300,
            starts: 3,
            too_large_tries: 3,
        }
    }
}

/// What the environment asks for.
pub struct BenchConfig {
    pub quick: bool,
    /// `KEYPROXY_BENCH_PEERS="nginx=127.0.0.1:P1,haproxy=127.0.0.1:P2"`: plain-HTTP listeners.
    pub peers: Vec<(String, SocketAddr)>,
    /// `KEYPROXY_BENCH_PEER_PIDS="nginx=/run/x/nginx.pid,haproxy=1234"`: a pidfile or a pid per
    /// peer; that process and all its descendants are measured.
    pub peer_procs: Vec<(String, Procs)>,
    /// `KEYPROXY_BENCH_MOCK=127.0.0.1:PORT` + `KEYPROXY_BENCH_MOCK_CA=PATH`: an external mock.
    pub mock: Option<(SocketAddr, PathBuf)>,
    pub key: String,
    /// `KEYPROXY_BENCH_ONLY="limiting,sse"`: only these groups of scenarios ([`GROUPS`]).
    pub only: Option<Vec<String>>,
}

/// The groups of scenarios `KEYPROXY_BENCH_ONLY` can name (idle memory and the preflight always
/// run).
pub const GROUPS: [&str; 10] = [
    "small",
    "signing",
    "sse",
    "upload",
    "memory",
    "tunnel",
    "lifecycle",
    "limiting",
    "shared_state",
    "tracing",
];

fn pairs(var: &str) -> Vec<(String, String)> {
    let Ok(v) = std::env::var(var) else {
        return Vec::new();
    };
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|item| match item.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => (k.trim().to_owned(), v.trim().to_owned()),
            _ => fail(&format!("{var}: expected name=value, got {item:?}")),
        })
        .collect()
}

fn fail(msg: &str) -> ! {
    eprintln!("bench: {msg}");
    std::process::exit(2);
}

impl BenchConfig {
    pub fn from_env() -> BenchConfig {
        let quick = std::env::var("KEYPROXY_BENCH_QUICK").is_ok_and(|v| v == "1");
        let peers: Vec<(String, SocketAddr)> = pairs("KEYPROXY_BENCH_PEERS")
            .into_iter()
            .map(|(name, addr)| {
                if name == DIRECT || name == KEYPROXY {
                    fail(&format!(
                        "KEYPROXY_BENCH_PEERS: {name:?} is a reserved name"
                    ));
                }
                let addr = addr.parse().unwrap_or_else(|_| {
                    fail(&format!(
                        "KEYPROXY_BENCH_PEERS: bad address for {name}: {addr}"
                    ))
                });
                (name, addr)
            })
            .collect();
        let peer_procs: Vec<(String, Procs)> = pairs("KEYPROXY_BENCH_PEER_PIDS")
            .into_iter()
            .map(|(name, spec)| {
                if !peers.iter().any(|(p, _)| *p == name) {
                    fail(&format!(
                        "KEYPROXY_BENCH_PEER_PIDS: {name} is not in KEYPROXY_BENCH_PEERS"
                    ));
                }
                (name, Procs::parse(&spec))
            })
            .collect();
        let mock = match (
            std::env::var("KEYPROXY_BENCH_MOCK").ok(),
            std::env::var("KEYPROXY_BENCH_MOCK_CA").ok(),
        ) {
            (Some(addr), Some(ca)) => Some((
                addr.parse()
                    .unwrap_or_else(|_| fail(&format!("KEYPROXY_BENCH_MOCK: bad address {addr}"))),
                PathBuf::from(ca),
            )),
            (None, None) => None,
            _ => fail("KEYPROXY_BENCH_MOCK and KEYPROXY_BENCH_MOCK_CA go together"),
        };
        if !peers.is_empty() && mock.is_none() {
            fail("KEYPROXY_BENCH_PEERS needs KEYPROXY_BENCH_MOCK and KEYPROXY_BENCH_MOCK_CA (the mock the peers forward to)");
        }
        let key = std::env::var("KEYPROXY_BENCH_KEY").unwrap_or_else(|_| DEFAULT_KEY.to_owned());
        let only = std::env::var("KEYPROXY_BENCH_ONLY").ok().map(|v| {
            let groups: Vec<String> = v
                .split(',')
                .map(|g| g.trim().to_owned())
                .filter(|g| !g.is_empty())
                .collect();
            if let Some(bad) = groups.iter().find(|g| !GROUPS.contains(&g.as_str())) {
                fail(&format!(
                    "KEYPROXY_BENCH_ONLY: unknown group {bad:?} (groups: {})",
                    GROUPS.join(", ")
                ));
            }
            groups
        });
        BenchConfig {
            quick,
            peers,
            peer_procs,
            mock,
            key,
            only,
        }
    }

    /// Whether the scenarios of `group` ([`GROUPS`]) run.
    pub fn runs(&self, group: &str) -> bool {
        self.only
            .as_ref()
            .is_none_or(|only| only.iter().any(|g| g == group))
    }
}

/// A free loopback port (bound then released).
pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// The llm-keyproxy binary under test: `KEYPROXY_BENCH_BIN`, else the release build cargo made
/// for this bench.
pub fn keyproxy_bin() -> PathBuf {
    std::env::var_os("KEYPROXY_BENCH_BIN")
        .map_or_else(|| env!("CARGO_BIN_EXE_llm-keyproxy").into(), PathBuf::from)
}

/// llm-keyproxy running as a child process.
pub struct ProxyProcess {
    pub child: Child,
    pub port: u16,
    pub admin: u16,
}

/// Where llm-keyproxy is told to send its upstream traffic.
#[derive(Clone)]
pub struct Upstream {
    pub mock: SocketAddr,
    pub ca: PathBuf,
    pub key: String,
}

impl ProxyProcess {
    /// Writes a config and spawns the proxy, without waiting for it.
    pub fn spawn_only(dir: &Path, up: &Upstream, extra: &str, name: &str) -> ProxyProcess {
        Self::spawn_with(dir, up, extra, "", &[], name)
    }

    /// As `spawn_only`, with `provider` keys added to the provider's mapping (e.g.
    /// `rate_limit: {...}`) and `env` set for the process.
    pub fn spawn_with(
        dir: &Path,
        up: &Upstream,
        extra: &str,
        provider: &str,
        env: &[(&str, &str)],
        name: &str,
    ) -> ProxyProcess {
        let line = format!(
            "bench: {{listen: '127.0.0.1:{{port}}', upstream: 'https://api.openai.com', upstream_address: '{}', api_key: env:BENCH_KEY, auth: {{header: authorization, prefix: 'Bearer '}}{provider}}}",
            up.mock
        );
        Self::spawn_provider(dir, up, extra, &line, env, name)
    }

    /// Spawns the proxy with one provider given whole (`{port}` in `provider` is replaced by
    /// the listen port), `BENCH_KEY` and `env` set, without waiting for it.
    pub fn spawn_provider(
        dir: &Path,
        up: &Upstream,
        extra: &str,
        provider: &str,
        env: &[(&str, &str)],
        name: &str,
    ) -> ProxyProcess {
        let (port, admin) = (free_port(), free_port());
        let config = dir.join(format!("{name}.yaml"));
        let yaml = format!(
            "admin: {{listen: '127.0.0.1:{admin}'}}\ntls: {{extra_ca_file: '{}'}}\nlimits: {{drain_timeout: 1s, max_connections: 20000}}\n{extra}\nproviders:\n  {}\n",
            up.ca.display(),
            provider.replace("{port}", &port.to_string()),
        );
        std::fs::write(&config, yaml).expect("write config");
        let log = std::fs::File::create(dir.join(format!("{name}.log"))).expect("log file");
        let child = Command::new(keyproxy_bin())
            .arg("--config")
            .arg(&config)
            .env("BENCH_KEY", &up.key)
            .envs(env.iter().copied())
            .stdout(Stdio::from(log))
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn llm-keyproxy");
        ProxyProcess { child, port, admin }
    }

    pub fn spawn(dir: &Path, up: &Upstream, extra: &str, name: &str) -> ProxyProcess {
        let p = Self::spawn_only(dir, up, extra, name);
        p.wait_ready(Duration::from_secs(10));
        p
    }

    /// Polls `/ready` until 200; the time it took.
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

/// A blocking GET of a whole response (`Connection: close`, read to the end, 5 s at most).
pub fn http_get(port: u16, path: &str) -> Option<String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

/// The sum of a metric's samples on llm-keyproxy's admin `/metrics` whose labels contain
/// `labels` (e.g. `result="ok"`); None when the page could not be read or has no such sample.
pub fn metric_sum(admin: u16, name: &str, labels: &str) -> Option<f64> {
    let page = http_get(admin, "/metrics")?;
    let values: Vec<f64> = page
        .lines()
        .filter_map(|l| l.strip_prefix(name)?.strip_prefix('{'))
        .filter(|l| l.contains(labels))
        .filter_map(|l| l.rsplit_once("} ")?.1.trim().parse().ok())
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    Direct,
    Keyproxy,
    Peer,
}

/// One column of the report: where requests go, and whose CPU and memory to read.
pub struct Target {
    pub name: String,
    pub kind: Kind,
    pub client: AnyClient,
    /// `https://api.openai.com` (direct) or `http://127.0.0.1:PORT`.
    pub base: String,
    pub port: Option<u16>,
    pub procs: Option<Procs>,
}

impl Target {
    /// An llm-keyproxy child process, reached with a fresh client.
    pub fn keyproxy(name: &str, proxy: &ProxyProcess) -> Target {
        Target {
            name: name.into(),
            kind: Kind::Keyproxy,
            client: AnyClient::Plain(plain_client()),
            base: format!("http://127.0.0.1:{}", proxy.port),
            port: Some(proxy.port),
            procs: Some(Procs::One(proxy.pid())),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
    pub fn is_proxy(&self) -> bool {
        self.kind != Kind::Direct
    }
    pub fn cpu_secs(&self) -> Option<f64> {
        self.procs.as_ref().map(Procs::cpu_secs)
    }
    pub fn rss_kib(&self) -> Option<u64> {
        self.procs.as_ref().map(Procs::rss_kib)
    }
    pub fn pss_kib(&self) -> Option<u64> {
        self.procs.as_ref().map(Procs::pss_kib)
    }
}

/// The mock upstream, llm-keyproxy, and every target.
pub struct Env {
    /// The in-process mock, unless an external one was given.
    pub mock: Option<MockUpstream>,
    pub upstream: Upstream,
    pub dir: PathBuf,
    pub proxy: ProxyProcess,
    pub targets: Vec<Target>,
}

/// A client that speaks TLS straight to the mock, trusting its CA.
fn direct_client(ca_pem: &str, mock: SocketAddr) -> DirectClient {
    let cas: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(ca_pem.as_bytes())
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
        Some(mock.to_string()),
        None,
        Duration::from_secs(10),
        None,
    );
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(20_000)
        .build(Direct(connector))
}

/// llm-keyproxy's upstream connector as a hyper-util connector, for the bench's direct client.
#[derive(Clone)]
pub struct Direct(Connector);

/// A TLS connection to the mock that tells hyper-util whether ALPN chose h2.
pub struct DirectConn(hyper_util::rt::TokioIo<llm_keyproxy::upstream::TlsConn>);

impl tower_service::Service<http::Uri> for Direct {
    type Response = DirectConn;
    type Error = llm_keyproxy::upstream::ConnectError;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<DirectConn, Self::Error>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let connector = self.0.clone();
        Box::pin(async move {
            let host = uri.host().unwrap_or_default().to_owned();
            let conn = connector
                .connect(&host, uri.port_u16().unwrap_or(443))
                .await?;
            Ok(DirectConn(hyper_util::rt::TokioIo::new(conn)))
        })
    }
}

impl hyper_util::client::legacy::connect::Connection for DirectConn {
    fn connected(&self) -> hyper_util::client::legacy::connect::Connected {
        let connected = hyper_util::client::legacy::connect::Connected::new();
        if self.0.inner().h2 {
            connected.negotiated_h2()
        } else {
            connected
        }
    }
}

impl hyper::rt::Read for DirectConn {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for DirectConn {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl Env {
    pub async fn start(cfg: &BenchConfig) -> Env {
        let dir = std::env::temp_dir().join(format!("kp-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("bench dir");
        let (mock, addr, ca, ca_pem) = match &cfg.mock {
            Some((addr, ca)) => {
                let pem = std::fs::read_to_string(ca).unwrap_or_else(|e| {
                    fail(&format!("KEYPROXY_BENCH_MOCK_CA {}: {e}", ca.display()))
                });
                (None, *addr, ca.clone(), pem)
            }
            None => {
                let mock = MockUpstream::start(MockConfig {
                    expected_key: Some(cfg.key.clone()),
                    ..MockConfig::default()
                })
                .await
                .expect("mock");
                let ca = dir.join("ca.pem");
                std::fs::write(&ca, mock.ca_pem()).expect("ca");
                let (addr, pem) = (mock.addr(), mock.ca_pem().to_owned());
                (Some(mock), addr, ca, pem)
            }
        };
        let upstream = Upstream {
            mock: addr,
            ca,
            key: cfg.key.clone(),
        };
        let proxy = ProxyProcess::spawn(&dir, &upstream, "", "proxy");
        let mut targets = vec![
            Target {
                name: DIRECT.into(),
                kind: Kind::Direct,
                client: AnyClient::Direct(direct_client(&ca_pem, addr)),
                base: "https://api.openai.com".into(),
                port: None,
                procs: None,
            },
            Target {
                name: KEYPROXY.into(),
                kind: Kind::Keyproxy,
                client: AnyClient::Plain(plain_client()),
                base: format!("http://127.0.0.1:{}", proxy.port),
                port: Some(proxy.port),
                procs: Some(Procs::One(proxy.pid())),
            },
        ];
        for (name, addr) in &cfg.peers {
            targets.push(Target {
                name: name.clone(),
                kind: Kind::Peer,
                client: AnyClient::Plain(plain_client()),
                base: format!("http://{addr}"),
                port: Some(addr.port()),
                procs: cfg
                    .peer_procs
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, p)| p.clone()),
            });
        }
        Env {
            mock,
            upstream,
            dir,
            proxy,
            targets,
        }
    }

    pub fn target(&self, name: &str) -> &Target {
        self.targets
            .iter()
            .find(|t| t.name == name)
            .expect("target")
    }

    /// Every proxy answers a provider route (the mock checks the injected key there) and a
    /// `/mock` route; an error message per target that does not.
    pub async fn preflight(&self) -> Vec<String> {
        let mut errors = Vec::new();
        for t in self.targets.iter().filter(|t| t.is_proxy()) {
            for path in ["/v1/models", "/mock/status/200"] {
                if let Err(e) = get_all(&t.client, &t.url(path)).await {
                    errors.push(format!("{}: GET {path}: {e}", t.name));
                }
            }
            if let Some(p) = &t.procs {
                if p.count() == 0 {
                    errors.push(format!("{}: no process found for {p:?}", t.name));
                }
            }
        }
        errors
    }

    /// A second llm-keyproxy whose upstream connections go through an in-process CONNECT proxy.
    pub async fn start_tunneled(&self) -> Tunneled {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(connect_proxy(listener));
        let proxy = ProxyProcess::spawn(
            &self.dir,
            &self.upstream,
            &format!("upstream_proxy: 'http://{addr}'"),
            "tunneled",
        );
        let target = Target::keyproxy("llm-keyproxy via CONNECT", &proxy);
        Tunneled {
            proxy,
            target,
            task,
        }
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub struct Tunneled {
    pub proxy: ProxyProcess,
    pub target: Target,
    task: tokio::task::JoinHandle<()>,
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

/// Exec to `/ready` 200, `n` times (microseconds).
pub fn start_to_ready(env: &Env, n: usize) -> Samples {
    let mut s = Samples::default();
    for i in 0..n {
        let t = Instant::now();
        let p = ProxyProcess::spawn_only(&env.dir, &env.upstream, "", &format!("start{i}"));
        p.wait_ready(Duration::from_secs(10));
        s.v.push(t.elapsed().as_secs_f64() * 1e6);
        drop(p);
    }
    s
}

/// SIGTERM with 10 SSE streams in flight: time until the process exits, and how many of the
/// streams completed (all 5 events each).
pub async fn sigterm_with_streams(env: &Env) -> (Duration, usize) {
    let mut p = ProxyProcess::spawn(&env.dir, &env.upstream, "", "sigterm");
    let client = AnyClient::Plain(plain_client());
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
    let mut complete = 0;
    for s in streams {
        if let Ok(Ok(5)) = s.await {
            complete += 1;
        }
    }
    (took, complete)
}
