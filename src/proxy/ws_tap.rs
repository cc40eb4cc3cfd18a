//! The usage tap on a WebSocket tunnel's upstream side (docs/design.md §5.7): what the
//! upstream sends goes to the client as read, and `telemetry::ws_usage` looks at it on the way;
//! each `response.completed` is counted and charged at once, and summed for the tunnel's line.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::Route;
use crate::telemetry::usage::Usage;
use crate::telemetry::ws_usage::WsUsageTap;

/// Usage read from a tunnel so far: every `response.completed` summed, the last model.
#[derive(Default)]
pub(crate) struct Totals {
    pub model: Option<String>,
    pub tokens: [Option<u64>; 4],
    /// Text messages that passed unread (over the size cap, or compressed).
    pub unread: u64,
}

impl Totals {
    fn add(&mut self, u: Usage) {
        let counts = [u.input, u.output, u.cache_read, u.cache_write];
        for (total, n) in self.tokens.iter_mut().zip(counts) {
            if let Some(n) = n {
                *total = Some(total.unwrap_or(0) + n);
            }
        }
        if u.model.is_some() {
            self.model = u.model;
        }
    }
}

/// The upstream side of a tunnel with the usage tap on what it sends: bytes are passed on as
/// read, the tap only looks at them.
pub(crate) struct Tapped<T> {
    pub io: T,
    pub tap: WsUsageTap,
    pub route: Arc<Route>,
    /// Index into `route.callers`, when callers are configured.
    pub caller: Option<usize>,
    pub totals: Arc<Mutex<Totals>>,
    /// The tunnel's request id (for the shared-state charge's log line).
    pub request_id: String,
}

impl<T: AsyncRead + Unpin> AsyncRead for Tapped<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.io).poll_read(cx, buf))?;
        let unread = this.tap.unread;
        let (route, caller, totals) = (&this.route, this.caller, &this.totals);
        let id = this.request_id.as_str();
        this.tap.observe(&buf.filled()[before..], &mut |u| {
            super::completion::charge(route, caller, &u, id);
            if let Ok(mut t) = totals.lock() {
                t.add(u);
            }
        });
        if this.tap.unread != unread {
            if let Ok(mut t) = totals.lock() {
                t.unread = this.tap.unread;
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Tapped<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}
