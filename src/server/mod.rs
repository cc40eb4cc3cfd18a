//! The server: binds every listener, starts the workers and the admin listener, serves until
//! shutdown, then drains. `run` is what `main` and the integration tests both call.

pub mod admin;
pub mod admission;
pub mod listener;
pub mod workers;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::config::plan::{Credential, Plan};
use crate::policy::{access, reload};
use crate::proxy::endpoints;
use crate::proxy::Route;
use crate::server::listener::{bind, BindError, Drain};
use crate::telemetry::usage_file;
use crate::upstream::{self, pool};

/// Process-wide state read on the request path.
pub struct Shared {
    /// Every listener is bound and serving.
    pub ready: AtomicBool,
    /// Shutdown has started: `/ready` says 503 and new requests get `shutting_down`.
    pub draining: AtomicBool,
    /// The one metrics registry.
    pub metrics: Arc<crate::telemetry::metrics::Metrics>,
    /// Notified to reload keys (SIGHUP in `main`).
    pub reload: Arc<tokio::sync::Notify>,
}

impl Default for Shared {
    fn default() -> Self {
        Shared {
            ready: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            metrics: crate::telemetry::metrics::Metrics::new(),
            reload: Arc::default(),
        }
    }
}

/// Every socket of a plan, bound before anything is served.
pub struct Bound {
    pub admin: TcpListener,
    pub providers: Vec<TcpListener>,
}

impl Bound {
    /// Binds the admin listener and one listener per provider, in plan order.
    pub async fn bind(plan: &Plan) -> Result<Bound, BindError> {
        let admin = listener::bind_with_backlog(
            plan.admin_listen,
            "the admin listener",
            listener::ADMIN_BACKLOG,
        )
        .await?;
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
    mut plan: Plan,
    bound: Bound,
    shutdown: impl Future<Output = ()>,
    shared: Arc<Shared>,
) -> Result<(), String> {
    let tls = upstream::tls_config(&plan.tls)?;
    let drain = Drain::default();
    let (usage_log, usage_writer) = match &plan.observability.usage_file {
        Some(path) => {
            let dropped = shared.metrics.usage_lines_dropped.clone();
            let (log, writer) = usage_file::UsageLog::open(path, dropped)
                .map_err(|e| format!("cannot open the usage file {}: {e}", path.display()))?;
            (Some(log), Some(writer))
        }
        None => (None, None),
    };

    let addrs = bound.provider_addrs();
    let admin_addr = bound.admin_addr();
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
        "admin".to_owned(),
        // Its own bounds, not `limits:`; the oldest idle connection makes room for a probe.
        plan.admin.limits(),
        admission::Admission::evict(
            plan.admin.max_connections,
            "admin",
            shared.metrics.connections_refused("admin", "evicted"),
        ),
    ));

    let callers: Arc<Vec<access::Caller>> = Arc::new(
        std::mem::take(&mut plan.callers)
            .into_iter()
            .map(access::Caller::from)
            .collect(),
    );
    let worker_count = plan.limits.workers.unwrap_or_else(workers::default_count);
    let directory = Arc::new(endpoints::Directory::default());
    let mut routes = Vec::with_capacity(provider_count);
    let mut listening = Vec::with_capacity(provider_count);
    for ((mut provider, listener), addr) in
        plan.providers.into_iter().zip(bound.providers).zip(addrs)
    {
        provider.listen = addr;
        let listener_name = provider.name.clone();
        match &provider.credential {
            Credential::Configured { .. } => tracing::info!(
                event = "provider_ready",
                provider = provider.name.as_str(),
                listen = %addr,
                upstream = format!("https://{}{}", provider.host, provider.base_path),
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
        let metrics = shared.metrics.provider(&provider.name);
        let connector = upstream::connector(tls.clone(), &provider, &plan.limits, &metrics);
        let settings = pool::Settings::from_limits(&plan.limits);
        let group = Arc::new(pool::Group::default());
        let pools = (0..worker_count.max(1))
            .map(|_| {
                let m = metrics.pool.clone();
                pool::Pool::new(connector.clone(), &provider, settings, group.clone(), m)
            })
            .collect();
        let mut route = Route::new(provider, pools, plan.limits, shared.clone(), metrics);
        route.token_usage = plan.observability.token_usage;
        route.usage_log = usage_log.clone();
        route.directory = directory.clone();
        route.callers = callers.clone();
        route.websocket = Some(upstream::websocket_connector(
            &tls,
            &route.provider,
            &plan.limits,
        ));
        let route = Arc::new(route);
        routes.push(route.clone());
        let listener = listener
            .into_std()
            .map_err(|e| format!("cannot hand the {listener_name} listener to the workers: {e}"))?;
        listening.push(workers::Listening {
            listener,
            route,
            admission: admission::Admission::refuse(
                plan.limits.max_connections,
                shared
                    .metrics
                    .connections_refused(&listener_name, "overloaded"),
            ),
            name: listener_name,
        });
    }
    let workers =
        workers::Workers::start(worker_count, &listening, || drain.handle(), plan.limits)?;
    drop(listening);

    let squid = routes
        .iter()
        .find_map(|r| r.provider.proxy.as_ref().map(|p| p.to_string()));
    directory.fill(&routes, squid);
    let (stop_reload, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(reload::watch(
        plan.source.clone(),
        routes,
        shared.reload.clone(),
        reload::DEFAULT_SECRET_POLL,
        stop_rx,
    ));
    shared.ready.store(true, Ordering::Relaxed);
    tracing::info!(event = "startup", version = env!("CARGO_PKG_VERSION"), admin = %admin_addr, providers = provider_count);

    shutdown.await;
    shared.draining.store(true, Ordering::Relaxed);
    let _ = stop_reload.send(true);
    let limit = plan.limits.drain_timeout;
    tracing::info!(
        event = "shutdown",
        phase = "draining",
        drain_timeout_ms = limit.as_millis() as u64
    );
    let drained = listener::within(limit, drain.drain()).await.is_some();
    // Streams still open past the drain timeout end with their worker's runtime.
    let _ = tokio::task::spawn_blocking(move || workers.stop()).await;
    drop(usage_log);
    if let Some(writer) = usage_writer {
        // Streams still open after the drain timeout hold senders; do not wait for them.
        let _ = listener::within(std::time::Duration::from_secs(1), writer.close()).await;
    }
    tracing::info!(event = "shutdown", phase = "done", drained);
    Ok(())
}
