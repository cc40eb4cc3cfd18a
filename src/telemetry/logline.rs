//! The JSON log line, formatted by hand: one flat object per event (`timestamp`, `level`, then
//! the event's fields in order) written into a reused per-thread buffer and handed to the
//! writer in one call. It replaces tracing-subscriber's JSON formatter, which cost about a
//! quarter of the proxy's instructions per request (docs/benchmarks.md).

use std::cell::{Cell, RefCell};
use std::fmt::{self, Write as _};
use std::io::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::Context;
use tracing_subscriber::Layer;

/// A `Layer` writing each event as one JSON line to `W`.
pub struct JsonLines<W> {
    writer: W,
}

impl<W> JsonLines<W> {
    pub fn new(writer: W) -> Self {
        JsonLines { writer }
    }
}

thread_local! {
    /// The line being built; kept between events so formatting allocates nothing.
    static LINE: RefCell<String> = RefCell::new(String::with_capacity(512));
    /// The second of the last timestamp and its formatted `YYYY-MM-DDTHH:MM:SS.` prefix.
    static SECOND: Cell<(u64, [u8; 20])> = const { Cell::new((u64::MAX, [0; 20])) };
}

impl<S, W> Layer<S> for JsonLines<W>
where
    S: Subscriber,
    W: for<'a> MakeWriter<'a> + 'static,
{
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        LINE.with(|cell| {
            // An event logged while formatting another (a `Debug` impl that logs) gets a
            // fresh buffer instead of a panic.
            let mut fresh = String::new();
            let mut borrowed = cell.try_borrow_mut();
            let line = match borrowed.as_deref_mut() {
                Ok(line) => line,
                Err(_) => &mut fresh,
            };
            line.clear();
            format_event(line, event, SystemTime::now());
            let _ = self.writer.make_writer().write_all(line.as_bytes());
            if line.capacity() > 64 * 1024 {
                *line = String::with_capacity(512);
            }
        });
    }
}

/// Formats one event as a JSON object and a newline.
pub fn format_event(out: &mut String, event: &Event<'_>, now: SystemTime) {
    out.push_str("{\"timestamp\":\"");
    push_timestamp(out, now);
    out.push_str("\",\"level\":\"");
    out.push_str(level_name(*event.metadata().level()));
    out.push('"');
    event.record(&mut Fields { out });
    out.push_str("}\n");
}

fn level_name(level: Level) -> &'static str {
    match level {
        Level::ERROR => "ERROR",
        Level::WARN => "WARN",
        Level::INFO => "INFO",
        Level::DEBUG => "DEBUG",
        Level::TRACE => "TRACE",
    }
}

/// Appends an RFC 3339 UTC timestamp with microseconds: `2026-11-29T03:23:47.911727Z`.
pub fn push_timestamp(out: &mut String, now: SystemTime) {
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (cached, mut prefix) = SECOND.get();
    if cached != secs {
        prefix = second_prefix(secs);
        SECOND.set((secs, prefix));
    }
    // The prefix is ASCII digits and separators, written by `second_prefix`.
    out.push_str(std::str::from_utf8(&prefix).unwrap_or("1970-01-01T00:00:00."));
    let mut micros = since.subsec_micros();
    let mut digits = [b'0'; 6];
    for d in digits.iter_mut().rev() {
        *d = b'0' + (micros % 10) as u8;
        micros /= 10;
    }
    out.push_str(std::str::from_utf8(&digits).unwrap_or("000000"));
    out.push('Z');
}

/// `YYYY-MM-DDTHH:MM:SS.` for seconds since the Unix epoch (proleptic Gregorian, UTC).
fn second_prefix(secs: u64) -> [u8; 20] {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let mut s = String::with_capacity(20);
    let _ = write!(
        s,
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.",
        year.clamp(0, 9999),
        month,
        day,
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    );
    let mut out = [b'0'; 20];
    out.copy_from_slice(&s.as_bytes()[..20]);
    out
}

/// Writes each field as `,"name":value`.
struct Fields<'a> {
    out: &'a mut String,
}

impl Fields<'_> {
    fn key(&mut self, field: &Field) {
        self.out.push_str(",\"");
        // Field names are Rust identifiers (the `tracing` macros' keys): nothing to escape.
        self.out.push_str(field.name());
        self.out.push_str("\":");
    }
}

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.key(field);
        self.out.push('"');
        push_escaped(self.out, value);
        self.out.push('"');
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.key(field);
        push_u64(self.out, value);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.key(field);
        if value < 0 {
            self.out.push('-');
        }
        push_u64(self.out, value.unsigned_abs());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.key(field);
        self.out.push_str(if value { "true" } else { "false" });
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.key(field);
        push_f64(self.out, value);
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.key(field);
        self.out.push('"');
        let _ = write!(Escaping(self.out), "{value}");
        self.out.push('"');
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.key(field);
        self.out.push('"');
        let _ = write!(Escaping(self.out), "{value:?}");
        self.out.push('"');
    }
}

/// Appends `value` as `{value}` prints it (`null` when not finite), without the float
/// formatter for whole thousandths: durations are logged in milliseconds rounded to the
/// microsecond (`1.234`).
fn push_f64(out: &mut String, value: f64) {
    if !value.is_finite() {
        out.push_str("null");
    } else if let Some(thousandths) = exact_thousandths(value) {
        if thousandths < 0 {
            out.push('-');
        }
        let t = thousandths.unsigned_abs();
        push_u64(out, t / 1000);
        let frac = t % 1000;
        if frac != 0 {
            let digits = [
                b'.',
                b'0' + (frac / 100) as u8,
                b'0' + (frac / 10 % 10) as u8,
                b'0' + (frac % 10) as u8,
            ];
            let len = match frac {
                f if f % 100 == 0 => 2,
                f if f % 10 == 0 => 3,
                _ => 4,
            };
            out.push_str(std::str::from_utf8(&digits[..len]).unwrap_or_default());
        }
    } else {
        let _ = write!(out, "{value}");
    }
}

/// Whether `b` holds a quote, a backslash or a control character, eight bytes at a time
/// (SWAR: no branch per byte; log values are mostly clean and short).
fn needs_escape(b: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // A byte of `x` is zero, or below `n`, exactly where the result has its high bit set
    // (for bytes below 0x80; bytes with the high bit set are UTF-8 and never need escaping).
    let below = |x: u64, n: u64| x.wrapping_sub(ONES * n) & !x & HIGH;
    let mut chunks = b.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        let x = u64::from_le_bytes(w);
        if below(x, 0x20)
            | below(x ^ (ONES * u64::from(b'"')), 1)
            | below(x ^ (ONES * u64::from(b'\\')), 1)
            != 0
        {
            return true;
        }
    }
    chunks
        .remainder()
        .iter()
        .any(|&c| c < 0x20 || c == b'"' || c == b'\\')
}

/// Appends the decimal digits of `n`.
fn push_u64(out: &mut String, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.push_str(std::str::from_utf8(&digits[i..]).unwrap_or_default());
}

/// `v * 1000` when `v` is a whole number of thousandths that `{v}` would print exactly
/// (no exponent, at most three decimals), else `None`.
fn exact_thousandths(v: f64) -> Option<i64> {
    const LIMIT: f64 = 1e12;
    if v.abs() >= LIMIT {
        return None;
    }
    let t = (v * 1000.0).round();
    // The shortest representation of `v` is `t / 1000` only if they are the same double.
    (t / 1000.0 == v).then_some(t as i64)
}

/// A `fmt::Write` that JSON-escapes what it is given.
struct Escaping<'a>(&'a mut String);

impl fmt::Write for Escaping<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        push_escaped(self.0, s);
        Ok(())
    }
}

/// Appends `s` escaped for a JSON string (quotes, backslashes, control characters).
pub fn push_escaped(out: &mut String, s: &str) {
    if !needs_escape(s.as_bytes()) {
        out.push_str(s);
        return;
    }
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn timestamps_are_rfc3339_utc_micros() {
        let at = |secs: u64, micros: u64| {
            let mut s = String::new();
            push_timestamp(
                &mut s,
                UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_micros(micros),
            );
            s
        };
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(at(1_795_923_827, 911_727), "2026-11-29T03:43:47.911727Z");
        assert_eq!(at(951_782_400, 5), "2000-02-29T00:00:00.000005Z");
        assert_eq!(at(4_107_542_399, 999_999), "2100-02-28T23:59:59.999999Z");
        // The per-second cache: a second change is seen.
        assert_eq!(at(1_795_923_828, 1), "2026-11-29T03:43:48.000001Z");
    }

    #[test]
    fn numbers_print_as_display_would() {
        for v in [
            0.0,
            1.5,
            2.0,
            174.553,
            0.09,
            0.001,
            1.1,
            3001.718,
            -2.25,
            123456.789,
            0.1 + 0.2,
            1e-7,
            1e13,
            12.3456,
        ] {
            let mut s = String::new();
            push_f64(&mut s, v);
            assert_eq!(s, format!("{v}"), "{v}");
        }
        for v in [0u64, 7, 10, 999, 1000, u64::MAX] {
            let mut s = String::new();
            push_u64(&mut s, v);
            assert_eq!(s, v.to_string());
        }
    }

    #[test]
    fn escape_check_finds_every_special_byte_at_every_position() {
        assert!(!needs_escape(b""));
        assert!(!needs_escape(
            "plain text, caf\u{e9} \u{1F600} 0123456789 /v1/chat".as_bytes()
        ));
        for special in [b'"', b'\\', b'\n', 0u8, 0x1f, 0x7f - 0x60] {
            for len in 1..20 {
                for at in 0..len {
                    let mut v = vec![b'a'; len];
                    v[at] = special;
                    assert!(needs_escape(&v), "{special:#x} at {at} of {len}");
                }
            }
        }
        // Bytes next to the specials, and UTF-8 continuation bytes, are clean.
        for clean in [0x20u8, b'!', b'#', b'[', b']', 0x7f, 0x80, 0xa2, 0xdc, 0xff] {
            assert!(!needs_escape(&[clean; 17]), "{clean:#x}");
        }
    }

    #[test]
    fn escapes_like_json() {
        let mut s = String::new();
        push_escaped(&mut s, "a\"b\\c\nd\u{1}é");
        assert_eq!(s, r#"a\"b\\c\nd\u0001é"#);
        let v: serde_json::Value = serde_json::from_str(&format!("\"{s}\"")).unwrap();
        assert_eq!(v, "a\"b\\c\nd\u{1}é");
    }

    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn one_flat_object_per_event() {
        let capture = Capture::default();
        let writer = capture.clone();
        let subscriber =
            tracing_subscriber::registry().with(JsonLines::new(move || writer.clone()));
        tracing::subscriber::with_default(subscriber, || {
            let addr: std::net::SocketAddr = "127.0.0.1:9".parse().unwrap();
            let none: Option<u64> = None;
            tracing::info!(
                event = "startup",
                status = 200u16,
                delta = -3i64,
                duration_ms = 1.5,
                whole = 2.0,
                streamed = true,
                listen = %addr,
                skipped = none,
                path = "/v1/\"x\"\n",
            );
            tracing::warn!(
                event = "startup",
                nan = f64::NAN,
                "a message with \"quotes\""
            );
        });
        let text = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        let a = &lines[0];
        assert_eq!(a["level"], "INFO");
        assert_eq!(a["event"], "startup");
        assert_eq!(a["status"], 200);
        assert_eq!(a["delta"], -3);
        assert_eq!(a["duration_ms"], 1.5);
        assert_eq!(a["whole"].as_f64(), Some(2.0));
        assert_eq!(a["streamed"], true);
        assert_eq!(a["listen"], "127.0.0.1:9");
        assert_eq!(a["path"], "/v1/\"x\"\n");
        assert!(a.get("skipped").is_none());
        assert_eq!(a["timestamp"].as_str().unwrap().len(), 27);
        assert!(text.starts_with("{\"timestamp\":\""));
        let b = &lines[1];
        assert_eq!(b["level"], "WARN");
        assert_eq!(b["message"], "a message with \"quotes\"");
        assert!(b["nan"].is_null());
    }
}
