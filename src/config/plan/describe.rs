//! `--check`: the resolved plan as text, secrets redacted, one line per concern.

use super::*;

impl Plan {
    /// The resolved plan for `--check`, with secrets redacted.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        self.describe_process(&mut out);
        self.describe_limits(&mut out);
        if let Some(host) = &self.advertised_host {
            let _ = writeln!(out, "advertised_host: {host} (/reflect base URLs)");
        }
        if let Some(s) = &self.shared_state {
            let _ = writeln!(
                out,
                "shared_state: {} ({}), key_prefix {}, timeout {}, on_unavailable {}",
                s.redis_ref,
                if s.tls { "rediss" } else { "redis" },
                s.key_prefix,
                show_duration(s.timeout),
                s.on_unavailable.as_str(),
            );
        }
        if !self.callers.is_empty() {
            let names: Vec<&str> = self.callers.iter().map(|c| c.name.as_str()).collect();
            let _ = writeln!(out, "callers (token required): {}", names.join(", "));
        }
        for p in &self.providers {
            describe_provider(&mut out, p);
        }
        out
    }

    /// Admin listener, egress, TLS roots, observability.
    fn describe_process(&self, out: &mut String) {
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
        // Header names only, and the URL without any user info: never a collector's key.
        let tracing =
            match &self.observability.tracing {
                None => "off".to_owned(),
                Some(t) => {
                    format!(
                "{:?} to {}://{}{}, sample_ratio {}, propagate_upstream {}, headers [{}]{}{}",
                t.protocol,
                t.endpoint.scheme_str().unwrap_or("http"),
                t.endpoint.host().unwrap_or_default(),
                t.endpoint.port().map(|p| format!(":{p}")).unwrap_or_default()
                    + t.endpoint.path(),
                t.sample_ratio,
                t.propagate_upstream,
                t.headers.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(", "),
                t.parent.as_deref().map(|p| format!(", parent {p}")).unwrap_or_default(),
                t.proxy.as_ref().map(|p| format!(", through {p}")).unwrap_or_default(),
            )
                }
            };
        let _ = writeln!(out, "tracing: {tracing}");
    }

    /// `limits:`: request, connection, upstream pool and worker bounds.
    fn describe_limits(&self, out: &mut String) {
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
            "connections: header_read_timeout {}, keep_alive_timeout {}, max_header_bytes {}, max_headers {}, max_connections {} per listener (WebSocket tunnels included), max_concurrent_streams {}",
            show_duration(l.header_read_timeout),
            show_duration(l.keep_alive_timeout),
            show_size(l.max_header_bytes),
            l.max_headers,
            l.max_connections,
            l.max_concurrent_streams,
        );
        let _ = writeln!(
            out,
            "client bounds: client_write_timeout {} (a client that accepts nothing), websocket_idle_timeout {}",
            show_duration(l.client_write_timeout),
            show_duration(l.websocket_idle_timeout),
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
    }
}

/// One provider: where it listens and forwards, its credential (redacted) and its policy.
fn describe_provider(out: &mut String, p: &ProviderPlan) {
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
    let sensitive = if p.redact_upstream_host {
        " (redact_upstream_host: the host is never shown)"
    } else {
        ""
    };
    let _ = writeln!(
        out,
        "provider {}{preset}: http://{} -> {}{dial}{via}{sensitive}",
        p.name,
        p.listen,
        p.shown_upstream(),
    );
    let from = p
        .key_ref
        .as_ref()
        .map_or(String::new(), |r| format!(" from {r}"));
    let cred = match (&p.cloud, &p.credential) {
        (Some(cloud), c) => {
            let now = match c {
                Credential::Missing(why)
                    if crate::config::cloud::web_identity_missing_of(cloud).is_some() =>
                {
                    format!("NOT CONFIGURED ({why}): requests get 403 provider_not_configured")
                }
                _ => "fetched at start, refreshed before expiry".to_owned(),
            };
            format!(
                "{} via {}: {now}",
                cloud.kind(),
                cloud.endpoints().join(", ")
            )
        }
        (None, Credential::Configured { name, .. }) => {
            format!("{name}: {}{from}", crate::config::secret::REDACTED)
        }
        (None, Credential::Aws(_)) => {
            format!(
                "AWS SigV4 (region {}): static keys {}{from}",
                p.region.as_deref().unwrap_or("?"),
                crate::config::secret::REDACTED
            )
        }
        (None, Credential::Missing(why)) => {
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
