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
//! Where the pieces call these (the envelope fields already exist):
//!
//! | where | sender side | receiver side |
//! | --- | --- | --- |
//! | runtime `Remoting::tell`/`send_raw`/`try_send_raw`, `ResolvedRef::tell` | callers pass `current_traceparent().as_deref()` | the `DeliverFn` of `register_with` gets `Inbound::trace_context`; the actor handling the decoded message opens `span_with_parent(recipient, trace)` |
//! | sharding `ShardRegion::tell_traced` -> `EntityMsg::trace_context` | the region's caller | the entity, around `handle`: `span_with_parent("<type>.handle", msg.trace_context.as_deref())` |
//! | pub-sub `publish(topic, msg, trace_context)` | the publisher | each subscriber's delivery, as above |
//! | cluster client / receptionist, singleton proxy `tell_traced` | the client | the receptionist forwards the string unchanged; the final handler opens the span |
//! | persistence journal write | nothing to carry: a plain `info_span!("journal.write")` inside the entity's span is its child |
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

use crate::setup::NoTraceExport;

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
    fn no_span_no_traceparent() {
        assert_eq!(current_traceparent(), None);
        assert!(!set_parent(&Span::none(), Some("garbage")));
    }
}
