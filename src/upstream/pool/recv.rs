//! The response body of an HTTP/2 upstream stream, as the request path reads it: ended at its
//! END_STREAM, or as soon as the bytes its `content-length` declared have passed, so a client
//! that stops reading there (hyper does, after the last declared byte) has still read it
//! whole (docs/design.md §5.6). The stream itself is then read to its END_STREAM in the
//! background, not reset: a finished exchange never costs the upstream a CANCEL.

use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use h2::RecvStream;
use http::response::Parts;
use http::{header, StatusCode};
use http_body::{Body, Frame, SizeHint};

use super::Slot;
use crate::upstream::body::BoxError;

/// How long a stream whose declared bytes all arrived may take to send its END_STREAM (or
/// trailers) before it is reset after all.
const END_STREAM_WAIT: Duration = Duration::from_secs(5);

/// The body of one HTTP/2 response; its slot is given back when the stream is done.
pub struct H2Body {
    /// Taken only by `drop`.
    recv: Option<RecvStream>,
    data_done: bool,
    /// Bytes still due by the response's `content-length`; None when it declared none.
    remaining: Option<u64>,
    slot: Option<Slot>,
}

impl H2Body {
    /// `head_request`: the answer to a HEAD declares a length it does not send.
    pub(super) fn new(recv: RecvStream, slot: Slot, head_request: bool, parts: &Parts) -> H2Body {
        let bodiless = head_request
            || parts.status.is_informational()
            || parts.status == StatusCode::NO_CONTENT
            || parts.status == StatusCode::NOT_MODIFIED;
        let remaining = (!bodiless)
            .then(|| parts.headers.get(header::CONTENT_LENGTH))
            .flatten()
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        H2Body {
            recv: Some(recv),
            data_done: false,
            remaining,
            slot: Some(slot),
        }
    }
}

impl Body for H2Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let Some(recv) = this.recv.as_mut() else {
            return Poll::Ready(None);
        };
        if !this.data_done {
            match ready!(recv.poll_data(cx)) {
                Some(Ok(data)) => {
                    // Handed on at once: the window reopens as the client reads.
                    let _ = recv.flow_control().release_capacity(data.len());
                    if let Some(left) = &mut this.remaining {
                        *left = left.saturating_sub(data.len() as u64);
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Some(Err(e)) => return Poll::Ready(Some(Err(Box::new(e)))),
                None => this.data_done = true,
            }
        }
        match ready!(recv.poll_trailers(cx)) {
            Ok(Some(t)) => Poll::Ready(Some(Ok(Frame::trailers(t)))),
            Ok(None) => Poll::Ready(None),
            Err(e) => Poll::Ready(Some(Err(Box::new(e)))),
        }
    }

    /// True at END_STREAM, and once every declared byte has passed (h2 itself refuses DATA
    /// beyond a declared `content-length`, so nothing more can come but trailers).
    fn is_end_stream(&self) -> bool {
        self.remaining == Some(0) || self.recv.as_ref().is_none_or(RecvStream::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

impl Drop for H2Body {
    /// A stream dropped before its end is reset (CANCEL) by h2: right when the client left
    /// midway, wrong when every declared byte was delivered and only END_STREAM is still on
    /// its way. That one is awaited by a task of its own, which keeps the slot until then.
    fn drop(&mut self) {
        let (Some(recv), Some(slot)) = (self.recv.take(), self.slot.take()) else {
            return;
        };
        if self.remaining != Some(0) || recv.is_end_stream() {
            return;
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(await_end(recv, slot));
        }
    }
}

/// Reads a stream whose body was delivered to its END_STREAM (trailers included), bounded.
async fn await_end(mut recv: RecvStream, slot: Slot) {
    let _ = tokio::time::timeout(END_STREAM_WAIT, async {
        while let Some(Ok(data)) = recv.data().await {
            let _ = recv.flow_control().release_capacity(data.len());
        }
        let _ = recv.trailers().await;
    })
    .await;
    drop(recv);
    drop(slot);
}
