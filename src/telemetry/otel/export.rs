//! The export thread: batches ended spans from the bounded queue and sends them as one OTLP
//! `ExportTraceServiceRequest` (written by `encode.rs`) over HTTP/1.1 (`http/protobuf`,
//! POST to the traces URL) or HTTP/2 (`grpc`: the same message in a gRPC frame), with the
//! proxy's own hyper client and TLS roots. Its own thread and runtime: a slow or absent
//! collector delays only this thread; the queue then fills and new spans are dropped.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, HeaderName, HeaderValue, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use opentelemetry_sdk::trace::SpanData;
use tokio::net::TcpStream;

use crate::config::plan::{OtlpProtocol, TracingPlan};
use crate::telemetry::metrics::Metrics;

const GRPC_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
/// The most of a collector's answer that is read.
const MAX_ANSWER: usize = 64 * 1024;
/// At most one `trace_export_failed` line per this interval.
const FAILURE_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// Opens a TCP connection to `host:port` through the egress proxy (a CONNECT tunnel); given
/// by the server, which owns the upstream code (telemetry cannot import it).
pub type Dial = Arc<
    dyn Fn(String) -> Pin<Box<dyn Future<Output = Result<TcpStream, String>> + Send>> + Send + Sync,
>;

/// The running export thread; `join` waits (bounded) for its last batch once the tracer is gone.
pub struct ExportThread(std::thread::JoinHandle<()>);

impl ExportThread {
    /// Waits for the thread to send what is queued, at most `limit`.
    pub async fn join(self, limit: Duration) {
        let handle = self.0;
        let wait = tokio::task::spawn_blocking(move || handle.join());
        let _ = tokio::time::timeout(limit, wait).await;
    }
}

struct Exporter {
    target: Uri,
    protocol: OtlpProtocol,
    headers: Vec<(HeaderName, HeaderValue)>,
    resource: Vec<opentelemetry::KeyValue>,
    tls: Option<tokio_rustls::TlsConnector>,
    timeout: Duration,
    conn: Option<Conn>,
    dial: Option<Dial>,
}

enum Conn {
    H1(http1::SendRequest<Full<Bytes>>),
    H2(http2::SendRequest<Full<Bytes>>),
}

pub(super) fn spawn(
    plan: &TracingPlan,
    tls: &Arc<rustls::ClientConfig>,
    metrics: &Metrics,
    queue: Arc<super::queue::Queue>,
    dial: Option<Dial>,
) -> std::io::Result<ExportThread> {
    let target = match plan.protocol {
        OtlpProtocol::HttpProtobuf => plan.endpoint.clone(),
        OtlpProtocol::Grpc => {
            let mut parts = plan.endpoint.clone().into_parts();
            parts.path_and_query = Some(http::uri::PathAndQuery::from_static(GRPC_PATH));
            Uri::from_parts(parts).unwrap_or_else(|_| plan.endpoint.clone())
        }
    };
    let tls = (target.scheme_str() == Some("https")).then(|| {
        let mut config = (**tls).clone();
        config.alpn_protocols = match plan.protocol {
            OtlpProtocol::Grpc => vec![b"h2".to_vec()],
            OtlpProtocol::HttpProtobuf => vec![b"http/1.1".to_vec()],
        };
        tokio_rustls::TlsConnector::from(Arc::new(config))
    });
    let resource = plan
        .resource
        .iter()
        .map(|(k, v)| opentelemetry::KeyValue::new(k.clone(), v.clone()))
        .collect();
    let mut exporter = Exporter {
        target,
        protocol: plan.protocol,
        headers: plan.headers.clone(),
        resource,
        tls,
        timeout: plan.export_timeout,
        conn: None,
        dial,
    };
    let delay = plan.schedule_delay;
    let exported = metrics.trace_spans_exported.clone();
    let dropped = metrics.trace_spans_dropped.clone();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let handle = std::thread::Builder::new()
        .name("otel-export".into())
        .spawn(move || {
            let mut last_failure_log: Option<Instant> = None;
            loop {
                let (spans, done) = queue.take(delay);
                if !spans.is_empty() {
                    let n = spans.len() as u64;
                    match runtime.block_on(exporter.export(spans)) {
                        Ok(()) => {
                            exported.inc_by(n);
                        }
                        Err(why) => {
                            dropped.inc_by(n);
                            let quiet = last_failure_log
                                .is_some_and(|t| t.elapsed() < FAILURE_LOG_INTERVAL);
                            if !quiet {
                                last_failure_log = Some(Instant::now());
                                tracing::warn!(
                                    event = "trace_export_failed",
                                    spans = n,
                                    reason = why
                                );
                            }
                        }
                    }
                }
                if done {
                    break;
                }
            }
        })?;
    Ok(ExportThread(handle))
}

impl Exporter {
    /// Sends one batch within the export timeout; a failure on a reused connection is tried
    /// once more on a new one (the collector may have closed it while idle).
    async fn export(&mut self, spans: Vec<SpanData>) -> Result<(), String> {
        let Some(scope) = spans.first().map(|s| s.instrumentation_scope.clone()) else {
            return Ok(());
        };
        let message = super::encode::export_request(&spans, &self.resource, &scope);
        drop(spans);
        let body = match self.protocol {
            OtlpProtocol::HttpProtobuf => Bytes::from(message),
            OtlpProtocol::Grpc => {
                // The gRPC frame: not compressed, then the length (big-endian u32).
                let len = u32::try_from(message.len()).map_err(|_| "batch too large")?;
                let mut framed = Vec::with_capacity(message.len() + 5);
                framed.push(0);
                framed.extend_from_slice(&len.to_be_bytes());
                framed.extend_from_slice(&message);
                Bytes::from(framed)
            }
        };
        let limit = self.timeout;
        let attempt = async {
            let reused = self.conn.is_some();
            match self.send(body.clone()).await {
                Err(_) if reused => self.send(body).await,
                other => other,
            }
        };
        let result = match tokio::time::timeout(limit, attempt).await {
            Ok(r) => r,
            Err(_) => Err(format!("no answer within {}ms", limit.as_millis())),
        };
        if result.is_err() {
            self.conn = None;
        }
        result
    }

    async fn send(&mut self, body: Bytes) -> Result<(), String> {
        if self.conn.is_none() {
            self.conn = Some(self.connect().await?);
        }
        // HTTP/1.1 wants the origin form (and Host); HTTP/2 the whole URI (:authority).
        let h1 = self.protocol == OtlpProtocol::HttpProtobuf;
        let mut req = match (h1, self.target.path_and_query()) {
            (true, Some(pq)) => Request::post(pq.as_str()),
            _ => Request::post(self.target.clone()),
        };
        let content_type = match self.protocol {
            OtlpProtocol::HttpProtobuf => "application/x-protobuf",
            OtlpProtocol::Grpc => "application/grpc",
        };
        req = req.header(header::CONTENT_TYPE, content_type);
        if let Some(host) = self.target.authority().filter(|_| h1) {
            req = req.header(header::HOST, host.as_str());
        }
        if self.protocol == OtlpProtocol::Grpc {
            req = req.header(header::TE, "trailers");
        }
        for (name, value) in &self.headers {
            req = req.header(name, value);
        }
        let req = req
            .body(Full::new(body))
            .map_err(|_| "invalid export request".to_string())?;
        let resp = match self.conn.as_mut() {
            Some(Conn::H1(s)) => s.send_request(req).await,
            Some(Conn::H2(s)) => s.send_request(req).await,
            None => return Err("no connection".into()),
        };
        let resp = resp.map_err(|e| {
            self.conn = None;
            format!("the collector connection failed: {e}")
        })?;
        let status = resp.status();
        let grpc_in_headers = resp.headers().get("grpc-status").cloned();
        // The answer is read (for gRPC's trailers) but bounded: nothing in it is needed.
        let collected = http_body_util::Limited::new(resp.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| format!("reading the collector's answer failed: {e}"))?;
        if !status.is_success() {
            return Err(format!("the collector answered {}", status.as_u16()));
        }
        if self.protocol == OtlpProtocol::Grpc {
            let grpc = grpc_in_headers.or_else(|| {
                collected
                    .trailers()
                    .and_then(|t| t.get("grpc-status").cloned())
            });
            match grpc.as_ref().map(HeaderValue::as_bytes) {
                Some(b"0") => {}
                Some(code) => {
                    return Err(format!(
                        "the collector answered grpc-status {}",
                        String::from_utf8_lossy(code)
                    ))
                }
                None => return Err("the collector's answer has no grpc-status".into()),
            }
        }
        Ok(())
    }

    async fn connect(&self) -> Result<Conn, String> {
        let host = self.target.host().unwrap_or_default();
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let https = self.tls.is_some();
        let port = self
            .target
            .port_u16()
            .unwrap_or(if https { 443 } else { 80 });
        let tcp = match &self.dial {
            Some(dial) => {
                let target = match host.contains(':') {
                    true => format!("[{host}]:{port}"),
                    false => format!("{host}:{port}"),
                };
                dial(target).await?
            }
            None => TcpStream::connect((host, port))
                .await
                .map_err(|e| format!("cannot connect to the collector: {}", e.kind()))?,
        };
        let _ = tcp.set_nodelay(true);
        match &self.tls {
            None => self.handshake(TokioIo::new(tcp)).await,
            Some(tls) => {
                let name = rustls::pki_types::ServerName::try_from(host.to_owned())
                    .map_err(|_| "the collector's host is not a valid TLS name".to_string())?;
                let stream = tls
                    .connect(name, tcp)
                    .await
                    .map_err(|e| format!("TLS with the collector failed: {e}"))?;
                self.handshake(TokioIo::new(stream)).await
            }
        }
    }

    async fn handshake<T>(&self, io: TokioIo<T>) -> Result<Conn, String>
    where
        T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let failed = |e: hyper::Error| format!("the collector handshake failed: {e}");
        match self.protocol {
            OtlpProtocol::HttpProtobuf => {
                let (send, conn) = http1::handshake(io).await.map_err(failed)?;
                tokio::spawn(conn);
                Ok(Conn::H1(send))
            }
            OtlpProtocol::Grpc => {
                let (send, conn) = http2::handshake(TokioExecutor::new(), io)
                    .await
                    .map_err(failed)?;
                tokio::spawn(conn);
                Ok(Conn::H2(send))
            }
        }
    }
}
