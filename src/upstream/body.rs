//! The client's request body on its way upstream: counted, and cut at the body cap while it
//! streams. Observed frame by frame in `poll_frame`; never buffered.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What the request body wrapper tells the handler (shared, so it survives the body's move).
#[derive(Debug, Default)]
pub struct RequestStats {
    pub bytes: AtomicU64,
    pub too_large: AtomicBool,
    /// The client's body failed: malformed framing (e.g. a bad chunk size) or cut short.
    pub client_failed: AtomicBool,
}

/// The body cap was crossed while streaming.
#[derive(Debug, thiserror::Error)]
#[error("request body exceeds the {limit} byte limit")]
pub struct BodyTooLarge {
    pub limit: u64,
}

/// The client's request body on its way upstream, counted and capped.
pub struct RequestBody {
    inner: Source,
    limit: u64,
    seen: u64,
    stats: Arc<RequestStats>,
}

/// Streamed from the client, or already read (only when a model allow-list needs the body).
enum Source {
    Streamed(Incoming),
    Buffered(Option<Bytes>),
}

impl RequestBody {
    pub fn new(inner: Incoming, limit: u64, stats: Arc<RequestStats>) -> Self {
        RequestBody {
            inner: Source::Streamed(inner),
            limit,
            seen: 0,
            stats,
        }
    }

    /// A body already read and checked against the cap.
    pub fn buffered(bytes: Bytes, stats: Arc<RequestStats>) -> Self {
        stats.bytes.store(bytes.len() as u64, Ordering::Relaxed);
        RequestBody {
            seen: bytes.len() as u64,
            limit: u64::MAX,
            inner: Source::Buffered((!bytes.is_empty()).then_some(bytes)),
            stats,
        }
    }

    /// The whole body, when it was read first (`buffered`) and not yet sent; `None` for a
    /// streamed body.
    pub fn buffered_bytes(&self) -> Option<Bytes> {
        match &self.inner {
            Source::Buffered(b) => Some(b.clone().unwrap_or_default()),
            _ => None,
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let inner = match &mut this.inner {
            Source::Streamed(inner) => inner,
            Source::Buffered(b) => return Poll::Ready(b.take().map(|d| Ok(Frame::data(d)))),
        };
        match ready!(Pin::new(inner).poll_frame(cx)) {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    this.seen += data.len() as u64;
                    this.stats.bytes.store(this.seen, Ordering::Relaxed);
                    if this.seen > this.limit {
                        this.stats.too_large.store(true, Ordering::Relaxed);
                        return Poll::Ready(Some(Err(Box::new(BodyTooLarge {
                            limit: this.limit,
                        }))));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Some(Err(e)) => {
                this.stats.client_failed.store(true, Ordering::Relaxed);
                Poll::Ready(Some(Err(Box::new(e))))
            }
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Source::Streamed(inner) => inner.is_end_stream(),
            Source::Buffered(b) => b.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Source::Streamed(inner) => inner.size_hint(),
            Source::Buffered(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
        }
    }
}
