//! Where the running proxy's log lines go: a memory buffer that one background thread writes to
//! stdout in batches (at most `BATCH_DELAY` after a line was logged), so request threads never
//! make a `write` system call or stall behind a slow reader of stdout. Bounded: past
//! `MAX_BUFFERED` bytes lines are dropped and counted, and a `log_lines_dropped` line says how
//! many once writing catches up. `LogSink::close` writes what is left before the process exits.

use std::io::Write;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use tracing_subscriber::fmt::MakeWriter;

/// How long the writer thread waits after the first line of a batch before writing it.
pub const BATCH_DELAY: Duration = Duration::from_millis(20);
/// Most bytes held for the writer thread; lines beyond it are dropped (and counted).
pub const MAX_BUFFERED: usize = 4 * 1024 * 1024;

#[derive(Default)]
struct Pending {
    data: Vec<u8>,
    dropped: u64,
    closed: bool,
}

#[derive(Default)]
struct Inner {
    pending: Mutex<Pending>,
    wake: Condvar,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        // A panic while holding this lock cannot leave `Pending` inconsistent: keep going.
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The buffered sink; clone the `writer()` into the logger, `close()` before exiting.
pub struct LogSink {
    inner: Arc<Inner>,
    thread: Option<JoinHandle<()>>,
}

/// A handle the logger writes lines through (`MakeWriter`).
#[derive(Clone)]
pub struct SinkWriter {
    inner: Arc<Inner>,
}

impl LogSink {
    /// Starts the writer thread, writing batches to `out` (stdout in the proxy).
    pub fn start<O: Write + Send + 'static>(out: O) -> std::io::Result<LogSink> {
        let inner = Arc::new(Inner::default());
        let thread_inner = inner.clone();
        let thread = std::thread::Builder::new()
            .name("log-writer".into())
            .spawn(move || write_batches(&thread_inner, out))?;
        Ok(LogSink {
            inner,
            thread: Some(thread),
        })
    }

    pub fn writer(&self) -> SinkWriter {
        SinkWriter {
            inner: self.inner.clone(),
        }
    }

    /// Writes everything buffered and stops the writer thread.
    pub fn close(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.inner.lock().closed = true;
        self.inner.wake.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for LogSink {
    fn drop(&mut self) {
        self.stop();
    }
}

fn write_batches(inner: &Inner, mut out: impl Write) {
    let mut batch = Vec::new();
    loop {
        let mut pending = inner.lock();
        while pending.data.is_empty() && pending.dropped == 0 && !pending.closed {
            pending = inner.wake.wait(pending).unwrap_or_else(|e| e.into_inner());
        }
        // Let the batch fill: one write for every line logged in the next BATCH_DELAY (cut
        // short by `close`).
        pending = inner
            .wake
            .wait_timeout_while(pending, BATCH_DELAY, |p| !p.closed)
            .map_or_else(|e| e.into_inner().0, |(p, _)| p);
        std::mem::swap(&mut batch, &mut pending.data);
        let dropped = std::mem::take(&mut pending.dropped);
        let closed = pending.closed;
        drop(pending);
        if dropped > 0 {
            let mut line = String::with_capacity(128);
            line.push_str("{\"timestamp\":\"");
            crate::telemetry::logline::push_timestamp(&mut line, SystemTime::now());
            line.push_str(&format!(
                "\",\"level\":\"WARN\",\"event\":\"log_lines_dropped\",\"count\":{dropped}}}\n"
            ));
            batch.extend_from_slice(line.as_bytes());
        }
        let _ = out.write_all(&batch).and_then(|()| out.flush());
        batch.clear();
        if batch.capacity() > MAX_BUFFERED {
            batch = Vec::new();
        }
        if closed {
            return;
        }
    }
}

impl Write for SinkWriter {
    /// Takes one whole line (the logger writes each line in one call) or drops it whole.
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        let mut pending = self.inner.lock();
        if pending.data.len() + line.len() > MAX_BUFFERED {
            pending.dropped += 1;
            return Ok(line.len());
        }
        let first = pending.data.is_empty();
        pending.data.extend_from_slice(line);
        drop(pending);
        if first {
            self.inner.wake.notify_one();
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for SinkWriter {
    type Writer = SinkWriter;

    fn make_writer(&'a self) -> SinkWriter {
        self.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[derive(Clone, Default)]
    struct Out(Arc<Mutex<(Vec<u8>, usize)>>);
    impl Write for Out {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let mut o = self.0.lock().unwrap();
            o.0.extend_from_slice(buf);
            o.1 += 1;
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_arrive_in_order_batched_and_all_on_close() {
        let out = Out::default();
        let sink = LogSink::start(out.clone()).unwrap();
        let mut w = sink.writer();
        for i in 0..1000 {
            w.write_all(format!("{{\"i\":{i}}}\n").as_bytes()).unwrap();
        }
        // Written by the thread within a generous bound, without close().
        let start = Instant::now();
        while out.0.lock().unwrap().0.len() < 1000 * 8 && start.elapsed() < Duration::from_secs(10)
        {
            std::thread::sleep(Duration::from_millis(5));
        }
        w.write_all(b"{\"last\":true}\n").unwrap();
        sink.close();
        let (text, writes) = out.0.lock().unwrap().clone();
        let text = String::from_utf8(text).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1001);
        for (i, l) in lines[..1000].iter().enumerate() {
            assert_eq!(*l, format!("{{\"i\":{i}}}"));
        }
        assert_eq!(lines[1000], "{\"last\":true}");
        assert!(writes < 100, "{writes} writes for 1001 lines: not batched");
    }

    #[test]
    fn overflow_drops_whole_lines_and_says_how_many() {
        let out = Out::default();
        let sink = LogSink::start(out.clone()).unwrap();
        let mut w = sink.writer();
        // Hold the buffer full: fill it in one go before the thread's first batch is taken.
        let mut big = vec![b'x'; MAX_BUFFERED - 11];
        big.push(b'\n');
        {
            let mut p = sink.inner.lock();
            p.data.extend_from_slice(&big);
        }
        w.write_all(b"{\"dropped\":1}\n").unwrap();
        w.write_all(b"{\"dropped\":2}\n").unwrap();
        sink.close();
        let text = String::from_utf8(out.0.lock().unwrap().0.clone()).unwrap();
        assert!(!text.contains("\"dropped\""));
        let last: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
        assert_eq!(last["event"], "log_lines_dropped");
        assert_eq!(last["count"], 2);
    }
}
