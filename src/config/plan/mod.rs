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

mod describe;
mod otel;
mod provider;
mod sections;

pub use otel::{OtlpProtocol, TracingPlan};
use provider::{choose_egress, provider};
pub use sections::load_pem_certs;
use sections::{admin_bounds, limits, observability, rate_limit, tls_plan};

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
    /// The host name agents reach the provider listeners by (`advertised_host`): `/reflect`
    /// reports `http://HOST:PORT` base URLs with it (AWF: `api-proxy`).
    pub advertised_host: Option<String>,
    /// Rate limits and budgets shared by every replica through Redis (docs/design.md §8c).
    pub shared_state: Option<crate::config::shared_state::SharedStatePlan>,
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
    /// OTLP traces (`observability.tracing` and `OTEL_*`, docs/design.md §8d); `None`: off.
    pub tracing: Option<TracingPlan>,
}

impl Default for Observability {
    fn default() -> Self {
        Observability {
            token_usage: true,
            usage_file: None,
            tracing: None,
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
    /// A response whose client accepts nothing for this long (with bytes waiting) is dropped.
    pub client_write_timeout: Duration,
    /// A WebSocket tunnel with no bytes either way for this long is closed.
    pub websocket_idle_timeout: Duration,
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
            client_write_timeout: config::DEFAULT_CLIENT_WRITE_TIMEOUT,
            websocket_idle_timeout: config::DEFAULT_WEBSOCKET_IDLE_TIMEOUT,
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
    /// Where the key comes from (`None`: credentials from a cloud source, `cloud`).
    pub key_ref: Option<SecretRef>,
    pub credential: Credential,
    /// `region:` (bedrock, vertex).
    pub region: Option<String>,
    /// Short-lived credentials fetched and refreshed in the background (docs/cloud.md).
    pub cloud: Option<crate::config::cloud::CloudPlan>,
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
    /// The upstream host is sensitive (`redact_upstream_host`, AWF's
    /// `AWF_SENSITIVE_OPENAI_TARGET`): shown as `[REDACTED]` in logs, `--check`, `/reflect`
    /// and error messages.
    pub redact_upstream_host: bool,
}

/// What a sensitive upstream host is shown as (the Node sidecar's placeholder).
pub const REDACTED_HOST: &str = "[REDACTED]";

impl ProviderPlan {
    /// The upstream host as logs and answers may show it.
    pub fn shown_host(&self) -> &str {
        if self.redact_upstream_host {
            REDACTED_HOST
        } else {
            &self.host
        }
    }

    /// `https://HOST[:PORT]BASE` as logs and answers may show it.
    pub fn shown_upstream(&self) -> String {
        let port = match self.port {
            443 => String::new(),
            p => format!(":{p}"),
        };
        format!("https://{}{port}{}", self.shown_host(), self.base_path)
    }
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
    /// AWS keys: every request is signed (SigV4), nothing is injected as is.
    Aws(std::sync::Arc<crate::config::cloud::AwsKeys>),
    /// Why there is no key (names the variable or file, never a value).
    Missing(String),
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::Configured { name, .. } => {
                write!(f, "{name}: {}", crate::config::secret::REDACTED)
            }
            Credential::Aws(_) => write!(f, "AWS SigV4: {}", crate::config::secret::REDACTED),
            Credential::Missing(why) => write!(f, "missing ({why})"),
        }
    }
}

impl Credential {
    /// True when requests can be sent with it.
    pub fn usable(&self) -> bool {
        !matches!(self, Credential::Missing(_))
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
    "advertised_host",
    "shared_state",
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
    "region",
    "aws",
    "google",
    "azure",
    "redact_upstream_host",
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
    let tracing_node = top.get("observability").and_then(|n| {
        Some(n.value.get("tracing")).flatten().map(|v| Node {
            value: v,
            path: format!("{}.tracing", n.path),
        })
    });
    let tracing = otel::tracing_plan(tracing_node, lookup, errors);
    let observability = observability.map(|o| Observability { tracing, ..o });

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
    let advertised_host = top.get("advertised_host").and_then(|n| {
        let s = n.string(errors)?;
        advertised_host(s).map_err(|m| errors.push(&n.path, m)).ok()
    });
    let shared_state = top
        .get("shared_state")
        .map(|n| crate::config::shared_state::shared_state(&n, lookup, errors));
    check_unique_listeners(admin_listen, &providers, errors);
    choose_egress(&mut providers, upstream_proxy.as_ref(), lookup, errors);
    let mut observability = observability;
    if let Some(t) = observability.as_mut().and_then(|o| o.tracing.as_mut()) {
        otel::collector_egress(t, upstream_proxy.as_ref(), lookup, errors);
    }

    Some(Plan {
        admin_listen: admin_listen?,
        admin: admin_plan?,
        upstream_proxy,
        tls: tls?,
        limits: limits?,
        observability: observability?,
        providers,
        callers,
        advertised_host,
        shared_state: match shared_state {
            Some(s) => Some(s?),
            None => None,
        },
        source: PlanSource::Text(text.to_owned()),
    })
}

/// `advertised_host:` a DNS name or IP address (IPv6 in brackets) that makes `http://HOST:PORT`.
fn advertised_host(text: &str) -> Result<String, String> {
    let ipv6 = text.starts_with('[')
        && text.ends_with(']')
        && text[1..text.len() - 1]
            .parse::<std::net::Ipv6Addr>()
            .is_ok();
    let name = !text.is_empty()
        && text.len() <= 253
        && text.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if ipv6 || name {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "`{text}` is not a host name or IP address; write e.g. `api-proxy` or `172.30.0.30` (no scheme, no port)"
        ))
    }
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
