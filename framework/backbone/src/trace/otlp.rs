//! Spans exported over OTLP (cargo feature `otlp`), with the ids [`TraceContextLayer`] gave them.
//!
//! [`OtlpLayer`] is a `tracing_subscriber` layer: each span that closes becomes an OpenTelemetry
//! span with the same trace id, span id and parent that `traceparent` headers carry, so the trace
//! id in a log line or a Kafka header finds the trace in the backend. It needs
//! [`TraceContextLayer`] beside it (the ids are that layer's); spans without ids are not exported.
//!
//! [`init_logging`](crate::app::init_logging) installs both when `OTEL_EXPORTER_OTLP_ENDPOINT` or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set (and neither `OTEL_SDK_DISABLED=true` nor
//! `OTEL_TRACES_EXPORTER=none` says otherwise). Export is OTLP over HTTP with protobuf
//! (`opentelemetry-otlp`), batched by the OpenTelemetry SDK's batch processor on a thread of its
//! own, so a slow or absent collector costs the service dropped spans, never a blocked handler.
//! The usual variables configure it: `OTEL_SERVICE_NAME` (default: the service's name),
//! `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_BSP_SCHEDULE_DELAY`, …
//!
//! # Span fields
//!
//! As in `tracing-opentelemetry`: `otel.name` names the span (else the span's own name),
//! `otel.kind` gives its kind (`server`, `client`, `producer`, `consumer`, `internal`),
//! `otel.status_code` (`ok`, `error`) its status; an `ERROR` event inside a span marks it failed
//! with the event's message. A `traceparent` field is the remote parent, not an attribute; every
//! other field is an attribute under its own name (the framework's spans use OpenTelemetry's
//! messaging and HTTP attribute names).
//!
//! # Why not `tracing-opentelemetry`
//!
//! It keeps ids of its own beside the ones [`TraceContextLayer`] gives (which publishing writes
//! into `traceparent` without allocating): two id systems that would have to be kept in step.
//! This layer reads the one the framework already has and hands finished spans to the SDK's
//! exporter pipeline, which does the rest (batching, the OTLP encoding, retries, the `OTEL_*`
//! variables).

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use opentelemetry::trace::{SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState};
use opentelemetry::{InstrumentationScope, KeyValue, Value};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{
    BatchSpanProcessor, SpanData, SpanEvents, SpanExporter, SpanLinks, SpanProcessor,
};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

#[cfg(doc)]
use super::TraceContextLayer;
use super::{Parent, TRACEPARENT, TraceContext};

/// The variables that switch export on: the traces endpoint, or the endpoint of all signals.
pub const ENDPOINT_VARIABLES: [&str; 2] =
    ["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"];

/// What went wrong setting up or flushing the export.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OtlpError {
    /// The exporter could not be built (an endpoint that is no URL, an unknown protocol, …).
    #[error("OTLP exporter: {0}")]
    Build(String),
    /// Spans could not be handed to the collector (it is down, slow or refuses them).
    #[error("OTLP export: {0}")]
    Export(String),
}

impl OtlpError {
    /// Whether trying again may succeed: a collector may come back; a bad configuration stays bad.
    pub fn is_retriable(&self) -> bool {
        matches!(self, Self::Export(_))
    }
}

/// A layer that exports closed spans over OTLP; see the [module's documentation](self).
pub struct OtlpLayer {
    processor: Arc<BatchSpanProcessor>,
    scope: InstrumentationScope,
}

impl fmt::Debug for OtlpLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OtlpLayer").field("scope", &self.scope.name()).finish_non_exhaustive()
    }
}

/// Flushes or stops a running [`OtlpLayer`]'s export (from anywhere: it is a cheap clone).
#[derive(Clone)]
pub struct OtlpHandle(Arc<BatchSpanProcessor>);

impl fmt::Debug for OtlpHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OtlpHandle")
    }
}

impl OtlpHandle {
    /// Exports every span closed so far, and waits until the collector took them.
    pub fn flush(&self) -> Result<(), OtlpError> {
        self.0.force_flush().map_err(|e| OtlpError::Export(e.to_string()))
    }

    /// Exports what is left and stops the export thread; spans that close later are dropped.
    pub fn shutdown(&self) -> Result<(), OtlpError> {
        self.0.shutdown().map_err(|e| OtlpError::Export(e.to_string()))
    }
}

impl OtlpLayer {
    /// Whether the environment asks for export (see the [module's documentation](self)).
    pub fn wanted() -> bool {
        let var = |name: &str| std::env::var(name).unwrap_or_default();
        if var("OTEL_SDK_DISABLED").eq_ignore_ascii_case("true")
            || var("OTEL_TRACES_EXPORTER").eq_ignore_ascii_case("none")
        {
            return false;
        }
        ENDPOINT_VARIABLES.iter().any(|name| !var(name).trim().is_empty())
    }

    /// The layer the `OTEL_*` variables describe, or `None` when they ask for no export. Spans
    /// name the service `service` unless `OTEL_SERVICE_NAME` (or `service.name` in
    /// `OTEL_RESOURCE_ATTRIBUTES`) names it otherwise.
    pub fn from_env(service: &str) -> Result<Option<Self>, OtlpError> {
        if !Self::wanted() {
            return Ok(None);
        }
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .build()
            .map_err(|e| OtlpError::Build(e.to_string()))?;
        let named = std::env::var("OTEL_SERVICE_NAME").is_ok_and(|v| !v.is_empty())
            || std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|v| v.contains("service.name="));
        let resource = match named {
            true => Resource::builder().build(),
            false => Resource::builder().with_service_name(service.to_owned()).build(),
        };
        Ok(Some(Self::new(exporter, resource)))
    }

    /// A layer that exports to the OTLP/HTTP traces endpoint `endpoint` (the whole URL, ending in
    /// `/v1/traces`), naming the service `service`. The other `OTEL_*` variables still apply.
    pub fn http(endpoint: &str, service: &str) -> Result<Self, OtlpError> {
        use opentelemetry_otlp::WithExportConfig as _;
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(endpoint)
            .build()
            .map_err(|e| OtlpError::Build(e.to_string()))?;
        Ok(Self::new(exporter, Resource::builder().with_service_name(service.to_owned()).build()))
    }

    /// A layer that hands spans to `exporter` in batches, describing their origin as `resource`.
    pub fn new(exporter: impl SpanExporter + 'static, resource: Resource) -> Self {
        let mut processor = BatchSpanProcessor::builder(exporter).build();
        processor.set_resource(&resource);
        let scope = InstrumentationScope::builder("backbone").with_version(env!("CARGO_PKG_VERSION")).build();
        Self { processor: Arc::new(processor), scope }
    }

    /// A handle to flush or stop the export.
    pub fn handle(&self) -> OtlpHandle {
        OtlpHandle(self.processor.clone())
    }
}

/// A span's data while it is open.
struct Recording {
    start: SystemTime,
    name: Cow<'static, str>,
    kind: SpanKind,
    attributes: Vec<KeyValue>,
    status: Status,
}

impl Recording {
    fn put(&mut self, field: &Field, value: Value) {
        match field.name() {
            "otel.name" => self.name = Cow::Owned(value.as_str().into_owned()),
            "otel.kind" => self.kind = kind(&value.as_str()).unwrap_or(SpanKind::Internal),
            "otel.status_code" => match &*value.as_str().to_ascii_lowercase() {
                "error" => self.status = Status::error(""),
                "ok" => self.status = Status::Ok,
                _ => {}
            },
            "message" => {}
            name if name == TRACEPARENT => {}
            name => self.attributes.push(KeyValue::new(name, value)),
        }
    }
}

fn kind(name: &str) -> Option<SpanKind> {
    Some(match &*name.to_ascii_lowercase() {
        "server" => SpanKind::Server,
        "client" => SpanKind::Client,
        "producer" => SpanKind::Producer,
        "consumer" => SpanKind::Consumer,
        "internal" => SpanKind::Internal,
        _ => return None,
    })
}

/// Records a span's fields into its [`Recording`].
struct Fields<'a>(&'a mut Recording);

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.put(field, Value::from(value.to_owned()));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.put(field, Value::I64(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        let value = i64::try_from(value).map_or_else(|_| Value::from(value.to_string()), Value::I64);
        self.0.put(field, value);
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.put(field, Value::F64(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.put(field, Value::Bool(value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.put(field, Value::from(format!("{value:?}")));
    }
}

/// An event's `message` field.
#[derive(Default)]
struct Message(String);

impl Visit for Message {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            value.clone_into(&mut self.0);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }
}

impl<S> Layer<S> for OtlpLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut recording = Recording {
            start: SystemTime::now(),
            name: Cow::Borrowed(attrs.metadata().name()),
            kind: SpanKind::Internal,
            attributes: Vec::new(),
            status: Status::Unset,
        };
        attrs.record(&mut Fields(&mut recording));
        span.extensions_mut().insert(recording);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        if let Some(recording) = span.extensions_mut().get_mut::<Recording>() {
            values.record(&mut Fields(recording));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        if *event.metadata().level() != Level::ERROR {
            return;
        }
        let Some(span) = ctx.event_span(event) else { return };
        if let Some(recording) = span.extensions_mut().get_mut::<Recording>() {
            let mut message = Message::default();
            event.record(&mut message);
            recording.status = Status::error(message.0);
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else { return };
        let Some(recording) = span.extensions_mut().remove::<Recording>() else { return };
        let extensions = span.extensions();
        let Some(trace) = extensions.get::<TraceContext>().copied() else { return };
        if !trace.sampled {
            return;
        }
        let parent = extensions.get::<Parent>().copied();
        let span_context = SpanContext::new(
            TraceId::from(trace.trace_id),
            SpanId::from(trace.span_id),
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        );
        self.processor.on_end(SpanData {
            span_context,
            parent_span_id: parent.map_or(SpanId::INVALID, |p| SpanId::from(p.span_id)),
            parent_span_is_remote: parent.is_some_and(|p| p.remote),
            span_kind: recording.kind,
            name: recording.name,
            start_time: recording.start,
            end_time: SystemTime::now(),
            attributes: recording.attributes,
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: recording.status,
            instrumentation_scope: self.scope.clone(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use tracing_subscriber::Registry;
    use tracing_subscriber::layer::SubscriberExt as _;

    /// Keeps what it is given.
    #[derive(Debug, Clone, Default)]
    struct Kept(Arc<Mutex<Vec<SpanData>>>);

    impl SpanExporter for Kept {
        async fn export(&self, batch: Vec<SpanData>) -> opentelemetry_sdk::error::OTelSdkResult {
            self.0.lock().unwrap().extend(batch);
            Ok(())
        }
    }

    #[test]
    fn spans_keep_the_trace_context_ids_and_their_parents() {
        let exporter = Kept::default();
        let layer = OtlpLayer::new(exporter.clone(), Resource::builder_empty().build());
        let handle = layer.handle();
        let subscriber = Registry::default().with(super::super::TraceContextLayer).with(layer);
        let remote = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let (outer, inner) = tracing::subscriber::with_default(subscriber, || {
            let outer = tracing::info_span!(
                "event",
                otel.name = format_args!("process {}", "orders"),
                otel.kind = "consumer",
                messaging.destination.name = "orders",
                messaging.kafka.offset = 7_i64,
                traceparent = remote,
            );
            let _o = outer.enter();
            let outer_ctx = super::super::current_context().unwrap();
            let inner = tracing::info_span!("publish", otel.kind = "producer");
            let _i = inner.enter();
            tracing::error!("the broker refused it");
            (outer_ctx, super::super::current_context().unwrap())
        });
        handle.flush().unwrap();
        let spans = exporter.0.lock().unwrap().clone();
        assert_eq!(spans.len(), 2, "{spans:#?}");
        let find = |id: u64| spans.iter().find(|s| s.span_context.span_id() == SpanId::from(id)).unwrap();
        let (o, i) = (find(outer.span_id), find(inner.span_id));
        assert_eq!(o.name, "process orders");
        assert_eq!(o.span_kind, SpanKind::Consumer);
        assert_eq!(o.span_context.trace_id(), TraceId::from(0x4bf92f3577b34da6a3ce929d0e0e4736_u128));
        assert_eq!(o.parent_span_id, SpanId::from(0x00f067aa0ba902b7_u64));
        assert!(o.parent_span_is_remote);
        assert!(o.attributes.contains(&KeyValue::new("messaging.destination.name", "orders")));
        assert!(o.attributes.contains(&KeyValue::new("messaging.kafka.offset", 7_i64)));
        assert!(!o.attributes.iter().any(|kv| kv.key.as_str() == TRACEPARENT), "the parent is no attribute");
        assert_eq!(o.status, Status::Unset);
        assert_eq!(i.name, "publish");
        assert_eq!(i.span_kind, SpanKind::Producer);
        assert_eq!(i.parent_span_id, SpanId::from(outer.span_id));
        assert!(!i.parent_span_is_remote);
        assert_eq!(i.status, Status::error("the broker refused it"));
    }
}
