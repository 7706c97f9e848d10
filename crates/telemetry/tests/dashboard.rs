//! The Grafana dashboard (`k8s/environment/grafana-dashboard.json`) queries only series that
//! this crate's instruments produce: every metric name and every label in its PromQL is
//! checked against the `/metrics` text rendered with every instrument recorded once.

use std::collections::BTreeSet;
use std::time::Duration;

use opentelemetry::KeyValue;
use telemetry::Metrics;
use telemetry::instruments::{self as ins, JournalMetrics};

#[path = "../../../tests/support/promql.rs"]
mod promql;

use promql::{SCRAPE_LABELS, dashboard_queries, references};

fn rendered_names_and_labels() -> (BTreeSet<String>, BTreeSet<String>) {
    let metrics = Metrics::standalone("dashboard");
    let m = metrics.meter();
    let peer = [KeyValue::new(ins::ATTR_PEER, "AkkaTrader@a:5055")];
    let region = [KeyValue::new(ins::ATTR_TYPE_NAME, "orderBook")];
    let ticker = [KeyValue::new(ins::ATTR_TICKER, "MSFT")];
    let families = (
        ins::messages_sent(m),
        ins::messages_received(m),
        ins::mailbox_depth(m),
        ins::members(m),
        ins::unreachable_members(m),
        ins::shards(m),
        ins::entities(m),
        ins::handoffs(m),
        ins::orders(m),
        ins::matches(m),
        ins::websocket_clients(m),
    );
    families.0.handle(&peer).add(1);
    families.1.handle(&peer).add(1);
    families
        .2
        .handle(&[KeyValue::new(ins::ATTR_ACTOR, "membership")])
        .set(1);
    families
        .3
        .handle(&[KeyValue::new(ins::ATTR_MEMBER_STATUS, "up")])
        .set(1);
    families.4.handle(&[]).set(0);
    families.5.handle(&region).set(1);
    families.6.handle(&region).set(1);
    families.7.handle(&region).add(1);
    families.8.handle(&ticker).add(1);
    families.9.handle(&ticker).add(1);
    families.10.handle(&[]).add(1);
    ins::events_by_tag_lag(m).record(0.1, &[KeyValue::new(ins::ATTR_TAG, "MSFT")]);
    JournalMetrics::new(m, "sqlite").record_write(Duration::from_millis(1), 4);
    // What the runtime reads at collection time under the names of `instruments`.
    let p = peer.to_vec();
    let _dropped = ins::observed_counter(m, ins::REMOTE_DROPPED, "", "{message}", move || {
        vec![(p.clone(), 1)]
    });
    let p = peer.to_vec();
    let _queue = ins::observed_gauge(m, ins::REMOTE_SEND_QUEUE, "", "{message}", move || {
        vec![(p.clone(), 1)]
    });

    let text = metrics.render().unwrap();
    let (mut names, mut labels) = (BTreeSet::new(), BTreeSet::new());
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let head = line.rsplit_once(' ').unwrap().0;
        let (name, rest) = head.split_once('{').unwrap_or((head, ""));
        names.insert(name.to_owned());
        for pair in rest
            .trim_end_matches('}')
            .split("\",")
            .filter(|p| !p.is_empty())
        {
            labels.insert(pair.split_once('=').unwrap().0.to_owned());
        }
    }
    (names, labels)
}

#[test]
fn every_dashboard_query_uses_series_the_instruments_produce() {
    let (names, labels) = rendered_names_and_labels();
    let mut queried = 0;
    let workspace = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    {
        for (_, expr) in dashboard_queries(&workspace) {
            let expr = expr.as_str();
            let (m, l) = references(expr);
            assert!(!m.is_empty(), "no metric in {expr}");
            for name in &m {
                assert!(
                    names.contains(name),
                    "{expr}: {name} is not rendered; have {names:?}"
                );
            }
            for label in &l {
                assert!(
                    labels.contains(label) || SCRAPE_LABELS.contains(&label.as_str()),
                    "{expr}: label {label} is on no series; have {labels:?}"
                );
            }
            queried += m.len();
        }
    }
    assert!(
        queried >= 12,
        "the dashboard queries the instruments ({queried})"
    );
}

#[test]
fn the_query_scanner_tells_metrics_from_functions_and_labels() {
    let (m, l) = references(
        r#"histogram_quantile(0.99, sum by (le) (rate(db_client_operation_duration_seconds_bucket{db_operation_name="journal.write"}[1m])))"#,
    );
    assert_eq!(
        m.into_iter().collect::<Vec<_>>(),
        ["db_client_operation_duration_seconds_bucket"]
    );
    assert_eq!(
        l.into_iter().collect::<Vec<_>>(),
        ["db_operation_name", "le"]
    );
    let (m, _) = references("sum(rate(a_total[5m])) / sum(rate(b_count[5m]))");
    assert_eq!(m.into_iter().collect::<Vec<_>>(), ["a_total", "b_count"]);
}
