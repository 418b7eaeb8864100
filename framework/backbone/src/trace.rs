//! W3C trace context (`traceparent`) carried by tracing spans, and the correlation id carried by tasks.
//!
//! Install [`TraceContextLayer`] in your subscriber and every span gets a W3C trace id and span id:
//! a root span starts a new trace, a child span continues its parent's, and a span with a
//! `traceparent` field (as the consumer's per-event span has) continues the remote producer's trace.
//! [`current_traceparent`] gives the header for the current span; publishing puts it on every event.
//! Without the layer, each publish starts a fresh trace.
//!
//! # Correlation ids
//!
//! A correlation id names a causal chain: every event published while handling another carries the
//! handled event's. The one rule, for an event being handled (implemented once, by
//! `IncomingEvent`, and used both for the task's [`correlation_id`] and by the
//! [`CorrelationId`](crate::handler::CorrelationId) extractor):
//!
//! 1. its `backbone-correlation-id` header ([`crate::headers::CORRELATION_ID`]);
//! 2. else the trace id of its `traceparent`: an event whose correlation id is its trace id (the
//!    usual case: one published with none in scope starts a chain named by its trace id) carries no
//!    correlation header, only `traceparent`; the header is written only when the two differ. Events
//!    of older backbone versions carry both, equal, and read the same;
//! 3. else its origin, `topic:partition:offset`, for the task (stable across retries). The
//!    extractor never makes one up: there it is missing (`Option<CorrelationId>` is `None`).
//!
//! A correlation header that is not UTF-8 is malformed: the extractor fails, the task uses the origin.

use std::fmt;
use std::sync::Arc;

#[cfg(feature = "otlp")]
pub mod otlp;

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::{Dispatch, Subscriber};
use tracing_subscriber::Registry;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt as _};
use tracing_subscriber::registry::LookupSpan;

/// The W3C header name (declared in [`crate::headers`]).
pub use crate::headers::TRACEPARENT;

/// A span's place in a W3C trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    /// 16-byte trace id (never all zero).
    pub trace_id: u128,
    /// 8-byte span id (never zero).
    pub span_id: u64,
    /// Whether the trace is sampled.
    pub sampled: bool,
}

impl TraceContext {
    /// A new root context: a fresh trace id and span id, sampled.
    pub fn new_root() -> Self {
        Self { trace_id: random_u128(), span_id: random_u64(), sampled: true }
    }

    /// A child of this context: same trace, new span id.
    pub fn child(&self) -> Self {
        Self { span_id: random_u64(), ..*self }
    }

    /// Parses a `traceparent` header value (`00-<32 hex>-<16 hex>-<2 hex>`).
    pub fn parse(header: &str) -> Option<Self> {
        let mut parts = header.trim().split('-');
        let (version, trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if version.len() != 2 || version == "ff" || trace.len() != 32 || span.len() != 16 || flags.len() != 2
        {
            return None;
        }
        let trace_id = u128::from_str_radix(trace, 16).ok().filter(|t| *t != 0)?;
        let span_id = u64::from_str_radix(span, 16).ok().filter(|s| *s != 0)?;
        let flags = u8::from_str_radix(flags, 16).ok()?;
        Some(Self { trace_id, span_id, sampled: flags & 1 == 1 })
    }
}

impl fmt::Display for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(std::str::from_utf8(&self.header_bytes()).expect("ASCII"))
    }
}

// Trace and span ids need to be unique, not secret: a per-thread generator seeded from the OS once
// (fastrand's wyrand) costs nanoseconds, where a getrandom call per id costs a system call.
fn random_u128() -> u128 {
    loop {
        let v = fastrand::u128(..);
        if v != 0 {
            return v;
        }
    }
}

fn random_u64() -> u64 {
    loop {
        let v = fastrand::u64(..);
        if v != 0 {
            return v;
        }
    }
}

impl TraceContext {
    /// The `traceparent` header value, written without the formatting machinery (hot path).
    pub fn header_value(&self) -> String {
        String::from_utf8(self.header_bytes().to_vec()).expect("ASCII")
    }

    /// The `traceparent` header value as bytes on the stack (no allocation).
    pub fn header_bytes(&self) -> [u8; 55] {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = *b"00-00000000000000000000000000000000-0000000000000000-00";
        for i in 0..32 {
            out[3 + i] = HEX[((self.trace_id >> ((31 - i) * 4)) & 0xf) as usize];
        }
        for i in 0..16 {
            out[36 + i] = HEX[((self.span_id >> ((15 - i) * 4)) & 0xf) as usize];
        }
        if self.sampled {
            out[54] = b'1';
        }
        out
    }

    /// The trace id as 32 lower-case hex digits.
    pub fn trace_id_hex(&self) -> String {
        String::from_utf8(self.header_bytes()[3..35].to_vec()).expect("ASCII")
    }
}

/// A [`tracing_subscriber::Layer`] that gives every span a W3C [`TraceContext`].
#[derive(Debug, Clone, Copy, Default)]
pub struct TraceContextLayer;

struct TraceparentField(Option<TraceContext>);

impl Visit for TraceparentField {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == TRACEPARENT {
            self.0 = TraceContext::parse(value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == TRACEPARENT {
            self.0 = TraceContext::parse(format!("{value:?}").trim_matches('"'));
        }
    }
}

impl<S> Layer<S> for TraceContextLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut remote = TraceparentField(None);
        attrs.record(&mut remote);
        let (context, parent) = match remote.0 {
            Some(remote) => (remote.child(), Some(Parent { span_id: remote.span_id, remote: true })),
            None => match span.parent().and_then(|p| p.extensions().get::<TraceContext>().copied()) {
                Some(local) => (local.child(), Some(Parent { span_id: local.span_id, remote: false })),
                None => (TraceContext::new_root(), None),
            },
        };
        let mut extensions = span.extensions_mut();
        extensions.insert(context);
        if let Some(parent) = parent {
            extensions.insert(parent);
        }
    }
}

/// The span a span continues (what an exporter names as its parent): none for a root span.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(not(feature = "otlp"), allow(dead_code))]
pub(crate) struct Parent {
    /// The parent's span id.
    pub(crate) span_id: u64,
    /// Whether the parent is another process's (a `traceparent` header's).
    pub(crate) remote: bool,
}

/// The trace context of the current span, if a [`TraceContextLayer`] is installed on a
/// `tracing_subscriber::Registry`.
pub fn current_context() -> Option<TraceContext> {
    tracing::Span::current()
        .with_subscriber(|(id, dispatch): (&Id, &Dispatch)| {
            let registry = dispatch.downcast_ref::<Registry>()?;
            let span = registry.span(id)?;
            span.extensions().get::<TraceContext>().copied()
        })
        .flatten()
}

/// The `traceparent` for an event published now: the current span's context, or a new trace.
pub fn current_traceparent() -> String {
    current_context().unwrap_or_else(TraceContext::new_root).header_value()
}

/// The target of the framework's publish spans (`debug`, and enabled only while spans are exported:
/// a span per published event costs the hot path when nobody reads it).
pub(crate) const PUBLISH_TARGET: &str = "backbone::publish";

/// The producer span of one event published to `topic`: `debug` under [`PUBLISH_TARGET`], so it
/// exists only while spans are exported. The event's `traceparent` names it as the parent.
pub(crate) fn publish_span(topic: &str) -> tracing::Span {
    tracing::debug_span!(
        target: PUBLISH_TARGET,
        "publish",
        otel.name = format_args!("send {topic}"),
        otel.kind = "producer",
        otel.status_code = tracing::field::Empty,
        messaging.system = "kafka",
        messaging.operation.type = "send",
        messaging.destination.name = topic,
        messaging.destination.partition.id = tracing::field::Empty,
        messaging.kafka.offset = tracing::field::Empty,
    )
}

/// Whether [`TraceContextLayer`] should give a span a trace context whatever the log level says: the
/// spans at `info` and above, the framework's included (a quiet log must not cut traces apart).
/// For a subscriber of your own: `TraceContextLayer.with_filter(filter_fn(trace::is_traced))`.
pub fn is_traced(meta: &tracing::Metadata<'_>) -> bool {
    meta.is_span() && *meta.level() <= tracing::Level::INFO
}

/// What [`init`] installed; [`shutdown`](Self::shutdown) it before the process exits, so the last
/// spans are exported.
#[derive(Debug, Default)]
#[must_use = "shut the telemetry down before the process exits (`Telemetry::shutdown`)"]
pub struct Telemetry {
    #[cfg(feature = "otlp")]
    otlp: Option<otlp::OtlpHandle>,
}

impl Telemetry {
    /// Whether spans are exported (feature `otlp`, and the environment asked for it).
    pub fn exporting(&self) -> bool {
        #[cfg(feature = "otlp")]
        return self.otlp.is_some();
        #[cfg(not(feature = "otlp"))]
        false
    }

    /// Exports the spans not exported yet and stops the export (a failure is logged).
    pub fn shutdown(self) {
        #[cfg(feature = "otlp")]
        if let Some(otlp) = self.otlp
            && let Err(e) = otlp.shutdown()
        {
            tracing::warn!(error = %e, "spans not exported");
        }
    }
}

/// Installs the process's `tracing` subscriber, if none is set yet:
///
/// - JSON lines on stdout, filtered by `RUST_LOG` (default `info`): what a container platform
///   collects;
/// - [`TraceContextLayer`], so that events published while handling an event or an HTTP request
///   continue its trace (the framework's spans carry the incoming `traceparent`);
/// - with the `otlp` feature and `OTEL_EXPORTER_OTLP_ENDPOINT` set, `otlp::OtlpLayer`: spans
///   exported under the name `service` (unless `OTEL_SERVICE_NAME` says otherwise), and a span per
///   published event. An exporter that cannot be built is logged, and the service runs without.
///
/// Spans get trace contexts as [`is_traced`] says, whatever `RUST_LOG` says.
pub fn init(service: &str) -> Telemetry {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::util::SubscriberInitExt as _;

    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt::layer().json().with_filter(filter);
    #[cfg(feature = "otlp")]
    let (exporter, problem) = match otlp::OtlpLayer::from_env(service) {
        Ok(layer) => (layer, None),
        Err(e) => (None, Some(e)),
    };
    #[cfg(not(feature = "otlp"))]
    let _ = service;
    #[cfg(feature = "otlp")]
    let exporting = exporter.is_some();
    #[cfg(not(feature = "otlp"))]
    let exporting = false;
    let spans = move |meta: &tracing::Metadata<'_>| {
        is_traced(meta) || (exporting && meta.is_span() && meta.target() == PUBLISH_TARGET)
    };
    let registry = tracing_subscriber::registry()
        .with(logs)
        .with(TraceContextLayer.with_filter(tracing_subscriber::filter::filter_fn(spans)));
    #[cfg(feature = "otlp")]
    {
        let handle = exporter.as_ref().map(otlp::OtlpLayer::handle);
        let errors = |meta: &tracing::Metadata<'_>| meta.is_event() && *meta.level() == tracing::Level::ERROR;
        let export = exporter.map(|layer| {
            layer.with_filter(tracing_subscriber::filter::filter_fn(move |meta| spans(meta) || errors(meta)))
        });
        let installed = registry.with(export).try_init().is_ok();
        if let Some(e) = problem {
            tracing::error!(error = %e, "spans are not exported");
        }
        Telemetry { otlp: handle.filter(|_| installed) }
    }
    #[cfg(not(feature = "otlp"))]
    {
        let _ = registry.try_init();
        Telemetry {}
    }
}

/// Where a task's correlation id comes from (opaque; see [`correlation_id`]). An event's is worked
/// out only when asked for (most handlers never publish), so setting it costs the consumer no
/// allocation per event.
#[derive(Debug, Clone)]
pub struct Correlation(Source);

#[derive(Debug, Clone)]
enum Source {
    /// Given as is.
    Id(String),
    /// Worked out when asked for: an event being handled, by the rule in the module's documentation.
    Lazy(Arc<dyn CorrelationSource>),
}

/// Something a correlation id can be worked out of when asked for: the event being handled
/// (implemented next to it, in [`crate::handler`]).
pub(crate) trait CorrelationSource: fmt::Debug + Send + Sync {
    /// The correlation id.
    fn correlation_id(&self) -> String;
}

impl Correlation {
    /// The correlation of something being handled, worked out only when asked for.
    pub(crate) fn lazy(source: Arc<dyn CorrelationSource>) -> Self {
        Self(Source::Lazy(source))
    }

    fn id(&self) -> String {
        match &self.0 {
            Source::Id(id) => id.clone(),
            Source::Lazy(source) => source.correlation_id(),
        }
    }
}

tokio::task_local! {
    static CORRELATION_ID: Correlation;
}

/// Runs `future` with `id` as its correlation id: every event it publishes carries it.
pub async fn with_correlation_id<F: std::future::Future>(id: impl Into<String>, future: F) -> F::Output {
    CORRELATION_ID.scope(Correlation(Source::Id(id.into())), future).await
}

/// Runs `future` with `correlation` as its correlation id, without boxing or awaiting.
pub(crate) fn scope_correlation<F: std::future::Future>(
    correlation: Correlation,
    future: F,
) -> tokio::task::futures::TaskLocalFuture<Correlation, F> {
    CORRELATION_ID.scope(correlation, future)
}

/// The current task's correlation id, if one is set: the id given to [`with_correlation_id`], or
/// that of the event being handled (the rule in the [module's documentation](self)).
pub fn correlation_id() -> Option<String> {
    CORRELATION_ID.try_with(Correlation::id).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_round_trips() {
        let c = TraceContext::new_root();
        assert_eq!(TraceContext::parse(&c.to_string()), Some(c));
        assert_eq!(TraceContext::parse("00-00000000000000000000000000000000-0000000000000001-01"), None);
        assert_eq!(TraceContext::parse("garbage"), None);
        let w3c = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(TraceContext::parse(w3c).unwrap().to_string(), w3c);
        assert_eq!(TraceContext::parse(w3c).unwrap().header_value(), w3c);
        assert_eq!(TraceContext::parse(w3c).unwrap().trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        let small = TraceContext { trace_id: 1, span_id: 2, sampled: false };
        assert_eq!(small.header_value(), "00-00000000000000000000000000000001-0000000000000002-00");
        assert_eq!(small.to_string(), small.header_value());
    }

    #[test]
    fn spans_continue_their_parent_and_remote_traces() {
        let subscriber = Registry::default().with(TraceContextLayer);
        tracing::subscriber::with_default(subscriber, || {
            assert_eq!(current_context(), None, "no span, no context");
            let root = tracing::info_span!("root");
            let _r = root.enter();
            let root_ctx = current_context().expect("root context");
            let child = tracing::info_span!("child");
            let _c = child.enter();
            let child_ctx = current_context().expect("child context");
            assert_eq!(child_ctx.trace_id, root_ctx.trace_id);
            assert_ne!(child_ctx.span_id, root_ctx.span_id);

            let remote = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
            let handled = tracing::info_span!("handle", traceparent = remote);
            let _h = handled.enter();
            assert_eq!(current_context().unwrap().trace_id, 0x4bf92f3577b34da6a3ce929d0e0e4736);
            assert!(current_traceparent().starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
        });
    }

    #[tokio::test]
    async fn correlation_id_is_task_scoped() {
        assert_eq!(correlation_id(), None);
        let inside = with_correlation_id("req-42", async { correlation_id() }).await;
        assert_eq!(inside.as_deref(), Some("req-42"));
    }
}
