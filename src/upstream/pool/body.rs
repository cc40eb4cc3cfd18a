//! Bodies on upstream connections: the request body written to an HTTP/2 stream (`Pump`),
//! kept for one resend until the response starts (`Replay`), and the response body handed to
//! the request path (`UpstreamBody`; over HTTP/2 an `H2Body`, src/upstream/pool/recv.rs).

use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use h2::{Reason, SendStream};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use super::h1::Recycle;
use super::recv::H2Body;
use crate::upstream::body::{BoxError, RequestBody};

/// Request bodies up to this size are kept (as shared `Bytes`, no copy) until the response
/// starts, so a stream the upstream refused can be sent again; larger ones are not retried.
const REPLAY_LIMIT: usize = 1024 * 1024;

/// The client's request body, with what has passed kept for one resend.
pub(super) struct Replay {
    body: RequestBody,
    kept: Vec<Bytes>,
    kept_bytes: usize,
    /// Everything that passed is in `kept`.
    whole: bool,
    /// Replaying: the next kept chunk to give again.
    cursor: Option<usize>,
    /// The client's body has ended.
    ended: bool,
}

impl Replay {
    pub fn new(body: RequestBody) -> Replay {
        Replay {
            body,
            kept: Vec::new(),
            kept_bytes: 0,
            whole: true,
            cursor: None,
            ended: false,
        }
    }

    /// Starts the body again from its first byte; false when that is impossible.
    pub fn rewind(&mut self) -> bool {
        if self.whole {
            self.cursor = Some(0);
        }
        self.whole
    }

    /// No resend will happen: stop keeping chunks and free the kept ones.
    pub fn keep_nothing(&mut self) {
        self.whole = false;
        self.kept = Vec::new();
        self.cursor = None;
    }
}

impl Body for Replay {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if let Some(i) = this.cursor {
            if let Some(chunk) = this.kept.get(i) {
                this.cursor = Some(i + 1);
                return Poll::Ready(Some(Ok(Frame::data(chunk.clone()))));
            }
            this.cursor = None;
        }
        if this.ended {
            return Poll::Ready(None);
        }
        let frame = ready!(Pin::new(&mut this.body).poll_frame(cx));
        match &frame {
            Some(Ok(f)) => match f.data_ref() {
                Some(data) if this.whole => {
                    this.kept_bytes += data.len();
                    if this.kept_bytes <= REPLAY_LIMIT {
                        this.kept.push(data.clone());
                    } else {
                        this.keep_nothing();
                    }
                }
                Some(_) => {}
                // Trailers are not kept.
                None => this.keep_nothing(),
            },
            Some(Err(_)) => this.keep_nothing(),
            None => this.ended = true,
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        let replaying = self.cursor.is_some_and(|i| i < self.kept.len());
        !replaying && (self.ended || self.body.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        if self.cursor.is_some() {
            return SizeHint::default();
        }
        self.body.size_hint()
    }
}

/// Writes the request body to its HTTP/2 stream, respecting the peer's flow control.
pub(super) struct Pump {
    stream: SendStream<Bytes>,
    body: Replay,
    done: bool,
}

impl Pump {
    pub fn new(stream: SendStream<Bytes>, body: Replay, done: bool) -> Pump {
        Pump { stream, body, done }
    }

    pub fn done(&self) -> bool {
        self.done
    }

    pub fn keep_nothing(&mut self) {
        self.body.keep_nothing();
    }

    pub fn into_body(self) -> Replay {
        self.body
    }

    /// Writes what it can; on a body error the stream is reset (the upstream request is
    /// cancelled, and the response future fails).
    pub fn poll_step(&mut self, cx: &mut Context<'_>) {
        if self.done {
            return;
        }
        match self.poll_write(cx) {
            Poll::Pending => {}
            Poll::Ready(Ok(())) => self.done = true,
            Poll::Ready(Err(())) => {
                self.stream.send_reset(Reason::CANCEL);
                self.done = true;
            }
        }
    }

    /// Writes the rest of the body (the response has started).
    pub async fn finish(mut self) {
        std::future::poll_fn(|cx| {
            self.poll_step(cx);
            if self.done {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await
    }

    fn poll_write(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ()>> {
        loop {
            // Some window before reading the next chunk (as hyper does): an upstream that
            // reads slowly holds back the client's body instead of buffering it here.
            self.stream.reserve_capacity(1);
            if self.stream.capacity() == 0 {
                loop {
                    match ready!(self.stream.poll_capacity(cx)) {
                        Some(Ok(0)) => {}
                        Some(Ok(_)) => break,
                        Some(Err(_)) | None => return Poll::Ready(Err(())),
                    }
                }
            } else if self.stream.poll_reset(cx).is_ready() {
                return Poll::Ready(Err(()));
            }
            match ready!(Pin::new(&mut self.body).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        let end = self.body.is_end_stream();
                        self.stream.send_data(data, end).map_err(|_| ())?;
                        if end {
                            return Poll::Ready(Ok(()));
                        }
                    }
                    Err(frame) => {
                        if let Ok(trailers) = frame.into_trailers() {
                            return Poll::Ready(
                                self.stream.send_trailers(trailers).map_err(|_| ()),
                            );
                        }
                    }
                },
                Some(Err(_)) => return Poll::Ready(Err(())),
                None => {
                    return Poll::Ready(self.stream.send_data(Bytes::new(), true).map_err(|_| ()))
                }
            }
        }
    }
}

/// A response body from the upstream, passed on frame by frame.
pub enum UpstreamBody {
    /// An HTTP/2 stream; its slot is given back when the stream is done.
    H2(H2Body),
    /// An HTTP/1.1 exchange; the connection goes back to the pool when the body ends.
    H1 {
        body: Incoming,
        recycle: Option<Box<Recycle>>,
    },
    /// A body on a dedicated connection (a refused WebSocket upgrade).
    Plain(Incoming),
}

impl From<Incoming> for UpstreamBody {
    fn from(body: Incoming) -> Self {
        UpstreamBody::Plain(body)
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            UpstreamBody::H2(body) => Pin::new(body).poll_frame(cx),
            UpstreamBody::H1 { body, recycle } => {
                let frame = ready!(Pin::new(&mut *body).poll_frame(cx));
                match &frame {
                    None => Recycle::now(recycle),
                    Some(Ok(_)) if body.is_end_stream() => Recycle::now(recycle),
                    Some(Ok(_)) => {}
                    Some(Err(_)) => *recycle = None,
                }
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            UpstreamBody::Plain(body) => Pin::new(body)
                .poll_frame(cx)
                .map(|f| f.map(|f| f.map_err(Into::into))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::H2(body) => body.is_end_stream(),
            UpstreamBody::H1 { body, .. } | UpstreamBody::Plain(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::H2(body) => body.size_hint(),
            UpstreamBody::H1 { body, .. } | UpstreamBody::Plain(body) => body.size_hint(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::sync::Arc;

    fn body(bytes: &'static [u8]) -> Replay {
        let stats = Arc::new(crate::upstream::body::RequestStats::default());
        Replay::new(RequestBody::buffered(Bytes::from_static(bytes), stats))
    }

    async fn read_all(r: &mut Replay) -> Vec<u8> {
        let mut out = Vec::new();
        while let Some(frame) = r.frame().await {
            out.extend_from_slice(frame.unwrap().data_ref().unwrap());
        }
        out
    }

    #[tokio::test]
    async fn rewound_body_gives_the_same_bytes_again() {
        let mut r = body(b"{\"model\":\"m\"}");
        assert!(!r.is_end_stream());
        assert_eq!(read_all(&mut r).await, b"{\"model\":\"m\"}");
        assert!(r.is_end_stream());
        assert!(r.rewind());
        assert!(!r.is_end_stream());
        assert_eq!(read_all(&mut r).await, b"{\"model\":\"m\"}");
        assert!(r.is_end_stream());
    }

    #[tokio::test]
    async fn nothing_kept_means_no_rewind() {
        let mut r = body(b"abc");
        let _ = read_all(&mut r).await;
        r.keep_nothing();
        assert!(!r.rewind());
        assert!(r.frame().await.is_none(), "the body stays ended");
    }

    #[tokio::test]
    async fn bodies_over_the_replay_limit_are_not_kept() {
        static BIG: [u8; REPLAY_LIMIT + 1] = [b'x'; REPLAY_LIMIT + 1];
        let mut r = body(&BIG);
        assert_eq!(read_all(&mut r).await.len(), BIG.len());
        assert!(!r.rewind());
    }
}
