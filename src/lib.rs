//! llm-keyproxy: keeps LLM API keys out of an AI agent's reach.
//!
//! The agent sends plain HTTP to one local listener per provider; the proxy drops whatever
//! credentials it sent, injects the real key, and forwards over verified TLS (HTTP/2 pooled,
//! optionally through a CONNECT proxy), streaming every response frame back as it arrives.
//!
//! # Layout
//!
//! ```text
//! main.rs           args -> Plan -> bind -> run; exit codes
//! config.rs         YAML walking, units, DEFAULT_* consts, collected errors
//! plan.rs           the validated Plan (providers, limits, TLS roots, egress)
//! secret.rs         Secret and env:/file: references
//! provider.rs       presets as data
//! upstream_proxy.rs forward proxy URL, HTTPS_PROXY / NO_PROXY
//! headers.rs        pure header and path rules
//! listener.rs       bind, accept loops, per-connection drain
//! proxy.rs          the request path as named steps
//! upstream.rs       TLS + ALPN + CONNECT tunnel + pool
//! body.rs           body wrappers: counts, cap, idle timeout, end-of-request log
//! admin.rs          /live, /ready
//! error.rs          ProxyError -> status + JSON
//! logging.rs        JSON lines, sanitising
//! ```
//!
//! `run` is what `main` and the integration tests both call.
#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout))]

pub mod admin;
pub mod body;
pub mod config;
pub mod error;
pub mod headers;
pub mod listener;
pub mod logging;
pub mod plan;
pub mod provider;
pub mod proxy;
pub mod secret;
pub mod upstream;
pub mod upstream_proxy;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::listener::{bind, BindError, Drain};
use crate::plan::{Credential, Plan};
use crate::proxy::Route;

/// Process-wide state read on the request path.
#[derive(Debug, Default)]
pub struct Shared {
    /// Every listener is bound and serving.
    pub ready: AtomicBool,
    /// Shutdown has started: `/ready` says 503 and new requests get `shutting_down`.
    pub draining: AtomicBool,
}

/// Every socket of a plan, bound before anything is served.
pub struct Bound {
    pub admin: TcpListener,
    pub providers: Vec<TcpListener>,
}

impl Bound {
    /// Binds the admin listener and one listener per provider, in plan order.
    pub async fn bind(plan: &Plan) -> Result<Bound, BindError> {
        let admin = bind(plan.admin_listen, "the admin listener").await?;
        let mut providers = Vec::with_capacity(plan.providers.len());
        for p in &plan.providers {
            providers.push(bind(p.listen, &format!("provider {}", p.name)).await?);
        }
        Ok(Bound { admin, providers })
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    pub fn provider_addrs(&self) -> Vec<SocketAddr> {
        self.providers
            .iter()
            .map(|l| {
                l.local_addr()
                    .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
            })
            .collect()
    }
}

/// Serves a plan on its bound listeners until `shutdown` resolves, then drains in-flight
/// requests for up to `limits.drain_timeout`.
pub async fn run(
    plan: Plan,
    bound: Bound,
    shutdown: impl Future<Output = ()>,
    shared: Arc<Shared>,
) -> Result<(), String> {
    let tls = upstream::tls_config(&plan.tls)?;
    let drain = Drain::default();

    let addrs = bound.provider_addrs();
    let provider_count = addrs.len();
    let admin_shared = shared.clone();
    let admin_drain = Drain::default();
    tokio::spawn(listener::serve(
        bound.admin,
        move || {
            let shared = admin_shared.clone();
            hyper::service::service_fn(move |req| admin::handle(shared.clone(), req))
        },
        admin_drain.handle(),
    ));

    for ((provider, listener), addr) in plan.providers.into_iter().zip(bound.providers).zip(addrs) {
        match &provider.credential {
            Credential::Configured { .. } => tracing::info!(
                event = "provider_ready",
                provider = provider.name.as_str(),
                listen = %addr,
                upstream = %provider.origin,
                egress = provider.proxy.as_ref().map(|p| p.to_string()).unwrap_or_else(|| "direct".into()),
            ),
            Credential::Missing(why) => tracing::warn!(
                event = "provider_not_configured",
                provider = provider.name.as_str(),
                listen = %addr,
                reason = why.as_str(),
                "requests to this provider get 403 provider_not_configured",
            ),
        }
        let client = upstream::client(tls.clone(), &provider, &plan.limits);
        let route = Arc::new(Route::new(provider, client, plan.limits, shared.clone()));
        tokio::spawn(listener::serve(
            listener,
            move || {
                let route = route.clone();
                hyper::service::service_fn(move |req| proxy::handle(route.clone(), req))
            },
            drain.handle(),
        ));
    }

    shared.ready.store(true, Ordering::Relaxed);
    tracing::info!(event = "startup", version = env!("CARGO_PKG_VERSION"), admin = %plan.admin_listen, providers = provider_count);

    shutdown.await;
    shared.draining.store(true, Ordering::Relaxed);
    let limit = plan.limits.drain_timeout;
    tracing::info!(
        event = "shutdown",
        phase = "draining",
        drain_timeout_ms = limit.as_millis() as u64
    );
    let drained = listener::within(limit, drain.drain()).await.is_some();
    tracing::info!(event = "shutdown", phase = "done", drained);
    Ok(())
}
