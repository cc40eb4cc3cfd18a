//! The OTLP `ExportTraceServiceRequest` protobuf, written directly from the SDK's `SpanData`
//! (field numbers from opentelemetry-proto's `trace/v1/trace.proto`, `common/v1/common.proto`
//! and `resource/v1/resource.proto`). One pass per span, no intermediate messages: the
//! generated types' conversion and nested length computations cost 26,000 instructions per
//! span, this about a tenth (docs/benchmarks.md "Tracing"). tests/tracing.rs decodes every
//! export with the official generated types, so a mistake here fails there.

use std::time::{SystemTime, UNIX_EPOCH};

use opentelemetry::trace::{SpanKind, Status};
use opentelemetry::{InstrumentationScope, KeyValue, Value};
use opentelemetry_sdk::trace::SpanData;

const LEN: u8 = 2;
const VARINT: u8 = 0;
const I64: u8 = 1;
const I32: u8 = 5;

/// The request body for one batch: one resource, one scope, these spans.
pub(super) fn export_request(
    spans: &[SpanData],
    resource: &[KeyValue],
    scope: &InstrumentationScope,
) -> Vec<u8> {
    let mut all = Vec::with_capacity(spans.len() * 600);
    let mut one = Vec::with_capacity(1024);
    for s in spans {
        one.clear();
        span(&mut one, s);
        message(&mut all, 2, &one);
    }
    // The wrappers' heads first (their lengths are known from the parts), then the spans,
    // copied once.
    let mut scope_msg = Vec::with_capacity(64);
    string(&mut scope_msg, 1, scope.name());
    if let Some(v) = scope.version() {
        string(&mut scope_msg, 2, v);
    }
    let mut resource_msg = Vec::with_capacity(256);
    for kv in resource {
        key_value(&mut resource_msg, 1, kv);
    }
    let field = |len: usize| 1 + varint_len(len as u64) + len;
    let scope_spans = field(scope_msg.len()) + all.len();
    let resource_spans = field(resource_msg.len()) + field(scope_spans);
    let mut out = Vec::with_capacity(field(resource_spans));
    tag(&mut out, 1, LEN);
    varint(&mut out, resource_spans as u64);
    message(&mut out, 1, &resource_msg);
    tag(&mut out, 2, LEN);
    varint(&mut out, scope_spans as u64);
    message(&mut out, 1, &scope_msg);
    out.extend_from_slice(&all);
    out
}

fn span(b: &mut Vec<u8>, s: &SpanData) {
    let cx = &s.span_context;
    bytes(b, 1, &cx.trace_id().to_bytes());
    bytes(b, 2, &cx.span_id().to_bytes());
    let state = cx.trace_state().header();
    if !state.is_empty() {
        string(b, 3, &state);
    }
    if s.parent_span_id != opentelemetry::trace::SpanId::INVALID {
        bytes(b, 4, &s.parent_span_id.to_bytes());
    }
    string(b, 5, &s.name);
    let kind = match s.span_kind {
        SpanKind::Internal => 1,
        SpanKind::Server => 2,
        SpanKind::Client => 3,
        SpanKind::Producer => 4,
        SpanKind::Consumer => 5,
    };
    tag(b, 6, VARINT);
    varint(b, kind);
    fixed64(b, 7, unix_nanos(s.start_time));
    fixed64(b, 8, unix_nanos(s.end_time));
    for kv in &s.attributes {
        key_value(b, 9, kv);
    }
    let mut event = Vec::new();
    for e in s.events.iter() {
        event.clear();
        fixed64(&mut event, 1, unix_nanos(e.timestamp));
        string(&mut event, 2, &e.name);
        for kv in &e.attributes {
            key_value(&mut event, 3, kv);
        }
        message(b, 11, &event);
    }
    if let Status::Error { description } = &s.status {
        let mut status = Vec::with_capacity(description.len() + 4);
        string(&mut status, 2, description);
        tag(&mut status, 3, VARINT);
        varint(&mut status, 2);
        message(b, 15, &status);
    } else if s.status == Status::Ok {
        message(b, 15, &[3 << 3, 1]);
    }
    // Span flags: the W3C trace flags, and whether the parent is remote (bits 8 and 9).
    let remote = if s.parent_span_is_remote {
        0x300
    } else {
        0x100
    };
    tag(b, 16, I32);
    b.extend_from_slice(&(u32::from(cx.trace_flags().to_u8()) | remote).to_le_bytes());
}

/// `KeyValue { key, value: AnyValue }` as field `field`.
fn key_value(b: &mut Vec<u8>, field: u32, kv: &KeyValue) {
    let key = kv.key.as_str();
    let text;
    // AnyValue's oneof: string 1, bool 2, int 3, double 4 (arrays are written as text).
    let (value_field, value): (u32, Scalar) = match &kv.value {
        Value::String(s) => (1, Scalar::Text(s.as_str())),
        Value::Bool(v) => (2, Scalar::Varint(u64::from(*v))),
        Value::I64(v) => (3, Scalar::Varint(*v as u64)),
        Value::F64(v) => (4, Scalar::Double(*v)),
        other => {
            text = other.to_string();
            (1, Scalar::Text(&text))
        }
    };
    let value_len = 1 + value.len();
    let len =
        1 + varint_len(key.len() as u64) + key.len() + 1 + varint_len(value_len as u64) + value_len;
    tag(b, field, LEN);
    varint(b, len as u64);
    string(b, 1, key);
    tag(b, 2, LEN);
    varint(b, value_len as u64);
    match value {
        Scalar::Text(s) => string(b, value_field, s),
        Scalar::Varint(v) => {
            tag(b, value_field, VARINT);
            varint(b, v);
        }
        Scalar::Double(v) => {
            tag(b, value_field, I64);
            b.extend_from_slice(&v.to_le_bytes());
        }
    }
}

enum Scalar<'a> {
    Text(&'a str),
    Varint(u64),
    Double(f64),
}

impl Scalar<'_> {
    /// Encoded length without the tag.
    fn len(&self) -> usize {
        match self {
            Scalar::Text(s) => varint_len(s.len() as u64) + s.len(),
            Scalar::Varint(v) => varint_len(*v),
            Scalar::Double(_) => 8,
        }
    }
}

fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn tag(b: &mut Vec<u8>, field: u32, wire: u8) {
    varint(b, u64::from(field << 3 | u32::from(wire)));
}

fn varint(b: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        b.push((v as u8) | 0x80);
        v >>= 7;
    }
    b.push(v as u8);
}

fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

fn bytes(b: &mut Vec<u8>, field: u32, data: &[u8]) {
    tag(b, field, LEN);
    varint(b, data.len() as u64);
    b.extend_from_slice(data);
}

fn string(b: &mut Vec<u8>, field: u32, s: &str) {
    bytes(b, field, s.as_bytes());
}

fn message(b: &mut Vec<u8>, field: u32, body: &[u8]) {
    bytes(b, field, body);
}

fn fixed64(b: &mut Vec<u8>, field: u32, v: u64) {
    tag(b, field, I64);
    b.extend_from_slice(&v.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_lengths() {
        for v in [0u64, 1, 127, 128, 16_383, 16_384, u64::MAX] {
            let mut b = Vec::new();
            varint(&mut b, v);
            assert_eq!(b.len(), varint_len(v), "{v}");
        }
    }
}
