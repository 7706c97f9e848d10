//! `pricing`: a cluster node hosting the sharded price aggregators and a receptionist for
//! cluster clients (pricing-web).
//!
//! ```text
//! pricing --seeds 127.0.0.1:4053 --port 5056 --management-port 8561
//! ```
//! Every flag also reads its environment variable; logs, traces and metrics follow
//! `RUST_LOG`, `LOG_FORMAT` and the `OTEL_*` variables (`host::init_telemetry`). Exit code 0
//! after a graceful leave, 1 when it could not start or join, 2 for a configuration error.

use std::time::Duration;

use clap::Parser;
use domain::Ticker;
use host::HostArgs;
use pricing::AggregatorSettings;
use runtime::ServiceDefaults;
use telemetry::Metrics;

/// Command line of `pricing`.
#[derive(Debug, Parser)]
#[command(name = "pricing", version, about = "Turns matches into live prices")]
struct Cli {
    #[command(flatten)]
    host: HostArgs,
    /// Tickers, comma separated (default: the workshop's 28).
    #[arg(long, env = "TICKERS")]
    tickers: Option<String>,
    /// Publish changed prices every this many milliseconds.
    #[arg(long, env = "PUBLISH_INTERVAL_MS", default_value_t = 1000)]
    publish_interval_ms: u64,
}

fn main() {
    let cli = Cli::parse();
    let telemetry = host::init_telemetry("pricing");
    let code = run(cli, telemetry.metrics());
    drop(telemetry);
    std::process::exit(code);
}

#[tokio::main]
async fn run(cli: Cli, metrics: &Metrics) -> i32 {
    let tickers = Ticker::list_or_defaults(cli.tickers.as_deref())
        .unwrap_or_else(|e| host::StartFailure::config("TICKERS", "--tickers", e).exit());
    let defaults = ServiceDefaults {
        port: pricing::DEFAULT_PORT,
        roles: pricing::ROLES.map(String::from).to_vec(),
        self_seed: false,
    };
    let (service, stores) = host::start_service(&cli.host, &defaults, true, metrics)
        .await
        .unwrap_or_else(|e| e.exit());
    let stores = stores.expect("persistent services open a store");
    let settings = AggregatorSettings {
        publish_interval: Duration::from_millis(cli.publish_interval_ms.max(10)),
        ..AggregatorSettings::default()
    };
    let _pricing = match pricing::start(&service, &stores, tickers, settings).await {
        Ok(p) => p,
        Err(e) => host::StartFailure::new(format!("cannot start pricing: {e}")).exit(),
    };
    service.run().await
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn every_flag_is_documented() {
        lesson_check::config_table::assert_documented("pricing", &super::Cli::command());
    }
}
