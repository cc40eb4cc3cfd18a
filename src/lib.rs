//! llm-keyproxy: keeps LLM API keys out of an AI agent's reach.
//!
//! The agent sends plain HTTP to one local listener per provider; the proxy drops whatever
//! credentials it sent, injects the real key, and forwards over verified TLS (HTTP/2 pooled,
//! optionally through a CONNECT proxy), streaming every response frame back as it arrives.
//!
//! # Layout
//!
//! Folders by concern; each imports only folders below it in this list (`config` nothing at
//! run time), so the tree is the architecture. docs/design.md says what each part promises.
//!
//! ```text
//! main.rs, bin/     thin: args -> config -> Plan -> bind -> server::run; exit codes
//! server/           bind, accept loops, connection admission, per-core workers, admin listener
//!   mod.rs          run(plan, bound, shutdown, shared), Bound, Shared
//!   listener.rs     accept loop, per-connection limits (idle, client stall) and drain
//!   admission.rs    connection caps: refuse (provider ports) or evict the oldest idle (admin)
//!   workers.rs      one current-thread runtime per CPU, each accepting on every listener
//!   admin.rs        /live, /ready, /metrics
//! proxy/            the request path
//!   mod.rs          the named steps, from request head to upstream response
//!   route.rs        Route: one provider's plan, pools, policy and metrics
//!   completion.rs   end of a response (or tunnel): metrics, usage, budgets, request_complete
//!   headers.rs      pure header and path rules
//!   body.rs         response body wrapper: counts, idle timeout, end-of-request hook
//!   error.rs        ProxyError -> status, JSON, log text, metric label (every error answer)
//!   websocket.rs    WebSocket upgrades tunnelled to the upstream
//!   ws_tap.rs       a tunnel's usage tap: response.completed counted and charged as it passes
//!   tunnel_idle.rs  a tunnel's idle bound: when bytes last moved either way
//!   endpoints.rs    AWF /health, /reflect and /metrics (JSON) on provider ports
//!   stream_usage.rs streamed chat gets stream_options.include_usage (the one body rewrite)
//!   span.rs         the request's span: GenAI + HTTP attributes, trace-context headers
//! shared/           rate limits and budgets shared by replicas through Redis (shared_state)
//!   mod.rs          Store: admit (one EVALSHA per request), charge (spawned, sent once),
//!                   the monitor (ping, reconnects, the shared view of /health)
//!   redis.rs        the client (multiplexed ConnectionManager), the Lua scripts, rediss roots
//!   fallback.rs     unavailability episodes: logged once each, the up gauge, fallback counts
//! policy/           who may spend what: caller tokens and allow-lists, rate limits, token
//!                   budgets, key slots and their reload
//! upstream/         TLS + ALPN + CONNECT tunnel (mod.rs), the request body (body.rs) and the
//!   pool/           connection pool: HTTP/2 stream slots, HTTP/1.1 keep-alive, shared connects;
//!                   HTTP/2 bodies end at their content-length, then await END_STREAM (recv.rs)
//! telemetry/        metrics registry, JSON log lines and their writer, token usage (HTTP bodies,
//!                   WebSocket frames: ws_usage.rs), usage file, AWF's JSON /metrics
//!                   (awf_metrics.rs), OpenTelemetry spans and their OTLP export thread (otel/)
//! config/           YAML walking, units, DEFAULT_* (mod.rs), the validated Plan (plan.rs),
//!                   provider presets, secrets, egress (forward proxy) settings, the normal
//!                   form of request paths (path.rs)
//! awf/              AWF: render-config (render.rs; otel.rs its tracing), the compose fragment,
//!                   the health probe
//! ```
#![forbid(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)
)]

pub mod awf;
pub mod cloud;
pub mod config;
pub mod policy;
pub mod proxy;
pub mod server;
pub mod shared;
pub mod telemetry;
pub mod upstream;

pub use server::{run, Bound, Shared};
