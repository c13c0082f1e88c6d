//! The tracer provider: spans batched and exported over OTLP/gRPC.
//!
//! The endpoint comes from `--otlp-endpoint`, or else the standard
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` / `OTEL_EXPORTER_OTLP_ENDPOINT`; the other standard
//! variables (`OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER`,
//! `OTEL_BSP_*`, `OTEL_EXPORTER_OTLP_{HEADERS,TIMEOUT,COMPRESSION}`) are read by the
//! OpenTelemetry SDK as usual. Each export is bounded by the OTLP timeout (10 s unless
//! `OTEL_EXPORTER_OTLP_TIMEOUT` says otherwise); a collector that is down costs dropped spans,
//! never a blocked request.
//!
//! An `https://` endpoint is reached over TLS, trusting the system's roots and, with
//! `--otlp-ca`, that CA too; a collector that wants an auth header gets it from
//! `OTEL_EXPORTER_OTLP_HEADERS` (`authorization=Bearer%20…`), the standard variable.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{WithExportConfig, WithTonicConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use opentelemetry_sdk::Resource;

use crate::context::set_enabled;

/// Where traces go, and who sends them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtlpConfig {
    /// The collector's OTLP/gRPC endpoint (`http://host:4317`), from the flag; `None` leaves
    /// it to the `OTEL_EXPORTER_OTLP_*` variables.
    pub endpoint: Option<String>,
    /// `service.name` unless `OTEL_SERVICE_NAME` sets one (`batchgate-gateway`, …).
    pub service_name: String,
    /// A CA (PEM) trusted for an `https://` collector besides the system's roots.
    pub ca: Option<std::path::PathBuf>,
}

/// Tracing could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum OtlpError {
    /// The OTLP exporter refused its configuration (e.g. a malformed endpoint).
    #[error("OTLP exporter: {0}")]
    Exporter(String),
}

/// Names of the variables that turn export on when set (the flag does too).
const ENDPOINT_VARS: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
];

fn var_is(name: &str, value: &str) -> bool {
    std::env::var(name).is_ok_and(|v| v.trim().eq_ignore_ascii_case(value))
}

impl OtlpConfig {
    /// Whether the endpoint (the flag's, else the environment's) is `https://`.
    fn over_tls(&self) -> bool {
        self.endpoint
            .clone()
            .filter(|e| !e.is_empty())
            .or_else(|| {
                ENDPOINT_VARS
                    .iter()
                    .find_map(|v| std::env::var(v).ok().filter(|e| !e.is_empty()))
            })
            .is_some_and(|e| e.starts_with("https://"))
    }

    /// Whether traces should be exported: an endpoint is configured (flag or environment)
    /// and neither `OTEL_SDK_DISABLED=true` nor `OTEL_TRACES_EXPORTER=none` says otherwise.
    pub fn wanted(&self) -> bool {
        let configured = self.endpoint.as_deref().is_some_and(|e| !e.is_empty())
            || ENDPOINT_VARS
                .iter()
                .any(|v| std::env::var(v).is_ok_and(|e| !e.is_empty()));
        configured
            && !var_is("OTEL_SDK_DISABLED", "true")
            && !var_is("OTEL_TRACES_EXPORTER", "none")
    }
}

/// The installed provider; [`Tracing::shutdown`] flushes the spans still batched.
#[derive(Debug)]
pub struct Tracing {
    provider: SdkTracerProvider,
}

impl Tracing {
    /// Builds the exporter and provider, makes them global with the W3C propagator, and turns
    /// [`crate::enabled`] on. Call from within a Tokio runtime (the gRPC channel lives there).
    pub fn install(config: &OtlpConfig) -> Result<Tracing, OtlpError> {
        use opentelemetry_otlp::tonic_types::transport::{Certificate, ClientTlsConfig};
        let mut builder = opentelemetry_otlp::SpanExporter::builder().with_tonic();
        if let Some(endpoint) = config.endpoint.as_deref().filter(|e| !e.is_empty()) {
            builder = builder.with_endpoint(endpoint);
        }
        if config.over_tls() {
            let mut tls = ClientTlsConfig::new().with_native_roots();
            if let Some(ca) = &config.ca {
                let pem = std::fs::read(ca).map_err(|e| {
                    OtlpError::Exporter(format!("cannot read --otlp-ca {}: {e}", ca.display()))
                })?;
                tls = tls.ca_certificate(Certificate::from_pem(pem));
            }
            builder = builder.with_tls_config(tls);
        } else if config.ca.is_some() {
            return Err(OtlpError::Exporter(
                "--otlp-ca needs an https:// endpoint".into(),
            ));
        }
        let exporter = builder
            .build()
            .map_err(|e| OtlpError::Exporter(e.to_string()))?;
        let mut resource = Resource::builder();
        if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
            resource = resource.with_service_name(config.service_name.clone());
        }
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource.build())
            .build();
        opentelemetry::global::set_tracer_provider(provider.clone());
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        set_enabled(true);
        Ok(Tracing { provider })
    }

    /// The tracer `tracing-opentelemetry` exports through.
    pub fn tracer(&self) -> SdkTracer {
        self.provider.tracer("batchgate")
    }

    /// Exports what is still batched, then stops; bounded by the exporter's timeout.
    pub fn shutdown(self) {
        set_enabled(false);
        if let Err(error) = self.provider.shutdown() {
            tracing::warn!(%error, "flushing traces at exit failed");
        }
    }
}
