//! `pricing-web`: the dashboard. A cluster client of the pricing nodes (never a member)
//! that serves the browser UI and streams live prices over WebSocket.
//!
//! ```text
//! pricing-web --contacts 127.0.0.1:5056 --http-port 8080
//! ```
//! `CLUSTER_CONTACTS` lists the pricing nodes' cluster addresses (`host:port` or
//! `akka.tcp://AkkaTrader@host:port`, comma separated), and/or `CLUSTER_CONTACTS_SERVICE`
//! names a DNS name and port whose every address is a pricing node (`pricing:5055`, the
//! pricing pods' headless Service: scaling them needs no new list); the transport flags (`CLUSTER_IP`,
//! `CLUSTER_PORT`, `CLUSTER_COOKIE`, ...) are the members' ones. SIGTERM/Ctrl-C stops it.
//! Logs, traces and metrics follow `RUST_LOG`, `LOG_FORMAT` and the `OTEL_*` variables
//! (`telemetry::init("pricing-web")`); `/metrics` is on the HTTP port.

use std::net::SocketAddr;

use clap::Parser;
use domain::Ticker;
use pricing_web::{PriceFeed, PriceHub};
use runtime::{Remoting, ServiceDefaults};
use telemetry::Metrics;

/// Command line of `pricing-web`.
#[derive(Debug, Parser)]
#[command(
    name = "pricing-web",
    version,
    about = "Live price dashboard of the AkkaTrader cluster"
)]
struct Cli {
    /// Transport settings (the cluster port defaults to any free port).
    #[command(flatten)]
    node: runtime::NodeArgs,
    /// Receptionists to connect to: the pricing nodes' cluster addresses.
    #[arg(long, env = "CLUSTER_CONTACTS")]
    contacts: Option<String>,
    /// `host:port` whose every DNS address is a receptionist's node (a headless Service).
    #[arg(long, env = "CLUSTER_CONTACTS_SERVICE")]
    contacts_service: Option<String>,
    /// Interface the dashboard listens on.
    #[arg(long, env = "HTTP_HOST", default_value = "0.0.0.0")]
    http_host: String,
    /// Dashboard port.
    #[arg(long, env = "HTTP_PORT", default_value_t = 8080)]
    http_port: u16,
    /// Tickers shown, comma separated (default: the workshop's 28).
    #[arg(long, env = "TICKERS")]
    tickers: Option<String>,
    /// Points kept per ticker for the charts.
    #[arg(long, default_value_t = 300)]
    history: usize,
}

fn fail(code: i32, message: String) -> ! {
    eprintln!("error: {message}");
    std::process::exit(code)
}

fn main() {
    let cli = Cli::parse();
    let telemetry = telemetry::init("pricing-web").unwrap_or_else(|e| fail(2, e.to_string()));
    run(cli, telemetry.metrics());
    // Flushes the last spans and metrics.
    drop(telemetry);
}

#[tokio::main]
async fn run(cli: Cli, metrics: &Metrics) {
    // Only the transport part of the node settings is used: pricing-web never joins, so it
    // needs no seeds (self_seed only keeps the membership part of the check satisfied).
    let config = cli
        .node
        .resolve(&ServiceDefaults {
            port: 0,
            roles: Vec::new(),
            self_seed: true,
        })
        .unwrap_or_else(|e| fail(2, e.to_string()));
    let contacts = cluster_tools::client::parse_contacts(
        cli.contacts.as_deref().unwrap_or_default(),
        &config.remoting.system,
    )
    .unwrap_or_else(|e| fail(2, format!("CLUSTER_CONTACTS (--contacts): {e}")));
    let contact_service = cli.contacts_service.as_deref().map(|s| {
        s.rsplit_once(':')
            .and_then(|(host, port)| Some((host.to_string(), port.parse::<u16>().ok()?)))
            .filter(|(host, _)| !host.is_empty())
            .unwrap_or_else(|| {
                fail(
                    2,
                    format!(
                        "CLUSTER_CONTACTS_SERVICE (--contacts-service): {s:?} is not host:port"
                    ),
                )
            })
    });
    if contacts.is_empty() && contact_service.is_none() {
        fail(
            2,
            "CLUSTER_CONTACTS (--contacts) or CLUSTER_CONTACTS_SERVICE (--contacts-service): no contact point"
                .into(),
        );
    }
    let tickers = Ticker::list_or_defaults(cli.tickers.as_deref())
        .unwrap_or_else(|e| fail(2, format!("TICKERS (--tickers): {e}")));
    let http: SocketAddr = format!("{}:{}", cli.http_host, cli.http_port)
        .parse()
        .unwrap_or_else(|_| {
            fail(
                2,
                format!(
                    "HTTP_HOST (--http-host): {:?} is not an IP address",
                    cli.http_host
                ),
            )
        });
    let listener = tokio::net::TcpListener::bind(http)
        .await
        .unwrap_or_else(|e| fail(1, format!("cannot bind {http}: {e}")));
    let remoting = Remoting::start(config.remoting)
        .await
        .unwrap_or_else(|e| fail(1, format!("cannot start the transport: {e}")));
    let hub = PriceHub::new(tickers, cli.history);
    let settings = cluster_tools::client::ClientSettings {
        contact_service,
        ..cluster_tools::client::ClientSettings::new(contacts)
    };
    let feed = PriceFeed::start_with(&remoting, settings, hub.clone())
        .await
        .unwrap_or_else(|e| fail(1, format!("cannot start the price feed: {e}")));
    let _instruments = pricing_web::metrics::register(metrics, &hub, Some(&remoting));
    tracing::info!(%http, "dashboard listening");
    let served =
        pricing_web::http::serve(listener, hub, Some(metrics.clone()), shutdown_signal()).await;
    feed.stop();
    remoting
        .shutdown(std::time::Duration::from_millis(200))
        .await;
    if let Err(e) = served {
        fail(1, format!("http server failed: {e}"));
    }
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn every_flag_is_documented() {
        lesson_check::config_table::assert_documented("pricing-web", &super::Cli::command());
    }
}
