//! The AWF environment contract (docs/design.md §7) rendered as a config file: what AWF's Node
//! `api-proxy` sidecar read from its environment, written as YAML for `Plan::from_yaml`.
//!
//! Runs before there is a plan: `render-config` prints the result, `awf` serves it. No key
//! passes through here: every `api_key` is an `env:` reference that the plan resolves later,
//! so the output is the same whatever the key values are (not even their length shows).

use http::header::{HeaderName, HOST};
use serde::{Serialize, Serializer};

use crate::config::egress::ProxyTarget;
use crate::config::plan::REDACTED_HOST;
use crate::config::presets::{self, Preset};
use crate::telemetry::logging::sanitize;

/// Loopback only: the image's healthcheck (`llm-keyproxy health`) probes it from inside the
/// container, and the agent on the AWF network has no business with `/metrics` or with
/// flooding the probes (docs/security.md).
pub const ADMIN_LISTEN: &str = "127.0.0.1:9901";
/// The sidecar's name on `awf-net` (its compose service), as `/reflect` reports it.
pub const AWF_SERVICE_HOST: &str = "api-proxy";
pub const DEFAULT_SHUTDOWN_TIMEOUT_MS: u64 = 8000;
pub const DEFAULT_RATE_LIMIT_RPM: u64 = 600;
pub const DEFAULT_RATE_LIMIT_RPH: u64 = 1000;
pub const DEFAULT_RATE_LIMIT_BYTES_PM: u64 = 50 * 1024 * 1024;
const HEADER: &str = "# rendered by llm-keyproxy render-config from the AWF environment\n";

/// The config text, and what the operator should know about how it was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub yaml: String,
    /// One line each; they name variables, never print their values.
    pub warnings: Vec<String>,
}

/// How the Node sidecar found one provider (names from its `provider-env-constants.json`).
struct AwfProvider {
    preset: &'static str,
    /// The variable holding the key; the config refers to it, never copies it.
    key_var: &'static str,
    /// `<P>` of `<P>_API_TARGET` and `<P>_API_BASE_PATH`.
    env_prefix: &'static str,
    /// Renames the credential header; the raw key is then sent without a prefix.
    auth_header_var: Option<&'static str>,
    /// Set (to the target's host): the upstream host is sensitive and never printed.
    sensitive_var: Option<&'static str>,
}

const AWF_PROVIDERS: [AwfProvider; 5] = [
    AwfProvider {
        preset: "openai",
        key_var: "OPENAI_API_KEY",
        env_prefix: "OPENAI",
        auth_header_var: Some("AWF_OPENAI_AUTH_HEADER"),
        sensitive_var: Some("AWF_SENSITIVE_OPENAI_TARGET"),
    },
    AwfProvider {
        preset: "anthropic",
        key_var: "ANTHROPIC_API_KEY",
        env_prefix: "ANTHROPIC",
        auth_header_var: Some("AWF_ANTHROPIC_AUTH_HEADER"),
        sensitive_var: None,
    },
    AwfProvider {
        preset: "copilot",
        key_var: "COPILOT_GITHUB_TOKEN",
        env_prefix: "COPILOT",
        auth_header_var: None,
        sensitive_var: None,
    },
    AwfProvider {
        preset: "gemini",
        key_var: "GEMINI_API_KEY",
        env_prefix: "GEMINI",
        auth_header_var: None,
        sensitive_var: None,
    },
    AwfProvider {
        // The Node sidecar's VERTEX_ENV.KEY is GOOGLE_API_KEY (there is no VERTEX_API_KEY).
        preset: "vertex",
        key_var: "GOOGLE_API_KEY",
        env_prefix: "VERTEX",
        auth_header_var: None,
        sensitive_var: None,
    },
];

/// Variables the Node sidecar acts on that llm-keyproxy does not reproduce: each one set gets
/// a warning, so a migration does not silently lose a behaviour.
const NOT_REPRODUCED: &[(&str, &str)] = &[
    ("COPILOT_PROVIDER_API_KEY", "Copilot BYOK keys"),
    ("COPILOT_PROVIDER_BASE_URL", "Copilot BYOK targets"),
    ("COPILOT_PROVIDER_TYPE", "Copilot BYOK provider types"),
    (
        "COPILOT_INTEGRATION_ID",
        "overriding Copilot-Integration-Id (the client's own header passes through)",
    ),
    ("AWF_BYOK_EXTRA_HEADERS", "Copilot BYOK extra headers"),
    (
        "AWF_BYOK_EXTRA_BODY_FIELDS",
        "Copilot BYOK extra body fields",
    ),
    ("AWF_MODEL_ALIASES", "model aliases"),
    (
        "GH_AW_OTLP_WORKLOAD_IDENTITY",
        "OIDC-authenticated OTLP exports",
    ),
    ("AWF_MODEL_FALLBACK", "model fallback"),
    ("AWF_ALLOWED_MODELS", "model allow-lists"),
    ("AWF_DISALLOWED_MODELS", "model deny-lists"),
    ("AWF_MAX_EFFECTIVE_TOKENS", "effective-token budgets"),
    ("AWF_MAX_AI_CREDITS", "AI-credit budgets"),
    ("AWF_MAX_RUNS", "the max-runs guard"),
    ("AWF_MAX_PERMISSION_DENIED", "the permission-denied guard"),
    ("AWF_MAX_CACHE_MISSES", "the cache-miss guard"),
    ("AWF_MAX_MODEL_MULTIPLIER", "the model-multiplier guard"),
    (
        "AWF_ANTHROPIC_AUTO_CACHE",
        "Anthropic prompt-cache rewriting",
    ),
    ("AWF_ANTHROPIC_DROP_TOOLS", "Anthropic tool dropping"),
    ("AWF_ANTHROPIC_STRIP_ANSI", "Anthropic ANSI stripping"),
    (
        "AWF_ANTHROPIC_TRANSFORM_FILE",
        "Anthropic body transform hooks",
    ),
];

#[derive(Serialize)]
struct Config {
    /// The agent reaches the sidecar as `api-proxy` (its compose service name), so `/reflect`
    /// reports `http://api-proxy:PORT` as the Node sidecar did.
    advertised_host: &'static str,
    admin: Admin,
    #[serde(skip_serializing_if = "Option::is_none")]
    upstream_proxy: Option<String>,
    tls: Tls,
    limits: Limits,
    #[serde(skip_serializing_if = "Option::is_none")]
    observability: Option<Observability>,
    providers: Providers,
}

/// Only `tracing` (docs/awf.md "OpenTelemetry").
#[derive(Serialize)]
struct Observability {
    tracing: super::otel::Tracing,
}

#[derive(Serialize)]
struct Admin {
    listen: &'static str,
}

#[derive(Serialize)]
struct Tls {
    roots: Vec<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    extra_ca_file: Option<String>,
}

#[derive(Serialize)]
struct Limits {
    drain_timeout: String,
}

/// Providers in AWF port order (a map in the YAML).
struct Providers(Vec<(&'static str, Provider)>);

impl Serialize for Providers {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(name, p)| (name, p)))
    }
}

#[derive(Serialize)]
struct Provider {
    /// A keyless cloud preset on the OpenAI port (`AWF_AUTH_TYPE=github-oidc`).
    #[serde(skip_serializing_if = "Option::is_none")]
    preset: Option<&'static str>,
    listen: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    region: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    api_key: Option<String>,
    /// `aws:`, `google:` or `azure:` (docs/cloud.md).
    #[serde(flatten)]
    cloud: std::collections::BTreeMap<&'static str, serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    upstream: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    auth: Option<Auth>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rate_limit: Option<RateLimit>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    redact_upstream_host: bool,
}

#[derive(Serialize)]
struct Auth {
    header: String,
    prefix: &'static str,
}

#[derive(Serialize, Clone, Copy)]
struct RateLimit {
    requests_per_minute: u64,
    requests_per_hour: u64,
    /// Bytes, as an integer (the Node sidecar's unit).
    bytes_per_minute: u64,
}

/// Renders the config from the environment (`lookup` stands for it). `Err` lists every
/// variable that cannot be used, without its value's credentials.
pub fn render_config(lookup: &dyn Fn(&str) -> Option<String>) -> Result<Rendered, String> {
    let var = |name: &str| {
        lookup(name)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    let mut warnings = Vec::new();
    let mut errors = Vec::new();

    let upstream_proxy = ["HTTPS_PROXY", "HTTP_PROXY"]
        .into_iter()
        .find_map(|name| var(name).map(|url| (name, url)))
        .and_then(|(name, url)| match ProxyTarget::parse(&url) {
            // Credentials are secrets: leave them in the environment, which the proxy reads at
            // run time when the config names no upstream_proxy, instead of printing them.
            Ok(target) if target.authorization.is_some() => {
                warnings.push(format!(
                    "{name} carries credentials: upstream_proxy is left out of the config and the proxy reads {name} from its environment at run time"
                ));
                None
            }
            Ok(_) => Some(url),
            Err(why) => {
                errors.push(format!("{name}: {why}"));
                None
            }
        });

    let rate_limit = rate_limit(&var, &mut warnings);
    let drain_ms = positive(
        "AWF_API_PROXY_SHUTDOWN_TIMEOUT_MS",
        DEFAULT_SHUTDOWN_TIMEOUT_MS,
        &var,
        &mut warnings,
    );

    // Copilot BYOK on Azure (COPILOT_PROVIDER_TYPE=azure): as in the Node sidecar, the OpenAI
    // port serves the BYOK resource with the `api-key` header (docs/awf.md).
    let byok = super::oidc::azure_byok(&var);
    let openai_var = |name: &str| match (name, &byok) {
        ("OPENAI_API_TARGET", Some((host, _))) => var(name).or_else(|| Some(host.clone())),
        ("OPENAI_API_BASE_PATH", Some((_, base))) if !base.is_empty() => {
            var(name).or_else(|| Some(base.clone()))
        }
        _ => var(name),
    };
    let mut providers = Vec::with_capacity(AWF_PROVIDERS.len());
    for awf in &AWF_PROVIDERS {
        let lookup: &dyn Fn(&str) -> Option<String> = match awf.preset {
            "openai" => &openai_var,
            _ => &var,
        };
        match provider(awf, lookup, rate_limit, &mut warnings) {
            Ok(p) => providers.push((awf.preset, p)),
            Err(mut e) => errors.append(&mut e),
        }
    }
    if let Some((_, openai)) = providers.iter_mut().find(|(name, _)| *name == "openai") {
        if var("COPILOT_PROVIDER_TYPE").is_some_and(|t| t.eq_ignore_ascii_case("azure")) {
            match &openai.upstream {
                Some(_) => {
                    openai.preset = Some("azure-openai");
                    if var("OPENAI_API_KEY").is_none() {
                        openai.api_key = Some("env:COPILOT_PROVIDER_API_KEY".into());
                    }
                }
                None => errors.push(
                    "COPILOT_PROVIDER_TYPE=azure: set COPILOT_PROVIDER_BASE_URL (or OPENAI_API_TARGET) to the Azure resource, e.g. https://my-resource.openai.azure.com/openai/v1".into(),
                ),
            }
        }
    }

    if let Some((_, openai)) = providers.iter_mut().find(|(name, _)| *name == "openai") {
        match super::oidc::openai_port(&var, openai.upstream.as_deref(), &mut warnings) {
            None => {}
            Some(Ok(cloud)) => {
                // Bedrock and Vertex take their host from the preset and region, unless a
                // target is named: a base path alone must not keep api.openai.com.
                if cloud.preset != "azure-openai" && var("OPENAI_API_TARGET").is_none() {
                    openai.upstream = None;
                }
                openai.preset = Some(cloud.preset);
                openai.region = cloud.region;
                openai.api_key = None;
                openai.auth = None;
                openai
                    .cloud
                    .insert(cloud.key, serde_json::Value::Object(cloud.block));
            }
            Some(Err(mut e)) => errors.append(&mut e),
        }
    }

    let observability =
        super::otel::tracing(&var, &mut warnings).map(|tracing| Observability { tracing });

    for (name, what) in NOT_REPRODUCED {
        let mapped = byok.is_some() && name.starts_with("COPILOT_PROVIDER_");
        if var(name).is_some() && !mapped {
            warnings.push(format!(
                "{name} is set, but llm-keyproxy does not reproduce {what}; it is ignored"
            ));
        }
    }
    if !errors.is_empty() {
        return Err(errors.join("; "));
    }

    let config = Config {
        advertised_host: AWF_SERVICE_HOST,
        admin: Admin {
            listen: ADMIN_LISTEN,
        },
        upstream_proxy,
        // The Node sidecar trusts Node's bundled Mozilla roots (= webpki), not the system
        // store, plus NODE_EXTRA_CA_CERTS when set: the same here (see docs/awf.md).
        tls: Tls {
            roots: vec!["webpki"],
            extra_ca_file: var("NODE_EXTRA_CA_CERTS"),
        },
        limits: Limits {
            drain_timeout: format!("{drain_ms}ms"),
        },
        observability,
        providers: Providers(providers),
    };
    let body = serde_yaml_ng::to_string(&config)
        .map_err(|e| format!("cannot write the rendered config: {e}"))?;
    Ok(Rendered {
        yaml: format!("{HEADER}{body}"),
        warnings,
    })
}

/// One provider: bound on its AWF port whether or not the key is set.
fn provider(
    awf: &AwfProvider,
    var: &dyn Fn(&str) -> Option<String>,
    rate_limit: Option<RateLimit>,
    warnings: &mut Vec<String>,
) -> Result<Provider, Vec<String>> {
    let preset = presets::preset(awf.preset)
        .ok_or_else(|| vec![format!("no preset named {}", awf.preset)])?;
    let (default_host, default_base) = split_upstream(preset.upstream);
    let mut errors = Vec::new();

    let sensitive = awf.sensitive_var.filter(|name| var(name).is_some());
    let target_var = format!("{}_API_TARGET", awf.env_prefix);
    let host = match var(&target_var) {
        Some(text) => match target_host(&text) {
            Ok((host, dropped)) => {
                if !dropped.is_empty() {
                    let shown = if sensitive.is_some() {
                        REDACTED_HOST
                    } else {
                        &host
                    };
                    warnings.push(format!(
                        "{target_var}: dropped the {} (only a host is used, as in the Node sidecar; \
                         put a path in {}_API_BASE_PATH); upstream host is {shown}",
                        dropped.join(", "),
                        awf.env_prefix
                    ));
                }
                host
            }
            Err(shown) => {
                let what = if shown.is_empty() {
                    "holds no host name".to_owned()
                } else {
                    format!("`{shown}` is not a host name")
                };
                errors.push(format!(
                    "{target_var}: {what}; write a host such as `api.example.com` or an https:// URL"
                ));
                String::new()
            }
        },
        None if awf.preset == "copilot" => {
            copilot_host(var).unwrap_or_else(|| default_host.to_owned())
        }
        None => default_host.to_owned(),
    };

    let base_var = format!("{}_API_BASE_PATH", awf.env_prefix);
    let base = match var(&base_var).map(|text| base_path(&text)) {
        Some(Ok(base)) => base,
        Some(Err(())) => {
            errors.push(format!(
                "{base_var}: a base path holds only URL path characters (no `?`, `#`, `\\` or spaces); \
                 write e.g. `/serving-endpoints`"
            ));
            String::new()
        }
        // The preset's own base path (openai's `/v1`) goes with its own host only.
        None if host == default_host => default_base.to_owned(),
        None => String::new(),
    };

    let header = awf
        .auth_header_var
        .and_then(|name| var(name).map(|h| (name, h)));
    let auth = match header.map(|(name, h)| auth(name, &h, preset)) {
        Some(Ok(auth)) => auth,
        Some(Err(e)) => {
            errors.push(e);
            None
        }
        None => None,
    };

    if let Some(name) = sensitive {
        // AWF sets it to the target's host; anything else is named, never printed.
        let named = var(name).and_then(|t| target_host(&t).ok()).map(|(h, _)| h);
        if named.as_deref() != Some(host.as_str()) {
            warnings.push(format!(
                "{name} does not name the {} upstream host; that host is redacted in logs all the same",
                awf.preset
            ));
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let upstream = format!("https://{host}{base}");
    Ok(Provider {
        preset: None,
        listen: format!("0.0.0.0:{}", preset.awf_port),
        region: None,
        api_key: Some(format!("env:{}", awf.key_var)),
        cloud: Default::default(),
        upstream: (upstream != preset.upstream).then_some(upstream),
        auth,
        rate_limit,
        redact_upstream_host: sensitive.is_some(),
    })
}

/// `AWF_<P>_AUTH_HEADER`: the key goes raw (no prefix) under that header, as in the Node
/// sidecar; `None` when that is what the preset does anyway.
fn auth(name: &str, header: &str, preset: &Preset) -> Result<Option<Auth>, String> {
    match HeaderName::from_bytes(header.to_ascii_lowercase().as_bytes()) {
        Ok(h) if !crate::config::is_hop_by_hop(&h) && h != HOST => {
            let same = h.as_str() == preset.auth_header && preset.auth_prefix.is_empty();
            Ok((!same).then(|| Auth {
                header: h.as_str().to_owned(),
                prefix: "",
            }))
        }
        _ => Err(format!(
            "{name}: not a header that can carry the key; name an ordinary header such as `api-key`"
        )),
    }
}

/// `https://host/base` -> (`host`, `/base`).
fn split_upstream(url: &str) -> (&str, &str) {
    let rest = url.strip_prefix("https://").unwrap_or(url);
    match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    }
}

/// The Copilot host the Node sidecar derives from `GITHUB_SERVER_URL` when no target is set:
/// GHEC tenants (`*.ghe.com`) and GHES get their own Copilot API.
fn copilot_host(var: &dyn Fn(&str) -> Option<String>) -> Option<String> {
    let (server, _) = target_host(&var("GITHUB_SERVER_URL")?).ok()?;
    if server == "github.com" {
        return None;
    }
    Some(match server.strip_suffix(".ghe.com") {
        Some(tenant) => format!("copilot-api.{tenant}.ghe.com"),
        None => "api.enterprise.githubcopilot.com".to_owned(),
    })
}

/// The Node sidecar's `normalizeApiTarget`: a host name or URL reduced to its lower-case
/// host, with the names of the parts dropped (credentials, port, path, query, fragment).
/// `Err` carries a printable form of the host part (credentials removed).
fn target_host(text: &str) -> Result<(String, Vec<&'static str>), String> {
    let text = text.trim();
    let (scheme, rest) = match text.find("://") {
        Some(i)
            if text[..i].starts_with(|c: char| c.is_ascii_alphabetic())
                && text[..i]
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c)) =>
        {
            (text[..i].to_ascii_lowercase(), &text[i + 3..])
        }
        _ => ("https".to_owned(), text),
    };
    let end = rest.find(['/', '?', '#', '\\']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);

    let mut dropped = Vec::new();
    let (authority, userinfo) = match authority.rsplit_once('@') {
        Some((_, host)) => (host, true),
        None => (authority, false),
    };
    if userinfo {
        dropped.push("credentials");
    }
    let (host, port) = if let Some(inner) = authority.strip_prefix('[') {
        match inner.split_once(']') {
            Some((ip, after)) => (&authority[..ip.len() + 2], after.strip_prefix(':')),
            None => (authority, None),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    let shown = || sanitize(host, 100).into_owned();
    if let Some(port) = port {
        if !port.bytes().all(|b| b.is_ascii_digit()) {
            return Err(shown());
        }
        let default = if scheme == "http" { "80" } else { "443" };
        if !port.is_empty() && port != default {
            dropped.push("port");
        }
    }
    let path_end = tail.find(['?', '#']).unwrap_or(tail.len());
    if !matches!(&tail[..path_end], "" | "/") {
        dropped.push("path");
    }
    if tail.contains('?') {
        dropped.push("query");
    }
    if tail.contains('#') {
        dropped.push("fragment");
    }

    let valid = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(ip) => ip.parse::<std::net::Ipv6Addr>().is_ok(),
        None => {
            !host.is_empty()
                && !host.starts_with(['.', '-'])
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
        }
    };
    if !valid {
        return Err(shown());
    }
    Ok((host.to_ascii_lowercase(), dropped))
}

/// The Node sidecar's `normalizeBasePath`: a leading `/`, no trailing `/`; `/` alone means
/// no base path (`Ok("")`).
fn base_path(text: &str) -> Result<String, ()> {
    let trimmed = text.trim().trim_end_matches('/');
    let allowed = |c: char| c.is_ascii_alphanumeric() || "-._~!$&'()*+,;=:@/%".contains(c);
    if !trimmed.chars().all(allowed) {
        return Err(());
    }
    Ok(match trimmed {
        "" => String::new(),
        p if p.starts_with('/') => p.to_owned(),
        p => format!("/{p}"),
    })
}

/// `AWF_RATE_LIMIT_*`: off unless `AWF_RATE_LIMIT_ENABLED` is exactly `true`.
fn rate_limit(
    var: &dyn Fn(&str) -> Option<String>,
    warnings: &mut Vec<String>,
) -> Option<RateLimit> {
    match var("AWF_RATE_LIMIT_ENABLED").as_deref() {
        Some("true") => {}
        None | Some("false") => return None,
        Some(_) => {
            warnings.push(
                "AWF_RATE_LIMIT_ENABLED is neither `true` nor `false`; rate limiting stays off \
                 (only `true` turns it on, as in the Node sidecar)"
                    .to_owned(),
            );
            return None;
        }
    }
    Some(RateLimit {
        requests_per_minute: positive("AWF_RATE_LIMIT_RPM", DEFAULT_RATE_LIMIT_RPM, var, warnings),
        requests_per_hour: positive("AWF_RATE_LIMIT_RPH", DEFAULT_RATE_LIMIT_RPH, var, warnings),
        bytes_per_minute: positive(
            "AWF_RATE_LIMIT_BYTES_PM",
            DEFAULT_RATE_LIMIT_BYTES_PM,
            var,
            warnings,
        ),
    })
}

/// A whole number above 0, or `default` (with a warning when the variable was set).
fn positive(
    name: &str,
    default: u64,
    var: &dyn Fn(&str) -> Option<String>,
    warnings: &mut Vec<String>,
) -> u64 {
    match var(name).map(|s| s.parse::<u64>()) {
        None => default,
        Some(Ok(n)) if n > 0 => n,
        Some(_) => {
            warnings.push(format!(
                "{name} is not a whole number above 0; using the default {default}"
            ));
            default
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(text: &str) -> (String, Vec<&'static str>) {
        target_host(text).unwrap()
    }

    #[test]
    fn targets_normalise_like_node() {
        assert_eq!(host("api.example.com"), ("api.example.com".into(), vec![]));
        assert_eq!(
            host(" https://API.Example.com/ "),
            ("api.example.com".into(), vec![])
        );
        assert_eq!(
            host("http://gw.example.com:8080/v1?x=1#f"),
            (
                "gw.example.com".into(),
                vec!["port", "path", "query", "fragment"]
            )
        );
        assert_eq!(
            host("gw.example.com:443"),
            ("gw.example.com".into(), vec![])
        );
        assert_eq!(
            host("https://u:pw@gw.example.com"),
            ("gw.example.com".into(), vec!["credentials"])
        );
        // A scheme-like substring later on is just part of the path.
        assert_eq!(
            host("gw.example.com/x?u=https://evil.example"),
            ("gw.example.com".into(), vec!["path", "query"])
        );
        assert_eq!(host("[::1]:8443"), ("[::1]".into(), vec!["port"]));
        assert!(target_host("https://").is_err());
        assert!(target_host("bad host").is_err());
        assert!(target_host("host:port").is_err());
        let err = target_host("https://user:topsecret@bad host/").unwrap_err();
        assert!(!err.contains("topsecret"), "{err}");
    }

    #[test]
    fn base_paths_normalise_like_node() {
        assert_eq!(
            base_path("/serving-endpoints"),
            Ok("/serving-endpoints".into())
        );
        assert_eq!(base_path("anthropic/"), Ok("/anthropic".into()));
        assert_eq!(
            base_path(" /openai/deployments/gpt/ "),
            Ok("/openai/deployments/gpt".into())
        );
        assert_eq!(base_path("/"), Ok(String::new()));
        assert!(base_path("/a?b").is_err());
        assert!(base_path("/a b").is_err());
    }

    #[test]
    fn copilot_host_follows_github_server_url() {
        let env =
            |url: &'static str| move |k: &str| (k == "GITHUB_SERVER_URL").then(|| url.to_owned());
        assert_eq!(copilot_host(&env("https://github.com")), None);
        assert_eq!(
            copilot_host(&env("https://acme.ghe.com")).as_deref(),
            Some("copilot-api.acme.ghe.com")
        );
        assert_eq!(
            copilot_host(&env("https://github.acme.internal")).as_deref(),
            Some("api.enterprise.githubcopilot.com")
        );
    }
}
