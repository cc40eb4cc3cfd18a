//! The response body type of every mock response: either a single buffered frame, or a paced
//! sequence of frames produced lazily (so timestamps are taken right before hyper gets them).
//! A body dropped before it yielded its final frame counts as a cancelled stream.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::Sleep;

use crate::Shared;

/// What a paced body's generator produces for frame index `i`.
pub(crate) enum Step {
    /// A data frame; more may follow (after the gap).
    Data(Bytes),
    /// The final data frame; the body ends right after it.
    Last(Bytes),
    /// The body ends (no frame).
    End,
    /// The body yields an error: an h2 stream reset / an http/1.1 connection close.
    Fail,
    /// The body never produces anything again (until the peer goes away).
    Hang,
}

type Generator = Box<dyn FnMut(usize) -> Step + Send>;

struct Paced {
    generator: Generator,
    next: usize,
    gap: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
    hanging: bool,
    size: Option<u64>,
}

enum Kind {
    Full(Option<Bytes>),
    Paced(Paced),
}

/// A mock response body; see the module docs.
pub(crate) struct MockBody {
    kind: Kind,
    done: bool,
    shared: Arc<Shared>,
    /// When set, every frame is gzip-compressed (sync-flushed, so events still stream).
    gzip: Option<flate2::write::GzEncoder<Vec<u8>>>,
}

impl MockBody {
    /// A body of one frame (or none, when `data` is empty); with
    /// [`crate::MockConfig::end_stream_gap`], the end follows the frame after that gap.
    pub(crate) fn full(shared: &Arc<Shared>, data: impl Into<Bytes>) -> MockBody {
        let data: Bytes = data.into();
        let done = data.is_empty();
        let gap = shared.cfg.end_stream_gap;
        if !done && !gap.is_zero() {
            let size = Some(data.len() as u64);
            return MockBody::paced(shared, gap, size, move |i| match i {
                0 => Step::Data(data.clone()),
                _ => Step::End,
            });
        }
        MockBody {
            kind: Kind::Full((!done).then_some(data)),
            done,
            shared: shared.clone(),
            gzip: None,
        }
    }

    /// The same body, gzip-compressed frame by frame (`content-encoding: gzip`).
    pub(crate) fn gzipped(mut self) -> MockBody {
        self.gzip = Some(flate2::write::GzEncoder::new(
            Vec::new(),
            flate2::Compression::default(),
        ));
        self
    }

    /// Compresses one plain frame, or ends the gzip stream when the plain body ended.
    fn compress(
        &mut self,
        plain: Poll<Option<Result<Frame<Bytes>, io::Error>>>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        use std::io::Write;
        let Some(enc) = self.gzip.as_mut() else {
            return plain;
        };
        match plain {
            Poll::Ready(Some(Ok(frame))) => {
                let data = frame.into_data().unwrap_or_default();
                let _ = enc.write_all(&data);
                let _ = enc.flush();
                let out = std::mem::take(enc.get_mut());
                Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))))
            }
            Poll::Ready(None) => match self.gzip.take() {
                Some(enc) => {
                    let tail = enc.finish().unwrap_or_default();
                    Poll::Ready(Some(Ok(Frame::data(Bytes::from(tail)))))
                }
                None => Poll::Ready(None),
            },
            other => other,
        }
    }

    /// A body whose frame `i` is `generator(i)`. Frame 0 is produced immediately, then `gap`
    /// passes before each following frame. `size` is the exact total length, when known
    /// (sent as `content-length`).
    pub(crate) fn paced(
        shared: &Arc<Shared>,
        gap: Duration,
        size: Option<u64>,
        generator: impl FnMut(usize) -> Step + Send + 'static,
    ) -> MockBody {
        MockBody {
            kind: Kind::Paced(Paced {
                generator: Box::new(generator),
                next: 0,
                gap,
                sleep: None,
                hanging: false,
                size,
            }),
            done: false,
            shared: shared.clone(),
            gzip: None,
        }
    }

    /// A body yielding `frames` one per frame, `gap` apart.
    pub(crate) fn frames(shared: &Arc<Shared>, gap: Duration, frames: Vec<Bytes>) -> MockBody {
        let n = frames.len();
        MockBody::paced(shared, gap, None, move |i| match i {
            i if i + 1 < n => Step::Data(frames[i].clone()),
            i if i + 1 == n => Step::Last(frames[i].clone()),
            _ => Step::End,
        })
    }
}

impl Body for MockBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        let plain = this.poll_plain(cx);
        this.compress(plain)
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.gzip.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        if self.gzip.is_some() {
            return SizeHint::default();
        }
        match &self.kind {
            Kind::Full(Some(data)) if !self.done => SizeHint::with_exact(data.len() as u64),
            Kind::Full(_) => SizeHint::with_exact(0),
            Kind::Paced(Paced { size: Some(n), .. }) => SizeHint::with_exact(*n),
            Kind::Paced(_) => SizeHint::default(),
        }
    }
}

impl MockBody {
    fn poll_plain(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self;
        if this.done {
            return Poll::Ready(None);
        }
        let paced = match &mut this.kind {
            Kind::Full(data) => {
                this.done = true;
                return Poll::Ready(data.take().map(|d| Ok(Frame::data(d))));
            }
            Kind::Paced(paced) => paced,
        };
        if paced.hanging {
            return Poll::Pending;
        }
        if let Some(sleep) = paced.sleep.as_mut() {
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            paced.sleep = None;
        }
        let step = (paced.generator)(paced.next);
        paced.next += 1;
        if let (Step::Data(d) | Step::Last(d), Some(left)) = (&step, paced.size.as_mut()) {
            *left = left.saturating_sub(d.len() as u64);
        }
        match step {
            Step::Data(data) => {
                if !paced.gap.is_zero() {
                    paced.sleep = Some(Box::pin(tokio::time::sleep(paced.gap)));
                }
                Poll::Ready(Some(Ok(Frame::data(data))))
            }
            Step::Last(data) => {
                this.done = true;
                Poll::Ready(Some(Ok(Frame::data(data))))
            }
            Step::End => {
                this.done = true;
                Poll::Ready(None)
            }
            Step::Fail => {
                this.done = true;
                Poll::Ready(Some(Err(io::Error::other(
                    "mock-upstream: aborted response",
                ))))
            }
            Step::Hang => {
                paced.hanging = true;
                Poll::Pending
            }
        }
    }
}

impl Drop for MockBody {
    fn drop(&mut self) {
        if !self.done || self.gzip.is_some() {
            self.shared.add_cancelled();
        }
    }
}
