//! `traders`: a cluster node running bidders and askers for every ticker.
//!
//! ```text
//! traders --seeds 127.0.0.1:4053 --port 5057 --management-port 8562 [--orders-per-second 500]
//!         [--blotter-dir /var/blotter]
//! ```
//! Its own variables: `TICKERS`, `ORDERS_PER_SECOND`, `RETRY_AFTER_MS`, `MAX_RESTING_ORDERS`
//! and `BLOTTER_DIR` (a folder: every order this process saw confirmed is appended to
//! `<host>-<port>-<uid>.jsonl` in it, one JSON line each, written within 50 ms and closed on a
//! graceful shutdown; see `traders::blotter`; unset or empty keeps no blotter), besides the
//! node's (`runtime::config`). Every flag also reads its environment variable; logs, traces
//! and metrics follow `RUST_LOG`, `LOG_FORMAT` and the `OTEL_*` variables
//! (`host::init_telemetry`). Exit code 0 after a graceful leave, 1 when it could not start or
//! join, 2 for a configuration error.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use domain::Ticker;
use host::HostArgs;
use runtime::ServiceDefaults;
use telemetry::Metrics;
use traders::{TradersConfig, TradersPacing};

/// Command line of `traders`.
#[derive(Debug, Parser)]
#[command(
    name = "traders",
    version,
    about = "Places random orders on every ticker"
)]
struct Cli {
    #[command(flatten)]
    host: HostArgs,
    /// Tickers, comma separated (default: the workshop's 28).
    #[arg(long, env = "TICKERS")]
    tickers: Option<String>,
    /// Load mode: this many orders per second over all traders of this node (default: the
    /// workshop pace, one order per trader every 10 s).
    #[arg(long, env = "ORDERS_PER_SECOND")]
    orders_per_second: Option<u32>,
    /// Re-send an order unconfirmed for this many milliseconds.
    #[arg(long, env = "RETRY_AFTER_MS", default_value_t = 3000)]
    retry_after_ms: u64,
    /// Most of this node's orders resting in one book; beyond it the oldest are cancelled.
    #[arg(long, env = "MAX_RESTING_ORDERS", default_value_t = 200)]
    max_resting: usize,
    /// Folder of the blotter: every order this process sees confirmed is appended, as one JSON
    /// line, to `<host>-<port>-<uid>.jsonl` in it (one file per process start). Empty: none.
    #[arg(long, env = "BLOTTER_DIR")]
    blotter_dir: Option<String>,
}

fn main() {
    let cli = Cli::parse();
    let telemetry = host::init_telemetry("traders");
    let code = run(cli, telemetry.metrics());
    drop(telemetry);
    std::process::exit(code);
}

#[tokio::main]
async fn run(cli: Cli, metrics: &Metrics) -> i32 {
    let tickers = Ticker::list_or_defaults(cli.tickers.as_deref())
        .unwrap_or_else(|e| host::StartFailure::config("TICKERS", "--tickers", e).exit());
    let defaults = ServiceDefaults {
        port: traders::DEFAULT_PORT,
        roles: traders::ROLES.map(String::from).to_vec(),
        self_seed: false,
    };
    let (service, _) = host::start_service(&cli.host, &defaults, false, metrics)
        .await
        .unwrap_or_else(|e| e.exit());
    let config = TradersConfig {
        tickers,
        pacing: match cli.orders_per_second {
            Some(n) => TradersPacing::Load {
                orders_per_second: n,
            },
            None => TradersPacing::Workshop,
        },
        retry_after: Duration::from_millis(cli.retry_after_ms.max(1)),
        max_resting: cli.max_resting,
        blotter_dir: cli
            .blotter_dir
            .filter(|d| !d.trim().is_empty())
            .map(PathBuf::from),
        ..TradersConfig::default()
    };
    if let Err(e) = traders::start(&service, &config).await {
        host::StartFailure::new(format!("cannot start the traders: {e}")).exit();
    }
    service.run().await
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn every_flag_is_documented() {
        lesson_check::config_table::assert_documented("traders", &super::Cli::command());
    }
}
