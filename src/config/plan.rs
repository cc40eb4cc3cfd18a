//! Validated runtime plan: the config file walked once into typed values, all errors collected.
//!
//! Nothing after this reads strings or the environment again: `main` builds a `Plan`, the
//! listeners and upstreams are built from it.

use std::fmt::{self, Write as _};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use http::header::{HeaderName, HeaderValue};
use http::uri::{Authority, Uri};
use rustls::pki_types::{pem::PemObject, CertificateDer};

use crate::config::egress::ProxyTarget;
use crate::config::presets::{self, Extras};
use crate::config::secret::{SecretRef, Unresolved};
use crate::config::{self, show_duration, show_size, Errors, Node};

/// Everything the proxy needs to run, validated.
#[derive(Debug)]
pub struct Plan {
    pub admin_listen: SocketAddr,
    /// The admin listener's own connection bounds (`admin:`), independent of `limits:`.
    pub admin: AdminPlan,
    /// The forward proxy set in the file (`None`: the environment decides, see `upstream_proxy`).
    pub upstream_proxy: Option<ProxyTarget>,
    pub tls: TlsPlan,
    pub limits: Limits,
    pub observability: Observability,
    pub providers: Vec<ProviderPlan>,
    /// When not empty, every proxied request must present one of these tokens.
    pub callers: Vec<crate::config::policy::CallerPlan>,
    /// Where the plan came from, so a key reload can read it again.
    pub source: PlanSource,
}

/// The config a plan was built from.
#[derive(Debug, Clone)]
pub enum PlanSource {
    File(PathBuf),
    /// Text given directly (tests, or `awf`'s rendered config).
    Text(String),
}

impl PlanSource {
    /// Builds the plan again (for a key reload), validating it whole.
    pub fn load(&self, lookup: &dyn Fn(&str) -> Option<String>) -> Result<Plan, Errors> {
        match self {
            PlanSource::File(path) => Plan::load(path, lookup),
            PlanSource::Text(text) => Plan::from_yaml(text, lookup),
        }
    }
}

/// What the proxy records about the traffic it carries.
#[derive(Debug, Clone)]
pub struct Observability {
    /// Read token usage from JSON and SSE responses (never delaying a byte).
    pub token_usage: bool,
    /// Append one JSON line per request here.
    pub usage_file: Option<PathBuf>,
}

impl Default for Observability {
    fn default() -> Self {
        Observability {
            token_usage: true,
            usage_file: None,
        }
    }
}

/// The admin listener's connection bounds (docs/security.md): small, and its own, so that no
/// flood on a provider port reaches them, and a flood on the admin port cannot starve a probe
/// (beyond `max_connections` the oldest idle connection is closed to make room).
#[derive(Debug, Clone, Copy)]
pub struct AdminPlan {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub keep_alive_timeout: Duration,
}

impl Default for AdminPlan {
    fn default() -> Self {
        AdminPlan {
            max_connections: config::DEFAULT_ADMIN_MAX_CONNECTIONS,
            header_read_timeout: config::DEFAULT_ADMIN_HEADER_READ_TIMEOUT,
            keep_alive_timeout: config::DEFAULT_ADMIN_KEEP_ALIVE_TIMEOUT,
        }
    }
}

impl AdminPlan {
    /// The limits the admin listener serves with: its own values, fixed small head limits,
    /// and the defaults for the rest (nothing of `limits:` applies to it).
    pub fn limits(&self) -> Limits {
        Limits {
            header_read_timeout: self.header_read_timeout,
            keep_alive_timeout: self.keep_alive_timeout,
            max_connections: self.max_connections,
            max_header_bytes: config::ADMIN_MAX_HEADER_BYTES,
            max_concurrent_streams: config::ADMIN_MAX_CONCURRENT_STREAMS,
            ..Limits::default()
        }
    }
}

#[derive(Debug, Clone)]
pub struct TlsPlan {
    pub webpki: bool,
    pub native: bool,
    pub extra_ca_file: Option<PathBuf>,
    pub extra_cas: Vec<CertificateDer<'static>>,
}

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_request_body: u64,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub stream_idle_timeout: Duration,
    pub drain_timeout: Duration,
    pub pool_idle_timeout: Duration,
    /// Downstream connections (docs/security.md): time to send a request head.
    pub header_read_timeout: Duration,
    /// No request in flight for this long closes a downstream connection.
    pub keep_alive_timeout: Duration,
    /// Largest request head in bytes (431 beyond).
    pub max_header_bytes: u64,
    /// Most header fields in an HTTP/1.1 request head (431 beyond).
    pub max_headers: usize,
    /// Open connections per listener (503 `overloaded` beyond).
    pub max_connections: usize,
    /// Concurrent streams per h2c connection.
    pub max_concurrent_streams: u32,
    /// Worker threads (`workers.rs`); `None`: one per CPU the process may use.
    pub workers: Option<usize>,
    /// Upstream connections per provider, open or opening, all workers together.
    pub max_upstream_connections: usize,
    /// Longest wait for an upstream stream slot at the cap (503 `upstream_busy` beyond).
    pub upstream_wait_timeout: Duration,
    /// HTTP/2 PING keepalive on upstream connections: interval and answer timeout.
    pub upstream_ping_interval: Duration,
    pub upstream_ping_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_request_body: config::DEFAULT_MAX_REQUEST_BODY,
            connect_timeout: config::DEFAULT_CONNECT_TIMEOUT,
            request_timeout: config::DEFAULT_REQUEST_TIMEOUT,
            stream_idle_timeout: config::DEFAULT_STREAM_IDLE_TIMEOUT,
            drain_timeout: config::DEFAULT_DRAIN_TIMEOUT,
            pool_idle_timeout: config::DEFAULT_POOL_IDLE_TIMEOUT,
            header_read_timeout: config::DEFAULT_HEADER_READ_TIMEOUT,
            keep_alive_timeout: config::DEFAULT_KEEP_ALIVE_TIMEOUT,
            max_header_bytes: config::DEFAULT_MAX_HEADER_BYTES,
            max_headers: config::DEFAULT_MAX_HEADERS,
            max_connections: config::DEFAULT_MAX_CONNECTIONS,
            max_concurrent_streams: config::DEFAULT_MAX_CONCURRENT_STREAMS,
            workers: None,
            max_upstream_connections: config::DEFAULT_MAX_UPSTREAM_CONNECTIONS,
            upstream_wait_timeout: config::DEFAULT_UPSTREAM_WAIT_TIMEOUT,
            upstream_ping_interval: config::DEFAULT_UPSTREAM_PING_INTERVAL,
            upstream_ping_timeout: config::DEFAULT_UPSTREAM_PING_TIMEOUT,
        }
    }
}

/// One provider: where it listens, where it forwards, and the credential it injects.
#[derive(Debug, Clone)]
pub struct ProviderPlan {
    pub name: String,
    pub preset: Option<&'static str>,
    pub listen: SocketAddr,
    /// `https://host[:port]` without a path: the pool key and the Host the upstream sees.
    pub origin: Uri,
    pub host: String,
    pub port: u16,
    /// Put before request paths that do not already start with it ("" when none).
    pub base_path: String,
    /// Dial this `host:port` instead of resolving the upstream host.
    pub upstream_address: Option<String>,
    pub key_ref: SecretRef,
    pub credential: Credential,
    pub extras: Extras,
    /// The CONNECT proxy this provider's connections go through, if any.
    pub proxy: Option<ProxyTarget>,
    /// Where `proxy` was chosen: `upstream_proxy` in the file, an environment variable, or none.
    pub proxy_source: &'static str,
    /// Sliding-window request limits; `None` = unlimited.
    pub rate_limit: Option<RateLimitPlan>,
    /// `METHOD /path` rules; `None` = everything allowed.
    pub allow: Option<Vec<crate::config::policy::AllowRule>>,
    /// Model patterns the JSON body's `model` must match; `None` = any.
    pub models: Option<Vec<String>>,
    /// Token budget of this provider.
    pub budget: Option<crate::config::policy::BudgetPlan>,
}

/// Per-provider limits over sliding windows (each optional).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateLimitPlan {
    pub requests_per_minute: Option<u64>,
    pub requests_per_hour: Option<u64>,
    pub bytes_per_minute: Option<u64>,
}

/// The header that carries the key, built once; `Debug` never shows the value.
#[derive(Clone)]
pub enum Credential {
    Configured {
        name: HeaderName,
        value: HeaderValue,
    },
    /// Why there is no key (names the variable or file, never a value).
    Missing(String),
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::Configured { name, .. } => {
                write!(f, "{name}: {}", crate::config::secret::REDACTED)
            }
            Credential::Missing(why) => write!(f, "missing ({why})"),
        }
    }
}

const TOP_KEYS: &[&str] = &[
    "admin",
    "upstream_proxy",
    "tls",
    "limits",
    "observability",
    "callers",
    "providers",
];
const ADMIN_KEYS: &[&str] = &[
    "listen",
    "max_connections",
    "header_read_timeout",
    "keep_alive_timeout",
];
const PROVIDER_KEYS: &[&str] = &[
    "preset",
    "listen",
    "api_key",
    "upstream",
    "upstream_address",
    "auth",
    "rate_limit",
    "allow",
    "models",
    "budget",
];

impl Plan {
    /// Reads a config file; `lookup` stands for the process environment.
    pub fn load(
        path: &std::path::Path,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Plan, Errors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            let mut errors = Errors::default();
            errors.push(
                "",
                format!("cannot read config file {}: {e}", path.display()),
            );
            errors
        })?;
        let mut plan = Plan::from_yaml(&text, lookup)?;
        plan.source = PlanSource::File(path.to_owned());
        Ok(plan)
    }

    /// Validates config text into a plan, or returns every problem found.
    pub fn from_yaml(text: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<Plan, Errors> {
        let mut errors = Errors::default();
        let doc =
            config::parse_document(text, &mut errors).ok_or_else(|| std::mem::take(&mut errors))?;
        let plan = build(&Node::root(&doc), lookup, &mut errors, text);
        match plan {
            Some(plan) if errors.is_empty() => Ok(plan),
            _ => Err(errors),
        }
    }

    /// The resolved plan for `--check`, with secrets redacted.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "admin: http://{} (/live, /ready, /metrics); max_connections {} (then the oldest idle one is closed), header_read_timeout {}, keep_alive_timeout {}",
            self.admin_listen,
            self.admin.max_connections,
            show_duration(self.admin.header_read_timeout),
            show_duration(self.admin.keep_alive_timeout),
        );
        match &self.upstream_proxy {
            Some(p) => {
                let _ = writeln!(out, "upstream_proxy: {p} (from the config file)");
            }
            None => {
                let _ = writeln!(
                    out,
                    "upstream_proxy: not in the file; HTTPS_PROXY / NO_PROXY decide per provider"
                );
            }
        }
        let mut roots = Vec::new();
        if self.tls.webpki {
            roots.push("webpki".to_owned());
        }
        if self.tls.native {
            roots.push("native".to_owned());
        }
        if let Some(f) = &self.tls.extra_ca_file {
            roots.push(format!(
                "{} ({} certificates)",
                f.display(),
                self.tls.extra_cas.len()
            ));
        }
        let _ = writeln!(out, "tls roots: {}", roots.join(", "));
        let usage_file = self
            .observability
            .usage_file
            .as_ref()
            .map(|p| p.display().to_string());
        let _ = writeln!(
            out,
            "observability: token_usage {}, usage_file {}",
            self.observability.token_usage,
            usage_file.as_deref().unwrap_or("none")
        );
        let l = &self.limits;
        let _ = writeln!(
            out,
            "limits: max_request_body {}, connect_timeout {}, request_timeout {}, stream_idle_timeout {}, drain_timeout {}",
            show_size(l.max_request_body),
            show_duration(l.connect_timeout),
            show_duration(l.request_timeout),
            show_duration(l.stream_idle_timeout),
            show_duration(l.drain_timeout),
        );
        let _ = writeln!(
            out,
            "connections: header_read_timeout {}, keep_alive_timeout {}, max_header_bytes {}, max_headers {}, max_connections {} per listener, max_concurrent_streams {}",
            show_duration(l.header_read_timeout),
            show_duration(l.keep_alive_timeout),
            show_size(l.max_header_bytes),
            l.max_headers,
            l.max_connections,
            l.max_concurrent_streams,
        );
        let _ = writeln!(
            out,
            "upstream pool: max_upstream_connections {} per provider, upstream_wait_timeout {}, pool_idle_timeout {}, upstream_ping_interval {}, upstream_ping_timeout {}",
            l.max_upstream_connections,
            show_duration(l.upstream_wait_timeout),
            show_duration(l.pool_idle_timeout),
            show_duration(l.upstream_ping_interval),
            show_duration(l.upstream_ping_timeout),
        );
        let _ = writeln!(
            out,
            "workers: {}",
            l.workers.map_or_else(
                || format!("{} (one per CPU)", crate::config::default_workers()),
                |n| n.to_string()
            ),
        );
        if !self.callers.is_empty() {
            let names: Vec<&str> = self.callers.iter().map(|c| c.name.as_str()).collect();
            let _ = writeln!(out, "callers (token required): {}", names.join(", "));
        }
        for p in &self.providers {
            let preset = p
                .preset
                .map(|n| format!(" (preset {n})"))
                .unwrap_or_default();
            let dial = p
                .upstream_address
                .as_ref()
                .map(|a| format!(", dialing {a}"))
                .unwrap_or_default();
            let via = match &p.proxy {
                Some(proxy) => format!(", via CONNECT proxy {proxy} (from {})", p.proxy_source),
                None => String::new(),
            };
            let _ = writeln!(
                out,
                "provider {}{preset}: http://{} -> {}{}{dial}{via}",
                p.name,
                p.listen,
                p.origin.to_string().trim_end_matches('/'),
                p.base_path
            );
            let cred = match &p.credential {
                Credential::Configured { name, .. } => {
                    format!(
                        "{name}: {} from {}",
                        crate::config::secret::REDACTED,
                        p.key_ref
                    )
                }
                Credential::Missing(why) => {
                    format!("NOT CONFIGURED ({why}): requests get 403 provider_not_configured")
                }
            };
            let _ = writeln!(out, "  credential: {cred}");
            if let Some(rules) = &p.allow {
                let _ = writeln!(out, "  allow-list: {} rules", rules.len());
            }
            if let Some(models) = &p.models {
                let _ = writeln!(out, "  models: {}", models.join(", "));
            }
            if let Some(b) = &p.budget {
                let _ = writeln!(out, "  token budget: {b:?}");
            }
            if let Some(r) = &p.rate_limit {
                let show = |v: Option<u64>| v.map_or("unlimited".to_owned(), |n| n.to_string());
                let _ = writeln!(
                    out,
                    "  rate limit: {} requests/minute, {} requests/hour, {} bytes/minute",
                    show(r.requests_per_minute),
                    show(r.requests_per_hour),
                    r.bytes_per_minute.map_or("unlimited".to_owned(), show_size)
                );
            }
        }
        out
    }
}

fn build(
    root: &Node,
    lookup: &dyn Fn(&str) -> Option<String>,
    errors: &mut Errors,
    text: &str,
) -> Option<Plan> {
    let top = root.map(TOP_KEYS, errors)?;

    let mut admin_listen = parse_addr(config::DEFAULT_ADMIN_LISTEN, "", errors);
    let mut admin_plan = Some(AdminPlan::default());
    if let Some(admin) = top.get("admin").and_then(|n| n.map(ADMIN_KEYS, errors)) {
        if let Some(n) = admin.get("listen") {
            admin_listen = n
                .string(errors)
                .and_then(|s| parse_addr(s, &n.path, errors));
        }
        admin_plan = admin_bounds(&admin, errors);
    }

    let callers = top
        .get("callers")
        .map(|n| crate::config::policy::callers(&n, lookup, errors))
        .unwrap_or_default();
    let upstream_proxy = top.get("upstream_proxy").and_then(|n| {
        let s = n.string(errors)?;
        ProxyTarget::parse(s)
            .map_err(|m| errors.push(&n.path, m))
            .ok()
    });

    let tls = top.get("tls").map_or_else(
        || {
            Some(TlsPlan {
                webpki: true,
                native: false,
                extra_ca_file: None,
                extra_cas: Vec::new(),
            })
        },
        |n| tls_plan(&n, errors),
    );
    let limits = top
        .get("limits")
        .map_or(Some(Limits::default()), |n| limits(&n, errors));
    let observability = top
        .get("observability")
        .map_or(Some(Observability::default()), |n| {
            observability(&n, errors)
        });

    let mut providers = Vec::new();
    match top.get("providers") {
        None => errors.push("providers", "no providers configured; add at least one, e.g. `openai: {api_key: env:OPENAI_API_KEY}`"),
        Some(n) => {
            if let Some(map) = n.any_map(errors) {
                for (name, node) in map.entries() {
                    if let Some(p) = provider(name, &node, lookup, errors) {
                        providers.push(p);
                    }
                }
            }
        }
    }
    check_unique_listeners(admin_listen, &providers, errors);
    choose_egress(&mut providers, upstream_proxy.as_ref(), lookup, errors);

    Some(Plan {
        admin_listen: admin_listen?,
        admin: admin_plan?,
        upstream_proxy,
        tls: tls?,
        limits: limits?,
        observability: observability?,
        providers,
        callers,
        source: PlanSource::Text(text.to_owned()),
    })
}

/// Decides each provider's forward proxy: the file's `upstream_proxy` for all, else the
/// environment (`HTTPS_PROXY` ... minus `NO_PROXY`) per upstream host.
fn choose_egress(
    providers: &mut [ProviderPlan],
    configured: Option<&ProxyTarget>,
    lookup: &dyn Fn(&str) -> Option<String>,
    errors: &mut Errors,
) {
    for p in providers.iter_mut() {
        if let Some(proxy) = configured {
            p.proxy = Some(proxy.clone());
            p.proxy_source = "upstream_proxy";
            continue;
        }
        let dial_host = p
            .upstream_address
            .as_deref()
            .and_then(|a| a.rsplit_once(':'))
            .map(|(h, _)| h);
        let hosts: Vec<&str> = std::iter::once(p.host.as_str()).chain(dial_host).collect();
        match ProxyTarget::from_env(lookup, &hosts) {
            None => {}
            Some((var, Ok(proxy))) => {
                p.proxy = Some(proxy);
                p.proxy_source = var;
            }
            Some((var, Err(m))) => {
                let path = format!("(environment) {var}");
                // One message per variable, not one per provider.
                if !errors.0.iter().any(|e| e.path == path) {
                    errors.push(&path, m);
                }
            }
        }
    }
}

fn tls_plan(node: &Node, errors: &mut Errors) -> Option<TlsPlan> {
    let map = node.map(&["roots", "extra_ca_file"], errors)?;
    let mut plan = TlsPlan {
        webpki: true,
        native: false,
        extra_ca_file: None,
        extra_cas: Vec::new(),
    };
    if let Some(n) = map.get("roots") {
        if let Some(list) = n.strings(errors) {
            plan.webpki = false;
            for root in list {
                match root {
                    "webpki" => plan.webpki = true,
                    "native" => plan.native = true,
                    other => errors.push(
                        &n.path,
                        format!("unknown root store `{other}`; use `webpki` and/or `native`"),
                    ),
                }
            }
        }
    }
    if let Some(n) = map.get("extra_ca_file") {
        if let Some(path) = n.string(errors) {
            match load_pem_certs(path) {
                Ok(certs) => plan.extra_cas = certs,
                Err(m) => errors.push(&n.path, m),
            }
            plan.extra_ca_file = Some(PathBuf::from(path));
        }
    }
    if !plan.webpki && !plan.native && plan.extra_cas.is_empty() {
        errors.push(
            &node.path,
            "no trusted roots: list `webpki` or `native` in roots, or set extra_ca_file",
        );
    }
    Some(plan)
}

/// Reads every certificate of a PEM file.
pub fn load_pem_certs(path: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {path}: {e}"))?;
    let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(&bytes).collect();
    match certs {
        Ok(c) if !c.is_empty() => Ok(c),
        Ok(_) => Err(format!("{path} holds no PEM certificate")),
        Err(e) => Err(format!("{path} is not valid PEM: {e}")),
    }
}

fn rate_limit(node: &Node, errors: &mut Errors) -> Option<RateLimitPlan> {
    let map = node.map(
        &[
            "requests_per_minute",
            "requests_per_hour",
            "bytes_per_minute",
        ],
        errors,
    )?;
    let count =
        |key: &str, errors: &mut Errors| map.get(key).and_then(|n| n.positive_count("", errors));
    let plan = RateLimitPlan {
        requests_per_minute: count("requests_per_minute", errors),
        requests_per_hour: count("requests_per_hour", errors),
        bytes_per_minute: map
            .get("bytes_per_minute")
            .and_then(|n| match n.size(errors) {
                Some(0) => {
                    errors.push(&n.path, "must be above 0 (leave the key out for no limit)");
                    None
                }
                other => other,
            }),
    };
    Some(plan)
}

/// The admin listener's own bounds under `admin:`; `None` when one of them is invalid.
fn admin_bounds(admin: &config::Map, errors: &mut Errors) -> Option<AdminPlan> {
    let mut plan = AdminPlan::default();
    let mut ok = true;
    if let Some(n) = admin.get("max_connections") {
        let most = config::MAX_ADMIN_MAX_CONNECTIONS;
        match n.value.as_u64().and_then(|v| usize::try_from(v).ok()) {
            Some(v) if (1..=most).contains(&v) => plan.max_connections = v,
            _ => {
                errors.push(&n.path, format!("must be a whole number from 1 to {most}"));
                ok = false;
            }
        }
    }
    for (key, slot) in [
        ("header_read_timeout", &mut plan.header_read_timeout),
        ("keep_alive_timeout", &mut plan.keep_alive_timeout),
    ] {
        let Some(n) = admin.get(key) else { continue };
        match n.duration(errors) {
            Some(d) if !d.is_zero() => *slot = d,
            Some(_) => {
                errors.push(&n.path, "must be more than 0");
                ok = false;
            }
            None => ok = false,
        }
    }
    ok.then_some(plan)
}

fn observability(node: &Node, errors: &mut Errors) -> Option<Observability> {
    let map = node.map(&["token_usage", "usage_file"], errors)?;
    let mut o = Observability::default();
    if let Some(b) = map.get("token_usage").and_then(|n| n.boolean(errors)) {
        o.token_usage = b;
    }
    if let Some(n) = map.get("usage_file") {
        if let Some(path) = n.string(errors) {
            let path = PathBuf::from(path);
            let dir_ok = path
                .parent()
                .is_none_or(|d| d.as_os_str().is_empty() || d.is_dir());
            if dir_ok {
                o.usage_file = Some(path);
            } else {
                errors.push(
                    &n.path,
                    format!("the directory of {} does not exist", path.display()),
                );
            }
        }
    }
    if o.usage_file.is_some() && !o.token_usage {
        errors.push(&node.path, "usage_file needs token_usage: true");
    }
    Some(o)
}

fn limits(node: &Node, errors: &mut Errors) -> Option<Limits> {
    let keys = [
        "max_request_body",
        "connect_timeout",
        "request_timeout",
        "stream_idle_timeout",
        "drain_timeout",
        "pool_idle_timeout",
        "header_read_timeout",
        "keep_alive_timeout",
        "max_header_bytes",
        "max_headers",
        "max_connections",
        "max_concurrent_streams",
        "workers",
        "max_upstream_connections",
        "upstream_wait_timeout",
        "upstream_ping_interval",
        "upstream_ping_timeout",
    ];
    let map = node.map(&keys, errors)?;
    let mut l = Limits::default();
    if let Some(v) = map.get("max_request_body").and_then(|n| n.size(errors)) {
        l.max_request_body = v;
    }
    if let Some(n) = map.get("max_header_bytes") {
        let (min, max) = (config::MIN_MAX_HEADER_BYTES, config::MAX_MAX_HEADER_BYTES);
        match n.size(errors) {
            Some(v) if (min..=max).contains(&v) => l.max_header_bytes = v,
            Some(_) => errors.push(
                &n.path,
                format!("must be between {} and {}", show_size(min), show_size(max)),
            ),
            None => {}
        }
    }
    let durations: [(&str, &mut Duration); 10] = [
        ("connect_timeout", &mut l.connect_timeout),
        ("request_timeout", &mut l.request_timeout),
        ("stream_idle_timeout", &mut l.stream_idle_timeout),
        ("drain_timeout", &mut l.drain_timeout),
        ("pool_idle_timeout", &mut l.pool_idle_timeout),
        ("header_read_timeout", &mut l.header_read_timeout),
        ("keep_alive_timeout", &mut l.keep_alive_timeout),
        ("upstream_wait_timeout", &mut l.upstream_wait_timeout),
        ("upstream_ping_interval", &mut l.upstream_ping_interval),
        ("upstream_ping_timeout", &mut l.upstream_ping_timeout),
    ];
    for (key, slot) in durations {
        if let Some(n) = map.get(key) {
            match n.duration(errors) {
                Some(d) if d.is_zero() && key != "drain_timeout" => {
                    errors.push(&n.path, "must be more than 0")
                }
                Some(d) => *slot = d,
                None => {}
            }
        }
    }
    let count = |key: &str, max: u64, errors: &mut Errors| {
        let n = map.get(key)?;
        match n.value.as_u64() {
            Some(v) if (1..=max).contains(&v) => Some(v),
            _ => {
                errors.push(&n.path, format!("must be a whole number from 1 to {max}"));
                None
            }
        }
    };
    let most = u64::from(u32::MAX);
    if let Some(v) = count("max_headers", config::MAX_MAX_HEADERS as u64, errors) {
        l.max_headers = v as usize;
    }
    if let Some(v) = count("max_connections", most, errors) {
        l.max_connections = v as usize;
    }
    if let Some(v) = count("max_concurrent_streams", most, errors) {
        l.max_concurrent_streams = v as u32;
    }
    if let Some(v) = count("workers", config::MAX_WORKERS as u64, errors) {
        l.workers = Some(v as usize);
    }
    if let Some(v) = count("max_upstream_connections", most, errors) {
        l.max_upstream_connections = v as usize;
    }
    Some(l)
}

fn provider(
    name: &str,
    node: &Node,
    lookup: &dyn Fn(&str) -> Option<String>,
    errors: &mut Errors,
) -> Option<ProviderPlan> {
    let valid_name = config::valid_name(name);
    if !valid_name {
        errors.push(
            &node.path,
            "provider names use a-z, 0-9, `-` and `_` (at most 64)",
        );
    }
    let map = node.map(PROVIDER_KEYS, errors)?;
    let mut preset = presets::preset(name);
    if let Some(n) = map.get("preset") {
        if let Some(p) = n.string(errors) {
            preset = presets::preset(p);
            if preset.is_none() {
                let names: Vec<_> = presets::PRESETS.iter().map(|p| p.name).collect();
                errors.push(
                    &n.path,
                    format!("unknown preset `{p}`; presets are {}", names.join(", ")),
                );
            }
        }
    }

    let listen = match map.get("listen") {
        Some(n) => n
            .string(errors)
            .and_then(|s| parse_addr(s, &n.path, errors)),
        None => match preset {
            Some(p) => Some(SocketAddr::from(([127, 0, 0, 1], p.awf_port))),
            None => {
                errors.push(
                    &config::join(&node.path, "listen"),
                    "missing; add e.g. `listen: 127.0.0.1:10010`",
                );
                None
            }
        },
    };

    let upstream_text = match map.get("upstream") {
        Some(n) => n.string(errors).map(|s| (s.to_owned(), n.path.clone())),
        None => {
            match preset {
                Some(p) => Some((p.upstream.to_owned(), String::new())),
                None => {
                    errors.push(&config::join(&node.path, "upstream"), "missing; custom providers need e.g. `upstream: https://llm.example.com/v1`");
                    None
                }
            }
        }
    };
    let upstream = upstream_text.and_then(|(text, path)| match parse_upstream(&text) {
        Ok(u) => Some(u),
        Err(m) => {
            errors.push(&path, m);
            None
        }
    });

    let upstream_address = map.get("upstream_address").and_then(|n| {
        let s = n.string(errors)?;
        match s.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p != 0) => {
                Some(s.to_owned())
            }
            _ => {
                errors.push(
                    &n.path,
                    format!("`{s}` is not HOST:PORT; write e.g. `127.0.0.1:8443`"),
                );
                None
            }
        }
    });

    let auth = auth(&map, preset, &node.path, errors);
    let rate_limit = map.get("rate_limit").and_then(|n| rate_limit(&n, errors));
    let allow = map
        .get("allow")
        .map(|n| crate::config::policy::allow_rules(&n, errors));
    let models = map
        .get("models")
        .map(|n| crate::config::policy::models(&n, errors));
    let budget = map
        .get("budget")
        .and_then(|n| crate::config::policy::budget_plan(&n, errors));
    let key_ref = match map.get("api_key") {
        Some(n) => n.string(errors).and_then(|s| {
            SecretRef::parse(s)
                .map_err(|m| errors.push(&n.path, m))
                .ok()
        }),
        None => {
            errors.push(
                &config::join(&node.path, "api_key"),
                "missing; add e.g. `api_key: env:OPENAI_API_KEY`",
            );
            None
        }
    };
    let ((auth_header, auth_prefix), key_ref) = (auth?, key_ref?);
    let credential = match key_ref.resolve(lookup) {
        Ok(secret) => {
            let text = format!("{auth_prefix}{}", secret.expose());
            match HeaderValue::from_str(&text) {
                Ok(mut value) => {
                    value.set_sensitive(true);
                    Credential::Configured {
                        name: auth_header,
                        value,
                    }
                }
                Err(_) => {
                    errors.push(
                        &config::join(&node.path, "api_key"),
                        format!("the key read from {key_ref} has characters not allowed in an HTTP header"),
                    );
                    return None;
                }
            }
        }
        Err(Unresolved::Missing(why)) => Credential::Missing(why),
        Err(Unresolved::Unreadable(why)) => {
            errors.push(&config::join(&node.path, "api_key"), why);
            return None;
        }
    };

    let (origin, host, port, base_path) = upstream?;
    Some(ProviderPlan {
        name: name.to_owned(),
        preset: preset.map(|p| p.name),
        listen: listen?,
        origin,
        host,
        port,
        base_path,
        upstream_address,
        key_ref,
        credential,
        extras: preset.map(|p| p.extras).unwrap_or_default(),
        proxy: None,
        proxy_source: "none",
        rate_limit,
        allow,
        models,
        budget,
    })
}

fn auth(
    map: &config::Map,
    preset: Option<&presets::Preset>,
    path: &str,
    errors: &mut Errors,
) -> Option<(HeaderName, String)> {
    let (mut header, mut prefix) = match preset {
        Some(p) => (Some(p.auth_header.to_owned()), p.auth_prefix.to_owned()),
        None => (None, String::new()),
    };
    match map.get("auth") {
        Some(n) => {
            let auth = n.map(&["header", "prefix"], errors)?;
            if let Some(h) = auth.get("header") {
                header = h.string(errors).map(str::to_owned);
            }
            if let Some(p) = auth.get("prefix") {
                prefix = p.string(errors).map(str::to_owned).unwrap_or_default();
            }
        }
        None if preset.is_none() => {
            errors.push(&config::join(path, "auth"), "missing; custom providers need e.g. `auth: { header: authorization, prefix: \"Bearer \" }`");
            return None;
        }
        None => {}
    }
    let Some(header) = header else {
        errors.push(
            &config::join(path, "auth.header"),
            "missing; name the header that carries the key",
        );
        return None;
    };
    match HeaderName::from_bytes(header.to_ascii_lowercase().as_bytes()) {
        Ok(name) if !crate::config::is_hop_by_hop(&name) && !crate::config::set_by_proxy(&name) => {
            Some((name, prefix))
        }
        _ => {
            errors.push(&config::join(path, "auth.header"), format!("`{header}` cannot carry the key; name an ordinary header such as `authorization`"));
            None
        }
    }
}

/// Splits `https://host[:port][/base]` into origin, host, port and base path.
fn parse_upstream(text: &str) -> Result<(Uri, String, u16, String), String> {
    let uri: Uri = text
        .parse()
        .map_err(|_| format!("`{text}` is not a URL; write e.g. `https://api.example.com/v1`"))?;
    if uri.scheme_str() != Some("https") {
        return Err(format!(
            "`{text}` must start with https:// (the proxy always speaks TLS upstream)"
        ));
    }
    let authority: &Authority = uri
        .authority()
        .ok_or_else(|| format!("`{text}` has no host"))?;
    if authority.as_str().contains('@') {
        return Err(format!("`{text}` must not hold user info"));
    }
    if uri.query().is_some() {
        return Err(format!("`{text}` must not hold a query string"));
    }
    let host = authority.host().to_owned();
    let port = authority.port_u16().unwrap_or(443);
    let origin: Uri = format!("https://{authority}/")
        .parse()
        .map_err(|_| format!("`{text}` is not a URL"))?;
    let base = uri.path().trim_end_matches('/').to_owned();
    Ok((origin, host, port, base))
}

fn parse_addr(text: &str, path: &str, errors: &mut Errors) -> Option<SocketAddr> {
    match text.parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            errors.push(
                path,
                format!("`{text}` is not IP:PORT; write e.g. `127.0.0.1:10000` or `0.0.0.0:10000`"),
            );
            None
        }
    }
}

fn check_unique_listeners(
    admin: Option<SocketAddr>,
    providers: &[ProviderPlan],
    errors: &mut Errors,
) {
    let mut seen: Vec<(SocketAddr, String)> = Vec::new();
    if let Some(a) = admin {
        seen.push((a, "admin.listen".into()));
    }
    for p in providers {
        let path = format!("providers.{}.listen", p.name);
        if let Some((_, other)) = seen.iter().find(|(a, _)| *a == p.listen && a.port() != 0) {
            errors.push(
                &path,
                format!(
                    "{} is already used by {other}; give each listener its own port",
                    p.listen
                ),
            );
        }
        seen.push((p.listen, path));
    }
}
