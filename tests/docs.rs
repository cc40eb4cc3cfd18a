//! The observability docs stay true to the code.
//!
//! - `docs/grafana-dashboard.json` queries only metrics that exist (names read from the
//!   `pub const NAME: &str = "...";` lines of `src/telemetry/metrics.rs`, types from the registry's own
//!   exposition), with labels they have, and has every panel it promises.
//! - `docs/observability.md` names every metric as Prometheus shows it, with its type, every
//!   bounded label value, the histogram buckets, every log event, every field of
//!   `request_complete` / `request_error` and of the usage file, and its examples parse.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use llm_keyproxy::telemetry::metrics::{self, Metrics};
use serde_json::Value;

fn read(rel: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// `(NAME, value)` of every `pub const NAME: &str = "value";` line in `src/telemetry/metrics.rs`.
fn str_consts() -> Vec<(String, String)> {
    read("src/telemetry/metrics.rs")
        .lines()
        .filter_map(|line| {
            let rest = line.trim().strip_prefix("pub const ")?;
            let (name, value) = rest.split_once(": &str = ")?;
            let value = value.trim().strip_suffix(';')?.trim();
            let value = value.strip_prefix('"')?.strip_suffix('"')?;
            Some((name.trim().to_owned(), value.to_owned()))
        })
        .collect()
}

/// The metric families named by those consts: `(CONST, "keyproxy_<value>")`.
fn families() -> Vec<(String, String)> {
    let consts = str_consts();
    let prefix = consts
        .iter()
        .find(|(name, _)| name == "PREFIX")
        .map(|(_, v)| v.clone())
        .expect("src/telemetry/metrics.rs has `pub const PREFIX: &str`");
    assert_eq!(prefix, metrics::PREFIX);
    let families: Vec<_> = consts
        .into_iter()
        .filter(|(name, _)| name != "PREFIX")
        .map(|(name, value)| (name, format!("{prefix}_{value}")))
        .collect();
    assert!(
        families.len() >= 10,
        "too few metric consts parsed from src/telemetry/metrics.rs: {families:?}"
    );
    families
}

/// What the registry itself exposes.
struct Exposition {
    /// Family name -> OpenMetrics type (`counter`, `gauge`, `histogram`, `info`).
    types: BTreeMap<String, String>,
    /// Sample name (`keyproxy_requests_total`, `..._bucket`) -> its label names.
    labels: BTreeMap<String, BTreeSet<String>>,
    /// Sample name -> the values of its `le` label, in order (histogram buckets).
    le: BTreeMap<String, Vec<String>>,
}

/// Parses `name{k="v",...} value` into the name and its labels.
fn parse_sample(line: &str) -> (String, Vec<(String, String)>) {
    let end = line
        .find(['{', ' '])
        .unwrap_or_else(|| panic!("bad sample line: {line}"));
    let name = line[..end].to_owned();
    let mut labels = Vec::new();
    let Some(rest) = line[end..].strip_prefix('{') else {
        return (name, labels);
    };
    let mut chars = rest.chars().peekable();
    loop {
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        assert_eq!(chars.next(), Some('"'), "bad labels in {line}");
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => value.extend(chars.next()),
                '"' => break,
                c => value.push(c),
            }
        }
        labels.push((key.trim().to_owned(), value));
        match chars.next() {
            Some(',') if chars.peek() == Some(&'}') => break,
            Some(',') => continue,
            Some('}') => break,
            other => panic!("bad labels in {line}: {other:?}"),
        }
    }
    (name, labels)
}

fn exposition() -> Exposition {
    let m = Metrics::new();
    let p = m.provider("docs");
    // `requests` series are created on first use; every other family exists from the start.
    p.request(200);
    // Budget series appear with the first charge.
    m.budget_spent(
        "provider",
        "docs",
        llm_keyproxy::policy::budget::Spent {
            last_minute: 0,
            last_hour: 0,
            total: 0,
        },
    );
    // Cloud credential series appear with a cloud provider's first refresh.
    m.credential_refresh("docs", "ok");
    m.credential_expiry("docs", None);
    // Shared-state series exist only with `shared_state` configured.
    let _ = m.shared_state();
    m.shared_window(
        "rate_limit",
        "docs",
        "requests_per_minute",
        0,
        Some(1),
        None,
    );
    let text = m.encode();
    let mut e = Exposition {
        types: BTreeMap::new(),
        labels: BTreeMap::new(),
        le: BTreeMap::new(),
    };
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, ty) = rest.split_once(' ').expect("TYPE line");
            e.types.insert(name.to_owned(), ty.to_owned());
        } else if !line.starts_with('#') && !line.is_empty() {
            let (name, labels) = parse_sample(line);
            for (k, v) in &labels {
                if k == "le" {
                    e.le.entry(name.clone()).or_default().push(v.clone());
                }
            }
            e.labels
                .entry(name)
                .or_default()
                .extend(labels.into_iter().map(|(k, _)| k));
        }
    }
    e
}

/// The names Prometheus stores for a family of this type.
fn sample_names(family: &str, ty: &str) -> Vec<String> {
    match ty {
        "counter" => vec![format!("{family}_total")],
        "gauge" => vec![family.to_owned()],
        "histogram" => ["bucket", "sum", "count"]
            .iter()
            .map(|s| format!("{family}_{s}"))
            .collect(),
        "info" => vec![format!("{family}_info")],
        other => panic!("metric family {family} has an undocumented type {other}"),
    }
}

/// The name the docs use for a family: the sample name, or the base name of a histogram.
fn doc_name(family: &str, ty: &str) -> String {
    match ty {
        "histogram" => family.to_owned(),
        _ => sample_names(family, ty).remove(0),
    }
}

/// Every metric const is a registered family and every family has a const; returns
/// `(family, type)` pairs.
fn typed_families(e: &Exposition) -> Vec<(String, String)> {
    let fams = families();
    let from_consts: BTreeSet<_> = fams.iter().map(|(_, f)| f.clone()).collect();
    let registered: BTreeSet<_> = e.types.keys().cloned().collect();
    assert_eq!(
        from_consts, registered,
        "metric consts in src/telemetry/metrics.rs and registered families differ"
    );
    fams.into_iter()
        .map(|(_, f)| {
            let ty = e.types[&f].clone();
            for s in sample_names(&f, &ty) {
                assert!(e.labels.contains_key(&s), "no sample {s} in the exposition");
            }
            (f, ty)
        })
        .collect()
}

/// What one PromQL expression uses.
#[derive(Debug, Default)]
struct Query {
    expr: String,
    /// Selectors: metric name and the label names it matches on.
    selectors: Vec<(String, Vec<String>)>,
    /// Labels in `by (...)`, `without (...)`, `on (...)`, `ignoring (...)`.
    grouping: BTreeSet<String>,
    /// First arguments of `histogram_quantile`.
    quantiles: Vec<String>,
    uses_rate: bool,
}

impl Query {
    fn metrics(&self) -> BTreeSet<&str> {
        self.selectors.iter().map(|(m, _)| m.as_str()).collect()
    }
}

fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':'
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// A small PromQL scanner: enough to find metric names, matchers, groupings and quantiles.
fn analyze(expr: &str, prefix: &str) -> Query {
    let chars: Vec<char> = expr.chars().collect();
    let mut q = Query {
        expr: expr.to_owned(),
        ..Query::default()
    };
    let skip_ws = |i: &mut usize| {
        while *i < chars.len() && chars[*i].is_whitespace() {
            *i += 1;
        }
    };
    let skip_string = |i: &mut usize| {
        let quote = chars[*i];
        *i += 1;
        while *i < chars.len() && chars[*i] != quote {
            if chars[*i] == '\\' {
                *i += 1;
            }
            *i += 1;
        }
        *i += 1;
    };
    let word = |i: &mut usize| -> String {
        let start = *i;
        while *i < chars.len() && is_ident(chars[*i]) {
            *i += 1;
        }
        chars[start..*i].iter().collect()
    };
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if matches!(c, '"' | '\'' | '`') {
            skip_string(&mut i);
        } else if c == '$' {
            i += 1;
            word(&mut i);
        } else if c.is_ascii_digit() {
            while i < chars.len() && (is_ident(chars[i]) || chars[i] == '.') {
                i += 1;
            }
        } else if is_ident_start(c) {
            let ident = word(&mut i);
            match ident.as_str() {
                "by" | "without" | "on" | "ignoring" => {
                    skip_ws(&mut i);
                    assert_eq!(chars.get(i), Some(&'('), "`{ident}` without `(` in {expr}");
                    let close = (i..chars.len())
                        .find(|j| chars[*j] == ')')
                        .expect("closing `)`");
                    let list: String = chars[i + 1..close].iter().collect();
                    q.grouping.extend(
                        list.split(',')
                            .map(|l| l.trim().to_owned())
                            .filter(|l| !l.is_empty()),
                    );
                    i = close + 1;
                }
                "histogram_quantile" => {
                    skip_ws(&mut i);
                    assert_eq!(chars.get(i), Some(&'('));
                    let comma = (i..chars.len())
                        .find(|j| chars[*j] == ',')
                        .expect("histogram_quantile(q, ...)");
                    q.quantiles.push(
                        chars[i + 1..comma]
                            .iter()
                            .collect::<String>()
                            .trim()
                            .to_owned(),
                    );
                    i = comma + 1;
                }
                "rate" | "irate" | "increase" => q.uses_rate = true,
                name if name.starts_with(&format!("{prefix}_")) => {
                    let mut labels = Vec::new();
                    skip_ws(&mut i);
                    if chars.get(i) == Some(&'{') {
                        i += 1;
                        loop {
                            skip_ws(&mut i);
                            match chars.get(i) {
                                Some('}') => {
                                    i += 1;
                                    break;
                                }
                                Some(',') => i += 1,
                                Some(c) if is_ident_start(*c) => {
                                    labels.push(word(&mut i));
                                    while i < chars.len()
                                        && matches!(chars[i], '=' | '!' | '~' | ' ')
                                    {
                                        i += 1;
                                    }
                                    assert!(
                                        matches!(chars.get(i), Some('"' | '\'' | '`')),
                                        "matcher without a string value in {expr}"
                                    );
                                    skip_string(&mut i);
                                }
                                other => panic!("cannot read matchers in {expr}: {other:?}"),
                            }
                        }
                    }
                    q.selectors.push((name.to_owned(), labels));
                }
                _ => {}
            }
        } else {
            i += 1;
        }
    }
    q
}

struct Panel {
    title: String,
    queries: Vec<Query>,
}

fn dashboard() -> Value {
    serde_json::from_str(&read("docs/grafana-dashboard.json"))
        .expect("docs/grafana-dashboard.json is JSON")
}

/// Every non-row panel (rows may nest their panels when collapsed).
fn panels(dash: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in dash["panels"].as_array().expect("panels array") {
        if p["type"] == "row" {
            out.extend(p["panels"].as_array().into_iter().flatten());
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn dashboard_queries_only_existing_metrics_and_labels() {
    let e = exposition();
    let typed = typed_families(&e);
    let known: BTreeSet<String> = typed
        .iter()
        .flat_map(|(f, ty)| sample_names(f, ty))
        .collect();
    let dash = dashboard();

    assert!(dash["schemaVersion"].as_u64().is_some_and(|v| v >= 36));
    assert!(
        dash["__inputs"].as_array().is_some_and(|inputs| inputs
            .iter()
            .any(|i| i["name"] == "DS_PROMETHEUS"
                && i["type"] == "datasource"
                && i["pluginId"] == "prometheus")),
        "the dashboard needs a DS_PROMETHEUS datasource input"
    );

    // The provider variable.
    let vars = dash["templating"]["list"].as_array().expect("templating");
    let provider = vars
        .iter()
        .find(|v| v["name"] == "provider")
        .expect("a `provider` variable");
    let requests = format!("{}_{}_total", metrics::PREFIX, metrics::REQUESTS);
    let want = format!("label_values({requests}, provider)");
    let query = provider["query"]["query"]
        .as_str()
        .or_else(|| provider["query"].as_str())
        .expect("variable query");
    assert_eq!(query, want);
    assert_eq!(provider["definition"], want);
    assert!(known.contains(&requests));
    assert!(e.labels[&requests].contains("provider"));

    let mut ids = BTreeSet::new();
    let mut exprs = 0;
    for panel in panels(&dash) {
        let title = panel["title"].as_str().unwrap_or("?");
        assert!(
            ids.insert(panel["id"].as_u64().expect("panel id")),
            "duplicate panel id ({title})"
        );
        assert_eq!(
            panel["datasource"]["uid"], "${DS_PROMETHEUS}",
            "panel {title} datasource"
        );
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "panel {title} has no query");
        for t in targets {
            let expr = t["expr"].as_str().expect("expr");
            exprs += 1;
            let q = analyze(expr, metrics::PREFIX);
            assert!(
                !q.selectors.is_empty(),
                "{title}: `{expr}` uses no keyproxy metric"
            );
            let mut available: BTreeSet<&str> = ["instance", "job"].into();
            for (metric, matchers) in &q.selectors {
                assert!(
                    known.contains(metric),
                    "{title}: `{expr}` uses {metric}, which llm-keyproxy does not expose \
                     (known: {known:?})"
                );
                let labels = &e.labels[metric];
                available.extend(labels.iter().map(String::as_str));
                for l in matchers {
                    assert!(
                        labels.contains(l),
                        "{title}: {metric} has no label `{l}` (it has {labels:?})"
                    );
                }
                if labels.contains("provider") {
                    assert!(
                        matchers.iter().any(|l| l == "provider") && expr.contains("$provider"),
                        "{title}: `{expr}` ignores the provider variable"
                    );
                }
            }
            for l in &q.grouping {
                assert!(
                    available.contains(l.as_str()),
                    "{title}: `{expr}` groups by `{l}`, which its metrics do not have"
                );
            }
        }
    }
    assert!(exprs >= 12, "only {exprs} queries in the dashboard");
}

#[test]
fn dashboard_has_the_promised_panels() {
    let dash = dashboard();
    let p = metrics::PREFIX;
    let panels: Vec<Panel> = panels(&dash)
        .into_iter()
        .map(|panel| Panel {
            title: panel["title"].as_str().unwrap_or("").to_owned(),
            queries: panel["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|t| t["expr"].as_str())
                .map(|e| analyze(e, p))
                .collect(),
        })
        .collect();
    let total = |name: &str| format!("{p}_{name}_total");
    let plain = |name: &str| format!("{p}_{name}");
    let bucket = |name: &str| format!("{p}_{name}_bucket");
    // A query over `metric`, grouped by every label in `by`, as a rate when `rate`.
    let has = |panel: &Panel, metric: &str, by: &[&str], rate: bool| {
        panel.queries.iter().any(|q| {
            q.metrics().contains(metric)
                && by.iter().all(|l| q.grouping.contains(*l))
                && (!rate || q.uses_rate)
        })
    };
    let quantiles = |panel: &Panel, metric: &str, wanted: &[&str]| {
        wanted.iter().all(|want| {
            panel
                .queries
                .iter()
                .any(|q| q.metrics().contains(metric) && q.quantiles.iter().any(|x| x == want))
        })
    };
    type Check<'a> = Box<dyn Fn(&Panel) -> bool + 'a>;
    let promised: Vec<(&str, Check)> = vec![
        (
            "request rate by provider and status",
            Box::new(|pn| has(pn, &total(metrics::REQUESTS), &["provider", "status"], true)),
        ),
        (
            "error rate: 5xx and rejections by reason",
            Box::new(|pn| {
                pn.queries.iter().any(|q| {
                    q.metrics().contains(total(metrics::REQUESTS).as_str())
                        && q.expr.contains("status=~\"5..\"")
                        && q.uses_rate
                }) && has(pn, &total(metrics::REJECTIONS), &["reason"], true)
            }),
        ),
        (
            "request latency p50/p90/p99",
            Box::new(|pn| {
                quantiles(
                    pn,
                    &bucket(metrics::REQUEST_DURATION),
                    &["0.5", "0.9", "0.99"],
                )
            }),
        ),
        (
            "upstream TTFB p50/p99",
            Box::new(|pn| quantiles(pn, &bucket(metrics::UPSTREAM_TTFB), &["0.5", "0.99"])),
        ),
        (
            "active requests and active streams",
            Box::new(|pn| {
                has(pn, &plain(metrics::ACTIVE_REQUESTS), &[], false)
                    && has(pn, &plain(metrics::ACTIVE_STREAMS), &[], false)
            }),
        ),
        (
            "tokens per provider and kind (rate)",
            Box::new(|pn| has(pn, &total(metrics::TOKENS), &["provider", "kind"], true)),
        ),
        (
            "upstream connections by protocol",
            Box::new(|pn| {
                has(
                    pn,
                    &plain(metrics::UPSTREAM_CONNECTIONS),
                    &["protocol"],
                    false,
                )
            }),
        ),
        (
            "upstream errors by kind",
            Box::new(|pn| has(pn, &total(metrics::UPSTREAM_ERRORS), &["kind"], true)),
        ),
        (
            "stream outcomes",
            Box::new(|pn| has(pn, &total(metrics::STREAM_OUTCOMES), &["outcome"], true)),
        ),
    ];
    let titles: Vec<&str> = panels.iter().map(|p| p.title.as_str()).collect();
    for (what, check) in &promised {
        assert!(
            panels.iter().any(check),
            "no dashboard panel shows {what} (panels: {titles:?})"
        );
    }
}

/// Every `.rs` file under `src/`, with its text.
fn sources() -> Vec<(String, String)> {
    fn walk(dir: &Path, out: &mut Vec<(String, String)>) {
        for entry in std::fs::read_dir(dir).expect("source dir") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).expect("source file");
                out.push((path.display().to_string(), text));
            }
        }
    }
    let mut out = Vec::new();
    walk(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut out);
    out
}

/// Identifiers listed after `event = "name",` in every `tracing` call for that event, across
/// `src/` (the union: a WebSocket tunnel's `request_complete` has fields of its own).
fn event_fields(event: &str) -> BTreeSet<String> {
    let marker = format!("event = \"{event}\"");
    let mut fields = BTreeSet::new();
    for (_, text) in sources() {
        for (at, _) in text.match_indices(&marker) {
            for line in text[at..].lines() {
                let line = line.trim();
                if line.starts_with(')') {
                    break;
                }
                let ident: String = line
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                    .collect();
                let rest = &line[ident.len()..];
                if !ident.is_empty() && (rest.starts_with(',') || rest.starts_with(" =")) {
                    fields.insert(ident);
                }
                if line.ends_with(");") {
                    break;
                }
            }
        }
    }
    assert!(!fields.is_empty(), "no `{event}` event in src/");
    fields
}

/// Every `event = "..."` value in the crate's sources.
fn all_events() -> BTreeSet<String> {
    let mut events = BTreeSet::new();
    for (_, text) in sources() {
        for piece in text.split("event = \"").skip(1) {
            events.insert(piece.split('"').next().unwrap_or("").to_owned());
        }
    }
    events
}

/// The keys of the usage-file line built in `Completion::finish`.
fn usage_keys(proxy: &str) -> BTreeSet<String> {
    let start = proxy
        .find("serde_json::json!({")
        .expect("the usage line in src/proxy/completion.rs");
    let body = &proxy[start..];
    let body = &body[..body.find("})").expect("end of json!")];
    body.lines()
        .filter_map(|l| {
            let l = l.trim().strip_prefix('"')?;
            let (key, rest) = l.split_once('"')?;
            rest.starts_with(':').then(|| key.to_owned())
        })
        .collect()
}

#[test]
fn observability_doc_names_every_metric_label_event_and_field() {
    let doc = read("docs/observability.md");
    let e = exposition();
    let typed = typed_families(&e);
    let backticked = |s: &str| doc.contains(&format!("`{s}`"));

    // Every metric, as Prometheus shows it, in a table row with its type.
    for (family, ty) in &typed {
        let name = doc_name(family, ty);
        let row = doc
            .lines()
            .find(|l| l.starts_with(&format!("| `{name}`")))
            .unwrap_or_else(|| panic!("docs/observability.md has no table row for `{name}`"));
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        assert_eq!(cells.get(2), Some(&ty.as_str()), "type of {name} in: {row}");
        for s in sample_names(family, ty) {
            let base = s.rsplit_once('_').map_or(s.as_str(), |(b, _)| b);
            assert!(
                doc.contains(&s) || (ty == "histogram" && doc.contains(base)),
                "the doc never mentions {s}"
            );
        }
    }

    // Every bounded label value.
    for values in [
        &metrics::REASONS[..],
        &metrics::ERROR_KINDS[..],
        &metrics::OUTCOMES[..],
        &metrics::TOKEN_KINDS[..],
        &metrics::PROTOCOLS[..],
        &metrics::REFUSAL_REASONS[..],
    ] {
        for v in values {
            assert!(backticked(v), "the doc never names the label value `{v}`");
        }
    }

    // The histogram buckets, as one list in seconds.
    for (family, ty) in &typed {
        if ty != "histogram" {
            continue;
        }
        let le = &e.le[&format!("{family}_bucket")];
        // One list per family, however many series (shared state: one per op).
        let mut seen = BTreeSet::new();
        let list: Vec<String> = le
            .iter()
            .filter(|v| *v != "+Inf" && seen.insert(v.as_str()))
            .map(|v| format!("{}", v.parse::<f64>().expect("le value")))
            .collect();
        let list = list.join(", ");
        assert!(
            doc.contains(&list),
            "the doc does not list the buckets of {family}: `{list}`"
        );
    }

    // Every log event, and every field of the two request events.
    for event in all_events() {
        assert!(
            backticked(&event),
            "the doc never names the event `{event}`"
        );
    }
    let proxy = read("src/proxy/completion.rs");
    let mut fields = BTreeMap::new();
    for event in ["request_complete", "request_error"] {
        let f = event_fields(event);
        assert!(f.len() >= 8, "too few fields parsed for {event}: {f:?}");
        for field in &f {
            assert!(
                backticked(field),
                "the doc never names `{field}` of {event}"
            );
        }
        fields.insert(event, f);
    }

    // Every usage-file field.
    let keys = usage_keys(&proxy);
    assert!(keys.len() >= 10, "too few usage-file keys parsed: {keys:?}");
    for k in &keys {
        assert!(
            backticked(k),
            "the doc never names the usage-file field `{k}`"
        );
    }

    // The JSON examples parse and carry only real fields, and no key.
    let mut examples = BTreeMap::<String, usize>::new();
    for line in doc.lines().filter(|l| l.starts_with('{')) {
        let v: Value = serde_json::from_str(line)
            .unwrap_or_else(|err| panic!("example line is not JSON ({err}): {line}"));
        assert!(
            !line.contains("sk-"),
            "an example shows key material: {line}"
        );
        let obj = v.as_object().expect("examples are flat objects");
        assert!(
            obj.values().all(|v| !v.is_object() && !v.is_array()),
            "{line}"
        );
        match obj.get("event").and_then(Value::as_str) {
            Some(event @ ("request_complete" | "request_error")) => {
                for k in obj.keys() {
                    assert!(
                        k == "timestamp" || k == "level" || fields[event].contains(k),
                        "example {event} has a field the code does not log: {k}"
                    );
                }
                *examples.entry(event.to_owned()).or_default() += 1;
            }
            Some(_) => {}
            None if obj.contains_key("unix_ms") => {
                let got: BTreeSet<String> = obj.keys().cloned().collect();
                assert_eq!(got, keys, "usage-file example keys");
                *examples.entry("usage".to_owned()).or_default() += 1;
            }
            None => {}
        }
    }
    for want in ["request_complete", "request_error", "usage"] {
        assert!(examples.contains_key(want), "the doc has no {want} example");
    }
}

#[test]
fn promql_scanner_reads_selectors_groupings_and_quantiles() {
    let q = analyze(
        r#"histogram_quantile(0.99, sum by (le, provider) (rate(keyproxy_x_bucket{provider=~"$provider", status!="5.."}[$__rate_interval])))"#,
        "keyproxy",
    );
    assert_eq!(
        q.selectors,
        vec![(
            "keyproxy_x_bucket".to_owned(),
            vec!["provider".to_owned(), "status".to_owned()]
        )]
    );
    assert_eq!(q.quantiles, vec!["0.99"]);
    assert!(q.uses_rate);
    assert_eq!(q.grouping, ["le".to_owned(), "provider".to_owned()].into());
    let (name, labels) = parse_sample(r#"a_total{provider="x",kind="in\"put"} 3"#);
    assert_eq!(name, "a_total");
    assert_eq!(labels[1], ("kind".to_owned(), "in\"put".to_owned()));
}
