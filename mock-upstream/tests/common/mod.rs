//! Test client for the mock: a hyper-util legacy client over tokio-rustls that trusts the mock's
//! CA, sends SNI `api.openai.com` and connects to the mock's address whatever the URI says.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use mock_upstream::MockUpstream;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Timeout for every client operation.
pub const T: Duration = Duration::from_secs(3);

/// Connects every request to the mock's address with a fixed SNI.
#[derive(Clone)]
pub struct MockConnector {
    addr: SocketAddr,
    tls: TlsConnector,
    sni: ServerName<'static>,
}

impl tower_service::Service<Uri> for MockConnector {
    type Response = TlsConn;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<TlsConn>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let tcp = TcpStream::connect(this.addr).await?;
            tcp.set_nodelay(true)?;
            let tls = this.tls.connect(this.sni, tcp).await?;
            Ok(TlsConn(TokioIo::new(tls)))
        })
    }
}

pub struct TlsConn(TokioIo<tokio_rustls::client::TlsStream<TcpStream>>);

impl hyper::rt::Read for TlsConn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for TlsConn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}

impl Connection for TlsConn {
    fn connected(&self) -> Connected {
        let (_, conn) = self.0.inner().get_ref();
        if conn.alpn_protocol() == Some(b"h2") {
            Connected::new().negotiated_h2()
        } else {
            Connected::new()
        }
    }
}

pub type TestClient = Client<MockConnector, Full<Bytes>>;

/// A rustls client config trusting the mock's CA and offering `alpn`.
pub fn client_config(mock: &MockUpstream, alpn: &[u8]) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(mock.ca_pem().as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![alpn.to_vec()];
    cfg
}

pub fn client(mock: &MockUpstream, h2: bool) -> TestClient {
    let cfg = client_config(mock, if h2 { b"h2" } else { b"http/1.1" });
    let connector = MockConnector {
        addr: mock.addr(),
        tls: TlsConnector::from(Arc::new(cfg)),
        sni: ServerName::try_from("api.openai.com").unwrap(),
    };
    Client::builder(TokioExecutor::new())
        .http2_only(h2)
        .build(connector)
}

pub async fn send(
    c: &TestClient,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> http::Response<Incoming> {
    let mut req = Request::builder()
        .method(method)
        .uri(format!("https://api.openai.com{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(body.into())).unwrap();
    tokio::time::timeout(T, c.request(req))
        .await
        .expect("response head in time")
        .expect("response head")
}

pub async fn call(
    c: &TestClient,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> (StatusCode, HeaderMap, Vec<u8>) {
    let resp = send(c, method, path, headers, body).await;
    let (parts, body) = resp.into_parts();
    let bytes = tokio::time::timeout(T, body.collect())
        .await
        .expect("body in time")
        .expect("body")
        .to_bytes();
    (parts.status, parts.headers, bytes.to_vec())
}
