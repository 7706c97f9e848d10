//! The meter provider of one node: owns the OpenTelemetry `SdkMeterProvider`, the pull reader
//! behind `/metrics`, and the optional OTLP push.
//!
//! # Why a renderer of our own rather than `opentelemetry-prometheus`
//!
//! The `opentelemetry-prometheus` release for the workspace's OpenTelemetry 0.31 is marked
//! discontinued ("no longer maintained") by its authors, and it drags in the `prometheus` and
//! `protobuf` crates only to print text. A `ManualReader` plus the few hundred lines of
//! `exposition` (text format 0.0.4, per the OpenTelemetry Prometheus compatibility rules)
//! keep `/metrics` on the SDK's own data model, whatever instruments the runtime and the
//! services create, with no second registry.
//!
//! # Use
//!
//! ```
//! use opentelemetry::KeyValue;
//! let metrics = telemetry::Metrics::standalone("pricing");
//! let handoffs = metrics.meter().u64_counter("cluster.sharding.handoffs").build();
//! handoffs.add(1, &[KeyValue::new("cluster.sharding.type_name", "priceAggregator")]);
//! let text = metrics.render().unwrap();
//! assert!(text.contains(r#"cluster_sharding_handoffs_total{cluster_sharding_type_name="priceAggregator"} 1"#));
//! ```
//!
//! Serve [`Metrics::render`] with [`PROMETHEUS_CONTENT_TYPE`] from the management port.

use std::sync::{Arc, Weak};
use std::time::Duration;

use opentelemetry::metrics::{Meter, MeterProvider as _};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::metrics::data::ResourceMetrics;
use opentelemetry_sdk::metrics::reader::MetricReader;
use opentelemetry_sdk::metrics::{
    InstrumentKind, ManualReader, PeriodicReader, Pipeline, SdkMeterProvider, Temporality,
};

use crate::error::TelemetryError;

/// The `Content-Type` of Prometheus text exposition format 0.0.4.
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Instrumentation scope of [`Metrics::meter`].
pub const DEFAULT_SCOPE: &str = "akka-cqrs";

/// A `ManualReader` shared between the provider (which drives it) and [`Metrics::render`].
#[derive(Debug, Clone)]
struct PullReader(Arc<ManualReader>);

impl MetricReader for PullReader {
    fn register_pipeline(&self, pipeline: Weak<Pipeline>) {
        self.0.register_pipeline(pipeline)
    }

    fn collect(&self, rm: &mut ResourceMetrics) -> OTelSdkResult {
        self.0.collect(rm)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.0.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }

    /// Prometheus counters are cumulative.
    fn temporality(&self, _kind: InstrumentKind) -> Temporality {
        Temporality::Cumulative
    }
}

/// One node's metrics: create instruments from [`Metrics::meter`], render them for
/// `/metrics` with [`Metrics::render`]. Cloning shares the same provider.
#[derive(Debug, Clone)]
pub struct Metrics {
    provider: SdkMeterProvider,
    reader: PullReader,
    meter: Meter,
}

impl Metrics {
    /// Metrics for `/metrics` only (no OTLP push), with `service.name` as the only resource
    /// attribute: for tests and for code that runs without [`crate::init`].
    pub fn standalone(service_name: &str) -> Self {
        let resource = Resource::builder_empty()
            .with_service_name(service_name.to_owned())
            .build();
        Self::build(
            resource,
            None,
            Duration::from_secs(60),
            Duration::from_secs(10),
        )
        .expect("a provider without an exporter always builds")
    }

    /// Like [`Metrics::standalone`] for one of several nodes of a process:
    /// `service.instance.id` = `instance_id` as well.
    pub fn standalone_instance(service_name: &str, instance_id: &str) -> Self {
        let resource = Resource::builder_empty()
            .with_service_name(service_name.to_owned())
            .with_attribute(opentelemetry::KeyValue::new(
                "service.instance.id",
                instance_id.to_owned(),
            ))
            .build();
        Self::build(
            resource,
            None,
            Duration::from_secs(60),
            Duration::from_secs(10),
        )
        .expect("a provider without an exporter always builds")
    }

    /// A provider with the pull reader, plus a periodic OTLP/HTTP push to `otlp_url` when set
    /// (each push limited to `timeout`).
    pub(crate) fn build(
        resource: Resource,
        otlp_url: Option<&str>,
        interval: Duration,
        timeout: Duration,
    ) -> Result<Self, TelemetryError> {
        let reader = PullReader(Arc::new(
            ManualReader::builder()
                .with_temporality(Temporality::Cumulative)
                .build(),
        ));
        let mut builder = SdkMeterProvider::builder()
            .with_resource(resource)
            .with_reader(reader.clone());
        if let Some(url) = otlp_url {
            let exporter = opentelemetry_otlp::MetricExporter::builder()
                .with_http()
                .with_protocol(Protocol::HttpBinary)
                .with_endpoint(url.to_owned())
                .with_http_client(crate::setup::http_client(timeout, "metrics")?)
                .with_temporality(Temporality::Cumulative)
                .build()
                .map_err(|e| TelemetryError::Exporter {
                    signal: "metrics",
                    reason: e.to_string(),
                })?;
            builder = builder.with_reader(
                PeriodicReader::builder(exporter)
                    .with_interval(interval)
                    .build(),
            );
        }
        let provider = builder.build();
        let meter = provider.meter(DEFAULT_SCOPE);
        Ok(Self {
            provider,
            reader,
            meter,
        })
    }

    /// The meter of scope [`DEFAULT_SCOPE`]; instruments created from it appear on
    /// `/metrics` and in the OTLP push.
    pub fn meter(&self) -> &Meter {
        &self.meter
    }

    /// A meter with its own instrumentation scope (e.g. `"runtime"`, `"persistence"`).
    pub fn meter_with_scope(&self, scope: &'static str) -> Meter {
        self.provider.meter(scope)
    }

    /// The SDK provider (to install globally, or to add views in tests).
    pub fn provider(&self) -> &SdkMeterProvider {
        &self.provider
    }

    /// Collects every instrument now and renders Prometheus text format 0.0.4 (serve it with
    /// [`PROMETHEUS_CONTENT_TYPE`]). Observable instruments' callbacks run here.
    pub fn render(&self) -> Result<String, TelemetryError> {
        let mut rm = ResourceMetrics::default();
        self.reader
            .collect(&mut rm)
            .map_err(|e| TelemetryError::Collect(e.to_string()))?;
        Ok(crate::exposition::render(&rm))
    }

    /// Pushes metrics to the OTLP endpoint now, when one is configured (blocking).
    pub fn flush(&self) -> Result<(), TelemetryError> {
        self.provider
            .force_flush()
            .map_err(|e| TelemetryError::Exporter {
                signal: "metrics",
                reason: e.to_string(),
            })
    }

    /// Stops the provider: a last OTLP push, then [`Metrics::render`] fails.
    pub(crate) fn shutdown(&self) {
        // Already shut down (a clone did it) is the only expected error; nothing to report.
        let _ = self.provider.shutdown();
    }
}
