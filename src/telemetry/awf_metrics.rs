//! `GET /metrics` on AWF's port 10000: the Node sidecar's JSON shape (`counters`, `histograms`
//! with p50/p90/p99, `gauges` with `uptime_seconds`), built from the Prometheus registry's own
//! exposition so both always agree. The full metrics stay on the admin listener.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use crate::telemetry::metrics::{
    Metrics, ACTIVE_REQUESTS, PREFIX, REJECTIONS, REQUESTS, REQUEST_BYTES, REQUEST_DURATION,
    RESPONSE_BYTES, UPSTREAM_ERRORS,
};

/// One sample of the exposition: metric name, labels, value.
struct Sample<'a> {
    name: &'a str,
    labels: Vec<(&'a str, &'a str)>,
    value: f64,
}

impl Sample<'_> {
    fn label(&self, key: &str) -> &str {
        self.labels
            .iter()
            .find(|(k, _)| *k == key)
            .map_or("", |(_, v)| v)
    }
}

/// Parses `name{k="v",...} value` lines (the registry's own output: label values are provider
/// names and fixed sets, never holding `"` or `,`).
fn samples(text: &str) -> Vec<Sample<'_>> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|line| {
            let (head, value) = line.rsplit_once(' ')?;
            let value = value.parse::<f64>().ok()?;
            let (name, labels) = match head.split_once('{') {
                Some((name, rest)) => (name, rest.strip_suffix('}')?),
                None => (head, ""),
            };
            let labels = labels
                .split(',')
                .filter_map(|kv| {
                    let (k, v) = kv.split_once('=')?;
                    Some((k, v.trim_matches('"')))
                })
                .collect();
            Some(Sample {
                name,
                labels,
                value,
            })
        })
        .collect()
}

/// The Node sidecar's `/metrics` JSON from the registry (docs/awf.md, "Endpoints").
pub fn node_shape(metrics: &Metrics) -> Value {
    let text = metrics.encode();
    let all = samples(&text);
    let named = |family: &str, suffix: &str| {
        let want = format!("{PREFIX}_{family}{suffix}");
        all.iter().filter(move |s| s.name == want)
    };
    let mut counters: BTreeMap<String, u64> = BTreeMap::new();
    let mut add = |key: String, v: f64| *counters.entry(key).or_default() += v as u64;
    for s in named(REQUESTS, "_total") {
        let class = s.label("status").get(..1).unwrap_or("0");
        add(
            format!("requests_total:{}:{class}xx", s.label("provider")),
            s.value,
        );
    }
    for s in named(UPSTREAM_ERRORS, "_total") {
        add(
            format!("requests_errors_total:{}", s.label("provider")),
            s.value,
        );
    }
    for s in named(REJECTIONS, "_total").filter(|s| s.label("reason") == "rate_limited") {
        add(
            format!("rate_limit_rejected_total:{}", s.label("provider")),
            s.value,
        );
    }
    for (family, node) in [
        (REQUEST_BYTES, "request_bytes_total"),
        (RESPONSE_BYTES, "response_bytes_total"),
    ] {
        for s in named(family, "_total") {
            add(format!("{node}:{}", s.label("provider")), s.value);
        }
    }

    let mut durations = Map::new();
    let mut buckets: BTreeMap<&str, Vec<(f64, u64)>> = BTreeMap::new();
    for s in named(REQUEST_DURATION, "_bucket") {
        let le = match s.label("le") {
            "+Inf" => f64::INFINITY,
            le => le.parse::<f64>().unwrap_or(f64::INFINITY) * 1000.0,
        };
        buckets
            .entry(s.label("provider"))
            .or_default()
            .push((le, s.value as u64));
    }
    for (provider, mut b) in buckets {
        b.sort_by(|x, y| x.0.total_cmp(&y.0));
        let sum_ms = named(REQUEST_DURATION, "_sum")
            .find(|s| s.label("provider") == provider)
            .map_or(0.0, |s| s.value * 1000.0);
        durations.insert(provider.to_owned(), histogram(&b, sum_ms));
    }

    let mut active = Map::new();
    for s in named(ACTIVE_REQUESTS, "") {
        active.insert(s.label("provider").to_owned(), json!(s.value as i64));
    }
    json!({
        "counters": counters,
        "histograms": {"request_duration_ms": durations},
        "gauges": {
            "active_requests": active,
            "uptime_seconds": metrics.started.elapsed().as_secs(),
        },
        "prometheus": "every metric, in Prometheus text: GET /metrics on the admin listener (127.0.0.1:9901 inside the container)",
    })
}

/// One provider's duration histogram as Node showed it: percentiles interpolated within the
/// cumulative buckets (milliseconds), `count`, `sum`, and the buckets by upper bound.
fn histogram(cumulative: &[(f64, u64)], sum_ms: f64) -> Value {
    let count = cumulative.last().map_or(0, |b| b.1);
    let finite: Vec<(f64, u64)> = cumulative
        .iter()
        .copied()
        .filter(|b| b.0.is_finite())
        .collect();
    let percentile = |p: f64| -> f64 {
        if count == 0 {
            return 0.0;
        }
        let target = p * count as f64;
        let (mut prev, mut prev_bound) = (0.0, 0.0);
        for &(bound, cum) in &finite {
            let cum = cum as f64;
            if cum >= target {
                let fraction = if cum == prev {
                    0.0
                } else {
                    (target - prev) / (cum - prev)
                };
                return prev_bound + fraction * (bound - prev_bound);
            }
            (prev, prev_bound) = (cum, bound);
        }
        finite.last().map_or(0.0, |b| b.0)
    };
    let mut by_bound = Map::new();
    for &(bound, cum) in cumulative {
        let key = if bound.is_finite() {
            format!("{bound}")
        } else {
            "+Inf".to_owned()
        };
        by_bound.insert(key, json!(cum));
    }
    json!({
        "p50": percentile(0.5).round() as u64,
        "p90": percentile(0.9).round() as u64,
        "p99": percentile(0.99).round() as u64,
        "count": count,
        "sum": sum_ms.round() as u64,
        "buckets": by_bound,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_shape_from_the_registry() {
        let m = Metrics::new();
        let p = m.provider("openai");
        p.request(200);
        p.request(201);
        p.request(429);
        p.rejection("rate_limited");
        p.upstream_error("connect");
        p.request_bytes.inc_by(10);
        p.response_bytes.inc_by(20);
        p.duration.observe(0.004);
        p.duration.observe(0.2);
        let v = node_shape(&m);
        let c = &v["counters"];
        assert_eq!(c["requests_total:openai:2xx"], 2);
        assert_eq!(c["requests_total:openai:4xx"], 1);
        assert_eq!(c["rate_limit_rejected_total:openai"], 1);
        assert_eq!(c["requests_errors_total:openai"], 1);
        assert_eq!(c["request_bytes_total:openai"], 10);
        assert_eq!(c["response_bytes_total:openai"], 20);
        let h = &v["histograms"]["request_duration_ms"]["openai"];
        assert_eq!(h["count"], 2);
        assert_eq!(h["sum"], 204);
        assert_eq!(h["buckets"]["5"], 1);
        assert_eq!(h["buckets"]["250"], 2);
        assert_eq!(h["buckets"]["+Inf"], 2);
        // p50: the first request's bucket (2.5, 5] ms, interpolated to its top.
        assert_eq!(h["p50"], 5);
        assert_eq!(v["gauges"]["active_requests"]["openai"], 0);
        assert!(v["gauges"]["uptime_seconds"].is_u64());
    }
}
