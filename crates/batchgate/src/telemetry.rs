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
use tracing_subscriber::fmt::format::{DefaultVisitor, Writer};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
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
    let registry = tracing_subscriber::registry();
    let _ = match otel {
        Some(otel) => registry
            .with(log_layer(format).with_filter(filter))
            .with(otel)
            .try_init(),
        // The log is the only layer: its filter can be the subscriber's, which lets the same
        // spans and events through, without the per-layer bookkeeping (a look-up of the span
        // each time a request's span is entered or left: ≈ 1,500 instructions a request).
        None => registry.with(filter).with(log_layer(format)).try_init(),
    };
    if let Some(error) = export_error {
        tracing::warn!(%error, "trace export is off");
    } else if tracing.is_some() {
        tracing::info!("exporting traces over OTLP");
    }
    Telemetry { tracing }
}

/// The log's layer: lines on stderr, coloured on a terminal, in `format`.
fn log_layer<S>(format: LogFormat) -> Box<dyn Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => fmt.fmt_fields(PlainStrFields).boxed(),
        LogFormat::Json => fmt.json().boxed(),
    }
}

/// The text format's fields, exactly as tracing's default writes them, with one shortcut: a
/// string field made only of printable ASCII other than `"` and `\` (request and task ids,
/// every one), in a log without colours, is written as `name="value"` with plain string writes,
/// where the default goes through `format_args!` and `{:?}`, which inspects the value
/// character by character for escapes it cannot need (≈ 2,000 instructions a field). Every
/// request's span formats two such ids, so this is on the path of every request. Integer
/// fields are written `name=digits` the same way (the batcher's spans have them). Any other
/// field is handed to tracing's own visitor, continuing where this one is.
#[derive(Debug, Default)]
struct PlainStrFields;

impl<'a> MakeVisitor<Writer<'a>> for PlainStrFields {
    type Visitor = PlainStrVisitor<'a>;

    fn make_visitor(&self, target: Writer<'a>) -> PlainStrVisitor<'a> {
        PlainStrVisitor {
            writer: target,
            is_empty: true,
            result: Ok(()),
        }
    }
}

/// [`DefaultVisitor`]'s output, faster for strings that need no escaping (see
/// [`PlainStrFields`]).
struct PlainStrVisitor<'a> {
    writer: Writer<'a>,
    /// Nothing written yet: the next field is not preceded by a space.
    is_empty: bool,
    result: fmt::Result,
}

impl PlainStrVisitor<'_> {
    /// One field as [`DefaultVisitor`] writes it, from where this visitor is.
    fn by_default(&mut self, field: &Field, record: impl FnOnce(&mut DefaultVisitor<'_>)) {
        if self.result.is_err() {
            return;
        }
        let mut visitor = DefaultVisitor::new(self.writer.by_ref(), self.is_empty);
        record(&mut visitor);
        self.result = visitor.finish();
        // It writes every field (a space first, unless it is the first) but the `log.`
        // metadata of events that came from the `log` crate.
        if !field.name().starts_with("log.") {
            self.is_empty = false;
        }
    }

    /// Whether a field of this name is written `name=value` with nothing around either (no
    /// colours, not the message, not a raw identifier, not `log.` metadata).
    fn plain_name(&self, name: &str) -> bool {
        self.result.is_ok()
            && !self.writer.has_ansi_escapes()
            && name != "message"
            && !name.starts_with("r#")
            && !name.starts_with("log.")
    }

    /// Writes a field whose name is plain, from its parts; the first is left empty by the
    /// caller for the space that separates it from the field before, if any.
    fn write_plain(&mut self, parts: &mut [&str]) {
        if !std::mem::take(&mut self.is_empty) {
            if let Some(space) = parts.first_mut() {
                *space = " ";
            }
        }
        // In one write when it is short (every id): the span's fields are a `String` that
        // would otherwise grow, and be copied, at nearly every part.
        let mut joined = [0u8; JOINED_MAX];
        self.result = match join_into(&mut joined, parts) {
            Some(field) => self.writer.write_str(field),
            None => parts
                .iter()
                .try_for_each(|part| self.writer.write_str(part)),
        };
    }
}

/// The longest field [`PlainStrVisitor`] joins before writing it.
const JOINED_MAX: usize = 128;

/// `parts` one after the other in `buffer`, if they fit.
fn join_into<'b>(buffer: &'b mut [u8], parts: &[&str]) -> Option<&'b str> {
    let mut len = 0;
    for part in parts {
        let end = len + part.len();
        buffer.get_mut(len..end)?.copy_from_slice(part.as_bytes());
        len = end;
    }
    std::str::from_utf8(&buffer[..len]).ok()
}

/// Whether `{:?}` writes `value` as itself between quotes. Every byte is looked at, with no
/// early exit, so that the compiler checks 16 bytes at a time (byte by byte, with an exit at
/// the first escape, a 36-byte id took ≈ 225 instructions: a call per field of every
/// request's span).
fn needs_no_escape(value: &str) -> bool {
    value.bytes().fold(true, |plain, b| {
        plain & (b.wrapping_sub(0x20) < 0x7f - 0x20) & (b != b'"') & (b != b'\\')
    })
}

/// The digits of `value` in decimal (as `{:?}` writes an integer), at the end of `buffer`.
fn decimal(buffer: &mut [u8; 20], mut value: u64) -> Option<&str> {
    let mut start = buffer.len();
    loop {
        start -= 1;
        buffer[start] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    std::str::from_utf8(&buffer[start..]).ok()
}

impl Visit for PlainStrVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        let name = field.name();
        if !(self.plain_name(name) && needs_no_escape(value)) {
            return self.by_default(field, |v| v.record_str(field, value));
        }
        self.write_plain(&mut ["", name, "=\"", value, "\""]);
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.by_default(field, |v| v.record_f64(field, value));
    }

    /// Integers are written `name=digits` directly: tracing's visitor formats the name and
    /// the `=` through its (colourless) styles, ≈ 1,200 instructions a field, and the
    /// batcher's spans have one or two a batch.
    fn record_i64(&mut self, field: &Field, value: i64) {
        let mut digits = [0u8; 20];
        let name = field.name();
        match decimal(&mut digits, value.unsigned_abs()) {
            Some(digits) if self.plain_name(name) => {
                let sign = if value < 0 { "-" } else { "" };
                self.write_plain(&mut ["", name, "=", sign, digits]);
            }
            _ => self.by_default(field, |v| v.record_i64(field, value)),
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        let mut digits = [0u8; 20];
        let name = field.name();
        match decimal(&mut digits, value) {
            Some(digits) if self.plain_name(name) => self.write_plain(&mut ["", name, "=", digits]),
            _ => self.by_default(field, |v| v.record_u64(field, value)),
        }
    }

    fn record_i128(&mut self, field: &Field, value: i128) {
        self.by_default(field, |v| v.record_i128(field, value));
    }

    fn record_u128(&mut self, field: &Field, value: u128) {
        self.by_default(field, |v| v.record_u128(field, value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.by_default(field, |v| v.record_bool(field, value));
    }

    fn record_bytes(&mut self, field: &Field, value: &[u8]) {
        self.by_default(field, |v| v.record_bytes(field, value));
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.by_default(field, |v| v.record_error(field, value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.by_default(field, |v| v.record_debug(field, value));
    }
}

impl VisitOutput<fmt::Result> for PlainStrVisitor<'_> {
    fn finish(self) -> fmt::Result {
        self.result
    }
}

impl VisitFmt for PlainStrVisitor<'_> {
    fn writer(&mut self) -> &mut dyn fmt::Write {
        &mut self.writer
    }
}

#[cfg(test)]
mod tests {
    use batchgate_testkit::MemoryLog;
    use std::io;

    use tracing::field::Empty;
    use tracing_subscriber::fmt::format::DefaultFields;

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
            assert_eq!(format!("\"{s}\""), format!("{s:?}"));
        }
        for s in ["a\"b", "a\\b", "a\nb", "caf\u{e9}", "\u{1b}[31m", "\u{7f}"] {
            assert!(!needs_no_escape(s), "{s:?}");
        }
    }

    /// Every ASCII character, alone and among plain ones before and after it (at every
    /// distance the check reads in one step, and beyond): plain exactly when it is printable
    /// and neither `"` nor `\`, and then written by `{:?}` as itself.
    #[test]
    fn every_ascii_character_is_told_plain_or_not_wherever_it_is() {
        for b in 0u8..0x80 {
            let plain = (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\';
            for (before, after) in [
                (0, 0),
                (1, 40),
                (15, 0),
                (16, 16),
                (31, 2),
                (35, 0),
                (64, 7),
            ] {
                let s = format!(
                    "{}{}{}",
                    "x".repeat(before),
                    char::from(b),
                    "y".repeat(after)
                );
                assert_eq!(needs_no_escape(&s), plain, "{s:?}");
                if plain {
                    assert_eq!(format!("\"{s}\""), format!("{s:?}"));
                }
            }
        }
        // Anything beyond ASCII goes to tracing's own visitor.
        assert!(!needs_no_escape(&format!("{}\u{e9}", "a".repeat(40))));
    }

    #[test]
    fn parts_are_joined_when_they_fit() {
        let mut buffer = [0u8; 8];
        assert_eq!(
            join_into(&mut buffer, &["a", "=\"", "bc", "\""]),
            Some("a=\"bc\"")
        );
        assert_eq!(join_into(&mut buffer, &["", "", ""]), Some(""));
        assert_eq!(join_into(&mut buffer, &["abcd", "efgh"]), Some("abcdefgh"));
        assert_eq!(join_into(&mut buffer, &["abcd", "efghi"]), None);
    }

    /// Spans and events with every kind of field, in every place (first or not, in a span's
    /// attributes or recorded later, in an event), logged with `fields`.
    fn log_with<F>(fields: F, ansi: bool) -> String
    where
        F: for<'w> tracing_subscriber::fmt::FormatFields<'w> + Send + Sync + 'static,
    {
        let buffer = MemoryLog::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(ansi)
            .without_time()
            .with_writer(move || writer.clone())
            .fmt_fields(fields)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("http.request", request_id = "abc-1", task_id = Empty);
            span.record("task_id", "0b5c6f1e-9d2a-4c4e-8f7d-3a1b2c3d4e5f");
            span.in_scope(|| {
                tracing::info!(status = 200u64, latency_ms = 1.5, "answered");
                tracing::warn!(
                    id = "a\"quoted\\one",
                    other = "caf\u{e9}",
                    "plain \"message\""
                );
                tracing::info!(
                    log.target = "t",
                    log.line = 7u64,
                    id = "after-log",
                    "from log"
                );
                tracing::info!(
                    r#type = "raw",
                    flag = true,
                    n = -3i64,
                    big = 1u128,
                    "raw name"
                );
                tracing::info!(
                    zero = 0u64,
                    most = u64::MAX,
                    least = i64::MIN,
                    greatest = i64::MAX,
                    minus_zero = -0i64,
                    "integers"
                );
                tracing::info_span!("results.write", tasks = 3u64, r#n = 4u64)
                    .in_scope(|| tracing::info!(after = 5u64, "in a span with integers"));
                let error = io::Error::other("boom");
                tracing::error!(
                    error = &error as &(dyn std::error::Error + 'static),
                    "failed"
                );
                tracing::info!(shown = ?vec![1, 2], displayed = %"x y", empty = "", "kinds");
                tracing::info!(message = "only a message field");
                // Longer than the visitor joins in one write.
                tracing::info!(long = "0123456789abcdef".repeat(9).as_str(), "long");
            });
            let inner = tracing::info_span!("outer", first = "one");
            inner.in_scope(|| {
                let nested = tracing::debug_span!("inner", log.file = "x.rs", second = "two");
                nested.record("second", "three");
                nested.in_scope(|| tracing::debug!(x = "y", "nested"));
            });
        });
        buffer.text()
    }

    #[test]
    fn the_text_format_writes_every_field_as_tracings_default_does() {
        for ansi in [false, true] {
            let ours = log_with(PlainStrFields, ansi);
            let theirs = log_with(DefaultFields::new(), ansi);
            // Without colours the ids take the plain path (with them, tracing's).
            assert_eq!(ours.contains("request_id=\"abc-1\""), !ansi, "{ours}");
            assert_eq!(ours.contains("tasks=3"), !ansi, "{ours}");
            assert_eq!(ours.lines().count(), 11, "{ours}");
            assert_eq!(ours, theirs, "ansi: {ansi}");
        }
    }
}
