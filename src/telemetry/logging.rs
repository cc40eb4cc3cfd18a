//! Logs: one flat JSON object per line on stdout (`--log-format text` for people), and the
//! sanitiser every logged or echoed string goes through (control characters out, length capped).

use std::borrow::Cow;

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
}
