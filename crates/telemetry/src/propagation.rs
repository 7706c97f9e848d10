//! W3C trace context in and out of message envelopes: owns the conversion between the
//! current `tracing` span and the `traceparent` string that the runtime's envelope carries
//! (`trace_context: Option<String>`, see `runtime::wire`).
//!
//! Sender side, just before a message is encoded:
//!
//! ```text
//! let tp = telemetry::current_traceparent();           // None when tracing is off
//! remote.tell(&msg, tp.as_deref()).await?;
//! ```
//!
//! Receiver side, around the handling of one delivered message:
//!
//! ```text
//! let span = telemetry::span_with_parent("orderBook.handle", envelope.trace_context);
//! let _g = span.enter();                                  // or `fut.instrument(span)`
//! ```
//!
//! Where the pieces call these (through [`MessageSpan`], see below); each span is recorded
//! only for a sampled context, and each forwards its own context onward:
//!
//! | where | span | sender side | receiver side |
//! | --- | --- | --- | --- |
//! | traders desk, one batch to a book | `orderBook.place` (root, producer) | [`MessageSpan::start`], `ShardRegion::tell_traced` | |
//! | runtime transport reader (`runtime::remote`) | `remote.receive` | callers of `Remoting::tell`/`send_raw`/`try_send_raw` pass the context | the `DeliverFn` of `register_with` gets the span's context in `Inbound::trace_context` |
//! | sharding, `EntityMsg::trace_context` | `orderBook.handle` (trade-processor) | the region's caller | the entity, around its handling |
//! | persistence journal write | `journal.write` | | a child of the entity's span ([`MessageSpan::child`]) |
//! | pub-sub fan-out on a receiving node | `pubsub.deliver` | `publish_traced(topic, msg, trace_context)` | each subscriber's `Delivery::trace_context` |
//! | pricing | `priceAggregator.match`, then `priceAggregator.publish` | the price publish carries the publish span's context | |
//! | receptionist (`cluster_tools::client`) | `receptionist.send`/`.publish`/`.reply`/`.forward` | the client | services, pub-sub, or the client's subscribers |
//! | pricing-web | `websocket.push` | | the price feed's handling of a price update |
//!
//! A handler that sends further (the order book publishing a match, answering a trader)
//! forwards its *own* span's context, not the string it received, so the next node's span
//! is the handler's child:
//!
//! ```text
//! let span = telemetry::span_with_parent("orderBook.place", msg.trace_context.as_deref());
//! let onward = telemetry::propagation::traceparent_of(&span);
//! async { /* persist (journal.write is a child), then */
//!         pubsub.publish_traced(&topic, &m, onward.as_deref()) }.instrument(span).await
//! ```
//!
//! # Message spans: [`MessageSpan`]
//!
//! The runtime, pub-sub, sharding and the services do not call the functions above one by
//! one: they take a [`MessageSpan`], which decides what a handler records and what it sends
//! on, with the cost of each case bounded:
//!
//! | incoming | export off | export on, context unsampled (`-00`) | export on, sampled (`-01`) |
//! | --- | --- | --- | --- |
//! | no context ([`MessageSpan::follow`]) | nothing | nothing | nothing |
//! | a context ([`MessageSpan::follow`]) | forwards it unchanged | forwards it unchanged, no span | a consumer span, child of the sender; forwards its own context |
//! | root ([`MessageSpan::start`]) | nothing | forwards the unsampled context, no span | a producer span; forwards its own context |
//!
//! So with `parentbased_traceidratio` at 1% the 99% of unsampled traces cost a string copy
//! per hop and no span at all, and with export off (no `OTEL_EXPORTER_OTLP_ENDPOINT`)
//! nothing is created, formatted or sent. An unsampled context is not followed by a span
//! whatever the local sampler: a receiver that sampled it on its own would export a fragment
//! whose parent nobody exported. Every message span carries the node it runs on
//! (`cluster.node`), which tells the sandbox's six nodes apart inside one process.
//!
//! Only the `traceparent` travels (`00-<trace id>-<span id>-<flags>`, 55 bytes); `tracestate`
//! does not. An unsampled context travels too, with flags `00`: with a parent-based sampler
//! the receiver then records nothing either, instead of starting a fresh root that would be
//! sampled on its own and show up as a fragment of a trace. When no OpenTelemetry layer is
//! installed (export off) there is no valid context, nothing is formatted and nothing travels.

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::setup::{NoTraceExport, TraceExport};

const TRACEPARENT: &str = "traceparent";

struct One<'a>(Option<&'a str>);

impl Extractor for One<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        if key == TRACEPARENT { self.0 } else { None }
    }

    fn keys(&self) -> Vec<&str> {
        vec![TRACEPARENT]
    }
}

struct Out(Option<String>);

impl Injector for Out {
    fn set(&mut self, key: &str, value: String) {
        if key == TRACEPARENT {
            self.0 = Some(value);
        }
    }
}

/// The `traceparent` of the current `tracing` span, to put into an outgoing envelope.
///
/// `None` when there is no current span, when no OpenTelemetry layer is installed (trace
/// export off), or when the span's context is invalid. A valid but unsampled context is
/// returned with flags `00` (see the module documentation).
pub fn current_traceparent() -> Option<String> {
    traceparent_of(&Span::current())
}

/// Whether `span` belongs to a subscriber this crate built without trace export (or to no
/// subscriber at all): then there is no context to carry or continue.
fn export_off(span: &Span) -> bool {
    span.with_subscriber(|(_, d)| d.is::<NoTraceExport>())
        .unwrap_or(true)
}

/// The `traceparent` of `span` (see [`current_traceparent`]).
pub fn traceparent_of(span: &Span) -> Option<String> {
    if export_off(span) {
        return None;
    }
    let cx = span.context();
    if !cx.span().span_context().is_valid() {
        return None;
    }
    let mut out = Out(None);
    TraceContextPropagator::new().inject_context(&cx, &mut out);
    out.0
}

/// Makes `span` a child of the remote span named by `traceparent`, so a receiver continues
/// the sender's trace. Call it right after creating the span and before entering it (an
/// entered span has started and keeps its parent). Returns whether a parent was set: `false`
/// for `None`, a malformed string, or when no OpenTelemetry layer is installed.
pub fn set_parent(span: &Span, traceparent: Option<&str>) -> bool {
    let Some(tp) = traceparent else { return false };
    if export_off(span) {
        return false;
    }
    let cx = TraceContextPropagator::new().extract(&One(Some(tp)));
    if !cx.span().span_context().is_valid() {
        return false;
    }
    span.set_parent(cx).is_ok()
}

/// An `info` span for handling one delivered message, child of the sender's span when
/// `traceparent` is valid, otherwise of the current span. Its exported name is `name` (the
/// `otel.name` field); its kind is `consumer`. With trace export off this is an ordinary
/// `tracing` span (filtered by `RUST_LOG` like any other) and costs no OpenTelemetry work.
pub fn span_with_parent(name: &str, traceparent: Option<&str>) -> Span {
    let span = tracing::info_span!("message", otel.name = name, otel.kind = "consumer");
    set_parent(&span, traceparent);
    span
}

/// Whether the current subscriber exports traces (one built by this crate with an OTLP
/// traces endpoint). A thread-local lookup and a type check: cheap enough to ask per message.
pub fn traces_exported() -> bool {
    tracing::dispatcher::get_default(|d| d.is::<TraceExport>())
}

/// Whether the sampled flag of a W3C `traceparent` (`00-<trace>-<span>-<flags>`) is set.
/// Looks at the last two characters only; a malformed string counts as not sampled.
pub fn is_sampled(traceparent: &str) -> bool {
    let b = traceparent.as_bytes();
    if b.len() < 55 || b[b.len() - 3] != b'-' {
        return false;
    }
    let low = b[b.len() - 1];
    let v = match low {
        b'0'..=b'9' => low - b'0',
        b'a'..=b'f' => low - b'a' + 10,
        _ => return false,
    };
    v & 1 == 1
}

/// The span around the handling of one message and the `traceparent` to send onward from
/// it; see the module documentation for what is recorded in which case.
///
/// ```text
/// let ms = MessageSpan::follow("orderBook.handle", &node, msg.trace_context.as_deref());
/// async {
///     // ... publish with ms.traceparent() ...
/// }.instrument(ms.span().clone()).await
/// ```
#[derive(Debug, Clone)]
pub struct MessageSpan {
    span: Span,
    onward: Option<String>,
}

impl MessageSpan {
    /// No span and nothing to forward.
    pub fn none() -> Self {
        Self {
            span: Span::none(),
            onward: None,
        }
    }

    /// The receiver side: continues `traceparent` (see the module documentation). `name`
    /// becomes the exported span name (`otel.name`), `node` the `cluster.node` attribute.
    pub fn follow(name: &str, node: &str, traceparent: Option<&str>) -> Self {
        let Some(tp) = traceparent else {
            return Self::none();
        };
        if !is_sampled(tp) || !traces_exported() {
            return Self {
                span: Span::none(),
                onward: Some(tp.to_owned()),
            };
        }
        let span = tracing::info_span!(
            "message",
            otel.name = name,
            otel.kind = "consumer",
            cluster.node = node,
            messaging.destination.name = tracing::field::Empty,
        );
        if !set_parent(&span, Some(tp)) {
            // A malformed context: nothing to continue, and no root started on its account.
            return Self::none();
        }
        let onward = traceparent_of(&span);
        Self { span, onward }
    }

    /// Like [`Self::follow`], but `None` unless a span is recorded (a sampled context and
    /// trace export on): for receivers that can hand the incoming string on as it is
    /// otherwise, without copying it.
    ///
    /// ```text
    /// let ms = MessageSpan::sampled("pubsub.deliver", &node, inb.trace_context);
    /// let _g = ms.as_ref().map(|m| m.span().enter());
    /// let onward = ms.as_ref().map_or(inb.trace_context, |m| m.traceparent());
    /// ```
    pub fn sampled(name: &str, node: &str, traceparent: Option<&str>) -> Option<Self> {
        match traceparent {
            Some(tp) if is_sampled(tp) && traces_exported() => {
                Some(Self::follow(name, node, Some(tp))).filter(Self::is_recording)
            }
            _ => None,
        }
    }

    /// The sender side of a new trace (a trader placing orders): a root span when traces are
    /// exported and the sampler keeps it; an unsampled decision still travels (flags `00`)
    /// so that the receivers follow it. With export off: nothing.
    pub fn start(name: &str, node: &str) -> Self {
        if !traces_exported() {
            return Self::none();
        }
        let span = tracing::info_span!(
            parent: None,
            "message",
            otel.name = name,
            otel.kind = "producer",
            cluster.node = node,
            messaging.destination.name = tracing::field::Empty,
        );
        let onward = traceparent_of(&span);
        match onward {
            Some(tp) if is_sampled(&tp) => Self {
                span,
                onward: Some(tp),
            },
            // Not sampled: the span would record nothing; only the decision travels.
            other => Self {
                span: Span::none(),
                onward: other,
            },
        }
    }

    /// Records the topic, queue or entity type the message went to (OpenTelemetry's
    /// `messaging.destination.name`); nothing when no span is recorded.
    pub fn with_destination(self, destination: &str) -> Self {
        if !self.span.is_none() {
            self.span.record("messaging.destination.name", destination);
        }
        self
    }

    /// A child span of this one (`internal`), e.g. the work a handler does in steps; a
    /// disabled span when this one records nothing.
    pub fn child(&self, name: &str) -> Span {
        if self.span.is_none() {
            return Span::none();
        }
        tracing::info_span!(
            parent: &self.span,
            "message",
            otel.name = name,
            otel.kind = "internal",
        )
    }

    /// The span to enter or instrument the handling with (disabled when nothing is
    /// recorded, which costs nothing to enter).
    pub fn span(&self) -> &Span {
        &self.span
    }

    /// Whether a span is recorded (the trace is sampled and exported).
    pub fn is_recording(&self) -> bool {
        !self.span.is_none()
    }

    /// The `traceparent` for messages sent while handling: this span's own context when it
    /// records, else the incoming context unchanged, else `None`.
    pub fn traceparent(&self) -> Option<&str> {
        self.onward.as_deref()
    }

    /// Takes the onward `traceparent` (see [`Self::traceparent`]).
    pub fn into_traceparent(self) -> Option<String> {
        self.onward
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_an_opentelemetry_layer_nothing_travels() {
        let dispatch = tracing::Dispatch::new(tracing_subscriber::registry());
        tracing::dispatcher::with_default(&dispatch, || {
            let span = tracing::info_span!("send");
            let _g = span.enter();
            assert_eq!(current_traceparent(), None);
            let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
            let child = span_with_parent("receive", Some(tp));
            assert!(!set_parent(&child, Some(tp)));
            assert_eq!(traceparent_of(&child), None);
        });
    }

    #[test]
    fn the_sampled_flag_is_read_from_the_end() {
        let t = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331";
        assert!(is_sampled(&format!("{t}-01")));
        assert!(is_sampled(&format!("{t}-03")));
        assert!(!is_sampled(&format!("{t}-00")));
        assert!(!is_sampled(&format!("{t}-02")));
        assert!(!is_sampled("00-short-01"));
        assert!(!is_sampled(&format!("{t}-0z")));
    }

    #[test]
    fn message_spans_without_export_create_nothing_and_forward_what_came() {
        let dispatch = tracing::Dispatch::new(tracing_subscriber::registry());
        tracing::dispatcher::with_default(&dispatch, || {
            assert!(!traces_exported());
            let root = MessageSpan::start("desk.send", "n1");
            assert!(!root.is_recording());
            assert_eq!(root.traceparent(), None);
            assert!(MessageSpan::follow("x", "n1", None).traceparent().is_none());
            let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
            let f = MessageSpan::follow("x", "n1", Some(tp));
            assert!(!f.is_recording());
            assert_eq!(f.traceparent(), Some(tp));
            assert!(f.child("y").is_none());
            assert!(MessageSpan::sampled("x", "n1", Some(tp)).is_none());
        });
    }

    #[test]
    fn no_span_no_traceparent() {
        assert_eq!(current_traceparent(), None);
        assert!(!set_parent(&Span::none(), Some("garbage")));
    }
}
