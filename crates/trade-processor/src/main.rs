//! `trade-processor`: a cluster node hosting the sharded order books.
//!
//! ```text
//! trade-processor --seeds 127.0.0.1:4053 --port 5055 --management-port 8560
//! ```
//! Every flag also reads its environment variable (`CLUSTER_SEEDS`, `CLUSTER_PORT`, ...,
//! `MONGO_CONNECTION_STR`, `DATA_DIR`); logs, traces and metrics follow `RUST_LOG`,
//! `LOG_FORMAT` and the `OTEL_*` variables (`host::init_telemetry`). Exit code 0 after a
//! graceful leave, 1 when it could not start or join, 2 for a configuration error.

use std::time::Duration;

use clap::Parser;
use host::HostArgs;
use runtime::ServiceDefaults;
use telemetry::Metrics;

/// Command line of `trade-processor`.
#[derive(Debug, Parser)]
#[command(
    name = "trade-processor",
    version,
    about = "Hosts the sharded order books"
)]
struct Cli {
    #[command(flatten)]
    host: HostArgs,
    /// Snapshot each order book every this many events (0 = never).
    #[arg(long, env = "SNAPSHOT_EVERY", default_value_t = 100)]
    snapshot_every: u64,
    /// Shortest time between two snapshots of one book, in milliseconds.
    #[arg(long, env = "SNAPSHOT_MIN_INTERVAL_MS", default_value_t = 5000)]
    snapshot_min_interval_ms: u64,
}

fn main() {
    let cli = Cli::parse();
    let telemetry = host::init_telemetry("trade-processor");
    let code = run(cli, telemetry.metrics());
    drop(telemetry);
    std::process::exit(code);
}

#[tokio::main]
async fn run(cli: Cli, metrics: &Metrics) -> i32 {
    let defaults = ServiceDefaults {
        port: trade_processor::DEFAULT_PORT,
        roles: trade_processor::ROLES.map(String::from).to_vec(),
        self_seed: false,
    };
    let (service, stores) = host::start_service(&cli.host, &defaults, true, metrics)
        .await
        .unwrap_or_else(|e| e.exit());
    let stores = stores.expect("persistent services open a store");
    let snapshots = trade_processor::SnapshotPolicy {
        every: (cli.snapshot_every > 0).then_some(cli.snapshot_every),
        min_interval: Duration::from_millis(cli.snapshot_min_interval_ms),
    };
    if let Err(e) = trade_processor::start(&service, &stores, snapshots).await {
        host::StartFailure::new(format!("cannot start the order books: {e}")).exit();
    }
    service.run().await
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn every_flag_is_documented() {
        lesson_check::config_table::assert_documented("trade-processor", &super::Cli::command());
    }
}
