//! Logging and traces. Logs: `tracing` to stderr, as text or JSON, filtered by `RUST_LOG` or
//! `--log-filter`; every line inside a request carries its span's fields (`request_id`, then
//! `task_id`). Traces: with an OTLP endpoint (`--otlp-endpoint` or `OTEL_EXPORTER_OTLP_*`),
//! the same spans are exported through `tracing-opentelemetry` (`batchgate_telemetry`).

use std::fmt;
use std::io::IsTerminal;

use batchgate_telemetry::{OtlpConfig, Tracing};
use clap::ValueEnum;
use tracing::field::{Field, Visit};
use tracing_subscriber::field::{MakeVisitor, VisitFmt, VisitOutput};
use tracing_subscriber::fmt::format::{DefaultFields, DefaultVisitor, Writer};
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
        LogFormat::Text => fmt.fmt_fields(PlainStrFields).boxed(),
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

/// The text format's fields, exactly as tracing's default writes them, with one shortcut: a
/// string field made only of printable ASCII other than `"` and `\` (request and task ids,
/// every one) is written between quotes as it is, where the default runs it through `{:?}`,
/// which inspects it character by character for escapes it cannot need. Every request's span
/// formats two such ids, so this is on the path of every request.
#[derive(Debug, Default)]
struct PlainStrFields;

impl<'a> MakeVisitor<Writer<'a>> for PlainStrFields {
    type Visitor = PlainStrVisitor<'a>;

    fn make_visitor(&self, target: Writer<'a>) -> PlainStrVisitor<'a> {
        PlainStrVisitor(DefaultFields::new().make_visitor(target))
    }
}

/// [`DefaultVisitor`], but for strings that need no escaping (see [`PlainStrFields`]).
struct PlainStrVisitor<'a>(DefaultVisitor<'a>);

/// A string that needs no escaping, written as `{:?}` would write it.
struct Quoted<'a>(&'a str);

impl fmt::Debug for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"")?;
        f.write_str(self.0)?;
        f.write_str("\"")
    }
}

/// Whether `{:?}` writes `value` as itself between quotes.
fn needs_no_escape(value: &str) -> bool {
    value
        .bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
}

impl Visit for PlainStrVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() != "message" && needs_no_escape(value) {
            self.0.record_debug(field, &Quoted(value));
        } else {
            self.0.record_str(field, value);
        }
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.record_f64(field, value);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.record_i64(field, value);
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.record_u64(field, value);
    }

    fn record_i128(&mut self, field: &Field, value: i128) {
        self.0.record_i128(field, value);
    }

    fn record_u128(&mut self, field: &Field, value: u128) {
        self.0.record_u128(field, value);
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.record_bool(field, value);
    }

    fn record_bytes(&mut self, field: &Field, value: &[u8]) {
        self.0.record_bytes(field, value);
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0.record_error(field, value);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.record_debug(field, value);
    }
}

impl VisitOutput<fmt::Result> for PlainStrVisitor<'_> {
    fn finish(self) -> fmt::Result {
        self.0.finish()
    }
}

impl VisitFmt for PlainStrVisitor<'_> {
    fn writer(&mut self) -> &mut dyn fmt::Write {
        self.0.writer()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_strings_are_written_as_debug_writes_them() {
        for s in [
            "",
            "abc-123_X.y:z",
            "a b'c",
            "0b5c6f1e-9d2a-4c4e-8f7d-3a1b2c3d4e5f",
            "~!@#$%^&*()",
        ] {
            assert!(needs_no_escape(s), "{s}");
            assert_eq!(format!("{:?}", Quoted(s)), format!("{s:?}"));
        }
        for s in ["a\"b", "a\\b", "a\nb", "caf\u{e9}", "\u{1b}[31m", "\u{7f}"] {
            assert!(!needs_no_escape(s), "{s:?}");
        }
    }
}
