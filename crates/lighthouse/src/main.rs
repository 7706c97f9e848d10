//! `lighthouse`: runs a seed node until SIGTERM/Ctrl-C (graceful leave) or until the
//! node is downed or removed. Exit code 0 after a normal shutdown, 1 when it could not
//! join its seeds in time, 2 for a configuration error (telemetry variables included).
//!
//! Logs, traces and metrics come from `telemetry::init("lighthouse")` (`RUST_LOG`,
//! `LOG_FORMAT`, `OTEL_*`); its meter provider is the one `/metrics` serves.

use clap::Parser;

fn main() {
    let cli = lighthouse::Cli::parse();
    let telemetry = telemetry::init("lighthouse").unwrap_or_else(|e| {
        eprintln!("error: {e}");
        std::process::exit(2);
    });
    let mut cfg = match lighthouse::config(&cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    cfg.metrics = Some(telemetry.metrics().clone());
    let code = run(cfg);
    // Flushes the last spans and metrics before the process exits.
    drop(telemetry);
    std::process::exit(code);
}

#[tokio::main]
async fn run(cfg: runtime::NodeConfig) -> i32 {
    runtime::node::run(cfg).await
}
