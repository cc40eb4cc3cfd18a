//! Test harness: a real-TLS mock upstream, the proxy started in-process on 127.0.0.1:0 with
//! a canary key, a plain-HTTP client, and the captured logs (checked for the canary).
#![allow(dead_code)]

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use llm_keyproxy::config::plan::Plan;
use llm_keyproxy::{run, Bound, Shared};
use mock_upstream::{MockConfig, MockUpstream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The key the proxy injects in every test; grepped for in everything the proxy printed.
pub const CANARY: &str = "sk-KPCANARY0a1b2c3d4e5f6789";

/// Where this test binary's proxy logs go (also grepped by the test script).
fn log_path() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let name = exe.file_stem().unwrap().to_string_lossy().into_owned();
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/test-logs");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(format!("{name}.log"))
}

#[derive(Clone)]
struct FileWriter(Arc<Mutex<std::fs::File>>);

impl std::io::Write for FileWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.lock().unwrap().flush()
    }
}

/// Installs the JSON logger (debug level) once per test binary.
pub fn init_logs() {
    static INIT: OnceLock<()> = OnceLock::new();
    INIT.get_or_init(|| {
        let file = std::fs::File::create(log_path()).unwrap();
        let writer = FileWriter(Arc::new(Mutex::new(file)));
        llm_keyproxy::telemetry::logging::init(
            llm_keyproxy::telemetry::logging::LogFormat::Json,
            "debug",
            move || writer.clone(),
        )
        .unwrap();
    });
}

/// Everything the proxy logged in this test binary so far.
pub fn logs() -> String {
    std::fs::read_to_string(log_path()).unwrap_or_default()
}

/// Asserts the canary key appears nowhere in `text`.
pub fn assert_no_canary(text: &str) {
    assert!(!text.contains("KPCANARY"), "canary key leaked:\n{text}");
    assert!(
        !text.contains("4e5f6789"),
        "canary key suffix leaked:\n{text}"
    );
}

pub fn env_lookup(name: &str) -> Option<String> {
    match name {
        "KP_TEST_KEY" => Some(CANARY.to_string()),
        _ => None,
    }
}

/// A running mock upstream and proxy.
pub struct Harness {
    pub mock: MockUpstream,
    pub admin: SocketAddr,
    pub providers: Vec<SocketAddr>,
    pub shared: Arc<Shared>,
    pub ca_file: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    pub task: Option<JoinHandle<Result<(), String>>>,
}

/// The default providers: `openai` and `anthropic` presets dialing the mock.
pub fn default_providers(mock: SocketAddr) -> String {
    format!(
        "providers:
  openai: {{listen: 127.0.0.1:0, api_key: env:KP_TEST_KEY, upstream_address: '{mock}'}}
  anthropic: {{listen: 127.0.0.1:0, api_key: env:KP_TEST_KEY, upstream_address: '{mock}'}}
  unset: {{preset: openai, listen: 127.0.0.1:0, api_key: env:KP_UNSET_KEY, upstream_address: '{mock}'}}
"
    )
}

impl Harness {
    /// Mock with `cfg`, proxy with the default providers and `limits` YAML (may be empty).
    pub async fn start(cfg: MockConfig, limits: &str) -> Harness {
        Harness::start_with(cfg, |mock| format!("{limits}\n{}", default_providers(mock))).await
    }

    /// Mock with `cfg`; `yaml` gets the mock's address and returns everything but `admin`/`tls`.
    pub async fn start_with(cfg: MockConfig, yaml: impl FnOnce(SocketAddr) -> String) -> Harness {
        init_logs();
        let mock = MockUpstream::start(cfg).await.unwrap();
        let ca_file = std::env::temp_dir().join(format!(
            "kp-ca-{}-{}.pem",
            std::process::id(),
            mock.addr().port()
        ));
        std::fs::write(&ca_file, mock.ca_pem()).unwrap();
        let text = format!(
            "admin: {{listen: 127.0.0.1:0}}\ntls: {{roots: [webpki], extra_ca_file: '{}'}}\n{}",
            ca_file.display(),
            yaml(mock.addr())
        );
        let plan = Plan::from_yaml(&text, &env_lookup).unwrap_or_else(|e| panic!("{e}\n{text}"));
        Harness::serve(mock, plan, ca_file).await
    }

    /// Serves an already-built plan against `mock`.
    pub async fn serve_plan(mock: MockUpstream, plan: Plan, ca_file: PathBuf) -> Harness {
        Harness::serve(mock, plan, ca_file).await
    }

    async fn serve(mock: MockUpstream, plan: Plan, ca_file: PathBuf) -> Harness {
        let bound = Bound::bind(&plan).await.unwrap();
        let admin = bound.admin_addr();
        let providers = bound.provider_addrs();
        let shared = Arc::new(Shared::default());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(run(
            plan,
            bound,
            async move {
                let _ = stopped.await;
            },
            shared.clone(),
        ));
        Harness {
            mock,
            admin,
            providers,
            shared,
            ca_file,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub fn openai(&self) -> SocketAddr {
        self.providers[0]
    }
    pub fn anthropic(&self) -> SocketAddr {
        self.providers[1]
    }
    pub fn unset(&self) -> SocketAddr {
        self.providers[2]
    }

    /// Starts draining (like SIGTERM); `run` returns once in-flight requests finish.
    pub fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.ca_file);
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// A plain-HTTP client (HTTP/1.1, keep-alive) for talking to the proxy.
pub fn client() -> Client<HttpConnector, Full<Bytes>> {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    Client::builder(TokioExecutor::new()).build(http)
}

pub fn post(addr: SocketAddr, path: &str, body: impl Into<Bytes>) -> Request<Full<Bytes>> {
    Request::post(format!("http://{addr}{path}"))
        .header("content-type", "application/json")
        .body(Full::new(body.into()))
        .unwrap()
}

pub fn get(addr: SocketAddr, path: &str) -> Request<Full<Bytes>> {
    Request::get(format!("http://{addr}{path}"))
        .body(Full::new(Bytes::new()))
        .unwrap()
}

/// A whole response: status, headers and body.
pub struct Answer {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {:?}", self.body))
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

pub async fn send(req: Request<Full<Bytes>>) -> Answer {
    let resp = client().request(req).await.unwrap();
    collect(resp).await
}

pub async fn collect(resp: Response<Incoming>) -> Answer {
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    Answer {
        status,
        headers,
        body,
    }
}

/// Reads a streaming body frame by frame, stamping each frame with its arrival time.
pub async fn frames(
    resp: Response<Incoming>,
    limit: Duration,
) -> Result<Vec<(Instant, Bytes)>, String> {
    let mut body = resp.into_body();
    let mut out = Vec::new();
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, body.frame()).await {
            Err(_) => return Err(format!("timed out after {} frames", out.len())),
            Ok(None) => return Ok(out),
            Ok(Some(Err(e))) => return Err(format!("body error after {} frames: {e}", out.len())),
            Ok(Some(Ok(f))) => {
                if let Ok(d) = f.into_data() {
                    out.push((Instant::now(), d));
                }
            }
        }
    }
}

/// Nanoseconds since the UNIX epoch (the mock's `sent_ns` clock).
pub fn now_ns() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// Splits an SSE byte stream into events (separated by a blank line).
pub fn sse_events(bytes: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(bytes)
        .split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(str::to_owned)
        .collect()
}

/// Writes raw bytes to `addr` and returns everything read until close or `limit`.
pub async fn raw(addr: SocketAddr, request: &[u8], limit: Duration) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(limit, s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

pub fn write_stdout(s: &str) {
    let _ = std::io::stdout().write_all(s.as_bytes());
}

/// The admin listener's `/metrics` text.
pub async fn metrics_text(admin: SocketAddr) -> String {
    send(get(admin, "/metrics")).await.text()
}

/// The value of one series in a `/metrics` text, named exactly as exposed (e.g.
/// `keyproxy_upstream_retries_total{provider="openai",reason="refused_stream"}`); 0 when absent.
pub fn metric_value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .map(|v| v.trim().parse().unwrap_or(f64::NAN))
        .unwrap_or(0.0)
}

/// A streaming chat completion (`x-mock-chunks` deltas, `x-mock-gap-ms` apart) through the
/// proxy at `addr`: Ok when it is 200 and carries exactly the mock's deltas in order and the
/// final `data: [DONE]`; else what was wrong (never panics, so it can run in many tasks).
pub async fn chat_stream(addr: SocketAddr, chunks: usize, gap_ms: u64) -> Result<(), String> {
    let req = Request::post(format!("http://{addr}/v1/chat/completions"))
        .header("content-type", "application/json")
        .header("x-mock-chunks", chunks.to_string())
        .header("x-mock-gap-ms", gap_ms.to_string())
        .body(Full::new(Bytes::from_static(
            br#"{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hi"}]}"#,
        )))
        .unwrap();
    let limit = Duration::from_secs(60);
    let resp = tokio::time::timeout(limit, client().request(req))
        .await
        .map_err(|_| "no response head in 60 s".to_owned())?
        .map_err(|e| format!("client error: {e}"))?;
    let status = resp.status().as_u16();
    let body = tokio::time::timeout(limit, resp.into_body().collect())
        .await
        .map_err(|_| "body not complete in 60 s".to_owned())?
        .map_err(|e| format!("body error: {e}"))?
        .to_bytes();
    let text = String::from_utf8_lossy(&body);
    if status != 200 {
        return Err(format!("status {status}: {text}"));
    }
    let events = sse_events(&body);
    if events.last().map(String::as_str) != Some("data: [DONE]") {
        return Err(format!("no final [DONE]: {text}"));
    }
    let mut content = String::new();
    for e in &events[..events.len() - 1] {
        let data = e
            .strip_prefix("data: ")
            .ok_or_else(|| format!("not a data event: {e}"))?;
        let v: serde_json::Value =
            serde_json::from_str(data).map_err(|err| format!("{err}: {data}"))?;
        if let Some(c) = v["choices"][0]["delta"]["content"].as_str() {
            content.push_str(c);
        }
    }
    if content != mock_upstream::expected_text(chunks) {
        return Err(format!("content differs: {content:?}"));
    }
    Ok(())
}

/// Runs `n` copies of `task` at once; panics naming how many failed and the first errors.
pub async fn all_ok<F>(n: usize, task: impl Fn() -> F) -> Duration
where
    F: std::future::Future<Output = Result<(), String>> + Send + 'static,
{
    let start = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..n {
        set.spawn(task());
    }
    let mut errors = Vec::new();
    while let Some(r) = set.join_next().await {
        match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) => errors.push(e),
            Err(e) => errors.push(format!("task: {e}")),
        }
    }
    assert!(
        errors.is_empty(),
        "{} of {n} failed; first: {:#?}",
        errors.len(),
        &errors[..errors.len().min(3)]
    );
    start.elapsed()
}

/// Records a skipped test in `target/test-logs/skipped.txt`, which `scripts/test.sh` counts
/// as skipped rather than passed.
pub fn note_skipped(why: &str) {
    use std::io::Write as _;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-logs");
    let _ = std::fs::create_dir_all(&dir);
    let name = std::thread::current().name().unwrap_or("?").to_owned();
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("skipped.txt"))
    {
        let _ = writeln!(f, "{name}: {why}");
    }
}
