//! The usage file: one JSON line per request, written by a background task in batches (no
//! flush or fsync per request), so the request path only hands over a line.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Lines queued before new ones are dropped (and counted) instead of slowing requests.
const QUEUE: usize = 8192;
/// How often buffered lines reach the file at the latest.
const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// The sending side, held by every route.
#[derive(Clone)]
pub struct UsageLog {
    tx: mpsc::Sender<String>,
    dropped: Counter,
}

/// The writer task; `close` flushes what is queued and ends it.
pub struct UsageWriter {
    task: JoinHandle<()>,
}

impl UsageLog {
    /// Opens (appends to) `path` and starts the writer.
    pub fn open(path: &Path, dropped: Counter) -> std::io::Result<(UsageLog, UsageWriter)> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        let (tx, rx) = mpsc::channel(QUEUE);
        let task = tokio::spawn(write_loop(file, rx, path.to_owned()));
        Ok((UsageLog { tx, dropped }, UsageWriter { task }))
    }

    /// Queues one line (without its newline); never waits.
    pub fn record(&self, line: String) {
        if self.tx.try_send(line).is_err() {
            self.dropped.inc();
        }
    }
}

impl UsageWriter {
    /// Waits until every sender is gone and the queue is written.
    pub async fn close(self) {
        let _ = self.task.await;
    }
}

async fn write_loop(file: std::fs::File, mut rx: mpsc::Receiver<String>, path: PathBuf) {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, file);
    let mut tick = tokio::time::interval(FLUSH_EVERY);
    // After an idle spell, flush once, not once per missed second.
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut dirty = false;
    loop {
        tokio::select! {
            line = rx.recv() => match line {
                Some(line) => {
                    let ok = out.write_all(line.as_bytes()).and_then(|_| out.write_all(b"\n"));
                    if let Err(e) = ok {
                        tracing::warn!(event = "usage_file_error", path = %path.display(), error = %e);
                    }
                    dirty = true;
                }
                None => break,
            },
            _ = tick.tick(), if dirty => {
                let _ = out.flush();
                dirty = false;
            }
        }
    }
    let _ = out.flush();
}
