//! The response body on its way to the client: byte counts, the stream idle timeout, the
//! usage tap and the end-of-request hook, observed as frames pass in `poll_frame`; never
//! buffered. (The request body's wrapper is `upstream::body`.)

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use crate::telemetry::usage::UsageTap;
use crate::upstream::pool::UpstreamBody;

pub use crate::upstream::body::{BodyTooLarge, BoxError, RequestBody, RequestStats};

/// How a proxied response ended, for logs and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Completed,
    ClientClosed,
    /// The client accepted no bytes for `limits.client_write_timeout` (docs/security.md).
    ClientStalled,
    UpstreamAborted,
    IdleTimeout,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Completed => "completed",
            Outcome::ClientClosed => "client_closed",
            Outcome::ClientStalled => "client_stalled",
            Outcome::UpstreamAborted => "upstream_aborted",
            Outcome::IdleTimeout => "idle_timeout",
        }
    }
}

/// Told once when the response body is done (by completion, error, or the client leaving).
pub trait OnEnd: Send + 'static {
    fn on_end(self: Box<Self>, outcome: Outcome, response_bytes: u64, tap: Option<UsageTap>);
}

/// No data frame within the idle timeout.
#[derive(Debug, thiserror::Error)]
#[error("upstream stream was idle for longer than {0:?}")]
pub struct IdleTimeout(pub Duration);

/// The upstream's response body on its way to the client: passed frame by frame.
pub struct ResponseBody {
    inner: UpstreamBody,
    idle_timeout: Duration,
    idle: Option<Pin<Box<Sleep>>>,
    last_frame: Instant,
    bytes: u64,
    outcome: Option<Outcome>,
    tap: Option<UsageTap>,
    on_end: Option<Box<dyn OnEnd>>,
}

impl ResponseBody {
    pub fn new(
        inner: UpstreamBody,
        idle_timeout: Duration,
        tap: Option<UsageTap>,
        on_end: Box<dyn OnEnd>,
    ) -> Self {
        let outcome = inner.is_end_stream().then_some(Outcome::Completed);
        ResponseBody {
            inner,
            idle_timeout,
            idle: None,
            last_frame: Instant::now(),
            bytes: 0,
            outcome,
            tap,
            on_end: Some(on_end),
        }
    }

    /// Polls the idle timer. Frames only record when they passed (`last_frame`); the timer
    /// keeps its old deadline and, when that fires, is moved to the real one: no timer work
    /// per frame, one re-arm per idle-timeout period at most.
    fn poll_idle(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            let deadline = self.last_frame + self.idle_timeout;
            let sleep = self
                .idle
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
            ready!(sleep.as_mut().poll(cx));
            if sleep.deadline() >= deadline {
                return Poll::Ready(());
            }
            sleep.as_mut().reset(deadline);
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.bytes += data.len() as u64;
                    if let Some(tap) = &mut this.tap {
                        tap.observe(data);
                    }
                }
                this.last_frame = Instant::now();
                if this.inner.is_end_stream() {
                    this.outcome = Some(Outcome::Completed);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.outcome = Some(Outcome::UpstreamAborted);
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => {
                this.outcome = Some(Outcome::Completed);
                Poll::Ready(None)
            }
            Poll::Pending => match this.poll_idle(cx) {
                Poll::Ready(()) => {
                    this.outcome = Some(Outcome::IdleTimeout);
                    Poll::Ready(Some(Err(Box::new(IdleTimeout(this.idle_timeout)))))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.outcome.is_some()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        if let Some(on_end) = self.on_end.take() {
            on_end.on_end(
                self.outcome.unwrap_or(Outcome::ClientClosed),
                self.bytes,
                self.tap.take(),
            );
        }
    }
}

/// What the proxy answers: a streamed upstream body or a small body of its own.
#[expect(
    clippy::large_enum_variant,
    reason = "the upstream body is the common case; boxing it would allocate per request"
)]
pub enum ProxyBody {
    Upstream(ResponseBody),
    Full(Option<Bytes>),
}

impl ProxyBody {
    pub fn full(bytes: Bytes) -> Self {
        ProxyBody::Full(Some(bytes))
    }

    /// Called just before an unfinished body is dropped because its client stopped accepting
    /// bytes (`limits.client_write_timeout`): it ends as `client_stalled`, not `client_closed`.
    pub fn client_stalled(&mut self) {
        if let ProxyBody::Upstream(b) = self {
            b.outcome.get_or_insert(Outcome::ClientStalled);
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ProxyBody::Upstream(b) => Pin::new(b).poll_frame(cx),
            ProxyBody::Full(b) => Poll::Ready(b.take().map(|d| Ok(Frame::data(d)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Upstream(b) => b.is_end_stream(),
            ProxyBody::Full(b) => b.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Upstream(b) => b.size_hint(),
            ProxyBody::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            ProxyBody::Full(None) => SizeHint::with_exact(0),
        }
    }
}
