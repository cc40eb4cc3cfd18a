//! The top-level sections other than `providers`: `tls`, `admin`, `observability`, `limits`,
//! and a provider's `rate_limit`; every error with its YAML path.

use super::*;

pub(super) fn tls_plan(node: &Node, errors: &mut Errors) -> Option<TlsPlan> {
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

pub(super) fn rate_limit(node: &Node, errors: &mut Errors) -> Option<RateLimitPlan> {
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
pub(super) fn admin_bounds(admin: &config::Map, errors: &mut Errors) -> Option<AdminPlan> {
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

pub(super) fn observability(node: &Node, errors: &mut Errors) -> Option<Observability> {
    // `tracing` is read with the environment (otel.rs).
    let map = node.map(&["token_usage", "usage_file", "tracing"], errors)?;
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

pub(super) fn limits(node: &Node, errors: &mut Errors) -> Option<Limits> {
    let keys = [
        "max_request_body",
        "connect_timeout",
        "request_timeout",
        "stream_idle_timeout",
        "client_write_timeout",
        "websocket_idle_timeout",
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
    let durations: [(&str, &mut Duration); 12] = [
        ("connect_timeout", &mut l.connect_timeout),
        ("request_timeout", &mut l.request_timeout),
        ("stream_idle_timeout", &mut l.stream_idle_timeout),
        ("client_write_timeout", &mut l.client_write_timeout),
        ("websocket_idle_timeout", &mut l.websocket_idle_timeout),
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
