//! Logging and traces. Logs: `tracing` to stderr, as text or JSON, filtered by `RUST_LOG` or
//! `--log-filter`; every line inside a request carries its span's fields (`request_id`, then
//! `task_id`). Traces: with an OTLP endpoint (`--otlp-endpoint` or `OTEL_EXPORTER_OTLP_*`),
//! the same spans are exported through `tracing-opentelemetry` (`batchgate_telemetry`).

use std::io::IsTerminal;

use batchgate_telemetry::{OtlpConfig, Tracing};
use clap::ValueEnum;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log pipelines: the event's fields, its message, and the
    /// fields of the spans it happened in (`request_id`, `task_id`).
    Json,
}

/// What [`init`] set up; [`Telemetry::shutdown`] flushes the traces still batched.
#[derive(Debug, Default)]
pub struct Telemetry {
    tracing: Option<Tracing>,
}

impl Telemetry {
    /// Exports the spans still buffered (bounded by the OTLP timeout). Call before exit.
    pub fn shutdown(self) {
        if let Some(tracing) = self.tracing {
            tracing.shutdown();
        }
    }
}

/// Installs the global subscriber. `RUST_LOG` wins over `filter` when set. With `otlp`
/// wanted (see [`OtlpConfig::wanted`]), spans are also exported: call this inside the Tokio
/// runtime then. A failure to set up export is logged, and the process runs without it.
pub fn init(format: LogFormat, filter: &str, otlp: Option<&OtlpConfig>) -> Telemetry {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(filter))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let fmt = match format {
        LogFormat::Text => fmt.boxed(),
        LogFormat::Json => fmt.json().boxed(),
    };
    let mut export_error = None;
    let tracing = otlp
        .filter(|c| c.wanted())
        .and_then(|c| match Tracing::install(c) {
            Ok(t) => Some(t),
            Err(error) => {
                export_error = Some(error);
                None
            }
        });
    // Spans go to the exporter whatever the log filter says: a trace is not a log line.
    let otel = tracing.as_ref().map(|t| {
        tracing_opentelemetry::layer()
            .with_tracer(t.tracer())
            .with_filter(EnvFilter::new("info"))
    });
    // A second init (tests calling into the CLI twice) is harmless: keep the first.
    let _ = tracing_subscriber::registry()
        .with(fmt.with_filter(filter))
        .with(otel)
        .try_init();
    if let Some(error) = export_error {
        tracing::warn!(%error, "trace export is off");
    } else if tracing.is_some() {
        tracing::info!("exporting traces over OTLP");
    }
    Telemetry { tracing }
}
