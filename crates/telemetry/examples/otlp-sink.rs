//! A sink for OTLP/HTTP: accepts what the services export (`POST /v1/traces`, `/v1/metrics`,
//! protobuf bodies, as Jaeger or an OpenTelemetry collector would) and counts it, so the
//! cost of exporting can be measured without running Jaeger (`scripts/bench-tracing-overhead.sh`),
//! or, with `--print`, prints each trace as a tree of its spans, so a trace can be read
//! without Jaeger (the monitoring lesson, `docs/lessons/06-monitoring.md`).
//!
//! ```text
//! cargo run --release -p telemetry --features testing --example otlp-sink -- [PORT]
//! cargo run -p telemetry --features testing --example otlp-sink -- \
//!     [--listen ADDR] [--print [--with NAME] [--limit N] [--settle SECS]]
//! ```
//!
//! Prints `otlp-sink listening on http://127.0.0.1:PORT` (PORT 0 or none: any free port;
//! `--listen 127.0.0.1:4318` for the port Jaeger would have), then:
//!
//! - counting (the default): every 5 s the spans received in that interval per
//!   `service.name` and the totals, and the totals once more when stopped with Ctrl-C or
//!   SIGTERM;
//! - `--print`: each trace once it is complete, as `telemetry::testing::render_trace` draws
//!   it. Spans reach the sink in batches (every 5 s by default, `OTEL_BSP_SCHEDULE_DELAY` on
//!   the exporting side), so a trace counts as complete when none of its spans arrived for
//!   `--settle` seconds (default 6). `--with NAME` prints only the traces holding a span
//!   called NAME (`websocket.push`: the orders that reached the browsers), `--limit N` stops
//!   after N traces. On Ctrl-C the traces not yet printed are printed, then a total.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use telemetry::testing::{OtlpCollector, ReceivedSpan, render_trace};

/// The command line.
#[derive(clap::Parser)]
#[command(
    name = "otlp-sink",
    about = "Receives OTLP/HTTP exports; counts spans or prints traces"
)]
struct Args {
    /// Port on 127.0.0.1 (0: any free port); `--listen` names the address instead.
    port: Option<u16>,
    /// Address to listen on, e.g. `127.0.0.1:4318` (the port Jaeger would have).
    #[arg(long, conflicts_with = "port")]
    listen: Option<SocketAddr>,
    /// Print each complete trace as a tree instead of counting spans.
    #[arg(long)]
    print: bool,
    /// With --print: only the traces that hold a span of this name.
    #[arg(long, requires = "print")]
    with: Option<String>,
    /// With --print: stop after this many traces.
    #[arg(long, requires = "print")]
    limit: Option<usize>,
    /// With --print: a trace is complete when none of its spans arrived for this many seconds.
    #[arg(long, default_value_t = 6.0, value_parser = seconds)]
    settle: f64,
}

fn seconds(v: &str) -> Result<f64, String> {
    v.parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0)
        .ok_or_else(|| format!("{v}: not a number of seconds"))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() -> std::io::Result<()> {
    let args = <Args as clap::Parser>::parse();
    let listen = args
        .listen
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], args.port.unwrap_or(0))));
    let collector = OtlpCollector::start_on(listen).await?;
    println!("otlp-sink listening on {}", collector.endpoint());
    if args.print {
        print_traces(&collector, &args).await;
        return Ok(());
    }
    let mut total: u64 = 0;
    let mut traces = HashSet::new();
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

/// A trace being received: its spans so far and when the last one arrived.
struct Pending {
    spans: Vec<ReceivedSpan>,
    last: Instant,
}

/// `--print`: gathers spans by trace and prints each trace once it has settled.
async fn print_traces(collector: &OtlpCollector, args: &Args) {
    let mut pending: HashMap<String, Pending> = HashMap::new();
    let (mut received, mut printed) = (0usize, 0usize);
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let stop = stopped();
    tokio::pin!(stop);
    loop {
        let stopping = tokio::select! {
            _ = tick.tick() => false,
            _ = &mut stop => true,
        };
        let now = Instant::now();
        for s in collector.take_spans() {
            let p = pending.entry(s.trace_id.clone()).or_insert_with(|| {
                received += 1;
                Pending {
                    spans: Vec::new(),
                    last: now,
                }
            });
            p.spans.push(s);
            p.last = now;
        }
        let mut done: Vec<Vec<ReceivedSpan>> = Vec::new();
        pending.retain(|_, p| {
            let settled =
                stopping || now.duration_since(p.last) >= Duration::from_secs_f64(args.settle);
            if settled {
                done.push(std::mem::take(&mut p.spans));
            }
            !settled
        });
        done.sort_by_key(|spans| spans.iter().map(|s| s.start_unix_nano).min());
        for spans in done {
            let wanted = args
                .with
                .as_deref()
                .is_none_or(|name| spans.iter().any(|s| s.name == name));
            if !wanted {
                continue;
            }
            println!("{}", render_trace(&spans));
            printed += 1;
            if args.limit.is_some_and(|n| printed >= n) {
                println!("otlp-sink: printed {printed} of {received} traces");
                return;
            }
        }
        if stopping {
            println!("otlp-sink: printed {printed} of {received} traces");
            return;
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
