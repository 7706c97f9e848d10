//! The cost of tracing a message hop with trace export off and on (1% sampling).
//!
//! `cargo bench -p telemetry --bench span_cost`
//!
//! Both setups have the production log layer (text fmt, `info`, no events emitted) so the
//! difference is the OpenTelemetry layer: with export on, every span gets OpenTelemetry
//! bookkeeping and a sampling decision, and 1% of the traces are exported in batches over
//! OTLP/HTTP to an in-process collector, as they would be to Jaeger.
//!
//! - `span`: one `info_span!` created, entered and dropped;
//! - `current_traceparent`: formatting the current span's context for an envelope;
//! - `span_with_parent`: a receiver span continuing a sampled remote parent (so with export
//!   on it is recorded and exported: the cost of the 1% that are kept);
//! - `hop`: what a message hop costs: a sender span, `current_traceparent()`, and a receiver
//!   span built with `span_with_parent()` from that string.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use telemetry::testing::OtlpCollector;
use telemetry::{LogFormat, SamplerConfig, TelemetryBuilder};

fn spans(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let collector = rt.block_on(OtlpCollector::start()).unwrap();
    let off = TelemetryBuilder::new("bench")
        .log_format(LogFormat::Text)
        .build()
        .unwrap();
    let on = TelemetryBuilder::new("bench")
        .log_format(LogFormat::Text)
        .sampler(SamplerConfig::ParentBasedTraceIdRatio(0.01))
        .otlp_endpoint(&collector.endpoint())
        .build()
        .unwrap();

    let mut g = c.benchmark_group("tracing");
    for (label, t) in [("export_off", &off), ("export_on_1pct", &on)] {
        tracing::dispatcher::with_default(&t.dispatch, || {
            g.bench_function(format!("{label}/span"), |b| {
                b.iter(|| {
                    let s = tracing::info_span!("orderBook.place-order");
                    let _g = s.enter();
                    black_box(&s);
                })
            });
            g.bench_function(format!("{label}/current_traceparent"), |b| {
                let s = tracing::info_span!("trader.place-order");
                let _g = s.enter();
                b.iter(|| black_box(telemetry::current_traceparent()))
            });
            g.bench_function(format!("{label}/span_with_parent"), |b| {
                let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
                b.iter(|| {
                    let r = telemetry::span_with_parent("orderBook.place-order", Some(tp));
                    let _r = r.enter();
                    black_box(&r);
                })
            });
            g.bench_function(format!("{label}/hop"), |b| {
                b.iter(|| {
                    let s = tracing::info_span!("trader.place-order");
                    let _g = s.enter();
                    let tp = telemetry::current_traceparent();
                    let r = telemetry::span_with_parent("orderBook.place-order", tp.as_deref());
                    let _r = r.enter();
                    black_box(tp);
                })
            });
        });
    }
    g.finish();

    on.guard.flush().unwrap();
    let exported = collector.spans().len();
    println!("export_on_1pct: {exported} spans reached the collector");
    assert!(exported > 0, "sampled spans were exported");
    drop(on);
    drop(off);
}

criterion_group!(benches, spans);
criterion_main!(benches);
