//! A sink for OTLP/HTTP: accepts what the services export (`POST /v1/traces`, `/v1/metrics`,
//! protobuf bodies, as Jaeger or an OpenTelemetry collector would) and only counts it, so the
//! cost of exporting can be measured without running Jaeger (`scripts/bench-tracing-overhead.sh`).
//!
//! ```text
//! cargo run --release -p telemetry --features testing --example otlp-sink -- [PORT]
//! ```
//!
//! Prints `otlp-sink listening on http://127.0.0.1:PORT` (PORT 0 or none: any free port),
//! then every 5 s the spans received in that interval per `service.name` and the totals, and
//! the totals once more when stopped with Ctrl-C or SIGTERM.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use telemetry::testing::OtlpCollector;

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() -> std::io::Result<()> {
    let port: u16 = match std::env::args().nth(1) {
        None => 0,
        Some(p) => p.parse().map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "usage: otlp-sink [PORT]")
        })?,
    };
    let collector = OtlpCollector::start_on(SocketAddr::from(([127, 0, 0, 1], port))).await?;
    println!("otlp-sink listening on {}", collector.endpoint());
    let mut total: u64 = 0;
    let mut traces = std::collections::HashSet::new();
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    tick.tick().await;
    loop {
        let stop = tokio::select! {
            _ = tick.tick() => false,
            _ = stopped() => true,
        };
        let spans = collector.take_spans();
        let mut per_service: BTreeMap<String, u64> = BTreeMap::new();
        for s in &spans {
            *per_service
                .entry(s.service_name.clone().unwrap_or_else(|| "?".into()))
                .or_default() += 1;
            traces.insert(s.trace_id.clone());
        }
        total += spans.len() as u64;
        let detail: Vec<String> = per_service
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        println!(
            "otlp-sink: +{} spans ({}); total {total} spans in {} traces, {} metric pushes",
            spans.len(),
            if detail.is_empty() {
                "-".to_string()
            } else {
                detail.join(", ")
            },
            traces.len(),
            collector.metric_pushes(),
        );
        if stop {
            return Ok(());
        }
    }
}

async fn stopped() {
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
