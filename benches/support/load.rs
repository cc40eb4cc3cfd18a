//! Clients and load loops: sequential latency, open-loop fixed rate, closed-loop throughput, SSE
//! streams with every event checked, uploads, the 413 path, and streams held open.
//!
//! Nothing here waits on a target for ever: a response head, a whole small body, each SSE frame
//! and each upload get [`REQUEST_TIMEOUT`] (a timed-out request counts as failed), and no loop
//! opens more than [`MAX_CONNECTING`] connections at once or keeps more than [`MAX_IN_FLIGHT`]
//! requests outstanding. A burst of thousands of connects to a slow single-threaded peer (the
//! node peer: one JavaScript thread, listen backlog 511) overflows its accept queue; the kernel
//! then drops the handshake's last ACK (or answers with a SYN cookie) and the client holds a
//! connection the server never accepted: a request written to it waits on TCP retransmission
//! backoff for minutes.

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;

/// The longest the bench waits for a response head, a small body, the next SSE frame or an upload.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Most requests outstanding at once in the open loop ([`fixed_rate`]): a target that falls
/// further behind is not keeping up with the rate, and the requests due meanwhile are skipped.
pub const MAX_IN_FLIGHT: usize = 256;

/// Most connections being opened at once ([`warm_connections`], [`hold_streams`]): half the
/// node peer's listen backlog (Node's default, 511).
pub const MAX_CONNECTING: usize = 256;

/// `fut`, or Err("timed out after ...") after `limit`.
pub async fn within<T>(
    limit: Duration,
    fut: impl std::future::Future<Output = Result<T, String>>,
) -> Result<T, String> {
    tokio::time::timeout(limit, fut)
        .await
        .unwrap_or_else(|_| Err(format!("timed out after {} s", limit.as_secs())))
}

pub type DirectClient = Client<super::Direct, Full<Bytes>>;
pub type PlainClient = Client<HttpConnector, Full<Bytes>>;

/// A client for one target: TLS (h2 or http/1.1 by ALPN) straight to the mock, or plain
/// HTTP/1.1 to a proxy's loopback listener.
#[derive(Clone)]
pub enum AnyClient {
    Direct(DirectClient),
    Plain(PlainClient),
}

pub fn plain_client() -> PlainClient {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(20_000)
        .build(http)
}

type Resp = http::Response<hyper::body::Incoming>;

impl AnyClient {
    /// The response head, within [`REQUEST_TIMEOUT`].
    pub async fn request(&self, req: Request<Full<Bytes>>) -> Result<Resp, String> {
        within(REQUEST_TIMEOUT, async {
            let resp = match self {
                AnyClient::Direct(c) => c.request(req).await,
                AnyClient::Plain(c) => c.request(req).await,
            };
            resp.map_err(|e| format!("{e:?}"))
        })
        .await
    }

    /// A GET carrying client credentials the proxies must remove or replace.
    pub async fn get(&self, url: &str) -> Result<Resp, String> {
        let req = Request::get(url)
            .header("authorization", "Bearer client-placeholder")
            .header("x-api-key", "client-placeholder")
            .body(Full::new(Bytes::new()))
            .map_err(|e| e.to_string())?;
        self.request(req).await
    }

    pub async fn post(&self, url: &str, body: Bytes) -> Result<Resp, String> {
        let req = Request::post(url)
            .header("content-type", "application/octet-stream")
            .header("authorization", "Bearer client-placeholder")
            .body(Full::new(body))
            .map_err(|e| e.to_string())?;
        self.request(req).await
    }
}

/// GET and read the whole body within [`REQUEST_TIMEOUT`]; Err on a transport error, a timeout
/// or a non-2xx status.
pub async fn get_all(c: &AnyClient, url: &str) -> Result<(), String> {
    within(REQUEST_TIMEOUT, async {
        let resp = c.get(url).await?;
        let status = resp.status();
        resp.into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?;
        if !status.is_success() {
            return Err(format!("status {status}"));
        }
        Ok(())
    })
    .await
}

/// Microsecond samples, and how many attempts failed.
#[derive(Default, Clone)]
pub struct Samples {
    pub v: Vec<f64>,
    pub errors: u64,
}

impl Samples {
    pub fn p(&self, pct: f64) -> f64 {
        if self.v.is_empty() {
            return f64::NAN;
        }
        let mut v = self.v.clone();
        v.sort_by(|a, b| a.total_cmp(b));
        let i = ((pct / 100.0) * (v.len() - 1) as f64).round() as usize;
        v[i.min(v.len() - 1)]
    }
}

/// The median of some figures (NaN when empty).
pub fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Sequential requests on one connection; latency per request.
pub async fn latency_1conn(c: &AnyClient, url: &str, n: usize) -> Samples {
    for _ in 0..(n / 10).max(10) {
        let _ = get_all(c, url).await;
    }
    let mut s = Samples::default();
    for _ in 0..n {
        let t = Instant::now();
        match get_all(c, url).await {
            Ok(()) => s.v.push(t.elapsed().as_secs_f64() * 1e6),
            Err(_) => s.errors += 1,
        }
    }
    s
}

/// Requests started at a fixed rate regardless of completions (open loop). Tokio's timer has
/// 1 ms resolution, so requests leave in 1 ms batches (5 at a time at 5k/s); latency is timed
/// from each request's actual start. A request due while [`MAX_IN_FLIGHT`] are outstanding is
/// not sent (the target is not keeping up with the rate; each waiting request would need a
/// connection of its own): returns the samples and how many requests were skipped.
pub async fn fixed_rate(c: &AnyClient, url: &str, rate: u64, secs: u64) -> (Samples, u64) {
    let total = rate * secs;
    let every = Duration::from_secs_f64(1.0 / rate as f64);
    let start = tokio::time::Instant::now();
    let gate = Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT));
    let mut skipped = 0;
    let mut tasks = Vec::with_capacity(total as usize);
    for i in 0..total {
        tokio::time::sleep_until(start + every * i as u32).await;
        let Ok(permit) = gate.clone().try_acquire_owned() else {
            skipped += 1;
            continue;
        };
        let (c, url) = (c.clone(), url.to_owned());
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            let r = get_all(&c, &url)
                .await
                .ok()
                .map(|_| t.elapsed().as_secs_f64() * 1e6);
            drop(permit);
            r
        }));
    }
    let mut s = Samples::default();
    for t in tasks {
        match t.await {
            Ok(Some(v)) => s.v.push(v),
            _ => s.errors += 1,
        }
    }
    (s, skipped)
}

pub struct Throughput {
    pub count: u64,
    pub errors: u64,
    pub secs: f64,
}

impl Throughput {
    pub fn rps(&self) -> f64 {
        self.count as f64 / self.secs
    }
}

/// `conns` workers issuing requests back to back for `secs`.
pub async fn closed_loop(c: &AnyClient, url: &str, conns: usize, secs: f64) -> Throughput {
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let (c, url) = (c.clone(), url.to_owned());
        tasks.push(tokio::spawn(async move {
            let (mut n, mut e) = (0u64, 0u64);
            while Instant::now() < deadline {
                match get_all(&c, &url).await {
                    Ok(()) => n += 1,
                    Err(_) => e += 1,
                }
            }
            (n, e)
        }));
    }
    let (mut count, mut errors) = (0, 0);
    for t in tasks {
        let (n, e) = t.await.unwrap_or((0, 1));
        count += n;
        errors += e;
    }
    Throughput {
        count,
        errors,
        secs: start.elapsed().as_secs_f64(),
    }
}

pub struct SseResult {
    pub events: u64,
    pub bytes: u64,
    pub secs: f64,
    /// Events lost, merged, reordered or not parseable; failed streams count all their events.
    pub errors: u64,
    pub ttfb: Samples,
    pub lag: Samples,
}

impl SseResult {
    /// No figures (every one NaN): a peer's failed run, left out of the report.
    pub fn missing() -> SseResult {
        SseResult {
            events: 0,
            bytes: 0,
            secs: f64::NAN,
            errors: 0,
            ttfb: Samples::default(),
            lag: Samples::default(),
        }
    }
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

/// `n` concurrent SSE streams of `events` each, stream i started `i * stagger` after the first;
/// every event checked for order and count.
pub async fn sse_streams(
    c: &AnyClient,
    url: &str,
    n: usize,
    events: usize,
    stagger: Duration,
) -> SseResult {
    let start = Instant::now();
    let t0 = tokio::time::Instant::now();
    let mut tasks = Vec::new();
    for i in 0..n {
        let (c, url) = (c.clone(), url.to_owned());
        let at = t0 + stagger * i as u32;
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until(at).await;
            one_stream(&c, &url, events).await
        }));
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
                r.ttfb.v.push(ttfb);
                r.lag.v.extend(lags);
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

/// One SSE stream: (events, bytes, time to first byte in us, per-event lag in us).
pub async fn one_stream(
    c: &AnyClient,
    url: &str,
    events: usize,
) -> Result<(u64, u64, f64, Vec<f64>), String> {
    let t = Instant::now();
    let resp = c.get(url).await?;
    if !resp.status().is_success() {
        return Err(format!("status {}", resp.status()));
    }
    let mut body = resp.into_body();
    let mut buf = Vec::new();
    let mut next = 0usize;
    let mut bytes = 0u64;
    let mut ttfb = None;
    let mut lags = Vec::with_capacity(events);
    loop {
        let frame = tokio::time::timeout(REQUEST_TIMEOUT, body.frame())
            .await
            .map_err(|_| format!("no data for {} s", REQUEST_TIMEOUT.as_secs()))?;
        let Some(frame) = frame else {
            break;
        };
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
    if !buf.is_empty() {
        return Err("trailing partial event".into());
    }
    Ok((next as u64, bytes, ttfb.unwrap_or(f64::NAN), lags))
}

/// `n` uploads of `size` bytes, answered 200 by `/mock/echo` with the length it received; MB/s.
/// Each upload (sending the body, the answer) within [`REQUEST_TIMEOUT`].
pub async fn upload(c: &AnyClient, url: &str, size: usize, n: usize) -> Result<f64, String> {
    let body = Bytes::from(vec![b'u'; size]);
    let start = Instant::now();
    for _ in 0..n {
        let (status, got) = within(REQUEST_TIMEOUT, async {
            let resp = c.post(url, body.clone()).await?;
            let status = resp.status();
            let got = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            Ok((status, got))
        })
        .await?;
        if status != 200 {
            return Err(format!("upload answered {status}"));
        }
        let v: serde_json::Value = serde_json::from_slice(&got).map_err(|e| e.to_string())?;
        if v["len"].as_u64() != Some(size as u64) {
            return Err(format!("upstream received {} of {size} bytes", v["len"]));
        }
    }
    Ok((size * n) as f64 / start.elapsed().as_secs_f64() / 1e6)
}

/// A declared 11 MiB body (head only, over a raw socket): the 413 comes before any of it is
/// sent. Returns (status, microseconds to the status line).
pub fn too_large(port: u16) -> (u16, f64) {
    let t = Instant::now();
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)) else {
        return (0, f64::NAN);
    };
    let _ = s.set_nodelay(true);
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = write!(
        s,
        "POST /mock/echo HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        11 << 20
    );
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).unwrap_or(0);
    let took = t.elapsed().as_secs_f64() * 1e6;
    let status = std::str::from_utf8(&buf[..n])
        .ok()
        .and_then(|t| t.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    (status, took)
}

/// Opens `n` client connections to a target and leaves them idle in `c`'s pool, at most
/// [`MAX_CONNECTING`] being opened at once: each carries one GET of `url` (a short response)
/// whose body is read only once every one of the `n` has its response head, so no connection is
/// reused for another of them. Returns how many got a 2xx head (within [`REQUEST_TIMEOUT`]).
pub async fn warm_connections(c: &AnyClient, url: &str, n: usize) -> usize {
    let gate = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTING));
    let barrier = Arc::new(tokio::sync::Barrier::new(n));
    let mut tasks = Vec::with_capacity(n);
    for _ in 0..n {
        let (c, url, gate, barrier) = (c.clone(), url.to_owned(), gate.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            let resp = match gate.acquire_owned().await {
                Ok(_permit) => c.get(&url).await.ok(),
                Err(_) => None,
            };
            // Every task reaches the barrier, whatever became of its request.
            barrier.wait().await;
            let resp = resp.filter(|r| r.status().is_success())?;
            within(REQUEST_TIMEOUT, async {
                resp.into_body().collect().await.map_err(|e| e.to_string())
            })
            .await
            .ok()
        }));
    }
    let mut ok = 0;
    for t in tasks {
        if let Ok(Some(_)) = t.await {
            ok += 1;
        }
    }
    ok
}

/// Opens `n` streams (at most [`MAX_CONNECTING`] connecting at once; each must answer 2xx and
/// send its first event within 30 s, and all of them must be open within 30 s + 10 ms per
/// stream) that stay open, calls `measure` while they are, then closes them.
/// Returns (streams held, what `measure` returned).
pub async fn hold_streams<T>(
    c: &AnyClient,
    url: &str,
    n: usize,
    measure: impl FnOnce() -> T,
) -> (usize, T) {
    let gate = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTING));
    let deadline =
        tokio::time::Instant::now() + REQUEST_TIMEOUT + Duration::from_millis(10) * n as u32;
    let mut tasks = Vec::with_capacity(n);
    for _ in 0..n {
        let (c, url, gate) = (c.clone(), url.to_owned(), gate.clone());
        tasks.push(tokio::spawn(async move {
            let open = async {
                let _permit = gate.acquire_owned().await.ok()?;
                let open = async {
                    let resp = c.get(&url).await.ok()?;
                    if !resp.status().is_success() {
                        return None;
                    }
                    let mut body = resp.into_body();
                    body.frame().await?.ok()?;
                    Some(body)
                };
                tokio::time::timeout(REQUEST_TIMEOUT, open)
                    .await
                    .ok()
                    .flatten()
            };
            tokio::time::timeout_at(deadline, open).await.ok().flatten()
        }));
    }
    let mut held = Vec::with_capacity(n);
    for t in tasks {
        if let Ok(Some(b)) = t.await {
            held.push(b);
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let m = measure();
    let count = held.len();
    drop(held);
    (count, m)
}
