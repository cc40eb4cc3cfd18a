//! What the proxy tells its operators: the metrics registry, JSON log lines and their batched
//! writer, token usage read from responses (and from WebSocket frames), the usage file, and
//! OpenTelemetry traces (otel/).

pub mod awf_metrics;
pub mod eventstream;
pub mod logging;
pub mod logline;
pub mod logsink;
pub mod metrics;
pub mod otel;
pub mod usage;
pub mod usage_file;
pub mod ws_usage;
