//! Observability for every akka-cqrs-rs process: logs, traces that follow a message across
//! nodes, and metrics. Trading-agnostic: it knows tracing, OpenTelemetry and Prometheus, not
//! orders.
//!
//! # One call per binary
//!
//! ```no_run
//! fn main() -> Result<(), telemetry::TelemetryError> {
//!     let guard = telemetry::init("trade-processor")?;
//!     // ... serve `guard.metrics().render()` on the management port's `/metrics` ...
//!     drop(guard); // flushes the last spans and metrics
//!     Ok(())
//! }
//! ```
//!
//! [`init`] reads the environment ([`TelemetryBuilder::from_env`] lists every variable):
//!
//! - **Logs**: `tracing-subscriber` fmt output on stderr (stdout stays the programs' own:
//!   the sandbox's banner and bench figures), filtered by `RUST_LOG` (default
//!   `info`); `LOG_FORMAT=json` for one JSON object per line in containers.
//! - **Traces**: only when `OTEL_EXPORTER_OTLP_ENDPOINT` (or `..._TRACES_ENDPOINT`) is set, a
//!   `tracing-opentelemetry` layer turns `tracing` spans into OpenTelemetry spans, sampled by
//!   `OTEL_TRACES_SAMPLER`/`OTEL_TRACES_SAMPLER_ARG` and exported in batches. When it is unset
//!   there is no OpenTelemetry layer at all: no exporter thread, no per-span OpenTelemetry work.
//! - **Metrics**: always an OpenTelemetry `MeterProvider` whose Prometheus text rendering
//!   ([`Metrics::render`]) backs each node's `/metrics`; with an OTLP endpoint the same
//!   instruments are also pushed over OTLP.
//!
//! # Exporter choice: OTLP over HTTP with protobuf bodies
//!
//! Spans and metrics go to `{OTEL_EXPORTER_OTLP_ENDPOINT}/v1/traces` and `/v1/metrics` as
//! `application/x-protobuf` (the collector's port 4318; Jaeger all-in-one serves it), sent
//! from the SDK's own batch threads, so exporting never runs on the application's tokio
//! workers. The HTTP client is a small hyper one of this crate (hyper is already linked by
//! the runtime) rather than the exporter's reqwest client, and gRPC would bring tonic's
//! transport and an HTTP/2 stack: neither `reqwest` nor tonic's transport is built. (The OTLP
//! message types come from `opentelemetry-proto`, which names `tonic` for its generated types
//! but without any transport.) No TLS client is compiled in: endpoints are plain `http://`
//! inside the cluster network.
//!
//! # Modules
//!
//! - [`TelemetryBuilder`], [`Telemetry`], [`TelemetryGuard`]: configuration and setup, one
//!   subscriber per process ([`TelemetryBuilder::install`]) or per simulated node in a test
//!   ([`TelemetryBuilder::build`] gives a [`tracing::Dispatch`]).
//! - [`propagation`]: W3C `traceparent` in and out of message envelopes.
//! - [`metrics`]: the meter provider and its Prometheus text exposition.
//! - [`instruments`]: the instrument names (OpenTelemetry semantic conventions where one
//!   exists) and cheap atomic handles for hot paths.
//! - `testing` (feature `testing`): an in-process OTLP/HTTP collector for integration tests,
//!   and `render_trace`, which draws a received trace as a tree (the `otlp-sink` example).

#![warn(missing_docs)]

mod error;
mod exposition;
mod http_client;
pub mod instruments;
pub mod metrics;
pub mod propagation;
mod setup;
#[cfg(feature = "testing")]
pub mod testing;

/// The OpenTelemetry API this crate is built on (attribute `KeyValue`s, `Meter`), re-exported
/// so that instrumented crates use the same version without naming it.
pub use opentelemetry;

pub use error::TelemetryError;
pub use metrics::Metrics;
pub use propagation::{
    MessageSpan, current_traceparent, set_parent, span_with_parent, traces_exported,
};
pub use setup::{
    LogFormat, SamplerConfig, Telemetry, TelemetryBuilder, TelemetryGuard, init, otlp_signal_url,
};
