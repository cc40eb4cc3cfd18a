//! One `providers.NAME` entry walked into a `ProviderPlan`: preset, upstream, listen address,
//! credential reference, auth header, egress, policy; every error with its YAML path.

use super::*;
use crate::config::cloud::{self, CloudPlan};

pub(super) fn provider(
    name: &str,
    node: &Node,
    lookup: &dyn Fn(&str) -> Option<String>,
    errors: &mut Errors,
) -> Option<ProviderPlan> {
    if !config::valid_name(name) {
        errors.push(
            &node.path,
            "provider names use a-z, 0-9, `-` and `_` (at most 64)",
        );
    }
    let map = node.map(PROVIDER_KEYS, errors)?;
    let preset = preset_of(name, &map, errors);
    let region = map.get("region").and_then(|n| cloud::region(&n, errors));
    let listen = listen(&map, preset, &node.path, errors);
    let upstream = upstream(&map, preset, region.as_deref(), &node.path, errors);
    let upstream_address = upstream_address(&map, errors);
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
    let redact_upstream_host = map
        .get("redact_upstream_host")
        .and_then(|n| n.boolean(errors))
        .unwrap_or(false);
    let (auth_header, auth_prefix) = auth?;
    let (key_ref, credential, cloud) =
        match source(&map, preset, region.as_deref(), lookup, &node.path, errors)? {
            Source::Key(key_ref) => {
                let c = credential(
                    &key_ref,
                    auth_header,
                    &auth_prefix,
                    lookup,
                    &node.path,
                    errors,
                )?;
                (Some(key_ref), c, None)
            }
            Source::Cloud(key_ref, c, plan) => (key_ref, c, plan.map(|p| *p)),
        };
    let (origin, host, port, base_path) = upstream?;
    let mut extras = preset.map(|p| p.extras).unwrap_or_default();
    // `x-initiator` only towards GitHub Copilot's own hosts, as the Node sidecar (§4).
    extras.copilot_initiator &= presets::is_copilot_host(&host);
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
        region,
        cloud,
        extras,
        proxy: None,
        proxy_source: "none",
        rate_limit,
        allow,
        models,
        budget,
        redact_upstream_host,
    })
}

/// The preset: the provider's own name, or `preset:`.
fn preset_of(
    name: &str,
    map: &config::Map,
    errors: &mut Errors,
) -> Option<&'static presets::Preset> {
    let Some(n) = map.get("preset") else {
        return presets::preset(name);
    };
    let p = n.string(errors)?;
    let preset = presets::preset(p);
    if preset.is_none() {
        let names: Vec<_> = presets::PRESETS.iter().map(|p| p.name).collect();
        errors.push(
            &n.path,
            format!("unknown preset `{p}`; presets are {}", names.join(", ")),
        );
    }
    preset
}

/// `listen:`, or the preset's AWF port on loopback.
fn listen(
    map: &config::Map,
    preset: Option<&presets::Preset>,
    path: &str,
    errors: &mut Errors,
) -> Option<SocketAddr> {
    match map.get("listen") {
        Some(n) => n
            .string(errors)
            .and_then(|s| parse_addr(s, &n.path, errors)),
        None => match preset.filter(|p| p.awf_port != 0) {
            Some(p) => Some(SocketAddr::from(([127, 0, 0, 1], p.awf_port))),
            None => {
                errors.push(
                    &config::join(path, "listen"),
                    "missing; add e.g. `listen: 127.0.0.1:10010`",
                );
                None
            }
        },
    }
}

/// `upstream:` (or the preset's): origin, host, port and base path.
fn upstream(
    map: &config::Map,
    preset: Option<&presets::Preset>,
    region: Option<&str>,
    path: &str,
    errors: &mut Errors,
) -> Option<(Uri, String, u16, String)> {
    let (text, at) = match map.get("upstream") {
        Some(n) => (n.string(errors)?.to_owned(), n.path.clone()),
        None => match preset {
            Some(p) if p.upstream.contains("{region}") => {
                let Some(region) = region else {
                    errors.push(
                        &config::join(path, "region"),
                        format!(
                            "missing; the {} preset needs e.g. `region: us-east-1`",
                            p.name
                        ),
                    );
                    return None;
                };
                (p.upstream.replace("{region}", region), String::new())
            }
            // Vertex AI's regional endpoints: `REGION-aiplatform.googleapis.com`.
            Some(p) if p.name == "vertex" && region.is_some_and(|r| r != "global") => (
                format!(
                    "https://{}-aiplatform.googleapis.com",
                    region.unwrap_or_default()
                ),
                String::new(),
            ),
            Some(p) if p.upstream.is_empty() => {
                errors.push(
                    &config::join(path, "upstream"),
                    format!("missing; the {} preset needs the resource's URL, e.g. `upstream: https://myresource.openai.azure.com`", p.name),
                );
                return None;
            }
            Some(p) => (p.upstream.to_owned(), String::new()),
            None => {
                errors.push(
                    &config::join(path, "upstream"),
                    "missing; custom providers need e.g. `upstream: https://llm.example.com/v1`",
                );
                return None;
            }
        },
    };
    parse_upstream(&text).map_err(|m| errors.push(&at, m)).ok()
}

/// `upstream_address:` HOST:PORT to dial instead of resolving the upstream's host.
fn upstream_address(map: &config::Map, errors: &mut Errors) -> Option<String> {
    let n = map.get("upstream_address")?;
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
}

/// Where a provider's credential comes from.
enum Source {
    /// `api_key:` (every preset but bedrock).
    Key(SecretRef),
    /// `aws:`, `google:` or `azure:`: the credential now (static AWS keys, or not yet there)
    /// and what refreshes it; the reference a reload watches, if any.
    Cloud(Option<SecretRef>, Credential, Option<Box<CloudPlan>>),
}

/// The credential source: `api_key`, or the cloud block the preset allows.
fn source(
    map: &config::Map,
    preset: Option<&presets::Preset>,
    region: Option<&str>,
    lookup: &dyn Fn(&str) -> Option<String>,
    path: &str,
    errors: &mut Errors,
) -> Option<Source> {
    let kind = preset.map_or("", |p| p.name);
    // Each cloud block belongs to one preset.
    for (block, owner) in [
        ("aws", "bedrock"),
        ("google", "vertex"),
        ("azure", "azure-openai"),
    ] {
        if let Some(n) = map.get(block).filter(|_| kind != owner) {
            errors.push(
                &n.path,
                format!("only for the {owner} preset (`preset: {owner}`)"),
            );
        }
    }
    if let Some(n) = map
        .get("region")
        .filter(|_| kind != "bedrock" && kind != "vertex")
    {
        errors.push(&n.path, "only for the bedrock and vertex presets");
    }
    let cloud = match kind {
        "bedrock" => Some((
            "aws",
            "give `aws:` with static keys or a role to assume (docs/cloud.md)",
        )),
        "vertex" => map.get("google").map(|_| ("google", "")),
        "azure-openai" => map.get("azure").map(|_| ("azure", "")),
        _ => None,
    };
    let Some((block, hint)) = cloud else {
        return key_ref(map, path, errors).map(Source::Key);
    };
    if let Some(n) = map.get("api_key") {
        errors.push(
            &n.path,
            format!("not with `{block}:`: the {kind} preset takes one credential source"),
        );
    }
    let Some(node) = map.get(block) else {
        errors.push(&config::join(path, block), format!("missing; {hint}"));
        return None;
    };
    match block {
        "aws" => {
            let (c, plan) = cloud::aws(&node, region.unwrap_or_default(), lookup, errors)?;
            let watched = node
                .map(&[], &mut Errors::default())
                .and_then(|m| m.get("secret_access_key"))
                .and_then(|n| SecretRef::parse(n.string(&mut Errors::default())?).ok())
                .filter(|_| plan.is_none());
            Some(Source::Cloud(watched, c, plan.map(Box::new)))
        }
        "google" => cloud::google(&node, lookup, errors)
            .map(|(c, p)| Source::Cloud(None, c, Some(Box::new(p)))),
        _ => cloud::azure(&node, lookup, errors)
            .map(|(c, p)| Source::Cloud(None, c, Some(Box::new(p)))),
    }
}

/// `api_key:` as a reference (`env:` / `file:`), never a literal.
fn key_ref(map: &config::Map, path: &str, errors: &mut Errors) -> Option<SecretRef> {
    match map.get("api_key") {
        Some(n) => n.string(errors).and_then(|s| {
            SecretRef::parse(s)
                .map_err(|m| errors.push(&n.path, m))
                .ok()
        }),
        None => {
            errors.push(
                &config::join(path, "api_key"),
                "missing; add e.g. `api_key: env:OPENAI_API_KEY`",
            );
            None
        }
    }
}

/// The header to inject, from the key the reference resolves to now (missing: the provider
/// is bound but not configured).
fn credential(
    key_ref: &SecretRef,
    header: HeaderName,
    prefix: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    path: &str,
    errors: &mut Errors,
) -> Option<Credential> {
    match key_ref.resolve(lookup) {
        Ok(secret) => {
            let text = format!("{prefix}{}", secret.expose());
            match HeaderValue::from_str(&text) {
                Ok(mut value) => {
                    value.set_sensitive(true);
                    Some(Credential::Configured {
                        name: header,
                        value,
                    })
                }
                Err(_) => {
                    errors.push(
                        &config::join(path, "api_key"),
                        format!("the key read from {key_ref} has characters not allowed in an HTTP header"),
                    );
                    None
                }
            }
        }
        Err(Unresolved::Missing(why)) => Some(Credential::Missing(why)),
        Err(Unresolved::Unreadable(why)) => {
            errors.push(&config::join(path, "api_key"), why);
            None
        }
    }
}

pub(super) fn auth(
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
pub(super) fn parse_upstream(text: &str) -> Result<(Uri, String, u16, String), String> {
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

/// Decides each provider's forward proxy: the file's `upstream_proxy` for all, else the
/// environment (`HTTPS_PROXY` ... minus `NO_PROXY`) per upstream host.
pub(super) fn choose_egress(
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
