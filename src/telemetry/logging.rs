//! Logs: one flat JSON object per line on stdout (`--log-format text` for people), and the
//! sanitiser every logged or echoed string goes through (control characters out, length capped).

use std::borrow::Cow;
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::RwLock;

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

use crate::telemetry::logline::JsonLines;

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Json,
    Text,
}

/// Longest logged string, in characters (docs/design.md §6).
pub const MAX_LOGGED_CHARS: usize = 200;

/// Installs the global subscriber. `level` is a level (`info`) or an `EnvFilter` directive.
/// JSON lines are formatted by `logline` (one write per line); text by tracing-subscriber.
pub fn init<W>(format: LogFormat, level: &str, writer: W) -> Result<(), String>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let filter =
        EnvFilter::try_new(level).map_err(|e| format!("invalid --log-level `{level}`: {e}"))?;
    let writer = Redacting(writer);
    let registry = tracing_subscriber::registry().with(filter);
    let result = match format {
        LogFormat::Json => registry.with(JsonLines::new(writer)).try_init(),
        LogFormat::Text => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(writer)
                    .with_target(false)
                    .with_ansi(false),
            )
            .try_init(),
    };
    result.map_err(|e| format!("cannot install the logger: {e}"))
}

/// Upstream hosts that must never be printed (`redact_upstream_host`), lower-cased.
static SENSITIVE: RwLock<Vec<String>> = RwLock::new(Vec::new());
/// Whether `SENSITIVE` holds anything: the common case costs one relaxed load per line.
static ANY_SENSITIVE: AtomicBool = AtomicBool::new(false);

/// From now on, every log line (any event, any level, any library) shows `host` as
/// `[REDACTED]` (ASCII case ignored), as the Node sidecar did for `AWF_SENSITIVE_OPENAI_TARGET`.
/// Process-wide and never undone: the server registers its sensitive hosts at start.
pub fn redact_in_logs(host: &str) {
    if host.is_empty() {
        return;
    }
    let mut hosts = SENSITIVE.write().unwrap_or_else(|e| e.into_inner());
    let host = host.to_ascii_lowercase();
    if !hosts.contains(&host) {
        hosts.push(host);
    }
    ANY_SENSITIVE.store(true, Ordering::Relaxed);
}

/// `text` with every sensitive host replaced, or `None` when it names none.
fn redacted_str(text: &str) -> Option<String> {
    if !ANY_SENSITIVE.load(Ordering::Relaxed) {
        return None;
    }
    let hosts = SENSITIVE.read().unwrap_or_else(|e| e.into_inner());
    let lower = text.to_ascii_lowercase();
    if !hosts.iter().any(|h| lower.contains(h.as_str())) {
        return None;
    }
    let mut out = text.to_owned();
    for h in hosts.iter() {
        out = crate::config::replace_ignoring_case(&out, h, crate::config::plan::REDACTED_HOST);
    }
    Some(out)
}

/// A finished log line with every sensitive host replaced, or `None` when it names none.
fn redacted(line: &[u8]) -> Option<Vec<u8>> {
    if !ANY_SENSITIVE.load(Ordering::Relaxed) {
        return None;
    }
    redacted_str(&String::from_utf8_lossy(line)).map(String::into_bytes)
}

/// A message for a client (an error the proxy answers) with every sensitive host replaced:
/// a TLS failure names the host it failed with and the names the certificate holds.
pub fn redact_sensitive(text: String) -> String {
    redacted_str(&text).unwrap_or(text)
}

/// Wraps the log writer so that no line names a sensitive host. Both formats write each line
/// in one call, so a host is never split across writes.
struct Redacting<W>(W);

impl<'a, W: MakeWriter<'a>> MakeWriter<'a> for Redacting<W> {
    type Writer = RedactingWriter<W::Writer>;
    fn make_writer(&'a self) -> Self::Writer {
        RedactingWriter(self.0.make_writer())
    }
}

struct RedactingWriter<W>(W);

impl<W: Write> Write for RedactingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match redacted(buf) {
            Some(clean) => {
                self.0.write_all(&clean)?;
                Ok(buf.len())
            }
            None => self.0.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

/// Removes control characters and cuts to `max` characters; borrows when nothing changes.
pub fn sanitize(s: &str, max: usize) -> Cow<'_, str> {
    let clean = !s.chars().any(char::is_control);
    if clean && s.len() <= max {
        return Cow::Borrowed(s);
    }
    Cow::Owned(s.chars().filter(|c| !c.is_control()).take(max).collect())
}

/// A request path for logs: no query string, sanitised.
pub fn log_path(path_and_query: &str) -> Cow<'_, str> {
    let path = path_and_query.split('?').next().unwrap_or("");
    sanitize(path, MAX_LOGGED_CHARS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitizes() {
        assert!(matches!(sanitize("plain", 200), Cow::Borrowed(_)));
        assert_eq!(sanitize("a\nb\tc\u{1b}[31m", 200), "abc[31m");
        assert_eq!(sanitize(&"x".repeat(300), 200).len(), 200);
        assert_eq!(log_path("/v1/chat?key=secret"), "/v1/chat");
    }

    #[test]
    fn sensitive_hosts_never_reach_the_writer() {
        redact_in_logs("LB.Secret-Unit.example");
        let mut out = Vec::new();
        RedactingWriter(&mut out)
            .write_all(b"{\"upstream\":\"https://lb.secret-unit.EXAMPLE/v1\",\"x\":\"lb.secret-unit.example:443\"}\n")
            .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"upstream\":\"https://[REDACTED]/v1\",\"x\":\"[REDACTED]:443\"}\n"
        );
        let mut out = Vec::new();
        RedactingWriter(&mut out)
            .write_all(b"plain line\n")
            .unwrap();
        assert_eq!(out, b"plain line\n");
    }
}
