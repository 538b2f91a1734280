//! Log lines and metrics: `tracing` to stderr (colour only on a terminal; JSON when asked) and
//! the Prometheus recorder every process exports at `/metrics`.

use crate::config::LogFormat;
use crate::error::AppError;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::io::IsTerminal;

/// Installs the global log subscriber; levels come from `RUST_LOG` (default `info`).
pub fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Escape codes in a file or a log collector are noise.
        .with_ansi(std::io::stderr().is_terminal());
    // A second call keeps the first subscriber: one process has one.
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// Installs the process-wide Prometheus recorder, with histogram buckets fine enough between
/// 0.5 ms and 1 s for the load tests' p99 plots, and `role` (serve, ingest, stage, project) on
/// every series so a split deployment's dashboards can tell the processes apart; a second call
/// returns the same handle.
pub fn install_metrics(role: &'static str) -> Result<PrometheusHandle, AppError> {
    static HANDLE: std::sync::OnceLock<PrometheusHandle> = std::sync::OnceLock::new();
    if let Some(handle) = HANDLE.get() {
        return Ok(handle.clone());
    }
    let buckets = [
        0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1,
        0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0,
    ];
    let handle = PrometheusBuilder::new()
        .add_global_label("role", role)
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &buckets)
        .map_err(|e| AppError::Metrics(Box::new(e)))?
        .install_recorder()
        .map_err(|e| AppError::Metrics(Box::new(e)))?;
    Ok(HANDLE.get_or_init(|| handle).clone())
}
