//! OpenTelemetry traces (docs/design.md §8d, docs/observability.md "Traces"): one span per
//! request, begun in `proxy::handle` (ids, parent, start time) and ended once where the request
//! ends; ended spans go to a bounded queue that the export thread (`export.rs`) drains.
//!
//! The SDK's `SpanData`, ids, sampler and W3C propagator are used directly, without its
//! `Tracer`/`SpanProcessor` machinery: a span here is built whole at the end of a request
//! (no per-frame work, no thread-local context), and the SDK's batch processor only logs the
//! spans it drops, while ours counts them in `keyproxy_trace_spans_dropped_total`.

mod encode;
mod export;
mod queue;

use std::sync::Arc;
use std::time::SystemTime;

use http::HeaderMap;
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{
    Event, SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    IdGenerator, RandomIdGenerator, Sampler, SamplingDecision, ShouldSample, SpanData, SpanEvents,
    SpanLinks,
};
use prometheus_client::metrics::counter::Counter;

use crate::config::plan::TracingPlan;
use crate::telemetry::metrics::Metrics;

pub use export::{Dial, ExportThread};

/// Makes and queues spans; shared by every route.
pub struct Tracer {
    queue: Arc<queue::Queue>,
    sampler: Sampler,
    ids: RandomIdGenerator,
    scope: InstrumentationScope,
    dropped: Counter,
    /// The parent of requests without a `traceparent` (`tracing.parent`).
    default_parent: Option<opentelemetry::Context>,
    /// Forward the client's trace context upstream (as this span's child), else strip it.
    pub propagate_upstream: bool,
}

/// A span begun: its ids, its parent and its start. Ended by `Tracer::end`.
#[derive(Clone, Debug)]
pub struct SpanStart {
    trace_id: TraceId,
    span_id: SpanId,
    parent: SpanContext,
    trace_state: TraceState,
    start: SystemTime,
}

impl SpanStart {
    /// `traceparent` naming this span as the parent (for `propagate_upstream`).
    pub fn traceparent(&self) -> String {
        format!("00-{}-{}-01", self.trace_id, self.span_id)
    }

    /// When the request arrived.
    pub fn start_time(&self) -> SystemTime {
        self.start
    }

    /// The client's `tracestate`, forwarded with `traceparent`.
    pub fn tracestate(&self) -> String {
        self.trace_state.header()
    }
}

/// What `Tracer::end` records (attributes are the caller's; never a secret or a body).
pub struct SpanEnd {
    pub name: String,
    pub attributes: Vec<KeyValue>,
    /// (name, time, attributes): e.g. the first byte of the response.
    pub events: Vec<(&'static str, SystemTime, Vec<KeyValue>)>,
    /// `Some(error type)`: the span's status is Error.
    pub error: Option<String>,
}

impl Tracer {
    /// The tracer and its export thread, started; the thread ends once every `Tracer` is gone.
    pub fn start(
        plan: &TracingPlan,
        tls: &Arc<rustls::ClientConfig>,
        metrics: &Metrics,
        dial: Option<Dial>,
    ) -> std::io::Result<(Tracer, ExportThread)> {
        let queue = Arc::new(queue::Queue::new(
            plan.max_queue_size,
            plan.max_export_batch_size,
        ));
        let thread = export::spawn(plan, tls, metrics, queue.clone(), dial)?;
        let default_parent = plan.parent.as_deref().map(|tp| {
            let mut headers = HeaderMap::new();
            if let Ok(v) = http::HeaderValue::from_str(tp) {
                headers.insert("traceparent", v);
            }
            TraceContextPropagator::new().extract(&Headers(&headers))
        });
        let ratio = Sampler::TraceIdRatioBased(plan.sample_ratio);
        let tracer = Tracer {
            queue,
            sampler: Sampler::ParentBased(Box::new(ratio)),
            ids: RandomIdGenerator::default(),
            scope: InstrumentationScope::builder("llm-keyproxy")
                .with_version(env!("CARGO_PKG_VERSION"))
                .build(),
            dropped: metrics.trace_spans_dropped.clone(),
            default_parent,
            propagate_upstream: plan.propagate_upstream,
        };
        Ok((tracer, thread))
    }

    /// Begins a span for a request: the client's `traceparent`/`tracestate` (W3C) is its
    /// parent. `None` when the sampler leaves this request out.
    pub fn begin(&self, headers: &HeaderMap) -> Option<SpanStart> {
        let start = SystemTime::now();
        // Most requests bring no traceparent: no context is built for them.
        let sent = headers
            .contains_key("traceparent")
            .then(|| TraceContextPropagator::new().extract(&Headers(headers)))
            .filter(|cx| cx.span().span_context().is_valid());
        let cx = sent
            .or_else(|| self.default_parent.clone())
            .unwrap_or_default();
        let parent = cx.span().span_context().clone();
        let trace_id = match parent.is_valid() {
            true => parent.trace_id(),
            false => self.ids.new_trace_id(),
        };
        let kind = SpanKind::Server;
        let parent_cx = parent.is_valid().then_some(&cx);
        let decision = self
            .sampler
            .should_sample(parent_cx, trace_id, "", &kind, &[], &[])
            .decision;
        if decision != SamplingDecision::RecordAndSample {
            return None;
        }
        Some(SpanStart {
            trace_id,
            span_id: self.ids.new_span_id(),
            trace_state: parent.trace_state().clone(),
            parent,
            start,
        })
    }

    /// Ends a span now and queues it; a full queue drops it (counted), never waits.
    pub fn end(&self, start: SpanStart, end: SpanEnd) {
        let events = end
            .events
            .into_iter()
            .map(|(name, at, attrs)| Event::new(name, at, attrs, 0))
            .collect();
        let status = match end.error {
            Some(e) => Status::error(e),
            None => Status::Unset,
        };
        let span = SpanData {
            span_context: SpanContext::new(
                start.trace_id,
                start.span_id,
                TraceFlags::SAMPLED,
                false,
                start.trace_state,
            ),
            parent_span_id: start.parent.span_id(),
            parent_span_is_remote: start.parent.is_valid(),
            span_kind: SpanKind::Server,
            name: end.name.into(),
            start_time: start.start,
            end_time: SystemTime::now(),
            attributes: end.attributes,
            dropped_attributes_count: 0,
            events: span_events(events),
            links: SpanLinks::default(),
            status,
            instrumentation_scope: self.scope.clone(),
        };
        if !self.queue.push(span) {
            self.dropped.inc();
        }
    }
}

impl Drop for Tracer {
    /// The last route is gone: the export thread sends what is queued and ends.
    fn drop(&mut self) {
        self.queue.close();
    }
}

fn span_events(events: Vec<Event>) -> SpanEvents {
    let mut e = SpanEvents::default();
    e.events = events;
    e
}

/// The request's headers as the W3C propagator reads them.
struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}
