//! Logging and tracing setup.
//!
//! Logs always go to stderr (pretty or JSON). Traces are exported over OTLP/HTTP (JSON bodies)
//! only when `OTEL_EXPORTER_OTLP_ENDPOINT` is set; otherwise no OpenTelemetry layer, propagator
//! or exporter exists at all. The exporter reads the standard `OTEL_*` variables itself
//! (`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_BSP_*`, …);
//! `OTEL_SERVICE_NAME` names the service (default `faceswap-gateway`).

use std::sync::atomic::{AtomicBool, Ordering};

use axum::http;

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracerProvider, Tracer};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;

use crate::config::LogFormat;

/// The service name traces carry when `OTEL_SERVICE_NAME` is not set.
pub const DEFAULT_SERVICE_NAME: &str = "faceswap-gateway";

/// Set once an OTLP exporter is installed; everything trace-related checks it first.
static TRACING_ENABLED: AtomicBool = AtomicBool::new(false);

/// Whether spans are exported (an OTLP endpoint was configured at start-up).
pub fn traces_enabled() -> bool {
    TRACING_ENABLED.load(Ordering::Relaxed)
}

/// Installs the global subscriber: `RUST_LOG` filters (default `info`), in the chosen format,
/// plus the OpenTelemetry layer when `OTEL_EXPORTER_OTLP_ENDPOINT` is set. The returned
/// provider must be [`shutdown`] on exit so that buffered spans are flushed.
pub fn init(format: LogFormat) -> anyhow::Result<Option<SdkTracerProvider>> {
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let provider = otlp_provider()?;
    let tracer = provider.as_ref().map(|p| p.tracer("faceswap-gateway"));
    // A subscriber already installed (tests, embedding) is fine.
    let installed = build(format, filter, std::io::stderr, tracer)
        .try_init()
        .is_ok();
    if installed && provider.is_some() {
        TRACING_ENABLED.store(true, Ordering::Relaxed);
    }
    Ok(provider)
}

/// Installs the logging subscriber only (commands other than `serve`).
pub fn init_logs(format: LogFormat) {
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = build(format, filter, std::io::stderr, None).try_init();
}

/// Flushes and stops the exporter (bounded by the SDK's export timeout).
pub fn shutdown(provider: Option<SdkTracerProvider>) {
    if let Some(provider) = provider
        && let Err(e) = provider.shutdown()
    {
        eprintln!("faceswap-gateway: trace export shutdown: {e}");
    }
}

/// The tracer provider, when an OTLP endpoint is configured.
fn otlp_provider() -> anyhow::Result<Option<SdkTracerProvider>> {
    use opentelemetry_otlp::{Protocol, WithExportConfig};
    let configured = |name: &str| std::env::var_os(name).is_some_and(|v| !v.is_empty());
    if !configured("OTEL_EXPORTER_OTLP_ENDPOINT") {
        return Ok(None);
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpJson)
        .build()
        .map_err(|e| anyhow::anyhow!("OTEL_EXPORTER_OTLP_ENDPOINT: {e}"))?;
    let service = std::env::var("OTEL_SERVICE_NAME")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| DEFAULT_SERVICE_NAME.to_owned());
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(service)
        .build();
    Ok(Some(
        SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource)
            .build(),
    ))
}

/// The subscriber [`init`] installs, writing to `writer` (tests pass a buffer), without the
/// OpenTelemetry layer. JSON lines carry the fields of the current span and of every span
/// above it, so the request's `request_id`, `trace_id`, `route`, `tenant_id` and `session_id`
/// reach lines logged in nested spans.
pub fn subscriber<W>(
    format: LogFormat,
    filter: EnvFilter,
    writer: W,
) -> Box<dyn tracing::Subscriber + Send + Sync>
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    build(format, filter, writer, None)
}

/// The log layer is filtered by `filter` (`RUST_LOG`); the trace layer, when present, keeps
/// every `info` span whatever the log level, so quiet logs do not mean empty traces.
fn build<W>(
    format: LogFormat,
    filter: EnvFilter,
    writer: W,
    tracer: Option<Tracer>,
) -> Box<dyn tracing::Subscriber + Send + Sync>
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    use tracing_subscriber::Layer as _;
    let traces = tracer.map(|t| {
        tracing_opentelemetry::layer()
            .with_tracer(t)
            .with_filter(tracing_subscriber::filter::LevelFilter::INFO)
    });
    let logs = tracing_subscriber::fmt::layer().with_writer(writer);
    let registry = tracing_subscriber::registry().with(traces);
    match format {
        LogFormat::Pretty => Box::new(registry.with(logs.with_filter(filter))),
        LogFormat::Json => Box::new(
            registry.with(
                logs.json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(true)
                    .with_filter(filter),
            ),
        ),
    }
}

/// The W3C trace context a caller sent (`traceparent`, `tracestate`), if tracing is on.
pub fn extract_context(headers: &http::HeaderMap) -> Option<opentelemetry::Context> {
    if !traces_enabled() {
        return None;
    }
    Some(TraceContextPropagator::new().extract(&HeaderExtractor(headers)))
}

/// The hook that adds `traceparent` for the current span to every upstream request, when
/// tracing is on (`None` otherwise, so the upstream client does nothing extra).
pub fn upstream_header_hook() -> Option<faceswap_upstream::HeaderHook> {
    if !traces_enabled() {
        return None;
    }
    Some(std::sync::Arc::new(|headers: &mut http::HeaderMap| {
        use tracing_opentelemetry::OpenTelemetrySpanExt;
        let cx = tracing::Span::current().context();
        TraceContextPropagator::new().inject_context(&cx, &mut HeaderInjector(headers));
    }))
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

struct HeaderInjector<'a>(&'a mut http::HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(key.as_bytes()),
            http::HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}
