//! Configuration and installation: owns the reading of the standard environment variables,
//! the composition of the `tracing` subscriber (filter, fmt output, OpenTelemetry layer), the
//! tracer and meter providers, and the guard that flushes them.

use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::resource::TelemetryResourceDetector;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing::Dispatch;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::layer::{Layered, SubscriberExt};
use tracing_subscriber::{EnvFilter, Layer, Registry};

use crate::error::TelemetryError;
use crate::http_client::OtlpHttpClient;
use crate::metrics::Metrics;

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines (`LOG_FORMAT=text`, the default).
    Text,
    /// One JSON object per line, with the current span's fields (`LOG_FORMAT=json`).
    Json,
    /// No log output at all (tests and benchmarks; not reachable from the environment).
    Off,
}

impl LogFormat {
    fn parse(value: &str) -> Result<Self, TelemetryError> {
        match value.trim().to_ascii_lowercase().as_str() {
            "" | "text" | "plain" | "pretty" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            _ => Err(invalid("LOG_FORMAT", value, "expected `text` or `json`")),
        }
    }
}

/// The trace sampler, as named by `OTEL_TRACES_SAMPLER` (argument `OTEL_TRACES_SAMPLER_ARG`).
///
/// The parent-based variants follow the sampling decision carried in an incoming
/// `traceparent`, so a trace is either kept on every node it crosses or on none; the ratio
/// applies only where a trace starts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SamplerConfig {
    /// `always_on`: every span.
    AlwaysOn,
    /// `always_off`: no span.
    AlwaysOff,
    /// `traceidratio`: this fraction of trace ids, ignoring the parent's decision.
    TraceIdRatio(f64),
    /// `parentbased_always_on` (the OpenTelemetry default).
    ParentBasedAlwaysOn,
    /// `parentbased_always_off`.
    ParentBasedAlwaysOff,
    /// `parentbased_traceidratio`: roots sampled at this fraction, children follow the parent
    /// (e.g. `OTEL_TRACES_SAMPLER_ARG=0.01` under load).
    ParentBasedTraceIdRatio(f64),
}

impl SamplerConfig {
    /// Parses the values of `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG`; an unset
    /// sampler means `parentbased_always_on`, an unset ratio means 1.0. Values outside the
    /// specification are refused with the variable's name.
    pub fn parse(sampler: Option<&str>, arg: Option<&str>) -> Result<Self, TelemetryError> {
        let ratio = || -> Result<f64, TelemetryError> {
            match arg.map(str::trim).filter(|a| !a.is_empty()) {
                None => Ok(1.0),
                Some(a) => match a.parse::<f64>() {
                    Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
                    _ => Err(invalid(
                        "OTEL_TRACES_SAMPLER_ARG",
                        a,
                        "expected a number between 0.0 and 1.0",
                    )),
                },
            }
        };
        let name = sampler.map(str::trim).unwrap_or("");
        Ok(match name.to_ascii_lowercase().as_str() {
            "" | "parentbased_always_on" => Self::ParentBasedAlwaysOn,
            "always_on" => Self::AlwaysOn,
            "always_off" => Self::AlwaysOff,
            "traceidratio" => Self::TraceIdRatio(ratio()?),
            "parentbased_always_off" => Self::ParentBasedAlwaysOff,
            "parentbased_traceidratio" => Self::ParentBasedTraceIdRatio(ratio()?),
            _ => {
                return Err(invalid(
                    "OTEL_TRACES_SAMPLER",
                    name,
                    "expected always_on, always_off, traceidratio, parentbased_always_on, \
                     parentbased_always_off or parentbased_traceidratio",
                ));
            }
        })
    }

    /// The SDK sampler for this configuration.
    pub fn to_sampler(self) -> Sampler {
        match self {
            Self::AlwaysOn => Sampler::AlwaysOn,
            Self::AlwaysOff => Sampler::AlwaysOff,
            Self::TraceIdRatio(r) => Sampler::TraceIdRatioBased(r),
            Self::ParentBasedAlwaysOn => Sampler::ParentBased(Box::new(Sampler::AlwaysOn)),
            Self::ParentBasedAlwaysOff => Sampler::ParentBased(Box::new(Sampler::AlwaysOff)),
            Self::ParentBasedTraceIdRatio(r) => {
                Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(r)))
            }
        }
    }
}

fn invalid(var: &'static str, value: &str, reason: &str) -> TelemetryError {
    TelemetryError::InvalidSetting {
        var,
        value: value.to_owned(),
        reason: reason.to_owned(),
    }
}

/// The URL of one OTLP/HTTP signal under a base endpoint, as the specification derives it
/// from `OTEL_EXPORTER_OTLP_ENDPOINT`: `http://jaeger:4318` + `traces` ->
/// `http://jaeger:4318/v1/traces`.
pub fn otlp_signal_url(base: &str, signal: &str) -> String {
    format!("{}/v1/{signal}", base.trim_end_matches('/'))
}

/// Everything [`init`] needs, filled from the environment ([`TelemetryBuilder::from_env`]) or
/// set in code (tests, several simulated nodes in one process).
#[derive(Debug, Clone)]
pub struct TelemetryBuilder {
    service_name: String,
    instance_id: Option<String>,
    resource_attributes: Vec<KeyValue>,
    log_filter: String,
    log_format: LogFormat,
    traces_endpoint: Option<String>,
    metrics_endpoint: Option<String>,
    sampler: SamplerConfig,
    metric_export_interval: Duration,
    export_timeout: Duration,
}

impl TelemetryBuilder {
    /// Defaults without reading the environment: text logs at `info`, no OTLP export,
    /// `parentbased_always_on`, metrics for `/metrics` only.
    pub fn new(service_name: impl Into<String>) -> Self {
        Self {
            service_name: service_name.into(),
            instance_id: None,
            resource_attributes: Vec::new(),
            log_filter: "info".to_owned(),
            log_format: LogFormat::Text,
            traces_endpoint: None,
            metrics_endpoint: None,
            sampler: SamplerConfig::ParentBasedAlwaysOn,
            metric_export_interval: Duration::from_secs(60),
            export_timeout: Duration::from_secs(10),
        }
    }

    /// Reads the process environment; see [`TelemetryBuilder::from_lookup`] for the variables.
    pub fn from_env(default_service_name: &str) -> Result<Self, TelemetryError> {
        Self::from_lookup(default_service_name, |k| std::env::var(k).ok())
    }

    /// Fills the builder from `lookup` (the environment, or a map in tests):
    ///
    /// | variable | effect |
    /// | --- | --- |
    /// | `RUST_LOG` | `EnvFilter` directives, default `info` |
    /// | `LOG_FORMAT` | `text` (default) or `json` |
    /// | `OTEL_SERVICE_NAME` | `service.name`, default `default_service_name` |
    /// | `OTEL_RESOURCE_ATTRIBUTES` | `k=v,k2=v2` resource attributes |
    /// | `POD_NAME`, then `HOSTNAME` | `service.instance.id` unless the attributes set it |
    /// | `OTEL_EXPORTER_OTLP_ENDPOINT` | base URL; traces and metrics go to `/v1/traces`, `/v1/metrics` |
    /// | `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, `..._METRICS_ENDPOINT` | full per-signal URLs |
    /// | `OTEL_EXPORTER_OTLP_PROTOCOL` (and per signal) | only `http/protobuf` is built in |
    /// | `OTEL_TRACES_EXPORTER` | `otlp` (default) or `none` |
    /// | `OTEL_METRICS_EXPORTER` | `otlp` (default), `prometheus` or `none` (`/metrics` works in every case) |
    /// | `OTEL_TRACES_SAMPLER`, `OTEL_TRACES_SAMPLER_ARG` | see [`SamplerConfig`] |
    /// | `OTEL_METRIC_EXPORT_INTERVAL` | OTLP metrics push period in ms, default 60000 |
    /// | `OTEL_EXPORTER_OTLP_TIMEOUT` | time limit of one export in ms, default 10000 |
    /// | `OTEL_SDK_DISABLED` | `true` turns every OTLP export off |
    ///
    /// The exporter itself still honours `OTEL_EXPORTER_OTLP_HEADERS` and `OTEL_BSP_*`
    /// (batch sizes and delays). A value outside these sets is refused with the
    /// variable's name.
    pub fn from_lookup(
        default_service_name: &str,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, TelemetryError> {
        let get = |k: &str| lookup(k).filter(|v| !v.trim().is_empty());
        let mut b =
            Self::new(get("OTEL_SERVICE_NAME").unwrap_or_else(|| default_service_name.into()));
        if let Some(filter) = get("RUST_LOG") {
            EnvFilter::try_new(&filter)
                .map_err(|e| invalid("RUST_LOG", &filter, &e.to_string()))?;
            b.log_filter = filter;
        }
        if let Some(format) = get("LOG_FORMAT") {
            b.log_format = LogFormat::parse(&format)?;
        }
        if let Some(attrs) = get("OTEL_RESOURCE_ATTRIBUTES") {
            for pair in attrs.split(',').filter(|p| !p.trim().is_empty()) {
                let Some((k, v)) = pair.split_once('=') else {
                    return Err(invalid(
                        "OTEL_RESOURCE_ATTRIBUTES",
                        &attrs,
                        "expected comma-separated key=value pairs",
                    ));
                };
                let (k, v) = (k.trim(), v.trim());
                match k {
                    // OTEL_SERVICE_NAME and the default name win over the attribute list.
                    "service.name" => {
                        if get("OTEL_SERVICE_NAME").is_none() {
                            b.service_name = v.to_owned();
                        }
                    }
                    "service.instance.id" => b.instance_id = Some(v.to_owned()),
                    _ => b
                        .resource_attributes
                        .push(KeyValue::new(k.to_owned(), v.to_owned())),
                }
            }
        }
        if b.instance_id.is_none() {
            b.instance_id = get("POD_NAME").or_else(|| get("HOSTNAME"));
        }

        for var in [
            "OTEL_EXPORTER_OTLP_PROTOCOL",
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
        ] {
            if let Some(p) = get(var) {
                if p.trim() != "http/protobuf" {
                    return Err(invalid(
                        var,
                        &p,
                        "only http/protobuf is built in (OTLP over HTTP, port 4318)",
                    ));
                }
            }
        }
        let base = get("OTEL_EXPORTER_OTLP_ENDPOINT");
        let disabled = match get("OTEL_SDK_DISABLED").map(|v| v.trim().to_ascii_lowercase()) {
            None => false,
            Some(v) if v == "true" => true,
            Some(v) if v == "false" => false,
            Some(v) => return Err(invalid("OTEL_SDK_DISABLED", &v, "expected true or false")),
        };
        let traces_on = match get("OTEL_TRACES_EXPORTER").as_deref().map(str::trim) {
            None | Some("otlp") => true,
            Some("none") => false,
            Some(v) => return Err(invalid("OTEL_TRACES_EXPORTER", v, "expected otlp or none")),
        };
        let metrics_on = match get("OTEL_METRICS_EXPORTER").as_deref().map(str::trim) {
            None | Some("otlp") => true,
            Some("none") | Some("prometheus") => false,
            Some(v) => {
                return Err(invalid(
                    "OTEL_METRICS_EXPORTER",
                    v,
                    "expected otlp, prometheus or none",
                ));
            }
        };
        if !disabled && traces_on {
            b.traces_endpoint = get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
                .or_else(|| base.as_deref().map(|u| otlp_signal_url(u, "traces")));
        }
        if !disabled && metrics_on {
            b.metrics_endpoint = get("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")
                .or_else(|| base.as_deref().map(|u| otlp_signal_url(u, "metrics")));
        }
        for url in [&b.traces_endpoint, &b.metrics_endpoint]
            .into_iter()
            .flatten()
        {
            if !url.starts_with("http://") {
                return Err(invalid(
                    "OTEL_EXPORTER_OTLP_ENDPOINT",
                    url,
                    "expected an http:// URL (no TLS client is built in)",
                ));
            }
        }

        b.sampler = SamplerConfig::parse(
            get("OTEL_TRACES_SAMPLER").as_deref(),
            get("OTEL_TRACES_SAMPLER_ARG").as_deref(),
        )?;
        if let Some(ms) = get("OTEL_METRIC_EXPORT_INTERVAL") {
            match ms.trim().parse::<u64>() {
                Ok(ms) if ms > 0 => b.metric_export_interval = Duration::from_millis(ms),
                _ => {
                    return Err(invalid(
                        "OTEL_METRIC_EXPORT_INTERVAL",
                        &ms,
                        "expected a positive number of milliseconds",
                    ));
                }
            }
        }
        if let Some(ms) = get("OTEL_EXPORTER_OTLP_TIMEOUT") {
            match ms.trim().parse::<u64>() {
                Ok(ms) if ms > 0 => b.export_timeout = Duration::from_millis(ms),
                _ => {
                    return Err(invalid(
                        "OTEL_EXPORTER_OTLP_TIMEOUT",
                        &ms,
                        "expected a positive number of milliseconds",
                    ));
                }
            }
        }
        Ok(b)
    }

    /// Sets `service.instance.id`: the node (pod) this telemetry comes from.
    pub fn instance_id(mut self, id: impl Into<String>) -> Self {
        self.instance_id = Some(id.into());
        self
    }

    /// Adds a resource attribute (on every span and metric of this node).
    pub fn resource_attribute(mut self, key: &'static str, value: impl Into<String>) -> Self {
        self.resource_attributes
            .push(KeyValue::new(key, value.into()));
        self
    }

    /// Replaces the `EnvFilter` directives (`RUST_LOG` syntax).
    pub fn log_filter(mut self, directives: impl Into<String>) -> Self {
        self.log_filter = directives.into();
        self
    }

    /// Chooses the log output.
    pub fn log_format(mut self, format: LogFormat) -> Self {
        self.log_format = format;
        self
    }

    /// Exports traces and metrics to this OTLP/HTTP base URL (`/v1/traces`, `/v1/metrics`).
    pub fn otlp_endpoint(mut self, base: &str) -> Self {
        self.traces_endpoint = Some(otlp_signal_url(base, "traces"));
        self.metrics_endpoint = Some(otlp_signal_url(base, "metrics"));
        self
    }

    /// Exports traces to this full URL, or not at all with `None`.
    pub fn otlp_traces_endpoint(mut self, url: Option<String>) -> Self {
        self.traces_endpoint = url;
        self
    }

    /// Pushes metrics to this full URL, or not at all with `None`.
    pub fn otlp_metrics_endpoint(mut self, url: Option<String>) -> Self {
        self.metrics_endpoint = url;
        self
    }

    /// Chooses the trace sampler.
    pub fn sampler(mut self, sampler: SamplerConfig) -> Self {
        self.sampler = sampler;
        self
    }

    /// Sets the OTLP metrics push period.
    pub fn metric_export_interval(mut self, every: Duration) -> Self {
        self.metric_export_interval = every;
        self
    }

    /// Sets the time limit of one OTLP export request.
    pub fn export_timeout(mut self, limit: Duration) -> Self {
        self.export_timeout = limit;
        self
    }

    /// The `service.name` in effect.
    pub fn service_name(&self) -> &str {
        &self.service_name
    }

    /// The `service.instance.id` in effect, if any.
    pub fn instance(&self) -> Option<&str> {
        self.instance_id.as_deref()
    }

    /// The traces URL in effect; `None` means no OpenTelemetry layer at all.
    pub fn traces_endpoint(&self) -> Option<&str> {
        self.traces_endpoint.as_deref()
    }

    /// The metrics push URL in effect; `None` means `/metrics` only.
    pub fn metrics_endpoint(&self) -> Option<&str> {
        self.metrics_endpoint.as_deref()
    }

    /// The sampler in effect.
    pub fn sampler_config(&self) -> SamplerConfig {
        self.sampler
    }

    /// The log output in effect.
    pub fn log_output(&self) -> LogFormat {
        self.log_format
    }

    /// The OpenTelemetry resource: `service.name`, `service.instance.id`, the extra
    /// attributes and the SDK's `telemetry.sdk.*`.
    pub fn resource(&self) -> Resource {
        let mut attrs = self.resource_attributes.clone();
        if let Some(id) = &self.instance_id {
            attrs.push(KeyValue::new("service.instance.id", id.clone()));
        }
        Resource::builder_empty()
            .with_detector(Box::new(TelemetryResourceDetector))
            .with_service_name(self.service_name.clone())
            .with_attributes(attrs)
            .build()
    }

    /// Builds the subscriber and providers without installing anything globally: the way to
    /// run several distinguishable nodes in one process (each runs its tasks under its own
    /// [`Telemetry::dispatch`], e.g. `future.with_subscriber(dispatch)`).
    ///
    /// Filtering: with trace export off, `RUST_LOG` (the log filter) filters everything, as
    /// any `tracing` subscriber would. With export on, `RUST_LOG` filters only the log
    /// output and the OpenTelemetry layer has a filter of its own (spans at `info` and above,
    /// events at `warn` and above): a quiet log (`RUST_LOG=warn`) must not silence the
    /// traces, which the sampler bounds instead.
    pub fn build(self) -> Result<Telemetry, TelemetryError> {
        let filter = EnvFilter::try_new(&self.log_filter)
            .map_err(|e| invalid("RUST_LOG", &self.log_filter, &e.to_string()))?;
        let resource = self.resource();

        let tracer_provider = match &self.traces_endpoint {
            None => None,
            Some(url) => {
                let exporter = opentelemetry_otlp::SpanExporter::builder()
                    .with_http()
                    .with_protocol(Protocol::HttpBinary)
                    .with_endpoint(url.clone())
                    .with_http_client(http_client(self.export_timeout, "traces")?)
                    .build()
                    .map_err(|e| TelemetryError::Exporter {
                        signal: "traces",
                        reason: e.to_string(),
                    })?;
                Some(
                    SdkTracerProvider::builder()
                        .with_batch_exporter(exporter)
                        .with_sampler(self.sampler.to_sampler())
                        .with_resource(resource.clone())
                        .build(),
                )
            }
        };
        let metrics = Metrics::build(
            resource,
            self.metrics_endpoint.as_deref(),
            self.metric_export_interval,
            self.export_timeout,
        )?;

        let dispatch = match &tracer_provider {
            None => {
                type Inner = Layered<EnvFilter, Registry>;
                let mut layers: Vec<Box<dyn Layer<Inner> + Send + Sync>> = Vec::new();
                if let Some(fmt) = log_layer(self.log_format) {
                    layers.push(fmt);
                }
                layers.push(NoTraceExport.boxed());
                Dispatch::new(Registry::default().with(filter).with(layers))
            }
            Some(provider) => {
                let tracer = provider.tracer(env!("CARGO_PKG_NAME"));
                let mut layers: Vec<Box<dyn Layer<Registry> + Send + Sync>> = Vec::new();
                if let Some(fmt) = log_layer(self.log_format) {
                    layers.push(fmt.with_filter(filter).boxed());
                }
                layers.push(TraceExport.boxed());
                layers.push(
                    tracing_opentelemetry::layer()
                        .with_tracer(tracer)
                        // Busy/idle timings and thread attributes cost on every enter/exit and
                        // every span; the trace does not need them.
                        .with_tracked_inactivity(false)
                        .with_threads(false)
                        // Parents come from the `tracing` span tree of this subscriber, not from
                        // OpenTelemetry's thread-local context: half the cost of a traced hop
                        // (benches/span_cost.rs), and correct when several simulated nodes share
                        // a thread. Nothing here reads `opentelemetry::Context::current()`.
                        .with_context_activation(false)
                        .with_filter(filter_fn(export_filter))
                        .boxed(),
                );
                Dispatch::new(Registry::default().with(layers))
            }
        };
        let node_metrics = NodeMetricsTemplate {
            service_name: self.service_name,
            resource_attributes: self.resource_attributes,
            endpoint: self.metrics_endpoint,
            interval: self.metric_export_interval,
            timeout: self.export_timeout,
        };
        Ok(Telemetry {
            dispatch,
            guard: TelemetryGuard {
                tracer_provider,
                metrics,
                node_metrics,
            },
        })
    }

    /// Builds and installs: the global `tracing` subscriber, the W3C trace-context
    /// propagator, and the global OpenTelemetry tracer and meter providers.
    pub fn install(self) -> Result<TelemetryGuard, TelemetryError> {
        let Telemetry { dispatch, guard } = self.build()?;
        tracing::dispatcher::set_global_default(dispatch)
            .map_err(|e| TelemetryError::SubscriberAlreadySet(e.to_string()))?;
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        if let Some(provider) = &guard.tracer_provider {
            opentelemetry::global::set_tracer_provider(provider.clone());
        }
        opentelemetry::global::set_meter_provider(guard.metrics.provider().clone());
        Ok(guard)
    }
}

/// The exporters' HTTP client (see `http_client`).
pub(crate) fn http_client(
    timeout: Duration,
    signal: &'static str,
) -> Result<OtlpHttpClient, TelemetryError> {
    OtlpHttpClient::new(timeout).map_err(|e| TelemetryError::Exporter {
        signal,
        reason: format!("no runtime for the HTTP client: {e}"),
    })
}

/// Marks a subscriber built without trace export, so that [`crate::propagation`] can skip
/// parsing and formatting trace contexts there (a type check instead of the work).
#[derive(Debug, Clone, Copy)]
pub(crate) struct NoTraceExport;

impl<S: tracing::Subscriber> Layer<S> for NoTraceExport {}

/// Marks a subscriber that exports traces (the OpenTelemetry layer is present), so that
/// [`crate::propagation`] can tell with one type check whether starting a trace is worth it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TraceExport;

impl<S: tracing::Subscriber> Layer<S> for TraceExport {}

/// What the OpenTelemetry layer records when traces are exported: spans at `info` and above
/// (the message spans of [`crate::propagation`] are `info`) and events at `warn` and above
/// (errors inside a traced span show up on it), whatever `RUST_LOG` says about the log.
fn export_filter(meta: &tracing::Metadata<'_>) -> bool {
    if meta.is_span() {
        *meta.level() <= tracing::Level::INFO
    } else {
        *meta.level() <= tracing::Level::WARN
    }
}

/// The log output layer for `format`, if any.
fn log_layer<S>(format: LogFormat) -> Option<Box<dyn Layer<S> + Send + Sync>>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    match format {
        LogFormat::Text => Some(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .boxed(),
        ),
        LogFormat::Json => Some(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .with_span_list(false)
                .boxed(),
        ),
        LogFormat::Off => None,
    }
}

/// What [`TelemetryGuard::node_metrics`] needs to build one more node's meter provider.
#[derive(Debug, Clone)]
struct NodeMetricsTemplate {
    service_name: String,
    resource_attributes: Vec<KeyValue>,
    endpoint: Option<String>,
    interval: Duration,
    timeout: Duration,
}

/// The one call every binary makes first: [`TelemetryBuilder::from_env`] then
/// [`TelemetryBuilder::install`]. Keep the guard alive until the process ends.
pub fn init(service_name: &str) -> Result<TelemetryGuard, TelemetryError> {
    TelemetryBuilder::from_env(service_name)?.install()
}

/// A built but not installed telemetry setup: the subscriber of one (simulated) node and the
/// guard of its providers.
#[derive(Debug)]
pub struct Telemetry {
    /// The subscriber: logs, filter, and the OpenTelemetry layer when traces are exported.
    pub dispatch: Dispatch,
    /// Flushes and shuts the providers down when dropped.
    pub guard: TelemetryGuard,
}

/// Owns the tracer and meter providers; dropping it flushes pending spans and metrics and
/// stops the export threads. Dropping blocks for at most the exporter timeout; do it at the
/// end of `main`, or in `spawn_blocking` inside async code.
#[derive(Debug)]
pub struct TelemetryGuard {
    tracer_provider: Option<SdkTracerProvider>,
    metrics: Metrics,
    node_metrics: NodeMetricsTemplate,
}

impl TelemetryGuard {
    /// This node's metrics: instruments through [`Metrics::meter`], `/metrics` text through
    /// [`Metrics::render`].
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// A meter provider of its own for one more node of this process (the sandbox runs six
    /// nodes under one [`init`]): the same resource and OTLP push as [`Self::metrics`], but
    /// `service.instance.id` = `instance_id`, so that each node's `/metrics` shows its own
    /// series only (two nodes' `cluster_members` in one exposition would be duplicates).
    pub fn node_metrics(&self, instance_id: &str) -> Result<Metrics, TelemetryError> {
        let t = &self.node_metrics;
        let mut attrs = t.resource_attributes.clone();
        attrs.push(KeyValue::new("service.instance.id", instance_id.to_owned()));
        let resource = Resource::builder_empty()
            .with_detector(Box::new(TelemetryResourceDetector))
            .with_service_name(t.service_name.clone())
            .with_attributes(attrs)
            .build();
        Metrics::build(resource, t.endpoint.as_deref(), t.interval, t.timeout)
    }

    /// Whether spans are exported (an OTLP traces endpoint was configured).
    pub fn traces_exported(&self) -> bool {
        self.tracer_provider.is_some()
    }

    /// The tracer provider, when traces are exported.
    pub fn tracer_provider(&self) -> Option<&SdkTracerProvider> {
        self.tracer_provider.as_ref()
    }

    /// Exports every finished span and pushes metrics now (blocking).
    pub fn flush(&self) -> Result<(), TelemetryError> {
        if let Some(provider) = &self.tracer_provider {
            provider
                .force_flush()
                .map_err(|e| TelemetryError::Exporter {
                    signal: "traces",
                    reason: e.to_string(),
                })?;
        }
        self.metrics.flush()
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.tracer_provider.take() {
            // Errors here have nowhere to go but stderr; the process is ending anyway.
            if let Err(e) = provider.shutdown() {
                eprintln!("telemetry: trace export shutdown: {e}");
            }
        }
        self.metrics.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn from(vars: &[(&str, &str)]) -> Result<TelemetryBuilder, TelemetryError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        TelemetryBuilder::from_lookup("pricing", move |k| map.get(k).cloned())
    }

    #[test]
    fn nothing_set_means_no_export_and_text_logs() {
        let b = from(&[]).unwrap();
        assert_eq!(b.service_name(), "pricing");
        assert_eq!(b.traces_endpoint(), None);
        assert_eq!(b.metrics_endpoint(), None);
        assert_eq!(b.log_output(), LogFormat::Text);
        assert_eq!(b.sampler_config(), SamplerConfig::ParentBasedAlwaysOn);
        let t = b.log_format(LogFormat::Off).build().unwrap();
        assert!(!t.guard.traces_exported());
    }

    #[test]
    fn endpoint_service_name_sampler_and_instance_come_from_the_standard_variables() {
        let b = from(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://jaeger:4318/"),
            ("OTEL_SERVICE_NAME", "pricing-eu"),
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "0.01"),
            ("POD_NAME", "pricing-1"),
            ("LOG_FORMAT", "json"),
            ("RUST_LOG", "warn,runtime=debug"),
        ])
        .unwrap();
        assert_eq!(b.service_name(), "pricing-eu");
        assert_eq!(b.instance(), Some("pricing-1"));
        assert_eq!(b.traces_endpoint(), Some("http://jaeger:4318/v1/traces"));
        assert_eq!(b.metrics_endpoint(), Some("http://jaeger:4318/v1/metrics"));
        assert_eq!(
            b.sampler_config(),
            SamplerConfig::ParentBasedTraceIdRatio(0.01)
        );
        assert_eq!(b.log_output(), LogFormat::Json);
    }

    #[test]
    fn per_signal_endpoints_and_exporter_switches() {
        let b = from(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "http://tempo:4318/v1/traces",
            ),
            ("OTEL_METRICS_EXPORTER", "prometheus"),
        ])
        .unwrap();
        assert_eq!(b.traces_endpoint(), Some("http://tempo:4318/v1/traces"));
        assert_eq!(b.metrics_endpoint(), None);
        let off = from(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
            ("OTEL_SDK_DISABLED", "true"),
        ])
        .unwrap();
        assert_eq!(off.traces_endpoint(), None);
        assert_eq!(off.metrics_endpoint(), None);
    }

    #[test]
    fn resource_attributes_fill_the_instance_but_not_over_otel_service_name() {
        let b = from(&[
            ("OTEL_SERVICE_NAME", "traders"),
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "service.name=ignored,service.instance.id=traders-7,deployment.environment.name=dev",
            ),
            ("POD_NAME", "not-used"),
        ])
        .unwrap();
        assert_eq!(b.service_name(), "traders");
        assert_eq!(b.instance(), Some("traders-7"));
        let r = b.resource();
        let get = |k: &'static str| {
            r.get(&opentelemetry::Key::from_static_str(k))
                .map(|v| v.to_string())
        };
        assert_eq!(get("service.name").as_deref(), Some("traders"));
        assert_eq!(get("service.instance.id").as_deref(), Some("traders-7"));
        assert_eq!(get("deployment.environment.name").as_deref(), Some("dev"));
    }

    #[test]
    fn wrong_values_are_refused_naming_the_variable() {
        let cases: &[(&str, &str, &str)] = &[
            ("OTEL_TRACES_SAMPLER", "sometimes", "OTEL_TRACES_SAMPLER"),
            ("OTEL_TRACES_SAMPLER_ARG", "2", "OTEL_TRACES_SAMPLER_ARG"),
            ("LOG_FORMAT", "xml", "LOG_FORMAT"),
            ("RUST_LOG", "info,[[[", "RUST_LOG"),
            (
                "OTEL_EXPORTER_OTLP_PROTOCOL",
                "grpc",
                "OTEL_EXPORTER_OTLP_PROTOCOL",
            ),
            ("OTEL_TRACES_EXPORTER", "zipkin", "OTEL_TRACES_EXPORTER"),
            (
                "OTEL_METRIC_EXPORT_INTERVAL",
                "soon",
                "OTEL_METRIC_EXPORT_INTERVAL",
            ),
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                "https://x:4318",
                "OTEL_EXPORTER_OTLP_ENDPOINT",
            ),
        ];
        for (k, v, named) in cases {
            let mut vars = vec![(*k, *v)];
            if *k == "OTEL_TRACES_SAMPLER_ARG" {
                vars.push(("OTEL_TRACES_SAMPLER", "traceidratio"));
            }
            let err = from(&vars).expect_err(k).to_string();
            assert!(err.contains(named), "{k}={v}: {err}");
        }
    }

    #[test]
    fn sampler_names_map_to_the_sdk_samplers() {
        let p = |s: &str, a: Option<&str>| SamplerConfig::parse(Some(s), a).unwrap();
        assert_eq!(p("always_on", None), SamplerConfig::AlwaysOn);
        assert_eq!(p("always_off", None), SamplerConfig::AlwaysOff);
        assert_eq!(p("traceidratio", None), SamplerConfig::TraceIdRatio(1.0));
        assert_eq!(
            p("TraceIdRatio", Some("0.25")),
            SamplerConfig::TraceIdRatio(0.25)
        );
        assert_eq!(
            p("parentbased_always_off", None),
            SamplerConfig::ParentBasedAlwaysOff
        );
        assert!(matches!(
            p("parentbased_traceidratio", Some("0.5")).to_sampler(),
            Sampler::ParentBased(_)
        ));
    }

    #[test]
    fn signal_urls_join_without_double_slashes() {
        assert_eq!(
            otlp_signal_url("http://a:4318", "traces"),
            "http://a:4318/v1/traces"
        );
        assert_eq!(
            otlp_signal_url("http://a:4318/", "metrics"),
            "http://a:4318/v1/metrics"
        );
    }
}
