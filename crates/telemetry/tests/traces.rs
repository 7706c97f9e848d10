//! Traces across simulated nodes: three tracer "nodes" in one process, each with its own
//! subscriber and `service.instance.id`, hand the trace context to each other over real TCP
//! connections as a `traceparent` string, and export through the real OTLP/HTTP exporter to
//! an in-test collector. One trace with correct parent links must come out.

use std::time::Duration;

use telemetry::testing::{OtlpCollector, ReceivedSpan};
use telemetry::{LogFormat, SamplerConfig, Telemetry, TelemetryBuilder};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tracing::Instrument;
use tracing::instrument::WithSubscriber;

const WAIT: Duration = Duration::from_secs(20);

fn node(
    collector: &OtlpCollector,
    service: &str,
    instance: &str,
    sampler: SamplerConfig,
) -> Telemetry {
    TelemetryBuilder::new(service)
        .instance_id(instance)
        .log_format(LogFormat::Off)
        .sampler(sampler)
        .otlp_endpoint(&collector.endpoint())
        .build()
        .expect("telemetry builds")
}

/// Flushes and shuts a node's providers down off the async workers (the SDK blocks).
async fn finish(nodes: Vec<Telemetry>) {
    tokio::task::spawn_blocking(move || {
        for n in nodes {
            n.guard.flush().expect("flush");
            drop(n);
        }
    })
    .await
    .unwrap();
}

/// Reads one line (a traceparent or `-` for none) from a fresh connection.
async fn receive_one(listener: &TcpListener) -> Option<String> {
    let (stream, _) = listener.accept().await.unwrap();
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).await.unwrap();
    let line = line.trim().to_owned();
    (line != "-").then_some(line)
}

async fn send_one(addr: std::net::SocketAddr, traceparent: Option<String>) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let line = traceparent.unwrap_or_else(|| "-".into());
    s.write_all(format!("{line}\n").as_bytes()).await.unwrap();
    s.shutdown().await.unwrap();
}

fn by_name<'a>(spans: &'a [ReceivedSpan], name: &str) -> &'a ReceivedSpan {
    spans
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no span {name} in {spans:#?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_follows_a_message_across_three_nodes_over_tcp() {
    let collector = OtlpCollector::start().await.unwrap();
    let on = SamplerConfig::ParentBasedAlwaysOn;
    let traders = node(&collector, "traders", "traders-0", on);
    let book = node(&collector, "trade-processor", "trade-processor-1", on);
    let pricing = node(&collector, "pricing", "pricing-0", on);

    let book_in = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let pricing_in = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let book_addr = book_in.local_addr().unwrap();
    let pricing_addr = pricing_in.local_addr().unwrap();

    // pricing: consumes the match.
    let pricing_task = tokio::spawn(
        async move {
            let tp = receive_one(&pricing_in).await;
            let span = telemetry::span_with_parent("pricing.consume-match", tp.as_deref());
            async { tokio::time::sleep(Duration::from_millis(1)).await }
                .instrument(span)
                .await;
        }
        .with_subscriber(pricing.dispatch.clone()),
    );
    // order book: handles the order, writes the journal (child span), publishes the match.
    let book_task = tokio::spawn(
        async move {
            let tp = receive_one(&book_in).await;
            assert!(tp.is_some(), "the trader's context arrived");
            let span = telemetry::span_with_parent("orderBook.place-order", tp.as_deref());
            async move {
                async { tokio::time::sleep(Duration::from_millis(1)).await }
                    .instrument(tracing::info_span!("journal.write"))
                    .await;
                send_one(pricing_addr, telemetry::current_traceparent()).await;
            }
            .instrument(span)
            .await;
        }
        .with_subscriber(book.dispatch.clone()),
    );
    // trader: places the order.
    let sent = async {
        let span = tracing::info_span!("trader.place-order");
        async {
            let tp = telemetry::current_traceparent();
            send_one(book_addr, tp.clone()).await;
            tp
        }
        .instrument(span)
        .await
    }
    .with_subscriber(traders.dispatch.clone())
    .await
    .expect("a sampled span has a traceparent");

    book_task.await.unwrap();
    pricing_task.await.unwrap();
    finish(vec![traders, book, pricing]).await;

    let spans = collector.wait_for_spans(4, WAIT).await;
    assert_eq!(spans.len(), 4, "{spans:#?}");
    let trader = by_name(&spans, "trader.place-order");
    let handle = by_name(&spans, "orderBook.place-order");
    let journal = by_name(&spans, "journal.write");
    let consume = by_name(&spans, "pricing.consume-match");

    // One trace, started by the trader, whose traceparent carried its ids.
    assert!(
        spans.iter().all(|s| s.trace_id == trader.trace_id),
        "{spans:#?}"
    );
    assert_eq!(
        sent,
        format!("00-{}-{}-01", trader.trace_id, trader.span_id)
    );
    assert_eq!(trader.parent_span_id, None);
    assert_eq!(
        handle.parent_span_id.as_deref(),
        Some(trader.span_id.as_str())
    );
    assert_eq!(
        journal.parent_span_id.as_deref(),
        Some(handle.span_id.as_str())
    );
    assert_eq!(
        consume.parent_span_id.as_deref(),
        Some(handle.span_id.as_str())
    );

    // Three nodes, told apart by their resource.
    let node_of = |s: &ReceivedSpan| {
        (
            s.service_name.clone().unwrap(),
            s.service_instance_id.clone().unwrap(),
        )
    };
    assert_eq!(node_of(trader), ("traders".into(), "traders-0".into()));
    assert_eq!(
        node_of(handle),
        ("trade-processor".into(), "trade-processor-1".into())
    );
    assert_eq!(node_of(journal), node_of(handle));
    assert_eq!(node_of(consume), ("pricing".into(), "pricing-0".into()));
    // Receiving spans are consumers (OTLP kind 5).
    assert_eq!(handle.kind, 5);
    assert_eq!(consume.kind, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsampled_decision_travels_and_the_receiver_follows_it() {
    let collector = OtlpCollector::start().await.unwrap();
    // The sender samples nothing; the receiver would sample every root it starts itself.
    let sender = node(
        &collector,
        "traders",
        "traders-0",
        SamplerConfig::ParentBasedAlwaysOff,
    );
    let receiver = node(
        &collector,
        "trade-processor",
        "tp-0",
        SamplerConfig::ParentBasedAlwaysOn,
    );

    let tp = tracing::dispatcher::with_default(&sender.dispatch, || {
        let _g = tracing::info_span!("trader.place-order").entered();
        telemetry::current_traceparent()
    })
    .expect("an unsampled but valid context still travels");
    assert!(tp.starts_with("00-") && tp.ends_with("-00"), "{tp}");

    tracing::dispatcher::with_default(&receiver.dispatch, || {
        // Follows the sender: not sampled, not exported, and passes the decision on.
        let span = telemetry::span_with_parent("orderBook.place-order", Some(&tp));
        let _g = span.enter();
        let onward = telemetry::current_traceparent().unwrap();
        assert_eq!(&onward[3..35], &tp[3..35], "same trace id");
        assert!(onward.ends_with("-00"));
        drop(_g);
        // A message without context starts a root, which this receiver samples.
        let _root = telemetry::span_with_parent("orderBook.place-order-root", None).entered();
    });
    finish(vec![sender, receiver]).await;

    let spans = collector.wait_for_spans(1, WAIT).await;
    // Give a wrongly exported span the time to arrive too before judging.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let spans = if spans.len() == 1 {
        collector.spans()
    } else {
        spans
    };
    let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["orderBook.place-order-root"], "{spans:#?}");
    assert_eq!(spans[0].parent_span_id, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_traceparent_starts_a_new_trace() {
    let collector = OtlpCollector::start().await.unwrap();
    let n = node(&collector, "pricing", "pricing-0", SamplerConfig::AlwaysOn);
    let tp = tracing::dispatcher::with_default(&n.dispatch, || {
        let span = telemetry::span_with_parent("pricing.consume-match", Some("00-not-a-trace-01"));
        assert!(!telemetry::set_parent(&span, Some("01-zz")));
        let _g = span.enter();
        telemetry::current_traceparent().unwrap()
    });
    finish(vec![n]).await;
    let spans = collector.wait_for_spans(1, WAIT).await;
    assert_eq!(spans.len(), 1, "{spans:#?}");
    assert_eq!(spans[0].parent_span_id, None);
    assert_eq!(
        tp,
        format!("00-{}-{}-01", spans[0].trace_id, spans[0].span_id)
    );
}

#[test]
fn with_export_off_spans_carry_no_context() {
    let t = TelemetryBuilder::new("traders")
        .log_format(LogFormat::Off)
        .build()
        .unwrap();
    assert!(!t.guard.traces_exported());
    tracing::dispatcher::with_default(&t.dispatch, || {
        let _g = tracing::info_span!("trader.place-order").entered();
        assert_eq!(telemetry::current_traceparent(), None);
        let s = telemetry::span_with_parent(
            "orderBook.place-order",
            Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
        );
        assert!(!telemetry::set_parent(
            &s,
            Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
        ));
        assert_eq!(telemetry::propagation::traceparent_of(&s), None);
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_sharing_a_thread_do_not_adopt_each_others_spans() {
    let collector = OtlpCollector::start().await.unwrap();
    let on = SamplerConfig::AlwaysOn;
    let a = node(&collector, "traders", "traders-0", on);
    let b = node(&collector, "pricing", "pricing-0", on);
    tracing::dispatcher::with_default(&a.dispatch, || {
        let _outer = tracing::info_span!("traders.tick").entered();
        // Node B runs on the same thread while node A's span is entered.
        tracing::dispatcher::with_default(&b.dispatch, || {
            let _own = telemetry::span_with_parent("pricing.consume-match", None).entered();
        });
    });
    finish(vec![a, b]).await;
    let spans = collector.wait_for_spans(2, WAIT).await;
    assert_eq!(spans.len(), 2, "{spans:#?}");
    let outer = by_name(&spans, "traders.tick");
    let other = by_name(&spans, "pricing.consume-match");
    assert_eq!(other.parent_span_id, None, "{spans:#?}");
    assert_ne!(other.trace_id, outer.trace_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_spans_record_sampled_hops_and_only_forward_unsampled_ones() {
    let collector = OtlpCollector::start().await.unwrap();
    let sender = node(&collector, "traders", "traders-0", SamplerConfig::AlwaysOn);
    // The receiver's log filter hides `info`: the exported spans must not depend on it.
    let receiver = TelemetryBuilder::new("trade-processor")
        .instance_id("tp-0")
        .log_format(LogFormat::Text)
        .log_filter("warn")
        .sampler(SamplerConfig::ParentBasedAlwaysOn)
        .otlp_endpoint(&collector.endpoint())
        .build()
        .unwrap();

    let (sampled, sender_node) = tracing::dispatcher::with_default(&sender.dispatch, || {
        assert!(telemetry::traces_exported());
        let root = telemetry::MessageSpan::start("desk.send", "akka.tcp://T@h:1")
            .with_destination("orderBook");
        assert!(root.is_recording());
        (root.traceparent().unwrap().to_owned(), "akka.tcp://T@h:1")
    });
    assert!(telemetry::propagation::is_sampled(&sampled), "{sampled}");
    let unsampled = format!("{}-00", &sampled[..52]);

    let onward = tracing::dispatcher::with_default(&receiver.dispatch, || {
        let handled = telemetry::MessageSpan::follow("orderBook.handle", "tp", Some(&sampled));
        assert!(handled.is_recording());
        let _g = handled.span().enter();
        drop(handled.child("journal.write"));
        // The context sent on is the handler's own, in the same trace.
        let onward = handled.traceparent().unwrap().to_owned();
        assert_eq!(&onward[..36], &sampled[..36]);
        assert_ne!(onward, sampled);

        let quiet = telemetry::MessageSpan::follow("orderBook.handle", "tp", Some(&unsampled));
        assert!(!quiet.is_recording());
        assert_eq!(quiet.traceparent(), Some(unsampled.as_str()));
        assert!(quiet.child("journal.write").is_none());
        assert!(telemetry::MessageSpan::sampled("x", "tp", Some(&unsampled)).is_none());
        assert!(telemetry::MessageSpan::sampled("x", "tp", None).is_none());
        assert!(
            telemetry::MessageSpan::follow("x", "tp", None)
                .traceparent()
                .is_none()
        );
        onward
    });
    finish(vec![sender, receiver]).await;

    let spans = collector.wait_for_spans(3, WAIT).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let spans = if spans.len() == 3 {
        collector.spans()
    } else {
        spans
    };
    assert_eq!(spans.len(), 3, "{spans:#?}");
    let root = by_name(&spans, "desk.send");
    let handle = by_name(&spans, "orderBook.handle");
    let journal = by_name(&spans, "journal.write");
    assert_eq!(root.parent_span_id, None);
    assert_eq!(root.kind, 4, "producer");
    assert_eq!(root.attribute("cluster.node"), Some(sender_node));
    assert_eq!(
        root.attribute("messaging.destination.name"),
        Some("orderBook")
    );
    assert_eq!(
        handle.parent_span_id.as_deref(),
        Some(root.span_id.as_str())
    );
    assert_eq!(handle.kind, 5, "consumer");
    assert_eq!(handle.attribute("cluster.node"), Some("tp"));
    assert_eq!(
        journal.parent_span_id.as_deref(),
        Some(handle.span_id.as_str())
    );
    assert_eq!(
        onward,
        format!("00-{}-{}-01", handle.trace_id, handle.span_id)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsampled_root_sends_its_decision_and_records_nothing() {
    let collector = OtlpCollector::start().await.unwrap();
    let n = node(&collector, "traders", "traders-0", SamplerConfig::AlwaysOff);
    let tp = tracing::dispatcher::with_default(&n.dispatch, || {
        let root = telemetry::MessageSpan::start("desk.send", "n");
        assert!(!root.is_recording());
        root.into_traceparent()
    })
    .expect("the decision travels");
    assert!(tp.ends_with("-00"), "{tp}");
    finish(vec![n]).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(collector.spans().is_empty());
}

/// The number after `label` in a rendered line (`gap  31.207 ms` -> 31.207).
fn number_after(line: &str, label: &str) -> Option<f64> {
    let rest = &line[line.find(label)? + label.len()..];
    rest.split_whitespace().next()?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_received_trace_renders_as_a_tree_with_nodes_durations_and_gaps() {
    let collector = OtlpCollector::start().await.unwrap();
    let on = SamplerConfig::ParentBasedAlwaysOn;
    let traders = node(&collector, "traders", "traders-0", on);
    let book = node(&collector, "trade-processor", "trade-processor-1", on);
    let book_in = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let book_addr = book_in.local_addr().unwrap();

    // The book takes the message 30 ms after it arrived (a mailbox, say), then spends 5 ms
    // in its journal write.
    let book_task = tokio::spawn(
        async move {
            let tp = receive_one(&book_in).await;
            tokio::time::sleep(Duration::from_millis(30)).await;
            let handled = telemetry::MessageSpan::follow("orderBook.handle", "tp-1", tp.as_deref());
            assert!(handled.is_recording());
            let journal = handled.child("journal.write");
            async { tokio::time::sleep(Duration::from_millis(5)).await }
                .instrument(journal)
                .instrument(handled.span().clone())
                .await;
        }
        .with_subscriber(book.dispatch.clone()),
    );
    async {
        let root = telemetry::MessageSpan::start("orderBook.place", "traders-node");
        let tp = root.traceparent().map(str::to_owned);
        drop(root);
        send_one(book_addr, tp).await;
    }
    .with_subscriber(traders.dispatch.clone())
    .await;
    book_task.await.unwrap();
    finish(vec![traders, book]).await;

    let spans = collector.wait_for_spans(3, WAIT).await;
    assert_eq!(spans.len(), 3, "{spans:#?}");
    let text = telemetry::testing::render_trace(&spans);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    let root = by_name(&spans, "orderBook.place");
    assert!(
        lines[0].starts_with(&format!("trace {}: 3 spans on 2 nodes, ", root.trace_id)),
        "{text}"
    );
    // The root, on its node; the handling one level down, on another node, after a gap of at
    // least the 30 ms it waited; the journal write under it, on the same node (not repeated),
    // started while its parent ran (no gap).
    assert!(lines[1].starts_with("  orderBook.place "), "{text}");
    assert!(lines[1].contains("+0.000 ms"), "{text}");
    assert!(lines[1].ends_with("  traders traders-node"), "{text}");
    assert!(lines[2].starts_with("    orderBook.handle "), "{text}");
    assert!(lines[2].ends_with("  trade-processor tp-1"), "{text}");
    let gap = number_after(lines[2], "gap").expect("a gap after the root ended");
    assert!((30.0..5_000.0).contains(&gap), "{text}");
    assert!(lines[3].starts_with("      journal.write "), "{text}");
    assert!(
        lines[3].ends_with(" ms") && !lines[3].contains("gap"),
        "{text}"
    );
    let took = |line: &str| {
        line.split(" ms")
            .nth(1)
            .and_then(|t| t.trim().parse::<f64>().ok())
            .expect("a duration")
    };
    assert!(took(lines[3]) >= 5.0, "{text}");
    assert!(took(lines[2]) >= took(lines[3]), "{text}");

    // Without its root, the handling starts a tree of its own, and says so.
    let partial: Vec<ReceivedSpan> = spans
        .iter()
        .filter(|s| s.name != "orderBook.place")
        .cloned()
        .collect();
    let text = telemetry::testing::render_trace(&partial);
    assert!(
        text.starts_with(&format!("trace {}: 2 spans on 1 nodes", root.trace_id)),
        "{text}"
    );
    assert!(
        text.lines()
            .nth(1)
            .is_some_and(|l| l.starts_with("  orderBook.handle ")
                && l.ends_with(&format!("(parent {} not received)", root.span_id))),
        "{text}"
    );
    assert_eq!(telemetry::testing::render_trace(&[]), "");
}
