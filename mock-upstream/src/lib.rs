//! A TLS (h2 + http/1.1) mock of the OpenAI, Anthropic and Gemini HTTP APIs, of Bedrock, Vertex
//! AI and Azure OpenAI and their token services, that records every request it receives, for
//! integration tests, benchmarks and the README quickstart.
//!
//! Start one with [`MockUpstream::start`], trust [`MockUpstream::ca_pem`] in the client, connect
//! to [`MockUpstream::addr`] with any SNI from [`MockConfig::hosts`], then assert on
//! [`MockUpstream::requests`].
//!
//! Faults on command: [`MockUpstream::goaway`], [`MockUpstream::freeze_connections`],
//! [`MockUpstream::refuse_streams`], [`MockUpstream::set_h2_max_concurrent_streams`] (a new
//! SETTINGS frame mid-connection, src/faultio.rs) and [`MockUpstream::set_handshake_delay`];
//! what the client did: [`MockUpstream::handshakes`], [`MockUpstream::open_connections`],
//! [`MockUpstream::peak_streams_per_connection`], [`MockUpstream::cancelled_streams`],
//! [`MockUpstream::client_resets`].
//!
//! # Cloud providers and their token services
//!
//! Token services (each records what it received and counts what it issued, see
//! [`MockUpstream::issued_tokens`]; issued credentials live
//! [`DEFAULT_TOKEN_LIFETIME_SECS`] unless [`MockUpstream::set_token_lifetime`] says otherwise):
//!
//! | route | answers |
//! |---|---|
//! | `GET /oidc/token?api-version=2.0&audience=AUD` | GitHub Actions OIDC: needs `authorization: Bearer` [`MockConfig::oidc_request_token`] (None: any); `{"count":1,"value":JWT}`, an unsigned RS256-shaped JWT with `iss` `https://token.actions.githubusercontent.com`, `aud` AUD, `sub` [`OIDC_SUBJECT`], `exp`, `iat`, `jti` `mock-N`; 401 `{"message":..}` |
//! | `POST /sts/` (or `POST /` with `Action=AssumeRoleWithWebIdentity`) | AWS STS XML with a fresh `ASIAMOCK…` key, secret, session token and `Expiration`; the `WebIdentityToken` must be any well-formed JWT with `aud` [`STS_AUDIENCE`] and `exp` in the future (mock-issued or not); 400 `InvalidIdentityToken` / `ExpiredTokenException` / `ValidationError` XML |
//! | `POST /google/token` | OAuth JWT-bearer grant: the RS256 signature must verify with the key of [`google_service_account_json`], `iss` [`SA_EMAIL`], `aud` `https://…/google/token` or `https://oauth2.googleapis.com/token`, `scope` with [`CLOUD_PLATFORM`], `exp - iat <= 3600`, unexpired; `{"access_token":"ya29.mock-N-…","expires_in":L,"token_type":"Bearer"}`; 400 `invalid_grant` |
//! | `POST /google/sts/v1/token` (form or JSON) | token exchange: `subject_token` an unexpired JWT whose `aud` is the `audience` field (`//iam.googleapis.com/…`) or `https:` + it; `{"access_token":"fed.mock-N-…","issued_token_type":..,"token_type":"Bearer","expires_in":L}` |
//! | `POST /google/iam/v1/projects/-/serviceAccounts/{email}:generateAccessToken` (also without `/google/iam`) | impersonation with a live `/google/token` or `/google/sts` bearer, JSON `{"scope":[..]}`; `{"accessToken":"ya29.imp-N-…","expireTime":ISO}`; 401 Google-shaped |
//! | `POST /entra/{tenant}/oauth2/v2.0/token` | Entra ID client credentials: `client_id`, `scope` ending `/.default`, `client_assertion_type` jwt-bearer, `client_assertion` an unexpired JWT with `aud` [`ENTRA_ASSERTION_AUDIENCE`]; `{"token_type":"Bearer","expires_in":L,"ext_expires_in":L,"access_token":JWT}`; 400/401 `{"error":..,"error_description":"AADSTS…"}` |
//!
//! Providers: Bedrock `POST /model/{modelId}/invoke|invoke-with-response-stream|converse|
//! converse-stream` (SigV4 shape, `x-amz-date`, and a key id that is
//! [`MockConfig::aws_access_key_id`] (None: any of AWS's shape) or a live STS one with its
//! `x-amz-security-token`; 403 `{"message":..}` + `x-amzn-errortype`; usage
//! [`bedrock_usage`]; streams are AWS event streams, see [`decode_event_stream`], header
//! `x-mock-split-frames: 1` splits each message over two body frames). Vertex AI
//! `POST /v1/projects/{p}/locations/{l}/publishers/google/models/{m}:generateContent|
//! streamGenerateContent` and `.../publishers/anthropic/models/{m}:rawPredict|streamRawPredict`
//! (a live Google token, or `x-goog-api-key` checked like Gemini's key). Azure OpenAI
//! `POST /openai/deployments/{d}/chat/completions|embeddings?api-version=V` (404 `Resource not
//! found` without `api-version`) and `/openai/v1/chat/completions|embeddings` (`api-key`
//! checked like the other keys, or a live Entra bearer).
//!
//! Controls (any method): `/mock/cloud/lifetime?secs=N`, `/mock/cloud/fail?on=1|0` (token
//! services answer 503 while on), `/mock/cloud/expire` (every issued credential expires now),
//! `/mock/cloud/stats` (each answers [`MockUpstream::cloud_stats`]),
//! `/mock/cloud/aws-credentials` (the STS-issued keys with their secrets, for SigV4 checks), and
//! `/mock/requests?last=N` (the last N non-control requests as [`Recorded::to_json`]).
#![forbid(unsafe_code)]

mod anthropic;
mod aws;
mod azure;
mod body;
mod cloud;
mod eventstream;
mod faultio;
mod frames;
mod gemini;
mod google;
mod h2wire;
mod idp;
mod openai;
mod record;
mod routes;
mod server;
mod sts;
mod tls;
mod tokenwire;
mod vertex;
mod ws;

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

pub use aws::bedrock_usage;
pub use cloud::{AwsCredential, CloudService, DEFAULT_TOKEN_LIFETIME_SECS};
pub use eventstream::{decode_event_stream, encode_event, EventMessage};
pub use google::{google_service_account_json, CLOUD_PLATFORM, SA_EMAIL};
pub use idp::{ENTRA_ASSERTION_AUDIENCE, OIDC_SUBJECT};
pub use record::Recorded;
pub use sts::STS_AUDIENCE;

/// The deterministic assistant text the provider routes generate for `chunks` content deltas
/// (the concatenation of all streamed deltas, and the full text of non-streaming answers).
pub fn expected_text(chunks: usize) -> String {
    (0..chunks).map(chunk_text).collect()
}

/// Text of the `i`-th (0-based) generated content delta.
pub(crate) fn chunk_text(i: usize) -> String {
    format!("Hello from mock chunk {i}. ")
}

/// Which application protocols the mock advertises via ALPN.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Alpn {
    /// Advertise `["h2", "http/1.1"]`.
    #[default]
    Both,
    /// Advertise only `http/1.1`.
    Http1Only,
    /// Advertise only `h2`.
    Http2Only,
}

/// Configuration of a [`MockUpstream`].
#[derive(Clone)]
pub struct MockConfig {
    /// Protocols advertised via ALPN.
    pub alpn: Alpn,
    /// DNS names in the leaf certificate (SAN). Entries that parse as IP addresses become IP
    /// SANs; `127.0.0.1` and `::1` are always added.
    pub hosts: Vec<String>,
    /// When Some, requests whose credential differs get the provider-shaped 401.
    pub expected_key: Option<String>,
    /// Gap between generated SSE chunks of the provider streaming endpoints. Overridable per
    /// request with the header `x-mock-gap-ms`.
    pub sse_gap: Duration,
    /// Fault injection: wait this long after accepting TCP before starting the TLS handshake
    /// (changeable while running with [`MockUpstream::set_handshake_delay`]).
    pub handshake_delay: Duration,
    /// Fault injection: close an http/1.1 connection that has been idle (between requests)
    /// for this long, as servers with short keep-alive timeouts do.
    pub h1_idle_close: Option<Duration>,
    /// SETTINGS_MAX_CONCURRENT_STREAMS advertised on new h2 connections (changeable while
    /// running with [`MockUpstream::set_h2_max_concurrent_streams`]). The mock does not
    /// refuse streams above it: [`MockUpstream::peak_streams_per_connection`] shows whether
    /// the client honoured it.
    pub h2_max_concurrent_streams: u32,
    /// The request token `GET /oidc/token` requires as `authorization: Bearer T` (GitHub's
    /// `ACTIONS_ID_TOKEN_REQUEST_TOKEN`); None: any non-empty one.
    pub oidc_request_token: Option<String>,
    /// The static AWS access key id Bedrock accepts besides live STS-issued ones; None: any
    /// key id of AWS's shape (16-128 of `A-Z0-9`).
    pub aws_access_key_id: Option<String>,
    /// When non-zero, one-frame (non-streamed) bodies end the way many CDN-fronted providers
    /// end them: the data, then this long after it an empty DATA frame with END_STREAM
    /// (http/1.1: the body is simply complete at its `content-length`).
    pub end_stream_gap: Duration,
}

/// The default [`MockConfig::h2_max_concurrent_streams`]: enough for benches to hold
/// thousands of streams on one connection.
pub const DEFAULT_H2_MAX_CONCURRENT_STREAMS: u32 = 100_000;

impl Default for MockConfig {
    fn default() -> Self {
        let hosts = [
            "api.openai.com",
            "api.anthropic.com",
            "api.githubcopilot.com",
            "generativelanguage.googleapis.com",
            "aiplatform.googleapis.com",
            "us-east5-aiplatform.googleapis.com",
            "bedrock-runtime.us-east-1.amazonaws.com",
            "sts.amazonaws.com",
            "oauth2.googleapis.com",
            "sts.googleapis.com",
            "iamcredentials.googleapis.com",
            "login.microsoftonline.com",
            "*.openai.azure.com",
            "upstream.test",
            "localhost",
        ];
        MockConfig {
            alpn: Alpn::Both,
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
            expected_key: None,
            sse_gap: Duration::from_millis(20),
            handshake_delay: Duration::ZERO,
            h1_idle_close: None,
            h2_max_concurrent_streams: DEFAULT_H2_MAX_CONCURRENT_STREAMS,
            oidc_request_token: None,
            aws_access_key_id: None,
            end_stream_gap: Duration::ZERO,
        }
    }
}

impl fmt::Debug for MockConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockConfig")
            .field("alpn", &self.alpn)
            .field("hosts", &self.hosts)
            .field(
                "expected_key",
                &self.expected_key.as_ref().map(|_| "<redacted>"),
            )
            .field("sse_gap", &self.sse_gap)
            .field("handshake_delay", &self.handshake_delay)
            .field("h1_idle_close", &self.h1_idle_close)
            .field("h2_max_concurrent_streams", &self.h2_max_concurrent_streams)
            .field(
                "oidc_request_token",
                &self.oidc_request_token.as_ref().map(|_| "<redacted>"),
            )
            .field("aws_access_key_id", &self.aws_access_key_id)
            .finish()
    }
}

/// State shared by the accept loop, the connection tasks and the [`MockUpstream`] handle.
pub(crate) struct Shared {
    pub(crate) cfg: MockConfig,
    records: Mutex<Vec<Recorded>>,
    handshakes: AtomicUsize,
    cancelled: AtomicUsize,
    /// RST_STREAM frames the client sent.
    client_resets: AtomicUsize,
    changed: Notify,
    ids: AtomicU64,
    /// Bumped by [`MockUpstream::goaway`]: every open connection shuts down gracefully.
    pub(crate) goaway: tokio::sync::watch::Sender<u64>,
    /// The current handshake delay in milliseconds.
    pub(crate) handshake_delay_ms: AtomicU64,
    /// The stream limit advertised on h2 connections; a change is sent to open ones.
    pub(crate) h2_limit: tokio::sync::watch::Sender<u32>,
    /// Bumped by [`MockUpstream::freeze_connections`]: every open connection freezes.
    pub(crate) freeze: tokio::sync::watch::Sender<u64>,
    /// h2 streams still to refuse, and refused so far.
    refuse: AtomicUsize,
    refused: AtomicUsize,
    /// Most streams seen open at once on one h2 connection.
    peak_streams: AtomicUsize,
    /// h2 streams open now, all connections together.
    in_flight: AtomicUsize,
    /// TLS connections open now.
    open_connections: AtomicUsize,
    /// Issued cloud credentials, token-service counters and switches (src/cloud.rs).
    pub(crate) cloud: cloud::Cloud,
}

impl Shared {
    pub(crate) fn new(cfg: MockConfig) -> Shared {
        Shared {
            records: Mutex::new(Vec::new()),
            handshakes: AtomicUsize::new(0),
            cancelled: AtomicUsize::new(0),
            client_resets: AtomicUsize::new(0),
            changed: Notify::new(),
            ids: AtomicU64::new(0),
            goaway: tokio::sync::watch::channel(0).0,
            handshake_delay_ms: AtomicU64::new(cfg.handshake_delay.as_millis() as u64),
            h2_limit: tokio::sync::watch::channel(cfg.h2_max_concurrent_streams).0,
            freeze: tokio::sync::watch::channel(0).0,
            refuse: AtomicUsize::new(0),
            refused: AtomicUsize::new(0),
            peak_streams: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            open_connections: AtomicUsize::new(0),
            cloud: cloud::Cloud::new(),
            cfg,
        }
    }

    fn records(&self) -> MutexGuard<'_, Vec<Recorded>> {
        self.records.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn push_record(&self, rec: Recorded) {
        self.records().push(rec);
        self.changed.notify_waiters();
    }

    pub(crate) fn add_handshake(&self) {
        self.handshakes.fetch_add(1, Ordering::SeqCst);
        self.changed.notify_waiters();
    }

    /// Connections open now: one more until the guard drops.
    pub(crate) fn connection_opened(self: &Arc<Self>) -> OpenConnection {
        self.open_connections.fetch_add(1, Ordering::SeqCst);
        self.changed.notify_waiters();
        OpenConnection(self.clone())
    }

    /// One h2 connection has `n` streams open now.
    pub(crate) fn note_streams(&self, n: usize) {
        self.peak_streams.fetch_max(n, Ordering::SeqCst);
    }

    /// One h2 connection's open streams went from `was` to `now`.
    pub(crate) fn streams_in_flight(&self, was: usize, now: usize) {
        if now > was {
            self.in_flight.fetch_add(now - was, Ordering::SeqCst);
        } else {
            self.in_flight.fetch_sub(was - now, Ordering::SeqCst);
        }
        self.changed.notify_waiters();
    }

    /// True (and counted) when this h2 stream is to be refused.
    pub(crate) fn take_refusal(&self) -> bool {
        let take = self
            .refuse
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if take {
            self.refused.fetch_add(1, Ordering::SeqCst);
            self.changed.notify_waiters();
        }
        take
    }

    pub(crate) fn add_cancelled(&self) {
        self.cancelled.fetch_add(1, Ordering::SeqCst);
        self.changed.notify_waiters();
    }

    pub(crate) fn add_client_reset(&self) {
        self.client_resets.fetch_add(1, Ordering::SeqCst);
        self.changed.notify_waiters();
    }

    /// A fresh, unique id suffix (hex) for generated object and request ids.
    pub(crate) fn next_id(&self) -> String {
        let n = self.ids.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        format!("mock{:012x}{:06x}", nanos & 0xffff_ffff_ffff, n & 0xff_ffff)
    }

    /// Waits until `cond` holds or `timeout` elapses; returns the final value of `cond`.
    async fn wait_until(&self, timeout: Duration, cond: impl Fn(&Self) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if cond(self) {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return cond(self);
            }
        }
    }
}

/// Counts a connection as open until dropped.
pub(crate) struct OpenConnection(Arc<Shared>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.open_connections.fetch_sub(1, Ordering::SeqCst);
        self.0.changed.notify_waiters();
    }
}

/// A running mock server. Dropping it shuts the server down (all its tasks are aborted).
pub struct MockUpstream {
    addr: SocketAddr,
    ca_pem: String,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl MockUpstream {
    /// Starts the mock on `127.0.0.1:0` (an ephemeral port).
    pub async fn start(cfg: MockConfig) -> io::Result<MockUpstream> {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), cfg).await
    }

    /// Starts the mock on `addr`.
    pub async fn start_on(addr: SocketAddr, cfg: MockConfig) -> io::Result<MockUpstream> {
        let material = tls::build(&cfg.hosts, cfg.alpn)?;
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::new(cfg));
        let acceptor = tokio_rustls::TlsAcceptor::from(material.server_config);
        let task = tokio::spawn(server::accept_loop(listener, acceptor, shared.clone()));
        Ok(MockUpstream {
            addr,
            ca_pem: material.ca_pem,
            shared,
            task,
        })
    }

    /// The address the mock listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The CA certificate (PEM) that issued the mock's leaf certificate.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// All requests recorded so far, in arrival order (of body completion).
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.records().clone()
    }

    /// Forgets recorded requests and resets the handshake, cancellation, client-reset,
    /// refused-stream and peak-stream counters.
    pub fn clear(&self) {
        self.shared.records().clear();
        self.shared.handshakes.store(0, Ordering::SeqCst);
        self.shared.cancelled.store(0, Ordering::SeqCst);
        self.shared.client_resets.store(0, Ordering::SeqCst);
        self.shared.refused.store(0, Ordering::SeqCst);
        self.reset_peak_streams();
        self.shared.changed.notify_waiters();
    }

    /// Fault injection: every connection open now shuts down gracefully (h2: GOAWAY, then the
    /// streams in flight finish; http/1.1: closed after the current response). New
    /// connections are served as usual.
    pub fn goaway(&self) {
        self.shared.goaway.send_modify(|n| *n += 1);
    }

    /// Fault injection: TLS handshakes of connections accepted from now on wait `delay`.
    pub fn set_handshake_delay(&self, delay: Duration) {
        self.shared
            .handshake_delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    /// Fault injection: h2 connections advertise SETTINGS_MAX_CONCURRENT_STREAMS = `n` from
    /// now on; every open one is sent a new SETTINGS frame saying so (mid-connection change).
    pub fn set_h2_max_concurrent_streams(&self, n: u32) {
        self.shared.h2_limit.send_replace(n);
    }

    /// Fault injection: the next `n` h2 streams are answered RST_STREAM(REFUSED_STREAM)
    /// without being processed (nor recorded). Adds to any refusals still pending.
    pub fn refuse_streams(&self, n: usize) {
        self.shared.refuse.fetch_add(n, Ordering::SeqCst);
    }

    /// h2 streams refused by [`MockUpstream::refuse_streams`] so far.
    pub fn refused_streams(&self) -> usize {
        self.shared.refused.load(Ordering::SeqCst)
    }

    /// Fault injection: every connection open now stops reading and writing (it answers no
    /// PING, no request, no flow control) until the peer closes it. New connections are served
    /// as usual.
    pub fn freeze_connections(&self) {
        self.shared.freeze.send_modify(|n| *n += 1);
    }

    /// The most streams seen open at once on any single h2 connection (open or half-closed
    /// on the wire: from the client's HEADERS to both END_STREAMs or a reset) since start,
    /// [`MockUpstream::clear`] or [`MockUpstream::reset_peak_streams`].
    pub fn peak_streams_per_connection(&self) -> usize {
        self.shared.peak_streams.load(Ordering::SeqCst)
    }

    /// Restarts [`MockUpstream::peak_streams_per_connection`] from zero (streams open now
    /// count again with the next frame the client sends on their connection).
    pub fn reset_peak_streams(&self) {
        self.shared.peak_streams.store(0, Ordering::SeqCst);
    }

    /// h2 streams open now on all connections together (counted like
    /// [`MockUpstream::peak_streams_per_connection`]).
    pub fn streams_in_flight(&self) -> usize {
        self.shared.in_flight.load(Ordering::SeqCst)
    }

    /// Waits until `streams_in_flight() >= n`: e.g. every stream of a burst is open at the
    /// upstream at once, none queued in the client. False on timeout.
    pub async fn wait_for_streams_in_flight(&self, n: usize, timeout: Duration) -> bool {
        self.shared
            .wait_until(timeout, |s| s.in_flight.load(Ordering::SeqCst) >= n)
            .await
    }

    /// TLS connections open now (handshake completed, not yet closed).
    pub fn open_connections(&self) -> usize {
        self.shared.open_connections.load(Ordering::SeqCst)
    }

    /// Waits until `open_connections() == n`; false on timeout.
    pub async fn wait_for_open_connections(&self, n: usize, timeout: Duration) -> bool {
        self.shared
            .wait_until(timeout, |s| s.open_connections.load(Ordering::SeqCst) == n)
            .await
    }

    /// Completed TLS handshakes.
    pub fn handshakes(&self) -> usize {
        self.shared.handshakes.load(Ordering::SeqCst)
    }

    /// Response bodies dropped (peer reset the stream or closed the connection) before the mock
    /// finished them.
    pub fn cancelled_streams(&self) -> usize {
        self.shared.cancelled.load(Ordering::SeqCst)
    }

    /// RST_STREAM frames received from clients on h2 connections (any stream, any reason):
    /// e.g. a client that resets streams it already read to their end shows here.
    pub fn client_resets(&self) -> usize {
        self.shared.client_resets.load(Ordering::SeqCst)
    }

    /// Waits until `cancelled_streams() >= n`; false on timeout.
    pub async fn wait_for_cancelled(&self, n: usize, timeout: Duration) -> bool {
        self.shared
            .wait_until(timeout, |s| s.cancelled.load(Ordering::SeqCst) >= n)
            .await
    }

    /// Waits until at least `n` requests are recorded; false on timeout.
    pub async fn wait_for_requests(&self, n: usize, timeout: Duration) -> bool {
        self.shared
            .wait_until(timeout, |s| s.records().len() >= n)
            .await
    }
}

impl Drop for MockUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl fmt::Debug for MockUpstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockUpstream")
            .field("addr", &self.addr)
            .field("cfg", &self.shared.cfg)
            .finish_non_exhaustive()
    }
}
