//! The h2 side of the IO under each mock connection (src/faultio.rs): it watches the frames
//! going both ways to count open streams, advertises the configured stream limit and changes
//! it mid-connection.
//!
//! Neither hyper nor the h2 crate can send a new SETTINGS frame with another
//! MAX_CONCURRENT_STREAMS on an open connection, so this layer does it:
//! - write side (server -> client): frame boundaries are tracked (the server writes no preface
//!   of its own). h2's own SETTINGS frames are held back and rewritten to advertise the current
//!   limit (h2 itself is configured with a large one, so it never refuses what the mock
//!   advertises, before or after a change); a change is injected as a new SETTINGS frame at the
//!   next boundary. Everything else passes through unbuffered.
//! - read side (client -> server): after the 24-byte client preface, frames are tracked; the
//!   client's SETTINGS ACK answering an injected frame is swallowed (h2 treats an unexpected
//!   ACK as PROTOCOL_ERROR). ACKs come in the order SETTINGS were sent, so a FIFO of "injected
//!   or h2's own" per SETTINGS sent tells which ACK is ours.
//!
//! The mock does not refuse streams above the limit it advertises: it records the peak
//! ([`crate::MockUpstream::peak_streams_per_connection`]) so tests can check the client
//! honoured it.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;

use crate::frames::{self, Head, Streams, HEAD_LEN, PREFACE_LEN};
use crate::Shared;

/// Bytes read from the peer per read call.
const READ_CHUNK: usize = 16 * 1024;

/// Frame tracking of one h2 connection.
pub(crate) struct H2Wire {
    shared: Arc<Shared>,
    /// The stream limit to advertise; a change is injected as a new SETTINGS frame.
    limit: watch::Receiver<u32>,
    advertised: u32,
    streams: Streams,
    /// One entry per SETTINGS frame sent and not yet acknowledged: true when injected here.
    acks: VecDeque<bool>,

    // Read side.
    rbuf: Vec<u8>,
    /// Bytes of `rbuf` before this have been handed to h2 or swallowed.
    rpos: usize,
    /// Bytes at `rpos` classified and ready to hand to h2.
    ready: usize,
    preface_left: usize,
    /// Payload bytes of the current client frame not yet classified.
    rleft: usize,
    eof: bool,

    // Write side.
    /// Bytes of the current server frame (header rest and payload) still to pass through.
    wleft: usize,
    /// A frame header h2 handed over in pieces, gathered before it is classified.
    whead: [u8; HEAD_LEN],
    whave: usize,
    /// h2's own SETTINGS frame being held back for rewriting, and its bytes still to come.
    capture: Option<(Vec<u8>, usize)>,
    /// Bytes of the mock's own (injected, rewritten or gathered) to write before anything else.
    out: Vec<u8>,
    out_pos: usize,
    /// A new limit to inject at the next frame boundary.
    inject: Option<u32>,
    /// The mock's own bytes were written: flush them even if h2 does not.
    flush: bool,
    /// Streams of this connection counted in [`Shared`]'s total in flight.
    counted: usize,
}

impl Drop for H2Wire {
    fn drop(&mut self) {
        self.shared.streams_in_flight(self.counted, 0);
    }
}

impl H2Wire {
    pub(crate) fn new(shared: Arc<Shared>) -> H2Wire {
        let mut limit = shared.h2_limit.subscribe();
        let advertised = *limit.borrow_and_update();
        H2Wire {
            shared,
            limit,
            advertised,
            streams: Streams::default(),
            acks: VecDeque::new(),
            rbuf: Vec::new(),
            rpos: 0,
            ready: 0,
            preface_left: PREFACE_LEN,
            rleft: 0,
            eof: false,
            wleft: 0,
            whead: [0; HEAD_LEN],
            whave: 0,
            capture: None,
            out: Vec::new(),
            out_pos: 0,
            inject: None,
            flush: false,
            counted: 0,
        }
    }

    /// Notes a new limit to advertise.
    fn sync_limit(&mut self) {
        if self.limit.has_changed().unwrap_or(false) {
            self.advertised = *self.limit.borrow_and_update();
            self.inject = Some(self.advertised);
        }
    }

    /// Brings this connection's part of the total streams in flight up to date.
    fn account(&mut self) {
        let now = self.streams.len();
        if now != self.counted {
            self.shared.streams_in_flight(self.counted, now);
            self.counted = now;
        }
    }

    fn at_boundary(&self) -> bool {
        self.wleft == 0 && self.whave == 0 && self.capture.is_none()
    }

    /// Queues the pending injection when the write side is between frames.
    fn queue_injection(&mut self) {
        if self.out_pos == self.out.len() && self.at_boundary() {
            if let Some(n) = self.inject.take() {
                self.out = frames::max_streams_frame(n);
                self.out_pos = 0;
                self.acks.push_back(true);
            }
        }
    }

    /// Before a flush: the pending injection and the mock's own bytes written.
    pub(crate) fn poll_before_flush<T: AsyncWrite + Unpin>(
        &mut self,
        io: &mut T,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        self.sync_limit();
        self.queue_injection();
        ready!(self.poll_out(io, cx))?;
        self.flush = false;
        Poll::Ready(Ok(()))
    }

    /// Writes the mock's own pending bytes.
    pub(crate) fn poll_out<T: AsyncWrite + Unpin>(
        &mut self,
        io: &mut T,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        while self.out_pos < self.out.len() {
            let n = ready!(Pin::new(&mut *io).poll_write(cx, &self.out[self.out_pos..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.out_pos += n;
            self.flush = true;
        }
        self.out.clear();
        self.out_pos = 0;
        Poll::Ready(Ok(()))
    }

    /// Gets the injection out even while h2 writes nothing (called from reads): the connection
    /// task is woken by the limit change and polls the read side.
    fn pump<T: AsyncWrite + Unpin>(&mut self, io: &mut T, cx: &mut Context<'_>) -> io::Result<()> {
        self.sync_limit();
        self.queue_injection();
        if let Poll::Ready(Err(e)) = self.poll_out(io, cx) {
            return Err(e);
        }
        if self.flush && self.out.is_empty() {
            match Pin::new(io).poll_flush(cx) {
                Poll::Ready(Ok(())) => self.flush = false,
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Pending => {}
            }
        }
        Ok(())
    }

    /// A whole server frame header the mock holds (gathered or at the start of `buf`): h2's
    /// SETTINGS start a capture, anything else is counted and its rest passes through.
    fn start_frame(&mut self, head: Head, head_bytes: &[u8]) {
        if head.is_settings() {
            self.capture = Some((head_bytes.to_vec(), head.len));
            self.finish_capture();
        } else {
            self.streams.server_frame(&head);
            self.account();
            self.out.extend_from_slice(head_bytes);
            self.wleft = head.len;
        }
    }

    /// Sends the captured SETTINGS frame, rewritten, once it is complete.
    fn finish_capture(&mut self) {
        if let Some((frame, 0)) = &self.capture {
            self.out = frames::with_max_streams(frame, self.advertised);
            self.out_pos = 0;
            self.acks.push_back(false);
            self.capture = None;
        }
    }

    /// How much of `bufs` (starting `wleft` bytes before the next frame) may pass through now:
    /// up to an h2 SETTINGS frame (captured instead), up to the next boundary when an injection
    /// waits, and never ending inside a header (so every header passed is whole in `bufs`).
    fn pass_limit(&self, bufs: &[IoSlice<'_>], total: usize) -> usize {
        let mut pos = self.wleft;
        loop {
            if pos >= total {
                return total;
            }
            if pos > 0 && self.inject.is_some() {
                return pos;
            }
            match head_at(bufs, pos) {
                Some(bytes) if !Head::parse(&bytes).is_settings() => {
                    pos += HEAD_LEN + Head::parse(&bytes).len;
                }
                _ => return pos,
            }
        }
    }

    /// Accounts for the first `n` bytes of `bufs` written through.
    fn observe(&mut self, bufs: &[IoSlice<'_>], n: usize) {
        let mut i = 0;
        while i < n {
            if self.wleft > 0 {
                let k = self.wleft.min(n - i);
                self.wleft -= k;
                i += k;
                continue;
            }
            // `pass_limit` let no header through that is not whole in `bufs`.
            let Some(bytes) = head_at(bufs, i) else {
                return;
            };
            let head = Head::parse(&bytes);
            self.streams.server_frame(&head);
            self.account();
            self.wleft = HEAD_LEN + head.len;
        }
    }

    /// Writes what h2 hands over (one buffer, or several for a vectored write): frames pass
    /// through as they are, in one write, unless the mock has something to do at a boundary.
    pub(crate) fn poll_write<T: AsyncWrite + Unpin>(
        &mut self,
        io: &mut T,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.sync_limit();
        loop {
            ready!(self.poll_out(io, cx))?;
            self.queue_injection();
            if self.out.is_empty() {
                break;
            }
        }
        let Some(first) = bufs.iter().find(|b| !b.is_empty()) else {
            return Poll::Ready(Ok(0));
        };
        if let Some((frame, left)) = &mut self.capture {
            let k = (*left).min(first.len());
            frame.extend_from_slice(&first[..k]);
            *left -= k;
            self.finish_capture();
            return Poll::Ready(Ok(k));
        }
        let head = if self.wleft == 0 && self.whave == 0 {
            head_at(bufs, 0)
        } else {
            None
        };
        if self.whave > 0 || (self.wleft == 0 && head.is_none()) {
            // A header in pieces (rare: a short write upstream of here): gather it.
            let k = (HEAD_LEN - self.whave).min(first.len());
            self.whead[self.whave..self.whave + k].copy_from_slice(&first[..k]);
            self.whave += k;
            if self.whave == HEAD_LEN {
                self.whave = 0;
                let bytes = self.whead;
                self.start_frame(Head::parse(&bytes), &bytes);
            }
            return Poll::Ready(Ok(k));
        }
        if let Some(bytes) = head.filter(|b| Head::parse(b).is_settings()) {
            self.start_frame(Head::parse(&bytes), &bytes);
            return Poll::Ready(Ok(HEAD_LEN));
        }
        let total = bufs.iter().map(|b| b.len()).sum();
        let limit = self.pass_limit(bufs, total);
        let n = if bufs.len() == 1 {
            ready!(Pin::new(&mut *io).poll_write(cx, &bufs[0][..limit]))?
        } else {
            let prefix = prefix(bufs, limit);
            ready!(Pin::new(&mut *io).poll_write_vectored(cx, &prefix))?
        };
        self.observe(bufs, n);
        Poll::Ready(Ok(n))
    }

    pub(crate) fn poll_read<T: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        io: &mut T,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.pump(io, cx)?;
        loop {
            if self.ready > 0 {
                let n = self.ready.min(buf.remaining());
                buf.put_slice(&self.rbuf[self.rpos..self.rpos + n]);
                self.rpos += n;
                self.ready -= n;
                return Poll::Ready(Ok(()));
            }
            let avail = self.rbuf.len() - self.rpos;
            if self.preface_left > 0 && avail > 0 {
                self.ready = self.preface_left.min(avail);
                self.preface_left -= self.ready;
                continue;
            }
            if self.rleft > 0 && avail > 0 {
                self.ready = self.rleft.min(avail);
                self.rleft -= self.ready;
                continue;
            }
            if self.preface_left == 0 && avail >= HEAD_LEN {
                let head = Head::parse(&self.rbuf[self.rpos..]);
                if head.is_settings_ack() && self.acks.pop_front() == Some(true) {
                    self.rpos += HEAD_LEN; // the ACK of an injected SETTINGS: h2 never sent it
                    continue;
                }
                if head.is_rst_stream() {
                    self.shared.add_client_reset();
                }
                self.streams.client_frame(&head);
                self.shared.note_streams(self.streams.len());
                self.account();
                self.ready = HEAD_LEN;
                self.rleft = head.len;
                continue;
            }
            if self.eof {
                // A truncated frame before EOF: hand it over as is, then EOF.
                self.ready = avail;
                if avail == 0 {
                    return Poll::Ready(Ok(()));
                }
                continue;
            }
            self.rbuf.drain(..self.rpos);
            self.rpos = 0;
            let start = self.rbuf.len();
            self.rbuf.resize(start + READ_CHUNK, 0);
            let mut rb = ReadBuf::new(&mut self.rbuf[start..]);
            let res = Pin::new(&mut *io).poll_read(cx, &mut rb);
            let got = rb.filled().len();
            self.rbuf.truncate(start + got);
            match ready!(res) {
                Ok(()) if got == 0 => self.eof = true,
                Ok(()) => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

/// The frame header starting `pos` bytes into `bufs`, when all of it is there.
fn head_at(bufs: &[IoSlice<'_>], mut pos: usize) -> Option<[u8; HEAD_LEN]> {
    let mut head = [0u8; HEAD_LEN];
    let mut got = 0;
    for b in bufs {
        if pos >= b.len() {
            pos -= b.len();
            continue;
        }
        let k = (b.len() - pos).min(HEAD_LEN - got);
        head[got..got + k].copy_from_slice(&b[pos..pos + k]);
        got += k;
        pos = 0;
        if got == HEAD_LEN {
            return Some(head);
        }
    }
    None
}

/// The first `n` bytes of `bufs`.
fn prefix<'a>(bufs: &'a [IoSlice<'a>], mut n: usize) -> Vec<IoSlice<'a>> {
    let mut out = Vec::with_capacity(bufs.len());
    for b in bufs {
        if n == 0 {
            break;
        }
        let k = b.len().min(n);
        out.push(IoSlice::new(&b[..k]));
        n -= k;
    }
    out
}

#[cfg(test)]
mod tests {
    use std::task::Waker;

    use super::*;
    use crate::frames::{frame, max_streams_frame, settings, with_max_streams};
    use crate::MockConfig;

    /// A peer that takes at most `chunk` bytes per write (across slices when vectored).
    struct ShortWriter {
        out: Vec<u8>,
        chunk: usize,
    }

    impl AsyncWrite for ShortWriter {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let n = buf.len().min(self.chunk);
            self.get_mut().out.extend_from_slice(&buf[..n]);
            Poll::Ready(Ok(n))
        }

        fn poll_write_vectored(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            let this = self.get_mut();
            let mut n = 0;
            for b in bufs {
                let k = b.len().min(this.chunk - n);
                this.out.extend_from_slice(&b[..k]);
                n += k;
            }
            Poll::Ready(Ok(n))
        }

        fn is_write_vectored(&self) -> bool {
            true
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// A client whose bytes arrive `chunk` at a time.
    struct ShortReader {
        input: Vec<u8>,
        pos: usize,
        chunk: usize,
    }

    impl AsyncRead for ShortReader {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let this = self.get_mut();
            let n = (this.input.len() - this.pos)
                .min(this.chunk)
                .min(buf.remaining());
            buf.put_slice(&this.input[this.pos..this.pos + n]);
            this.pos += n;
            Poll::Ready(Ok(()))
        }
    }

    impl AsyncWrite for ShortReader {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            b: &[u8],
        ) -> Poll<io::Result<usize>> {
            Poll::Ready(Ok(b.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    fn split_frames(mut bytes: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while !bytes.is_empty() {
            let len = HEAD_LEN + Head::parse(bytes).len;
            out.push(bytes[..len].to_vec());
            bytes = &bytes[len..];
        }
        out
    }

    fn wire(limit: u32) -> (Arc<Shared>, H2Wire) {
        let shared = Arc::new(Shared::new(MockConfig {
            h2_max_concurrent_streams: limit,
            ..MockConfig::default()
        }));
        let wire = H2Wire::new(shared.clone());
        (shared, wire)
    }

    /// h2's output written through in every slicing, short write and vectored split, with a
    /// new limit requested on the way: every frame arrives whole and in order, h2's
    /// SETTINGS rewritten, the new SETTINGS injected at a boundary, streams counted.
    #[test]
    fn frames_pass_intact_through_short_and_vectored_writes() {
        let own = settings(&[(0x3, 1_000_000), (0x4, 65535)]);
        let sent = [
            own.clone(),
            frame(0x1, 0x4, 1, b"response headers"),
            frame(0x0, 0x0, 1, &[7; 40]),
            frame(0x0, 0x1, 1, &[8; 3]),
            frame(0x6, 0x1, 0, &[0; 8]),
            frame(0x3, 0x0, 3, &[0, 0, 0, 7]),
        ];
        let input: Vec<u8> = sent.concat();
        let mut cx = Context::from_waker(Waker::noop());
        for chunk in [1, 2, 5, 9, 10, 17, 1000] {
            for split in [None, Some(4), Some(9), Some(30)] {
                let (shared, mut w) = wire(7);
                // The client opened streams 1 and 3.
                w.streams
                    .client_frame(&Head::parse(&frame(0x1, 0x5, 1, &[])));
                w.streams
                    .client_frame(&Head::parse(&frame(0x1, 0x5, 3, &[])));
                w.account();
                let mut io = ShortWriter {
                    out: Vec::new(),
                    chunk,
                };
                let mut pos = 0;
                let mut requested = false;
                while pos < input.len() {
                    // After h2's SETTINGS; inside the next frame when writes are short.
                    let due = pos >= own.len() + 13 || (pos >= own.len() && chunk > 100);
                    if !requested && due {
                        shared.h2_limit.send_replace(3);
                        requested = true;
                    }
                    let rest = &input[pos..];
                    let r = match split.filter(|k| *k < rest.len()) {
                        Some(k) => {
                            let bufs = [IoSlice::new(&rest[..k]), IoSlice::new(&rest[k..])];
                            w.poll_write(&mut io, &mut cx, &bufs)
                        }
                        None => w.poll_write(&mut io, &mut cx, &[IoSlice::new(rest)]),
                    };
                    match r {
                        Poll::Ready(Ok(n)) if n > 0 => pos += n,
                        other => panic!("chunk {chunk} split {split:?}: {other:?}"),
                    }
                }
                assert!(w.poll_before_flush(&mut io, &mut cx).is_ready());
                let mut got = split_frames(&io.out);
                let injected = got.iter().position(|f| *f == max_streams_frame(3));
                got.remove(injected.expect("the new limit was not sent"));
                let mut want = sent.to_vec();
                want[0] = with_max_streams(&own, 7);
                assert_eq!(got, want, "chunk {chunk} split {split:?}");
                assert_eq!(w.acks, [false, true]);
                assert_eq!(w.streams.len(), 0, "END_STREAM and RST_STREAM closed both");
                drop(w);
                assert_eq!(
                    shared.in_flight.load(std::sync::atomic::Ordering::SeqCst),
                    0
                );
            }
        }
    }

    /// The client's bytes in any slicing: the ACK of the injected SETTINGS is swallowed, the
    /// ACK of h2's own passes, everything else arrives unchanged; streams are counted.
    #[test]
    fn only_the_ack_of_an_injected_settings_is_swallowed() {
        let ack = frame(0x4, 0x1, 0, &[]);
        let mut input = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        let parts = [
            settings(&[(0x2, 0)]),
            ack.clone(), // of h2's own SETTINGS
            frame(0x1, 0x4, 1, b"request headers"),
            ack.clone(), // of the injected one: swallowed
            frame(0x1, 0x5, 3, b"more"),
            frame(0x0, 0x1, 1, b"body"),
        ];
        for p in &parts {
            input.extend_from_slice(p);
        }
        let mut want = input.clone();
        let at = input.len() - parts[3..].concat().len();
        want.drain(at..at + ack.len());
        let mut cx = Context::from_waker(Waker::noop());
        for chunk in [1, 3, 9, 24, 1000] {
            for room in [1, 7, 64, 4096] {
                let (shared, mut w) = wire(100);
                w.acks.extend([false, true]);
                let mut io = ShortReader {
                    input: input.clone(),
                    pos: 0,
                    chunk,
                };
                let mut got = Vec::new();
                loop {
                    let mut space = vec![0u8; room];
                    let mut buf = ReadBuf::new(&mut space);
                    match w.poll_read(&mut io, &mut cx, &mut buf) {
                        Poll::Ready(Ok(())) if buf.filled().is_empty() => break,
                        Poll::Ready(Ok(())) => got.extend_from_slice(buf.filled()),
                        other => panic!("{other:?}"),
                    }
                }
                assert_eq!(got, want, "chunk {chunk} room {room}");
                assert!(w.acks.is_empty());
                assert_eq!(w.streams.len(), 2, "stream 1 half-closed, 3 open");
                assert_eq!(
                    shared
                        .peak_streams
                        .load(std::sync::atomic::Ordering::SeqCst),
                    2
                );
            }
        }
    }
}
