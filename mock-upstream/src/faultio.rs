//! The IO under every mock connection, between TLS and hyper: it freezes the connection on
//! command and, on h2 connections, hands every byte to src/h2wire.rs (open streams counted,
//! the stream limit advertised and changed mid-connection).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;

use crate::h2wire::H2Wire;
use crate::Shared;

/// See the module docs.
pub(crate) struct FaultIo<T> {
    inner: T,
    /// Changes when [`crate::MockUpstream::freeze_connections`] is called: frozen from then on.
    freeze: watch::Receiver<u64>,
    /// The peer closed (or failed) the connection while it was frozen.
    peer_gone: bool,
    h2: Option<Box<H2Wire>>,
}

impl<T: AsyncRead + AsyncWrite + Unpin> FaultIo<T> {
    /// Wraps `inner`; `h2` when the connection negotiated h2 (frame tracking on).
    pub(crate) fn new(inner: T, shared: Arc<Shared>, h2: bool) -> FaultIo<T> {
        let freeze = shared.freeze.subscribe();
        let h2 = h2.then(|| Box::new(H2Wire::new(shared)));
        FaultIo {
            inner,
            freeze,
            peer_gone: false,
            h2,
        }
    }

    fn frozen(&self) -> bool {
        self.freeze.has_changed().unwrap_or(false)
    }

    /// Frozen: read and discard whatever the peer sends (answering nothing) until it closes
    /// the connection, then fail every call.
    fn poll_frozen(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut scratch = [0u8; 4096];
        while !self.peer_gone {
            let mut buf = ReadBuf::new(&mut scratch);
            match ready!(Pin::new(&mut self.inner).poll_read(cx, &mut buf)) {
                Ok(()) if !buf.filled().is_empty() => continue,
                _ => self.peer_gone = true,
            }
        }
        Poll::Ready(Err(io::ErrorKind::ConnectionAborted.into()))
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for FaultIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.frozen() {
            // EOF for the reader: the connection ends once the peer closed it.
            return this.poll_frozen(cx).map(|_| Ok(()));
        }
        match this.h2.as_mut() {
            Some(h2) => h2.poll_read(&mut this.inner, cx, buf),
            None => Pin::new(&mut this.inner).poll_read(cx, buf),
        }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncWrite for FaultIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.frozen() {
            return this.poll_frozen(cx).map(|r| r.map(|()| 0));
        }
        match this.h2.as_mut() {
            Some(h2) => h2.poll_write(&mut this.inner, cx, &[io::IoSlice::new(buf)]),
            None => Pin::new(&mut this.inner).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.frozen() {
            return this.poll_frozen(cx).map(|r| r.map(|()| 0));
        }
        match this.h2.as_mut() {
            Some(h2) => h2.poll_write(&mut this.inner, cx, bufs),
            None => Pin::new(&mut this.inner).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.frozen() {
            return this.poll_frozen(cx);
        }
        if let Some(h2) = this.h2.as_mut() {
            ready!(h2.poll_before_flush(&mut this.inner, cx))?;
        }
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.frozen() {
            return this.poll_frozen(cx);
        }
        if let Some(h2) = this.h2.as_mut() {
            ready!(h2.poll_out(&mut this.inner, cx))?;
        }
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}
