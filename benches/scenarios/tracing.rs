//! The cost of tracing (docs/observability.md "Traces"): proxy CPU per request at 64
//! connections with every request's span exported to a local OTLP receiver (which reads and
//! discards them), next to the same proxy with tracing off, in the same rounds.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::{rotated_pair, STATUS_PATH};
use crate::support::*;

/// A local OTLP/HTTP receiver: reads each export whole, answers 200, counts them.
async fn otlp_sink() -> (
    std::net::SocketAddr,
    Arc<AtomicU64>,
    tokio::task::JoinHandle<()>,
) {
    use http_body_util::BodyExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let exports = Arc::new(AtomicU64::new(0));
    let count = exports.clone();
    let task = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let count = count.clone();
            tokio::spawn(async move {
                let svc =
                    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let count = count.clone();
                        async move {
                            let _ = req.into_body().collect().await;
                            count.fetch_add(1, Ordering::Relaxed);
                            let empty = http_body_util::Full::new(bytes::Bytes::new());
                            Ok::<_, std::convert::Infallible>(http::Response::new(empty))
                        }
                    });
                let io = hyper_util::rt::TokioIo::new(tcp);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, svc)
                    .await;
            });
        }
    });
    (addr, exports, task)
}

/// Proxy CPU per request and requests/s at 64 connections, tracing on and off.
pub async fn cost(r: &mut Report, env: &Env, scale: &Scale) {
    let (sink, exports, task) = otlp_sink().await;
    let tracing =
        format!("observability: {{tracing: {{endpoint: 'http://{sink}', schedule_delay: 200ms}}}}");
    let traced = ProxyProcess::spawn(&env.dir, &env.upstream, &tracing, "traced");
    let on = Target::keyproxy("llm-keyproxy, tracing on", &traced);
    let off = env.target(KEYPROXY);
    let mut rounds = super::Rounds::default();
    let mut errors = 0;
    for round in 0..scale.rounds {
        for t in rotated_pair(off, &on, round) {
            let cpu0 = t.cpu_secs();
            let tp = closed_loop(&t.client, &t.url(STATUS_PATH), 64, scale.tput_secs).await;
            rounds.push(&t.name, "rps", tp.rps());
            if let (Some(a), Some(b)) = (cpu0, t.cpu_secs()) {
                rounds.push(&t.name, "cpu", (b - a) / tp.count.max(1) as f64 * 1e6);
            }
            errors += tp.errors;
        }
    }
    r.check(
        errors == 0,
        format!("tracing cost: {errors} requests failed"),
    );
    let figure = |t: &Target, what| rounds.median(&t.name, what).unwrap_or(f64::NAN);
    let (cpu_on, cpu_off) = (figure(&on, "cpu"), figure(off, "cpu"));
    r.kp(
        "tracing_cpu_us_per_req",
        "tracing on (every span exported): proxy CPU per request at 64 connections (us)",
        cpu_on,
        Some(("tracing off", cpu_off)),
        1,
    );
    r.kp(
        "tracing_rps_64",
        "tracing on (every span exported): requests/s at 64 connections",
        figure(&on, "rps"),
        Some(("tracing off", figure(off, "rps"))),
        0,
    );
    let metrics = http_get(traced.admin, "/metrics").unwrap_or_default();
    let value = |name: &str| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    let (exported, dropped) = (
        value("keyproxy_trace_spans_exported_total"),
        value("keyproxy_trace_spans_dropped_total"),
    );
    r.note(format!(
        "tracing on: {exported} spans exported in {} OTLP requests, {dropped} dropped; CPU {:+.1}% per request",
        exports.load(Ordering::Relaxed),
        (cpu_on / cpu_off - 1.0) * 100.0
    ));
    r.check(
        exported > 0.0,
        "tracing on: no span reached the receiver".to_string(),
    );
    task.abort();
}
