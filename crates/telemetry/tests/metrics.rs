//! `/metrics` text: every instrument of `telemetry::instruments` rendered by our exposition
//! code must parse as Prometheus text 0.0.4 (each line a comment, a TYPE/HELP or a sample
//! of a declared family), and values must move when recorded. Also the OTLP metrics push.

use std::collections::HashMap;
use std::time::Duration;

use opentelemetry::KeyValue;
use prometheus_parse::{LineInfo, Sample, Scrape, Value};
use telemetry::instruments::{self as ins, JournalMetrics};
use telemetry::testing::OtlpCollector;
use telemetry::{LogFormat, Metrics, TelemetryBuilder};

/// One sample line by the 0.0.4 grammar: `name{k="v",...} value`, label values unescaped.
/// (prometheus-parse is lenient about label syntax, so this checks it exactly.)
fn strict_sample(line: &str) -> (String, Vec<(String, String)>, String) {
    let is_name = |s: &str| {
        !s.is_empty()
            && !s.starts_with(|c: char| c.is_ascii_digit())
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    };
    let (head, value) = line
        .rsplit_once(' ')
        .unwrap_or_else(|| panic!("no value: {line}"));
    let (name, mut rest) = match head.split_once('{') {
        Some((n, r)) => (n, r),
        None => (head, ""),
    };
    assert!(is_name(name), "bad metric name: {line}");
    let mut labels = Vec::new();
    if head.contains('{') {
        loop {
            let (k, r) = rest
                .split_once("=\"")
                .unwrap_or_else(|| panic!("bad label: {line}"));
            assert!(is_name(k), "bad label name {k:?}: {line}");
            let mut v = String::new();
            let mut chars = r.char_indices();
            let end = loop {
                match chars.next() {
                    Some((_, '\\')) => match chars.next() {
                        Some((_, 'n')) => v.push('\n'),
                        Some((_, c @ ('\\' | '"'))) => v.push(c),
                        other => panic!("bad escape {other:?}: {line}"),
                    },
                    Some((i, '"')) => break i,
                    Some((_, c)) => v.push(c),
                    None => panic!("unterminated label value: {line}"),
                }
            };
            labels.push((k.to_owned(), v));
            rest = &r[end + 1..];
            if let Some(r) = rest.strip_prefix(',') {
                rest = r;
            } else {
                assert_eq!(rest, "}", "bad label list end: {line}");
                break;
            }
        }
    }
    (name.to_owned(), labels, value.to_owned())
}

/// Parses strictly: prometheus-parse skips lines it does not understand, so first check
/// that every line is understood and that each sample belongs to a family declared before.
fn parse(text: &str) -> Vec<Sample> {
    let mut declared: Vec<String> = Vec::new();
    for line in text.lines() {
        match LineInfo::parse(line) {
            LineInfo::Type {
                metric_name,
                metric_alias,
                ..
            } => {
                declared.push(metric_alias.unwrap_or(metric_name));
            }
            LineInfo::Doc { .. } => {}
            LineInfo::Sample {
                metric_name, value, ..
            } => {
                strict_sample(line);
                assert!(
                    declared.iter().any(|f| metric_name == f
                        || ["_bucket", "_sum", "_count"]
                            .iter()
                            .any(|s| metric_name == format!("{f}{s}"))),
                    "sample without a TYPE line: {line}"
                );
                assert!(
                    value.parse::<f64>().is_ok() || ["NaN", "+Inf", "-Inf"].contains(&value),
                    "bad value: {line}"
                );
            }
            other => panic!("not Prometheus text 0.0.4: {line:?} ({other:?})"),
        }
    }
    assert!(text.ends_with('\n'));
    Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
        .unwrap()
        .samples
}

fn value(samples: &[Sample], metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match &s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
            other => panic!("{metric} is not a scalar: {other:?}"),
        })
}

#[test]
fn every_instrument_renders_as_parseable_prometheus_text_and_counters_move() {
    let metrics = Metrics::standalone("trade-processor");
    let m = metrics.meter();
    let sent = ins::messages_sent(m);
    let received = ins::messages_received(m);
    let mailbox = ins::mailbox_depth(m);
    let members = ins::members(m);
    let unreachable = ins::unreachable_members(m);
    let shards = ins::shards(m);
    let entities = ins::entities(m);
    let handoffs = ins::handoffs(m);
    let lag = ins::events_by_tag_lag(m);
    let orders = ins::orders(m);
    let matches = ins::matches(m);
    let ws = ins::websocket_clients(m);
    let journal = JournalMetrics::new(m, "sqlite");

    let peer_a = sent.handle(&[KeyValue::new(ins::ATTR_PEER, "AkkaTrader@pricing-0:5055")]);
    let peer_b = sent.handle(&[KeyValue::new(ins::ATTR_PEER, "AkkaTrader@traders-0:5055")]);
    peer_a.add(3);
    peer_b.add(1);
    received
        .handle(&[KeyValue::new(ins::ATTR_PEER, "AkkaTrader@pricing-0:5055")])
        .add(7);
    mailbox
        .handle(&[KeyValue::new(ins::ATTR_ACTOR, "membership")])
        .set(4);
    members
        .handle(&[KeyValue::new(ins::ATTR_MEMBER_STATUS, "up")])
        .set(5);
    members
        .handle(&[KeyValue::new(ins::ATTR_MEMBER_STATUS, "joining")])
        .set(1);
    unreachable.handle(&[]).set(0);
    let book = [KeyValue::new(ins::ATTR_TYPE_NAME, "orderBook")];
    shards.handle(&book).set(15);
    entities.handle(&book).set(42);
    handoffs.handle(&book).add(2);
    lag.record(0.25, &[KeyValue::new(ins::ATTR_TAG, "MSFT")]);
    let msft = orders.handle(&[KeyValue::new(ins::ATTR_TICKER, "MSFT")]);
    msft.add(10);
    matches.handle(&[]).add(4);
    let ws_clients = ws.handle(&[]);
    ws_clients.add(1);
    ws_clients.add(1);
    ws_clients.add(-1);
    for (ms, events) in [(0.3, 1), (2.0, 16), (40.0, 100)] {
        journal.record_write(Duration::from_secs_f64(ms / 1000.0), events);
    }

    let text = metrics.render().unwrap();
    let s = parse(&text);
    let peer = |p: &'static str| [(ins::ATTR_PEER.replace('.', "_").leak() as &str, p)];
    let sent_name = "messaging_client_sent_messages_total";
    assert_eq!(
        value(&s, sent_name, &peer("AkkaTrader@pricing-0:5055")),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        value(&s, sent_name, &peer("AkkaTrader@traders-0:5055")),
        Some(1.0)
    );
    assert!(value(&s, sent_name, &[("messaging_system", "akka-cqrs")]).is_some());
    assert_eq!(
        value(
            &s,
            "messaging_client_consumed_messages_total",
            &peer("AkkaTrader@pricing-0:5055")
        ),
        Some(7.0)
    );
    assert_eq!(
        value(&s, "actor_mailbox_depth", &[("actor_name", "membership")]),
        Some(4.0)
    );
    assert_eq!(
        value(&s, "cluster_members", &[("cluster_member_status", "up")]),
        Some(5.0)
    );
    assert_eq!(
        value(
            &s,
            "cluster_members",
            &[("cluster_member_status", "joining")]
        ),
        Some(1.0)
    );
    assert_eq!(value(&s, "cluster_members_unreachable", &[]), Some(0.0));
    let region = [("cluster_sharding_type_name", "orderBook")];
    assert_eq!(value(&s, "cluster_sharding_shards", &region), Some(15.0));
    assert_eq!(value(&s, "cluster_sharding_entities", &region), Some(42.0));
    assert_eq!(
        value(&s, "cluster_sharding_handoffs_total", &region),
        Some(2.0)
    );
    assert_eq!(
        value(
            &s,
            "persistence_query_events_by_tag_lag_seconds",
            &[("persistence_tag", "MSFT")]
        ),
        Some(0.25)
    );
    assert_eq!(
        value(&s, "trading_orders_total", &[("trading_ticker", "MSFT")]),
        Some(10.0)
    );
    assert_eq!(value(&s, "trading_matches_total", &[]), Some(4.0));
    assert_eq!(
        value(&s, "websocket_server_active_connections", &[]),
        Some(1.0)
    );
    assert_eq!(
        value(&s, "target_info", &[("service_name", "trade-processor")]),
        Some(1.0)
    );

    // The journal histogram: 3 writes, cumulative buckets, in seconds.
    let hist = s
        .iter()
        .find(|x| x.metric == "db_client_operation_duration_seconds")
        .expect("duration histogram");
    assert_eq!(hist.labels.get("db_operation_name"), Some("journal.write"));
    assert_eq!(hist.labels.get("db_system_name"), Some("sqlite"));
    let Value::Histogram(buckets) = &hist.value else {
        panic!("{hist:?}")
    };
    let le = |b: f64| buckets.iter().find(|c| c.less_than == b).map(|c| c.count);
    assert_eq!(le(0.0005), Some(1.0));
    assert_eq!(le(0.0025), Some(2.0));
    assert_eq!(le(0.05), Some(3.0));
    assert_eq!(le(f64::INFINITY), Some(3.0));
    assert_eq!(
        value(&s, "db_client_operation_duration_seconds_count", &[]),
        Some(3.0)
    );
    let sum = value(&s, "db_client_operation_duration_seconds_sum", &[]).unwrap();
    assert!((sum - 0.0423).abs() < 1e-9, "{sum}");
    assert_eq!(
        value(&s, "persistence_journal_write_batch_size_count", &[]),
        Some(3.0)
    );
    assert_eq!(
        value(&s, "persistence_journal_write_batch_size_sum", &[]),
        Some(117.0)
    );

    // Counters move between scrapes; gauges follow their last value.
    peer_a.add(2);
    msft.add(5);
    ws_clients.add(-1);
    let s2 = parse(&metrics.render().unwrap());
    assert_eq!(
        value(&s2, sent_name, &peer("AkkaTrader@pricing-0:5055")),
        Some(5.0)
    );
    assert_eq!(
        value(&s2, "trading_orders_total", &[("trading_ticker", "MSFT")]),
        Some(15.0)
    );
    assert_eq!(
        value(&s2, "websocket_server_active_connections", &[]),
        Some(0.0)
    );
}

#[test]
fn one_type_line_per_family_and_help_is_escaped() {
    let metrics = Metrics::standalone("lighthouse");
    let c = metrics
        .meter()
        .u64_counter("odd.name-with/slash")
        .with_description("first line\nsecond \\ line")
        .build();
    c.add(1, &[KeyValue::new("path", "a\"b")]);
    c.add(1, &[KeyValue::new("path", "c")]);
    // Same name from another scope: merged into the same family, not a second TYPE line.
    metrics
        .meter_with_scope("runtime")
        .u64_counter("odd.name-with/slash")
        .build()
        .add(5, &[KeyValue::new("path", "d")]);
    let text = metrics.render().unwrap();
    let s = parse(&text);
    assert_eq!(
        text.matches("# TYPE odd_name_with_slash_total counter")
            .count(),
        1,
        "{text}"
    );
    assert!(
        text.contains("# HELP odd_name_with_slash_total first line\\nsecond \\\\ line\n"),
        "{text}"
    );
    let quoted = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(strict_sample)
        .find(|(_, labels, _)| labels.iter().any(|(k, v)| k == "path" && v == "a\"b"))
        .expect("the quote survives escaping");
    assert_eq!(quoted.2, "1");
    assert_eq!(
        value(&s, "odd_name_with_slash_total", &[("path", "d")]),
        Some(5.0)
    );
    let per_path: HashMap<_, _> = s
        .iter()
        .filter(|x| x.metric == "odd_name_with_slash_total")
        .map(|x| (x.labels.get("path").unwrap().to_owned(), x.value.clone()))
        .collect();
    assert_eq!(per_path.len(), 3);
}

#[test]
fn handles_of_the_same_series_share_one_value() {
    let metrics = Metrics::standalone("pricing");
    let fam = ins::handoffs(metrics.meter());
    let a = fam.handle(&[KeyValue::new(ins::ATTR_TYPE_NAME, "priceAggregator")]);
    let b = fam.handle(&[KeyValue::new(ins::ATTR_TYPE_NAME, "priceAggregator")]);
    a.add(1);
    b.add(2);
    assert_eq!(a.get(), 3);
    let s = parse(&metrics.render().unwrap());
    let rows: Vec<_> = s
        .iter()
        .filter(|x| x.metric == "cluster_sharding_handoffs_total")
        .collect();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].value, Value::Counter(3.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_pushed_over_otlp_when_an_endpoint_is_set() {
    let collector = OtlpCollector::start().await.unwrap();
    let t = TelemetryBuilder::new("pricing")
        .instance_id("pricing-0")
        .log_format(LogFormat::Off)
        .otlp_endpoint(&collector.endpoint())
        .build()
        .unwrap();
    let orders = ins::orders(t.guard.metrics().meter());
    orders.handle(&[]).add(3);
    // /metrics works at the same time as the push.
    let text = t.guard.metrics().render().unwrap();
    assert!(text.contains("trading_orders_total 3\n"), "{text}");
    tokio::task::spawn_blocking(move || {
        t.guard.flush().unwrap();
        drop(t);
    })
    .await
    .unwrap();
    assert!(
        collector
            .wait_for_metric(ins::ORDERS, Duration::from_secs(20))
            .await
    );
}

#[test]
fn observed_instruments_read_existing_state_at_each_scrape() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    let metrics = Metrics::standalone("lighthouse");
    // Stand-ins for the transport's per-peer totals and the membership table.
    let sent = Arc::new(AtomicU64::new(10));
    let read = sent.clone();
    let _sent = ins::observed_counter(
        metrics.meter(),
        ins::MESSAGES_SENT,
        "Messages sent to a remote cluster node",
        "{message}",
        move || {
            vec![(
                vec![
                    KeyValue::new(ins::ATTR_PEER, "AkkaTrader@pricing-0:5055"),
                    ins::messaging_system(),
                ],
                read.load(Ordering::Relaxed),
            )]
        },
    );
    let _members = ins::observed_gauge(
        metrics.meter(),
        ins::MEMBERS,
        "Cluster members seen by this node, by status",
        "{member}",
        || {
            vec![
                (vec![KeyValue::new(ins::ATTR_MEMBER_STATUS, "up")], 3),
                (vec![KeyValue::new(ins::ATTR_MEMBER_STATUS, "leaving")], 1),
            ]
        },
    );
    let peer = [("cluster_peer_address", "AkkaTrader@pricing-0:5055")];
    let s = parse(&metrics.render().unwrap());
    assert_eq!(
        value(&s, "messaging_client_sent_messages_total", &peer),
        Some(10.0)
    );
    assert_eq!(
        value(
            &s,
            "cluster_members",
            &[("cluster_member_status", "leaving")]
        ),
        Some(1.0)
    );
    sent.fetch_add(5, Ordering::Relaxed);
    let s = parse(&metrics.render().unwrap());
    assert_eq!(
        value(&s, "messaging_client_sent_messages_total", &peer),
        Some(15.0)
    );
}

#[test]
fn each_node_of_a_process_gets_its_own_meter_provider() {
    let t = TelemetryBuilder::new("sandbox")
        .log_format(LogFormat::Off)
        .build()
        .unwrap();
    let a = t.guard.node_metrics("lighthouse").unwrap();
    let b = t.guard.node_metrics("pricing").unwrap();
    let family = ins::members(a.meter());
    family
        .handle(&[KeyValue::new(ins::ATTR_MEMBER_STATUS, "up")])
        .set(3);
    let text_a = a.render().unwrap();
    let text_b = b.render().unwrap();
    assert!(
        text_a.contains(r#"service_instance_id="lighthouse""#),
        "{text_a}"
    );
    assert!(
        text_a.contains(r#"cluster_members{cluster_member_status="up"} 3"#),
        "{text_a}"
    );
    assert!(
        text_b.contains(r#"service_instance_id="pricing""#),
        "{text_b}"
    );
    assert!(!text_b.contains("cluster_members"), "{text_b}");
}
