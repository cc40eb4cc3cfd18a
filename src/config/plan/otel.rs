//! `observability.tracing` and the standard `OTEL_*` variables, merged into one `TracingPlan`
//! (docs/design.md §8d, docs/observability.md "Traces"). The YAML block wins key by key; the
//! environment fills the rest. Tracing is on only when an endpoint is known.

use std::time::Duration;

use http::header::{HeaderName, HeaderValue};

use crate::config::egress::ProxyTarget;
use crate::config::secret::SecretRef;
use crate::config::{Errors, Node};

/// The OTLP export of one span per request, when configured.
#[derive(Clone)]
pub struct TracingPlan {
    /// The full URL spans are sent to: `.../v1/traces` for `http/protobuf`; the collector's
    /// base for `grpc` (the service path is added when sending).
    pub endpoint: http::Uri,
    pub protocol: OtlpProtocol,
    /// Resource attributes: `service.name` first, then `OTEL_RESOURCE_ATTRIBUTES`.
    pub resource: Vec<(String, String)>,
    /// Sent with every export (e.g. a collector's API key): values are secrets.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Root spans sampled at this ratio; a client's `traceparent` decides for its own.
    pub sample_ratio: f64,
    /// Forward trace context to the provider (default off).
    pub propagate_upstream: bool,
    /// The parent of spans whose request brings no `traceparent` (`parent:`, a W3C
    /// traceparent; AWF's `GITHUB_AW_OTEL_TRACE_ID` / `_PARENT_SPAN_ID` via render-config).
    pub parent: Option<String>,
    /// The forward proxy the collector is reached through: `upstream_proxy`, else
    /// `HTTPS_PROXY` ... for the collector's host (minus `NO_PROXY`), as for providers.
    pub proxy: Option<ProxyTarget>,
    /// Spans waiting for export; more are dropped and counted.
    pub max_queue_size: usize,
    pub max_export_batch_size: usize,
    pub schedule_delay: Duration,
    pub export_timeout: Duration,
}

/// Printed in `--check` output and errors: never the headers' values.
impl std::fmt::Debug for TracingPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.headers.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("TracingPlan")
            .field("endpoint", &self.endpoint)
            .field("protocol", &self.protocol)
            .field("resource", &self.resource)
            .field("headers", &names)
            .field("sample_ratio", &self.sample_ratio)
            .field("propagate_upstream", &self.propagate_upstream)
            .field("parent", &self.parent)
            .field("proxy", &self.proxy.as_ref().map(ToString::to_string))
            .finish_non_exhaustive()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OtlpProtocol {
    HttpProtobuf,
    Grpc,
}

pub const DEFAULT_SERVICE_NAME: &str = "llm-keyproxy";
pub const DEFAULT_MAX_QUEUE_SIZE: usize = 2048;
pub const DEFAULT_MAX_EXPORT_BATCH_SIZE: usize = 512;
pub const DEFAULT_SCHEDULE_DELAY: Duration = Duration::from_secs(5);
pub const DEFAULT_EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

const KEYS: &[&str] = &[
    "endpoint",
    "protocol",
    "service_name",
    "headers",
    "sample_ratio",
    "propagate_upstream",
    "parent",
    "max_queue_size",
    "schedule_delay",
    "export_timeout",
];

/// The tracing plan from `observability.tracing` (may be absent) and the environment.
pub(super) fn tracing_plan(
    node: Option<Node>,
    lookup: &dyn Fn(&str) -> Option<String>,
    errors: &mut Errors,
) -> Option<TracingPlan> {
    let env = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
    let map = node.as_ref().and_then(|n| n.map(KEYS, errors));
    let get = |key: &str| map.as_ref().and_then(|m| m.get(key));
    let string = |key: &str, errors: &mut Errors| {
        get(key).and_then(|n| n.string(errors).map(|s| (s.to_owned(), n.path.clone())))
    };
    if env("OTEL_TRACES_EXPORTER").is_some_and(|v| v.trim().eq_ignore_ascii_case("none")) {
        return None;
    }
    let protocol_text = string("protocol", errors)
        .or_else(|| {
            env("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
                .map(|v| (v, "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL".into()))
        })
        .or_else(|| {
            env("OTEL_EXPORTER_OTLP_PROTOCOL").map(|v| (v, "OTEL_EXPORTER_OTLP_PROTOCOL".into()))
        });
    let protocol = match protocol_text {
        None => OtlpProtocol::HttpProtobuf,
        Some((v, path)) => match v.trim() {
            "http/protobuf" => OtlpProtocol::HttpProtobuf,
            "grpc" => OtlpProtocol::Grpc,
            other => {
                // A value from the environment is not echoed (any variable may hold a secret
                // set by mistake); the file's own text is.
                let shown = match path.starts_with("OTEL_") {
                    true => String::new(),
                    false => format!(" `{other}`"),
                };
                errors.push(
                    &path,
                    format!("unsupported OTLP protocol{shown}; use `http/protobuf` or `grpc`"),
                );
                return None;
            }
        },
    };
    // A signal-specific URL is used as given; a base gets `v1/traces` (http/protobuf only).
    let (raw, base, path) = if let Some((v, p)) = string("endpoint", errors) {
        (v, true, p)
    } else if let Some(v) = env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
        (v, false, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT".into())
    } else if let Some(v) = env("OTEL_EXPORTER_OTLP_ENDPOINT") {
        (v, true, "OTEL_EXPORTER_OTLP_ENDPOINT".into())
    } else {
        return None;
    };
    let endpoint = match endpoint_uri(raw.trim(), base && protocol == OtlpProtocol::HttpProtobuf) {
        Ok(u) => u,
        Err(m) => {
            errors.push(&path, m);
            return None;
        }
    };
    let mut resource = Vec::new();
    if let Some(list) = env("OTEL_RESOURCE_ATTRIBUTES") {
        resource = key_values(&list);
    }
    let service = string("service_name", errors)
        .map(|(v, _)| v)
        .or_else(|| env("OTEL_SERVICE_NAME"))
        .or_else(|| {
            resource
                .iter()
                .find(|(k, _)| k == "service.name")
                .map(|(_, v)| v.clone())
        })
        .unwrap_or_else(|| DEFAULT_SERVICE_NAME.into());
    resource.retain(|(k, _)| k != "service.name");
    resource.insert(0, ("service.name".into(), service));
    let headers = headers(get("headers"), &env, lookup, errors);
    let mut plan = TracingPlan {
        endpoint,
        protocol,
        resource,
        headers,
        sample_ratio: 1.0,
        propagate_upstream: false,
        parent: None,
        proxy: None,
        max_queue_size: env_number(&env, "OTEL_BSP_MAX_QUEUE_SIZE")
            .unwrap_or(DEFAULT_MAX_QUEUE_SIZE as u64) as usize,
        max_export_batch_size: env_number(&env, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE")
            .unwrap_or(DEFAULT_MAX_EXPORT_BATCH_SIZE as u64)
            as usize,
        schedule_delay: env_number(&env, "OTEL_BSP_SCHEDULE_DELAY")
            .map_or(DEFAULT_SCHEDULE_DELAY, Duration::from_millis),
        export_timeout: env_number(&env, "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT")
            .or_else(|| env_number(&env, "OTEL_EXPORTER_OTLP_TIMEOUT"))
            .map_or(DEFAULT_EXPORT_TIMEOUT, Duration::from_millis),
    };
    let sampler = env("OTEL_TRACES_SAMPLER").unwrap_or_default();
    if sampler.ends_with("traceidratio") {
        if let Some(r) = env("OTEL_TRACES_SAMPLER_ARG").and_then(|v| v.trim().parse::<f64>().ok()) {
            plan.sample_ratio = r.clamp(0.0, 1.0);
        }
    }
    if let Some(n) = get("sample_ratio") {
        match n.value.as_f64() {
            Some(r) if (0.0..=1.0).contains(&r) => plan.sample_ratio = r,
            _ => errors.push(&n.path, "must be a number from 0 to 1"),
        }
    }
    if let Some(b) = get("propagate_upstream").and_then(|n| n.boolean(errors)) {
        plan.propagate_upstream = b;
    }
    if let Some((text, path)) = string("parent", errors) {
        match valid_traceparent(text.trim()) {
            true => plan.parent = Some(text.trim().to_ascii_lowercase()),
            false => errors.push(
                &path,
                "expected a W3C traceparent: 00-<32 hex trace id>-<16 hex span id>-<2 hex flags>",
            ),
        }
    }
    if let Some(n) = get("max_queue_size") {
        if let Some(v) = n.positive_count("", errors) {
            plan.max_queue_size = usize::try_from(v).unwrap_or(usize::MAX);
        }
    }
    for (key, slot) in [
        ("schedule_delay", &mut plan.schedule_delay),
        ("export_timeout", &mut plan.export_timeout),
    ] {
        if let Some(d) = get(key).and_then(|n| n.duration(errors)) {
            *slot = d;
        }
    }
    plan.max_queue_size = plan.max_queue_size.max(1);
    plan.max_export_batch_size = plan.max_export_batch_size.clamp(1, plan.max_queue_size);
    Some(plan)
}

/// `00-{32 hex}-{16 hex}-{2 hex}`, ids not all zero.
fn valid_traceparent(text: &str) -> bool {
    let parts: Vec<&str> = text.split('-').collect();
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    let nonzero = |s: &str| s.bytes().any(|b| b != b'0');
    matches!(parts.as_slice(), [v, t, s, f]
        if *v == "00" && hex(t, 32) && hex(s, 16) && hex(f, 2) && nonzero(t) && nonzero(s))
}

/// The collector's forward proxy: the file's `upstream_proxy`, else the environment's for
/// its host (docs/observability.md "Traces").
pub(super) fn collector_egress(
    plan: &mut TracingPlan,
    configured: Option<&ProxyTarget>,
    lookup: &dyn Fn(&str) -> Option<String>,
    errors: &mut Errors,
) {
    if let Some(p) = configured {
        plan.proxy = Some(p.clone());
        return;
    }
    let host = plan.endpoint.host().unwrap_or_default();
    let host = host.trim_start_matches('[').trim_end_matches(']');
    match ProxyTarget::from_env(lookup, &[host]) {
        None => {}
        Some((_, Ok(p))) => plan.proxy = Some(p),
        Some((var, Err(m))) => {
            let path = format!("(environment) {var}");
            if !errors.0.iter().any(|e| e.path == path) {
                errors.push(&path, m);
            }
        }
    }
}

fn env_number(env: &dyn Fn(&str) -> Option<String>, name: &str) -> Option<u64> {
    env(name).and_then(|v| v.trim().parse().ok())
}

/// An `http://` or `https://` URL with a host; `add_path` appends `v1/traces` to its path.
fn endpoint_uri(text: &str, add_path: bool) -> Result<http::Uri, String> {
    // The value is not echoed: a mistyped URL may hold a credential.
    let bad = || "expected an http:// or https:// URL with a host".to_owned();
    let uri: http::Uri = text.parse().map_err(|_| bad())?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
        return Err(bad());
    }
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err("credentials in the URL are not accepted: give them as headers".into());
    }
    if !add_path || uri.path().ends_with("/v1/traces") {
        return Ok(uri);
    }
    let base = text.trim_end_matches('/');
    format!("{base}/v1/traces").parse().map_err(|_| bad())
}

/// `k=v,k2=v2` (the `OTEL_RESOURCE_ATTRIBUTES` and `OTEL_EXPORTER_OTLP_HEADERS` form), values
/// percent-decoded; malformed items are skipped, as the specification allows.
pub fn key_values(list: &str) -> Vec<(String, String)> {
    list.split(',')
        .filter_map(|item| {
            let (k, v) = item.split_once('=')?;
            let k = k.trim();
            let v: String =
                form_urlencoded::parse(format!("v={}", v.trim().replace('+', "%2B")).as_bytes())
                    .next()
                    .map(|(_, v)| v.into_owned())?;
            (!k.is_empty()).then(|| (k.to_owned(), v))
        })
        .collect()
}

/// Export headers: `headers:` in YAML (values `env:NAME` or `file:PATH`, as keys are) or
/// `OTEL_EXPORTER_OTLP_TRACES_HEADERS` / `OTEL_EXPORTER_OTLP_HEADERS`. Values are sensitive.
fn headers(
    node: Option<Node>,
    env: &dyn Fn(&str) -> Option<String>,
    lookup: &dyn Fn(&str) -> Option<String>,
    errors: &mut Errors,
) -> Vec<(HeaderName, HeaderValue)> {
    let mut pairs: Vec<(String, String, String)> = Vec::new();
    if let Some(n) = node {
        let Some(map) = n.any_map(errors) else {
            return Vec::new();
        };
        for (name, v) in map.entries() {
            let Some(text) = v.string(errors) else {
                continue;
            };
            let value = SecretRef::parse(text).and_then(|r| {
                r.resolve(lookup).map_err(|e| match e {
                    crate::config::secret::Unresolved::Missing(m)
                    | crate::config::secret::Unresolved::Unreadable(m) => m,
                })
            });
            match value {
                Ok(s) => pairs.push((name.to_owned(), s.expose().to_owned(), v.path.clone())),
                Err(m) => errors.push(&v.path, m),
            }
        }
    } else {
        let (var, list) = match env("OTEL_EXPORTER_OTLP_TRACES_HEADERS") {
            Some(l) => ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", l),
            None => (
                "OTEL_EXPORTER_OTLP_HEADERS",
                env("OTEL_EXPORTER_OTLP_HEADERS").unwrap_or_default(),
            ),
        };
        for (k, v) in key_values(&list) {
            pairs.push((k, v, var.to_owned()));
        }
    }
    let mut out = Vec::new();
    for (name, value, path) in pairs {
        let name = HeaderName::try_from(name.as_str());
        let value = HeaderValue::try_from(value.as_str());
        match (name, value) {
            (Ok(n), Ok(mut v)) => {
                v.set_sensitive(true);
                out.push((n, v));
            }
            // The message never shows the value.
            _ => errors.push(&path, "an export header has an invalid name or value"),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(yaml: &str, env: &[(&str, &str)]) -> (Option<TracingPlan>, Errors) {
        let mut errors = Errors::default();
        let value: serde_yaml_ng::Value = serde_yaml_ng::from_str(yaml).unwrap();
        let node = (!value.is_null()).then(|| Node {
            value: &value,
            path: "observability.tracing".into(),
        });
        let lookup = |n: &str| {
            env.iter()
                .find(|(k, _)| *k == n)
                .map(|(_, v)| v.to_string())
        };
        (tracing_plan(node, &lookup, &mut errors), errors)
    }

    #[test]
    fn off_without_an_endpoint_or_with_exporter_none() {
        assert!(plan("", &[]).0.is_none());
        let env = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_TRACES_EXPORTER", "none"),
        ];
        assert!(plan("", &env).0.is_none());
    }

    #[test]
    fn env_endpoints_protocols_and_resource() {
        let env = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318/"),
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "deployment.environment=prod,service.name=agent%20proxy",
            ),
            ("OTEL_EXPORTER_OTLP_HEADERS", "x-api-key=s3cr%3Dt"),
        ];
        let p = plan("", &env).0.unwrap();
        assert_eq!(p.endpoint, "http://c:4318/v1/traces");
        assert_eq!(p.protocol, OtlpProtocol::HttpProtobuf);
        assert_eq!(p.resource[0], ("service.name".into(), "agent proxy".into()));
        assert_eq!(p.resource[1].0, "deployment.environment");
        assert_eq!(p.headers[0].1, "s3cr=t");
        assert!(!format!("{p:?}").contains("s3cr"));
        let env = [
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://c:4318/custom"),
            ("OTEL_SERVICE_NAME", "kp"),
        ];
        let p = plan("", &env).0.unwrap();
        assert_eq!(p.endpoint, "http://c:4318/custom");
        assert_eq!(p.resource[0].1, "kp");
        let env = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ];
        let p = plan("", &env).0.unwrap();
        assert_eq!((p.endpoint.path(), p.protocol), ("/", OtlpProtocol::Grpc));
        let env = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
        ];
        let (p, errors) = plan("", &env);
        assert!(p.is_none());
        assert!(errors.to_string().contains("OTEL_EXPORTER_OTLP_PROTOCOL"));
    }

    #[test]
    fn yaml_wins_and_is_checked() {
        let env = [("OTEL_EXPORTER_OTLP_ENDPOINT", "http://env:4318")];
        let yaml = "{endpoint: 'http://yaml:4318', propagate_upstream: true, sample_ratio: 0.5, max_queue_size: 4}";
        let p = plan(yaml, &env).0.unwrap();
        assert_eq!(p.endpoint, "http://yaml:4318/v1/traces");
        assert!(p.propagate_upstream);
        assert_eq!((p.sample_ratio, p.max_queue_size), (0.5, 4));
        let p = plan("{endpoint: 'http://c:4318', parent: '00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01'}", &[]).0;
        assert_eq!(
            p.unwrap().parent.as_deref(),
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        );
        let (_, errors) = plan("{endpoint: 'http://c:4318', parent: '00-00000000000000000000000000000000-00f067aa0ba902b7-01'}", &[]);
        assert!(errors.to_string().contains("traceparent"));
        let (_, errors) = plan(
            "{endpoint: 'ftp://x', sample_ratio: 2, headers: {x-key: literal}}",
            &[],
        );
        let text = errors.to_string();
        assert!(text.contains("observability.tracing.endpoint"), "{text}");
        let env = [("OTEL_EXPORTER_OTLP_ENDPOINT", "https://u:pw@c:4318")];
        let (p, errors) = plan("", &env);
        assert!(
            p.is_none() && !errors.to_string().contains("pw"),
            "{errors}"
        );
        assert!(!text.contains("literal"), "{text}");
    }
}
