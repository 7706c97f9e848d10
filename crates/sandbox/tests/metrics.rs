//! `/metrics` of running nodes: a trading sandbox's management ports (and pricing-web's HTTP
//! port) serve Prometheus text that a parser accepts, with the series the Grafana dashboard
//! queries, and the order and match counters grow while orders flow.

#[path = "../../../tests/support/promql.rs"]
mod promql;
mod support;
#[path = "../../../tests/support/web.rs"]
mod web;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use prometheus_parse::{Scrape, Value};
use sandbox::Sandbox;
use support::{config, eventually};
use traders::TradersPacing;

/// Scrapes `addr` and parses the text; also checks the comment lines and that every sample
/// belongs to a family declared with `# TYPE` (prometheus-parse alone accepts both).
async fn scrape(addr: SocketAddr, path: &str) -> Scrape {
    let (status, body) = web::get(addr, path).await;
    assert_eq!(status, 200, "{body}");
    let mut families = BTreeSet::new();
    for line in body.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("# TYPE name kind");
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            assert!(
                families.insert(name.to_owned()),
                "family declared twice: {line}"
            );
        } else if line.starts_with('#') {
            assert!(line.starts_with("# HELP "), "{line}");
        } else if !line.is_empty() {
            let name = line.split(['{', ' ']).next().unwrap();
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s).filter(|f| families.contains(*f)))
                .unwrap_or(name);
            assert!(
                families.contains(family),
                "sample of no declared family: {line}"
            );
        }
    }
    Scrape::parse(body.lines().map(|l| Ok(l.to_owned()))).expect("Prometheus text")
}

/// The sum of `metric` over the samples whose labels include `labels`.
fn total(s: &Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    s.samples
        .iter()
        .filter(|x| x.metric == metric && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .map(|x| match &x.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
            Value::Histogram(h) => h.iter().map(|b| b.count).fold(0.0, f64::max),
            Value::Summary(_) => panic!("{metric}: no summaries here"),
        })
        .sum()
}

fn has(s: &Scrape, metric: &str) -> bool {
    s.samples.iter().any(|x| x.metric == metric)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_parse_as_prometheus_text_and_the_trading_counters_move() {
    let dir = tempfile::tempdir().unwrap();
    let sb = Sandbox::start(config(
        dir.path(),
        Some(TradersPacing::Load {
            orders_per_second: 200,
        }),
    ))
    .await
    .unwrap();
    let ports = sb.management_ports();
    let port = |name: &str| {
        ports
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, a)| *a)
            .unwrap()
    };
    let books = [port("trade-processor-1"), port("trade-processor-2")];
    let counted = || async {
        let (mut orders, mut matches) = (0.0, 0.0);
        for b in books {
            let s = scrape(b, "/metrics").await;
            orders += total(&s, "trading_orders_total", &[]);
            matches += total(&s, "trading_matches_total", &[]);
        }
        (orders, matches)
    };

    let first = eventually(60, "orders and matches counted", || async {
        let (o, m) = counted().await;
        (o > 0.0 && m > 0.0).then_some((o, m))
    })
    .await;
    eventually(60, "both counters growing", || async {
        let (o, m) = counted().await;
        (o > first.0 && m > first.1).then_some(())
    })
    .await;

    // The order book node: trading counters per ticker, journal writes (the sandbox's
    // shared journal records on trade-processor-1), sharding, membership and transport.
    let tp = scrape(books[0], "/metrics").await;
    let tp2 = scrape(books[1], "/metrics").await;
    let per_ticker: f64 = ["MSFT", "AAPL"]
        .iter()
        .map(|t| {
            total(&tp, "trading_orders_total", &[("trading_ticker", t)])
                + total(&tp2, "trading_orders_total", &[("trading_ticker", t)])
        })
        .sum();
    assert!(per_ticker > 0.0);
    assert!(
        total(
            &tp,
            "db_client_operation_duration_seconds_count",
            &[
                ("db_operation_name", "journal.write"),
                ("db_system_name", "sqlite")
            ]
        ) > 0.0
    );
    assert!(total(&tp, "persistence_journal_write_batch_size_sum", &[]) > 0.0);
    let shards = total(
        &tp,
        "cluster_sharding_shards",
        &[("cluster_sharding_type_name", "orderBook")],
    ) + total(
        &tp2,
        "cluster_sharding_shards",
        &[("cluster_sharding_type_name", "orderBook")],
    );
    assert!(shards > 0.0, "the order books' shards are hosted somewhere");
    // Lighthouse, two trade-processors, pricing and traders, once the view has converged.
    eventually(30, "five members Up on /metrics", || async {
        let s = scrape(books[0], "/metrics").await;
        (total(&s, "cluster_members", &[("cluster_member_status", "up")]) == 5.0).then_some(())
    })
    .await;
    assert_eq!(total(&tp, "cluster_members_unreachable", &[]), 0.0);
    assert!(total(&tp, "messaging_client_consumed_messages_total", &[]) > 0.0);
    assert!(total(&tp, "messaging_client_sent_messages_total", &[]) > 0.0);
    for actor in ["cluster", "pubsub", "sharding/orderBook/region"] {
        assert!(
            tp.samples
                .iter()
                .any(|x| x.metric == "actor_mailbox_depth"
                    && x.labels.get("actor_name") == Some(actor)),
            "no mailbox depth of {actor}"
        );
    }
    // Each node shows its own series only: one target_info, naming it.
    let info: Vec<_> = tp
        .samples
        .iter()
        .filter(|x| x.metric == "target_info")
        .collect();
    assert_eq!(info.len(), 1);
    assert_eq!(
        info[0].labels.get("service_instance_id"),
        Some("trade-processor-1")
    );

    // Pricing: the journal stream's lag per ticker (recorded once it has read a match).
    let pricing = eventually(30, "events-by-tag lag of MSFT", || async {
        let s = scrape(port("pricing"), "/metrics").await;
        s.samples
            .iter()
            .any(|x| {
                x.metric == "persistence_query_events_by_tag_lag_seconds"
                    && x.labels.get("persistence_tag") == Some("MSFT-Match")
            })
            .then_some(s)
    })
    .await;
    assert!(!has(&pricing, "trading_orders_total"));

    // pricing-web (not a member): on its HTTP port, with one browser connected.
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", sb.http))
        .await
        .unwrap();
    eventually(10, "the browser counted", || async {
        let s = scrape(sb.http, "/metrics").await;
        (total(&s, "websocket_server_active_connections", &[]) == 1.0).then_some(())
    })
    .await;
    let web = scrape(sb.http, "/metrics").await;
    assert!(total(&web, "messaging_client_consumed_messages_total", &[]) > 0.0);
    ws.close(None).await.unwrap();

    // Every series the Grafana dashboard queries is served by some node of the cluster,
    // under the labels the query uses.
    let mut scrapes = vec![tp, tp2, pricing, web];
    for name in ["lighthouse", "traders"] {
        scrapes.push(scrape(port(name), "/metrics").await);
    }
    let served: BTreeSet<&str> = scrapes
        .iter()
        .flat_map(|s| s.samples.iter().map(|x| x.metric.as_str()))
        .collect();
    let labels: BTreeSet<&str> = scrapes
        .iter()
        .flat_map(|s| {
            s.samples
                .iter()
                .flat_map(|x| x.labels.keys().map(String::as_str))
        })
        .collect();
    let workspace = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    for (title, expr) in promql::dashboard_queries(&workspace) {
        let (metrics, used) = promql::references(&expr);
        for m in &metrics {
            // prometheus-parse folds histogram series into their family name.
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| m.strip_suffix(s))
                .unwrap_or(m);
            assert!(
                served.contains(m.as_str()) || served.contains(family),
                "panel {title:?}: {m} is served by no node"
            );
        }
        for l in &used {
            assert!(
                labels.contains(l.as_str()) || promql::SCRAPE_LABELS.contains(&l.as_str()),
                "panel {title:?}: no series has the label {l}"
            );
        }
    }

    sb.shutdown().await;
    tokio::time::sleep(Duration::from_millis(10)).await;
}
