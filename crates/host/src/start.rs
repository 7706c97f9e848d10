//! The start sequence every service `main` shares: set telemetry up ([`init_telemetry`]:
//! logs, traces, metrics from `RUST_LOG`, `LOG_FORMAT` and the `OTEL_*` variables), check
//! the configuration (a wrong value stops the start with a message that names its variable,
//! exit code 2), open the store when the service persists (exit code 1 when it cannot), and
//! start the service node with the process's meter provider (its `/metrics`).
//!
//! ```text
//! fn main() {
//!     let cli = Cli::parse();
//!     let telemetry = host::init_telemetry("pricing");
//!     let code = run(cli, telemetry.metrics());    // #[tokio::main] async fn run(..) -> i32
//!     drop(telemetry);                              // flushes the last spans and metrics
//!     std::process::exit(code);
//! }
//! ```

use runtime::ServiceDefaults;
use telemetry::{Metrics, TelemetryGuard};

use crate::args::HostArgs;
use crate::service::ServiceNode;
use crate::stores::Stores;

/// Why a service did not start, with the exit code it should end with.
#[derive(Debug)]
pub struct StartFailure {
    /// 2 for a configuration error, 1 otherwise.
    pub code: i32,
    /// What went wrong.
    pub message: String,
}

impl StartFailure {
    /// A failure with exit code 1.
    pub fn new(message: impl Into<String>) -> Self {
        StartFailure {
            code: 1,
            message: message.into(),
        }
    }

    /// A configuration error (exit code 2) naming the variable and flag that hold it.
    pub fn config(variable: &str, flag: &str, error: impl std::fmt::Display) -> Self {
        StartFailure {
            code: 2,
            message: format!("{variable} ({flag}): {error}"),
        }
    }

    /// Prints the message and exits the process with the code.
    pub fn exit(self) -> ! {
        eprintln!("error: {}", self.message);
        std::process::exit(self.code)
    }
}

/// `telemetry::init(service)`: the process's one `tracing` subscriber (logs, and traces when
/// `OTEL_EXPORTER_OTLP_ENDPOINT` is set) and its meter provider. `OTEL_SERVICE_NAME`
/// defaults to `service`. A wrong value exits with code 2 and a message naming the
/// variable. Call it once, before the tokio runtime starts, and keep the guard until the
/// end of `main` (dropping it flushes what is pending).
pub fn init_telemetry(service: &str) -> TelemetryGuard {
    telemetry::init(service).unwrap_or_else(|e| {
        StartFailure {
            code: 2,
            message: e.to_string(),
        }
        .exit()
    })
}

/// Resolves the configuration, opens the store if `persistent` (recording journal writes on
/// `metrics`), and starts the node (serving `metrics` on its management port).
pub async fn start_service(
    args: &HostArgs,
    defaults: &ServiceDefaults,
    persistent: bool,
    metrics: &Metrics,
) -> Result<(ServiceNode, Option<Stores>), StartFailure> {
    let mut config = args.node.resolve(defaults).map_err(|e| StartFailure {
        code: 2,
        message: e.to_string(),
    })?;
    config.metrics = Some(metrics.clone());
    let stores = if persistent {
        let store = args.store().map_err(|e| StartFailure {
            code: 2,
            message: e.to_string(),
        })?;
        let stores = Stores::open_with_metrics(&store, Some(metrics))
            .await
            .map_err(|e| StartFailure::new(format!("cannot open the journal: {e}")))?;
        tracing::info!(store = %stores.description, "journal opened");
        Some(stores)
    } else {
        None
    };
    let node = ServiceNode::start(config)
        .await
        .map_err(|e| StartFailure::new(e.to_string()))?;
    Ok((node, stores))
}
