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

use crate::config::plan::{Credential, Plan, ProviderPlan};
use crate::policy::{access, reload};
use crate::proxy::endpoints::Directory;
use crate::proxy::{Common, Route};
use crate::server::listener::{bind, BindError, Drain};
use crate::telemetry::usage_file;
use crate::upstream;

/// Process-wide state read on the request path.
pub struct Shared {
    /// Every listener is bound and serving.
    pub ready: AtomicBool,
    /// Shutdown has started: `/ready` says 503 and new requests get `shutting_down`.
    pub draining: Arc<AtomicBool>,
    /// The one metrics registry.
    pub metrics: Arc<crate::telemetry::metrics::Metrics>,
    /// Notified to reload keys (SIGHUP in `main`).
    pub reload: Arc<tokio::sync::Notify>,
    /// The credential slots of providers with a cloud source, for `/ready`.
    pub cloud_credentials: std::sync::OnceLock<Vec<(String, Arc<crate::policy::reload::KeySlot>)>>,
    /// The shared store (`shared_state`), for `/ready`.
    pub shared_state: std::sync::OnceLock<Arc<crate::shared::Store>>,
}

impl Default for Shared {
    fn default() -> Self {
        Shared {
            ready: AtomicBool::new(false),
            draining: Arc::default(),
            metrics: crate::telemetry::metrics::Metrics::new(),
            reload: Arc::default(),
            cloud_credentials: std::sync::OnceLock::new(),
            shared_state: std::sync::OnceLock::new(),
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
    let (usage_log, usage_writer) = open_usage_file(&plan, &shared)?;
    let worker_count = plan.limits.workers.unwrap_or_else(workers::default_count);
    let store = match &plan.shared_state {
        Some(s) => Some(crate::shared::Store::new(
            s,
            &plan.tls,
            worker_count,
            &shared.metrics,
        )?),
        None => None,
    };
    if let Some(store) = &store {
        let _ = shared.shared_state.set(store.clone());
    }
    let admin_addr = bound.admin_addr();
    let addrs = bound.provider_addrs();
    // Never drained (it answers 503 on /ready while the providers drain); lives until the end.
    let _admin = serve_admin(bound.admin, &plan, &shared);

    let (tracer, export_thread) = match &plan.observability.tracing {
        Some(t) => {
            let dial = t.proxy.clone().map(collector_dial);
            let (tracer, thread) =
                crate::telemetry::otel::Tracer::start(t, &tls, &shared.metrics, dial)
                    .map_err(|e| format!("cannot start the trace export thread: {e}"))?;
            (Some(Arc::new(tracer)), Some(thread))
        }
        None => (None, None),
    };
    let common = Common {
        tls,
        limits: plan.limits,
        workers: worker_count,
        token_usage: plan.observability.token_usage,
        usage_log,
        callers: Arc::new(
            std::mem::take(&mut plan.callers)
                .into_iter()
                .map(access::Caller::from)
                .collect(),
        ),
        registry: shared.metrics.clone(),
        draining: shared.draining.clone(),
        shared: store.clone(),
        tracer,
    };
    let providers = std::mem::take(&mut plan.providers);
    for p in providers.iter().filter(|p| p.redact_upstream_host) {
        crate::telemetry::logging::redact_in_logs(&p.host);
    }
    let provider_count = providers.len();
    let advertised_host = plan.advertised_host.as_deref();
    let listening = listening(
        providers,
        bound.providers,
        addrs,
        advertised_host,
        &common,
        &shared,
    )?;
    let routes: Vec<Arc<Route>> = listening.iter().map(|l| l.route.clone()).collect();
    let drain = Drain::default();
    let workers =
        workers::Workers::start(common.workers, &listening, || drain.handle(), plan.limits)?;
    drop(listening);
    let (stop_reload, stop_rx) = tokio::sync::watch::channel(false);
    let stop_rx_for_cloud = stop_rx.clone();
    tokio::spawn(reload::watch(
        plan.source.clone(),
        routes.iter().filter_map(|r| r.keyed()).collect(),
        shared.reload.clone(),
        reload::DEFAULT_SECRET_POLL,
        stop_rx,
    ));
    let cloud: Vec<_> = routes
        .iter()
        .filter(|r| r.provider.cloud.is_some())
        .map(|r| (r.provider.name.clone(), r.key.clone()))
        .collect();
    let _ = shared.cloud_credentials.set(cloud);
    for route in &routes {
        let refresher = crate::cloud::refresh::Refresher::new(
            &route.provider,
            route.key.clone(),
            &common.tls,
            plan.limits.connect_timeout,
            shared.metrics.clone(),
        );
        if let Some(r) = refresher {
            tokio::spawn(r.run(stop_rx_for_cloud.clone()));
        }
    }
    if let Some(store) = store {
        let watched = store.watched(
            routes.iter().map(|r| {
                let plan = &r.provider;
                (
                    plan.name.as_str(),
                    plan.rate_limit.as_ref(),
                    plan.budget.as_ref(),
                )
            }),
            common
                .callers
                .iter()
                .filter_map(|c| Some((c.name.as_str(), &c.budget.as_ref()?.plan))),
        );
        tokio::spawn(store.monitor(watched, stop_rx_for_cloud.clone()));
    }
    drop(routes);
    shared.ready.store(true, Ordering::Relaxed);
    tracing::info!(event = "startup", version = env!("CARGO_PKG_VERSION"), admin = %admin_addr, providers = provider_count);

    shutdown.await;
    shared.draining.store(true, Ordering::Relaxed);
    let _ = stop_reload.send(true);
    let drained = drain_and_stop(drain, workers, plan.limits.drain_timeout).await;
    drop(common);
    if let Some(writer) = usage_writer {
        // Streams still open after the drain timeout hold senders; do not wait for them.
        let _ = listener::within(std::time::Duration::from_secs(1), writer.close()).await;
    }
    if let Some(thread) = export_thread {
        // The last spans are sent once every route (and so the tracer) is gone; streams still
        // open after the drain timeout keep theirs, and nothing waits for them.
        thread.join(std::time::Duration::from_secs(2)).await;
    }
    tracing::info!(event = "shutdown", phase = "done", drained);
    Ok(())
}

/// The trace exporter's way to its collector through the forward proxy (CONNECT).
fn collector_dial(proxy: crate::config::egress::ProxyTarget) -> crate::telemetry::otel::Dial {
    let proxy = Arc::new(proxy);
    Arc::new(move |target: String| {
        let proxy = proxy.clone();
        Box::pin(async move {
            upstream::tunnel(&proxy, &target)
                .await
                .map_err(|e| crate::telemetry::logging::redact_sensitive(e.to_string()))
        })
    })
}

/// The usage file's handle and its writer, when `observability.usage_file` is set.
fn open_usage_file(
    plan: &Plan,
    shared: &Shared,
) -> Result<
    (
        Option<usage_file::UsageLog>,
        Option<usage_file::UsageWriter>,
    ),
    String,
> {
    let Some(path) = &plan.observability.usage_file else {
        return Ok((None, None));
    };
    let dropped = shared.metrics.usage_lines_dropped.clone();
    let (log, writer) = usage_file::UsageLog::open(path, dropped)
        .map_err(|e| format!("cannot open the usage file {}: {e}", path.display()))?;
    Ok((Some(log), Some(writer)))
}

/// The admin listener, on the main runtime with bounds of its own (not `limits:`): the
/// oldest idle connection makes room for a probe. It serves while the returned drain lives.
fn serve_admin(listener: TcpListener, plan: &Plan, shared: &Arc<Shared>) -> Drain {
    let admin_shared = shared.clone();
    let drain = Drain::default();
    tokio::spawn(listener::serve(
        listener,
        move || {
            let shared = admin_shared.clone();
            hyper::service::service_fn(move |req| admin::handle(shared.clone(), req))
        },
        drain.handle(),
        "admin".to_owned(),
        plan.admin.limits(),
        admission::Admission::evict(
            plan.admin.max_connections,
            "admin",
            shared.metrics.connections_refused("admin", "evicted"),
        ),
    ));
    drain
}

/// One route per provider, and its listener as the workers will accept on it; every listener
/// also gets the directory of all routes (AWF `/health` and `/reflect`).
fn listening(
    providers: Vec<ProviderPlan>,
    listeners: Vec<TcpListener>,
    addrs: Vec<SocketAddr>,
    advertised_host: Option<&str>,
    common: &Common,
    shared: &Shared,
) -> Result<Vec<workers::Listening>, String> {
    let mut routes = Vec::with_capacity(providers.len());
    for (mut provider, addr) in providers.into_iter().zip(addrs) {
        provider.listen = addr;
        log_provider(&provider);
        routes.push(Arc::new(Route::new(provider, common)));
    }
    let directory = Arc::new(Directory::new(routes.clone(), advertised_host));
    let mut listening = Vec::with_capacity(routes.len());
    for (route, listener) in routes.into_iter().zip(listeners) {
        let name = route.provider.name.clone();
        let listener = listener
            .into_std()
            .map_err(|e| format!("cannot hand the {name} listener to the workers: {e}"))?;
        let refused = shared.metrics.connections_refused(&name, "overloaded");
        listening.push(workers::Listening {
            listener,
            route,
            directory: directory.clone(),
            admission: admission::Admission::refuse(common.limits.max_connections, refused),
            name,
        });
    }
    Ok(listening)
}

/// `provider_ready` or `provider_not_configured`, once at start.
fn log_provider(provider: &ProviderPlan) {
    let addr = provider.listen;
    // A cloud source that can start is ready: its first credential is on its way.
    let starting = provider
        .cloud
        .as_ref()
        .is_some_and(|c| crate::config::cloud::web_identity_missing_of(c).is_none());
    match &provider.credential {
        Credential::Missing(why) if !starting => tracing::warn!(
            event = "provider_not_configured",
            provider = provider.name.as_str(),
            listen = %addr,
            reason = why.as_str(),
            "requests to this provider get 403 provider_not_configured",
        ),
        _ => tracing::info!(
            event = "provider_ready",
            provider = provider.name.as_str(),
            listen = %addr,
            upstream = provider.shown_upstream(),
            egress = provider.proxy.as_ref().map(|p| p.to_string()).unwrap_or_else(|| "direct".into()),
            credential = provider.cloud.as_ref().map_or("key", |c| c.kind()),
        ),
    }
}

/// Lets in-flight requests finish for up to `limit`, then ends the workers (streams still
/// open end with their worker's runtime). True when everything finished in time.
async fn drain_and_stop(
    drain: Drain,
    workers: workers::Workers,
    limit: std::time::Duration,
) -> bool {
    tracing::info!(
        event = "shutdown",
        phase = "draining",
        drain_timeout_ms = limit.as_millis() as u64
    );
    let drained = listener::within(limit, drain.drain()).await.is_some();
    let _ = tokio::task::spawn_blocking(move || workers.stop()).await;
    drained
}
