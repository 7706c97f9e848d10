//! One trace follows an order across the cluster: traders, trade-processor, pricing and
//! pricing-web run as separate nodes over loopback TCP, each with a telemetry setup of its own
//! (`TelemetryBuilder::build`: its own subscriber, `service.name` and `service.instance.id`,
//! exporting over real OTLP/HTTP to the in-test collector of `telemetry::testing`), and the
//! spans of one sampled batch must come back as one trace whose parent links run from the
//! browser push all the way up to the trader's root span.
//!
//! Why nodes in one process rather than the five binaries: cargo builds another package's
//! binaries only for that package's tests, and a node here is the same library code the
//! binaries run (`host`, `trade_processor::start`, ...). Each node runs on a tokio runtime of
//! its own whose threads all have the node's subscriber as their default (`on_thread_start`),
//! so every task and actor a node spawns records into that node's telemetry, exactly as a
//! process-wide `telemetry::init` would in its own process.

use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use domain::Ticker;
use host::{ServiceNode, StoreConfig, Stores};
use runtime::cluster::ClusterConfig;
use runtime::node::Node;
use runtime::{NodeAddress, NodeConfig, Remoting};
use telemetry::testing::{OtlpCollector, ReceivedSpan};
use telemetry::{LogFormat, SamplerConfig, Telemetry, TelemetryBuilder};
use tokio::sync::oneshot;

/// A node: its runtime, its telemetry, and the signal that stops what runs on it.
struct Place {
    rt: tokio::runtime::Runtime,
    telemetry: Telemetry,
    stop: Option<oneshot::Sender<()>>,
}

impl Place {
    fn new(collector: &str, service: &str, instance: &str) -> Place {
        let telemetry = TelemetryBuilder::new(service)
            .instance_id(instance)
            .log_format(LogFormat::Off)
            .sampler(SamplerConfig::ParentBasedAlwaysOn)
            .otlp_endpoint(collector)
            .build()
            .expect("telemetry builds");
        let dispatch = telemetry.dispatch.clone();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name(instance)
            .enable_all()
            .on_thread_start(move || {
                // For the thread's whole life: the thread ends with the runtime.
                std::mem::forget(tracing::dispatcher::set_default(&dispatch));
            })
            .build()
            .expect("a runtime");
        Place {
            rt,
            telemetry,
            stop: None,
        }
    }

    /// Runs `start` on this node's runtime; it hands back a value once started and then keeps
    /// what it started alive until [`Place::shutdown`].
    fn start<T, F, Fut>(&mut self, start: F) -> T
    where
        T: Send + 'static,
        F: FnOnce(std_mpsc::Sender<T>, oneshot::Receiver<()>) -> Fut,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let (ready_tx, ready_rx) = std_mpsc::channel();
        let (stop_tx, stop_rx) = oneshot::channel();
        self.stop = Some(stop_tx);
        self.rt.spawn(start(ready_tx, stop_rx));
        ready_rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the node started")
    }

    fn flush(&self) {
        self.telemetry.guard.flush().expect("flush");
    }

    fn shutdown(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        self.rt.shutdown_timeout(Duration::from_secs(2));
    }
}

/// Sandbox timings: quick gossip and joining on loopback.
fn node_config(seeds: Vec<NodeAddress>, roles: &[&str]) -> NodeConfig {
    let mut cfg = NodeConfig::local(seeds, roles, Duration::from_millis(200));
    let local = cfg.cluster.clone();
    cfg.cluster = ClusterConfig {
        discovery: local.discovery,
        roles: local.roles,
        gossip_interval: Duration::from_millis(200),
        seed_node_timeout: Duration::from_secs(1),
        join_retry_interval: Duration::from_millis(200),
        ..ClusterConfig::default()
    };
    cfg.shutdown_phase_timeout = Duration::from_secs(2);
    cfg
}

async fn open_stores(dir: std::path::PathBuf) -> Stores {
    Stores::open(&StoreConfig::Sqlite {
        dir,
        sync_full: false,
    })
    .await
    .expect("the journal opens")
}

fn by_id<'a>(spans: &'a [ReceivedSpan], id: &str) -> Option<&'a ReceivedSpan> {
    spans.iter().find(|s| s.span_id == id)
}

/// The chain from `leaf` up to its root, `leaf` first; `None` while a parent is missing.
fn ancestry<'a>(
    spans: &'a [ReceivedSpan],
    leaf: &'a ReceivedSpan,
) -> Option<Vec<&'a ReceivedSpan>> {
    let mut chain = vec![leaf];
    while let Some(parent) = &chain.last().expect("not empty").parent_span_id {
        let p = by_id(spans, parent)?;
        assert_eq!(
            p.trace_id, leaf.trace_id,
            "a parent in another trace: {p:#?}"
        );
        chain.push(p);
    }
    Some(chain)
}

/// The spans of one trace that reaches a browser push with every ancestor exported, if any.
fn complete_trace(spans: &[ReceivedSpan]) -> Option<(Vec<&ReceivedSpan>, Vec<&ReceivedSpan>)> {
    spans
        .iter()
        .filter(|s| s.name == "websocket.push")
        .find_map(|push| {
            let chain = ancestry(spans, push)?;
            let trace: Vec<&ReceivedSpan> = spans
                .iter()
                .filter(|s| s.trace_id == push.trace_id)
                .collect();
            // The book's journal write belongs to the trace too.
            trace
                .iter()
                .any(|s| s.name == "journal.write")
                .then_some((chain, trace))
        })
}

#[test]
fn an_order_placed_through_the_cluster_is_one_trace_across_four_nodes() {
    let test_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let collector = test_rt.block_on(OtlpCollector::start()).unwrap();
    let endpoint = collector.endpoint();
    let dir = tempfile::tempdir().unwrap();
    let tickers = Ticker::parse_list("MSFT,AAPL").unwrap();

    let mut lighthouse = Place::new(&endpoint, "lighthouse", "lighthouse-0");
    let seed: NodeAddress = lighthouse.start(|ready, stop| async move {
        let node = Node::start(node_config(vec![], &["lighthouse"]))
            .await
            .unwrap();
        ready.send(node.address().address.clone()).unwrap();
        let _ = stop.await;
        node.halt().await;
    });

    let mut book = Place::new(&endpoint, "trade-processor", "trade-processor-0");
    let data = dir.path().to_path_buf();
    let seeds = vec![seed.clone()];
    book.start(move |ready, stop| async move {
        let stores = open_stores(data).await;
        let node = ServiceNode::start(node_config(seeds, &trade_processor::ROLES))
            .await
            .unwrap();
        let snapshots = trade_processor::SnapshotPolicy {
            every: None,
            ..Default::default()
        };
        let _region = trade_processor::start(&node, &stores, snapshots)
            .await
            .unwrap();
        ready.send(()).unwrap();
        let _ = stop.await;
        node.node.halt().await;
    });

    let mut pricing = Place::new(&endpoint, "pricing", "pricing-0");
    let data = dir.path().to_path_buf();
    let (seeds, t) = (vec![seed.clone()], tickers.clone());
    let pricing_addr: NodeAddress = pricing.start(move |ready, stop| async move {
        let stores = open_stores(data).await;
        let node = ServiceNode::start(node_config(seeds, &pricing::ROLES))
            .await
            .unwrap();
        let settings = pricing::AggregatorSettings {
            publish_interval: Duration::from_millis(100),
            ..Default::default()
        };
        let _parts = pricing::start(&node, &stores, t, settings).await.unwrap();
        ready.send(node.node.address().address.clone()).unwrap();
        let _ = stop.await;
        node.node.halt().await;
    });

    let mut web = Place::new(&endpoint, "pricing-web", "pricing-web-0");
    let t = tickers.clone();
    web.start(move |ready, stop| async move {
        let remoting = Remoting::start(node_config(vec![], &[]).remoting)
            .await
            .unwrap();
        let hub = pricing_web::PriceHub::new(t, 100);
        let feed = pricing_web::PriceFeed::start(&remoting, vec![pricing_addr], hub)
            .await
            .unwrap();
        ready.send(()).unwrap();
        let _ = stop.await;
        feed.stop();
        remoting.shutdown(Duration::ZERO).await;
    });

    // Traders last: a slow pace, so every span of every trace fits the exporters' queues.
    let mut traders = Place::new(&endpoint, "traders", "traders-0");
    let t = tickers.clone();
    traders.start(move |ready, stop| async move {
        let node = ServiceNode::start(node_config(vec![seed], &traders::ROLES))
            .await
            .unwrap();
        let config = traders::TradersConfig {
            tickers: t,
            pacing: traders::TradersPacing::Load {
                orders_per_second: 20,
            },
            ..Default::default()
        };
        let running = traders::start(&node, &config).await.unwrap();
        ready.send(()).unwrap();
        let _ = stop.await;
        running.stop();
        node.node.halt().await;
    });

    let places = [&traders, &book, &pricing, &web, &lighthouse];
    let deadline = Instant::now() + Duration::from_secs(90);
    let spans = loop {
        std::thread::sleep(Duration::from_millis(500));
        for p in places {
            p.flush();
        }
        let spans = collector.spans();
        if complete_trace(&spans).is_some() {
            break spans;
        }
        assert!(
            Instant::now() < deadline,
            "no complete trace from the trader to the browser push in {} spans: {:#?}",
            spans.len(),
            spans
                .iter()
                .map(|s| (&s.name, &s.service_name))
                .collect::<Vec<_>>()
        );
    };
    let (chain, trace) = complete_trace(&spans).expect("found above");

    // The path of the order, leaf first: the browser push, back through the price publish,
    // the aggregator, pub-sub and the order book, to the batch the desk sent.
    let path: Vec<(&str, &str)> = chain
        .iter()
        .map(|s| (s.name.as_str(), s.service_name.as_deref().unwrap_or("?")))
        .collect();
    assert_eq!(
        path,
        [
            ("websocket.push", "pricing-web"),
            ("remote.receive", "pricing-web"),
            ("receptionist.forward", "pricing"),
            ("priceAggregator.publish", "pricing"),
            ("priceAggregator.match", "pricing"),
            ("pubsub.deliver", "pricing"),
            ("remote.receive", "pricing"),
            ("orderBook.handle", "trade-processor"),
            ("remote.receive", "trade-processor"),
            ("orderBook.place", "traders"),
        ],
        "{chain:#?}"
    );
    // One trace, one root: the trader's batch (a producer span, no parent).
    let root = chain.last().unwrap();
    assert_eq!(root.parent_span_id, None);
    assert_eq!(root.kind, 4);
    let roots: Vec<_> = trace
        .iter()
        .filter(|s| s.parent_span_id.is_none())
        .collect();
    assert_eq!(roots.len(), 1, "{roots:#?}");
    // Every span of the trace hangs off an exported span of the same trace.
    for s in &trace {
        if let Some(p) = &s.parent_span_id {
            assert!(by_id(&spans, p).is_some(), "dangling parent: {s:#?}");
        }
    }
    // The journal write is the order book handling's child, on the same node.
    let handle = chain[7];
    let journal = trace
        .iter()
        .find(|s| s.name == "journal.write")
        .expect("journal.write");
    assert_eq!(
        journal.parent_span_id.as_deref(),
        Some(handle.span_id.as_str())
    );
    assert_eq!(journal.service_instance_id, handle.service_instance_id);
    // Spans from four different nodes, each named by its resource and its cluster.node.
    let mut nodes: Vec<&str> = trace
        .iter()
        .filter_map(|s| s.service_instance_id.as_deref())
        .collect();
    nodes.sort();
    nodes.dedup();
    assert!(nodes.len() >= 4, "{nodes:?}");
    assert!(
        chain.iter().all(|s| s
            .attribute("cluster.node")
            .is_some_and(|n| n.starts_with("akka.tcp://"))),
        "{chain:#?}"
    );

    for p in [traders, web, pricing, book, lighthouse] {
        p.shutdown();
    }
    drop(collector);
    test_rt.shutdown_timeout(Duration::from_secs(1));
}
