//! render-config's tracing: what AWF's host gives the Node sidecar for OpenTelemetry, mapped to
//! `observability.tracing` (docs/awf.md "OpenTelemetry"). `OTEL_EXPORTER_OTLP_ENDPOINT`,
//! `OTEL_EXPORTER_OTLP_HEADERS` and `OTEL_SERVICE_NAME` need no mapping: the proxy reads them
//! from its own environment (docs/observability.md "Traces"), so no header value is printed.

use serde::Serialize;

/// `observability.tracing` as rendered: only what the environment cannot say itself.
#[derive(Serialize, Default, PartialEq)]
pub(super) struct Tracing {
    #[serde(skip_serializing_if = "Option::is_none")]
    endpoint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parent: Option<String>,
}

/// `GH_AW_OTLP_ENDPOINTS` (its first endpoint, when it needs no headers) and the workflow's
/// parent span (`GITHUB_AW_OTEL_TRACE_ID` + `GITHUB_AW_OTEL_PARENT_SPAN_ID`).
pub(super) fn tracing(
    var: &dyn Fn(&str) -> Option<String>,
    warnings: &mut Vec<String>,
) -> Option<Tracing> {
    let mut t = Tracing::default();
    if let Some(list) = var("GH_AW_OTLP_ENDPOINTS") {
        t.endpoint = first_endpoint(&list, warnings);
    }
    let ids = (
        var("GITHUB_AW_OTEL_TRACE_ID"),
        var("GITHUB_AW_OTEL_PARENT_SPAN_ID"),
    );
    let hex = |s: &str, n: usize| {
        s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit()) && s.bytes().any(|b| b != b'0')
    };
    match ids {
        (Some(trace), Some(span)) if hex(&trace, 32) && hex(&span, 16) => {
            let (trace, span) = (trace.to_ascii_lowercase(), span.to_ascii_lowercase());
            t.parent = Some(format!("00-{trace}-{span}-01"));
        }
        (None, None) => {}
        _ => warnings.push(
            "GITHUB_AW_OTEL_TRACE_ID / GITHUB_AW_OTEL_PARENT_SPAN_ID: both are needed, as 32 and 16 hex digits; spans get no workflow parent".into(),
        ),
    }
    (t != Tracing::default()).then_some(t)
}

/// The first `{url, headers}` of the JSON array. Its headers are secrets (a collector's API
/// key), which render-config never prints: with headers the entry is not used.
fn first_endpoint(list: &str, warnings: &mut Vec<String>) -> Option<String> {
    let entries: Vec<serde_json::Value> = match serde_json::from_str(list) {
        Ok(serde_json::Value::Array(a)) => a,
        _ => {
            warnings.push(
                "GH_AW_OTLP_ENDPOINTS is not a JSON array of {url, headers}; it is ignored".into(),
            );
            return None;
        }
    };
    let first = entries
        .iter()
        .find(|e| e.get("url").and_then(|u| u.as_str()).is_some())?;
    if entries.len() > 1 {
        warnings.push(format!(
            "GH_AW_OTLP_ENDPOINTS lists {} collectors; llm-keyproxy exports to one, the first",
            entries.len()
        ));
    }
    let has_headers = first
        .get("headers")
        .and_then(|h| h.as_object())
        .is_some_and(|h| !h.is_empty());
    if has_headers {
        warnings.push(
            "GH_AW_OTLP_ENDPOINTS: the collector's headers would be printed in the config, so it is not used; give it as OTEL_EXPORTER_OTLP_ENDPOINT and OTEL_EXPORTER_OTLP_HEADERS, which the proxy reads from its environment".into(),
        );
        return None;
    }
    first
        .get("url")
        .and_then(|u| u.as_str())
        .map(|u| u.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(pairs: &[(&str, &str)]) -> (Option<String>, Vec<String>) {
        let var = |n: &str| {
            pairs
                .iter()
                .find(|(k, _)| *k == n)
                .map(|(_, v)| v.to_string())
        };
        let mut warnings = Vec::new();
        let t = tracing(&var, &mut warnings);
        let yaml = t.map(|t| serde_yaml_ng::to_string(&t).unwrap());
        (yaml, warnings)
    }

    #[test]
    fn parent_and_endpoints() {
        let (y, w) = render(&[
            (
                "GITHUB_AW_OTEL_TRACE_ID",
                "4BF92F3577B34DA6A3CE929D0E0E4736",
            ),
            ("GITHUB_AW_OTEL_PARENT_SPAN_ID", "00f067aa0ba902b7"),
            (
                "GH_AW_OTLP_ENDPOINTS",
                r#"[{"url":"https://otel.example/v1/traces"}]"#,
            ),
        ]);
        assert_eq!(
            y.unwrap(),
            "endpoint: https://otel.example/v1/traces\nparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\n"
        );
        assert!(w.is_empty(), "{w:?}");
        let secret = r#"[{"url":"https://a","headers":{"Authorization":"Bearer s3cret"}},{"url":"https://b"}]"#;
        let (y, w) = render(&[
            ("GH_AW_OTLP_ENDPOINTS", secret),
            ("GITHUB_AW_OTEL_TRACE_ID", "x"),
        ]);
        assert!(y.is_none());
        assert_eq!(w.len(), 3, "{w:?}");
        assert!(!w.concat().contains("s3cret"));
        assert_eq!(render(&[]), (None, vec![]));
    }
}
