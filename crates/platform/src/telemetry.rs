//! Structured logs and distributed traces.
//!
//! Every binary logs JSON lines to stdout through `tracing`. Spans always carry OpenTelemetry
//! trace and span ids, so the W3C trace context can be passed on in HTTP headers and in NATS
//! message headers even when nothing is exported; when `telemetry.otlp_endpoint` is set the
//! spans are also exported over OTLP/HTTP (the blocking client, which needs no runtime in the
//! exporter thread). An unreachable collector only costs dropped spans, never an error in a
//! request.

use crate::config::TelemetryConfig;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use std::collections::HashMap;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Flushes and stops the trace exporter when the process ends.
#[derive(Debug)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports what is left and stops the exporter. Call last, after everything else stopped.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(e) = provider.shutdown()
        {
            tracing::warn!(error = %e, "trace exporter did not shut down cleanly");
        }
    }
}

/// Installs the global subscriber and propagator for `service`. A second call in the same
/// process (several services started by one test) keeps the first subscriber.
///
/// # Errors
/// When the log filter does not parse or the exporter cannot be built.
pub fn init(service: &str, cfg: &TelemetryConfig) -> anyhow::Result<Telemetry> {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());

    let mut builder = SdkTracerProvider::builder().with_resource(
        opentelemetry_sdk::Resource::builder().with_service_name(format!("hopsbridge-{service}")).build(),
    );
    if !cfg.otlp_endpoint.is_empty() {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(format!("{}/v1/traces", cfg.otlp_endpoint.trim_end_matches('/')))
            .build()?;
        builder = builder.with_batch_exporter(exporter);
    }
    let provider = builder.build();
    let tracer = provider.tracer(format!("hopsbridge-{service}"));

    let filter =
        std::env::var("RUST_LOG").ok().map_or_else(|| EnvFilter::try_new(&cfg.log_filter), EnvFilter::try_new)?;
    let fmt = if cfg.json_logs {
        tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .flatten_event(true)
            .boxed()
    } else {
        tracing_subscriber::fmt::layer().boxed()
    };
    // The log filter applies to what is printed; spans at info and above always get trace
    // context, so propagation does not depend on the log level. A span carries only its own
    // fields: the source location, thread, target and busy/idle times the layer can add cost an
    // allocation or a clock read on every request, every time its span is entered, and say
    // nothing the span's name and fields do not.
    let installed = tracing_subscriber::registry()
        .with(fmt.with_filter(filter))
        .with(
            tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_location(false)
                .with_threads(false)
                .with_target(false)
                .with_tracked_inactivity(false)
                .with_filter(LevelFilter::INFO),
        )
        .try_init()
        .is_ok();
    if installed {
        opentelemetry::global::set_tracer_provider(provider.clone());
        Ok(Telemetry { provider: Some(provider) })
    } else {
        Ok(Telemetry { provider: None })
    }
}

/// The W3C trace context (`traceparent`, `tracestate`) of a span, as header pairs.
#[must_use]
pub fn trace_context_of(span: &tracing::Span) -> HashMap<String, String> {
    let mut out = HashMap::new();
    TraceContextPropagator::new().inject_context(&span.context(), &mut MapInjector(&mut out));
    out
}

/// Makes `span` a child of the remote span described by `headers` (W3C trace context).
pub fn set_remote_parent(span: &tracing::Span, headers: &HashMap<String, String>) {
    let cx = TraceContextPropagator::new().extract(&MapExtractor(headers));
    // A span that is not sampled or already closed cannot take a parent; that is not an error.
    let _ = span.set_parent(cx);
}

/// The trace id of a span in hex, or `None` when the span has no valid context.
#[must_use]
pub fn trace_id_of(span: &tracing::Span) -> Option<String> {
    use opentelemetry::trace::TraceContextExt;
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| sc.trace_id().to_string())
}

struct MapInjector<'a>(&'a mut HashMap<String, String>);

impl Injector for MapInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key.to_owned(), value);
    }
}

struct MapExtractor<'a>(&'a HashMap<String, String>);

impl Extractor for MapExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}
