//! Upstream connections: TCP (direct or through a CONNECT tunnel), TLS with SNI and ALPN
//! (h2, then http/1.1); connect errors named for the client. `pool` keeps and reuses them.

pub mod body;
pub mod pool;

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use prometheus_client::metrics::gauge::Gauge;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, RootCertStore};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::config::egress::ProxyTarget;
use crate::config::plan::{Limits, ProviderPlan, TlsPlan};
use crate::telemetry::metrics::ProviderMetrics;

/// Longest CONNECT response head accepted from a forward proxy.
const MAX_CONNECT_RESPONSE: usize = 8 * 1024;

/// Why a connection to the upstream could not be made. Messages name hosts, never secrets.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot connect to {target}: {source}")]
    Connect { target: String, source: io::Error },
    #[error("TLS handshake with {host} failed: {source}")]
    Tls { host: String, source: io::Error },
    #[error("cannot reach forward proxy {proxy}: {source}")]
    ProxyUnreachable { proxy: String, source: io::Error },
    #[error("forward proxy {proxy} refused CONNECT {target} with status {status}")]
    ProxyRefused {
        proxy: String,
        target: String,
        status: u16,
    },
    #[error("forward proxy {proxy} sent an invalid CONNECT response: {why}")]
    ProxyProtocol { proxy: String, why: String },
    #[error("connecting to {target}{via} took longer than {after:?}")]
    Timeout {
        target: String,
        /// ` through forward proxy http://host:port` (redacted) when tunnelling, else empty.
        via: String,
        after: Duration,
    },
    #[error("`{0}` is not a valid TLS server name")]
    ServerName(String),
    #[error("{protocol} set-up with {host} failed: {why}")]
    Handshake {
        host: String,
        protocol: &'static str,
        why: String,
    },
}

impl ConnectError {
    /// Bounded label for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            ConnectError::Connect { .. }
            | ConnectError::ServerName(_)
            | ConnectError::Handshake { .. } => "connect",
            ConnectError::Tls { .. } => "tls",
            ConnectError::ProxyUnreachable { .. }
            | ConnectError::ProxyRefused { .. }
            | ConnectError::ProxyProtocol { .. } => "proxy_connect",
            ConnectError::Timeout { .. } => "timeout",
        }
    }
}

/// Builds the rustls client config shared by every upstream.
pub fn tls_config(plan: &TlsPlan) -> Result<Arc<ClientConfig>, String> {
    let mut roots = RootCertStore::empty();
    if plan.webpki {
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    }
    if plan.native {
        let found = rustls_native_certs::load_native_certs();
        if found.certs.is_empty() {
            return Err("tls.roots lists `native` but no system certificates were found".into());
        }
        roots.add_parsable_certificates(found.certs);
    }
    for cert in &plan.extra_cas {
        roots
            .add(cert.clone())
            .map_err(|e| format!("tls.extra_ca_file: a certificate was refused: {e}"))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup failed: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Opens TLS connections to one upstream, directly or through a CONNECT proxy.
#[derive(Clone)]
pub struct Connector {
    tls: TlsConnector,
    /// Open-connection gauges: [h2, http1.1].
    open: Option<Arc<[Gauge; 2]>>,
    /// Dial this `host:port` instead of the URI's authority (`upstream_address`).
    dial: Option<Arc<str>>,
    proxy: Option<Arc<ProxyTarget>>,
    connect_timeout: Duration,
}

impl Connector {
    pub fn new(
        tls: Arc<ClientConfig>,
        dial: Option<String>,
        proxy: Option<ProxyTarget>,
        connect_timeout: Duration,
        open: Option<[Gauge; 2]>,
    ) -> Self {
        Connector {
            tls: TlsConnector::from(tls),
            open: open.map(Arc::new),
            dial: dial.map(Arc::from),
            proxy: proxy.map(Arc::new),
            connect_timeout,
        }
    }

    /// One new connection: TCP (direct or through the CONNECT proxy), then TLS, all within
    /// `connect_timeout`.
    pub async fn connect(&self, host: &str, port: u16) -> Result<TlsConn, ConnectError> {
        let target = match &self.dial {
            Some(d) => d.to_string(),
            None if host.contains(':') => format!("[{host}]:{port}"),
            None => format!("{host}:{port}"),
        };
        let deadline = self.connect_timeout;
        let attempt = async {
            let tcp =
                match &self.proxy {
                    Some(proxy) => tunnel(proxy, &target).await?,
                    None => TcpStream::connect(&target).await.map_err(|source| {
                        ConnectError::Connect {
                            target: target.clone(),
                            source,
                        }
                    })?,
                };
            let _ = tcp.set_nodelay(true);
            let name = ServerName::try_from(host.to_owned())
                .map_err(|_| ConnectError::ServerName(host.to_owned()))?;
            let tls = self
                .tls
                .connect(name, tcp)
                .await
                .map_err(|source| ConnectError::Tls {
                    host: host.to_owned(),
                    source,
                })?;
            let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
            let open = self
                .open
                .as_ref()
                .map(|g| OpenGuard::new(&g[usize::from(!h2)]));
            Ok(TlsConn {
                io: tls,
                h2,
                _open: open,
            })
        };
        match tokio::time::timeout(deadline, attempt).await {
            Ok(result) => result,
            Err(_) => Err(ConnectError::Timeout {
                target,
                via: self
                    .proxy
                    .as_ref()
                    .map(|p| format!(" through forward proxy {p}"))
                    .unwrap_or_default(),
                after: deadline,
            }),
        }
    }
}

/// Opens a TCP connection to `proxy` and asks it for a tunnel to `target` (also the OTLP
/// exporter's way out, given to it by `server::run`).
pub async fn tunnel(proxy: &ProxyTarget, target: &str) -> Result<TcpStream, ConnectError> {
    let shown = proxy.to_string();
    let mut tcp = TcpStream::connect(proxy.address())
        .await
        .map_err(|source| ConnectError::ProxyUnreachable {
            proxy: shown.clone(),
            source,
        })?;
    let _ = tcp.set_nodelay(true);
    let mut head = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n").into_bytes();
    if let Some(auth) = &proxy.authorization {
        head.extend_from_slice(b"Proxy-Authorization: ");
        head.extend_from_slice(auth.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
    tcp.write_all(&head)
        .await
        .map_err(|source| ConnectError::ProxyUnreachable {
            proxy: shown.clone(),
            source,
        })?;

    // Read the response head only: the proxy sends nothing after it until TLS starts.
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 512];
    let end = loop {
        let n = tcp
            .read(&mut chunk)
            .await
            .map_err(|source| ConnectError::ProxyUnreachable {
                proxy: shown.clone(),
                source,
            })?;
        if n == 0 {
            return Err(ConnectError::ProxyProtocol {
                proxy: shown,
                why: "connection closed before a response".into(),
            });
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos + 4;
        }
        if buf.len() > MAX_CONNECT_RESPONSE {
            return Err(ConnectError::ProxyProtocol {
                proxy: shown,
                why: "response head too long".into(),
            });
        }
    };
    let status = parse_status(&buf[..end]).ok_or_else(|| ConnectError::ProxyProtocol {
        proxy: shown.clone(),
        why: "no HTTP status line".into(),
    })?;
    if !(200..300).contains(&status) {
        return Err(ConnectError::ProxyRefused {
            proxy: shown,
            target: target.to_owned(),
            status,
        });
    }
    if end != buf.len() {
        return Err(ConnectError::ProxyProtocol {
            proxy: shown,
            why: "data after the CONNECT response".into(),
        });
    }
    Ok(tcp)
}

fn parse_status(head: &[u8]) -> Option<u16> {
    let line = head.split(|b| *b == b'\n').next()?;
    let mut parts = line.split(|b| *b == b' ');
    let version = parts.next()?;
    if !version.starts_with(b"HTTP/1.") {
        return None;
    }
    std::str::from_utf8(parts.next()?).ok()?.parse().ok()
}

/// A TLS connection to an upstream; `h2` says whether ALPN chose HTTP/2. Counted in its
/// protocol's open-connections gauge while it lives.
pub struct TlsConn {
    io: TlsStream<TcpStream>,
    pub h2: bool,
    _open: Option<OpenGuard>,
}

/// Counts a connection in its protocol's gauge while it is open.
struct OpenGuard(Gauge);

impl OpenGuard {
    fn new(g: &Gauge) -> OpenGuard {
        g.inc();
        OpenGuard(g.clone())
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// The connector of one provider's pools: its egress, counted in the provider's gauges.
pub fn connector(
    tls: Arc<ClientConfig>,
    provider: &ProviderPlan,
    limits: &Limits,
    metrics: &ProviderMetrics,
) -> Connector {
    let open = [metrics.connections("h2"), metrics.connections("http1.1")];
    Connector::new(
        tls,
        provider.upstream_address.clone(),
        provider.proxy.clone(),
        limits.connect_timeout,
        Some(open),
    )
}

/// The connector for WebSocket upgrades: same egress as the pool (direct or CONNECT), TLS
/// offering only `http/1.1` (upgrades are HTTP/1.1), one dedicated connection per tunnel.
pub fn websocket_connector(
    tls: &ClientConfig,
    provider: &ProviderPlan,
    limits: &Limits,
) -> Connector {
    let mut config = tls.clone();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Connector::new(
        Arc::new(config),
        provider.upstream_address.clone(),
        provider.proxy.clone(),
        limits.connect_timeout,
        None,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_status_line() {
        assert_eq!(
            parse_status(b"HTTP/1.1 200 Connection established\r\n\r\n"),
            Some(200)
        );
        assert_eq!(parse_status(b"HTTP/1.0 403 Forbidden\r\n\r\n"), Some(403));
        assert_eq!(parse_status(b"SSH-2.0\r\n\r\n"), None);
    }
}
