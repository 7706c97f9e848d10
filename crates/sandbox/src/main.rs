//! `sandbox`: runs the whole cluster locally. `cargo run --release -p sandbox`, then open the
//! dashboard URL it prints; Ctrl-C stops it cleanly. `--bench SECONDS` runs a load and
//! prints throughput and latencies instead. Logs, traces and metrics: `telemetry::init` as
//! every binary, service name `sandbox`, warnings only unless `RUST_LOG` is set.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use domain::Ticker;
use futures::StreamExt;
use hdrhistogram::Histogram;
use sandbox::{Sandbox, SandboxConfig};
use telemetry::{TelemetryBuilder, TelemetryGuard};
use traders::TradersPacing;

/// Command line of the sandbox.
#[derive(Debug, Parser)]
#[command(
    name = "sandbox",
    version,
    about = "The whole AkkaTrader cluster in one process"
)]
struct Cli {
    /// Folder of the SQLite journal (kept across runs: books recover).
    #[arg(long, env = "DATA_DIR", default_value = "data")]
    data_dir: PathBuf,
    /// Dashboard port (0 = any free port).
    #[arg(long, env = "HTTP_PORT", default_value_t = 8080)]
    http_port: u16,
    /// Tickers, comma separated (default: the workshop's 28).
    #[arg(long)]
    tickers: Option<String>,
    /// Load mode: this many orders per second over all traders (default: workshop pace,
    /// one order per trader every 10 s).
    #[arg(long)]
    orders_per_second: Option<u32>,
    /// Price publish interval in milliseconds.
    #[arg(long, default_value_t = 1000)]
    publish_interval_ms: u64,
    /// Snapshot each order book every this many events (0 = never).
    #[arg(long, default_value_t = 100)]
    snapshot_every: u64,
    /// Shortest time between two snapshots of one book, in milliseconds.
    #[arg(long, default_value_t = 5000)]
    snapshot_min_interval_ms: u64,
    /// Most of the traders' orders resting in one book; the oldest beyond it are cancelled.
    #[arg(long, default_value_t = 200)]
    max_resting: usize,
    /// SQLite durability: `full` syncs every commit, `normal` (the sandbox default) survives
    /// a crash of the process but not a power cut.
    #[arg(long, env = "SQLITE_SYNC", default_value = "normal", value_parser = ["full", "normal"])]
    sqlite_sync: String,
    /// Run a load for this many seconds, print the figures and exit.
    #[arg(long)]
    bench: Option<u64>,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // Six nodes in one process log a lot at `info`: warnings only unless RUST_LOG says more.
    // Traces (OTEL_EXPORTER_OTLP_ENDPOINT) do not depend on this filter.
    let mut builder = TelemetryBuilder::from_env("sandbox")?;
    if std::env::var_os("RUST_LOG").is_none() {
        builder = builder.log_filter("warn");
    }
    let telemetry = Arc::new(builder.install()?);
    let result = run(cli, telemetry.clone());
    // The last handle: flushes the last spans and metrics.
    drop(telemetry);
    result
}

#[tokio::main]
async fn run(cli: Cli, telemetry: Arc<TelemetryGuard>) -> anyhow::Result<()> {
    let tickers = Ticker::list_or_defaults(cli.tickers.as_deref()).context("--tickers")?;
    let bench = cli.bench.map(Duration::from_secs);
    let pacing = match (cli.orders_per_second, bench) {
        (Some(n), _) => TradersPacing::Load {
            orders_per_second: n,
        },
        (None, Some(_)) => TradersPacing::Load {
            orders_per_second: 20_000,
        },
        (None, None) => TradersPacing::Workshop,
    };
    let publish_interval = if bench.is_some() && cli.publish_interval_ms == 1000 {
        Duration::from_millis(100)
    } else {
        Duration::from_millis(cli.publish_interval_ms)
    };
    let started = Instant::now();
    let sandbox = Sandbox::start(SandboxConfig {
        data_dir: cli.data_dir.clone(),
        tickers,
        pacing: Some(pacing),
        publish_interval,
        http_port: if bench.is_some() { 0 } else { cli.http_port },
        snapshots: trade_processor::SnapshotPolicy {
            every: (cli.snapshot_every > 0).then_some(cli.snapshot_every),
            min_interval: Duration::from_millis(cli.snapshot_min_interval_ms),
        },
        sync_full: cli.sqlite_sync == "full",
        max_resting: cli.max_resting,
        telemetry: Some(telemetry.clone()),
    })
    .await?;

    println!();
    println!(
        "  AkkaTrader sandbox is up ({:.1} s)",
        started.elapsed().as_secs_f64()
    );
    println!("  dashboard:   http://{}/", sandbox.http);
    println!("  journal:     {}", sandbox.stores.description);
    println!(
        "  traders:     {} bidders and askers, {}",
        sandbox.traders.as_ref().map_or(0, |t| t.count),
        match pacing {
            TradersPacing::Workshop => "workshop pace (one order each every 10 s)".to_string(),
            TradersPacing::Load { orders_per_second } => format!("{orders_per_second} orders/s"),
        }
    );
    for (name, addr) in sandbox.management_ports() {
        if let Some(a) = addr {
            println!("  {name:<18} management http://{a}/cluster/members  (and /metrics)");
        }
    }
    println!(
        "  traces:      {}",
        if telemetry.traces_exported() {
            "exported over OTLP (OTEL_EXPORTER_OTLP_ENDPOINT)"
        } else {
            "off (set OTEL_EXPORTER_OTLP_ENDPOINT, e.g. http://127.0.0.1:4318 for Jaeger)"
        }
    );
    let ports = sandbox.management_ports();
    if let (Some((_, Some(lh))), Some((_, Some(tp)))) = (ports.first(), ports.get(1)) {
        println!("  try:         cargo run -p ctl --bin tradectl -- --addr {lh} cluster show");
        println!("               cargo run -p ctl --bin tradectl -- --addr {tp} shards orderBook");
        println!(
            "               cargo run -p ctl --bin tradectl -- --web {} price track MSFT",
            sandbox.http
        );
    }
    println!();

    match bench {
        Some(secs) => run_bench(&sandbox, secs).await?,
        None => {
            println!("  Ctrl-C stops the cluster.");
            tokio::signal::ctrl_c().await?;
            println!("stopping: traders first, then every node leaves the cluster");
        }
    }
    sandbox.shutdown().await;
    Ok(())
}

/// Measures the running cluster: confirmed orders per second and order-to-confirmation
/// latency (from the traders' desk), and match-to-push latency seen by a WebSocket client of
/// the dashboard (now minus the time of the newest match in each pushed update).
async fn run_bench(sandbox: &Sandbox, secs: Duration) -> anyhow::Result<()> {
    let url = format!("ws://{}/ws", sandbox.http);
    let (mut ws, _) = tokio_tungstenite::connect_async(&url).await?;
    let mut push = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
    println!("bench: warming up for 10 s");
    let warm_until = Instant::now() + Duration::from_secs(10);
    while Instant::now() < warm_until {
        let _ = tokio::time::timeout(Duration::from_millis(200), ws.next()).await;
    }
    let traders = sandbox
        .traders
        .as_ref()
        .context("the bench needs traders")?;
    let before = traders.stats(true).await.context("desk stats")?;
    let journal = sandbox.stores.persistence.writer().stats();
    let commits_before = journal.batches.load(Ordering::Relaxed);
    let events_before = journal.events.load(Ordering::Relaxed);
    let start = Instant::now();
    while start.elapsed() < secs {
        if let Ok(Some(Ok(tokio_tungstenite::tungstenite::Message::Text(t)))) =
            tokio::time::timeout(Duration::from_millis(200), ws.next()).await
        {
            let v: serde_json::Value = serde_json::from_str(t.as_str())?;
            if v["type"] == "price"
                && let Some(at) = v["at"].as_i64()
            {
                let us = (host::now_micros() - at).max(1) as u64;
                let _ = push.record(us);
            }
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let after = traders.stats(false).await.context("desk stats")?;
    let commits = journal.batches.load(Ordering::Relaxed) - commits_before;
    let events = journal.events.load(Ordering::Relaxed) - events_before;
    let confirmed = after.confirmed - before.confirmed;
    println!(
        "bench: {:.0} s: {:.0} confirmed orders/s (placed {:.0}/s, re-sent {}, refused {}, rejected {}, unconfirmed now {})",
        elapsed,
        confirmed as f64 / elapsed,
        (after.placed - before.placed) as f64 / elapsed,
        after.resent - before.resent,
        after.refused - before.refused,
        after.rejected - before.rejected,
        after.pending,
    );
    println!(
        "bench: order-to-confirmation p50 {:.2} ms, p99 {:.2} ms ({} orders)",
        after.latency_p50_us as f64 / 1000.0,
        after.latency_p99_us as f64 / 1000.0,
        after.latency_samples
    );
    println!(
        "bench: match-to-push p50 {:.1} ms, p99 {:.1} ms ({} pushes)",
        push.value_at_quantile(0.5) as f64 / 1000.0,
        push.value_at_quantile(0.99) as f64 / 1000.0,
        push.len()
    );
    println!(
        "bench: journal {:.0} events/s in {:.0} commits/s ({:.0} events per commit); orders cancelled {}, resting now {}",
        events as f64 / elapsed,
        commits as f64 / elapsed,
        events as f64 / commits.max(1) as f64,
        after.cancelled - before.cancelled,
        after.resting,
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn every_flag_is_documented() {
        lesson_check::config_table::assert_documented("sandbox", &super::Cli::command());
    }
}
