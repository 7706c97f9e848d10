//! The Grafana dashboard (`k8s/environment/grafana-dashboard.json`) queries only series that
//! this crate's instruments produce: every metric name and every label in its PromQL is
//! checked against the `/metrics` text rendered with every instrument recorded once.

use std::collections::BTreeSet;
use std::time::Duration;

use opentelemetry::KeyValue;
use telemetry::Metrics;
use telemetry::instruments::{self as ins, JournalMetrics};

const DASHBOARD: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../k8s/environment/grafana-dashboard.json"
);

/// Labels Prometheus itself adds at scrape time (see k8s/environment/prometheus.yaml and
/// docker/prometheus.yml), plus the histogram bucket label.
const SCRAPE_LABELS: &[&str] = &["instance", "job", "service", "pod", "le"];

/// Metric names and label names referenced by one PromQL expression.
fn references(expr: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    const KEYWORDS: &[&str] = &[
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "bool",
        "offset",
        "and",
        "or",
        "unless",
        // aggregation operators, which may be followed by `by (...)` rather than `(`
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
    ];
    let chars: Vec<char> = expr.chars().collect();
    let (mut metrics, mut labels) = (BTreeSet::new(), BTreeSet::new());
    let ident_start = |c: char| c.is_ascii_alphabetic() || c == '_' || c == ':';
    let ident_char = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut i = 0;
    let mut grouping = false; // inside `by (...)` / `without (...)`
    while i < chars.len() {
        let c = chars[i];
        if c == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
        } else if c == '[' {
            while i < chars.len() && chars[i] != ']' {
                i += 1;
            }
            i += 1;
        } else if c == '{' {
            // Label matchers: name op "value", ...
            i += 1;
            while i < chars.len() && chars[i] != '}' {
                if ident_start(chars[i]) {
                    let s = i;
                    while i < chars.len() && ident_char(chars[i]) {
                        i += 1;
                    }
                    labels.insert(chars[s..i].iter().collect::<String>());
                } else if chars[i] == '"' {
                    i += 1;
                    while i < chars.len() && chars[i] != '"' {
                        i += if chars[i] == '\\' { 2 } else { 1 };
                    }
                    i += 1;
                } else {
                    i += 1;
                }
            }
            i += 1;
        } else if c == ')' {
            grouping = false;
            i += 1;
        } else if c.is_ascii_digit() || c == '.' {
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
        } else if ident_start(c) {
            let s = i;
            while i < chars.len() && ident_char(chars[i]) {
                i += 1;
            }
            let word: String = chars[s..i].iter().collect();
            let next = chars[i..].iter().find(|c| !c.is_whitespace()).copied();
            if grouping {
                labels.insert(word);
            } else if word == "by" || word == "without" {
                grouping = true;
            } else if KEYWORDS.contains(&word.as_str()) || next == Some('(') {
                // function, aggregation or operator keyword
            } else {
                metrics.insert(word);
            }
        } else {
            i += 1;
        }
    }
    (metrics, labels)
}

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
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(DASHBOARD).expect("dashboard file")).unwrap();
    let (names, labels) = rendered_names_and_labels();
    let mut queried = 0;
    for panel in json["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap();
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
