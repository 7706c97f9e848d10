//! The one error type of this crate: what went wrong while setting telemetry up or
//! collecting metrics.

/// Why telemetry could not be set up, or metrics not collected.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// An environment variable (or the builder value standing for it) holds a value this
    /// crate refuses; the message names the variable so a wrong manifest is easy to fix.
    #[error("invalid {var}={value:?}: {reason}")]
    InvalidSetting {
        /// The variable, e.g. `OTEL_TRACES_SAMPLER_ARG`.
        var: &'static str,
        /// The refused value.
        value: String,
        /// What is accepted.
        reason: String,
    },
    /// The OTLP exporter could not be built.
    #[error("could not build the OTLP {signal} exporter: {reason}")]
    Exporter {
        /// `traces` or `metrics`.
        signal: &'static str,
        /// The exporter's own message.
        reason: String,
    },
    /// A global `tracing` subscriber was already installed in this process.
    #[error("a global tracing subscriber is already installed: {0}")]
    SubscriberAlreadySet(String),
    /// Collecting metrics from the SDK failed (for instance after shutdown).
    #[error("could not collect metrics: {0}")]
    Collect(String),
}
