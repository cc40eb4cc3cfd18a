//! Config file reading: YAML text -> path-tracked nodes, human units, defaults, collected errors.
//!
//! The schema is walked by hand (not `serde` derive) so that every problem in a file is reported
//! at once, each with its YAML path and what to change; `plan.rs` drives the walk.

pub mod cloud;
pub mod egress;
pub mod path;
pub mod plan;
pub mod policy;
pub mod presets;
pub mod secret;
pub mod shared_state;

use std::fmt;
use std::time::Duration;

use http::header::HeaderName;
use serde_yaml_ng::Value;

pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9901";
pub const DEFAULT_MAX_REQUEST_BODY: u64 = 10 * 1024 * 1024;
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(300);
pub const DEFAULT_STREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// A response whose client accepts no bytes for this long while some wait to be written is
/// dropped (upstream cancelled): a client that stops reading cannot hold a stream open.
pub const DEFAULT_CLIENT_WRITE_TIMEOUT: Duration = Duration::from_secs(60);
/// A WebSocket tunnel with no bytes either way for this long is closed. Long: Codex keeps one
/// Responses WebSocket open across turns, and a turn can wait minutes on a tool run.
pub const DEFAULT_WEBSOCKET_IDLE_TIMEOUT: Duration = Duration::from_secs(10 * 60);
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(8);
pub const DEFAULT_POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Longest time a client may take to send a request head (slowloris guard), counted from the
/// connection opening or the previous response; also bounds an idle HTTP/1.1 keep-alive wait.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// A downstream connection with no request in flight for this long is closed (h2c: GOAWAY).
pub const DEFAULT_KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request head (request line + headers; h2c: header list) before 431.
pub const DEFAULT_MAX_HEADER_BYTES: u64 = 64 * 1024;
/// The smallest `max_header_bytes` hyper accepts (its HTTP/1.1 read buffer minimum).
pub const MIN_MAX_HEADER_BYTES: u64 = 8 * 1024;
/// The largest `max_header_bytes` accepted.
pub const MAX_MAX_HEADER_BYTES: u64 = 1024 * 1024;
/// Most header fields in an HTTP/1.1 request head before 431 (hyper's default).
pub const DEFAULT_MAX_HEADERS: usize = 100;
/// The largest `max_headers` accepted (hyper reserves a slot per header for every request).
pub const MAX_MAX_HEADERS: usize = 1000;
/// Open connections per listener; one more is answered 503 `overloaded` and closed.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// Most `limits.workers` (default: one per CPU the process may use).
pub const MAX_WORKERS: usize = 256;
/// Concurrent streams per downstream h2c connection (SETTINGS_MAX_CONCURRENT_STREAMS).
pub const DEFAULT_MAX_CONCURRENT_STREAMS: u32 = 100;

// The admin listener has bounds of its own, independent of `limits:` (docs/security.md): a
// flood on a provider port cannot touch them, and a flood on the admin port cannot starve a
// probe, because beyond `admin.max_connections` the oldest idle connection is closed.

/// Open connections on the admin listener; a new one beyond closes the oldest idle one.
pub const DEFAULT_ADMIN_MAX_CONNECTIONS: usize = 64;
/// The largest `admin.max_connections` accepted (room is made by scanning the open ones).
pub const MAX_ADMIN_MAX_CONNECTIONS: usize = 4096;
/// Time an admin client has to send a request head (probes send theirs at once).
pub const DEFAULT_ADMIN_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// An admin connection with no request in flight for this long is closed.
pub const DEFAULT_ADMIN_KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest admin request head (431 beyond): probes and scrapers send a few hundred bytes.
pub const ADMIN_MAX_HEADER_BYTES: u64 = MIN_MAX_HEADER_BYTES;
/// Concurrent streams per h2c connection on the admin listener.
pub const ADMIN_MAX_CONCURRENT_STREAMS: u32 = 16;
/// Open (and opening) upstream connections per provider, all workers together: at a typical
/// 100 streams per HTTP/2 connection, room for 25,000 concurrent streams.
pub const DEFAULT_MAX_UPSTREAM_CONNECTIONS: usize = 256;
/// Longest wait for an upstream stream slot once the connection cap is reached (then 503
/// `upstream_busy`, which SDKs retry with backoff).
pub const DEFAULT_UPSTREAM_WAIT_TIMEOUT: Duration = Duration::from_secs(10);
/// HTTP/2 PING interval on upstream connections (finds dead connections and tunnels).
pub const DEFAULT_UPSTREAM_PING_INTERVAL: Duration = Duration::from_secs(30);
/// How long an upstream PING may go unanswered before the connection is dropped.
pub const DEFAULT_UPSTREAM_PING_TIMEOUT: Duration = Duration::from_secs(10);

/// Hop-by-hop headers (RFC 9110 section 7.6.1), never forwarded in either direction.
pub const HOP_BY_HOP: [&str; 6] = [
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Headers the proxy writes itself (or the HTTP layer owns), which therefore cannot carry the
/// key: an `auth.header` among them would be overwritten or break framing.
pub fn set_by_proxy(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "host"
            | "x-request-id"
            | "anthropic-version"
            | "x-initiator"
            | "content-length"
            | "content-type"
    )
}

/// True for the fixed hop-by-hop headers (not counting those a `Connection` header names).
pub fn is_hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(&name.as_str()) || name.as_str().starts_with("proxy-")
}

/// The number of workers when `limits.workers` is not set: the CPUs this process may use.
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// One problem in the config: where it is and what to change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub path: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Every problem found in one config, in file order.
#[derive(Debug, Default)]
pub struct Errors(pub Vec<ConfigError>);

impl Errors {
    pub fn push(&mut self, path: &str, message: impl Into<String>) {
        self.0.push(ConfigError {
            path: path.to_owned(),
            message: message.into(),
        });
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for Errors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        writeln!(
            f,
            "{n} problem{} in the config:",
            if n == 1 { "" } else { "s" }
        )?;
        for e in &self.0 {
            writeln!(f, "  {e}")?;
        }
        Ok(())
    }
}

/// Parses YAML text into a document; a syntax error is reported with its line and column.
pub fn parse_document(text: &str, errors: &mut Errors) -> Option<Value> {
    match serde_yaml_ng::from_str::<Value>(text) {
        Ok(Value::Null) => Some(Value::Mapping(Default::default())),
        Ok(v) => Some(v),
        Err(e) => {
            let at = e
                .location()
                .map(|l| format!("line {}, column {}", l.line(), l.column()))
                .unwrap_or_else(|| "(document)".into());
            errors.push(
                &at,
                format!("not valid YAML: {}", strip_location(&e.to_string())),
            );
            None
        }
    }
}

fn strip_location(msg: &str) -> &str {
    msg.split(" at line ").next().unwrap_or(msg)
}

/// A value in the document with the YAML path that leads to it.
#[derive(Clone)]
pub struct Node<'a> {
    pub value: &'a Value,
    pub path: String,
}

/// A mapping whose unknown keys have been reported; `get` hands out its known children.
pub struct Map<'a> {
    pub path: String,
    entries: Vec<(&'a str, &'a Value)>,
}

impl<'a> Node<'a> {
    pub fn root(value: &'a Value) -> Node<'a> {
        Node {
            value,
            path: String::new(),
        }
    }

    /// Reads a mapping whose keys must be among `known` (each unknown key is an error).
    pub fn map(&self, known: &[&str], errors: &mut Errors) -> Option<Map<'a>> {
        let mut map = self.any_map(errors)?;
        map.entries.retain(|(key, _)| {
            if known.contains(key) {
                return true;
            }
            let path = join(&map.path, key);
            let hint = closest(key, known)
                .map(|k| format!("; did you mean `{k}`?"))
                .unwrap_or_else(|| format!("; known keys: {}", known.join(", ")));
            errors.push(&path, format!("unknown key{hint}"));
            false
        });
        Some(map)
    }

    /// Reads a mapping with free-form keys (e.g. provider names).
    pub fn any_map(&self, errors: &mut Errors) -> Option<Map<'a>> {
        let Value::Mapping(m) = self.value else {
            errors.push(
                &self.path,
                format!("expected a mapping, found {}", kind(self.value)),
            );
            return None;
        };
        let mut entries = Vec::with_capacity(m.len());
        for (k, v) in m {
            match k.as_str() {
                Some(key) => entries.push((key, v)),
                None => errors.push(
                    &self.path,
                    format!("keys must be strings, found {}", kind(k)),
                ),
            }
        }
        Some(Map {
            path: self.path.clone(),
            entries,
        })
    }

    pub fn string(&self, errors: &mut Errors) -> Option<&'a str> {
        match self.value {
            Value::String(s) => Some(s.as_str()),
            other => {
                errors.push(
                    &self.path,
                    format!("expected a string, found {}", kind(other)),
                );
                None
            }
        }
    }

    pub fn boolean(&self, errors: &mut Errors) -> Option<bool> {
        match self.value {
            Value::Bool(b) => Some(*b),
            other => {
                errors.push(
                    &self.path,
                    format!("expected true or false, found {}", kind(other)),
                );
                None
            }
        }
    }

    pub fn strings(&self, errors: &mut Errors) -> Option<Vec<&'a str>> {
        let Value::Sequence(items) = self.value else {
            errors.push(
                &self.path,
                format!("expected a list, found {}", kind(self.value)),
            );
            return None;
        };
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            match item.as_str() {
                Some(s) => out.push(s),
                None => errors.push(
                    &format!("{}[{i}]", self.path),
                    format!("expected a string, found {}", kind(item)),
                ),
            }
        }
        Some(out)
    }

    /// A whole number above 0 (`unit` names what is counted, for the message).
    pub fn positive_count(&self, unit: &str, errors: &mut Errors) -> Option<u64> {
        match self.value.as_u64() {
            Some(v) if v > 0 => Some(v),
            _ => {
                errors.push(
                    &self.path,
                    format!(
                        "must be a whole number{unit} above 0 (leave the key out for no limit)"
                    ),
                );
                None
            }
        }
    }

    /// A size: an integer number of bytes, or a number with `KiB`, `MiB` or `GiB`.
    pub fn size(&self, errors: &mut Errors) -> Option<u64> {
        let parsed = match self.value {
            Value::Number(n) => n
                .as_u64()
                .ok_or_else(|| "must be a whole number of bytes".into()),
            Value::String(s) => parse_size(s),
            other => Err(format!("expected a size, found {}", kind(other))),
        };
        parsed.map_err(|m| errors.push(&self.path, m)).ok()
    }

    /// A duration with a unit: `500ms`, `30s`, `5m`, `1h`.
    pub fn duration(&self, errors: &mut Errors) -> Option<Duration> {
        let parsed = match self.value {
            Value::String(s) => parse_duration(s),
            Value::Number(_) => Err("add a unit: ms, s, m or h (for example `30s`)".into()),
            other => Err(format!("expected a duration, found {}", kind(other))),
        };
        parsed.map_err(|m| errors.push(&self.path, m)).ok()
    }
}

impl<'a> Map<'a> {
    /// The child at `key`, if present, with its path.
    pub fn get(&self, key: &str) -> Option<Node<'a>> {
        let value = self.entries.iter().find(|(k, _)| *k == key)?.1;
        Some(Node {
            value,
            path: join(&self.path, key),
        })
    }

    /// Every entry in file order, as (key, node).
    pub fn entries(&self) -> impl Iterator<Item = (&'a str, Node<'a>)> + '_ {
        self.entries.iter().map(|(k, v)| {
            (
                *k,
                Node {
                    value: v,
                    path: join(&self.path, k),
                },
            )
        })
    }
}

/// Names of providers and callers: a-z, 0-9, `-`, `_`, at most 64 characters (they become
/// log fields and bounded metric labels).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

pub fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "nothing (null)",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

/// The known key within edit distance 2 of `key`, for "did you mean".
fn closest<'k>(key: &str, known: &[&'k str]) -> Option<&'k str> {
    known
        .iter()
        .map(|k| (levenshtein(key, k), *k))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let unit = unit.trim();
    let what = || {
        format!(
            "`{text}` is not a size; write bytes as an integer, or e.g. `512KiB`, `10MiB`, `1GiB`"
        )
    };
    let n: u64 = num.parse().map_err(|_| what())?;
    let mult: u64 = match unit {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => return Err(what()),
    };
    n.checked_mul(mult).ok_or_else(what)
}

pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let what = || format!("`{text}` is not a duration; write e.g. `500ms`, `30s`, `5m`, `1h`");
    let n: u64 = num.parse().map_err(|_| what())?;
    let d = match unit.trim() {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.checked_mul(60).ok_or_else(what)?),
        "h" => Duration::from_secs(n.checked_mul(3600).ok_or_else(what)?),
        "" => {
            return Err(format!(
                "`{text}` has no unit; add ms, s, m or h (for example `30s`)"
            ))
        }
        _ => return Err(what()),
    };
    Ok(d)
}

/// Prints a size the way a user would write it.
pub fn show_size(n: u64) -> String {
    for (unit, m) in [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
        if n >= m && n % m == 0 {
            return format!("{}{unit}", n / m);
        }
    }
    format!("{n}B")
}

/// Prints a duration the way a user would write it.
pub fn show_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms % 1000 != 0 {
        return format!("{ms}ms");
    }
    let s = d.as_secs();
    if s != 0 && s % 3600 == 0 {
        format!("{}h", s / 3600)
    } else if s != 0 && s % 60 == 0 {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

/// `text` with every occurrence of `needle` (ASCII case ignored) replaced by `with`.
pub fn replace_ignoring_case(text: &str, needle: &str, with: &str) -> String {
    if needle.is_empty() {
        return text.to_owned();
    }
    let lower = text.to_ascii_lowercase();
    let needle = needle.to_ascii_lowercase();
    let mut out = String::with_capacity(text.len());
    let mut from = 0;
    // ASCII lower-casing keeps byte offsets, so positions in `lower` are positions in `text`.
    while let Some(at) = lower[from..].find(&needle) {
        out.push_str(&text[from..from + at]);
        out.push_str(with);
        from += at + needle.len();
    }
    out.push_str(&text[from..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("10MiB"), Ok(10 << 20));
        assert_eq!(parse_size("512 KiB"), Ok(512 << 10));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("123"), Ok(123));
        assert!(parse_size("10MB").is_err());
        assert!(parse_size("-1").is_err());
        assert!(parse_size("MiB").is_err());
        assert_eq!(show_size(10 << 20), "10MiB");
        assert_eq!(show_size(1000), "1000B");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("30").unwrap_err().contains("no unit"));
        assert!(parse_duration("3d").is_err());
        assert_eq!(show_duration(Duration::from_secs(1800)), "30m");
        assert_eq!(show_duration(Duration::from_millis(1500)), "1500ms");
    }

    #[test]
    fn did_you_mean() {
        assert_eq!(
            closest("upstrem", &["upstream", "listen"]),
            Some("upstream")
        );
        assert_eq!(closest("zzzzzz", &["upstream", "listen"]), None);
    }
}
